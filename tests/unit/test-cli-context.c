/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "api/api.h"
#include "base/fs.h"
#include "base/pattern.h"
#include "cli/cli.h"
#include "kiln-test.h"

struct tree {
        char dir[64];
        int fd;
};

static int put(int dfd, const char *path, const char *text)
{
        _cleanup_close_ int fd = openat(dfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0)
                return -errno;
        if (write(fd, text, strlen(text)) != (ssize_t) strlen(text))
                return -EIO;
        return 0;
}

/*
 *   Dockerfile  a.txt  link -> dir/b.txt  abs -> /etc/passwd
 *   dir/b.txt  dir/keep.log  dir/sub/c.log
 *   node_modules/x/y.js
 */
static int tree_make(struct tree *t)
{
        snprintf(t->dir, sizeof(t->dir), "/tmp/kiln-test-ctx-XXXXXX");
        if (!mkdtemp(t->dir))
                return -errno;
        t->fd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (t->fd < 0)
                return -errno;
        if (mkdirat(t->fd, "dir", 0755) < 0 || mkdirat(t->fd, "dir/sub", 0755) < 0 ||
            mkdirat(t->fd, "node_modules", 0755) < 0 || mkdirat(t->fd, "node_modules/x", 0755) < 0)
                return -errno;
        if (put(t->fd, "Dockerfile", "FROM scratch\n") < 0 || put(t->fd, "a.txt", "aaaa") < 0 ||
            put(t->fd, "dir/b.txt", "bb") < 0 || put(t->fd, "dir/keep.log", "keep") < 0 ||
            put(t->fd, "dir/sub/c.log", "c") < 0 || put(t->fd, "node_modules/x/y.js", "y") < 0)
                return -EIO;
        if (symlinkat("dir/b.txt", t->fd, "link") < 0 || symlinkat("/etc/passwd", t->fd, "abs") < 0)
                return -errno;
        return 0;
}

static void tree_remove(struct tree *t)
{
        if (t->fd >= 0)
                close(t->fd);
        t->fd = -1;
        if (t->dir[0])
                (void) kiln_rm_rf_at(AT_FDCWD, t->dir, NULL, NULL);
}

/* The paths of a walk, joined with spaces; caller frees. */
static char *walk(struct tree *t, const struct kiln_cli_context_filter *f)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_context_entry *e = NULL;
        struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        size_t n = 0;

        if (kiln_cli_context_walk(t->fd, t->dir, f, &e, &n, &err) < 0) {
                printf("# walk: %s\n", kiln_error_message(err));
                return kiln_xstrdup("(error)");
        }
        for (size_t i = 0; i < n; i++)
                (void) kiln_buf_printf(&b, "%s%s", i ? " " : "", e[i].path);
        kiln_api_context_entries_free(e, n);
        return kiln_buf_steal(&b);
}

TEST(context_walk_everything_sorted)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct tree t = { .fd = -1 };
        struct kiln_cli_context_filter f = { 0 };
        struct kiln_api_context_entry *e = NULL;
        size_t n = 0;
        struct stat st;
        int r = -1;

        ASSERT_OK(tree_make(&t));
        if (kiln_cli_context_walk(t.fd, t.dir, &f, &e, &n, &err) < 0)
                goto out;
        /* strcmp order, directories listed */
        if (n != 12)
                goto out;
        {
                static const char *const want[] = {
                        "Dockerfile",   "a.txt",          "abs",
                        "dir",          "dir/b.txt",      "dir/keep.log",
                        "dir/sub",      "dir/sub/c.log",  "link",
                        "node_modules", "node_modules/x", "node_modules/x/y.js",
                };

                for (size_t i = 0; i < n; i++)
                        if (!streq(e[i].path, want[i])) {
                                printf("# entry %zu: %s != %s\n", i, e[i].path, want[i]);
                                goto out;
                        }
        }
        /* links are recorded, not followed */
        if (!S_ISLNK(e[8].mode) || !e[8].link || !streq(e[8].link, "dir/b.txt") ||
            !S_ISLNK(e[2].mode) || !streq(e[2].link, "/etc/passwd"))
                goto out;
        if (!S_ISDIR(e[3].mode) || e[3].link)
                goto out;
        /* lstat metadata */
        if (fstatat(t.fd, "a.txt", &st, 0) < 0 || !S_ISREG(e[1].mode) || e[1].size != 4 ||
            e[1].mtime_ns != (int64_t) st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec ||
            e[1].uid != st.st_uid || e[1].gid != st.st_gid || (e[1].mode & 0777) != 0644)
                goto out;
        r = 0;
