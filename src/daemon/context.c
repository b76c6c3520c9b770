/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The context endpoints of a build (api.h, "Builds"):
 *
 *   POST /v1/build/<id>/context/<name>   the entry list: the transfer is
 *                                        begun and the files the daemon
 *                                        lacks are answered ({"need"})
 *   PUT  /v1/build/<id>/context/<name>   the tar of those files
 *
 * Each step moves the build's local source along its states (daemon-
 * internal.h, kiln_daemon_build_local) under the build's lock. The tar is
 * never held in memory: server.c streams the PUT body into an unnamed file
 * under <root>/local/tmp (opened here, when the headers are in), and a
 * thread applies it as it arrives (receive of source/local.h reads the
 * file up to what has been written); once the body is complete an
 * operation waits for that thread, finishes the transfer, hands the
 * context to the waiting build and answers {"files","bytes"}. A PUT cut
 * short fails the source: its tar was partly applied. The entry list is
 * parsed on a worker thread too: it may hold a million entries.
 *
 * These operations are not counted against the daemon's operation limit:
 * each belongs to a build that is, and one build has at most one of them
 * per local source at a time (the states say so).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>

#include "api/api.h"
#include "base/log.h"
#include "daemon-internal.h"
#include "source/local.h"

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
#define ID_CHARS   "0123456789abcdef"

bool kiln_daemon_build_subpath(const char *url, const char *what, const char **id, size_t *id_len,
                               const char **rest)
{
        static const char prefix[] = KILN_API_PATH_BUILD "/";
        size_t n, what_len = strlen(what);
        const char *p;

        if (strncmp(url, prefix, sizeof(prefix) - 1) != 0)
                return false;
        p = url + sizeof(prefix) - 1;
        n = strcspn(p, "/");
        if (n == 0 || p[n] != '/' || strncmp(p + n + 1, what, what_len) != 0 ||
            p[n + 1 + what_len] != '/')
                return false;
        *id = p;
        *id_len = n;
        *rest = p + n + 1 + what_len + 1;
        return true;
}

/* Splits /v1/build/<id>/context/<name>: id and name are pointers into
 * url with their lengths. */
static bool split_path(const char *url, const char **id, size_t *id_len, const char **name,
                       size_t *name_len)
{
        const char *p;
        size_t n;

        if (!kiln_daemon_build_subpath(url, "context", id, id_len, &p))
                return false;
        n = strlen(p);
        if (n == 0 || strchr(p, '/'))
                return false;
        *name = p;
        *name_len = n;
        return true;
}

bool kiln_daemon_context_path_match(const char *url)
{
        const char *id, *name;
        size_t id_len, name_len;

        return split_path(url, &id, &id_len, &name, &name_len);
}

/* The build and source a context URL names, with the build referenced.
 * Returns 0, or an HTTP status with *message. */
static unsigned lookup(struct kiln_daemon *d, const char *url, struct kiln_daemon_build **ret_b,
                       char **ret_name, char **message)
{
        const char *id, *name;
        size_t id_len, name_len;
        char idbuf[KILN_DAEMON_BUILD_ID_LEN + 1];
        struct kiln_daemon_build *b;

        if (!split_path(url, &id, &id_len, &name, &name_len)) {
                *message = kiln_xasprintf("no such endpoint '%s'", url);
                return MHD_HTTP_NOT_FOUND;
        }
        if (id_len != KILN_DAEMON_BUILD_ID_LEN || strspn(id, ID_CHARS) < id_len) {
                *message = kiln_xasprintf("no build '%.*s'", (int) (id_len > 64 ? 64 : id_len), id);
                return MHD_HTTP_NOT_FOUND;
        }
        if (name_len > KILN_API_LIMIT_CONTEXT_NAME || strspn(name, NAME_CHARS) != name_len) {
                *message = kiln_xasprintf("build '%.*s' did not ask for a context by that name",
                                          (int) id_len, id);
                return MHD_HTTP_NOT_FOUND;
        }
        memcpy(idbuf, id, id_len);
        idbuf[id_len] = '\0';
        b = kiln_daemon_build_find(d, idbuf);
        if (!b) {
                *message = kiln_xasprintf("no build '%s' (it ended, or never existed)", idbuf);
                return MHD_HTTP_NOT_FOUND;
        }
        *ret_b = kiln_daemon_build_ref(b);
        *ret_name = kiln_xstrndup(name, name_len);
        return 0;
}

