/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Long operations and their streams (daemon-internal.h, "operations").
 *
 * The loop thread owns the list, the references, the MHD connection and
 * the epoll registrations; the worker thread owns nothing but what it
 * writes under op->lock (the event queue, the answer, done). Wakeups are
 * coalesced: a worker writes wake_fd only when the loop has not yet seen
 * its previous news (op->notified).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>

#include "api/api.h"
#include "base/clock.h"
#include "base/log.h"
#include "daemon-internal.h"
#include "export.h"
#include "registry/registry.h"

/* How often a raw stream's blocked worker looks at its cancel flags. */
#define RAW_WAIT_POLL_MS 100

struct kiln_daemon_op {
        struct kiln_daemon_source hangup_source; /* first: KILN_DAEMON_SOURCE_HANGUP */
        struct kiln_daemon *d;
        struct kiln_daemon_op *next;
        unsigned id;
        char *what;
        char *ref;
        bool stream;
        bool raw; /* a byte stream (kiln_daemon_op_write), not NDJSON */
        char *raw_content_type;
        bool counted; /* against KILN_DAEMON_MAX_OPERATIONS */
        kiln_daemon_op_fn fn;
        void *args;
        void (*args_free)(void *args);
        int64_t started_ms;
        atomic_bool cancel;             /* stop working: the client is gone or the daemon stops */
        atomic_bool gone;               /* the client is gone: queue nothing more */
        const atomic_bool *also_cancel; /* raw: kiln_daemon_op_link_cancel */

        /* Loop thread only. */
        unsigned refs;
        pthread_t thread;
        bool running;                /* the thread exists and is not joined yet */
        struct MHD_Connection *conn; /* NULL once the request is over */
        bool suspended;
        int watch_fd; /* conn's socket in the daemon's epoll set, or -1 */
        bool hangup;

        pthread_mutex_t lock;  /* guards everything below */
        struct kiln_buf queue; /* events not yet handed to MHD, from queue_off */
        size_t queue_off;
        bool overflow;          /* the hard limit was passed: the stream is cut */
        unsigned dropped;       /* progress events dropped for a slow reader */
        bool done;              /* the worker queued its last event or set its answer */
        bool failed;            /* raw: the worker failed; the answer is cut */
        pthread_cond_t drained; /* raw: the loop took bytes, or cancel */
        bool notified;          /* wake_fd was written and the loop has not looked yet */
        char *digest;
        json_t *error_extra; /* members added to the error event */
        unsigned status;
        char *content_type;
        char *body;
        size_t body_len;
        char *header_name;
        char *header_value;
};

/* Go's time.Duration.String, at millisecond precision: "87ms", "1.5s". */
static void format_duration(int64_t ms, char *out, size_t size)
{
        size_t n;

        if (ms < 1000) {
                (void) snprintf(out, size, "%" PRId64 "ms", ms < 0 ? 0 : ms);
                return;
        }
        (void) snprintf(out, size, "%" PRId64 ".%03" PRId64, ms / 1000, ms % 1000);
        n = strlen(out);
        while (out[n - 1] == '0')
                out[--n] = '\0';
        if (out[n - 1] == '.')
                out[--n] = '\0';
        (void) snprintf(out + n, size - n, "s");
}

static struct kiln_daemon_op *op_ref(struct kiln_daemon_op *op)
{
        op->refs++;
        return op;
}

static void op_unref(struct kiln_daemon_op *op)
{
        if (!op || --op->refs > 0)
                return;
        if (op->args_free)
                op->args_free(op->args);
        kiln_buf_release(&op->queue);
        pthread_cond_destroy(&op->drained);
        pthread_mutex_destroy(&op->lock);
        free(op->raw_content_type);
        json_decref(op->error_extra);
        free(op->what);
        free(op->ref);
        free(op->digest);
        free(op->content_type);
        free(op->body);
        free(op->header_name);
        free(op->header_value);
        free(op);
}

/* Worker side: tells the loop there is news, once until it looks. */
static void op_notify_locked(struct kiln_daemon_op *op, bool *need)
{
        *need = !op->notified;
        op->notified = true;
}

static void op_wake(struct kiln_daemon_op *op)
{
        uint64_t one = 1;

        /* An eventfd write fails only when the counter would overflow,
         * which means the loop has plenty to read already. */
        (void) !write(op->d->wake_fd, &one, sizeof(one));
}

