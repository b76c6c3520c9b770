/* SPDX-License-Identifier: Apache-2.0 */
#include "base/error.h"
#include "base/macro.h"
#include "content/content.h"
#include "kiln-test.h"

#define D1                "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0"
#define D2                "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b"
#define DC                "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
#define EMPTY_JSON_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

#define OCI_M    KILN_CONTENT_MT_OCI_MANIFEST
#define OCI_I    KILN_CONTENT_MT_OCI_INDEX
#define DOCKER_M KILN_CONTENT_MT_DOCKER_MANIFEST

/* A valid OCI manifest with one substitution point each. */
#define LAYER(mt, digest, size) \
        "{\"mediaType\":\"" mt "\",\"digest\":\"" digest "\",\"size\":" size "}"
#define MANIFEST(config, layers)                                              \
        "{\"schemaVersion\":2,\"mediaType\":\"" OCI_M "\",\"config\":" config \
        ",\"layers\":" layers "}"
#define CONFIG_DESC LAYER(KILN_CONTENT_MT_OCI_CONFIG, DC, "7023")
#define GOOD_LAYER  LAYER(KILN_CONTENT_MT_OCI_LAYER_GZIP, D1, "32654")

static const char *good_manifest = MANIFEST(
        CONFIG_DESC, "[" GOOD_LAYER "," LAYER(KILN_CONTENT_MT_OCI_LAYER_GZIP, D2, "16724") "]");

static int expect_error(const char *what, int r, int code, const struct kiln_error *err,
                        const char *needle)
{
        if (r != code) {
                printf("# %s: returned %d, expected %d (%s)\n", what, r, code,
                       err ? kiln_error_message(err) : "no error");
                return -1;
        }
        if (!err || !strstr(kiln_error_message(err), needle)) {
                printf("# %s: message \"%s\" lacks \"%s\"\n", what,
                       err ? kiln_error_message(err) : "(none)", needle);
                return -1;
        }
        return 0;
}

static int manifest_error(const char *json, const char *hint, int code, const char *needle)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_content_manifest_parse(json, strlen(json), hint, &m, &err);

        if (r >= 0 && m) {
                printf("# accepted: %s\n", json);
                return -1;
        }
        return expect_error(json, r, code, err, needle);
}

static int index_error(const char *json, const char *hint, int code, const char *needle)
{
        _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_content_index_parse(json, strlen(json), hint, &idx, &err);

        return expect_error(json, r, code, err, needle);
}

static int config_error(const char *json, const char *hint, int code, const char *needle)
{
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *c = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_content_config_parse(json, strlen(json), hint, &c, &err);

        return expect_error(json, r, code, err, needle);
}

#define CHECK(x)                   \
        do {                       \
                if ((x) < 0)       \
                        return -1; \
        } while (0)

TEST(manifest_parse_ok)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(
                kiln_content_manifest_parse(good_manifest, strlen(good_manifest), NULL, &m, &err));
        ASSERT_EQ_INT(m->media_type, KILN_CONTENT_MEDIA_OCI_MANIFEST);
        ASSERT_TRUE(m->media_type_set);
        ASSERT_STREQ(m->config.digest, DC);
        ASSERT_EQ_INT(m->config.size, 7023);
        ASSERT_EQ_INT(m->n_layers, 2);
        ASSERT_STREQ(m->layers[1].digest, D2);
        ASSERT_TRUE(m->subject == NULL);
        ASSERT_OK(kiln_content_manifest_check_image(m, &err));
        m = kiln_content_manifest_free(m);
        /* With the hint it was served under. */
        ASSERT_OK(
                kiln_content_manifest_parse(good_manifest, strlen(good_manifest), OCI_M, &m, &err));
        return 0;
}

