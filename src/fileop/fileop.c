/* SPDX-License-Identifier: Apache-2.0 */
#include <limits.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "base/fs.h"
#include "base/passwd.h"
#include "base/pattern.h"
#include "fileop/fileop-internal.h"

/* ---- paths ------------------------------------------------------------ */

const char *fileop_strerror(int errnum)
{
        static __thread char buf[128];
        const char *s = strerror_r(errnum, buf, sizeof(buf));

        if (s != buf)
                (void) snprintf(buf, sizeof(buf), "%s", s);
        buf[0] = ascii_tolower(buf[0]);
        return buf;
}

char *fileop_clean_path(const char *p)
{
        _cleanup_free_ char *joined = kiln_xasprintf("/%s", p);
        char *c = kiln_pattern_clean(joined);
        size_t n = strlen(p);

        if (n >= 2 && p[n - 2] == '/' && p[n - 1] == '.') {
                char *r = kiln_xasprintf("%s%s.", c, streq(c, "/") ? "" : "/");
                free(c);
                return r;
        }
        if (n >= 1 && p[n - 1] == '/' && !streq(c, "/")) {
                char *r = kiln_xasprintf("%s/", c);
                free(c);
                return r;
        }
        return c;
}

int fileop_open_in_root(int rootfd, const char *path, int flags, unsigned mode)
{
        struct open_how how = {
                /* openat2 refuses O_PATH with anything but these. */
                .flags = (uint64_t) (flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY)),
                .mode = (flags & O_CREAT) ? mode : 0,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        long fd;

        do {
                fd = syscall(SYS_openat2, rootfd, *path ? path : ".", &how, sizeof(how));
        } while (fd < 0 && errno == EAGAIN);
        if (fd < 0)
                return -errno;
        return (int) fd;
}

int fileop_open_parent(int rootfd, const char *path, const char **ret_base)
{
        const char *slash = strrchr(path, '/');

        if (!*path) {
                *ret_base = ".";
                return fileop_open_in_root(rootfd, "", O_RDONLY | O_DIRECTORY, 0);
        }
        if (!slash) {
                *ret_base = path;
                return fileop_open_in_root(rootfd, "", O_RDONLY | O_DIRECTORY, 0);
        }
        _cleanup_free_ char *dir = kiln_xstrndup(path, (size_t) (slash - path));
        *ret_base = slash + 1;
        return fileop_open_in_root(rootfd, dir, O_RDONLY | O_DIRECTORY, 0);
}

/* Appends component c (n bytes) to the relative path in b. */
static void rel_append(struct kiln_buf *b, const char *c, size_t n)
{
        if (b->len > 0)
                (void) kiln_buf_putc(b, '/');
        (void) kiln_buf_append(b, c, n);
}

int fileop_resolve(int rootfd, const char *path, bool follow_last, char **ret)
{
        _cleanup_free_ char *joined = kiln_xasprintf("/%s", path);
        _cleanup_free_ char *rest = kiln_pattern_clean(joined);
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(SIZE_MAX);
        unsigned links = 0;
        const char *p = rest;

        if (strlen(rest) > KILN_LIMIT_FILEOP_PATH)
                return -ENAMETOOLONG;
        (void) kiln_buf_puts(&out, "");
        for (;;) {
                const char *c, *end;
                size_t saved = out.len;
                struct stat st;
                bool last;
                int fd;

                while (*p == '/')
                        p++;
                if (!*p)
                        break;
                c = p;
                end = strchrnul(c, '/');
                p = end;
                last = !*end || !end[strspn(end, "/")];
                rel_append(&out, c, (size_t) (end - c));
                if (last && !follow_last)
                        break;

                fd = fileop_open_in_root(rootfd, out.data, O_PATH | O_NOFOLLOW, 0);
                if (fd == -ENOENT) {
                        /* Nothing below exists either: the rest is kept as written. */
                        while (*p == '/')
                                p++;
                        if (*p)
                                rel_append(&out, p, strlen(p));
                        break;
                }
                if (fd < 0)
                        return fd;
                if (fstat(fd, &st) < 0) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                if (!S_ISLNK(st.st_mode)) {
                        close(fd);
                        continue;
                }
                if (++links > FILEOP_MAX_SYMLINKS) {
                        close(fd);
                        return -ELOOP;
                }
                char target[KILN_LIMIT_FILEOP_PATH + 1];
                ssize_t tn = readlinkat(fd, "", target, sizeof(target));
                int saved_errno = errno;
                close(fd);
                if (tn < 0)
                        return -saved_errno;
                if ((size_t) tn >= sizeof(target))
                        return -ENAMETOOLONG;
                target[tn] = 0;

                /* The target, joined to the link's directory and cleaned
                 * lexically (as filepath.Join), replaces the link; the walk
                 * restarts from the root over it and what followed. */
                out.len = saved;
                out.data[out.len] = 0;
                _cleanup_free_ char *spliced = NULL;
                if (target[0] == '/')
                        spliced = kiln_xasprintf("%s/%s", target, p);
                else
                        spliced = kiln_xasprintf("/%s/%s/%s", out.data, target, p);
                free(rest);
                rest = kiln_pattern_clean(spliced);
                if (strlen(rest) > KILN_LIMIT_FILEOP_PATH)
                        return -ENAMETOOLONG;
                p = rest;
                out.len = 0;
                out.data[0] = 0;
        }
        *ret = kiln_xstrndup(out.data, out.len);
        return 0;
}

