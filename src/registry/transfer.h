/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The transfer manager: every HTTP request kiln makes to a registry (and to
 * its token servers and blob storage) goes through one of these, one per
 * daemon, so the per-registry limits hold across every build at once.
 *
 * One thread runs a libcurl multi handle (curl's 10-at-a-time model); other
 * threads submit transfers (kiln_registry_transfer_start) and wait for them
 * (kiln_registry_transfer_wait) or get a callback when they end.
 *
 * The connection limit (DESIGN.md scenario 5; buildkit's
 * util/resolver/limited, made a real TCP limit): per host (host:port of the
 * request URL; a mirror and its origin each have their own budget) at most
 * N transfers of class LAYER run at once, and at most N + 1 in all, so the
 * one extra slot is only ever taken by METADATA (manifests, indexes,
 * configs, tag resolution, tokens). A transfer waits in the manager, in
 * FIFO order per class and host, until its class may run; metadata is
 * admitted first and never waits behind queued layers. curl's own per-host
 * connection cap (CURLMOPT_MAX_HOST_CONNECTIONS) is set to N + 1 as well,
 * so the limit is on real TCP connections, not only on transfers. The slot
 * is held from admission to the end of the transfer (body included).
 *
 * Every transfer speaks HTTP/1.1 (buildkitd disables HTTP/2: push throughput
 * suffers under h2 flow control), follows at most KILN_REGISTRY_MAX_REDIRECTS
 * redirects when asked (an Authorization header is never sent to another
 * host), honours the proxy environment variables as Go's
 * ProxyFromEnvironment does, and uses the TLS settings it is given: extra
 * CAs on top of the system roots (a bundle of both, built once per set of
 * files), a client certificate, or no verification.
 *
 * Debug logs (buildkitd's, from containerd's request.do): at submission
 * "do request" with request.method, request.header.<name> (never
 * Authorization), the sanitised url, spanID (new for each transfer) and the
 * caller's traceID and fields; when the final response's headers are in,
 * "fetch response received" with response.status ("200 OK") and
 * response.header.<name>[.N], secrets redacted (redact.h).
 *
 * Thread safety: every function may be called from any thread; a transfer
 * object is owned by the thread that started it. The manager's lock
 * (kiln_registry_transfer_manager.lock) guards the submission queue, the
 * per-host slot accounting and each transfer's completion state; it is
 * never held while curl runs or while callbacks run. on_response and done
 * run on the manager's thread: they must be quick and must not wait for
 * other transfers. A sink runs on the thread in kiln_registry_transfer_wait:
 * the manager queues body bytes for it (at most a few MiB; past that curl
 * pauses the transfer until the waiter catches up), so writing and hashing
 * blobs never hold up other transfers. A transfer with a sink must be
 * waited for.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"
#include "registry/hosts.h"

/* Redirects followed per request, as Go's http.Client. */
#define KILN_REGISTRY_MAX_REDIRECTS 10
/* Bytes of response headers (status line and every header of every
 * response, redirects included) and headers in one response. */
#define KILN_LIMIT_REGISTRY_RESPONSE_HEADERS      (1u << 20)
#define KILN_LIMIT_REGISTRY_RESPONSE_HEADER_COUNT 256u
/* What is kept of an error response's body (the rest is read and dropped). */
#define KILN_LIMIT_REGISTRY_ERROR_BODY (64u << 10)
/* Extra log fields a caller may attach to a request. */
#define KILN_LIMIT_REGISTRY_LOG_FIELDS 8u
/* buildkitd's transport: dial timeout 30 s. */
#define KILN_REGISTRY_CONNECT_TIMEOUT_MS 30000
/* No response byte for this long fails a transfer (Go has no such timeout;
 * a hung registry would hang a build forever). */
#define KILN_REGISTRY_STALL_TIMEOUT_SEC 60
/* The default N of the connection limit ([system] maxRegistryConcurrency). */
#define KILN_REGISTRY_DEFAULT_MAX_CONCURRENCY 4

enum kiln_registry_transfer_class {
        KILN_REGISTRY_TRANSFER_METADATA, /* may take the host's extra slot */
        KILN_REGISTRY_TRANSFER_LAYER,    /* at most N per host */
        _KILN_REGISTRY_TRANSFER_CLASS_MAX,
};

/* Media types ending in "+json" are metadata, as in buildkit's limited. */
enum kiln_registry_transfer_class kiln_registry_transfer_class_of(const char *media_type);

struct kiln_registry_header {
        char *name;
        char *value;
};

struct kiln_registry_transfer_manager;
struct kiln_registry_transfer;

struct kiln_registry_transfer_response {
        long status;       /* 0 when no HTTP response arrived */
        char *status_text; /* "200 OK": the reason phrase as sent, else Go's text */
        struct kiln_registry_header *headers; /* the final response's, in order */
        size_t n_headers;
        int64_t content_length; /* -1 when unknown */
        /* The body of an error response (status outside 2xx), cut at
         * KILN_LIMIT_REGISTRY_ERROR_BODY; of a 2xx response without a sink,
         * all of it (up to the request's body_max). */
        struct kiln_buf body;
        uint64_t body_received; /* bytes of the final body, kept or not */
        char *effective_url;    /* after redirects */
        /* Transport outcome: 0 (CURLE_OK) or a CURLcode, with curl's
         * message and its detail ("Failed to connect to ...: Connection
         * refused"). A sink or on_response failure is reported as the
         * callback's own error instead (callback_failed). */
        int curl_code;
        char *transport_error;
        bool callback_failed;
        struct kiln_error *callback_error;
};

/* The value of the first header called name (any case), or NULL. */
const char *kiln_registry_transfer_response_header(const struct kiln_registry_transfer_response *r,
                                                   const char *name);

/* Called with the final response's status and headers before any body
 * byte; a negative return aborts the transfer with *err. */
typedef int (*kiln_registry_transfer_response_fn)(void *userdata,
                                                  const struct kiln_registry_transfer_response *r,
                                                  struct kiln_error **err);
/* Receives the body of a 2xx final response, in order, on the thread
 * waiting for the transfer; a negative return stops the transfer, which
 * then reports *err (callback_failed). */
typedef int (*kiln_registry_transfer_sink_fn)(void *userdata, const void *p, size_t n,
                                              struct kiln_error **err);
/* Called on the manager's thread once the transfer is over (before any
 * waiter wakes; body bytes may still be queued for the sink). */
typedef void (*kiln_registry_transfer_done_fn)(void *userdata, struct kiln_registry_transfer *t);

/*
 * What to send. Everything is copied by kiln_registry_transfer_start except
 * the userdata pointers and body_fd, which must stay valid until the
 * transfer is over.
 */
struct kiln_registry_transfer_request {
        const char *method; /* GET HEAD PUT POST PATCH DELETE */
        const char *url;
        enum kiln_registry_transfer_class klass;
        /* Budget key; NULL: host:port of url. */
        const char *slot_host;
        const struct kiln_registry_header *headers; /* logged (secrets redacted) */
        size_t n_headers;
        /* "Bearer ..." or "Basic ...": sent, never logged, wiped after. */
        const char *authorization;
        const struct kiln_registry_tls *tls; /* NULL: system roots */
        bool follow_redirects;

        /* Request body: from memory (body, body_len), or body_len bytes of
         * body_fd from body_offset (read with pread, so retries rewind).
         * has_body with body_len 0 sends an empty body. */
        bool has_body;
        const void *body;
        int body_fd;
        uint64_t body_offset;
        uint64_t body_len;
        /* Wipe the copy of a memory body after the transfer (it holds a
         * secret: the OAuth form). */
        bool body_secret;

        /* Response body of 2xx answers: to sink, or kept in
         * response.body up to body_max bytes (more is an -E2BIG error,
         * checked against Content-Length before the body). */
        kiln_registry_transfer_sink_fn sink;
        size_t body_max;
        kiln_registry_transfer_response_fn on_response;
        void *userdata;
        kiln_registry_transfer_done_fn done;
        void *done_userdata;
        /* When this becomes true the manager ends the transfer as
         * kiln_registry_transfer_cancel does (read on the manager's thread:
         * kiln_registry_transfer_manager_wake makes it look at once). NULL:
         * never. Must stay valid until the transfer is over. */
        const atomic_bool *cancel;

        /* Logging: the trace (32 hex digits, NULL for none) and up to
         * KILN_LIMIT_REGISTRY_LOG_FIELDS more fields (digest, mediatype...). */
        const char *trace_id;
        const struct kiln_log_field *log_fields;
        size_t n_log_fields;
};

struct kiln_registry_transfer_manager_options {
        /* N: layer transfers per host; 0 means the default (4). */
        unsigned max_concurrency;
        /* Fails a transfer that receives nothing for this long; 0: default. */
        unsigned stall_timeout_sec;
        /* "kiln/<version>" when NULL. */
        const char *user_agent;
};

/* Starts the manager's thread. */
int kiln_registry_transfer_manager_new(const struct kiln_registry_transfer_manager_options *o,
                                       struct kiln_registry_transfer_manager **ret,
                                       struct kiln_error **err);
/* Cancels what is still queued or running (their waiters get -ECANCELED),
 * stops the thread and frees the manager. Transfers their owners still
 * hold stay valid (over, for _wait, _cancel and _free); no call on them may
 * run while this does. */
struct kiln_registry_transfer_manager *
kiln_registry_transfer_manager_free(struct kiln_registry_transfer_manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_registry_transfer_manager *,
                            kiln_registry_transfer_manager_free);

/* Makes the manager's thread look at the cancel flags of its transfers
 * now. Thread safe. */
void kiln_registry_transfer_manager_wake(struct kiln_registry_transfer_manager *m);

unsigned
kiln_registry_transfer_manager_max_concurrency(const struct kiln_registry_transfer_manager *m);
const char *
kiln_registry_transfer_manager_user_agent(const struct kiln_registry_transfer_manager *m);

/* Queues a request; returns 0 and *ret (owned by the caller: wait, then
 * free). Fails only for an unusable request (bad URL, unreadable CA file). */
int kiln_registry_transfer_start(struct kiln_registry_transfer_manager *m,
                                 const struct kiln_registry_transfer_request *req,
                                 struct kiln_registry_transfer **ret, struct kiln_error **err);

/* Blocks until the transfer is over, feeding its body to the sink on the
 * way, and returns its response (owned by t). The response says what
 * happened: a status, a transport error or a callback's error; -ECANCELED
 * when it was cancelled. May be called again: it then returns at once. */
int kiln_registry_transfer_wait(struct kiln_registry_transfer *t,
                                const struct kiln_registry_transfer_response **ret);

/* Asks for the transfer to end (it may already have). */
void kiln_registry_transfer_cancel(struct kiln_registry_transfer *t);

/* Cancels it if running, waits for it to end, frees it. */
struct kiln_registry_transfer *kiln_registry_transfer_free(struct kiln_registry_transfer *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_registry_transfer *, kiln_registry_transfer_free);

/* The span ID (16 hex digits) of this transfer's log lines. */
const char *kiln_registry_transfer_span_id(const struct kiln_registry_transfer *t);

/* Counters for tests and benchmarks: the most transfers of host that were
 * ever running at once (all classes, and layers only). 0 for an unknown
 * host. */
void kiln_registry_transfer_manager_peak(struct kiln_registry_transfer_manager *m, const char *host,
                                         unsigned *ret_total, unsigned *ret_layers);

/* n random bytes as lower-case hex into out[2n + 1] (trace and span IDs). */
void kiln_registry_random_hex(char *out, size_t n);

/* Go's http.StatusText for code, or "" when unknown. */
const char *kiln_registry_http_status_text(long code);

void kiln_registry_transfer_response_release(struct kiln_registry_transfer_response *r);
