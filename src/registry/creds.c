/* SPDX-License-Identifier: Apache-2.0 */
/*
 * docker/cli's configfile (LoadFromReader, decodeAuth, GetAuthConfig,
 * getConfiguredCredentialStore), credentials' fileStore and nativeStore,
 * docker-credential-helpers' client.Get, and buildkit's authconfigprovider
 * host-to-key mapping.
 */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <pwd.h>
#include <string.h>
#include <sys/wait.h>

#include "base/fs.h"
#include "base/process.h"
#include "creds.h"
#include "registry-internal.h"
#include "registry-limits.h"

extern char **environ;

#define TOKEN_USERNAME    "<token>"
#define NOT_FOUND_MESSAGE "credentials not found in native keychain"
#define HELPER_PREFIX     "docker-credential-"

struct auth_entry {
        char *key; /* as written in "auths" */
        struct kiln_registry_creds creds;
};

struct cache_entry {
        char *key;
        struct kiln_registry_creds creds;
        int64_t created;
};

struct kiln_registry_docker_config {
        char *path;
        struct auth_entry *auths; /* in file order */
        size_t n_auths;
        char *creds_store;
        char **helper_keys, **helper_names;
        size_t n_helpers;

        pthread_mutex_t lock; /* guards cache (and serialises helper runs) */
        struct cache_entry *cache;
        size_t n_cache;
        int64_t (*now)(void *userdata);
        void *now_userdata;
        int helper_timeout_ms;
};

/* ---- credentials ---- */

void kiln_registry_creds_release(struct kiln_registry_creds *c)
{
        free(c->username);
        free_secret(c->password);
        free_secret(c->identity_token);
        free_secret(c->registry_token);
        free(c->server_address);
        *c = (struct kiln_registry_creds){ 0 };
}

static char *dup_or_null(const char *s)
{
        return s ? kiln_xstrdup(s) : NULL;
}

static void creds_copy(struct kiln_registry_creds *dst, const struct kiln_registry_creds *src)
{
        dst->username = dup_or_null(src->username);
        dst->password = dup_or_null(src->password);
        dst->identity_token = dup_or_null(src->identity_token);
        dst->registry_token = dup_or_null(src->registry_token);
        dst->server_address = dup_or_null(src->server_address);
}

static bool empty(const char *s)
{
        return !s || !*s;
}

void kiln_registry_creds_basic(const struct kiln_registry_creds *c, const char **ret_username,
                               const char **ret_secret)
{
        if (!empty(c->identity_token)) {
                *ret_username = "";
                *ret_secret = c->identity_token;
        } else {
                *ret_username = c->username ? c->username : "";
                *ret_secret = c->password ? c->password : "";
        }
}

bool kiln_registry_creds_empty(const struct kiln_registry_creds *c)
{
        return empty(c->username) && empty(c->password) && empty(c->identity_token) &&
               empty(c->registry_token);
}

char *kiln_registry_creds_key(const char *host)
{
        /* buildkit maps the host it contacts; docker maps the names of Hub. */
        if (streq(host, "registry-1.docker.io") || streq(host, "docker.io") ||
            streq(host, "index.docker.io"))
                return kiln_xstrdup(KILN_REGISTRY_DOCKER_HUB_AUTH_KEY);
        return kiln_xstrdup(host);
}

/* ---- loading ---- */

char *kiln_registry_docker_config_default_path(void)
{
        const char *dir = getenv("DOCKER_CONFIG"), *home;

        if (!empty(dir))
                return kiln_xasprintf("%s/config.json", dir);
        home = getenv("HOME");
        if (empty(home)) {
                struct passwd pw, *res = NULL;
                char buf[4096];

                if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res)
                        return kiln_xasprintf("%s/.docker/config.json", res->pw_dir);
                home = "";
        }
        return kiln_xasprintf("%s/.docker/config.json", home);
}

static void auth_entries_free(struct auth_entry *a, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(a[i].key);
                kiln_registry_creds_release(&a[i].creds);
        }
        free(a);
}

static void cache_clear(struct kiln_registry_docker_config *c)
{
        for (size_t i = 0; i < c->n_cache; i++) {
                free(c->cache[i].key);
                kiln_registry_creds_release(&c->cache[i].creds);
        }
        free(c->cache);
        c->cache = NULL;
        c->n_cache = 0;
}

