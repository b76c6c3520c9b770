/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/fs.h"
#include "kiln-test.h"

static char *tmpdir(void)
{
        char *d = kiln_xstrdup("/tmp/kiln-test-fs-XXXXXX");

        return mkdtemp(d) ? d : NULL;
}

static size_t count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t n = 0;

        while (d && (e = readdir(d)))
                if (!streq(e->d_name, ".") && !streq(e->d_name, ".."))
                        n++;
        if (d)
                closedir(d);
        return n;
}

TEST(write_atomic_replaces_and_sets_mode)
{
        _cleanup_free_ char *dir = tmpdir(), *path = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64);
        struct stat st;

        ASSERT_TRUE(dir);
        path = kiln_xasprintf("%s/f", dir);
        ASSERT_OK(kiln_write_file_atomic(path, "old", 3, 0644));
        ASSERT_OK(kiln_write_file_atomic(path, "new!", 4, 0600));
        ASSERT_OK(kiln_read_file_at(AT_FDCWD, path, &b));
        ASSERT_STREQ(b.data, "new!");
        ASSERT_OK(stat(path, &st));
        ASSERT_EQ_INT(st.st_mode & 07777, 0600);
        ASSERT_EQ_INT(count_entries(dir), 1); /* no temporary file left */
        (void) unlink(path);
        (void) rmdir(dir);
        return 0;
}

TEST(write_atomic_never_writes_through_a_symlink)
{
        _cleanup_free_ char *dir = tmpdir(), *path = NULL, *victim = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64);
        struct stat st;

        ASSERT_TRUE(dir);
        path = kiln_xasprintf("%s/f", dir);
        victim = kiln_xasprintf("%s/victim", dir);
        ASSERT_OK(kiln_write_file_atomic(victim, "keep", 4, 0644));
        ASSERT_OK(symlink(victim, path));
        ASSERT_OK(kiln_write_file_atomic(path, "data", 4, 0644));
        ASSERT_OK(lstat(path, &st));
        ASSERT_TRUE(S_ISREG(st.st_mode));
        ASSERT_OK(kiln_read_file_at(AT_FDCWD, victim, &b));
        ASSERT_STREQ(b.data, "keep");
        (void) unlink(path);
        (void) unlink(victim);
        (void) rmdir(dir);
        return 0;
}

TEST(read_file_limit)
{
        _cleanup_free_ char *dir = tmpdir(), *path = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf small = KILN_BUF_INIT(3);
        _cleanup_(kiln_buf_release) struct kiln_buf empty = KILN_BUF_INIT(3);

        ASSERT_TRUE(dir);
        path = kiln_xasprintf("%s/f", dir);
        ASSERT_OK(kiln_write_file_atomic(path, "four", 4, 0644));
        ASSERT_EQ_INT(kiln_read_file_at(AT_FDCWD, path, &small), -E2BIG);
        ASSERT_EQ_INT(kiln_read_file_at(AT_FDCWD, "/nonexistent/x", &empty), -ENOENT);
        ASSERT_EQ_INT(kiln_read_file_at(AT_FDCWD, dir, &empty), -EISDIR);
        (void) unlink(path);
        (void) rmdir(dir);
        return 0;
}