out:
        if (e)
                kiln_api_context_entries_free(e, n);
        tree_remove(&t);
        ASSERT_OK(r);
        return 0;
}

TEST(context_walk_dockerignore_exceptions)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct tree t = { .fd = -1 };
        _cleanup_free_ char *text = NULL, *got = NULL;
        char **pats = NULL;
        size_t n_pats = 0;
        struct kiln_cli_context_filter f = { 0 };

        ASSERT_OK(tree_make(&t));
        ASSERT_OK(put(t.fd, ".dockerignore",
                      "# build junk\n**/*.log\n!dir/keep.log\nnode_modules\n/abs\n"));
        ASSERT_EQ_INT(kiln_cli_context_dockerignore(t.fd, t.dir, NULL, &text, &err), 1);
        ASSERT_OK(kiln_pattern_read_ignorefile(text, strlen(text), &pats, &n_pats, &err));
        f.ignore = (const char *const *) pats;
        f.n_ignore = n_pats;
        got = walk(&t, &f);
        kiln_pattern_strv_free(pats);
        tree_remove(&t);
        /* the exception brings dir/keep.log back; node_modules is not
         * entered at all */
        ASSERT_STREQ(got, ".dockerignore Dockerfile a.txt dir dir/b.txt dir/keep.log dir/sub link");
        return 0;
}

TEST(context_dockerignore_beside_dockerfile)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct tree t = { .fd = -1 };
        _cleanup_free_ char *text = NULL, *df = NULL;
        int r;

        ASSERT_OK(tree_make(&t));
        ASSERT_OK(put(t.fd, ".dockerignore", "context-wide\n"));
        ASSERT_OK(put(t.fd, "dir/app.Dockerfile", "FROM scratch\n"));
        ASSERT_OK(put(t.fd, "dir/app.Dockerfile.dockerignore", "beside\n"));
        df = kiln_xasprintf("%s/dir/app.Dockerfile", t.dir);
        r = kiln_cli_context_dockerignore(t.fd, t.dir, df, &text, &err);
        if (r == 1 && streq(text, "beside\n")) {
                free(text);
                text = NULL;
                /* without one beside it, the context's */
                free(df);
                df = kiln_xasprintf("%s/Dockerfile", t.dir);
                r = kiln_cli_context_dockerignore(t.fd, t.dir, df, &text, &err);
                if (r == 1 && streq(text, "context-wide\n")) {
                        free(text);
                        text = NULL;
                        (void) unlinkat(t.fd, ".dockerignore", 0);
                        r = kiln_cli_context_dockerignore(t.fd, t.dir, NULL, &text, &err) == 0 &&
                                            !text
                                    ? 0
                                    : -1;
                } else
                        r = -1;
        } else
                r = -1;
        tree_remove(&t);
        ASSERT_OK(r);
        return 0;
}

TEST(context_walk_include_and_follow_paths)
{
        struct tree t = { .fd = -1 };
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        const char *inc[] = { "dir/sub" };
        const char *follow[] = { "link" };
        const char *wild[] = { "node_modules/*/y.js" };
        const char *exc[] = { "**/*.log" };
        struct kiln_cli_context_filter f = { .include = inc, .n_include = 1 };

        ASSERT_OK(tree_make(&t));
        /* parents of an included path are listed */
        a = walk(&t, &f);
        /* a follow path that is a link brings its target along */
        f = (struct kiln_cli_context_filter){ .follow_paths = follow, .n_follow_paths = 1 };
        b = walk(&t, &f);
        /* wildcards in include patterns */
        f = (struct kiln_cli_context_filter){ .include = wild, .n_include = 1 };
        c = walk(&t, &f);
        /* include and exclude together */
        f = (struct kiln_cli_context_filter){
                .include = (const char *[]){ "dir" }, .n_include = 1, .exclude = exc, .n_exclude = 1
        };
        d = walk(&t, &f);
        tree_remove(&t);
        ASSERT_STREQ(a, "dir dir/sub dir/sub/c.log");
        ASSERT_STREQ(b, "dir dir/b.txt link");
        ASSERT_STREQ(c, "node_modules node_modules/x node_modules/x/y.js");
        ASSERT_STREQ(d, "dir dir/b.txt dir/sub");
        return 0;
}