void fileop_dirlist_release(struct fileop_dirlist *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->paths[i]);
        free(l->paths);
        *l = (struct fileop_dirlist){ 0 };
}

int fileop_set_times_at(int dirfd, const char *name, const struct timespec *ts)
{
        const struct timespec t[2] = { *ts, *ts };

        if (utimensat(dirfd, name, t, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        return 0;
}

int fileop_mkdir_all(int rootfd, const char *path, uint32_t mode, const struct fileop_owner *owner,
                     const struct timespec *ts, struct fileop_dirlist *created)
{
        _cleanup_close_ int dirfd = -1;
        _cleanup_(kiln_buf_release) struct kiln_buf prefix = KILN_BUF_INIT(SIZE_MAX);
        const char *p = path;
        int fd;

        fd = fileop_open_in_root(rootfd, path, O_RDONLY | O_DIRECTORY, 0);
        if (fd >= 0) {
                close(fd);
                return 0;
        }
        if (fd != -ENOENT)
                return fd;

        dirfd = fileop_open_in_root(rootfd, "", O_RDONLY | O_DIRECTORY, 0);
        if (dirfd < 0)
                return dirfd;
        (void) kiln_buf_puts(&prefix, "");
        while (*p) {
                const char *end = strchrnul(p, '/');
                char name[NAME_MAX + 1];
                size_t n = (size_t) (end - p);
                int nfd;

                if (n == 0) {
                        p = end + 1;
                        continue;
                }
                if (n > NAME_MAX)
                        return -ENAMETOOLONG;
                memcpy(name, p, n);
                name[n] = 0;
                rel_append(&prefix, p, n);
                p = *end ? end + 1 : end;

                if (mkdirat(dirfd, name, mode & 0777) == 0) {
                        nfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (nfd < 0)
                                return -errno;
                        if (fchmod(nfd, mode & 0777) < 0 ||
                            (owner && owner->set && fchown(nfd, owner->uid, owner->gid) < 0)) {
                                int r = -errno;
                                close(nfd);
                                return r;
                        }
                        if (ts) {
                                const struct timespec t[2] = { *ts, *ts };
                                if (futimens(nfd, t) < 0) {
                                        int r = -errno;
                                        close(nfd);
                                        return r;
                                }
                        }
                        if (created) {
                                created->paths = kiln_xreallocarray(created->paths, created->n + 1,
                                                                    sizeof(*created->paths));
                                created->paths[created->n++] = kiln_xstrdup(prefix.data);
                        }
                } else if (errno == EEXIST) {
                        /* Existing: a directory, or a link resolved inside the root. */
                        nfd = fileop_open_in_root(rootfd, prefix.data, O_RDONLY | O_DIRECTORY, 0);
                        if (nfd < 0)
                                return nfd == -ENOENT ? -ENOTDIR : nfd;
                } else {
                        return -errno;
                }
                close(dirfd);
                dirfd = nfd;
        }
        return 0;
}

/* ---- owners ------------------------------------------------------------ */

int fileop_owner_resolve(int dest_fd, const struct kiln_llb_chown *c, struct fileop_owner *ret,
                         struct kiln_error **err)
{
        struct fileop_owner o = { 0 };
        int r;

        if (c->user.kind == KILN_LLB_USER_NONE && c->group.kind == KILN_LLB_USER_NONE) {
                *ret = o;
                return 0;
        }
        o.set = true;
        switch (c->user.kind) {
        case KILN_LLB_USER_NONE:
                break;
        case KILN_LLB_USER_ID:
                o.uid = o.gid = c->user.id;
                break;
        case KILN_LLB_USER_NAME: {
                uint32_t uid = 0, gid = 0;
                r = kiln_passwd_lookup_user(dest_fd, c->user.name, &uid, &gid, err);
                if (r < 0)
                        return kiln_error_wrap(err, "chown user \"%s\"", c->user.name);
                if (r > 0) {
                        o.uid = uid;
                        o.gid = gid;
                }
                break;
        }
        }
        switch (c->group.kind) {
        case KILN_LLB_USER_NONE:
                break;
        case KILN_LLB_USER_ID:
                o.gid = c->group.id;
                break;
        case KILN_LLB_USER_NAME: {
                uint32_t gid = 0;
                r = kiln_passwd_lookup_group(dest_fd, c->group.name, &gid, err);
                if (r < 0)
                        return kiln_error_wrap(err, "chown group \"%s\"", c->group.name);
                if (r > 0)
                        o.gid = gid;
                break;
        }
        }
        *ret = o;
        return 0;
}

/* ---- chmod specs (BSD setmode, as BuildKit's mode package) -------------- */

#define M_ISUID 04000
#define M_ISGID 02000
#define M_ISTXT 01000
#define M_RWXU  00700
#define M_RWXG  00070
#define M_RWXO  00007
#define M_RUSR  00400
#define M_WUSR  00200
#define M_XUSR  00100
#define M_RGRP  00040
#define M_WGRP  00020
#define M_XGRP  00010
#define M_ROTH  00004
#define M_WOTH  00002
#define M_XOTH  00001
#define M_STD   (M_ISUID | M_ISGID | M_RWXU | M_RWXG | M_RWXO)

#define CMD2_CLR   1
#define CMD2_SET   2
#define CMD2_GBITS 4
#define CMD2_OBITS 8
#define CMD2_UBITS 16

/* Longest chmod spec accepted. */
#define FILEOP_MODE_SPEC_MAX 256

static void modeset_add(struct fileop_modeset *s, char op, uint16_t who, uint16_t oparg)
{
        /* With a zero umask the mask is all ones. */
        const uint16_t mask = 0xFFFF;
        struct fileop_modecmd c = { 0 };

        s->cmds = kiln_xreallocarray(s->cmds, s->n + 2, sizeof(*s->cmds));
        switch (op) {
        case '=':
                c.cmd = '-';
                c.bits = who ? who : M_STD;
                s->cmds[s->n++] = c;
                op = '+';
                __attribute__((fallthrough));
        case '+':
        case '-':
        case 'X':
                c.cmd = op;
                c.bits = who ? (uint16_t) (who & oparg) : (uint16_t) (mask & oparg);
                break;
        default: /* 'u', 'g', 'o' */
                c.cmd = op;
                if (who) {
                        if (who & M_RUSR)
                                c.cmd2 |= CMD2_UBITS;
                        if (who & M_RGRP)
                                c.cmd2 |= CMD2_GBITS;
                        if (who & M_ROTH)
                                c.cmd2 |= CMD2_OBITS;
                        c.bits = 0xFFFF;
                } else {
                        c.cmd2 = CMD2_UBITS | CMD2_GBITS | CMD2_OBITS;
                        c.bits = mask;
                }
                if (oparg == '+')
                        c.cmd2 |= CMD2_SET;
                else if (oparg == '-')
                        c.cmd2 |= CMD2_CLR;
                else if (oparg == '=')
                        c.cmd2 |= CMD2_SET | CMD2_CLR;
                break;
        }
        s->cmds[s->n++] = c;
}

void fileop_modeset_release(struct fileop_modeset *s)
{
        free(s->cmds);
        *s = (struct fileop_modeset){ 0 };
}

int fileop_modeset_parse(const char *spec, struct fileop_modeset *ret)
{
        struct fileop_modeset m = { 0 };
        const char *s = spec;
        bool equal_done = false;

        if (!*s || strlen(s) > FILEOP_MODE_SPEC_MAX)
                return -EINVAL;
        if (*s >= '0' && *s <= '9') {
                /* strconv.ParseInt(s, 8, 16), then only the 07777 bits. */
                unsigned long v = 0;
                for (; *s; s++) {
                        if (*s < '0' || *s > '7')
                                return -EINVAL;
                        v = v * 8 + (unsigned long) (*s - '0');
                        if (v > 32767)
                                return -EINVAL;
                }
                if (v & ~(unsigned long) (M_STD | M_ISTXT))
                        return -EINVAL;
                modeset_add(&m, '=', M_STD | M_ISTXT, (uint16_t) v);
                *ret = m;
                return 0;
        }
        for (;;) {
                uint16_t who = 0;
                char op;

                for (;; s++) {
                        if (!*s) {
                                fileop_modeset_release(&m);
                                return -EINVAL;
                        }
                        if (*s == 'a')
                                who |= M_STD;
                        else if (*s == 'u')
                                who |= M_ISUID | M_RWXU;
                        else if (*s == 'g')
                                who |= M_ISGID | M_RWXG;
                        else if (*s == 'o')
                                who |= M_RWXO;
                        else
                                break;
                }
        getop:
                op = *s++;
                if (op == '=')
                        equal_done = false;
                else if (op != '+' && op != '-') {
                        fileop_modeset_release(&m);
                        return -EINVAL;
                }
                who &= (uint16_t) ~M_ISTXT;
                {
                        uint16_t perm = 0, permx = 0;
                        for (;; s++) {
                                char b = *s;
                                if (b == 'r') {
                                        perm |= M_RUSR | M_RGRP | M_ROTH;
                                } else if (b == 's') {
                                        if (who == 0 || (who & ~M_RWXO))
                                                perm |= M_ISUID | M_ISGID;
                                } else if (b == 't') {
                                        if (who == 0 || (who & ~M_RWXO)) {
                                                who |= M_ISTXT;
                                                perm |= M_ISTXT;
                                        }
                                } else if (b == 'w') {
                                        perm |= M_WUSR | M_WGRP | M_WOTH;
                                } else if (b == 'X') {
                                        if (op != '-')
                                                permx = M_XUSR | M_XGRP | M_XOTH;
                                        else
                                                perm |= M_XUSR | M_XGRP | M_XOTH;
                                } else if (b == 'x') {
                                        perm |= M_XUSR | M_XGRP | M_XOTH;
                                } else if (b == 'u' || b == 'g' || b == 'o') {
                                        if (perm) {
                                                modeset_add(&m, op, who, perm);
                                                perm = 0;
                                        }
                                        if (op == '=')
                                                equal_done = true;
                                        if (permx) {
                                                modeset_add(&m, 'X', who, permx);
                                                permx = 0;
                                        }
                                        modeset_add(&m, b, who, (uint16_t) op);
                                } else {
                                        if (perm || (op == '=' && !equal_done)) {
                                                if (op == '=')
                                                        equal_done = true;
                                                modeset_add(&m, op, who, perm);
                                        }
                                        if (permx)
                                                modeset_add(&m, 'X', who, permx);
                                        break;
                                }
                        }
                }
                if (!*s)
                        break;
                if (*s != ',')
                        goto getop;
                s++;
        }
        *ret = m;
        return 0;
}

uint32_t fileop_modeset_apply(const struct fileop_modeset *s, uint32_t st_mode)
{
        uint16_t omode = (uint16_t) (st_mode & 07777), nmode = omode;

        for (size_t i = 0; i < s->n; i++) {
                const struct fileop_modecmd *c = &s->cmds[i];
                uint16_t value;

                switch (c->cmd) {
                case 'u':
                case 'g':
                case 'o':
                        value = c->cmd == 'u'   ? (uint16_t) ((nmode & M_RWXU) >> 6)
                                : c->cmd == 'g' ? (uint16_t) ((nmode & M_RWXG) >> 3)
                                                : (uint16_t) (nmode & M_RWXO);
                        if (c->cmd2 & CMD2_CLR) {
                                uint16_t clr = (c->cmd2 & CMD2_SET) ? M_RWXO : value;
                                if (c->cmd2 & CMD2_UBITS)
                                        nmode &= (uint16_t) ~((clr << 6) & c->bits);
                                if (c->cmd2 & CMD2_GBITS)
                                        nmode &= (uint16_t) ~((clr << 3) & c->bits);
                                if (c->cmd2 & CMD2_OBITS)
                                        nmode &= (uint16_t) ~(clr & c->bits);
                        }
                        if (c->cmd2 & CMD2_SET) {
                                if (c->cmd2 & CMD2_UBITS)
                                        nmode |= (uint16_t) ((value << 6) & c->bits);
                                if (c->cmd2 & CMD2_GBITS)
                                        nmode |= (uint16_t) ((value << 3) & c->bits);
                                if (c->cmd2 & CMD2_OBITS)
                                        nmode |= (uint16_t) (value & c->bits);
                        }
                        break;
                case '+':
                        nmode |= c->bits;
                        break;
                case '-':
                        nmode &= (uint16_t) ~c->bits;
                        break;
                case 'X':
                        if ((omode & (M_XUSR | M_XGRP | M_XOTH)) || S_ISDIR(st_mode))
                                nmode |= c->bits;
                        break;
                default:
                        break;
                }
        }
        return nmode & 07777;
}

int kiln_fileop_mode_apply(const char *spec, uint32_t mode, uint32_t *ret, struct kiln_error **err)
{
        struct fileop_modeset s;

        if (fileop_modeset_parse(spec, &s) < 0)
                return kiln_error_set(err, -EINVAL, "invalid chmod mode \"%s\"", spec);
        *ret = fileop_modeset_apply(&s, mode);
        fileop_modeset_release(&s);
        return 0;
}

/* ---- mkdir, mkfile, symlink, rm ---------------------------------------- */

static const struct timespec *action_time(bool has, int64_t ns, struct timespec *buf)
{
        if (!has || ns == -1)
                return NULL;
        buf->tv_sec = (time_t) (ns / 1000000000);
        buf->tv_nsec = (long) (ns % 1000000000);
        if (buf->tv_nsec < 0) {
                buf->tv_sec--;
                buf->tv_nsec += 1000000000;
        }
        return buf;
}

/* The first steps of mkdir, mkfile and symlink: the owner (names resolved
 * in dest_fd's /etc/passwd and /etc/group) and path resolved in dest_fd. */
static int action_target(int dest_fd, const char *op, const char *path,
                         const struct kiln_llb_chown *chown, struct fileop_owner *owner,
                         char **ret_rel, struct kiln_error **err)
{
        int r;

        r = fileop_owner_resolve(dest_fd, chown, owner, err);
        if (r < 0)
                return kiln_error_wrap(err, "%s \"%s\"", op, path);
        r = fileop_resolve(dest_fd, path, true, ret_rel);
        if (r < 0)
                return kiln_error_set(err, r, "%s \"%s\": %s", op, path, fileop_strerror(-r));
        return 0;
}

static int do_mkdir(const struct kiln_llb_file_mkdir *a, int dest_fd, struct kiln_error **err)
{
        struct fileop_owner owner;
        struct timespec tsbuf;
        const struct timespec *ts = action_time(a->has_timestamp, a->timestamp, &tsbuf);
        _cleanup_free_ char *rel = NULL;
        int r;

        r = action_target(dest_fd, "mkdir", a->path, &a->chown, &owner, &rel, err);
        if (r < 0)
                return r;
        if (a->make_parents) {
                r = fileop_mkdir_all(dest_fd, rel, a->mode, &owner, ts, NULL);
                if (r < 0)
                        return kiln_error_set(err, r, "mkdir \"%s\": %s", a->path,
                                              fileop_strerror(-r));
                return 0;
        }

        const char *base;
        _cleanup_close_ int pfd = fileop_open_parent(dest_fd, rel, &base);
        if (pfd < 0)
                return kiln_error_set(err, pfd, "mkdir \"%s\": %s", a->path, fileop_strerror(-pfd));
        if (mkdirat(pfd, base, a->mode & 0777) < 0) {
                if (errno == EEXIST)
                        return 0;
                return kiln_error_set(err, -errno, "mkdir \"%s\": %s", a->path,
                                      fileop_strerror(errno));
        }
        _cleanup_close_ int fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchmod(fd, a->mode & 0777) < 0 ||
            (owner.set && fchown(fd, owner.uid, owner.gid) < 0))
                return kiln_error_set(err, -errno, "mkdir \"%s\": %s", a->path,
                                      fileop_strerror(errno));
        if (ts && fileop_set_times_at(pfd, base, ts) < 0)
                return kiln_error_set(err, -errno, "mkdir \"%s\": set times: %s", a->path,
                                      fileop_strerror(errno));
        return 0;
}

static int do_mkfile(const struct kiln_llb_file_mkfile *a, int dest_fd, struct kiln_error **err)
{
        struct fileop_owner owner;
        struct timespec tsbuf;
        const struct timespec *ts = action_time(a->has_timestamp, a->timestamp, &tsbuf);
        _cleanup_free_ char *rel = NULL;
        const char *base;
        int r;

        r = action_target(dest_fd, "mkfile", a->path, &a->chown, &owner, &rel, err);
        if (r < 0)
                return r;
        if (!*rel)
                return kiln_error_set(err, -EISDIR, "mkfile \"%s\": %s", a->path,
                                      fileop_strerror(EISDIR));
        _cleanup_close_ int pfd = fileop_open_parent(dest_fd, rel, &base);
        if (pfd < 0)
                return kiln_error_set(err, pfd, "mkfile \"%s\": %s", a->path,
                                      fileop_strerror(-pfd));
        _cleanup_close_ int fd =
                openat(pfd, base, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
                       a->mode & 0777);
        if (fd < 0)
                return kiln_error_set(err, -errno, "mkfile \"%s\": %s", a->path,
                                      fileop_strerror(errno));
        int wr = kiln_write_all(fd, a->data, a->len);
        if (wr < 0)
                return kiln_error_set(err, wr, "mkfile \"%s\": write: %s", a->path,
                                      fileop_strerror(-wr));
        if (owner.set && fchown(fd, owner.uid, owner.gid) < 0)
                return kiln_error_set(err, -errno, "mkfile \"%s\": chown: %s", a->path,
                                      fileop_strerror(errno));
        if (ts && fileop_set_times_at(pfd, base, ts) < 0)
                return kiln_error_set(err, -errno, "mkfile \"%s\": set times: %s", a->path,
                                      fileop_strerror(errno));
        return 0;
}

static int do_symlink(const struct kiln_llb_file_symlink *a, int dest_fd, struct kiln_error **err)
{
        struct fileop_owner owner;
        struct timespec tsbuf;
        const struct timespec *ts = action_time(a->has_timestamp, a->timestamp, &tsbuf);
        _cleanup_free_ char *rel = NULL;
        const char *base;
        int r;

        r = action_target(dest_fd, "symlink", a->newpath, &a->chown, &owner, &rel, err);
        if (r < 0)
                return r;
        _cleanup_close_ int pfd = fileop_open_parent(dest_fd, rel, &base);
        if (pfd < 0)
                return kiln_error_set(err, pfd, "symlink \"%s\": %s", a->newpath,
                                      fileop_strerror(-pfd));
        if (symlinkat(a->oldpath, pfd, base) < 0)
                return kiln_error_set(err, -errno, "symlink \"%s\": %s", a->newpath,
                                      fileop_strerror(errno));
        if (owner.set && fchownat(pfd, base, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_set(err, -errno, "symlink \"%s\": chown: %s", a->newpath,
                                      fileop_strerror(errno));
        if (ts && fileop_set_times_at(pfd, base, ts) < 0)
                return kiln_error_set(err, -errno, "symlink \"%s\": set times: %s", a->newpath,
                                      fileop_strerror(errno));
        return 0;
}

/* BuildKit's rmPath: the parent resolved in the root, the entry itself
 * removed without following it. */
static int rm_path(int dest_fd, const char *path, bool allow_not_found, struct kiln_error **err)
{
        _cleanup_free_ char *joined = kiln_xasprintf("/%s", path);
        _cleanup_free_ char *clean = kiln_pattern_clean(joined);
        _cleanup_free_ char *dir = NULL, *rel = NULL;
        const char *base = strrchr(clean, '/') + 1;
        int r;

        if (!*base)
                return kiln_error_set(err, -EINVAL, "rm \"%s\": invalid empty path", path);
        dir = kiln_xstrndup(clean, (size_t) (base - clean));
        r = fileop_resolve(dest_fd, dir, true, &rel);
        if (r < 0)
                return kiln_error_set(err, r, "rm \"%s\": %s", path, fileop_strerror(-r));
        _cleanup_close_ int pfd = fileop_open_in_root(dest_fd, rel, O_RDONLY | O_DIRECTORY, 0);
        if (pfd < 0) {
                if (pfd == -ENOENT && allow_not_found)
                        return 0;
                return kiln_error_set(err, pfd, "rm \"%s\": %s", path, fileop_strerror(-pfd));
        }
        if (!allow_not_found) {
                /* os.Stat: a dangling link counts as missing. */
                _cleanup_free_ char *full = kiln_xasprintf("%s%s%s", rel, *rel ? "/" : "", base);
                int fd = fileop_open_in_root(dest_fd, full, O_PATH, 0);
                if (fd == -ENOENT)
                        return kiln_error_set(err, -ENOENT, "rm \"%s\": %s", path,
                                              fileop_strerror(ENOENT));
                if (fd >= 0)
                        close(fd);
        }
        r = kiln_rm_rf_at(pfd, base, NULL, err);
        if (r < 0)
                return kiln_error_wrap(err, "rm \"%s\"", path);
        return 0;
}

static int do_rm(const struct kiln_llb_file_rm *a, int dest_fd, const struct kiln_fileop_options *o,
                 struct kiln_error **err)
{
        char **matches = NULL;
        size_t n = 0;
        int r = 0;

        if (!a->allow_wildcard)
                return rm_path(dest_fd, a->path, a->allow_not_found, err);

        _cleanup_free_ char *src = fileop_clean_path(a->path);
        r = fileop_resolve_wildcards(dest_fd, src, false, &matches, &n, err);
        if (r < 0)
                return kiln_error_wrap(err, "rm \"%s\"", a->path);
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (fileop_cancelled(o))
                        r = kiln_error_set(err, -ECANCELED, "rm \"%s\": cancelled", a->path);
                else
                        r = rm_path(dest_fd, matches[i], a->allow_not_found, err);
        }
        kiln_pattern_strv_free(matches);
        return r;
}

int kiln_fileop_apply(const struct kiln_llb_file_action *a, int dest_fd, int src_fd,
                      const struct kiln_fileop_options *o, struct kiln_error **err)
{
        if (fileop_cancelled(o))
                return kiln_error_set(err, -ECANCELED, "file operation cancelled");
        switch (a->type) {
        case KILN_LLB_FILE_COPY:
                return fileop_copy(&a->copy, dest_fd, src_fd, o, err);
        case KILN_LLB_FILE_MKDIR:
                return do_mkdir(&a->mkdir, dest_fd, err);
        case KILN_LLB_FILE_MKFILE:
                return do_mkfile(&a->mkfile, dest_fd, err);
        case KILN_LLB_FILE_RM:
                return do_rm(&a->rm, dest_fd, o, err);
        case KILN_LLB_FILE_SYMLINK:
                return do_symlink(&a->symlink, dest_fd, err);
        }
        return kiln_error_set(err, -EINVAL, "unknown file action %d", (int) a->type);
}
