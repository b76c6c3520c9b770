/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <termios.h>

#include "api/api.h"
#include "base/buf.h"
#include "cli/cli.h"
#include "kiln-test.h"

/* A fixed clock: the renderer's scheduling must not depend on the test's
 * speed. */
static int64_t fake_now;
static int64_t now_fn(void)
{
        return fake_now;
}

struct harness {
        int fd;
        struct kiln_cli_progress *p;
};

/* every_update: draw on each event instead of at buildx's display rate
 * (which the fake clock decides). */
static int harness_open_rate(struct harness *h, enum kiln_cli_progress_mode mode, const char *desc,
                             bool every_update)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_progress_options o = {
                .mode = mode,
                .desc = desc,
                .now_ns = now_fn,
                .display_every_update = every_update,
        };

        h->fd = memfd_create("progress", MFD_CLOEXEC);
        if (h->fd < 0)
                return -errno;
        o.fd = h->fd;
        fake_now = 1764300000LL * 1000000000LL;
        return kiln_cli_progress_new(&o, &h->p, &err);
}

static int harness_open(struct harness *h, enum kiln_cli_progress_mode mode, const char *desc)
{
        return harness_open_rate(h, mode, desc, true);
}

/* Everything written so far; caller frees. */
static char *harness_output(struct harness *h)
{
        off_t n = lseek(h->fd, 0, SEEK_END);
        char *s = kiln_xcalloc((size_t) n + 1, 1);

        if (pread(h->fd, s, (size_t) n, 0) != n) {
                free(s);
                return kiln_xstrdup("");
        }
        return s;
}

static void harness_close(struct harness *h)
{
        h->p = kiln_cli_progress_free(h->p);
        if (h->fd >= 0)
                close(h->fd);
        h->fd = -1;
}

/* "2025-11-28T03:20:00.<ms>Z" style times from a millisecond offset. */
static const char *t(int ms, char buf[static 40])
{
        snprintf(buf, 40, "2025-11-28T03:20:%02d.%03dZ", ms / 1000, ms % 1000);
        return buf;
}

static void vertex(struct harness *h, const char *digest, const char *name, int started,
                   int completed, bool cached, const char *error)
{
        char a[40], b[40], c[40];
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_VERTEX,
                .digest = (char *) digest,
                .name = (char *) name,
                .started = started >= 0 ? (char *) t(started, a) : NULL,
                .completed = completed >= 0 ? (char *) t(completed, b) : NULL,
                .cached = cached,
                .error = (char *) error,
                .time = (char *) t(completed >= 0 ? completed
                                   : started >= 0 ? started
                                                  : 0,
                                   c),
        };

        kiln_cli_progress_event(h->p, &ev);
}

static void logline(struct harness *h, const char *digest, int at, const char *text)
{
        char a[40];
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_LOG,
                .vertex = (char *) digest,
                .stream = 1,
                .data = (uint8_t *) text,
                .len = strlen(text),
                .time = (char *) t(at, a),
        };

        kiln_cli_progress_event(h->p, &ev);
}

static void status(struct harness *h, const char *digest, const char *id, int64_t cur,
                   int64_t total, int started, int at, bool done)
{
        char a[40], b[40], c[40];
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_STATUS,
                .vertex = (char *) digest,
                .id = (char *) id,
                .current = cur,
                .total = total,
                .started = (char *) t(started, a),
                .completed = done ? (char *) t(at, b) : NULL,
                .time = (char *) t(at, c),
        };

        kiln_cli_progress_event(h->p, &ev);
}

