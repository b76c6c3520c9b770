/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The disk endpoints' wire types (disk.h): records, the du answer, the
 * prune request and events, the record filters, buildx's --filter
 * conversion and the human-readable texts the client prints.
 */
#include "api/disk.h"

#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <time.h>

#include "api-internal.h"
#include "base/buf.h"
#include "config/config.h"

#define NS_PER_S INT64_C(1000000000)
/* Bytes of text built from at most a filter (a URL-encoded filter is three
 * times as long, plus the path and a duration). */
#define TEXT_MAX (4u * KILN_API_LIMIT_DISK_FILTER + 256u)

/* ---- times ---- */

/* RFC 3339 in UTC ("Z") with an optional fraction of up to 9 digits. */
static int time_parse(const char *s, int64_t *ret)
{
        struct tm tm = { 0 };
        const char *p;
        int64_t frac = 0;
        int digits = 0;
        time_t t;

        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
                        if (digits >= 9)
                                return -EINVAL;
                        frac = frac * 10 + (*p - '0');
                }
                if (digits == 0)
                        return -EINVAL;
                for (int i = digits; i < 9; i++)
                        frac *= 10;
        }
        if (!streq(p, "Z"))
                return -EINVAL;
        t = timegm(&tm);
        if (t == (time_t) -1)
                return -EINVAL;
        *ret = (int64_t) t * NS_PER_S + frac;
        return 0;
}

/* ---- records ---- */

void kiln_api_disk_record_release(struct kiln_api_disk_record *r)
{
        if (!r)
                return;
        free(r->id);
        for (size_t i = 0; i < r->n_parents; i++)
                free(r->parents[i]);
        free(r->parents);
        free(r->description);
        free(r->type);
        *r = (struct kiln_api_disk_record){ 0 };
}

int kiln_api_disk_record_to_json(const struct kiln_api_disk_record *r, json_t **ret)
{
        char t[KILN_API_TIME_SIZE];
        json_t *o = json_object();
        int rr = 0;

        if (!o)
                return -ENOMEM;
        rr |= kiln_api_json_set_str(o, "id", r->id);
        if (r->n_parents > 0) {
                json_t *a = kiln_api_json_strv((const char *const *) r->parents, r->n_parents);

                rr |= a ? kiln_api_json_set(o, "parents", a) : -ENOMEM;
        }
        kiln_api_time_format(r->created_ns, t);
        rr |= kiln_api_json_set_str(o, "createdAt", t);
        if (r->last_used_ns != 0) {
                kiln_api_time_format(r->last_used_ns, t);
                rr |= kiln_api_json_set_str(o, "lastUsedAt", t);
        }
        rr |= kiln_api_json_set_int(o, "usageCount", r->usage_count);
        rr |= kiln_api_json_set(o, "mutable", json_boolean(r->mutable_));
        rr |= kiln_api_json_set(o, "inUse", json_boolean(r->in_use));
        rr |= kiln_api_json_set(o, "shared", json_boolean(r->shared));
        rr |= kiln_api_json_set_int(o, "size", r->size);
        rr |= kiln_api_json_set_str(o, "description", r->description);
        rr |= kiln_api_json_set_str(o, "type", r->type);
        return kiln_api_json_finish(o, rr, ret);
}

static int get_bool(const json_t *o, const char *what, const char *key, bool *ret,
                    struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key);

        if (!v)
                return 0;
        if (!json_is_boolean(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be a boolean", what, key);
        *ret = json_is_true(v);
        return 0;
}

static int get_time(const json_t *o, const char *what, const char *key, bool required, int64_t *ret,
                    struct kiln_error **err)
{
        _cleanup_free_ char *s = NULL;
        int r;

        r = kiln_api_json_get_str(o, what, key, required, KILN_API_TIME_SIZE, &s, err);
        if (r < 0 || !s)
                return r;
        if (time_parse(s, ret) < 0)
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" is not an RFC 3339 UTC time: '%s'",
                                      what, key, s);
        return 0;
}

static int record_from_json(const json_t *j, struct kiln_api_disk_record *ret,
                            struct kiln_error **err)
{
        static const char what[] = "disk usage record";
        const json_t *parents;
        int r;

