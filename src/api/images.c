/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image endpoints' wire types (api.h, "Images"): requests, progress
 * events and results, with encoders for the daemon and decoders for the
 * client. Request decoders are strict (the daemon refuses what it does not
 * understand); event and result decoders ignore unknown keys, so that a
 * later daemon may add some.
 */
#include <inttypes.h>

#include "api-internal.h"
#include "base/clock.h"

static const char *const event_types[_KILN_API_EVENT_TYPE_MAX] = {
        [KILN_API_EVENT_RESOLVING] = "resolving",
        [KILN_API_EVENT_RESOLVED] = "resolved",
        [KILN_API_EVENT_BLOB_STARTED] = "blob-started",
        [KILN_API_EVENT_BLOB_PROGRESS] = "blob-progress",
        [KILN_API_EVENT_BLOB_DONE] = "blob-done",
        [KILN_API_EVENT_BLOB_CACHED] = "blob-cached",
        [KILN_API_EVENT_BLOB_EXISTS] = "blob-exists",
        [KILN_API_EVENT_BLOB_MOUNTED] = "blob-mounted",
        [KILN_API_EVENT_RETRY] = "retry",
        [KILN_API_EVENT_BLOB_ERROR] = "blob-error",
        [KILN_API_EVENT_RESULT] = "result",
        [KILN_API_EVENT_ERROR] = "error",
};

const char *kiln_api_event_type_to_string(enum kiln_api_event_type t)
{
        return kiln_api_name_to_string(event_types, ELEMENTSOF(event_types), (int) t);
}

enum kiln_api_event_type kiln_api_event_type_from_string(const char *s)
{
        return (enum kiln_api_event_type) kiln_api_name_from_string(event_types,
                                                                    ELEMENTSOF(event_types), s);
}

void kiln_api_time_now(char out[static KILN_API_TIME_SIZE])
{
        kiln_api_time_format(kiln_realtime_ns(), out);
}

/* ---- encoding ---- */

static json_t *descriptor_to_json(const struct kiln_api_descriptor *d)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return NULL;
        r |= kiln_api_json_set_str(o, "mediaType", d->media_type);
        r |= kiln_api_json_set_str(o, "digest", d->digest);
        r |= kiln_api_json_set(o, "size", json_integer(d->size));
        if (r < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int kiln_api_event_to_json(const struct kiln_api_event *ev, json_t **ret)
{
        const char *type = kiln_api_event_type_to_string(ev->type);
        json_t *o;
        int r = 0;

        if (!type || ev->type == KILN_API_EVENT_RESULT)
                return -EINVAL;
        o = json_object();
        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "type", type);
        r |= kiln_api_json_set_str(o, "time", ev->time);
        if (ev->type == KILN_API_EVENT_ERROR) {
                r |= kiln_api_json_set_str(o, "error", ev->error ? ev->error : "unknown error");
                return kiln_api_json_finish(o, r, ret);
        }
        r |= kiln_api_json_set_str(o, "ref", ev->ref);
        r |= kiln_api_json_set_str(o, "digest", ev->digest);
        r |= kiln_api_json_set_str(o, "mediaType", ev->media_type);
        if (ev->size >= 0)
                r |= kiln_api_json_set(o, "size", json_integer(ev->size));
        if (ev->type == KILN_API_EVENT_BLOB_PROGRESS)
                r |= kiln_api_json_set_uint(o, "current", ev->current);
        r |= kiln_api_json_set_str(o, "message", ev->message);
        return kiln_api_json_finish(o, r, ret);
}

