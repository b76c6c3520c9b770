/* SPDX-License-Identifier: Apache-2.0 */
#include "base/error.h"
#include "kiln-test.h"

static int parse_thing(struct kiln_error **err)
{
        return kiln_error_set_at(err, -EINVAL, "buildkitd.toml", 3, 7, "expected '=' after key");
}

static int load_thing(struct kiln_error **err)
{
        int r = parse_thing(err);

        if (r < 0)
                return kiln_error_wrap(err, "load config '%s'", "/etc/buildkit/buildkitd.toml");
        return 0;
}

TEST(wrap_puts_context_first_and_keeps_code_and_location)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_EQ_INT(load_thing(&err), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err),
                     "load config '/etc/buildkit/buildkitd.toml': buildkitd.toml:3:7: expected '=' "
                     "after key");
        ASSERT_EQ_INT(err->line, 3);
        ASSERT_EQ_INT(err->col, 7);
        ASSERT_STREQ(err->file, "buildkitd.toml");
        return 0;
}

TEST(positive_code_becomes_eio)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_EQ_INT(kiln_error_set(&err, 5, "bad"), -EIO);
        ASSERT_EQ_INT(err->code, -EIO);
        return 0;
}

TEST(set_replaces_previous)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        (void) kiln_error_set(&err, -EINVAL, "first");
        (void) kiln_error_set(&err, -ENOENT, "second %d", 2);
        ASSERT_STREQ(kiln_error_message(err), "second 2");
        ASSERT_EQ_INT(err->code, -ENOENT);
        return 0;
}