TEST(manifest_media_type_rules)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *no_mt = "{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":[]}";

        /* An OCI manifest may leave mediaType out; empty layers are taken,
         * as containerd and registries take them (FROM scratch). */
        ASSERT_OK(kiln_content_manifest_parse(no_mt, strlen(no_mt), NULL, &m, &err));
        ASSERT_TRUE(!m->media_type_set);
        ASSERT_EQ_INT(m->n_layers, 0);
        m = kiln_content_manifest_free(m);

        CHECK(manifest_error(good_manifest, DOCKER_M, -EINVAL,
                             "docker manifest: $.mediaType: '" OCI_M
                             "' contradicts the expected " DOCKER_M));
        CHECK(manifest_error(good_manifest, OCI_I, -EOPNOTSUPP,
                             "parse manifest: media type '" OCI_I
                             "': not a document of this kind; supported: " OCI_M ", " DOCKER_M));
        CHECK(manifest_error(good_manifest, "application/vnd.example+json", -EOPNOTSUPP,
                             "unknown media type; supported: " OCI_M ", " DOCKER_M));
        CHECK(manifest_error(good_manifest,
                             "application/vnd.docker.distribution.manifest.v1+prettyjws",
                             -EOPNOTSUPP, "docker schema 1 manifests are not supported"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.foo+json\","
                             "\"config\":" CONFIG_DESC ",\"layers\":[]}",
                             NULL, -EOPNOTSUPP,
                             "media type 'application/vnd.foo+json': unknown media type; "
                             "supported: "));
        CHECK(manifest_error("{\"schemaVersion\":2,\"mediaType\":\"" OCI_I "\",\"manifests\":[]}",
                             NULL, -EOPNOTSUPP, "not a document of this kind"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"manifests\":[],\"config\":" CONFIG_DESC
                             ",\"layers\":[]}",
                             NULL, -EINVAL,
                             "oci image manifest: $.manifests: expected a manifest, found an "
                             "index field"));
        CHECK(manifest_error("{\"schemaVersion\":1,\"fsLayers\":[]}", NULL, -EOPNOTSUPP,
                             "docker schema 1 manifests are not supported"));
        CHECK(manifest_error(
                "{\"schemaVersion\":2,\"mediaType\":\"bad type\",\"config\":" CONFIG_DESC
                ",\"layers\":[]}",
                NULL, -EINVAL, "$.mediaType: invalid media type 'bad type'"));
        return 0;
}

