/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Helpers shared by the files of src/registry/ and nothing else: Go's URL
 * query encoding (kiln must produce the bytes containerd produces), path
 * cleaning, base64 and safe quoting of untrusted text in error messages.
 */

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/macro.h"

/* The maximum of buffers that only hold text derived from inputs with
 * their own limits (quoted error text, merged scopes, sanitised URLs): a
 * guard against bugs, never reached by valid use. */
#define REGISTRY_DERIVED_MAX ((size_t) 64 << 20)

/* Go's url.QueryEscape: [A-Za-z0-9-_.~] kept, ' ' as '+', the rest %XX. */
int url_query_escape(struct kiln_buf *b, const char *s);
/* Go's url.PathEscape is not needed: references only hold safe bytes. */

/* Go's url.QueryUnescape ('+' is a space). Returns a malloc'd string, or
 * NULL for a bad escape. */
char *url_query_unescape(const char *s, size_t n);
/* Percent-decoding of a path (no '+' rule). NULL for a bad escape. */
char *url_path_unescape(const char *s, size_t n);

struct url_query_pair {
        char *key;
        char *value;
};

/* A url.Values in the order the pairs were added. */
struct url_query {
        struct url_query_pair *items;
        size_t n;
};

/* Go's url.ParseQuery: pairs split on '&', a pair with ';' or a bad escape
 * is skipped (Go records an error and goes on), "k" means k="". */
void url_query_parse(struct url_query *q, const char *raw, size_t n);
void url_query_add(struct url_query *q, const char *key, const char *value);
/* Go's url.Values.Encode: keys sorted bytewise, values of one key in the
 * order added. */
int url_query_encode(const struct url_query *q, struct kiln_buf *b);
void url_query_release(struct url_query *q);

/* Go's path.Join(parts...) (empty parts skipped, the result cleaned), with
 * containerd's rule that a trailing '/' on the last part is kept. */
int url_path_join(struct kiln_buf *b, const char *const *parts, size_t n);

/* Standard base64 with padding. encode returns a malloc'd string. decode
 * is Go's StdEncoding.Decode: strict, '\r' and '\n' ignored; returns the
 * malloc'd bytes NUL-terminated (length in *ret_n) or NULL when invalid. */
char *base64_encode(const void *p, size_t n);
char *base64_decode(const char *s, size_t n, size_t *ret_n);

/* Overwrites and frees a string that held a secret. */
void free_secret(char *s);
static inline void free_secretp(char **s)
{
        free_secret(*s);
}

/* ASCII-only case-insensitive comparison, as Go's strings.EqualFold on
 * header names and JSON keys. */
bool ascii_strcaseeq(const char *a, const char *b);

struct kiln_content_descriptor;

/* Adds d to the set blobs[0..*n) unless a blob of its digest is there
 * already (the pointer is borrowed); -E2BIG past KILN_LIMIT_REGISTRY_BLOBS.
 * Pull and push collect an image tree's blobs with it. */
int blob_set_add(const struct kiln_content_descriptor ***blobs, size_t *n,
                 const struct kiln_content_descriptor *d, struct kiln_error **err);
