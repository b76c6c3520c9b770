/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln build's outputs: buildx's -o/--push/--load/-t turned into the
 * exporter entries the daemon gets, and the client's half of the outputs
 * whose bytes come back (oci, docker, tar, local): a file replaced
 * atomically, stdout, a directory extracted safely, or `docker load`.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "archive-lazy.h"
#include "cli.h"
#include "config/address.h"
#include "http.h"

/* How long an export download may take to connect, and stay silent. */
#define EXPORT_CONNECT_TIMEOUT_MS 20000L
#define EXPORT_IDLE_TIMEOUT_S     600L
/* A daemon's error answer to an export download. */
#define EXPORT_ERROR_BODY_MAX (64u << 10)
/* Bytes handed to the extraction or to `docker load` at once. */
#define EXTRACT_BLOCK (256u << 10)

extern char **environ;

/* ---- parsing ---- */

static const char *const known_types[] = { "image", "oci", "docker", "local", "tar" };

static void kv_set(struct kiln_api_kv **kv, size_t *n, const char *key, const char *value)
{
        for (size_t i = 0; i < *n; i++)
                if (streq((*kv)[i].key, key)) {
                        free((*kv)[i].value);
                        (*kv)[i].value = kiln_xstrdup(value);
                        return;
                }
        *kv = kiln_xreallocarray(*kv, *n + 1, sizeof(**kv));
        (*kv)[*n] = (struct kiln_api_kv){ .key = kiln_xstrdup(key), .value = kiln_xstrdup(value) };
        (*n)++;
}

static const char *kv_get(const struct kiln_api_kv *kv, size_t n, const char *key)
{
        for (size_t i = 0; i < n; i++)
                if (streq(kv[i].key, key))
                        return kv[i].value;
        return NULL;
}

static void output_release(struct kiln_cli_output *o)
{
        free(o->api.type);
        for (size_t i = 0; i < o->api.n_attrs; i++) {
                free(o->api.attrs[i].key);
                free(o->api.attrs[i].value);
        }
        free(o->api.attrs);
        free(o->dest);
        *o = (struct kiln_cli_output){ 0 };
}

void kiln_cli_outputs_release(struct kiln_cli_outputs *o)
{
        for (size_t i = 0; i < o->n; i++)
                output_release(&o->v[i]);
        free(o->v);
        *o = (struct kiln_cli_outputs){ 0 };
}

static struct kiln_cli_output *outputs_add(struct kiln_cli_outputs *o, const char *type)
{
        o->v = kiln_xreallocarray(o->v, o->n + 1, sizeof(*o->v));
        o->v[o->n] = (struct kiln_cli_output){ .api.type = kiln_xstrdup(type) };
        return &o->v[o->n++];
}

/* Go's strconv.ParseBool: 1 true, 0 false, -1 not a boolean. */
static int parse_bool(const char *s)
{
        static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };

        if (!s)
                return -1;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (streq(s, yes[i]))
                        return 1;
                if (streq(s, no[i]))
                        return 0;
        }
        return -1;
}

/* buildx's ExportEntry.UnmarshalText: "type=...,dest=...,k=v", a bare path
 * (type local) or "-" (type tar to stdout). Keys are lower-cased and
 * trimmed, a later key wins. *ret's dest is "" when none was given. */
static int parse_entry(const char *s, struct kiln_cli_output *ret, struct kiln_error **err)
{
        _cleanup_(kiln_cli_strv_freep) char **fields = NULL;
        size_t n = 0;
        int r;

        r = kiln_cli_csv_split(s, &fields, &n, err);
        if (r < 0)
                return r;
        if (n == 1 && streq(fields[0], s) && !startswith(s, "type=")) {
                ret->api.type = kiln_xstrdup(streq(s, "-") ? "tar" : "local");
                ret->dest = kiln_xstrdup(s);
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                const char *eq = strchr(fields[i], '=');
                const char *k = fields[i], *kend;
                _cleanup_free_ char *key = NULL;

                if (!eq)
                        return kiln_error_set(err, -EINVAL, "invalid value %s", fields[i]);
                kend = eq;
                while (k < kend && (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r'))
                        k++;
                while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t' || kend[-1] == '\n' ||
                                    kend[-1] == '\r'))
                        kend--;
                key = kiln_xstrndup(k, (size_t) (kend - k));
                for (char *c = key; *c; c++)
                        *c = ascii_tolower(*c);
                if (streq(key, "type")) {
                        free(ret->api.type);
                        ret->api.type = kiln_xstrdup(eq + 1);
                } else if (streq(key, "dest")) {
                        free(ret->dest);
                        ret->dest = kiln_xstrdup(eq + 1);
                } else
                        kv_set(&ret->api.attrs, &ret->api.n_attrs, key, eq + 1);
        }
        if (!ret->api.type || !ret->api.type[0])
                return kiln_error_set(err, -EINVAL, "type is required for output");
        if (!ret->dest)
                ret->dest = kiln_xstrdup("");
        return 0;
}

/* buildx's CreateExports for one entry: the type's destination rules. */
static int resolve_entry(struct kiln_cli_output *o, bool stdout_is_terminal, bool *stdout_used,
                         struct kiln_error **err)
{
        const char *type = o->api.type;
        bool file = false, dir = false, known = false;
        struct stat st;

