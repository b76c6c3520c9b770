/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image endpoints (api.h, "Images"): POST /v1/pull, GET
 * /v1/imagetools/inspect and POST /v1/imagetools/create. The handlers
 * check the request on the loop thread (a bad one gets its 4xx before
 * anything starts); the work runs as an operation (ops.c) on a worker
 * thread, through the daemon's registry client and content store.
 */
#include <jansson.h>
#include <stdio.h>

#include "api/api.h"
#include "base/limits.h"
#include "base/log.h"
#include "content/content.h"
#include "daemon-internal.h"
#include "content/ref.h"
#include "registry/registry.h"

/* ---- request checks (loop thread) ---- */

/* The query parameters of a request, checked against the names a route
 * takes: an unknown or repeated parameter is refused. */
struct query {
        const char *const *names; /* NULL-terminated */
        const char *values[4];    /* by index in names; NULL when absent */
        bool present[4];
        char *error;
};

static enum MHD_Result query_each(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
        struct query *q = cls;

        for (size_t i = 0; q->names[i]; i++) {
                if (!streq(key, q->names[i]))
                        continue;
                if (q->present[i]) {
                        q->error = kiln_xasprintf("query parameter '%s' given more than once", key);
                        return MHD_NO;
                }
                q->present[i] = true;
                q->values[i] = value;
                return MHD_YES;
        }
        q->error = kiln_xasprintf("unknown query parameter '%s'", key);
        return MHD_NO;
}

/* Returns 0, or -EINVAL with q->error set. */
static int query_read(struct MHD_Connection *conn, struct query *q)
{
        (void) MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_each, q);
        return q->error ? -EINVAL : 0;
}

static enum MHD_Result bad_request(struct MHD_Connection *conn, const char *method, const char *url,
                                   const char *message)
{
        return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL, message);
}

/* Parses the request body as one JSON object (any JSON value, really: the
 * API decoders say what they expect). */
static int body_json(const struct kiln_daemon_request *req, json_t **ret, struct kiln_error **err)
{
        json_error_t jerr;
        json_t *j;

        if (req->body.len == 0)
                return kiln_error_set(err, -EINVAL,
                                      "the request has no body: a JSON object "
                                      "is expected");
        j = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
                return kiln_error_set(err, -EINVAL, "invalid JSON body: %d:%d: %s", jerr.line,
                                      jerr.column, jerr.text);
        *ret = j;
        return 0;
}

/* Checks a reference as the registry client will read it; returns its
 * canonical form in *ret. */
static int check_ref(const char *ref, char **ret, struct kiln_error **err)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *r = NULL;
        int rr;

        rr = kiln_content_ref_parse(ref, &r, err);
        if (rr < 0)
                return rr;
        if (ret)
                *ret = kiln_content_ref_canonical(r);
        return 0;
}

static int check_platform(const char *platform, struct kiln_error **err)
{
        struct kiln_content_platform p = { 0 };
        int r;

        r = kiln_content_platform_parse(platform, &p, err);
        if (r < 0)
                return r;
        kiln_content_platform_release(&p);
        return 0;
}

/* Refuses any query parameter: the POST endpoints take their input in the
 * body only. */
static int no_query(struct MHD_Connection *conn, char **ret_error)
{
        static const char *const none[] = { NULL };
        struct query q = { .names = none };

        if (query_read(conn, &q) < 0) {
                *ret_error = q.error;
                return -EINVAL;
        }
        return 0;
}

/* ---- workers ---- */

/* name@digest for the canonical ref: what later steps fetch, so that a tag
 * moving meanwhile cannot mix two images. */
static char *pin_ref(const char *canonical, const char *digest)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *r = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *name = NULL;

        if (kiln_content_ref_parse(canonical, &r, &e) < 0)
                return kiln_xstrdup(canonical);
        name = kiln_content_ref_name(r);
        return kiln_xasprintf("%s@%s", name, digest);
}

static int read_document(struct kiln_content_store *store, const char *digest, struct kiln_buf *out,
                         struct kiln_error **err)
{
        *out = KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        return kiln_content_store_read(store, digest, out, err);
}

static void descriptor_set(struct kiln_api_descriptor *d, const char *media_type,
                           const char *digest, int64_t size)
{
        d->media_type = media_type ? kiln_xstrdup(media_type) : NULL;
        d->digest = kiln_xstrdup(digest);
        d->size = size;
}

