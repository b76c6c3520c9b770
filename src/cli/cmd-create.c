/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln create: a new builder instance, or (--append) new settings for an
 * existing one. builder.json is written last and everything before it is
 * removed on failure, so that a broken --config, a missing certificate or a
 * bad flag leaves no builder behind.
 */
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/fs.h"
#include "builder.h"
#include "cli.h"
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

/* What the command line asks for, checked. */
struct request {
        char *name; /* lower-cased; NULL: generate one */
        bool append, use, bootstrap;
        const char *driver_given;
        enum kiln_cli_driver_kind driver;
        const char *endpoint;
        const char *config_file; /* as given */
        char *config_abs;
        bool flags_set;
        char **flags;
        size_t n_flags;
        bool opts_set;
        struct kiln_cli_driver_opt *opts;
        size_t n_opts;
        uint64_t timeout_ms;
};

static void request_release(struct request *q)
{
        free(q->name);
        free(q->config_abs);
        kiln_cli_strv_free(q->flags);
        for (size_t i = 0; i < q->n_opts; i++) {
                free(q->opts[i].key);
                free(q->opts[i].value);
        }
        free(q->opts);
}

static char *absolute(const char *path)
{
        _cleanup_free_ char *cwd = NULL;

        if (path[0] == '/')
                return kiln_xstrdup(path);
        cwd = getcwd(NULL, 0);
        return cwd ? kiln_xasprintf("%s/%s", cwd, path) : kiln_xstrdup(path);
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
                        _cleanup_free_ char *key = NULL;
                        size_t j;

                        if (!eq)
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid value \"%s\", expecting k=v",
                                                      fields[k]);
                        key = kiln_xstrndup(fields[k], (size_t) (eq - fields[k]));
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
                        q->opts[j].value = kiln_xstrdup(eq + 1);
                }
        }
        q->opts_set = v->set;
        return 0;
}

static const char *opt_get(const struct request *q, const char *key)
{
        for (size_t i = 0; i < q->n_opts; i++)
                if (streq(q->opts[i].key, key))
                        return q->opts[i].value;
        return NULL;
}

static int check_endpoint(const char *ep, struct kiln_error **err)
{
        if (startswith(ep, "unix://") && ep[strlen("unix://")])
                return 0;
        if (startswith(ep, "tcp://") && strchr(ep + strlen("tcp://"), ':'))
                return 0;
        return kiln_error_set(err, -EINVAL,
                              "invalid endpoint \"%s\": kiln connects to unix://PATH or "
                              "tcp://HOST:PORT",
                              ep);
}

/* The driver's own rules, once the driver is known. */
static int check_driver_settings(struct request *q, const char *endpoint, struct kiln_error **err)
{
        if (q->driver == KILN_CLI_DRIVER_LOCAL) {
                if (q->endpoint)
                        return kiln_error_set(err, -EINVAL,
                                              "the local driver takes no endpoint (to use the "
                                              "kilnd at \"%s\", create the builder with --driver "
                                              "remote)",
                                              q->endpoint);
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
        if (check_endpoint(endpoint, err) < 0)
                return -EINVAL;
        for (size_t i = 0; i < q->n_opts; i++) {
                const char *k = q->opts[i].key;

                if (streq(k, "default-load")) {
                        const char *v = q->opts[i].value;

                        if (!streq(v, "true") && !streq(v, "false"))
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid value \"%s\" for default-load: "
                                                      "expected true or false",
                                                      v);
                } else if (!streq(k, "cacert") && !streq(k, "cert") && !streq(k, "key") &&
                           !streq(k, "servername"))
                        return kiln_error_set(err, -EINVAL,
                                              "invalid driver option %s for remote driver", k);
        }
        if (opt_get(q, "cacert") || opt_get(q, "cert") || opt_get(q, "key") ||
            opt_get(q, "servername")) {
                const char *missing[3];
                size_t n = 0;
                _cleanup_(kiln_buf_release) struct kiln_buf list = KILN_BUF_INIT(256);

                if (!startswith(endpoint, "tcp://"))
                        return kiln_error_set(err, -EINVAL,
                                              "TLS driver options (cacert, cert, key, servername) "
                                              "need a tcp:// endpoint, not \"%s\"",
                                              endpoint);
                if (!opt_get(q, "cacert"))
                        missing[n++] = "cacert";
                if (opt_get(q, "cert") && !opt_get(q, "key"))
                        missing[n++] = "key";
                if (opt_get(q, "key") && !opt_get(q, "cert"))
                        missing[n++] = "cert";
                for (size_t i = 0; i < n; i++)
                        (void) kiln_buf_printf(&list, "%s%s", i ? ", " : "", missing[i]);
                if (n > 0)
                        return kiln_error_set(err, -EINVAL, "tls enabled, but missing keys %s",
                                              list.data);
        }
        return 0;
}

