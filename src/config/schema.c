/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The buildkitd.toml schema (BuildKit's cmd/buildkitd/config, current as of
 * v0.2x) as one table, and the code it drives: loading a TOML tree into
 * struct kiln_config with precise diagnostics, defaults, and the JSON view.
 *
 * Matching follows go-toml/v2, which buildkitd uses: a key matches its
 * field exactly or, failing that, case-insensitively. Values are converted
 * as go-toml converts them (Duration and DiskSpace take strings and
 * integers, as their UnmarshalText sees the raw text).
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <strings.h>

#include "base/buf.h"
#include "base/log.h"
#include "config/address.h"
#include "config/config-internal.h"

/* ---- value checks ---- */

static const char *const network_modes[] = { "", "auto", "cni", "host", "bridge", NULL };
static const char *const entitlements[] = { "network.host", "security.insecure", "device", NULL };
static const char *const log_formats[] = { "", "text", "json", NULL };

static int check_log_level(const char *s, char **why)
{
        if (streq(s, "") || kiln_log_level_from_string(s) >= 0)
                return 0;
        *why = kiln_xasprintf("unsupported log level \"%s\"; expected one of panic, fatal, error, "
                              "warn, info, debug, trace",
                              s);
        return -EINVAL;
}

static bool valid_chars(const char *s, size_t n, const char *extra)
{
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) s[i]) && !strchr(extra, s[i]))
                        return false;
        return true;
}

static const char *const known_os[] = { "aix",    "android", "darwin",  "dragonfly", "freebsd",
                                        "hurd",   "illumos", "ios",     "js",        "linux",
                                        "nacl",   "netbsd",  "openbsd", "plan9",     "solaris",
                                        "wasip1", "windows", "zos",     "macos",     NULL };
static const char *const known_arch[] = {
        "386",       "amd64",       "amd64p32", "arm",    "armbe",   "arm64",   "arm64be",
        "ppc64",     "ppc64le",     "loong64",  "mips",   "mipsle",  "mips64",  "mips64le",
        "mips64p32", "mips64p32le", "ppc",      "riscv",  "riscv64", "s390",    "s390x",
        "sparc",     "sparc64",     "wasm",     "i386",   "i486",    "i586",    "i686",
        "x86_64",    "x86-64",      "aarch64",  "armhf",  "armel",   "arm64v8", "armv8",
        "armv7",     "armv7l",      "armv6",    "armv6l", "armv5",   "armv5l",  NULL
};

static bool in_list(const char *const *l, const char *s)
{
        for (; *l; l++)
                if (strcasecmp(*l, s) == 0)
                        return true;
        return false;
}

/* containerd's platforms.Parse, as buildkitd applies it to worker platforms. */
static int check_platform(const char *s, char **why)
{
        const char *parts[4];
        size_t lens[4], n = 0;
        const char *p = s;

        if (strchr(s, '*')) {
                *why = kiln_xasprintf("invalid platform \"%s\": wildcards are not supported", s);
                return -EINVAL;
        }
        while (n < 4) {
                const char *slash = n < 3 ? strchr(p, '/') : NULL;
                parts[n] = p;
                lens[n] = slash ? (size_t) (slash - p) : strlen(p);
                n++;
                if (!slash)
                        break;
                p = slash + 1;
        }
        if (n == 4 || strchr(parts[n - 1], '/')) {
                *why = kiln_xasprintf("invalid platform \"%s\": expected os[/arch[/variant]]", s);
                return -EINVAL;
        }
        /* os[(version[+feature]*)] */
        size_t os_len = lens[0];
        const char *paren = memchr(parts[0], '(', lens[0]);
        if (paren) {
                os_len = (size_t) (paren - parts[0]);
                bool ok = parts[0][lens[0] - 1] == ')';
                for (const char *q = paren + 1; ok && q < parts[0] + lens[0] - 1; q++)
                        if (!isalnum((unsigned char) *q) && !strchr("_.%-+", *q))
                                ok = false;
                if (!ok) {
                        *why = kiln_xasprintf("invalid platform \"%s\": bad OS version", s);
                        return -EINVAL;
                }
        }
        if (!valid_chars(parts[0], os_len, "_-")) {
                *why = kiln_xasprintf("invalid platform \"%s\": bad OS component \"%.*s\"", s,
                                      (int) lens[0], parts[0]);
                return -EINVAL;
        }
        for (size_t i = 1; i < n; i++)
                if (!valid_chars(parts[i], lens[i], "_.-")) {
                        *why = kiln_xasprintf("invalid platform \"%s\": bad component \"%.*s\"", s,
                                              (int) lens[i], parts[i]);
                        return -EINVAL;
                }
        if (n == 1) {
                _cleanup_free_ char *os = kiln_xstrndup(parts[0], os_len);
                if (!in_list(known_os, os) && !in_list(known_arch, os)) {
                        *why = kiln_xasprintf(
                                "invalid platform \"%s\": unknown operating system or architecture",
                                s);
                        return -EINVAL;
                }
        }
        return 0;
}

/* buildkitd's listeners: unix://, tcp://, fd:// (npipe:// is Windows only). */
static int check_address(const char *s, char **why)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_config_address a = { .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID };
        int r;

        if (!strstr(s, "://")) {
                *why = kiln_xasprintf("address \"%s\" has no scheme; did you mean \"unix://%s\"?",
                                      s, s);
                return -EINVAL;
        }
        r = kiln_config_address_parse(s, &a, &err);
        if (r < 0) {
                *why = kiln_xstrdup(kiln_error_message(err));
                return r;
        }
        kiln_config_address_release(&a);
        return 0;
}

static int check_mirror(const char *s, char **why)
{
        const char *sep = strstr(s, "://");

        if (streq(s, "")) {
                *why = kiln_xstrdup("empty mirror");
                return -EINVAL;
        }
        if (sep) {
                *why = kiln_xasprintf("the scheme of mirror \"%s\" is ignored (as by buildkitd); "
                                      "write \"%s\" and use http = true in [registry.\"%.*s\"] "
                                      "for plain HTTP",
                                      s, sep + 3, (int) strcspn(sep + 3, "/"), sep + 3);
                return 1;
        }
        return 0;
}

static int check_nonempty(const char *s, char **why)
{
        if (*s)
                return 0;
        *why = kiln_xstrdup("must not be empty");
        return -EINVAL;
}

/* ---- element init/release ---- */

void config_registry_init(void *p)
{
        struct kiln_config_registry *r = p;
        r->http = -1;
        r->insecure = -1;
}

/* ---- the table ---- */

#define KEY(n, t, T, f, ...)                                                \
        {                                                                   \
                .name = n, .type = t, .offset = offsetof(T, f), __VA_ARGS__ \
        }
#define STR(n, T, f, ...)         KEY(n, ST_STRING, T, f, __VA_ARGS__)
#define BOOL(n, T, f, ...)        KEY(n, ST_BOOL, T, f, __VA_ARGS__)
#define TRI(n, T, f, ...)         KEY(n, ST_TRIBOOL, T, f, __VA_ARGS__)
#define INT(n, T, f, lo, hi, ...) KEY(n, ST_INT, T, f, .min = lo, .max = hi, __VA_ARGS__)
#define STRV(n, T, f, cnt, ...)   KEY(n, ST_STRV, T, f, .aux = offsetof(T, cnt), __VA_ARGS__)
#define DUR(n, T, f, ...)         KEY(n, ST_DURATION, T, f, __VA_ARGS__)
#define DISK(n, T, f, ...)        KEY(n, ST_DISK, T, f, __VA_ARGS__)
#define TABLE(n, T, f, kids, ...) \
        KEY(n, ST_TABLE, T, f, .children = kids, .n_children = ELEMENTSOF(kids), __VA_ARGS__)
/* A table whose fields live in the same struct (offset 0). */
#define VIEW(n, kids, ...)                                                  \
        {                                                                   \
                .name = n, .type = ST_TABLE, .offset = 0, .children = kids, \
                .n_children = ELEMENTSOF(kids), __VA_ARGS__                 \
        }

#define I64MAX INT64_MAX

