/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <locale.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "base/buf.h"
#include "base/fs.h"
#include "content/layer.h"
#include "export/tar.h"
#include "kiln-test.h"
#include "snapshot/snapshot.h"

/* ---- a sink that keeps the archive in memory ---- */

struct sink {
        struct kiln_buf b;
        unsigned calls;
        unsigned fail_at; /* 1-based call that fails; 0: never */
        size_t max_call;
        unsigned short_calls; /* calls below KILN_EXPORT_TAR_CHUNK */
};

#define SINK_INIT                            \
        {                                    \
                .b = KILN_BUF_INIT(1u << 30) \
        }

static int sink_write(void *ud, const void *p, size_t n, struct kiln_error **err)
{
        struct sink *s = ud;

        s->calls++;
        if (s->fail_at && s->calls >= s->fail_at)
                return kiln_error_set(err, -ENOSPC, "write 'out.tar': no space left");
        if (n > s->max_call)
                s->max_call = n;
        if (n < KILN_EXPORT_TAR_CHUNK)
                s->short_calls++;
        return kiln_buf_append(&s->b, p, n);
}

/* ---- reading archives back with libarchive ---- */

struct tentry {
        char *name;
        unsigned type; /* AE_IF* */
        unsigned mode; /* 07777 */
        int64_t uid, gid, size, mtime;
        char *hardlink, *symlink;
        char *data;
        size_t len;
        char *xattrs; /* "name=hex;..." */
        unsigned rmajor, rminor;
};

struct tlist {
        struct tentry *v;
        size_t n;
};

static void tlist_release(struct tlist *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].name);
                free(l->v[i].hardlink);
                free(l->v[i].symlink);
                free(l->v[i].data);
                free(l->v[i].xattrs);
        }
        free(l->v);
        *l = (struct tlist){ 0 };
}

static int read_tar(const void *p, size_t n, struct tlist *l)
{
        struct archive *a = archive_read_new();
        struct archive_entry *e;
        int r;

        /* PAX names are UTF-8: libarchive converts them to the locale's. */
        (void) setlocale(LC_CTYPE, "C.UTF-8");
        archive_read_support_format_tar(a);
        if (archive_read_open_memory(a, p, n) != ARCHIVE_OK) {
                printf("# libarchive: %s\n", archive_error_string(a));
                archive_read_free(a);
                return -1;
        }
        while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                struct tentry *t;
                _cleanup_(kiln_buf_release) struct kiln_buf x = KILN_BUF_INIT(1 << 20);
                const char *xn;
                const void *xv;
                size_t xs;

                l->v = kiln_xreallocarray(l->v, l->n + 1, sizeof(*l->v));
                t = &l->v[l->n++];
                *t = (struct tentry){ 0 };
                t->name = kiln_xstrdup(archive_entry_pathname(e));
                t->type = archive_entry_filetype(e);
                t->mode = archive_entry_mode(e) & 07777;
                t->uid = archive_entry_uid(e);
                t->gid = archive_entry_gid(e);
                t->size = archive_entry_size(e);
                t->mtime = archive_entry_mtime(e);
                t->rmajor = archive_entry_rdevmajor(e);
                t->rminor = archive_entry_rdevminor(e);
                if (archive_entry_hardlink(e))
                        t->hardlink = kiln_xstrdup(archive_entry_hardlink(e));
                if (archive_entry_symlink(e))
                        t->symlink = kiln_xstrdup(archive_entry_symlink(e));
                t->data = kiln_xmalloc((size_t) t->size + 1);
                t->len = 0;
                for (;;) {
                        la_ssize_t k =
                                archive_read_data(a, t->data + t->len, (size_t) t->size - t->len);
                        if (k <= 0)
                                break;
                        t->len += (size_t) k;
                }
                t->data[t->len] = 0;
                archive_entry_xattr_reset(e);
                while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) {
                        (void) kiln_buf_printf(&x, "%s=", xn);
                        for (size_t i = 0; i < xs; i++)
                                (void) kiln_buf_printf(&x, "%02x", ((const uint8_t *) xv)[i]);
                        (void) kiln_buf_putc(&x, ';');
                }
                t->xattrs = kiln_buf_steal(&x);
        }
        if (r != ARCHIVE_EOF) {
                printf("# libarchive: %s\n", archive_error_string(a));
                archive_read_free(a);
                return -1;
        }
        archive_read_free(a);
        return 0;
}

static const struct tentry *tfind(const struct tlist *l, const char *name)
{
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->v[i].name, name))
                        return &l->v[i];
        return NULL;
}

/* The names in order, joined by ' ', with a type letter after each:
 * f file, d dir, l symlink, h hard link, c char, b block, p fifo. */
static char *tnames(const struct tlist *l)
{
        struct kiln_buf b = KILN_BUF_INIT(1 << 24);

        for (size_t i = 0; i < l->n; i++) {
                const struct tentry *t = &l->v[i];
                char c = t->hardlink           ? 'h'
                         : t->type == AE_IFDIR ? 'd'
                         : t->type == AE_IFLNK ? 'l'
                         : t->type == AE_IFCHR ? 'c'
                         : t->type == AE_IFBLK ? 'b'
                         : t->type == AE_IFIFO ? 'p'
                         : t->type == AE_IFREG ? 'f'
                                               : '?';

                (void) kiln_buf_printf(&b, "%s%s:%c", i ? " " : "", t->name, c);
        }
        return kiln_buf_steal(&b);
}

/* ---- test trees and files ---- */

static char *tmpdir(void)
{
        char *d = kiln_xstrdup("/var/tmp/kiln-test-export-tar-XXXXXX");

        if (!mkdtemp(d)) {
                free(d);
                return NULL;
        }
        return d;
}

static void cleanup_dir(char **dirp)
{
        if (*dirp) {
                (void) kiln_rm_rf_at(AT_FDCWD, *dirp, NULL, NULL);
                free(*dirp);
        }
}
#define _cleanup_dir_ _cleanup_(cleanup_dir)

static int put(const char *dir, const char *name, const char *data, unsigned mode)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);
        _cleanup_close_ int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        if (fd < 0 || kiln_write_all(fd, data, strlen(data)) < 0 || fchmod(fd, mode) < 0)
                return -errno ? -errno : -EIO;
        return 0;
}

static int mkd(const char *dir, const char *name, unsigned mode)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);

        if (mkdir(p, mode) < 0 || chmod(p, mode) < 0)
                return -errno;
        return 0;
}

static int set_mtime(const char *dir, const char *name, time_t sec, long nsec)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);
        struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };

        return utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int close_fd(int fd)
{
        if (fd >= 0)
                (void) close(fd);
        return -1;
}

static int tree_to(const char *dir, const struct kiln_export_tar_options *o, struct sink *s,
                   struct kiln_error **e)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        return kiln_export_tar_tree(fd, o, sink_write, s, e);
}

