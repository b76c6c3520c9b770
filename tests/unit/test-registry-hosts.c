/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host lists as buildkitd's resolver.NewRegistryConfig builds them, and the
 * request URLs containerd makes from them.
 */
#include <fcntl.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "config/config.h"
#include "kiln-test.h"
#include "registry/hosts.h"

static struct kiln_config *load(const char *toml)
{
        struct kiln_config *c = kiln_config_new();
        struct kiln_config_diags d = { 0 };

        if (kiln_config_load_string(c, "t.toml", toml, strlen(toml), &d) < 0) {
                kiln_config_diags_print(&d, stdout);
                c = kiln_config_free(c);
        }
        kiln_config_diags_release(&d);
        return c;
}

static struct kiln_registry_hosts *build(const struct kiln_config *c, const char *host)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_registry_hosts *h = NULL;

        if (kiln_registry_hosts_build(c, host, &h, &err) < 0)
                printf("# %s\n", kiln_error_message(err));
        return h;
}

static char *url(const struct kiln_registry_host *h, const char *ref, const char *kind,
                 const char *object)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *r = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (kiln_content_ref_parse(ref, &r, &err) < 0)
                return NULL;
        return kiln_registry_host_url(h, r, kind, object ? object : kiln_content_ref_object(r));
}

#define ALL_CAPS                                                                       \
        (KILN_REGISTRY_CAP_PULL | KILN_REGISTRY_CAP_RESOLVE | KILN_REGISTRY_CAP_PUSH | \
         KILN_REGISTRY_CAP_REFERRERS)
#define ORIGIN_CAPS (KILN_REGISTRY_CAP_PULL | KILN_REGISTRY_CAP_RESOLVE | KILN_REGISTRY_CAP_PUSH)
#define MIRROR_CAPS (KILN_REGISTRY_CAP_PULL | KILN_REGISTRY_CAP_RESOLVE)

TEST(hosts_no_section)
{
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h =
                build(NULL, "docker.io");
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *q = NULL;
        _cleanup_free_ char *u = NULL;

        ASSERT_TRUE(h);
        ASSERT_EQ_INT(h->n, 1);
        ASSERT_STREQ(h->items[0].scheme, "https");
        ASSERT_STREQ(h->items[0].host, "registry-1.docker.io");
        ASSERT_STREQ(h->items[0].path_prefix, "/v2");
        ASSERT_EQ_INT(h->items[0].caps, ALL_CAPS);
        ASSERT_TRUE(!h->items[0].is_mirror && !h->items[0].http_fallback);
        ASSERT_EQ_INT(h->items[0].tls.n_ca_files, 0);
        u = url(&h->items[0], "alpine:3.20", "manifests", NULL);
        ASSERT_STREQ(u, "https://registry-1.docker.io/v2/library/alpine/manifests/3.20");

        q = build(NULL, "quay.io");
        ASSERT_TRUE(q && q->n == 1);
        ASSERT_STREQ(q->items[0].host, "quay.io");
        ASSERT_STREQ(q->items[0].scheme, "https");
        return 0;
}

