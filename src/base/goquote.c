/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "goquote.h"

size_t kiln_utf8_decode(const unsigned char *s, size_t n, uint32_t *ret)
{
        uint32_t c;
        size_t len, i;

        if (s[0] < 0x80) {
                *ret = s[0];
                return 1;
        }
        if ((s[0] & 0xe0) == 0xc0) {
                len = 2;
                c = s[0] & 0x1f;
        } else if ((s[0] & 0xf0) == 0xe0) {
                len = 3;
                c = s[0] & 0x0f;
        } else if ((s[0] & 0xf8) == 0xf0) {
                len = 4;
                c = s[0] & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3f);
        }
        if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
            c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *ret = c;
        return len;
}

uint32_t kiln_utf8_decode_rune(const char *s, size_t n, size_t *width)
{
        uint32_t c;
        size_t len;

        if (n == 0) {
                *width = 0;
                return 0xfffd;
        }
        len = kiln_utf8_decode((const unsigned char *) s, n, &c);
        if (len == 0) {
                *width = 1;
                return 0xfffd;
        }
        *width = len;
        return c;
}

size_t kiln_utf8_encode(uint32_t r, char out[static 4])
{
        if (r > 0x10ffff || (r >= 0xd800 && r <= 0xdfff))
                r = 0xfffd;
        if (r < 0x80) {
                out[0] = (char) r;
                return 1;
        }
        if (r < 0x800) {
                out[0] = (char) (0xc0 | (r >> 6));
                out[1] = (char) (0x80 | (r & 0x3f));
                return 2;
        }
        if (r < 0x10000) {
                out[0] = (char) (0xe0 | (r >> 12));
                out[1] = (char) (0x80 | ((r >> 6) & 0x3f));
                out[2] = (char) (0x80 | (r & 0x3f));
                return 3;
        }
        out[0] = (char) (0xf0 | (r >> 18));
        out[1] = (char) (0x80 | ((r >> 12) & 0x3f));
        out[2] = (char) (0x80 | ((r >> 6) & 0x3f));
        out[3] = (char) (0x80 | (r & 0x3f));
        return 4;
}

/* Go's unicode.IsPrint, closely enough: controls, spaces other than
 * U+0020, format characters, surrogates, noncharacters, tags and
 * private-use code points are not printable. Unassigned code points count
 * as printable. */
static bool rune_printable(uint32_t r)
{
        if (r < 0x80)
                return r >= 0x20 && r < 0x7f;
        if (r < 0xa1 || r == 0xad)
                return false;
        return !((r >= 0x2000 && r <= 0x200f) || (r >= 0x2028 && r <= 0x202f) ||
                 (r >= 0x205f && r <= 0x206f) || r == 0x1680 || r == 0x3000 || r == 0xfeff ||
                 (r >= 0xfff9 && r <= 0xfffb) || (r & 0xfffe) == 0xfffe ||
                 (r >= 0xe000 && r <= 0xf8ff) || r >= 0xf0000 || (r >= 0xe0000 && r <= 0xe007f) ||
                 (r >= 0xd800 && r <= 0xdfff));
}

/* strconv.Quote, which logrus uses through %q. */
int kiln_buf_go_quote(struct kiln_buf *b, const char *v, size_t n)
{
        const unsigned char *s = (const unsigned char *) v;
        size_t i = 0;

        (void) kiln_buf_putc(b, '"');
        while (i < n) {
                uint32_t c;
                size_t len = kiln_utf8_decode(s + i, n - i, &c);

                if (len == 0) {
                        (void) kiln_buf_printf(b, "\\x%02x", s[i]);
                        i++;
                        continue;
                }
                switch (c) {
                case '"':
                        (void) kiln_buf_puts(b, "\\\"");
                        break;
                case '\\':
                        (void) kiln_buf_puts(b, "\\\\");
                        break;
                case '\a':
                        (void) kiln_buf_puts(b, "\\a");
                        break;
                case '\b':
                        (void) kiln_buf_puts(b, "\\b");
                        break;
                case '\f':
                        (void) kiln_buf_puts(b, "\\f");
                        break;
                case '\n':
                        (void) kiln_buf_puts(b, "\\n");
                        break;
                case '\r':
                        (void) kiln_buf_puts(b, "\\r");
                        break;
                case '\t':
                        (void) kiln_buf_puts(b, "\\t");
                        break;
                case '\v':
                        (void) kiln_buf_puts(b, "\\v");
                        break;
                default:
                        if (rune_printable(c))
                                (void) kiln_buf_append(b, s + i, len);
                        else if (c < 0x80)
                                (void) kiln_buf_printf(b, "\\x%02x", c);
                        else if (c < 0x10000)
                                (void) kiln_buf_printf(b, "\\u%04x", c);
                        else
                                (void) kiln_buf_printf(b, "\\U%08x", c);
                }
                i += len;
        }
        return kiln_buf_putc(b, '"');
}