static json_t *result_object(const char *time)
{
        json_t *o = json_object();

        if (!o)
                return NULL;
        if (kiln_api_json_set_str(o, "type", "result") < 0 ||
            kiln_api_json_set_str(o, "time", time) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int kiln_api_pull_result_to_json(const struct kiln_api_pull_result *res, const char *time,
                                 json_t **ret)
{
        json_t *o = result_object(time), *layers;
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "ref", res->ref);
        r |= kiln_api_json_set_str(o, "digest", res->root.digest);
        r |= kiln_api_json_set_str(o, "mediaType", res->root.media_type);
        r |= kiln_api_json_set(o, "size", json_integer(res->root.size));
        r |= kiln_api_json_set_str(o, "platform", res->platform);
        r |= kiln_api_json_set(o, "manifest", descriptor_to_json(&res->manifest));
        r |= kiln_api_json_set(o, "config", descriptor_to_json(&res->config));
        layers = json_array();
        for (size_t i = 0; layers && i < res->n_layers; i++)
                if (json_array_append_new(layers, descriptor_to_json(&res->layers[i])) < 0)
                        r = -ENOMEM;
        r |= kiln_api_json_set(o, "layers", layers);
        r |= kiln_api_json_set_uint(o, "bytesDownloaded", res->bytes_downloaded);
        r |= kiln_api_json_set_uint(o, "blobsDownloaded", res->blobs_downloaded);
        r |= kiln_api_json_set_uint(o, "blobsCached", res->blobs_cached);
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_imagetools_create_result_to_json(const struct kiln_api_imagetools_create_result *res,
                                              const char *time, json_t **ret)
{
        json_t *o = result_object(time), *tags;
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "digest", res->digest);
        r |= kiln_api_json_set_str(o, "mediaType", res->media_type);
        tags = json_array();
        for (size_t i = 0; tags && i < res->n_tags; i++) {
                json_t *t = json_object();

                if (!t || kiln_api_json_set_str(t, "ref", res->tags[i].ref) < 0 ||
                    kiln_api_json_set_str(t, "digest", res->tags[i].digest) < 0 ||
                    json_array_append_new(tags, t) < 0)
                        r = -ENOMEM;
        }
        r |= kiln_api_json_set(o, "tags", tags);
        r |= kiln_api_json_set_uint(o, "blobsUploaded", res->blobs_uploaded);
        r |= kiln_api_json_set_uint(o, "blobsExisting", res->blobs_existing);
        r |= kiln_api_json_set_uint(o, "blobsMounted", res->blobs_mounted);
        r |= kiln_api_json_set_uint(o, "bytesUploaded", res->bytes_uploaded);
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_pull_request_to_json(const struct kiln_api_pull_request *req, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "ref", req->ref);
        r |= kiln_api_json_set_str(o, "platform", req->platform);
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_imagetools_create_request_to_json(const struct kiln_api_imagetools_create_request *req,
                                               json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set(
                o, "sources",
                kiln_api_json_strv((const char *const *) req->sources, req->n_sources));
        r |= kiln_api_json_set(o, "tags",
                               kiln_api_json_strv((const char *const *) req->tags, req->n_tags));
        return kiln_api_json_finish(o, r, ret);
}

int kiln_api_inspect_to_json(const struct kiln_api_inspect *in, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set_str(o, "name", in->name);
        r |= kiln_api_json_set_str(o, "mediaType", in->media_type);
        r |= kiln_api_json_set_str(o, "digest", in->digest);
        r |= kiln_api_json_set(o, "size", json_integer(in->size));
        r |= kiln_api_json_set(o, "manifest",
                               in->manifest ? json_incref(in->manifest) : json_object());
        return kiln_api_json_finish(o, r, ret);
}

/* ---- decoding ---- */

/* The daemon's answers: a malformed member is -EBADMSG (api.h). */
static int get_str(const json_t *o, const char *what, const char *key, bool required, size_t max,
                   char **ret, struct kiln_error **err)
{
        return kiln_api_json_get_str(o, what, key, required, max, ret, err) < 0 ? -EBADMSG : 0;
}

static int get_int(const json_t *o, const char *what, const char *key, bool required, int64_t *ret,
                   struct kiln_error **err)
{
        return kiln_api_json_get_int(o, what, key, required, INT64_MIN, INT64_MAX, ret, err) < 0
                       ? -EBADMSG
                       : 0;
}

static int get_uint(const json_t *o, const char *what, const char *key, uint64_t *ret,
                    struct kiln_error **err)
{
        int64_t v = 0;
        int r;

        r = get_int(o, what, key, false, &v, err);
        if (r < 0)
                return r;
        if (v < 0)
                return kiln_error_set(err, -EBADMSG, "%s: \"%s\" must not be negative", what, key);
        *ret = (uint64_t) v;
        return 0;
}

static int get_unsigned(const json_t *o, const char *what, const char *key, unsigned *ret,
                        struct kiln_error **err)
{
        uint64_t v = 0;
        int r;

        r = get_uint(o, what, key, &v, err);
        if (r < 0)
                return r;
        *ret = v > UINT32_MAX ? UINT32_MAX : (unsigned) v;
        return 0;
}

static int descriptor_from_json(const json_t *o, const char *what, struct kiln_api_descriptor *ret,
                                struct kiln_error **err)
{
        int r;

        if (!json_is_object(o))
                return kiln_error_set(err, -EBADMSG, "%s: expected an object", what);
        r = get_str(o, what, "mediaType", false, 0, &ret->media_type, err);
        if (r >= 0)
                r = get_str(o, what, "digest", true, 0, &ret->digest, err);
        if (r >= 0)
                r = get_int(o, what, "size", true, &ret->size, err);
        return r;
}

void kiln_api_descriptor_release(struct kiln_api_descriptor *d)
{
        free(d->media_type);
        free(d->digest);
        *d = (struct kiln_api_descriptor){ 0 };
}

int kiln_api_event_from_json(const json_t *j, struct kiln_api_event *ret, struct kiln_error **err)
{
        _cleanup_free_ char *type = NULL, *time = NULL, *ref = NULL, *digest = NULL,
                            *media_type = NULL, *message = NULL, *error = NULL;
        enum kiln_api_event_type t;
        int64_t size = -1;
        uint64_t current = 0;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG, "event: expected an object");
        r = get_str(j, "event", "type", true, 0, &type, err);
        if (r < 0)
                return r;
        t = kiln_api_event_type_from_string(type);
        if (t < 0)
                return kiln_error_set(err, -EBADMSG, "event: unknown type '%s'", type);
        r = get_str(j, type, "time", false, 0, &time, err);
        if (r < 0)
                return r;
        switch (t) {
        case KILN_API_EVENT_RESULT:
                break;
        case KILN_API_EVENT_ERROR:
                r = get_str(j, type, "error", true, 0, &error, err);
                break;
        case KILN_API_EVENT_RESOLVING:
        case KILN_API_EVENT_RESOLVED:
        case KILN_API_EVENT_BLOB_STARTED:
        case KILN_API_EVENT_BLOB_PROGRESS:
        case KILN_API_EVENT_BLOB_DONE:
        case KILN_API_EVENT_BLOB_CACHED:
        case KILN_API_EVENT_BLOB_EXISTS:
        case KILN_API_EVENT_BLOB_MOUNTED:
        case KILN_API_EVENT_RETRY:
        case KILN_API_EVENT_BLOB_ERROR:
        case _KILN_API_EVENT_TYPE_MAX:
        case _KILN_API_EVENT_TYPE_INVALID:
                r = get_str(j, type, "ref", false, 0, &ref, err);
                if (r >= 0)
                        r = get_str(j, type, "digest", false, 0, &digest, err);
                if (r >= 0)
                        r = get_str(j, type, "mediaType", false, 0, &media_type, err);
                if (r >= 0)
                        r = get_int(j, type, "size", false, &size, err);
                if (r >= 0)
                        r = get_uint(j, type, "current", &current, err);
                if (r >= 0)
                        r = get_str(j, type, "message", false, 0, &message, err);
                break;
        }
        if (r < 0)
                return r;
        *ret = (struct kiln_api_event){
                .type = t,
                .time = TAKE_PTR(time),
                .ref = TAKE_PTR(ref),
                .digest = TAKE_PTR(digest),
                .media_type = TAKE_PTR(media_type),
                .size = size,
                .current = current,
                .message = TAKE_PTR(message),
                .error = TAKE_PTR(error),
        };
        return 0;
}

void kiln_api_event_release(struct kiln_api_event *ev)
{
        /* Decoded events own their strings (the fields are const for the
         * encoder's sake). */
        free((char *) ev->time);
        free((char *) ev->ref);
        free((char *) ev->digest);
        free((char *) ev->media_type);
        free((char *) ev->message);
        free((char *) ev->error);
        *ev = (struct kiln_api_event){ .size = -1 };
}

int kiln_api_pull_result_from_json(const json_t *j, struct kiln_api_pull_result *ret,
                                   struct kiln_error **err)
{
        _cleanup_(kiln_api_pull_result_release) struct kiln_api_pull_result res = { 0 };
        const char *what = "pull result";
        const json_t *layers;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG, "%s: expected an object", what);
        r = get_str(j, what, "ref", true, 0, &res.ref, err);
        if (r >= 0)
                r = get_str(j, what, "digest", true, 0, &res.root.digest, err);
        if (r >= 0)
                r = get_str(j, what, "mediaType", false, 0, &res.root.media_type, err);
        if (r >= 0)
                r = get_int(j, what, "size", true, &res.root.size, err);
        if (r >= 0)
                r = get_str(j, what, "platform", false, 0, &res.platform, err);
        if (r >= 0)
                r = descriptor_from_json(json_object_get(j, "manifest"), "pull result: manifest",
                                         &res.manifest, err);
        if (r >= 0)
                r = descriptor_from_json(json_object_get(j, "config"), "pull result: config",
                                         &res.config, err);
        if (r >= 0)
                r = get_uint(j, what, "bytesDownloaded", &res.bytes_downloaded, err);
        if (r >= 0)
                r = get_unsigned(j, what, "blobsDownloaded", &res.blobs_downloaded, err);
        if (r >= 0)
                r = get_unsigned(j, what, "blobsCached", &res.blobs_cached, err);
        if (r < 0)
                return r;

        layers = json_object_get(j, "layers");
        if (!json_is_array(layers))
                return kiln_error_set(err, -EBADMSG, "%s: \"layers\" must be an array", what);
        if (json_array_size(layers) > KILN_API_LIMIT_LAYERS)
                return kiln_error_set(err, -E2BIG, "%s: more than %u layers", what,
                                      KILN_API_LIMIT_LAYERS);
        res.layers = kiln_xcalloc(json_array_size(layers) + 1, sizeof(*res.layers));
        for (size_t i = 0; i < json_array_size(layers); i++) {
                _cleanup_free_ char *w = kiln_xasprintf("%s: layers[%zu]", what, i);

                res.n_layers++;
                r = descriptor_from_json(json_array_get(layers, i), w, &res.layers[i], err);
                if (r < 0)
                        return r;
        }
        *ret = res;
        res = (struct kiln_api_pull_result){ 0 };
        return 0;
}

