/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Shell-word expansion of Dockerfile arguments, as BuildKit's
 * frontend/dockerfile/shell package (Lex.ProcessWord, ProcessWords,
 * ProcessWordWithMatches): quote and escape removal, $NAME, ${NAME},
 * ${NAME:-w} ${NAME-w} ${NAME:+w} ${NAME+w} ${NAME:?m} ${NAME?m},
 * ${NAME#p} ${NAME##p} ${NAME%p} ${NAME%%p} ${NAME/p/r} ${NAME//p/r},
 * and word splitting after expansion. Variable names are case-sensitive
 * (BuildKit's Unix behaviour).
 *
 * Pure: no I/O, no global or static state. Every function is thread safe as
 * long as the structures passed in are not modified while it runs.
 */

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

/* Input word, in bytes. */
#define KILN_LIMIT_SHELL_INPUT (16u << 20)
/* Any expanded result (a whole word, or any ${...} part of it), in bytes.
 * Nested substitutions rescan their results, so this bounds the time a
 * hostile word can take (about 0.3 s); an inline COPY heredoc of more than
 * 4 MiB with variables to expand is refused. */
#define KILN_LIMIT_SHELL_OUTPUT (4u << 20)
/* Nesting of operands: ${a:-${b:-x}} nests 2 deep (${b} has no operand). */
#define KILN_LIMIT_SHELL_DEPTH 128
/* The pattern of ${X#p}, ${X%p}, ${X/p/r}, in bytes after expansion. */
#define KILN_LIMIT_SHELL_PATTERN (64u << 10)
/* Work spent matching those patterns in one call (about pattern length
 * times value length per match attempt, summed). 2^23 steps take about
 * 0.1 s; real Dockerfiles use a tiny fraction, and a hostile word cannot
 * hold a build for long. */
#define KILN_LIMIT_SHELL_MATCH_WORK (1u << 23)

/* How to lex; the fields are BuildKit's Lex fields. All zero is BuildKit's
 * NewLex('\\'). */
struct kiln_shell_lex {
        char escape;              /* escape token: '\\' or '`'; 0 means '\\' */
        bool raw_quotes;          /* keep ' and " in the result */
        bool raw_escapes;         /* keep escape tokens in the result */
        bool skip_process_quotes; /* treat ' and " as ordinary characters */
        bool skip_unset_env;      /* leave $X, ${X...} of unset X as written */
};

/* Where variables come from. Borrowed: nothing is copied or freed.
 * If lookup is set it alone answers. Otherwise pairs are searched from the
 * last pair back, then vars from the last entry back, so later entries win
 * and pairs override vars (as BuildKit's EnvsFromSlice). An all-zero env has
 * no variables. */
struct kiln_shell_env {
        /* n_vars "NAME=value" strings, split at the first '='; an entry
         * without '=' sets NAME to "". */
        const char *const *vars;
        size_t n_vars;
        /* n_pairs name/value pairs: pairs[2*i] is a name, pairs[2*i+1] its
         * value. */
        const char *const *pairs;
        size_t n_pairs;
        /* Returns true and sets *value (borrowed, must stay valid until the
         * call that asked returns) when name (NUL-terminated) is set. */
        bool (*lookup)(void *userdata, const char *name, const char **value);
        void *userdata;
};

/* What one expansion produced. All strings and arrays are owned by the
 * result; free them with kiln_shell_result_release. */
struct kiln_shell_result {
        char *word;        /* ProcessWord's result: expanded, not split */
        size_t word_len;   /* its length: strlen(word) unless the input held NUL bytes */
        char **words;      /* ProcessWords' result, NULL-terminated */
        size_t *word_lens; /* n_words lengths of words[i], as word_len */
        size_t n_words;    /* may be 0 (empty or all-blank input) */
        char **matched;    /* names looked up and set: unique, sorted (bytes), NULL-terminated */
        size_t n_matched;
        char **unmatched; /* names looked up but unset: unique, sorted, NULL-terminated */
        size_t n_unmatched;
};

/* Expands word (NUL-terminated) with lex and env and fills *ret (which need
 * not be initialised) with the word, the split words and the names matched
 * and not matched, as ProcessWordWithMatches (its Result, Words, Matched,
 * Unmatched). Returns 0, or a negative errno with *err set and *ret left
 * empty (all NULL / 0): -EINVAL for syntax errors, unset ${X?} variables and
 * bad patterns (BuildKit's text, e.g. `failed to process "${X?}": X: is not
 * allowed to be unset`), -E2BIG past a KILN_LIMIT_SHELL_* limit. lex NULL
 * means escape '\\' and no options; env NULL means no variables. The caller
 * adds the position (kiln_error_wrap). */
int kiln_shell_expand(const struct kiln_shell_lex *lex, const char *word,
                      const struct kiln_shell_env *env, struct kiln_shell_result *ret,
                      struct kiln_error **err);

/* As kiln_shell_expand, for the len bytes at word, which need not be
 * NUL-terminated and may hold NUL bytes: BuildKit's lexer reads a NUL as an
 * ordinary character, so the results may then hold NUL bytes too (use
 * word_len and word_lens). Variable names never hold one. */
int kiln_shell_expand_n(const struct kiln_shell_lex *lex, const char *word, size_t len,
                        const struct kiln_shell_env *env, struct kiln_shell_result *ret,
                        struct kiln_error **err);

/* As kiln_shell_expand, returning only the expanded word (ProcessWord) in
 * *ret, which the caller frees with free(). */
int kiln_shell_process_word(const struct kiln_shell_lex *lex, const char *word,
                            const struct kiln_shell_env *env, char **ret, struct kiln_error **err);

/* As kiln_shell_expand, returning only the split words (ProcessWords): a
 * NULL-terminated array in *ret (caller frees with kiln_shell_strv_free) and
 * its length in *ret_n (ret_n may be NULL). */
int kiln_shell_process_words(const struct kiln_shell_lex *lex, const char *word,
                             const struct kiln_shell_env *env, char ***ret, size_t *ret_n,
                             struct kiln_error **err);

/* Frees what a result holds and zeroes it; r may already be empty. */
void kiln_shell_result_release(struct kiln_shell_result *r);

/* Frees a NULL-terminated string array and its strings; returns NULL. */
char **kiln_shell_strv_free(char **v);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, kiln_shell_strv_free);
