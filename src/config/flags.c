/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kilnd's command line: buildkitd's flags (cmd/buildkitd/main.go,
 * main_oci_worker.go, main_containerd_worker.go) with its precedence: the
 * config file, then defaults, then only the flags that were set, applied in
 * the order buildkitd applies them. Values go through the schema, so a flag
 * is checked exactly like the key it sets.
 */

#include <ctype.h>
#include <grp.h>
#include <inttypes.h>
#include <pthread.h>
#include <strings.h>

#include "base/buf.h"
#include "config/config-internal.h"

enum flag_kind {
        FK_STRING,
        FK_BOOL,
        FK_INT,
        FK_STRV, /* repeatable; every use appends (no comma splitting, as buildkitd) */
};

enum flag_special {
        FS_NONE,
        FS_CONFIG,
        FS_DEBUG,
        FS_TRACE,
        FS_GROUP,
        FS_NONEMPTY, /* --tlscert & co: applied only when not empty (buildkitd) */
        FS_SAVE_CACHE_DEBUG,
        FS_ROOTLESS,
        FS_WORKER_ENABLED,  /* true/false/auto */
        FS_WORKER_LABELS,   /* k=v, merged */
        FS_WORKER_ROOTLESS, /* needs a user namespace */
        FS_GC_KEEPSTORAGE,  /* "Reserved[,Free[,Maximum]]" in MB */
        FS_CONTAINERD_RUNTIME,
        FS_VALIDATE,
        FS_HELP,
        FS_VERSION,
};

struct flag_def {
        const char *name;
        const char *alias; /* one-letter alias */
        enum flag_kind kind;
        const char *path; /* the key it sets, or the worker prefix for specials */
        enum flag_special special;
        const char *env;
        const char *usage;
        const char *def; /* default shown in --help */
        bool hidden;
};

#define OCI "worker.oci."
#define CTD "worker.containerd."

