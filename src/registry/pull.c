/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Resolve, fetch and pull: containerd's dockerResolver.Resolve and
 * dockerFetcher.Fetch, buildkit's retry handler and pull handlers.
 */
#include <inttypes.h>
#include <pthread.h>
#include <time.h>

#include "base/clock.h"
#include "client.h"
#include "redact.h"
#include "registry-internal.h"
#include "transfer-internal.h"

/* containerd's resolve Accept list. */
#define MANIFEST_ACCEPT                                                           \
        KILN_CONTENT_MT_DOCKER_MANIFEST ", " KILN_CONTENT_MT_DOCKER_MANIFEST_LIST \
                                        ", " KILN_CONTENT_MT_OCI_MANIFEST         \
                                        ", " KILN_CONTENT_MT_OCI_INDEX ", */*"
#define SCHEMA1_MEDIA_TYPE "application/vnd.docker.distribution.manifest.v1+prettyjws"
/* Nesting of indexes in indexes that a pull follows. */
#define INDEX_DEPTH_MAX 4

static void log_next_host(struct session *s, const struct kiln_registry_host *h, size_t i, size_t n,
                          const char *error)
{
        /* containerd's nextHostOrFail. */
        log_info_f(KILN_FIELDS({ "error", error }, { "host", h ? h->host : "" },
                               { "ref", s->ref_string }),
                   "%s", i + 1 < n ? "trying next host" : "fetch failed");
}

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

static char *content_type_base(const char *ct)
{
        size_t n;

        if (!ct)
                return kiln_xstrdup("");
        n = strcspn(ct, ";");
        while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
                n--;
        if (n == 10 && strncmp(ct, "text/plain", 10) == 0)
                return kiln_xstrdup(SCHEMA1_MEDIA_TYPE);
        return kiln_xstrndup(ct, n);
}

void kiln_registry_resolved_release(struct kiln_registry_resolved *r)
{
        free(r->ref);
        free(r->digest);
        free(r->media_type);
        *r = (struct kiln_registry_resolved){ 0 };
}

/* ---- resolve ---- */

/* containerd's Resolve on an open session. *body gets the manifest bytes
 * when a GET was needed (NULL data otherwise). */
static int resolve_session(struct session *s, struct kiln_registry_resolved *ret,
                           struct kiln_buf *body, struct kiln_error **err)
{
        const char *digest = s->ref->digest;
        const char *paths[2][2] = { { "manifests", kiln_content_ref_object(s->ref) },
                                    { "blobs", digest } };
        size_t n_paths = digest ? 2 : 1;
        unsigned caps = KILN_REGISTRY_CAP_PULL | (digest ? 0 : KILN_REGISTRY_CAP_RESOLVE);
        _cleanup_free_ const struct kiln_registry_host **hosts = NULL;
        struct host_errors he = { 0 };
        int priority = 0, r;
        size_t n_hosts = session_hosts(s, caps, &hosts);

