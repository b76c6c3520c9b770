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
#include <sys/types.h>

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
extern const struct kiln_cli_command kiln_cli_command_build;
extern const struct kiln_cli_command kiln_cli_command_du;
extern const struct kiln_cli_command kiln_cli_command_prune;
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

/* ---- Build progress (progress.c) ---- */

struct kiln_api_build_event;

/* Log lines of a vertex kept to be shown again under a failed build (as
 * BuildKit's printer keeps its last 10). */
#define KILN_CLI_PROGRESS_ERROR_LOGS 10u
/* Vertexes of one build tracked by the renderer. */
#define KILN_CLI_LIMIT_PROGRESS_VERTEXES 100000u
/* Statuses per vertex, and warnings of one build. */
#define KILN_CLI_LIMIT_PROGRESS_STATUSES 10000u
/* Bytes of log text a vertex keeps while it is not the one being printed. */
#define KILN_CLI_LIMIT_PROGRESS_PENDING_LOG (4u << 20)

enum kiln_cli_progress_mode {
        KILN_CLI_PROGRESS_AUTO,    /* tty when the output is a terminal, else plain */
        KILN_CLI_PROGRESS_PLAIN,   /* BuildKit's plain printer */
        KILN_CLI_PROGRESS_TTY,     /* a redrawn view; the output must be a terminal */
        KILN_CLI_PROGRESS_QUIET,   /* nothing but errors */
        KILN_CLI_PROGRESS_RAWJSON, /* one SolveStatus JSON object a line */
        _KILN_CLI_PROGRESS_MODE_MAX,
        _KILN_CLI_PROGRESS_MODE_INVALID = -EINVAL,
};

/* "auto", "plain", "tty", "quiet", "rawjson", and buildx's "none" (quiet);
 * -EINVAL for anything else. */
enum kiln_cli_progress_mode kiln_cli_progress_mode_from_string(const char *s);

struct kiln_cli_progress_options {
        enum kiln_cli_progress_mode mode;
        int fd; /* where progress goes (stderr: 2); not closed */
        /* "building with \"NAME\" instance using DRIVER driver": the #0 line
         * of plain output, and the right-hand side of the tty header. NULL:
         * none. Borrowed for the renderer's life. */
        const char *desc;
        const char *console_desc;
        /* The clock (CLOCK_REALTIME, ns) the renderer schedules and times
         * open intervals with; NULL: the real one. For tests. */
        int64_t (*now_ns)(void);
};

struct kiln_cli_progress;

/* A renderer. AUTO becomes TTY or PLAIN by isatty(fd); TTY on something
 * that is not a terminal fails with -ENOTTY ("failed to get console: ...").
 * Owned by the caller (kiln_cli_progress_free). One thread. */
int kiln_cli_progress_new(const struct kiln_cli_progress_options *o, struct kiln_cli_progress **ret,
                          struct kiln_error **err);
struct kiln_cli_progress *kiln_cli_progress_free(struct kiln_cli_progress *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_progress *, kiln_cli_progress_free);

/* The mode in effect (AUTO resolved). */
enum kiln_cli_progress_mode kiln_cli_progress_mode(const struct kiln_cli_progress *p);

/* Takes one progress event of a build stream (vertex, status, log,
 * warning; other types are ignored) and prints what it changes, as
 * BuildKit's display does with one SolveStatus. The event is borrowed. A
 * warning names no vertex: it belongs to the first vertex (the Dockerfile's
 * "load build definition"), as BuildKit attaches lint warnings there. */
void kiln_cli_progress_event(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev);

/* The end of the stream: prints what is still pending and, for plain and
 * tty, the logs of each failed vertex between "------" lines. Call once. */
void kiln_cli_progress_done(struct kiln_cli_progress *p);

/* The warnings of the build, as buildx lists them after the progress
 * (" 1 warning found (use kiln --debug to expand):" and " - <short>" lines;
 * with verbose, the URL too); nothing in quiet and rawjson modes. */
void kiln_cli_progress_print_warnings(const struct kiln_cli_progress *p, FILE *f, bool verbose);
size_t kiln_cli_progress_n_warnings(const struct kiln_cli_progress *p);
/* The warnings as buildx writes them into --metadata-file
 * ("buildx.build.warnings": [{"vertex", "level", "short" (base64),
 * "url"}]); a new reference, or NULL when there is none. */
