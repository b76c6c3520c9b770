/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "cli/http.h"
#include "kiln-test.h"

/* ---- a tiny HTTP server, one connection, on a thread of the test ---- */

struct server;
typedef void (*handler_fn)(struct server *s, int fd);

struct server {
        char dir[64];
        char path[128];
        char address[160];
        int lfd;
        pthread_t thread;
        bool running;
        handler_fn handle;
        /* what to answer: pieces written one by one, with a pause between */
        const char *const *pieces;
        /* what the handler saw */
        struct kiln_buf head;
        struct kiln_buf body;
        bool body_ok;
        bool client_closed;
};

static uint64_t now_ms(void)
{
        return (uint64_t) kiln_mono_ms();
}

static void *server_thread(void *userdata)
{
        struct server *s = userdata;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);

        if (fd < 0)
                return NULL;
        s->handle(s, fd);
        close(fd);
        return NULL;
}

static void rm_dir(char *dir)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (dir[0])
                (void) kiln_rm_rf_at(AT_FDCWD, dir, NULL, &err);
}

/* Listens on a unix socket in a new temporary directory; listen: false
 * leaves the socket bound but not listening (connections are refused). */
static int server_start(struct server *s, handler_fn handle, bool listening)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        *s = (struct server){ .lfd = -1, .handle = handle };
        s->head = KILN_BUF_INIT(1u << 20);
        s->body = KILN_BUF_INIT(256u << 20);
        snprintf(s->dir, sizeof(s->dir), "/tmp/kiln-test-http-XXXXXX");
        if (!mkdtemp(s->dir)) {
                s->dir[0] = '\0';
                return -1;
        }
        snprintf(s->path, sizeof(s->path), "%s/d.sock", s->dir);
        snprintf(s->address, sizeof(s->address), "unix://%s", s->path);
        memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
        s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -1;
        if (!listening)
                return 0;
        if (listen(s->lfd, 4) < 0 || pthread_create(&s->thread, NULL, server_thread, s) != 0)
                return -1;
        s->running = true;
        return 0;
}

static void server_stop(struct server *s)
{
        if (s->running) {
                /* a handler still in accept() gets out */
                (void) shutdown(s->lfd, SHUT_RDWR);
                pthread_join(s->thread, NULL);
        }
        if (s->lfd >= 0)
                close(s->lfd);
        kiln_buf_release(&s->head);
        kiln_buf_release(&s->body);
        rm_dir(s->dir);
        s->dir[0] = '\0';
        s->running = false;
        s->lfd = -1;
}

/* Reads the request head; bytes of the body read with it go to s->body. */
static bool read_head(struct server *s, int fd)
{
        char buf[4096];

        for (;;) {
                char *end = s->head.data ? strstr(s->head.data, "\r\n\r\n") : NULL;
                ssize_t n;

                if (end) {
                        size_t at = (size_t) (end - s->head.data) + 4;

                        (void) kiln_buf_append(&s->body, s->head.data + at, s->head.len - at);
                        s->head.len = at;
                        s->head.data[at] = '\0';
                        return true;
                }
                n = read(fd, buf, sizeof(buf));
                if (n <= 0)
                        return false;
                if (kiln_buf_append(&s->head, buf, (size_t) n) < 0)
                        return false;
        }
}

static void write_str(int fd, const char *s, size_t n)
{
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

                if (k <= 0)
                        return;
                s += k;
                n -= (size_t) k;
        }
}

static void answer_pieces(struct server *s, int fd)
{
        if (!read_head(s, fd))
                return;
        for (const char *const *p = s->pieces; *p; p++) {
                write_str(fd, *p, strlen(*p));
                usleep(2000);
        }
}

/* Reads the request, then says nothing until the client hangs up. */
static void answer_never(struct server *s, int fd)
{
        char buf[4096];

        if (!read_head(s, fd))
                return;
        while (read(fd, buf, sizeof(buf)) > 0)
                ;
        s->client_closed = true;
}

/* The upload's body: bytes i % 251, chunked. */
static size_t dechunk(const char *p, size_t n, struct kiln_buf *out, bool *done)
{
        size_t used = 0;

        *done = false;
        while (used < n) {
                const char *nl = memchr(p + used, '\n', n - used);
                unsigned long size;
                size_t line;

                if (!nl)
                        break;
                line = (size_t) (nl - (p + used)) + 1;
                size = strtoul(p + used, NULL, 16);
                if (size == 0) {
                        *done = used + line + 2 <= n;
                        return used;
                }
                if (used + line + size + 2 > n)
                        break;
                (void) kiln_buf_append(out, p + used + line, size);
                used += line + size + 2;
        }
        return used;
}

