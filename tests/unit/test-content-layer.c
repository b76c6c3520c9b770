/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <locale.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "base/fs.h"
#include "base/sha256.h"
#include "content/content.h"
#include "content/layer.h"
#include "kiln-test.h"

/* ---- building layers ---- */

enum { PLAIN, GZIP, ZSTD };

struct ent {
        const char *path;
        mode_t type; /* 0: regular file */
        unsigned perm;
        const char *data;
        const char *link;     /* symlink target */
        const char *hardlink; /* hard link target */
        unsigned uid, gid;
        int64_t mtime;
        const char *xname, *xvalue;
        unsigned major, minor;
};

/* A memfd holding the layer, positioned at its start; -1 on failure. */
static int make_layer(int filter, const struct ent *ents, size_t n)
{
        struct archive *a = archive_write_new();
        int fd = memfd_create("layer", MFD_CLOEXEC);
        size_t i;
        int r = 0;

        if (!a || fd < 0)
                goto fail;
        /* Names are written as Go does, UTF-8 in pax records; the apply
         * then runs in the C locale, as kilnd does. */
        (void) setlocale(LC_CTYPE, "C.UTF-8");
        r |= archive_write_set_format_pax_restricted(a);
        if (filter == GZIP)
                r |= archive_write_add_filter_gzip(a);
        else if (filter == ZSTD)
                r |= archive_write_add_filter_zstd(a);
        r |= archive_write_open_fd(a, fd);
        if (r != ARCHIVE_OK)
                goto fail;
        for (i = 0; i < n; i++) {
                const struct ent *x = &ents[i];
                struct archive_entry *e = archive_entry_new();
                size_t len = x->data ? strlen(x->data) : 0;

                archive_entry_set_pathname(e, x->path);
                archive_entry_set_filetype(e, x->type ? x->type : AE_IFREG);
                archive_entry_set_perm(e, x->perm ? x->perm : (x->type == AE_IFDIR ? 0755 : 0644));
                archive_entry_set_uid(e, x->uid);
                archive_entry_set_gid(e, x->gid);
                archive_entry_set_mtime(e, x->mtime ? x->mtime : 1700000000, 0);
                if (x->link)
                        archive_entry_set_symlink(e, x->link);
                if (x->hardlink) {
                        archive_entry_set_hardlink(e, x->hardlink);
                        len = 0;
                }
                if (x->xname)
                        archive_entry_xattr_add_entry(e, x->xname, x->xvalue, strlen(x->xvalue));
                if (x->major || x->minor)
                        archive_entry_set_rdev(e, makedev(x->major, x->minor));
                archive_entry_set_size(e, (!x->type || x->type == AE_IFREG) ? (la_int64_t) len : 0);
                r = archive_write_header(a, e);
                if (r == ARCHIVE_OK && len)
                        r = archive_write_data(a, x->data, len) == (la_ssize_t) len ? ARCHIVE_OK
                                                                                    : ARCHIVE_FATAL;
                archive_entry_free(e);
                if (r != ARCHIVE_OK) {
                        printf("# write %s: %s\n", x->path, archive_error_string(a));
                        goto fail;
                }
        }
        if (archive_write_close(a) != ARCHIVE_OK)
                goto fail;
        (void) setlocale(LC_CTYPE, "C");
        archive_write_free(a);
        (void) lseek(fd, 0, SEEK_SET);
        return fd;
fail:
        (void) setlocale(LC_CTYPE, "C");
        if (a)
                archive_write_free(a);
        if (fd >= 0)
                close(fd);
        return -1;
}

static int memfd_of(const void *p, size_t n)
{
        int fd = memfd_create("blob", MFD_CLOEXEC);

        if (fd < 0 || write(fd, p, n) != (ssize_t) n) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        (void) lseek(fd, 0, SEEK_SET);
        return fd;
}

/* ---- trees ---- */

/* <dir>/root is the tree; <dir>/sentinel is beside it, holding "keep". */
struct tree {
        char *dir;
        char *root;
        char *sentinel;
        int root_fd;
};

static void tree_release(struct tree *t)
{
        if (t->root_fd >= 0)
                close(t->root_fd);
        if (t->dir)
                (void) kiln_rm_rf_at(AT_FDCWD, t->dir, NULL, NULL);
        free(t->dir);
        free(t->root);
        free(t->sentinel);
}

static int tree_init(struct tree *t)
{
        _cleanup_free_ char *keep = NULL;
        int fd;

        t->root_fd = -1;
        t->dir = kiln_xstrdup("/tmp/kiln-test-layer-XXXXXX");
        if (!mkdtemp(t->dir)) {
                free(t->dir);
                t->dir = NULL;
                return -errno;
        }
        t->root = kiln_xasprintf("%s/root", t->dir);
        t->sentinel = kiln_xasprintf("%s/sentinel", t->dir);
        if (mkdir(t->root, 0755) < 0 || mkdir(t->sentinel, 0755) < 0)
                return -errno;
        keep = kiln_xasprintf("%s/keep", t->sentinel);
        fd = openat(AT_FDCWD, keep, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, 0644) < 0 || write(fd, "keep", 4) != 4) {
                close(fd);
                return -EIO;
        }
        close(fd);
        t->root_fd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return t->root_fd < 0 ? -errno : 0;
}

/* clang-format off */
#define TREE_INIT { .root_fd = -1 }
/* clang-format on */

static size_t count_dir(const char *dir);

static size_t open_fds(void)
{
        return count_dir("/proc/self/fd");
}

static bool root_or_skip(void)
{
        if (geteuid() == 0)
                return true;
        printf("# skipped: needs root (owners, devices, trusted xattrs)\n");
        return false;
}

static size_t count_dir(const char *dir)
{
        int n = kiln_test_count_entries(dir);

        return n > 0 ? (size_t) n : 0;
}

/* The sentinel holds exactly its "keep" file, and the parent only root and
 * sentinel. */
