/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "base/clock.h"
#include "base/limits.h"
#include "base/log.h"
#include "config/address.h"
#include "http.h"

/* How long a stream may stay silent (no byte at all) before it is given up;
 * long-running calls send progress events well within it. */
#define STREAM_IDLE_TIMEOUT_S 300u

/* How long a stream or an upload may take to connect. */
#define CONNECT_TIMEOUT_MS 20000u

/* How often a wait looks at a download's cancel flag. */
#define CANCEL_POLL_MS 100u

/* Bytes read from the connection at once, and the largest piece of a
 * streamed request body (one chunk of a chunked one). */
#define IO_CHUNK (64u << 10)

/* The request line and headers kiln sends: a path, a few fixed headers. */
#define REQUEST_HEAD_MAX (16u << 10)

/* ---- the connection ---- */

struct conn {
        int fd;
        SSL_CTX *ctx;
        SSL *ssl;
        BIO_METHOD *bio_method;
};

static void conn_close(struct conn *c)
{
        if (c->ssl)
                SSL_free(c->ssl); /* and its BIO */
        if (c->ctx)
                SSL_CTX_free(c->ctx);
        if (c->bio_method)
                BIO_meth_free(c->bio_method);
        if (c->fd >= 0)
                (void) close(c->fd);
        *c = (struct conn){ .fd = -1 };
}

/* TLS goes through a BIO of its own that writes with MSG_NOSIGNAL: a
 * daemon that hangs up must never kill kiln with SIGPIPE. */
static int bio_write(BIO *b, const char *data, int n)
{
        const struct conn *c = BIO_get_data(b);
        ssize_t k;

        BIO_clear_retry_flags(b);
        k = send(c->fd, data, (size_t) n, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                BIO_set_retry_write(b);
        return (int) k;
}

static int bio_read(BIO *b, char *data, int n)
{
        const struct conn *c = BIO_get_data(b);
        ssize_t k;

        BIO_clear_retry_flags(b);
        k = recv(c->fd, data, (size_t) n, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                BIO_set_retry_read(b);
        return (int) k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
        (void) b, (void) num, (void) ptr;
        return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
        BIO_set_init(b, 1);
        return 1;
}

/* ---- one exchange: a request and its answer ---- */

enum parse_state {
        PARSE_STATUS,  /* the status line */
        PARSE_HEADERS, /* header lines, up to the empty one */
        PARSE_BODY_LENGTH,
        PARSE_BODY_CLOSE, /* until the daemon closes the connection */
        PARSE_CHUNK_SIZE,
        PARSE_CHUNK_DATA,
        PARSE_CHUNK_END, /* the CRLF after a chunk's data */
        PARSE_TRAILERS,
        PARSE_DONE,
};

struct exchange {
        const struct kiln_cli_http_target *target;
        const char *method;
        const char *path;
        struct conn conn;
        bool cert_rejected; /* the daemon's certificate failed verification */

        /* Limits of time, on CLOCK_MONOTONIC in ms (0: none). */
        uint64_t timeout_ms; /* of the whole exchange */
        uint64_t deadline;
        uint64_t connect_timeout_ms;
        uint64_t connect_deadline; /* while connecting only */
        uint64_t idle_ms;
        uint64_t last_io;
        const atomic_bool *cancel;

        /* The request: a body in memory or produced as it is sent. */
        const char *accept;
        const char *content_type;
        const char *body;
        size_t body_len;
        const struct kiln_cli_http_body *upload;

        /* The answer. Its body goes whole into answer, or as events of a
         * 2xx stream to stream, or as bytes of a 2xx download to sink (an
         * error answer of a stream or a download still goes to answer). */
        enum parse_state state;
        struct kiln_buf line; /* the line being gathered */
        size_t head_len;      /* bytes of the head (or trailers) so far */
        bool chunked;
        bool have_coding; /* a Transfer-Encoding: it decides over Content-Length */
        bool have_length;
        uint64_t length;
        uint64_t left; /* of the body or of the current chunk */
        long status;
        size_t received; /* bytes of the answer */
        struct kiln_buf answer;
        struct kiln_cli_ndjson *stream;
        kiln_cli_http_sink_fn sink;
        void *sink_userdata;
        char *rbuf;

        /* How reading ended before the answer was complete: the end of
         * the connection, or an error (read_err, with its cause). */
        bool eof;
        int read_err;
        char *read_cause;
        /* Sending failed (the daemon may still have answered). */
        int send_err;
        char *send_cause;
};

static void exchange_release(struct exchange *x)
{
        conn_close(&x->conn);
        kiln_buf_release(&x->line);
        kiln_buf_release(&x->answer);
        free(x->rbuf);
        free(x->read_cause);
        free(x->send_cause);
        *x = (struct exchange){ .conn.fd = -1 };
}

static uint64_t now_ms(void)
{
        return (uint64_t) kiln_mono_ms();
}

static bool is_tls(const struct kiln_cli_http_target *t)
{
        return startswith(t->address, "tcp://") && !t->plain_http;
}

/* A failure of the exchange itself: "METHOD PATH on 'ADDRESS': cause", with
 * a hint about client certificates when a TLS daemon hung up. */
_printf_(4, 5) static int fail(const struct exchange *x, struct kiln_error **err, int code,
                               const char *fmt, ...)
{
        const struct kiln_cli_http_target *t = x->target;
        _cleanup_free_ char *cause = NULL;
        const char *hint = "";
        va_list ap;

        va_start(ap, fmt);
        cause = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        /* A daemon started with --tlscacert hangs up on a client without a
         * certificate; say what is most likely missing. */
        if (is_tls(t) && !t->cert_file && (code == -ECONNRESET || code == -EPROTO) &&
            !x->cert_rejected)
                hint = " (the daemon may require a client certificate: --driver-opt "
                       "cert=...,key=...)";
        else if (is_tls(t) && t->cert_file && code == -ECONNRESET)
                hint = " (the daemon may not trust the client certificate)";
        return kiln_error_set(err, code, "%s %s on '%s': %s%s", x->method, x->path, t->address,
                              cause, hint);
}

static bool cancelled(const struct exchange *x)
{
        return x->cancel && atomic_load(x->cancel);
}

/* Fails when a limit of time is past or the exchange is cancelled; else
 * *until is when the next one falls (UINT64_MAX: none). Checked before
 * every wait, and on every turn of the loops that do not wait (a peer that
 * keeps the socket busy must not outlast them). */
static int check_limits(struct exchange *x, uint64_t now, uint64_t *until, struct kiln_error **err)
{
        *until = UINT64_MAX;
        if (cancelled(x))
                return fail(x, err, -ECANCELED, "cancelled");
        if (x->connect_deadline) {
                if (now >= x->connect_deadline)
                        return fail(x, err, -ETIMEDOUT, "connection timed out after %" PRIu64 " ms",
                                    x->connect_timeout_ms);
                *until = x->connect_deadline;
        }
        if (x->deadline) {
                if (now >= x->deadline)
                        return fail(x, err, -ETIMEDOUT,
                                    "no complete answer within %" PRIu64 " ms (%zu bytes received)",
                                    x->timeout_ms, x->received);
                *until = x->deadline < *until ? x->deadline : *until;
        }
        if (x->idle_ms) {
                if (now >= x->last_io + x->idle_ms)
                        return fail(x, err, -ETIMEDOUT, "nothing received for %" PRIu64 " s",
                                    x->idle_ms / 1000u);
                *until = x->last_io + x->idle_ms < *until ? x->last_io + x->idle_ms : *until;
        }
        return 0;
}

/* Waits until the connection is ready for events; returns the events that
 * happened, or fails on a timeout or cancellation. */
static int wait_io(struct exchange *x, short events, struct kiln_error **err)
{
        for (;;) {
                uint64_t now = now_ms(), until, wait;
                struct pollfd p = { .fd = x->conn.fd, .events = events };
                int n = check_limits(x, now, &until, err);

                if (n < 0)
                        return n;
                wait = until == UINT64_MAX ? UINT64_MAX : until - now;
                if (x->cancel && wait > CANCEL_POLL_MS)
                        wait = CANCEL_POLL_MS;
                n = poll(&p, 1, wait > INT_MAX ? -1 : (int) wait);
                if (n < 0 && errno != EINTR)
                        return fail(x, err, -errno, "poll: %s", strerror(errno));
                if (n > 0)
                        return p.revents;
        }
}

/* The result of a TLS call that did not succeed: -EAGAIN with *want set
 * (the events to wait for), 0 at the end of the connection, or -errno with
 * *cause (caller frees). */
static int tls_result(struct conn *c, int k, short *want, char **cause)
{
        unsigned long e;

        switch (SSL_get_error(c->ssl, k)) {
        case SSL_ERROR_WANT_READ:
                *want = POLLIN;
                return -EAGAIN;
        case SSL_ERROR_WANT_WRITE:
                *want = POLLOUT;
                return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return 0;
        case SSL_ERROR_SYSCALL:
                if (errno == 0 || k == 0)
                        return 0;
                *cause = kiln_xstrdup(strerror(errno));
                return errno == EPIPE ? -ECONNRESET : -errno;
        default:
                e = ERR_get_error();
                *cause = kiln_xstrdup(e && ERR_reason_error_string(e) ? ERR_reason_error_string(e)
                                                                      : "TLS error");
                ERR_clear_error();
                return -ECONNRESET;
        }
}

/* > 0 bytes read, 0 at the end, -EAGAIN (wait for *want), or -errno with
 * *cause. */
static ssize_t conn_read(struct conn *c, void *buf, size_t n, short *want, char **cause)
{
        ssize_t k;

        if (!c->ssl) {
                k = recv(c->fd, buf, n, 0);
                if (k >= 0)
                        return k;
                if (errno == EAGAIN || errno == EINTR) {
                        *want = POLLIN;
                        return -EAGAIN;
                }
                *cause = kiln_xstrdup(strerror(errno));
                return -errno;
        }
        ERR_clear_error();
        errno = 0;
        k = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int) n);
        return k > 0 ? k : tls_result(c, (int) k, want, cause);
}

