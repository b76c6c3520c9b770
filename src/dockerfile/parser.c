/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dockerfile parser following BuildKit's frontend/dockerfile/parser
 * (parser.go, line_parsers.go, split_command.go, directives.go), including
 * its byte/rune quirks, so the dumps match upstream's test results. Heredoc
 * words are found with a reduced copy of shell.Lex (below), as BuildKit
 * does; Go's JSON decoding and Unicode tables are emulated where they decide
 * the outcome.
 */

#include "dockerfile/parser.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "base/goquote.h"
#include "base/banned.h"
#include "base/macro.h"

struct sb {
        char *p;
        size_t n, cap;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
        if (b->n + n + 1 > b->cap) {
                size_t c = b->cap ? b->cap : 64;

                while (c < b->n + n + 1)
                        c *= 2;
                b->p = kiln_xrealloc(b->p, c);
                b->cap = c;
        }
        if (n)
                memcpy(b->p + b->n, s, n);
        b->n += n;
        b->p[b->n] = '\0';
}

static void sb_rune(struct sb *b, uint32_t r)
{
        char u[4];

        if (r > 0x10ffff || (r >= 0xd800 && r <= 0xdfff))
                r = 0xfffd;
        if (r < 0x80) {
                u[0] = (char) r;
                sb_add(b, u, 1);
        } else if (r < 0x800) {
                u[0] = (char) (0xc0 | (r >> 6));
                u[1] = (char) (0x80 | (r & 0x3f));
                sb_add(b, u, 2);
        } else if (r < 0x10000) {
                u[0] = (char) (0xe0 | (r >> 12));
                u[1] = (char) (0x80 | ((r >> 6) & 0x3f));
                u[2] = (char) (0x80 | (r & 0x3f));
                sb_add(b, u, 3);
        } else {
                u[0] = (char) (0xf0 | (r >> 18));
                u[1] = (char) (0x80 | ((r >> 12) & 0x3f));
                u[2] = (char) (0x80 | ((r >> 6) & 0x3f));
                u[3] = (char) (0x80 | (r & 0x3f));
                sb_add(b, u, 4);
        }
}

static struct kiln_dockerfile_str sb_take(struct sb *b)
{
        struct kiln_dockerfile_str s;

        if (!b->p)
                sb_add(b, "", 0);
        s.s = b->p;
        s.len = b->n;
        *b = (struct sb){ 0 };
        return s;
}

static struct kiln_dockerfile_str str_dup(const char *s, size_t n)
{
        struct sb b = { 0 };

        sb_add(&b, s, n);
        return sb_take(&b);
}

/* Go's utf8.DecodeRune: invalid input decodes as U+FFFD of width 1. */
static uint32_t decode_rune(const unsigned char *s, size_t n, size_t *w)
{
        uint32_t r;
        size_t need, i;

        if (n == 0) {
                *w = 0;
                return 0xfffd;
        }
        *w = 1;
        if (s[0] < 0x80)
                return s[0];
        if (s[0] >= 0xc2 && s[0] <= 0xdf) {
                need = 1;
                r = s[0] & 0x1f;
        } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                need = 2;
                r = s[0] & 0x0f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                need = 3;
                r = s[0] & 0x07;
        } else
                return 0xfffd;
        if (n < need + 1)
                return 0xfffd;
        for (i = 1; i <= need; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0xfffd;
                r = (r << 6) | (s[i] & 0x3f);
        }
        if ((need == 2 && (r < 0x800 || (r >= 0xd800 && r <= 0xdfff))) ||
            (need == 3 && (r < 0x10000 || r > 0x10ffff)))
                return 0xfffd;
        *w = need + 1;
        return r;
}

/* unicode.IsSpace */
static bool rune_is_space(uint32_t r)
{
        switch (r) {
        case '\t':
        case '\n':
        case '\v':
        case '\f':
        case '\r':
        case ' ':
        case 0x85:
        case 0xa0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202f:
        case 0x205f:
        case 0x3000:
                return true;
        default:
                return r >= 0x2000 && r <= 0x200a;
        }
}

/* unicode.IsSpace(rune(byte)), as split_command.go applies it to bytes. */
static bool byte_is_space(unsigned char c)
{
        return rune_is_space(c);
}

/* [\t\v\f\r ] of reWhitespace */
static bool is_ws(char c)
{
        return c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == ' ';
}

static size_t space_prefix(const char *s, size_t n)
{
        size_t i = 0, w;

        while (i < n) {
                uint32_t r = decode_rune((const unsigned char *) s + i, n - i, &w);

                if (!rune_is_space(r) || (r == 0xfffd && w == 1 && (unsigned char) s[i] >= 0x80))
                        break;
                i += w;
        }
        return i;
}

/* strings.TrimSpace */
static void trim_space(const char **s, size_t *n)
{
        size_t p = space_prefix(*s, *n), w;

        *s += p;
        *n -= p;
        while (*n > 0) {
                bool found = false;

                for (w = 1; w <= 3 && w <= *n; w++) {
                        size_t ww;
                        uint32_t r = decode_rune((const unsigned char *) *s + *n - w, w, &ww);

                        if (ww == w && rune_is_space(r) &&
                            !(r == 0xfffd && (unsigned char) (*s)[*n - w] >= 0x80)) {
                                *n -= w;
                                found = true;
                                break;
                        }
                }
                if (!found)
                        break;
        }
}

static struct kiln_dockerfile_node *node_new(const char *s, size_t n)
{
        struct kiln_dockerfile_node *node = kiln_xcalloc(1, sizeof(*node));

        node->value = str_dup(s, n);
        return node;
}

struct kiln_dockerfile_node *kiln_dockerfile_node_free(struct kiln_dockerfile_node *n)
{
        while (n) {
                struct kiln_dockerfile_node *next = n->next;
                size_t i;

                free(n->value.s);
                for (i = 0; i < n->n_flags; i++)
                        free(n->flags[i].s);
                free(n->flags);
                for (i = 0; i < n->n_heredocs; i++)
                        kiln_dockerfile_heredoc_release(&n->heredocs[i]);
                free(n->heredocs);
                free(n->original.s);
                for (i = 0; i < n->n_comments; i++)
                        free(n->comments[i].s);
                free(n->comments);
                for (i = 0; i < n->n_children; i++)
                        kiln_dockerfile_node_free(n->children[i]);
                free(n->children);
                free(n);
                n = next;
        }
        return NULL;
}

static void add_child(struct kiln_dockerfile_node *parent, struct kiln_dockerfile_node *child)
{
        parent->children = kiln_xreallocarray(parent->children, parent->n_children + 1,
                                              sizeof(*parent->children));
        parent->children[parent->n_children++] = child;
}

/* A list under construction. */
struct list {
        struct kiln_dockerfile_node *head, **tail;
};

static void list_add(struct list *l, const char *s, size_t n)
{
        if (!l->tail)
                l->tail = &l->head;
        *l->tail = node_new(s, n);
        l->tail = &(*l->tail)->next;
}

struct pctx {
        char escape;
        const char *msg; /* static error text, or dyn */
        char *dyn;
};

static int fail(struct pctx *c, const char *fmt, ...) _printf_(2, 3);
static int fail(struct pctx *c, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        free(c->dyn);
        c->dyn = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* reWhitespace.Split(s, limit) (limit < 0: all) */
static void split_ws(const char *s, size_t n, int limit, struct list *out)
{
        size_t start = 0, i = 0;
        int parts = 0;

        while (i < n) {
                if (is_ws(s[i]) && (limit < 0 || parts + 1 < limit)) {
                        size_t j = i;

                        while (j < n && is_ws(s[j]))
                                j++;
                        list_add(out, s + start, i - start);
                        parts++;
                        start = i = j;
                        continue;
                }
                i++;
        }
        list_add(out, s + start, n - start);
}

/* parseWords of line_parsers.go */
static void parse_words(struct pctx *c, const char *s, size_t n, struct list *out)
{
        enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
        uint32_t quote = 0, ch = 0;
        bool blank_ok = false;
        size_t pos, w = 0;
        struct sb b = { 0 };
        const unsigned char *u = (const unsigned char *) s;

        for (pos = 0; pos <= n; pos += w) {
                if (pos != n)
                        ch = decode_rune(u + pos, n - pos, &w);
                if (phase == IN_SPACES) {
                        if (pos == n)
                                break;
                        if (rune_is_space(ch))
                                continue;
                        phase = IN_WORD;
                }
                if (pos == n) {
                        if (blank_ok || b.n > 0)
                                list_add(out, b.p ? b.p : "", b.n);
                        break;
                }
                if (phase == IN_WORD) {
                        if (rune_is_space(ch)) {
                                phase = IN_SPACES;
                                if (blank_ok || b.n > 0)
                                        list_add(out, b.p ? b.p : "", b.n);
                                b.n = 0;
                                blank_ok = false;
                                continue;
                        }
                        if (ch == '\'' || ch == '"') {
                                quote = ch;
                                blank_ok = true;
                                phase = IN_QUOTE;
                        }
                        if (ch == (uint32_t) c->escape) {
                                if (pos + w == n)
                                        continue;
                                sb_rune(&b, ch);
                                pos += w;
                                ch = decode_rune(u + pos, n - pos, &w);
                        }
                        sb_rune(&b, ch);
                        continue;
                }
                /* IN_QUOTE */
                if (ch == quote)
                        phase = IN_WORD;
                if (ch == (uint32_t) c->escape && quote != '\'') {
                        if (pos + w == n) {
                                phase = IN_WORD;
                                continue;
                        }
                        pos += w;
                        sb_rune(&b, ch);
                        ch = decode_rune(u + pos, n - pos, &w);
                }
                sb_rune(&b, ch);
        }
        free(b.p);
}

static void add_kv(struct list *l, const char *k, size_t kn, const char *v, size_t vn,
                   const char *sep)
{
        list_add(l, k, kn);
        list_add(l, v, vn);
        list_add(l, sep, strlen(sep));
}

static int parse_name_val(struct pctx *c, const char *s, size_t n, const char *key,
                          struct list *out)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *words = NULL;
        struct list wl = { 0 };
        struct kiln_dockerfile_node *w;

        parse_words(c, s, n, &wl);
        words = wl.head;
        if (!words)
                return 0;
        if (!memchr(words->value.s, '=', words->value.len)) {
                struct list parts = { 0 };
                _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *ph = NULL;

                split_ws(s, n, 2, &parts);
                ph = parts.head;
                if (!ph->next)
                        return fail(c, "%s must have two arguments", key);
                add_kv(out, ph->value.s, ph->value.len, ph->next->value.s, ph->next->value.len, "");
                return 0;
        }
        for (w = words; w; w = w->next) {
                const char *eq = memchr(w->value.s, '=', w->value.len);

                if (!eq)
                        return fail(c,
                                    "Syntax error - can't find = in \"%s\". Must be of the "
                                    "form: name=value",
                                    w->value.s);
                add_kv(out, w->value.s, (size_t) (eq - w->value.s), eq + 1,
                       w->value.len - (size_t) (eq - w->value.s) - 1, "=");
        }
        return 0;
}

static bool is_hex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The value of "\\uXXXX" at s (n bytes available), or -1. */
static long u4(const char *s, size_t n)
{
        char h[5];

        if (n < 6 || s[0] != '\\' || s[1] != 'u' || !is_hex(s[2]) || !is_hex(s[3]) ||
            !is_hex(s[4]) || !is_hex(s[5]))
                return -1;
        memcpy(h, s + 2, 4);
        h[4] = '\0';
        return strtol(h, NULL, 16);
}

/* Rewrites JSON text so that jansson accepts what Go's encoding/json
 * accepts: invalid UTF-8 becomes U+FFFD, and so does a "\\u" escape of a
 * lone surrogate inside a string. */
static struct kiln_dockerfile_str json_sanitize(const char *s, size_t n)
{
        struct sb b = { 0 };
        bool in_str = false;
        size_t i = 0, w;

