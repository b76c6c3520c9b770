/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * kilnd's internals, shared by daemon.c (lifecycle, loop), listen.c
 * (sockets), server.c (HTTP), ops.c (long operations and their streams)
 * and images.c (the image endpoints). Everything here runs on the daemon's
 * one loop thread: the loop in kiln_daemon_run drives the HTTP servers
 * itself (MHD in external epoll mode), so no object below needs a lock,
 * with one exception: an operation (struct kiln_daemon_op, ops.c) runs on
 * a worker thread of its own and hands its events and answer to the loop
 * under the operation's lock (kiln_daemon_op.lock), waking the loop
 * through the daemon's eventfd (wake_fd). Every MHD call stays on the loop
 * thread. A build (struct kiln_daemon_build) shares the state of its local
 * sources between its worker, the solver's threads and the workers of its
 * context transfers, under its own lock.
 */

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "base/buf.h"
#include "base/error.h"
#include "config/address.h"
#include "daemon.h"

struct kiln_cni;
struct kiln_config;
struct kiln_daemon_disk;
struct kiln_content_store;
struct kiln_registry_client;
struct kiln_registry_event;
struct kiln_registry_transfer_manager;
struct kiln_snapshot_store;
struct kiln_solver;
struct kiln_source_local_context;
struct kiln_source_local_store;
struct kiln_source_local_transfer;

/* A TLS certificate, key or CA bundle read for --tlscert/--tlskey/--tlscacert. */
#define KILN_DAEMON_LIMIT_PEM (1u << 20)
/* Open HTTP connections per listening address. */
#define KILN_DAEMON_MAX_CONNECTIONS 256u
/* An idle HTTP connection is closed after this many seconds. */
#define KILN_DAEMON_CONNECTION_TIMEOUT_S 60u
/* MHD's per-connection buffer: request line, headers and our small bodies. */
#define KILN_DAEMON_CONNECTION_MEMORY (64u << 10)
/* Longest message from libmicrohttpd that is kept for an error. */
#define KILN_DAEMON_MHD_MESSAGE_MAX 256u
/* Long operations (pulls, copies, inspections) running at once, over all
 * clients; one more is refused with 503 until one ends. Each runs on its
 * own thread, which mostly waits for the transfer manager (whose per-host
 * limits are the real bound on registry traffic). */
#define KILN_DAEMON_MAX_OPERATIONS 16u
/* Events an operation may hold for a client that reads slower than they
 * come: past the soft limit progress events are dropped (the client still
 * gets every other event), past the hard one the stream is cut. */
#define KILN_DAEMON_STREAM_SOFT_LIMIT (256u << 10)
#define KILN_DAEMON_STREAM_HARD_LIMIT (8u << 20)
/* The chunk MHD asks a stream for at most. */
#define KILN_DAEMON_STREAM_BLOCK (16u << 10)
/* After a stop signal, how long streams get to deliver their last events
 * once every operation has ended. */
#define KILN_DAEMON_STOP_DRAIN_MS 2000

/* The body of POST /v1/build/<id>/context/<name>: the entry list (about
 * 150 bytes an entry, KILN_API_LIMIT_CONTEXT_ENTRIES of them). */
#define KILN_DAEMON_LIMIT_CONTEXT_ENTRIES_BODY (256u << 20)
/* The tar of one PUT /v1/build/<id>/context/<name>, streamed to a file. */
#define KILN_LIMIT_CONTEXT_UPLOAD (64ull << 30)
/* How long a build waits for the client to post a requested context's
 * entries, or its tar after the entries (the wait restarts at each step). */
#define KILN_DAEMON_CONTEXT_TIMEOUT_S KILN_API_CONTEXT_TIMEOUT_S
/* Local sources (the context, named contexts) one build may request. */
#define KILN_DAEMON_BUILD_LOCALS 16u
/* Distinct base images one build resolves (its resolver cache). */
#define KILN_DAEMON_BUILD_IMAGES 1024u
/* A build id: 16 random bytes in hex. */
#define KILN_DAEMON_BUILD_ID_LEN 32u

/* What an event of the daemon's epoll set is about: epoll_event.data.ptr
 * points at one of these, the first member of its owner. */
enum kiln_daemon_source_kind {
        KILN_DAEMON_SOURCE_SIGNAL, /* the signalfd */
        KILN_DAEMON_SOURCE_WAKE,   /* wake_fd: an operation has news */
        KILN_DAEMON_SOURCE_SERVER, /* a listener's MHD epoll fd */
        KILN_DAEMON_SOURCE_HANGUP, /* a suspended stream's socket hung up */
};

