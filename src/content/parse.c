/* SPDX-License-Identifier: Apache-2.0 */
/* Field readers, messages and grammar checks for the document parsers. */

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>

#include "base/clock.h"
#include "content-internal.h"

/* Longest piece of a hostile value quoted in a message. */
#define QUOTE_MAX 80

void strv_free(char **v)
{
        char **p;

        if (!v)
                return;
        for (p = v; *p; p++)
                free(*p);
        free(v);
}

size_t strv_length(char *const *v)
{
        size_t n = 0;

        while (v && v[n])
                n++;
        return n;
}

char **strv_copy(char *const *v)
{
        size_t i, n = strv_length(v);
        char **c;

        if (!v)
                return NULL;
        c = kiln_xcalloc(n + 1, sizeof(*c));
        for (i = 0; i < n; i++)
                c[i] = kiln_xstrdup(v[i]);
        return c;
}

static bool plain_word(const char *key)
{
        const char *p;

        if (!*key || isdigit((unsigned char) *key))
                return false;
        for (p = key; *p; p++)
                if (!isalnum((unsigned char) *p) && *p != '_')
                        return false;
        return true;
}

/* Appends s to b, quoted with the given quote, controls and overlong input
 * rendered harmlessly. */
static void put_quoted(struct kiln_buf *b, const char *s, size_t len, char quote)
{
        size_t i;

        (void) kiln_buf_putc(b, quote);
        for (i = 0; i < len && i < QUOTE_MAX; i++) {
                unsigned char ch = (unsigned char) s[i];

                if (ch < 0x20 || ch == 0x7f)
                        (void) kiln_buf_printf(b, "\\x%02x", ch);
                else if (ch == (unsigned char) quote || ch == '\\')
                        (void) kiln_buf_printf(b, "\\%c", ch);
                else
                        (void) kiln_buf_putc(b, (char) ch);
        }
        if (len > QUOTE_MAX)
                (void) kiln_buf_puts(b, "...");
        (void) kiln_buf_putc(b, quote);
}

char *quote_string(const char *s)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);

        put_quoted(&b, s, strlen(s), '\'');
        return kiln_buf_steal(&b);
}

char *path_key(const char *path, const char *key)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);

        (void) kiln_buf_puts(&b, path);
        if (plain_word(key)) {
                (void) kiln_buf_putc(&b, '.');
                (void) kiln_buf_puts(&b, key);
        } else {
                (void) kiln_buf_putc(&b, '[');
                put_quoted(&b, key, strlen(key), '"');
                (void) kiln_buf_putc(&b, ']');
        }
        return kiln_buf_steal(&b);
}

char *path_index(const char *path, size_t i)
{
        return kiln_xasprintf("%s[%zu]", path, i);
}

char *json_brief(const json_t *v)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);

        switch (json_typeof(v)) {
        case JSON_STRING:
                put_quoted(&b, json_string_value(v), json_string_length(v), '\'');
                break;
        case JSON_INTEGER:
                (void) kiln_buf_printf(&b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                break;
        case JSON_REAL:
                (void) kiln_buf_printf(&b, "%.17g", json_real_value(v));
                break;
        case JSON_TRUE:
                (void) kiln_buf_puts(&b, "true");
                break;
        case JSON_FALSE:
                (void) kiln_buf_puts(&b, "false");
                break;
        case JSON_NULL:
                (void) kiln_buf_puts(&b, "null");
                break;
        case JSON_OBJECT:
                (void) kiln_buf_puts(&b, "an object");
                break;
        case JSON_ARRAY:
                (void) kiln_buf_puts(&b, "an array");
                break;
        }
        return kiln_buf_steal(&b);
}

int doc_error(struct doc_ctx *c, const char *path, const char *key, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL, *full = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        full = key ? path_key(path, key) : kiln_xstrdup(path);
        return kiln_error_set(c->err, -EINVAL, "%s: %s: %s", c->noun, full, msg);
}