        while (i < n) {
                unsigned char ch = (unsigned char) s[i];

                if (ch >= 0x80) {
                        uint32_t r = decode_rune((const unsigned char *) s + i, n - i, &w);

                        if (r == 0xfffd && w == 1)
                                sb_add(&b, "\xef\xbf\xbd", 3);
                        else
                                sb_add(&b, s + i, w);
                        i += w;
                        continue;
                }
                if (!in_str) {
                        in_str = ch == '"';
                        sb_add(&b, s + i, 1);
                        i++;
                        continue;
                }
                if (ch == '"') {
                        in_str = false;
                        sb_add(&b, s + i, 1);
                        i++;
                        continue;
                }
                if (ch == '\\' && i + 1 < n && s[i + 1] == 'u') {
                        long hi = u4(s + i, n - i);
                        long lo = n - i >= 12 ? u4(s + i + 6, n - i - 6) : -1;

                        if (hi >= 0xd800 && hi <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) {
                                sb_add(&b, s + i, 12);
                                i += 12;
                        } else if (hi >= 0xd800 && hi <= 0xdfff) {
                                sb_add(&b, "\\ufffd", 6);
                                i += 6;
                        } else {
                                sb_add(&b, s + i, 2);
                                i += 2;
                        }
                        continue;
                }
                if (ch == '\\' && i + 1 < n) {
                        sb_add(&b, s + i, 2);
                        i += 2;
                        continue;
                }
                sb_add(&b, s + i, 1);
                i++;
        }
        return sb_take(&b);
}

/* json.Unmarshal as Go does it, for the forms the parser reads. */
static json_t *json_load_go(const char *s, size_t n)
{
        struct kiln_dockerfile_str t = json_sanitize(s, n);
        json_error_t e;
        json_t *j;

        j = json_loadb(t.s, t.len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
        free(t.s);
        return j;
}

/* parseJSON: 1 parsed, 0 not a JSON array, <0 error (non-string element). */
static int parse_json(struct pctx *c, const char *s, size_t n, struct list *out)
{
        json_t *j;
        size_t i, p = space_prefix(s, n);

        if (p >= n || s[p] != '[')
                return 0;
        j = json_load_go(s + p, n - p);
        if (!j)
                return 0;
        if (!json_is_array(j)) {
                json_decref(j);
                return 0;
        }
        for (i = 0; i < json_array_size(j); i++)
                if (!json_is_string(json_array_get(j, i))) {
                        json_decref(j);
                        return fail(c, "when using JSON array syntax, arrays must be comprised "
                                       "of strings only");
                }
        for (i = 0; i < json_array_size(j); i++) {
                json_t *v = json_array_get(j, i);

                list_add(out, json_string_value(v), json_string_length(v));
        }
        json_decref(j);
        return 1;
}

static int parse_maybe_json(struct pctx *c, const char *s, size_t n, struct list *out, bool *js)
{
        int r;

        if (n == 0)
                return 0;
        r = parse_json(c, s, n, out);
        if (r < 0)
                return r;
        if (r > 0) {
                *js = true;
                return 0;
        }
        list_add(out, s, n);
        return 0;
}

static int node_from_line(struct pctx *c, const char *line, size_t n, unsigned depth,
                          struct kiln_dockerfile_node **ret);

/* strings.ToLower(cmd) == lit for an ASCII lower-case lit: besides ASCII
 * letters only U+212A KELVIN SIGN lowers to an ASCII letter ('k'). */
static bool cmd_is(const struct kiln_dockerfile_str *cmd, const char *lit)
{
        size_t i = 0;

        for (; *lit; lit++) {
                char ch;

                if (i + 3 <= cmd->len && *lit == 'k' && !memcmp(cmd->s + i, "\xe2\x84\xaa", 3)) {
                        i += 3;
                        continue;
                }
                if (i >= cmd->len)
                        return false;
                ch = cmd->s[i++];
                if (ch >= 'A' && ch <= 'Z')
                        ch = (char) (ch + 32);
                if (ch != *lit)
                        return false;
        }
        return i == cmd->len;
}

static int dispatch(struct pctx *c, const struct kiln_dockerfile_str *cmd, const char *s, size_t n,
                    unsigned depth, struct list *out, bool *js)
{
        int r;

        if (cmd_is(cmd, "from") || cmd_is(cmd, "expose")) {
                if (n)
                        split_ws(s, n, -1, out);
                return 0;
        }
        if (cmd_is(cmd, "add") || cmd_is(cmd, "copy") || cmd_is(cmd, "volume")) {
                r = parse_json(c, s, n, out);
                if (r < 0)
                        return r;
                if (r > 0)
                        *js = true;
                else if (n)
                        split_ws(s, n, -1, out);
                return 0;
        }
        if (cmd_is(cmd, "run") || cmd_is(cmd, "cmd") || cmd_is(cmd, "entrypoint") ||
            cmd_is(cmd, "shell"))
                return parse_maybe_json(c, s, n, out, js);
        if (cmd_is(cmd, "env"))
                return parse_name_val(c, s, n, "ENV", out);
        if (cmd_is(cmd, "label"))
                return parse_name_val(c, s, n, "LABEL", out);
        if (cmd_is(cmd, "arg")) {
                parse_words(c, s, n, out);
                return 0;
        }
        if (cmd_is(cmd, "maintainer") || cmd_is(cmd, "user") || cmd_is(cmd, "workdir") ||
            cmd_is(cmd, "stopsignal")) {
                if (n)
                        list_add(out, s, n);
                return 0;
        }
        if (cmd_is(cmd, "healthcheck")) {
                size_t sep = 0, next;

                while (sep < n && !byte_is_space((unsigned char) s[sep]))
                        sep++;
                next = sep;
                while (next < n && byte_is_space((unsigned char) s[next]))
                        next++;
                if (sep == 0)
                        return 0;
                list_add(out, s, sep);
                return parse_maybe_json(c, s + next, n - next, out, js);
        }
        if (cmd_is(cmd, "onbuild")) {
                struct kiln_dockerfile_node *child = NULL;

                if (n == 0)
                        return 0;
                if (depth >= KILN_LIMIT_DOCKERFILE_DEPTH)
                        return fail(c, "ONBUILD nested deeper than %d",
                                    KILN_LIMIT_DOCKERFILE_DEPTH);
                r = node_from_line(c, s, n, depth + 1, &child);
                if (r < 0)
                        return r;
                list_add(out, "", 0);
                add_child(out->head, child);
                return 0;
        }
        list_add(out, "", 0);
        return 0;
}

/* Latin-1 byte as a rune, as split_command.go's WriteRune(rune(byte)) does. */
static void sb_byte_rune(struct sb *b, unsigned char ch)
{
        sb_rune(b, ch);
}

/* extractBuilderFlags: returns the offset of the rest in line. */
static size_t extract_flags(struct pctx *c, const char *line, size_t n,
                            struct kiln_dockerfile_node *node)
{
        enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
        unsigned char ch = 0, quote = 0;
        bool blank_ok = false;
        struct sb b = { 0 };
        size_t pos;

#define PUSH_FLAG()                                                                               \
        do {                                                                                      \
                node->flags =                                                                     \
                        kiln_xreallocarray(node->flags, node->n_flags + 1, sizeof(*node->flags)); \
                node->flags[node->n_flags++] = str_dup(b.p ? b.p : "", b.n);                      \
        } while (0)

        for (pos = 0; pos <= n; pos++) {
                if (pos != n)
                        ch = (unsigned char) line[pos];
                if (phase == IN_SPACES) {
                        if (pos == n)
                                break;
                        if (byte_is_space(ch))
                                continue;
                        if (ch != '-' || pos + 1 == n || line[pos + 1] != '-') {
                                free(b.p);
                                return pos;
                        }
                        phase = IN_WORD;
                }
                if (pos == n) {
                        bool dd = b.n == 2 && !memcmp(b.p, "--", 2);

                        if (!dd && (blank_ok || b.n > 0))
                                PUSH_FLAG();
                        break;
                }
                if (phase == IN_WORD) {
                        if (byte_is_space(ch)) {
                                phase = IN_SPACES;
                                if (b.n == 2 && !memcmp(b.p, "--", 2)) {
                                        free(b.p);
                                        return pos;
                                }
                                if (blank_ok || b.n > 0)
                                        PUSH_FLAG();
                                b.n = 0;
                                blank_ok = false;
                                continue;
                        }
                        if (ch == '\'' || ch == '"') {
                                quote = ch;
                                blank_ok = true;
                                phase = IN_QUOTE;
                                continue;
                        }
                        if (ch == (unsigned char) c->escape) {
                                if (pos + 1 == n)
                                        continue;
                                pos++;
                                ch = (unsigned char) line[pos];
                        }
                        sb_byte_rune(&b, ch);
                        continue;
                }
                if (ch == quote) {
                        phase = IN_WORD;
                        continue;
                }
                if (ch == (unsigned char) c->escape) {
                        if (pos + 1 == n) {
                                phase = IN_WORD;
                                continue;
                        }
                        pos++;
                        ch = (unsigned char) line[pos];
                }
                sb_byte_rune(&b, ch);
        }
#undef PUSH_FLAG
        free(b.p);
        return n;
}

static int node_from_line(struct pctx *c, const char *line, size_t n, unsigned depth,
                          struct kiln_dockerfile_node **ret)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *node = NULL;
        struct list args = { 0 };
        const char *rest = "";
        size_t i = 0, rn = 0;
        int r;

        struct kiln_dockerfile_str original = str_dup(line, n);

        trim_space(&line, &n);
        while (i < n && !is_ws(line[i]))
                i++;
        node = node_new(line, i);
        node->original = original;
        if (i < n) {
                size_t off;

                while (i < n && is_ws(line[i]))
                        i++;
                off = extract_flags(c, line + i, n - i, node);
                rest = line + i + off;
                rn = n - i - off;
                trim_space(&rest, &rn);
        }
        r = dispatch(c, &node->value, rest, rn, depth, &args, &node->json);
        if (r < 0) {
                kiln_dockerfile_node_free(args.head);
                return r;
        }
        node->next = args.head;
        *ret = TAKE_PTR(node);
        return 0;
}

/* ---- shell words, as BuildKit's shell.Lex sees them for heredocs ---- */

/* Unicode 14.0.0 general categories L* and Nd above ASCII, for Go's
 * unicode.IsLetter and unicode.IsDigit. */
