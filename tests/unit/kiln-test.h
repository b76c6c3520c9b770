/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Self-registering unit tests with TAP output.
 *
 *   TEST(buf_limits) { ...; ASSERT_EQ_INT(r, -E2BIG); return 0; }
 *
 * A test returns 0 (pass), -1 (fail) or KILN_TEST_SKIP. The ASSERT macros
 * print the expression and the values, then return -1. test-main.c runs
 * every registered test in order of definition and prints TAP.
 */

#include <inttypes.h>
#include <stdio.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>

#define KILN_TEST_SKIP 77

struct kiln_test {
        const char *name;
        int (*func)(void);
};

/* clang-format off */
#define TEST(n)                                                                                    \
        static int test_##n(void);                                                                 \
        static const struct kiln_test kiln_test_##n = { #n, test_##n };                            \
        __attribute__((used, section("kiln_tests"), aligned(sizeof(void *))))                      \
        static const struct kiln_test *const kiln_test_ptr_##n = &kiln_test_##n;                   \
        static int test_##n(void)
/* clang-format on */

#define KILN_TEST_FAIL(...)                              \
        do {                                             \
                printf("# %s:%d: ", __FILE__, __LINE__); \
                printf(__VA_ARGS__);                     \
                printf("\n");                            \
                return -1;                               \
        } while (0)

#define ASSERT_TRUE(x)                                              \
        do {                                                        \
                if (!(x))                                           \
                        KILN_TEST_FAIL("assertion failed: %s", #x); \
        } while (0)

#define ASSERT_EQ_INT(a, b)                                                     \
        do {                                                                    \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);              \
                if (_a != _b)                                                   \
                        KILN_TEST_FAIL("%s == %s: %jd != %jd", #a, #b, _a, _b); \
        } while (0)

#define ASSERT_STREQ(a, b)                                                                       \
        do {                                                                                     \
                const char *_a = (a), *_b = (b);                                                 \
                if (!_a || !_b || strcmp(_a, _b) != 0)                                           \
                        KILN_TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, _a ? _a : "(null)", \
                                       _b ? _b : "(null)");                                      \
        } while (0)

/* r >= 0; prints the errno name on failure. */
#define ASSERT_OK(r)                                                                 \
        do {                                                                         \
                intmax_t _r = (intmax_t) (r);                                        \
                if (_r < 0)                                                          \
                        KILN_TEST_FAIL("%s: %jd (%s)", #r, _r, strerror((int) -_r)); \
        } while (0)

/* Open file descriptors of the process (its entries in /proc/self/fd, the
 * directory's own included), -1 when they cannot be counted: equal before
 * and after, nothing leaked. */
static inline int kiln_test_count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* Entries of directory dir besides "." and "..", or -errno. */
static inline int kiln_test_count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        int n = 0;

        if (!d)
                return -errno;
        while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}