        event(s, KILN_REGISTRY_EVENT_RESOLVING, NULL, NULL, 0, 0, NULL);
        for (size_t p = 0; p < n_paths; p++) {
                /* The /blobs fallback only after 404s (legacy registries). */
                if (priority > 2)
                        break;
                for (size_t i = 0; i < n_hosts; i++) {
                        _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t =
                                NULL;
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                        _cleanup_free_ char *url = NULL, *safe = NULL, *mt = NULL;
                        const struct kiln_registry_host *h = hosts[i];
                        const struct kiln_registry_transfer_response *resp;
                        _cleanup_free_ char *dgst = NULL;
                        struct request rq;
                        int64_t size;

                        url = session_url(s, h, paths[p][0], paths[p][1]);
                        if (!url)
                                return kiln_error_set(err, -E2BIG, "resolve '%s': URL too long",
                                                      s->ref_string);
                        safe = kiln_registry_url_sanitize(url);
                        log_debug_f(KILN_FIELDS({ "host", h->host }, { "method", "HEAD" },
                                                { "url", safe }, { "traceID", s->trace_id }),
                                    "resolving");
                        request_init(&rq, h, "HEAD", url);
                        request_add_header(&rq, "Accept", MANIFEST_ACCEPT);
                        rq.last_host = i + 1 == n_hosts;
                        rq.body_max = KILN_CONTENT_LIMIT_MANIFEST;
                        r = session_do(s, &rq, &t, &e);
                        url = rq.url; /* may have been rewritten */
                        if (r == -ECANCELED)
                                return session_cancelled_error("resolve", err);
                        if (r < 0) {
                                if (priority < 1) {
                                        priority = 1;
                                        he.code = r;
                                }
                                host_errors_add(&he, NULL, kiln_error_message(e));
                                log_next_host(s, h, i, n_hosts, kiln_error_message(e));
                                continue;
                        }
                        kiln_registry_transfer_wait(t, &resp);
                        if (resp->status > 299) {
                                _cleanup_(kiln_error_freep) struct kiln_error *se = NULL;

                                (void) response_status_error(rq.method, url, resp, &se);
                                if (resp->status == 404) {
                                        if (priority < 2) {
                                                priority = 2;
                                                he.code = -ENOENT;
                                        }
                                } else if (resp->status > 399) {
                                        if (priority < 3) {
                                                priority = 3;
                                                he.code = resp->status == 401 || resp->status == 403
                                                                  ? -EACCES
                                                                  : -EIO;
                                        }
                                } else {
                                        /* 3xx not followed: containerd aborts. */
                                        return kiln_error_set(err, -EIO, "resolve '%s': %s",
                                                              s->ref_string,
                                                              kiln_error_message(se));
                                }
                                host_errors_add(&he, NULL, kiln_error_message(se));
                                log_next_host(s, h, i, n_hosts, kiln_error_message(se));
                                continue;
                        }
                        size = resp->content_length;
                        mt = content_type_base(
                                kiln_registry_transfer_response_header(resp, "Content-Type"));
                        if (digest)
                                dgst = kiln_xstrdup(digest);
                        else {
                                const char *dh = kiln_registry_transfer_response_header(
                                        resp, "Docker-Content-Digest");

                                if (dh && *dh && size != -1) {
                                        r = kiln_content_digest_validate(dh, err);
                                        if (r < 0)
                                                return kiln_error_wrap(
                                                        err, "resolve '%s': Docker-Content-Digest",
                                                        s->ref_string);
                                        dgst = kiln_xstrdup(dh);
                                }
                        }
                        if (streq(rq.method, "GET")) {
                                /* The HEAD became a GET (405): the body is here. */
                                if (!dgst) {
                                        char d[KILN_CONTENT_DIGEST_SIZE];
                                        kiln_content_digest_of(resp->body.data ? resp->body.data
                                                                               : "",
                                                               resp->body.len, d);
                                        dgst = kiln_xstrdup(d);
                                }
                                size = (int64_t) resp->body.len;
                                if (body) {
                                        kiln_buf_reset(body);
                                        (void) kiln_buf_append(
                                                body, resp->body.data ? resp->body.data : "",
                                                resp->body.len);
                                }
                        } else if (!dgst || size == -1) {
                                /* No digest header (or HEAD refused): GET and hash. */
                                _cleanup_(
                                        kiln_registry_transfer_freep) struct kiln_registry_transfer
                                        *g = NULL;
                                const struct kiln_registry_transfer_response *gr;

                                log_debug("no Docker-Content-Digest header, fetching manifest "
                                          "instead");
                                request_init(&rq, h, "GET", url);
                                request_add_header(&rq, "Accept", MANIFEST_ACCEPT);
                                rq.last_host = true;
                                rq.body_max = KILN_CONTENT_LIMIT_MANIFEST;
                                r = session_do(s, &rq, &g, err);
                                url = rq.url;
                                if (r < 0)
                                        return kiln_error_wrap(err, "resolve '%s'", s->ref_string);
                                kiln_registry_transfer_wait(g, &gr);
                                if (gr->status >= 400 || gr->status < 200) {
                                        response_status_error("GET", url, gr, err);
                                        return kiln_error_wrap(err, "resolve '%s'", s->ref_string);
                                }
                                free(mt);
                                mt = content_type_base(
                                        kiln_registry_transfer_response_header(gr, "Content-Type"));
                                if (streq(mt, SCHEMA1_MEDIA_TYPE))
                                        return kiln_error_set(
                                                err, -EOPNOTSUPP,
                                                "resolve '%s': media type '%s' is no longer "
                                                "supported: rebuild the image as '%s' or '%s'",
                                                s->ref_string, SCHEMA1_MEDIA_TYPE,
                                                KILN_CONTENT_MT_DOCKER_MANIFEST,
                                                KILN_CONTENT_MT_OCI_MANIFEST);
                                if (!dgst) {
                                        char d[KILN_CONTENT_DIGEST_SIZE];
                                        kiln_content_digest_of(gr->body.data ? gr->body.data : "",
                                                               gr->body.len, d);
                                        dgst = kiln_xstrdup(d);
                                }
                                size = (int64_t) gr->body.len;
                                if (body) {
                                        kiln_buf_reset(body);
                                        (void) kiln_buf_append(body,
                                                               gr->body.data ? gr->body.data : "",
                                                               gr->body.len);
                                }
                        }
                        if (size > (int64_t) KILN_CONTENT_LIMIT_MANIFEST) {
                                _cleanup_free_ char *msg = kiln_xasprintf(
                                        "%s: rejecting %" PRId64 " byte manifest: larger than "
                                        "the %u byte limit",
                                        safe, size, KILN_CONTENT_LIMIT_MANIFEST);
                                if (priority < 4) {
                                        priority = 4;
                                        he.code = -E2BIG;
                                }
                                host_errors_add(&he, NULL, msg);
                                log_next_host(s, h, i, n_hosts, msg);
                                continue;
                        }
                        ret->ref = kiln_xstrdup(s->ref_string);
                        ret->digest = TAKE_PTR(dgst);
                        ret->media_type = TAKE_PTR(mt);
                        ret->size = size;
                        log_debug_f(KILN_FIELDS({ "desc.digest", ret->digest }, { "host", h->host },
                                                { "traceID", s->trace_id }),
                                    "resolved");
                        host_errors_release(&he);
                        event(s, KILN_REGISTRY_EVENT_RESOLVED, ret->digest, ret->media_type,
                              ret->size, 0, NULL);
                        return 0;
                }
        }
        {
                _cleanup_free_ char *what = kiln_xasprintf("resolve '%s'", s->ref_string);
                r = host_errors_finish(&he, what, err);
        }
        host_errors_release(&he);
        return r;
}