static const uint32_t letter_ranges[][2] = {
        { 0xaa, 0xaa },       { 0xb5, 0xb5 },       { 0xba, 0xba },       { 0xc0, 0xd6 },
        { 0xd8, 0xf6 },       { 0xf8, 0x2c1 },      { 0x2c6, 0x2d1 },     { 0x2e0, 0x2e4 },
        { 0x2ec, 0x2ec },     { 0x2ee, 0x2ee },     { 0x370, 0x374 },     { 0x376, 0x377 },
        { 0x37a, 0x37d },     { 0x37f, 0x37f },     { 0x386, 0x386 },     { 0x388, 0x38a },
        { 0x38c, 0x38c },     { 0x38e, 0x3a1 },     { 0x3a3, 0x3f5 },     { 0x3f7, 0x481 },
        { 0x48a, 0x52f },     { 0x531, 0x556 },     { 0x559, 0x559 },     { 0x560, 0x588 },
        { 0x5d0, 0x5ea },     { 0x5ef, 0x5f2 },     { 0x620, 0x64a },     { 0x66e, 0x66f },
        { 0x671, 0x6d3 },     { 0x6d5, 0x6d5 },     { 0x6e5, 0x6e6 },     { 0x6ee, 0x6ef },
        { 0x6fa, 0x6fc },     { 0x6ff, 0x6ff },     { 0x710, 0x710 },     { 0x712, 0x72f },
        { 0x74d, 0x7a5 },     { 0x7b1, 0x7b1 },     { 0x7ca, 0x7ea },     { 0x7f4, 0x7f5 },
        { 0x7fa, 0x7fa },     { 0x800, 0x815 },     { 0x81a, 0x81a },     { 0x824, 0x824 },
        { 0x828, 0x828 },     { 0x840, 0x858 },     { 0x860, 0x86a },     { 0x870, 0x887 },
        { 0x889, 0x88e },     { 0x8a0, 0x8c9 },     { 0x904, 0x939 },     { 0x93d, 0x93d },
        { 0x950, 0x950 },     { 0x958, 0x961 },     { 0x971, 0x980 },     { 0x985, 0x98c },
        { 0x98f, 0x990 },     { 0x993, 0x9a8 },     { 0x9aa, 0x9b0 },     { 0x9b2, 0x9b2 },
        { 0x9b6, 0x9b9 },     { 0x9bd, 0x9bd },     { 0x9ce, 0x9ce },     { 0x9dc, 0x9dd },
        { 0x9df, 0x9e1 },     { 0x9f0, 0x9f1 },     { 0x9fc, 0x9fc },     { 0xa05, 0xa0a },
        { 0xa0f, 0xa10 },     { 0xa13, 0xa28 },     { 0xa2a, 0xa30 },     { 0xa32, 0xa33 },
        { 0xa35, 0xa36 },     { 0xa38, 0xa39 },     { 0xa59, 0xa5c },     { 0xa5e, 0xa5e },
        { 0xa72, 0xa74 },     { 0xa85, 0xa8d },     { 0xa8f, 0xa91 },     { 0xa93, 0xaa8 },
        { 0xaaa, 0xab0 },     { 0xab2, 0xab3 },     { 0xab5, 0xab9 },     { 0xabd, 0xabd },
        { 0xad0, 0xad0 },     { 0xae0, 0xae1 },     { 0xaf9, 0xaf9 },     { 0xb05, 0xb0c },
        { 0xb0f, 0xb10 },     { 0xb13, 0xb28 },     { 0xb2a, 0xb30 },     { 0xb32, 0xb33 },
        { 0xb35, 0xb39 },     { 0xb3d, 0xb3d },     { 0xb5c, 0xb5d },     { 0xb5f, 0xb61 },
        { 0xb71, 0xb71 },     { 0xb83, 0xb83 },     { 0xb85, 0xb8a },     { 0xb8e, 0xb90 },
        { 0xb92, 0xb95 },     { 0xb99, 0xb9a },     { 0xb9c, 0xb9c },     { 0xb9e, 0xb9f },
        { 0xba3, 0xba4 },     { 0xba8, 0xbaa },     { 0xbae, 0xbb9 },     { 0xbd0, 0xbd0 },
        { 0xc05, 0xc0c },     { 0xc0e, 0xc10 },     { 0xc12, 0xc28 },     { 0xc2a, 0xc39 },
        { 0xc3d, 0xc3d },     { 0xc58, 0xc5a },     { 0xc5d, 0xc5d },     { 0xc60, 0xc61 },
        { 0xc80, 0xc80 },     { 0xc85, 0xc8c },     { 0xc8e, 0xc90 },     { 0xc92, 0xca8 },
        { 0xcaa, 0xcb3 },     { 0xcb5, 0xcb9 },     { 0xcbd, 0xcbd },     { 0xcdd, 0xcde },
        { 0xce0, 0xce1 },     { 0xcf1, 0xcf2 },     { 0xd04, 0xd0c },     { 0xd0e, 0xd10 },
        { 0xd12, 0xd3a },     { 0xd3d, 0xd3d },     { 0xd4e, 0xd4e },     { 0xd54, 0xd56 },
        { 0xd5f, 0xd61 },     { 0xd7a, 0xd7f },     { 0xd85, 0xd96 },     { 0xd9a, 0xdb1 },
        { 0xdb3, 0xdbb },     { 0xdbd, 0xdbd },     { 0xdc0, 0xdc6 },     { 0xe01, 0xe30 },
        { 0xe32, 0xe33 },     { 0xe40, 0xe46 },     { 0xe81, 0xe82 },     { 0xe84, 0xe84 },
        { 0xe86, 0xe8a },     { 0xe8c, 0xea3 },     { 0xea5, 0xea5 },     { 0xea7, 0xeb0 },
        { 0xeb2, 0xeb3 },     { 0xebd, 0xebd },     { 0xec0, 0xec4 },     { 0xec6, 0xec6 },
        { 0xedc, 0xedf },     { 0xf00, 0xf00 },     { 0xf40, 0xf47 },     { 0xf49, 0xf6c },
        { 0xf88, 0xf8c },     { 0x1000, 0x102a },   { 0x103f, 0x103f },   { 0x1050, 0x1055 },
        { 0x105a, 0x105d },   { 0x1061, 0x1061 },   { 0x1065, 0x1066 },   { 0x106e, 0x1070 },
        { 0x1075, 0x1081 },   { 0x108e, 0x108e },   { 0x10a0, 0x10c5 },   { 0x10c7, 0x10c7 },
        { 0x10cd, 0x10cd },   { 0x10d0, 0x10fa },   { 0x10fc, 0x1248 },   { 0x124a, 0x124d },
        { 0x1250, 0x1256 },   { 0x1258, 0x1258 },   { 0x125a, 0x125d },   { 0x1260, 0x1288 },
        { 0x128a, 0x128d },   { 0x1290, 0x12b0 },   { 0x12b2, 0x12b5 },   { 0x12b8, 0x12be },
        { 0x12c0, 0x12c0 },   { 0x12c2, 0x12c5 },   { 0x12c8, 0x12d6 },   { 0x12d8, 0x1310 },
        { 0x1312, 0x1315 },   { 0x1318, 0x135a },   { 0x1380, 0x138f },   { 0x13a0, 0x13f5 },
        { 0x13f8, 0x13fd },   { 0x1401, 0x166c },   { 0x166f, 0x167f },   { 0x1681, 0x169a },
        { 0x16a0, 0x16ea },   { 0x16f1, 0x16f8 },   { 0x1700, 0x1711 },   { 0x171f, 0x1731 },
        { 0x1740, 0x1751 },   { 0x1760, 0x176c },   { 0x176e, 0x1770 },   { 0x1780, 0x17b3 },
        { 0x17d7, 0x17d7 },   { 0x17dc, 0x17dc },   { 0x1820, 0x1878 },   { 0x1880, 0x1884 },
        { 0x1887, 0x18a8 },   { 0x18aa, 0x18aa },   { 0x18b0, 0x18f5 },   { 0x1900, 0x191e },
        { 0x1950, 0x196d },   { 0x1970, 0x1974 },   { 0x1980, 0x19ab },   { 0x19b0, 0x19c9 },
        { 0x1a00, 0x1a16 },   { 0x1a20, 0x1a54 },   { 0x1aa7, 0x1aa7 },   { 0x1b05, 0x1b33 },
        { 0x1b45, 0x1b4c },   { 0x1b83, 0x1ba0 },   { 0x1bae, 0x1baf },   { 0x1bba, 0x1be5 },
        { 0x1c00, 0x1c23 },   { 0x1c4d, 0x1c4f },   { 0x1c5a, 0x1c7d },   { 0x1c80, 0x1c88 },
        { 0x1c90, 0x1cba },   { 0x1cbd, 0x1cbf },   { 0x1ce9, 0x1cec },   { 0x1cee, 0x1cf3 },
        { 0x1cf5, 0x1cf6 },   { 0x1cfa, 0x1cfa },   { 0x1d00, 0x1dbf },   { 0x1e00, 0x1f15 },
        { 0x1f18, 0x1f1d },   { 0x1f20, 0x1f45 },   { 0x1f48, 0x1f4d },   { 0x1f50, 0x1f57 },
        { 0x1f59, 0x1f59 },   { 0x1f5b, 0x1f5b },   { 0x1f5d, 0x1f5d },   { 0x1f5f, 0x1f7d },
        { 0x1f80, 0x1fb4 },   { 0x1fb6, 0x1fbc },   { 0x1fbe, 0x1fbe },   { 0x1fc2, 0x1fc4 },
        { 0x1fc6, 0x1fcc },   { 0x1fd0, 0x1fd3 },   { 0x1fd6, 0x1fdb },   { 0x1fe0, 0x1fec },
        { 0x1ff2, 0x1ff4 },   { 0x1ff6, 0x1ffc },   { 0x2071, 0x2071 },   { 0x207f, 0x207f },
        { 0x2090, 0x209c },   { 0x2102, 0x2102 },   { 0x2107, 0x2107 },   { 0x210a, 0x2113 },
        { 0x2115, 0x2115 },   { 0x2119, 0x211d },   { 0x2124, 0x2124 },   { 0x2126, 0x2126 },
        { 0x2128, 0x2128 },   { 0x212a, 0x212d },   { 0x212f, 0x2139 },   { 0x213c, 0x213f },
        { 0x2145, 0x2149 },   { 0x214e, 0x214e },   { 0x2183, 0x2184 },   { 0x2c00, 0x2ce4 },
        { 0x2ceb, 0x2cee },   { 0x2cf2, 0x2cf3 },   { 0x2d00, 0x2d25 },   { 0x2d27, 0x2d27 },
        { 0x2d2d, 0x2d2d },   { 0x2d30, 0x2d67 },   { 0x2d6f, 0x2d6f },   { 0x2d80, 0x2d96 },
        { 0x2da0, 0x2da6 },   { 0x2da8, 0x2dae },   { 0x2db0, 0x2db6 },   { 0x2db8, 0x2dbe },
        { 0x2dc0, 0x2dc6 },   { 0x2dc8, 0x2dce },   { 0x2dd0, 0x2dd6 },   { 0x2dd8, 0x2dde },
        { 0x2e2f, 0x2e2f },   { 0x3005, 0x3006 },   { 0x3031, 0x3035 },   { 0x303b, 0x303c },
        { 0x3041, 0x3096 },   { 0x309d, 0x309f },   { 0x30a1, 0x30fa },   { 0x30fc, 0x30ff },
        { 0x3105, 0x312f },   { 0x3131, 0x318e },   { 0x31a0, 0x31bf },   { 0x31f0, 0x31ff },
        { 0x3400, 0x4dbf },   { 0x4e00, 0xa48c },   { 0xa4d0, 0xa4fd },   { 0xa500, 0xa60c },
        { 0xa610, 0xa61f },   { 0xa62a, 0xa62b },   { 0xa640, 0xa66e },   { 0xa67f, 0xa69d },
        { 0xa6a0, 0xa6e5 },   { 0xa717, 0xa71f },   { 0xa722, 0xa788 },   { 0xa78b, 0xa7ca },
        { 0xa7d0, 0xa7d1 },   { 0xa7d3, 0xa7d3 },   { 0xa7d5, 0xa7d9 },   { 0xa7f2, 0xa801 },
        { 0xa803, 0xa805 },   { 0xa807, 0xa80a },   { 0xa80c, 0xa822 },   { 0xa840, 0xa873 },
        { 0xa882, 0xa8b3 },   { 0xa8f2, 0xa8f7 },   { 0xa8fb, 0xa8fb },   { 0xa8fd, 0xa8fe },
        { 0xa90a, 0xa925 },   { 0xa930, 0xa946 },   { 0xa960, 0xa97c },   { 0xa984, 0xa9b2 },
        { 0xa9cf, 0xa9cf },   { 0xa9e0, 0xa9e4 },   { 0xa9e6, 0xa9ef },   { 0xa9fa, 0xa9fe },
        { 0xaa00, 0xaa28 },   { 0xaa40, 0xaa42 },   { 0xaa44, 0xaa4b },   { 0xaa60, 0xaa76 },
        { 0xaa7a, 0xaa7a },   { 0xaa7e, 0xaaaf },   { 0xaab1, 0xaab1 },   { 0xaab5, 0xaab6 },
        { 0xaab9, 0xaabd },   { 0xaac0, 0xaac0 },   { 0xaac2, 0xaac2 },   { 0xaadb, 0xaadd },
        { 0xaae0, 0xaaea },   { 0xaaf2, 0xaaf4 },   { 0xab01, 0xab06 },   { 0xab09, 0xab0e },
        { 0xab11, 0xab16 },   { 0xab20, 0xab26 },   { 0xab28, 0xab2e },   { 0xab30, 0xab5a },
        { 0xab5c, 0xab69 },   { 0xab70, 0xabe2 },   { 0xac00, 0xd7a3 },   { 0xd7b0, 0xd7c6 },
        { 0xd7cb, 0xd7fb },   { 0xf900, 0xfa6d },   { 0xfa70, 0xfad9 },   { 0xfb00, 0xfb06 },
        { 0xfb13, 0xfb17 },   { 0xfb1d, 0xfb1d },   { 0xfb1f, 0xfb28 },   { 0xfb2a, 0xfb36 },
        { 0xfb38, 0xfb3c },   { 0xfb3e, 0xfb3e },   { 0xfb40, 0xfb41 },   { 0xfb43, 0xfb44 },
        { 0xfb46, 0xfbb1 },   { 0xfbd3, 0xfd3d },   { 0xfd50, 0xfd8f },   { 0xfd92, 0xfdc7 },
        { 0xfdf0, 0xfdfb },   { 0xfe70, 0xfe74 },   { 0xfe76, 0xfefc },   { 0xff21, 0xff3a },
        { 0xff41, 0xff5a },   { 0xff66, 0xffbe },   { 0xffc2, 0xffc7 },   { 0xffca, 0xffcf },
        { 0xffd2, 0xffd7 },   { 0xffda, 0xffdc },   { 0x10000, 0x1000b }, { 0x1000d, 0x10026 },
        { 0x10028, 0x1003a }, { 0x1003c, 0x1003d }, { 0x1003f, 0x1004d }, { 0x10050, 0x1005d },
        { 0x10080, 0x100fa }, { 0x10280, 0x1029c }, { 0x102a0, 0x102d0 }, { 0x10300, 0x1031f },
        { 0x1032d, 0x10340 }, { 0x10342, 0x10349 }, { 0x10350, 0x10375 }, { 0x10380, 0x1039d },
        { 0x103a0, 0x103c3 }, { 0x103c8, 0x103cf }, { 0x10400, 0x1049d }, { 0x104b0, 0x104d3 },
        { 0x104d8, 0x104fb }, { 0x10500, 0x10527 }, { 0x10530, 0x10563 }, { 0x10570, 0x1057a },
        { 0x1057c, 0x1058a }, { 0x1058c, 0x10592 }, { 0x10594, 0x10595 }, { 0x10597, 0x105a1 },
        { 0x105a3, 0x105b1 }, { 0x105b3, 0x105b9 }, { 0x105bb, 0x105bc }, { 0x10600, 0x10736 },
        { 0x10740, 0x10755 }, { 0x10760, 0x10767 }, { 0x10780, 0x10785 }, { 0x10787, 0x107b0 },
        { 0x107b2, 0x107ba }, { 0x10800, 0x10805 }, { 0x10808, 0x10808 }, { 0x1080a, 0x10835 },
        { 0x10837, 0x10838 }, { 0x1083c, 0x1083c }, { 0x1083f, 0x10855 }, { 0x10860, 0x10876 },
        { 0x10880, 0x1089e }, { 0x108e0, 0x108f2 }, { 0x108f4, 0x108f5 }, { 0x10900, 0x10915 },
        { 0x10920, 0x10939 }, { 0x10980, 0x109b7 }, { 0x109be, 0x109bf }, { 0x10a00, 0x10a00 },
        { 0x10a10, 0x10a13 }, { 0x10a15, 0x10a17 }, { 0x10a19, 0x10a35 }, { 0x10a60, 0x10a7c },
        { 0x10a80, 0x10a9c }, { 0x10ac0, 0x10ac7 }, { 0x10ac9, 0x10ae4 }, { 0x10b00, 0x10b35 },
        { 0x10b40, 0x10b55 }, { 0x10b60, 0x10b72 }, { 0x10b80, 0x10b91 }, { 0x10c00, 0x10c48 },
        { 0x10c80, 0x10cb2 }, { 0x10cc0, 0x10cf2 }, { 0x10d00, 0x10d23 }, { 0x10e80, 0x10ea9 },
        { 0x10eb0, 0x10eb1 }, { 0x10f00, 0x10f1c }, { 0x10f27, 0x10f27 }, { 0x10f30, 0x10f45 },
        { 0x10f70, 0x10f81 }, { 0x10fb0, 0x10fc4 }, { 0x10fe0, 0x10ff6 }, { 0x11003, 0x11037 },
        { 0x11071, 0x11072 }, { 0x11075, 0x11075 }, { 0x11083, 0x110af }, { 0x110d0, 0x110e8 },
        { 0x11103, 0x11126 }, { 0x11144, 0x11144 }, { 0x11147, 0x11147 }, { 0x11150, 0x11172 },
        { 0x11176, 0x11176 }, { 0x11183, 0x111b2 }, { 0x111c1, 0x111c4 }, { 0x111da, 0x111da },
        { 0x111dc, 0x111dc }, { 0x11200, 0x11211 }, { 0x11213, 0x1122b }, { 0x11280, 0x11286 },
        { 0x11288, 0x11288 }, { 0x1128a, 0x1128d }, { 0x1128f, 0x1129d }, { 0x1129f, 0x112a8 },
        { 0x112b0, 0x112de }, { 0x11305, 0x1130c }, { 0x1130f, 0x11310 }, { 0x11313, 0x11328 },
        { 0x1132a, 0x11330 }, { 0x11332, 0x11333 }, { 0x11335, 0x11339 }, { 0x1133d, 0x1133d },
        { 0x11350, 0x11350 }, { 0x1135d, 0x11361 }, { 0x11400, 0x11434 }, { 0x11447, 0x1144a },
        { 0x1145f, 0x11461 }, { 0x11480, 0x114af }, { 0x114c4, 0x114c5 }, { 0x114c7, 0x114c7 },
        { 0x11580, 0x115ae }, { 0x115d8, 0x115db }, { 0x11600, 0x1162f }, { 0x11644, 0x11644 },
        { 0x11680, 0x116aa }, { 0x116b8, 0x116b8 }, { 0x11700, 0x1171a }, { 0x11740, 0x11746 },
        { 0x11800, 0x1182b }, { 0x118a0, 0x118df }, { 0x118ff, 0x11906 }, { 0x11909, 0x11909 },
        { 0x1190c, 0x11913 }, { 0x11915, 0x11916 }, { 0x11918, 0x1192f }, { 0x1193f, 0x1193f },
        { 0x11941, 0x11941 }, { 0x119a0, 0x119a7 }, { 0x119aa, 0x119d0 }, { 0x119e1, 0x119e1 },
        { 0x119e3, 0x119e3 }, { 0x11a00, 0x11a00 }, { 0x11a0b, 0x11a32 }, { 0x11a3a, 0x11a3a },
        { 0x11a50, 0x11a50 }, { 0x11a5c, 0x11a89 }, { 0x11a9d, 0x11a9d }, { 0x11ab0, 0x11af8 },
        { 0x11c00, 0x11c08 }, { 0x11c0a, 0x11c2e }, { 0x11c40, 0x11c40 }, { 0x11c72, 0x11c8f },
        { 0x11d00, 0x11d06 }, { 0x11d08, 0x11d09 }, { 0x11d0b, 0x11d30 }, { 0x11d46, 0x11d46 },
        { 0x11d60, 0x11d65 }, { 0x11d67, 0x11d68 }, { 0x11d6a, 0x11d89 }, { 0x11d98, 0x11d98 },
        { 0x11ee0, 0x11ef2 }, { 0x11fb0, 0x11fb0 }, { 0x12000, 0x12399 }, { 0x12480, 0x12543 },
        { 0x12f90, 0x12ff0 }, { 0x13000, 0x1342e }, { 0x14400, 0x14646 }, { 0x16800, 0x16a38 },
        { 0x16a40, 0x16a5e }, { 0x16a70, 0x16abe }, { 0x16ad0, 0x16aed }, { 0x16b00, 0x16b2f },
        { 0x16b40, 0x16b43 }, { 0x16b63, 0x16b77 }, { 0x16b7d, 0x16b8f }, { 0x16e40, 0x16e7f },
        { 0x16f00, 0x16f4a }, { 0x16f50, 0x16f50 }, { 0x16f93, 0x16f9f }, { 0x16fe0, 0x16fe1 },
        { 0x16fe3, 0x16fe3 }, { 0x17000, 0x187f7 }, { 0x18800, 0x18cd5 }, { 0x18d00, 0x18d08 },
        { 0x1aff0, 0x1aff3 }, { 0x1aff5, 0x1affb }, { 0x1affd, 0x1affe }, { 0x1b000, 0x1b122 },
        { 0x1b150, 0x1b152 }, { 0x1b164, 0x1b167 }, { 0x1b170, 0x1b2fb }, { 0x1bc00, 0x1bc6a },
        { 0x1bc70, 0x1bc7c }, { 0x1bc80, 0x1bc88 }, { 0x1bc90, 0x1bc99 }, { 0x1d400, 0x1d454 },
        { 0x1d456, 0x1d49c }, { 0x1d49e, 0x1d49f }, { 0x1d4a2, 0x1d4a2 }, { 0x1d4a5, 0x1d4a6 },
        { 0x1d4a9, 0x1d4ac }, { 0x1d4ae, 0x1d4b9 }, { 0x1d4bb, 0x1d4bb }, { 0x1d4bd, 0x1d4c3 },
        { 0x1d4c5, 0x1d505 }, { 0x1d507, 0x1d50a }, { 0x1d50d, 0x1d514 }, { 0x1d516, 0x1d51c },
        { 0x1d51e, 0x1d539 }, { 0x1d53b, 0x1d53e }, { 0x1d540, 0x1d544 }, { 0x1d546, 0x1d546 },
        { 0x1d54a, 0x1d550 }, { 0x1d552, 0x1d6a5 }, { 0x1d6a8, 0x1d6c0 }, { 0x1d6c2, 0x1d6da },
        { 0x1d6dc, 0x1d6fa }, { 0x1d6fc, 0x1d714 }, { 0x1d716, 0x1d734 }, { 0x1d736, 0x1d74e },
        { 0x1d750, 0x1d76e }, { 0x1d770, 0x1d788 }, { 0x1d78a, 0x1d7a8 }, { 0x1d7aa, 0x1d7c2 },
        { 0x1d7c4, 0x1d7cb }, { 0x1df00, 0x1df1e }, { 0x1e100, 0x1e12c }, { 0x1e137, 0x1e13d },
        { 0x1e14e, 0x1e14e }, { 0x1e290, 0x1e2ad }, { 0x1e2c0, 0x1e2eb }, { 0x1e7e0, 0x1e7e6 },
        { 0x1e7e8, 0x1e7eb }, { 0x1e7ed, 0x1e7ee }, { 0x1e7f0, 0x1e7fe }, { 0x1e800, 0x1e8c4 },
        { 0x1e900, 0x1e943 }, { 0x1e94b, 0x1e94b }, { 0x1ee00, 0x1ee03 }, { 0x1ee05, 0x1ee1f },
        { 0x1ee21, 0x1ee22 }, { 0x1ee24, 0x1ee24 }, { 0x1ee27, 0x1ee27 }, { 0x1ee29, 0x1ee32 },
        { 0x1ee34, 0x1ee37 }, { 0x1ee39, 0x1ee39 }, { 0x1ee3b, 0x1ee3b }, { 0x1ee42, 0x1ee42 },
        { 0x1ee47, 0x1ee47 }, { 0x1ee49, 0x1ee49 }, { 0x1ee4b, 0x1ee4b }, { 0x1ee4d, 0x1ee4f },
        { 0x1ee51, 0x1ee52 }, { 0x1ee54, 0x1ee54 }, { 0x1ee57, 0x1ee57 }, { 0x1ee59, 0x1ee59 },
        { 0x1ee5b, 0x1ee5b }, { 0x1ee5d, 0x1ee5d }, { 0x1ee5f, 0x1ee5f }, { 0x1ee61, 0x1ee62 },
        { 0x1ee64, 0x1ee64 }, { 0x1ee67, 0x1ee6a }, { 0x1ee6c, 0x1ee72 }, { 0x1ee74, 0x1ee77 },
        { 0x1ee79, 0x1ee7c }, { 0x1ee7e, 0x1ee7e }, { 0x1ee80, 0x1ee89 }, { 0x1ee8b, 0x1ee9b },
        { 0x1eea1, 0x1eea3 }, { 0x1eea5, 0x1eea9 }, { 0x1eeab, 0x1eebb }, { 0x20000, 0x2a6df },
        { 0x2a700, 0x2b738 }, { 0x2b740, 0x2b81d }, { 0x2b820, 0x2cea1 }, { 0x2ceb0, 0x2ebe0 },
        { 0x2f800, 0x2fa1d }, { 0x30000, 0x3134a },
};
static const uint32_t digit_ranges[][2] = {
        { 0x660, 0x669 },     { 0x6f0, 0x6f9 },     { 0x7c0, 0x7c9 },     { 0x966, 0x96f },
        { 0x9e6, 0x9ef },     { 0xa66, 0xa6f },     { 0xae6, 0xaef },     { 0xb66, 0xb6f },
        { 0xbe6, 0xbef },     { 0xc66, 0xc6f },     { 0xce6, 0xcef },     { 0xd66, 0xd6f },
        { 0xde6, 0xdef },     { 0xe50, 0xe59 },     { 0xed0, 0xed9 },     { 0xf20, 0xf29 },
        { 0x1040, 0x1049 },   { 0x1090, 0x1099 },   { 0x17e0, 0x17e9 },   { 0x1810, 0x1819 },
        { 0x1946, 0x194f },   { 0x19d0, 0x19d9 },   { 0x1a80, 0x1a89 },   { 0x1a90, 0x1a99 },
        { 0x1b50, 0x1b59 },   { 0x1bb0, 0x1bb9 },   { 0x1c40, 0x1c49 },   { 0x1c50, 0x1c59 },
        { 0xa620, 0xa629 },   { 0xa8d0, 0xa8d9 },   { 0xa900, 0xa909 },   { 0xa9d0, 0xa9d9 },
        { 0xa9f0, 0xa9f9 },   { 0xaa50, 0xaa59 },   { 0xabf0, 0xabf9 },   { 0xff10, 0xff19 },
        { 0x104a0, 0x104a9 }, { 0x10d30, 0x10d39 }, { 0x11066, 0x1106f }, { 0x110f0, 0x110f9 },
        { 0x11136, 0x1113f }, { 0x111d0, 0x111d9 }, { 0x112f0, 0x112f9 }, { 0x11450, 0x11459 },
        { 0x114d0, 0x114d9 }, { 0x11650, 0x11659 }, { 0x116c0, 0x116c9 }, { 0x11730, 0x11739 },
        { 0x118e0, 0x118e9 }, { 0x11950, 0x11959 }, { 0x11c50, 0x11c59 }, { 0x11d50, 0x11d59 },
        { 0x11da0, 0x11da9 }, { 0x16a60, 0x16a69 }, { 0x16ac0, 0x16ac9 }, { 0x16b50, 0x16b59 },
        { 0x1d7ce, 0x1d7ff }, { 0x1e140, 0x1e149 }, { 0x1e2f0, 0x1e2f9 }, { 0x1e950, 0x1e959 },
        { 0x1fbf0, 0x1fbf9 },
};
static bool in_ranges(const uint32_t (*t)[2], size_t n, uint32_t r)
{
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (r < t[mid][0])
                        hi = mid;
                else if (r > t[mid][1])
                        lo = mid + 1;
                else
                        return true;
        }
        return false;
}

