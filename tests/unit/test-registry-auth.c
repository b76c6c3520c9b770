/* SPDX-License-Identifier: Apache-2.0 */
/*
 * WWW-Authenticate, scopes, token requests and responses. Expected bytes
 * are what containerd's auth package and buildkitd's authorizer produce
 * (Go's url.Values.Encode sorts keys and escapes ':' '/' ',' '@' ' ').
 */
#include <string.h>

#include "base/buf.h"
#include "base/error.h"
#include "kiln-test.h"
#include "registry/auth.h"

static int parse(struct kiln_registry_challenges *c, const char *v)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_registry_challenges_parse(c, v, strlen(v), &err);

        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        return r;
}

#define PARAM(c, i, k) kiln_registry_challenge_param(&(c).items[i], k)

TEST(challenge_bearer_containerd_cases)
{
        struct kiln_registry_challenges c = { 0 };

        ASSERT_OK(parse(&c, "Bearer realm=\"https://auth.docker.io/token\",service=\"registry."
                            "docker.io\",scope=\"repository:foo/bar:pull,push repository:foo/"
                            "baz:pull repository:foo/foo:push\""));
        ASSERT_EQ_INT(c.n, 1);
        ASSERT_EQ_INT(c.items[0].scheme, KILN_REGISTRY_AUTH_BEARER);
        ASSERT_EQ_INT(c.items[0].n_params, 3);
        ASSERT_STREQ(PARAM(c, 0, "realm"), "https://auth.docker.io/token");
        ASSERT_STREQ(PARAM(c, 0, "service"), "registry.docker.io");
        ASSERT_STREQ(
                PARAM(c, 0, "scope"),
                "repository:foo/bar:pull,push repository:foo/baz:pull repository:foo/foo:push");
        kiln_registry_challenges_release(&c);

        ASSERT_OK(parse(&c, "Bearer realm=\"https://auth.example.io/token\",empty=\"\",service="
                            "\"registry.example.io\",scope=\"repository:library/hello-world:"
                            "pull,push\""));
        ASSERT_STREQ(PARAM(c, 0, "empty"), "");
        ASSERT_STREQ(PARAM(c, 0, "service"), "registry.example.io");
        kiln_registry_challenges_release(&c);
        return 0;
}

TEST(challenge_tokens_case_and_escapes)
{
        struct kiln_registry_challenges c = { 0 };

        ASSERT_OK(parse(&c, "BEARER Realm=https://r.example/t , SERVICE = reg ,"
                            "scope=\"a\\\"b\\\\c\"\t"));
        ASSERT_EQ_INT(c.n, 1);
        ASSERT_EQ_INT(c.items[0].scheme, KILN_REGISTRY_AUTH_BEARER);
        /* an unquoted value is a token: ':' and '/' end it, as in containerd */
        ASSERT_STREQ(PARAM(c, 0, "realm"), "https");
        ASSERT_STREQ(PARAM(c, 0, "service"), "reg");
        ASSERT_STREQ(PARAM(c, 0, "scope"), "a\"b\\c");
        kiln_registry_challenges_release(&c);

        ASSERT_OK(parse(&c, "Basic realm=\"Registry Realm\", charset=UTF-8"));
        ASSERT_EQ_INT(c.n, 1);
        ASSERT_EQ_INT(c.items[0].scheme, KILN_REGISTRY_AUTH_BASIC);
        ASSERT_STREQ(PARAM(c, 0, "realm"), "Registry Realm");
        ASSERT_STREQ(PARAM(c, 0, "charset"), "UTF-8");
        /* the last of a repeated key wins (containerd's map) */
        kiln_registry_challenges_release(&c);
        ASSERT_OK(parse(&c, "Bearer realm=\"a\", REALM=\"b\""));
        ASSERT_EQ_INT(c.items[0].n_params, 1);
        ASSERT_STREQ(PARAM(c, 0, "realm"), "b");
        kiln_registry_challenges_release(&c);
        return 0;
}

