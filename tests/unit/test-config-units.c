/* SPDX-License-Identifier: Apache-2.0 */
/* Duration and DiskSpace exactly as buildkitd parses them, plus the hint
 * helpers (edit distance, key folding) and the default GC policy. */

#include <stdlib.h>

#include "config/config.h"
#include "kiln-test.h"

#define NS   1LL
#define US   (1000 * NS)
#define MS   (1000 * US)
#define SEC  (1000 * MS)
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)

static int dur(const char *s, int64_t *v)
{
        *v = -12345;
        return kiln_config_parse_duration(s, v);
}

TEST(duration_go_syntax)
{
        int64_t v;

        ASSERT_OK(dur("48h", &v));
        ASSERT_EQ_INT(v, 48 * HOUR);
        ASSERT_OK(dur("1h30m", &v));
        ASSERT_EQ_INT(v, HOUR + 30 * MIN);
        ASSERT_OK(dur("500ms", &v));
        ASSERT_EQ_INT(v, 500 * MS);
        ASSERT_OK(dur("1.5s", &v));
        ASSERT_EQ_INT(v, 1500 * MS);
        ASSERT_OK(dur(".5s", &v));
        ASSERT_EQ_INT(v, 500 * MS);
        ASSERT_OK(dur("5.s", &v));
        ASSERT_EQ_INT(v, 5 * SEC);
        ASSERT_OK(dur("-2m", &v));
        ASSERT_EQ_INT(v, -2 * MIN);
        ASSERT_OK(dur("+3h", &v));
        ASSERT_EQ_INT(v, 3 * HOUR);
        ASSERT_OK(dur("1us", &v));
        ASSERT_EQ_INT(v, US);
        ASSERT_OK(dur("1\xc2\xb5s", &v)); /* micro sign */
        ASSERT_EQ_INT(v, US);
        ASSERT_OK(dur("1\xce\xbcs", &v)); /* Greek mu */
        ASSERT_EQ_INT(v, US);
        ASSERT_OK(dur("7ns", &v));
        ASSERT_EQ_INT(v, 7);
        ASSERT_OK(dur("1h1m1s1ms1us1ns", &v));
        ASSERT_EQ_INT(v, HOUR + MIN + SEC + MS + US + 1);
        ASSERT_OK(dur("0", &v));
        ASSERT_EQ_INT(v, 0);
        ASSERT_OK(dur("-0", &v));
        ASSERT_EQ_INT(v, 0);
        ASSERT_OK(dur("9223372036854775807ns", &v));
        ASSERT_EQ_INT(v, INT64_MAX);
        ASSERT_OK(dur("2562047h", &v));
        ASSERT_EQ_INT(v, 2562047 * HOUR);
        return 0;
}

TEST(duration_integer_seconds_and_quotes)
{
        int64_t v;

        ASSERT_OK(dur("172800", &v));
        ASSERT_EQ_INT(v, 48 * HOUR);
        ASSERT_OK(dur("+5", &v));
        ASSERT_EQ_INT(v, 5 * SEC);
        ASSERT_OK(dur("-5", &v));
        ASSERT_EQ_INT(v, -5 * SEC);
        /* buildkitd strips one pair of quotes */
        ASSERT_OK(dur("\"48h\"", &v));
        ASSERT_EQ_INT(v, 48 * HOUR);
        /* empty means unset: zero */
        ASSERT_OK(dur("", &v));
        ASSERT_EQ_INT(v, 0);
        ASSERT_OK(dur("\"\"", &v));
        ASSERT_EQ_INT(v, 0);
        return 0;
}

