/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <stdatomic.h>

#include "api/api.h"
#include "base/limits.h"
#include "base/log.h"
#include "config/address.h"
#include "http.h"

/* How long a stream may stay silent (no byte at all) before it is given up;
 * long-running calls send progress events well within it. */
#define STREAM_IDLE_TIMEOUT_S 300L

/* How long a stream or an upload may take to connect. */
#define CONNECT_TIMEOUT_MS 20000u

struct transfer {
        const struct kiln_cli_http_target *target;
        const char *method;
        const char *path;
        CURL *curl;
        struct curl_slist *headers;
        struct curl_slist *connect_to;
        char *url;
        char errbuf[CURL_ERROR_SIZE];
        /* Where the answer goes: the whole body, or the events of a 2xx
         * stream, or the bytes of a 2xx download handed to sink (an error
         * answer of a stream or a download still goes to body). */
        struct kiln_buf body;
        struct kiln_cli_ndjson *stream;
        kiln_cli_http_sink_fn sink;
        void *sink_userdata;
        /* Set by another thread to stop the transfer. */
        const atomic_bool *cancel;
        bool too_big;
        struct kiln_error *cb_err; /* set when the stream's consumer failed */
        int cb_code;
        /* A body produced as it is sent, and its failure. */
        const struct kiln_cli_http_body *upload;
        struct kiln_error *read_err;
        int read_code;
};

static void transfer_release(struct transfer *x)
{
        if (x->curl)
                curl_easy_cleanup(x->curl);
        curl_slist_free_all(x->headers);
        curl_slist_free_all(x->connect_to);
        free(x->url);
        kiln_buf_release(&x->body);
        kiln_error_free(x->cb_err);
        kiln_error_free(x->read_err);
        *x = (struct transfer){ 0 };
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct transfer *x = userdata;
        size_t n = size * nmemb;
        long status = 0;
        int r;

        if (x->stream || x->sink) {
                (void) curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
                if (status >= 200 && status < 300) {
                        r = x->stream ? kiln_cli_ndjson_feed(x->stream, data, n, &x->cb_err)
                                      : x->sink(x->sink_userdata, data, n, &x->cb_err);
                        if (r < 0) {
                                x->cb_code = r;
                                return 0; /* aborts the transfer */
                        }
                        return n;
                }
        }
        if (kiln_buf_append(&x->body, data, n) < 0) {
                if (x->sink)
                        return n; /* a download's error answer: what was kept is enough */
                x->too_big = true;
                return 0;
        }
        return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
        struct transfer *x = userdata;
        ssize_t n;

        n = x->upload->read(x->upload->userdata, buf, size * nitems, &x->read_err);
        if (n < 0) {
                x->read_code = (int) n;
                return CURL_READFUNC_ABORT;
        }
        return (size_t) n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        struct transfer *x = userdata;

        (void) dltotal, (void) dlnow, (void) ultotal, (void) ulnow;
        return atomic_load(x->cancel) ? 1 : 0; /* non-zero aborts */
}

static bool cancelled(const struct transfer *x)
{
        return x->cancel && atomic_load(x->cancel);
}

/* accept: the Accept header (NULL: curl's default); content_type: of the
 * body (NULL: no body); body: a body in memory, or NULL for none or one
 * that the caller sets up. */
static int transfer_setup(struct transfer *x, const struct kiln_cli_http_target *t,
                          const char *method, const char *path, const char *accept,
                          const char *content_type, const char *body, size_t body_len,
                          struct kiln_error **err)
{
        const char *addr = t->address;

        x->target = t;
        x->method = method;
        x->path = path;
        x->body = KILN_BUF_INIT(KILN_LIMIT_API_RESPONSE);
        x->curl = curl_easy_init();
        if (!x->curl)
                return kiln_error_set(err, -ENOMEM, "%s %s on '%s': cannot create a curl handle",
                                      method, path, addr);

        _cleanup_(kiln_config_address_release) struct kiln_config_address a = {
                .kind = _KILN_CONFIG_ADDRESS_KIND_INVALID
        };
        int r = kiln_config_address_parse(addr, &a, err);
        if (r < 0)
                return r;