struct kiln_daemon *kiln_daemon_op_daemon(struct kiln_daemon_op *op)
{
        return op->d;
}

bool kiln_daemon_op_cancelled(struct kiln_daemon_op *op)
{
        return atomic_load(&op->cancel);
}

const atomic_bool *kiln_daemon_op_cancel_flag(struct kiln_daemon_op *op)
{
        return &op->cancel;
}

static void op_queue(struct kiln_daemon_op *op, const char *line, size_t len, bool droppable)
{
        bool need = false;
        size_t pending;

        if (atomic_load(&op->gone))
                return; /* nobody reads any more */
        pthread_mutex_lock(&op->lock);
        pending = op->queue.len - op->queue_off;
        if (op->overflow || op->done) {
                pthread_mutex_unlock(&op->lock);
                return;
        }
        if (droppable && pending + len > KILN_DAEMON_STREAM_SOFT_LIMIT) {
                op->dropped++;
                pthread_mutex_unlock(&op->lock);
                return;
        }
        if (op->queue_off > 0 && op->queue_off >= op->queue.len / 2) {
                memmove(op->queue.data, op->queue.data + op->queue_off, pending);
                op->queue.len = pending;
                op->queue.data[pending] = '\0';
                op->queue_off = 0;
        }
        if (kiln_buf_append(&op->queue, line, len) < 0)
                op->overflow = true;
        op_notify_locked(op, &need);
        pthread_mutex_unlock(&op->lock);
        if (need)
                op_wake(op);
}

void kiln_daemon_op_emit_json(struct kiln_daemon_op *op, const json_t *event, bool droppable)
{
        _cleanup_free_ char *line = NULL;
        size_t len = 0;

        if (!op->stream)
                return;
        line = kiln_api_json_dump(event, &len);
        if (!line) {
                /* Out of memory: the stream cannot be trusted any more. */
                pthread_mutex_lock(&op->lock);
                op->overflow = true;
                pthread_mutex_unlock(&op->lock);
                op_wake(op);
                return;
        }
        op_queue(op, line, len, droppable);
}

/* Waits on drained for at most RAW_WAIT_POLL_MS. Under op->lock. */
static void raw_wait_locked(struct kiln_daemon_op *op)
{
        struct timespec until = kiln_mono_deadline(RAW_WAIT_POLL_MS);

        (void) pthread_cond_timedwait(&op->drained, &op->lock, &until);
}

static bool raw_stopped(struct kiln_daemon_op *op)
{
        return atomic_load(&op->cancel) || atomic_load(&op->gone) ||
               (op->also_cancel && atomic_load(op->also_cancel));
}

void kiln_daemon_op_link_cancel(struct kiln_daemon_op *op, const atomic_bool *flag)
{
        op->also_cancel = flag;
}

int kiln_daemon_op_write(void *userdata, const void *buf, size_t n, struct kiln_error **err)
{
        struct kiln_daemon_op *op = userdata;
        const char *p = buf;

        while (n > 0) {
                size_t piece = n < KILN_DAEMON_RAW_PIECE ? n : KILN_DAEMON_RAW_PIECE;
                bool need = false;
                size_t pending;
                int r = 0;

                pthread_mutex_lock(&op->lock);
                for (;;) {
                        if (raw_stopped(op)) {
                                r = -ECANCELED;
                                break;
                        }
                        pending = op->queue.len - op->queue_off;
                        if (pending <= KILN_DAEMON_RAW_HIGH_WATER)
                                break;
                        raw_wait_locked(op);
                }
                if (r < 0) {
                        pthread_mutex_unlock(&op->lock);
                        return kiln_error_set(err, r, "the download was abandoned");
                }
                if (op->queue_off > 0) {
                        memmove(op->queue.data, op->queue.data + op->queue_off, pending);
                        op->queue.len = pending;
                        op->queue_off = 0;
                }
                if (kiln_buf_append(&op->queue, p, piece) < 0) {
                        pthread_mutex_unlock(&op->lock);
                        return kiln_error_set(err, -ENOMEM, "queue %zu bytes for the client",
                                              piece);
                }
                op_notify_locked(op, &need);
                pthread_mutex_unlock(&op->lock);
                if (need)
                        op_wake(op);
                p += piece;
                n -= piece;
        }
        return 0;
}