/* Simple lower-case mappings above ASCII (Go's unicode.ToLower): runes lo..hi
 * stepping by stride map to rune + delta. */
static const struct lower_range {
        uint32_t lo, hi;
        uint8_t stride;
        int32_t delta;
} lower_ranges[] = {
        { 0xc0, 0xd6, 1, 32 },         { 0xd8, 0xde, 1, 32 },         { 0x100, 0x12e, 2, 1 },
        { 0x130, 0x130, 1, -199 },     { 0x132, 0x136, 2, 1 },        { 0x139, 0x147, 2, 1 },
        { 0x14a, 0x176, 2, 1 },        { 0x178, 0x178, 1, -121 },     { 0x179, 0x17d, 2, 1 },
        { 0x181, 0x181, 1, 210 },      { 0x182, 0x184, 2, 1 },        { 0x186, 0x186, 1, 206 },
        { 0x187, 0x187, 1, 1 },        { 0x189, 0x18a, 1, 205 },      { 0x18b, 0x18b, 1, 1 },
        { 0x18e, 0x18e, 1, 79 },       { 0x18f, 0x18f, 1, 202 },      { 0x190, 0x190, 1, 203 },
        { 0x191, 0x191, 1, 1 },        { 0x193, 0x193, 1, 205 },      { 0x194, 0x194, 1, 207 },
        { 0x196, 0x196, 1, 211 },      { 0x197, 0x197, 1, 209 },      { 0x198, 0x198, 1, 1 },
        { 0x19c, 0x19c, 1, 211 },      { 0x19d, 0x19d, 1, 213 },      { 0x19f, 0x19f, 1, 214 },
        { 0x1a0, 0x1a4, 2, 1 },        { 0x1a6, 0x1a6, 1, 218 },      { 0x1a7, 0x1a7, 1, 1 },
        { 0x1a9, 0x1a9, 1, 218 },      { 0x1ac, 0x1ac, 1, 1 },        { 0x1ae, 0x1ae, 1, 218 },
        { 0x1af, 0x1af, 1, 1 },        { 0x1b1, 0x1b2, 1, 217 },      { 0x1b3, 0x1b5, 2, 1 },
        { 0x1b7, 0x1b7, 1, 219 },      { 0x1b8, 0x1b8, 1, 1 },        { 0x1bc, 0x1bc, 1, 1 },
        { 0x1c4, 0x1c4, 1, 2 },        { 0x1c5, 0x1c5, 1, 1 },        { 0x1c7, 0x1c7, 1, 2 },
        { 0x1c8, 0x1c8, 1, 1 },        { 0x1ca, 0x1ca, 1, 2 },        { 0x1cb, 0x1db, 2, 1 },
        { 0x1de, 0x1ee, 2, 1 },        { 0x1f1, 0x1f1, 1, 2 },        { 0x1f2, 0x1f4, 2, 1 },
        { 0x1f6, 0x1f6, 1, -97 },      { 0x1f7, 0x1f7, 1, -56 },      { 0x1f8, 0x21e, 2, 1 },
        { 0x220, 0x220, 1, -130 },     { 0x222, 0x232, 2, 1 },        { 0x23a, 0x23a, 1, 10795 },
        { 0x23b, 0x23b, 1, 1 },        { 0x23d, 0x23d, 1, -163 },     { 0x23e, 0x23e, 1, 10792 },
        { 0x241, 0x241, 1, 1 },        { 0x243, 0x243, 1, -195 },     { 0x244, 0x244, 1, 69 },
        { 0x245, 0x245, 1, 71 },       { 0x246, 0x24e, 2, 1 },        { 0x370, 0x372, 2, 1 },
        { 0x376, 0x376, 1, 1 },        { 0x37f, 0x37f, 1, 116 },      { 0x386, 0x386, 1, 38 },
        { 0x388, 0x38a, 1, 37 },       { 0x38c, 0x38c, 1, 64 },       { 0x38e, 0x38f, 1, 63 },
        { 0x391, 0x3a1, 1, 32 },       { 0x3a3, 0x3ab, 1, 32 },       { 0x3cf, 0x3cf, 1, 8 },
        { 0x3d8, 0x3ee, 2, 1 },        { 0x3f4, 0x3f4, 1, -60 },      { 0x3f7, 0x3f7, 1, 1 },
        { 0x3f9, 0x3f9, 1, -7 },       { 0x3fa, 0x3fa, 1, 1 },        { 0x3fd, 0x3ff, 1, -130 },
        { 0x400, 0x40f, 1, 80 },       { 0x410, 0x42f, 1, 32 },       { 0x460, 0x480, 2, 1 },
        { 0x48a, 0x4be, 2, 1 },        { 0x4c0, 0x4c0, 1, 15 },       { 0x4c1, 0x4cd, 2, 1 },
        { 0x4d0, 0x52e, 2, 1 },        { 0x531, 0x556, 1, 48 },       { 0x10a0, 0x10c5, 1, 7264 },
        { 0x10c7, 0x10c7, 1, 7264 },   { 0x10cd, 0x10cd, 1, 7264 },   { 0x13a0, 0x13ef, 1, 38864 },
        { 0x13f0, 0x13f5, 1, 8 },      { 0x1c90, 0x1cba, 1, -3008 },  { 0x1cbd, 0x1cbf, 1, -3008 },
        { 0x1e00, 0x1e94, 2, 1 },      { 0x1e9e, 0x1e9e, 1, -7615 },  { 0x1ea0, 0x1efe, 2, 1 },
        { 0x1f08, 0x1f0f, 1, -8 },     { 0x1f18, 0x1f1d, 1, -8 },     { 0x1f28, 0x1f2f, 1, -8 },
        { 0x1f38, 0x1f3f, 1, -8 },     { 0x1f48, 0x1f4d, 1, -8 },     { 0x1f59, 0x1f5f, 2, -8 },
        { 0x1f68, 0x1f6f, 1, -8 },     { 0x1f88, 0x1f8f, 1, -8 },     { 0x1f98, 0x1f9f, 1, -8 },
        { 0x1fa8, 0x1faf, 1, -8 },     { 0x1fb8, 0x1fb9, 1, -8 },     { 0x1fba, 0x1fbb, 1, -74 },
        { 0x1fbc, 0x1fbc, 1, -9 },     { 0x1fc8, 0x1fcb, 1, -86 },    { 0x1fcc, 0x1fcc, 1, -9 },
        { 0x1fd8, 0x1fd9, 1, -8 },     { 0x1fda, 0x1fdb, 1, -100 },   { 0x1fe8, 0x1fe9, 1, -8 },
        { 0x1fea, 0x1feb, 1, -112 },   { 0x1fec, 0x1fec, 1, -7 },     { 0x1ff8, 0x1ff9, 1, -128 },
        { 0x1ffa, 0x1ffb, 1, -126 },   { 0x1ffc, 0x1ffc, 1, -9 },     { 0x2126, 0x2126, 1, -7517 },
        { 0x212a, 0x212a, 1, -8383 },  { 0x212b, 0x212b, 1, -8262 },  { 0x2132, 0x2132, 1, 28 },
        { 0x2160, 0x216f, 1, 16 },     { 0x2183, 0x2183, 1, 1 },      { 0x24b6, 0x24cf, 1, 26 },
        { 0x2c00, 0x2c2f, 1, 48 },     { 0x2c60, 0x2c60, 1, 1 },      { 0x2c62, 0x2c62, 1, -10743 },
        { 0x2c63, 0x2c63, 1, -3814 },  { 0x2c64, 0x2c64, 1, -10727 }, { 0x2c67, 0x2c6b, 2, 1 },
        { 0x2c6d, 0x2c6d, 1, -10780 }, { 0x2c6e, 0x2c6e, 1, -10749 }, { 0x2c6f, 0x2c6f, 1, -10783 },
        { 0x2c70, 0x2c70, 1, -10782 }, { 0x2c72, 0x2c72, 1, 1 },      { 0x2c75, 0x2c75, 1, 1 },
        { 0x2c7e, 0x2c7f, 1, -10815 }, { 0x2c80, 0x2ce2, 2, 1 },      { 0x2ceb, 0x2ced, 2, 1 },
        { 0x2cf2, 0x2cf2, 1, 1 },      { 0xa640, 0xa66c, 2, 1 },      { 0xa680, 0xa69a, 2, 1 },
        { 0xa722, 0xa72e, 2, 1 },      { 0xa732, 0xa76e, 2, 1 },      { 0xa779, 0xa77b, 2, 1 },
        { 0xa77d, 0xa77d, 1, -35332 }, { 0xa77e, 0xa786, 2, 1 },      { 0xa78b, 0xa78b, 1, 1 },
        { 0xa78d, 0xa78d, 1, -42280 }, { 0xa790, 0xa792, 2, 1 },      { 0xa796, 0xa7a8, 2, 1 },
        { 0xa7aa, 0xa7aa, 1, -42308 }, { 0xa7ab, 0xa7ab, 1, -42319 }, { 0xa7ac, 0xa7ac, 1, -42315 },
        { 0xa7ad, 0xa7ad, 1, -42305 }, { 0xa7ae, 0xa7ae, 1, -42308 }, { 0xa7b0, 0xa7b0, 1, -42258 },
        { 0xa7b1, 0xa7b1, 1, -42282 }, { 0xa7b2, 0xa7b2, 1, -42261 }, { 0xa7b3, 0xa7b3, 1, 928 },
        { 0xa7b4, 0xa7c2, 2, 1 },      { 0xa7c4, 0xa7c4, 1, -48 },    { 0xa7c5, 0xa7c5, 1, -42307 },
        { 0xa7c6, 0xa7c6, 1, -35384 }, { 0xa7c7, 0xa7c9, 2, 1 },      { 0xa7d0, 0xa7d0, 1, 1 },
        { 0xa7d6, 0xa7d8, 2, 1 },      { 0xa7f5, 0xa7f5, 1, 1 },      { 0xff21, 0xff3a, 1, 32 },
        { 0x10400, 0x10427, 1, 40 },   { 0x104b0, 0x104d3, 1, 40 },   { 0x10570, 0x1057a, 1, 39 },
        { 0x1057c, 0x1058a, 1, 39 },   { 0x1058c, 0x10592, 1, 39 },   { 0x10594, 0x10595, 1, 39 },
        { 0x10c80, 0x10cb2, 1, 64 },   { 0x118a0, 0x118bf, 1, 32 },   { 0x16e40, 0x16e5f, 1, 32 },
        { 0x1e900, 0x1e921, 1, 34 },
};

