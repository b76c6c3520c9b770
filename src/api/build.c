/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build endpoints' wire types (api.h, "Builds"): the build request,
 * the context entry list and its answers, and the build stream's events.
 * Request decoders (what the daemon reads) are strict; event decoders
 * (what the client reads) ignore unknown keys.
 */
#include <inttypes.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "api-internal.h"

/* ---- small helpers ---- */

void kiln_api_strv_free(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void strv_free_n(char **v, size_t n)
{
        for (size_t i = 0; v && i < n; i++)
                free(v[i]);
        free(v);
}

void kiln_api_time_format(int64_t ns, char out[static KILN_API_TIME_SIZE])
{
        time_t sec = (time_t) (ns / 1000000000);
        long nsec = (long) (ns % 1000000000);
        struct tm tm;
        size_t n;

        if (nsec < 0) {
                nsec += 1000000000;
                sec--;
        }
        if (!gmtime_r(&sec, &tm) ||
            (n = strftime(out, KILN_API_TIME_SIZE, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
                (void) snprintf(out, KILN_API_TIME_SIZE, "1970-01-01T00:00:00.000000000Z");
                return;
        }
        (void) snprintf(out + n, KILN_API_TIME_SIZE - n, ".%09ldZ", nsec);
}

char *kiln_api_build_context_path(const char *build_id, const char *name)
{
        return kiln_xasprintf("%s/%s/context/%s", KILN_API_PATH_BUILD, build_id, name);
}

char *kiln_api_build_export_path(const char *build_id, unsigned index)
{
        return kiln_xasprintf("%s/%s/export/%u", KILN_API_PATH_BUILD, build_id, index);
}

const char *kiln_api_build_output_attr(const struct kiln_api_build_output *o, const char *key)
{
        for (size_t i = 0; i < o->n_attrs; i++)
                if (streq(o->attrs[i].key, key))
                        return o->attrs[i].value;
        return NULL;
}

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kiln_api_base64_encode(const void *data, size_t n)
{
        const uint8_t *p = data;
        char *out, *o;

        if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
                return NULL;
        out = kiln_xmalloc((n + 2) / 3 * 4 + 1);
        o = out;
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                size_t left = n - i;

                if (left > 1)
                        v |= (uint32_t) p[i + 1] << 8;
                if (left > 2)
                        v |= p[i + 2];
                *o++ = b64_alphabet[(v >> 18) & 63];
                *o++ = b64_alphabet[(v >> 12) & 63];
                *o++ = left > 1 ? b64_alphabet[(v >> 6) & 63] : '=';
                *o++ = left > 2 ? b64_alphabet[v & 63] : '=';
        }
        *o = '\0';
        return out;
}

static int b64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int kiln_api_base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len)
{
        _cleanup_free_ uint8_t *out = NULL;
        size_t len = 0;

        if (n % 4 != 0)
                return -EINVAL;
        /* One spare byte: an empty input still gets a buffer. */
        out = kiln_xmalloc(n / 4 * 3 + 1);
        for (size_t i = 0; i < n; i += 4) {
                int v[4];
                size_t pad = 0;

                for (size_t k = 0; k < 4; k++) {
                        if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                                v[k] = 0;
                                pad++;
                                continue;
                        }
                        if (pad > 0)
                                return -EINVAL; /* data after padding */
                        v[k] = b64_value(s[i + k]);
                        if (v[k] < 0)
                                return -EINVAL;
                }
                {
                        uint32_t w = (uint32_t) v[0] << 18 | (uint32_t) v[1] << 12 |
                                     (uint32_t) v[2] << 6 | (uint32_t) v[3];

                        /* Non-canonical encodings (bits set past the end)
                         * are refused, as Go's strict decoding does. */
                        if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
                                return -EINVAL;
                        out[len++] = (uint8_t) (w >> 16);
                        if (pad < 2)
                                out[len++] = (uint8_t) (w >> 8);
                        if (pad < 1)
                                out[len++] = (uint8_t) w;
                }
        }
        *ret = TAKE_PTR(out);
        *ret_len = len;
        return 0;
}

/* ---- encoding ---- */

/* An array key only when it has members. */
static int set_strv(json_t *o, const char *key, char *const *v, size_t n)
{
        return n > 0 ? kiln_api_json_set(o, key, kiln_api_json_strv((const char *const *) v, n))
                     : 0;
}

static json_t *kv_to_json(const struct kiln_api_kv *kv, size_t n)
{
        json_t *o = json_object();

        if (!o)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (kiln_api_json_set_str(o, kv[i].key, kv[i].value ? kv[i].value : "") < 0) {
                        json_decref(o);
                        return NULL;
                }
        return o;
}