struct pull_args {
        char *ref;
        char *platform;
};

static void pull_args_free(void *p)
{
        struct pull_args *a = p;

        if (!a)
                return;
        free(a->ref);
        free(a->platform);
        free(a);
}

/* The result event of a pull: the pulled manifest, read back from the store
 * for its descriptors' sizes and media types. */
static int pull_result(struct kiln_daemon *d, const struct kiln_registry_pull_result *res,
                       struct kiln_api_pull_result *out, struct kiln_error **err)
{
        const struct kiln_registry_pull_image *im = &res->images[0];
        _cleanup_(kiln_buf_release) struct kiln_buf doc = { 0 };
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        int r;

        r = read_document(d->store, im->manifest_digest, &doc, err);
        if (r < 0)
                return kiln_error_wrap(err, "read manifest %s", im->manifest_digest);
        r = kiln_content_manifest_parse(doc.data, doc.len, im->manifest_media_type, &m, err);
        if (r < 0)
                return kiln_error_wrap(err, "manifest %s", im->manifest_digest);

        out->ref = kiln_xstrdup(res->root.ref);
        descriptor_set(&out->root, res->root.media_type, res->root.digest, res->root.size);
        out->platform = im->platform ? kiln_xstrdup(im->platform) : NULL;
        descriptor_set(&out->manifest, im->manifest_media_type, im->manifest_digest,
                       (int64_t) doc.len);
        descriptor_set(&out->config, m->config.media_type, m->config.digest, m->config.size);
        out->layers = kiln_xcalloc(m->n_layers + 1, sizeof(*out->layers));
        for (size_t i = 0; i < m->n_layers; i++, out->n_layers++)
                descriptor_set(&out->layers[i], m->layers[i].media_type, m->layers[i].digest,
                               m->layers[i].size);
        out->bytes_downloaded = res->bytes_downloaded;
        out->blobs_downloaded = res->blobs_downloaded;
        out->blobs_cached = res->blobs_cached;
        return 0;
}

static int pull_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct pull_args *a = args;
        struct kiln_daemon *d = kiln_daemon_op_daemon(op);
        struct kiln_registry_pull_options o = {
                .platform = a->platform,
                .cancel = kiln_daemon_op_cancel_flag(op),
                .on_event = kiln_daemon_op_registry_event,
                .userdata = op,
        };
        _cleanup_(kiln_registry_pull_result_release) struct kiln_registry_pull_result res = { 0 };
        _cleanup_(kiln_api_pull_result_release) struct kiln_api_pull_result out = { 0 };
        char now[KILN_API_TIME_SIZE];
        json_t *j = NULL;
        int r;

        r = kiln_registry_pull(d->client, d->store, a->ref, &o, &res, err);
        if (r < 0)
                return r;
        kiln_daemon_op_set_digest(op, res.root.digest);
        if (res.n_images != 1)
                return kiln_error_set(err, -EIO, "pull '%s': expected one image, got %zu",
                                      res.root.ref, res.n_images);
        r = pull_result(d, &res, &out, err);
        if (r < 0)
                return kiln_error_wrap(err, "pull '%s'", res.root.ref);
        kiln_api_time_now(now);
        if (kiln_api_pull_result_to_json(&out, now, &j) < 0)
                return kiln_error_set(err, -ENOMEM, "pull '%s': out of memory", res.root.ref);
        kiln_daemon_op_emit_json(op, j, false);
        json_decref(j);
        return 0;
}

/* A media type fit for a header: printable ASCII, no more than a
 * reference's length. */
static bool media_type_ok(const char *mt)
{
        size_t n = 0;

        if (!mt || !mt[0])
                return false;
        for (const char *p = mt; *p; p++, n++)
                if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
                        return false;
        return n <= KILN_API_LIMIT_REF;
}

struct inspect_args {
        char *ref;
        bool raw;
};

static void inspect_args_free(void *p)
{
        struct inspect_args *a = p;

        if (!a)
                return;
        free(a->ref);
        free(a);
}

