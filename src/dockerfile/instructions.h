/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Dockerfile instructions: turns the parser's AST (parser.h) into typed
 * commands grouped into build stages, as BuildKit's
 * frontend/dockerfile/instructions package does (Parse, ParseInstruction).
 *
 * Every instruction and flag of the stable Dockerfile syntax is checked here
 * with BuildKit's error texts. Variables are NOT expanded here: the
 * converter calls kiln_dockerfile_cmd_expand() (and _expand_raw()) per
 * command with its own word expander, as BuildKit's dispatcher calls the
 * Expand/ExpandRaw methods.
 *
 * All strings are NUL-terminated and owned by the structure holding them;
 * a string taken from the input that contains a NUL byte is refused.
 * Nothing here does I/O; the functions are reentrant, one tree per thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "dockerfile/parser.h"

/* Stages in one Dockerfile. */
#define KILN_LIMIT_DOCKERFILE_STAGES 1024
/* --mount / --device / --exclude values on one instruction. */
#define KILN_LIMIT_DOCKERFILE_FLAG_VALUES 256

enum kiln_dockerfile_cmd_type {
        KILN_DOCKERFILE_CMD_ADD,
        KILN_DOCKERFILE_CMD_ARG,
        KILN_DOCKERFILE_CMD_CMD,
        KILN_DOCKERFILE_CMD_COPY,
        KILN_DOCKERFILE_CMD_ENTRYPOINT,
        KILN_DOCKERFILE_CMD_ENV,
        KILN_DOCKERFILE_CMD_EXPOSE,
        KILN_DOCKERFILE_CMD_HEALTHCHECK,
        KILN_DOCKERFILE_CMD_LABEL,
        KILN_DOCKERFILE_CMD_MAINTAINER,
        KILN_DOCKERFILE_CMD_ONBUILD,
        KILN_DOCKERFILE_CMD_RUN,
        KILN_DOCKERFILE_CMD_SHELL,
        KILN_DOCKERFILE_CMD_STOPSIGNAL,
        KILN_DOCKERFILE_CMD_USER,
        KILN_DOCKERFILE_CMD_VOLUME,
        KILN_DOCKERFILE_CMD_WORKDIR,
};

/* ENV and LABEL: one name/value pair (BuildKit's KeyValuePair). */
struct kiln_dockerfile_kv {
        char *key;
        char *value;
        bool no_delim; /* legacy "ENV key value" form, without '=' */
};

/* ARG: one name with an optional default (KeyValuePairOptional). */
struct kiln_dockerfile_arg {
        char *key;
        char *value; /* NULL when declared without "=": no default */
        /* From a comment line "# <key> <text>" right above the ARG: the
         * text; "" otherwise. */
        char *doc_comment;
};

/* A heredoc used as a COPY/ADD source (SourceContent). */
struct kiln_dockerfile_source_content {
        char *path;  /* the heredoc name, used as the file name */
        char *data;  /* content, leading tabs already removed for "<<-" */
        bool expand; /* unquoted delimiter: expand_raw() expands data */
};

/* A heredoc attached to RUN/CMD/ENTRYPOINT (ShellInlineFile). */
struct kiln_dockerfile_inline_file {
        char *name;
        char *data; /* content as written (not chomped: see chomp) */
        bool chomp; /* "<<-": strip leading tabs when writing the file */
};

/* RUN, CMD, ENTRYPOINT (ShellDependantCmdLine). */
struct kiln_dockerfile_cmdline {
        /* Exec form: the JSON array's elements. Shell form: one element, the
         * arguments joined with single spaces. May be empty (e.g. CMD []). */
        char **args;
        size_t n_args;
        struct kiln_dockerfile_inline_file *files;
        size_t n_files;
        /* true for the shell form (run through the stage's SHELL), false for
         * the JSON exec form. */
        bool prepend_shell;
};

/* COPY and ADD (SourcesAndDest plus the flags of both). */
struct kiln_dockerfile_copy {
        char **sources; /* source paths/URLs, heredoc markers removed */
        size_t n_sources;
        struct kiln_dockerfile_source_content *contents; /* heredoc sources */
        size_t n_contents;
        char *dest;
        char *from;  /* COPY --from, "" when absent (always "" for ADD) */
        char *chown; /* --chown, "" when absent */
        /* --chmod as written, "" when absent. Checked by
         * kiln_dockerfile_chmod_parse() after expansion, as BuildKit does at
         * dispatch time. */
        char *chmod;
        bool link;       /* --link */
        bool parents;    /* COPY --parents */
        char **excludes; /* --exclude, repeatable, in order */
        size_t n_excludes;
        char *checksum;        /* ADD --checksum, "" when absent */
        bool keep_git_dir_set; /* ADD --keep-git-dir given ... */
        bool keep_git_dir;     /* ... and its value */
        bool unpack_set;       /* ADD --unpack given ... */
        bool unpack;           /* ... and its value */
};