        if (streq(type, "local"))
                dir = true;
        else if (streq(type, "tar"))
                file = true;
        else if (streq(type, "oci") || streq(type, "docker")) {
                int tar = parse_bool(kv_get(o->api.attrs, o->api.n_attrs, "tar"));

                file = tar != 0;
                dir = tar == 0;
                /* the daemon is told in one spelling */
                if (tar >= 0)
                        kv_set(&o->api.attrs, &o->api.n_attrs, "tar", tar ? "true" : "false");
        } else if (streq(type, "registry")) {
                free(o->api.type);
                o->api.type = kiln_xstrdup("image");
                kv_set(&o->api.attrs, &o->api.n_attrs, "push", "true");
                if (!kv_get(o->api.attrs, o->api.n_attrs, "unpack"))
                        kv_set(&o->api.attrs, &o->api.n_attrs, "unpack", "false");
        }
        type = o->api.type;
        for (size_t i = 0; i < ELEMENTSOF(known_types); i++)
                known = known || streq(type, known_types[i]);
        if (!known && !streq(type, "cacheonly"))
                return kiln_error_set(err, -EINVAL, "exporter \"%s\" could not be found", type);

        if (dir) {
                if (!o->dest[0])
                        return kiln_error_set(err, -EINVAL, "dest is required for %s exporter",
                                              type);
                if (streq(o->dest, "-"))
                        return kiln_error_set(err, -EINVAL, "dest cannot be stdout for %s exporter",
                                              type);
                if (stat(o->dest, &st) < 0) {
                        if (errno != ENOENT)
                                return kiln_error_set(err, -errno,
                                                      "invalid destination directory: %s: stat "
                                                      "%s: %s",
                                                      o->dest, o->dest, strerror(errno));
                } else if (!S_ISDIR(st.st_mode))
                        return kiln_error_set(err, -EINVAL, "destination directory %s is a file",
                                              o->dest);
                o->sink = KILN_CLI_OUTPUT_SINK_DIR;
                return 0;
        }
        if (!file) {
                free(o->dest);
                o->dest = NULL;
                o->sink = KILN_CLI_OUTPUT_SINK_NONE;
                return 0;
        }
        if (!o->dest[0] && !streq(type, "docker")) {
                free(o->dest);
                o->dest = kiln_xstrdup("-");
        }
        if (streq(o->dest, "-")) {
                if (*stdout_used)
                        return kiln_error_set(err, -EINVAL,
                                              "multiple outputs configured to write to stdout");
                if (stdout_is_terminal)
                        return kiln_error_set(err, -EINVAL,
                                              "dest file is required for %s exporter. refusing to "
                                              "write to console",
                                              type);
                *stdout_used = true;
                free(o->dest);
                o->dest = NULL;
                o->sink = KILN_CLI_OUTPUT_SINK_STDOUT;
                return 0;
        }
        if (!o->dest[0]) {
                /* docker without dest: into the local Docker engine */
                free(o->dest);
                o->dest = NULL;
                o->sink = KILN_CLI_OUTPUT_SINK_DOCKER_LOAD;
                return 0;
        }
        if (stat(o->dest, &st) < 0) {
                if (errno != ENOENT)
                        return kiln_error_set(err, -errno,
                                              "invalid destination file: %s: stat %s: %s", o->dest,
                                              o->dest, strerror(errno));
        } else if (S_ISDIR(st.st_mode))
                return kiln_error_set(err, -EINVAL, "destination file %s is a directory", o->dest);
        o->sink = KILN_CLI_OUTPUT_SINK_FILE;
        return 0;
}

int kiln_cli_outputs_parse(const struct kiln_cli_outputs_options *opt, struct kiln_cli_outputs *ret,
                           struct kiln_error **err)
{
        bool stdout_used = false, have = false;
        int r;

        *ret = (struct kiln_cli_outputs){ 0 };
        for (size_t i = 0; i < opt->n_specs; i++) {
                struct kiln_cli_output *o;

                if (!opt->specs[i][0])
                        continue;
                o = outputs_add(ret, "");
                free(o->api.type);
                o->api.type = NULL;
                r = parse_entry(opt->specs[i], o, err);
                if (r < 0)
                        return r;
                r = resolve_entry(o, opt->stdout_is_terminal, &stdout_used, err);
                if (r < 0)
                        return r;
        }

        if (opt->push) {
                for (size_t i = 0; i < ret->n; i++) {
                        struct kiln_cli_output *o = &ret->v[i];

                        if (!streq(o->api.type, "image"))
                                continue;
                        kv_set(&o->api.attrs, &o->api.n_attrs, "push", "true");
                        if (!kv_get(o->api.attrs, o->api.n_attrs, "unpack"))
                                kv_set(&o->api.attrs, &o->api.n_attrs, "unpack", "false");
                        have = true;
                }
                if (!have) {
                        struct kiln_cli_output *o = outputs_add(ret, "image");

                        kv_set(&o->api.attrs, &o->api.n_attrs, "push", "true");
                        kv_set(&o->api.attrs, &o->api.n_attrs, "unpack", "false");
                }
        }
        if (opt->load) {
                have = false;
                for (size_t i = 0; i < ret->n; i++)
                        have = have || ret->v[i].sink == KILN_CLI_OUTPUT_SINK_DOCKER_LOAD;
                if (!have)
                        outputs_add(ret, "docker")->sink = KILN_CLI_OUTPUT_SINK_DOCKER_LOAD;
        }