struct kiln_registry_docker_config *
kiln_registry_docker_config_free(struct kiln_registry_docker_config *c)
{
        if (!c)
                return NULL;
        free(c->path);
        auth_entries_free(c->auths, c->n_auths);
        free(c->creds_store);
        for (size_t i = 0; i < c->n_helpers; i++) {
                free(c->helper_keys[i]);
                free(c->helper_names[i]);
        }
        free(c->helper_keys);
        free(c->helper_names);
        cache_clear(c);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

static int64_t monotonic_now(void *userdata)
{
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec;
}

void kiln_registry_docker_config_set_helper_timeout(struct kiln_registry_docker_config *c,
                                                    int timeout_ms)
{
        c->helper_timeout_ms = timeout_ms > 0 ? timeout_ms : KILN_REGISTRY_CRED_HELPER_TIMEOUT_MS;
}

void kiln_registry_docker_config_set_clock(struct kiln_registry_docker_config *c,
                                           int64_t (*now)(void *userdata), void *userdata)
{
        c->now = now ? now : monotonic_now;
        c->now_userdata = userdata;
}

/* A string field: NULL and absent are "", anything else is an error. */
static int json_string_field(const char *path, const char *where, const char *name, json_t *v,
                             char **field, bool secret, struct kiln_error **err)
{
        if (json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return kiln_error_set(err, -EINVAL, "load '%s': %s%s is not a string", path, where,
                                      name);
        if (secret)
                free_secret(*field);
        else
                free(*field);
        *field = kiln_xstrdup(json_string_value(v));
        return 0;
}

/* docker's decodeAuth: base64 of "user:password", user not empty, the
 * password trimmed of NULs. */
static int decode_auth(const char *auth, char **ret_user, char **ret_password)
{
        _cleanup_(free_secretp) char *plain = NULL;
        size_t n = 0, start, end;
        char *colon;

        plain = base64_decode(auth, strlen(auth), &n);
        if (!plain)
                return -EINVAL;
        colon = memchr(plain, ':', n);
        if (!colon || colon == plain || memchr(plain, 0, (size_t) (colon - plain)))
                return -EINVAL;
        start = (size_t) (colon - plain) + 1;
        end = n;
        while (start < end && plain[start] == 0)
                start++;
        while (end > start && plain[end - 1] == 0)
                end--;
        if (memchr(plain + start, 0, end - start))
                return -EINVAL; /* a NUL inside cannot be passed on as a C string */
        *ret_user = kiln_xstrndup(plain, (size_t) (colon - plain));
        *ret_password = kiln_xstrndup(plain + start, end - start);
        return 0;
}

static int load_auth_entry(struct kiln_registry_docker_config *c, const char *key, json_t *obj,
                           struct kiln_error **err)
{
        _cleanup_(free_secretp) char *auth = NULL;
        _cleanup_free_ char *where = NULL, *qkey = kiln_quote_untrusted(key, strlen(key), 200);
        struct auth_entry *e;
        const char *k;
        json_t *v;
        int r;

        c->auths = kiln_xreallocarray(c->auths, c->n_auths + 1, sizeof(*c->auths));
        e = &c->auths[c->n_auths++];
        *e = (struct auth_entry){ .key = kiln_xstrdup(key) };
        if (json_is_null(obj))
                return 0;
        where = kiln_xasprintf("auths '%s' ", qkey);
        if (!json_is_object(obj))
                return kiln_error_set(err, -EINVAL, "load '%s': %sis not an object", c->path,
                                      where);
        json_object_foreach (obj, k, v) {
                struct {
                        const char *name;
                        char **field;
                        bool secret;
                } fields[] = {
                        { "username", &e->creds.username, false },
                        { "password", &e->creds.password, true },
                        { "auth", &auth, true },
                        { "identitytoken", &e->creds.identity_token, true },
                        { "registrytoken", &e->creds.registry_token, true },
                };

                for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                        if (!ascii_strcaseeq(k, fields[i].name))
                                continue;
                        r = json_string_field(c->path, where, fields[i].name, v, fields[i].field,
                                              fields[i].secret, err);
                        if (r < 0)
                                return r;
                }
        }
        if (!empty(auth)) {
                char *user = NULL, *password = NULL;

                if (decode_auth(auth, &user, &password) < 0)
                        return kiln_error_set(err, -EINVAL,
                                              "load '%s': auths '%s': invalid auth value (not "
                                              "base64 of user:password)",
                                              c->path, qkey);
                free(e->creds.username);
                free_secret(e->creds.password);
                e->creds.username = user;
                e->creds.password = password;
        }
        e->creds.server_address = kiln_xstrdup(key);
        return 0;
}

static bool all_space(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!strchr(" \t\r\n", s[i]))
                        return false;
        return true;
}

