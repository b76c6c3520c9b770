/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/stat.h>

#include "api/api.h"
#include "kiln-test.h"

static json_t *parse(const char *s)
{
        return json_loads(s, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
}

/* Decodes a build request from text; returns the decoder's result and
 * leaves the message in *msg (malloc'd) on failure. */
static int request_from(const char *text, struct kiln_api_build_request *req, char **msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *j = parse(text);
        int r;

        if (!j)
                return -999;
        r = kiln_api_build_request_from_json(j, req, &err);
        json_decref(j);
        if (r < 0 && msg)
                *msg = kiln_xstrdup(kiln_error_message(err));
        return r;
}

static int entries_from(const char *text, struct kiln_api_context_entry **e, size_t *n, char **msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *j = parse(text);
        int r;

        if (!j)
                return -999;
        r = kiln_api_context_entries_from_json(j, e, n, &err);
        json_decref(j);
        if (r < 0 && msg)
                *msg = kiln_xstrdup(kiln_error_message(err));
        return r;
}

TEST(base64)
{
        static const struct {
                const char *plain, *encoded;
        } cases[] = {
                { "", "" },
                { "f", "Zg==" },
                { "fo", "Zm8=" },
                { "foo", "Zm9v" },
                { "foob", "Zm9vYg==" },
                { "fooba", "Zm9vYmE=" },
                { "foobar", "Zm9vYmFy" },
        };
        static const char *const bad[] = { "Zg=",   "Zg=a", "Z===",  "Zh==",   "Zm9=",
                                           "Zm 9v", "=Zm9", "Zm9v=", "Zm9v\n", "Zg==Zg==" };
        uint8_t bin[256];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *e =
                        kiln_api_base64_encode(cases[i].plain, strlen(cases[i].plain));
                _cleanup_free_ uint8_t *d = NULL;
                size_t n = 99;

                ASSERT_STREQ(e, cases[i].encoded);
                ASSERT_OK(kiln_api_base64_decode(e, strlen(e), &d, &n));
                ASSERT_EQ_INT(n, strlen(cases[i].plain));
                ASSERT_TRUE(memcmp(d, cases[i].plain, n) == 0);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint8_t *d = NULL;
                size_t n = 0;

                ASSERT_EQ_INT(kiln_api_base64_decode(bad[i], strlen(bad[i]), &d, &n), -EINVAL);
                ASSERT_TRUE(d == NULL);
        }
        /* Every byte value survives. */
        for (size_t i = 0; i < sizeof(bin); i++)
                bin[i] = (uint8_t) (255 - i);
        {
                _cleanup_free_ char *e = kiln_api_base64_encode(bin, sizeof(bin));
                _cleanup_free_ uint8_t *d = NULL;
                size_t n = 0;

                ASSERT_OK(kiln_api_base64_decode(e, strlen(e), &d, &n));
                ASSERT_EQ_INT(n, sizeof(bin));
                ASSERT_TRUE(memcmp(d, bin, n) == 0);
        }
        return 0;
}