static int inspect_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct inspect_args *a = args;
        struct kiln_daemon *d = kiln_daemon_op_daemon(op);
        _cleanup_(kiln_registry_manifest_release) struct kiln_registry_manifest mf = { 0 };
        _cleanup_(kiln_api_inspect_release) struct kiln_api_inspect in = { 0 };
        struct kiln_registry_fetch_options o = {
                .cancel = kiln_daemon_op_cancel_flag(op),
        };
        json_error_t jerr;
        json_t *j = NULL;
        char *body;
        size_t len = 0;
        int r;

        /* One HEAD and one GET: the document alone, not its children. */
        r = kiln_registry_fetch_manifest(d->client, a->ref, &o, &mf, err);
        if (r < 0)
                return kiln_error_wrap(err, "inspect '%s'", a->ref);
        kiln_daemon_op_set_digest(op, mf.digest);

        if (a->raw) {
                /* The registry's Content-Type goes back as ours: only if it
                 * is a plain token (MHD refuses control characters, and the
                 * connection would be dropped). */
                const char *mt =
                        media_type_ok(mf.media_type) ? mf.media_type : "application/octet-stream";

                len = mf.size;
                body = TAKE_PTR(mf.data);
                kiln_daemon_op_set_answer(op, MHD_HTTP_OK, mt, body, len,
                                          KILN_API_HEADER_DOCKER_DIGEST, mf.digest);
                return 0;
        }

        in.manifest = json_loadb(mf.data, mf.size, 0, &jerr);
        if (!json_is_object(in.manifest))
                return kiln_error_set(err, -EBADMSG, "inspect '%s': %s is not a JSON object%s%s",
                                      a->ref, mf.digest, in.manifest ? "" : ": ",
                                      in.manifest ? "" : jerr.text);
        in.name = kiln_xstrdup(mf.ref);
        in.media_type = kiln_xstrdup(mf.media_type);
        in.digest = kiln_xstrdup(mf.digest);
        in.size = (int64_t) mf.size;
        if (kiln_api_inspect_to_json(&in, &j) < 0)
                return kiln_error_set(err, -ENOMEM, "inspect '%s': out of memory", a->ref);
        body = kiln_api_json_dump(j, &len);
        json_decref(j);
        if (!body)
                return kiln_error_set(err, -ENOMEM, "inspect '%s': out of memory", a->ref);
        kiln_daemon_op_set_answer(op, MHD_HTTP_OK, KILN_API_CONTENT_TYPE_JSON, body, len, NULL,
                                  NULL);
        return 0;
}

struct create_args {
        char **sources;
        size_t n_sources;
        char **tags;
        size_t n_tags;
};

static void create_args_free(void *p)
{
        struct create_args *a = p;

        if (!a)
                return;
        for (size_t i = 0; i < a->n_sources; i++)
                free(a->sources[i]);
        free(a->sources);
        for (size_t i = 0; i < a->n_tags; i++)
                free(a->tags[i]);
        free(a->tags);
        free(a);
}

/* The descriptors a merged index lists, without duplicates (by digest). */
struct merge {
        struct kiln_content_descriptor *descs;
        size_t n;
};

static void merge_release(struct merge *m)
{
        for (size_t i = 0; i < m->n; i++)
                kiln_content_descriptor_release(&m->descs[i]);
        free(m->descs);
        *m = (struct merge){ 0 };
}

/* Takes *d (left zeroed). */
static int merge_add(struct merge *m, struct kiln_content_descriptor *d, struct kiln_error **err)
{
        for (size_t i = 0; i < m->n; i++)
                if (streq(m->descs[i].digest, d->digest)) {
                        kiln_content_descriptor_release(d);
                        return 0;
                }
        if (m->n >= KILN_CONTENT_LIMIT_INDEX_ENTRIES)
                return kiln_error_set(err, -E2BIG, "more than %d manifests",
                                      KILN_CONTENT_LIMIT_INDEX_ENTRIES);
        m->descs = kiln_xreallocarray(m->descs, m->n + 1, sizeof(*m->descs));
        m->descs[m->n++] = *d;
        *d = (struct kiln_content_descriptor){ 0 };
        return 0;
}

/* Adds what one pulled source contributes, as buildx's Combine: every entry
 * of an index, or a lone manifest with the platform of its config. */