int kiln_api_build_request_to_json(const struct kiln_api_build_request *req, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "dockerfile", req->dockerfile);
        r |= kiln_api_json_set_str(o, "dockerfileName", req->dockerfile_name);
        r |= kiln_api_json_set_str(o, "dockerignore", req->dockerignore);
        r |= kiln_api_json_set_str(o, "contextKey", req->context_key);
        if (req->n_build_args > 0)
                r |= kiln_api_json_set(o, "buildArgs",
                                       kv_to_json(req->build_args, req->n_build_args));
        if (req->n_labels > 0)
                r |= kiln_api_json_set(o, "labels", kv_to_json(req->labels, req->n_labels));
        r |= kiln_api_json_set_str(o, "target", req->target);
        r |= kiln_api_json_set_str(o, "platform", req->platform);
        if (req->no_cache)
                r |= kiln_api_json_set(o, "noCache", json_true());
        r |= set_strv(o, "noCacheFilter", req->no_cache_filter, req->n_no_cache_filter);
        r |= set_strv(o, "addHosts", req->add_hosts, req->n_add_hosts);
        r |= kiln_api_json_set_str(o, "network", req->network);
        r |= set_strv(o, "allow", req->allow, req->n_allow);
        if (req->n_secrets > 0) {
                json_t *a = json_array();

                for (size_t i = 0; a && i < req->n_secrets; i++) {
                        json_t *s = json_object();
                        char *data =
                                kiln_api_base64_encode(req->secrets[i].data, req->secrets[i].len);

                        if (!s || !data || kiln_api_json_set_str(s, "id", req->secrets[i].id) < 0 ||
                            kiln_api_json_set_str(s, "data", data) < 0 ||
                            json_array_append_new(a, s) < 0)
                                r = -ENOMEM;
                        if (data) {
                                explicit_bzero(data, strlen(data));
                                free(data);
                        }
                }
                r |= kiln_api_json_set(o, "secrets", a);
        }
        if (req->n_ssh > 0) {
                json_t *a = json_array();

                for (size_t i = 0; a && i < req->n_ssh; i++) {
                        json_t *s = json_object();

                        if (!s || kiln_api_json_set_str(s, "id", req->ssh[i].id) < 0 ||
                            kiln_api_json_set_str(s, "path", req->ssh[i].path) < 0 ||
                            json_array_append_new(a, s) < 0)
                                r = -ENOMEM;
                }
                r |= kiln_api_json_set(o, "ssh", a);
        }
        if (req->n_outputs > 0) {
                json_t *a = json_array();

                for (size_t i = 0; a && i < req->n_outputs; i++) {
                        json_t *e = json_object();

                        if (!e || kiln_api_json_set_str(e, "type", req->outputs[i].type) < 0 ||
                            kiln_api_json_set(e, "attrs",
                                              kv_to_json(req->outputs[i].attrs,
                                                         req->outputs[i].n_attrs)) < 0 ||
                            json_array_append_new(a, e) < 0)
                                r = -ENOMEM;
                }
                r |= kiln_api_json_set(o, "outputs", a);
        }
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_context_entries_to_json(const struct kiln_api_context_entry *entries, size_t n,
                                     json_t **ret)
{
        json_t *o = json_object(), *a = json_array();
        int r = 0;

        if (!o || !a) {
                json_decref(o);
                json_decref(a);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const struct kiln_api_context_entry *e = &entries[i];
                json_t *j = json_object();

                if (!j) {
                        r = -ENOMEM;
                        break;
                }
                r |= kiln_api_json_set_str(j, "path", e->path);
                r |= kiln_api_json_set_uint(j, "mode", e->mode);
                r |= kiln_api_json_set_uint(j, "size", e->size);
                r |= kiln_api_json_set_int(j, "mtime", e->mtime_ns);
                r |= kiln_api_json_set_uint(j, "uid", e->uid);
                r |= kiln_api_json_set_uint(j, "gid", e->gid);
                r |= kiln_api_json_set_str(j, "link", e->link);
                if (json_array_append_new(a, j) < 0)
                        r = -ENOMEM;
        }
        r |= kiln_api_json_set(o, "entries", a);
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_context_need_to_json(const char *const *paths, size_t n, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set(o, "need", kiln_api_json_strv(paths, n));
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_context_probe_to_json(const char *digest, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set(o, "digest", json_string(digest));
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_context_unchanged_to_json(bool unchanged, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set(o, "unchanged", json_boolean(unchanged));
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_context_upload_result_to_json(uint64_t files, uint64_t bytes, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_uint(o, "files", files);
        r |= kiln_api_json_set_uint(o, "bytes", bytes);
        return kiln_api_json_finish(o, r, ret);
}

static const char *const build_event_types[_KILN_API_BUILD_EVENT_TYPE_MAX] = {
        [KILN_API_BUILD_EVENT_BUILD] = "build",
        [KILN_API_BUILD_EVENT_VERTEX] = "vertex",
        [KILN_API_BUILD_EVENT_STATUS] = "status",
        [KILN_API_BUILD_EVENT_LOG] = "log",
        [KILN_API_BUILD_EVENT_WARNING] = "warning",
        [KILN_API_BUILD_EVENT_CONTEXT_REQUEST] = "context-request",
        [KILN_API_BUILD_EVENT_EXPORT] = "export",
        [KILN_API_BUILD_EVENT_RESULT] = "result",
        [KILN_API_BUILD_EVENT_ERROR] = "error",
};

const char *kiln_api_build_event_type_to_string(enum kiln_api_build_event_type t)
{
        return kiln_api_name_to_string(build_event_types, ELEMENTSOF(build_event_types), (int) t);
}

enum kiln_api_build_event_type kiln_api_build_event_type_from_string(const char *s)
{
        return (enum kiln_api_build_event_type) kiln_api_name_from_string(
                build_event_types, ELEMENTSOF(build_event_types), s);
}

int kiln_api_build_event_to_json(const struct kiln_api_build_event *ev, json_t **ret)
{
        const char *type = kiln_api_build_event_type_to_string(ev->type);
        json_t *o;
        int r = 0;

        if (!type)
                return -EINVAL;
        o = json_object();
        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "type", type);
        r |= kiln_api_json_set_str(o, "time", ev->time);
        switch (ev->type) {
        case KILN_API_BUILD_EVENT_BUILD:
                r |= kiln_api_json_set_str(o, "id", ev->id);
                break;
        case KILN_API_BUILD_EVENT_VERTEX:
                r |= kiln_api_json_set_str(o, "digest", ev->digest);
                r |= kiln_api_json_set_str(o, "name", ev->name);
                r |= kiln_api_json_set(
                        o, "inputs",
                        kiln_api_json_strv((const char *const *) ev->inputs, ev->n_inputs));
                r |= kiln_api_json_set_str(o, "started", ev->started);
                r |= kiln_api_json_set_str(o, "completed", ev->completed);
                if (ev->cached)
                        r |= kiln_api_json_set(o, "cached", json_true());
                r |= kiln_api_json_set_str(o, "error", ev->error);
                break;
        case KILN_API_BUILD_EVENT_STATUS:
                r |= kiln_api_json_set_str(o, "vertex", ev->vertex);
                r |= kiln_api_json_set_str(o, "id", ev->id);
                r |= kiln_api_json_set_str(o, "name", ev->name);
                r |= kiln_api_json_set_int(o, "current", ev->current);
                if (ev->total > 0)
                        r |= kiln_api_json_set_int(o, "total", ev->total);
                r |= kiln_api_json_set_str(o, "started", ev->started);
                r |= kiln_api_json_set_str(o, "completed", ev->completed);
                break;
        case KILN_API_BUILD_EVENT_LOG: {
                char *data = kiln_api_base64_encode(ev->data, ev->len);

                if (!data) {
                        r = -ENOMEM;
                        break;
                }
                r |= kiln_api_json_set_str(o, "vertex", ev->vertex);
                r |= kiln_api_json_set_int(o, "stream", ev->stream);
                r |= kiln_api_json_set_str(o, "data", data);
                free(data);
                break;
        }
        case KILN_API_BUILD_EVENT_WARNING:
                r |= kiln_api_json_set_str(o, "rule", ev->rule);
                r |= kiln_api_json_set_str(o, "message", ev->message);
                if (ev->url && ev->url[0])
                        r |= kiln_api_json_set_str(o, "url", ev->url);
                if (ev->line > 0)
                        r |= kiln_api_json_set_uint(o, "line", ev->line);
                break;
        case KILN_API_BUILD_EVENT_CONTEXT_REQUEST:
                r |= kiln_api_json_set_str(o, "name", ev->name);
                r |= kiln_api_json_set(o, "followPaths",
                                       kiln_api_json_strv((const char *const *) ev->follow_paths,
                                                          ev->n_follow_paths));
                r |= kiln_api_json_set(
                        o, "includePatterns",
                        kiln_api_json_strv((const char *const *) ev->include_patterns,
                                           ev->n_include_patterns));
                r |= kiln_api_json_set(
                        o, "excludePatterns",
                        kiln_api_json_strv((const char *const *) ev->exclude_patterns,
                                           ev->n_exclude_patterns));
                break;
        case KILN_API_BUILD_EVENT_EXPORT:
                r |= kiln_api_json_set_uint(o, "index", ev->index);
                r |= kiln_api_json_set_str(o, "exporter", ev->exporter);
                break;
        case KILN_API_BUILD_EVENT_RESULT:
                r |= kiln_api_json_set(o, "config",
                                       ev->config ? json_incref(ev->config) : json_object());
                r |= kiln_api_json_set_str(o, "snapshot", ev->snapshot);
                if (ev->exporter_response)
                        r |= kiln_api_json_set(o, "exporterResponse",
                                               json_incref(ev->exporter_response));
                break;
        case KILN_API_BUILD_EVENT_ERROR:
                r |= kiln_api_json_set_str(o, "error", ev->error ? ev->error : "unknown error");
                if (ev->source_file) {
                        json_t *src = json_object();

                        if (!src) {
                                r = -ENOMEM;
                                break;
                        }
                        r |= kiln_api_json_set_str(src, "file", ev->source_file);
                        r |= kiln_api_json_set(src, "lines",
                                               json_pack("[II]", (json_int_t) ev->source_start,
                                                         (json_int_t) ev->source_end));
                        r |= kiln_api_json_set(o, "source", src);
                }
                break;
        case _KILN_API_BUILD_EVENT_TYPE_MAX:
        case _KILN_API_BUILD_EVENT_TYPE_INVALID:
                break;
        }
        return kiln_api_json_finish(o, r, ret);
}

/* ---- decoding ---- */

static int get_bool(const json_t *o, const char *what, const char *key, bool *ret,
                    struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key);

        if (!v)
                return 0;
        if (!json_is_boolean(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be true or false", what, key);
        *ret = json_is_true(v);
        return 0;
}

/* An array of strings, each non-empty when nonempty is set. *ret is
 * NULL-terminated. */
static int get_strv(const json_t *o, const char *what, const char *key, size_t max_items,
                    size_t max_len, bool nonempty, char ***ret, size_t *n_ret,
                    struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key);
        char **out;
        size_t n;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be an array of strings", what,
                                      key);
        n = json_array_size(v);
        if (max_items && n > max_items)
                return kiln_error_set(err, -E2BIG, "%s: \"%s\" has more than %zu items", what, key,
                                      max_items);
        out = kiln_xcalloc(n + 1, sizeof(*out));
        for (size_t i = 0; i < n; i++) {
                const json_t *s = json_array_get(v, i);

                if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
                        strv_free_n(out, i);
                        return kiln_error_set(err, -EINVAL, "%s: \"%s\"[%zu] must be a string",
                                              what, key, i);
                }
                if (nonempty && json_string_length(s) == 0) {
                        strv_free_n(out, i);
                        return kiln_error_set(err, -EINVAL, "%s: \"%s\"[%zu] is empty", what, key,
                                              i);
                }
                if (max_len && json_string_length(s) > max_len) {
                        strv_free_n(out, i);
                        return kiln_error_set(err, -E2BIG,
                                              "%s: \"%s\"[%zu] is longer than %zu bytes", what, key,
                                              i, max_len);
                }
                out[i] = kiln_xstrdup(json_string_value(s));
        }
        kiln_api_strv_free(*ret);
        *ret = out;
        *n_ret = n;
        return 0;
}

static void kv_free(struct kiln_api_kv *kv, size_t n)
{
        for (size_t i = 0; kv && i < n; i++) {
                free(kv[i].key);
                free(kv[i].value);
        }
        free(kv);
}

/* An object of string values, in the object's order (jansson keeps
 * insertion order). */
static int get_kv(const json_t *o, const char *what, const char *key, struct kiln_api_kv **ret,
                  size_t *n_ret, struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key), *value;
        struct kiln_api_kv *out;
        const char *k;
        size_t n = 0;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_object(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be an object of strings", what,
                                      key);
        if (json_object_size(v) > KILN_API_LIMIT_BUILD_ITEMS)
                return kiln_error_set(err, -E2BIG, "%s: \"%s\" has more than %u items", what, key,
                                      KILN_API_LIMIT_BUILD_ITEMS);
        out = kiln_xcalloc(json_object_size(v) + 1, sizeof(*out));
        json_object_foreach ((json_t *) v, k, value) {
                if (!json_is_string(value) ||
                    strlen(json_string_value(value)) != json_string_length(value)) {
                        kv_free(out, n);
                        return kiln_error_set(err, -EINVAL, "%s: \"%s\": \"%s\" must be a string",
                                              what, key, k);
                }
                if (k[0] == '\0') {
                        kv_free(out, n);
                        return kiln_error_set(err, -EINVAL, "%s: \"%s\": empty name", what, key);
                }
                out[n].key = kiln_xstrdup(k);
                out[n].value = kiln_xstrdup(json_string_value(value));
                n++;
        }
        *ret = out;
        *n_ret = n;
        return 0;
}

