/* SPDX-License-Identifier: Apache-2.0 */
#include "api/disk.h"
#include "kiln-test.h"

static json_t *parse(const char *s)
{
        return json_loads(s, JSON_REJECT_DUPLICATES, NULL);
}

static char *dump(const json_t *j)
{
        return kiln_api_json_dump(j, NULL);
}

/* 2026-11-28T12:17:44.058221226Z */
#define T_CREATED INT64_C(1795868264058221226)

static void record_fill(struct kiln_api_disk_record *r)
{
        static char *parents[] = { (char *) "41", NULL };

        *r = (struct kiln_api_disk_record){
                .id = (char *) "42",
                .parents = parents,
                .n_parents = 1,
                .created_ns = T_CREATED,
                .last_used_ns = T_CREATED + 5000000000,
                .usage_count = 3,
                .in_use = true,
                .size = 3092000,
                .description = (char *) "[2/3] RUN make",
                .type = (char *) KILN_API_DISK_TYPE_REGULAR,
        };
}

TEST(record_round_trip)
{
        struct kiln_api_disk_record r, back = { 0 };
        _cleanup_free_ char *s = NULL;
        json_t *j = NULL;

        record_fill(&r);
        ASSERT_EQ_INT(kiln_api_disk_record_to_json(&r, &j), 0);
        s = dump(j);
        ASSERT_STREQ(s, "{\"createdAt\":\"2026-11-28T12:17:44.058221226Z\","
                        "\"description\":\"[2/3] RUN make\",\"id\":\"42\",\"inUse\":true,"
                        "\"lastUsedAt\":\"2026-11-28T12:17:49.058221226Z\",\"mutable\":false,"
                        "\"parents\":[\"41\"],\"shared\":false,\"size\":3092000,"
                        "\"type\":\"regular\",\"usageCount\":3}\n");
        ASSERT_EQ_INT(kiln_api_disk_record_from_json(j, &back, NULL), 0);
        json_decref(j);
        ASSERT_STREQ(back.id, "42");
        ASSERT_EQ_INT(back.n_parents, 1);
        ASSERT_STREQ(back.parents[0], "41");
        ASSERT_EQ_INT(back.created_ns, T_CREATED);
        ASSERT_EQ_INT(back.last_used_ns, T_CREATED + 5000000000);
        ASSERT_EQ_INT(back.usage_count, 3);
        ASSERT_TRUE(back.in_use && !back.mutable_ && !back.shared);
        ASSERT_EQ_INT(back.size, 3092000);
        ASSERT_STREQ(back.description, "[2/3] RUN make");
        ASSERT_STREQ(back.type, "regular");
        kiln_api_disk_record_release(&back);
        return 0;
}

TEST(record_never_used_has_no_last_used)
{
        struct kiln_api_disk_record r, back = { 0 };
        json_t *j = NULL;

        record_fill(&r);
        r.last_used_ns = 0;
        r.n_parents = 0;
        ASSERT_EQ_INT(kiln_api_disk_record_to_json(&r, &j), 0);
        ASSERT_TRUE(json_object_get(j, "lastUsedAt") == NULL);
        ASSERT_TRUE(json_object_get(j, "parents") == NULL);
        ASSERT_EQ_INT(kiln_api_disk_record_from_json(j, &back, NULL), 0);
        ASSERT_EQ_INT(back.last_used_ns, 0);
        ASSERT_EQ_INT(back.n_parents, 0);
        json_decref(j);
        kiln_api_disk_record_release(&back);
        return 0;
}

