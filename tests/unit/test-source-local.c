/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/macro.h"
#include "kiln-test.h"
#include "source/local.h"

#define T0 1700000000000000000LL

struct fixture {
        char root[64];
        struct kiln_source_local_store *store;
};

static int fixture_init(struct fixture *f)
{
        snprintf(f->root, sizeof(f->root), "/tmp/kiln-test-local-XXXXXX");
        if (!mkdtemp(f->root))
                return -errno;
        struct kiln_error *err = NULL;
        int r = kiln_source_local_store_open(f->root, &f->store, &err);
        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        return r;
}

static void fixture_done(struct fixture *f)
{
        f->store = kiln_source_local_store_free(f->store);
        (void) kiln_rm_rf_at(AT_FDCWD, f->root, NULL, NULL);
}

/* A file of a test tar: a regular file with data, or another type. */
struct tar_item {
        const char *path;
        const char *data;
        unsigned type;    /* AE_IFREG when 0 */
        const char *link; /* symbolic links */
};
#define FILE_ITEM(p, d)           \
        {                         \
                (p), (d), 0, NULL \
        }

static int make_tar(const char *path, const struct tar_item *items, size_t n)
{
        struct archive *a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        if (archive_write_open_filename(a, path) != ARCHIVE_OK) {
                archive_write_free(a);
                return -EIO;
        }
        for (size_t i = 0; i < n; i++) {
                struct archive_entry *e = archive_entry_new();
                archive_entry_set_pathname(e, items[i].path);
                archive_entry_set_filetype(e, items[i].type ? items[i].type : AE_IFREG);
                archive_entry_set_perm(e, 0644);
                if (items[i].link)
                        archive_entry_set_symlink(e, items[i].link);
                size_t len = items[i].data ? strlen(items[i].data) : 0;
                archive_entry_set_size(e, (la_int64_t) len);
                archive_write_header(a, e);
                if (len)
                        archive_write_data(a, items[i].data, len);
                archive_entry_free(e);
        }
        archive_write_close(a);
        archive_write_free(a);
        return 0;
}

static struct kiln_source_local_entry file_entry(const char *path, size_t size, int64_t mtime)
{
        return (struct kiln_source_local_entry){
                .path = path,
                .mode = S_IFREG | 0644,
                .size = size,
                .mtime_ns = mtime,
                .uid = getuid(),
                .gid = getgid(),
        };
}

static struct kiln_source_local_entry dir_entry(const char *path)
{
        return (struct kiln_source_local_entry){
                .path = path,
                .mode = S_IFDIR | 0755,
                .mtime_ns = T0,
                .uid = getuid(),
                .gid = getgid(),
        };
}

static struct kiln_source_local_entry link_entry(const char *path, const char *target)
{
        return (struct kiln_source_local_entry){
                .path = path,
                .mode = S_IFLNK | 0777,
                .mtime_ns = T0,
                .uid = getuid(),
                .gid = getgid(),
                .link = target,
        };
}

static bool needed_is(struct kiln_source_local_transfer *t, const char *const *want, size_t n)
{
        const char *const *got;
        size_t m = kiln_source_local_transfer_needed(t, &got);
        if (m != n) {
                printf("# needed %zu paths, expected %zu\n", m, n);
                return false;
        }
        for (size_t i = 0; i < n; i++)
                if (strcmp(got[i], want[i]) != 0) {
                        printf("# needed[%zu] = %s, expected %s\n", i, got[i], want[i]);
                        return false;
                }
        return true;
}

/* Runs a whole transfer: begin, check the needed list, receive a tar of
 * items, finish. Returns the error of the first failing step. */
