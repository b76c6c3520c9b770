/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TOML 1.0 parser: one pass over the bytes with a cursor, building the tree
 * as it goes. UTF-8 is validated where non-ASCII bytes may appear (strings
 * and comments); anywhere else a non-ASCII byte is a syntax error anyway, so
 * the whole input ends up validated without a second pass.
 *
 * The redefinition rules need state the public tree does not carry, so every
 * value is allocated inside a struct node with flags, and a hash index keyed
 * by (table, key) keeps lookups constant-time for tables of any size.
 */

#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>

#include "base/buf.h"
#include "base/goquote.h"
#include "base/limits.h"
#include "base/macro.h"
#include "config/toml.h"

enum {
        /* table: defined by [header] or [[header]]; no header may define it
         * again and dotted keys may not extend it */
        NODE_DEFINED = 1u << 0,
        /* table: created by dotted keys in node->section; only dotted keys
         * of that same section (or inline table) may extend it */
        NODE_DOTTED = 1u << 1,
        /* table or array written inline: complete and immutable */
        NODE_INLINE = 1u << 2,
        /* array: created by [[header]] */
        NODE_AOT = 1u << 3,
};

struct node {
        struct kiln_toml_value v; /* first: a value pointer is its node pointer */
        unsigned flags;
        unsigned section;
};

/* One part of a dotted key; the decoded text sits in parser.keys. */
struct key_part {
        size_t off;
        size_t len;
        struct kiln_toml_pos pos;
        size_t at; /* offset of the part in the input */
};

/* Hash index entry: table->entries[idx] has this key hash. */
struct slot {
        const struct kiln_toml_table *table; /* NULL: empty slot */
        uint32_t hash;
        uint32_t idx;
};

struct parser {
        const char *p;
        const char *end;
        const char *line_start;
        const char *begin; /* the input, for the offsets of values */
        unsigned line;
        struct kiln_error **err;

        struct kiln_buf str;  /* the string value being decoded */
        struct kiln_buf keys; /* the key parts being decoded, each NUL-terminated */
        struct key_part parts[KILN_LIMIT_TOML_DEPTH];
        size_t n_parts;

        struct slot *slots;
        size_t n_slots; /* 0 or a power of two */
        size_t n_used;
        uint64_t seed;

        /* Each [header] and each inline table opens a new section. */
        unsigned section;
        unsigned n_sections;
};

static struct node *node_of(struct kiln_toml_value *v)
{
        return (struct node *) v;
}

static const char *const type_names[_KILN_TOML_TYPE_MAX] = {
        [KILN_TOML_STRING] = "string",         [KILN_TOML_INTEGER] = "integer",
        [KILN_TOML_FLOAT] = "float",           [KILN_TOML_BOOL] = "bool",
        [KILN_TOML_DATETIME] = "datetime",     [KILN_TOML_DATETIME_LOCAL] = "datetime-local",
        [KILN_TOML_DATE_LOCAL] = "date-local", [KILN_TOML_TIME_LOCAL] = "time-local",
        [KILN_TOML_ARRAY] = "array",           [KILN_TOML_TABLE] = "table",
};

const char *kiln_toml_type_to_string(enum kiln_toml_type t)
{
        if ((int) t < 0 || t >= _KILN_TOML_TYPE_MAX)
                return NULL;
        return type_names[t];
}

/* "an integer", "a string", ... for messages. */
static const char *type_with_article(struct kiln_toml_value *v)
{
        switch (v->type) {
        case KILN_TOML_STRING:
                return "a string";
        case KILN_TOML_INTEGER:
                return "an integer";
        case KILN_TOML_FLOAT:
                return "a float";
        case KILN_TOML_BOOL:
                return "a bool";
        case KILN_TOML_DATETIME:
                return "a datetime";
        case KILN_TOML_DATETIME_LOCAL:
                return "a local datetime";
        case KILN_TOML_DATE_LOCAL:
                return "a local date";
        case KILN_TOML_TIME_LOCAL:
                return "a local time";
        case KILN_TOML_ARRAY:
                return node_of(v)->flags & NODE_AOT ? "an array of tables" : "an array";
        case KILN_TOML_TABLE:
                return node_of(v)->flags & NODE_INLINE ? "an inline table" : "a table";
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                break;
        }
        return "a value";
}

struct kiln_toml_value *kiln_toml_value_free(struct kiln_toml_value *v)
{
        size_t i;

        if (!v)
                return NULL;
        switch (v->type) {
        case KILN_TOML_STRING:
        case KILN_TOML_DATETIME:
        case KILN_TOML_DATETIME_LOCAL:
        case KILN_TOML_DATE_LOCAL:
        case KILN_TOML_TIME_LOCAL:
                free(v->str.s);
                break;
        case KILN_TOML_ARRAY:
                for (i = 0; i < v->array.n; i++)
                        kiln_toml_value_free(v->array.items[i]);
                free(v->array.items);
                break;
        case KILN_TOML_TABLE:
                if (!v->table)
                        break;
                for (i = 0; i < v->table->n; i++) {
                        free(v->table->entries[i].key);
                        kiln_toml_value_free(v->table->entries[i].value);
                }
                free(v->table->entries);
                free(v->table);
                break;
        case KILN_TOML_INTEGER:
        case KILN_TOML_FLOAT:
        case KILN_TOML_BOOL:
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                break;
        }
        free(v);
        return NULL;
}

const struct kiln_toml_entry *kiln_toml_table_findn(const struct kiln_toml_table *t,
                                                    const char *key, size_t len)
{
        size_t i;

        if (!t || !key)
                return NULL;
        for (i = 0; i < t->n; i++)
                if (t->entries[i].key_len == len && memcmp(t->entries[i].key, key, len) == 0)
                        return &t->entries[i];
        return NULL;
}

const struct kiln_toml_entry *kiln_toml_table_find(const struct kiln_toml_table *t, const char *key)
{
        return key ? kiln_toml_table_findn(t, key, strlen(key)) : NULL;
}

static char *memdup0(const char *s, size_t n)
{
        char *d = kiln_xmalloc(n + 1);

        if (n)
                memcpy(d, s, n);
        d[n] = '\0';
        return d;
}

static struct kiln_toml_value *value_new(enum kiln_toml_type type, struct kiln_toml_pos pos)
{
        struct node *n = kiln_xcalloc(1, sizeof(*n));

        n->v.type = type;
        n->v.pos = pos;
        if (type == KILN_TOML_TABLE)
                n->v.table = kiln_xcalloc(1, sizeof(*n->v.table));
        return &n->v;
}

static void array_push(struct kiln_toml_array *a, struct kiln_toml_value *v)
{
        /* The capacity is implied by n: 4, then the next power of two. */
        if (a->n == 0 || (a->n >= 4 && (a->n & (a->n - 1)) == 0))
                a->items = kiln_xreallocarray(a->items, a->n ? a->n * 2 : 4, sizeof(*a->items));
        a->items[a->n++] = v;
}