        if (a.kind == KILN_CONFIG_ADDRESS_UNIX) {
                /* The host name is only what the Host header says. */
                x->url = kiln_xasprintf("http://localhost%s", path);
                (void) curl_easy_setopt(x->curl, CURLOPT_UNIX_SOCKET_PATH, a.path);
        } else {
                /* An IPv6 host goes back into brackets for the URL. */
                _cleanup_free_ char *host =
                        strchr(a.host, ':') ? kiln_xasprintf("[%s]", a.host) : kiln_xstrdup(a.host);

                /* kilnd serves TCP only over TLS. With a server name, the URL
                 * carries it (for SNI and verification) and CONNECT_TO says
                 * where to really connect. */
                if (t->server_name && t->server_name[0]) {
                        _cleanup_free_ char *map =
                                kiln_xasprintf("%s:%s:%s:%s", t->server_name, a.port, host, a.port);

                        x->url = kiln_xasprintf("https://%s:%s%s", t->server_name, a.port, path);
                        x->connect_to = curl_slist_append(NULL, map);
                        (void) curl_easy_setopt(x->curl, CURLOPT_CONNECT_TO, x->connect_to);
                } else
                        x->url = kiln_xasprintf("https://%s:%s%s", host, a.port, path);
                if (t->ca_file)
                        (void) curl_easy_setopt(x->curl, CURLOPT_CAINFO, t->ca_file);
                if (t->cert_file)
                        (void) curl_easy_setopt(x->curl, CURLOPT_SSLCERT, t->cert_file);
                if (t->key_file)
                        (void) curl_easy_setopt(x->curl, CURLOPT_SSLKEY, t->key_file);
        }

        if (accept) {
                _cleanup_free_ char *h = kiln_xasprintf("Accept: %s", accept);

                x->headers = curl_slist_append(x->headers, h);
        }
        if (content_type) {
                _cleanup_free_ char *h = kiln_xasprintf("Content-Type: %s", content_type);

                x->headers = curl_slist_append(x->headers, h);
        }
        /* Bodies go out at once, without an "Expect: 100-continue" round trip. */
        x->headers = curl_slist_append(x->headers, "Expect:");

        (void) curl_easy_setopt(x->curl, CURLOPT_URL, x->url);
        (void) curl_easy_setopt(x->curl, CURLOPT_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(x->curl, CURLOPT_ERRORBUFFER, x->errbuf);
        (void) curl_easy_setopt(x->curl, CURLOPT_HTTPHEADER, x->headers);
        (void) curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_data);
        (void) curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, x);
        (void) curl_easy_setopt(x->curl, CURLOPT_USERAGENT, "kiln");
        if (body) {
                (void) curl_easy_setopt(x->curl, CURLOPT_POSTFIELDS, body);
                (void) curl_easy_setopt(x->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                                        (curl_off_t) body_len);
        }
        if (!streq(method, body ? "POST" : "GET"))
                (void) curl_easy_setopt(x->curl, CURLOPT_CUSTOMREQUEST, method);
        return 0;
}

/* curl's codes that have a meaning for kiln's callers; the rest are -EIO. */
static const struct {
        CURLcode code;
        int errno_;
} curl_errors[] = {
        { CURLE_COULDNT_CONNECT, -ECONNREFUSED }, { CURLE_COULDNT_RESOLVE_HOST, -EHOSTUNREACH },
        { CURLE_OPERATION_TIMEDOUT, -ETIMEDOUT }, { CURLE_RECV_ERROR, -ECONNRESET },
        { CURLE_SEND_ERROR, -ECONNRESET },        { CURLE_GOT_NOTHING, -ECONNRESET },
        { CURLE_SSL_CONNECT_ERROR, -EPROTO },     { CURLE_PEER_FAILED_VERIFICATION, -EPROTO },
        { CURLE_SSL_CERTPROBLEM, -EPROTO },       { CURLE_SSL_CIPHER, -EPROTO },
        { CURLE_SSL_CACERT_BADFILE, -EPROTO },    { CURLE_SSL_ISSUER_ERROR, -EPROTO },
        { CURLE_SSL_CRL_BADFILE, -EPROTO },       { CURLE_SSL_PINNEDPUBKEYNOTMATCH, -EPROTO },
        { CURLE_SSL_INVALIDCERTSTATUS, -EPROTO }, { CURLE_SSL_ENGINE_NOTFOUND, -EPROTO },
        { CURLE_SSL_ENGINE_SETFAILED, -EPROTO },  { CURLE_SSL_ENGINE_INITFAILED, -EPROTO },
        { CURLE_SSL_SHUTDOWN_FAILED, -EPROTO },   { CURLE_USE_SSL_FAILED, -EPROTO },
};