static void answer_upload(struct server *s, int fd)
{
        _cleanup_(kiln_buf_release) struct kiln_buf raw = KILN_BUF_INIT(64u << 20);
        char buf[65536];
        bool done = false;
        size_t used;
        const char *ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: 11\r\n\r\n{\"ok\":true}";

        if (!read_head(s, fd))
                return;
        (void) kiln_buf_append(&raw, s->body.data, s->body.len);
        kiln_buf_reset(&s->body);
        for (;;) {
                ssize_t n;

                used = dechunk(raw.data, raw.len, &s->body, &done);
                memmove(raw.data, raw.data + used, raw.len - used);
                raw.len -= used;
                if (done)
                        break;
                n = read(fd, buf, sizeof(buf));
                if (n <= 0)
                        return;
                (void) kiln_buf_append(&raw, buf, (size_t) n);
        }
        s->body_ok = true;
        for (size_t i = 0; i < s->body.len; i++)
                if ((unsigned char) s->body.data[i] != i % 251)
                        s->body_ok = false;
        write_str(fd, ok, strlen(ok));
}

/* Answers 413 after the first bytes of a large body, and hangs up. */
static void answer_early_413(struct server *s, int fd)
{
        const char *no = "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                         "Content-Length: 30\r\n\r\n{\"error\":\"the context is big\"}";
        char buf[4096];

        if (!read_head(s, fd))
                return;
        (void) !read(fd, buf, sizeof(buf));
        write_str(fd, no, strlen(no));
}

/* ---- the client's side ---- */

static const struct kiln_cli_http_target *target(const struct server *s,
                                                 struct kiln_cli_http_target *t)
{
        *t = (struct kiln_cli_http_target){ .address = s->address };
        return t;
}

TEST(http_content_length_answer)
{
        static const char *const pieces[] = {
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le",
                "ngth: 10\r\nX-Other:  x \r\n\r\n{\"pid\":",
                "42}",
                "trailing garbage after the body is never read",
                NULL,
        };
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        int fds = kiln_test_count_fds();
        json_t *j = NULL;

        ASSERT_OK(server_start(&s, answer_pieces, true));
        s.pieces = pieces;
        if (kiln_cli_http_get_json(target(&s, &t), "/v1/info", 5000, &j, &err) < 0)
                KILN_TEST_FAIL("%s", kiln_error_message(err));
        ASSERT_EQ_INT(json_integer_value(json_object_get(j, "pid")), 42);
        json_decref(j);
        ASSERT_TRUE(startswith(s.head.data, "GET /v1/info HTTP/1.1\r\n"));
        ASSERT_TRUE(strstr(s.head.data, "\r\nHost: localhost\r\n") != NULL);
        ASSERT_TRUE(strstr(s.head.data, "\r\nUser-Agent: kiln\r\n") != NULL);
        ASSERT_TRUE(strstr(s.head.data, "\r\nConnection: close\r\n") != NULL);
        server_stop(&s);
        ASSERT_EQ_INT(kiln_test_count_fds(), fds);
        return 0;
}

TEST(http_chunked_answer_in_odd_pieces)
{
        static const char *const pieces[] = {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r",
                "\n{\"a\r\n",
                "0000d;ext=1\r\n\":\"xyz\",\"b\":1\r\n1",
                "\r\n}\r\n0\r\nX-Trailer: skipped\r\n",
                "\r\n",
                NULL,
        };
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_cli_http_response_release) struct kiln_cli_http_response resp = { 0 };
        struct kiln_cli_http_target t;

        ASSERT_OK(server_start(&s, answer_pieces, true));
        s.pieces = pieces;
        if (kiln_cli_http_request(target(&s, &t), "POST", "/v1/x", "{}", 2, 5000, &resp, &err) < 0)
                KILN_TEST_FAIL("%s", kiln_error_message(err));
        ASSERT_EQ_INT(resp.status, 200);
        ASSERT_STREQ(resp.body.data, "{\"a\":\"xyz\",\"b\":1}");
        ASSERT_TRUE(startswith(s.head.data, "POST /v1/x HTTP/1.1\r\n"));
        ASSERT_TRUE(strstr(s.head.data, "\r\nContent-Length: 2\r\n") != NULL);
        ASSERT_TRUE(strstr(s.head.data, "\r\nContent-Type: application/json") != NULL);
        ASSERT_STREQ(s.body.data, "{}");
        return 0;
}

struct events {
        int n;
        char last[32];
};

static int on_event(json_t *event, void *userdata, struct kiln_error **err)
{
        struct events *e = userdata;
        const char *name = json_string_value(json_object_get(event, "name"));

        (void) err;
        e->n++;
        snprintf(e->last, sizeof(e->last), "%s", name ? name : "?");
        return 0;
}

TEST(http_ndjson_stream_in_chunks)
{
        static const char *const pieces[] = {
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                "Transfer-Encoding: gzip, chunked\r\n\r\n",
                "7\r\n{\"name\"\r\n",
                "9\r\n:\"one\"}\n{\r\n",
                "f\r\n\"name\":\"two\"}\n\n\r\n",
                "e\r\n{\"name\":\"three\r\n2\r\n\"}\r\n0\r\n\r\n",
                NULL,
        };
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        struct events e = { 0 };

        ASSERT_OK(server_start(&s, answer_pieces, true));
        s.pieces = pieces;
        if (kiln_cli_http_stream(target(&s, &t), "POST", "/v1/build", "{}", 2, 0, on_event, &e,
                                 &err) < 0)
                KILN_TEST_FAIL("%s", kiln_error_message(err));
        ASSERT_EQ_INT(e.n, 3);
        ASSERT_STREQ(e.last, "three"); /* the last line needs no newline */
        return 0;
}

TEST(http_error_answer_says_why)
{
        static const char *const pieces[] = {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n",
                "{\"error\":\"boom\"}",
                NULL,
        };
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        json_t *j = NULL;

        ASSERT_OK(server_start(&s, answer_pieces, true));
        s.pieces = pieces; /* its body ends with the connection */
        ASSERT_EQ_INT(kiln_cli_http_get_json(target(&s, &t), "/v1/info", 5000, &j, &err), -EIO);
        ASSERT_TRUE(strstr(kiln_error_message(err), "the daemon answered 500: boom") != NULL);
        ASSERT_TRUE(strstr(kiln_error_message(err), s.address) != NULL);
        return 0;
}

struct producer {
        size_t size;
        size_t pos;
        size_t step; /* odd sizes, so chunks vary */
        size_t fail_at;
};

static ssize_t produce(void *userdata, void *buf, size_t n, struct kiln_error **err)
{
        struct producer *p = userdata;
        unsigned char *b = buf;
        size_t k = p->size - p->pos;

        if (p->fail_at && p->pos >= p->fail_at)
                return kiln_error_set(err, -ENOSPC, "the tar writer failed");
        if (k > n)
                k = n;
        if (k > p->step)
                k = p->step;
        for (size_t i = 0; i < k; i++)
                b[i] = (unsigned char) ((p->pos + i) % 251);
        p->pos += k;
        p->step = p->step * 3 % 70001 + 1;
        return (ssize_t) k;
}

TEST(http_answer_over_the_limits)
{
        static char big_head[KILN_LIMIT_CLI_HTTP_HEAD + 64];
        const char *const small[] = {
                "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n",
                "{\"a\":\"0123456789012345678901234567890\"}",
                NULL,
        };
        const char *const headers[] = { big_head, NULL };
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(server_stop) struct server s2 = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        struct producer p = { .size = 2, .step = 7 };
        const struct kiln_cli_http_body body = {
                .content_type = "application/json", .size = 2, .read = produce, .userdata = &p
        };
        json_t *j = NULL;
        size_t n;

        /* a body larger than the caller allows */
        ASSERT_OK(server_start(&s, answer_pieces, true));
        s.pieces = small;
        ASSERT_EQ_INT(
                kiln_cli_http_send_json(target(&s, &t), "POST", "/v1/c", &body, 16, 5000, &j, &err),
                -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "larger than 16 bytes") != NULL);

        /* a head larger than KILN_LIMIT_CLI_HTTP_HEAD */
        n = (size_t) snprintf(big_head, sizeof(big_head), "HTTP/1.1 200 OK\r\nX-Big: ");
        memset(big_head + n, 'a', sizeof(big_head) - n - 1);
        ASSERT_OK(server_start(&s2, answer_pieces, true));
        s2.pieces = headers;
        ASSERT_EQ_INT(kiln_cli_http_get_json(target(&s2, &t), "/v1/info", 5000, &j, &err), -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "head is larger than") != NULL);
        return 0;
}