        *ret = (struct kiln_api_disk_record){ 0 };
        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "%s: not an object", what);
        r = kiln_api_json_get_str(j, what, "id", true, KILN_API_LIMIT_DISK_STRING, &ret->id, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "type", false, KILN_API_LIMIT_DISK_STRING,
                                          &ret->type, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "description", false, KILN_API_LIMIT_DISK_STRING,
                                          &ret->description, err);
        if (r >= 0)
                r = get_time(j, what, "createdAt", false, &ret->created_ns, err);
        if (r >= 0)
                r = get_time(j, what, "lastUsedAt", false, &ret->last_used_ns, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, what, "usageCount", false, 0, INT64_MAX,
                                          &ret->usage_count, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, what, "size", false, INT64_MIN, INT64_MAX, &ret->size,
                                          err);
        if (r >= 0)
                r = get_bool(j, what, "mutable", &ret->mutable_, err);
        if (r >= 0)
                r = get_bool(j, what, "inUse", &ret->in_use, err);
        if (r >= 0)
                r = get_bool(j, what, "shared", &ret->shared, err);
        parents = json_object_get(j, "parents");
        if (r >= 0 && parents) {
                size_t i;
                json_t *v;

                if (!json_is_array(parents) ||
                    json_array_size(parents) > KILN_API_LIMIT_DISK_PARENTS)
                        r = kiln_error_set(err, -EINVAL,
                                           "%s: \"parents\" must be an array of at most %u "
                                           "strings",
                                           what, KILN_API_LIMIT_DISK_PARENTS);
                else
                        ret->parents = kiln_xcalloc(json_array_size(parents) + 1, sizeof(char *));
                json_array_foreach (parents, i, v) {
                        if (r < 0)
                                break;
                        if (!json_is_string(v) ||
                            json_string_length(v) > KILN_API_LIMIT_DISK_STRING)
                                r = kiln_error_set(err, -EINVAL,
                                                   "%s: \"parents\" must hold strings", what);
                        else
                                ret->parents[ret->n_parents++] = kiln_xstrdup(json_string_value(v));
                }
        }
        if (r < 0)
                kiln_api_disk_record_release(ret);
        return r;
}

int kiln_api_disk_record_from_json(const json_t *j, struct kiln_api_disk_record *ret,
                                   struct kiln_error **err)
{
        int r = record_from_json(j, ret, err);

        return r < 0 ? -EBADMSG : 0;
}

int kiln_api_du_result_to_json(const struct kiln_api_disk_record *r, size_t n, json_t **ret)
{
        json_t *o = json_object(), *a = json_array();
        int rr = 0;

        if (!o || !a) {
                json_decref(o);
                json_decref(a);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n && rr >= 0; i++) {
                json_t *j = NULL;

                rr = kiln_api_disk_record_to_json(&r[i], &j);
                if (rr >= 0 && json_array_append_new(a, j) < 0)
                        rr = -ENOMEM;
        }
        rr |= kiln_api_json_set(o, "records", a);
        return kiln_api_json_finish(o, rr, ret);
}

int kiln_api_du_result_from_json(const json_t *j, struct kiln_api_disk_record **ret, size_t *n_ret,
                                 struct kiln_error **err)
{
        const json_t *a = json_is_object(j) ? json_object_get(j, "records") : NULL;
        struct kiln_api_disk_record *v;
        size_t n = 0, i;
        json_t *e;

        if (!a || !json_is_array(a))
                return kiln_error_set(err, -EBADMSG, "disk usage: \"records\" must be an array");
        if (json_array_size(a) > KILN_API_LIMIT_DISK_RECORDS)
                return kiln_error_set(err, -EBADMSG, "disk usage: more than %u records",
                                      KILN_API_LIMIT_DISK_RECORDS);
        v = kiln_xcalloc(json_array_size(a) + 1, sizeof(*v));
        json_array_foreach (a, i, e) {
                if (kiln_api_disk_record_from_json(e, &v[n], err) < 0) {
                        for (size_t k = 0; k < n; k++)
                                kiln_api_disk_record_release(&v[k]);
                        free(v);
                        return -EBADMSG;
                }
                n++;
        }
        *ret = v;
        *n_ret = n;
        return 0;
}

static void url_encode(struct kiln_buf *b, const char *s)
{
        static const char hex[] = "0123456789ABCDEF";

        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~')
                        kiln_buf_append(b, s, 1);
                else {
                        char e[3] = { '%', hex[c >> 4], hex[c & 15] };

                        kiln_buf_append(b, e, 3);
                }
        }
}

