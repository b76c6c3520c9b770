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
