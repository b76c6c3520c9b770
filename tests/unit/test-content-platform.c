/* SPDX-License-Identifier: Apache-2.0 */
#include "base/error.h"
#include "base/macro.h"
#include "content/content.h"
#include "kiln-test.h"

#define DA "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define DB "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define DC "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define DD "sha256:4444444444444444444444444444444444444444444444444444444444444444"
#define DE "sha256:5555555555555555555555555555555555555555555555555555555555555555"
#define DF "sha256:6666666666666666666666666666666666666666666666666666666666666666"

static char *parse_format(const char *spec)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (kiln_content_platform_parse(spec, &p, &err) < 0) {
                printf("# parse '%s': %s\n", spec, kiln_error_message(err));
                return NULL;
        }
        return kiln_content_platform_format(&p);
}

static int expect_parse(const char *spec, const char *formatted)
{
        _cleanup_free_ char *f = parse_format(spec);

        if (!f || !streq(f, formatted)) {
                printf("# parse '%s' gave '%s', expected '%s'\n", spec, f ? f : "(error)",
                       formatted);
                return -1;
        }
        return 0;
}

#define CHECK(x)                   \
        do {                       \
                if ((x) < 0)       \
                        return -1; \
        } while (0)

TEST(platform_parse)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform def = { 0 };
        _cleanup_free_ char *host = NULL, *bare_os = NULL;

        kiln_content_platform_default(&def);
        host = kiln_content_platform_format(&def);
#if defined(__x86_64__)
        ASSERT_STREQ(host, "linux/amd64");
#endif
        CHECK(expect_parse("linux/amd64", "linux/amd64"));
        CHECK(expect_parse("amd64", "linux/amd64"));
        CHECK(expect_parse("x86_64", "linux/amd64"));
        CHECK(expect_parse("linux/x86-64", "linux/amd64"));
        CHECK(expect_parse("Linux/AMD64", "linux/amd64"));
        CHECK(expect_parse("linux/amd64/v1", "linux/amd64"));
        CHECK(expect_parse("linux/amd64/v3", "linux/amd64/v3"));
        CHECK(expect_parse("linux/aarch64", "linux/arm64"));
        CHECK(expect_parse("aarch64", "linux/arm64"));
        /* containerd keeps an explicit arm64 variant, and writes v8 for 8. */
        CHECK(expect_parse("linux/arm64/v8", "linux/arm64/v8"));
        CHECK(expect_parse("linux/arm64/8", "linux/arm64/v8"));
        CHECK(expect_parse("linux/aarch64/v8.0", "linux/arm64/v8"));
        CHECK(expect_parse("linux/arm64/9", "linux/arm64/v9"));
        CHECK(expect_parse("linux/arm64/v8.2", "linux/arm64/v8.2"));
        /* arm means arm/v7, which is written without its variant. */
        CHECK(expect_parse("linux/arm", "linux/arm"));
        CHECK(expect_parse("arm", "linux/arm"));
        CHECK(expect_parse("linux/armhf", "linux/arm"));
        CHECK(expect_parse("linux/arm/7", "linux/arm/v7"));
        CHECK(expect_parse("linux/arm/v6", "linux/arm/v6"));
        CHECK(expect_parse("linux/armel", "linux/arm/v6"));
        CHECK(expect_parse("linux/arm/5", "linux/arm/v5"));
        CHECK(expect_parse("linux/i386", "linux/386"));
        CHECK(expect_parse("macos/arm64", "darwin/arm64"));
        CHECK(expect_parse("linux/s390x", "linux/s390x"));
        CHECK(expect_parse("unknown/unknown", "unknown/unknown"));
        CHECK(expect_parse("windows(10.0.17763)/amd64", "windows(10.0.17763)/amd64"));
        CHECK(expect_parse("windows(10.0.17763+win32k+a)/amd64",
                           "windows(10.0.17763+a+win32k)/amd64"));
        CHECK(expect_parse("linux(+b+a)/amd64", "linux(+a+b)/amd64"));
        CHECK(expect_parse("linux(1%2B2)/amd64", "linux(1%2B2)/amd64"));
        /* A bare OS takes the host's architecture. */
        bare_os = parse_format("linux");
        ASSERT_TRUE(bare_os != NULL);
#if defined(__x86_64__)
        ASSERT_STREQ(bare_os, "linux/amd64");
#endif
        return 0;
}

static int expect_parse_error(const char *spec, const char *needle)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_content_platform_parse(spec, &p, &err);

        if (r != -EINVAL || !strstr(kiln_error_message(err), needle)) {
                printf("# parse '%s': %d %s (expected -EINVAL with \"%s\")\n", spec, r,
                       err ? kiln_error_message(err) : "", needle);
                return -1;
        }
        return 0;
}

