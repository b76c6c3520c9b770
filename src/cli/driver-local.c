/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local driver: kilnd as a background process of the user's machine,
 * one per builder, with its configuration, root, socket and log in the
 * builder's directory.
 *
 * Whether it runs is asked of the daemon itself (GET /v1/info on its
 * socket), never assumed from files: a daemon killed with SIGKILL leaves
 * its socket and pid file behind, and is then simply "stopped". A pid is
 * only trusted (for signals, for "it is still starting") when
 * /proc/<pid>/cmdline shows kilnd with this builder's --root, and signals
 * go through a pidfd opened before that check, so a pid that the kernel
 * gave to another process since is never signalled.
 */
#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "builder.h"
#include "cli.h"

/* /proc/<pid>/cmdline read to recognise a daemon. */
#define CMDLINE_MAX (64u << 10)
/* The end of kilnd.log shown when it fails to start. */
#define LOG_TAIL_BYTES 4096u
#define LOG_TAIL_LINES 20u
/* One probe of a starting daemon. */
#define PROBE_TIMEOUT_MS 1000u
/* After SIGKILL, how long to wait for the process to go. */
#define KILL_WAIT_MS 5000u

static char *socket_path(const struct kiln_cli_builder *b)
{
        return kiln_cli_builder_path(b, "kilnd.sock");
}

/* Whether pid is a live kilnd serving this builder's root. A zombie has an
 * empty cmdline and does not count. */
static bool pid_is_ours(const struct kiln_cli_builder *b, pid_t pid)
{
        _cleanup_(kiln_buf_release) struct kiln_buf cmd = KILN_BUF_INIT(CMDLINE_MAX);
        _cleanup_free_ char *path = NULL, *root = NULL;
        const char *p, *end;
        bool kilnd = false, prev_root = false;

        if (pid <= 0)
                return false;
        /* Our own child that exited: reap it, so it is not a zombie. */
        (void) waitpid(pid, NULL, WNOHANG);
        path = kiln_xasprintf("/proc/%ld/cmdline", (long) pid);
        if (kiln_read_file_at(AT_FDCWD, path, &cmd) < 0 || cmd.len == 0)
                return false;
        root = kiln_cli_builder_path(b, "root");
        p = cmd.data;
        end = cmd.data + cmd.len;
        for (size_t i = 0; p < end; i++) {
                size_t len = strnlen(p, (size_t) (end - p));

                if (i == 0) {
                        const char *slash = strrchr(p, '/');

                        kilnd = streq(slash ? slash + 1 : p, "kilnd");
                } else if (prev_root && streq(p, root))
                        return kilnd;
                prev_root = streq(p, "--root");
                p += len + 1;
        }
        return false;
}

static pid_t read_pid_file(const struct kiln_cli_builder *b)
{
        _cleanup_(kiln_buf_release) struct kiln_buf text = KILN_BUF_INIT(64);
        _cleanup_free_ char *path = kiln_cli_builder_path(b, "kilnd.pid");
        char *end;
        long pid;

        if (kiln_read_file_at_flags(AT_FDCWD, path, O_NOFOLLOW, &text) < 0)
                return 0;
        errno = 0;
        pid = strtol(text.data, &end, 10);
        if (errno || end == text.data || (*end && *end != '\n') || pid <= 0 || pid > INT32_MAX)
                return 0;
        return (pid_t) pid;
}

static pid_t info_pid(json_t *info)
{
        json_t *pid = json_object_get(info, "pid");

        return json_is_integer(pid) ? (pid_t) json_integer_value(pid) : 0;
}