TEST(record_refuses_malformed)
{
        static const char *const bad[] = {
                "[]",
                "{\"size\":1}",
                "{\"id\":1}",
                "{\"id\":\"1\",\"createdAt\":\"yesterday\"}",
                "{\"id\":\"1\",\"createdAt\":\"2026-11-28T12:17:44+01:00\"}",
                "{\"id\":\"1\",\"createdAt\":\"2026-11-28T12:17:44.0123456789Z\"}",
                "{\"id\":\"1\",\"inUse\":\"yes\"}",
                "{\"id\":\"1\",\"parents\":\"41\"}",
                "{\"id\":\"1\",\"parents\":[41]}",
                "{\"id\":\"1\",\"usageCount\":-1}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                struct kiln_api_disk_record r = { 0 };
                json_t *j = parse(bad[i]);

                ASSERT_TRUE(j != NULL);
                ASSERT_EQ_INT(kiln_api_disk_record_from_json(j, &r, &e), -EBADMSG);
                ASSERT_TRUE(e != NULL);
                ASSERT_TRUE(r.id == NULL);
                json_decref(j);
        }
        return 0;
}

TEST(du_result_round_trip)
{
        struct kiln_api_disk_record v[2], *back = NULL;
        size_t n = 0;
        json_t *j = NULL;

        record_fill(&v[0]);
        record_fill(&v[1]);
        v[1].id = (char *) "sha256:aa";
        v[1].mutable_ = true;
        ASSERT_EQ_INT(kiln_api_du_result_to_json(v, 2, &j), 0);
        ASSERT_EQ_INT(kiln_api_du_result_from_json(j, &back, &n, NULL), 0);
        json_decref(j);
        ASSERT_EQ_INT(n, 2);
        ASSERT_STREQ(back[1].id, "sha256:aa");
        ASSERT_TRUE(back[1].mutable_);
        for (size_t i = 0; i < n; i++)
                kiln_api_disk_record_release(&back[i]);
        free(back);

        j = parse("{\"records\":{}}");
        ASSERT_EQ_INT(kiln_api_du_result_from_json(j, &back, &n, NULL), -EBADMSG);
        json_decref(j);
        j = parse("{\"records\":[{\"id\":\"1\"},{\"size\":2}]}");
        ASSERT_EQ_INT(kiln_api_du_result_from_json(j, &back, &n, NULL), -EBADMSG);
        json_decref(j);
        return 0;
}

TEST(du_path)
{
        _cleanup_free_ char *a = kiln_api_du_path(NULL, 0);
        _cleanup_free_ char *b = kiln_api_du_path("", 0);
        _cleanup_free_ char *c = kiln_api_du_path("type==regular,description~=RUN a&b", 0);
        _cleanup_free_ char *d = kiln_api_du_path("id~=4", INT64_C(86400) * 1000000000);
        _cleanup_free_ char *e = kiln_api_du_path(NULL, 1500000000);

        ASSERT_STREQ(a, "/v1/du");
        ASSERT_STREQ(b, "/v1/du");
        ASSERT_STREQ(c, "/v1/du?filter=type%3D%3Dregular%2Cdescription~%3DRUN%20a%26b");
        ASSERT_STREQ(d, "/v1/du?filter=id~%3D4&until=24h0m0s");
        ASSERT_STREQ(e, "/v1/du?until=1.5s");
        return 0;
}

TEST(prune_request_round_trip)
{
        struct kiln_api_prune_request r = {
                .all = true,
                .filter = (char *) "type==regular",
                .keep_duration_ns = 3600000000000,
                .reserved_space = 1000,
                .max_used_space = 2000,
                .min_free_space = 3000,
        };
        struct kiln_api_prune_request back = { 0 }, empty = { 0 };
        _cleanup_free_ char *s = NULL, *s2 = NULL;
        json_t *j = NULL;

        ASSERT_EQ_INT(kiln_api_prune_request_to_json(&r, &j), 0);
        s = dump(j);
        ASSERT_STREQ(s, "{\"all\":true,\"filter\":\"type==regular\",\"keepDuration\":3600000000000,"
                        "\"maxUsedSpace\":2000,\"minFreeSpace\":3000,\"reservedSpace\":1000}\n");
        ASSERT_EQ_INT(kiln_api_prune_request_from_json(j, &back, NULL), 0);
        json_decref(j);
        ASSERT_TRUE(back.all);
        ASSERT_STREQ(back.filter, "type==regular");
        ASSERT_EQ_INT(back.keep_duration_ns, 3600000000000);
        ASSERT_EQ_INT(back.reserved_space, 1000);
        ASSERT_EQ_INT(back.max_used_space, 2000);
        ASSERT_EQ_INT(back.min_free_space, 3000);
        kiln_api_prune_request_release(&back);

        /* the defaults are left out, and an empty object is a valid request */
        ASSERT_EQ_INT(kiln_api_prune_request_to_json(&empty, &j), 0);
        s2 = dump(j);
        ASSERT_STREQ(s2, "{}\n");
        ASSERT_EQ_INT(kiln_api_prune_request_from_json(j, &back, NULL), 0);
        json_decref(j);
        ASSERT_TRUE(!back.all && back.filter == NULL && back.max_used_space == 0);
        kiln_api_prune_request_release(&back);
        return 0;
}