TEST(manifest_validation_errors)
{
        char big[256];

        CHECK(manifest_error("{\"schemaVersion\":2,", NULL, -EBADMSG,
                             "oci image manifest: invalid JSON at 1:"));
        CHECK(manifest_error("[]", NULL, -EINVAL,
                             "oci image manifest: $: expected an object, got "
                             "an array"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"schemaVersion\":2}", NULL, -EBADMSG,
                             "duplicate object key"));
        CHECK(manifest_error("{\"config\":" CONFIG_DESC ",\"layers\":[]}", NULL, -EINVAL,
                             "oci image manifest: $.schemaVersion: required field is missing"));
        CHECK(manifest_error("{\"schemaVersion\":3,\"config\":" CONFIG_DESC ",\"layers\":[]}", NULL,
                             -EINVAL, "$.schemaVersion: expected 2, got 3"));
        CHECK(manifest_error("{\"schemaVersion\":\"2\",\"config\":" CONFIG_DESC ",\"layers\":[]}",
                             NULL, -EINVAL, "$.schemaVersion: expected 2, got '2'"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"layers\":[]}", NULL, -EINVAL,
                             "$.config: required field is missing"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC "}", NULL, -EINVAL,
                             "$.layers: required field is missing"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":null}",
                             NULL, -EINVAL,
                             "$.layers: expected an array of descriptors, got null"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":{}}", NULL,
                             -EINVAL, "$.layers: expected an array of descriptors"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":[1]}",
                             NULL, -EINVAL, "$.layers[0]: expected a descriptor object, got 1"));
        CHECK(manifest_error(MANIFEST("\"x\"", "[]"), NULL, -EINVAL,
                             "$.config: expected a descriptor object, got 'x'"));

        /* Descriptor fields. */
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" GOOD_LAYER ","
                                                   "{\"digest\":\"" D1 "\",\"size\":1}]"),
                             NULL, -EINVAL, "$.layers[1].mediaType: required field is missing"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" GOOD_LAYER ","
                                                   "{\"mediaType\":\"a/b\",\"size\":1}]"),
                             NULL, -EINVAL, "$.layers[1].digest: required field is missing"));
        CHECK(manifest_error(
                MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1 "\"}]"), NULL,
                -EINVAL, "$.layers[0].size: required field is missing"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", D1, "-1") "]"), NULL, -EINVAL,
                             "$.layers[0].size: expected an integer >= 0, got -1"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", D1, "\"12\"") "]"), NULL,
                             -EINVAL, "$.layers[0].size: expected an integer >= 0, got '12'"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", D1, "1.5") "]"), NULL, -EINVAL,
                             "$.layers[0].size: expected an integer >= 0, got 1.5"));
        CHECK(manifest_error(
                MANIFEST(CONFIG_DESC, "[" LAYER("a/b", D1, "99999999999999999999") "]"), NULL,
                -EBADMSG, "invalid JSON"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", "sha256:ABC", "1") "]"), NULL,
                             -EINVAL,
                             "$.layers[0].digest: invalid digest 'sha256:ABC': sha256 needs 64 "
                             "lowercase hex digits"));
        CHECK(manifest_error(
                MANIFEST(CONFIG_DESC, "[" LAYER("a/b",
                                                "sha256:9834876DCFB05CB167A5C24953EBA58C4AC8"
                                                "9B1ADF57F28F2F9D09AF107EE8F0",
                                                "1") "]"),
                NULL, -EINVAL, "needs 64 lowercase hex digits"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", "nodigest", "1") "]"), NULL,
                             -EINVAL, "invalid digest 'nodigest': expected <algorithm>:<hex>"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", "Sha256:ab", "1") "]"), NULL,
                             -EINVAL, "bad algorithm name"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("a/b", "sha256:a b", "1") "]"), NULL,
                             -EINVAL, "bad encoded part"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[" LAYER("nosubtype", D1, "1") "]"), NULL,
                             -EINVAL, "$.layers[0].mediaType: invalid media type 'nosubtype'"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                                   "\",\"size\":1,\"urls\":[\"value\"]}]"),
                             NULL, -EINVAL,
                             "$.layers[0].urls: [0]: 'value' is not an absolute URI"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                                   "\",\"size\":1,\"urls\":[1]}]"),
                             NULL, -EINVAL, "$.layers[0].urls: [0]: expected a string, got 1"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC,
                                      "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                      "\",\"size\":1,\"annotations\":{\"com.example\":1}}]"),
                             NULL, -EINVAL,
                             "$.layers[0].annotations[\"com.example\"]: expected a string, got 1"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                                   "\",\"size\":1,\"annotations\":[]}]"),
                             NULL, -EINVAL,
                             "$.layers[0].annotations: expected an object of strings"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                                   "\",\"size\":1,\"artifactType\":\"x\"}]"),
                             NULL, -EINVAL, "$.layers[0].artifactType: invalid media type 'x'"));
        CHECK(manifest_error(
                MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                      "\",\"size\":1,\"platform\":{\"os\":\"linux\"}}]"),
                NULL, -EINVAL, "$.layers[0].platform.architecture: required field is missing"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC,
                                      "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                      "\",\"size\":1,\"platform\":{\"os\":\"linux\","
                                      "\"architecture\":\"amd64\",\"os.features\":\"x\"}}]"),
                             NULL, -EINVAL,
                             "$.layers[0].platform[\"os.features\"]: expected an array of "
                             "strings, got 'x'"));
        /* Embedded data: base64 that matches digest and size. */
        CHECK(manifest_error(MANIFEST(CONFIG_DESC,
                                      "[{\"mediaType\":\"a/b\",\"digest\":\"" EMPTY_JSON_DIGEST
                                      "\",\"size\":2,\"data\":\"e30\"}]"),
                             NULL, -EINVAL, "$.layers[0].data: not standard base64 with padding"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC,
                                      "[{\"mediaType\":\"a/b\",\"digest\":\"" EMPTY_JSON_DIGEST
                                      "\",\"size\":3,\"data\":\"e30=\"}]"),
                             NULL, -EINVAL, "$.layers[0].data: holds 2 bytes but size is 3"));
        CHECK(manifest_error(MANIFEST(CONFIG_DESC, "[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                                                   "\",\"size\":2,\"data\":\"e30=\"}]"),
                             NULL, -EINVAL,
                             "$.layers[0].data: content has digest " EMPTY_JSON_DIGEST));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC
                             ",\"layers\":[],\"subject\":{}}",
                             NULL, -EINVAL, "$.subject.mediaType: required field is missing"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC
                             ",\"layers\":[],\"annotations\":{\"a\":null}}",
                             NULL, -EINVAL, "$.annotations.a: expected a string, got null"));
        CHECK(manifest_error("{\"schemaVersion\":2,\"config\":" CONFIG_DESC
                             ",\"layers\":[],\"artifactType\":7}",
                             NULL, -EINVAL, "$.artifactType: expected a string, got 7"));
        /* Hostile strings are quoted harmlessly and cut short. */
        memset(big, 'x', sizeof(big));
        memcpy(big, "{\"schemaVersion\":\"\x1b", 19);
        memcpy(big + sizeof(big) - 3, "\"}", 3);
        CHECK(manifest_error(big, NULL, -EBADMSG, "invalid JSON"));
        return 0;
}

