/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/openat2.h>
#include <sys/resource.h>
#include <sched.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/passwd.h"
#include "exec/exec.h"

/* Bytes read from an output pipe at a time. */
#define OUTPUT_CHUNK (64u << 10)
/* How long a runtime helper command (kill, delete) may take. */
#define KILN_EXEC_HELPER_TIMEOUT_MS 10000
/* After a cancel, how often the kill is repeated while the runtime has not
 * exited (the container may not have existed yet at the first one), and
 * when the runtime process itself is killed. */
#define KILN_EXEC_KILL_RETRY_MS   200
#define KILN_EXEC_KILL_TIMEOUT_MS 10000
/* Random bytes in a container id (hex-encoded). */
#define ID_BYTES 10

#define RUNTIME_ENV_PATH     "PATH=" KILN_EXEC_DEFAULT_PATH
#define HOST_RESOLV_CONF     "/etc/resolv.conf"
#define RESOLVED_RESOLV_CONF "/run/systemd/resolve/resolv.conf"

static bool is_cancelled(const atomic_bool *cancel)
{
        return cancel && atomic_load(cancel);
}

/* The runtime binary's path: as given when it has a '/', else found in
 * PATH (the daemon's, or the default). */
static int find_binary(const char *name, char **ret, struct kiln_error **err)
{
        if (strchr(name, '/')) {
                if (access(name, X_OK) < 0)
                        return kiln_error_set(err, -errno, "runtime '%s': %s", name,
                                              strerror(errno));
                *ret = kiln_xstrdup(name);
                return 0;
        }
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = KILN_EXEC_DEFAULT_PATH;
        for (const char *p = path; *p;) {
                const char *c = strchr(p, ':');
                size_t l = c ? (size_t) (c - p) : strlen(p);
                if (l > 0) {
                        _cleanup_free_ char *cand = kiln_xasprintf("%.*s/%s", (int) l, p, name);
                        struct stat st;
                        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
                            access(cand, X_OK) == 0) {
                                *ret = TAKE_PTR(cand);
                                return 0;
                        }
                }
                p = c ? c + 1 : p + l;
        }
        return kiln_error_set(err, -ENOENT, "runtime '%s': executable file not found in $PATH",
                              name);
}

static bool is_crun(const char *binary)
{
        const char *b = strrchr(binary, '/');
        return streq(b ? b + 1 : binary, "crun");
}

/* The child's side of spawn(): only async-signal-safe calls, since the
 * daemon is multi-threaded. Failures are reported through errfd. */
_noreturn_ static void child_exec(const char *path, char *const argv[], char *const envp[],
                                  int fds[3], int errfd, bool private_mounts)
{
        int e;
        sigset_t none;
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) sigaction(sig, &dfl, NULL);
        /* Its own process group: a terminal's ^C to the daemon's group must
         * not hit the runtime half-way. */
        (void) setpgid(0, 0);

        /* Move the three ends out of the way of 0..2 first, then into place. */
        int tmp[3];
        for (int i = 0; i < 3; i++) {
                tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
                if (tmp[i] < 0)
                        goto fail;
        }
        for (int i = 0; i < 3; i++)
                if (dup2(tmp[i], i) < 0)
                        goto fail;
        /* Nothing else of the daemon's reaches the runtime, even an fd some
         * library opened without O_CLOEXEC. */
        if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                goto fail;

        if (private_mounts) {
                /* crun refuses cgroup v1 hybrid hosts where the unified
                 * hierarchy is also mounted: hide it in a mount namespace of
                 * the runtime's own. */
                if (unshare(CLONE_NEWNS) < 0)
                        goto fail;
                if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                        goto fail;
                if (umount2("/sys/fs/cgroup/unified", MNT_DETACH) < 0 && errno != EINVAL &&
                    errno != ENOENT)
                        goto fail;
        }
        execve(path, argv, envp);
fail:
        e = errno;
        (void) !write(errfd, &e, sizeof(e));
        _exit(127);
}

/* Starts path with argv, stdin/stdout/stderr on fds. Returns the pid, or
 * -errno with *err set when the process could not be started. */
