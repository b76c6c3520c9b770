/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * kiln, the client: the pieces every subcommand shares.
 *
 *   struct kiln_cli            what main.c knows before a command runs: the
 *                              global --builder (or KILN_BUILDER) and the
 *                              client state directory (KILN_CONFIG)
 *   struct kiln_cli_command    one row of the command table: usage, options
 *                              and the function that runs it
 *   kiln_cli_args_parse()      cobra-like flag parsing into positional
 *                              arguments and option values
 *   helpers.c                  pure helpers with unit tests: shell-word and
 *                              CSV splitting, builder names, a tab aligner
 *                              and the platform list of `kiln ls`; the
 *                              monotonic clock the waits are measured with
 *
 * A kiln process runs its command on one thread; only `kiln ls` asks its
 * builders from several (builder.h says what is safe there). The helpers
 * here keep no state and are safe on any thread.
 */

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <stdio.h>

#include "base/error.h"

/* The longest builder name; a name is also a directory and part of a unix
 * socket path, which has to fit in 107 bytes. */
#define KILN_CLI_NAME_MAX 64u
/* --buildkitd-flags, --driver-opt and other words read from the command
 * line before they are split. */
#define KILN_CLI_LIMIT_WORDS (64u << 10)
/* How long commands wait for a builder by default (buildx's --timeout). */
#define KILN_CLI_TIMEOUT_DEFAULT_MS 20000u
/* --timeout 0: no limit, in practice (a day). */
#define KILN_CLI_TIMEOUT_NONE_MS (24u * 3600u * 1000u)

struct kiln_cli {
        const char *builder; /* --builder or KILN_BUILDER; NULL: the current one */
        char *config_dir;    /* $KILN_CONFIG, else ~/.kiln; absolute */
        const char *self;    /* "kiln": what help and errors call the program */
};

/* ---- Options ---- */

enum kiln_cli_option_kind {
        KILN_CLI_OPTION_BOOL,     /* --flag, --flag=true|false */
        KILN_CLI_OPTION_STRING,   /* --flag value, --flag=value; the last one wins */
        KILN_CLI_OPTION_STRINGS,  /* repeatable: every value is kept, in order */
        KILN_CLI_OPTION_DURATION, /* Go duration ("20s", "1m30s") or seconds */
        _KILN_CLI_OPTION_KIND_MAX,
        _KILN_CLI_OPTION_KIND_INVALID = -EINVAL,
};

struct kiln_cli_option {
        const char *name; /* long name, without "--" */
        char short_name;  /* 0: none */
        enum kiln_cli_option_kind kind;
        const char *help;
        const char *default_text; /* shown as "(default ...)" */
        bool hidden;              /* accepted, not shown in --help */
};

struct kiln_cli_value {
        bool set;
        bool b;
        const char *s;  /* STRING: borrowed from argv */
        const char **v; /* STRINGS: malloc'd array of borrowed strings */
        size_t n;
        int64_t ns; /* DURATION, nanoseconds */
};

struct kiln_cli_args {
        struct kiln_cli_value *values; /* one per option of the command */
        size_t n_values;
        char **pos; /* positional arguments, borrowed from argv */
        size_t n_pos;
        bool help;
};

struct kiln_cli_command {
        const char *name;
        const char *usage;   /* after "kiln ": "create [OPTIONS] [ENDPOINT]" */
        const char *summary; /* one line, for `kiln --help` and `kiln CMD --help` */
        const struct kiln_cli_option *options;
        size_t n_options;
        size_t min_args, max_args;
        /* Takes the global --builder as its own option (shown in its help). */
        bool builder_option;
        /* Returns 0, or -errno with *err set: main prints "ERROR: <message>"
         * and exits with 1. A command that prints its own error returns
         * -errno and leaves *err unset. */
        int (*run)(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err);
};

/* Parses argv[1..argc) (argv[0] is the command name) against cmd's options
 * and the global ones (--builder, which sets cli->builder, and -h/--help).
 * Flags and positional arguments may be mixed; "--" ends the flags. Checks
 * the number of positional arguments (unless --help was given). On failure
 * returns -EINVAL with *err set ("unknown flag: --x"...). */
int kiln_cli_args_parse(struct kiln_cli *cli, const struct kiln_cli_command *cmd, int argc,
                        char **argv, struct kiln_cli_args *ret, struct kiln_error **err);
void kiln_cli_args_release(struct kiln_cli_args *a);

/* `kiln CMD --help`, in docker's layout. */
void kiln_cli_command_help(const struct kiln_cli *cli, const struct kiln_cli_command *cmd, FILE *f);

/* The timeout of a command with a "timeout" option at index i, else the
 * default, in milliseconds (at least 1; 0 given means no limit). */
uint64_t kiln_cli_args_timeout_ms(const struct kiln_cli_args *a, size_t i);

