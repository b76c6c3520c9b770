/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>

#include "cli/cli.h"
#include "kiln-test.h"

TEST(validate_accepts_buildx_names)
{
        static const char *const good[] = { "a", "mybuilder", "My.Builder-1_x", "z9" };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_free_ char *lower = NULL;

                ASSERT_OK(kiln_cli_name_validate(good[i], &lower, &err));
                for (const char *p = lower; *p; p++)
                        ASSERT_TRUE(!isupper((unsigned char) *p));
        }
        return 0;
}

TEST(validate_lowercases)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *lower = NULL;

        ASSERT_OK(kiln_cli_name_validate("MyBuilder", &lower, &err));
        ASSERT_STREQ(lower, "mybuilder");
        return 0;
}

TEST(validate_refuses)
{
        static const char *const bad[] = {
                "", "1abc", "-x", "_x", "a b", "a/b", "a:b", "../x", "é"
        };
        char long_name[KILN_CLI_NAME_MAX + 2];

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_EQ_INT(kiln_cli_name_validate(bad[i], NULL, &err), -EINVAL);
                ASSERT_TRUE(strstr(kiln_error_message(err), "invalid name") != NULL);
        }
        memset(long_name, 'a', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = '\0';
        ASSERT_EQ_INT(kiln_cli_name_validate(long_name, NULL, NULL), -EINVAL);
        long_name[KILN_CLI_NAME_MAX] = '\0';
        ASSERT_OK(kiln_cli_name_validate(long_name, NULL, NULL));
        return 0;
}

/* adjective_scientist, optionally a digit: lower case letters only. */
static bool generated_shape(const char *s, bool digit)
{
        const char *u = strchr(s, '_');
        size_t n = strlen(s);

        if (!u || u == s || strchr(u + 1, '_'))
                return false;
        for (const char *p = s; *p; p++) {
                if (p == u)
                        continue;
                if (digit && p == s + n - 1)
                        return isdigit((unsigned char) *p);
                if (!islower((unsigned char) *p))
                        return false;
        }
        return !digit;
}

TEST(generate_shape_and_validity)
{
        uint64_t x = 88172645463325252ull;

        for (unsigned i = 0; i < 2000; i++) {
                _cleanup_free_ char *a = NULL, *b = NULL;

                /* xorshift64: many different draws, reproducibly */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                a = kiln_cli_name_generate(0, x);
                b = kiln_cli_name_generate(1 + i % 5, x);
                if (!generated_shape(a, false) || !generated_shape(b, true))
                        KILN_TEST_FAIL("bad generated names '%s' '%s'", a, b);
                ASSERT_OK(kiln_cli_name_validate(a, NULL, NULL));
                ASSERT_OK(kiln_cli_name_validate(b, NULL, NULL));
                ASSERT_TRUE(strncmp(b, a, strlen(a)) == 0);
                ASSERT_TRUE(!streq(a, "boring_wozniak"));
        }
        return 0;
}

TEST(generate_varies)
{
        _cleanup_free_ char *a = kiln_cli_name_generate(0, 1);
        _cleanup_free_ char *b = kiln_cli_name_generate(0, 2);
        _cleanup_free_ char *c = kiln_cli_name_generate(0, 1u << 20);

        ASSERT_TRUE(!streq(a, b));
        ASSERT_TRUE(!streq(a, c));
        return 0;
}
