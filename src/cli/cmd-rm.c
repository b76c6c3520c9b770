/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln rm: stop a builder's daemon and remove the builder. --keep-state
 * keeps root/ (the daemon's state), which a later `kiln create` of the same
 * name takes over, as buildx keeps the state volume. Removing the current
 * builder makes the default one current again.
 */
#include <fcntl.h>

#include "base/fs.h"
#include "builder.h"
#include "cli.h"

enum {
        OPT_KEEP_STATE,
        OPT_ALL_INACTIVE,
        OPT_FORCE,
        OPT_TIMEOUT,
};

static const struct kiln_cli_option options[] = {
        [OPT_KEEP_STATE] = { "keep-state", 0, KILN_CLI_OPTION_BOOL, "Keep BuildKit state", NULL,
                             false },
        [OPT_ALL_INACTIVE] = { "all-inactive", 0, KILN_CLI_OPTION_BOOL,
                               "Remove all inactive builders", NULL, false },
        [OPT_FORCE] = { "force", 'f', KILN_CLI_OPTION_BOOL, "Do not prompt for confirmation", NULL,
                        false },
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "Override the default timeout for loading builder status", "20s", false },
};

static int remove_one(struct kiln_cli_store *s, const char *name, bool keep_state, uint64_t timeout,
                      struct kiln_error **err)
{
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_close_ int lock = -1;
        _cleanup_free_ char *lower = NULL, *json = NULL;
        int r;

        if (kiln_cli_name_validate(name, &lower, NULL) < 0)
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", name);
        r = kiln_cli_store_load(s, lower, &b, err);
        if (r == -ENOENT)
                return r;
        if (r < 0) {
                /* A builder.json that cannot be read must not keep the
                 * builder forever: remove it as a local one (a daemon only
                 * counts as its daemon when it runs on its root). */
                _cleanup_free_ char *dir = kiln_cli_store_builder_dir(s, lower);

                if (access(dir, F_OK) < 0)
                        return r;
                fprintf(stderr, "WARNING: %s\n", kiln_error_message(*err));
                *err = kiln_error_free(*err);
                b = kiln_cli_builder_new(s, lower);
        }
        /* As buildx refuses to remove its context builder: there is
         * nothing of it to remove, and it stays the fallback. */
        if (b->implicit)
                return kiln_error_set(err, -ENOENT,
                                      "the default builder has nothing to remove: it is implicit "
                                      "until a command needs its files or daemon");

        /* The builder lock for the whole removal: nobody starts the daemon
         * again while its files go. */
        r = kiln_cli_store_lock_existing(s, b->name, &lock, err);
        if (r < 0)
                return r;
        r = kiln_cli_builder_driver(b)->stop(b, timeout, err);
        if (r < 0)
                return kiln_error_wrap(err, "failed to stop node %s", b->node);

        r = kiln_cli_store_lock(s, err);
        if (r < 0)
                return r;
        /* builder.json first: the builder is gone at once, whatever of the
         * rest a failure leaves for the next create of the name to clear. */
        json = kiln_cli_builder_path(b, "builder.json");
        if (unlink(json) < 0 && errno != ENOENT)
                r = kiln_error_set(err, -errno, "remove '%s': %s", json, strerror(errno));
        if (r >= 0)
                r = kiln_rm_rf_at(AT_FDCWD, b->dir, keep_state ? "root" : NULL, err);
        if (r >= 0)
                r = kiln_cli_store_forget(s, b->name, err);
        kiln_cli_store_unlock(s);
        if (r < 0)
                return r;
        /* Removed while held: the lock of a builder that is gone. */
        kiln_cli_store_drop_builder_lock(s, b->name, TAKE_FD(lock));
        return 0;
}

static bool confirm(const char *question)
{
        char answer[16] = "";

        fprintf(stdout, "%s [y/N] ", question);
        fflush(stdout);
        if (!fgets(answer, sizeof(answer), stdin))
                return false;
        return streq(answer, "y\n") || streq(answer, "Y\n") || streq(answer, "y") ||
               streq(answer, "Y");
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_strv_freep) char **names = NULL;
        const struct kiln_cli_value *v = args->values;
        uint64_t timeout = kiln_cli_args_timeout_ms(args, OPT_TIMEOUT);
        size_t n = 0;
        bool failed = false;
        int r;

        if (v[OPT_ALL_INACTIVE].b && args->n_pos > 0)
                return kiln_error_set(err, -EINVAL,
                                      "cannot specify builder name when --all-inactive is set");
        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;

        if (v[OPT_ALL_INACTIVE].b) {
                if (!v[OPT_FORCE].b &&
                    !confirm("WARNING! This will remove all builders that are not in running "
                             "state. Are you sure you want to continue?"))
                        return 0;
                r = kiln_cli_store_list(s, &names, &n, err);
                if (r < 0)
                        return r;
        } else if (args->n_pos > 0) {
                names = kiln_xcalloc(args->n_pos + 1, sizeof(char *));
                for (size_t i = 0; i < args->n_pos; i++)
                        names[n++] = kiln_xstrdup(args->pos[i]);
        } else {
                names = kiln_xcalloc(2, sizeof(char *));
                if (cli->builder)
                        names[n] = kiln_xstrdup(cli->builder);
                else {
                        r = kiln_cli_store_current(s, &names[n], err);
                        if (r < 0)
                                return r;
                }
                n++;
        }

        for (size_t i = 0; i < n; i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                if (v[OPT_ALL_INACTIVE].b) {
                        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
                        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };

                        if (kiln_cli_store_load(s, names[i], &b, &e) < 0)
                                continue;
                        kiln_cli_builder_status(b, timeout, &st);
                        if (st.kind == KILN_CLI_STATUS_RUNNING)
                                continue;
                }
                if (remove_one(s, names[i], v[OPT_KEEP_STATE].b, timeout, &e) < 0) {
                        fprintf(stderr, "failed to remove %s: %s\n", names[i],
                                kiln_error_message(e));
                        failed = true;
                } else
                        fprintf(stderr, "%s removed\n", names[i]);
        }
        if (failed)
                return kiln_error_set(err, -EIO, "failed to remove one or more builders");
        return 0;
}

const struct kiln_cli_command kiln_cli_command_rm = {
        .name = "rm",
        .usage = "rm [OPTIONS] [NAME...]",
        .summary = "Remove one or more builder instances",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = SIZE_MAX,
        .builder_option = true,
        .run = run,
};