int kiln_daemon_op_flush(struct kiln_daemon_op *op, struct kiln_error **err)
{
        int r = 0;

        pthread_mutex_lock(&op->lock);
        while (op->queue.len > op->queue_off) {
                if (raw_stopped(op)) {
                        r = -ECANCELED;
                        break;
                }
                raw_wait_locked(op);
        }
        pthread_mutex_unlock(&op->lock);
        if (r < 0)
                return kiln_error_set(err, r, "the download was abandoned");
        return 0;
}

static enum kiln_api_event_type api_event_type(enum kiln_registry_event_kind k)
{
        switch (k) {
        case KILN_REGISTRY_EVENT_RESOLVING:
                return KILN_API_EVENT_RESOLVING;
        case KILN_REGISTRY_EVENT_RESOLVED:
                return KILN_API_EVENT_RESOLVED;
        case KILN_REGISTRY_EVENT_BLOB_STARTED:
                return KILN_API_EVENT_BLOB_STARTED;
        case KILN_REGISTRY_EVENT_BLOB_PROGRESS:
                return KILN_API_EVENT_BLOB_PROGRESS;
        case KILN_REGISTRY_EVENT_BLOB_DONE:
                return KILN_API_EVENT_BLOB_DONE;
        case KILN_REGISTRY_EVENT_BLOB_CACHED:
                return KILN_API_EVENT_BLOB_CACHED;
        case KILN_REGISTRY_EVENT_BLOB_EXISTS:
                return KILN_API_EVENT_BLOB_EXISTS;
        case KILN_REGISTRY_EVENT_BLOB_MOUNTED:
                return KILN_API_EVENT_BLOB_MOUNTED;
        case KILN_REGISTRY_EVENT_RETRY:
                return KILN_API_EVENT_RETRY;
        case KILN_REGISTRY_EVENT_ERROR:
                return KILN_API_EVENT_BLOB_ERROR;
        case _KILN_REGISTRY_EVENT_KIND_MAX:
                break;
        }
        return _KILN_API_EVENT_TYPE_INVALID;
}

void kiln_daemon_op_registry_event(void *userdata, const struct kiln_registry_event *rev)
{
        struct kiln_daemon_op *op = userdata;
        enum kiln_api_event_type t = api_event_type(rev->kind);
        char now[KILN_API_TIME_SIZE];
        struct kiln_api_event ev;
        json_t *j = NULL;

        if (t < 0 || !op->stream || atomic_load(&op->gone))
                return;
        kiln_api_time_now(now);
        ev = (struct kiln_api_event){
                .type = t,
                .time = now,
                .ref = rev->ref,
                .digest = rev->digest,
                .media_type = rev->media_type,
                /* The registry passes 0 where a size means nothing. */
                .size = t == KILN_API_EVENT_RESOLVING || t == KILN_API_EVENT_RETRY ? -1 : rev->size,
                .current = rev->current,
                .message = rev->message,
        };
        if (kiln_api_event_to_json(&ev, &j) < 0)
                return;
        kiln_daemon_op_emit_json(op, j, t == KILN_API_EVENT_BLOB_PROGRESS);
        json_decref(j);
}

void kiln_daemon_op_set_error_extra(struct kiln_daemon_op *op, const char *key, json_t *value)
{
        pthread_mutex_lock(&op->lock);
        if (!op->error_extra)
                op->error_extra = json_object();
        if (op->error_extra)
                (void) json_object_set_new(op->error_extra, key, value); /* takes value */
        else
                json_decref(value); /* out of memory: the event goes without it */
        pthread_mutex_unlock(&op->lock);
}

void kiln_daemon_op_set_digest(struct kiln_daemon_op *op, const char *digest)
{
        pthread_mutex_lock(&op->lock);
        free(op->digest);
        op->digest = digest ? kiln_xstrdup(digest) : NULL;
        pthread_mutex_unlock(&op->lock);
}

