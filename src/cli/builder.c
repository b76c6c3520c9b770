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

const char *kiln_cli_driver_opts_get(const struct kiln_cli_driver_opt *opts, size_t n,
                                     const char *key)
{
        for (size_t i = 0; i < n; i++)
                if (streq(opts[i].key, key))
                        return opts[i].value;
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
                if (kiln_cli_driver_opts_get(b->opts, b->n_opts, files[i].opt))
                        *dst[i] = kiln_cli_builder_path(b, files[i].file);
        sn = kiln_cli_driver_opts_get(b->opts, b->n_opts, "servername");
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

/* What every kiln process may write to the store with: the directories
 * themselves decide who else can. */
#define STORE_DIR_MODE 0700u
/* The prefix of staging directories in builders/. */
#define STAGING_PREFIX ".new-"

char *kiln_cli_store_builder_dir(const struct kiln_cli_store *s, const char *name)
{
        return kiln_xasprintf("%s/builders/%s", s->dir, name);
}

bool kiln_cli_store_has(const struct kiln_cli_store *s, const char *name)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/builders/%s/builder.json", s->dir, name);
        struct stat st;

        return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* As ssh checks ~/.ssh: a directory of the store that someone else owns or
 * may write could make kiln start another program or trust another
 * certificate. -ENOENT (without *err) when it does not exist. */
static int check_private_dir(const char *path, struct kiln_error **err)
{
        struct stat st;

        if (stat(path, &st) < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return kiln_error_set(err, -errno, "builder store '%s': %s", path, strerror(errno));
        }
        if (!S_ISDIR(st.st_mode))
                return kiln_error_set(err, -ENOTDIR, "builder store '%s' is not a directory", path);
        if (st.st_uid != geteuid())
                return kiln_error_set(err, -EPERM,
                                      "refusing builder store '%s': it is owned by uid %u, not "
                                      "by uid %u that runs kiln",
                                      path, (unsigned) st.st_uid, (unsigned) geteuid());
        if (st.st_mode & (S_IWGRP | S_IWOTH))
                return kiln_error_set(err, -EPERM,
                                      "refusing builder store '%s': it is writable by group or "
                                      "others (mode %04o; chmod go-w it)",
                                      path, (unsigned) (st.st_mode & 07777));
        return 0;
}

/* Checks the store's directories that exist. */
static int store_check(const struct kiln_cli_store *s, struct kiln_error **err)
{
        static const char *const subdirs[] = { "builders", "locks" };
        int r;

        r = check_private_dir(s->dir, err);
        if (r == -ENOENT)
                return 0; /* nothing there yet, nothing below it either */
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
                _cleanup_free_ char *path = kiln_xasprintf("%s/%s", s->dir, subdirs[i]);

                r = check_private_dir(path, err);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return 0;
}

/* Creates what is missing of the store, 0700, before anything is written
 * into it. */
static int store_ensure(struct kiln_cli_store *s, struct kiln_error **err)
{
        static const char *const subdirs[] = { "builders", "locks" };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
                _cleanup_free_ char *path = kiln_xasprintf("%s/%s", s->dir, subdirs[i]);

                r = kiln_mkdir_p(path, STORE_DIR_MODE);
                if (r < 0)
                        return kiln_error_set(err, r, "create builder store '%s': %s", path,
                                              strerror(-r));
        }
        return store_check(s, err);
}