/* In the order buildkitd applies them. */
static const struct flag_def flags[] = {
        { .name = "config",
          .kind = FK_STRING,
          .special = FS_CONFIG,
          .usage = "path to config file",
          .def = KILN_CONFIG_DEFAULT_PATH },
        { .name = "debug",
          .kind = FK_BOOL,
          .special = FS_DEBUG,
          .usage = "enable debug output in logs" },
        { .name = "trace",
          .kind = FK_BOOL,
          .special = FS_TRACE,
          .usage = "enable trace output in logs (highly verbose, could affect performance)",
          .hidden = true },
        { .name = "root",
          .kind = FK_STRING,
          .path = "root",
          .usage = "path to state directory",
          .def = KILN_CONFIG_DEFAULT_ROOT },
        { .name = "log-format",
          .kind = FK_STRING,
          .path = "log.format",
          .usage = "log formatter: json or text",
          .def = "text" },
        { .name = "log-level",
          .kind = FK_STRING,
          .path = "log.level",
          .env = "BUILDKITD_LOG_LEVEL",
          .usage = "set the log level",
          .def = "info" },
        { .name = "addr",
          .kind = FK_STRV,
          .path = "grpc.address",
          .usage = "listening address (socket or tcp)",
          .def = KILN_CONFIG_DEFAULT_ADDRESS },
        { .name = "proxy-network",
          .kind = FK_BOOL,
          .path = "proxyNetwork",
          .usage = "enable proxy network enforcement for all builds" },
        { .name = "debugaddr",
          .kind = FK_STRING,
          .path = "grpc.debugAddress",
          .env = "BUILDKITD_DEBUGADDR",
          .usage = "debugging address (eg. 0.0.0.0:6060)" },
        { .name = "group",
          .kind = FK_STRING,
          .special = FS_GROUP,
          .usage = "group (name or gid) which will own all Unix socket listening addresses" },
        { .name = "tlscert",
          .kind = FK_STRING,
          .path = "grpc.tls.cert",
          .special = FS_NONEMPTY,
          .usage = "certificate file to use" },
        { .name = "tlskey",
          .kind = FK_STRING,
          .path = "grpc.tls.key",
          .special = FS_NONEMPTY,
          .usage = "key file to use" },
        { .name = "tlscacert",
          .kind = FK_STRING,
          .path = "grpc.tls.ca",
          .special = FS_NONEMPTY,
          .usage = "ca certificate to verify clients" },
        { .name = "otel-socket-path",
          .kind = FK_STRING,
          .path = "otel.socketPath",
          .usage = "OTEL collector trace socket path" },
        { .name = "cdi-disabled",
          .kind = FK_BOOL,
          .path = "cdi.disabled",
          .usage = "disables support of the Container Device Interface (CDI)" },
        { .name = "cdi-spec-dir",
          .kind = FK_STRV,
          .path = "cdi.specDirs",
          .usage = "list of directories to scan for CDI spec files" },
        { .name = "allow-insecure-entitlement",
          .kind = FK_STRV,
          .path = "insecure-entitlements",
          .usage = "allows insecure entitlements e.g. network.host, security.insecure, device" },
        { .name = "save-cache-debug",
          .kind = FK_BOOL,
          .special = FS_SAVE_CACHE_DEBUG,
          .usage = "enable saving cache debug info" },
        { .name = "rootless",
          .kind = FK_BOOL,
          .special = FS_ROOTLESS,
          .usage = "set all the default options to be compatible with rootless containers" },

        { .name = "oci-worker",
          .kind = FK_STRING,
          .path = OCI,
          .special = FS_WORKER_ENABLED,
          .usage = "enable oci workers (true/false/auto)",
          .def = "auto" },
        { .name = "oci-worker-labels",
          .kind = FK_STRV,
          .path = OCI,
          .special = FS_WORKER_LABELS,
          .usage = "user-specific annotation labels (com.example.foo=bar)" },
        { .name = "oci-worker-snapshotter",
          .kind = FK_STRING,
          .path = OCI "snapshotter",
          .usage = "name of snapshotter (overlayfs, native, etc.)",
          .def = "auto" },
        { .name = "oci-worker-rootless",
          .kind = FK_BOOL,
          .path = OCI,
          .special = FS_WORKER_ROOTLESS,
          .usage = "enable rootless mode" },
        { .name = "oci-worker-no-process-sandbox",
          .kind = FK_BOOL,
          .path = OCI "noProcessSandbox",
          .usage =
                  "use the host PID namespace and procfs (WARNING: allows build containers to kill "
                  "(and potentially ptrace) an arbitrary process in the host namespace)" },
        { .name = "oci-worker-platform",
          .kind = FK_STRV,
          .path = OCI "platforms",
          .usage = "override supported platforms for worker" },
        { .name = "oci-worker-gc",
          .kind = FK_BOOL,
          .path = OCI "gc",
          .usage = "Enable automatic garbage collection on worker",
          .def = "true" },
        { .name = "oci-worker-gc-keepstorage",
          .kind = FK_STRING,
          .path = OCI,
          .special = FS_GC_KEEPSTORAGE,
          .usage = "Amount of storage GC keep locally, format \"Reserved[,Free[,Maximum]]\" (MB)" },
        { .name = "oci-worker-net",
          .kind = FK_STRING,
          .path = OCI "networkMode",
          .usage = "worker network type (auto, bridge, cni or host)",
          .def = "auto" },
        /* buildkitd reads a misspelt flag name here and drops the value; kiln honours it. */
        { .name = "oci-cni-config-path",
          .kind = FK_STRING,
          .path = OCI "cniConfigPath",
          .usage = "path of cni config file",
          .def = "/etc/buildkit/cni.json" },
        { .name = "oci-cni-binary-dir",
          .kind = FK_STRING,
          .path = OCI "cniBinaryPath",
          .usage = "path of cni binary files",
          .def = "/opt/cni/bin" },
        { .name = "oci-cni-pool-size",
          .kind = FK_INT,
          .path = OCI "cniPoolSize",
          .usage = "size of cni network namespace pool",
          .def = "0" },
        { .name = "oci-worker-binary",
          .kind = FK_STRING,
          .path = OCI "binary",
          .usage = "name of specified oci worker binary" },
        { .name = "oci-worker-proxy-snapshotter-path",
          .kind = FK_STRING,
          .path = OCI "proxySnapshotterPath",
          .usage = "address of proxy snapshotter socket (do not include 'unix://' prefix)" },
        { .name = "oci-worker-apparmor-profile",
          .kind = FK_STRING,
          .path = OCI "apparmor-profile",
          .usage = "set the name of the apparmor profile applied to containers" },
        { .name = "oci-worker-selinux",
          .kind = FK_BOOL,
          .path = OCI "selinux",
          .usage = "apply SELinux labels" },
        { .name = "oci-max-parallelism",
          .kind = FK_INT,
          .path = OCI "max-parallelism",
          .usage = "limit the number of parallel build steps that can run at the same time",
          .def = "0" },

        { .name = "containerd-worker",
          .kind = FK_STRING,
          .path = CTD,
          .special = FS_WORKER_ENABLED,
          .usage = "enable containerd workers (true/false/auto)",
          .def = "auto" },
        { .name = "containerd-worker-rootless",
          .kind = FK_BOOL,
          .path = CTD,
          .special = FS_WORKER_ROOTLESS,
          .usage = "enable rootless mode" },
        { .name = "containerd-worker-labels",
          .kind = FK_STRV,
          .path = CTD,
          .special = FS_WORKER_LABELS,
          .usage = "user-specific annotation labels (com.example.foo=bar)" },
        { .name = "containerd-worker-addr",
          .kind = FK_STRING,
          .path = CTD "address",
          .usage = "containerd socket",
          .def = "/run/containerd/containerd.sock" },
        { .name = "containerd-worker-platform",
          .kind = FK_STRV,
          .path = CTD "platforms",
          .usage = "override supported platforms for worker",
          .hidden = true },
        { .name = "containerd-worker-namespace",
          .kind = FK_STRING,
          .path = CTD "namespace",
          .usage = "override containerd namespace",
          .def = "buildkit",
          .hidden = true },
        { .name = "containerd-worker-runtime",
          .kind = FK_STRING,
          .path = CTD,
          .special = FS_CONTAINERD_RUNTIME,
          .usage = "override containerd runtime",
          .def = "io.containerd.runc.v2",
          .hidden = true },
        { .name = "containerd-worker-gc",
          .kind = FK_BOOL,
          .path = CTD "gc",
          .usage = "Enable automatic garbage collection on worker",
          .def = "true" },
        { .name = "containerd-worker-gc-keepstorage",
          .kind = FK_STRING,
          .path = CTD,
          .special = FS_GC_KEEPSTORAGE,
          .usage = "Amount of storage GC keep locally, format \"Reserved[,Free[,Maximum]]\" (MB)" },
        { .name = "containerd-worker-net",
          .kind = FK_STRING,
          .path = CTD "networkMode",
          .usage = "worker network type (auto, bridge, cni or host)",
          .def = "auto" },
        { .name = "containerd-cni-config-path",
          .kind = FK_STRING,
          .path = CTD "cniConfigPath",
          .usage = "path of cni config file",
          .def = "/etc/buildkit/cni.json" },
        { .name = "containerd-cni-pool-size",
          .kind = FK_INT,
          .path = CTD "cniPoolSize",
          .usage = "size of cni network namespace pool",
          .def = "0" },
        { .name = "containerd-cni-binary-dir",
          .kind = FK_STRING,
          .path = CTD "cniBinaryPath",
          .usage = "path of cni binary files",
          .def = "/opt/cni/bin" },
        { .name = "containerd-worker-snapshotter",
          .kind = FK_STRING,
          .path = CTD "snapshotter",
          .usage = "snapshotter name to use",
          .def = "overlayfs" },
        { .name = "containerd-worker-apparmor-profile",
          .kind = FK_STRING,
          .path = CTD "apparmor-profile",
          .usage = "set the name of the apparmor profile applied to containers" },
        { .name = "containerd-worker-selinux",
          .kind = FK_BOOL,
          .path = CTD "selinux",
          .usage = "apply SELinux labels" },
        { .name = "containerd-max-parallelism",
          .kind = FK_INT,
          .path = CTD "max-parallelism",
          .usage = "limit the number of parallel build steps that can run at the same time",
          .def = "0" },

        { .name = "validate",
          .kind = FK_BOOL,
          .special = FS_VALIDATE,
          .usage = "check the configuration, print it as JSON and exit (0 usable, 1 not)" },
        { .name = "help", .alias = "h", .kind = FK_BOOL, .special = FS_HELP, .usage = "show help" },
        { .name = "version",
          .alias = "v",
          .kind = FK_BOOL,
          .special = FS_VERSION,
          .usage = "print the version" },
};

