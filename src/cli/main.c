/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln: the client, with buildx's verbs. Each verb is a row of the command
 * table and a cmd-<verb>.c; this file reads the global options, finds the
 * row, and turns a failure into "ERROR: ..." and exit status 1.
 */
#include <pwd.h>

#include "base/fs.h"
#include "base/log.h"
#include "cli.h"

/* Sorted by name, as `kiln --help` lists them. */
static const struct kiln_cli_command *const commands[] = {
        &kiln_cli_command_build,      &kiln_cli_command_create,  &kiln_cli_command_du,
        &kiln_cli_command_imagetools, &kiln_cli_command_inspect, &kiln_cli_command_logs,
        &kiln_cli_command_ls,         &kiln_cli_command_prune,   &kiln_cli_command_pull,
        &kiln_cli_command_rm,         &kiln_cli_command_stop,    &kiln_cli_command_use,
        &kiln_cli_command_version,
};

/* `kiln imagetools VERB`: the rows of its verbs. */
static const struct kiln_cli_command *const imagetools_commands[] = {
        &kiln_cli_command_imagetools_create,
        &kiln_cli_command_imagetools_inspect,
};

static void usage(FILE *f)
{
        size_t width = 11;

        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strlen(commands[i]->name) > width)
                        width = strlen(commands[i]->name);
        fprintf(f, "\nUsage:  kiln [OPTIONS] COMMAND\n\n"
                   "Build container images with kilnd, the BuildKit-compatible daemon\n\n"
                   "Options:\n"
                   "      --builder string   Override the configured builder instance\n"
                   "  -D, --debug            Enable debug logging\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  %-*s %s\n", (int) width, commands[i]->name, commands[i]->summary);
        fprintf(f, "\nRun 'kiln COMMAND --help' for more information on a command.\n");
}

/* $KILN_CONFIG (made absolute), else ~/.kiln. */
static int config_dir(char **ret, struct kiln_error **err)
{
        const char *dir = getenv("KILN_CONFIG"), *home;

        if (dir && dir[0]) {
                int r = kiln_path_absolute(dir, ret);

                if (r < 0)
                        return kiln_error_set(err, r, "resolve KILN_CONFIG '%s': %s", dir,
                                              strerror(-r));
                return 0;
        }
        home = getenv("HOME");
        if (!home || home[0] != '/') {
                struct passwd *pw = getpwuid(getuid());

                home = pw ? pw->pw_dir : NULL;
        }
        if (!home || home[0] != '/')
                return kiln_error_set(err, -ENOENT,
                                      "no home directory to keep builders in: set KILN_CONFIG");
        *ret = kiln_xasprintf("%s/.kiln", home);
        return 0;
}

static const struct kiln_cli_command *command_find(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(name, commands[i]->name))
                        return commands[i];
        return NULL;
}

static int run_command(struct kiln_cli *cli, const struct kiln_cli_command *cmd, int argc,
                       char **argv)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_cli_args_release) struct kiln_cli_args args = { 0 };
        int r;

        r = kiln_cli_args_parse(cli, cmd, argc, argv, &args, &err);
        if (r < 0) {
                fprintf(stderr, "ERROR: %s\n", kiln_error_message(err));
                return 1;
        }
        if (args.help) {
                kiln_cli_command_help(cli, cmd, stdout);
                return 0;
        }
        r = cmd->run(cli, &args, &err);
        if (fflush(stdout) != 0 && r >= 0) {
                fprintf(stderr, "ERROR: write output: %s\n", strerror(errno));
                return 1;
        }
        if (r < 0) {
                if (err)
                        fprintf(stderr, "ERROR: %s\n", kiln_error_message(err));
                return 1;
        }
        return 0;
}

int main(int argc, char **argv)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *dir = NULL;
        struct kiln_cli cli = { .self = "kiln" };
        const struct kiln_cli_command *cmd;
        const char *env;
        int i, r;

        env = getenv("KILN_BUILDER");
        if (env && env[0])
                cli.builder = env;
        kiln_log_set_level(KILN_LOG_WARN);

        /* Global options come before the command (--builder may also come
         * after it: the command's parser takes it too). */
        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                const char *a = argv[i];

                if (streq(a, "--help") || streq(a, "-h")) {
                        usage(stdout);
                        return 0;
                }
                if (streq(a, "--version") || streq(a, "-v"))
                        return run_command(&cli, &kiln_cli_command_version, 1, argv);
                if (streq(a, "--debug") || streq(a, "-D"))
                        kiln_log_set_level(KILN_LOG_DEBUG);
                else if (streq(a, "--builder")) {
                        if (i + 1 >= argc) {
                                fprintf(stderr, "ERROR: flag needs an argument: --builder\n"
                                                "See 'kiln --help'.\n");
                                return 1;
                        }
                        cli.builder = argv[++i];
                } else if (startswith(a, "--builder="))
                        cli.builder = a + strlen("--builder=");
                else {
                        fprintf(stderr, "ERROR: unknown flag: %s\nSee 'kiln --help'.\n", a);
                        return 1;
                }
        }
        if (i >= argc) {
                usage(stdout);
                return 0;
        }
        if (streq(argv[i], "help")) {
                cmd = i + 1 < argc ? command_find(argv[i + 1]) : NULL;
                if (cmd)
                        kiln_cli_command_help(&cli, cmd, stdout);
                else
                        usage(stdout);
                return 0;
        }
        cmd = command_find(argv[i]);
        if (!cmd) {
                fprintf(stderr, "ERROR: unknown command: \"%s\"\nSee 'kiln --help'.\n", argv[i]);
                return 1;
        }
        if (cmd == &kiln_cli_command_imagetools && i + 1 < argc)
                for (size_t j = 0; j < ELEMENTSOF(imagetools_commands); j++)
                        if (streq(argv[i + 1],
                                  imagetools_commands[j]->name + strlen("imagetools "))) {
                                cmd = imagetools_commands[j];
                                i++;
                                break;
                        }

        r = config_dir(&dir, &err);
        if (r < 0) {
                fprintf(stderr, "ERROR: %s\n", kiln_error_message(err));
                return 1;
        }
        cli.config_dir = dir;

        return run_command(&cli, cmd, argc - i, argv + i);
}