static int merge_source(struct kiln_daemon *d, struct merge *m,
                        const struct kiln_registry_resolved *src, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf doc = { 0 };
        enum kiln_content_kind kind = kiln_content_media_type_kind(src->media_type);
        int r;

        r = read_document(d->store, src->digest, &doc, err);
        if (r < 0)
                return r;
        if (kind == KILN_CONTENT_KIND_INDEX) {
                _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;

                r = kiln_content_index_parse(doc.data, doc.len, src->media_type, &idx, err);
                for (size_t i = 0; r >= 0 && i < idx->n_manifests; i++)
                        r = merge_add(m, &idx->manifests[i], err);
                return r;
        }
        if (kind == KILN_CONTENT_KIND_MANIFEST) {
                _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *man = NULL;
                _cleanup_(kiln_content_config_freep) struct kiln_content_config *cfg = NULL;
                _cleanup_(kiln_buf_release) struct kiln_buf cdoc =
                        KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG);
                struct kiln_content_descriptor desc = { 0 };

                r = kiln_content_manifest_parse(doc.data, doc.len, src->media_type, &man, err);
                if (r >= 0)
                        r = kiln_content_store_read(d->store, man->config.digest, &cdoc, err);
                if (r >= 0)
                        r = kiln_content_config_parse(cdoc.data, cdoc.len, man->config.media_type,
                                                      &cfg, err);
                if (r < 0)
                        return r;
                desc.media_type = kiln_xstrdup(src->media_type);
                desc.digest = kiln_xstrdup(src->digest);
                desc.size = src->size >= 0 ? src->size : (int64_t) doc.len;
                desc.platform = kiln_xcalloc(1, sizeof(*desc.platform));
                kiln_content_platform_copy(desc.platform, &cfg->platform);
                return merge_add(m, &desc, err);
        }
        return kiln_error_set(err, -EOPNOTSUPP, "'%s' is a %s, not an image manifest or index",
                              src->ref, src->media_type);
}

/* Serialises the merged index into the store: a Docker manifest list when
 * every entry is a Docker type, else an OCI index (buildx's rule). */
static int merge_store(struct kiln_daemon *d, struct merge *m, char *ret_digest,
                       const char **ret_media_type, uint64_t *ret_size, struct kiln_error **err)
{
        struct kiln_content_index idx = { .media_type_set = true };
        _cleanup_(kiln_buf_release) struct kiln_buf out =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        size_t docker = 0;
        int r;

        for (size_t i = 0; i < m->n; i++)
                docker += startswith(m->descs[i].media_type, "application/vnd.docker.");
        idx.media_type = docker == m->n ? KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST
                                        : KILN_CONTENT_MEDIA_OCI_INDEX;
        idx.manifests = m->descs;
        idx.n_manifests = m->n;
        r = kiln_content_index_serialize(&idx, &out);
        if (r < 0)
                return kiln_error_set(err, r, "the merged index is larger than %u bytes",
                                      KILN_CONTENT_LIMIT_MANIFEST);
        r = kiln_content_store_put(d->store, NULL, out.data, out.len, ret_digest, err);
        if (r < 0)
                return r;
        *ret_media_type = kiln_content_media_type_to_string(idx.media_type);
        *ret_size = out.len;
        return 0;
}

