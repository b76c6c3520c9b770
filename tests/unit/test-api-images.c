/* SPDX-License-Identifier: Apache-2.0 */
#include "api/api.h"
#include "kiln-test.h"

#define DIGEST_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DIGEST_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static json_t *parse(const char *s)
{
        return json_loads(s, JSON_REJECT_DUPLICATES, NULL);
}

/* The line the daemon sends for j. */
static char *line(const json_t *j)
{
        return kiln_api_json_dump(j, NULL);
}

TEST(event_type_names)
{
        for (int t = 0; t < _KILN_API_EVENT_TYPE_MAX; t++) {
                const char *s = kiln_api_event_type_to_string((enum kiln_api_event_type) t);

                ASSERT_TRUE(s != NULL);
                ASSERT_EQ_INT(kiln_api_event_type_from_string(s), t);
        }
        ASSERT_STREQ(kiln_api_event_type_to_string(KILN_API_EVENT_BLOB_PROGRESS), "blob-progress");
        ASSERT_STREQ(kiln_api_event_type_to_string(KILN_API_EVENT_BLOB_ERROR), "blob-error");
        ASSERT_EQ_INT(kiln_api_event_type_from_string("nope"), -EINVAL);
        ASSERT_EQ_INT(kiln_api_event_type_from_string(NULL), -EINVAL);
        ASSERT_TRUE(kiln_api_event_type_to_string(_KILN_API_EVENT_TYPE_MAX) == NULL);
        return 0;
}

TEST(time_format)
{
        char t[KILN_API_TIME_SIZE];

        kiln_api_time_now(t);
        ASSERT_EQ_INT(strlen(t), 30);
        ASSERT_TRUE(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[29] == 'Z');
        return 0;
}

