/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dockerfile parser following BuildKit's frontend/dockerfile/parser
 * (parser.go, line_parsers.go, split_command.go, directives.go), including
 * its byte/rune quirks, so the dumps match upstream's test results.
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

/* parseJSON: 1 parsed, 0 not a JSON array, <0 error (non-string element). */
static int parse_json(struct pctx *c, const char *s, size_t n, struct list *out)
{
        json_t *j;
        json_error_t e;
        size_t i, p = space_prefix(s, n);

        if (p >= n || s[p] != '[')
                return 0;
        j = json_loadb(s + p, n - p, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
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

static int dispatch(struct pctx *c, const char *cmd, const char *s, size_t n, unsigned depth,
                    struct list *out, bool *js)
{
        int r;

        if (!strcasecmp(cmd, "from") || !strcasecmp(cmd, "expose")) {
                if (n)
                        split_ws(s, n, -1, out);
                return 0;
        }
        if (!strcasecmp(cmd, "add") || !strcasecmp(cmd, "copy") || !strcasecmp(cmd, "volume")) {
                r = parse_json(c, s, n, out);
                if (r < 0)
                        return r;
                if (r > 0)
                        *js = true;
                else if (n)
                        split_ws(s, n, -1, out);
                return 0;
        }
        if (!strcasecmp(cmd, "run") || !strcasecmp(cmd, "cmd") || !strcasecmp(cmd, "entrypoint") ||
            !strcasecmp(cmd, "shell"))
                return parse_maybe_json(c, s, n, out, js);
        if (!strcasecmp(cmd, "env"))
                return parse_name_val(c, s, n, "ENV", out);
        if (!strcasecmp(cmd, "label"))
                return parse_name_val(c, s, n, "LABEL", out);
        if (!strcasecmp(cmd, "arg")) {
                parse_words(c, s, n, out);
                return 0;
        }
        if (!strcasecmp(cmd, "maintainer") || !strcasecmp(cmd, "user") ||
            !strcasecmp(cmd, "workdir") || !strcasecmp(cmd, "stopsignal")) {
                if (n)
                        list_add(out, s, n);
                return 0;
        }
        if (!strcasecmp(cmd, "healthcheck")) {
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
        if (!strcasecmp(cmd, "onbuild")) {
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

        trim_space(&line, &n);
        while (i < n && !is_ws(line[i]))
                i++;
        node = node_new(line, i);
        if (i < n) {
                size_t off;

                while (i < n && is_ws(line[i]))
                        i++;
                off = extract_flags(c, line + i, n - i, node);
                rest = line + i + off;
                rn = n - i - off;
                trim_space(&rest, &rn);
        }
        r = dispatch(c, node->value.s, rest, rn, depth, &args, &node->json);
        if (r < 0) {
                kiln_dockerfile_node_free(args.head);
                return r;
        }
        node->next = args.head;
        *ret = TAKE_PTR(node);
        return 0;
}

/* ---- lines and directives ---- */

struct directive_parser {
        bool done;
        bool seen_syntax, seen_escape, seen_check;
};

static bool dir_ws(char ch)
{
        return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\f' || ch == '\r';
}

/* DirectiveParser.ParseLine + possibleParserDirective: 1 directive, 0 not. */
static int directive_line(struct pctx *c, struct directive_parser *d, const char *s, size_t n)
{
        size_t i, ks, ke, vs, ve;
        bool *seen;
        char key[8];

        if (d->done)
                return 0;
        if (n == 0 || s[0] != '#') {
                d->done = true;
                return 0;
        }
        s++;
        n--;
        i = space_prefix(s, n);
        ks = i;
        if (i >= n || !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) {
                d->done = true;
                return 0;
        }
        while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                         (s[i] >= '0' && s[i] <= '9')))
                i++;
        ke = i;
        while (i < n && dir_ws(s[i]))
                i++;
        if (i >= n || s[i] != '=') {
                d->done = true;
                return 0;
        }
        i++;
        while (i < n && dir_ws(s[i]))
                i++;
        vs = i;
        ve = n;
        while (ve > vs && dir_ws(s[ve - 1]))
                ve--;
        if (ve == vs) {
                d->done = true;
                return 0;
        }
        if (ke - ks >= sizeof(key)) {
                d->done = true;
                return 0;
        }
        for (i = ks; i < ke; i++)
                key[i - ks] = (char) (s[i] | 0x20);
        key[ke - ks] = '\0';
        if (streq(key, "syntax"))
                seen = &d->seen_syntax;
        else if (streq(key, "escape"))
                seen = &d->seen_escape;
        else if (streq(key, "check"))
                seen = &d->seen_check;
        else {
                d->done = true;
                return 0;
        }
        if (*seen)
                return fail(c, "only one %s parser directive can be used", key);
        *seen = true;
        if (seen == &d->seen_escape) {
                if (ve - vs != 1 || (s[vs] != '`' && s[vs] != '\\'))
                        return fail(c, "invalid escape token '%.*s' does not match ` or \\",
                                    (int) (ve - vs), s + vs);
                c->escape = s[vs];
        }
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

struct reader {
        const char *data;
        size_t size, pos;
};

/* scanLines; 1 with a line, 0 at EOF, <0 for an overlong line */
static int next_line(struct reader *rd, const char **s, size_t *n)
{
        const char *nl;
        size_t len;

        if (rd->pos >= rd->size)
                return 0;
        *s = rd->data + rd->pos;
        nl = memchr(*s, '\n', rd->size - rd->pos);
        len = nl ? (size_t) (nl - *s) + 1 : rd->size - rd->pos;
        if (len - (nl ? 1 : 0) > KILN_LIMIT_DOCKERFILE_LINE)
                return -E2BIG;
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

int kiln_dockerfile_parse(const char *data, size_t size, const char *file,
                          struct kiln_dockerfile_node **root, struct kiln_error **err)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *top = NULL;
        struct pctx c = { .escape = '\\' };
        struct directive_parser d = { 0 };
        struct reader rd = { .data = data, .size = size };
        struct sb buf = { 0 };
        unsigned line = 0;
        const char *s;
        size_t n;
        int r;

        *root = NULL;
        if (size > KILN_LIMIT_DOCKERFILE_FILE)
                return set_err(err, -E2BIG, file, 1, "dockerfile larger than the maximum size");
        top = node_new("", 0);
        for (;;) {
                unsigned start;
                bool end;
                struct kiln_dockerfile_node *child = NULL;

                r = next_line(&rd, &s, &n);
                if (r == 0)
                        break;
                if (r < 0)
                        goto too_long;
                if (line == 0 && n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3)) {
                        s += 3;
                        n -= 3;
                }
                trim_newline(s, &n);
                {
                        size_t p = space_prefix(s, n);

                        s += p;
                        n -= p;
                }
                r = directive_line(&c, &d, s, n);
                if (r < 0) {
                        line++;
                        goto fail;
                }
                if (is_comment(s, n))
                        n = 0;
                line++;
                start = line;
                end = trim_continuation(&c, s, &n);
                if (end && n == 0)
                        continue;
                buf.n = 0;
                sb_add(&buf, s, n);
                while (!end) {
                        const char *raw;
                        size_t rawn;

                        r = next_line(&rd, &raw, &rawn);
                        if (r == 0)
                                break;
                        if (r < 0)
                                goto too_long;
                        s = raw;
                        n = rawn;
                        trim_newline(s, &n);
                        r = directive_line(&c, &d, s, n);
                        line++;
                        if (r < 0)
                                goto fail;
                        if (is_comment(raw, rawn))
                                continue;
                        if (space_prefix(s, n) == n)
                                continue;
                        end = trim_continuation(&c, s, &n);
                        sb_add(&buf, s, n);
                }
                r = node_from_line(&c, buf.p, buf.n, 0, &child);
                if (r < 0)
                        goto fail;
                child->start_line = start;
                child->end_line = line;
                if (top->n_children == 0)
                        top->start_line = start;
                top->end_line = line;
                add_child(top, child);
        }
        free(buf.p);
        if (top->n_children == 0)
                return set_err(err, -EINVAL, file, line ? line : 1, "file with no instructions");
        *root = TAKE_PTR(top);
        return 0;

too_long:
        free(buf.p);
        return set_err(err, -E2BIG, file, line + 1,
                       "dockerfile line greater than max allowed size of 65535");
fail:
        free(buf.p);
        r = set_err(err, r, file, line, c.dyn ? c.dyn : "parse error");
        free(c.dyn);
        return r;
}

/* ---- dump ---- */

void kiln_dockerfile_quote(const char *s, size_t len, FILE *out)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        (void) kiln_buf_go_quote(&b, s, len);
        fwrite(b.data, 1, b.len, out);
}

static void dump_node(const struct kiln_dockerfile_node *n, FILE *out)
{
        const struct kiln_dockerfile_node *a;
        size_t i;

        for (i = 0; i < n->value.len; i++) {
                char ch = n->value.s[i];

                fputc(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch, out);
        }
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