static ssize_t conn_write(struct conn *c, const void *buf, size_t n, short *want, char **cause)
{
        ssize_t k;

        if (!c->ssl) {
                k = send(c->fd, buf, n, MSG_NOSIGNAL);
                if (k >= 0)
                        return k;
                if (errno == EAGAIN || errno == EINTR) {
                        *want = POLLOUT;
                        return -EAGAIN;
                }
                *cause = kiln_xstrdup(strerror(errno));
                return errno == EPIPE ? -ECONNRESET : -errno;
        }
        ERR_clear_error();
        errno = 0;
        k = SSL_write(c->ssl, buf, n > INT_MAX ? INT_MAX : (int) n);
        if (k > 0)
                return k;
        k = tls_result(c, (int) k, want, cause);
        if (k == 0) {
                *cause = kiln_xstrdup("the connection is closed");
                return -ECONNRESET;
        }
        return k;
}

/* ---- connecting ---- */

static int connect_unix(struct exchange *x, const char *path, struct kiln_error **err)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        uint64_t now = now_ms(), ms = x->connect_deadline > now ? x->connect_deadline - now : 1;
        struct timeval tv = { .tv_sec = (time_t) (ms / 1000u),
                              .tv_usec = (suseconds_t) (ms % 1000u) * 1000 };
        int fd, e;

        if (strlen(path) >= sizeof(sa.sun_path))
                return fail(x, err, -ENAMETOOLONG, "socket path '%s' is too long", path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return fail(x, err, -errno, "socket: %s", strerror(errno));
        x->conn.fd = fd;
        /* A blocking connect, bounded: a listener whose backlog is full
         * makes it wait rather than fail at once. */
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        /* With SO_SNDTIMEO set, a signal is not restarted over. */
        while ((e = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ? errno : 0) == EINTR &&
               now_ms() < x->connect_deadline)
                ;
        if (e == EISCONN) /* the interrupted attempt went through */
                e = 0;
        if (e) {
                if (e == ENOENT)
                        return fail(x, err, -ECONNREFUSED, "no socket at '%s'", path);
                if (e == EACCES)
                        return fail(x, err, -EACCES, "permission denied on '%s'", path);
                if (e == ECONNREFUSED)
                        return fail(x, err, -ECONNREFUSED,
                                    "connection refused (nothing listens on '%s')", path);
                if (e == EAGAIN || e == EINPROGRESS)
                        return fail(x, err, -ETIMEDOUT, "connection timed out after %" PRIu64 " ms",
                                    x->connect_timeout_ms);
                return fail(x, err, e == ENOTSOCK ? -ECONNREFUSED : -e, "connect to '%s': %s", path,
                            strerror(e));
        }
        tv = (struct timeval){ 0 };
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                return fail(x, err, -errno, "fcntl: %s", strerror(errno));
        return 0;
}

