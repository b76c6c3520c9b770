/* SPDX-License-Identifier: Apache-2.0 */
/* buildkitd.toml loading: the schema, defaults, diagnostics with positions,
 * "did you mean", and the JSON view. */

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>

#include "base/buf.h"
#include "base/fs.h"
#include "config/config.h"
#include "config-test-util.h"
#include "kiln-test.h"

struct loaded {
        struct kiln_config *c;
        struct kiln_config_diags d;
        int r;
};

static void loaded_release(struct loaded *l)
{
        kiln_config_free(l->c);
        kiln_config_diags_release(&l->d);
}

static struct loaded load(const char *toml)
{
        struct loaded l = { .c = kiln_config_new() };
        l.r = kiln_config_load_string(l.c, "t.toml", toml, strlen(toml), &l.d);
        return l;
}

/* The documented example (docs/buildkitd.toml.md), abridged where it only
 * repeats itself. */
static const char example[] =
        "root = \"/var/lib/buildkit\"\n"
        "insecure-entitlements = [ \"network.host\", \"security.insecure\", \"device\" ]\n"
        "proxyNetwork = true\n"
        "provenanceEnvDir = \"/etc/buildkit/provenance.d\"\n"
        "[log]\n"
        "  format = \"text\"\n"
        "  level = \"info\"\n"
        "[dns]\n"
        "  nameservers=[\"1.1.1.1\",\"8.8.8.8\"]\n"
        "  options=[\"edns0\"]\n"
        "  searchDomains=[\"example.com\"]\n"
        "[grpc]\n"
        "  address = [ \"tcp://0.0.0.0:1234\" ]\n"
        "  debugAddress = \"0.0.0.0:6060\"\n"
        "  uid = 0\n"
        "  gid = 0\n"
        "  [grpc.tls]\n"
        "    cert = \"/etc/buildkit/tls.crt\"\n"
        "    key = \"/etc/buildkit/tls.key\"\n"
        "    ca = \"/etc/buildkit/tlsca.crt\"\n"
        "[otel]\n"
        "  socketPath = \"/run/buildkit/otel-grpc.sock\"\n"
        "[cdi]\n"
        "  disabled = true\n"
        "  specDirs = [\"/etc/cdi\", \"/var/run/cdi\", \"/etc/buildkit/cdi\"]\n"
        "[history]\n"
        "  maxAge = 172800\n"
        "  maxEntries = 50\n"
        "[worker.oci]\n"
        "  enabled = true\n"
        "  platforms = [ \"linux/amd64\", \"linux/arm64\" ]\n"
        "  snapshotter = \"auto\"\n"
        "  rootless = false\n"
        "  noProcessSandbox = false\n"
        "  gc = true\n"
        "  reservedSpace = \"30%\"\n"
        "  maxUsedSpace = \"60%\"\n"
        "  minFreeSpace = \"20GB\"\n"
        "  binary = \"\"\n"
        "  apparmor-profile = \"\"\n"
        "  max-parallelism = 4\n"
        "  cniPoolSize = 16\n"
        "  [worker.oci.labels]\n"
        "    \"foo\" = \"bar\"\n"
        "  [[worker.oci.gcpolicy]]\n"
        "    reservedSpace = \"512MB\"\n"
        "    maxUsedSpace = \"1GB\"\n"
        "    minFreeSpace = \"10GB\"\n"
        "    keepDuration = \"48h\"\n"
        "    filters = [ \"type==source.local\", \"type==exec.cachemount\", "
        "\"type==source.git.checkout\"]\n"
        "  [[worker.oci.gcpolicy]]\n"
        "    all = true\n"
        "    reservedSpace = 1024000000\n"
        "[worker.containerd]\n"
        "  address = \"/run/containerd/containerd.sock\"\n"
        "  enabled = true\n"
        "  namespace = \"buildkit\"\n"
        "  defaultCgroupParent = \"buildkit\"\n"
        "  [worker.containerd.runtime]\n"
        "    name = \"io.containerd.runc.v2\"\n"
        "    path = \"/path/to/containerd/runc/shim\"\n"
        "    options = { BinaryName = \"runc\" }\n"
        "  [[worker.containerd.gcpolicy]]\n"
        "    reservedSpace = 512000000\n"
        "    keepDuration = 172800\n"
        "[registry.\"docker.io\"]\n"
        "  mirrors = [\"yourmirror.local:5000\", \"core.harbor.domain/proxy.docker.io\"]\n"
        "  http = true\n"
        "  insecure = true\n"
        "  ca=[\"/etc/config/myca.pem\"]\n"
        "  [[registry.\"docker.io\".keypair]]\n"
        "    key=\"/etc/config/key.pem\"\n"
        "    cert=\"/etc/config/cert.pem\"\n"
        "[registry.\"yourmirror.local:5000\"]\n"
        "  http = true\n"
        "[frontend.\"dockerfile.v0\"]\n"
        "  enabled = true\n"
        "[frontend.\"gateway.v0\"]\n"
        "  enabled = true\n"
        "  allowedRepositories = []\n"
        "[system]\n"
        "  platformsCacheMaxAge = \"1h\"\n"
        "  maxRegistryConcurrency = 4\n"
        "[ghacache.sign]\n"
        "cmd = \"\"\n";

