/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Push and copy: containerd's dockerPusher (existence check, cross-repository
 * mount, POST then PUT ?digest=) plus chunked PATCH uploads for large blobs,
 * manifests last; buildkit's push handler order (children before parents).
 */
#include <inttypes.h>
#include <pthread.h>

#include "client.h"
#include "redact.h"
#include "registry-internal.h"
#include "transfer-internal.h"

struct push_ctx {
        struct session *s;
        const struct kiln_registry_host *host;
        struct kiln_content_store *store;
        const char *mount_from; /* NULL: none */
        /* Where blobs missing from the store come from (a copy's source
         * session), fetched only when the destination lacks them. */
        struct session *source;
        uint64_t chunk_size;
        pthread_mutex_t lock; /* guards res's counters */
        struct kiln_registry_push_result *res;

        /* The tree: blobs (configs, layers) and manifests (children before
         * parents), borrowed from the parsed documents. */
        const struct kiln_content_descriptor **blobs;
        size_t n_blobs;
        struct kiln_content_descriptor *manifests; /* shallow copies */
        size_t n_manifests;
        struct kiln_content_manifest **docs_m;
        size_t n_docs_m;
        struct kiln_content_index **docs_i;
        size_t n_docs_i;
};

static void event(struct session *s, enum kiln_registry_event_kind k, const char *digest,
                  const char *media_type, int64_t size, uint64_t current, const char *message)
{
        struct kiln_registry_event ev = {
                .kind = k,
                .ref = s->ref_string,
                .digest = digest,
                .media_type = media_type,
                .size = size,
                .current = current,
                .message = message,
        };
        session_event(s, &ev);
}

void kiln_registry_push_result_release(struct kiln_registry_push_result *r)
{
        free(r->ref);
        free(r->digest);
        *r = (struct kiln_registry_push_result){ 0 };
}

static void count(struct push_ctx *p, unsigned *field, uint64_t bytes)
{
        pthread_mutex_lock(&p->lock);
        (*field)++;
        p->res->bytes_uploaded += bytes;
        pthread_mutex_unlock(&p->lock);
}

/* ---- the tree ---- */

static void tree_add_manifest(struct push_ctx *p, const char *digest, const char *media_type,
                              int64_t size)
{
        for (size_t i = 0; i < p->n_manifests; i++)
                if (streq(p->manifests[i].digest, digest))
                        return;
        p->manifests = kiln_xreallocarray(p->manifests, p->n_manifests + 1, sizeof(*p->manifests));
        p->manifests[p->n_manifests++] = (struct kiln_content_descriptor){
                .digest = (char *) digest,
                .media_type = (char *) media_type,
                .size = size,
        };
}

static int tree_walk(struct push_ctx *p, const char *digest, const char *media_type, unsigned depth,
                     struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        enum kiln_content_kind kind = kiln_content_media_type_kind(media_type);
        int r;

        if (depth > 4)
                return kiln_error_set(err, -ELOOP, "%s: indexes nested too deep", digest);
        r = kiln_content_store_read(p->store, digest, &b, err);
        if (r < 0)
                return r;
        if (kind == KILN_CONTENT_KIND_INDEX) {
                struct kiln_content_index *idx = NULL;

                r = kiln_content_index_parse(b.data, b.len, media_type, &idx, err);
                if (r < 0)
                        return kiln_error_wrap(err, "index %s", digest);
                p->docs_i = kiln_xreallocarray(p->docs_i, p->n_docs_i + 1, sizeof(*p->docs_i));
                p->docs_i[p->n_docs_i++] = idx;
                for (size_t i = 0; i < idx->n_manifests; i++) {
                        const struct kiln_content_descriptor *d = &idx->manifests[i];
                        enum kiln_content_kind k = kiln_content_media_type_kind(d->media_type);

                        if (k == KILN_CONTENT_KIND_MANIFEST || k == KILN_CONTENT_KIND_INDEX)
                                r = tree_walk(p, d->digest, d->media_type, depth + 1, err);
                        else
                                r = blob_set_add(&p->blobs, &p->n_blobs, d, err);
                        if (r < 0)
                                return r;
                }
        } else if (kind == KILN_CONTENT_KIND_MANIFEST) {
                struct kiln_content_manifest *m = NULL;

                r = kiln_content_manifest_parse(b.data, b.len, media_type, &m, err);
                if (r < 0)
                        return kiln_error_wrap(err, "manifest %s", digest);
                p->docs_m = kiln_xreallocarray(p->docs_m, p->n_docs_m + 1, sizeof(*p->docs_m));
                p->docs_m[p->n_docs_m++] = m;
                r = blob_set_add(&p->blobs, &p->n_blobs, &m->config, err);
                for (size_t i = 0; r >= 0 && i < m->n_layers; i++)
                        r = blob_set_add(&p->blobs, &p->n_blobs, &m->layers[i], err);
                if (r < 0)
                        return r;
        } else {
                _cleanup_free_ char *q = kiln_quote_untrusted(media_type, strlen(media_type), 120);
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "%s: media type '%s' is not a manifest or an index", digest,
                                      q);
        }
        tree_add_manifest(p, digest, media_type, (int64_t) b.len);
        return 0;
}

