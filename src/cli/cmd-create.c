/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln create: a new builder instance, or (--append) new settings for an
 * existing one. The options and the files they name are read and checked
 * before anything is locked; a new builder is made in a staging directory
 * and renamed into place complete (builder.json last), so that a broken
 * --config, a missing certificate, a bad flag or an interrupt (SIGINT,
 * SIGTERM, SIGHUP) leaves no builder behind.
 */
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/fs.h"
#include "builder.h"
#include "cli.h"
#include "config/address.h"
#include "config/config.h"

/* A TLS file named by --driver-opt. */
#define LIMIT_PEM (1u << 20)
/* Attempts at a generated name that is not taken (buildx makes 6). */
#define NAME_ATTEMPTS 6u

enum {
        OPT_NAME,
        OPT_DRIVER,
        OPT_CONFIG,
        OPT_BUILDKITD_CONFIG,
        OPT_BUILDKITD_FLAGS,
        OPT_DRIVER_OPT,
        OPT_USE,
        OPT_BOOTSTRAP,
        OPT_APPEND,
        OPT_TIMEOUT,
};

static const struct kiln_cli_option options[] = {
        [OPT_NAME] = { "name", 0, KILN_CLI_OPTION_STRING, "Builder instance name", NULL, false },
        [OPT_DRIVER] = { "driver", 0, KILN_CLI_OPTION_STRING,
                         "Driver to use (available: \"local\", \"remote\")", NULL, false },
        [OPT_CONFIG] = { "config", 0, KILN_CLI_OPTION_STRING, "BuildKit daemon config file", NULL,
                         false },
        [OPT_BUILDKITD_CONFIG] = { "buildkitd-config", 0, KILN_CLI_OPTION_STRING,
                                   "BuildKit daemon config file", NULL, false },
        [OPT_BUILDKITD_FLAGS] = { "buildkitd-flags", 0, KILN_CLI_OPTION_STRING,
                                  "BuildKit daemon flags", NULL, false },
        [OPT_DRIVER_OPT] = { "driver-opt", 0, KILN_CLI_OPTION_STRINGS, "Options for the driver",
                             NULL, false },
        [OPT_USE] = { "use", 0, KILN_CLI_OPTION_BOOL, "Set the current builder instance", NULL,
                      false },
        [OPT_BOOTSTRAP] = { "bootstrap", 0, KILN_CLI_OPTION_BOOL, "Boot builder after creation",
                            NULL, false },
        [OPT_APPEND] = { "append", 0, KILN_CLI_OPTION_BOOL,
                         "Change the settings of an existing builder instead of failing", NULL,
                         false },
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "Override the default timeout for loading builder status", "20s", false },
};

/* kilnd's flags that take a path (kilnd runs in "/", so a relative one is
 * made absolute against the directory create runs in). A copy of what
 * config/flags.c knows, kept to the path-valued ones. */
static const char *const path_flags[] = {
        "config",
        "root",
        "tlscert",
        "tlskey",
        "tlscacert",
        "otel-socket-path",
        "cdi-spec-dir",
        "oci-cni-config-path",
        "oci-cni-binary-dir",
        "oci-worker-proxy-snapshotter-path",
        "containerd-worker-addr",
        "containerd-cni-config-path",
        "containerd-cni-binary-dir",
};

/* What the command line asks for, checked. */
struct request {
        char *name; /* lower-cased; NULL: generate one */
        bool name_generated;
        bool append, use, bootstrap;
        const char *driver_given;
        enum kiln_cli_driver_kind driver;
        const char *endpoint_given;
        char *endpoint;    /* remote: checked, a unix path made absolute */
        char *config_file; /* absolute; NULL: none given */
        bool flags_set;
        char **flags; /* relative paths made absolute */
        size_t n_flags;
        bool opts_set;
        struct kiln_cli_driver_opt *opts; /* TLS paths made absolute */
        size_t n_opts;
        uint64_t timeout_ms;
};