TEST(progress_plain_build)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN,
                               "building with \"default\" instance using local driver"));
        /* Announced, not started: nothing printed. */
        vertex(&h, "sha256:a", "[internal] load build definition from Dockerfile", -1, -1, false,
               NULL);
        vertex(&h, "sha256:a", "[internal] load build definition from Dockerfile", 0, -1, false,
               NULL);
        status(&h, "sha256:a", "transferring dockerfile: 87B", 0, 0, 0, 10, true);
        vertex(&h, "sha256:a", "[internal] load build definition from Dockerfile", 0, 12, false,
               NULL);
        vertex(&h, "sha256:b", "[1/2] FROM docker.io/library/alpine:latest@sha256:1234", 20, 20,
               true, NULL);
        vertex(&h, "sha256:c", "[2/2] RUN echo \"hello world\"", 30, -1, false, NULL);
        logline(&h, "sha256:c", 183, "hello world\n");
        logline(&h, "sha256:c", 12300, "two\nthree\n");
        vertex(&h, "sha256:c", "[2/2] RUN echo \"hello world\"", 30, 12430, false, NULL);
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "#0 building with \"default\" instance using local driver\n"
                          "\n"
                          "#1 [internal] load build definition from Dockerfile\n"
                          "#1 transferring dockerfile: 87B done\n"
                          "#1 DONE 0.0s\n"
                          "\n"
                          "#2 [1/2] FROM docker.io/library/alpine:latest@sha256:1234\n"
                          "#2 CACHED\n"
                          "\n"
                          "#3 [2/2] RUN echo \"hello world\"\n"
                          "#3 0.153 hello world\n"
                          "#3 12.27 two\n"
                          "#3 12.27 three\n"
                          "#3 DONE 12.4s\n");
        harness_close(&h);
        return 0;
}

TEST(progress_plain_error_and_logs)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;
        char line[32];

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN, NULL));
        vertex(&h, "sha256:x", "[1/1] RUN exit 1", 0, -1, false, NULL);
        /* A line split across two log events is one line. */
        logline(&h, "sha256:x", 100, "par");
        logline(&h, "sha256:x", 110, "tial\n");
        for (int i = 0; i < 11; i++) {
                snprintf(line, sizeof(line), "line %d\n", i);
                logline(&h, "sha256:x", 200 + i, line);
        }
        vertex(&h, "sha256:x", "[1/1] RUN exit 1", 0, 500, false,
               "process \"/bin/sh -c exit 1\" did not complete successfully: exit code: 1");
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "#1 [1/1] RUN exit 1\n"
                          "#1 0.100 partial\n"
                          "#1 0.200 line 0\n"
                          "#1 0.201 line 1\n"
                          "#1 0.202 line 2\n"
                          "#1 0.203 line 3\n"
                          "#1 0.204 line 4\n"
                          "#1 0.205 line 5\n"
                          "#1 0.206 line 6\n"
                          "#1 0.207 line 7\n"
                          "#1 0.208 line 8\n"
                          "#1 0.209 line 9\n"
                          "#1 0.210 line 10\n"
                          "#1 ERROR: process \"/bin/sh -c exit 1\" did not complete "
                          "successfully: exit code: 1\n"
                          /* the last ten lines again */
                          "------\n"
                          " > [1/1] RUN exit 1:\n"
                          "0.201 line 1\n0.202 line 2\n0.203 line 3\n0.204 line 4\n"
                          "0.205 line 5\n0.206 line 6\n0.207 line 7\n0.208 line 8\n"
                          "0.209 line 9\n0.210 line 10\n"
                          "------\n");
        harness_close(&h);
        return 0;
}

TEST(progress_plain_interleaved_and_canceled)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN, NULL));
        vertex(&h, "sha256:a", "[a 1/1] RUN sleep 1", 0, -1, false, NULL);
        logline(&h, "sha256:a", 50, "a-out\n");
        /* Another vertex starts while a runs: a stays the printed one
         * until it ends (anti-flicker), then b's pending output follows. */
        vertex(&h, "sha256:b", "[b 1/1] RUN sleep 2", 10, -1, false, NULL);
        logline(&h, "sha256:b", 60, "b-out\n");
        vertex(&h, "sha256:a", "[a 1/1] RUN sleep 1", 0, 1000, false, NULL);
        vertex(&h, "sha256:b", "[b 1/1] RUN sleep 2", 10, 1500, false,
               "Canceled: context canceled");
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "#1 [a 1/1] RUN sleep 1\n"
                          "#1 0.050 a-out\n"
                          "#1 DONE 1.0s\n"
                          "\n"
                          "#2 [b 1/1] RUN sleep 2\n"
                          "#2 0.050 b-out\n"
                          "#2 CANCELED\n");
        harness_close(&h);
        return 0;
}

