/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reference grammar. The cases are distribution/reference's own
 * (reference_test.go TestReferenceParse, normalize_test.go
 * TestValidateReferenceName, TestValidateRemoteName, TestParseRepositoryInfo,
 * TestParseReferenceWithTagAndDigest), read through ParseNormalizedNamed and
 * TagNameOnly as BuildKit reads image references.
 */
#include <string.h>

#include "base/error.h"
#include "kiln-test.h"
#include "content/ref.h"

#define HEX64 "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"

static char *repeat(const char *s, size_t n)
{
        size_t len = strlen(s);
        char *out = kiln_xmalloc(len * n + 1);

        for (size_t i = 0; i < n; i++)
                memcpy(out + i * len, s, len);
        out[len * n] = 0;
        return out;
}

/* Parses s and checks its canonical form (NULL: must fail). */
static int check(const char *s, const char *canonical)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *got = NULL;
        int r = kiln_content_ref_parse(s, &ref, &err);

        if (!canonical) {
                if (r >= 0) {
                        got = kiln_content_ref_canonical(ref);
                        printf("# '%s' parsed as '%s', expected an error\n", s, got);
                        return -1;
                }
                if (r != -EINVAL || !err || !strstr(kiln_error_message(err), "invalid reference")) {
                        printf("# '%s': unexpected error %d %s\n", s, r, kiln_error_message(err));
                        return -1;
                }
                return 0;
        }
        if (r < 0) {
                printf("# '%s': %s\n", s, kiln_error_message(err));
                return -1;
        }
        got = kiln_content_ref_canonical(ref);
        if (!streq(got, canonical)) {
                printf("# '%s' -> '%s', expected '%s'\n", s, got, canonical);
                return -1;
        }
        return 0;
}

TEST(ref_defaults)
{
        ASSERT_OK(check("alpine", "docker.io/library/alpine:latest"));
        ASSERT_OK(check("alpine:3.20", "docker.io/library/alpine:3.20"));
        ASSERT_OK(check("user/repo", "docker.io/user/repo:latest"));
        ASSERT_OK(check("docker.io/alpine", "docker.io/library/alpine:latest"));
        ASSERT_OK(check("index.docker.io/user/repo", "docker.io/user/repo:latest"));
        ASSERT_OK(check("docker.io/library/alpine", "docker.io/library/alpine:latest"));
        ASSERT_OK(check("localhost/repo", "localhost/repo:latest"));
        ASSERT_OK(check("localhost:5000/repo", "localhost:5000/repo:latest"));
        ASSERT_OK(check("localhost", "docker.io/library/localhost:latest"));
        ASSERT_OK(check("localhost:5000", "docker.io/library/localhost:5000"));
        ASSERT_OK(check("host:5000/repo:tag", "host:5000/repo:tag"));
        ASSERT_OK(check("repo@sha256:" HEX64, "docker.io/library/repo@sha256:" HEX64));
        ASSERT_OK(check("repo:tag@sha256:" HEX64, "docker.io/library/repo:tag@sha256:" HEX64));
        return 0;
}

TEST(ref_fields)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL, *copy = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *name = NULL;

        ASSERT_OK(kiln_content_ref_parse("[::1]:5000/a/b:t@sha256:" HEX64, &ref, &err));
        ASSERT_STREQ(ref->domain, "[::1]:5000");
        ASSERT_STREQ(ref->path, "a/b");
        ASSERT_STREQ(ref->tag, "t");
        ASSERT_STREQ(ref->digest, "sha256:" HEX64);
        ASSERT_STREQ(kiln_content_ref_object(ref), "sha256:" HEX64);
        name = kiln_content_ref_name(ref);
        ASSERT_STREQ(name, "[::1]:5000/a/b");
        copy = kiln_content_ref_copy(ref);
        ASSERT_STREQ(copy->tag, "t");
        ref = kiln_content_ref_free(ref);

        ASSERT_OK(kiln_content_ref_parse("busybox", &ref, &err));
        ASSERT_TRUE(!ref->digest);
        ASSERT_STREQ(kiln_content_ref_object(ref), "latest");
        ref = kiln_content_ref_free(ref);
        ASSERT_OK(kiln_content_ref_parse("busybox@sha256:" HEX64, &ref, &err));
        ASSERT_TRUE(!ref->tag); /* TagNameOnly adds no tag beside a digest */
        return 0;
}