static int transfer(struct fixture *f, const char *key, const struct kiln_source_local_entry *e,
                    size_t n, const char *const *want_needed, size_t n_want,
                    const struct tar_item *items, size_t n_items,
                    struct kiln_source_local_context **ret, struct kiln_error **err)
{
        _cleanup_(kiln_source_local_transfer_freep) struct kiln_source_local_transfer *t = NULL;
        int r = kiln_source_local_transfer_begin(f->store, key, e, n, &t, err);
        if (r < 0)
                return r;
        if (want_needed && !needed_is(t, want_needed, n_want))
                return kiln_error_set(err, -EINVAL, "unexpected needed list");
        _cleanup_free_ char *tar = kiln_xasprintf("%s/in.tar", f->root);
        r = make_tar(tar, items, n_items);
        if (r < 0)
                return kiln_error_set(err, r, "make tar");
        _cleanup_close_ int fd = open(tar, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open tar");
        struct kiln_source_local_receive_stats st;
        r = kiln_source_local_transfer_receive_fd(t, fd, NULL, &st, err);
        unlink(tar);
        if (r < 0)
                return r;
        if (st.files != n_items)
                return kiln_error_set(err, -EINVAL, "received %" PRIu64 " files", st.files);
        return kiln_source_local_transfer_finish(t, NULL, ret, err);
}

static char *read_tree(struct kiln_source_local_context *c, const char *path)
{
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        if (kiln_read_file_at_flags(kiln_source_local_context_fd(c), path, O_NOFOLLOW, &b) < 0) {
                kiln_buf_release(&b);
                return NULL;
        }
        return kiln_buf_steal(&b);
}

static int checksum(struct kiln_source_local_context *c, const char *path, bool wildcard,
                    const char *const *inc, size_t n_inc, const char *const *exc, size_t n_exc,
                    char out[KILN_SOURCE_LOCAL_DIGEST_LEN])
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_source_local_checksum(c, path, wildcard, false, inc, n_inc, exc, n_exc, out,
                                           &err);
        if (r < 0)
                printf("# checksum %s: %s\n", path, kiln_error_message(err));
        return r;
}

