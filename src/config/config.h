/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * buildkitd.toml: the model, its loader and kilnd's command line.
 *
 * kilnd is configured exactly like buildkitd: the same file (default
 * /etc/buildkit/buildkitd.toml), the same keys and defaults, the same flags
 * and the same precedence (file, then defaults, then only the flags that were
 * set). Where buildkitd is silent about a mistake, kiln says so: unknown keys
 * are warnings with file:line:col and a "did you mean"; wrong types and
 * out-of-range values are errors with file:line:col, the key and the
 * expected type. Every problem in a file is reported, not just the first.
 *
 * The schema lives in one table (schema.c) that drives loading, the JSON
 * output, the hints and the flags.
 *
 * Objects here are plain data: build them on one thread, then share them
 * read-only.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/error.h"

#define KILN_CONFIG_DEFAULT_PATH    "/etc/buildkit/buildkitd.toml"
#define KILN_CONFIG_DEFAULT_ROOT    "/var/lib/kiln"
#define KILN_CONFIG_DEFAULT_ADDRESS "unix:///run/kiln/kilnd.sock"

/* ---- Units, as buildkitd's config package parses them ---- */

/* DiskSpace: a byte count or a percentage of the disk (exactly one is
 * non-zero; both zero means unset). */
struct kiln_config_disk_space {
        int64_t bytes;
        int64_t percentage;
};

/* Go's time.ParseDuration ("48h", "1h30m", "500ms", "1.5s", "-2m", units ns
 * us µs ms s m h), else an integer number of seconds ("172800"). "" is 0.
 * *ret is in nanoseconds. Returns 0 or -EINVAL (-ERANGE on overflow). */
int kiln_config_parse_duration(const char *s, int64_t *ret);
/* Go's time.Duration.String(): "48h0m0s", "1.5s", "500ms", "0s".
 * Returns a malloc'd string. */
char *kiln_config_format_duration(int64_t ns);
/* docker/go-units RAMInBytes: "512MB" = 512 MiB (binary units), "1.5g",
 * "1024", "10 KiB" ... Returns 0 or -EINVAL. */
int kiln_config_parse_ram_in_bytes(const char *s, int64_t *ret);
/* buildkitd's DiskSpace: "N%" (integer percent), else RAMInBytes. "" leaves
 * *ret zero (unset). Returns 0 or -EINVAL. */
int kiln_config_parse_disk_space(const char *s, struct kiln_config_disk_space *ret);
/* buildkitd's DiskSpace.AsBytes: bytes if set; a percentage of a disk of
 * total bytes, rounded as buildkitd does ((total*pct/100)/2^30 + 1) * 1e9;
 * 2e9 when total is 0. */
int64_t kiln_config_disk_space_as_bytes(const struct kiln_config_disk_space *d, uint64_t total);

/* ---- The model ---- */

struct kiln_config_label {
        char *key;
        char *value;
};

struct kiln_config_gc_policy {
        bool all;
        char **filters;
        size_t n_filters;
        int64_t keep_duration;                    /* ns, 0 unset */
        struct kiln_config_disk_space keep_bytes; /* deprecated: reservedSpace */
        struct kiln_config_disk_space reserved_space;
        struct kiln_config_disk_space max_used_space;
        struct kiln_config_disk_space min_free_space;
};

struct kiln_config_worker_oci {
        int enabled;                      /* -1 auto (enabled when runc is found) */
        struct kiln_config_label *labels; /* document order, later flags win */
        size_t n_labels;
        char **platforms; /* default: detected (see kiln_config_detect_platforms) */
        size_t n_platforms;
        char *snapshotter; /* auto overlayfs fuse-overlayfs native stargz */
        bool rootless;
        bool no_process_sandbox;
        /* GCConfig */
        int gc;                                        /* -1 unset (= enabled) */
        struct kiln_config_disk_space gc_keep_storage; /* deprecated gckeepstorage */
        struct kiln_config_disk_space reserved_space;
        struct kiln_config_disk_space max_used_space;
        struct kiln_config_disk_space min_free_space;
        struct kiln_config_gc_policy *gc_policies;
        size_t n_gc_policies;
        /* NetworkConfig */
        char *network_mode;    /* auto cni host bridge; default auto */
        char *cni_config_path; /* default /etc/buildkit/cni.json */
        char *cni_binary_path; /* default /opt/cni/bin */
        int64_t cni_pool_size;
        char *bridge_name;   /* default buildkit0 */
        char *bridge_subnet; /* default 10.10.0.0/16 */
        char *user_remap_unsupported;
        char *binary; /* "" = buildkit-runc or runc */
        char *proxy_snapshotter_path;
        char *default_cgroup_parent;
        json_t *stargz_snapshotter; /* object or NULL, passed through */
        char *apparmor_profile;
        bool selinux;
        int64_t max_parallelism; /* 0 unlimited */
};

