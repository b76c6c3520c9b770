/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fs.h"

int kiln_read_file_at_flags(int dirfd, const char *path, int open_flags, struct kiln_buf *b)
{
        _cleanup_close_ int fd = -1;

        /* O_NONBLOCK: opening a FIFO without a writer, or a device, must not
         * wait; such files are refused below. A regular file ignores it. */
        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | open_flags);
        if (fd < 0)
                return -errno;
        return kiln_read_fd(fd, b);
}

int kiln_read_fd(int fd, struct kiln_buf *b)
{
        char chunk[16384];
        struct stat st;
        int r;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((uint64_t) st.st_size > b->max)
                return -E2BIG;
        kiln_buf_reset(b);
        for (;;) {
                ssize_t n = read(fd, chunk, sizeof(chunk));

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                /* The file may have grown since the fstat. */
                r = kiln_buf_append(b, chunk, (size_t) n);
                if (r < 0)
                        return r;
        }
        /* An empty file still yields a NUL-terminated buffer. */
        return kiln_buf_append(b, "", 0);
}

int kiln_read_file_at(int dirfd, const char *path, struct kiln_buf *b)
{
        return kiln_read_file_at_flags(dirfd, path, 0, b);
}

const char *kiln_read_file_strerror(int r, size_t max, char buf[static 64])
{
        if (r == -EINVAL)
                return "not a regular file";
        if (r == -E2BIG) {
                (void) snprintf(buf, 64, "larger than %zu bytes", max);
                return buf;
        }
        return strerror(-r);
}

int kiln_mkdir_p(const char *path, unsigned mode)
{
        _cleanup_free_ char *p = kiln_xstrdup(path);
        char *s;

        for (s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int kiln_write_all(int fd, const void *data, size_t n)
{
        const char *p = data;

        while (n > 0) {
                ssize_t w = write(fd, p, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return -errno;
                p += w;
                n -= (size_t) w;
        }
        return 0;
}

static int write_file(const char *path, const void *data, size_t n, unsigned mode, bool sync)
{
        _cleanup_free_ char *tmp = kiln_xasprintf("%s.XXXXXX", path);
        _cleanup_free_ char *dir = kiln_xstrdup(path);
        _cleanup_close_ int fd = -1, dfd = -1;
        char *slash;
        int r;

        /* mkostemp: a fresh name opened with O_EXCL, so nothing planted at a
         * guessable name is ever written through. */
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0)
                goto fail;
        r = kiln_write_all(fd, data, n);
        if (r < 0) {
                errno = -r;
                goto fail;
        }
        if ((sync && fsync(fd) < 0) || rename(tmp, path) < 0)
                goto fail;
        if (!sync)
                return 0;

        /* The rename itself survives a crash once the directory is synced. */
        slash = strrchr(dir, '/');
        if (slash)
                *(slash == dir ? slash + 1 : slash) = '\0';
        dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);
        return 0;
fail:
        r = -errno;
        (void) unlink(tmp);
        return r;
}

int kiln_write_file_atomic(const char *path, const void *data, size_t n, unsigned mode)
{
        return write_file(path, data, n, mode, true);
}

int kiln_write_file_replace(const char *path, const void *data, size_t n, unsigned mode)
{
        return write_file(path, data, n, mode, false);
}

int kiln_path_absolute(const char *path, char **ret)
{
        _cleanup_free_ char *cwd = NULL;
        char *s;
        size_t n;

        if (path[0] == '/')
                s = kiln_xstrdup(path);
        else {
                cwd = getcwd(NULL, 0);
                if (!cwd)
                        return -errno;
                s = kiln_xasprintf("%s%s%s", cwd, streq(cwd, "/") ? "" : "/", path);
        }
        n = strlen(s);
        while (n > 1 && s[n - 1] == '/')
                s[--n] = '\0';
        *ret = s;
        return 0;
}

/* ---- kiln_rm_rf_at ---- */

struct rm_rf {
        uint64_t mnt_id; /* of the top, when the kernel tells (STATX_MNT_ID) */
        bool has_mnt_id;
        dev_t dev; /* of the top: the check without mount ids */
        struct kiln_error **err;
};

static int rm_rf_fail(const struct rm_rf *x, int r, const char *path, const char *what)
{
        return kiln_error_set(x->err, r, "remove '%s': %s", path, what ? what : strerror(-r));
}

/* The file system of the open directory fd is the top's. */
static int rm_rf_same_mount(const struct rm_rf *x, int fd, const char *path)
{
        struct statx stx;
        bool other;

        if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MNT_ID, &stx) < 0)
                return rm_rf_fail(x, -errno, path, NULL);
        /* A bind mount of the same file system has the same device: the
         * mount id tells them apart where the kernel has it. */
        if (x->has_mnt_id && (stx.stx_mask & STATX_MNT_ID))
                other = stx.stx_mnt_id != x->mnt_id;
        else
                other = makedev(stx.stx_dev_major, stx.stx_dev_minor) != x->dev;
        if (other)
                return rm_rf_fail(x, -EBUSY, path, "a file system is mounted there");
        return 0;
}