static const struct kiln_export_tar_meta meta644 = { .mode = 0644, .mtime = 1700000000 };

/* ---- the writer ---- */

TEST(writer_ustar_bytes)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct sink s = SINK_INIT;
        const uint8_t *h;
        unsigned sum = 0;
        char chk[8];

        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "etc/hostname", &meta644, "kiln\n", 5,
                                                       &e));
        ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));
        /* header, one data block, two zero blocks; nothing else */
        ASSERT_EQ_INT(s.b.len, 4 * 512);
        ASSERT_EQ_INT(kiln_export_tar_writer_size(tw), 4 * 512);
        ASSERT_EQ_INT(s.calls, 1);
        h = (const uint8_t *) s.b.data;
        ASSERT_STREQ((const char *) h, "etc/hostname");
        ASSERT_TRUE(memcmp(h + 100, "0000644\0", 8) == 0);
        ASSERT_TRUE(memcmp(h + 108, "0000000\0", 8) == 0);
        ASSERT_TRUE(memcmp(h + 124, "00000000005\0", 12) == 0);
        ASSERT_TRUE(memcmp(h + 136, "14524770400\0", 12) == 0); /* 1700000000 */
        ASSERT_EQ_INT(h[156], '0');
        ASSERT_TRUE(memcmp(h + 257,
                           "ustar\0"
                           "00",
                           8) == 0);
        ASSERT_EQ_INT(h[265], 0); /* uname, gname empty */
        ASSERT_EQ_INT(h[297], 0);
        ASSERT_TRUE(memcmp(h + 329,
                           "0000000\0"
                           "0000000\0",
                           16) == 0);
        for (size_t i = 0; i < 512; i++)
                sum += (i >= 148 && i < 156) ? ' ' : h[i];
        (void) snprintf(chk, sizeof(chk), "%06o", sum);
        ASSERT_TRUE(memcmp(h + 148, chk, 6) == 0 && h[154] == 0 && h[155] == ' ');
        ASSERT_TRUE(memcmp(h + 512, "kiln\n", 5) == 0);
        for (size_t i = 512 + 5; i < s.b.len; i++)
                ASSERT_EQ_INT(h[i], 0);
        kiln_buf_release(&s.b);
        return 0;
}

TEST(writer_entry_types)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(tlist_release) struct tlist l = { 0 };
        _cleanup_free_ char *names = NULL;
        struct kiln_export_tar_meta dir = { .mode = 01777, .uid = 0, .gid = 0, .mtime = 10 };
        struct kiln_export_tar_meta suid = { .mode = 04755, .uid = 1000, .gid = 1001, .mtime = 20 };
        struct sink s = SINK_INIT;
        char tmpl[] = "/tmp/kiln-test-export-fd-XXXXXX";
        _cleanup_close_ int fd = mkstemp(tmpl);
        const struct tentry *t;

        ASSERT_TRUE(fd >= 0);
        (void) unlink(tmpl);
        ASSERT_OK(kiln_write_all(fd, "0123456789", 10));
        ASSERT_TRUE(lseek(fd, 2, SEEK_SET) == 2);

        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        ASSERT_OK(kiln_export_tar_writer_add_dir(tw, "tmp", &dir, &e));
        ASSERT_OK(kiln_export_tar_writer_add_file_fd(tw, "tmp/f", &suid, fd, 6, &e));
        ASSERT_OK(kiln_export_tar_writer_add_symlink(tw, "tmp/s", &meta644, "../etc/x", &e));
        ASSERT_OK(kiln_export_tar_writer_add_hardlink(tw, "tmp/h", &suid, "tmp/f", &e));
        ASSERT_OK(kiln_export_tar_writer_add_device(tw, "dev/null", &meta644, false, 1, 3, &e));
        ASSERT_OK(kiln_export_tar_writer_add_device(tw, "dev/sda", &meta644, true, 8, 0, &e));
        ASSERT_OK(kiln_export_tar_writer_add_fifo(tw, "run/p", &meta644, &e));
        ASSERT_OK(kiln_export_tar_writer_add_whiteout(tw, "etc/gone", &e));
        ASSERT_OK(kiln_export_tar_writer_add_whiteout(tw, "top/", &e));
        ASSERT_OK(kiln_export_tar_writer_add_opaque(tw, "var/cache", &e));
        ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));

        ASSERT_OK(read_tar(s.b.data, s.b.len, &l));
        names = tnames(&l);
        ASSERT_STREQ(names, "tmp/:d tmp/f:f tmp/s:l tmp/h:h dev/null:c dev/sda:b run/p:p "
                            "etc/.wh.gone:f .wh.top:f var/cache/.wh..wh..opq:f");
        ASSERT_EQ_INT(l.v[0].mode, 01777);
        t = tfind(&l, "tmp/f");
        ASSERT_EQ_INT(t->mode, 04755);
        ASSERT_EQ_INT(t->uid, 1000);
        ASSERT_EQ_INT(t->gid, 1001);
        ASSERT_EQ_INT(t->mtime, 20);
        ASSERT_STREQ(t->data, "234567"); /* from the fd's offset, size bytes */
        ASSERT_STREQ(tfind(&l, "tmp/s")->symlink, "../etc/x");
        ASSERT_STREQ(tfind(&l, "tmp/h")->hardlink, "tmp/f");
        ASSERT_EQ_INT(tfind(&l, "tmp/h")->size, 0);
        ASSERT_EQ_INT(tfind(&l, "dev/null")->rmajor, 1);
        ASSERT_EQ_INT(tfind(&l, "dev/null")->rminor, 3);
        ASSERT_EQ_INT(tfind(&l, "dev/sda")->rmajor, 8);
        t = tfind(&l, "etc/.wh.gone");
        ASSERT_EQ_INT(t->mode, 0);
        ASSERT_EQ_INT(t->mtime, 0);
        ASSERT_EQ_INT(t->size, 0);

        /* bad names are refused and leave the writer usable */
        kiln_error_free(TAKE_PTR(e));
        ASSERT_EQ_INT(kiln_export_tar_writer_add_dir(tw, "x", &dir, &e), -EINVAL);
        kiln_error_free(TAKE_PTR(e));
        kiln_buf_release(&s.b);
        return 0;
}

TEST(writer_rejects_bad_names)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        struct sink s = SINK_INIT;
        const char *bad[] = { "", "/etc/passwd", "a/../b", "..", "./a", "a//b", "a/." };

        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                ASSERT_EQ_INT(kiln_export_tar_writer_add_file_data(tw, bad[i], &meta644, "", 0, &e),
                              -EINVAL);
        }
        {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "ok", &meta644, "", 0, &e));
                ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));
        }
        ASSERT_EQ_INT(s.b.len, 3 * 512);
        kiln_buf_release(&s.b);
        return 0;
}