static void request_release(struct request *q)
{
        free(q->name);
        free(q->endpoint);
        free(q->config_file);
        kiln_cli_strv_free(q->flags);
        for (size_t i = 0; i < q->n_opts; i++) {
                free(q->opts[i].key);
                free(q->opts[i].value);
        }
        free(q->opts);
}

static const char *req_opt(const struct request *q, const char *key)
{
        return kiln_cli_driver_opts_get(q->opts, q->n_opts, key);
}

/* The TLS files named by --driver-opt, read before anything is locked or
 * written, so that a missing or odd file fails early. */
struct tls_files {
        bool any;
        struct kiln_buf data[3];
};

static const struct {
        const char *opt, *file;
        unsigned mode;
} tls_names[3] = {
        { "cacert", "ca.pem", 0644 },
        { "cert", "cert.pem", 0644 },
        { "key", "key.pem", 0600 },
};

static void tls_files_release(struct tls_files *t)
{
        for (size_t i = 0; i < ELEMENTSOF(t->data); i++)
                kiln_buf_release(&t->data[i]);
}

static int absolute_or_fail(const char *what, const char *path, char **ret, struct kiln_error **err)
{
        int r = kiln_path_absolute(path, ret);

        if (r < 0)
                return kiln_error_set(err, r, "%s '%s': get the working directory: %s", what, path,
                                      strerror(-r));
        return 0;
}

static int parse_driver(const char *s, enum kiln_cli_driver_kind *ret, struct kiln_error **err)
{
        static const char *const container_drivers[] = { "docker-container", "kubernetes", "docker",
                                                         "cloud" };

        *ret = kiln_cli_driver_kind_from_string(s);
        if (*ret >= 0)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(container_drivers); i++)
                if (streq(s, container_drivers[i]))
                        return kiln_error_set(err, -EOPNOTSUPP,
                                              "driver \"%s\" is not supported by kiln: kilnd runs "
                                              "as a process of this machine, not in a container "
                                              "(available drivers: \"local\", \"remote\")",
                                              s);
        return kiln_error_set(err, -EINVAL,
                              "failed to find driver \"%s\" (available drivers: \"local\", "
                              "\"remote\")",
                              s);
}

static bool is_tls_path_opt(const char *key)
{
        for (size_t i = 0; i < ELEMENTSOF(tls_names); i++)
                if (streq(key, tls_names[i].opt))
                        return true;
        return false;
}

/* --driver-opt values: CSV records of k=v, as buildx reads them; a key
 * given twice keeps the last value. */
static int parse_driver_opts(const struct kiln_cli_value *v, struct request *q,
                             struct kiln_error **err)
{
        for (size_t i = 0; i < v->n; i++) {
                _cleanup_(kiln_cli_strv_freep) char **fields = NULL;
                size_t n;
                int r;

                r = kiln_cli_csv_split(v->v[i], &fields, &n, err);
                if (r < 0)
                        return kiln_error_wrap(err, "invalid --driver-opt");
                for (size_t k = 0; k < n; k++) {
                        const char *eq = strchr(fields[k], '=');
                        _cleanup_free_ char *key = NULL, *value = NULL;
                        size_t j;

                        if (!eq)
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid value \"%s\", expecting k=v",
                                                      fields[k]);
                        key = kiln_xstrndup(fields[k], (size_t) (eq - fields[k]));
                        if (is_tls_path_opt(key) && eq[1]) {
                                r = absolute_or_fail("driver option", eq + 1, &value, err);
                                if (r < 0)
                                        return r;
                        } else
                                value = kiln_xstrdup(eq + 1);
                        for (j = 0; j < q->n_opts; j++)
                                if (streq(q->opts[j].key, key))
                                        break;
                        if (j == q->n_opts) {
                                q->opts = kiln_xreallocarray(q->opts, q->n_opts + 1,
                                                             sizeof(*q->opts));
                                q->opts[q->n_opts++] = (struct kiln_cli_driver_opt){
                                        .key = TAKE_PTR(key),
                                };
                        } else
                                free(q->opts[j].value);
                        q->opts[j].value = TAKE_PTR(value);
                }
        }
        q->opts_set = v->set;
        return 0;
}