TEST(manifest_limits)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64u << 20);
        size_t i;

        /* Size: checked before parsing. */
        ASSERT_OK(kiln_buf_puts(&b, good_manifest));
        while (b.len <= KILN_CONTENT_LIMIT_MANIFEST)
                ASSERT_OK(kiln_buf_puts(&b, "                                "));
        CHECK(manifest_error(b.data, NULL, -E2BIG, "oci image manifest: document is "));
        CHECK(manifest_error(b.data, NULL, -E2BIG, "more than the limit of 4393216"));
        CHECK(index_error(b.data, NULL, -E2BIG, "more than the limit"));

        /* Layers. */
        kiln_buf_reset(&b);
        ASSERT_OK(
                kiln_buf_puts(&b, "{\"schemaVersion\":2,\"config\":" CONFIG_DESC ",\"layers\":["));
        for (i = 0; i <= KILN_CONTENT_LIMIT_LAYERS; i++)
                ASSERT_OK(kiln_buf_printf(&b, "%s" GOOD_LAYER, i ? "," : ""));
        ASSERT_OK(kiln_buf_puts(&b, "]}"));
        CHECK(manifest_error(b.data, NULL, -EINVAL,
                             "$.layers: 1025 entries, more than the limit "
                             "of 1024"));
        return 0;
}

TEST(manifest_docker)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(1u << 20);
        const char *docker =
                "{\"schemaVersion\":2,\"mediaType\":\"" DOCKER_M "\",\"config\":" LAYER(
                        KILN_CONTENT_MT_DOCKER_CONFIG, DC,
                        "7023") ",\"layers\":[" LAYER(KILN_CONTENT_MT_DOCKER_LAYER_GZIP, D1,
                                                      "5") "],\"annotations\":null}";

        ASSERT_OK(kiln_content_manifest_parse(docker, strlen(docker), DOCKER_M, &m, &err));
        ASSERT_EQ_INT(m->media_type, KILN_CONTENT_MEDIA_DOCKER_MANIFEST);
        ASSERT_OK(kiln_content_manifest_check_image(m, &err));
        ASSERT_OK(kiln_content_manifest_serialize(m, &out));
        ASSERT_TRUE(strstr(out.data, "\"mediaType\": \"" DOCKER_M "\"") != NULL);
        m = kiln_content_manifest_free(m);
        /* Docker documents: null reads as absent, as Go reads it; required
         * fields stay required. */
        CHECK(manifest_error("{\"schemaVersion\":2,\"mediaType\":\"" DOCKER_M
                             "\",\"config\":null,\"layers\":[]}",
                             NULL, -EINVAL,
                             "docker manifest: $.config: required field is missing"));
        return 0;
}

TEST(manifest_check_image)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *artifact = MANIFEST(LAYER(KILN_CONTENT_MT_OCI_EMPTY, EMPTY_JSON_DIGEST, "2"),
                                        "[" GOOD_LAYER "]");
        const char *sbom = MANIFEST(CONFIG_DESC,
                                    "[" GOOD_LAYER "," LAYER("application/spdx+json", D2, "3") "]");

        ASSERT_OK(kiln_content_manifest_parse(artifact, strlen(artifact), NULL, &m, &err));
        ASSERT_EQ_INT(kiln_content_manifest_check_image(m, &err), -EOPNOTSUPP);
        CHECK(expect_error("artifact", -EOPNOTSUPP, -EOPNOTSUPP, err,
                           "oci image manifest: not a container image: $.config.mediaType "
                           "'" KILN_CONTENT_MT_OCI_EMPTY
                           "' is not an image config; supported: " KILN_CONTENT_MT_OCI_CONFIG
                           ", " KILN_CONTENT_MT_DOCKER_CONFIG));
        m = kiln_content_manifest_free(m);
        ASSERT_OK(kiln_content_manifest_parse(sbom, strlen(sbom), NULL, &m, &err));
        ASSERT_EQ_INT(kiln_content_manifest_check_image(m, &err), -EOPNOTSUPP);
        CHECK(expect_error("sbom", -EOPNOTSUPP, -EOPNOTSUPP, err,
                           "$.layers[1].mediaType 'application/spdx+json' is not a layer type; "
                           "supported: " KILN_CONTENT_MT_OCI_LAYER));
        return 0;
}