static const struct schema_key gcpolicy_keys[] = {
        BOOL("all", struct kiln_config_gc_policy, all),
        STRV("filters", struct kiln_config_gc_policy, filters, n_filters),
        DUR("keepDuration", struct kiln_config_gc_policy, keep_duration),
        DISK("keepBytes", struct kiln_config_gc_policy, keep_bytes, .flags = K_DEPRECATED,
             .note = "'keepBytes' is deprecated; use 'reservedSpace'"),
        DISK("reservedSpace", struct kiln_config_gc_policy, reserved_space),
        DISK("maxUsedSpace", struct kiln_config_gc_policy, max_used_space),
        DISK("minFreeSpace", struct kiln_config_gc_policy, min_free_space),
};

/* GCConfig and NetworkConfig, embedded in both workers. */
#define GC_NET_KEYS(T)                                                                             \
        TRI("gc", T, gc),                                                                          \
                DISK("gckeepstorage", T, gc_keep_storage, .flags = K_DEPRECATED,                   \
                     .note = "'gckeepstorage' is deprecated; use 'reservedSpace'"),                \
                DISK("reservedSpace", T, reserved_space), DISK("maxUsedSpace", T, max_used_space), \
                DISK("minFreeSpace", T, min_free_space),                                           \
                KEY("gcpolicy", ST_TABLE_ARRAY, T, gc_policies, .aux = offsetof(T, n_gc_policies), \
                    .children = gcpolicy_keys, .n_children = ELEMENTSOF(gcpolicy_keys),            \
                    .elem_size = sizeof(struct kiln_config_gc_policy)),                            \
                STR("networkMode", T, network_mode, .choices = network_modes, .def = "auto"),      \
                STR("cniConfigPath", T, cni_config_path, .def = "/etc/buildkit/cni.json"),         \
                STR("cniBinaryPath", T, cni_binary_path, .def = "/opt/cni/bin"),                   \
                INT("cniPoolSize", T, cni_pool_size, 0, I64MAX),                                   \
                STR("bridgeName", T, bridge_name, .def = "buildkit0"),                             \
                STR("bridgeSubnet", T, bridge_subnet, .def = "10.10.0.0/16")

#define OCI struct kiln_config_worker_oci
static const struct schema_key oci_keys[] = {
        TRI("enabled", OCI, enabled),
        KEY("labels", ST_LABELS, OCI, labels, .aux = offsetof(OCI, n_labels)),
        STRV("platforms", OCI, platforms, n_platforms, .check = check_platform),
        STR("snapshotter", OCI, snapshotter, .def = "auto"), /* checked with proxySnapshotterPath */
        BOOL("rootless", OCI, rootless),
        BOOL("noProcessSandbox", OCI, no_process_sandbox),
        GC_NET_KEYS(OCI),
        STR("userRemapUnsupported", OCI, user_remap_unsupported),
        STR("binary", OCI, binary),
        STR("proxySnapshotterPath", OCI, proxy_snapshotter_path),
        STR("defaultCgroupParent", OCI, default_cgroup_parent),
        KEY("stargzSnapshotter", ST_JSON, OCI, stargz_snapshotter),
        STR("apparmor-profile", OCI, apparmor_profile),
        BOOL("selinux", OCI, selinux),
        INT("max-parallelism", OCI, max_parallelism, 0, I64MAX),
};
#undef OCI

#define CTD struct kiln_config_worker_containerd
static const struct schema_key containerd_runtime_keys[] = {
        STR("name", CTD, runtime.name, .def = "io.containerd.runc.v2"),
        STR("path", CTD, runtime.path),
        KEY("options", ST_JSON, CTD, runtime.options),
};

static const struct schema_key containerd_keys[] = {
        STR("address", CTD, address, .def = "/run/containerd/containerd.sock"),
        TRI("enabled", CTD, enabled),
        KEY("labels", ST_LABELS, CTD, labels, .aux = offsetof(CTD, n_labels)),
        STRV("platforms", CTD, platforms, n_platforms, .check = check_platform),
        STR("namespace", CTD, namespace_, .def = "buildkit"),
        VIEW("runtime", containerd_runtime_keys),
        GC_NET_KEYS(CTD),
        STR("snapshotter", CTD, snapshotter, .def = "overlayfs"),
        STR("apparmor-profile", CTD, apparmor_profile),
        BOOL("selinux", CTD, selinux),
        INT("max-parallelism", CTD, max_parallelism, 0, I64MAX),
        STR("defaultCgroupParent", CTD, default_cgroup_parent),
        BOOL("rootless", CTD, rootless),
};
#undef CTD

#define CFG struct kiln_config
static const struct schema_key worker_keys[] = {
        TABLE("oci", CFG, worker_oci, oci_keys),
        TABLE("containerd", CFG, worker_containerd, containerd_keys),
};

#define REG struct kiln_config_registry
static const struct schema_key keypair_keys[] = {
        STR("key", struct kiln_config_keypair, key),
        STR("cert", struct kiln_config_keypair, cert),
};

static const struct schema_key registry_keys[] = {
        STRV("mirrors", REG, mirrors, n_mirrors, .check = check_mirror),
        TRI("http", REG, http),
        TRI("insecure", REG, insecure),
        STRV("ca", REG, ca, n_ca, .check = check_nonempty),
        KEY("keypair", ST_TABLE_ARRAY, REG, keypairs, .aux = offsetof(REG, n_keypairs),
            .children = keypair_keys, .n_children = ELEMENTSOF(keypair_keys),
            .elem_size = sizeof(struct kiln_config_keypair)),
        STRV("tlsconfigdir", REG, tlsconfigdir, n_tlsconfigdir),
};
#undef REG

static const struct schema_key log_keys[] = {
        STR("format", CFG, log.format, .choices = log_formats),
        STR("level", CFG, log.level, .check = check_log_level),
};

static const struct schema_key tls_keys[] = {
        STR("cert", CFG, grpc.tls.cert),
        STR("key", CFG, grpc.tls.key),
        STR("ca", CFG, grpc.tls.ca),
};

static const struct schema_key grpc_keys[] = {
        STRV("address", CFG, grpc.address, grpc.n_address, .check = check_address),
        STR("debugAddress", CFG, grpc.debug_address),
        INT("uid", CFG, grpc.uid, 0, 4294967294LL, .flags = K_PRESENCE,
            .aux = offsetof(CFG, grpc.uid_set)),
        INT("gid", CFG, grpc.gid, 0, 4294967294LL, .flags = K_PRESENCE,
            .aux = offsetof(CFG, grpc.gid_set)),
        STR("securityDescriptor", CFG, grpc.security_descriptor),
        VIEW("tls", tls_keys),
};

static const struct schema_key otel_keys[] = {
        STR("socketPath", CFG, otel.socket_path, .def = "/run/buildkit/otel-grpc.sock"),
};

static const struct schema_key cdi_keys[] = {
        TRI("disabled", CFG, cdi.disabled),
        STRV("specDirs", CFG, cdi.spec_dirs, cdi.n_spec_dirs),
        STRV("autoAllowed", CFG, cdi.auto_allowed, cdi.n_auto_allowed),
};

static const struct schema_key dns_keys[] = {
        STRV("nameservers", CFG, dns.nameservers, dns.n_nameservers),
        STRV("options", CFG, dns.options, dns.n_options),
        STRV("searchDomains", CFG, dns.search_domains, dns.n_search_domains),
};

static const struct schema_key history_keys[] = {
        DUR("maxAge", CFG, history.max_age),
        INT("maxEntries", CFG, history.max_entries, 0, I64MAX),
};

static const struct schema_key dockerfile_frontend_keys[] = {
        TRI("enabled", CFG, frontend.dockerfile_enabled),
};

static const struct schema_key gateway_frontend_keys[] = {
        TRI("enabled", CFG, frontend.gateway_enabled),
        STRV("allowedRepositories", CFG, frontend.gateway_allowed_repositories,
             frontend.n_gateway_allowed_repositories),
};

static const struct schema_key frontend_keys[] = {
        VIEW("dockerfile.v0", dockerfile_frontend_keys),
        VIEW("gateway.v0", gateway_frontend_keys),
};

static const struct schema_key system_keys[] = {
        DUR("platformsCacheMaxAge", CFG, system.platforms_cache_max_age, .flags = K_PRESENCE,
            .aux = offsetof(CFG, system.platforms_cache_max_age_set)),
        INT("maxRegistryConcurrency", CFG, system.max_registry_concurrency, 1, I64MAX,
            .def_int = 4),
};

