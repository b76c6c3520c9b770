/* SPDX-License-Identifier: Apache-2.0 */
#include "base/macro.h"
#include "base/suggest.h"
#include "kiln-test.h"

static const char *const instructions[] = { "add",         "arg",    "cmd",        "copy",
                                            "entrypoint",  "env",    "expose",     "from",
                                            "healthcheck", "label",  "maintainer", "onbuild",
                                            "run",         "shell",  "stopsignal", "user",
                                            "volume",      "workdir" };

/* kiln_suggest's answer as a string for ASSERT_STREQ, "(none)" for NULL. */
static char *suggest(const char *val, const char *const *opts, size_t n, unsigned flags)
{
        char *s = kiln_suggest(val, opts, n, flags);
        return s ? s : kiln_xstrdup("(none)");
}

#define ASSERT_SUGGEST(val, opts, flags, want)                                           \
        do {                                                                             \
                _cleanup_free_ char *got_ = suggest(val, opts, ELEMENTSOF(opts), flags); \
                ASSERT_STREQ(got_, want);                                                \
        } while (0)

TEST(case_follows_what_was_written)
{
        /* all upper case: the option raised; all lower or mixed: lowered */
        ASSERT_SUGGEST("RUNN", instructions, 0, "RUN");
        ASSERT_SUGGEST("runn", instructions, 0, "run");
        ASSERT_SUGGEST("Runn", instructions, 0, "run");
        ASSERT_SUGGEST("FORM", instructions, 0, "FROM");
        /* no letters at all is "lower case" first, as strings.ToLower says */
        static const char *const digits[] = { "123" };
        ASSERT_SUGGEST("12", digits, 0, "123");
        return 0;
}

TEST(exact_match_means_no_suggestion)
{
        /* even after a close option was seen, and across case when folding */
        static const char *const opts[] = { "fro", "from" };
        ASSERT_SUGGEST("from", opts, 0, "(none)");
        ASSERT_SUGGEST("FROM", opts, 0, "(none)");
        ASSERT_SUGGEST("frm", opts, KILN_SUGGEST_CASE_SENSITIVE, "fro");
        ASSERT_SUGGEST("from", opts, KILN_SUGGEST_CASE_SENSITIVE, "(none)");
        return 0;
}

TEST(case_sensitive_returns_the_option_as_written)
{
        static const char *const stages[] = { "Builder", "base" };
        ASSERT_SUGGEST("builder", stages, KILN_SUGGEST_CASE_SENSITIVE, "Builder");
        ASSERT_SUGGEST("BASE", stages, KILN_SUGGEST_CASE_SENSITIVE, "(none)");
        ASSERT_SUGGEST("BASE", stages, 0, "(none)");
        return 0;
}

TEST(at_most_two_edits)
{
        static const char *const opts[] = { "healthcheck" };
        ASSERT_SUGGEST("helthchek", opts, 0, "healthcheck");
        ASSERT_SUGGEST("helthche", opts, 0, "(none)");
        ASSERT_SUGGEST("x", instructions, 0, "(none)");
        ASSERT_TRUE(kiln_suggest("run", NULL, 0, 0) == NULL);
        /* a swap is two edits for the distance itself, two swaps four */
        static const char *const copy[] = { "copy" };
        ASSERT_SUGGEST("cpoy", copy, 0, "copy");
        ASSERT_SUGGEST("pcyo", copy, 0, "(none)");
        return 0;
}

TEST(ties)
{
        /* in list order the first of the closest wins */
        static const char *const near[] = { "abz", "aby", "axy", "acb" };
        ASSERT_SUGGEST("abc", near, KILN_SUGGEST_CASE_SENSITIVE, "abz");
        /* in any order: fewer edits with swaps, then byte order */
        ASSERT_SUGGEST("abc", near, KILN_SUGGEST_CASE_SENSITIVE | KILN_SUGGEST_ANY_ORDER, "aby");
        static const char *const swapped[] = { "axy", "acb" };
        ASSERT_SUGGEST("abc", swapped, KILN_SUGGEST_CASE_SENSITIVE, "axy");
        ASSERT_SUGGEST("abc", swapped, KILN_SUGGEST_CASE_SENSITIVE | KILN_SUGGEST_ANY_ORDER, "acb");
        /* a closer option later in the list beats an earlier one */
        static const char *const closer[] = { "abxy", "abx" };
        ASSERT_SUGGEST("ab", closer, 0, "abx");
        return 0;
}

TEST(runes_not_bytes)
{
        /* two runes of two bytes each: two edits */
        static const char *const ete[] = { "ete" };
        ASSERT_SUGGEST("été", ete, 0, "ete");
        /* folding is unicode.ToLower */
        static const char *const accented[] = { "été" };
        ASSERT_SUGGEST("ÉTÉ", accented, 0, "(none)");
        ASSERT_SUGGEST("Étés", accented, 0, "été");
        /* a byte that is not UTF-8 is one rune, U+FFFD */
        static const char *const bad[] = { "ab\xff" };
        ASSERT_SUGGEST("ab", bad, KILN_SUGGEST_CASE_SENSITIVE, "ab\xff");
        return 0;
}

TEST(long_words)
{
        char a[KILN_LIMIT_SUGGEST_RUNES + 2], b[KILN_LIMIT_SUGGEST_RUNES + 2];
        const char *opts[] = { b };

        memset(a, 'a', sizeof(a) - 1);
        a[sizeof(a) - 1] = 0;
        memcpy(b, a, sizeof(b));
        /* equal: still no suggestion, however long */
        ASSERT_TRUE(kiln_suggest(a, opts, 1, 0) == NULL);
        /* one edit apart but past the limit: not compared */
        b[0] = 'b';
        ASSERT_TRUE(kiln_suggest(a, opts, 1, 0) == NULL);
        /* at the limit: compared */
        a[KILN_LIMIT_SUGGEST_RUNES] = 0;
        b[KILN_LIMIT_SUGGEST_RUNES] = 0;
        _cleanup_free_ char *s = kiln_suggest(a, opts, 1, 0);
        ASSERT_STREQ(s, b);
        return 0;
}
