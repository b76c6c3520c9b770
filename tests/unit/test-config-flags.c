/* SPDX-License-Identifier: Apache-2.0 */
/* kilnd's command line: buildkitd's flags, their syntax, and precedence
 * (file, then defaults, then only the flags that were set). */

#include <grp.h>
#include <stdarg.h>
#include <stdlib.h>

#include "config/config.h"
#include "config-test-util.h"
#include "kiln-test.h"

static char tmp_path[64];

/* Writes toml to a fresh temporary file, path in tmp_path. */
static int write_tmp(const char *toml)
{
        int fd;

        snprintf(tmp_path, sizeof(tmp_path), "/tmp/kiln-test-flags-XXXXXX");
        fd = mkstemp(tmp_path);
        if (fd < 0)
                return -errno;
        if (write(fd, toml, strlen(toml)) != (ssize_t) strlen(toml)) {
                close(fd);
                return -EIO;
        }
        close(fd);
        return 0;
}

/* Parses a NULL-terminated argument list (argv[0] added). */
static int parse(struct kiln_config_cli **cli, struct kiln_error **err, ...)
{
        char *argv[64] = { (char *) "kilnd" };
        int argc = 1;
        va_list ap;

        va_start(ap, err);
        for (const char *a; (a = va_arg(ap, const char *)) && argc < 63;)
                argv[argc++] = (char *) a;
        va_end(ap);
        kiln_error_free(*err);
        *err = NULL;
        kiln_config_cli_free(*cli);
        *cli = NULL;
        return kiln_config_cli_parse(argc, argv, cli, err);
}

/* Tests do not read /etc/buildkit/buildkitd.toml: --config "" reads none. */
#define NOFILE "--config="

TEST(flags_override_file_only_when_set)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(write_tmp("root = \"/from/file\"\n"
                            "[log]\nlevel = \"warn\"\n"
                            "[grpc]\naddress = [\"unix:///file.sock\"]\n"
                            "[worker.oci]\nmax-parallelism = 4\nnetworkMode = \"host\"\n"
                            "cniPoolSize = 3\nbinary = \"runc\"\n"
                            "[registry.\"docker.io\"]\nmirrors = [\"m.example\"]\n"));

        /* no flags: the file wins over defaults */
        ASSERT_OK(parse(&cli, &err, "--config", tmp_path, NULL));
        ASSERT_STREQ(cli->config_path, tmp_path);
        ASSERT_STREQ(cli->config->root, "/from/file");
        ASSERT_STREQ(cli->config->log.level, "warn");
        ASSERT_EQ_INT(cli->config->worker_oci.max_parallelism, 4);
        ASSERT_STREQ(cli->config->worker_oci.network_mode, "host");
        ASSERT_STREQ(cli->config->grpc.address[0], "unix:///file.sock");
        ASSERT_STREQ(cli->config->worker_oci.cni_binary_path, "/opt/cni/bin"); /* default */
        ASSERT_TRUE(!cli->validate);

        /* set flags win; the others keep the file's values */
        ASSERT_OK(parse(&cli, &err, "--config", tmp_path, "--validate", "--root=/from/flag",
                        "--oci-max-parallelism", "2", "--oci-worker-net=cni", "--debug", "--addr",
                        "unix:///a.sock", "--addr=tcp://127.0.0.1:1234", "--tlscert", "/c.pem",
                        "--tlskey", "/k.pem", "--oci-cni-config-path", "/etc/kiln/cni.json",
                        "--oci-cni-binary-dir", "/usr/lib/cni", "--oci-cni-pool-size=8", NULL));
        ASSERT_TRUE(cli->validate);
        ASSERT_STREQ(cli->config->root, "/from/flag");
        ASSERT_EQ_INT(cli->config->worker_oci.max_parallelism, 2);
        ASSERT_STREQ(cli->config->worker_oci.network_mode, "cni");
        ASSERT_STREQ(cli->config->log.level, "debug");
        ASSERT_EQ_INT(cli->config->grpc.n_address, 2);
        ASSERT_STREQ(cli->config->grpc.address[1], "tcp://127.0.0.1:1234");
        /* buildkitd drops this flag's value (a typo in its source); kiln honours it */
        ASSERT_STREQ(cli->config->worker_oci.cni_config_path, "/etc/kiln/cni.json");
        ASSERT_STREQ(cli->config->worker_oci.cni_binary_path, "/usr/lib/cni");
        ASSERT_EQ_INT(cli->config->worker_oci.cni_pool_size, 8);
        ASSERT_STREQ(cli->config->worker_oci.binary, "runc");
        ASSERT_EQ_INT(cli->config->registries[0].n_mirrors, 1);
        unlink(tmp_path);
        return 0;
}