struct kiln_daemon_source {
        enum kiln_daemon_source_kind kind;
};

struct kiln_daemon_listener {
        struct kiln_daemon_source source; /* first: KILN_DAEMON_SOURCE_SERVER */
        struct kiln_daemon *daemon;       /* back pointer, for the HTTP handlers */
        char *address;                    /* as configured, for logs and errors */
        struct kiln_config_address parsed;
        int fd;         /* listening socket until handed to MHD, then -1 */
        bool tls;       /* TCP: served over TLS */
        bool mtls;      /* TLS with --tlscacert: a verified client cert is required */
        bool unlink;    /* unix: we created the socket file; remove it at stop */
        dev_t sock_dev; /* unix: identity of the socket file we created, so that */
        ino_t sock_ino; /*   we never remove a file another process put there */
        struct MHD_Daemon *mhd;
        char mhd_message[KILN_DAEMON_MHD_MESSAGE_MAX]; /* MHD's last complaint */
};

struct kiln_daemon {
        const struct kiln_config *config;
        char *config_path;
        char *root;
        char *lock_path;
        int lock_fd;
        int signal_fd;
        int epoll_fd;
        sigset_t saved_mask;
        bool mask_saved;
        /* PEM text of [grpc.tls], NUL-terminated; the key is wiped at free. */
        char *tls_cert;
        char *tls_key;
        char *tls_ca;
        size_t tls_key_len;
        struct kiln_daemon_listener *listeners;
        size_t n_listeners;

        struct kiln_daemon_source signal_source;
        struct kiln_daemon_source wake_source;
        /* An eventfd that operations write to when they have news for the
         * loop (events, an answer, their end). */
        int wake_fd;
        /* <root>/content, and the one transfer manager and registry client
         * every request of the daemon goes through, so that the
         * per-registry connection limits hold across all of them. The
         * store, manager and client are thread safe. */
        struct kiln_content_store *store;
        struct kiln_registry_transfer_manager *manager;
        struct kiln_registry_client *client;
        /* Operations not yet forgotten (running, or still attached to a
         * request), newest first; n_running of them have a live thread. */
        struct kiln_daemon_op *ops;
        unsigned n_running;
        unsigned n_counted; /* those of them that count against the limit */
        unsigned next_op_id;
        /* A stop signal arrived: new operations are refused, running ones
         * are cancelled. */
        bool stopping;

        /* Builds (build.c): <root>/snapshots, <root>/local and the solver,
         * all thread safe; the resolv.conf given to RUN steps when [dns]
         * is set (NULL: the host's); where context uploads are spooled
         * (<root>/local/tmp). */
        struct kiln_snapshot_store *snapshots;
        struct kiln_source_local_store *locals;
        struct kiln_solver *solver;
        struct kiln_cni *cni;          /* the CNI pool of RUN steps; NULL: host networking */
        struct kiln_daemon_disk *disk; /* du, prune and the collector (disk.c) */
        char *resolv_conf;
        char *upload_dir;
        /* Builds whose operation lives, so that the context endpoints find
         * them by id. Loop thread only. */
        struct kiln_daemon_build *builds;
};

/* What the HTTP handler remembers between MHD's calls for one request
 * (server.c owns it; handlers see it). */
struct kiln_daemon_request {
        struct kiln_daemon_listener *listener;
        struct kiln_buf body;      /* at most the route's limit (default KILN_LIMIT_API_REQUEST) */
        struct kiln_daemon_op *op; /* a reference, when an operation answers it */
        /* A streamed body (PUT of a context): written to upload_fd as it
         * arrives, up to upload_limit bytes; upload_error (malloc'd) when a
         * write failed (the rest of the body is then read and dropped, and
         * the handler answers with the error). */
        int upload_fd;
        uint64_t upload_len;
        uint64_t upload_limit;
        char *upload_error;
        /* Set by a handler: called when the request is over (MHD's
         * completed callback), on the loop thread, with data. */
        void (*done)(struct kiln_daemon_request *req, void *data);
        void *data;
};

/* Creates the socket for l->parsed, listening, in l->fd. A unix socket's
 * parent directory is created, a stale socket file (nobody accepts on it)
 * is replaced, a live one fails with -EADDRINUSE; the file gets mode 0660
 * and, when [grpc] uid/gid are set, that owner. */
int kiln_daemon_listener_open(struct kiln_daemon_listener *l, const struct kiln_config *c,
                              struct kiln_error **err);
/* Stops l's server, closes its socket and removes the socket file when it
 * is still the one we created. Idempotent. */
void kiln_daemon_listener_close(struct kiln_daemon_listener *l);

