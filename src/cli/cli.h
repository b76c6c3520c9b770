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

/* ---- Image verbs (cmd-pull.c), shared with cmd-imagetools.c, du, prune ---- */

struct kiln_cli_store;
struct kiln_cli_builder;
struct kiln_api_event;

/* The store and the builder in use (--builder, KILN_BUILDER, else the
 * current one), its daemon running (kiln_cli_builder_boot with
 * timeout_ms). Both are the caller's to free. */
int kiln_cli_builder_target(struct kiln_cli *cli, uint64_t timeout_ms,
                            struct kiln_cli_store **ret_store, struct kiln_cli_builder **ret,
                            struct kiln_error **err);
/* kiln_cli_builder_target with the default timeout. */
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
        /* Draw on every update. Otherwise, as buildx: at most once per
         * 100 ms (TTY_DISPLAY_RATE ms), and with the real clock a thread
         * of the renderer refreshes the view 150 ms after the last update
         * (what the rate held back, tty timers). */
        bool display_every_update;
};

struct kiln_cli_progress;

/* A renderer. AUTO becomes TTY or PLAIN by isatty(fd); TTY on something
 * that is not a terminal fails with -ENOTTY ("failed to get console: ...").
 * Owned by the caller (kiln_cli_progress_free). Its functions are called
 * from one thread; output may also come from the renderer's own refresher
 * thread (plain and tty with the real clock) until kiln_cli_progress_done
 * or _free, which stop it (other writes to fd meanwhile may interleave
 * with its lines). */
int kiln_cli_progress_new(const struct kiln_cli_progress_options *o, struct kiln_cli_progress **ret,
                          struct kiln_error **err);
struct kiln_cli_progress *kiln_cli_progress_free(struct kiln_cli_progress *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_progress *, kiln_cli_progress_free);

/* The mode in effect (AUTO resolved). */
enum kiln_cli_progress_mode kiln_cli_progress_mode(const struct kiln_cli_progress *p);

/* Takes one progress event of a build stream (vertex, status, log,
 * warning; an error event's source location is kept for
 * kiln_cli_progress_print_source; other types are ignored) and prints what
 * it changes, as
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

/* The Dockerfile of the build (name as -f gave its base name, text of
 * len bytes), copied: what the failure report quotes lines from. Call
 * before the stream starts; a second call replaces the first. */
void kiln_cli_progress_set_source(struct kiln_cli_progress *p, const char *name, const char *text,
                                  size_t len);

/* After kiln_cli_progress_done and the warnings, before "ERROR: ...":
 * when the build's "error" event (given to kiln_cli_progress_event like
 * the others) named the failing instruction's lines and the Dockerfile
 * was set, prints them as buildx does in every progress mode:
 *   Dockerfile:2
 *   --------------------
 *      1 |     FROM alpine
 *      2 | >>> RUN exit 1
 *      3 |
 *   --------------------
 * (a few lines of context; nothing when there is no location). */
void kiln_cli_progress_print_source(const struct kiln_cli_progress *p, FILE *f);

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

/* ---- Build outputs (output.c) ---- */

#include "api/api.h"

struct kiln_cli_http_target;

/* Bytes of `docker load`'s output kept to be shown. */
#define KILN_CLI_LIMIT_DOCKER_LOAD_OUTPUT (1u << 20)
/* How long the Docker engine has to answer GET /_ping before --load. */
#define KILN_CLI_DOCKER_PING_TIMEOUT_MS 10000u
/* Entries of one extracted output (oci tar=false, local). */
#define KILN_CLI_LIMIT_OUTPUT_ENTRIES 10000000u
/* The Docker engine --load talks to when DOCKER_HOST is unset. */
#define KILN_CLI_DOCKER_HOST_DEFAULT "unix:///var/run/docker.sock"

