/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON output byte-compatible with Go's encoding/json, because the digests
 * of the documents kiln writes must equal the ones BuildKit writes for the
 * same image (../shared/testdata/oci/buildkit-compat-goldens).
 */

#include <math.h>
#include <stdio.h>

#include "content.h"

static int put_escaped(struct kiln_buf *out, const char *s, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        size_t i = 0, start = 0;
        int r;

        r = kiln_buf_putc(out, '"');
        if (r < 0)
                return r;
        while (i < len) {
                unsigned char b = (unsigned char) s[i];
                char esc[8];
                size_t esc_len = 0, size = 1;
                uint32_t rune;

                if (b < 0x80) {
                        if (b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' &&
                            b != '&') {
                                i++;
                                continue;
                        }
                        esc[0] = '\\';
                        switch (b) {
                        case '"':
                        case '\\':
                                esc[1] = (char) b;
                                esc_len = 2;
                                break;
                        case '\b':
                                esc[1] = 'b';
                                esc_len = 2;
                                break;
                        case '\f':
                                esc[1] = 'f';
                                esc_len = 2;
                                break;
                        case '\n':
                                esc[1] = 'n';
                                esc_len = 2;
                                break;
                        case '\r':
                                esc[1] = 'r';
                                esc_len = 2;
                                break;
                        case '\t':
                                esc[1] = 't';
                                esc_len = 2;
                                break;
                        default:
                                memcpy(esc + 1, "u00", 3);
                                esc[4] = hex[b >> 4];
                                esc[5] = hex[b & 0xf];
                                esc_len = 6;
                                break;
                        }
                } else {
                        /* Decode one rune as Go's utf8.DecodeRuneInString:
                         * anything invalid is one byte of U+FFFD. */
                        size_t need, k;

                        if (b >= 0xc2 && b <= 0xdf) {
                                need = 2;
                                rune = b & 0x1f;
                        } else if (b >= 0xe0 && b <= 0xef) {
                                need = 3;
                                rune = b & 0x0f;
                        } else if (b >= 0xf0 && b <= 0xf4) {
                                need = 4;
                                rune = b & 0x07;
                        } else
                                need = 0;
                        for (k = 1; need && k < need; k++) {
                                if (i + k >= len || ((unsigned char) s[i + k] & 0xc0) != 0x80) {
                                        need = 0;
                                        break;
                                }
                                rune = (rune << 6) | ((unsigned char) s[i + k] & 0x3f);
                        }
                        if (need == 3 && (rune < 0x800 || (rune >= 0xd800 && rune <= 0xdfff)))
                                need = 0;
                        if (need == 4 && (rune < 0x10000 || rune > 0x10ffff))
                                need = 0;
                        if (need == 0) {
                                memcpy(esc, "\\ufffd", 6);
                                esc_len = 6;
                        } else if (rune == 0x2028 || rune == 0x2029) {
                                memcpy(esc, "\\u202", 5);
                                esc[5] = hex[rune & 0xf];
                                esc_len = 6;
                                size = need;
                        } else {
                                i += need;
                                continue;
                        }
                }
                r = kiln_buf_append(out, s + start, i - start);
                if (r < 0)
                        return r;
                r = kiln_buf_append(out, esc, esc_len);
                if (r < 0)
                        return r;
                i += size;
                start = i;
        }
        r = kiln_buf_append(out, s + start, i - start);
        if (r < 0)
                return r;
        return kiln_buf_putc(out, '"');
}

/* strconv.AppendFloat(f, 'f' or 'e', -1, 64) with encoding/json's choice of
 * format and its "e-09" -> "e-9" clean-up. */
static void format_go_float(double f, char *buf, size_t size)
{
        char tmp[40], digits[24], *p;
        bool neg, exp_form;
        int prec, exp10;
        size_t nd = 0, o = 0;

        for (prec = 1; prec <= 17; prec++) {
                (void) snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, f);
                if (strtod(tmp, NULL) == f)
                        break;
        }
        p = tmp;
        neg = *p == '-';
        if (neg)
                p++;
        for (; *p && *p != 'e'; p++)
                if (*p != '.' && nd < sizeof(digits) - 1)
                        digits[nd++] = *p;
        digits[nd] = '\0';
        exp10 = (int) strtol(p + 1, NULL, 10);
        exp_form = fabs(f) != 0 && (fabs(f) < 1e-6 || fabs(f) >= 1e21);

