/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shell-word expansion with BuildKit's semantics (frontend/dockerfile/shell).
 *
 * The structure follows BuildKit's lexer so that its quirks carry over: the
 * input is read rune by rune as Go's text/scanner does (a leading U+FEFF is
 * skipped, a byte that is not UTF-8 reads as U+FFFD), names use Go's
 * unicode.IsLetter/IsDigit, and word splitting uses unicode.IsSpace (both as
 * base/unicode.h answers them). The
 * #, %, / patterns are matched as the Go regular expressions BuildKit builds
 * from them, with leftmost-first priority (a Pike machine, so time is
 * pattern length times value length and memory is pattern length).
 */

#include <errno.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/goquote.h"
#include "base/unicode.h"
#include "dockerfile/shell.h"

#define EOF_RUNE (-1)

/* Go's unicode.IsLetter(c) || unicode.IsDigit(c) || c == '_': what BuildKit
 * takes into a variable name. */
static bool is_name_rune(int32_t c)
{
        return c == '_' || kiln_unicode_is_letter((uint32_t) c) ||
               kiln_unicode_is_digit((uint32_t) c);
}

/* The rune at s[pos..len) as Go's utf8.DecodeRune reads it; EOF_RUNE
 * (width 0) at the end. */
static int32_t decode_at(const char *s, size_t len, size_t pos, size_t *width)
{
        if (pos >= len) {
                *width = 0;
                return EOF_RUNE;
        }
        return (int32_t) kiln_utf8_decode_rune(s + pos, len - pos, width);
}

/* Go's text/scanner as the lexer uses it: Peek and Next over runes. */
struct reader {
        const char *s;
        size_t len;
        size_t pos;
};

static void reader_init(struct reader *rd, const char *s, size_t len)
{
        size_t w;

        *rd = (struct reader){ .s = s, .len = len };
        if (decode_at(s, len, 0, &w) == 0xFEFF)
                rd->pos = w;
}

static int32_t rd_peek(const struct reader *rd)
{
        size_t w;

        return decode_at(rd->s, rd->len, rd->pos, &w);
}

static int32_t rd_next(struct reader *rd)
{
        size_t w;
        int32_t r = decode_at(rd->s, rd->len, rd->pos, &w);

        rd->pos += w;
        return r;
}

/* A set of names (open addressing); the strings are owned. */
struct name_set {
        char **slot;
        size_t cap; /* 0 or a power of two */
        size_t n;
};

static uint64_t hash_name(const char *s)
{
        uint64_t h = 0xcbf29ce484222325ULL;

        for (; *s; s++)
                h = (h ^ (unsigned char) *s) * 0x100000001b3ULL;
        return h;
}

static void name_set_add(struct name_set *set, const char *name)
{
        size_t i;

        if ((set->n + 1) * 2 > set->cap) {
                size_t cap = set->cap ? set->cap * 2 : 16;
                char **slot = kiln_xcalloc(cap, sizeof(char *));

                for (i = 0; i < set->cap; i++) {
                        size_t j;

                        if (!set->slot[i])
                                continue;
                        for (j = hash_name(set->slot[i]) & (cap - 1); slot[j];
                             j = (j + 1) & (cap - 1))
                                ;
                        slot[j] = set->slot[i];
                }
                free(set->slot);
                set->slot = slot;
                set->cap = cap;
        }
        for (i = hash_name(name) & (set->cap - 1); set->slot[i]; i = (i + 1) & (set->cap - 1))
                if (streq(set->slot[i], name))
                        return;
        set->slot[i] = kiln_xstrdup(name);
        set->n++;
}