void kiln_api_pull_result_release(struct kiln_api_pull_result *r)
{
        free(r->ref);
        kiln_api_descriptor_release(&r->root);
        free(r->platform);
        kiln_api_descriptor_release(&r->manifest);
        kiln_api_descriptor_release(&r->config);
        for (size_t i = 0; i < r->n_layers; i++)
                kiln_api_descriptor_release(&r->layers[i]);
        free(r->layers);
        *r = (struct kiln_api_pull_result){ 0 };
}

int kiln_api_imagetools_create_result_from_json(const json_t *j,
                                                struct kiln_api_imagetools_create_result *ret,
                                                struct kiln_error **err)
{
        _cleanup_(
                kiln_api_imagetools_create_result_release) struct kiln_api_imagetools_create_result
                res = { 0 };
        const char *what = "imagetools create result";
        const json_t *tags;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG, "%s: expected an object", what);
        r = get_str(j, what, "digest", true, 0, &res.digest, err);
        if (r >= 0)
                r = get_str(j, what, "mediaType", false, 0, &res.media_type, err);
        if (r >= 0)
                r = get_unsigned(j, what, "blobsUploaded", &res.blobs_uploaded, err);
        if (r >= 0)
                r = get_unsigned(j, what, "blobsExisting", &res.blobs_existing, err);
        if (r >= 0)
                r = get_unsigned(j, what, "blobsMounted", &res.blobs_mounted, err);
        if (r >= 0)
                r = get_uint(j, what, "bytesUploaded", &res.bytes_uploaded, err);
        if (r < 0)
                return r;

        tags = json_object_get(j, "tags");
        if (!json_is_array(tags))
                return kiln_error_set(err, -EBADMSG, "%s: \"tags\" must be an array", what);
        if (json_array_size(tags) > KILN_API_LIMIT_IMAGETOOLS_REFS)
                return kiln_error_set(err, -E2BIG, "%s: more than %u tags", what,
                                      KILN_API_LIMIT_IMAGETOOLS_REFS);
        res.tags = kiln_xcalloc(json_array_size(tags) + 1, sizeof(*res.tags));
        for (size_t i = 0; i < json_array_size(tags); i++) {
                const json_t *t = json_array_get(tags, i);
                _cleanup_free_ char *w = kiln_xasprintf("%s: tags[%zu]", what, i);

                res.n_tags++;
                if (!json_is_object(t))
                        return kiln_error_set(err, -EBADMSG, "%s: expected an object", w);
                r = get_str(t, w, "ref", true, 0, &res.tags[i].ref, err);
                if (r >= 0)
                        r = get_str(t, w, "digest", true, 0, &res.tags[i].digest, err);
                if (r < 0)
                        return r;
        }
        *ret = res;
        res = (struct kiln_api_imagetools_create_result){ 0 };
        return 0;
}