TEST(duration_invalid)
{
        static const char *const bad[] = { "h",   "1",     "1.5",  "2 days", "1e3", "1d",    ".s",
                                           ".",   "1h-2m", "--1s", " 1s",    "1s ", "1_000", "0x10",
                                           "1.5", "one",   "48H",  "-",      "+",   "5 s" };
        int64_t v;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (streq(bad[i], "1"))
                        continue; /* integer seconds, valid */
                int r = dur(bad[i], &v);
                if (r != -EINVAL)
                        KILN_TEST_FAIL("\"%s\" parsed (%d, %" PRId64 ")", bad[i], r, v);
        }
        ASSERT_EQ_INT(dur("9223372036854775808ns", &v), -ERANGE);
        ASSERT_EQ_INT(dur("2562048h", &v), -ERANGE);
        ASSERT_EQ_INT(dur("99999999999999999999h", &v), -ERANGE);
        /* 1e13 seconds overflow nanoseconds: Go wraps, kiln refuses */
        ASSERT_EQ_INT(dur("10000000000000", &v), -ERANGE);
        return 0;
}

static int fmt_is(int64_t ns, const char *want)
{
        char *s = kiln_config_format_duration(ns);
        int ok = streq(s, want);
        if (!ok)
                printf("# format_duration(%" PRId64 ") = \"%s\", want \"%s\"\n", ns, s, want);
        free(s);
        return ok;
}

TEST(duration_format_like_go)
{
        ASSERT_TRUE(fmt_is(0, "0s"));
        ASSERT_TRUE(fmt_is(1, "1ns"));
        ASSERT_TRUE(fmt_is(1500, "1.5\xc2\xb5s"));
        ASSERT_TRUE(fmt_is(1500000, "1.5ms"));
        ASSERT_TRUE(fmt_is(500 * MS, "500ms"));
        ASSERT_TRUE(fmt_is(1500 * MS, "1.5s"));
        ASSERT_TRUE(fmt_is(20 * SEC, "20s"));
        ASSERT_TRUE(fmt_is(61 * SEC, "1m1s"));
        ASSERT_TRUE(fmt_is(HOUR + 30 * MIN, "1h30m0s"));
        ASSERT_TRUE(fmt_is(48 * HOUR, "48h0m0s"));
        ASSERT_TRUE(fmt_is(-2 * MIN, "-2m0s"));
        ASSERT_TRUE(fmt_is(INT64_MAX, "2562047h47m16.854775807s"));
        ASSERT_TRUE(fmt_is(INT64_MIN, "-2562047h47m16.854775808s"));
        return 0;
}

static int ram(const char *s, int64_t *v)
{
        *v = -1;
        return kiln_config_parse_ram_in_bytes(s, v);
}

TEST(ram_in_bytes_binary_units)
{
        int64_t v;

        ASSERT_OK(ram("512MB", &v));
        ASSERT_EQ_INT(v, 512LL << 20);
        ASSERT_OK(ram("512mb", &v));
        ASSERT_EQ_INT(v, 512LL << 20);
        ASSERT_OK(ram("512M", &v));
        ASSERT_EQ_INT(v, 512LL << 20);
        ASSERT_OK(ram("512MiB", &v));
        ASSERT_EQ_INT(v, 512LL << 20);
        ASSERT_OK(ram("1GB", &v));
        ASSERT_EQ_INT(v, 1LL << 30);
        ASSERT_OK(ram("20GB", &v));
        ASSERT_EQ_INT(v, 21474836480LL);
        ASSERT_OK(ram("1024", &v));
        ASSERT_EQ_INT(v, 1024);
        ASSERT_OK(ram("1024b", &v));
        ASSERT_EQ_INT(v, 1024);
        ASSERT_OK(ram("1.5k", &v));
        ASSERT_EQ_INT(v, 1536);
        ASSERT_OK(ram("10 KiB", &v));
        ASSERT_EQ_INT(v, 10240);
        ASSERT_OK(ram("1kib", &v));
        ASSERT_EQ_INT(v, 1024);
        ASSERT_OK(ram("1e3", &v));
        ASSERT_EQ_INT(v, 1000);
        ASSERT_OK(ram("1.5e3k", &v));
        ASSERT_EQ_INT(v, 1536000);
        ASSERT_OK(ram("1p", &v));
        ASSERT_EQ_INT(v, 1LL << 50);
        ASSERT_OK(ram("2T", &v));
        ASSERT_EQ_INT(v, 2LL << 40);
        ASSERT_OK(ram("1 ", &v)); /* the separator space goes, an empty suffix stays */
        ASSERT_EQ_INT(v, 1);
        ASSERT_OK(ram("0.9", &v)); /* truncated, as Go's int64() */
        ASSERT_EQ_INT(v, 0);
        /* Go's ParseFloat: underscores between digits, hex with a p exponent */
        ASSERT_OK(ram("1_000", &v));
        ASSERT_EQ_INT(v, 1000);
        ASSERT_OK(ram("1_23.50_0_0e+1_2", &v));
        ASSERT_EQ_INT(v, 123500000000000LL);
        ASSERT_OK(ram("0x1p10", &v));
        ASSERT_EQ_INT(v, 1024);
        ASSERT_OK(ram("0x1.8p1k", &v));
        ASSERT_EQ_INT(v, 3072);
        return 0;
}

