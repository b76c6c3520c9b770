/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transfer manager: one thread, one curl multi handle, per-host slot
 * accounting (see transfer.h).
 *
 * Lock: m->lock guards m->submitted, m->hosts (and every queue and counter
 * in them), m->live and, for every transfer, t->state, t->cancel and the
 * response once t->state is DONE. curl handles are touched only by the
 * manager's thread once submitted. Callbacks run without the lock.
 */
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "kiln-version.h"
#include "redact.h"
#include "registry-internal.h"
#include "transfer-internal.h"
#include "transfer.h"

/* A CA bundle (system roots + the host's extra CAs) kept per set of files. */
#define CA_BUNDLE_CACHE_MAX 64
/* The system bundle we read to build one. */
#define CA_BUNDLE_FILE_MAX ((size_t) 16 << 20)
/* Idle wait of the manager's poll, so a lost wakeup costs at most this. */
#define MANAGER_POLL_MS 1000
/* curl's receive buffer: larger than its 16 KiB default, so a layer costs
 * fewer callbacks and writes (the manager's thread does them all). */
#define TRANSFER_BUFFER_SIZE (256L << 10)
/* Body bytes a transfer may queue for its waiter before curl pauses it, and
 * the level under which the waiter lets it go on. */
#define SINK_QUEUE_MAX ((size_t) 2 << 20)
#define SINK_QUEUE_LOW ((size_t) 512 << 10)
/* curl hands write_cb at most CURL_MAX_WRITE_SIZE (16 KiB) at a time; the
 * queue packs those into chunks of this size, so the waiter wakes, writes
 * and hashes per chunk rather than per callback. */
#define SINK_CHUNK_SIZE ((size_t) 256 << 10)
/* Where curl's default CA bundle is when curl cannot say. */
#define DEFAULT_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

struct sink_chunk {
        struct sink_chunk *next;
        size_t len;
        size_t cap;
        char data[];
};

enum transfer_state {
        TRANSFER_SUBMITTED, /* in m->submitted */
        TRANSFER_QUEUED,    /* in its host's queue */
        TRANSFER_RUNNING,   /* in the multi handle */
        TRANSFER_DONE,
};

struct host_slots {
        char *key;
        unsigned running;
        unsigned running_layers;
        unsigned peak;
        unsigned peak_layers;
        /* FIFO queues per class (singly linked through t->queue_next). */
        struct kiln_registry_transfer *head[_KILN_REGISTRY_TRANSFER_CLASS_MAX];
        struct kiln_registry_transfer *tail[_KILN_REGISTRY_TRANSFER_CLASS_MAX];
        struct host_slots *next;
};

struct ca_bundle {
        char *key; /* file names and their identities */
        char *data;
        size_t len;
        struct ca_bundle *next;
};

struct kiln_registry_transfer_manager {
        pthread_mutex_t lock;
        pthread_t thread;
        bool thread_started;
        bool stopping;
        CURLM *multi;
        CURLSH *share;
        pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
        unsigned max_concurrency;
        unsigned stall_timeout_sec;
        char *user_agent;
        char *system_ca_file;

        struct kiln_registry_transfer *submitted; /* LIFO; reversed on take */
        struct host_slots *hosts;
        struct kiln_registry_transfer *live; /* every transfer not DONE (doubly linked) */
        struct kiln_registry_transfer *all;  /* every transfer not yet freed */

        pthread_mutex_t ca_lock; /* guards ca_bundles only */
        struct ca_bundle *ca_bundles;
        size_t n_ca_bundles;
};

struct kiln_registry_transfer {
        struct kiln_registry_transfer_manager *m;
        enum transfer_state state;
        bool cancel;
        const atomic_bool *cancel_flag; /* the owner's: read like cancel */
        bool finished;                  /* transfer_finish is over: the waiter may go */
        pthread_cond_t cond;
        struct kiln_registry_transfer *submit_next;
        struct kiln_registry_transfer *queue_next;
        struct kiln_registry_transfer *live_prev, *live_next;
        struct kiln_registry_transfer *all_prev, *all_next;
        struct kiln_registry_transfer *unpause_next; /* manager thread only */
        struct host_slots *host;

        enum kiln_registry_transfer_class klass;
        char *slot_host;
        CURL *easy;
        struct curl_slist *slist;
        char curl_error[CURL_ERROR_SIZE];
        char span_id[17];
        char *trace_id;
        char *url_sanitized;
        struct kiln_log_field extra[KILN_LIMIT_REGISTRY_LOG_FIELDS];
        size_t n_extra;

        /* body to send */
        char *body;
        bool body_secret;
        int body_fd;
        uint64_t body_offset;
        uint64_t body_len;
        uint64_t body_pos;

        /* response being read */
        bool is_head;
        bool follow_redirects;
        bool have_final;
        long cur_status;
        char *cur_text;
        bool cur_location;
        size_t header_bytes;
        size_t body_max;
        kiln_registry_transfer_sink_fn sink;
        /* Body bytes for the sink, queued by the manager's thread and
         * delivered by the waiter (under m->lock). */
        struct sink_chunk *q_head, *q_tail;
        size_t q_bytes;
        bool paused;      /* curl holds the data: the queue was full */
        bool unpause;     /* the waiter drained it: let curl go on */
        bool sink_failed; /* the sink refused data: stop the transfer */
        bool discard;     /* being freed: drop queued data unseen */
        struct kiln_error *sink_error;
        kiln_registry_transfer_response_fn on_response;
        void *userdata;
        kiln_registry_transfer_done_fn done;
        void *done_userdata;

        struct kiln_registry_transfer_response resp;
        int result; /* 0, or -ECANCELED */
};

/* ---- pure helpers ---- */

bool transfer_slot_available(unsigned total, unsigned layers, unsigned max_concurrency,
                             enum kiln_registry_transfer_class k)
{
        if (total >= max_concurrency + 1)
                return false;
        if (k == KILN_REGISTRY_TRANSFER_LAYER && layers >= max_concurrency)
                return false;
        return true;
}

enum kiln_registry_transfer_class kiln_registry_transfer_class_of(const char *media_type)
{
        size_t n = media_type ? strlen(media_type) : 0;

        if (n >= 5 && streq(media_type + n - 5, "+json"))
                return KILN_REGISTRY_TRANSFER_METADATA;
        return KILN_REGISTRY_TRANSFER_LAYER;
}