void kiln_api_build_request_release(struct kiln_api_build_request *req)
{
        free(req->dockerfile);
        free(req->dockerfile_name);
        free(req->dockerignore);
        free(req->context_key);
        kv_free(req->build_args, req->n_build_args);
        kv_free(req->labels, req->n_labels);
        free(req->target);
        free(req->platform);
        strv_free_n(req->no_cache_filter, req->n_no_cache_filter);
        strv_free_n(req->add_hosts, req->n_add_hosts);
        free(req->network);
        strv_free_n(req->allow, req->n_allow);
        for (size_t i = 0; req->secrets && i < req->n_secrets; i++) {
                free(req->secrets[i].id);
                if (req->secrets[i].data)
                        explicit_bzero(req->secrets[i].data, req->secrets[i].len);
                free(req->secrets[i].data);
        }
        free(req->secrets);
        for (size_t i = 0; req->ssh && i < req->n_ssh; i++) {
                free(req->ssh[i].id);
                free(req->ssh[i].path);
        }
        free(req->ssh);
        for (size_t i = 0; req->outputs && i < req->n_outputs; i++) {
                free(req->outputs[i].type);
                kv_free(req->outputs[i].attrs, req->outputs[i].n_attrs);
        }
        free(req->outputs);
        *req = (struct kiln_api_build_request){ 0 };
}

