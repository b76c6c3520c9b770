/* SPDX-License-Identifier: Apache-2.0 */
#include "cli.h"
#include "kiln-version.h"

/* As buildx's "github.com/docker/buildx v0.x.y": package and version, in
 * the same words kilnd --version uses. */
static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        printf("kiln github.com/kiln %s\n", KILN_VERSION);
        return 0;
}

const struct kiln_cli_command kiln_cli_command_version = {
        .name = "version",
        .usage = "version",
        .summary = "Show kiln version information",
        .max_args = 0,
        .run = run,
};