static const char *state_message(enum kiln_daemon_local_state s)
{
        switch (s) {
        case KILN_DAEMON_LOCAL_REQUESTED:
                return "its entries were not sent yet";
        case KILN_DAEMON_LOCAL_BEGINNING:
                return "its entries are being read";
        case KILN_DAEMON_LOCAL_ENTRIES:
                return "its entries were sent already: send the tar";
        case KILN_DAEMON_LOCAL_UPLOADING:
                return "its tar is being uploaded";
        case KILN_DAEMON_LOCAL_RECEIVING:
                return "its tar is being applied";
        case KILN_DAEMON_LOCAL_DONE:
                return "it is complete";
        case KILN_DAEMON_LOCAL_FAILED:
                return "its transfer failed";
        }
        return "unknown state";
}

/* Under b->lock: the source in one of the states from..to, moved to next;
 * or an HTTP status with *message. */
static unsigned take_state(struct kiln_daemon_build *b, const char *name,
                           enum kiln_daemon_local_state from, enum kiln_daemon_local_state to,
                           enum kiln_daemon_local_state next, struct kiln_daemon_build_local **ret,
                           char **message)
{
        struct kiln_daemon_build_local *l = kiln_daemon_build_local_find(b, name);

        if (!l) {
                *message = kiln_xasprintf("build '%s' did not ask for context '%s'", b->id, name);
                return MHD_HTTP_NOT_FOUND;
        }
        if (b->closed) {
                *message = kiln_xasprintf("build '%s' is over", b->id);
                return MHD_HTTP_CONFLICT;
        }
        if (l->state < from || l->state > to) {
                *message = kiln_xasprintf("context '%s' of build '%s': %s", name, b->id,
                                          state_message(l->state));
                return MHD_HTTP_CONFLICT;
        }
        kiln_daemon_build_local_set_state(b, l, next);
        *ret = l;
        return 0;
}