static bool is_path_flag(const char *name, size_t len)
{
        for (size_t i = 0; i < ELEMENTSOF(path_flags); i++)
                if (strlen(path_flags[i]) == len && strncmp(name, path_flags[i], len) == 0)
                        return true;
        return false;
}

/* A flag value with its relative path made absolute: plain paths for
 * path_flags, unix://PATH for --addr, a binary given as a path (with a
 * '/', not a name looked up in PATH) for --oci-worker-binary. */
static int flag_value_absolute(const char *name, size_t len, const char *value, char **ret,
                               struct kiln_error **err)
{
        _cleanup_free_ char *abs = NULL;
        const char *path = value;
        bool addr = len == 4 && strncmp(name, "addr", 4) == 0;
        bool binary = len == 17 && strncmp(name, "oci-worker-binary", 17) == 0;
        int r;

        if (addr)
                path = startswith(value, "unix://") ? value + strlen("unix://") : NULL;
        else if (binary && !strchr(value, '/'))
                path = NULL;
        else if (!binary && !is_path_flag(name, len))
                path = NULL;
        if (!path || !path[0] || path[0] == '/') {
                *ret = kiln_xstrdup(value);
                return 0;
        }
        r = absolute_or_fail("--buildkitd-flags", path, &abs, err);
        if (r < 0)
                return r;
        *ret = kiln_xasprintf("%s%s", addr ? "unix://" : "", abs);
        return 0;
}

/* Makes the relative paths in kilnd flags absolute: "--flag value",
 * "--flag=value", with one dash or two, as kilnd reads them. */
static int flags_make_absolute(char **flags, size_t n, struct kiln_error **err)
{
        for (size_t i = 0; i < n; i++) {
                const char *w = flags[i], *name, *eq;
                _cleanup_free_ char *abs = NULL, *rewritten = NULL;
                size_t len;
                int r;

                if (w[0] != '-' || streq(w, "-") || streq(w, "--"))
                        continue;
                name = w + (w[1] == '-' ? 2 : 1);
                eq = strchr(name, '=');
                len = eq ? (size_t) (eq - name) : strlen(name);
                if (eq) {
                        r = flag_value_absolute(name, len, eq + 1, &abs, err);
                        if (r < 0)
                                return r;
                        rewritten = kiln_xasprintf("%.*s%s", (int) (eq + 1 - w), w, abs);
                        free(flags[i]);
                        flags[i] = TAKE_PTR(rewritten);
                } else if (i + 1 < n && flags[i + 1][0] != '-') {
                        r = flag_value_absolute(name, len, flags[i + 1], &abs, err);
                        if (r < 0)
                                return r;
                        free(flags[i + 1]);
                        flags[i + 1] = TAKE_PTR(abs);
                        i++;
                }
        }
        return 0;
}

/* A remote endpoint as kilnd's own parser reads addresses, one that can be
 * dialled, and with a unix path made absolute: the builder is used from
 * other directories later. */
static int endpoint_check(const char *ep, char **ret, struct kiln_error **err)
{
        _cleanup_(kiln_config_address_release) struct kiln_config_address a = {
                .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID
        };
        _cleanup_(kiln_config_address_release) struct kiln_config_address again = {
                .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID
        };
        _cleanup_free_ char *abs = NULL, *out = NULL;
        int r;

        r = kiln_config_address_parse(ep, &a, err);
        if (r < 0)
                return kiln_error_wrap(err, "invalid remote endpoint");
        if (a.kind == KILN_CONFIG_ADDRESS_TCP) {
                if (!a.host[0])
                        return kiln_error_set(err, -EINVAL,
                                              "invalid remote endpoint '%s': no host to connect to",
                                              ep);
                if (strtol(a.port, NULL, 10) == 0)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid remote endpoint '%s': port 0 cannot be "
                                              "connected to",
                                              ep);
                *ret = kiln_xstrdup(ep);
                return 0;
        }
        r = absolute_or_fail("remote endpoint", a.path, &abs, err);
        if (r < 0)
                return r;
        out = kiln_xasprintf("unix://%s", abs);
        /* Longer now: it must still fit a socket address. */
        r = kiln_config_address_parse(out, &again, err);
        if (r < 0)
                return kiln_error_wrap(err, "invalid remote endpoint '%s'", ep);
        *ret = TAKE_PTR(out);
        return 0;
}

