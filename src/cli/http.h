/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The client side of the daemon API (api/api.h): HTTP/1.1 over libcurl, to
 * a unix socket (unix://PATH) or over TLS to TCP (tcp://HOST:PORT, always
 * https, with an optional client certificate for kilnd's --tlscacert).
 *
 * Every call makes its own curl handle: kiln's commands make a handful of
 * requests, and a handle per call keeps them independent. Not for use from
 * two threads at once on one target; curl_global_init must have run
 * (main does it).
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
#include <stdint.h>
#include <sys/types.h>

#include "base/buf.h"
#include "base/error.h"

/* One line of a streamed (NDJSON) answer. */
#define KILN_CLI_LIMIT_EVENT (1u << 20)

struct kiln_cli_http_target {
        const char *address;   /* unix:///path or tcp://host:port */
        const char *ca_file;   /* tcp: CAs that sign the daemon's certificate; NULL: the system's */
        const char *cert_file; /* tcp: client certificate (PEM), with key_file */
        const char *key_file;  /* tcp: its private key (PEM) */
        const char *server_name; /* tcp: the name to verify the daemon's certificate against;
                                    NULL: the host of address */
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

/* Sends a request whose body body->read produces while curl sends it, so
 * that a large body is never held in memory. A 2xx answer (at most
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
