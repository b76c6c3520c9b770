/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Running a helper program to completion: its input from memory, its
 * output into buffers, a deadline. Credential helpers and CNI plugins run
 * this way.
 *
 * The child is started with posix_spawn (vfork and exec: safe in a
 * threaded daemon, where a plain fork would copy other threads' locks
 * mid-use), leads its own process group (so a terminal's ^C to kiln's group
 * does not reach it, and a kill on timeout takes what it started too), and
 * inherits no descriptor but 0..2. Its stdin is a socket, not a pipe, so a
 * program that exits without reading cannot kill kiln with SIGPIPE.
 *
 * Thread safe: nothing is shared between calls.
 */

#include <stdint.h>
#include <sys/types.h>

#include "base/buf.h"
#include "base/error.h"

struct kiln_spawn {
        /* An absolute path, or a name looked up in PATH. */
        const char *program;
        char *const *argv; /* argv[0] included, NULL-terminated */
        /* NULL: the caller's environment. */
        char *const *envp;
        /* Written to stdin, which is then closed; NULL: empty stdin. */
        const void *input;
        size_t input_len;
        /* stdout and stderr go into these buffers (each bounded by its
         * max: -E2BIG when exceeded); NULL: to /dev/null. */
        struct kiln_buf *out;
        struct kiln_buf *err;
        /* Milliseconds until the child (and its process group) is killed. */
        int timeout_ms;
};

/*
 * Runs s->program and waits for it. Returns its wait status (>= 0, as
 * waitpid gives it: WIFEXITED/WEXITSTATUS) once it has exited, or -errno
 * with *err set: -ENOENT when the program does not exist ("'<program>' not
 * found"), -ETIMEDOUT when it ran past the deadline (killed), -E2BIG when
 * it printed more than a buffer takes (killed). Output read before a
 * failure stays in the buffers; a caller handling secrets wipes them.
 */
int kiln_spawn_run(const struct kiln_spawn *s, struct kiln_error **err);

/* "exit status 3" or "killed by signal 9" for a wait status. malloc'd. */
char *kiln_spawn_status_string(int status);
