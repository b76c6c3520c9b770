/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/http.h"
#include "kiln-test.h"

struct seen {
        int n;
        char names[8][16];
        int fail_at; /* 1-based event that fails, 0 none */
};

static int on_event(json_t *event, void *userdata, struct kiln_error **err)
{
        struct seen *s = userdata;
        const char *name = json_string_value(json_object_get(event, "name"));

        if (s->fail_at && s->n + 1 == s->fail_at)
                return kiln_error_set(err, -ECANCELED, "stop at %d", s->fail_at);
        if (s->n < 8)
                (void) snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name ? name : "?");
        s->n++;
        return 0;
}

TEST(ndjson_lines_across_chunks)
{
        _cleanup_(kiln_cli_ndjson_release) struct kiln_cli_ndjson s;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct seen seen = { 0 };
        const char *data = "{\"name\":\"a\"}\n\n{\"name\":\"b\"}\r\n{\"na";

        kiln_cli_ndjson_init(&s, 1024, on_event, &seen);
        /* one byte at a time: every split point */
        for (const char *p = data; *p; p++)
                ASSERT_OK(kiln_cli_ndjson_feed(&s, p, 1, &err));
        ASSERT_EQ_INT(seen.n, 2);
        ASSERT_OK(kiln_cli_ndjson_feed(&s, "me\":\"c\"}", 8, &err));
        ASSERT_EQ_INT(seen.n, 2);
        ASSERT_OK(kiln_cli_ndjson_finish(&s, &err));
        ASSERT_EQ_INT(seen.n, 3);
        ASSERT_STREQ(seen.names[0], "a");
        ASSERT_STREQ(seen.names[1], "b");
        ASSERT_STREQ(seen.names[2], "c");
        ASSERT_EQ_INT(s.n_events, 3);
        return 0;
}

TEST(ndjson_rejects_non_objects)
{
        _cleanup_(kiln_cli_ndjson_release) struct kiln_cli_ndjson s;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct seen seen = { 0 };

        kiln_cli_ndjson_init(&s, 1024, on_event, &seen);
        ASSERT_OK(kiln_cli_ndjson_feed(&s, "{}\n", 3, &err));
        ASSERT_EQ_INT(kiln_cli_ndjson_feed(&s, "[1]\n", 4, &err), -EBADMSG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "event 2") != NULL);
        return 0;
}

TEST(ndjson_line_limit)
{
        _cleanup_(kiln_cli_ndjson_release) struct kiln_cli_ndjson s;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct seen seen = { 0 };
        char big[64];

        memset(big, ' ', sizeof(big));
        kiln_cli_ndjson_init(&s, 32, on_event, &seen);
        ASSERT_EQ_INT(kiln_cli_ndjson_feed(&s, big, sizeof(big), &err), -E2BIG);
        ASSERT_EQ_INT(seen.n, 0);
        return 0;
}

TEST(ndjson_consumer_error_stops)
{
        _cleanup_(kiln_cli_ndjson_release) struct kiln_cli_ndjson s;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct seen seen = { .fail_at = 2 };
        const char *data = "{\"name\":\"a\"}\n{\"name\":\"b\"}\n{\"name\":\"c\"}\n";

        kiln_cli_ndjson_init(&s, 1024, on_event, &seen);
        ASSERT_EQ_INT(kiln_cli_ndjson_feed(&s, data, strlen(data), &err), -ECANCELED);
        ASSERT_EQ_INT(seen.n, 1);
        ASSERT_STREQ(kiln_error_message(err), "stop at 2");
        return 0;
}