/* ---- characters and UTF-8 ---- */

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_bare(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
               c == '-';
}

/* Characters of a number, bool, inf or nan token. */
static bool is_token(char c)
{
        return is_bare(c) || c == '+' || c == '.';
}

/* Length of the valid UTF-8 sequence at p (1 to 4), 0 if it is invalid:
 * truncated, overlong, a surrogate or past U+10FFFF. */
static size_t utf8_len(const char *p, const char *end)
{
        uint32_t cp;

        return kiln_utf8_decode((const unsigned char *) p, (size_t) (end - p), &cp);
}

/* ---- positions and errors ---- */

static struct kiln_toml_pos pos_of(const struct parser *P, const char *q)
{
        return (struct kiln_toml_pos){ .line = P->line, .col = (unsigned) (q - P->line_start) + 1 };
}

_printf_(4, 5) static int fail_at(struct parser *P, struct kiln_toml_pos pos, int code,
                                  const char *fmt, ...)
{
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return kiln_error_set_at(P->err, code, NULL, pos.line, pos.col, "%s", msg);
}

#define fail(P, q, ...) fail_at((P), pos_of((P), (q)), -EINVAL, __VA_ARGS__)

/* Fails at the cursor with "<expected>, found <what is there>". */
static int fail_unexpected(struct parser *P, const char *expected)
{
        const char *q = P->p;
        unsigned char c;
        size_t n;

        if (q == P->end)
                return fail(P, q, "%s, found end of input", expected);
        c = (unsigned char) *q;
        if (c == '\n' || (c == '\r' && q + 1 < P->end && q[1] == '\n'))
                return fail(P, q, "%s, found end of line", expected);
        if (c == '\r')
                return fail(P, q, "%s, found a carriage return not followed by a line feed",
                            expected);
        if (c < 0x20 || c == 0x7F)
                return fail(P, q, "%s, found control character U+%04X", expected, c);
        if (c >= 0x80) {
                n = utf8_len(q, P->end);
                if (n == 0)
                        return fail(P, q, "invalid utf-8 (byte 0x%02X)", c);
                return fail(P, q, "%s, found '%.*s'", expected, (int) n, q);
        }
        return fail(P, q, "%s, found '%c'", expected, c);
}

struct text {
        char *buf;
        size_t size;
        size_t len;
        bool full;
};

static void text_put(struct text *t, const char *s, size_t n)
{
        if (t->full)
                return;
        /* Keep room for "..." and the NUL. */
        if (t->len + n + 4 > t->size) {
                memcpy(t->buf + t->len, "...", 4);
                t->len += 3;
                t->full = true;
                return;
        }
        memcpy(t->buf + t->len, s, n);
        t->len += n;
        t->buf[t->len] = '\0';
}

/* Writes key parts [0, n) as the user would write the dotted key, quoting
 * and escaping parts that are not bare, shortened to fit buf. */
static const char *format_key(const struct parser *P, size_t n, char *buf, size_t size)
{
        struct text t = { .buf = buf, .size = size };
        size_t i, j;

        buf[0] = '\0';
        for (i = 0; i < n; i++) {
                const char *k = P->keys.data + P->parts[i].off;
                size_t len = P->parts[i].len;
                bool bare = len > 0;

                for (j = 0; j < len && bare; j++)
                        bare = is_bare(k[j]);
                if (i > 0)
                        text_put(&t, ".", 1);
                if (bare) {
                        text_put(&t, k, len);
                        continue;
                }
                text_put(&t, "\"", 1);
                for (j = 0; j < len;) {
                        unsigned char c = (unsigned char) k[j];
                        char esc[8];

                        if (c == '"' || c == '\\') {
                                esc[0] = '\\';
                                esc[1] = (char) c;
                                text_put(&t, esc, 2);
                                j++;
                        } else if (c < 0x20 || c == 0x7F) {
                                (void) snprintf(esc, sizeof(esc), "\\u%04X", c);
                                text_put(&t, esc, 6);
                                j++;
                        } else {
                                /* Decoded keys are valid UTF-8: keep sequences whole. */
                                size_t m = c < 0x80 ? 1 : utf8_len(k + j, k + len);

                                if (m == 0)
                                        m = 1;
                                text_put(&t, k + j, m);
                                j += m;
                        }
                }
                text_put(&t, "\"", 1);
        }
        return buf;
}

#define KEY_TEXT_MAX 160

/* ---- the hash index over all tables ---- */

static uint32_t key_hash(const struct parser *P, const struct kiln_toml_table *t, const char *key,
                         size_t len)
{
        uint64_t h = 0xcbf29ce484222325ull ^ P->seed ^ (uint64_t) (uintptr_t) t;
        size_t i;

        for (i = 0; i < len; i++) {
                h ^= (unsigned char) key[i];
                h *= 0x100000001b3ull;
        }
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        return (uint32_t) h;
}

static struct kiln_toml_entry *index_find(const struct parser *P, struct kiln_toml_table *t,
                                          const char *key, size_t len, uint32_t h)
{
        size_t mask = P->n_slots - 1, i;

        if (P->n_slots == 0)
                return NULL;
        for (i = h & mask;; i = (i + 1) & mask) {
                const struct slot *s = &P->slots[i];
                struct kiln_toml_entry *e;

                if (!s->table)
                        return NULL;
                if (s->table != t || s->hash != h)
                        continue;
                e = &t->entries[s->idx];
                if (e->key_len == len && memcmp(e->key, key, len) == 0)
                        return e;
        }
}

static void index_insert(struct slot *slots, size_t n_slots, struct slot s)
{
        size_t mask = n_slots - 1, i;

        for (i = s.hash & mask; slots[i].table; i = (i + 1) & mask)
                ;
        slots[i] = s;
}

static void index_add(struct parser *P, const struct kiln_toml_table *t, uint32_t h, size_t idx)
{
        if ((P->n_used + 1) * 2 > P->n_slots) {
                size_t n = P->n_slots ? P->n_slots * 2 : 64, i;
                struct slot *slots = kiln_xcalloc(n, sizeof(*slots));

                for (i = 0; i < P->n_slots; i++)
                        if (P->slots[i].table)
                                index_insert(slots, n, P->slots[i]);
                free(P->slots);
                P->slots = slots;
                P->n_slots = n;
        }
        index_insert(P->slots, P->n_slots,
                     (struct slot){ .table = t, .hash = h, .idx = (uint32_t) idx });
        P->n_used++;
}

/* Appends an entry (taking ownership of v, which may be NULL for now) and
 * returns its index. */