TEST(manifest_serialize_deterministic)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf a = KILN_BUF_INIT(1u << 20);
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        const char *in = "{\"layers\":[{\"size\":1,\"digest\":\"" D1 "\",\"mediaType\":\"a/b\","
                         "\"annotations\":{\"z\":\"1\",\"a\":\"<&>\"}}],\"annotations\":{\"b\":"
                         "\"2\",\"a\":\"1\"},\"config\":" CONFIG_DESC ",\"schemaVersion\":2}";
        const char *expected = "{\n"
                               "  \"schemaVersion\": 2,\n"
                               "  \"config\": {\n"
                               "    \"mediaType\": \"" KILN_CONTENT_MT_OCI_CONFIG "\",\n"
                               "    \"digest\": \"" DC "\",\n"
                               "    \"size\": 7023\n"
                               "  },\n"
                               "  \"layers\": [\n"
                               "    {\n"
                               "      \"mediaType\": \"a/b\",\n"
                               "      \"digest\": \"" D1 "\",\n"
                               "      \"size\": 1,\n"
                               "      \"annotations\": {\n"
                               "        \"a\": \"\\u003c\\u0026\\u003e\",\n"
                               "        \"z\": \"1\"\n"
                               "      }\n"
                               "    }\n"
                               "  ],\n"
                               "  \"annotations\": {\n"
                               "    \"a\": \"1\",\n"
                               "    \"b\": \"2\"\n"
                               "  }\n"
                               "}";

        ASSERT_OK(kiln_content_manifest_parse(in, strlen(in), NULL, &m, &err));
        ASSERT_OK(kiln_content_manifest_serialize(m, &a));
        ASSERT_STREQ(a.data, expected);
        /* Again, and after an edit through the API. */
        ASSERT_OK(kiln_content_manifest_serialize(m, &b));
        ASSERT_STREQ(b.data, a.data);
        kiln_content_annotations_set(&m->annotations, "0", "first");
        kiln_content_annotations_set(&m->annotations, "b", "two");
        ASSERT_STREQ(kiln_content_annotations_get(&m->annotations, "b"), "two");
        ASSERT_STREQ(m->annotations.items[0].key, "0");
        ASSERT_TRUE(kiln_content_annotations_get(&m->annotations, "nope") == NULL);
        /* A too-small buffer is an error, not a truncation. */
        {
                struct kiln_buf small = KILN_BUF_INIT(16);

                ASSERT_EQ_INT(kiln_content_manifest_serialize(m, &small), -E2BIG);
                kiln_buf_release(&small);
        }
        return 0;
}

TEST(index_parse_and_errors)
{
        _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(1u << 20);
        const char *list =
                "{\"schemaVersion\":2,\"mediaType\":\"" KILN_CONTENT_MT_DOCKER_MANIFEST_LIST
                "\",\"manifests\":[{\"mediaType\":\"" DOCKER_M "\",\"digest\":\"" D1
                "\",\"size\":1,\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\","
                "\"variant\":\"v7\",\"features\":[\"sse4\"]}},{\"mediaType\":\"text/xml\","
                "\"digest\":\"" D2 "\",\"size\":3}]}";

        ASSERT_OK(kiln_content_index_parse(list, strlen(list), NULL, &idx, &err));
        ASSERT_EQ_INT(idx->media_type, KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST);
        ASSERT_EQ_INT(idx->n_manifests, 2);
        ASSERT_STREQ(idx->manifests[0].platform->variant, "v7");
        ASSERT_OK(kiln_content_index_serialize(idx, &out));
        ASSERT_TRUE(strstr(out.data, "\"manifests\": [") != NULL);
        ASSERT_TRUE(strstr(out.data, "features") == NULL); /* Docker's legacy field dropped */

        CHECK(index_error("{\"schemaVersion\":2}", NULL, -EINVAL,
                          "oci image index: $.manifests: required field is missing"));
        CHECK(index_error("{\"schemaVersion\":2,\"manifests\":[{}]}", NULL, -EINVAL,
                          "$.manifests[0].mediaType: required field is missing"));
        CHECK(index_error("{\"schemaVersion\":2,\"manifests\":[],\"layers\":[]}", NULL, -EINVAL,
                          "$.layers: expected an index, found a manifest field"));
        CHECK(index_error(good_manifest, NULL, -EOPNOTSUPP,
                          "supported: " OCI_I ", " KILN_CONTENT_MT_DOCKER_MANIFEST_LIST));
        CHECK(index_error(
                "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a/b\",\"digest\":\"" D1
                "\",\"size\":1,\"platform\":[]}]}",
                NULL, -EINVAL, "$.manifests[0].platform: expected an object, got an array"));
        CHECK(index_error("{\"schemaVersion\":2,\"manifests\":[]}", DOCKER_M, -EOPNOTSUPP,
                          "parse index: media type '" DOCKER_M "'"));
        return 0;
}

