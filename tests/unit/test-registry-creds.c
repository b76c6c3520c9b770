/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Credentials from a Docker config.json written by the test, and from a
 * credential helper script the test puts first on PATH.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fs.h"
#include "kiln-test.h"
#include "registry/creds.h"

static char *tmpdir(void)
{
        char *d = kiln_xstrdup("/tmp/kiln-test-creds-XXXXXX");

        return mkdtemp(d) ? d : NULL;
}

static void rm_rf(const char *dir)
{
        _cleanup_free_ char *cmd = kiln_xasprintf("rm -rf '%s'", dir);

        (void) system(cmd);
}

static int write_file(const char *path, const char *data, unsigned mode)
{
        return kiln_write_file_atomic(path, data, strlen(data), mode);
}

static struct kiln_registry_docker_config *load(const char *path)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_registry_docker_config *c = NULL;

        if (kiln_registry_docker_config_load(path, &c, &err) < 0)
                printf("# %s\n", kiln_error_message(err));
        return c;
}

static int lookup(struct kiln_registry_docker_config *c, const char *host,
                  struct kiln_registry_creds *ret, char **ret_error)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_registry_docker_config_lookup(c, host, ret, &err);

        if (ret_error)
                *ret_error = r < 0 ? kiln_xstrdup(kiln_error_message(err)) : NULL;
        else if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        return r;
}

/* base64("alice:s3cret\0\0") and base64("bob:pw:with:colons") */
#define AUTH_ALICE "YWxpY2U6czNjcmV0AAA="
#define AUTH_BOB   "Ym9iOnB3OndpdGg6Y29sb25z"

TEST(creds_from_auths)
{
        _cleanup_free_ char *dir = tmpdir(), *path = NULL;
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *c = NULL;
        struct kiln_registry_creds cr = { 0 };
        const char *u, *s;

        ASSERT_TRUE(dir);
        path = kiln_xasprintf("%s/config.json", dir);
        ASSERT_OK(write_file(
                path,
                "{\"auths\": {\n"
                "  \"https://index.docker.io/v1/\": {\"auth\": \"" AUTH_ALICE "\"},\n"
                "  \"registry.example:5000\": {\"username\": \"u\", \"password\": "
                "\"p\", \"auth\": \"" AUTH_BOB "\"},\n"
                "  \"https://legacy.example/v1/\": {\"Username\": \"lu\", \"PASSWORD\": \"lp\"},\n"
                "  \"idp.example\": {\"identitytoken\": \"refresh-me\", \"username\": \"x\"},\n"
                "  \"tok.example\": {\"registrytoken\": \"bearer-me\"},\n"
                "  \"empty.example\": {}\n"
                "}, \"psFormat\": \"table\", \"HttpHeaders\": {\"a\": \"b\"}}\n",
                0600));
        c = load(path);
        ASSERT_TRUE(c);

        /* the host contacted for Docker Hub maps to the legacy key */
        ASSERT_OK(lookup(c, "registry-1.docker.io", &cr, NULL));
        ASSERT_STREQ(cr.username, "alice");
        ASSERT_STREQ(cr.password, "s3cret"); /* NULs trimmed, as docker does */
        ASSERT_STREQ(cr.server_address, "https://index.docker.io/v1/");
        kiln_registry_creds_release(&cr);

        /* "auth" wins over username/password; only the first ':' splits */
        ASSERT_OK(lookup(c, "registry.example:5000", &cr, NULL));
        ASSERT_STREQ(cr.username, "bob");
        ASSERT_STREQ(cr.password, "pw:with:colons");
        kiln_registry_creds_release(&cr);

        /* a key written as a URL matches its host; keys case-insensitive */
        ASSERT_OK(lookup(c, "legacy.example", &cr, NULL));
        ASSERT_STREQ(cr.username, "lu");
        ASSERT_STREQ(cr.password, "lp");
        kiln_registry_creds_release(&cr);

        /* an identity token is the secret, with no username (buildkit's toCredentials) */
        ASSERT_OK(lookup(c, "idp.example", &cr, NULL));
        kiln_registry_creds_basic(&cr, &u, &s);
        ASSERT_STREQ(u, "");
        ASSERT_STREQ(s, "refresh-me");
        kiln_registry_creds_release(&cr);

        ASSERT_OK(lookup(c, "tok.example", &cr, NULL));
        ASSERT_STREQ(cr.registry_token, "bearer-me");
        ASSERT_TRUE(!kiln_registry_creds_empty(&cr));
        kiln_registry_creds_release(&cr);

        ASSERT_OK(lookup(c, "empty.example", &cr, NULL));
        ASSERT_TRUE(kiln_registry_creds_empty(&cr));
        kiln_registry_creds_release(&cr);

        /* a mirror has its own credentials, none here: anonymous */
        ASSERT_OK(lookup(c, "mirror.example", &cr, NULL));
        ASSERT_TRUE(kiln_registry_creds_empty(&cr));
        kiln_registry_creds_basic(&cr, &u, &s);
        ASSERT_STREQ(u, "");
        ASSERT_STREQ(s, "");
        kiln_registry_creds_release(&cr);
        rm_rf(dir);
        return 0;
}

