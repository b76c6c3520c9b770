/* SPDX-License-Identifier: Apache-2.0 */
#include "exec/exec.h"
#include "kiln-test.h"

#define BUNDLE "/var/lib/kiln/exec/abc123"

static const char *const sh_args[] = { "/bin/sh", "-c", "echo hi" };

static struct kiln_exec_process base_process(void)
{
        return (struct kiln_exec_process){
                .rootfs = "/var/lib/kiln/exec/abc123.root",
                .args = sh_args,
                .n_args = ELEMENTSOF(sh_args),
        };
}

static const char *str_at(json_t *a, size_t i)
{
        return json_string_value(json_array_get(a, i));
}

static bool array_has(json_t *a, const char *s)
{
        size_t i;
        json_t *v;
        json_array_foreach (a, i, v)
                if (streq(json_string_value(v), s))
                        return true;
        return false;
}

static json_t *mount_at(json_t *spec, const char *dest)
{
        size_t i;
        json_t *m;
        json_array_foreach (json_object_get(spec, "mounts"), i, m)
                if (streq(json_string_value(json_object_get(m, "destination")), dest))
                        return m;
        return NULL;
}

TEST(process_defaults_match_buildkit)
{
        struct kiln_exec_process p = base_process();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        json_t *proc = json_object_get(spec, "process");
        ASSERT_STREQ(json_string_value(json_object_get(spec, "ociVersion")), "1.0.2");
        ASSERT_TRUE(json_is_false(json_object_get(proc, "terminal")));
        ASSERT_TRUE(json_is_false(json_object_get(proc, "noNewPrivileges")));
        ASSERT_EQ_INT(json_array_size(json_object_get(proc, "args")), 3);
        ASSERT_STREQ(str_at(json_object_get(proc, "args"), 2), "echo hi");
        ASSERT_STREQ(json_string_value(json_object_get(proc, "cwd")), "/");
        /* PATH added when the image sets none */
        json_t *env = json_object_get(proc, "env");
        ASSERT_EQ_INT(json_array_size(env), 1);
        ASSERT_STREQ(str_at(env, 0),
                     "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        /* containerd's default capabilities, no inheritable or ambient set */
        json_t *caps = json_object_get(proc, "capabilities");
        ASSERT_EQ_INT(json_array_size(json_object_get(caps, "bounding")), 14);
        ASSERT_EQ_INT(json_array_size(json_object_get(caps, "effective")), 14);
        ASSERT_EQ_INT(json_array_size(json_object_get(caps, "permitted")), 14);
        ASSERT_TRUE(array_has(json_object_get(caps, "bounding"), "CAP_NET_BIND_SERVICE"));
        ASSERT_TRUE(array_has(json_object_get(caps, "bounding"), "CAP_AUDIT_WRITE"));
        ASSERT_TRUE(!array_has(json_object_get(caps, "bounding"), "CAP_SYS_ADMIN"));
        ASSERT_TRUE(!json_object_get(caps, "inheritable"));
        ASSERT_TRUE(!json_object_get(caps, "ambient"));
        json_t *rl = json_array_get(json_object_get(proc, "rlimits"), 0);
        ASSERT_STREQ(json_string_value(json_object_get(rl, "type")), "RLIMIT_NOFILE");
        ASSERT_EQ_INT(json_integer_value(json_object_get(rl, "soft")), 1048576);
        ASSERT_EQ_INT(json_integer_value(json_object_get(rl, "hard")), 1048576);
        ASSERT_EQ_INT(json_array_size(json_object_get(proc, "rlimits")), 1);

        ASSERT_STREQ(json_string_value(json_object_get(spec, "hostname")), "buildkitsandbox");
        json_t *root = json_object_get(spec, "root");
        ASSERT_STREQ(json_string_value(json_object_get(root, "path")), p.rootfs);
        ASSERT_TRUE(json_is_false(json_object_get(root, "readonly")));
        json_decref(spec);
        return 0;
}

TEST(env_keeps_path_and_folds_duplicates)
{
        struct kiln_exec_process p = base_process();
        const char *env[] = { "A=1", "PATH=/x", "B=2", "A=3" };
        p.env = env;
        p.n_env = ELEMENTSOF(env);
        p.cwd = "/work";
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        json_t *e = json_object_get(json_object_get(spec, "process"), "env");
        ASSERT_EQ_INT(json_array_size(e), 3);
        ASSERT_STREQ(str_at(e, 0), "A=3");
        ASSERT_STREQ(str_at(e, 1), "PATH=/x");
        ASSERT_STREQ(str_at(e, 2), "B=2");
        ASSERT_STREQ(json_string_value(json_object_get(json_object_get(spec, "process"), "cwd")),
                     "/work");
        json_decref(spec);
        return 0;
}

TEST(user_ids_with_primary_gid_first)
{
        struct kiln_exec_process p = base_process();
        const uint32_t gids[] = { 10, 1000, 29 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 1000, 1000, gids, 3, &err);

        ASSERT_TRUE(spec);
        json_t *u = json_object_get(json_object_get(spec, "process"), "user");
        ASSERT_EQ_INT(json_integer_value(json_object_get(u, "uid")), 1000);
        ASSERT_EQ_INT(json_integer_value(json_object_get(u, "gid")), 1000);
        json_t *add = json_object_get(u, "additionalGids");
        ASSERT_EQ_INT(json_array_size(add), 3);
        ASSERT_EQ_INT(json_integer_value(json_array_get(add, 0)), 1000);
        ASSERT_EQ_INT(json_integer_value(json_array_get(add, 1)), 10);
        ASSERT_EQ_INT(json_integer_value(json_array_get(add, 2)), 29);
        json_decref(spec);
        return 0;
}

TEST(mounts_in_order_then_the_callers)
{
        struct kiln_exec_process p = base_process();
        const struct kiln_exec_mount mounts[] = {
                { .type = "bind", .source = "/srv/cache", .target = "/root/.cache" },
                { .type = "tmpfs", .target = "/tmp", .tmpfs_size = 1 << 20 },
                { .type = "bind", .source = "/srv/ctx", .target = "/src", .readonly = true },
        };
        p.mounts = mounts;
        p.n_mounts = ELEMENTSOF(mounts);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        static const char *const want[] = {
                "/proc",       "/dev",          "/dev/pts",       "/dev/shm",
                "/dev/mqueue", "/sys",          "/sys/fs/cgroup", "/etc/resolv.conf",
                "/etc/hosts",  "/etc/hostname", "/root/.cache",   "/tmp",
                "/src",
        };
        json_t *ms = json_object_get(spec, "mounts");
        ASSERT_EQ_INT(json_array_size(ms), ELEMENTSOF(want));
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                ASSERT_STREQ(
                        json_string_value(json_object_get(json_array_get(ms, i), "destination")),
                        want[i]);
        /* no /run tmpfs: BuildKit removes containerd's */
        ASSERT_TRUE(!mount_at(spec, "/run"));

        json_t *sys = mount_at(spec, "/sys");
        ASSERT_TRUE(array_has(json_object_get(sys, "options"), "ro"));
        json_t *cg = mount_at(spec, "/sys/fs/cgroup");
        ASSERT_STREQ(json_string_value(json_object_get(cg, "type")), "cgroup");
        ASSERT_TRUE(array_has(json_object_get(cg, "options"), "ro"));
        json_t *hosts = mount_at(spec, "/etc/hosts");
        ASSERT_STREQ(json_string_value(json_object_get(hosts, "source")), BUNDLE "/hosts");
        ASSERT_TRUE(array_has(json_object_get(hosts, "options"), "ro"));
        ASSERT_TRUE(array_has(json_object_get(hosts, "options"), "rbind"));
        ASSERT_STREQ(
                json_string_value(json_object_get(mount_at(spec, "/etc/resolv.conf"), "source")),
                BUNDLE "/resolv.conf");
        ASSERT_STREQ(json_string_value(json_object_get(mount_at(spec, "/etc/hostname"), "source")),
                     BUNDLE "/hostname");

        json_t *cache = mount_at(spec, "/root/.cache");
        ASSERT_STREQ(json_string_value(json_object_get(cache, "type")), "bind");
        ASSERT_STREQ(json_string_value(json_object_get(cache, "source")), "/srv/cache");
        ASSERT_TRUE(array_has(json_object_get(cache, "options"), "rbind"));
        ASSERT_TRUE(!array_has(json_object_get(cache, "options"), "ro"));
        ASSERT_TRUE(array_has(json_object_get(mount_at(spec, "/src"), "options"), "ro"));
        json_t *tmp = mount_at(spec, "/tmp");
        ASSERT_STREQ(json_string_value(json_object_get(tmp, "type")), "tmpfs");
        ASSERT_TRUE(array_has(json_object_get(tmp, "options"), "nosuid"));
        ASSERT_TRUE(array_has(json_object_get(tmp, "options"), "size=1048576"));
        json_decref(spec);
        return 0;
}

TEST(a_callers_mount_replaces_a_default_in_place)
{
        struct kiln_exec_process p = base_process();
        const struct kiln_exec_mount mounts[] = {
                { .type = "bind", .source = "/srv/myhosts", .target = "/etc/hosts" },
        };
        p.mounts = mounts;
        p.n_mounts = 1;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        json_t *ms = json_object_get(spec, "mounts");
        ASSERT_EQ_INT(json_array_size(ms), 10);
        json_t *m = json_array_get(ms, 8);
        ASSERT_STREQ(json_string_value(json_object_get(m, "destination")), "/etc/hosts");
        ASSERT_STREQ(json_string_value(json_object_get(m, "source")), "/srv/myhosts");
        json_decref(spec);
        return 0;
}

TEST(linux_namespaces_masks_and_cgroup)
{
        struct kiln_exec_process p = base_process();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        json_t *l = json_object_get(spec, "linux");
        json_t *ns = json_object_get(l, "namespaces");
        static const char *const want[] = { "pid", "ipc", "uts", "mount", "network" };
        ASSERT_EQ_INT(json_array_size(ns), 5);
        for (size_t i = 0; i < 5; i++)
                ASSERT_STREQ(json_string_value(json_object_get(json_array_get(ns, i), "type")),
                             want[i]);
        ASSERT_EQ_INT(json_array_size(json_object_get(l, "maskedPaths")), 11);
        ASSERT_TRUE(array_has(json_object_get(l, "maskedPaths"), "/proc/kcore"));
        ASSERT_TRUE(array_has(json_object_get(l, "maskedPaths"), "/sys/firmware"));
        ASSERT_EQ_INT(json_array_size(json_object_get(l, "readonlyPaths")), 5);
        ASSERT_TRUE(array_has(json_object_get(l, "readonlyPaths"), "/proc/sysrq-trigger"));
        ASSERT_STREQ(json_string_value(json_object_get(l, "cgroupsPath")), "/buildkit/abc123");
        json_t *dev =
                json_array_get(json_object_get(json_object_get(l, "resources"), "devices"), 0);
        ASSERT_TRUE(json_is_false(json_object_get(dev, "allow")));
        ASSERT_STREQ(json_string_value(json_object_get(dev, "access")), "rwm");
        ASSERT_EQ_INT(json_array_size(json_object_get(l, "devices")), 0);
        json_decref(spec);

        p.network = KILN_EXEC_NETWORK_HOST;
        p.hostname = "myhost";
        p.cgroup_parent = "/kiln/";
        spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);
        ASSERT_TRUE(spec);
        l = json_object_get(spec, "linux");
        ns = json_object_get(l, "namespaces");
        ASSERT_EQ_INT(json_array_size(ns), 4);
        for (size_t i = 0; i < 4; i++)
                ASSERT_TRUE(
                        !streq(json_string_value(json_object_get(json_array_get(ns, i), "type")),
                               "network"));
        ASSERT_STREQ(json_string_value(json_object_get(spec, "hostname")), "myhost");
        ASSERT_STREQ(json_string_value(json_object_get(l, "cgroupsPath")), "/kiln/buildkit/abc123");
        json_decref(spec);

        /* A CNI namespace is joined by path. */
        p.network = KILN_EXEC_NETWORK_NONE;
        p.netns_path = "/var/lib/kiln/net/cni/0123";
        spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);
        ASSERT_TRUE(spec);
        ns = json_object_get(json_object_get(spec, "linux"), "namespaces");
        ASSERT_EQ_INT(json_array_size(ns), 5);
        ASSERT_STREQ(json_string_value(json_object_get(json_array_get(ns, 4), "type")), "network");
        ASSERT_STREQ(json_string_value(json_object_get(json_array_get(ns, 4), "path")),
                     "/var/lib/kiln/net/cni/0123");
        json_decref(spec);
        return 0;
}