struct kiln_config_worker_containerd {
        char *address;
        int enabled; /* -1 unset */
        struct kiln_config_label *labels;
        size_t n_labels;
        char **platforms;
        size_t n_platforms;
        char *namespace_;
        struct {
                char *name;
                char *path;
                json_t *options; /* object or NULL */
        } runtime;
        int gc;
        struct kiln_config_disk_space gc_keep_storage;
        struct kiln_config_disk_space reserved_space;
        struct kiln_config_disk_space max_used_space;
        struct kiln_config_disk_space min_free_space;
        struct kiln_config_gc_policy *gc_policies;
        size_t n_gc_policies;
        char *network_mode;
        char *cni_config_path;
        char *cni_binary_path;
        int64_t cni_pool_size;
        char *bridge_name;
        char *bridge_subnet;
        char *snapshotter;
        char *apparmor_profile;
        bool selinux;
        int64_t max_parallelism;
        char *default_cgroup_parent;
        bool rootless;
};

struct kiln_config_keypair {
        char *key;
        char *cert;
};

struct kiln_config_registry { /* one [registry."<host>"] */
        char *host;
        char **mirrors;
        size_t n_mirrors;
        int http;     /* -1 unset, 0, 1 */
        int insecure; /* -1 unset, 0, 1 */
        char **ca;
        size_t n_ca;
        struct kiln_config_keypair *keypairs;
        size_t n_keypairs;
        char **tlsconfigdir;
        size_t n_tlsconfigdir;
};

/* [cache.gha.verify.policy]: the thresholds and sigstore's certificate
 * summary fields, by their TOML (= Go field) names. */
enum {
        KILN_CONFIG_GHA_POLICY_CERTIFICATE_ISSUER,
        KILN_CONFIG_GHA_POLICY_SUBJECT_ALTERNATIVE_NAME,
        KILN_CONFIG_GHA_POLICY_ISSUER,
        KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_TRIGGER,
        KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_SHA,
        KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_NAME,
        KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_REPOSITORY,
        KILN_CONFIG_GHA_POLICY_GITHUB_WORKFLOW_REF,
        KILN_CONFIG_GHA_POLICY_BUILD_SIGNER_URI,
        KILN_CONFIG_GHA_POLICY_BUILD_SIGNER_DIGEST,
        KILN_CONFIG_GHA_POLICY_RUNNER_ENVIRONMENT,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_URI,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_DIGEST,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_REF,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_IDENTIFIER,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_OWNER_URI,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_OWNER_IDENTIFIER,
        KILN_CONFIG_GHA_POLICY_BUILD_CONFIG_URI,
        KILN_CONFIG_GHA_POLICY_BUILD_CONFIG_DIGEST,
        KILN_CONFIG_GHA_POLICY_BUILD_TRIGGER,
        KILN_CONFIG_GHA_POLICY_RUN_INVOCATION_URI,
        KILN_CONFIG_GHA_POLICY_SOURCE_REPOSITORY_VISIBILITY_AT_SIGNING,
        _KILN_CONFIG_GHA_POLICY_MAX,
};

struct kiln_config_origin;