/* Reads the whole tar of the given paths back: "name:size:content;..." */
static int tar_of(struct tree *t, const char *const *paths, size_t n, char **ret,
                  struct kiln_error **err)
{
        struct kiln_api_context_entry *e = NULL;
        size_t n_e = 0;
        struct kiln_cli_context_filter f = { 0 };
        _cleanup_(kiln_cli_context_tar_freep) struct kiln_cli_context_tar *tar = NULL;
        struct kiln_buf all = KILN_BUF_INIT(1u << 20), out = KILN_BUF_INIT(1u << 20);
        struct archive *a = NULL;
        struct archive_entry *ae;
        char buf[7]; /* small reads: every boundary is crossed */
        ssize_t k;
        int r;

        r = kiln_cli_context_walk(t->fd, t->dir, &f, &e, &n_e, err);
        if (r < 0)
                return r;
        r = kiln_cli_context_tar_new(t->fd, t->dir, e, n_e, paths, n, NULL, &tar, err);
        if (r < 0)
                goto out;
        while ((k = kiln_cli_context_tar_read(tar, buf, sizeof(buf), err)) > 0)
                (void) kiln_buf_append(&all, buf, (size_t) k);
        if (k < 0) {
                r = (int) k;
                goto out;
        }
        a = archive_read_new();
        archive_read_support_format_tar(a);
        if (archive_read_open_memory(a, all.data, all.len) != ARCHIVE_OK) {
                r = kiln_error_set(err, -EIO, "bad tar");
                goto out;
        }
        while (archive_read_next_header(a, &ae) == ARCHIVE_OK) {
                char data[64] = "";
                la_ssize_t got = archive_read_data(a, data, sizeof(data) - 1);

                (void) kiln_buf_printf(&out, "%s:%jd:%s;", archive_entry_pathname(ae),
                                       (intmax_t) archive_entry_size(ae), got > 0 ? data : "");
        }
        *ret = kiln_buf_steal(&out);
        r = 0;
out:
        if (a)
                archive_read_free(a);
        kiln_buf_release(&all);
        kiln_buf_release(&out);
        kiln_api_context_entries_free(e, n_e);
        return r;
}

TEST(context_tar_stream)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct tree t = { .fd = -1 };
        _cleanup_free_ char *got = NULL, *empty = NULL;
        const char *paths[] = { "a.txt", "dir/sub/c.log" };
        const char *bad[] = { "link" };
        int r1, r2, r3;

        ASSERT_OK(tree_make(&t));
        r1 = tar_of(&t, paths, 2, &got, &err);
        /* nothing needed: an empty, valid tar */
        r2 = r1 < 0 ? r1 : tar_of(&t, NULL, 0, &empty, &err);
        /* a link is not a file the daemon may ask for */
        r3 = r2 < 0 ? r2 : tar_of(&t, bad, 1, &empty, &err);
        tree_remove(&t);
        ASSERT_OK(r1);
        ASSERT_OK(r2);
        ASSERT_STREQ(got, "a.txt:4:aaaa;dir/sub/c.log:1:c;");
        ASSERT_EQ_INT(r3, -EINVAL);
        return 0;
}

TEST(context_tar_file_shrunk)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct tree t = { .fd = -1 };
        struct kiln_api_context_entry *e = NULL;
        size_t n_e = 0;
        struct kiln_cli_context_filter f = { 0 };
        _cleanup_(kiln_cli_context_tar_freep) struct kiln_cli_context_tar *tar = NULL;
        const char *paths[] = { "a.txt" };
        char buf[4096];
        ssize_t k = 0;

        ASSERT_OK(tree_make(&t));
        ASSERT_OK(kiln_cli_context_walk(t.fd, t.dir, &f, &e, &n_e, &err));
        ASSERT_OK(put(t.fd, "a.txt", "a")); /* shorter than listed */
        ASSERT_OK(kiln_cli_context_tar_new(t.fd, t.dir, e, n_e, paths, 1, NULL, &tar, &err));
        while ((k = kiln_cli_context_tar_read(tar, buf, sizeof(buf), &err)) > 0)
                ;
        kiln_api_context_entries_free(e, n_e);
        tree_remove(&t);
        ASSERT_EQ_INT(k, -EIO);
        ASSERT_TRUE(strstr(kiln_error_message(err), "changed while it was sent"));
        return 0;
}