static void name_set_release(struct name_set *set)
{
        for (size_t i = 0; i < set->cap; i++)
                free(set->slot[i]);
        free(set->slot);
        *set = (struct name_set){ 0 };
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Moves the names into a sorted NULL-terminated array; the set is emptied. */
static char **name_set_steal_sorted(struct name_set *set, size_t *ret_n)
{
        char **v = kiln_xcalloc(set->n + 1, sizeof(char *));
        size_t n = 0;

        for (size_t i = 0; i < set->cap; i++)
                if (set->slot[i])
                        v[n++] = TAKE_PTR(set->slot[i]);
        qsort(v, n, sizeof(char *), cmp_str);
        *ret_n = n;
        name_set_release(set);
        return v;
}

/* BuildKit's wordsStruct. Its buffer lives in struct shell because BuildKit
 * shares it between nested calls (see stop_on). */
struct words {
        char **v;
        size_t *lens;
        size_t n;
        size_t cap;
        bool in_word;
};

struct shell {
        int32_t escape;
        bool raw_quotes;
        bool skip_process_quotes;
        bool skip_unset_env;
        bool raw_escapes; /* current value: ${x#...} and ${x/...} turn it on */
        const struct kiln_shell_env *env;
        struct reader rd;
        struct kiln_buf wbuf;
        size_t words_total;
        struct name_set matched;
        struct name_set unmatched;
        unsigned depth;
        uint64_t work;
        char *cause; /* what failed, without the "failed to process" context */
};

_printf_(3, 4) static int fail(struct shell *sh, int code, const char *fmt, ...)
{
        va_list ap;

        free(sh->cause);
        va_start(ap, fmt);
        sh->cause = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return code;
}

static int too_long(struct shell *sh)
{
        return fail(sh, -E2BIG, "expanded text longer than %u bytes", KILN_LIMIT_SHELL_OUTPUT);
}

static int out_append(struct shell *sh, struct kiln_buf *b, const void *p, size_t n)
{
        if (kiln_buf_append(b, p, n) < 0)
                return too_long(sh);
        return 0;
}

static int out_puts(struct shell *sh, struct kiln_buf *b, const char *s)
{
        return out_append(sh, b, s, strlen(s));
}

static int out_rune(struct shell *sh, struct kiln_buf *b, int32_t r)
{
        char tmp[4];

        return out_append(sh, b, tmp, kiln_utf8_encode((uint32_t) r, tmp));
}

static struct kiln_buf new_buf(void)
{
        return KILN_BUF_INIT(KILN_LIMIT_SHELL_OUTPUT);
}

/* -- words (BuildKit's wordsStruct) ------------------------------------ */

static int words_flush(struct shell *sh, struct words *w)
{
        if (sh->wbuf.len == 0)
                return 0;
        sh->words_total += sh->wbuf.len;
        if (sh->words_total > KILN_LIMIT_SHELL_OUTPUT)
                return too_long(sh);
        if (w->n + 2 > w->cap) {
                w->cap = w->cap ? w->cap * 2 : 8;
                w->v = kiln_xreallocarray(w->v, w->cap, sizeof(char *));
                w->lens = kiln_xreallocarray(w->lens, w->cap, sizeof(size_t));
        }
        w->lens[w->n] = sh->wbuf.len;
        w->v[w->n++] = kiln_buf_steal(&sh->wbuf);
        w->v[w->n] = NULL;
        w->in_word = false;
        return 0;
}

static int words_add_raw_char(struct shell *sh, struct words *w, int32_t r)
{
        w->in_word = true;
        return out_rune(sh, &sh->wbuf, r);
}

static int words_add_char(struct shell *sh, struct words *w, int32_t r)
{
        if (!kiln_unicode_is_space((uint32_t) r))
                return words_add_raw_char(sh, w, r);
        if (w->in_word && sh->wbuf.len != 0)
                return words_flush(sh, w);
        return 0;
}

static int words_add_string(struct shell *sh, struct words *w, const char *s, size_t len)
{
        size_t pos = 0, width;
        int r;

        while (pos < len) {
                int32_t c = decode_at(s, len, pos, &width);

                r = words_add_char(sh, w, c);
                if (r < 0)
                        return r;
                pos += width;
        }
        return 0;
}

static int words_add_raw_string(struct shell *sh, struct words *w, const char *s, size_t len)
{
        w->in_word = true;
        return out_append(sh, &sh->wbuf, s, len);
}

static void words_release(struct words *w)
{
        kiln_shell_strv_free(w->v);
        free(w->lens);
        *w = (struct words){ 0 };
}

/* -- environment ---------------------------------------------------------- */

static bool env_lookup(const struct kiln_shell_env *env, const char *name, const char **value)
{
        size_t nl = strlen(name), i;

        if (!env)
                return false;
        if (env->lookup)
                return env->lookup(env->userdata, name, value);
        for (i = env->n_pairs; i-- > 0;)
                if (env->pairs[2 * i] && streq(env->pairs[2 * i], name)) {
                        *value = env->pairs[2 * i + 1] ? env->pairs[2 * i + 1] : "";
                        return true;
                }
        for (i = env->n_vars; i-- > 0;) {
                const char *e = env->vars[i], *eq;
                size_t kl;

                if (!e)
                        continue;
                eq = strchr(e, '=');
                kl = eq ? (size_t) (eq - e) : strlen(e);
                if (kl == nl && memcmp(e, name, nl) == 0) {
                        *value = eq ? eq + 1 : "";
                        return true;
                }
        }
        return false;
}

/* BuildKit's getEnv: looks name up and records it as matched or not. */
static bool get_env(struct shell *sh, const char *name, const char **value)
{
        const char *v = NULL;

        if (env_lookup(sh->env, name, &v)) {
                *value = v ? v : "";
                name_set_add(&sh->matched, name);
                return true;
        }
        *value = "";
        name_set_add(&sh->unmatched, name);
        return false;
}

/* -- patterns of ${x#p} ${x%p} ${x/p/r} ----------------------------------- */

enum tok_kind {
        TOK_LIT,  /* one rune */
        TOK_ANY,  /* ?: any rune but a newline (the regexp "." BuildKit uses) */
        TOK_STAR, /* *: any run of runes but newlines */
};

struct tok {
        enum tok_kind kind;
        int32_t r;
};

struct pattern {
        struct tok *t;
        size_t n;
        bool lazy;     /* '*' prefers the shortest run */
        bool anchored; /* match only at the start */
};

struct thread {
        size_t state; /* token index; n is the match state */
        size_t start;
};

struct queue {
        struct thread *t;
        size_t n;
        uint32_t *mark; /* closure(i) done when mark[i] == gen */
        uint32_t gen;
        size_t size; /* entries of t and mark */
};

struct machine {
        struct pattern p;
        struct queue q[2];
};

static void machine_release(struct machine *m)
{
        free(m->p.t);
        for (size_t i = 0; i < 2; i++) {
                free(m->q[i].t);
                free(m->q[i].mark);
        }
        *m = (struct machine){ 0 };
}

/* BuildKit's convertShellPatternToRegex: '*' and '?' are wildcards, '\'
 * makes '*', '?' and '\' literal and is dropped before '}' and '/';
 * everything else, brackets included, is literal. */
static int machine_init(struct shell *sh, struct machine *m, const char *s, size_t len, bool greedy,
                        bool anchored)
{
        struct reader rd;
        int32_t c;

        *m = (struct machine){ .p = { .lazy = !greedy, .anchored = anchored } };
        if (len > KILN_LIMIT_SHELL_PATTERN)
                return fail(sh, -E2BIG, "pattern in substitution longer than %u bytes",
                            KILN_LIMIT_SHELL_PATTERN);
        m->p.t = kiln_xcalloc(len + 1, sizeof(struct tok));
        reader_init(&rd, s, len);
        while ((c = rd_next(&rd)) != EOF_RUNE) {
                struct tok t = { TOK_LIT, c };

                if (c == '*')
                        t.kind = TOK_STAR;
                else if (c == '?')
                        t.kind = TOK_ANY;
                else if (c == '\\') {
                        int32_t pk = rd_peek(&rd);

                        if (pk == '}' || pk == '/')
                                continue;
                        t.r = c = rd_next(&rd);
                        if (c != '*' && c != '?' && c != '\\') {
                                char tmp[4];
                                size_t n = kiln_utf8_encode((uint32_t) c, tmp);

                                return fail(
                                        sh, -EINVAL,
                                        "invalid pattern (%.*s) in substitution: invalid escape "
                                        "'\\%.*s'",
                                        (int) len, s, (int) n, tmp);
                        }
                }
                m->p.t[m->p.n++] = t;
        }
        for (size_t i = 0; i < 2; i++) {
                m->q[i].t = kiln_xcalloc(m->p.n + 1, sizeof(struct thread));
                m->q[i].mark = kiln_xcalloc(m->p.n + 1, sizeof(uint32_t));
                m->q[i].size = m->p.n + 1;
        }
        return 0;
}

static void queue_clear(struct queue *q)
{
        q->n = 0;
        if (++q->gen == 0) {
                /* wrapped: forget every mark */
                for (size_t i = 0; i < q->size; i++)
                        q->mark[i] = 0;
                q->gen = 1;
        }
}

/* Adds the threads of closure(i) in priority order: a greedy star first
 * tries one more rune, a lazy one first tries what follows it. */
static void machine_add(const struct pattern *p, struct queue *q, size_t i, size_t start)
{
        size_t k = i;

        if (!p->lazy) {
                while (q->mark[k] != q->gen) {
                        q->mark[k] = q->gen;
                        q->t[q->n++] = (struct thread){ k, start };
                        if (k == p->n || p->t[k].kind != TOK_STAR)
                                break;
                        k++;
                }
                return;
        }
        while (k < p->n && p->t[k].kind == TOK_STAR && q->mark[k] != q->gen)
                q->mark[k++] = q->gen;
        if (q->mark[k] != q->gen) {
                q->mark[k] = q->gen;
                q->t[q->n++] = (struct thread){ k, start };
        }
        while (k-- > i)
                q->t[q->n++] = (struct thread){ k, start };
}

/* Go's Regexp.FindStringIndex on s[from..len): the leftmost match, and of
 * those the one the wildcards' priorities prefer. Returns 1 with the match
 * in *ret_start and *ret_end, 0 for none, or -E2BIG past the work limit. */
static int machine_find(struct shell *sh, struct machine *m, const char *s, size_t len, size_t from,
                        size_t *ret_start, size_t *ret_end)
{
        struct queue *run = &m->q[0], *next = &m->q[1];
        bool matched = false;
        size_t pos = from;

        queue_clear(run);
        for (;;) {
                size_t width;
                int32_t r;

                if (run->n == 0) {
                        if (m->p.anchored && pos != 0)
                                break;
                        if (matched)
                                break;
                }
                if (!matched && (!m->p.anchored || pos == 0))
                        machine_add(&m->p, run, 0, pos);
                r = decode_at(s, len, pos, &width);
                sh->work += run->n + 1;
                if (sh->work > KILN_LIMIT_SHELL_MATCH_WORK)
                        return fail(sh, -E2BIG, "pattern matching in substitution exceeds %u steps",
                                    KILN_LIMIT_SHELL_MATCH_WORK);
                queue_clear(next);
                for (size_t j = 0; j < run->n; j++) {
                        const struct thread *t = &run->t[j];
                        const struct tok *tk;

                        if (t->state == m->p.n) {
                                /* the best match so far; lower-priority
                                 * threads can only find worse ones */
                                matched = true;
                                *ret_start = t->start;
                                *ret_end = pos;
                                break;
                        }
                        tk = &m->p.t[t->state];
                        if (tk->kind == TOK_LIT ? r == tk->r : r != EOF_RUNE && r != '\n')
                                machine_add(&m->p, next,
                                            tk->kind == TOK_STAR ? t->state : t->state + 1,
                                            t->start);
                }
                if (width == 0)
                        break;
                pos += width;
                struct queue *tmp = run;
                run = next;
                next = tmp;
        }
        return matched ? 1 : 0;
}

/* Go's []rune(s) reversed and encoded again: bytes that are not UTF-8 come
 * out as U+FFFD, as in BuildKit's reverseString. */
static char *reverse_string(const char *s, size_t len, size_t *ret_len)
{
        char *out = kiln_xmalloc(len * 3 + 1);
        size_t o, width, total = 0;

        /* Decode forwards (the only way to find the rune boundaries Go
         * sees), then write each rune at its mirrored place. */
        for (size_t p = 0; p < len; p += width) {
                char tmp[4];

                total += kiln_utf8_encode((uint32_t) decode_at(s, len, p, &width), tmp);
        }
        o = total;
        for (size_t p = 0; p < len; p += width) {
                char tmp[4];
                size_t n = kiln_utf8_encode((uint32_t) decode_at(s, len, p, &width), tmp);

                o -= n;
                memcpy(out + o, tmp, n);
        }
        out[total] = '\0';
        *ret_len = total;
        return out;
}

/* BuildKit's reversePattern: reverses the runes but keeps each "\x" pair in
 * order, so escapes survive. */
static char *reverse_pattern(const char *s, size_t len, size_t *ret_len)
{
        size_t n = 0, width, total = 0, o;
        int32_t *runes = kiln_xcalloc(len + 1, sizeof(int32_t));
        char *out = kiln_xmalloc(len * 3 + 1);
        size_t i;

        for (size_t p = 0; p < len; p += width)
                runes[n++] = decode_at(s, len, p, &width);
        for (i = 0; i < n; i++) {
                char tmp[4];

                total += kiln_utf8_encode((uint32_t) runes[i], tmp);
        }
        o = total;
        for (i = 0; i < n;) {
                char a[4], b[4];
                size_t na, nb;

                if (runes[i] == '\\' && i + 1 < n) {
                        /* "\x" lands as "\x" at the mirrored place */
                        na = kiln_utf8_encode((uint32_t) runes[i], a);
                        nb = kiln_utf8_encode((uint32_t) runes[i + 1], b);
                        o -= na + nb;
                        memcpy(out + o, a, na);
                        memcpy(out + o + na, b, nb);
                        i += 2;
                } else {
                        na = kiln_utf8_encode((uint32_t) runes[i], a);
                        o -= na;
                        memcpy(out + o, a, na);
                        i++;
                }
        }
        free(runes);
        out[total] = '\0';
        *ret_len = total;
        return out;
}

/* ${x#p} ${x##p}: drops the shortest (greedy: longest) prefix of value that
 * pattern matches, into ret. */
static int trim_prefix(struct shell *sh, const char *pat, size_t plen, const char *val, size_t vlen,
                       bool greedy, struct kiln_buf *ret)
{
        struct machine m;
        size_t ms = 0, me = 0;
        int r;

        r = machine_init(sh, &m, pat, plen, greedy, true);
        if (r >= 0)
                r = machine_find(sh, &m, val, vlen, 0, &ms, &me);
        machine_release(&m);
        if (r < 0)
                return r;
        if (r == 0)
                me = 0;
        return out_append(sh, ret, val + me, vlen - me);
}

/* ${x%p} ${x%%p}: as BuildKit, reverses pattern and value, trims the
 * prefix and reverses the rest back. */
static int trim_suffix(struct shell *sh, const char *pat, size_t plen, const char *val, size_t vlen,
                       bool greedy, struct kiln_buf *ret)
{
        _cleanup_free_ char *rpat = NULL, *rval = NULL, *back = NULL;
        struct kiln_buf tmp = new_buf();
        size_t rplen, rvlen, blen;
        int r;

        rpat = reverse_pattern(pat, plen, &rplen);
        rval = reverse_string(val, vlen, &rvlen);
        r = trim_prefix(sh, rpat, rplen, rval, rvlen, greedy, &tmp);
        if (r >= 0) {
                back = reverse_string(tmp.data ? tmp.data : "", tmp.len, &blen);
                r = out_append(sh, ret, back, blen);
        }
        kiln_buf_release(&tmp);
        return r;
}

/* Go's regexp template name: "$name" or "${name}", name made of letters,
 * digits and '_'. Returns the bytes consumed after the '$' (0: not a name)
 * and whether it is group 0, the only group BuildKit's patterns have. */
static size_t template_name(const char *t, size_t len, bool *is_zero)
{
        size_t i = 0, start, width;
        bool brace = false;

        if (len > 0 && t[0] == '{') {
                brace = true;
                i = 1;
        }
        start = i;
        while (i < len) {
                int32_t c = decode_at(t, len, i, &width);

                if (!is_name_rune(c))
                        break;
                i += width;
        }
        if (i == start)
                return 0;
        *is_zero = i - start == 1 && t[start] == '0';
        if (brace) {
                if (i >= len || t[i] != '}')
                        return 0;
                i++;
        }
        return i;
}

/* Go's Regexp.Expand of repl for one match: "$$" is '$', "$0" and "${0}"
 * the match, other names nothing, a '$' before no name stays. */
static int expand_template(struct shell *sh, struct kiln_buf *out, const char *repl, size_t rlen,
                           const char *match, size_t mlen)
{
        size_t i = 0;
        int r;

        while (i < rlen) {
                const char *d = memchr(repl + i, '$', rlen - i);
                size_t n;
                bool zero = false;

                if (!d)
                        break;
                r = out_append(sh, out, repl + i, (size_t) (d - repl) - i);
                if (r < 0)
                        return r;
                i = (size_t) (d - repl) + 1;
                if (i < rlen && repl[i] == '$') {
                        r = out_append(sh, out, "$", 1);
                        i++;
                } else if ((n = template_name(repl + i, rlen - i, &zero)) == 0) {
                        r = out_append(sh, out, "$", 1);
                } else {
                        i += n;
                        r = zero ? out_append(sh, out, match, mlen) : 0;
                }
                if (r < 0)
                        return r;
        }
        return out_append(sh, out, repl + i, rlen - i);
}

/* ${x/p/r} and ${x//p/r}: Go's FindStringIndex or ReplaceAllString (whose
 * replacement is a template) with the unanchored greedy pattern. */
static int replace(struct shell *sh, const char *pat, size_t plen, const char *repl, size_t rlen,
                   const char *val, size_t vlen, bool all, struct kiln_buf *ret)
{
        struct machine m;
        size_t last_end = 0, search = 0, ms = 0, me = 0;
        int r;

        r = machine_init(sh, &m, pat, plen, true, false);
        if (r < 0)
                goto out;
        if (!all) {
                r = machine_find(sh, &m, val, vlen, 0, &ms, &me);
                if (r < 0)
                        goto out;
                if (r == 0)
                        r = out_append(sh, ret, val, vlen);
                else if ((r = out_append(sh, ret, val, ms)) >= 0 &&
                         (r = out_append(sh, ret, repl, rlen)) >= 0)
                        r = out_append(sh, ret, val + me, vlen - me);
                goto out;
        }
        while (search <= vlen) {
                size_t width;

                r = machine_find(sh, &m, val, vlen, search, &ms, &me);
                if (r < 0)
                        goto out;
                if (r == 0)
                        break;
                r = out_append(sh, ret, val + last_end, ms - last_end);
                if (r < 0)
                        goto out;
                /* no replacement for an empty match right after a match */
                if (me > last_end || ms == 0) {
                        r = expand_template(sh, ret, repl, rlen, val + ms, me - ms);
                        if (r < 0)
                                goto out;
                }
                last_end = me;
                (void) decode_at(val, vlen, search, &width);
                if (search + width > me)
                        search += width;
                else if (search + 1 > me)
                        search++;
                else
                        search = me;
        }
        r = out_append(sh, ret, val + last_end, vlen - last_end);
out:
        machine_release(&m);
        return r < 0 ? r : 0;
}

/* -- the lexer ------------------------------------------------------------ */

static int stop_on(struct shell *sh, int32_t stop, bool raw_escapes, struct words *w,
                   struct kiln_buf *out);

static bool is_special_param(int32_t c)
{
        return c == '@' || c == '*' || c == '#' || c == '?' || c == '-' || c == '$' || c == '!' ||
               c == '0';
}

/* BuildKit's processName: a run of digits, one special parameter, or a run
 * of letters, digits and '_'. */
static int process_name(struct shell *sh, struct kiln_buf *name)
{
        int32_t c;
        int r;

        while ((c = rd_peek(&sh->rd)) != EOF_RUNE) {
                if (name->len == 0 && kiln_unicode_is_digit((uint32_t) c)) {
                        while ((c = rd_peek(&sh->rd)) != EOF_RUNE &&
                               kiln_unicode_is_digit((uint32_t) c)) {
                                r = out_rune(sh, name, rd_next(&sh->rd));
                                if (r < 0)
                                        return r;
                        }
                        return 0;
                }
                if (name->len == 0 && is_special_param(c))
                        return out_rune(sh, name, rd_next(&sh->rd));
                if (!is_name_rune(c))
                        break;
                r = out_rune(sh, name, rd_next(&sh->rd));
                if (r < 0)
                        return r;
        }
        return 0;
}

static int single_quote(struct shell *sh, struct kiln_buf *ret)
{
        int32_t c = rd_next(&sh->rd);
        int r;

        if (sh->raw_quotes && (r = out_rune(sh, ret, c)) < 0)
                return r;
        for (;;) {
                c = rd_next(&sh->rd);
                if (c == EOF_RUNE)
                        return fail(sh, -EINVAL,
                                    "unexpected end of statement while looking for matching "
                                    "single-quote");
                if (c == '\'') {
                        if (sh->raw_quotes)
                                return out_rune(sh, ret, c);
                        return 0;
                }
                r = out_rune(sh, ret, c);
                if (r < 0)
                        return r;
        }
}

static int process_dollar(struct shell *sh, struct kiln_buf *ret);

static int double_quote(struct shell *sh, struct kiln_buf *ret)
{
        int32_t c = rd_next(&sh->rd);
        int r;

        if (sh->raw_quotes && (r = out_rune(sh, ret, c)) < 0)
                return r;
        for (;;) {
                switch (rd_peek(&sh->rd)) {
                case EOF_RUNE:
                        return fail(sh, -EINVAL,
                                    "unexpected end of statement while looking for matching "
                                    "double-quote");
                case '"':
                        c = rd_next(&sh->rd);
                        if (sh->raw_quotes)
                                return out_rune(sh, ret, c);
                        return 0;
                case '$': {
                        struct kiln_buf v = new_buf();

                        r = process_dollar(sh, &v);
                        if (r >= 0)
                                r = out_append(sh, ret, v.data, v.len);
                        kiln_buf_release(&v);
                        if (r < 0)
                                return r;
                        break;
                }
                default:
                        c = rd_next(&sh->rd);
                        if (c == sh->escape) {
                                int32_t pk;

                                if (sh->raw_escapes && (r = out_rune(sh, ret, c)) < 0)
                                        return r;
                                pk = rd_peek(&sh->rd);
                                /* an escape at the end is dropped; the loop
                                 * then reports the missing quote */
                                if (pk == EOF_RUNE)
                                        continue;
                                /* only these can be escaped; other escapes
                                 * stay as they are */
                                if (pk == '"' || pk == '$' || pk == sh->escape)
                                        c = rd_next(&sh->rd);
                        }
                        r = out_rune(sh, ret, c);
                        if (r < 0)
                                return r;
                }
        }
}

/* "<" or "<<" and the blanks after it, kept raw in words as BuildKit does
 * for heredoc markers. */
static int possible_heredoc(struct shell *sh, struct kiln_buf *ret)
{
        int32_t c;
        int r;

        (void) rd_next(&sh->rd);
        if (rd_peek(&sh->rd) != '<')
                return out_append(sh, ret, "<", 1);
        (void) rd_next(&sh->rd);
        r = out_append(sh, ret, "<<", 2);
        while (r >= 0 && ((c = rd_peek(&sh->rd)) == '\t' || c == '\r' || c == ' '))
                r = out_rune(sh, ret, rd_next(&sh->rd));
        return r;
}

static int unsupported_modifier(struct shell *sh, const struct kiln_buf *chs)
{
        return fail(sh, -EINVAL, "unsupported modifier (%s) in substitution", chs->data);
}

/* The operand of ${name<op>word}, up to the closing brace. */
static int operand(struct shell *sh, int32_t stop, bool raw_escapes, struct kiln_buf *word,
                   const char *missing)
{
        int r = stop_on(sh, stop, raw_escapes, NULL, word);

        if (r == -EINVAL && rd_peek(&sh->rd) == EOF_RUNE)
                return fail(sh, -EINVAL, "%s", missing);
        return r;
}

static int process_braces(struct shell *sh, struct kiln_buf *ret);

static int process_dollar(struct shell *sh, struct kiln_buf *ret)
{
        _cleanup_free_ char *name = NULL;
        struct kiln_buf nb = new_buf();
        const char *value;
        bool set;
        int r;

        (void) rd_next(&sh->rd);
        if (rd_peek(&sh->rd) == '{')
                return process_braces(sh, ret);

        r = process_name(sh, &nb);
        name = kiln_buf_steal(&nb);
        if (r < 0)
                return r;
        if (!*name)
                return out_append(sh, ret, "$", 1);
        set = get_env(sh, name, &value);
        if (!set && sh->skip_unset_env) {
                r = out_append(sh, ret, "$", 1);
                return r < 0 ? r : out_puts(sh, ret, name);
        }
        return out_puts(sh, ret, value);
}

/* SkipUnsetEnv: "${" name op word ["/" repl] "}", the substitution of an
 * unset variable kept as written (word and repl may hold NUL bytes). */
static int keep_unset(struct shell *sh, struct kiln_buf *ret, const char *name, const char *op,
                      size_t op_len, const struct kiln_buf *word, const struct kiln_buf *repl)
{
        int r = out_append(sh, ret, "${", 2);

        if (r >= 0)
                r = out_puts(sh, ret, name);
        if (r >= 0)
                r = out_append(sh, ret, op, op_len);
        if (r >= 0 && word)
                r = out_append(sh, ret, word->data, word->len);
        if (r >= 0 && repl)
                r = out_append(sh, ret, "/", 1);
        if (r >= 0 && repl)
                r = out_append(sh, ret, repl->data, repl->len);
        if (r >= 0)
                r = out_append(sh, ret, "}", 1);
        return r;
}

static int process_braces(struct shell *sh, struct kiln_buf *ret)
{
        _cleanup_free_ char *name = NULL;
        struct kiln_buf nb = new_buf(), chs = new_buf(), word = new_buf(), repl = new_buf();
        bool null_is_unset = false, set, all, raw;
        const char *value;
        int32_t c;
        int r;

        (void) rd_next(&sh->rd);
        switch (rd_peek(&sh->rd)) {
        case EOF_RUNE:
                return fail(sh, -EINVAL, "syntax error: missing '}'");
        case '{':
        case '}':
        case ':':
                return fail(sh, -EINVAL, "syntax error: bad substitution");
        }
        r = process_name(sh, &nb);
        name = kiln_buf_steal(&nb);
        if (r < 0)
                return r;
        c = rd_next(&sh->rd);
        if ((r = out_rune(sh, &chs, c)) < 0)
                goto out;

        switch (c) {
        case '}':
                set = get_env(sh, name, &value);
                if (!set && sh->skip_unset_env) {
                        r = keep_unset(sh, ret, name, "", 0, NULL, NULL);
                        goto out;
                }
                r = out_puts(sh, ret, value);
                goto out;
        case ':':
        case '+':
        case '-':
        case '?':
        case '#':
        case '%':
                if (c == ':') {
                        null_is_unset = true;
                        c = rd_next(&sh->rd);
                        if ((r = out_rune(sh, &chs, c)) < 0)
                                goto out;
                }
                raw = c == '#' || c == '%';
                if (null_is_unset && raw) {
                        r = unsupported_modifier(sh, &chs);
                        goto out;
                }
                r = operand(sh, '}', raw, &word, "syntax error: missing '}'");
                if (r < 0)
                        goto out;
                if (!word.data)
                        (void) kiln_buf_puts(&word, "");
                set = get_env(sh, name, &value);
                if (sh->skip_unset_env && !set) {
                        r = keep_unset(sh, ret, name, chs.data, chs.len, &word, NULL);
                        goto out;
                }
                switch (c) {
                case '-':
                        if (!set || (null_is_unset && !*value))
                                r = out_append(sh, ret, word.data, word.len);
                        else
                                r = out_puts(sh, ret, value);
                        break;
                case '+':
                        if (!set || (null_is_unset && !*value))
                                r = 0;
                        else
                                r = out_append(sh, ret, word.data, word.len);
                        break;
                case '?':
                        if (!set)
                                r = fail(sh, -EINVAL, "%s: %s", name,
                                         word.len ? word.data : "is not allowed to be unset");
                        else if (null_is_unset && !*value)
                                r = fail(sh, -EINVAL, "%s: %s", name,
                                         word.len ? word.data : "is not allowed to be empty");
                        else
                                r = out_puts(sh, ret, value);
                        break;
                case '%':
                case '#': {
                        /* "%%" and "##" take the longest match */
                        bool greedy = word.len > 0 && word.data[0] == (char) c;
                        const char *p = word.data + greedy;
                        size_t plen = word.len - greedy;

                        if (c == '%')
                                r = trim_suffix(sh, p, plen, value, strlen(value), greedy, ret);
                        else
                                r = trim_prefix(sh, p, plen, value, strlen(value), greedy, ret);
                        break;
                }
                default:
                        r = unsupported_modifier(sh, &chs);
                }
                goto out;
        case '/':
                all = rd_peek(&sh->rd) == '/';
                if (all)
                        (void) rd_next(&sh->rd);
                r = operand(sh, '/', true, &word, "syntax error: missing '/' in ${}");
                if (r < 0)
                        goto out;
                r = operand(sh, '}', true, &repl, "syntax error: missing '}'");
                if (r < 0)
                        goto out;
                if (!word.data)
                        (void) kiln_buf_puts(&word, "");
                if (!repl.data)
                        (void) kiln_buf_puts(&repl, "");
                set = get_env(sh, name, &value);
                if (sh->skip_unset_env && !set) {
                        /* as BuildKit: "${x//p/r}" comes back as "${x/p/r}" */
                        r = keep_unset(sh, ret, name, "/", 1, &word, &repl);
                        goto out;
                }
                r = replace(sh, word.data, word.len, repl.data, repl.len, value, strlen(value), all,
                            ret);
                goto out;
        default:
                r = unsupported_modifier(sh, &chs);
                goto out;
        }
out:
        kiln_buf_release(&chs);
        kiln_buf_release(&word);
        kiln_buf_release(&repl);
        return r < 0 ? r : 0;
}

static int stop_on_loop(struct shell *sh, int32_t stop, struct words *w, struct kiln_buf *out)
{
        int32_t c;
        int r;

        while ((c = rd_peek(&sh->rd)) != EOF_RUNE) {
                if (stop != EOF_RUNE && c == stop) {
                        (void) rd_next(&sh->rd);
                        return w ? words_flush(sh, w) : 0;
                }
                if (c == '$' || c == '<' || (!sh->skip_process_quotes && (c == '\'' || c == '"'))) {
                        struct kiln_buf tmp = new_buf();

                        if (c == '$')
                                r = process_dollar(sh, &tmp);
                        else if (c == '<')
                                r = possible_heredoc(sh, &tmp);
                        else if (c == '\'')
                                r = single_quote(sh, &tmp);
                        else
                                r = double_quote(sh, &tmp);
                        if (r >= 0)
                                r = out_append(sh, out, tmp.data, tmp.len);
                        if (r >= 0 && w)
                                r = c == '$' ? words_add_string(sh, w, tmp.data, tmp.len)
                                             : words_add_raw_string(sh, w, tmp.data, tmp.len);
                        kiln_buf_release(&tmp);
                        if (r < 0)
                                return r;
                        continue;
                }
                c = rd_next(&sh->rd);
                if (c == sh->escape) {
                        if (sh->raw_escapes) {
                                if (w && (r = words_add_raw_char(sh, w, c)) < 0)
                                        return r;
                                if ((r = out_rune(sh, out, c)) < 0)
                                        return r;
                        }
                        /* the escape token escapes anything, except the end */
                        c = rd_next(&sh->rd);
                        if (c == EOF_RUNE)
                                break;
                        r = w ? words_add_raw_char(sh, w, c) : 0;
                } else
                        r = w ? words_add_char(sh, w, c) : 0;
                if (r < 0 || (r = out_rune(sh, out, c)) < 0)
                        return r;
        }
        if (stop != EOF_RUNE)
                return fail(sh, -EINVAL,
                            "unexpected end of statement while looking for matching %c",
                            (char) stop);
        return w ? words_flush(sh, w) : 0;
}

/* BuildKit's processStopOn: expands up to stop (EOF_RUNE: the end) into
 * out. BuildKit shares one words buffer between all levels and clears it
 * whenever a level starts, so text collected for the current word before
 * a ${x...} that has an operand is dropped from the split words (not from
 * the expanded word): ProcessWords("a${x:-b}") is ["b"]. kiln keeps that. */
static int stop_on(struct shell *sh, int32_t stop, bool raw_escapes, struct words *w,
                   struct kiln_buf *out)
{
        bool saved = sh->raw_escapes;
        int r;

        if (sh->depth >= KILN_LIMIT_SHELL_DEPTH + 1)
                return fail(sh, -E2BIG, "substitutions nested deeper than %u levels",
                            KILN_LIMIT_SHELL_DEPTH);
        sh->depth++;
        kiln_buf_reset(&sh->wbuf);
        sh->raw_escapes = raw_escapes;
        r = stop_on_loop(sh, stop, w, out);
        sh->raw_escapes = saved;
        sh->depth--;
        return r;
}

/* -- public API ----------------------------------------------------------- */

char **kiln_shell_strv_free(char **v)
{
        if (v)
                for (char **p = v; *p; p++)
                        free(*p);
        free(v);
        return NULL;
}

void kiln_shell_result_release(struct kiln_shell_result *r)
{
        if (!r)
                return;
        free(r->word);
        kiln_shell_strv_free(r->words);
        free(r->word_lens);
        kiln_shell_strv_free(r->matched);
        kiln_shell_strv_free(r->unmatched);
        *r = (struct kiln_shell_result){ 0 };
}

static void shell_release(struct shell *sh)
{
        kiln_buf_release(&sh->wbuf);
        name_set_release(&sh->matched);
        name_set_release(&sh->unmatched);
        free(sh->cause);
}

int kiln_shell_expand_n(const struct kiln_shell_lex *lex, const char *word, size_t len,
                        const struct kiln_shell_env *env, struct kiln_shell_result *ret,
                        struct kiln_error **err)
{
        static const struct kiln_shell_lex defaults = { .escape = '\\' };
        struct shell sh = { 0 };
        struct words w = { 0 };
        struct kiln_buf out = new_buf();
        int r;

        *ret = (struct kiln_shell_result){ 0 };
        if (!word)
                return kiln_error_set(err, -EINVAL, "failed to process: no word");
        if (len > KILN_LIMIT_SHELL_INPUT)
                return kiln_error_set(err, -E2BIG, "failed to process: word longer than %u bytes",
                                      KILN_LIMIT_SHELL_INPUT);
        if (!lex)
                lex = &defaults;
        sh = (struct shell){
                .escape = lex->escape ? (unsigned char) lex->escape : '\\',
                .raw_quotes = lex->raw_quotes,
                .skip_process_quotes = lex->skip_process_quotes,
                .skip_unset_env = lex->skip_unset_env,
                .raw_escapes = lex->raw_escapes,
                .env = env,
                .wbuf = new_buf(),
        };
        reader_init(&sh.rd, word, len);

        r = stop_on(&sh, EOF_RUNE, sh.raw_escapes, &w, &out);
        if (r < 0) {
                struct kiln_buf q = KILN_BUF_INIT(SIZE_MAX);

                (void) kiln_buf_go_quote(&q, word, len);
                r = kiln_error_set(err, r, "failed to process %s: %s", q.data ? q.data : "\"\"",
                                   sh.cause ? sh.cause : "expansion failed");
                kiln_buf_release(&q);
                kiln_buf_release(&out);
                words_release(&w);
                shell_release(&sh);
                return r;
        }

        ret->word_len = out.len;
        ret->word = kiln_buf_steal(&out);
        ret->words = w.v ? w.v : kiln_xcalloc(1, sizeof(char *));
        ret->word_lens = w.lens ? w.lens : kiln_xcalloc(1, sizeof(size_t));
        ret->n_words = w.n;
        ret->matched = name_set_steal_sorted(&sh.matched, &ret->n_matched);
        ret->unmatched = name_set_steal_sorted(&sh.unmatched, &ret->n_unmatched);
        shell_release(&sh);
        return 0;
}

int kiln_shell_expand(const struct kiln_shell_lex *lex, const char *word,
                      const struct kiln_shell_env *env, struct kiln_shell_result *ret,
                      struct kiln_error **err)
{
        return kiln_shell_expand_n(lex, word, word ? strlen(word) : 0, env, ret, err);
}

int kiln_shell_process_word(const struct kiln_shell_lex *lex, const char *word,
                            const struct kiln_shell_env *env, char **ret, struct kiln_error **err)
{
        struct kiln_shell_result res;
        int r = kiln_shell_expand(lex, word, env, &res, err);

        if (r < 0)
                return r;
        *ret = TAKE_PTR(res.word);
        kiln_shell_result_release(&res);
        return 0;
}

int kiln_shell_process_words(const struct kiln_shell_lex *lex, const char *word,
                             const struct kiln_shell_env *env, char ***ret, size_t *ret_n,
                             struct kiln_error **err)
{
        struct kiln_shell_result res;
        int r = kiln_shell_expand(lex, word, env, &res, err);

        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = res.n_words;
        *ret = TAKE_PTR(res.words);
        kiln_shell_result_release(&res);
        return 0;
}
