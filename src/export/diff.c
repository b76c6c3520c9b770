/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trees and snapshot diffs as tars: one walker for all three cases.
 *
 * The walker visits the "new" tree depth first, names sorted bytewise per
 * directory (Go's filepath.Walk), and decides per entry what changed against
 * the "old" tree, then hands the change to a port of containerd's
 * ChangeWriter (parents written before their children, hard links as link
 * entries, whiteouts for deletions). Per directory it works in one of two
 * modes:
 *   DOUBLE  both directories listed and merged by name (continuity's
 *           doubleWalkDiff, which compares whole paths with '/' sorting
 *           first; merging sorted listings level by level gives the same
 *           order). A name only in old is deleted, only in new added, in
 *           both modified unless sameFile says equal. With no old directory
 *           everything is added: that is the whole-tree export.
 *   UPPER   only the new directory (an overlayfs upper directory) is listed,
 *           each name looked up in old (BuildKit's overlay differ): 0/0
 *           character devices are deletions, opaque directories switch to
 *           DOUBLE for their subtree.
 * One deliberate difference from BuildKit's overlay differ: an entry it
 * finds unchanged but hard-linked is reported as unmodified (as the double
 * walk does) instead of dropped, so that "ln a b" of a lower file gives the
 * same layer with either driver.
 */
#include "export/tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/macro.h"
#include "snapshot/snapshot.h"

/* Bytes of one getdents64 call. */
#define DIRENT_BUF (64u * 1024u)
/* Bytes of the buffers comparing two files' contents. */
#define COMPARE_BUF (256u * 1024u)
/* A symbolic link's target (Linux refuses longer ones). */
#define SYMLINK_MAX 4096u

enum mode {
        MODE_DOUBLE,
        MODE_UPPER,
};

enum change {
        CHANGE_UNMODIFIED,
        CHANGE_ADD,
        CHANGE_MODIFY,
        CHANGE_DELETE,
};

/* A file's exportable extended attributes, sorted by name. */
struct xset {
        struct kiln_buf data; /* names and values */
        size_t *name_off;
        size_t *value_off;
        size_t *value_len;
        size_t n, cap;
        struct kiln_export_tar_xattr *v; /* built by xset_finish */
};

/* Inodes with more than one link: the first path written, or the paths of
 * unmodified links seen before any was written. */
struct link_ent {
        dev_t dev;
        ino_t ino;
        char *source;
        char **refs;
        size_t n_refs;
};

struct walker {
        struct kiln_export_tar_writer *tw;
        kiln_export_write_fn sink;
        void *sink_userdata;
        bool sink_failed;
        int root_fd; /* the new tree, for parents written out of walk order */
        bool new_is_upper;
        char *path; /* the current entry's path, relative */
        size_t path_len, path_cap;
        unsigned depth;
        uint64_t entries;
        struct link_ent *links;
        size_t n_links, cap_links; /* open addressing, cap a power of two */
        char **dirs;               /* written directories: a set */
        size_t n_dirs, cap_dirs;
        char *xlist; /* XATTR_LIST_MAX */
        char *xvalue;
        struct xset xa, xb;
        dev_t no_xattr_dev; /* a file system without extended attributes */
        bool no_xattr_known;
        char *cmp1, *cmp2;
        char dirent_buf[DIRENT_BUF];
};

static int close_fd(int fd)
{
        if (fd >= 0)
                (void) close(fd);
        return -1;
}

static int sink_trampoline(void *userdata, const void *buf, size_t n, struct kiln_error **err)
{
        struct walker *w = userdata;
        int r = w->sink(w->sink_userdata, buf, n, err);

        if (r < 0)
                w->sink_failed = true;
        return r;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
        const unsigned char *s = p;
        uint64_t h = 1469598103934665603ULL;

        for (size_t i = 0; i < n; i++) {
                h ^= s[i];
                h *= 1099511628211ULL;
        }
        return h;
}

static uint64_t hash_inode(dev_t dev, ino_t ino)
{
        uint64_t k[2] = { (uint64_t) dev, (uint64_t) ino };

        return hash_bytes(k, sizeof(k));
}

static struct link_ent *link_find(struct walker *w, dev_t dev, ino_t ino, bool create)
{
        size_t mask, i;

        if (create && (w->n_links + 1) * 2 > w->cap_links) {
                size_t cap = w->cap_links ? w->cap_links * 2 : 256;
                struct link_ent *t = kiln_xcalloc(cap, sizeof(*t));

                for (size_t j = 0; j < w->cap_links; j++) {
                        struct link_ent *e = &w->links[j];

                        if (!e->source && !e->refs)
                                continue;
                        for (i = hash_inode(e->dev, e->ino) & (cap - 1); t[i].source || t[i].refs;
                             i = (i + 1) & (cap - 1))
                                ;
                        t[i] = *e;
                }
                free(w->links);
                w->links = t;
                w->cap_links = cap;
        }
        if (w->cap_links == 0)
                return NULL;
        mask = w->cap_links - 1;
        for (i = hash_inode(dev, ino) & mask; w->links[i].source || w->links[i].refs;
             i = (i + 1) & mask)
                if (w->links[i].dev == dev && w->links[i].ino == ino)
                        return &w->links[i];
        if (!create)
                return NULL;
        w->n_links++;
        w->links[i].dev = dev;
        w->links[i].ino = ino;
        return &w->links[i];
}

/* Adds path to the set of written directories; false when it was there. */
static bool dirs_add(struct walker *w, const char *path, size_t len)
{
        size_t mask, i;

        if ((w->n_dirs + 1) * 2 > w->cap_dirs) {
                size_t cap = w->cap_dirs ? w->cap_dirs * 2 : 256;
                char **t = kiln_xcalloc(cap, sizeof(*t));

                for (size_t j = 0; j < w->cap_dirs; j++) {
                        if (!w->dirs[j])
                                continue;
                        for (i = hash_bytes(w->dirs[j], strlen(w->dirs[j])) & (cap - 1); t[i];
                             i = (i + 1) & (cap - 1))
                                ;
                        t[i] = w->dirs[j];
                }
                free(w->dirs);
                w->dirs = t;
                w->cap_dirs = cap;
        }
        mask = w->cap_dirs - 1;
        for (i = hash_bytes(path, len) & mask; w->dirs[i]; i = (i + 1) & mask)
                if (strlen(w->dirs[i]) == len && memcmp(w->dirs[i], path, len) == 0)
                        return false;
        w->dirs[i] = kiln_xstrndup(path, len);
        w->n_dirs++;
        return true;
}

static void xset_reset(struct xset *x)
{
        kiln_buf_reset(&x->data);
        x->n = 0;
}

static void xset_release(struct xset *x)
{
        kiln_buf_release(&x->data);
        free(x->name_off);
        free(x->value_off);
        free(x->value_len);
        free(x->v);
        *x = (struct xset){ 0 };
}

/* overlayfs bookkeeping and host security labels are not image content. */
static bool xattr_exportable(const char *name)
{
        return !startswith(name, "trusted.overlay.") && !startswith(name, "user.overlay.") &&
               !streq(name, "security.selinux");
}

/* The attributes in x->v, sorted by name (valid until the next reset). */
static void xset_finish(struct xset *x)
{
        x->v = kiln_xreallocarray(x->v, x->n ? x->n : 1, sizeof(*x->v));
        for (size_t i = 0; i < x->n; i++)
                x->v[i] = (struct kiln_export_tar_xattr){ x->data.data + x->name_off[i],
                                                          x->data.data + x->value_off[i],
                                                          x->value_len[i] };
        for (size_t i = 1; i < x->n; i++) /* few entries: insertion sort */
                for (size_t j = i; j > 0 && strcmp(x->v[j - 1].name, x->v[j].name) > 0; j--) {
                        struct kiln_export_tar_xattr t = x->v[j];

                        x->v[j] = x->v[j - 1];
                        x->v[j - 1] = t;
                }
}

/* An error about the entry at w->path (the tree's root: "."). */
static int fail(struct walker *w, int r, struct kiln_error **err, const char *what)
{
        return kiln_error_set(err, r, "%s '%s': %s", what, w->path_len ? w->path : ".",
                              strerror(-r));
}

static int strcmp_ptr(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The exportable extended attributes of name below dirfd (through fd when it
 * is an open file descriptor of it) into x. */
static int xattrs_read(struct walker *w, const char *path, int dirfd, const char *name, int fd,
                       const struct stat *st, struct xset *x, struct kiln_error **err)
{
        char proc[64 + NAME_MAX];
        ssize_t n;

        xset_reset(x);
        if (w->no_xattr_known && w->no_xattr_dev == st->st_dev) {
                xset_finish(x);
                return 0;
        }
        if (fd < 0)
                (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dirfd, name);
        n = fd >= 0 ? flistxattr(fd, w->xlist, XATTR_LIST_MAX)
                    : llistxattr(proc, w->xlist, XATTR_LIST_MAX);
        if (n < 0) {
                if (errno == ENOTSUP || errno == EOPNOTSUPP) {
                        w->no_xattr_dev = st->st_dev;
                        w->no_xattr_known = true;
                        xset_finish(x);
                        return 0;
                }
                return kiln_error_set(err, -errno, "list extended attributes of '%s': %s", path,
                                      strerror(errno));
        }
        for (ssize_t i = 0; i < n; i += (ssize_t) strlen(w->xlist + i) + 1) {
                const char *key = w->xlist + i;
                ssize_t v;
                int r;

                if (!xattr_exportable(key))
                        continue;
                v = fd >= 0 ? fgetxattr(fd, key, w->xvalue, XATTR_SIZE_MAX)
                            : lgetxattr(proc, key, w->xvalue, XATTR_SIZE_MAX);
                if (v < 0) {
                        if (errno == ENODATA)
                                continue;
                        return kiln_error_set(err, -errno, "read extended attributes of '%s': %s",
                                              path, strerror(errno));
                }
                if (x->n == x->cap) {
                        x->cap = x->cap ? x->cap * 2 : 8;
                        x->name_off = kiln_xreallocarray(x->name_off, x->cap, sizeof(size_t));
                        x->value_off = kiln_xreallocarray(x->value_off, x->cap, sizeof(size_t));
                        x->value_len = kiln_xreallocarray(x->value_len, x->cap, sizeof(size_t));
                }
                x->name_off[x->n] = x->data.len;
                r = kiln_buf_append(&x->data, key, strlen(key) + 1);
                x->value_off[x->n] = x->data.len;
                if (r >= 0)
                        r = kiln_buf_append(&x->data, w->xvalue, (size_t) v);
                if (r < 0)
                        return kiln_error_set(
                                err, -E2BIG, "extended attributes of '%s': more than %u bytes",
                                w->path_len ? w->path : ".", KILN_EXPORT_TAR_LIMIT_XATTRS);
                x->value_len[x->n++] = (size_t) v;
        }
        xset_finish(x);
        return 0;
}

static bool xset_equal(const struct xset *a, const struct xset *b)
{
        if (a->n != b->n)
                return false;
        for (size_t i = 0; i < a->n; i++)
                if (!streq(a->v[i].name, b->v[i].name) || a->v[i].size != b->v[i].size ||
                    memcmp(a->v[i].value, b->v[i].value, a->v[i].size) != 0)
                        return false;
        return true;
}

/* The sorted names of directory fd (freshly opened: read from offset 0):
 * pointers into *arena, each name preceded by its d_type byte, without "."
 * and "..". */
static int list_names(struct walker *w, int fd, char **arena, char ***ret, size_t *n_ret,
                      struct kiln_error **err)
{
        size_t len = 0, cap = 0, n = 0;
        _cleanup_free_ char *a = NULL;
        _cleanup_free_ size_t *offs = NULL;
        size_t cap_offs = 0;
        char **v;

        for (;;) {
                ssize_t k = getdents64(fd, w->dirent_buf, sizeof(w->dirent_buf));

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return fail(w, -errno, err, "read directory");
                }
                if (k == 0)
                        break;
                for (ssize_t i = 0; i < k;) {
                        struct dirent64 *d = (struct dirent64 *) (void *) (w->dirent_buf + i);
                        size_t l = strlen(d->d_name);

                        i += d->d_reclen;
                        if (streq(d->d_name, ".") || streq(d->d_name, ".."))
                                continue;
                        if (len + l + 2 > cap) {
                                cap = cap ? cap * 2 : 4096;
                                while (cap < len + l + 2)
                                        cap *= 2;
                                a = kiln_xrealloc(a, cap);
                        }
                        if (n == cap_offs) {
                                cap_offs = cap_offs ? cap_offs * 2 : 64;
                                offs = kiln_xreallocarray(offs, cap_offs, sizeof(*offs));
                        }
                        a[len] = (char) d->d_type;
                        memcpy(a + len + 1, d->d_name, l + 1);
                        offs[n++] = len + 1;
                        len += l + 2;
                }
        }
        v = kiln_xreallocarray(NULL, n ? n : 1, sizeof(*v));
        for (size_t i = 0; i < n; i++)
                v[i] = a + offs[i];
        qsort_safe(v, n, sizeof(*v), strcmp_ptr);
        *arena = TAKE_PTR(a);
        *ret = v;
        *n_ret = n;
        return 0;
}

static int path_push(struct walker *w, const char *name, size_t *saved, struct kiln_error **err)
{
        size_t l = strlen(name), need = w->path_len + (w->path_len ? 1 : 0) + l;

        if (need > KILN_EXPORT_TAR_LIMIT_PATH)
                return kiln_error_set(err, -ENAMETOOLONG,
                                      "export '%.200s...': path longer than %u bytes", w->path,
                                      KILN_EXPORT_TAR_LIMIT_PATH);
        if (need + 1 > w->path_cap) {
                w->path_cap = (need + 1) * 2;
                w->path = kiln_xrealloc(w->path, w->path_cap);
        }
        *saved = w->path_len;
        if (w->path_len)
                w->path[w->path_len++] = '/';
        memcpy(w->path + w->path_len, name, l + 1);
        w->path_len += l;
        return 0;
}

static void path_pop(struct walker *w, size_t saved)
{
        w->path_len = saved;
        w->path[saved] = 0;
}

static int count_entry(struct walker *w, const char *path, struct kiln_error **err)
{
        if (++w->entries > KILN_EXPORT_TAR_LIMIT_ENTRIES)
                return kiln_error_set(err, -E2BIG, "export '%s': more than %u entries", path,
                                      KILN_EXPORT_TAR_LIMIT_ENTRIES);
        return 0;
}

static int handle_change(struct walker *w, enum change k, const char *path, size_t path_len,
                         int dirfd, const char *name, const struct stat *st, int fd,
                         struct kiln_error **err);

/* containerd's includeParents: the parent directory of path, when not
 * written yet, is written first (and its own parents before it). Parents
 * are opened from the root without following symbolic links: they are the
 * directories the walk came through. */
static int include_parents(struct walker *w, const char *path, size_t len, struct kiln_error **err)
{
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        _cleanup_free_ char *parent = NULL;
        _cleanup_close_ int fd = -1;
        const char *slash = memrchr(path, '/', len);
        struct stat st;
        size_t plen;

        if (!slash)
                return 0;
        plen = (size_t) (slash - path);
        if (!dirs_add(w, path, plen))
                return 0;
        parent = kiln_xstrndup(path, plen);
        fd = (int) syscall(SYS_openat2, w->root_fd, parent, &how, sizeof(how));
        if (fd < 0 || fstat(fd, &st) < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", parent, strerror(errno));
        return handle_change(w, CHANGE_MODIFY, parent, plen, -1, NULL, &st, fd, err);
}

/* A regular file's descriptor, checked to be the file that was stat'ed. */
static int open_file(int dirfd, const char *name, const struct stat *st, const char *path,
                     struct kiln_error **err)
{
        struct stat fst;
        int fd;

        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", path, strerror(errno));
        if (fstat(fd, &fst) < 0) {
                int r = -errno;

                (void) close(fd);
                return kiln_error_set(err, r, "stat '%s': %s", path, strerror(-r));
        }
        if (!S_ISREG(fst.st_mode) || fst.st_ino != st->st_ino || fst.st_dev != st->st_dev) {
                (void) close(fd);
                return kiln_error_set(err, -EIO, "open '%s': file changed while being read", path);
        }
        return fd;
}

/* containerd's ChangeWriter.HandleChange for the entry path (name below
 * dirfd, or the open descriptor fd of a directory, with stat st). */
static int handle_change(struct walker *w, enum change k, const char *path, size_t path_len,
                         int dirfd, const char *name, const struct stat *st, int fd,
                         struct kiln_error **err)
{
        _cleanup_close_ int ffd = -1;
        struct kiln_export_tar_meta m;
        char **extra = NULL;
        size_t n_extra = 0;
        const char *source = NULL;
        int r;

        if (k == CHANGE_DELETE) {
                r = include_parents(w, path, path_len, err);
                if (r >= 0)
                        r = count_entry(w, path, err);
                if (r >= 0)
                        r = kiln_export_tar_writer_add_whiteout(w->tw, path, err);
                return r;
        }
        if (S_ISSOCK(st->st_mode))
                return 0;

        if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
                struct link_ent *le = link_find(w, st->st_dev, st->st_ino, true);

                if (le->source)
                        source = le->source;
                else if (k == CHANGE_UNMODIFIED) {
                        le->refs = kiln_xreallocarray(le->refs, le->n_refs + 1, sizeof(char *));
                        le->refs[le->n_refs++] = kiln_xstrndup(path, path_len);
                        return 0;
                } else {
                        le->source = kiln_xstrndup(path, path_len);
                        extra = TAKE_PTR(le->refs);
                        n_extra = le->n_refs;
                        le->n_refs = 0;
                }
        } else if (k == CHANGE_UNMODIFIED)
                return 0;

        if (S_ISREG(st->st_mode) && fd < 0 && !source && st->st_size > 0) {
                r = open_file(dirfd, name, st, path, err);
                if (r < 0)
                        goto out;
                fd = ffd = r;
        }
        /* Parents first: writing them reuses w->xb. */
        r = include_parents(w, path, path_len, err);
        if (r >= 0)
                r = count_entry(w, path, err);
        if (r >= 0)
                r = xattrs_read(w, path, dirfd, name, fd, st, &w->xb, err);
        if (r < 0)
                goto out;
        m = (struct kiln_export_tar_meta){
                .mode = st->st_mode & 07777,
                .uid = st->st_uid,
                .gid = st->st_gid,
                .mtime = st->st_mtim.tv_sec,
                .xattrs = w->xb.v,
                .n_xattrs = w->xb.n,
        };

        if (source)
                r = kiln_export_tar_writer_add_hardlink(w->tw, path, &m, source, err);
        else if (S_ISREG(st->st_mode)) {
                if (fd >= 0 && st->st_size > 0)
                        r = kiln_export_tar_writer_add_file_fd(w->tw, path, &m, fd,
                                                               (uint64_t) st->st_size, err);
                else
                        r = kiln_export_tar_writer_add_file_data(w->tw, path, &m, NULL, 0, err);
        } else if (S_ISDIR(st->st_mode)) {
                (void) dirs_add(w, path, path_len);
                r = kiln_export_tar_writer_add_dir(w->tw, path, &m, err);
        } else if (S_ISLNK(st->st_mode)) {
                char target[SYMLINK_MAX + 1];
                ssize_t n = readlinkat(dirfd, name, target, sizeof(target));

                if (n < 0) {
                        r = kiln_error_set(err, -errno, "read link '%s': %s", path,
                                           strerror(errno));
                        goto out;
                }
                if ((size_t) n >= sizeof(target)) {
                        r = kiln_error_set(err, -ENAMETOOLONG,
                                           "read link '%s': target longer than %u bytes", path,
                                           SYMLINK_MAX);
                        goto out;
                }
                target[n] = 0;
                r = kiln_export_tar_writer_add_symlink(w->tw, path, &m, target, err);
        } else if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
                r = kiln_export_tar_writer_add_device(w->tw, path, &m, S_ISBLK(st->st_mode),
                                                      major(st->st_rdev), minor(st->st_rdev), err);
        else if (S_ISFIFO(st->st_mode))
                r = kiln_export_tar_writer_add_fifo(w->tw, path, &m, err);
        else
                r = kiln_error_set(err, -EBADF, "export '%s': unknown file type %o", path,
                                   (unsigned) (st->st_mode & S_IFMT));
        if (r < 0)
                goto out;

        /* Unmodified links seen before this first written one. */
        if (extra) {
                _cleanup_free_ char *src = kiln_xstrndup(path, path_len);

                for (size_t i = 0; i < n_extra && r >= 0; i++) {
                        r = include_parents(w, extra[i], strlen(extra[i]), err);
                        if (r >= 0)
                                r = count_entry(w, extra[i], err);
                        if (r >= 0)
                                r = xattrs_read(w, path, dirfd, name, fd, st, &w->xb, err);
                        if (r < 0)
                                break;
                        m.xattrs = w->xb.v;
                        m.n_xattrs = w->xb.n;
                        r = kiln_export_tar_writer_add_hardlink(w->tw, extra[i], &m, src, err);
                }
        }
out:
        for (size_t i = 0; i < n_extra; i++)
                free(extra[i]);
        free(extra);
        return r;
}

static int read_full(int fd, char *buf, size_t n, size_t *got)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = read(fd, buf + done, n - done);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                done += (size_t) k;
        }
        *got = done;
        return 0;
}