struct flag_value {
        bool set;
        char *s;
        bool b;
        int64_t i;
        char **v;
        size_t n;
};

static void flag_values_free(struct flag_value *fv)
{
        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                free(fv[i].s);
                config_strv_free(fv[i].v, fv[i].n);
        }
}

/* strconv.ParseBool */
static int parse_bool(const char *s, bool *ret)
{
        static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                if (streq(s, t[i])) {
                        *ret = true;
                        return 0;
                }
        for (size_t i = 0; i < ELEMENTSOF(f); i++)
                if (streq(s, f[i])) {
                        *ret = false;
                        return 0;
                }
        return -EINVAL;
}

/* strconv.ParseInt(s, 0, 64), as urfave/cli's IntFlag. */
static int parse_int(const char *s, int64_t *ret)
{
        char *end;
        long long v;

        if (!*s || isspace((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 0);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static const struct flag_def *flag_find(const char *name, size_t len)
{
        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
                        return &flags[i];
                if (flags[i].alias && strlen(flags[i].alias) == len &&
                    strncmp(flags[i].alias, name, len) == 0)
                        return &flags[i];
        }
        return NULL;
}

static const char *flag_suggest(const char *name)
{
        const char *names[ELEMENTSOF(flags)];
        size_t n = 0, len = strlen(name);

        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                if (flags[i].hidden)
                        continue;
                names[n++] = flags[i].name;
        }
        const char *s = config_suggest(name, names, n);
        if (s)
                return s;
        /* --max-parallelism -> --oci-max-parallelism */
        for (size_t i = 0; i < n; i++) {
                size_t l = strlen(names[i]);
                if (len >= 3 && l > len && streq(names[i] + l - len, name) &&
                    names[i][l - len - 1] == '-')
                        return names[i];
        }
        return NULL;
}

static struct kiln_config_cli *cli_new(void)
{
        struct kiln_config_cli *c = kiln_xcalloc(1, sizeof(*c));
        return c;
}

struct kiln_config_cli *kiln_config_cli_free(struct kiln_config_cli *c)
{
        if (!c)
                return NULL;
        kiln_config_free(c->config);
        free(c->config_path);
        kiln_config_diags_release(&c->diags);
        free(c);
        return NULL;
}

_printf_(3, 4) static int flag_error(struct kiln_config_cli *cli, struct kiln_error **err,
                                     const char *fmt, ...)
{
        va_list ap;
        _cleanup_free_ char *m = NULL;

        va_start(ap, fmt);
        m = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        kiln_config_diags_add(&cli->diags, KILN_CONFIG_ERROR, NULL, 0, 0, "%s", m);
        return kiln_error_set(err, -EINVAL, "%s", m);
}

/* Sets a key from a flag through the schema; problems land in diags. */
static void apply_string(struct kiln_config_cli *cli, const char *path, const char *flag,
                         const char *s)
{
        struct kiln_toml_value v = { .type = KILN_TOML_STRING,
                                     .str = { .s = (char *) s, .len = strlen(s) } };
        (void) schema_load_flag(cli->config, path, &v, flag, &cli->diags);
}

static void apply_value(struct kiln_config_cli *cli, const struct flag_def *f,
                        const struct flag_value *fv, const char *path, const char *flag)
{
        struct kiln_toml_value v = { 0 };
        _cleanup_free_ struct kiln_toml_value *items = NULL;
        _cleanup_free_ struct kiln_toml_value **ptrs = NULL;

        switch (f->kind) {
        case FK_STRING:
                apply_string(cli, path, flag, fv->s);
                return;
        case FK_BOOL:
                v.type = KILN_TOML_BOOL;
                v.boolean = fv->b;
                break;
        case FK_INT:
                v.type = KILN_TOML_INTEGER;
                v.integer = fv->i;
                break;
        case FK_STRV:
                items = kiln_xcalloc(fv->n + 1, sizeof(*items));
                ptrs = kiln_xcalloc(fv->n + 1, sizeof(*ptrs));
                for (size_t i = 0; i < fv->n; i++) {
                        items[i].type = KILN_TOML_STRING;
                        items[i].str.s = fv->v[i];
                        items[i].str.len = strlen(fv->v[i]);
                        ptrs[i] = &items[i];
                }
                v.type = KILN_TOML_ARRAY;
                v.array.items = ptrs;
                v.array.n = fv->n;
                break;
        }
        (void) schema_load_flag(cli->config, path, &v, flag, &cli->diags);
}

static void add_label(struct kiln_config_label **l, size_t *n, const char *kv)
{
        const char *eq = strchr(kv, '=');
        _cleanup_free_ char *key = kiln_xstrndup(kv, (size_t) (eq - kv));

        for (size_t i = 0; i < *n; i++)
                if (streq((*l)[i].key, key)) {
                        free((*l)[i].value);
                        (*l)[i].value = kiln_xstrdup(eq + 1);
                        return;
                }
        *l = kiln_xreallocarray(*l, *n + 2, sizeof(**l));
        (*l)[*n].key = TAKE_PTR(key);
        (*l)[*n].value = kiln_xstrdup(eq + 1);
        (*n)++;
        (*l)[*n] = (struct kiln_config_label){ 0 };
}

static int parse_gc_keepstorage(const char *s, struct kiln_config_disk_space out[3])
{
        const char *p = s;

        /* buildkitd: up to three integers, in MB (1e6); kiln refuses negatives. */
        for (int i = 0; i < 3; i++) {
                const char *comma = i < 2 ? strchr(p, ',') : NULL;
                size_t len = comma ? (size_t) (comma - p) : strlen(p);
                int64_t v = 0;

                if (len == 0)
                        return -EINVAL;
                for (size_t j = 0; j < len; j++) {
                        if (!isdigit((unsigned char) p[j]) && !(j == 0 && p[j] == '+'))
                                return -EINVAL;
                        if (p[j] == '+')
                                continue;
                        if (v > (INT64_MAX / 1000000 - 9) / 10)
                                return -ERANGE;
                        v = v * 10 + (p[j] - '0');
                }
                out[i].bytes = v * 1000000;
                if (!comma)
                        return 0;
                p = comma + 1;
        }
        return 0;
}

static void apply_special(struct kiln_config_cli *cli, const struct flag_def *f,
                          const struct flag_value *fv, const char *flag, bool in_userns)
{
        struct kiln_config *c = cli->config;
        bool oci = f->path && streq(f->path, OCI);

        switch (f->special) {
        case FS_DEBUG:
                if (fv->b)
                        apply_string(cli, "log.level", flag, "debug");
                break;
        case FS_TRACE:
                kiln_config_diags_add(&cli->diags, KILN_CONFIG_WARNING, NULL, 0, 0,
                                      "--trace option is deprecated; use --log-level=trace "
                                      "instead");
                if (fv->b)
                        apply_string(cli, "log.level", flag, "trace");
                break;
        case FS_GROUP: {
                int64_t gid;
                if (!*fv->s)
                        break;
                if (parse_int(fv->s, &gid) < 0) {
                        struct group gr, *res = NULL;
                        char buf[16384];
                        if (getgrnam_r(fv->s, &gr, buf, sizeof(buf), &res) != 0 || !res) {
                                kiln_config_diags_add(&cli->diags, KILN_CONFIG_ERROR, NULL, 0, 0,
                                                      "invalid value for %s: unknown group "
                                                      "\"%s\"",
                                                      flag, fv->s);
                                break;
                        }
                        gid = res->gr_gid;
                }
                struct kiln_toml_value v = { .type = KILN_TOML_INTEGER, .integer = gid };
                (void) schema_load_flag(c, "grpc.gid", &v, flag, &cli->diags);
                break;
        }
        case FS_NONEMPTY:
                if (*fv->s)
                        apply_string(cli, f->path, flag, fv->s);
                break;
        case FS_SAVE_CACHE_DEBUG:
                c->save_cache_debug = fv->b;
                break;
        case FS_ROOTLESS:
                break; /* see kiln_config_cli_parse */
        case FS_WORKER_ENABLED: {
                int *enabled = oci ? &c->worker_oci.enabled : &c->worker_containerd.enabled;
                bool b;
                if (!*fv->s || strcasecmp(fv->s, "auto") == 0)
                        *enabled = -1;
                else if (parse_bool(fv->s, &b) == 0)
                        *enabled = b;
                else
                        kiln_config_diags_add(&cli->diags, KILN_CONFIG_ERROR, NULL, 0, 0,
                                              "invalid value for %s: \"%s\" is not one of true, "
                                              "false, auto",
                                              flag, fv->s);
                break;
        }
        case FS_WORKER_LABELS: {
                struct kiln_config_label **l =
                        oci ? &c->worker_oci.labels : &c->worker_containerd.labels;
                size_t *n = oci ? &c->worker_oci.n_labels : &c->worker_containerd.n_labels;
                for (size_t i = 0; i < fv->n; i++) {
                        if (!strchr(fv->v[i], '=')) {
                                kiln_config_diags_add(&cli->diags, KILN_CONFIG_ERROR, NULL, 0, 0,
                                                      "invalid value for %s: \"%s\" is not "
                                                      "key=value",
                                                      flag, fv->v[i]);
                                continue;
                        }
                        add_label(l, n, fv->v[i]);
                }
                break;
        }
        case FS_WORKER_ROOTLESS:
                if (!in_userns || geteuid() > 0) {
                        kiln_config_diags_add(&cli->diags, KILN_CONFIG_ERROR, NULL, 0, 0,
                                              "%s: rootless mode requires to be executed as the "
                                              "mapped root in a user namespace; you may use "
                                              "RootlessKit for setting up the namespace",
                                              flag);
                        break;
                }
                if (oci)
                        c->worker_oci.rootless = fv->b;
                else
                        c->worker_containerd.rootless = fv->b;
                break;
        case FS_GC_KEEPSTORAGE: {
                struct kiln_config_disk_space d[3] = { 0 };
                if (*fv->s && parse_gc_keepstorage(fv->s, d) < 0) {
                        kiln_config_diags_add(&cli->diags, KILN_CONFIG_ERROR, NULL, 0, 0,
                                              "invalid value for %s: \"%s\" is not "
                                              "Reserved[,Free[,Maximum]] in MB",
                                              flag, fv->s);
                        break;
                }
                if (oci) {
                        c->worker_oci.reserved_space = d[0];
                        c->worker_oci.min_free_space = d[1];
                        c->worker_oci.max_used_space = d[2];
                } else {
                        c->worker_containerd.reserved_space = d[0];
                        c->worker_containerd.min_free_space = d[1];
                        c->worker_containerd.max_used_space = d[2];
                }
                break;
        }
        case FS_CONTAINERD_RUNTIME:
                /* buildkitd replaces the whole runtime table, path and options included. */
                free(c->worker_containerd.runtime.path);
                c->worker_containerd.runtime.path = NULL;
                json_decref(c->worker_containerd.runtime.options);
                c->worker_containerd.runtime.options = NULL;
                apply_string(cli, CTD "runtime.name", flag, fv->s);
                break;
        case FS_NONE:
        case FS_CONFIG:
        case FS_VALIDATE:
        case FS_HELP:
        case FS_VERSION:
                break;
        }
}

static void set_first_error(struct kiln_config_cli *cli, struct kiln_error **err)
{
        size_t n = kiln_config_diags_count(&cli->diags, KILN_CONFIG_ERROR);

        for (size_t i = 0; i < cli->diags.n; i++)
                if (cli->diags.items[i].level == KILN_CONFIG_ERROR) {
                        _cleanup_free_ char *s = kiln_config_diag_format(&cli->diags.items[i]);
                        if (n > 1)
                                kiln_error_set(err, -EINVAL, "%s (and %zu more error%s)", s, n - 1,
                                               n > 2 ? "s" : "");
                        else
                                kiln_error_set(err, -EINVAL, "%s", s);
                        return;
                }
}

int kiln_config_cli_parse(int argc, char **argv, struct kiln_config_cli **ret,
                          struct kiln_error **err)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = cli_new();
        struct flag_value fv[ELEMENTSOF(flags)] = { 0 };
        bool in_userns;
        const char *path;
        bool must_exist;
        int r = 0;

        *ret = NULL;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *name, *eq, *val = NULL;
                const struct flag_def *f;
                size_t name_len;

                if (a[0] != '-' || streq(a, "-") || streq(a, "--")) {
                        r = flag_error(cli, err, "unexpected argument '%s': kilnd takes only flags",
                                       a);
                        goto finish;
                }
                name = a + (a[1] == '-' ? 2 : 1);
                eq = strchr(name, '=');
                name_len = eq ? (size_t) (eq - name) : strlen(name);
                f = flag_find(name, name_len);
                if (!f) {
                        _cleanup_free_ char *n = kiln_xstrndup(name, name_len);
                        const char *s = flag_suggest(n);
                        if (s)
                                r = flag_error(cli, err, "unknown flag --%s; did you mean --%s?", n,
                                               s);
                        else
                                r = flag_error(cli, err, "unknown flag --%s (see kilnd --help)", n);
                        goto finish;
                }
                size_t idx = (size_t) (f - flags);
                if (eq)
                        val = eq + 1;
                else if (f->kind != FK_BOOL) {
                        if (i + 1 >= argc) {
                                r = flag_error(cli, err, "flag needs an argument: --%s", f->name);
                                goto finish;
                        }
                        val = argv[++i];
                }
                fv[idx].set = true;
                switch (f->kind) {
                case FK_BOOL:
                        if (val && parse_bool(val, &fv[idx].b) < 0) {
                                r = flag_error(cli, err,
                                               "invalid value \"%s\" for flag --%s: expected true "
                                               "or false",
                                               val, f->name);
                                goto finish;
                        }
                        if (!val)
                                fv[idx].b = true;
                        break;
                case FK_INT:
                        if (parse_int(val, &fv[idx].i) < 0) {
                                r = flag_error(cli, err,
                                               "invalid value \"%s\" for flag --%s: expected an "
                                               "integer",
                                               val, f->name);
                                goto finish;
                        }
                        break;
                case FK_STRING:
                        free(fv[idx].s);
                        fv[idx].s = kiln_xstrdup(val);
                        break;
                case FK_STRV:
                        fv[idx].v = kiln_xreallocarray(fv[idx].v, fv[idx].n + 2, sizeof(char *));
                        fv[idx].v[fv[idx].n++] = kiln_xstrdup(val);
                        fv[idx].v[fv[idx].n] = NULL;
                        break;
                }
        }

        /* Environment sources count as set flags, below the command line. */
        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                const char *e;
                if (fv[i].set || !flags[i].env || !(e = getenv(flags[i].env)))
                        continue;
                fv[i].set = true;
                fv[i].s = kiln_xstrdup(e);
        }

        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                if (!fv[i].set)
                        continue;
                if (flags[i].special == FS_HELP)
                        cli->help = fv[i].b;
                else if (flags[i].special == FS_VERSION)
                        cli->version = fv[i].b;
                else if (flags[i].special == FS_VALIDATE)
                        cli->validate = fv[i].b;
        }

        cli->config = kiln_config_new();
        if (cli->help || cli->version) {
                kiln_config_set_defaults(cli->config);
                goto finish;
        }

        /* The file. buildkitd treats a missing file as empty even when named
         * with --config; kiln only does that for the default path. */
        {
                const struct flag_value *cf = &fv[0];
                _cleanup_(kiln_error_freep) struct kiln_error *lerr = NULL;

                path = cf->set ? cf->s : KILN_CONFIG_DEFAULT_PATH;
                must_exist = cf->set;
                if (*path) {
                        r = kiln_config_load_file(cli->config, path, must_exist, &cli->diags,
                                                  &lerr);
                        /* Name the file whenever one was read, even a broken one. */
                        if ((r == 0 || r == -EINVAL) && (must_exist || access(path, F_OK) == 0))
                                cli->config_path = kiln_xstrdup(path);
                }
        }

        kiln_config_set_defaults(cli->config);

        in_userns = config_running_in_userns();
        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                const struct flag_def *f = &flags[i];
                _cleanup_free_ char *flag = kiln_xasprintf("--%s", f->name);

                if (f->special == FS_ROOTLESS) {
                        /* buildkitd: --rootless defaults to true inside a user namespace
                         * and then applies even when not set. */
                        bool v = fv[i].set ? fv[i].b : in_userns;
                        if (fv[i].set || v) {
                                cli->config->worker_oci.rootless = v;
                                cli->config->worker_containerd.rootless = v;
                        }
                        continue;
                }
                if (!fv[i].set)
                        continue;
                if (f->special == FS_NONE)
                        apply_value(cli, f, &fv[i], f->path, flag);
                else
                        apply_special(cli, f, &fv[i], flag, in_userns);
        }

        /* Once more: normalises what the flags set (log level spelling). */
        kiln_config_set_defaults(cli->config);
        (void) kiln_config_check(cli->config, &cli->diags);
        kiln_config_diags_sort(&cli->diags);

        r = 0;
        if (kiln_config_diags_count(&cli->diags, KILN_CONFIG_ERROR) > 0) {
                set_first_error(cli, err);
                r = -EINVAL;
        }