json_t *kiln_cli_progress_warnings_json(const struct kiln_cli_progress *p);

/* Docker's units.Bytes with "%.2f", as BuildKit prints sizes: "123B",
 * "1.23kB", "3.62MB". */
void kiln_cli_progress_format_bytes(int64_t n, char out[static 32]);

/* ---- Build context (context.c) ---- */

struct kiln_api_context_entry;

/* Bytes of one .dockerignore and of a Dockerfile read by the client. */
#define KILN_CLI_LIMIT_DOCKERFILE (16u << 20)
/* Entries of one context walk (the API's limit). */
#define KILN_CLI_LIMIT_CONTEXT_ENTRIES 1000000u
/* Directory depth of a context walk. */
#define KILN_CLI_LIMIT_CONTEXT_DEPTH 256u

/* What a context walk selects, as BuildKit's fsutil filter: a path is kept
 * when it matches an include pattern (or none is given) and matches no
 * exclude pattern; the .dockerignore patterns are exclude patterns too;
 * follow paths are added to the include patterns after their symbolic
 * links were resolved (the links and their targets). All borrowed. */
struct kiln_cli_context_filter {
        const char *const *ignore; /* .dockerignore patterns */
        size_t n_ignore;
        const char *const *include;
        size_t n_include;
        const char *const *exclude;
        size_t n_exclude;
        const char *const *follow_paths;
        size_t n_follow_paths;
};

/* Walks the directory dir_fd (name: what errors call it) without following
 * symbolic links and lists what the filter keeps: directories (every
 * parent of a kept path too), regular files and symbolic links (target
 * recorded, never followed), from lstat: mode (type bits included), size,
 * mtime in ns, uid, gid; sorted by path (strcmp), relative, clean. Other
 * file types (sockets, fifos, devices) are left out. *ret is freed with
 * kiln_api_context_entries_free. Errors name the path. */
int kiln_cli_context_walk(int dir_fd, const char *name, const struct kiln_cli_context_filter *f,
                          struct kiln_api_context_entry **ret, size_t *n_ret,
                          struct kiln_error **err);

/* The .dockerignore that applies, as BuildKit's dockerui picks it:
 * <dockerfile>.dockerignore beside the Dockerfile when dockerfile (a path
 * as given to -f, relative to the working directory) is not NULL and that
 * file exists, else <context>/.dockerignore. Returns 1 and *ret (its text,
 * malloc'd, NUL-terminated) when one exists, 0 (*ret NULL) when none. */
int kiln_cli_context_dockerignore(int dir_fd, const char *name, const char *dockerfile, char **ret,
                                  struct kiln_error **err);

/* An uncompressed pax tar of the regular files paths[0..n) of dir_fd (the
 * entries' own paths, borrowed for the stream's life), produced as it is
 * read: at most one file chunk is held in memory. Headers carry the
 * entries' metadata; a file that changed size since it was listed fails
 * the stream. Files are opened beneath dir_fd without following any
 * symbolic link. cancel (NULL: never) is checked between chunks. */
struct kiln_cli_context_tar;

int kiln_cli_context_tar_new(int dir_fd, const char *name,
                             const struct kiln_api_context_entry *entries, size_t n_entries,
                             const char *const *paths, size_t n, const volatile int *cancel,
                             struct kiln_cli_context_tar **ret, struct kiln_error **err);
/* Up to n bytes of the tar into buf: the count, 0 at its end, or -errno
 * with *err set (-ECANCELED when cancelled). */
ssize_t kiln_cli_context_tar_read(struct kiln_cli_context_tar *t, void *buf, size_t n,
                                  struct kiln_error **err);
/* Files and bytes of content sent so far. */
void kiln_cli_context_tar_stats(const struct kiln_cli_context_tar *t, uint64_t *files,
                                uint64_t *bytes);
struct kiln_cli_context_tar *kiln_cli_context_tar_free(struct kiln_cli_context_tar *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_context_tar *, kiln_cli_context_tar_free);
