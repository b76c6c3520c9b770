/* SPDX-License-Identifier: Apache-2.0 */
#include "cli.h"

static int du_run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        (void) cli;
        (void) args;
        return kiln_error_set(err, -EOPNOTSUPP, "du: not implemented");
}

const struct kiln_cli_command kiln_cli_command_du = {
        .name = "du",
        .usage = "du",
        .summary = "Disk usage",
        .builder_option = true,
        .run = du_run,
};