        if (opt->n_tags > 0) {
                struct kiln_buf names = KILN_BUF_INIT(SIZE_MAX);

                for (size_t i = 0; i < opt->n_tags; i++)
                        if (kiln_buf_puts(&names, i ? "," : "") < 0 ||
                            kiln_buf_puts(&names, opt->tags[i]) < 0 ||
                            kiln_buf_putc(&names, '\0') < 0) {
                                kiln_buf_release(&names);
                                return kiln_error_set(err, -ENOMEM, "out of memory");
                        } else
                                names.len--;
                for (size_t i = 0; i < ret->n; i++) {
                        struct kiln_cli_output *o = &ret->v[i];

                        if (streq(o->api.type, "image") || streq(o->api.type, "oci") ||
                            streq(o->api.type, "docker"))
                                kv_set(&o->api.attrs, &o->api.n_attrs, "name", names.data);
                }
                kiln_buf_release(&names);
        } else
                for (size_t i = 0; i < ret->n; i++) {
                        const struct kiln_cli_output *o = &ret->v[i];
                        const char *name = kv_get(o->api.attrs, o->api.n_attrs, "name");

                        if (streq(o->api.type, "image") && (!name || !name[0]) &&
                            parse_bool(kv_get(o->api.attrs, o->api.n_attrs, "push")) == 1)
                                return kiln_error_set(err, -EINVAL,
                                                      "tag is needed when pushing to registry");
                }

        /* cacheonly opts out of any output on purpose */
        for (size_t i = 0; i < ret->n;) {
                if (streq(ret->v[i].api.type, "cacheonly")) {
                        ret->cache_only = true;
                        output_release(&ret->v[i]);
                        memmove(&ret->v[i], &ret->v[i + 1], (ret->n - i - 1) * sizeof(*ret->v));
                        ret->n--;
                } else
                        i++;
        }
        if (ret->n > KILN_API_LIMIT_BUILD_OUTPUTS)
                return kiln_error_set(err, -E2BIG, "more than %u outputs",
                                      KILN_API_LIMIT_BUILD_OUTPUTS);
        for (size_t i = 0; i < ret->n; i++)
                if (ret->v[i].api.n_attrs > KILN_API_LIMIT_OUTPUT_ATTRS)
                        return kiln_error_set(err, -E2BIG,
                                              "output type=%s: more than %u attributes",
                                              ret->v[i].api.type, KILN_API_LIMIT_OUTPUT_ATTRS);
        return 0;
}

void kiln_cli_outputs_to_request(const struct kiln_cli_outputs *o, struct kiln_api_build_request *r)
{
        if (o->n == 0)
                return;
        r->outputs = kiln_xreallocarray(r->outputs, r->n_outputs + o->n, sizeof(*r->outputs));
        for (size_t i = 0; i < o->n; i++) {
                const struct kiln_api_build_output *src = &o->v[i].api;
                struct kiln_api_build_output *d = &r->outputs[r->n_outputs++];

                *d = (struct kiln_api_build_output){ .type = kiln_xstrdup(src->type) };
                for (size_t k = 0; k < src->n_attrs; k++)
                        kv_set(&d->attrs, &d->n_attrs, src->attrs[k].key, src->attrs[k].value);
        }
}

bool kiln_cli_outputs_need_docker(const struct kiln_cli_outputs *o)
{
        for (size_t i = 0; i < o->n; i++)
                if (o->v[i].sink == KILN_CLI_OUTPUT_SINK_DOCKER_LOAD)
                        return true;
        return false;
}

/* ---- the Docker engine ---- */

const char *kiln_cli_docker_host(void)
{
        const char *h = getenv("DOCKER_HOST");

        return h && h[0] ? h : KILN_CLI_DOCKER_HOST_DEFAULT;
}

static bool in_path(const char *prog)
{
        const char *path = getenv("PATH");
        _cleanup_free_ char *copy = kiln_xstrdup(path && path[0] ? path : "/usr/bin:/bin");
        char *save = NULL;

        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                _cleanup_free_ char *p = kiln_xasprintf("%s/%s", d[0] ? d : ".", prog);

                if (access(p, X_OK) == 0)
                        return true;
        }
        return false;
}