/* Copies a TLS file named by --driver-opt into dir (private keys 0600). */
static int copy_tls_file(const struct request *q, const char *opt, const char *dir,
                         const char *file, unsigned mode, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(LIMIT_PEM);
        _cleanup_free_ char *dst = NULL;
        const char *src = opt_get(q, opt);
        int r;

        if (!src)
                return 0;
        r = kiln_read_file_at(AT_FDCWD, src, &b);
        if (r == -E2BIG)
                return kiln_error_set(err, r, "driver option %s: '%s' is larger than %u bytes", opt,
                                      src, LIMIT_PEM);
        if (r < 0)
                return kiln_error_set(err, r, "driver option %s: read '%s': %s", opt, src,
                                      strerror(-r));
        dst = kiln_xasprintf("%s/%s", dir, file);
        r = kiln_write_file_atomic(dst, b.data, b.len, mode);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", dst, strerror(-r));
        return 0;
}

/* Writes <dir>/tls from the driver options; with replace, an existing tls/
 * is swapped for the new one only once it is complete. */
static int write_tls(const struct request *q, const char *dir, bool replace,
                     struct kiln_error **err)
{
        _cleanup_free_ char *final = kiln_xasprintf("%s/tls", dir);
        _cleanup_free_ char *tmp = kiln_xasprintf("%s/.tls.new.%ld", dir, (long) getpid());
        _cleanup_free_ char *old = kiln_xasprintf("%s/.tls.old.%ld", dir, (long) getpid());
        _cleanup_(kiln_error_freep) struct kiln_error *ignored = NULL;
        bool any = opt_get(q, "cacert") || opt_get(q, "cert") || opt_get(q, "key");
        int r;

        (void) kiln_cli_rm_rf(tmp, NULL, &ignored);
        if (any) {
                if (mkdir(tmp, 0700) < 0)
                        return kiln_error_set(err, -errno, "create '%s': %s", tmp, strerror(errno));
                r = copy_tls_file(q, "cacert", tmp, "ca.pem", 0644, err);
                if (r >= 0)
                        r = copy_tls_file(q, "cert", tmp, "cert.pem", 0644, err);
                if (r >= 0)
                        r = copy_tls_file(q, "key", tmp, "key.pem", 0600, err);
                if (r < 0) {
                        (void) kiln_cli_rm_rf(tmp, NULL, &ignored);
                        return r;
                }
        }
        if (replace && access(final, F_OK) == 0) {
                (void) kiln_cli_rm_rf(old, NULL, &ignored);
                if (rename(final, old) < 0)
                        return kiln_error_set(err, -errno, "replace '%s': %s", final,
                                              strerror(errno));
        }
        if (any && rename(tmp, final) < 0) {
                r = -errno;
                (void) rename(old, final);
                return kiln_error_set(err, r, "create '%s': %s", final, strerror(-r));
        }
        (void) kiln_cli_rm_rf(old, NULL, &ignored);
        return 0;
}

