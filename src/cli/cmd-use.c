/* SPDX-License-Identifier: Apache-2.0 */
#include "builder.h"
#include "cli.h"

enum {
        OPT_DEFAULT,
        OPT_GLOBAL,
};

static const struct kiln_cli_option options[] = {
        [OPT_DEFAULT] = { "default", 0, KILN_CLI_OPTION_BOOL,
                          "Also fall back to this builder whenever the current one is removed",
                          NULL, false },
        /* buildx: "Builder persists context changes". kiln has no contexts,
         * so every choice persists; accepted for scripts written for buildx. */
        [OPT_GLOBAL] = { "global", 0, KILN_CLI_OPTION_BOOL, "Builder persists context changes",
                         NULL, true },
};

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_free_ char *name = NULL;
        const char *given = args->n_pos > 0 ? args->pos[0] : cli->builder;
        int r;

        if (!given)
                return kiln_error_set(err, -EINVAL,
                                      "\"%s use\" requires exactly 1 argument\nSee '%s use "
                                      "--help'.",
                                      cli->self, cli->self);
        if (kiln_cli_name_validate(given, &name, NULL) < 0)
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", given);
        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_lock(s, err);
        if (r < 0)
                return r;
        if (!streq(name, KILN_CLI_DEFAULT_BUILDER) && !kiln_cli_store_has(s, name))
                return kiln_error_set(err, -ENOENT, "no builder \"%s\" found", given);
        return kiln_cli_store_set_current(s, name, args->values[OPT_DEFAULT].b, err);
}

const struct kiln_cli_command kiln_cli_command_use = {
        .name = "use",
        .usage = "use [OPTIONS] NAME",
        .summary = "Set the current builder instance",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = 1,
        .builder_option = true,
        .run = run,
};
