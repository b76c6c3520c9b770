/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * JSON helpers shared by the api module's encoders and decoders (defined in
 * info.c). Not for other modules: they speak api.h's wire types only.
 */

#include "api.h"

/* The names of an enumeration's values, names[i] for value i (NULL where
 * a value has none): the name of value i, NULL when out of range; the
 * value named s, -EINVAL when none is (or s is NULL). */
const char *kiln_api_name_to_string(const char *const *names, size_t n, int i);
int kiln_api_name_from_string(const char *const *names, size_t n, const char *s);

/* ---- encoding ----
 * The setters return -ENOMEM or 0, so that a builder can OR their results
 * and check once (kiln_api_json_finish). */

/* json_object_set_new() takes ownership of value even when it fails, and
 * counts NULL (jansson out of memory) as a failure. */
int kiln_api_json_set(json_t *o, const char *key, json_t *value);
/* A string member (kiln_api_json_string); nothing when value is NULL. */
int kiln_api_json_set_str(json_t *o, const char *key, const char *value);
int kiln_api_json_set_int(json_t *o, const char *key, int64_t value);
/* Values above INT64_MAX (JSON integers are signed here) are clamped. */
int kiln_api_json_set_uint(json_t *o, const char *key, uint64_t value);
/* An array of n strings (kiln_api_json_string each); NULL on OOM. */
json_t *kiln_api_json_strv(const char *const *v, size_t n);
/* Hands o to *ret when r is not negative; else frees o and returns -ENOMEM. */
int kiln_api_json_finish(json_t *o, int r, json_t **ret);

/* ---- decoding ----
 * what names the object in errors ("pull result", an event's type). A
 * malformed member is -EINVAL: decoders of the daemon's answers return
 * -EBADMSG instead (api.h). */

/* Reads member key of o as a string into *ret (a copy; a previous value is
 * freed). Absent or null: *ret stays as is, an error when required. Longer
 * than max bytes (0: no limit): -E2BIG. Holding a NUL: refused. */
int kiln_api_json_get_str(const json_t *o, const char *what, const char *key, bool required,
                          size_t max, char **ret, struct kiln_error **err);
/* An integer member in [min, max]; absent: *ret stays as is, an error when
 * required. */
int kiln_api_json_get_int(const json_t *o, const char *what, const char *key, bool required,
                          int64_t min, int64_t max, int64_t *ret, struct kiln_error **err);
/* Refuses members of o not in allowed (NULL-terminated). */
int kiln_api_json_check_keys(const json_t *o, const char *what, const char *const *allowed,
                             struct kiln_error **err);
