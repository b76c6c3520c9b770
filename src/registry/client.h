/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The request flow shared by resolve, pull and push (registry.h describes
 * the rules): sessions (one reference, one trace) and requests against one
 * host with auth and per-request retries. Internal to src/registry/.
 *
 * A session is used by the threads of one operation at once: its fields
 * are read-only after session_open, and what it changes lives in the
 * client (under the client's lock) or in the request.
 */

#include <pthread.h>
#include <stdbool.h>

#include "registry/auth.h"
#include "registry/creds.h"
#include "registry/hosts.h"
#include "content/ref.h"
#include "registry/registry.h"
#include "registry/transfer.h"

/* Headers one request may carry (besides User-Agent and Authorization). */
#define REQUEST_HEADERS_MAX 6
/* Hosts whose errors one failure message lists. */
#define HOST_ERRORS_MAX 16
/* containerd's pause before retrying a transient transport error. */
#define TRANSPORT_RETRY_PAUSE_MS 50
/* How often a sleep looks at its cancel flag when nobody wakes it. */
#define CANCEL_POLL_MS 100

struct auth_handler;

struct kiln_registry_client {
        struct kiln_registry_transfer_manager *manager;
        const struct kiln_config *config;
        struct kiln_registry_docker_config *docker_config;
        struct kiln_registry_token_cache *tokens;
        int retry_base_ms;

        /* Backoff sleepers wait on wake_cond (CLOCK_MONOTONIC), broadcast by
         * kiln_registry_client_wake. */
        pthread_mutex_t wake_lock;
        pthread_cond_t wake_cond;

        pthread_mutex_t lock; /* guards handlers and plain_hosts */
        struct auth_handler *handlers;
        char **plain_hosts; /* http_fallback hosts found to speak plain HTTP */
        size_t n_plain_hosts;
};

struct session {
        struct kiln_registry_client *c;
        struct kiln_content_ref *ref;
        char *ref_string; /* canonical */
        struct kiln_registry_hosts *hosts;
        char trace_id[33];
        bool push; /* repository scope pull,push */
        kiln_registry_event_fn on_event;
        void *userdata;
        const atomic_bool *cancel; /* the operation's; NULL: never */
};

int session_open(struct kiln_registry_client *c, const char *ref, bool push,
                 kiln_registry_event_fn on_event, void *userdata, struct session **ret,
                 struct kiln_error **err);
struct session *session_close(struct session *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct session *, session_close);

void session_event(struct session *s, const struct kiln_registry_event *ev);

/* The hosts that can do caps, in order (borrowed from s; the array is
 * malloc'd). Returns how many. */
size_t session_hosts(struct session *s, unsigned caps, const struct kiln_registry_host ***ret);

/* The URL of kind/object on host (plain http when the host fell back).
 * NULL only past KILN_LIMIT_REGISTRY_URL. */
char *session_url(struct session *s, const struct kiln_registry_host *h, const char *kind,
                  const char *object);

/* One request against one host. */
struct request {
        const struct kiln_registry_host *host; /* NULL: a foreign URL (no auth) */
        const char *method;
        char *url; /* owned by the caller; may be rewritten (http fallback) */
        struct kiln_registry_header headers[REQUEST_HEADERS_MAX];
        size_t n_headers;
        enum kiln_registry_transfer_class klass;
        bool last_host;
        /* Send no Authorization (an upload moved to another host); the
         * host's TLS settings still apply. */
        bool no_auth;
        /* Extra scopes for the token ("repository:<from>:pull" for a mount). */
        const char *extra_scope;

        bool has_body;
        const void *body;
        int body_fd;
        uint64_t body_offset;
        uint64_t body_len;

        kiln_registry_transfer_sink_fn sink;
        kiln_registry_transfer_response_fn on_response;
        void *userdata;
        size_t body_max;

        struct kiln_log_field log_fields[4];
        size_t n_log_fields;

        /* Out: the failure was a transient transport error (or a callback
         * refused a short body), worth a retry later. */
        bool transient;
};

void request_init(struct request *rq, const struct kiln_registry_host *host, const char *method,
                  char *url);
void request_add_header(struct request *rq, const char *name, const char *value);

/* Sends rq with auth and containerd's per-request retries. Returns 0 and
 * the final transfer in *ret (any HTTP status: the caller judges it), or
 * -errno with *err for a transport or callback failure ("GET <url>: ..."),
 * setting rq->transient when a retry may help. */
int session_do(struct session *s, struct request *rq, struct kiln_registry_transfer **ret,
               struct kiln_error **err);

/* An error for an unexpected HTTP status: "GET <url>: 500 Internal Server
 * Error" plus the registry's first error code and message when the body
 * holds {"errors":[...]}. Returns -ENOENT for 404, -EACCES for 401/403,
 * -EIO otherwise. */
int response_status_error(const char *method, const char *url,
                          const struct kiln_registry_transfer_response *resp,
                          struct kiln_error **err);

/* Runs fn(userdata, i) for i in [0, n) on up to max_threads threads (the
 * caller's included); after the first failure no new item starts. Returns
 * 0 or the first failure, with its error in *err. */
typedef int (*parallel_fn)(void *userdata, size_t i, struct kiln_error **err);
int parallel_run(size_t n, size_t max_threads, parallel_fn fn, void *userdata,
                 struct kiln_error **err);

/* Whether the session's operation was cancelled. */
static inline bool session_cancelled(const struct session *s)
{
        return s->cancel && atomic_load(s->cancel);
}

/* Sleeps ms milliseconds, or less when the operation is cancelled
 * meanwhile: then -ECANCELED. */
int session_sleep(struct session *s, unsigned ms);

/* Replaces *err (if any) with "<what>: cancelled"; returns -ECANCELED. */
int session_cancelled_error(const char *what, struct kiln_error **err);

/* Whether an HTTP status is worth a later retry (5xx, as buildkit's
 * retry handler). */
static inline bool status_is_retryable(long status)
{
        return status >= 500 && status <= 599;
}

/* Failures of one operation across hosts, for the final message. */
struct host_errors {
        char *items[HOST_ERRORS_MAX];
        size_t n;
        bool retryable; /* the last host's failure was a 5xx or transient */
        int code;       /* of the last failure */
};
void host_errors_add(struct host_errors *he, const char *url, const char *what);
/* Sets *err to "<what>: <url>: <error>; <url>: <error>" (one host: no
 * list wording). Returns the code. */
int host_errors_finish(struct host_errors *he, const char *what, struct kiln_error **err);
void host_errors_release(struct host_errors *he);

/* ---- shared by pull.c and push.c ---- */

/* A manifest or index by digest into store (from the store when there),
 * its bytes in *out (a buffer limited to KILN_CONTENT_LIMIT_MANIFEST). */
int fetch_document(struct session *s, struct kiln_content_store *store, const char *digest,
                   const char *media_type, int64_t size, struct kiln_buf *out,
                   struct kiln_error **err);
/* A blob into store (not downloaded when there: *cached). */
int fetch_blob(struct session *s, struct kiln_content_store *store,
               const struct kiln_content_descriptor *d, uint64_t *downloaded, bool *cached,
               struct kiln_error **err);
/* Blobs in parallel (threads up to the connection limit + 1); the first
 * failure stops the rest. Counters are added to (may be NULL). */
int fetch_blobs(struct session *s, struct kiln_content_store *store,
                const struct kiln_content_descriptor **descs, size_t n, uint64_t *downloaded,
                unsigned *n_downloaded, unsigned *n_cached, struct kiln_error **err);
/* Pull on an open session. */
int pull_session(struct session *s, struct kiln_content_store *store,
                 const struct kiln_registry_pull_options *o, struct kiln_registry_pull_result *ret,
                 struct kiln_error **err);