#define POLICY(n, i) STR(n, CFG, cache_gha.policy[i])
static const struct schema_key gha_policy_keys[] = {
        INT("timestampThreshold", CFG, cache_gha.timestamp_threshold, 0, I64MAX),
        INT("tlogThreshold", CFG, cache_gha.tlog_threshold, 0, I64MAX),
        POLICY("certificateIssuer", KILN_CONFIG_GHA_POLICY_CERTIFICATE_ISSUER),
        POLICY("subjectAlternativeName", KILN_CONFIG_GHA_POLICY_SUBJECT_ALTERNATIVE_NAME),
        POLICY("issuer", KILN_CONFIG_GHA_POLICY_ISSUER),
        POLICY("githubWorkflowTrigger", KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_TRIGGER),
        POLICY("githubWorkflowSHA", KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_SHA),
        POLICY("githubWorkflowName", KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_NAME),
        POLICY("githubWorkflowRepository", KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_REPOSITORY),
        POLICY("githubWorkflowRef", KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_REF),
        POLICY("buildSignerURI", KILN_CONFIG_GHA_POLICY_BUILD_SIGNER_URI),
        POLICY("buildSignerDigest", KILN_CONFIG_GHA_POLICY_BUILD_SIGNER_DIGEST),
        POLICY("runnerEnvironment", KILN_CONFIG_GHA_POLICY_RUNNER_ENVIRONMENT),
        POLICY("sourceRepositoryURI", KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_URI),
        POLICY("sourceRepositoryDigest", KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_DIGEST),
        POLICY("sourceRepositoryRef", KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_REF),
        POLICY("sourceRepositoryIdentifier", KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_IDENTIFIER),
        POLICY("sourceRepositoryOwnerURI", KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_OWNER_URI),
        POLICY("sourceRepositoryOwnerIdentifier",
               KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_OWNER_IDENTIFIER),
        POLICY("buildConfigURI", KILN_CONFIG_GHA_POLICY_BUILD_CONFIG_URI),
        POLICY("buildConfigDigest", KILN_CONFIG_GHA_POLICY_BUILD_CONFIG_DIGEST),
        POLICY("buildTrigger", KILN_CONFIG_GHA_POLICY_BUILD_TRIGGER),
        POLICY("runInvocationURI", KILN_CONFIG_GHA_POLICY_RUN_INVOCATION_URI),
        POLICY("sourceRepositoryVisibilityAtSigning",
               KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_VISIBILITY_AT_SIGNING),
};
#undef POLICY

static const struct schema_key gha_sign_keys[] = {
        STRV("command", CFG, cache_gha.sign_command, cache_gha.n_sign_command),
};

static const struct schema_key gha_verify_keys[] = {
        BOOL("required", CFG, cache_gha.verify_required),
        VIEW("policy", gha_policy_keys),
};

static const struct schema_key gha_keys[] = {
        VIEW("sign", gha_sign_keys, .flags = K_PRESENCE, .aux = offsetof(CFG, cache_gha.sign_set)),
        VIEW("verify", gha_verify_keys),
};

static const struct schema_key cache_keys[] = {
        VIEW("gha", gha_keys, .flags = K_PRESENCE, .aux = offsetof(CFG, cache_gha.set)),
};

const struct schema_key schema_root[] = {
        BOOL("debug", CFG, debug, .flags = K_DEPRECATED | K_JSON_IF_TRUE,
             .note = "'debug' configuration option is deprecated, use 'log.level = \"debug\"' "
                     "instead"),
        BOOL("trace", CFG, trace, .flags = K_DEPRECATED | K_JSON_IF_TRUE,
             .note = "'trace' configuration option is deprecated, use 'log.level = \"trace\"' "
                     "instead"),
        STR("root", CFG, root, .def = KILN_CONFIG_DEFAULT_ROOT),
        STRV("insecure-entitlements", CFG, insecure_entitlements, n_insecure_entitlements,
             .choices = entitlements),
        BOOL("proxyNetwork", CFG, proxy_network),
        VIEW("log", log_keys),
        VIEW("grpc", grpc_keys),
        VIEW("otel", otel_keys),
        VIEW("cdi", cdi_keys),
        VIEW("worker", worker_keys),
        KEY("registry", ST_MAP, CFG, registries, .aux = offsetof(CFG, n_registries),
            .children = registry_keys, .n_children = ELEMENTSOF(registry_keys),
            .elem_size = sizeof(struct kiln_config_registry),
            .map_key_offset = offsetof(struct kiln_config_registry, host),
            .elem_init = config_registry_init, .flags = K_UNQUOTED_HINT),
        VIEW("dns", dns_keys, .flags = K_PRESENCE, .aux = offsetof(CFG, dns.set)),
        VIEW("history", history_keys, .flags = K_PRESENCE, .aux = offsetof(CFG, history.set)),
        VIEW("frontend", frontend_keys),
        VIEW("system", system_keys),
        STR("provenanceEnvDir", CFG, provenance_env_dir, .def = "/etc/buildkit/provenance.d"),
        VIEW("cache", cache_keys),
};
const size_t schema_root_n = ELEMENTSOF(schema_root);
#undef CFG

/* Known mistakes that edit distance cannot explain. */
static const struct {
        const char *table; /* dotted path of the table, "" for the top */
        const char *key;
        const char *hint;
} key_hints[] = {
        { "", "ghacache",
          "buildkitd has no [ghacache] table (its documentation is wrong); write "
          "[cache.gha.sign] command = [...] and [cache.gha.verify]" },
        { "cache.gha.sign", "cmd", "did you mean 'command' (an array of strings)?" },
        { "", "gc", "did you mean [worker.oci] gc, reservedSpace ...?" },
        { "", "mirrors", "mirrors belong in [registry.\"<host>\"]" },
};

/* ---- helpers ---- */

#define AT(base, off, type) ((type *) ((char *) (base) + (off)))

static bool is_bare_key(const char *s)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && *s != '-' && *s != '_')
                        return false;
        return true;
}

static char *quote_key(const char *s)
{
        if (is_bare_key(s))
                return kiln_xstrdup(s);
        return kiln_xasprintf("\"%s\"", s);
}

static char *join_path(const char *path, const char *name)
{
        _cleanup_free_ char *q = quote_key(name);
        if (!path || !*path)
                return TAKE_PTR(q);
        return kiln_xasprintf("%s.%s", path, q);
}

struct lctx {
        struct kiln_config *c;
        const char *file;
        /* The document, for the literal text of a value: buildkitd's TOML
         * decoder hands durations and sizes their raw text. NULL for
         * command-line values. */
        const char *text;
        const char *flag; /* set when loading a command-line value */
        struct kiln_config_diags *diags;
        size_t errors;
};

_printf_(4, 5) static void diag(struct lctx *x, enum kiln_config_diag_level l,
                                struct kiln_toml_pos pos, const char *fmt, ...)
{
        va_list ap;
        _cleanup_free_ char *m = NULL;

        va_start(ap, fmt);
        m = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        if (l == KILN_CONFIG_ERROR)
                x->errors++;
        if (x->flag)
                kiln_config_diags_add(x->diags, l, NULL, 0, 0, "%s", m);
        else
                kiln_config_diags_add(x->diags, l, x->file, pos.line, pos.col, "%s", m);
}

static const char *toml_type_name(enum kiln_toml_type t)
{
        switch (t) {
        case KILN_TOML_STRING:
                return "string";
        case KILN_TOML_INTEGER:
                return "integer";
        case KILN_TOML_FLOAT:
                return "float";
        case KILN_TOML_BOOL:
                return "boolean";
        case KILN_TOML_DATETIME:
        case KILN_TOML_DATETIME_LOCAL:
                return "date-time";
        case KILN_TOML_DATE_LOCAL:
                return "date";
        case KILN_TOML_TIME_LOCAL:
                return "time";
        case KILN_TOML_ARRAY:
                return "array";
        case KILN_TOML_TABLE:
                return "table";
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                break;
        }
        return "value";
}

static const char *expected_name(enum schema_type t)
{
        switch (t) {
        case ST_STRING:
                return "string";
        case ST_BOOL:
        case ST_TRIBOOL:
                return "boolean";
        case ST_INT:
                return "integer";
        case ST_STRV:
                return "array of strings";
        case ST_DURATION:
                return "duration (a string such as \"48h\" or \"1h30m\", or integer seconds)";
        case ST_DISK:
                return "disk space (integer bytes, or a string such as \"512MB\" or \"10%\")";
        case ST_LABELS:
                return "table of strings";
        case ST_JSON:
        case ST_TABLE:
        case ST_MAP:
                return "table";
        case ST_TABLE_ARRAY:
                return "array of tables";
        }
        return "value";
}