const char *kiln_registry_http_status_text(long code)
{
        /* Go's net/http status.go, the codes a registry may send. */
        static const struct {
                long code;
                const char *text;
        } table[] = {
                { 100, "Continue" },
                { 101, "Switching Protocols" },
                { 200, "OK" },
                { 201, "Created" },
                { 202, "Accepted" },
                { 203, "Non-Authoritative Information" },
                { 204, "No Content" },
                { 205, "Reset Content" },
                { 206, "Partial Content" },
                { 300, "Multiple Choices" },
                { 301, "Moved Permanently" },
                { 302, "Found" },
                { 303, "See Other" },
                { 304, "Not Modified" },
                { 305, "Use Proxy" },
                { 307, "Temporary Redirect" },
                { 308, "Permanent Redirect" },
                { 400, "Bad Request" },
                { 401, "Unauthorized" },
                { 402, "Payment Required" },
                { 403, "Forbidden" },
                { 404, "Not Found" },
                { 405, "Method Not Allowed" },
                { 406, "Not Acceptable" },
                { 407, "Proxy Authentication Required" },
                { 408, "Request Timeout" },
                { 409, "Conflict" },
                { 410, "Gone" },
                { 411, "Length Required" },
                { 412, "Precondition Failed" },
                { 413, "Request Entity Too Large" },
                { 414, "Request URI Too Long" },
                { 415, "Unsupported Media Type" },
                { 416, "Requested Range Not Satisfiable" },
                { 417, "Expectation Failed" },
                { 418, "I'm a teapot" },
                { 421, "Misdirected Request" },
                { 422, "Unprocessable Entity" },
                { 423, "Locked" },
                { 424, "Failed Dependency" },
                { 425, "Too Early" },
                { 426, "Upgrade Required" },
                { 428, "Precondition Required" },
                { 429, "Too Many Requests" },
                { 431, "Request Header Fields Too Large" },
                { 451, "Unavailable For Legal Reasons" },
                { 500, "Internal Server Error" },
                { 501, "Not Implemented" },
                { 502, "Bad Gateway" },
                { 503, "Service Unavailable" },
                { 504, "Gateway Timeout" },
                { 505, "HTTP Version Not Supported" },
                { 507, "Insufficient Storage" },
                { 508, "Loop Detected" },
                { 511, "Network Authentication Required" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].code == code)
                        return table[i].text;
        return "";
}

static size_t trim_eol(const char *line, size_t n)
{
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                n--;
        return n;
}

bool transfer_parse_status_line(const char *line, size_t n, long *ret_code, char **ret_text)
{
        const char *p, *end;
        long code = 0;

        n = trim_eol(line, n);
        if (n < 5 || memcmp(line, "HTTP/", 5) != 0)
                return false;
        end = line + n;
        p = memchr(line, ' ', n);
        if (!p)
                return false;
        while (p < end && *p == ' ')
                p++;
        if (end - p < 3)
                return false;
        for (int i = 0; i < 3; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return false;
                code = code * 10 + (p[i] - '0');
        }
        if (end - p > 3 && p[3] != ' ')
                return false;
        /* Go's ReadResponse: Status is the rest of the line after the
         * protocol, spaces trimmed on the left; a bare code gets Go's text
         * (Go 1.x leaves it bare; the brief and users want the phrase). */
        {
                const char *reason = p + 3;
                while (reason < end && *reason == ' ')
                        reason++;
                if (reason < end) {
                        _cleanup_free_ char *q =
                                kiln_quote_untrusted(reason, (size_t) (end - reason), 256);
                        *ret_text = kiln_xasprintf("%03ld %s", code, q);
                } else {
                        const char *t = kiln_registry_http_status_text(code);
                        *ret_text = t[0] ? kiln_xasprintf("%03ld %s", code, t)
                                         : kiln_xasprintf("%03ld", code);
                }
        }
        *ret_code = code;
        return true;
}

bool transfer_parse_header_line(const char *line, size_t n, char **ret_name, char **ret_value)
{
        const char *colon, *v, *end;

        n = trim_eol(line, n);
        colon = memchr(line, ':', n);
        if (!colon || colon == line)
                return false;
        for (const char *c = line; c < colon; c++)
                if (*c == ' ' || *c == '\t' || (unsigned char) *c < 0x21)
                        return false;
        end = line + n;
        v = colon + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        *ret_name = kiln_xstrndup(line, (size_t) (colon - line));
        *ret_value = kiln_xstrndup(v, (size_t) (end - v));
        return true;
}

char *transfer_url_host_port(const char *url)
{
        CURLU *u = curl_url();
        char *host = NULL, *port = NULL, *ret = NULL;

        if (!u)
                return NULL;
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
                goto out;
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
                goto out;
        if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
                goto out;
        ret = kiln_xasprintf("%s:%s", host, port);
        for (char *c = ret; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char) (*c - 'A' + 'a');
out:
        curl_free(host);
        curl_free(port);
        curl_url_cleanup(u);
        return ret;
}

bool transfer_curl_code_is_transient(int code)
{
        switch (code) {
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_PARTIAL_FILE:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return true;
        default:
                return false;
        }
}

bool transfer_is_http_fallback_error(int code, const char *message, bool explicit_port)
{
        if (code == CURLE_SSL_CONNECT_ERROR && message &&
            (strstr(message, "wrong version number") || strstr(message, "packet length too long") ||
             strstr(message, "http request") || strstr(message, "record layer failure")))
                return true;
        if (code == CURLE_OPERATION_TIMEDOUT && message &&
            strstr(message, "SSL connection timeout"))
                return true;
        if (!explicit_port && (code == CURLE_COULDNT_CONNECT || code == CURLE_OPERATION_TIMEDOUT))
                return true;
        return false;
}

void kiln_registry_random_hex(char *out, size_t n)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char buf[32];
        size_t got = 0;

        if (n > sizeof(buf))
                n = sizeof(buf);
        while (got < n) {
                ssize_t r = getrandom(buf + got, n - got, 0);
                if (r <= 0) {
                        if (r < 0 && errno == EINTR)
                                continue;
                        abort(); /* no randomness at all: nothing sane to do */
                }
                got += (size_t) r;
        }
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[buf[i] >> 4];
                out[2 * i + 1] = hex[buf[i] & 15];
        }
        out[2 * n] = 0;
}

const char *kiln_registry_transfer_response_header(const struct kiln_registry_transfer_response *r,
                                                   const char *name)
{
        for (size_t i = 0; i < r->n_headers; i++)
                if (ascii_strcaseeq(r->headers[i].name, name))
                        return r->headers[i].value;
        return NULL;
}

static void headers_free(struct kiln_registry_header *h, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(h[i].name);
                free(h[i].value);
        }
        free(h);
}

void kiln_registry_transfer_response_release(struct kiln_registry_transfer_response *r)
{
        free(r->status_text);
        headers_free(r->headers, r->n_headers);
        kiln_buf_release(&r->body);
        free(r->effective_url);
        free(r->transport_error);
        kiln_error_free(r->callback_error);
        *r = (struct kiln_registry_transfer_response){ .content_length = -1 };
}

/* ---- CA bundles ---- */

static int read_file_bounded(const char *path, size_t max, struct kiln_buf *out,
                             struct kiln_error **err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        char chunk[16384];

        if (fd < 0)
                return kiln_error_set(err, -errno, "read ca '%s': %m", path);
        for (;;) {
                ssize_t k = read(fd, chunk, sizeof(chunk));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_set(err, -errno, "read ca '%s': %m", path);
                }
                if (k == 0)
                        break;
                if (out->len + (size_t) k > max || kiln_buf_append(out, chunk, (size_t) k) < 0)
                        return kiln_error_set(err, -E2BIG, "read ca '%s': larger than %zu bytes",
                                              path, max);
        }
        return 0;
}

