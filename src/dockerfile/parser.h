/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Dockerfile parser: turns a Dockerfile into BuildKit's AST (the Node tree of
 * frontend/dockerfile/parser), without shell expansion or instruction checks.
 * It also collects heredoc bodies, the parser directives (syntax, escape,
 * check) and the parser's warnings.
 *
 * All functions are pure (no I/O except kiln_dockerfile_dump/quote writing
 * to the given stream). Not thread-safe per tree or result; independent
 * parses may run concurrently.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/error.h"

/* A whole Dockerfile. */
#define KILN_LIMIT_DOCKERFILE_FILE (16u << 20)
/* One physical line, as BuildKit's bufio.Scanner limit (64 KiB - 1). */
#define KILN_LIMIT_DOCKERFILE_LINE 65535u
/* Nesting of ONBUILD instructions. */
#define KILN_LIMIT_DOCKERFILE_DEPTH 16

struct kiln_dockerfile_str {
        char *s; /* NUL-terminated, may also hold NUL bytes: use len */
        size_t len;
};

/* One heredoc of an instruction: "<<EOF" in the instruction line and the
 * lines up to the terminator "EOF" (BuildKit's parser.Heredoc). */
struct kiln_dockerfile_heredoc {
        /* The delimiter word with its quotes removed ("EOF" for <<'EOF'); the
         * terminator line must equal it (after leading tabs when chomp). */
        struct kiln_dockerfile_str name;
        /* The body: every line between the instruction (or the previous
         * heredoc's terminator) and the terminator, exactly as in the file,
         * each with its line ending ("\n" or "\r\n"). Leading tabs are NOT
         * removed here even when chomp is set: callers apply
         * kiln_dockerfile_heredoc_chomp() (BuildKit does it in the
         * instruction layer). Empty when returned by
         * kiln_dockerfile_heredoc_parse(). */
        struct kiln_dockerfile_str content;
        /* The file descriptor written before "<<" ("3<<EOF" gives 3); 0 when
         * none was written, UINT64_MAX when it does not fit. */
        uint64_t fd;
        /* False when any part of the delimiter was quoted (<<'EOF', <<"EOF",
         * <<E"O"F): the content must not get variable expansion. */
        bool expand;
        /* "<<-EOF": leading tabs are ignored on the terminator line and are
         * to be stripped from the content's lines. */
        bool chomp;
};

struct kiln_dockerfile_node {
        /* Instruction nodes: the instruction word as written ("RUN", "run");
         * argument nodes: one argument. */
        struct kiln_dockerfile_str value;
        /* Instruction nodes: the leading "--flag[=value]" words, quotes and
         * escapes removed, without the "--" terminator word. */
        struct kiln_dockerfile_str *flags;
        size_t n_flags;
        /* Instruction nodes: first argument; argument nodes: the next one. */
        struct kiln_dockerfile_node *next;
        /* The root: one child per instruction. An ONBUILD argument node: one
         * child, the nested instruction node. */
        struct kiln_dockerfile_node **children;
        size_t n_children;
        /* 1-based; an instruction's end_line includes its continuation lines
         * and its heredoc bodies with their terminators. 0 for argument nodes
         * and for the instruction nested in ONBUILD. */
        unsigned start_line, end_line;
        bool json; /* instruction node: arguments came from a JSON array */
        /* Instruction nodes: the heredocs, in the order their "<<" words
         * appear in the line. Only RUN, COPY and ADD (also when nested in
         * ONBUILD) in shell/list form get them; for ONBUILD they are attached
         * to the top-level ONBUILD node, not to the nested one. */
        struct kiln_dockerfile_heredoc *heredocs;
        size_t n_heredocs;
        /* Instruction nodes: the instruction line after joining continuation
         * lines (escape token and comment lines removed), before splitting:
         * BuildKit's Node.Original. For the instruction nested in ONBUILD,
         * the text after "ONBUILD". */
        struct kiln_dockerfile_str original;
        /* Top-level instruction nodes: the comment lines directly before it
         * (text after "#", trimmed; an empty "#" line restarts the list;
         * parser directives excluded): BuildKit's Node.PrevComment. */
        struct kiln_dockerfile_str *comments;
        size_t n_comments;
};

/* A parser directive found by the parse ("# syntax=...", "# escape=...",
 * "# check=..."): lines starting with "#" at the top of the file, before any
 * instruction, empty line or other comment. */
struct kiln_dockerfile_directive {
        char *name; /* "syntax", "escape" or "check" (key lowered) */
        /* As written, surrounding whitespace removed (BuildKit's regexp
         * keeps one blank when the value is nothing but blanks). */
        char *value;
        unsigned line; /* 1-based */
};

/* A warning of the parser. Today the only one is BuildKit's empty
 * continuation line warning. */
struct kiln_dockerfile_warning {
        /* "Empty continuation line found in: <joined instruction line>" */
        char *message;
        /* "Empty continuation lines will become errors in a future release" */
        char *detail;
        /* "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/" */
        char *url;
        /* 1-based; as BuildKit: the instruction's last line before any
         * heredoc body. */
        unsigned line;
};