/* A short rendering of a scalar for messages. */
static char *value_repr(const struct kiln_toml_value *v)
{
        switch (v->type) {
        case KILN_TOML_STRING:
                if (v->str.len > 40)
                        return kiln_xasprintf(" \"%.37s...\"", v->str.s);
                return kiln_xasprintf(" \"%s\"", v->str.s);
        case KILN_TOML_INTEGER:
                return kiln_xasprintf(" %" PRId64, v->integer);
        case KILN_TOML_FLOAT:
                return kiln_xasprintf(" %g", v->flt);
        case KILN_TOML_BOOL:
                return kiln_xstrdup(v->boolean ? " true" : " false");
        case KILN_TOML_DATETIME:
        case KILN_TOML_DATETIME_LOCAL:
        case KILN_TOML_DATE_LOCAL:
        case KILN_TOML_TIME_LOCAL:
                return kiln_xasprintf(" %s", v->str.s);
        case KILN_TOML_ARRAY:
        case KILN_TOML_TABLE:
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                break;
        }
        return kiln_xstrdup("");
}

static bool string_is_int(const struct kiln_toml_value *v)
{
        const char *s = v->str.s;
        if (v->str.len == 0)
                return false;
        if (*s == '-' || *s == '+')
                s++;
        if (!*s)
                return false;
        for (; *s; s++)
                if (!isdigit((unsigned char) *s))
                        return false;
        return true;
}

static void type_error(struct lctx *x, const struct schema_key *k, const char *what,
                       const struct kiln_toml_value *v)
{
        _cleanup_free_ char *repr = value_repr(v);
        const char *hint = "";
        _cleanup_free_ char *h = NULL;

        if (v->type == KILN_TOML_STRING) {
                if (k->type == ST_INT && string_is_int(v))
                        hint = h =
                                kiln_xasprintf("; write %s = %s without quotes", k->name, v->str.s);
                else if ((k->type == ST_BOOL || k->type == ST_TRIBOOL) &&
                         (streq(v->str.s, "true") || streq(v->str.s, "false")))
                        hint = h =
                                kiln_xasprintf("; write %s = %s without quotes", k->name, v->str.s);
                else if (k->type == ST_TRIBOOL && strcasecmp(v->str.s, "auto") == 0)
                        hint = h = kiln_xasprintf("; leave '%s' out for auto", k->name);
                else if (k->type == ST_STRV)
                        hint = h = kiln_xasprintf("; write %s = [\"%s\"]", k->name, v->str.s);
        } else if (v->type == KILN_TOML_TABLE && k->type == ST_TABLE_ARRAY) {
                hint = "; write each entry as [[...]] (double brackets)";
        }
        if (x->flag)
                diag(x, KILN_CONFIG_ERROR, v->pos, "invalid value for %s: expected %s, got %s%s%s",
                     what, expected_name(k->type), toml_type_name(v->type), repr, hint);
        else
                diag(x, KILN_CONFIG_ERROR, v->pos, "invalid type for %s: expected %s, got %s%s%s",
                     what, expected_name(k->type), toml_type_name(v->type), repr, hint);
}

static char *choices_list(const char *const *c)
{
        struct kiln_buf b = KILN_BUF_INIT(4096);
        bool first = true;

        for (; *c; c++) {
                if (!**c)
                        continue;
                (void) kiln_buf_printf(&b, "%s%s", first ? "" : ", ", *c);
                first = false;
        }
        return kiln_buf_steal(&b);
}

/* Validates one string (a STRING value or a STRV element). */
static int check_string(struct lctx *x, const struct schema_key *k, const char *what,
                        const struct kiln_toml_value *v)
{
        if (memchr(v->str.s, 0, v->str.len)) {
                diag(x, KILN_CONFIG_ERROR, v->pos, "invalid value for %s: contains a NUL byte",
                     what);
                return -EINVAL;
        }
        if (k->choices) {
                bool ok = false;
                for (const char *const *c = k->choices; *c; c++)
                        if ((k->flags & K_CHOICE_CI) ? strcasecmp(*c, v->str.s) == 0
                                                     : streq(*c, v->str.s))
                                ok = true;
                if (!ok) {
                        size_t n = 0;
                        while (k->choices[n])
                                n++;
                        const char *s = config_suggest(v->str.s, k->choices, n);
                        _cleanup_free_ char *list = choices_list(k->choices);
                        _cleanup_free_ char *dym =
                                s && *s ? kiln_xasprintf("; did you mean \"%s\"?", s) : NULL;
                        diag(x, KILN_CONFIG_ERROR, v->pos,
                             "invalid value for %s: \"%s\" is not one of %s%s", what, v->str.s,
                             list, dym ? dym : "");
                        return -EINVAL;
                }
        }
        if (k->check) {
                _cleanup_free_ char *why = NULL;
                int r = k->check(v->str.s, &why);
                if (r < 0) {
                        diag(x, KILN_CONFIG_ERROR, v->pos, "invalid value for %s: %s", what, why);
                        return -EINVAL;
                }
                if (r > 0)
                        diag(x, KILN_CONFIG_WARNING, v->pos, "%s: %s", what, why);
        }
        return 0;
}

static json_t *toml_to_json(const struct kiln_toml_value *v)
{
        json_t *j;

        switch (v->type) {
        case KILN_TOML_STRING:
                return json_stringn(v->str.s, v->str.len);
        case KILN_TOML_INTEGER:
                return json_integer(v->integer);
        case KILN_TOML_FLOAT:
                if (!isfinite(v->flt))
                        return json_string(isnan(v->flt) ? "nan" : v->flt > 0 ? "inf" : "-inf");
                return json_real(v->flt);
        case KILN_TOML_BOOL:
                return json_boolean(v->boolean);
        case KILN_TOML_DATETIME:
        case KILN_TOML_DATETIME_LOCAL:
        case KILN_TOML_DATE_LOCAL:
        case KILN_TOML_TIME_LOCAL:
                return json_string(v->str.s);
        case KILN_TOML_ARRAY:
                j = json_array();
                for (size_t i = 0; i < v->array.n; i++)
                        json_array_append_new(j, toml_to_json(v->array.items[i]));
                return j;
        case KILN_TOML_TABLE:
                j = json_object();
                for (size_t i = 0; i < v->table->n; i++)
                        json_object_set_new(j, v->table->entries[i].key,
                                            toml_to_json(v->table->entries[i].value));
                return j;
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                break;
        }
        return json_null();
}

static void record_origin(struct lctx *x, void *field, const struct kiln_toml_value *v)
{
        char *start = (char *) x->c, *p = field;

        if (p < start || p >= start + sizeof(*x->c))
                return;
        struct schema_loc loc = { .file = x->file,
                                  .line = v ? v->pos.line : 0,
                                  .col = v ? v->pos.col : 0,
                                  .flag = x->flag };
        config_origin_set(x->c, (size_t) (p - start), &loc);
}

/* ---- loading ---- */

static void load_table(struct lctx *x, const struct schema_key *keys, size_t n, void *base,
                       const struct kiln_toml_table *t, const char *path, const char *desc,
                       const char *unquoted_host);
static int schema_load_value(struct lctx *x, const struct schema_key *k, void *base,
                             const struct kiln_toml_value *v, const char *path, const char *what);

static char *describe(const char *name, const char *desc)
{
        if (!desc || !*desc)
                return kiln_xasprintf("'%s'", name);
        return kiln_xasprintf("'%s' in %s", name, desc);
}

static int load_strv(struct lctx *x, const struct schema_key *k, void *base, const char *what,
                     const struct kiln_toml_value *v)
{
        char ***pv = AT(base, k->offset, char **);
        size_t *pn = AT(base, k->aux, size_t);
        char **out;
        size_t bad = 0;

        if (v->type != KILN_TOML_ARRAY) {
                type_error(x, k, what, v);
                return -EINVAL;
        }
        for (size_t i = 0; i < v->array.n; i++) {
                const struct kiln_toml_value *e = v->array.items[i];
                if (e->type != KILN_TOML_STRING) {
                        _cleanup_free_ char *repr = value_repr(e);
                        diag(x, KILN_CONFIG_ERROR, e->pos,
                             "invalid type for %s: expected array of strings, but element %zu "
                             "is %s%s",
                             what, i + 1, toml_type_name(e->type), repr);
                        bad++;
                } else if (check_string(x, k, what, e) < 0)
                        bad++;
        }
        if (bad > 0)
                return -EINVAL;
        out = kiln_xcalloc(v->array.n + 1, sizeof(char *));
        for (size_t i = 0; i < v->array.n; i++)
                out[i] = kiln_xstrndup(v->array.items[i]->str.s, v->array.items[i]->str.len);
        config_strv_free(*pv, *pn);
        *pv = out;
        *pn = v->array.n;
        return 0;
}

