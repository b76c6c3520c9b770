/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "base/buf.h"
#include "exec/exec.h"

/* Deepest working directory created (path components). */
#define KILN_EXEC_MAX_CWD_DEPTH 256u

static int open_in_root(int rootfd, const char *path)
{
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
        if (fd < 0)
                return -errno;
        return (int) fd;
}

int kiln_exec_prepare_cwd(int rootfd, const char *cwd, uint32_t uid, uint32_t gid,
                          struct kiln_error **err)
{
        if (!cwd || !*cwd)
                return 0;
        if (cwd[0] != '/')
                return kiln_error_set(err, -EINVAL, "working directory '%s' is not absolute", cwd);
        if (strlen(cwd) >= PATH_MAX)
                return kiln_error_set(err, -ENAMETOOLONG,
                                      "working directory '%.64s...' is too long", cwd);

        /* Lexically cleaned ("." dropped, ".." pops, stopping at the root),
         * then walked one component at a time: each prefix is opened inside
         * the root, so a symbolic link on the way resolves within it. */
        _cleanup_free_ char *copy = kiln_xstrdup(cwd);
        const char *comps[KILN_EXEC_MAX_CWD_DEPTH];
        size_t n = 0;
        char *save = NULL;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (streq(c, "."))
                        continue;
                if (streq(c, "..")) {
                        if (n > 0)
                                n--;
                        continue;
                }
                if (n == KILN_EXEC_MAX_CWD_DEPTH)
                        return kiln_error_set(err, -ELOOP,
                                              "working directory '%s' is deeper than %u levels",
                                              cwd, KILN_EXEC_MAX_CWD_DEPTH);
                comps[n++] = c;
        }

        _cleanup_close_ int dirfd = open_in_root(rootfd, "/");
        if (dirfd < 0)
                return kiln_error_set(err, dirfd, "open root file system: %s", strerror(-dirfd));
        struct kiln_buf prefix = KILN_BUF_INIT(PATH_MAX);
        int r = 0;
        for (size_t i = 0; i < n; i++) {
                (void) kiln_buf_printf(&prefix, "/%s", comps[i]);
                int fd = open_in_root(rootfd, prefix.data);
                if (fd == -ENOENT) {
                        /* Missing: create it in its (resolved) parent. A
                         * dangling symbolic link there makes mkdirat fail
                         * with EEXIST rather than follow it. */
                        if (mkdirat(dirfd, comps[i], 0755) < 0) {
                                if (errno != EEXIST) {
                                        r = kiln_error_set(
                                                err, -errno,
                                                "failed to create working directory '%s': %s",
                                                prefix.data, strerror(errno));
                                        goto out;
                                }
                        } else if (fchownat(dirfd, comps[i], uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
                                   /* exactly 0755, whatever the daemon's umask */
                                   fchmodat(dirfd, comps[i], 0755, 0) < 0) {
                                r = kiln_error_set(err, -errno,
                                                   "failed to create working directory '%s': %s",
                                                   prefix.data, strerror(errno));
                                goto out;
                        }
                        fd = open_in_root(rootfd, prefix.data);
                }
                if (fd < 0) {
                        r = kiln_error_set(err, fd, "failed to create working directory '%s': %s",
                                           prefix.data,
                                           fd == -ENOTDIR ? "not a directory" : strerror(-fd));
                        goto out;
                }
                close(dirfd);
                dirfd = fd;
        }
out:
        kiln_buf_release(&prefix);
        return r;
}
