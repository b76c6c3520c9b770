/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln: the client, with buildx's verbs. Each verb is a row of the command
 * table; the builder verbs arrive with builder instances.
 */
#include <stdio.h>

#include "base/macro.h"
#include "kiln-version.h"

struct kiln_cmd {
        const char *name;
        const char *summary;
        int (*run)(int argc, char **argv);
};

static int cmd_version(int argc, char **argv);

static const struct kiln_cmd commands[] = {
        { "version", "Show kiln version information", cmd_version },
};

static void usage(FILE *f)
{
        fprintf(f, "Usage:  kiln [OPTIONS] COMMAND\n\n"
                   "Build container images with kilnd, BuildKit-compatible\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\nRun 'kiln COMMAND --help' for more information on a command.\n");
}

static int cmd_version(int argc, char **argv)
{
        if (argc > 1 && (streq(argv[1], "--help") || streq(argv[1], "-h"))) {
                printf("Usage:  kiln version\n\nShow kiln version information\n");
                return 0;
        }
        if (argc > 1) {
                fprintf(stderr, "ERROR: \"kiln version\" accepts no arguments\n");
                return 1;
        }
        printf("kiln %s\n", KILN_VERSION);
        return 0;
}

int main(int argc, char **argv)
{
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h") ||
            streq(argv[1], "help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 1 : 0;
        }
        if (streq(argv[1], "--version") || streq(argv[1], "-v"))
                return cmd_version(1, argv);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(argv[1], commands[i].name))
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "ERROR: unknown command: \"kiln %s\"\nRun 'kiln --help' for usage.\n",
                argv[1]);
        return 1;
}