int kiln_registry_resolve(struct kiln_registry_client *c, const char *ref,
                          kiln_registry_event_fn on_event, void *userdata,
                          struct kiln_registry_resolved *ret, struct kiln_error **err)
{
        _cleanup_(session_closep) struct session *s = NULL;
        int r;

        r = session_open(c, ref, false, on_event, userdata, &s, err);
        if (r < 0)
                return r;
        return resolve_session(s, ret, NULL, err);
}

/* ---- fetching one descriptor ---- */

/* Sleeps before retry number `step` (0-based) of a whole fetch, as
 * buildkit's retry handler (1 s, 2 s, 4 s with the default base). */
static int backoff(struct session *s, unsigned step, const char *digest, const char *why)
{
        unsigned ms = (unsigned) s->c->retry_base_ms << step;
        _cleanup_free_ char *msg = kiln_xasprintf("%s; retrying in %ums", why, ms);

        log_info_f(KILN_FIELDS({ "digest", digest ? digest : "" }, { "error", why },
                               { "ref", s->ref_string }),
                   "retrying in %ums", ms);
        event(s, KILN_REGISTRY_EVENT_RETRY, digest, NULL, 0, 0, msg);
        return session_sleep(s, ms);
}

static void desc_log_fields(struct request *rq, const char *digest, const char *media_type,
                            const char *size)
{
        rq->log_fields[0] = (struct kiln_log_field){ "digest", digest };
        rq->log_fields[1] = (struct kiln_log_field){ "mediatype", media_type };
        rq->log_fields[2] = (struct kiln_log_field){ "size", size };
        rq->n_log_fields = 3;
}

/* A manifest or index by digest, from the store or the hosts' manifests/
 * endpoint (any error: next host), verified and stored; its bytes in *out. */
static int fetch_document_once(struct session *s, struct kiln_content_store *store,
                               const char *digest, const char *media_type, int64_t size,
                               struct kiln_buf *out, struct host_errors *he,
                               struct kiln_error **err)
{
        _cleanup_free_ const struct kiln_registry_host **hosts = NULL;
        size_t n = session_hosts(s, KILN_REGISTRY_CAP_PULL, &hosts);
        _cleanup_free_ char *accept = kiln_xasprintf("%s, */*", media_type);
        _cleanup_free_ char *size_s = kiln_xasprintf("%" PRId64, size);
        int r;

        for (size_t i = 0; i < n; i++) {
                _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                _cleanup_free_ char *url = session_url(s, hosts[i], "manifests", digest);
                const struct kiln_registry_transfer_response *resp;
                char got[KILN_CONTENT_DIGEST_SIZE];
                struct request rq;

                if (!url)
                        return kiln_error_set(err, -E2BIG, "URL too long");
                request_init(&rq, hosts[i], "GET", url);
                request_add_header(&rq, "Accept", accept);
                rq.last_host = i + 1 == n;
                rq.body_max = KILN_CONTENT_LIMIT_MANIFEST;
                desc_log_fields(&rq, digest, media_type, size_s);
                r = session_do(s, &rq, &t, &e);
                url = rq.url;
                if (r == -ECANCELED)
                        return session_cancelled_error("fetch", err);
                if (r < 0) {
                        he->retryable = rq.transient;
                        he->code = r;
                        host_errors_add(he, NULL, kiln_error_message(e));
                        log_next_host(s, hosts[i], i, n, kiln_error_message(e));
                        continue;
                }
                kiln_registry_transfer_wait(t, &resp);
                if (resp->status != 200) {
                        he->code = response_status_error("GET", url, resp, &e);
                        he->retryable = status_is_retryable(resp->status);
                        host_errors_add(he, NULL, kiln_error_message(e));
                        log_next_host(s, hosts[i], i, n, kiln_error_message(e));
                        continue;
                }
                kiln_content_digest_of(resp->body.data ? resp->body.data : "", resp->body.len, got);
                if (!streq(got, digest) || (size >= 0 && (uint64_t) size != resp->body.len)) {
                        _cleanup_free_ char *safe = kiln_registry_url_sanitize(url);
                        _cleanup_free_ char *msg =
                                kiln_xasprintf("GET %s: content mismatch: expected %s (%" PRId64
                                               " bytes), got %s (%zu bytes)",
                                               safe, digest, size, got, resp->body.len);
                        he->code = -EBADMSG;
                        he->retryable = false;
                        host_errors_add(he, NULL, msg);
                        log_next_host(s, hosts[i], i, n, msg);
                        continue;
                }
                if (store) {
                        r = kiln_content_store_put(store, digest,
                                                   resp->body.data ? resp->body.data : "",
                                                   resp->body.len, NULL, err);
                        if (r < 0)
                                return r;
                }
                kiln_buf_reset(out);
                r = kiln_buf_append(out, resp->body.data ? resp->body.data : "", resp->body.len);
                if (r < 0)
                        return kiln_error_set(err, r, "manifest too large");
                return 0;
        }
        return 1; /* every host failed: see he */
}

