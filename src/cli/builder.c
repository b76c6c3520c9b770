/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"
#include "base/fs.h"
#include "builder.h"
#include "cli.h"
#include "config/install.h"
#include "http.h"

/* Nesting below a builder directory that kiln_cli_rm_rf follows. */
#define RM_RF_MAX_DEPTH 256

/* ---- Drivers and statuses ---- */

static const char *const driver_names[_KILN_CLI_DRIVER_KIND_MAX] = {
        [KILN_CLI_DRIVER_LOCAL] = "local",
        [KILN_CLI_DRIVER_REMOTE] = "remote",
};

const char *kiln_cli_driver_kind_to_string(enum kiln_cli_driver_kind k)
{
        if (k < 0 || k >= _KILN_CLI_DRIVER_KIND_MAX)
                return NULL;
        return driver_names[k];
}

enum kiln_cli_driver_kind kiln_cli_driver_kind_from_string(const char *s)
{
        for (int i = 0; i < _KILN_CLI_DRIVER_KIND_MAX; i++)
                if (streq(s, driver_names[i]))
                        return (enum kiln_cli_driver_kind) i;
        return _KILN_CLI_DRIVER_KIND_INVALID;
}

static const char *const status_names[_KILN_CLI_STATUS_KIND_MAX] = {
        [KILN_CLI_STATUS_INACTIVE] = "inactive",
        [KILN_CLI_STATUS_STOPPED] = "stopped",
        [KILN_CLI_STATUS_RUNNING] = "running",
        [KILN_CLI_STATUS_ERROR] = "error",
};

const char *kiln_cli_status_kind_to_string(enum kiln_cli_status_kind k)
{
        if (k < 0 || k >= _KILN_CLI_STATUS_KIND_MAX)
                return "unknown";
        return status_names[k];
}

void kiln_cli_status_release(struct kiln_cli_status *st)
{
        json_decref(st->info);
        kiln_error_free(st->err);
        *st = (struct kiln_cli_status){ 0 };
}

/* ---- Builders ---- */

struct kiln_cli_builder *kiln_cli_builder_new(const struct kiln_cli_store *s, const char *name)
{
        struct kiln_cli_builder *b = kiln_xcalloc(1, sizeof(*b));

        b->name = kiln_xstrdup(name);
        b->node = kiln_xasprintf("%s0", name);
        b->driver = KILN_CLI_DRIVER_LOCAL;
        b->dir = kiln_cli_store_builder_dir(s, name);
        b->endpoint = kiln_xasprintf("unix://%s/kilnd.sock", b->dir);
        b->flags = kiln_xcalloc(1, sizeof(char *));
        return b;
}

struct kiln_cli_builder *kiln_cli_builder_free(struct kiln_cli_builder *b)
{
        if (!b)
                return NULL;
        free(b->name);
        free(b->node);
        free(b->dir);
        free(b->endpoint);
        kiln_cli_strv_free(b->flags);
        for (size_t i = 0; i < b->n_opts; i++) {
                free(b->opts[i].key);
                free(b->opts[i].value);
        }
        free(b->opts);
        free(b->config_file);
        free(b->created);
        free(b->tls_ca);
        free(b->tls_cert);
        free(b->tls_key);
        free(b->server_name);
        free(b);
        return NULL;
}

char *kiln_cli_builder_path(const struct kiln_cli_builder *b, const char *rel)
{
        return kiln_xasprintf("%s/%s", b->dir, rel);
}

const char *kiln_cli_builder_opt(const struct kiln_cli_builder *b, const char *key)
{
        for (size_t i = 0; i < b->n_opts; i++)
                if (streq(b->opts[i].key, key))
                        return b->opts[i].value;
        return NULL;
}

void kiln_cli_builder_http_target(const struct kiln_cli_builder *b,
                                  struct kiln_cli_http_target *ret)
{
        *ret = (struct kiln_cli_http_target){
                .address = b->endpoint,
                .ca_file = b->tls_ca,
                .cert_file = b->tls_cert,
                .key_file = b->tls_key,
                .server_name = b->server_name,
        };
}

const struct kiln_cli_driver *kiln_cli_builder_driver(const struct kiln_cli_builder *b)
{
        return b->driver == KILN_CLI_DRIVER_REMOTE ? &kiln_cli_driver_remote
                                                   : &kiln_cli_driver_local;
}

/* ---- builder.json ---- */

static char *now_rfc3339(void)
{
        char buf[64];
        time_t t = time(NULL);
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return kiln_xstrdup("");
        return kiln_xstrdup(buf);
}