TEST(http_silent_daemon_times_out)
{
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        uint64_t start = now_ms();
        json_t *j = NULL;

        ASSERT_OK(server_start(&s, answer_never, true));
        ASSERT_EQ_INT(kiln_cli_http_get_json(target(&s, &t), "/v1/info", 200, &j, &err),
                      -ETIMEDOUT);
        ASSERT_TRUE(now_ms() - start < 2000);
        ASSERT_TRUE(strstr(kiln_error_message(err), "within 200 ms") != NULL);
        return 0;
}

struct canceller {
        atomic_bool flag;
        pthread_t thread;
};

static void *cancel_later(void *userdata)
{
        struct canceller *c = userdata;

        usleep(150 * 1000);
        atomic_store(&c->flag, true);
        return NULL;
}

static int sink_count(void *userdata, const void *buf, size_t n, struct kiln_error **err)
{
        (void) buf, (void) err;
        *(size_t *) userdata += n;
        return 0;
}

TEST(http_download_cancelled)
{
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        struct canceller c = { .flag = false };
        uint64_t start = now_ms();
        size_t got = 0;

        ASSERT_OK(server_start(&s, answer_never, true));
        ASSERT_TRUE(pthread_create(&c.thread, NULL, cancel_later, &c) == 0);
        ASSERT_EQ_INT(kiln_cli_http_download(target(&s, &t), "/v1/export", 5000, 60, 1024,
                                             sink_count, &got, &c.flag, &err),
                      -ECANCELED);
        pthread_join(c.thread, NULL);
        ASSERT_TRUE(now_ms() - start < 1000);
        ASSERT_TRUE(strstr(kiln_error_message(err), "cancelled") != NULL);
        return 0;
}