static void file_identity(struct kiln_buf *key, const char *path)
{
        struct stat st;

        if (stat(path, &st) == 0)
                (void) kiln_buf_printf(key, "%s\n%ju:%ju:%jd:%ld:%jd\n", path,
                                       (uintmax_t) st.st_dev, (uintmax_t) st.st_ino,
                                       (intmax_t) st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                                       (intmax_t) st.st_size);
        else
                (void) kiln_buf_printf(key, "%s\n-\n", path);
}

/* The bundle for tls (system roots first, then each CA file with a newline
 * between), cached while the files stay the same. *ret points into the
 * manager's cache (never freed before the manager) or, past the cache's
 * size, into *ret_owned. */
static int ca_bundle_get(struct kiln_registry_transfer_manager *m,
                         const struct kiln_registry_tls *tls, const char **ret, size_t *ret_len,
                         char **ret_owned, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf key = KILN_BUF_INIT(REGISTRY_DERIVED_MAX);
        _cleanup_(kiln_buf_release) struct kiln_buf data = KILN_BUF_INIT(REGISTRY_DERIVED_MAX);
        struct ca_bundle *b;
        int r;

        file_identity(&key, m->system_ca_file);
        for (size_t i = 0; i < tls->n_ca_files; i++)
                file_identity(&key, tls->ca_files[i]);

        pthread_mutex_lock(&m->ca_lock);
        for (b = m->ca_bundles; b; b = b->next)
                if (streq(b->key, key.data)) {
                        *ret = b->data;
                        *ret_len = b->len;
                        pthread_mutex_unlock(&m->ca_lock);
                        return 0;
                }
        pthread_mutex_unlock(&m->ca_lock);

        /* The system bundle may be missing (a minimal container): then only
         * the configured CAs are trusted, which is what the user asked for. */
        if (access(m->system_ca_file, R_OK) == 0) {
                r = read_file_bounded(m->system_ca_file, CA_BUNDLE_FILE_MAX, &data, err);
                if (r < 0)
                        return r;
                (void) kiln_buf_putc(&data, '\n');
        }
        for (size_t i = 0; i < tls->n_ca_files; i++) {
                r = read_file_bounded(tls->ca_files[i], CA_BUNDLE_FILE_MAX, &data, err);
                if (r < 0)
                        return r;
                (void) kiln_buf_putc(&data, '\n');
        }

        pthread_mutex_lock(&m->ca_lock);
        if (m->n_ca_bundles >= CA_BUNDLE_CACHE_MAX) {
                pthread_mutex_unlock(&m->ca_lock);
                *ret_len = data.len;
                *ret_owned = kiln_buf_steal(&data);
                *ret = *ret_owned;
                return 0;
        }
        b = kiln_xcalloc(1, sizeof(*b));
        b->key = kiln_buf_steal(&key);
        b->len = data.len;
        b->data = kiln_buf_steal(&data);
        b->next = m->ca_bundles;
        m->ca_bundles = b;
        m->n_ca_bundles++;
        *ret = b->data;
        *ret_len = b->len;
        pthread_mutex_unlock(&m->ca_lock);
        return 0;
}

/* ---- curl callbacks (manager thread) ---- */

static void transfer_fail_callback(struct kiln_registry_transfer *t, struct kiln_error *e)
{
        t->resp.callback_failed = true;
        kiln_error_free(t->resp.callback_error);
        t->resp.callback_error = e;
}

static void log_response(struct kiln_registry_transfer *t)
{
        struct kiln_log_field *f;
        char **owned;
        size_t n = 0, n_owned = 0, cap;

        if (!kiln_log_enabled(KILN_LOG_DEBUG))
                return;
        cap = t->resp.n_headers + t->n_extra + 5;
        f = kiln_xcalloc(cap, sizeof(*f));
        owned = kiln_xcalloc(2 * t->resp.n_headers + 1, sizeof(char *));
        f[n++] = (struct kiln_log_field){ "response.status", t->resp.status_text };
        f[n++] = (struct kiln_log_field){ "url", t->url_sanitized };
        f[n++] = (struct kiln_log_field){ "spanID", t->span_id };
        if (t->trace_id)
                f[n++] = (struct kiln_log_field){ "traceID", t->trace_id };
        for (size_t i = 0; i < t->n_extra; i++)
                f[n++] = t->extra[i];
        for (size_t i = 0; i < t->resp.n_headers; i++) {
                const struct kiln_registry_header *h = &t->resp.headers[i];
                char *v = kiln_registry_header_log_value(h->name, h->value, false);
                unsigned seen = 0;
                char *key;

                if (!v)
                        continue;
                for (size_t j = 0; j < i; j++)
                        if (ascii_strcaseeq(t->resp.headers[j].name, h->name))
                                seen++;
                key = seen ? kiln_xasprintf("response.header.%s.%u", h->name, seen)
                           : kiln_xasprintf("response.header.%s", h->name);
                for (char *c = key; *c; c++)
                        if (*c >= 'A' && *c <= 'Z')
                                *c = (char) (*c - 'A' + 'a');
                owned[n_owned++] = key;
                owned[n_owned++] = v;
                f[n++] = (struct kiln_log_field){ key, v };
        }
        kiln_log_fields(KILN_LOG_DEBUG, f, n, "fetch response received");
        for (size_t i = 0; i < n_owned; i++)
                free(owned[i]);
        free(owned);
        free(f);
}

static bool is_redirect(long code)
{
        return code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
}

static void headers_reset(struct kiln_registry_transfer *t)
{
        headers_free(t->resp.headers, t->resp.n_headers);
        t->resp.headers = NULL;
        t->resp.n_headers = 0;
        t->cur_location = false;
}

/* The end of one response's headers: skip interim and followed redirect
 * responses; for the final one, check limits and tell the caller. */