TEST(prune_request_is_strict)
{
        static const char *const bad[] = {
                "[]",
                "{\"force\":true}",
                "{\"all\":1}",
                "{\"keepDuration\":-1}",
                "{\"maxUsedSpace\":\"1GB\"}",
                "{\"filter\":\"type=regular\"}",
                "{\"filter\":\"description~=(\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                struct kiln_api_prune_request r = { 0 };
                json_t *j = parse(bad[i]);

                ASSERT_TRUE(j != NULL);
                ASSERT_EQ_INT(kiln_api_prune_request_from_json(j, &r, &e), -EINVAL);
                ASSERT_TRUE(e != NULL);
                ASSERT_TRUE(r.filter == NULL);
                json_decref(j);
        }
        return 0;
}

TEST(prune_events)
{
        struct kiln_api_disk_record r;
        _cleanup_free_ char *a = NULL;
        json_t *j = NULL;

        record_fill(&r);
        ASSERT_EQ_INT(kiln_api_prune_record_event_to_json(&r, NULL, &j), 0);
        ASSERT_STREQ(json_string_value(json_object_get(j, "type")), "record");
        ASSERT_STREQ(json_string_value(json_object_get(json_object_get(j, "record"), "id")), "42");
        json_decref(j);
        ASSERT_EQ_INT(kiln_api_prune_result_to_json(123, 2, "2026-11-28T12:17:44.000000000Z", &j),
                      0);
        a = dump(j);
        json_decref(j);
        ASSERT_STREQ(a,
                     "{\"reclaimed\":123,\"records\":2,\"time\":\"2026-11-28T12:17:44.000000000Z\","
                     "\"type\":\"result\"}\n");
        return 0;
}

static bool matches(const char *filter, const struct kiln_api_disk_record *r)
{
        _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;

        if (kiln_api_disk_filter_parse(filter, &f, NULL) < 0)
                return false;
        return kiln_api_disk_filter_match(f, r);
}

TEST(filter_matches_as_buildkit)
{
        struct kiln_api_disk_record r;

        record_fill(&r);
        ASSERT_TRUE(matches(NULL, &r));
        ASSERT_TRUE(matches("", &r));
        ASSERT_TRUE(matches("type==regular", &r));
        ASSERT_TRUE(!matches("type==exec.cachemount", &r));
        ASSERT_TRUE(matches("type!=exec.cachemount", &r));
        ASSERT_TRUE(matches("id~=^4", &r));
        ASSERT_TRUE(!matches("id~=^2", &r));
        ASSERT_TRUE(matches("description~=RUN", &r));
        ASSERT_TRUE(matches("description~=\"RUN m\"", &r));
        ASSERT_TRUE(matches("description==\"[2/3] RUN make\"", &r));
        ASSERT_TRUE(matches(" type == regular , inuse ", &r));
        ASSERT_TRUE(matches("parents==41", &r));
        /* booleans are present or not; an equality against them never holds */
        ASSERT_TRUE(matches("inuse", &r));
        ASSERT_TRUE(!matches("inuse==true", &r));
        ASSERT_TRUE(matches("immutable", &r));
        ASSERT_TRUE(!matches("mutable", &r));
        ASSERT_TRUE(matches("private", &r));
        ASSERT_TRUE(!matches("shared", &r));
        /* every selector must match */
        ASSERT_TRUE(!matches("type==regular,mutable", &r));
        /* an unknown field is absent */
        ASSERT_TRUE(!matches("color==red", &r));
        ASSERT_TRUE(matches("color!=red", &r));
        r.n_parents = 0;
        ASSERT_TRUE(!matches("parents", &r));
        r.description = NULL;
        ASSERT_TRUE(!matches("description~=.*", &r));
        return 0;
}