enum kiln_dockerfile_mount_type {
        KILN_DOCKERFILE_MOUNT_BIND, /* the default */
        KILN_DOCKERFILE_MOUNT_CACHE,
        KILN_DOCKERFILE_MOUNT_TMPFS,
        KILN_DOCKERFILE_MOUNT_SECRET,
        KILN_DOCKERFILE_MOUNT_SSH,
};

enum kiln_dockerfile_mount_sharing {
        KILN_DOCKERFILE_SHARING_UNSET, /* not given: the converter uses shared */
        KILN_DOCKERFILE_SHARING_SHARED,
        KILN_DOCKERFILE_SHARING_PRIVATE,
        KILN_DOCKERFILE_SHARING_LOCKED,
};

/* One RUN --mount (BuildKit's Mount), after expansion. */
struct kiln_dockerfile_mount {
        enum kiln_dockerfile_mount_type type;
        char *from;         /* "" when absent */
        char *source;       /* source=/src=, "" when absent */
        char *target;       /* target=/dst=/destination=, "" when absent */
        bool readonly;      /* default: true for bind/secret/ssh, false for cache/tmpfs */
        int64_t size_limit; /* tmpfs size= in bytes, 0 when absent */
        char *cache_id;     /* id=, "" when absent */
        enum kiln_dockerfile_mount_sharing sharing;
        bool required; /* secret/ssh required[=bool] */
        char *env;     /* secret env=, NULL when absent */
        bool has_mode, has_uid, has_gid;
        uint32_t mode; /* octal mode= */
        uint32_t uid, gid;
};

enum kiln_dockerfile_network {
        KILN_DOCKERFILE_NETWORK_DEFAULT,
        KILN_DOCKERFILE_NETWORK_NONE,
        KILN_DOCKERFILE_NETWORK_HOST,
};

enum kiln_dockerfile_security {
        KILN_DOCKERFILE_SECURITY_SANDBOX,
        KILN_DOCKERFILE_SECURITY_INSECURE,
};

/* One RUN --device. */
struct kiln_dockerfile_device {
        char *name;
        bool required;
};

struct kiln_dockerfile_run {
        struct kiln_dockerfile_cmdline cmdline;
        /* The raw --mount values, in order. Parsed into mounts by
         * kiln_dockerfile_cmd_expand(); at parse time only their CSV syntax
         * and the from=$VAR rule are checked, as in BuildKit. */
        char **mount_specs;
        size_t n_mount_specs;
        /* n_mount_specs entries once kiln_dockerfile_cmd_expand() succeeded,
         * NULL before. */
        struct kiln_dockerfile_mount *mounts;
        size_t n_mounts;
        enum kiln_dockerfile_network network;
        enum kiln_dockerfile_security security;
        struct kiln_dockerfile_device *devices;
        size_t n_devices;
        /* Names of the flags given ("mount", "network", ...), without
         * duplicates, in order of first use (BuildKit's FlagsUsed). */
        char **flags_used;
        size_t n_flags_used;
};

/* HEALTHCHECK (the image config's HealthcheckConfig). */
struct kiln_dockerfile_healthcheck {
        /* {"NONE"}, {"CMD", args...} (exec form) or {"CMD-SHELL", command}. */
        char **test;
        size_t n_test;
        /* Durations in nanoseconds, 0 when not given. */
        int64_t interval, timeout, start_period, start_interval;
        int32_t retries; /* 0 when not given */
};

/* One command inside a stage (or an ARG before the first FROM). */
struct kiln_dockerfile_cmd {
        enum kiln_dockerfile_cmd_type type;
        /* The instruction keyword as written ("run", "RUN"): BuildKit's
         * Name(). */
        char *name;
        /* The instruction's source text, trimmed (BuildKit's String(), used
         * in progress names and history). */
        char *code;
        unsigned start_line, end_line; /* 1-based, from the node */
        union {
                struct kiln_dockerfile_copy copy; /* ADD, COPY */
                struct {                          /* ARG */
                        struct kiln_dockerfile_arg *args;
                        size_t n_args;
                } arg;
                struct kiln_dockerfile_cmdline cmdline; /* CMD, ENTRYPOINT */
                struct {                                /* ENV, LABEL */
                        struct kiln_dockerfile_kv *kvs;
                        size_t n_kvs;
                } kv;
                struct { /* EXPOSE (sorted), VOLUME (trimmed), SHELL */
                        char **items;
                        size_t n_items;
                } list;
                struct kiln_dockerfile_healthcheck healthcheck;
                /* MAINTAINER name, ONBUILD trigger expression, STOPSIGNAL
                 * signal, USER user, WORKDIR path. */
                char *word;
                struct kiln_dockerfile_run run;
        };
        /* The comment lines right above the instruction, text after '#'
         * (BuildKit's Comments(), for the linter). */
        char **comments;
        size_t n_comments;
};

