/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dockerfile instructions following BuildKit's frontend/dockerfile/instructions
 * (parse.go, bflag.go, commands*.go, support.go): argument counts, flags,
 * RUN --mount/--network/--security/--device, HEALTHCHECK durations, stages,
 * with BuildKit's error texts and "did you mean" suggestions.
 */

#include "dockerfile/instructions.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "base/goquote.h"
#include "base/macro.h"
#include "base/suggest.h"
#include "base/unicode.h"

/* Flags one instruction defines (RUN and ADD have the most). */
#define MAX_FLAG_DEFS 8
/* BuildKit's minimum for a non-zero HEALTHCHECK duration (1ms). */
#define MIN_HEALTHCHECK_DURATION_NS 1000000ll

/* ---------------------------------------------------------------- strings */

static void strv_push(char ***v, size_t *n, char *s)
{
        *v = kiln_xreallocarray(*v, *n + 1, sizeof(**v));
        (*v)[(*n)++] = s;
}

static void strv_free(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static int fail(struct kiln_error **err, const char *fmt, ...) _printf_(2, 3);
static int fail(struct kiln_error **err, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_error_set(err, -EINVAL, "%s", msg);
}

/* Go's strconv.Quote (%q) into a new string. */
static char *go_quote(const char *s)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        (void) kiln_buf_go_quote(&b, s, strlen(s));
        return kiln_buf_steal(&b);
}

/* The time package's own quoting in its errors: non-ASCII and control bytes
 * as \xNN, '"' and '\\' escaped. */
static char *time_quote(const char *s)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        (void) kiln_buf_putc(&b, '"');
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p >= 0x80 || *p < ' ')
                        (void) kiln_buf_printf(&b, "\\x%02x", *p);
                else {
                        if (*p == '"' || *p == '\\')
                                (void) kiln_buf_putc(&b, '\\');
                        (void) kiln_buf_putc(&b, (char) *p);
                }
        }
        (void) kiln_buf_putc(&b, '"');
        return kiln_buf_steal(&b);
}

/* Go's strings.ToLower of s[0..n): rune by rune, bytes that are not UTF-8
 * turning into U+FFFD. A new string; its length (a NUL of s is kept) in
 * *ret_len when that is not NULL. */
static char *go_lower_n(const char *s, size_t n, size_t *ret_len)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        for (size_t i = 0, w; i < n; i += w) {
                char out[4];
                uint32_t r = kiln_unicode_to_lower(kiln_utf8_decode_rune(s + i, n - i, &w));

                (void) kiln_buf_append(&b, out, kiln_utf8_encode(r, out));
        }
        if (ret_len)
                *ret_len = b.len;
        return kiln_buf_steal(&b);
}

char *kiln_dockerfile_lower(const char *s)
{
        return go_lower_n(s, strlen(s), NULL);
}

char *kiln_dockerfile_upper(const char *s)
{
        char *r = kiln_xstrdup(s);

        for (char *p = r; *p; p++)
                *p = ascii_toupper(*p);
        return r;
}

bool kiln_dockerfile_caseeq(const char *a, const char *b)
{
        for (; *a && ascii_tolower(*a) == ascii_tolower(*b); a++, b++)
                ;
        return ascii_tolower(*a) == ascii_tolower(*b);
}

/* Go's strings.TrimSpace of s[0..n) into a new string. */
static char *trim_space_dup(const char *s, size_t n)
{
        size_t start = 0, end = n;

        while (start < end) {
                uint32_t r;
                size_t w = kiln_utf8_decode((const unsigned char *) s + start, end - start, &r);

                if (w == 0 || !kiln_unicode_is_space(r))
                        break;
                start += w;
        }
        while (end > start) {
                size_t k;
                uint32_t r = 0;

                /* the start of the last rune */
                for (k = 1; k < 4 && k < end - start; k++)
                        if (((unsigned char) s[end - k] & 0xc0) != 0x80)
                                break;
                if (kiln_utf8_decode((const unsigned char *) s + end - k, k, &r) != k ||
                    !kiln_unicode_is_space(r))
                        break;
                end -= k;
        }
        return kiln_xstrndup(s + start, end - start);
}

/* ------------------------------------------------------------- suggestions */

/* fail() with BuildKit's suggest.WrapError suffix " (did you mean X?)". */
static int fail_suggest(struct kiln_error **err, const char *val, const char *const *opts, size_t n,
                        unsigned flags, const char *fmt, ...) _printf_(6, 7);
static int fail_suggest(struct kiln_error **err, const char *val, const char *const *opts, size_t n,
                        unsigned flags, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL, *match = kiln_suggest(val, opts, n, flags);
        va_list ap;

        va_start(ap, fmt);
        msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        if (match)
                return kiln_error_set(err, -EINVAL, "%s (did you mean %s?)", msg, match);
        return kiln_error_set(err, -EINVAL, "%s", msg);
}

/* ------------------------------------------------------ Go number parsing */

/* strconv.ParseBool */
static int go_parse_bool(const char *s, bool *ret)
{
        static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                if (streq(s, t[i])) {
                        *ret = true;
                        return 0;
                }
                if (streq(s, f[i])) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

/* strconv.ParseUint(s, base, 32) for base 8 or 10. */
static int go_parse_uint32(const char *s, unsigned base, uint32_t *ret)
{
        uint64_t v = 0;
        bool range = false;

        if (!*s)
                return -EINVAL;
        for (; *s; s++) {
                if (*s < '0' || *s >= (char) ('0' + base))
                        return -EINVAL;
                if (!range) {
                        v = v * base + (uint64_t) (*s - '0');
                        if (v > UINT32_MAX)
                                range = true;
                }
        }
        if (range)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

/* strconv.ParseInt(s, 10, 32) */
static int go_parse_int32(const char *s, int32_t *ret)
{
        bool neg = false, range = false;
        int64_t v = 0;

        if (*s == '+' || *s == '-') {
                neg = *s == '-';
                s++;
        }
        if (!*s)
                return -EINVAL;
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                if (!range) {
                        v = v * 10 + (*s - '0');
                        if (v > (int64_t) INT32_MAX + 1)
                                range = true;
                }
        }
        if (range || (!neg && v > INT32_MAX))
                return -ERANGE;
        *ret = (int32_t) (neg ? -v : v);
        return 0;
}

/* time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+ or "0". Sets *err to
 * the time package's text. */
static int go_parse_duration(const char *orig, int64_t *ret, struct kiln_error **err)
{
        static const struct {
                const char *name;
                uint64_t ns;
        } units[] = {
                { "ns", 1ull },           { "us", 1000ull },
                { "\xc2\xb5s", 1000ull }, /* U+00B5 micro sign */
                { "\xce\xbcs", 1000ull }, /* U+03BC Greek small letter mu */
                { "ms", 1000000ull },     { "s", 1000000000ull },
                { "m", 60000000000ull },  { "h", 3600000000000ull },
        };
        const uint64_t limit = 1ull << 63;
        _cleanup_free_ char *q = time_quote(orig);
        const char *s = orig;
        uint64_t d = 0;
        bool neg = false;

        if (*s == '-' || *s == '+') {
                neg = *s == '-';
                s++;
        }
        if (streq(s, "0")) {
                *ret = 0;
                return 0;
        }
        if (!*s)
                goto invalid;
        while (*s) {
                uint64_t v = 0, f = 0, unit = 0;
                double scale = 1;
                bool pre = false, post = false, overflow = false;
                const char *u;
                size_t ul;

                if (!(*s == '.' || (*s >= '0' && *s <= '9')))
                        goto invalid;
                for (; *s >= '0' && *s <= '9'; s++) {
                        pre = true;
                        if (v > limit / 10)
                                goto invalid;
                        v = v * 10 + (uint64_t) (*s - '0');
                        if (v > limit)
                                goto invalid;
                }
                if (*s == '.') {
                        for (s++; *s >= '0' && *s <= '9'; s++) {
                                uint64_t y;

                                post = true;
                                if (overflow)
                                        continue;
                                if (f > (limit - 1) / 10) {
                                        overflow = true;
                                        continue;
                                }
                                y = f * 10 + (uint64_t) (*s - '0');
                                if (y > limit) {
                                        overflow = true;
                                        continue;
                                }
                                f = y;
                                scale *= 10;
                        }
                }
                if (!pre && !post)
                        goto invalid;
                u = s;
                while (*s && *s != '.' && !(*s >= '0' && *s <= '9'))
                        s++;
                ul = (size_t) (s - u);
                if (ul == 0)
                        return fail(err, "time: missing unit in duration %s", q);
                for (size_t i = 0; i < ELEMENTSOF(units); i++)
                        if (strlen(units[i].name) == ul && !memcmp(units[i].name, u, ul))
                                unit = units[i].ns;
                if (unit == 0) {
                        _cleanup_free_ char *us = kiln_xstrndup(u, ul);
                        _cleanup_free_ char *uq = time_quote(us);

                        return fail(err, "time: unknown unit %s in duration %s", uq, q);
                }
                if (v > limit / unit)
                        goto invalid;
                v *= unit;
                if (f > 0) {
                        v += (uint64_t) ((double) f * ((double) unit / scale));
                        if (v > limit)
                                goto invalid;
                }
                d += v;
                if (d > limit)
                        goto invalid;
        }
        if (neg) {
                *ret = d == limit ? INT64_MIN : -(int64_t) d;
                return 0;
        }
        if (d > limit - 1)
                goto invalid;
        *ret = (int64_t) d;
        return 0;
invalid:
        return fail(err, "time: invalid duration %s", q);
}

/* strconv.ParseFloat's acceptance for what go-units hands it: decimal
 * numbers with an optional exponent, or hexadecimal floats with a 'p'
 * exponent. */
static int go_parse_float(const char *s, double *ret)
{
        const char *p = s;
        char *end = NULL;
        bool digits = false;

        if (*p == '+' || *p == '-')
                p++;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
                if (!strpbrk(p, "pP") || strchr(p, '_'))
                        return -EINVAL;
        } else {
                for (; *p >= '0' && *p <= '9'; p++)
                        digits = true;
                if (*p == '.')
                        for (p++; *p >= '0' && *p <= '9'; p++)
                                digits = true;
                if (!digits)
                        return -EINVAL;
                if (*p == 'e' || *p == 'E') {
                        p++;
                        if (*p == '+' || *p == '-')
                                p++;
                        if (!(*p >= '0' && *p <= '9'))
                                return -EINVAL;
                        while (*p >= '0' && *p <= '9')
                                p++;
                }
                if (*p)
                        return -EINVAL;
        }
        errno = 0;
        *ret = strtod(s, &end);
        if (!end || *end || end == s)
                return -EINVAL;
        if (errno == ERANGE && isinf(*ret))
                return -ERANGE;
        return 0;
}

