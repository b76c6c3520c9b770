/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "buf.h"

static int buf_reserve(struct kiln_buf *b, size_t extra)
{
        /* One byte is always kept for the NUL, so SIZE_MAX - 1 is the most a
         * buffer can hold whatever maximum it was given. */
        size_t max = b->max < SIZE_MAX - 1 ? b->max : SIZE_MAX - 1;
        size_t need, cap;

        if (extra > max || b->len > max - extra)
                return -E2BIG;
        need = b->len + extra + 1;
        if (need <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 64;
        while (cap < need)
                cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        /* Never allocate far past the maximum the buffer may ever hold. */
        if (cap > max + 1)
                cap = max + 1;
        b->data = kiln_xrealloc(b->data, cap);
        b->cap = cap;
        return 0;
}

int kiln_buf_append(struct kiln_buf *b, const void *p, size_t n)
{
        int r = buf_reserve(b, n);

        if (r < 0)
                return r;
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
}

int kiln_buf_puts(struct kiln_buf *b, const char *s)
{
        return kiln_buf_append(b, s, strlen(s));
}

int kiln_buf_putc(struct kiln_buf *b, char c)
{
        return kiln_buf_append(b, &c, 1);
}

int kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...)
{
        va_list ap;
        int n, r;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        r = buf_reserve(b, (size_t) n);
        if (r < 0)
                return r;
        va_start(ap, fmt);
        (void) vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t) n;
        return 0;
}

void kiln_buf_reset(struct kiln_buf *b)
{
        b->len = 0;
        if (b->data)
                b->data[0] = '\0';
}

void kiln_buf_release(struct kiln_buf *b)
{
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
}

char *kiln_buf_steal(struct kiln_buf *b)
{
        char *p = b->data ? b->data : kiln_xstrdup("");

        b->data = NULL;
        b->len = b->cap = 0;
        return p;
}

char *kiln_quote_untrusted(const char *s, size_t n, size_t max)
{
        static const char hex[] = "0123456789abcdef";
        size_t lim = n > max ? max : n;
        struct kiln_buf b = KILN_BUF_INIT(lim * 4 + 4);

        for (size_t i = 0; i < lim; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c < 0x20 || c >= 0x7f || c == '\\') {
                        char e[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
                        (void) kiln_buf_append(&b, e, 4);
                } else
                        (void) kiln_buf_putc(&b, (char) c);
        }
        if (n > max)
                (void) kiln_buf_puts(&b, "...");
        return kiln_buf_steal(&b);
}