void kiln_api_imagetools_create_result_release(struct kiln_api_imagetools_create_result *r)
{
        free(r->digest);
        free(r->media_type);
        for (size_t i = 0; i < r->n_tags; i++) {
                free(r->tags[i].ref);
                free(r->tags[i].digest);
        }
        free(r->tags);
        *r = (struct kiln_api_imagetools_create_result){ 0 };
}

int kiln_api_inspect_from_json(const json_t *j, struct kiln_api_inspect *ret,
                               struct kiln_error **err)
{
        _cleanup_(kiln_api_inspect_release) struct kiln_api_inspect in = { 0 };
        const char *what = "inspect answer";
        json_t *manifest;
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EBADMSG, "%s: expected an object", what);
        r = get_str(j, what, "name", true, 0, &in.name, err);
        if (r >= 0)
                r = get_str(j, what, "mediaType", true, 0, &in.media_type, err);
        if (r >= 0)
                r = get_str(j, what, "digest", true, 0, &in.digest, err);
        if (r >= 0)
                r = get_int(j, what, "size", true, &in.size, err);
        if (r < 0)
                return r;
        manifest = json_object_get(j, "manifest");
        if (!json_is_object(manifest))
                return kiln_error_set(err, -EBADMSG, "%s: \"manifest\" must be an object", what);
        in.manifest = json_incref(manifest);
        *ret = in;
        in = (struct kiln_api_inspect){ 0 };
        return 0;
}

