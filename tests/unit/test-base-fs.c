/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

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