static void local_status(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                         struct kiln_cli_status *ret)
{
        _cleanup_free_ char *sock = socket_path(b), *root = kiln_cli_builder_path(b, "root");
        struct stat st;
        pid_t pid;

        *ret = (struct kiln_cli_status){ .kind = KILN_CLI_STATUS_INACTIVE };
        /* Without a socket file nobody listens: no need to try. */
        if (lstat(sock, &st) == 0 &&
            kiln_cli_builder_probe(b, timeout_ms, &ret->info, &ret->err) >= 0) {
                ret->kind = KILN_CLI_STATUS_RUNNING;
                ret->pid = info_pid(ret->info);
                return;
        }
        pid = read_pid_file(b);
        if (pid_is_ours(b, pid)) {
                /* Alive but silent: starting, or stuck. */
                ret->kind = KILN_CLI_STATUS_ERROR;
                ret->pid = pid;
                if (!ret->err)
                        (void) kiln_error_set(&ret->err, -ECONNREFUSED,
                                              "kilnd (pid %ld) runs but its socket '%s' is "
                                              "missing",
                                              (long) pid, sock);
                else
                        (void) kiln_error_wrap(&ret->err,
                                               "kilnd (pid %ld) runs but does not "
                                               "answer",
                                               (long) pid);
                return;
        }
        ret->err = kiln_error_free(ret->err);
        if (lstat(root, &st) == 0)
                ret->kind = KILN_CLI_STATUS_STOPPED;
}

/* kilnd next to this kiln (a build tree, an install), else in PATH. */
static int find_kilnd(char **ret, struct kiln_error **err)
{
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        const char *path;

        if (n > 0) {
                char *slash;

                self[n] = '\0';
                slash = strrchr(self, '/');
                if (slash) {
                        char *candidate = kiln_xasprintf("%.*s/kilnd", (int) (slash - self), self);

                        if (access(candidate, X_OK) == 0) {
                                *ret = candidate;
                                return 0;
                        }
                        free(candidate);
                }
        }
        path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/bin:/usr/bin:/bin";
        while (*path) {
                const char *colon = strchrnul(path, ':');
                size_t len = (size_t) (colon - path);
                char *candidate;

                candidate = len ? kiln_xasprintf("%.*s/kilnd", (int) len, path)
                                : kiln_xstrdup("./kilnd");
                if (access(candidate, X_OK) == 0) {
                        *ret = candidate;
                        return 0;
                }
                free(candidate);
                path = *colon ? colon + 1 : colon;
        }
        return kiln_error_set(err, -ENOENT, "cannot find kilnd next to '%s' or in PATH",
                              n > 0 ? self : "kiln");
}

/* The last lines of the log written since offset, for an error message. */
static char *log_tail(const char *log, off_t offset)
{
        _cleanup_close_ int fd =
                open(log, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
        char buf[LOG_TAIL_BYTES + 1];
        unsigned lines = 0;
        struct stat st;
        off_t from;
        ssize_t n;
        char *p;

        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= offset)
                return kiln_xstrdup("");
        from = st.st_size - offset > (off_t) LOG_TAIL_BYTES ? st.st_size - (off_t) LOG_TAIL_BYTES
                                                            : offset;
        n = pread(fd, buf, LOG_TAIL_BYTES, from);
        if (n <= 0)
                return kiln_xstrdup("");
        buf[n] = '\0';
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        p = buf;
        if (from > offset) {
                /* Started in the middle of a line: drop that part. */
                char *nl = strchr(p, '\n');

                p = nl ? nl + 1 : buf + n;
        }
        for (char *q = buf + n; q > p; q--)
                if (q[-1] == '\n' && ++lines == LOG_TAIL_LINES) {
                        p = q;
                        break;
                }
        if (!*p)
                return kiln_xstrdup("");
        return kiln_xasprintf("\nthe end of its log '%s':\n%s", log, p);
}

static char **spawn_argv(const struct kiln_cli_builder *b, const char *kilnd)
{
        size_t n = 0;
        char **argv = kiln_xcalloc(b->n_flags + 8, sizeof(char *));

        argv[n++] = kiln_xstrdup(kilnd);
        argv[n++] = kiln_xstrdup("--config");
        argv[n++] = kiln_cli_builder_path(b, "etc/buildkit/buildkitd.toml");
        argv[n++] = kiln_xstrdup("--root");
        argv[n++] = kiln_cli_builder_path(b, "root");
        argv[n++] = kiln_xstrdup("--addr");
        argv[n++] = kiln_xstrdup(b->endpoint);
        /* After ours, so that they can override them, as buildx does. */
        for (size_t i = 0; i < b->n_flags; i++)
                argv[n++] = kiln_xstrdup(b->flags[i]);
        argv[n] = NULL;
        return argv;
}