/* The driver's own rules, once the driver is known; endpoint is what the
 * builder will use (given now, or kept from before by --append). */
static int check_driver_settings(struct request *q, const char *endpoint, struct kiln_error **err)
{
        if (q->driver == KILN_CLI_DRIVER_LOCAL) {
                if (q->endpoint_given)
                        return kiln_error_set(err, -EINVAL,
                                              "the local driver takes no endpoint (to use the "
                                              "kilnd at \"%s\", create the builder with --driver "
                                              "remote)",
                                              q->endpoint_given);
                if (q->n_opts > 0)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid driver option %s for local driver",
                                              q->opts[0].key);
                return 0;
        }

        /* remote, as buildx's remote driver */
        if (q->config_file)
                return kiln_error_set(err, -EINVAL,
                                      "setting config file is not supported for remote driver");
        if (q->flags_set && q->n_flags > 0)
                return kiln_error_set(err, -EINVAL,
                                      "setting buildkit flags is not supported for remote driver");
        if (!endpoint)
                return kiln_error_set(err, -EINVAL, "no remote endpoint provided");
        for (size_t i = 0; i < q->n_opts; i++) {
                const char *k = q->opts[i].key;

                if (streq(k, "default-load")) {
                        const char *v = q->opts[i].value;

                        if (!streq(v, "true") && !streq(v, "false"))
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid value \"%s\" for default-load: "
                                                      "expected true or false",
                                                      v);
                } else if (!is_tls_path_opt(k) && !streq(k, "servername"))
                        return kiln_error_set(err, -EINVAL,
                                              "invalid driver option %s for remote driver", k);
        }
        if (req_opt(q, "cacert") || req_opt(q, "cert") || req_opt(q, "key") ||
            req_opt(q, "servername")) {
                const char *missing[3];
                size_t n = 0;
                _cleanup_(kiln_buf_release) struct kiln_buf list = KILN_BUF_INIT(256);

                if (!startswith(endpoint, "tcp://"))
                        return kiln_error_set(err, -EINVAL,
                                              "TLS driver options (cacert, cert, key, servername) "
                                              "need a tcp:// endpoint, not \"%s\"",
                                              endpoint);
                if (!req_opt(q, "cacert"))
                        missing[n++] = "cacert";
                if (req_opt(q, "cert") && !req_opt(q, "key"))
                        missing[n++] = "key";
                if (req_opt(q, "key") && !req_opt(q, "cert"))
                        missing[n++] = "cert";
                for (size_t i = 0; i < n; i++)
                        (void) kiln_buf_printf(&list, "%s%s", i ? ", " : "", missing[i]);
                if (n > 0)
                        return kiln_error_set(err, -EINVAL, "tls enabled, but missing keys %s",
                                              list.data);
        }
        return 0;
}

static int read_tls(const struct request *q, struct tls_files *t, struct kiln_error **err)
{
        for (size_t i = 0; i < ELEMENTSOF(tls_names); i++) {
                const char *src = req_opt(q, tls_names[i].opt);
                char buf[64];
                int r;

                t->data[i] = KILN_BUF_INIT(LIMIT_PEM);
                if (!src)
                        continue;
                t->any = true;
                r = kiln_read_file_at(AT_FDCWD, src, &t->data[i]);
                if (r < 0)
                        return kiln_error_set(err, r, "driver option %s: read '%s': %s",
                                              tls_names[i].opt, src,
                                              kiln_read_file_strerror(r, LIMIT_PEM, buf));
        }
        return 0;
}

/* Writes <dir>/tls from the files read; with replace, an existing tls/ is
 * swapped for the new one only once it is complete. */