/* One address of a host: 0 connected, or -errno (*cause set). */
static int connect_one(struct exchange *x, const struct addrinfo *ai, int *cause_errno,
                       struct kiln_error **err)
{
        int fd, one = 1, so = 0, r;
        socklen_t len = sizeof(so);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
                *cause_errno = errno;
                return -errno;
        }
        x->conn.fd = fd;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                if (errno != EINPROGRESS && errno != EINTR) {
                        *cause_errno = errno;
                        r = -errno;
                        goto fail;
                }
                r = wait_io(x, POLLOUT, err);
                if (r < 0)
                        return r; /* a timeout: no other address gets a chance */
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len) < 0)
                        so = errno;
                if (so != 0) {
                        *cause_errno = so;
                        r = -so;
                        goto fail;
                }
        }
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return 0;
fail:
        (void) close(fd);
        x->conn.fd = -1;
        return r;
}

static int connect_tcp(struct exchange *x, const char *host, const char *port,
                       struct kiln_error **err)
{
        const struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        struct addrinfo *ai = NULL;
        int cause = ECONNREFUSED, r;

        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return fail(x, err, -EHOSTUNREACH, "could not resolve host '%s': %s", host,
                            r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        r = -ECONNREFUSED;
        for (const struct addrinfo *a = ai; a; a = a->ai_next) {
                r = connect_one(x, a, &cause, err);
                if (r == 0 || r == -ETIMEDOUT || r == -ECANCELED)
                        break;
        }
        freeaddrinfo(ai);
        if (r == -ETIMEDOUT || r == -ECANCELED)
                return r;
        if (r < 0)
                return fail(x, err, -ECONNREFUSED, "connect to %s port %s: %s", host, port,
                            strerror(cause));
        return 0;
}

static bool is_ip_literal(const char *s)
{
        unsigned char buf[sizeof(struct in6_addr)];

        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static int no_password(char *buf, int size, int rwflag, void *userdata)
{
        (void) buf, (void) size, (void) rwflag, (void) userdata;
        return 0; /* never prompt on the terminal for a key's passphrase */
}

static const char *ssl_reason(void)
{
        unsigned long e = ERR_peek_last_error();
        const char *s = e ? ERR_reason_error_string(e) : NULL;

        return s ? s : "unknown error";
}

static int tls_setup(struct exchange *x, const char *name, struct kiln_error **err)
{
        const struct kiln_cli_http_target *t = x->target;
        struct conn *c = &x->conn;
        BIO *bio;

        ERR_clear_error();
        c->ctx = SSL_CTX_new(TLS_client_method());
        if (!c->ctx)
                return fail(x, err, -ENOMEM, "cannot create a TLS context: %s", ssl_reason());
        (void) SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_passwd_cb(c->ctx, no_password);
        SSL_CTX_set_mode(c->ctx,
                         SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* HTTP's own framing tells a cut answer from a complete one. */
        SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (t->ca_file ? SSL_CTX_load_verify_locations(c->ctx, t->ca_file, NULL) != 1
                       : SSL_CTX_set_default_verify_paths(c->ctx) != 1)
                return fail(x, err, -EPROTO, "cannot load the CA certificates '%s': %s",
                            t->ca_file ? t->ca_file : "(system)", ssl_reason());
        if (t->cert_file) {
                const char *key = t->key_file ? t->key_file : t->cert_file;

                if (SSL_CTX_use_certificate_chain_file(c->ctx, t->cert_file) != 1)
                        return fail(x, err, -EPROTO, "cannot load the client certificate '%s': %s",
                                    t->cert_file, ssl_reason());
                if (SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(c->ctx) != 1)
                        return fail(x, err, -EPROTO, "cannot load the client key '%s': %s", key,
                                    ssl_reason());
        }

        c->bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kiln socket");
        if (!c->bio_method || BIO_meth_set_write(c->bio_method, bio_write) != 1 ||
            BIO_meth_set_read(c->bio_method, bio_read) != 1 ||
            BIO_meth_set_ctrl(c->bio_method, bio_ctrl) != 1 ||
            BIO_meth_set_create(c->bio_method, bio_create) != 1)
                return fail(x, err, -ENOMEM, "cannot create a TLS connection: %s", ssl_reason());
        c->ssl = SSL_new(c->ctx);
        bio = c->ssl ? BIO_new(c->bio_method) : NULL;
        if (!bio)
                return fail(x, err, -ENOMEM, "cannot create a TLS connection: %s", ssl_reason());
        BIO_set_data(bio, c);
        SSL_set_bio(c->ssl, bio, bio);
        SSL_set_connect_state(c->ssl);

        if (is_ip_literal(name)) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1)
                        return fail(x, err, -EPROTO, "bad address '%s' to verify", name);
        } else {
                /* SNI carries names only, never addresses. */
                if (SSL_set_tlsext_host_name(c->ssl, name) != 1 || SSL_set1_host(c->ssl, name) != 1)
                        return fail(x, err, -EPROTO, "bad server name '%s': %s", name,
                                    ssl_reason());
                SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        }
        return 0;
}

static int tls_handshake(struct exchange *x, struct kiln_error **err)
{
        struct conn *c = &x->conn;

        for (;;) {
                _cleanup_free_ char *cause = NULL;
                short want = POLLIN;
                long v;
                int k, r;

                ERR_clear_error();
                errno = 0;
                k = SSL_connect(c->ssl);
                if (k == 1)
                        return 0;
                v = SSL_get_verify_result(c->ssl);
                if (v != X509_V_OK) {
                        x->cert_rejected = true;
                        return fail(x, err, -EPROTO, "TLS handshake: certificate verify failed: %s",
                                    X509_verify_cert_error_string(v));
                }
                r = tls_result(c, k, &want, &cause);
                if (r == 0)
                        return fail(x, err, -EPROTO,
                                    "TLS handshake: the daemon closed the connection");
                if (r != -EAGAIN)
                        return fail(x, err, -EPROTO, "TLS handshake: %s", cause);
                r = wait_io(x, want, err);
                if (r < 0)
                        return r;
        }
}

static int exchange_connect(struct exchange *x, char **ret_host, struct kiln_error **err)
{
        _cleanup_(kiln_config_address_release) struct kiln_config_address a = {
                .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID
        };
        const char *host;
        int r;

        r = kiln_config_address_parse(x->target->address, &a, err);
        if (r < 0)
                return r;
        if (x->connect_timeout_ms == 0)
                x->connect_timeout_ms = CONNECT_TIMEOUT_MS;
        /* The idle limit counts from here: waits of the connect and the
         * handshake are measured against it too. */
        x->last_io = now_ms();
        x->connect_deadline = x->last_io + x->connect_timeout_ms;
        if (x->deadline && x->deadline < x->connect_deadline)
                x->connect_deadline = x->deadline;
        if (a.kind == KILN_CONFIG_ADDRESS_UNIX) {
                r = connect_unix(x, a.path, err);
                *ret_host = kiln_xstrdup("localhost");
        } else {
                const char *name = x->target->server_name;

                host = a.host[0] ? a.host : "localhost";
                r = connect_tcp(x, host, a.port, err);
                if (r >= 0 && !x->target->plain_http)
                        r = tls_setup(x, name && name[0] ? name : host, err);
                if (r >= 0 && !x->target->plain_http)
                        r = tls_handshake(x, err);
                if (name && name[0] && !x->target->plain_http)
                        host = name;
                /* An IPv6 host goes back into brackets. */
                *ret_host = strchr(host, ':') ? kiln_xasprintf("[%s]:%s", host, a.port)
                                              : kiln_xasprintf("%s:%s", host, a.port);
        }
        x->connect_deadline = 0;
        x->last_io = now_ms();
        return r;
}

/* ---- the answer ---- */

/* A piece of the answer's body. */
static int deliver(struct exchange *x, const char *data, size_t n, struct kiln_error **err)
{
        int r;

        if ((x->stream || x->sink) && x->status >= 200 && x->status < 300) {
                if (x->stream) {
                        r = kiln_cli_ndjson_feed(x->stream, data, n, err);
                        if (r < 0)
                                return kiln_error_wrap(err, "%s %s on '%s'", x->method, x->path,
                                                       x->target->address);
                        return 0;
                }
                r = x->sink(x->sink_userdata, data, n, err);
                if (r < 0 && !*err)
                        return fail(x, err, r, "the answer could not be written");
                return r < 0 ? r : 0;
        }
        if (kiln_buf_append(&x->answer, data, n) < 0) {
                if (x->sink) {
                        /* a download's error answer: what was kept is enough */
                        size_t room = x->answer.max - x->answer.len;

                        (void) kiln_buf_append(&x->answer, data, room < n ? room : n);
                        return 0;
                }
                return fail(x, err, -E2BIG, "the answer is larger than %zu bytes", x->answer.max);
        }
        return 0;
}

/* Gathers a line into x->line; 1 when it is complete (without its CRLF),
 * 0 when all of data went into it, -E2BIG past max. *used: bytes taken. */
static int take_line(struct exchange *x, const char *data, size_t n, size_t max, size_t *used,
                     struct kiln_error **err)
{
        const char *nl = memchr(data, '\n', n);
        size_t part = nl ? (size_t) (nl - data) : n;