static int curl_code_to_errno(CURLcode c)
{
        for (size_t i = 0; i < ELEMENTSOF(curl_errors); i++)
                if (curl_errors[i].code == c)
                        return curl_errors[i].errno_;
        return -EIO;
}

/* Runs the transfer; on failure sets *err with the address and the cause. */
static int transfer_perform(struct transfer *x, long *ret_status, struct kiln_error **err)
{
        const struct kiln_cli_http_target *t = x->target;
        const char *hint = "";
        CURLcode c;
        int r;

        c = curl_easy_perform(x->curl);
        if (c == CURLE_OK && !cancelled(x)) {
                (void) curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, ret_status);
                return 0;
        }
        if (x->read_code < 0) {
                if (!x->read_err)
                        return kiln_error_set(err, x->read_code,
                                              "%s %s on '%s': the request body failed", x->method,
                                              x->path, t->address);
                *err = kiln_error_free(*err);
                *err = TAKE_PTR(x->read_err);
                return x->read_code;
        }
        /* A download's sink failed: its error, as it is. */
        if (x->cb_code < 0 && x->sink) {
                if (!x->cb_err)
                        return kiln_error_set(err, x->cb_code,
                                              "%s %s on '%s': the answer could not be written",
                                              x->method, x->path, t->address);
                *err = kiln_error_free(*err);
                *err = TAKE_PTR(x->cb_err);
                return x->cb_code;
        }
        if (x->cb_code < 0 && x->cb_err) {
                *err = kiln_error_free(*err);
                *err = TAKE_PTR(x->cb_err);
                return kiln_error_wrap(err, "%s %s on '%s'", x->method, x->path, t->address);
        }
        if (cancelled(x))
                return kiln_error_set(err, -ECANCELED, "%s %s on '%s': cancelled", x->method,
                                      x->path, t->address);
        if (x->too_big)
                return kiln_error_set(err, -E2BIG,
                                      "%s %s on '%s': the answer is larger than %zu bytes",
                                      x->method, x->path, t->address, x->body.max);

        r = curl_code_to_errno(c);
        /* curl speaks of "localhost port 80" for a unix socket: say what
         * is at the path instead. */
        if (r == -ECONNREFUSED && startswith(t->address, "unix://")) {
                const char *path = t->address + strlen("unix://");

                if (access(path, F_OK) < 0)
                        return kiln_error_set(err, r, "%s %s on '%s': no socket at '%s'", x->method,
                                              x->path, t->address, path);
                if (access(path, W_OK) < 0 && errno == EACCES)
                        return kiln_error_set(err, -EACCES,
                                              "%s %s on '%s': permission denied on '%s'", x->method,
                                              x->path, t->address, path);
                return kiln_error_set(err, r,
                                      "%s %s on '%s': connection refused (nothing listens on "
                                      "'%s')",
                                      x->method, x->path, t->address, path);
        }
        /* A daemon started with --tlscacert hangs up on a client without a
         * certificate; say what is most likely missing. */
        if (startswith(t->address, "tcp://") && !t->cert_file && (r == -ECONNRESET || r == -EPROTO))
                hint = " (the daemon may require a client certificate: --driver-opt "
                       "cert=...,key=...)";
        else if (startswith(t->address, "tcp://") && t->cert_file && r == -ECONNRESET)
                hint = " (the daemon may not trust the client certificate)";
        return kiln_error_set(err, r, "%s %s on '%s': %s%s", x->method, x->path, t->address,
                              x->errbuf[0] ? x->errbuf : curl_easy_strerror(c), hint);
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
        _cleanup_(transfer_release) struct transfer x = { 0 };
        long status = 0;
        int r;

        r = transfer_setup(&x, t, method, path, KILN_API_CONTENT_TYPE_JSON,
                           body ? KILN_API_CONTENT_TYPE_JSON : NULL, body, body_len, err);
        if (r < 0)
                return r;
        (void) curl_easy_setopt(x.curl, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
        log_debug("%s %s on %s", method, path, t->address);
        r = transfer_perform(&x, &status, err);
        if (r < 0)
                return r;
        resp->status = status;
        kiln_buf_release(&resp->body);
        resp->body = x.body;
        x.body = KILN_BUF_INIT(0);
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
        _cleanup_(transfer_release) struct transfer x = { 0 };
        long status = 0;
        int r;

        r = transfer_setup(&x, t, method, path, KILN_API_CONTENT_TYPE_JSON, body->content_type,
                           NULL, 0, err);
        if (r < 0)
                return r;
        x.body.max = max_answer;
        x.upload = body;
        (void) curl_easy_setopt(x.curl, CURLOPT_UPLOAD, 1L);
        /* UPLOAD makes a PUT of any request: say which one it is. */
        (void) curl_easy_setopt(x.curl, CURLOPT_CUSTOMREQUEST, method);
        (void) curl_easy_setopt(x.curl, CURLOPT_READFUNCTION, on_read);
        (void) curl_easy_setopt(x.curl, CURLOPT_READDATA, &x);
        if (body->size >= 0)
                (void) curl_easy_setopt(x.curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) body->size);
        (void) curl_easy_setopt(x.curl, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
        (void) curl_easy_setopt(x.curl, CURLOPT_CONNECTTIMEOUT_MS, (long) CONNECT_TIMEOUT_MS);
        log_debug("%s %s on %s", method, path, t->address);
        r = transfer_perform(&x, &status, err);
        if (r < 0)
                return r;
        return answer_json(method, path, t->address, status, &x.body, ret, err);
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
        _cleanup_(transfer_release) struct transfer x = { 0 };
        _cleanup_(kiln_cli_ndjson_release) struct kiln_cli_ndjson s;
        long status = 0;
        int r;

        kiln_cli_ndjson_init(&s, KILN_CLI_LIMIT_EVENT, on_event, userdata);
        r = transfer_setup(&x, t, method, path, KILN_API_CONTENT_TYPE_JSON,
                           body ? KILN_API_CONTENT_TYPE_JSON : NULL, body, body_len, err);
        if (r < 0)
                return r;
        x.stream = &s;
        (void) curl_easy_setopt(x.curl, CURLOPT_CONNECTTIMEOUT_MS,
                                (long) (timeout_ms ? timeout_ms : CONNECT_TIMEOUT_MS));
        (void) curl_easy_setopt(x.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        (void) curl_easy_setopt(x.curl, CURLOPT_LOW_SPEED_TIME, STREAM_IDLE_TIMEOUT_S);
        log_debug("%s %s on %s (stream)", method, path, t->address);
        r = transfer_perform(&x, &status, err);
        if (r < 0)
                return r;
        if (status < 200 || status >= 300)
                return status_error(method, path, t->address, status, &x.body, err);
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
        _cleanup_(transfer_release) struct transfer x = { 0 };
        long status = 0;
        int r;

        r = transfer_setup(&x, t, "GET", path, NULL, NULL, NULL, 0, err);
        if (r < 0)
                return r;
        x.body.max = max_error_body;
        x.sink = sink;
        x.sink_userdata = userdata;
        x.cancel = cancel;
        if (cancel) {
                (void) curl_easy_setopt(x.curl, CURLOPT_NOPROGRESS, 0L);
                (void) curl_easy_setopt(x.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
                (void) curl_easy_setopt(x.curl, CURLOPT_XFERINFODATA, &x);
        }
        (void) curl_easy_setopt(x.curl, CURLOPT_CONNECTTIMEOUT_MS, (long) connect_timeout_ms);
        (void) curl_easy_setopt(x.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        (void) curl_easy_setopt(x.curl, CURLOPT_LOW_SPEED_TIME, (long) idle_timeout_s);
        log_debug("GET %s on %s (download)", path, t->address);
        r = transfer_perform(&x, &status, err);
        if (r < 0)
                return r;
        if (status < 200 || status >= 300)
                return status_error("GET", path, t->address, status, &x.body, err);
        return 0;
}