TEST(debug_and_log_level_order)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        /* applyMainFlags: --debug, then --log-level */
        ASSERT_OK(parse(&cli, &err, NOFILE, "--debug", "--log-level", "error", NULL));
        ASSERT_STREQ(cli->config->log.level, "error");
        ASSERT_OK(parse(&cli, &err, NOFILE, "--debug=false", NULL));
        ASSERT_STREQ(cli->config->log.level, "info");
        ASSERT_OK(parse(&cli, &err, NOFILE, "--debug=true", NULL));
        ASSERT_STREQ(cli->config->log.level, "debug");
        ASSERT_OK(parse(&cli, &err, NOFILE, "--trace", NULL));
        ASSERT_STREQ(cli->config->log.level, "trace");
        ASSERT_DIAG(&cli->diags, "warning: --trace option is deprecated; use --log-level=trace "
                                 "instead");
        ASSERT_OK(parse(&cli, &err, NOFILE, "--log-format", "json", NULL));
        ASSERT_STREQ(cli->config->log.format, "json");

        /* BUILDKITD_LOG_LEVEL counts as a set flag, below the command line */
        setenv("BUILDKITD_LOG_LEVEL", "warn", 1);
        ASSERT_OK(parse(&cli, &err, NOFILE, NULL));
        ASSERT_STREQ(cli->config->log.level, "warn");
        ASSERT_OK(parse(&cli, &err, NOFILE, "--log-level=debug", NULL));
        ASSERT_STREQ(cli->config->log.level, "debug");
        setenv("BUILDKITD_LOG_LEVEL", "loud", 1);
        ASSERT_EQ_INT(parse(&cli, &err, NOFILE, NULL), -EINVAL);
        ASSERT_DIAG(&cli->diags, "error: invalid value for --log-level: unsupported log level "
                                 "\"loud\"");
        unsetenv("BUILDKITD_LOG_LEVEL");
        return 0;
}