        *used = nl ? part + 1 : part;
        x->head_len += *used;
        if (x->line.len + part > max || kiln_buf_append(&x->line, data, part) < 0 ||
            x->head_len > KILN_LIMIT_CLI_HTTP_HEAD)
                return fail(x, err, -E2BIG,
                            x->state == PARSE_CHUNK_SIZE ? "a chunk size line is longer than %zu "
                                                           "bytes"
                                                         : "the answer's head is larger than %zu "
                                                           "bytes",
                            max);
        if (!nl)
                return 0;
        if (x->line.len > 0 && x->line.data[x->line.len - 1] == '\r')
                x->line.data[--x->line.len] = '\0';
        return 1;
}

static bool token_is(const char *s, size_t n, const char *token)
{
        return strlen(token) == n && strncasecmp(s, token, n) == 0;
}

static int parse_status_line(struct exchange *x, struct kiln_error **err)
{
        const char *s = x->line.data;

        if (!startswith(s, "HTTP/1.") || !isdigit((unsigned char) s[7]) || s[8] != ' ' ||
            !isdigit((unsigned char) s[9]) || !isdigit((unsigned char) s[10]) ||
            !isdigit((unsigned char) s[11]) || (s[12] != '\0' && s[12] != ' ')) {
                _cleanup_free_ char *q = kiln_quote_untrusted(s, x->line.len, 64);

                return fail(x, err, -EBADMSG, "the answer is not HTTP/1.x: '%s'", q);
        }
        x->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
        x->state = PARSE_HEADERS;
        return 0;
}

static int parse_header(struct exchange *x, struct kiln_error **err)
{
        const char *s = x->line.data, *colon = strchr(s, ':'), *v, *end;
        size_t name_len;

        if (!colon || colon == s) {
                _cleanup_free_ char *q = kiln_quote_untrusted(s, x->line.len, 64);

                return fail(x, err, -EBADMSG, "bad header line '%s' in the answer", q);
        }
        name_len = (size_t) (colon - s);
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
                v++;
        end = s + x->line.len;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        if (token_is(s, name_len, "Content-Length")) {
                uint64_t n = 0;

                if (v == end)
                        return fail(x, err, -EBADMSG, "empty Content-Length in the answer");
                for (const char *p = v; p < end; p++) {
                        if (!isdigit((unsigned char) *p) || n > (UINT64_MAX - 9) / 10)
                                return fail(x, err, -EBADMSG, "bad Content-Length in the answer");
                        n = n * 10 + (uint64_t) (*p - '0');
                }
                if (x->have_length && x->length != n)
                        return fail(x, err, -EBADMSG,
                                    "conflicting Content-Length headers in the answer");
                x->have_length = true;
                x->length = n;
        } else if (token_is(s, name_len, "Transfer-Encoding")) {
                /* chunked is always the last coding when present */
                const char *last = end;

                while (last > v && last[-1] != ',' && last[-1] != ' ' && last[-1] != '\t')
                        last--;
                x->have_coding = true;
                x->chunked = token_is(last, (size_t) (end - last), "chunked");
        }
        return 0;
}

/* The empty line after the headers: what the body is. */
static void head_done(struct exchange *x)
{
        x->head_len = 0;
        if (x->status >= 100 && x->status < 200) {
                /* an interim answer: the real one follows */
                x->status = 0;
                x->chunked = x->have_coding = x->have_length = false;
                x->length = 0;
                x->state = PARSE_STATUS;
                return;
        }
        if (streq(x->method, "HEAD") || x->status == 204 || x->status == 304)
                x->state = PARSE_DONE;
        else if (x->chunked)
                x->state = PARSE_CHUNK_SIZE;
        else if (x->have_length && !x->have_coding) {
                x->left = x->length;
                x->state = x->left ? PARSE_BODY_LENGTH : PARSE_DONE;
        } else
                x->state = PARSE_BODY_CLOSE;
}

static int parse_chunk_size(struct exchange *x, struct kiln_error **err)
{
        const char *p = x->line.data;
        uint64_t n = 0;

        if (!isxdigit((unsigned char) *p))
                return fail(x, err, -EBADMSG, "bad chunk size in the answer");
        for (; isxdigit((unsigned char) *p); p++) {
                if (n > UINT64_MAX >> 4)
                        return fail(x, err, -EBADMSG, "bad chunk size in the answer");
                n = n << 4 | (uint64_t) ascii_hex_value(*p);
        }
        if (*p != '\0' && *p != ';' && *p != ' ' && *p != '\t')
                return fail(x, err, -EBADMSG, "bad chunk size in the answer");
        x->left = n;
        x->head_len = 0;
        x->state = n ? PARSE_CHUNK_DATA : PARSE_TRAILERS;
        return 0;
}

/* Feeds bytes of the answer as they come. */
static int parse_feed(struct exchange *x, const char *data, size_t n, struct kiln_error **err)
{
        x->received += n;
        while (n > 0 && x->state != PARSE_DONE) {
                size_t used = n;
                int r = 0;

                switch (x->state) {
                case PARSE_STATUS:
                case PARSE_HEADERS:
                case PARSE_CHUNK_SIZE:
                case PARSE_TRAILERS:
                        r = take_line(x, data, n,
                                      x->state == PARSE_CHUNK_SIZE ? KILN_LIMIT_CLI_HTTP_CHUNK_LINE
                                                                   : KILN_LIMIT_CLI_HTTP_HEAD,
                                      &used, err);
                        if (r <= 0)
                                break;
                        if (x->state == PARSE_STATUS)
                                /* tolerated: empty lines before the status line */
                                r = x->line.len == 0 ? 0 : parse_status_line(x, err);
                        else if (x->state == PARSE_HEADERS && x->line.len == 0)
                                head_done(x);
                        else if (x->state == PARSE_HEADERS)
                                r = parse_header(x, err);
                        else if (x->state == PARSE_CHUNK_SIZE)
                                r = parse_chunk_size(x, err);
                        else if (x->line.len == 0)
                                x->state = PARSE_DONE; /* trailers are skipped */
                        kiln_buf_reset(&x->line);
                        break;
                case PARSE_BODY_LENGTH:
                case PARSE_CHUNK_DATA:
                        used = n < x->left ? n : (size_t) x->left;
                        r = deliver(x, data, used, err);
                        x->left -= used;
                        if (x->left == 0)
                                x->state =
                                        x->state == PARSE_CHUNK_DATA ? PARSE_CHUNK_END : PARSE_DONE;
                        break;
                case PARSE_BODY_CLOSE:
                        r = deliver(x, data, n, err);
                        break;
                case PARSE_CHUNK_END:
                        used = 0;
                        if (data[0] == '\r' && x->line.len == 0) {
                                (void) kiln_buf_putc(&x->line, '\r');
                                used = 1;
                        } else if (data[0] == '\n') {
                                kiln_buf_reset(&x->line);
                                x->state = PARSE_CHUNK_SIZE;
                                x->head_len = 0;
                                used = 1;
                        } else
                                r = fail(x, err, -EBADMSG, "a chunk does not end with CRLF");
                        break;
                case PARSE_DONE:
                        break;
                }
                if (r < 0)
                        return r;
                data += used;
                n -= used;
        }
        return 0;
}

/* Reads what the connection has now without waiting. 1: reading is over
 * (the answer is complete, or the connection ended or failed), or an
 * answer's final head came while the request was still being sent; 0:
 * nothing more now. */
static int read_some(struct exchange *x, short *want, struct kiln_error **err)
{
        for (;;) {
                _cleanup_free_ char *cause = NULL;
                ssize_t k;
                int r;

                uint64_t until;

                if (x->state == PARSE_DONE || x->eof || x->read_err)
                        return 1;
                r = check_limits(x, now_ms(), &until, err);
                if (r < 0)
                        return r;
                *want = POLLIN;
                k = conn_read(&x->conn, x->rbuf, IO_CHUNK, want, &cause);
                if (k == -EAGAIN)
                        return 0;
                if (k == 0) {
                        x->eof = true;
                        return 1;
                }
                if (k < 0) {
                        x->read_err = k == -EPIPE ? -ECONNRESET : (int) k;
                        x->read_cause = TAKE_PTR(cause);
                        return 1;
                }
                x->last_io = now_ms();
                r = parse_feed(x, x->rbuf, (size_t) k, err);
                if (r < 0)
                        return r;
                if (cancelled(x))
                        return fail(x, err, -ECANCELED, "cancelled");
        }
}

/* After reading ended: a complete answer, or an error that says why not. */
static int answer_end(struct exchange *x, struct kiln_error **err)
{
        if (x->state == PARSE_DONE)
                return 0;
        /* Only the end of the connection ends such a body; over TLS, only
         * its close_notify (a cut TCP connection is no end). */
        if (x->state == PARSE_BODY_CLOSE && x->eof) {
                if (!x->conn.ssl || (SSL_get_shutdown(x->conn.ssl) & SSL_RECEIVED_SHUTDOWN))
                        return 0;
                return fail(x, err, -ECONNRESET,
                            "the TLS connection was cut before the end of the answer (%zu bytes "
                            "received, no close_notify)",
                            x->received);
        }
        /* An error answer cut short is still the daemon's answer. */
        if (x->status >= 400 && x->state > PARSE_HEADERS)
                return 0;
        if (x->state == PARSE_STATUS && x->line.len == 0 && x->received == 0) {
                if (x->read_err)
                        return fail(x, err, x->read_err, "receive: %s", x->read_cause);
                if (x->send_err)
                        return fail(x, err, x->send_err,
                                    "the daemon closed the connection while the request was "
                                    "sent (%s)",
                                    x->send_cause);
                return fail(x, err, -ECONNRESET,
                            "the daemon closed the connection without answering");
        }
        if (x->read_err)
                return fail(x, err, x->read_err, "receive: %s", x->read_cause);
        return fail(x, err, -ECONNRESET,
                    "the daemon closed the connection before the end of the answer (%zu bytes "
                    "received)",
                    x->received);
}

static int read_answer(struct exchange *x, struct kiln_error **err)
{
        for (;;) {
                short want = POLLIN;
                int r;

                r = read_some(x, &want, err);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
                r = wait_io(x, want, err);
                if (r < 0)
                        return r;
        }
        if (cancelled(x))
                return fail(x, err, -ECANCELED, "cancelled");
        return answer_end(x, err);
}

/* ---- the request ---- */

/* Sends all of data, unless the daemon answers (or hangs up) first.
 * 0: sent; 1: stop sending, read the answer; -errno on failure. */
static int send_bytes(struct exchange *x, const char *data, size_t n, struct kiln_error **err)
{
        while (n > 0) {
                _cleanup_free_ char *cause = NULL;
                short want = POLLOUT, rwant = POLLIN;
                uint64_t until;
                ssize_t k;
                int r = check_limits(x, now_ms(), &until, err);

                if (r < 0)
                        return r;
                k = conn_write(&x->conn, data, n, &want, &cause);
                if (k > 0) {
                        data += k;
                        n -= (size_t) k;
                        x->last_io = now_ms();
                        continue;
                }
                if (k != -EAGAIN) {
                        /* The daemon may have answered before it hung up:
                         * its answer says more than a broken pipe. */
                        x->send_err = (int) k;
                        x->send_cause = TAKE_PTR(cause);
                        return 1;
                }
                r = wait_io(x, (short) (want | POLLIN), err);
                if (r < 0)
                        return r;
                if (r & (POLLIN | POLLHUP | POLLERR)) {
                        /* Over TLS, readable may be a session ticket only. */
                        r = read_some(x, &rwant, err);
                        if (r < 0)
                                return r;
                        if (r > 0 || x->state > PARSE_HEADERS)
                                return 1;
                }
        }
        return 0;
}

static int send_upload(struct exchange *x, struct kiln_error **err)
{
        const struct kiln_cli_http_body *b = x->upload;
        _cleanup_free_ char *buf = kiln_xmalloc(IO_CHUNK + 32);
        /* a chunk's size line goes right before its data */
        char *data = buf + 16;
        uint64_t sent = 0;

        for (;;) {
                struct kiln_error *read_err = NULL;
                char size_line[16];
                ssize_t n;
                int r, h;

                n = b->read(b->userdata, data, IO_CHUNK, &read_err);
                if (n < 0) {
                        if (!read_err)
                                return fail(x, err, (int) n, "the request body failed");
                        *err = kiln_error_free(*err);
                        *err = read_err;
                        return (int) n;
                }
                kiln_error_free(read_err);
                if ((size_t) n > IO_CHUNK)
                        return fail(x, err, -EIO,
                                    "the request body's reader gave %zd bytes, more than the "
                                    "%u asked",
                                    n, (unsigned) IO_CHUNK);
                if (b->size >= 0) {
                        if (n == 0 && sent != (uint64_t) b->size)
                                return fail(x, err, -EIO,
                                            "the request body ended after %" PRIu64 " of %" PRId64
                                            " bytes",
                                            sent, b->size);
                        if (n == 0)
                                return 0;
                        if (sent + (uint64_t) n > (uint64_t) b->size)
                                return fail(x, err, -EIO,
                                            "the request body is longer than %" PRId64 " bytes",
                                            b->size);
                        r = send_bytes(x, data, (size_t) n, err);
                } else if (n == 0)
                        return send_bytes(x, "0\r\n\r\n", 5, err);
                else {
                        h = snprintf(size_line, sizeof(size_line), "%zx\r\n", (size_t) n);
                        memcpy(data - h, size_line, (size_t) h);
                        memcpy(data + n, "\r\n", 2);
                        r = send_bytes(x, data - h, (size_t) h + (size_t) n + 2, err);
                }
                if (r != 0)
                        return r;
                sent += (uint64_t) n;
        }
}

static int send_request(struct exchange *x, const char *host, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf head = KILN_BUF_INIT(REQUEST_HEAD_MAX);
        int r = 0;

        for (const char *p = x->path; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == 0x7f)
                        return fail(x, err, -EINVAL, "the path has a space or control byte");
        r |= kiln_buf_printf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kiln\r\n", x->method,
                             x->path, host);
        r |= kiln_buf_printf(&head, "Accept: %s\r\n", x->accept ? x->accept : "*/*");
        if (x->content_type)
                r |= kiln_buf_printf(&head, "Content-Type: %s\r\n", x->content_type);
        if (x->upload && x->upload->size < 0)
                r |= kiln_buf_puts(&head, "Transfer-Encoding: chunked\r\n");
        else if (x->upload)
                r |= kiln_buf_printf(&head, "Content-Length: %" PRId64 "\r\n", x->upload->size);
        else if (x->body || (!streq(x->method, "GET") && !streq(x->method, "HEAD")))
                r |= kiln_buf_printf(&head, "Content-Length: %zu\r\n", x->body_len);
        r |= kiln_buf_puts(&head, "Connection: close\r\n\r\n");
        if (r < 0)
                return fail(x, err, -E2BIG, "the request head is larger than %u bytes",
                            REQUEST_HEAD_MAX);

