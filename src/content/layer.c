/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <isa-l/igzip_lib.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>

#include "base/fs.h"
#include "base/sha256.h"
#include "content/content.h"
#include "content/layer.h"

/*
 * A decoder undoes the compression, "in" (a libarchive tar reader) reads the
 * tar from the uncompressed stream the decoder hands over, which is hashed
 * for the diff id on the way. gzip is inflated with ISA-L; the other
 * compressions (and none) by a libarchive reader, "outer", of format raw.
 * The tar reader then never decompresses on its own, and a failure is known
 * to be the compression's or the tar's.
 *
 * Writing never goes through a path from the tree's root: every entry's
 * parent directory is opened with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS) on root_fd, and the last component is created or
 * replaced with *at() calls that do not follow it.
 */

/* Bytes asked of blob_fd per read. */
#define READ_BLOCK (256u << 10)

/* A compressed layer is decompressed in a second thread, a few buffers
 * ahead of the thread writing the tree: inflating and the file system's
 * work overlap. */
#define PIPE_BUFS     4u
#define PIPE_BUF_SIZE (256u << 10)

struct pipeline {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        char *mem; /* PIPE_BUFS buffers of PIPE_BUF_SIZE */
        size_t lens[PIPE_BUFS];
        unsigned head;  /* the next filled buffer */
        unsigned count; /* filled buffers */
        bool held;      /* the consumer holds the buffer before head */
        bool eof;
        bool failed;
        bool stop;
        char error[256]; /* set before failed */
};

enum decompress {
        DECOMPRESS_SNIFF,
        DECOMPRESS_GZIP,
        DECOMPRESS_ZSTD,
};

struct applier;

/* Hands out the next piece of the uncompressed stream, up to cap bytes:
 * written to dst, or left in the decoder's own memory. *ret points at the
 * piece, valid until the next call. Returns its length, 0 at the stream's
 * end, -1 on failure with the reason in err (size bytes). Runs in the
 * pipeline's thread when there is one. */
typedef ssize_t (*decode_fn)(struct applier *s, char *dst, size_t cap, const void **ret, char *err,
                             size_t size);

struct dir_time {
        size_t off; /* of its path in dir_arena */
        struct timespec ts[2];
};

struct applier {
        int root_fd;
        const struct kiln_content_layer_options *o;
        struct kiln_content_layer_stats *st;
        struct kiln_error **err;

        /* The blob, read in READ_BLOCK pieces. */
        int blob_fd;
        unsigned char *blob_buf;
        size_t blob_len;   /* bytes in blob_buf */
        bool blob_pending; /* blob_buf not yet handed to outer */
        bool blob_eof;

        decode_fn decode;
        struct archive *outer;         /* the libarchive decoder */
        const char *outer_block;       /* what outer handed over, not yet passed on */
        size_t outer_left;             /* bytes at outer_block */
        struct inflate_state *inflate; /* the gzip decoder */

        struct archive *in;
        struct kiln_sha256 *sha;
        bool outer_failed; /* the decoder failed: outer_error says why */
        char outer_error[256];
        struct pipeline *pipe; /* NULL: the decoder runs in this thread */
        char *own_buf;         /* PIPE_BUF_SIZE, to decode into without a pipeline */

        /* The last parent directory opened (O_PATH), by its cleaned path.
         * Once stale it serves no lookup, but stays open: the entry being
         * applied may still use it. */
        int cache_fd;
        bool cache_stale;
        size_t cache_len;
        char cache_path[KILN_LIMIT_LAYER_PATH + 1];

        /* Hashes of the paths this layer created: opaque whiteouts keep them. */
        uint64_t *set;
        size_t set_cap;
        size_t set_n;

        /* Directories whose times are set once the layer is written. */
        struct dir_time *dirs;
        size_t n_dirs;
        size_t cap_dirs;
        char *dir_arena;
        size_t arena_len;
        size_t arena_cap;

        /* The entry being applied. */
        const char *name; /* as in the tar, for messages */
        char path[KILN_LIMIT_LAYER_PATH + 1];
        size_t path_len;
        char link[KILN_LIMIT_LAYER_PATH + 1];
        char scratch[KILN_LIMIT_LAYER_PATH + 256 + 2];
};

/* ---- errors ---- */

static int entry_fail(struct applier *s, int r, const char *fmt, ...) _printf_(3, 4);
static int entry_fail(struct applier *s, int r, const char *fmt, ...)
{
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        m = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_error_set(s->err, r, "layer entry \"%.*s\": %s", 256, s->name, m);
}

/* ---- paths ---- */

/* filepath.Clean of name, made relative to the root: '.' and empty
 * components dropped, '..' applied. Returns -EXDEV when a relative name's
 * '..' climbs above the root (a rooted one stays at the root, as Clean
 * does), -ENAMETOOLONG past KILN_LIMIT_LAYER_PATH. out holds
 * KILN_LIMIT_LAYER_PATH + 1 bytes; "" is the root itself. */
static int clean_path(const char *name, char *out, size_t *ret_len)
{
        bool rooted = name[0] == '/';
        const char *p = name;
        size_t n = 0;

        while (*p) {
                const char *c;
                size_t l;

                while (*p == '/')
                        p++;
                if (!*p)
                        break;
                c = p;
                while (*p && *p != '/')
                        p++;
                l = (size_t) (p - c);
                if (l == 1 && c[0] == '.')
                        continue;
                if (l == 2 && c[0] == '.' && c[1] == '.') {
                        if (n == 0) {
                                if (rooted)
                                        continue;
                                return -EXDEV;
                        }
                        while (n > 0 && out[n - 1] != '/')
                                n--;
                        if (n > 0)
                                n--;
                        continue;
                }
                if (n + (n ? 1 : 0) + l > KILN_LIMIT_LAYER_PATH)
                        return -ENAMETOOLONG;
                if (n)
                        out[n++] = '/';
                memcpy(out + n, c, l);
                n += l;
        }
        out[n] = '\0';
        *ret_len = n;
        return 0;
}

/* Splits a cleaned, non-empty path: the directory part's length (0 for the
 * root) and the last component. */
static const char *split_path(const char *path, size_t len, size_t *ret_dir_len)
{
        const char *slash = memrchr(path, '/', len);

        if (!slash) {
                *ret_dir_len = 0;
                return path;
        }
        *ret_dir_len = (size_t) (slash - path);
        return slash + 1;
}

static uint64_t path_hash(const char *p, size_t n)
{
        uint64_t h = 0xcbf29ce484222325ull;
        size_t i;

        for (i = 0; i < n; i++) {
                h ^= (unsigned char) p[i];
                h *= 0x100000001b3ull;
        }
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        return h ? h : 1;
}

static void set_insert_hash(struct applier *s, uint64_t h)
{
        size_t i;

        for (i = h & (s->set_cap - 1); s->set[i]; i = (i + 1) & (s->set_cap - 1))
                if (s->set[i] == h)
                        return;
        s->set[i] = h;
        s->set_n++;
}

