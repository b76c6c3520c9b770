/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Errors that carry a message up the call chain.
 *
 * Fallible functions that parse input or do I/O take `struct kiln_error **err`
 * as their last argument. On failure they set it (kiln_error_set*) and return
 * the negative errno; each caller that adds context wraps it
 * (kiln_error_wrap) and returns the same value. Whoever ends the chain
 * reports the message once and frees it. err must not be NULL: a wrapped
 * chain gets its return value from the stored error.
 *
 * Messages are lower case, without a full stop, subject quoted, cause last:
 *   load config '/etc/buildkit/buildkitd.toml': 3:7: expected '='
 */

#include "macro.h"

struct kiln_error {
        int code;      /* negative errno */
        char *message; /* full text, context first */
        /* Location of the innermost cause when it was a position in an input
         * (line and column are 1-based; 0 when unknown). */
        char *file;
        unsigned line;
        unsigned col;
};

/* Sets *err (when err is not NULL) to a new error; returns code, which must
 * be negative. An error already in *err is replaced. */
int kiln_error_set(struct kiln_error **err, int code, const char *fmt, ...) _printf_(3, 4);

/* As kiln_error_set, for a position in an input: the message is prefixed
 * with "file:line:col: " (file may be NULL: "line:col: "). */
int kiln_error_set_at(struct kiln_error **err, int code, const char *file, unsigned line,
                      unsigned col, const char *fmt, ...) _printf_(6, 7);

/* Prefixes the message in *err with the formatted context and ": ".
 * Returns the stored code (or -EIO if *err is unset, which is a bug). */
int kiln_error_wrap(struct kiln_error **err, const char *fmt, ...) _printf_(2, 3);

/* Returns the message, or a generic one for NULL. */
const char *kiln_error_message(const struct kiln_error *e);

struct kiln_error *kiln_error_free(struct kiln_error *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_error *, kiln_error_free);