struct kiln_config {
        bool debug;                   /* deprecated: log.level = "debug" */
        bool trace;                   /* deprecated: log.level = "trace" */
        char *root;                   /* default /var/lib/kiln (kiln's own state, not buildkit's) */
        char **insecure_entitlements; /* network.host security.insecure device */
        size_t n_insecure_entitlements;
        bool proxy_network;
        char *provenance_env_dir; /* default /etc/buildkit/provenance.d */
        struct {
                /* After kiln_config_set_defaults: the effective level, as
                 * buildkitd computes it (log.level if set, else trace when
                 * trace = true, else debug when debug = true, else info;
                 * --debug/--log-level override), and "text" or "json". */
                char *level;
                char *format;
        } log;
        struct {
                char **address; /* default unix:///run/kiln/kilnd.sock */
                size_t n_address;
                char *debug_address;
                int64_t uid, gid; /* default: the process' ids */
                bool uid_set, gid_set;
                char *security_descriptor; /* Windows only; kept for the schema */
                struct {
                        char *cert;
                        char *key;
                        char *ca;
                } tls;
        } grpc;
        struct {
                char *socket_path; /* default /run/buildkit/otel-grpc.sock */
        } otel;
        struct {
                int disabled;     /* -1 unset (= enabled) */
                char **spec_dirs; /* default /etc/cdi /var/run/cdi /etc/buildkit/cdi */
                size_t n_spec_dirs;
                char **auto_allowed;
                size_t n_auto_allowed;
        } cdi;
        struct kiln_config_worker_oci worker_oci;
        struct kiln_config_worker_containerd worker_containerd;
        struct kiln_config_registry *registries; /* in document order */
        size_t n_registries;
        struct {
                bool set; /* [dns] present: resolv.conf from these, not the host's */
                char **nameservers;
                size_t n_nameservers;
                char **options;
                size_t n_options;
                char **search_domains;
                size_t n_search_domains;
        } dns;
        struct {
                bool set;            /* [history] present, or defaults filled in (48h, 50) */
                int64_t max_age;     /* ns; default 48h */
                int64_t max_entries; /* default 50 */
        } history;
        struct {
                int dockerfile_enabled;              /* -1 unset (= enabled) */
                int gateway_enabled;                 /* -1 unset (= enabled) */
                char **gateway_allowed_repositories; /* empty: all allowed */
                size_t n_gateway_allowed_repositories;
        } frontend;
        struct {
                int64_t platforms_cache_max_age; /* ns; default 20s */
                bool platforms_cache_max_age_set;
                int64_t max_registry_concurrency; /* default 4, > 0 */
        } system;
        struct {
                bool set;
                bool sign_set;
                char **sign_command;
                size_t n_sign_command;
                bool verify_required;
                int64_t timestamp_threshold;
                int64_t tlog_threshold;
                char *policy[_KILN_CONFIG_GHA_POLICY_MAX];
        } cache_gha;
        bool save_cache_debug; /* --save-cache-debug only */

        /* private: where fields were set, for checks that span keys */
        struct kiln_config_origin *origins;
        size_t n_origins;
};

/* ---- Diagnostics ---- */

enum kiln_config_diag_level {
        KILN_CONFIG_WARNING,
        KILN_CONFIG_ERROR,
};

struct kiln_config_diag {
        enum kiln_config_diag_level level;
        char *file;         /* NULL for a problem on the command line */
        unsigned line, col; /* 0 when unknown */
        char *message;
        size_t seq; /* order found, for a stable sort */
};

struct kiln_config_diags {
        struct kiln_config_diag *items;
        size_t n;
};

void kiln_config_diags_add(struct kiln_config_diags *d, enum kiln_config_diag_level level,
                           const char *file, unsigned line, unsigned col, const char *fmt, ...)
        _printf_(6, 7);
size_t kiln_config_diags_count(const struct kiln_config_diags *d, enum kiln_config_diag_level l);
void kiln_config_diags_release(struct kiln_config_diags *d);
/* Orders by position in the file, then the problems with no position
 * (command line, whole file) in the order they were found. */
void kiln_config_diags_sort(struct kiln_config_diags *d);
/* "file:line:col: warning: msg" (or "error:"), one per line; no location
 * prefix for command-line problems. */
void kiln_config_diags_print(const struct kiln_config_diags *d, FILE *f);
/* One diagnostic as kiln_config_diags_print writes it, without the newline.
 * Caller frees. */
char *kiln_config_diag_format(const struct kiln_config_diag *d);

/* ---- Loading ---- */

/* A configuration with nothing set (tri-states -1, strings NULL). */
struct kiln_config *kiln_config_new(void);
struct kiln_config *kiln_config_free(struct kiln_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_config *, kiln_config_free);

/* Loads a buildkitd.toml document into c (fresh from kiln_config_new).
 * file names the document in diagnostics. Every problem is appended to
 * diags; returns 0 when there is no error (warnings are fine), -EINVAL when
 * diags holds at least one error (invalid TOML included). */
int kiln_config_load_string(struct kiln_config *c, const char *file, const char *data, size_t len,
                            struct kiln_config_diags *diags);
/* As kiln_config_load_string on a file's contents. A missing file is
 * -ENOENT when must_exist, else an empty config and 0 (buildkitd's
 * behaviour). Other read failures are -errno. In both cases the problem is
 * also appended to diags and *err is set. */
int kiln_config_load_file(struct kiln_config *c, const char *path, bool must_exist,
                          struct kiln_config_diags *diags, struct kiln_error **err);