TEST(progress_plain_status_bytes_and_warning)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;
        struct kiln_api_build_event w = {
                .type = KILN_API_BUILD_EVENT_WARNING,
                .rule = (char *) "UndefinedVar",
                .message = (char *) "Usage of undefined variable '$FOO'",
                .line = 3,
        };
        FILE *f;
        char *summary = NULL;
        size_t summary_len = 0;

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN, NULL));
        vertex(&h, "sha256:a", "[internal] load build definition from Dockerfile", 0, -1, false,
               NULL);
        kiln_cli_progress_event(h.p, &w);
        vertex(&h, "sha256:a", "[internal] load build definition from Dockerfile", 0, 20, false,
               NULL);
        vertex(&h, "sha256:b", "[1/1] FROM docker.io/library/alpine:latest", 100, -1, false, NULL);
        status(&h, "sha256:b", "sha256:layer", 0, 3620000, 100, 100, false);
        /* less than 5% further, less than 5 s later: not printed */
        status(&h, "sha256:b", "sha256:layer", 100000, 3620000, 100, 200, false);
        status(&h, "sha256:b", "sha256:layer", 3620000, 3620000, 100, 300, true);
        status(&h, "sha256:b", "extracting sha256:layer", 0, 0, 300, 400, true);
        vertex(&h, "sha256:b", "[1/1] FROM docker.io/library/alpine:latest", 100, 400, false, NULL);
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "#1 [internal] load build definition from Dockerfile\n"
                          "#1 WARN: UndefinedVar: Usage of undefined variable '$FOO' (line 3)\n"
                          "#1 DONE 0.0s\n"
                          "\n"
                          "#2 [1/1] FROM docker.io/library/alpine:latest\n"
                          "#2 sha256:layer 0B / 3.62MB\n"
                          "#2 sha256:layer 3.62MB / 3.62MB 0.2s done\n"
                          "#2 extracting sha256:layer 0.1s done\n"
                          "#2 DONE 0.3s\n");
        ASSERT_EQ_INT(kiln_cli_progress_n_warnings(h.p), 1);

        f = open_memstream(&summary, &summary_len);
        ASSERT_TRUE(f);
        kiln_cli_progress_print_warnings(h.p, f, false);
        fclose(f);
        /* yellow whatever the output is, as buildx applies it */
        ASSERT_STREQ(summary, "\n \x1b[33m1 warning found (use kiln --debug to expand):\n\x1b[0m"
                              " - UndefinedVar: Usage of undefined variable '$FOO' (line 3)\n");
        free(summary);
        harness_close(&h);
        return 0;
}

TEST(progress_rawjson)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_RAWJSON, NULL));
        vertex(&h, "sha256:a", "[1/1] RUN echo a > b && echo <x>", 0, 1500, false, NULL);
        logline(&h, "sha256:a", 1200, "hi\n");
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "{\"vertexes\":[{\"digest\":\"sha256:a\",\"name\":\"[1/1] RUN echo a "
                          "\\u003e b \\u0026\\u0026 echo \\u003cx\\u003e\",\"started\":"
                          "\"2025-11-28T03:20:00Z\",\"completed\":\"2025-11-28T03:20:01.5Z\"}]}\n"
                          "{\"logs\":[{\"vertex\":\"sha256:a\",\"stream\":1,\"data\":\"aGkK\","
                          "\"timestamp\":\"2025-11-28T03:20:01.2Z\"}]}\n");
        harness_close(&h);
        return 0;
}

TEST(progress_quiet_and_modes)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_progress *p = NULL;
        struct kiln_cli_progress_options o = { .mode = KILN_CLI_PROGRESS_TTY };
        char b[32];

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_QUIET, NULL));
        vertex(&h, "sha256:a", "[1/1] RUN false", 0, 10, false, "exit code: 1");
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "");
        harness_close(&h);

        /* tty on a file is refused; auto falls back to plain. */
        o.fd = memfd_create("x", MFD_CLOEXEC);
        ASSERT_TRUE(o.fd >= 0);
        ASSERT_EQ_INT(kiln_cli_progress_new(&o, &p, &err), -ENOTTY);
        o.mode = KILN_CLI_PROGRESS_AUTO;
        ASSERT_OK(kiln_cli_progress_new(&o, &p, &err));
        ASSERT_EQ_INT(kiln_cli_progress_mode(p), KILN_CLI_PROGRESS_PLAIN);
        p = kiln_cli_progress_free(p);
        close(o.fd);

        ASSERT_EQ_INT(kiln_cli_progress_mode_from_string("none"), KILN_CLI_PROGRESS_QUIET);
        ASSERT_EQ_INT(kiln_cli_progress_mode_from_string("rawjson"), KILN_CLI_PROGRESS_RAWJSON);
        ASSERT_EQ_INT(kiln_cli_progress_mode_from_string("fancy"), -EINVAL);

        kiln_cli_progress_format_bytes(123, b);
        ASSERT_STREQ(b, "123B");
        kiln_cli_progress_format_bytes(1234, b);
        ASSERT_STREQ(b, "1.23kB");
        kiln_cli_progress_format_bytes(3620000, b);
        ASSERT_STREQ(b, "3.62MB");
        return 0;
}

