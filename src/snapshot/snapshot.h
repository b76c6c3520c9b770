/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Snapshots: the file system trees of image layers and build steps, stacked
 * on their parents, under <root>/snapshots (DESIGN.md section 5).
 *
 * A snapshot is either active (prepared: writable, mounted by one user, not
 * yet committed) or committed (immutable, may be a parent, may be mounted
 * read-only as a "view"). Layout under the store directory:
 *   <id>/fs        the snapshot's own files: for overlayfs its upper (diff)
 *                  directory, for native a full copy of the parent plus the
 *                  changes
 *   <id>/work      overlayfs work directory (active snapshots only)
 *   <id>/meta      written at commit: parent id, name, created time; a
 *                  directory without it is an active leftover
 *   ids            the highest id handed out so far (ids are never reused)
 *   driver         "overlayfs" or "native": the driver that made the
 *                  snapshots. auto keeps it (and fails when overlayfs made
 *                  them and its probe fails); an explicit other driver
 *                  removes them all and starts over (ids still grow, so a
 *                  cache record of an old id finds nothing)
 *   lock           flock'ed by the process that has the store open
 *
 * Drivers:
 *   overlayfs  mounts are overlays of the parents' fs directories (top
 *              first) with the snapshot's fs as upper; made with the new
 *              mount API (fsopen/fsconfig "lowerdir+"/fsmount/move_mount,
 *              no page-size limit on the lower list), mount(2) with an
 *              option string where that API is missing. Options
 *              index=off,redirect_dir=off,metacopy=off so that the upper
 *              directory is a plain diff (real copies, whiteouts as 0/0
 *              character devices, opaque directories as the
 *              trusted.overlay.opaque xattr) an exporter can tar as is.
 *              kiln mounts overlays as root, with trusted.* xattrs (no
 *              userxattr: rootless kiln falls back to native). A snapshot
 *              without parents mounts as a bind of its fs; the root of a
 *              new upper gets its parent's owner and mode.
 *   native     each snapshot's fs is a full copy of its parent's (FICLONE
 *              where the file system can, else copy_file_range), owners,
 *              modes, times, xattrs, hard links, symlinks and devices kept;
 *              mounts are bind mounts.
 *   auto       overlayfs when a probe overlay mount under the store works,
 *              else native (the choice is logged at debug level).
 *
 * Restart: kiln_snapshot_store_open keeps committed snapshots and their
 * names, and removes active leftovers, and detaches (MNT_DETACH) every mount
 * still made from the store's directories: one process owns a store at a
 * time, so such mounts are what a crashed owner left.
 *
 * Durability: a commit does not wait for the disk, and neither does an
 * unmount (writable overlays are mounted "volatile" where the kernel has
 * it, so unmounting one does not sync the file system). A thread of the store
 * makes committed snapshots durable in batches (one syncfs, then their ids
 * appended to the store's "durable" journal and synced), a short while after
 * a commit and at kiln_snapshot_store_free. After a crash, open removes every
 * committed snapshot the journal does not name: its files may be incomplete.
 * Ids are never reused, so a cache record naming such a snapshot finds it
 * missing rather than finding another.
 *
 * Mount namespace: every mount is made in the calling process's mount
 * namespace. kilnd, when root, unshares its mount namespace at start
 * (unshare(CLONE_NEWNS) and makes / rslave), so its snapshot mounts never
 * appear on the host and vanish with the daemon if it dies; the open-time
 * cleanup above covers a store opened in the same namespace (tests, or a
 * daemon run without that isolation).
 *
 * Thread safety: a store and its functions may be used from any thread. One
 * mutex, struct kiln_snapshot_store.lock, guards the in-memory index (ids,
 * names, parents, children and use counts); it is never held across a tree
 * copy, a sync, a mount or an unmount, so slow work runs in parallel (only
 * a commit's small metadata file is written under it, which keeps name
 * uniqueness simple). A struct
 * kiln_snapshot (an active snapshot) belongs to one thread at a time.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "base/macro.h"

/* The deepest chain of parents a snapshot may have: overlayfs' maximum
 * number of lower layers (the kernel's OVL_MAX_STACK). */
#define KILN_SNAPSHOT_LIMIT_DEPTH 500
/* A snapshot name, in bytes ("layer:sha256:<chainid>" is 77). */
#define KILN_SNAPSHOT_LIMIT_NAME 512
/* Directory nesting a native copy (and a removal) descends: the same bound
 * as kiln_rm_rf_at, so that any tree the store holds can also be removed. */
#define KILN_SNAPSHOT_LIMIT_COPY_DEPTH 256
/* A snapshot id as text, with the NUL ("18446744073709551615"). */
#define KILN_SNAPSHOT_ID_SIZE 21

enum kiln_snapshot_driver {
        KILN_SNAPSHOT_DRIVER_AUTO,
        KILN_SNAPSHOT_DRIVER_OVERLAYFS,
        KILN_SNAPSHOT_DRIVER_NATIVE,
        _KILN_SNAPSHOT_DRIVER_MAX,
};

struct kiln_snapshot_store;
struct kiln_snapshot;

/* "auto", "overlayfs" or "native" (buildkitd.toml worker.oci.snapshotter;
 * "" is auto). Other snapshotters BuildKit knows (fuse-overlayfs, stargz)
 * fail with -EOPNOTSUPP, anything else with -EINVAL. */
int kiln_snapshot_driver_parse(const char *s, enum kiln_snapshot_driver *ret,
                               struct kiln_error **err);

/* Opens (creating it when missing, mode 0700) the store at dir, an absolute
 * path. Takes the store's lock file (-EBUSY when another process has it),
 * detaches the mounts a previous owner left, removes active leftovers and
 * loads committed snapshots. AUTO uses the driver recorded in the store,
 * else probes overlayfs as described above; OVERLAYFS fails when the probe
 * mount fails. *ret is freed with kiln_snapshot_store_free. */
int kiln_snapshot_store_open(const char *dir, enum kiln_snapshot_driver d,
                             struct kiln_snapshot_store **ret, struct kiln_error **err);

/* Makes every snapshot committed so far durable, then frees the in-memory
 * store and drops its lock. Every active snapshot must have been committed
 * or aborted before (leftovers are removed at the next open). Mounted views
 * stay mounted. NULL is ignored. */
struct kiln_snapshot_store *kiln_snapshot_store_free(struct kiln_snapshot_store *s);

/* Makes every snapshot committed so far durable now (see "Durability"),
 * instead of a moment later. Returns 0 or -errno with *err set. Thread
 * safe. */
int kiln_snapshot_store_sync(struct kiln_snapshot_store *s, struct kiln_error **err);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_snapshot_store *, kiln_snapshot_store_free);