/* go-units RAMInBytes: "<number>[ ][k|m|g|t|p][i][b]" in powers of 1024. */
static int go_ram_in_bytes(const char *s, int64_t *ret)
{
        static const char units[] = "kmgtp";
        size_t len = strlen(s), sep = SIZE_MAX, sl;
        _cleanup_free_ char *num = NULL, *sfx = NULL;
        double size;

        for (size_t i = len; i > 0; i--)
                if (strchr("0123456789. ", s[i - 1])) {
                        sep = i - 1;
                        break;
                }
        if (sep == SIZE_MAX)
                return -EINVAL;
        num = kiln_xstrndup(s, s[sep] != ' ' ? sep + 1 : sep);
        if (go_parse_float(num, &size) < 0 || size < 0 || isnan(size))
                return -EINVAL;
        /* the length is checked before lowering, which may shorten it */
        if (strlen(s + sep + 1) > 3)
                return -EINVAL;
        sfx = kiln_dockerfile_lower(s + sep + 1);
        sl = strlen(sfx);
        if (sl > 0 && sfx[0] == 'b') {
                if (sl > 1)
                        return -EINVAL;
        } else if (sl > 0) {
                const char *u = strchr(units, sfx[0]);

                if (!u)
                        return -EINVAL;
                for (const char *k = units; k <= u; k++)
                        size *= 1024.0;
                if ((sl == 2 && sfx[1] != 'b') || (sl == 3 && !streq(sfx + 1, "ib")))
                        return -EINVAL;
        }
        /* Out-of-range conversions give INT64_MIN, as Go's on amd64. */
        if (!(size < 9223372036854775808.0))
                *ret = INT64_MIN;
        else
                *ret = (int64_t) size;
        return 0;
}

/* ------------------------------------------------------------------- CSV */

static void append_last(char **v, size_t n, const char *s, size_t len)
{
        char *last = v[n - 1];

        v[n - 1] = kiln_xasprintf("%s%.*s", last, (int) len, s);
        free(last);
}

/* Moves the CSV reader k bytes on. */
static void csv_skip(const char **line, size_t *len, size_t *pos, size_t k)
{
        *line += k;
        *len -= k;
        *pos += k;
}

static char *csv_quote_error(size_t column)
{
        return kiln_xasprintf("parse error on line 1, column %zu: extraneous or missing \" in "
                              "quoted-field",
                              column);
}

/* go-csvvalue's Fields with the default parser: one CSV record. On error
 * returns -EINVAL and sets *msg to encoding/csv's text. */
static int csv_fields(const char *in, char ***ret, size_t *ret_n, char **msg)
{
        size_t len = strlen(in), pos = 0;
        const char *line = in;
        char **v = NULL;
        size_t n = 0;

        if (len > 0 && line[len - 1] == '\n')
                len -= (len > 1 && line[len - 2] == '\r') ? 2 : 1;
        if (len == 0) {
                *msg = kiln_xstrdup("EOF");
                return -EINVAL;
        }
        for (;;) {
                bool half_open = false;

                if (len == 0 || line[0] != '"') {
                        const char *comma = memchr(line, ',', len);
                        size_t fl = comma ? (size_t) (comma - line) : len;
                        const char *q = memchr(line, '"', fl);

                        if (q) {
                                *msg = kiln_xasprintf("parse error on line 1, column %zu: bare \" "
                                                      "in non-quoted-field",
                                                      pos + (size_t) (q - line) + 1);
                                goto fail;
                        }
                        strv_push(&v, &n, kiln_xstrndup(line, fl));
                        if (!comma)
                                break;
                        csv_skip(&line, &len, &pos, fl + 1);
                        continue;
                }
                csv_skip(&line, &len, &pos, 1);
                for (;;) {
                        const char *q = memchr(line, '"', len);
                        size_t ql;

                        if (!q) {
                                *msg = csv_quote_error(pos + 1);
                                goto fail;
                        }
                        ql = (size_t) (q - line);
                        if (!half_open)
                                strv_push(&v, &n, kiln_xstrndup(line, ql));
                        else
                                append_last(v, n, line, ql);
                        half_open = false;
                        csv_skip(&line, &len, &pos, ql + 1);
                        if (len > 0 && line[0] == '"') {
                                append_last(v, n, "\"", 1);
                                csv_skip(&line, &len, &pos, 1);
                                half_open = true;
                        } else if (len > 0 && line[0] == ',') {
                                csv_skip(&line, &len, &pos, 1);
                                break;
                        } else if (len == 0)
                                goto done;
                        else {
                                *msg = csv_quote_error(pos);
                                goto fail;
                        }
                }
        }
done:
        *ret = v;
        *ret_n = n;
        return 0;
fail:
        strv_free(v, n);
        return -EINVAL;
}

/* ------------------------------------------------------------------ flags */

enum flag_type { FLAG_BOOL, FLAG_STRING, FLAG_STRINGS };

struct flag {
        const char *name;
        enum flag_type type;
        bool used;
        bool bval;           /* FLAG_BOOL */
        const char *value;   /* FLAG_STRING: borrowed from the node, or the default */
        const char **values; /* FLAG_STRINGS: borrowed from the node */
        size_t n_values;
};

/* BuildKit's BFlags: the flags an instruction accepts and what was given. */
struct bflags {
        const struct kiln_dockerfile_str *args;
        size_t n_args;
        struct flag defs[MAX_FLAG_DEFS];
        size_t n_defs;
        const char *used[MAX_FLAG_DEFS]; /* names in order of first use */
        size_t n_used;
};

static struct flag *bflags_add(struct bflags *bf, const char *name, enum flag_type type,
                               const char *def)
{
        struct flag *f = &bf->defs[bf->n_defs++];

        *f = (struct flag){ .name = name, .type = type, .value = def };
        return f;
}

static void bflags_release(struct bflags *bf)
{
        for (size_t i = 0; i < bf->n_defs; i++)
                free(bf->defs[i].values);
        bf->n_defs = 0;
}

/* BFlags.Parse */
static int bflags_parse(struct bflags *bf, struct kiln_error **err)
{
        for (size_t i = 0; i < bf->n_args; i++) {
                const char *a = bf->args[i].s ? bf->args[i].s : "", *eq, *value = NULL;
                _cleanup_free_ char *flag_name = NULL;
                struct flag *f = NULL;

                if (streq(a, "--"))
                        return 0;
                if (!startswith(a, "--"))
                        return fail(err, "arg should start with -- : %s", a);
                eq = strchr(a, '=');
                flag_name = eq ? kiln_xstrndup(a, (size_t) (eq - a)) : kiln_xstrdup(a);
                if (eq)
                        value = eq + 1;
                for (size_t j = 0; j < bf->n_defs; j++)
                        if (streq(bf->defs[j].name, flag_name + 2))
                                f = &bf->defs[j];
                if (!f) {
                        const char *names[MAX_FLAG_DEFS];

                        for (size_t j = 0; j < bf->n_defs; j++)
                                names[j] = bf->defs[j].name;
                        return fail_suggest(err, flag_name + 2, names, bf->n_defs,
                                            KILN_SUGGEST_CASE_SENSITIVE | KILN_SUGGEST_ANY_ORDER,
                                            "unknown flag: %s", flag_name);
                }
                if (f->used && f->type != FLAG_STRINGS)
                        return fail(err, "duplicate flag specified: %s", flag_name);
                if (!f->used)
                        bf->used[bf->n_used++] = f->name;
                f->used = true;
                switch (f->type) {
                case FLAG_BOOL:
                        if (value && !*value)
                                return fail(err, "missing a value on flag: %s", flag_name);
                        if (!value || kiln_dockerfile_caseeq(value, "true"))
                                f->bval = true;
                        else if (kiln_dockerfile_caseeq(value, "false"))
                                f->bval = false;
                        else
                                return fail(err, "expecting boolean value for flag %s, not: %s",
                                            flag_name, value);
                        break;
                case FLAG_STRING:
                        if (!value)
                                return fail(err, "missing a value on flag: %s", flag_name);
                        f->value = value;
                        break;
                case FLAG_STRINGS:
                        if (!value)
                                return fail(err, "missing a value on flag: %s", flag_name);
                        if (f->n_values >= KILN_LIMIT_DOCKERFILE_FLAG_VALUES)
                                return kiln_error_set(err, -E2BIG,
                                                      "too many %s flags (more than %d)", flag_name,
                                                      KILN_LIMIT_DOCKERFILE_FLAG_VALUES);
                        f->values =
                                kiln_xreallocarray(f->values, f->n_values + 1, sizeof(*f->values));
                        f->values[f->n_values++] = value;
                        break;
                }
        }
        return 0;
}

/* ---------------------------------------------------------------- request */

/* BuildKit's parseRequest. */
struct req {
        const struct kiln_dockerfile_node *node;
        const char *command; /* the keyword as written */
        char **args;         /* nodeArgs */
        size_t n_args;
        bool json;
        struct bflags flags;
};

static void req_release(struct req *r)
{
        strv_free(r->args, r->n_args);
        r->args = NULL;
        r->n_args = 0;
        bflags_release(&r->flags);
}

static bool has_nul(const struct kiln_dockerfile_str *s)
{
        return s->s && memchr(s->s, '\0', s->len) != NULL;
}

/* nodeArgs: the arguments, with an ONBUILD's nested instruction flattened
 * into its keyword and arguments. */