/* Checks that the TLS options make sense for the configured addresses.
 * Called before anything is created, so that a bad address or a TCP
 * address without a certificate fails fast. */
int kiln_daemon_server_check(const struct kiln_config *c, struct kiln_error **err);
/* Starts the HTTP server of l on a duplicate of l->fd (l->fd is closed
 * once MHD serves) and adds the server to the daemon's epoll set. */
int kiln_daemon_server_start(struct kiln_daemon *d, struct kiln_daemon_listener *l,
                             struct kiln_error **err);
/* Lets every server do the work that is ready: accept, read, answer, time
 * out idle connections. Never blocks. */
void kiln_daemon_server_dispatch(struct kiln_daemon *d);
/* Milliseconds until a server needs kiln_daemon_server_dispatch without
 * I/O (a connection timing out), or -1 for never. */
int kiln_daemon_server_timeout(struct kiln_daemon *d);
/* Stops l's server (closing its listening socket and connections). */
void kiln_daemon_server_stop(struct kiln_daemon_listener *l);

/* ---- answers (server.c) ---- */

/* Queues an answer: status, body (taken; NULL means out of memory, which
 * drops the connection), its Content-Type, and extra headers as
 * NULL-terminated name, value pairs (NULL: none). Logs the request at
 * debug. */
enum MHD_Result kiln_daemon_respond(struct MHD_Connection *conn, const char *method,
                                    const char *url, unsigned status, const char *content_type,
                                    char *body, size_t len, const char *const *headers);
/* {"error": message} with status (and an Allow header when allow is set). */
enum MHD_Result kiln_daemon_respond_error(struct MHD_Connection *conn, const char *method,
                                          const char *url, unsigned status, const char *allow,
                                          const char *message);
/* j serialised as the API wants (j is borrowed). */
enum MHD_Result kiln_daemon_respond_json(struct MHD_Connection *conn, const char *method,
                                         const char *url, unsigned status, const json_t *j);

/* ---- operations (ops.c) ---- */

/*
 * An operation: one long request (a pull, a copy, an inspection) run on a
 * worker thread of its own, so that the loop never waits for a registry.
 *
 * A streaming operation answers at once with 200 and an NDJSON stream (a
 * callback response): the worker queues events (kiln_daemon_op_emit*),
 * MHD's reader callback hands them out, and when the queue is empty the
 * reader suspends the connection (returning 0 without suspending would make
 * MHD's epoll mode spin); the worker wakes the loop through wake_fd and the
 * loop resumes it. A plain operation suspends its connection from the
 * handler and answers with kiln_daemon_op_answer once the worker is done.
 *
 * While a connection is suspended MHD does not watch its socket, so the
 * loop does (EPOLLRDHUP): a client that hangs up, or whose request ends
 * early for any reason, cancels its operation: the cancel flag is set
 * (kiln_daemon_op_cancelled), nothing more is queued and the result is
 * dropped. The flag goes to the registry calls (kiln_daemon_op_cancel_flag),
 * which abort their transfers and backoff sleeps when it is set (the
 * registry client is woken then); the thread is joined once the worker
 * returns.
 *
 * References: the daemon's list, the request (kiln_daemon_request.op) and
 * a stream's MHD response each hold one; they are taken and dropped on the
 * loop thread only. The list's reference goes once the thread is joined
 * and no request uses the operation.
 */
struct kiln_daemon_op;

/* The worker: does the work, emits a streaming operation's events and its
 * result (kiln_daemon_op_emit_json) or sets a plain operation's answer
 * (kiln_daemon_op_set_answer). Returns 0, or -errno and *err; ops.c then
 * sends the error (an "error" event, or an error answer whose status
 * kiln_daemon_op_status_of picks). */
typedef int (*kiln_daemon_op_fn)(struct kiln_daemon_op *op, void *args, struct kiln_error **err);

struct kiln_daemon_op_spec {
        const char *what; /* "pull", "imagetools create": logs */
        const char *ref;  /* for the start and end log lines */
        bool stream;
        /* Not counted against KILN_DAEMON_MAX_OPERATIONS: a step of an
         * operation that is counted (a build's context transfer), whose
         * number that operation bounds. */
        bool uncounted;
        kiln_daemon_op_fn fn;
        void *args; /* owned by the operation from then on */
        void (*args_free)(void *args);
};

/* Starts an operation for the request on conn: refuses it (503, already
 * answered) when KILN_DAEMON_MAX_OPERATIONS run or the daemon is stopping;
 * else starts the worker and either queues the 200 stream answer or
 * suspends conn. spec->args is freed on every path. Returns MHD_YES or
 * MHD_NO, as an MHD handler does. */