/* Compares the contents of two regular files of the same size. */
static int same_content(struct walker *w, int old_dirfd, int new_dirfd, const char *name,
                        const struct stat *ost, const struct stat *nst, bool *same,
                        struct kiln_error **err)
{
        _cleanup_close_ int a = -1, b = -1;
        int r;

        r = open_file(old_dirfd, name, ost, w->path, err);
        if (r < 0)
                return r;
        a = r;
        r = open_file(new_dirfd, name, nst, w->path, err);
        if (r < 0)
                return r;
        b = r;
        if (!w->cmp1) {
                w->cmp1 = kiln_xmalloc(COMPARE_BUF);
                w->cmp2 = kiln_xmalloc(COMPARE_BUF);
        }
        for (;;) {
                size_t n1, n2;

                r = read_full(a, w->cmp1, COMPARE_BUF, &n1);
                if (r >= 0)
                        r = read_full(b, w->cmp2, COMPARE_BUF, &n2);
                if (r < 0)
                        return fail(w, r, err, "compare");
                if (n1 != n2 || memcmp(w->cmp1, w->cmp2, n1) != 0) {
                        *same = false;
                        return 0;
                }
                if (n1 < COMPARE_BUF) {
                        *same = true;
                        return 0;
                }
        }
}

/* continuity's sameFile (BuildKit's sameDirent): metadata, then extended
 * attributes, then, when both mtimes may have been truncated to seconds,
 * symlink targets or contents. The cheap checks come first; the answer is
 * the same as in continuity's order. */
