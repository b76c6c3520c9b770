/* SPDX-License-Identifier: Apache-2.0 */
#include "builder.h"
#include "cli.h"

enum {
        OPT_TIMEOUT,
};

static const struct kiln_cli_option options[] = {
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "How long the daemon gets to stop before it is killed", "20s", false },
};

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        int r;

        /* An implicit default builder has nothing to stop: it stays so. */
        r = kiln_cli_open_builder(cli, args, /* materialize= */ false, &s, &b, err);
        if (r < 0)
                return r;
        return kiln_cli_builder_stop(s, b, kiln_cli_args_timeout_ms(args, OPT_TIMEOUT), err);
}

const struct kiln_cli_command kiln_cli_command_stop = {
        .name = "stop",
        .usage = "stop [NAME]",
        .summary = "Stop builder instance",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = 1,
        .builder_option = true,
        .run = run,
};