enum MHD_Result kiln_daemon_op_start(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                     struct MHD_Connection *conn, const char *method,
                                     const char *url, const struct kiln_daemon_op_spec *spec);

/* The handler's later calls for a request with an operation: answers a
 * plain operation that is done, suspends again one that is not. */
enum MHD_Result kiln_daemon_op_continue(struct kiln_daemon_request *req,
                                        struct MHD_Connection *conn, const char *method,
                                        const char *url);

/* The request is over (MHD's completed callback): detaches and unrefs. */
void kiln_daemon_op_request_done(struct kiln_daemon_request *req);

/* Worker side. The daemon (for its store and client). */
struct kiln_daemon *kiln_daemon_op_daemon(struct kiln_daemon_op *op);
/* Whether the client went away or the daemon is stopping. */
bool kiln_daemon_op_cancelled(struct kiln_daemon_op *op);
/* The same, as the flag the registry options take (valid while the
 * operation runs). */
const atomic_bool *kiln_daemon_op_cancel_flag(struct kiln_daemon_op *op);
/* Queues an event object (borrowed) on a stream; progress events may be
 * dropped for a slow reader. Any thread. */
void kiln_daemon_op_emit_json(struct kiln_daemon_op *op, const json_t *event, bool droppable);
/* A kiln_registry_event_fn: the event as the API's (userdata: the op). */
void kiln_daemon_op_registry_event(void *userdata, const struct kiln_registry_event *ev);
/* The digest named in the end log line. */
void kiln_daemon_op_set_digest(struct kiln_daemon_op *op, const char *digest);
/* A plain operation's answer: status, Content-Type, body (taken) and one
 * optional header. */
void kiln_daemon_op_set_answer(struct kiln_daemon_op *op, unsigned status, const char *content_type,
                               char *body, size_t len, const char *header_name,
                               const char *header_value);
/* The HTTP status for an operation's failure code. */
unsigned kiln_daemon_op_status_of(int r);

/* Loop side. Resumes connections whose operation has news, reaps ended
 * workers, forgets finished operations. After wake_fd fired. */
void kiln_daemon_ops_dispatch(struct kiln_daemon *d);
/* A suspended stream's socket hung up (its HANGUP source fired). */
void kiln_daemon_ops_hangup(struct kiln_daemon *d, struct kiln_daemon_source *source);
/* Cancels every operation (the daemon is stopping). */
void kiln_daemon_ops_cancel(struct kiln_daemon *d);
/* Whether no operation is left at all (all joined and detached). */
bool kiln_daemon_ops_idle(struct kiln_daemon *d);
/* For kiln_daemon_free: cancels and joins every worker, and resumes every
 * suspended connection (MHD_stop_daemon refuses suspended ones). */
void kiln_daemon_ops_stop(struct kiln_daemon *d);
/* After the servers stopped: drops the list's references. */
void kiln_daemon_ops_free(struct kiln_daemon *d);

/* ---- image endpoints (images.c) ---- */

enum MHD_Result kiln_daemon_handle_pull(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                        struct MHD_Connection *conn, const char *method,
                                        const char *url);
enum MHD_Result kiln_daemon_handle_imagetools_inspect(struct kiln_daemon *d,
                                                      struct kiln_daemon_request *req,
                                                      struct MHD_Connection *conn,
                                                      const char *method, const char *url);
enum MHD_Result kiln_daemon_handle_imagetools_create(struct kiln_daemon *d,
                                                     struct kiln_daemon_request *req,
                                                     struct MHD_Connection *conn,
                                                     const char *method, const char *url);

/* ---- builds (build.c, context.c) ---- */

/* Where a local source a build asked for stands. */
enum kiln_daemon_local_state {
        KILN_DAEMON_LOCAL_REQUESTED, /* context-request sent: waiting for the entries */
        KILN_DAEMON_LOCAL_BEGINNING, /* entries posted: the transfer is being set up */
        KILN_DAEMON_LOCAL_ENTRIES,   /* transfer ready: waiting for the tar */
        KILN_DAEMON_LOCAL_UPLOADING, /* the tar is arriving */
        KILN_DAEMON_LOCAL_RECEIVING, /* the tar is in: being applied */
        KILN_DAEMON_LOCAL_DONE,      /* context ready */
        KILN_DAEMON_LOCAL_FAILED,    /* error holds why */
};