TEST(platform_parse_errors)
{
        CHECK(expect_parse_error("", "invalid platform '': '' is not an OS"));
        CHECK(expect_parse_error("linux/*",
                                 "invalid platform 'linux/*': wildcards are not supported"));
        CHECK(expect_parse_error("linux/amd64/v2/x", "too many components"));
        CHECK(expect_parse_error("foo", "invalid platform 'foo': unknown operating system or "
                                        "architecture"));
        CHECK(expect_parse_error("linux/am d64", "bad component 'am d64'"));
        CHECK(expect_parse_error("linux//v7", "bad component ''"));
        CHECK(expect_parse_error("linux/", "bad component ''"));
        CHECK(expect_parse_error("li!nux/amd64", "'li!nux' is not an OS"));
        CHECK(expect_parse_error("linux(/amd64", "is not an OS"));
        CHECK(expect_parse_error("linux(1.0+)/amd64", "is not an OS"));
        CHECK(expect_parse_error("linux(%zz)/amd64", "bad OS version escape"));
        CHECK(expect_parse_error("linux(+%)/amd64", "bad OS feature escape"));
        return 0;
}

static int norm(const char *os, const char *arch, const char *variant, const char *expected)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = {
                .os = os ? kiln_xstrdup(os) : NULL,
                .architecture = kiln_xstrdup(arch),
                .variant = variant ? kiln_xstrdup(variant) : NULL,
        };
        _cleanup_free_ char *f = NULL;

        kiln_content_platform_normalize(&p);
        f = kiln_content_platform_format(&p);
        if (!streq(f, expected)) {
                printf("# normalize %s/%s/%s gave %s, expected %s\n", os, arch, variant, f,
                       expected);
                return -1;
        }
        return 0;
}

TEST(platform_normalize)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 };
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform copy = { 0 };
        static char *features[] = { "b", "a", "b", NULL };

        CHECK(norm("linux", "arm64", "v8", "linux/arm64"));
        CHECK(norm("linux", "aarch64", "8", "linux/arm64"));
        CHECK(norm("linux", "arm64", "9.0", "linux/arm64/v9"));
        CHECK(norm("linux", "arm", NULL, "linux/arm/v7"));
        CHECK(norm("linux", "arm", "6", "linux/arm/v6"));
        CHECK(norm("linux", "amd64", "v1", "linux/amd64"));
        CHECK(norm("linux", "i386", "whatever", "linux/386"));
        CHECK(norm("MacOS", "X86_64", NULL, "darwin/amd64"));
        CHECK(norm(NULL, "amd64", NULL, "linux/amd64"));
        CHECK(norm("linux", "riscv64", "RVA22", "linux/riscv64/rva22"));

        p.os = kiln_xstrdup("windows");
        p.architecture = kiln_xstrdup("amd64");
        p.os_features = (char **) features;
        kiln_content_platform_copy(&copy, &p);
        p.os_features = NULL;
        kiln_content_platform_normalize(&copy);
        ASSERT_STREQ(copy.os_features[0], "a");
        ASSERT_STREQ(copy.os_features[1], "b");
        ASSERT_TRUE(copy.os_features[2] == NULL);
        {
                struct kiln_content_platform none = { 0 };
                _cleanup_free_ char *f = kiln_content_platform_format(&none);

                ASSERT_STREQ(f, "unknown");
        }
        return 0;
}

static int rank(const char *want, const char *have)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform w = { 0 }, h = { 0 };

        if (kiln_content_platform_parse(want, &w, NULL) < 0 ||
            kiln_content_platform_parse(have, &h, NULL) < 0)
                return -100;
        return kiln_content_platform_rank(&w, &h);
}

#define ASSERT_RANK(want, have, expected) ASSERT_EQ_INT(rank(want, have), expected)