char *kiln_api_du_path(const char *filter, int64_t until_ns)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
        char sep = '?';

        kiln_buf_append(&b, KILN_API_PATH_DU, strlen(KILN_API_PATH_DU));
        if (filter && filter[0]) {
                kiln_buf_append(&b, "?filter=", 8);
                url_encode(&b, filter);
                sep = '&';
        }
        if (until_ns > 0) {
                _cleanup_free_ char *d = kiln_config_format_duration(until_ns);

                kiln_buf_append(&b, &sep, 1);
                kiln_buf_append(&b, "until=", 6);
                url_encode(&b, d);
        }
        return kiln_buf_steal(&b);
}

/* ---- prune ---- */

void kiln_api_prune_request_release(struct kiln_api_prune_request *r)
{
        if (!r)
                return;
        free(r->filter);
        *r = (struct kiln_api_prune_request){ 0 };
}

int kiln_api_prune_request_to_json(const struct kiln_api_prune_request *r, json_t **ret)
{
        json_t *o = json_object();
        int rr = 0;

        if (!o)
                return -ENOMEM;
        if (r->all)
                rr |= kiln_api_json_set(o, "all", json_true());
        if (r->filter && r->filter[0])
                rr |= kiln_api_json_set_str(o, "filter", r->filter);
        if (r->keep_duration_ns)
                rr |= kiln_api_json_set_int(o, "keepDuration", r->keep_duration_ns);
        if (r->reserved_space)
                rr |= kiln_api_json_set_int(o, "reservedSpace", r->reserved_space);
        if (r->max_used_space)
                rr |= kiln_api_json_set_int(o, "maxUsedSpace", r->max_used_space);
        if (r->min_free_space)
                rr |= kiln_api_json_set_int(o, "minFreeSpace", r->min_free_space);
        return kiln_api_json_finish(o, rr, ret);
}

int kiln_api_prune_request_from_json(const json_t *j, struct kiln_api_prune_request *ret,
                                     struct kiln_error **err)
{
        static const char what[] = "prune request";
        static const char *const keys[] = {
                "all",          "filter", "keepDuration", "reservedSpace", "maxUsedSpace",
                "minFreeSpace", NULL
        };
        _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;
        int r;

        *ret = (struct kiln_api_prune_request){ 0 };
        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "%s: not a JSON object", what);
        r = kiln_api_json_check_keys(j, what, keys, err);
        if (r >= 0)
                r = get_bool(j, what, "all", &ret->all, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "filter", false, KILN_API_LIMIT_DISK_FILTER,
                                          &ret->filter, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, what, "keepDuration", false, 0, INT64_MAX,
                                          &ret->keep_duration_ns, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, what, "reservedSpace", false, 0, INT64_MAX,
                                          &ret->reserved_space, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, what, "maxUsedSpace", false, 0, INT64_MAX,
                                          &ret->max_used_space, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, what, "minFreeSpace", false, 0, INT64_MAX,
                                          &ret->min_free_space, err);
        if (r >= 0 && ret->filter)
                r = kiln_api_disk_filter_parse(ret->filter, &f, err);
        if (r < 0) {
                kiln_api_prune_request_release(ret);
                return r == -E2BIG ? -EINVAL : r;
        }
        return 0;
}

int kiln_api_prune_record_event_to_json(const struct kiln_api_disk_record *r, const char *time,
                                        json_t **ret)
{
        json_t *o = json_object(), *rec = NULL;
        int rr = 0;

        if (!o)
                return -ENOMEM;
        rr |= kiln_api_json_set_str(o, "type", "record");
        rr |= kiln_api_json_set_str(o, "time", time);
        if (kiln_api_disk_record_to_json(r, &rec) < 0)
                rr = -ENOMEM;
        else
                rr |= kiln_api_json_set(o, "record", rec);
        return kiln_api_json_finish(o, rr, ret);
}

int kiln_api_prune_result_to_json(int64_t reclaimed, int64_t records, const char *time,
                                  json_t **ret)
{
        json_t *o = json_object();
        int rr = 0;

        if (!o)
                return -ENOMEM;
        rr |= kiln_api_json_set_str(o, "type", "result");
        rr |= kiln_api_json_set_str(o, "time", time);
        rr |= kiln_api_json_set_int(o, "reclaimed", reclaimed);
        rr |= kiln_api_json_set_int(o, "records", records);
        return kiln_api_json_finish(o, rr, ret);
}