TEST(writer_pax_only_where_needed)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(tlist_release) struct tlist l = { 0 };
        _cleanup_free_ char *split = NULL, *unsplit = NULL, *target = NULL;
        static const char cap[] = { 1, 0, 0, 2, 0x20, 0, 0, 0 };
        struct kiln_export_tar_xattr xs[] = {
                { "user.z", "last", 4 },
                { "security.capability", cap, sizeof(cap) },
        };
        struct kiln_export_tar_meta withx = {
                .mode = 0755, .mtime = 5, .xattrs = xs, .n_xattrs = 2
        };
        struct kiln_export_tar_meta bigid = {
                .mode = 0600, .uid = 3000000, .gid = 100000, .mtime = 5
        };
        struct sink s = SINK_INIT;
        const char *p;

        /* 120 bytes, splittable at a '/' into ustar prefix + name */
        split = kiln_xasprintf("%s/%s", "p123456789012345678901234567890123456789",
                               "n12345678901234567890123456789012345678901234567890123456789"
                               "0123456789012345678");
        /* one component longer than 100 bytes: only PAX can hold it */
        unsplit = kiln_xasprintf("d/%0150d", 7);
        target = kiln_xasprintf("/%0200d", 9);

        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, split, &meta644, "s", 1, &e));
        ASSERT_EQ_INT(s.b.len, 0); /* buffered */
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, unsplit, &meta644, "u", 1, &e));
        ASSERT_OK(kiln_export_tar_writer_add_symlink(tw, "long-link", &meta644, target, &e));
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "caf\xc3\xa9", &meta644, "c", 1, &e));
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "bin/ping", &withx, "", 0, &e));
        ASSERT_OK(kiln_export_tar_writer_add_dir(tw, "home/big", &bigid, &e));
        /* splittable, but PAX for the attributes: the name goes there too */
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, split + 1, &withx, "", 0, &e));
        ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));

        /* the splittable name: plain ustar, no extended header */
        p = s.b.data;
        ASSERT_EQ_INT(p[156], '0');
        ASSERT_STREQ(p + 345, "p123456789012345678901234567890123456789");
        /* the others each get an 'x' header named <dir>/PaxHeaders.0/<base> */
        p += 2 * 512;
        ASSERT_EQ_INT(p[156], 'x');
        ASSERT_TRUE(startswith(p, "d/PaxHeaders.0/0000000"));
        ASSERT_EQ_INT(strnlen(p, 100), 100); /* cut to the field */
        ASSERT_TRUE(memmem(s.b.data, s.b.len, "PaxHeaders.0/long-link", 22) != NULL);
        ASSERT_TRUE(memmem(s.b.data, s.b.len, "PaxHeaders.0/caf\0", 17) != NULL);
        ASSERT_TRUE(memmem(s.b.data, s.b.len, "home/big/PaxHeaders.0\0", 22) != NULL);
        /* records sorted by key: SCHILY.xattr.security... before ...user.z */
        {
                const char *a = memmem(s.b.data, s.b.len, "SCHILY.xattr.security.capability=", 33);
                const char *b = memmem(s.b.data, s.b.len, "SCHILY.xattr.user.z=last\n", 25);

                ASSERT_TRUE(a && b && a < b);
                ASSERT_TRUE(memmem(s.b.data, s.b.len, "15 uid=3000000\n", 15) != NULL);
                ASSERT_TRUE(memmem(s.b.data, s.b.len, "gid=", 4) == NULL); /* fits */
        }

        ASSERT_OK(read_tar(s.b.data, s.b.len, &l));
        ASSERT_EQ_INT(l.n, 7);
        ASSERT_STREQ(l.v[6].name, split + 1);
        ASSERT_STREQ(l.v[0].name, split);
        ASSERT_STREQ(l.v[0].data, "s");
        ASSERT_STREQ(l.v[1].name, unsplit);
        ASSERT_STREQ(l.v[1].data, "u");
        ASSERT_STREQ(l.v[2].symlink, target);
        ASSERT_STREQ(l.v[3].name, "caf\xc3\xa9");
        /* (libarchive lists them in reverse) */
        ASSERT_STREQ(l.v[4].xattrs, "user.z=6c617374;security.capability=0100000220000000;");
        ASSERT_EQ_INT(l.v[5].uid, 3000000);
        ASSERT_EQ_INT(l.v[5].gid, 100000);
        ASSERT_STREQ(l.v[5].name, "home/big/");
        kiln_buf_release(&s.b);
        return 0;
}

/* GNU tar reads the same archive: long names, links, xattrs, modes. */
TEST(writer_gnu_tar_extracts)
{
        _cleanup_dir_ char *dir = tmpdir();
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *file = NULL, *out = NULL, *cmd = NULL, *lng = NULL, *p = NULL;
        struct kiln_export_tar_xattr xs[] = { { "user.note", "hi", 2 } };
        struct kiln_export_tar_meta dm = { .mode = 0755, .mtime = 1 };
        struct kiln_export_tar_meta m = { .mode = 0640,
                                          .uid = 123,
                                          .gid = 456,
                                          .mtime = 1234567890,
                                          .xattrs = xs,
                                          .n_xattrs = 1 };
        struct sink s = SINK_INIT;
        char buf[16] = { 0 };
        struct stat st;

        ASSERT_TRUE(dir);
        if (system("tar --version >/dev/null 2>&1") != 0) {
                printf("# GNU tar not installed\n");
                return KILN_TEST_SKIP;
        }
        lng = kiln_xasprintf("a/%0120d/%0130d", 1, 2);
        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        ASSERT_OK(kiln_export_tar_writer_add_dir(tw, "a", &dm, &e));
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, lng, &m, "long!", 5, &e));
        ASSERT_OK(kiln_export_tar_writer_add_hardlink(tw, "a/hl", &m, lng, &e));
        ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));
        file = kiln_xasprintf("%s/t.tar", dir);
        out = kiln_xasprintf("%s/out", dir);
        ASSERT_OK(kiln_write_file_replace(file, s.b.data, s.b.len, 0644));
        ASSERT_TRUE(mkdir(out, 0755) == 0);
        cmd = kiln_xasprintf("tar --xattrs --xattrs-include='*' --numeric-owner -xpf %s -C %s",
                             file, out);
        ASSERT_EQ_INT(system(cmd), 0);
        p = kiln_xasprintf("%s/%s", out, lng);
        ASSERT_TRUE(lstat(p, &st) == 0);
        ASSERT_EQ_INT(st.st_size, 5);
        ASSERT_EQ_INT(st.st_mtime, 1234567890);
        if (geteuid() == 0) {
                ASSERT_EQ_INT(st.st_mode & 07777, 0640);
                ASSERT_EQ_INT(st.st_uid, 123);
                ASSERT_EQ_INT(st.st_gid, 456);
        }
        ASSERT_EQ_INT(st.st_nlink, 2);
        if (lgetxattr(p, "user.note", buf, sizeof(buf)) >= 0)
                ASSERT_STREQ(buf, "hi");
        kiln_buf_release(&s.b);
        return 0;
}

