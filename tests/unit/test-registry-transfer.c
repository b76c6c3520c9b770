/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transfer manager's pure parts (slot rule, status and header lines,
 * error classes) and the manager itself against a small HTTP/1.1 server on
 * 127.0.0.1 run by this test: per-host slots, the metadata slot, cancel,
 * limits on bodies and headers, redirects.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/macro.h"
#include "kiln-test.h"
#include "registry/client.h"
#include "registry/transfer-internal.h"
#include "registry/transfer.h"

TEST(slot_rule)
{
        /* N = 4: layers up to 4, anything up to 5, metadata always has the 5th. */
        ASSERT_TRUE(transfer_slot_available(0, 0, 4, KILN_REGISTRY_TRANSFER_LAYER));
        ASSERT_TRUE(transfer_slot_available(3, 3, 4, KILN_REGISTRY_TRANSFER_LAYER));
        ASSERT_TRUE(!transfer_slot_available(4, 4, 4, KILN_REGISTRY_TRANSFER_LAYER));
        ASSERT_TRUE(transfer_slot_available(4, 4, 4, KILN_REGISTRY_TRANSFER_METADATA));
        ASSERT_TRUE(!transfer_slot_available(5, 4, 4, KILN_REGISTRY_TRANSFER_METADATA));
        /* metadata running does not stop layers below N */
        ASSERT_TRUE(transfer_slot_available(4, 3, 4, KILN_REGISTRY_TRANSFER_LAYER));
        ASSERT_TRUE(!transfer_slot_available(5, 0, 4, KILN_REGISTRY_TRANSFER_LAYER));
        /* N = 1 */
        ASSERT_TRUE(!transfer_slot_available(1, 1, 1, KILN_REGISTRY_TRANSFER_LAYER));
        ASSERT_TRUE(transfer_slot_available(1, 1, 1, KILN_REGISTRY_TRANSFER_METADATA));
        return 0;
}

TEST(transfer_class)
{
        ASSERT_EQ_INT(kiln_registry_transfer_class_of("application/vnd.oci.image.manifest.v1+json"),
                      KILN_REGISTRY_TRANSFER_METADATA);
        ASSERT_EQ_INT(kiln_registry_transfer_class_of("application/vnd.in-toto+json"),
                      KILN_REGISTRY_TRANSFER_METADATA);
        ASSERT_EQ_INT(
                kiln_registry_transfer_class_of("application/vnd.oci.image.layer.v1.tar+gzip"),
                KILN_REGISTRY_TRANSFER_LAYER);
        ASSERT_EQ_INT(kiln_registry_transfer_class_of("json"), KILN_REGISTRY_TRANSFER_LAYER);
        ASSERT_EQ_INT(kiln_registry_transfer_class_of(NULL), KILN_REGISTRY_TRANSFER_LAYER);
        return 0;
}

TEST(status_lines)
{
        _cleanup_free_ char *t1 = NULL, *t2 = NULL, *t3 = NULL, *t4 = NULL, *t5 = NULL;
        long code = 0;

        ASSERT_TRUE(transfer_parse_status_line("HTTP/1.1 200 OK\r\n", 17, &code, &t1));
        ASSERT_EQ_INT(code, 200);
        ASSERT_STREQ(t1, "200 OK");
        /* the reason phrase as the server sent it */
        ASSERT_TRUE(transfer_parse_status_line("HTTP/1.1 404 Nope nope\r\n", 24, &code, &t2));
        ASSERT_STREQ(t2, "404 Nope nope");
        /* none: Go's text */
        ASSERT_TRUE(transfer_parse_status_line("HTTP/1.1 503\r\n", 14, &code, &t3));
        ASSERT_STREQ(t3, "503 Service Unavailable");
        ASSERT_TRUE(transfer_parse_status_line("HTTP/2 299\r\n", 12, &code, &t4));
        ASSERT_STREQ(t4, "299");
        /* control bytes from the server are escaped */
        ASSERT_TRUE(transfer_parse_status_line("HTTP/1.0 500 a\x1b[31m\r\n", 20, &code, &t5));
        ASSERT_STREQ(t5, "500 a\\x1b[31m");
        ASSERT_TRUE(!transfer_parse_status_line("Content-Type: x\r\n", 17, &code, &t5));
        ASSERT_TRUE(!transfer_parse_status_line("HTTP/1.1 20x OK\r\n", 17, &code, &t5));
        ASSERT_TRUE(!transfer_parse_status_line("HTTP/1.1 2000\r\n", 15, &code, &t5));
        ASSERT_STREQ(kiln_registry_http_status_text(429), "Too Many Requests");
        ASSERT_STREQ(kiln_registry_http_status_text(799), "");
        return 0;
}