static void argv_free(char **argv)
{
        if (!argv)
                return;
        for (char **p = argv; *p; p++)
                free(*p);
        free(argv);
}

static void argv_freep(char ***argv)
{
        argv_free(*argv);
}

/* Only async-signal-safe calls between fork and exec. */
_noreturn_ static void child_exec(const char *kilnd, char **argv, int null_fd, int log_fd,
                                  int err_fd)
{
        sigset_t none;
        int e;

        (void) setsid();
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        (void) signal(SIGPIPE, SIG_DFL);
        (void) signal(SIGINT, SIG_DFL);
        (void) signal(SIGTERM, SIG_DFL);
        if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
                goto fail;
        /* Nothing of kiln's (connections, locks) leaks into the daemon. */
        if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                for (int fd = 3; fd < 4096; fd++)
                        if (fd != err_fd)
                                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
        if (chdir("/") < 0)
                goto fail;
        execv(kilnd, argv);
fail:
        e = errno;
        (void) !write(err_fd, &e, sizeof(e));
        _exit(127);
}

static int spawn(const struct kiln_cli_builder *b, pid_t *ret_pid, off_t *ret_log_offset,
                 struct kiln_error **err)
{
        _cleanup_free_ char *kilnd = NULL, *log = NULL, *pidfile = NULL, *pidtext = NULL;
        _cleanup_(argv_freep) char **argv = NULL;
        _cleanup_close_ int null_fd = -1, log_fd = -1;
        int pipefd[2] = { -1, -1 };
        struct stat st;
        ssize_t n;
        pid_t pid;
        int e = 0, r;