int doc_load(struct doc_ctx *c, const char *data, size_t n, size_t limit, json_t **ret)
{
        json_error_t jerr;
        json_t *root;

        if (n > limit)
                return kiln_error_set(c->err, -E2BIG,
                                      "%s: document is %zu bytes, more than the limit of %zu",
                                      c->noun, n, limit);
        /* Duplicate keys are refused: two parsers that pick different
         * duplicates would see two different documents under one digest. */
        root = json_loadb(data, n, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                int r = kiln_error_set(c->err, -EBADMSG, "%s: invalid JSON at %d:%d: %s", c->noun,
                                       jerr.line, jerr.column, jerr.text);
                if (c->err && *c->err) {
                        (*c->err)->line = jerr.line > 0 ? (unsigned) jerr.line : 0;
                        (*c->err)->col = jerr.column > 0 ? (unsigned) jerr.column : 0;
                }
                return r;
        }
        if (!json_is_object(root)) {
                _cleanup_free_ char *got = json_brief(root);

                json_decref(root);
                return doc_error(c, "$", NULL, "expected an object, got %s", got);
        }
        *ret = root;
        return 0;
}

/* obj[key], NULL when missing (or null, when nulls are lenient). */
static json_t *field(struct doc_ctx *c, json_t *obj, const char *key, bool nullable)
{
        json_t *v = json_object_get(obj, key);

        if (v && json_is_null(v) && (nullable || c->lenient_null))
                return NULL;
        return v;
}

static int wrong_type(struct doc_ctx *c, const char *path, const char *key, const char *want,
                      const json_t *v)
{
        _cleanup_free_ char *got = json_brief(v);

        return doc_error(c, path, key, "expected %s, got %s", want, got);
}

int get_string(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool required,
               char **ret)
{
        json_t *v = field(c, obj, key, false);

        *ret = NULL;
        if (!v) {
                if (required)
                        return doc_error(c, path, key, "required field is missing");
                return 0;
        }
        if (!json_is_string(v))
                return wrong_type(c, path, key, "a string", v);
        *ret = kiln_xstrdup(json_string_value(v));
        return 0;
}

int get_bool(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool *ret)
{
        json_t *v = field(c, obj, key, false);

        *ret = false;
        if (!v)
                return 0;
        if (!json_is_boolean(v))
                return wrong_type(c, path, key, "a boolean", v);
        *ret = json_is_true(v);
        return 0;
}

int get_strv(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool nullable,
             char ***ret)
{
        json_t *v = field(c, obj, key, nullable);
        char **vec;
        size_t i;

        *ret = NULL;
        if (!v)
                return 0;
        if (!json_is_array(v))
                return wrong_type(c, path, key, "an array of strings", v);
        vec = kiln_xcalloc(json_array_size(v) + 1, sizeof(*vec));
        for (i = 0; i < json_array_size(v); i++) {
                json_t *item = json_array_get(v, i);

                if (!json_is_string(item)) {
                        _cleanup_free_ char *p = path_key(path, key), *got = json_brief(item);

                        strv_free(vec);
                        return doc_error(c, p, NULL, "[%zu]: expected a string, got %s", i, got);
                }
                vec[i] = kiln_xstrdup(json_string_value(item));
        }
        *ret = vec;
        return 0;
}

static int annotation_cmp(const void *a, const void *b)
{
        const struct kiln_content_annotation *x = a, *y = b;

        return strcmp(x->key, y->key);
}

int get_string_map(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool nullable,
                   struct kiln_content_annotations *ret)
{
        json_t *v = field(c, obj, key, nullable), *value;
        const char *k;
        size_t n = 0;