TEST(insecure_is_privileged)
{
        struct kiln_exec_process p = base_process();
        p.insecure = true;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        json_t *caps = json_object_get(json_object_get(spec, "process"), "capabilities");
        static const char *const sets[] = { "bounding", "effective", "permitted", "inheritable",
                                            "ambient" };
        for (size_t i = 0; i < ELEMENTSOF(sets); i++) {
                json_t *s = json_object_get(caps, sets[i]);
                ASSERT_TRUE(array_has(s, "CAP_SYS_ADMIN"));
                ASSERT_TRUE(array_has(s, "CAP_NET_ADMIN"));
                ASSERT_EQ_INT(json_array_size(s), 41);
        }
        json_t *l = json_object_get(spec, "linux");
        ASSERT_EQ_INT(json_array_size(json_object_get(l, "maskedPaths")), 0);
        ASSERT_EQ_INT(json_array_size(json_object_get(l, "readonlyPaths")), 0);
        ASSERT_TRUE(!array_has(json_object_get(mount_at(spec, "/sys"), "options"), "ro"));
        ASSERT_TRUE(array_has(json_object_get(mount_at(spec, "/sys"), "options"), "rw"));
        ASSERT_TRUE(!array_has(json_object_get(mount_at(spec, "/sys/fs/cgroup"), "options"), "ro"));
        json_t *dev =
                json_array_get(json_object_get(json_object_get(l, "resources"), "devices"), 0);
        ASSERT_TRUE(json_is_true(json_object_get(dev, "allow")));
        ASSERT_TRUE(json_array_size(json_object_get(l, "devices")) >= 6);
        json_decref(spec);
        return 0;
}

