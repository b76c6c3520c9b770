/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * TOML 1.0 documents: a complete parser and the value tree it builds.
 *
 * Every value and every key remembers where it was written (1-based line and
 * column, columns counted in bytes), so the config layer can point users at
 * file:line:col. Tables keep their keys in document order.
 *
 * The tree is immutable after parsing and can be read from several threads.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum kiln_toml_type {
        KILN_TOML_STRING,
        KILN_TOML_INTEGER,
        KILN_TOML_FLOAT,
        KILN_TOML_BOOL,
        KILN_TOML_DATETIME,       /* offset date-time */
        KILN_TOML_DATETIME_LOCAL, /* local date-time */
        KILN_TOML_DATE_LOCAL,
        KILN_TOML_TIME_LOCAL,
        KILN_TOML_ARRAY,
        KILN_TOML_TABLE,
        _KILN_TOML_TYPE_MAX,
        _KILN_TOML_TYPE_INVALID = -EINVAL,
};

struct kiln_toml_pos {
        unsigned line;
        unsigned col;
};

struct kiln_toml_value;
struct kiln_toml_table;

struct kiln_toml_array {
        struct kiln_toml_value **items;
        size_t n;
};

struct kiln_toml_value {
        enum kiln_toml_type type;
        struct kiln_toml_pos pos; /* where the value starts ([header] for tables) */
        /* Where the value is written: bytes [offset, offset + length) of the
         * data given to kiln_toml_parse (a leading BOM counts). For a value
         * after '=' or in an array this is its literal exactly as written:
         * the quotes and escapes of a string, the brackets of an array, the
         * braces of an inline table. So a tool can replace one value and
         * keep every other byte of the document. Tables opened by a
         * [header] or [[header]] or made by a dotted key have length 0 and
         * offset at the header or the key; the root is 0, 0. */
        size_t offset;
        size_t length;
        union {
                /* STRING (decoded, may contain NUL bytes: use len; a newline
                 * in a multi-line string is always "\n", also where the file
                 * has CRLF) and the four date-time kinds (normalised RFC 3339
                 * text: 'T' separator, upper-case 'Z', other offsets and the
                 * fraction of a second as written, e.g.
                 * "1979-05-27T07:32:00Z", "1979-05-27T00:32:00.999-07:00",
                 * "1979-05-27", "07:32:00"). Date-times are validated (month,
                 * day incl. leap years, hour, minute, second 00-60, offset). */
                struct {
                        char *s;
                        size_t len;
                } str;
                int64_t integer;
                double flt;
                bool boolean;
                struct kiln_toml_array array;
                struct kiln_toml_table *table;
        };
};

struct kiln_toml_entry {
        char *key;      /* decoded key segment (no dots), NUL-terminated */
        size_t key_len; /* length of key: a quoted key may contain "\u0000" */
        struct kiln_toml_pos key_pos;
        struct kiln_toml_value *value;
};

struct kiln_toml_table {
        struct kiln_toml_entry *entries; /* document order */
        size_t n;
        size_t cap;
};

/* Parses data[0..len) (UTF-8, no BOM handling beyond skipping a leading one).
 * On success *ret is the root table value (type KILN_TOML_TABLE), owned by
 * the caller. On failure returns -EINVAL (or -E2BIG past the limits in
 * base/limits.h: document size, string length, nesting depth) and sets *err
 * with err->line/col and a message "LINE:COL: what is wrong"; *ret is left
 * untouched. Columns count bytes from 1; a leading BOM does not count.
 * Thread safe: keeps no state between calls. */
int kiln_toml_parse(const char *data, size_t len, struct kiln_toml_value **ret,
                    struct kiln_error **err);

/* Looks a key up in a table; NULL if absent. Linear in the table size. */
const struct kiln_toml_entry *kiln_toml_table_find(const struct kiln_toml_table *t,
                                                   const char *key);
/* As kiln_toml_table_find, for a key of len bytes that may contain NUL. */
const struct kiln_toml_entry *kiln_toml_table_findn(const struct kiln_toml_table *t,
                                                    const char *key, size_t len);

/* "string", "integer", "float", "bool", "datetime", "datetime-local",
 * "date-local", "time-local", "array", "table" (toml-test's names); NULL
 * for a value outside the enum. */
const char *kiln_toml_type_to_string(enum kiln_toml_type t);

/* Frees v and everything below it; NULL-safe; returns NULL. */
struct kiln_toml_value *kiln_toml_value_free(struct kiln_toml_value *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_toml_value *, kiln_toml_value_free);
