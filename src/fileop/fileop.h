/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * File operations of a build step (LLB file op actions) on real directory
 * trees: copy, mkdir, mkfile, rm, symlink, with the semantics of BuildKit's
 * solver/llbsolver/file backend and fsutil's copy.
 *
 * Every path of an action is resolved inside its root directory (the
 * destination tree, or the copy's source tree) as if that root were "/":
 * absolute symbolic links and ".." found in the trees stay inside
 * (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, and O_NOFOLLOW for the
 * entries written), so nothing is ever read from or written to outside.
 *
 * Functions are thread safe: they keep no state beyond the call. Two calls
 * may run at once on different trees.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "llb/llb.h"

/* Deepest directory nesting walked in a copy or rm. */
#define KILN_LIMIT_FILEOP_DEPTH 256
/* Longest path (relative to a root) handled. */
#define KILN_LIMIT_FILEOP_PATH 4096
/* Most entries one copy may create. */
#define KILN_LIMIT_FILEOP_ENTRIES (1u << 24)

struct kiln_fileop_options {
        /* Checked between entries; when it becomes true the action stops with
         * -ECANCELED, leaving the destination half-written (the caller
         * discards it). NULL: never cancelled. */
        const atomic_bool *cancel;
        /* Refuse to create character and block devices: copying one fails
         * with an error naming it, unpacking an archive skips them (see
         * content/layer.h). For daemons that may not create devices. */
        bool no_devices;
};

/*
 * Applies one action to the tree at dest_fd (an O_DIRECTORY fd of the root
 * of the filesystem the action writes to, e.g. a mounted writable
 * snapshot). src_fd is the root of a copy's source tree (a read-only view or
 * a local context directory; it may be the same tree as dest_fd), -1 for
 * the other actions or a scratch source (nothing to copy: the copy fails
 * unless its wildcard may match nothing). o may be NULL.
 *
 * copy: src_path (a path, or a pattern with allow_wildcard) inside src_fd;
 *   a directory is copied as itself, or its contents with dir_copy_contents;
 *   a dest ending in '/' (or "/." ) or an existing directory receives the
 *   source inside it (by its base name); create_dest_path creates missing
 *   parents (0755, owned per chown); follow_symlinks follows a symbolic
 *   link named by src_path itself (links inside copied trees are copied as
 *   links); include/exclude patterns filter the entries below a copied
 *   directory (base/pattern.h, relative to the copied source); required_paths
 *   (COPY --parents) keep the source's parent directories; chown sets owners
 *   (ids, or names looked up in dest's /etc/passwd and /etc/group; unset:
 *   kept as in the source); mode / mode_str set the permissions of every
 *   copied file and directory (mode_str: chmod symbolic syntax such as
 *   "u+x,g-w" or "+x", applied to each entry's own mode); timestamp sets
 *   the mtime and atime of every created entry; always_replace_existing
 *   replaces a destination directory by a non-directory (and the reverse)
 *   instead of failing; attempt_unpack extracts a source that is a tar
 *   archive (plain, gzip or zstd) into dest (a directory) instead of copying
 *   it. Hard links between copied files are kept; xattrs are copied.
 * mkdir: path, with make_parents like mkdir -p (existing directory fine),
 *   mode, chown (names in dest), timestamp.
 * mkfile: path (parent must exist), data, mode, chown, timestamp; an
 *   existing file is truncated and rewritten (its mode kept, as BuildKit).
 * rm: path (a pattern with allow_wildcard), recursive; a missing path is an
 *   error unless allow_not_found.
 * symlink: newpath -> oldpath (text kept as given), chown, timestamp.
 *
 * Errors name the action and path, e.g.
 *   copy "/nothere": no such file or directory
 *   mkdir "/a/b": no such file or directory
 * Returns 0, or -errno with *err set. A failed action may leave dest
 * partly changed: the caller discards the snapshot.
 */
int kiln_fileop_apply(const struct kiln_llb_file_action *a, int dest_fd, int src_fd,
                      const struct kiln_fileop_options *o, struct kiln_error **err);

/*
 * Applies a chmod symbolic mode ("u+x,g-w", "a=rX", "0755" octal too) to
 * mode (the permission and type bits of an existing entry; 'X' looks at
 * S_IFDIR and the x bits) as BuildKit's mode parser does, for copies with
 * --chmod. Returns 0 and sets *ret (permission bits only, <= 07777), or
 * -EINVAL with *err naming the spec.
 */
int kiln_fileop_mode_apply(const char *spec, uint32_t mode, uint32_t *ret, struct kiln_error **err);