TEST(filter_refuses_bad_syntax)
{
        static const char *const bad[] = {
                "type=regular",
                "==regular",
                "type==regular,",
                ",type",
                "description~=\"open",
                "id~=(",
                "type>regular",
                "description==\"a\" b",
                /* a client's pattern must not cost the daemon seconds and
                 * gigabytes to compile */
                "description~=\"((a{0,45}){0,45}){0,45}\"",
                "description~=(a)\\1",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                ASSERT_EQ_INT(kiln_api_disk_filter_parse(bad[i], &f, &e), -EINVAL);
                ASSERT_TRUE(e != NULL);
                ASSERT_TRUE(strstr(kiln_error_message(e), "filter") != NULL);
        }
        return 0;
}

static int flags(const char *const *v, size_t n, char **filter, int64_t *until, char **msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        int r = kiln_api_disk_filter_from_flags(v, n, filter, until, &e);

        *msg = e ? kiln_xstrdup(kiln_error_message(e)) : NULL;
        return r;
}

TEST(filter_flags_as_buildx)
{
        _cleanup_free_ char *f = NULL, *msg = NULL;
        int64_t until = -1;

        {
                const char *v[] = { "type=regular", "ID=abc", "description~=RUN a", "until=24h" };
                ASSERT_EQ_INT(flags(v, 4, &f, &until, &msg), 0);
                ASSERT_STREQ(f, "type==regular,id~=abc,description~=RUN a");
                ASSERT_EQ_INT(until, INT64_C(86400) * 1000000000);
        }
        free(f);
        f = NULL;
        {
                const char *v[] = { "unused-for=1h", "type!=regular", "type!=regular" };
                ASSERT_EQ_INT(flags(v, 3, &f, &until, &msg), 0);
                ASSERT_STREQ(f, "type!=regular");
                ASSERT_EQ_INT(until, INT64_C(3600) * 1000000000);
        }
        free(f);
        f = NULL;
        {
                ASSERT_EQ_INT(flags(NULL, 0, &f, &until, &msg), 0);
                ASSERT_TRUE(f == NULL);
                ASSERT_EQ_INT(until, 0);
        }
        {
                const char *v[] = { "until=1h", "unused-for=2h" };
                ASSERT_EQ_INT(flags(v, 2, &f, &until, &msg), -EINVAL);
                ASSERT_STREQ(msg, "conflicting filters \"until\" and \"unused-for\"");
        }
        free(msg);
        {
                const char *v[] = { "until=soon" };
                ASSERT_EQ_INT(flags(v, 1, &f, &until, &msg), -EINVAL);
                ASSERT_STREQ(msg, "\"until\" filter expects a duration (e.g., '24h')");
        }
        free(msg);
        {
                const char *v[] = { "type=regular", "type=exec.cachemount" };
                ASSERT_EQ_INT(flags(v, 2, &f, &until, &msg), -EINVAL);
                ASSERT_STREQ(msg, "\"type\" filter expects only one value");
        }
        free(msg);
        {
                const char *v[] = { "dangling" };
                ASSERT_EQ_INT(flags(v, 1, &f, &until, &msg), -EINVAL);
                ASSERT_STREQ(msg, "bad format of filter (expected name=value)");
        }
        ASSERT_TRUE(f == NULL);
        return 0;
}