TEST(example_loads_every_section)
{
        struct loaded l = load(example);
        struct kiln_config *c = l.c;
        const struct kiln_config_registry *r;

        ASSERT_OK(l.r);
        ASSERT_EQ_INT(kiln_config_diags_count(&l.d, KILN_CONFIG_ERROR), 0);
        /* the only warning: the documented but non-existent [ghacache] */
        ASSERT_EQ_INT(l.d.n, 1);
        ASSERT_DIAG(&l.d, "t.toml:84:2: warning: unknown key 'ghacache'");

        ASSERT_STREQ(c->root, "/var/lib/buildkit");
        ASSERT_EQ_INT(c->n_insecure_entitlements, 3);
        ASSERT_STREQ(c->insecure_entitlements[2], "device");
        ASSERT_TRUE(c->proxy_network);
        ASSERT_STREQ(c->log.level, "info");
        ASSERT_TRUE(c->dns.set);
        ASSERT_EQ_INT(c->dns.n_nameservers, 2);
        ASSERT_STREQ(c->dns.search_domains[0], "example.com");
        ASSERT_STREQ(c->grpc.address[0], "tcp://0.0.0.0:1234");
        ASSERT_TRUE(c->grpc.uid_set && c->grpc.gid_set);
        ASSERT_EQ_INT(c->grpc.uid, 0);
        ASSERT_STREQ(c->grpc.tls.ca, "/etc/buildkit/tlsca.crt");
        ASSERT_EQ_INT(c->cdi.disabled, 1);
        ASSERT_EQ_INT(c->history.max_age, 172800LL * 1000000000);
        ASSERT_EQ_INT(c->history.max_entries, 50);

        const struct kiln_config_worker_oci *w = &c->worker_oci;
        ASSERT_EQ_INT(w->enabled, 1);
        ASSERT_EQ_INT(w->n_platforms, 2);
        ASSERT_STREQ(w->platforms[1], "linux/arm64");
        ASSERT_EQ_INT(w->gc, 1);
        ASSERT_EQ_INT(w->reserved_space.percentage, 30);
        ASSERT_EQ_INT(w->max_used_space.percentage, 60);
        ASSERT_EQ_INT(w->min_free_space.bytes, 20LL << 30); /* binary GB */
        ASSERT_EQ_INT(w->max_parallelism, 4);
        ASSERT_EQ_INT(w->cni_pool_size, 16);
        ASSERT_EQ_INT(w->n_labels, 1);
        ASSERT_STREQ(w->labels[0].key, "foo");
        ASSERT_STREQ(w->labels[0].value, "bar");
        ASSERT_EQ_INT(w->n_gc_policies, 2);
        ASSERT_EQ_INT(w->gc_policies[0].reserved_space.bytes, 512LL << 20);
        ASSERT_EQ_INT(w->gc_policies[0].keep_duration, 48LL * 3600 * 1000000000);
        ASSERT_EQ_INT(w->gc_policies[0].n_filters, 3);
        ASSERT_TRUE(w->gc_policies[1].all);
        ASSERT_EQ_INT(w->gc_policies[1].reserved_space.bytes, 1024000000);

        const struct kiln_config_worker_containerd *cw = &c->worker_containerd;
        ASSERT_EQ_INT(cw->enabled, 1);
        ASSERT_STREQ(cw->namespace_, "buildkit");
        ASSERT_STREQ(cw->runtime.path, "/path/to/containerd/runc/shim");
        ASSERT_STREQ(json_string_value(json_object_get(cw->runtime.options, "BinaryName")), "runc");
        ASSERT_EQ_INT(cw->gc_policies[0].keep_duration, 172800LL * 1000000000);

        ASSERT_EQ_INT(c->n_registries, 2);
        r = kiln_config_registry_find(c, "docker.io");
        ASSERT_TRUE(r != NULL);
        ASSERT_EQ_INT(r->n_mirrors, 2);
        ASSERT_STREQ(r->mirrors[1], "core.harbor.domain/proxy.docker.io");
        ASSERT_EQ_INT(r->http, 1);
        ASSERT_EQ_INT(r->insecure, 1);
        ASSERT_STREQ(r->ca[0], "/etc/config/myca.pem");
        ASSERT_EQ_INT(r->n_keypairs, 1);
        ASSERT_STREQ(r->keypairs[0].cert, "/etc/config/cert.pem");
        r = kiln_config_registry_find(c, "yourmirror.local:5000");
        ASSERT_TRUE(r != NULL);
        ASSERT_EQ_INT(r->http, 1);
        ASSERT_EQ_INT(r->insecure, -1);
        ASSERT_TRUE(kiln_config_registry_find(c, "docker") == NULL);

        ASSERT_EQ_INT(c->frontend.dockerfile_enabled, 1);
        ASSERT_EQ_INT(c->frontend.n_gateway_allowed_repositories, 0);
        ASSERT_TRUE(c->frontend.gateway_allowed_repositories != NULL);
        ASSERT_EQ_INT(c->system.platforms_cache_max_age, 3600LL * 1000000000);
        ASSERT_EQ_INT(c->system.max_registry_concurrency, 4);
        ASSERT_TRUE(!c->cache_gha.set);
        loaded_release(&l);
        return 0;
}