static unsigned status_of(int r)
{
        switch (-r) {
        case EINVAL:
        case EBADMSG:
        case E2BIG:
        case ENAMETOOLONG:
        case ELOOP:
        case ENOTDIR:
        case EEXIST:
                return MHD_HTTP_BAD_REQUEST;
        case ESTALE:
                return MHD_HTTP_CONFLICT;
        case ECANCELED:
                return MHD_HTTP_SERVICE_UNAVAILABLE;
        default:
                return MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
}

static void answer_json(struct kiln_daemon_op *op, json_t *j)
{
        size_t len = 0;
        char *body = kiln_api_json_dump(j, &len);

        kiln_daemon_op_set_answer(op, MHD_HTTP_OK, KILN_API_CONTENT_TYPE_JSON, body, len, NULL,
                                  NULL);
}

static void answer_error(struct kiln_daemon_op *op, int r, const char *message)
{
        size_t len = 0;
        char *body = kiln_api_error_body(message, &len);

        kiln_daemon_op_set_answer(op, status_of(r), KILN_API_CONTENT_TYPE_JSON, body, len, NULL,
                                  NULL);
}

/* ---- POST: the entries ---- */

struct entries_args {
        struct kiln_daemon_build *b;
        char *name;
        struct kiln_buf body;
        bool ran; /* the worker ran (set before the thread is joined) */
};

static void entries_args_free(void *p)
{
        struct entries_args *a = p;

        if (!a->ran) {
                /* The operation never started: the client may try again. */
                struct kiln_daemon_build_local *l;

                pthread_mutex_lock(&a->b->lock);
                l = kiln_daemon_build_local_find(a->b, a->name);
                if (l && l->state == KILN_DAEMON_LOCAL_BEGINNING && !a->b->closed)
                        kiln_daemon_build_local_set_state(a->b, l, KILN_DAEMON_LOCAL_REQUESTED);
                pthread_mutex_unlock(&a->b->lock);
        }
        kiln_daemon_build_unref(a->b);
        free(a->name);
        kiln_buf_release(&a->body);
        free(a);
}

static int parse_body(const struct kiln_buf *body, json_t **ret, struct kiln_error **err)
{
        json_error_t jerr;

        if (body->len == 0)
                return kiln_error_set(err, -EINVAL,
                                      "the request has no body: a JSON object is expected");
        *ret = json_loadb(body->data, body->len, JSON_REJECT_DUPLICATES, &jerr);
        if (!*ret)
                return kiln_error_set(err, -EINVAL, "invalid JSON body: %d:%d: %s", jerr.line,
                                      jerr.column, jerr.text);
        return 0;
}

static int begin_transfer(struct kiln_daemon *d, const char *key, const json_t *j,
                          struct kiln_source_local_transfer **ret, struct kiln_error **err)
{
        struct kiln_api_context_entry *entries = NULL;
        struct kiln_source_local_entry *le = NULL;
        size_t n = 0;
        int r;

        r = kiln_api_context_entries_from_json(j, &entries, &n, err);
        if (r < 0)
                return r;
        le = kiln_xcalloc(n + 1, sizeof(*le));
        for (size_t i = 0; i < n; i++)
                le[i] = (struct kiln_source_local_entry){
                        .path = entries[i].path,
                        .mode = entries[i].mode,
                        .size = entries[i].size,
                        .mtime_ns = entries[i].mtime_ns,
                        .uid = entries[i].uid,
                        .gid = entries[i].gid,
                        .link = entries[i].link,
                };
        r = kiln_source_local_transfer_begin(d->locals, key, le, n, ret, err);
        free(le);
        kiln_api_context_entries_free(entries, n);
        return r;
}

/* The client's probe: when the daemon's copy is the list the digest
 * names, the context is complete at once; else the digest is kept for the
 * entries that come next. */
static int probe(struct kiln_daemon_op *op, struct entries_args *a, const char *key,
                 const json_t *j)
{
        struct kiln_daemon_build *b = a->b;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *digest = NULL;
        struct kiln_source_local_context *ctx = NULL;
        struct kiln_daemon_build_local *l;
        json_t *answer = NULL;
        int r;

        r = kiln_api_context_probe_from_json(j, &digest, &err);
        if (r >= 0)
                r = kiln_source_local_context_open_digest(b->d->locals, key, digest, &ctx, &err);
        pthread_mutex_lock(&b->lock);
        l = kiln_daemon_build_local_find(b, a->name);
        if (r >= 0 && b->closed)
                r = kiln_error_set(&err, -ECANCELED, "build '%s' is over", b->id);
        if (r >= 0 && kiln_api_context_unchanged_to_json(r == 1, &answer) < 0)
                r = kiln_error_set(&err, -ENOMEM, "out of memory");
        if (r == 1) {
                log_debug_f(KILN_FIELDS({ "build", b->id }, { "name", a->name }),
                            "context unchanged since its last transfer");
                l->context = TAKE_PTR(ctx);
                l->bytes = 0;
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_DONE);
                answer_json(op, answer);
        } else if (r == 0) {
                free(l->digest);
                l->digest = TAKE_PTR(digest);
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_REQUESTED);
                answer_json(op, answer);
        } else {
                if (!b->closed)
                        kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_REQUESTED);
                answer_error(op, r, kiln_error_message(err));
        }
        pthread_mutex_unlock(&b->lock);
        ctx = kiln_source_local_context_unref(ctx);
        json_decref(answer);
        return 0;
}