/* A build stage: a FROM and the commands up to the next FROM. */
struct kiln_dockerfile_stage {
        /* "AS name" lower-cased, "" when unnamed. Matched case-insensitively
         * by kiln_dockerfile_find_stage(). */
        char *name;
        char *orig_cmd;  /* the FROM keyword as written */
        char *base_name; /* image or stage reference, unexpanded */
        char *platform;  /* --platform value unexpanded, "" when absent */
        char *code;      /* the FROM instruction's source text, trimmed */
        unsigned start_line, end_line;
        struct kiln_dockerfile_cmd **cmds;
        size_t n_cmds;
        /* From a comment line "# <name> <text>" right above the FROM: the
         * text; "" otherwise. */
        char *doc_comment;
        /* The comment lines right above the FROM (BuildKit's Comments). */
        char **comments;
        size_t n_comments;
        /* For the linter's casing rules: the name and the "AS" word as
         * written; "" when unnamed. */
        char *orig_name;
        char *as_word;
};

/* The result of kiln_dockerfile_instructions_parse(). */
struct kiln_dockerfile_instructions {
        struct kiln_dockerfile_stage *stages;
        size_t n_stages;
        /* The ARG commands before the first FROM (type ARG), in order. */
        struct kiln_dockerfile_cmd **meta_args;
        size_t n_meta_args;
};

/*
 * Parses every instruction under root (from kiln_dockerfile_parse()) and
 * groups them into stages (BuildKit's instructions.Parse). file names the
 * Dockerfile in messages (NULL: "<input>"). On success stores a new tree in
 * *ret (free with kiln_dockerfile_instructions_free) and returns 0. On
 * failure returns -EINVAL (or -E2BIG past a limit) and sets *err to
 * "file:line: <BuildKit's text>" with err->line (and err->file) set to the
 * instruction's first line. The location is said once, where BuildKit adds
 * "dockerfile parse error on line N: " to it: "Dockerfile:3: unknown
 * instruction: FOO (did you mean FROM?)"; an instruction other than ARG
 * before the first FROM gives "no build stage in current context".
 * Thread-safe for distinct trees.
 */
int kiln_dockerfile_instructions_parse(const struct kiln_dockerfile_node *root, const char *file,
                                       struct kiln_dockerfile_instructions **ret,
                                       struct kiln_error **err);

struct kiln_dockerfile_instructions *
kiln_dockerfile_instructions_free(struct kiln_dockerfile_instructions *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_instructions *,
                            kiln_dockerfile_instructions_free);

/*
 * Parses one instruction node (BuildKit's ParseInstruction). A FROM yields a
 * stage in *stage_ret (free with kiln_dockerfile_stage_free) and leaves
 * *cmd_ret NULL; any other instruction yields *cmd_ret (free with
 * kiln_dockerfile_cmd_free) and leaves *stage_ret NULL. Errors as
 * kiln_dockerfile_instructions_parse() but without the "dockerfile parse
 * error on line N: " part.
 */
int kiln_dockerfile_instruction_parse(const struct kiln_dockerfile_node *node, const char *file,
                                      struct kiln_dockerfile_cmd **cmd_ret,
                                      struct kiln_dockerfile_stage **stage_ret,
                                      struct kiln_error **err);

struct kiln_dockerfile_cmd *kiln_dockerfile_cmd_free(struct kiln_dockerfile_cmd *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_cmd *, kiln_dockerfile_cmd_free);
struct kiln_dockerfile_stage *kiln_dockerfile_stage_free(struct kiln_dockerfile_stage *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_stage *, kiln_dockerfile_stage_free);

/*
 * Single-word expansion callback (BuildKit's SingleWordExpander): expands
 * word into a new string stored in *out (freed by the caller of the
 * callback) and returns 0, or returns -errno and sets *err.
 */
typedef int (*kiln_dockerfile_expand_fn)(void *userdata, const char *word, char **out,
                                         struct kiln_error **err);

