/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/mman.h>

#include "api/api.h"
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

static int harness_open(struct harness *h, enum kiln_cli_progress_mode mode, const char *desc)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_progress_options o = {
                .mode = mode,
                .desc = desc,
                .now_ns = now_fn,
        };

        h->fd = memfd_create("progress", MFD_CLOEXEC);
        if (h->fd < 0)
                return -errno;
        o.fd = h->fd;
        fake_now = 1764300000LL * 1000000000LL;
        return kiln_cli_progress_new(&o, &h->p, &err);
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
        ASSERT_STREQ(summary, "\n 1 warning found (use kiln --debug to expand):\n"
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