        r = send_bytes(x, head.data, head.len, err);
        if (r == 0 && x->body && x->body_len > 0)
                r = send_bytes(x, x->body, x->body_len, err);
        else if (r == 0 && x->upload)
                r = send_upload(x, err);
        return r < 0 ? r : 0;
}

/* Runs the exchange; on failure sets *err with the address and the cause. */
static int exchange_run(struct exchange *x, struct kiln_error **err)
{
        _cleanup_free_ char *host = NULL;
        int r;

        x->rbuf = kiln_xmalloc(IO_CHUNK);
        if (x->timeout_ms)
                x->deadline = now_ms() + x->timeout_ms;
        r = exchange_connect(x, &host, err);
        if (r < 0)
                return r;
        r = send_request(x, host, err);
        if (r < 0)
                return r;
        return read_answer(x, err);
}

static void exchange_init(struct exchange *x, const struct kiln_cli_http_target *t,
                          const char *method, const char *path, const char *accept)
{
        *x = (struct exchange){
                .target = t,
                .method = method,
                .path = path,
                .conn.fd = -1,
                .connect_timeout_ms = CONNECT_TIMEOUT_MS,
                .accept = accept,
                .line = KILN_BUF_INIT(KILN_LIMIT_CLI_HTTP_HEAD),
                .answer = KILN_BUF_INIT(KILN_LIMIT_API_RESPONSE),
        };
}