/* Where the bytes of an output go on the client. */
enum kiln_cli_output_sink {
        KILN_CLI_OUTPUT_SINK_NONE,        /* nothing comes back: image/registry, run daemon-side */
        KILN_CLI_OUTPUT_SINK_FILE,        /* dest, replaced atomically once complete */
        KILN_CLI_OUTPUT_SINK_STDOUT,      /* dest=- */
        KILN_CLI_OUTPUT_SINK_DIR,         /* extracted into the directory dest */
        KILN_CLI_OUTPUT_SINK_DOCKER_LOAD, /* piped into `docker load` */
        _KILN_CLI_OUTPUT_SINK_MAX,
        _KILN_CLI_OUTPUT_SINK_INVALID = -EINVAL,
};

/* One output of a build: what the daemon is asked for (api: type and
 * attrs, as buildx sends exporter entries; dest never among them) and
 * where the client puts what comes back. Owned. */
struct kiln_cli_output {
        struct kiln_api_build_output api;
        enum kiln_cli_output_sink sink;
        char *dest; /* FILE, DIR: the path as given; else NULL */
};

struct kiln_cli_outputs {
        struct kiln_cli_output *v;
        size_t n;
        /* A "cacheonly" output was given: no output, on purpose (no
         * "No output specified" warning). */
        bool cache_only;
};

struct kiln_cli_outputs_options {
        const char *const *specs; /* -o values, buildx's CSV syntax; "" skipped */
        size_t n_specs;
        bool push;               /* --push */
        bool load;               /* --load */
        const char *const *tags; /* -t values, already checked as references */
        size_t n_tags;
        bool stdout_is_terminal; /* dest=- is refused on a terminal */
};

/*
 * Turns -o/--push/--load/-t into outputs as buildx does (ExportEntry
 * parsing, CreateExports, --push/--load merging, names from tags):
 *   "PATH" alone is type=local,dest=PATH; "-" is type=tar to stdout;
 *   type=registry becomes type=image,push=true (unpack=false unless given);
 *   --push sets push=true on every image output, else adds one; --load adds
 *   type=docker (no dest) unless a docker output without dest exists;
 *   oci/docker with tar=false, and local, need a directory dest; tar, and
 *   oci/docker as tar, write dest or stdout ("-", or no dest but docker);
 *   docker without dest (tar) is loaded into the local Docker engine;
 *   -t names (comma-joined) become attr "name" of image, oci and docker
 *   outputs; "cacheonly" outputs are dropped.
 * Errors are buildx's ("type is required for output", "dest is required
 * for local exporter", "tag is needed when pushing to registry", ...),
 * -EINVAL; an unknown type fails as BuildKit would ("exporter \"x\" could
 * not be found"). Checks the destinations on disk (a file where a
 * directory is needed and the reverse) but creates nothing. *ret is
 * released with kiln_cli_outputs_release, also on failure. One thread.
 */
int kiln_cli_outputs_parse(const struct kiln_cli_outputs_options *o, struct kiln_cli_outputs *ret,
                           struct kiln_error **err);
void kiln_cli_outputs_release(struct kiln_cli_outputs *o);

/* Copies the outputs' api entries into r->outputs (appended). */
void kiln_cli_outputs_to_request(const struct kiln_cli_outputs *o,
                                 struct kiln_api_build_request *r);

/* Whether any output needs a Docker engine on this machine (--load). */
bool kiln_cli_outputs_need_docker(const struct kiln_cli_outputs *o);

/* The engine --load talks to: $DOCKER_HOST when set and not empty, else
 * KILN_CLI_DOCKER_HOST_DEFAULT. Borrowed from the environment. */
const char *kiln_cli_docker_host(void);

/* Checks, before a build, that `docker load` can work: the docker program
 * is in PATH and the engine at host (unix:// or tcp://; tcp with TLS when
 * DOCKER_TLS_VERIFY is set, certificates from DOCKER_CERT_PATH, else
 * ~/.docker) answers GET /_ping with 200. Other schemes are left to the
 * docker program. Fails with -EHOSTDOWN (or -ENOENT: no docker program)
 * and a message naming host and the cause that says how to get the image
 * otherwise. */