static bool sentinel_intact(const struct tree *t)
{
        _cleanup_free_ char *keep = kiln_xasprintf("%s/keep", t->sentinel);
        char buf[16] = { 0 };
        struct stat st;
        int fd;
        ssize_t n;

        if (count_dir(t->dir) != 2 || count_dir(t->sentinel) != 1)
                return false;
        if (lstat(keep, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
            (st.st_mode & 07777) != 0644 || st.st_uid != 0)
                return false;
        fd = open(keep, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        return n == 4 && streq(buf, "keep");
}

static char *read_in(const struct tree *t, const char *path)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        char *s;

        if (kiln_read_file_at_flags(t->root_fd, path, O_NOFOLLOW, &b) < 0)
                return NULL;
        s = kiln_xmalloc(b.len + 1);
        memcpy(s, b.data, b.len);
        s[b.len] = '\0';
        return s;
}

static bool has_content(const struct tree *t, const char *path, const char *want)
{
        _cleanup_free_ char *got = read_in(t, path);

        if (!got)
                printf("# %s: missing\n", path);
        else if (!streq(got, want))
                printf("# %s: \"%s\" != \"%s\"\n", path, got, want);
        return got && streq(got, want);
}

static bool exists_in(const struct tree *t, const char *path)
{
        struct stat st;

        return fstatat(t->root_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int apply_ents(struct tree *t, int filter, const char *mt, const struct ent *ents, size_t n,
                      const struct kiln_content_layer_options *o,
                      struct kiln_content_layer_stats *st, char **msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int fd = make_layer(filter, ents, n), r;

        if (fd < 0)
                return -EIO;
        r = kiln_content_layer_apply(fd, mt, t->root_fd, o, st, &err);
        close(fd);
        if (msg)
                *msg = err ? kiln_xstrdup(kiln_error_message(err)) : NULL;
        else if (r < 0)
                printf("# apply: %s\n", kiln_error_message(err));
        return r;
}

/* The bytes of a layer made by make_layer, appended to out. */
static int layer_bytes(int filter, const struct ent *ents, size_t n, struct kiln_buf *out)
{
        int fd = make_layer(filter, ents, n), r = 0;
        struct stat sb;
        char *p;

        if (fd < 0 || fstat(fd, &sb) < 0) {
                if (fd >= 0)
                        close(fd);
                return -EIO;
        }
        p = kiln_xmalloc((size_t) sb.st_size + 1);
        if (pread(fd, p, (size_t) sb.st_size, 0) != sb.st_size)
                r = -EIO;
        else
                r = kiln_buf_append(out, p, (size_t) sb.st_size);
        free(p);
        close(fd);
        return r;
}

/* Appends one gzip member holding p[0, n) to out. */
static int gzip_member(const void *p, size_t n, struct kiln_buf *out)
{
        size_t cap = n + n / 8 + 1024;
        _cleanup_free_ uint8_t *z = kiln_xmalloc(cap);
        struct isal_zstream st;

        isal_deflate_init(&st);
        st.gzip_flag = IGZIP_GZIP;
        st.end_of_stream = 1;
        st.flush = NO_FLUSH;
        st.next_in = (uint8_t *) p;
        st.avail_in = (uint32_t) n;
        st.next_out = z;
        st.avail_out = (uint32_t) cap;
        if (isal_deflate_stateless(&st) != COMP_OK)
                return -EIO;
        return kiln_buf_append(out, z, st.total_out);
}

/* Applies blob[0, n) as a layer of media type mt; the error's message in
 * *msg (NULL on success). */
static int apply_blob(struct tree *t, const void *blob, size_t n, const char *mt,
                      const struct kiln_content_layer_options *o,
                      struct kiln_content_layer_stats *st, char **msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int fd = memfd_of(blob, n), r;

        if (fd < 0)
                return -EIO;
        r = kiln_content_layer_apply(fd, mt, t->root_fd, o, st, &err);
        close(fd);
        *msg = err ? kiln_xstrdup(kiln_error_message(err)) : NULL;
        if (*msg)
                printf("# %s\n", *msg);
        return r;
}

/* Incompressible text, NUL-free: its gzip is larger than the input. */
static char *noise(size_t n)
{
        char *p = kiln_xmalloc(n + 1);
        uint64_t x = 0x9e3779b97f4a7c15ull;

        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p[i] = (char) (1 + x % 255);
        }
        p[n] = '\0';
        return p;
}

static const struct ent base_layer[] = {
        { .path = "etc/", .type = AE_IFDIR, .mtime = 1600000000 },
        { .path = "etc/hostname", .data = "kiln\n" },
        { .path = "./usr/bin/", .type = AE_IFDIR },
        { .path = "usr/bin/tool", .data = "#!/bin/sh\n", .perm = 0755 },
        { .path = "usr/bin/alias", .hardlink = "usr/bin/tool", .perm = 0755 },
        { .path = "bin", .type = AE_IFLNK, .link = "usr/bin" },
        { .path = "/abs/file", .data = "abs" },
        { .path = "usr/share/F\xc5\x91tan\xc3\xba.pem", .data = "utf8" },
};

/* ---- tests ---- */

TEST(plain_gzip_zstd_layers_unpack)
{
        static const struct {
                int filter;
                const char *mt;
        } cases[] = {
                { PLAIN, KILN_CONTENT_MT_OCI_LAYER },
                { GZIP, KILN_CONTENT_MT_OCI_LAYER_GZIP },
                { ZSTD, KILN_CONTENT_MT_OCI_LAYER_ZSTD },
                { GZIP, KILN_CONTENT_MT_DOCKER_LAYER_GZIP },
                { GZIP, KILN_CONTENT_MT_DOCKER_LAYER }, /* sniffed */
                { ZSTD, NULL },                         /* sniffed */
                { PLAIN, NULL },
        };

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(tree_release) struct tree t = TREE_INIT;
                struct kiln_content_layer_stats st;
                struct stat a, b;
                char target[64] = { 0 };

                ASSERT_OK(tree_init(&t));
                ASSERT_OK(apply_ents(&t, cases[i].filter, cases[i].mt, base_layer,
                                     ELEMENTSOF(base_layer), NULL, &st, NULL));
                ASSERT_EQ_INT(st.entries, ELEMENTSOF(base_layer));
                ASSERT_EQ_INT(st.bytes, 5 + 10 + 3 + 4);
                ASSERT_STREQ(st.diff_id, "");
                ASSERT_TRUE(has_content(&t, "etc/hostname", "kiln\n"));
                ASSERT_TRUE(has_content(&t, "usr/bin/alias", "#!/bin/sh\n"));
                ASSERT_TRUE(has_content(&t, "abs/file", "abs"));
                /* Non-ASCII names keep their bytes, whatever the locale. */
                ASSERT_TRUE(has_content(&t, "usr/share/F\xc5\x91tan\xc3\xba.pem", "utf8"));
                ASSERT_OK(fstatat(t.root_fd, "usr/bin/tool", &a, 0));
                ASSERT_OK(fstatat(t.root_fd, "usr/bin/alias", &b, 0));
                ASSERT_EQ_INT(a.st_ino, b.st_ino);
                ASSERT_EQ_INT(a.st_nlink, 2);
                ASSERT_EQ_INT(a.st_mode & 07777, 0755);
                ASSERT_EQ_INT(readlinkat(t.root_fd, "bin", target, sizeof(target) - 1), 7);
                ASSERT_STREQ(target, "usr/bin");
                /* The directory's mtime survives the files written into it. */
                ASSERT_OK(fstatat(t.root_fd, "etc", &a, 0));
                ASSERT_EQ_INT(a.st_mtim.tv_sec, 1600000000);
                ASSERT_TRUE(sentinel_intact(&t));
        }
        return 0;
}

TEST(diff_id_is_the_uncompressed_digest)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_content_layer_options o = { .want_diff_id = true };
        struct kiln_content_layer_stats st;
        char hex[KILN_SHA256_HEX_LEN + 1], want[80];
        struct stat sb;
        void *plain;
        int pfd, gfd;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        pfd = make_layer(PLAIN, base_layer, ELEMENTSOF(base_layer));
        ASSERT_TRUE(pfd >= 0);
        ASSERT_OK(fstat(pfd, &sb));
        plain = mmap(NULL, (size_t) sb.st_size, PROT_READ, MAP_PRIVATE, pfd, 0);
        close(pfd);
        ASSERT_TRUE(plain != MAP_FAILED);
        kiln_sha256_hex(plain, (size_t) sb.st_size, hex);
        munmap(plain, (size_t) sb.st_size);
        (void) snprintf(want, sizeof(want), "sha256:%s", hex);

        gfd = make_layer(GZIP, base_layer, ELEMENTSOF(base_layer));
        ASSERT_TRUE(gfd >= 0);
        ASSERT_OK(kiln_content_layer_apply(gfd, KILN_CONTENT_MT_OCI_LAYER_GZIP, t.root_fd, &o, &st,
                                           &err));
        ASSERT_STREQ(st.diff_id, want);
        /* The blob fd stays the caller's. */
        ASSERT_OK(fcntl(gfd, F_GETFD));

        /* A config claiming another diff id is refused. */
        o.expect_diff_id =
                "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        ASSERT_OK(lseek(gfd, 0, SEEK_SET));
        ASSERT_EQ_INT(kiln_content_layer_apply(gfd, KILN_CONTENT_MT_OCI_LAYER_GZIP, t.root_fd, &o,
                                               &st, &err),
                      -EBADMSG);
        ASSERT_TRUE(strstr(kiln_error_message(err), "diff id mismatch"));
        o.expect_diff_id = want;
        ASSERT_OK(lseek(gfd, 0, SEEK_SET));
        kiln_error_free(TAKE_PTR(err));
        ASSERT_OK(kiln_content_layer_apply(gfd, KILN_CONTENT_MT_OCI_LAYER_GZIP, t.root_fd, &o, &st,
                                           &err));
        close(gfd);
        return 0;
}