void kiln_daemon_op_set_answer(struct kiln_daemon_op *op, unsigned status, const char *content_type,
                               char *body, size_t len, const char *header_name,
                               const char *header_value)
{
        pthread_mutex_lock(&op->lock);
        free(op->content_type);
        free(op->body);
        free(op->header_name);
        free(op->header_value);
        op->status = status;
        op->content_type = kiln_xstrdup(content_type);
        op->body = body;
        op->body_len = len;
        op->header_name = header_name ? kiln_xstrdup(header_name) : NULL;
        op->header_value = header_value ? kiln_xstrdup(header_value) : NULL;
        pthread_mutex_unlock(&op->lock);
}

unsigned kiln_daemon_op_status_of(int r)
{
        switch (-r) {
        case EINVAL:
        case EOPNOTSUPP:
                return MHD_HTTP_BAD_REQUEST;
        case ENOENT:
                return MHD_HTTP_NOT_FOUND;
        case EACCES:
        case EPERM:
                return MHD_HTTP_FORBIDDEN;
        case ECANCELED:
                return MHD_HTTP_SERVICE_UNAVAILABLE;
        case ENOMEM:
                return MHD_HTTP_INTERNAL_SERVER_ERROR;
        default:
                return MHD_HTTP_BAD_GATEWAY;
        }
}

/* The end of a failed operation: an "error" event, or an error answer. */
static void op_fail(struct kiln_daemon_op *op, int r, const char *message)
{
        if (op->raw) {
                pthread_mutex_lock(&op->lock);
                op->failed = true;
                pthread_mutex_unlock(&op->lock);
                return;
        }
        if (op->stream) {
                char now[KILN_API_TIME_SIZE];
                struct kiln_api_event ev = { .type = KILN_API_EVENT_ERROR, .size = -1 };
                json_t *j = NULL;

                kiln_api_time_now(now);
                ev.time = now;
                ev.error = message;
                if (kiln_api_event_to_json(&ev, &j) >= 0) {
                        pthread_mutex_lock(&op->lock);
                        if (op->error_extra)
                                (void) json_object_update(j, op->error_extra);
                        pthread_mutex_unlock(&op->lock);
                        kiln_daemon_op_emit_json(op, j, false);
                        json_decref(j);
                }
                return;
        }
        {
                size_t len = 0;
                char *body = kiln_api_error_body(message, &len);

                kiln_daemon_op_set_answer(op, kiln_daemon_op_status_of(r),
                                          KILN_API_CONTENT_TYPE_JSON, body, len, NULL, NULL);
        }
}

static void *op_thread(void *p)
{
        struct kiln_daemon_op *op = p;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *digest = NULL;
        char duration[32], id[16];
        unsigned dropped;
        bool need = false;
        int r;

        r = op->fn(op, op->args, &err);
        if (r < 0)
                op_fail(op, r, kiln_error_message(err));

        format_duration(kiln_mono_ms() - op->started_ms, duration, sizeof(duration));
        (void) snprintf(id, sizeof(id), "%u", op->id);
        pthread_mutex_lock(&op->lock);
        digest = op->digest ? kiln_xstrdup(op->digest) : NULL;
        dropped = op->dropped;
        pthread_mutex_unlock(&op->lock);
        if (r >= 0)
                log_info_f(KILN_FIELDS({ "op", id }, { "ref", op->ref },
                                       { "digest", digest ? digest : "" },
                                       { "duration", duration }),
                           "%s done", op->what);
        else if (kiln_daemon_op_cancelled(op))
                log_info_f(KILN_FIELDS({ "op", id }, { "ref", op->ref },
                                       { "error", kiln_error_message(err) },
                                       { "duration", duration }),
                           "%s cancelled", op->what);
        else
                log_info_f(KILN_FIELDS({ "op", id }, { "ref", op->ref },
                                       { "error", kiln_error_message(err) },
                                       { "duration", duration }),
                           "%s failed", op->what);
        if (dropped > 0)
                log_debug_f(KILN_FIELDS({ "op", id }),
                            "dropped %u progress events for a slow client", dropped);

        pthread_mutex_lock(&op->lock);
        op->done = true;
        op_notify_locked(op, &need);
        pthread_mutex_unlock(&op->lock);
        /* Always: the loop joins the thread once done is seen. */
        op_wake(op);
        return NULL;
}

/* ---- the loop side ---- */

static void op_unwatch(struct kiln_daemon_op *op)
{
        if (op->watch_fd < 0)
                return;
        (void) epoll_ctl(op->d->epoll_fd, EPOLL_CTL_DEL, op->watch_fd, NULL);
        op->watch_fd = -1;
}