/* The driver in use: "overlayfs" or "native" (never "auto"). */
const char *kiln_snapshot_store_driver_name(const struct kiln_snapshot_store *s);
enum kiln_snapshot_driver kiln_snapshot_store_driver(const struct kiln_snapshot_store *s);

/* Creates a new active snapshot on the committed snapshot parent_id (NULL:
 * an empty tree). With native this copies the parent's whole tree (without
 * the lock). The parent cannot be removed while the snapshot lives (it
 * counts as a child). -ENOENT for an unknown parent, -E2BIG when the chain
 * would be deeper than KILN_SNAPSHOT_LIMIT_DEPTH. *ret is owned by the
 * caller until kiln_snapshot_commit or kiln_snapshot_abort. */
int kiln_snapshot_prepare(struct kiln_snapshot_store *s, const char *parent_id,
                          struct kiln_snapshot **ret, struct kiln_error **err);

/* The id of an active snapshot (valid until commit or abort). */
const char *kiln_snapshot_id(const struct kiln_snapshot *snap);

/* Mounts the merged, writable view of an active snapshot at target (an
 * existing directory). One mount at a time per snapshot: -EBUSY when it is
 * mounted already. */
int kiln_snapshot_mount(struct kiln_snapshot *snap, const char *target, struct kiln_error **err);

/* Mounts the committed snapshot id read-only at target (an existing
 * directory): an overlay of its chain without upper (overlayfs), or a
 * read-only bind mount of its fs (native, or an overlayfs snapshot without
 * parents). The caller should hold a use (kiln_snapshot_use) on id while it
 * is mounted so that it is not removed under the mount. -ENOENT for an
 * unknown id. */
int kiln_snapshot_mount_view(struct kiln_snapshot_store *s, const char *id, const char *target,
                             struct kiln_error **err);

/* Unmounts target, a mount made by kiln_snapshot_mount or _mount_view;
 * when it is busy, detaches it (MNT_DETACH) instead. Needs no store. */
int kiln_snapshot_unmount(const char *target, struct kiln_error **err);

/* Makes an active snapshot committed and immutable, with an optional name
 * (e.g. "layer:sha256:<chainid>"; unique in the store; at most
 * KILN_SNAPSHOT_LIMIT_NAME bytes, no control characters). The snapshot must
 * not be mounted (-EBUSY). It survives a crash once the store's syncer has
 * made it durable (see Durability above); until then a crash removes it
 * whole, never leaving it half written.
 * When a committed snapshot already has that name (two unpackers of one
 * layer raced), this snapshot is removed and *ret_id is the existing one's
 * id: the caller uses it exactly as its own.
 * *ret_id (malloc'd; may be NULL when not wanted) is the committed id.
 * snap is freed whether or not this succeeds (on failure it is removed). */
int kiln_snapshot_commit(struct kiln_snapshot *snap, const char *name, char **ret_id,
                         struct kiln_error **err);

/* As kiln_snapshot_commit, and takes a use on the returned id in the same
 * critical section, so nothing can remove it before the caller records it.
 * Release it with kiln_snapshot_release. */
int kiln_snapshot_commit_and_use(struct kiln_snapshot *snap, const char *name, char **ret_id,
                                 struct kiln_error **err);

/* Unmounts an active snapshot (when mounted), removes it and frees snap.
 * NULL is ignored. */
