/* SPDX-License-Identifier: Apache-2.0 */
#include "base/passwd.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "base/buf.h"
#include "base/fs.h"

#define PASSWD_PATH "/etc/passwd"
#define GROUP_PATH  "/etc/group"

/* The text of a file (NULL data: the file does not exist). */
struct text {
        const char *data;
        size_t len;
        const char *path; /* for messages */
};

/* One line of a file, split on ':' (fields point into the text). */
#define MAX_FIELDS 7
struct fields {
        const char *p[MAX_FIELDS];
        size_t n[MAX_FIELDS];
        size_t count; /* fields past MAX_FIELDS are ignored, as runc does */
};

/* Line iterator over a text: yields trimmed lines; fails on a line longer
 * than KILN_PASSWD_MAX_LINE. */
struct lines {
        const char *p;
        const char *end;
        unsigned lineno;
};

static bool is_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Returns 1 with the next line in *line and *n (whitespace trimmed), 0 at the
 * end, -E2BIG for an overlong line. */
static int lines_next(struct lines *it, const char **line, size_t *n)
{
        if (it->p >= it->end)
                return 0;
        const char *s = it->p;
        const char *nl = memchr(s, '\n', (size_t) (it->end - s));
        const char *e = nl ? nl : it->end;
        it->p = nl ? nl + 1 : it->end;
        it->lineno++;
        if ((size_t) (e - s) > KILN_PASSWD_MAX_LINE)
                return -E2BIG;
        while (s < e && is_space(*s))
                s++;
        while (e > s && is_space(e[-1]))
                e--;
        *line = s;
        *n = (size_t) (e - s);
        return 1;
}

static void split_fields(const char *line, size_t n, struct fields *f)
{
        f->count = 0;
        const char *s = line, *end = line + n;
        for (;;) {
                const char *c = memchr(s, ':', (size_t) (end - s));
                const char *e = c ? c : end;
                if (f->count < MAX_FIELDS) {
                        f->p[f->count] = s;
                        f->n[f->count] = (size_t) (e - s);
                        f->count++;
                }
                if (!c)
                        break;
                s = c + 1;
        }
}

static bool field_eq(const struct fields *f, size_t i, const char *s)
{
        size_t l = strlen(s);
        /* A missing field is "" */
        if (i >= f->count)
                return l == 0;
        return f->n[i] == l && memcmp(f->p[i], s, l) == 0;
}

/* Go's strconv.Atoi on 64-bit: optional sign, decimal digits. Returns 0 and
 * the value (clamped to the int64 range, as Atoi returns it with ErrRange)
 * and sets *range_err on overflow; -EINVAL for a syntax error. */
static int go_atoi(const char *s, size_t n, int64_t *ret, bool *range_err)
{
        bool neg = false;
        size_t i = 0;
        *range_err = false;
        if (n > 0 && (s[0] == '+' || s[0] == '-')) {
                neg = s[0] == '-';
                i = 1;
        }
        if (i == n)
                return -EINVAL;
        uint64_t v = 0;
        bool over = false;
        for (; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                unsigned d = (unsigned) (s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        over = true;
                else
                        v = v * 10 + d;
        }
        if (!neg && (over || v > (uint64_t) INT64_MAX)) {
                *range_err = true;
                *ret = INT64_MAX;
        } else if (neg && (over || v > (uint64_t) INT64_MAX + 1)) {
                *range_err = true;
                *ret = INT64_MIN;
        } else if (neg)
                *ret = v == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) v;
        else
                *ret = (int64_t) v;
        return 0;
}

/* A numeric field of a file: conversion errors are 0, as runc's parseLine. */
static int64_t field_int(const struct fields *f, size_t i)
{
        if (i >= f->count)
                return 0;
        int64_t v;
        bool range_err;
        if (go_atoi(f->p[i], f->n[i], &v, &range_err) < 0)
                return 0;
        return v;
}

/* runc's parseNumeric: "" and non-numbers are not numeric; numbers outside
 * 0..KILN_PASSWD_MAX_ID are an error. */
