/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The per-builder copy of a client's build context (BuildKit's local
 * source with a shared key).
 *
 * Each context key (stable on the client side, e.g. the absolute context
 * directory plus the source name) owns <root>/local/<sha256(key)>/ with
 *   tree/     the files, as the client has them
 *   index     path -> metadata + sha256 of the content, written atomically
 *   staging/  files received by transfers that have not finished yet
 *
 * A transfer synchronises the copy with the client:
 *
 *   kiln_source_local_transfer_begin(store, key, entries, n, &t, &err);
 *   kiln_source_local_transfer_needed(t, &paths)  -> ask the client for these
 *   kiln_source_local_transfer_receive(t, read, ud, cancel, &stats, &err);
 *   kiln_source_local_transfer_finish(t, cancel, &ctx, &err);
 *   kiln_source_local_transfer_free(t);
 *
 * The entry list holds every directory, regular file and symbolic link the
 * client selected (in any order; each path once), with relative clean
 * paths. The files the client must send are those that are new or whose
 * size, mtime, mode, uid or gid differ from the index: only those are
 * transferred and hashed. The tar the client sends holds exactly (a subset of) those, as
 * regular files; anything else is refused with an error naming the entry.
 * Received files wait in staging/ until finish, so a build reading the
 * tree never sees half a transfer.
 *
 * finish brings tree/ to the list (removes what the list lacks, creates
 * directories and symbolic links, moves received files in, applies modes,
 * owners and mtimes), saves the index and returns a context: the handle the
 * solver reads from. A context holds its key's lock shared for as long as a
 * reference to it lives; finish takes it exclusive, so a tree is never
 * changed under a build using it (a second build's transfer of the same key
 * that changes files waits in finish for the first build to drop its
 * context; one that changes nothing shares the lock and does not wait).
 * The tree must be exposed to builds read-only (a read-only bind mount).
 *
 * Thread safety: a store may be used from any number of threads; its lock
 * (kiln_source_local_store.lock) guards the table of keys; each key's
 * lock (a reader/writer lock made of a mutex and a condition variable, so
 * that a context may be released on another thread than the one that got
 * it) guards its tree and index. A transfer is used by one thread at a
 * time. Context handles may be shared between threads; their functions are
 * thread safe.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"

/* Entries of one context list. */
#define KILN_LIMIT_LOCAL_ENTRIES 1000000u
/* One path of a list, in bytes. */
#define KILN_LIMIT_LOCAL_PATH 4096u
/* Components of one path. */
#define KILN_LIMIT_LOCAL_DEPTH 256u
/* One symbolic link target. */
#define KILN_LIMIT_LOCAL_LINK 4096u
/* A context key. */
#define KILN_LIMIT_LOCAL_KEY 4096u
/* The index file of one key. */
#define KILN_LIMIT_LOCAL_INDEX (1024u << 20)
/* Symbolic links followed while resolving one path in a context. */
#define KILN_LIMIT_LOCAL_SYMLINKS 40u

/* A checksum "sha256:<64 hex>" and its NUL. */
#define KILN_SOURCE_LOCAL_DIGEST_LEN 72

struct kiln_source_local_store;
struct kiln_source_local_transfer;
struct kiln_source_local_context;

/* One file of the client's list (all members borrowed by the functions
 * taking them). */
struct kiln_source_local_entry {
        const char *path; /* relative, clean: "a/b", never "", ".", "..", "/x" */
        uint32_t mode;    /* st_mode: type bits and permissions */
        uint64_t size;    /* regular files; ignored for the rest */
        int64_t mtime_ns; /* nanoseconds since the epoch */
        uint32_t uid;
        uint32_t gid;
        const char *link; /* symbolic links: the target; NULL otherwise */
};

/* ---- store ---- */

/* Opens (creating) <root_dir>/local and removes staging leftovers of a
 * previous run. root_dir is the daemon's --root. Fails with the path. */
int kiln_source_local_store_open(const char *root_dir, struct kiln_source_local_store **ret,
                                 struct kiln_error **err);
/* Every context and transfer of the store must be gone. Returns NULL. */
struct kiln_source_local_store *kiln_source_local_store_free(struct kiln_source_local_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_source_local_store *, kiln_source_local_store_free);

/* ---- transfer ---- */

/* Validates and copies the list (errors name the entry: "local context:
 * entry 'a/../b': path is not clean"; missing parent directories are
 * added as 0755 root-owned directories; sockets are dropped; devices are
 * refused), loads the key's index and computes the needed files. */
int kiln_source_local_transfer_begin(struct kiln_source_local_store *s, const char *key,
                                     const struct kiln_source_local_entry *entries, size_t n,
                                     struct kiln_source_local_transfer **ret,
                                     struct kiln_error **err);

/* The paths the client must send, in path order; *ret points into t (valid until
 * it is freed). Returns their number. */
size_t kiln_source_local_transfer_needed(const struct kiln_source_local_transfer *t,
                                         const char *const **ret);

/* Reads up to n bytes into buf: returns the count, 0 at the end, or -errno
 * (which receive returns, with "read: <strerror>" in its error). */
