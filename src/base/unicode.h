/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Unicode character properties as Go's unicode package answers them, for
 * code that has to read text the way BuildKit does. The data is Unicode
 * 15.0.0, the version of Go 1.21 and later. Values past U+10FFFF (a
 * negative rune cast to uint32_t included) have no property and lower to
 * themselves.
 *
 * Pure functions on constant tables: thread safe.
 */

#include <stdbool.h>
#include <stdint.h>

/* unicode.IsLetter: general category L (Lu, Ll, Lt, Lm, Lo). */
bool kiln_unicode_is_letter(uint32_t r);

/* unicode.IsDigit: general category Nd (decimal digits of any script). */
bool kiln_unicode_is_digit(uint32_t r);

/* unicode.IsSpace: '\t', '\n', '\v', '\f', '\r', ' ', U+0085, U+00A0 and
 * the other White_Space runes (U+1680, U+2000..U+200A, U+2028, U+2029,
 * U+202F, U+205F, U+3000). */
bool kiln_unicode_is_space(uint32_t r);

/* unicode.ToLower: the simple (one rune to one rune) lower-case mapping;
 * runes without one are returned unchanged. */
uint32_t kiln_unicode_to_lower(uint32_t r);