/* Runs the flags through kilnd's own command-line parser with the builder's
 * configuration, so that a typo fails create instead of the first start. */
static int check_flags(const struct kiln_cli_builder *b, const char *dir, char **flags,
                       size_t n_flags, struct kiln_error **err)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *parsed = NULL;
        _cleanup_free_ char *config = kiln_xasprintf("%s/etc/buildkit/buildkitd.toml", dir);
        _cleanup_free_ char *root = kiln_cli_builder_path(b, "root");
        char **argv = kiln_xcalloc(n_flags + 8, sizeof(char *));
        int argc = 0, r;

        argv[argc++] = (char *) "kilnd";
        argv[argc++] = (char *) "--config";
        argv[argc++] = config;
        argv[argc++] = (char *) "--root";
        argv[argc++] = root;
        argv[argc++] = (char *) "--addr";
        argv[argc++] = b->endpoint;
        for (size_t i = 0; i < n_flags; i++)
                argv[argc++] = flags[i];
        r = kiln_config_cli_parse(argc, argv, &parsed, err);
        free(argv);
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
                const char *v = q->opts[i].value;
                bool path = streq(q->opts[i].key, "cacert") || streq(q->opts[i].key, "cert") ||
                            streq(q->opts[i].key, "key");

                b->opts[i].key = kiln_xstrdup(q->opts[i].key);
                b->opts[i].value = path ? absolute(v) : kiln_xstrdup(v);
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

static int generate_name(const struct kiln_cli_store *s, char **ret, struct kiln_error **err)
{
        for (unsigned i = 0; i < NAME_ATTEMPTS; i++) {
                uint64_t random = 0;
                char *name;

                if (getrandom(&random, sizeof(random), 0) != (ssize_t) sizeof(random))
                        random = (uint64_t) getpid() * 0x9e3779b97f4a7c15ull + i;
                name = kiln_cli_name_generate(i, random);
                if (!kiln_cli_store_has(s, name) && !streq(name, KILN_CLI_DEFAULT_BUILDER)) {
                        *ret = name;
                        return 0;
                }
                free(name);
        }
        return kiln_error_set(err, -EEXIST, "failed to generate random name");
}

/* Installs the configuration copy and prints what kiln_config_install
 * found. When the problems are in the file, they are printed with their
 * file:line:col already: the error only sums them up. */
static int install_config(const char *config, const char *dir, struct kiln_error **err)
{
        _cleanup_(kiln_config_diags_release) struct kiln_config_diags diags = { 0 };
        size_t errors;
        int r;

        r = kiln_cli_store_write_config(config, dir, &diags, err);
        kiln_config_diags_print(&diags, stderr);
        if (r >= 0)
                return 0;
        errors = kiln_config_diags_count(&diags, KILN_CONFIG_ERROR);
        if (config && errors > 0)
                return kiln_error_set(err, r, "%zu error%s in '%s'", errors, errors == 1 ? "" : "s",
                                      config);
        return r;
}

static int create_new(struct kiln_cli_store *s, struct request *q, struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_free_ char *default_config = NULL;
        const char *config;
        int r;

        r = kiln_cli_store_lock(s, err);
        if (r < 0)
                return r;
        if (!q->name) {
                r = generate_name(s, &q->name, err);
                if (r < 0)
                        return r;
        } else if (kiln_cli_store_has(s, q->name))
                return kiln_error_set(err, -EEXIST,
                                      "existing instance for \"%s\" but no append mode, use "
                                      "--append to change its settings",
                                      q->name);

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
                b->config_file = absolute(config);

        r = kiln_cli_store_prepare(s, b->name, err);
        if (r < 0)
                return r;
        if (q->driver == KILN_CLI_DRIVER_LOCAL) {
                r = install_config(config, b->dir, err);
                if (r >= 0)
                        r = check_flags(b, b->dir, b->flags, b->n_flags, err);
        } else
                r = write_tls(q, b->dir, false, err);
        /* builder.json last: from now on the builder exists. */
        if (r >= 0)
                r = kiln_cli_store_save(b, b->dir, err);
        if (r < 0) {
                kiln_cli_store_abandon(s, b->name);
                return r;
        }
        if (q->use)
                return kiln_cli_store_set_current(s, b->name, false, err);
        return 0;
}