TEST(shared_testdata_examples)
{
        const char *td = getenv("KILN_TESTDATA");
        _cleanup_free_ char *dir = NULL;
        static const char *const files[] = { "buildkitd.toml.md-example.toml",
                                             "hack-composefiles-buildkitd.toml" };

        /* __FILE__ is relative to the build directory, where meson runs tests. */
        if (td)
                dir = kiln_xasprintf("%s/buildkitd-config", td);
        else {
                const char *slash = strrchr(__FILE__, '/');
                dir = kiln_xasprintf("%.*s/../../../shared/testdata/buildkitd-config",
                                     (int) (slash ? slash - __FILE__ : 1), slash ? __FILE__ : ".");
        }
        if (access(dir, F_OK) < 0) {
                printf("# %s not found\n", dir);
                return KILN_TEST_SKIP;
        }
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, files[i]);
                struct kiln_config *c = kiln_config_new();
                struct kiln_config_diags d = { 0 };
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_OK(kiln_config_load_file(c, p, true, &d, &err));
                ASSERT_EQ_INT(kiln_config_diags_count(&d, KILN_CONFIG_ERROR), 0);
                if (i == 0) {
                        ASSERT_EQ_INT(c->worker_oci.max_parallelism, 4);
                        ASSERT_EQ_INT(c->registries[0].n_mirrors, 2);
                } else {
                        ASSERT_STREQ(c->log.level, "debug");
                        ASSERT_EQ_INT(d.n, 0);
                }
                kiln_config_free(c);
                kiln_config_diags_release(&d);
        }
        return 0;
}

TEST(defaults_like_buildkitd)
{
        struct loaded l = load("");
        struct kiln_config *c = l.c;

        ASSERT_OK(l.r);
        kiln_config_set_defaults(c);
        ASSERT_STREQ(c->root, "/var/lib/kiln");
        ASSERT_EQ_INT(c->grpc.n_address, 1);
        ASSERT_STREQ(c->grpc.address[0], "unix:///run/kiln/kilnd.sock");
        ASSERT_TRUE(c->grpc.uid_set && c->grpc.gid_set);
        ASSERT_EQ_INT(c->grpc.uid, getuid());
        ASSERT_STREQ(c->log.level, "info");
        ASSERT_STREQ(c->log.format, "text");
        ASSERT_STREQ(c->otel.socket_path, "/run/buildkit/otel-grpc.sock");
        ASSERT_EQ_INT(c->cdi.disabled, -1);
        ASSERT_EQ_INT(c->cdi.n_spec_dirs, 3);
        ASSERT_STREQ(c->cdi.spec_dirs[2], "/etc/buildkit/cdi");
        ASSERT_STREQ(c->provenance_env_dir, "/etc/buildkit/provenance.d");
        ASSERT_EQ_INT(c->history.max_age, 48LL * 3600 * 1000000000);
        ASSERT_EQ_INT(c->history.max_entries, 50);
        ASSERT_EQ_INT(c->system.platforms_cache_max_age, 20LL * 1000000000);
        ASSERT_EQ_INT(c->system.max_registry_concurrency, 4);
        ASSERT_EQ_INT(c->worker_oci.enabled, -1);
        ASSERT_EQ_INT(c->worker_oci.gc, -1);
        ASSERT_STREQ(c->worker_oci.snapshotter, "auto");
        ASSERT_STREQ(c->worker_oci.network_mode, "auto");
        ASSERT_STREQ(c->worker_oci.cni_config_path, "/etc/buildkit/cni.json");
        ASSERT_STREQ(c->worker_oci.cni_binary_path, "/opt/cni/bin");
        ASSERT_STREQ(c->worker_oci.bridge_name, "buildkit0");
        ASSERT_STREQ(c->worker_oci.bridge_subnet, "10.10.0.0/16");
        ASSERT_EQ_INT(c->worker_oci.cni_pool_size, 0);
        ASSERT_EQ_INT(c->worker_oci.max_parallelism, 0);
        ASSERT_TRUE(c->worker_oci.n_platforms >= 1);
        ASSERT_TRUE(startswith(c->worker_oci.platforms[0], "linux/"));
        ASSERT_STREQ(c->worker_containerd.address, "/run/containerd/containerd.sock");
        ASSERT_STREQ(c->worker_containerd.namespace_, "buildkit");
        ASSERT_STREQ(c->worker_containerd.runtime.name, "io.containerd.runc.v2");
        ASSERT_STREQ(c->worker_containerd.snapshotter, "overlayfs");
        ASSERT_EQ_INT(c->n_registries, 0);
        ASSERT_TRUE(!c->dns.set);
        /* twice is harmless */
        kiln_config_set_defaults(c);
        ASSERT_EQ_INT(c->grpc.n_address, 1);
        loaded_release(&l);
        return 0;
}