static int headers_complete(struct kiln_registry_transfer *t)
{
        struct kiln_error *e = NULL;
        const char *cl;

        if (t->cur_status >= 100 && t->cur_status < 200) {
                headers_reset(t);
                return 0;
        }
        if (t->follow_redirects && is_redirect(t->cur_status) && t->cur_location) {
                headers_reset(t);
                return 0;
        }
        t->have_final = true;
        t->resp.status = t->cur_status;
        free(t->resp.status_text);
        t->resp.status_text = TAKE_PTR(t->cur_text);
        cl = kiln_registry_transfer_response_header(&t->resp, "Content-Length");
        t->resp.content_length = -1;
        if (cl && *cl) {
                char *end;
                unsigned long long v;

                errno = 0;
                v = strtoull(cl, &end, 10);
                if (errno == 0 && *end == 0 && cl[0] != '-' && v <= INT64_MAX)
                        t->resp.content_length = (int64_t) v;
        }
        log_response(t);

        if (t->resp.status >= 200 && t->resp.status < 300 && !t->sink && !t->is_head &&
            t->resp.content_length > (int64_t) t->body_max) {
                kiln_error_set(&e, -E2BIG,
                               "response of %" PRId64 " bytes is larger than the limit of %zu "
                               "bytes",
                               t->resp.content_length, t->body_max);
                transfer_fail_callback(t, e);
                return -E2BIG;
        }
        if (t->on_response) {
                int r = t->on_response(t->userdata, &t->resp, &e);
                if (r < 0) {
                        if (!e)
                                kiln_error_set(&e, r, "response refused");
                        transfer_fail_callback(t, e);
                        return r;
                }
        }
        return 0;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
        struct kiln_registry_transfer *t = userdata;
        size_t n = size * nmemb;
        char *name = NULL, *value = NULL;
        struct kiln_error *e = NULL;
        long code;
        char *text = NULL;

        if (t->have_final)
                return n; /* trailers */
        t->header_bytes += n;
        if (t->header_bytes > KILN_LIMIT_REGISTRY_RESPONSE_HEADERS) {
                kiln_error_set(&e, -E2BIG, "response headers larger than %u bytes",
                               KILN_LIMIT_REGISTRY_RESPONSE_HEADERS);
                transfer_fail_callback(t, e);
                return 0;
        }
        if (transfer_parse_status_line(p, n, &code, &text)) {
                headers_reset(t);
                t->cur_status = code;
                free(t->cur_text);
                t->cur_text = text;
                return n;
        }
        if (trim_eol(p, n) == 0)
                return headers_complete(t) < 0 ? 0 : n;
        if (!transfer_parse_header_line(p, n, &name, &value))
                return n; /* obsolete folding or garbage: ignored, as Go mostly does */
        if (t->resp.n_headers >= KILN_LIMIT_REGISTRY_RESPONSE_HEADER_COUNT) {
                free(name);
                free(value);
                kiln_error_set(&e, -E2BIG, "more than %u response headers",
                               KILN_LIMIT_REGISTRY_RESPONSE_HEADER_COUNT);
                transfer_fail_callback(t, e);
                return 0;
        }
        if (ascii_strcaseeq(name, "Location"))
                t->cur_location = true;
        t->resp.headers = kiln_xreallocarray(t->resp.headers, t->resp.n_headers + 1,
                                             sizeof(*t->resp.headers));
        t->resp.headers[t->resp.n_headers++] = (struct kiln_registry_header){ name, value };
        return n;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
        struct kiln_registry_transfer *t = userdata;
        size_t n = size * nmemb;
        struct kiln_error *e = NULL;

        if (!t->have_final)
                return n; /* a followed redirect's body */
        t->resp.body_received += n;
        if (t->resp.status >= 200 && t->resp.status < 300) {
                if (t->sink) {
                        struct kiln_registry_transfer_manager *m = t->m;
                        struct sink_chunk *c;
                        size_t cap;

                        /* Queue for the waiter (which writes and hashes on
                         * its own thread); pause while it is behind. */
                        pthread_mutex_lock(&m->lock);
                        if (t->sink_failed) {
                                pthread_mutex_unlock(&m->lock);
                                return 0;
                        }
                        if (t->q_head && t->q_bytes + n > SINK_QUEUE_MAX) {
                                t->paused = true;
                                pthread_mutex_unlock(&m->lock);
                                t->resp.body_received -= n;
                                return CURL_WRITEFUNC_PAUSE;
                        }
                        /* The waiter takes chunks off the head under the
                         * lock, so a queued tail is still ours to fill. */
                        c = t->q_tail;
                        if (c && c->cap - c->len >= n) {
                                memcpy(c->data + c->len, p, n);
                                c->len += n;
                                t->q_bytes += n;
                                pthread_mutex_unlock(&m->lock);
                                return n;
                        }
                        cap = n > SINK_CHUNK_SIZE ? n : SINK_CHUNK_SIZE;
                        c = kiln_xmalloc(sizeof(*c) + cap);
                        c->next = NULL;
                        c->len = n;
                        c->cap = cap;
                        memcpy(c->data, p, n);
                        if (t->q_tail)
                                t->q_tail->next = c;
                        else {
                                /* The waiter sleeps only on an empty queue. */
                                t->q_head = c;
                                pthread_cond_broadcast(&t->cond);
                        }
                        t->q_tail = c;
                        t->q_bytes += n;
                        pthread_mutex_unlock(&m->lock);
                        return n;
                }
                if (n > t->body_max - t->resp.body.len ||
                    kiln_buf_append(&t->resp.body, p, n) < 0) {
                        kiln_error_set(&e, -E2BIG,
                                       "response body is larger than the limit of %zu bytes",
                                       t->body_max);
                        transfer_fail_callback(t, e);
                        return 0;
                }
                return n;
        }
        if (t->resp.body.len < KILN_LIMIT_REGISTRY_ERROR_BODY) {
                size_t keep = KILN_LIMIT_REGISTRY_ERROR_BODY - t->resp.body.len;
                (void) kiln_buf_append(&t->resp.body, p, n < keep ? n : keep);
        }
        return n;
}

static size_t read_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
        struct kiln_registry_transfer *t = userdata;
        size_t want = size * nmemb;
        uint64_t left = t->body_len - t->body_pos;

        if (want > left)
                want = (size_t) left;
        if (want == 0)
                return 0;
        if (t->body_fd >= 0) {
                ssize_t k;

                do
                        k = pread(t->body_fd, p, want, (off_t) (t->body_offset + t->body_pos));
                while (k < 0 && errno == EINTR);
                if (k <= 0) {
                        struct kiln_error *e = NULL;
                        kiln_error_set(&e, k < 0 ? -errno : -EIO, "read request body: %s",
                                       k < 0 ? strerror(errno) : "unexpected end of file");
                        transfer_fail_callback(t, e);
                        return CURL_READFUNC_ABORT;
                }
                want = (size_t) k;
        } else
                memcpy(p, t->body + t->body_pos, want);
        t->body_pos += want;
        return want;
}

static int seek_cb(void *userdata, curl_off_t offset, int origin)
{
        struct kiln_registry_transfer *t = userdata;

        if (origin != SEEK_SET || offset < 0 || (uint64_t) offset > t->body_len)
                return CURL_SEEKFUNC_CANTSEEK;
        t->body_pos = (uint64_t) offset;
        return CURL_SEEKFUNC_OK;
}

/* ---- the manager's thread ---- */

static struct host_slots *host_get(struct kiln_registry_transfer_manager *m, const char *key)
{
        struct host_slots *h;

        for (h = m->hosts; h; h = h->next)
                if (streq(h->key, key))
                        return h;
        h = kiln_xcalloc(1, sizeof(*h));
        h->key = kiln_xstrdup(key);
        h->next = m->hosts;
        m->hosts = h;
        return h;
}

static void queue_push(struct host_slots *h, struct kiln_registry_transfer *t)
{
        t->queue_next = NULL;
        if (h->tail[t->klass])
                h->tail[t->klass]->queue_next = t;
        else
                h->head[t->klass] = t;
        h->tail[t->klass] = t;
}

static void queue_remove(struct host_slots *h, struct kiln_registry_transfer *t)
{
        struct kiln_registry_transfer **pp = &h->head[t->klass], *prev = NULL;

        while (*pp && *pp != t) {
                prev = *pp;
                pp = &(*pp)->queue_next;
        }
        if (!*pp)
                return;
        *pp = t->queue_next;
        if (h->tail[t->klass] == t)
                h->tail[t->klass] = prev;
        t->queue_next = NULL;
}

