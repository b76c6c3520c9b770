/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * "Did you mean" suggestions, as BuildKit's util/suggest.Search picks them.
 *
 * Candidates: each option in turn. An option equal to the value (after case
 * folding when that is asked for) means the value is known and the error is
 * about something else: there is no suggestion at all, whatever came before.
 *
 * Distance: Levenshtein's (insertions, deletions and substitutions of one
 * rune each) over Go's []rune of the strings, bytes that are not UTF-8
 * counting as U+FFFD. Options more than KILN_SUGGEST_MAX_DISTANCE edits
 * away are not named; words longer than KILN_LIMIT_SUGGEST_RUNES runes are
 * never matched.
 *
 * Ties: the first of the closest options in the order given wins, as in
 * BuildKit. With KILN_SUGGEST_ANY_ORDER (for options BuildKit keeps in a
 * Go map, whose order is random there) the tie is broken the same way on
 * every run instead: fewer edits when a swap of two neighbouring runes
 * counts as one (the optimal string alignment form of Damerau's distance),
 * then the first option in byte order.
 *
 * Case: without KILN_SUGGEST_CASE_SENSITIVE both sides are folded with Go's
 * unicode.ToLower before comparing, and the suggestion is given in lower
 * case, unless the value was written with no lower-case rune and at least
 * one that is not: then in upper case (ASCII letters raised; BuildKit's
 * strings.ToUpper raises other letters too). With the flag the option is
 * returned as it is.
 *
 * Pure: thread safe.
 */

#include <stddef.h>

/* suggest.Search's reach (the same as HCL's). */
#define KILN_SUGGEST_MAX_DISTANCE 2
/* Longest value or option compared, in runes: names, flags and keys are
 * short, and the distance tables grow with the square of the length. */
#define KILN_LIMIT_SUGGEST_RUNES 256

enum {
        KILN_SUGGEST_CASE_SENSITIVE = 1 << 0,
        KILN_SUGGEST_ANY_ORDER = 1 << 1,
};

/* The option of options[0..n) to suggest for val under flags (above), or
 * NULL when there is none. Returns a new string the caller frees. */
char *kiln_suggest(const char *val, const char *const *options, size_t n, unsigned flags);