TEST(empty_strings_get_defaults_explicit_empty_lists_stay)
{
        struct loaded l = load("root = \"\"\n[worker.oci]\nplatforms = []\nnetworkMode = \"\"\n"
                               "[history]\nmaxEntries = 10\n");
        ASSERT_OK(l.r);
        kiln_config_set_defaults(l.c);
        ASSERT_STREQ(l.c->root, "/var/lib/kiln");
        ASSERT_STREQ(l.c->worker_oci.network_mode, "auto");
        /* setDefaultConfig only fills platforms when nil */
        ASSERT_EQ_INT(l.c->worker_oci.n_platforms, 0);
        /* a [history] table replaces buildkit's defaults wholesale */
        ASSERT_EQ_INT(l.c->history.max_entries, 10);
        ASSERT_EQ_INT(l.c->history.max_age, 0);
        loaded_release(&l);
        return 0;
}

TEST(deprecated_debug_and_trace)
{
        struct loaded l = load("debug = true\n");

        ASSERT_OK(l.r);
        ASSERT_DIAG(&l.d, "t.toml:1:9: warning: 'debug' configuration option is deprecated, use "
                          "'log.level = \"debug\"' instead");
        kiln_config_set_defaults(l.c);
        ASSERT_STREQ(l.c->log.level, "debug");
        loaded_release(&l);

        l = load("trace = true\ndebug = true\n");
        ASSERT_DIAG(&l.d, "t.toml:1:9: warning: 'trace' configuration option is deprecated, use "
                          "'log.level = \"trace\"' instead");
        kiln_config_set_defaults(l.c);
        ASSERT_STREQ(l.c->log.level, "trace");
        loaded_release(&l);

        /* as buildkitd: a set log.level wins, and kiln says so */
        l = load("debug = true\n[log]\nlevel = \"info\"\n");
        ASSERT_OK(l.r);
        ASSERT_DIAG(&l.d, "t.toml:3:9: warning: log.level = \"info\" wins over 'debug = true'");
        kiln_config_set_defaults(l.c);
        ASSERT_STREQ(l.c->log.level, "info");
        loaded_release(&l);

        /* false is not worth a warning */
        l = load("debug = false\n");
        ASSERT_EQ_INT(l.d.n, 0);
        loaded_release(&l);

        /* logrus spellings are normalised */
        l = load("[log]\nlevel = \"WARNING\"\n");
        ASSERT_OK(l.r);
        kiln_config_set_defaults(l.c);
        ASSERT_STREQ(l.c->log.level, "warning");
        loaded_release(&l);
        return 0;
}

TEST(unknown_keys_warn_with_did_you_mean)
{
        struct loaded l = load("rooot = \"/x\"\n"
                               "[worker.oci]\n"
                               "maxParallelism = 4\n"
                               "snapshoter = \"native\"\n"
                               "mirrors = [\"m\"]\n"
                               "zzzzzz = 1\n"
                               "[gc]\n"
                               "enabled = true\n");

        ASSERT_OK(l.r); /* warnings only */
        ASSERT_EQ_INT(kiln_config_diags_count(&l.d, KILN_CONFIG_WARNING), 6);
        ASSERT_DIAG(&l.d, "t.toml:1:1: warning: unknown key 'rooot'; did you mean 'root'?");
        ASSERT_DIAG(&l.d, "t.toml:3:1: warning: unknown key 'maxParallelism' in [worker.oci]; "
                          "did you mean 'max-parallelism'?");
        ASSERT_DIAG(&l.d, "t.toml:4:1: warning: unknown key 'snapshoter' in [worker.oci]; did "
                          "you mean 'snapshotter'?");
        ASSERT_DIAG(&l.d, "t.toml:5:1: warning: unknown key 'mirrors' in [worker.oci]; did you "
                          "mean 'mirrors' in [registry.\"<host>\"]?");
        ASSERT_DIAG(&l.d, "t.toml:6:1: warning: unknown key 'zzzzzz' in [worker.oci]");
        ASSERT_DIAG(&l.d, "t.toml:7:2: warning: unknown key 'gc'");
        /* nothing was set from the misspelt keys */
        ASSERT_EQ_INT(l.c->worker_oci.max_parallelism, 0);
        ASSERT_TRUE(l.c->root == NULL);
        loaded_release(&l);
        return 0;
}

TEST(keys_match_case_insensitively_like_go_toml)
{
        struct loaded l = load("[Worker.OCI]\nMax-Parallelism = 3\n[SYSTEM]\n"
                               "MAXREGISTRYCONCURRENCY = 2\n");

        ASSERT_OK(l.r);
        ASSERT_EQ_INT(l.c->worker_oci.max_parallelism, 3);
        ASSERT_EQ_INT(l.c->system.max_registry_concurrency, 2);
        ASSERT_DIAG(&l.d, "t.toml:2:1: warning: key 'Max-Parallelism' in [worker.oci] is read as "
                          "'max-parallelism'");
        ASSERT_DIAG(&l.d, "t.toml:1:2: warning: key 'Worker' is read as 'worker'");
        loaded_release(&l);

        /* the same key twice through case folding: the last wins, with a warning */
        l = load("[worker.oci]\nmax-parallelism = 1\nMAX-PARALLELISM = 2\n");
        ASSERT_OK(l.r);
        ASSERT_EQ_INT(l.c->worker_oci.max_parallelism, 2);
        ASSERT_DIAG(&l.d, "t.toml:3:1: warning: 'max-parallelism' in [worker.oci] is set twice");
        loaded_release(&l);
        return 0;
}