/* Suspends op's connection until the worker has news, watching its socket
 * for a hang-up meanwhile (MHD does not while it is suspended). */
static void op_suspend(struct kiln_daemon_op *op)
{
        const union MHD_ConnectionInfo *info;
        struct epoll_event ev = { .events = EPOLLRDHUP, .data.ptr = &op->hangup_source };

        MHD_suspend_connection(op->conn);
        op->suspended = true;
        info = MHD_get_connection_info(op->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info && op->watch_fd < 0 &&
            epoll_ctl(op->d->epoll_fd, EPOLL_CTL_ADD, info->connect_fd, &ev) == 0)
                op->watch_fd = info->connect_fd;
}

static void op_resume(struct kiln_daemon_op *op)
{
        if (!op->suspended)
                return;
        op_unwatch(op);
        op->suspended = false;
        MHD_resume_connection(op->conn);
}

static ssize_t op_read(void *cls, uint64_t pos, char *buf, size_t max)
{
        struct kiln_daemon_op *op = cls;
        size_t pending, n;

        if (op->hangup)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        pthread_mutex_lock(&op->lock);
        pending = op->queue.len - op->queue_off;
        if (op->raw && op->failed) {
                /* Cut at once: what is queued is of no use to the client. */
                pthread_mutex_unlock(&op->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (pending > 0) {
                n = pending < max ? pending : max;
                memcpy(buf, op->queue.data + op->queue_off, n);
                op->queue_off += n;
                if (op->queue_off == op->queue.len) {
                        op->queue.len = op->queue_off = 0;
                        op->queue.data[0] = '\0';
                }
                if (op->raw)
                        pthread_cond_broadcast(&op->drained);
                pthread_mutex_unlock(&op->lock);
                return (ssize_t) n;
        }
        if (op->overflow) {
                pthread_mutex_unlock(&op->lock);
                log_info_f(KILN_FIELDS({ "ref", op->ref }),
                           "%s: the client reads too slowly, cutting its stream", op->what);
                return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (op->done) {
                pthread_mutex_unlock(&op->lock);
                return MHD_CONTENT_READER_END_OF_STREAM;
        }
        pthread_mutex_unlock(&op->lock);
        /* Nothing yet. Returning 0 alone would have MHD call again at once
         * (epoll mode keeps the connection in its ready list): suspend, and
         * let the worker's wakeup resume it. */
        op_suspend(op);
        return 0;
}

static void op_response_free(void *cls)
{
        op_unref(cls);
}

/* The registry's sleepers and transfers look at their flags now, not at
 * their next poll. */
static void op_wake_registry(struct kiln_daemon_op *op)
{
        if (op->d && op->d->client)
                kiln_registry_client_wake(op->d->client);
}

/* A raw stream's worker waiting for the client looks at its flags now. */
static void op_wake_writer(struct kiln_daemon_op *op)
{
        if (!op->raw)
                return;
        pthread_mutex_lock(&op->lock);
        pthread_cond_broadcast(&op->drained);
        pthread_mutex_unlock(&op->lock);
}

static void op_cancel(struct kiln_daemon_op *op)
{
        atomic_store(&op->cancel, true);
        op_wake_registry(op);
        op_wake_writer(op);
}

static void op_gone(struct kiln_daemon_op *op)
{
        atomic_store(&op->gone, true);
        atomic_store(&op->cancel, true);
        op_wake_registry(op);
        op_wake_writer(op);
}

static enum MHD_Result op_start(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                struct MHD_Connection *conn, const char *method, const char *url,
                                const struct kiln_daemon_op_spec *spec, const char *raw_type);

enum MHD_Result kiln_daemon_op_start(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                     struct MHD_Connection *conn, const char *method,
                                     const char *url, const struct kiln_daemon_op_spec *spec)
{
        return op_start(d, req, conn, method, url, spec, NULL);
}

enum MHD_Result kiln_daemon_op_start_raw(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                         struct MHD_Connection *conn, const char *method,
                                         const char *url, const struct kiln_daemon_op_spec *spec,
                                         const char *content_type)
{
        return op_start(d, req, conn, method, url, spec, content_type);
}

static enum MHD_Result op_start(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                struct MHD_Connection *conn, const char *method, const char *url,
                                const struct kiln_daemon_op_spec *spec, const char *raw_type)
{
        struct kiln_daemon_op *op;
        struct MHD_Response *resp;
        char id[16];
        int r;

        if (d->stopping) {
                if (spec->args_free)
                        spec->args_free(spec->args);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                 NULL, "the daemon is stopping");
        }
        if (!spec->uncounted && d->n_counted >= KILN_DAEMON_MAX_OPERATIONS) {
                _cleanup_free_ char *msg = kiln_xasprintf(
                        "too many operations in progress (at most %u at once): try again later",
                        KILN_DAEMON_MAX_OPERATIONS);

                if (spec->args_free)
                        spec->args_free(spec->args);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                 NULL, msg);
        }

        op = kiln_xcalloc(1, sizeof(*op));
        op->hangup_source.kind = KILN_DAEMON_SOURCE_HANGUP;
        op->d = d;
        op->id = ++d->next_op_id;
        op->what = kiln_xstrdup(spec->what);
        op->ref = kiln_xstrdup(spec->ref ? spec->ref : "");
        op->stream = spec->stream || raw_type;
        op->raw = raw_type != NULL;
        op->raw_content_type = raw_type ? kiln_xstrdup(raw_type) : NULL;
        op->counted = !spec->uncounted;
        op->fn = spec->fn;
        op->args = spec->args;
        op->args_free = spec->args_free;
        op->started_ms = kiln_mono_ms();
        op->watch_fd = -1;
        op->refs = 1; /* the list's */
        op->queue = KILN_BUF_INIT(op->raw ? KILN_DAEMON_RAW_HIGH_WATER + KILN_DAEMON_RAW_PIECE
                                          : KILN_DAEMON_STREAM_HARD_LIMIT);
        pthread_mutex_init(&op->lock, NULL);
        {
                pthread_condattr_t attr;

                pthread_condattr_init(&attr);
                pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
                pthread_cond_init(&op->drained, &attr);
                pthread_condattr_destroy(&attr);
        }
        atomic_init(&op->cancel, false);
        atomic_init(&op->gone, false);

        (void) snprintf(id, sizeof(id), "%u", op->id);
        log_info_f(KILN_FIELDS({ "op", id }, { "ref", op->ref }), "%s started", op->what);

        /* The worker inherits the loop thread's signal mask (SIGTERM and
         * SIGINT blocked), so stop signals keep going to the signalfd. */
        r = pthread_create(&op->thread, NULL, op_thread, op);
        if (r != 0) {
                _cleanup_free_ char *msg =
                        kiln_xasprintf("start %s: create thread: %s", op->what, strerror(r));

                log_info_f(KILN_FIELDS({ "op", id }, { "error", msg }), "%s failed", op->what);
                op_unref(op);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                 NULL, msg);
        }
        op->running = true;
        d->n_running++;
        if (op->counted)
                d->n_counted++;
        op->next = d->ops;
        d->ops = op;
        op->conn = conn;
        req->op = op_ref(op);

        if (!op->stream) {
                op_suspend(op);
                return MHD_YES;
        }

        resp = MHD_create_response_from_callback(
                MHD_SIZE_UNKNOWN, op->raw ? KILN_DAEMON_RAW_BLOCK : KILN_DAEMON_STREAM_BLOCK,
                op_read, op, op_response_free);
        if (!resp) {
                op_cancel(op);
                return MHD_NO;
        }
        op_ref(op); /* the response's, dropped by op_response_free */
        if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    op->raw ? op->raw_content_type
                                            : KILN_API_CONTENT_TYPE_NDJSON) != MHD_YES ||
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") != MHD_YES) {
                MHD_destroy_response(resp);
                op_cancel(op);
                return MHD_NO;
        }
        log_debug_f(KILN_FIELDS({ "method", method }, { "path", url }, { "status", "200" }),
                    "request");
        if (MHD_queue_response(conn, MHD_HTTP_OK, resp) != MHD_YES) {
                MHD_destroy_response(resp);
                op_cancel(op);
                return MHD_NO;
        }
        MHD_destroy_response(resp);
        return MHD_YES;
}