TEST(media_type_selection_and_sniffing)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        static const char text[] = "just some text, not an archive at all\n";
        char *msg = NULL;
        int fd, r;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));

        /* The media type's compression is required. */
        r = apply_ents(&t, GZIP, KILN_CONTENT_MT_OCI_LAYER_ZSTD, base_layer, 2, NULL, NULL, &msg);
        ASSERT_EQ_INT(r, -EBADMSG);
        ASSERT_STREQ(msg, "read layer: not zstd-compressed as its media type says");
        free(TAKE_PTR(msg));
        r = apply_ents(&t, PLAIN, KILN_CONTENT_MT_OCI_LAYER_GZIP, base_layer, 2, NULL, NULL, &msg);
        ASSERT_EQ_INT(r, -EBADMSG);
        ASSERT_STREQ(msg, "read layer: not gzip-compressed as its media type says");
        free(TAKE_PTR(msg));
        ASSERT_TRUE(!exists_in(&t, "etc"));

        /* Not a layer at all. */
        r = apply_ents(&t, PLAIN, KILN_CONTENT_MT_OCI_CONFIG, base_layer, 2, NULL, NULL, &msg);
        ASSERT_EQ_INT(r, -EMEDIUMTYPE);
        ASSERT_STREQ(msg, "unsupported layer media type \"" KILN_CONTENT_MT_OCI_CONFIG "\"");
        free(TAKE_PTR(msg));
        r = apply_ents(&t, GZIP, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                       base_layer, 2, NULL, NULL, &msg);
        ASSERT_EQ_INT(r, -EMEDIUMTYPE);
        free(TAKE_PTR(msg));

        /* Tar-ish types are sniffed. */
        ASSERT_OK(apply_ents(&t, ZSTD, "application/x-tar", base_layer, 2, NULL, NULL, NULL));
        ASSERT_TRUE(has_content(&t, "etc/hostname", "kiln\n"));

        /* Data that is no tar: -EMEDIUMTYPE, nothing written. */
        fd = memfd_of(text, sizeof(text) - 1);
        ASSERT_TRUE(fd >= 0);
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                r = kiln_content_layer_apply(fd, NULL, t.root_fd, NULL, NULL, &err);
                ASSERT_EQ_INT(r, -EMEDIUMTYPE);
                ASSERT_TRUE(startswith(kiln_error_message(err), "read layer: not a tar archive"));
        }
        close(fd);

        /* An empty blob is an empty layer. */
        fd = memfd_of("", 0);
        ASSERT_TRUE(fd >= 0);
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_content_layer_stats st;
                ASSERT_OK(kiln_content_layer_apply(fd, NULL, t.root_fd, NULL, &st, &err));
                ASSERT_EQ_INT(st.entries, 0);
        }
        close(fd);
        ASSERT_EQ_INT(count_dir(t.root), 1);
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(corrupt_gzip_fails_clearly)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        struct ent big[] = { { .path = "big", .data = NULL } };
        _cleanup_free_ char *data = NULL;
        struct stat sb;
        char *blob;
        int fd, cfd;
        size_t i;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        /* Incompressible-ish content so the damage lands in file data. */
        data = kiln_xmalloc(200001);
        for (i = 0; i < 200000; i++)
                data[i] = (char) ('a' + (i * 7919 + i / 13) % 26);
        data[200000] = '\0';
        big[0].data = data;
        fd = make_layer(GZIP, big, 1);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(fstat(fd, &sb));
        blob = kiln_xmalloc((size_t) sb.st_size);
        ASSERT_EQ_INT(pread(fd, blob, (size_t) sb.st_size, 0), sb.st_size);
        close(fd);
        for (i = (size_t) sb.st_size / 2; i < (size_t) sb.st_size / 2 + 64; i++)
                blob[i] ^= 0x5a;
        cfd = memfd_of(blob, (size_t) sb.st_size);
        ASSERT_TRUE(cfd >= 0);
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int r = kiln_content_layer_apply(cfd, KILN_CONTENT_MT_OCI_LAYER_GZIP, t.root_fd,
                                                 NULL, NULL, &err);
                printf("# %s\n", kiln_error_message(err));
                ASSERT_EQ_INT(r, -EBADMSG);
                ASSERT_TRUE(startswith(kiln_error_message(err), "read layer: "));
        }
        close(cfd);

        /* Truncated. */
        cfd = memfd_of(blob, (size_t) sb.st_size / 3);
        free(blob);
        ASSERT_TRUE(cfd >= 0);
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int r = kiln_content_layer_apply(cfd, NULL, t.root_fd, NULL, NULL, &err);
                printf("# %s\n", kiln_error_message(err));
                ASSERT_EQ_INT(r, -EBADMSG);
        }
        close(cfd);
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(multi_member_gzip_is_one_stream)
{
        _cleanup_(kiln_buf_release) struct kiln_buf tar = KILN_BUF_INIT(16u << 20);
        _cleanup_(kiln_buf_release) struct kiln_buf gz = KILN_BUF_INIT(16u << 20);
        _cleanup_free_ char *big = noise(900000);
        struct ent l[ELEMENTSOF(base_layer) + 1];
        char hex[KILN_SHA256_HEX_LEN + 1], want[80];
        size_t cuts[5];
        char *msg = NULL;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        /* Members cut anywhere, one empty; the whole spans several reads. */
        memcpy(l, base_layer, sizeof(base_layer));
        l[ELEMENTSOF(base_layer)] = (struct ent){ .path = "big", .data = big };
        ASSERT_OK(layer_bytes(PLAIN, l, ELEMENTSOF(l), &tar));
        cuts[0] = 0;
        cuts[1] = 700;
        cuts[2] = tar.len / 2 + 3;
        cuts[3] = cuts[2];
        cuts[4] = tar.len;
        for (size_t i = 0; i + 1 < ELEMENTSOF(cuts); i++)
                ASSERT_OK(gzip_member(tar.data + cuts[i], cuts[i + 1] - cuts[i], &gz));
        ASSERT_TRUE(gz.len > 3 * (256u << 10));
        kiln_sha256_hex(tar.data, tar.len, hex);
        (void) snprintf(want, sizeof(want), "sha256:%s", hex);

        for (int sniff = 0; sniff < 2; sniff++) {
                _cleanup_(tree_release) struct tree t = TREE_INIT;
                struct kiln_content_layer_options o = { .want_diff_id = true };
                struct kiln_content_layer_stats st;

                ASSERT_OK(tree_init(&t));
                ASSERT_OK(apply_blob(&t, gz.data, gz.len,
                                     sniff ? NULL : KILN_CONTENT_MT_OCI_LAYER_GZIP, &o, &st, &msg));
                ASSERT_EQ_INT(st.entries, ELEMENTSOF(l));
                ASSERT_STREQ(st.diff_id, want);
                ASSERT_TRUE(has_content(&t, "etc/hostname", "kiln\n"));
                ASSERT_TRUE(has_content(&t, "usr/share/F\xc5\x91tan\xc3\xba.pem", "utf8"));
                ASSERT_TRUE(has_content(&t, "big", big));
                ASSERT_TRUE(sentinel_intact(&t));
        }
        return 0;
}