static int rm_rf_entry(const struct rm_rf *x, int parent, const char *name, const char *path,
                       unsigned depth);

/* Removes what the directory fd (at path) holds but keep. Takes fd. */
static int rm_rf_children(const struct rm_rf *x, int fd, const char *path, const char *keep,
                          unsigned depth)
{
        struct dirent *de;
        DIR *d;
        int r = 0;

        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                (void) close(fd);
                return rm_rf_fail(x, r, path, NULL);
        }
        while (r >= 0 && (de = readdir(d))) {
                _cleanup_free_ char *child = NULL;

                if (streq(de->d_name, ".") || streq(de->d_name, "..") ||
                    (keep && streq(de->d_name, keep)))
                        continue;
                child = kiln_xasprintf("%s/%s", path, de->d_name);
                r = rm_rf_entry(x, dirfd(d), de->d_name, child, depth + 1);
        }
        (void) closedir(d);
        return r;
}

static int rm_rf_entry(const struct rm_rf *x, int parent, const char *name, const char *path,
                       unsigned depth)
{
        struct stat st;
        int fd, r;

        if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : rm_rf_fail(x, -errno, path, NULL);
        if (!S_ISDIR(st.st_mode)) {
                if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
                        return rm_rf_fail(x, -errno, path, NULL);
                return 0;
        }
        if (depth >= KILN_RM_RF_MAX_DEPTH)
                return rm_rf_fail(x, -ELOOP, path, "nested too deeply");
        /* O_NOFOLLOW: a directory swapped for a link since the fstatat is
         * not followed; the checks below look at what was opened. */
        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return rm_rf_fail(x, -errno, path, NULL);
        r = rm_rf_same_mount(x, fd, path);
        if (r < 0) {
                (void) close(fd);
                return r;
        }
        r = rm_rf_children(x, fd, path, NULL, depth);
        if (r < 0)
                return r;
        if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return rm_rf_fail(x, -errno, path, NULL);
        return 0;
}

int kiln_rm_rf_at(int dirfd, const char *path, const char *keep, struct kiln_error **err)
{
        struct rm_rf x = { .err = err };
        struct statx stx;
        int fd, r;

        if (statx(dirfd, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MNT_ID, &stx) < 0)
                return errno == ENOENT ? 0 : rm_rf_fail(&x, -errno, path, NULL);
        x.has_mnt_id = stx.stx_mask & STATX_MNT_ID;
        x.mnt_id = stx.stx_mnt_id;
        x.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
        if (!keep || !S_ISDIR(stx.stx_mode))
                return rm_rf_entry(&x, dirfd, path, path, 0);

        fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return rm_rf_fail(&x, -errno, path, NULL);
        r = rm_rf_same_mount(&x, fd, path);
        if (r < 0) {
                (void) close(fd);
                return r;
        }
        return rm_rf_children(&x, fd, path, keep, 0);
}

bool kiln_tmp_name_is_ours(const char *name)
{
        const char *last = strrchr(name, '-'), *prev;
        char pid[24];

        if (!last || last == name)
                return false;
        for (prev = last - 1; prev > name && *prev != '-'; prev--)
                ;
        if (*prev != '-')
                return false;
        snprintf(pid, sizeof(pid), "%ld", (long) getpid());
        return (size_t) (last - prev - 1) == strlen(pid) &&
               strncmp(prev + 1, pid, strlen(pid)) == 0;
}