int fetch_document(struct session *s, struct kiln_content_store *store, const char *digest,
                   const char *media_type, int64_t size, struct kiln_buf *out,
                   struct kiln_error **err)
{
        _cleanup_free_ char *what = NULL;
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        if (size > (int64_t) KILN_CONTENT_LIMIT_MANIFEST)
                return kiln_error_set(err, -E2BIG,
                                      "manifest %s of %" PRId64
                                      " bytes is larger than the %u byte limit",
                                      digest, size, KILN_CONTENT_LIMIT_MANIFEST);
        r = store ? kiln_content_store_has(store, digest, err) : 0;
        if (r < 0)
                return r;
        if (r > 0) {
                kiln_buf_reset(out);
                r = kiln_content_store_read(store, digest, out, err);
                if (r < 0)
                        return r;
                event(s, KILN_REGISTRY_EVENT_BLOB_CACHED, digest, media_type, size, 0, NULL);
                return 0;
        }
        {
                _cleanup_free_ char *size_s = kiln_xasprintf("%" PRId64, size);
                log_debug_f(KILN_FIELDS({ "digest", digest }, { "mediatype", media_type },
                                        { "size", size_s }, { "traceID", s->trace_id }),
                            "fetch");
        }
        event(s, KILN_REGISTRY_EVENT_BLOB_STARTED, digest, media_type, size, 0, NULL);
        what = kiln_xasprintf("fetch manifest %s", digest);
        for (unsigned step = 0;; step++) {
                struct host_errors he = { 0 };

                r = fetch_document_once(s, store, digest, media_type, size, out, &he, err);
                if (r == 0) {
                        host_errors_release(&he);
                        event(s, KILN_REGISTRY_EVENT_BLOB_DONE, digest, media_type, size,
                              (uint64_t) out->len, NULL);
                        return 0;
                }
                if (r < 0) {
                        host_errors_release(&he);
                        return r;
                }
                if (!he.retryable || step >= KILN_REGISTRY_RETRY_STEPS) {
                        r = host_errors_finish(&he, what, err);
                        host_errors_release(&he);
                        event(s, KILN_REGISTRY_EVENT_ERROR, digest, media_type, size, 0,
                              kiln_error_message(*err));
                        return r;
                }
                {
                        struct kiln_error *e = NULL;
                        (void) host_errors_finish(&he, what, &e);
                        r = backoff(s, step, digest, kiln_error_message(e));
                        kiln_error_free(e);
                }
                host_errors_release(&he);
                if (r < 0)
                        return session_cancelled_error(what, err);
        }
}

struct blob_sink {
        struct session *s;
        struct kiln_content_ingest *in;
        const struct kiln_content_descriptor *d;
        int64_t last_event_ms;
};

static int blob_on_response(void *userdata, const struct kiln_registry_transfer_response *r,
                            struct kiln_error **err)
{
        struct blob_sink *b = userdata;

        if (r->status == 200 && r->content_length >= 0 && b->d->size >= 0 &&
            r->content_length != b->d->size)
                return kiln_error_set(err, -EBADMSG,
                                      "blob %s: the registry sends %" PRId64
                                      " bytes, the descriptor says %" PRId64,
                                      b->d->digest, r->content_length, b->d->size);
        return 0;
}

static int blob_sink_write(void *userdata, const void *p, size_t n, struct kiln_error **err)
{
        struct blob_sink *b = userdata;
        int64_t now;
        int r;

        if (session_cancelled(b->s))
                return kiln_error_set(err, -ECANCELED, "cancelled");
        r = kiln_content_ingest_write(b->in, p, n, err);
        if (r < 0)
                return r;
        now = kiln_mono_ms();
        if (now - b->last_event_ms >= KILN_REGISTRY_PROGRESS_INTERVAL_MS) {
                b->last_event_ms = now;
                event(b->s, KILN_REGISTRY_EVENT_BLOB_PROGRESS, b->d->digest, b->d->media_type,
                      b->d->size, kiln_content_ingest_offset(b->in), NULL);
        }
        return 0;
}

/* One pass over the blob's sources: foreign URLs, then the hosts. 0 when
 * stored, 2 when another writer stored it, 1 when all failed (he). */
static int fetch_blob_once(struct session *s, struct kiln_content_store *store,
                           const struct kiln_content_descriptor *d, uint64_t *downloaded,
                           struct host_errors *he, struct kiln_error **err)
{
        _cleanup_free_ const struct kiln_registry_host **hosts = NULL;
        size_t n_hosts = session_hosts(s, KILN_REGISTRY_CAP_PULL, &hosts);
        size_t n_urls = 0, n;
        _cleanup_free_ char *accept = kiln_xasprintf("%s, */*", d->media_type);
        _cleanup_free_ char *size_s = kiln_xasprintf("%" PRId64, d->size);
        int r;