/* The literal of a number as written ("1_000", "0x10", "1.5e9"): buildkitd
 * parses Duration and DiskSpace from that text, not from the TOML value,
 * so kiln accepts and refuses exactly the same spellings. NULL when there
 * is no document (a command-line value). */
static char *raw_number(const struct lctx *x, const struct kiln_toml_value *v)
{
        if (!x->text || (v->type != KILN_TOML_INTEGER && v->type != KILN_TOML_FLOAT))
                return NULL;
        return kiln_xstrndup(x->text + v->offset, v->length);
}

static int load_duration(struct lctx *x, const struct schema_key *k, int64_t *out, const char *what,
                         const struct kiln_toml_value *v)
{
        _cleanup_free_ char *raw = raw_number(x, v);
        const char *text = raw ? raw : v->type == KILN_TOML_STRING ? v->str.s : NULL;
        int r;

        if (!text && v->type == KILN_TOML_INTEGER) {
                if (v->integer > INT64_MAX / 1000000000 || v->integer < INT64_MIN / 1000000000) {
                        diag(x, KILN_CONFIG_ERROR, v->pos,
                             "invalid value for %s: %" PRId64 " seconds is out of range", what,
                             v->integer);
                        return -EINVAL;
                }
                *out = v->integer * 1000000000;
        } else if (text) {
                r = v->type == KILN_TOML_STRING && memchr(v->str.s, 0, v->str.len)
                            ? -EINVAL
                            : kiln_config_parse_duration(text, out);
                if (r < 0) {
                        diag(x, KILN_CONFIG_ERROR, v->pos,
                             "invalid value for %s: invalid duration %s%s%s%s; expected a Go "
                             "duration such as \"48h\", \"1h30m\" or \"500ms\", or integer "
                             "seconds",
                             what, raw ? "" : "\"", text, raw ? "" : "\"",
                             r == -ERANGE ? " (out of range)" : "");
                        return -EINVAL;
                }
        } else {
                type_error(x, k, what, v);
                return -EINVAL;
        }
        if (*out < 0) {
                diag(x, KILN_CONFIG_ERROR, v->pos, "invalid value for %s: must not be negative",
                     what);
                return -EINVAL;
        }
        return 0;
}

static int load_disk(struct lctx *x, const struct schema_key *k, struct kiln_config_disk_space *out,
                     const char *what, const struct kiln_toml_value *v)
{
        _cleanup_free_ char *raw = raw_number(x, v);
        const char *text = raw ? raw : v->type == KILN_TOML_STRING ? v->str.s : NULL;
        struct kiln_config_disk_space d = { 0 };
        int r;

        if (v->type == KILN_TOML_INTEGER && v->integer < 0) {
                diag(x, KILN_CONFIG_ERROR, v->pos,
                     "invalid value for %s: must not be negative, got %" PRId64, what, v->integer);
                return -EINVAL;
        }
        if (!text && v->type == KILN_TOML_INTEGER)
                d.bytes = v->integer;
        else if (text) {
                r = v->type == KILN_TOML_STRING && memchr(v->str.s, 0, v->str.len)
                            ? -EINVAL
                            : kiln_config_parse_disk_space(text, &d);
                if (r < 0) {
                        diag(x, KILN_CONFIG_ERROR, v->pos,
                             "invalid value for %s: invalid disk space %s%s%s; expected integer "
                             "bytes, a size such as \"512MB\" (binary units: 512 MiB) or a "
                             "percentage of the disk such as \"10%%\"",
                             what, raw ? "" : "\"", text, raw ? "" : "\"");
                        return -EINVAL;
                }
                if (d.percentage < 0) {
                        diag(x, KILN_CONFIG_ERROR, v->pos,
                             "invalid value for %s: percentage must not be negative, got \"%s\"",
                             what, text);
                        return -EINVAL;
                }
                if (d.percentage > 100)
                        diag(x, KILN_CONFIG_WARNING, v->pos,
                             "%s: \"%s\" is more than the whole disk", what, text);
        } else {
                type_error(x, k, what, v);
                return -EINVAL;
        }
        *out = d;
        return 0;
}

static int load_labels(struct lctx *x, const struct schema_key *k, void *base, const char *what,
                       const struct kiln_toml_value *v)
{
        struct kiln_config_label **pl = AT(base, k->offset, struct kiln_config_label *);
        size_t *pn = AT(base, k->aux, size_t);
        size_t bad = 0;

        if (v->type != KILN_TOML_TABLE) {
                type_error(x, k, what, v);
                return -EINVAL;
        }
        for (size_t i = 0; i < v->table->n; i++) {
                const struct kiln_toml_entry *e = &v->table->entries[i];
                if (strlen(e->key) != e->key_len) {
                        diag(x, KILN_CONFIG_ERROR, e->key_pos,
                             "invalid label key in %s: contains a NUL byte", what);
                        bad++;
                } else if (e->value->type != KILN_TOML_STRING) {
                        _cleanup_free_ char *repr = value_repr(e->value);
                        diag(x, KILN_CONFIG_ERROR, e->value->pos,
                             "invalid type for label '%s' of %s: expected string, got %s%s", e->key,
                             what, toml_type_name(e->value->type), repr);
                        bad++;
                }
        }
        if (bad)
                return -EINVAL;
        config_labels_free(*pl, *pn);
        *pl = kiln_xcalloc(v->table->n + 1, sizeof(**pl));
        for (size_t i = 0; i < v->table->n; i++) {
                (*pl)[i].key = kiln_xstrdup(v->table->entries[i].key);
                (*pl)[i].value = kiln_xstrndup(v->table->entries[i].value->str.s,
                                               v->table->entries[i].value->str.len);
        }
        *pn = v->table->n;
        return 0;
}

static int load_table_array(struct lctx *x, const struct schema_key *k, void *base,
                            const char *path, const char *what, const struct kiln_toml_value *v)
{
        void **pa = AT(base, k->offset, void *);
        size_t *pn = AT(base, k->aux, size_t);
        _cleanup_free_ char *elem_path = join_path(path, k->name);
        char *arr;
        size_t bad = 0;

        if (v->type != KILN_TOML_ARRAY) {
                type_error(x, k, what, v);
                return -EINVAL;
        }
        for (size_t i = 0; i < v->array.n; i++)
                if (v->array.items[i]->type != KILN_TOML_TABLE) {
                        diag(x, KILN_CONFIG_ERROR, v->array.items[i]->pos,
                             "invalid type for %s: expected array of tables, but element %zu is "
                             "%s",
                             what, i + 1, toml_type_name(v->array.items[i]->type));
                        bad++;
                }
        if (bad)
                return -EINVAL;

        for (size_t i = 0; i < *pn; i++)
                schema_release(k->children, k->n_children, (char *) *pa + i * k->elem_size);
        free(*pa);
        *pa = NULL;
        *pn = 0;

        arr = kiln_xcalloc(v->array.n + 1, k->elem_size);
        for (size_t i = 0; i < v->array.n; i++) {
                void *elem = arr + i * k->elem_size;
                _cleanup_free_ char *desc = kiln_xasprintf("[[%s]] #%zu", elem_path, i + 1);
                if (k->elem_init)
                        k->elem_init(elem);
                load_table(x, k->children, k->n_children, elem, v->array.items[i]->table, elem_path,
                           desc, NULL);
        }
        *pa = arr;
        *pn = v->array.n;
        return 0;
}

static void check_registry_host(struct lctx *x, const char *host, struct kiln_toml_pos pos)
{
        const char *sep = strstr(host, "://");

        if (sep)
                diag(x, KILN_CONFIG_WARNING, pos,
                     "registry host \"%s\" will never match: keys are bare hosts such as "
                     "[registry.\"%.*s\"]",
                     host, (int) strcspn(sep + 3, "/"), sep + 3);
        else if (streq(host, "index.docker.io") || streq(host, "registry-1.docker.io"))
                diag(x, KILN_CONFIG_WARNING, pos,
                     "registry host \"%s\" will never match: Docker Hub's key is "
                     "[registry.\"docker.io\"]",
                     host);
}