TEST(hosts_loopback_is_plain_http)
{
        static const struct {
                const char *host;
                const char *scheme;
        } cases[] = {
                { "localhost", "http" },          { "localhost:5000", "http" },
                { "127.0.0.1:5000", "http" },     { "127.1.2.3", "http" },
                { "[::1]:5000", "http" },         { "[::1]", "http" },
                { "example.com", "https" },       { "10.0.0.1:5000", "https" },
                { "localhost.example", "https" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h =
                        build(NULL, cases[i].host);

                ASSERT_TRUE(h && h->n == 1);
                if (!streq(h->items[0].scheme, cases[i].scheme))
                        KILN_TEST_FAIL("%s: %s", cases[i].host, h->items[0].scheme);
        }
        ASSERT_TRUE(kiln_registry_host_is_loopback("::1"));
        ASSERT_TRUE(kiln_registry_host_is_loopback("[::ffff:127.0.0.1]:80"));
        ASSERT_TRUE(!kiln_registry_host_is_loopback("localhost:"));
        ASSERT_TRUE(!kiln_registry_host_is_loopback("::2"));
        ASSERT_TRUE(!kiln_registry_host_is_loopback("127.0.0.01")); /* Go refuses leading zeros */
        ASSERT_TRUE(!kiln_registry_host_is_loopback("[::1"));
        ASSERT_TRUE(!kiln_registry_host_is_loopback("fe80::1"));
        return 0;
}

TEST(hosts_mirrors_with_paths_and_schemes)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c =
                load("[registry.\"docker.io\"]\n"
                     "mirrors = [\"https://m.example/p/\", \"mirror.gcr.io\", "
                     "\"core.harbor.domain/proxy.docker.io\", "
                     "\"http://user:pw@m2.example:5000//a//b/?x=1\"]\n");
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h = NULL;
        _cleanup_free_ char *u0 = NULL, *u1 = NULL, *u2 = NULL, *u4 = NULL, *b = NULL, *up = NULL;

        ASSERT_TRUE(c);
        h = build(c, "docker.io");
        ASSERT_TRUE(h);
        ASSERT_EQ_INT(h->n, 5);
        ASSERT_STREQ(h->items[0].host, "m.example");
        ASSERT_STREQ(h->items[0].path_prefix, "/v2/p");
        ASSERT_STREQ(h->items[0].scheme, "https");
        ASSERT_STREQ(h->items[1].host, "mirror.gcr.io");
        ASSERT_STREQ(h->items[1].path_prefix, "/v2");
        ASSERT_STREQ(h->items[2].host, "core.harbor.domain");
        ASSERT_STREQ(h->items[2].path_prefix, "/v2/proxy.docker.io");
        /* the scheme (http) is dropped, as buildkitd drops it; user info too */
        ASSERT_STREQ(h->items[3].scheme, "https");
        ASSERT_STREQ(h->items[3].host, "m2.example:5000");
        ASSERT_STREQ(h->items[3].path_prefix, "/v2/a/b");
        for (size_t i = 0; i < 4; i++) {
                ASSERT_TRUE(h->items[i].is_mirror);
                ASSERT_EQ_INT(h->items[i].caps, MIRROR_CAPS);
        }
        ASSERT_STREQ(h->items[4].host, "registry-1.docker.io");
        ASSERT_STREQ(h->items[4].path_prefix, "/v2");
        ASSERT_EQ_INT(h->items[4].caps, ORIGIN_CAPS);
        ASSERT_TRUE(!h->items[4].is_mirror);

        u0 = url(&h->items[0], "alpine:3.20", "manifests", NULL);
        ASSERT_STREQ(u0, "https://m.example/v2/p/library/alpine/manifests/3.20?ns=docker.io");
        u1 = url(&h->items[1], "alpine", "manifests", NULL);
        ASSERT_STREQ(u1, "https://mirror.gcr.io/v2/library/alpine/manifests/latest?ns=docker.io");
        u2 = url(&h->items[2], "alpine:3.20", "manifests", NULL);
        ASSERT_STREQ(u2, "https://core.harbor.domain/v2/proxy.docker.io/library/alpine/manifests/"
                         "3.20?ns=docker.io");
        u4 = url(&h->items[4], "alpine:3.20", "manifests", NULL);
        ASSERT_STREQ(u4, "https://registry-1.docker.io/v2/library/alpine/manifests/3.20");
        b = url(&h->items[0], "alpine", "blobs", "sha256:abc");
        ASSERT_STREQ(b, "https://m.example/v2/p/library/alpine/blobs/sha256:abc?ns=docker.io");
        {
                _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *r = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_OK(kiln_content_ref_parse("user/app", &r, &err));
                up = kiln_registry_host_url(&h->items[4], r, "blobs/uploads/", NULL);
                ASSERT_STREQ(up, "https://registry-1.docker.io/v2/user/app/blobs/uploads/");
        }
        ASSERT_TRUE(kiln_registry_hosts_push_host(h) == &h->items[4]);
        return 0;
}

TEST(hosts_ns_query_is_escaped_and_only_for_proxies)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c =
                load("[registry.\"localhost:5000\"]\nmirrors = [\"m.example\"]\n");
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h = NULL;
        _cleanup_free_ char *u0 = NULL, *u1 = NULL;

        ASSERT_TRUE(c);
        h = build(c, "localhost:5000");
        ASSERT_TRUE(h && h->n == 2);
        u0 = url(&h->items[0], "localhost:5000/a/b:t", "manifests", NULL);
        ASSERT_STREQ(u0, "https://m.example/v2/a/b/manifests/t?ns=localhost%3A5000");
        u1 = url(&h->items[1], "localhost:5000/a/b:t", "manifests", NULL);
        ASSERT_STREQ(u1, "http://localhost:5000/v2/a/b/manifests/t");
        ASSERT_TRUE(!kiln_registry_host_is_proxy(&h->items[1], "localhost:5000"));
        ASSERT_TRUE(kiln_registry_host_is_proxy(&h->items[0], "localhost:5000"));
        return 0;
}