static int same_file(struct walker *w, int old_dirfd, int new_dirfd, const char *name,
                     const struct stat *o, const struct stat *n, bool *same,
                     struct kiln_error **err)
{
        bool truncated = false;
        int r;

        *same = false;
        if (o->st_dev == n->st_dev && o->st_ino == n->st_ino) {
                *same = true;
                return 0;
        }
        if (o->st_mode != n->st_mode || o->st_uid != n->st_uid || o->st_gid != n->st_gid ||
            o->st_rdev != n->st_rdev)
                return 0;
        if (!S_ISDIR(o->st_mode)) {
                if (o->st_size != n->st_size || o->st_mtim.tv_sec != n->st_mtim.tv_sec)
                        return 0;
                truncated = o->st_mtim.tv_nsec == 0 && n->st_mtim.tv_nsec == 0;
                if (!truncated && o->st_mtim.tv_nsec != n->st_mtim.tv_nsec)
                        return 0;
        }
        r = xattrs_read(w, w->path, old_dirfd, name, -1, o, &w->xa, err);
        if (r >= 0)
                r = xattrs_read(w, w->path, new_dirfd, name, -1, n, &w->xb, err);
        if (r < 0)
                return r;
        if (!xset_equal(&w->xa, &w->xb))
                return 0;
        if (truncated) {
                if (S_ISLNK(o->st_mode)) {
                        char t1[SYMLINK_MAX + 1], t2[SYMLINK_MAX + 1];
                        ssize_t n1 = readlinkat(old_dirfd, name, t1, sizeof(t1));
                        ssize_t n2 = readlinkat(new_dirfd, name, t2, sizeof(t2));

                        if (n1 < 0 || n2 < 0)
                                return fail(w, -errno, err, "read link");
                        *same = n1 == n2 && memcmp(t1, t2, (size_t) n1) == 0;
                        return 0;
                }
                if (S_ISREG(o->st_mode) && o->st_size > 0)
                        return same_content(w, old_dirfd, new_dirfd, name, o, n, same, err);
        }
        *same = true;
        return 0;
}