static int parse_numeric(const char *s, int64_t *ret, bool *is_num, struct kiln_error **err)
{
        *ret = 0;
        *is_num = false;
        if (!*s)
                return 0;
        bool range_err;
        int64_t v;
        if (go_atoi(s, strlen(s), &v, &range_err) < 0)
                return 0;
        if (range_err || v < 0 || v > (int64_t) KILN_PASSWD_MAX_ID)
                return kiln_error_set(err, -ERANGE, "uids and gids must be in range 0-%u",
                                      KILN_PASSWD_MAX_ID);
        *ret = v;
        *is_num = true;
        return 0;
}

static int line_error(struct kiln_error **err, const struct text *t, unsigned lineno)
{
        return kiln_error_set(err, -E2BIG, "'%s' line %u is longer than %u bytes", t->path, lineno,
                              KILN_PASSWD_MAX_LINE);
}

/* Finds the first passwd entry matching by name (name != NULL) or uid;
 * its name and home are malloc'd into *ret_name / *ret_home when those are
 * not NULL. The whole file is scanned, as runc parses it all before
 * filtering: an overlong line anywhere is an error. Returns 1 found, 0 not,
 * -E2BIG for an overlong line. */
static int passwd_find(const struct text *t, const char *name, int64_t uid, int64_t *ret_uid,
                       int64_t *ret_gid, char **ret_name, char **ret_home, struct kiln_error **err)
{
        if (!t->data)
                return 0;
        struct lines it = { t->data, t->data + t->len, 0 };
        const char *line;
        size_t n;
        int r, found = 0;
        while ((r = lines_next(&it, &line, &n)) > 0) {
                if (n == 0 || found)
                        continue;
                struct fields f;
                split_fields(line, n, &f);
                /* name:pass:uid:gid:gecos:home:shell */
                bool match = name ? field_eq(&f, 0, name) : field_int(&f, 2) == uid;
                if (!match)
                        continue;
                found = 1;
                *ret_uid = field_int(&f, 2);
                *ret_gid = field_int(&f, 3);
                if (ret_name)
                        *ret_name = kiln_xstrndup(f.p[0], f.n[0]);
                if (ret_home)
                        *ret_home = f.count > 5 ? kiln_xstrndup(f.p[5], f.n[5]) : kiln_xstrdup("");
        }
        if (r < 0) {
                if (found && ret_name) {
                        free(*ret_name);
                        *ret_name = NULL;
                }
                if (found && ret_home) {
                        free(*ret_home);
                        *ret_home = NULL;
                }
                return line_error(err, t, it.lineno);
        }
        return found;
}

/* Whether the comma-separated member list (field 3 of a group line)
 * holds name. */
static bool members_contain(const struct fields *f, const char *name)
{
        if (f->count < 4 || !*name)
                return false;
        size_t l = strlen(name);
        const char *s = f->p[3], *end = f->p[3] + f->n[3];
        /* runc keeps everything after the fourth ':' out of the list. */
        for (;;) {
                const char *c = memchr(s, ',', (size_t) (end - s));
                const char *e = c ? c : end;
                if ((size_t) (e - s) == l && memcmp(s, name, l) == 0)
                        return true;
                if (!c)
                        return false;
                s = c + 1;
        }
}

enum group_filter { GROUP_BY_NAME, GROUP_BY_GID, GROUP_BY_MEMBER };

/* Collects the gids of the group entries matching the filter (all of them
 * when gids is not NULL, else stops at the first). Returns the number
 * matched (capped at KILN_PASSWD_MAX_GROUPS for the list), -errno. */