        *ret = (struct kiln_content_annotations){ 0 };
        if (!v)
                return 0;
        if (!json_is_object(v))
                return wrong_type(c, path, key, "an object of strings", v);
        ret->items =
                kiln_xcalloc(json_object_size(v) ? json_object_size(v) : 1, sizeof(*ret->items));
        json_object_foreach (v, k, value) {
                if (!json_is_string(value)) {
                        _cleanup_free_ char *p = path_key(path, key), *got = json_brief(value);

                        kiln_content_annotations_release(ret);
                        return doc_error(c, p, k, "expected a string, got %s", got);
                }
                ret->items[n].key = kiln_xstrdup(k);
                ret->items[n].value = kiln_xstrdup(json_string_value(value));
                ret->n = ++n;
        }
        qsort(ret->items, ret->n, sizeof(*ret->items), annotation_cmp);
        return 0;
}

int get_object_keys(struct doc_ctx *c, json_t *obj, const char *path, const char *key,
                    bool nullable, char ***ret)
{
        json_t *v = field(c, obj, key, nullable), *value;
        const char *k;
        char **vec;
        size_t n = 0;

        *ret = NULL;
        if (!v)
                return 0;
        if (!json_is_object(v))
                return wrong_type(c, path, key, "an object", v);
        vec = kiln_xcalloc(json_object_size(v) + 1, sizeof(*vec));
        json_object_foreach (v, k, value) {
                /* Docker writes {} for each; Go's map[string]struct{} also
                 * takes null. */
                if (!json_is_object(value) && !(json_is_null(value) && c->lenient_null)) {
                        _cleanup_free_ char *p = path_key(path, key), *got = json_brief(value);

                        strv_free(vec);
                        return doc_error(c, p, k, "expected an object, got %s", got);
                }
                vec[n++] = kiln_xstrdup(k);
        }
        *ret = vec;
        return 0;
}

const char *kiln_content_annotations_get(const struct kiln_content_annotations *a, const char *key)
{
        size_t i;

        for (i = 0; i < a->n; i++)
                if (streq(a->items[i].key, key))
                        return a->items[i].value;
        return NULL;
}

void kiln_content_annotations_set(struct kiln_content_annotations *a, const char *key,
                                  const char *value)
{
        size_t i;

        for (i = 0; i < a->n; i++)
                if (streq(a->items[i].key, key)) {
                        free(a->items[i].value);
                        a->items[i].value = kiln_xstrdup(value);
                        return;
                }
        a->items = kiln_xreallocarray(a->items, a->n + 1, sizeof(*a->items));
        a->items[a->n].key = kiln_xstrdup(key);
        a->items[a->n].value = kiln_xstrdup(value);
        a->n++;
        qsort(a->items, a->n, sizeof(*a->items), annotation_cmp);
}

void kiln_content_annotations_release(struct kiln_content_annotations *a)
{
        size_t i;

        for (i = 0; i < a->n; i++) {
                free(a->items[i].key);
                free(a->items[i].value);
        }
        free(a->items);
        *a = (struct kiln_content_annotations){ 0 };
}

json_t *annotations_to_json(const struct kiln_content_annotations *a)
{
        json_t *o = json_object();
        size_t i;

        for (i = 0; i < a->n; i++)
                (void) json_object_set_new(o, a->items[i].key, json_string(a->items[i].value));
        return o;
}

/* ---- grammar ---- */

static bool mt_part_char(char ch)
{
        return isalnum((unsigned char) ch) || (ch && strchr("!#$&^_.+-", ch));
}

bool media_type_valid(const char *s)
{
        const char *slash = strchr(s, '/');
        size_t i, n;

        /* ^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/ the same $ */
        if (!slash)
                return false;
        n = (size_t) (slash - s);
        if (n < 1 || n > 127 || !isalnum((unsigned char) s[0]))
                return false;
        for (i = 1; i < n; i++)
                if (!mt_part_char(s[i]))
                        return false;
        s = slash + 1;
        n = strlen(s);
        if (n < 1 || n > 127 || !isalnum((unsigned char) s[0]))
                return false;
        for (i = 1; i < n; i++)
                if (!mt_part_char(s[i]))
                        return false;
        return true;
}