static int node_args(const struct kiln_dockerfile_node *node, const char *cmd, struct req *r,
                     struct kiln_error **err)
{
        for (const struct kiln_dockerfile_node *a = node->next; a; a = a->next) {
                const struct kiln_dockerfile_node *v = a;

                if (a->n_children == 1)
                        v = a->children[0];
                else if (a->n_children > 1)
                        continue;
                if (has_nul(&v->value))
                        return fail(err, "%s arguments can not contain NUL bytes", cmd);
                strv_push(&r->args, &r->n_args, kiln_xstrdup(v->value.s ? v->value.s : ""));
                if (v != a) {
                        int q = node_args(v, cmd, r, err);

                        if (q < 0)
                                return q;
                }
        }
        return 0;
}

static int req_init(struct req *r, const struct kiln_dockerfile_node *node, struct kiln_error **err)
{
        *r = (struct req){ .node = node,
                           .command = node->value.s ? node->value.s : "",
                           .json = node->json };
        r->flags.args = node->flags;
        r->flags.n_args = node->n_flags;
        for (size_t i = 0; i < node->n_flags; i++)
                if (has_nul(&node->flags[i]))
                        return fail(err, "%s flags can not contain NUL bytes", r->command);
        for (size_t i = 0; i < node->n_heredocs; i++)
                if (has_nul(&node->heredocs[i].name) || has_nul(&node->heredocs[i].content))
                        return fail(err, "%s heredocs can not contain NUL bytes", r->command);
        return node_args(node, r->command, r, err);
}

/* handleJSONArgs: exec form as is, shell form joined into one string. */
static void json_args(const struct req *r, char *const *args, size_t n, char ***ret, size_t *ret_n)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        *ret = NULL;
        *ret_n = 0;
        if (n == 0)
                return;
        if (r->json) {
                for (size_t i = 0; i < n; i++)
                        strv_push(ret, ret_n, kiln_xstrdup(args[i]));
                return;
        }
        for (size_t i = 0; i < n; i++) {
                if (i)
                        (void) kiln_buf_putc(&b, ' ');
                (void) kiln_buf_puts(&b, args[i]);
        }
        strv_push(ret, ret_n, kiln_buf_steal(&b));
}

static int err_at_least_one(struct kiln_error **err, const char *cmd)
{
        return fail(err, "%s requires at least one argument", cmd);
}

static int err_exactly_one(struct kiln_error **err, const char *cmd)
{
        return fail(err, "%s requires exactly one argument", cmd);
}

static int err_no_destination(struct kiln_error **err, const char *cmd)
{
        return fail(err,
                    "%s requires at least two arguments, but only one was provided. "
                    "Destination could not be determined",
                    cmd);
}

/* getDocComment */
static char *doc_comment(const struct kiln_dockerfile_node *node, const char *name)
{
        size_t nl = strlen(name);

        if (nl == 0)
                return kiln_xstrdup("");
        for (size_t i = 0; i < node->n_comments; i++) {
                const struct kiln_dockerfile_str *c = &node->comments[i];

                if (!c->s || c->len < nl + 1 || memcmp(c->s, name, nl) != 0 || c->s[nl] != ' ')
                        continue;
                return kiln_xstrndup(c->s + nl + 1, strnlen(c->s + nl + 1, c->len - nl - 1));
        }
        return kiln_xstrdup("");
}

static void node_comments(const struct kiln_dockerfile_node *node, char ***v, size_t *n)
{
        for (size_t i = 0; i < node->n_comments; i++) {
                const struct kiln_dockerfile_str *c = &node->comments[i];

                strv_push(v, n, kiln_xstrndup(c->s ? c->s : "", c->s ? strnlen(c->s, c->len) : 0));
        }
}

static char *node_code(const struct kiln_dockerfile_node *node)
{
        if (node->original.s)
                return trim_space_dup(node->original.s,
                                      strnlen(node->original.s, node->original.len));
        return kiln_xstrdup(node->value.s ? node->value.s : "");
}

/* --------------------------------------------------------------- commands */

static void cmdline_release(struct kiln_dockerfile_cmdline *c)
{
        strv_free(c->args, c->n_args);
        for (size_t i = 0; i < c->n_files; i++) {
                free(c->files[i].name);
                free(c->files[i].data);
        }
        free(c->files);
}

static void mount_release(struct kiln_dockerfile_mount *m)
{
        free(m->from);
        free(m->source);
        free(m->target);
        free(m->cache_id);
        free(m->env);
        *m = (struct kiln_dockerfile_mount){ 0 };
}

static void mounts_free(struct kiln_dockerfile_mount *m, size_t n)
{
        for (size_t i = 0; i < n; i++)
                mount_release(&m[i]);
        free(m);
}

struct kiln_dockerfile_cmd *kiln_dockerfile_cmd_free(struct kiln_dockerfile_cmd *c)
{
        if (!c)
                return NULL;
        switch (c->type) {
        case KILN_DOCKERFILE_CMD_ADD:
        case KILN_DOCKERFILE_CMD_COPY:
                strv_free(c->copy.sources, c->copy.n_sources);
                for (size_t i = 0; i < c->copy.n_contents; i++) {
                        free(c->copy.contents[i].path);
                        free(c->copy.contents[i].data);
                }
                free(c->copy.contents);
                free(c->copy.dest);
                free(c->copy.from);
                free(c->copy.chown);
                free(c->copy.chmod);
                strv_free(c->copy.excludes, c->copy.n_excludes);
                free(c->copy.checksum);
                break;
        case KILN_DOCKERFILE_CMD_ARG:
                for (size_t i = 0; i < c->arg.n_args; i++) {
                        free(c->arg.args[i].key);
                        free(c->arg.args[i].value);
                        free(c->arg.args[i].doc_comment);
                }
                free(c->arg.args);
                break;
        case KILN_DOCKERFILE_CMD_CMD:
        case KILN_DOCKERFILE_CMD_ENTRYPOINT:
                cmdline_release(&c->cmdline);
                break;
        case KILN_DOCKERFILE_CMD_ENV:
        case KILN_DOCKERFILE_CMD_LABEL:
                for (size_t i = 0; i < c->kv.n_kvs; i++) {
                        free(c->kv.kvs[i].key);
                        free(c->kv.kvs[i].value);
                }
                free(c->kv.kvs);
                break;
        case KILN_DOCKERFILE_CMD_EXPOSE:
        case KILN_DOCKERFILE_CMD_VOLUME:
        case KILN_DOCKERFILE_CMD_SHELL:
                strv_free(c->list.items, c->list.n_items);
                break;
        case KILN_DOCKERFILE_CMD_HEALTHCHECK:
                strv_free(c->healthcheck.test, c->healthcheck.n_test);
                break;
        case KILN_DOCKERFILE_CMD_MAINTAINER:
        case KILN_DOCKERFILE_CMD_ONBUILD:
        case KILN_DOCKERFILE_CMD_STOPSIGNAL:
        case KILN_DOCKERFILE_CMD_USER:
        case KILN_DOCKERFILE_CMD_WORKDIR:
                free(c->word);
                break;
        case KILN_DOCKERFILE_CMD_RUN:
                cmdline_release(&c->run.cmdline);
                strv_free(c->run.mount_specs, c->run.n_mount_specs);
                mounts_free(c->run.mounts, c->run.n_mounts);
                for (size_t i = 0; i < c->run.n_devices; i++)
                        free(c->run.devices[i].name);
                free(c->run.devices);
                strv_free(c->run.flags_used, c->run.n_flags_used);
                break;
        }
        free(c->name);
        free(c->code);
        strv_free(c->comments, c->n_comments);
        free(c);
        return NULL;
}

static void stage_release(struct kiln_dockerfile_stage *s)
{
        free(s->name);
        free(s->orig_cmd);
        free(s->base_name);
        free(s->platform);
        free(s->code);
        for (size_t i = 0; i < s->n_cmds; i++)
                kiln_dockerfile_cmd_free(s->cmds[i]);
        free(s->cmds);
        free(s->doc_comment);
        strv_free(s->comments, s->n_comments);
        free(s->orig_name);
        free(s->as_word);
}

struct kiln_dockerfile_stage *kiln_dockerfile_stage_free(struct kiln_dockerfile_stage *s)
{
        if (!s)
                return NULL;
        stage_release(s);
        free(s);
        return NULL;
}

static struct kiln_dockerfile_cmd *cmd_new(const struct req *r, enum kiln_dockerfile_cmd_type t)
{
        struct kiln_dockerfile_cmd *c = kiln_xcalloc(1, sizeof(*c));

        c->type = t;
        c->name = kiln_xstrdup(r->command);
        c->code = node_code(r->node);
        c->start_line = r->node->start_line;
        c->end_line = r->node->end_line;
        node_comments(r->node, &c->comments, &c->n_comments);
        return c;
}

/* What most instructions start with: at least one argument (when
 * need_args), their flags, then the new command in *ret. */
static int cmd_begin(struct req *r, enum kiln_dockerfile_cmd_type t, bool need_args,
                     struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        int q;

        *ret = NULL;
        if (need_args && r->n_args == 0)
                return err_at_least_one(err, kiln_dockerfile_cmd_type_name(t));
        q = bflags_parse(&r->flags, err);
        if (q < 0)
                return q;
        *ret = cmd_new(r, t);
        return 0;
}

/* parseKvps: the parser gives ENV/LABEL as (key, value, "=" or "") triples. */
static int parse_kvps(const struct req *r, const char *name, struct kiln_dockerfile_cmd *c,
                      struct kiln_error **err)
{
        if (r->n_args == 0)
                return err_at_least_one(err, name);
        if (r->n_args % 3 != 0)
                return fail(err, "Bad input to %s, too many arguments", name);
        for (size_t j = 0; j < r->n_args; j += 3) {
                struct kiln_dockerfile_kv *kv;

                if (!r->args[j][0])
                        return fail(err, "%s names can not be blank", name);
                c->kv.kvs = kiln_xreallocarray(c->kv.kvs, c->kv.n_kvs + 1, sizeof(*c->kv.kvs));
                kv = &c->kv.kvs[c->kv.n_kvs++];
                kv->key = kiln_xstrdup(r->args[j]);
                kv->value = kiln_xstrdup(r->args[j + 1]);
                kv->no_delim = r->args[j + 2][0] == '\0';
        }
        return 0;
}