TEST(build_request_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_kv args[] = { { "B", "2" }, { "A", "1" }, { "EMPTY", "" } };
        struct kiln_api_kv labels[] = { { "org.x", "y" } };
        char *filter[] = { "build" };
        char *hosts[] = { "db:10.0.0.2" };
        char *allow[] = { "network.host" };
        uint8_t secret_data[] = { 's', 0, 0xff, '\n' };
        struct kiln_api_build_secret secrets[] = { { "tok", secret_data, sizeof(secret_data) },
                                                   { "empty", NULL, 0 } };
        struct kiln_api_build_ssh ssh[] = { { "default", "/run/agent.sock" } };
        struct kiln_api_kv image_attrs[] = { { "name", "127.0.0.1:5000/a:1,b" },
                                             { "push", "true" },
                                             { "compression", "zstd" } };
        struct kiln_api_build_output outputs[] = {
                { "image", image_attrs, ELEMENTSOF(image_attrs) },
                { "oci", NULL, 0 },
        };
        struct kiln_api_build_request req = {
                .dockerfile = "FROM alpine\nRUN echo hi\n",
                .dockerfile_name = "Dockerfile.dev",
                .dockerignore = "*.log\n!keep.log\n",
                .context_key = "host:/src/app",
                .build_args = args,
                .n_build_args = ELEMENTSOF(args),
                .labels = labels,
                .n_labels = 1,
                .target = "final",
                .platform = "linux/arm64",
                .no_cache = true,
                .no_cache_filter = filter,
                .n_no_cache_filter = 1,
                .add_hosts = hosts,
                .n_add_hosts = 1,
                .network = "none",
                .allow = allow,
                .n_allow = 1,
                .secrets = secrets,
                .n_secrets = ELEMENTSOF(secrets),
                .ssh = ssh,
                .n_ssh = 1,
                .outputs = outputs,
                .n_outputs = ELEMENTSOF(outputs),
        };
        _cleanup_(kiln_api_build_request_release) struct kiln_api_build_request got = { 0 };
        _cleanup_free_ char *text = NULL;
        json_t *j = NULL, *back = NULL;

        ASSERT_OK(kiln_api_build_request_to_json(&req, &j));
        text = kiln_api_json_dump(j, NULL);
        /* Secrets travel base64-encoded. */
        ASSERT_TRUE(strstr(text, "\"data\":\"cwD/Cg==\"") != NULL);
        back = json_loads(text, 0, NULL);
        json_decref(j);
        ASSERT_TRUE(back != NULL);
        ASSERT_OK(kiln_api_build_request_from_json(back, &got, &err));
        json_decref(back);

        ASSERT_STREQ(got.dockerfile, req.dockerfile);
        ASSERT_STREQ(got.dockerfile_name, "Dockerfile.dev");
        ASSERT_STREQ(got.dockerignore, req.dockerignore);
        ASSERT_STREQ(got.context_key, "host:/src/app");
        ASSERT_EQ_INT(got.n_build_args, 3);
        /* Keys are unique (an object); the body's keys are sorted. */
        ASSERT_STREQ(got.build_args[0].key, "A");
        ASSERT_STREQ(got.build_args[0].value, "1");
        ASSERT_STREQ(got.build_args[1].key, "B");
        ASSERT_STREQ(got.build_args[2].key, "EMPTY");
        ASSERT_STREQ(got.build_args[2].value, "");
        ASSERT_EQ_INT(got.n_labels, 1);
        ASSERT_STREQ(got.labels[0].value, "y");
        ASSERT_STREQ(got.target, "final");
        ASSERT_STREQ(got.platform, "linux/arm64");
        ASSERT_TRUE(got.no_cache);
        ASSERT_EQ_INT(got.n_no_cache_filter, 1);
        ASSERT_STREQ(got.no_cache_filter[0], "build");
        ASSERT_EQ_INT(got.n_add_hosts, 1);
        ASSERT_STREQ(got.add_hosts[0], "db:10.0.0.2");
        ASSERT_STREQ(got.network, "none");
        ASSERT_EQ_INT(got.n_allow, 1);
        ASSERT_STREQ(got.allow[0], "network.host");
        ASSERT_EQ_INT(got.n_secrets, 2);
        ASSERT_STREQ(got.secrets[0].id, "tok");
        ASSERT_EQ_INT(got.secrets[0].len, sizeof(secret_data));
        ASSERT_TRUE(memcmp(got.secrets[0].data, secret_data, sizeof(secret_data)) == 0);
        ASSERT_STREQ(got.secrets[1].id, "empty");
        ASSERT_EQ_INT(got.secrets[1].len, 0);
        ASSERT_EQ_INT(got.n_ssh, 1);
        ASSERT_STREQ(got.ssh[0].path, "/run/agent.sock");
        /* Outputs keep their order; attributes come sorted (an object). */
        ASSERT_EQ_INT(got.n_outputs, 2);
        ASSERT_STREQ(got.outputs[0].type, "image");
        ASSERT_EQ_INT(got.outputs[0].n_attrs, 3);
        ASSERT_STREQ(kiln_api_build_output_attr(&got.outputs[0], "name"), "127.0.0.1:5000/a:1,b");
        ASSERT_STREQ(kiln_api_build_output_attr(&got.outputs[0], "push"), "true");
        ASSERT_STREQ(kiln_api_build_output_attr(&got.outputs[0], "compression"), "zstd");
        ASSERT_TRUE(kiln_api_build_output_attr(&got.outputs[0], "dest") == NULL);
        ASSERT_STREQ(got.outputs[1].type, "oci");
        ASSERT_EQ_INT(got.outputs[1].n_attrs, 0);
        return 0;
}

TEST(build_request_minimal)
{
        _cleanup_(kiln_api_build_request_release) struct kiln_api_build_request req = { 0 };
        _cleanup_(kiln_api_build_request_release) struct kiln_api_build_request empty = { 0 };
        _cleanup_free_ char *text = NULL;
        json_t *j = NULL;

        ASSERT_OK(
                request_from("{\"dockerfile\":\"FROM scratch\",\"contextKey\":\"k\"}", &req, NULL));
        ASSERT_STREQ(req.dockerfile, "FROM scratch");
        ASSERT_TRUE(req.dockerfile_name == NULL && req.target == NULL && req.network == NULL);
        ASSERT_EQ_INT(req.n_build_args + req.n_secrets + req.n_ssh + req.n_add_hosts, 0);
        ASSERT_TRUE(!req.no_cache);

        /* Empty members are left out when encoding. */
        empty.dockerfile = kiln_xstrdup("FROM scratch");
        empty.context_key = kiln_xstrdup("k");
        ASSERT_OK(kiln_api_build_request_to_json(&empty, &j));
        text = kiln_api_json_dump(j, NULL);
        json_decref(j);
        ASSERT_STREQ(text, "{\"contextKey\":\"k\",\"dockerfile\":\"FROM scratch\"}\n");
        return 0;
}