static int get_secrets(const json_t *o, const char *what, struct kiln_api_build_request *req,
                       struct kiln_error **err)
{
        static const char *const keys[] = { "id", "data", NULL };
        const json_t *v = json_object_get(o, "secrets");
        size_t n;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return kiln_error_set(err, -EINVAL, "%s: \"secrets\" must be an array", what);
        n = json_array_size(v);
        if (n > KILN_API_LIMIT_BUILD_SECRETS)
                return kiln_error_set(err, -E2BIG, "%s: more than %u secrets", what,
                                      KILN_API_LIMIT_BUILD_SECRETS);
        req->secrets = kiln_xcalloc(n + 1, sizeof(*req->secrets));
        for (size_t i = 0; i < n; i++) {
                const json_t *s = json_array_get(v, i), *data;
                struct kiln_api_build_secret *sec = &req->secrets[req->n_secrets];
                _cleanup_free_ char *w = kiln_xasprintf("%s: \"secrets\"[%zu]", what, i);
                int r;

                if (!json_is_object(s))
                        return kiln_error_set(err, -EINVAL, "%s: expected an object", w);
                r = kiln_api_json_check_keys(s, w, keys, err);
                if (r < 0)
                        return r;
                r = kiln_api_json_get_str(s, w, "id", true, KILN_API_LIMIT_REF, &sec->id, err);
                if (r < 0) {
                        free(sec->id);
                        sec->id = NULL;
                        return r;
                }
                req->n_secrets++;
                if (sec->id[0] == '\0')
                        return kiln_error_set(err, -EINVAL, "%s: \"id\" is empty", w);
                for (size_t k = 0; k + 1 < req->n_secrets; k++)
                        if (streq(req->secrets[k].id, sec->id))
                                return kiln_error_set(err, -EINVAL,
                                                      "%s: secret '%s' given more than once", what,
                                                      sec->id);
                data = json_object_get(s, "data");
                if (!json_is_string(data))
                        return kiln_error_set(err, -EINVAL, "%s: \"data\" must be a string", w);
                /* Never the contents in a message. */
                if (kiln_api_base64_decode(json_string_value(data), json_string_length(data),
                                           &sec->data, &sec->len) < 0)
                        return kiln_error_set(err, -EINVAL, "%s: \"data\" is not base64", w);
        }
        return 0;
}