/* ---- filters ---- */

enum op {
        OP_PRESENT,
        OP_EQUAL,
        OP_NOT_EQUAL,
        OP_MATCHES,
};

struct selector {
        char *field;
        enum op op;
        char *value;
        regex_t re; /* OP_MATCHES */
};

struct kiln_api_disk_filter {
        struct selector *sel;
        size_t n;
};

struct kiln_api_disk_filter *kiln_api_disk_filter_free(struct kiln_api_disk_filter *f)
{
        if (!f)
                return NULL;
        for (size_t i = 0; i < f->n; i++) {
                free(f->sel[i].field);
                free(f->sel[i].value);
                if (f->sel[i].op == OP_MATCHES)
                        regfree(&f->sel[i].re);
        }
        free(f->sel);
        free(f);
        return NULL;
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_field_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
}

/* One selector at *p; advances *p past it (to ',' or the end). */
/* What glibc's regcomp compiles in reasonable time and memory: it expands
 * x+ into xx* and {m,n} into copies, so stacked and nested repetitions
 * grow exponentially ("((a{0,45}){0,45}){0,45}" takes seconds and
 * gigabytes). A ~= pattern is at most KILN_API_LIMIT_DISK_PATTERN bytes,
 * with no {m,n}, no back reference, no repetition of a repetition ("a++")
 * and groups nested at most KILN_API_LIMIT_DISK_PATTERN_DEPTH deep:
 * stricter than BuildKit's Go regexp, which runs in linear time. */
static int pattern_check(const char *filter, const char *re, struct kiln_error **err)
{
        bool quantified = false;
        unsigned depth = 0;

        if (strlen(re) > KILN_API_LIMIT_DISK_PATTERN)
                return kiln_error_set(err, -EINVAL, "filter '%s': pattern longer than %u bytes",
                                      filter, KILN_API_LIMIT_DISK_PATTERN);
        for (const char *c = re; *c; c++) {
                bool q = false;

                if (*c == '\\' && c[1]) {
                        if (c[1] >= '1' && c[1] <= '9')
                                return kiln_error_set(err, -EINVAL,
                                                      "filter '%s': back references are not "
                                                      "supported in ~= patterns",
                                                      filter);
                        c++;
                } else if (*c == '[') {
                        /* a bracket expression: its characters are literal */
                        c++;
                        if (*c == '^')
                                c++;
                        if (*c == ']')
                                c++;
                        while (*c && *c != ']')
                                c++;
                        if (!*c)
                                break; /* regcomp says what is wrong */
                } else if (*c == '{')
                        return kiln_error_set(err, -EINVAL,
                                              "filter '%s': repetition counts ({m,n}) are not "
                                              "supported in ~= patterns",
                                              filter);
                else if (*c == '(' && ++depth > KILN_API_LIMIT_DISK_PATTERN_DEPTH)
                        return kiln_error_set(err, -EINVAL,
                                              "filter '%s': groups nested more than %u deep",
                                              filter, KILN_API_LIMIT_DISK_PATTERN_DEPTH);
                else if (*c == ')' && depth > 0)
                        depth--;
                else if (*c == '*' || *c == '+' || *c == '?') {
                        if (quantified)
                                return kiln_error_set(err, -EINVAL,
                                                      "filter '%s': a repetition of a repetition "
                                                      "('%c' after '%c') is not supported in ~= "
                                                      "patterns",
                                                      filter, *c, c[-1]);
                        q = true;
                }
                quantified = q;
        }
        return 0;
}

static int selector_parse(const char *filter, const char **p, struct selector *sel,
                          struct kiln_error **err)
{
        const char *s = *p, *start;
        struct kiln_buf v = KILN_BUF_INIT(TEXT_MAX);