static size_t table_add(struct parser *P, struct kiln_toml_table *t, const char *key, size_t len,
                        uint32_t h, struct kiln_toml_pos key_pos, struct kiln_toml_value *v)
{
        struct kiln_toml_entry *e;

        if (t->n == t->cap) {
                t->cap = t->cap ? t->cap * 2 : 4;
                t->entries = kiln_xreallocarray(t->entries, t->cap, sizeof(*t->entries));
        }
        e = &t->entries[t->n];
        *e = (struct kiln_toml_entry){
                .key = memdup0(key, len),
                .key_len = len,
                .key_pos = key_pos,
                .value = v,
        };
        index_add(P, t, h, t->n);
        return t->n++;
}

/* ---- whitespace, newlines, comments ---- */

static bool at_newline(const struct parser *P)
{
        return P->p < P->end &&
               (*P->p == '\n' || (*P->p == '\r' && P->p + 1 < P->end && P->p[1] == '\n'));
}

/* Consumes the "\n" or "\r\n" at the cursor. */
static void newline(struct parser *P)
{
        if (*P->p == '\r')
                P->p++;
        P->p++;
        P->line++;
        P->line_start = P->p;
}

/* The hot loops below advance a local cursor: stores through a char
 * pointer may alias P->p, which would keep it out of a register. */

static void skip_ws(struct parser *P)
{
        const char *q = P->p, *end = P->end;

        while (q < end && (*q == ' ' || *q == '\t'))
                q++;
        P->p = q;
}

/* Skips the comment at the cursor, up to (not including) the end of line. */
static int skip_comment(struct parser *P)
{
        P->p++;
        while (P->p < P->end) {
                const char *q = P->p, *end = P->end;
                unsigned char c;
                size_t n;

                /* printable ASCII (0x20-0x7E) or tab */
                while (q < end && ((unsigned char) (*q - 0x20) < 0x5F || *q == '\t'))
                        q++;
                P->p = q;
                if (q == end)
                        return 0;
                c = (unsigned char) *q;
                if (c == '\n')
                        return 0;
                if (c == '\r') {
                        if (P->p + 1 < P->end && P->p[1] == '\n')
                                return 0;
                        return fail(P, P->p,
                                    "carriage return not followed by a line feed in comment");
                }
                if (c >= 0x80) {
                        n = utf8_len(P->p, P->end);
                        if (n == 0)
                                return fail(P, P->p, "invalid utf-8 in comment (byte 0x%02X)", c);
                        P->p += n;
                        continue;
                }
                return fail(P, P->p, "control character U+%04X is not allowed in a comment", c);
        }
        return 0;
}