static int entries_run(struct kiln_daemon_op *op, void *args, struct kiln_error **unused)
{
        struct entries_args *a = args;
        struct kiln_daemon_build *b = a->b;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_source_local_transfer_freep) struct kiln_source_local_transfer *t = NULL;
        struct kiln_daemon_build_local *l;
        const char *const *need = NULL;
        _cleanup_free_ char *key = NULL;
        size_t n_need;
        json_t *j = NULL;
        int r;

        a->ran = true;
        pthread_mutex_lock(&b->lock);
        l = kiln_daemon_build_local_find(b, a->name);
        key = kiln_xstrdup(l->key);
        pthread_mutex_unlock(&b->lock);

        r = parse_body(&a->body, &j, &err);
        kiln_buf_release(&a->body);
        if (r >= 0 && json_object_get(j, "digest") && !json_object_get(j, "entries")) {
                r = probe(op, a, key, j);
                json_decref(j);
                return r;
        }
        if (r >= 0)
                r = begin_transfer(b->d, key, j, &t, &err);
        json_decref(j);
        j = NULL;

        pthread_mutex_lock(&b->lock);
        if (r >= 0 && l->digest)
                kiln_source_local_transfer_set_digest(t, l->digest);
        if (r >= 0 && b->closed) {
                r = kiln_error_set(&err, -ECANCELED, "build '%s' is over", b->id);
        } else if (r >= 0) {
                n_need = kiln_source_local_transfer_needed(t, &need);
                if (kiln_api_context_need_to_json(need, n_need, &j) < 0)
                        r = kiln_error_set(&err, -ENOMEM, "out of memory");
        }
        if (r >= 0) {
                /* The transfer is the build's now; need points into it, and
                 * the answer is built from it before the lock goes. */
                l->transfer = TAKE_PTR(t);
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_ENTRIES);
                answer_json(op, j);
        } else {
                /* The client may post the entries again. */
                if (!b->closed)
                        kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_REQUESTED);
                answer_error(op, r, kiln_error_message(err));
        }
        pthread_mutex_unlock(&b->lock);
        json_decref(j);
        if (r < 0)
                log_info_f(KILN_FIELDS({ "build", b->id }, { "name", a->name },
                                       { "error", kiln_error_message(err) }),
                           "context entries refused");
        return 0;
}

/* ---- PUT: the tar ---- */

/* The tar applied while it arrives: the thread reads fd up to `written`,
 * waiting for more until the body is complete (or the upload aborted). */
struct upload_stream {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* more written, complete, or aborted */
        uint64_t written;
        bool complete;
        bool aborted;
        atomic_bool cancel;
        int fd;          /* its own descriptor of the upload file */
        uint64_t offset; /* read so far: the thread's */
        struct kiln_source_local_transfer *transfer;
        pthread_t thread;
        bool started;
        /* The thread's outcome, read once it is joined. */
        int r;
        struct kiln_error *err;
        struct kiln_source_local_receive_stats stats;
};

static ssize_t stream_read(void *userdata, void *buf, size_t n)
{
        struct upload_stream *s = userdata;
        uint64_t avail;
        ssize_t k;

        pthread_mutex_lock(&s->lock);
        while (s->offset == s->written && !s->complete && !s->aborted)
                pthread_cond_wait(&s->cond, &s->lock);
        avail = s->written - s->offset;
        if (s->aborted) {
                pthread_mutex_unlock(&s->lock);
                return -ECANCELED;
        }
        pthread_mutex_unlock(&s->lock);
        if (avail == 0)
                return 0; /* complete */
        do
                k = pread(s->fd, buf, avail < n ? (size_t) avail : n, (off_t) s->offset);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        if (k == 0)
                return -EIO; /* written, yet not there */
        s->offset += (uint64_t) k;
        return k;
}

static void *stream_main(void *userdata)
{
        struct upload_stream *s = userdata;

        s->r = kiln_source_local_transfer_receive(s->transfer, stream_read, s, &s->cancel,
                                                  &s->stats, &s->err);
        return NULL;
}

/* The body is complete (or, aborted, never will be): the thread reads the
 * rest, or stops. */