        while (is_blank(*s))
                s++;
        start = s;
        while (is_field_char(*s))
                s++;
        if (s == start)
                return kiln_error_set(err, -EINVAL,
                                      "filter '%s': expected a field name at offset %zu", filter,
                                      (size_t) (start - filter));
        sel->field = kiln_xstrndup(start, (size_t) (s - start));
        while (is_blank(*s))
                s++;
        if (*s == ',' || *s == '\0') {
                sel->op = OP_PRESENT;
                *p = s;
                return 0;
        }
        if (s[0] == '=' && s[1] == '=')
                sel->op = OP_EQUAL;
        else if (s[0] == '!' && s[1] == '=')
                sel->op = OP_NOT_EQUAL;
        else if (s[0] == '~' && s[1] == '=')
                sel->op = OP_MATCHES;
        else
                return kiln_error_set(err, -EINVAL,
                                      "filter '%s': expected '==', '!=' or '~=' after '%s'", filter,
                                      sel->field);
        s += 2;
        while (is_blank(*s))
                s++;
        if (*s == '"') {
                for (s++; *s && *s != '"'; s++) {
                        if (*s == '\\' && s[1])
                                s++;
                        kiln_buf_append(&v, s, 1);
                }
                if (*s != '"') {
                        kiln_buf_release(&v);
                        return kiln_error_set(err, -EINVAL, "filter '%s': unterminated quote",
                                              filter);
                }
                s++;
                while (is_blank(*s))
                        s++;
                if (*s != ',' && *s != '\0') {
                        kiln_buf_release(&v);
                        return kiln_error_set(err, -EINVAL,
                                              "filter '%s': expected ',' after the value of '%s'",
                                              filter, sel->field);
                }
        } else {
                const char *vs = s, *ve;

                while (*s && *s != ',')
                        s++;
                ve = s;
                while (ve > vs && is_blank(ve[-1]))
                        ve--;
                kiln_buf_append(&v, vs, (size_t) (ve - vs));
        }
        sel->value = kiln_buf_steal(&v);
        if (sel->op == OP_MATCHES) {
                /* a filter comes from any client: see pattern_check */
                int rc = pattern_check(filter, sel->value, err);

                if (rc < 0) {
                        sel->op = OP_EQUAL; /* nothing to regfree */
                        return rc;
                }
                rc = regcomp(&sel->re, sel->value, REG_EXTENDED | REG_NOSUB);

                if (rc != 0) {
                        char msg[128];

                        regerror(rc, &sel->re, msg, sizeof(msg));
                        sel->op = OP_EQUAL; /* nothing to regfree */
                        return kiln_error_set(err, -EINVAL,
                                              "filter '%s': invalid regular expression '%s': %s",
                                              filter, sel->value, msg);
                }
        }
        *p = s;
        return 0;
}

int kiln_api_disk_filter_parse(const char *s, struct kiln_api_disk_filter **ret,
                               struct kiln_error **err)
{
        _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;
        const char *p = s;
        int r;

        f = kiln_xcalloc(1, sizeof(*f));
        if (!s || !s[0]) {
                *ret = TAKE_PTR(f);
                return 0;
        }
        if (strlen(s) > KILN_API_LIMIT_DISK_FILTER)
                return kiln_error_set(err, -EINVAL, "filter is longer than %u bytes",
                                      KILN_API_LIMIT_DISK_FILTER);
        for (;;) {
                if (f->n >= KILN_API_LIMIT_DISK_SELECTORS)
                        return kiln_error_set(err, -EINVAL, "filter '%s': more than %u selectors",
                                              s, KILN_API_LIMIT_DISK_SELECTORS);
                f->sel = kiln_xreallocarray(f->sel, f->n + 1, sizeof(*f->sel));
                f->sel[f->n] = (struct selector){ 0 };
                r = selector_parse(s, &p, &f->sel[f->n], err);
                f->n++;
                if (r < 0)
                        return r;
                if (*p == '\0')
                        break;
                p++; /* ',' */
        }
        *ret = TAKE_PTR(f);
        return 0;
}