static int write_tls(const struct request *q, const struct tls_files *t, const char *dir,
                     bool replace, struct kiln_error **err)
{
        _cleanup_free_ char *final = kiln_xasprintf("%s/tls", dir);
        _cleanup_free_ char *tmp = kiln_xasprintf("%s/.tls.new-XXXXXX", dir);
        _cleanup_free_ char *old = kiln_xasprintf("%s/.tls.old.%ld", dir, (long) getpid());
        int r;

        if (t->any) {
                if (!mkdtemp(tmp))
                        return kiln_error_set(err, -errno, "create '%s': %s", tmp, strerror(errno));
                for (size_t i = 0; i < ELEMENTSOF(tls_names); i++) {
                        _cleanup_free_ char *dst = NULL;

                        if (!req_opt(q, tls_names[i].opt))
                                continue;
                        dst = kiln_xasprintf("%s/%s", tmp, tls_names[i].file);
                        r = kiln_write_file_atomic(dst, t->data[i].data, t->data[i].len,
                                                   tls_names[i].mode);
                        if (r < 0) {
                                (void) kiln_rm_rf_at(AT_FDCWD, tmp, NULL, NULL);
                                return kiln_error_set(err, r, "write '%s': %s", dst, strerror(-r));
                        }
                }
        }
        if (replace && access(final, F_OK) == 0) {
                (void) kiln_rm_rf_at(AT_FDCWD, old, NULL, NULL);
                if (rename(final, old) < 0) {
                        r = -errno;
                        if (t->any)
                                (void) kiln_rm_rf_at(AT_FDCWD, tmp, NULL, NULL);
                        return kiln_error_set(err, r, "replace '%s': %s", final, strerror(-r));
                }
        }
        if (t->any && rename(tmp, final) < 0) {
                r = -errno;
                (void) rename(old, final);
                (void) kiln_rm_rf_at(AT_FDCWD, tmp, NULL, NULL);
                return kiln_error_set(err, r, "create '%s': %s", final, strerror(-r));
        }
        (void) kiln_rm_rf_at(AT_FDCWD, old, NULL, NULL);
        return 0;
}

/* Runs the flags through kilnd's own command-line parser with the builder's
 * configuration (config, the copy to read it from), so that a typo fails
 * create instead of the first start. */
static int check_flags(const struct kiln_cli_builder *b, const char *config, char **flags,
                       size_t n_flags, struct kiln_error **err)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *parsed = NULL;
        _cleanup_free_ char *root = kiln_cli_builder_path(b, "root");
        _cleanup_free_ char **argv = kiln_xcalloc(n_flags + 8, sizeof(char *));
        int argc = 0, r;

        argv[argc++] = (char *) "kilnd";
        argv[argc++] = (char *) "--config";
        argv[argc++] = (char *) config;
        argv[argc++] = (char *) "--root";
        argv[argc++] = root;
        argv[argc++] = (char *) "--addr";
        argv[argc++] = b->endpoint;
        for (size_t i = 0; i < n_flags; i++)
                argv[argc++] = flags[i];
        r = kiln_config_cli_parse(argc, argv, &parsed, err);
        if (r < 0)
                return kiln_error_wrap(err, "invalid --buildkitd-flags");
        if (parsed && (parsed->help || parsed->version || parsed->validate))
                return kiln_error_set(err, -EINVAL,
                                      "invalid --buildkitd-flags: --help, --version and "
                                      "--validate do not start a daemon");
        return 0;
}

/* A unix socket path has to fit in sockaddr_un. */
static int check_socket_path(const struct kiln_cli_builder *b, struct kiln_error **err)
{
        size_t len = strlen(b->endpoint) - strlen("unix://");

        if (b->driver == KILN_CLI_DRIVER_LOCAL && len > 107)
                return kiln_error_set(err, -ENAMETOOLONG,
                                      "the socket path '%s' is longer than 107 bytes: set "
                                      "KILN_CONFIG to a shorter directory",
                                      b->endpoint + strlen("unix://"));
        return 0;
}

static void builder_set_opts(struct kiln_cli_builder *b, const struct request *q)
{
        for (size_t i = 0; i < b->n_opts; i++) {
                free(b->opts[i].key);
                free(b->opts[i].value);
        }
        free(b->opts);
        b->opts = kiln_xcalloc(q->n_opts + 1, sizeof(*b->opts));
        b->n_opts = q->n_opts;
        for (size_t i = 0; i < q->n_opts; i++) {
                b->opts[i].key = kiln_xstrdup(q->opts[i].key);
                b->opts[i].value = kiln_xstrdup(q->opts[i].value);
        }
}