TEST(read_file_refuses_what_is_not_a_regular_file_without_blocking)
{
        _cleanup_free_ char *dir = tmpdir(), *fifo = NULL, *link = NULL, *file = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64);
        char buf[64];

        ASSERT_TRUE(dir);
        fifo = kiln_xasprintf("%s/fifo", dir);
        file = kiln_xasprintf("%s/file", dir);
        link = kiln_xasprintf("%s/link", dir);
        ASSERT_OK(mkfifo(fifo, 0600));
        /* Nobody writes to it: an open without O_NONBLOCK never returns. */
        ASSERT_EQ_INT(kiln_read_file_at(AT_FDCWD, fifo, &b), -EINVAL);
        ASSERT_EQ_INT(kiln_read_file_at(AT_FDCWD, "/dev/null", &b), -EINVAL);
        ASSERT_STREQ(kiln_read_file_strerror(-EINVAL, 64, buf), "not a regular file");
        ASSERT_STREQ(kiln_read_file_strerror(-E2BIG, 64, buf), "larger than 64 bytes");
        ASSERT_STREQ(kiln_read_file_strerror(-ENOENT, 64, buf), strerror(ENOENT));

        /* A link is followed, unless O_NOFOLLOW says not to. */
        ASSERT_OK(kiln_write_file_atomic(file, "data", 4, 0600));
        ASSERT_OK(symlink(file, link));
        ASSERT_OK(kiln_read_file_at(AT_FDCWD, link, &b));
        ASSERT_STREQ(b.data, "data");
        ASSERT_EQ_INT(kiln_read_file_at_flags(AT_FDCWD, link, O_NOFOLLOW, &b), -ELOOP);
        /* The contents are replaced, not appended to. */
        ASSERT_OK(kiln_read_file_at_flags(AT_FDCWD, file, O_NOFOLLOW, &b));
        ASSERT_STREQ(b.data, "data");
        ASSERT_EQ_INT(b.len, 4);
        (void) unlink(link);
        (void) unlink(file);
        (void) unlink(fifo);
        (void) rmdir(dir);
        return 0;
}

TEST(path_absolute)
{
        _cleanup_free_ char *cwd = getcwd(NULL, 0), *a = NULL, *b = NULL, *c = NULL, *want = NULL;

        ASSERT_TRUE(cwd);
        ASSERT_OK(kiln_path_absolute("/etc//", &a));
        ASSERT_STREQ(a, "/etc");
        ASSERT_OK(kiln_path_absolute("/", &b));
        ASSERT_STREQ(b, "/");
        ASSERT_OK(kiln_path_absolute("x/y/", &c));
        want = kiln_xasprintf("%s/x/y", streq(cwd, "/") ? "" : cwd);
        ASSERT_STREQ(c, want);
        return 0;
}

/* dir/{a/{b/f, link -> outside}, keep/g, top-file}; outside/secret. */
static int make_tree(const char *dir, const char *outside)
{
        _cleanup_free_ char *a = kiln_xasprintf("%s/a", dir), *ab = kiln_xasprintf("%s/a/b", dir),
                            *f = kiln_xasprintf("%s/a/b/f", dir),
                            *link = kiln_xasprintf("%s/a/link", dir),
                            *keep = kiln_xasprintf("%s/keep", dir),
                            *g = kiln_xasprintf("%s/keep/g", dir),
                            *top = kiln_xasprintf("%s/top-file", dir),
                            *secret = kiln_xasprintf("%s/secret", outside);

        if (mkdir(a, 0700) < 0 || mkdir(ab, 0700) < 0 || mkdir(keep, 0700) < 0 ||
            mkdir(outside, 0700) < 0)
                return -errno;
        if (kiln_write_file_atomic(f, "f", 1, 0600) < 0 ||
            kiln_write_file_atomic(g, "g", 1, 0600) < 0 ||
            kiln_write_file_atomic(top, "t", 1, 0600) < 0 ||
            kiln_write_file_atomic(secret, "s", 1, 0600) < 0)
                return -EIO;
        if (symlink(outside, link) < 0)
                return -errno;
        return 0;
}