TEST(progress_event_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_event ev = {
                .type = KILN_API_EVENT_BLOB_PROGRESS,
                .time = "2026-11-28T06:40:01.123456789Z",
                .ref = "docker.io/library/alpine:latest",
                .digest = DIGEST_A,
                .size = 1000,
                .current = 250,
        };
        struct kiln_api_event got = { 0 };
        _cleanup_free_ char *s = NULL;
        json_t *j = NULL;

        ASSERT_OK(kiln_api_event_to_json(&ev, &j));
        s = line(j);
        ASSERT_STREQ(s, "{\"current\":250,\"digest\":\"" DIGEST_A "\",\"ref\":"
                        "\"docker.io/library/alpine:latest\",\"size\":1000,\"time\":"
                        "\"2026-11-28T06:40:01.123456789Z\",\"type\":\"blob-progress\"}\n");
        ASSERT_OK(kiln_api_event_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_EQ_INT(got.type, KILN_API_EVENT_BLOB_PROGRESS);
        ASSERT_STREQ(got.digest, DIGEST_A);
        ASSERT_STREQ(got.ref, ev.ref);
        ASSERT_STREQ(got.time, ev.time);
        ASSERT_EQ_INT(got.size, 1000);
        ASSERT_EQ_INT(got.current, 250);
        ASSERT_TRUE(got.media_type == NULL && got.message == NULL && got.error == NULL);
        kiln_api_event_release(&got);
        return 0;
}

TEST(absent_fields_are_left_out)
{
        struct kiln_api_event ev = {
                .type = KILN_API_EVENT_RESOLVING,
                .ref = "docker.io/library/alpine:latest",
                .size = -1,
        };
        _cleanup_free_ char *s = NULL;
        json_t *j = NULL;

        ASSERT_OK(kiln_api_event_to_json(&ev, &j));
        s = line(j);
        json_decref(j);
        ASSERT_STREQ(s, "{\"ref\":\"docker.io/library/alpine:latest\",\"type\":\"resolving\"}\n");

        /* A result has its own encoders. */
        ev.type = KILN_API_EVENT_RESULT;
        ASSERT_EQ_INT(kiln_api_event_to_json(&ev, &j), -EINVAL);
        ev.type = _KILN_API_EVENT_TYPE_MAX;
        ASSERT_EQ_INT(kiln_api_event_to_json(&ev, &j), -EINVAL);
        return 0;
}

TEST(error_event)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_event ev = {
                .type = KILN_API_EVENT_ERROR,
                .error = "pull 'x': not found",
                .ref = "ignored",
                .size = 3,
        };
        struct kiln_api_event got = { 0 };
        _cleanup_free_ char *s = NULL;
        json_t *j = NULL;

        ASSERT_OK(kiln_api_event_to_json(&ev, &j));
        s = line(j);
        ASSERT_STREQ(s, "{\"error\":\"pull 'x': not found\",\"type\":\"error\"}\n");
        ASSERT_OK(kiln_api_event_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_EQ_INT(got.type, KILN_API_EVENT_ERROR);
        ASSERT_STREQ(got.error, "pull 'x': not found");
        kiln_api_event_release(&got);
        return 0;
}

TEST(event_decoding_is_lenient_but_typed)
{
        struct {
                const char *json;
                int r;
        } cases[] = {
                { "{\"type\":\"blob-done\",\"digest\":\"" DIGEST_A "\",\"later\":[1,2]}", 0 },
                { "{\"type\":\"result\",\"anything\":{}}", 0 },
                { "{\"type\":\"blob-teleported\"}", -EBADMSG },
                { "{\"digest\":\"" DIGEST_A "\"}", -EBADMSG },
                { "{\"type\":7}", -EBADMSG },
                { "{\"type\":\"blob-done\",\"size\":\"12\"}", -EBADMSG },
                { "{\"type\":\"blob-progress\",\"current\":-1}", -EBADMSG },
                { "{\"type\":\"error\"}", -EBADMSG },
                { "[]", -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_api_event got = { 0 };
                json_t *j = parse(cases[i].json);
                int r;

                ASSERT_TRUE(j != NULL);
                r = kiln_api_event_from_json(j, &got, &err);
                json_decref(j);
                if (r != cases[i].r)
                        KILN_TEST_FAIL("%s: got %d, want %d", cases[i].json, r, cases[i].r);
                if (r == 0)
                        kiln_api_event_release(&got);
                else
                        ASSERT_TRUE(err != NULL);
        }
        return 0;
}

TEST(unknown_type_is_named)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_event got = { 0 };
        json_t *j = parse("{\"type\":\"blob-teleported\"}");

        ASSERT_EQ_INT(kiln_api_event_from_json(j, &got, &err), -EBADMSG);
        json_decref(j);
        ASSERT_STREQ(kiln_error_message(err), "event: unknown type 'blob-teleported'");
        return 0;
}

TEST(pull_request_strict)
{
        struct {
                const char *json;
                const char *error; /* NULL: accepted */
        } cases[] = {
                { "{\"ref\":\"alpine\"}", NULL },
                { "{\"ref\":\"alpine\",\"platform\":\"linux/arm64\"}", NULL },
                { "{}", "pull request: missing \"ref\"" },
                { "[]", "pull request: expected a JSON object" },
                { "{\"ref\":\"\"}", "pull request: \"ref\" must not be empty" },
                { "{\"ref\":1}", "pull request: \"ref\" must be a string" },
                { "{\"ref\":\"a\",\"platform\":null}",
                  "pull request: \"platform\" must be a string" },
                { "{\"ref\":\"a\\u0000b\"}", "pull request: \"ref\" holds a NUL character" },
                { "{\"ref\":\"alpine\",\"Ref\":\"x\"}", "pull request: unknown field 'Ref'" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_api_pull_request req = { 0 };
                json_t *j = json_loads(cases[i].json, JSON_ALLOW_NUL, NULL);
                int r;

                ASSERT_TRUE(j != NULL);
                r = kiln_api_pull_request_from_json(j, &req, &err);
                json_decref(j);
                if (!cases[i].error) {
                        ASSERT_OK(r);
                        ASSERT_STREQ(req.ref, "alpine");
                        kiln_api_pull_request_release(&req);
                        continue;
                }
                ASSERT_EQ_INT(r, -EINVAL);
                ASSERT_STREQ(kiln_error_message(err), cases[i].error);
        }
        return 0;
}

TEST(pull_request_limits_and_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *longref = kiln_xmalloc(KILN_API_LIMIT_REF + 2);
        struct kiln_api_pull_request req = { .ref = "alpine", .platform = "linux/arm/v7" };
        struct kiln_api_pull_request got = { 0 };
        json_t *j = NULL;

        ASSERT_OK(kiln_api_pull_request_to_json(&req, &j));
        ASSERT_OK(kiln_api_pull_request_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_STREQ(got.ref, "alpine");
        ASSERT_STREQ(got.platform, "linux/arm/v7");
        kiln_api_pull_request_release(&got);

        memset(longref, 'a', KILN_API_LIMIT_REF + 1);
        longref[KILN_API_LIMIT_REF + 1] = '\0';
        j = json_pack("{ss}", "ref", longref);
        ASSERT_EQ_INT(kiln_api_pull_request_from_json(j, &got, &err), -EINVAL);
        json_decref(j);
        ASSERT_TRUE(strstr(kiln_error_message(err), "longer than 4096 bytes") != NULL);
        return 0;
}

TEST(imagetools_create_request)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_imagetools_create_request got = { 0 };
        char *sources[] = { "src:1" };
        char *tags[] = { "dst:1", "dst:2" };
        struct kiln_api_imagetools_create_request req = {
                .sources = sources, .n_sources = 1, .tags = tags, .n_tags = 2
        };
        json_t *j = NULL, *many;

        ASSERT_OK(kiln_api_imagetools_create_request_to_json(&req, &j));
        ASSERT_OK(kiln_api_imagetools_create_request_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_EQ_INT(got.n_sources, 1);
        ASSERT_EQ_INT(got.n_tags, 2);
        ASSERT_STREQ(got.tags[1], "dst:2");
        kiln_api_imagetools_create_request_release(&got);

        j = parse("{\"sources\":[\"a\"],\"tags\":[]}");
        ASSERT_EQ_INT(kiln_api_imagetools_create_request_from_json(j, &got, &err), -EINVAL);
        json_decref(j);
        ASSERT_STREQ(kiln_error_message(err),
                     "imagetools create request: \"tags\" must not be empty");

        j = parse("{\"sources\":[\"a\"],\"tags\":[\"b\", 3]}");
        ASSERT_EQ_INT(kiln_api_imagetools_create_request_from_json(j, &got, &err), -EINVAL);
        json_decref(j);
        ASSERT_STREQ(kiln_error_message(err),
                     "imagetools create request: \"tags\"[1] must be a string");

        j = parse("{\"sources\":[\"a\"],\"tags\":[\"b\"],\"push\":true}");
        ASSERT_EQ_INT(kiln_api_imagetools_create_request_from_json(j, &got, &err), -EINVAL);
        json_decref(j);
        ASSERT_STREQ(kiln_error_message(err), "imagetools create request: unknown field 'push'");

        many = json_array();
        for (unsigned i = 0; i <= KILN_API_LIMIT_IMAGETOOLS_REFS; i++)
                json_array_append_new(many, json_string("x"));
        j = json_pack("{s[s]so}", "sources", "a", "tags", many);
        ASSERT_EQ_INT(kiln_api_imagetools_create_request_from_json(j, &got, &err), -EINVAL);
        json_decref(j);
        ASSERT_TRUE(strstr(kiln_error_message(err), "more than 64 entries") != NULL);
        return 0;
}

TEST(pull_result_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_descriptor layers[2] = {
                { "application/vnd.oci.image.layer.v1.tar+gzip", DIGEST_A, 100 },
                { "application/vnd.oci.image.layer.v1.tar+gzip", DIGEST_B, 200 },
        };
        struct kiln_api_pull_result res = {
                .ref = "docker.io/library/alpine:latest",
                .root = { "application/vnd.oci.image.index.v1+json", DIGEST_B, 500 },
                .platform = "linux/amd64",
                .manifest = { "application/vnd.oci.image.manifest.v1+json", DIGEST_A, 400 },
                .config = { "application/vnd.oci.image.config.v1+json", DIGEST_B, 300 },
                .layers = layers,
                .n_layers = 2,
                .bytes_downloaded = 300,
                .blobs_downloaded = 2,
                .blobs_cached = 1,
        };
        struct kiln_api_pull_result got = { 0 };
        struct kiln_api_event ev = { 0 };
        json_t *j = NULL;

        ASSERT_OK(kiln_api_pull_result_to_json(&res, "2026-11-28T06:40:01.000000000Z", &j));
        ASSERT_OK(kiln_api_event_from_json(j, &ev, &err));
        ASSERT_EQ_INT(ev.type, KILN_API_EVENT_RESULT);
        kiln_api_event_release(&ev);
        ASSERT_OK(kiln_api_pull_result_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_STREQ(got.ref, res.ref);
        ASSERT_STREQ(got.root.digest, DIGEST_B);
        ASSERT_STREQ(got.root.media_type, res.root.media_type);
        ASSERT_EQ_INT(got.root.size, 500);
        ASSERT_STREQ(got.platform, "linux/amd64");
        ASSERT_STREQ(got.manifest.digest, DIGEST_A);
        ASSERT_STREQ(got.config.media_type, res.config.media_type);
        ASSERT_EQ_INT(got.n_layers, 2);
        ASSERT_STREQ(got.layers[1].digest, DIGEST_B);
        ASSERT_EQ_INT(got.layers[1].size, 200);
        ASSERT_EQ_INT(got.bytes_downloaded, 300);
        ASSERT_EQ_INT(got.blobs_downloaded, 2);
        ASSERT_EQ_INT(got.blobs_cached, 1);
        kiln_api_pull_result_release(&got);

        j = parse("{\"type\":\"result\",\"ref\":\"r\",\"digest\":\"" DIGEST_A "\",\"size\":1,"
                  "\"manifest\":{\"digest\":\"" DIGEST_A "\",\"size\":1},"
                  "\"config\":{\"digest\":\"" DIGEST_A "\",\"size\":1},\"layers\":{}}");
        ASSERT_EQ_INT(kiln_api_pull_result_from_json(j, &got, &err), -EBADMSG);
        json_decref(j);
        ASSERT_STREQ(kiln_error_message(err), "pull result: \"layers\" must be an array");
        return 0;
}

TEST(imagetools_create_result_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_pushed_tag tags[] = { { "127.0.0.1:5000/x:1", DIGEST_A } };
        struct kiln_api_imagetools_create_result res = {
                .digest = DIGEST_A,
                .media_type = "application/vnd.oci.image.index.v1+json",
                .tags = tags,
                .n_tags = 1,
                .blobs_uploaded = 3,
                .blobs_mounted = 1,
                .bytes_uploaded = 1234,
        };
        struct kiln_api_imagetools_create_result got = { 0 };
        json_t *j = NULL;

        ASSERT_OK(kiln_api_imagetools_create_result_to_json(&res, NULL, &j));
        ASSERT_TRUE(json_object_get(j, "time") == NULL);
        ASSERT_OK(kiln_api_imagetools_create_result_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_STREQ(got.digest, DIGEST_A);
        ASSERT_EQ_INT(got.n_tags, 1);
        ASSERT_STREQ(got.tags[0].ref, "127.0.0.1:5000/x:1");
        ASSERT_STREQ(got.tags[0].digest, DIGEST_A);
        ASSERT_EQ_INT(got.blobs_uploaded, 3);
        ASSERT_EQ_INT(got.blobs_existing, 0);
        ASSERT_EQ_INT(got.blobs_mounted, 1);
        ASSERT_EQ_INT(got.bytes_uploaded, 1234);
        kiln_api_imagetools_create_result_release(&got);
        return 0;
}

TEST(inspect_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_inspect in = {
                .name = "docker.io/library/alpine:latest",
                .media_type = "application/vnd.oci.image.index.v1+json",
                .digest = DIGEST_A,
                .size = 42,
                .manifest = parse("{\"schemaVersion\":2,\"manifests\":[]}"),
        };
        struct kiln_api_inspect got = { 0 };
        json_t *j = NULL;

        ASSERT_OK(kiln_api_inspect_to_json(&in, &j));
        ASSERT_OK(kiln_api_inspect_from_json(j, &got, &err));
        json_decref(j);
        ASSERT_STREQ(got.name, in.name);
        ASSERT_STREQ(got.digest, DIGEST_A);
        ASSERT_EQ_INT(got.size, 42);
        ASSERT_TRUE(json_equal(got.manifest, in.manifest));
        kiln_api_inspect_release(&got);
        json_decref(in.manifest);

        j = parse("{\"name\":\"n\",\"mediaType\":\"m\",\"digest\":\"d\",\"size\":1,"
                  "\"manifest\":\"raw\"}");
        ASSERT_EQ_INT(kiln_api_inspect_from_json(j, &got, &err), -EBADMSG);
        json_decref(j);
        return 0;
}
