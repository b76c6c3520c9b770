/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "base/fs.h"
#include "base/log.h"
#include "base/pattern.h"
#include "content/layer.h"
#include "fileop/fileop-internal.h"

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

/* Bytes of one read/write when the kernel cannot copy by itself. */
#define COPY_BUFFER_SIZE (256u * 1024)
/* Bytes of all extended attribute names of one entry, and of one value. */
#define COPY_XATTR_LIST_MAX  (64u * 1024)
#define COPY_XATTR_VALUE_MAX (64u * 1024)

/* chmod of an entry in dirfd that never follows a link put there in the
 * meantime (fchmodat2, Linux 6.6); older kernels: plain fchmodat. */
static int chmod_at_nofollow(int dirfd, const char *name, mode_t mode)
{
        long r = syscall(SYS_fchmodat2, dirfd, name, mode, AT_SYMLINK_NOFOLLOW);

        if (r < 0 && (errno == ENOSYS || errno == EINVAL))
                r = fchmodat(dirfd, name, mode, 0);
        return r < 0 ? -1 : 0;
}

/* ---- hard links --------------------------------------------------------- */

struct hl_entry {
        dev_t dev;
        ino_t ino;
        char *dest; /* relative to the destination root; NULL: empty slot */
};

struct hl_table {
        struct hl_entry *slots;
        size_t cap, n;
};

static size_t hl_hash(dev_t dev, ino_t ino, size_t cap)
{
        uint64_t h = (uint64_t) ino * 0x9E3779B97F4A7C15ull ^ (uint64_t) dev;
        return (size_t) (h ^ (h >> 29)) & (cap - 1);
}

static struct hl_entry *hl_find(struct hl_table *t, dev_t dev, ino_t ino)
{
        if (!t->cap)
                return NULL;
        for (size_t i = hl_hash(dev, ino, t->cap);; i = (i + 1) & (t->cap - 1)) {
                struct hl_entry *e = &t->slots[i];
                if (!e->dest)
                        return NULL;
                if (e->dev == dev && e->ino == ino)
                        return e;
        }
}

static void hl_insert(struct hl_table *t, dev_t dev, ino_t ino, const char *dest)
{
        if ((t->n + 1) * 2 > t->cap) {
                struct hl_table nt = { .cap = t->cap ? t->cap * 2 : 64 };
                nt.slots = kiln_xcalloc(nt.cap, sizeof(*nt.slots));
                for (size_t i = 0; i < t->cap; i++) {
                        struct hl_entry *e = &t->slots[i];
                        if (!e->dest)
                                continue;
                        size_t j = hl_hash(e->dev, e->ino, nt.cap);
                        while (nt.slots[j].dest)
                                j = (j + 1) & (nt.cap - 1);
                        nt.slots[j] = *e;
                        nt.n++;
                }
                free(t->slots);
                *t = nt;
        }
        size_t j = hl_hash(dev, ino, t->cap);
        while (t->slots[j].dest)
                j = (j + 1) & (t->cap - 1);
        t->slots[j] = (struct hl_entry){ dev, ino, kiln_xstrdup(dest) };
        t->n++;
}

static void hl_release(struct hl_table *t)
{
        for (size_t i = 0; i < t->cap; i++)
                free(t->slots[i].dest);
        free(t->slots);
        *t = (struct hl_table){ 0 };
}

/* ---- the copier ---------------------------------------------------------- */

/* One directory on the way down: its source fd, and the destination
 * directory, which may not exist yet (created only once something below it
 * is included). Level 0 is the parent of the top-level entry. */
struct level {
        int src_fd;
        struct stat st;
        char name[NAME_MAX + 1]; /* in the parent level's destination directory */
        int dst_fd;              /* -1 until opened */
        bool copied;             /* the destination directory exists */
        size_t dpath_len;        /* dpath up to and including this directory */
};

struct copier {
        const struct kiln_llb_file_copy *c;
        const struct kiln_fileop_options *o;
        struct kiln_error **err;
        int dest_root, src_root;
        struct fileop_owner owner;
        const struct fileop_modeset *modeset; /* NULL: none */
        const struct timespec *utime;         /* NULL: keep the source's */
        struct kiln_pattern_matcher *inc, *exc;
        size_t n_inc, n_exc;
        bool *inc_info, *exc_info; /* per level: (depth + 1) * n */

        struct level levels[KILN_LIMIT_FILEOP_DEPTH + 1];
        size_t depth;
        char comp[KILN_LIMIT_FILEOP_PATH + 1]; /* source path below the copied root */
        size_t comp_len;
        char dpath[KILN_LIMIT_FILEOP_PATH + 1]; /* destination path, from the dest root */
        size_t dpath_len;

        struct hl_table links;
        uint64_t entries;
        bool no_clone; /* FICLONE refused: not tried again */
        bool no_cfr;   /* copy_file_range refused: read/write from now on */
        char *buf;
};

static int copy_fail(struct copier *cp, int r, const char *fmt, ...) _printf_(3, 4);
static int copy_fail(struct copier *cp, int r, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_error_set(cp->err, r, "copy \"%s\": %s: %s", cp->c->src_path, msg,
                              fileop_strerror(-r));
}

/* The destination path for messages: "/" + dpath. */
static const char *dshow(struct copier *cp)
{
        return cp->dpath_len ? cp->dpath : ".";
}

static int path_push(char *buf, size_t *len, const char *name)
{
        size_t n = strlen(name), need = *len + (*len ? 1 : 0) + n;

        if (need > KILN_LIMIT_FILEOP_PATH)
                return -ENAMETOOLONG;
        if (*len)
                buf[(*len)++] = '/';
        memcpy(buf + *len, name, n);
        *len += n;
        buf[*len] = 0;
        return 0;
}