static int parse_env_label(struct req *r, enum kiln_dockerfile_cmd_type t,
                           struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;
        int q = cmd_begin(r, t, false, &c, err);

        if (q >= 0)
                q = parse_kvps(r, kiln_dockerfile_cmd_type_name(t), c, err);
        if (q < 0)
                return q;
        *ret = TAKE_PTR(c);
        return 0;
}

/* MAINTAINER, WORKDIR, USER, STOPSIGNAL: exactly one argument. */
static int parse_one_word(struct req *r, enum kiln_dockerfile_cmd_type t, bool check_flags,
                          struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        struct kiln_dockerfile_cmd *c;
        int q;

        if (r->n_args != 1)
                return err_exactly_one(err, kiln_dockerfile_cmd_type_name(t));
        if (check_flags) {
                q = bflags_parse(&r->flags, err);
                if (q < 0)
                        return q;
        }
        c = cmd_new(r, t);
        c->word = kiln_xstrdup(r->args[0]);
        *ret = c;
        return 0;
}

/* MustParseHeredoc: 1 and *h filled when word is a heredoc reference. */
static int heredoc_word(const char *word, struct kiln_dockerfile_heredoc *h)
{
        struct kiln_error *e = NULL;
        int q = kiln_dockerfile_heredoc_parse(word, strlen(word), h, &e);

        kiln_error_free(e);
        if (q <= 0) {
                kiln_dockerfile_heredoc_release(h);
                return 0;
        }
        return 1;
}

/* parseSourcesAndDest */
static int parse_sources_and_dest(const struct req *r, const char *name,
                                  struct kiln_dockerfile_copy *cp, struct kiln_error **err)
{
        struct kiln_dockerfile_heredoc h = { 0 };
        const struct kiln_dockerfile_node *node = r->node;

        if (heredoc_word(r->args[r->n_args - 1], &h)) {
                kiln_dockerfile_heredoc_release(&h);
                return fail(err, "%s cannot accept a heredoc as %s", name, "a destination");
        }
        cp->dest = kiln_xstrdup(r->args[r->n_args - 1]);
        for (size_t i = 0; i + 1 < r->n_args; i++) {
                struct kiln_dockerfile_source_content *sc;
                const struct kiln_dockerfile_heredoc *found = NULL;

                if (!heredoc_word(r->args[i], &h)) {
                        strv_push(&cp->sources, &cp->n_sources, kiln_xstrdup(r->args[i]));
                        continue;
                }
                /* A map keyed by name in BuildKit: the last one wins. */
                for (size_t j = 0; j < node->n_heredocs; j++)
                        if (node->heredocs[j].name.len == h.name.len &&
                            (h.name.len == 0 ||
                             !memcmp(node->heredocs[j].name.s, h.name.s, h.name.len)))
                                found = &node->heredocs[j];
                cp->contents =
                        kiln_xreallocarray(cp->contents, cp->n_contents + 1, sizeof(*cp->contents));
                sc = &cp->contents[cp->n_contents++];
                *sc = (struct kiln_dockerfile_source_content){ 0 };
                sc->path = kiln_xstrndup(h.name.s ? h.name.s : "", h.name.len);
                sc->expand = h.expand;
                if (!found || !found->content.s)
                        sc->data = kiln_xstrdup("");
                else if (h.chomp)
                        sc->data =
                                kiln_dockerfile_heredoc_chomp(found->content.s, found->content.len)
                                        .s;
                else
                        sc->data = kiln_xstrndup(found->content.s, found->content.len);
                kiln_dockerfile_heredoc_release(&h);
        }
        return 0;
}

static int parse_copy_add(struct req *r, bool add, struct kiln_dockerfile_cmd **ret,
                          struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;
        const char *name = add ? "ADD" : "COPY";
        struct bflags *bf = &r->flags;
        struct flag *chown, *chmod, *link, *excludes, *from = NULL, *parents = NULL;
        struct flag *keep_git = NULL, *checksum = NULL, *unpack = NULL;
        int q;

        if (r->n_args < 2)
                return err_no_destination(err, name);
        /* ADD's and COPY's own orders of definition, merged */
        chown = bflags_add(bf, "chown", FLAG_STRING, "");
        if (!add)
                from = bflags_add(bf, "from", FLAG_STRING, "");
        chmod = bflags_add(bf, "chmod", FLAG_STRING, "");
        link = bflags_add(bf, "link", FLAG_BOOL, "");
        if (add) {
                keep_git = bflags_add(bf, "keep-git-dir", FLAG_BOOL, "");
                checksum = bflags_add(bf, "checksum", FLAG_STRING, "");
                unpack = bflags_add(bf, "unpack", FLAG_BOOL, "");
        }
        excludes = bflags_add(bf, "exclude", FLAG_STRINGS, "");
        if (!add)
                parents = bflags_add(bf, "parents", FLAG_BOOL, "");
        q = bflags_parse(bf, err);
        if (q < 0)
                return q;
        c = cmd_new(r, add ? KILN_DOCKERFILE_CMD_ADD : KILN_DOCKERFILE_CMD_COPY);
        q = parse_sources_and_dest(r, name, &c->copy, err);
        if (q < 0)
                return q;
        c->copy.from = kiln_xstrdup(from ? from->value : "");
        c->copy.chown = kiln_xstrdup(chown->value);
        c->copy.chmod = kiln_xstrdup(chmod->value);
        c->copy.link = link->bval;
        c->copy.parents = parents && parents->bval;
        for (size_t i = 0; i < excludes->n_values; i++)
                strv_push(&c->copy.excludes, &c->copy.n_excludes,
                          kiln_xstrdup(excludes->values[i]));
        c->copy.checksum = kiln_xstrdup(checksum ? checksum->value : "");
        if (keep_git && keep_git->used) {
                c->copy.keep_git_dir_set = true;
                c->copy.keep_git_dir = keep_git->bval;
        }
        if (unpack && unpack->used) {
                c->copy.unpack_set = true;
                c->copy.unpack = unpack->bval;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

/* ^[a-z][a-z0-9-_.]*$ */
static bool valid_stage_name(const char *s)
{
        if (!(*s >= 'a' && *s <= 'z'))
                return false;
        for (s++; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' ||
                      *s == '_' || *s == '.'))
                        return false;
        return true;
}

static int parse_from(struct req *r, struct kiln_dockerfile_stage **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_stage_freep) struct kiln_dockerfile_stage *s = NULL;
        _cleanup_free_ char *name = NULL;
        struct flag *platform;
        int q;

        if (r->n_args == 3 && kiln_dockerfile_caseeq(r->args[1], "as")) {
                name = kiln_dockerfile_lower(r->args[2]);
                if (!valid_stage_name(name)) {
                        _cleanup_free_ char *qn = go_quote(r->args[2]);

                        return fail(err,
                                    "invalid name for build stage: %s, name can't start with a "
                                    "number or contain symbols",
                                    qn);
                }
        } else if (r->n_args != 1)
                return fail(err, "FROM requires either one or three arguments");
        platform = bflags_add(&r->flags, "platform", FLAG_STRING, "");
        q = bflags_parse(&r->flags, err);
        if (q < 0)
                return q;
        s = kiln_xcalloc(1, sizeof(*s));
        s->name = name ? TAKE_PTR(name) : kiln_xstrdup("");
        s->orig_cmd = kiln_xstrdup(r->command);
        s->base_name = kiln_xstrdup(r->args[0]);
        s->platform = kiln_xstrdup(platform->value);
        s->code = node_code(r->node);
        s->start_line = r->node->start_line;
        s->end_line = r->node->end_line;
        s->doc_comment = doc_comment(r->node, s->name);
        node_comments(r->node, &s->comments, &s->n_comments);
        s->orig_name = kiln_xstrdup(r->n_args == 3 ? r->args[2] : "");
        s->as_word = kiln_xstrdup(r->n_args == 3 ? r->args[1] : "");
        *ret = TAKE_PTR(s);
        return 0;
}

/* The index of the first byte of s[i..n) that is not [\t\n\f\r ] (\s of
 * Go's regexp), or n. */
static size_t skip_re_space(const char *s, size_t n, size_t i)
{
        while (i < n && s[i] && strchr("\t\n\f\r ", s[i]))
                i++;
        return i;
}