/* unicode.ToLower */
static uint32_t rune_to_lower(uint32_t r)
{
        size_t lo = 0, hi = ELEMENTSOF(lower_ranges);

        if (r < 0x80)
                return r >= 'A' && r <= 'Z' ? r + 32 : r;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const struct lower_range *e = &lower_ranges[mid];

                if (r < e->lo)
                        hi = mid;
                else if (r > e->hi)
                        lo = mid + 1;
                else
                        return (r - e->lo) % e->stride == 0 ? (uint32_t) ((int32_t) r + e->delta)
                                                            : r;
        }
        return r;
}

/* unicode.IsLetter */
static bool rune_is_letter(int32_t r)
{
        if (r < 0x80)
                return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
        return in_ranges(letter_ranges, ELEMENTSOF(letter_ranges), (uint32_t) r);
}

/* unicode.IsDigit */
static bool rune_is_digit(int32_t r)
{
        if (r < 0x80)
                return r >= '0' && r <= '9';
        return in_ranges(digit_ranges, ELEMENTSOF(digit_ranges), (uint32_t) r);
}

#define LEX_EOF (-1)

/* Nesting of "${x:-${y:-...}}" in a line scanned for heredocs (recursion);
 * deeper lines are treated as not lexable, so they have no heredocs. */