TEST(platform_rank)
{
        ASSERT_RANK("linux/amd64", "linux/amd64", 0);
        ASSERT_RANK("linux/amd64", "linux/x86_64", 0);
        ASSERT_RANK("linux/amd64", "linux/386", 1);
        ASSERT_RANK("linux/amd64", "linux/amd64/v2", -1);
        ASSERT_RANK("linux/amd64", "windows/amd64", -1);
        ASSERT_RANK("linux/amd64", "linux/arm64", -1);
        ASSERT_RANK("linux/amd64/v3", "linux/amd64/v3", 0);
        ASSERT_RANK("linux/amd64/v3", "linux/amd64/v2", 1);
        ASSERT_RANK("linux/amd64/v3", "linux/amd64", 2);
        ASSERT_RANK("linux/amd64/v3", "linux/386", 3);

        /* arm/v7 accepts v6, then v5; never v8. */
        ASSERT_RANK("linux/arm/v7", "linux/arm/v7", 0);
        ASSERT_RANK("linux/arm/v7", "linux/arm", 0);
        ASSERT_RANK("linux/arm", "linux/arm/v7", 0);
        ASSERT_RANK("linux/arm/v7", "linux/arm/v6", 1);
        ASSERT_RANK("linux/arm/v7", "linux/arm/v5", 2);
        ASSERT_RANK("linux/arm/v7", "linux/arm/v8", -1);
        ASSERT_RANK("linux/arm/v6", "linux/arm/v7", -1);
        ASSERT_RANK("linux/arm/v6", "linux/arm/v5", 1);
        ASSERT_RANK("linux/arm/v8", "linux/arm/v7", 1);

        /* arm64 (= arm64/v8) runs arm/v8 and below. */
        ASSERT_RANK("linux/arm64", "linux/arm64/v8", 0);
        ASSERT_RANK("linux/arm64/v8", "linux/arm64", 0);
        ASSERT_RANK("linux/arm64", "linux/arm/v8", 1);
        ASSERT_RANK("linux/arm64", "linux/arm/v7", 2);
        ASSERT_RANK("linux/arm64", "linux/arm/v5", 4);
        ASSERT_RANK("linux/arm64", "linux/arm64/v8.2", -1);
        ASSERT_RANK("linux/arm64/v8.2", "linux/arm64/v8.1", 1);
        ASSERT_RANK("linux/arm64/v8.2", "linux/arm64", 2);
        ASSERT_RANK("linux/arm64/v8.2", "linux/arm/v7", 4);
        ASSERT_RANK("linux/arm64/v9", "linux/arm64/v9", 0);
        ASSERT_RANK("linux/arm64/v9", "linux/arm64/v8.5", 1);
        ASSERT_RANK("linux/arm64/v9", "linux/arm64", 6);
        ASSERT_RANK("linux/arm64/v9.1", "linux/arm64/v9", 1);
        ASSERT_RANK("linux/arm64/v9.1", "linux/arm64/v8.6", 2);
        ASSERT_RANK("linux/arm64/v7", "linux/arm64",
                    -1); /* no such arm64: containerd matches nothing */

        /* os.version and os.features only when asked for. */
        ASSERT_RANK("linux/amd64", "linux(5.1)/amd64", 0);
        ASSERT_RANK("linux/amd64", "linux(+f)/amd64", 0);
        ASSERT_RANK("linux(5.1)/amd64", "linux(5.1)/amd64", 0);
        ASSERT_RANK("linux(5.1)/amd64", "linux(5.2)/amd64", -1);
        ASSERT_RANK("linux(5.1)/amd64", "linux/amd64", -1);
        ASSERT_RANK("linux(+a+b)/amd64", "linux(+a)/amd64", 0);
        ASSERT_RANK("linux(+a+b)/amd64", "linux(+b+a)/amd64", 0);
        ASSERT_RANK("linux(+a+b)/amd64", "linux/amd64", 0);
        ASSERT_RANK("linux(+a)/amd64", "linux(+a+b)/amd64", -1);
        ASSERT_RANK("linux(+a)/amd64", "linux(+c)/amd64", -1);
        return 0;
}

/* An index as BuildKit pushes a multi-platform image with attestations. */
static const char *multi =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
        "\"manifests\":["
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DA
        "\",\"size\":1,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DB
        "\",\"size\":1,\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":"
        "\"v8\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DC
        "\",\"size\":1,\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":"
        "\"v6\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DD
        "\",\"size\":1,\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":"
        "\"v7\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DE
        "\",\"size\":1,\"annotations\":{\"vnd.docker.reference.digest\":\"" DA
        "\",\"vnd.docker.reference.type\":\"attestation-manifest\"},\"platform\":{"
        "\"architecture\":\"unknown\",\"os\":\"unknown\"}},"
        "{\"mediaType\":\"application/vnd.example.sbom+json\",\"digest\":\"" DF
        "\",\"size\":1,\"platform\":{\"architecture\":\"s390x\",\"os\":\"linux\"}}"
        "]}";

static const char *select_digest(const struct kiln_content_index *idx, const char *want, int *ret,
                                 struct kiln_error **err)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform w = { 0 };
        const struct kiln_content_descriptor *d = NULL;

        if (want && kiln_content_platform_parse(want, &w, err) < 0) {
                *ret = -100;
                return NULL;
        }
        *ret = kiln_content_index_select(idx, want ? &w : NULL, &d, err);
        return *ret >= 0 ? d->digest : NULL;
}