static void stream_end(struct upload_stream *s, bool aborted)
{
        pthread_mutex_lock(&s->lock);
        if (aborted) {
                s->aborted = true;
                atomic_store(&s->cancel, true);
        } else
                s->complete = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

static void stream_join(struct upload_stream *s)
{
        if (s->started) {
                (void) pthread_join(s->thread, NULL);
                s->started = false;
        }
}

static struct upload_stream *stream_free(struct upload_stream *s)
{
        if (!s)
                return NULL;
        if (s->started) {
                stream_end(s, true);
                stream_join(s);
        }
        kiln_source_local_transfer_free(s->transfer);
        kiln_error_free(s->err);
        if (s->fd >= 0)
                (void) close(s->fd);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
}

/* Takes the transfer and starts applying what fd will hold. NULL when no
 * thread starts (the transfer stays the caller's). */
static struct upload_stream *stream_start(struct kiln_source_local_transfer **transfer, int fd)
{
        struct upload_stream *s = kiln_xcalloc(1, sizeof(*s));

        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        s->transfer = *transfer;
        if (s->fd < 0 || pthread_create(&s->thread, NULL, stream_main, s) != 0) {
                s->transfer = NULL;
                return stream_free(s);
        }
        s->started = true;
        *transfer = NULL;
        return s;
}

/* The source of b named name fails with the reason (an upload cut short
 * has been partly applied: no other tar can follow it). */
static void local_fail(struct kiln_daemon_build *b, const char *name,
                       enum kiln_daemon_local_state from, int r, const char *why)
{
        struct kiln_daemon_build_local *l;

        pthread_mutex_lock(&b->lock);
        l = kiln_daemon_build_local_find(b, name);
        if (l && l->state == from && !b->closed) {
                free(l->error);
                l->error = kiln_xasprintf("context '%s': %s", name, why);
                l->error_code = r;
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_FAILED);
        }
        pthread_mutex_unlock(&b->lock);
}

struct upload_done_data {
        struct kiln_daemon_build *b;
        char *name;
        struct upload_stream *stream; /* until the operation takes it */
};

