/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "buf.h"

/* Reads the whole file at path (relative to dirfd, AT_FDCWD for the cwd)
 * into b, failing with -E2BIG when it is larger than b->max. Returns 0 or
 * -errno (-ENOENT for a missing file). */
int kiln_read_file_at(int dirfd, const char *path, struct kiln_buf *b);

/* Creates path and its missing parents with mode. Returns 0 or -errno. */
int kiln_mkdir_p(const char *path, unsigned mode);

/* Writes data to path atomically: a temporary file in the same directory,
 * fsync, rename. Nothing half-written is ever visible under path. */
int kiln_write_file_atomic(const char *path, const void *data, size_t n, unsigned mode);