        for (char **u = d->urls; u && *u; u++)
                n_urls++;
        n = n_urls + n_hosts;
        for (size_t i = 0; i < n; i++) {
                _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
                _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                const struct kiln_registry_host *h = i < n_urls ? NULL : hosts[i - n_urls];
                const struct kiln_registry_transfer_response *resp;
                _cleanup_free_ char *url = NULL;
                struct blob_sink sink;
                struct request rq;

                if (!h) {
                        const char *u = d->urls[i];
                        if (!startswith(u, "http://") && !startswith(u, "https://"))
                                continue; /* containerd: unsupported scheme, skipped */
                        url = kiln_xstrdup(u);
                } else {
                        url = session_url(s, h, "blobs", d->digest);
                        if (!url)
                                return kiln_error_set(err, -E2BIG, "URL too long");
                }

                r = kiln_content_ingest_begin(store, d->digest, d->size, 0, &in, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        return 2;

                sink = (struct blob_sink){ .s = s, .in = in, .d = d };
                request_init(&rq, h, "GET", url);
                request_add_header(&rq, "Accept", accept);
                rq.klass = kiln_registry_transfer_class_of(d->media_type);
                rq.last_host = i + 1 == n;
                rq.sink = blob_sink_write;
                rq.on_response = blob_on_response;
                rq.userdata = &sink;
                desc_log_fields(&rq, d->digest, d->media_type, size_s);
                r = session_do(s, &rq, &t, &e);
                url = rq.url;
                if (r == -ECANCELED)
                        return session_cancelled_error("fetch", err);
                if (r < 0) {
                        he->retryable = rq.transient;
                        he->code = r;
                        host_errors_add(he, NULL, kiln_error_message(e));
                        log_next_host(s, h, i, n, kiln_error_message(e));
                        continue;
                }
                kiln_registry_transfer_wait(t, &resp);
                if (resp->status != 200) {
                        he->code = response_status_error("GET", url, resp, &e);
                        he->retryable = status_is_retryable(resp->status);
                        host_errors_add(he, NULL, kiln_error_message(e));
                        log_next_host(s, h, i, n, kiln_error_message(e));
                        continue;
                }
                r = kiln_content_ingest_commit(in, &e);
                if (r < 0) {
                        _cleanup_free_ char *safe = kiln_registry_url_sanitize(url);
                        _cleanup_free_ char *msg =
                                kiln_xasprintf("GET %s: %s", safe, kiln_error_message(e));
                        he->code = r;
                        he->retryable = false;
                        host_errors_add(he, NULL, msg);
                        log_next_host(s, h, i, n, msg);
                        continue;
                }
                *downloaded += resp->body_received;
                return 0;
        }
        return 1;
}

int fetch_blob(struct session *s, struct kiln_content_store *store,
               const struct kiln_content_descriptor *d, uint64_t *downloaded, bool *cached,
               struct kiln_error **err)
{
        _cleanup_free_ char *what = NULL;
        int r;