TEST(writer_epoch_clamps)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(tlist_release) struct tlist l = { 0 };
        struct kiln_export_tar_options o = { .has_epoch = true, .epoch = 1000 };
        struct kiln_export_tar_meta old = { .mode = 0644, .mtime = 999 };
        struct kiln_export_tar_meta neu = { .mode = 0644, .mtime = 1700000000 };
        struct kiln_export_tar_meta neg = { .mode = 0644, .mtime = -5 };
        struct sink s = SINK_INIT;

        tw = kiln_export_tar_writer_new(sink_write, &s, &o);
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "old", &old, "", 0, &e));
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "new", &neu, "", 0, &e));
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "neg", &neg, "", 0, &e));
        ASSERT_OK(kiln_export_tar_writer_add_whiteout(tw, "gone", &e));
        ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));
        ASSERT_OK(read_tar(s.b.data, s.b.len, &l));
        ASSERT_EQ_INT(tfind(&l, "old")->mtime, 999);
        ASSERT_EQ_INT(tfind(&l, "new")->mtime, 1000);
        ASSERT_EQ_INT(tfind(&l, "neg")->mtime, -5); /* a PAX mtime record */
        ASSERT_EQ_INT(tfind(&l, ".wh.gone")->mtime, 0);
        kiln_buf_release(&s.b);
        return 0;
}

TEST(writer_chunks_and_sink_error)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *big = kiln_xcalloc(1, 3u << 20);
        struct sink s = SINK_INIT;
        struct sink f = SINK_INIT;
        int r;

        /* many entries: whole chunks, only the last call shorter */
        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        for (int i = 0; i < 5000; i++) {
                char name[32];

                (void) snprintf(name, sizeof(name), "f%05d", i);
                ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, name, &meta644, "x", 1, &e));
        }
        ASSERT_OK(kiln_export_tar_writer_add_file_data(tw, "big", &meta644, big, 3u << 20, &e));
        ASSERT_OK(kiln_export_tar_writer_finish(tw, &e));
        ASSERT_EQ_INT(s.b.len, 5000 * 1024 + 512 + (3u << 20) + 1024);
        ASSERT_EQ_INT(s.max_call, KILN_EXPORT_TAR_CHUNK);
        ASSERT_EQ_INT(s.short_calls, 1);
        ASSERT_EQ_INT(s.calls, (s.b.len + KILN_EXPORT_TAR_CHUNK - 1) / KILN_EXPORT_TAR_CHUNK);
        tw = kiln_export_tar_writer_free(tw);

        /* the sink's error comes back as it was set, and sticks */
        f.fail_at = 2;
        tw = kiln_export_tar_writer_new(sink_write, &f, NULL);
        r = kiln_export_tar_writer_add_file_data(tw, "big", &meta644, big, 3u << 20, &e);
        ASSERT_EQ_INT(r, -ENOSPC);
        ASSERT_STREQ(kiln_error_message(e), "write 'out.tar': no space left");
        ASSERT_EQ_INT(f.calls, 2);
        kiln_error_free(TAKE_PTR(e));
        ASSERT_EQ_INT(kiln_export_tar_writer_add_file_data(tw, "x", &meta644, "", 0, &e), -ENOSPC);
        kiln_error_free(TAKE_PTR(e));
        ASSERT_EQ_INT(kiln_export_tar_writer_finish(tw, &e), -ENOSPC);
        ASSERT_EQ_INT(f.calls, 2);
        kiln_buf_release(&s.b);
        kiln_buf_release(&f.b);
        return 0;
}

TEST(writer_file_shrank)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        char tmpl[] = "/tmp/kiln-test-export-fd-XXXXXX";
        _cleanup_close_ int fd = mkstemp(tmpl);
        struct sink s = SINK_INIT;

        ASSERT_TRUE(fd >= 0);
        (void) unlink(tmpl);
        ASSERT_OK(kiln_write_all(fd, "abc", 3));
        ASSERT_TRUE(lseek(fd, 0, SEEK_SET) == 0);
        tw = kiln_export_tar_writer_new(sink_write, &s, NULL);
        ASSERT_EQ_INT(kiln_export_tar_writer_add_file_fd(tw, "f", &meta644, fd, 10, &e), -EIO);
        ASSERT_TRUE(strstr(kiln_error_message(e), "'f'") != NULL);
        kiln_buf_release(&s.b);
        return 0;
}

/* ---- whole trees ---- */