TEST(flag_syntax_errors)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_EQ_INT(parse(&cli, &err, NOFILE, "--max-parallelism", "3", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err),
                     "unknown flag --max-parallelism; did you mean --oci-max-parallelism?");
        ASSERT_TRUE(cli != NULL);
        ASSERT_EQ_INT(kiln_config_diags_count(&cli->diags, KILN_CONFIG_ERROR), 1);

        ASSERT_EQ_INT(parse(&cli, &err, "--oci-worker-snapshoter=native", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "unknown flag --oci-worker-snapshoter; did you "
                                              "mean --oci-worker-snapshotter?");
        ASSERT_EQ_INT(parse(&cli, &err, "--frobnicate", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "unknown flag --frobnicate (see kilnd --help)");
        ASSERT_EQ_INT(parse(&cli, &err, "--root", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "flag needs an argument: --root");
        ASSERT_EQ_INT(parse(&cli, &err, "--debug=yes", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err),
                     "invalid value \"yes\" for flag --debug: expected true or false");
        ASSERT_EQ_INT(parse(&cli, &err, "--oci-max-parallelism", "four", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "invalid value \"four\" for flag "
                                              "--oci-max-parallelism: expected an integer");
        ASSERT_EQ_INT(parse(&cli, &err, "serve", NULL), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err),
                     "unexpected argument 'serve': kilnd takes only flags");
        return 0;
}

TEST(flag_value_errors_are_collected)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(write_tmp("[worker.oci]\nmax-parallelism = \"4\"\n"));
        ASSERT_EQ_INT(parse(&cli, &err, "--config", tmp_path, "--oci-max-parallelism", "-3",
                            "--oci-worker-net=foo", "--allow-insecure-entitlement", "network.host",
                            "--allow-insecure-entitlement", "sudo", "--oci-worker=maybe",
                            "--oci-worker-labels", "novalue", "--addr", "/x.sock", NULL),
                      -EINVAL);
        _cleanup_free_ char *file_err =
                kiln_xasprintf("%s:2:19: error: invalid type for 'max-parallelism'", tmp_path);
        ASSERT_DIAG(&cli->diags, file_err);
        ASSERT_STREQ(cli->config_path, tmp_path); /* read, though broken */
        ASSERT_DIAG(&cli->diags, "error: invalid value for --oci-max-parallelism: must be zero or "
                                 "more, got -3");
        ASSERT_DIAG(&cli->diags, "error: invalid value for --oci-worker-net: \"foo\" is not one of "
                                 "auto, cni, host, bridge");
        ASSERT_DIAG(&cli->diags, "error: invalid value for --allow-insecure-entitlement: \"sudo\" "
                                 "is not one of network.host, security.insecure, device");
        ASSERT_DIAG(&cli->diags, "error: invalid value for --oci-worker: \"maybe\" is not one of "
                                 "true, false, auto");
        ASSERT_DIAG(&cli->diags, "error: invalid value for --oci-worker-labels: \"novalue\" is not "
                                 "key=value");
        ASSERT_DIAG(&cli->diags, "error: invalid value for --addr: address \"/x.sock\" has no "
                                 "scheme");
        ASSERT_EQ_INT(kiln_config_diags_count(&cli->diags, KILN_CONFIG_ERROR), 7);
        /* *err names the first problem and counts the rest */
        ASSERT_TRUE(strstr(kiln_error_message(err), "(and 6 more errors)") != NULL);
        unlink(tmp_path);
        return 0;
}

TEST(config_file_missing)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_EQ_INT(parse(&cli, &err, "--config", "/nonexistent/buildkitd.toml", NULL), -EINVAL);
        ASSERT_DIAG(&cli->diags, "failed to load config from '/nonexistent/buildkitd.toml'");
        ASSERT_OK(parse(&cli, &err, NOFILE, NULL));
        ASSERT_TRUE(cli->config_path == NULL);
        ASSERT_EQ_INT(cli->diags.n, 0);
        ASSERT_STREQ(cli->config->root, KILN_CONFIG_DEFAULT_ROOT);
        return 0;
}

TEST(worker_flags)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct kiln_config_worker_oci *w;

        ASSERT_OK(write_tmp("[worker.oci]\nlabels = { a = \"1\", b = \"2\" }\n"
                            "platforms = [\"linux/arm64\"]\ngc = false\n"
                            "[worker.containerd.runtime]\nname = \"x\"\npath = \"/p\"\n"
                            "options = { A = 1 }\n"));
        ASSERT_OK(parse(&cli, &err, "--config", tmp_path, "--oci-worker=false",
                        "--oci-worker-labels", "b=3", "--oci-worker-labels=c=4=5",
                        "--oci-worker-platform", "linux/amd64", "--oci-worker-platform",
                        "linux/riscv64", "--oci-worker-gc", "--oci-worker-gc-keepstorage",
                        "1000,2000,3000", "--oci-worker-snapshotter", "native",
                        "--oci-worker-binary", "crun", "--oci-worker-selinux",
                        "--oci-worker-apparmor-profile", "prof", "--containerd-worker-runtime",
                        "io.containerd.runsc.v1", "--containerd-worker", "true",
                        "--containerd-max-parallelism=5", "--rootless", NULL));
        w = &cli->config->worker_oci;
        ASSERT_EQ_INT(w->enabled, 0);
        ASSERT_EQ_INT(w->n_labels, 3);
        ASSERT_STREQ(w->labels[0].value, "1");
        ASSERT_STREQ(w->labels[1].value, "3");
        ASSERT_STREQ(w->labels[2].key, "c");
        ASSERT_STREQ(w->labels[2].value, "4=5");
        ASSERT_EQ_INT(w->n_platforms, 2);
        ASSERT_STREQ(w->platforms[1], "linux/riscv64");
        ASSERT_EQ_INT(w->gc, 1);
        ASSERT_EQ_INT(w->reserved_space.bytes, 1000000000LL);
        ASSERT_EQ_INT(w->min_free_space.bytes, 2000000000LL);
        ASSERT_EQ_INT(w->max_used_space.bytes, 3000000000LL);
        ASSERT_STREQ(w->snapshotter, "native");
        ASSERT_STREQ(w->binary, "crun");
        ASSERT_TRUE(w->selinux);
        ASSERT_STREQ(w->apparmor_profile, "prof");
        ASSERT_TRUE(w->rootless);
        ASSERT_TRUE(cli->config->worker_containerd.rootless);
        /* buildkitd replaces the runtime table with just the name */
        ASSERT_STREQ(cli->config->worker_containerd.runtime.name, "io.containerd.runsc.v1");
        ASSERT_TRUE(cli->config->worker_containerd.runtime.path == NULL);
        ASSERT_TRUE(cli->config->worker_containerd.runtime.options == NULL);
        ASSERT_EQ_INT(cli->config->worker_containerd.enabled, 1);
        ASSERT_EQ_INT(cli->config->worker_containerd.max_parallelism, 5);

        ASSERT_OK(parse(&cli, &err, NOFILE, "--oci-worker", "auto", "--oci-worker-gc=false",
                        "--oci-worker-gc-keepstorage=500", NULL));
        ASSERT_EQ_INT(cli->config->worker_oci.enabled, -1);
        ASSERT_EQ_INT(cli->config->worker_oci.gc, 0);
        ASSERT_EQ_INT(cli->config->worker_oci.reserved_space.bytes, 500000000LL);
        ASSERT_EQ_INT(cli->config->worker_oci.max_used_space.bytes, 0);

        ASSERT_EQ_INT(parse(&cli, &err, NOFILE, "--oci-worker-gc-keepstorage=1,x", NULL), -EINVAL);
        ASSERT_DIAG(&cli->diags, "invalid value for --oci-worker-gc-keepstorage: \"1,x\"");
        unlink(tmp_path);
        return 0;
}