static void builder_set_flags(struct kiln_cli_builder *b, const struct request *q)
{
        kiln_cli_strv_free(b->flags);
        b->flags = kiln_xcalloc(q->n_flags + 1, sizeof(char *));
        for (size_t i = 0; i < q->n_flags; i++)
                b->flags[i] = kiln_xstrdup(q->flags[i]);
        b->n_flags = q->n_flags;
}

static char *generate_name(const struct kiln_cli_store *s, unsigned attempt)
{
        for (unsigned i = attempt; i < NAME_ATTEMPTS; i++) {
                uint64_t random = 0;
                char *name;

                if (getrandom(&random, sizeof(random), 0) != (ssize_t) sizeof(random))
                        random = (uint64_t) getpid() * 0x9e3779b97f4a7c15ull + i;
                name = kiln_cli_name_generate(i, random);
                if (!kiln_cli_store_has(s, name) && !streq(name, KILN_CLI_DEFAULT_BUILDER))
                        return name;
                free(name);
        }
        return NULL;
}

/* Installs the configuration copy and prints what kiln_config_install
 * found. When the problems are in the file, they are printed with their
 * file:line:col already: the error only sums them up. */
static int install_config(const char *config, const char *dir, const char *final_dir,
                          struct kiln_error **err)
{
        _cleanup_(kiln_config_diags_release) struct kiln_config_diags diags = { 0 };
        size_t errors;
        int r;

        r = kiln_cli_store_write_config(config, dir, final_dir, &diags, err);
        kiln_config_diags_print(&diags, stderr);
        if (r >= 0)
                return 0;
        errors = kiln_config_diags_count(&diags, KILN_CONFIG_ERROR);
        if (config && errors > 0)
                return kiln_error_set(err, r, "%zu error%s in '%s'", errors, errors == 1 ? "" : "s",
                                      config);
        return r;
}

/* Makes the whole new builder in a staging directory, builder.json last.
 * Nothing is locked meanwhile: the user's files are read here. */
static int make_staged(struct kiln_cli_store *s, const struct request *q,
                       const struct tls_files *tls, struct kiln_cli_staging **ret,
                       struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_staging_freep) struct kiln_cli_staging *st = NULL;
        _cleanup_free_ char *default_config = NULL, *config_copy = NULL;
        const char *config, *dir;
        int r;

        b = kiln_cli_builder_new(s, q->name);
        b->driver = q->driver;
        if (q->driver == KILN_CLI_DRIVER_REMOTE) {
                free(b->endpoint);
                b->endpoint = kiln_xstrdup(q->endpoint);
        }
        r = check_socket_path(b, err);
        if (r < 0)
                return r;
        builder_set_flags(b, q);
        builder_set_opts(b, q);
        /* As buildx: without --config, the store's buildkitd.default.toml. */
        config = q->config_file;
        if (!config && q->driver == KILN_CLI_DRIVER_LOCAL)
                config = default_config = kiln_cli_store_default_config(s);
        if (config)
                b->config_file = kiln_xstrdup(config);

        r = kiln_cli_store_stage(s, b->name, &st, err);
        if (r < 0)
                return r;
        dir = kiln_cli_staging_dir(st);
        if (q->driver == KILN_CLI_DRIVER_LOCAL) {
                r = install_config(config, dir, b->dir, err);
                if (r < 0)
                        return r;
                config_copy = kiln_xasprintf("%s/etc/buildkit/buildkitd.toml", dir);
                r = check_flags(b, config_copy, b->flags, b->n_flags, err);
        } else
                r = write_tls(q, tls, dir, false, err);
        if (r >= 0)
                r = kiln_cli_store_save(b, dir, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(st);
        return 0;
}