static int create_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct create_args *a = args;
        struct kiln_daemon *d = kiln_daemon_op_daemon(op);
        _cleanup_(
                kiln_api_imagetools_create_result_release) struct kiln_api_imagetools_create_result
                out = { 0 };
        _cleanup_(merge_release) struct merge merged = { 0 };
        _cleanup_free_ char *pinned = NULL;
        char digest[KILN_CONTENT_DIGEST_SIZE];
        const char *media_type = NULL;
        char now[KILN_API_TIME_SIZE];
        json_t *j = NULL;
        int r;

        /* Every source is resolved once and used by digest from then on, so
         * that tags moving meanwhile cannot mix images. One source is copied
         * as it is (all platforms of an index, the same digest at every tag);
         * several are pulled whole and merged into a new index, pushed from
         * the store. */
        for (size_t i = 0; i < a->n_sources; i++) {
                _cleanup_(kiln_registry_resolved_release) struct kiln_registry_resolved src = { 0 };
                _cleanup_(kiln_registry_pull_result_release) struct kiln_registry_pull_result pr = {
                        0
                };
                struct kiln_registry_pull_options po = {
                        .all_platforms = true,
                        .cancel = kiln_daemon_op_cancel_flag(op),
                        .on_event = kiln_daemon_op_registry_event,
                        .userdata = op,
                };

                r = kiln_registry_resolve(d->client, a->sources[i], kiln_daemon_op_registry_event,
                                          op, &src, err);
                if (r < 0)
                        return kiln_error_wrap(err, "imagetools create");
                free(pinned);
                pinned = pin_ref(src.ref, src.digest);
                if (a->n_sources == 1) {
                        out.digest = kiln_xstrdup(src.digest);
                        out.media_type = kiln_xstrdup(src.media_type);
                        break;
                }
                if (kiln_daemon_op_cancelled(op))
                        return kiln_error_set(err, -ECANCELED, "imagetools create: cancelled");
                r = kiln_registry_pull(d->client, d->store, pinned, &po, &pr, err);
                if (r >= 0)
                        r = merge_source(d, &merged, &src, err);
                if (r < 0)
                        return kiln_error_wrap(err, "imagetools create: source '%s'",
                                               a->sources[i]);
        }
        if (a->n_sources > 1) {
                uint64_t size = 0;

                r = merge_store(d, &merged, digest, &media_type, &size, err);
                if (r < 0)
                        return kiln_error_wrap(err, "imagetools create: merge %zu sources",
                                               a->n_sources);
                out.digest = kiln_xstrdup(digest);
                out.media_type = kiln_xstrdup(media_type);
        }
        kiln_daemon_op_set_digest(op, out.digest);

        out.tags = kiln_xcalloc(a->n_tags + 1, sizeof(*out.tags));
        for (size_t i = 0; i < a->n_tags; i++) {
                _cleanup_(kiln_registry_push_result_release) struct kiln_registry_push_result pr = {
                        0
                };
                struct kiln_registry_push_options po = {
                        .cancel = kiln_daemon_op_cancel_flag(op),
                        .on_event = kiln_daemon_op_registry_event,
                        .userdata = op,
                };

                if (kiln_daemon_op_cancelled(op))
                        return kiln_error_set(err, -ECANCELED,
                                              "imagetools create: cancelled before '%s'",
                                              a->tags[i]);
                if (a->n_sources == 1)
                        r = kiln_registry_copy(d->client, d->store, pinned, a->tags[i], &po, &pr,
                                               err);
                else
                        r = kiln_registry_push(d->client, d->store, a->tags[i], out.digest,
                                               out.media_type, &po, &pr, err);
                if (r < 0)
                        return kiln_error_wrap(err, "imagetools create: push '%s'", a->tags[i]);
                out.tags[i].ref = kiln_xstrdup(pr.ref ? pr.ref : a->tags[i]);
                out.tags[i].digest = kiln_xstrdup(pr.digest ? pr.digest : out.digest);
                out.n_tags++;
                out.blobs_uploaded += pr.blobs_uploaded;
                out.blobs_existing += pr.blobs_existing;
                out.blobs_mounted += pr.blobs_mounted;
                out.bytes_uploaded += pr.bytes_uploaded;
        }
        kiln_api_time_now(now);
        if (kiln_api_imagetools_create_result_to_json(&out, now, &j) < 0)
                return kiln_error_set(err, -ENOMEM, "imagetools create: out of memory");
        kiln_daemon_op_emit_json(op, j, false);
        json_decref(j);
        return 0;
}

/* ---- handlers (loop thread) ---- */

enum MHD_Result kiln_daemon_handle_pull(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                        struct MHD_Connection *conn, const char *method,
                                        const char *url)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_api_pull_request_release) struct kiln_api_pull_request pr = { 0 };
        _cleanup_free_ char *canonical = NULL, *qerr = NULL;
        struct kiln_daemon_op_spec spec;
        struct pull_args *a;
        json_t *j = NULL;
        int r;

        if (no_query(conn, &qerr) < 0)
                return bad_request(conn, method, url, qerr);
        r = body_json(req, &j, &err);
        if (r >= 0) {
                r = kiln_api_pull_request_from_json(j, &pr, &err);
                json_decref(j);
        }
        if (r >= 0)
                r = check_ref(pr.ref, &canonical, &err);
        if (r >= 0 && pr.platform)
                r = check_platform(pr.platform, &err);
        if (r < 0)
                return bad_request(conn, method, url, kiln_error_message(err));

        a = kiln_xcalloc(1, sizeof(*a));
        a->ref = TAKE_PTR(pr.ref);
        a->platform = TAKE_PTR(pr.platform);
        spec = (struct kiln_daemon_op_spec){
                .what = "pull",
                .ref = canonical,
                .stream = true,
                .fn = pull_run,
                .args = a,
                .args_free = pull_args_free,
        };
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}

