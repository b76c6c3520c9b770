/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <time.h>

#include "base/log.h"
#include "kiln-test.h"

/* 2026-11-28T04:09:44Z */
#define T0 1795838984LL

static int use_utc(void)
{
        setenv("TZ", "UTC", 1);
        tzset();
        return 0;
}

TEST(text_matches_logrus)
{
        _cleanup_free_ char *line = NULL;

        use_utc();
        line = kiln_log_format_line(KILN_LOG_TEXT, KILN_LOG_DEBUG, T0,
                                    KILN_FIELDS({ "url", "http://127.0.0.1:5000/v2/?ns=docker.io" },
                                                { "request.method", "GET" },
                                                { "spanID", "0123abcd" },
                                                { "response.status", "200 OK" }, { "empty", "" }),
                                    "do request");
        ASSERT_STREQ(line, "time=\"2026-11-28T04:09:44Z\" level=debug msg=\"do request\" empty= "
                           "request.method=GET response.status=\"200 OK\" spanID=0123abcd "
                           "url=\"http://127.0.0.1:5000/v2/?ns=docker.io\"\n");
        return 0;
}

TEST(text_quotes_like_go)
{
        _cleanup_free_ char *line = NULL;

        use_utc();
        line = kiln_log_format_line(KILN_LOG_TEXT, KILN_LOG_WARN, T0,
                                    KILN_FIELDS({ "a", "x\"y\\z\n\t\x01" }, { "b", "caf\xc3\xa9" },
                                                { "c", "bad\xff" }, { "d", "a-b._/@^+9" }),
                                    "x");
        ASSERT_STREQ(line, "time=\"2026-11-28T04:09:44Z\" level=warning msg=x "
                           "a=\"x\\\"y\\\\z\\n\\t\\x01\" b=\"caf\xc3\xa9\" c=\"bad\\xff\" "
                           "d=a-b._/@^+9\n");
        return 0;
}

TEST(text_omits_empty_message)
{
        _cleanup_free_ char *line = NULL;

        use_utc();
        line = kiln_log_format_line(KILN_LOG_TEXT, KILN_LOG_INFO, T0, NULL, 0, "");
        ASSERT_STREQ(line, "time=\"2026-11-28T04:09:44Z\" level=info\n");
        return 0;
}

TEST(text_local_offset)
{
        _cleanup_free_ char *line = NULL;

        setenv("TZ", "UTC-05:30", 1);
        tzset();
        line = kiln_log_format_line(KILN_LOG_TEXT, KILN_LOG_INFO, T0, NULL, 0, "m");
        use_utc();
        ASSERT_STREQ(line, "time=\"2026-11-28T09:39:44+05:30\" level=info msg=m\n");
        return 0;
}

TEST(json_sorted_and_escaped)
{
        _cleanup_free_ char *line = NULL;

        use_utc();
        line = kiln_log_format_line(KILN_LOG_JSON, KILN_LOG_ERROR, T0,
                                    KILN_FIELDS({ "zeta", "<&>" }, { "alpha", "a\"b\n" }),
                                    "failed");
        ASSERT_STREQ(line,
                     "{\"alpha\":\"a\\\"b\\n\",\"level\":\"error\",\"msg\":\"failed\","
                     "\"time\":\"2026-11-28T04:09:44Z\",\"zeta\":\"\\u003c\\u0026\\u003e\"}\n");
        return 0;
}

TEST(level_names)
{
        ASSERT_EQ_INT(kiln_log_level_from_string("debug"), KILN_LOG_DEBUG);
        ASSERT_EQ_INT(kiln_log_level_from_string("warn"), KILN_LOG_WARN);
        ASSERT_EQ_INT(kiln_log_level_from_string("warning"), KILN_LOG_WARN);
        ASSERT_EQ_INT(kiln_log_level_from_string("TRACE"), KILN_LOG_TRACE);
        ASSERT_EQ_INT(kiln_log_level_from_string("verbose"), -EINVAL);
        ASSERT_EQ_INT(kiln_log_format_from_string(""), KILN_LOG_TEXT);
        ASSERT_EQ_INT(kiln_log_format_from_string("json"), KILN_LOG_JSON);
        ASSERT_EQ_INT(kiln_log_format_from_string("xml"), -EINVAL);
        return 0;
}

TEST(clashing_fields_are_renamed_like_logrus)
{
        _cleanup_free_ char *text = NULL, *json = NULL;

        use_utc();
        text = kiln_log_format_line(KILN_LOG_TEXT, KILN_LOG_INFO, T0,
                                    KILN_FIELDS({ "msg", "x" }, { "level", "y" }), "m");
        ASSERT_STREQ(text, "time=\"2026-11-28T04:09:44Z\" level=info msg=m fields.level=y "
                           "fields.msg=x\n");
        json = kiln_log_format_line(KILN_LOG_JSON, KILN_LOG_INFO, T0, KILN_FIELDS({ "time", "t" }),
                                    "m");
        ASSERT_STREQ(json, "{\"fields.time\":\"t\",\"level\":\"info\",\"msg\":\"m\","
                           "\"time\":\"2026-11-28T04:09:44Z\"}\n");
        return 0;
}

TEST(go_escapes_for_spaces_and_json_controls)
{
        _cleanup_free_ char *text = NULL, *json = NULL;

        use_utc();
        /* U+00A0 and U+3000 are spaces Go's %q escapes; \b and \f are
         * short escapes in encoding/json. */
        text = kiln_log_format_line(KILN_LOG_TEXT, KILN_LOG_INFO, T0,
                                    KILN_FIELDS({ "a", "x\xc2\xa0y\xe3\x80\x80" }), "m");
        ASSERT_STREQ(text, "time=\"2026-11-28T04:09:44Z\" level=info msg=m "
                           "a=\"x\\u00a0y\\u3000\"\n");
        json = kiln_log_format_line(KILN_LOG_JSON, KILN_LOG_INFO, T0,
                                    KILN_FIELDS({ "a", "\b\f\x01" }), "m");
        ASSERT_STREQ(json, "{\"a\":\"\\b\\f\\u0001\",\"level\":\"info\",\"msg\":\"m\","
                           "\"time\":\"2026-11-28T04:09:44Z\"}\n");
        return 0;
}
