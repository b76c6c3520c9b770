/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>

#include "base/macro.h"
#include "content/content.h"
#include "kiln-test.h"

/* Dumps v (consumed) and compares with what Go's encoding/json writes. */
static int dump_is(json_t *v, unsigned flags, const char *expected)
{
        struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        int r = kiln_content_json_dump(v, flags, &b);

        json_decref(v);
        if (r < 0 || !streq(b.data ? b.data : "", expected)) {
                printf("# got '%s' (%d), expected '%s'\n", b.data ? b.data : "", r, expected);
                kiln_buf_release(&b);
                return -1;
        }
        kiln_buf_release(&b);
        return 0;
}

#define CHECK(x)                   \
        do {                       \
                if ((x) < 0)       \
                        return -1; \
        } while (0)

TEST(json_go_string_escaping)
{
        /* json.Marshal("<a href=\"x\">&amp;</a>") */
        CHECK(dump_is(json_string("<a href=\"x\">&amp;</a>"), 0,
                      "\"\\u003ca href=\\\"x\\\"\\u003e\\u0026amp;\\u003c/a\\u003e\""));
        CHECK(dump_is(json_string("tab\there\nnl\r\\ \b\f"), 0,
                      "\"tab\\there\\nnl\\r\\\\ \\b\\f\""));
        CHECK(dump_is(json_string("\x01\x1f\x7f"), 0, "\"\\u0001\\u001f\x7f\""));
        /* Non-ASCII stays raw, but the JS line separators are escaped. */
        CHECK(dump_is(json_string("caf\xc3\xa9 \xe2\x80\xa8 \xe2\x80\xa9 \xf0\x9f\x90\xb3"), 0,
                      "\"caf\xc3\xa9 \\u2028 \\u2029 \xf0\x9f\x90\xb3\""));
        CHECK(dump_is(json_string("/slash/"), 0, "\"/slash/\""));
        CHECK(dump_is(json_stringn("a\0b", 3), 0, "\"a\\u0000b\""));
        return 0;
}

TEST(json_go_numbers)
{
        CHECK(dump_is(json_integer(0), 0, "0"));
        CHECK(dump_is(json_integer(-9223372036854775807LL - 1), 0, "-9223372036854775808"));
        CHECK(dump_is(json_real(1.0), 0, "1"));
        CHECK(dump_is(json_real(-0.0), 0, "-0"));
        CHECK(dump_is(json_real(0.1), 0, "0.1"));
        CHECK(dump_is(json_real(123.456), 0, "123.456"));
        CHECK(dump_is(json_real(1e20), 0, "100000000000000000000"));
        CHECK(dump_is(json_real(1e21), 0, "1e+21"));
        CHECK(dump_is(json_real(1.5e300), 0, "1.5e+300"));
        CHECK(dump_is(json_real(0.000001), 0, "0.000001"));
        CHECK(dump_is(json_real(1e-7), 0, "1e-7"));
        CHECK(dump_is(json_real(1.25e-10), 0, "1.25e-10"));
        CHECK(dump_is(json_real(-2.5e-8), 0, "-2.5e-8"));
        CHECK(dump_is(json_real(0.30000000000000004), 0, "0.30000000000000004"));
        return 0;
}

TEST(json_go_layout)
{
        json_t *o = json_pack("{s:i, s:[], s:{}, s:[i, {s:b}], s:n}", "z", 1, "empty", "obj",
                              "list", 2, "t", 1, "null");

        /* Key order is insertion order (Go's struct order), not sorted. */
        CHECK(dump_is(json_incref(o), 0,
                      "{\"z\":1,\"empty\":[],\"obj\":{},\"list\":[2,{\"t\":true}],\"null\":null}"));
        CHECK(dump_is(o, KILN_CONTENT_JSON_INDENT,
                      "{\n"
                      "  \"z\": 1,\n"
                      "  \"empty\": [],\n"
                      "  \"obj\": {},\n"
                      "  \"list\": [\n"
                      "    2,\n"
                      "    {\n"
                      "      \"t\": true\n"
                      "    }\n"
                      "  ],\n"
                      "  \"null\": null\n"
                      "}"));
        CHECK(dump_is(json_false(), KILN_CONTENT_JSON_INDENT, "false"));
        return 0;
}

TEST(json_bounded_output)
{
        struct kiln_buf b = KILN_BUF_INIT(8);
        json_t *v = json_string("longer than eight");

        ASSERT_EQ_INT(kiln_content_json_dump(v, 0, &b), -E2BIG);
        ASSERT_EQ_INT(kiln_content_json_dump(NULL, 0, &b), -EINVAL);
        json_decref(v);
        kiln_buf_release(&b);
        return 0;
}

TEST(json_roundtrip_parsed_config)
{
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *c = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        /* As BuildKit writes it: compact, Go's escapes kept. */
        const char *in = "{\"architecture\":\"amd64\",\"config\":{\"Cmd\":[\"echo \\u003e \\u0026 "
                         "\\u003c\"],\"Hostname\":\"\"},\"os\":\"linux\",\"rootfs\":{\"type\":"
                         "\"layers\",\"diff_ids\":[]}}";

        ASSERT_OK(
                kiln_content_config_parse(in, strlen(in), KILN_CONTENT_MT_DOCKER_CONFIG, &c, &err));
        ASSERT_STREQ(c->cmd[0], "echo > & <");
        ASSERT_OK(kiln_content_config_serialize(c, &b));
        ASSERT_STREQ(b.data, in);
        kiln_buf_release(&b);
        return 0;
}