/* Checks that span keys, for the final configuration (file, defaults and
 * flags): an unknown snapshotter (unless proxySnapshotterPath is set),
 * noProcessSandbox without rootless (both only when the OCI worker is not
 * disabled), a TLS cert without a key or the reverse. Problems point at
 * where the value was set (file:line:col or the flag). Returns 0, or
 * -EINVAL when it added errors. kiln_config_cli_parse runs it. */
int kiln_config_check(struct kiln_config *c, struct kiln_config_diags *diags);

/* What buildkitd's setDefaultConfig and the places that consume the config
 * fill in: root, grpc.address/uid/gid, platforms, network defaults,
 * snapshotter "auto", otel, cdi, history, system, provenanceEnvDir and the
 * effective log level and format. Safe to call twice. */
void kiln_config_set_defaults(struct kiln_config *c);

/* The platforms buildkitd would report for this host ("linux/amd64", and
 * the amd64 micro-architecture levels the CPU runs, "linux/amd64/v2" ...;
 * emulators and the 32-bit compat platforms are not probed). *ret_n strings
 * and a NULL; the caller frees each string and the array. */
char **kiln_config_detect_platforms(size_t *ret_n);

/* The [registry."<host>"] for host (exact match, as buildkitd), or NULL. */
const struct kiln_config_registry *kiln_config_registry_find(const struct kiln_config *c,
                                                             const char *host);

/* The GC policies a worker would run: its [[gcpolicy]] list, or buildkitd's
 * four default rules computed for a disk of disk_total bytes (0 unknown).
 * Returned array is malloc'd; free with kiln_config_gc_policies_free. */
struct kiln_config_gc_policy *
kiln_config_gc_policies_effective(const struct kiln_config_worker_oci *w, uint64_t disk_total,
                                  size_t *ret_n);
void kiln_config_gc_policies_free(struct kiln_config_gc_policy *p, size_t n);

/* Effective configuration as JSON whose keys are buildkitd.toml's key names,
 * e.g. {"root":"/var/lib/kiln","log":{"level":"info","format":"text"},
 * "grpc":{"address":["unix:///run/kiln/kilnd.sock"]},
 * "worker":{"oci":{"max-parallelism":4,...}},
 * "registry":{"docker.io":{"mirrors":["..."]}}, ...}. Durations are Go
 * duration strings ("48h0m0s"), disk spaces bytes or "N%". Unset tri-states
 * and empty optional values are left out. Caller owns the json_t. */
int kiln_config_to_json(const struct kiln_config *c, json_t **ret);

/* ---- kilnd's command line ---- */

struct kiln_config_cli {
        struct kiln_config *config; /* file (or default path), then defaults, then set flags */
        char *config_path;          /* the file read, NULL when the default file was absent */
        bool validate;              /* --validate: check, print, exit */
        bool help, version;
        struct kiln_config_diags diags; /* warnings and errors, in order */
};

/* Parses argv (buildkitd's flags plus --validate, --help/-h, --version/-v;
 * "--flag value" and "--flag=value"; bools as --flag or --flag=true|false;
 * repeatable flags append), reads the config file (--config, default
 * /etc/buildkit/buildkitd.toml; the default may be absent, a file named with
 * --config may not; --config= reads none), fills defaults, applies the flags
 * that were set in buildkitd's order and runs kiln_config_check.
 * BUILDKITD_LOG_LEVEL and BUILDKITD_DEBUGADDR count as set flags, as in
 * buildkitd. Returns 0 when the configuration is usable (there may be
 * warnings), or -EINVAL and *err (the first error, and how many more) for a
 * bad flag or an unusable config. *ret is always set: its diags list every
 * problem found (a flag syntax error stops parsing at that flag). With
 * --help or --version, returns 0 without reading the file. */
int kiln_config_cli_parse(int argc, char **argv, struct kiln_config_cli **ret,
                          struct kiln_error **err);
struct kiln_config_cli *kiln_config_cli_free(struct kiln_config_cli *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_config_cli *, kiln_config_cli_free);

/* kilnd --help text, buildkitd-style flag list. Static storage. */
const char *kiln_config_usage(void);

/* ---- Helpers shared with the schema (exposed for tests) ---- */

/* Levenshtein distance between a and b, capped at max + 1. */
size_t kiln_config_edit_distance(const char *a, const char *b, size_t max);
/* Lower-cases and drops '-', '_' and '.': "Max_Parallelism" and
 * "maxparallelism" fold to the same string. Caller frees. */
char *kiln_config_fold_key(const char *s);