TEST(rm_rf_never_follows_links_and_keeps_what_it_is_told)
{
        _cleanup_free_ char *base = tmpdir(), *dir = NULL, *outside = NULL, *secret = NULL,
                            *g = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct stat st;

        ASSERT_TRUE(base);
        dir = kiln_xasprintf("%s/dir", base);
        outside = kiln_xasprintf("%s/outside", base);
        secret = kiln_xasprintf("%s/secret", outside);
        g = kiln_xasprintf("%s/keep/g", dir);
        ASSERT_OK(mkdir(dir, 0700));
        ASSERT_OK(make_tree(dir, outside));

        ASSERT_OK(kiln_rm_rf_at(AT_FDCWD, dir, "keep", &err));
        ASSERT_EQ_INT(count_entries(dir), 1);
        ASSERT_OK(stat(g, &st));
        ASSERT_OK(stat(secret, &st)); /* behind the link: untouched */

        ASSERT_OK(kiln_rm_rf_at(AT_FDCWD, dir, NULL, &err));
        ASSERT_EQ_INT(lstat(dir, &st), -1);
        ASSERT_OK(stat(secret, &st));
        /* Gone already: fine. Relative to a directory fd too. */
        ASSERT_OK(kiln_rm_rf_at(AT_FDCWD, dir, NULL, &err));
        {
                _cleanup_close_ int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

                ASSERT_TRUE(bfd >= 0);
                ASSERT_OK(kiln_rm_rf_at(bfd, "outside", NULL, &err));
        }
        ASSERT_EQ_INT(count_entries(base), 0);
        ASSERT_OK(rmdir(base));
        return 0;
}

/* In a mount namespace of its own: a tmpfs below the tree is not entered. */
static int rm_rf_mount_child(const char *base)
{
        _cleanup_free_ char *mnt = kiln_xasprintf("%s/tree/sub/mnt", base),
                            *sub = kiln_xasprintf("%s/tree/sub", base),
                            *tree = kiln_xasprintf("%s/tree", base),
                            *inside = kiln_xasprintf("%s/tree/sub/mnt/data", base),
                            *beside = kiln_xasprintf("%s/tree/beside", base);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct stat st;
        int r;

        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return KILN_TEST_SKIP;
        if (mkdir(tree, 0700) < 0 || mkdir(sub, 0700) < 0 || mkdir(mnt, 0700) < 0)
                return 1;
        if (mount("kiln-test", mnt, "tmpfs", 0, NULL) < 0)
                return KILN_TEST_SKIP;
        if (kiln_write_file_atomic(inside, "x", 1, 0600) < 0 ||
            kiln_write_file_atomic(beside, "x", 1, 0600) < 0)
                return 2;
        r = kiln_rm_rf_at(AT_FDCWD, tree, NULL, &err);
        if (r != -EBUSY || !strstr(kiln_error_message(err), "a file system is mounted there"))
                return 3;
        if (stat(inside, &st) < 0)
                return 4; /* the mount's contents are there */
        (void) umount(mnt);
        return kiln_rm_rf_at(AT_FDCWD, tree, NULL, NULL) < 0 ? 5 : 0;
}

TEST(rm_rf_does_not_cross_into_another_file_system)
{
        _cleanup_free_ char *base = tmpdir();
        int status;
        pid_t pid;

        ASSERT_TRUE(base);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0)
                _exit(rm_rf_mount_child(base));
        ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        (void) rmdir(base);
        if (WEXITSTATUS(status) == KILN_TEST_SKIP) {
                printf("# needs a mount namespace (root or CAP_SYS_ADMIN)\n");
                return KILN_TEST_SKIP;
        }
        ASSERT_EQ_INT(WEXITSTATUS(status), 0);
        return 0;
}

TEST(tmp_name_is_ours_matches_this_process_only)
{
        _cleanup_free_ char *ours = kiln_xasprintf(".removing-cache-%ld-7", (long) getpid());
        _cleanup_free_ char *other = kiln_xasprintf(".removing-cache-%ld-7", (long) getpid() + 1);
        _cleanup_free_ char *prefix = kiln_xasprintf(".removing-cache-1%ld-7", (long) getpid());
        _cleanup_free_ char *bare = kiln_xasprintf("%ld-7", (long) getpid());

        ASSERT_TRUE(kiln_tmp_name_is_ours(ours));
        ASSERT_TRUE(!kiln_tmp_name_is_ours(other));
        ASSERT_TRUE(!kiln_tmp_name_is_ours(prefix));
        ASSERT_TRUE(!kiln_tmp_name_is_ours(bare)); /* no '-' before the pid */
        ASSERT_TRUE(!kiln_tmp_name_is_ours("no-dashes"));
        ASSERT_TRUE(!kiln_tmp_name_is_ours(""));
        return 0;
}