TEST(gzip_trailer_and_framing_are_checked)
{
        _cleanup_(kiln_buf_release) struct kiln_buf tar = KILN_BUF_INIT(16u << 20);
        _cleanup_(kiln_buf_release) struct kiln_buf one = KILN_BUF_INIT(16u << 20);
        _cleanup_(kiln_buf_release) struct kiln_buf two = KILN_BUF_INIT(16u << 20);
        _cleanup_free_ char *blob = NULL;
        size_t first;
        /* Positions count from the blob's start, or back from its end when
         * negative; in the two-member blob, from the second member's start. */
        enum { FLIP, SET, CUT, APPEND };
        static const struct {
                const char *what;
                int members;
                int op;
                long at;
                int value; /* FLIP: the bits flipped; SET: the new byte */
                const char *append;
                size_t append_len;
                const char *msg;
        } cases[] = {
                { "crc", 1, FLIP, -8, 0x01, NULL, 0, "read layer: gzip: checksum mismatch" },
                { "isize", 1, FLIP, -1, 0x10, NULL, 0, "read layer: gzip: checksum mismatch" },
                { "first member's crc", 2, FLIP, -8, 0x80, NULL, 0,
                  "read layer: gzip: checksum mismatch" },
                { "reserved block type", 1, SET, 10, 0x07, NULL, 0,
                  "read layer: gzip: invalid deflate data" },
                { "cut in the data", 1, CUT, 300, 0, NULL, 0,
                  "read layer: gzip: unexpected end of data" },
                { "cut in the trailer", 1, CUT, -3, 0, NULL, 0,
                  "read layer: gzip: unexpected end of data" },
                { "cut in the second header", 2, CUT, 5, 0, NULL, 0,
                  "read layer: gzip: unexpected end of data" },
                { "garbage after", 1, APPEND, 0, 0, "garbage, not gzip", 17,
                  "read layer: gzip: invalid header" },
                { "zeros after", 1, APPEND, 0, 0, "\0\0\0\0\0\0\0\0\0\0", 10,
                  "read layer: gzip: invalid header" },
                { "magic after", 1, APPEND, 0, 0, "\x1f\x8b", 2,
                  "read layer: gzip: unexpected end of data" },
        };

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(layer_bytes(PLAIN, base_layer, ELEMENTSOF(base_layer), &tar));
        ASSERT_OK(gzip_member(tar.data, tar.len, &one));
        ASSERT_OK(gzip_member(tar.data, 1024, &two));
        first = two.len;
        ASSERT_OK(gzip_member(tar.data + 1024, tar.len - 1024, &two));
        blob = kiln_xmalloc(two.len + 32);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(tree_release) struct tree t = TREE_INIT;
                const struct kiln_buf *b = cases[i].members == 1 ? &one : &two;
                size_t len = b->len, at;
                char *msg = NULL;
                int r;

                printf("# %s\n", cases[i].what);
                ASSERT_OK(tree_init(&t));
                memcpy(blob, b->data, b->len);
                if (cases[i].members == 2 && cases[i].at < 0)
                        at = first - (size_t) -cases[i].at;
                else if (cases[i].members == 2)
                        at = first + (size_t) cases[i].at;
                else
                        at = cases[i].at < 0 ? len - (size_t) -cases[i].at : (size_t) cases[i].at;
                switch (cases[i].op) {
                case FLIP:
                        blob[at] ^= (char) cases[i].value;
                        break;
                case SET:
                        blob[at] = (char) cases[i].value;
                        break;
                case CUT:
                        len = at;
                        break;
                default:
                        memcpy(blob + len, cases[i].append, cases[i].append_len);
                        len += cases[i].append_len;
                        break;
                }
                r = apply_blob(&t, blob, len, KILN_CONTENT_MT_OCI_LAYER_GZIP, NULL, NULL, &msg);
                ASSERT_EQ_INT(r, -EBADMSG);
                ASSERT_STREQ(msg, cases[i].msg);
                free(msg);
                ASSERT_TRUE(sentinel_intact(&t));
        }

        /* The same blob, whole, unpacks. */
        {
                _cleanup_(tree_release) struct tree t = TREE_INIT;
                char *msg = NULL;

                ASSERT_OK(tree_init(&t));
                ASSERT_OK(apply_blob(&t, two.data, two.len, NULL, NULL, NULL, &msg));
                ASSERT_TRUE(has_content(&t, "usr/bin/tool", "#!/bin/sh\n"));
        }
        return 0;
}

