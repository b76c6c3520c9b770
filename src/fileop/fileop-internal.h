/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Shared between fileop.c (the actions) and copy.c (the copier). */

#include <sys/stat.h>
#include <time.h>

#include "fileop/fileop.h"

/* Symbolic links followed while resolving one path (the kernel's limit
 * for a whole lookup is 40; continuity's RootPath allows 255). */
#define FILEOP_MAX_SYMLINKS 255

/* An owner to give created entries; set == false: leave as created (copy:
 * keep the source's). */
struct fileop_owner {
        bool set;
        uint32_t uid, gid;
};

/* A parsed chmod spec (numeric or symbolic) applied to each entry. */
struct fileop_modeset {
        struct fileop_modecmd {
                char cmd; /* '+', '-', 'X', 'u', 'g', 'o' */
                uint8_t cmd2;
                uint16_t bits;
        } * cmds;
        size_t n;
};

int fileop_modeset_parse(const char *spec, struct fileop_modeset *ret);
uint32_t fileop_modeset_apply(const struct fileop_modeset *s, uint32_t st_mode);
void fileop_modeset_release(struct fileop_modeset *s);

/* BuildKit's cleanPath: joined with "/" and cleaned, a trailing "/" or
 * "/." kept. Returns a new string. */
char *fileop_clean_path(const char *p);

/*
 * continuity's fs.RootPath: path resolved inside the root as if the root
 * were "/": symbolic links met on the way (the last component too when
 * follow_last) are read and followed within the root, ".." stops at the
 * root, components that do not exist are kept as written. *ret is the
 * result relative to the root, without leading '/' ("" for the root).
 */
int fileop_resolve(int rootfd, const char *path, bool follow_last, char **ret);

/* openat2 of path (relative; "" is the root) inside rootfd with
 * RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS. Returns the fd or -errno. */
int fileop_open_in_root(int rootfd, const char *path, int flags, unsigned mode);

/* Splits a resolved path: opens its parent directory inside rootfd
 * (O_PATH is not used: the fd is used for *at() creation calls) and
 * returns the last component in *ret_base (points into path; "." for the
 * root itself). */
int fileop_open_parent(int rootfd, const char *path, const char **ret_base);

/* Directories created by fileop_mkdir_all, relative to the root. */
struct fileop_dirlist {
        char **paths;
        size_t n;
};
void fileop_dirlist_release(struct fileop_dirlist *l);

/*
 * fsutil's MkdirAll on a resolved path: an existing directory is fine (its
 * metadata untouched), an existing non-directory fails with -ENOTDIR;
 * each created directory gets mode & 0777, owner (when set) and times
 * (when ts). created (may be NULL) receives the created directories.
 */
int fileop_mkdir_all(int rootfd, const char *path, uint32_t mode, const struct fileop_owner *owner,
                     const struct timespec *ts, struct fileop_dirlist *created);

/* Sets atime and mtime of the entry name in dirfd (not following a link)
 * to ts. */
int fileop_set_times_at(int dirfd, const char *name, const struct timespec *ts);

/* Resolves a chown against the tree dest_fd as BuildKit's readUser. */
int fileop_owner_resolve(int dest_fd, const struct kiln_llb_chown *c, struct fileop_owner *ret,
                         struct kiln_error **err);

/* The copy action (copy.c). */
int fileop_copy(const struct kiln_llb_file_copy *c, int dest_fd, int src_fd,
                const struct kiln_fileop_options *o, struct kiln_error **err);

static inline bool fileop_cancelled(const struct kiln_fileop_options *o)
{
        return o && o->cancel && atomic_load_explicit(o->cancel, memory_order_relaxed);
}

/* fsutil's ResolveWildcards: src (cleaned, absolute) split at its first
 * component holding a wildcard; the part before is resolved in the root
 * (its last component followed only with follow), the directory walked in
 * name order and each entry whose path below it matches the rest
 * (filepath.Match) returned, relative to the root; a matched directory is
 * not descended. Without a wildcard, *ret holds src itself. The walk root
 * must exist (-ENOENT otherwise). *ret is NULL-terminated (strv). */
int fileop_resolve_wildcards(int rootfd, const char *src, bool follow, char ***ret, size_t *n_ret,
                             struct kiln_error **err);

/* strerror with a lower-case first letter, as Go words errno values
 * ("no such file or directory"). The text lives in thread-local storage
 * until the next call. */
const char *fileop_strerror(int errnum);