void kiln_daemon_context_upload_wrote(struct kiln_daemon_request *req, size_t n)
{
        struct upload_done_data *u = req->data;
        struct upload_stream *s = u ? u->stream : NULL;

        if (!s)
                return;
        pthread_mutex_lock(&s->lock);
        s->written += n;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* The PUT request is over: if its tar never reached an operation (the
 * client went away, or a write failed), the source fails when the tar was
 * being applied, and waits for another one when it was not yet. */
static void upload_done(struct kiln_daemon_request *req, void *data)
{
        struct upload_done_data *u = data;

        if (u->stream) {
                u->stream = stream_free(u->stream);
                local_fail(u->b, u->name, KILN_DAEMON_LOCAL_UPLOADING, -ECONNRESET,
                           req->upload_error ? req->upload_error
                                             : "the upload ended before its tar was complete");
        } else {
                struct kiln_daemon_build_local *l;

                pthread_mutex_lock(&u->b->lock);
                l = kiln_daemon_build_local_find(u->b, u->name);
                if (l && l->state == KILN_DAEMON_LOCAL_UPLOADING && !u->b->closed)
                        kiln_daemon_build_local_set_state(u->b, l, KILN_DAEMON_LOCAL_ENTRIES);
                pthread_mutex_unlock(&u->b->lock);
        }
        kiln_daemon_build_unref(u->b);
        free(u->name);
        free(u);
        req->done = NULL;
        req->data = NULL;
}

static int open_upload_file(const char *dir)
{
        char *path;
        int fd;

        fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
                return fd;
        /* A file system without O_TMPFILE: a named file, unlinked at once. */
        path = kiln_xasprintf("%s/upload-XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0)
                (void) unlink(path);
        free(path);
        return fd;
}

unsigned kiln_daemon_context_upload_begin(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                          struct MHD_Connection *conn, const char *url,
                                          char **message)
{
        struct kiln_daemon_build *b = NULL;
        struct kiln_daemon_build_local *l;
        struct upload_done_data *u;
        char *name = NULL;
        unsigned status;
        int fd;

        status = lookup(d, url, &b, &name, message);
        if (status != 0)
                return status;
        pthread_mutex_lock(&b->lock);
        status = take_state(b, name, KILN_DAEMON_LOCAL_ENTRIES, KILN_DAEMON_LOCAL_ENTRIES,
                            KILN_DAEMON_LOCAL_UPLOADING, &l, message);
        pthread_mutex_unlock(&b->lock);
        if (status != 0) {
                kiln_daemon_build_unref(b);
                free(name);
                return status;
        }
        u = kiln_xcalloc(1, sizeof(*u));
        u->b = b;
        u->name = name;
        req->done = upload_done;
        req->data = u;

        fd = open_upload_file(d->upload_dir);
        if (fd < 0) {
                *message = kiln_xasprintf("store the upload in '%s': %s", d->upload_dir,
                                          strerror(errno));
                return MHD_HTTP_INTERNAL_SERVER_ERROR; /* upload_done resets the state */
        }
        req->upload_fd = fd;
        pthread_mutex_lock(&b->lock);
        u->stream = stream_start(&l->transfer, fd);
        pthread_mutex_unlock(&b->lock);
        if (!u->stream) {
                *message = kiln_xstrdup("cannot start applying the upload");
                return MHD_HTTP_INTERNAL_SERVER_ERROR; /* upload_done resets the state */
        }
        log_debug_f(KILN_FIELDS({ "build", b->id }, { "name", name }), "receiving context tar");
        return 0;
}

struct upload_args {
        struct kiln_daemon_build *b;
        char *name;
        struct upload_stream *stream;
        bool ran;
};

static void upload_args_free(void *p)
{
        struct upload_args *a = p;

        a->stream = stream_free(a->stream);
        if (!a->ran)
                /* The operation never started: the tar, partly applied,
                 * will not be finished. */
                local_fail(a->b, a->name, KILN_DAEMON_LOCAL_RECEIVING, -ECANCELED,
                           "the upload was not applied");
        kiln_daemon_build_unref(a->b);
        free(a->name);
        free(a);
}

static int upload_run(struct kiln_daemon_op *op, void *args, struct kiln_error **unused)
{
        struct upload_args *a = args;
        struct kiln_daemon_build *b = a->b;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_source_local_receive_stats stats = { 0 };
        struct kiln_source_local_context *ctx = NULL;
        const atomic_bool *cancel = kiln_daemon_op_cancel_flag(op);
        struct kiln_daemon_build_local *l;
        json_t *j = NULL;
        int r = 0;

        a->ran = true;
        /* The body is complete: the thread applying it reads what is left. */
        stream_join(a->stream);
        r = a->stream->r;
        err = TAKE_PTR(a->stream->err);
        stats = a->stream->stats;
        if (r >= 0)
                r = kiln_source_local_transfer_finish(a->stream->transfer, cancel, &ctx, &err);
        a->stream = stream_free(a->stream);
        if (r >= 0 && kiln_api_context_upload_result_to_json(stats.files, stats.bytes, &j) < 0)
                r = kiln_error_set(&err, -ENOMEM, "out of memory");
        if (r < 0)
                kiln_error_wrap(&err, "context '%s'", a->name);

        pthread_mutex_lock(&b->lock);
        l = kiln_daemon_build_local_find(b, a->name);
        if (b->closed) {
                ctx = kiln_source_local_context_unref(ctx);
                if (r >= 0)
                        r = kiln_error_set(&err, -ECANCELED, "build '%s' is over", b->id);
        } else if (r >= 0) {
                l->context = TAKE_PTR(ctx);
                l->bytes = stats.bytes;
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_DONE);
        } else {
                /* The build fails with the reason: a tar that does not
                 * match the entries is not something a retry mends. */
                free(l->error);
                l->error = kiln_xstrdup(kiln_error_message(err));
                l->error_code = r;
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_FAILED);
        }
        pthread_mutex_unlock(&b->lock);

        if (r >= 0) {
                char files[24], bytes[24];

                answer_json(op, j);
                (void) snprintf(files, sizeof(files), "%" PRIu64, stats.files);
                (void) snprintf(bytes, sizeof(bytes), "%" PRIu64, stats.bytes);
                log_debug_f(KILN_FIELDS({ "build", b->id }, { "name", a->name }, { "files", files },
                                        { "bytes", bytes }),
                            "context received");
        } else {
                answer_error(op, r, kiln_error_message(err));
        }
        json_decref(j);
        return 0;
}