TEST(header_lines)
{
        char *name = NULL, *value = NULL;

        ASSERT_TRUE(transfer_parse_header_line("Docker-Content-Digest:  sha256:x \t\r\n", 36, &name,
                                               &value));
        ASSERT_STREQ(name, "Docker-Content-Digest");
        ASSERT_STREQ(value, "sha256:x");
        free(name);
        free(value);
        ASSERT_TRUE(transfer_parse_header_line("X-Empty:\r\n", 10, &name, &value));
        ASSERT_STREQ(value, "");
        free(name);
        free(value);
        ASSERT_TRUE(!transfer_parse_header_line(": v\r\n", 5, &name, &value));
        ASSERT_TRUE(!transfer_parse_header_line("no colon\r\n", 10, &name, &value));
        ASSERT_TRUE(!transfer_parse_header_line("Bad Name: v\r\n", 13, &name, &value));
        return 0;
}

TEST(url_host_port)
{
        _cleanup_free_ char *a = transfer_url_host_port("https://R.Example/v2/");
        _cleanup_free_ char *b = transfer_url_host_port("http://127.0.0.1:5000/v2/x?ns=y");
        _cleanup_free_ char *c = transfer_url_host_port("http://[::1]:80/");
        _cleanup_free_ char *d = transfer_url_host_port("not a url");

        ASSERT_STREQ(a, "r.example:443");
        ASSERT_STREQ(b, "127.0.0.1:5000");
        ASSERT_STREQ(c, "[::1]:80");
        ASSERT_TRUE(d == NULL);
        return 0;
}

TEST(error_classes)
{
        /* transient: worth a retry on the last host */
        ASSERT_TRUE(transfer_curl_code_is_transient(28));  /* CURLE_OPERATION_TIMEDOUT */
        ASSERT_TRUE(transfer_curl_code_is_transient(18));  /* CURLE_PARTIAL_FILE */
        ASSERT_TRUE(transfer_curl_code_is_transient(56));  /* CURLE_RECV_ERROR */
        ASSERT_TRUE(transfer_curl_code_is_transient(52));  /* CURLE_GOT_NOTHING */
        ASSERT_TRUE(!transfer_curl_code_is_transient(7));  /* CURLE_COULDNT_CONNECT */
        ASSERT_TRUE(!transfer_curl_code_is_transient(6));  /* CURLE_COULDNT_RESOLVE_HOST */
        ASSERT_TRUE(!transfer_curl_code_is_transient(60)); /* CURLE_PEER_FAILED_VERIFICATION */

        /* buildkitd's http fallback */
        ASSERT_TRUE(transfer_is_http_fallback_error(
                35, "error:0A00010B:SSL routines::wrong version number", true));
        ASSERT_TRUE(!transfer_is_http_fallback_error(35, "alert bad certificate", true));
        ASSERT_TRUE(!transfer_is_http_fallback_error(7, "Connection refused", true));
        ASSERT_TRUE(transfer_is_http_fallback_error(7, "Connection refused", false));
        ASSERT_TRUE(transfer_is_http_fallback_error(28, "timed out", false));
        ASSERT_TRUE(!transfer_is_http_fallback_error(28, "timed out", true));
        return 0;
}

TEST(random_ids)
{
        char a[33], b[33];

        kiln_registry_random_hex(a, 16);
        kiln_registry_random_hex(b, 16);
        ASSERT_EQ_INT(strlen(a), 32);
        ASSERT_TRUE(strspn(a, "0123456789abcdef") == 32);
        ASSERT_TRUE(!streq(a, b));
        return 0;
}

