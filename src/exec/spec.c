/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>

#include "base/buf.h"
#include "exec/exec.h"

/* The runtime-spec version written: the oldest both runc 1.1 and crun 1.8
 * understand fully, and everything kiln writes exists in it. */
#define OCI_VERSION "1.0.2"

/* tmpfs and shm sizes of containerd's default mounts. */
#define DEV_TMPFS_SIZE "size=65536k"

/* containerd's defaultUnixCaps, which BuildKit's runc executor keeps. */
static const char *const default_caps[] = {
        "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
        "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
        "CAP_KILL",    "CAP_AUDIT_WRITE",
};

/* Every capability Linux knows (up to CAP_CHECKPOINT_RESTORE), in number
 * order: security=insecure grants them all. */
static const char *const all_caps[] = {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
};

/* containerd's default masked and read-only paths. */
static const char *const masked_paths[] = {
        "/proc/acpi",          "/proc/asound",
        "/proc/kcore",         "/proc/keys",
        "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats",   "/proc/sched_debug",
        "/sys/firmware",       "/sys/devices/virtual/powercap",
        "/proc/scsi",
};

static const char *const readonly_paths[] = {
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

/* rlimit names runc and crun accept (RLIMIT_ + upper-cased ulimit name). */
static const char *const rlimit_names[] = {
        "AS",   "CORE",   "CPU",   "DATA", "FSIZE",  "LOCKS",  "MEMLOCK",    "MSGQUEUE",
        "NICE", "NOFILE", "NPROC", "RSS",  "RTPRIO", "RTTIME", "SIGPENDING", "STACK",
};

/* Device nodes security=insecure adds, as BuildKit's WithInsecureSpec
 * (loop devices: the first eight). */
static const struct {
        const char *path;
        const char *type;
        int64_t major, minor;
} insecure_devices[] = {
        { "/dev/kmsg", "c", 1, 11 },      { "/dev/cuse", "c", 10, 203 },
        { "/dev/fuse", "c", 10, 229 },    { "/dev/kvm", "c", 10, 232 },
        { "/dev/net/tun", "c", 10, 200 }, { "/dev/loop-control", "c", 10, 237 },
        { "/dev/loop0", "b", 7, 0 },      { "/dev/loop1", "b", 7, 1 },
        { "/dev/loop2", "b", 7, 2 },      { "/dev/loop3", "b", 7, 3 },
        { "/dev/loop4", "b", 7, 4 },      { "/dev/loop5", "b", 7, 5 },
        { "/dev/loop6", "b", 7, 6 },      { "/dev/loop7", "b", 7, 7 },
};

static json_t *string_array(const char *const *v, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

/* Options list from a NULL-terminated argument list. */
static json_t *options(const char *first, ...)
{
        json_t *a = json_array();
        va_list ap;
        va_start(ap, first);
        for (const char *s = first; s; s = va_arg(ap, const char *))
                json_array_append_new(a, json_string(s));
        va_end(ap);
        return a;
}

static json_t *mount_new(const char *dest, const char *type, const char *source, json_t *opts)
{
        return json_pack("{s:s, s:s, s:s, s:o}", "destination", dest, "type", type, "source",
                         source, "options", opts);
}

/* Adds m to mounts; a mount with the same destination already there is
 * replaced in place (BuildKit's dedupMounts: the last one wins). */
static void mounts_add(json_t *mounts, json_t *m)
{
        const char *dest = json_string_value(json_object_get(m, "destination"));
        size_t i;
        json_t *old;
        json_array_foreach (mounts, i, old) {
                if (streq(json_string_value(json_object_get(old, "destination")), dest)) {
                        json_array_set_new(mounts, i, m);
                        return;
                }
        }
        json_array_append_new(mounts, m);
}

static bool valid_utf8_text(const char *s)
{
        /* jansson refuses invalid UTF-8 with a NULL value: catch it here to
         * name the field instead. */
        json_t *j = json_string(s);
        if (!j)
                return false;
        json_decref(j);
        return true;
}

static int env_key_len(const char *e)
{
        const char *eq = strchr(e, '=');
        return (int) (eq ? (size_t) (eq - e) : strlen(e));
}

/* The environment with duplicates folded (a later value replaces an
 * earlier one in place, as containerd's WithEnv) and PATH added last when
 * missing. */
static json_t *env_new(const struct kiln_exec_process *p)
{
        json_t *a = json_array();
        bool has_path = false;
        for (size_t i = 0; i < p->n_env; i++) {
                const char *e = p->env[i];
                int kl = env_key_len(e);
                if (kl == 4 && startswith(e, "PATH"))
                        has_path = true;
                size_t j;
                json_t *old;
                bool replaced = false;
                json_array_foreach (a, j, old) {
                        const char *o = json_string_value(old);
                        if (env_key_len(o) == kl && strncmp(o, e, (size_t) kl) == 0) {
                                json_array_set_new(a, j, json_string(e));
                                replaced = true;
                                break;
                        }
                }
                if (!replaced)
                        json_array_append_new(a, json_string(e));
        }
        if (!has_path)
                json_array_append_new(a, json_string("PATH=" KILN_EXEC_DEFAULT_PATH));
        return a;
}

static int rlimits_new(const struct kiln_exec_process *p, json_t **ret, struct kiln_error **err)
{
        json_t *a = json_array();
        if (p->n_ulimits == 0) {
                json_array_append_new(a, json_pack("{s:s, s:I, s:I}", "type", "RLIMIT_NOFILE",
                                                   "hard", (json_int_t) KILN_EXEC_NOFILE_LIMIT,
                                                   "soft", (json_int_t) KILN_EXEC_NOFILE_LIMIT));
                *ret = a;
                return 0;
        }
        for (size_t i = 0; i < p->n_ulimits; i++) {
                const struct kiln_exec_ulimit *u = &p->ulimits[i];
                char up[16];
                size_t l = u->name ? strlen(u->name) : 0;
                bool known = false;
                if (l > 0 && l < sizeof(up)) {
                        for (size_t k = 0; k <= l; k++)
                                up[k] = ascii_toupper(u->name[k]);
                        for (size_t k = 0; k < ELEMENTSOF(rlimit_names); k++)
                                known = known || streq(up, rlimit_names[k]);
                }
                if (!known) {
                        json_decref(a);
                        _cleanup_free_ char *q =
                                kiln_quote_untrusted(u->name ? u->name : "", l, 64);
                        return kiln_error_set(err, -EINVAL, "invalid ulimit '%s': unknown name", q);
                }
                if (u->soft > u->hard) {
                        json_decref(a);
                        return kiln_error_set(err, -EINVAL,
                                              "invalid ulimit '%s': soft limit %" PRIu64
                                              " is above hard limit %" PRIu64,
                                              u->name, u->soft, u->hard);
                }
                _cleanup_free_ char *type = kiln_xasprintf("RLIMIT_%s", up);
                /* JSON numbers in jansson are signed: unlimited (all ones) is
                 * written as -1, which runtimes read back as the same bits. */
                json_array_append_new(a, json_pack("{s:s, s:I, s:I}", "type", type, "hard",
                                                   (json_int_t) u->hard, "soft",
                                                   (json_int_t) u->soft));
        }
        *ret = a;
        return 0;
}

static json_t *capabilities_new(bool insecure)
{
        if (!insecure) {
                const size_t n = ELEMENTSOF(default_caps);
                return json_pack("{s:o, s:o, s:o}", "bounding", string_array(default_caps, n),
                                 "effective", string_array(default_caps, n), "permitted",
                                 string_array(default_caps, n));
        }
        const size_t n = ELEMENTSOF(all_caps);
        return json_pack("{s:o, s:o, s:o, s:o, s:o}", "bounding", string_array(all_caps, n),
                         "effective", string_array(all_caps, n), "inheritable",
                         string_array(all_caps, n), "permitted", string_array(all_caps, n),
                         "ambient", string_array(all_caps, n));
}

static int user_mount_new(const struct kiln_exec_mount *m, size_t idx, json_t **ret,
                          struct kiln_error **err)
{
        if (!m->target || m->target[0] != '/' || !valid_utf8_text(m->target))
                return kiln_error_set(err, -EINVAL,
                                      "mount %zu: target '%s' is not an absolute path", idx,
                                      m->target ? m->target : "");
        if (m->type && streq(m->type, "bind")) {
                if (!m->source || m->source[0] != '/' || !valid_utf8_text(m->source))
                        return kiln_error_set(err, -EINVAL,
                                              "mount '%s': source '%s' is not an absolute path",
                                              m->target, m->source ? m->source : "");
                json_t *o = options("rbind", NULL);
                if (m->readonly)
                        json_array_append_new(o, json_string("ro"));
                *ret = mount_new(m->target, "bind", m->source, o);
                return 0;
        }
        if (m->type && streq(m->type, "tmpfs")) {
                json_t *o = options("nosuid", NULL);
                if (m->readonly)
                        json_array_append_new(o, json_string("ro"));
                if (m->tmpfs_size > 0) {
                        _cleanup_free_ char *s = kiln_xasprintf("size=%" PRIu64, m->tmpfs_size);
                        json_array_append_new(o, json_string(s));
                }
                if (m->tmpfs_mode != 0) {
                        _cleanup_free_ char *s = kiln_xasprintf("mode=%o", m->tmpfs_mode & 07777);
                        json_array_append_new(o, json_string(s));
                }
                *ret = mount_new(m->target, "tmpfs", "tmpfs", o);
                return 0;
        }
        return kiln_error_set(err, -EINVAL, "mount '%s': unsupported type '%s'", m->target,
                              m->type ? m->type : "");
}

static json_t *default_mounts(const char *bundle_dir, bool insecure)
{
        json_t *mounts = json_array();
        json_array_append_new(mounts, mount_new("/proc", "proc", "proc",
                                                options("nosuid", "noexec", "nodev", NULL)));
        json_array_append_new(mounts, mount_new("/dev", "tmpfs", "tmpfs",
                                                options("nosuid", "strictatime", "mode=755",
                                                        DEV_TMPFS_SIZE, NULL)));
        json_array_append_new(mounts,
                              mount_new("/dev/pts", "devpts", "devpts",
                                        options("nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                                "mode=0620", "gid=5", NULL)));
        json_array_append_new(mounts, mount_new("/dev/shm", "tmpfs", "shm",
                                                options("nosuid", "noexec", "nodev", "mode=1777",
                                                        DEV_TMPFS_SIZE, NULL)));
        json_array_append_new(mounts, mount_new("/dev/mqueue", "mqueue", "mqueue",
                                                options("nosuid", "noexec", "nodev", NULL)));
        /* security=insecure: writable /sys and cgroup fs (WithWriteableSysfs,
         * WithWriteableCgroupfs). */
        const char *ro = insecure ? "rw" : "ro";
        json_array_append_new(mounts, mount_new("/sys", "sysfs", "sysfs",
                                                options("nosuid", "noexec", "nodev", ro, NULL)));
        json_array_append_new(mounts, mount_new("/sys/fs/cgroup", "cgroup", "cgroup",
                                                options(ro, "nosuid", "noexec", "nodev", NULL)));
        static const char *const files[][2] = {
                { "resolv.conf", "/etc/resolv.conf" },
                { "hosts", "/etc/hosts" },
                { "hostname", "/etc/hostname" },
        };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *src = kiln_xasprintf("%s/%s", bundle_dir, files[i][0]);
                json_array_append_new(mounts, mount_new(files[i][1], "bind", src,
                                                        options("nosuid", "noexec", "nodev",
                                                                "rbind", "ro", NULL)));
        }
        return mounts;
}

/* BuildKit's cgroup path: "/buildkit/<id>" by default (containerd's
 * namespace), under cgroup_parent when given ("x.slice:" for systemd). */
static char *cgroups_path(const char *parent, const char *id)
{
        if (!parent || !*parent)
                return kiln_xasprintf("/buildkit/%s", id);
        size_t l = strlen(parent);
        if (strstr(parent, ".slice") && parent[l - 1] == ':')
                return kiln_xasprintf("%s%s", parent, id);
        while (l > 0 && parent[l - 1] == '/')
                l--;
        const char *p = parent;
        while (*p == '/' && l > 0) {
                p++;
                l--;
        }
        if (l == 0)
                return kiln_xasprintf("/buildkit/%s", id);
        return kiln_xasprintf("/%.*s/buildkit/%s", (int) l, p, id);
}

static json_t *linux_new(const struct kiln_exec_process *p, const char *id)
{
        json_t *ns = json_array();
        static const char *const types[] = { "pid", "ipc", "uts", "mount", "network" };
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                if (streq(types[i], "network") && p->network == KILN_EXEC_NETWORK_HOST)
                        continue;
                if (streq(types[i], "network") && p->netns_path) {
                        json_array_append_new(ns, json_pack("{s:s, s:s}", "type", types[i], "path",
                                                            p->netns_path));
                        continue;
                }
                json_array_append_new(ns, json_pack("{s:s}", "type", types[i]));
        }

        json_t *devices_cgroup;
        json_t *devices = json_array();
        if (p->insecure) {
                devices_cgroup =
                        json_pack("[{s:b, s:s, s:s}, {s:b, s:s, s:s}]", "allow", 1, "type", "c",
                                  "access", "rwm", "allow", 1, "type", "b", "access", "rwm");
                for (size_t i = 0; i < ELEMENTSOF(insecure_devices); i++)
                        json_array_append_new(
                                devices,
                                json_pack("{s:s, s:s, s:I, s:I}", "path", insecure_devices[i].path,
                                          "type", insecure_devices[i].type, "major",
                                          (json_int_t) insecure_devices[i].major, "minor",
                                          (json_int_t) insecure_devices[i].minor));
        } else
                devices_cgroup = json_pack("[{s:b, s:s}]", "allow", 0, "access", "rwm");

        _cleanup_free_ char *cg = cgroups_path(p->cgroup_parent, id);
        json_t *l = json_pack(
                "{s:o, s:o, s:s, s:{s:o}, s:o}", "namespaces", ns, "devices", devices,
                "cgroupsPath", cg, "resources", "devices", devices_cgroup, "maskedPaths",
                p->insecure ? json_array() : string_array(masked_paths, ELEMENTSOF(masked_paths)));
        json_object_set_new(l, "readonlyPaths",
                            p->insecure ? json_array()
                                        : string_array(readonly_paths, ELEMENTSOF(readonly_paths)));
        return l;
}

static bool is_localhost_ns(const char *addr)
{
        unsigned char buf[16];
        if (inet_pton(AF_INET, addr, buf) == 1)
                return buf[0] == 127;
        if (inet_pton(AF_INET6, addr, buf) == 1) {
                static const unsigned char loop6[16] = { [15] = 1 };
                static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
                if (memcmp(buf, loop6, 16) == 0)
                        return true;
                /* ::ffff:127.x.y.z is loopback too (Go's IsLoopback on an
                 * IPv4-mapped address). */
                return memcmp(buf, mapped, 12) == 0 && buf[12] == 127;
        }
        return false;
}

static bool valid_ns(const char *addr)
{
        unsigned char buf[16];
        return inet_pton(AF_INET, addr, buf) == 1 || inet_pton(AF_INET6, addr, buf) == 1;
}

static int check_process(const struct kiln_exec_process *p, const char *bundle_dir,
                         struct kiln_error **err)
{
        if (!p->rootfs || p->rootfs[0] != '/' || !valid_utf8_text(p->rootfs))
                return kiln_error_set(err, -EINVAL, "root file system '%s' is not an absolute path",
                                      p->rootfs ? p->rootfs : "");
        if (!bundle_dir || bundle_dir[0] != '/' || !valid_utf8_text(bundle_dir))
                return kiln_error_set(err, -EINVAL, "bundle '%s' is not an absolute path",
                                      bundle_dir ? bundle_dir : "");
        if (p->n_args == 0 || !p->args)
                return kiln_error_set(err, -EINVAL, "no command to run");
        if (p->n_args > KILN_EXEC_MAX_ARGS)
                return kiln_error_set(err, -E2BIG, "too many arguments: %zu (limit %u)", p->n_args,
                                      KILN_EXEC_MAX_ARGS);
        if (p->n_env > KILN_EXEC_MAX_ENV)
                return kiln_error_set(err, -E2BIG, "too many environment variables: %zu (limit %u)",
                                      p->n_env, KILN_EXEC_MAX_ENV);
        if (p->n_mounts > KILN_EXEC_MAX_MOUNTS)
                return kiln_error_set(err, -E2BIG, "too many mounts: %zu (limit %u)", p->n_mounts,
                                      KILN_EXEC_MAX_MOUNTS);
        if (p->n_extra_hosts > KILN_EXEC_MAX_EXTRA_HOSTS)
                return kiln_error_set(err, -E2BIG, "too many extra hosts: %zu (limit %u)",
                                      p->n_extra_hosts, KILN_EXEC_MAX_EXTRA_HOSTS);
        if (p->n_ulimits > KILN_EXEC_MAX_ULIMITS)
                return kiln_error_set(err, -E2BIG, "too many ulimits: %zu (limit %u)", p->n_ulimits,
                                      KILN_EXEC_MAX_ULIMITS);
        for (size_t i = 0; i < p->n_args; i++)
                if (!p->args[i] || !valid_utf8_text(p->args[i]))
                        return kiln_error_set(err, -EINVAL, "argument %zu is not valid UTF-8", i);
        for (size_t i = 0; i < p->n_env; i++)
                if (!p->env[i] || !valid_utf8_text(p->env[i]) || env_key_len(p->env[i]) == 0)
                        return kiln_error_set(err, -EINVAL,
                                              "environment variable %zu is not NAME=VALUE", i);
        if (p->cwd && *p->cwd && (p->cwd[0] != '/' || !valid_utf8_text(p->cwd)))
                return kiln_error_set(err, -EINVAL, "working directory '%s' is not absolute",
                                      p->cwd);
        if (p->hostname && *p->hostname) {
                size_t l = strlen(p->hostname);
                if (l == 0 || l > KILN_EXEC_MAX_HOSTNAME)
                        return kiln_error_set(err, -EINVAL, "invalid hostname: length %zu", l);
                for (size_t i = 0; i < l; i++) {
                        char c = p->hostname[i];
                        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid hostname: character 0x%02x",
                                                      (unsigned char) c);
                }
        }
        for (size_t i = 0; i < p->n_extra_hosts; i++) {
                const struct kiln_exec_host *h = &p->extra_hosts[i];
                if (!h->ip || !valid_ns(h->ip))
                        return kiln_error_set(err, -EINVAL, "extra host %zu: invalid IP address",
                                              i);
                bool ok = h->name && *h->name && strlen(h->name) <= 255;
                for (const char *c = h->name; ok && *c; c++)
                        ok = (unsigned char) *c > ' ' && *c != 0x7f;
                if (!ok)
                        return kiln_error_set(err, -EINVAL, "extra host %zu: invalid host name", i);
        }
        return 0;
}

json_t *kiln_exec_spec_new(const struct kiln_exec_process *p, const char *bundle_dir, uint32_t uid,
                           uint32_t gid, const uint32_t *gids, size_t n_gids,
                           struct kiln_error **err)
{
        if (check_process(p, bundle_dir, err) < 0)
                return NULL;

        json_t *rlimits = NULL;
        if (rlimits_new(p, &rlimits, err) < 0)
                return NULL;

        /* The primary gid first among the additional ones, once
         * (BuildKit's ensureAdditionalGids). */
        json_t *add = json_array();
        json_array_append_new(add, json_integer(gid));
        for (size_t i = 0; i < n_gids; i++)
                if (gids[i] != gid)
                        json_array_append_new(add, json_integer(gids[i]));

        json_t *process =
                json_pack("{s:b, s:{s:I, s:I, s:o}, s:o, s:o, s:s, s:o, s:o, s:b}", "terminal", 0,
                          "user", "uid", (json_int_t) uid, "gid", (json_int_t) gid,
                          "additionalGids", add, "args", string_array(p->args, p->n_args), "env",
                          env_new(p), "cwd", p->cwd && *p->cwd ? p->cwd : "/", "capabilities",
                          capabilities_new(p->insecure), "rlimits", rlimits, "noNewPrivileges", 0);

        json_t *mounts = default_mounts(bundle_dir, p->insecure);
        for (size_t i = 0; i < p->n_mounts; i++) {
                json_t *m = NULL;
                if (user_mount_new(&p->mounts[i], i, &m, err) < 0) {
                        json_decref(process);
                        json_decref(mounts);
                        return NULL;
                }
                mounts_add(mounts, m);
        }

        const char *id = strrchr(bundle_dir, '/') + 1;
        if (!*id)
                id = "kiln";
        return json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", OCI_VERSION,
                         "process", process, "root", "path", p->rootfs, "readonly", 0, "hostname",
                         p->hostname && *p->hostname ? p->hostname : KILN_EXEC_DEFAULT_HOSTNAME,
                         "mounts", mounts, "linux", linux_new(p, id));
}

void kiln_exec_resolv_conf_filter(const char *src, size_t n, enum kiln_exec_network network,
                                  char **ret)
{
        /* As BuildKit's resolvconf package: name servers, the last search,
         * the options and anything else, regenerated in that order; invalid
         * name servers dropped. */
        struct kiln_buf ns = KILN_BUF_INIT(SIZE_MAX), search = KILN_BUF_INIT(SIZE_MAX),
                        opts = KILN_BUF_INIT(SIZE_MAX), other = KILN_BUF_INIT(SIZE_MAX);
        size_t n_ns = 0, n_opts = 0;
        const char *p = src ? src : "", *end = src ? src + n : p;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *e = nl ? nl : end;
                _cleanup_free_ char *line = kiln_xstrndup(p, (size_t) (e - p));
                p = nl ? nl + 1 : end;
                size_t ll = strlen(line);
                if (ll > 0 && line[ll - 1] == '\r')
                        line[--ll] = '\0';
                if (ll == 0 || line[0] == '#' || line[0] == ';')
                        continue;
                /* Fields split on ASCII white space. */
                char *fields[64];
                size_t nf = 0;
                _cleanup_free_ char *copy = kiln_xstrdup(line);
                for (char *s = copy; *s && nf < ELEMENTSOF(fields);) {
                        while (*s && isspace((unsigned char) *s))
                                s++;
                        if (!*s)
                                break;
                        fields[nf++] = s;
                        while (*s && !isspace((unsigned char) *s))
                                s++;
                        if (*s)
                                *s++ = '\0';
                }
                if (nf == 0)
                        continue;
                if (streq(fields[0], "nameserver")) {
                        if (nf < 2 || !valid_ns(fields[1]))
                                continue;
                        if (network != KILN_EXEC_NETWORK_HOST && is_localhost_ns(fields[1]))
                                continue;
                        (void) kiln_buf_printf(&ns, "nameserver %s\n", fields[1]);
                        n_ns++;
                } else if (streq(fields[0], "search") || streq(fields[0], "domain")) {
                        if (nf < 2)
                                continue;
                        kiln_buf_reset(&search);
                        for (size_t i = 1; i < nf; i++)
                                (void) kiln_buf_printf(&search, "%s%s", i > 1 ? " " : "",
                                                       fields[i]);
                } else if (streq(fields[0], "options")) {
                        for (size_t i = 1; i < nf; i++)
                                (void) kiln_buf_printf(&opts, "%s%s", n_opts++ ? " " : "",
                                                       fields[i]);
                } else
                        (void) kiln_buf_printf(&other, "%s\n", line);
        }
        /* Without a usable name server, Google's public ones (BuildKit does
         * this for host networking too when the host has none). */
        if (n_ns == 0)
                (void) kiln_buf_puts(&ns, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
                                          "nameserver 2001:4860:4860::8888\n"
                                          "nameserver 2001:4860:4860::8844\n");
        struct kiln_buf out = KILN_BUF_INIT(SIZE_MAX);
        (void) kiln_buf_append(&out, ns.data, ns.len);
        if (search.len > 0)
                (void) kiln_buf_printf(&out, "search %s\n", search.data);
        if (opts.len > 0)
                (void) kiln_buf_printf(&out, "options %s\n", opts.data);
        if (other.len > 0)
                (void) kiln_buf_append(&out, other.data, other.len);
        kiln_buf_release(&ns);
        kiln_buf_release(&search);
        kiln_buf_release(&opts);
        kiln_buf_release(&other);
        *ret = kiln_buf_steal(&out);
}

void kiln_exec_hosts_file(const char *hostname, const struct kiln_exec_host *extra_hosts,
                          size_t n_extra_hosts, char **ret)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        (void) kiln_buf_printf(&b,
                               "127.0.0.1\tlocalhost %s\n"
                               "::1\tlocalhost ip6-localhost ip6-loopback\n",
                               hostname && *hostname ? hostname : KILN_EXEC_DEFAULT_HOSTNAME);
        for (size_t i = 0; i < n_extra_hosts; i++)
                (void) kiln_buf_printf(&b, "%s\t%s\n", extra_hosts[i].ip, extra_hosts[i].name);
        *ret = kiln_buf_steal(&b);
}