int kiln_cli_docker_check(const char *host, struct kiln_error **err)
{
        static const char hint[] = "build with -o type=oci,dest=FILE or -o type=docker,dest=FILE "
                                   "instead";
        _cleanup_(kiln_config_address_release) struct kiln_config_address a = {
                .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID
        };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_cli_http_response_release) struct kiln_cli_http_response resp = { 0 };
        _cleanup_free_ char *ca = NULL, *cert = NULL, *key = NULL;
        const char *tls = getenv("DOCKER_TLS_VERIFY");
        struct kiln_cli_http_target t = { .address = host, .plain_http = true };
        int r;

        if (!in_path("docker"))
                return kiln_error_set(err, -ENOENT,
                                      "--load: the docker command is not in PATH (it loads the "
                                      "image into the engine at %s): %s",
                                      host, hint);
        if (!startswith(host, "unix://") && !startswith(host, "tcp://")) {
                log_debug("--load: DOCKER_HOST %s is left to the docker command", host);
                return 0;
        }
        r = kiln_config_address_parse(host, &a, &e);
        if (r < 0)
                return kiln_error_set(err, -EHOSTDOWN,
                                      "--load: no Docker engine answers at %s (%s): %s", host,
                                      kiln_error_message(e), hint);
        if (a.kind == KILN_CONFIG_ADDRESS_TCP && tls && tls[0]) {
                const char *certs = getenv("DOCKER_CERT_PATH");
                const char *home = getenv("HOME");
                _cleanup_free_ char *dir =
                        certs && certs[0]
                                ? kiln_xstrdup(certs)
                                : kiln_xasprintf("%s/.docker", home && home[0] ? home : "");

                ca = kiln_xasprintf("%s/ca.pem", dir);
                cert = kiln_xasprintf("%s/cert.pem", dir);
                key = kiln_xasprintf("%s/key.pem", dir);
                t = (struct kiln_cli_http_target){
                        .address = host, .ca_file = ca, .cert_file = cert, .key_file = key
                };
        }
        r = kiln_cli_http_request(&t, "GET", "/_ping", NULL, 0, KILN_CLI_DOCKER_PING_TIMEOUT_MS,
                                  &resp, &e);
        if (r < 0) {
                if (a.kind == KILN_CONFIG_ADDRESS_UNIX && access(a.path, F_OK) < 0)
                        return kiln_error_set(err, -EHOSTDOWN,
                                              "--load: no Docker engine answers at %s (no socket "
                                              "at '%s'): %s",
                                              host, a.path, hint);
                if (a.kind == KILN_CONFIG_ADDRESS_UNIX && r == -ECONNREFUSED)
                        return kiln_error_set(err, -EHOSTDOWN,
                                              "--load: no Docker engine answers at %s (connection "
                                              "refused on '%s'): %s",
                                              host, a.path, hint);
                return kiln_error_set(err, -EHOSTDOWN,
                                      "--load: no Docker engine answers at %s (%s): %s", host,
                                      kiln_error_message(e), hint);
        }
        if (resp.status != 200)
                return kiln_error_set(err, -EHOSTDOWN,
                                      "--load: no Docker engine answers at %s (GET /_ping answered "
                                      "%ld): %s",
                                      host, resp.status, hint);
        return 0;
}

/* ---- output writers ---- */

struct kiln_cli_output_writer {
        enum kiln_cli_output_sink sink;
        char *dest;
        /* FILE: the temporary file beside target (dest, or what its
         * symbolic link names), renamed over it at the end; NULL when the
         * bytes go straight into dest (a device, a pipe, a dangling link) */
        int fd;
        char *tmp;
        char *target;
        /* DIR and DOCKER_LOAD: the socket the bytes are sent into, the
         * other end read by the extraction thread or the child */
        int sock;
        /* DIR */
        int dir_fd;
        pthread_t thread;
        bool thread_running;
        atomic_bool stop;
        int extract_r;
        struct kiln_error *extract_err;
        int extract_sock;
        /* DOCKER_LOAD */
        pid_t pid;
        int out_fd; /* a memfd with what docker load printed */
        char *host;
};

static int current_umask(void)
{
        _cleanup_free_ char *text = NULL;
        struct kiln_buf b = KILN_BUF_INIT(64u << 10);
        unsigned m = 022;

        if (kiln_read_file_at(AT_FDCWD, "/proc/self/status", &b) == 0 &&
            kiln_buf_putc(&b, '\0') == 0) {
                const char *u = strstr(b.data, "\nUmask:");

                if (u)
                        (void) sscanf(u + 7, "%o", &m);
        }
        kiln_buf_release(&b);
        return (int) (m & 0777);
}

/* Where dest's bytes go, as buildx's os.Create writes through: a regular
 * file (or a new name) is replaced atomically by a temporary file beside
 * it; a symbolic link's target is replaced the same way, so the link
 * stays; anything else that exists (/dev/null, a pipe, a terminal) and a
 * dangling link are opened and written in place. */
