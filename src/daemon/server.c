/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "api/api.h"
#include "api/disk.h"
#include "base/fs.h"
#include "base/limits.h"
#include "exec/cni.h"
#include "base/log.h"
#include "config/config.h"
#include "daemon-internal.h"
#include "kiln-version.h"

int kiln_daemon_server_check(const struct kiln_config *c, struct kiln_error **err)
{
        /* The configuration check refused bad addresses and TCP without
         * TLS already; what is left depends on the libraries of this host. */
        if (c->grpc.n_address == 0)
                return kiln_error_set(err, -EINVAL, "no address to listen on");
        for (size_t i = 0; i < c->grpc.n_address; i++)
                if (startswith(c->grpc.address[i], "tcp://") &&
                    MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
                        return kiln_error_set(err, -EOPNOTSUPP,
                                              "listen on '%s': TLS is not supported by this "
                                              "libmicrohttpd",
                                              c->grpc.address[i]);
        return 0;
}

/* MHD's messages are about connections (a failed handshake, a malformed
 * request): interesting when debugging, noise otherwise. The last one is
 * kept because it is the only explanation MHD_start_daemon gives. */
_printf_(2, 0) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
        struct kiln_daemon_listener *l = cls;
        size_t n;

        (void) vsnprintf(l->mhd_message, sizeof(l->mhd_message), fmt, ap);
        n = strlen(l->mhd_message);
        while (n > 0 && (l->mhd_message[n - 1] == '\n' || l->mhd_message[n - 1] == '.'))
                l->mhd_message[--n] = '\0';
        log_debug_f(KILN_FIELDS({ "addr", l->address }), "http: %s", l->mhd_message);
}

/* With --tlscacert, buildkitd uses Go's RequireAndVerifyClientCert. MHD
 * only asks for a certificate (GNUTLS_CERT_REQUEST) and leaves checking it
 * to the application, so the session is tightened before the handshake:
 * no certificate, or one the CA did not sign, fails the handshake itself. */
static void mhd_notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                  enum MHD_ConnectionNotificationCode code)
{
        struct kiln_daemon_listener *l = cls;
        const union MHD_ConnectionInfo *info;
        gnutls_session_t session;

        if (code != MHD_CONNECTION_NOTIFY_STARTED || !l->mtls)
                return;
        info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (!info || !info->tls_session)
                return; /* the access handler refuses the requests instead */
        session = info->tls_session;
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(session, NULL, 0);
}

/* The access handler's own check, so that a client is never served without
 * a verified certificate, whatever happened at the handshake. */
static bool client_verified(struct MHD_Connection *conn)
{
        const union MHD_ConnectionInfo *info;
        unsigned status = 0;
        unsigned n = 0;

        info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (!info || !info->tls_session)
                return false;
        if (!gnutls_certificate_get_peers(info->tls_session, &n) || n == 0)
                return false;
        if (gnutls_certificate_verify_peers2(info->tls_session, &status) != GNUTLS_E_SUCCESS)
                return false;
        return status == 0;
}

enum MHD_Result kiln_daemon_respond(struct MHD_Connection *conn, const char *method,
                                    const char *url, unsigned status, const char *content_type,
                                    char *body, size_t len, const char *const *headers)
{
        struct MHD_Response *resp;
        enum MHD_Result ret;
        char code[16];

        (void) snprintf(code, sizeof(code), "%u", status);
        log_debug_f(KILN_FIELDS({ "method", method }, { "path", url }, { "status", code }),
                    "request");

        if (!body)
                return MHD_NO; /* out of memory: drop the connection */
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return MHD_NO;
        }
        if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES) {
                MHD_destroy_response(resp);
                return MHD_NO;
        }
        for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
                if (MHD_add_response_header(resp, headers[i], headers[i + 1]) != MHD_YES) {
                        MHD_destroy_response(resp);
                        return MHD_NO;
                }
        ret = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

enum MHD_Result kiln_daemon_respond_error(struct MHD_Connection *conn, const char *method,
                                          const char *url, unsigned status, const char *allow,
                                          const char *message)
{
        const char *headers[] = { MHD_HTTP_HEADER_ALLOW, allow, NULL };
        size_t len = 0;
        char *body = kiln_api_error_body(message, &len);

        return kiln_daemon_respond(conn, method, url, status, KILN_API_CONTENT_TYPE_JSON, body, len,
                                   allow ? headers : NULL);
}

