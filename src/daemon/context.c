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
 * under <root>/local/tmp (opened here, when the headers are in), and once
 * it is complete an operation applies it (receive and finish of
 * source/local.h) on a worker thread, hands the context to the waiting
 * build and answers {"files","bytes"}. The entry list is parsed on a worker
 * thread too: it may hold a million entries.
 *
 * These operations are not counted against the daemon's operation limit:
 * each belongs to a build that is, and one build has at most one of them
 * per local source at a time (the states say so).
 */
#include <fcntl.h>
#include <inttypes.h>
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

struct upload_done_data {
        struct kiln_daemon_build *b;
        char *name;
};

/* The PUT request is over: if its tar never reached an operation (the
 * client went away, or a write failed), the source waits for another. */
static void upload_done(struct kiln_daemon_request *req, void *data)
{
        struct upload_done_data *u = data;
        struct kiln_daemon_build_local *l;

        pthread_mutex_lock(&u->b->lock);
        l = kiln_daemon_build_local_find(u->b, u->name);
        if (l && l->state == KILN_DAEMON_LOCAL_UPLOADING && !u->b->closed)
                kiln_daemon_build_local_set_state(u->b, l, KILN_DAEMON_LOCAL_ENTRIES);
        pthread_mutex_unlock(&u->b->lock);
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
        log_debug_f(KILN_FIELDS({ "build", b->id }, { "name", name }), "receiving context tar");
        return 0;
}

struct upload_args {
        struct kiln_daemon_build *b;
        char *name;
        int fd;
        struct kiln_source_local_transfer *transfer;
        bool ran;
};

static void upload_args_free(void *p)
{
        struct upload_args *a = p;

        if (!a->ran) {
                /* The operation never started: the transfer goes back to
                 * the build, which waits for another tar. */
                struct kiln_daemon_build_local *l;

                pthread_mutex_lock(&a->b->lock);
                l = kiln_daemon_build_local_find(a->b, a->name);
                if (l && l->state == KILN_DAEMON_LOCAL_RECEIVING && !a->b->closed) {
                        l->transfer = TAKE_PTR(a->transfer);
                        kiln_daemon_build_local_set_state(a->b, l, KILN_DAEMON_LOCAL_ENTRIES);
                }
                pthread_mutex_unlock(&a->b->lock);
        }
        kiln_source_local_transfer_free(a->transfer);
        if (a->fd >= 0)
                (void) close(a->fd);
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
        if (lseek(a->fd, 0, SEEK_SET) < 0)
                r = kiln_error_set(&err, -errno, "read the upload back: %s", strerror(errno));
        if (r >= 0)
                r = kiln_source_local_transfer_receive_fd(a->transfer, a->fd, cancel, &stats, &err);
        (void) close(a->fd);
        a->fd = -1;
        if (r >= 0)
                r = kiln_source_local_transfer_finish(a->transfer, cancel, &ctx, &err);
        a->transfer = kiln_source_local_transfer_free(a->transfer);
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

        if (!u || req->upload_fd < 0)
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
                a->transfer = TAKE_PTR(l->transfer);
        }
        pthread_mutex_unlock(&u->b->lock);
        if (status != 0)
                return kiln_daemon_respond_error(conn, method, url, status, NULL, message);

        a->b = kiln_daemon_build_ref(u->b);
        a->name = kiln_xstrdup(u->name);
        a->fd = TAKE_FD(req->upload_fd);
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