TEST(hosts_mirror_settings_come_from_its_own_section)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c =
                load("[registry.\"docker.io\"]\n"
                     "mirrors = [\"m.example:5000\", \"other.example\", \"127.0.0.1:5001/x\"]\n"
                     "insecure = true\n"
                     "http = true\n"
                     "[registry.\"m.example:5000\"]\n"
                     "http = true\n"
                     "mirrors = [\"ignored.example\"]\n");
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h = NULL;

        ASSERT_TRUE(c);
        h = build(c, "docker.io");
        ASSERT_TRUE(h && h->n == 4);
        /* own section: http */
        ASSERT_STREQ(h->items[0].scheme, "http");
        ASSERT_TRUE(!h->items[0].tls.insecure_skip_verify && !h->items[0].http_fallback);
        /* no section: defaults, NOT the parent's insecure/http */
        ASSERT_STREQ(h->items[1].scheme, "https");
        ASSERT_TRUE(!h->items[1].tls.insecure_skip_verify && !h->items[1].http_fallback);
        /* no section, loopback: plain http */
        ASSERT_STREQ(h->items[2].scheme, "http");
        ASSERT_STREQ(h->items[2].path_prefix, "/v2/x");
        /* the parent's settings are the origin's: https first, http fallback */
        ASSERT_STREQ(h->items[3].host, "registry-1.docker.io");
        ASSERT_STREQ(h->items[3].scheme, "https");
        ASSERT_TRUE(h->items[3].tls.insecure_skip_verify && h->items[3].http_fallback);
        return 0;
}

static int matrix_case(const char *host, const char *settings, const char *scheme, bool skip,
                       bool fallback)
{
        _cleanup_free_ char *toml = kiln_xasprintf("[registry.\"%s\"]\n%s\n", host, settings);
        _cleanup_(kiln_config_freep) struct kiln_config *c = load(toml);
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h = NULL;

        ASSERT_TRUE(c);
        h = build(c, host);
        ASSERT_TRUE(h && h->n == 1);
        if (!streq(h->items[0].scheme, scheme) || h->items[0].tls.insecure_skip_verify != skip ||
            h->items[0].http_fallback != fallback)
                KILN_TEST_FAIL("%s {%s}: %s skip=%d fallback=%d", host, settings,
                               h->items[0].scheme, h->items[0].tls.insecure_skip_verify,
                               h->items[0].http_fallback);
        ASSERT_EQ_INT(h->items[0].caps, ORIGIN_CAPS); /* a section: no referrers capability */
        return 0;
}

TEST(hosts_http_insecure_matrix)
{
        ASSERT_OK(matrix_case("r.example", "http = true", "http", false, false));
        ASSERT_OK(matrix_case("r.example", "http = true\ninsecure = false", "http", false, false));
        ASSERT_OK(matrix_case("r.example", "", "https", false, false));
        ASSERT_OK(
                matrix_case("r.example", "http = false\ninsecure = false", "https", false, false));
        ASSERT_OK(matrix_case("r.example", "insecure = true", "https", true, false));
        ASSERT_OK(matrix_case("r.example", "http = false\ninsecure = true", "https", true, false));
        ASSERT_OK(matrix_case("r.example", "http = true\ninsecure = true", "https", true, true));
        ASSERT_OK(matrix_case("localhost:5000", "", "http", false, false));
        ASSERT_OK(matrix_case("localhost:5000", "insecure = true", "https", true, true));
        ASSERT_OK(matrix_case("127.0.0.1", "http = false", "https", false, false));
        ASSERT_OK(matrix_case("127.0.0.1", "http = false\ninsecure = true", "https", true, false));
        return 0;
}