TEST(status_errors_and_host_lists)
{
        struct kiln_registry_transfer_response resp = { .status = 404, .content_length = -1 };
        struct kiln_error *e = NULL;
        struct host_errors he = { 0 };
        int r;

        resp.status_text = kiln_xstrdup("404 Not Found");
        resp.body = KILN_BUF_INIT(4096);
        kiln_buf_puts(&resp.body, "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":"
                                  "\"manifest unknown\",\"detail\":{}}]}");
        r = response_status_error("GET", "https://r.example/v2/a/manifests/x?_state=s&ns=d.io",
                                  &resp, &e);
        ASSERT_EQ_INT(r, -ENOENT);
        ASSERT_STREQ(e->message, "GET https://r.example/v2/a/manifests/x?_state=REDACTED&ns=d.io: "
                                 "404 Not Found (MANIFEST_UNKNOWN: manifest unknown)");
        kiln_error_free(e);
        e = NULL;
        kiln_registry_transfer_response_release(&resp);

        host_errors_add(&he, NULL, "HEAD http://a/v2/x: connection refused");
        he.code = -EIO;
        r = host_errors_finish(&he, "resolve 'a/x:latest'", &e);
        ASSERT_EQ_INT(r, -EIO);
        ASSERT_STREQ(e->message, "resolve 'a/x:latest': HEAD http://a/v2/x: connection refused");
        kiln_error_free(e);
        e = NULL;
        host_errors_add(&he, "http://b/v2/x", "500 Internal Server Error");
        r = host_errors_finish(&he, "resolve 'a/x:latest'", &e);
        ASSERT_STREQ(e->message, "resolve 'a/x:latest': all 2 hosts failed: HEAD http://a/v2/x: "
                                 "connection refused; http://b/v2/x: 500 Internal Server Error");
        kiln_error_free(e);
        host_errors_release(&he);
        return 0;
}

/* ---- a tiny HTTP/1.1 server ---- */

#define SERVER_MAX_CONN 32

struct server {
        int fd;
        int port;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool release; /* let /hold requests answer */
        bool stop;
        unsigned holding;
        unsigned active_conns, max_conns;
        unsigned requests;
};

struct conn {
        struct server *s;
        int fd;
};

static void send_all(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k <= 0)
                        return;
                p += k;
                n -= (size_t) k;
        }
}

static void *conn_thread(void *userdata)
{
        struct conn *c = userdata;
        struct server *s = c->s;
        char buf[8192];
        size_t have = 0;

        for (;;) {
                char *end, path[256] = "";
                ssize_t k;

                while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
                        struct pollfd p = { .fd = c->fd, .events = POLLIN };
                        if (poll(&p, 1, 200) == 0) {
                                pthread_mutex_lock(&s->lock);
                                bool stop = s->stop;
                                pthread_mutex_unlock(&s->lock);
                                if (stop)
                                        goto out;
                                continue;
                        }
                        k = recv(c->fd, buf + have, sizeof(buf) - have, 0);
                        if (k <= 0)
                                goto out;
                        have += (size_t) k;
                        if (have == sizeof(buf))
                                goto out;
                }
                (void) sscanf(buf, "%*s %255s", path);
                pthread_mutex_lock(&s->lock);
                s->requests++;
                pthread_mutex_unlock(&s->lock);
                if (startswith(path, "/hold")) {
                        pthread_mutex_lock(&s->lock);
                        s->holding++;
                        pthread_cond_broadcast(&s->cond);
                        while (!s->release && !s->stop)
                                pthread_cond_wait(&s->cond, &s->lock);
                        s->holding--;
                        pthread_mutex_unlock(&s->lock);
                }
                if (startswith(path, "/redirect")) {
                        const char *r = "HTTP/1.1 302 Found\r\nLocation: /fast\r\n"
                                        "Content-Length: 3\r\n\r\nxyz";
                        send_all(c->fd, r, strlen(r));
                } else if (startswith(path, "/huge")) {
                        /* 8 MiB of a counting pattern: more than the sink queue */
                        const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 8388608\r\n\r\n";
                        static unsigned char block[65536];
                        send_all(c->fd, r, strlen(r));
                        for (int i = 0; i < 128; i++) {
                                memset(block, i, sizeof(block));
                                send_all(c->fd, (const char *) block, sizeof(block));
                        }
                } else if (startswith(path, "/big")) {
                        const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
                        static char zeros[100000];
                        send_all(c->fd, r, strlen(r));
                        send_all(c->fd, zeros, sizeof(zeros));
                } else if (startswith(path, "/headers")) {
                        char line[64];
                        const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n";
                        send_all(c->fd, r, strlen(r));
                        for (int i = 0; i < 300; i++) {
                                int n = snprintf(line, sizeof(line), "X-H%d: v\r\n", i);
                                send_all(c->fd, line, (size_t) n);
                        }
                        send_all(c->fd, "\r\n", 2);
                } else if (startswith(path, "/missing")) {
                        const char *r =
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
                        send_all(c->fd, r, strlen(r));
                } else {
                        const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                        "Docker-Content-Digest: sha256:x\r\n\r\nok";
                        send_all(c->fd, r, strlen(r));
                }
                have -= (size_t) (end + 4 - buf);
                memmove(buf, end + 4, have);
        }