#define OUT(c)                          \
        do {                            \
                if (o + 1 < size)       \
                        buf[o++] = (c); \
        } while (0)
        if (neg)
                OUT('-');
        if (exp_form) {
                char e[16];
                size_t i;

                OUT(digits[0]);
                if (nd > 1) {
                        OUT('.');
                        for (i = 1; i < nd; i++)
                                OUT(digits[i]);
                }
                (void) snprintf(e, sizeof(e), "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
                if (exp10 < 0 && exp10 > -10)
                        (void) snprintf(e, sizeof(e), "e-%d", -exp10);
                for (i = 0; e[i]; i++)
                        OUT(e[i]);
        } else if (exp10 >= 0) {
                int i;

                for (i = 0; i <= exp10; i++)
                        OUT((size_t) i < nd ? digits[i] : '0');
                if ((size_t) exp10 + 1 < nd) {
                        OUT('.');
                        for (i = exp10 + 1; (size_t) i < nd; i++)
                                OUT(digits[i]);
                }
        } else {
                int i;

                OUT('0');
                OUT('.');
                for (i = -1; i > exp10; i--)
                        OUT('0');
                for (i = 0; (size_t) i < nd; i++)
                        OUT(digits[i]);
        }
#undef OUT
        buf[o] = '\0';
}

static int put_indent(struct kiln_buf *out, unsigned flags, unsigned depth)
{
        unsigned i;
        int r;

        if (!(flags & KILN_CONTENT_JSON_INDENT))
                return 0;
        r = kiln_buf_putc(out, '\n');
        for (i = 0; r >= 0 && i < depth; i++)
                r = kiln_buf_append(out, "  ", 2);
        return r;
}

static int dump(const json_t *v, unsigned flags, unsigned depth, struct kiln_buf *out)
{
        char num[64];
        int r;

        switch (json_typeof(v)) {
        case JSON_OBJECT: {
                const char *key;
                json_t *value;
                bool first = true;

                if (json_object_size(v) == 0)
                        return kiln_buf_puts(out, "{}");
                r = kiln_buf_putc(out, '{');
                if (r < 0)
                        return r;
                /* jansson keeps insertion order, which is what we want:
                 * parsed documents keep theirs, built ones follow Go's
                 * struct field order. */
                json_object_foreach ((json_t *) v, key, value) {
                        if (!first) {
                                r = kiln_buf_putc(out, ',');
                                if (r < 0)
                                        return r;
                        }
                        first = false;
                        r = put_indent(out, flags, depth + 1);
                        if (r >= 0)
                                r = put_escaped(out, key, strlen(key));
                        if (r >= 0)
                                r = kiln_buf_puts(out,
                                                  flags & KILN_CONTENT_JSON_INDENT ? ": " : ":");
                        if (r >= 0)
                                r = dump(value, flags, depth + 1, out);
                        if (r < 0)
                                return r;
                }
                r = put_indent(out, flags, depth);
                if (r < 0)
                        return r;
                return kiln_buf_putc(out, '}');
        }
        case JSON_ARRAY: {
                size_t i;

                if (json_array_size(v) == 0)
                        return kiln_buf_puts(out, "[]");
                r = kiln_buf_putc(out, '[');
                if (r < 0)
                        return r;
                for (i = 0; i < json_array_size(v); i++) {
                        if (i > 0) {
                                r = kiln_buf_putc(out, ',');
                                if (r < 0)
                                        return r;
                        }
                        r = put_indent(out, flags, depth + 1);
                        if (r >= 0)
                                r = dump(json_array_get(v, i), flags, depth + 1, out);
                        if (r < 0)
                                return r;
                }
                r = put_indent(out, flags, depth);
                if (r < 0)
                        return r;
                return kiln_buf_putc(out, ']');
        }
        case JSON_STRING:
                return put_escaped(out, json_string_value(v), json_string_length(v));
        case JSON_INTEGER:
                (void) snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return kiln_buf_puts(out, num);
        case JSON_REAL:
                format_go_float(json_real_value(v), num, sizeof(num));
                return kiln_buf_puts(out, num);
        case JSON_TRUE:
                return kiln_buf_puts(out, "true");
        case JSON_FALSE:
                return kiln_buf_puts(out, "false");
        case JSON_NULL:
                return kiln_buf_puts(out, "null");
        }
        return -EINVAL;
}

int kiln_content_json_dump(const json_t *v, unsigned flags, struct kiln_buf *out)
{
        if (!v)
                return -EINVAL;
        return dump(v, flags, 0, out);
}