TEST(build_request_refused)
{
        static const struct {
                const char *body, *message;
        } cases[] = {
                { "[]", "build request: expected a JSON object" },
                { "{\"contextKey\":\"k\"}", "build request: missing \"dockerfile\"" },
                { "{\"dockerfile\":\"x\"}", "build request: missing \"contextKey\"" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"\"}",
                  "build request: \"contextKey\" is empty" },
                { "{\"dockerfile\":1,\"contextKey\":\"k\"}",
                  "build request: \"dockerfile\" must be a string" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"tag\":\"a\"}",
                  "build request: unknown field 'tag'" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"buildArgs\":[\"A=1\"]}",
                  "build request: \"buildArgs\" must be an object of strings" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"buildArgs\":{\"A\":1}}",
                  "build request: \"buildArgs\": \"A\" must be a string" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"noCache\":\"yes\"}",
                  "build request: \"noCache\" must be true or false" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"network\":\"bridge\"}",
                  "build request: network mode 'bridge' not supported: expected default, none "
                  "or host" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"allow\":[\"device\"]}",
                  "build request: invalid entitlement 'device': expected network.host or "
                  "security.insecure" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"addHosts\":[\"nocolon\"]}",
                  "build request: invalid host 'nocolon': expected host:ip" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"addHosts\":[7]}",
                  "build request: \"addHosts\"[0] must be a string" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"noCacheFilter\":[\"\"]}",
                  "build request: \"noCacheFilter\"[0] is empty" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"secrets\":{}}",
                  "build request: \"secrets\" must be an array" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"secrets\":[{\"data\":\"\"}]}",
                  "build request: \"secrets\"[0]: missing \"id\"" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"secrets\":[{\"id\":\"a\"}]}",
                  "build request: \"secrets\"[0]: \"data\" must be a string" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"secrets\":[{\"id\":\"a\","
                  "\"data\":\"\",\"env\":\"X\"}]}",
                  "build request: \"secrets\"[0]: unknown field 'env'" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"secrets\":[{\"id\":\"a\","
                  "\"data\":\"\"},{\"id\":\"a\",\"data\":\"\"}]}",
                  "build request: secret 'a' given more than once" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"ssh\":[{\"id\":\"default\","
                  "\"path\":\"rel.sock\"}]}",
                  "build request: \"ssh\"[0]: \"path\" 'rel.sock' is not an absolute path" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"ssh\":[{\"id\":\"d\","
                  "\"path\":\"/a\"},{\"id\":\"d\",\"path\":\"/b\"}]}",
                  "build request: ssh 'd' given more than once" },
                { "{\"dockerfile\":\"a\\u0000b\",\"contextKey\":\"k\"}",
                  "build request: \"dockerfile\" holds a NUL character" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"outputs\":{}}",
                  "build request: \"outputs\" must be an array" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"outputs\":[\"oci\"]}",
                  "build request: \"outputs\"[0]: expected an object" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"outputs\":[{\"attrs\":{}}]}",
                  "build request: \"outputs\"[0]: missing \"type\"" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"outputs\":[{\"type\":\"oci\"},"
                  "{\"type\":\"cacheonly2\"}]}",
                  "build request: \"outputs\"[1]: exporter \"cacheonly2\" could not be found" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"outputs\":[{\"type\":\"tar\","
                  "\"dest\":\"out.tar\"}]}",
                  "build request: \"outputs\"[0]: unknown field 'dest'" },
                { "{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"outputs\":[{\"type\":\"image\","
                  "\"attrs\":{\"push\":true}}]}",
                  "build request: \"outputs\"[0]: \"attrs\": \"push\" must be a string" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kiln_api_build_request req = { 0 };
                _cleanup_free_ char *msg = NULL;
                int r = request_from(cases[i].body, &req, &msg);

                if (r >= 0)
                        kiln_api_build_request_release(&req);
                ASSERT_EQ_INT(r, -EINVAL);
                ASSERT_STREQ(msg, cases[i].message);
        }
        return 0;
}

TEST(build_request_secret_not_in_message)
{
        struct kiln_api_build_request req = { 0 };
        _cleanup_free_ char *msg = NULL;

        ASSERT_EQ_INT(request_from("{\"dockerfile\":\"x\",\"contextKey\":\"k\",\"secrets\":"
                                   "[{\"id\":\"tok\",\"data\":\"hunter2-not-base64!\"}]}",
                                   &req, &msg),
                      -EINVAL);
        ASSERT_STREQ(msg, "build request: \"secrets\"[0]: \"data\" is not base64");
        ASSERT_TRUE(strstr(msg, "hunter2") == NULL);
        return 0;
}

TEST(build_request_limits)
{
        _cleanup_free_ char *body = NULL;
        struct kiln_api_build_request req = { 0 };
        _cleanup_free_ char *msg = NULL;
        json_t *j = json_object(), *secrets = json_array();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_TRUE(j && secrets);
        json_object_set_new(j, "dockerfile", json_string("x"));
        json_object_set_new(j, "contextKey", json_string("k"));
        for (unsigned i = 0; i <= KILN_API_LIMIT_BUILD_SECRETS; i++) {
                json_t *s = json_object();
                char id[16];

                (void) snprintf(id, sizeof(id), "s%u", i);
                json_object_set_new(s, "id", json_string(id));
                json_object_set_new(s, "data", json_string(""));
                json_array_append_new(secrets, s);
        }
        json_object_set_new(j, "secrets", secrets);
        ASSERT_EQ_INT(kiln_api_build_request_from_json(j, &req, &err), -E2BIG);
        json_decref(j);
        return 0;
}

TEST(build_request_output_limits)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL, *err2 = NULL;
        struct kiln_api_build_request req = { 0 };
        json_t *j = json_object(), *outputs = json_array(), *one = json_array();
        json_t *attrs = json_object(), *o;

        ASSERT_TRUE(j && outputs && one && attrs);
        json_object_set_new(j, "dockerfile", json_string("x"));
        json_object_set_new(j, "contextKey", json_string("k"));
        for (unsigned i = 0; i <= KILN_API_LIMIT_BUILD_OUTPUTS; i++)
                json_array_append_new(outputs, json_pack("{s:s}", "type", "tar"));
        json_object_set_new(j, "outputs", outputs);
        ASSERT_EQ_INT(kiln_api_build_request_from_json(j, &req, &err), -E2BIG);
        ASSERT_STREQ(kiln_error_message(err), "build request: more than 16 outputs");

        for (unsigned i = 0; i <= KILN_API_LIMIT_OUTPUT_ATTRS; i++) {
                char k[16];

                (void) snprintf(k, sizeof(k), "k%u", i);
                json_object_set_new(attrs, k, json_string("v"));
        }
        o = json_pack("{s:s,s:o}", "type", "image", "attrs", attrs);
        json_array_append_new(one, o);
        json_object_set_new(j, "outputs", one);
        ASSERT_EQ_INT(kiln_api_build_request_from_json(j, &req, &err2), -E2BIG);
        json_decref(j);
        return 0;
}