out:
        close(c->fd);
        pthread_mutex_lock(&s->lock);
        s->active_conns--;
        pthread_mutex_unlock(&s->lock);
        free(c);
        return NULL;
}

static void *server_thread(void *userdata)
{
        struct server *s = userdata;

        for (;;) {
                struct pollfd p = { .fd = s->fd, .events = POLLIN };
                pthread_t t;
                struct conn *c;
                int fd;

                pthread_mutex_lock(&s->lock);
                bool stop = s->stop;
                pthread_mutex_unlock(&s->lock);
                if (stop)
                        return NULL;
                if (poll(&p, 1, 100) <= 0)
                        continue;
                fd = accept(s->fd, NULL, NULL);
                if (fd < 0)
                        continue;
                c = kiln_xcalloc(1, sizeof(*c));
                c->s = s;
                c->fd = fd;
                pthread_mutex_lock(&s->lock);
                s->active_conns++;
                if (s->active_conns > s->max_conns)
                        s->max_conns = s->active_conns;
                pthread_mutex_unlock(&s->lock);
                if (pthread_create(&t, NULL, conn_thread, c) != 0) {
                        close(fd);
                        free(c);
                        continue;
                }
                pthread_detach(t);
        }
}

static int server_start(struct server *s)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);

        *s = (struct server){ 0 };
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s->fd < 0 || bind(s->fd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
            listen(s->fd, 64) < 0 || getsockname(s->fd, (struct sockaddr *) &a, &len) < 0)
                return -errno;
        s->port = ntohs(a.sin_port);
        return -pthread_create(&s->thread, NULL, server_thread, s);
}