static int group_find(const struct text *t, enum group_filter by, const char *name, int64_t gid,
                      int64_t *ret_first, uint32_t **gids, size_t *n_gids, struct kiln_error **err)
{
        if (!t->data)
                return 0;
        struct lines it = { t->data, t->data + t->len, 0 };
        const char *line;
        size_t n;
        int r, found = 0;
        size_t cap = 0;
        while ((r = lines_next(&it, &line, &n)) > 0) {
                if (n == 0 || line[0] == '#')
                        continue;
                struct fields f;
                split_fields(line, n, &f);
                /* name:pass:gid:members */
                bool match;
                switch (by) {
                case GROUP_BY_NAME:
                        match = field_eq(&f, 0, name);
                        break;
                case GROUP_BY_GID:
                        match = field_int(&f, 2) == gid;
                        break;
                case GROUP_BY_MEMBER:
                default:
                        match = members_contain(&f, name);
                        break;
                }
                if (!match)
                        continue;
                int64_t g = field_int(&f, 2);
                if (found == 0 && ret_first)
                        *ret_first = g;
                if (gids) {
                        if (*n_gids >= KILN_PASSWD_MAX_GROUPS) {
                                r = kiln_error_set(err, -E2BIG,
                                                   "'%s' lists the user in more than %u groups",
                                                   t->path, KILN_PASSWD_MAX_GROUPS);
                                goto fail;
                        }
                        if (*n_gids == cap) {
                                cap = cap ? cap * 2 : 8;
                                *gids = kiln_xreallocarray(*gids, cap, sizeof(**gids));
                        }
                        (*gids)[(*n_gids)++] = (uint32_t) g;
                }
                if (found < INT32_MAX)
                        found++;
        }
        if (r < 0) {
                r = line_error(err, t, it.lineno);
                goto fail;
        }
        return found;
fail:
        if (gids) {
                free(*gids);
                *gids = NULL;
                *n_gids = 0;
        }
        return r;
}

void kiln_passwd_user_release(struct kiln_passwd_user *u)
{
        if (!u)
                return;
        free(u->gids);
        free(u->home);
        *u = (struct kiln_passwd_user){ 0 };
}

/* BuildKit's parseUID: "root" or a decimal uint32 (no sign). */
static bool parse_fast_id(const char *s, size_t n, uint32_t *ret)
{
        if (n == 4 && memcmp(s, "root", 4) == 0) {
                *ret = 0;
                return true;
        }
        if (n == 0)
                return false;
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
                if (v > UINT32_MAX)
                        return false;
        }
        *ret = (uint32_t) v;
        return true;
}

/* runc's GetExecUser with default uid/gid 0, on user[:group] already split. */
static int get_exec_user(const char *user_arg, const char *group_arg, const struct text *passwd,
                         const struct text *group, struct kiln_passwd_user *ret,
                         struct kiln_error **err)
{
        int64_t uid_arg, gid_arg;
        bool is_uid, is_gid;
        int r = parse_numeric(user_arg, &uid_arg, &is_uid, err);
        if (r < 0)
                return r;
        r = parse_numeric(group_arg, &gid_arg, &is_gid, err);
        if (r < 0)
                return r;

        struct kiln_passwd_user u = { 0 };
        int64_t puid = 0, pgid = 0;
        _cleanup_free_ char *matched_name = NULL;
        r = passwd_find(passwd, *user_arg && !is_uid ? user_arg : NULL, *user_arg ? uid_arg : 0,
                        &puid, &pgid, &matched_name, &u.home, err);
        if (r < 0)
                return kiln_error_wrap(err, "unable to find user %s", *user_arg ? user_arg : "0");
        if (r > 0) {
                u.uid = (uint32_t) puid;
                u.gid = (uint32_t) pgid;
        } else if (*user_arg) {
                if (!is_uid)
                        return kiln_error_set(err, -ENOENT,
                                              "unable to find user %s: no matching entries in "
                                              "passwd file",
                                              user_arg);
                u.uid = (uint32_t) uid_arg;
        }