TEST(http_download_to_sink)
{
        static const char *const pieces[] = {
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234",
                "56789",
                NULL,
        };
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        size_t got = 0;

        ASSERT_OK(server_start(&s, answer_pieces, true));
        s.pieces = pieces;
        if (kiln_cli_http_download(target(&s, &t), "/v1/export", 5000, 5, 1024, sink_count, &got,
                                   NULL, &err) < 0)
                KILN_TEST_FAIL("%s", kiln_error_message(err));
        ASSERT_EQ_INT(got, 10);
        ASSERT_TRUE(strstr(s.head.data, "\r\nAccept: */*\r\n") != NULL);
        return 0;
}

TEST(http_nobody_listens)
{
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        json_t *j = NULL;
        int fds = kiln_test_count_fds();

        ASSERT_OK(server_start(&s, NULL, false));
        ASSERT_EQ_INT(kiln_cli_http_get_json(target(&s, &t), "/v1/info", 1000, &j, &err),
                      -ECONNREFUSED);
        ASSERT_TRUE(strstr(kiln_error_message(err), "nothing listens on") != NULL);
        close(s.lfd);
        s.lfd = -1;
        unlink(s.path);
        ASSERT_EQ_INT(kiln_cli_http_get_json(target(&s, &t), "/v1/info", 1000, &j, &err),
                      -ECONNREFUSED);
        ASSERT_TRUE(strstr(kiln_error_message(err), "no socket at") != NULL);
        ASSERT_EQ_INT(kiln_test_count_fds(), fds);
        return 0;
}

TEST(http_streamed_upload)
{
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        struct producer p = { .size = 3u << 20, .step = 7 };
        const struct kiln_cli_http_body body = {
                .content_type = "application/x-tar",
                .size = -1,
                .read = produce,
                .userdata = &p,
        };
        json_t *j = NULL;

        ASSERT_OK(server_start(&s, answer_upload, true));
        if (kiln_cli_http_send_json(target(&s, &t), "PUT", "/v1/ctx", &body, 1024, 10000, &j,
                                    &err) < 0)
                KILN_TEST_FAIL("%s", kiln_error_message(err));
        ASSERT_TRUE(json_is_true(json_object_get(j, "ok")));
        json_decref(j);
        ASSERT_TRUE(startswith(s.head.data, "PUT /v1/ctx HTTP/1.1\r\n"));
        ASSERT_TRUE(strstr(s.head.data, "\r\nTransfer-Encoding: chunked\r\n") != NULL);
        ASSERT_TRUE(strstr(s.head.data, "\r\nContent-Type: application/x-tar\r\n") != NULL);
        ASSERT_EQ_INT(s.body.len, 3u << 20);
        ASSERT_TRUE(s.body_ok);
        return 0;
}