struct kiln_daemon_build_local {
        char *name;
        char *key; /* the local store's key: the client's contextKey and name */
        enum kiln_daemon_local_state state;
        int64_t deadline_ms; /* CLOCK_MONOTONIC: give up waiting for the client */
        struct kiln_source_local_transfer *transfer; /* from ENTRIES to RECEIVING */
        struct kiln_source_local_context *context;   /* DONE */
        uint64_t bytes; /* DONE: what the client sent (file contents) */
        char *digest;   /* the client's digest of its entry list (a probe) */
        int error_code;
        char *error;
};

/*
 * One build: created by the POST /v1/build handler, run by its streaming
 * operation (build.c), fed by the context endpoints (context.c), whose
 * transfers run as operations of their own.
 *
 * The loop thread owns refs, next and the daemon's list; a build is in
 * the list from its handler until its operation is freed. Everything
 * under lock is shared by the build's worker (and the solver's threads
 * calling back), the loop and the context operations' workers; cond is
 * broadcast whenever a local source changes state.
 */
struct kiln_daemon_build {
        struct kiln_daemon *d;
        struct kiln_daemon_build *next;
        unsigned refs;
        char id[KILN_DAEMON_BUILD_ID_LEN + 1];
        char *context_key;

        pthread_mutex_t lock;
        pthread_cond_t cond; /* CLOCK_MONOTONIC */
        bool closed;         /* the build ended: late contexts are dropped */
        struct kiln_daemon_build_local locals[KILN_DAEMON_BUILD_LOCALS];
        size_t n_locals;
};

/* The build with this id, or NULL. Loop thread. */
struct kiln_daemon_build *kiln_daemon_build_find(struct kiln_daemon *d, const char *id);
/* Reference counting, loop thread only (operations take their reference
 * in their handler and drop it in their args_free). */
struct kiln_daemon_build *kiln_daemon_build_ref(struct kiln_daemon_build *b);
void kiln_daemon_build_unref(struct kiln_daemon_build *b);
/* Under b->lock: the local source name, or NULL when the build never
 * asked for it. */
struct kiln_daemon_build_local *kiln_daemon_build_local_find(struct kiln_daemon_build *b,
                                                             const char *name);
/* Under b->lock: moves l to state (restarting its client deadline) and
 * wakes the build. */
void kiln_daemon_build_local_set_state(struct kiln_daemon_build *b,
                                       struct kiln_daemon_build_local *l,
                                       enum kiln_daemon_local_state state);

/* Splits url of the form /v1/build/<id>/<what>/<rest> (context.c): id
 * (not empty, without '/') and rest (what follows, maybe empty) point into
 * url. False for any other url. */
bool kiln_daemon_build_subpath(const char *url, const char *what, const char **id, size_t *id_len,
                               const char **rest);
/* POST /v1/build. */
enum MHD_Result kiln_daemon_handle_build(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                         struct MHD_Connection *conn, const char *method,
                                         const char *url);
/* Whether url is /v1/build/<id>/export/<index> (export.c). */
bool kiln_daemon_export_path_match(const char *url);
/* GET /v1/build/<id>/export/<index>: the stream of a client-side output. */
enum MHD_Result kiln_daemon_handle_export(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                          struct MHD_Connection *conn, const char *method,
                                          const char *url);
/* GET /v1/du and POST /v1/prune (disk.c). */
enum MHD_Result kiln_daemon_handle_du(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                      struct MHD_Connection *conn, const char *method,
                                      const char *url);
enum MHD_Result kiln_daemon_handle_prune(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                         struct MHD_Connection *conn, const char *method,
                                         const char *url);
/* Whether url is /v1/build/<id>/context/<name>. */
bool kiln_daemon_context_path_match(const char *url);
/* POST and PUT /v1/build/<id>/context/<name>, once the body is in. */
enum MHD_Result kiln_daemon_handle_context(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                           struct MHD_Connection *conn, const char *method,
                                           const char *url);
/* PUT, when its headers are in: checks the build and the state of the
 * source, opens req->upload_fd (an unnamed file under d->upload_dir) and
 * starts applying what it will hold. Returns 0, or an HTTP status with
 * *message set (the request is then refused before its body is read). */
/* server.c wrote n more bytes of the PUT body to req->upload_fd. */
void kiln_daemon_context_upload_wrote(struct kiln_daemon_request *req, size_t n);
unsigned kiln_daemon_context_upload_begin(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                          struct MHD_Connection *conn, const char *url,
                                          char **message);

/* Daemon set-up and tear-down of the build machinery (build.c): opens the
 * snapshot store, the local store and the solver from the configuration,
 * writes <root>/resolv.conf for [dns]. */
int kiln_daemon_builds_setup(struct kiln_daemon *d, struct kiln_error **err);
/* After every operation is freed. */
void kiln_daemon_builds_free(struct kiln_daemon *d);