/* reference_test.go TestReferenceParse (inputs that carry a domain or are
 * read on docker.io after normalising). */
TEST(ref_distribution_parse_cases)
{
        _cleanup_free_ char *long_ok = NULL, *long_bad = NULL, *deep = NULL, *deep_want = NULL;
        _cleanup_free_ char *a256 = repeat("a", 256), *a255 = repeat("a", 255);
        _cleanup_free_ char *a_127 = repeat("a/", 127);

        ASSERT_OK(check("test_com", "docker.io/library/test_com:latest"));
        ASSERT_OK(check("test.com:tag", "docker.io/library/test.com:tag"));
        ASSERT_OK(check("test.com:5000", "docker.io/library/test.com:5000"));
        ASSERT_OK(check("test.com/repo:tag", "test.com/repo:tag"));
        ASSERT_OK(check("test:5000/repo", "test:5000/repo:latest"));
        ASSERT_OK(check("test:5000/repo:tag", "test:5000/repo:tag"));
        ASSERT_OK(check("test:5000/repo@sha256:" HEX64, "test:5000/repo@sha256:" HEX64));
        ASSERT_OK(check("test:5000/repo:tag@sha256:" HEX64, "test:5000/repo:tag@sha256:" HEX64));
        ASSERT_OK(check("", NULL));
        ASSERT_OK(check(":justtag", NULL));
        ASSERT_OK(check("@sha256:" HEX64, NULL));
        ASSERT_OK(check("repo@sha256:ffffffffffffffffffffffffffffffffff", NULL));
        ASSERT_OK(check("validname@invaliddigest:" HEX64, NULL));
        ASSERT_OK(check("Uppercase:tag", NULL));
        ASSERT_OK(check("Uppercase/lowercase:tag", "Uppercase/lowercase:tag"));
        ASSERT_OK(check("test:5000/Uppercase/lowercase:tag", NULL));
        ASSERT_OK(check("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase"));
        long_bad = kiln_xasprintf("domain.com/%s:tag", a256);
        ASSERT_OK(check(long_bad, NULL));
        long_ok = kiln_xasprintf("example.com/%s:tag", a255);
        ASSERT_OK(check(long_ok, long_ok));
        /* 127 "a/" and "a": read on docker.io, the path is 255 bytes */
        deep = kiln_xasprintf("%sa:tag-puts-this-over-max", a_127);
        deep_want = kiln_xasprintf("docker.io/%s", deep);
        ASSERT_OK(check(deep, deep_want));
        ASSERT_OK(check("aa/asdf$$^/aa", NULL));
        ASSERT_OK(check("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux:latest"));
        ASSERT_OK(check("sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                        "sub-dom1.foo.com/bar/baz/quux:some-long-tag"));
        ASSERT_OK(check("b.gcr.io/test.example.com/my-app:test.example.com",
                        "b.gcr.io/test.example.com/my-app:test.example.com"));
        ASSERT_OK(check("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"));
        ASSERT_OK(check("xn--7o8h.com/myimage:xn--7o8h.com@sha256:" HEX64,
                        "xn--7o8h.com/myimage:xn--7o8h.com@sha256:" HEX64));
        ASSERT_OK(check("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"));
        ASSERT_OK(check("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"));
        ASSERT_OK(check("192.168.1.1", "docker.io/library/192.168.1.1:latest"));
        ASSERT_OK(check("192.168.1.1:tag", "docker.io/library/192.168.1.1:tag"));
        ASSERT_OK(check("192.168.1.1:5000", "docker.io/library/192.168.1.1:5000"));
        ASSERT_OK(check("192.168.1.1/repo", "192.168.1.1/repo:latest"));
        ASSERT_OK(check("192.168.1.1:5000/repo", "192.168.1.1:5000/repo:latest"));
        ASSERT_OK(check("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050"));
        ASSERT_OK(check("[2001:db8::1]", NULL));
        ASSERT_OK(check("[2001:db8::1]:5000", NULL));
        ASSERT_OK(check("[2001:db8::1]:tag", NULL));
        ASSERT_OK(check("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest"));
        ASSERT_OK(check("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo:tag"));
        ASSERT_OK(check("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo:latest"));
        ASSERT_OK(check("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo:tag"));
        ASSERT_OK(check("[2001:db8::1]:5000/repo@sha256:" HEX64,
                        "[2001:db8::1]:5000/repo@sha256:" HEX64));
        ASSERT_OK(check("[2001:db8::1]:5000/repo:tag@sha256:" HEX64,
                        "[2001:db8::1]:5000/repo:tag@sha256:" HEX64));
        ASSERT_OK(check("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest"));
        ASSERT_OK(check("[::1]:5000/repo", "[::1]:5000/repo:latest"));
        ASSERT_OK(check("[fe80::1%eth0]:5000/repo", NULL));
        ASSERT_OK(check("[fe80::1%@invalidzone]:5000/repo", NULL));
        return 0;
}

TEST(ref_distribution_valid_names)
{
        static const char *const valid[] = {
                "docker/docker",
                "library/debian",
                "debian",
                "localhost/library/debian",
                "localhost/debian",
                "LOCALDOMAIN/library/debian",
                "LOCALDOMAIN/debian",
                "docker.io/docker/docker",
                "docker.io/library/debian",
                "docker.io/debian",
                "index.docker.io/docker/docker",
                "index.docker.io/library/debian",
                "index.docker.io/debian",
                "127.0.0.1:5000/docker/docker",
                "127.0.0.1:5000/library/debian",
                "127.0.0.1:5000/debian",
                "192.168.0.1",
                "192.168.0.1:80",
                "192.168.0.1:8/debian",
                "192.168.0.2:25000/debian",
                "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
                "[fc00::1]:5000/docker",
                "[fc00::1]:5000/docker/docker",
                "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
                "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
                "Docker/docker",
                "DOCKER/docker",
                /* TestValidateRemoteName */
                "docker-rules/docker",
                "docker---rules/docker",
                "doc/docker",
                "d/docker",
                "jess/t",
                "dock__er/docker",
        };
        for (size_t i = 0; i < ELEMENTSOF(valid); i++) {
                _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                if (kiln_content_ref_parse(valid[i], &ref, &err) < 0)
                        KILN_TEST_FAIL("'%s': %s", valid[i], kiln_error_message(err));
        }
        return 0;
}

TEST(ref_distribution_invalid_names)
{
        static const char *const invalid[] = {
                "https://github.com/docker/docker",
                "docker/Docker",
                "-docker",
                "-docker/docker",
                "-docker.io/docker/docker",
                "docker///docker",
                "docker.io/docker/Docker",
                "docker.io/docker///docker",
                "[fc00::1]",
                "[fc00::1]:5000",
                "fc00::1:5000/debian",
                "[fe80::1%eth0]:5000/debian",
                "[2001:db8:3:4::192.0.2.33]:5000/debian",
                "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
                /* TestValidateRemoteName */
                "docker-/docker",
                "-docker-/docker",
                "____/____",
                "_docker/_docker",
                "dock..er/docker",
                "dock_.er/docker",
                "dock-.er/docker",
                "docker/",
                "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_"
                "a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_"
                "namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_"
                "because_its_lenth_is_greater_than_255/docker",
                /* and a few of kiln's */
                "foo:",
                "foo@",
                "foo:bar:baz",
                "foo@sha256:" HEX64 "@sha256:" HEX64,
                "foo@SHA256:" HEX64,
                "foo@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                "foo@md5:ffffffffffffffffffffffffffffffff",
                "foo/bar:-tag",
                "foo/bar:.tag",
                "localhost/",
                "foo_bar.com/x",
                "a b",
                "foo\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(invalid); i++)
                if (check(invalid[i], NULL) < 0)
                        return -1;
        return 0;
}

TEST(ref_digest_algorithms)
{
        _cleanup_free_ char *a96 = repeat("a", 96), *z128 = repeat("0", 128);
        _cleanup_free_ char *s384 = kiln_xasprintf("foo@sha384:%s", a96);
        _cleanup_free_ char *s512 = kiln_xasprintf("foo@sha512:%s", z128);
        _cleanup_free_ char *w384 = kiln_xasprintf("docker.io/library/%s", s384);
        _cleanup_free_ char *w512 = kiln_xasprintf("docker.io/library/%s", s512);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(check(s384, w384));
        ASSERT_OK(check(s512, w512));
        ASSERT_OK(kiln_content_digest_validate("sha256:" HEX64, &err));
        ASSERT_EQ_INT(kiln_content_digest_validate("sha256:" HEX64 "0", &err), -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "invalid checksum digest length"));
        ASSERT_EQ_INT(kiln_content_digest_validate("foo+bar:" HEX64, &err), -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "unsupported digest algorithm"));
        ASSERT_EQ_INT(kiln_content_digest_validate("sha256", &err), -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(err), "invalid checksum digest format"));
        return 0;
}