TEST(progress_warning_before_any_vertex)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL, *raw = NULL;
        struct kiln_api_build_event w = {
                .type = KILN_API_BUILD_EVENT_WARNING,
                .rule = (char *) "FromAsCasing",
                .message = (char *) "'as' and 'FROM' keywords' casing do not match",
                .line = 1,
        };
        json_t *j;

        /* Lint warnings come before the first vertex: they are shown with
         * it, as BuildKit shows them under the Dockerfile's vertex. */
        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN, NULL));
        kiln_cli_progress_event(h.p, &w);
        vertex(&h, "sha256:a", "[internal] load build context", 0, 10, false, NULL);
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        j = kiln_cli_progress_warnings_json(h.p);
        ASSERT_TRUE(j && json_array_size(j) == 1);
        ASSERT_STREQ(json_string_value(json_object_get(json_array_get(j, 0), "vertex")),
                     "sha256:a");
        json_decref(j);
        harness_close(&h);
        ASSERT_STREQ(out, "#1 [internal] load build context\n"
                          "#1 WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match "
                          "(line 1)\n"
                          "#1 DONE 0.0s\n");

        /* rawjson: the warning as it comes, short base64-encoded */
        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_RAWJSON, NULL));
        w.line = 0;
        w.message = (char *) "x";
        w.url = (char *) "https://docs.docker.com/go/dockerfile/rule/from-as-casing/";
        kiln_cli_progress_event(h.p, &w);
        raw = harness_output(&h);
        harness_close(&h);
        ASSERT_STREQ(raw,
                     "{\"warnings\":[{\"level\":1,\"short\":\"RnJvbUFzQ2FzaW5nOiB4\","
                     "\"url\":\"https://docs.docker.com/go/dockerfile/rule/from-as-casing/\"}]}"
                     "\n");
        return 0;
}

static char *source_report(struct kiln_cli_progress *p)
{
        char *s = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&s, &n);

        if (!f)
                return kiln_xstrdup("");
        kiln_cli_progress_print_source(p, f);
        fclose(f);
        return s;
}

static void error_event(struct harness *h, const char *file, unsigned start, unsigned end)
{
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_ERROR,
                .error = (char *) "process \"/bin/sh -c exit 1\" did not complete successfully: "
                                  "exit code: 1",
                .source_file = (char *) file,
                .source_start = start,
                .source_end = end,
        };

        kiln_cli_progress_event(h->p, &ev);
}

