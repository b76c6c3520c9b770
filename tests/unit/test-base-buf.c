/* SPDX-License-Identifier: Apache-2.0 */
#include "base/buf.h"
#include "kiln-test.h"

TEST(append_within_limit)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(8);

        ASSERT_OK(kiln_buf_puts(&b, "abc"));
        ASSERT_OK(kiln_buf_printf(&b, "%d", 12345));
        ASSERT_EQ_INT(b.len, 8);
        ASSERT_STREQ(b.data, "abc12345");
        return 0;
}

TEST(append_past_limit_fails_and_keeps_contents)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(4);

        ASSERT_OK(kiln_buf_puts(&b, "abcd"));
        ASSERT_EQ_INT(kiln_buf_putc(&b, 'e'), -E2BIG);
        ASSERT_EQ_INT(kiln_buf_printf(&b, "%s", "x"), -E2BIG);
        ASSERT_STREQ(b.data, "abcd");
        return 0;
}

TEST(huge_length_does_not_overflow)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX - 1);
        _cleanup_(kiln_buf_release) struct kiln_buf unlimited = KILN_BUF_INIT(SIZE_MAX);

        ASSERT_OK(kiln_buf_puts(&b, "ab"));
        ASSERT_EQ_INT(kiln_buf_append(&b, "", SIZE_MAX - 2), -E2BIG);
        /* A maximum of SIZE_MAX must not wrap the capacity computation. */
        ASSERT_OK(kiln_buf_puts(
                &unlimited,
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"));
        ASSERT_EQ_INT(unlimited.len, 74);
        ASSERT_EQ_INT(kiln_buf_append(&unlimited, "", SIZE_MAX), -E2BIG);
        return 0;
}

TEST(steal_leaves_empty)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(16);
        _cleanup_free_ char *s = NULL, *empty = NULL;

        ASSERT_OK(kiln_buf_puts(&b, "hello"));
        s = kiln_buf_steal(&b);
        ASSERT_STREQ(s, "hello");
        ASSERT_EQ_INT(b.len, 0);
        empty = kiln_buf_steal(&b);
        ASSERT_STREQ(empty, "");
        return 0;
}

TEST(quote_untrusted_escapes_and_cuts)
{
        _cleanup_free_ char *a = kiln_quote_untrusted("a\tb\\c\xc3\xa9", 7, 100);
        _cleanup_free_ char *b = kiln_quote_untrusted("abcdef", 6, 3);
        _cleanup_free_ char *c = kiln_quote_untrusted("", 0, 3);

        ASSERT_STREQ(a, "a\\x09b\\x5cc\\xc3\\xa9");
        ASSERT_STREQ(b, "abc...");
        ASSERT_STREQ(c, "");
        return 0;
}