/* ---- blobs ---- */

static int status_error(struct request *rq, const struct kiln_registry_transfer_response *resp,
                        struct kiln_error **err)
{
        return response_status_error(rq->method, rq->url, resp, err);
}

/* The upload URL from a Location header, relative to the push host. A
 * location on another host or scheme gets no Authorization (containerd
 * strips the authorizer). */
static char *upload_location(struct push_ctx *p, const char *location, bool *ret_other_host)
{
        const struct kiln_registry_host *h = p->host;
        _cleanup_free_ char *ours = NULL, *theirs = NULL;
        char *url;

        *ret_other_host = false;
        if (location[0] == '/')
                return kiln_xasprintf("%s://%s%s", h->scheme, h->host, location);
        url = strstr(location, "://") ? kiln_xstrdup(location)
                                      : kiln_xasprintf("%s://%s", h->scheme, location);
        {
                _cleanup_free_ char *base = kiln_xasprintf("%s://%s/", h->scheme, h->host);
                ours = transfer_url_host_port(base);
        }
        theirs = transfer_url_host_port(url);
        if (!ours || !theirs || !streq(ours, theirs) ||
            strncmp(url, h->scheme, strlen(h->scheme)) != 0)
                *ret_other_host = true;
        return url;
}

static char *url_with_digest(const char *url, const char *digest)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_REGISTRY_URL);

        if (kiln_buf_puts(&b, url) < 0 || kiln_buf_puts(&b, strchr(url, '?') ? "&" : "?") < 0 ||
            kiln_buf_puts(&b, "digest=") < 0 || url_query_escape(&b, digest) < 0)
                return NULL;
        return kiln_buf_steal(&b);
}

/* One request of an upload; *ret_t holds the answer. */
static int upload_request(struct push_ctx *p, struct request *rq,
                          struct kiln_registry_transfer **ret_t,
                          const struct kiln_registry_transfer_response **ret_resp,
                          struct kiln_error **err)
{
        int r = session_do(p->s, rq, ret_t, err);

        if (r < 0)
                return r;
        kiln_registry_transfer_wait(*ret_t, ret_resp);
        return 0;
}

/* Sends the blob's bytes to an upload session at location. */
static int upload_blob_data(struct push_ctx *p, const struct kiln_content_descriptor *d,
                            const char *location, bool *retryable, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *loc = NULL;
        bool other_host = false;
        uint64_t size = (uint64_t) d->size, offset = 0;
        int r;

        r = kiln_content_store_open_blob(p->store, d->digest, &fd, err);
        if (r < 0)
                return r;
        loc = upload_location(p, location, &other_host);

        /* A blob larger than a chunk goes in PATCH chunks, then a closing
         * PUT without a body (as docker pushes); a smaller one in the PUT. */
        while (size > p->chunk_size && offset < size) {
                _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
                const struct kiln_registry_transfer_response *resp;
                uint64_t len = size - offset < p->chunk_size ? size - offset : p->chunk_size;
                _cleanup_free_ char *range =
                        kiln_xasprintf("%" PRIu64 "-%" PRIu64, offset, offset + len - 1);
                const char *next;
                struct request rq;

                request_init(&rq, p->host, "PATCH", loc);
                rq.no_auth = other_host;
                rq.klass = kiln_registry_transfer_class_of(d->media_type);
                rq.last_host = true;
                request_add_header(&rq, "Content-Type", "application/octet-stream");
                request_add_header(&rq, "Content-Range", range);
                rq.has_body = true;
                rq.body_fd = fd;
                rq.body_offset = offset;
                rq.body_len = len;
                r = upload_request(p, &rq, &t, &resp, err);
                loc = rq.url;
                if (r < 0) {
                        *retryable = rq.transient;
                        return r;
                }
                if (resp->status != 202 && resp->status != 204) {
                        *retryable = status_is_retryable(resp->status);
                        return status_error(&rq, resp, err);
                }
                next = kiln_registry_transfer_response_header(resp, "Location");
                if (!next || !*next)
                        return kiln_error_set(err, -EPROTO,
                                              "PATCH upload of %s: no Location in the answer",
                                              d->digest);
                free(loc);
                loc = upload_location(p, next, &other_host);
                offset += len;
                event(p->s, KILN_REGISTRY_EVENT_BLOB_PROGRESS, d->digest, d->media_type, d->size,
                      offset, NULL);
        }

        {
                _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
                const struct kiln_registry_transfer_response *resp;
                _cleanup_free_ char *put = url_with_digest(loc, d->digest);
                struct request rq;

                if (!put)
                        return kiln_error_set(err, -E2BIG, "upload URL too long");
                request_init(&rq, p->host, "PUT", put);
                rq.no_auth = other_host;
                rq.klass = kiln_registry_transfer_class_of(d->media_type);
                rq.last_host = true;
                request_add_header(&rq, "Content-Type", "application/octet-stream");
                rq.has_body = true;
                rq.body_fd = fd;
                rq.body_offset = offset;
                rq.body_len = size - offset;
                r = upload_request(p, &rq, &t, &resp, err);
                put = rq.url;
                if (r < 0) {
                        *retryable = rq.transient;
                        return r;
                }
                if (resp->status != 201 && resp->status != 200 && resp->status != 204) {
                        *retryable = status_is_retryable(resp->status);
                        return status_error(&rq, resp, err);
                }
        }
        return 0;
}