TEST(unquoted_registry_host)
{
        struct loaded l = load("[registry.docker.io]\nmirrors = [\"mirror.gcr.io\"]\n"
                               "[registry.a.b.example]\nhttp = true\n");

        ASSERT_OK(l.r);
        ASSERT_DIAG(&l.d, "t.toml:1:18: warning: unquoted registry host: TOML reads "
                          "[registry.docker.io] as host 'docker' with a sub-table 'io', which "
                          "buildkitd silently ignores; write [registry.\"docker.io\"]");
        ASSERT_DIAG(&l.d, "write [registry.\"a.b.example\"]");
        /* as buildkitd: an empty entry for host "docker" that never matches */
        ASSERT_TRUE(kiln_config_registry_find(l.c, "docker.io") == NULL);
        ASSERT_TRUE(kiln_config_registry_find(l.c, "docker") != NULL);
        ASSERT_EQ_INT(kiln_config_registry_find(l.c, "docker")->n_mirrors, 0);
        loaded_release(&l);
        return 0;
}

TEST(other_hints)
{
        struct loaded l = load("[frontend.dockerfile.v0]\nenabled = false\n"
                               "[registry.\"https://ghcr.io/x\"]\nhttp = true\n"
                               "[registry.\"index.docker.io\"]\n"
                               "mirrors = [\"https://mirror.gcr.io\"]\n"
                               "[cache.gha.sign]\ncmd = \"cosign\"\n");

        ASSERT_OK(l.r);
        ASSERT_DIAG(&l.d, "t.toml:1:11: warning: unknown key 'dockerfile' in [frontend]; the key "
                          "'dockerfile.v0' needs quotes: write [frontend.\"dockerfile.v0\"]");
        ASSERT_DIAG(&l.d, "warning: registry host \"https://ghcr.io/x\" will never match: keys "
                          "are bare hosts such as [registry.\"ghcr.io\"]");
        ASSERT_DIAG(&l.d, "t.toml:5:11: warning: registry host \"index.docker.io\" will never "
                          "match: Docker Hub's key is [registry.\"docker.io\"]");
        ASSERT_DIAG(&l.d, "t.toml:6:12: warning: 'mirrors' in [registry.\"index.docker.io\"]: the "
                          "scheme of mirror \"https://mirror.gcr.io\" is ignored");
        ASSERT_DIAG(&l.d, "t.toml:8:1: warning: unknown key 'cmd' in [cache.gha.sign]; did you "
                          "mean 'command'");
        ASSERT_TRUE(l.c->cache_gha.set && l.c->cache_gha.sign_set);
        loaded_release(&l);
        return 0;
}

TEST(type_errors_name_key_position_and_type)
{
        struct loaded l = load("root = 5\n"
                               "[worker.oci]\n"
                               "max-parallelism = \"4\"\n"
                               "gc = \"true\"\n"
                               "enabled = \"auto\"\n"
                               "platforms = \"linux/amd64\"\n"
                               "labels = [\"a=b\"]\n"
                               "cniPoolSize = 1.5\n"
                               "gcpolicy = [1, {all = true}]\n"
                               "[worker.oci.stargzSnapshotter]\n"
                               "x = 1\n"
                               "[grpc]\n"
                               "address = [\"unix:///a\", 7]\n"
                               "[registry]\n"
                               "\"docker.io\" = \"mirror\"\n"
                               "[dns]\n"
                               "nameservers = \"1.1.1.1\"\n"
                               "[history]\n"
                               "maxAge = true\n");

        ASSERT_EQ_INT(l.r, -EINVAL);
        ASSERT_DIAG(&l.d, "t.toml:1:8: error: invalid type for 'root': expected string, got "
                          "integer 5");
        ASSERT_DIAG(&l.d, "t.toml:3:19: error: invalid type for 'max-parallelism' in "
                          "[worker.oci]: expected integer, got string \"4\"; write "
                          "max-parallelism = 4 without quotes");
        ASSERT_DIAG(&l.d, "t.toml:4:6: error: invalid type for 'gc' in [worker.oci]: expected "
                          "boolean, got string \"true\"; write gc = true without quotes");
        ASSERT_DIAG(&l.d, "t.toml:5:11: error: invalid type for 'enabled' in [worker.oci]: "
                          "expected boolean, got string \"auto\"; leave 'enabled' out for auto");
        ASSERT_DIAG(&l.d, "t.toml:6:13: error: invalid type for 'platforms' in [worker.oci]: "
                          "expected array of strings, got string \"linux/amd64\"; write "
                          "platforms = [\"linux/amd64\"]");
        ASSERT_DIAG(&l.d, "t.toml:7:10: error: invalid type for 'labels' in [worker.oci]: "
                          "expected table of strings, got array");
        ASSERT_DIAG(&l.d, "t.toml:8:15: error: invalid type for 'cniPoolSize' in [worker.oci]: "
                          "expected integer, got float 1.5");
        ASSERT_DIAG(&l.d, "t.toml:9:13: error: invalid type for 'gcpolicy' in [worker.oci]: "
                          "expected array of tables, but element 1 is integer");
        ASSERT_DIAG(&l.d, "t.toml:13:25: error: invalid type for 'address' in [grpc]: expected "
                          "array of strings, but element 2 is integer 7");
        ASSERT_DIAG(&l.d, "t.toml:15:15: error: invalid type for [registry.\"docker.io\"]: "
                          "expected table, got string \"mirror\"");
        ASSERT_DIAG(&l.d, "t.toml:17:15: error: invalid type for 'nameservers' in [dns]");
        ASSERT_DIAG(&l.d, "t.toml:19:10: error: invalid type for 'maxAge' in [history]: expected "
                          "duration");
        /* every problem is reported, not just the first */
        ASSERT_EQ_INT(kiln_config_diags_count(&l.d, KILN_CONFIG_ERROR), 12);
        /* stargzSnapshotter is free-form and passed through */
        ASSERT_EQ_INT(json_integer_value(json_object_get(l.c->worker_oci.stargz_snapshotter, "x")),
                      1);
        loaded_release(&l);
        return 0;
}