static int check_error(const char *s, const char *needle)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (kiln_content_ref_parse(s, &ref, &err) != -EINVAL)
                KILN_TEST_FAIL("'%s' parsed", s);
        if (!strstr(kiln_error_message(err), needle))
                KILN_TEST_FAIL("'%s': \"%s\" lacks \"%s\"", s, kiln_error_message(err), needle);
        return 0;
}

TEST(ref_errors_quote_and_explain)
{
        _cleanup_free_ char *huge = repeat("a", 5000);

        ASSERT_OK(check_error("Foo", "invalid reference 'Foo': repository name 'library/Foo' must "
                                     "be lowercase"));
        ASSERT_OK(check_error("docker///docker", "invalid reference 'docker///docker': empty "
                                                 "component"));
        ASSERT_OK(check_error("foo/bar:-x", "invalid tag '-x'"));
        ASSERT_OK(check_error("a/b..c", "invalid repository name component 'b..c'"));
        ASSERT_OK(check_error("foo_bar.com/x", "invalid registry host 'foo_bar.com'"));
        ASSERT_OK(check_error("foo@sha256:abc", "invalid digest 'sha256:abc'"));
        ASSERT_OK(check_error("foo@sha256:" HEX64 "00", "invalid checksum digest length"));
        ASSERT_OK(check_error(HEX64, "64 hexadecimal"));
        ASSERT_OK(check_error("", "empty reference"));
        ASSERT_OK(check_error("a\x01"
                              "b",
                              "'a\\x01b'")); /* control bytes escaped */
        ASSERT_OK(check_error(huge, "longer than 4096 bytes"));
        ASSERT_OK(check_error(huge, "aaaa...'")); /* quoted, but cut */
        return 0;
}