/* BuildKit's adaptUsageInfo: the field's value and whether it is present. */
static bool field_value(const struct kiln_api_disk_record *r, const char *field, char **value)
{
        *value = NULL;
        if (streq(field, "id")) {
                *value = kiln_xstrdup(r->id ? r->id : "");
                return r->id && r->id[0];
        }
        if (streq(field, "parents")) {
                struct kiln_buf b = KILN_BUF_INIT(KILN_API_LIMIT_DISK_PARENTS *
                                                  (KILN_API_LIMIT_DISK_STRING + 1u));

                for (size_t i = 0; i < r->n_parents; i++) {
                        if (i > 0)
                                kiln_buf_append(&b, ";", 1);
                        kiln_buf_append(&b, r->parents[i], strlen(r->parents[i]));
                }
                *value = kiln_buf_steal(&b);
                return r->n_parents > 0;
        }
        if (streq(field, "description")) {
                *value = kiln_xstrdup(r->description ? r->description : "");
                return r->description && r->description[0];
        }
        if (streq(field, "type")) {
                *value = kiln_xstrdup(r->type ? r->type : "");
                return r->type && r->type[0];
        }
        *value = kiln_xstrdup("");
        if (streq(field, "inuse"))
                return r->in_use;
        if (streq(field, "mutable"))
                return r->mutable_;
        if (streq(field, "immutable"))
                return !r->mutable_;
        if (streq(field, "shared"))
                return r->shared;
        if (streq(field, "private"))
                return !r->shared;
        return false;
}

bool kiln_api_disk_filter_match(const struct kiln_api_disk_filter *f,
                                const struct kiln_api_disk_record *r)
{
        if (!f)
                return true;
        for (size_t i = 0; i < f->n; i++) {
                const struct selector *sel = &f->sel[i];
                _cleanup_free_ char *value = NULL;
                bool present = field_value(r, sel->field, &value), ok = false;

                switch (sel->op) {
                case OP_PRESENT:
                        ok = present;
                        break;
                case OP_EQUAL:
                        ok = present && streq(value, sel->value);
                        break;
                case OP_NOT_EQUAL:
                        ok = !streq(value, sel->value);
                        break;
                case OP_MATCHES:
                        ok = present && regexec(&sel->re, value, 0, NULL, 0) == 0;
                        break;
                }
                if (!ok)
                        return false;
        }
        return true;
}

/* ---- buildx's --filter flags ---- */

struct flag_kv {
        char *key;
        char *value;
        bool multi; /* the key had another, different value */
};

static char *trim_dup(const char *s, size_t n)
{
        while (n > 0 && is_blank(*s)) {
                s++;
                n--;
        }
        while (n > 0 && is_blank(s[n - 1]))
                n--;
        return kiln_xstrndup(s, n);
}

int kiln_api_disk_filter_from_flags(const char *const *flags, size_t n, char **ret_filter,
                                    int64_t *ret_until_ns, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(TEXT_MAX);
        struct flag_kv *kv = kiln_xcalloc(n + 1, sizeof(*kv));
        const char *until_key = "until";
        size_t nkv = 0;
        int r = 0;

        *ret_filter = NULL;
        *ret_until_ns = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                const char *eq = strchr(flags[i], '=');
                char *key, *value;
                bool found = false;

                if (!flags[i][0])
                        continue;
                if (!eq) {
                        r = kiln_error_set(err, -EINVAL,
                                           "bad format of filter (expected name=value)");
                        break;
                }
                key = trim_dup(flags[i], (size_t) (eq - flags[i]));
                for (char *c = key; *c; c++)
                        if (*c >= 'A' && *c <= 'Z')
                                *c = (char) (*c - 'A' + 'a');
                value = trim_dup(eq + 1, strlen(eq + 1));
                for (size_t k = 0; k < nkv; k++)
                        if (streq(kv[k].key, key)) {
                                if (!streq(kv[k].value, value))
                                        kv[k].multi = true;
                                found = true;
                        }
                if (found) {
                        free(key);
                        free(value);
                        continue;
                }
                kv[nkv++] = (struct flag_kv){ .key = key, .value = value };
        }

        bool has_until = false, has_unused = false;
        for (size_t k = 0; r >= 0 && k < nkv; k++) {
                has_until |= streq(kv[k].key, "until");
                has_unused |= streq(kv[k].key, "unused-for");
        }
        if (r >= 0 && has_until && has_unused)
                r = kiln_error_set(err, -EINVAL,
                                   "conflicting filters \"until\" and \"unused-for\"");
        if (has_unused)
                until_key = "unused-for";
        for (size_t k = 0; r >= 0 && k < nkv; k++) {
                if (kv[k].multi) {
                        r = kiln_error_set(err, -EINVAL, "\"%s\" filter expects only one value",
                                           kv[k].key);
                        break;
                }
                if (streq(kv[k].key, until_key)) {
                        if (kiln_config_parse_duration(kv[k].value, ret_until_ns) < 0 ||
                            !kv[k].value[0])
                                r = kiln_error_set(err, -EINVAL,
                                                   "\"%s\" filter expects a duration (e.g., "
                                                   "'24h')",
                                                   until_key);
                        continue;
                }
                const char *op;
                size_t kl = strlen(kv[k].key);

                if (streq(kv[k].key, "id"))
                        op = "~=";
                else if (kl > 0 && (kv[k].key[kl - 1] == '!' || kv[k].key[kl - 1] == '~'))
                        op = "=";
                else
                        op = "==";
                if (out.len > 0)
                        kiln_buf_append(&out, ",", 1);
                kiln_buf_append(&out, kv[k].key, kl);
                kiln_buf_append(&out, op, strlen(op));
                kiln_buf_append(&out, kv[k].value, strlen(kv[k].value));
        }
        for (size_t k = 0; k < nkv; k++) {
                free(kv[k].key);
                free(kv[k].value);
        }
        free(kv);
        if (r < 0)
                return r;
        if (out.len > 0) {
                /* What the daemon would refuse is refused here, before
                 * anything is sent. */
                _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;

                r = kiln_api_disk_filter_parse(out.data, &f, err);
                if (r < 0)
                        return r;
                *ret_filter = kiln_buf_steal(&out);
        }
        return 0;
}