/* 0: uploaded, 1: existed, 2: mounted; or -errno (*retryable says whether
 * to try again later). */
static int push_blob_once(struct push_ctx *p, const struct kiln_content_descriptor *d,
                          bool *retryable, struct kiln_error **err)
{
        _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
        const struct kiln_registry_transfer_response *resp;
        _cleanup_free_ char *url = NULL, *accept = NULL, *location = NULL, *size_s = NULL;
        struct request rq;
        int r;

        *retryable = false;
        accept = kiln_xasprintf("%s, */*", d->media_type);
        size_s = kiln_xasprintf("%" PRId64, d->size);

        /* Exists already? */
        url = session_url(p->s, p->host, "blobs", d->digest);
        if (!url)
                return kiln_error_set(err, -E2BIG, "URL too long");
        request_init(&rq, p->host, "HEAD", url);
        request_add_header(&rq, "Accept", accept);
        rq.klass = kiln_registry_transfer_class_of(d->media_type);
        rq.last_host = true;
        rq.log_fields[0] = (struct kiln_log_field){ "digest", d->digest };
        rq.log_fields[1] = (struct kiln_log_field){ "mediatype", d->media_type };
        rq.log_fields[2] = (struct kiln_log_field){ "size", size_s };
        rq.n_log_fields = 3;
        r = upload_request(p, &rq, &t, &resp, err);
        url = rq.url;
        if (r < 0) {
                *retryable = rq.transient;
                return r;
        }
        if (resp->status == 200)
                return 1;
        if (resp->status != 404) {
                *retryable = status_is_retryable(resp->status);
                return status_error(&rq, resp, err);
        }
        t = kiln_registry_transfer_free(t);

        /* Mount from another repository of this registry. */
        if (p->mount_from && !streq(p->mount_from, p->s->ref->path)) {
                _cleanup_(kiln_buf_release) struct kiln_buf q =
                        KILN_BUF_INIT(KILN_LIMIT_REGISTRY_URL);
                _cleanup_free_ char *base = session_url(p->s, p->host, "blobs", "uploads/");
                _cleanup_free_ char *scope = kiln_xasprintf("repository:%s:pull", p->mount_from);

                if (!base)
                        return kiln_error_set(err, -E2BIG, "URL too long");
                r = kiln_buf_puts(&q, base);
                if (r >= 0)
                        r = kiln_buf_puts(&q, strchr(base, '?') ? "&" : "?");
                if (r >= 0)
                        r = kiln_buf_puts(&q, "from=");
                if (r >= 0)
                        r = url_query_escape(&q, p->mount_from);
                if (r >= 0)
                        r = kiln_buf_puts(&q, "&mount=");
                if (r >= 0)
                        r = url_query_escape(&q, d->digest);
                if (r < 0)
                        return kiln_error_set(err, -E2BIG, "URL too long");
                free(url);
                url = kiln_buf_steal(&q);
                request_init(&rq, p->host, "POST", url);
                rq.klass = kiln_registry_transfer_class_of(d->media_type);
                rq.last_host = true;
                rq.extra_scope = scope;
                r = upload_request(p, &rq, &t, &resp, err);
                url = rq.url;
                if (r < 0) {
                        *retryable = rq.transient;
                        return r;
                }
                if (resp->status == 201)
                        return 2;
                if (resp->status == 202) {
                        const char *l = kiln_registry_transfer_response_header(resp, "Location");
                        if (l && *l)
                                location = kiln_xstrdup(l);
                }
                /* 401 (no access to the source) or anything else: a plain
                 * upload, as containerd does after a refused mount. */
                log_debug_f(KILN_FIELDS({ "digest", d->digest }, { "from", p->mount_from },
                                        { "status", resp->status_text }),
                            "mount not done");
                t = kiln_registry_transfer_free(t);
        }

        if (!location) {
                free(url);
                url = session_url(p->s, p->host, "blobs", "uploads/");
                if (!url)
                        return kiln_error_set(err, -E2BIG, "URL too long");
                request_init(&rq, p->host, "POST", url);
                rq.klass = kiln_registry_transfer_class_of(d->media_type);
                rq.last_host = true;
                r = upload_request(p, &rq, &t, &resp, err);
                url = rq.url;
                if (r < 0) {
                        *retryable = rq.transient;
                        return r;
                }
                if (resp->status == 201)
                        return 1;
                if (resp->status != 202 && resp->status != 200 && resp->status != 204) {
                        *retryable = status_is_retryable(resp->status);
                        return status_error(&rq, resp, err);
                }
                {
                        const char *l = kiln_registry_transfer_response_header(resp, "Location");
                        if (!l || !*l) {
                                _cleanup_free_ char *safe = kiln_registry_url_sanitize(url);
                                return kiln_error_set(err, -EPROTO,
                                                      "POST %s: no Location in the answer", safe);
                        }
                        location = kiln_xstrdup(l);
                }
        }
        if (p->source) {
                uint64_t got = 0;
                bool cached = false;

                r = fetch_blob(p->source, p->store, d, &got, &cached, err);
                if (r < 0)
                        return r;
        }
        event(p->s, KILN_REGISTRY_EVENT_BLOB_STARTED, d->digest, d->media_type, d->size, 0, NULL);
        return upload_blob_data(p, d, location, retryable, err);
}