static int get_ssh(const json_t *o, const char *what, struct kiln_api_build_request *req,
                   struct kiln_error **err)
{
        static const char *const keys[] = { "id", "path", NULL };
        const json_t *v = json_object_get(o, "ssh");
        size_t n;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return kiln_error_set(err, -EINVAL, "%s: \"ssh\" must be an array", what);
        n = json_array_size(v);
        if (n > KILN_API_LIMIT_BUILD_SECRETS)
                return kiln_error_set(err, -E2BIG, "%s: more than %u ssh sockets", what,
                                      KILN_API_LIMIT_BUILD_SECRETS);
        req->ssh = kiln_xcalloc(n + 1, sizeof(*req->ssh));
        for (size_t i = 0; i < n; i++) {
                const json_t *s = json_array_get(v, i);
                struct kiln_api_build_ssh *ssh = &req->ssh[i];
                _cleanup_free_ char *w = kiln_xasprintf("%s: \"ssh\"[%zu]", what, i);
                int r;

                if (!json_is_object(s))
                        return kiln_error_set(err, -EINVAL, "%s: expected an object", w);
                r = kiln_api_json_check_keys(s, w, keys, err);
                req->n_ssh++;
                if (r >= 0)
                        r = kiln_api_json_get_str(s, w, "id", true, KILN_API_LIMIT_REF, &ssh->id,
                                                  err);
                if (r >= 0)
                        r = kiln_api_json_get_str(s, w, "path", true, KILN_API_LIMIT_CONTEXT_PATH,
                                                  &ssh->path, err);
                if (r < 0)
                        return r;
                if (ssh->id[0] == '\0')
                        return kiln_error_set(err, -EINVAL, "%s: \"id\" is empty", w);
                if (ssh->path[0] != '/')
                        return kiln_error_set(err, -EINVAL,
                                              "%s: \"path\" '%s' is not an absolute path", w,
                                              ssh->path);
                for (size_t k = 0; k < i; k++)
                        if (streq(req->ssh[k].id, ssh->id))
                                return kiln_error_set(err, -EINVAL,
                                                      "%s: ssh '%s' given more than once", what,
                                                      ssh->id);
        }
        return 0;
}

static bool output_type_known(const char *t)
{
        static const char *const known[] = { "image", "registry", "oci", "docker", "local", "tar" };

        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                if (streq(t, known[i]))
                        return true;
        return false;
}

static int get_outputs(const json_t *o, const char *what, struct kiln_api_build_request *req,
                       struct kiln_error **err)
{
        static const char *const keys[] = { "type", "attrs", NULL };
        const json_t *v = json_object_get(o, "outputs");
        size_t n;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return kiln_error_set(err, -EINVAL, "%s: \"outputs\" must be an array", what);
        n = json_array_size(v);
        if (n > KILN_API_LIMIT_BUILD_OUTPUTS)
                return kiln_error_set(err, -E2BIG, "%s: more than %u outputs", what,
                                      KILN_API_LIMIT_BUILD_OUTPUTS);
        req->outputs = kiln_xcalloc(n + 1, sizeof(*req->outputs));
        for (size_t i = 0; i < n; i++) {
                const json_t *e = json_array_get(v, i), *attrs;
                struct kiln_api_build_output *out = &req->outputs[i];
                _cleanup_free_ char *w = kiln_xasprintf("%s: \"outputs\"[%zu]", what, i);
                int r;

                if (!json_is_object(e))
                        return kiln_error_set(err, -EINVAL, "%s: expected an object", w);
                req->n_outputs++;
                r = kiln_api_json_check_keys(e, w, keys, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(e, w, "type", true, KILN_API_LIMIT_REF,
                                                  &out->type, err);
                if (r >= 0)
                        r = get_kv(e, w, "attrs", &out->attrs, &out->n_attrs, err);
                if (r < 0)
                        return r;
                attrs = json_object_get(e, "attrs");
                if (json_object_size(attrs) > KILN_API_LIMIT_OUTPUT_ATTRS)
                        return kiln_error_set(err, -E2BIG, "%s: more than %u attributes", w,
                                              KILN_API_LIMIT_OUTPUT_ATTRS);
                if (!output_type_known(out->type))
                        return kiln_error_set(err, -EINVAL,
                                              "%s: exporter \"%s\" could not be found", w,
                                              out->type);
        }
        return 0;
}

int kiln_api_build_request_from_json(const json_t *j, struct kiln_api_build_request *ret,
                                     struct kiln_error **err)
{
        static const char *const keys[] = {
                "dockerfile",   "dockerfileName",
                "dockerignore", "contextKey",
                "buildArgs",    "labels",
                "target",       "platform",
                "noCache",      "noCacheFilter",
                "addHosts",     "network",
                "secrets",      "ssh",
                "allow",        "outputs",
                NULL,
        };
        _cleanup_(kiln_api_build_request_release) struct kiln_api_build_request req = { 0 };
        const char *what = "build request";
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "%s: expected a JSON object", what);
        r = kiln_api_json_check_keys(j, what, keys, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "dockerfile", true, 0, &req.dockerfile, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "dockerfileName", false,
                                          KILN_API_LIMIT_CONTEXT_PATH, &req.dockerfile_name, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "dockerignore", false, 0, &req.dockerignore,
                                          err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "contextKey", true, KILN_API_LIMIT_CONTEXT_KEY,
                                          &req.context_key, err);
        if (r >= 0)
                r = get_kv(j, what, "buildArgs", &req.build_args, &req.n_build_args, err);
        if (r >= 0)
                r = get_kv(j, what, "labels", &req.labels, &req.n_labels, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "target", false, KILN_API_LIMIT_REF, &req.target,
                                          err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "platform", false, KILN_API_LIMIT_REF,
                                          &req.platform, err);
        if (r >= 0)
                r = get_bool(j, what, "noCache", &req.no_cache, err);
        if (r >= 0)
                r = get_strv(j, what, "noCacheFilter", KILN_API_LIMIT_BUILD_ITEMS,
                             KILN_API_LIMIT_REF, true, &req.no_cache_filter, &req.n_no_cache_filter,
                             err);
        if (r >= 0)
                r = get_strv(j, what, "addHosts", KILN_API_LIMIT_BUILD_ITEMS, KILN_API_LIMIT_REF,
                             true, &req.add_hosts, &req.n_add_hosts, err);
        if (r >= 0)
                r = kiln_api_json_get_str(j, what, "network", false, 0, &req.network, err);
        if (r >= 0)
                r = get_strv(j, what, "allow", KILN_API_LIMIT_BUILD_ITEMS, KILN_API_LIMIT_REF, true,
                             &req.allow, &req.n_allow, err);
        if (r >= 0)
                r = get_secrets(j, what, &req, err);
        if (r >= 0)
                r = get_ssh(j, what, &req, err);
        if (r >= 0)
                r = get_outputs(j, what, &req, err);
        if (r < 0)
                return r;
        if (req.context_key[0] == '\0')
                return kiln_error_set(err, -EINVAL, "%s: \"contextKey\" is empty", what);
        if (req.network && !streq(req.network, "default") && !streq(req.network, "none") &&
            !streq(req.network, "host"))
                return kiln_error_set(err, -EINVAL,
                                      "%s: network mode '%s' not supported: expected default, "
                                      "none or host",
                                      what, req.network);
        for (size_t i = 0; i < req.n_allow; i++)
                if (!streq(req.allow[i], "network.host") &&
                    !streq(req.allow[i], "security.insecure"))
                        return kiln_error_set(err, -EINVAL,
                                              "%s: invalid entitlement '%s': expected "
                                              "network.host or security.insecure",
                                              what, req.allow[i]);
        for (size_t i = 0; i < req.n_add_hosts; i++)
                if (!strchr(req.add_hosts[i], ':'))
                        return kiln_error_set(err, -EINVAL,
                                              "%s: invalid host '%s': expected host:ip", what,
                                              req.add_hosts[i]);
        *ret = req;
        req = (struct kiln_api_build_request){ 0 };
        return 0;
}