/* The destination directory of level i, opened if it exists. */
static int level_dst_fd(struct copier *cp, size_t i)
{
        struct level *l = &cp->levels[i];
        int pfd;

        if (l->dst_fd >= 0 || i == 0)
                return l->dst_fd;
        pfd = level_dst_fd(cp, i - 1);
        if (pfd < 0)
                return pfd;
        l->dst_fd = openat(pfd, l->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (l->dst_fd < 0)
                return -errno;
        return l->dst_fd;
}

static void xattr_warn(const char *what, const char *path, int r)
{
        if (kiln_log_enabled(KILN_LOG_DEBUG))
                kiln_log_fields(KILN_LOG_DEBUG, KILN_FIELDS({ "path", path }),
                                "copy xattrs: %s: %s", what, fileop_strerror(-r));
}

/* Copies the extended attributes; failures are logged and skipped, as
 * BuildKit does. sfd/dfd are fds of the entries, or -1: then the paths
 * (/proc/self/fd based) are used without following links. */
static void copy_xattrs(struct copier *cp, int sfd, const char *spath, int dfd, const char *dpath)
{
        char list[COPY_XATTR_LIST_MAX];
        ssize_t n = sfd >= 0 ? flistxattr(sfd, list, sizeof(list))
                             : llistxattr(spath, list, sizeof(list));

        if (n <= 0) {
                if (n < 0 && errno != ENOTSUP)
                        xattr_warn("list", dshow(cp), -errno);
                return;
        }
        if (!cp->buf)
                cp->buf = kiln_xmalloc(COPY_BUFFER_SIZE);
        for (char *k = list; k < list + n; k += strlen(k) + 1) {
                ssize_t vn = sfd >= 0 ? fgetxattr(sfd, k, cp->buf, COPY_XATTR_VALUE_MAX)
                                      : lgetxattr(spath, k, cp->buf, COPY_XATTR_VALUE_MAX);
                if (vn < 0) {
                        xattr_warn("get", dshow(cp), -errno);
                        continue;
                }
                int r = dfd >= 0 ? fsetxattr(dfd, k, cp->buf, (size_t) vn, 0)
                                 : lsetxattr(dpath, k, cp->buf, (size_t) vn, 0);
                if (r < 0)
                        xattr_warn("set", dshow(cp), -errno);
        }
}

static uint32_t final_mode(struct copier *cp, const struct stat *st)
{
        if (cp->modeset)
                return fileop_modeset_apply(cp->modeset, st->st_mode);
        if (cp->c->has_mode)
                return cp->c->mode & 07777;
        return st->st_mode & 07777;
}

static int set_times_fd(int fd, const struct copier *cp, const struct stat *st)
{
        struct timespec t[2];

        if (cp->utime) {
                t[0] = t[1] = *cp->utime;
        } else {
                t[0] = st->st_atim;
                t[1] = st->st_mtim;
        }
        return futimens(fd, t) < 0 ? -errno : 0;
}

/* fsutil's copyFileInfo + copyXAttrs on an entry with an open fd (regular
 * files and directories). */
static int copy_info_fd(struct copier *cp, const struct stat *st, int sfd, int dfd)
{
        uid_t uid = cp->owner.set ? cp->owner.uid : st->st_uid;
        gid_t gid = cp->owner.set ? cp->owner.gid : st->st_gid;

        if (fchown(dfd, uid, gid) < 0)
                return copy_fail(cp, -errno, "chown \"/%s\"", cp->dpath);
        if (fchmod(dfd, final_mode(cp, st)) < 0)
                return copy_fail(cp, -errno, "chmod \"/%s\"", cp->dpath);
        if (set_times_fd(dfd, cp, st) < 0)
                return copy_fail(cp, -errno, "set times of \"/%s\"", cp->dpath);
        copy_xattrs(cp, sfd, NULL, dfd, NULL);
        return 0;
}

/* The same, by name in directories (symbolic links, devices, FIFOs). */
static int copy_info_at(struct copier *cp, const struct stat *st, int sdir, const char *sname,
                        int ddir, const char *dname)
{
        uid_t uid = cp->owner.set ? cp->owner.uid : st->st_uid;
        gid_t gid = cp->owner.set ? cp->owner.gid : st->st_gid;
        struct timespec t[2];
        char sp[64 + NAME_MAX], dp[64 + NAME_MAX];

        if (fchownat(ddir, dname, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(cp, -errno, "chown \"/%s\"", cp->dpath);
        if (!S_ISLNK(st->st_mode)) {
                if (chmod_at_nofollow(ddir, dname, final_mode(cp, st)) < 0)
                        return copy_fail(cp, -errno, "chmod \"/%s\"", cp->dpath);
        }
        if (cp->utime) {
                t[0] = t[1] = *cp->utime;
        } else {
                t[0] = st->st_atim;
                t[1] = st->st_mtim;
        }
        if (utimensat(ddir, dname, t, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(cp, -errno, "set times of \"/%s\"", cp->dpath);
        (void) snprintf(sp, sizeof(sp), "/proc/self/fd/%d/%s", sdir, sname);
        (void) snprintf(dp, sizeof(dp), "/proc/self/fd/%d/%s", ddir, dname);
        copy_xattrs(cp, -1, sp, -1, dp);
        return 0;
}

static int copy_data(struct copier *cp, int sfd, int dfd, off_t size)
{
        bool first = true;
        off_t done = 0;

        if (size == 0)
                return 0;
        if (!cp->no_clone) {
                if (ioctl(dfd, FICLONE, sfd) == 0)
                        return 0;
                if (errno == EOPNOTSUPP || errno == EXDEV || errno == ENOTTY || errno == ENOSYS)
                        cp->no_clone = true;
        }
        if (cp->no_cfr)
                goto userspace;
        while (done < size) {
                size_t want =
                        (size_t) (size - done) > (1u << 30) ? (1u << 30) : (size_t) (size - done);
                ssize_t n = copy_file_range(sfd, NULL, dfd, NULL, want, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (first && (errno == ENOSYS || errno == EXDEV || errno == EPERM ||
                                      errno == EIO || errno == EOPNOTSUPP || errno == EINVAL)) {
                                /* Across file systems it fails for every file. */
                                if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP)
                                        cp->no_cfr = true;
                                goto userspace;
                        }
                        return -errno;
                }
                if (n == 0)
                        return 0; /* the file shrank while copied */
                first = false;
                done += n;
        }
        return 0;

userspace:
        if (!cp->buf)
                cp->buf = kiln_xmalloc(COPY_BUFFER_SIZE);
        for (;;) {
                ssize_t n = read(sfd, cp->buf, COPY_BUFFER_SIZE);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return 0;
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(dfd, cp->buf + off, (size_t) (n - off));
                        if (w < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        off += w;
                }
        }
}

/* fsutil's copyDirectoryOnly: creates the directory, or checks an existing
 * one is a directory (and takes the source's mode when overwrite). Returns
 * 1 when created, 0 when it existed. */
static int dir_only(struct copier *cp, int pfd, const char *name, const struct stat *st,
                    bool overwrite)
{
        struct stat dst;

        if (fstatat(pfd, name, &dst, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return copy_fail(cp, -errno, "stat \"/%s\"", cp->dpath);
                if (mkdirat(pfd, name, st->st_mode & 07777) < 0)
                        return copy_fail(cp, -errno, "mkdir \"/%s\"", cp->dpath);
                return 1;
        }
        if (!S_ISDIR(dst.st_mode))
                return kiln_error_set(cp->err, -ENOTDIR,
                                      "copy \"%s\": cannot copy to non-directory: \"/%s\"",
                                      cp->c->src_path, cp->dpath);
        if (overwrite && chmod_at_nofollow(pfd, name, st->st_mode & 07777) < 0)
                return copy_fail(cp, -errno, "chmod \"/%s\"", cp->dpath);
        return 0;
}

/* fsutil's createParentDirs: directories kept pending because they were
 * not included themselves are created once something below them is. */
static int create_parent_dirs(struct copier *cp)
{
        for (size_t i = 1; i <= cp->depth; i++) {
                struct level *l = &cp->levels[i];
                size_t saved = cp->dpath_len;
                int pfd, r;

                if (l->copied)
                        continue;
                pfd = level_dst_fd(cp, i - 1);
                if (pfd < 0)
                        return copy_fail(cp, pfd, "open \"/%s\"", cp->dpath);
                /* Messages name this directory. */
                cp->dpath_len = l->dpath_len;
                char c = cp->dpath[cp->dpath_len];
                cp->dpath[cp->dpath_len] = 0;
                r = dir_only(cp, pfd, l->name, &l->st, true);
                if (r > 0) {
                        int dfd = level_dst_fd(cp, i);
                        r = dfd < 0 ? copy_fail(cp, dfd, "open \"/%s\"", cp->dpath)
                                    : copy_info_fd(cp, &l->st, l->src_fd, dfd);
                }
                cp->dpath[cp->dpath_len] = c;
                cp->dpath_len = saved;
                if (r < 0)
                        return r;
                l->copied = true;
        }
        return 0;
}

static int copy_entry(struct copier *cp, const char *sname, const char *dname, bool overwrite,
                      const bool *pinc, const bool *pexc);

static int copy_children(struct copier *cp, const bool *inc, const bool *exc)
{
        struct level *l = &cp->levels[cp->depth];
        int fd = dup(l->src_fd);
        DIR *d;
        int r = 0;

        if (fd < 0)
                return copy_fail(cp, -errno, "read directory");
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return copy_fail(cp, r, "read directory");
        }
        for (;;) {
                struct dirent *de;
                size_t comp_len = cp->comp_len, dpath_len = cp->dpath_len;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno)
                                r = copy_fail(cp, -errno, "read directory \"/%s\"", cp->dpath);
                        break;
                }
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (path_push(cp->comp, &cp->comp_len, de->d_name) < 0 ||
                    path_push(cp->dpath, &cp->dpath_len, de->d_name) < 0) {
                        r = kiln_error_set(cp->err, -ENAMETOOLONG,
                                           "copy \"%s\": path below \"/%s\" too long",
                                           cp->c->src_path, cp->dpath);
                        break;
                }
                r = copy_entry(cp, de->d_name, de->d_name, true, inc, exc);
                cp->comp_len = comp_len;
                cp->comp[comp_len] = 0;
                cp->dpath_len = dpath_len;
                cp->dpath[dpath_len] = 0;
                if (r < 0)
                        break;
        }
        closedir(d);
        return r;
}

static int copy_directory(struct copier *cp, const char *sname, const char *dname,
                          const struct stat *st, bool overwrite, bool include, bool excluded,
                          const bool *inc, const bool *exc, bool *ret_created)
{
        struct level *parent = &cp->levels[cp->depth], *l;
        int created = 0, r = 0;

        if (cp->depth + 1 > KILN_LIMIT_FILEOP_DEPTH)
                return kiln_error_set(cp->err, -ELOOP,
                                      "copy \"%s\": \"/%s\" is nested deeper than %u levels",
                                      cp->c->src_path, cp->dpath, KILN_LIMIT_FILEOP_DEPTH);
        l = &cp->levels[cp->depth + 1];
        *l = (struct level){ .src_fd = -1, .dst_fd = -1, .st = *st, .dpath_len = cp->dpath_len };
        (void) snprintf(l->name, sizeof(l->name), "%s", dname);
        l->src_fd = openat(parent->src_fd, sname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (l->src_fd < 0)
                return copy_fail(cp, -errno, "open \"%s\"", cp->comp_len ? cp->comp : sname);

        if (include) {
                int pfd = level_dst_fd(cp, cp->depth);
                if (pfd < 0) {
                        r = copy_fail(cp, pfd, "open parent of \"/%s\"", cp->dpath);
                        goto out;
                }
                created = dir_only(cp, pfd, dname, st, overwrite);
                if (created < 0) {
                        r = created;
                        goto out;
                }
                l->copied = true;
        }
        cp->depth++;
        if (!excluded || (cp->exc && kiln_pattern_matcher_exclusions(cp->exc)))
                r = copy_children(cp, inc, exc);
        cp->depth--;
        if (r < 0)
                goto out;

        /* Metadata last, so that creating the children does not change the
         * times. Only for a directory created here, or any directory below
         * the top (whose metadata the copy overwrites). */
        if (include && (overwrite || created)) {
                int dfd = level_dst_fd(cp, cp->depth + 1);
                r = dfd < 0 ? copy_fail(cp, dfd, "open \"/%s\"", cp->dpath)
                            : copy_info_fd(cp, st, l->src_fd, dfd);
        } else if (include && !overwrite && !created) {
                int dfd = level_dst_fd(cp, cp->depth + 1);
                r = dfd < 0 ? copy_fail(cp, dfd, "open \"/%s\"", cp->dpath)
                            : set_times_fd(dfd, cp, st);
                if (r < 0 && dfd >= 0)
                        r = copy_fail(cp, r, "set times of \"/%s\"", cp->dpath);
        }
out:
        if (l->src_fd >= 0)
                close(l->src_fd);
        if (l->dst_fd >= 0)
                close(l->dst_fd);
        l->src_fd = l->dst_fd = -1;
        *ret_created = created > 0;
        return r;
}

static int copy_regular(struct copier *cp, int sdir, const char *sname, int ddir, const char *dname,
                        const struct stat *st)
{
        _cleanup_close_ int sfd = -1, dfd = -1;
        struct hl_entry *e = NULL;
        int r;

        if (st->st_nlink > 1)
                e = hl_find(&cp->links, st->st_dev, st->st_ino);
        if (e) {
                const char *base;
                _cleanup_close_ int pfd = fileop_open_parent(cp->dest_root, e->dest, &base);
                if (pfd < 0)
                        return copy_fail(cp, pfd, "hard link \"/%s\" to \"/%s\"", cp->dpath,
                                         e->dest);
                if (linkat(pfd, base, ddir, dname, 0) < 0)
                        return copy_fail(cp, -errno, "hard link \"/%s\" to \"/%s\"", cp->dpath,
                                         e->dest);
                dfd = openat(ddir, dname,
                             O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                if (dfd < 0)
                        return copy_fail(cp, -errno, "open \"/%s\"", cp->dpath);
                sfd = openat(sdir, sname,
                             O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                if (sfd < 0)
                        return copy_fail(cp, -errno, "open \"%s\"",
                                         cp->comp_len ? cp->comp : sname);
                return copy_info_fd(cp, st, sfd, dfd);
        }
        if (st->st_nlink > 1)
                hl_insert(&cp->links, st->st_dev, st->st_ino, cp->dpath);

        sfd = openat(sdir, sname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (sfd < 0)
                return copy_fail(cp, -errno, "open \"%s\"", cp->comp_len ? cp->comp : sname);
        dfd = openat(ddir, dname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
                     0600);
        if (dfd < 0)
                return copy_fail(cp, -errno, "create \"/%s\"", cp->dpath);
        r = copy_data(cp, sfd, dfd, st->st_size);
        if (r < 0)
                return copy_fail(cp, r, "copy data to \"/%s\"", cp->dpath);
        return copy_info_fd(cp, st, sfd, dfd);
}

/* Kept out of copy_entry so that its buffer is not on the stack of every
 * level of a deep tree. */
static __attribute__((noinline)) int copy_symlink(struct copier *cp, int sdir, const char *sname,
                                                  int ddir, const char *dname)
{
        char target[KILN_LIMIT_FILEOP_PATH + 1];
        ssize_t n = readlinkat(sdir, sname, target, sizeof(target));

        if (n < 0)
                return copy_fail(cp, -errno, "read link \"%s\"", cp->comp_len ? cp->comp : sname);
        if ((size_t) n >= sizeof(target))
                return copy_fail(cp, -ENAMETOOLONG, "read link \"%s\"",
                                 cp->comp_len ? cp->comp : sname);
        target[n] = 0;
        if (symlinkat(target, ddir, dname) < 0)
                return copy_fail(cp, -errno, "create symlink \"/%s\"", cp->dpath);
        return 0;
}

static int copy_entry(struct copier *cp, const char *sname, const char *dname, bool overwrite,
                      const bool *pinc, const bool *pexc)
{
        struct level *parent = &cp->levels[cp->depth];
        bool include = true, excluded = false, *inc = NULL, *exc = NULL, has_target = false;
        struct stat st, tst;
        int dfd, r;

        if (fileop_cancelled(cp->o))
                return kiln_error_set(cp->err, -ECANCELED, "copy \"%s\": cancelled",
                                      cp->c->src_path);
        if (++cp->entries > KILN_LIMIT_FILEOP_ENTRIES)
                return kiln_error_set(cp->err, -E2BIG, "copy \"%s\": more than %u entries",
                                      cp->c->src_path, KILN_LIMIT_FILEOP_ENTRIES);

        if (cp->comp_len > 0) {
                bool m;
                if (cp->inc) {
                        inc = cp->inc_info + (cp->depth + 1) * cp->n_inc;
                        r = kiln_pattern_matcher_matches_parent(cp->inc, cp->comp, pinc, inc, &m);
                        if (r < 0)
                                return kiln_error_set(
                                        cp->err, r, "copy \"%s\": failed to match include patterns",
                                        cp->c->src_path);
                        include = m;
                }
                if (cp->exc) {
                        exc = cp->exc_info + (cp->depth + 1) * cp->n_exc;
                        r = kiln_pattern_matcher_matches_parent(cp->exc, cp->comp, pexc, exc, &m);
                        if (r < 0)
                                return kiln_error_set(
                                        cp->err, r, "copy \"%s\": failed to match exclude patterns",
                                        cp->c->src_path);
                        if (m) {
                                include = false;
                                excluded = true;
                        }
                }
                if (!include && !cp->inc && (!cp->exc || !kiln_pattern_matcher_exclusions(cp->exc)))
                        return 0;
        }

        if (fstatat(parent->src_fd, sname, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(cp, -errno, "stat \"%s\"", cp->comp_len ? cp->comp : sname);
        if (!include && !S_ISDIR(st.st_mode))
                return 0;

        dfd = level_dst_fd(cp, cp->depth);
        if (dfd >= 0 && fstatat(dfd, dname, &tst, AT_SYMLINK_NOFOLLOW) == 0)
                has_target = true;
        else if (dfd >= 0 && errno != ENOENT)
                return copy_fail(cp, -errno, "stat \"/%s\"", cp->dpath);

        if (include) {
                if (cp->c->always_replace_existing && has_target &&
                    !(S_ISDIR(st.st_mode) && S_ISDIR(tst.st_mode))) {
                        r = kiln_rm_rf_at(dfd, dname, NULL, cp->err);
                        if (r < 0)
                                return kiln_error_wrap(cp->err, "copy \"%s\"", cp->c->src_path);
                        has_target = false;
                }
                r = create_parent_dirs(cp);
                if (r < 0)
                        return r;
                dfd = level_dst_fd(cp, cp->depth);
                if (dfd < 0)
                        return copy_fail(cp, dfd, "open parent of \"/%s\"", cp->dpath);
        }

        if (S_ISDIR(st.st_mode)) {
                bool created;
                return copy_directory(cp, sname, dname, &st, overwrite, include, excluded, inc, exc,
                                      &created);
        }

        /* fsutil's ensureEmptyFileTarget. */
        if (has_target) {
                if (S_ISDIR(tst.st_mode))
                        return kiln_error_set(
                                cp->err, -EISDIR,
                                "copy \"%s\": cannot replace to directory \"/%s\" with file",
                                cp->c->src_path, cp->dpath);
                if (unlinkat(dfd, dname, 0) < 0)
                        return copy_fail(cp, -errno, "remove \"/%s\"", cp->dpath);
        }

        if (S_ISREG(st.st_mode))
                return copy_regular(cp, parent->src_fd, sname, dfd, dname, &st);
        if (S_ISLNK(st.st_mode)) {
                r = copy_symlink(cp, parent->src_fd, sname, dfd, dname);
                if (r < 0)
                        return r;
        } else {
                mode_t mode = st.st_mode;
                dev_t rdev = 0;
                if (S_ISCHR(mode) || S_ISBLK(mode)) {
                        if (cp->o && cp->o->no_devices)
                                return copy_fail(cp, -EPERM, "device \"/%s\" not allowed",
                                                 cp->dpath);
                        rdev = st.st_rdev;
                }
                if (S_ISSOCK(mode))
                        mode &= (mode_t) ~S_IFSOCK; /* a socket becomes an empty stub */
                if (mknodat(dfd, dname, mode, rdev) < 0)
                        return copy_fail(cp, -errno, "create \"/%s\"", cp->dpath);
        }
        return copy_info_at(cp, &st, parent->src_fd, sname, dfd, dname);
}

/* ---- wildcards --------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

struct wild {
        const char *pattern; /* the part below the walk root */
        unsigned ncomp;      /* its components: the walk goes no deeper */
        const char *base;    /* walk root, relative to the root */
        char **out;
        size_t n;
        struct kiln_error **err;
};

static int wild_walk(struct wild *w, int dirfd, const char *rel, unsigned depth)
{
        _cleanup_free_ char **names = NULL;
        size_t n = 0;
        int fd = dup(dirfd), r = 0;
        DIR *d;

        if (fd < 0)
                return kiln_error_set(w->err, -errno, "read directory \"/%s\": %s", rel,
                                      fileop_strerror(errno));
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return kiln_error_set(w->err, r, "read directory \"/%s\": %s", rel,
                                      fileop_strerror(-r));
        }
        for (struct dirent *de; (errno = 0, de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                names = kiln_xreallocarray(names, n + 1, sizeof(*names));
                names[n++] = kiln_xstrdup(de->d_name);
        }
        if (errno)
                r = kiln_error_set(w->err, -errno, "read directory \"/%s\": %s", rel,
                                   fileop_strerror(errno));
        closedir(d);
        if (n)
                qsort(names, n, sizeof(*names), name_cmp);

        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_free_ char *sub = kiln_xasprintf("%s%s%s", rel, *rel ? "/" : "", names[i]);
                _cleanup_free_ char *below = NULL;
                struct stat st;
                bool m = false;

                if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = kiln_error_set(w->err, -errno, "stat \"/%s\": %s", sub,
                                           fileop_strerror(errno));
                        break;
                }
                below = *w->base ? kiln_xstrdup(sub + strlen(w->base) + 1) : kiln_xstrdup(sub);
                (void) kiln_pattern_match(w->pattern, below, &m);
                if (m) {
                        w->out = kiln_xreallocarray(w->out, w->n + 2, sizeof(*w->out));
                        w->out[w->n++] = TAKE_PTR(sub);
                        w->out[w->n] = NULL;
                        continue;
                }
                if (S_ISDIR(st.st_mode) && depth + 1 < w->ncomp) {
                        int sfd = openat(dirfd, names[i],
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sfd < 0) {
                                r = kiln_error_set(w->err, -errno, "open \"/%s\": %s", sub,
                                                   fileop_strerror(errno));
                                break;
                        }
                        r = wild_walk(w, sfd, sub, depth + 1);
                        close(sfd);
                }
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        return r;
}

/* fsutil's rootPath: the last component followed only with follow. */
static int root_path(int rootfd, const char *p, bool follow, char **ret)
{
        _cleanup_free_ char *joined = kiln_xasprintf("/%s", p);
        _cleanup_free_ char *clean = kiln_pattern_clean(joined);
        _cleanup_free_ char *dir = NULL, *rdir = NULL;
        const char *base;
        int r;

        if (streq(clean, "/")) {
                *ret = kiln_xstrdup("");
                return 0;
        }
        if (follow)
                return fileop_resolve(rootfd, clean, true, ret);
        base = strrchr(clean, '/') + 1;
        dir = kiln_xstrndup(clean, (size_t) (base - clean));
        r = fileop_resolve(rootfd, dir, true, &rdir);
        if (r < 0)
                return r;
        *ret = kiln_xasprintf("%s%s%s", rdir, *rdir ? "/" : "", base);
        return 0;
}

int fileop_resolve_wildcards(int rootfd, const char *src, bool follow, char ***ret, size_t *n_ret,
                             struct kiln_error **err)
{
        _cleanup_free_ char *clean = kiln_pattern_clean(src);
        _cleanup_(kiln_buf_release) struct kiln_buf d1 = KILN_BUF_INIT(SIZE_MAX),
                                                    d2 = KILN_BUF_INIT(SIZE_MAX);
        _cleanup_free_ char *base = NULL;
        _cleanup_close_ int fd = -1;
        struct wild w = { .err = err };
        struct stat st;
        bool found = false;
        int r;

        /* splitWildcards */
        (void) kiln_buf_puts(&d1, clean[0] == '/' ? "/" : "");
        (void) kiln_buf_puts(&d2, "");
        for (char *p = clean, *end; *p; p = *end ? end + 1 : end) {
                end = strchrnul(p, '/');
                char save = *end;
                *end = 0;
                if (*p) {
                        if (!found && kiln_pattern_has_wildcards(p))
                                found = true;
                        struct kiln_buf *b = found ? &d2 : &d1;
                        if (b->len && b->data[b->len - 1] != '/')
                                (void) kiln_buf_putc(b, '/');
                        (void) kiln_buf_puts(b, p);
                        if (found)
                                w.ncomp++;
                }
                *end = save;
        }
        if (!found) {
                char **v = kiln_xcalloc(2, sizeof(*v));
                v[0] = kiln_xstrdup(d1.len ? d1.data : ".");
                *ret = v;
                *n_ret = 1;
                return 0;
        }

        r = root_path(rootfd, d1.data, follow, &base);
        if (r < 0)
                return kiln_error_set(err, r, "\"%s\": %s", d1.data, fileop_strerror(-r));
        fd = fileop_open_in_root(rootfd, base, O_PATH | O_NOFOLLOW, 0);
        if (fd < 0)
                return kiln_error_set(err, fd, "\"%s\": %s", d1.data, fileop_strerror(-fd));
        if (fstat(fd, &st) < 0)
                return kiln_error_set(err, -errno, "\"%s\": %s", d1.data, fileop_strerror(errno));
        w.pattern = d2.data;
        w.base = base;
        if (S_ISDIR(st.st_mode)) {
                close(fd);
                fd = fileop_open_in_root(rootfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
                if (fd < 0)
                        return kiln_error_set(err, fd, "\"%s\": %s", d1.data, fileop_strerror(-fd));
                r = wild_walk(&w, fd, base, 0);
                if (r < 0) {
                        kiln_pattern_strv_free(w.out);
                        return r;
                }
        }
        if (!w.out)
                w.out = kiln_xcalloc(1, sizeof(*w.out));
        *ret = w.out;
        *n_ret = w.n;
        return 0;
}

/* ---- archives (ADD) ------------------------------------------------------ */

/* Whether the first bytes look like an archive kiln_content_layer_apply
 * reads: compressed (it checks the tar inside), or a tar header with a
 * valid checksum (Go's tar reader accepts such a first block). */
static bool sniff_archive(int fd)
{
        unsigned char h[512];
        ssize_t n = pread(fd, h, sizeof(h), 0);
        unsigned long sum_u = 0, want = 0;
        long sum_s = 0;
        size_t i, j;
        bool digits = false;

        if (n >= 2 && h[0] == 0x1f && h[1] == 0x8b)
                return true;
        if (n >= 4 && h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd)
                return true;
        if (n >= 3 && h[0] == 'B' && h[1] == 'Z' && h[2] == 'h')
                return true;
        if (n >= 6 && memcmp(h,
                             "\xfd"
                             "7zXZ\x00",
                             6) == 0)
                return true;
        if (n < (ssize_t) sizeof(h))
                return false;
        for (i = 0; i < sizeof(h); i++) {
                unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];
                sum_u += c;
                sum_s += (signed char) c;
        }
        if (sum_u == 8 * ' ')
                return false; /* an all-zero block: the end of an empty archive */
        for (i = 148; i < 156 && (h[i] == ' ' || h[i] == 0); i++)
                ;
        for (j = 156; j > i && (h[j - 1] == ' ' || h[j - 1] == 0); j--)
                ;
        for (; i < j; i++) {
                if (h[i] < '0' || h[i] > '7')
                        return false;
                want = want * 8 + (unsigned long) (h[i] - '0');
                digits = true;
        }
        return digits && (want == sum_u || (long) want == sum_s);
}

/* BuildKit's unpack: returns 1 when src was an archive and was extracted
 * into dest, 0 when it is to be copied instead. */
static int try_unpack(struct copier *cp, const char *src, const char *dest)
{
        _cleanup_free_ char *srel = NULL, *drel = NULL;
        _cleanup_close_ int sfd = -1, dfd = -1;
        _cleanup_(fileop_dirlist_release) struct fileop_dirlist created = { 0 };
        struct kiln_content_layer_stats stats = { 0 };
        struct kiln_content_layer_options lo = {
                .no_whiteouts = true,
                .no_devices = cp->o && cp->o->no_devices,
                .override_owner = cp->owner.set,
                .uid = cp->owner.uid,
                .gid = cp->owner.gid,
                .cancel = cp->o ? cp->o->cancel : NULL,
        };
        struct stat st;
        int r;

        if (fileop_resolve(cp->src_root, src, true, &srel) < 0)
                return 0;
        sfd = fileop_open_in_root(cp->src_root, srel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
        if (sfd < 0 || fstat(sfd, &st) < 0 || !S_ISREG(st.st_mode) || !sniff_archive(sfd))
                return 0;

        r = fileop_resolve(cp->dest_root, dest, true, &drel);
        if (r < 0)
                return kiln_error_set(cp->err, r, "copy \"%s\": resolve \"%s\": %s",
                                      cp->c->src_path, dest, fileop_strerror(-r));
        r = fileop_mkdir_all(cp->dest_root, drel, 0755, &cp->owner, cp->utime, &created);
        if (r < 0)
                return kiln_error_set(cp->err, r, "copy \"%s\": mkdir \"/%s\": %s", cp->c->src_path,
                                      drel, fileop_strerror(-r));
        dfd = fileop_open_in_root(cp->dest_root, drel, O_RDONLY | O_DIRECTORY, 0);
        if (dfd < 0)
                return kiln_error_set(cp->err, dfd, "copy \"%s\": open \"/%s\": %s",
                                      cp->c->src_path, drel, fileop_strerror(-dfd));
        r = kiln_content_layer_apply(sfd, NULL, dfd, &lo, &stats, cp->err);
        /* BuildKit extracts only what decompresses to a readable first tar
         * header; anything else, nothing having been written, is copied as
         * the file it is. Undo the directories made for it. */
        if (r == -EMEDIUMTYPE || (r == -EBADMSG && stats.entries == 0) ||
            (r >= 0 && stats.entries == 0)) {
                if (r < 0)
                        kiln_error_free(TAKE_PTR(*cp->err));
                for (size_t i = created.n; i > 0; i--) {
                        const char *base;
                        int pfd = fileop_open_parent(cp->dest_root, created.paths[i - 1], &base);
                        if (pfd >= 0) {
                                (void) unlinkat(pfd, base, AT_REMOVEDIR);
                                close(pfd);
                        }
                }
                return 0;
        }
        if (r < 0)
                return kiln_error_wrap(cp->err, "copy \"%s\": extract", cp->c->src_path);
        return 1;
}

/* ---- one source ---------------------------------------------------------- */

static void fix_created(struct copier *cp, const struct fileop_dirlist *l)
{
        if (!cp->utime)
                return;
        for (size_t i = l->n; i > 0; i--) {
                const char *base;
                int pfd = fileop_open_parent(cp->dest_root, l->paths[i - 1], &base);
                if (pfd >= 0) {
                        (void) fileop_set_times_at(pfd, base, cp->utime);
                        close(pfd);
                }
        }
}

static const char *path_base(const char *clean)
{
        const char *s = strrchr(clean, '/');
        return s ? s + 1 : clean;
}

/* fsutil's Copy for one source path (after wildcards). */
static int copy_one(struct copier *cp, const char *src, const char *dst)
{
        _cleanup_(fileop_dirlist_release) struct fileop_dirlist created1 = { 0 }, created2 = { 0 };
        _cleanup_free_ char *ensure = NULL, *dclean = NULL, *drel = NULL, *sfollowed = NULL,
                            *target = NULL;
        _cleanup_free_ char *erel = NULL, *sclean = NULL, *joined = NULL;
        _cleanup_close_ int spfd = -1, dpfd = -1;
        const char *sbase, *dbase, *slash;
        uint32_t dirmode = cp->c->has_mode ? cp->c->mode : 0755;
        struct stat sst, dst_st;
        bool dest_exists = false, src_dir;
        int r, fd;

        /* The directory dst names (dst itself when it ends in '/' or "/."). */
        slash = strrchr(dst, '/');
        if (slash && slash[1] && !streq(slash + 1, "."))
                ensure = kiln_xstrndup(dst, (size_t) (slash - dst) + 1);
        else
                ensure = kiln_xstrdup(dst);
        if (*ensure) {
                r = fileop_resolve(cp->dest_root, ensure, true, &erel);
                if (r >= 0)
                        r = fileop_mkdir_all(cp->dest_root, erel, dirmode, &cp->owner, cp->utime,
                                             &created1);
                if (r < 0)
                        return kiln_error_set(cp->err, r, "copy \"%s\": mkdir \"%s\": %s",
                                              cp->c->src_path, ensure, fileop_strerror(-r));
        }

        joined = kiln_xasprintf("/%s", dst);
        dclean = kiln_pattern_clean(joined);
        r = fileop_resolve(cp->dest_root, dclean, true, &drel);
        if (r < 0)
                return kiln_error_set(cp->err, r, "copy \"%s\": resolve \"%s\": %s",
                                      cp->c->src_path, dst, fileop_strerror(-r));

        r = root_path(cp->src_root, src, cp->c->follow_symlinks, &sfollowed);
        if (r < 0)
                return kiln_error_set(cp->err, r, "copy \"%s\": %s", src, fileop_strerror(-r));
        spfd = fileop_open_parent(cp->src_root, sfollowed, &sbase);
        if (spfd < 0)
                return kiln_error_set(cp->err, spfd, "copy \"%s\": %s", src,
                                      fileop_strerror(-spfd));
        if (fstatat(spfd, sbase, &sst, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_set(cp->err, -errno, "copy \"%s\": %s", src,
                                      fileop_strerror(errno));
        src_dir = S_ISDIR(sst.st_mode);

        fd = fileop_open_in_root(cp->dest_root, drel, O_PATH, 0);
        if (fd >= 0) {
                if (fstat(fd, &dst_st) == 0)
                        dest_exists = true;
                close(fd);
        } else if (fd != -ENOENT) {
                return kiln_error_set(cp->err, fd, "copy \"%s\": stat destination \"%s\": %s",
                                      cp->c->src_path, dst, fileop_strerror(-fd));
        }

        /* prepareTargetDir */
        if ((!cp->c->dir_copy_contents && src_dir && dest_exists) ||
            (!src_dir && dest_exists && S_ISDIR(dst_st.st_mode))) {
                _cleanup_free_ char *sj = kiln_xasprintf("/%s", src);
                sclean = kiln_pattern_clean(sj);
                const char *b = path_base(sclean);
                if (*b) {
                        char *n = kiln_xasprintf("%s%s%s", drel, *drel ? "/" : "", b);
                        free(drel);
                        drel = n;
                }
        }
        if (cp->c->dir_copy_contents && src_dir && !dest_exists) {
                target = kiln_xstrdup(drel);
        } else {
                const char *s = strrchr(drel, '/');
                target = s ? kiln_xstrndup(drel, (size_t) (s - drel)) : kiln_xstrdup("");
        }
        r = fileop_mkdir_all(cp->dest_root, target, dirmode, &cp->owner, cp->utime, &created2);
        if (r < 0)
                return kiln_error_set(cp->err, r, "copy \"%s\": mkdir \"/%s\": %s", cp->c->src_path,
                                      target, fileop_strerror(-r));

        if (strlen(drel) > KILN_LIMIT_FILEOP_PATH)
                return kiln_error_set(cp->err, -ENAMETOOLONG,
                                      "copy \"%s\": destination path too long", cp->c->src_path);
        dpfd = fileop_open_parent(cp->dest_root, drel, &dbase);
        if (dpfd < 0)
                return kiln_error_set(cp->err, dpfd, "copy \"%s\": open destination \"/%s\": %s",
                                      cp->c->src_path, drel, fileop_strerror(-dpfd));

        cp->depth = 0;
        cp->levels[0] = (struct level){ .src_fd = spfd, .dst_fd = dpfd, .copied = true };
        cp->comp_len = 0;
        cp->comp[0] = 0;
        cp->dpath_len = strlen(drel);
        memcpy(cp->dpath, drel, cp->dpath_len + 1);
        r = copy_entry(cp, sbase, dbase, false, NULL, NULL);
        cp->levels[0] = (struct level){ .src_fd = -1, .dst_fd = -1 };
        if (r < 0)
                return r;
        fix_created(cp, &created2);
        fix_created(cp, &created1);
        return 0;
}

int fileop_copy(const struct kiln_llb_file_copy *c, int dest_fd, int src_fd,
                const struct kiln_fileop_options *o, struct kiln_error **err)
{
        _cleanup_free_ struct copier *cp = NULL;
        _cleanup_free_ char *srcpath = NULL, *destpath = NULL;
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *inc = NULL, *exc = NULL;
        struct fileop_modeset modeset = { 0 };
        struct timespec utime;
        char **matches = NULL;
        size_t n = 0;
        int r;

        if (!c->src_path || !c->dest)
                return kiln_error_set(err, -EINVAL, "copy: source and destination are required");
        srcpath = fileop_clean_path(c->src_path);
        destpath = fileop_clean_path(c->dest);

        if (!c->create_dest_path) {
                _cleanup_free_ char *rel = NULL;
                r = fileop_resolve(dest_fd, c->dest, true, &rel);
                if (r >= 0) {
                        const char *s = strrchr(rel, '/');
                        _cleanup_free_ char *dir =
                                s ? kiln_xstrndup(rel, (size_t) (s - rel)) : kiln_xstrdup("");
                        r = fileop_open_in_root(dest_fd, dir, O_PATH, 0);
                        if (r >= 0)
                                close(r);
                }
                if (r < 0)
                        return kiln_error_set(err, r, "copy \"%s\": failed to stat \"%s\": %s",
                                              c->src_path, c->dest, fileop_strerror(-r));
        }

        cp = kiln_xcalloc(1, sizeof(*cp));
        cp->c = c;
        cp->o = o;
        cp->err = err;
        cp->dest_root = dest_fd;
        cp->src_root = src_fd;
        r = fileop_owner_resolve(dest_fd, &c->chown, &cp->owner, err);
        if (r < 0)
                return kiln_error_wrap(err, "copy \"%s\"", c->src_path);
        if (c->has_timestamp && c->timestamp != -1) {
                utime.tv_sec = (time_t) (c->timestamp / 1000000000);
                utime.tv_nsec = (long) (c->timestamp % 1000000000);
                if (utime.tv_nsec < 0) {
                        utime.tv_sec--;
                        utime.tv_nsec += 1000000000;
                }
                cp->utime = &utime;
        }
        if (c->mode_str && *c->mode_str) {
                if (fileop_modeset_parse(c->mode_str, &modeset) < 0)
                        return kiln_error_set(err, -EINVAL,
                                              "copy \"%s\": invalid chmod mode \"%s\"", c->src_path,
                                              c->mode_str);
                cp->modeset = &modeset;
        }
        if (c->include_patterns.n) {
                r = kiln_pattern_matcher_new((const char *const *) c->include_patterns.v,
                                             c->include_patterns.n, &inc, err);
                if (r < 0)
                        goto out_wrap_inc;
                cp->inc = inc;
                cp->n_inc = kiln_pattern_matcher_count(inc);
                cp->inc_info =
                        kiln_xcalloc((KILN_LIMIT_FILEOP_DEPTH + 2) * (cp->n_inc + 1), sizeof(bool));
        }
        if (c->exclude_patterns.n) {
                r = kiln_pattern_matcher_new((const char *const *) c->exclude_patterns.v,
                                             c->exclude_patterns.n, &exc, err);
                if (r < 0)
                        goto out_wrap_exc;
                cp->exc = exc;
                cp->n_exc = kiln_pattern_matcher_count(exc);
                cp->exc_info =
                        kiln_xcalloc((KILN_LIMIT_FILEOP_DEPTH + 2) * (cp->n_exc + 1), sizeof(bool));
        }

        if (src_fd < 0) {
                /* A scratch source holds nothing. */
                if (c->allow_wildcard && kiln_pattern_has_wildcards(srcpath) &&
                    c->allow_empty_wildcard) {
                        r = 0;
                        goto out;
                }
                r = kiln_error_set(err, -ENOENT, "copy \"%s\": %s", c->src_path,
                                   fileop_strerror(ENOENT));
                goto out;
        }

        for (size_t i = 0; i < c->required_paths.n; i++) {
                _cleanup_free_ char *rel = NULL;
                r = root_path(src_fd, c->required_paths.v[i], false, &rel);
                if (r >= 0) {
                        r = fileop_open_in_root(src_fd, rel, O_PATH | O_NOFOLLOW, 0);
                        if (r >= 0)
                                close(r);
                }
                if (r < 0) {
                        r = kiln_error_set(err, r == -ENOTDIR ? -ENOENT : r,
                                           "copy \"%s\": \"%s\": not found", c->src_path,
                                           c->required_paths.v[i]);
                        goto out;
                }
        }

        if (!c->allow_wildcard) {
                matches = kiln_xcalloc(2, sizeof(*matches));
                matches[0] = kiln_xstrdup(srcpath);
                n = 1;
        } else {
                r = fileop_resolve_wildcards(src_fd, srcpath, c->follow_symlinks, &matches, &n,
                                             err);
                if (r < 0) {
                        kiln_error_wrap(err, "copy \"%s\"", c->src_path);
                        goto out;
                }
                if (n == 0) {
                        r = c->allow_empty_wildcard
                                    ? 0
                                    : kiln_error_set(err, -ENOENT, "copy \"%s\": not found",
                                                     c->src_path);
                        goto out;
                }
        }

        r = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (c->attempt_unpack) {
                        r = try_unpack(cp, matches[i], destpath);
                        if (r != 0)
                                continue;
                }
                r = copy_one(cp, matches[i], destpath);
        }
        if (r > 0)
                r = 0;
        goto out;

out_wrap_inc:
        kiln_error_wrap(err, "copy \"%s\": invalid include patterns", c->src_path);
        goto out;
out_wrap_exc:
        kiln_error_wrap(err, "copy \"%s\": invalid exclude patterns", c->src_path);
out:
        kiln_pattern_strv_free(matches);
        hl_release(&cp->links);
        free(cp->buf);
        free(cp->inc_info);
        free(cp->exc_info);
        fileop_modeset_release(&modeset);
        return r;
}
