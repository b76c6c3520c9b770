/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Path patterns as BuildKit and Docker use them.
 *
 * kiln_pattern_match is Go's path/filepath.Match ('*', '?', '[...]' classes
 * with ranges and '^' negation, '\\' escapes; a malformed pattern is an
 * error, -EINVAL, like filepath.ErrBadPattern).
 *
 * A matcher is moby's patternmatcher: a list of patterns (whitespace
 * trimmed, cleaned like filepath.Clean, empty ones skipped) where "**"
 * matches any number of path elements, a leading '!' makes an exception to
 * the patterns before it, and a path matches when it or one of its parent
 * directories matches (MatchesOrParentMatches). Patterns with wildcards
 * mean what moby's translation to a Go regular expression means, quirks
 * included ('|', '{n}' keep their regular expression meaning); a small
 * NFA matcher here runs that translation (linear time, no backtracking).
 * Unicode classes (\p{...}) are not supported: such a pattern is
 * malformed. Used for .dockerignore, COPY --exclude and the
 * include/exclude patterns of local sources and copies.
 *
 * Everything here is pure (no I/O). A matcher is immutable after creation
 * and may be used from several threads at once.
 */

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Longest pattern accepted (a user input: Dockerfile, .dockerignore). */
#define KILN_LIMIT_PATTERN_LEN 4096
/* Most patterns in one matcher or one ignore file. */
#define KILN_LIMIT_PATTERN_COUNT 65536
/* Largest .dockerignore accepted by kiln_pattern_read_ignorefile. */
#define KILN_LIMIT_IGNOREFILE_SIZE (4u * 1024 * 1024)

/* Go's filepath.Match(pattern, name) on '/' separated names. Returns 0 and
 * sets *ret, or -EINVAL when the pattern is malformed; as current Go, the
 * whole pattern is checked even when the match fails early. */
int kiln_pattern_match(const char *pattern, const char *name, bool *ret);

/* True when pattern holds a wildcard ('*', '?', '['), '\\'-escaped
 * characters not counted: the path is then literal after unescaping. As
 * fsutil's containsWildcards. */
bool kiln_pattern_has_wildcards(const char *pattern);

struct kiln_pattern_matcher;

/* Compiles n patterns (patternmatcher.New). Errors: a lone "!"
 * ("illegal exclusion pattern: \"!\""), a malformed pattern (the pattern is
 * quoted), a pattern or a list over the limits. *ret is owned by the caller
 * (kiln_pattern_matcher_free). A matcher with no pattern matches nothing. */
int kiln_pattern_matcher_new(const char *const *patterns, size_t n,
                             struct kiln_pattern_matcher **ret, struct kiln_error **err);

struct kiln_pattern_matcher *kiln_pattern_matcher_free(struct kiln_pattern_matcher *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_pattern_matcher *, kiln_pattern_matcher_free);

/* Number of patterns kept (after empty ones were dropped). */
size_t kiln_pattern_matcher_count(const struct kiln_pattern_matcher *m);

/* moby MatchesOrParentMatches: *ret is true when path (relative, '/'
 * separated, cleaned, not ".") or one of its parent directories matches the
 * last pattern that decides it (an exception "!p" un-matches). Returns 0, or
 * -EINVAL when a pattern that had to be evaluated turned out malformed as a
 * regular expression (moby translates patterns to Go regular expressions,
 * which refuse a few things filepath.Match accepts, e.g. "[z-a]"); as moby,
 * this is only noticed when that pattern is reached. */
int kiln_pattern_matcher_matches(const struct kiln_pattern_matcher *m, const char *path, bool *ret);

/* moby MatchesUsingParentResults, for walks: parent (NULL for a path whose
 * parent was not evaluated, e.g. at the top of a walk) is the per-pattern
 * array the parent directory's call returned in ret_info; ret_info
 * (kiln_pattern_matcher_count() entries, may be NULL) receives this path's
 * per-pattern results for its children. Same *ret as _matches. */
int kiln_pattern_matcher_matches_parent(const struct kiln_pattern_matcher *m, const char *path,
                                        const bool *parent, bool *ret_info, bool *ret);

/* True when some pattern is an exception ("!..."): a walker may then not
 * skip an excluded directory, since something below may be re-included. */
bool kiln_pattern_matcher_exclusions(const struct kiln_pattern_matcher *m);

/* The cleaned pattern i (without its '!'), and whether it is an exception. */
const char *kiln_pattern_matcher_pattern(const struct kiln_pattern_matcher *m, size_t i,
                                         bool *ret_exclusion);

/* Reads a .dockerignore as BuildKit's ignorefile.ReadAll: UTF-8 BOM dropped,
 * lines starting with '#' skipped, whitespace trimmed, empty lines skipped,
 * "!" kept in front of an exception, each pattern cleaned (filepath.Clean)
 * and a leading '/' removed. *ret is a NULL-terminated array of *n_ret
 * strings owned by the caller (kiln_pattern_strv_free). Errors: over the
 * size or count limits. */
int kiln_pattern_read_ignorefile(const char *data, size_t n, char ***ret, size_t *n_ret,
                                 struct kiln_error **err);

/* Go's path.Clean on a '/' separated path: "" -> ".", "a//b/../c/" ->
 * "a/c", "/../x" -> "/x". Returns a new string. */
char *kiln_pattern_clean(const char *path);

/* Frees a NULL-terminated string array (NULL allowed). */
void kiln_pattern_strv_free(char **v);