static int load_map(struct lctx *x, const struct schema_key *k, void *base, const char *path,
                    const char *what, const struct kiln_toml_value *v)
{
        char **pa = AT(base, k->offset, char *);
        size_t *pn = AT(base, k->aux, size_t);
        /* Keys within one TOML table are unique, so only entries from an
         * earlier table of this map can be merged with: linear, not
         * quadratic, in the number of registries. */
        size_t before = *pn;
        _cleanup_free_ char *map_path = join_path(path, k->name);

        if (v->type != KILN_TOML_TABLE) {
                type_error(x, k, what, v);
                return -EINVAL;
        }
        for (size_t i = 0; i < v->table->n; i++) {
                const struct kiln_toml_entry *e = &v->table->entries[i];
                _cleanup_free_ char *epath = join_path(map_path, e->key);
                _cleanup_free_ char *desc = kiln_xasprintf("[%s]", epath);
                void *elem = NULL;

                if (e->value->type != KILN_TOML_TABLE) {
                        _cleanup_free_ char *repr = value_repr(e->value);
                        diag(x, KILN_CONFIG_ERROR, e->value->pos,
                             "invalid type for %s: expected table, got %s%s", desc,
                             toml_type_name(e->value->type), repr);
                        continue;
                }
                if (strlen(e->key) != e->key_len) {
                        diag(x, KILN_CONFIG_ERROR, e->key_pos,
                             "invalid key in [%s]: contains a NUL byte", map_path);
                        continue;
                }
                /* go-toml merges a key seen twice (e.g. via [Registry]). */
                for (size_t j = 0; j < before; j++) {
                        char *cand = *pa + j * k->elem_size;
                        if (streq(*AT(cand, k->map_key_offset, char *), e->key))
                                elem = cand;
                }
                if (!elem) {
                        *pa = kiln_xreallocarray(*pa, *pn + 1, k->elem_size);
                        elem = *pa + *pn * k->elem_size;
                        memset(elem, 0, k->elem_size);
                        if (k->elem_init)
                                k->elem_init(elem);
                        *AT(elem, k->map_key_offset, char *) = kiln_xstrdup(e->key);
                        (*pn)++;
                        if (k->flags & K_UNQUOTED_HINT)
                                check_registry_host(x, e->key, e->key_pos);
                }
                load_table(x, k->children, k->n_children, elem, e->value->table, epath, desc,
                           (k->flags & K_UNQUOTED_HINT) ? e->key : NULL);
        }
        return 0;
}

static int schema_load_value(struct lctx *x, const struct schema_key *k, void *base,
                             const struct kiln_toml_value *v, const char *path, const char *what)
{
        void *field = AT(base, k->offset, char);
        int r = 0;

        switch (k->type) {
        case ST_TABLE: {
                _cleanup_free_ char *cpath = join_path(path, k->name);
                _cleanup_free_ char *desc = kiln_xasprintf("[%s]", cpath);
                if (v->type != KILN_TOML_TABLE) {
                        type_error(x, k, what, v);
                        return -EINVAL;
                }
                if (k->flags & K_PRESENCE)
                        *AT(base, k->aux, bool) = true;
                load_table(x, k->children, k->n_children, field, v->table, cpath, desc, NULL);
                return 0;
        }
        case ST_STRING:
                if (v->type != KILN_TOML_STRING) {
                        type_error(x, k, what, v);
                        return -EINVAL;
                }
                if (check_string(x, k, what, v) < 0)
                        return -EINVAL;
                free(*(char **) field);
                *(char **) field = kiln_xstrndup(v->str.s, v->str.len);
                break;
        case ST_BOOL:
                if (v->type != KILN_TOML_BOOL) {
                        type_error(x, k, what, v);
                        return -EINVAL;
                }
                *(bool *) field = v->boolean;
                break;
        case ST_TRIBOOL:
                if (v->type != KILN_TOML_BOOL) {
                        type_error(x, k, what, v);
                        return -EINVAL;
                }
                *(int *) field = v->boolean;
                break;
        case ST_INT:
                if (v->type != KILN_TOML_INTEGER) {
                        type_error(x, k, what, v);
                        return -EINVAL;
                }
                if (v->integer < k->min || v->integer > k->max) {
                        if (k->max == INT64_MAX)
                                diag(x, KILN_CONFIG_ERROR, v->pos,
                                     "invalid value for %s: must be %s, got %" PRId64, what,
                                     k->min == 0 ? "zero or more" : "at least 1", v->integer);
                        else
                                diag(x, KILN_CONFIG_ERROR, v->pos,
                                     "invalid value for %s: must be between %" PRId64
                                     " and %" PRId64 ", got %" PRId64,
                                     what, k->min, k->max, v->integer);
                        return -EINVAL;
                }
                *(int64_t *) field = v->integer;
                break;
        case ST_STRV:
                r = load_strv(x, k, base, what, v);
                break;
        case ST_DURATION:
                r = load_duration(x, k, field, what, v);
                break;
        case ST_DISK:
                r = load_disk(x, k, field, what, v);
                break;
        case ST_LABELS:
                r = load_labels(x, k, base, what, v);
                break;
        case ST_JSON:
                if (v->type != KILN_TOML_TABLE) {
                        type_error(x, k, what, v);
                        return -EINVAL;
                }
                json_decref(*(json_t **) field);
                *(json_t **) field = toml_to_json(v);
                break;
        case ST_TABLE_ARRAY:
                r = load_table_array(x, k, base, path, what, v);
                break;
        case ST_MAP:
                r = load_map(x, k, base, path, what, v);
                break;
        }
        if (r < 0)
                return r;
        if ((k->flags & K_PRESENCE) && k->type != ST_TABLE)
                *AT(base, k->aux, bool) = true;
        if ((k->flags & K_DEPRECATED) && !x->flag && !(k->type == ST_BOOL && !*(bool *) field))
                diag(x, KILN_CONFIG_WARNING, v->pos, "%s", k->note);
        record_origin(x, field, v);
        return 0;
}

/* Every key name in the schema with the table it lives in, for hints about
 * keys written in the wrong table. */
static const char *find_elsewhere(const struct schema_key *keys, size_t n, const char *path,
                                  const char *name, const struct schema_key *skip, char **ret_path)
{
        _cleanup_free_ char *fold = kiln_config_fold_key(name);

        for (size_t i = 0; i < n; i++) {
                const struct schema_key *k = &keys[i];
                if (keys != skip) {
                        _cleanup_free_ char *f = kiln_config_fold_key(k->name);
                        if (streq(f, fold)) {
                                *ret_path = kiln_xstrdup(path);
                                return k->name;
                        }
                }
                if (k->children) {
                        _cleanup_free_ char *sub = NULL;
                        if (k->type == ST_MAP)
                                sub = kiln_xasprintf("%s%s%s.\"<host>\"", path, *path ? "." : "",
                                                     k->name);
                        else
                                sub = join_path(path, k->name);
                        const char *r = find_elsewhere(k->children, k->n_children, sub, name, skip,
                                                       ret_path);
                        if (r)
                                return r;
                }
        }
        return NULL;
}