static int load_json(struct kiln_registry_docker_config *c, json_t *root, struct kiln_error **err)
{
        const char *k;
        json_t *v;
        int r;

        if (json_is_null(root))
                return 0;
        if (!json_is_object(root))
                return kiln_error_set(err, -EINVAL, "load '%s': not a JSON object", c->path);
        json_object_foreach (root, k, v) {
                if (ascii_strcaseeq(k, "auths")) {
                        const char *ak;
                        json_t *av;

                        if (json_is_null(v))
                                continue;
                        if (!json_is_object(v))
                                return kiln_error_set(err, -EINVAL,
                                                      "load '%s': auths is not an object", c->path);
                        json_object_foreach (v, ak, av) {
                                r = load_auth_entry(c, ak, av, err);
                                if (r < 0)
                                        return r;
                        }
                } else if (ascii_strcaseeq(k, "credsStore")) {
                        r = json_string_field(c->path, "", "credsStore", v, &c->creds_store, false,
                                              err);
                        if (r < 0)
                                return r;
                } else if (ascii_strcaseeq(k, "credHelpers")) {
                        const char *hk;
                        json_t *hv;

                        if (json_is_null(v))
                                continue;
                        if (!json_is_object(v))
                                return kiln_error_set(err, -EINVAL,
                                                      "load '%s': credHelpers is not an object",
                                                      c->path);
                        json_object_foreach (v, hk, hv) {
                                char *name = NULL;

                                r = json_string_field(c->path, "credHelpers.", "<value>", hv, &name,
                                                      false, err);
                                if (r < 0)
                                        return r;
                                c->helper_keys = kiln_xreallocarray(
                                        c->helper_keys, c->n_helpers + 1, sizeof(char *));
                                c->helper_names = kiln_xreallocarray(
                                        c->helper_names, c->n_helpers + 1, sizeof(char *));
                                c->helper_keys[c->n_helpers] = kiln_xstrdup(hk);
                                c->helper_names[c->n_helpers] = name ? name : kiln_xstrdup("");
                                c->n_helpers++;
                        }
                }
        }
        return 0;
}

int kiln_registry_docker_config_load(const char *path, struct kiln_registry_docker_config **ret,
                                     struct kiln_error **err)
{
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *c = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b =
                KILN_BUF_INIT(KILN_LIMIT_REGISTRY_DOCKER_CONFIG);
        json_error_t je;
        json_t *root;
        int r;

        c = kiln_xcalloc(1, sizeof(*c));
        pthread_mutex_init(&c->lock, NULL);
        c->now = monotonic_now;
        c->helper_timeout_ms = KILN_REGISTRY_CRED_HELPER_TIMEOUT_MS;
        c->path = path ? kiln_xstrdup(path) : kiln_registry_docker_config_default_path();