/* The error of a 4xx/5xx answer: the daemon's own message when it sent one. */
static int status_error(const char *method, const char *path, const char *address, long status,
                        const struct kiln_buf *body, struct kiln_error **err)
{
        _cleanup_free_ char *msg = kiln_api_error_parse(body->data, body->len);

        return kiln_error_set(err, -EIO, "%s %s on '%s': the daemon answered %ld: %s", method, path,
                              address, status, msg ? msg : "no error message");
}

void kiln_cli_http_response_release(struct kiln_cli_http_response *r)
{
        kiln_buf_release(&r->body);
        r->status = 0;
}

int kiln_cli_http_request(const struct kiln_cli_http_target *t, const char *method,
                          const char *path, const char *body, size_t body_len, uint64_t timeout_ms,
                          struct kiln_cli_http_response *resp, struct kiln_error **err)
{
        _cleanup_(exchange_release) struct exchange x = { .conn.fd = -1 };
        int r;

        exchange_init(&x, t, method, path, KILN_API_CONTENT_TYPE_JSON);
        x.content_type = body ? KILN_API_CONTENT_TYPE_JSON : NULL;
        x.body = body;
        x.body_len = body ? body_len : 0;
        x.timeout_ms = timeout_ms;
        /* the whole exchange's limit bounds the connection too */
        x.connect_timeout_ms = timeout_ms ? timeout_ms : CONNECT_TIMEOUT_MS;
        log_debug("%s %s on %s", method, path, t->address);
        r = exchange_run(&x, err);
        if (r < 0)
                return r;
        resp->status = x.status;
        kiln_buf_release(&resp->body);
        resp->body = x.answer;
        x.answer = KILN_BUF_INIT(0);
        return 0;
}