TEST(progress_failure_source_snippet)
{
        static const char df[] = "FROM alpine\nRUN exit 1\n";
        static const char ten[] = "FROM alpine\n# 2\n# 3\n# 4\nRUN a \\\n  b\n# 7\n# 8\n# 9\n# 10";
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *none = NULL, *one = NULL, *range = NULL, *single = NULL, *out = NULL;

        /* buildx prints it in every mode, quiet included */
        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_QUIET, NULL));
        kiln_cli_progress_set_source(h.p, "Dockerfile", df, strlen(df));
        /* no location: nothing */
        error_event(&h, NULL, 0, 0);
        none = source_report(h.p);
        ASSERT_STREQ(none, "");
        error_event(&h, "Dockerfile", 2, 2);
        one = source_report(h.p);
        /* solver/errdefs Source.Print: four lines of context for a single
         * line (the empty one after the last newline counts) */
        ASSERT_STREQ(one, "Dockerfile:2\n"
                          "--------------------\n"
                          "   1 |     FROM alpine\n"
                          "   2 | >>> RUN exit 1\n"
                          "   3 |     \n"
                          "--------------------\n");
        out = harness_output(&h);
        ASSERT_STREQ(out, "");
        harness_close(&h);

        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN, NULL));
        kiln_cli_progress_set_source(h.p, "Dockerfile", ten, strlen(ten));
        /* a range gets two lines of context: one before, one after */
        error_event(&h, "app.Dockerfile", 5, 6);
        range = source_report(h.p);
        ASSERT_STREQ(range, "app.Dockerfile:5\n"
                            "--------------------\n"
                            "   4 |     # 4\n"
                            "   5 | >>> RUN a \\\n"
                            "   6 | >>>   b\n"
                            "   7 |     # 7\n"
                            "--------------------\n");
        /* a single line in the middle: two before, two after; past the
         * end of the text: nothing */
        error_event(&h, "Dockerfile", 9, 9);
        single = source_report(h.p);
        ASSERT_STREQ(single, "Dockerfile:9\n"
                             "--------------------\n"
                             "   7 |     # 7\n"
                             "   8 |     # 8\n"
                             "   9 | >>> # 9\n"
                             "  10 |     # 10\n"
                             "--------------------\n");
        free(single);
        error_event(&h, "Dockerfile", 11, 11);
        single = source_report(h.p);
        ASSERT_STREQ(single, "");
        harness_close(&h);
        return 0;
}

TEST(progress_plain_display_rate)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *first = NULL, *out = NULL;

        /* buildx draws at most every 100 ms: what comes in between is
         * merged into the next drawing (a status shows its latest state). */
        ASSERT_OK(harness_open_rate(&h, KILN_CLI_PROGRESS_PLAIN, NULL, false));
        vertex(&h, "sha256:b", "[1/2] FROM docker.io/library/alpine:latest", 0, -1, false, NULL);
        status(&h, "sha256:b", "resolve docker.io/library/alpine:latest", 0, 0, 0, 5, false);
        status(&h, "sha256:b", "resolve docker.io/library/alpine:latest", 0, 0, 0, 8, true);
        status(&h, "sha256:b", "sha256:layer", 0, 3620000, 20, 20, false);
        status(&h, "sha256:b", "sha256:layer", 1000000, 3620000, 20, 90, false);
        first = harness_output(&h);
        ASSERT_STREQ(first, "#1 [1/2] FROM docker.io/library/alpine:latest\n");
        fake_now += 100 * 1000000LL;
        status(&h, "sha256:b", "sha256:layer", 3620000, 3620000, 20, 220, true);
        vertex(&h, "sha256:b", "[1/2] FROM docker.io/library/alpine:latest", 0, 400, false, NULL);
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "#1 [1/2] FROM docker.io/library/alpine:latest\n"
                          "#1 resolve docker.io/library/alpine:latest done\n"
                          "#1 sha256:layer 3.62MB / 3.62MB 0.2s done\n"
                          "#1 DONE 0.4s\n");
        harness_close(&h);
        return 0;
}

/* A pseudo-terminal of 80x24 in raw mode: the renderer writes to the
 * secondary side, the test reads the primary. */
static int pty_open(int *primary, int *secondary)
{
        struct winsize ws = { .ws_row = 24, .ws_col = 80 };
        struct termios tio;
        int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), s;

        if (m < 0)
                return -errno;
        if (grantpt(m) < 0 || unlockpt(m) < 0) {
                close(m);
                return -errno;
        }
        s = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (s < 0) {
                close(m);
                return -errno;
        }
        if (tcgetattr(s, &tio) == 0) {
                cfmakeraw(&tio);
                (void) tcsetattr(s, TCSANOW, &tio);
        }
        (void) ioctl(s, TIOCSWINSZ, &ws);
        *primary = m;
        *secondary = s;
        return 0;
}

static char *pty_drain(int primary)
{
        struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        char buf[4096];
        char *s;

        for (;;) {
                struct pollfd pfd = { .fd = primary, .events = POLLIN };
                ssize_t n;

                if (poll(&pfd, 1, 50) <= 0)
                        break;
                n = read(primary, buf, sizeof(buf));
                if (n <= 0)
                        break;
                (void) kiln_buf_append(&b, buf, (size_t) n);
        }
        s = kiln_xstrndup(b.data ? b.data : "", b.len);
        kiln_buf_release(&b);
        return s;
}