/* Everything a parse yields (BuildKit's parser.Result plus the directives). */
struct kiln_dockerfile_result {
        struct kiln_dockerfile_node *root;            /* never NULL in a result */
        char escape;                                  /* escape token in effect: '\\' or '`' */
        struct kiln_dockerfile_directive *directives; /* in file order */
        size_t n_directives;
        struct kiln_dockerfile_warning *warnings; /* in file order */
        size_t n_warnings;
};

/* Parses data (size bytes, a leading UTF-8 BOM ignored, "\n" or "\r\n" line
 * endings). On success stores a new result in *ret (free it with
 * kiln_dockerfile_result_free) and returns 0; on failure returns -errno,
 * leaves *ret NULL and sets *err to "file:line: message" (BuildKit's message)
 * with err->line: the instruction's first line for errors in an instruction
 * (e.g. "unterminated heredoc"), the directive's line for directive errors,
 * the overlong line for "dockerfile line greater than max allowed size of
 * 65535" (-E2BIG), the last line for "file with no instructions". file is
 * used only in messages and may be NULL. */
int kiln_dockerfile_parse_full(const char *data, size_t size, const char *file,
                               struct kiln_dockerfile_result **ret, struct kiln_error **err);

/* Frees r with its tree, directives and warnings (NULL is fine); returns
 * NULL. */
struct kiln_dockerfile_result *kiln_dockerfile_result_free(struct kiln_dockerfile_result *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_result *, kiln_dockerfile_result_free);

/* As kiln_dockerfile_parse_full, keeping only the AST: stores the root in
 * *root (children: one per instruction). */
int kiln_dockerfile_parse(const char *data, size_t size, const char *file,
                          struct kiln_dockerfile_node **root, struct kiln_error **err);

/* Frees n, its whole next chain and all children. Returns NULL. */
struct kiln_dockerfile_node *kiln_dockerfile_node_free(struct kiln_dockerfile_node *n);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_node *, kiln_dockerfile_node_free);

/* Writes n's dump as BuildKit's Node.Dump() does (the root: one line per
 * instruction, each ending in "\n"; heredocs are not shown). Returns 0 or
 * -errno. */
int kiln_dockerfile_dump(const struct kiln_dockerfile_node *n, FILE *out);

/* Writes s as Go's strconv.Quote does. */
void kiln_dockerfile_quote(const char *s, size_t len, FILE *out);

/* ---- heredoc helpers for the instruction layer ---- */

/* BuildKit's ParseHeredoc: whether word (one argument, e.g. a COPY source)
 * is a heredoc reference "[fd]<<[-]NAME". Returns 1 and fills *h (name, fd,
 * expand, chomp; content empty; release with kiln_dockerfile_heredoc_release)
 * when it is, 0 when it is not (*h zeroed), -EINVAL with *err when the name
 * cannot be lexed (-E2BIG past a KILN_LIMIT_SHELL_* limit). word may hold
 * NUL bytes, and so may the name. For MustParseHeredoc, treat < 0 as 0. */
int kiln_dockerfile_heredoc_parse(const char *word, size_t len, struct kiln_dockerfile_heredoc *h,
                                  struct kiln_error **err);

/* Frees the strings of h (not h itself) and zeroes it. */
void kiln_dockerfile_heredoc_release(struct kiln_dockerfile_heredoc *h);

/* BuildKit's ChompHeredocContent: returns a new string (caller frees .s)
 * with the leading tabs of every line of s removed. */
struct kiln_dockerfile_str kiln_dockerfile_heredoc_chomp(const char *s, size_t len);

/* ---- directives outside a parse ---- */

/* BuildKit's DirectiveParser.ParseLine for one line without its newline:
 * prefix is the comment marker ("#", "//", or "" for a comment text already
 * without "#", as the linter applies it to Node comments; NULL means "#").
 * Only the form is checked, not the value (an escape directive's value is
 * validated by the parse only). Returns 1 and
 * sets *name (lower case) and *value (caller frees both) when the line is a
 * syntax, escape or check directive, else 0 (*name, *value NULL). */
int kiln_dockerfile_directive_parse_line(const char *line, size_t len, const char *prefix,
                                         char **name, char **value);

/* BuildKit's ParseDirective (any_format false) and DetectSyntax (key
 * "syntax", any_format true): looks for directive key at the top of data
 * (BOM and a "#!" first line skipped); with any_format also "//key=..." lines
 * and a JSON object {"key": "..."} as the whole file. Returns 1 when found,
 * setting *value to its first space-separated word, *cmdline to the whole
 * value (caller frees both) and *line to BuildKit's location line (1-based
 * for comment forms; for the JSON form 0, or 1 after a "#!" line); else 0
 * with *value and *cmdline NULL. Any output pointer may be NULL. */
int kiln_dockerfile_directive_detect(const char *data, size_t size, const char *key,
                                     bool any_format, char **value, char **cmdline, unsigned *line);