static int file_open(struct kiln_cli_output_writer *w, struct kiln_error **err)
{
        struct stat st;
        const char *slash, *base;
        _cleanup_free_ char *dir = NULL;

        if (lstat(w->dest, &st) == 0 && S_ISLNK(st.st_mode))
                w->target = realpath(w->dest, NULL);
        else if (lstat(w->dest, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                w->target = NULL;
        else
                w->target = kiln_xstrdup(w->dest);
        if (!w->target) {
                w->fd = open(w->dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
                if (w->fd < 0)
                        return kiln_error_set(err, -errno, "open '%s': %s", w->dest,
                                              strerror(errno));
                return 0;
        }
        slash = strrchr(w->target, '/');
        dir = slash ? kiln_xstrndup(w->target, (size_t) (slash - w->target + 1)) : kiln_xstrdup("");
        base = slash ? slash + 1 : w->target;
        w->tmp = kiln_xasprintf("%s.%s.kiln-XXXXXX", dir, base);
        w->fd = mkostemp(w->tmp, O_CLOEXEC);
        if (w->fd < 0) {
                int r = -errno;

                free(w->tmp);
                w->tmp = NULL;
                return kiln_error_set(err, r, "open '%s': %s", w->dest, strerror(-r));
        }
        /* what os.Create would have made */
        (void) fchmod(w->fd, 0666 & ~(mode_t) current_umask());
        return 0;
}

struct archive *kiln_cli_archive_copy_data(struct archive *in, struct archive *out)
{
        for (;;) {
                const void *buf;
                size_t len;
                la_int64_t off;
                int ar = archive_read_data_block(in, &buf, &len, &off);

                if (ar == ARCHIVE_EOF)
                        return NULL;
                if (ar != ARCHIVE_OK)
                        return in;
                if (archive_write_data_block(out, buf, len, off) != ARCHIVE_OK)
                        return out;
        }
}

/* The extraction thread: libarchive reads the socket and writes beneath
 * dest, whose descriptor is this thread's working directory (unshared from
 * the rest of kiln), so that every name stays relative and libarchive's
 * secure checks hold. */
static void *extract_thread(void *userdata)
{
        struct kiln_cli_output_writer *w = userdata;
        struct archive *a = archive_read_new(), *d = archive_write_disk_new(), *failed;
        struct archive_entry *e;
        bool root = geteuid() == 0;
        int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                    ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
        size_t count = 0;
        int r = 0, ar;

        if (root)
                flags |= ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_XATTR;
        if (!a || !d) {
                r = kiln_error_set(&w->extract_err, -ENOMEM, "out of memory");
                goto out;
        }
        if (unshare(CLONE_FS) < 0 || fchdir(w->dir_fd) < 0) {
                r = kiln_error_set(&w->extract_err, -errno, "enter '%s': %s", w->dest,
                                   strerror(errno));
                goto out;
        }
        archive_read_support_format_tar(a);
        archive_write_disk_set_options(d, flags);
        if (archive_read_open_fd(a, w->extract_sock, EXTRACT_BLOCK) != ARCHIVE_OK) {
                r = kiln_error_set(&w->extract_err, -EIO, "read the output: %s",
                                   archive_error_string(a));
                goto out;
        }
        while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                mode_t type = archive_entry_filetype(e);
                const char *name = archive_entry_pathname(e);

                if (atomic_load(&w->stop)) {
                        r = -ECANCELED;
                        goto out;
                }
                if (++count > KILN_CLI_LIMIT_OUTPUT_ENTRIES) {
                        r = kiln_error_set(&w->extract_err, -E2BIG,
                                           "the output has more than %u entries",
                                           KILN_CLI_LIMIT_OUTPUT_ENTRIES);
                        goto out;
                }
                if (!name || streq(name, ".") || streq(name, "./"))
                        continue;
                if ((type == AE_IFCHR || type == AE_IFBLK) && !root) {
                        log_debug("output '%s': device '%s' left out (not root)", w->dest, name);
                        continue;
                }
                if (archive_write_header(d, e) != ARCHIVE_OK) {
                        r = kiln_error_set(&w->extract_err, -EIO, "write '%s' into '%s': %s", name,
                                           w->dest, archive_error_string(d));
                        goto out;
                }
                failed = kiln_cli_archive_copy_data(a, d);
                if (failed == a) {
                        r = kiln_error_set(&w->extract_err, -EIO, "read the output: %s",
                                           archive_error_string(a));
                        goto out;
                }
                if (failed) {
                        r = kiln_error_set(&w->extract_err, -EIO, "write '%s' into '%s': %s", name,
                                           w->dest, archive_error_string(d));
                        goto out;
                }
                if (archive_write_finish_entry(d) != ARCHIVE_OK) {
                        r = kiln_error_set(&w->extract_err, -EIO, "write '%s' into '%s': %s", name,
                                           w->dest, archive_error_string(d));
                        goto out;
                }
        }
        if (ar != ARCHIVE_EOF) {
                r = kiln_error_set(&w->extract_err, -EIO, "read the output: %s",
                                   archive_error_string(a));
                goto out;
        }
        /* directories' times are set last */
        if (archive_write_close(d) != ARCHIVE_OK)
                r = kiln_error_set(&w->extract_err, -EIO, "write into '%s': %s", w->dest,
                                   archive_error_string(d));
out:
        if (d)
                archive_write_free(d);
        if (a)
                archive_read_free(a);
        /* the sender sees the end at once when this ends early */
        (void) shutdown(w->extract_sock, SHUT_RDWR);
        w->extract_r = r;
        return NULL;
}

static int dir_open(struct kiln_cli_output_writer *w, struct kiln_error **err)
{
        int sv[2], r;

        r = kiln_mkdir_p(w->dest, 0755);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", w->dest, strerror(-r));
        w->dir_fd = open(w->dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (w->dir_fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", w->dest, strerror(errno));
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return kiln_error_set(err, -errno, "socketpair: %s", strerror(errno));
        w->sock = sv[0];
        w->extract_sock = sv[1];
        r = -pthread_create(&w->thread, NULL, extract_thread, w);
        if (r < 0)
                return kiln_error_set(err, r, "start the extraction into '%s': %s", w->dest,
                                      strerror(-r));
        w->thread_running = true;
        return 0;
}

static int docker_open(struct kiln_cli_output_writer *w, struct kiln_error **err)
{
        char *argv[] = { (char *) "docker", (char *) "load", NULL };
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        int sv[2], r;

        w->host = kiln_xstrdup(kiln_cli_docker_host());
        w->out_fd = memfd_create("docker-load", MFD_CLOEXEC);
        if (w->out_fd < 0)
                return kiln_error_set(err, -errno, "memfd_create: %s", strerror(errno));
        /* a socket, not a pipe: writing to a docker that went away fails
         * with EPIPE instead of killing kiln */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return kiln_error_set(err, -errno, "socketpair: %s", strerror(errno));
        w->sock = sv[0];
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
        posix_spawn_file_actions_adddup2(&fa, w->out_fd, 1);
        posix_spawn_file_actions_adddup2(&fa, w->out_fd, 2);
        /* its own process group: a ^C is kiln's to handle (it kills the
         * child on the way out); default signal handling */
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK);
        r = posix_spawnp(&w->pid, "docker", &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        close(sv[1]);
        if (r != 0) {
                w->pid = 0;
                return kiln_error_set(err, -r, "run 'docker load': %s", strerror(r));
        }
        log_debug("docker load (pid %d) into %s", (int) w->pid, w->host);
        return 0;
}

int kiln_cli_output_writer_new(const struct kiln_cli_output *o, struct kiln_cli_output_writer **ret,
                               struct kiln_error **err)
{
        _cleanup_(kiln_cli_output_writer_freep) struct kiln_cli_output_writer *w =
                kiln_xcalloc(1, sizeof(*w));
        int r;

        w->sink = o->sink;
        w->fd = w->sock = w->dir_fd = w->extract_sock = w->out_fd = -1;
        w->dest = o->dest ? kiln_xstrdup(o->dest) : NULL;
        switch (o->sink) {
        case KILN_CLI_OUTPUT_SINK_FILE:
                r = file_open(w, err);
                break;
        case KILN_CLI_OUTPUT_SINK_STDOUT:
                r = 0;
                break;
        case KILN_CLI_OUTPUT_SINK_DIR:
                r = dir_open(w, err);
                break;
        case KILN_CLI_OUTPUT_SINK_DOCKER_LOAD:
                r = docker_open(w, err);
                break;
        case KILN_CLI_OUTPUT_SINK_NONE:
        case _KILN_CLI_OUTPUT_SINK_MAX:
        case _KILN_CLI_OUTPUT_SINK_INVALID:
        default:
                return kiln_error_set(err, -EINVAL, "output type=%s sends nothing back",
                                      o->api.type);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

static int send_all(int fd, const void *p, size_t n)
{
        const char *c = p;

        while (n > 0) {
                ssize_t k = send(fd, c, n, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                c += k;
                n -= (size_t) k;
        }
        return 0;
}

static int extract_join(struct kiln_cli_output_writer *w)
{
        if (w->thread_running) {
                (void) pthread_join(w->thread, NULL);
                w->thread_running = false;
        }
        return w->extract_r;
}

/* docker load's output, as text (trailing blanks dropped), malloc'd. */
static char *docker_output(struct kiln_cli_output_writer *w)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_CLI_LIMIT_DOCKER_LOAD_OUTPUT);
        char chunk[8192];
        ssize_t n;

        if (lseek(w->out_fd, 0, SEEK_SET) == 0)
                while ((n = read(w->out_fd, chunk, sizeof(chunk))) > 0)
                        if (kiln_buf_append(&b, chunk, (size_t) n) < 0)
                                break;
        while (b.len > 0 &&
               (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '\r'))
                b.len--;
        b.max = b.len + 1;
        (void) kiln_buf_putc(&b, '\0');
        return b.data ? kiln_buf_steal(&b) : kiln_xstrdup("");
}

/* What the writer adds to a failed write: the extraction's own error, or
 * what docker load said when it went away. */
static int writer_failed(struct kiln_cli_output_writer *w, int r, struct kiln_error **err)
{
        if (w->sink == KILN_CLI_OUTPUT_SINK_DIR) {
                (void) extract_join(w);
                if (w->extract_err) {
                        kiln_error_free(*err);
                        *err = TAKE_PTR(w->extract_err);
                        return w->extract_r;
                }
                return kiln_error_set(err, r, "write into '%s': %s", w->dest, strerror(-r));
        }
        if (w->sink == KILN_CLI_OUTPUT_SINK_DOCKER_LOAD) {
                _cleanup_free_ char *out = NULL;
                int status = 0;

                (void) kill(w->pid, SIGKILL);
                while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
                        ;
                w->pid = 0;
                out = docker_output(w);
                return kiln_error_set(err, r, "load the image into Docker at %s: docker load: %s",
                                      w->host, out[0] ? out : strerror(-r));
        }
        return kiln_error_set(err, r, "write '%s': %s", w->dest ? w->dest : "stdout", strerror(-r));
}

int kiln_cli_output_writer_write(struct kiln_cli_output_writer *w, const void *buf, size_t n,
                                 struct kiln_error **err)
{
        int r;

        switch (w->sink) {
        case KILN_CLI_OUTPUT_SINK_FILE:
                r = kiln_write_all(w->fd, buf, n);
                break;
        case KILN_CLI_OUTPUT_SINK_STDOUT:
                r = kiln_write_all(STDOUT_FILENO, buf, n);
                break;
        case KILN_CLI_OUTPUT_SINK_DIR:
        case KILN_CLI_OUTPUT_SINK_DOCKER_LOAD:
                r = send_all(w->sock, buf, n);
                break;
        case KILN_CLI_OUTPUT_SINK_NONE:
        case _KILN_CLI_OUTPUT_SINK_MAX:
        case _KILN_CLI_OUTPUT_SINK_INVALID:
        default:
                r = -EINVAL;
        }
        return r < 0 ? writer_failed(w, r, err) : 0;
}

int kiln_cli_output_writer_finish(struct kiln_cli_output_writer *w, char **ret_output,
                                  struct kiln_error **err)
{
        int r;

        switch (w->sink) {
        case KILN_CLI_OUTPUT_SINK_FILE:
                /* a device or a pipe has nothing to sync (EINVAL) */
                if ((fsync(w->fd) < 0 && (w->tmp || errno != EINVAL)) || close(w->fd) < 0) {
                        r = -errno;
                        w->fd = -1;
                        return kiln_error_set(err, r, "write '%s': %s", w->dest, strerror(-r));
                }
                w->fd = -1;
                if (!w->tmp)
                        return 0;
                if (rename(w->tmp, w->target) < 0)
                        return kiln_error_set(err, -errno, "rename '%s' to '%s': %s", w->tmp,
                                              w->target, strerror(errno));
                free(w->tmp);
                w->tmp = NULL;
                return 0;
        case KILN_CLI_OUTPUT_SINK_STDOUT:
                return 0;
        case KILN_CLI_OUTPUT_SINK_DIR:
                (void) shutdown(w->sock, SHUT_WR);
                r = extract_join(w);
                if (r < 0) {
                        if (w->extract_err) {
                                kiln_error_free(*err);
                                *err = TAKE_PTR(w->extract_err);
                                return r;
                        }
                        return kiln_error_set(err, r, "extract into '%s': %s", w->dest,
                                              strerror(-r));
                }
                return 0;
        case KILN_CLI_OUTPUT_SINK_DOCKER_LOAD: {
                _cleanup_free_ char *out = NULL, *how = NULL;
                int status = 0;

                (void) shutdown(w->sock, SHUT_WR);
                close(w->sock);
                w->sock = -1;
                while (waitpid(w->pid, &status, 0) < 0)
                        if (errno != EINTR)
                                return kiln_error_set(err, -errno, "wait for docker load: %s",
                                                      strerror(errno));
                w->pid = 0;
                out = docker_output(w);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        if (WIFEXITED(status))
                                how = kiln_xasprintf("exit status %d", WEXITSTATUS(status));
                        else
                                how = kiln_xasprintf("killed by signal %d",
                                                     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
                        return kiln_error_set(err, -EIO,
                                              "load the image into Docker at %s: docker load: "
                                              "%s%s%s",
                                              w->host, how, out[0] ? ": " : "", out);
                }
                if (ret_output)
                        *ret_output = TAKE_PTR(out);
                return 0;
        }
        case KILN_CLI_OUTPUT_SINK_NONE:
        case _KILN_CLI_OUTPUT_SINK_MAX:
        case _KILN_CLI_OUTPUT_SINK_INVALID:
        default:
                return kiln_error_set(err, -EINVAL, "no output writer");
        }
}

struct kiln_cli_output_writer *kiln_cli_output_writer_free(struct kiln_cli_output_writer *w)
{
        if (!w)
                return NULL;
        if (w->thread_running) {
                atomic_store(&w->stop, true);
                if (w->sock >= 0)
                        (void) shutdown(w->sock, SHUT_RDWR);
                (void) extract_join(w);
        }
        if (w->pid > 0) {
                int status;

                (void) kill(w->pid, SIGKILL);
                while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
                        ;
        }
        if (w->fd >= 0)
                close(w->fd);
        if (w->tmp)
                (void) unlink(w->tmp);
        if (w->sock >= 0)
                close(w->sock);
        if (w->extract_sock >= 0)
                close(w->extract_sock);
        if (w->dir_fd >= 0)
                close(w->dir_fd);
        if (w->out_fd >= 0)
                close(w->out_fd);
        kiln_error_free(w->extract_err);
        free(w->tmp);
        free(w->target);
        free(w->dest);
        free(w->host);
        free(w);
        return NULL;
}

/* ---- export downloads ---- */

struct kiln_cli_export {
        const struct kiln_cli_http_target *target;
        const struct kiln_cli_output *output;
        char *path;
        pthread_t thread;
        bool running;
        atomic_bool abort;
        int r;
        struct kiln_error *err;
        char *out; /* docker load's output */
        struct kiln_cli_output_writer *w;
        int write_r; /* the writer failed (not the download) */
};

static int export_on_data(void *userdata, const void *buf, size_t n, struct kiln_error **err)
{
        struct kiln_cli_export *x = userdata;

        x->write_r = kiln_cli_output_writer_write(x->w, buf, n, err);
        return x->write_r;
}

static int export_run(struct kiln_cli_export *x, struct kiln_error **err)
{
        int r;

        r = kiln_cli_http_download(x->target, x->path, EXPORT_CONNECT_TIMEOUT_MS,
                                   EXPORT_IDLE_TIMEOUT_S, EXPORT_ERROR_BODY_MAX, export_on_data, x,
                                   &x->abort, err);
        if (r < 0)
                return r;
        r = kiln_cli_output_writer_finish(x->w, &x->out, err);
        if (r < 0)
                x->write_r = r;
        return r;
}

static void *export_thread(void *userdata)
{
        struct kiln_cli_export *x = userdata;

        x->r = export_run(x, &x->err);
        /* a failed output leaves nothing behind; a finished one is done */
        x->w = kiln_cli_output_writer_free(x->w);
        return NULL;
}

int kiln_cli_export_start(const struct kiln_cli_http_target *target, const char *build_id,
                          unsigned index, const struct kiln_cli_output *o,
                          struct kiln_cli_export **ret, struct kiln_error **err)
{
        struct kiln_cli_export *x = kiln_xcalloc(1, sizeof(*x));
        int r;

        x->target = target;
        x->output = o;
        x->path = kiln_api_build_export_path(build_id, index);
        /* made here, so that a destination that cannot be written fails the
         * build at once (the daemon waits for the download otherwise) */
        r = kiln_cli_output_writer_new(o, &x->w, err);
        if (r < 0) {
                kiln_cli_export_free(x);
                return r;
        }
        r = -pthread_create(&x->thread, NULL, export_thread, x);
        if (r < 0) {
                kiln_cli_export_free(x);
                return kiln_error_set(err, r, "start the download of output %u: %s", index,
                                      strerror(-r));
        }
        x->running = true;
        *ret = x;
        return 0;
}

static void export_join(struct kiln_cli_export *x)
{
        if (x->running) {
                (void) pthread_join(x->thread, NULL);
                x->running = false;
        }
}

void kiln_cli_export_cancel(struct kiln_cli_export *x)
{
        atomic_store(&x->abort, true);
}

int kiln_cli_export_wait(struct kiln_cli_export *x, char **ret_output, bool *ret_local,
                         struct kiln_error **err)
{
        export_join(x);
        if (ret_local)
                *ret_local = x->write_r < 0;
        if (x->r < 0) {
                kiln_error_free(*err);
                *err = TAKE_PTR(x->err);
                return x->r;
        }
        if (ret_output)
                *ret_output = TAKE_PTR(x->out);
        return 0;
}

struct kiln_cli_export *kiln_cli_export_free(struct kiln_cli_export *x)
{
        if (!x)
                return NULL;
        atomic_store(&x->abort, true);
        export_join(x);
        kiln_cli_output_writer_free(x->w);
        kiln_error_free(x->err);
        free(x->out);
        free(x->path);
        free(x);
        return NULL;
}

/* ---- results ---- */

/* buildx's decodeExporterResponse for one string: base64 of a non-empty
 * JSON object or array becomes that JSON; anything else stays. */
static json_t *decode_value(const char *key, const json_t *v)
{
        _cleanup_free_ uint8_t *dt = NULL;
        const char *s = json_string_value(v);
        size_t len = 0;
        json_t *j;

        if (!s)
                return json_deep_copy(v);
        if (streq(key, "result.json")) {
                dt = (uint8_t *) kiln_xstrdup(s);
                len = strlen(s);
        } else if (kiln_api_base64_decode(s, strlen(s), &dt, &len) < 0)
                return json_string(s);
        j = json_loadb((const char *) dt, len, 0, NULL);
        if (j &&
            ((json_is_object(j) && json_object_size(j) > 0) ||
             (json_is_array(j) && json_array_size(j) > 0 && json_is_object(json_array_get(j, 0)))))
                return j;
        json_decref(j);
        return json_string(s);
}

json_t *kiln_cli_build_metadata(const json_t *exporter_response, const char *ref)
{
        json_t *o = json_object();
        const char *k;
        json_t *v;

        if (!o)
                return NULL;
        if (json_is_object(exporter_response))
                json_object_foreach ((json_t *) exporter_response, k, v)
                        if (json_object_set_new(o, k, decode_value(k, v)) < 0) {
                                json_decref(o);
                                return NULL;
                        }
        if (json_object_set_new(o, "buildx.build.ref", json_string(ref ? ref : "")) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

const char *kiln_cli_build_image_id(const json_t *exporter_response)
{
        const char *s;

        s = json_string_value(json_object_get(exporter_response, "containerimage.config.digest"));
        if (s)
                return s;
        s = json_string_value(json_object_get(exporter_response, "containerimage.digest"));
        return s ? s : "";
}