int kiln_cli_http_parse_answer(const char *data, size_t n, size_t piece, bool ended,
                               struct kiln_cli_http_response *resp, struct kiln_error **err)
{
        static const struct kiln_cli_http_target t = { .address = "unix:///answer" };
        _cleanup_(exchange_release) struct exchange x = { .conn.fd = -1 };
        int r = 0;

        exchange_init(&x, &t, "GET", "/", KILN_API_CONTENT_TYPE_JSON);
        if (piece == 0)
                piece = n ? n : 1;
        for (size_t off = 0; off < n && r >= 0 && x.state != PARSE_DONE; off += piece)
                r = parse_feed(&x, data + off, n - off < piece ? n - off : piece, err);
        if (r < 0)
                return r;
        x.eof = ended;
        if (x.state != PARSE_DONE && !ended)
                return fail(&x, err, -EAGAIN, "the answer is not complete");
        r = answer_end(&x, err);
        if (r < 0)
                return r;
        resp->status = x.status;
        kiln_buf_release(&resp->body);
        resp->body = x.answer;
        x.answer = KILN_BUF_INIT(0);
        return 0;
}

char *kiln_cli_http_json_body(json_t *j, size_t *ret_len)
{
        char *body = kiln_api_json_dump(j, ret_len);

        json_decref(j);
        return body;
}

/* A 2xx answer's JSON object into *ret; a 4xx/5xx answer's error. */
static int answer_json(const char *method, const char *path, const char *address, long status,
                       const struct kiln_buf *body, json_t **ret, struct kiln_error **err)
{
        json_error_t jerr;
        json_t *j;
        int r;

        if (status < 200 || status >= 300)
                return status_error(method, path, address, status, body, err);
        j = json_loadb(body->data ? body->data : "", body->len, 0, &jerr);
        if (!j || !json_is_object(j)) {
                r = kiln_error_set(err, -EBADMSG,
                                   "%s %s on '%s': the answer is not a JSON "
                                   "object%s%s",
                                   method, path, address, j ? "" : ": ", j ? "" : jerr.text);
                json_decref(j);
                return r;
        }
        *ret = j;
        return 0;
}

int kiln_cli_http_get_json(const struct kiln_cli_http_target *t, const char *path,
                           uint64_t timeout_ms, json_t **ret, struct kiln_error **err)
{
        struct kiln_cli_http_response resp = { .body = KILN_BUF_INIT(0) };
        int r;

        r = kiln_cli_http_request(t, "GET", path, NULL, 0, timeout_ms, &resp, err);
        if (r < 0)
                return r;
        r = answer_json("GET", path, t->address, resp.status, &resp.body, ret, err);
        kiln_cli_http_response_release(&resp);
        return r;
}

