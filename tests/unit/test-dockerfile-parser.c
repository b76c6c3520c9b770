/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dockerfile/parser.h"
#include "kiln-test.h"

static char *dump(const char *src)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char *out = NULL;
        size_t len = 0;
        FILE *f;

        if (kiln_dockerfile_parse(src, strlen(src), "t", &root, &err) < 0)
                return NULL;
        f = open_memstream(&out, &len);
        kiln_dockerfile_dump(root, f);
        fclose(f);
        return out;
}

TEST(basic_instructions)
{
        _cleanup_free_ char *a = dump("FROM a AS b\nRUN [\"x\", \"y\"]\nCMD ['a']\n");
        _cleanup_free_ char *b = dump("ENV k v w\nLABEL a=\"x y\" b=c\nonbuild copy . /\n");
        _cleanup_free_ char *c = dump("# escape=`\nCOPY --from=x --chown=\"a b\" s \\ `\n  d\n");

        ASSERT_STREQ(a, "(from \"a\" \"AS\" \"b\")\n(run \"x\" \"y\")\n(cmd \"['a']\")\n");
        ASSERT_STREQ(b, "(env \"k\" \"v w\" \"\")\n(label \"a\" \"\\\"x y\\\"\" \"=\" \"b\" \"c\" "
                        "\"=\")\n(onbuild (copy \".\" \"/\"))\n");
        ASSERT_STREQ(c, "(copy [\"--from=x\" \"--chown=a b\"] \"s\" \"\\\\\" \"d\")\n");
        return 0;
}

TEST(errors_carry_line)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *src = "FROM a\n\nENV PATH\n";

        ASSERT_EQ_INT(kiln_dockerfile_parse(src, strlen(src), "f", &root, &err), -EINVAL);
        ASSERT_EQ_INT(err->line, 3);
        ASSERT_STREQ(err->message, "f:3: ENV must have two arguments");
        return 0;
}

TEST(empty_and_quote)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *q = NULL;
        size_t len = 0;
        FILE *f;

        ASSERT_EQ_INT(kiln_dockerfile_parse("# c\n\n", 5, NULL, &root, &err), -EINVAL);
        f = open_memstream(&q, &len);
        kiln_dockerfile_quote("a\x01\xff\t\xe2\x99\xa5", 7, f);
        fclose(f);
        ASSERT_STREQ(q, "\"a\\x01\\xff\\t\xe2\x99\xa5\"");
        return 0;
}