#define ASSERT_NO_ERR(r, err)                                                  \
        do {                                                                   \
                if ((r) < 0)                                                   \
                        KILN_TEST_FAIL("%s: %s", #r, kiln_error_message(err)); \
        } while (0)

TEST(round_trip_and_incremental)
{
        struct fixture f = { 0 };
        int fds = kiln_test_count_fds();
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_error *err = NULL;
        struct kiln_source_local_context *c = NULL, *c2 = NULL, *c3 = NULL;

        /* Out of order on purpose: the store sorts. "a/x" and "a-b" test
         * that a directory's subtree stays together. */
        struct kiln_source_local_entry e1[] = {
                file_entry("b", 5, T0),   dir_entry("a"),
                file_entry("a/x", 5, T0), file_entry("a-b", 3, T0),
                link_entry("l", "b"),     file_entry("sub/deep/f", 1, T0), /* parents made up */
        };
        const char *need1[] = { "a/x", "a-b", "b", "sub/deep/f" };
        struct tar_item t1[] = {
                FILE_ITEM("b", "world"),
                FILE_ITEM("a/x", "hello"),
                FILE_ITEM("a-b", "abc"),
                FILE_ITEM("sub/deep/f", "z"),
        };
        int r = transfer(&f, "ctx1", e1, ELEMENTSOF(e1), need1, ELEMENTSOF(need1), t1,
                         ELEMENTSOF(t1), &c, &err);
        if (r < 0) {
                printf("# first transfer: %s\n", kiln_error_message(err));
                goto out;
        }
        {
                _cleanup_free_ char *x = read_tree(c, "a/x");
                _cleanup_free_ char *b = read_tree(c, "b");
                if (!x || !b || strcmp(x, "hello") || strcmp(b, "world")) {
                        printf("# tree content wrong\n");
                        goto out;
                }
                char target[16] = { 0 };
                if (readlinkat(kiln_source_local_context_fd(c), "l", target, sizeof(target) - 1) !=
                            1 ||
                    strcmp(target, "b")) {
                        printf("# symlink wrong\n");
                        goto out;
                }
                struct stat st;
                if (fstatat(kiln_source_local_context_fd(c), "a/x", &st, 0) < 0 ||
                    (st.st_mode & 07777) != 0644 || st.st_mtim.tv_sec != T0 / 1000000000) {
                        printf("# metadata wrong\n");
                        goto out;
                }
                if (fstatat(kiln_source_local_context_fd(c), "sub/deep", &st, 0) < 0 ||
                    !S_ISDIR(st.st_mode)) {
                        printf("# made-up parent missing\n");
                        goto out;
                }
                if (strncmp(kiln_source_local_digest(c), "sha256:", 7) != 0)
                        goto out;
        }
        char before_a[KILN_SOURCE_LOCAL_DIGEST_LEN], before_all[KILN_SOURCE_LOCAL_DIGEST_LEN];
        if (checksum(c, "/a", false, NULL, 0, NULL, 0, before_a) < 0 ||
            checksum(c, "/", false, NULL, 0, NULL, 0, before_all) < 0)
                goto out;
        c = kiln_source_local_context_unref(c);

        /* b changes (size and mtime), a/x does not: only b is needed. */
        struct kiln_source_local_entry e2[] = {
                dir_entry("a"),           file_entry("a/x", 5, T0),
                file_entry("a-b", 3, T0), file_entry("b", 7, T0 + 1),
                link_entry("l", "a/x"),   file_entry("sub/deep/f", 1, T0),
        };
        const char *need2[] = { "b" };
        struct tar_item t2[] = { FILE_ITEM("b", "world!!") };
        r = transfer(&f, "ctx1", e2, ELEMENTSOF(e2), need2, ELEMENTSOF(need2), t2, ELEMENTSOF(t2),
                     &c2, &err);
        if (r < 0) {
                printf("# second transfer: %s\n", kiln_error_message(err));
                goto out;
        }
        {
                _cleanup_free_ char *b = read_tree(c2, "b");
                if (!b || strcmp(b, "world!!")) {
                        printf("# changed file not updated\n");
                        goto out;
                }
                char target[16] = { 0 };
                if (readlinkat(kiln_source_local_context_fd(c2), "l", target, sizeof(target) - 1) <
                            0 ||
                    strcmp(target, "a/x")) {
                        printf("# changed symlink not updated\n");
                        goto out;
                }
        }
        /* The checksum of "a" ignores the change of b; the whole one not. */
        char after_a[KILN_SOURCE_LOCAL_DIGEST_LEN], after_all[KILN_SOURCE_LOCAL_DIGEST_LEN];
        if (checksum(c2, "a", false, NULL, 0, NULL, 0, after_a) < 0 ||
            checksum(c2, "", false, NULL, 0, NULL, 0, after_all) < 0)
                goto out;
        if (strcmp(before_a, after_a) != 0 || strcmp(before_all, after_all) == 0) {
                printf("# checksums: a %s -> %s, all %s -> %s\n", before_a, after_a, before_all,
                       after_all);
                goto out;
        }
        c2 = kiln_source_local_context_unref(c2);

        /* a/x deleted, a/x2 new with the same content: a's checksum moves. */
        struct kiln_source_local_entry e3[] = {
                dir_entry("a"),
                file_entry("a/x2", 5, T0),
                file_entry("b", 7, T0 + 1),
        };
        const char *need3[] = { "a/x2" };
        struct tar_item t3[] = { FILE_ITEM("a/x2", "hello") };
        r = transfer(&f, "ctx1", e3, ELEMENTSOF(e3), need3, ELEMENTSOF(need3), t3, ELEMENTSOF(t3),
                     &c3, &err);
        if (r < 0) {
                printf("# third transfer: %s\n", kiln_error_message(err));
                goto out;
        }
        {
                struct stat st;
                int fd = kiln_source_local_context_fd(c3);
                if (fstatat(fd, "a/x", &st, AT_SYMLINK_NOFOLLOW) == 0 ||
                    fstatat(fd, "l", &st, AT_SYMLINK_NOFOLLOW) == 0 ||
                    fstatat(fd, "sub", &st, AT_SYMLINK_NOFOLLOW) == 0 ||
                    fstatat(fd, "a-b", &st, AT_SYMLINK_NOFOLLOW) == 0) {
                        printf("# deleted entries still in the tree\n");
                        goto out;
                }
                char a3[KILN_SOURCE_LOCAL_DIGEST_LEN];
                if (checksum(c3, "a", false, NULL, 0, NULL, 0, a3) < 0 || !strcmp(a3, after_a)) {
                        printf("# renamed file kept the checksum\n");
                        goto out;
                }
                char none[KILN_SOURCE_LOCAL_DIGEST_LEN];
                struct kiln_error *e = NULL;
                r = kiln_source_local_checksum(c3, "/a/x", false, false, NULL, 0, NULL, 0, none,
                                               &e);
                bool ok = r == -ENOENT && !strcmp(kiln_error_message(e), "\"/a/x\": not found");
                if (!ok)
                        printf("# missing path: %d %s\n", r, kiln_error_message(e));
                kiln_error_free(e);
                if (!ok)
                        goto out;
        }
        rc = 0;
out:
        kiln_source_local_context_unref(c);
        kiln_source_local_context_unref(c2);
        kiln_source_local_context_unref(c3);
        kiln_error_free(err);
        fixture_done(&f);
        if (rc == 0 && kiln_test_count_fds() != fds) {
                printf("# %d fds before, %d after\n", fds, kiln_test_count_fds());
                rc = -1;
        }
        return rc;
}

/* Each bad tar fails with an error naming the entry. */
TEST(bad_tar_entries)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_source_local_entry e[] = { file_entry("a", 1, T0), file_entry("b", 1, T0) };
        struct {
                struct tar_item item;
                const char *want;
        } cases[] = {
                { FILE_ITEM("c", "x"), "local context: tar entry 'c': not a needed file" },
                { FILE_ITEM("../a", "x"), "local context: tar entry '../a': invalid path" },
                { FILE_ITEM("/a", "x"), "local context: tar entry '/a': invalid path" },
                { { "a", NULL, AE_IFLNK, "/etc/passwd" },
                  "local context: tar entry 'a': not a regular file" },
                { { "a", NULL, AE_IFDIR, NULL }, "local context: tar entry 'a/': invalid path" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kiln_source_local_context *c = NULL;
                struct kiln_error *err = NULL;
                int r = transfer(&f, "bad", e, ELEMENTSOF(e), NULL, 0, &cases[i].item, 1, &c, &err);
                bool ok = r < 0 && err && !strcmp(kiln_error_message(err), cases[i].want);
                if (!ok)
                        printf("# case %zu: %d %s\n", i, r, kiln_error_message(err));
                kiln_error_free(err);
                kiln_source_local_context_unref(c);
                if (!ok)
                        goto out;
        }
        /* Nothing was written into the tree by the refused transfers. */
        {
                _cleanup_free_ char *p = kiln_xasprintf("%s/etc", f.root);
                struct stat st;
                if (lstat(p, &st) == 0)
                        goto out;
        }
        /* A needed file the tar lacks fails at finish. */
        {
                struct kiln_source_local_context *c = NULL;
                struct kiln_error *err = NULL;
                struct tar_item only_a = FILE_ITEM("a", "1");
                int r = transfer(&f, "bad", e, ELEMENTSOF(e), NULL, 0, &only_a, 1, &c, &err);
                bool ok = r == -EPROTO && !strcmp(kiln_error_message(err),
                                                  "local context: 'b' is needed but was not sent");
                if (!ok)
                        printf("# missing file: %d %s\n", r, kiln_error_message(err));
                kiln_error_free(err);
                kiln_source_local_context_unref(c);
                if (!ok)
                        goto out;
        }
        rc = 0;
out:
        fixture_done(&f);
        return rc;
}

TEST(bad_lists)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct {
                struct kiln_source_local_entry e[2];
                size_t n;
                const char *want;
        } cases[] = {
                { { file_entry("a/../b", 1, T0) },
                  1,
                  "local context: entry 'a/../b': path has a '..' component" },
                { { file_entry("/etc/passwd", 1, T0) },
                  1,
                  "local context: entry '/etc/passwd': path is absolute" },
                { { file_entry("a//b", 1, T0) },
                  1,
                  "local context: entry 'a//b': path is not clean" },
                { { file_entry("a/", 1, T0) }, 1, "local context: entry 'a/': path is not clean" },
                { { file_entry("./a", 1, T0) },
                  1,
                  "local context: entry './a': path is not clean" },
                { { file_entry("a", 1, T0), file_entry("a", 1, T0) },
                  2,
                  "local context: entry 'a': listed twice" },
                { { file_entry("a", 1, T0), file_entry("a/b", 1, T0) },
                  2,
                  "local context: entry 'a/b': parent is not a directory" },
                { { link_entry("l", NULL) },
                  1,
                  "local context: entry 'l': symbolic link without a target" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kiln_source_local_transfer *t = NULL;
                struct kiln_error *err = NULL;
                int r = kiln_source_local_transfer_begin(f.store, "k", cases[i].e, cases[i].n, &t,
                                                         &err);
                bool ok = r < 0 && !strcmp(kiln_error_message(err), cases[i].want);
                if (!ok)
                        printf("# case %zu: %d %s\n", i, r, kiln_error_message(err));
                kiln_error_free(err);
                kiln_source_local_transfer_free(t);
                if (!ok)
                        goto out;
        }
        rc = 0;
out:
        fixture_done(&f);
        return rc;
}

TEST(checksum_selection)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_error *err = NULL;
        struct kiln_source_local_context *c = NULL, *c2 = NULL;
        struct kiln_source_local_entry e[] = {
                dir_entry("src"),
                file_entry("src/a.go", 1, T0),
                file_entry("src/b.go", 1, T0),
                file_entry("src/README", 1, T0),
                file_entry("x.txt", 1, T0),
                file_entry("y.txt", 1, T0),
                link_entry("lnk", "src"),
        };
        struct tar_item t[] = {
                FILE_ITEM("src/a.go", "a"),   FILE_ITEM("src/b.go", "b"),
                FILE_ITEM("src/README", "r"), FILE_ITEM("x.txt", "x"),
                FILE_ITEM("y.txt", "y"),
        };
        int r = transfer(&f, "sel", e, ELEMENTSOF(e), NULL, 0, t, ELEMENTSOF(t), &c, &err);
        ASSERT_NO_ERR(r, err);

        char go1[72], txt1[72], x1[72], readme1[72], lnk[72], lnkf[72], src[72], none[72];
        const char *inc[] = { "*.go" };
        const char *exc[] = { "README" };
        if (checksum(c, "src", false, inc, 1, NULL, 0, go1) < 0 ||
            checksum(c, "*.txt", true, NULL, 0, NULL, 0, txt1) < 0 ||
            checksum(c, "x.txt", false, NULL, 0, NULL, 0, x1) < 0 ||
            checksum(c, "src", false, NULL, 0, exc, 1, readme1) < 0 ||
            checksum(c, "src", false, NULL, 0, NULL, 0, src) < 0 ||
            checksum(c, "lnk", false, NULL, 0, NULL, 0, lnk) < 0 ||
            checksum(c, "nothing*", true, NULL, 0, NULL, 0, none) < 0)
                goto out;
        r = kiln_source_local_checksum(c, "lnk", false, true, NULL, 0, NULL, 0, lnkf, &err);
        ASSERT_NO_ERR(r, err);
        /* Following the link gives the directory's checksum, not the link's. */
        if (!strcmp(lnk, lnkf) || strcmp(lnkf, src) != 0) {
                printf("# link %s followed %s src %s\n", lnk, lnkf, src);
                goto out;
        }
        if (strcmp(none, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
                goto out;
        /* Stable: the same again. */
        char again[72];
        if (checksum(c, "src", false, inc, 1, NULL, 0, again) < 0 || strcmp(again, go1))
                goto out;
        c = kiln_source_local_context_unref(c);

        /* README and y.txt change: "*.go" of src, x.txt and src without
         * README keep their keys; "*.txt" and the whole of src change. */
        e[3].size = 2;
        e[5].mtime_ns = T0 + 5;
        struct tar_item t2[] = { FILE_ITEM("src/README", "rr"), FILE_ITEM("y.txt", "Y") };
        r = transfer(&f, "sel", e, ELEMENTSOF(e), NULL, 0, t2, ELEMENTSOF(t2), &c2, &err);
        ASSERT_NO_ERR(r, err);
        char go2[72], txt2[72], x2[72], readme2[72], src2[72];
        if (checksum(c2, "src", false, inc, 1, NULL, 0, go2) < 0 ||
            checksum(c2, "*.txt", true, NULL, 0, NULL, 0, txt2) < 0 ||
            checksum(c2, "x.txt", false, NULL, 0, NULL, 0, x2) < 0 ||
            checksum(c2, "src", false, NULL, 0, exc, 1, readme2) < 0 ||
            checksum(c2, "src", false, NULL, 0, NULL, 0, src2) < 0)
                goto out;
        if (strcmp(go1, go2) || strcmp(x1, x2) || strcmp(readme1, readme2) || !strcmp(txt1, txt2) ||
            !strcmp(src, src2)) {
                printf("# go %d x %d readme %d txt %d src %d\n", !strcmp(go1, go2), !strcmp(x1, x2),
                       !strcmp(readme1, readme2), !strcmp(txt1, txt2), !strcmp(src, src2));
                goto out;
        }
        rc = 0;
out:
        kiln_source_local_context_unref(c);
        kiln_source_local_context_unref(c2);
        kiln_error_free(err);
        fixture_done(&f);
        return rc;
}

TEST(index_survives_reopen)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_error *err = NULL;
        struct kiln_source_local_context *c = NULL;
        struct kiln_source_local_transfer *t = NULL;
        struct kiln_source_local_entry e[] = { dir_entry("d"), file_entry("d/f", 4, T0) };
        struct tar_item items[] = { FILE_ITEM("d/f", "data") };
        int r = transfer(&f, "persist", e, ELEMENTSOF(e), NULL, 0, items, 1, &c, &err);
        ASSERT_NO_ERR(r, err);
        char digest[72];
        snprintf(digest, sizeof(digest), "%s", kiln_source_local_digest(c));
        c = kiln_source_local_context_unref(c);

        f.store = kiln_source_local_store_free(f.store);
        r = kiln_source_local_store_open(f.root, &f.store, &err);
        if (r < 0)
                goto out;
        r = kiln_source_local_context_open(f.store, "persist", &c, &err);
        if (r < 0 || strcmp(kiln_source_local_digest(c), digest))
                goto out;
        c = kiln_source_local_context_unref(c);
        r = kiln_source_local_transfer_begin(f.store, "persist", e, ELEMENTSOF(e), &t, &err);
        if (r < 0 || !needed_is(t, NULL, 0))
                goto out;
        /* An unknown key has no context. */
        r = kiln_source_local_context_open(f.store, "other", &c, &err);
        if (r != -ENOENT)
                goto out;
        rc = 0;
out:
        if (rc < 0 && err)
                printf("# %s\n", kiln_error_message(err));
        kiln_source_local_transfer_free(t);
        kiln_source_local_context_unref(c);
        kiln_error_free(err);
        fixture_done(&f);
        return rc;
}

/* A context in use keeps its tree: finish of another transfer of the key
 * waits (here: until cancelled). */
TEST(context_in_use_blocks_finish)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_error *err = NULL;
        struct kiln_source_local_context *c = NULL, *c2 = NULL;
        struct kiln_source_local_transfer *t = NULL;
        struct kiln_source_local_entry e[] = { file_entry("f", 1, T0) };
        struct tar_item items[] = { FILE_ITEM("f", "1") };
        int r = transfer(&f, "busy", e, 1, NULL, 0, items, 1, &c, &err);
        ASSERT_NO_ERR(r, err);

        struct kiln_source_local_entry e2[] = { file_entry("g", 0, T0) };
        r = kiln_source_local_transfer_begin(f.store, "busy", e2, 1, &t, &err);
        if (r < 0)
                goto out;
        atomic_bool cancel = true;
        r = kiln_source_local_transfer_finish(t, &cancel, &c2, &err);
        if (r != -ECANCELED)
                goto out;
        {
                /* The tree was not touched. */
                _cleanup_free_ char *data = read_tree(c, "f");
                if (!data || strcmp(data, "1"))
                        goto out;
        }
        t = kiln_source_local_transfer_free(t);

        /* A transfer that changes nothing does not wait: two builds of one
         * unchanged context run side by side. */
        r = kiln_source_local_transfer_begin(f.store, "busy", e, 1, &t, &err);
        if (r < 0 || !needed_is(t, NULL, 0))
                goto out;
        r = kiln_source_local_transfer_finish(t, &cancel, &c2, &err);
        if (r < 0 || strcmp(kiln_source_local_digest(c), kiln_source_local_digest(c2)))
                goto out;
        rc = 0;
out:
        if (rc < 0 && err)
                printf("# %s\n", kiln_error_message(err));
        kiln_source_local_transfer_free(t);
        kiln_source_local_context_unref(c);
        kiln_source_local_context_unref(c2);
        kiln_error_free(err);
        fixture_done(&f);
        return rc;
}