TEST(export_path)
{
        _cleanup_free_ char *p = kiln_api_build_export_path("0123abcd", 3);

        ASSERT_STREQ(p, "/v1/build/0123abcd/export/3");
        return 0;
}

TEST(context_entries_round_trip)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_context_entry in[] = {
                { .path = "a", .mode = S_IFDIR | 0755, .mtime_ns = 1700000000123456789 },
                { .path = "a/b", .mode = S_IFREG | 0644, .size = 12, .uid = 1000, .gid = 100 },
                { .path = "a/link", .mode = S_IFLNK | 0777, .link = "b" },
                { .path = "z", .mode = S_IFREG | 0600, .size = 0, .mtime_ns = -5 },
        };
        struct kiln_api_context_entry *got = NULL;
        size_t n = 0;
        json_t *j = NULL;

        ASSERT_OK(kiln_api_context_entries_to_json(in, ELEMENTSOF(in), &j));
        ASSERT_OK(kiln_api_context_entries_from_json(j, &got, &n, &err));
        json_decref(j);
        ASSERT_EQ_INT(n, ELEMENTSOF(in));
        for (size_t i = 0; i < n; i++) {
                ASSERT_STREQ(got[i].path, in[i].path);
                ASSERT_EQ_INT(got[i].mode, in[i].mode);
                ASSERT_EQ_INT(got[i].size, in[i].size);
                ASSERT_TRUE(got[i].mtime_ns == in[i].mtime_ns);
                ASSERT_EQ_INT(got[i].uid, in[i].uid);
                ASSERT_EQ_INT(got[i].gid, in[i].gid);
                ASSERT_TRUE((got[i].link == NULL) == (in[i].link == NULL));
        }
        ASSERT_STREQ(got[2].link, "b");
        kiln_api_context_entries_free(got, n);

        /* An empty context is fine. */
        ASSERT_OK(kiln_api_context_entries_to_json(NULL, 0, &j));
        ASSERT_OK(kiln_api_context_entries_from_json(j, &got, &n, &err));
        json_decref(j);
        ASSERT_EQ_INT(n, 0);
        kiln_api_context_entries_free(got, n);
        return 0;
}