enum MHD_Result kiln_daemon_op_continue(struct kiln_daemon_request *req,
                                        struct MHD_Connection *conn, const char *method,
                                        const char *url)
{
        struct kiln_daemon_op *op = req->op;
        _cleanup_free_ char *body = NULL, *content_type = NULL, *hname = NULL, *hvalue = NULL;
        const char *headers[3] = { NULL };
        unsigned status;
        size_t len;
        bool done;

        if (op->stream)
                return MHD_YES; /* the response is queued; MHD should not ask */
        if (op->hangup)
                return MHD_NO;
        pthread_mutex_lock(&op->lock);
        done = op->done;
        if (done) {
                status = op->status;
                body = TAKE_PTR(op->body);
                len = op->body_len;
                content_type = TAKE_PTR(op->content_type);
                hname = TAKE_PTR(op->header_name);
                hvalue = TAKE_PTR(op->header_value);
        }
        pthread_mutex_unlock(&op->lock);
        if (!done) {
                op_suspend(op);
                return MHD_YES;
        }
        if (!body)
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                 NULL, "the operation gave no answer");
        if (hname && hvalue) {
                headers[0] = hname;
                headers[1] = hvalue;
        }
        return kiln_daemon_respond(conn, method, url, status,
                                   content_type ? content_type : KILN_API_CONTENT_TYPE_JSON,
                                   TAKE_PTR(body), len, headers);
}

