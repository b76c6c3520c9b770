/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The tar writer and snapshot diffs of kiln's exporters.
 *
 * Every tar kiln writes is reproducible: the same input gives the same bytes.
 * Headers are ustar as Go's archive/tar writes them (what BuildKit's layers
 * hold), with a PAX extended header ("<dir>/PaxHeaders.0/<name>") only when
 * an entry needs one: a name or link target ustar cannot hold (too long, not
 * ASCII), an id, size or time too large for its octal field, or extended
 * attributes (SCHILY.xattr.<name>, records sorted by key). User and group
 * names are empty, times are whole seconds (no atime, no ctime), device
 * numbers are zero except for devices. The archive ends with two zero blocks
 * (no padding to a 10 KiB record).
 *
 * Output goes through a kiln_export_write_fn in large chunks
 * (KILN_EXPORT_TAR_CHUNK bytes, the last one shorter), never one call per
 * header. The first error a sink returns stops the writer: every later call
 * returns it again.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct kiln_snapshot_store;

/* Bytes handed to the sink per call (except the last). */
#define KILN_EXPORT_TAR_CHUNK (1024u * 1024u)
/* Directory nesting kiln_export_tar_tree and _diff descend (the snapshot
 * store's copy depth: no snapshot can hold a deeper tree). */
#define KILN_EXPORT_TAR_LIMIT_DEPTH 256u
/* Bytes of an entry's name or link target. */
#define KILN_EXPORT_TAR_LIMIT_PATH 65536u
/* Entries of one archive written by kiln_export_tar_tree or _diff. */
#define KILN_EXPORT_TAR_LIMIT_ENTRIES 20000000u
/* Bytes of all extended attributes of one entry (the PAX header size Go's
 * archive/tar accepts). */
#define KILN_EXPORT_TAR_LIMIT_XATTRS (1024u * 1024u)

/* Receives the next n bytes of the archive; returns 0 or -errno with *err
 * set. Its error stops the archive and is returned unchanged by whichever
 * kiln_export_tar_* call was writing. */
typedef int (*kiln_export_write_fn)(void *userdata, const void *buf, size_t n,
                                    struct kiln_error **err);

struct kiln_export_tar_options {
        /* Clamp every entry mtime later than epoch to epoch (BuildKit's
         * rewrite-timestamp with SOURCE_DATE_EPOCH). Whiteouts always carry
         * mtime 0. */
        bool has_epoch;
        int64_t epoch;
        /* With has_epoch: every mtime becomes epoch, not only later ones
         * (BuildKit's local and tar exporters). */
        bool epoch_all;
};

struct kiln_export_tar_xattr {
        const char *name; /* e.g. "security.capability" */
        const void *value;
        size_t size;
};

/* What an entry records about its file. */
struct kiln_export_tar_meta {
        uint32_t mode; /* permissions and setuid/setgid/sticky (07777); the
                          type comes from the add_* function */
        uint32_t uid;
        uint32_t gid;
        int64_t mtime; /* seconds since the epoch (clamped by the options) */
        /* Written as PAX SCHILY.xattr.<name> records (sorted by the writer);
         * the caller filters what must not be exported. */
        const struct kiln_export_tar_xattr *xattrs;
        size_t n_xattrs;
};

struct kiln_export_tar_writer;

/* A writer sending its archive to w(userdata, ...). o may be NULL (no
 * epoch). Never fails (aborts when out of memory). One thread at a time per
 * writer. Free with kiln_export_tar_writer_free. */
struct kiln_export_tar_writer *kiln_export_tar_writer_new(kiln_export_write_fn w, void *userdata,
                                                          const struct kiln_export_tar_options *o);

/* Frees the writer and its buffer. Bytes still buffered are dropped: call
 * kiln_export_tar_writer_finish first for a complete archive. NULL is
 * ignored. */
struct kiln_export_tar_writer *kiln_export_tar_writer_free(struct kiln_export_tar_writer *tw);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_export_tar_writer *, kiln_export_tar_writer_free);

/*
 * Entries. name is the path inside the archive, relative ("usr/bin/sh", no
 * leading '/', no "." or ".." components; checked: -EINVAL), at most
 * KILN_EXPORT_TAR_LIMIT_PATH bytes; directories get a trailing '/' when it
 * is missing. Each returns 0 or -errno with *err set (naming the entry), and
 * after a failure the writer is unusable (every call returns the error).
 */

/* A regular file whose size bytes are read from fd (from its current
 * offset, read(2) into the writer's buffer). A file that ends before size
 * bytes fails with -EIO ("file changed while being read"); bytes past size
 * are not written. */
int kiln_export_tar_writer_add_file_fd(struct kiln_export_tar_writer *tw, const char *name,
                                       const struct kiln_export_tar_meta *m, int fd, uint64_t size,
                                       struct kiln_error **err);

/* A regular file holding data[0..n). */
int kiln_export_tar_writer_add_file_data(struct kiln_export_tar_writer *tw, const char *name,
                                         const struct kiln_export_tar_meta *m, const void *data,
                                         size_t n, struct kiln_error **err);

int kiln_export_tar_writer_add_dir(struct kiln_export_tar_writer *tw, const char *name,
                                   const struct kiln_export_tar_meta *m, struct kiln_error **err);

