/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/cli.h"
#include "kiln-test.h"

TEST(tabs_align_like_go_tabwriter)
{
        _cleanup_free_ char *got = kiln_cli_tabs_align("Name:\tx\nDriver:\tlocal\n\nNodes:\n"
                                                       "Name:\tx0\nBuildKit version:\t0.1.0\n",
                                                       0, 1);

        ASSERT_STREQ(got, "Name:   x\n"
                          "Driver: local\n"
                          "\n"
                          "Nodes:\n"
                          "Name:             x0\n"
                          "BuildKit version: 0.1.0\n");
        return 0;
}

TEST(tabs_align_indented_block)
{
        /* An empty first cell makes an indented block, as buildx's
         * "Labels:" sections. */
        _cleanup_free_ char *got = kiln_cli_tabs_align("Status:\trunning\nWorker:\n"
                                                       "\tNetwork Mode:\thost\n"
                                                       "\tMax Parallelism:\t3\n",
                                                       0, 1);

        ASSERT_STREQ(got, "Status: running\n"
                          "Worker:\n"
                          " Network Mode:    host\n"
                          " Max Parallelism: 3\n");
        return 0;
}

TEST(tabs_align_min_width_padding_and_trailing_blanks)
{
        _cleanup_free_ char *got = kiln_cli_tabs_align("NAME/NODE\tDRIVER\tSTATUS\n"
                                                       "a*\tlocal\t\n"
                                                       " \\_ a0\t \\_ unix:///x.sock\trunning\n",
                                                       10, 3);

        /* 12 = "NAME/NODE" + 3; 21 = " \_ unix:///x.sock" + 3 */
        ASSERT_STREQ(got, "NAME/NODE   DRIVER               STATUS\n"
                          "a*          local\n"
                          " \\_ a0       \\_ unix:///x.sock   running\n");
        return 0;
}

TEST(tabs_align_counts_characters_not_bytes)
{
        _cleanup_free_ char *got = kiln_cli_tabs_align("é\tx\nab\ty\n", 0, 1);

        ASSERT_STREQ(got, "é  x\nab y\n");
        return 0;
}

TEST(tabs_align_no_final_newline)
{
        _cleanup_free_ char *got = kiln_cli_tabs_align("a\tb", 0, 1);

        ASSERT_STREQ(got, "a b\n");
        return 0;
}

TEST(platforms_untruncated)
{
        const char *p[] = { "linux/amd64", "linux/amd64/v2", "linux/386" };
        _cleanup_free_ char *got = kiln_cli_platforms_format(p, 3, false, 4);
        _cleanup_free_ char *none = kiln_cli_platforms_format(NULL, 0, true, 4);

        ASSERT_STREQ(got, "linux/amd64, linux/amd64/v2, linux/386");
        ASSERT_STREQ(none, "");
        return 0;
}

TEST(platforms_grouped_like_buildx)
{
        const char *p[] = { "linux/amd64", "linux/amd64/v2", "linux/amd64/v3", "linux/386" };
        _cleanup_free_ char *got = kiln_cli_platforms_format(p, 4, true, 4);

        ASSERT_STREQ(got, "linux/amd64 (+3), linux/386");
        return 0;
}

TEST(platforms_major_first_then_more)
{
        const char *p[] = { "linux/riscv64", "linux/s390x", "linux/arm64",  "linux/arm/v7",
                            "linux/arm/v6",  "linux/amd64", "linux/mips64", "linux/ppc64le" };
        _cleanup_free_ char *got = kiln_cli_platforms_format(p, 8, true, 4);

        ASSERT_STREQ(got, "linux/amd64, linux/arm64, linux/arm (+2), linux/ppc64le, (3 more)");
        return 0;
}

TEST(platforms_single)
{
        const char *p[] = { "linux/amd64" };
        _cleanup_free_ char *got = kiln_cli_platforms_format(p, 1, true, 4);

        ASSERT_STREQ(got, "linux/amd64");
        return 0;
}
