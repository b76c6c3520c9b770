/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dockerfile parser following BuildKit's frontend/dockerfile/parser
 * (parser.go, line_parsers.go, split_command.go, directives.go), including
 * its byte/rune quirks, so the dumps match upstream's test results. Heredoc
 * words are found with the shell-word lexer (dockerfile/shell.h), as BuildKit
 * does; Go's JSON decoding and Unicode rules are emulated where they decide
 * the outcome.
 */

#include "dockerfile/parser.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "base/banned.h"
#include "base/goquote.h"
#include "base/macro.h"
#include "base/unicode.h"
#include "dockerfile/shell.h"

/* The parser's strings are pieces of its input (at most
 * KILN_LIMIT_DOCKERFILE_FILE bytes), at most three times as long where bytes
 * that are not UTF-8 become U+FFFD: their buffers need no maximum of their
 * own, and appends to them cannot fail. */
#define TEXT_INIT KILN_BUF_INIT(SIZE_MAX)

static void text_add(struct kiln_buf *b, const char *s, size_t n)
{
        (void) kiln_buf_append(b, s, n);
}

static void text_rune(struct kiln_buf *b, uint32_t r)
{
        char u[4];

        text_add(b, u, kiln_utf8_encode(r, u));
}

static struct kiln_dockerfile_str text_take(struct kiln_buf *b)
{
        struct kiln_dockerfile_str s = { .len = b->len };

        s.s = kiln_buf_steal(b);
        return s;
}

static struct kiln_dockerfile_str str_dup(const char *s, size_t n)
{
        struct kiln_buf b = TEXT_INIT;

        text_add(&b, s, n);
        return text_take(&b);
}