/* ---- human texts ---- */

void kiln_api_human_size(int64_t bytes, char out[static KILN_API_HUMAN_SIZE])
{
        static const char *const units[] = { "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB" };
        double v = (double) bytes;
        size_t i = 0;

        while (v >= 1000.0 && i + 1 < ELEMENTSOF(units)) {
                v /= 1000.0;
                i++;
        }
        (void) snprintf(out, KILN_API_HUMAN_SIZE, "%.4g%s", v, units[i]);
}

void kiln_api_human_duration(int64_t ns, char out[static KILN_API_HUMAN_SIZE])
{
        int64_t seconds = ns / NS_PER_S, minutes = ns / (60 * NS_PER_S), hours;

        if (seconds < 1)
                snprintf(out, KILN_API_HUMAN_SIZE, "Less than a second");
        else if (seconds == 1)
                snprintf(out, KILN_API_HUMAN_SIZE, "1 second");
        else if (seconds < 60)
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " seconds", seconds);
        else if (minutes == 1)
                snprintf(out, KILN_API_HUMAN_SIZE, "About a minute");
        else if (minutes < 60)
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " minutes", minutes);
        else if ((hours = (int64_t) ((double) ns / (3600.0 * NS_PER_S) + 0.5)) == 1)
                snprintf(out, KILN_API_HUMAN_SIZE, "About an hour");
        else if (hours < 48)
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " hours", hours);
        else if (hours < 24 * 7 * 2)
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " days", hours / 24);
        else if (hours < 24 * 30 * 2)
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " weeks", hours / 24 / 7);
        else if (hours < 24 * 365 * 2)
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " months", hours / 24 / 30);
        else
                snprintf(out, KILN_API_HUMAN_SIZE, "%" PRId64 " years",
                         ns / (3600 * NS_PER_S) / 24 / 365);
}

void kiln_api_go_time_string(int64_t unix_ns, char out[static KILN_API_HUMAN_SIZE])
{
        time_t s = (time_t) (unix_ns / NS_PER_S);
        long frac = (long) (unix_ns % NS_PER_S);
        char f[16] = "";
        struct tm tm;
        size_t n;

        if (frac < 0) {
                frac += NS_PER_S;
                s--;
        }
        gmtime_r(&s, &tm);
        if (frac > 0) {
                snprintf(f, sizeof(f), ".%09ld", frac);
                for (n = strlen(f); n > 1 && f[n - 1] == '0'; n--)
                        f[n - 1] = '\0';
        }
        n = strftime(out, KILN_API_HUMAN_SIZE, "%Y-%m-%d %H:%M:%S", &tm);
        (void) snprintf(out + n, KILN_API_HUMAN_SIZE - n, "%s +0000 UTC", f);
}

/* ---- Go's text/tabwriter ---- */

struct tw_cell {
        const char *p;
        size_t size;  /* bytes */
        size_t width; /* runes */
};