#define KILN_LIMIT_DOCKERFILE_LEX_DEPTH 256

/*
 * A subset of BuildKit's shell.Lex: word splitting with the escape token
 * '\\', an environment where nothing is set and SkipUnsetEnv (so "$x" and
 * "${x...}" stay as written), and the RawQuotes/RawEscapes switches. This is
 * what the parser uses to find heredoc words and their names; it reproduces
 * Lex's quirks, among them the words buffer shared by nested "${...}"
 * processing.
 */
struct lex {
        const unsigned char *s;
        size_t n, pos;
        bool raw_quotes, raw_escapes;
        struct sb wbuf; /* shell.shellWord.wordsBuffer */
        char *error;    /* set on failure */
        unsigned depth; /* nesting of "${...}" parts */
};

struct words {
        struct sb *buf;
        struct list out;
        bool in_word;
};

static int lex_fail(struct lex *l, const char *fmt, ...) _printf_(2, 3);
static int lex_fail(struct lex *l, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        free(l->error);
        l->error = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* text/scanner's Peek: the next rune or LEX_EOF; invalid UTF-8 is U+FFFD. */
static int32_t lex_peek(struct lex *l)
{
        size_t w;

        if (l->pos >= l->n)
                return LEX_EOF;
        return (int32_t) decode_rune(l->s + l->pos, l->n - l->pos, &w);
}

static int32_t lex_next(struct lex *l)
{
        size_t w;
        int32_t r;

        if (l->pos >= l->n)
                return LEX_EOF;
        r = (int32_t) decode_rune(l->s + l->pos, l->n - l->pos, &w);
        l->pos += w;
        return r;
}

/* string(rune), as Go converts a rune (LEX_EOF included) to text. */
static void sb_go_rune(struct sb *b, int32_t r)
{
        sb_rune(b, r < 0 ? 0xfffd : (uint32_t) r);
}

static void words_flush(struct words *w)
{
        if (w->buf->n > 0) {
                list_add(&w->out, w->buf->p, w->buf->n);
                w->buf->n = 0;
                w->in_word = false;
        }
}

static void words_add_raw_char(struct words *w, int32_t ch)
{
        sb_go_rune(w->buf, ch);
        w->in_word = true;
}

static void words_add_char(struct words *w, int32_t ch)
{
        bool space = ch >= 0 && rune_is_space((uint32_t) ch);

        if (space && w->in_word)
                words_flush(w);
        else if (!space)
                words_add_raw_char(w, ch);
}

static void words_add_string(struct words *w, const char *s, size_t n)
{
        size_t i = 0, k;

        while (i < n) {
                uint32_t r = decode_rune((const unsigned char *) s + i, n - i, &k);

                words_add_char(w, (int32_t) r);
                i += k;
        }
}

static void words_add_raw_string(struct words *w, const char *s, size_t n)
{
        sb_add(w->buf, s, n);
        w->in_word = true;
}

static int lex_stop_on(struct lex *l, int32_t stop, bool raw_escapes, struct sb *result,
                       struct list *words);

static int lex_single_quote(struct lex *l, struct sb *out)
{
        int32_t ch = lex_next(l);

        if (l->raw_quotes)
                sb_go_rune(out, ch);
        for (;;) {
                ch = lex_next(l);
                if (ch == LEX_EOF)
                        return lex_fail(l, "unexpected end of statement while looking for "
                                           "matching single-quote");
                if (ch == '\'') {
                        if (l->raw_quotes)
                                sb_go_rune(out, ch);
                        return 0;
                }
                sb_go_rune(out, ch);
        }
}

static int lex_dollar(struct lex *l, struct sb *out);

static int lex_double_quote(struct lex *l, struct sb *out)
{
        int32_t ch = lex_next(l);
        int r;

        if (l->raw_quotes)
                sb_go_rune(out, ch);
        for (;;) {
                switch (lex_peek(l)) {
                case LEX_EOF:
                        return lex_fail(l, "unexpected end of statement while looking for "
                                           "matching double-quote");
                case '"':
                        ch = lex_next(l);
                        if (l->raw_quotes)
                                sb_go_rune(out, ch);
                        return 0;
                case '$':
                        r = lex_dollar(l, out);
                        if (r < 0)
                                return r;
                        break;
                default:
                        ch = lex_next(l);
                        if (ch == '\\') {
                                int32_t p;

                                if (l->raw_escapes)
                                        sb_go_rune(out, ch);
                                p = lex_peek(l);
                                if (p == LEX_EOF)
                                        continue;
                                if (p == '"' || p == '$' || p == '\\')
                                        ch = lex_next(l);
                        }
                        sb_go_rune(out, ch);
                }
        }
}

static bool is_special_param(int32_t ch)
{
        return ch == '@' || ch == '*' || ch == '#' || ch == '?' || ch == '-' || ch == '$' ||
               ch == '!' || ch == '0';
}

static void lex_name(struct lex *l, struct sb *name)
{
        int32_t ch;

        while ((ch = lex_peek(l)) != LEX_EOF) {
                if (name->n == 0 && rune_is_digit(ch)) {
                        while ((ch = lex_peek(l)) != LEX_EOF && rune_is_digit(ch))
                                sb_go_rune(name, lex_next(l));
                        return;
                }
                if (name->n == 0 && is_special_param(ch)) {
                        sb_go_rune(name, lex_next(l));
                        return;
                }
                if (!rune_is_letter(ch) && !rune_is_digit(ch) && ch != '_')
                        return;
                sb_go_rune(name, lex_next(l));
        }
}

/* processStopOn for a "${...}" part; maps an error at the end of the input
 * to missing. */
static int lex_part(struct lex *l, int32_t stop, bool raw_escapes, struct sb *word,
                    const char *missing)
{
        int r = lex_stop_on(l, stop, raw_escapes, word, NULL);

        if (r < 0 && lex_peek(l) == LEX_EOF)
                return lex_fail(l, "%s", missing);
        return r;
}

/* processDollar with nothing set and SkipUnsetEnv: the text stays. */
static int lex_dollar(struct lex *l, struct sb *out)
{
        struct sb name = { 0 }, chs = { 0 }, word = { 0 }, repl = { 0 };
        int32_t ch;
        int r = 0;

        lex_next(l);
        if (lex_peek(l) != '{') {
                lex_name(l, &name);
                sb_add(out, "$", 1);
                if (name.n)
                        sb_add(out, name.p, name.n);
                free(name.p);
                return 0;
        }
        lex_next(l);
        ch = lex_peek(l);
        if (ch == LEX_EOF)
                return lex_fail(l, "syntax error: missing '}'");
        if (ch == '{' || ch == '}' || ch == ':')
                return lex_fail(l, "syntax error: bad substitution");
        lex_name(l, &name);
        sb_add(&name, "", 0);
        ch = lex_next(l);
        sb_go_rune(&chs, ch);
        switch (ch) {
        case '}':
                sb_add(out, "${", 2);
                sb_add(out, name.p, name.n);
                sb_add(out, "}", 1);
                break;
        case ':':
        case '+':
        case '-':
        case '?':
        case '#':
        case '%': {
                bool null_is_unset = false, raw;

                if (ch == ':') {
                        null_is_unset = true;
                        ch = lex_next(l);
                        sb_go_rune(&chs, ch);
                }
                raw = ch == '#' || ch == '%';
                if (null_is_unset && raw) {
                        r = lex_fail(l, "unsupported modifier (%s) in substitution", chs.p);
                        break;
                }
                r = lex_part(l, '}', raw, &word, "syntax error: missing '}'");
                if (r < 0)
                        break;
                sb_add(out, "${", 2);
                sb_add(out, name.p, name.n);
                sb_add(out, chs.p, chs.n);
                sb_add(out, word.p ? word.p : "", word.n);
                sb_add(out, "}", 1);
                break;
        }
        case '/':
                if (lex_peek(l) == '/')
                        lex_next(l);
                r = lex_part(l, '/', true, &word, "syntax error: missing '/' in ${}");
                if (r < 0)
                        break;
                r = lex_part(l, '}', true, &repl, "syntax error: missing '}'");
                if (r < 0)
                        break;
                sb_add(out, "${", 2);
                sb_add(out, name.p, name.n);
                sb_add(out, "/", 1);
                sb_add(out, word.p ? word.p : "", word.n);
                sb_add(out, "/", 1);
                sb_add(out, repl.p ? repl.p : "", repl.n);
                sb_add(out, "}", 1);
                break;
        default:
                r = lex_fail(l, "unsupported modifier (%s) in substitution", chs.p);
        }
        free(name.p);
        free(chs.p);
        free(word.p);
        free(repl.p);
        return r;
}

/* processPossibleHeredoc */
static void lex_heredoc(struct lex *l, struct sb *out)
{
        int32_t ch;

        lex_next(l);
        if (lex_peek(l) != '<') {
                sb_add(out, "<", 1);
                return;
        }
        lex_next(l);
        sb_add(out, "<<", 2);
        while ((ch = lex_peek(l)) == '\t' || ch == '\r' || ch == ' ')
                sb_go_rune(out, lex_next(l));
}

/* processStopOn: the text up to stop (LEX_EOF: the end) into result and,
 * when words is not NULL, its words. */
static int lex_stop_on(struct lex *l, int32_t stop, bool raw_escapes, struct sb *result,
                       struct list *words)
{
        struct words w = { .buf = &l->wbuf };
        bool saved = l->raw_escapes;
        int32_t ch;
        int r = 0;

        if (l->depth >= KILN_LIMIT_DOCKERFILE_LEX_DEPTH)
                return lex_fail(l, "substitutions nested deeper than %d",
                                KILN_LIMIT_DOCKERFILE_LEX_DEPTH);
        l->depth++;
        l->wbuf.n = 0;
        l->raw_escapes = raw_escapes;
        sb_add(result, "", 0);
        while ((ch = lex_peek(l)) != LEX_EOF) {
                if (stop != LEX_EOF && ch == stop) {
                        lex_next(l);
                        goto done;
                }
                if (ch == '$' || ch == '<' || ch == '\'' || ch == '"') {
                        struct sb tmp = { 0 };

                        if (ch == '$')
                                r = lex_dollar(l, &tmp);
                        else if (ch == '<')
                                lex_heredoc(l, &tmp);
                        else if (ch == '\'')
                                r = lex_single_quote(l, &tmp);
                        else
                                r = lex_double_quote(l, &tmp);
                        if (r < 0) {
                                free(tmp.p);
                                goto out;
                        }
                        sb_add(result, tmp.p ? tmp.p : "", tmp.n);
                        if (ch == '$')
                                words_add_string(&w, tmp.p ? tmp.p : "", tmp.n);
                        else
                                words_add_raw_string(&w, tmp.p ? tmp.p : "", tmp.n);
                        free(tmp.p);
                        continue;
                }
                ch = lex_next(l);
                if (ch == '\\') {
                        if (l->raw_escapes) {
                                words_add_raw_char(&w, ch);
                                sb_go_rune(result, ch);
                        }
                        ch = lex_next(l);
                        if (ch == LEX_EOF)
                                break;
                        words_add_raw_char(&w, ch);
                } else
                        words_add_char(&w, ch);
                sb_go_rune(result, ch);
        }
        if (stop != LEX_EOF) {
                r = lex_fail(l, "unexpected end of statement while looking for matching %c",
                             (char) stop);
                goto out;
        }
done:
        words_flush(&w);
        if (words) {
                *words = w.out;
                w.out = (struct list){ 0 };
        }
out:
        kiln_dockerfile_node_free(w.out.head);
        l->raw_escapes = saved;
        l->depth--;
        return r;
}

/* Lex.ProcessWords(s) with an empty environment: the words as a list in
 * *ret, or -EINVAL with *error ("failed to process ...: cause"). */
static int lex_words(const char *s, size_t n, bool raw_quotes, bool raw_escapes,
                     struct kiln_dockerfile_node **ret, char **error)
{
        struct lex l = {
                .s = (const unsigned char *) s,
                .n = n,
                .raw_quotes = raw_quotes,
                .raw_escapes = raw_escapes,
        };
        struct sb result = { 0 };
        struct list words = { 0 };
        int r;

        /* text/scanner skips a byte order mark at the start. */
        if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
                l.pos = 3;
        r = lex_stop_on(&l, LEX_EOF, raw_escapes, &result, &words);
        free(result.p);
        free(l.wbuf.p);
        if (r < 0) {
                _cleanup_(kiln_buf_release) struct kiln_buf q = KILN_BUF_INIT(SIZE_MAX);

                (void) kiln_buf_go_quote(&q, s, n);
                *error = kiln_xasprintf("failed to process %s: %s", q.data ? q.data : "\"\"",
                                        l.error ? l.error : "lexing failed");
                free(l.error);
                return r;
        }
        free(l.error);
        *ret = words.head;
        return 0;
}

/* ---- heredocs ---- */

void kiln_dockerfile_heredoc_release(struct kiln_dockerfile_heredoc *h)
{
        if (!h)
                return;
        free(h->name.s);
        free(h->content.s);
        *h = (struct kiln_dockerfile_heredoc){ 0 };
}

static size_t count_quotes(const char *s, size_t n)
{
        size_t i, k = 0;

        for (i = 0; i < n; i++)
                k += s[i] == '\'' || s[i] == '"';
        return k;
}

/* [\t\n\f\r ], RE2's \s */
static bool is_re_space(char c)
{
        return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/* ParseHeredoc: reHeredoc `^(\d*)<<(-?)\s*([^<]*)$` then heredocFromMatch.
 * 1 with *h, 0 not a heredoc, -EINVAL with *error. */
static int heredoc_parse(const char *s, size_t n, struct kiln_dockerfile_heredoc *h, char **error)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *words = NULL;
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *raw = NULL;
        size_t i = 0, digits, k;
        uint64_t fd = 0;
        bool chomp = false, overflow = false;
        const char *rest;
        int r;

        *h = (struct kiln_dockerfile_heredoc){ 0 };
        while (i < n && s[i] >= '0' && s[i] <= '9') {
                unsigned d = (unsigned) (s[i] - '0');

                if (fd > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        fd = fd * 10 + d;
                i++;
        }
        digits = i;
        if (n - i < 2 || s[i] != '<' || s[i + 1] != '<')
                return 0;
        i += 2;
        if (i < n && s[i] == '-') {
                chomp = true;
                i++;
        }
        while (i < n && is_re_space(s[i]))
                i++;
        if (memchr(s + i, '<', n - i))
                return 0;
        rest = s + i;
        k = n - i;
        if (k == 0)
                return 0;
        r = lex_words(rest, k, false, false, &words, error);
        if (r < 0)
                return r;
        if (!words || words->next)
                return 0;
        r = lex_words(rest, k, true, false, &raw, error);
        if (r < 0)
                return r;
        if (!raw || raw->next) {
                *error = kiln_xasprintf(
                        "internal lexing of heredoc produced inconsistent results: %.*s", (int) k,
                        rest);
                return -EINVAL;
        }
        h->name = words->value;
        words->value = (struct kiln_dockerfile_str){ 0 };
        h->content = str_dup("", 0);
        h->expand =
                count_quotes(h->name.s, h->name.len) == count_quotes(raw->value.s, raw->value.len);
        h->chomp = chomp;
        h->fd = digits == 0 ? 0 : overflow ? UINT64_MAX : fd;
        return 1;
}

int kiln_dockerfile_heredoc_parse(const char *word, size_t len, struct kiln_dockerfile_heredoc *h,
                                  struct kiln_error **err)
{
        _cleanup_free_ char *error = NULL;
        int r = heredoc_parse(word, len, h, &error);

        if (r < 0)
                return kiln_error_set(err, r, "%s", error);
        return r;
}

struct kiln_dockerfile_str kiln_dockerfile_heredoc_chomp(const char *s, size_t len)
{
        struct sb b = { 0 };
        size_t i = 0;

        while (i < len) {
                const char *nl;
                size_t end;

                while (i < len && s[i] == '\t')
                        i++;
                nl = memchr(s + i, '\n', len - i);
                end = nl ? (size_t) (nl - s) + 1 : len;
                sb_add(&b, s + i, end - i);
                i = end;
        }
        return sb_take(&b);
}

/* heredocsFromLine: the heredocs of an instruction line, in order. */
static int heredocs_from_line(struct pctx *c, const char *line, size_t n,
                              struct kiln_dockerfile_node *node)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *words = NULL;
        _cleanup_free_ char *ignored = NULL;
        struct kiln_dockerfile_node *w;

        /* BuildKit ignores a failure to lex the whole line: no heredocs. */
        if (lex_words(line, n, true, true, &words, &ignored) < 0)
                return 0;
        for (w = words; w; w = w->next) {
                struct kiln_dockerfile_heredoc h;
                char *error = NULL;
                int r = heredoc_parse(w->value.s, w->value.len, &h, &error);

                if (r < 0) {
                        free(c->dyn);
                        c->dyn = error;
                        return r;
                }
                if (r == 0)
                        continue;
                node->heredocs = kiln_xreallocarray(node->heredocs, node->n_heredocs + 1,
                                                    sizeof(*node->heredocs));
                node->heredocs[node->n_heredocs++] = h;
        }
        return 0;
}

/* canContainHeredoc */
static bool can_contain_heredoc(const struct kiln_dockerfile_node *node)
{
        if (cmd_is(&node->value, "onbuild") && node->next && node->next->n_children > 0)
                node = node->next->children[0];
        if (!cmd_is(&node->value, "run") && !cmd_is(&node->value, "copy") &&
            !cmd_is(&node->value, "add"))
                return false;
        return !node->json;
}

/* ---- directives ---- */

static const char *const directive_keys[] = { "syntax", "escape", "check" };

static bool is_ascii_alpha(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * The matching part of DirectiveParser.ParseLine: cut prefix, trim leading
 * space, then `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, and the key must be
 * known. Returns the key's index in directive_keys with the value in *v and *vn,
 * or -1.
 */
static int directive_match(const char *s, size_t n, const char *prefix, const char **v, size_t *vn)
{
        size_t pl = strlen(prefix), i = 0, kn, rn, t, k;
        const char *key, *rs;
        char lower[8];

        if (n < pl || memcmp(s, prefix, pl))
                return -1;
        s += pl;
        n -= pl;
        k = space_prefix(s, n);
        s += k;
        n -= k;
        if (n == 0 || !is_ascii_alpha(s[0]))
                return -1;
        while (i < n && (is_ascii_alpha(s[i]) || (s[i] >= '0' && s[i] <= '9')))
                i++;
        key = s;
        kn = i;
        while (i < n && is_re_space(s[i]))
                i++;
        if (i >= n || s[i] != '=')
                return -1;
        rs = s + i + 1;
        rn = n - i - 1;
        /* `\s*(.+?)\s*$`: `.` is anything but "\n" */
        t = rn;
        while (t > 0 && is_re_space(rs[t - 1]))
                t--;
        if (t > 0) {
                k = 0;
                while (is_re_space(rs[k]))
                        k++;
                if (memchr(rs + k, '\n', t - k))
                        return -1;
                *v = rs + k;
                *vn = t - k;
        } else {
                k = rn;
                while (k > 0 && rs[k - 1] == '\n')
                        k--;
                if (k == 0)
                        return -1;
                *v = rs + k - 1;
                *vn = 1;
        }
        if (kn >= sizeof(lower))
                return -1;
        for (i = 0; i < kn; i++)
                lower[i] = (char) (key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
        lower[kn] = '\0';
        for (i = 0; i < ELEMENTSOF(directive_keys); i++)
                if (streq(lower, directive_keys[i]))
                        return (int) i;
        return -1;
}

int kiln_dockerfile_directive_parse_line(const char *line, size_t len, const char *prefix,
                                         char **name, char **value)
{
        const char *v = NULL;
        size_t vn = 0;
        int k = directive_match(line, len, prefix ? prefix : "#", &v, &vn);

        *name = *value = NULL;
        if (k < 0)
                return 0;
        *name = kiln_xstrdup(directive_keys[k]);
        *value = kiln_xstrndup(v, vn);
        return 1;
}

/* DirectiveParser state of a parse. */
struct directive_parser {
        bool done;
        bool seen[ELEMENTSOF(directive_keys)];
};

/* ParseLine + possibleParserDirective: 1 directive (recorded in res), 0
 * not one, <0 error. */
static int directive_line(struct pctx *c, struct directive_parser *d,
                          struct kiln_dockerfile_result *res, const char *s, size_t n,
                          unsigned line)
{
        struct kiln_dockerfile_directive *dir;
        const char *v = NULL;
        size_t vn = 0;
        int k;

        if (d->done)
                return 0;
        k = directive_match(s, n, "#", &v, &vn);
        if (k < 0) {
                d->done = true;
                return 0;
        }
        if (d->seen[k])
                return fail(c, "only one %s parser directive can be used", directive_keys[k]);
        d->seen[k] = true;
        if (streq(directive_keys[k], "escape")) {
                if (vn != 1 || (v[0] != '`' && v[0] != '\\'))
                        return fail(c, "invalid escape token '%.*s' does not match ` or \\",
                                    (int) vn, v);
                c->escape = v[0];
        }
        res->directives = kiln_xreallocarray(res->directives, res->n_directives + 1,
                                             sizeof(*res->directives));
        dir = &res->directives[res->n_directives++];
        dir->name = kiln_xstrdup(directive_keys[k]);
        dir->value = kiln_xstrndup(v, vn);
        dir->line = line;
        return 1;
}