enum MHD_Result kiln_daemon_respond_json(struct MHD_Connection *conn, const char *method,
                                         const char *url, unsigned status, const json_t *j)
{
        size_t len = 0;
        char *body = kiln_api_json_dump(j, &len);

        return kiln_daemon_respond(conn, method, url, status, KILN_API_CONTENT_TYPE_JSON, body, len,
                                   NULL);
}

static enum MHD_Result handle_info(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                   struct MHD_Connection *conn, const char *method, const char *url)
{
        const struct kiln_config *c = d->config;
        struct kiln_api_info_pool pool = { 0 };
        struct kiln_api_info info = {
                .version = KILN_VERSION,
                .pid = getpid(),
                .root = d->root,
                .network_mode = d->solver ? (d->cni ? "cni" : "host") : NULL,
                .pool = d->cni ? &pool : NULL,
                .config_file = d->config_path,
                .addresses = (const char *const *) c->grpc.address,
                .n_addresses = c->grpc.n_address,
                .config = c,
        };
        enum MHD_Result ret;
        json_t *j = NULL;

        if (d->cni) {
                struct kiln_cni_stats st;

                kiln_cni_get_stats(d->cni, &st);
                pool = (struct kiln_api_info_pool){ st.idle, st.in_use, st.created, st.released };
        }
        if (kiln_api_info_to_json(&info, &j) < 0)
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                 NULL, "out of memory");
        ret = kiln_daemon_respond_json(conn, method, url, MHD_HTTP_OK, j);
        json_decref(j);
        return ret;
}

/* The methods a route takes. */
enum {
        METHOD_GET = 1 << 0, /* and HEAD */
        METHOD_POST = 1 << 1,
        METHOD_PUT = 1 << 2,
};

struct route {
        const char *path; /* an exact path, or NULL: match decides */
        bool (*match)(const char *url);
        unsigned methods;
        const char *allow; /* the Allow header for 405 */
        /* Bodies kept in memory up to this; 0: KILN_LIMIT_API_REQUEST. */
        size_t body_limit;
        /* PUT bodies are streamed to a file instead (upload_begin opens
         * it), up to KILN_LIMIT_CONTEXT_UPLOAD. */
        bool put_streams;
        enum MHD_Result (*handler)(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                   struct MHD_Connection *conn, const char *method,
                                   const char *url);
};

static const struct route routes[] = {
        { KILN_API_PATH_INFO, NULL, METHOD_GET, "GET, HEAD", 0, false, handle_info },
        { KILN_API_PATH_PULL, NULL, METHOD_POST, "POST", 0, false, kiln_daemon_handle_pull },
        { KILN_API_PATH_IMAGETOOLS_INSPECT, NULL, METHOD_GET, "GET, HEAD", 0, false,
          kiln_daemon_handle_imagetools_inspect },
        { KILN_API_PATH_IMAGETOOLS_CREATE, NULL, METHOD_POST, "POST", 0, false,
          kiln_daemon_handle_imagetools_create },
        { KILN_API_PATH_BUILD, NULL, METHOD_POST, "POST", KILN_API_LIMIT_BUILD_REQUEST, false,
          kiln_daemon_handle_build },
        { NULL, kiln_daemon_context_path_match, METHOD_POST | METHOD_PUT, "POST, PUT",
          KILN_DAEMON_LIMIT_CONTEXT_ENTRIES_BODY, true, kiln_daemon_handle_context },
        { NULL, kiln_daemon_export_path_match, METHOD_GET, "GET", 0, false,
          kiln_daemon_handle_export },
        { KILN_API_PATH_DU, NULL, METHOD_GET, "GET, HEAD", 0, false, kiln_daemon_handle_du },
        { KILN_API_PATH_PRUNE, NULL, METHOD_POST, "POST", 0, false, kiln_daemon_handle_prune },
};

static void mhd_request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                                  enum MHD_RequestTerminationCode code)
{
        struct kiln_daemon_request *req = *req_cls;

        if (!req)
                return;
        if (req->done)
                req->done(req, req->data);
        kiln_daemon_op_request_done(req);
        kiln_buf_release(&req->body);
        if (req->upload_fd >= 0)
                (void) close(req->upload_fd);
        free(req->upload_error);
        free(req);
        *req_cls = NULL;
}