static void unknown_key(struct lctx *x, const struct schema_key *keys, size_t n,
                        const struct kiln_toml_entry *e, const char *path, const char *desc,
                        const char *unquoted_host)
{
        _cleanup_free_ char *what = NULL;
        const char *names[128];
        size_t nn = 0;

        what = desc && *desc ? kiln_xasprintf("unknown key '%s' in %s", e->key, desc)
                             : kiln_xasprintf("unknown key '%s'", e->key);

        /* [registry.docker.io]: TOML nests it as registry -> docker -> io. */
        if (unquoted_host && e->value->type == KILN_TOML_TABLE) {
                _cleanup_free_ char *host = kiln_xasprintf("%s.%s", unquoted_host, e->key);
                const struct kiln_toml_table *t = e->value->table;
                while (t->n == 1 && t->entries[0].value->type == KILN_TOML_TABLE) {
                        bool known = false;
                        for (size_t i = 0; i < n; i++)
                                if (strcasecmp(keys[i].name, t->entries[0].key) == 0)
                                        known = true;
                        if (known)
                                break;
                        char *h = kiln_xasprintf("%s.%s", host, t->entries[0].key);
                        free(host);
                        host = h;
                        t = t->entries[0].value->table;
                }
                diag(x, KILN_CONFIG_WARNING, e->key_pos,
                     "unquoted registry host: TOML reads [registry.%s] as host '%s' with a "
                     "sub-table '%s', which buildkitd silently ignores; write [registry.\"%s\"]",
                     host, unquoted_host, e->key, host);
                return;
        }

        for (size_t i = 0; i < ELEMENTSOF(key_hints); i++)
                if (streq(key_hints[i].table, path ? path : "") &&
                    strcasecmp(key_hints[i].key, e->key) == 0) {
                        diag(x, KILN_CONFIG_WARNING, e->key_pos, "%s; %s", what, key_hints[i].hint);
                        return;
                }

        /* [frontend.dockerfile.v0]: the key "dockerfile.v0" split at its dot. */
        if (e->value->type == KILN_TOML_TABLE)
                for (size_t j = 0; j < e->value->table->n; j++) {
                        _cleanup_free_ char *joined =
                                kiln_xasprintf("%s.%s", e->key, e->value->table->entries[j].key);
                        for (size_t i = 0; i < n; i++)
                                if (strcasecmp(keys[i].name, joined) == 0) {
                                        _cleanup_free_ char *full = join_path(path, keys[i].name);
                                        diag(x, KILN_CONFIG_WARNING, e->key_pos,
                                             "%s; the key '%s' needs quotes: write [%s]", what,
                                             keys[i].name, full);
                                        return;
                                }
                }

        for (size_t i = 0; i < n && nn < ELEMENTSOF(names); i++)
                names[nn++] = keys[i].name;
        const char *s = config_suggest(e->key, names, nn);
        if (s) {
                diag(x, KILN_CONFIG_WARNING, e->key_pos, "%s; did you mean '%s'?", what, s);
                return;
        }

        _cleanup_free_ char *where = NULL;
        s = find_elsewhere(schema_root, schema_root_n, "", e->key, keys, &where);
        if (s) {
                if (*where)
                        diag(x, KILN_CONFIG_WARNING, e->key_pos, "%s; did you mean '%s' in [%s]?",
                             what, s, where);
                else
                        diag(x, KILN_CONFIG_WARNING, e->key_pos,
                             "%s; did you mean '%s' at the top level?", what, s);
                return;
        }
        diag(x, KILN_CONFIG_WARNING, e->key_pos, "%s", what);
}

static void load_table(struct lctx *x, const struct schema_key *keys, size_t n, void *base,
                       const struct kiln_toml_table *t, const char *path, const char *desc,
                       const char *unquoted_host)
{
        bool seen[64] = { 0 };

        for (size_t i = 0; i < t->n; i++) {
                const struct kiln_toml_entry *e = &t->entries[i];
                const struct schema_key *k = NULL;
                size_t idx = 0;

                if (strlen(e->key) != e->key_len) {
                        diag(x, KILN_CONFIG_WARNING, e->key_pos,
                             "unknown key '%s\\u0000...'%s%s: keys cannot contain NUL", e->key,
                             desc && *desc ? " in " : "", desc ? desc : "");
                        continue;
                }
                for (size_t j = 0; j < n; j++)
                        if (streq(keys[j].name, e->key)) {
                                k = &keys[j];
                                idx = j;
                                break;
                        }
                if (!k)
                        for (size_t j = 0; j < n; j++)
                                if (strcasecmp(keys[j].name, e->key) == 0) {
                                        k = &keys[j];
                                        idx = j;
                                        _cleanup_free_ char *w = describe(e->key, desc);
                                        diag(x, KILN_CONFIG_WARNING, e->key_pos,
                                             "key %s is read as '%s' (buildkitd matches keys "
                                             "case-insensitively); write '%s'",
                                             w, k->name, k->name);
                                        break;
                                }
                if (!k) {
                        unknown_key(x, keys, n, e, path, desc, unquoted_host);
                        continue;
                }
                if (idx < ELEMENTSOF(seen)) {
                        if (seen[idx]) {
                                _cleanup_free_ char *w = describe(k->name, desc);
                                diag(x, KILN_CONFIG_WARNING, e->key_pos,
                                     "%s is set twice (keys differing only in case are the same "
                                     "key); the last one wins",
                                     w);
                        }
                        seen[idx] = true;
                }
                _cleanup_free_ char *what = describe(k->name, desc);
                (void) schema_load_value(x, k, base, e->value, path, what);
        }
}

/* ---- lookups for flags ---- */

const struct schema_key *schema_find_path(const char *path, size_t *ret_offset)
{
        const struct schema_key *keys = schema_root;
        size_t n = schema_root_n, off = 0;
        const char *p = path;

        for (;;) {
                /* Segments may contain dots only in names that have them. */
                const struct schema_key *k = NULL;
                for (size_t i = 0; i < n; i++) {
                        size_t l = strlen(keys[i].name);
                        if (strncmp(p, keys[i].name, l) == 0 && (p[l] == '.' || p[l] == 0)) {
                                k = &keys[i];
                                break;
                        }
                }
                if (!k)
                        return NULL;
                p += strlen(k->name);
                if (*p == 0) {
                        *ret_offset = off + k->offset;
                        return k;
                }
                if (k->type != ST_TABLE)
                        return NULL;
                off += k->offset;
                keys = k->children;
                n = k->n_children;
                p++;
        }
}

int schema_load_flag(struct kiln_config *c, const char *path, const struct kiln_toml_value *v,
                     const char *flag, struct kiln_config_diags *diags)
{
        struct lctx x = { .c = c, .flag = flag, .diags = diags };
        size_t off;
        const struct schema_key *k = schema_find_path(path, &off);

        if (!k)
                abort(); /* the flag table names a key the schema lacks */
        /* schema_load_value wants the struct holding the field. */
        void *base = (char *) c + off - k->offset;
        if (schema_load_value(&x, k, base, v, "", flag) < 0 || x.errors > 0)
                return -EINVAL;
        return 0;
}

/* ---- whole documents ---- */

int kiln_config_load_string(struct kiln_config *c, const char *file, const char *data, size_t len,
                            struct kiln_config_diags *diags)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct lctx x = { .c = c, .file = file, .text = data, .diags = diags };
        int r;

        r = kiln_toml_parse(data, len, &root, &err);
        if (r < 0) {
                const char *m = kiln_error_message(err);
                /* The parser's message starts with "LINE:COL: "; the diag carries them. */
                _cleanup_free_ char *prefix = kiln_xasprintf("%u:%u: ", err->line, err->col);
                if (err->line > 0 && startswith(m, prefix))
                        m += strlen(prefix);
                kiln_config_diags_add(diags, KILN_CONFIG_ERROR, file, err->line, err->col,
                                      "invalid TOML: %s", m);
                return -EINVAL;
        }
        load_table(&x, schema_root, schema_root_n, c, root->table, "", "", NULL);

        /* buildkitd: a set log.level wins over the deprecated debug/trace. */
        if ((c->debug || c->trace) && c->log.level && *c->log.level) {
                const struct kiln_config_origin *o =
                        config_origin_get(c, offsetof(struct kiln_config, log.level));
                kiln_config_diags_add(diags, KILN_CONFIG_WARNING, file, o ? o->line : 0,
                                      o ? o->col : 0,
                                      "log.level = \"%s\" wins over '%s = true' (as in buildkitd)",
                                      c->log.level, c->trace ? "trace" : "debug");
        }
        return x.errors > 0 ? -EINVAL : 0;
}

/* ---- defaults ---- */

static void defaults_table(const struct schema_key *keys, size_t n, void *base)
{
        for (size_t i = 0; i < n; i++) {
                const struct schema_key *k = &keys[i];
                void *field = AT(base, k->offset, char);

                switch (k->type) {
                case ST_TABLE:
                        defaults_table(k->children, k->n_children, field);
                        break;
                case ST_STRING:
                        if (k->def && (!*(char **) field || !**(char **) field)) {
                                free(*(char **) field);
                                *(char **) field = kiln_xstrdup(k->def);
                        }
                        break;
                case ST_INT:
                        if (k->def_int && *(int64_t *) field == 0)
                                *(int64_t *) field = k->def_int;
                        break;
                case ST_BOOL:
                case ST_TRIBOOL:
                case ST_STRV:
                case ST_DURATION:
                case ST_DISK:
                case ST_LABELS:
                case ST_JSON:
                case ST_TABLE_ARRAY:
                case ST_MAP:
                        break;
                }
        }
}