static void server_release(struct server *s)
{
        pthread_mutex_lock(&s->lock);
        s->release = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

static void server_stop(struct server *s)
{
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        close(s->fd);
        /* connection threads see stop within their poll interval */
        for (int i = 0; i < 100; i++) {
                pthread_mutex_lock(&s->lock);
                unsigned n = s->active_conns;
                pthread_mutex_unlock(&s->lock);
                if (n == 0)
                        break;
                usleep(20000);
        }
}

static bool wait_holding(struct server *s, unsigned n)
{
        struct timespec deadline;
        bool ok = true;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 10;
        pthread_mutex_lock(&s->lock);
        while (s->holding < n && ok)
                ok = pthread_cond_timedwait(&s->cond, &s->lock, &deadline) == 0;
        ok = s->holding >= n;
        pthread_mutex_unlock(&s->lock);
        return ok;
}

static int start(struct kiln_registry_transfer_manager *m, struct server *s, const char *path,
                 enum kiln_registry_transfer_class k, struct kiln_registry_transfer **ret)
{
        _cleanup_free_ char *url = kiln_xasprintf("http://127.0.0.1:%d%s", s->port, path);
        struct kiln_registry_transfer_request req = {
                .url = url,
                .klass = k,
                .body_max = 1024,
                .follow_redirects = true,
        };
        struct kiln_error *e = NULL;
        int r = kiln_registry_transfer_start(m, &req, ret, &e);

        if (r < 0)
                printf("# start: %s\n", kiln_error_message(e));
        kiln_error_free(e);
        return r;
}

TEST(manager_slots_metadata_and_cancel)
{
        struct kiln_registry_transfer_manager_options o = { .max_concurrency = 2 };
        _cleanup_(kiln_registry_transfer_manager_freep) struct kiln_registry_transfer_manager *m =
                NULL;
        struct kiln_registry_transfer *layers[4] = { 0 }, *meta = NULL, *queued = NULL;
        const struct kiln_registry_transfer_response *resp;
        struct kiln_error *e = NULL;
        struct server s;
        _cleanup_free_ char *key = NULL;
        unsigned peak = 0, peak_layers = 0;
        int r;

        ASSERT_OK(server_start(&s));
        key = kiln_xasprintf("127.0.0.1:%d", s.port);
        r = kiln_registry_transfer_manager_new(&o, &m, &e);
        ASSERT_OK(r);

        /* Four layers: two run (and hang), two wait in the manager. */
        for (int i = 0; i < 4; i++)
                ASSERT_OK(start(m, &s, "/hold", KILN_REGISTRY_TRANSFER_LAYER, &layers[i]));
        ASSERT_TRUE(wait_holding(&s, 2));
        /* A metadata request gets the extra slot at once. */
        ASSERT_OK(start(m, &s, "/fast", KILN_REGISTRY_TRANSFER_METADATA, &meta));
        ASSERT_EQ_INT(kiln_registry_transfer_wait(meta, &resp), 0);
        ASSERT_EQ_INT(resp->status, 200);
        ASSERT_STREQ(resp->status_text, "200 OK");
        ASSERT_STREQ(resp->body.data, "ok");
        ASSERT_STREQ(kiln_registry_transfer_response_header(resp, "docker-content-digest"),
                     "sha256:x");
        pthread_mutex_lock(&s.lock);
        ASSERT_EQ_INT(s.holding, 2);
        ASSERT_TRUE(s.max_conns <= 3);
        pthread_mutex_unlock(&s.lock);
        meta = kiln_registry_transfer_free(meta);

        /* A queued layer can be cancelled. */
        ASSERT_OK(start(m, &s, "/hold", KILN_REGISTRY_TRANSFER_LAYER, &queued));
        kiln_registry_transfer_cancel(queued);
        ASSERT_EQ_INT(kiln_registry_transfer_wait(queued, NULL), -ECANCELED);
        queued = kiln_registry_transfer_free(queued);

        server_release(&s);
        for (int i = 0; i < 4; i++) {
                ASSERT_EQ_INT(kiln_registry_transfer_wait(layers[i], &resp), 0);
                ASSERT_EQ_INT(resp->status, 200);
                layers[i] = kiln_registry_transfer_free(layers[i]);
        }
        kiln_registry_transfer_manager_peak(m, key, &peak, &peak_layers);
        ASSERT_EQ_INT(peak_layers, 2);
        ASSERT_EQ_INT(peak, 3);
        pthread_mutex_lock(&s.lock);
        ASSERT_TRUE(s.max_conns <= 3);
        pthread_mutex_unlock(&s.lock);

        m = kiln_registry_transfer_manager_free(m);
        server_stop(&s);
        return 0;
}

TEST(manager_limits_redirects_and_errors)
{
        _cleanup_(kiln_registry_transfer_manager_freep) struct kiln_registry_transfer_manager *m =
                NULL;
        struct kiln_registry_transfer *t = NULL;
        const struct kiln_registry_transfer_response *resp;
        struct kiln_error *e = NULL;
        struct server s;

        ASSERT_OK(server_start(&s));
        ASSERT_OK(kiln_registry_transfer_manager_new(NULL, &m, &e));

        /* A body over body_max: refused from Content-Length. */
        ASSERT_OK(start(m, &s, "/big", KILN_REGISTRY_TRANSFER_METADATA, &t));
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
        ASSERT_TRUE(resp->callback_failed);
        ASSERT_EQ_INT(resp->callback_error->code, -E2BIG);
        t = kiln_registry_transfer_free(t);

        /* Too many headers. */
        ASSERT_OK(start(m, &s, "/headers", KILN_REGISTRY_TRANSFER_METADATA, &t));
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
        ASSERT_TRUE(resp->callback_failed);
        ASSERT_TRUE(strstr(kiln_error_message(resp->callback_error), "headers") != NULL);
        t = kiln_registry_transfer_free(t);

        /* A redirect is followed; the final response is the one reported. */
        ASSERT_OK(start(m, &s, "/redirect", KILN_REGISTRY_TRANSFER_METADATA, &t));
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
        ASSERT_EQ_INT(resp->status, 200);
        ASSERT_STREQ(resp->body.data, "ok");
        ASSERT_TRUE(strstr(resp->effective_url, "/fast") != NULL);
        t = kiln_registry_transfer_free(t);

        /* An error body is kept for the message. */
        ASSERT_OK(start(m, &s, "/missing", KILN_REGISTRY_TRANSFER_METADATA, &t));
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
        ASSERT_EQ_INT(resp->status, 404);
        ASSERT_STREQ(resp->body.data, "not found");
        t = kiln_registry_transfer_free(t);

        /* A refused connection is a transport error. */
        {
                struct kiln_registry_transfer_request req = {
                        .url = "http://127.0.0.1:1/v2/",
                        .body_max = 16,
                };
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &t, &e));
                ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
                ASSERT_EQ_INT(resp->status, 0);
                ASSERT_TRUE(resp->curl_code != 0 && resp->transport_error);
                t = kiln_registry_transfer_free(t);
        }

        /* A bad URL fails at start. */
        {
                struct kiln_registry_transfer_request req = { .url = "::nope" };
                ASSERT_EQ_INT(kiln_registry_transfer_start(m, &req, &t, &e), -EINVAL);
                kiln_error_free(e);
                e = NULL;
        }

        /* A transfer left running is cancelled when the manager goes. */
        ASSERT_OK(start(m, &s, "/hold", KILN_REGISTRY_TRANSFER_LAYER, &t));
        ASSERT_TRUE(wait_holding(&s, 1));
        m = kiln_registry_transfer_manager_free(m);
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, NULL), -ECANCELED);
        t = kiln_registry_transfer_free(t);
        server_release(&s);
        server_stop(&s);
        return 0;
}