TEST(hosts_mirror_split)
{
        static const struct {
                const char *in, *host, *prefix;
        } cases[] = {
                { "m.example", "m.example", "" },
                { "https://m.example/p/", "m.example", "/p" },
                { "m.example:5000/a/b//", "m.example:5000", "/a/b" },
                { "localhost:5000", "localhost:5000", "" },
                { "http://localhost:5000/x", "localhost:5000", "/x" },
                { "[::1]:5000/x", "[::1]:5000", "/x" },
                { "m.example/a%20b", "m.example", "/a b" },
                { "user:pw@m.example/p", "m.example", "/p" },
                { "m.example/p?q=1#f", "m.example", "/p" },
                /* not a URL: the entry is the host, no prefix */
                { "m:abc", "m:abc", "" },
                { "m.example/%zz", "m.example/%zz", "" },
                { "m example", "m example", "" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *host = NULL, *prefix = NULL;

                kiln_registry_mirror_split(cases[i].in, &host, &prefix);
                if (!streq(host, cases[i].host) || !streq(prefix, cases[i].prefix))
                        KILN_TEST_FAIL("'%s' -> '%s' '%s'", cases[i].in, host, prefix);
        }
        return 0;
}

TEST(hosts_url_cleaning_and_fallback_url)
{
        struct kiln_registry_host h = { .scheme = (char *) "https",
                                        .host = (char *) "m.example",
                                        .path_prefix = (char *) "/v2/a/../b/" };
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *r = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *u = NULL, *plain = NULL, *same = NULL;

        ASSERT_OK(kiln_content_ref_parse("m.example/x/y:1", &r, &err));
        u = kiln_registry_host_url(&h, r, "manifests", "1");
        ASSERT_STREQ(u, "https://m.example/v2/b/x/y/manifests/1");
        plain = kiln_registry_url_plain_http(u);
        ASSERT_STREQ(plain, "http://m.example/v2/b/x/y/manifests/1");
        same = kiln_registry_url_plain_http("http://a/b");
        ASSERT_STREQ(same, "http://a/b");
        return 0;
}

/* ---- TLS files ---- */

static char *tmpdir(void)
{
        char *d = kiln_xstrdup("/tmp/kiln-test-hosts-XXXXXX");

        return mkdtemp(d) ? d : NULL;
}

static int write_file(const char *dir, const char *name, const char *data)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);

        return kiln_write_file_atomic(p, data, strlen(data), 0600);
}

/* A self-signed P-256 certificate and its key, as PEM. */
static int make_keypair(const char *dir, const char *cert_name, const char *key_name)
{
        _cleanup_free_ char *cp = kiln_xasprintf("%s/%s", dir, cert_name);
        _cleanup_free_ char *kp = kiln_xasprintf("%s/%s", dir, key_name);
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509 *x = X509_new();
        FILE *f;
        int ok = 0;

        if (!key || !x)
                goto out;
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, key);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *) "kiln-test", -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        if (!X509_sign(x, key, EVP_sha256()))
                goto out;
        f = fopen(cp, "we");
        if (!f)
                goto out;
        ok = PEM_write_X509(f, x);
        fclose(f);
        f = fopen(kp, "we");
        if (!f) {
                ok = 0;
                goto out;
        }
        ok = ok && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
        fclose(f);
out:
        X509_free(x);
        EVP_PKEY_free(key);
        return ok ? 0 : -1;
}

static void rm_rf(const char *dir)
{
        _cleanup_free_ char *cmd = kiln_xasprintf("rm -rf '%s'", dir);

        (void) system(cmd);
}

TEST(hosts_tlsconfigdir_expansion)
{
        _cleanup_free_ char *dir = tmpdir(), *toml = NULL;
        _cleanup_(kiln_config_freep) struct kiln_config *c = NULL;
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h = NULL;
        const struct kiln_registry_tls *t;

        ASSERT_TRUE(dir);
        ASSERT_OK(write_file(dir, "b.crt", "not checked here: curl reads it\n"));
        ASSERT_OK(write_file(dir, "a.crt", "x\n"));
        ASSERT_OK(write_file(dir, "notes.txt", "x\n"));
        ASSERT_OK(make_keypair(dir, "client.cert", "client.key"));
        ASSERT_OK(make_keypair(dir, "explicit.pem", "explicit-key.pem"));
        toml = kiln_xasprintf("[registry.\"r.example\"]\n"
                              "ca = [\"%s/notes.txt\"]\n"
                              "tlsconfigdir = [\"%s/missing\", \"%s\"]\n"
                              "[[registry.\"r.example\".keypair]]\n"
                              "cert = \"%s/explicit.pem\"\nkey = \"%s/explicit-key.pem\"\n",
                              dir, dir, dir, dir, dir);
        c = load(toml);
        ASSERT_TRUE(c);
        h = build(c, "r.example");
        ASSERT_TRUE(h && h->n == 1);
        t = &h->items[0].tls;
        /* the section's files first, then the dir's, in name order */
        ASSERT_EQ_INT(t->n_ca_files, 3);
        ASSERT_TRUE(strstr(t->ca_files[0], "/notes.txt"));
        ASSERT_TRUE(strstr(t->ca_files[1], "/a.crt"));
        ASSERT_TRUE(strstr(t->ca_files[2], "/b.crt"));
        ASSERT_EQ_INT(t->n_keypairs, 2);
        ASSERT_TRUE(strstr(t->keypairs[0].cert, "/explicit.pem"));
        ASSERT_TRUE(strstr(t->keypairs[1].cert, "/client.cert"));
        ASSERT_TRUE(strstr(t->keypairs[1].key, "/client.key"));
        rm_rf(dir);
        return 0;
}