TEST(creds_keys)
{
        static const char *const hub[] = { "registry-1.docker.io", "docker.io", "index.docker.io" };

        for (size_t i = 0; i < ELEMENTSOF(hub); i++) {
                _cleanup_free_ char *k = kiln_registry_creds_key(hub[i]);
                ASSERT_STREQ(k, "https://index.docker.io/v1/");
        }
        {
                _cleanup_free_ char *k = kiln_registry_creds_key("m.example:5000");
                ASSERT_STREQ(k, "m.example:5000");
        }
        return 0;
}

TEST(creds_default_path)
{
        _cleanup_free_ char *old_dc =
                getenv("DOCKER_CONFIG") ? kiln_xstrdup(getenv("DOCKER_CONFIG")) : NULL;
        _cleanup_free_ char *old_home = getenv("HOME") ? kiln_xstrdup(getenv("HOME")) : NULL;
        _cleanup_free_ char *p1 = NULL, *p2 = NULL, *p3 = NULL;

        setenv("DOCKER_CONFIG", "/x/dc", 1);
        p1 = kiln_registry_docker_config_default_path();
        ASSERT_STREQ(p1, "/x/dc/config.json");
        setenv("DOCKER_CONFIG", "", 1);
        setenv("HOME", "/home/u", 1);
        p2 = kiln_registry_docker_config_default_path();
        ASSERT_STREQ(p2, "/home/u/.docker/config.json");
        unsetenv("HOME");
        p3 = kiln_registry_docker_config_default_path();
        ASSERT_TRUE(strstr(p3, "/.docker/config.json"));
        if (old_dc)
                setenv("DOCKER_CONFIG", old_dc, 1);
        else
                unsetenv("DOCKER_CONFIG");
        if (old_home)
                setenv("HOME", old_home, 1);
        return 0;
}

static int load_error(const char *dir, const char *content, const char *needle, const char *secret)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/bad.json", dir);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_registry_docker_config *c = NULL;

        ASSERT_OK(write_file(path, content, 0600));
        if (kiln_registry_docker_config_load(path, &c, &err) >= 0) {
                kiln_registry_docker_config_free(c);
                KILN_TEST_FAIL("'%s' loaded", content);
        }
        if (!strstr(kiln_error_message(err), needle))
                KILN_TEST_FAIL("\"%s\" lacks \"%s\"", kiln_error_message(err), needle);
        if (secret && strstr(kiln_error_message(err), secret))
                KILN_TEST_FAIL("\"%s\" shows the secret", kiln_error_message(err));
        return 0;
}

TEST(creds_bad_files)
{
        _cleanup_free_ char *dir = tmpdir(), *missing = NULL, *empty = NULL;
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *c = NULL,
                                                                                        *e = NULL;
        struct kiln_registry_creds cr = { 0 };

        ASSERT_TRUE(dir);
        ASSERT_OK(load_error(dir, "{\"auths\": {\"h\": {\"password\": \"hunter2\"", "line 1",
                             "hunter2"));
        ASSERT_OK(load_error(dir, "{\"auths\": {\"h\": {\"auth\": \"!!hunter2!!\"}}}",
                             "auths 'h': invalid auth value", "hunter2"));
        /* base64 of ":hunter2" (no user) */
        ASSERT_OK(load_error(dir, "{\"auths\": {\"h\": {\"auth\": \"Omh1bnRlcjI=\"}}}",
                             "invalid auth value", "hunter2"));
        ASSERT_OK(load_error(dir, "{\"auths\": {\"h\": {\"password\": 7}}}",
                             "auths 'h' password is not a string", NULL));
        ASSERT_OK(load_error(dir, "{\"auths\": []}", "auths is not an object", NULL));
        ASSERT_OK(load_error(dir, "[1]", "not a JSON object", NULL));
        ASSERT_OK(load_error(dir, "{\"credsStore\": 1}", "credsStore is not a string", NULL));

        missing = kiln_xasprintf("%s/none/config.json", dir);
        c = load(missing);
        ASSERT_TRUE(c);
        ASSERT_OK(lookup(c, "registry-1.docker.io", &cr, NULL));
        ASSERT_TRUE(kiln_registry_creds_empty(&cr));
        kiln_registry_creds_release(&cr);

        empty = kiln_xasprintf("%s/empty.json", dir);
        ASSERT_OK(write_file(empty, " \n", 0600));
        e = load(empty);
        ASSERT_TRUE(e);
        rm_rf(dir);
        return 0;
}