TEST(challenge_several_sorted_bearer_first)
{
        struct kiln_registry_challenges c = { 0 };

        /* two header lines, then two challenges on one line */
        ASSERT_OK(parse(&c, "Basic realm=\"basic\""));
        ASSERT_OK(parse(&c, "Negotiate abc==, Digest realm=\"d\", nonce=\"n\""));
        ASSERT_OK(parse(&c, "Basic realm=b2, Bearer realm=\"https://t.example/token\""));
        ASSERT_EQ_INT(c.n, 4);
        ASSERT_EQ_INT(c.items[0].scheme, KILN_REGISTRY_AUTH_BEARER);
        ASSERT_EQ_INT(c.items[1].scheme, KILN_REGISTRY_AUTH_DIGEST);
        ASSERT_STREQ(PARAM(c, 1, "nonce"), "n");
        ASSERT_EQ_INT(c.items[2].scheme, KILN_REGISTRY_AUTH_BASIC);
        ASSERT_STREQ(PARAM(c, 2, "realm"), "basic"); /* stable among equals */
        ASSERT_STREQ(PARAM(c, 3, "realm"), "b2");
        ASSERT_TRUE(kiln_registry_challenges_select(&c, false) == &c.items[0]);
        kiln_registry_challenges_release(&c);

        ASSERT_OK(parse(&c, "Basic, Bearer realm=x"));
        ASSERT_EQ_INT(c.n, 2);
        ASSERT_EQ_INT(c.items[0].scheme, KILN_REGISTRY_AUTH_BEARER);
        ASSERT_EQ_INT(c.items[1].n_params, 0);
        kiln_registry_challenges_release(&c);
        return 0;
}

TEST(challenge_select_basic_needs_credentials)
{
        struct kiln_registry_challenges c = { 0 };

        ASSERT_OK(parse(&c, "Digest realm=x, Basic realm=y"));
        ASSERT_TRUE(kiln_registry_challenges_select(&c, false) == NULL);
        ASSERT_TRUE(kiln_registry_challenges_select(&c, true) == &c.items[1]);
        ASSERT_STREQ(kiln_registry_auth_scheme_to_string(c.items[1].scheme), "Basic");
        kiln_registry_challenges_release(&c);
        return 0;
}

TEST(challenge_malformed_never_fails)
{
        static const char *const bad[] = {
                "",
                ",,,",
                "   ",
                "=",
                "realm=x",
                "Bearer realm",
                "Bearer realm=",
                "Bearer realm=\"unterminated",
                "Bearer realm=\"x\\",
                "Bearer =\"x\"",
                "Bearer realm=\"x\" service=\"y\"",
                "Bearer realm=\"x\",,,,service",
                "Bearer \"quoted\"",
                "Bearer realm=x;y, Basic realm=z",
                "Bear\x01r realm=x",
                "Bearer realm=\"\xff\xfe\"",
                "\"Bearer\" realm=x",
                "Bearer/realm=x",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct kiln_registry_challenges c = { 0 };

                ASSERT_OK(parse(&c, bad[i]));
                kiln_registry_challenges_release(&c);
        }
        return 0;
}