static int parse_onbuild(struct req *r, struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;
        _cleanup_free_ char *trigger = NULL, *t = NULL;
        const struct kiln_dockerfile_node *node = r->node;
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        const char *o;
        size_t on, i;
        int q = cmd_begin(r, KILN_DOCKERFILE_CMD_ONBUILD, true, &c, err);

        if (q < 0)
                return q;
        t = trim_space_dup(r->args[0], strlen(r->args[0]));
        trigger = kiln_dockerfile_upper(t);
        if (streq(trigger, "ONBUILD"))
                return fail(err, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
        if (streq(trigger, "MAINTAINER") || streq(trigger, "FROM"))
                return fail(err, "%s isn't allowed as an ONBUILD trigger", trigger);

        /* the original line without (?i)^\s*ONBUILD\s* */
        o = node->original.s ? node->original.s : "";
        on = node->original.s ? strnlen(o, node->original.len) : 0;
        i = skip_re_space(o, on, 0);
        if (on - i >= 7 && !strncasecmp(o + i, "onbuild", 7)) {
                i = skip_re_space(o, on, i + 7);
                o += i;
                on -= i;
        }
        (void) kiln_buf_append(&b, o, on);
        for (i = 0; i < node->n_heredocs; i++) {
                (void) kiln_buf_putc(&b, '\n');
                (void) kiln_buf_append(&b, node->heredocs[i].content.s,
                                       node->heredocs[i].content.len);
                (void) kiln_buf_append(&b, node->heredocs[i].name.s, node->heredocs[i].name.len);
        }
        c->word = kiln_buf_steal(&b);
        *ret = TAKE_PTR(c);
        return 0;
}

/* parseShellDependentCommand */
static void parse_cmdline(const struct req *r, struct kiln_dockerfile_cmdline *cl)
{
        const struct kiln_dockerfile_node *node = r->node;

        for (size_t i = 0; i < node->n_heredocs; i++) {
                const struct kiln_dockerfile_heredoc *h = &node->heredocs[i];
                struct kiln_dockerfile_inline_file *f;

                cl->files = kiln_xreallocarray(cl->files, cl->n_files + 1, sizeof(*cl->files));
                f = &cl->files[cl->n_files++];
                f->name = kiln_xstrndup(h->name.s ? h->name.s : "", h->name.len);
                f->data = kiln_xstrndup(h->content.s ? h->content.s : "", h->content.len);
                f->chomp = h->chomp;
        }
        json_args(r, r->args, r->n_args, &cl->args, &cl->n_args);
        cl->prepend_shell = !r->json;
}

static int parse_cmd_entrypoint(struct req *r, enum kiln_dockerfile_cmd_type t,
                                struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        struct kiln_dockerfile_cmd *c;
        int q = cmd_begin(r, t, false, &c, err);

        if (q < 0)
                return q;
        parse_cmdline(r, &c->cmdline);
        *ret = c;
        return 0;
}

static const char *const mount_type_names[] = { "bind", "cache", "tmpfs", "secret", "ssh" };
static const char *const sharing_names[] = { "", "shared", "private", "locked" };
static const char *const network_names[] = { "default", "none", "host" };
static const char *const security_names[] = { "sandbox", "insecure" };

static char *key_lower(const char *field, const char *eq)
{
        return go_lower_n(field, eq ? (size_t) (eq - field) : strlen(field), NULL);
}

static bool secret_or_ssh(const struct kiln_dockerfile_mount *m)
{
        return m->type == KILN_DOCKERFILE_MOUNT_SECRET || m->type == KILN_DOCKERFILE_MOUNT_SSH;
}

static bool nonempty(const char *s)
{
        return s && *s;
}

/* The index of s in names[0..n), or -1. */
static ssize_t name_index(const char *s, const char *const *names, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (streq(s, names[i]))
                        return (ssize_t) i;
        return -1;
}

/* 1 for the keys readonly and ro, 0 for readwrite and rw, -1 for others. */
static int readonly_key(const char *key)
{
        if (streq(key, "readonly") || streq(key, "ro"))
                return 1;
        if (streq(key, "readwrite") || streq(key, "rw"))
                return 0;
        return -1;
}

static int err_key_for_type(struct kiln_error **err, const char *key,
                            const struct kiln_dockerfile_mount *m)
{
        return fail(err, "unexpected key '%s' for mount type '%s'", key, mount_type_names[m->type]);
}

/* strconv.ParseBool of an option's value. */
static int option_bool(const char *key, const char *v, bool *ret, struct kiln_error **err)
{
        if (go_parse_bool(v, ret) < 0)
                return fail(err, "invalid value for %s: %s", key, v);
        return 0;
}

/* An option that names one of names[0..n) in any case: its index in *ret. */
static int option_enum(const char *v, const char *const *names, size_t n, const char *what,
                       size_t *ret, struct kiln_error **err)
{
        _cleanup_free_ char *lv = kiln_dockerfile_lower(v), *qv = NULL;
        ssize_t i = name_index(lv, names, n);

        if (i >= 0) {
                *ret = (size_t) i;
                return 0;
        }
        qv = go_quote(v);
        return fail_suggest(err, v, names, n, KILN_SUGGEST_CASE_SENSITIVE, "unsupported %s %s",
                            what, qv);
}

/* mode, uid, gid: strconv.ParseUint(v, base, 32). */
static int option_uint32(const char *key, const char *v, unsigned base, uint32_t *ret, bool *has,
                         struct kiln_error **err)
{
        if (go_parse_uint32(v, base, ret) < 0)
                return fail(err, "invalid value %s for %s", v, key);
        *has = true;
        return 0;
}

/* One key=value of parseMount, value already expanded. */
static int mount_set(struct kiln_dockerfile_mount *m, const char *key, const char *field,
                     char **value, bool *ro_auto, struct kiln_error **err)
{
        static const char *const all_keys[] = {
                "type",        "from", "source", "target",    "readonly", "id",  "sharing",
                "required",    "size", "mode",   "uid",       "gid",      "src", "dst",
                "destination", "ro",   "rw",     "readwrite", "env",
        };
        const char *v = *value;
        char **slot = NULL;
        size_t t;
        bool b;
        int q, ro = readonly_key(key);

        if (streq(key, "type")) {
                q = option_enum(v, mount_type_names, ELEMENTSOF(mount_type_names), "mount type", &t,
                                err);
                if (q >= 0)
                        m->type = (enum kiln_dockerfile_mount_type) t;
                return q;
        }
        if (streq(key, "from"))
                slot = &m->from;
        else if (streq(key, "source") || streq(key, "src"))
                slot = &m->source;
        else if (streq(key, "target") || streq(key, "dst") || streq(key, "destination"))
                slot = &m->target;
        else if (streq(key, "id"))
                slot = &m->cache_id;
        else if (streq(key, "env"))
                slot = &m->env;
        if (slot) {
                free(*slot);
                *slot = TAKE_PTR(*value);
                return 0;
        }
        if (ro >= 0) {
                q = option_bool(key, v, &b, err);
                if (q < 0)
                        return q;
                m->readonly = ro ? b : !b;
                *ro_auto = false;
                return 0;
        }
        if (streq(key, "required")) {
                if (!secret_or_ssh(m))
                        return err_key_for_type(err, key, m);
                return option_bool(key, v, &m->required, err);
        }
        if (streq(key, "size")) {
                if (m->type != KILN_DOCKERFILE_MOUNT_TMPFS)
                        return err_key_for_type(err, key, m);
                if (go_ram_in_bytes(v, &m->size_limit) < 0)
                        return fail(err, "invalid value for %s: %s", key, v);
                return 0;
        }
        if (streq(key, "sharing")) {
                /* sharing_names[0] is the unset value, not a choice */
                q = option_enum(v, sharing_names + 1, ELEMENTSOF(sharing_names) - 1,
                                "sharing value", &t, err);
                if (q >= 0)
                        m->sharing = (enum kiln_dockerfile_mount_sharing)(t + 1);
                return q;
        }
        if (streq(key, "mode"))
                return option_uint32(key, v, 8, &m->mode, &m->has_mode, err);
        if (streq(key, "uid"))
                return option_uint32(key, v, 10, &m->uid, &m->has_uid, err);
        if (streq(key, "gid"))
                return option_uint32(key, v, 10, &m->gid, &m->has_gid, err);
        return fail_suggest(err, key, all_keys, ELEMENTSOF(all_keys), KILN_SUGGEST_CASE_SENSITIVE,
                            "unexpected key '%s' in '%s'", key, field);
}

/* The checks of parseMount after all fields. */
static int mount_check(struct kiln_dockerfile_mount *m, bool ro_auto, struct kiln_error **err)
{
        const char *tn = mount_type_names[m->type];

        if (m->type != KILN_DOCKERFILE_MOUNT_CACHE && !secret_or_ssh(m)) {
                if (m->has_mode)
                        return fail(err, "mode not allowed for \"%s\" type mounts", tn);
                if (m->has_uid)
                        return fail(err, "uid not allowed for \"%s\" type mounts", tn);
                if (m->has_gid)
                        return fail(err, "gid not allowed for \"%s\" type mounts", tn);
        }
        if (ro_auto)
                m->readonly = !(m->type == KILN_DOCKERFILE_MOUNT_CACHE ||
                                m->type == KILN_DOCKERFILE_MOUNT_TMPFS);
        if (m->type == KILN_DOCKERFILE_MOUNT_SECRET) {
                if (nonempty(m->from))
                        return fail(err, "secret mount should not have a from");
                if (m->sharing != KILN_DOCKERFILE_SHARING_UNSET)
                        return fail(err, "secret mount should not define sharing");
                if (!nonempty(m->source) && !nonempty(m->target) && !nonempty(m->cache_id))
                        return fail(err, "invalid secret mount. one of source, target required");
                if (nonempty(m->source) && nonempty(m->cache_id))
                        return fail(err, "both source and id can't be set");
        }
        if (m->sharing != KILN_DOCKERFILE_SHARING_UNSET && m->type != KILN_DOCKERFILE_MOUNT_CACHE)
                return fail(err, "invalid cache sharing set for %s mount", tn);
        return 0;
}

/* parseMount. Without an expander (have_expander false) only the CSV, the
 * from=$VAR rule and the defaults are checked, as at BuildKit's parse time;
 * with one (expand may still be NULL: identity) every value is expanded and
 * checked. *expander_failed tells an error of expand from one of ours. */
static int parse_mount(const char *val, bool have_expander, kiln_dockerfile_expand_fn expand,
                       void *userdata, struct kiln_dockerfile_mount *m, bool *expander_failed,
                       struct kiln_error **err)
{
        _cleanup_free_ char *csv_msg = NULL;
        char **fields = NULL;
        size_t n_fields = 0;
        bool ro_auto = true;
        int q = 0;

        *m = (struct kiln_dockerfile_mount){ .type = KILN_DOCKERFILE_MOUNT_BIND };
        *expander_failed = false;
        if (csv_fields(val, &fields, &n_fields, &csv_msg) < 0)
                return fail(err, "failed to parse csv mounts: %s", csv_msg);
        for (size_t i = 0; i < n_fields && q >= 0; i++) {
                const char *field = fields[i], *eq = strchr(field, '=');
                _cleanup_free_ char *key = key_lower(field, eq), *value = NULL;

                if (!eq) {
                        if (!have_expander)
                                continue;
                        if (readonly_key(key) >= 0) {
                                m->readonly = readonly_key(key);
                                ro_auto = false;
                        } else if (streq(key, "required")) {
                                if (secret_or_ssh(m))
                                        m->required = true;
                                else
                                        q = err_key_for_type(err, key, m);
                        } else
                                q = fail(err, "invalid field '%s' must be a key=value pair", field);
                        continue;
                }
                if (have_expander && expand) {
                        q = expand(userdata, eq + 1, &value, err);
                        if (q < 0) {
                                *expander_failed = true;
                                if (!*err)
                                        kiln_error_set(err, q, "expansion of '%s' failed", eq + 1);
                                continue;
                        }
                        if (!value)
                                value = kiln_xstrdup("");
                } else if (have_expander)
                        value = kiln_xstrdup(eq + 1);
                else if (streq(key, "from")) {
                        const char *dollar = strchr(eq + 1, '$');

                        if (dollar && dollar[1] != '\0') {
                                q = fail(err,
                                         "'%s' doesn't support variable expansion, define alias "
                                         "stage instead",
                                         key);
                                continue;
                        }
                        value = kiln_xstrdup(eq + 1);
                } else
                        continue;
                q = mount_set(m, key, field, &value, &ro_auto, err);
        }
        strv_free(fields, n_fields);
        if (q >= 0)
                q = mount_check(m, ro_auto, err);
        if (q < 0) {
                mount_release(m);
                return q;
        }
        if (!m->from)
                m->from = kiln_xstrdup("");
        if (!m->source)
                m->source = kiln_xstrdup("");
        if (!m->target)
                m->target = kiln_xstrdup("");
        if (!m->cache_id)
                m->cache_id = kiln_xstrdup("");
        return 0;
}

/* ParseDevice */
static int parse_device(const char *val, struct kiln_dockerfile_device *d, struct kiln_error **err)
{
        static const char *const all_keys[] = { "name", "required" };
        _cleanup_free_ char *csv_msg = NULL;
        char **fields = NULL;
        size_t n_fields = 0;
        int q = 0;

        *d = (struct kiln_dockerfile_device){ 0 };
        if (csv_fields(val, &fields, &n_fields, &csv_msg) < 0)
                return fail(err, "failed to parse csv devices: %s", csv_msg);
        for (size_t i = 0; i < n_fields && q == 0; i++) {
                const char *field = fields[i], *eq = strchr(field, '=');
                _cleanup_free_ char *key = key_lower(field, eq);

                if (!eq && streq(key, "required"))
                        d->required = true;
                else if (eq && streq(key, "name")) {
                        if (nonempty(d->name))
                                q = fail(err, "device name already set to %s", d->name);
                        else {
                                free(d->name);
                                d->name = kiln_xstrdup(eq + 1);
                        }
                } else if (eq && streq(key, "required"))
                        q = option_bool(key, eq + 1, &d->required, err);
                else if (!nonempty(d->name)) {
                        free(d->name);
                        d->name = kiln_xstrdup(field);
                } else if (!eq)
                        q = fail(err, "invalid field '%s' must be a key=value pair", field);
                else
                        q = fail_suggest(err, key, all_keys, ELEMENTSOF(all_keys),
                                         KILN_SUGGEST_CASE_SENSITIVE, "unexpected key '%s' in '%s'",
                                         key, field);
        }
        strv_free(fields, n_fields);
        if (q < 0) {
                free(d->name);
                d->name = NULL;
                return q;
        }
        if (!d->name)
                d->name = kiln_xstrdup("");
        return 0;
}

static int parse_run(struct req *r, struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;
        struct flag *mount, *network, *security, *device;
        ssize_t net, sec;
        size_t i;
        int q;

        /* BuildKit's pre-hooks define the flags and its post-hooks check them
         * in the order of their source files: device, mount, network,
         * security. */
        device = bflags_add(&r->flags, "device", FLAG_STRINGS, "");
        mount = bflags_add(&r->flags, "mount", FLAG_STRINGS, "");
        network = bflags_add(&r->flags, "network", FLAG_STRING, "default");
        security = bflags_add(&r->flags, "security", FLAG_STRING, "sandbox");
        q = bflags_parse(&r->flags, err);
        if (q < 0)
                return q;
        c = cmd_new(r, KILN_DOCKERFILE_CMD_RUN);
        for (i = 0; i < r->flags.n_used; i++)
                strv_push(&c->run.flags_used, &c->run.n_flags_used, kiln_xstrdup(r->flags.used[i]));
        parse_cmdline(r, &c->run.cmdline);

        if (device->n_values)
                c->run.devices = kiln_xcalloc(device->n_values, sizeof(*c->run.devices));
        for (i = 0; i < device->n_values; i++) {
                q = parse_device(device->values[i], &c->run.devices[i], err);
                if (q < 0)
                        return q;
                c->run.n_devices++;
        }
        for (i = 0; i < mount->n_values; i++) {
                struct kiln_dockerfile_mount m;
                bool ef;

                strv_push(&c->run.mount_specs, &c->run.n_mount_specs,
                          kiln_xstrdup(mount->values[i]));
                q = parse_mount(mount->values[i], false, NULL, NULL, &m, &ef, err);
                if (q < 0)
                        return q;
                mount_release(&m);
        }
        net = name_index(network->value, network_names, ELEMENTSOF(network_names));
        if (net < 0) {
                _cleanup_free_ char *qv = go_quote(network->value);

                return fail(err, "invalid network mode %s", qv);
        }
        c->run.network = (enum kiln_dockerfile_network) net;
        sec = name_index(security->value, security_names, ELEMENTSOF(security_names));
        if (sec < 0) {
                _cleanup_free_ char *qv = go_quote(security->value);

                return fail(err, "security %s is not valid", qv);
        }
        c->run.security = (enum kiln_dockerfile_security) sec;
        *ret = TAKE_PTR(c);
        return 0;
}

/* parseOptInterval */
static int parse_opt_interval(const struct flag *f, int64_t *ret, struct kiln_error **err)
{
        int64_t d = 0;
        int q;

        *ret = 0;
        if (!*f->value)
                return 0;
        q = go_parse_duration(f->value, &d, err);
        if (q < 0)
                return q;
        if (d == 0)
                return 0;
        if (d < MIN_HEALTHCHECK_DURATION_NS)
                return fail(err, "Interval \"%s\" cannot be less than 1ms", f->name);
        *ret = d;
        return 0;
}

static int parse_healthcheck(struct req *r, struct kiln_dockerfile_cmd **ret,
                             struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;
        _cleanup_free_ char *typ = NULL;
        struct flag *interval, *timeout, *start_period, *start_interval, *retries;
        struct kiln_dockerfile_healthcheck *hc;
        char **args = NULL;
        size_t n = 0;
        int q;

        if (r->n_args == 0)
                return err_at_least_one(err, "HEALTHCHECK");
        c = cmd_new(r, KILN_DOCKERFILE_CMD_HEALTHCHECK);
        hc = &c->healthcheck;
        typ = kiln_dockerfile_upper(r->args[0]);
        if (streq(typ, "NONE")) {
                /* BuildKit does not look at the flags of HEALTHCHECK NONE */
                if (r->n_args != 1)
                        return fail(err, "HEALTHCHECK NONE takes no arguments");
                strv_push(&hc->test, &hc->n_test, TAKE_PTR(typ));
                *ret = TAKE_PTR(c);
                return 0;
        }
        interval = bflags_add(&r->flags, "interval", FLAG_STRING, "");
        timeout = bflags_add(&r->flags, "timeout", FLAG_STRING, "");
        start_period = bflags_add(&r->flags, "start-period", FLAG_STRING, "");
        start_interval = bflags_add(&r->flags, "start-interval", FLAG_STRING, "");
        retries = bflags_add(&r->flags, "retries", FLAG_STRING, "");
        q = bflags_parse(&r->flags, err);
        if (q < 0)
                return q;
        if (!streq(typ, "CMD")) {
                _cleanup_free_ char *qt = go_quote(typ);

                return fail(err, "Unknown type %s in HEALTHCHECK (try CMD)", qt);
        }
        json_args(r, r->args + 1, r->n_args - 1, &args, &n);
        if (n == 0)
                return fail(err, "Missing command after HEALTHCHECK CMD");
        strv_push(&hc->test, &hc->n_test, kiln_xstrdup(r->json ? "CMD" : "CMD-SHELL"));
        for (size_t i = 0; i < n; i++)
                strv_push(&hc->test, &hc->n_test, args[i]);
        free(args);
        q = parse_opt_interval(interval, &hc->interval, err);
        if (q >= 0)
                q = parse_opt_interval(timeout, &hc->timeout, err);
        if (q >= 0)
                q = parse_opt_interval(start_period, &hc->start_period, err);
        if (q >= 0)
                q = parse_opt_interval(start_interval, &hc->start_interval, err);
        if (q < 0)
                return q;
        if (*retries->value) {
                int32_t v;

                q = go_parse_int32(retries->value, &v);
                if (q < 0) {
                        _cleanup_free_ char *qv = go_quote(retries->value);

                        return fail(err, "strconv.ParseInt: parsing %s: %s", qv,
                                    q == -ERANGE ? "value out of range" : "invalid syntax");
                }
                if (v < 0)
                        return fail(err, "--retries cannot be negative (%" PRId32 ")", v);
                hc->retries = v;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int parse_expose(struct req *r, struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        struct kiln_dockerfile_cmd *c;
        int q = cmd_begin(r, KILN_DOCKERFILE_CMD_EXPOSE, true, &c, err);

        if (q < 0)
                return q;
        c->list.items = TAKE_PTR(r->args);
        c->list.n_items = r->n_args;
        r->n_args = 0;
        qsort(c->list.items, c->list.n_items, sizeof(*c->list.items), cmp_str);
        *ret = c;
        return 0;
}

static int parse_volume(struct req *r, struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;
        int q = cmd_begin(r, KILN_DOCKERFILE_CMD_VOLUME, true, &c, err);

        if (q < 0)
                return q;
        for (size_t i = 0; i < r->n_args; i++) {
                char *v = trim_space_dup(r->args[i], strlen(r->args[i]));

                if (!*v) {
                        free(v);
                        return fail(err, "VOLUME specified can not be an empty string");
                }
                strv_push(&c->list.items, &c->list.n_items, v);
        }
        *ret = TAKE_PTR(c);
        return 0;
}

/* BuildKit never parses ARG's flags. */
static int parse_arg(struct req *r, struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_cmd_freep) struct kiln_dockerfile_cmd *c = NULL;

        if (r->n_args < 1)
                return err_at_least_one(err, "ARG");
        c = cmd_new(r, KILN_DOCKERFILE_CMD_ARG);
        c->arg.args = kiln_xcalloc(r->n_args, sizeof(*c->arg.args));
        for (size_t i = 0; i < r->n_args; i++) {
                struct kiln_dockerfile_arg *a = &c->arg.args[i];
                const char *eq = strchr(r->args[i], '=');

                if (eq == r->args[i])
                        return fail(err, "ARG names can not be blank");
                if (eq) {
                        a->key = kiln_xstrndup(r->args[i], (size_t) (eq - r->args[i]));
                        a->value = kiln_xstrdup(eq + 1);
                } else
                        a->key = kiln_xstrdup(r->args[i]);
                a->doc_comment = doc_comment(r->node, a->key);
                c->arg.n_args++;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int parse_shell(struct req *r, struct kiln_dockerfile_cmd **ret, struct kiln_error **err)
{
        struct kiln_dockerfile_cmd *c;
        char **args = NULL;
        size_t n = 0;
        int q;

        q = bflags_parse(&r->flags, err);
        if (q < 0)
                return q;
        json_args(r, r->args, r->n_args, &args, &n);
        if (n == 0)
                return err_at_least_one(err, "SHELL");
        if (!r->json) {
                strv_free(args, n);
                return fail(err, "SHELL requires the arguments to be in JSON form");
        }
        c = cmd_new(r, KILN_DOCKERFILE_CMD_SHELL);
        c->list.items = args;
        c->list.n_items = n;
        *ret = c;
        return 0;
}

static const char *const instruction_names[] = {
        "ADD",    "ARG",   "CMD",         "COPY",  "ENTRYPOINT", "ENV",
        "EXPOSE", "FROM",  "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD",
        "RUN",    "SHELL", "STOPSIGNAL",  "USER",  "VOLUME",     "WORKDIR",
};

/* lower (the keyword through strings.ToLower, lower_len bytes) is kw. */
static bool is_keyword(const char *lower, size_t lower_len, const char *kw)
{
        return lower_len == strlen(kw) && !memcmp(lower, kw, lower_len);
}

/* ParseInstruction without the location: *err holds BuildKit's bare text. */
static int parse_node(const struct kiln_dockerfile_node *node, struct kiln_dockerfile_cmd **cmd,
                      struct kiln_dockerfile_stage **stage, struct kiln_error **err)
{
        _cleanup_free_ char *lower = NULL;
        size_t ll;
        struct req r;
        int q;

        lower = go_lower_n(node->value.s ? node->value.s : "", node->value.len, &ll);
        q = req_init(&r, node, err);
        if (q < 0)
                goto out;
        if (is_keyword(lower, ll, "env"))
                q = parse_env_label(&r, KILN_DOCKERFILE_CMD_ENV, cmd, err);
        else if (is_keyword(lower, ll, "maintainer"))
                q = parse_one_word(&r, KILN_DOCKERFILE_CMD_MAINTAINER, true, cmd, err);
        else if (is_keyword(lower, ll, "label"))
                q = parse_env_label(&r, KILN_DOCKERFILE_CMD_LABEL, cmd, err);
        else if (is_keyword(lower, ll, "add"))
                q = parse_copy_add(&r, true, cmd, err);
        else if (is_keyword(lower, ll, "copy"))
                q = parse_copy_add(&r, false, cmd, err);
        else if (is_keyword(lower, ll, "from"))
                q = parse_from(&r, stage, err);
        else if (is_keyword(lower, ll, "onbuild"))
                q = parse_onbuild(&r, cmd, err);
        else if (is_keyword(lower, ll, "workdir"))
                q = parse_one_word(&r, KILN_DOCKERFILE_CMD_WORKDIR, true, cmd, err);
        else if (is_keyword(lower, ll, "run"))
                q = parse_run(&r, cmd, err);
        else if (is_keyword(lower, ll, "cmd"))
                q = parse_cmd_entrypoint(&r, KILN_DOCKERFILE_CMD_CMD, cmd, err);
        else if (is_keyword(lower, ll, "healthcheck"))
                q = parse_healthcheck(&r, cmd, err);
        else if (is_keyword(lower, ll, "entrypoint"))
                q = parse_cmd_entrypoint(&r, KILN_DOCKERFILE_CMD_ENTRYPOINT, cmd, err);
        else if (is_keyword(lower, ll, "expose"))
                q = parse_expose(&r, cmd, err);
        else if (is_keyword(lower, ll, "user"))
                q = parse_one_word(&r, KILN_DOCKERFILE_CMD_USER, true, cmd, err);
        else if (is_keyword(lower, ll, "volume"))
                q = parse_volume(&r, cmd, err);
        else if (is_keyword(lower, ll, "stopsignal"))
                /* BuildKit never parses STOPSIGNAL's flags */
                q = parse_one_word(&r, KILN_DOCKERFILE_CMD_STOPSIGNAL, false, cmd, err);
        else if (is_keyword(lower, ll, "arg"))
                q = parse_arg(&r, cmd, err);
        else if (is_keyword(lower, ll, "shell"))
                q = parse_shell(&r, cmd, err);
        else
                q = fail_suggest(err, r.command, instruction_names, ELEMENTSOF(instruction_names),
                                 KILN_SUGGEST_ANY_ORDER, "unknown instruction: %s", r.command);
out:
        req_release(&r);
        return q;
}

/* Prefixes *err with "file:line: " and records the position. */
static int wrap_location(struct kiln_error **err, const char *file, unsigned line)
{
        int q = kiln_error_wrap(err, "%s:%u", file ? file : "<input>", line);

        if (*err) {
                (*err)->line = line;
                (*err)->col = 0;
                free((*err)->file);
                (*err)->file = file ? kiln_xstrdup(file) : NULL;
        }
        return q;
}

int kiln_dockerfile_instruction_parse(const struct kiln_dockerfile_node *node, const char *file,
                                      struct kiln_dockerfile_cmd **cmd_ret,
                                      struct kiln_dockerfile_stage **stage_ret,
                                      struct kiln_error **err)
{
        int q;

        *cmd_ret = NULL;
        *stage_ret = NULL;
        q = parse_node(node, cmd_ret, stage_ret, err);
        if (q < 0) {
                *cmd_ret = kiln_dockerfile_cmd_free(*cmd_ret);
                *stage_ret = kiln_dockerfile_stage_free(*stage_ret);
                return wrap_location(err, file, node->start_line);
        }
        return 0;
}

struct kiln_dockerfile_instructions *
kiln_dockerfile_instructions_free(struct kiln_dockerfile_instructions *d)
{
        if (!d)
                return NULL;
        for (size_t i = 0; i < d->n_stages; i++)
                stage_release(&d->stages[i]);
        free(d->stages);
        for (size_t i = 0; i < d->n_meta_args; i++)
                kiln_dockerfile_cmd_free(d->meta_args[i]);
        free(d->meta_args);
        free(d);
        return NULL;
}

int kiln_dockerfile_instructions_parse(const struct kiln_dockerfile_node *root, const char *file,
                                       struct kiln_dockerfile_instructions **ret,
                                       struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d = NULL;

        *ret = NULL;
        d = kiln_xcalloc(1, sizeof(*d));
        for (size_t i = 0; i < root->n_children; i++) {
                const struct kiln_dockerfile_node *n = root->children[i];
                struct kiln_dockerfile_cmd *cmd = NULL;
                struct kiln_dockerfile_stage *stage = NULL, *cur;
                int q;

                q = parse_node(n, &cmd, &stage, err);
                if (q < 0) {
                        kiln_dockerfile_cmd_free(cmd);
                        kiln_dockerfile_stage_free(stage);
                        return wrap_location(err, file, n->start_line);
                }
                if (stage) {
                        if (d->n_stages >= KILN_LIMIT_DOCKERFILE_STAGES) {
                                kiln_dockerfile_stage_free(stage);
                                kiln_error_set(err, -E2BIG, "too many build stages (more than %d)",
                                               KILN_LIMIT_DOCKERFILE_STAGES);
                                return wrap_location(err, file, n->start_line);
                        }
                        d->stages =
                                kiln_xreallocarray(d->stages, d->n_stages + 1, sizeof(*d->stages));
                        d->stages[d->n_stages++] = *stage;
                        free(stage);
                        continue;
                }
                if (d->n_stages == 0) {
                        if (cmd->type == KILN_DOCKERFILE_CMD_ARG) {
                                d->meta_args = kiln_xreallocarray(d->meta_args, d->n_meta_args + 1,
                                                                  sizeof(*d->meta_args));
                                d->meta_args[d->n_meta_args++] = cmd;
                                continue;
                        }
                        kiln_dockerfile_cmd_free(cmd);
                        kiln_error_set(err, -EINVAL, "no build stage in current context");
                        return wrap_location(err, file, n->start_line);
                }
                cur = &d->stages[d->n_stages - 1];
                cur->cmds = kiln_xreallocarray(cur->cmds, cur->n_cmds + 1, sizeof(*cur->cmds));
                cur->cmds[cur->n_cmds++] = cmd;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

ssize_t kiln_dockerfile_find_stage(const struct kiln_dockerfile_instructions *d, const char *name)
{
        for (size_t i = 0; i < d->n_stages; i++)
                if (kiln_dockerfile_caseeq(d->stages[i].name, name))
                        return (ssize_t) i;
        return -1;
}

/* -------------------------------------------------------------- expansion */

bool kiln_dockerfile_cmd_expandable(enum kiln_dockerfile_cmd_type type)
{
        switch (type) {
        case KILN_DOCKERFILE_CMD_ADD:
        case KILN_DOCKERFILE_CMD_ARG:
        case KILN_DOCKERFILE_CMD_COPY:
        case KILN_DOCKERFILE_CMD_ENV:
        case KILN_DOCKERFILE_CMD_LABEL:
        case KILN_DOCKERFILE_CMD_RUN:
        case KILN_DOCKERFILE_CMD_STOPSIGNAL:
        case KILN_DOCKERFILE_CMD_USER:
        case KILN_DOCKERFILE_CMD_VOLUME:
        case KILN_DOCKERFILE_CMD_WORKDIR:
                return true;
        case KILN_DOCKERFILE_CMD_CMD:
        case KILN_DOCKERFILE_CMD_ENTRYPOINT:
        case KILN_DOCKERFILE_CMD_EXPOSE:
        case KILN_DOCKERFILE_CMD_HEALTHCHECK:
        case KILN_DOCKERFILE_CMD_MAINTAINER:
        case KILN_DOCKERFILE_CMD_ONBUILD:
        case KILN_DOCKERFILE_CMD_SHELL:
                return false;
        }
        return false;
}

static int expand_field(kiln_dockerfile_expand_fn expand, void *userdata, char **field,
                        struct kiln_error **err)
{
        char *out = NULL;
        int q;

        if (!expand)
                return 0;
        q = expand(userdata, *field, &out, err);
        if (q < 0) {
                free(out);
                if (!*err)
                        kiln_error_set(err, q, "expansion of '%s' failed", *field);
                return q;
        }
        free(*field);
        *field = out ? out : kiln_xstrdup("");
        return 0;
}

static int expand_strv(kiln_dockerfile_expand_fn expand, void *userdata, char **v, size_t n,
                       struct kiln_error **err)
{
        for (size_t i = 0; i < n; i++) {
                int q = expand_field(expand, userdata, &v[i], err);

                if (q < 0)
                        return q;
        }
        return 0;
}

static int expand_run(struct kiln_dockerfile_cmd *c, const char *file,
                      kiln_dockerfile_expand_fn expand, void *userdata, struct kiln_error **err)
{
        struct kiln_dockerfile_mount *mounts = NULL;
        size_t n = 0;

        if (c->run.n_mount_specs)
                mounts = kiln_xcalloc(c->run.n_mount_specs, sizeof(*mounts));
        for (size_t i = 0; i < c->run.n_mount_specs; i++) {
                bool expander_failed;
                int q = parse_mount(c->run.mount_specs[i], true, expand, userdata, &mounts[i],
                                    &expander_failed, err);

                if (q < 0) {
                        mounts_free(mounts, n);
                        /* the expander's own errors pass unchanged */
                        return expander_failed ? q : wrap_location(err, file, c->start_line);
                }
                n++;
        }
        mounts_free(c->run.mounts, c->run.n_mounts);
        c->run.mounts = mounts;
        c->run.n_mounts = n;
        return 0;
}

int kiln_dockerfile_cmd_expand(struct kiln_dockerfile_cmd *c, const char *file,
                               kiln_dockerfile_expand_fn expand, void *userdata,
                               struct kiln_error **err)
{
        int q = 0;

        switch (c->type) {
        case KILN_DOCKERFILE_CMD_ENV:
        case KILN_DOCKERFILE_CMD_LABEL:
                for (size_t i = 0; i < c->kv.n_kvs && q >= 0; i++) {
                        q = expand_field(expand, userdata, &c->kv.kvs[i].key, err);
                        if (q >= 0)
                                q = expand_field(expand, userdata, &c->kv.kvs[i].value, err);
                }
                return q;
        case KILN_DOCKERFILE_CMD_ARG:
                for (size_t i = 0; i < c->arg.n_args && q >= 0; i++) {
                        q = expand_field(expand, userdata, &c->arg.args[i].key, err);
                        if (q >= 0 && c->arg.args[i].value)
                                q = expand_field(expand, userdata, &c->arg.args[i].value, err);
                }
                return q;
        case KILN_DOCKERFILE_CMD_ADD:
        case KILN_DOCKERFILE_CMD_COPY:
                q = expand_field(expand, userdata, &c->copy.chown, err);
                if (q >= 0)
                        q = expand_field(expand, userdata, &c->copy.chmod, err);
                if (q >= 0 && c->type == KILN_DOCKERFILE_CMD_ADD)
                        q = expand_field(expand, userdata, &c->copy.checksum, err);
                if (q >= 0)
                        q = expand_strv(expand, userdata, c->copy.sources, c->copy.n_sources, err);
                if (q >= 0)
                        q = expand_field(expand, userdata, &c->copy.dest, err);
                return q;
        case KILN_DOCKERFILE_CMD_STOPSIGNAL:
        case KILN_DOCKERFILE_CMD_USER:
        case KILN_DOCKERFILE_CMD_WORKDIR:
                return expand_field(expand, userdata, &c->word, err);
        case KILN_DOCKERFILE_CMD_VOLUME:
                return expand_strv(expand, userdata, c->list.items, c->list.n_items, err);
        case KILN_DOCKERFILE_CMD_RUN:
                return expand_run(c, file, expand, userdata, err);
        case KILN_DOCKERFILE_CMD_CMD:
        case KILN_DOCKERFILE_CMD_ENTRYPOINT:
        case KILN_DOCKERFILE_CMD_EXPOSE:
        case KILN_DOCKERFILE_CMD_HEALTHCHECK:
        case KILN_DOCKERFILE_CMD_MAINTAINER:
        case KILN_DOCKERFILE_CMD_ONBUILD:
        case KILN_DOCKERFILE_CMD_SHELL:
                return 0;
        }
        return 0;
}

int kiln_dockerfile_cmd_expand_raw(struct kiln_dockerfile_cmd *c, const char *file,
                                   kiln_dockerfile_expand_fn expand, void *userdata,
                                   struct kiln_error **err)
{
        (void) file;
        if (c->type != KILN_DOCKERFILE_CMD_ADD && c->type != KILN_DOCKERFILE_CMD_COPY)
                return 0;
        for (size_t i = 0; i < c->copy.n_contents; i++) {
                int q;

                if (!c->copy.contents[i].expand)
                        continue;
                q = expand_field(expand, userdata, &c->copy.contents[i].data, err);
                if (q < 0)
                        return q;
        }
        return 0;
}

/* ------------------------------------------------------------------ chmod */

int kiln_dockerfile_chmod_parse(const char *s, struct kiln_dockerfile_chmod *ret,
                                struct kiln_error **err)
{
        size_t i = 0, n = strlen(s);
        uint32_t v;

        *ret = (struct kiln_dockerfile_chmod){ 0 };
        if (go_parse_uint32(s, 8, &v) == 0) {
                if (v > 07777)
                        goto non_octal;
                ret->mode = v;
                return 0;
        }
        if (n == 0)
                return fail(err, "invalid syntax");
        /* the mode package reads a leading digit as an octal number */
        if (s[0] >= '0' && s[0] <= '9')
                goto non_octal;
        /* chmod(1): clause = [ugoa]* ([+-=] [rstwxXugo]*)+, clauses joined
         * with ','. */
        for (;;) {
                while (i < n && strchr("augo", s[i]))
                        i++;
                if (i == n)
                        return fail(err, "invalid syntax");
                for (;;) {
                        if (!strchr("+-=", s[i]))
                                return fail(err, "invalid syntax");
                        i++;
                        while (i < n && strchr("rstwXxugo", s[i]))
                                i++;
                        if (i == n) {
                                ret->symbolic = true;
                                return 0;
                        }
                        if (s[i] == ',')
                                break;
                }
                i++;
        }
non_octal:
        return fail(err,
                    "invalid chmod parameter: '%s'. it should be octal string and between 0 and "
                    "07777",
                    s);
}

/* ------------------------------------------------------------------ names */

const char *kiln_dockerfile_cmd_type_name(enum kiln_dockerfile_cmd_type type)
{
        static const char *const names[] = {
                [KILN_DOCKERFILE_CMD_ADD] = "ADD",
                [KILN_DOCKERFILE_CMD_ARG] = "ARG",
                [KILN_DOCKERFILE_CMD_CMD] = "CMD",
                [KILN_DOCKERFILE_CMD_COPY] = "COPY",
                [KILN_DOCKERFILE_CMD_ENTRYPOINT] = "ENTRYPOINT",
                [KILN_DOCKERFILE_CMD_ENV] = "ENV",
                [KILN_DOCKERFILE_CMD_EXPOSE] = "EXPOSE",
                [KILN_DOCKERFILE_CMD_HEALTHCHECK] = "HEALTHCHECK",
                [KILN_DOCKERFILE_CMD_LABEL] = "LABEL",
                [KILN_DOCKERFILE_CMD_MAINTAINER] = "MAINTAINER",
                [KILN_DOCKERFILE_CMD_ONBUILD] = "ONBUILD",
                [KILN_DOCKERFILE_CMD_RUN] = "RUN",
                [KILN_DOCKERFILE_CMD_SHELL] = "SHELL",
                [KILN_DOCKERFILE_CMD_STOPSIGNAL] = "STOPSIGNAL",
                [KILN_DOCKERFILE_CMD_USER] = "USER",
                [KILN_DOCKERFILE_CMD_VOLUME] = "VOLUME",
                [KILN_DOCKERFILE_CMD_WORKDIR] = "WORKDIR",
        };

        if ((size_t) type >= ELEMENTSOF(names))
                return "";
        return names[type];
}

const char *kiln_dockerfile_mount_type_name(enum kiln_dockerfile_mount_type t)
{
        return (size_t) t < ELEMENTSOF(mount_type_names) ? mount_type_names[t] : "";
}

const char *kiln_dockerfile_network_name(enum kiln_dockerfile_network n)
{
        return (size_t) n < ELEMENTSOF(network_names) ? network_names[n] : "";
}

const char *kiln_dockerfile_security_name(enum kiln_dockerfile_security s)
{
        return (size_t) s < ELEMENTSOF(security_names) ? security_names[s] : "";
}

const char *kiln_dockerfile_sharing_name(enum kiln_dockerfile_mount_sharing s)
{
        return (size_t) s < ELEMENTSOF(sharing_names) ? sharing_names[s] : "";
}