/*
 * True when BuildKit expands variables in this instruction through its
 * Expand method, i.e. when kiln_dockerfile_cmd_expand() changes something:
 *   ADD        chown, chmod, checksum, sources, dest (in that order)
 *   ARG        every key and (when present) value. BuildKit's dispatcher
 *              skips Expand for ARG and expands the values itself, so that
 *              an error in an unused default can be ignored.
 *   COPY       chown, chmod, sources, dest. Not --from: BuildKit refuses a
 *              --from that expansion would change ("variable expansion is
 *              not supported for --from, ...") when resolving stages.
 *   ENV, LABEL every key and value
 *   RUN        the values of every --mount key=value (mounts re-parsed)
 *   STOPSIGNAL, USER, WORKDIR  the word
 *   VOLUME     every path
 * Heredoc sources of ADD/COPY: see kiln_dockerfile_cmd_expand_raw().
 * Not here: CMD, ENTRYPOINT and RUN command lines (the shell expands them),
 * EXPOSE (the converter expands its ports itself), HEALTHCHECK, MAINTAINER,
 * ONBUILD, SHELL, and FROM's base name and --platform (the converter expands
 * those with the meta args only).
 */
bool kiln_dockerfile_cmd_expandable(enum kiln_dockerfile_cmd_type type);

/*
 * Expands cmd's expandable fields in place (BuildKit's Expand), in the order
 * BuildKit does, calling expand once per word. For RUN, parses mount_specs
 * into mounts with the expanded values and reports BuildKit's --mount
 * errors. expand may be NULL: the words are used as they are (RUN mounts are
 * still parsed). On failure returns -errno with *err set to
 * "file:line: message" (the callback's message for its own errors); cmd
 * keeps the fields expanded so far and stays valid to free.
 */
int kiln_dockerfile_cmd_expand(struct kiln_dockerfile_cmd *cmd, const char *file,
                               kiln_dockerfile_expand_fn expand, void *userdata,
                               struct kiln_error **err);

/*
 * BuildKit's ExpandRaw: for COPY/ADD, expands the data of every heredoc
 * source whose delimiter was unquoted (the converter passes an expander
 * that keeps quotes). A no-op for other commands. Errors as _expand().
 */
int kiln_dockerfile_cmd_expand_raw(struct kiln_dockerfile_cmd *cmd, const char *file,
                                   kiln_dockerfile_expand_fn expand, void *userdata,
                                   struct kiln_error **err);

/* A parsed --chmod value. */
struct kiln_dockerfile_chmod {
        /* true: a symbolic mode ("u+x,g-w"), passed on as the string */
        bool symbolic;
        uint32_t mode; /* the octal value (<= 07777) when !symbolic */
};

/*
 * Checks a (expanded) COPY/ADD --chmod value as BuildKit's dispatcher does:
 * an octal number up to 07777, or a symbolic mode ("u+rwx,go=rx", "+x",
 * "a-w,u=g"). Returns 0 with *ret filled, or -EINVAL with *err set to
 * BuildKit's text ("invalid chmod parameter: '…'. it should be octal string
 * and between 0 and 07777" for numeric-looking values). Thread-safe.
 */
int kiln_dockerfile_chmod_parse(const char *s, struct kiln_dockerfile_chmod *ret,
                                struct kiln_error **err);

/*
 * Index of the stage called name (case-insensitive), or -1
 * (BuildKit's HasStage).
 */
ssize_t kiln_dockerfile_find_stage(const struct kiln_dockerfile_instructions *d, const char *name);

/* Upper-case instruction name for a command type ("RUN"). */
const char *kiln_dockerfile_cmd_type_name(enum kiln_dockerfile_cmd_type type);

/* "bind", "cache", ...; "default", "none", "host"; "sandbox", "insecure";
 * "shared", "private", "locked" ("" for UNSET). */
const char *kiln_dockerfile_mount_type_name(enum kiln_dockerfile_mount_type t);
const char *kiln_dockerfile_network_name(enum kiln_dockerfile_network n);
const char *kiln_dockerfile_security_name(enum kiln_dockerfile_security s);
const char *kiln_dockerfile_sharing_name(enum kiln_dockerfile_mount_sharing s);

/*
 * Case mapping as BuildKit's frontend does it, for every part of the
 * Dockerfile frontend. Pure: thread safe.
 *
 * kiln_dockerfile_lower: Go's strings.ToLower, rune by rune
 * (unicode.ToLower), bytes that are not UTF-8 turning into U+FFFD; how
 * instruction names, stage names and keys are folded. A new string.
 * kiln_dockerfile_upper: strings.ToUpper for ASCII letters, other bytes
 * kept. A new string.
 * kiln_dockerfile_caseeq: strings.EqualFold for ASCII letters: a equals b
 * but for the case of ASCII letters, whatever the locale.
 */
char *kiln_dockerfile_lower(const char *s);
char *kiln_dockerfile_upper(const char *s);
bool kiln_dockerfile_caseeq(const char *a, const char *b);