void kiln_daemon_op_request_done(struct kiln_daemon_request *req)
{
        struct kiln_daemon_op *op = req->op;
        bool done;

        if (!op)
                return;
        req->op = NULL;
        op_unwatch(op);
        op->conn = NULL;
        op->suspended = false;
        pthread_mutex_lock(&op->lock);
        done = op->done;
        pthread_mutex_unlock(&op->lock);
        if (!done) {
                char id[16];

                (void) snprintf(id, sizeof(id), "%u", op->id);
                op_gone(op);
                if (!op->d->stopping)
                        log_info_f(KILN_FIELDS({ "op", id }, { "ref", op->ref }),
                                   "%s: the client went away, its result will be dropped",
                                   op->what);
        }
        op_unref(op);
}

void kiln_daemon_ops_hangup(struct kiln_daemon *d, struct kiln_daemon_source *source)
{
        /* source is the first member of its operation. */
        struct kiln_daemon_op *op = (struct kiln_daemon_op *) source;

        op_unwatch(op);
        if (!op->conn)
                return;
        op->hangup = true;
        op_gone(op);
        /* MHD sees the hang-up once it runs the connection again. */
        op_resume(op);
}

static void op_reap(struct kiln_daemon *d, struct kiln_daemon_op *op)
{
        pthread_join(op->thread, NULL);
        op->running = false;
        d->n_running--;
        if (op->counted)
                d->n_counted--;
}

void kiln_daemon_ops_dispatch(struct kiln_daemon *d)
{
        struct kiln_daemon_op **p = &d->ops;

        while (*p) {
                struct kiln_daemon_op *op = *p;
                bool news, done;

                pthread_mutex_lock(&op->lock);
                op->notified = false;
                news = op->queue.len > op->queue_off || op->overflow || op->done;
                done = op->done;
                pthread_mutex_unlock(&op->lock);

                if (op->conn && op->suspended && news)
                        op_resume(op);
                if (done && op->running)
                        op_reap(d, op);
                if (!op->running && !op->conn) {
                        *p = op->next;
                        op_unref(op);
                        continue;
                }
                p = &op->next;
        }
}

void kiln_daemon_ops_cancel(struct kiln_daemon *d)
{
        for (struct kiln_daemon_op *op = d->ops; op; op = op->next)
                op_cancel(op);
}

bool kiln_daemon_ops_idle(struct kiln_daemon *d)
{
        return !d->ops;
}

void kiln_daemon_ops_stop(struct kiln_daemon *d)
{
        kiln_daemon_ops_cancel(d);
        for (struct kiln_daemon_op *op = d->ops; op; op = op->next) {
                if (op->running)
                        op_reap(d, op);
                op_unwatch(op);
                if (op->conn && op->suspended) {
                        op->suspended = false;
                        MHD_resume_connection(op->conn);
                }
        }
}

void kiln_daemon_ops_free(struct kiln_daemon *d)
{
        while (d->ops) {
                struct kiln_daemon_op *op = d->ops;

                d->ops = op->next;
                op_unref(op);
        }
}