/* ---- credential helpers ---- */

static const char helper_script[] =
        "#!/bin/sh\n"
        "[ \"$1\" = get ] || exit 9\n"
        "read -r server || true\n"
        "echo \"$server\" >> \"$(dirname \"$0\")/calls\"\n"
        "case \"$server\" in\n"
        "helper.example) printf '{\"ServerURL\":\"%s\",\"Username\":\"hu\",\"Secret\":\"hs\"}\\n' "
        "\"$server\" ;;\n"
        "https://index.docker.io/v1/) printf '{\"Username\":\"hub\",\"Secret\":\"hubsecret\"}' ;;\n"
        "tok.example) printf '{\"username\":\"<token>\",\"secret\":\"idtok\"}' ;;\n"
        "fail.example) echo 'boom: keychain locked'; exit 3 ;;\n"
        "leak.example) printf '{\"Username\":\"u\",\"Secret\":\"leaked-secret\"}'; exit 1 ;;\n"
        "json.example) echo 'not json' ;;\n"
        "big.example) head -c 70000 /dev/zero | tr '\\0' a ;;\n"
        "slow.example) sleep 5 ;;\n"
        "*) echo 'credentials not found in native keychain'; exit 1 ;;\n"
        "esac\n";

struct helper_env {
        char *dir;
        char *old_path;
};

static int helper_setup(struct helper_env *h, const char *config_json)
{
        _cleanup_free_ char *script = NULL, *other = NULL, *path = NULL, *cfg = NULL;

        h->dir = tmpdir();
        if (!h->dir)
                return -1;
        script = kiln_xasprintf("%s/docker-credential-kilntest", h->dir);
        other = kiln_xasprintf("%s/docker-credential-other", h->dir);
        if (write_file(script, helper_script, 0755) < 0 ||
            write_file(other, helper_script, 0755) < 0)
                return -1;
        h->old_path = kiln_xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
        path = kiln_xasprintf("%s:%s", h->dir, h->old_path);
        setenv("PATH", path, 1);
        cfg = kiln_xasprintf("%s/config.json", h->dir);
        return write_file(cfg, config_json, 0600);
}

static void helper_teardown(struct helper_env *h)
{
        if (h->old_path)
                setenv("PATH", h->old_path, 1);
        if (h->dir)
                rm_rf(h->dir);
        free(h->dir);
        free(h->old_path);
}

static int count_calls(const char *dir)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/calls", dir);
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        int n = 0;

        if (kiln_read_file_at(AT_FDCWD, p, &b) < 0)
                return 0;
        for (size_t i = 0; i < b.len; i++)
                n += b.data[i] == '\n';
        return n;
}

static int64_t fake_clock_value;
static int64_t fake_clock(void *userdata)
{
        return fake_clock_value;
}

TEST(creds_helper_store)
{
        struct helper_env h = { 0 };
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *c = NULL;
        _cleanup_free_ char *cfg = NULL;
        struct kiln_registry_creds cr = { 0 };
        int r = -1;

        if (helper_setup(&h, "{\"credsStore\": \"kilntest\", \"auths\": {\"helper.example\": "
                             "{\"password\": \"ignored\", \"registrytoken\": \"kept\"}}}") < 0)
                goto out;
        cfg = kiln_xasprintf("%s/config.json", h.dir);
        c = load(cfg);
        if (!c)
                goto out;
        kiln_registry_docker_config_set_clock(c, fake_clock, NULL);
        fake_clock_value = 100;

        if (lookup(c, "helper.example", &cr, NULL) < 0 || !streq_ptr(cr.username, "hu") ||
            !streq_ptr(cr.password, "hs") || !streq_ptr(cr.registry_token, "kept"))
                KILN_TEST_FAIL("helper.example: %s %s", cr.username, cr.registry_token);
        kiln_registry_creds_release(&cr);

        /* Hub through the helper, under its legacy key */
        if (lookup(c, "registry-1.docker.io", &cr, NULL) < 0 || !streq_ptr(cr.username, "hub") ||
            !streq_ptr(cr.password, "hubsecret"))
                KILN_TEST_FAIL("hub");
        kiln_registry_creds_release(&cr);

        /* "<token>" as the username: an identity token */
        if (lookup(c, "tok.example", &cr, NULL) < 0 || !streq_ptr(cr.identity_token, "idtok") ||
            cr.username)
                KILN_TEST_FAIL("tok.example");
        kiln_registry_creds_release(&cr);

        /* not found: anonymous, no error */
        if (lookup(c, "nothing.example", &cr, NULL) < 0 || !kiln_registry_creds_empty(&cr))
                KILN_TEST_FAIL("nothing.example");
        kiln_registry_creds_release(&cr);

        /* cached: the helper ran 4 times, a second lookup runs nothing */
        if (count_calls(h.dir) != 4)
                KILN_TEST_FAIL("calls %d", count_calls(h.dir));
        if (lookup(c, "helper.example", &cr, NULL) < 0 || count_calls(h.dir) != 4)
                KILN_TEST_FAIL("not cached");
        kiln_registry_creds_release(&cr);
        fake_clock_value = 100 + 291; /* 4m50s later */
        if (lookup(c, "helper.example", &cr, NULL) < 0 || count_calls(h.dir) != 5)
                KILN_TEST_FAIL("cache did not expire");
        kiln_registry_creds_release(&cr);
        r = 0;
out:
        helper_teardown(&h);
        return r;
}