/* Two transfers of one key begun from the same index: the second to finish
 * must not keep a file the first changed while listing it as unchanged. */
TEST(concurrent_transfer_stale)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_error *err = NULL;
        struct kiln_source_local_context *c = NULL, *c1 = NULL, *c2 = NULL;
        struct kiln_source_local_transfer *t1 = NULL, *t2 = NULL;
        _cleanup_free_ char *tar = kiln_xasprintf("%s/f.tar", f.root);
        struct kiln_source_local_entry e[] = { file_entry("f", 1, T0), file_entry("g", 1, T0) };
        struct tar_item items[] = { FILE_ITEM("f", "1"), FILE_ITEM("g", "2") };
        int r = transfer(&f, "race", e, 2, NULL, 0, items, 2, &c, &err);
        ASSERT_NO_ERR(r, err);
        c = kiln_source_local_context_unref(c);

        struct kiln_source_local_entry e1[] = { file_entry("f", 2, T0 + 1),
                                                file_entry("g", 1, T0) };
        if (kiln_source_local_transfer_begin(f.store, "race", e1, 2, &t1, &err) < 0 ||
            kiln_source_local_transfer_begin(f.store, "race", e, 2, &t2, &err) < 0)
                goto out;
        struct tar_item f2 = FILE_ITEM("f", "22");
        if (make_tar(tar, &f2, 1) < 0)
                goto out;
        {
                _cleanup_close_ int fd = open(tar, O_RDONLY | O_CLOEXEC);
                if (kiln_source_local_transfer_receive_fd(t1, fd, NULL, NULL, &err) < 0 ||
                    kiln_source_local_transfer_finish(t1, NULL, &c1, &err) < 0)
                        goto out;
        }
        c1 = kiln_source_local_context_unref(c1);
        if (make_tar(tar, NULL, 0) < 0)
                goto out;
        {
                _cleanup_close_ int fd = open(tar, O_RDONLY | O_CLOEXEC);
                if (kiln_source_local_transfer_receive_fd(t2, fd, NULL, NULL, &err) < 0)
                        goto out;
        }
        r = kiln_source_local_transfer_finish(t2, NULL, &c2, &err);
        if (r != -ESTALE ||
            strcmp(kiln_error_message(err), "local context: 'f' was changed by another transfer; "
                                            "send the context again"))
                goto out;
        rc = 0;