int kiln_export_tar_writer_add_symlink(struct kiln_export_tar_writer *tw, const char *name,
                                       const struct kiln_export_tar_meta *m, const char *target,
                                       struct kiln_error **err);

/* A hard link to target, the name of an entry written before. m is the
 * linked file's (Go writes the file's mode, owner and time on link
 * entries too). */
int kiln_export_tar_writer_add_hardlink(struct kiln_export_tar_writer *tw, const char *name,
                                        const struct kiln_export_tar_meta *m, const char *target,
                                        struct kiln_error **err);

/* A character (block false) or block device. */
int kiln_export_tar_writer_add_device(struct kiln_export_tar_writer *tw, const char *name,
                                      const struct kiln_export_tar_meta *m, bool block,
                                      uint32_t major, uint32_t minor, struct kiln_error **err);

int kiln_export_tar_writer_add_fifo(struct kiln_export_tar_writer *tw, const char *name,
                                    const struct kiln_export_tar_meta *m, struct kiln_error **err);

/* The OCI whiteout of deleted path name: an empty regular file
 * "<dir>/.wh.<base>", mode 0, owner 0:0, mtime 0 (as containerd writes
 * them). */
int kiln_export_tar_writer_add_whiteout(struct kiln_export_tar_writer *tw, const char *name,
                                        struct kiln_error **err);

/* The OCI opaque marker of directory dir: "<dir>/.wh..wh..opq", as a
 * whiteout. */
int kiln_export_tar_writer_add_opaque(struct kiln_export_tar_writer *tw, const char *dir,
                                      struct kiln_error **err);

/* Ends the archive (two zero blocks) and hands every buffered byte to the
 * sink. Adding entries afterwards fails with -EINVAL. */
int kiln_export_tar_writer_finish(struct kiln_export_tar_writer *tw, struct kiln_error **err);

/* Bytes of archive produced so far (buffered or written). */
uint64_t kiln_export_tar_writer_size(const struct kiln_export_tar_writer *tw);

/*
 * kiln_export_tar_tree: the whole tree below the directory dirfd (not
 * itself: entries are relative to it), as a finished archive, for the local
 * and tar outputs. Walked with openat(O_NOFOLLOW)/fstatat(AT_SYMLINK_NOFOLLOW),
 * never leaving the tree through a symbolic link; depth first, the names of
 * each directory sorted bytewise, a directory's entry before its contents
 * (Go's filepath.Walk order). A file with more than one link becomes a hard
 * link entry to the first path written for it; sockets are skipped;
 * extended attributes are written except trusted.overlay.*,
 * user.overlay.* and security.selinux (overlayfs bookkeeping and host
 * labels, not content; those of symbolic links and devices are read
 * through /proc/self/fd, which must be mounted). Limits: KILN_EXPORT_TAR_LIMIT_DEPTH,
 * KILN_EXPORT_TAR_LIMIT_PATH, KILN_EXPORT_TAR_LIMIT_ENTRIES. dirfd is
 * neither closed nor moved. o may be NULL. Returns 0 or -errno with *err
 * set; a sink error stops the walk at once and is returned as the sink
 * set it. Thread safe (no shared state).
 */
int kiln_export_tar_tree(int dirfd, const struct kiln_export_tar_options *o, kiln_export_write_fn w,
                         void *userdata, struct kiln_error **err);

/*
 * kiln_export_tar_diff: the OCI layer of the committed snapshot id against
 * its parent (the whole tree, as kiln_export_tar_tree, when it has none), as
 * a finished archive, with BuildKit's rules for both drivers:
 *  - overlayfs: the upper directory is walked (BuildKit's overlay differ): a
 *    0/0 character device is a deletion (a whiteout, or nothing when the
 *    parent has no such path); an entry the parent also has is written only
 *    when it differs; an opaque directory (trusted.overlay.opaque=y) is
 *    compared with the parent's directory by a double walk, so it gives
 *    whiteouts for what it hides (never a .wh..wh..opq marker). The parent's
 *    tree is read directly when it has no parent itself, else through a
 *    read-only view mounted on a temporary directory under $TMPDIR (or
 *    /tmp), unmounted before the call returns.
 *  - native: fs(id) and fs(parent) are walked together (containerd's
 *    fs.Changes): added and changed entries are written, deleted ones as
 *    whiteouts (one for a deleted directory, none below it).
 * "Changed" (both drivers): type and mode, owner, device number or the
 * exportable extended attributes differ, or for a non-directory the size or
 * the mtime; equal metadata with whole-second mtimes on both sides compares
 * symlink targets and file contents. A written entry's parent directories
 * are written before it when they were not (containerd's ChangeWriter);
 * hard links: the first path written carries the data, the others are link
 * entries to it, including unchanged links of the same inode (so that "ln a
 * b" of a lower file gives the same layer with either driver); sockets are
 * skipped; times are clamped to the epoch; extended attributes as in
 * kiln_export_tar_tree. The same change gives the same bytes with either
 * driver. Uses are held on id and its parent while they are read. Returns 0
 * or -errno with *err set (-ENOENT for an unknown id); a sink error is
 * returned as the sink set it. Thread safe.
 */
int kiln_export_tar_diff(struct kiln_snapshot_store *s, const char *id,
                         const struct kiln_export_tar_options *o, kiln_export_write_fn w,
                         void *userdata, struct kiln_error **err);