static int helper_error(struct kiln_registry_docker_config *c, const char *host, const char *needle,
                        const char *secret)
{
        struct kiln_registry_creds cr = { 0 };
        _cleanup_free_ char *msg = NULL;

        if (lookup(c, host, &cr, &msg) >= 0) {
                kiln_registry_creds_release(&cr);
                KILN_TEST_FAIL("%s: no error", host);
        }
        if (!strstr(msg, needle))
                KILN_TEST_FAIL("%s: \"%s\" lacks \"%s\"", host, msg, needle);
        if (secret && strstr(msg, secret))
                KILN_TEST_FAIL("%s: \"%s\" shows a secret", host, msg);
        return 0;
}

TEST(creds_helper_failures)
{
        struct helper_env h = { 0 };
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *c = NULL;
        _cleanup_free_ char *cfg = NULL;
        int r = -1;

        if (helper_setup(&h, "{\"credsStore\": \"kilntest\", \"credHelpers\": {"
                             "\"missing.example\": \"no-such-helper\", "
                             "\"evil.example\": \"../../bin/sh\"}}") < 0)
                goto out;
        cfg = kiln_xasprintf("%s/config.json", h.dir);
        c = load(cfg);
        if (!c)
                goto out;
        kiln_registry_docker_config_set_helper_timeout(c, 500);
        if (helper_error(
                    c, "fail.example",
                    "credentials for 'fail.example': credential helper "
                    "'docker-credential-kilntest' failed: exit status 3: boom: keychain locked",
                    NULL) < 0 ||
            helper_error(c, "leak.example", "exit status 1", "leaked-secret") < 0 ||
            helper_error(c, "json.example", "printed no JSON object", NULL) < 0 ||
            helper_error(c, "big.example", "printed more than 65536 bytes", NULL) < 0 ||
            helper_error(c, "slow.example", "did not answer within 500 ms", NULL) < 0 ||
            helper_error(c, "missing.example",
                         "credential helper 'docker-credential-no-such-helper' not found in PATH",
                         NULL) < 0 ||
            helper_error(c, "evil.example", "invalid credential helper name", NULL) < 0)
                goto out;
        r = 0;
out:
        helper_teardown(&h);
        return r;
}

TEST(creds_helper_per_host_beats_store)
{
        struct helper_env h = { 0 };
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *c = NULL;
        _cleanup_free_ char *cfg = NULL;
        struct kiln_registry_creds cr = { 0 };
        int r = -1;

        if (helper_setup(&h, "{\"credsStore\": \"no-such-store\", \"credHelpers\": "
                             "{\"helper.example\": \"other\"},"
                             "\"auths\": {\"plain.example\": {\"auth\": \"" AUTH_BOB "\"}}}") < 0)
                goto out;
        cfg = kiln_xasprintf("%s/config.json", h.dir);
        c = load(cfg);
        if (!c)
                goto out;
        if (lookup(c, "helper.example", &cr, NULL) < 0 || !streq_ptr(cr.username, "hu"))
                KILN_TEST_FAIL("credHelpers entry not used");
        kiln_registry_creds_release(&cr);
        /* credsStore applies to every other host, even one in auths (docker's rule) */
        if (helper_error(c, "plain.example", "docker-credential-no-such-store", NULL) < 0)
                goto out;
        r = 0;
out:
        helper_teardown(&h);
        return r;
}