TEST(ram_in_bytes_invalid)
{
        static const char *const bad[] = { "",     "abc",   "-1",   "5  MB", "  1",   "1KBB",
                                           "1x",   "1kbit", "1ki",  "1bb",   "MB",    "inf",
                                           "nan ", "1__0",  "0x10", "1e",    "1mib2", "_1",
                                           "1_",   "1_.5",  "0x_",  "+nan" };
        int64_t v;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (ram(bad[i], &v) >= 0)
                        KILN_TEST_FAIL("\"%s\" parsed as %" PRId64, bad[i], v);
        ASSERT_EQ_INT(ram("10000000p", &v), -ERANGE);
        return 0;
}

TEST(disk_space)
{
        struct kiln_config_disk_space d;

        ASSERT_OK(kiln_config_parse_disk_space("10%", &d));
        ASSERT_EQ_INT(d.percentage, 10);
        ASSERT_EQ_INT(d.bytes, 0);
        ASSERT_OK(kiln_config_parse_disk_space("\"30%\"", &d));
        ASSERT_EQ_INT(d.percentage, 30);
        /* buildkitd's ParseInt accepts a sign; the loader refuses negatives */
        ASSERT_OK(kiln_config_parse_disk_space("-5%", &d));
        ASSERT_EQ_INT(d.percentage, -5);
        ASSERT_OK(kiln_config_parse_disk_space("512MB", &d));
        ASSERT_EQ_INT(d.bytes, 512LL << 20);
        ASSERT_EQ_INT(d.percentage, 0);
        ASSERT_OK(kiln_config_parse_disk_space("512000000", &d));
        ASSERT_EQ_INT(d.bytes, 512000000);
        ASSERT_OK(kiln_config_parse_disk_space("", &d));
        ASSERT_EQ_INT(d.bytes, 0);
        ASSERT_EQ_INT(d.percentage, 0);
        ASSERT_EQ_INT(kiln_config_parse_disk_space("abc%", &d), -EINVAL);
        ASSERT_EQ_INT(kiln_config_parse_disk_space("1.5%", &d), -EINVAL);
        ASSERT_EQ_INT(kiln_config_parse_disk_space("%", &d), -EINVAL);
        ASSERT_EQ_INT(kiln_config_parse_disk_space("ten", &d), -EINVAL);
        return 0;
}

TEST(disk_space_as_bytes_rounds_like_buildkitd)
{
        struct kiln_config_disk_space b = { .bytes = 1234 }, p10 = { .percentage = 10 },
                                      p30 = { .percentage = 30 }, none = { 0 };

        ASSERT_EQ_INT(kiln_config_disk_space_as_bytes(&b, 0), 1234);
        ASSERT_EQ_INT(kiln_config_disk_space_as_bytes(&none, 1ULL << 40), 0);
        ASSERT_EQ_INT(kiln_config_disk_space_as_bytes(&p10, 0), 2000000000LL);
        /* 10% of 100 GiB = 10 GiB exactly: still rounded up to 11e9 */
        ASSERT_EQ_INT(kiln_config_disk_space_as_bytes(&p10, 100ULL << 30), 11000000000LL);
        /* 30% of 1e12 = 3e11 bytes = 279.4 GiB -> 280e9 */
        ASSERT_EQ_INT(kiln_config_disk_space_as_bytes(&p30, 1000000000000ULL), 280000000000LL);
        return 0;
}