static int backoff(struct push_ctx *p, unsigned step, const char *digest, const char *why)
{
        unsigned ms = (unsigned) p->s->c->retry_base_ms << step;
        _cleanup_free_ char *msg = kiln_xasprintf("%s; retrying in %ums", why, ms);

        log_info_f(KILN_FIELDS({ "digest", digest }, { "error", why }, { "ref", p->s->ref_string }),
                   "retrying in %ums", ms);
        event(p->s, KILN_REGISTRY_EVENT_RETRY, digest, NULL, 0, 0, msg);
        return session_sleep(p->s, ms);
}

static int push_blob(void *userdata, size_t i, struct kiln_error **err)
{
        struct push_ctx *p = userdata;
        const struct kiln_content_descriptor *d = p->blobs[i];
        int r;

        r = kiln_content_digest_check(d->digest, err);
        if (r < 0)
                return kiln_error_wrap(err, "push blob");
        for (unsigned step = 0;; step++) {
                bool retryable = false;
                struct kiln_error *e = NULL;

                r = push_blob_once(p, d, &retryable, &e);
                if (r == 1) {
                        count(p, &p->res->blobs_existing, 0);
                        event(p->s, KILN_REGISTRY_EVENT_BLOB_EXISTS, d->digest, d->media_type,
                              d->size, 0, NULL);
                        return 0;
                }
                if (r == 2) {
                        count(p, &p->res->blobs_mounted, 0);
                        event(p->s, KILN_REGISTRY_EVENT_BLOB_MOUNTED, d->digest, d->media_type,
                              d->size, 0, p->mount_from);
                        return 0;
                }
                if (r == 0) {
                        count(p, &p->res->blobs_uploaded, (uint64_t) d->size);
                        event(p->s, KILN_REGISTRY_EVENT_BLOB_DONE, d->digest, d->media_type,
                              d->size, (uint64_t) d->size, NULL);
                        return 0;
                }
                if (!retryable || step >= KILN_REGISTRY_RETRY_STEPS) {
                        kiln_error_free(*err);
                        *err = e;
                        event(p->s, KILN_REGISTRY_EVENT_ERROR, d->digest, d->media_type, d->size, 0,
                              kiln_error_message(e));
                        return kiln_error_wrap(err, "push blob %s", d->digest);
                }
                r = backoff(p, step, d->digest, kiln_error_message(e));
                kiln_error_free(e);
                if (r < 0)
                        return session_cancelled_error("push", err);
        }
}