struct tw_line {
        struct tw_cell *cells;
        size_t n;
};

struct tw {
        struct tw_line *lines;
        size_t n_lines;
        size_t *widths;
        size_t n_widths;
        size_t minwidth, tabwidth, padding;
        char padchar;
        struct kiln_buf out;
};

static size_t rune_count(const char *p, size_t n)
{
        size_t w = 0;

        for (size_t i = 0; i < n; i++)
                w += ((unsigned char) p[i] & 0xC0) != 0x80;
        return w;
}

static void tw_padding(struct tw *t, size_t textw, size_t cellw)
{
        if (t->padchar == '\t') {
                size_t n;

                if (t->tabwidth == 0)
                        return;
                cellw = (cellw + t->tabwidth - 1) / t->tabwidth * t->tabwidth;
                n = cellw > textw ? cellw - textw : 0;
                for (size_t i = 0; i < (n + t->tabwidth - 1) / t->tabwidth; i++)
                        kiln_buf_putc(&t->out, '\t');
                return;
        }
        for (size_t i = textw; i < cellw; i++)
                kiln_buf_putc(&t->out, t->padchar);
}

static void tw_write_lines(struct tw *t, size_t line0, size_t line1)
{
        for (size_t i = line0; i < line1; i++) {
                const struct tw_line *l = &t->lines[i];

                for (size_t j = 0; j < l->n; j++) {
                        kiln_buf_append(&t->out, l->cells[j].p, l->cells[j].size);
                        if (j < t->n_widths)
                                tw_padding(t, l->cells[j].width, t->widths[j]);
                }
                if (i + 1 < t->n_lines)
                        kiln_buf_putc(&t->out, '\n');
        }
}

static void tw_format(struct tw *t, size_t line0, size_t line1)
{
        size_t column = t->n_widths;

        for (size_t this = line0; this < line1; this ++) {
                size_t width;

                if (column + 1 >= t->lines[this].n)
                        continue;
                tw_write_lines(t, line0, this);
                line0 = this;
                width = t->minwidth;
                for (; this < line1; this ++) {
                        const struct tw_line *l = &t->lines[this];

                        if (column + 1 >= l->n)
                                break;
                        if (l->cells[column].width + t->padding > width)
                                width = l->cells[column].width + t->padding;
                }
                t->widths = kiln_xreallocarray(t->widths, t->n_widths + 1, sizeof(size_t));
                t->widths[t->n_widths++] = width;
                tw_format(t, line0, this);
                t->n_widths--;
                line0 = this;
                this --; /* the loop's increment */
        }
        tw_write_lines(t, line0, line1);
}

char *kiln_api_tabwriter(const char *text, size_t minwidth, size_t tabwidth, size_t padding,
                         char padchar)
{
        struct tw t = { .minwidth = minwidth,
                        .tabwidth = tabwidth,
                        .padding = padding,
                        .padchar = padchar,
                        .out = KILN_BUF_INIT(SIZE_MAX / 2) };
        const char *p = text;

        /* Lines: text split at '\n'; a text ending in '\n' has an empty
         * last line, which writes nothing (and the newline before it). */
        for (;;) {
                const char *e = strchr(p, '\n');
                size_t len = e ? (size_t) (e - p) : strlen(p);
                struct tw_line *l;
                const char *c = p;

                t.lines = kiln_xreallocarray(t.lines, t.n_lines + 1, sizeof(*t.lines));
                l = &t.lines[t.n_lines++];
                *l = (struct tw_line){ 0 };
                for (;;) {
                        const char *tab = memchr(c, '\t', len - (size_t) (c - p));
                        size_t n = tab ? (size_t) (tab - c) : len - (size_t) (c - p);

                        l->cells = kiln_xreallocarray(l->cells, l->n + 1, sizeof(*l->cells));
                        l->cells[l->n++] = (struct tw_cell){ c, n, rune_count(c, n) };
                        if (!tab)
                                break;
                        c = tab + 1;
                }
                if (!e)
                        break;
                p = e + 1;
        }
        tw_format(&t, 0, t.n_lines);
        for (size_t i = 0; i < t.n_lines; i++)
                free(t.lines[i].cells);
        free(t.lines);
        free(t.widths);
        return kiln_buf_steal(&t.out);
}