/* ---- Commands (cmd-*.c) ---- */

extern const struct kiln_cli_command kiln_cli_command_create;
extern const struct kiln_cli_command kiln_cli_command_use;
extern const struct kiln_cli_command kiln_cli_command_ls;
extern const struct kiln_cli_command kiln_cli_command_inspect;
extern const struct kiln_cli_command kiln_cli_command_stop;
extern const struct kiln_cli_command kiln_cli_command_rm;
extern const struct kiln_cli_command kiln_cli_command_logs;
extern const struct kiln_cli_command kiln_cli_command_version;
extern const struct kiln_cli_command kiln_cli_command_pull;
/* `kiln imagetools` alone (its help) and its verbs, which main.c
 * dispatches to when the next word names one. */
extern const struct kiln_cli_command kiln_cli_command_imagetools;
extern const struct kiln_cli_command kiln_cli_command_imagetools_inspect;
extern const struct kiln_cli_command kiln_cli_command_imagetools_create;

/* ---- Image verbs (cmd-pull.c), shared with cmd-imagetools.c ---- */

struct kiln_cli_store;
struct kiln_cli_builder;
struct kiln_api_event;

/* The store and the builder in use (--builder, KILN_BUILDER, else the
 * current one), its daemon running. */
int kiln_cli_image_target(struct kiln_cli *cli, struct kiln_cli_store **ret_store,
                          struct kiln_cli_builder **ret, struct kiln_error **err);
/* One plain progress line for a registry event (byte progress is not
 * printed). */
void kiln_cli_image_event_print(const struct kiln_api_event *ev, FILE *f);
/* Handles one event of an image operation's NDJSON stream: progress is
 * printed to stderr, an error event replaces *error (caller frees), the
 * result is handed to on_result. Unknown event types are skipped. */
typedef int (*kiln_cli_image_result_fn)(json_t *j, void *userdata, struct kiln_error **err);
int kiln_cli_image_stream_event(json_t *j, char **error, kiln_cli_image_result_fn on_result,
                                void *userdata, struct kiln_error **err);

/* ---- Pure helpers (helpers.c) ---- */

/* CLOCK_MONOTONIC in milliseconds: what deadlines are measured with. */
uint64_t kiln_cli_now_ms(void);
/* Sleeps ms milliseconds, resuming after a signal handler ran. */
void kiln_cli_sleep_ms(unsigned ms);

/* Splits s into words as a POSIX shell would, without expansions: blanks
 * separate words; '...' is literal; in "..." a backslash escapes only
 * $ ` " \ and a newline; outside quotes it escapes any character;
 * backslash-newline joins lines; '#' at the start of a word starts a
 * comment. *ret gets *ret_n malloc'd words and a NULL (free with
 * kiln_cli_strv_free). Fails with -EINVAL (unterminated quote, trailing
 * backslash) or -E2BIG (longer than KILN_CLI_LIMIT_WORDS) and *err. */
int kiln_cli_shell_split(const char *s, char ***ret, size_t *ret_n, struct kiln_error **err);

/* Splits one CSV record (RFC 4180: fields between commas, "..." quotes a
 * field, "" inside quotes is one "), as buildx reads --driver-opt values.
 * An empty string has no fields. Same ownership and errors as above. */
int kiln_cli_csv_split(const char *s, char ***ret, size_t *ret_n, struct kiln_error **err);

char **kiln_cli_strv_free(char **v);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, kiln_cli_strv_free);

/* buildx's rule for instance names: a letter, then letters, digits, '.',
 * '-' or '_', at most KILN_CLI_NAME_MAX bytes. *ret (when not NULL) gets
 * the lower-cased name, which is what is stored. -EINVAL and *err. */
int kiln_cli_name_validate(const char *s, char **ret, struct kiln_error **err);

/* A generated name, "adjective_scientist", as buildx (docker's name
 * generator) makes them; with retry > 0 a digit is appended, so that a
 * clash can be retried. random supplies the choice (two independent
 * draws are taken from its bits). Never "boring_wozniak". Caller frees. */
char *kiln_cli_name_generate(unsigned retry, uint64_t random);

/* Aligns text whose cells end in '\t' as Go's text/tabwriter does: a
 * column is as wide as its widest cell plus padding (at least minwidth),
 * computed over each run of consecutive lines that have that column; the
 * last cell of a line is not a column. Trailing blanks are dropped. Caller
 * frees. */
char *kiln_cli_tabs_align(const char *text, size_t minwidth, size_t padding);

/* The PLATFORMS cell of `kiln ls`: all of them joined with ", ", or with
 * truncate, grouped by os/arch as buildx does ("linux/amd64 (+3)"), the
 * common architectures first, at most max groups, then "(N more)". */
char *kiln_cli_platforms_format(const char *const *platforms, size_t n, bool truncate, size_t max);