static void live_remove(struct kiln_registry_transfer_manager *m, struct kiln_registry_transfer *t)
{
        if (t->live_prev)
                t->live_prev->live_next = t->live_next;
        else if (m->live == t)
                m->live = t->live_next;
        if (t->live_next)
                t->live_next->live_prev = t->live_prev;
        t->live_prev = t->live_next = NULL;
}

/* Ends t (lock not held): fills the transport outcome, runs the done
 * callback, then wakes the waiter. */
static void transfer_finish(struct kiln_registry_transfer_manager *m,
                            struct kiln_registry_transfer *t, int curl_code, int result)
{
        long os_errno = 0;

        if (t->easy) {
                char *eff = NULL;

                if (curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff)
                        t->resp.effective_url = kiln_xstrdup(eff);
                if (curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno) != CURLE_OK)
                        os_errno = 0;
                curl_easy_cleanup(t->easy);
                t->easy = NULL;
        }
        curl_slist_free_all(t->slist);
        t->slist = NULL;
        if (t->body) {
                if (t->body_secret)
                        explicit_bzero(t->body, t->body_len);
                free(t->body);
                t->body = NULL;
        }
        t->resp.curl_code = curl_code;
        if (curl_code != CURLE_OK && !t->resp.callback_failed) {
                /* curl's detail ("Failed to connect to 127.0.0.1 port 1 after
                 * 0 ms: Couldn't connect to server"), lower-cased at the
                 * start for our messages, and the system's reason. */
                const char *text =
                        t->curl_error[0] ? t->curl_error : curl_easy_strerror((CURLcode) curl_code);
                size_t n = strlen(text);

                /* OpenSSL's "..., errno 0" says nothing. */
                if (n > 9 && streq(text + n - 9, ", errno 0"))
                        n -= 9;
                t->resp.transport_error = os_errno > 0 && !strstr(text, strerror((int) os_errno))
                                                  ? kiln_xasprintf("%.*s (%s)", (int) n, text,
                                                                   strerror((int) os_errno))
                                                  : kiln_xstrndup(text, n);
        }
        t->result = result;
        if (t->done)
                t->done(t->done_userdata, t);

        pthread_mutex_lock(&m->lock);
        live_remove(m, t);
        t->state = TRANSFER_DONE;
        t->finished = true;
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&m->lock);
}

/* Under m->lock: move submissions into their hosts' queues. */
static void take_submitted(struct kiln_registry_transfer_manager *m)
{
        struct kiln_registry_transfer *list = NULL, *t;

        while ((t = m->submitted)) {
                m->submitted = t->submit_next;
                t->submit_next = list;
                list = t;
        }
        while ((t = list)) {
                list = t->submit_next;
                t->submit_next = NULL;
                t->host = host_get(m, t->slot_host);
                t->state = TRANSFER_QUEUED;
                queue_push(t->host, t);
        }
}

/* Under m->lock: collects cancelled transfers (queued ones leave their
 * queue, running ones the multi handle) into *ret. */
static void take_cancelled(struct kiln_registry_transfer_manager *m,
                           struct kiln_registry_transfer **ret)
{
        for (struct kiln_registry_transfer *t = m->live; t; t = t->live_next) {
                if (!t->cancel && !t->sink_failed && !m->stopping &&
                    !(t->cancel_flag && atomic_load(t->cancel_flag)))
                        continue;
                if (t->state == TRANSFER_QUEUED)
                        queue_remove(t->host, t);
                else if (t->state == TRANSFER_RUNNING) {
                        curl_multi_remove_handle(m->multi, t->easy);
                        t->host->running--;
                        if (t->klass == KILN_REGISTRY_TRANSFER_LAYER)
                                t->host->running_layers--;
                } else
                        continue;
                t->state = TRANSFER_DONE; /* not yet signalled: see transfer_finish */
                t->queue_next = *ret;
                *ret = t;
        }
}

/* Under m->lock: starts what the slots allow, metadata first. */
static void admit(struct kiln_registry_transfer_manager *m)
{
        for (struct host_slots *h = m->hosts; h; h = h->next) {
                for (int k = 0; k < _KILN_REGISTRY_TRANSFER_CLASS_MAX; k++) {
                        while (h->head[k] && transfer_slot_available(h->running, h->running_layers,
                                                                     m->max_concurrency, k)) {
                                struct kiln_registry_transfer *t = h->head[k];

                                queue_remove(h, t);
                                if (curl_multi_add_handle(m->multi, t->easy) != CURLM_OK) {
                                        /* Only on out-of-memory: leave it queued. */
                                        queue_push(h, t);
                                        break;
                                }
                                t->state = TRANSFER_RUNNING;
                                h->running++;
                                if (k == KILN_REGISTRY_TRANSFER_LAYER)
                                        h->running_layers++;
                                if (h->running > h->peak)
                                        h->peak = h->running;
                                if (h->running_layers > h->peak_layers)
                                        h->peak_layers = h->running_layers;
                        }
                }
        }
}

