/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "buf.h"

/* Appends s[0..n) quoted as Go's strconv.Quote does (what logrus' %q and
 * BuildKit's AST dump print): '"' and '\\' escaped, \a \b \f \n \r \t \v,
 * other non-printable runes as \xHH, \uHHHH or \UHHHHHHHH, bytes that are
 * not UTF-8 as \xHH, printable non-ASCII runes as they are. Returns 0 or
 * -E2BIG past the buffer's maximum. */
int kiln_buf_go_quote(struct kiln_buf *b, const char *s, size_t n);

/* Decodes one UTF-8 sequence at s[0..n) into *ret; returns its length, or 0
 * when it is not valid UTF-8 (overlong, surrogate, truncated, > U+10FFFF). */
size_t kiln_utf8_decode(const unsigned char *s, size_t n, uint32_t *ret);

/* Go's utf8.DecodeRune: the rune at s[0..n) and its length in *width; a
 * sequence that is not valid UTF-8 reads as U+FFFD of width 1 (tell it from
 * an encoded U+FFFD by the width), and n == 0 gives U+FFFD of width 0. */
uint32_t kiln_utf8_decode_rune(const char *s, size_t n, size_t *width);

/* Go's utf8.EncodeRune: writes r as UTF-8 to out and returns its length
 * (1 to 4); surrogates and values past U+10FFFF are written as U+FFFD. */
size_t kiln_utf8_encode(uint32_t r, char out[static 4]);