/* ---- manifests ---- */

static int push_manifest(struct push_ctx *p, const struct kiln_content_descriptor *d,
                         const char *object, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf body =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        int r;

        r = kiln_content_store_read(p->store, d->digest, &body, err);
        if (r < 0)
                return r;
        for (unsigned step = 0;; step++) {
                _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
                _cleanup_free_ char *url = session_url(p->s, p->host, "manifests", object);
                _cleanup_free_ char *accept = kiln_xasprintf("%s, */*", d->media_type);
                const struct kiln_registry_transfer_response *resp;
                struct kiln_error *e = NULL;
                bool retryable = false;
                struct request rq;

                if (!url)
                        return kiln_error_set(err, -E2BIG, "URL too long");
                /* Exists with this digest? (containerd's existCheck) */
                request_init(&rq, p->host, "HEAD", url);
                request_add_header(&rq, "Accept", accept);
                rq.last_host = true;
                r = upload_request(p, &rq, &t, &resp, &e);
                url = rq.url;
                if (r >= 0 && resp->status == 200) {
                        const char *dh = kiln_registry_transfer_response_header(
                                resp, "Docker-Content-Digest");
                        if (streq(object, d->digest) || (dh && streq(dh, d->digest))) {
                                event(p->s, KILN_REGISTRY_EVENT_BLOB_EXISTS, d->digest,
                                      d->media_type, d->size, 0, NULL);
                                return 0;
                        }
                }
                kiln_error_free(e);
                e = NULL;
                t = kiln_registry_transfer_free(t);

                request_init(&rq, p->host, "PUT", url);
                request_add_header(&rq, "Content-Type", d->media_type);
                rq.last_host = true;
                rq.has_body = true;
                rq.body = body.data;
                rq.body_len = body.len;
                r = upload_request(p, &rq, &t, &resp, &e);
                url = rq.url;
                if (r >= 0) {
                        if (resp->status == 201 || resp->status == 200 || resp->status == 204) {
                                event(p->s, KILN_REGISTRY_EVENT_BLOB_DONE, d->digest, d->media_type,
                                      d->size, (uint64_t) body.len, NULL);
                                return 0;
                        }
                        retryable = status_is_retryable(resp->status);
                        r = status_error(&rq, resp, &e);
                } else
                        retryable = rq.transient;
                if (!retryable || step >= KILN_REGISTRY_RETRY_STEPS) {
                        kiln_error_free(*err);
                        *err = e;
                        return kiln_error_wrap(err, "push manifest %s", d->digest);
                }
                r = backoff(p, step, d->digest, kiln_error_message(e));
                kiln_error_free(e);
                if (r < 0)
                        return session_cancelled_error("push", err);
        }
}

/* ---- push ---- */

static void push_ctx_release(struct push_ctx *p)
{
        free(p->blobs);
        free(p->manifests);
        for (size_t i = 0; i < p->n_docs_m; i++)
                kiln_content_manifest_free(p->docs_m[i]);
        free(p->docs_m);
        for (size_t i = 0; i < p->n_docs_i; i++)
                kiln_content_index_free(p->docs_i[i]);
        free(p->docs_i);
        pthread_mutex_destroy(&p->lock);
}

static int push_session(struct session *s, struct session *source, struct kiln_content_store *store,
                        const char *root_digest, const char *root_media_type,
                        const struct kiln_registry_push_options *o,
                        struct kiln_registry_push_result *ret, struct kiln_error **err)
{
        struct kiln_registry_push_result res = { 0 };
        struct push_ctx p = {
                .s = s,
                .source = source,
                .store = store,
                .res = &res,
                .mount_from = o ? o->mount_from : NULL,
                .chunk_size =
                        o && o->chunk_size ? o->chunk_size : KILN_REGISTRY_UPLOAD_CHUNK_DEFAULT,
        };
        const char *object;
        size_t threads;
        int r;