TEST(challenge_malformed_keeps_what_it_can)
{
        struct kiln_registry_challenges c = { 0 };

        /* an unterminated quoted string is dropped; what came before stays */
        ASSERT_OK(parse(&c, "Bearer service=s, realm=\"https://x"));
        ASSERT_EQ_INT(c.n, 1);
        ASSERT_STREQ(PARAM(c, 0, "service"), "s");
        ASSERT_TRUE(!PARAM(c, 0, "realm"));
        kiln_registry_challenges_release(&c);

        /* garbage inside one element skips to the next ',' */
        ASSERT_OK(parse(&c, "Bearer realm=x;junk, service=y"));
        ASSERT_STREQ(PARAM(c, 0, "realm"), "x");
        ASSERT_STREQ(PARAM(c, 0, "service"), "y");
        kiln_registry_challenges_release(&c);

        /* a NUL ends the value */
        ASSERT_OK(kiln_registry_challenges_parse(&c, "Bearer realm=a\0, service=b", 26, NULL));
        ASSERT_STREQ(PARAM(c, 0, "realm"), "a");
        ASSERT_TRUE(!PARAM(c, 0, "service"));
        kiln_registry_challenges_release(&c);

        /* unknown schemes are skipped with their parameters */
        ASSERT_OK(parse(&c, "Mutual x=1, y=2, Bearer realm=r"));
        ASSERT_EQ_INT(c.n, 1);
        ASSERT_EQ_INT(c.items[0].n_params, 1);
        kiln_registry_challenges_release(&c);
        return 0;
}

TEST(challenge_limits)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_registry_challenges c = { 0 };
        _cleanup_free_ char *huge = kiln_xmalloc((16u << 10) + 2);
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);

        memset(huge, 'a', (16u << 10) + 1);
        huge[(16u << 10) + 1] = 0;
        ASSERT_EQ_INT(kiln_registry_challenges_parse(&c, huge, strlen(huge), &err), -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "longer than 16384 bytes"));

        for (int i = 0; i < 17; i++)
                (void) kiln_buf_printf(&b, "Basic realm=%d, ", i);
        ASSERT_EQ_INT(kiln_registry_challenges_parse(&c, b.data, b.len, &err), -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "more than 16"));
        kiln_registry_challenges_release(&c);

        kiln_buf_reset(&b);
        (void) kiln_buf_puts(&b, "Bearer ");
        for (int i = 0; i < 33; i++)
                (void) kiln_buf_printf(&b, "k%d=v, ", i);
        ASSERT_EQ_INT(kiln_registry_challenges_parse(&c, b.data, b.len, &err), -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "more than 32 parameters"));
        kiln_registry_challenges_release(&c);
        kiln_buf_release(&b);
        return 0;
}

/* ---- scopes ---- */

static char *merge(char *const *a, size_t na, char *const *b, size_t nb)
{
        char **out = NULL;
        int n = kiln_registry_scopes_merge(a, na, b, nb, &out);
        char *s;

        if (n < 0)
                return NULL;
        s = kiln_registry_scopes_join(out, (size_t) n);
        kiln_registry_strv_free(out);
        return s;
}

TEST(scopes_repository_and_merge)
{
        _cleanup_free_ char *pull = kiln_registry_scope_repository("library/alpine", false);
        _cleanup_free_ char *push = kiln_registry_scope_repository("library/alpine", true);
        _cleanup_free_ char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL, *m5 = NULL;
        char *separate[] = { "repository:foo/baz:pull,push", "repository:foo/bar:pull" };
        char *combined[] = { "repository:foo/bar:pull repository:foo/baz:pull,push" };
        char *req[] = { "repository:foo/bar:push" };
        char *odd[] = { "", "registry:catalog:*", "foo", "repository:foo/bar:push,pull,push" };

        ASSERT_STREQ(pull, "repository:library/alpine:pull");
        ASSERT_STREQ(push, "repository:library/alpine:pull,push");
        m1 = merge(separate, 2, NULL, 0);
        ASSERT_STREQ(m1, "repository:foo/bar:pull repository:foo/baz:pull,push");
        m2 = merge(combined, 1, NULL, 0);
        ASSERT_STREQ(m2, m1);
        /* the request's scope merges into the challenge's resource */
        m3 = merge(combined, 1, req, 1);
        ASSERT_STREQ(m3, "repository:foo/bar:pull,push repository:foo/baz:pull,push");
        m4 = merge(odd, 4, NULL, 0);
        ASSERT_STREQ(m4, "foo: registry:catalog:* repository:foo/bar:pull,push");
        m5 = merge(NULL, 0, NULL, 0);
        ASSERT_STREQ(m5, "");
        return 0;
}

