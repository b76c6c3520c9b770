/* SPDX-License-Identifier: Apache-2.0 */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>

#include "base/log.h"
#include "config/config.h"
#include "daemon.h"
#include "kiln-version.h"

/* Problems found before logging is set up go to stderr as plain text, with
 * the program's name, as buildkitd's do ("buildkitd: ..."). */
static void print_failure(const struct kiln_config_cli *cli, const struct kiln_error *err)
{
        if (cli)
                kiln_config_diags_print(&cli->diags, stderr);
        /* The diagnostics already say it all when they hold an error; the
         * error alone explains a bad flag. */
        if (!cli || kiln_config_diags_count(&cli->diags, KILN_CONFIG_ERROR) == 0)
                fprintf(stderr, "kilnd: %s\n", kiln_error_message(err));
}

static int validate(const struct kiln_config_cli *cli)
{
        json_t *j = NULL;
        int r;

        kiln_config_diags_print(&cli->diags, stderr);
        r = kiln_config_to_json(cli->config, &j);
        if (r < 0) {
                fprintf(stderr, "kilnd: print configuration: %s\n", strerror(-r));
                return r;
        }
        errno = 0;
        r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(j);
        if (r < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
                r = errno > 0 ? -errno : -EIO;
                fprintf(stderr, "kilnd: write configuration: %s\n", strerror(-r));
                return r;
        }
        return 0;
}

static int setup_logging(const struct kiln_config *c, struct kiln_error **err)
{
        const char *level = c->log.level ? c->log.level : "info";
        const char *format = c->log.format ? c->log.format : "text";
        enum kiln_log_level l;
        enum kiln_log_format f;

        l = kiln_log_level_from_string(level);
        if (l < 0)
                return kiln_error_set(err, -EINVAL, "unsupported log level '%s'", level);
        f = kiln_log_format_from_string(format);
        if (f < 0)
                return kiln_error_set(err, -EINVAL, "unsupported log format '%s'", format);
        kiln_log_set_level(l);
        kiln_log_set_format(f);
        return 0;
}

static void log_config_warnings(const struct kiln_config_diags *diags)
{
        for (size_t i = 0; i < diags->n; i++) {
                const struct kiln_config_diag *d = &diags->items[i];

                if (d->level != KILN_CONFIG_WARNING)
                        continue;
                if (d->file && d->line > 0)
                        log_warning("%s:%u:%u: %s", d->file, d->line, d->col, d->message);
                else if (d->file)
                        log_warning("%s: %s", d->file, d->message);
                else
                        log_warning("%s", d->message);
        }
}

/* Go's filepath.Clean for an absolute path, in place: no "//", no "." or
 * ".." components, no trailing slash. */
static void path_clean_absolute(char *path)
{
        size_t *starts = kiln_xcalloc(strlen(path) + 1, sizeof(size_t));
        size_t n = 0, out = 0;
        const char *p = path;

        while (*p) {
                const char *seg;
                size_t len;

                while (*p == '/')
                        p++;
                seg = p;
                while (*p && *p != '/')
                        p++;
                len = (size_t) (p - seg);
                if (len == 0 || (len == 1 && seg[0] == '.'))
                        continue;
                if (len == 2 && seg[0] == '.' && seg[1] == '.') {
                        if (n > 0)
                                out = starts[--n];
                        continue;
                }
                starts[n++] = out;
                path[out++] = '/';
                memmove(path + out, seg, len);
                out += len;
        }
        if (out == 0)
                path[out++] = '/';
        path[out] = '\0';
        free(starts);
}

/* buildkitd makes --root absolute (filepath.Abs, which also cleans it);
 * the path is also what /v1/info reports, so it must not depend on the cwd
 * or on how it was spelled. */
static int root_make_absolute(struct kiln_config *c, struct kiln_error **err)
{
        _cleanup_free_ char *cwd = NULL;

        if (!c->root || !c->root[0])
                return kiln_error_set(err, -EINVAL, "root must not be empty");
        if (c->root[0] != '/') {
                char *root;

                cwd = getcwd(NULL, 0);
                if (!cwd)
                        return kiln_error_set(err, -errno, "resolve root '%s': %s", c->root,
                                              strerror(errno));
                root = kiln_xasprintf("%s/%s", cwd, c->root);
                free(c->root);
                c->root = root;
        }
        path_clean_absolute(c->root);
        return 0;
}

