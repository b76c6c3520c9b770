/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Growable byte buffers with a mandatory maximum: input from the network or
 * a user can never grow one past the limit it was made with. The data is
 * always NUL-terminated (the NUL is not counted in len).
 *
 * Not thread safe; one owner at a time.
 */

#include "macro.h"

struct kiln_buf {
        char *data;
        size_t len;
        size_t cap;
        size_t max; /* appends that would pass it fail with -E2BIG */
};

#define KILN_BUF_INIT(maximum) ((struct kiln_buf){ .max = (maximum) })

int kiln_buf_append(struct kiln_buf *b, const void *p, size_t n);
int kiln_buf_puts(struct kiln_buf *b, const char *s);
int kiln_buf_putc(struct kiln_buf *b, char c);
int kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...) _printf_(2, 3);
/* Drops the contents, keeps the storage. */
void kiln_buf_reset(struct kiln_buf *b);
/* Frees the storage; the buffer is empty and reusable afterwards. */
void kiln_buf_release(struct kiln_buf *b);
/* Returns the data (never NULL, caller frees) and leaves the buffer empty. */
char *kiln_buf_steal(struct kiln_buf *b);

/* Untrusted bytes (a reference, a header, a path from the network or a
 * user) made safe for a message: the first max bytes, with control bytes,
 * non-ASCII bytes and '\\' written as \xHH, and "..." when s was longer.
 * Never NULL; caller frees. */
char *kiln_quote_untrusted(const char *s, size_t n, size_t max);