static int make_tree(const char *t)
{
        _cleanup_free_ char *p = NULL, *h1 = NULL, *h2 = NULL, *sock = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r, fd;

        if ((r = mkd(t, "a", 0750)) < 0 || (r = put(t, "a/x", "xx", 0644)) < 0 ||
            (r = put(t, "a-b", "ab", 0600)) < 0 || (r = put(t, "B", "", 04755)) < 0 ||
            (r = put(t, "h1", "hard", 0644)) < 0 || (r = mkd(t, "z", 0755)) < 0 ||
            (r = put(t, "\xc3\xa9", "e", 0644)) < 0)
                return r;
        h1 = kiln_xasprintf("%s/h1", t);
        h2 = kiln_xasprintf("%s/z/h2", t);
        if (link(h1, h2) < 0 || setxattr(h1, "user.k", "v\0b", 3, 0) < 0)
                return -errno;
        p = kiln_xasprintf("%s/fifo", t);
        if (mkfifo(p, 0600) < 0)
                return -errno;
        free(p);
        p = kiln_xasprintf("%s/link", t);
        if (symlink("a/x", p) < 0)
                return -errno;
        free(p);
        p = kiln_xasprintf("%s/a-b", t);
        if (geteuid() == 0 &&
            (chown(p, 1000, 1001) < 0 || setxattr(t, "trusted.overlay.opaque", "y", 1, 0) < 0))
                return -errno;
        sock = kiln_xasprintf("%s/sock", t);
        if (strlen(sock) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, sock, strlen(sock) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        (void) close(fd);
        if ((r = set_mtime(t, "a/x", 5000, 123)) < 0 || (r = set_mtime(t, "B", 3000, 0)) < 0)
                return r;
        return 0;
}

TEST(tree_order_types_links)
{
        _cleanup_dir_ char *t = tmpdir();
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(tlist_release) struct tlist l = { 0 };
        _cleanup_free_ char *names = NULL;
        struct sink s = SINK_INIT, s2 = SINK_INIT;
        const struct tentry *x;
        int fds;

        ASSERT_TRUE(t);
        ASSERT_OK(make_tree(t));
        fds = kiln_test_count_fds();
        ASSERT_OK(tree_to(t, NULL, &s, &e));
        ASSERT_EQ_INT(kiln_test_count_fds(), fds);
        ASSERT_OK(read_tar(s.b.data, s.b.len, &l));
        names = tnames(&l);
        /* bytewise per directory, a directory before its contents, the
         * socket skipped, the second link a link entry */
        ASSERT_STREQ(names, "B:f a/:d a/x:f a-b:f fifo:p h1:f link:l z/:d z/h2:h \xc3\xa9:f");
        ASSERT_EQ_INT(tfind(&l, "B")->mode, 04755);
        ASSERT_EQ_INT(tfind(&l, "B")->mtime, 3000);
        ASSERT_EQ_INT(tfind(&l, "a/")->mode, 0750);
        x = tfind(&l, "a/x");
        ASSERT_STREQ(x->data, "xx");
        ASSERT_EQ_INT(x->mtime, 5000);
        ASSERT_EQ_INT(x->size, 2);
        if (geteuid() == 0) {
                ASSERT_EQ_INT(tfind(&l, "a-b")->uid, 1000);
                ASSERT_EQ_INT(tfind(&l, "a-b")->gid, 1001);
        }
        ASSERT_EQ_INT(tfind(&l, "a-b")->mode, 0600);
        ASSERT_STREQ(tfind(&l, "link")->symlink, "a/x");
        ASSERT_STREQ(tfind(&l, "h1")->data, "hard");
        ASSERT_STREQ(tfind(&l, "h1")->xattrs, "user.k=760062;");
        ASSERT_STREQ(tfind(&l, "z/h2")->hardlink, "h1");
        ASSERT_STREQ(tfind(&l, "z/h2")->xattrs, "user.k=760062;");
        /* the root's trusted.overlay.* is never exported (nor the root) */
        ASSERT_TRUE(memmem(s.b.data, s.b.len, "trusted.overlay", 15) == NULL);

        /* the same tree gives the same bytes */
        ASSERT_OK(tree_to(t, NULL, &s2, &e));
        ASSERT_EQ_INT(s.b.len, s2.b.len);
        ASSERT_TRUE(memcmp(s.b.data, s2.b.data, s.b.len) == 0);
        kiln_buf_release(&s.b);
        kiln_buf_release(&s2.b);
        return 0;
}

TEST(tree_epoch)
{
        _cleanup_dir_ char *t = tmpdir();
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(tlist_release) struct tlist l = { 0 };
        struct kiln_export_tar_options o = { .has_epoch = true, .epoch = 4000 };
        struct sink s = SINK_INIT;

        ASSERT_TRUE(t);
        ASSERT_OK(make_tree(t));
        ASSERT_OK(tree_to(t, &o, &s, &e));
        ASSERT_OK(read_tar(s.b.data, s.b.len, &l));
        ASSERT_EQ_INT(tfind(&l, "a/x")->mtime, 4000);
        ASSERT_EQ_INT(tfind(&l, "B")->mtime, 3000);
        ASSERT_EQ_INT(tfind(&l, "h1")->mtime, 4000);
        kiln_buf_release(&s.b);
        return 0;
}

TEST(tree_sink_error_stops_walk)
{
        _cleanup_dir_ char *t = tmpdir();
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *big = kiln_xcalloc(1, 1u << 20);
        struct sink s = SINK_INIT;
        int fds;

        ASSERT_TRUE(t);
        for (int i = 0; i < 8; i++) {
                char name[16];
                _cleanup_free_ char *p = NULL;

                (void) snprintf(name, sizeof(name), "d%d", i);
                ASSERT_OK(mkd(t, name, 0755));
                p = kiln_xasprintf("%s/%s/f", t, name);
                ASSERT_OK(kiln_write_file_replace(p, big, 1u << 20, 0644));
        }
        s.fail_at = 3;
        fds = kiln_test_count_fds();
        ASSERT_EQ_INT(tree_to(t, NULL, &s, &e), -ENOSPC);
        ASSERT_STREQ(kiln_error_message(e), "write 'out.tar': no space left");
        ASSERT_EQ_INT(s.calls, 3);
        ASSERT_EQ_INT(kiln_test_count_fds(), fds);
        kiln_buf_release(&s.b);
        return 0;
}

TEST(tree_depth_limit)
{
        _cleanup_dir_ char *t = tmpdir();
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_close_ int fd = -1;
        struct sink s = SINK_INIT;
        int cur;

        ASSERT_TRUE(t);
        fd = open(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        cur = dup(fd);
        for (unsigned i = 0; i <= KILN_EXPORT_TAR_LIMIT_DEPTH; i++) {
                int next;

                ASSERT_TRUE(mkdirat(cur, "d", 0755) == 0);
                next = openat(cur, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                (void) close(cur);
                ASSERT_TRUE(next >= 0);
                cur = next;
        }
        (void) close(cur);
        ASSERT_EQ_INT(kiln_export_tar_tree(fd, NULL, sink_write, &s, &e), -ELOOP);
        ASSERT_TRUE(strstr(kiln_error_message(e), "deeper than 256") != NULL);
        kiln_buf_release(&s.b);
        return 0;
}

/* ---- snapshot diffs ---- */

static int setup_root(void)
{
        static bool done;

        if (geteuid() != 0) {
                printf("# snapshot diff tests need root (mounts)\n");
                return KILN_TEST_SKIP;
        }
        if (!done) {
                if (unshare(CLONE_NEWNS) < 0 ||
                    mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
                        printf("# cannot make a private mount namespace: %s\n", strerror(errno));
                        return KILN_TEST_SKIP;
                }
                done = true;
        }
        return 0;
}

static int layer(struct kiln_snapshot_store *s, const char *parent, const char *mnt,
                 int (*fn)(const char *root), char **ret_id)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_snapshot_abortp) struct kiln_snapshot *snap = NULL;
        int r;

        r = kiln_snapshot_prepare(s, parent, &snap, &e);
        if (r >= 0)
                r = kiln_snapshot_mount(snap, mnt, &e);
        if (r < 0) {
                printf("# %s\n", kiln_error_message(e));
                return r;
        }
        r = fn(mnt);
        if (kiln_snapshot_unmount(mnt, &e) < 0) {
                printf("# %s\n", kiln_error_message(e));
                return -EIO;
        }
        if (r < 0) {
                printf("# writing the layer: %s\n", strerror(-r));
                return r;
        }
        r = kiln_snapshot_commit(TAKE_PTR(snap), NULL, ret_id, &e);
        if (r < 0)
                printf("# %s\n", kiln_error_message(e));
        return r;
}

static int base_layer(const char *t)
{
        int r;

        if ((r = put(t, "mod.txt", "old content", 0644)) < 0 ||
            (r = put(t, "del.txt", "bye", 0644)) < 0 || (r = mkd(t, "deldir", 0755)) < 0 ||
            (r = put(t, "deldir/f1", "1", 0644)) < 0 || (r = mkd(t, "deldir/sub", 0755)) < 0 ||
            (r = put(t, "deldir/sub/f3", "3", 0644)) < 0 || (r = mkd(t, "d2f", 0755)) < 0 ||
            (r = put(t, "d2f/c", "c", 0644)) < 0 || (r = put(t, "f2d", "file", 0644)) < 0 ||
            (r = mkd(t, "opq", 0755)) < 0 || (r = put(t, "opq/a", "a", 0644)) < 0 ||
            (r = put(t, "opq/b", "b", 0644)) < 0 || (r = put(t, "perm.txt", "p", 0644)) < 0 ||
            (r = put(t, "base_file", "shared", 0644)) < 0 || (r = mkd(t, "deep", 0755)) < 0 ||
            (r = put(t, "deep/keep", "k", 0644)) < 0 || (r = mkd(t, "sub", 0755)) < 0 ||
            (r = put(t, "sub/gone", "g", 0644)) < 0 || (r = put(t, "sub/stay", "s", 0644)) < 0 ||
            (r = put(t, "same.txt", "same", 0644)) < 0 ||
            (r = put(t, "trunc.txt", "abcd", 0644)) < 0 || (r = mkd(t, "hl", 0755)) < 0 ||
            (r = put(t, "hl/orig", "o", 0644)) < 0 ||
            (r = set_mtime(t, "same.txt", 1000000000, 0)) < 0 ||
            (r = set_mtime(t, "trunc.txt", 1000000000, 0)) < 0)
                return r;
        {
                _cleanup_free_ char *p = kiln_xasprintf("%s/symc", t);
                _cleanup_free_ char *q = kiln_xasprintf("%s/deep", t);

                if (symlink("t1", p) < 0 || setxattr(q, "user.d", "1", 1, 0) < 0)
                        return -errno;
        }
        return 0;
}

static int change_layer(const char *t)
{
        _cleanup_free_ char *a = NULL, *b = NULL;
        int r;

#define P(x) (free(a), a = kiln_xasprintf("%s/%s", t, x))
#define Q(x) (free(b), b = kiln_xasprintf("%s/%s", t, x))
        if ((r = put(t, "new.txt", "new", 0644)) < 0 ||
            (r = put(t, "mod.txt", "new content!", 0644)) < 0)
                return r;
        if (setxattr(P("new.txt"), "user.k", "v", 1, 0) < 0 || unlink(P("del.txt")) < 0)
                return -errno;
        if ((r = kiln_rm_rf_at(AT_FDCWD, P("deldir"), NULL, NULL)) < 0 ||
            (r = kiln_rm_rf_at(AT_FDCWD, P("d2f"), NULL, NULL)) < 0 ||
            (r = put(t, "d2f", "now a file", 0644)) < 0)
                return r;
        if (unlink(P("f2d")) < 0)
                return -errno;
        if ((r = mkd(t, "f2d", 0755)) < 0 || (r = put(t, "f2d/in", "in", 0644)) < 0)
                return r;
        /* rm -rf + recreate: an opaque directory with overlayfs */
        if ((r = kiln_rm_rf_at(AT_FDCWD, P("opq"), NULL, NULL)) < 0 ||
            (r = mkd(t, "opq", 0755)) < 0 || (r = put(t, "opq/b", "b2", 0644)) < 0 ||
            (r = put(t, "opq/c", "c", 0644)) < 0)
                return r;
        if (chmod(P("perm.txt"), 0600) < 0 || link(P("base_file"), Q("linked")) < 0)
                return -errno;
        if ((r = put(t, "h1", "h", 0644)) < 0)
                return r;
        if (link(P("h1"), Q("h2")) < 0 || symlink("target", P("sym")) < 0 ||
            unlink(P("symc")) < 0 || symlink("t2", P("symc")) < 0)
                return -errno;
        if ((r = mkd(t, "deep/er", 0755)) < 0 || (r = put(t, "deep/er/file", "f", 0644)) < 0)
                return r;
        /* the first change below deep, which is unchanged but has
         * attributes of its own */
        if ((r = put(t, "deep/a", "a", 0644)) < 0)
                return r;
        if (setxattr(P("deep/er/file"), "user.f", "2", 1, 0) < 0 ||
            setxattr(P("deep/a"), "user.a", "3", 1, 0) < 0)
                return -errno;
        /* a link to an unchanged file in an unchanged directory, seen
         * after it: the file becomes a link entry, its directory is
         * written before it */
        if (unlink(P("sub/gone")) < 0 || link(P("hl/orig"), Q("zlink")) < 0)
                return -errno;
        /* same size, same whole-second mtime, other bytes */
        if ((r = put(t, "trunc.txt", "wxyz", 0644)) < 0 ||
            (r = set_mtime(t, "trunc.txt", 1000000000, 0)) < 0)
                return r;
#undef P
#undef Q
        return 0;
}

static const char expected_diff[] =
        "d2f:f deep/:d deep/a:f deep/er/:d deep/er/file:f .wh.del.txt:f .wh.deldir:f f2d/:d "
        "f2d/in:f "
        "h1:f h2:h linked:f base_file:h mod.txt:f new.txt:f opq/:d opq/.wh.a:f opq/b:f opq/c:f "
        "perm.txt:f sub/:d sub/.wh.gone:f sym:l symc:l trunc.txt:f zlink:f hl/:d hl/orig:h";

struct diff_result {
        struct sink base;  /* diff of the first layer (no parent): its whole tree */
        struct sink diff;  /* of the second against the first */
        struct sink third; /* of a third, whose parent has a parent */
};

/* On top of the change layer: changes to entries of both lower layers. */
static int third_layer(const char *t)
{
        _cleanup_free_ char *a = NULL;
        int r;

        a = kiln_xasprintf("%s/mod.txt", t);
        if (unlink(a) < 0)
                return -errno;
        free(a);
        a = kiln_xasprintf("%s/deep", t);
        if ((r = kiln_rm_rf_at(AT_FDCWD, a, NULL, NULL)) < 0 ||
            (r = put(t, "opq/c", "c3", 0644)) < 0 || (r = put(t, "third", "3", 0644)) < 0)
                return r;
        return 0;
}

/* Compares two trees: names, types, modes, owners, sizes, contents, link
 * targets. */
static int same_tree(int a, int b, const char *path)
{
        struct dirent **na = NULL, **nb = NULL;
        int n1, n2, r = 0;
        int fa = openat(a, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int fb = openat(b, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *pa = kiln_xasprintf("/proc/self/fd/%d", fa);
        _cleanup_free_ char *pb = kiln_xasprintf("/proc/self/fd/%d", fb);

        n1 = scandir(pa, &na, NULL, alphasort);
        n2 = scandir(pb, &nb, NULL, alphasort);
        if (n1 != n2) {
                printf("# %s: %d != %d entries\n", path, n1, n2);
                r = -1;
        }
        for (int i = 0; r == 0 && i < n1; i++) {
                struct stat s1, s2;
                const char *n = na[i]->d_name;

                if (streq(n, ".") || streq(n, ".."))
                        continue;
                if (!streq(n, nb[i]->d_name)) {
                        printf("# %s: '%s' != '%s'\n", path, n, nb[i]->d_name);
                        r = -1;
                        break;
                }
                if (fstatat(fa, n, &s1, AT_SYMLINK_NOFOLLOW) < 0 ||
                    fstatat(fb, n, &s2, AT_SYMLINK_NOFOLLOW) < 0 || s1.st_mode != s2.st_mode ||
                    s1.st_uid != s2.st_uid || s1.st_gid != s2.st_gid ||
                    (!S_ISDIR(s1.st_mode) && s1.st_size != s2.st_size) ||
                    (!S_ISDIR(s1.st_mode) && s1.st_nlink != s2.st_nlink)) {
                        printf("# %s/%s: metadata differs\n", path, n);
                        r = -1;
                        break;
                }
                if (S_ISREG(s1.st_mode)) {
                        _cleanup_(kiln_buf_release) struct kiln_buf b1 = KILN_BUF_INIT(1 << 20);
                        _cleanup_(kiln_buf_release) struct kiln_buf b2 = KILN_BUF_INIT(1 << 20);

                        if (kiln_read_file_at(fa, n, &b1) < 0 ||
                            kiln_read_file_at(fb, n, &b2) < 0 || !streq(b1.data, b2.data)) {
                                printf("# %s/%s: contents differ\n", path, n);
                                r = -1;
                        }
                } else if (S_ISLNK(s1.st_mode)) {
                        char t1[256] = { 0 }, t2[256] = { 0 };

                        if (readlinkat(fa, n, t1, 255) < 0 || readlinkat(fb, n, t2, 255) < 0 ||
                            !streq(t1, t2)) {
                                printf("# %s/%s: link targets differ\n", path, n);
                                r = -1;
                        }
                } else if (S_ISDIR(s1.st_mode)) {
                        _cleanup_free_ char *sub = kiln_xasprintf("%s/%s", path, n);
                        int ca = openat(fa, n, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        int cb = openat(fb, n, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

                        r = same_tree(ca, cb, sub);
                        (void) close(ca);
                        (void) close(cb);
                }
        }
        for (int i = 0; i < n1; i++)
                free(na[i]);
        for (int i = 0; i < n2; i++)
                free(nb[i]);
        free(na);
        free(nb);
        (void) close(fa);
        (void) close(fb);
        return r;
}

static int apply(const struct sink *s, int root_fd)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        char tmpl[] = "/tmp/kiln-test-export-layer-XXXXXX";
        _cleanup_close_ int fd = mkstemp(tmpl);
        int r;

        if (fd < 0)
                return -errno;
        (void) unlink(tmpl);
        if (kiln_write_all(fd, s->b.data, s->b.len) < 0 || lseek(fd, 0, SEEK_SET) != 0)
                return -EIO;
        r = kiln_content_layer_apply(fd, NULL, root_fd, NULL, NULL, &e);
        if (r < 0)
                printf("# apply: %s\n", kiln_error_message(e));
        return r;
}

/* Builds base + change layers with driver d, diffs both, and checks that
 * applying the two diffs gives the changed tree. */
static int diff_flow(enum kiln_snapshot_driver d, struct diff_result *res)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *dir = NULL, *mnt = NULL, *out = NULL, *id1 = NULL, *id2 = NULL;
        _cleanup_free_ char *id3 = NULL;
        _cleanup_close_ int out_fd = -1, view_fd = -1;
        struct kiln_export_tar_options o = { .has_epoch = true, .epoch = 1234567890 };
        struct kiln_snapshot_info info;
        int fds;
        int r;

        if (!root)
                return -1;
        dir = kiln_xasprintf("%s/snapshots", root);
        mnt = kiln_xasprintf("%s/mnt", root);
        out = kiln_xasprintf("%s/out", root);
        if (mkdir(mnt, 0755) < 0 || mkdir(out, 0755) < 0)
                return -1;
        r = kiln_snapshot_store_open(dir, d, &s, &e);
        if (r < 0) {
                printf("# %s\n", kiln_error_message(e));
                return r;
        }
        if (layer(s, NULL, mnt, base_layer, &id1) < 0 ||
            layer(s, id1, mnt, change_layer, &id2) < 0 || layer(s, id2, mnt, third_layer, &id3) < 0)
                return -1;

        fds = kiln_test_count_fds();
        r = kiln_export_tar_diff(s, id1, &o, sink_write, &res->base, &e);
        if (r >= 0)
                r = kiln_export_tar_diff(s, id2, &o, sink_write, &res->diff, &e);
        if (r >= 0)
                r = kiln_export_tar_diff(s, id3, &o, sink_write, &res->third, &e);
        if (r < 0) {
                printf("# %s\n", kiln_error_message(e));
                return r;
        }
        if (kiln_test_count_fds() != fds) {
                printf("# descriptors leaked\n");
                return -1;
        }
        /* uses released, no view left mounted */
        if (kiln_snapshot_info(s, id2, &info) < 0)
                return -1;
        r = info.uses;
        kiln_snapshot_info_release(&info);
        if (r != 0) {
                printf("# %d uses left on the snapshot\n", r);
                return -1;
        }
        {
                _cleanup_(kiln_buf_release) struct kiln_buf mi = KILN_BUF_INIT(64u << 20);

                if (kiln_read_file_at(AT_FDCWD, "/proc/self/mountinfo", &mi) < 0 ||
                    strstr(mi.data, "kiln-diff-")) {
                        printf("# a parent view is still mounted\n");
                        return -1;
                }
        }

        /* base + diff applied == the changed snapshot */
        out_fd = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (out_fd < 0 || apply(&res->base, out_fd) < 0 || apply(&res->diff, out_fd) < 0 ||
            apply(&res->third, out_fd) < 0)
                return -1;
        if (kiln_snapshot_use(s, id3) < 0 || kiln_snapshot_mount_view(s, id3, mnt, &e) < 0) {
                printf("# %s\n", e ? kiln_error_message(e) : "use");
                return -1;
        }
        view_fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = view_fd >= 0 ? same_tree(out_fd, view_fd, ".") : -1;
        view_fd = close_fd(view_fd);
        (void) kiln_snapshot_unmount(mnt, &e);
        kiln_snapshot_release(s, id3);
        return r;
}

static void diff_result_release(struct diff_result *r)
{
        kiln_buf_release(&r->base.b);
        kiln_buf_release(&r->diff.b);
        kiln_buf_release(&r->third.b);
}

TEST(diff_same_bytes_with_both_drivers)
{
        struct diff_result ov = { SINK_INIT, SINK_INIT, SINK_INIT };
        struct diff_result na = { SINK_INIT, SINK_INIT, SINK_INIT };
        _cleanup_(tlist_release) struct tlist l = { 0 };
        _cleanup_(tlist_release) struct tlist b = { 0 };
        _cleanup_free_ char *names = NULL;
        const struct tentry *t;
        int r = setup_root();

        if (r)
                return r;
        r = diff_flow(KILN_SNAPSHOT_DRIVER_OVERLAYFS, &ov);
        if (r >= 0)
                r = diff_flow(KILN_SNAPSHOT_DRIVER_NATIVE, &na);
        if (r < 0)
                goto out;
        r = -1;
        if (read_tar(ov.diff.b.data, ov.diff.b.len, &l) < 0)
                goto out;
        names = tnames(&l);
        if (!streq(names, expected_diff)) {
                printf("# overlayfs diff: %s\n", names);
                goto out;
        }
        t = tfind(&l, "base_file");
        if (!t || !streq(t->hardlink, "linked") || !streq(tfind(&l, "h2")->hardlink, "h1") ||
            !streq(tfind(&l, "linked")->data, "shared") || tfind(&l, "perm.txt")->mode != 0600 ||
            !streq(tfind(&l, "symc")->symlink, "t2") ||
            !streq(tfind(&l, "new.txt")->xattrs, "user.k=76;") ||
            !streq(tfind(&l, "deep/")->xattrs, "user.d=31;") ||
            !streq(tfind(&l, "deep/a")->xattrs, "user.a=33;") ||
            !streq(tfind(&l, "hl/orig")->hardlink, "zlink") ||
            !streq(tfind(&l, "deep/er/")->xattrs, "") ||
            !streq(tfind(&l, "deep/er/file")->xattrs, "user.f=32;") ||
            tfind(&l, "new.txt")->mtime != 1234567890 ||
            tfind(&l, "trunc.txt")->mtime != 1000000000 || !streq(tfind(&l, "opq/b")->data, "b2") ||
            tfind(&l, ".wh.deldir")->mode != 0) {
                printf("# overlayfs diff: wrong entry contents\n");
                goto out;
        }
        if (na.diff.b.len != ov.diff.b.len ||
            memcmp(na.diff.b.data, ov.diff.b.data, ov.diff.b.len) != 0) {
                _cleanup_(tlist_release) struct tlist l2 = { 0 };
                _cleanup_free_ char *n2 = NULL;

                if (read_tar(na.diff.b.data, na.diff.b.len, &l2) >= 0)
                        n2 = tnames(&l2);
                printf("# native diff differs: %s\n", n2 ? n2 : "(unreadable)");
                goto out;
        }
        {
                _cleanup_(tlist_release) struct tlist l3 = { 0 };
                _cleanup_free_ char *n3 = NULL;

                if (read_tar(ov.third.b.data, ov.third.b.len, &l3) < 0)
                        goto out;
                n3 = tnames(&l3);
                if (!streq(n3, ".wh.deep:f .wh.mod.txt:f opq/:d opq/c:f third:f") ||
                    na.third.b.len != ov.third.b.len ||
                    memcmp(na.third.b.data, ov.third.b.data, ov.third.b.len) != 0) {
                        printf("# third layer: %s\n", n3);
                        goto out;
                }
        }
        /* a snapshot without parent: its whole tree, the same either way */
        if (na.base.b.len != ov.base.b.len ||
            memcmp(na.base.b.data, ov.base.b.data, ov.base.b.len) != 0 ||
            read_tar(ov.base.b.data, ov.base.b.len, &b) < 0 || !tfind(&b, "deldir/sub/f3") ||
            !tfind(&b, "opq/a")) {
                printf("# base layers differ\n");
                goto out;
        }
        r = 0;
out:
        diff_result_release(&ov);
        diff_result_release(&na);
        return r;
}

static int diff_errors(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *dir = NULL, *mnt = NULL, *id1 = NULL, *id2 = NULL, *id3 = NULL;
        struct kiln_snapshot_info info;
        struct sink k = SINK_INIT;
        int fds;
        int r;

        if (!root)
                return -1;
        dir = kiln_xasprintf("%s/snapshots", root);
        mnt = kiln_xasprintf("%s/mnt", root);
        if (mkdir(mnt, 0755) < 0)
                return -1;
        ASSERT_OK(kiln_snapshot_store_open(dir, d, &s, &e));
        ASSERT_OK(layer(s, NULL, mnt, base_layer, &id1));
        ASSERT_OK(layer(s, id1, mnt, change_layer, &id2));
        ASSERT_OK(layer(s, id2, mnt, third_layer, &id3));

        ASSERT_EQ_INT(kiln_export_tar_diff(s, "999", NULL, sink_write, &k, &e), -ENOENT);
        ASSERT_TRUE(strstr(kiln_error_message(e), "'999'") != NULL);
        kiln_error_free(TAKE_PTR(e));

        /* the first write fails: nothing more is written, all is undone */
        k.fail_at = 1;
        fds = kiln_test_count_fds();
        r = kiln_export_tar_diff(s, id3, NULL, sink_write, &k, &e);
        ASSERT_EQ_INT(r, -ENOSPC);
        ASSERT_STREQ(kiln_error_message(e), "write 'out.tar': no space left");
        ASSERT_EQ_INT(k.calls, 1);
        ASSERT_EQ_INT(kiln_test_count_fds(), fds);
        ASSERT_OK(kiln_snapshot_info(s, id3, &info));
        ASSERT_EQ_INT(info.uses, 0);
        kiln_snapshot_info_release(&info);
        ASSERT_OK(kiln_snapshot_info(s, id2, &info));
        ASSERT_EQ_INT(info.uses, 0);
        kiln_snapshot_info_release(&info);
        {
                _cleanup_(kiln_buf_release) struct kiln_buf mi = KILN_BUF_INIT(64u << 20);

                ASSERT_OK(kiln_read_file_at(AT_FDCWD, "/proc/self/mountinfo", &mi));
                ASSERT_TRUE(strstr(mi.data, "kiln-diff-") == NULL);
        }
        kiln_buf_release(&k.b);
        return 0;
}

TEST(diff_errors_overlayfs)
{
        int r = setup_root();

        return r ? r : diff_errors(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

TEST(diff_errors_native)
{
        int r = setup_root();

        return r ? r : diff_errors(KILN_SNAPSHOT_DRIVER_NATIVE);
}