int kiln_cli_store_save(const struct kiln_cli_builder *b, const char *dir, struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/builder.json", dir);
        _cleanup_free_ char *text = NULL, *created = NULL, *dumped = NULL;
        json_t *o, *flags, *opts;
        int r = 0;

        o = json_object();
        flags = json_array();
        opts = json_object();
        if (!o || !flags || !opts) {
                json_decref(o);
                json_decref(flags);
                json_decref(opts);
                return kiln_error_set(err, -ENOMEM, "write '%s': out of memory", path);
        }
        for (size_t i = 0; i < b->n_flags; i++)
                r |= json_array_append_new(flags, json_string(b->flags[i]));
        for (size_t i = 0; i < b->n_opts; i++)
                r |= json_object_set_new(opts, b->opts[i].key, json_string(b->opts[i].value));
        if (!b->created)
                created = now_rfc3339();
        r |= json_object_set_new(o, "name", json_string(b->name));
        r |= json_object_set_new(o, "node", json_string(b->node));
        r |= json_object_set_new(o, "driver",
                                 json_string(kiln_cli_driver_kind_to_string(b->driver)));
        if (b->driver == KILN_CLI_DRIVER_REMOTE)
                r |= json_object_set_new(o, "endpoint", json_string(b->endpoint));
        r |= json_object_set_new(o, "flags", flags);
        r |= json_object_set_new(o, "driverOpts", opts);
        if (b->config_file)
                r |= json_object_set_new(o, "configFile", json_string(b->config_file));
        r |= json_object_set_new(o, "created", json_string(b->created ? b->created : created));
        if (r != 0) {
                json_decref(o);
                return kiln_error_set(err, -EINVAL,
                                      "write '%s': a value is not valid UTF-8 or out of memory",
                                      path);
        }
        dumped = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(o);
        if (!dumped)
                return kiln_error_set(err, -ENOMEM, "write '%s': out of memory", path);
        text = kiln_xasprintf("%s\n", dumped);
        r = kiln_write_file_atomic(path, text, strlen(text), 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        return 0;
}

static const char *json_get_string(json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);

        return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The TLS copies of a remote builder are found by name, so that a store
 * moved elsewhere keeps working. */
static void builder_tls_paths(struct kiln_cli_builder *b)
{
        static const struct {
                const char *opt, *file;
        } files[] = { { "cacert", "tls/ca.pem" },
                      { "cert", "tls/cert.pem" },
                      { "key", "tls/key.pem" } };
        char **dst[] = { &b->tls_ca, &b->tls_cert, &b->tls_key };
        const char *sn;

        for (size_t i = 0; i < ELEMENTSOF(files); i++)
                if (kiln_cli_builder_opt(b, files[i].opt))
                        *dst[i] = kiln_cli_builder_path(b, files[i].file);
        sn = kiln_cli_builder_opt(b, "servername");
        if (sn && sn[0])
                b->server_name = kiln_xstrdup(sn);
}

static int builder_from_json(const struct kiln_cli_store *s, const char *name, const char *path,
                             json_t *o, struct kiln_cli_builder **ret, struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b =
                kiln_cli_builder_new(s, name);
        const char *driver, *v;
        json_t *flags, *opts, *x;
        size_t i;

        driver = json_get_string(o, "driver");
        if (!driver || kiln_cli_driver_kind_from_string(driver) < 0)
                return kiln_error_set(err, -EINVAL, "read '%s': unknown driver '%s'", path,
                                      driver ? driver : "");
        b->driver = kiln_cli_driver_kind_from_string(driver);
        v = json_get_string(o, "name");
        if (!v || !streq(v, name))
                return kiln_error_set(err, -EINVAL, "read '%s': it names builder '%s'", path,
                                      v ? v : "");
        v = json_get_string(o, "node");
        if (v && v[0]) {
                free(b->node);
                b->node = kiln_xstrdup(v);
        }
        if (b->driver == KILN_CLI_DRIVER_REMOTE) {
                v = json_get_string(o, "endpoint");
                if (!v)
                        return kiln_error_set(err, -EINVAL, "read '%s': no endpoint", path);
                free(b->endpoint);
                b->endpoint = kiln_xstrdup(v);
        }
        flags = json_object_get(o, "flags");
        if (json_is_array(flags)) {
                b->flags = kiln_xreallocarray(b->flags, json_array_size(flags) + 1, sizeof(char *));
                for (i = 0; i < json_array_size(flags); i++) {
                        x = json_array_get(flags, i);
                        if (json_is_string(x))
                                b->flags[b->n_flags++] = kiln_xstrdup(json_string_value(x));
                }
                b->flags[b->n_flags] = NULL;
        }
        opts = json_object_get(o, "driverOpts");
        if (json_is_object(opts)) {
                b->opts = kiln_xcalloc(json_object_size(opts) + 1, sizeof(*b->opts));
                for (void *it = json_object_iter(opts); it; it = json_object_iter_next(opts, it)) {
                        x = json_object_iter_value(it);
                        if (!json_is_string(x))
                                continue;
                        b->opts[b->n_opts].key = kiln_xstrdup(json_object_iter_key(it));
                        b->opts[b->n_opts++].value = kiln_xstrdup(json_string_value(x));
                }
        }
        v = json_get_string(o, "configFile");
        if (v)
                b->config_file = kiln_xstrdup(v);
        v = json_get_string(o, "created");
        if (v)
                b->created = kiln_xstrdup(v);
        if (b->driver == KILN_CLI_DRIVER_REMOTE)
                builder_tls_paths(b);
        *ret = TAKE_PTR(b);
        return 0;
}

/* ---- The store ---- */

char *kiln_cli_store_builder_dir(const struct kiln_cli_store *s, const char *name)
{
        return kiln_xasprintf("%s/builders/%s", s->dir, name);
}

bool kiln_cli_store_has(const struct kiln_cli_store *s, const char *name)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/builders/%s/builder.json", s->dir, name);

        return access(path, F_OK) == 0;
}

