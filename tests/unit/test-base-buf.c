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