TEST(scopes_limit)
{
        char *many[65];
        char **out = NULL;

        for (int i = 0; i < 65; i++)
                many[i] = kiln_xasprintf("repository:r%d:pull", i);
        ASSERT_EQ_INT(kiln_registry_scopes_merge(many, 65, NULL, 0, &out), -E2BIG);
        for (int i = 0; i < 65; i++)
                free(many[i]);
        return 0;
}

/* ---- token requests ---- */

static int options(struct kiln_registry_token_options *o, const char *header, char *const *extra,
                   size_t n_extra, const char *user, const char *secret)
{
        struct kiln_registry_challenges c = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r;

        if (parse(&c, header) < 0 || c.n == 0)
                return -1;
        r = kiln_registry_token_options_init(o, &c.items[0], extra, n_extra, user, secret, &err);
        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        kiln_registry_challenges_release(&c);
        return r;
}

TEST(token_get_url_as_containerd)
{
        struct kiln_registry_token_options o = { 0 };
        _cleanup_free_ char *u1 = NULL, *u2 = NULL, *u3 = NULL;
        char *req[] = { "repository:library/alpine:pull" };

        ASSERT_OK(options(&o,
                          "Bearer realm=\"https://auth.docker.io/token\",service=\"registry."
                          "docker.io\",scope=\"repository:library/alpine:pull\"",
                          req, 1, NULL, NULL));
        ASSERT_EQ_INT(o.n_scopes, 1);
        u1 = kiln_registry_token_get_url(&o);
        ASSERT_STREQ(u1, "https://auth.docker.io/token?scope=repository%3Alibrary%2Falpine%3Apull&"
                         "service=registry.docker.io");
        ASSERT_TRUE(!kiln_registry_token_should_post(&o, 404)); /* anonymous: GET only */
        kiln_registry_token_options_release(&o);

        /* the realm's own query is kept and re-encoded, sorted; one scope= each */
        ASSERT_OK(options(&o,
                          "Bearer realm=\"https://t.example/token?z=1&a=b%20c#frag\",service="
                          "\"svc\",scope=\"repository:x/y:pull repository:a/b:push\"",
                          NULL, 0, "u", "p"));
        o.fetch_refresh_token = true;
        u2 = kiln_registry_token_get_url(&o);
        ASSERT_STREQ(u2, "https://t.example/token?a=b+c&offline_token=true&scope=repository%3Aa%"
                         "2Fb%3Apush&scope=repository%3Ax%2Fy%3Apull&service=svc&z=1");
        kiln_registry_token_options_release(&o);

        /* no service, no scope: the bare realm */
        ASSERT_OK(options(&o, "Bearer realm=\"http://127.0.0.1:5001/auth\"", NULL, 0, NULL, NULL));
        u3 = kiln_registry_token_get_url(&o);
        ASSERT_STREQ(u3, "http://127.0.0.1:5001/auth");
        kiln_registry_token_options_release(&o);
        return 0;
}