static unsigned method_bit(const char *method)
{
        if (streq(method, MHD_HTTP_METHOD_GET) || streq(method, MHD_HTTP_METHOD_HEAD))
                return METHOD_GET;
        if (streq(method, MHD_HTTP_METHOD_POST))
                return METHOD_POST;
        if (streq(method, MHD_HTTP_METHOD_PUT))
                return METHOD_PUT;
        return 0;
}

static const struct route *route_find(const char *url)
{
        for (size_t i = 0; i < ELEMENTSOF(routes); i++)
                if (routes[i].path ? streq(url, routes[i].path) : routes[i].match(url))
                        return &routes[i];
        return NULL;
}

static enum MHD_Result route(struct kiln_daemon_listener *l, struct kiln_daemon_request *req,
                             struct MHD_Connection *conn, const char *method, const char *url)
{
        const struct route *rt = route_find(url);

        if (rt) {
                if (!(method_bit(method) & rt->methods)) {
                        _cleanup_free_ char *msg =
                                kiln_xasprintf("method %s not allowed on '%s'", method, url);

                        return kiln_daemon_respond_error(
                                conn, method, url, MHD_HTTP_METHOD_NOT_ALLOWED, rt->allow, msg);
                }
                return rt->handler(l->daemon, req, conn, method, url);
        }

        _cleanup_free_ char *msg = kiln_xasprintf("no such endpoint '%s'", url);
        return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_NOT_FOUND, NULL, msg);
}

/* A chunk of a streamed body: to the file, or dropped after a failure. */
static enum MHD_Result upload_chunk(struct kiln_daemon_request *req, const char *method,
                                    const char *url, const char *data, size_t n)
{
        if (req->upload_len + n > req->upload_limit) {
                log_debug_f(KILN_FIELDS({ "method", method }, { "path", url }),
                            "request body too large, closing connection");
                return MHD_NO;
        }
        req->upload_len += n;
        if (!req->upload_error) {
                int r = kiln_write_all(req->upload_fd, data, n);

                if (r < 0)
                        req->upload_error = kiln_xasprintf("store the upload: %s", strerror(-r));
                else
                        kiln_daemon_context_upload_wrote(req, n);
        }
        return MHD_YES;
}

/* MHD calls this once when the headers are in, once per chunk of body,
 * and once more when the body is complete; the answer comes at the end, so
 * that a client still sending its body never writes into a closed socket
 * and the connection can be reused. Bodies are kept up to the route's
 * limit (KILN_LIMIT_API_REQUEST by default; routes that take none ignore
 * theirs), or streamed to a file (a context's tar). The request line and
 * status are logged, never a body (a build request holds secrets). A
 * request answered by an operation (ops.c) comes back here when its
 * connection is resumed. */
static enum MHD_Result mhd_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **req_cls)
{
        struct kiln_daemon_listener *l = cls;
        struct kiln_daemon_request *req = *req_cls;

        if (!req) {
                const struct route *rt = route_find(url);
                bool stream = rt && rt->put_streams && method_bit(method) == METHOD_PUT;
                uint64_t limit = stream                     ? KILN_LIMIT_CONTEXT_UPLOAD
                                 : rt && rt->body_limit > 0 ? rt->body_limit
                                                            : KILN_LIMIT_API_REQUEST;
                const char *length;

                if (l->mtls && !client_verified(conn))
                        return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_FORBIDDEN,
                                                         NULL,
                                                         "a client certificate signed by the "
                                                         "configured CA is required");
                length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (length && strtoull(length, NULL, 10) > limit)
                        return kiln_daemon_respond_error(conn, method, url,
                                                         MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                                                         "request body too large");
                req = kiln_xcalloc(1, sizeof(*req));
                req->listener = l;
                req->upload_fd = -1;
                req->body = KILN_BUF_INIT(stream ? 0 : (size_t) limit);
                *req_cls = req;
                if (stream) {
                        _cleanup_free_ char *msg = NULL;
                        unsigned status;

                        req->upload_limit = limit;
                        status = kiln_daemon_context_upload_begin(l->daemon, req, conn, url, &msg);
                        if (status != 0)
                                return kiln_daemon_respond_error(conn, method, url, status, NULL,
                                                                 msg);
                }
                return MHD_YES;
        }

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                *upload_data_size = 0;
                if (req->upload_fd >= 0)
                        return upload_chunk(req, method, url, upload_data, n);
                if (kiln_buf_append(&req->body, upload_data, n) >= 0)
                        return MHD_YES;
                /* MHD cannot answer in the middle of a body (a chunked one
                 * that announced no length): all that is left is to hang up. */
                log_debug_f(KILN_FIELDS({ "method", method }, { "path", url }),
                            "request body too large, closing connection");
                return MHD_NO;
        }

        if (req->op)
                return kiln_daemon_op_continue(req, conn, method, url);
        return route(l, req, conn, method, url);
}