TEST(context_entries_refused)
{
#define E(x)   "{\"entries\":[" x "]}"
#define DIR(p) "{\"path\":\"" p "\",\"mode\":16877}"
#define REG(p) "{\"path\":\"" p "\",\"mode\":33188,\"size\":1}"
        static const struct {
                const char *body, *message;
        } cases[] = {
                { "{}", "context entries: \"entries\" must be an array" },
                { "{\"entries\":[],\"x\":1}", "context entries: unknown field 'x'" },
                { E("1"), "context entries: entry 0: expected an object" },
                { E("{\"mode\":33188}"), "context entries: entry 0: missing \"path\"" },
                { E("{\"path\":\"a\"}"), "context entries: 'a': missing \"mode\"" },
                { E(REG("/etc/passwd")),
                  "context entries: '/etc/passwd': the path must be relative and clean (no "
                  "leading or trailing '/', no '.' or '..')" },
                { E(DIR("a") "," REG("a/../../x")),
                  "context entries: 'a/../../x': the path must be relative and clean (no "
                  "leading or trailing '/', no '.' or '..')" },
                { E(REG("..")),
                  "context entries: '..': the path must be relative and clean (no leading or "
                  "trailing '/', no '.' or '..')" },
                { E(DIR("a") "," REG("a//b")),
                  "context entries: 'a//b': the path must be relative and clean (no leading or "
                  "trailing '/', no '.' or '..')" },
                { E(DIR("a/")),
                  "context entries: 'a/': the path must be relative and clean (no leading or "
                  "trailing '/', no '.' or '..')" },
                { E(REG("b") "," REG("a")),
                  "context entries: 'a': entries must be sorted by path, without duplicates "
                  "(after 'b')" },
                { E(REG("a") "," REG("a")),
                  "context entries: 'a': entries must be sorted by path, without duplicates "
                  "(after 'a')" },
                { E(REG("a/b")), "context entries: 'a/b': its parent directory is not listed "
                                 "before it" },
                { E(REG("a") "," REG("a/b")),
                  "context entries: 'a/b': its parent directory is not listed before it" },
                { E("{\"path\":\"dev\",\"mode\":8630}"),
                  "context entries: 'dev': unsupported file type (mode 020666): only regular "
                  "files, directories and symlinks" },
                { E("{\"path\":\"l\",\"mode\":41471}"),
                  "context entries: 'l': a symlink needs \"link\"" },
                { E("{\"path\":\"f\",\"mode\":33188,\"link\":\"x\"}"),
                  "context entries: 'f': \"link\" is for symlinks only" },
                { E("{\"path\":\"f\",\"mode\":33188,\"size\":-1}"),
                  "context entries: 'f': \"size\" is out of range" },
                { E("{\"path\":\"f\",\"mode\":33188,\"uid\":4294967296}"),
                  "context entries: 'f': \"uid\" is out of range" },
                { E("{\"path\":\"f\",\"mode\":33188,\"owner\":0}"),
                  "context entries: entry 0: unknown field 'owner'" },
        };
#undef E
#undef DIR
#undef REG

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kiln_api_context_entry *e = NULL;
                _cleanup_free_ char *msg = NULL;
                size_t n = 0;
                int r = entries_from(cases[i].body, &e, &n, &msg);

                if (r >= 0)
                        kiln_api_context_entries_free(e, n);
                ASSERT_TRUE(r == -EINVAL || r == -E2BIG);
                ASSERT_STREQ(msg, cases[i].message);
        }
        return 0;
}

TEST(context_entries_nested_parents)
{
        struct kiln_api_context_entry *e = NULL;
        size_t n = 0;

        /* "a-b" sorts between "a" and "a/x": the parent search must still
         * find "a". */
        ASSERT_OK(entries_from("{\"entries\":[{\"path\":\"a\",\"mode\":16877},"
                               "{\"path\":\"a-b\",\"mode\":33188},"
                               "{\"path\":\"a/x\",\"mode\":16877},"
                               "{\"path\":\"a/x/y\",\"mode\":33188}]}",
                               &e, &n, NULL));
        ASSERT_EQ_INT(n, 4);
        kiln_api_context_entries_free(e, n);
        return 0;
}

TEST(context_need_and_upload)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *need[] = { "a/b", "c" };
        char **got = NULL;
        uint64_t files = 0, bytes = 0;
        size_t n = 0;
        json_t *j = NULL;

        ASSERT_OK(kiln_api_context_need_to_json(need, 2, &j));
        ASSERT_OK(kiln_api_context_need_from_json(j, &got, &n, &err));
        json_decref(j);
        ASSERT_EQ_INT(n, 2);
        ASSERT_STREQ(got[0], "a/b");
        ASSERT_STREQ(got[1], "c");
        ASSERT_TRUE(got[2] == NULL);
        kiln_api_strv_free(got);

        ASSERT_OK(kiln_api_context_upload_result_to_json(3, 1u << 20, &j));
        ASSERT_OK(kiln_api_context_upload_result_from_json(j, &files, &bytes, &err));
        json_decref(j);
        ASSERT_EQ_INT(files, 3);
        ASSERT_EQ_INT(bytes, 1u << 20);

        j = parse("{\"need\":\"a\"}");
        ASSERT_EQ_INT(kiln_api_context_need_from_json(j, &got, &n, &err), -EBADMSG);
        json_decref(j);
        return 0;
}