static bool is_comment(const char *s, size_t n)
{
        size_t p = space_prefix(s, n);

        return p < n && s[p] == '#';
}

/* trimContinuationCharacter: returns true at the end of the instruction. */
static bool trim_continuation(struct pctx *c, const char *s, size_t *n)
{
        size_t e = *n;

        while (e > 0 && (s[e - 1] == ' ' || s[e - 1] == '\t'))
                e--;
        if (e == 0 || s[e - 1] != c->escape)
                return true;
        if (e >= 2 && s[e - 2] == c->escape)
                return true;
        *n = e - 1;
        return false;
}

static void trim_newline(const char *s, size_t *n)
{
        while (*n > 0 && (s[*n - 1] == '\r' || s[*n - 1] == '\n'))
                (*n)--;
}

/* bufio.Scanner with scanLines: lines keep their "\n". */
struct reader {
        const char *data;
        size_t size, pos;
        bool too_long; /* the scanner stopped on an overlong line */
};

/* 1 with a line, 0 at the end or after an overlong line (too_long). */
static int next_line(struct reader *rd, const char **s, size_t *n)
{
        const char *nl;
        size_t len;

        if (rd->too_long || rd->pos >= rd->size)
                return 0;
        *s = rd->data + rd->pos;
        nl = memchr(*s, '\n', rd->size - rd->pos);
        len = nl ? (size_t) (nl - *s) + 1 : rd->size - rd->pos;
        if (len - (nl ? 1 : 0) > KILN_LIMIT_DOCKERFILE_LINE) {
                rd->too_long = true;
                return 0;
        }
        rd->pos += len;
        *n = len;
        return 1;
}

static int set_err(struct kiln_error **err, int code, const char *file, unsigned line,
                   const char *msg)
{
        kiln_error_set(err, code, "%s:%u: %s", file ? file : "<input>", line, msg);
        if (err && *err) {
                (*err)->line = line;
                free((*err)->file);
                (*err)->file = file ? kiln_xstrdup(file) : NULL;
        }
        return code;
}

struct kiln_dockerfile_result *kiln_dockerfile_result_free(struct kiln_dockerfile_result *r)
{
        size_t i;

