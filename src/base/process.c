/* SPDX-License-Identifier: Apache-2.0 */
#include "base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/macro.h"

extern char **environ;

static void close_now(int *fd)
{
        if (*fd >= 0)
                (void) close(*fd);
        *fd = -1;
}

/* In a daemon started with stdin or stdout closed, a new descriptor can be
 * 0..2, and the dup2 actions would clobber one another. */
static int move_above_stdio(int *fd)
{
        int nfd;

        if (*fd > STDERR_FILENO)
                return 0;
        nfd = fcntl(*fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        if (nfd < 0)
                return -errno;
        close_now(fd);
        *fd = nfd;
        return 0;
}

/* Kills the child's process group and the child, and reaps it. */
static void kill_and_reap(pid_t pid)
{
        int status;

        (void) kill(-pid, SIGKILL);
        (void) kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
}

/* Waits for pid until deadline; -ETIMEDOUT after killing it. */
static int reap(pid_t pid, int64_t deadline)
{
        int status;

        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);

                if (w == pid)
                        return status;
                if (w < 0 && errno != EINTR)
                        return -errno;
                if (kiln_mono_ms() >= deadline)
                        break;
                (void) nanosleep(&(struct timespec){ .tv_nsec = 2 * 1000 * 1000 }, NULL);
        }
        kill_and_reap(pid);
        return -ETIMEDOUT;
}

struct child {
        pid_t pid;
        int in;      /* our end of stdin, -1 once closed */
        int pipe[2]; /* our ends of stdout and stderr, -1 when closed */
};

static int start(const struct kiln_spawn *s, struct child *c, struct kiln_error **err)
{
        _cleanup_close_ int in_child = -1, out_w = -1, err_w = -1;
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        int sv[2], p[2], r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return kiln_error_set(err, -errno, "run '%s': socketpair: %s", s->program,
                                      strerror(errno));
        c->in = sv[0];
        in_child = sv[1];
        if (s->out) {
                if (pipe2(p, O_CLOEXEC) < 0)
                        return kiln_error_set(err, -errno, "run '%s': pipe: %s", s->program,
                                              strerror(errno));
                c->pipe[0] = p[0];
                out_w = p[1];
        }
        if (s->err) {
                if (pipe2(p, O_CLOEXEC) < 0)
                        return kiln_error_set(err, -errno, "run '%s': pipe: %s", s->program,
                                              strerror(errno));
                c->pipe[1] = p[0];
                err_w = p[1];
        }
        r = move_above_stdio(&in_child);
        if (r >= 0 && out_w >= 0)
                r = move_above_stdio(&out_w);
        if (r >= 0 && err_w >= 0)
                r = move_above_stdio(&err_w);
        if (r < 0)
                return kiln_error_set(err, r, "run '%s': %s", s->program, strerror(-r));

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in_child, STDIN_FILENO);
        if (out_w >= 0)
                posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
        else
                posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        if (err_w >= 0)
                posix_spawn_file_actions_adddup2(&fa, err_w, STDERR_FILENO);
        else
                posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawnattr_init(&attr);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
        posix_spawnattr_setpgroup(&attr, 0);
        r = posix_spawnp(&c->pid, s->program, &fa, &attr, s->argv, s->envp ? s->envp : environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
        if (r == ENOENT)
                return kiln_error_set(err, -ENOENT, "'%s' not found", s->program);
        if (r != 0)
                return kiln_error_set(err, -r, "run '%s': %s", s->program, strerror(r));
        if (!s->input_len)
                close_now(&c->in);
        else
                (void) fcntl(c->in, F_SETFL, O_NONBLOCK);
        return 0;
}

int kiln_spawn_run(const struct kiln_spawn *s, struct kiln_error **err)
{
        struct kiln_buf *bufs[2] = { s->out, s->err };
        struct child c = { .pid = -1, .in = -1, .pipe = { -1, -1 } };
        int64_t deadline = kiln_mono_ms() + s->timeout_ms;
        size_t sent = 0;
        int r;

        r = start(s, &c, err);
        if (r < 0)
                goto out;
        while (c.in >= 0 || c.pipe[0] >= 0 || c.pipe[1] >= 0) {
                struct pollfd p[3] = {
                        { .fd = c.in, .events = POLLOUT },
                        { .fd = c.pipe[0], .events = POLLIN },
                        { .fd = c.pipe[1], .events = POLLIN },
                };
                int64_t left = deadline - kiln_mono_ms();
                char chunk[16384];

                if (left <= 0) {
                        kill_and_reap(c.pid);
                        r = kiln_error_set(err, -ETIMEDOUT, "'%s' did not finish within %d ms",
                                           s->program, s->timeout_ms);
                        goto out;
                }
                r = poll(p, 3, (int) left);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0) {
                        r = -errno;
                        kill_and_reap(c.pid);
                        r = kiln_error_set(err, r, "run '%s': poll: %s", s->program, strerror(-r));
                        goto out;
                }
                if (p[0].revents) {
                        ssize_t n = send(c.in, (const char *) s->input + sent, s->input_len - sent,
                                         MSG_NOSIGNAL | MSG_DONTWAIT);

                        if (n > 0)
                                sent += (size_t) n;
                        /* A program that stops reading gets the rest of its
                         * input cut off, not a deadlock. */
                        if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == s->input_len) {
                                (void) shutdown(c.in, SHUT_WR);
                                close_now(&c.in);
                        }
                }
                for (int i = 0; i < 2; i++) {
                        ssize_t n;

                        if (!p[i + 1].revents)
                                continue;
                        n = read(c.pipe[i], chunk, sizeof(chunk));
                        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (n <= 0) {
                                close_now(&c.pipe[i]);
                                continue;
                        }
                        r = kiln_buf_append(bufs[i], chunk, (size_t) n);
                        explicit_bzero(chunk, (size_t) n);
                        if (r < 0) {
                                kill_and_reap(c.pid);
                                r = kiln_error_set(
                                        err, -E2BIG, "'%s' printed more than %zu bytes on %s",
                                        s->program, bufs[i]->max, i == 0 ? "stdout" : "stderr");
                                goto out;
                        }
                }
        }
        r = reap(c.pid, deadline);
        if (r == -ETIMEDOUT)
                r = kiln_error_set(err, r, "'%s' did not exit within %d ms", s->program,
                                   s->timeout_ms);
        else if (r < 0)
                r = kiln_error_set(err, r, "wait for '%s': %s", s->program, strerror(-r));
out:
        close_now(&c.in);
        close_now(&c.pipe[0]);
        close_now(&c.pipe[1]);
        return r;
}

char *kiln_spawn_status_string(int status)
{
        if (WIFEXITED(status))
                return kiln_xasprintf("exit status %d", WEXITSTATUS(status));
        if (WIFSIGNALED(status))
                return kiln_xasprintf("killed by signal %d", WTERMSIG(status));
        return kiln_xasprintf("wait status %d", status);
}
