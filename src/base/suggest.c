/* SPDX-License-Identifier: Apache-2.0 */
#include "base/suggest.h"

#include <stdint.h>

#include "base/buf.h"
#include "base/goquote.h"
#include "base/macro.h"
#include "base/unicode.h"

/* A string as Go's []rune, folded to lower case unless case_sensitive. */
struct runes {
        uint32_t r[KILN_LIMIT_SUGGEST_RUNES];
        size_t n;
};

/* False when s has more than KILN_LIMIT_SUGGEST_RUNES runes. */
static bool runes_load(struct runes *out, const char *s, bool case_sensitive)
{
        size_t len = strlen(s);

        out->n = 0;
        for (size_t i = 0, w; i < len; i += w) {
                uint32_t r = kiln_utf8_decode_rune(s + i, len - i, &w);

                if (out->n == ELEMENTSOF(out->r))
                        return false;
                out->r[out->n++] = case_sensitive ? r : kiln_unicode_to_lower(r);
        }
        return true;
}

/* a == b, or Go's strings.ToLower(a) == strings.ToLower(b) without
 * case_sensitive: at any length. */
static bool words_equal(const char *a, const char *b, bool case_sensitive)
{
        size_t la = strlen(a), lb = strlen(b), i = 0, j = 0;

        if (case_sensitive)
                return streq(a, b);
        while (i < la && j < lb) {
                size_t wa, wb;
                uint32_t ra = kiln_utf8_decode_rune(a + i, la - i, &wa);
                uint32_t rb = kiln_utf8_decode_rune(b + j, lb - j, &wb);

                if (kiln_unicode_to_lower(ra) != kiln_unicode_to_lower(rb))
                        return false;
                i += wa;
                j += wb;
        }
        return i == la && j == lb;
}

static size_t min_size(size_t a, size_t b)
{
        return a < b ? a : b;
}

/* Levenshtein's distance of a and b; with transpose a swap of neighbours
 * also counts as one edit. Three rows: the one before the previous is what
 * a swap looks back to. */
static size_t edit_distance(const struct runes *a, const struct runes *b, bool transpose)
{
        size_t rows[3][KILN_LIMIT_SUGGEST_RUNES + 1];
        size_t *before = rows[0], *prev = rows[1], *cur = rows[2];

        for (size_t j = 0; j <= b->n; j++)
                prev[j] = j;
        for (size_t i = 1; i <= a->n; i++) {
                size_t *t;

                cur[0] = i;
                for (size_t j = 1; j <= b->n; j++) {
                        size_t best = prev[j - 1] + (a->r[i - 1] == b->r[j - 1] ? 0 : 1);

                        best = min_size(best, min_size(prev[j], cur[j - 1]) + 1);
                        if (transpose && i > 1 && j > 1 && a->r[i - 1] == b->r[j - 2] &&
                            a->r[i - 2] == b->r[j - 1])
                                best = min_size(best, before[j - 2] + 1);
                        cur[j] = best;
                }
                t = before;
                before = prev;
                prev = cur;
                cur = t;
        }
        return prev[b->n];
}

/* Go's s == strings.ToLower(s): every rune valid UTF-8 and its own lower
 * case. */
static bool is_lower(const char *s)
{
        size_t len = strlen(s);

        for (size_t i = 0, w; i < len; i += w) {
                uint32_t r = kiln_utf8_decode_rune(s + i, len - i, &w);

                if ((r == 0xfffd && w != 3) || kiln_unicode_to_lower(r) != r)
                        return false;
        }
        return true;
}

static bool has_ascii_lower(const char *s)
{
        for (; *s; s++)
                if (*s >= 'a' && *s <= 'z')
                        return true;
        return false;
}

/* suggest.Search's matchCase on a folded option. */
static char *match_case(const struct runes *opt, const char *orig)
{
        bool upper = !is_lower(orig) && !has_ascii_lower(orig);
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        for (size_t i = 0; i < opt->n; i++) {
                char out[4];
                size_t w = kiln_utf8_encode(opt->r[i], out);

                if (upper && w == 1)
                        out[0] = ascii_toupper(out[0]);
                (void) kiln_buf_append(&b, out, w);
        }
        return kiln_buf_steal(&b);
}

char *kiln_suggest(const char *val, const char *const *options, size_t n, unsigned flags)
{
        bool case_sensitive = flags & KILN_SUGGEST_CASE_SENSITIVE;
        bool any_order = flags & KILN_SUGGEST_ANY_ORDER;
        _cleanup_free_ struct runes *v = kiln_xmalloc(sizeof(*v));
        _cleanup_free_ struct runes *o = kiln_xmalloc(sizeof(*o));
        _cleanup_free_ struct runes *best = kiln_xmalloc(sizeof(*best));
        const char *match = NULL;
        size_t mindist = SIZE_MAX, min_swaps = SIZE_MAX;
        bool v_ok = runes_load(v, val, case_sensitive);

        for (size_t i = 0; i < n; i++) {
                size_t d, swaps = 0;

                if (words_equal(val, options[i], case_sensitive))
                        return NULL;
                if (!v_ok || !runes_load(o, options[i], case_sensitive))
                        continue;
                if ((v->n > o->n ? v->n - o->n : o->n - v->n) > KILN_SUGGEST_MAX_DISTANCE)
                        continue;
                d = edit_distance(v, o, false);
                if (d > KILN_SUGGEST_MAX_DISTANCE || d > mindist)
                        continue;
                if (any_order)
                        swaps = edit_distance(v, o, true);
                if (d == mindist && (!any_order || swaps > min_swaps ||
                                     (swaps == min_swaps && strcmp(options[i], match) >= 0)))
                        continue;
                match = options[i];
                mindist = d;
                min_swaps = swaps;
                *best = *o;
        }
        if (!match)
                return NULL;
        if (case_sensitive)
                return kiln_xstrdup(match);
        return match_case(best, val);
}
