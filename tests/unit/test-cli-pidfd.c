/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln_cli_pidfd_open_checked: a pid that the kernel hands to another
 * process between the "is it ours" check and the signal is never
 * signalled. The reuse is made to happen, not hoped for: clone3 with
 * set_tid gives the new process exactly the old pid.
 */
#include <linux/sched.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cli/builder.h"
#include "kiln-test.h"

static pid_t spawn_pausing(pid_t want)
{
        pid_t tid = want;
        struct clone_args a = {
                .exit_signal = SIGCHLD,
                .set_tid = want > 0 ? (uint64_t) (uintptr_t) &tid : 0,
                .set_tid_size = want > 0 ? 1 : 0,
        };
        pid_t pid = (pid_t) syscall(SYS_clone3, &a, sizeof(a));

        if (pid == 0) {
                for (;;)
                        pause();
        }
        return pid;
}

static void reap(pid_t pid)
{
        (void) kill(pid, SIGKILL);
        (void) waitpid(pid, NULL, 0);
}

struct reuse {
        pid_t successor; /* the process that got the pid, -errno when none */
};

/* Says "ours", as the /proc cmdline check did for the process that had the
 * pid, after that process exited and another one got its pid. */
static bool ours_then_reused(pid_t pid, void *userdata)
{
        struct reuse *x = userdata;

        reap(pid);
        x->successor = spawn_pausing(pid);
        if (x->successor < 0)
                x->successor = -errno;
        return true;
}

static bool ours(pid_t pid, void *userdata)
{
        return true;
}

static bool not_ours(pid_t pid, void *userdata)
{
        return false;
}

TEST(pidfd_signals_reach_only_the_process_checked)
{
        struct reuse x = { 0 };
        pid_t pid;
        int fd, status;

        pid = spawn_pausing(0);
        ASSERT_TRUE(pid > 0);
        fd = kiln_cli_pidfd_open_checked(pid, ours_then_reused, &x);
        if (x.successor == -EPERM || x.successor == -EINVAL || x.successor == -ENOSYS) {
                printf("# clone3 with set_tid needs CAP_SYS_ADMIN and Linux 5.5\n");
                return KILN_TEST_SKIP;
        }
        ASSERT_EQ_INT(x.successor, pid); /* the pid was given out again */
        /* The process checked is gone: no pidfd, nothing to signal. */
        ASSERT_EQ_INT(fd, -ESRCH);
        ASSERT_EQ_INT(waitpid(pid, &status, WNOHANG), 0); /* the successor lives on */
        reap(pid);
        return 0;
}

TEST(pidfd_of_a_process_that_is_ours)
{
        pid_t pid = spawn_pausing(0);
        int fd, status;

        ASSERT_TRUE(pid > 0);
        ASSERT_EQ_INT(kiln_cli_pidfd_open_checked(pid, not_ours, NULL), -ESRCH);
        ASSERT_EQ_INT(waitpid(pid, &status, WNOHANG), 0);
        fd = kiln_cli_pidfd_open_checked(pid, ours, NULL);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(pidfd_send_signal(fd, SIGTERM, NULL, 0));
        ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
        (void) close(fd);
        ASSERT_EQ_INT(kiln_cli_pidfd_open_checked(pid, ours, NULL), -ESRCH);
        ASSERT_EQ_INT(kiln_cli_pidfd_open_checked(0, ours, NULL), -ESRCH);
        return 0;
}