static int is_opaque(struct walker *w, int fd, bool *ret, struct kiln_error **err)
{
        static const char *const keys[] = { "trusted.overlay.opaque", "user.overlay.opaque" };

        *ret = false;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                char v[2];
                ssize_t n = fgetxattr(fd, keys[i], v, sizeof(v));

                if (n < 0) {
                        if (errno == ENODATA || errno == ENOTSUP || errno == ERANGE)
                                continue;
                        return fail(w, -errno, err, "read extended attributes of");
                }
                if (n == 1 && v[0] == 'y') {
                        *ret = true;
                        return 0;
                }
        }
        return 0;
}

static int walk_dir(struct walker *w, int new_fd, int old_fd, enum mode mode,
                    struct kiln_error **err);

/* One name of the new directory (old_fd: the same directory in the old
 * tree, or -1). */
static int visit(struct walker *w, int new_fd, int old_fd, const char *name, enum mode mode,
                 struct kiln_error **err)
{
        _cleanup_close_ int cfd = -1, ofd = -1, ffd = -1;
        struct stat st, ost;
        bool have_old = false, have_st = false, record = true, same;
        enum change k;
        size_t saved;
        int r;

        r = path_push(w, name, &saved, err);
        if (r < 0)
                return r;
        if (old_fd >= 0) {
                if (fstatat(old_fd, name, &ost, AT_SYMLINK_NOFOLLOW) == 0)
                        have_old = true;
                else if (errno != ENOENT) {
                        r = fail(w, -errno, err, "stat parent's");
                        goto out;
                }
        }
        /* An added regular file is read anyway: open it first and stat the
         * descriptor (one call fewer per file). O_NOFOLLOW and O_NONBLOCK:
         * whatever replaced it is never followed nor waited for. */
        if (!have_old && (unsigned char) name[-1] == DT_REG) {
                ffd = openat(new_fd, name,
                             O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
                if (ffd >= 0 && fstat(ffd, &st) == 0 && S_ISREG(st.st_mode))
                        have_st = true;
                else
                        ffd = close_fd(ffd);
        }
        if (!have_st && fstatat(new_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = fail(w, -errno, err, "stat");
                goto out;
        }
        /* A whiteout of an overlay upper directory: a deletion, or nothing
         * when the parent has no such entry. */
        if (w->new_is_upper && S_ISCHR(st.st_mode) && st.st_rdev == 0) {
                if (have_old)
                        r = handle_change(w, CHANGE_DELETE, w->path, w->path_len, -1, NULL, NULL,
                                          -1, err);
                goto out;
        }
        k = have_old ? CHANGE_MODIFY : CHANGE_ADD;
        if (have_old) {
                r = same_file(w, old_fd, new_fd, name, &ost, &st, &same, err);
                if (r < 0)
                        goto out;
                if (same) {
                        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1)
                                k = CHANGE_UNMODIFIED;
                        else
                                record = false;
                }
        }
        if (S_ISDIR(st.st_mode)) {
                if (w->depth >= KILN_EXPORT_TAR_LIMIT_DEPTH) {
                        r = kiln_error_set(err, -ELOOP,
                                           "export '%.200s': nested deeper than %u directories",
                                           w->path, KILN_EXPORT_TAR_LIMIT_DEPTH);
                        goto out;
                }
                cfd = openat(new_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (cfd < 0) {
                        r = fail(w, -errno, err, "open");
                        goto out;
                }
        }
        if (record) {
                r = handle_change(w, k, w->path, w->path_len, new_fd, name, &st,
                                  cfd >= 0 ? cfd : ffd, err);
                if (r < 0)
                        goto out;
        }
        if (S_ISDIR(st.st_mode)) {
                enum mode child = mode;

                if (have_old && S_ISDIR(ost.st_mode)) {
                        ofd = openat(old_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (ofd < 0) {
                                r = fail(w, -errno, err, "open parent's");
                                goto out;
                        }
                }
                if (mode == MODE_UPPER && have_old) {
                        bool opaque;

                        r = is_opaque(w, cfd, &opaque, err);
                        if (r < 0)
                                goto out;
                        if (opaque)
                                child = MODE_DOUBLE;
                }
                w->depth++;
                r = walk_dir(w, cfd, ofd, child, err);
                w->depth--;
        }
out:
        path_pop(w, saved);
        return r;
}

static int walk_dir(struct walker *w, int new_fd, int old_fd, enum mode mode,
                    struct kiln_error **err)
{
        _cleanup_free_ char *arena_new = NULL, *arena_old = NULL;
        _cleanup_free_ char **names_new = NULL, **names_old = NULL;
        size_t n_new = 0, n_old = 0, i = 0, j = 0;
        int r;

        r = list_names(w, new_fd, &arena_new, &names_new, &n_new, err);
        if (r < 0)
                return r;
        if (mode == MODE_DOUBLE && old_fd >= 0) {
                r = list_names(w, old_fd, &arena_old, &names_old, &n_old, err);
                if (r < 0)
                        return r;
        }
        while (i < n_new || j < n_old) {
                int c = i >= n_new ? 1 : j >= n_old ? -1 : strcmp(names_new[i], names_old[j]);

                if (c > 0) {
                        size_t saved;

                        /* Only in the old tree: deleted (nothing below it is
                         * looked at). */
                        r = path_push(w, names_old[j], &saved, err);
                        if (r >= 0) {
                                r = handle_change(w, CHANGE_DELETE, w->path, w->path_len, -1, NULL,
                                                  NULL, -1, err);
                                path_pop(w, saved);
                        }
                        j++;
                } else {
                        /* DOUBLE: the listing says whether old has it */
                        r = visit(w, new_fd, mode == MODE_DOUBLE && c != 0 ? -1 : old_fd,
                                  names_new[i], mode, err);
                        i++;
                        if (c == 0)
                                j++;
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static void walker_init(struct walker *w, kiln_export_write_fn sink, void *userdata,
                        const struct kiln_export_tar_options *o)
{
        *w = (struct walker){
                .sink = sink,
                .sink_userdata = userdata,
                .root_fd = -1,
                .xa.data = KILN_BUF_INIT(KILN_EXPORT_TAR_LIMIT_XATTRS),
                .xb.data = KILN_BUF_INIT(KILN_EXPORT_TAR_LIMIT_XATTRS),
        };
        w->tw = kiln_export_tar_writer_new(sink_trampoline, w, o);
        w->path_cap = 256;
        w->path = kiln_xcalloc(1, w->path_cap);
        w->xlist = kiln_xmalloc(XATTR_LIST_MAX);
        w->xvalue = kiln_xmalloc(XATTR_SIZE_MAX);
}

static void walker_release(struct walker *w)
{
        kiln_export_tar_writer_free(w->tw);
        for (size_t i = 0; i < w->cap_links; i++) {
                free(w->links[i].source);
                for (size_t j = 0; j < w->links[i].n_refs; j++)
                        free(w->links[i].refs[j]);
                free(w->links[i].refs);
        }
        free(w->links);
        for (size_t i = 0; i < w->cap_dirs; i++)
                free(w->dirs[i]);
        free(w->dirs);
        free(w->path);
        free(w->xlist);
        free(w->xvalue);
        xset_release(&w->xa);
        xset_release(&w->xb);
        free(w->cmp1);
        free(w->cmp2);
        if (w->root_fd >= 0)
                (void) close(w->root_fd);
}

/* Walks new_dir (against old_dir, -1 for none) and finishes the archive.
 * Both are reopened, so the callers' descriptors are neither moved nor
 * closed. */
static int walker_run(struct walker *w, int new_dir, int old_dir, enum mode mode,
                      struct kiln_error **err)
{
        _cleanup_close_ int old_fd = -1;
        int r;

        w->new_is_upper = mode == MODE_UPPER;
        w->root_fd = openat(new_dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (w->root_fd < 0)
                return fail(w, -errno, err, "open");
        if (old_dir >= 0) {
                old_fd = openat(old_dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (old_fd < 0)
                        return kiln_error_set(err, -errno, "open parent tree: %s", strerror(errno));
        }
        r = walk_dir(w, w->root_fd, old_fd, mode, err);
        if (r >= 0)
                r = kiln_export_tar_writer_finish(w->tw, err);
        return r;
}

int kiln_export_tar_tree(int dirfd, const struct kiln_export_tar_options *o,
                         kiln_export_write_fn sink, void *userdata, struct kiln_error **err)
{
        struct walker *w = kiln_xmalloc(sizeof(*w));
        int r;

        walker_init(w, sink, userdata, o);
        r = walker_run(w, dirfd, -1, MODE_DOUBLE, err);
        walker_release(w);
        free(w);
        return r;
}

/* Where views of parents are mounted while a diff reads them. */
static const char *tmp_dir(void)
{
        const char *t = secure_getenv("TMPDIR");

        return t && t[0] == '/' ? t : "/tmp";
}

static int open_dir(const char *path, const char *what, struct kiln_error **err)
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return kiln_error_set(err, -errno, "open %s '%s': %s", what, path, strerror(errno));
        return fd;
}

static int diff_run(struct kiln_snapshot_store *s, const char *id, const char *parent,
                    struct walker *w, struct kiln_error **err)
{
        _cleanup_free_ char *new_path = NULL, *old_path = NULL, *mnt = NULL;
        _cleanup_close_ int new_fd = -1, old_fd = -1;
        struct kiln_error *e2 = NULL;
        bool mounted = false;
        enum mode mode;
        int r;

        if (!*parent) {
                r = kiln_snapshot_fs_path(s, id, &new_path);
                if (r < 0)
                        return kiln_error_set(err, r, "snapshot '%s': %s", id, strerror(-r));
                new_fd = open_dir(new_path, "snapshot", err);
                if (new_fd < 0)
                        return new_fd;
                return walker_run(w, new_fd, -1, MODE_DOUBLE, err);
        }

        r = kiln_snapshot_upper_path(s, id, &new_path);
        if (r == -EOPNOTSUPP) {
                /* native: full trees on both sides */
                mode = MODE_DOUBLE;
                r = kiln_snapshot_fs_path(s, id, &new_path);
                if (r >= 0)
                        r = kiln_snapshot_fs_path(s, parent, &old_path);
        } else if (r >= 0) {
                struct kiln_snapshot_info pi;

                mode = MODE_UPPER;
                r = kiln_snapshot_info(s, parent, &pi);
                if (r >= 0) {
                        /* A parent without parents is its whole tree. */
                        if (pi.depth <= 1)
                                r = kiln_snapshot_fs_path(s, parent, &old_path);
                        kiln_snapshot_info_release(&pi);
                }
        }
        if (r < 0)
                return kiln_error_set(err, r, "snapshot '%s': %s", id, strerror(-r));

        if (!old_path) {
                mnt = kiln_xasprintf("%s/kiln-diff-XXXXXX", tmp_dir());
                if (!mkdtemp(mnt)) {
                        r = kiln_error_set(err, -errno, "create '%s': %s", mnt, strerror(errno));
                        free(TAKE_PTR(mnt));
                        return r;
                }
                r = kiln_snapshot_mount_view(s, parent, mnt, err);
                if (r < 0) {
                        (void) rmdir(mnt);
                        return kiln_error_wrap(err, "mount parent '%s'", parent);
                }
                mounted = true;
                old_path = kiln_xstrdup(mnt);
        }
        new_fd = open_dir(new_path, "snapshot", err);
        if (new_fd < 0) {
                r = new_fd;
                goto out;
        }
        old_fd = open_dir(old_path, "parent snapshot", err);
        if (old_fd < 0) {
                r = old_fd;
                goto out;
        }
        r = walker_run(w, new_fd, old_fd, mode, err);
out:
        /* Nothing may keep the view busy while it is unmounted. */
        new_fd = close_fd(new_fd);
        old_fd = close_fd(old_fd);
        if (w->root_fd >= 0)
                w->root_fd = close_fd(w->root_fd);
        if (mounted) {
                /* a view left mounted is a leak the caller must hear of; an
                 * empty directory left behind is not */
                if (kiln_snapshot_unmount(mnt, &e2) < 0) {
                        if (r >= 0) {
                                r = kiln_error_set(err, -EBUSY, "diff snapshot '%s': %s", id,
                                                   kiln_error_message(e2));
                        }
                        kiln_error_free(e2);
                } else if (rmdir(mnt) < 0)
                        log_debug("diff snapshot '%s': remove '%s': %s", id, mnt, strerror(errno));
        }
        return r;
}

int kiln_export_tar_diff(struct kiln_snapshot_store *s, const char *id,
                         const struct kiln_export_tar_options *o, kiln_export_write_fn sink,
                         void *userdata, struct kiln_error **err)
{
        struct kiln_snapshot_info info;
        struct walker *w;
        char parent[KILN_SNAPSHOT_ID_SIZE];
        int r;

        r = kiln_snapshot_use(s, id);
        if (r < 0)
                return kiln_error_set(err, r, "diff snapshot '%s': %s", id,
                                      r == -ENOENT ? "no such snapshot" : strerror(-r));
        r = kiln_snapshot_info(s, id, &info);
        if (r < 0) {
                kiln_snapshot_release(s, id);
                return kiln_error_set(err, r, "diff snapshot '%s': %s", id, strerror(-r));
        }
        memcpy(parent, info.parent, sizeof(parent));
        kiln_snapshot_info_release(&info);
        /* The parent cannot go while id (its child) exists; the use keeps
         * it from being removed while id is released halfway, too. */
        if (*parent) {
                r = kiln_snapshot_use(s, parent);
                if (r < 0) {
                        kiln_snapshot_release(s, id);
                        return kiln_error_set(err, r, "diff snapshot '%s': parent '%s': %s", id,
                                              parent, strerror(-r));
                }
        }

        w = kiln_xmalloc(sizeof(*w));
        walker_init(w, sink, userdata, o);
        r = diff_run(s, id, parent, w, err);
        if (r < 0 && !w->sink_failed)
                (void) kiln_error_wrap(err, "diff snapshot '%s'", id);
        walker_release(w);
        free(w);
        if (*parent)
                kiln_snapshot_release(s, parent);
        kiln_snapshot_release(s, id);
        return r;
}