        pthread_mutex_init(&p.lock, NULL);
        p.host = kiln_registry_hosts_push_host(s->hosts);
        if (!p.host) {
                push_ctx_release(&p);
                return kiln_error_set(err, -ENOENT, "no host to push to");
        }
        r = kiln_content_digest_check(root_digest, err);
        if (r >= 0)
                r = tree_walk(&p, root_digest, root_media_type, 0, err);
        threads = kiln_registry_transfer_manager_max_concurrency(s->c->manager) + 1;
        if (r >= 0)
                r = parallel_run(p.n_blobs, threads, push_blob, &p, err);
        /* Children by digest, the root last by the reference's object:
         * its tag, or its digest when the reference has only one. */
        for (size_t i = 0; r >= 0 && i < p.n_manifests; i++) {
                const struct kiln_content_descriptor *d = &p.manifests[i];
                bool root = i + 1 == p.n_manifests;

                object = root && s->ref->tag ? s->ref->tag : d->digest;
                r = push_manifest(&p, d, object, err);
        }
        push_ctx_release(&p);
        if (r < 0) {
                kiln_registry_push_result_release(&res);
                return r;
        }
        res.ref = kiln_xstrdup(s->ref_string);
        res.digest = kiln_xstrdup(root_digest);
        *ret = res;
        return 0;
}

int kiln_registry_push(struct kiln_registry_client *c, struct kiln_content_store *store,
                       const char *ref, const char *root_digest, const char *root_media_type,
                       const struct kiln_registry_push_options *o,
                       struct kiln_registry_push_result *ret, struct kiln_error **err)
{
        _cleanup_(session_closep) struct session *s = NULL;
        int r;

        r = session_open(c, ref, true, o ? o->on_event : NULL, o ? o->userdata : NULL, &s, err);
        if (r < 0)
                return kiln_error_wrap(err, "push '%s'", ref);
        s->cancel = o ? o->cancel : NULL;
        if (s->ref->digest && !streq(s->ref->digest, root_digest))
                return kiln_error_set(err, -EINVAL, "push '%s': the reference's digest is not %s",
                                      s->ref_string, root_digest);
        r = push_session(s, NULL, store, root_digest, root_media_type, o, ret, err);
        if (r < 0 && (r == -ECANCELED || session_cancelled(s))) {
                _cleanup_free_ char *what = kiln_xasprintf("push '%s'", s->ref_string);
                return session_cancelled_error(what, err);
        }
        if (r < 0)
                return kiln_error_wrap(err, "push '%s'", s->ref_string);
        return 0;
}

/* ---- copy ---- */

int kiln_registry_copy(struct kiln_registry_client *c, struct kiln_content_store *store,
                       const char *src, const char *dest,
                       const struct kiln_registry_push_options *o,
                       struct kiln_registry_push_result *ret, struct kiln_error **err)
{
        _cleanup_(session_closep) struct session *from = NULL, *to = NULL;
        struct kiln_registry_pull_options po = {
                .all_platforms = true,
                .metadata_only = true,
                .cancel = o ? o->cancel : NULL,
                .on_event = o ? o->on_event : NULL,
                .userdata = o ? o->userdata : NULL,
        };
        struct kiln_registry_push_options pu = o ? *o : (struct kiln_registry_push_options){ 0 };
        struct kiln_registry_pull_result pulled = { 0 };
        int r;

        r = session_open(c, src, false, po.on_event, po.userdata, &from, err);
        if (r < 0)
                return kiln_error_wrap(err, "copy '%s' to '%s'", src, dest);
        r = session_open(c, dest, true, pu.on_event, pu.userdata, &to, err);
        if (r < 0)
                return kiln_error_wrap(err, "copy '%s' to '%s'", src, dest);
        from->cancel = to->cancel = pu.cancel;
        /* Same registry: the destination can mount the source's blobs. */
        if (!pu.mount_from && streq(from->ref->domain, to->ref->domain))
                pu.mount_from = from->ref->path;
        /* The manifests now; each blob later, only if the destination has
         * neither it nor a way to mount it. */
        r = pull_session(from, store, &po, &pulled, err);
        if (r >= 0)
                r = push_session(to, from, store, pulled.root.digest, pulled.root.media_type, &pu,
                                 ret, err);
        kiln_registry_pull_result_release(&pulled);
        if (r < 0 && (r == -ECANCELED || session_cancelled(from))) {
                _cleanup_free_ char *what =
                        kiln_xasprintf("copy '%s' to '%s'", from->ref_string, to->ref_string);
                return session_cancelled_error(what, err);
        }
        if (r < 0)
                return kiln_error_wrap(err, "copy '%s' to '%s'", from->ref_string, to->ref_string);
        return 0;
}
