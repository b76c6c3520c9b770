/* SPDX-License-Identifier: Apache-2.0 */
#include "base/pattern.h"

#include "base/buf.h"
#include "base/goquote.h"
#include "base/unicode.h"

#define RUNE_ERROR 0xFFFDu
#define RUNE_MAX   0x10FFFFu

/* Deepest group nesting in a translated pattern (only the optional group
 * that "**" becomes exists, so 1 in practice). */
#define PATTERN_GROUP_DEPTH 8

/* ---- filepath.Match ------------------------------------------------- */

/* A slice of a string, as Go passes them around. */
struct str {
        const char *p;
        size_t n;
};

static struct str str_skip(struct str s, size_t k)
{
        return (struct str){ s.p + k, s.n - k };
}

static void scan_chunk(struct str *pattern, bool *star, struct str *chunk)
{
        bool inrange = false;
        size_t i;

        *star = false;
        while (pattern->n > 0 && pattern->p[0] == '*') {
                *pattern = str_skip(*pattern, 1);
                *star = true;
        }
        for (i = 0; i < pattern->n; i++) {
                char c = pattern->p[i];
                if (c == '\\') {
                        if (i + 1 < pattern->n)
                                i++;
                } else if (c == '[') {
                        inrange = true;
                } else if (c == ']') {
                        inrange = false;
                } else if (c == '*' && !inrange) {
                        break;
                }
        }
        *chunk = (struct str){ pattern->p, i };
        *pattern = str_skip(*pattern, i);
}

/* Go's getEsc: one (possibly escaped) character of a class. */
static int get_esc(struct str *chunk, uint32_t *ret)
{
        size_t w;
        uint32_t r;

        if (chunk->n == 0 || chunk->p[0] == '-' || chunk->p[0] == ']')
                return -EINVAL;
        if (chunk->p[0] == '\\') {
                *chunk = str_skip(*chunk, 1);
                if (chunk->n == 0)
                        return -EINVAL;
        }
        r = kiln_utf8_decode_rune(chunk->p, chunk->n, &w);
        if (r == RUNE_ERROR && w == 1)
                return -EINVAL;
        *chunk = str_skip(*chunk, w);
        if (chunk->n == 0)
                return -EINVAL;
        *ret = r;
        return 0;
}

/* Go's matchChunk: returns 1 and the rest of s on a match, 0 on no match,
 * -EINVAL on a malformed chunk (checked even after the match failed). */
static int match_chunk(struct str chunk, struct str s, struct str *rest)
{
        bool failed = false;
        int r;

        while (chunk.n > 0) {
                if (!failed && s.n == 0)
                        failed = true;
                switch (chunk.p[0]) {
                case '[': {
                        uint32_t c = 0;
                        bool negated = false, match = false;
                        size_t nrange = 0;

                        if (!failed) {
                                size_t w;
                                c = kiln_utf8_decode_rune(s.p, s.n, &w);
                                s = str_skip(s, w);
                        }
                        chunk = str_skip(chunk, 1);
                        if (chunk.n > 0 && chunk.p[0] == '^') {
                                negated = true;
                                chunk = str_skip(chunk, 1);
                        }
                        for (;;) {
                                uint32_t lo, hi;
                                if (chunk.n > 0 && chunk.p[0] == ']' && nrange > 0) {
                                        chunk = str_skip(chunk, 1);
                                        break;
                                }
                                r = get_esc(&chunk, &lo);
                                if (r < 0)
                                        return r;
                                hi = lo;
                                if (chunk.p[0] == '-') {
                                        chunk = str_skip(chunk, 1);
                                        r = get_esc(&chunk, &hi);
                                        if (r < 0)
                                                return r;
                                }
                                if (lo <= c && c <= hi)
                                        match = true;
                                nrange++;
                        }
                        if (match == negated)
                                failed = true;
                        break;
                }
                case '?':
                        if (!failed) {
                                size_t w;
                                if (s.p[0] == '/')
                                        failed = true;
                                (void) kiln_utf8_decode_rune(s.p, s.n, &w);
                                s = str_skip(s, w);
                        }
                        chunk = str_skip(chunk, 1);
                        break;
                case '\\':
                        chunk = str_skip(chunk, 1);
                        if (chunk.n == 0)
                                return -EINVAL;
                        __attribute__((fallthrough));
                default:
                        if (!failed) {
                                if (chunk.p[0] != s.p[0])
                                        failed = true;
                                s = str_skip(s, 1);
                        }
                        chunk = str_skip(chunk, 1);
                        break;
                }
        }
        if (failed)
                return 0;
        *rest = s;
        return 1;
}