int kiln_cli_http_send_json(const struct kiln_cli_http_target *t, const char *method,
                            const char *path, const struct kiln_cli_http_body *body,
                            size_t max_answer, uint64_t timeout_ms, json_t **ret,
                            struct kiln_error **err)
{
        _cleanup_(exchange_release) struct exchange x = { .conn.fd = -1 };
        int r;

        exchange_init(&x, t, method, path, KILN_API_CONTENT_TYPE_JSON);
        x.content_type = body->content_type;
        x.upload = body;
        x.answer.max = max_answer;
        x.timeout_ms = timeout_ms;
        log_debug("%s %s on %s", method, path, t->address);
        r = exchange_run(&x, err);
        if (r < 0)
                return r;
        return answer_json(method, path, t->address, x.status, &x.answer, ret, err);
}

/* ---- NDJSON ---- */

void kiln_cli_ndjson_init(struct kiln_cli_ndjson *s, size_t max,
                          int (*on_event)(json_t *event, void *userdata, struct kiln_error **err),
                          void *userdata)
{
        *s = (struct kiln_cli_ndjson){
                .line = KILN_BUF_INIT(max),
                .on_event = on_event,
                .userdata = userdata,
        };
}

void kiln_cli_ndjson_release(struct kiln_cli_ndjson *s)
{
        kiln_buf_release(&s->line);
}

static int ndjson_emit(struct kiln_cli_ndjson *s, struct kiln_error **err)
{
        json_error_t jerr;
        json_t *j;
        size_t len = s->line.len;
        int r;

        while (len > 0 && (s->line.data[len - 1] == '\r' || s->line.data[len - 1] == ' '))
                len--;
        if (len == 0) {
                kiln_buf_reset(&s->line);
                return 0;
        }
        j = json_loadb(s->line.data, len, 0, &jerr);
        if (!j || !json_is_object(j)) {
                r = kiln_error_set(err, -EBADMSG, "event %zu is not a JSON object%s%s",
                                   s->n_events + 1, j ? "" : ": ", j ? "" : jerr.text);
                json_decref(j);
                return r;
        }
        kiln_buf_reset(&s->line);
        s->n_events++;
        r = s->on_event ? s->on_event(j, s->userdata, err) : 0;
        json_decref(j);
        return r;
}

int kiln_cli_ndjson_feed(struct kiln_cli_ndjson *s, const char *data, size_t n,
                         struct kiln_error **err)
{
        while (n > 0) {
                const char *nl = memchr(data, '\n', n);
                size_t part = nl ? (size_t) (nl - data) : n;
                int r;

                if (kiln_buf_append(&s->line, data, part) < 0)
                        return kiln_error_set(err, -E2BIG, "event %zu is longer than %zu bytes",
                                              s->n_events + 1, s->line.max);
                data += part;
                n -= part;
                if (!nl)
                        break;
                data++;
                n--;
                r = ndjson_emit(s, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

int kiln_cli_ndjson_finish(struct kiln_cli_ndjson *s, struct kiln_error **err)
{
        return ndjson_emit(s, err);
}

int kiln_cli_http_stream(const struct kiln_cli_http_target *t, const char *method, const char *path,
                         const char *body, size_t body_len, uint64_t timeout_ms,
                         int (*on_event)(json_t *event, void *userdata, struct kiln_error **err),
                         void *userdata, struct kiln_error **err)
{
        _cleanup_(exchange_release) struct exchange x = { .conn.fd = -1 };
        _cleanup_(kiln_cli_ndjson_release) struct kiln_cli_ndjson s;
        int r;

        kiln_cli_ndjson_init(&s, KILN_CLI_LIMIT_EVENT, on_event, userdata);
        exchange_init(&x, t, method, path, KILN_API_CONTENT_TYPE_JSON);
        x.content_type = body ? KILN_API_CONTENT_TYPE_JSON : NULL;
        x.body = body;
        x.body_len = body ? body_len : 0;
        x.stream = &s;
        x.connect_timeout_ms = timeout_ms ? timeout_ms : CONNECT_TIMEOUT_MS;
        x.idle_ms = timeout_ms ? timeout_ms : STREAM_IDLE_TIMEOUT_S * 1000u;
        log_debug("%s %s on %s (stream)", method, path, t->address);
        r = exchange_run(&x, err);
        if (r < 0)
                return r;
        if (x.status < 200 || x.status >= 300)
                return status_error(method, path, t->address, x.status, &x.answer, err);
        r = kiln_cli_ndjson_finish(&s, err);
        if (r < 0)
                return kiln_error_wrap(err, "%s %s on '%s'", method, path, t->address);
        return 0;
}

int kiln_cli_http_download(const struct kiln_cli_http_target *t, const char *path,
                           uint64_t connect_timeout_ms, uint64_t idle_timeout_s,
                           size_t max_error_body, kiln_cli_http_sink_fn sink, void *userdata,
                           const atomic_bool *cancel, struct kiln_error **err)
{
        _cleanup_(exchange_release) struct exchange x = { .conn.fd = -1 };
        int r;

        exchange_init(&x, t, "GET", path, NULL);
        x.answer.max = max_error_body;
        x.sink = sink;
        x.sink_userdata = userdata;
        x.cancel = cancel;
        x.connect_timeout_ms = connect_timeout_ms;
        x.idle_ms = idle_timeout_s * 1000u;
        log_debug("GET %s on %s (download)", path, t->address);
        r = exchange_run(&x, err);
        if (r < 0)
                return r;
        if (x.status < 200 || x.status >= 300)
                return status_error("GET", path, t->address, x.status, &x.answer, err);
        return 0;
}

/* ---- URLs ---- */

char *kiln_cli_http_escape(const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        char *ret = kiln_xmalloc(strlen(s) * 3 + 1), *o = ret;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~')
                        *o++ = (char) *p;
                else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = '\0';
        return ret;
}
