/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Helpers shared by the document parsers of src/content/. */

#include <jansson.h>

#include "content.h"

/*
 * A parse in progress: the document noun for messages, whether null stands
 * for "absent" (Docker documents, as Go's decoder reads them), and where the
 * error goes. Paths are JSONPath: $.layers[2].digest, $.platform["os.version"].
 */
struct doc_ctx {
        const char *noun;
        bool lenient_null;
        struct kiln_error **err;
};

/* Sets "<noun>: <path>[.<key>]: <message>" and returns -EINVAL. key may be NULL. */
int doc_error(struct doc_ctx *c, const char *path, const char *key, const char *fmt, ...)
        _printf_(4, 5);

/* path + ".key" (or ["key"] when key is not a plain word); caller frees. */
char *path_key(const char *path, const char *key);
/* path + "[i]"; caller frees. */
char *path_index(const char *path, size_t i);

/* s in single quotes, controls escaped, cut after 80 bytes; caller frees. */
char *quote_string(const char *s);

/* A short, printable rendering of a JSON value for messages; caller frees. */
char *json_brief(const json_t *v);

/* Loads data[0..n) as one JSON object (duplicate keys refused), checking the
 * size limit first. Errors are "<noun>: ..." with -E2BIG or -EBADMSG. */
int doc_load(struct doc_ctx *c, const char *data, size_t n, size_t limit, json_t **ret);

/*
 * Field readers: obj[key] at path. A missing key (or null, when lenient)
 * leaves *ret NULL and is an error only when required. A present value of
 * the wrong type is always an error naming the expected type.
 */
int get_string(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool required,
               char **ret);
int get_strv(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool nullable,
             char ***ret);
int get_bool(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool *ret);
int get_string_map(struct doc_ctx *c, json_t *obj, const char *path, const char *key, bool nullable,
                   struct kiln_content_annotations *ret);
/* Keys of an object whose values are objects (ExposedPorts, Volumes). */
int get_object_keys(struct doc_ctx *c, json_t *obj, const char *path, const char *key,
                    bool nullable, char ***ret);

/* image-spec grammar checks. */
bool media_type_valid(const char *s);
/* The general digest grammar, plus exact lengths for sha256/384/512. */
int digest_check_any(struct doc_ctx *c, const char *path, const char *key, const char *s);
/* RFC 3339 date-time. */
bool date_time_valid(const char *s);
/* An absolute URI (scheme ":" and no spaces or controls). */
bool uri_valid(const char *s);

int descriptor_from_json(struct doc_ctx *c, json_t *obj, const char *path,
                         struct kiln_content_descriptor *ret);
json_t *descriptor_to_json(const struct kiln_content_descriptor *d);
int platform_from_json(struct doc_ctx *c, json_t *obj, const char *path,
                       struct kiln_content_platform *ret);
json_t *platform_to_json(const struct kiln_content_platform *p);
json_t *annotations_to_json(const struct kiln_content_annotations *a);
/* Validates root as an image config; the config keeps a reference to root. */
int config_from_root(struct doc_ctx *c, json_t *root, enum kiln_content_media_type mt,
                     struct kiln_content_config **ret);

/* Checks that a given media type names one of the allowed documents:
 * NULL hint -> *ret untouched; unknown -> -EOPNOTSUPP listing allowed. */
int media_type_expect(const char *hint, const enum kiln_content_media_type *allowed,
                      size_t n_allowed, const char *what, enum kiln_content_media_type *ret,
                      struct kiln_error **err);

void strv_free(char **v);
size_t strv_length(char *const *v);
char **strv_copy(char *const *v);