TEST(main_flags)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_config *c;

        ASSERT_OK(write_tmp("insecure-entitlements = [\"device\"]\n[cdi]\nspecDirs = [\"/a\"]\n"));
        ASSERT_OK(parse(&cli, &err, "--config", tmp_path, "--allow-insecure-entitlement",
                        "network.host", "--allow-insecure-entitlement=security.insecure",
                        "--proxy-network", "--debugaddr", "0.0.0.0:6060", "--group", "4242",
                        "--tlscert", "/c.pem", "--tlskey=/k.pem", "--tlscacert", "/ca.pem",
                        "--otel-socket-path", "/o.sock", "--cdi-disabled", "--cdi-spec-dir", "/x",
                        "--cdi-spec-dir", "/y", "--save-cache-debug", NULL));
        c = cli->config;
        /* the flag replaces the file's list */
        ASSERT_EQ_INT(c->n_insecure_entitlements, 2);
        ASSERT_STREQ(c->insecure_entitlements[0], "network.host");
        ASSERT_TRUE(c->proxy_network);
        ASSERT_STREQ(c->grpc.debug_address, "0.0.0.0:6060");
        ASSERT_EQ_INT(c->grpc.gid, 4242);
        ASSERT_STREQ(c->grpc.tls.cert, "/c.pem");
        ASSERT_STREQ(c->grpc.tls.key, "/k.pem");
        ASSERT_STREQ(c->grpc.tls.ca, "/ca.pem");
        ASSERT_STREQ(c->otel.socket_path, "/o.sock");
        ASSERT_EQ_INT(c->cdi.disabled, 1);
        ASSERT_EQ_INT(c->cdi.n_spec_dirs, 2);
        ASSERT_STREQ(c->cdi.spec_dirs[1], "/y");
        ASSERT_TRUE(c->save_cache_debug);

        /* group names are looked up */
        struct group *g = getgrgid(0);
        if (g) {
                ASSERT_OK(parse(&cli, &err, NOFILE, "--group", g->gr_name, NULL));
                ASSERT_EQ_INT(cli->config->grpc.gid, 0);
        }
        ASSERT_EQ_INT(parse(&cli, &err, NOFILE, "--group", "no-such-group-kiln", NULL), -EINVAL);
        ASSERT_DIAG(&cli->diags, "invalid value for --group: unknown group \"no-such-group-kiln\"");
        unlink(tmp_path);
        return 0;
}