        r = find_kilnd(&kilnd, err);
        if (r < 0)
                return r;
        argv = spawn_argv(b, kilnd);
        log = kiln_cli_builder_path(b, "kilnd.log");
        /* Appended to, never through a link, never blocking on a FIFO put
         * in its place. */
        log_fd = open(
                log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK,
                0600);
        /* ENXIO: a FIFO that nobody reads (or a device without one). */
        if (log_fd < 0 && errno == ENXIO)
                return kiln_error_set(err, -ENXIO, "open log '%s': not a regular file", log);
        if (log_fd < 0)
                return kiln_error_set(err, -errno, "open log '%s': %s", log, strerror(errno));
        if (fstat(log_fd, &st) < 0)
                return kiln_error_set(err, -errno, "open log '%s': %s", log, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return kiln_error_set(err, -EINVAL, "open log '%s': not a regular file", log);
        if (fcntl(log_fd, F_SETFL, O_APPEND) < 0)
                return kiln_error_set(err, -errno, "open log '%s': %s", log, strerror(errno));
        *ret_log_offset = st.st_size;
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (null_fd < 0)
                return kiln_error_set(err, -errno, "open /dev/null: %s", strerror(errno));
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return kiln_error_set(err, -errno, "pipe: %s", strerror(errno));

        if (kiln_log_enabled(KILN_LOG_DEBUG)) {
                struct kiln_buf cmd = KILN_BUF_INIT(CMDLINE_MAX);

                for (char **a = argv; *a; a++)
                        (void) kiln_buf_printf(&cmd, "%s%s", a == argv ? "" : " ", *a);
                log_debug("starting %s", cmd.data);
                kiln_buf_release(&cmd);
        }

        fflush(NULL);
        pid = fork();
        if (pid < 0) {
                r = -errno;
                (void) close(pipefd[0]);
                (void) close(pipefd[1]);
                return kiln_error_set(err, r, "fork: %s", strerror(-r));
        }
        if (pid == 0)
                child_exec(kilnd, argv, null_fd, log_fd, pipefd[1]);

        (void) close(pipefd[1]);
        do
                n = read(pipefd[0], &e, sizeof(e));
        while (n < 0 && errno == EINTR);
        (void) close(pipefd[0]);
        if (n == (ssize_t) sizeof(e)) {
                (void) waitpid(pid, NULL, 0);
                return kiln_error_set(err, -e, "start '%s': %s", kilnd, strerror(e));
        }

        pidfile = kiln_cli_builder_path(b, "kilnd.pid");
        pidtext = kiln_xasprintf("%ld\n", (long) pid);
        r = kiln_write_file_atomic(pidfile, pidtext, strlen(pidtext), 0644);
        if (r < 0)
                log_warning("write '%s': %s", pidfile, strerror(-r));
        *ret_pid = pid;
        return 0;
}

int kiln_cli_pidfd_open_checked(pid_t pid, bool (*is_ours)(pid_t pid, void *userdata),
                                void *userdata)
{
        _cleanup_close_ int fd = -1;

        if (pid <= 0)
                return -ESRCH;
        fd = pidfd_open(pid, 0);
        if (fd < 0)
                return -errno;
        if (!is_ours(pid, userdata))
                return -ESRCH;
        /* Not reaped yet, so the pid was this process's all along: the
         * check looked at the process the pidfd refers to. */
        if (pidfd_send_signal(fd, 0, NULL, 0) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static bool pid_is_ours_cb(pid_t pid, void *userdata)
{
        return pid_is_ours(userdata, pid);
}

/* Waits up to timeout_ms for the process of pidfd to exit (and reaps it
 * when it was our child). */
static bool wait_exit(int pidfd, pid_t pid, uint64_t timeout_ms)
{
        uint64_t deadline = kiln_cli_now_ms() + timeout_ms;

        for (;;) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                uint64_t now = kiln_cli_now_ms();
                int n;

                if (now >= deadline)
                        return false;
                n = poll(&p, 1, deadline - now > INT_MAX ? INT_MAX : (int) (deadline - now));
                if (n > 0) {
                        (void) waitpid(pid, NULL, WNOHANG);
                        return true;
                }
                if (n < 0 && errno != EINTR)
                        return false;
        }
}

/* Stops pid when it is ours: SIGTERM, then SIGKILL when it outlives the
 * timeout. A pid that is not (or no longer) ours is left alone. */
static int stop_pid(const struct kiln_cli_builder *b, pid_t pid, uint64_t timeout_ms,
                    struct kiln_error **err)
{
        _cleanup_close_ int pidfd = -1;

        pidfd = kiln_cli_pidfd_open_checked(pid, pid_is_ours_cb, (void *) b);
        if (pidfd == -ESRCH)
                return 0;
        if (pidfd < 0)
                return kiln_error_set(err, pidfd, "stop kilnd (pid %ld): %s", (long) pid,
                                      strerror(-pidfd));
        if (pidfd_send_signal(pidfd, SIGTERM, NULL, 0) < 0 && errno != ESRCH)
                return kiln_error_set(err, -errno, "stop kilnd (pid %ld): %s", (long) pid,
                                      strerror(errno));
        if (wait_exit(pidfd, pid, timeout_ms))
                return 0;
        fprintf(stderr,
                "WARNING: kilnd (pid %ld) of builder \"%s\" did not stop within %.1fs: killing "
                "it\n",
                (long) pid, b->name, (double) timeout_ms / 1000.0);
        (void) pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        if (!wait_exit(pidfd, pid, KILL_WAIT_MS))
                return kiln_error_set(err, -ETIMEDOUT, "kilnd (pid %ld) survives SIGKILL",
                                      (long) pid);
        return 0;
}

static int local_boot(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                      struct kiln_cli_status *ret, struct kiln_error **err)
{
        _cleanup_free_ char *log = kiln_cli_builder_path(b, "kilnd.log");
        _cleanup_(kiln_error_freep) struct kiln_error *last = NULL;
        uint64_t deadline = kiln_cli_now_ms() + timeout_ms;
        off_t offset = 0;
        pid_t pid = 0;
        bool spawned = false;
        int r;

        local_status(b, timeout_ms, ret);
        if (ret->kind == KILN_CLI_STATUS_RUNNING)
                return 0;

        if (ret->kind == KILN_CLI_STATUS_ERROR) {
                /* Started by a kiln that has not seen it answer yet, or stuck:
                 * give it the same time a start gets. */
                pid = ret->pid;
                kiln_cli_status_release(ret);
        } else {
                kiln_cli_status_release(ret);
                r = spawn(b, &pid, &offset, err);
                if (r < 0)
                        return kiln_error_wrap(err, "start kilnd");
                spawned = true;
        }

        for (;;) {
                json_t *info = NULL;
                int status;

                /* Our child tells how it ended; another kiln's is only
                 * recognised by its command line. */
                if (spawned && waitpid(pid, &status, WNOHANG) == pid) {
                        _cleanup_free_ char *tail = log_tail(log, offset);

                        if (WIFEXITED(status))
                                return kiln_error_set(err, -ECHILD,
                                                      "kilnd exited with status %d before "
                                                      "answering on '%s'%s",
                                                      WEXITSTATUS(status), b->endpoint, tail);
                        return kiln_error_set(err, -ECHILD,
                                              "kilnd was killed by signal %d before answering "
                                              "on '%s'%s",
                                              WTERMSIG(status), b->endpoint, tail);
                }
                if (!spawned && !pid_is_ours(b, pid)) {
                        _cleanup_free_ char *tail = log_tail(log, offset);

                        return kiln_error_set(err, -ECHILD,
                                              "kilnd (pid %ld) exited before answering on '%s'%s",
                                              (long) pid, b->endpoint, tail);
                }
                last = kiln_error_free(last);
                r = kiln_cli_builder_probe(b, PROBE_TIMEOUT_MS, &info, &last);
                if (r >= 0) {
                        ret->kind = KILN_CLI_STATUS_RUNNING;
                        ret->info = info;
                        ret->pid = info_pid(info);
                        return 0;
                }
                if (kiln_cli_now_ms() >= deadline) {
                        _cleanup_free_ char *tail = log_tail(log, offset);
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                        (void) stop_pid(b, pid, 2000, &e);
                        return kiln_error_set(err, -ETIMEDOUT,
                                              "kilnd (pid %ld) did not answer on '%s' within "
                                              "%.1fs (%s); stopped it%s",
                                              (long) pid, b->endpoint, (double) timeout_ms / 1000.0,
                                              kiln_error_message(last), tail);
                }
                kiln_cli_sleep_ms(20);
        }
}

static int local_stop(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                      struct kiln_error **err)
{
        _cleanup_free_ char *pidfile = kiln_cli_builder_path(b, "kilnd.pid");
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        pid_t pid = read_pid_file(b);
        int r;

        if (!pid_is_ours(b, pid)) {
                /* The pid file may be stale while a daemon answers: its own
                 * word for its pid, checked the same way. */
                local_status(b, timeout_ms, &st);
                pid = st.kind == KILN_CLI_STATUS_RUNNING ? st.pid : 0;
                if (pid && !pid_is_ours(b, pid))
                        return kiln_error_set(err, -EPERM,
                                              "the daemon answering on '%s' (pid %ld) was not "
                                              "started by kiln for this builder: not stopping it",
                                              b->endpoint, (long) pid);
        }
        if (pid) {
                r = stop_pid(b, pid, timeout_ms, err);
                if (r < 0)
                        return r;
        }
        if (unlink(pidfile) < 0 && errno != ENOENT)
                return kiln_error_set(err, -errno, "remove '%s': %s", pidfile, strerror(errno));
        return 0;
}

const struct kiln_cli_driver kiln_cli_driver_local = {
        .name = "local",
        .status = local_status,
        .boot = local_boot,
        .stop = local_stop,
};