static int spawn(const char *path, char *const argv[], int fds[3], bool private_mounts,
                 pid_t *ret_pid, struct kiln_error **err)
{
        static char *const envp[] = { (char *) RUNTIME_ENV_PATH, NULL };
        int ep[2];
        if (pipe2(ep, O_CLOEXEC) < 0)
                return kiln_error_set(err, -errno, "start '%s': pipe: %s", path, strerror(errno));
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                close(ep[0]);
                close(ep[1]);
                return kiln_error_set(err, r, "start '%s': fork: %s", path, strerror(-r));
        }
        if (pid == 0) {
                close(ep[0]);
                child_exec(path, argv, envp, fds, ep[1], private_mounts);
        }
        close(ep[1]);
        int e = 0;
        ssize_t n;
        do
                n = read(ep[0], &e, sizeof(e));
        while (n < 0 && errno == EINTR);
        close(ep[0]);
        if (n == (ssize_t) sizeof(e)) {
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                return kiln_error_set(err, -e, "start '%s': %s", path, strerror(e));
        }
        *ret_pid = pid;
        return 0;
}

/* Reaps pid into *status; -errno when it cannot (ECHILD: SIGCHLD ignored,
 * which would auto-reap and hide the exit code). */
static int reap(pid_t pid, int *status)
{
        while (waitpid(pid, status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static int status_to_code(int status)
{
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return 255;
}

/* Waits up to timeout_ms for pid, killing it (SIGKILL) when it takes
 * longer. Returns its exit code. */
static int wait_bounded(pid_t pid, int timeout_ms)
{
        int pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (pidfd >= 0) {
                struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
                int r;
                do
                        r = poll(&pfd, 1, timeout_ms);
                while (r < 0 && errno == EINTR);
                if (r == 0)
                        (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                close(pidfd);
        }
        int status = 0;
        int r = reap(pid, &status);
        return r < 0 ? r : status_to_code(status);
}

struct runtime_cmd {
        char *path;
        char *root; /* --root */
        bool private_mounts;
};

/* Runs `<runtime> --root <root> <args...>` with no input and its output
 * dropped; returns its exit code or -errno. */
static int runtime_call(const struct runtime_cmd *rc, const char *const *args, size_t n)
{
        char *argv[8];
        if (n + 4 > ELEMENTSOF(argv))
                return -E2BIG;
        argv[0] = rc->path;
        argv[1] = (char *) "--root";
        argv[2] = rc->root;
        for (size_t i = 0; i < n; i++)
                argv[3 + i] = (char *) args[i];
        argv[3 + n] = NULL;
        _cleanup_close_ int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0)
                return -errno;
        int fds[3] = { null, null, null };
        pid_t pid;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        int r = spawn(rc->path, argv, fds, rc->private_mounts, &pid, &e);
        if (r < 0)
                return r;
        return wait_bounded(pid, KILN_EXEC_HELPER_TIMEOUT_MS);
}

static void container_kill(const struct runtime_cmd *rc, const char *id)
{
        const char *args[] = { "kill", id, "KILL" };
        (void) runtime_call(rc, args, ELEMENTSOF(args));
}

static void container_delete(const struct runtime_cmd *rc, const char *id)
{
        const char *args[] = { "delete", "--force", id };
        (void) runtime_call(rc, args, ELEMENTSOF(args));
}

/* Whether the runtime still keeps state for container id (runc and crun
 * keep <root>/<id>): a runtime that ran it to its end removed it, and a
 * `delete` would only cost another start of the runtime. */
static bool container_state_exists(const struct runtime_cmd *rc, const char *id)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/%s", rc->root, id);

        return faccessat(AT_FDCWD, dir, F_OK, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
}

static int write_file_at(int dirfd, const char *name, const char *data, size_t n, unsigned mode,
                         const char *bundle, struct kiln_error **err)
{
        _cleanup_close_ int fd =
                openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return kiln_error_set(err, -errno, "write '%s/%s': %s", bundle, name,
                                      strerror(errno));
        if (fchmod(fd, mode) < 0)
                return kiln_error_set(err, -errno, "write '%s/%s': %s", bundle, name,
                                      strerror(errno));
        int r = kiln_write_all(fd, data, n);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s/%s': %s", bundle, name, strerror(-r));
        return 0;
}

/* Whether text lists exactly one name server and it is 127.0.0.53
 * (systemd-resolved's stub, unreachable from another network namespace). */
static bool only_resolved_stub(const char *text)
{
        size_t count = 0;
        bool stub = false;
        for (const char *p = text; *p;) {
                const char *nl = strchr(p, '\n');
                size_t l = nl ? (size_t) (nl - p) : strlen(p);
                if (l > 11 && strncmp(p, "nameserver", 10) == 0 &&
                    (p[10] == ' ' || p[10] == '\t')) {
                        const char *a = p + 11;
                        while (*a == ' ' || *a == '\t')
                                a++;
                        size_t al = 0;
                        while (a + al < p + l && a[al] != ' ' && a[al] != '\t' && a[al] != '\r')
                                al++;
                        count++;
                        stub = al == 10 && strncmp(a, "127.0.0.53", 10) == 0;
                }
                p = nl ? nl + 1 : p + l;
        }
        return count == 1 && stub;
}

static int read_resolv_conf(const struct kiln_exec_process *p, char **ret, struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_EXEC_MAX_RESOLV_CONF);
        const char *path = p->resolv_conf ? p->resolv_conf : HOST_RESOLV_CONF;
        int r = kiln_read_file_at(AT_FDCWD, path, &b);
        if (r == -ENOENT && !p->resolv_conf)
                r = 0; /* no host file: the default name servers */
        if (r >= 0 && !p->resolv_conf && p->network != KILN_EXEC_NETWORK_HOST && b.data &&
            only_resolved_stub(b.data)) {
                struct kiln_buf alt = KILN_BUF_INIT(KILN_EXEC_MAX_RESOLV_CONF);
                if (kiln_read_file_at(AT_FDCWD, RESOLVED_RESOLV_CONF, &alt) >= 0) {
                        kiln_buf_release(&b);
                        b = alt;
                } else
                        kiln_buf_release(&alt);
        }
        if (r < 0) {
                char buf[64];
                kiln_buf_release(&b);
                return kiln_error_set(err, r, "read '%s': %s", path,
                                      kiln_read_file_strerror(r, KILN_EXEC_MAX_RESOLV_CONF, buf));
        }
        kiln_exec_resolv_conf_filter(b.data, b.len, p->network, ret);
        kiln_buf_release(&b);
        return 0;
}

/* Whether this process may raise a hard rlimit (CAP_SYS_RESOURCE). */
static bool can_raise_rlimits(void)
{
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[2] = { 0 };
        if (syscall(SYS_capget, &h, d) < 0)
                return false;
        return d[CAP_SYS_RESOURCE / 32].effective & (1u << (CAP_SYS_RESOURCE % 32));
}

/* The default NOFILE limit can only be granted up to the daemon's own hard
 * limit when the daemon lacks CAP_SYS_RESOURCE (a restricted daemon in a
 * container): the runtime would fail to start every step otherwise. */
static void clamp_default_nofile(json_t *spec)
{
        struct rlimit rl;
        if (can_raise_rlimits() || getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
            rl.rlim_max >= KILN_EXEC_NOFILE_LIMIT)
                return;
        json_t *r = json_array_get(json_object_get(json_object_get(spec, "process"), "rlimits"), 0);
        json_object_set_new(r, "hard", json_integer((json_int_t) rl.rlim_max));
        json_object_set_new(r, "soft", json_integer((json_int_t) rl.rlim_max));
}

/* Files the default mounts bind over: the runtime creates an empty file
 * (and /etc) when the image lacks them, which must not stay in the step's
 * result, as BuildKit's mount stub cleaner ensures. */
static const char *const stub_files[] = { "resolv.conf", "hosts", "hostname" };

struct stubs {
        bool etc_missing;
        bool missing[ELEMENTSOF(stub_files)];
};

static int open_etc(int rootfd)
{
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, rootfd, "etc", &how, sizeof(how));
        return fd < 0 ? -errno : (int) fd;
}

static void stubs_collect(int rootfd, struct stubs *st)
{
        *st = (struct stubs){ 0 };
        _cleanup_close_ int etc = open_etc(rootfd);
        if (etc == -ENOENT) {
                st->etc_missing = true;
                for (size_t i = 0; i < ELEMENTSOF(stub_files); i++)
                        st->missing[i] = true;
                return;
        }
        if (etc < 0)
                return;
        for (size_t i = 0; i < ELEMENTSOF(stub_files); i++) {
                struct stat sb;
                st->missing[i] = fstatat(etc, stub_files[i], &sb, AT_SYMLINK_NOFOLLOW) < 0 &&
                                 errno == ENOENT;
        }
}

static void stubs_remove(int rootfd, const struct stubs *st)
{
        _cleanup_close_ int etc = open_etc(rootfd);
        if (etc < 0)
                return;
        for (size_t i = 0; i < ELEMENTSOF(stub_files); i++) {
                struct stat sb;
                /* Only what is still an empty regular file: the step may
                 * have written a real one (through its own mount). */
                if (st->missing[i] && fstatat(etc, stub_files[i], &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISREG(sb.st_mode) && sb.st_size == 0)
                        (void) unlinkat(etc, stub_files[i], 0);
        }
        if (st->etc_missing) {
                close(etc);
                etc = -1;
                (void) unlinkat(rootfd, "etc", AT_REMOVEDIR); /* only when empty */
        }
}

static void new_id(char out[2 * ID_BYTES + 1])
{
        unsigned char raw[ID_BYTES];
        size_t got = 0;
        while (got < sizeof(raw)) {
                ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        abort(); /* no entropy source at all: nothing sane to do */
                }
                got += (size_t) n;
        }
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < sizeof(raw); i++) {
                out[2 * i] = hex[raw[i] >> 4];
                out[2 * i + 1] = hex[raw[i] & 15];
        }
        out[2 * ID_BYTES] = '\0';
}