int kiln_pattern_match(const char *pattern_s, const char *name_s, bool *ret)
{
        struct str pattern = { pattern_s, strlen(pattern_s) };
        struct str name = { name_s, strlen(name_s) };
        int r;

        *ret = false;
        while (pattern.n > 0) {
                struct str chunk, t;
                bool star;

                scan_chunk(&pattern, &star, &chunk);
                if (star && chunk.n == 0) {
                        /* A trailing '*' matches the rest unless it holds a '/'. */
                        *ret = !memchr(name.p, '/', name.n);
                        return 0;
                }
                r = match_chunk(chunk, name, &t);
                if (r > 0 && (t.n == 0 || pattern.n > 0)) {
                        name = t;
                        continue;
                }
                if (r < 0)
                        return r;
                if (star) {
                        bool next = false;
                        for (size_t i = 0; i < name.n && name.p[i] != '/'; i++) {
                                r = match_chunk(chunk, str_skip(name, i + 1), &t);
                                if (r > 0) {
                                        if (pattern.n == 0 && t.n > 0)
                                                continue;
                                        name = t;
                                        next = true;
                                        break;
                                }
                                if (r < 0)
                                        return r;
                        }
                        if (next)
                                continue;
                }
                /* No match: the rest of the pattern must still be well formed. */
                while (pattern.n > 0) {
                        struct str empty = { "", 0 };
                        scan_chunk(&pattern, &star, &chunk);
                        r = match_chunk(chunk, empty, &t);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        *ret = name.n == 0;
        return 0;
}

bool kiln_pattern_has_wildcards(const char *pattern)
{
        for (const char *p = pattern; *p; p++) {
                if (*p == '\\') {
                        if (!p[1])
                                break;
                        p++;
                } else if (*p == '*' || *p == '?' || *p == '[') {
                        return true;
                }
        }
        return false;
}

/* ---- path.Clean ------------------------------------------------------ */

char *kiln_pattern_clean(const char *path)
{
        size_t n = strlen(path), r = 0, w = 0, dotdot = 0;
        bool rooted;
        char *out;

        if (n == 0)
                return kiln_xstrdup(".");
        rooted = path[0] == '/';
        out = kiln_xmalloc(n + 2);
        if (rooted) {
                out[w++] = '/';
                r = dotdot = 1;
        }
        while (r < n) {
                if (path[r] == '/') {
                        r++;
                } else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
                        r++;
                } else if (path[r] == '.' && path[r + 1] == '.' &&
                           (r + 2 == n || path[r + 2] == '/')) {
                        r += 2;
                        if (w > dotdot) {
                                w--;
                                while (w > dotdot && out[w] != '/')
                                        w--;
                        } else if (!rooted) {
                                if (w > 0)
                                        out[w++] = '/';
                                out[w++] = '.';
                                out[w++] = '.';
                                dotdot = w;
                        }
                } else {
                        if ((rooted && w != 1) || (!rooted && w != 0))
                                out[w++] = '/';
                        for (; r < n && path[r] != '/'; r++)
                                out[w++] = path[r];
                }
        }
        if (w == 0)
                out[w++] = '.';
        out[w] = 0;
        return out;
}

void kiln_pattern_strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

/* ---- a small regular expression engine --------------------------------
 *
 * moby's patternmatcher turns a pattern into a Go regular expression and
 * lets Go's regexp package match it. The expressions it builds use a small
 * part of the RE2 syntax: literals, escapes, character classes, ".", "*",
 * "?" and one kind of group. This compiles exactly that subset (with RE2's
 * meaning for the odd cases a pattern can produce, such as "\b" or a '*'
 * inside brackets) to a program run as a Thompson NFA: linear in the path
 * length, whatever the pattern. Unsupported RE2 features that a pattern
 * could still produce (\p{...} Unicode classes) are a malformed pattern. */

enum re_op {
        RE_CLASS,  /* arg: class index; consumes one rune */
        RE_ANYNL,  /* any rune but '\n' */
        RE_SPLIT,  /* try x then y */
        RE_JMP,    /* x */
        RE_BOT,    /* beginning of text */
        RE_EOT,    /* end of text */
        RE_WORDB,  /* ASCII word boundary */
        RE_NWORDB, /* not a word boundary */
        RE_MATCH,
};

struct re_inst {
        enum re_op op;
        uint32_t x, y;
};

struct re_range {
        uint32_t lo, hi;
};

struct re_class {
        size_t first, n; /* in ranges */
        bool negated;
};

struct re_prog {
        struct re_inst *insts;
        size_t n_insts;
        struct re_range *ranges;
        size_t n_ranges;
        struct re_class *classes;
        size_t n_classes;
        bool too_large;
};

static void re_prog_release(struct re_prog *p)
{
        free(p->insts);
        free(p->ranges);
        free(p->classes);
        *p = (struct re_prog){ 0 };
}

/* Parsed form: alternatives of sequences of nodes, each maybe repeated. */
enum re_node_kind {
        RN_CLASS,
        RN_ANYNL,
        RN_BOT,
        RN_EOT,
        RN_WORDB,
        RN_NWORDB,
        RN_GROUP,
};

struct re_seq {
        struct re_node *nodes;
        size_t n;
};

struct re_alt {
        struct re_seq *seqs;
        size_t n;
};

struct re_node {
        enum re_node_kind kind;
        uint32_t cls;        /* RN_CLASS */
        char quant;          /* 0, '*', '+', '?', or '{' (min..max, max -1: no bound) */
        int min, max;        /* '{' */
        struct re_alt group; /* RN_GROUP */
};

static void re_alt_release(struct re_alt *a);

static void re_seq_release(struct re_seq *s)
{
        for (size_t i = 0; i < s->n; i++)
                if (s->nodes[i].kind == RN_GROUP)
                        re_alt_release(&s->nodes[i].group);
        free(s->nodes);
        *s = (struct re_seq){ 0 };
}

static void re_alt_release(struct re_alt *a)
{
        for (size_t i = 0; i < a->n; i++)
                re_seq_release(&a->seqs[i]);
        free(a->seqs);
        *a = (struct re_alt){ 0 };
}

struct re_parser {
        struct str t;
        struct re_prog *prog;
        /* Ranges of the class being built. */
        struct re_range *cur;
        size_t n_cur, cap_cur;
};

static void re_cur_add(struct re_parser *p, uint32_t lo, uint32_t hi)
{
        if (p->n_cur == p->cap_cur) {
                p->cap_cur = p->cap_cur ? p->cap_cur * 2 : 8;
                p->cur = kiln_xreallocarray(p->cur, p->cap_cur, sizeof(*p->cur));
        }
        p->cur[p->n_cur++] = (struct re_range){ lo, hi };
}

/* Adds ranges (sorted, disjoint), or their complement over all runes. */
static void re_cur_add_set(struct re_parser *p, const struct re_range *set, size_t n, bool negate)
{
        uint32_t next = 0;

        if (!negate) {
                for (size_t i = 0; i < n; i++)
                        re_cur_add(p, set[i].lo, set[i].hi);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                if (set[i].lo > next)
                        re_cur_add(p, next, set[i].lo - 1);
                next = set[i].hi + 1;
        }
        if (next <= RUNE_MAX)
                re_cur_add(p, next, RUNE_MAX);
}

static uint32_t re_class_commit(struct re_parser *p, bool negated)
{
        struct re_prog *g = p->prog;
        uint32_t idx = (uint32_t) g->n_classes;

        g->ranges = kiln_xreallocarray(g->ranges, g->n_ranges + p->n_cur, sizeof(*g->ranges));
        if (p->n_cur > 0)
                memcpy(g->ranges + g->n_ranges, p->cur, p->n_cur * sizeof(*p->cur));
        g->classes = kiln_xreallocarray(g->classes, g->n_classes + 1, sizeof(*g->classes));
        g->classes[g->n_classes++] = (struct re_class){ g->n_ranges, p->n_cur, negated };
        g->n_ranges += p->n_cur;
        p->n_cur = 0;
        return idx;
}

static const struct re_range re_digit[] = { { '0', '9' } };
static const struct re_range re_space[] = { { '\t', '\n' }, { '\f', '\r' }, { ' ', ' ' } };
static const struct re_range re_word[] = { { '0', '9' }, { 'A', 'Z' }, { '_', '_' }, { 'a', 'z' } };

struct re_named_set {
        const char *name;
        struct re_range r[4];
        size_t n;
};

static const struct re_named_set re_posix[] = {
        { "alnum", { { '0', '9' }, { 'A', 'Z' }, { 'a', 'z' } }, 3 },
        { "alpha", { { 'A', 'Z' }, { 'a', 'z' } }, 2 },
        { "ascii", { { 0, 0x7F } }, 1 },
        { "blank", { { '\t', '\t' }, { ' ', ' ' } }, 2 },
        { "cntrl", { { 0, 0x1F }, { 0x7F, 0x7F } }, 2 },
        { "digit", { { '0', '9' } }, 1 },
        { "graph", { { '!', '~' } }, 1 },
        { "lower", { { 'a', 'z' } }, 1 },
        { "print", { { ' ', '~' } }, 1 },
        { "punct", { { '!', '/' }, { ':', '@' }, { '[', '`' }, { '{', '~' } }, 4 },
        { "space", { { '\t', '\r' }, { ' ', ' ' } }, 2 },
        { "upper", { { 'A', 'Z' } }, 1 },
        { "word", { { '0', '9' }, { 'A', 'Z' }, { '_', '_' }, { 'a', 'z' } }, 4 },
        { "xdigit", { { '0', '9' }, { 'A', 'F' }, { 'a', 'f' } }, 3 },
};

/* \d \D \s \S \w \W: returns true and adds the set when t starts with one
 * (after the backslash). */
static bool re_perl_class(struct re_parser *p, char c)
{
        switch (c) {
        case 'd':
        case 'D':
                re_cur_add_set(p, re_digit, ELEMENTSOF(re_digit), c == 'D');
                return true;
        case 's':
        case 'S':
                re_cur_add_set(p, re_space, ELEMENTSOF(re_space), c == 'S');
                return true;
        case 'w':
        case 'W':
                re_cur_add_set(p, re_word, ELEMENTSOF(re_word), c == 'W');
                return true;
        default:
                return false;
        }
}

/* RE2's parseEscape, p->t just after the backslash: one rune. */
static int re_parse_escape(struct re_parser *p, uint32_t *ret)
{
        size_t w;
        uint32_t c;

        if (p->t.n == 0)
                return -EINVAL;
        c = kiln_utf8_decode_rune(p->t.p, p->t.n, &w);
        p->t = str_skip(p->t, w);
        switch (c) {
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
                /* A lone non-zero digit would be a backreference. */
                if (p->t.n == 0 || p->t.p[0] < '0' || p->t.p[0] > '7')
                        return -EINVAL;
                __attribute__((fallthrough));
        case '0': {
                uint32_t r = c - '0';
                for (int i = 1; i < 3; i++) {
                        if (p->t.n == 0 || p->t.p[0] < '0' || p->t.p[0] > '7')
                                break;
                        r = r * 8 + (uint32_t) (p->t.p[0] - '0');
                        p->t = str_skip(p->t, 1);
                }
                *ret = r;
                return 0;
        }
        case 'x': {
                uint32_t r = 0;
                int h1, h2;
                if (p->t.n == 0)
                        return -EINVAL;
                if (p->t.p[0] == '{') {
                        size_t nd = 0;
                        p->t = str_skip(p->t, 1);
                        while (p->t.n > 0 && p->t.p[0] != '}') {
                                int h = ascii_hex_value(p->t.p[0]);
                                if (h < 0)
                                        return -EINVAL;
                                r = r * 16 + (uint32_t) h;
                                if (r > RUNE_MAX)
                                        return -EINVAL;
                                nd++;
                                p->t = str_skip(p->t, 1);
                        }
                        if (p->t.n == 0 || nd == 0)
                                return -EINVAL;
                        p->t = str_skip(p->t, 1);
                        *ret = r;
                        return 0;
                }
                if (p->t.n < 2)
                        return -EINVAL;
                h1 = ascii_hex_value(p->t.p[0]);
                h2 = ascii_hex_value(p->t.p[1]);
                if (h1 < 0 || h2 < 0)
                        return -EINVAL;
                p->t = str_skip(p->t, 2);
                *ret = (uint32_t) (h1 * 16 + h2);
                return 0;
        }
        case 'a':
                *ret = 7;
                return 0;
        case 'f':
                *ret = '\f';
                return 0;
        case 'n':
                *ret = '\n';
                return 0;
        case 'r':
                *ret = '\r';
                return 0;
        case 't':
                *ret = '\t';
                return 0;
        case 'v':
                *ret = '\v';
                return 0;
        default:
                if (c < 0x80 &&
                    !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                        *ret = c;
                        return 0;
                }
                return -EINVAL;
        }
}

static int re_parse_class_char(struct re_parser *p, uint32_t *ret)
{
        size_t w;

        if (p->t.n == 0)
                return -EINVAL;
        if (p->t.p[0] == '\\') {
                p->t = str_skip(p->t, 1);
                return re_parse_escape(p, ret);
        }
        *ret = kiln_utf8_decode_rune(p->t.p, p->t.n, &w);
        p->t = str_skip(p->t, w);
        return 0;
}

/* RE2's parseClass, p->t just after '['. */
static int re_parse_class(struct re_parser *p, uint32_t *ret)
{
        bool negated = false, first = true;
        int r;

        p->n_cur = 0;
        if (p->t.n > 0 && p->t.p[0] == '^') {
                negated = true;
                p->t = str_skip(p->t, 1);
        }
        while (p->t.n == 0 || p->t.p[0] != ']' || first) {
                uint32_t lo, hi;

                if (p->t.n == 0)
                        return -EINVAL; /* missing closing ] */
                first = false;
                if (p->t.n > 2 && p->t.p[0] == '[' && p->t.p[1] == ':') {
                        const char *end = memmem(p->t.p + 2, p->t.n - 2, ":]", 2);
                        if (end) {
                                const char *name = p->t.p + 2;
                                size_t len = (size_t) (end - name);
                                bool neg = false, found = false;
                                if (len > 0 && name[0] == '^') {
                                        neg = true;
                                        name++;
                                        len--;
                                }
                                for (size_t i = 0; i < ELEMENTSOF(re_posix); i++) {
                                        if (strlen(re_posix[i].name) == len &&
                                            memcmp(re_posix[i].name, name, len) == 0) {
                                                re_cur_add_set(p, re_posix[i].r, re_posix[i].n,
                                                               neg);
                                                found = true;
                                                break;
                                        }
                                }
                                if (!found)
                                        return -EINVAL;
                                p->t = str_skip(p->t, (size_t) (end + 2 - p->t.p));
                                continue;
                        }
                }
                if (p->t.n > 1 && p->t.p[0] == '\\') {
                        char c = p->t.p[1];
                        if (c == 'p' || c == 'P')
                                return -EINVAL; /* Unicode classes: not supported */
                        if (re_perl_class(p, c)) {
                                p->t = str_skip(p->t, 2);
                                continue;
                        }
                }
                r = re_parse_class_char(p, &lo);
                if (r < 0)
                        return r;
                hi = lo;
                if (p->t.n >= 2 && p->t.p[0] == '-' && p->t.p[1] != ']') {
                        p->t = str_skip(p->t, 1);
                        r = re_parse_class_char(p, &hi);
                        if (r < 0)
                                return r;
                        if (hi < lo)
                                return -EINVAL;
                }
                re_cur_add(p, lo, hi);
        }
        p->t = str_skip(p->t, 1);
        *ret = re_class_commit(p, negated);
        return 0;
}

/* RE2 refuses counts above this in {n,m}. */
#define RE_REPEAT_MAX 1000

/* RE2's parseInt: decimal, no leading zero; -1 when too large. */
static bool re_parse_int(struct str *t, int *ret)
{
        size_t i = 0;
        int n = 0;

        if (t->n == 0 || t->p[0] < '0' || t->p[0] > '9')
                return false;
        if (t->n >= 2 && t->p[0] == '0' && t->p[1] >= '0' && t->p[1] <= '9')
                return false;
        for (; i < t->n && t->p[i] >= '0' && t->p[i] <= '9'; i++) {
                if (n >= 100000000)
                        n = -1;
                if (n >= 0)
                        n = n * 10 + (t->p[i] - '0');
        }
        *t = str_skip(*t, i);
        *ret = n;
        return true;
}

/* RE2's parseRepeat on t starting at '{': {n}, {n,} or {n,m}. */
static bool re_parse_repeat(struct str t, int *min, int *max, struct str *rest)
{
        t = str_skip(t, 1);
        if (!re_parse_int(&t, min) || t.n == 0)
                return false;
        if (t.p[0] != ',') {
                *max = *min;
        } else {
                t = str_skip(t, 1);
                if (t.n == 0)
                        return false;
                if (t.p[0] == '}') {
                        *max = -1;
                } else {
                        if (!re_parse_int(&t, max))
                                return false;
                        if (*max < 0)
                                *min = -1;
                }
        }
        if (t.n == 0 || t.p[0] != '}')
                return false;
        *rest = str_skip(t, 1);
        return true;
}

static struct re_node *re_seq_push(struct re_seq *s, enum re_node_kind kind)
{
        s->nodes = kiln_xreallocarray(s->nodes, s->n + 1, sizeof(*s->nodes));
        s->nodes[s->n] = (struct re_node){ .kind = kind };
        return &s->nodes[s->n++];
}

static void re_push_literal(struct re_parser *p, struct re_seq *s, uint32_t c)
{
        p->n_cur = 0;
        re_cur_add(p, c, c);
        re_seq_push(s, RN_CLASS)->cls = re_class_commit(p, false);
}

static int re_parse_alt(struct re_parser *p, struct re_alt *a, unsigned depth);

static int re_parse_seq(struct re_parser *p, struct re_seq *s, unsigned depth)
{
        bool last_quantified = false;
        int r;

        while (p->t.n > 0) {
                char c = p->t.p[0];

                if (c == ')' || c == '|')
                        return 0; /* the caller decides */
                if (c == '{') {
                        int min, max;
                        struct str rest;
                        if (!re_parse_repeat(p->t, &min, &max, &rest)) {
                                /* Not a repetition: a literal '{'. */
                                p->t = str_skip(p->t, 1);
                                re_push_literal(p, s, '{');
                                last_quantified = false;
                                continue;
                        }
                        if (min < 0 || min > RE_REPEAT_MAX || max > RE_REPEAT_MAX ||
                            (max >= 0 && min > max))
                                return -EINVAL; /* invalid repeat count */
                        if (s->n == 0 || last_quantified)
                                return -EINVAL;
                        s->nodes[s->n - 1].quant = '{';
                        s->nodes[s->n - 1].min = min;
                        s->nodes[s->n - 1].max = max;
                        p->t = rest;
                        if (p->t.n > 0 && p->t.p[0] == '?')
                                p->t = str_skip(p->t, 1);
                        last_quantified = true;
                        continue;
                }
                if (c == '*' || c == '+' || c == '?') {
                        if (s->n == 0 || last_quantified)
                                return -EINVAL; /* missing argument / nested repetition */
                        s->nodes[s->n - 1].quant = c;
                        p->t = str_skip(p->t, 1);
                        /* Lazy forms do not change whether a full match exists. */
                        if (p->t.n > 0 && p->t.p[0] == '?')
                                p->t = str_skip(p->t, 1);
                        last_quantified = true;
                        continue;
                }
                last_quantified = false;
                p->t = str_skip(p->t, 1);
                switch (c) {
                case '^':
                        re_seq_push(s, RN_BOT);
                        break;
                case '$':
                        re_seq_push(s, RN_EOT);
                        break;
                case '.':
                        re_seq_push(s, RN_ANYNL);
                        break;
                case '(': {
                        struct re_node *g;
                        struct re_alt sub = { 0 };
                        if (depth + 1 >= PATTERN_GROUP_DEPTH)
                                return -EINVAL;
                        r = re_parse_alt(p, &sub, depth + 1);
                        if (r < 0 || p->t.n == 0) {
                                re_alt_release(&sub);
                                return -EINVAL; /* missing closing ) */
                        }
                        p->t = str_skip(p->t, 1);
                        g = re_seq_push(s, RN_GROUP);
                        g->group = sub;
                        break;
                }
                case '[': {
                        uint32_t cls;
                        r = re_parse_class(p, &cls);
                        if (r < 0)
                                return r;
                        re_seq_push(s, RN_CLASS)->cls = cls;
                        break;
                }
                case '\\': {
                        uint32_t lit;
                        char e = p->t.n > 0 ? p->t.p[0] : 0;
                        if (e == 'A' || e == 'z' || e == 'b' || e == 'B') {
                                p->t = str_skip(p->t, 1);
                                re_seq_push(s, e == 'A'   ? RN_BOT
                                               : e == 'z' ? RN_EOT
                                               : e == 'b' ? RN_WORDB
                                                          : RN_NWORDB);
                                break;
                        }
                        if (e == 'Q') {
                                /* Literal text up to \E or the end. */
                                p->t = str_skip(p->t, 1);
                                while (p->t.n > 0) {
                                        size_t w;
                                        if (p->t.n >= 2 && p->t.p[0] == '\\' && p->t.p[1] == 'E') {
                                                p->t = str_skip(p->t, 2);
                                                break;
                                        }
                                        lit = kiln_utf8_decode_rune(p->t.p, p->t.n, &w);
                                        p->t = str_skip(p->t, w);
                                        re_push_literal(p, s, lit);
                                }
                                break;
                        }
                        if (e == 'p' || e == 'P' || e == 'C')
                                return -EINVAL;
                        p->n_cur = 0;
                        if (e && re_perl_class(p, e)) {
                                p->t = str_skip(p->t, 1);
                                re_seq_push(s, RN_CLASS)->cls = re_class_commit(p, false);
                                break;
                        }
                        r = re_parse_escape(p, &lit);
                        if (r < 0)
                                return r;
                        re_push_literal(p, s, lit);
                        break;
                }
                default: {
                        size_t w;
                        uint32_t lit;
                        /* c was the first byte of a rune: decode it whole. */
                        p->t = (struct str){ p->t.p - 1, p->t.n + 1 };
                        lit = kiln_utf8_decode_rune(p->t.p, p->t.n, &w);
                        p->t = str_skip(p->t, w);
                        re_push_literal(p, s, lit);
                        break;
                }
                }
        }
        return 0;
}

/* Alternatives up to the end or a ')' (left in p->t for the caller). */
static int re_parse_alt(struct re_parser *p, struct re_alt *a, unsigned depth)
{
        for (;;) {
                int r;
                a->seqs = kiln_xreallocarray(a->seqs, a->n + 1, sizeof(*a->seqs));
                a->seqs[a->n] = (struct re_seq){ 0 };
                r = re_parse_seq(p, &a->seqs[a->n++], depth);
                if (r < 0)
                        return r;
                if (p->t.n > 0 && p->t.p[0] == '|') {
                        p->t = str_skip(p->t, 1);
                        continue;
                }
                if (p->t.n > 0 && p->t.p[0] == ')' && depth == 0)
                        return -EINVAL; /* unexpected ) */
                return 0;
        }
}

/* Most instructions one expression compiles to (counted repetitions
 * multiply); a larger one is treated as a malformed pattern. */
#define RE_MAX_INSTS 200000u

static uint32_t re_emit(struct re_prog *g, enum re_op op, uint32_t x, uint32_t y)
{
        if (g->n_insts >= RE_MAX_INSTS) {
                g->too_large = true;
                return (uint32_t) g->n_insts;
        }
        g->insts = kiln_xreallocarray(g->insts, g->n_insts + 1, sizeof(*g->insts));
        g->insts[g->n_insts] = (struct re_inst){ op, x, y };
        return (uint32_t) g->n_insts++;
}

/* Patches field x or y of instruction i, when it was emitted. */
static void re_patch(struct re_prog *g, uint32_t i, bool y, uint32_t to)
{
        if (i < g->n_insts) {
                if (y)
                        g->insts[i].y = to;
                else
                        g->insts[i].x = to;
        }
}

static void re_compile_alt(struct re_prog *g, const struct re_alt *a);

static void re_compile_atom(struct re_prog *g, const struct re_node *n)
{
        switch (n->kind) {
        case RN_CLASS:
                re_emit(g, RE_CLASS, n->cls, 0);
                break;
        case RN_ANYNL:
                re_emit(g, RE_ANYNL, 0, 0);
                break;
        case RN_BOT:
                re_emit(g, RE_BOT, 0, 0);
                break;
        case RN_EOT:
                re_emit(g, RE_EOT, 0, 0);
                break;
        case RN_WORDB:
                re_emit(g, RE_WORDB, 0, 0);
                break;
        case RN_NWORDB:
                re_emit(g, RE_NWORDB, 0, 0);
                break;
        case RN_GROUP:
                re_compile_alt(g, &n->group);
                break;
        }
}

static void re_compile_star(struct re_prog *g, const struct re_node *n)
{
        uint32_t l1 = re_emit(g, RE_SPLIT, 0, 0);
        re_compile_atom(g, n);
        re_emit(g, RE_JMP, l1, 0);
        re_patch(g, l1, false, l1 + 1);
        re_patch(g, l1, true, (uint32_t) g->n_insts);
}

static void re_compile_seq(struct re_prog *g, const struct re_seq *s)
{
        for (size_t i = 0; i < s->n && !g->too_large; i++) {
                const struct re_node *n = &s->nodes[i];
                uint32_t l1, l2;

                switch (n->quant) {
                case '*':
                        re_compile_star(g, n);
                        break;
                case '+':
                        l1 = (uint32_t) g->n_insts;
                        re_compile_atom(g, n);
                        l2 = re_emit(g, RE_SPLIT, l1, 0);
                        re_patch(g, l2, true, l2 + 1);
                        break;
                case '?':
                        l1 = re_emit(g, RE_SPLIT, 0, 0);
                        re_compile_atom(g, n);
                        re_patch(g, l1, false, l1 + 1);
                        re_patch(g, l1, true, (uint32_t) g->n_insts);
                        break;
                case '{': {
                        /* min copies, then either a star or max - min optional
                         * copies, each able to skip to the end. */
                        uint32_t *splits = NULL;
                        size_t n_opt = 0;
                        for (int k = 0; k < n->min && !g->too_large; k++)
                                re_compile_atom(g, n);
                        if (n->max < 0) {
                                re_compile_star(g, n);
                                break;
                        }
                        if (n->max > n->min)
                                splits = kiln_xcalloc((size_t) (n->max - n->min), sizeof(*splits));
                        for (int k = n->min; k < n->max && !g->too_large; k++) {
                                l1 = re_emit(g, RE_SPLIT, 0, 0);
                                re_patch(g, l1, false, l1 + 1);
                                splits[n_opt++] = l1;
                                re_compile_atom(g, n);
                        }
                        for (size_t k = 0; k < n_opt; k++)
                                re_patch(g, splits[k], true, (uint32_t) g->n_insts);
                        free(splits);
                        break;
                }
                default:
                        re_compile_atom(g, n);
                        break;
                }
        }
}

static void re_compile_alt(struct re_prog *g, const struct re_alt *a)
{
        uint32_t jumps_start = 0;
        uint32_t *jumps = a->n > 1 ? kiln_xcalloc(a->n, sizeof(*jumps)) : NULL;

        for (size_t i = 0; i < a->n; i++) {
                uint32_t split = 0;
                if (i + 1 < a->n) {
                        split = re_emit(g, RE_SPLIT, 0, 0);
                        re_patch(g, split, false, split + 1);
                }
                re_compile_seq(g, &a->seqs[i]);
                if (i + 1 < a->n) {
                        jumps[jumps_start++] = re_emit(g, RE_JMP, 0, 0);
                        re_patch(g, split, true, (uint32_t) g->n_insts);
                }
        }
        for (uint32_t k = 0; k < jumps_start; k++)
                re_patch(g, jumps[k], false, (uint32_t) g->n_insts);
        free(jumps);
}

static int re_compile(const char *re, size_t n, struct re_prog *ret)
{
        struct re_prog g = { 0 };
        struct re_alt a = { 0 };
        struct re_parser p = { .t = { re, n }, .prog = &g };
        int r;

        r = re_parse_alt(&p, &a, 0);
        free(p.cur);
        if (r < 0) {
                re_alt_release(&a);
                re_prog_release(&g);
                return r;
        }
        re_compile_alt(&g, &a);
        re_emit(&g, RE_MATCH, 0, 0);
        re_alt_release(&a);
        if (g.too_large) {
                re_prog_release(&g);
                return -E2BIG;
        }
        *ret = g;
        return 0;
}

static bool re_class_has(const struct re_prog *g, uint32_t cls, uint32_t c)
{
        const struct re_class *k = &g->classes[cls];
        bool in = false;

        for (size_t i = 0; i < k->n; i++) {
                const struct re_range *rg = &g->ranges[k->first + i];
                if (rg->lo <= c && c <= rg->hi) {
                        in = true;
                        break;
                }
        }
        return in != k->negated;
}

static bool is_word(uint32_t c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
}

struct re_list {
        uint32_t *dense;
        uint32_t *sparse;
        size_t n;
};

static bool re_list_has(const struct re_list *l, uint32_t pc)
{
        uint32_t i = l->sparse[pc];
        return i < l->n && l->dense[i] == pc;
}

/* Adds pc and what it reaches without consuming input. prev/next are the
 * runes around the position (UINT32_MAX at the edges). */
static void re_add(const struct re_prog *g, struct re_list *l, uint32_t *stack, uint32_t pc,
                   uint32_t prev, uint32_t next)
{
        size_t sp = 0;

        stack[sp++] = pc;
        while (sp > 0) {
                pc = stack[--sp];
                if (re_list_has(l, pc))
                        continue;
                l->sparse[pc] = (uint32_t) l->n;
                l->dense[l->n++] = pc;
                const struct re_inst *in = &g->insts[pc];
                switch (in->op) {
                case RE_JMP:
                        stack[sp++] = in->x;
                        break;
                case RE_SPLIT:
                        stack[sp++] = in->y;
                        stack[sp++] = in->x;
                        break;
                case RE_BOT:
                        if (prev == UINT32_MAX)
                                stack[sp++] = pc + 1;
                        break;
                case RE_EOT:
                        if (next == UINT32_MAX)
                                stack[sp++] = pc + 1;
                        break;
                case RE_WORDB:
                case RE_NWORDB: {
                        bool b = (prev != UINT32_MAX && is_word(prev)) !=
                                 (next != UINT32_MAX && is_word(next));
                        if (b == (in->op == RE_WORDB))
                                stack[sp++] = pc + 1;
                        break;
                }
                case RE_CLASS:
                case RE_ANYNL:
                case RE_MATCH:
                        break;
                }
        }
}

/* Go's MatchString: whether the program matches anywhere in s (the
 * expressions built here anchor themselves with ^ and $, except around a
 * '|' a pattern may hold). */
static bool re_run(const struct re_prog *g, const char *s, size_t n)
{
        size_t ni = g->n_insts, pos = 0;
        /* Small programs (the usual case) run without touching the heap. */
        uint32_t small[6 * 64 + 1];
        uint32_t *mem = ni <= 64 ? small : kiln_xcalloc(ni * 6 + 1, sizeof(uint32_t));

        if (mem == small)
                memset(small, 0, sizeof(uint32_t) * (ni * 6 + 1)); /* no indeterminate reads */
        struct re_list cl = { mem, mem + ni, 0 }, nl = { mem + 2 * ni, mem + 3 * ni, 0 };
        uint32_t *stack = mem + 4 * ni;
        uint32_t prev = UINT32_MAX;
        bool matched = false;

        /* re_add's stack: an instruction pushes at most two successors, and
         * only the first time it is visited, so 2 * ni + 1 slots suffice. */
        for (;;) {
                size_t w = 0;
                uint32_t c = pos < n ? kiln_utf8_decode_rune(s + pos, n - pos, &w) : UINT32_MAX;

                /* MatchString searches: a thread starts at every position. */
                re_add(g, &cl, stack, 0, prev, c);
                nl.n = 0;
                for (size_t i = 0; i < cl.n; i++) {
                        const struct re_inst *in = &g->insts[cl.dense[i]];
                        uint32_t nextc = UINT32_MAX;
                        bool ok;

                        if (in->op == RE_MATCH) {
                                matched = true;
                                break;
                        }
                        if (c == UINT32_MAX)
                                continue;
                        if (in->op == RE_CLASS)
                                ok = re_class_has(g, in->x, c);
                        else if (in->op == RE_ANYNL)
                                ok = c != '\n';
                        else
                                continue;
                        if (!ok)
                                continue;
                        if (pos + w < n) {
                                size_t w2;
                                nextc = kiln_utf8_decode_rune(s + pos + w, n - pos - w, &w2);
                        }
                        re_add(g, &nl, stack, cl.dense[i] + 1, c, nextc);
                }
                if (matched || c == UINT32_MAX)
                        break;
                pos += w;
                prev = c;
                struct re_list tmp = cl;
                cl = nl;
                nl = tmp;
        }
        if (mem != small)
                free(mem);
        return matched;
}

/* ---- patternmatcher -------------------------------------------------- */

enum pattern_type {
        PATTERN_EXACT,
        PATTERN_PREFIX,
        PATTERN_SUFFIX,
        PATTERN_REGEXP,
        PATTERN_BAD, /* translation gave an expression RE2 would refuse */
};

struct pattern {
        char *cleaned;
        size_t len;
        bool exclusion;
        enum pattern_type type;
        struct re_prog prog;
};

struct kiln_pattern_matcher {
        struct pattern *patterns;
        size_t n;
        bool exclusions;
};

/* patternmatcher's shouldEscape means ".+()|{}$", but its bitmap is made
 * of bytes indexed by c / 8, so the bits of '{', '|' and '}' (c / 8 == 15)
 * are lost: those stay unescaped and keep their regular expression meaning
 * (alternation, counted repetition). */
static bool should_escape(uint32_t c)
{
        return c == '.' || c == '+' || c == '(' || c == ')' || c == '$';
}

static void buf_put_rune(struct kiln_buf *b, uint32_t c)
{
        char enc[4];
        size_t k = kiln_utf8_encode(c, enc);
        (void) kiln_buf_append(b, enc, k);
}

/* patternmatcher's compile: the pattern becomes an exact, prefix or suffix
 * comparison, or a regular expression. */
static void pattern_compile(struct pattern *pt)
{
        const char *s = pt->cleaned;
        size_t n = pt->len, pos = 0;
        /* Each pattern byte becomes at most 6 bytes of expression. */
        _cleanup_(kiln_buf_release) struct kiln_buf re = KILN_BUF_INIT(8 * n + 16);
        enum pattern_type type = PATTERN_EXACT;

        (void) kiln_buf_putc(&re, '^');
        /* Go's text/scanner, which reads the pattern, skips a leading BOM. */
        if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
                pos = 3;
        for (size_t i = 0; pos < n; i++) {
                size_t w;
                uint32_t c = kiln_utf8_decode_rune(s + pos, n - pos, &w);
                pos += w;

                if (c == '*') {
                        if (pos < n && s[pos] == '*') {
                                pos++;
                                if (pos < n && s[pos] == '/')
                                        pos++;
                                if (pos == n) {
                                        if (type == PATTERN_EXACT) {
                                                type = PATTERN_PREFIX;
                                        } else {
                                                (void) kiln_buf_puts(&re, ".*");
                                                type = PATTERN_REGEXP;
                                        }
                                } else {
                                        (void) kiln_buf_puts(&re, "(.*/)?");
                                        type = PATTERN_REGEXP;
                                }
                                if (i == 0)
                                        type = PATTERN_SUFFIX;
                        } else {
                                (void) kiln_buf_puts(&re, "[^/]*");
                                type = PATTERN_REGEXP;
                        }
                } else if (c == '?') {
                        (void) kiln_buf_puts(&re, "[^/]");
                        type = PATTERN_REGEXP;
                } else if (should_escape(c)) {
                        (void) kiln_buf_putc(&re, '\\');
                        buf_put_rune(&re, c);
                } else if (c == '\\') {
                        if (pos < n) {
                                uint32_t e = kiln_utf8_decode_rune(s + pos, n - pos, &w);
                                pos += w;
                                (void) kiln_buf_putc(&re, '\\');
                                buf_put_rune(&re, e);
                                type = PATTERN_REGEXP;
                        } else {
                                (void) kiln_buf_putc(&re, '\\');
                        }
                } else if (c == '[' || c == ']') {
                        buf_put_rune(&re, c);
                        type = PATTERN_REGEXP;
                } else {
                        buf_put_rune(&re, c);
                }
        }
        if (type == PATTERN_REGEXP) {
                (void) kiln_buf_putc(&re, '$');
                if (re_compile(re.data, re.len, &pt->prog) < 0)
                        type = PATTERN_BAD;
        }
        pt->type = type;
}

static bool str_endswith(const char *s, size_t n, const char *suffix, size_t m)
{
        return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static int pattern_match(const struct pattern *pt, const char *path, size_t n, bool *ret)
{
        switch (pt->type) {
        case PATTERN_EXACT:
                *ret = n == pt->len && memcmp(path, pt->cleaned, n) == 0;
                return 0;
        case PATTERN_PREFIX:
                *ret = n >= pt->len - 2 && memcmp(path, pt->cleaned, pt->len - 2) == 0;
                return 0;
        case PATTERN_SUFFIX: {
                const char *suffix = pt->cleaned + 2;
                size_t m = pt->len - 2;
                *ret = str_endswith(path, n, suffix, m) ||
                       (suffix[0] == '/' && n == m - 1 && memcmp(path, suffix + 1, n) == 0);
                return 0;
        }
        case PATTERN_REGEXP:
                *ret = re_run(&pt->prog, path, n);
                return 0;
        case PATTERN_BAD:
                *ret = false;
                return -EINVAL;
        }
        *ret = false;
        return -EINVAL;
}

struct kiln_pattern_matcher *kiln_pattern_matcher_free(struct kiln_pattern_matcher *m)
{
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n; i++) {
                free(m->patterns[i].cleaned);
                re_prog_release(&m->patterns[i].prog);
        }
        free(m->patterns);
        free(m);
        return NULL;
}

/* Go's strings.TrimSpace: Unicode white space at both ends. */
static void trim_space(const char **s, size_t *n)
{
        while (*n > 0) {
                size_t w;
                uint32_t c = kiln_utf8_decode_rune(*s, *n, &w);
                if (!kiln_unicode_is_space(c) || (c == RUNE_ERROR && w == 1))
                        break;
                *s += w;
                *n -= w;
        }
        while (*n > 0) {
                /* Step back one rune. */
                size_t k = *n - 1, w;
                while (k > 0 && *n - k < 4 && ((unsigned char) (*s)[k] & 0xC0) == 0x80)
                        k--;
                uint32_t c = kiln_utf8_decode_rune(*s + k, *n - k, &w);
                if (k + w != *n) {
                        k = *n - 1;
                        c = RUNE_ERROR;
                        w = 1;
                }
                if (!kiln_unicode_is_space(c) || (c == RUNE_ERROR && w == 1))
                        break;
                *n = k;
        }
}

int kiln_pattern_matcher_new(const char *const *patterns, size_t n,
                             struct kiln_pattern_matcher **ret, struct kiln_error **err)
{
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *m = NULL;

        if (n > KILN_LIMIT_PATTERN_COUNT)
                return kiln_error_set(err, -E2BIG, "too many patterns: %zu (limit %u)", n,
                                      KILN_LIMIT_PATTERN_COUNT);
        m = kiln_xcalloc(1, sizeof(*m));
        m->patterns = kiln_xcalloc(n ? n : 1, sizeof(*m->patterns));
        for (size_t i = 0; i < n; i++) {
                const char *s = patterns[i];
                size_t len = strlen(s);
                _cleanup_free_ char *raw = NULL, *cleaned = NULL;
                struct pattern *pt;
                bool dummy;
                char *body;

                if (len > KILN_LIMIT_PATTERN_LEN)
                        return kiln_error_set(err, -E2BIG, "pattern too long: %zu bytes (limit %u)",
                                              len, KILN_LIMIT_PATTERN_LEN);
                trim_space(&s, &len);
                if (len == 0)
                        continue;
                raw = kiln_xstrndup(s, len);
                cleaned = kiln_pattern_clean(raw);
                body = cleaned;
                pt = &m->patterns[m->n];
                if (body[0] == '!') {
                        if (body[1] == 0)
                                return kiln_error_set(err, -EINVAL,
                                                      "illegal exclusion pattern: \"!\"");
                        pt->exclusion = true;
                        m->exclusions = true;
                        body++;
                }
                if (kiln_pattern_match(body, ".", &dummy) < 0)
                        return kiln_error_set(err, -EINVAL,
                                              "pattern \"%s\": syntax error in pattern", raw);
                pt->cleaned = kiln_xstrdup(body);
                pt->len = strlen(body);
                m->n++;
                pattern_compile(pt);
        }
        *ret = TAKE_PTR(m);
        return 0;
}

size_t kiln_pattern_matcher_count(const struct kiln_pattern_matcher *m)
{
        return m->n;
}

bool kiln_pattern_matcher_exclusions(const struct kiln_pattern_matcher *m)
{
        return m->exclusions;
}

const char *kiln_pattern_matcher_pattern(const struct kiln_pattern_matcher *m, size_t i,
                                         bool *ret_exclusion)
{
        if (i >= m->n)
                return NULL;
        if (ret_exclusion)
                *ret_exclusion = m->patterns[i].exclusion;
        return m->patterns[i].cleaned;
}

/* Whether the pattern matches one of the parent directories of path, as
 * patternmatcher does: the prefixes of filepath.Dir(path). */
static bool pattern_match_parents(const struct pattern *pt, const char *path)
{
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *dir = NULL;
        size_t dn;

        if (!slash)
                return false; /* Dir is "." */
        {
                _cleanup_free_ char *head = kiln_xstrndup(path, (size_t) (slash - path) + 1);
                dir = kiln_pattern_clean(head);
        }
        if (streq(dir, "."))
                return false;
        dn = strlen(dir);
        for (size_t k = 0; k <= dn; k++) {
                bool m = false;
                if (k < dn && dir[k] != '/')
                        continue;
                if (pattern_match(pt, dir, k, &m) >= 0 && m)
                        return true;
        }
        return false;
}

int kiln_pattern_matcher_matches_parent(const struct kiln_pattern_matcher *m, const char *path,
                                        const bool *parent, bool *ret_info, bool *ret)
{
        size_t n = strlen(path);
        bool matched = false;
        int r;

        for (size_t i = 0; i < m->n; i++) {
                const struct pattern *pt = &m->patterns[i];
                bool match = parent ? parent[i] : false;

                if (!match) {
                        if (pt->exclusion != matched) {
                                if (ret_info)
                                        ret_info[i] = false;
                                continue;
                        }
                        r = pattern_match(pt, path, n, &match);
                        if (r < 0) {
                                *ret = false;
                                return r;
                        }
                        if (!match && !parent)
                                match = pattern_match_parents(pt, path);
                }
                if (ret_info)
                        ret_info[i] = match;
                if (match)
                        matched = !pt->exclusion;
        }
        *ret = matched;
        return 0;
}

int kiln_pattern_matcher_matches(const struct kiln_pattern_matcher *m, const char *path, bool *ret)
{
        return kiln_pattern_matcher_matches_parent(m, path, NULL, NULL, ret);
}

/* ---- ignore files ---------------------------------------------------- */

/* bufio.Scanner's default maximum token (line) size. */
#define IGNOREFILE_MAX_LINE (64u * 1024)

int kiln_pattern_read_ignorefile(const char *data, size_t n, char ***ret, size_t *n_ret,
                                 struct kiln_error **err)
{
        char **v = NULL;
        size_t nv = 0, pos = 0, line = 0;

        if (n > KILN_LIMIT_IGNOREFILE_SIZE)
                return kiln_error_set(err, -E2BIG, "ignore file too large: %zu bytes (limit %u)", n,
                                      KILN_LIMIT_IGNOREFILE_SIZE);
        while (pos < n) {
                const char *s = data + pos, *nl = memchr(s, '\n', n - pos);
                size_t len = nl ? (size_t) (nl - s) : n - pos;
                bool invert;
                char *pattern;

                pos += len + (nl ? 1 : 0);
                if (len > IGNOREFILE_MAX_LINE) {
                        kiln_pattern_strv_free(v);
                        return kiln_error_set(err, -E2BIG,
                                              "ignore file line %zu too long (limit %u bytes)",
                                              line + 1, IGNOREFILE_MAX_LINE);
                }
                if (len > 0 && s[len - 1] == '\r')
                        len--;
                if (line == 0 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
                        s += 3;
                        len -= 3;
                }
                line++;
                if (len > 0 && s[0] == '#')
                        continue;
                trim_space(&s, &len);
                if (len == 0)
                        continue;
                invert = s[0] == '!';
                if (invert) {
                        s++;
                        len--;
                        trim_space(&s, &len);
                }
                if (len > 0) {
                        _cleanup_free_ char *raw = kiln_xstrndup(s, len);
                        _cleanup_free_ char *cleaned = kiln_pattern_clean(raw);
                        const char *c = cleaned;
                        if (strlen(c) > 1 && c[0] == '/')
                                c++;
                        pattern = kiln_xasprintf("%s%s", invert ? "!" : "", c);
                } else {
                        pattern = kiln_xstrdup(invert ? "!" : "");
                }
                if (nv >= KILN_LIMIT_PATTERN_COUNT) {
                        free(pattern);
                        kiln_pattern_strv_free(v);
                        return kiln_error_set(err, -E2BIG,
                                              "ignore file has too many patterns (limit %u)",
                                              KILN_LIMIT_PATTERN_COUNT);
                }
                v = kiln_xreallocarray(v, nv + 2, sizeof(*v));
                v[nv++] = pattern;
                v[nv] = NULL;
        }
        if (!v)
                v = kiln_xcalloc(1, sizeof(*v));
        *ret = v;
        *n_ret = nv;
        return 0;
}