TEST(config_parse_ok)
{
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *c = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(1u << 20);
        const char *json = "{\"created\":\"2015-10-31T22:22:56.015925234Z\",\"architecture\":"
                           "\"arm64\",\"variant\":\"v8\",\"os\":\"linux\",\"config\":{\"User\":"
                           "\"alice\",\"ExposedPorts\":{\"8080/tcp\":{}},\"Env\":[\"A=1\","
                           "\"B=\"],\"Entrypoint\":null,\"Cmd\":[\"sh\"],\"Volumes\":{\"/v\":{}},"
                           "\"WorkingDir\":\"/w\",\"Labels\":{\"l\":\"v\"},\"StopSignal\":"
                           "\"SIGTERM\",\"ArgsEscaped\":true},\"rootfs\":{\"type\":\"layers\","
                           "\"diff_ids\":[\"" D1 "\"]},\"history\":[{\"created\":"
                           "\"2015-10-31T22:22:54+01:00\",\"created_by\":\"x\",\"empty_layer\":"
                           "true}]}";

        ASSERT_OK(kiln_content_config_parse(json, strlen(json), NULL, &c, &err));
        ASSERT_STREQ(c->platform.architecture, "arm64");
        ASSERT_STREQ(c->platform.variant, "v8");
        ASSERT_STREQ(c->user, "alice");
        ASSERT_STREQ(c->env[1], "B=");
        ASSERT_TRUE(c->entrypoint == NULL);
        ASSERT_STREQ(c->cmd[0], "sh");
        ASSERT_STREQ(c->exposed_ports[0], "8080/tcp");
        ASSERT_STREQ(c->volumes[0], "/v");
        ASSERT_STREQ(kiln_content_annotations_get(&c->labels, "l"), "v");
        ASSERT_TRUE(c->args_escaped);
        ASSERT_STREQ(c->diff_ids[0], D1);
        ASSERT_EQ_INT(c->n_history, 1);
        ASSERT_TRUE(c->history[0].empty_layer);
        ASSERT_OK(kiln_content_config_serialize(c, &out));
        ASSERT_STREQ(out.data, json);
        return 0;
}

TEST(config_validation_errors)
{
#define ROOTFS   "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}"
#define OCI_C    KILN_CONTENT_MT_OCI_CONFIG
#define DOCKER_C KILN_CONTENT_MT_DOCKER_CONFIG
        CHECK(config_error("{\"os\":\"linux\"," ROOTFS "}", NULL, -EINVAL,
                           "oci image config: $.architecture: required field is missing"));
        CHECK(config_error("{\"architecture\":\"amd64\"," ROOTFS "}", NULL, -EINVAL,
                           "$.os: required field is missing"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"}", NULL, -EINVAL,
                           "$.rootfs: required field is missing"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
                           "\"layers\"}}",
                           NULL, -EINVAL, "$.rootfs.diff_ids: required field is missing"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
                           "\"tar\",\"diff_ids\":[]}}",
                           NULL, -EINVAL, "$.rootfs.type: expected 'layers', got 'tar'"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
                           "\"layers\",\"diff_ids\":[\"x\"]}}",
                           NULL, -EINVAL, "$.rootfs.diff_ids[0]: invalid digest 'x'"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"created\":\"yesterday\"}",
                           NULL, -EINVAL, "$.created: 'yesterday' is not an RFC 3339 date-time"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"created\":\"2023-02-29T00:00:00Z\"}",
                           NULL, -EINVAL, "is not an RFC 3339 date-time"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"history\":[{\"created\":\"2015-10-31 22:22:54Z\"}]}",
                           NULL, -EINVAL, "$.history[0].created: '2015-10-31 22:22:54Z' is not"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"history\":[{\"empty_layer\":\"yes\"}]}",
                           NULL, -EINVAL, "$.history[0].empty_layer: expected a boolean"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"config\":{\"Env\":[\"NOEQUALS\"]}}",
                           NULL, -EINVAL, "$.config.Env: [0]: 'NOEQUALS' is not KEY=value"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"config\":{\"Env\":[\"=x\"]}}",
                           NULL, -EINVAL, "'=x' is not KEY=value"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"config\":{\"Env\":null}}",
                           NULL, -EINVAL, "$.config.Env: expected an array of strings, got null"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"config\":{\"ExposedPorts\":{\"80/tcp\":1}}}",
                           NULL, -EINVAL, "$.config.ExposedPorts[\"80/tcp\"]: expected an object"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"config\":{\"Labels\":{\"a\":1}}}",
                           NULL, -EINVAL, "$.config.Labels.a: expected a string, got 1"));
        CHECK(config_error("{\"architecture\":\"amd64\",\"os\":\"linux\"," ROOTFS
                           ",\"config\":null}",
                           NULL, -EINVAL, "$.config: expected an object, got null"));
        CHECK(config_error("{\"architecture\":1,\"os\":\"linux\"," ROOTFS "}", OCI_C, -EINVAL,
                           "$.architecture: expected a string, got 1"));
        CHECK(config_error("{}", KILN_CONTENT_MT_OCI_LAYER, -EOPNOTSUPP,
                           "parse config: media type '" KILN_CONTENT_MT_OCI_LAYER
                           "': unknown media type; supported: " OCI_C ", " DOCKER_C));
        return 0;
}