/* A job line as display.go aligns it on 80 columns: name on the left, the
 * timer ending at column 79. */
static char *job_line(const char *text, const char *timer)
{
        return kiln_xasprintf("%-*s  %s\n", 80 - (int) strlen(timer) - 3, text, timer);
}

TEST(progress_tty_view)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *mid = NULL, *fin = NULL, *l1 = NULL, *l2 = NULL, *l3 = NULL,
                            *head = NULL, *errs = NULL;
        struct kiln_cli_progress_options o = {
                .mode = KILN_CLI_PROGRESS_AUTO,
                .console_desc = "local:default",
                .now_ns = now_fn,
                .display_every_update = true,
        };
        struct harness h = { .fd = -1 };
        int primary = -1;

        if (pty_open(&primary, &h.fd) < 0)
                return KILN_TEST_SKIP;
        unsetenv("NO_COLOR");
        o.fd = h.fd;
        fake_now = 1764300000LL * 1000000000LL;
        ASSERT_OK(kiln_cli_progress_new(&o, &h.p, &err));
        ASSERT_EQ_INT(kiln_cli_progress_mode(h.p), KILN_CLI_PROGRESS_TTY);

        vertex(&h, "sha256:a", "[internal] load build definition from Dockerfile", 0, 20, false,
               NULL);
        vertex(&h, "sha256:b", "[1/2] FROM docker.io/library/alpine:latest", 20, 20, true, NULL);
        vertex(&h, "sha256:c", "[2/2] RUN echo hello", 30, -1, false, NULL);
        fake_now += 1030 * 1000000LL;
        logline(&h, "sha256:c", 1030, "hello\nworld\n");
        mid = pty_drain(primary);
        /* a running step shows its last lines, faint */
        ASSERT_TRUE(strstr(mid, "\x1b[2m => => # hello\n\x1b[0m\x1b[2m => => # world\n\x1b[0m"));
        /* the timer of an open step runs on the local clock */
        l3 = job_line(" => [2/2] RUN echo hello", "1.0s");
        ASSERT_TRUE(strstr(mid, l3));
        free(l3);

        fake_now += 970 * 1000000LL;
        vertex(&h, "sha256:c", "[2/2] RUN echo hello", 30, 2000, false,
               "process \"/bin/sh -c echo hello\" did not complete successfully: exit code: 1");
        kiln_cli_progress_done(h.p);
        fin = pty_drain(primary);
        head = kiln_xasprintf("%-*s %s\n", 80 - 1 - 13 - 1, "[+] Building 2.0s (3/3) FINISHED",
                              "local:default");
        ASSERT_TRUE(strstr(fin, head));
        /* completed steps in blue, failed ones in red, the colour reset
         * after the line's end as aec applies it */
        l1 = job_line(" => [internal] load build definition from Dockerfile", "0.0s");
        l2 = job_line(" => CACHED [1/2] FROM docker.io/library/alpine:latest", "0.0s");
        l3 = job_line(" => ERROR [2/2] RUN echo hello", "2.0s");
        {
                _cleanup_free_ char *b1 = kiln_xasprintf("\x1b[34m%s\x1b[0m", l1),
                                    *b2 = kiln_xasprintf("\x1b[34m%s\x1b[0m", l2),
                                    *r3 = kiln_xasprintf("\x1b[31m%s\x1b[0m", l3);

                ASSERT_TRUE(strstr(fin, b1));
                ASSERT_TRUE(strstr(fin, b2));
                ASSERT_TRUE(strstr(fin, r3));
        }
        /* the final view has no output lines; the error report has all of
         * the failed step's lines (tty keeps them) */
        ASSERT_TRUE(!strstr(fin, " => => # "));
        errs = kiln_xstrdup(strstr(fin, "------\n") ? strstr(fin, "------\n") : "");
        ASSERT_STREQ(errs, "------\n > [2/2] RUN echo hello:\n1.000 hello\n1.000 world\n------\n");
        h.p = kiln_cli_progress_free(h.p);
        close(h.fd);
        close(primary);
        return 0;
}