        r = kiln_read_file_at(AT_FDCWD, c->path, &b);
        if (r == -ENOENT) {
                *ret = TAKE_PTR(c);
                return 0;
        }
        if (r == -E2BIG)
                return kiln_error_set(err, r, "load '%s': larger than %u bytes", c->path,
                                      KILN_LIMIT_REGISTRY_DOCKER_CONFIG);
        if (r < 0)
                return kiln_error_set(err, r, "load '%s': %s", c->path, strerror(-r));
        if (all_space(b.data, b.len)) {
                explicit_bzero(b.data, b.len);
                *ret = TAKE_PTR(c);
                return 0;
        }
        root = json_loadb(b.data, b.len, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        explicit_bzero(b.data, b.len);
        if (!root)
                /* je.text may quote the file, which holds secrets: position only. */
                return kiln_error_set(err, -EINVAL, "load '%s': invalid JSON at line %d column %d",
                                      c->path, je.line, je.column);
        r = load_json(c, root, err);
        json_decref(root);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- lookup ---- */

/* docker's ConvertToHostname: "https://host:5000/v1/" -> "host:5000",
 * "host/path" -> "host". */
static char *convert_to_hostname(const char *s)
{
        const char *sep = strstr(s, "://");

        if (sep) {
                const char *auth = sep + 3;
                size_t alen = strcspn(auth, "/?#");
                const char *at = memrchr(auth, '@', alen);

                if (at) {
                        alen -= (size_t) (at + 1 - auth);
                        auth = at + 1;
                }
                if (alen > 0)
                        return kiln_xstrndup(auth, alen);
        }
        return kiln_xstrndup(s, strcspn(s, "/"));
}

/* credentials' fileStore.Get */
static const struct auth_entry *file_get(const struct kiln_registry_docker_config *c,
                                         const char *key)
{
        for (size_t i = 0; i < c->n_auths; i++)
                if (streq(c->auths[i].key, key))
                        return &c->auths[i];
        for (size_t i = 0; i < c->n_auths; i++) {
                _cleanup_free_ char *h = convert_to_hostname(c->auths[i].key);
                if (streq(h, key))
                        return &c->auths[i];
        }
        return NULL;
}

static const char *helper_for(const struct kiln_registry_docker_config *c, const char *key)
{
        for (size_t i = 0; i < c->n_helpers; i++)
                if (streq(c->helper_keys[i], key))
                        return c->helper_names[i];
        return c->creds_store;
}

/* Runs "docker-credential-<name> get" with key on stdin; *out gets its
 * stdout (its stderr goes nowhere: the daemon's log is no place for it).
 * Returns the wait status (>= 0) or -errno with *err. */
static int run_helper(const char *name, const char *key, int timeout_ms, struct kiln_buf *out,
                      struct kiln_error **err)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *program = kiln_xasprintf(HELPER_PREFIX "%s", name);
        char *argv[] = { program, (char *) "get", NULL };
        struct kiln_spawn sp = {
                .program = program,
                .argv = argv,
                .input = key,
                .input_len = strlen(key),
                .out = out,
                .timeout_ms = timeout_ms,
        };
        int r = kiln_spawn_run(&sp, &e);

        switch (r) {
        case -ENOENT:
                return kiln_error_set(err, r, "credential helper '%s' not found in PATH", program);
        case -ETIMEDOUT:
                return kiln_error_set(err, r, "credential helper '%s' did not answer within %d ms",
                                      program, timeout_ms);
        case -E2BIG:
                return kiln_error_set(err, r, "credential helper '%s' printed more than %u bytes",
                                      program, KILN_LIMIT_REGISTRY_CRED_HELPER_OUTPUT);
        default:
                if (r < 0)
                        return kiln_error_set(err, r, "credential helper '%s': %s", program,
                                              kiln_error_message(e));
                return r;
        }
}

static void trim(const char *s, size_t n, const char **ret, size_t *ret_n)
{
        while (n > 0 && strchr(" \t\r\n", *s))
                s++, n--;
        while (n > 0 && strchr(" \t\r\n", s[n - 1]))
                n--;
        *ret = s;
        *ret_n = n;
}

/* credentials' nativeStore.Get through the helper. */
static int helper_get(const char *name, const char *key, int timeout_ms,
                      struct kiln_registry_creds *creds, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf out =
                KILN_BUF_INIT(KILN_LIMIT_REGISTRY_CRED_HELPER_OUTPUT);
        _cleanup_free_ char *program = kiln_xasprintf(HELPER_PREFIX "%s", name);
        _cleanup_(free_secretp) char *user = NULL, *secret = NULL;
        json_error_t je;
        const char *t, *k;
        json_t *root, *v;
        size_t tn;
        int status;

        if (empty(name) || strchr(name, '/'))
                /* docker would run "docker-credential-../x" relative to the
                 * current directory; a config file should not pick programs
                 * outside PATH. */
                return kiln_error_set(err, -EINVAL, "invalid credential helper name '%s'", name);

        status = run_helper(name, key, timeout_ms, &out, err);
        if (status < 0) {
                if (out.data)
                        explicit_bzero(out.data, out.len);
                return status;
        }
        trim(out.data ? out.data : "", out.len, &t, &tn);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                _cleanup_free_ char *why = NULL, *q = NULL;

                if (tn == strlen(NOT_FOUND_MESSAGE) && memcmp(t, NOT_FOUND_MESSAGE, tn) == 0) {
                        explicit_bzero(out.data, out.len);
                        return 0; /* anonymous */
                }
                why = WIFEXITED(status) ? kiln_xasprintf("exit status %d", WEXITSTATUS(status))
                                        : kiln_xasprintf("killed by signal %d", WTERMSIG(status));
                /* Its message, but never what looks like a JSON answer. */
                if (tn > 0 && t[0] != '{')
                        q = kiln_quote_untrusted(t, strcspn(t, "\n") < tn ? strcspn(t, "\n") : tn,
                                                 200);
                explicit_bzero(out.data, out.len);
                return kiln_error_set(err, -EIO, "credential helper '%s' failed: %s%s%s", program,
                                      why, q ? ": " : "", q ? q : "");
        }