TEST(config_docker_lenient)
{
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *c = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *json =
                "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":null,"
                "\"ExposedPorts\":null,\"User\":\"\",\"Volumes\":{\"/v\":null},"
                "\"Labels\":null,\"OnBuild\":null,\"Healthcheck\":{\"Test\":[\"NONE\"]}},"
                "\"container_config\":{\"Env\":[\"X\"]},\"rootfs\":{\"type\":\"layers\","
                "\"diff_ids\":null},\"history\":null}";

        /* Docker writes nulls; diff_ids stays required. */
        ASSERT_TRUE(kiln_content_config_parse(json, strlen(json), DOCKER_C, &c, &err) < 0);
        CHECK(expect_error("docker", -EINVAL, -EINVAL, err,
                           "docker image config: $.rootfs.diff_ids: required field is missing"));
        {
                _cleanup_(kiln_error_freep) struct kiln_error *e2 = NULL;
                const char *ok = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":"
                                 "[\"NOEQUALS\"],\"Entrypoint\":null},\"rootfs\":{\"type\":"
                                 "\"layers\",\"diff_ids\":[]},\"history\":null}";

                ASSERT_OK(kiln_content_config_parse(ok, strlen(ok), DOCKER_C, &c, &e2));
                ASSERT_EQ_INT(c->media_type, KILN_CONTENT_MEDIA_DOCKER_CONFIG);
                ASSERT_STREQ(c->env[0], "NOEQUALS");
        }
        return 0;
}

TEST(document_dispatch)
{
        _cleanup_(kiln_content_document_freep) struct kiln_content_document *doc = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *idx = "{\"schemaVersion\":2,\"manifests\":[]}";
        const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
        const char *desc = GOOD_LAYER;
        char d[KILN_CONTENT_DIGEST_SIZE];

        ASSERT_OK(kiln_content_document_parse(good_manifest, strlen(good_manifest), NULL, &doc,
                                              &err));
        ASSERT_TRUE(doc->manifest && !doc->index);
        kiln_content_digest_of(good_manifest, strlen(good_manifest), d);
        ASSERT_STREQ(doc->digest, d);
        ASSERT_EQ_INT(doc->size, strlen(good_manifest));
        doc = kiln_content_document_free(doc);

        /* No mediaType: told apart by shape. */
        ASSERT_OK(kiln_content_document_parse(idx, strlen(idx), NULL, &doc, &err));
        ASSERT_TRUE(doc->index && doc->media_type == KILN_CONTENT_MEDIA_OCI_INDEX);
        doc = kiln_content_document_free(doc);

        ASSERT_OK(kiln_content_document_parse(layout, strlen(layout), KILN_CONTENT_MT_OCI_LAYOUT,
                                              &doc, &err));
        ASSERT_STREQ(doc->layout_version, "1.0.0");
        doc = kiln_content_document_free(doc);
        ASSERT_OK(kiln_content_document_parse(desc, strlen(desc), KILN_CONTENT_MT_OCI_DESCRIPTOR,
                                              &doc, &err));
        ASSERT_STREQ(doc->descriptor->digest, D1);
        doc = kiln_content_document_free(doc);

        layout = "{\"imageLayoutVersion\":\"2.0.0\"}";
        ASSERT_EQ_INT(kiln_content_document_parse(layout, strlen(layout),
                                                  KILN_CONTENT_MT_OCI_LAYOUT, &doc, &err),
                      -EINVAL);
        CHECK(expect_error(
                "layout", -EINVAL, -EINVAL, err,
                "oci layout header: $.imageLayoutVersion: expected '1.0.0', got '2.0.0'"));
        ASSERT_EQ_INT(kiln_content_document_parse("{\"a\":1}", 7, NULL, &doc, &err), -EOPNOTSUPP);
        CHECK(expect_error("shape", -EOPNOTSUPP, -EOPNOTSUPP, err, "cannot tell its kind"));
        ASSERT_EQ_INT(kiln_content_document_parse(
                              "{\"mediaType\":\"" KILN_CONTENT_MT_OCI_CONFIG "\"}",
                              strlen("{\"mediaType\":\"" KILN_CONTENT_MT_OCI_CONFIG "\"}"), NULL,
                              &doc, &err),
                      -EOPNOTSUPP);
        CHECK(expect_error("config by mediaType", -EOPNOTSUPP, -EOPNOTSUPP, err,
                           "not a document of this kind; supported: " OCI_M));
        ASSERT_EQ_INT(kiln_content_document_parse("{}", 2, "text/plain", &doc, &err), -EOPNOTSUPP);
        CHECK(expect_error("unknown", -EOPNOTSUPP, -EOPNOTSUPP, err,
                           "parse document: media type 'text/plain': unknown media type; "
                           "supported: " OCI_M));
        return 0;
}