TEST(ulimits_replace_the_nofile_default)
{
        struct kiln_exec_process p = base_process();
        const struct kiln_exec_ulimit ul[] = { { "nproc", 100, 200 }, { "NoFile", 10, 20 } };
        p.ulimits = ul;
        p.n_ulimits = 2;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        json_t *rl = json_object_get(json_object_get(spec, "process"), "rlimits");
        ASSERT_EQ_INT(json_array_size(rl), 2);
        ASSERT_STREQ(json_string_value(json_object_get(json_array_get(rl, 0), "type")),
                     "RLIMIT_NPROC");
        ASSERT_EQ_INT(json_integer_value(json_object_get(json_array_get(rl, 0), "hard")), 200);
        ASSERT_STREQ(json_string_value(json_object_get(json_array_get(rl, 1), "type")),
                     "RLIMIT_NOFILE");
        json_decref(spec);

        const struct kiln_exec_ulimit bad[] = { { "bogus", 1, 1 } };
        p.ulimits = bad;
        p.n_ulimits = 1;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));
        ASSERT_STREQ(kiln_error_message(err), "invalid ulimit 'bogus': unknown name");
        return 0;
}

TEST(invalid_descriptions_are_refused)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_exec_process p = base_process();

        p.n_args = 0;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));
        ASSERT_STREQ(kiln_error_message(err), "no command to run");

        p = base_process();
        const struct kiln_exec_mount rel[] = { { .type = "tmpfs", .target = "tmp" } };
        p.mounts = rel;
        p.n_mounts = 1;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));
        ASSERT_STREQ(kiln_error_message(err), "mount 0: target 'tmp' is not an absolute path");

        p = base_process();
        const struct kiln_exec_mount odd[] = { { .type = "overlay", .target = "/x" } };
        p.mounts = odd;
        p.n_mounts = 1;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));
        ASSERT_STREQ(kiln_error_message(err), "mount '/x': unsupported type 'overlay'");

        p = base_process();
        p.hostname = "bad host\n";
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));

        p = base_process();
        const struct kiln_exec_host hosts[] = { { "evil\n1.2.3.4 bank", "10.0.0.1" } };
        p.extra_hosts = hosts;
        p.n_extra_hosts = 1;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));
        ASSERT_STREQ(kiln_error_message(err), "extra host 0: invalid host name");

        p = base_process();
        const struct kiln_exec_host badip[] = { { "db", "10.0.0" } };
        p.extra_hosts = badip;
        p.n_extra_hosts = 1;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));

        p = base_process();
        const char *env[] = { "=x" };
        p.env = env;
        p.n_env = 1;
        ASSERT_TRUE(!kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err));
        return 0;
}