TEST(index_select)
{
        _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r;

        ASSERT_OK(kiln_content_index_parse(multi, strlen(multi), NULL, &idx, &err));
        ASSERT_STREQ(select_digest(idx, "linux/amd64", &r, &err), DA);
        ASSERT_EQ_INT(r, 0);
        ASSERT_STREQ(select_digest(idx, "amd64", &r, &err), DA);
        ASSERT_STREQ(select_digest(idx, "linux/arm64", &r, &err), DB);
        ASSERT_STREQ(select_digest(idx, "linux/aarch64/v8", &r, &err), DB);
        /* Exact beats compatible even when listed later. */
        ASSERT_STREQ(select_digest(idx, "linux/arm/v7", &r, &err), DD);
        ASSERT_STREQ(select_digest(idx, "linux/arm", &r, &err), DD);
        ASSERT_STREQ(select_digest(idx, "linux/arm/v6", &r, &err), DC);
        ASSERT_STREQ(select_digest(idx, "linux/arm/v8", &r, &err), DD);
        ASSERT_TRUE(select_digest(idx, "linux/386", &r, &err) == NULL);
        ASSERT_EQ_INT(r, -ENOENT);
#if defined(__x86_64__)
        /* No platform asked for: the host's. */
        ASSERT_STREQ(select_digest(idx, NULL, &r, &err), DA);
#endif
        /* The s390x entry is not an image manifest, the attestation is
         * skipped: neither is offered. */
        ASSERT_TRUE(select_digest(idx, "linux/s390x", &r, &err) == NULL);
        ASSERT_EQ_INT(r, -ENOENT);
        ASSERT_STREQ(kiln_error_message(err),
                     "no match for platform linux/s390x in oci image index; available: "
                     "linux/amd64, linux/arm64/v8, linux/arm/v6, linux/arm/v7");
        ASSERT_TRUE(select_digest(idx, "windows/amd64", &r, &err) == NULL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "no match for platform windows/amd64") != NULL);
        return 0;
}

TEST(index_select_fallbacks)
{
        _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *no_v7 =
                "{\"schemaVersion\":2,\"manifests\":["
                "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
                "\"digest\":\"" DA "\",\"size\":1,\"platform\":{\"architecture\":\"arm\",\"os\":"
                "\"linux\",\"variant\":\"v5\"}},"
                "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
                "\"digest\":\"" DB "\",\"size\":1,\"platform\":{\"architecture\":\"arm\",\"os\":"
                "\"linux\",\"variant\":\"v6\"}},"
                "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
                "\"digest\":\"" DC "\",\"size\":1,\"platform\":{\"architecture\":\"arm\",\"os\":"
                "\"linux\",\"variant\":\"v6\"}},"
                "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"" DD
                "\",\"size\":1}]}";
        const char *only_attestations =
                "{\"schemaVersion\":2,\"manifests\":["
                "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DA
                "\",\"size\":1,\"annotations\":{\"vnd.docker.reference.type\":"
                "\"attestation-manifest\"}},"
                "{\"mediaType\":\"application/xml\",\"digest\":\"" DB "\",\"size\":1}]}";
        const char *features =
                "{\"schemaVersion\":2,\"manifests\":["
                "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DA
                "\",\"size\":1,\"platform\":{\"architecture\":\"amd64\",\"os\":\"windows\"}},"
                "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" DB
                "\",\"size\":1,\"platform\":{\"architecture\":\"amd64\",\"os\":\"windows\","
                "\"os.features\":[\"win32k\"]}}]}";
        int r;

        ASSERT_OK(kiln_content_index_parse(no_v7, strlen(no_v7), NULL, &idx, &err));
        /* v7 takes the best older variant, the first of equals. */
        ASSERT_STREQ(select_digest(idx, "linux/arm/v7", &r, &err), DB);
        ASSERT_EQ_INT(r, 0);
        ASSERT_STREQ(select_digest(idx, "linux/arm64", &r, &err), DB);
        ASSERT_STREQ(select_digest(idx, "linux/arm/v5", &r, &err), DA);
        /* Nothing matches: the entry without a platform (a nested index)
         * is left for the caller to look into, as containerd does. */
        ASSERT_STREQ(select_digest(idx, "linux/amd64", &r, &err), DD);
        ASSERT_EQ_INT(r, 1);
        idx = kiln_content_index_free(idx);

        ASSERT_OK(kiln_content_index_parse(only_attestations, strlen(only_attestations), NULL, &idx,
                                           &err));
        ASSERT_TRUE(select_digest(idx, "linux/amd64", &r, &err) == NULL);
        ASSERT_EQ_INT(r, -ENOENT);
        ASSERT_TRUE(strstr(kiln_error_message(err), "it lists no platforms (2 entries skipped") !=
                    NULL);
        idx = kiln_content_index_free(idx);

        ASSERT_OK(kiln_content_index_parse(features, strlen(features), NULL, &idx, &err));
        ASSERT_STREQ(select_digest(idx, "windows/amd64", &r, &err), DA);
        ASSERT_STREQ(select_digest(idx, "windows(+win32k)/amd64", &r, &err), DB);
        return 0;
}