struct counting_sink {
        uint64_t bytes;
        uint64_t sum; /* of byte values times their 64 KiB block number */
        uint64_t fail_after;
        unsigned calls;
};

static int count_sink(void *userdata, const void *p, size_t n, struct kiln_error **err)
{
        struct counting_sink *c = userdata;
        const unsigned char *b = p;

        if (c->fail_after && c->bytes + n > c->fail_after)
                return kiln_error_set(err, -ENOSPC, "sink full after %" PRIu64 " bytes", c->bytes);
        for (size_t i = 0; i < n; i++)
                c->sum += b[i];
        c->bytes += n;
        if (++c->calls % 8 == 0)
                usleep(2000); /* slower than the network: the queue fills, curl pauses */
        return 0;
}

TEST(manager_sink_on_the_waiter_with_pauses)
{
        _cleanup_(kiln_registry_transfer_manager_freep) struct kiln_registry_transfer_manager *m =
                NULL;
        struct kiln_registry_transfer *t = NULL;
        const struct kiln_registry_transfer_response *resp;
        struct kiln_error *e = NULL;
        struct counting_sink cs = { 0 };
        struct server s;
        _cleanup_free_ char *url = NULL;
        uint64_t want = 0;

        for (int i = 0; i < 128; i++)
                want += (uint64_t) i * 65536;
        ASSERT_OK(server_start(&s));
        ASSERT_OK(kiln_registry_transfer_manager_new(NULL, &m, &e));
        url = kiln_xasprintf("http://127.0.0.1:%d/huge", s.port);
        {
                struct kiln_registry_transfer_request req = {
                        .url = url,
                        .klass = KILN_REGISTRY_TRANSFER_LAYER,
                        .sink = count_sink,
                        .userdata = &cs,
                };
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &t, &e));
        }
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
        ASSERT_EQ_INT(resp->status, 200);
        ASSERT_TRUE(!resp->callback_failed && resp->curl_code == 0);
        ASSERT_EQ_INT(cs.bytes, 8388608);
        ASSERT_EQ_INT(resp->body_received, 8388608);
        ASSERT_EQ_INT(cs.sum, want);
        /* waiting again returns at once */
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, NULL), 0);
        t = kiln_registry_transfer_free(t);

        /* A sink that refuses: the transfer stops with the sink's error. */
        cs = (struct counting_sink){ .fail_after = 3u << 20 };
        {
                struct kiln_registry_transfer_request req = {
                        .url = url,
                        .klass = KILN_REGISTRY_TRANSFER_LAYER,
                        .sink = count_sink,
                        .userdata = &cs,
                };
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &t, &e));
        }
        ASSERT_EQ_INT(kiln_registry_transfer_wait(t, &resp), 0);
        ASSERT_TRUE(resp->callback_failed);
        ASSERT_EQ_INT(resp->callback_error->code, -ENOSPC);
        ASSERT_TRUE(resp->transport_error == NULL);
        ASSERT_TRUE(cs.bytes <= 3u << 20);
        t = kiln_registry_transfer_free(t);

        /* Freed unwaited: queued data is dropped, never handed to the sink. */
        cs = (struct counting_sink){ 0 };
        {
                struct kiln_registry_transfer_request req = {
                        .url = url,
                        .klass = KILN_REGISTRY_TRANSFER_LAYER,
                        .sink = count_sink,
                        .userdata = &cs,
                };
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &t, &e));
        }
        t = kiln_registry_transfer_free(t);
        ASSERT_EQ_INT(cs.bytes, 0);

        m = kiln_registry_transfer_manager_free(m);
        server_stop(&s);
        return 0;
}