TEST(resolv_conf_drops_localhost_without_host_network)
{
        static const char src[] = "# generated\n"
                                  "nameserver 127.0.0.53\n"
                                  "nameserver ::1\n"
                                  "nameserver 10.1.1.1\n"
                                  "nameserver bogus\n"
                                  "search a.example b.example\n"
                                  "options ndots:2\n"
                                  "options edns0\n"
                                  "sortlist 10.0.0.0\n";
        _cleanup_free_ char *none = NULL, *host = NULL;

        kiln_exec_resolv_conf_filter(src, strlen(src), KILN_EXEC_NETWORK_NONE, &none);
        ASSERT_STREQ(none, "nameserver 10.1.1.1\n"
                           "search a.example b.example\n"
                           "options ndots:2 edns0\n"
                           "sortlist 10.0.0.0\n");
        kiln_exec_resolv_conf_filter(src, strlen(src), KILN_EXEC_NETWORK_HOST, &host);
        ASSERT_STREQ(host, "nameserver 127.0.0.53\n"
                           "nameserver ::1\n"
                           "nameserver 10.1.1.1\n"
                           "search a.example b.example\n"
                           "options ndots:2 edns0\n"
                           "sortlist 10.0.0.0\n");
        return 0;
}

TEST(resolv_conf_falls_back_to_public_servers)
{
        static const char src[] = "nameserver 127.0.0.1\nsearch lan\n";
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;

        kiln_exec_resolv_conf_filter(src, strlen(src), KILN_EXEC_NETWORK_NONE, &a);
        ASSERT_STREQ(a, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
                        "nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
                        "search lan\n");
        /* host networking keeps a local resolver, which works there */
        kiln_exec_resolv_conf_filter(src, strlen(src), KILN_EXEC_NETWORK_HOST, &b);
        ASSERT_STREQ(b, "nameserver 127.0.0.1\nsearch lan\n");
        /* no file at all */
        kiln_exec_resolv_conf_filter(NULL, 0, KILN_EXEC_NETWORK_HOST, &c);
        ASSERT_TRUE(startswith(c, "nameserver 8.8.8.8\n"));
        return 0;
}

TEST(hosts_file_names_the_host)
{
        const struct kiln_exec_host extra[] = { { "db", "10.0.0.5" }, { "v6", "fd00::1" } };
        _cleanup_free_ char *a = NULL, *b = NULL;

        kiln_exec_hosts_file(NULL, NULL, 0, &a);
        ASSERT_STREQ(a, "127.0.0.1\tlocalhost buildkitsandbox\n"
                        "::1\tlocalhost ip6-localhost ip6-loopback\n");
        kiln_exec_hosts_file("box", extra, 2, &b);
        ASSERT_STREQ(b, "127.0.0.1\tlocalhost box\n"
                        "::1\tlocalhost ip6-localhost ip6-loopback\n"
                        "10.0.0.5\tdb\n"
                        "fd00::1\tv6\n");
        return 0;
}

TEST(empty_hostname_is_the_default)
{
        struct kiln_exec_process p = base_process();
        p.hostname = "";
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        json_t *spec = kiln_exec_spec_new(&p, BUNDLE, 0, 0, NULL, 0, &err);

        ASSERT_TRUE(spec);
        ASSERT_STREQ(json_string_value(json_object_get(spec, "hostname")), "buildkitsandbox");
        json_decref(spec);
        return 0;
}