TEST(value_errors)
{
        struct loaded l = load("insecure-entitlements = [\"network.host\", \"network.hots\"]\n"
                               "[log]\n"
                               "level = \"verbose\"\n"
                               "format = \"JSON\"\n"
                               "[worker.oci]\n"
                               "max-parallelism = -1\n"
                               "networkMode = \"cnl\"\n"
                               "reservedSpace = \"10 potatoes\"\n"
                               "maxUsedSpace = -5\n"
                               "minFreeSpace = \"-10%\"\n"
                               "platforms = [\"linux/amd64\", \"foo\", \"linux/arm/v7/x\"]\n"
                               "[[worker.oci.gcpolicy]]\n"
                               "keepDuration = \"2 days\"\n"
                               "[system]\n"
                               "maxRegistryConcurrency = 0\n"
                               "[grpc]\n"
                               "address = [\"/run/x.sock\", \"http://x\"]\n"
                               "uid = -1\n");

        ASSERT_EQ_INT(l.r, -EINVAL);
        ASSERT_DIAG(&l.d, "t.toml:1:42: error: invalid value for 'insecure-entitlements': "
                          "\"network.hots\" is not one of network.host, security.insecure, "
                          "device; did you mean \"network.host\"?");
        ASSERT_DIAG(&l.d, "t.toml:3:9: error: invalid value for 'level' in [log]: unsupported "
                          "log level \"verbose\"");
        ASSERT_DIAG(&l.d, "t.toml:4:10: error: invalid value for 'format' in [log]: \"JSON\" is "
                          "not one of text, json; did you mean \"json\"?");
        ASSERT_DIAG(&l.d, "t.toml:6:19: error: invalid value for 'max-parallelism' in "
                          "[worker.oci]: must be zero or more, got -1");
        ASSERT_DIAG(&l.d, "t.toml:7:15: error: invalid value for 'networkMode' in [worker.oci]: "
                          "\"cnl\" is not one of auto, cni, host, bridge; did you mean \"cni\"?");
        ASSERT_DIAG(&l.d, "t.toml:8:17: error: invalid value for 'reservedSpace' in "
                          "[worker.oci]: invalid disk space \"10 potatoes\"");
        ASSERT_DIAG(&l.d, "t.toml:9:16: error: invalid value for 'maxUsedSpace' in [worker.oci]: "
                          "must not be negative, got -5");
        ASSERT_DIAG(&l.d, "t.toml:10:16: error: invalid value for 'minFreeSpace' in "
                          "[worker.oci]: percentage must not be negative");
        ASSERT_DIAG(&l.d, "t.toml:11:29: error: invalid value for 'platforms' in [worker.oci]: "
                          "invalid platform \"foo\": unknown operating system or architecture");
        ASSERT_DIAG(&l.d, "t.toml:11:36: error: invalid value for 'platforms' in [worker.oci]: "
                          "invalid platform \"linux/arm/v7/x\"");
        ASSERT_DIAG(&l.d, "t.toml:13:16: error: invalid value for 'keepDuration' in "
                          "[[worker.oci.gcpolicy]] #1: invalid duration \"2 days\"");
        ASSERT_DIAG(&l.d, "t.toml:15:26: error: invalid value for 'maxRegistryConcurrency' in "
                          "[system]: must be at least 1, got 0");
        ASSERT_DIAG(&l.d, "t.toml:17:12: error: invalid value for 'address' in [grpc]: address "
                          "\"/run/x.sock\" has no scheme; did you mean \"unix:///run/x.sock\"?");
        ASSERT_DIAG(&l.d, "t.toml:17:27: error: invalid value for 'address' in [grpc]: invalid "
                          "address 'http://x': unknown scheme (use unix:// or tcp://)");
        ASSERT_DIAG(&l.d, "t.toml:18:7: error: invalid value for 'uid' in [grpc]: must be "
                          "between 0 and 4294967294, got -1");
        ASSERT_EQ_INT(kiln_config_diags_count(&l.d, KILN_CONFIG_ERROR), 15);
        loaded_release(&l);
        return 0;
}

