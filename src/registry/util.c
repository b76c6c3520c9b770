/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "content/content.h"
#include "registry-internal.h"
#include "registry.h"

static bool query_unreserved(unsigned char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.' || c == '~';
}

int url_query_escape(struct kiln_buf *b, const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        int r;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (query_unreserved(*p))
                        r = kiln_buf_putc(b, (char) *p);
                else if (*p == ' ')
                        r = kiln_buf_putc(b, '+');
                else {
                        char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
                        r = kiln_buf_append(b, e, 3);
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static char *unescape(const char *s, size_t n, bool plus_is_space)
{
        _cleanup_free_ char *out = kiln_xmalloc(n + 1);
        size_t j = 0;

        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%') {
                        int hi, lo;

                        if (i + 2 >= n)
                                return NULL;
                        hi = ascii_hex_value(s[i + 1]);
                        lo = ascii_hex_value(s[i + 2]);
                        if (hi < 0 || lo < 0)
                                return NULL;
                        out[j++] = (char) (hi << 4 | lo);
                        i += 2;
                } else if (s[i] == '+' && plus_is_space)
                        out[j++] = ' ';
                else
                        out[j++] = s[i];
        }
        out[j] = 0;
        return TAKE_PTR(out);
}

char *url_query_unescape(const char *s, size_t n)
{
        return unescape(s, n, true);
}

char *url_path_unescape(const char *s, size_t n)
{
        return unescape(s, n, false);
}

void url_query_add(struct url_query *q, const char *key, const char *value)
{
        q->items = kiln_xreallocarray(q->items, q->n + 1, sizeof(*q->items));
        q->items[q->n].key = kiln_xstrdup(key);
        q->items[q->n].value = kiln_xstrdup(value);
        q->n++;
}

void url_query_parse(struct url_query *q, const char *raw, size_t n)
{
        const char *end = raw + n;

        while (raw < end) {
                const char *amp = memchr(raw, '&', (size_t) (end - raw));
                const char *seg_end = amp ? amp : end;
                size_t len = (size_t) (seg_end - raw);
                const char *eq;
                _cleanup_free_ char *k = NULL, *v = NULL;

                if (len > 0 && !memchr(raw, ';', len)) {
                        eq = memchr(raw, '=', len);
                        k = url_query_unescape(raw, eq ? (size_t) (eq - raw) : len);
                        v = eq ? url_query_unescape(eq + 1, (size_t) (seg_end - eq - 1))
                               : kiln_xstrdup("");
                        if (k && v)
                                url_query_add(q, k, v);
                }
                raw = amp ? amp + 1 : end;
        }
}

static int pair_cmp(const void *a, const void *b)
{
        const struct url_query_pair *x = *(const struct url_query_pair *const *) a;
        const struct url_query_pair *y = *(const struct url_query_pair *const *) b;
        int c = strcmp(x->key, y->key);

        /* Stable: pairs of one key keep the order they were added in. */
        if (c == 0)
                return x < y ? -1 : x > y;
        return c;
}

int url_query_encode(const struct url_query *q, struct kiln_buf *b)
{
        _cleanup_free_ const struct url_query_pair **sorted = NULL;
        int r;

        if (q->n == 0)
                return 0;
        sorted = kiln_xreallocarray(NULL, q->n, sizeof(*sorted));
        for (size_t i = 0; i < q->n; i++)
                sorted[i] = &q->items[i];
        qsort(sorted, q->n, sizeof(*sorted), pair_cmp);
        for (size_t i = 0; i < q->n; i++) {
                if (i > 0 && (r = kiln_buf_putc(b, '&')) < 0)
                        return r;
                if ((r = url_query_escape(b, sorted[i]->key)) < 0 ||
                    (r = kiln_buf_putc(b, '=')) < 0 ||
                    (r = url_query_escape(b, sorted[i]->value)) < 0)
                        return r;
        }
        return 0;
}

void url_query_release(struct url_query *q)
{
        for (size_t i = 0; i < q->n; i++) {
                free_secret(q->items[i].key);
                free_secret(q->items[i].value);
        }
        free(q->items);
        *q = (struct url_query){ 0 };
}