static void set_add(struct applier *s, const char *p, size_t n)
{
        if ((s->set_n + 1) * 2 > s->set_cap) {
                uint64_t *old = s->set;
                size_t old_cap = s->set_cap, i;

                s->set_cap = old_cap ? old_cap * 2 : 1024;
                s->set = kiln_xcalloc(s->set_cap, sizeof(*s->set));
                s->set_n = 0;
                for (i = 0; i < old_cap; i++)
                        if (old[i])
                                set_insert_hash(s, old[i]);
                free(old);
        }
        set_insert_hash(s, path_hash(p, n));
}

static bool set_has(const struct applier *s, const char *p, size_t n)
{
        uint64_t h;
        size_t i;

        if (!s->set_cap)
                return false;
        h = path_hash(p, n);
        for (i = h & (s->set_cap - 1); s->set[i]; i = (i + 1) & (s->set_cap - 1))
                if (s->set[i] == h)
                        return true;
        return false;
}

/* ---- directories inside the root ---- */

static int open_in_root(int root_fd, const char *path)
{
        struct open_how how = {
                .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        int fd;

        do
                fd = (int) syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
        while (fd < 0 && errno == EAGAIN);
        return fd < 0 ? -errno : fd;
}

static void cache_drop(struct applier *s)
{
        if (s->cache_fd >= 0)
                (void) close(s->cache_fd);
        s->cache_fd = -1;
        s->cache_len = 0;
        s->cache_stale = false;
}

static bool cache_hit(const struct applier *s, const char *dir, size_t len)
{
        return s->cache_fd >= 0 && !s->cache_stale && s->cache_len == len &&
               memcmp(s->cache_path, dir, len) == 0;
}

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

/* chmod of pfd/base that never follows a symlink, even one put there since
 * the entry was created: fchmodat2(AT_SYMLINK_NOFOLLOW) where the kernel
 * has it (6.6), else glibc's emulation of that flag. */
static int chmod_nofollow(int pfd, const char *base, mode_t mode)
{
        static atomic_bool no_fchmodat2;

        if (!atomic_load_explicit(&no_fchmodat2, memory_order_relaxed)) {
                if (syscall(SYS_fchmodat2, pfd, base, mode, AT_SYMLINK_NOFOLLOW) == 0)
                        return 0;
                if (errno != ENOSYS)
                        return -errno;
                atomic_store_explicit(&no_fchmodat2, true, memory_order_relaxed);
        }
        return fchmodat(pfd, base, mode, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* Dangling symlinks one mkdir_parents call follows, all levels together
 * (the kernel's MAXSYMLINKS): the work stays linear in the path. */
#define MKDIR_MAX_LINKS 40

/* Creates the missing directories of path (cleaned, relative, non-empty),
 * one component at a time, each resolved inside the root. A dangling
 * symlink in the way gets its target created, as containerd's MkdirAll on
 * the resolved path does; that target is a path inside the root too. */
static int mkdir_parents(struct applier *s, const char *path, size_t len, unsigned *links)
{
        _cleanup_free_ char *p = kiln_xstrndup(path, len);
        size_t i;

        for (i = 0; i <= len; i++) {
                _cleanup_close_ int pfd = -1;
                const char *base;
                char *slash;
                int fd;

                if (i < len && p[i] != '/')
                        continue;
                p[i] = '\0';
                fd = open_in_root(s->root_fd, p);
                if (fd >= 0) {
                        (void) close(fd);
                        if (i < len)
                                p[i] = '/';
                        continue;
                }
                if (fd != -ENOENT)
                        return fd;
                slash = strrchr(p, '/');
                base = slash ? slash + 1 : p;
                if (slash) {
                        *slash = '\0';
                        pfd = open_in_root(s->root_fd, p);
                        *slash = '/';
                        if (pfd < 0)
                                return pfd;
                }
                if (mkdirat(slash ? pfd : s->root_fd, base, 0755) == 0) {
                        /* 0755 whatever the process umask. */
                        int r = chmod_nofollow(slash ? pfd : s->root_fd, base, 0755);
                        if (r < 0)
                                return r;
                } else {
                        _cleanup_free_ char *joined = NULL, *clean = NULL, *buf = NULL;
                        size_t clen;
                        ssize_t n;
                        int r;

                        if (errno != EEXIST)
                                return -errno;
                        buf = kiln_xmalloc(KILN_LIMIT_LAYER_PATH + 1);
                        n = readlinkat(slash ? pfd : s->root_fd, base, buf, KILN_LIMIT_LAYER_PATH);
                        if (n < 0)
                                return errno == EINVAL ? -ENOTDIR : -errno;
                        if (++*links > MKDIR_MAX_LINKS)
                                return -ELOOP;
                        buf[n] = '\0';
                        /* Rooted: '..' stops at the root, as RESOLVE_IN_ROOT. */
                        if (buf[0] == '/')
                                joined = kiln_xstrdup(buf);
                        else if (slash) {
                                *slash = '\0';
                                joined = kiln_xasprintf("/%s/%s", p, buf);
                                *slash = '/';
                        } else
                                joined = kiln_xasprintf("/%s", buf);
                        clean = kiln_xmalloc(KILN_LIMIT_LAYER_PATH + 1);
                        r = clean_path(joined, clean, &clen);
                        if (r < 0)
                                return r;
                        if (clen > 0) {
                                r = mkdir_parents(s, clean, clen, links);
                                if (r < 0)
                                        return r;
                        }
                }
                fd = open_in_root(s->root_fd, p);
                if (fd < 0)
                        return fd;
                (void) close(fd);
                if (i < len)
                        p[i] = '/';
        }
        return 0;
}

/* The directory dir (cleaned, len bytes, "" for the root) opened inside the
 * root, created when create is set and it is missing. The fd belongs to the
 * cache (or is root_fd): callers do not close it. */
static int open_parent(struct applier *s, const char *dir, size_t len, bool create)
{
        int fd;

        if (len == 0)
                return s->root_fd;
        if (cache_hit(s, dir, len))
                return s->cache_fd;
        memcpy(s->scratch, dir, len);
        s->scratch[len] = '\0';
        fd = open_in_root(s->root_fd, s->scratch);
        if (fd == -ENOENT && create) {
                unsigned links = 0;
                int r = mkdir_parents(s, dir, len, &links);
                if (r < 0)
                        return r;
                memcpy(s->scratch, dir, len);
                s->scratch[len] = '\0';
                fd = open_in_root(s->root_fd, s->scratch);
        }
        if (fd < 0)
                return fd;
        cache_drop(s);
        s->cache_fd = fd;
        memcpy(s->cache_path, dir, len);
        s->cache_len = len;
        return fd;
}

/* Removes what is at pfd/base (its path is s->path) and everything below. */
static int remove_existing(struct applier *s, int pfd, const char *base, mode_t type)
{
        int r;

        /* Removing a directory or a symlink may change how the cached path
         * resolves (it may even go through what is removed, as "d/l/l"
         * with l -> "."); files and nodes cannot. */
        if (S_ISDIR(type) || S_ISLNK(type))
                s->cache_stale = true;
        if (!S_ISDIR(type)) {
                if (unlinkat(pfd, base, 0) < 0 && errno != ENOENT)
                        return entry_fail(s, -errno, "remove existing entry: %s", strerror(errno));
                return 0;
        }
        r = kiln_rm_rf_at(pfd, base, NULL, s->err);
        if (r < 0)
                return kiln_error_wrap(s->err, "layer entry \"%.*s\"", 256, s->name);
        return 0;
}

/* Makes room at pfd/base for an entry of type new_type: an existing entry
 * is removed, unless both are directories. Returns 1 when an existing
 * directory is kept. */
static int make_room(struct applier *s, int pfd, const char *base, mode_t new_type)
{
        struct stat st;
        int r;

        if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return entry_fail(s, -errno, "%s", strerror(errno));
        }
        if (S_ISDIR(st.st_mode) && S_ISDIR(new_type))
                return 1;
        r = remove_existing(s, pfd, base, st.st_mode & S_IFMT);
        return r < 0 ? r : 0;
}

/* ---- metadata ---- */

static struct timespec bound_time(int64_t sec, long nsec)
{
        /* containerd's boundTime: before the epoch is the epoch. */
        if (sec < 0)
                return (struct timespec){ 0, 0 };
        return (struct timespec){ (time_t) sec, nsec };
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
        int64_t msec = archive_entry_mtime(e);
        long mnsec = archive_entry_mtime_nsec(e);
        int64_t asec = msec;
        long ansec = mnsec;

        /* The atime is the later of atime and mtime, as containerd sets it. */
        if (archive_entry_atime_is_set(e) &&
            (archive_entry_atime(e) > msec ||
             (archive_entry_atime(e) == msec && archive_entry_atime_nsec(e) > mnsec))) {
                asec = archive_entry_atime(e);
                ansec = archive_entry_atime_nsec(e);
        }
        ts[0] = bound_time(asec, ansec);
        ts[1] = bound_time(msec, mnsec);
}

static bool xattr_refused(const char *name)
{
        /* Overlay's own attributes would change what the overlay mount
         * shows (opaque directories, redirects): never taken from a tar. */
        return startswith(name, "trusted.overlay.") || startswith(name, "user.overlay.");
}

/* Sets the entry's xattrs on fd (a regular file open for writing) or, with
 * fd < 0, on pfd/base without following it. */
static int apply_xattrs(struct applier *s, struct archive_entry *e, int fd, int pfd,
                        const char *base)
{
        const char *name;
        const void *value;
        size_t size, total = 0;

        if (archive_entry_xattr_reset(e) == 0)
                return 0;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
                int r;

                if (!name || !*name)
                        continue;
                total += strlen(name) + size;
                if (total > KILN_LIMIT_LAYER_XATTR_BYTES)
                        return entry_fail(s, -E2BIG, "extended attributes larger than %u bytes",
                                          KILN_LIMIT_LAYER_XATTR_BYTES);
                if (xattr_refused(name)) {
                        s->st->xattrs_refused++;
                        continue;
                }
                if (fd >= 0)
                        r = fsetxattr(fd, name, value, size, 0);
                else {
                        /* No lsetxattr relative to a directory fd before
                         * setxattrat(2): the parent goes through its fd's
                         * /proc link, the last component is not followed. */
                        char p[64 + 256];
                        int n = snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", pfd, base);
                        if (n < 0 || (size_t) n >= sizeof(p))
                                return entry_fail(s, -ENAMETOOLONG, "set xattr \"%s\": %s", name,
                                                  strerror(ENAMETOOLONG));
                        r = lsetxattr(p, name, value, size, 0);
                }
                if (r < 0) {
                        /* As moby: file systems without xattrs, and kinds of
                         * files a namespace is not allowed on (user.* on a
                         * symlink), skip the attribute. */
                        if (errno == EOPNOTSUPP || errno == EPERM || s->o->best_effort_xattrs) {
                                s->st->xattrs_skipped++;
                                continue;
                        }
                        return entry_fail(s, -errno, "set xattr \"%s\": %s", name, strerror(errno));
                }
        }
        return 0;
}

static void entry_owner(const struct applier *s, struct archive_entry *e, uid_t *uid, gid_t *gid)
{
        if (s->o->override_owner) {
                *uid = s->o->uid;
                *gid = s->o->gid;
        } else {
                *uid = (uid_t) archive_entry_uid(e);
                *gid = (gid_t) archive_entry_gid(e);
        }
}

/* Owner, xattrs, mode, times of pfd/base, not following it. chmod is
 * skipped for symlinks; times too for directories (set at the end). cur,
 * when not NULL, is the inode's current state (a hard link's target): what
 * already matches is not set again. */
static int apply_metadata(struct applier *s, struct archive_entry *e, int pfd, const char *base,
                          mode_t type, const struct stat *cur)
{
        mode_t mode = (mode_t) (archive_entry_perm(e) & 07777);
        struct timespec ts[2];
        uid_t uid;
        gid_t gid;
        int r;

        entry_owner(s, e, &uid, &gid);
        if ((!cur || cur->st_uid != uid || cur->st_gid != gid) &&
            fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_fail(s, -errno, "chown: %s", strerror(errno));
        r = apply_xattrs(s, e, -1, pfd, base);
        if (r < 0)
                return r;
        /* chown cleared setuid and setgid: then the mode is set again. */
        if (!S_ISLNK(type) &&
            (!cur || (cur->st_mode & 07777) != mode || cur->st_uid != uid || cur->st_gid != gid) &&
            (r = chmod_nofollow(pfd, base, mode)) < 0)
                return entry_fail(s, r, "chmod: %s", strerror(-r));
        if (S_ISDIR(type))
                return 0;
        entry_times(e, ts);
        if (cur && cur->st_atim.tv_sec == ts[0].tv_sec && cur->st_atim.tv_nsec == ts[0].tv_nsec &&
            cur->st_mtim.tv_sec == ts[1].tv_sec && cur->st_mtim.tv_nsec == ts[1].tv_nsec)
                return 0;
        if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_fail(s, -errno, "set times: %s", strerror(errno));
        return 0;
}

static int record_dir_time(struct applier *s, struct archive_entry *e)
{
        size_t need = s->path_len + 1;

        if (s->arena_len + need > KILN_LIMIT_LAYER_DIR_PATH_BYTES)
                return entry_fail(s, -E2BIG, "directory paths of the layer exceed %u bytes",
                                  KILN_LIMIT_LAYER_DIR_PATH_BYTES);
        if (s->arena_len + need > s->arena_cap) {
                s->arena_cap = (s->arena_len + need) * 2;
                if (s->arena_cap < 16384)
                        s->arena_cap = 16384;
                s->dir_arena = kiln_xrealloc(s->dir_arena, s->arena_cap);
        }
        if (s->n_dirs == s->cap_dirs) {
                s->cap_dirs = s->cap_dirs ? s->cap_dirs * 2 : 256;
                s->dirs = kiln_xreallocarray(s->dirs, s->cap_dirs, sizeof(*s->dirs));
        }
        memcpy(s->dir_arena + s->arena_len, s->path, need);
        s->dirs[s->n_dirs].off = s->arena_len;
        entry_times(e, s->dirs[s->n_dirs].ts);
        s->n_dirs++;
        s->arena_len += need;
        return 0;
}

static int apply_dir_times(struct applier *s)
{
        size_t i;

        for (i = 0; i < s->n_dirs; i++) {
                const char *path = s->dir_arena + s->dirs[i].off, *base;
                size_t len = strlen(path), dlen;
                int pfd;

                base = split_path(path, len, &dlen);
                pfd = open_parent(s, path, dlen, false);
                if (pfd == -ENOENT || pfd == -ENOTDIR)
                        continue; /* removed by a later whiteout */
                if (pfd < 0)
                        return kiln_error_set(s->err, pfd, "layer directory \"%s\": %s", path,
                                              strerror(-pfd));
                if (utimensat(pfd, base, s->dirs[i].ts, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT)
                        return kiln_error_set(s->err, -errno,
                                              "layer directory \"%s\": set times: %s", path,
                                              strerror(errno));
        }
        return 0;
}

/* ---- entries ---- */

static bool cancelled(const struct applier *s)
{
        return s->o->cancel && atomic_load(s->o->cancel);
}

static int write_all(int fd, const void *p, size_t n, off_t off)
{
        while (n > 0) {
                ssize_t w = pwrite(fd, p, n, off);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p = (const char *) p + w;
                n -= (size_t) w;
                off += w;
        }
        return 0;
}

/* The archive reader failed: the compression's error when outer failed. */
static int read_fail(struct applier *s, const char *what)
{
        if (s->outer_failed)
                return kiln_error_set(s->err, -EBADMSG, "read layer: %s", s->outer_error);
        return entry_fail(s, -EBADMSG, "%s: %s", what, archive_error_string(s->in));
}

static int apply_file(struct applier *s, struct archive_entry *e, int pfd, const char *base)
{
        _cleanup_close_ int fd = -1;
        struct timespec ts[2];
        int64_t end = 0, size;
        uid_t uid;
        gid_t gid;
        int r;

        for (int attempt = 0;; attempt++) {
                fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt > 0)
                        return entry_fail(s, -errno, "create: %s", strerror(errno));
                r = make_room(s, pfd, base, S_IFREG);
                if (r < 0)
                        return r;
        }

        for (;;) {
                const void *buf;
                size_t n;
                la_int64_t off;

                r = archive_read_data_block(s->in, &buf, &n, &off);
                if (r == ARCHIVE_EOF)
                        break;
                if (r < ARCHIVE_WARN)
                        return read_fail(s, "read data");
                if (cancelled(s))
                        return kiln_error_set(s->err, -ECANCELED, "layer apply cancelled");
                if (n == 0)
                        continue;
                r = write_all(fd, buf, n, (off_t) off);
                if (r < 0)
                        return entry_fail(s, r, "write: %s", strerror(-r));
                s->st->bytes += n;
                if (off + (int64_t) n > end)
                        end = off + (int64_t) n;
        }
        /* A sparse file ending in a hole. */
        size = archive_entry_size(e);
        if (size > end && ftruncate(fd, (off_t) size) < 0)
                return entry_fail(s, -errno, "truncate: %s", strerror(errno));

        entry_owner(s, e, &uid, &gid);
        if (fchown(fd, uid, gid) < 0)
                return entry_fail(s, -errno, "chown: %s", strerror(errno));
        r = apply_xattrs(s, e, fd, -1, NULL);
        if (r < 0)
                return r;
        if (fchmod(fd, (mode_t) (archive_entry_perm(e) & 07777)) < 0)
                return entry_fail(s, -errno, "chmod: %s", strerror(errno));
        entry_times(e, ts);
        if (futimens(fd, ts) < 0)
                return entry_fail(s, -errno, "set times: %s", strerror(errno));
        if (close(TAKE_FD(fd)) < 0 && errno != EINTR)
                return entry_fail(s, -errno, "close: %s", strerror(errno));
        return 0;
}

static int apply_dir(struct applier *s, struct archive_entry *e, int pfd, const char *base)
{
        int r;

        if (mkdirat(pfd, base, 0700) < 0) {
                if (errno != EEXIST)
                        return entry_fail(s, -errno, "mkdir: %s", strerror(errno));
                r = make_room(s, pfd, base, S_IFDIR);
                if (r < 0)
                        return r;
                if (r == 0 && mkdirat(pfd, base, 0700) < 0)
                        return entry_fail(s, -errno, "mkdir: %s", strerror(errno));
        }
        r = apply_metadata(s, e, pfd, base, S_IFDIR, NULL);
        if (r < 0)
                return r;
        return record_dir_time(s, e);
}

static int apply_symlink(struct applier *s, struct archive_entry *e, int pfd, const char *base)
{
        const char *target = archive_entry_symlink(e);
        int r;

        if (!target)
                target = "";
        if (strlen(target) > KILN_LIMIT_LAYER_PATH)
                return entry_fail(s, -E2BIG, "link target longer than %u bytes",
                                  KILN_LIMIT_LAYER_PATH);
        if (symlinkat(target, pfd, base) < 0) {
                if (errno != EEXIST)
                        return entry_fail(s, -errno, "symlink: %s", strerror(errno));
                r = make_room(s, pfd, base, S_IFLNK);
                if (r < 0)
                        return r;
                if (symlinkat(target, pfd, base) < 0)
                        return entry_fail(s, -errno, "symlink: %s", strerror(errno));
        }
        return apply_metadata(s, e, pfd, base, S_IFLNK, NULL);
}

static int apply_node(struct applier *s, struct archive_entry *e, int pfd, const char *base,
                      mode_t type)
{
        mode_t mode = type | (mode_t) (archive_entry_perm(e) & 0777);
        dev_t dev = S_ISFIFO(type)
                            ? 0
                            : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
        int r;

        if (mknodat(pfd, base, mode, dev) < 0) {
                if (errno != EEXIST)
                        return entry_fail(s, -errno, "mknod: %s", strerror(errno));
                r = make_room(s, pfd, base, type);
                if (r < 0)
                        return r;
                if (mknodat(pfd, base, mode, dev) < 0)
                        return entry_fail(s, -errno, "mknod: %s", strerror(errno));
        }
        return apply_metadata(s, e, pfd, base, type, NULL);
}

static int apply_hardlink(struct applier *s, struct archive_entry *e, const char *target_name,
                          int pfd, const char *base)
{
        _cleanup_close_ int own_fd = -1;
        const char *tbase;
        size_t tlen, tdlen;
        struct stat st;
        int tfd, r;

        r = clean_path(target_name, s->link, &tlen);
        if (r == -EXDEV)
                return entry_fail(s, -EINVAL, "hard link target \"%.*s\" escapes the root", 256,
                                  target_name);
        if (r < 0)
                return entry_fail(s, -E2BIG, "link target longer than %u bytes",
                                  KILN_LIMIT_LAYER_PATH);
        if (tlen == 0)
                return entry_fail(s, -EINVAL, "hard link to the root directory");
        tbase = split_path(s->link, tlen, &tdlen);
        if (tdlen == 0)
                tfd = s->root_fd;
        else if (cache_hit(s, s->link, tdlen))
                tfd = s->cache_fd;
        else {
                s->link[tdlen] = '\0';
                own_fd = open_in_root(s->root_fd, s->link);
                s->link[tdlen] = '/';
                if (own_fd < 0)
                        return entry_fail(s, own_fd, "hard link target \"%.*s\": %s", 256,
                                          target_name, strerror(-own_fd));
                tfd = own_fd;
        }
        if (fstatat(tfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_fail(s, -errno, "hard link target \"%.*s\": %s", 256, target_name,
                                  strerror(errno));
        if (S_ISDIR(st.st_mode))
                return entry_fail(s, -EPERM, "hard link target \"%.*s\" is a directory", 256,
                                  target_name);
        if (linkat(tfd, tbase, pfd, base, 0) < 0) {
                struct stat cur;

                if (errno != EEXIST)
                        return entry_fail(s, -errno, "hard link to \"%.*s\": %s", 256, target_name,
                                          strerror(errno));
                /* Linking a file onto itself: nothing to do. */
                if (fstatat(pfd, base, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_dev == st.st_dev &&
                    cur.st_ino == st.st_ino)
                        goto metadata;
                r = make_room(s, pfd, base, st.st_mode & S_IFMT);
                if (r < 0)
                        return r;
                if (linkat(tfd, tbase, pfd, base, 0) < 0)
                        return entry_fail(s, -errno, "hard link to \"%.*s\": %s", 256, target_name,
                                          strerror(errno));
        }
metadata:
        /* As moby and containerd, the link's header describes the inode
         * too; a link to a symlink keeps the symlink's mode. */
        return apply_metadata(s, e, pfd, base, st.st_mode & S_IFMT, &st);
}

/* Removes every entry below the open directory dfd (at s->scratch, len
 * bytes) that this layer did not create. */
static int opaque_clear(struct applier *s, int dfd, size_t len, unsigned depth)
{
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (depth > KILN_RM_RF_MAX_DEPTH) {
                (void) close(dfd);
                return entry_fail(s, -ELOOP, "opaque directory nested too deeply");
        }
        d = fdopendir(dfd);
        if (!d) {
                r = -errno;
                (void) close(dfd);
                return entry_fail(s, r, "opaque directory: %s", strerror(-r));
        }
        while (r >= 0 && (errno = 0, de = readdir(d))) {
                size_t nl = strlen(de->d_name), clen = len + (len ? 1 : 0) + nl;
                struct stat st;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (clen <= KILN_LIMIT_LAYER_PATH) {
                        char *c = s->scratch + len;
                        if (len)
                                *c++ = '/';
                        memcpy(c, de->d_name, nl + 1);
                }
                if (clen > KILN_LIMIT_LAYER_PATH || !set_has(s, s->scratch, clen)) {
                        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                                if (errno == ENOENT)
                                        continue;
                                r = entry_fail(s, -errno, "opaque directory: %s", strerror(errno));
                                break;
                        }
                        if (S_ISDIR(st.st_mode)) {
                                r = kiln_rm_rf_at(dirfd(d), de->d_name, NULL, s->err);
                                if (r < 0)
                                        r = kiln_error_wrap(s->err, "layer entry \"%.*s\"", 256,
                                                            s->name);
                        } else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                                r = entry_fail(s, -errno, "opaque directory: remove: %s",
                                               strerror(errno));
                        s->scratch[len] = '\0';
                        continue;
                }
                /* Created by this layer: kept, but what an older directory
                 * held below it is not. */
                if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN) {
                        int cfd = openat(dirfd(d), de->d_name,
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (cfd >= 0)
                                r = opaque_clear(s, cfd, clen, depth + 1);
                        else if (errno != ENOTDIR && errno != ELOOP && errno != ENOENT)
                                r = entry_fail(s, -errno, "opaque directory: %s", strerror(errno));
                }
                s->scratch[len] = '\0';
        }
        if (r >= 0 && errno != 0 && !de)
                r = entry_fail(s, -errno, "opaque directory: %s", strerror(errno));
        (void) closedir(d);
        return r;
}

/* A whiteout entry: base starts with ".wh.". */
static int apply_whiteout(struct applier *s, const char *base, size_t dlen)
{
        const char *victim = base + strlen(".wh.");
        int pfd;

        if (streq(base, ".wh..wh..opq")) {
                int dfd;

                cache_drop(s);
                memcpy(s->scratch, s->path, dlen);
                s->scratch[dlen] = '\0';
                {
                        struct open_how how = {
                                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
                        };
                        do
                                dfd = (int) syscall(SYS_openat2, s->root_fd,
                                                    dlen ? s->scratch : ".", &how, sizeof(how));
                        while (dfd < 0 && errno == EAGAIN);
                }
                if (dfd < 0) {
                        if (errno == ENOENT || errno == ENOTDIR)
                                return 0;
                        return entry_fail(s, -errno, "opaque directory: %s", strerror(errno));
                }
                s->st->whiteouts++;
                return opaque_clear(s, dfd, dlen, 0);
        }
        if (startswith(base, ".wh..wh."))
                return 0; /* aufs metadata */
        if (!*victim || streq(victim, ".") || streq(victim, ".."))
                return entry_fail(s, -EINVAL, "invalid whiteout name");

        pfd = open_parent(s, s->path, dlen, false);
        if (pfd == -ENOENT || pfd == -ENOTDIR)
                return 0;
        if (pfd < 0)
                return entry_fail(s, pfd, "open parent directory: %s", strerror(-pfd));
        {
                struct stat st;

                if (fstatat(pfd, victim, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                return 0;
                        return entry_fail(s, -errno, "whiteout: %s", strerror(errno));
                }
                s->st->whiteouts++;
                return remove_existing(s, pfd, victim, st.st_mode & S_IFMT);
        }
}

static int apply_entry(struct applier *s, struct archive_entry *e)
{
        const char *hardlink, *base;
        size_t dlen;
        mode_t type;
        int pfd, r;

        s->name = archive_entry_pathname(e);
        if (!s->name)
                s->name = "";
        if (strlen(s->name) > KILN_LIMIT_LAYER_PATH)
                return entry_fail(s, -E2BIG, "path longer than %u bytes", KILN_LIMIT_LAYER_PATH);
        r = clean_path(s->name, s->path, &s->path_len);
        if (r == -EXDEV)
                return entry_fail(s, -EINVAL, "path escapes the root");
        if (r < 0)
                return entry_fail(s, -E2BIG, "path longer than %u bytes", KILN_LIMIT_LAYER_PATH);
        if (s->path_len == 0)
                return 0; /* the root itself, as containerd: left alone */

        base = split_path(s->path, s->path_len, &dlen);
        if (!s->o->no_whiteouts && startswith(base, ".wh."))
                return apply_whiteout(s, base, dlen);

        hardlink = archive_entry_hardlink(e);
        type = archive_entry_filetype(e);
        if (!hardlink && (S_ISCHR(type) || S_ISBLK(type)) && s->o->no_devices) {
                s->st->devices_skipped++;
                return 0;
        }
        if (!hardlink && S_ISSOCK(type))
                return 0;

        /* A later entry at or above the cached directory may replace what
         * the cache resolved. */
        if (s->cache_fd >= 0 && s->cache_len >= s->path_len &&
            memcmp(s->cache_path, s->path, s->path_len) == 0 &&
            (s->cache_len == s->path_len || s->cache_path[s->path_len] == '/'))
                cache_drop(s);

        pfd = open_parent(s, s->path, dlen, true);
        if (pfd < 0)
                return entry_fail(s, pfd, "parent directory: %s", strerror(-pfd));

        if (hardlink)
                r = apply_hardlink(s, e, hardlink, pfd, base);
        else if (S_ISREG(type) || type == 0)
                r = apply_file(s, e, pfd, base);
        else if (S_ISDIR(type))
                r = apply_dir(s, e, pfd, base);
        else if (S_ISLNK(type))
                r = apply_symlink(s, e, pfd, base);
        else if (S_ISFIFO(type) || S_ISCHR(type) || S_ISBLK(type))
                r = apply_node(s, e, pfd, base, type);
        else
                return entry_fail(s, -EBADMSG, "unsupported file type 0%o", (unsigned) type);
        if (r < 0)
                return r;
        set_add(s, s->path, s->path_len);
        return 0;
}

/* ---- streams ---- */

/* Reads the next piece of the blob into blob_buf: at least min bytes unless
 * the blob ends first (blob_eof is set then). Returns the bytes held, or
 * -errno. */
static ssize_t blob_fill(struct applier *s, size_t min)
{
        size_t len = 0;

        while (len < min && !s->blob_eof) {
                ssize_t n = read(s->blob_fd, s->blob_buf + len, READ_BLOCK - len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        s->blob_eof = true;
                len += (size_t) n;
        }
        s->blob_len = len;
        return (ssize_t) len;
}

/* outer's read callback: what sniffing read first, then the rest. */
static la_ssize_t blob_read(struct archive *a, void *userdata, const void **buf)
{
        struct applier *s = userdata;
        ssize_t n;

        *buf = s->blob_buf;
        if (s->blob_pending) {
                s->blob_pending = false;
                return (la_ssize_t) s->blob_len;
        }
        n = blob_fill(s, 1);
        if (n < 0) {
                archive_set_error(a, (int) -n, "read blob: %s", strerror((int) -n));
                return -1;
        }
        return (la_ssize_t) n;
}

static void outer_error_copy(struct archive *outer, char *buf, size_t size)
{
        const char *m = archive_error_string(outer);

        (void) snprintf(buf, size, "%s", m ? m : "decompression failed");
}

/* decode_fn of outer: its blocks, in pieces of at most cap bytes. */
static ssize_t outer_decode(struct applier *s, char *dst, size_t cap, const void **ret, char *err,
                            size_t size)
{
        size_t n;

        while (s->outer_left == 0) {
                const void *block;
                la_int64_t off;
                int r = archive_read_data_block(s->outer, &block, &s->outer_left, &off);

                if (r == ARCHIVE_EOF) {
                        s->outer_left = 0;
                        return 0;
                }
                if (r < ARCHIVE_WARN) {
                        s->outer_left = 0;
                        outer_error_copy(s->outer, err, size);
                        return -1;
                }
                s->outer_block = block;
        }
        n = s->outer_left < cap ? s->outer_left : cap;
        *ret = s->outer_block;
        s->outer_block += n;
        s->outer_left -= n;
        return (ssize_t) n;
}

static const char *inflate_error(int r)
{
        switch (r) {
        case ISAL_INVALID_WRAPPER:
                return "invalid header";
        case ISAL_UNSUPPORTED_METHOD:
                return "unsupported compression method";
        case ISAL_INCORRECT_CHECKSUM:
                return "checksum mismatch";
        case ISAL_INVALID_BLOCK:
        case ISAL_INVALID_SYMBOL:
        case ISAL_INVALID_LOOKBACK:
                return "invalid deflate data";
        default:
                return "inflate failed";
        }
}

/* decode_fn of gzip, inflated with ISA-L into dst. As Go's gzip.Reader:
 * members follow one another (after one's trailer, whatever follows must
 * be the next one's header), each member's CRC-32 and size are checked,
 * and the blob ending inside a member is an error. */
static ssize_t gzip_decode(struct applier *s, char *dst, size_t cap, const void **ret, char *err,
                           size_t size)
{
        struct inflate_state *st = s->inflate;

        st->next_out = (uint8_t *) dst;
        st->avail_out = (uint32_t) (cap < UINT32_MAX ? cap : UINT32_MAX);
        while (st->avail_out > 0) {
                enum isal_block_state state;
                uint32_t avail_out, avail_in;
                int r;

                if (st->avail_in == 0 && !s->blob_eof) {
                        ssize_t n = blob_fill(s, 1);

                        if (n < 0) {
                                (void) snprintf(err, size, "read blob: %s", strerror((int) -n));
                                return -1;
                        }
                        st->next_in = s->blob_buf;
                        st->avail_in = (uint32_t) n;
                }
                if (st->block_state == ISAL_BLOCK_FINISH) {
                        if (st->avail_in == 0)
                                break;          /* the blob ends after a member */
                        isal_inflate_reset(st); /* keeps the input */
                        continue;
                }

                state = st->block_state;
                avail_out = st->avail_out;
                avail_in = st->avail_in;
                r = isal_inflate(st);
                if (r != ISAL_DECOMP_OK) {
                        (void) snprintf(err, size, "gzip: %s", inflate_error(r));
                        return -1;
                }
                /* Nothing more comes of what it holds: the input is gone. */
                if (st->block_state != ISAL_BLOCK_FINISH && st->block_state == state &&
                    st->avail_out == avail_out && st->avail_in == avail_in) {
                        (void) snprintf(err, size, "gzip: unexpected end of data");
                        return -1;
                }
        }
        *ret = dst;
        return (ssize_t) ((uint8_t *) st->next_out - (uint8_t *) dst);
}

/* The next piece of the uncompressed stream from the decoder, hashed. */
static ssize_t decode(struct applier *s, char *dst, size_t cap, const void **ret, char *err,
                      size_t size)
{
        ssize_t n = s->decode(s, dst, cap, ret, err, size);

        if (n > 0 && s->sha)
                kiln_sha256_update(s->sha, *ret, (size_t) n);
        return n;
}

static void *pipeline_run(void *userdata)
{
        struct applier *s = userdata;
        struct pipeline *p = s->pipe;
        bool eof = false, failed = false;

        while (!eof && !failed) {
                unsigned idx;
                size_t len = 0;
                char *b;

                (void) pthread_mutex_lock(&p->lock);
                while (!p->stop && p->count + (p->held ? 1 : 0) >= PIPE_BUFS)
                        (void) pthread_cond_wait(&p->cond, &p->lock);
                if (p->stop) {
                        (void) pthread_mutex_unlock(&p->lock);
                        return NULL;
                }
                idx = (p->head + p->count) % PIPE_BUFS;
                (void) pthread_mutex_unlock(&p->lock);

                /* Only this thread writes a free buffer. */
                b = p->mem + (size_t) idx * PIPE_BUF_SIZE;
                while (len < PIPE_BUF_SIZE) {
                        const void *piece;
                        ssize_t n = decode(s, b + len, PIPE_BUF_SIZE - len, &piece, p->error,
                                           sizeof(p->error));

                        if (n == 0) {
                                eof = true;
                                break;
                        }
                        if (n < 0) {
                                failed = true;
                                break;
                        }
                        if (piece != b + len)
                                memcpy(b + len, piece, (size_t) n);
                        len += (size_t) n;
                }

                (void) pthread_mutex_lock(&p->lock);
                if (len) {
                        p->lens[idx] = len;
                        p->count++;
                }
                p->eof = eof;
                p->failed = failed;
                (void) pthread_cond_broadcast(&p->cond);
                (void) pthread_mutex_unlock(&p->lock);
        }
        return NULL;
}

/* Starts the decompression thread; without one (no memory for threads)
 * the stream is decoded in this thread. */
static void pipeline_start(struct applier *s)
{
        struct pipeline *p = kiln_xcalloc(1, sizeof(*p));

        p->mem = kiln_xmalloc((size_t) PIPE_BUFS * PIPE_BUF_SIZE);
        (void) pthread_mutex_init(&p->lock, NULL);
        (void) pthread_cond_init(&p->cond, NULL);
        s->pipe = p;
        if (pthread_create(&p->thread, NULL, pipeline_run, s) != 0) {
                (void) pthread_mutex_destroy(&p->lock);
                (void) pthread_cond_destroy(&p->cond);
                free(p->mem);
                free(p);
                s->pipe = NULL;
        }
}

static void pipeline_stop(struct applier *s)
{
        struct pipeline *p = s->pipe;

        if (!p)
                return;
        (void) pthread_mutex_lock(&p->lock);
        p->stop = true;
        (void) pthread_cond_broadcast(&p->cond);
        (void) pthread_mutex_unlock(&p->lock);
        (void) pthread_join(p->thread, NULL);
        (void) pthread_mutex_destroy(&p->lock);
        (void) pthread_cond_destroy(&p->cond);
        free(p->mem);
        free(p);
        s->pipe = NULL;
}

/* The next piece of the uncompressed stream: its length, 0 at its end, -1
 * when decompression failed (s->outer_error says why). *buf stays valid
 * until the next call. */
static la_ssize_t next_block(struct applier *s, const void **buf)
{
        struct pipeline *p = s->pipe;

        if (!p) {
                ssize_t n;

                if (s->outer_failed)
                        return -1;
                /* Untouched unless the decoder writes into it. */
                if (!s->own_buf)
                        s->own_buf = kiln_xmalloc(PIPE_BUF_SIZE);
                n = decode(s, s->own_buf, PIPE_BUF_SIZE, buf, s->outer_error,
                           sizeof(s->outer_error));
                if (n < 0)
                        s->outer_failed = true;
                return n;
        }

        (void) pthread_mutex_lock(&p->lock);
        if (p->held) {
                p->held = false;
                (void) pthread_cond_broadcast(&p->cond);
        }
        while (!p->count && !p->eof && !p->failed)
                (void) pthread_cond_wait(&p->cond, &p->lock);
        if (p->count) {
                unsigned idx = p->head;
                la_ssize_t n = (la_ssize_t) p->lens[idx];

                p->head = (p->head + 1) % PIPE_BUFS;
                p->count--;
                p->held = true;
                (void) pthread_mutex_unlock(&p->lock);
                *buf = p->mem + (size_t) idx * PIPE_BUF_SIZE;
                return n;
        }
        if (p->failed) {
                memcpy(s->outer_error, p->error, sizeof(s->outer_error));
                s->outer_failed = true;
        }
        (void) pthread_mutex_unlock(&p->lock);
        return s->outer_failed ? -1 : 0;
}

static la_ssize_t inner_read(struct archive *a, void *userdata, const void **buf)
{
        struct applier *s = userdata;
        la_ssize_t n = next_block(s, buf);

        if (n < 0)
                archive_set_error(a, EIO, "%s", s->outer_error);
        return n;
}

/* Reads what the tar reader left of the stream (its end-of-archive blocks,
 * padding): the diff id covers it, and the compression's trailer is checked. */
static int drain_outer(struct applier *s)
{
        for (;;) {
                const void *buf;
                la_ssize_t n = next_block(s, &buf);

                if (n == 0)
                        return 0;
                if (n < 0)
                        return kiln_error_set(s->err, -EBADMSG, "read layer: %s", s->outer_error);
        }
}

static bool media_type_tarish(const char *mt)
{
        return strstr(mt, "tar") && !strstr(mt, "encrypted");
}

/* outer for what is not gzip: zstd when the media type says so, else
 * sniffed among what moby's DecompressStream knows besides gzip. */
static int setup_outer(struct applier *s, enum decompress how)
{
        struct archive *a = s->outer;
        int r;

        r = archive_read_support_filter_zstd(a);
        if (r == ARCHIVE_OK && how == DECOMPRESS_SNIFF)
                r = archive_read_support_filter_bzip2(a);
        if (r == ARCHIVE_OK && how == DECOMPRESS_SNIFF)
                r = archive_read_support_filter_xz(a);
        /* ARCHIVE_WARN: the library would run an external program. */
        if (r != ARCHIVE_OK)
                return kiln_error_set(s->err, -EOPNOTSUPP,
                                      "read layer: libarchive lacks built-in decompression: %s",
                                      archive_error_string(a));
        if (archive_read_support_filter_none(a) != ARCHIVE_OK ||
            archive_read_support_format_raw(a) != ARCHIVE_OK ||
            archive_read_support_format_empty(a) != ARCHIVE_OK)
                return kiln_error_set(s->err, -EIO, "read layer: %s", archive_error_string(a));
        return 0;
}

/* Picks the decoder, from the media type or the blob's first bytes (what
 * it read of them stays in blob_buf for the decoder). Returns 1 when there
 * is a stream to read as a tar, 0 for an empty one. */
static int open_decoder(struct applier *s, int blob_fd, enum decompress how)
{
        struct archive_entry *e;
        ssize_t n;
        bool gzip;
        int r;

        s->blob_fd = blob_fd;
        s->blob_buf = kiln_xmalloc(READ_BLOCK);
        n = blob_fill(s, 2);
        if (n < 0)
                return kiln_error_set(s->err, (int) n, "read layer: read blob: %s",
                                      strerror((int) -n));
        gzip = how != DECOMPRESS_ZSTD && n >= 2 && s->blob_buf[0] == 0x1f && s->blob_buf[1] == 0x8b;
        if (how == DECOMPRESS_GZIP && !gzip)
                return kiln_error_set(s->err, -EBADMSG,
                                      "read layer: not gzip-compressed as its media type says");
        if (gzip) {
                s->inflate = kiln_xcalloc(1, sizeof(*s->inflate));
                isal_inflate_init(s->inflate);
                s->inflate->crc_flag = ISAL_GZIP;
                s->inflate->next_in = s->blob_buf;
                s->inflate->avail_in = (uint32_t) n;
                s->decode = gzip_decode;
                return 1;
        }

        s->outer = archive_read_new();
        if (!s->outer)
                return kiln_error_set(s->err, -ENOMEM, "read layer: out of memory");
        r = setup_outer(s, how);
        if (r < 0)
                return r;
        s->blob_pending = true;
        if (archive_read_open(s->outer, s, NULL, blob_read, NULL) != ARCHIVE_OK)
                return kiln_error_set(s->err, -EBADMSG, "read layer: %s",
                                      archive_error_string(s->outer));
        r = archive_read_next_header(s->outer, &e);
        if (r < ARCHIVE_WARN)
                return kiln_error_set(s->err, -EBADMSG, "read layer: %s",
                                      archive_error_string(s->outer));
        if (how == DECOMPRESS_ZSTD && archive_filter_code(s->outer, 0) != ARCHIVE_FILTER_ZSTD)
                return kiln_error_set(s->err, -EBADMSG,
                                      "read layer: not zstd-compressed as its media type says");
        s->decode = outer_decode;
        /* An empty stream: no raw entry at all. */
        return r == ARCHIVE_EOF ? 0 : 1;
}

static int apply_stream(struct applier *s, int blob_fd, enum decompress how)
{
        struct archive_entry *e;
        uint64_t n_entries = 0;
        int r;

        r = open_decoder(s, blob_fd, how);
        if (r <= 0)
                return r;

        s->in = archive_read_new();
        if (!s->in)
                return kiln_error_set(s->err, -ENOMEM, "read layer: out of memory");
        if (archive_read_support_format_tar(s->in) != ARCHIVE_OK ||
            archive_read_support_format_empty(s->in) != ARCHIVE_OK)
                return kiln_error_set(s->err, -EIO, "read layer: %s", archive_error_string(s->in));
        if (s->inflate || archive_filter_code(s->outer, 0) != ARCHIVE_FILTER_NONE)
                pipeline_start(s);
        if (archive_read_open(s->in, s, NULL, inner_read, NULL) != ARCHIVE_OK) {
                if (s->outer_failed)
                        return kiln_error_set(s->err, -EBADMSG, "read layer: %s", s->outer_error);
                return kiln_error_set(s->err, -EMEDIUMTYPE, "read layer: not a tar archive: %s",
                                      archive_error_string(s->in));
        }

        for (;;) {
                if (cancelled(s))
                        return kiln_error_set(s->err, -ECANCELED, "layer apply cancelled");
                r = archive_read_next_header(s->in, &e);
                if (r == ARCHIVE_EOF)
                        break;
                if (r < ARCHIVE_WARN) {
                        if (s->outer_failed)
                                return kiln_error_set(s->err, -EBADMSG, "read layer: %s",
                                                      s->outer_error);
                        if (n_entries == 0)
                                return kiln_error_set(s->err, -EMEDIUMTYPE,
                                                      "read layer: not a tar archive: %s",
                                                      archive_error_string(s->in));
                        return kiln_error_set(s->err, -EBADMSG, "read layer: entry %" PRIu64 ": %s",
                                              n_entries + 1, archive_error_string(s->in));
                }
                if (++n_entries > KILN_LIMIT_LAYER_ENTRIES)
                        return kiln_error_set(s->err, -E2BIG, "layer has more than %u entries",
                                              KILN_LIMIT_LAYER_ENTRIES);
                s->st->entries = n_entries;
                r = apply_entry(s, e);
                if (r < 0)
                        return r;
        }
        r = apply_dir_times(s);
        if (r < 0)
                return r;
        return drain_outer(s);
}

int kiln_content_layer_apply(int blob_fd, const char *media_type, int root_fd,
                             const struct kiln_content_layer_options *o,
                             struct kiln_content_layer_stats *ret, struct kiln_error **err)
{
        static const struct kiln_content_layer_options defaults = { 0 };
        struct kiln_content_layer_stats dummy;
        struct applier *s;
        enum decompress how = DECOMPRESS_SNIFF;
        bool want_diff_id;
        int r;

        if (!ret)
                ret = &dummy;
        memset(ret, 0, sizeof(*ret));
        if (!o)
                o = &defaults;

        if (media_type) {
                switch (kiln_content_layer_compression(media_type)) {
                case KILN_CONTENT_COMPRESSION_GZIP:
                        how = DECOMPRESS_GZIP;
                        break;
                case KILN_CONTENT_COMPRESSION_ZSTD:
                        how = DECOMPRESS_ZSTD;
                        break;
                case KILN_CONTENT_COMPRESSION_NONE:
                case KILN_CONTENT_COMPRESSION_UNKNOWN:
                        break;
                case _KILN_CONTENT_COMPRESSION_MAX:
                case _KILN_CONTENT_COMPRESSION_INVALID:
                default:
                        if (!media_type_tarish(media_type))
                                return kiln_error_set(err, -EMEDIUMTYPE,
                                                      "unsupported layer media type \"%.*s\"", 256,
                                                      media_type);
                        break;
                }
        }

        want_diff_id = o->want_diff_id || o->expect_diff_id;
        s = kiln_xcalloc(1, sizeof(*s));
        s->root_fd = root_fd;
        s->o = o;
        s->st = ret;
        s->err = err;
        s->cache_fd = -1;
        if (want_diff_id) {
                s->sha = kiln_sha256_new();
                if (!s->sha) {
                        free(s);
                        return kiln_error_set(err, -ENOMEM, "read layer: out of memory");
                }
        }

        r = apply_stream(s, blob_fd, how);
        /* Before the hash is read and the decoder freed: the thread uses both. */
        pipeline_stop(s);
        if (r >= 0 && s->sha) {
                char hex[KILN_SHA256_HEX_LEN + 1];

                kiln_sha256_final_hex(s->sha, hex);
                (void) snprintf(ret->diff_id, sizeof(ret->diff_id), "sha256:%s", hex);
                if (o->expect_diff_id && !streq(o->expect_diff_id, ret->diff_id))
                        r = kiln_error_set(err, -EBADMSG,
                                           "layer diff id mismatch: expected \"%.*s\", got "
                                           "\"%s\"",
                                           80, o->expect_diff_id, ret->diff_id);
        }

        if (s->in)
                (void) archive_read_free(s->in);
        if (s->outer)
                (void) archive_read_free(s->outer);
        free(s->inflate);
        free(s->blob_buf);
        free(s->own_buf);
        kiln_sha256_free(s->sha);
        cache_drop(s);
        free(s->set);
        free(s->dirs);
        free(s->dir_arena);
        free(s);
        return r < 0 ? r : 0;
}