TEST(time_format_ns)
{
        char t[KILN_API_TIME_SIZE];

        kiln_api_time_format(1700000000123456789, t);
        ASSERT_STREQ(t, "2023-11-14T22:13:20.123456789Z");
        kiln_api_time_format(0, t);
        ASSERT_STREQ(t, "1970-01-01T00:00:00.000000000Z");
        return 0;
}

TEST(context_path)
{
        _cleanup_free_ char *p = kiln_api_build_context_path("0123abcd", "context");

        ASSERT_STREQ(p, "/v1/build/0123abcd/context/context");
        return 0;
}

/* Encodes ev, serialises it, parses it back and decodes it into got. */
static int round_trip(const struct kiln_api_build_event *ev, struct kiln_api_build_event *got,
                      char **text)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *j = NULL, *back;
        int r;

        r = kiln_api_build_event_to_json(ev, &j);
        if (r < 0)
                return r;
        *text = kiln_api_json_dump(j, NULL);
        json_decref(j);
        back = parse(*text);
        if (!back)
                return -EBADMSG;
        r = kiln_api_build_event_from_json(back, got, &err);
        json_decref(back);
        return r;
}

TEST(build_events_round_trip)
{
        char *inputs[] = { "sha256:1", "sha256:2" };
        char *follow[] = { "Dockerfile" }, *include[] = { "src" }, *exclude[] = { "*.log" };
        json_t *config = parse("{\"architecture\":\"amd64\",\"os\":\"linux\"}");
        json_t *response =
                parse("{\"containerimage.digest\":\"sha256:aa\",\"containerimage.config.digest\":"
                      "\"sha256:bb\",\"containerimage.descriptor\":{\"mediaType\":\"application/"
                      "vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:aa\",\"size\":480},"
                      "\"image.name\":\"docker.io/library/x:latest\"}");
        const struct kiln_api_build_event events[] = {
                { .type = KILN_API_BUILD_EVENT_BUILD, .time = "T", .id = "abc" },
                { .type = KILN_API_BUILD_EVENT_VERTEX,
                  .time = "T",
                  .digest = "sha256:3",
                  .name = "[2/2] RUN echo hi",
                  .inputs = inputs,
                  .n_inputs = 2,
                  .started = "2026-11-28T06:40:01.123456789Z",
                  .completed = "2026-11-28T06:40:02.000000001Z",
                  .cached = true,
                  .error = "boom" },
                { .type = KILN_API_BUILD_EVENT_STATUS,
                  .vertex = "sha256:3",
                  .id = "extracting sha256:9",
                  .name = "extracting",
                  .current = 10,
                  .total = 20,
                  .started = "S" },
                { .type = KILN_API_BUILD_EVENT_LOG,
                  .vertex = "sha256:3",
                  .stream = 2,
                  .data = (uint8_t *) "hello\0world\n",
                  .len = 12 },
                { .type = KILN_API_BUILD_EVENT_WARNING,
                  .rule = "UndefinedVar",
                  .message = "Usage of undefined variable '$FOO'",
                  .url = "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
                  .line = 3 },
                { .type = KILN_API_BUILD_EVENT_CONTEXT_REQUEST,
                  .name = "context",
                  .follow_paths = follow,
                  .n_follow_paths = 1,
                  .include_patterns = include,
                  .n_include_patterns = 1,
                  .exclude_patterns = exclude,
                  .n_exclude_patterns = 1 },
                { .type = KILN_API_BUILD_EVENT_EXPORT, .index = 0, .exporter = "oci" },
                { .type = KILN_API_BUILD_EVENT_RESULT,
                  .config = config,
                  .snapshot = "42",
                  .exporter_response = response },
                { .type = KILN_API_BUILD_EVENT_ERROR,
                  .error = "process \"/bin/sh -c exit 1\" "
                           "did not complete successfully: "
                           "exit code: 1",
                  .source_file = "Dockerfile",
                  .source_start = 3,
                  .source_end = 4 },
        };

        ASSERT_TRUE(config != NULL && response != NULL);
        for (size_t i = 0; i < ELEMENTSOF(events); i++) {
                const struct kiln_api_build_event *ev = &events[i];
                _cleanup_(kiln_api_build_event_release) struct kiln_api_build_event got = { 0 };
                _cleanup_free_ char *text = NULL;

                ASSERT_OK(round_trip(ev, &got, &text));
                ASSERT_EQ_INT(got.type, ev->type);
                switch (ev->type) {
                case KILN_API_BUILD_EVENT_BUILD:
                        ASSERT_STREQ(text, "{\"id\":\"abc\",\"time\":\"T\",\"type\":\"build\"}\n");
                        ASSERT_STREQ(got.id, "abc");
                        ASSERT_STREQ(got.time, "T");
                        break;
                case KILN_API_BUILD_EVENT_VERTEX:
                        ASSERT_STREQ(got.digest, "sha256:3");
                        ASSERT_STREQ(got.name, "[2/2] RUN echo hi");
                        ASSERT_EQ_INT(got.n_inputs, 2);
                        ASSERT_STREQ(got.inputs[1], "sha256:2");
                        ASSERT_STREQ(got.started, ev->started);
                        ASSERT_STREQ(got.completed, ev->completed);
                        ASSERT_TRUE(got.cached);
                        ASSERT_STREQ(got.error, "boom");
                        break;
                case KILN_API_BUILD_EVENT_STATUS:
                        ASSERT_STREQ(got.vertex, "sha256:3");
                        ASSERT_STREQ(got.id, "extracting sha256:9");
                        ASSERT_EQ_INT(got.current, 10);
                        ASSERT_EQ_INT(got.total, 20);
                        ASSERT_STREQ(got.started, "S");
                        ASSERT_TRUE(got.completed == NULL);
                        break;
                case KILN_API_BUILD_EVENT_LOG:
                        ASSERT_TRUE(strstr(text, "\"data\":\"aGVsbG8Ad29ybGQK\"") != NULL);
                        ASSERT_EQ_INT(got.stream, 2);
                        ASSERT_EQ_INT(got.len, 12);
                        ASSERT_TRUE(memcmp(got.data, "hello\0world\n", 12) == 0);
                        break;
                case KILN_API_BUILD_EVENT_WARNING:
                        ASSERT_STREQ(got.rule, "UndefinedVar");
                        ASSERT_STREQ(got.message, ev->message);
                        ASSERT_STREQ(got.url, ev->url);
                        ASSERT_EQ_INT(got.line, 3);
                        break;
                case KILN_API_BUILD_EVENT_CONTEXT_REQUEST:
                        ASSERT_STREQ(got.name, "context");
                        ASSERT_EQ_INT(got.n_follow_paths, 1);
                        ASSERT_STREQ(got.follow_paths[0], "Dockerfile");
                        ASSERT_STREQ(got.include_patterns[0], "src");
                        ASSERT_STREQ(got.exclude_patterns[0], "*.log");
                        break;
                case KILN_API_BUILD_EVENT_EXPORT:
                        /* Index 0 is sent: it is the first output, not "absent". */
                        ASSERT_STREQ(text,
                                     "{\"exporter\":\"oci\",\"index\":0,\"type\":\"export\"}\n");
                        ASSERT_EQ_INT(got.index, 0);
                        ASSERT_STREQ(got.exporter, "oci");
                        break;
                case KILN_API_BUILD_EVENT_RESULT:
                        ASSERT_TRUE(json_equal(got.config, config));
                        ASSERT_STREQ(got.snapshot, "42");
                        ASSERT_TRUE(json_equal(got.exporter_response, response));
                        ASSERT_STREQ(json_string_value(json_object_get(got.exporter_response,
                                                                       "containerimage.digest")),
                                     "sha256:aa");
                        break;
                case KILN_API_BUILD_EVENT_ERROR:
                        ASSERT_STREQ(got.error, ev->error);
                        ASSERT_TRUE(strstr(text, "\"source\":{\"file\":\"Dockerfile\","
                                                 "\"lines\":[3,4]}") != NULL);
                        ASSERT_STREQ(got.source_file, "Dockerfile");
                        ASSERT_EQ_INT(got.source_start, 3);
                        ASSERT_EQ_INT(got.source_end, 4);
                        break;
                case _KILN_API_BUILD_EVENT_TYPE_MAX:
                case _KILN_API_BUILD_EVENT_TYPE_INVALID:
                        break;
                }
        }
        json_decref(config);
        json_decref(response);
        {
                /* A result without outputs has no exporterResponse; an error
                 * that is not a step's has no source. */
                _cleanup_(kiln_api_build_event_release) struct kiln_api_build_event got = { 0 };
                _cleanup_(kiln_api_build_event_release) struct kiln_api_build_event got2 = { 0 };
                _cleanup_free_ char *text = NULL, *text2 = NULL;
                struct kiln_api_build_event plain = { .type = KILN_API_BUILD_EVENT_RESULT };
                struct kiln_api_build_event bare = { .type = KILN_API_BUILD_EVENT_ERROR,
                                                     .error = "x" };

                ASSERT_OK(round_trip(&plain, &got, &text));
                ASSERT_TRUE(strstr(text, "exporterResponse") == NULL);
                ASSERT_TRUE(got.exporter_response == NULL);
                ASSERT_OK(round_trip(&bare, &got2, &text2));
                ASSERT_STREQ(text2, "{\"error\":\"x\",\"type\":\"error\"}\n");
                ASSERT_TRUE(got2.source_file == NULL);
        }
        return 0;
}