/*
 * kilnd mounts snapshots, views and container root filesystems. It does so
 * in a mount namespace of its own, made here before any thread exists:
 * unshare(CLONE_NEWNS), then / and everything below it made MS_SLAVE. The
 * host's mounts still propagate in (a disk mounted later is visible), but
 * nothing kilnd mounts propagates out: the host's mount table never shows
 * kiln's mounts, and when kilnd dies, however it dies, the kernel tears the
 * namespace down with every mount in it. Only root can mount, so only
 * root needs (and is able to make) the namespace; failing to make it is an
 * error, since mounting in the host's namespace could leave mounts behind.
 */
static int setup_mount_namespace(struct kiln_error **err)
{
        if (geteuid() != 0) {
                log_debug("not running as root: no private mount namespace");
                return 0;
        }
        if (unshare(CLONE_NEWNS) < 0)
                return kiln_error_set(err, -errno, "create a mount namespace: unshare: %s",
                                      strerror(errno));
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
                return kiln_error_set(err, -errno, "make '/' a slave mount: %s", strerror(errno));
        log_debug("running in a private mount namespace");
        return 0;
}

static void log_start(const struct kiln_config_cli *cli)
{
        char pid[32];

        (void) snprintf(pid, sizeof(pid), "%ld", (long) getpid());
        if (cli->config_path)
                log_info_f(KILN_FIELDS({ "version", KILN_VERSION }, { "root", cli->config->root },
                                       { "config", cli->config_path }, { "pid", pid }),
                           "starting kilnd");
        else
                log_info_f(KILN_FIELDS({ "version", KILN_VERSION }, { "root", cli->config->root },
                                       { "pid", pid }),
                           "starting kilnd");
}

static int serve(struct kiln_config_cli *cli)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_daemon_freep) struct kiln_daemon *d = NULL;
        struct kiln_config *c = cli->config;
        int r;

        r = setup_logging(c, &err);
        if (r < 0) {
                fprintf(stderr, "kilnd: %s\n", kiln_error_message(err));
                return r;
        }
        r = root_make_absolute(c, &err);
        if (r < 0) {
                log_error("%s", kiln_error_message(err));
                return r;
        }

        log_start(cli);
        log_config_warnings(&cli->diags);
        if (c->worker_containerd.enabled > 0)
                log_warning("[worker.containerd] is enabled but kilnd has no containerd worker: "
                            "ignoring it");

        /* Peers that hang up are ordinary errors (EPIPE), not a reason to
         * die. */
        (void) signal(SIGPIPE, SIG_IGN);

        r = setup_mount_namespace(&err);
        if (r < 0) {
                log_error("%s", kiln_error_message(err));
                return r;
        }
        r = kiln_daemon_new(c, cli->config_path, &d, &err);
        if (r < 0) {
                log_error("%s", kiln_error_message(err));
                return r;
        }
        r = kiln_daemon_run(d, &err);
        d = kiln_daemon_free(d);
        if (r < 0) {
                log_error("%s", kiln_error_message(err));
                return r;
        }
        log_info("stopped");
        return 0;
}

/* Returns an exit status (>= 0) or -errno; main maps the latter to 1. */
static int run(int argc, char **argv)
{
        _cleanup_(kiln_config_cli_freep) struct kiln_config_cli *cli = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r;

        r = kiln_config_cli_parse(argc, argv, &cli, &err);
        if (r < 0) {
                print_failure(cli, err);
                return r;
        }
        if (cli->help) {
                fputs(kiln_config_usage(), stdout);
                return 0;
        }
        if (cli->version) {
                printf("kilnd github.com/kiln %s\n", KILN_VERSION);
                return 0;
        }
        if (cli->validate)
                return validate(cli);
        return serve(cli);
}

int main(int argc, char **argv)
{
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : r;
}