static void *manager_thread(void *userdata)
{
        struct kiln_registry_transfer_manager *m = userdata;

        for (;;) {
                struct kiln_registry_transfer *cancelled = NULL, *unpause = NULL, *t;
                CURLMsg *msg;
                int running = 0, left;
                bool stop;

                pthread_mutex_lock(&m->lock);
                take_submitted(m);
                take_cancelled(m, &cancelled);
                for (t = m->live; t; t = t->live_next)
                        if (t->unpause && t->state == TRANSFER_RUNNING) {
                                t->unpause = false;
                                t->paused = false;
                                t->unpause_next = unpause;
                                unpause = t;
                        }
                if (!m->stopping)
                        admit(m);
                stop = m->stopping;
                pthread_mutex_unlock(&m->lock);

                /* curl re-delivers what it held back through write_cb, which
                 * takes the lock. Only this thread ends transfers, so these
                 * stay valid. */
                while ((t = unpause)) {
                        unpause = t->unpause_next;
                        t->unpause_next = NULL;
                        (void) curl_easy_pause(t->easy, CURLPAUSE_CONT);
                }

                while ((t = cancelled)) {
                        cancelled = t->queue_next;
                        t->queue_next = NULL;
                        transfer_finish(m, t, CURLE_ABORTED_BY_CALLBACK, -ECANCELED);
                }
                if (stop)
                        break;

                (void) curl_multi_perform(m->multi, &running);
                while ((msg = curl_multi_info_read(m->multi, &left))) {
                        if (msg->msg != CURLMSG_DONE)
                                continue;
                        t = NULL;
                        (void) curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
                        {
                                int code = (int) msg->data.result;

                                curl_multi_remove_handle(m->multi, msg->easy_handle);
                                pthread_mutex_lock(&m->lock);
                                t->host->running--;
                                if (t->klass == KILN_REGISTRY_TRANSFER_LAYER)
                                        t->host->running_layers--;
                                pthread_mutex_unlock(&m->lock);
                                transfer_finish(m, t, code, 0);
                        }
                }
                /* Something finished: admit the next before sleeping. */
                pthread_mutex_lock(&m->lock);
                take_submitted(m);
                admit(m);
                pthread_mutex_unlock(&m->lock);

                (void) curl_multi_poll(m->multi, NULL, 0, MANAGER_POLL_MS, NULL);
        }
        return NULL;
}

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *userptr)
{
        struct kiln_registry_transfer_manager *m = userptr;

        if (data >= 0 && data < CURL_LOCK_DATA_LAST)
                pthread_mutex_lock(&m->share_lock[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *userptr)
{
        struct kiln_registry_transfer_manager *m = userptr;

        if (data >= 0 && data < CURL_LOCK_DATA_LAST)
                pthread_mutex_unlock(&m->share_lock[data]);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
        curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int kiln_registry_transfer_manager_new(const struct kiln_registry_transfer_manager_options *o,
                                       struct kiln_registry_transfer_manager **ret,
                                       struct kiln_error **err)
{
        struct kiln_registry_transfer_manager *m;
        const char *env_ca;
        int r;

        pthread_once(&curl_once, curl_init_once);
        if (curl_init_result != CURLE_OK)
                return kiln_error_set(err, -EIO, "initialise libcurl: %s",
                                      curl_easy_strerror(curl_init_result));

        m = kiln_xcalloc(1, sizeof(*m));
        pthread_mutex_init(&m->lock, NULL);
        pthread_mutex_init(&m->ca_lock, NULL);
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
                pthread_mutex_init(&m->share_lock[i], NULL);
        m->max_concurrency = o && o->max_concurrency ? o->max_concurrency
                                                     : KILN_REGISTRY_DEFAULT_MAX_CONCURRENCY;
        m->stall_timeout_sec =
                o && o->stall_timeout_sec ? o->stall_timeout_sec : KILN_REGISTRY_STALL_TIMEOUT_SEC;
        m->user_agent = kiln_xstrdup(o && o->user_agent ? o->user_agent : "kiln/" KILN_VERSION);

        env_ca = secure_getenv("SSL_CERT_FILE");
        if (env_ca && *env_ca)
                m->system_ca_file = kiln_xstrdup(env_ca);
        else {
                CURL *probe = curl_easy_init();
                char *def = NULL;

                if (probe && curl_easy_getinfo(probe, CURLINFO_CAINFO, &def) == CURLE_OK && def)
                        m->system_ca_file = kiln_xstrdup(def);
                else
                        m->system_ca_file = kiln_xstrdup(DEFAULT_CA_BUNDLE);
                if (probe)
                        curl_easy_cleanup(probe);
        }

        m->multi = curl_multi_init();
        m->share = curl_share_init();
        if (!m->multi || !m->share) {
                kiln_registry_transfer_manager_free(m);
                return kiln_error_set(err, -ENOMEM, "initialise libcurl handles");
        }
        /* The multi handle keeps the connection cache (so the per-host cap
         * applies to it); the share handle adds DNS and TLS sessions, which
         * easy handles would otherwise each keep. */
        (void) curl_share_setopt(m->share, CURLSHOPT_LOCKFUNC, share_lock);
        (void) curl_share_setopt(m->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        (void) curl_share_setopt(m->share, CURLSHOPT_USERDATA, m);
        (void) curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        (void) curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        (void) curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                                 (long) m->max_concurrency + 1);
        (void) curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_NOTHING);

        r = pthread_create(&m->thread, NULL, manager_thread, m);
        if (r != 0) {
                kiln_registry_transfer_manager_free(m);
                return kiln_error_set(err, -r, "start the transfer manager's thread: %s",
                                      strerror(r));
        }
        m->thread_started = true;
        *ret = m;
        return 0;
}

struct kiln_registry_transfer_manager *
kiln_registry_transfer_manager_free(struct kiln_registry_transfer_manager *m)
{
        if (!m)
                return NULL;
        if (m->thread_started) {
                pthread_mutex_lock(&m->lock);
                m->stopping = true;
                pthread_mutex_unlock(&m->lock);
                curl_multi_wakeup(m->multi);
                pthread_join(m->thread, NULL);
        }
        /* Submissions that raced with the stop. */
        pthread_mutex_lock(&m->lock);
        take_submitted(m);
        {
                struct kiln_registry_transfer *cancelled = NULL, *t;

                m->stopping = true;
                take_cancelled(m, &cancelled);
                pthread_mutex_unlock(&m->lock);
                while ((t = cancelled)) {
                        cancelled = t->queue_next;
                        transfer_finish(m, t, CURLE_ABORTED_BY_CALLBACK, -ECANCELED);
                }
        }
        /* What owners still hold is over: it no longer needs the manager. */
        pthread_mutex_lock(&m->lock);
        for (struct kiln_registry_transfer *t = m->all; t; t = t->all_next)
                t->m = NULL;
        m->all = NULL;
        pthread_mutex_unlock(&m->lock);
        if (m->multi)
                curl_multi_cleanup(m->multi);
        if (m->share)
                curl_share_cleanup(m->share);
        while (m->hosts) {
                struct host_slots *h = m->hosts;
                m->hosts = h->next;
                free(h->key);
                free(h);
        }
        while (m->ca_bundles) {
                struct ca_bundle *b = m->ca_bundles;
                m->ca_bundles = b->next;
                free(b->key);
                free(b->data);
                free(b);
        }
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
                pthread_mutex_destroy(&m->share_lock[i]);
        pthread_mutex_destroy(&m->ca_lock);
        pthread_mutex_destroy(&m->lock);
        free(m->user_agent);
        free(m->system_ca_file);
        free(m);
        return NULL;
}

void kiln_registry_transfer_manager_wake(struct kiln_registry_transfer_manager *m)
{
        curl_multi_wakeup(m->multi);
}

unsigned
kiln_registry_transfer_manager_max_concurrency(const struct kiln_registry_transfer_manager *m)
{
        return m->max_concurrency;
}

const char *
kiln_registry_transfer_manager_user_agent(const struct kiln_registry_transfer_manager *m)
{
        return m->user_agent;
}

void kiln_registry_transfer_manager_peak(struct kiln_registry_transfer_manager *m, const char *host,
                                         unsigned *ret_total, unsigned *ret_layers)
{
        *ret_total = *ret_layers = 0;
        pthread_mutex_lock(&m->lock);
        for (struct host_slots *h = m->hosts; h; h = h->next)
                if (streq(h->key, host)) {
                        *ret_total = h->peak;
                        *ret_layers = h->peak_layers;
                }
        pthread_mutex_unlock(&m->lock);
}

/* ---- submission (caller's thread) ---- */

static void log_request(struct kiln_registry_transfer *t, const char *method,
                        const struct kiln_registry_header *headers, size_t n_headers)
{
        struct kiln_log_field *f;
        char **owned;
        size_t n = 0, n_owned = 0;

        if (!kiln_log_enabled(KILN_LOG_DEBUG))
                return;
        f = kiln_xcalloc(n_headers + t->n_extra + 5, sizeof(*f));
        owned = kiln_xcalloc(2 * n_headers + 1, sizeof(char *));
        f[n++] = (struct kiln_log_field){ "request.method", method };
        f[n++] = (struct kiln_log_field){ "url", t->url_sanitized };
        f[n++] = (struct kiln_log_field){ "spanID", t->span_id };
        if (t->trace_id)
                f[n++] = (struct kiln_log_field){ "traceID", t->trace_id };
        for (size_t i = 0; i < t->n_extra; i++)
                f[n++] = t->extra[i];
        for (size_t i = 0; i < n_headers; i++) {
                char *v = kiln_registry_header_log_value(headers[i].name, headers[i].value, true);
                unsigned seen = 0;
                char *key;

                if (!v)
                        continue;
                for (size_t j = 0; j < i; j++)
                        if (ascii_strcaseeq(headers[j].name, headers[i].name))
                                seen++;
                key = seen ? kiln_xasprintf("request.header.%s.%u", headers[i].name, seen)
                           : kiln_xasprintf("request.header.%s", headers[i].name);
                for (char *c = key; *c; c++)
                        if (*c >= 'A' && *c <= 'Z')
                                *c = (char) (*c - 'A' + 'a');
                owned[n_owned++] = key;
                owned[n_owned++] = v;
                f[n++] = (struct kiln_log_field){ key, v };
        }
        kiln_log_fields(KILN_LOG_DEBUG, f, n, "do request");
        for (size_t i = 0; i < n_owned; i++)
                free(owned[i]);
        free(owned);
        free(f);
}

static bool has_header(const struct kiln_registry_header *h, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (ascii_strcaseeq(h[i].name, name))
                        return true;
        return false;
}

static struct kiln_registry_transfer *transfer_free_unstarted(struct kiln_registry_transfer *t)
{
        while (t->q_head) {
                struct sink_chunk *c = t->q_head;
                t->q_head = c->next;
                free(c);
        }
        kiln_error_free(t->sink_error);
        if (t->easy)
                curl_easy_cleanup(t->easy);
        curl_slist_free_all(t->slist);
        if (t->body) {
                if (t->body_secret)
                        explicit_bzero(t->body, t->body_len);
                free(t->body);
        }
        for (size_t i = 0; i < t->n_extra; i++) {
                free((char *) t->extra[i].key);
                free((char *) t->extra[i].value);
        }
        free(t->slot_host);
        free(t->trace_id);
        free(t->url_sanitized);
        free(t->cur_text);
        kiln_registry_transfer_response_release(&t->resp);
        pthread_cond_destroy(&t->cond);
        free(t);
        return NULL;
}

static int slist_add(struct curl_slist **l, const char *line)
{
        struct curl_slist *n = curl_slist_append(*l, line);

        if (!n)
                return -ENOMEM;
        *l = n;
        return 0;
}

int kiln_registry_transfer_start(struct kiln_registry_transfer_manager *m,
                                 const struct kiln_registry_transfer_request *req,
                                 struct kiln_registry_transfer **ret, struct kiln_error **err)
{
        struct kiln_registry_transfer *t;
        struct kiln_registry_header *hdrs = NULL;
        size_t n_hdrs = 0;
        _cleanup_free_ char *host_port = NULL, *ca_owned = NULL;
        const char *method = req->method ? req->method : "GET";
        CURL *e;
        int r = 0;

        host_port = transfer_url_host_port(req->url);
        if (!host_port) {
                _cleanup_free_ char *s = kiln_registry_url_sanitize(req->url);
                return kiln_error_set(err, -EINVAL, "invalid request url '%s'", s);
        }
        if (req->n_log_fields > KILN_LIMIT_REGISTRY_LOG_FIELDS)
                return kiln_error_set(err, -E2BIG, "more than %u log fields",
                                      KILN_LIMIT_REGISTRY_LOG_FIELDS);

        t = kiln_xcalloc(1, sizeof(*t));
        t->m = m;
        pthread_cond_init(&t->cond, NULL);
        t->resp.content_length = -1;
        t->body_fd = -1;
        t->klass = req->klass;
        t->slot_host = kiln_xstrdup(req->slot_host ? req->slot_host : host_port);
        t->trace_id = req->trace_id ? kiln_xstrdup(req->trace_id) : NULL;
        t->url_sanitized = kiln_registry_url_sanitize(req->url);
        kiln_registry_random_hex(t->span_id, 8);
        for (size_t i = 0; i < req->n_log_fields; i++) {
                t->extra[i].key = kiln_xstrdup(req->log_fields[i].key);
                t->extra[i].value = kiln_xstrdup(req->log_fields[i].value);
        }
        t->n_extra = req->n_log_fields;
        t->follow_redirects = req->follow_redirects;
        t->body_max = req->body_max;
        t->resp.body = KILN_BUF_INIT(req->body_max > KILN_LIMIT_REGISTRY_ERROR_BODY
                                             ? req->body_max
                                             : KILN_LIMIT_REGISTRY_ERROR_BODY);
        t->sink = req->sink;
        t->on_response = req->on_response;
        t->userdata = req->userdata;
        t->done = req->done;
        t->done_userdata = req->done_userdata;
        t->cancel_flag = req->cancel;

        /* The headers sent and logged: the caller's, plus a User-Agent. */
        hdrs = kiln_xcalloc(req->n_headers + 1, sizeof(*hdrs));
        for (size_t i = 0; i < req->n_headers; i++)
                hdrs[n_hdrs++] = req->headers[i];
        if (!has_header(req->headers, req->n_headers, "User-Agent"))
                hdrs[n_hdrs++] = (struct kiln_registry_header){ "User-Agent", m->user_agent };

        e = t->easy = curl_easy_init();
        if (!e) {
                r = kiln_error_set(err, -ENOMEM, "create a curl handle");
                goto fail;
        }
        for (size_t i = 0; i < n_hdrs && r >= 0; i++) {
                _cleanup_free_ char *line = kiln_xasprintf("%s: %s", hdrs[i].name, hdrs[i].value);
                r = slist_add(&t->slist, line);
        }
        /* curl's own defaults that Go would not send. */
        if (r >= 0 && !has_header(hdrs, n_hdrs, "Accept"))
                r = slist_add(&t->slist, "Accept:");
        if (r >= 0 && !has_header(hdrs, n_hdrs, "Content-Type"))
                r = slist_add(&t->slist, "Content-Type:");
        if (r >= 0)
                r = slist_add(&t->slist, "Expect:");
        if (r >= 0 && req->authorization) {
                _cleanup_(free_secretp) char *line =
                        kiln_xasprintf("Authorization: %s", req->authorization);
                r = slist_add(&t->slist, line);
        }
        if (r < 0) {
                r = kiln_error_set(err, -ENOMEM, "build request headers");
                goto fail;
        }

        (void) curl_easy_setopt(e, CURLOPT_URL, req->url);
        (void) curl_easy_setopt(e, CURLOPT_PRIVATE, t);
        (void) curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(e, CURLOPT_SHARE, m->share);
        (void) curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
        (void) curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->slist);
        (void) curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->curl_error);
        (void) curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
        (void) curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
        (void) curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
        (void) curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
        (void) curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
        (void) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                                (long) KILN_REGISTRY_CONNECT_TIMEOUT_MS);
        (void) curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        (void) curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long) m->stall_timeout_sec);
        (void) curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        (void) curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 60L);
        (void) curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 60L);
        (void) curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long) TRANSFER_BUFFER_SIZE);
        if (req->follow_redirects) {
                (void) curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
                (void) curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long) KILN_REGISTRY_MAX_REDIRECTS);
        }
        /* Go never proxies loopback addresses (ProxyFromEnvironment); curl
         * would, for http_proxy without no_proxy. */
        {
                _cleanup_free_ char *h = kiln_xstrdup(host_port);
                char *colon = strrchr(h, ':');

                if (colon)
                        *colon = 0;
                if (kiln_registry_host_is_loopback(h))
                        (void) curl_easy_setopt(e, CURLOPT_PROXY, "");
        }

        /* method and body */
        if (req->has_body) {
                t->body_len = req->body_len;
                if (req->body_fd >= 0)
                        t->body_fd = req->body_fd;
                else {
                        t->body = kiln_xmalloc(req->body_len + 1);
                        if (req->body_len)
                                memcpy(t->body, req->body, req->body_len);
                        t->body_secret = req->body_secret;
                }
                t->body_offset = req->body_offset;
                (void) curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
                (void) curl_easy_setopt(e, CURLOPT_READDATA, t);
                (void) curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
                (void) curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
        }
        if (streq(method, "HEAD")) {
                t->is_head = true;
                (void) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        } else if (streq(method, "POST")) {
                (void) curl_easy_setopt(e, CURLOPT_POST, 1L);
                if (req->has_body)
                        (void) curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                                                (curl_off_t) t->body_len);
                else {
                        (void) curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
                        (void) curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) 0);
                }
        } else if (streq(method, "PUT") || streq(method, "PATCH")) {
                (void) curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
                (void) curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                                        (curl_off_t) (req->has_body ? t->body_len : 0));
                if (!req->has_body)
                        (void) curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
                if (!req->has_body)
                        (void) curl_easy_setopt(e, CURLOPT_READDATA, t);
                if (streq(method, "PATCH"))
                        (void) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PATCH");
        } else if (!streq(method, "GET"))
                (void) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);

        /* TLS */
        if (req->tls) {
                const struct kiln_registry_tls *tls = req->tls;

                if (tls->n_ca_files > 0) {
                        struct curl_blob blob;
                        const char *data;
                        size_t len;

                        r = ca_bundle_get(m, tls, &data, &len, &ca_owned, err);
                        if (r < 0)
                                goto fail;
                        blob = (struct curl_blob){ .data = (void *) data,
                                                   .len = len,
                                                   .flags = ca_owned ? CURL_BLOB_COPY
                                                                     : CURL_BLOB_NOCOPY };
                        (void) curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
                }
                if (tls->n_keypairs > 0) {
                        (void) curl_easy_setopt(e, CURLOPT_SSLCERT, tls->keypairs[0].cert);
                        (void) curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
                        (void) curl_easy_setopt(e, CURLOPT_SSLKEY, tls->keypairs[0].key);
                        (void) curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
                }
                if (tls->insecure_skip_verify) {
                        (void) curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
                        (void) curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
                }
        }

        log_request(t, method, hdrs, n_hdrs);
        free(hdrs);
        hdrs = NULL;

        pthread_mutex_lock(&m->lock);
        if (m->stopping) {
                pthread_mutex_unlock(&m->lock);
                r = kiln_error_set(err, -ECANCELED, "the transfer manager is stopping");
                goto fail;
        }
        t->state = TRANSFER_SUBMITTED;
        t->submit_next = m->submitted;
        m->submitted = t;
        t->live_next = m->live;
        if (m->live)
                m->live->live_prev = t;
        m->live = t;
        t->all_next = m->all;
        if (m->all)
                m->all->all_prev = t;
        m->all = t;
        pthread_mutex_unlock(&m->lock);
        curl_multi_wakeup(m->multi);

        *ret = t;
        return 0;