TEST(build_events_refused)
{
        static const char *const bad[] = {
                "[]",
                "{}",
                "{\"type\":\"exported\"}",
                "{\"type\":\"vertex\"}",
                "{\"type\":\"vertex\",\"digest\":\"d\",\"cached\":\"yes\"}",
                "{\"type\":\"log\",\"data\":\"%%%\"}",
                "{\"type\":\"log\",\"stream\":3,\"data\":\"\"}",
                "{\"type\":\"result\",\"config\":\"{}\"}",
                "{\"type\":\"error\"}",
                "{\"type\":\"export\",\"exporter\":\"oci\"}",
                "{\"type\":\"export\",\"index\":-1,\"exporter\":\"oci\"}",
                "{\"type\":\"export\",\"index\":0}",
                "{\"type\":\"result\",\"exporterResponse\":[]}",
                "{\"type\":\"error\",\"error\":\"x\",\"source\":\"Dockerfile:3\"}",
                "{\"type\":\"error\",\"error\":\"x\",\"source\":{\"lines\":[1,1]}}",
                "{\"type\":\"error\",\"error\":\"x\",\"source\":{\"file\":\"D\",\"lines\":[3]}}",
                "{\"type\":\"error\",\"error\":\"x\",\"source\":{\"file\":\"D\",\"lines\":[4,3]}}",
                "{\"type\":\"error\",\"error\":\"x\",\"source\":{\"file\":\"D\",\"lines\":[0,3]}}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_api_build_event ev = { 0 };
                json_t *j = parse(bad[i]);
                int r;

                ASSERT_TRUE(j != NULL);
                r = kiln_api_build_event_from_json(j, &ev, &err);
                json_decref(j);
                ASSERT_EQ_INT(r, -EBADMSG);
                ASSERT_TRUE(err != NULL);
        }
        {
                /* An unknown type is named, so that a client may skip it. */
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_api_build_event ev = { 0 };
                json_t *j = parse("{\"type\":\"exported\",\"x\":1}");

                ASSERT_EQ_INT(kiln_api_build_event_from_json(j, &ev, &err), -EBADMSG);
                json_decref(j);
                ASSERT_STREQ(kiln_error_message(err), "build event: unknown type 'exported'");
        }
        {
                /* Unknown keys are ignored. */
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_(kiln_api_build_event_release) struct kiln_api_build_event ev = { 0 };
                json_t *j = parse("{\"type\":\"build\",\"id\":\"x\",\"later\":[1]}");

                ASSERT_OK(kiln_api_build_event_from_json(j, &ev, &err));
                json_decref(j);
                ASSERT_STREQ(ev.id, "x");
        }
        return 0;
}