static char **strv_dup(const char *const *v, size_t n)
{
        char **r = kiln_xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
                r[i] = kiln_xstrdup(v[i]);
        return r;
}

void kiln_config_set_defaults(struct kiln_config *c)
{
        static const char *const cdi_dirs[] = { "/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi" };
        const char *level;

        defaults_table(schema_root, schema_root_n, c);

        if (c->grpc.n_address == 0) {
                config_strv_free(c->grpc.address, c->grpc.n_address);
                c->grpc.address = strv_dup((const char *const[]){ KILN_CONFIG_DEFAULT_ADDRESS }, 1);
                c->grpc.n_address = 1;
        }
        if (!c->grpc.uid_set) {
                c->grpc.uid = getuid();
                c->grpc.uid_set = true;
        }
        if (!c->grpc.gid_set) {
                c->grpc.gid = getgid();
                c->grpc.gid_set = true;
        }
        /* setDefaultConfig tests for nil, so an explicit [] stays empty. */
        if (!c->worker_oci.platforms)
                c->worker_oci.platforms = kiln_config_detect_platforms(&c->worker_oci.n_platforms);
        if (!c->worker_containerd.platforms)
                c->worker_containerd.platforms =
                        kiln_config_detect_platforms(&c->worker_containerd.n_platforms);
        if (c->cdi.n_spec_dirs == 0) {
                config_strv_free(c->cdi.spec_dirs, c->cdi.n_spec_dirs);
                c->cdi.spec_dirs = strv_dup(cdi_dirs, ELEMENTSOF(cdi_dirs));
                c->cdi.n_spec_dirs = ELEMENTSOF(cdi_dirs);
        }
        if (!c->history.set) {
                c->history.max_age = 48LL * 3600 * 1000000000;
                c->history.max_entries = 50;
                c->history.set = true;
        }
        if (!c->system.platforms_cache_max_age_set) {
                c->system.platforms_cache_max_age = 20LL * 1000000000;
                c->system.platforms_cache_max_age_set = true;
        }

        /* The level buildkitd ends up with: debug, then trace, then log.level. */
        if (c->log.level && *c->log.level)
                level = NULL;
        else if (c->trace)
                level = "trace";
        else if (c->debug)
                level = "debug";
        else
                level = "info";
        if (level) {
                free(c->log.level);
                c->log.level = kiln_xstrdup(level);
        } else {
                /* logrus.ParseLevel is case-insensitive; keep one spelling. */
                for (char *p = c->log.level; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
        }
        if (!c->log.format || !*c->log.format) {
                free(c->log.format);
                c->log.format = kiln_xstrdup("text");
        }
}

/* ---- release ---- */

void schema_release(const struct schema_key *keys, size_t n, void *base)
{
        for (size_t i = 0; i < n; i++) {
                const struct schema_key *k = &keys[i];
                void *field = AT(base, k->offset, char);

                switch (k->type) {
                case ST_TABLE:
                        /* Views share base; real sub-structs are offset. */
                        schema_release(k->children, k->n_children, field);
                        break;
                case ST_STRING:
                        free(*(char **) field);
                        *(char **) field = NULL;
                        break;
                case ST_STRV:
                        config_strv_free(*(char ***) field, *AT(base, k->aux, size_t));
                        *(char ***) field = NULL;
                        *AT(base, k->aux, size_t) = 0;
                        break;
                case ST_LABELS:
                        config_labels_free(*(struct kiln_config_label **) field,
                                           *AT(base, k->aux, size_t));
                        *(struct kiln_config_label **) field = NULL;
                        *AT(base, k->aux, size_t) = 0;
                        break;
                case ST_JSON:
                        json_decref(*(json_t **) field);
                        *(json_t **) field = NULL;
                        break;
                case ST_TABLE_ARRAY:
                case ST_MAP: {
                        char *arr = *(char **) field;
                        size_t cnt = *AT(base, k->aux, size_t);
                        for (size_t j = 0; j < cnt; j++) {
                                if (k->type == ST_MAP)
                                        free(*AT(arr + j * k->elem_size, k->map_key_offset,
                                                 char *));
                                schema_release(k->children, k->n_children, arr + j * k->elem_size);
                        }
                        free(arr);
                        *(char **) field = NULL;
                        *AT(base, k->aux, size_t) = 0;
                        break;
                }
                case ST_BOOL:
                case ST_TRIBOOL:
                case ST_INT:
                case ST_DURATION:
                case ST_DISK:
                        break;
                }
        }
}

/* ---- JSON ---- */

static json_t *strv_json(char **v, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

static json_t *disk_json(const struct kiln_config_disk_space *d)
{
        if (d->bytes != 0)
                return json_integer(d->bytes);
        if (d->percentage != 0) {
                _cleanup_free_ char *s = kiln_xasprintf("%" PRId64 "%%", d->percentage);
                return json_string(s);
        }
        return NULL;
}

static json_t *table_json(const struct schema_key *keys, size_t n, const void *base)
{
        json_t *o = json_object();

        for (size_t i = 0; i < n; i++) {
                const struct schema_key *k = &keys[i];
                const void *field = (const char *) base + k->offset;
                json_t *v = NULL;

                if ((k->flags & K_PRESENCE) && !*(const bool *) ((const char *) base + k->aux))
                        continue;

                switch (k->type) {
                case ST_TABLE:
                        v = table_json(k->children, k->n_children, field);
                        if (json_object_size(v) == 0 && !(k->flags & K_PRESENCE)) {
                                json_decref(v);
                                v = NULL;
                        }
                        break;
                case ST_STRING:
                        if (*(char *const *) field)
                                v = json_string(*(char *const *) field);
                        break;
                case ST_BOOL:
                        if (!(k->flags & K_JSON_IF_TRUE) || *(const bool *) field)
                                v = json_boolean(*(const bool *) field);
                        break;
                case ST_TRIBOOL:
                        if (*(const int *) field >= 0)
                                v = json_boolean(*(const int *) field);
                        break;
                case ST_INT:
                        v = json_integer(*(const int64_t *) field);
                        break;
                case ST_STRV:
                        if (*(char **const *) field)
                                v = strv_json(*(char **const *) field,
                                              *(const size_t *) ((const char *) base + k->aux));
                        break;
                case ST_DURATION: {
                        int64_t d = *(const int64_t *) field;
                        if (d != 0 || (k->flags & K_PRESENCE)) {
                                _cleanup_free_ char *s = kiln_config_format_duration(d);
                                v = json_string(s);
                        }
                        break;
                }
                case ST_DISK:
                        v = disk_json(field);
                        break;
                case ST_LABELS: {
                        const struct kiln_config_label *l =
                                *(struct kiln_config_label *const *) field;
                        size_t cnt = *(const size_t *) ((const char *) base + k->aux);
                        if (l) {
                                v = json_object();
                                for (size_t j = 0; j < cnt; j++)
                                        json_object_set_new(v, l[j].key, json_string(l[j].value));
                        }
                        break;
                }
                case ST_JSON:
                        if (*(json_t *const *) field)
                                v = json_deep_copy(*(json_t *const *) field);
                        break;
                case ST_TABLE_ARRAY: {
                        const char *arr = *(char *const *) field;
                        size_t cnt = *(const size_t *) ((const char *) base + k->aux);
                        if (arr) {
                                v = json_array();
                                for (size_t j = 0; j < cnt; j++)
                                        json_array_append_new(v,
                                                              table_json(k->children, k->n_children,
                                                                         arr + j * k->elem_size));
                        }
                        break;
                }
                case ST_MAP: {
                        const char *arr = *(char *const *) field;
                        size_t cnt = *(const size_t *) ((const char *) base + k->aux);
                        if (cnt > 0) {
                                v = json_object();
                                for (size_t j = 0; j < cnt; j++) {
                                        const char *elem = arr + j * k->elem_size;
                                        json_object_set_new(
                                                v, *(char *const *) (elem + k->map_key_offset),
                                                table_json(k->children, k->n_children, elem));
                                }
                        }
                        break;
                }
                }
                if (v)
                        json_object_set_new(o, k->name, v);
        }
        return o;
}

int kiln_config_to_json(const struct kiln_config *c, json_t **ret)
{
        *ret = table_json(schema_root, schema_root_n, c);
        return 0;
}

void kiln_config_gc_policies_free(struct kiln_config_gc_policy *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                schema_release(gcpolicy_keys, ELEMENTSOF(gcpolicy_keys), &p[i]);
        free(p);
}