        if (!r)
                return NULL;
        kiln_dockerfile_node_free(r->root);
        for (i = 0; i < r->n_directives; i++) {
                free(r->directives[i].name);
                free(r->directives[i].value);
        }
        free(r->directives);
        for (i = 0; i < r->n_warnings; i++) {
                free(r->warnings[i].message);
                free(r->warnings[i].detail);
                free(r->warnings[i].url);
        }
        free(r->warnings);
        free(r);
        return NULL;
}

static void add_warning(struct kiln_dockerfile_result *res, const char *line, size_t n, unsigned at)
{
        struct kiln_dockerfile_warning *w;

        res->warnings =
                kiln_xreallocarray(res->warnings, res->n_warnings + 1, sizeof(*res->warnings));
        w = &res->warnings[res->n_warnings++];
        w->message = kiln_xasprintf("Empty continuation line found in: %.*s", (int) n, line);
        w->detail = kiln_xstrdup("Empty continuation lines will become errors in a future release");
        w->url = kiln_xstrdup("https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/");
        w->line = at;
}

/* Comments seen before the next instruction (Node.PrevComment). */
struct comments {
        struct kiln_dockerfile_str *v;
        size_t n;
};

static void comments_clear(struct comments *cm)
{
        size_t i;

        for (i = 0; i < cm->n; i++)
                free(cm->v[i].s);
        free(cm->v);
        *cm = (struct comments){ 0 };
}

/* Reads the heredoc bodies of node from rd; false when one is unterminated. */
static bool read_heredocs(struct reader *rd, struct kiln_dockerfile_node *node, unsigned *line)
{
        size_t i;

        for (i = 0; i < node->n_heredocs; i++) {
                struct kiln_dockerfile_heredoc *h = &node->heredocs[i];
                struct sb content = { 0 };
                bool terminated = false;
                const char *s;
                size_t n;

                while (next_line(rd, &s, &n)) {
                        const char *t = s;
                        size_t tn = n;

                        (*line)++;
                        trim_newline(t, &tn);
                        if (h->chomp)
                                while (tn > 0 && t[0] == '\t') {
                                        t++;
                                        tn--;
                                }
                        if (tn == h->name.len && !memcmp(t, h->name.s, tn)) {
                                terminated = true;
                                break;
                        }
                        sb_add(&content, s, n);
                }
                if (!terminated) {
                        free(content.p);
                        return false;
                }
                free(h->content.s);
                h->content = sb_take(&content);
        }
        return true;
}

int kiln_dockerfile_parse_full(const char *data, size_t size, const char *file,
                               struct kiln_dockerfile_result **ret, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *res = NULL;
        struct kiln_dockerfile_node *top;
        struct pctx c = { .escape = '\\' };
        struct directive_parser d = { 0 };
        struct reader rd = { .data = data, .size = size };
        struct comments cm = { 0 };
        struct sb buf = { 0 };
        unsigned line = 0, at = 0;
        const char *s, *raw;
        size_t n, rawn;
        int r;

        *ret = NULL;
        if (size > KILN_LIMIT_DOCKERFILE_FILE)
                return set_err(err, -E2BIG, file, 1, "dockerfile larger than the maximum size");
        res = kiln_xcalloc(1, sizeof(*res));
        res->root = top = node_new("", 0);
        while (next_line(&rd, &raw, &rawn)) {
                struct kiln_dockerfile_node *child = NULL;
                bool end, empty_continuation = false;
                unsigned start;

                if (line == 0 && rawn >= 3 && !memcmp(raw, "\xef\xbb\xbf", 3)) {
                        raw += 3;
                        rawn -= 3;
                }
                if (is_comment(raw, rawn)) {
                        const char *t = raw + 1;
                        size_t tn = rawn - 1;

                        trim_space(&t, &tn);
                        if (tn == 0)
                                comments_clear(&cm);
                        else {
                                cm.v = kiln_xreallocarray(cm.v, cm.n + 1, sizeof(*cm.v));
                                cm.v[cm.n++] = str_dup(t, tn);
                        }
                }
                s = raw;
                n = rawn;
                trim_newline(s, &n);
                {
                        size_t p = space_prefix(s, n);

                        s += p;
                        n -= p;
                }
                r = directive_line(&c, &d, res, s, n, line + 1);
                if (r < 0) {
                        at = line + 1;
                        goto fail;
                }
                if (r > 0 && cm.n > 0)
                        free(cm.v[--cm.n].s);
                if (is_comment(s, n))
                        n = 0;
                line++;
                start = line;
                end = trim_continuation(&c, s, &n);
                if (end && n == 0)
                        continue;
                buf.n = 0;
                sb_add(&buf, s, n);
                while (!end && next_line(&rd, &raw, &rawn)) {
                        s = raw;
                        n = rawn;
                        trim_newline(s, &n);
                        r = directive_line(&c, &d, res, s, n, line + 1);
                        if (r < 0) {
                                at = line + 1;
                                goto fail;
                        }
                        line++;
                        if (is_comment(raw, rawn))
                                continue;
                        if (space_prefix(s, n) == n) {
                                empty_continuation = true;
                                continue;
                        }
                        end = trim_continuation(&c, s, &n);
                        sb_add(&buf, s, n);
                }
                if (empty_continuation)
                        add_warning(res, buf.p, buf.n, line);
                r = node_from_line(&c, buf.p, buf.n, 0, &child);
                if (r < 0) {
                        at = start;
                        goto fail;
                }
                add_child(top, child);
                child->start_line = start;
                child->end_line = line;
                if (top->n_children == 1)
                        top->start_line = start;
                top->end_line = line;
                child->comments = cm.v;
                child->n_comments = cm.n;
                cm = (struct comments){ 0 };
                if (can_contain_heredoc(child) && memmem(buf.p, buf.n, "<<", 2)) {
                        r = heredocs_from_line(&c, buf.p, buf.n, child);
                        if (r < 0) {
                                at = start;
                                goto fail;
                        }
                        if (!read_heredocs(&rd, child, &line)) {
                                at = start;
                                r = fail(&c, "unterminated heredoc");
                                goto fail;
                        }
                        child->end_line = top->end_line = line;
                }
        }
        free(buf.p);
        comments_clear(&cm);
        if (top->n_children == 0)
                return set_err(err, -EINVAL, file, line ? line : 1, "file with no instructions");
        if (rd.too_long)
                return set_err(err, -E2BIG, file, line + 1,
                               "dockerfile line greater than max allowed size of 65535");
        res->escape = c.escape;
        *ret = TAKE_PTR(res);
        return 0;

fail:
        free(buf.p);
        comments_clear(&cm);
        r = set_err(err, r, file, at, c.dyn ? c.dyn : "parse error");
        free(c.dyn);
        return r;
}

int kiln_dockerfile_parse(const char *data, size_t size, const char *file,
                          struct kiln_dockerfile_node **root, struct kiln_error **err)
{
        struct kiln_dockerfile_result *res = NULL;
        int r;

        *root = NULL;
        r = kiln_dockerfile_parse_full(data, size, file, &res, err);
        if (r < 0)
                return r;
        *root = TAKE_PTR(res->root);
        kiln_dockerfile_result_free(res);
        return 0;
}

/* ---- directives outside a parse (dockerui's syntax detection) ---- */

/* detectDirectiveFromParser with a fresh DirectiveParser over data's lines
 * (bufio.ScanLines: "\n" and a "\r" before it removed). */
static bool detect_in_lines(const char *data, size_t size, const char *key, const char *prefix,
                            unsigned line, const char **v, size_t *vn, unsigned *at)
{
        bool seen[ELEMENTSOF(directive_keys)] = { false };
        size_t pos = 0;

        while (pos < size) {
                const char *s = data + pos, *nl = memchr(s, '\n', size - pos);
                size_t n = nl ? (size_t) (nl - s) : size - pos;
                const char *dv = NULL;
                size_t dvn = 0;
                int k;

                if (n > KILN_LIMIT_DOCKERFILE_LINE)
                        return false;
                pos += n + (nl ? 1 : 0);
                if (n > 0 && s[n - 1] == '\r')
                        n--;
                line++;
                k = directive_match(s, n, prefix, &dv, &dvn);
                if (k < 0 || seen[k])
                        return false;
                seen[k] = true;
                if (streq(directive_keys[k], key)) {
                        *v = dv;
                        *vn = dvn;
                        *at = line;
                        return true;
                }
        }
        return false;
}

int kiln_dockerfile_directive_detect(const char *data, size_t size, const char *key,
                                     bool any_format, char **value, char **cmdline, unsigned *line)
{
        const char *v = NULL, *nl, *sp;
        unsigned first = 0, at = 0;
        size_t vn = 0;
        json_t *j = NULL;
        bool found;

        if (value)
                *value = NULL;
        if (cmdline)
                *cmdline = NULL;
        if (line)
                *line = 0;
        if (size >= 3 && !memcmp(data, "\xef\xbb\xbf", 3)) {
                data += 3;
                size -= 3;
        }
        if (size >= 2 && data[0] == '#' && data[1] == '!') {
                nl = memchr(data, '\n', size);
                size = nl ? size - (size_t) (nl - data) - 1 : 0;
                data = nl ? nl + 1 : data;
                first = 1;
        }
        found = detect_in_lines(data, size, key, "#", first, &v, &vn, &at);
        if (!found && any_format)
                found = detect_in_lines(data, size, key, "//", first, &v, &vn, &at);
        if (!found && any_format) {
                j = json_load_go(data, size);
                if (j && json_is_object(j) && json_is_string(json_object_get(j, key))) {
                        json_t *s = json_object_get(j, key);

                        v = json_string_value(s);
                        vn = json_string_length(s);
                        at = first;
                        found = true;
                }
        }
        if (found) {
                /* the JSON form keeps the whole value; the comment forms cut
                 * the reference at the first space */
                sp = j ? NULL : memchr(v, ' ', vn);
                if (value)
                        *value = kiln_xstrndup(v, sp ? (size_t) (sp - v) : vn);
                if (cmdline)
                        *cmdline = kiln_xstrndup(v, vn);
                if (line)
                        *line = at;
        }
        json_decref(j);
        return found ? 1 : 0;
}

/* ---- dump ---- */

void kiln_dockerfile_quote(const char *s, size_t len, FILE *out)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        (void) kiln_buf_go_quote(&b, s, len);
        fwrite(b.data, 1, b.len, out);
}

/* strings.ToLower: ASCII-only text is lowered byte-wise; other text rune by
 * rune, invalid UTF-8 turning into U+FFFD. */
static void dump_lower(const struct kiln_dockerfile_str *v, FILE *out)
{
        struct sb b = { 0 };
        size_t i, w;
        bool ascii = true;

        for (i = 0; i < v->len; i++)
                ascii = ascii && (unsigned char) v->s[i] < 0x80;
        if (ascii) {
                for (i = 0; i < v->len; i++)
                        fputc((int) rune_to_lower((unsigned char) v->s[i]), out);
                return;
        }
        for (i = 0; i < v->len; i += w)
                sb_rune(&b, rune_to_lower(
                                    decode_rune((const unsigned char *) v->s + i, v->len - i, &w)));
        fwrite(b.p, 1, b.n, out);
        free(b.p);
}

static void dump_node(const struct kiln_dockerfile_node *n, FILE *out)
{
        const struct kiln_dockerfile_node *a;
        size_t i;

        dump_lower(&n->value, out);
        if (n->n_flags > 0) {
                fputs(" [", out);
                for (i = 0; i < n->n_flags; i++) {
                        if (i)
                                fputc(' ', out);
                        kiln_dockerfile_quote(n->flags[i].s, n->flags[i].len, out);
                }
                fputc(']', out);
        }
        for (i = 0; i < n->n_children; i++) {
                fputc('(', out);
                dump_node(n->children[i], out);
                fputc(')', out);
        }
        for (a = n->next; a; a = a->next) {
                fputc(' ', out);
                if (a->n_children > 0)
                        dump_node(a, out);
                else
                        kiln_dockerfile_quote(a->value.s, a->value.len, out);
        }
}

int kiln_dockerfile_dump(const struct kiln_dockerfile_node *n, FILE *out)
{
        size_t i;

        for (i = 0; i < n->n_children; i++) {
                fputc('(', out);
                dump_node(n->children[i], out);
                fputs(")\n", out);
        }
        return ferror(out) ? -EIO : 0;
}
