/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Duration and DiskSpace as buildkitd's config package reads them: Go's
 * time.ParseDuration with an integer-seconds fallback, and docker/go-units'
 * RAMInBytes (binary units) with a "N%" form.
 */

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>

#include "config/config.h"

/* Go's `1<<63`, the magnitude of the most negative duration. */
#define U63 ((uint64_t) 1 << 63)

/* buildkitd strips one pair of surrounding double quotes (stripQuotes). */
static void strip_quotes(const char **s, size_t *len)
{
        if (*len >= 2 && (*s)[0] == '"' && (*s)[*len - 1] == '"') {
                (*s)++;
                *len -= 2;
        }
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

/* Go's leadingInt: digits up to overflow of 1<<63. */
static int leading_int(const char **p, const char *end, uint64_t *ret)
{
        uint64_t x = 0;
        const char *s = *p;

        for (; s < end && is_digit(*s); s++) {
                if (x > U63 / 10)
                        return -ERANGE;
                x = x * 10 + (uint64_t) (*s - '0');
                if (x > U63)
                        return -ERANGE;
        }
        *p = s;
        *ret = x;
        return 0;
}

/* Go's leadingFraction: digits past the precision are dropped, not errors. */
static void leading_fraction(const char **p, const char *end, uint64_t *ret, double *scale)
{
        uint64_t x = 0;
        double sc = 1;
        bool overflow = false;
        const char *s = *p;

        for (; s < end && is_digit(*s); s++) {
                if (overflow)
                        continue;
                if (x > (U63 - 1) / 10) {
                        overflow = true;
                        continue;
                }
                uint64_t y = x * 10 + (uint64_t) (*s - '0');
                if (y > U63) {
                        overflow = true;
                        continue;
                }
                x = y;
                sc *= 10;
        }
        *p = s;
        *ret = x;
        *scale = sc;
}

static const struct {
        const char *name;
        uint64_t ns;
} duration_units[] = {
        { "ns", 1ULL },
        { "us", 1000ULL },
        { "\xc2\xb5s", 1000ULL }, /* U+00B5 micro sign */
        { "\xce\xbcs", 1000ULL }, /* U+03BC Greek mu */
        { "ms", 1000000ULL },
        { "s", 1000000000ULL },
        { "m", 60ULL * 1000000000ULL },
        { "h", 3600ULL * 1000000000ULL },
};

/* Go's time.ParseDuration on s[0..len). */
static int go_parse_duration(const char *s, size_t len, int64_t *ret)
{
        const char *p = s, *end = s + len;
        uint64_t d = 0;
        bool neg = false;

        if (p < end && (*p == '-' || *p == '+')) {
                neg = *p == '-';
                p++;
        }
        if (end - p == 1 && *p == '0') {
                *ret = 0;
                return 0;
        }
        if (p == end)
                return -EINVAL;

        while (p < end) {
                uint64_t v = 0, f = 0, unit = 0;
                double scale = 1;
                bool pre, post = false;
                const char *q;
                int r;

                if (!(*p == '.' || is_digit(*p)))
                        return -EINVAL;
                q = p;
                r = leading_int(&p, end, &v);
                if (r < 0)
                        return r;
                pre = p != q;
                if (p < end && *p == '.') {
                        p++;
                        q = p;
                        leading_fraction(&p, end, &f, &scale);
                        post = p != q;
                }
                if (!pre && !post)
                        return -EINVAL;

                q = p;
                while (p < end && *p != '.' && !is_digit(*p))
                        p++;
                if (p == q)
                        return -EINVAL; /* missing unit */
                for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
                        if (strlen(duration_units[i].name) == (size_t) (p - q) &&
                            memcmp(duration_units[i].name, q, (size_t) (p - q)) == 0) {
                                unit = duration_units[i].ns;
                                break;
                        }
                if (unit == 0)
                        return -EINVAL; /* unknown unit */
                if (v > U63 / unit)
                        return -ERANGE;
                v *= unit;
                if (f > 0) {
                        v += (uint64_t) ((double) f * ((double) unit / scale));
                        if (v > U63)
                                return -ERANGE;
                }
                d += v;
                if (d > U63)
                        return -ERANGE;
        }
        if (neg) {
                *ret = d == U63 ? INT64_MIN : -(int64_t) d;
                return 0;
        }
        if (d > U63 - 1)
                return -ERANGE;
        *ret = (int64_t) d;
        return 0;
}

/* strconv.ParseInt(s, 10, 64): optional sign, decimal digits only. */
static int go_parse_int10(const char *s, size_t len, int64_t *ret)
{
        const char *p = s, *end = s + len;
        bool neg = false;
        uint64_t x = 0, lim;

        if (p < end && (*p == '+' || *p == '-')) {
                neg = *p == '-';
                p++;
        }
        if (p == end)
                return -EINVAL;
        lim = neg ? U63 : U63 - 1;
        for (; p < end; p++) {
                if (!is_digit(*p))
                        return -EINVAL;
                if (x > lim / 10 || x * 10 + (uint64_t) (*p - '0') > lim)
                        return -ERANGE;
                x = x * 10 + (uint64_t) (*p - '0');
        }
        *ret = neg ? (x == U63 ? INT64_MIN : -(int64_t) x) : (int64_t) x;
        return 0;
}

int kiln_config_parse_duration(const char *s, int64_t *ret)
{
        size_t len = strlen(s);
        int64_t v;
        int r;

        strip_quotes(&s, &len);
        if (len == 0) {
                *ret = 0;
                return 0;
        }
        r = go_parse_duration(s, len, &v);
        if (r == 0) {
                *ret = v;
                return 0;
        }
        if (go_parse_int10(s, len, &v) == 0) {
                /* Go multiplies by time.Second and wraps silently; refuse instead. */
                if (v > INT64_MAX / 1000000000 || v < INT64_MIN / 1000000000)
                        return -ERANGE;
                *ret = v * 1000000000;
                return 0;
        }
        return r == -ERANGE ? -ERANGE : -EINVAL;
}

static void append_frac(char *buf, size_t *w, uint64_t *v, int prec)
{
        /* Go's fmtFrac, writing forwards: digits of v%10^prec, trailing zeros
         * dropped, a '.' when any digit remains. */
        char digits[32];
        int n = 0;
        bool print = false;

        for (int i = 0; i < prec; i++) {
                int digit = (int) (*v % 10);
                print = print || digit != 0;
                if (print)
                        digits[n++] = (char) ('0' + digit);
                *v /= 10;
        }
        if (print) {
                buf[(*w)++] = '.';
                while (n > 0)
                        buf[(*w)++] = digits[--n];
        }
}

static void append_uint(char *buf, size_t *w, uint64_t v)
{
        char tmp[24];
        int n = 0;

        do {
                tmp[n++] = (char) ('0' + v % 10);
                v /= 10;
        } while (v > 0);
        while (n > 0)
                buf[(*w)++] = tmp[--n];
}

char *kiln_config_format_duration(int64_t ns)
{
        char buf[64];
        size_t w = 0;
        bool neg = ns < 0;
        uint64_t u = neg ? (uint64_t) 0 - (uint64_t) ns : (uint64_t) ns;

        if (neg)
                buf[w++] = '-';
        if (u < 1000000000ULL) {
                /* Sub-second: ns, µs or ms with a fraction. */
                int prec;
                const char *unit;

                if (u == 0)
                        return kiln_xstrdup("0s");
                if (u < 1000ULL) {
                        append_uint(buf, &w, u);
                        buf[w++] = 'n';
                        buf[w++] = 's';
                        buf[w] = 0;
                        return kiln_xstrdup(buf);
                }
                if (u < 1000000ULL) {
                        prec = 3;
                        unit = "\xc2\xb5s";
                } else {
                        prec = 6;
                        unit = "ms";
                }
                uint64_t frac = u;
                uint64_t whole = u;
                for (int i = 0; i < prec; i++)
                        whole /= 10;
                append_uint(buf, &w, whole);
                append_frac(buf, &w, &frac, prec);
                for (const char *c = unit; *c; c++)
                        buf[w++] = *c;
                buf[w] = 0;
                return kiln_xstrdup(buf);
        }

        uint64_t frac = u;
        uint64_t secs = u / 1000000000ULL;
        char fracbuf[16];
        size_t fw = 0;
        append_frac(fracbuf, &fw, &frac, 9);
        fracbuf[fw] = 0;

        uint64_t h = secs / 3600, m = (secs / 60) % 60, s = secs % 60;
        if (h > 0) {
                append_uint(buf, &w, h);
                buf[w++] = 'h';
        }
        if (h > 0 || m > 0) {
                append_uint(buf, &w, m);
                buf[w++] = 'm';
        }
        append_uint(buf, &w, s);
        memcpy(buf + w, fracbuf, fw);
        w += fw;
        buf[w++] = 's';
        buf[w] = 0;
        return kiln_xstrdup(buf);
}

/* Go's underscoreOK: an underscore only between digits, or between a base
 * prefix and a digit. */
static bool go_underscore_ok(const char *s, size_t len)
{
        char saw = '^'; /* ^ start, 0 digit or prefix, _ underscore, ! other */
        size_t i = 0;
        bool hex = false;

        if (len >= 1 && (s[0] == '+' || s[0] == '-')) {
                s++;
                len--;
        }
        if (len >= 2 && s[0] == '0' && strchr("bBoOxX", s[1])) {
                i = 2;
                saw = '0';
                hex = s[1] == 'x' || s[1] == 'X';
        }
        for (; i < len; i++) {
                if (is_digit(s[i]) || (hex && isxdigit((unsigned char) s[i]))) {
                        saw = '0';
                        continue;
                }
                if (s[i] == '_') {
                        if (saw != '0')
                                return false;
                        saw = '_';
                        continue;
                }
                if (saw == '_')
                        return false;
                saw = '!';
        }
        return saw != '_';
}

/* Go's strconv.ParseFloat: decimal, or hexadecimal with a mandatory 'p'
 * exponent, underscores between digits, "inf", "infinity" (signed) and
 * "nan" in any case. Returns -ERANGE for a finite literal too large. */
static int go_parse_float(const char *s, size_t len, double *ret)
{
        char buf[128], *e;
        const char *p = s, *end = s + len, *q;
        bool hex = false, digits = false, dot = false, underscores = false;
        size_t n = 0;

        if (len == 0 || len >= sizeof(buf))
                return -EINVAL;

        if (len == 3 && strncasecmp(s, "nan", 3) == 0) {
                *ret = NAN;
                return 0;
        }
        q = (*p == '+' || *p == '-') ? p + 1 : p;
        if (((size_t) (end - q) == 3 && strncasecmp(q, "inf", 3) == 0) ||
            ((size_t) (end - q) == 8 && strncasecmp(q, "infinity", 8) == 0)) {
                *ret = *p == '-' ? -INFINITY : INFINITY;
                return 0;
        }

        if (*p == '+' || *p == '-')
                buf[n++] = *p++;
        if (end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
                hex = true;
                buf[n++] = *p++;
                buf[n++] = *p++;
        }
        for (; p < end; p++) {
                if (*p == '_') {
                        underscores = true;
                        continue;
                }
                if (*p == '.' && !dot) {
                        dot = true;
                        buf[n++] = *p;
                        continue;
                }
                if (!is_digit(*p) && !(hex && isxdigit((unsigned char) *p)))
                        break;
                digits = true;
                buf[n++] = *p;
        }
        if (!digits)
                return -EINVAL;
        if (p < end && tolower((unsigned char) *p) == (hex ? 'p' : 'e')) {
                bool exp_digits = false;

                buf[n++] = *p++;
                if (p < end && (*p == '+' || *p == '-'))
                        buf[n++] = *p++;
                for (; p < end && (is_digit(*p) || *p == '_'); p++) {
                        if (*p == '_') {
                                underscores = true;
                                continue;
                        }
                        exp_digits = true;
                        buf[n++] = *p;
                }
                if (!exp_digits)
                        return -EINVAL;
        } else if (hex)
                return -EINVAL; /* "hexadecimal mantissa requires a 'p' exponent" */
        if (p != end || (underscores && !go_underscore_ok(s, len)))
                return -EINVAL;

        buf[n] = '\0';
        errno = 0;
        *ret = strtod(buf, &e);
        if (*e != '\0')
                return -EINVAL;
        if (errno == ERANGE && isinf(*ret))
                return -ERANGE;
        return 0;
}

int kiln_config_parse_ram_in_bytes(const char *s, int64_t *ret)
{
        size_t len = strlen(s);
        ssize_t sep = -1;
        const char *num, *sfx;
        size_t num_len, sfx_len;
        double size;
        int r;

        for (size_t i = 0; i < len; i++)
                if (is_digit(s[i]) || s[i] == '.' || s[i] == ' ')
                        sep = (ssize_t) i;
        if (sep < 0)
                return -EINVAL; /* there must be at least a digit */
        num = s;
        if (s[sep] != ' ') {
                num_len = (size_t) sep + 1;
                sfx = s + sep + 1;
        } else {
                num_len = (size_t) sep; /* the space separator is dropped */
                sfx = s + sep + 1;
        }
        sfx_len = strlen(sfx);

        r = go_parse_float(num, num_len, &size);
        if (r < 0)
                return r;
        if (size < 0)
                return -EINVAL;

        if (sfx_len > 0) {
                char l[3];
                double mul;

                if (sfx_len > 3)
                        return -EINVAL;
                for (size_t i = 0; i < sfx_len; i++)
                        l[i] = (char) tolower((unsigned char) sfx[i]);
                if (l[0] == 'b') {
                        if (sfx_len > 1)
                                return -EINVAL;
                        mul = 1;
                } else {
                        switch (l[0]) {
                        case 'k':
                                mul = 1024.0;
                                break;
                        case 'm':
                                mul = 1024.0 * 1024;
                                break;
                        case 'g':
                                mul = 1024.0 * 1024 * 1024;
                                break;
                        case 't':
                                mul = 1024.0 * 1024 * 1024 * 1024;
                                break;
                        case 'p':
                                mul = 1024.0 * 1024 * 1024 * 1024 * 1024;
                                break;
                        default:
                                return -EINVAL;
                        }
                        if (sfx_len == 2 && l[1] != 'b')
                                return -EINVAL;
                        if (sfx_len == 3 && !(l[1] == 'i' && l[2] == 'b'))
                                return -EINVAL;
                }
                size *= mul;
        }
        /* Go's int64(size) is undefined past the range; refuse instead. */
        if (!(size < 9223372036854775808.0))
                return -ERANGE;
        *ret = (int64_t) size;
        return 0;
}

int kiln_config_parse_disk_space(const char *s, struct kiln_config_disk_space *ret)
{
        size_t len = strlen(s);
        _cleanup_free_ char *t = NULL;
        int64_t v;
        int r;

        strip_quotes(&s, &len);
        *ret = (struct kiln_config_disk_space){ 0 };
        if (len == 0)
                return 0;
        if (s[len - 1] == '%') {
                r = go_parse_int10(s, len - 1, &v);
                if (r < 0)
                        return r;
                ret->percentage = v;
                return 0;
        }
        t = kiln_xstrndup(s, len);
        r = kiln_config_parse_ram_in_bytes(t, &v);
        if (r < 0)
                return r;
        ret->bytes = v;
        return 0;
}

int64_t kiln_config_disk_space_as_bytes(const struct kiln_config_disk_space *d, uint64_t total)
{
        if (d->bytes != 0)
                return d->bytes;
        if (d->percentage == 0)
                return 0;
        if (total == 0)
                return 2000000000; /* buildkitd's defaultCap */
        /* Go computes in int64: total*pct/100, then whole GiB rounded up
         * (always +1) times 1e9. */
        __int128 avail = (__int128) total * d->percentage / 100;
        __int128 bytes = (avail / (1LL << 30) + 1) * 1000000000LL;
        /* Far past any real disk; Go would wrap, kiln saturates. */
        return bytes > INT64_MAX ? INT64_MAX : (int64_t) bytes;
}