int url_path_join(struct kiln_buf *b, const char *const *parts, size_t n)
{
        /* Segments as (pointer, length) into the parts; ".." pops one. */
        struct seg {
                const char *p;
                size_t n;
        };
        _cleanup_free_ struct seg *segs = NULL;
        size_t nsegs = 0, cap = 0;
        bool rooted = false, any = false, trailing = false;
        int r;

        for (size_t i = 0; i < n; i++) {
                const char *s = parts[i];

                if (!s || !*s)
                        continue;
                if (!any)
                        rooted = s[0] == '/';
                any = true;
                while (*s) {
                        size_t len = strcspn(s, "/");

                        bool dot = len == 1 && s[0] == '.';
                        bool dotdot = len == 2 && s[0] == '.' && s[1] == '.';
                        bool push = len > 0 && !dot;

                        if (dotdot) {
                                bool top_is_dotdot = nsegs > 0 && segs[nsegs - 1].n == 2 &&
                                                     memcmp(segs[nsegs - 1].p, "..", 2) == 0;

                                /* path.Clean: ".." eats a name; at the root it
                                 * vanishes; in a relative path it stays. */
                                if (nsegs > 0 && !top_is_dotdot) {
                                        nsegs--;
                                        push = false;
                                } else
                                        push = !rooted;
                        }
                        if (push) {
                                if (nsegs == cap) {
                                        cap = cap ? cap * 2 : 8;
                                        segs = kiln_xreallocarray(segs, cap, sizeof(*segs));
                                }
                                segs[nsegs++] = (struct seg){ s, len };
                        }
                        s += len;
                        if (*s == '/')
                                s++;
                }
        }
        if (n > 0 && parts[n - 1] && *parts[n - 1])
                trailing = parts[n - 1][strlen(parts[n - 1]) - 1] == '/';
        if (!any)
                return 0;
        if (rooted && (r = kiln_buf_putc(b, '/')) < 0)
                return r;
        for (size_t i = 0; i < nsegs; i++) {
                if (i > 0 && (r = kiln_buf_putc(b, '/')) < 0)
                        return r;
                if ((r = kiln_buf_append(b, segs[i].p, segs[i].n)) < 0)
                        return r;
        }
        if (!rooted && nsegs == 0 && (r = kiln_buf_putc(b, '.')) < 0)
                return r;
        if (trailing && b->len > 0 && b->data[b->len - 1] != '/' && (r = kiln_buf_putc(b, '/')) < 0)
                return r;
        return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const void *p, size_t n)
{
        const unsigned char *s = p;
        char *out = kiln_xmalloc((n + 2) / 3 * 4 + 1), *o = out;
        size_t i;

        for (i = 0; i + 2 < n; i += 3) {
                *o++ = b64[s[i] >> 2];
                *o++ = b64[(s[i] & 3) << 4 | s[i + 1] >> 4];
                *o++ = b64[(s[i + 1] & 15) << 2 | s[i + 2] >> 6];
                *o++ = b64[s[i + 2] & 63];
        }
        if (n - i == 1) {
                *o++ = b64[s[i] >> 2];
                *o++ = b64[(s[i] & 3) << 4];
                *o++ = '=';
                *o++ = '=';
        } else if (n - i == 2) {
                *o++ = b64[s[i] >> 2];
                *o++ = b64[(s[i] & 3) << 4 | s[i + 1] >> 4];
                *o++ = b64[(s[i + 1] & 15) << 2];
                *o++ = '=';
        }
        *o = 0;
        return out;
}

static int b64_value(char c)
{
        const char *p = c ? strchr(b64, c) : NULL;

        return p ? (int) (p - b64) : -1;
}

char *base64_decode(const char *s, size_t n, size_t *ret_n)
{
        _cleanup_free_ char *clean = kiln_xmalloc(n + 1);
        _cleanup_free_ unsigned char *out = NULL;
        size_t m = 0, j = 0;

        for (size_t i = 0; i < n; i++)
                if (s[i] != '\r' && s[i] != '\n')
                        clean[m++] = s[i];
        if (m % 4 != 0)
                goto fail;
        out = kiln_xmalloc(m / 4 * 3 + 1);
        for (size_t i = 0; i < m; i += 4) {
                int v[4];
                size_t pad = 0;

                for (size_t k = 0; k < 4; k++) {
                        if (clean[i + k] == '=') {
                                /* Padding only at the very end, in the last two places. */
                                if (i + 4 != m || k < 2)
                                        goto fail;
                                pad++;
                                v[k] = 0;
                        } else {
                                if (pad > 0)
                                        goto fail;
                                v[k] = b64_value(clean[i + k]);
                                if (v[k] < 0)
                                        goto fail;
                        }
                }
                out[j++] = (unsigned char) (v[0] << 2 | v[1] >> 4);
                if (pad < 2)
                        out[j++] = (unsigned char) ((v[1] & 15) << 4 | v[2] >> 2);
                if (pad < 1)
                        out[j++] = (unsigned char) ((v[2] & 3) << 6 | v[3]);
        }
        out[j] = 0;
        explicit_bzero(clean, n + 1);
        *ret_n = j;
        return (char *) TAKE_PTR(out);
fail:
        explicit_bzero(clean, n + 1);
        return NULL;
}

void free_secret(char *s)
{
        if (!s)
                return;
        explicit_bzero(s, strlen(s));
        free(s);
}

static char ascii_lower(char c)
{
        return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

bool ascii_strcaseeq(const char *a, const char *b)
{
        for (; *a && *b; a++, b++)
                if (ascii_lower(*a) != ascii_lower(*b))
                        return false;
        return *a == *b;
}

int blob_set_add(const struct kiln_content_descriptor ***blobs, size_t *n,
                 const struct kiln_content_descriptor *d, struct kiln_error **err)
{
        for (size_t i = 0; i < *n; i++)
                if (streq((*blobs)[i]->digest, d->digest))
                        return 0;
        if (*n >= KILN_LIMIT_REGISTRY_BLOBS)
                return kiln_error_set(err, -E2BIG, "more than %u blobs", KILN_LIMIT_REGISTRY_BLOBS);
        *blobs = kiln_xreallocarray(*blobs, *n + 1, sizeof(**blobs));
        (*blobs)[(*n)++] = d;
        return 0;
}