static int create_new(struct kiln_cli_store *s, struct request *q, const struct tls_files *tls,
                      struct kiln_error **err)
{
        for (unsigned attempt = 0;; attempt++) {
                _cleanup_(kiln_cli_staging_freep) struct kiln_cli_staging *st = NULL;
                int r;

                if (q->name_generated) {
                        free(q->name);
                        q->name = generate_name(s, attempt);
                        if (!q->name)
                                return kiln_error_set(err, -EEXIST,
                                                      "failed to generate random name");
                } else if (kiln_cli_store_has(s, q->name))
                        break;

                r = make_staged(s, q, tls, &st, err);
                if (r < 0)
                        return r;
                /* builders/<name> appears complete, or not at all. */
                r = kiln_cli_store_publish(s, st, q->use, err);
                if (r != -EEXIST)
                        return r;
                *err = kiln_error_free(*err);
                if (!q->name_generated || attempt + 1 >= NAME_ATTEMPTS)
                        break;
        }
        return kiln_error_set(err, -EEXIST,
                              "existing instance for \"%s\" but no append mode, use --append to "
                              "change its settings",
                              q->name);
}

static int create_append(struct kiln_cli_store *s, struct request *q, const struct tls_files *tls,
                         struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        _cleanup_close_ int lock = -1;
        bool changed = false;
        int r;

        r = kiln_cli_store_lock_existing(s, q->name, &lock, err);
        if (r == -ENOENT)
                return kiln_error_set(err, r, "failed to find instance \"%s\" for append", q->name);
        if (r < 0)
                return r;
        r = kiln_cli_store_load(s, q->name, &b, err);
        if (r < 0)
                return r;
        if (q->driver_given && q->driver != b->driver)
                return kiln_error_set(err, -EINVAL,
                                      "existing instance for \"%s\" but has mismatched driver "
                                      "\"%s\"",
                                      q->name, kiln_cli_driver_kind_to_string(b->driver));
        q->driver = b->driver;
        r = check_driver_settings(q, q->endpoint ? q->endpoint : b->endpoint, err);
        if (r < 0)
                return r;

        if (b->driver == KILN_CLI_DRIVER_LOCAL) {
                _cleanup_free_ char *config =
                        kiln_cli_builder_path(b, "etc/buildkit/buildkitd.toml");

                /* kiln_config_install replaces etc/buildkit only once the new
                 * copy is complete, so a failure leaves the old one. */
                if (q->config_file) {
                        r = install_config(q->config_file, b->dir, b->dir, err);
                        if (r < 0)
                                return r;
                        free(b->config_file);
                        b->config_file = kiln_xstrdup(q->config_file);
                        changed = true;
                }
                if (q->flags_set) {
                        r = check_flags(b, config, q->flags, q->n_flags, err);
                        if (r < 0)
                                return r;
                        builder_set_flags(b, q);
                        changed = true;
                }
        } else {
                if (q->endpoint) {
                        free(b->endpoint);
                        b->endpoint = kiln_xstrdup(q->endpoint);
                        changed = true;
                }
                if (q->opts_set) {
                        r = write_tls(q, tls, b->dir, true, err);
                        if (r < 0)
                                return r;
                        builder_set_opts(b, q);
                        changed = true;
                }
        }
        r = kiln_cli_store_save(b, b->dir, err);
        if (r < 0)
                return r;

        if (changed && b->driver == KILN_CLI_DRIVER_LOCAL) {
                kiln_cli_builder_status(b, q->timeout_ms, &st);
                if (st.kind == KILN_CLI_STATUS_RUNNING)
                        fprintf(stderr, "WARNING: new settings may not be used until builder "
                                        "is restarted\n");
        }
        if (q->use) {
                r = kiln_cli_store_lock(s, err);
                if (r < 0)
                        return r;
                r = kiln_cli_store_set_current(s, b->name, false, err);
                kiln_cli_store_unlock(s);
        }
        return r;
}

/* Everything create can check without the store: the options, the paths
 * made absolute, the endpoint and the driver's rules (with --append the
 * driver and endpoint may come from the builder, checked again there). */