int kiln_daemon_server_start(struct kiln_daemon *d, struct kiln_daemon_listener *l,
                             struct kiln_error **err)
{
        struct MHD_OptionItem opts[16];
        const union MHD_DaemonInfo *info;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &l->source };
        /* Suspending is how a stream waits for its operation (ops.c). */
        unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
        size_t n = 0;
        int mhd_fd;

        opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_LIMIT,
                                             KILN_DAEMON_MAX_CONNECTIONS, NULL };
        opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_TIMEOUT,
                                             KILN_DAEMON_CONNECTION_TIMEOUT_S, NULL };
        opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                             KILN_DAEMON_CONNECTION_MEMORY, NULL };
        if (l->tls) {
                flags |= MHD_USE_TLS;
                opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, d->tls_cert };
                opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, d->tls_key };
                if (l->mtls)
                        opts[n++] =
                                (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0, d->tls_ca };
        }
        opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };

        /* MHD closes the listening socket it was given on some of its
         * failure paths and not on others; giving it a duplicate keeps the
         * ownership of l->fd simple: ours until MHD has started. */
        mhd_fd = fcntl(l->fd, F_DUPFD_CLOEXEC, 3);
        if (mhd_fd < 0)
                return kiln_error_set(err, -errno, "start HTTP server on '%s': dup: %s", l->address,
                                      strerror(errno));

        l->mhd_message[0] = '\0';
        /* The logger first, so that even MHD's start-up complaints come to
         * us. */
        l->mhd = MHD_start_daemon(flags, 0, NULL, NULL, mhd_handler, l, MHD_OPTION_EXTERNAL_LOGGER,
                                  mhd_logger, l, MHD_OPTION_LISTEN_SOCKET, mhd_fd,
                                  MHD_OPTION_NOTIFY_CONNECTION, mhd_notify_connection, l,
                                  MHD_OPTION_NOTIFY_COMPLETED, mhd_request_completed, l,
                                  MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (!l->mhd)
                return kiln_error_set(err, -EIO, "start HTTP server on '%s': %s", l->address,
                                      l->mhd_message[0] ? l->mhd_message
                                                        : "libmicrohttpd refused to start");
        (void) close(l->fd);
        l->fd = -1;

        info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return kiln_error_set(err, -EIO, "start HTTP server on '%s': no epoll fd",
                                      l->address);
        if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, info->epoll_fd, &ev) < 0)
                return kiln_error_set(err, -errno, "start HTTP server on '%s': epoll: %s",
                                      l->address, strerror(errno));
        return 0;
}

void kiln_daemon_server_dispatch(struct kiln_daemon *d)
{
        for (size_t i = 0; i < d->n_listeners; i++)
                if (d->listeners[i].mhd && MHD_run(d->listeners[i].mhd) != MHD_YES)
                        log_debug_f(KILN_FIELDS({ "addr", d->listeners[i].address }),
                                    "http: dispatch failed");
}

int kiln_daemon_server_timeout(struct kiln_daemon *d)
{
        int timeout = -1;

        for (size_t i = 0; i < d->n_listeners; i++) {
                MHD_UNSIGNED_LONG_LONG ms;

                if (!d->listeners[i].mhd || MHD_get_timeout(d->listeners[i].mhd, &ms) != MHD_YES)
                        continue;
                if (ms > INT_MAX)
                        ms = INT_MAX;
                if (timeout < 0 || (int) ms < timeout)
                        timeout = (int) ms;
        }
        return timeout;
}

void kiln_daemon_server_stop(struct kiln_daemon_listener *l)
{
        if (!l->mhd)
                return;
        /* Closes the listening socket and every connection; the epoll fd
         * goes with it, which removes it from the daemon's set. */
        MHD_stop_daemon(l->mhd);
        l->mhd = NULL;
}