fail:
        free(hdrs);
        transfer_free_unstarted(t);
        return r;
}

int kiln_registry_transfer_wait(struct kiln_registry_transfer *t,
                                const struct kiln_registry_transfer_response **ret)
{
        struct kiln_registry_transfer_manager *m = t->m;

        if (m) { /* else orphaned by the manager's end: over already */
                pthread_mutex_lock(&m->lock);
                for (;;) {
                        struct sink_chunk *c = t->q_head;

                        if (c) {
                                struct kiln_error *e = NULL;
                                bool deliver = !t->sink_failed && !t->discard;
                                int r = 0;

                                t->q_head = c->next;
                                if (!t->q_head)
                                        t->q_tail = NULL;
                                t->q_bytes -= c->len;
                                if (t->paused && !t->unpause && t->q_bytes <= SINK_QUEUE_LOW) {
                                        t->unpause = true;
                                        curl_multi_wakeup(m->multi);
                                }
                                pthread_mutex_unlock(&m->lock);
                                if (deliver)
                                        r = t->sink(t->userdata, c->data, c->len, &e);
                                free(c);
                                pthread_mutex_lock(&m->lock);
                                if (r < 0) {
                                        if (!e)
                                                kiln_error_set(&e, r, "write response body: %s",
                                                               strerror(-r));
                                        t->sink_failed = true;
                                        t->sink_error = e;
                                        curl_multi_wakeup(m->multi);
                                } else
                                        kiln_error_free(e);
                                continue;
                        }
                        if (t->finished)
                                break;
                        pthread_cond_wait(&t->cond, &m->lock);
                }
                pthread_mutex_unlock(&m->lock);
        }
        if (t->sink_error) {
                /* The sink's refusal is the outcome, not the abort it caused. */
                kiln_error_free(t->resp.callback_error);
                t->resp.callback_error = TAKE_PTR(t->sink_error);
                t->resp.callback_failed = true;
                free(t->resp.transport_error);
                t->resp.transport_error = NULL;
                t->result = 0;
        }
        if (ret)
                *ret = &t->resp;
        return t->result;
}

void kiln_registry_transfer_cancel(struct kiln_registry_transfer *t)
{
        struct kiln_registry_transfer_manager *m = t->m;

        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        t->cancel = true;
        pthread_mutex_unlock(&m->lock);
        curl_multi_wakeup(m->multi);
}

struct kiln_registry_transfer *kiln_registry_transfer_free(struct kiln_registry_transfer *t)
{
        if (!t)
                return NULL;
        if (t->m) {
                pthread_mutex_lock(&t->m->lock);
                t->discard = true;
                pthread_mutex_unlock(&t->m->lock);
        }
        kiln_registry_transfer_cancel(t);
        (void) kiln_registry_transfer_wait(t, NULL);
        if (t->m) {
                struct kiln_registry_transfer_manager *m = t->m;

                pthread_mutex_lock(&m->lock);
                if (t->all_prev)
                        t->all_prev->all_next = t->all_next;
                else if (m->all == t)
                        m->all = t->all_next;
                if (t->all_next)
                        t->all_next->all_prev = t->all_prev;
                pthread_mutex_unlock(&m->lock);
        }
        return transfer_free_unstarted(t);
}

const char *kiln_registry_transfer_span_id(const struct kiln_registry_transfer *t)
{
        return t->span_id;
}