TEST(http_upload_failure_is_the_producers)
{
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        struct producer p = { .size = 1u << 20, .step = 4096, .fail_at = 10000 };
        const struct kiln_cli_http_body body = {
                .content_type = "application/x-tar", .size = -1, .read = produce, .userdata = &p
        };
        json_t *j = NULL;

        ASSERT_OK(server_start(&s, answer_never, true));
        ASSERT_EQ_INT(kiln_cli_http_send_json(target(&s, &t), "PUT", "/v1/ctx", &body, 1024, 10000,
                                              &j, &err),
                      -ENOSPC);
        ASSERT_STREQ(kiln_error_message(err), "the tar writer failed");
        return 0;
}

TEST(http_early_error_answer_wins_over_the_upload)
{
        _cleanup_(server_stop) struct server s = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_http_target t;
        struct producer p = { .size = 256u << 20, .step = 65536 };
        const struct kiln_cli_http_body body = {
                .content_type = "application/x-tar",
                .size = (int64_t) p.size,
                .read = produce,
                .userdata = &p,
        };
        json_t *j = NULL;

        ASSERT_OK(server_start(&s, answer_early_413, true));
        ASSERT_EQ_INT(kiln_cli_http_send_json(target(&s, &t), "PUT", "/v1/ctx", &body, 1024, 10000,
                                              &j, &err),
                      -EIO);
        ASSERT_TRUE(strstr(kiln_error_message(err), "answered 413: the context is big") != NULL);
        ASSERT_TRUE(p.pos < p.size); /* it stopped sending */
        return 0;
}

/* Framing as RFC 9112 section 6 has it, on answers in memory, in every
 * split: a transfer coding decides over Content-Length, chunked is found
 * after a tab, interim answers are skipped, and a body cut short fails. */
TEST(http_answer_framing)
{
        static const struct {
                const char *answer;
                bool ended;
                int r;
                long status;
                const char *body;
        } cases[] = {
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nabc",
                  true, 0, 200, "abc" },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip,\tchunked\r\n\r\n"
                  "2\r\nab\r\n0\r\n\r\n",
                  false, 0, 200, "ab" },
                { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false, 0, 204,
                  "" },
                { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", true, -ECONNRESET, 0, NULL },
                { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false, -EAGAIN, 0, NULL },
                { "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", true,
                  -EBADMSG, 0, NULL },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
                  true, -EBADMSG, 0, NULL },
                { "SSH-2.0-OpenSSH_9.2\r\n", true, -EBADMSG, 0, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                for (size_t piece = 0; piece < 8; piece++) {
                        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                        struct kiln_cli_http_response resp = { 0 };
                        const char *a = cases[i].answer;
                        int r = kiln_cli_http_parse_answer(a, strlen(a), piece, cases[i].ended,
                                                           &resp, &err);

                        if (r != cases[i].r)
                                KILN_TEST_FAIL("case %zu, pieces of %zu: %d (%s)", i, piece, r,
                                               err ? kiln_error_message(err) : "no error");
                        if (r == 0) {
                                ASSERT_EQ_INT(resp.status, cases[i].status);
                                ASSERT_EQ_INT(resp.body.len, strlen(cases[i].body));
                                ASSERT_TRUE(memcmp(resp.body.data ? resp.body.data : "",
                                                   cases[i].body, resp.body.len) == 0);
                        }
                        kiln_cli_http_response_release(&resp);
                }
        return 0;
}

TEST(http_escape)
{
        _cleanup_free_ char *a = kiln_cli_http_escape("docker.io/library/alpine:3.19@sha256:ab");
        _cleanup_free_ char *b = kiln_cli_http_escape("a b&c=d~e_f-g.h\xc3\xa9");
        _cleanup_free_ char *c = kiln_cli_http_escape("");

        ASSERT_STREQ(a, "docker.io%2Flibrary%2Falpine%3A3.19%40sha256%3Aab");
        ASSERT_STREQ(b, "a%20b%26c%3Dd~e_f-g.h%C3%A9");
        ASSERT_STREQ(c, "");
        return 0;
}