static int create_append(struct kiln_cli_store *s, struct request *q, struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        _cleanup_close_ int lock = -1;
        bool changed = false;
        int r;

        r = kiln_cli_store_lock_builder(s, q->name, &lock, err);
        if (r < 0)
                return r;
        if (!kiln_cli_store_has(s, q->name))
                return kiln_error_set(err, -ENOENT, "failed to find instance \"%s\" for append",
                                      q->name);
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
                /* kiln_config_install replaces etc/buildkit only once the new
                 * copy is complete, so a failure leaves the old one. */
                if (q->config_file) {
                        r = install_config(q->config_file, b->dir, err);
                        if (r < 0)
                                return r;
                        free(b->config_file);
                        b->config_file = absolute(q->config_file);
                        changed = true;
                }
                if (q->flags_set) {
                        r = check_flags(b, b->dir, q->flags, q->n_flags, err);
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
                        r = write_tls(q, b->dir, true, err);
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

static int parse_request(const struct kiln_cli_args *a, struct request *q, struct kiln_error **err)
{
        const struct kiln_cli_value *v = a->values;
        int r;

        q->append = v[OPT_APPEND].b;
        q->use = v[OPT_USE].b;
        q->bootstrap = v[OPT_BOOTSTRAP].b;
        q->timeout_ms = kiln_cli_args_timeout_ms(a, OPT_TIMEOUT);
        q->endpoint = a->n_pos > 0 ? a->pos[0] : NULL;
        /* buildx: --buildkitd-config, and --config as its alias. */
        q->config_file = v[OPT_BUILDKITD_CONFIG].set ? v[OPT_BUILDKITD_CONFIG].s : v[OPT_CONFIG].s;
        if (q->config_file && !q->config_file[0])
                q->config_file = NULL;

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

        if (v[OPT_DRIVER].set && v[OPT_DRIVER].s[0]) {
                q->driver_given = v[OPT_DRIVER].s;
                r = parse_driver(q->driver_given, &q->driver, err);
                if (r < 0)
                        return r;
        } else
                /* An endpoint means a daemon that runs already. */
                q->driver = q->endpoint ? KILN_CLI_DRIVER_REMOTE : KILN_CLI_DRIVER_LOCAL;

        if (v[OPT_BUILDKITD_FLAGS].set) {
                q->flags_set = true;
                r = kiln_cli_shell_split(v[OPT_BUILDKITD_FLAGS].s, &q->flags, &q->n_flags, err);
                if (r < 0)
                        return kiln_error_wrap(err, "failed to parse buildkit flags");
        }
        return parse_driver_opts(&v[OPT_DRIVER_OPT], q, err);
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(request_release) struct request q = { 0 };
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        int r;

        r = parse_request(args, &q, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;

        if (q.append && kiln_cli_store_has(s, q.name)) {
                r = create_append(s, &q, err);
                if (r < 0)
                        return kiln_error_wrap(err, "failed to update builder \"%s\"", q.name);
        } else if (q.append)
                return kiln_error_set(err, -ENOENT, "failed to find instance \"%s\" for append",
                                      q.name);
        else {
                r = check_driver_settings(&q, q.endpoint, err);
                if (r < 0)
                        return r;
                r = create_new(s, &q, err);
                if (r < 0 && q.name && r != -EEXIST)
                        return kiln_error_wrap(err, "failed to create builder \"%s\"", q.name);
                if (r < 0)
                        return r;
        }
        kiln_cli_store_unlock(s);

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