        if (*group_arg || (matched_name && *matched_name)) {
                if (*group_arg) {
                        int64_t g = 0;
                        r = group_find(group, is_gid ? GROUP_BY_GID : GROUP_BY_NAME, group_arg,
                                       gid_arg, &g, NULL, NULL, err);
                        if (r < 0) {
                                kiln_passwd_user_release(&u);
                                return kiln_error_wrap(err, "unable to find groups for spec %s",
                                                       matched_name ? matched_name : "");
                        }
                        if (r > 0)
                                u.gid = (uint32_t) g;
                        else if (!is_gid) {
                                kiln_passwd_user_release(&u);
                                return kiln_error_set(err, -ENOENT,
                                                      "unable to find group %s: no matching "
                                                      "entries in group file",
                                                      group_arg);
                        } else
                                u.gid = (uint32_t) gid_arg;
                } else {
                        r = group_find(group, GROUP_BY_MEMBER, matched_name, 0, NULL, &u.gids,
                                       &u.n_gids, err);
                        if (r < 0) {
                                kiln_passwd_user_release(&u);
                                return kiln_error_wrap(err, "unable to find groups for spec %s",
                                                       matched_name);
                        }
                }
        }
        *ret = u;
        return 0;
}

int kiln_passwd_resolve_data(const char *spec, const char *passwd, size_t passwd_len,
                             const char *group, size_t group_len, struct kiln_passwd_user *ret,
                             struct kiln_error **err)
{
        bool is_default = false;
        if (!spec || !*spec) {
                spec = "0";
                is_default = true;
        }

        /* Fast path: both sides given and numeric (or "root"); no file read. */
        const char *colon = strchr(spec, ':');
        if (colon) {
                uint32_t uid, gid;
                const char *g = colon + 1;
                if (parse_fast_id(spec, (size_t) (colon - spec), &uid) &&
                    parse_fast_id(g, strlen(g), &gid)) {
                        *ret = (struct kiln_passwd_user){ .uid = uid, .gid = gid };
                        return 0;
                }
        }

        /* runc splits the spec on ':' and uses the first two fields. */
        _cleanup_free_ char *user_arg = NULL, *group_arg = NULL;
        if (colon) {
                user_arg = kiln_xstrndup(spec, (size_t) (colon - spec));
                const char *g = colon + 1;
                const char *c2 = strchr(g, ':');
                group_arg = c2 ? kiln_xstrndup(g, (size_t) (c2 - g)) : kiln_xstrdup(g);
        } else {
                user_arg = kiln_xstrdup(spec);
                group_arg = kiln_xstrdup("");
        }

        struct text pt = { passwd, passwd_len, PASSWD_PATH };
        struct text gt = { group, group_len, GROUP_PATH };
        struct kiln_passwd_user u = { 0 };
        int r = get_exec_user(user_arg, group_arg, &pt, &gt, &u, err);
        if (r < 0) {
                if (is_default) {
                        if (err) {
                                kiln_error_free(*err);
                                *err = NULL;
                        }
                        *ret = (struct kiln_passwd_user){ 0 };
                        return 0;
                }
                return r;
        }
        *ret = u;
        return 0;
}

