/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The client side of the daemon API (api/api.h): HTTP/1.1 of its own on
 * plain sockets, to a unix socket (unix://PATH) or over TLS (OpenSSL's
 * libssl) to TCP (tcp://HOST:PORT, always https, with an optional client
 * certificate for kilnd's --tlscacert). kiln's only peers are kilnd and a
 * Docker engine's /_ping: a client of its own starts in a fraction of the
 * time a general one takes to load, which every kiln command pays.
 *
 * Every call makes its own connection and closes it ("Connection: close"):
 * kiln's commands make a handful of requests, and a connection per call
 * keeps them independent. Calls on different threads are independent; no
 * global initialisation is needed. Writes never raise SIGPIPE.
 *
 * Errors are -errno with *err naming the address and the cause:
 *   -ECONNREFUSED  nothing accepts connections there (no daemon)
 *   -ETIMEDOUT     no answer within the timeout
 *   -ECONNRESET    the daemon closed the connection (a TLS daemon that
 *                  wants a client certificate does this)
 *   -EPROTO        TLS failed (certificate not trusted, bad key...)
 *   -E2BIG         the answer was larger than allowed
 *   -EBADMSG       the answer was not what the API promises
 *   -EIO           anything else, and 4xx/5xx answers (with the daemon's
 *                  "error" message)
 */

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/buf.h"
#include "base/error.h"

/* One line of a streamed (NDJSON) answer. */
#define KILN_CLI_LIMIT_EVENT (1u << 20)
/* The status line and headers of an answer (and the trailers of a chunked
 * one), together. */
#define KILN_LIMIT_CLI_HTTP_HEAD (64u << 10)
/* One chunk-size line of a chunked answer, extensions included. */
#define KILN_LIMIT_CLI_HTTP_CHUNK_LINE 4096u

struct kiln_cli_http_target {
        const char *address;   /* unix:///path or tcp://host:port */
        const char *ca_file;   /* tcp: CAs that sign the daemon's certificate; NULL: the system's */
        const char *cert_file; /* tcp: client certificate (PEM), with key_file */
        const char *key_file;  /* tcp: its private key (PEM) */
        const char *server_name; /* tcp: the name to verify the daemon's certificate against;
                                    NULL: the host of address */
        bool plain_http;         /* tcp: plain HTTP, no TLS (a Docker engine without
                                    DOCKER_TLS_VERIFY); never for kilnd */
};

struct kiln_cli_http_response {
        long status;
        struct kiln_buf body; /* at most KILN_LIMIT_API_RESPONSE bytes */
};

void kiln_cli_http_response_release(struct kiln_cli_http_response *r);

/* Sends one request (body may be NULL) and reads the whole answer into
 * *resp, whatever its status. timeout_ms bounds the whole exchange. */
int kiln_cli_http_request(const struct kiln_cli_http_target *t, const char *method,
                          const char *path, const char *body, size_t body_len, uint64_t timeout_ms,
                          struct kiln_cli_http_response *resp, struct kiln_error **err);

/* The answer parser the exchanges use, on bytes in memory (tests and the
 * fuzz target): data is one answer to a GET, fed in pieces of at most piece
 * bytes (0: all at once); ended says the connection closed after it. 0 with
 * *resp filled (its body at most KILN_LIMIT_API_RESPONSE bytes), -EAGAIN
 * when data is an incomplete answer and !ended, or the exchange's error. */
int kiln_cli_http_parse_answer(const char *data, size_t n, size_t piece, bool ended,
                               struct kiln_cli_http_response *resp, struct kiln_error **err);

/* GET path; a 2xx answer must be a JSON object, returned in *ret (a new
 * reference). A 4xx/5xx answer fails with the daemon's error message. */
int kiln_cli_http_get_json(const struct kiln_cli_http_target *t, const char *path,
                           uint64_t timeout_ms, json_t **ret, struct kiln_error **err);

/* A JSON request body: j written by kiln_api_json_dump, *ret_len bytes.
 * Consumes j. NULL when out of memory. */
char *kiln_cli_http_json_body(json_t *j, size_t *ret_len);

/* A request body produced as it is sent: fills buf with up to n bytes and
 * returns how many, 0 at its end; < 0 (with *err set) aborts the request,
 * which then fails with that error as it is. */
typedef ssize_t (*kiln_cli_http_read_fn)(void *userdata, void *buf, size_t n,
                                         struct kiln_error **err);

struct kiln_cli_http_body {
        const char *content_type;
        int64_t size; /* in bytes; -1: unknown, sent chunked */
        kiln_cli_http_read_fn read;
        void *userdata;
};

/* Sends a request whose body body->read produces while it is sent, so
 * that a large body is never held in memory. When the daemon answers
 * before the body is all sent (an error, typically), sending stops and
 * that answer is what counts. A 2xx answer (at most
 * max_answer bytes, else -E2BIG) must be a JSON object, returned in *ret (a
 * new reference); a 4xx/5xx answer fails with the daemon's error message.
 * timeout_ms bounds the whole exchange. */
int kiln_cli_http_send_json(const struct kiln_cli_http_target *t, const char *method,
                            const char *path, const struct kiln_cli_http_body *body,
                            size_t max_answer, uint64_t timeout_ms, json_t **ret,
                            struct kiln_error **err);

/* Newline-delimited JSON, as long-running calls answer: feed it bytes as
 * they come, and on_event is called with each complete line's object
 * (borrowed: on_event takes a reference to keep it). Empty lines are
 * skipped. A line longer than max, a line that is not a JSON object, or
 * on_event returning < 0 stops the stream with that error. */
struct kiln_cli_ndjson {
        struct kiln_buf line;
        int (*on_event)(json_t *event, void *userdata, struct kiln_error **err);
        void *userdata;
        size_t n_events;
};

void kiln_cli_ndjson_init(struct kiln_cli_ndjson *s, size_t max,
                          int (*on_event)(json_t *event, void *userdata, struct kiln_error **err),
                          void *userdata);
int kiln_cli_ndjson_feed(struct kiln_cli_ndjson *s, const char *data, size_t n,
                         struct kiln_error **err);
/* The end of the stream: a last line without a newline is still an event. */
int kiln_cli_ndjson_finish(struct kiln_cli_ndjson *s, struct kiln_error **err);
void kiln_cli_ndjson_release(struct kiln_cli_ndjson *s);

/* Takes n bytes of a download; < 0 (with *err set) stops it. */
typedef int (*kiln_cli_http_sink_fn)(void *userdata, const void *buf, size_t n,
                                     struct kiln_error **err);

/* GET path and hands the bytes of a 2xx answer to sink as they arrive,
 * whatever they are. connect_timeout_ms bounds the connection and
 * idle_timeout_s the time without any byte received, not the whole
 * download. A 4xx/5xx answer (its first max_error_body bytes kept) fails
 * with the daemon's error message; a failure of sink is returned with its
 * own error, as it is. cancel (NULL: none) is read while the download runs:
 * once it is set, the download stops with -ECANCELED ("cancelled"). Runs
 * on the calling thread; cancel may be set from any. */
int kiln_cli_http_download(const struct kiln_cli_http_target *t, const char *path,
                           uint64_t connect_timeout_ms, uint64_t idle_timeout_s,
                           size_t max_error_body, kiln_cli_http_sink_fn sink, void *userdata,
                           const atomic_bool *cancel, struct kiln_error **err);

/* Sends a request whose 2xx answer is NDJSON and calls on_event for each
 * event as it arrives. timeout_ms bounds the connection and the time
 * without any byte received (0: the default), not the whole stream, so a
 * long build is not cut off. A 4xx/5xx answer fails with the daemon's
 * error message. */
int kiln_cli_http_stream(const struct kiln_cli_http_target *t, const char *method, const char *path,
                         const char *body, size_t body_len, uint64_t timeout_ms,
                         int (*on_event)(json_t *event, void *userdata, struct kiln_error **err),
                         void *userdata, struct kiln_error **err);

/* s percent-encoded for a URL's query or path segment: every byte but
 * RFC 3986's unreserved ones (ALPHA DIGIT - . _ ~) becomes %XX. Never NULL;
 * caller frees. */
char *kiln_cli_http_escape(const char *s);