static int64_t mono_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

TEST(manager_cancel_flag)
{
        _cleanup_(kiln_registry_transfer_manager_freep) struct kiln_registry_transfer_manager *m =
                NULL;
        struct kiln_registry_transfer *running = NULL, *queued = NULL, *late = NULL;
        struct kiln_registry_transfer_manager_options o = { .max_concurrency = 1 };
        _cleanup_free_ char *url = NULL;
        atomic_bool flag, other;
        struct kiln_error *e = NULL;
        struct server s;
        int64_t t0;

        atomic_init(&flag, false);
        atomic_init(&other, false);
        ASSERT_OK(server_start(&s));
        ASSERT_OK(kiln_registry_transfer_manager_new(&o, &m, &e));
        url = kiln_xasprintf("http://127.0.0.1:%d/hold", s.port);
        {
                struct kiln_registry_transfer_request req = {
                        .url = url,
                        .klass = KILN_REGISTRY_TRANSFER_LAYER,
                        .body_max = 1024,
                        .cancel = &flag,
                };

                /* One runs (held by the server), one waits for the slot. */
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &running, &e));
                ASSERT_TRUE(wait_holding(&s, 1));
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &queued, &e));
                /* Another operation's flag is not this one's. */
                req.cancel = &other;
                ASSERT_OK(kiln_registry_transfer_start(m, &req, &late, &e));
        }

        /* Set and woken: both of the flag's transfers end at once. */
        t0 = mono_ms();
        atomic_store(&flag, true);
        kiln_registry_transfer_manager_wake(m);
        ASSERT_EQ_INT(kiln_registry_transfer_wait(running, NULL), -ECANCELED);
        ASSERT_EQ_INT(kiln_registry_transfer_wait(queued, NULL), -ECANCELED);
        ASSERT_TRUE(mono_ms() - t0 < 900);
        running = kiln_registry_transfer_free(running);
        queued = kiln_registry_transfer_free(queued);

        /* Set without a wake: seen at the manager's next poll. */
        ASSERT_TRUE(wait_holding(&s, 1));
        t0 = mono_ms();
        atomic_store(&other, true);
        ASSERT_EQ_INT(kiln_registry_transfer_wait(late, NULL), -ECANCELED);
        ASSERT_TRUE(mono_ms() - t0 < 3000);
        late = kiln_registry_transfer_free(late);

        server_release(&s);
        m = kiln_registry_transfer_manager_free(m);
        server_stop(&s);
        return 0;
}