        *cached = false;
        r = kiln_content_digest_check(d->digest, err);
        if (r < 0)
                return kiln_error_wrap(err, "fetch blob");
        r = kiln_content_store_has(store, d->digest, err);
        if (r < 0)
                return r;
        if (r > 0) {
                *cached = true;
                event(s, KILN_REGISTRY_EVENT_BLOB_CACHED, d->digest, d->media_type, d->size, 0,
                      NULL);
                return 0;
        }
        {
                _cleanup_free_ char *size_s = kiln_xasprintf("%" PRId64, d->size);
                log_debug_f(KILN_FIELDS({ "digest", d->digest }, { "mediatype", d->media_type },
                                        { "size", size_s }, { "traceID", s->trace_id }),
                            "fetch");
        }
        event(s, KILN_REGISTRY_EVENT_BLOB_STARTED, d->digest, d->media_type, d->size, 0, NULL);
        what = kiln_xasprintf("fetch blob %s", d->digest);
        for (unsigned step = 0;; step++) {
                struct host_errors he = { 0 };

                r = fetch_blob_once(s, store, d, downloaded, &he, err);
                if (r == 0 || r == 2) {
                        host_errors_release(&he);
                        if (r == 2)
                                *cached = true;
                        event(s,
                              r == 0 ? KILN_REGISTRY_EVENT_BLOB_DONE
                                     : KILN_REGISTRY_EVENT_BLOB_CACHED,
                              d->digest, d->media_type, d->size, (uint64_t) d->size, NULL);
                        return 0;
                }
                if (r < 0) {
                        host_errors_release(&he);
                        return kiln_error_wrap(err, "%s", what);
                }
                if (!he.retryable || step >= KILN_REGISTRY_RETRY_STEPS) {
                        r = host_errors_finish(&he, what, err);
                        host_errors_release(&he);
                        event(s, KILN_REGISTRY_EVENT_ERROR, d->digest, d->media_type, d->size, 0,
                              kiln_error_message(*err));
                        return r;
                }
                {
                        struct kiln_error *e = NULL;
                        (void) host_errors_finish(&he, what, &e);
                        r = backoff(s, step, d->digest, kiln_error_message(e));
                        kiln_error_free(e);
                }
                host_errors_release(&he);
                if (r < 0)
                        return session_cancelled_error(what, err);
        }
}

/* ---- parallel blobs ---- */

struct blob_job {
        struct session *s;
        struct kiln_content_store *store;
        const struct kiln_content_descriptor **descs;
        pthread_mutex_t lock; /* guards the counters */
        uint64_t downloaded;
        unsigned n_downloaded, n_cached;
};

static int blob_job_run(void *userdata, size_t i, struct kiln_error **err)
{
        struct blob_job *j = userdata;
        uint64_t got = 0;
        bool cached = false;
        int r;

        r = fetch_blob(j->s, j->store, j->descs[i], &got, &cached, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&j->lock);
        j->downloaded += got;
        if (cached)
                j->n_cached++;
        else
                j->n_downloaded++;
        pthread_mutex_unlock(&j->lock);
        return 0;
}

int fetch_blobs(struct session *s, struct kiln_content_store *store,
                const struct kiln_content_descriptor **descs, size_t n, uint64_t *downloaded,
                unsigned *n_downloaded, unsigned *n_cached, struct kiln_error **err)
{
        struct blob_job j = { .s = s, .store = store, .descs = descs };
        size_t threads = kiln_registry_transfer_manager_max_concurrency(s->c->manager) + 1;
        int r;

        pthread_mutex_init(&j.lock, NULL);
        r = parallel_run(n, threads, blob_job_run, &j, err);
        pthread_mutex_destroy(&j.lock);
        if (downloaded)
                *downloaded += j.downloaded;
        if (n_downloaded)
                *n_downloaded += j.n_downloaded;
        if (n_cached)
                *n_cached += j.n_cached;
        return r;
}

/* ---- pull ---- */

void kiln_registry_pull_result_release(struct kiln_registry_pull_result *r)
{
        kiln_registry_resolved_release(&r->root);
        for (size_t i = 0; i < r->n_images; i++) {
                struct kiln_registry_pull_image *im = &r->images[i];
                free(im->manifest_digest);
                free(im->manifest_media_type);
                free(im->platform);
                free(im->config_digest);
                for (size_t k = 0; k < im->n_layers; k++)
                        free(im->layers[k]);
                free(im->layers);
        }
        free(r->images);
        *r = (struct kiln_registry_pull_result){ 0 };
}

struct pull_ctx {
        struct session *s;
        struct kiln_content_store *store;
        const struct kiln_registry_pull_options *o;
        struct kiln_content_platform want;
        struct kiln_registry_pull_result *res;
        /* Every config and layer to fetch, deduplicated; borrowed from the
         * parsed manifests kept in manifests[]. */
        const struct kiln_content_descriptor **blobs;
        size_t n_blobs;
        struct kiln_content_manifest **manifests;
        size_t n_manifests;
        struct kiln_content_index **indexes;
        size_t n_indexes;
};

static void pull_ctx_release(struct pull_ctx *p)
{
        free(p->blobs);
        for (size_t i = 0; i < p->n_manifests; i++)
                kiln_content_manifest_free(p->manifests[i]);
        free(p->manifests);
        for (size_t i = 0; i < p->n_indexes; i++)
                kiln_content_index_free(p->indexes[i]);
        free(p->indexes);
        kiln_content_platform_release(&p->want);
}

static int pull_node(struct pull_ctx *p, const char *digest, const char *media_type, int64_t size,
                     const struct kiln_content_platform *platform, unsigned depth,
                     struct kiln_error **err);

static int pull_index(struct pull_ctx *p, const char *digest, const struct kiln_buf *data,
                      const char *media_type, unsigned depth, struct kiln_error **err)
{
        struct kiln_content_index *idx = NULL;
        const struct kiln_content_descriptor *sel = NULL;
        int r;

        if (depth >= INDEX_DEPTH_MAX)
                return kiln_error_set(err, -ELOOP, "index %s: nested more than %d deep", digest,
                                      INDEX_DEPTH_MAX);
        r = kiln_content_index_parse(data->data, data->len, media_type, &idx, err);
        if (r < 0)
                return kiln_error_wrap(err, "index %s", digest);
        p->indexes = kiln_xreallocarray(p->indexes, p->n_indexes + 1, sizeof(*p->indexes));
        p->indexes[p->n_indexes++] = idx;

        if (p->o && p->o->all_platforms) {
                for (size_t i = 0; i < idx->n_manifests; i++) {
                        const struct kiln_content_descriptor *d = &idx->manifests[i];
                        enum kiln_content_kind k = kiln_content_media_type_kind(d->media_type);

                        if (k != KILN_CONTENT_KIND_MANIFEST && k != KILN_CONTENT_KIND_INDEX)
                                continue;
                        r = pull_node(p, d->digest, d->media_type, d->size, d->platform, depth + 1,
                                      err);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        r = kiln_content_index_select(idx, &p->want, &sel, err);
        if (r < 0)
                return kiln_error_wrap(err, "index %s", digest);
        return pull_node(p, sel->digest, sel->media_type, sel->size, sel->platform, depth + 1, err);
}

static int pull_node(struct pull_ctx *p, const char *digest, const char *media_type, int64_t size,
                     const struct kiln_content_platform *platform, unsigned depth,
                     struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf data =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        enum kiln_content_kind kind = kiln_content_media_type_kind(media_type);
        struct kiln_content_manifest *m = NULL;
        struct kiln_registry_pull_image *im;
        int r;

        if (kind != KILN_CONTENT_KIND_MANIFEST && kind != KILN_CONTENT_KIND_INDEX) {
                _cleanup_free_ char *q = kiln_quote_untrusted(media_type, strlen(media_type), 120);
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "%s: unsupported media type '%s': expected an image "
                                      "manifest or index",
                                      digest, q);
        }
        r = fetch_document(p->s, p->store, digest, media_type, size, &data, err);
        if (r < 0)
                return r;
        if (kind == KILN_CONTENT_KIND_INDEX)
                return pull_index(p, digest, &data, media_type, depth, err);

        r = kiln_content_manifest_parse(data.data, data.len, media_type, &m, err);
        if (r < 0)
                return kiln_error_wrap(err, "manifest %s", digest);
        p->manifests = kiln_xreallocarray(p->manifests, p->n_manifests + 1, sizeof(*p->manifests));
        p->manifests[p->n_manifests++] = m;
        if (m->n_layers > KILN_CONTENT_LIMIT_LAYERS)
                return kiln_error_set(err, -E2BIG, "manifest %s: more than %d layers", digest,
                                      KILN_CONTENT_LIMIT_LAYERS);

        r = blob_set_add(&p->blobs, &p->n_blobs, &m->config, err);
        for (size_t i = 0; r >= 0 && !(p->o && p->o->metadata_only) && i < m->n_layers; i++)
                r = blob_set_add(&p->blobs, &p->n_blobs, &m->layers[i], err);
        if (r < 0)
                return kiln_error_wrap(err, "manifest %s", digest);

        p->res->images =
                kiln_xreallocarray(p->res->images, p->res->n_images + 1, sizeof(*p->res->images));
        im = &p->res->images[p->res->n_images++];
        *im = (struct kiln_registry_pull_image){
                .manifest_digest = kiln_xstrdup(digest),
                .manifest_media_type = kiln_xstrdup(media_type),
                .platform = platform ? kiln_content_platform_format(platform) : NULL,
                .config_digest = kiln_xstrdup(m->config.digest),
                .n_layers = m->n_layers,
        };
        im->layers = kiln_xcalloc(m->n_layers + 1, sizeof(char *));
        for (size_t i = 0; i < m->n_layers; i++)
                im->layers[i] = kiln_xstrdup(m->layers[i].digest);
        return 0;
}

/* A reference pinned by digest whose manifest or index the store already
 * holds needs no request: the digest names those bytes for good, so asking
 * the registry again (buildkitd sends a HEAD) only adds a round trip. 1 when
 * resolved here, 0 when the registry must be asked. */
static int resolve_local(struct session *s, struct kiln_content_store *store,
                         struct kiln_registry_resolved *ret, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf data =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        _cleanup_(kiln_content_document_freep) struct kiln_content_document *doc = NULL;
        const char *digest = s->ref->digest;
        int r;

        if (!digest || kiln_content_digest_check(digest, NULL) < 0)
                return 0;
        r = kiln_content_store_has(store, digest, err);
        if (r <= 0)
                return r;
        /* Unreadable or not a manifest or index: the registry decides. */
        if (kiln_content_store_read(store, digest, &data, NULL) < 0 ||
            kiln_content_document_parse(data.data, data.len, NULL, &doc, NULL) < 0 ||
            (!doc->manifest && !doc->index))
                return 0;
        event(s, KILN_REGISTRY_EVENT_RESOLVING, NULL, NULL, 0, 0, NULL);
        ret->ref = kiln_xstrdup(s->ref_string);
        ret->digest = kiln_xstrdup(digest);
        ret->media_type = kiln_xstrdup(kiln_content_media_type_to_string(doc->media_type));
        ret->size = (int64_t) data.len;
        log_debug_f(KILN_FIELDS({ "desc.digest", ret->digest }, { "traceID", s->trace_id }),
                    "resolved from the content store");
        event(s, KILN_REGISTRY_EVENT_RESOLVED, ret->digest, ret->media_type, ret->size, 0, NULL);
        return 1;
}

int pull_session(struct session *s, struct kiln_content_store *store,
                 const struct kiln_registry_pull_options *o, struct kiln_registry_pull_result *ret,
                 struct kiln_error **err)
{
        struct kiln_registry_pull_result res = { 0 };
        struct pull_ctx p = { .s = s, .store = store, .o = o, .res = &res };
        _cleanup_(kiln_buf_release) struct kiln_buf body =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        int r;

        if (o && o->platform) {
                r = kiln_content_platform_parse(o->platform, &p.want, err);
                if (r < 0)
                        return r;
        } else
                kiln_content_platform_default(&p.want);
        kiln_content_platform_normalize(&p.want);

        r = resolve_local(s, store, &res.root, err);
        if (r == 0)
                r = resolve_session(s, &res.root, &body, err);
        /* A resolve that had to GET the manifest already holds its bytes. */
        if (r >= 0 && body.data && (int64_t) body.len == res.root.size &&
            kiln_content_digest_check(res.root.digest, NULL) >= 0)
                r = kiln_content_store_put(store, res.root.digest, body.data, body.len, NULL, err);
        if (r >= 0)
                r = pull_node(&p, res.root.digest, res.root.media_type, res.root.size, NULL, 0,
                              err);
        if (r >= 0)
                r = fetch_blobs(s, store, p.blobs, p.n_blobs, &res.bytes_downloaded,
                                &res.blobs_downloaded, &res.blobs_cached, err);
        pull_ctx_release(&p);
        if (r < 0) {
                kiln_registry_pull_result_release(&res);
                return r;
        }
        *ret = res;
        return 0;
}

int kiln_registry_pull(struct kiln_registry_client *c, struct kiln_content_store *store,
                       const char *ref, const struct kiln_registry_pull_options *o,
                       struct kiln_registry_pull_result *ret, struct kiln_error **err)
{
        _cleanup_(session_closep) struct session *s = NULL;
        int r;

        r = session_open(c, ref, false, o ? o->on_event : NULL, o ? o->userdata : NULL, &s, err);
        if (r < 0)
                return kiln_error_wrap(err, "pull '%s'", ref);
        s->cancel = o ? o->cancel : NULL;
        r = pull_session(s, store, o, ret, err);
        if (r < 0 && (r == -ECANCELED || session_cancelled(s))) {
                _cleanup_free_ char *what = kiln_xasprintf("pull '%s'", s->ref_string);
                return session_cancelled_error(what, err);
        }
        if (r < 0)
                return kiln_error_wrap(err, "pull '%s'", s->ref_string);
        return 0;
}

/* ---- one manifest ---- */

void kiln_registry_manifest_release(struct kiln_registry_manifest *m)
{
        free(m->ref);
        free(m->digest);
        free(m->media_type);
        free(m->data);
        *m = (struct kiln_registry_manifest){ 0 };
}

static int fetch_manifest_session(struct session *s, struct kiln_registry_manifest *ret,
                                  struct kiln_error **err)
{
        _cleanup_(kiln_registry_resolved_release) struct kiln_registry_resolved res = { 0 };
        _cleanup_(kiln_buf_release) struct kiln_buf body =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        enum kiln_content_kind kind;
        int r;

        r = resolve_session(s, &res, &body, err);
        if (r < 0)
                return r;
        kind = kiln_content_media_type_kind(res.media_type);
        if (kind != KILN_CONTENT_KIND_MANIFEST && kind != KILN_CONTENT_KIND_INDEX) {
                _cleanup_free_ char *q =
                        kiln_quote_untrusted(res.media_type, strlen(res.media_type), 120);
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "%s: unsupported media type '%s': expected an image "
                                      "manifest or index",
                                      res.digest, q);
        }
        r = kiln_content_digest_check(res.digest, err);
        if (r < 0)
                return r;
        if (body.data && (int64_t) body.len == res.size) {
                /* The resolve had to GET it: that was the one GET. */
                char got[KILN_CONTENT_DIGEST_SIZE];

                kiln_content_digest_of(body.data, body.len, got);
                if (!streq(got, res.digest))
                        return kiln_error_set(err, -EBADMSG,
                                              "manifest %s: content mismatch: got %s", res.digest,
                                              got);
        } else {
                r = fetch_document(s, NULL, res.digest, res.media_type, res.size, &body, err);
                if (r < 0)
                        return r;
        }
        *ret = (struct kiln_registry_manifest){
                .ref = kiln_xstrdup(s->ref_string),
                .digest = TAKE_PTR(res.digest),
                .media_type = TAKE_PTR(res.media_type),
                .size = body.len,
        };
        ret->data = kiln_xmalloc(body.len + 1);
        if (body.len > 0)
                memcpy(ret->data, body.data, body.len);
        ret->data[body.len] = 0;
        return 0;
}

int kiln_registry_fetch_manifest(struct kiln_registry_client *c, const char *ref,
                                 const struct kiln_registry_fetch_options *o,
                                 struct kiln_registry_manifest *ret, struct kiln_error **err)
{
        _cleanup_(session_closep) struct session *s = NULL;
        int r;

        r = session_open(c, ref, false, o ? o->on_event : NULL, o ? o->userdata : NULL, &s, err);
        if (r < 0)
                return kiln_error_wrap(err, "fetch manifest '%s'", ref);
        s->cancel = o ? o->cancel : NULL;
        r = fetch_manifest_session(s, ret, err);
        if (r < 0 && (r == -ECANCELED || session_cancelled(s))) {
                _cleanup_free_ char *what = kiln_xasprintf("fetch manifest '%s'", s->ref_string);
                return session_cancelled_error(what, err);
        }
        if (r < 0)
                return kiln_error_wrap(err, "fetch manifest '%s'", s->ref_string);
        return 0;
}
