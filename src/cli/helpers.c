/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "cli.h"

uint64_t kiln_cli_now_ms(void)
{
        return (uint64_t) kiln_mono_ms();
}

void kiln_cli_sleep_ms(unsigned ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

char **kiln_cli_strv_free(char **v)
{
        if (!v)
                return NULL;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
        return NULL;
}

/* A growing NULL-terminated word list. */
struct words {
        char **v;
        size_t n;
};

static void words_push(struct words *w, struct kiln_buf *word)
{
        w->v = kiln_xreallocarray(w->v, w->n + 2, sizeof(char *));
        w->v[w->n++] = kiln_buf_steal(word);
        w->v[w->n] = NULL;
}

static void words_release(struct words *w)
{
        w->v = kiln_cli_strv_free(w->v);
        w->n = 0;
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int kiln_cli_shell_split(const char *s, char ***ret, size_t *ret_n, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf word = KILN_BUF_INIT(KILN_CLI_LIMIT_WORDS);
        struct words w = { 0 };
        bool in_word = false;
        const char *p = s;

        if (strlen(s) > KILN_CLI_LIMIT_WORDS)
                return kiln_error_set(err, -E2BIG, "longer than %u bytes", KILN_CLI_LIMIT_WORDS);

        while (*p) {
                char c = *p;

                if (!in_word) {
                        if (is_blank(c)) {
                                p++;
                                continue;
                        }
                        if (c == '#') {
                                while (*p && *p != '\n')
                                        p++;
                                continue;
                        }
                        if (c == '\\' && p[1] == '\n') {
                                p += 2;
                                continue;
                        }
                        in_word = true;
                }

                if (is_blank(c)) {
                        words_push(&w, &word);
                        in_word = false;
                        p++;
                } else if (c == '\\') {
                        if (!p[1]) {
                                words_release(&w);
                                return kiln_error_set(err, -EINVAL,
                                                      "a backslash ends the text: nothing to "
                                                      "escape");
                        }
                        if (p[1] != '\n')
                                (void) kiln_buf_putc(&word, p[1]);
                        p += 2;
                } else if (c == '\'') {
                        const char *end = strchr(p + 1, '\'');

                        if (!end) {
                                words_release(&w);
                                return kiln_error_set(err, -EINVAL, "unterminated single quote");
                        }
                        (void) kiln_buf_append(&word, p + 1, (size_t) (end - p - 1));
                        p = end + 1;
                } else if (c == '"') {
                        p++;
                        for (;;) {
                                if (!*p) {
                                        words_release(&w);
                                        return kiln_error_set(err, -EINVAL,
                                                              "unterminated double quote");
                                }
                                if (*p == '"') {
                                        p++;
                                        break;
                                }
                                if (*p == '\\' && p[1] && strchr("$`\"\\\n", p[1])) {
                                        if (p[1] != '\n')
                                                (void) kiln_buf_putc(&word, p[1]);
                                        p += 2;
                                        continue;
                                }
                                (void) kiln_buf_putc(&word, *p++);
                        }
                } else {
                        (void) kiln_buf_putc(&word, c);
                        p++;
                }
        }
        if (in_word)
                words_push(&w, &word);
        if (!w.v)
                w.v = kiln_xcalloc(1, sizeof(char *));
        *ret = w.v;
        *ret_n = w.n;
        return 0;
}

int kiln_cli_csv_split(const char *s, char ***ret, size_t *ret_n, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf field = KILN_BUF_INIT(KILN_CLI_LIMIT_WORDS);
        struct words w = { 0 };
        const char *p = s;

        if (strlen(s) > KILN_CLI_LIMIT_WORDS)
                return kiln_error_set(err, -E2BIG, "longer than %u bytes", KILN_CLI_LIMIT_WORDS);

        while (*s) { /* an empty record has no fields */
                if (*p == '"') {
                        p++;
                        for (;;) {
                                if (!*p) {
                                        words_release(&w);
                                        return kiln_error_set(err, -EINVAL,
                                                              "unterminated quoted field in "
                                                              "\"%s\"",
                                                              s);
                                }
                                if (p[0] == '"' && p[1] == '"') {
                                        (void) kiln_buf_putc(&field, '"');
                                        p += 2;
                                } else if (*p == '"') {
                                        p++;
                                        break;
                                } else
                                        (void) kiln_buf_putc(&field, *p++);
                        }
                        if (*p && *p != ',') {
                                words_release(&w);
                                return kiln_error_set(err, -EINVAL,
                                                      "extraneous text after a quoted field in "
                                                      "\"%s\"",
                                                      s);
                        }
                } else {
                        while (*p && *p != ',') {
                                if (*p == '"') {
                                        words_release(&w);
                                        return kiln_error_set(err, -EINVAL,
                                                              "bare \" in a field of \"%s\"", s);
                                }
                                (void) kiln_buf_putc(&field, *p++);
                        }
                }
                words_push(&w, &field);
                if (!*p)
                        break;
                p++; /* the comma: a field follows, even an empty one */
                if (!*p) {
                        words_push(&w, &field);
                        break;
                }
        }
        if (!w.v)
                w.v = kiln_xcalloc(1, sizeof(char *));
        *ret = w.v;
        *ret_n = w.n;
        return 0;
}

int kiln_cli_name_validate(const char *s, char **ret, struct kiln_error **err)
{
        size_t n = strlen(s);
        bool ok = n > 0 && isalpha((unsigned char) s[0]);

        for (size_t i = 1; ok && i < n; i++)
                ok = isalnum((unsigned char) s[i]) || s[i] == '.' || s[i] == '-' || s[i] == '_';
        if (!ok)
                return kiln_error_set(err, -EINVAL,
                                      "invalid name %s, name needs to start with a letter and may "
                                      "not contain symbols, except ._-",
                                      s);
        if (n > KILN_CLI_NAME_MAX)
                return kiln_error_set(err, -EINVAL, "invalid name %s: longer than %u characters", s,
                                      KILN_CLI_NAME_MAX);
        if (ret) {
                char *lower = kiln_xstrdup(s);

                for (char *p = lower; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
                *ret = lower;
        }
        return 0;
}

/* kiln's own word lists, in the spirit of docker's name generator. */
static const char *const adjectives[] = {
        "admiring", "agile",     "amazing",     "awesome",   "blissful",  "bold",
        "boring",   "brave",     "busy",        "calm",      "charming",  "clever",
        "cool",     "dazzling",  "determined",  "eager",     "ecstatic",  "elastic",
        "elated",   "elegant",   "epic",        "exciting",  "fervent",   "festive",
        "focused",  "friendly",  "gallant",     "gifted",    "gracious",  "happy",
        "hopeful",  "inspiring", "intelligent", "jolly",     "jovial",    "keen",
        "kind",     "laughing",  "loving",      "lucid",     "magical",   "modest",
        "musing",   "nervous",   "nice",        "nifty",     "nostalgic", "optimistic",
        "peaceful", "pensive",   "practical",   "priceless", "quirky",    "relaxed",
        "romantic", "serene",    "sharp",       "stoic",     "sweet",     "tender",
        "trusting", "upbeat",    "vibrant",     "vigilant",  "wizardly",  "youthful",
        "zealous",  "zen",
};

static const char *const scientists[] = {
        "agnesi",    "allen",    "archimedes", "babbage",  "bardeen", "bartik",     "bell",
        "blackwell", "bohr",     "boole",      "brattain", "cannon",  "carson",     "cerf",
        "curie",     "darwin",   "dijkstra",   "einstein", "euclid",  "euler",      "faraday",
        "fermat",    "fermi",    "feynman",    "franklin", "galileo", "gauss",      "goodall",
        "hamilton",  "hawking",  "heisenberg", "hodgkin",  "hopper",  "hypatia",    "jackson",
        "johnson",   "kalam",    "kepler",     "khorana",  "knuth",   "kowalevski", "lamarr",
        "leakey",    "lovelace", "maxwell",    "mayer",    "meitner", "mendel",     "mirzakhani",
        "morse",     "newton",   "nobel",      "noether",  "pascal",  "pasteur",    "planck",
        "raman",     "ritchie",  "shannon",    "sinoussi", "tesla",   "thompson",   "torvalds",
        "turing",    "volta",    "wiles",      "wozniak",  "wright",  "yalow",      "yonath",
};

char *kiln_cli_name_generate(unsigned retry, uint64_t random)
{
        for (;;) {
                const char *a = adjectives[random % ELEMENTSOF(adjectives)];
                const char *s = scientists[(random >> 20) % ELEMENTSOF(scientists)];

                /* Steve Wozniak is not boring, docker's generator says. */
                if (streq(a, "boring") && streq(s, "wozniak")) {
                        random = (random >> 1) ^ 0x9e3779b97f4a7c15ull;
                        continue;
                }
                if (retry > 0)
                        return kiln_xasprintf("%s_%s%u", a, s, (unsigned) ((random >> 40) % 10));
                return kiln_xasprintf("%s_%s", a, s);
        }
}

/* ---- Tab alignment ---- */

struct tab_line {
        char **cells; /* all cells; the last one is not a column */
        size_t n;
        size_t *widths; /* column widths, n - 1 of them */
};

/* Display width: UTF-8 code points, as Go's tabwriter counts runes. */
static size_t text_width(const char *s)
{
        size_t w = 0;

        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        w++;
        return w;
}

char *kiln_cli_tabs_align(const char *text, size_t minwidth, size_t padding)
{
        struct kiln_buf out = KILN_BUF_INIT(SIZE_MAX / 2);
        struct tab_line *lines = NULL;
        size_t n_lines = 0, max_cols = 0;
        const char *p = text;

        while (*p) {
                const char *eol = strchr(p, '\n');
                size_t len = eol ? (size_t) (eol - p) : strlen(p);
                struct tab_line *l;
                const char *c = p;

                lines = kiln_xreallocarray(lines, n_lines + 1, sizeof(*lines));
                l = &lines[n_lines++];
                *l = (struct tab_line){ 0 };
                for (;;) {
                        const char *tab = memchr(c, '\t', len - (size_t) (c - p));
                        size_t cl = tab ? (size_t) (tab - c) : len - (size_t) (c - p);

                        l->cells = kiln_xreallocarray(l->cells, l->n + 1, sizeof(char *));
                        l->cells[l->n++] = kiln_xstrndup(c, cl);
                        if (!tab)
                                break;
                        c = tab + 1;
                }
                l->widths = kiln_xcalloc(l->n, sizeof(size_t));
                if (l->n - 1 > max_cols)
                        max_cols = l->n - 1;
                p += len + (eol ? 1 : 0);
        }

        for (size_t col = 0; col < max_cols; col++) {
                size_t i = 0;

                while (i < n_lines) {
                        size_t j = i, width = minwidth;

                        if (lines[i].n - 1 <= col) {
                                i++;
                                continue;
                        }
                        while (j < n_lines && lines[j].n - 1 > col) {
                                size_t w = text_width(lines[j].cells[col]) + padding;

                                if (w > width)
                                        width = w;
                                j++;
                        }
                        for (size_t k = i; k < j; k++)
                                lines[k].widths[col] = width;
                        i = j;
                }
        }

        for (size_t i = 0; i < n_lines; i++) {
                struct tab_line *l = &lines[i];
                size_t start = out.len;

                for (size_t c = 0; c < l->n; c++) {
                        (void) kiln_buf_puts(&out, l->cells[c]);
                        if (c + 1 < l->n)
                                for (size_t w = text_width(l->cells[c]); w < l->widths[c]; w++)
                                        (void) kiln_buf_putc(&out, ' ');
                }
                while (out.len > start && out.data[out.len - 1] == ' ')
                        out.data[--out.len] = '\0';
                (void) kiln_buf_putc(&out, '\n');
                for (size_t c = 0; c < l->n; c++)
                        free(l->cells[c]);
                free(l->cells);
                free(l->widths);
        }
        free(lines);
        return kiln_buf_steal(&out);
}

/* ---- Platforms ---- */

/* buildx lists these first, in this order. */
static const char *const major_platforms[] = {
        "linux/amd64", "linux/arm64",   "linux/arm",    "linux/ppc64le",
        "linux/s390x", "linux/riscv64", "linux/mips64",
};

struct platform_group {
        char *key; /* os/arch */
        size_t *members;
        size_t n;
};

/* "os/arch" of "os/arch[/variant]", or NULL when p has no '/'. */
static char *platform_key(const char *p)
{
        const char *s = strchr(p, '/'), *v;

        if (!s || s == p || !s[1])
                return NULL;
        v = strchr(s + 1, '/');
        return v ? kiln_xstrndup(p, (size_t) (v - p)) : kiln_xstrdup(p);
}

static struct platform_group *group_find(struct platform_group *g, size_t n, const char *key)
{
        for (size_t i = 0; i < n; i++)
                if (streq(g[i].key, key))
                        return &g[i];
        return NULL;
}

static int group_cmp(const void *a, const void *b)
{
        return strcmp(((const struct platform_group *) a)->key,
                      ((const struct platform_group *) b)->key);
}

static void group_add(struct platform_group **g, size_t *n, const char *key, size_t member)
{
        struct platform_group *x = group_find(*g, *n, key);

        if (!x) {
                *g = kiln_xreallocarray(*g, *n + 1, sizeof(**g));
                x = &(*g)[(*n)++];
                *x = (struct platform_group){ .key = kiln_xstrdup(key) };
        }
        x->members = kiln_xreallocarray(x->members, x->n + 1, sizeof(size_t));
        x->members[x->n++] = member;
}

static void group_print(struct kiln_buf *out, const char *const *platforms,
                        const struct platform_group *g, size_t *count)
{
        if (out->len > 0)
                (void) kiln_buf_puts(out, ", ");
        if (g->n == 1)
                (void) kiln_buf_puts(out, platforms[g->members[0]]);
        else
                (void) kiln_buf_printf(out, "%s (+%zu)", g->key, g->n);
        *count += g->n;
}

char *kiln_cli_platforms_format(const char *const *platforms, size_t n, bool truncate, size_t max)
{
        struct kiln_buf out = KILN_BUF_INIT(SIZE_MAX / 2);
        struct platform_group *groups = NULL, *rest = NULL;
        size_t n_groups = 0, n_rest = 0, count = 0, printed = 0;

        if (!truncate) {
                for (size_t i = 0; i < n; i++)
                        (void) kiln_buf_printf(&out, "%s%s", i ? ", " : "", platforms[i]);
                return kiln_buf_steal(&out);
        }

        /* The common architectures, in their order, until max groups. */
        for (size_t m = 0; m < ELEMENTSOF(major_platforms); m++)
                for (size_t i = 0; i < n && n_groups < max; i++) {
                        _cleanup_free_ char *key = platform_key(platforms[i]);

                        if (key && streq(key, major_platforms[m]))
                                group_add(&groups, &n_groups, key, i);
                }
        /* Then the others, by name. */
        for (size_t i = 0; i < n && n_groups < max; i++) {
                _cleanup_free_ char *key = platform_key(platforms[i]);

                if (key && !group_find(groups, n_groups, key))
                        group_add(&rest, &n_rest, key, i);
        }
        if (n_rest > 0)
                qsort(rest, n_rest, sizeof(*rest), group_cmp);

        for (size_t m = 0; m < ELEMENTSOF(major_platforms); m++) {
                const struct platform_group *g = group_find(groups, n_groups, major_platforms[m]);

                if (g) {
                        group_print(&out, platforms, g, &count);
                        printed++;
                }
        }
        for (size_t i = 0; i < n_rest && printed < max; i++) {
                group_print(&out, platforms, &rest[i], &count);
                printed++;
        }
        if (n > count)
                (void) kiln_buf_printf(&out, "%s(%zu more)", out.len ? ", " : "", n - count);

        for (size_t i = 0; i < n_groups; i++) {
                free(groups[i].key);
                free(groups[i].members);
        }
        for (size_t i = 0; i < n_rest; i++) {
                free(rest[i].key);
                free(rest[i].members);
        }
        free(groups);
        free(rest);
        return kiln_buf_steal(&out);
}
