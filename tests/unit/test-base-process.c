/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/wait.h>

#include "base/process.h"
#include "kiln-test.h"

/* Input reaches stdin whole, even past a socket buffer's size, and stdout
 * comes back byte for byte. */
TEST(input_to_output)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(4u << 20);
        _cleanup_free_ char *in = kiln_xmalloc(1u << 20);
        char *argv[] = { (char *) "cat", NULL };
        struct kiln_spawn s = { .program = "cat",
                                .argv = argv,
                                .input = in,
                                .input_len = 1u << 20,
                                .out = &out,
                                .timeout_ms = 10000 };
        int status;

        for (size_t i = 0; i < (1u << 20); i++)
                in[i] = (char) ('a' + i % 26);
        status = kiln_spawn_run(&s, &e);
        ASSERT_TRUE(status >= 0);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT_EQ_INT((int) out.len, 1 << 20);
        ASSERT_TRUE(memcmp(out.data, in, out.len) == 0);
        return 0;
}

/* stderr and the exit status are the program's. */
TEST(stderr_and_status)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(1024);
        _cleanup_(kiln_buf_release) struct kiln_buf err = KILN_BUF_INIT(1024);
        _cleanup_free_ char *why = NULL;
        char *argv[] = { (char *) "sh", (char *) "-c", (char *) "echo out; echo oops >&2; exit 3",
                         NULL };
        struct kiln_spawn s = {
                .program = "/bin/sh", .argv = argv, .out = &out, .err = &err, .timeout_ms = 10000
        };
        int status = kiln_spawn_run(&s, &e);

        ASSERT_TRUE(status >= 0);
        why = kiln_spawn_status_string(status);
        ASSERT_STREQ(why, "exit status 3");
        ASSERT_STREQ(out.data, "out\n");
        ASSERT_STREQ(err.data, "oops\n");
        return 0;
}

/* A program past its deadline is killed with what it started; one that
 * prints too much is stopped; a missing one is named. */
TEST(failures)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e1 = NULL, *e2 = NULL, *e3 = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(100);
        char *sleep_argv[] = { (char *) "sh", (char *) "-c", (char *) "sleep 30 & sleep 30", NULL };
        char *yes_argv[] = { (char *) "yes", NULL };
        char *none_argv[] = { (char *) "kiln-no-such-program", NULL };
        struct kiln_spawn s = { .program = "sh", .argv = sleep_argv, .timeout_ms = 200 };

        ASSERT_EQ_INT(kiln_spawn_run(&s, &e1), -ETIMEDOUT);
        ASSERT_TRUE(strstr(kiln_error_message(e1), "did not"));
        s = (struct kiln_spawn){
                .program = "yes", .argv = yes_argv, .out = &out, .timeout_ms = 10000
        };
        ASSERT_EQ_INT(kiln_spawn_run(&s, &e2), -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(e2), "printed more than 100 bytes"));
        s = (struct kiln_spawn){ .program = "kiln-no-such-program",
                                 .argv = none_argv,
                                 .timeout_ms = 10000 };
        ASSERT_EQ_INT(kiln_spawn_run(&s, &e3), -ENOENT);
        ASSERT_STREQ(kiln_error_message(e3), "'kiln-no-such-program' not found");
        return 0;
}