TEST(progress_plain_export_statuses)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;
        static const char m[] = "exporting manifest sha256:"
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

        /* The exporters' one-off statuses (progress.OneOff: started, then
         * completed) and a transfer's byte count, as BuildKit's exporters
         * report them, drawn at buildx's display rate. */
        ASSERT_OK(harness_open_rate(&h, KILN_CLI_PROGRESS_PLAIN, NULL, false));
        vertex(&h, "sha256:e", "exporting to image", 0, -1, false, NULL);
        status(&h, "sha256:e", "exporting layers", 0, 0, 0, 0, false);
        fake_now += 150 * 1000000LL;
        status(&h, "sha256:e", "exporting layers", 0, 0, 0, 130, true);
        status(&h, "sha256:e", m, 0, 0, 131, 131, false);
        status(&h, "sha256:e", m, 0, 0, 131, 135, true);
        status(&h, "sha256:e", "naming to docker.io/library/hello:latest", 0, 0, 136, 138, true);
        vertex(&h, "sha256:e", "exporting to image", 0, 140, false, NULL);
        fake_now += 150 * 1000000LL;
        vertex(&h, "sha256:l", "exporting to client directory", 200, -1, false, NULL);
        status(&h, "sha256:l", "copying files", 1234, 0, 200, 260, true);
        vertex(&h, "sha256:o", "exporting to oci image format", 300, -1, false, NULL);
        status(&h, "sha256:o", "sending tarball", 0, 0, 300, 520, true);
        vertex(&h, "sha256:l", "exporting to client directory", 200, 261, false, NULL);
        vertex(&h, "sha256:o", "exporting to oci image format", 300, 521, false, NULL);
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        /* "exporting layers" started within 100 ms of the vertex: its
         * first state was never drawn */
        ASSERT_STREQ(out, "#1 exporting to image\n"
                          "#1 exporting layers 0.1s done\n"
                          "#1 exporting manifest sha256:0123456789abcdef0123456789abcdef0123456789"
                          "abcdef0123456789abcdef done\n"
                          "#1 naming to docker.io/library/hello:latest done\n"
                          "#1 DONE 0.1s\n"
                          "\n"
                          "#2 exporting to client directory\n"
                          "#2 copying files 1.23kB 0.1s done\n"
                          "#2 DONE 0.1s\n"
                          "\n"
                          "#3 exporting to oci image format\n"
                          "#3 sending tarball 0.2s done\n"
                          "#3 DONE 0.2s\n");
        harness_close(&h);
        return 0;
}

TEST(progress_plain_refresher_draws_what_the_rate_held)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *first = NULL, *later = NULL;
        struct kiln_cli_progress_options o = { .mode = KILN_CLI_PROGRESS_PLAIN };
        struct harness h = { .fd = -1 };

        /* The real clock: a line held back by the display rate comes out
         * by itself shortly after, while the step keeps running. */
        h.fd = memfd_create("progress", MFD_CLOEXEC);
        ASSERT_TRUE(h.fd >= 0);
        o.fd = h.fd;
        ASSERT_OK(kiln_cli_progress_new(&o, &h.p, &err));
        vertex(&h, "sha256:c", "[2/2] RUN sleep 60", 0, -1, false, NULL);
        logline(&h, "sha256:c", 183, "started\n");
        first = harness_output(&h);
        /* (unless this thread was slower than the refresher) */
        ASSERT_TRUE(streq(first, "#1 [2/2] RUN sleep 60\n") ||
                    streq(first, "#1 [2/2] RUN sleep 60\n#1 0.183 started\n"));
        for (int i = 0; i < 100; i++) {
                free(later);
                later = harness_output(&h);
                if (strstr(later, "started"))
                        break;
                usleep(20 * 1000);
        }
        ASSERT_STREQ(later, "#1 [2/2] RUN sleep 60\n#1 0.183 started\n");
        harness_close(&h);
        return 0;
}