int kiln_cli_store_open(const char *dir, struct kiln_cli_store **ret, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        int r;

        if (dir[0] != '/')
                return kiln_error_set(err, -EINVAL, "state directory '%s' is not absolute", dir);
        s = kiln_xcalloc(1, sizeof(*s));
        s->dir = kiln_xstrdup(dir);
        s->lock_fd = -1;
        r = store_check(s, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
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

/* Whether fd is still the file at path: a lock file removed (and maybe made
 * again) while we waited for it locks nothing. */
static bool lock_is_current(int fd, const char *path)
{
        struct stat a, b;

        return fstat(fd, &a) == 0 && a.st_nlink > 0 && lstat(path, &b) == 0 &&
               a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int lock_path(const char *path, const char *what, int *ret_fd, struct kiln_error **err)
{
        uint64_t deadline = kiln_cli_now_ms() + KILN_CLI_LOCK_TIMEOUT_MS;

        for (;;) {
                _cleanup_close_ int fd = -1;

                fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
                if (fd < 0)
                        return kiln_error_set(err, -errno, "open lock '%s': %s", path,
                                              strerror(errno));
                while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EWOULDBLOCK)
                                return kiln_error_set(err, -errno, "lock '%s': %s", path,
                                                      strerror(errno));
                        if (kiln_cli_interrupted())
                                return kiln_error_set(err, -EINTR,
                                                      "interrupted while waiting for %s", what);
                        if (kiln_cli_now_ms() >= deadline)
                                return kiln_error_set(err, -EBUSY,
                                                      "%s is busy: another kiln command has held "
                                                      "'%s' for %us",
                                                      what, path, KILN_CLI_LOCK_TIMEOUT_MS / 1000);
                        kiln_cli_sleep_ms(20);
                }
                if (lock_is_current(fd, path)) {
                        *ret_fd = TAKE_FD(fd);
                        return 0;
                }
        }
}

int kiln_cli_store_lock(struct kiln_cli_store *s, struct kiln_error **err)
{
        _cleanup_free_ char *path = NULL;
        int r;

        if (s->lock_fd >= 0)
                return 0;
        r = store_ensure(s, err);
        if (r < 0)
                return r;
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

static char *builder_lock_path(const struct kiln_cli_store *s, const char *name)
{
        return kiln_xasprintf("%s/locks/%s.lock", s->dir, name);
}

int kiln_cli_store_lock_builder(struct kiln_cli_store *s, const char *name, int *ret_fd,
                                struct kiln_error **err)
{
        _cleanup_free_ char *path = builder_lock_path(s, name);
        _cleanup_free_ char *what = kiln_xasprintf("builder \"%s\"", name);
        int r;

        r = store_ensure(s, err);
        if (r < 0)
                return r;
        return lock_path(path, what, ret_fd, err);
}

void kiln_cli_store_drop_builder_lock(struct kiln_cli_store *s, const char *name, int fd)
{
        _cleanup_free_ char *path = builder_lock_path(s, name);

        /* Unlinked while held: whoever waits on this file sees it is gone
         * (lock_is_current) and locks the next one instead. */
        if (lock_is_current(fd, path))
                (void) unlink(path);
        (void) close(fd);
}

int kiln_cli_store_lock_existing(struct kiln_cli_store *s, const char *name, int *ret_fd,
                                 struct kiln_error **err)
{
        int fd = -1, r;

        r = kiln_cli_store_lock_builder(s, name, &fd, err);
        if (r < 0)
                return r;
        if (!kiln_cli_store_has(s, name)) {
                kiln_cli_store_drop_builder_lock(s, name, fd);
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", name);
        }
        *ret_fd = fd;
        return 0;
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
        char buf[64];
        int r;

        if (kiln_cli_name_validate(name, NULL, NULL) < 0)
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", name);
        path = kiln_xasprintf("%s/builders/%s/builder.json", s->dir, name);
        r = kiln_read_file_at_flags(AT_FDCWD, path, O_NOFOLLOW, &text);
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
                return kiln_error_set(err, r, "read '%s': %s", path,
                                      kiln_read_file_strerror(r, text.max, buf));
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

/* Reads a one-line name file into *ret: NULL when it does not exist. */
static int read_name_file(const struct kiln_cli_store *s, const char *file, char **ret,
                          struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf text = KILN_BUF_INIT(KILN_CLI_NAME_MAX + 2);
        _cleanup_free_ char *path = kiln_xasprintf("%s/%s", s->dir, file);
        char buf[64];
        int r;

        r = kiln_read_file_at_flags(AT_FDCWD, path, O_NOFOLLOW, &text);
        if (r == -ENOENT) {
                *ret = NULL;
                return 0;
        }
        if (r < 0)
                return kiln_error_set(err, r, "read '%s': %s", path,
                                      kiln_read_file_strerror(r, text.max, buf));
        while (text.len > 0 && (text.data[text.len - 1] == '\n' || text.data[text.len - 1] == ' '))
                text.data[--text.len] = '\0';
        r = kiln_cli_name_validate(text.data, NULL, err);
        if (r < 0)
                return kiln_error_wrap(err, "read '%s'", path);
        *ret = kiln_buf_steal(&text);
        return 0;
}

static const char *const name_files[] = { "current", "default-builder" };

int kiln_cli_store_current(const struct kiln_cli_store *s, char **ret, struct kiln_error **err)
{
        for (size_t i = 0; i < ELEMENTSOF(name_files); i++) {
                _cleanup_free_ char *name = NULL;
                int r;

                r = read_name_file(s, name_files[i], &name, err);
                if (r < 0)
                        return r;
                if (name &&
                    (kiln_cli_store_has(s, name) || streq(name, KILN_CLI_DEFAULT_BUILDER))) {
                        *ret = TAKE_PTR(name);
                        return 0;
                }
        }
        *ret = kiln_xstrdup(KILN_CLI_DEFAULT_BUILDER);
        return 0;
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
        for (size_t i = 0; i < ELEMENTSOF(name_files); i++) {
                _cleanup_free_ char *cur = NULL;
                int r;

                /* One that cannot be read may name it: say so, rather
                 * than leave a removed builder current. */
                r = read_name_file(s, name_files[i], &cur, err);
                if (r < 0)
                        return r;
                if (!cur || !streq(cur, name))
                        continue;
                r = write_name_file(s, name_files[i], NULL, err);
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

/* ---- Interruption ---- */

static volatile sig_atomic_t interrupt_signal;
static bool interrupt_caught;
static const int interrupt_signals[] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction interrupt_saved[ELEMENTSOF(interrupt_signals)];

static void on_interrupt(int sig)
{
        if (!interrupt_signal)
                interrupt_signal = sig;
}

void kiln_cli_interrupt_catch(void)
{
        struct sigaction sa = { .sa_handler = on_interrupt };

        if (interrupt_caught)
                return;
        /* No SA_RESTART: a sleep in a lock wait returns early. */
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < ELEMENTSOF(interrupt_signals); i++) {
                (void) sigaction(interrupt_signals[i], NULL, &interrupt_saved[i]);
                /* A shell's background job ignores SIGINT: keep it so. */
                if (interrupt_signals[i] == SIGINT && interrupt_saved[i].sa_handler == SIG_IGN)
                        continue;
                (void) sigaction(interrupt_signals[i], &sa, NULL);
        }
        interrupt_caught = true;
}

int kiln_cli_interrupted(void)
{
        return interrupt_signal;
}

void kiln_cli_interrupt_release(void)
{
        int sig = interrupt_signal;

        if (!interrupt_caught)
                return;
        for (size_t i = 0; i < ELEMENTSOF(interrupt_signals); i++)
                (void) sigaction(interrupt_signals[i], &interrupt_saved[i], NULL);
        interrupt_caught = false;
        if (sig) {
                fflush(NULL);
                (void) signal(sig, SIG_DFL);
                (void) raise(sig);
        }
}

/* ---- Making builders ---- */

struct kiln_cli_staging {
        char *name;
        char *dir; /* builders/.new-<name>-XXXXXX, absolute */
        int lock;  /* an fd of dir, flock'ed: its maker is alive */
        bool published;
};

const char *kiln_cli_staging_dir(const struct kiln_cli_staging *st)
{
        return st->dir;
}

struct kiln_cli_staging *kiln_cli_staging_free(struct kiln_cli_staging *st)
{
        if (!st)
                return NULL;
        if (!st->published)
                (void) kiln_rm_rf_at(AT_FDCWD, st->dir, NULL, NULL);
        if (st->lock >= 0)
                (void) close(st->lock);
        free(st->name);
        free(st->dir);
        free(st);
        return NULL;
}

/* Removes the staging directories of kilns that died making a builder
 * (their flock went with them). Needs the store lock, which
 * kiln_cli_store_stage holds from mkdtemp to flock, so a staging directory
 * is never seen unlocked while its maker lives. */
static void remove_dead_staging(const struct kiln_cli_store *s)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/builders", s->dir);
        struct dirent *de;
        DIR *d;

        d = opendir(path);
        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_close_ int fd = -1;

                if (!startswith(de->d_name, STAGING_PREFIX))
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
                        continue;
                (void) kiln_rm_rf_at(dirfd(d), de->d_name, NULL, NULL);
        }
        closedir(d);
}

int kiln_cli_store_stage(struct kiln_cli_store *s, const char *name, struct kiln_cli_staging **ret,
                         struct kiln_error **err)
{
        _cleanup_(kiln_cli_staging_freep) struct kiln_cli_staging *st = NULL;
        _cleanup_free_ char *tmpl = NULL;
        bool locked = s->lock_fd >= 0;
        int r;

        r = kiln_cli_store_lock(s, err);
        if (r < 0)
                return r;
        remove_dead_staging(s);
        tmpl = kiln_xasprintf("%s/builders/" STAGING_PREFIX "%s-XXXXXX", s->dir, name);
        if (!mkdtemp(tmpl)) {
                r = kiln_error_set(err, -errno, "create a directory in '%s/builders': %s", s->dir,
                                   strerror(errno));
                goto out;
        }
        st = kiln_xcalloc(1, sizeof(*st));
        st->name = kiln_xstrdup(name);
        st->dir = TAKE_PTR(tmpl);
        st->lock = -1;
        st->lock = open(st->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (st->lock < 0 || flock(st->lock, LOCK_EX | LOCK_NB) < 0) {
                r = kiln_error_set(err, -errno, "lock '%s': %s", st->dir, strerror(errno));
                goto out;
        }
        *ret = TAKE_PTR(st);
out:
        if (!locked)
                kiln_cli_store_unlock(s);
        return r;
}

/* Moves old/root, the state an `rm --keep-state` kept, into the staging
 * directory, removes the rest of old and returns whether root was moved. */
static int take_over_state(const char *old, const char *staging, bool *moved,
                           struct kiln_error **err)
{
        _cleanup_free_ char *from = kiln_xasprintf("%s/root", old);
        _cleanup_free_ char *to = kiln_xasprintf("%s/root", staging);
        struct stat st;

        *moved = false;
        if (lstat(from, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (rename(from, to) < 0)
                        return kiln_error_set(err, -errno, "take over the state in '%s': %s", from,
                                              strerror(errno));
                *moved = true;
        }
        return kiln_rm_rf_at(AT_FDCWD, old, NULL, err);
}

static int publish_locked(struct kiln_cli_store *s, struct kiln_cli_staging *st, bool use,
                          struct kiln_error **err)
{
        _cleanup_free_ char *final = kiln_cli_store_builder_dir(s, st->name);
        _cleanup_free_ char *builders = kiln_xasprintf("%s/builders", s->dir);
        _cleanup_close_ int dfd = -1;
        bool moved = false;
        struct stat sb;
        int r;

        if (kiln_cli_interrupted())
                return kiln_error_set(err, -EINTR, "interrupted");
        if (kiln_cli_store_has(s, st->name))
                return kiln_error_set(err, -EEXIST, "builder \"%s\" already exists", st->name);
        if (lstat(final, &sb) == 0) {
                r = take_over_state(final, st->dir, &moved, err);
                if (r < 0)
                        goto undo;
        }
        if (renameat2(AT_FDCWD, st->dir, AT_FDCWD, final, RENAME_NOREPLACE) < 0 &&
            (errno != EINVAL || rename(st->dir, final) < 0)) {
                r = kiln_error_set(err, -errno, "rename '%s' to '%s': %s", st->dir, final,
                                   strerror(errno));
                goto undo;
        }
        st->published = true;
        dfd = open(builders, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);
        if (use)
                return kiln_cli_store_set_current(s, st->name, false, err);
        return 0;
undo:
        /* The kept state goes back where rm --keep-state left it. */
        if (moved) {
                _cleanup_free_ char *from = kiln_xasprintf("%s/root", st->dir);
                _cleanup_free_ char *to = kiln_xasprintf("%s/root", final);

                (void) mkdir(final, STORE_DIR_MODE);
                (void) rename(from, to);
        }
        return r;
}

int kiln_cli_store_publish(struct kiln_cli_store *s, struct kiln_cli_staging *st, bool use,
                           struct kiln_error **err)
{
        int lock = -1, r;

        r = kiln_cli_store_lock_builder(s, st->name, &lock, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_lock(s, err);
        if (r >= 0)
                r = publish_locked(s, st, use, err);
        kiln_cli_store_unlock(s);
        /* A builder lock file of a builder that did not come to be goes. */
        if (st->published || kiln_cli_store_has(s, st->name))
                (void) close(lock);
        else
                kiln_cli_store_drop_builder_lock(s, st->name, lock);
        return r;
}

int kiln_cli_store_write_config(const char *config_file, const char *dir, const char *final_dir,
                                struct kiln_config_diags *diags, struct kiln_error **err)
{
        _cleanup_free_ char *buildkit = kiln_xasprintf("%s/etc/buildkit", dir);
        _cleanup_free_ char *final = kiln_xasprintf("%s/etc/buildkit", final_dir);
        _cleanup_free_ char *toml = NULL;
        static const char empty[] =
                "# Written by kiln create without --config: kilnd's defaults apply.\n";
        int r;

        if (config_file)
                return kiln_config_install_as(config_file, buildkit, final, diags, err);

        r = kiln_mkdir_p(buildkit, STORE_DIR_MODE);
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
        _cleanup_(kiln_cli_staging_freep) struct kiln_cli_staging *st = NULL;
        _cleanup_free_ char *config = NULL;
        int r;

        if (kiln_cli_store_has(s, KILN_CLI_DEFAULT_BUILDER))
                return 0;
        b = kiln_cli_builder_new(s, KILN_CLI_DEFAULT_BUILDER);
        config = kiln_cli_store_default_config(s);
        b->config_file = config ? kiln_xstrdup(config) : NULL;
        r = kiln_cli_store_stage(s, b->name, &st, err);
        if (r >= 0) {
                r = kiln_cli_store_write_config(config, kiln_cli_staging_dir(st), b->dir, &diags,
                                                err);
                kiln_config_diags_print(&diags, stderr);
        }
        if (r >= 0)
                r = kiln_cli_store_save(b, kiln_cli_staging_dir(st), err);
        if (r >= 0)
                r = kiln_cli_store_publish(s, st, false, err);
        if (r == -EEXIST) {
                /* Another kiln did it meanwhile: what we wanted. */
                *err = kiln_error_free(*err);
                return 0;
        }
        if (r < 0)
                return kiln_error_wrap(err, "create the default builder");
        return 0;
}

int kiln_cli_store_resolve(struct kiln_cli_store *s, const char *name, bool materialize,
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
        } else {
                r = kiln_cli_store_current(s, &lower, err);
                if (r < 0)
                        return r;
        }

        r = kiln_cli_store_load(s, lower, &b, err);
        if (r < 0)
                return r;
        if (b->implicit && materialize) {
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

int kiln_cli_open_builder(const struct kiln_cli *cli, const struct kiln_cli_args *args,
                          bool materialize, struct kiln_cli_store **ret_store,
                          struct kiln_cli_builder **ret, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        int r;

        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_resolve(s, args->n_pos > 0 ? args->pos[0] : cli->builder, materialize,
                                   ret, err);
        if (r < 0)
                return r;
        *ret_store = TAKE_PTR(s);
        return 0;
}

/* ---- Lifecycle ---- */

int kiln_cli_builder_probe(const struct kiln_cli_builder *b, uint64_t timeout_ms, json_t **ret,
                           struct kiln_error **err)
{
        struct kiln_cli_http_target t;

        kiln_cli_builder_http_target(b, &t);
        return kiln_cli_http_get_json(&t, "/v1/info", timeout_ms, ret, err);
}

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
        r = kiln_cli_store_lock_existing(s, b->name, &lock, err);
        if (r < 0)
                return r;
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

        if (b->implicit)
                return 0; /* never written, never started */
        r = kiln_cli_store_lock_existing(s, b->name, &lock, err);
        if (r < 0)
                return r;
        r = kiln_cli_builder_driver(b)->stop(b, timeout_ms, err);
        if (r < 0)
                return kiln_error_wrap(err, "builder \"%s\"", b->name);
        return 0;
}