TEST(checks_across_keys_point_at_their_source)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *want = NULL;

        ASSERT_OK(write_tmp("[worker.oci]\nsnapshotter = \"overlay\"\nnoProcessSandbox = true\n"
                            "[grpc.tls]\ncert = \"/c.pem\"\n"));
        ASSERT_EQ_INT(parse(&cli, &err, "--config", tmp_path, NULL), -EINVAL);
        want = kiln_xasprintf("%s:2:15: error: invalid value for 'snapshotter' in [worker.oci]: "
                              "unknown snapshotter name \"overlay\"; expected one of auto, "
                              "overlayfs, fuse-overlayfs, native, stargz; did you mean "
                              "\"overlayfs\"?",
                              tmp_path);
        ASSERT_DIAG(&cli->diags, want);
        free(want);
        want = kiln_xasprintf("%s:3:20: error: can't enable NoProcessSandbox without Rootless",
                              tmp_path);
        ASSERT_DIAG(&cli->diags, want);
        free(want);
        want = kiln_xasprintf("%s:5:8: error: [grpc.tls] needs both 'cert' and 'key'", tmp_path);
        ASSERT_DIAG(&cli->diags, want);

        /* a flag fixes what the file got wrong; a proxy snapshotter takes any name */
        ASSERT_OK(parse(&cli, &err, "--config", tmp_path, "--oci-worker-snapshotter=overlayfs",
                        "--oci-worker-no-process-sandbox=false", "--tlskey", "/k.pem", NULL));
        ASSERT_OK(parse(&cli, &err, "--config", tmp_path, "--oci-worker-proxy-snapshotter-path",
                        "/run/snap.sock", "--oci-worker=false", "--tlskey", "/k.pem", NULL));

        /* from a flag, the message names the flag */
        ASSERT_EQ_INT(parse(&cli, &err, NOFILE, "--oci-worker-snapshotter", "zfs", NULL), -EINVAL);
        ASSERT_DIAG(&cli->diags, "error: --oci-worker-snapshotter: invalid value for "
                                 "'snapshotter' in [worker.oci]: unknown snapshotter name \"zfs\"");
        unlink(tmp_path);
        return 0;
}

TEST(rootless_worker_flag_needs_userns)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char buf[128] = { 0 };
        FILE *f = fopen("/proc/self/uid_map", "re");

        if (!f)
                return KILN_TEST_SKIP;
        (void) !fgets(buf, sizeof(buf), f);
        fclose(f);
        if (!strstr(buf, "4294967295"))
                return KILN_TEST_SKIP; /* running in a user namespace */
        ASSERT_EQ_INT(parse(&cli, &err, NOFILE, "--oci-worker-rootless", NULL), -EINVAL);
        ASSERT_DIAG(&cli->diags, "--oci-worker-rootless: rootless mode requires to be executed as "
                                 "the mapped root in a user namespace");
        /* outside a user namespace --rootless defaults to false and sets nothing */
        ASSERT_OK(parse(&cli, &err, NOFILE, NULL));
        ASSERT_TRUE(!cli->config->worker_oci.rootless);
        return 0;
}

TEST(help_and_version)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *u = kiln_config_usage();

        /* no file is read for --help: even a missing one is fine */
        ASSERT_OK(parse(&cli, &err, "--config", "/nonexistent", "--help", NULL));
        ASSERT_TRUE(cli->help);
        ASSERT_OK(parse(&cli, &err, "-h", NULL));
        ASSERT_TRUE(cli->help);
        ASSERT_OK(parse(&cli, &err, "--version", NULL));
        ASSERT_TRUE(cli->version);
        ASSERT_OK(parse(&cli, &err, "-v", NULL));
        ASSERT_TRUE(cli->version);

        ASSERT_TRUE(strstr(u, "--oci-max-parallelism value") != NULL);
        ASSERT_TRUE(strstr(u, "--config value") != NULL);
        ASSERT_TRUE(strstr(u, "(default: \"/etc/buildkit/buildkitd.toml\")") != NULL);
        ASSERT_TRUE(strstr(u, "[$BUILDKITD_LOG_LEVEL]") != NULL);
        ASSERT_TRUE(strstr(u, "--validate") != NULL);
        ASSERT_TRUE(strstr(u, "--trace") == NULL); /* hidden, as in buildkitd */
        ASSERT_TRUE(strstr(u, "--containerd-worker-namespace") == NULL);
        return 0;
}