/* The final tty view of one finished and one failed step under env. */
static char *tty_final_view(const char *no_color, const char *colors)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_progress_options o = {
                .mode = KILN_CLI_PROGRESS_TTY,
                .now_ns = now_fn,
                .display_every_update = true,
        };
        struct harness h = { .fd = -1 };
        int primary = -1;
        char *out;

        if (pty_open(&primary, &h.fd) < 0)
                return NULL;
        if (no_color)
                setenv("NO_COLOR", no_color, 1);
        else
                unsetenv("NO_COLOR");
        if (colors)
                setenv("BUILDKIT_COLORS", colors, 1);
        else
                unsetenv("BUILDKIT_COLORS");
        o.fd = h.fd;
        fake_now = 1764300000LL * 1000000000LL;
        if (kiln_cli_progress_new(&o, &h.p, &err) < 0) {
                close(h.fd);
                close(primary);
                return NULL;
        }
        unsetenv("NO_COLOR");
        unsetenv("BUILDKIT_COLORS");
        vertex(&h, "sha256:a", "[1/2] FROM alpine", 0, 10, false, NULL);
        vertex(&h, "sha256:b", "[2/2] RUN false", 20, 30, false, "exit code: 1");
        kiln_cli_progress_done(h.p);
        out = pty_drain(primary);
        h.p = kiln_cli_progress_free(h.p);
        close(h.fd);
        close(primary);
        return out;
}

TEST(progress_tty_colors)
{
        _cleanup_free_ char *custom = NULL, *none = NULL, *bad = NULL;

        custom = tty_final_view(NULL, "run=green:error=255,0,0:warning=red");
        if (!custom)
                return KILN_TEST_SKIP;
        ASSERT_TRUE(strstr(custom, "\x1b[32m => [1/2] FROM alpine"));
        /* aec's 8-bit colour of 255,0,0 */
        ASSERT_TRUE(strstr(custom, "\x1b[38;5;196m => ERROR [2/2] RUN false"));

        none = tty_final_view("1", "run=green");
        ASSERT_TRUE(none);
        ASSERT_TRUE(strstr(none, "\n => [1/2] FROM alpine"));
        ASSERT_TRUE(!strstr(none, "\x1b[34m") && !strstr(none, "\x1b[31m") &&
                    !strstr(none, "\x1b[32m"));

        /* entries that do not parse are ignored: the defaults stay */
        bad = tty_final_view(NULL, "run=purple:error:cancel=1,2");
        ASSERT_TRUE(bad);
        ASSERT_TRUE(strstr(bad, "\x1b[34m => [1/2] FROM alpine"));
        ASSERT_TRUE(strstr(bad, "\x1b[31m => ERROR [2/2] RUN false"));
        return 0;
}

TEST(progress_plain_status_throttle_is_by_id)
{
        struct harness h = { .fd = -1 };
        _cleanup_free_ char *out = NULL;

        /* printer.go remembers the last printed state by status id alone:
         * the same blob under a second step is held back until it moved 5%
         * (or 5 s passed) past what was printed under the first. */
        ASSERT_OK(harness_open(&h, KILN_CLI_PROGRESS_PLAIN, NULL));
        vertex(&h, "sha256:a", "[a 1/1] FROM one", 0, -1, false, NULL);
        status(&h, "sha256:a", "sha256:layer", 1000000, 2000000, 0, 100, false);
        status(&h, "sha256:a", "sha256:layer", 2000000, 2000000, 0, 200, true);
        vertex(&h, "sha256:a", "[a 1/1] FROM one", 0, 300, false, NULL);
        vertex(&h, "sha256:b", "[b 1/1] FROM two", 400, -1, false, NULL);
        status(&h, "sha256:b", "sha256:layer", 0, 2000000, 400, 500, false);
        status(&h, "sha256:b", "sha256:layer", 2000000, 2000000, 400, 600, true);
        vertex(&h, "sha256:b", "[b 1/1] FROM two", 400, 700, false, NULL);
        kiln_cli_progress_done(h.p);
        out = harness_output(&h);
        ASSERT_STREQ(out, "#1 [a 1/1] FROM one\n"
                          "#1 sha256:layer 1.00MB / 2.00MB 0.1s\n"
                          "#1 sha256:layer 2.00MB / 2.00MB 0.2s done\n"
                          "#1 DONE 0.3s\n"
                          "\n"
                          "#2 [b 1/1] FROM two\n"
                          "#2 sha256:layer 2.00MB / 2.00MB 0.2s done\n"
                          "#2 DONE 0.3s\n");
        harness_close(&h);
        return 0;
}