typedef ssize_t (*kiln_source_local_read_fn)(void *userdata, void *buf, size_t n);

struct kiln_source_local_receive_stats {
        uint64_t files;
        uint64_t bytes;
};

/* Reads an uncompressed tar through read and writes its files, each of
 * which must be a needed regular file not sent before, into staging while
 * hashing them. An empty stream (no byte at all) is an empty tar. A needed
 * file the tar lacks is an error at finish. May be
 * called once. cancel (NULL: never) is checked between reads: -ECANCELED.
 * stats may be NULL. */
int kiln_source_local_transfer_receive(struct kiln_source_local_transfer *t,
                                       kiln_source_local_read_fn read, void *userdata,
                                       const atomic_bool *cancel,
                                       struct kiln_source_local_receive_stats *stats,
                                       struct kiln_error **err);

/* As receive, reading from fd (not closed). */
int kiln_source_local_transfer_receive_fd(struct kiln_source_local_transfer *t, int fd,
                                          const atomic_bool *cancel,
                                          struct kiln_source_local_receive_stats *stats,
                                          struct kiln_error **err);

/* Applies the transfer to the key's tree and index (waiting, checking
 * cancel every 100 ms, until no context of the key is in use) and returns
 * a new context holding one reference. Fails with -ESTALE when another
 * transfer of the key changed a file this one did not receive (the client
 * should start again). After finish, the transfer can only be freed. */
int kiln_source_local_transfer_finish(struct kiln_source_local_transfer *t,
                                      const atomic_bool *cancel,
                                      struct kiln_source_local_context **ret,
                                      struct kiln_error **err);

/* Frees the transfer and whatever it staged. Returns NULL. */
struct kiln_source_local_transfer *
kiln_source_local_transfer_free(struct kiln_source_local_transfer *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_source_local_transfer *, kiln_source_local_transfer_free);

/* The client's digest of the entry list of t (a digest of its own encoding
 * of the list; opaque here). Once t finishes, the store remembers it with
 * the key's index, for kiln_source_local_context_open_digest. */
void kiln_source_local_transfer_set_digest(struct kiln_source_local_transfer *t,
                                           const char *digest);

/* ---- context ---- */

/* Opens the key's context when the list of its last finished transfer had
 * the client digest digest (kiln_source_local_transfer_set_digest): 1 and
 * *ret then, 0 when the digest differs or is not known (only the last key
 * used is remembered, in memory), or -errno. Thread safe. */
int kiln_source_local_context_open_digest(struct kiln_source_local_store *s, const char *key,
                                          const char *digest,
                                          struct kiln_source_local_context **ret,
                                          struct kiln_error **err);

/* The context of the key's last finished transfer (waiting as finish does
 * while a transfer of the key is finishing): -ENOENT when there is none. */
int kiln_source_local_context_open(struct kiln_source_local_store *s, const char *key,
                                   struct kiln_source_local_context **ret, struct kiln_error **err);

struct kiln_source_local_context *
kiln_source_local_context_ref(struct kiln_source_local_context *c);
/* Drops a reference; the last releases the key's shared lock. Returns NULL.
 * May be called on any thread. */
struct kiln_source_local_context *
kiln_source_local_context_unref(struct kiln_source_local_context *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_source_local_context *, kiln_source_local_context_unref);

/* A directory fd (O_RDONLY|O_DIRECTORY) of the tree, owned by the context:
 * do not close it. Resolve paths below it with RESOLVE_IN_ROOT. */
int kiln_source_local_context_fd(const struct kiln_source_local_context *c);
/* The absolute path of the tree (for bind mounts), owned by the context. */
const char *kiln_source_local_context_path(const struct kiln_source_local_context *c);

/*
 * A content key of the paths a copy or a mount selects, computed from the
 * index (no file is read): out = "sha256:<hex>" over, for each selected
 * entry in path order, its path relative to the selection, its type and
 * permission bits, its link target and its content hash; for a directory,
 * recursively everything below it that the include/exclude patterns
 * (relative to that directory, base/pattern.h semantics) keep. mtimes and
 * owners are left out, so the key is stable across transfers and changes
 * only when a selected file does.
 *
 * path: "/" or "" selects the whole context. Symbolic links in its parent
 * components are resolved inside the context; follow_symlinks resolves the
 * last one too. wildcard: path is a filepath.Match pattern and every match
 * is selected (none: the checksum of nothing, not an error). A path that
 * does not exist fails with -ENOENT and the error "\"/<path>\": not found".
 */
int kiln_source_local_checksum(struct kiln_source_local_context *c, const char *path, bool wildcard,
                               bool follow_symlinks, const char *const *include, size_t n_include,
                               const char *const *exclude, size_t n_exclude,
                               char out[static KILN_SOURCE_LOCAL_DIGEST_LEN],
                               struct kiln_error **err);

/* The checksum of the whole context, owners included ("sha256:<hex>",
 * owned by the context): the cache key part of a local source op. */
const char *kiln_source_local_digest(const struct kiln_source_local_context *c);