void kiln_api_inspect_release(struct kiln_api_inspect *in)
{
        free(in->name);
        free(in->media_type);
        free(in->digest);
        json_decref(in->manifest);
        *in = (struct kiln_api_inspect){ 0 };
}

/* ---- requests (strict) ---- */

/* A non-empty string of at most KILN_API_LIMIT_REF bytes without NUL;
 * name says where it was ("pull request: \"ref\""). */
static int request_str_value(const json_t *v, const char *name, char **ret, struct kiln_error **err)
{
        if (!json_is_string(v))
                return kiln_error_set(err, -EINVAL, "%s must be a string", name);
        if (json_string_length(v) == 0)
                return kiln_error_set(err, -EINVAL, "%s must not be empty", name);
        if (json_string_length(v) > KILN_API_LIMIT_REF)
                return kiln_error_set(err, -EINVAL, "%s is longer than %u bytes", name,
                                      KILN_API_LIMIT_REF);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return kiln_error_set(err, -EINVAL, "%s holds a NUL character", name);
        *ret = kiln_xstrdup(json_string_value(v));
        return 0;
}

static int request_str(const json_t *o, const char *what, const char *key, bool required,
                       char **ret, struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key);
        _cleanup_free_ char *name = NULL;

        if (!v) {
                if (required)
                        return kiln_error_set(err, -EINVAL, "%s: missing \"%s\"", what, key);
                return 0;
        }
        name = kiln_xasprintf("%s: \"%s\"", what, key);
        return request_str_value(v, name, ret, err);
}