/* Skips whitespace, newlines and comments (inside arrays). */
static int skip_blank(struct parser *P)
{
        int r;

        for (;;) {
                skip_ws(P);
                if (P->p == P->end)
                        return 0;
                if (*P->p == '#') {
                        r = skip_comment(P);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (!at_newline(P))
                        return 0;
                newline(P);
        }
}

/* After a key/value pair or a header: optional comment, then end of line. */
static int end_line(struct parser *P, const char *after)
{
        char expected[64];
        int r;

        skip_ws(P);
        if (P->p < P->end && *P->p == '#') {
                r = skip_comment(P);
                if (r < 0)
                        return r;
        }
        if (P->p == P->end)
                return 0;
        if (at_newline(P)) {
                newline(P);
                return 0;
        }
        if (after)
                (void) snprintf(expected, sizeof(expected), "expected end of line after %s", after);
        else
                (void) snprintf(expected, sizeof(expected), "expected end of line");
        return fail_unexpected(P, expected);
}

/* ---- strings ---- */

static int put(struct parser *P, struct kiln_buf *b, const char *s, size_t n,
               struct kiln_toml_pos start)
{
        if (kiln_buf_append(b, s, n) < 0)
                return fail_at(P, start, -E2BIG, "%s longer than %u bytes",
                               b == &P->keys ? "key" : "string", KILN_LIMIT_TOML_STRING);
        return 0;
}

/* The escape at the cursor (a backslash) inside a basic string. */
static int parse_escape(struct parser *P, struct kiln_buf *b, bool multiline,
                        struct kiln_toml_pos start)
{
        const char *bs = P->p;
        char out[4];
        unsigned char c;
        uint32_t cp = 0;
        size_t n, i;

        P->p++;
        if (P->p == P->end)
                return fail_at(P, start, -EINVAL, "unterminated string");
        c = (unsigned char) *P->p;
        switch (c) {
        case 'b':
                out[0] = '\b';
                break;
        case 't':
                out[0] = '\t';
                break;
        case 'n':
                out[0] = '\n';
                break;
        case 'f':
                out[0] = '\f';
                break;
        case 'r':
                out[0] = '\r';
                break;
        case '"':
                out[0] = '"';
                break;
        case '\\':
                out[0] = '\\';
                break;
        case 'u':
        case 'U':
                n = c == 'u' ? 4 : 8;
                for (i = 0; i < n; i++) {
                        const char *h = P->p + 1 + i;
                        int d = h < P->end ? ascii_hex_value(*h) : -1;

                        if (d < 0)
                                return fail(P, bs,
                                            "invalid escape '\\%c': expected %zu hexadecimal "
                                            "digits",
                                            c, n);
                        cp = (cp << 4) | (uint32_t) d;
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                        return fail(P, bs, "escape '%.*s' is not a unicode scalar value",
                                    (int) n + 2, bs);
                P->p += 1 + n;
                return put(P, b, out, kiln_utf8_encode(cp, out), start);
        default:
                if (multiline && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
                        /* Line-ending backslash: trims up to the next non-blank. */
                        skip_ws(P);
                        if (!at_newline(P))
                                return fail(P, bs,
                                            "invalid escape: a '\\' followed by whitespace must "
                                            "end the line");
                        for (;;) {
                                skip_ws(P);
                                if (!at_newline(P))
                                        return 0;
                                newline(P);
                        }
                }
                if (c == '\n' || c == '\r')
                        return fail(P, bs,
                                    "invalid escape: '\\' at the end of the line (only "
                                    "multi-line strings may continue lines)");
                if (c == '\t')
                        return fail(P, bs, "invalid escape: '\\' followed by a tab");
                if (c >= 0x20 && c < 0x7F)
                        return fail(P, bs, "invalid escape '\\%c'", c);
                return fail(P, bs, "invalid escape: '\\' followed by byte 0x%02X", c);
        }
        P->p++;
        return put(P, b, out, 1, start);
}

static bool basic_plain(unsigned char c)
{
        return c == '\t' || (c >= 0x20 && c < 0x7F && c != '"' && c != '\\');
}

static bool literal_plain(unsigned char c)
{
        return c == '\t' || (c >= 0x20 && c < 0x7F && c != '\'');
}

/* Parses the string (any of the four forms) at the cursor and appends its
 * decoded text to b. */
static int parse_string(struct parser *P, struct kiln_buf *b, bool allow_multiline)
{
        const char *s = P->p;
        struct kiln_toml_pos start = pos_of(P, s);
        char quote = *s;
        bool basic = quote == '"';
        bool multiline = P->end - s >= 3 && s[1] == quote && s[2] == quote;
        int r;

        if (multiline && !allow_multiline)
                return fail(P, s, "a multi-line string cannot be a key");
        P->p += multiline ? 3 : 1;
        /* A newline right after the opening delimiter is not part of the string. */
        if (multiline && at_newline(P))
                newline(P);

        for (;;) {
                const char *run = P->p, *q = P->p, *end = P->end;
                unsigned char c;

                while (q < end) {
                        c = (unsigned char) *q;
                        if (basic ? basic_plain(c) : literal_plain(c))
                                q++;
                        else if (c >= 0x80) {
                                size_t n = utf8_len(q, end);

                                if (n == 0)
                                        break;
                                q += n;
                        } else
                                break;
                }
                P->p = q;
                if (P->p > run) {
                        r = put(P, b, run, (size_t) (P->p - run), start);
                        if (r < 0)
                                return r;
                }
                if (P->p == P->end)
                        return fail_at(P, start, -EINVAL, "unterminated string");

                c = (unsigned char) *P->p;
                if (c == (unsigned char) quote) {
                        size_t n = 1;

                        if (!multiline) {
                                P->p++;
                                return 0;
                        }
                        while (n < 5 && P->p + n < P->end && P->p[n] == quote)
                                n++;
                        if (n < 3) {
                                r = put(P, b, P->p, n, start);
                                if (r < 0)
                                        return r;
                                P->p += n;
                                continue;
                        }
                        /* Up to two quotes right before the closing delimiter
                         * belong to the string. */
                        r = put(P, b, P->p, n - 3, start);
                        if (r < 0)
                                return r;
                        P->p += n;
                        return 0;
                }
                if (c == '\\' && basic) {
                        r = parse_escape(P, b, multiline, start);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (at_newline(P)) {
                        if (!multiline)
                                return fail_at(P, start, -EINVAL,
                                               "unterminated string (end of line before the "
                                               "closing quote)");
                        /* CRLF is decoded as LF. */
                        r = put(P, b, "\n", 1, start);
                        if (r < 0)
                                return r;
                        newline(P);
                        continue;
                }
                if (c >= 0x80)
                        return fail(P, P->p, "invalid utf-8 in string (byte 0x%02X)", c);
                if (c == '\r')
                        return fail(P, P->p,
                                    "carriage return not followed by a line feed in string");
                return fail(P, P->p, "control character U+%04X is not allowed in a string%s", c,
                            basic ? " (use an escape)" : "");
        }
}

/* ---- keys ---- */

/* Parses a (possibly dotted) key at the cursor into P->parts, and skips the
 * whitespace after it. */
static int parse_key(struct parser *P)
{
        int r;

        kiln_buf_reset(&P->keys);
        P->n_parts = 0;
        for (;;) {
                struct key_part *kp;

                skip_ws(P);
                if (P->n_parts == ELEMENTSOF(P->parts))
                        return fail_at(P, pos_of(P, P->p), -E2BIG, "key has more than %d parts",
                                       KILN_LIMIT_TOML_DEPTH);
                kp = &P->parts[P->n_parts];
                kp->pos = pos_of(P, P->p);
                kp->at = (size_t) (P->p - P->begin);
                kp->off = P->keys.len;
                if (P->p < P->end && (*P->p == '"' || *P->p == '\'')) {
                        r = parse_string(P, &P->keys, false);
                } else {
                        const char *s = P->p;

                        const char *q = s;

                        while (q < P->end && is_bare(*q))
                                q++;
                        P->p = q;
                        if (P->p == s)
                                return fail_unexpected(P, "expected a key");
                        r = put(P, &P->keys, s, (size_t) (P->p - s), kp->pos);
                }
                if (r < 0)
                        return r;
                kp->len = P->keys.len - kp->off;
                r = put(P, &P->keys, "", 1, kp->pos);
                if (r < 0)
                        return r;
                P->n_parts++;
                skip_ws(P);
                if (P->p == P->end || *P->p != '.')
                        return 0;
                P->p++;
        }
}

static struct kiln_toml_entry *part_find(struct parser *P, struct kiln_toml_value *t, size_t i,
                                         uint32_t *ret_hash)
{
        const char *k = P->keys.data + P->parts[i].off;
        size_t len = P->parts[i].len;

        *ret_hash = key_hash(P, t->table, k, len);
        return index_find(P, t->table, k, len, *ret_hash);
}

static struct kiln_toml_value *part_add(struct parser *P, struct kiln_toml_value *t, size_t i,
                                        uint32_t h, struct kiln_toml_value *v, size_t *ret_idx)
{
        size_t idx = table_add(P, t->table, P->keys.data + P->parts[i].off, P->parts[i].len, h,
                               P->parts[i].pos, v);

        if (ret_idx)
                *ret_idx = idx;
        return v;
}

static int fail_depth(struct parser *P, struct kiln_toml_pos pos)
{
        return fail_at(P, pos, -E2BIG, "nesting deeper than %d levels", KILN_LIMIT_TOML_DEPTH);
}

/* ---- scalars ---- */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
        c_locale = newlocale(LC_ALL_MASK, "C", (locale_t) 0);
}

/* Consumes digits of base with single underscores between them; returns
 * the number of digits, or -1 with *bad at a misplaced underscore. */
static int scan_digits(const char **p, const char *end, int base, const char **bad)
{
        const char *q = *p;
        int n = 0;

        for (; q < end; q++) {
                int d = ascii_hex_value(*q);

                if (*q == '_') {
                        if (n == 0 || q + 1 == end || ascii_hex_value(q[1]) < 0 ||
                            ascii_hex_value(q[1]) >= base) {
                                *bad = q;
                                return -1;
                        }
                        continue;
                }
                if (d < 0 || d >= base)
                        break;
                n++;
        }
        *p = q;
        return n;
}

static int parse_float(struct parser *P, const char *s, const char *e, struct kiln_toml_pos pos,
                       struct kiln_toml_value **ret)
{
        _cleanup_free_ char *heap = NULL;
        const char *q = s, *int_start, *bad = NULL;
        char stack[128], *buf, *endp;
        struct kiln_toml_value *v;
        double d;
        size_t n = 0;
        int nd;

        if (*q == '+' || *q == '-')
                q++;
        int_start = q;
        nd = scan_digits(&q, e, 10, &bad);
        if (nd < 0)
                return fail(P, bad, "invalid float '%.*s': '_' must be between digits",
                            (int) (e - s), s);
        if (nd == 0)
                return fail(P, s, "invalid float '%.*s': expected digits before '.'", (int) (e - s),
                            s);
        if (*int_start == '0' && nd > 1)
                return fail(P, s, "invalid float '%.*s': leading zeros are not allowed",
                            (int) (e - s), s);
        if (q < e && *q == '.') {
                q++;
                nd = scan_digits(&q, e, 10, &bad);
                if (nd < 0)
                        return fail(P, bad, "invalid float '%.*s': '_' must be between digits",
                                    (int) (e - s), s);
                if (nd == 0)
                        return fail(P, q, "invalid float '%.*s': expected digits after '.'",
                                    (int) (e - s), s);
        }
        if (q < e && (*q == 'e' || *q == 'E')) {
                q++;
                if (q < e && (*q == '+' || *q == '-'))
                        q++;
                nd = scan_digits(&q, e, 10, &bad);
                if (nd < 0)
                        return fail(P, bad, "invalid float '%.*s': '_' must be between digits",
                                    (int) (e - s), s);
                if (nd == 0)
                        return fail(P, q, "invalid float '%.*s': expected digits in the exponent",
                                    (int) (e - s), s);
        }
        if (q != e)
                return fail(P, q, "invalid float '%.*s'", (int) (e - s), s);

        buf = (size_t) (e - s) < sizeof(stack) ? stack
                                               : (heap = kiln_xmalloc((size_t) (e - s) + 1));
        for (q = s; q < e; q++)
                if (*q != '_')
                        buf[n++] = *q;
        buf[n] = '\0';
        (void) pthread_once(&c_locale_once, c_locale_init);
        errno = 0;
        d = c_locale ? strtod_l(buf, &endp, c_locale) : strtod(buf, &endp);
        if (endp != buf + n)
                return fail(P, s, "invalid float '%.*s'", (int) (e - s), s);
        if (errno == ERANGE && isinf(d))
                return fail(P, s, "float '%.*s' is out of range", (int) (e - s), s);

        v = value_new(KILN_TOML_FLOAT, pos);
        v->flt = d;
        *ret = v;
        P->p = e;
        return 0;
}

static int parse_number(struct parser *P, const char *s, const char *e, struct kiln_toml_pos pos,
                        struct kiln_toml_value **ret)
{
        const char *q = s, *digits, *bad = NULL;
        const char *kind = "integer";
        struct kiln_toml_value *v;
        uint64_t acc = 0, limit;
        bool neg = false, sign = false;
        int base = 10, nd;

        if (*q == '+' || *q == '-') {
                neg = *q == '-';
                sign = true;
                q++;
        }
        if (e - q >= 2 && q[0] == '0' && (q[1] == 'x' || q[1] == 'o' || q[1] == 'b')) {
                base = q[1] == 'x' ? 16 : q[1] == 'o' ? 8 : 2;
                kind = base == 16  ? "hexadecimal integer"
                       : base == 8 ? "octal integer"
                                   : "binary integer";
                if (sign)
                        return fail(P, s, "invalid %s '%.*s': a sign is not allowed", kind,
                                    (int) (e - s), s);
                q += 2;
        } else if (memchr(q, '.', (size_t) (e - q)) || memchr(q, 'e', (size_t) (e - q)) ||
                   memchr(q, 'E', (size_t) (e - q)))
                return parse_float(P, s, e, pos, ret);

        /* Date-times are recognised by their first digits; what looks like
         * a date-time but is not one would otherwise read "invalid integer". */
        if (base == 10 && memchr(q, '-', (size_t) (e - q)))
                return fail(P, s, "invalid date '%.*s': expected YYYY-MM-DD", (int) (e - s), s);
        if (base == 10 && e < P->end && *e == ':')
                return fail(P, s, "invalid time: expected HH:MM:SS");

        digits = q;
        nd = scan_digits(&q, e, base, &bad);
        if (nd < 0)
                return fail(P, bad, "invalid %s '%.*s': '_' must be between digits", kind,
                            (int) (e - s), s);
        if (nd == 0 || q != e)
                return fail(P, nd == 0 ? s : q, "invalid %s '%.*s'", kind, (int) (e - s), s);
        if (base == 10 && *digits == '0' && nd > 1)
                return fail(P, s, "invalid integer '%.*s': leading zeros are not allowed",
                            (int) (e - s), s);

        limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
        for (q = digits; q < e; q++) {
                uint64_t d;

                if (*q == '_')
                        continue;
                d = (uint64_t) ascii_hex_value(*q);
                if (acc > (limit - d) / (uint64_t) base)
                        return fail(P, s, "integer '%.*s' does not fit in 64 bits", (int) (e - s),
                                    s);
                acc = acc * (uint64_t) base + d;
        }

        v = value_new(KILN_TOML_INTEGER, pos);
        if (!neg)
                v->integer = (int64_t) acc;
        else if (acc == (uint64_t) INT64_MAX + 1)
                v->integer = INT64_MIN;
        else
                v->integer = -(int64_t) acc;
        *ret = v;
        P->p = e;
        return 0;
}

static bool digits_at(const char *s, const char *end, size_t n)
{
        size_t i;

        if ((size_t) (end - s) < n)
                return false;
        for (i = 0; i < n; i++)
                if (!is_digit(s[i]))
                        return false;
        return true;
}

static int two_digits(const char *s)
{
        return (s[0] - '0') * 10 + (s[1] - '0');
}

static int days_in_month(int year, int month)
{
        static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

        return month == 2 && leap ? 29 : days[month - 1];
}

/* HH:MM:SS[.fraction] at *q, appended to P->str. */
static int parse_time(struct parser *P, const char **q, struct kiln_toml_pos start)
{
        const char *s = *q, *f;
        int r;

        if (!digits_at(s, P->end, 2) || s + 2 >= P->end || s[2] != ':' ||
            !digits_at(s + 3, P->end, 2))
                return fail(P, s, "invalid time: expected HH:MM:SS");
        if (s + 5 >= P->end || s[5] != ':' || !digits_at(s + 6, P->end, 2))
                return fail(P, s, "invalid time: expected HH:MM:SS (seconds are required)");
        if (two_digits(s) > 23)
                return fail(P, s, "invalid hour %.2s (expected 00 to 23)", s);
        if (two_digits(s + 3) > 59)
                return fail(P, s + 3, "invalid minute %.2s (expected 00 to 59)", s + 3);
        if (two_digits(s + 6) > 60)
                return fail(P, s + 6, "invalid second %.2s (expected 00 to 60)", s + 6);
        f = s + 8;
        if (f < P->end && *f == '.') {
                f++;
                if (f == P->end || !is_digit(*f))
                        return fail(P, f - 1, "invalid time: expected digits after '.'");
                while (f < P->end && is_digit(*f))
                        f++;
        }
        r = put(P, &P->str, s, (size_t) (f - s), start);
        if (r < 0)
                return r;
        *q = f;
        return 0;
}

static bool is_value_end(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '#' || c == ',' ||
               c == ']' || c == '}';
}

static int parse_datetime(struct parser *P, struct kiln_toml_pos pos, struct kiln_toml_value **ret)
{
        const char *s = P->p, *q = s;
        enum kiln_toml_type type;
        struct kiln_toml_value *v;
        int r;

        kiln_buf_reset(&P->str);
        if (digits_at(q, P->end, 4) && q + 4 < P->end && q[4] == '-') {
                int year, month, day;

                if (!digits_at(q + 5, P->end, 2) || q + 7 >= P->end || q[7] != '-' ||
                    !digits_at(q + 8, P->end, 2))
                        return fail(P, s, "invalid date: expected YYYY-MM-DD");
                year = two_digits(q) * 100 + two_digits(q + 2);
                month = two_digits(q + 5);
                day = two_digits(q + 8);
                if (month < 1 || month > 12)
                        return fail(P, q + 5, "invalid month %02d (expected 01 to 12)", month);
                if (day < 1 || day > days_in_month(year, month))
                        return fail(P, q + 8, "invalid day %02d (%04d-%02d has %d days)", day, year,
                                    month, days_in_month(year, month));
                r = put(P, &P->str, q, 10, pos);
                if (r < 0)
                        return r;
                q += 10;
                type = KILN_TOML_DATE_LOCAL;
                if (q < P->end &&
                    (*q == 'T' || *q == 't' || (*q == ' ' && q + 1 < P->end && is_digit(q[1])))) {
                        q++;
                        r = put(P, &P->str, "T", 1, pos);
                        if (r < 0)
                                return r;
                        r = parse_time(P, &q, pos);
                        if (r < 0)
                                return r;
                        type = KILN_TOML_DATETIME_LOCAL;
                        if (q < P->end && (*q == 'Z' || *q == 'z')) {
                                r = put(P, &P->str, "Z", 1, pos);
                                if (r < 0)
                                        return r;
                                q++;
                                type = KILN_TOML_DATETIME;
                        } else if (q < P->end && (*q == '+' || *q == '-')) {
                                if (!digits_at(q + 1, P->end, 2) || q + 3 >= P->end ||
                                    q[3] != ':' || !digits_at(q + 4, P->end, 2))
                                        return fail(P, q, "invalid time offset: expected %cHH:MM",
                                                    *q);
                                if (two_digits(q + 1) > 23)
                                        return fail(P, q + 1,
                                                    "invalid offset hour %.2s (expected 00 to 23)",
                                                    q + 1);
                                if (two_digits(q + 4) > 59)
                                        return fail(P, q + 4,
                                                    "invalid offset minute %.2s (expected 00 to "
                                                    "59)",
                                                    q + 4);
                                r = put(P, &P->str, q, 6, pos);
                                if (r < 0)
                                        return r;
                                q += 6;
                                type = KILN_TOML_DATETIME;
                        }
                }
        } else {
                r = parse_time(P, &q, pos);
                if (r < 0)
                        return r;
                type = KILN_TOML_TIME_LOCAL;
        }
        P->p = q;
        if (q < P->end && !is_value_end(*q))
                return fail_unexpected(P, "expected end of date-time");

        v = value_new(type, pos);
        v->str.len = P->str.len;
        v->str.s = memdup0(P->str.data, P->str.len);
        *ret = v;
        return 0;
}

/* ---- values ---- */

static int parse_value(struct parser *P, unsigned depth, struct kiln_toml_value **ret);

static int parse_keyval(struct parser *P, struct kiln_toml_value *table, unsigned depth);

static int parse_array(struct parser *P, unsigned depth, struct kiln_toml_value **ret)
{
        struct kiln_toml_pos pos = pos_of(P, P->p);
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *v = NULL;
        int r;

        if (depth > KILN_LIMIT_TOML_DEPTH)
                return fail_depth(P, pos);
        v = value_new(KILN_TOML_ARRAY, pos);
        node_of(v)->flags |= NODE_INLINE;
        P->p++;
        for (;;) {
                struct kiln_toml_value *item = NULL;

                r = skip_blank(P);
                if (r < 0)
                        return r;
                if (P->p < P->end && *P->p == ']')
                        break;
                r = parse_value(P, depth + 1, &item);
                if (r < 0)
                        return r;
                array_push(&v->array, item);
                r = skip_blank(P);
                if (r < 0)
                        return r;
                if (P->p < P->end && *P->p == ',') {
                        P->p++;
                        continue;
                }
                if (P->p < P->end && *P->p == ']')
                        break;
                return fail_unexpected(P, "expected ',' or ']' after an array element");
        }
        P->p++;
        *ret = TAKE_PTR(v);
        return 0;
}

static int parse_inline_table(struct parser *P, unsigned depth, struct kiln_toml_value **ret)
{
        struct kiln_toml_pos pos = pos_of(P, P->p);
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *v = NULL;
        unsigned saved_section = P->section;
        int r;

        if (depth > KILN_LIMIT_TOML_DEPTH)
                return fail_depth(P, pos);
        v = value_new(KILN_TOML_TABLE, pos);
        node_of(v)->flags |= NODE_INLINE;
        P->section = ++P->n_sections;
        P->p++;
        skip_ws(P);
        if (P->p < P->end && *P->p == '}') {
                P->p++;
                goto done;
        }
        for (;;) {
                r = parse_keyval(P, v, depth);
                if (r < 0)
                        return r;
                skip_ws(P);
                if (P->p < P->end && *P->p == ',') {
                        P->p++;
                        skip_ws(P);
                        if (P->p < P->end && *P->p == '}')
                                return fail(P, P->p,
                                            "trailing comma is not allowed in an inline table");
                        continue;
                }
                if (P->p < P->end && *P->p == '}') {
                        P->p++;
                        break;
                }
                if (at_newline(P))
                        return fail(P, P->p,
                                    "expected ',' or '}' in inline table, found end of line "
                                    "(inline tables must be on one line)");
                return fail_unexpected(P, "expected ',' or '}' in inline table");
        }
done:
        P->section = saved_section;
        *ret = TAKE_PTR(v);
        return 0;
}

/* Parses the value at the cursor; depth is the nesting depth it will have. */
static int parse_value_literal(struct parser *P, unsigned depth, struct kiln_toml_value **ret)
{
        const char *s = P->p, *e;
        struct kiln_toml_pos pos = pos_of(P, s);
        struct kiln_toml_value *v;
        size_t n;
        int r;

        if (s == P->end)
                return fail_unexpected(P, "expected a value");
        switch (*s) {
        case '"':
        case '\'':
                kiln_buf_reset(&P->str);
                r = parse_string(P, &P->str, true);
                if (r < 0)
                        return r;
                v = value_new(KILN_TOML_STRING, pos);
                v->str.len = P->str.len;
                v->str.s = memdup0(P->str.data, P->str.len);
                *ret = v;
                return 0;
        case '[':
                return parse_array(P, depth, ret);
        case '{':
                return parse_inline_table(P, depth, ret);
        default:
                break;
        }

        if ((digits_at(s, P->end, 4) && s + 4 < P->end && s[4] == '-') ||
            (digits_at(s, P->end, 2) && s + 2 < P->end && s[2] == ':'))
                return parse_datetime(P, pos, ret);

        for (e = s; e < P->end && is_token(*e); e++)
                ;
        n = (size_t) (e - s);
        if (n == 0)
                return fail_unexpected(P, "expected a value");
        if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0)) {
                v = value_new(KILN_TOML_BOOL, pos);
                v->boolean = n == 4;
                *ret = v;
                P->p = e;
                return 0;
        }
        if (n >= 3 && n <= 4) {
                const char *w = s + n - 3;

                if ((n == 3 || *s == '+' || *s == '-') &&
                    (memcmp(w, "inf", 3) == 0 || memcmp(w, "nan", 3) == 0)) {
                        v = value_new(KILN_TOML_FLOAT, pos);
                        if (*w == 'i')
                                v->flt = *s == '-' ? -INFINITY : INFINITY;
                        else
                                v->flt = *s == '-' ? -NAN : NAN;
                        *ret = v;
                        P->p = e;
                        return 0;
                }
        }
        if (is_digit(*s) || ((*s == '+' || *s == '-') && n > 1 && is_digit(s[1])))
                return parse_number(P, s, e, pos, ret);
        if (n > 40)
                return fail(P, s, "invalid value '%.40s...'", s);
        return fail(P, s, "invalid value '%.*s'%s", (int) n, s,
                    (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
                            ? " (strings must be quoted)"
                            : "");
}

/* parse_value_literal, and the span of the literal in the input. */
static int parse_value(struct parser *P, unsigned depth, struct kiln_toml_value **ret)
{
        const char *s = P->p;
        int r;

        r = parse_value_literal(P, depth, ret);
        if (r < 0)
                return r;
        (*ret)->offset = (size_t) (s - P->begin);
        (*ret)->length = (size_t) (P->p - s);
        return 0;
}

/* Parses "key = value" at the cursor into table (at nesting depth). */
static int parse_keyval(struct parser *P, struct kiln_toml_value *table, unsigned depth)
{
        char key[KEY_TEXT_MAX];
        struct kiln_toml_value *t = table, *v = NULL;
        struct kiln_toml_entry *e;
        size_t i, idx;
        uint32_t h;
        int r;

        r = parse_key(P);
        if (r < 0)
                return r;
        if (P->p == P->end || *P->p != '=')
                return fail_unexpected(P, "expected '=' after key");
        P->p++;
        skip_ws(P);

        for (i = 0; i + 1 < P->n_parts; i++) {
                struct kiln_toml_pos kpos = P->parts[i].pos;
                struct node *n;

                if (++depth > KILN_LIMIT_TOML_DEPTH)
                        return fail_depth(P, kpos);
                e = part_find(P, t, i, &h);
                if (!e) {
                        struct kiln_toml_value *sub = value_new(KILN_TOML_TABLE, kpos);

                        node_of(sub)->flags = NODE_DOTTED;
                        node_of(sub)->section = P->section;
                        sub->offset = P->parts[i].at;
                        t = part_add(P, t, i, h, sub, NULL);
                        continue;
                }
                v = e->value;
                if (!v || v->type != KILN_TOML_TABLE)
                        return fail_at(P, kpos, -EINVAL,
                                       "cannot add keys to '%s': it is %s (defined at %u:%u)",
                                       format_key(P, i + 1, key, sizeof(key)),
                                       v ? type_with_article(v) : "a value", e->key_pos.line,
                                       e->key_pos.col);
                n = node_of(v);
                if (n->flags & NODE_INLINE)
                        return fail_at(P, kpos, -EINVAL,
                                       "cannot extend inline table '%s' (defined at %u:%u)",
                                       format_key(P, i + 1, key, sizeof(key)), v->pos.line,
                                       v->pos.col);
                if ((n->flags & NODE_DEFINED) ||
                    ((n->flags & NODE_DOTTED) && n->section != P->section))
                        return fail_at(P, kpos, -EINVAL,
                                       "cannot extend table '%s' (defined at %u:%u) with dotted "
                                       "keys here",
                                       format_key(P, i + 1, key, sizeof(key)), v->pos.line,
                                       v->pos.col);
                if (!(n->flags & NODE_DOTTED)) {
                        /* Implicit parent of an earlier [a.b.c]: from now on it
                         * belongs to this section's dotted keys. */
                        n->flags |= NODE_DOTTED;
                        n->section = P->section;
                }
                t = v;
        }

        e = part_find(P, t, i, &h);
        if (e)
                return fail_at(
                        P, P->parts[i].pos, -EINVAL, "duplicate key '%s' (first defined at %u:%u)",
                        format_key(P, i + 1, key, sizeof(key)), e->key_pos.line, e->key_pos.col);
        (void) part_add(P, t, i, h, NULL, &idx);

        v = NULL;
        r = parse_value(P, depth + 1, &v);
        if (r < 0)
                return r;
        t->table->entries[idx].value = v;
        return 0;
}

/* Parses a [header] or [[header]] and makes *cur the table it opens. */
static int parse_header(struct parser *P, struct kiln_toml_value *root,
                        struct kiln_toml_value **cur, unsigned *cur_depth)
{
        char key[KEY_TEXT_MAX];
        const char *h = P->p;
        struct kiln_toml_pos hpos = pos_of(P, h);
        bool aot = P->end - h >= 2 && h[1] == '[';
        struct kiln_toml_value *t = root, *v, *sub;
        struct kiln_toml_entry *e;
        unsigned depth = 0;
        uint32_t hash;
        size_t i;
        int r;

        P->p += aot ? 2 : 1;
        r = parse_key(P);
        if (r < 0)
                return r;
        if (P->p == P->end || *P->p != ']')
                return fail_unexpected(P, aot ? "expected ']]' after table name"
                                              : "expected ']' after table name");
        P->p++;
        if (aot) {
                if (P->p == P->end || *P->p != ']')
                        return fail_unexpected(P, "expected ']]' after table name");
                P->p++;
        }
        P->section = ++P->n_sections;

        for (i = 0; i + 1 < P->n_parts; i++) {
                struct kiln_toml_pos kpos = P->parts[i].pos;

                if (++depth > KILN_LIMIT_TOML_DEPTH)
                        return fail_depth(P, kpos);
                e = part_find(P, t, i, &hash);
                if (!e) {
                        /* Implicit: a later header may still define it. */
                        t = part_add(P, t, i, hash, value_new(KILN_TOML_TABLE, hpos), NULL);
                        t->offset = (size_t) (h - P->begin);
                        continue;
                }
                v = e->value;
                if (v && v->type == KILN_TOML_ARRAY && (node_of(v)->flags & NODE_AOT)) {
                        if (++depth > KILN_LIMIT_TOML_DEPTH)
                                return fail_depth(P, kpos);
                        t = v->array.items[v->array.n - 1];
                        continue;
                }
                if (!v || v->type != KILN_TOML_TABLE)
                        return fail_at(P, kpos, -EINVAL,
                                       "cannot add a table to '%s': it is %s (defined at %u:%u)",
                                       format_key(P, i + 1, key, sizeof(key)),
                                       v ? type_with_article(v) : "a value", e->key_pos.line,
                                       e->key_pos.col);
                if (node_of(v)->flags & NODE_INLINE)
                        return fail_at(P, kpos, -EINVAL,
                                       "cannot extend inline table '%s' (defined at %u:%u)",
                                       format_key(P, i + 1, key, sizeof(key)), v->pos.line,
                                       v->pos.col);
                t = v;
        }

        if (++depth + (aot ? 1 : 0) > KILN_LIMIT_TOML_DEPTH)
                return fail_depth(P, P->parts[i].pos);
        e = part_find(P, t, i, &hash);
        if (e)
                /* Only needed for the messages below. */
                format_key(P, P->n_parts, key, sizeof(key));
        v = e ? e->value : NULL;
        if (!aot) {
                if (!e) {
                        sub = value_new(KILN_TOML_TABLE, hpos);
                        sub->offset = (size_t) (h - P->begin);
                        node_of(sub)->flags = NODE_DEFINED;
                        *cur = part_add(P, t, i, hash, sub, NULL);
                        *cur_depth = depth;
                        return 0;
                }
                if (v && v->type == KILN_TOML_TABLE) {
                        struct node *n = node_of(v);

                        if (n->flags & (NODE_DEFINED | NODE_DOTTED | NODE_INLINE))
                                return fail_at(P, hpos, -EINVAL,
                                               "table '%s' already defined at %u:%u", key,
                                               v->pos.line, v->pos.col);
                        /* Created implicitly by an earlier [a.b.c]: defined now. */
                        n->flags |= NODE_DEFINED;
                        v->pos = hpos;
                        v->offset = (size_t) (h - P->begin);
                        e->key_pos = P->parts[i].pos;
                        *cur = v;
                        *cur_depth = depth;
                        return 0;
                }
                if (v && v->type == KILN_TOML_ARRAY && (node_of(v)->flags & NODE_AOT))
                        return fail_at(P, hpos, -EINVAL,
                                       "table '%s' already defined as an array of tables at "
                                       "%u:%u",
                                       key, v->pos.line, v->pos.col);
                return fail_at(P, hpos, -EINVAL, "duplicate key '%s' (first defined at %u:%u)", key,
                               e->key_pos.line, e->key_pos.col);
        }

        if (!e) {
                v = value_new(KILN_TOML_ARRAY, hpos);
                v->offset = (size_t) (h - P->begin);
                node_of(v)->flags = NODE_AOT;
                (void) part_add(P, t, i, hash, v, NULL);
        } else if (!v || v->type != KILN_TOML_ARRAY) {
                if (v && v->type == KILN_TOML_TABLE)
                        return fail_at(P, hpos, -EINVAL, "table '%s' already defined at %u:%u", key,
                                       v->pos.line, v->pos.col);
                return fail_at(P, hpos, -EINVAL, "duplicate key '%s' (first defined at %u:%u)", key,
                               e->key_pos.line, e->key_pos.col);
        } else if (!(node_of(v)->flags & NODE_AOT))
                return fail_at(P, hpos, -EINVAL,
                               "cannot append a table to static array '%s' (defined at %u:%u)", key,
                               e->key_pos.line, e->key_pos.col);
        sub = value_new(KILN_TOML_TABLE, hpos);
        sub->offset = (size_t) (h - P->begin);
        node_of(sub)->flags = NODE_DEFINED;
        array_push(&v->array, sub);
        *cur = sub;
        *cur_depth = depth + 1;
        return 0;
}

static int parse_document(struct parser *P, struct kiln_toml_value *root)
{
        struct kiln_toml_value *cur = root;
        unsigned cur_depth = 0;
        int r;

        for (;;) {
                const char *after = NULL;

                skip_ws(P);
                if (P->p == P->end)
                        return 0;
                switch (*P->p) {
                case '[':
                        r = parse_header(P, root, &cur, &cur_depth);
                        after = "table header";
                        break;
                case '#':
                        r = 0;
                        after = "comment";
                        break;
                case '\n':
                case '\r':
                        r = 0;
                        break;
                default:
                        r = parse_keyval(P, cur, cur_depth);
                        after = "value";
                        break;
                }
                if (r < 0)
                        return r;
                r = end_line(P, after);
                if (r < 0)
                        return r;
        }
}

int kiln_toml_parse(const char *data, size_t len, struct kiln_toml_value **ret,
                    struct kiln_error **err)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        struct parser P = {
                .line = 1,
                .err = err,
                .str = KILN_BUF_INIT(KILN_LIMIT_TOML_STRING),
                .keys = KILN_BUF_INIT(KILN_LIMIT_TOML_STRING),
        };
        int r;

        if (len > KILN_LIMIT_CONFIG_FILE)
                return kiln_error_set_at(err, -E2BIG, NULL, 1, 1,
                                         "document is larger than %u bytes",
                                         KILN_LIMIT_CONFIG_FILE);
        if (!data)
                data = "";
        P.p = P.line_start = P.begin = data;
        P.end = data + len;
        /* Hash seed: varies between runs (ASLR), so no fixed set of keys
         * always collides. */
        P.seed = (uint64_t) (uintptr_t) &P * 0x9E3779B97F4A7C15ull;
        if (P.end - P.p >= 3 && memcmp(P.p, "\xEF\xBB\xBF", 3) == 0) {
                P.p += 3;
                P.line_start = P.p;
        }

        root = value_new(KILN_TOML_TABLE, (struct kiln_toml_pos){ .line = 1, .col = 1 });
        node_of(root)->flags = NODE_DEFINED;
        r = parse_document(&P, root);
        kiln_buf_release(&P.str);
        kiln_buf_release(&P.keys);
        free(P.slots);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(root);
        return 0;
}