/* openat2 has no glibc wrapper on every system kiln builds on. */
static int openat2_in_root(int rootfd, const char *path, int flags)
{
        struct open_how how = {
                .flags = (uint64_t) flags,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
        if (fd < 0)
                return -errno;
        return (int) fd;
}

/* Reads path below rootfd into b. Returns 1 read, 0 missing (absent, or a
 * parent is not a directory), -EINVAL not a regular file, -E2BIG too large,
 * other -errno. */
static int read_user_file(int rootfd, const char *path, struct kiln_buf *b)
{
        _cleanup_close_ int fd =
                openat2_in_root(rootfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd == -ENOENT || fd == -ENOTDIR)
                return 0;
        if (fd < 0)
                return fd;
        int r = kiln_read_fd(fd, b);
        if (r == -EISDIR)
                return -EINVAL;
        return r < 0 ? r : 1;
}

static int file_error(struct kiln_error **err, const char *path, int r)
{
        if (r == -EINVAL)
                return kiln_error_set(err, r, "'%s' is not a regular file", path);
        if (r == -E2BIG)
                return kiln_error_set(err, r, "'%s' exceeds %u bytes", path,
                                      KILN_PASSWD_MAX_FILE_SIZE);
        return kiln_error_set(err, r, "read '%s': %s", path, strerror(-r));
}

int kiln_passwd_resolve(int rootfd, const char *spec, struct kiln_passwd_user *ret,
                        struct kiln_error **err)
{
        struct kiln_buf pb = KILN_BUF_INIT(KILN_PASSWD_MAX_FILE_SIZE);
        struct kiln_buf gb = KILN_BUF_INIT(KILN_PASSWD_MAX_FILE_SIZE);
        int r;

        /* Numeric "uid:gid" never needs the files (and must work without). */
        const char *colon = spec ? strchr(spec, ':') : NULL;
        uint32_t id;
        if (colon && parse_fast_id(spec, (size_t) (colon - spec), &id) &&
            parse_fast_id(colon + 1, strlen(colon + 1), &id))
                return kiln_passwd_resolve_data(spec, NULL, 0, NULL, 0, ret, err);

        /* As BuildKit, a file that cannot be opened or is not a regular file
         * counts as missing; one too large to read is an error, except for
         * the default user, which falls back to root on any error. */
        bool is_default = !spec || !*spec;
        int pr = read_user_file(rootfd, "etc/passwd", &pb);
        int gr = read_user_file(rootfd, "etc/group", &gb);
        if ((pr == -E2BIG || gr == -E2BIG) && is_default) {
                *ret = (struct kiln_passwd_user){ 0 };
                r = 0;
        } else if (pr == -E2BIG)
                r = kiln_error_set(err, pr, "unable to find user %s: '%s' exceeds %u bytes", spec,
                                   PASSWD_PATH, KILN_PASSWD_MAX_FILE_SIZE);
        else if (gr == -E2BIG)
                r = kiln_error_set(err, gr,
                                   "unable to find groups for spec %s: '%s' exceeds %u bytes", spec,
                                   GROUP_PATH, KILN_PASSWD_MAX_FILE_SIZE);
        else
                r = kiln_passwd_resolve_data(spec, pr > 0 ? (pb.data ? pb.data : "") : NULL, pb.len,
                                             gr > 0 ? (gb.data ? gb.data : "") : NULL, gb.len, ret,
                                             err);
        kiln_buf_release(&pb);
        kiln_buf_release(&gb);
        return r;
}

/* The text of path (PASSWD_PATH or GROUP_PATH) below rootfd, read into b
 * for a lookup: 1 read, 0 missing, < 0 an error (set). */
static int read_lookup_file(int rootfd, const char *path, struct kiln_buf *b, struct text *ret,
                            struct kiln_error **err)
{
        int r = read_user_file(rootfd, path + 1, b);
        if (r < 0)
                return file_error(err, path, r);
        *ret = (struct text){ b->data ? b->data : "", b->len, path };
        return r;
}

int kiln_passwd_lookup_user(int rootfd, const char *name, uint32_t *ret_uid, uint32_t *ret_gid,
                            struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_PASSWD_MAX_FILE_SIZE);
        struct text t;
        int r = read_lookup_file(rootfd, PASSWD_PATH, &b, &t, err);
        if (r <= 0)
                goto out;
        int64_t uid = 0, gid = 0;
        r = passwd_find(&t, name, 0, &uid, &gid, NULL, NULL, err);
        if (r > 0) {
                *ret_uid = (uint32_t) uid;
                if (ret_gid)
                        *ret_gid = (uint32_t) gid;
        }
out:
        kiln_buf_release(&b);
        return r;
}

int kiln_passwd_lookup_group(int rootfd, const char *name, uint32_t *ret_gid,
                             struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_PASSWD_MAX_FILE_SIZE);
        struct text t;
        int r = read_lookup_file(rootfd, GROUP_PATH, &b, &t, err);
        if (r <= 0)
                goto out;
        int64_t gid = 0;
        r = group_find(&t, GROUP_BY_NAME, name, 0, &gid, NULL, NULL, err);
        if (r > 0) {
                *ret_gid = (uint32_t) gid;
                r = 1;
        }
out:
        kiln_buf_release(&b);
        return r;
}