TEST(valid_edge_values)
{
        struct loaded l = load("[worker.oci]\n"
                               "platforms = [\"linux\", \"arm64\", \"windows(10.0.17763)/amd64\", "
                               "\"linux/arm/v7\"]\n"
                               "reservedSpace = 1.5e9\n"
                               "maxUsedSpace = \"150%\"\n"
                               "[history]\nmaxAge = \"72h\"\n"
                               "[grpc]\naddress = [\"unix:///run/k.sock\", \"tcp://[::1]:1\"]\n"
                               "[grpc.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");

        ASSERT_OK(l.r);
        ASSERT_EQ_INT(l.c->worker_oci.reserved_space.bytes, 1500000000);
        ASSERT_DIAG(&l.d, "t.toml:4:16: warning: 'maxUsedSpace' in [worker.oci]: \"150%\" is "
                          "more than the whole disk");
        ASSERT_EQ_INT(l.c->history.max_age, 72LL * 3600 * 1000000000);
        loaded_release(&l);
        return 0;
}

TEST(invalid_toml_has_position)
{
        struct loaded l = load("[worker.oci]\nmax-parallelism = 4\nbad = \n");

        ASSERT_EQ_INT(l.r, -EINVAL);
        ASSERT_EQ_INT(l.d.n, 1);
        ASSERT_EQ_INT(l.d.items[0].level, KILN_CONFIG_ERROR);
        ASSERT_EQ_INT(l.d.items[0].line, 3);
        ASSERT_TRUE(l.d.items[0].col > 0);
        ASSERT_DIAG(&l.d, "t.toml:3:");
        ASSERT_DIAG(&l.d, ": error: invalid TOML: ");
        loaded_release(&l);

        l = load("[worker.oci]\n[worker.oci]\n");
        ASSERT_EQ_INT(l.r, -EINVAL);
        ASSERT_DIAG(&l.d, "t.toml:2:");
        loaded_release(&l);
        return 0;
}

TEST(load_file_missing)
{
        struct kiln_config *c = kiln_config_new();
        struct kiln_config_diags d = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        /* the default path may be absent: an empty config */
        ASSERT_OK(kiln_config_load_file(c, "/nonexistent/buildkitd.toml", false, &d, &err));
        ASSERT_EQ_INT(d.n, 0);
        /* a path named on purpose may not */
        ASSERT_EQ_INT(kiln_config_load_file(c, "/nonexistent/buildkitd.toml", true, &d, &err),
                      -ENOENT);
        ASSERT_TRUE(strstr(kiln_error_message(err), "/nonexistent/buildkitd.toml") != NULL);
        ASSERT_EQ_INT(kiln_config_diags_count(&d, KILN_CONFIG_ERROR), 1);
        kiln_config_diags_release(&d);
        kiln_config_free(c);
        return 0;
}

TEST(json_uses_toml_key_names)
{
        struct loaded l = load(example);
        json_t *j = NULL, *oci, *reg;

        kiln_config_set_defaults(l.c);
        ASSERT_OK(kiln_config_to_json(l.c, &j));
        ASSERT_STREQ(json_string_value(json_object_get(j, "root")), "/var/lib/buildkit");
        ASSERT_STREQ(json_string_value(json_object_get(json_object_get(j, "log"), "level")),
                     "info");
        oci = json_object_get(json_object_get(j, "worker"), "oci");
        ASSERT_EQ_INT(json_integer_value(json_object_get(oci, "max-parallelism")), 4);
        ASSERT_EQ_INT(json_integer_value(json_object_get(oci, "cniPoolSize")), 16);
        ASSERT_STREQ(json_string_value(json_object_get(oci, "reservedSpace")), "30%");
        ASSERT_EQ_INT(json_integer_value(json_object_get(oci, "minFreeSpace")), 20LL << 30);
        ASSERT_STREQ(json_string_value(json_object_get(oci, "networkMode")), "auto");
        ASSERT_TRUE(json_is_true(json_object_get(oci, "enabled")));
        ASSERT_STREQ(json_string_value(json_object_get(
                             json_array_get(json_object_get(oci, "gcpolicy"), 0), "keepDuration")),
                     "48h0m0s");
        reg = json_object_get(json_object_get(j, "registry"), "docker.io");
        ASSERT_EQ_INT(json_array_size(json_object_get(reg, "mirrors")), 2);
        ASSERT_STREQ(json_string_value(json_array_get(json_object_get(reg, "mirrors"), 0)),
                     "yourmirror.local:5000");
        ASSERT_TRUE(json_is_true(json_object_get(reg, "http")));
        ASSERT_STREQ(json_string_value(json_object_get(
                             json_array_get(json_object_get(reg, "keypair"), 0), "key")),
                     "/etc/config/key.pem");
        ASSERT_STREQ(json_string_value(json_object_get(json_object_get(j, "history"), "maxAge")),
                     "48h0m0s");
        ASSERT_STREQ(json_string_value(
                             json_object_get(json_object_get(j, "system"), "platformsCacheMaxAge")),
                     "1h0m0s");
        ASSERT_TRUE(json_object_get(j, "debug") == NULL); /* false deprecated keys stay out */
        ASSERT_TRUE(json_object_get(j, "cache") == NULL);
        json_decref(j);
        loaded_release(&l);

        /* unset tri-states stay out; an empty config still has its defaults */
        l = load("");
        kiln_config_set_defaults(l.c);
        ASSERT_OK(kiln_config_to_json(l.c, &j));
        oci = json_object_get(json_object_get(j, "worker"), "oci");
        ASSERT_TRUE(json_object_get(oci, "enabled") == NULL);
        ASSERT_TRUE(json_object_get(oci, "gc") == NULL);
        ASSERT_EQ_INT(json_integer_value(json_object_get(oci, "max-parallelism")), 0);
        ASSERT_STREQ(json_string_value(json_array_get(
                             json_object_get(json_object_get(j, "grpc"), "address"), 0)),
                     "unix:///run/kiln/kilnd.sock");
        ASSERT_TRUE(json_object_get(j, "registry") == NULL);
        ASSERT_TRUE(json_object_get(j, "dns") == NULL);
        json_decref(j);
        loaded_release(&l);
        return 0;
}