int kiln_cli_docker_check(const char *host, struct kiln_error **err);

/* Receives the bytes of one output and puts them where it goes. Created
 * for a FILE, STDOUT, DIR or DOCKER_LOAD output; fed with
 * kiln_cli_output_writer_write; then kiln_cli_output_writer_finish (complete:
 * the file is renamed into place, the extraction or `docker load` waited
 * for) or kiln_cli_output_writer_free alone (failed: the temporary file is
 * removed, the extraction stopped, `docker load` killed). A DIR sink
 * extracts with libarchive's secure options (no "..", no absolute paths,
 * nothing through a symbolic link), modes and times kept, owners only
 * when running as root, device nodes only as root. One thread per sink;
 * the sink uses a thread (DIR) or a child process (DOCKER_LOAD) of its
 * own. */
struct kiln_cli_output_writer;

int kiln_cli_output_writer_new(const struct kiln_cli_output *o, struct kiln_cli_output_writer **ret,
                               struct kiln_error **err);
int kiln_cli_output_writer_write(struct kiln_cli_output_writer *s, const void *buf, size_t n,
                                 struct kiln_error **err);
/* On success with DOCKER_LOAD, *ret_output (when not NULL) gets what
 * `docker load` printed ("Loaded image: ..."), malloc'd. */
int kiln_cli_output_writer_finish(struct kiln_cli_output_writer *s, char **ret_output,
                                  struct kiln_error **err);
struct kiln_cli_output_writer *kiln_cli_output_writer_free(struct kiln_cli_output_writer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_output_writer *, kiln_cli_output_writer_free);

/* Copies the data of the entry just read from in (a libarchive reader) to
 * out (a writer that took the entry's header). Returns NULL when all of it
 * was copied, else the archive that failed (for archive_error_string). */
struct archive;
struct archive *kiln_cli_archive_copy_data(struct archive *in, struct archive *out);

/* One output's download, GET /v1/build/<id>/export/<index>, run on a
 * thread of its own so that the caller keeps reading the build's events.
 * target and o are borrowed until kiln_cli_export_wait or _free. */
struct kiln_cli_export;

int kiln_cli_export_start(const struct kiln_cli_http_target *target, const char *build_id,
                          unsigned index, const struct kiln_cli_output *o,
                          struct kiln_cli_export **ret, struct kiln_error **err);
/* Waits for the download and the sink; the result of the whole export.
 * *ret_output as kiln_cli_output_writer_finish. *ret_local (when not NULL)
 * tells a failure of the client's side (the file, the extraction, docker
 * load) from one of the download (which a daemon-side failure causes). */
int kiln_cli_export_wait(struct kiln_cli_export *x, char **ret_output, bool *ret_local,
                         struct kiln_error **err);
/* Makes a running download stop soon (kiln_cli_export_wait then fails
 * with -ECANCELED, or with the writer's own failure). Any thread. */
void kiln_cli_export_cancel(struct kiln_cli_export *x);
/* Stops a download that has not been waited for (its sink discards what
 * it wrote) and frees x. */
struct kiln_cli_export *kiln_cli_export_free(struct kiln_cli_export *x);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_export *, kiln_cli_export_free);

/* buildx's metadata file: the exporter response (NULL: none) decoded as
 * buildx's decodeExporterResponse does (strings holding base64 JSON become
 * JSON), with "buildx.build.ref" = ref. A new reference, NULL when out of
 * memory. */
json_t *kiln_cli_build_metadata(const json_t *exporter_response, const char *ref);

/* What --quiet prints: containerimage.config.digest when the response has
 * it, else containerimage.digest, else "" (buildx's getImageID).
 * Borrowed from the response. */
const char *kiln_cli_build_image_id(const json_t *exporter_response);