int kiln_cli_store_open(const char *dir, struct kiln_cli_store **ret, struct kiln_error **err)
{
        _cleanup_free_ char *builders = NULL;
        struct kiln_cli_store *s;
        struct stat st;
        int r;

        if (dir[0] != '/')
                return kiln_error_set(err, -EINVAL, "state directory '%s' is not absolute", dir);
        builders = kiln_xasprintf("%s/builders", dir);
        r = kiln_mkdir_p(builders, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create state directory '%s': %s", dir, strerror(-r));
        if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return kiln_error_set(err, -ENOTDIR, "state directory '%s' is not a directory",
                                      dir);
        s = kiln_xcalloc(1, sizeof(*s));
        s->dir = kiln_xstrdup(dir);
        s->lock_fd = -1;
        *ret = s;
        return 0;
}

struct kiln_cli_store *kiln_cli_store_free(struct kiln_cli_store *s)
{
        if (!s)
                return NULL;
        kiln_cli_store_unlock(s);
        free(s->dir);
        free(s);
        return NULL;
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static int lock_path(const char *path, const char *what, int *ret_fd, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        uint64_t deadline = now_ms() + KILN_CLI_LOCK_TIMEOUT_MS;

        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open lock '%s': %s", path, strerror(errno));
        while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EINTR)
                        continue;
                if (errno != EWOULDBLOCK)
                        return kiln_error_set(err, -errno, "lock '%s': %s", path, strerror(errno));
                if (now_ms() >= deadline)
                        return kiln_error_set(err, -EBUSY,
                                              "%s is busy: another kiln command has held '%s' "
                                              "for %us",
                                              what, path, KILN_CLI_LOCK_TIMEOUT_MS / 1000);
                sleep_ms(20);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int kiln_cli_store_lock(struct kiln_cli_store *s, struct kiln_error **err)
{
        _cleanup_free_ char *path = NULL;

        if (s->lock_fd >= 0)
                return 0;
        path = kiln_xasprintf("%s/.lock", s->dir);
        return lock_path(path, "the builder store", &s->lock_fd, err);
}

void kiln_cli_store_unlock(struct kiln_cli_store *s)
{
        if (s->lock_fd >= 0) {
                (void) close(s->lock_fd);
                s->lock_fd = -1;
        }
}

int kiln_cli_store_lock_builder(struct kiln_cli_store *s, const char *name, int *ret_fd,
                                struct kiln_error **err)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/locks", s->dir);
        _cleanup_free_ char *path = kiln_xasprintf("%s/%s.lock", dir, name);
        _cleanup_free_ char *what = kiln_xasprintf("builder \"%s\"", name);
        int r;

        r = kiln_mkdir_p(dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", dir, strerror(-r));
        return lock_path(path, what, ret_fd, err);
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int kiln_cli_store_list(const struct kiln_cli_store *s, char ***ret, size_t *ret_n,
                        struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/builders", s->dir);
        DIR *d;
        struct dirent *de;
        char **names = kiln_xcalloc(1, sizeof(char *));
        size_t n = 0;

        d = opendir(path);
        if (!d) {
                if (errno == ENOENT) {
                        *ret = names;
                        *ret_n = 0;
                        return 0;
                }
                free(names);
                return kiln_error_set(err, -errno, "list '%s': %s", path, strerror(errno));
        }
        while ((de = readdir(d))) {
                /* Staging directories start with a dot, and builder names
                 * with a letter. */
                if (de->d_name[0] == '.' || !kiln_cli_store_has(s, de->d_name))
                        continue;
                names = kiln_xreallocarray(names, n + 2, sizeof(char *));
                names[n++] = kiln_xstrdup(de->d_name);
                names[n] = NULL;
        }
        closedir(d);
        qsort(names, n, sizeof(char *), name_cmp);
        *ret = names;
        *ret_n = n;
        return 0;
}

int kiln_cli_store_load(const struct kiln_cli_store *s, const char *name,
                        struct kiln_cli_builder **ret, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf text =
                KILN_BUF_INIT(KILN_CLI_LIMIT_BUILDER_FILE);
        _cleanup_free_ char *path = NULL;
        json_error_t jerr;
        json_t *o;
        int r;

        if (kiln_cli_name_validate(name, NULL, NULL) < 0)
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", name);
        path = kiln_xasprintf("%s/builders/%s/builder.json", s->dir, name);
        r = kiln_read_file_at(AT_FDCWD, path, &text);
        if (r == -ENOENT) {
                if (streq(name, KILN_CLI_DEFAULT_BUILDER)) {
                        struct kiln_cli_builder *b = kiln_cli_builder_new(s, name);

                        b->implicit = true;
                        *ret = b;
                        return 0;
                }
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", name);
        }
        if (r < 0)
                return kiln_error_set(err, r, "read '%s': %s", path, strerror(-r));
        o = json_loadb(text.data, text.len, 0, &jerr);
        if (!o || !json_is_object(o)) {
                json_decref(o);
                return kiln_error_set(err, -EINVAL, "read '%s': %d:%d: %s", path, jerr.line,
                                      jerr.column, o ? "not a JSON object" : jerr.text);
        }
        r = builder_from_json(s, name, path, o, ret, err);
        json_decref(o);
        return r;
}

/* Reads a one-line name file; NULL when absent or not a valid name. */
static char *read_name_file(const struct kiln_cli_store *s, const char *file)
{
        _cleanup_(kiln_buf_release) struct kiln_buf text = KILN_BUF_INIT(KILN_CLI_NAME_MAX + 2);
        _cleanup_free_ char *path = kiln_xasprintf("%s/%s", s->dir, file);

        if (kiln_read_file_at(AT_FDCWD, path, &text) < 0)
                return NULL;
        while (text.len > 0 && (text.data[text.len - 1] == '\n' || text.data[text.len - 1] == ' '))
                text.data[--text.len] = '\0';
        if (kiln_cli_name_validate(text.data, NULL, NULL) < 0)
                return NULL;
        return kiln_buf_steal(&text);
}

char *kiln_cli_store_current(const struct kiln_cli_store *s)
{
        static const char *const files[] = { "current", "default-builder" };

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                char *name = read_name_file(s, files[i]);

                if (name && (kiln_cli_store_has(s, name) || streq(name, KILN_CLI_DEFAULT_BUILDER)))
                        return name;
                free(name);
        }
        return kiln_xstrdup(KILN_CLI_DEFAULT_BUILDER);
}

static int write_name_file(struct kiln_cli_store *s, const char *file, const char *name,
                           struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/%s", s->dir, file);
        _cleanup_free_ char *text = NULL;
        int r;

        if (!name) {
                if (unlink(path) < 0 && errno != ENOENT)
                        return kiln_error_set(err, -errno, "remove '%s': %s", path,
                                              strerror(errno));
                return 0;
        }
        text = kiln_xasprintf("%s\n", name);
        r = kiln_write_file_atomic(path, text, strlen(text), 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        return 0;
}

int kiln_cli_store_set_current(struct kiln_cli_store *s, const char *name, bool as_default,
                               struct kiln_error **err)
{
        bool is_default = streq(name, KILN_CLI_DEFAULT_BUILDER);
        int r;

        r = write_name_file(s, "current", name, err);
        if (r < 0 || !as_default)
                return r;
        /* "use --default default" goes back to the implicit fallback. */
        return write_name_file(s, "default-builder", is_default ? NULL : name, err);
}

int kiln_cli_store_forget(struct kiln_cli_store *s, const char *name, struct kiln_error **err)
{
        static const char *const files[] = { "current", "default-builder" };

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *cur = read_name_file(s, files[i]);
                int r;

                if (!cur || !streq(cur, name))
                        continue;
                r = write_name_file(s, files[i], NULL, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

char *kiln_cli_store_default_config(const struct kiln_cli_store *s)
{
        char *path = kiln_xasprintf("%s/buildkitd.default.toml", s->dir);

        if (access(path, F_OK) == 0)
                return path;
        free(path);
        return NULL;
}

/* ---- Making builders ---- */

int kiln_cli_store_prepare(struct kiln_cli_store *s, const char *name, struct kiln_error **err)
{
        _cleanup_free_ char *dir = kiln_cli_store_builder_dir(s, name);
        struct stat st;

        if (kiln_cli_store_has(s, name))
                return kiln_error_set(err, -EEXIST, "builder \"%s\" already exists", name);
        if (lstat(dir, &st) == 0)
                return kiln_cli_rm_rf(dir, "root", err);
        if (mkdir(dir, 0700) < 0)
                return kiln_error_set(err, -errno, "create '%s': %s", dir, strerror(errno));
        return 0;
}

void kiln_cli_store_abandon(struct kiln_cli_store *s, const char *name)
{
        _cleanup_free_ char *dir = kiln_cli_store_builder_dir(s, name);
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

        if (kiln_cli_rm_rf(dir, "root", &e) >= 0)
                (void) rmdir(dir); /* fails, as it should, when root/ is kept */
}

int kiln_cli_store_write_config(const char *config_file, const char *dir,
                                struct kiln_config_diags *diags, struct kiln_error **err)
{
        _cleanup_free_ char *buildkit = kiln_xasprintf("%s/etc/buildkit", dir);
        _cleanup_free_ char *toml = NULL;
        static const char empty[] =
                "# Written by kiln create without --config: kilnd's defaults apply.\n";
        int r;

        if (config_file)
                return kiln_config_install(config_file, buildkit, diags, err);

        r = kiln_mkdir_p(buildkit, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", buildkit, strerror(-r));
        toml = kiln_xasprintf("%s/buildkitd.toml", buildkit);
        r = kiln_write_file_atomic(toml, empty, sizeof(empty) - 1, 0644);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", toml, strerror(-r));
        return 0;
}

/* Writes the implicit default builder to disk. */
static int materialize_default(struct kiln_cli_store *s, struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_config_diags_release) struct kiln_config_diags diags = { 0 };
        _cleanup_free_ char *config = NULL;
        int r;

        r = kiln_cli_store_lock(s, err);
        if (r < 0)
                return r;
        if (kiln_cli_store_has(s, KILN_CLI_DEFAULT_BUILDER))
                goto out; /* another kiln did it meanwhile */

        b = kiln_cli_builder_new(s, KILN_CLI_DEFAULT_BUILDER);
        config = kiln_cli_store_default_config(s);
        b->config_file = config ? kiln_xstrdup(config) : NULL;
        r = kiln_cli_store_prepare(s, b->name, err);
        if (r < 0)
                goto out;
        r = kiln_cli_store_write_config(config, b->dir, &diags, err);
        kiln_config_diags_print(&diags, stderr);
        if (r >= 0)
                r = kiln_cli_store_save(b, b->dir, err);
        if (r < 0) {
                kiln_cli_store_abandon(s, b->name);
                (void) kiln_error_wrap(err, "create the default builder");
        }
out:
        kiln_cli_store_unlock(s);
        return r < 0 ? r : 0;
}

int kiln_cli_store_resolve(struct kiln_cli_store *s, const char *name,
                           struct kiln_cli_builder **ret, struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_free_ char *lower = NULL;
        int r;

        if (name) {
                /* buildx finds instances case-insensitively: names are stored
                 * lower-cased. */
                if (kiln_cli_name_validate(name, &lower, NULL) < 0)
                        return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", name);
        } else
                lower = kiln_cli_store_current(s);

        r = kiln_cli_store_load(s, lower, &b, err);
        if (r < 0)
                return r;
        if (b->implicit) {
                r = materialize_default(s, err);
                if (r < 0)
                        return r;
                b = kiln_cli_builder_free(b);
                r = kiln_cli_store_load(s, lower, &b, err);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(b);
        return 0;
}

/* ---- Removing ---- */

static int rm_rf_at(int parent, const char *name, const char *path, uint64_t mnt_id, unsigned depth,
                    struct kiln_error **err)
{
        struct statx stx;
        DIR *d;
        struct dirent *de;
        int fd, r = 0;

        if (statx(parent, name, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MNT_ID, &stx) < 0)
                return errno == ENOENT ? 0
                                       : kiln_error_set(err, -errno, "remove '%s': %s", path,
                                                        strerror(errno));
        if (!S_ISDIR(stx.stx_mode)) {
                if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
                        return kiln_error_set(err, -errno, "remove '%s': %s", path,
                                              strerror(errno));
                return 0;
        }
        if ((stx.stx_mask & STATX_MNT_ID) && mnt_id && stx.stx_mnt_id != mnt_id)
                return kiln_error_set(err, -EBUSY, "remove '%s': a file system is mounted there",
                                      path);
        if (depth >= RM_RF_MAX_DEPTH)
                return kiln_error_set(err, -ELOOP, "remove '%s': nested too deeply", path);

        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "remove '%s': %s", path, strerror(errno));
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                (void) close(fd);
                return kiln_error_set(err, r, "remove '%s': %s", path, strerror(-r));
        }
        while (r >= 0 && (de = readdir(d))) {
                _cleanup_free_ char *child = NULL;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                child = kiln_xasprintf("%s/%s", path, de->d_name);
                r = rm_rf_at(dirfd(d), de->d_name, child, mnt_id, depth + 1, err);
        }
        closedir(d);
        if (r < 0)
                return r;
        if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return kiln_error_set(err, -errno, "remove '%s': %s", path, strerror(errno));
        return 0;
}

int kiln_cli_rm_rf(const char *path, const char *keep, struct kiln_error **err)
{
        struct statx stx;
        DIR *d;
        struct dirent *de;
        int fd, r = 0;

        if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MNT_ID, &stx) < 0)
                return errno == ENOENT ? 0
                                       : kiln_error_set(err, -errno, "remove '%s': %s", path,
                                                        strerror(errno));
        if (!keep)
                return rm_rf_at(AT_FDCWD, path, path,
                                (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0, 0, err);

        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "remove '%s': %s", path, strerror(errno));
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                (void) close(fd);
                return kiln_error_set(err, r, "remove '%s': %s", path, strerror(-r));
        }
        while (r >= 0 && (de = readdir(d))) {
                _cleanup_free_ char *child = NULL;

                if (streq(de->d_name, ".") || streq(de->d_name, "..") || streq(de->d_name, keep))
                        continue;
                child = kiln_xasprintf("%s/%s", path, de->d_name);
                r = rm_rf_at(dirfd(d), de->d_name, child,
                             (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0, 1, err);
        }
        closedir(d);
        return r;
}

/* ---- Lifecycle ---- */

void kiln_cli_builder_status(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                             struct kiln_cli_status *ret)
{
        *ret = (struct kiln_cli_status){ 0 };
        kiln_cli_builder_driver(b)->status(b, timeout_ms, ret);
}

int kiln_cli_builder_boot(struct kiln_cli_store *s, const struct kiln_cli_builder *b,
                          uint64_t timeout_ms, struct kiln_cli_status *ret, struct kiln_error **err)
{
        _cleanup_close_ int lock = -1;
        int r;

        *ret = (struct kiln_cli_status){ 0 };
        r = kiln_cli_store_lock_builder(s, b->name, &lock, err);
        if (r < 0)
                return kiln_error_wrap(err, "builder \"%s\"", b->name);
        r = kiln_cli_builder_driver(b)->boot(b, timeout_ms, ret, err);
        if (r < 0) {
                kiln_cli_status_release(ret);
                return kiln_error_wrap(err, "builder \"%s\"", b->name);
        }
        return 0;
}

int kiln_cli_builder_stop(struct kiln_cli_store *s, const struct kiln_cli_builder *b,
                          uint64_t timeout_ms, struct kiln_error **err)
{
        _cleanup_close_ int lock = -1;
        int r;

        r = kiln_cli_store_lock_builder(s, b->name, &lock, err);
        if (r < 0)
                return kiln_error_wrap(err, "builder \"%s\"", b->name);
        r = kiln_cli_builder_driver(b)->stop(b, timeout_ms, err);
        if (r < 0)
                return kiln_error_wrap(err, "builder \"%s\"", b->name);
        return 0;
}
