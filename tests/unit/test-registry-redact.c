/* SPDX-License-Identifier: Apache-2.0 */
/* What registry debug logs may show of URLs and headers. */
#include <string.h>

#include "base/macro.h"
#include "kiln-test.h"
#include "registry/redact.h"

static int sanitized(const char *in, const char *want)
{
        _cleanup_free_ char *got = kiln_registry_url_sanitize(in);

        if (!streq(got, want))
                KILN_TEST_FAIL("'%s' -> '%s', expected '%s'", in, got, want);
        return 0;
}

TEST(url_sanitize_like_containerd)
{
        /* no query: unchanged */
        ASSERT_OK(sanitized("https://registry-1.docker.io/v2/library/alpine/manifests/3.20",
                            "https://registry-1.docker.io/v2/library/alpine/manifests/3.20"));
        /* ns= is kept (and re-escaped as Go does) */
        ASSERT_OK(sanitized("https://m.example/v2/library/alpine/manifests/3.20?ns=docker.io",
                            "https://m.example/v2/library/alpine/manifests/3.20?ns=docker.io"));
        ASSERT_OK(sanitized("https://m.example/v2/a/blobs/sha256:x?ns=localhost:5000",
                            "https://m.example/v2/a/blobs/sha256:x?ns=localhost%3A5000"));
        /* every other value is REDACTED, keys sorted, empty values kept */
        ASSERT_OK(sanitized("https://s3.example/blob?X-Amz-Signature=abc&X-Amz-Credential=k%2Fs&"
                            "empty=&ns=docker.io",
                            "https://s3.example/blob?X-Amz-Credential=REDACTED&X-Amz-Signature="
                            "REDACTED&empty=&ns=docker.io"));
        ASSERT_OK(sanitized(
                "https://r.example/v2/x/blobs/uploads/u?_state=secretstate&digest="
                "sha256:1",
                "https://r.example/v2/x/blobs/uploads/u?_state=REDACTED&digest=REDACTED"));
        ASSERT_OK(sanitized(
                "https://t.example/token?scope=repository%3Aa%3Apull&scope=b&service=x",
                "https://t.example/token?scope=REDACTED&scope=REDACTED&service=REDACTED"));
        /* a key alone is an empty value */
        ASSERT_OK(sanitized("https://a/b?flag", "https://a/b?flag="));
        return 0;
}

TEST(url_sanitize_userinfo_fragment_and_junk)
{
        ASSERT_OK(sanitized("https://user:pass@r.example/v2/", "https://REDACTED@r.example/v2/"));
        ASSERT_OK(sanitized("https://token@r.example", "https://REDACTED@r.example"));
        ASSERT_OK(sanitized("https://r.example/cb#access_token=abc",
                            "https://r.example/cb#REDACTED"));
        ASSERT_OK(sanitized("https://r.example/p?", "https://r.example/p"));
        /* pairs Go's ParseQuery skips (';', bad escapes) are dropped */
        ASSERT_OK(sanitized("https://r.example/p?a=1;b=2&c=%zz&ok=1",
                            "https://r.example/p?ok=REDACTED"));
        ASSERT_OK(sanitized("https://r.example/p?%zz=1", "https://r.example/p"));
        /* not a URL at all: the query is still redacted */
        ASSERT_OK(sanitized("/v2/x?token=abc", "/v2/x?token=REDACTED"));
        ASSERT_OK(sanitized("", ""));
        ASSERT_OK(sanitized("?=x", "?=REDACTED"));
        return 0;
}

TEST(header_policy)
{
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Authorization", true),
                      KILN_REGISTRY_HEADER_LOG_OMIT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("proxy-authorization", true),
                      KILN_REGISTRY_HEADER_LOG_OMIT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Cookie", true),
                      KILN_REGISTRY_HEADER_LOG_REDACT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("X-Auth-Token", true),
                      KILN_REGISTRY_HEADER_LOG_REDACT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("User-Agent", true),
                      KILN_REGISTRY_HEADER_LOG_KEEP);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Accept", true),
                      KILN_REGISTRY_HEADER_LOG_KEEP);

        ASSERT_EQ_INT(kiln_registry_header_log_policy("Set-Cookie", false),
                      KILN_REGISTRY_HEADER_LOG_REDACT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("x-amz-security-token", false),
                      KILN_REGISTRY_HEADER_LOG_REDACT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Authentication-Info", false),
                      KILN_REGISTRY_HEADER_LOG_REDACT);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Location", false),
                      KILN_REGISTRY_HEADER_LOG_URL);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("WWW-Authenticate", false),
                      KILN_REGISTRY_HEADER_LOG_KEEP);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Docker-Content-Digest", false),
                      KILN_REGISTRY_HEADER_LOG_KEEP);
        ASSERT_EQ_INT(kiln_registry_header_log_policy("Content-Type", false),
                      KILN_REGISTRY_HEADER_LOG_KEEP);
        return 0;
}

TEST(header_log_value)
{
        _cleanup_free_ char *loc = kiln_registry_header_log_value(
                "location", "https://blob.example/x?sig=abc&ns=docker.io", false);
        _cleanup_free_ char *cookie = kiln_registry_header_log_value("set-cookie", "s=1", false);
        _cleanup_free_ char *ua = kiln_registry_header_log_value("user-agent", "kiln/0.1", true);

        ASSERT_STREQ(loc, "https://blob.example/x?ns=docker.io&sig=REDACTED");
        ASSERT_STREQ(cookie, "REDACTED");
        ASSERT_STREQ(ua, "kiln/0.1");
        ASSERT_TRUE(!kiln_registry_header_log_value("Authorization", "Bearer x", true));
        return 0;
}