TEST(token_post_body_as_containerd)
{
        struct kiln_registry_token_options o = { 0 };
        _cleanup_free_ char *b1 = NULL, *b2 = NULL;
        char *req[] = { "repository:foo:pull" };

        ASSERT_OK(options(&o, "Bearer realm=\"https://t.example/token\",service=\"reg\"", req, 1,
                          "u", "p@ss word"));
        b1 = kiln_registry_token_post_body(&o, KILN_REGISTRY_OAUTH_CLIENT_ID);
        ASSERT_STREQ(b1, "client_id=buildkit-client&grant_type=password&password=p%40ss+word&"
                         "scope=repository%3Afoo%3Apull&service=reg&username=u");
        ASSERT_TRUE(kiln_registry_token_should_post(&o, 404));
        ASSERT_TRUE(kiln_registry_token_should_post(&o, 401));
        ASSERT_TRUE(kiln_registry_token_should_post(&o, 405));
        ASSERT_TRUE(!kiln_registry_token_should_post(&o, 403));
        ASSERT_TRUE(!kiln_registry_token_should_post(&o, 500));
        kiln_registry_token_options_release(&o);

        /* an identity token (no username): the refresh_token grant */
        ASSERT_OK(options(&o, "Bearer realm=\"https://t.example/token\"", NULL, 0, NULL, "idtok"));
        o.fetch_refresh_token = true;
        b2 = kiln_registry_token_post_body(&o, KILN_REGISTRY_OAUTH_CLIENT_ID);
        ASSERT_STREQ(b2, "access_type=offline&client_id=buildkit-client&grant_type=refresh_token&"
                         "refresh_token=idtok&service=");
        ASSERT_TRUE(!kiln_registry_token_should_post(&o, 405)); /* 405 needs a username */
        ASSERT_TRUE(kiln_registry_token_should_post(&o, 401));
        kiln_registry_token_options_release(&o);
        return 0;
}

TEST(token_options_errors)
{
        struct kiln_registry_token_options o = { 0 };
        struct kiln_registry_challenges c = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(parse(&c, "Bearer service=x"));
        ASSERT_EQ_INT(
                kiln_registry_token_options_init(&o, &c.items[0], NULL, 0, "u", "secret!", &err),
                -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "no realm specified for token auth challenge");
        kiln_registry_challenges_release(&c);

        ASSERT_OK(parse(&c, "Bearer realm=\"file:///etc/passwd?token=abc\""));
        ASSERT_EQ_INT(
                kiln_registry_token_options_init(&o, &c.items[0], NULL, 0, "u", "secret!", &err),
                -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "invalid token auth challenge realm"));
        ASSERT_TRUE(strstr(kiln_error_message(err), "token=REDACTED"));
        ASSERT_TRUE(!strstr(kiln_error_message(err), "abc"));
        ASSERT_TRUE(!strstr(kiln_error_message(err), "secret!"));
        kiln_registry_challenges_release(&c);
        return 0;
}

TEST(basic_auth_header)
{
        _cleanup_free_ char *h = kiln_registry_basic_auth("user", "pass");
        _cleanup_free_ char *h2 = kiln_registry_basic_auth("", "tok");

        ASSERT_STREQ(h, "Basic dXNlcjpwYXNz");
        ASSERT_STREQ(h2, "Basic OnRvaw==");
        return 0;
}

/* ---- token responses ---- */

static int response(const char *body, enum kiln_registry_token_kind kind,
                    struct kiln_registry_token *t, char **ret_msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_registry_token_response_parse(body, strlen(body), kind, t, &err);

        if (ret_msg)
                *ret_msg = r < 0 ? kiln_xstrdup(kiln_error_message(err)) : NULL;
        return r;
}