TEST(ref_familiar)
{
        static const struct {
                const char *in, *familiar;
        } cases[] = {
                /* normalize_test.go TestParseRepositoryInfo (with :latest added) */
                { "localhost/fooo", "localhost/fooo:latest" },
                { "localhost/fooo/bar", "localhost/fooo/bar:latest" },
                { "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo:latest" },
                { "docker.io/fooo/bar", "fooo/bar:latest" },
                { "index.docker.io/fooo/bar", "fooo/bar:latest" },
                { "library/ubuntu", "ubuntu:latest" },
                { "docker.io/library/ubuntu", "ubuntu:latest" },
                { "nonlibrary/ubuntu", "nonlibrary/ubuntu:latest" },
                { "other/library", "other/library:latest" },
                { "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase:latest" },
                { "example.com:8000/privatebasee", "example.com:8000/privatebasee:latest" },
                { "ubuntu-12.04-base", "ubuntu-12.04-base:latest" },
                { "docker.io/foo", "foo:latest" },
                { "library/foo/bar", "library/foo/bar:latest" },
                { "store/foo/bar", "store/foo/bar:latest" },
                { "Foo/bar", "Foo/bar:latest" },
                /* kiln keeps docker.io where the short form would name another host */
                { "docker.io/foo.com/bar", "docker.io/foo.com/bar:latest" },
                { "docker.io/localhost/bar", "docker.io/localhost/bar:latest" },
                { "docker.io/localhostx/bar", "localhostx/bar:latest" },
                /* TestParseReferenceWithTagAndDigest */
                { "busybox:latest@sha256:"
                  "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
                  "busybox:latest@sha256:"
                  "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL,
                                                                          *again = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_free_ char *f = NULL, *c1 = NULL, *c2 = NULL;

                ASSERT_OK(kiln_content_ref_parse(cases[i].in, &ref, &err));
                f = kiln_content_ref_familiar(ref);
                ASSERT_STREQ(f, cases[i].familiar);
                /* the familiar form reads back to the same reference */
                ASSERT_OK(kiln_content_ref_parse(f, &again, &err));
                c1 = kiln_content_ref_canonical(ref);
                c2 = kiln_content_ref_canonical(again);
                ASSERT_STREQ(c1, c2);
        }
        return 0;
}