void kiln_api_context_entries_free(struct kiln_api_context_entry *entries, size_t n)
{
        for (size_t i = 0; entries && i < n; i++) {
                free(entries[i].path);
                free(entries[i].link);
        }
        free(entries);
}

/* A relative, '/'-separated path without empty, "." or ".." components. */
static bool path_is_clean(const char *p)
{
        const char *c = p;

        if (p[0] == '\0')
                return false;
        for (;;) {
                const char *slash = strchr(c, '/');
                size_t len = slash ? (size_t) (slash - c) : strlen(c);

                if (len == 0 || (len == 1 && c[0] == '.') ||
                    (len == 2 && c[0] == '.' && c[1] == '.'))
                        return false;
                if (!slash)
                        return true;
                c = slash + 1;
        }
}

/* Whether the parent directory of path is present as a directory in the
 * entries before index i (sorted order means the parent, if present,
 * comes first). Checked by a binary search over entries[0..i). */
static bool parent_listed(const struct kiln_api_context_entry *e, size_t i, const char *path)
{
        const char *slash = strrchr(path, '/');
        size_t lo = 0, hi = i, plen;

        if (!slash)
                return true;
        plen = (size_t) (slash - path);
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strncmp(e[mid].path, path, plen);

                if (c == 0 && e[mid].path[plen] != '\0')
                        c = 1;
                if (c == 0)
                        return S_ISDIR(e[mid].mode);
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return false;
}