        root = json_loadb(out.data ? out.data : "", out.len, JSON_DISABLE_EOF_CHECK, &je);
        if (out.data)
                explicit_bzero(out.data, out.len);
        if (!root || !json_is_object(root)) {
                json_decref(root);
                return kiln_error_set(err, -EBADMSG,
                                      "credential helper '%s' printed no JSON object", program);
        }
        json_object_foreach (root, k, v) {
                char **field = ascii_strcaseeq(k, "Username") ? &user
                               : ascii_strcaseeq(k, "Secret") ? &secret
                                                              : NULL;

                if (!field || json_is_null(v))
                        continue;
                if (!json_is_string(v)) {
                        json_decref(root);
                        return kiln_error_set(err, -EBADMSG,
                                              "credential helper '%s' printed a non-string %s",
                                              program, field == &user ? "Username" : "Secret");
                }
                free_secret(*field);
                *field = kiln_xstrdup(json_string_value(v));
        }
        json_decref(root);

        if (user && streq(user, TOKEN_USERNAME)) {
                creds->identity_token = TAKE_PTR(secret);
        } else {
                creds->username = TAKE_PTR(user);
                creds->password = TAKE_PTR(secret);
        }
        return 0;
}

static int lookup_uncached(struct kiln_registry_docker_config *c, const char *key,
                           struct kiln_registry_creds *ret, struct kiln_error **err)
{
        const struct auth_entry *e = file_get(c, key);
        const char *helper = helper_for(c, key);
        struct kiln_registry_creds creds = { 0 };
        int r;

        if (empty(helper)) {
                if (e)
                        creds_copy(&creds, &e->creds);
                *ret = creds;
                return 0;
        }
        /* nativeStore: the file entry's other fields (registrytoken) stay;
         * user, password and identity token are the helper's alone. */
        if (e)
                creds.registry_token = dup_or_null(e->creds.registry_token);
        r = helper_get(helper, key, c->helper_timeout_ms, &creds, err);
        if (r < 0) {
                kiln_registry_creds_release(&creds);
                return r;
        }
        creds.server_address = kiln_xstrdup(key);
        *ret = creds;
        return 0;
}

int kiln_registry_docker_config_lookup(struct kiln_registry_docker_config *c, const char *host,
                                       struct kiln_registry_creds *ret, struct kiln_error **err)
{
        _cleanup_free_ char *key = kiln_registry_creds_key(host);
        struct kiln_registry_creds creds = { 0 };
        int64_t now;
        int r;

        pthread_mutex_lock(&c->lock);
        now = c->now(c->now_userdata);
        for (size_t i = 0; i < c->n_cache; i++) {
                struct cache_entry *ce = &c->cache[i];

                if (!streq(ce->key, key))
                        continue;
                if (now - ce->created <= KILN_REGISTRY_CREDS_CACHE_SEC) {
                        creds_copy(ret, &ce->creds);
                        pthread_mutex_unlock(&c->lock);
                        return 0;
                }
                free(ce->key);
                kiln_registry_creds_release(&ce->creds);
                c->cache[i] = c->cache[--c->n_cache];
                break;
        }
        r = lookup_uncached(c, key, &creds, err);
        if (r < 0) {
                pthread_mutex_unlock(&c->lock);
                return kiln_error_wrap(err, "credentials for '%s'", host);
        }
        c->cache = kiln_xreallocarray(c->cache, c->n_cache + 1, sizeof(*c->cache));
        c->cache[c->n_cache] = (struct cache_entry){ .key = kiln_xstrdup(key), .created = now };
        creds_copy(&c->cache[c->n_cache].creds, &creds);
        c->n_cache++;
        pthread_mutex_unlock(&c->lock);
        *ret = creds;
        return 0;
}