TEST(cache_gha_schema)
{
        struct loaded l = load("[cache.gha.sign]\ncommand = [\"cosign\", \"sign-blob\"]\n"
                               "[cache.gha.verify]\nrequired = true\n"
                               "[cache.gha.verify.policy]\ntimestampThreshold = 1\n"
                               "certificateIssuer = \"iss\"\nbuildSignerURI = \"uri\"\n");
        json_t *j = NULL;

        ASSERT_OK(l.r);
        ASSERT_EQ_INT(l.d.n, 0);
        ASSERT_TRUE(l.c->cache_gha.set && l.c->cache_gha.sign_set);
        ASSERT_EQ_INT(l.c->cache_gha.n_sign_command, 2);
        ASSERT_TRUE(l.c->cache_gha.verify_required);
        ASSERT_EQ_INT(l.c->cache_gha.timestamp_threshold, 1);
        ASSERT_STREQ(l.c->cache_gha.policy[KILN_CONFIG_GHA_POLICY_BUILD_SIGNER_URI], "uri");
        ASSERT_OK(kiln_config_to_json(l.c, &j));
        ASSERT_STREQ(
                json_string_value(json_object_get(
                        json_object_get(
                                json_object_get(json_object_get(json_object_get(j, "cache"), "gha"),
                                                "verify"),
                                "policy"),
                        "certificateIssuer")),
                "iss");
        json_decref(j);
        loaded_release(&l);
        return 0;
}

TEST(deprecated_gc_keys_warn)
{
        struct loaded l = load("[worker.oci]\ngckeepstorage = \"1GB\"\n"
                               "[[worker.oci.gcpolicy]]\nkeepBytes = 100\n");

        ASSERT_OK(l.r);
        ASSERT_DIAG(&l.d, "t.toml:2:17: warning: 'gckeepstorage' is deprecated; use "
                          "'reservedSpace'");
        ASSERT_DIAG(&l.d, "t.toml:4:13: warning: 'keepBytes' is deprecated; use 'reservedSpace'");
        ASSERT_EQ_INT(l.c->worker_oci.gc_keep_storage.bytes, 1LL << 30);
        loaded_release(&l);
        return 0;
}

TEST(odd_keys_and_tables)
{
        /* a quoted key with a NUL must not match "root" */
        struct loaded l = load("\"root\\u0000x\" = \"/x\"\n"
                               "[registry.\"r.example\".keypair]\nkey = \"k\"\n");

        ASSERT_EQ_INT(l.r, -EINVAL);
        ASSERT_TRUE(l.c->root == NULL);
        ASSERT_DIAG(&l.d, "t.toml:1:1: warning: unknown key 'root\\u0000...': keys cannot "
                          "contain NUL");
        ASSERT_DIAG(&l.d, "t.toml:2:1: error: invalid type for 'keypair' in "
                          "[registry.\"r.example\"]: expected array of tables, got table; write "
                          "each entry as [[...]] (double brackets)");
        loaded_release(&l);
        return 0;
}

TEST(check_spans_keys)
{
        struct loaded l = load("[worker.oci]\nenabled = false\nsnapshotter = \"zfs\"\n"
                               "noProcessSandbox = true\n");

        ASSERT_OK(l.r);
        kiln_config_set_defaults(l.c);
        /* the OCI worker is off: its snapshotter and sandbox do not matter */
        ASSERT_OK(kiln_config_check(l.c, &l.d));
        l.c->worker_oci.enabled = -1;
        ASSERT_EQ_INT(kiln_config_check(l.c, &l.d), -EINVAL);
        ASSERT_DIAG(&l.d, "t.toml:3:15: error: invalid value for 'snapshotter' in [worker.oci]: "
                          "unknown snapshotter name \"zfs\"");
        ASSERT_DIAG(&l.d, "t.toml:4:20: error: can't enable NoProcessSandbox without Rootless");
        loaded_release(&l);
        return 0;
}
