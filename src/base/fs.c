/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fs.h"

int kiln_read_file_at(int dirfd, const char *path, struct kiln_buf *b)
{
        _cleanup_close_ int fd = -1;
        char chunk[16384];
        struct stat st;
        int r;

        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (S_ISREG(st.st_mode) && (uint64_t) st.st_size > b->max)
                return -E2BIG;
        for (;;) {
                ssize_t n = read(fd, chunk, sizeof(chunk));

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                r = kiln_buf_append(b, chunk, (size_t) n);
                if (r < 0)
                        return r;
        }
        /* An empty file still yields a NUL-terminated buffer. */
        return kiln_buf_append(b, "", 0);
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

int kiln_write_file_atomic(const char *path, const void *data, size_t n, unsigned mode)
{
        _cleanup_free_ char *tmp = kiln_xasprintf("%s.XXXXXX", path);
        _cleanup_free_ char *dir = kiln_xstrdup(path);
        _cleanup_close_ int fd = -1, dfd = -1;
        const char *p = data;
        char *slash;
        int r;

        /* mkostemp: a fresh name opened with O_EXCL, so nothing planted at a
         * guessable name is ever written through. */
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0)
                goto fail;
        while (n > 0) {
                ssize_t w = write(fd, p, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        goto fail;
                p += w;
                n -= (size_t) w;
        }
        if (fsync(fd) < 0 || rename(tmp, path) < 0)
                goto fail;

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
