/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "base/pattern.h"
#include "kiln-test.h"

struct match_case {
        const char *pattern, *name;
        bool match;
        int err;
};

/* Go's path/filepath match_test.go table. */
static const struct match_case go_cases[] = {
        { "abc", "abc", true, 0 },
        { "*", "abc", true, 0 },
        { "*c", "abc", true, 0 },
        { "a*", "a", true, 0 },
        { "a*", "abc", true, 0 },
        { "a*", "ab/c", false, 0 },
        { "a*/b", "abc/b", true, 0 },
        { "a*/b", "a/c/b", false, 0 },
        { "a*b*c*d*e*/f", "axbxcxdxe/f", true, 0 },
        { "a*b*c*d*e*/f", "axbxcxdxexxx/f", true, 0 },
        { "a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, 0 },
        { "a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, 0 },
        { "a*b?c*x", "abxbbxdbxebxczzx", true, 0 },
        { "a*b?c*x", "abxbbxdbxebxczzy", false, 0 },
        { "ab[c]", "abc", true, 0 },
        { "ab[b-d]", "abc", true, 0 },
        { "ab[e-g]", "abc", false, 0 },
        { "ab[^c]", "abc", false, 0 },
        { "ab[^b-d]", "abc", false, 0 },
        { "ab[^e-g]", "abc", true, 0 },
        { "a\\*b", "a*b", true, 0 },
        { "a\\*b", "ab", false, 0 },
        { "a?b",
          "a\xe2\x98\xba"
          "b",
          true, 0 },
        { "a[^a]b",
          "a\xe2\x98\xba"
          "b",
          true, 0 },
        { "a???b",
          "a\xe2\x98\xba"
          "b",
          false, 0 },
        { "a[^a][^a][^a]b",
          "a\xe2\x98\xba"
          "b",
          false, 0 },
        { "[a-\xce\xb6]*", "\xce\xb1", true, 0 },
        { "*[a-\xce\xb6]", "A", false, 0 },
        { "a?b", "a/b", false, 0 },
        { "a*b", "a/b", false, 0 },
        { "[\\]a]", "]", true, 0 },
        { "[\\-]", "-", true, 0 },
        { "[x\\-]", "x", true, 0 },
        { "[x\\-]", "-", true, 0 },
        { "[x\\-]", "z", false, 0 },
        { "[\\-x]", "x", true, 0 },
        { "[\\-x]", "-", true, 0 },
        { "[\\-x]", "a", false, 0 },
        { "[]a]", "]", false, -EINVAL },
        { "[-]", "-", false, -EINVAL },
        { "[x-]", "x", false, -EINVAL },
        { "[x-]", "-", false, -EINVAL },
        { "[x-]", "z", false, -EINVAL },
        { "[-x]", "x", false, -EINVAL },
        { "[-x]", "-", false, -EINVAL },
        { "[-x]", "a", false, -EINVAL },
        { "\\", "a", false, -EINVAL },
        { "[a-b-c]", "a", false, -EINVAL },
        { "[", "a", false, -EINVAL },
        { "[^", "a", false, -EINVAL },
        { "[^bc", "a", false, -EINVAL },
        { "a[", "a", false, -EINVAL },
        { "a[", "ab", false, -EINVAL },
        { "a[", "x", false, -EINVAL },
        { "a/b[", "x", false, -EINVAL },
        { "*x", "xxx", true, 0 },
};

TEST(filepath_match_table)
{
        for (size_t i = 0; i < ELEMENTSOF(go_cases); i++) {
                const struct match_case *c = &go_cases[i];
                bool m = !c->match;
                int r = kiln_pattern_match(c->pattern, c->name, &m);
                if (r != c->err || (r == 0 && m != c->match))
                        KILN_TEST_FAIL("Match(%s, %s) = %d, %d; want %d, %d", c->pattern, c->name,
                                       m, r, c->match, c->err);
        }
        return 0;
}

/* moby patternmatcher_test.go TestMatches, through MatchesOrParentMatches. */
static const struct match_case pm_cases[] = {
        { "**", "file", true, 0 },
        { "**", "file/", true, 0 },
        { "**/", "file", true, 0 },
        { "**/", "file/", true, 0 },
        { "**", "/", true, 0 },
        { "**/", "/", true, 0 },
        { "**", "dir/file", true, 0 },
        { "**/", "dir/file", true, 0 },
        { "**", "dir/file/", true, 0 },
        { "**/", "dir/file/", true, 0 },
        { "**/**", "dir/file", true, 0 },
        { "**/**", "dir/file/", true, 0 },
        { "dir/**", "dir/file", true, 0 },
        { "dir/**", "dir/file/", true, 0 },
        { "dir/**", "dir/dir2/file", true, 0 },
        { "dir/**", "dir/dir2/file/", true, 0 },
        { "**/dir", "dir", true, 0 },
        { "**/dir", "dir/file", true, 0 },
        { "**/dir2/*", "dir/dir2/file", true, 0 },
        { "**/dir2/*", "dir/dir2/file/", true, 0 },
        { "**/dir2/**", "dir/dir2/dir3/file", true, 0 },
        { "**/dir2/**", "dir/dir2/dir3/file/", true, 0 },
        { "**file", "file", true, 0 },
        { "**file", "dir/file", true, 0 },
        { "**/file", "dir/file", true, 0 },
        { "**file", "dir/dir/file", true, 0 },
        { "**/file", "dir/dir/file", true, 0 },
        { "**/file*", "dir/dir/file", true, 0 },
        { "**/file*", "dir/dir/file.txt", true, 0 },
        { "**/file*txt", "dir/dir/file.txt", true, 0 },
        { "**/file*.txt", "dir/dir/file.txt", true, 0 },
        { "**/file*.txt*", "dir/dir/file.txt", true, 0 },
        { "**/**/*.txt", "dir/dir/file.txt", true, 0 },
        { "**/**/*.txt2", "dir/dir/file.txt", false, 0 },
        { "**/*.txt", "file.txt", true, 0 },
        { "**/**/*.txt", "file.txt", true, 0 },
        { "a**/*.txt", "a/file.txt", true, 0 },
        { "a**/*.txt", "a/dir/file.txt", true, 0 },
        { "a**/*.txt", "a/dir/dir/file.txt", true, 0 },
        { "a/*.txt", "a/dir/file.txt", false, 0 },
        { "a/*.txt", "a/file.txt", true, 0 },
        { "a/*.txt**", "a/file.txt", true, 0 },
        { "a[b-d]e", "ae", false, 0 },
        { "a[b-d]e", "ace", true, 0 },
        { "a[b-d]e", "aae", false, 0 },
        { "a[^b-d]e", "aze", true, 0 },
        { ".*", ".foo", true, 0 },
        { ".*", "foo", false, 0 },
        { "abc.def", "abcdef", false, 0 },
        { "abc.def", "abc.def", true, 0 },
        { "abc.def", "abcZdef", false, 0 },
        { "abc?def", "abcZdef", true, 0 },
        { "abc?def", "abcdef", false, 0 },
        { "a\\\\", "a\\", true, 0 },
        { "**/foo/bar", "foo/bar", true, 0 },
        { "**/foo/bar", "dir/foo/bar", true, 0 },
        { "**/foo/bar", "dir/dir2/foo/bar", true, 0 },
        { "abc/**", "abc", false, 0 },
        { "abc/**", "abc/def", true, 0 },
        { "abc/**", "abc/def/ghi", true, 0 },
        { "**/.foo", ".foo", true, 0 },
        { "**/.foo", "bar.foo", false, 0 },
        { "a(b)c/def", "a(b)c/def", true, 0 },
        { "a(b)c/def", "a(b)c/xyz", false, 0 },
        { "a.|)$(}+{bc", "a.|)$(}+{bc", true, 0 },
        { "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
          "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true, 0 },
        { "dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true, 0 },
        /* Parent directories match. */
        { "dir", "dir/a/b", true, 0 },
        { "dir/a", "dir/a/b/c", true, 0 },
        { "d?r", "dir/x", true, 0 },
        { "*/a", "x/a/b", true, 0 },
        { "dir", "dirt", false, 0 },
        /* The regular expression's own meaning where it differs from Match:
         * a '*' inside brackets becomes part of a class followed by '*'. */
        { "[*]", "[^/]", true, 0 },
        { "[*]", "x", false, 0 },
        { "[*]", "[]", true, 0 },
        { "[*]", "]", true, 0 },
        { "a[?]", "a/]", true, 0 },
        { "\\.x", ".x", true, 0 },
        { "a\\bc", "abc", false, 0 },
        { "x\\d", "x5", true, 0 },
        { "[[:digit:]]x", "5x", true, 0 },
        /* Go's regexp "." does not match a newline; '*' does. */
        { "a/**/b", "a/x\ny/b", false, 0 },
        { "a*b", "a\nb", true, 0 },
        /* '|', '{' and '}' are not escaped by patternmatcher (its escape
         * bitmap loses them): they keep their regular expression meaning. */
        { "a*|b", "xb", true, 0 },
        { "a*|b", "abc", true, 0 },
        { "a*|b", "xa", false, 0 },
        { "x{2}?", "xxy", true, 0 },
        { "x{2}?", "xy", false, 0 },
        { "a{*", "a{b", true, 0 },
        { "x{3,1}*", "x", false, -EINVAL },
        /* A range Go's regexp refuses: a malformed pattern at match time. */
        { "[z-a]", "q", false, -EINVAL },
};

TEST(patternmatcher_table)
{
        for (size_t i = 0; i < ELEMENTSOF(pm_cases); i++) {
                const struct match_case *c = &pm_cases[i];
                _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *m = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                const char *p = c->pattern;
                bool res = !c->match;
                int r;

                r = kiln_pattern_matcher_new(&p, 1, &m, &err);
                if (r < 0)
                        KILN_TEST_FAIL("New(%s): %s", p, kiln_error_message(err));
                r = kiln_pattern_matcher_matches(m, c->name, &res);
                if (r != c->err || (r == 0 && res != c->match))
                        KILN_TEST_FAIL("pattern %s text %s: %d, %d; want %d, %d", p, c->name, res,
                                       r, c->match, c->err);
        }
        return 0;
}

static int matches(const char *const *patterns, size_t n, const char *path)
{
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        bool res;
        int r = kiln_pattern_matcher_new(patterns, n, &m, &err);
        if (r < 0)
                return r;
        r = kiln_pattern_matcher_matches(m, path, &res);
        if (r < 0)
                return r;
        return res;
}

TEST(exclusions)
{
        static const char *const p1[] = { "docs", "!docs/README.md" };
        static const char *const p2[] = { "*.md", "!README*.md", "README-secret.md" };
        static const char *const p3[] = { "  ", "", "\t*.go " };
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        static const char *const bang[] = { "!" };
        static const char *const bad[] = { "a[" };
        bool excl;

        ASSERT_EQ_INT(matches(p1, 2, "docs"), 1);
        ASSERT_EQ_INT(matches(p1, 2, "docs/x.md"), 1);
        ASSERT_EQ_INT(matches(p1, 2, "docs/README.md"), 0);
        ASSERT_EQ_INT(matches(p1, 2, "src/a.c"), 0);
        ASSERT_EQ_INT(matches(p2, 3, "a.md"), 1);
        ASSERT_EQ_INT(matches(p2, 3, "README.md"), 0);
        ASSERT_EQ_INT(matches(p2, 3, "README-secret.md"), 1);
        ASSERT_EQ_INT(matches(p3, 3, "main.go"), 1);
        ASSERT_EQ_INT(matches(p3, 3, "main.c"), 0);

        ASSERT_OK(kiln_pattern_matcher_new(p1, 2, &m, &err));
        ASSERT_EQ_INT(kiln_pattern_matcher_count(m), 2);
        ASSERT_TRUE(kiln_pattern_matcher_exclusions(m));
        ASSERT_STREQ(kiln_pattern_matcher_pattern(m, 1, &excl), "docs/README.md");
        ASSERT_TRUE(excl);
        m = kiln_pattern_matcher_free(m);
        ASSERT_OK(kiln_pattern_matcher_new(p3, 3, &m, &err));
        ASSERT_EQ_INT(kiln_pattern_matcher_count(m), 1);
        ASSERT_TRUE(!kiln_pattern_matcher_exclusions(m));
        m = kiln_pattern_matcher_free(m);

        ASSERT_EQ_INT(kiln_pattern_matcher_new(bang, 1, &m, &err), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "illegal exclusion pattern: \"!\"");
        ASSERT_EQ_INT(kiln_pattern_matcher_new(bad, 1, &m, &err), -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "a[") != NULL);
        return 0;
}

/* A walk using parent results gives what a fresh evaluation gives. */
TEST(parent_results)
{
        static const char *const pats[] = { "a", "!a/keep", "**/*.tmp", "!a/keep/x.tmp", "b/*/c" };
        static const char *const paths[] = { "a",        "a/x",          "a/keep",
                                             "a/keep/y", "a/keep/x.tmp", "a/keep/z.tmp",
                                             "b",        "b/q",          "b/q/c",
                                             "b/q/c/d" };
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *m = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(kiln_pattern_matcher_new(pats, ELEMENTSOF(pats), &m, &err));
        /* parents: index of each path's parent in paths[], or -1. */
        static const int parent[] = { -1, 0, 0, 2, 2, 2, -1, 6, 7, 8 };
        bool all[ELEMENTSOF(paths)][5];
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                bool a, b;
                ASSERT_OK(kiln_pattern_matcher_matches(m, paths[i], &a));
                ASSERT_OK(kiln_pattern_matcher_matches_parent(
                        m, paths[i], parent[i] < 0 ? NULL : all[parent[i]], all[i], &b));
                if (a != b)
                        KILN_TEST_FAIL("%s: %d vs %d", paths[i], a, b);
        }
        bool r;
        ASSERT_OK(kiln_pattern_matcher_matches(m, "a/keep/y", &r));
        ASSERT_TRUE(!r);
        ASSERT_OK(kiln_pattern_matcher_matches(m, "a/keep/z.tmp", &r));
        ASSERT_TRUE(r);
        ASSERT_OK(kiln_pattern_matcher_matches(m, "a/keep/x.tmp", &r));
        ASSERT_TRUE(!r);
        ASSERT_OK(kiln_pattern_matcher_matches(m, "b/q/c/d", &r));
        ASSERT_TRUE(r);
        return 0;
}

TEST(ignorefile)
{
        static const char text[] = "\xEF\xBB\xBF# comment\n"
                                   "node_modules\r\n"
                                   "  /abs/path/  \n"
                                   "\n"
                                   "  # not a comment\n"
                                   "!  /keep//this/../that\n"
                                   "a/./b/\n"
                                   "/\n"
                                   "!\n"
                                   "**/*.log";
        static const char *const want[] = {
                "node_modules", "abs/path", "# not a comment", "!keep/that", "a/b", "/", "!",
                "**/*.log"
        };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char **v = NULL;
        size_t n = 0;

        ASSERT_OK(kiln_pattern_read_ignorefile(text, sizeof(text) - 1, &v, &n, &err));
        ASSERT_EQ_INT(n, ELEMENTSOF(want));
        for (size_t i = 0; i < n; i++)
                ASSERT_STREQ(v[i], want[i]);
        ASSERT_TRUE(v[n] == NULL);
        kiln_pattern_strv_free(v);

        ASSERT_OK(kiln_pattern_read_ignorefile("", 0, &v, &n, &err));
        ASSERT_EQ_INT(n, 0);
        ASSERT_TRUE(v && v[0] == NULL);
        kiln_pattern_strv_free(v);
        return 0;
}

TEST(clean_and_wildcards)
{
        static const char *const cases[][2] = {
                { "", "." },           { ".", "." },
                { "a//b", "a/b" },     { "a/b/", "a/b" },
                { "/../x", "/x" },     { "../../a", "../../a" },
                { "a/../..", ".." },   { "/", "/" },
                { "./a/./b/..", "a" }, { "abc/def/../../..", ".." },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *c = kiln_pattern_clean(cases[i][0]);
                ASSERT_STREQ(c, cases[i][1]);
        }
        ASSERT_TRUE(kiln_pattern_has_wildcards("a/*.txt"));
        ASSERT_TRUE(kiln_pattern_has_wildcards("a[bc]"));
        ASSERT_TRUE(kiln_pattern_has_wildcards("?"));
        ASSERT_TRUE(!kiln_pattern_has_wildcards("a\\*b"));
        ASSERT_TRUE(!kiln_pattern_has_wildcards("plain/path"));
        return 0;
}