out:
        if (rc < 0 && err)
                printf("# %s\n", kiln_error_message(err));
        kiln_source_local_transfer_free(t1);
        kiln_source_local_transfer_free(t2);
        kiln_source_local_context_unref(c);
        kiln_source_local_context_unref(c1);
        kiln_source_local_context_unref(c2);
        kiln_error_free(err);
        fixture_done(&f);
        return rc;
}

static ssize_t read_nothing(void *userdata, void *buf, size_t n)
{
        (void) userdata;
        (void) buf;
        (void) n;
        return 0;
}

static ssize_t read_failing(void *userdata, void *buf, size_t n)
{
        (void) userdata;
        (void) buf;
        (void) n;
        return -ECONNRESET;
}

/* An empty body stands for an empty tar (nothing needed); a failing read
 * is reported as such. */
TEST(receive_empty_and_failing)
{
        struct fixture f = { 0 };
        ASSERT_OK(fixture_init(&f));
        int rc = -1;
        struct kiln_error *err = NULL;
        struct kiln_source_local_context *c = NULL;
        struct kiln_source_local_transfer *t = NULL;
        struct kiln_source_local_entry e[] = { dir_entry("d") };
        if (kiln_source_local_transfer_begin(f.store, "empty", e, 1, &t, &err) < 0 ||
            kiln_source_local_transfer_receive(t, read_nothing, NULL, NULL, NULL, &err) < 0 ||
            kiln_source_local_transfer_finish(t, NULL, &c, &err) < 0)
                goto out;
        t = kiln_source_local_transfer_free(t);
        struct kiln_source_local_entry e2[] = { file_entry("f", 1, T0) };
        if (kiln_source_local_transfer_begin(f.store, "empty", e2, 1, &t, &err) < 0)
                goto out;
        int r = kiln_source_local_transfer_receive(t, read_failing, NULL, NULL, NULL, &err);
        if (r != -ECONNRESET ||
            strcmp(kiln_error_message(err), "local context: read: Connection reset by peer"))
                goto out;
        rc = 0;
out:
        if (rc < 0 && err)
                printf("# %s\n", kiln_error_message(err));
        kiln_source_local_transfer_free(t);
        kiln_source_local_context_unref(c);
        kiln_error_free(err);
        fixture_done(&f);
        return rc;
}