static int request_strv(const json_t *o, const char *what, const char *key, char ***ret,
                        size_t *ret_n, struct kiln_error **err)
{
        const json_t *a = json_object_get(o, key);
        char **v;
        size_t n;

        if (!a)
                return kiln_error_set(err, -EINVAL, "%s: missing \"%s\"", what, key);
        if (!json_is_array(a))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be an array of strings", what,
                                      key);
        n = json_array_size(a);
        if (n == 0)
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must not be empty", what, key);
        if (n > KILN_API_LIMIT_IMAGETOOLS_REFS)
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" has more than %u entries", what,
                                      key, KILN_API_LIMIT_IMAGETOOLS_REFS);
        v = kiln_xcalloc(n + 1, sizeof(*v));
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *name = kiln_xasprintf("%s: \"%s\"[%zu]", what, key, i);
                int r;

                r = request_str_value(json_array_get(a, i), name, &v[i], err);
                if (r < 0) {
                        for (size_t k = 0; k < i; k++)
                                free(v[k]);
                        free(v);
                        return r;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int kiln_api_pull_request_from_json(const json_t *j, struct kiln_api_pull_request *ret,
                                    struct kiln_error **err)
{
        static const char *const keys[] = { "ref", "platform", NULL };
        _cleanup_(kiln_api_pull_request_release) struct kiln_api_pull_request req = { 0 };
        const char *what = "pull request";
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "%s: expected a JSON object", what);
        r = kiln_api_json_check_keys(j, what, keys, err);
        if (r >= 0)
                r = request_str(j, what, "ref", true, &req.ref, err);
        if (r >= 0)
                r = request_str(j, what, "platform", false, &req.platform, err);
        if (r < 0)
                return r;
        *ret = req;
        req = (struct kiln_api_pull_request){ 0 };
        return 0;
}

void kiln_api_pull_request_release(struct kiln_api_pull_request *r)
{
        free(r->ref);
        free(r->platform);
        *r = (struct kiln_api_pull_request){ 0 };
}

int kiln_api_imagetools_create_request_from_json(const json_t *j,
                                                 struct kiln_api_imagetools_create_request *ret,
                                                 struct kiln_error **err)
{
        static const char *const keys[] = { "sources", "tags", NULL };
        _cleanup_(kiln_api_imagetools_create_request_release) struct
                kiln_api_imagetools_create_request req = { 0 };
        const char *what = "imagetools create request";
        int r;

        if (!json_is_object(j))
                return kiln_error_set(err, -EINVAL, "%s: expected a JSON object", what);
        r = kiln_api_json_check_keys(j, what, keys, err);
        if (r >= 0)
                r = request_strv(j, what, "sources", &req.sources, &req.n_sources, err);
        if (r >= 0)
                r = request_strv(j, what, "tags", &req.tags, &req.n_tags, err);
        if (r < 0)
                return r;
        *ret = req;
        req = (struct kiln_api_imagetools_create_request){ 0 };
        return 0;
}

void kiln_api_imagetools_create_request_release(struct kiln_api_imagetools_create_request *r)
{
        for (size_t i = 0; i < r->n_sources; i++)
                free(r->sources[i]);
        free(r->sources);
        for (size_t i = 0; i < r->n_tags; i++)
                free(r->tags[i]);
        free(r->tags);
        *r = (struct kiln_api_imagetools_create_request){ 0 };
}
