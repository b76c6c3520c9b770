/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "buf.h"
#include "error.h"

/* How deep below its path kiln_rm_rf_at descends. */
#define KILN_RM_RF_MAX_DEPTH 256u

/* Reads the whole regular file at path (relative to dirfd, AT_FDCWD for the
 * cwd) into b, replacing what b held. The open adds O_NONBLOCK and
 * O_NOCTTY to open_flags (0, or O_NOFOLLOW for a file that must not be a
 * symbolic link), so a FIFO or a terminal never blocks it, and anything but
 * a regular file is then refused: -EISDIR for a directory, -EINVAL for the
 * rest (kiln_read_file_strerror words it). Fails with -E2BIG when the file
 * is, or grows while being read, larger than b->max. Returns 0 or -errno
 * (-ENOENT for a missing file, -ELOOP for a symlink with O_NOFOLLOW). */
int kiln_read_file_at_flags(int dirfd, const char *path, int open_flags, struct kiln_buf *b);

/* The rest of kiln_read_file_at_flags, on a file the caller opened (with
 * O_NONBLOCK | O_NOCTTY): the same checks, limit and results. */
int kiln_read_fd(int fd, struct kiln_buf *b);

/* kiln_read_file_at_flags with no extra flags (symbolic links followed). */
int kiln_read_file_at(int dirfd, const char *path, struct kiln_buf *b);

/* The cause of a kiln_read_file_at failure r in words, for a buffer whose
 * maximum was max: "not a regular file", "larger than <max> bytes", else
 * strerror. The text lives in buf or in static storage. */
const char *kiln_read_file_strerror(int r, size_t max, char buf[static 64]);

/* Creates path and its missing parents with mode. Returns 0 or -errno. */
int kiln_mkdir_p(const char *path, unsigned mode);

/* Writes all of p[0..n) to fd, retrying short writes and EINTR. Returns 0
 * or -errno. */
int kiln_write_all(int fd, const void *p, size_t n);

/* Writes data to path atomically: a temporary file in the same directory,
 * fsync, rename. Nothing half-written is ever visible under path. */
int kiln_write_file_atomic(const char *path, const void *data, size_t n, unsigned mode);
/* As kiln_write_file_atomic without the syncs: readers never see half a
 * file, but after a crash path may be missing, stale or empty. For files
 * whose loss the caller detects and survives (they are made durable later,
 * in batches). */
int kiln_write_file_replace(const char *path, const void *data, size_t n, unsigned mode);

/* path made absolute against the working directory, trailing '/'s dropped
 * ("/" stays); nothing else is normalised. *ret is malloc'd. Returns 0, or
 * -errno when the working directory cannot be read. */
int kiln_path_absolute(const char *path, char **ret);

/* Removes path (relative to dirfd) and everything below it. A symbolic link
 * is removed, never followed, and no other file system is entered: a
 * directory below path on another mount fails the removal with -EBUSY and
 * stays, with its parents. keep, when not NULL, names an entry directly
 * below path that is kept, and path with it. A missing path is not an
 * error. Stops at the first failure and returns its -errno with *err (err
 * may be NULL) naming the entry: "remove '<path>/...': <cause>". Nesting
 * deeper than KILN_RM_RF_MAX_DEPTH fails with -ELOOP. Not atomic: callers
 * that need the tree to vanish at once rename it out of the way first. */
int kiln_rm_rf_at(int dirfd, const char *path, const char *keep, struct kiln_error **err);

/* Whether name, a temporary entry named "...-<pid>-<n>", was made by this
 * process (<pid> is getpid() in decimal): entries of other processes may
 * still be in use, this process's own are left over from a failure. */
bool kiln_tmp_name_is_ours(const char *name);