TEST(human_size_as_go_units)
{
        static const struct {
                int64_t n;
                const char *s;
        } cases[] = {
                { 0, "0B" },
                { 999, "999B" },
                { 1000, "1kB" },
                { 4096, "4.096kB" },
                { 8192, "8.192kB" },
                { 1234567, "1.235MB" },
                { 3092000, "3.092MB" },
                { 999999, "1000kB" },
                { 12345678901, "12.35GB" },
        };
        char out[KILN_API_HUMAN_SIZE];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                kiln_api_human_size(cases[i].n, out);
                ASSERT_STREQ(out, cases[i].s);
        }
        return 0;
}

TEST(human_duration_as_go_units)
{
        static const struct {
                int64_t s;
                const char *text;
        } cases[] = {
                { 0, "Less than a second" }, { 1, "1 second" },          { 59, "59 seconds" },
                { 60, "About a minute" },    { 119, "About a minute" },  { 120, "2 minutes" },
                { 3599, "59 minutes" },      { 3600, "About an hour" },  { 5399, "About an hour" },
                { 5400, "2 hours" },         { 47 * 3600, "47 hours" },  { 48 * 3600, "2 days" },
                { 14 * 86400, "2 weeks" },   { 60 * 86400, "2 months" }, { 730 * 86400, "2 years" },
        };
        char out[KILN_API_HUMAN_SIZE];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                kiln_api_human_duration(cases[i].s * INT64_C(1000000000), out);
                ASSERT_STREQ(out, cases[i].text);
        }
        kiln_api_human_duration(999999999, out);
        ASSERT_STREQ(out, "Less than a second");
        return 0;
}

TEST(go_time_string)
{
        char out[KILN_API_HUMAN_SIZE];

        kiln_api_go_time_string(T_CREATED, out);
        ASSERT_STREQ(out, "2026-11-28 12:17:44.058221226 +0000 UTC");
        kiln_api_go_time_string(INT64_C(1795868264000000000), out);
        ASSERT_STREQ(out, "2026-11-28 12:17:44 +0000 UTC");
        kiln_api_go_time_string(INT64_C(1795868264120000000), out);
        ASSERT_STREQ(out, "2026-11-28 12:17:44.12 +0000 UTC");
        return 0;
}

TEST(tabwriter_as_go)
{
        /* docker's formatter: spaces, padding 3, at least 10 wide; the last
         * cell is not padded */
        _cleanup_free_ char *du = kiln_api_tabwriter(
                "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n1\ttrue\t3.092MB\t2 minutes ago\n"
                "sha256:ab\tfalse\t4.096kB\t\n",
                10, 1, 3, ' ');
        ASSERT_STREQ(du, "ID          RECLAIMABLE   SIZE      LAST ACCESSED\n"
                         "1           true          3.092MB   2 minutes ago\n"
                         "sha256:ab   false         4.096kB   \n");

        /* buildx's summary: tab padding to tab stops of 8 */
        _cleanup_free_ char *sum =
                kiln_api_tabwriter("Reclaimable:\t6.111MB\nTotal:\t6.119MB\n", 1, 8, 1, '\t');
        ASSERT_STREQ(sum, "Reclaimable:\t6.111MB\nTotal:\t\t6.119MB\n");

        /* a line without a tab ends a column block */
        _cleanup_free_ char *blocks = kiln_api_tabwriter("a\tb\n\nlonger\tc\n", 1, 8, 1, '\t');
        ASSERT_STREQ(blocks, "a\tb\n\nlonger\tc\n");

        /* buildx's prune row: cells already padded by printf */
        _cleanup_free_ char *row = kiln_api_tabwriter(
                "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n"
                "7                                       \ttrue \t1kB       \t\n",
                1, 8, 1, '\t');
        ASSERT_STREQ(row, "ID\t\t\t\t\t\tRECLAIMABLE\tSIZE\t\tLAST ACCESSED\n"
                          "7                                       \ttrue \t\t1kB       \t\n");
        return 0;
}