TEST(token_response_get)
{
        struct kiln_registry_token t = { 0 };

        ASSERT_OK(response("{\"token\":\"abc\",\"expires_in\":300,\"issued_at\":"
                           "\"2020-01-02T03:04:05Z\"}",
                           KILN_REGISTRY_TOKEN_GET, &t, NULL));
        ASSERT_STREQ(t.token, "abc");
        ASSERT_EQ_INT(t.expires_in, 300);
        ASSERT_EQ_INT(t.issued_at, 1577934245);
        ASSERT_EQ_INT(kiln_registry_token_expiry(&t, 99), 1577934245 + 270);
        kiln_registry_token_release(&t);

        /* access_token wins; expires_in defaults to 60; fractions and offsets */
        ASSERT_OK(response("{\"token\":\"a\",\"access_token\":\"b\",\"issued_at\":"
                           "\"2020-01-02T03:04:05.123456+01:30\",\"refresh_token\":\"r\"}",
                           KILN_REGISTRY_TOKEN_GET, &t, NULL));
        ASSERT_STREQ(t.token, "b");
        ASSERT_STREQ(t.refresh_token, "r");
        ASSERT_EQ_INT(t.expires_in, 60);
        ASSERT_EQ_INT(t.issued_at, 1577934245 - 5400);
        kiln_registry_token_release(&t);

        /* keys case-insensitively, unknown ones and trailing data ignored, nulls allowed */
        ASSERT_OK(response("{\"Token\":\"x\",\"EXPIRES_IN\":1,\"issued_at\":null,\"other\":[1]}"
                           " trailing",
                           KILN_REGISTRY_TOKEN_GET, &t, NULL));
        ASSERT_STREQ(t.token, "x");
        ASSERT_EQ_INT(t.expires_in, 1);
        ASSERT_EQ_INT(t.issued_at, 0);
        ASSERT_EQ_INT(kiln_registry_token_expiry(&t, 1000), 1000); /* 0.9 s truncates to 0 */
        kiln_registry_token_release(&t);

        ASSERT_OK(
                response("{\"token\":\"x\",\"expires_in\":60}", KILN_REGISTRY_TOKEN_GET, &t, NULL));
        ASSERT_EQ_INT(kiln_registry_token_expiry(&t, 1000), 1054);
        kiln_registry_token_release(&t);
        return 0;
}

TEST(token_response_oauth_and_errors)
{
        struct kiln_registry_token t = { 0 };
        static const struct {
                const char *body;
                enum kiln_registry_token_kind kind;
                const char *needle;
        } bad[] = {
                { "{\"token\":\"only-get\"}", KILN_REGISTRY_TOKEN_OAUTH,
                  "did not include a token" },
                { "{}", KILN_REGISTRY_TOKEN_GET, "did not include a token" },
                { "{\"token\":\"\"}", KILN_REGISTRY_TOKEN_GET, "did not include a token" },
                { "null", KILN_REGISTRY_TOKEN_GET, "did not include a token" },
                { "[\"secret-token\"]", KILN_REGISTRY_TOKEN_GET, "not a JSON object" },
                { "{\"token\":\"secret-token\",\"expires_in\":1.5}", KILN_REGISTRY_TOKEN_GET,
                  "expires_in is not an integer" },
                { "{\"token\":\"secret-token\",\"expires_in\":\"60\"}", KILN_REGISTRY_TOKEN_GET,
                  "expires_in is not an integer" },
                { "{\"token\":7}", KILN_REGISTRY_TOKEN_GET, "token is not a string" },
                { "{\"token\":\"secret-token\",\"issued_at\":\"yesterday\"}",
                  KILN_REGISTRY_TOKEN_GET, "issued_at is not an RFC 3339 time" },
                { "{\"token\":\"secret-token\",\"issued_at\":\"2021-02-29T00:00:00Z\"}",
                  KILN_REGISTRY_TOKEN_GET, "issued_at" },
                { "{\"token\":\"secret-token\"", KILN_REGISTRY_TOKEN_GET,
                  "invalid JSON at line 1" },
                { "secret-token", KILN_REGISTRY_TOKEN_GET, "invalid JSON" },
        };

        ASSERT_OK(response("{\"access_token\":\"o\",\"expires_in\":3600}",
                           KILN_REGISTRY_TOKEN_OAUTH, &t, NULL));
        ASSERT_STREQ(t.token, "o");
        kiln_registry_token_release(&t);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *msg = NULL;

                if (response(bad[i].body, bad[i].kind, &t, &msg) >= 0)
                        KILN_TEST_FAIL("'%s' accepted", bad[i].body);
                if (!strstr(msg, bad[i].needle))
                        KILN_TEST_FAIL("'%s': \"%s\" lacks \"%s\"", bad[i].body, msg,
                                       bad[i].needle);
                if (strstr(msg, "secret-token"))
                        KILN_TEST_FAIL("'%s': the error quotes the body: %s", bad[i].body, msg);
        }
        return 0;
}