TEST(whiteouts_and_opaque_directories)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        static const struct ent lower[] = {
                { .path = "a", .type = AE_IFDIR },       { .path = "a/gone", .data = "x" },
                { .path = "a/stays", .data = "x" },      { .path = "a/sub", .type = AE_IFDIR },
                { .path = "a/sub/deep", .data = "x" },   { .path = "o", .type = AE_IFDIR },
                { .path = "o/old", .data = "old" },      { .path = "o/olddir", .type = AE_IFDIR },
                { .path = "o/olddir/f", .data = "f" },   { .path = "o/kept", .type = AE_IFDIR },
                { .path = "o/kept/lower", .data = "l" }, { .path = "o/replaced", .data = "old" },
        };
        static const struct ent upper[] = {
                { .path = "a/.wh.gone" },
                { .path = "a/.wh.sub" },
                { .path = "a/.wh.missing" },
                { .path = "nothere/.wh.x" },
                { .path = "o", .type = AE_IFDIR },
                { .path = "o/kept", .type = AE_IFDIR },
                { .path = "o/replaced", .data = "new" },
                { .path = "o/.wh..wh..opq" },
                { .path = "o/new", .data = "new" },
                { .path = "o/kept/upper", .data = "u" },
                { .path = ".wh..wh.plnk" },
        };
        struct kiln_content_layer_stats st;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        ASSERT_OK(apply_ents(&t, GZIP, NULL, lower, ELEMENTSOF(lower), NULL, NULL, NULL));
        ASSERT_OK(apply_ents(&t, GZIP, NULL, upper, ELEMENTSOF(upper), NULL, &st, NULL));
        ASSERT_TRUE(!exists_in(&t, "a/gone"));
        ASSERT_TRUE(!exists_in(&t, "a/sub"));
        ASSERT_TRUE(has_content(&t, "a/stays", "x"));
        ASSERT_TRUE(!exists_in(&t, "a/.wh.gone"));
        ASSERT_TRUE(!exists_in(&t, "nothere"));
        ASSERT_TRUE(!exists_in(&t, "o/old"));
        ASSERT_TRUE(!exists_in(&t, "o/olddir"));
        ASSERT_TRUE(!exists_in(&t, "o/.wh..wh..opq"));
        ASSERT_TRUE(!exists_in(&t, ".wh..wh.plnk"));
        /* Entries of the same layer survive the opaque marker; what the
         * older "o/kept" held does not. */
        ASSERT_TRUE(exists_in(&t, "o/kept"));
        ASSERT_TRUE(!exists_in(&t, "o/kept/lower"));
        ASSERT_TRUE(has_content(&t, "o/kept/upper", "u"));
        ASSERT_TRUE(has_content(&t, "o/replaced", "new"));
        ASSERT_TRUE(has_content(&t, "o/new", "new"));
        ASSERT_EQ_INT(st.whiteouts, 3);

        /* With no_whiteouts the names are plain files. */
        {
                struct kiln_content_layer_options o = { .no_whiteouts = true };
                static const struct ent plain[] = {
                        { .path = "a/.wh.stays", .data = "w" },
                        { .path = "a/.wh..wh..opq", .data = "q" },
                };
                ASSERT_OK(apply_ents(&t, PLAIN, NULL, plain, ELEMENTSOF(plain), &o, NULL, NULL));
                ASSERT_TRUE(has_content(&t, "a/stays", "x"));
                ASSERT_TRUE(has_content(&t, "a/.wh.stays", "w"));
                ASSERT_TRUE(has_content(&t, "a/.wh..wh..opq", "q"));
        }
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(existing_entries_are_replaced)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        static const struct ent lower[] = {
                { .path = "d", .type = AE_IFDIR, .perm = 0700 },
                { .path = "d/inner", .data = "inner" },
                { .path = "dir2file", .type = AE_IFDIR },
                { .path = "dir2file/x", .data = "x" },
                { .path = "file2dir", .data = "f" },
                { .path = "link2file", .type = AE_IFLNK, .link = "d" },
                { .path = "f", .data = "old" },
                { .path = "other", .hardlink = "f" },
        };
        static const struct ent upper[] = {
                { .path = "d", .type = AE_IFDIR, .perm = 0751 },
                { .path = "dir2file", .data = "now a file" },
                { .path = "file2dir", .type = AE_IFDIR },
                { .path = "file2dir/y", .data = "y" },
                { .path = "link2file", .data = "plain" },
                { .path = "f", .data = "new" },
        };
        struct stat st;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        ASSERT_OK(apply_ents(&t, PLAIN, NULL, lower, ELEMENTSOF(lower), NULL, NULL, NULL));
        ASSERT_OK(apply_ents(&t, PLAIN, NULL, upper, ELEMENTSOF(upper), NULL, NULL, NULL));
        /* A directory over a directory keeps its contents, takes the mode. */
        ASSERT_TRUE(has_content(&t, "d/inner", "inner"));
        ASSERT_OK(fstatat(t.root_fd, "d", &st, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(st.st_mode & 07777, 0751);
        ASSERT_TRUE(has_content(&t, "dir2file", "now a file"));
        ASSERT_TRUE(has_content(&t, "file2dir/y", "y"));
        ASSERT_TRUE(has_content(&t, "link2file", "plain"));
        /* Replacing a file does not write through its other hard link. */
        ASSERT_TRUE(has_content(&t, "f", "new"));
        ASSERT_TRUE(has_content(&t, "other", "old"));
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(owners_modes_times_xattrs)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        static const struct ent ents[] = {
                { .path = "dir",
                  .type = AE_IFDIR,
                  .perm = 01777,
                  .uid = 7,
                  .gid = 8,
                  .mtime = 1234567890 },
                { .path = "dir/suid",
                  .data = "s",
                  .perm = 04755,
                  .uid = 1000,
                  .gid = 1001,
                  .mtime = 1111111111,
                  .xname = "user.kiln",
                  .xvalue = "v1" },
                { .path = "dir/sgid", .data = "g", .perm = 02711, .uid = 0, .gid = 50 },
                { .path = "dir/link",
                  .type = AE_IFLNK,
                  .link = "/nowhere",
                  .uid = 5,
                  .gid = 6,
                  .mtime = 1000000000 },
                { .path = "dir/fifo", .type = AE_IFIFO, .perm = 0620, .uid = 3, .gid = 4 },
                { .path = "dir/null", .type = AE_IFCHR, .perm = 0666, .major = 1, .minor = 3 },
                { .path = "dir/ovl",
                  .data = "o",
                  .xname = "trusted.overlay.opaque",
                  .xvalue = "y" },
        };
        struct kiln_content_layer_stats st;
        char v[16] = { 0 };
        struct stat sb;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        ASSERT_OK(apply_ents(&t, ZSTD, NULL, ents, ELEMENTSOF(ents), NULL, &st, NULL));

        ASSERT_OK(fstatat(t.root_fd, "dir", &sb, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(sb.st_mode & 07777, 01777);
        ASSERT_EQ_INT(sb.st_uid, 7);
        ASSERT_EQ_INT(sb.st_gid, 8);
        ASSERT_EQ_INT(sb.st_mtim.tv_sec, 1234567890);

        ASSERT_OK(fstatat(t.root_fd, "dir/suid", &sb, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(sb.st_mode & 07777, 04755);
        ASSERT_EQ_INT(sb.st_uid, 1000);
        ASSERT_EQ_INT(sb.st_gid, 1001);
        ASSERT_EQ_INT(sb.st_mtim.tv_sec, 1111111111);
        ASSERT_EQ_INT(sb.st_atim.tv_sec, 1111111111);
        {
                _cleanup_free_ char *p = kiln_xasprintf("%s/dir/suid", t.root);
                ASSERT_EQ_INT(getxattr(p, "user.kiln", v, sizeof(v)), 2);
                ASSERT_STREQ(v, "v1");
                free(p);
                p = kiln_xasprintf("%s/dir/ovl", t.root);
                ASSERT_TRUE(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)) < 0);
        }
        /* libarchive's writer stores it twice (SCHILY and LIBARCHIVE). */
        ASSERT_TRUE(st.xattrs_refused >= 1);

        ASSERT_OK(fstatat(t.root_fd, "dir/sgid", &sb, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(sb.st_mode & 07777, 02711);
        ASSERT_EQ_INT(sb.st_gid, 50);

        ASSERT_OK(fstatat(t.root_fd, "dir/link", &sb, AT_SYMLINK_NOFOLLOW));
        ASSERT_TRUE(S_ISLNK(sb.st_mode));
        ASSERT_EQ_INT(sb.st_uid, 5);
        ASSERT_EQ_INT(sb.st_gid, 6);
        ASSERT_EQ_INT(sb.st_mtim.tv_sec, 1000000000);

        ASSERT_OK(fstatat(t.root_fd, "dir/fifo", &sb, AT_SYMLINK_NOFOLLOW));
        ASSERT_TRUE(S_ISFIFO(sb.st_mode));
        ASSERT_EQ_INT(sb.st_mode & 07777, 0620);
        ASSERT_EQ_INT(sb.st_uid, 3);

        ASSERT_OK(fstatat(t.root_fd, "dir/null", &sb, AT_SYMLINK_NOFOLLOW));
        ASSERT_TRUE(S_ISCHR(sb.st_mode));
        ASSERT_EQ_INT(major(sb.st_rdev), 1);
        ASSERT_EQ_INT(minor(sb.st_rdev), 3);

        /* no_devices skips the device; the owner override applies to all. */
        {
                _cleanup_(tree_release) struct tree t2 = TREE_INIT;
                struct kiln_content_layer_options o = {
                        .no_devices = true, .override_owner = true, .uid = 42, .gid = 43
                };
                ASSERT_OK(tree_init(&t2));
                ASSERT_OK(apply_ents(&t2, PLAIN, NULL, ents, ELEMENTSOF(ents), &o, &st, NULL));
                ASSERT_EQ_INT(st.devices_skipped, 1);
                ASSERT_TRUE(!exists_in(&t2, "dir/null"));
                ASSERT_OK(fstatat(t2.root_fd, "dir/suid", &sb, AT_SYMLINK_NOFOLLOW));
                ASSERT_EQ_INT(sb.st_uid, 42);
                ASSERT_EQ_INT(sb.st_gid, 43);
                ASSERT_EQ_INT(sb.st_mode & 07777, 04755);
        }
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(hardlinks)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        static const struct ent lower[] = {
                { .path = "bin", .type = AE_IFDIR },
                { .path = "bin/busybox", .data = "BB", .perm = 0755 },
                { .path = "lnk", .type = AE_IFLNK, .link = "bin/busybox" },
        };
        static const struct ent upper[] = {
                /* A target from an older layer, and one from this layer. */
                { .path = "bin/sh", .hardlink = "bin/busybox" },
                { .path = "sbin/init", .hardlink = "/bin/busybox" },
                { .path = "new", .data = "N" },
                { .path = "bin/new2", .hardlink = "./new" },
                /* A link to a symlink links the symlink. */
                { .path = "lnk2", .hardlink = "lnk" },
                /* Relinking onto itself is a no-op. */
                { .path = "bin/sh", .hardlink = "bin/sh" },
        };
        struct stat a, b;
        char *msg = NULL;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        ASSERT_OK(apply_ents(&t, PLAIN, NULL, lower, ELEMENTSOF(lower), NULL, NULL, NULL));
        ASSERT_OK(apply_ents(&t, GZIP, NULL, upper, ELEMENTSOF(upper), NULL, NULL, NULL));
        ASSERT_OK(fstatat(t.root_fd, "bin/busybox", &a, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(a.st_nlink, 3);
        ASSERT_OK(fstatat(t.root_fd, "sbin/init", &b, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(a.st_ino, b.st_ino);
        ASSERT_TRUE(has_content(&t, "bin/new2", "N"));
        ASSERT_OK(fstatat(t.root_fd, "lnk2", &b, AT_SYMLINK_NOFOLLOW));
        ASSERT_TRUE(S_ISLNK(b.st_mode));

        /* A missing target fails, naming the entry. */
        {
                static const struct ent bad[] = { { .path = "x", .hardlink = "missing" } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, bad, 1, NULL, NULL, &msg), -ENOENT);
                ASSERT_STREQ(msg, "layer entry \"x\": hard link target \"missing\": No such file "
                                  "or directory");
                free(TAKE_PTR(msg));
        }
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

/* Each layer tries to reach the sentinel beside the root. */
TEST(escapes_are_refused_and_nothing_outside_is_touched)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        _cleanup_free_ char *abs_sentinel = NULL, *abs_keep = NULL;
        char *msg = NULL;
        size_t fds;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        fds = open_fds();
        abs_sentinel = kiln_xstrdup(t.sentinel);
        abs_keep = kiln_xasprintf("%s/keep", t.sentinel);

        /* '..' above the root: refused with the entry named. */
        {
                const struct ent l[] = { { .path = "ok", .data = "1" },
                                         { .path = "../sentinel/evil", .data = "x" } };
                ASSERT_EQ_INT(apply_ents(&t, GZIP, NULL, l, 2, NULL, NULL, &msg), -EINVAL);
                ASSERT_STREQ(msg, "layer entry \"../sentinel/evil\": path escapes the root");
                free(TAKE_PTR(msg));
        }
        {
                const struct ent l[] = { { .path = "a/../../sentinel/keep", .data = "x" } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -EINVAL);
                free(TAKE_PTR(msg));
        }
        {
                const struct ent l[] = { { .path = "..", .type = AE_IFDIR, .perm = 0777 } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -EINVAL);
                free(TAKE_PTR(msg));
        }
        /* A whiteout of '..'. */
        {
                const struct ent l[] = { { .path = "../sentinel/.wh.keep" } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -EINVAL);
                free(TAKE_PTR(msg));
        }
        {
                const struct ent l[] = { { .path = "d/.wh.." } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -EINVAL);
                free(TAKE_PTR(msg));
        }
        /* Absolute names land inside the root. */
        {
                const struct ent l[] = { { .path = abs_keep, .data = "inside" },
                                         { .path = "/../../keep2", .data = "inside" } };
                ASSERT_OK(apply_ents(&t, PLAIN, NULL, l, 2, NULL, NULL, NULL));
                _cleanup_free_ char *in = kiln_xasprintf("%s/keep", abs_sentinel + 1);
                ASSERT_TRUE(has_content(&t, in, "inside"));
                ASSERT_TRUE(has_content(&t, "keep2", "inside"));
        }
        /* Symlinks, absolute and relative, then entries written through them:
         * they resolve inside the root. */
        {
                const struct ent l[] = {
                        { .path = "abs", .type = AE_IFLNK, .link = abs_sentinel },
                        { .path = "abs/keep", .data = "through abs" },
                        { .path = "rel", .type = AE_IFLNK, .link = "../../../sentinel" },
                        { .path = "rel/keep", .data = "through rel" },
                        { .path = "rel/.wh.keep" },
                        { .path = "up", .type = AE_IFLNK, .link = ".." },
                        { .path = "up/sentinel/keep", .data = "through up" },
                        { .path = "up/sentinel/.wh..wh..opq" },
                        { .path = "f", .type = AE_IFLNK, .link = abs_keep },
                        { .path = "f", .data = "replaces the link" },
                };
                ASSERT_OK(apply_ents(&t, GZIP, NULL, l, ELEMENTSOF(l), NULL, NULL, NULL));
                _cleanup_free_ char *in = kiln_xasprintf("%s/keep", abs_sentinel + 1);
                ASSERT_TRUE(has_content(&t, in, "through abs"));
                /* "up" is the root: the opaque marker kept this layer's file. */
                ASSERT_TRUE(has_content(&t, "sentinel/keep", "through up"));
                ASSERT_TRUE(has_content(&t, "f", "replaces the link"));
        }
        ASSERT_TRUE(sentinel_intact(&t));
        /* Hard links: above the root refused, through symlinks resolved inside. */
        {
                const struct ent l[] = { { .path = "h", .hardlink = "../sentinel/keep" } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -EINVAL);
                ASSERT_STREQ(msg, "layer entry \"h\": hard link target \"../sentinel/keep\" "
                                  "escapes the root");
                free(TAKE_PTR(msg));
        }
        {
                const struct ent l[] = {
                        { .path = "out", .type = AE_IFLNK, .link = "/../../../.." },
                        { .path = "h2", .hardlink = "out/sentinel/keep" },
                };
                _cleanup_free_ char *target =
                        kiln_xasprintf("out%s/keep", abs_sentinel); /* root-relative */
                const struct ent l2[] = { { .path = "h3", .hardlink = target } };
                struct stat st;

                struct stat st2;

                /* "out" resolves to the root: its own sentinel/keep is linked. */
                ASSERT_OK(apply_ents(&t, PLAIN, NULL, l, 2, NULL, NULL, NULL));
                ASSERT_OK(fstatat(t.root_fd, "h2", &st, AT_SYMLINK_NOFOLLOW));
                ASSERT_OK(fstatat(t.root_fd, "sentinel/keep", &st2, AT_SYMLINK_NOFOLLOW));
                ASSERT_EQ_INT(st.st_ino, st2.st_ino);
                /* The in-root copy made above is what gets linked. */
                ASSERT_OK(apply_ents(&t, PLAIN, NULL, l2, 1, NULL, NULL, NULL));
                ASSERT_OK(fstatat(t.root_fd, "h3", &st, AT_SYMLINK_NOFOLLOW));
                ASSERT_EQ_INT(st.st_nlink, 2);
        }
        /* A hard link to a symlink pointing out links the symlink, not the file. */
        {
                const struct ent l[] = {
                        { .path = "s", .type = AE_IFLNK, .link = abs_keep },
                        { .path = "h4", .hardlink = "s" },
                };
                struct stat st;
                ASSERT_OK(apply_ents(&t, PLAIN, NULL, l, 2, NULL, NULL, NULL));
                ASSERT_OK(fstatat(t.root_fd, "h4", &st, AT_SYMLINK_NOFOLLOW));
                ASSERT_TRUE(S_ISLNK(st.st_mode));
        }
        ASSERT_TRUE(sentinel_intact(&t));
        /* Failed and successful applies alike leave no fd open. */
        ASSERT_EQ_INT(open_fds(), fds);
        return 0;
}

TEST(limits_and_cancel)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        _cleanup_free_ char *long_name = NULL, *big_x = NULL;
        char *msg = NULL;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        long_name = kiln_xmalloc(KILN_LIMIT_LAYER_PATH + 2);
        for (size_t i = 0; i < KILN_LIMIT_LAYER_PATH + 1; i++)
                long_name[i] = i % 100 == 99 ? '/' : 'n';
        long_name[KILN_LIMIT_LAYER_PATH + 1] = '\0';
        {
                const struct ent l[] = { { .path = long_name, .data = "x" } };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -E2BIG);
                ASSERT_TRUE(strstr(msg, "path longer than 4096 bytes"));
                free(TAKE_PTR(msg));
        }
        big_x = kiln_xmalloc(KILN_LIMIT_LAYER_XATTR_BYTES + 2);
        memset(big_x, 'v', KILN_LIMIT_LAYER_XATTR_BYTES + 1);
        big_x[KILN_LIMIT_LAYER_XATTR_BYTES + 1] = '\0';
        {
                const struct ent l[] = {
                        { .path = "first", .data = "x" },
                        { .path = "x", .data = "x", .xname = "user.big", .xvalue = big_x },
                };
                ASSERT_EQ_INT(apply_ents(&t, GZIP, NULL, l, 2, NULL, NULL, &msg), -E2BIG);
                ASSERT_TRUE(strstr(msg, "extended attributes larger than"));
                free(TAKE_PTR(msg));
        }
        {
                atomic_bool cancel = true;
                struct kiln_content_layer_options o = { .cancel = &cancel };
                ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, base_layer, 2, &o, NULL, &msg),
                              -ECANCELED);
                free(TAKE_PTR(msg));
        }
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(parents_resolve_and_are_created_inside_the_root)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        static const struct ent l[] = {
                { .path = "etc", .type = AE_IFDIR },
                /* An absolute symlink to a system path stays in the tree. */
                { .path = "etc2", .type = AE_IFLNK, .link = "/etc" },
                { .path = "etc2/passwd", .data = "root:x:0:0::/:/bin/sh\n" },
                /* Missing parents, through a dangling symlink too. */
                { .path = "deep/er/file", .data = "d" },
                { .path = "dangling", .type = AE_IFLNK, .link = "/../made/by/link" },
                { .path = "dangling/file", .data = "m" },
        };
        static const struct ent loop[] = {
                { .path = "loop1", .type = AE_IFLNK, .link = "loop2" },
                { .path = "loop2", .type = AE_IFLNK, .link = "/loop1" },
                { .path = "loop1/x", .data = "x" },
        };
        struct stat st;
        char *msg = NULL;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        ASSERT_OK(apply_ents(&t, GZIP, NULL, l, ELEMENTSOF(l), NULL, NULL, NULL));
        ASSERT_TRUE(has_content(&t, "etc/passwd", "root:x:0:0::/:/bin/sh\n"));
        ASSERT_TRUE(has_content(&t, "deep/er/file", "d"));
        ASSERT_OK(fstatat(t.root_fd, "deep/er", &st, AT_SYMLINK_NOFOLLOW));
        ASSERT_EQ_INT(st.st_mode & 07777, 0755);
        ASSERT_TRUE(has_content(&t, "made/by/link/file", "m"));

        ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, loop, ELEMENTSOF(loop), NULL, NULL, &msg),
                      -ELOOP);
        ASSERT_STREQ(msg, "layer entry \"loop1/x\": parent directory: Too many levels of symbolic "
                          "links");
        free(msg);
        ASSERT_TRUE(sentinel_intact(&t));
        return 0;
}

TEST(xattr_errors_fail_unless_best_effort)
{
        _cleanup_(tree_release) struct tree t = TREE_INIT;
        /* The kernel refuses a malformed capability with EINVAL. */
        static const struct ent l[] = {
                { .path = "f", .data = "x", .xname = "security.capability", .xvalue = "bad" },
        };
        struct kiln_content_layer_options o = { .best_effort_xattrs = true };
        struct kiln_content_layer_stats st;
        char *msg = NULL;

        if (!root_or_skip())
                return KILN_TEST_SKIP;
        ASSERT_OK(tree_init(&t));
        ASSERT_EQ_INT(apply_ents(&t, PLAIN, NULL, l, 1, NULL, NULL, &msg), -EINVAL);
        ASSERT_STREQ(msg, "layer entry \"f\": set xattr \"security.capability\": Invalid argument");
        free(msg);
        ASSERT_OK(apply_ents(&t, PLAIN, NULL, l, 1, &o, &st, NULL));
        ASSERT_TRUE(st.xattrs_skipped >= 1);
        ASSERT_TRUE(has_content(&t, "f", "x"));
        return 0;
}