/* unicode.IsSpace(rune(byte)), as split_command.go applies it to bytes. */
static bool byte_is_space(unsigned char c)
{
        return kiln_unicode_is_space(c);
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
                uint32_t r = kiln_utf8_decode_rune(s + i, n - i, &w);

                if (!kiln_unicode_is_space(r) ||
                    (r == 0xfffd && w == 1 && (unsigned char) s[i] >= 0x80))
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
                        uint32_t r = kiln_utf8_decode_rune(*s + *n - w, w, &ww);

                        if (ww == w && kiln_unicode_is_space(r) &&
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
        struct kiln_buf b = TEXT_INIT;

        for (pos = 0; pos <= n; pos += w) {
                if (pos != n)
                        ch = kiln_utf8_decode_rune(s + pos, n - pos, &w);
                if (phase == IN_SPACES) {
                        if (pos == n)
                                break;
                        if (kiln_unicode_is_space(ch))
                                continue;
                        phase = IN_WORD;
                }
                if (pos == n) {
                        if (blank_ok || b.len > 0)
                                list_add(out, b.data ? b.data : "", b.len);
                        break;
                }
                if (phase == IN_WORD) {
                        if (kiln_unicode_is_space(ch)) {
                                phase = IN_SPACES;
                                if (blank_ok || b.len > 0)
                                        list_add(out, b.data ? b.data : "", b.len);
                                kiln_buf_reset(&b);
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
                                text_rune(&b, ch);
                                pos += w;
                                ch = kiln_utf8_decode_rune(s + pos, n - pos, &w);
                        }
                        text_rune(&b, ch);
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
                        text_rune(&b, ch);
                        ch = kiln_utf8_decode_rune(s + pos, n - pos, &w);
                }
                text_rune(&b, ch);
        }
        kiln_buf_release(&b);
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
        struct kiln_buf b = TEXT_INIT;
        bool in_str = false;
        size_t i = 0, w;

        while (i < n) {
                unsigned char ch = (unsigned char) s[i];

                if (ch >= 0x80) {
                        uint32_t r = kiln_utf8_decode_rune(s + i, n - i, &w);

                        if (r == 0xfffd && w == 1)
                                text_add(&b, "\xef\xbf\xbd", 3);
                        else
                                text_add(&b, s + i, w);
                        i += w;
                        continue;
                }
                if (!in_str) {
                        in_str = ch == '"';
                        text_add(&b, s + i, 1);
                        i++;
                        continue;
                }
                if (ch == '"') {
                        in_str = false;
                        text_add(&b, s + i, 1);
                        i++;
                        continue;
                }
                if (ch == '\\' && i + 1 < n && s[i + 1] == 'u') {
                        long hi = u4(s + i, n - i);
                        long lo = n - i >= 12 ? u4(s + i + 6, n - i - 6) : -1;

                        if (hi >= 0xd800 && hi <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) {
                                text_add(&b, s + i, 12);
                                i += 12;
                        } else if (hi >= 0xd800 && hi <= 0xdfff) {
                                text_add(&b, "\\ufffd", 6);
                                i += 6;
                        } else {
                                text_add(&b, s + i, 2);
                                i += 2;
                        }
                        continue;
                }
                if (ch == '\\' && i + 1 < n) {
                        text_add(&b, s + i, 2);
                        i += 2;
                        continue;
                }
                text_add(&b, s + i, 1);
                i++;
        }
        return text_take(&b);
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

/* extractBuilderFlags: returns the offset of the rest in line. */
static size_t extract_flags(struct pctx *c, const char *line, size_t n,
                            struct kiln_dockerfile_node *node)
{
        enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
        unsigned char ch = 0, quote = 0;
        bool blank_ok = false;
        struct kiln_buf b = TEXT_INIT;
        size_t pos;

#define PUSH_FLAG()                                                                               \
        do {                                                                                      \
                node->flags =                                                                     \
                        kiln_xreallocarray(node->flags, node->n_flags + 1, sizeof(*node->flags)); \
                node->flags[node->n_flags++] = str_dup(b.data ? b.data : "", b.len);              \
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
                                kiln_buf_release(&b);
                                return pos;
                        }
                        phase = IN_WORD;
                }
                if (pos == n) {
                        bool dd = b.len == 2 && !memcmp(b.data, "--", 2);

                        if (!dd && (blank_ok || b.len > 0))
                                PUSH_FLAG();
                        break;
                }
                if (phase == IN_WORD) {
                        if (byte_is_space(ch)) {
                                phase = IN_SPACES;
                                if (b.len == 2 && !memcmp(b.data, "--", 2)) {
                                        kiln_buf_release(&b);
                                        return pos;
                                }
                                if (blank_ok || b.len > 0)
                                        PUSH_FLAG();
                                kiln_buf_reset(&b);
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
                        text_rune(&b, ch); /* WriteRune(rune(byte)): Latin-1 */
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
                text_rune(&b, ch); /* WriteRune(rune(byte)): Latin-1 */
        }
#undef PUSH_FLAG
        kiln_buf_release(&b);
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

/* The shell.Lex settings of BuildKit's parser for heredocs: escape '\\'
 * whatever the escape directive, nothing set, and SkipUnsetEnv so that "$x"
 * and "${x...}" stay as written. The line is split into words with raw
 * quotes and escapes; a heredoc word's name is lexed without and with raw
 * quotes, to tell whether any of it was quoted. */
static const struct kiln_shell_lex heredoc_line_lex = {
        .escape = '\\', .raw_quotes = true, .raw_escapes = true, .skip_unset_env = true
};
static const struct kiln_shell_lex heredoc_name_lex = { .escape = '\\', .skip_unset_env = true };
static const struct kiln_shell_lex heredoc_raw_name_lex = { .escape = '\\',
                                                            .raw_quotes = true,
                                                            .skip_unset_env = true };

/* ParseHeredoc: reHeredoc `^(\d*)<<(-?)\s*([^<]*)$` then heredocFromMatch. */
int kiln_dockerfile_heredoc_parse(const char *s, size_t n, struct kiln_dockerfile_heredoc *h,
                                  struct kiln_error **err)
{
        _cleanup_(kiln_shell_result_release) struct kiln_shell_result words = { 0 };
        _cleanup_(kiln_shell_result_release) struct kiln_shell_result raw = { 0 };
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
        r = kiln_shell_expand_n(&heredoc_name_lex, rest, k, NULL, &words, err);
        if (r < 0)
                return r;
        if (words.n_words != 1)
                return 0;
        r = kiln_shell_expand_n(&heredoc_raw_name_lex, rest, k, NULL, &raw, err);
        if (r < 0)
                return r;
        if (raw.n_words != 1)
                return kiln_error_set(
                        err, -EINVAL,
                        "internal lexing of heredoc produced inconsistent results: %.*s", (int) k,
                        rest);
        h->expand = count_quotes(words.words[0], words.word_lens[0]) ==
                    count_quotes(raw.words[0], raw.word_lens[0]);
        h->name.len = words.word_lens[0];
        h->name.s = TAKE_PTR(words.words[0]);
        h->content = str_dup("", 0);
        h->chomp = chomp;
        h->fd = digits == 0 ? 0 : overflow ? UINT64_MAX : fd;
        return 1;
}

struct kiln_dockerfile_str kiln_dockerfile_heredoc_chomp(const char *s, size_t len)
{
        struct kiln_buf b = TEXT_INIT;
        size_t i = 0;

        while (i < len) {
                const char *nl;
                size_t end;

                while (i < len && s[i] == '\t')
                        i++;
                nl = memchr(s + i, '\n', len - i);
                end = nl ? (size_t) (nl - s) + 1 : len;
                text_add(&b, s + i, end - i);
                i = end;
        }
        return text_take(&b);
}

/* heredocsFromLine: the heredocs of an instruction line, in order. */
static int heredocs_from_line(struct pctx *c, const char *line, size_t n,
                              struct kiln_dockerfile_node *node)
{
        _cleanup_(kiln_shell_result_release) struct kiln_shell_result words = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

        /* BuildKit ignores a failure to lex the whole line: no heredocs. */
        if (kiln_shell_expand_n(&heredoc_line_lex, line, n, NULL, &words, &e) < 0)
                return 0;
        for (size_t i = 0; i < words.n_words; i++) {
                struct kiln_dockerfile_heredoc h;
                int r = kiln_dockerfile_heredoc_parse(words.words[i], words.word_lens[i], &h, &e);

                if (r < 0) {
                        (void) fail(c, "%s", kiln_error_message(e));
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
                struct kiln_buf content = TEXT_INIT;
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
                        text_add(&content, s, n);
                }
                if (!terminated) {
                        kiln_buf_release(&content);
                        return false;
                }
                free(h->content.s);
                h->content = text_take(&content);
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
        struct kiln_buf buf = TEXT_INIT;
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
                kiln_buf_reset(&buf);
                text_add(&buf, s, n);
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
                        text_add(&buf, s, n);
                }
                if (empty_continuation)
                        add_warning(res, buf.data, buf.len, line);
                r = node_from_line(&c, buf.data, buf.len, 0, &child);
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
                if (can_contain_heredoc(child) && memmem(buf.data, buf.len, "<<", 2)) {
                        r = heredocs_from_line(&c, buf.data, buf.len, child);
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
        kiln_buf_release(&buf);
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
        kiln_buf_release(&buf);
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
        struct kiln_buf b = TEXT_INIT;
        size_t i, w;
        bool ascii = true;

        for (i = 0; i < v->len; i++)
                ascii = ascii && (unsigned char) v->s[i] < 0x80;
        if (ascii) {
                for (i = 0; i < v->len; i++)
                        fputc((int) kiln_unicode_to_lower((unsigned char) v->s[i]), out);
                return;
        }
        for (i = 0; i < v->len; i += w)
                text_rune(&b,
                          kiln_unicode_to_lower(kiln_utf8_decode_rune(v->s + i, v->len - i, &w)));
        fwrite(b.data, 1, b.len, out);
        kiln_buf_release(&b);
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
