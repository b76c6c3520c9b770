/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/cli.h"
#include "kiln-test.h"

/* Splits s and compares with the expected words (NULL-terminated). */
static int check_split(const char *s, const char *const *want)
{
        _cleanup_(kiln_cli_strv_freep) char **got = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 0, k = 0;

        ASSERT_OK(kiln_cli_shell_split(s, &got, &n, &err));
        for (; want[k]; k++) {
                if (k >= n)
                        KILN_TEST_FAIL("split(%s): only %zu words, want \"%s\"", s, n, want[k]);
                ASSERT_STREQ(got[k], want[k]);
        }
        ASSERT_EQ_INT(n, k);
        ASSERT_TRUE(got[n] == NULL);
        return 0;
}

#define SPLIT(s, ...)                                                         \
        do {                                                                  \
                const char *const _w[] = { __VA_ARGS__ __VA_OPT__(, ) NULL }; \
                if (check_split(s, _w) < 0)                                   \
                        return -1;                                            \
        } while (0)

TEST(shell_split_blanks)
{
        SPLIT("");
        SPLIT("   \t\n ");
        SPLIT("--oci-max-parallelism 3", "--oci-max-parallelism", "3");
        SPLIT("  --debug\t--oci-worker-net=cni \n", "--debug", "--oci-worker-net=cni");
        return 0;
}

TEST(shell_split_quotes)
{
        SPLIT("'a b' \"c d\"", "a b", "c d");
        SPLIT("--label 'x=it'\"'\"'s'", "--label", "x=it's");
        SPLIT("''", "");
        SPLIT("\"\" x", "", "x");
        SPLIT("a'b'c\"d\"e", "abcde");
        /* single quotes keep everything, backslashes included */
        SPLIT("'a\\nb'", "a\\nb");
        /* in double quotes a backslash escapes only $ ` \" \\ and newline */
        SPLIT("\"a\\\"b\\\\c\\$d\\xe\"", "a\"b\\c$d\\xe");
        /* no expansion */
        SPLIT("$HOME \"$PATH\"", "$HOME", "$PATH");
        return 0;
}

TEST(shell_split_backslashes_and_comments)
{
        SPLIT("a\\ b c", "a b", "c");
        SPLIT("a\\\nb", "ab");
        SPLIT("--a \\\n --b", "--a", "--b");
        SPLIT("--debug # the rest is a comment", "--debug");
        SPLIT("a#b", "a#b");
        SPLIT("# only\n--x", "--x");
        return 0;
}

TEST(shell_split_errors)
{
        static const char *const bad[] = { "'open", "\"open", "trailing\\", "a \"b\\\"" };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_cli_strv_freep) char **got = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                size_t n = 0;

                ASSERT_EQ_INT(kiln_cli_shell_split(bad[i], &got, &n, &err), -EINVAL);
                ASSERT_TRUE(err != NULL);
                ASSERT_TRUE(got == NULL);
        }
        return 0;
}

TEST(shell_split_limit)
{
        _cleanup_(kiln_cli_strv_freep) char **got = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *big = kiln_xcalloc(KILN_CLI_LIMIT_WORDS + 2, 1);
        size_t n;

        memset(big, 'x', KILN_CLI_LIMIT_WORDS + 1);
        ASSERT_EQ_INT(kiln_cli_shell_split(big, &got, &n, &err), -E2BIG);
        return 0;
}

static int check_csv(const char *s, const char *const *want)
{
        _cleanup_(kiln_cli_strv_freep) char **got = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 0, k = 0;

        ASSERT_OK(kiln_cli_csv_split(s, &got, &n, &err));
        for (; want[k]; k++) {
                if (k >= n)
                        KILN_TEST_FAIL("csv(%s): only %zu fields, want \"%s\"", s, n, want[k]);
                ASSERT_STREQ(got[k], want[k]);
        }
        ASSERT_EQ_INT(n, k);
        return 0;
}

#define CSV(s, ...)                                                           \
        do {                                                                  \
                const char *const _w[] = { __VA_ARGS__ __VA_OPT__(, ) NULL }; \
                if (check_csv(s, _w) < 0)                                     \
                        return -1;                                            \
        } while (0)

TEST(csv_split)
{
        CSV("");
        CSV("cacert=/a/ca.pem", "cacert=/a/ca.pem");
        CSV("cacert=/a,cert=/b,key=/c", "cacert=/a", "cert=/b", "key=/c");
        CSV("\"a,b=c\",d", "a,b=c", "d");
        CSV("\"say \"\"hi\"\"\"", "say \"hi\"");
        CSV("a,", "a", "");
        CSV(",", "", "");
        CSV(" a", " a");
        return 0;
}

TEST(csv_split_errors)
{
        static const char *const bad[] = { "\"open", "a\"b", "\"a\"b" };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_cli_strv_freep) char **got = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                size_t n = 0;

                ASSERT_EQ_INT(kiln_cli_csv_split(bad[i], &got, &n, &err), -EINVAL);
                ASSERT_TRUE(err != NULL);
        }
        return 0;
}
