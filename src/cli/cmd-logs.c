/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln logs: the local daemon's log, as `docker logs` shows a buildx
 * builder container's. -f follows it (through restarts of the daemon,
 * which append to the same file) until interrupted.
 */
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "builder.h"
#include "cli.h"

/* How often a followed log is checked even without a change notice. */
#define FOLLOW_POLL_MS 1000

enum {
        OPT_FOLLOW,
};

static const struct kiln_cli_option options[] = {
        [OPT_FOLLOW] = { "follow", 'f', KILN_CLI_OPTION_BOOL, "Follow log output", NULL, false },
};

/* The log for reading: never through a symbolic link, never blocking on
 * something that is not a regular file. -errno on failure. */
static int open_log(const char *path)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        return TAKE_FD(fd);
}

/* Copies what can be read from fd to stdout. */
static int copy_available(int fd, const char *path, struct kiln_error **err)
{
        char buf[65536];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_set(err, -errno, "read '%s': %s", path, strerror(errno));
                }
                if (n == 0)
                        break;
                if (fwrite(buf, 1, (size_t) n, stdout) != (size_t) n)
                        return kiln_error_set(err, -EIO, "write output: %s", strerror(errno));
        }
        if (fflush(stdout) != 0)
                return kiln_error_set(err, -EIO, "write output: %s", strerror(errno));
        return 0;
}

static int follow(const struct kiln_cli_builder *b, const char *path, int fd,
                  struct kiln_error **err)
{
        _cleanup_close_ int ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        _cleanup_close_ int log_fd = fd;
        bool watching = false;
        int r;

        for (;;) {
                struct pollfd p = { .fd = ifd, .events = POLLIN };
                char events[4096];
                struct stat a, b_st;

                if (!watching && ifd >= 0)
                        watching = inotify_add_watch(ifd, b->dir,
                                                     IN_MODIFY | IN_CREATE | IN_MOVED_TO |
                                                             IN_DELETE) >= 0;
                if (log_fd < 0)
                        log_fd = open_log(path);
                if (log_fd >= 0) {
                        r = copy_available(log_fd, path, err);
                        if (r < 0)
                                return r;
                        /* A new file (the builder was removed and made
                         * again) starts over; so does a truncated one. */
                        if (lstat(path, &a) < 0 || fstat(log_fd, &b_st) < 0 ||
                            a.st_ino != b_st.st_ino || a.st_dev != b_st.st_dev) {
                                (void) close(log_fd);
                                log_fd = -1;
                                continue;
                        }
                        if (lseek(log_fd, 0, SEEK_CUR) > a.st_size)
                                (void) lseek(log_fd, 0, SEEK_SET);
                }
                (void) poll(&p, watching ? 1 : 0, FOLLOW_POLL_MS);
                while (watching && read(ifd, events, sizeof(events)) > 0)
                        ;
        }
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_free_ char *path = NULL;
        int fd, r;

        /* Reading a log writes nothing, not even the implicit default
         * builder: it has no log until a command starts it. */
        r = kiln_cli_open_builder(cli, args, /* materialize= */ false, &s, &b, err);
        if (r < 0)
                return r;
        if (b->driver != KILN_CLI_DRIVER_LOCAL)
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "builder \"%s\" uses the %s driver: its daemon's log is "
                                      "kept wherever that kilnd was started",
                                      b->name, kiln_cli_driver_kind_to_string(b->driver));

        path = kiln_cli_builder_path(b, "kilnd.log");
        fd = open_log(path);
        if (fd < 0 && fd != -ENOENT)
                return kiln_error_set(err, fd, "builder \"%s\": open '%s': %s", b->name, path,
                                      fd == -EINVAL ? "not a regular file" : strerror(-fd));
        if (args->values[OPT_FOLLOW].b)
                return follow(b, path, fd, err);
        if (fd < 0) {
                fprintf(stderr, "builder \"%s\" has not been started: no log yet\n", b->name);
                return 0;
        }
        r = copy_available(fd, path, err);
        (void) close(fd);
        return r;
}

const struct kiln_cli_command kiln_cli_command_logs = {
        .name = "logs",
        .usage = "logs [OPTIONS] [NAME]",
        .summary = "Show the log of a builder instance's daemon",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = 1,
        .builder_option = true,
        .run = run,
};