/* ---- TLS ---- */

struct tls_server {
        char dir[64];
        int lfd;
        int port;
        SSL_CTX *ctx;
        pthread_t thread;
        bool running;
        bool served;
        const char *answer; /* NULL: a small JSON object */
        bool cut;           /* end with the TCP connection, no close_notify */
};

static void *tls_thread(void *userdata)
{
        struct tls_server *s = userdata;
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"pid\":7}";
        char buf[4096];
        SSL *ssl;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);

        if (fd < 0)
                return NULL;
        ssl = SSL_new(s->ctx);
        if (ssl && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1 &&
            SSL_read(ssl, buf, sizeof(buf)) > 0) {
                const char *a = s->answer ? s->answer : ok;

                s->served = SSL_write(ssl, a, (int) strlen(a)) > 0;
                if (!s->cut)
                        (void) SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
        return NULL;
}

static void tls_server_stop(struct tls_server *s)
{
        if (s->running) {
                (void) shutdown(s->lfd, SHUT_RDWR);
                pthread_join(s->thread, NULL);
        }
        if (s->lfd >= 0)
                close(s->lfd);
        SSL_CTX_free(s->ctx);
        ERR_clear_error();
        rm_dir(s->dir);
}

static int run(const char *dir, const char *cmd)
{
        _cleanup_free_ char *c = kiln_xasprintf("cd '%s' && (%s) >/dev/null 2>&1", dir, cmd);

        return system(c) == 0 ? 0 : -1;
}

/* A CA (and another one) and a certificate of the first for 127.0.0.1. */
static int make_pki(const char *dir)
{
        static const char *const cmds[] = {
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout ca.key -out ca.crt -subj /CN=test-ca -days 1",
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout other.key -out other.crt -subj /CN=other-ca -days 1",
                "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext",
                "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout server.key -out server.csr -subj /CN=server",
                "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
                "-days 1 -extfile ext -out server.crt",
        };

        for (size_t i = 0; i < ELEMENTSOF(cmds); i++)
                if (run(dir, cmds[i]) < 0)
                        return -1;
        return 0;
}

static int tls_server_start(struct tls_server *s)
{
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        _cleanup_free_ char *crt = NULL, *key = NULL;

        crt = kiln_xasprintf("%s/server.crt", s->dir);
        key = kiln_xasprintf("%s/server.key", s->dir);
        s->ctx = SSL_CTX_new(TLS_server_method());
        if (!s->ctx || SSL_CTX_use_certificate_file(s->ctx, crt, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_use_PrivateKey_file(s->ctx, key, SSL_FILETYPE_PEM) != 1)
                return -1;
        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(s->lfd, 4) < 0 || getsockname(s->lfd, (struct sockaddr *) &sa, &len) < 0)
                return -1;
        s->port = ntohs(sa.sin_port);
        if (pthread_create(&s->thread, NULL, tls_thread, s) != 0)
                return -1;
        s->running = true;
        return 0;
}

/* Streams and downloads over TLS (their waits start with the connection,
 * on the idle clock), and an answer whose end is only the connection's:
 * cut without TLS's close_notify, it is no complete answer. */