static bool lower_alnum(char ch)
{
        return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static bool lower_hex(const char *s, size_t n)
{
        size_t i;

        if (strlen(s) != n)
                return false;
        for (i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

int digest_check_any(struct doc_ctx *c, const char *path, const char *key, const char *s)
{
        _cleanup_(kiln_buf_release) struct kiln_buf q = KILN_BUF_INIT(SIZE_MAX / 2);
        const char *colon = strchr(s, ':'), *p;
        static const struct {
                const char *name;
                size_t hex;
        } known[] = { { "sha256", 64 }, { "sha384", 96 }, { "sha512", 128 } };
        size_t i, alg_len;
        bool sep = true;

        put_quoted(&q, s, strlen(s), '\'');
        /* ^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$ */
        if (!colon || colon == s || !colon[1])
                return doc_error(c, path, key, "invalid digest %s: expected <algorithm>:<hex>",
                                 q.data);
        for (p = s; p < colon; p++) {
                if (lower_alnum(*p))
                        sep = false;
                else if (strchr("+._-", *p) && !sep)
                        sep = true;
                else
                        return doc_error(c, path, key, "invalid digest %s: bad algorithm name",
                                         q.data);
        }
        if (sep)
                return doc_error(c, path, key, "invalid digest %s: bad algorithm name", q.data);
        for (p = colon + 1; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("=_-", *p))
                        return doc_error(c, path, key, "invalid digest %s: bad encoded part",
                                         q.data);
        alg_len = (size_t) (colon - s);
        for (i = 0; i < ELEMENTSOF(known); i++)
                if (strlen(known[i].name) == alg_len && strncmp(s, known[i].name, alg_len) == 0 &&
                    !lower_hex(colon + 1, known[i].hex))
                        return doc_error(c, path, key,
                                         "invalid digest %s: %s needs %zu lowercase hex digits",
                                         q.data, known[i].name, known[i].hex);
        return 0;
}

bool date_time_valid(const char *s)
{
        static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        int y, mo, d, h, mi, sec, oh, om;
        const char *p;

        /* RFC 3339 section 5.6: full-date "T" full-time; T and Z in any case. */
        if (strlen(s) < 20 || !kiln_parse_digits(s, 4, &y) || s[4] != '-' ||
            !kiln_parse_digits(s + 5, 2, &mo) || s[7] != '-' || !kiln_parse_digits(s + 8, 2, &d) ||
            (s[10] != 'T' && s[10] != 't') || !kiln_parse_digits(s + 11, 2, &h) || s[13] != ':' ||
            !kiln_parse_digits(s + 14, 2, &mi) || s[16] != ':' ||
            !kiln_parse_digits(s + 17, 2, &sec))
                return false;
        if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
                return false;
        if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
                return false;
        p = s + 19;
        if (*p == '.') {
                p++;
                if (*p < '0' || *p > '9')
                        return false;
                while (*p >= '0' && *p <= '9')
                        p++;
        }
        if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
                return true;
        if ((*p == '+' || *p == '-') && strlen(p) == 6 && kiln_parse_digits(p + 1, 2, &oh) &&
            p[3] == ':' && kiln_parse_digits(p + 4, 2, &om))
                return oh <= 23 && om <= 59;
        return false;
}

bool uri_valid(const char *s)
{
        const char *p = s;

        /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
        if (!isalpha((unsigned char) *p))
                return false;
        while (isalnum((unsigned char) *p) || *p == '+' || *p == '-' || *p == '.')
                p++;
        if (*p != ':')
                return false;
        for (p++; *p; p++) {
                unsigned char ch = (unsigned char) *p;

                /* What Go's url.Parse refuses anywhere in a URL. */
                if (ch <= 0x20 || ch == 0x7f)
                        return false;
                if (ch == '%' &&
                    !(isxdigit((unsigned char) p[1]) && isxdigit((unsigned char) p[2])))
                        return false;
        }
        return true;
}