/* ---- the handler ---- */

static enum MHD_Result handle_entries(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                      struct MHD_Connection *conn, const char *method,
                                      const char *url)
{
        struct kiln_daemon_op_spec spec = { .what = "context entries", .uncounted = true };
        _cleanup_free_ char *message = NULL, *name = NULL;
        struct kiln_daemon_build *b = NULL;
        struct kiln_daemon_build_local *l;
        struct entries_args *a;
        unsigned status;

        status = lookup(d, url, &b, &name, &message);
        if (status != 0)
                return kiln_daemon_respond_error(conn, method, url, status, NULL, message);
        pthread_mutex_lock(&b->lock);
        status = take_state(b, name, KILN_DAEMON_LOCAL_REQUESTED, KILN_DAEMON_LOCAL_REQUESTED,
                            KILN_DAEMON_LOCAL_BEGINNING, &l, &message);
        pthread_mutex_unlock(&b->lock);
        if (status != 0) {
                kiln_daemon_build_unref(b);
                return kiln_daemon_respond_error(conn, method, url, status, NULL, message);
        }
        a = kiln_xcalloc(1, sizeof(*a));
        a->b = b;
        a->name = TAKE_PTR(name);
        a->body = req->body;
        req->body = KILN_BUF_INIT(0);
        spec.ref = b->id;
        spec.fn = entries_run;
        spec.args = a;
        spec.args_free = entries_args_free;
        /* Refused (503, daemon stopping): the source stays BEGINNING, and
         * the build is being cancelled anyway. */
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}

static enum MHD_Result handle_upload(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                     struct MHD_Connection *conn, const char *method,
                                     const char *url)
{
        struct kiln_daemon_op_spec spec = { .what = "context upload", .uncounted = true };
        struct upload_done_data *u = req->data;
        struct kiln_daemon_build_local *l;
        _cleanup_free_ char *message = NULL;
        struct upload_args *a;
        unsigned status;

        if (!u || !u->stream)
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                 NULL, "the upload was not stored");
        if (req->upload_error)
                /* upload_done puts the source back to ENTRIES. */
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                 NULL, req->upload_error);

        pthread_mutex_lock(&u->b->lock);
        status = take_state(u->b, u->name, KILN_DAEMON_LOCAL_UPLOADING, KILN_DAEMON_LOCAL_UPLOADING,
                            KILN_DAEMON_LOCAL_RECEIVING, &l, &message);
        a = NULL;
        if (status == 0) {
                a = kiln_xcalloc(1, sizeof(*a));
                a->stream = TAKE_PTR(u->stream);
        }
        pthread_mutex_unlock(&u->b->lock);
        if (status != 0)
                return kiln_daemon_respond_error(conn, method, url, status, NULL, message);

        stream_end(a->stream, false);
        a->b = kiln_daemon_build_ref(u->b);
        a->name = kiln_xstrdup(u->name);
        spec.ref = u->b->id;
        spec.fn = upload_run;
        spec.args = a;
        spec.args_free = upload_args_free;
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}

enum MHD_Result kiln_daemon_handle_context(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                           struct MHD_Connection *conn, const char *method,
                                           const char *url)
{
        if (streq(method, MHD_HTTP_METHOD_PUT))
                return handle_upload(d, req, conn, method, url);
        return handle_entries(d, req, conn, method, url);
}