void kiln_snapshot_abort(struct kiln_snapshot *snap);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_snapshot *, kiln_snapshot_abort);

/* The committed snapshot named name: 1 and *ret_id (malloc'd) when found, 0
 * when not. kiln_snapshot_lookup_and_use also takes a use on it. */
int kiln_snapshot_lookup(struct kiln_snapshot_store *s, const char *name, char **ret_id);
int kiln_snapshot_lookup_and_use(struct kiln_snapshot_store *s, const char *name, char **ret_id);

/* 1 when id is a committed snapshot, else 0. */
int kiln_snapshot_exists(struct kiln_snapshot_store *s, const char *id);

struct kiln_snapshot_info {
        char id[KILN_SNAPSHOT_ID_SIZE];
        char parent[KILN_SNAPSHOT_ID_SIZE]; /* "" without parent */
        char *name;                         /* malloc'd; NULL without name */
        int64_t created_ns;                 /* CLOCK_REALTIME at commit */
        unsigned depth;                     /* 1 without parent */
        unsigned uses;
        unsigned children; /* committed and active */
};
void kiln_snapshot_info_release(struct kiln_snapshot_info *i);

/* Fills *ret (release with kiln_snapshot_info_release) for the committed
 * snapshot id; -ENOENT when there is none. */
int kiln_snapshot_info(struct kiln_snapshot_store *s, const char *id,
                       struct kiln_snapshot_info *ret);

/* Every committed snapshot id, oldest first: *ret is a malloc'd array of
 * malloc'd strings, NULL terminated; *n_ret its length. */
int kiln_snapshot_list(struct kiln_snapshot_store *s, char ***ret, size_t *n_ret);

/* In-memory use counts: a used snapshot cannot be removed (-EBUSY). Counts
 * do not survive a restart. kiln_snapshot_use returns -ENOENT for an id that
 * is not committed; kiln_snapshot_release ignores unknown ids and a count
 * already at zero. */
int kiln_snapshot_use(struct kiln_snapshot_store *s, const char *id);
void kiln_snapshot_release(struct kiln_snapshot_store *s, const char *id);

/* Removes the committed snapshot id and its name. -EBUSY (store untouched)
 * while it has children (committed or active) or uses; -ENOENT when
 * unknown. The directory is renamed out of the way first, so a crash
 * mid-removal never leaves a half-removed snapshot that looks whole. */
int kiln_snapshot_remove(struct kiln_snapshot_store *s, const char *id, struct kiln_error **err);

/* overlayfs: *ret (malloc'd) is the upper (diff) directory of the committed
 * snapshot id: its own changes against its parent, whiteouts included.
 * native: -EOPNOTSUPP (there is no diff; compare against the parent).
 * -ENOENT for an unknown id. */
int kiln_snapshot_upper_path(struct kiln_snapshot_store *s, const char *id, char **ret);

/* <id>/fs of the committed snapshot id, both drivers (native: the full
 * tree, overlayfs: the diff). *ret is malloc'd. -ENOENT for an unknown id.
 * The caller should hold a use on id while it reads the tree. */
int kiln_snapshot_fs_path(struct kiln_snapshot_store *s, const char *id, char **ret);

/* Labels: small values kept with a committed snapshot and removed with it
 * (exporters remember the blob a layer was compressed to). */
#define KILN_SNAPSHOT_LIMIT_LABEL_KEY   64
#define KILN_SNAPSHOT_LIMIT_LABEL_VALUE 4096

/* Sets label key ([a-z0-9.-], at most KILN_SNAPSHOT_LIMIT_LABEL_KEY bytes)
 * of the committed snapshot id to value (at most
 * KILN_SNAPSHOT_LIMIT_LABEL_VALUE bytes), replacing it atomically. Not
 * synced: after a crash a label may be missing, never half-written.
 * -ENOENT for an unknown id, -EINVAL for a bad key or value. Thread safe. */
int kiln_snapshot_label_set(struct kiln_snapshot_store *s, const char *id, const char *key,
                            const char *value, struct kiln_error **err);

/* The value of label key of id in *ret (malloc'd): 1 when set, 0 when not
 * (or id is unknown), -EINVAL for a bad key, another -errno when it cannot
 * be read. Thread safe. */
int kiln_snapshot_label_get(struct kiln_snapshot_store *s, const char *id, const char *key,
                            char **ret);

/* The keys of id's labels, sorted, in *ret (malloc'd array of malloc'd
 * strings, NULL terminated; *n_ret its length). An unknown id has none.
 * Returns 0 or -errno. Thread safe. */
int kiln_snapshot_label_list(struct kiln_snapshot_store *s, const char *id, char ***ret,
                             size_t *n_ret);

/* Disk usage (allocated blocks, each hard-linked inode once) of the
 * snapshot's own fs directory: the diff with overlayfs, the full tree with
 * native (reflinked extents counted in full). Works for committed ids; the
 * snapshot is protected from removal while it is measured. */
int kiln_snapshot_usage(struct kiln_snapshot_store *s, const char *id, uint64_t *bytes,
                        struct kiln_error **err);