/* Runs the container and pumps its output until the runtime exits (and
 * the pipes close), or until cancelled. */
static int run_container(const struct runtime_cmd *rc, const char *bundle, const char *id,
                         kiln_exec_output_fn out, void *userdata, const atomic_bool *cancel,
                         int *ret_exit_code, struct kiln_error **err)
{
        int op[2] = { -1, -1 }, ep[2] = { -1, -1 };
        _cleanup_close_ int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0)
                return kiln_error_set(err, -errno, "open '/dev/null': %s", strerror(errno));
        if (pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
                int r = -errno;
                if (op[0] >= 0) {
                        close(op[0]);
                        close(op[1]);
                }
                return kiln_error_set(err, r, "run container: pipe: %s", strerror(-r));
        }
        char *argv[] = {
                rc->path,        (char *) "--root", rc->root, (char *) "run", (char *) "--bundle",
                (char *) bundle, (char *) id,       NULL
        };
        int fds[3] = { null, op[1], ep[1] };
        pid_t pid;
        int r = spawn(rc->path, argv, fds, rc->private_mounts, &pid, err);
        close(op[1]);
        close(ep[1]);
        if (r < 0) {
                close(op[0]);
                close(ep[0]);
                return r;
        }

        int pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                /* The pid cannot have been reused: it is not reaped yet. */
                r = -errno;
                (void) kill(pid, SIGKILL);
                (void) wait_bounded(pid, -1);
                close(op[0]);
                close(ep[0]);
                return kiln_error_set(err, r, "run container: pidfd_open: %s", strerror(-r));
        }

        int pipes[2] = { op[0], ep[0] };
        bool exited = false, cancelled = false;
        int status = 0, reaped = 0;
        int64_t cancel_at = 0, last_kill = 0;
        _cleanup_free_ char *buf = kiln_xmalloc(OUTPUT_CHUNK);
        while (!exited || pipes[0] >= 0 || pipes[1] >= 0) {
                if (!cancelled && is_cancelled(cancel)) {
                        cancelled = true;
                        cancel_at = last_kill = kiln_mono_ms();
                        container_kill(rc, id);
                }
                if (cancelled) {
                        int64_t t = kiln_mono_ms();
                        if (exited)
                                break; /* nobody waits for the rest of the output */
                        if (t - cancel_at >= KILN_EXEC_KILL_TIMEOUT_MS)
                                (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                        else if (t - last_kill >= KILN_EXEC_KILL_RETRY_MS) {
                                last_kill = t;
                                container_kill(rc, id);
                        }
                }

                struct pollfd pfd[3] = {
                        { .fd = pipes[0], .events = POLLIN },
                        { .fd = pipes[1], .events = POLLIN },
                        { .fd = exited ? -1 : pidfd, .events = POLLIN },
                };
                int timeout = cancelled ? KILN_EXEC_KILL_RETRY_MS / 2 : KILN_EXEC_CANCEL_POLL_MS;
                int n = poll(pfd, 3, timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        break; /* cannot happen with valid fds; clean up below */
                }
                for (int i = 0; i < 2; i++) {
                        if (pipes[i] < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        ssize_t got = read(pipes[i], buf, OUTPUT_CHUNK);
                        if (got < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (got <= 0) {
                                close(pipes[i]);
                                pipes[i] = -1;
                                continue;
                        }
                        if (out && !cancelled)
                                out(userdata, i + 1, buf, (size_t) got);
                }
                if (!exited && (pfd[2].revents & POLLIN)) {
                        reaped = reap(pid, &status);
                        exited = true;
                }
        }
        if (!exited) {
                (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                reaped = reap(pid, &status);
        }
        close(pidfd);
        for (int i = 0; i < 2; i++)
                if (pipes[i] >= 0)
                        close(pipes[i]);
        if (cancelled)
                return kiln_error_set(err, -ECANCELED, "run container '%s': cancelled", id);
        if (reaped < 0)
                return kiln_error_set(err, reaped, "run container '%s': wait for the runtime: %s",
                                      id, strerror(-reaped));
        *ret_exit_code = status_to_code(status);
        return 0;
}

int kiln_exec_run(const struct kiln_exec_runtime *rt, const struct kiln_exec_process *p,
                  kiln_exec_output_fn out, void *userdata, const atomic_bool *cancel,
                  int *ret_exit_code, struct kiln_error **err)
{
        if (!rt || !rt->state_dir || rt->state_dir[0] != '/')
                return kiln_error_set(err, -EINVAL,
                                      "exec: state directory must be an absolute path");
        if (!p->rootfs)
                return kiln_error_set(err, -EINVAL, "exec: no root file system");
        if (is_cancelled(cancel))
                return kiln_error_set(err, -ECANCELED, "exec: cancelled");

        struct runtime_cmd rc = { 0 };
        int r = find_binary(rt->binary && *rt->binary ? rt->binary : "runc", &rc.path, err);
        if (r < 0)
                return r;
        rc.private_mounts = is_crun(rc.path);
        rc.root = kiln_xasprintf("%s/runtime", rt->state_dir);

        _cleanup_close_ int rootfd = open(p->rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct kiln_passwd_user user = { 0 };
        json_t *spec = NULL;
        _cleanup_free_ char *bundle = NULL, *hosts = NULL, *resolv = NULL, *hostname = NULL,
                            *config = NULL;
        _cleanup_close_ int bundlefd = -1;
        char id[2 * ID_BYTES + 1];
        bool bundle_made = false;

        if (rootfd < 0) {
                r = kiln_error_set(err, -errno, "open root file system '%s': %s", p->rootfs,
                                   strerror(errno));
                goto out;
        }
        r = kiln_passwd_resolve(rootfd, p->user, &user, err);
        if (r < 0)
                goto out;

        new_id(id);
        bundle = kiln_xasprintf("%s/%s", rt->state_dir, id);
        spec = kiln_exec_spec_new(p, bundle, user.uid, user.gid, user.gids, user.n_gids, err);
        if (!spec) {
                r = *err ? (*err)->code : -EINVAL;
                goto out;
        }
        if (p->n_ulimits == 0)
                clamp_default_nofile(spec);
        config = json_dumps(spec, JSON_COMPACT);
        if (!config) {
                r = kiln_error_set(err, -ENOMEM, "exec: encode runtime spec");
                goto out;
        }
        r = kiln_exec_prepare_cwd(rootfd, p->cwd, user.uid, user.gid, err);
        if (r < 0)
                goto out;
        r = read_resolv_conf(p, &resolv, err);
        if (r < 0)
                goto out;
        kiln_exec_hosts_file(p->hostname, p->extra_hosts, p->n_extra_hosts, &hosts);
        hostname = kiln_xasprintf("%s\n", p->hostname && *p->hostname ? p->hostname
                                                                      : KILN_EXEC_DEFAULT_HOSTNAME);

        r = kiln_mkdir_p(rc.root, 0711);
        if (r < 0) {
                r = kiln_error_set(err, r, "create '%s': %s", rc.root, strerror(-r));
                goto out;
        }
        if (mkdir(bundle, 0711) < 0) {
                r = kiln_error_set(err, -errno, "create bundle '%s': %s", bundle, strerror(errno));
                goto out;
        }
        bundle_made = true;
        bundlefd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (bundlefd < 0) {
                r = kiln_error_set(err, -errno, "open bundle '%s': %s", bundle, strerror(errno));
                goto out;
        }
        /* config.json holds the environment, secret variables included:
         * only the runtime (root) reads it. The others are bound into the
         * container for any user there. */
        if ((r = write_file_at(bundlefd, "config.json", config, strlen(config), 0600, bundle,
                               err)) < 0 ||
            (r = write_file_at(bundlefd, "hosts", hosts, strlen(hosts), 0644, bundle, err)) < 0 ||
            (r = write_file_at(bundlefd, "resolv.conf", resolv, strlen(resolv), 0644, bundle,
                               err)) < 0 ||
            (r = write_file_at(bundlefd, "hostname", hostname, strlen(hostname), 0644, bundle,
                               err)) < 0)
                goto out;

        struct stubs stubs;
        stubs_collect(rootfd, &stubs);
        r = run_container(&rc, bundle, id, out, userdata, cancel, ret_exit_code, err);
        /* `run` removes a container that ran to its end (its state
         * directory goes with it); one that was killed, or whose runtime
         * died, is removed here. */
        if (container_state_exists(&rc, id))
                container_delete(&rc, id);
        stubs_remove(rootfd, &stubs);

out:
        if (bundle_made) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                (void) kiln_rm_rf_at(AT_FDCWD, bundle, NULL, &e);
        }
        json_decref(spec);
        kiln_passwd_user_release(&user);
        free(rc.path);
        free(rc.root);
        return r;
}

/* A bundle directory of kiln_exec_run: its name is a container id. */
static bool is_bundle_name(const char *name)
{
        size_t n = strlen(name);

        if (n != 2 * ID_BYTES)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!strchr("0123456789abcdef", name[i]))
                        return false;
        return true;
}

int kiln_exec_cleanup(const struct kiln_exec_runtime *rt, struct kiln_error **err)
{
        struct runtime_cmd rc = { 0 };
        _cleanup_free_ char *path = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        DIR *d;
        struct dirent *de;
        int r;

        if (!rt || !rt->state_dir || rt->state_dir[0] != '/')
                return kiln_error_set(err, -EINVAL,
                                      "exec: state directory must be an absolute path");
        rc.root = kiln_xasprintf("%s/runtime", rt->state_dir);
        r = find_binary(rt->binary && *rt->binary ? rt->binary : "runc", &rc.path, &e);
        /* Without the runtime nothing it started can still run. */
        d = r >= 0 ? opendir(rc.root) : NULL;
        while (d && (de = readdir(d))) {
                if (!is_bundle_name(de->d_name))
                        continue;
                log_info_f(KILN_FIELDS({ "container", de->d_name }),
                           "killing a container a previous kilnd left running");
                container_kill(&rc, de->d_name);
                container_delete(&rc, de->d_name);
        }
        if (d)
                closedir(d);
        free(rc.path);
        free(rc.root);

        d = opendir(rt->state_dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_set(err, -errno, "open '%s': %s", rt->state_dir, strerror(errno));
        }
        while ((de = readdir(d))) {
                if (!is_bundle_name(de->d_name))
                        continue;
                path = kiln_xasprintf("%s/%s", rt->state_dir, de->d_name);
                kiln_error_free(TAKE_PTR(e));
                if (kiln_rm_rf_at(AT_FDCWD, path, NULL, &e) < 0)
                        log_warning("%s", kiln_error_message(e));
                free(TAKE_PTR(path));
        }
        closedir(d);
        return 0;
}
