/* SPDX-License-Identifier: Apache-2.0 */
#include "cli.h"

static int prune_run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        (void) cli;
        (void) args;
        return kiln_error_set(err, -EOPNOTSUPP, "prune: not implemented");
}

const struct kiln_cli_command kiln_cli_command_prune = {
        .name = "prune",
        .usage = "prune",
        .summary = "Remove build cache",
        .builder_option = true,
        .run = prune_run,
};