TEST(build_event_type_names)
{
        for (int t = 0; t < _KILN_API_BUILD_EVENT_TYPE_MAX; t++) {
                const char *s =
                        kiln_api_build_event_type_to_string((enum kiln_api_build_event_type) t);

                ASSERT_TRUE(s != NULL);
                ASSERT_EQ_INT(kiln_api_build_event_type_from_string(s), t);
        }
        ASSERT_STREQ(kiln_api_build_event_type_to_string(KILN_API_BUILD_EVENT_CONTEXT_REQUEST),
                     "context-request");
        ASSERT_EQ_INT(kiln_api_build_event_type_from_string("blob-done"), -EINVAL);
        return 0;
}

/* The context probe: a digest both ways, anything else refused. */
TEST(context_probe)
{
        static const char d[] =
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        static const char *const bad[] = {
                "{\"digest\":\"sha256:0123\"}",
                "{\"digest\":\"SHA256:0123456789abcdef0123456789abcdef0123456789abcdef01234567"
                "89abcdef\"}",
                "{\"digest\":\"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef01234567"
                "89abcdef\"}",
                "{\"digest\":1}",
                "{}",
                "{\"digest\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef01234567"
                "89abcdef\",\"entries\":[]}",
        };
        json_t *j = NULL;
        char *got = NULL;
        bool unchanged = false;

        ASSERT_OK(kiln_api_context_probe_to_json(d, &j));
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_OK(kiln_api_context_probe_from_json(j, &got, &err));
        }
        json_decref(j);
        ASSERT_STREQ(got, d);
        free(got);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                j = parse(bad[i]);
                ASSERT_EQ_INT(kiln_api_context_probe_from_json(j, &got, &err), -EINVAL);
                json_decref(j);
                ASSERT_TRUE(strstr(kiln_error_message(err), "context probe") != NULL);
        }
        ASSERT_OK(kiln_api_context_unchanged_to_json(true, &j));
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_OK(kiln_api_context_unchanged_from_json(j, &unchanged, &err));
        }
        json_decref(j);
        ASSERT_TRUE(unchanged);
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                j = parse("{\"unchanged\":\"yes\"}");
                ASSERT_EQ_INT(kiln_api_context_unchanged_from_json(j, &unchanged, &err), -EBADMSG);
                json_decref(j);
        }
        return 0;
}