/* raw's values, as Go's strconv.ParseBool would read the common ones. */
static int parse_bool(const char *s, bool *ret)
{
        if (!s || streq(s, "1") || streq(s, "true")) {
                *ret = true;
                return 0;
        }
        if (streq(s, "0") || streq(s, "false")) {
                *ret = false;
                return 0;
        }
        return -EINVAL;
}

enum MHD_Result kiln_daemon_handle_imagetools_inspect(struct kiln_daemon *d,
                                                      struct kiln_daemon_request *req,
                                                      struct MHD_Connection *conn,
                                                      const char *method, const char *url)
{
        static const char *const names[] = { "ref", "raw", NULL };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *canonical = NULL;
        struct query q = { .names = names };
        struct kiln_daemon_op_spec spec;
        struct inspect_args *a;
        const char *ref;
        bool raw = false;

        if (query_read(conn, &q) < 0) {
                _cleanup_free_ char *msg = TAKE_PTR(q.error);

                return bad_request(conn, method, url, msg);
        }
        ref = q.values[0];
        if (!ref || !ref[0])
                return bad_request(conn, method, url, "query parameter 'ref' is required");
        if (strlen(ref) > KILN_API_LIMIT_REF) {
                _cleanup_free_ char *msg = kiln_xasprintf(
                        "query parameter 'ref' is longer than %u bytes", KILN_API_LIMIT_REF);

                return bad_request(conn, method, url, msg);
        }
        if (q.present[1] && parse_bool(q.values[1], &raw) < 0) {
                _cleanup_free_ char *msg = kiln_xasprintf(
                        "query parameter 'raw': expected 1, true, 0 or false, got '%s'",
                        q.values[1]);

                return bad_request(conn, method, url, msg);
        }
        if (check_ref(ref, &canonical, &err) < 0)
                return bad_request(conn, method, url, kiln_error_message(err));

        a = kiln_xcalloc(1, sizeof(*a));
        a->ref = kiln_xstrdup(ref);
        a->raw = raw;
        spec = (struct kiln_daemon_op_spec){
                .what = "imagetools inspect",
                .ref = canonical,
                .stream = false,
                .fn = inspect_run,
                .args = a,
                .args_free = inspect_args_free,
        };
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}

enum MHD_Result kiln_daemon_handle_imagetools_create(struct kiln_daemon *d,
                                                     struct kiln_daemon_request *req,
                                                     struct MHD_Connection *conn,
                                                     const char *method, const char *url)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_api_imagetools_create_request_release) struct
                kiln_api_imagetools_create_request cr = { 0 };
        _cleanup_free_ char *canonical = NULL, *qerr = NULL;
        struct kiln_daemon_op_spec spec;
        struct create_args *a;
        json_t *j = NULL;
        int r;

        if (no_query(conn, &qerr) < 0)
                return bad_request(conn, method, url, qerr);
        r = body_json(req, &j, &err);
        if (r >= 0) {
                r = kiln_api_imagetools_create_request_from_json(j, &cr, &err);
                json_decref(j);
        }
        for (size_t i = 0; r >= 0 && i < cr.n_sources; i++)
                r = check_ref(cr.sources[i], i == 0 ? &canonical : NULL, &err);
        for (size_t i = 0; r >= 0 && i < cr.n_tags; i++)
                r = check_ref(cr.tags[i], NULL, &err);
        if (r < 0)
                return bad_request(conn, method, url, kiln_error_message(err));

        a = kiln_xcalloc(1, sizeof(*a));
        a->sources = TAKE_PTR(cr.sources);
        a->n_sources = cr.n_sources;
        cr.n_sources = 0;
        a->tags = TAKE_PTR(cr.tags);
        a->n_tags = cr.n_tags;
        cr.n_tags = 0;
        spec = (struct kiln_daemon_op_spec){
                .what = "imagetools create",
                .ref = canonical,
                .stream = true,
                .fn = create_run,
                .args = a,
                .args_free = create_args_free,
        };
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}