TEST(descriptor_standalone)
{
        _cleanup_(kiln_content_descriptor_freep) struct kiln_content_descriptor *d = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(4096);
        const char *json = "{\n  \"mediaType\": \"application/vnd.oci.empty.v1+json\",\n  "
                           "\"digest\": \"" EMPTY_JSON_DIGEST "\",\n  \"size\": 2,\n  \"urls\": "
                           "[\n    \"https://example.com/x\"\n  ],\n  \"data\": \"e30=\",\n  "
                           "\"platform\": {\n    \"architecture\": \"amd64\",\n    \"os\": "
                           "\"linux\"\n  },\n  \"artifactType\": \"application/x.y\"\n}";

        ASSERT_OK(kiln_content_descriptor_parse(json, strlen(json), &d, &err));
        ASSERT_STREQ(d->data, "e30=");
        ASSERT_STREQ(d->urls[0], "https://example.com/x");
        ASSERT_OK(kiln_content_descriptor_serialize(d, &out));
        ASSERT_STREQ(out.data, json);
        return 0;
}

TEST(media_type_classes)
{
        ASSERT_EQ_INT(kiln_content_media_type_kind(OCI_M), KILN_CONTENT_KIND_MANIFEST);
        ASSERT_EQ_INT(kiln_content_media_type_kind(DOCKER_M), KILN_CONTENT_KIND_MANIFEST);
        ASSERT_EQ_INT(kiln_content_media_type_kind(KILN_CONTENT_MT_DOCKER_MANIFEST_LIST),
                      KILN_CONTENT_KIND_INDEX);
        ASSERT_EQ_INT(kiln_content_media_type_kind(KILN_CONTENT_MT_DOCKER_CONFIG),
                      KILN_CONTENT_KIND_CONFIG);
        ASSERT_EQ_INT(kiln_content_media_type_kind(KILN_CONTENT_MT_OCI_LAYER_ZSTD),
                      KILN_CONTENT_KIND_LAYER);
        ASSERT_EQ_INT(kiln_content_media_type_kind(KILN_CONTENT_MT_IN_TOTO),
                      KILN_CONTENT_KIND_OTHER);
        ASSERT_EQ_INT(kiln_content_media_type_kind(
                              "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
                      KILN_CONTENT_KIND_OTHER);
        ASSERT_EQ_INT(kiln_content_layer_compression(KILN_CONTENT_MT_DOCKER_LAYER),
                      KILN_CONTENT_COMPRESSION_UNKNOWN);
        ASSERT_EQ_INT(kiln_content_layer_compression(KILN_CONTENT_MT_DOCKER_LAYER_GZIP),
                      KILN_CONTENT_COMPRESSION_GZIP);
        ASSERT_EQ_INT(kiln_content_layer_compression(KILN_CONTENT_MT_OCI_LAYER),
                      KILN_CONTENT_COMPRESSION_NONE);
        ASSERT_EQ_INT(kiln_content_layer_compression(OCI_M), _KILN_CONTENT_COMPRESSION_INVALID);
        ASSERT_EQ_INT(kiln_content_media_type_from_string(OCI_I), KILN_CONTENT_MEDIA_OCI_INDEX);
        ASSERT_EQ_INT(kiln_content_media_type_from_string(OCI_I "; charset=utf-8"),
                      _KILN_CONTENT_MEDIA_INVALID);
        ASSERT_STREQ(kiln_content_media_type_to_string(KILN_CONTENT_MEDIA_DOCKER_CONFIG),
                     KILN_CONTENT_MT_DOCKER_CONFIG);
        ASSERT_STREQ(kiln_content_media_type_noun(KILN_CONTENT_MEDIA_OCI_LAYOUT),
                     "oci layout header");
        return 0;
}