int kiln_api_context_entries_from_json(const json_t *j, struct kiln_api_context_entry **ret,
                                       size_t *n_ret, struct kiln_error **err)
{
        static const char *const top[] = { "entries", NULL };
        static const char *const keys[] = { "path", "mode", "size", "mtime",
                                            "uid",  "gid",  "link", NULL };
        const char *what = "context entries";
        struct kiln_api_context_entry *out = NULL;
        const json_t *a;
        size_t n = 0, total;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "%s: expected a JSON object", what);
        r = kiln_api_json_check_keys(j, what, top, err);
        if (r < 0)
                return r;
        a = json_object_get(j, "entries");
        if (!json_is_array(a))
                return kiln_error_set(err, -EINVAL, "%s: \"entries\" must be an array", what);
        total = json_array_size(a);
        if (total > KILN_API_LIMIT_CONTEXT_ENTRIES)
                return kiln_error_set(err, -E2BIG, "%s: more than %u entries", what,
                                      KILN_API_LIMIT_CONTEXT_ENTRIES);
        out = kiln_xcalloc(total + 1, sizeof(*out));
        for (size_t i = 0; i < total; i++) {
                const json_t *o = json_array_get(a, i);
                struct kiln_api_context_entry *e = &out[n];
                _cleanup_free_ char *w = NULL;
                int64_t mode = 0, size = 0, mtime = 0, uid = 0, gid = 0;

                if (!json_is_object(o)) {
                        r = kiln_error_set(err, -EINVAL, "%s: entry %zu: expected an object", what,
                                           i);
                        goto fail;
                }
                w = kiln_xasprintf("%s: entry %zu", what, i);
                n++;
                r = kiln_api_json_check_keys(o, w, keys, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(o, w, "path", true, KILN_API_LIMIT_CONTEXT_PATH,
                                                  &e->path, err);
                if (r < 0)
                        goto fail;
                free(w);
                w = kiln_xasprintf("%s: '%s'", what, e->path);
                r = kiln_api_json_get_int(o, w, "mode", true, 0, UINT32_MAX, &mode, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(o, w, "size", false, 0, INT64_MAX, &size, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(o, w, "mtime", false, INT64_MIN, INT64_MAX,
                                                  &mtime, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(o, w, "uid", false, 0, UINT32_MAX, &uid, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(o, w, "gid", false, 0, UINT32_MAX, &gid, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(o, w, "link", false, KILN_API_LIMIT_CONTEXT_PATH,
                                                  &e->link, err);
                if (r < 0)
                        goto fail;
                e->mode = (uint32_t) mode;
                e->size = (uint64_t) size;
                e->mtime_ns = mtime;
                e->uid = (uint32_t) uid;
                e->gid = (uint32_t) gid;
                if (!path_is_clean(e->path)) {
                        r = kiln_error_set(err, -EINVAL,
                                           "%s: the path must be relative and clean (no "
                                           "leading or trailing '/', no '.' or '..')",
                                           w);
                        goto fail;
                }
                if (!S_ISREG(e->mode) && !S_ISDIR(e->mode) && !S_ISLNK(e->mode)) {
                        r = kiln_error_set(err, -EINVAL,
                                           "%s: unsupported file type (mode %#o): only regular "
                                           "files, directories and symlinks",
                                           w, e->mode);
                        goto fail;
                }
                if (S_ISLNK(e->mode) != (e->link != NULL)) {
                        r = kiln_error_set(err, -EINVAL,
                                           S_ISLNK(e->mode) ? "%s: a symlink needs \"link\""
                                                            : "%s: \"link\" is for symlinks only",
                                           w);
                        goto fail;
                }
                if (S_ISLNK(e->mode) && e->link[0] == '\0') {
                        r = kiln_error_set(err, -EINVAL, "%s: empty symlink target", w);
                        goto fail;
                }
                if (n > 1 && strcmp(out[n - 2].path, e->path) >= 0) {
                        r = kiln_error_set(err, -EINVAL,
                                           "%s: entries must be sorted by path, without "
                                           "duplicates (after '%s')",
                                           w, out[n - 2].path);
                        goto fail;
                }
                if (!parent_listed(out, n - 1, e->path)) {
                        r = kiln_error_set(err, -EINVAL,
                                           "%s: its parent directory is not listed before it", w);
                        goto fail;
                }
        }
        *ret = out;
        *n_ret = n;
        return 0;
fail:
        kiln_api_context_entries_free(out, n);
        return r;
}

int kiln_api_context_need_from_json(const json_t *j, char ***ret, size_t *n_ret,
                                    struct kiln_error **err)
{
        char **v = NULL;
        size_t n = 0;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG, "context answer: expected a JSON object");
        if (!json_is_array(json_object_get(j, "need")))
                return kiln_error_set(err, -EBADMSG,
                                      "context answer: \"need\" must be an array of strings");
        r = get_strv(j, "context answer", "need", KILN_API_LIMIT_CONTEXT_ENTRIES,
                     KILN_API_LIMIT_CONTEXT_PATH, true, &v, &n, err);
        if (r < 0)
                return -EBADMSG;
        *ret = v;
        *n_ret = n;
        return 0;
}

int kiln_api_context_probe_from_json(const json_t *j, char **ret_digest, struct kiln_error **err)
{
        static const char *const keys[] = { "digest", NULL };
        const char *d = json_string_value(json_object_get(j, "digest"));
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "context probe: expected a JSON object");
        r = kiln_api_json_check_keys(j, "context probe", keys, err);
        if (r < 0)
                return r;
        if (!d || strlen(d) != 7 + 64 || strncmp(d, "sha256:", 7) != 0 ||
            strspn(d + 7, "0123456789abcdef") != 64)
                return kiln_error_set(err, -EINVAL,
                                      "context probe: \"digest\" must be \"sha256:\" and 64 "
                                      "lower-case hex digits");
        *ret_digest = kiln_xstrdup(d);
        return 0;
}

int kiln_api_context_unchanged_from_json(const json_t *j, bool *ret, struct kiln_error **err)
{
        json_t *v = json_object_get(j, "unchanged");

        if (!json_is_object(j) || !json_is_boolean(v))
                return kiln_error_set(err, -EBADMSG,
                                      "context answer: expected {\"unchanged\": true|false}");
        *ret = json_is_true(v);
        return 0;
}

int kiln_api_context_upload_result_from_json(const json_t *j, uint64_t *files, uint64_t *bytes,
                                             struct kiln_error **err)
{
        int64_t f = 0, b = 0;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG,
                                      "context upload answer: expected a JSON "
                                      "object");
        r = kiln_api_json_get_int(j, "context upload answer", "files", true, 0, INT64_MAX, &f, err);
        if (r >= 0)
                r = kiln_api_json_get_int(j, "context upload answer", "bytes", true, 0, INT64_MAX,
                                          &b, err);
        if (r < 0)
                return -EBADMSG;
        *files = (uint64_t) f;
        *bytes = (uint64_t) b;
        return 0;
}

void kiln_api_build_event_release(struct kiln_api_build_event *ev)
{
        free(ev->time);
        free(ev->id);
        free(ev->digest);
        free(ev->vertex);
        free(ev->name);
        strv_free_n(ev->inputs, ev->n_inputs);
        free(ev->started);
        free(ev->completed);
        free(ev->error);
        free(ev->data);
        free(ev->rule);
        free(ev->message);
        free(ev->url);
        strv_free_n(ev->follow_paths, ev->n_follow_paths);
        strv_free_n(ev->include_patterns, ev->n_include_patterns);
        strv_free_n(ev->exclude_patterns, ev->n_exclude_patterns);
        json_decref(ev->config);
        free(ev->snapshot);
        json_decref(ev->exporter_response);
        free(ev->exporter);
        free(ev->source_file);
        *ev = (struct kiln_api_build_event){ 0 };
}

/* The error event's {"file", "lines": [start, end]}. */
static int get_source(const json_t *j, struct kiln_api_build_event *ev, struct kiln_error **err)
{
        const json_t *src = json_object_get(j, "source"), *lines;
        json_int_t a, b;
        int r;

        if (!src || json_is_null(src))
                return 0;
        if (!json_is_object(src))
                return kiln_error_set(err, -EBADMSG, "error: \"source\" must be an object");
        r = kiln_api_json_get_str(src, "error source", "file", true, KILN_API_LIMIT_CONTEXT_PATH,
                                  &ev->source_file, err);
        if (r < 0)
                return r;
        lines = json_object_get(src, "lines");
        if (!json_is_array(lines) || json_array_size(lines) != 2 ||
            !json_is_integer(json_array_get(lines, 0)) ||
            !json_is_integer(json_array_get(lines, 1)))
                return kiln_error_set(err, -EBADMSG,
                                      "error: \"source\": \"lines\" must be [start, end]");
        a = json_integer_value(json_array_get(lines, 0));
        b = json_integer_value(json_array_get(lines, 1));
        if (a < 1 || b < a || b > UINT32_MAX)
                return kiln_error_set(err, -EBADMSG,
                                      "error: \"source\": bad line range [%lld, %lld]",
                                      (long long) a, (long long) b);
        ev->source_start = (unsigned) a;
        ev->source_end = (unsigned) b;
        return 0;
}

int kiln_api_build_event_from_json(const json_t *j, struct kiln_api_build_event *ret,
                                   struct kiln_error **err)
{
        _cleanup_(kiln_api_build_event_release) struct kiln_api_build_event ev = { 0 };
        _cleanup_free_ char *type = NULL;
        int64_t v = 0;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG, "build event: expected an object");
        r = kiln_api_json_get_str(j, "build event", "type", true, 0, &type, err);
        if (r < 0)
                return -EBADMSG;
        ev.type = kiln_api_build_event_type_from_string(type);
        if ((int) ev.type < 0)
                return kiln_error_set(err, -EBADMSG, "build event: unknown type '%s'", type);
        r = kiln_api_json_get_str(j, type, "time", false, 0, &ev.time, err);
        switch (ev.type) {
        case KILN_API_BUILD_EVENT_BUILD:
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "id", true, 0, &ev.id, err);
                break;
        case KILN_API_BUILD_EVENT_VERTEX:
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "digest", true, 0, &ev.digest, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "name", false, 0, &ev.name, err);
                if (r >= 0)
                        r = get_strv(j, type, "inputs", 0, 0, false, &ev.inputs, &ev.n_inputs, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "started", false, 0, &ev.started, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "completed", false, 0, &ev.completed,
                                                  err);
                if (r >= 0)
                        r = get_bool(j, type, "cached", &ev.cached, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "error", false, 0, &ev.error, err);
                break;
        case KILN_API_BUILD_EVENT_STATUS:
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "vertex", false, 0, &ev.vertex, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "id", true, 0, &ev.id, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "name", false, 0, &ev.name, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(j, type, "current", false, INT64_MIN, INT64_MAX,
                                                  &ev.current, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(j, type, "total", false, INT64_MIN, INT64_MAX,
                                                  &ev.total, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "started", false, 0, &ev.started, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "completed", false, 0, &ev.completed,
                                                  err);
                break;
        case KILN_API_BUILD_EVENT_LOG: {
                _cleanup_free_ char *data = NULL;

                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "vertex", false, 0, &ev.vertex, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(j, type, "stream", false, 0, 2, &v, err);
                ev.stream = (int) v;
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "data", false, 0, &data, err);
                if (r >= 0 && data &&
                    kiln_api_base64_decode(data, strlen(data), &ev.data, &ev.len) < 0)
                        r = kiln_error_set(err, -EBADMSG, "log: \"data\" is not base64");
                break;
        }
        case KILN_API_BUILD_EVENT_WARNING:
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "rule", false, 0, &ev.rule, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "message", false, 0, &ev.message, err);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "url", false, 0, &ev.url, err);
                if (r >= 0)
                        r = kiln_api_json_get_int(j, type, "line", false, 0, UINT32_MAX, &v, err);
                ev.line = (unsigned) v;
                break;
        case KILN_API_BUILD_EVENT_CONTEXT_REQUEST:
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "name", true, 0, &ev.name, err);
                if (r >= 0)
                        r = get_strv(j, type, "followPaths", 0, 0, false, &ev.follow_paths,
                                     &ev.n_follow_paths, err);
                if (r >= 0)
                        r = get_strv(j, type, "includePatterns", 0, 0, false, &ev.include_patterns,
                                     &ev.n_include_patterns, err);
                if (r >= 0)
                        r = get_strv(j, type, "excludePatterns", 0, 0, false, &ev.exclude_patterns,
                                     &ev.n_exclude_patterns, err);
                break;
        case KILN_API_BUILD_EVENT_RESULT: {
                const json_t *c = json_object_get(j, "config");

                if (r >= 0 && c && !json_is_object(c))
                        r = kiln_error_set(err, -EBADMSG, "result: \"config\" must be an object");
                if (r >= 0 && c)
                        ev.config = json_incref((json_t *) c);
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "snapshot", false, 0, &ev.snapshot, err);
                c = json_object_get(j, "exporterResponse");
                if (r >= 0 && c && !json_is_null(c) && !json_is_object(c))
                        r = kiln_error_set(err, -EBADMSG,
                                           "result: \"exporterResponse\" must be an object");
                if (r >= 0 && json_is_object(c))
                        ev.exporter_response = json_incref((json_t *) c);
                break;
        }
        case KILN_API_BUILD_EVENT_EXPORT:
                if (r >= 0)
                        r = kiln_api_json_get_int(j, type, "index", true, 0,
                                                  KILN_API_LIMIT_BUILD_OUTPUTS - 1, &v, err);
                ev.index = (unsigned) v;
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "exporter", true, 0, &ev.exporter, err);
                break;
        case KILN_API_BUILD_EVENT_ERROR:
                if (r >= 0)
                        r = kiln_api_json_get_str(j, type, "error", true, 0, &ev.error, err);
                if (r >= 0)
                        r = get_source(j, &ev, err);
                break;
        case _KILN_API_BUILD_EVENT_TYPE_MAX:
        case _KILN_API_BUILD_EVENT_TYPE_INVALID:
                break;
        }
        if (r < 0)
                return -EBADMSG;
        *ret = ev;
        ev = (struct kiln_api_build_event){ 0 };
        return 0;
}