static int build_error(const char *toml, const char *host, const char *needle)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c = load(toml);
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *h = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_TRUE(c);
        if (kiln_registry_hosts_build(c, host, &h, &err) >= 0)
                KILN_TEST_FAIL("built");
        if (!strstr(kiln_error_message(err), needle))
                KILN_TEST_FAIL("\"%s\" lacks \"%s\"", kiln_error_message(err), needle);
        return 0;
}

TEST(hosts_tls_errors_name_host_and_file)
{
        _cleanup_free_ char *dir = tmpdir(), *t1 = NULL, *t2 = NULL, *t3 = NULL, *t4 = NULL,
                            *t5 = NULL, *key2 = NULL;

        ASSERT_TRUE(dir);
        ASSERT_OK(make_keypair(dir, "one.cert", "one.key"));
        ASSERT_OK(make_keypair(dir, "two.cert", "two.key"));
        ASSERT_OK(write_file(dir, "garbage.key", "-----BEGIN NOTHING-----\n"));
        t1 = kiln_xasprintf("[registry.\"r.example\"]\nca = [\"%s/nope.crt\"]\n", dir);
        ASSERT_OK(build_error(t1, "r.example", "registry 'r.example': read ca '"));
        ASSERT_OK(build_error(t1, "r.example", "/nope.crt': No such file or directory"));
        t2 = kiln_xasprintf("[registry.\"r.example\"]\n[[registry.\"r.example\".keypair]]\n"
                            "cert = \"%s/one.cert\"\nkey = \"%s/two.key\"\n",
                            dir, dir);
        ASSERT_OK(build_error(t2, "r.example", "does not match the certificate"));
        t3 = kiln_xasprintf("[registry.\"r.example\"]\n[[registry.\"r.example\".keypair]]\n"
                            "cert = \"%s/one.cert\"\nkey = \"%s/garbage.key\"\n",
                            dir, dir);
        ASSERT_OK(build_error(t3, "r.example", "no usable PEM private key"));
        /* a mirror's own section is checked, and named */
        t4 = kiln_xasprintf("[registry.\"docker.io\"]\nmirrors = [\"m.example\"]\n"
                            "[registry.\"m.example\"]\nca = [\"%s\"]\n",
                            dir);
        ASSERT_OK(build_error(t4, "docker.io", "registry mirror 'm.example' of 'docker.io'"));
        ASSERT_OK(build_error(t4, "docker.io", "Is a directory"));
        /* a tlsconfigdir X.cert without X.key */
        key2 = kiln_xasprintf("%s/two.key", dir);
        ASSERT_OK(unlink(key2));
        t5 = kiln_xasprintf("[registry.\"r.example\"]\ntlsconfigdir = [\"%s\"]\n", dir);
        ASSERT_OK(build_error(t5, "r.example", "/two.key': No such file or directory"));
        rm_rf(dir);
        return 0;
}

TEST(hosts_tlsconfigdir_that_is_a_file_fails)
{
        _cleanup_free_ char *dir = tmpdir(), *toml = NULL;

        ASSERT_TRUE(dir);
        ASSERT_OK(write_file(dir, "f", "x"));
        toml = kiln_xasprintf("[registry.\"r.example\"]\ntlsconfigdir = [\"%s/f\"]\n", dir);
        ASSERT_OK(build_error(toml, "r.example", "read tlsconfigdir"));
        rm_rf(dir);
        return 0;
}