TEST(http_tls_stream_download_and_cut)
{
        static const char stream[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     "b\r\n{\"a\":1}\n{}\n\r\n0\r\n\r\n";
        static const char bytes[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        static const char to_close[] = "HTTP/1.1 200 OK\r\n\r\n{\"partial\":";
        struct tls_server s[4] = { { .lfd = -1 }, { .lfd = -1 }, { .lfd = -1 }, { .lfd = -1 } };
        const char *answers[4] = { stream, bytes, to_close, to_close };
        _cleanup_free_ char *ca = NULL;
        struct kiln_cli_http_response resp = { 0 };
        struct kiln_cli_http_target t;
        struct events events = { 0 };
        size_t got = 0;
        long status = 0;
        int r = 0;

        snprintf(s[0].dir, sizeof(s[0].dir), "/tmp/kiln-test-tls-XXXXXX");
        ASSERT_TRUE(mkdtemp(s[0].dir) != NULL);
        if (make_pki(s[0].dir) < 0) {
                rm_dir(s[0].dir);
                printf("# skipped: the openssl command cannot make a test PKI\n");
                return KILN_TEST_SKIP;
        }
        ca = kiln_xasprintf("%s/ca.crt", s[0].dir);
        for (size_t i = 0; i < ELEMENTSOF(s) && r == 0; i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_free_ char *address = NULL;

                if (i > 0)
                        memcpy(s[i].dir, s[0].dir, sizeof(s[0].dir));
                s[i].answer = answers[i];
                s[i].cut = i == 2;
                if (tls_server_start(&s[i]) < 0) {
                        r = -1;
                        break;
                }
                address = kiln_xasprintf("tcp://127.0.0.1:%d", s[i].port);
                t = (struct kiln_cli_http_target){ .address = address, .ca_file = ca };
                if (i == 0)
                        r = kiln_cli_http_stream(&t, "GET", "/v1/events", NULL, 0, 0, on_event,
                                                 &events, &err);
                else if (i == 1)
                        r = kiln_cli_http_download(&t, "/x", 5000, 10, 1024, sink_count, &got, NULL,
                                                   &err);
                else {
                        r = kiln_cli_http_request(&t, "GET", "/x", NULL, 0, 5000, &resp, &err);
                        status = resp.status;
                        kiln_cli_http_response_release(&resp);
                }
                if (i < 2 && r < 0)
                        printf("# %s\n", kiln_error_message(err));
                if (i == 2) {
                        /* cut: the TCP end is no end of a TLS answer */
                        r = r == -ECONNRESET && strstr(kiln_error_message(err), "close_notify")
                                    ? 0
                                    : -1;
                } else if (i == 3) /* the same answer, ended by close_notify */
                        r = r == 0 && status == 200 ? 0 : -1;
        }
        for (size_t i = ELEMENTSOF(s); i-- > 0;) {
                if (i > 0)
                        s[i].dir[0] = '\0'; /* s[0] removes it */
                tls_server_stop(&s[i]);
        }
        ASSERT_OK(r);
        ASSERT_EQ_INT(events.n, 2);
        ASSERT_EQ_INT(got, 5);
        return 0;
}

TEST(http_tls_verifies_the_daemon)
{
        _cleanup_(tls_server_stop) struct tls_server s = { .lfd = -1 };
        _cleanup_(tls_server_stop) struct tls_server s2 = { .lfd = -1 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *address = NULL, *address2 = NULL, *ca = NULL, *other = NULL;
        struct kiln_cli_http_target t;
        json_t *j = NULL;

        snprintf(s.dir, sizeof(s.dir), "/tmp/kiln-test-tls-XXXXXX");
        ASSERT_TRUE(mkdtemp(s.dir) != NULL);
        if (make_pki(s.dir) < 0) {
                printf("# skipped: the openssl command cannot make a test PKI\n");
                return KILN_TEST_SKIP;
        }
        ASSERT_OK(tls_server_start(&s));
        address = kiln_xasprintf("tcp://127.0.0.1:%d", s.port);
        ca = kiln_xasprintf("%s/ca.crt", s.dir);
        other = kiln_xasprintf("%s/other.crt", s.dir);

        t = (struct kiln_cli_http_target){ .address = address, .ca_file = ca };
        if (kiln_cli_http_get_json(&t, "/v1/info", 5000, &j, &err) < 0)
                KILN_TEST_FAIL("%s", kiln_error_message(err));
        ASSERT_EQ_INT(json_integer_value(json_object_get(j, "pid")), 7);
        json_decref(j);

        /* a daemon certificate from a CA the client does not trust */
        memcpy(s2.dir, s.dir, sizeof(s.dir));
        ASSERT_OK(tls_server_start(&s2));
        s2.dir[0] = '\0'; /* s removes it */
        address2 = kiln_xasprintf("tcp://127.0.0.1:%d", s2.port);
        t = (struct kiln_cli_http_target){ .address = address2, .ca_file = other };
        ASSERT_EQ_INT(kiln_cli_http_get_json(&t, "/v1/info", 5000, &j, &err), -EPROTO);
        ASSERT_TRUE(strstr(kiln_error_message(err), address2) != NULL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "certificate verify failed") != NULL);
        ASSERT_TRUE(!s2.served);
        return 0;
}