TEST(gc_default_policy)
{
        struct kiln_config *c = kiln_config_new();
        struct kiln_config_gc_policy *p;
        size_t n;

        p = kiln_config_gc_policies_effective(&c->worker_oci, 100ULL << 30, &n);
        ASSERT_EQ_INT(n, 4);
        ASSERT_EQ_INT(p[0].n_filters, 3);
        ASSERT_STREQ(p[0].filters[0], "type==source.local");
        ASSERT_EQ_INT(p[0].keep_duration, 48 * HOUR);
        ASSERT_EQ_INT(p[0].max_used_space.bytes, 512000000);
        ASSERT_EQ_INT(p[1].keep_duration, 60 * 24 * HOUR);
        /* 10% of 100 GiB rounds to 11e9 > 10e9: capped at 10e9 bytes */
        ASSERT_EQ_INT(p[1].reserved_space.bytes, 10000000000LL);
        /* 80% -> 81e9 <= 100e9: stays a percentage */
        ASSERT_EQ_INT(p[1].max_used_space.percentage, 80);
        ASSERT_EQ_INT(p[1].min_free_space.percentage, 20);
        ASSERT_TRUE(!p[2].all);
        ASSERT_TRUE(p[3].all);
        kiln_config_gc_policies_free(p, n);

        /* the deprecated gckeepstorage stands in for reservedSpace */
        c->worker_oci.gc_keep_storage.bytes = 5000;
        p = kiln_config_gc_policies_effective(&c->worker_oci, 100ULL << 30, &n);
        ASSERT_EQ_INT(p[3].reserved_space.bytes, 5000);
        ASSERT_EQ_INT(p[3].max_used_space.bytes, 0);
        ASSERT_EQ_INT(p[3].max_used_space.percentage, 0);
        kiln_config_gc_policies_free(p, n);

        c->worker_oci.gc = 0;
        p = kiln_config_gc_policies_effective(&c->worker_oci, 0, &n);
        ASSERT_TRUE(p == NULL);
        ASSERT_EQ_INT(n, 0);
        kiln_config_free(c);
        return 0;
}

TEST(edit_distance_and_fold)
{
        char *f;

        ASSERT_EQ_INT(kiln_config_edit_distance("snapshoter", "snapshotter", 3), 1);
        ASSERT_EQ_INT(kiln_config_edit_distance("kitten", "sitting", 5), 3);
        ASSERT_EQ_INT(kiln_config_edit_distance("ABC", "abc", 3), 0);
        ASSERT_EQ_INT(kiln_config_edit_distance("a", "abcdefgh", 3), 4); /* capped */
        ASSERT_EQ_INT(kiln_config_edit_distance("", "", 0), 0);
        f = kiln_config_fold_key("Max_Parallelism");
        ASSERT_STREQ(f, "maxparallelism");
        free(f);
        f = kiln_config_fold_key("max-parallelism");
        ASSERT_STREQ(f, "maxparallelism");
        free(f);
        return 0;
}

TEST(detect_platforms)
{
        size_t n;
        char **p = kiln_config_detect_platforms(&n);

        ASSERT_TRUE(n >= 1);
        ASSERT_TRUE(startswith(p[0], "linux/"));
#if defined(__x86_64__)
        ASSERT_STREQ(p[0], "linux/amd64");
        for (size_t i = 1; i < n; i++)
                ASSERT_TRUE(startswith(p[i], "linux/amd64/v"));
#endif
        for (size_t i = 0; i < n; i++)
                free(p[i]);
        free(p);
        return 0;
}