finish:
        flag_values_free(fv);
        *ret = TAKE_PTR(cli);
        return r;
}

/* ---- --help ---- */

static char *usage_text;
static pthread_once_t usage_once = PTHREAD_ONCE_INIT;

static void usage_build(void)
{
        struct kiln_buf b = KILN_BUF_INIT(64u << 10);

        (void) kiln_buf_puts(&b, "NAME:\n"
                                 "   kilnd - build daemon, configured like buildkitd\n"
                                 "\n"
                                 "USAGE:\n"
                                 "   kilnd [global options]\n"
                                 "\n"
                                 "GLOBAL OPTIONS:\n");
        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                const struct flag_def *f = &flags[i];
                _cleanup_free_ char *left = NULL;

                if (f->hidden)
                        continue;
                if (f->alias)
                        left = kiln_xasprintf("--%s, -%s", f->name, f->alias);
                else if (f->kind == FK_BOOL)
                        left = kiln_xasprintf("--%s", f->name);
                else if (f->kind == FK_STRV)
                        left = kiln_xasprintf("--%s value [ --%s value ]", f->name, f->name);
                else
                        left = kiln_xasprintf("--%s value", f->name);
                (void) kiln_buf_printf(&b, "   %-45s %s", left, f->usage);
                if (f->def) {
                        if (f->kind == FK_STRING)
                                (void) kiln_buf_printf(&b, " (default: \"%s\")", f->def);
                        else if (f->kind == FK_STRV)
                                (void) kiln_buf_printf(&b, " (default: \"%s\")", f->def);
                        else
                                (void) kiln_buf_printf(&b, " (default: %s)", f->def);
                }
                if (f->env)
                        (void) kiln_buf_printf(&b, " [$%s]", f->env);
                (void) kiln_buf_putc(&b, '\n');
        }
        usage_text = kiln_buf_steal(&b);
}

const char *kiln_config_usage(void)
{
        pthread_once(&usage_once, usage_build);
        return usage_text;
}