static int parse_request(const struct kiln_cli_args *a, struct request *q, struct kiln_error **err)
{
        const struct kiln_cli_value *v = a->values;
        const char *config;
        int r;

        q->append = v[OPT_APPEND].b;
        q->use = v[OPT_USE].b;
        q->bootstrap = v[OPT_BOOTSTRAP].b;
        q->timeout_ms = kiln_cli_args_timeout_ms(a, OPT_TIMEOUT);
        q->endpoint_given = a->n_pos > 0 ? a->pos[0] : NULL;
        /* buildx: --buildkitd-config, and --config as its alias. */
        config = v[OPT_BUILDKITD_CONFIG].set ? v[OPT_BUILDKITD_CONFIG].s : v[OPT_CONFIG].s;
        if (config && config[0]) {
                r = absolute_or_fail("config file", config, &q->config_file, err);
                if (r < 0)
                        return r;
        }

        if (v[OPT_NAME].set && v[OPT_NAME].s[0]) {
                r = kiln_cli_name_validate(v[OPT_NAME].s, &q->name, err);
                if (r < 0)
                        return r;
                if (streq(q->name, KILN_CLI_DEFAULT_BUILDER))
                        return kiln_error_set(err, -EINVAL,
                                              "default is a reserved name and cannot be used to "
                                              "identify builder instance");
        }
        if (q->append && !q->name)
                return kiln_error_set(err, -EINVAL, "append requires a builder name");
        q->name_generated = !q->name;

        if (v[OPT_DRIVER].set && v[OPT_DRIVER].s[0]) {
                q->driver_given = v[OPT_DRIVER].s;
                r = parse_driver(q->driver_given, &q->driver, err);
                if (r < 0)
                        return r;
        } else
                /* An endpoint means a daemon that runs already. */
                q->driver = q->endpoint_given ? KILN_CLI_DRIVER_REMOTE : KILN_CLI_DRIVER_LOCAL;

        if (v[OPT_BUILDKITD_FLAGS].set) {
                q->flags_set = true;
                r = kiln_cli_shell_split(v[OPT_BUILDKITD_FLAGS].s, &q->flags, &q->n_flags, err);
                if (r < 0)
                        return kiln_error_wrap(err, "failed to parse buildkit flags");
                r = flags_make_absolute(q->flags, q->n_flags, err);
                if (r < 0)
                        return r;
        }
        r = parse_driver_opts(&v[OPT_DRIVER_OPT], q, err);
        if (r < 0)
                return r;
        if (q->endpoint_given && q->driver == KILN_CLI_DRIVER_REMOTE) {
                r = endpoint_check(q->endpoint_given, &q->endpoint, err);
                if (r < 0)
                        return r;
        }
        if (!q->append)
                return check_driver_settings(q, q->endpoint, err);
        return 0;
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(request_release) struct request q = { 0 };
        _cleanup_(tls_files_release) struct tls_files tls = { 0 };
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        int r;

        r = parse_request(args, &q, err);
        if (r < 0)
                return r;
        r = read_tls(&q, &tls, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;

        if (q.append) {
                r = create_append(s, &q, &tls, err);
                if (r == -ENOENT)
                        return r;
                if (r < 0)
                        return kiln_error_wrap(err, "failed to update builder \"%s\"", q.name);
        } else {
                /* An interrupted create removes its staging directory before
                 * it ends as the signal asks. */
                kiln_cli_interrupt_catch();
                r = create_new(s, &q, &tls, err);
                if (r < 0 && r != -EEXIST && q.name)
                        (void) kiln_error_wrap(err, "failed to create builder \"%s\"", q.name);
                kiln_cli_interrupt_release();
                if (r < 0)
                        return r;
        }

        if (q.bootstrap) {
                r = kiln_cli_store_load(s, q.name, &b, err);
                if (r < 0)
                        return r;
                r = kiln_cli_builder_boot(s, b, q.timeout_ms, &st, err);
                if (r < 0)
                        return r;
        }
        printf("%s\n", q.name);
        return 0;
}

const struct kiln_cli_command kiln_cli_command_create = {
        .name = "create",
        .usage = "create [OPTIONS] [ENDPOINT]",
        .summary = "Create a new builder instance",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = 1,
        .run = run,
};
