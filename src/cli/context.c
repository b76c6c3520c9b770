/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client's side of a local build context, as BuildKit's fsutil sends
 * one: a walk that applies include/exclude patterns (the .dockerignore
 * among them) the way fsutil's filterFS does, the symbolic link
 * resolution of its FollowPaths, and a tar stream of the files the daemon
 * asks for.
 *
 * Everything is read beneath the context directory's fd: the walk opens
 * each directory with O_NOFOLLOW from its parent's fd, and files are opened
 * with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a symbolic link
 * swapped in during a build never makes kiln send a file from elsewhere.
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/fs.h"
#include "base/pattern.h"
#include "archive-lazy.h"
#include "cli.h"

/* What one read of a file puts into the tar at once. */
#define TAR_CHUNK (64u << 10)
/* Symbolic links one follow path may pass through. */
#define FOLLOW_MAX_DEPTH 40u

static int openat_beneath(int dir_fd, const char *path, int flags)
{
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC | O_NOCTTY),
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dir_fd, path, &how, sizeof(how));

        return fd < 0 ? -errno : (int) fd;
}

/* lstat of path (relative, clean) beneath dir_fd, following no link on
 * the way. */
static int lstat_beneath(int dir_fd, const char *path, struct stat *st)
{
        const char *slash = strrchr(path, '/');
        _cleanup_close_ int parent = -1;

        if (!slash)
                return fstatat(dir_fd, path, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
        {
                _cleanup_free_ char *dir = kiln_xstrndup(path, (size_t) (slash - path));

                parent = openat_beneath(dir_fd, dir, O_PATH | O_DIRECTORY);
        }
        if (parent < 0)
                return parent;
        return fstatat(parent, slash + 1, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* ---- .dockerignore ---- */

static int read_small(int dir_fd, const char *path, char **ret, struct kiln_error **err,
                      const char *what)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_IGNOREFILE_SIZE);
        char why[64];
        int r;

        r = kiln_read_file_at(dir_fd, path, &b);
        if (r == -ENOENT || r == -ENOTDIR) {
                kiln_buf_release(&b);
                return 0;
        }
        if (r < 0) {
                kiln_buf_release(&b);
                return kiln_error_set(err, r, "read %s '%s': %s", what, path,
                                      kiln_read_file_strerror(r, KILN_LIMIT_IGNOREFILE_SIZE, why));
        }
        *ret = kiln_buf_steal(&b);
        return 1;
}

int kiln_cli_context_dockerignore(int dir_fd, const char *name, const char *dockerfile, char **ret,
                                  struct kiln_error **err)
{
        int r;

        *ret = NULL;
        /* BuildKit's dockerui: "<Dockerfile>.dockerignore" next to the
         * Dockerfile wins over the context's own. */
        if (dockerfile && !streq(dockerfile, "-")) {
                _cleanup_free_ char *p = kiln_xasprintf("%s.dockerignore", dockerfile);

                r = read_small(AT_FDCWD, p, ret, err, "ignore file");
                if (r != 0)
                        return r;
        }
        r = read_small(dir_fd, ".dockerignore", ret, err, "ignore file");
        if (r < 0)
                return kiln_error_wrap(err, "context '%s'", name);
        return r;
}

/* ---- follow paths (fsutil's FollowLinks) ---- */

struct strv {
        char **v;
        size_t n;
};

static void strv_add(struct strv *s, const char *p)
{
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->v[i], p))
                        return;
        s->v = kiln_xreallocarray(s->v, s->n + 2, sizeof(char *));
        s->v[s->n++] = kiln_xstrdup(p);
        s->v[s->n] = NULL;
}

static void strv_release(struct strv *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (struct strv){ 0 };
}

static char *path_join(const char *a, const char *b)
{
        _cleanup_free_ char *j = NULL;

        if (!a[0] || streq(a, "."))
                return kiln_pattern_clean(b);
        if (!b[0])
                return kiln_pattern_clean(a);
        j = kiln_xasprintf("%s/%s", a, b);
        return kiln_pattern_clean(j);
}

/* "." style relative form: leading '/' dropped, cleaned. */
static char *path_relative(const char *p)
{
        while (*p == '/')
                p++;
        return kiln_pattern_clean(p);
}

/* The target of the link at path, as a context-relative path; NULL when
 * path is no symbolic link (or does not exist). */
static char *link_target(int dir_fd, const char *path)
{
        struct stat st;
        char buf[PATH_MAX];
        ssize_t n;
        const char *slash;
        _cleanup_free_ char *dir = NULL, *joined = NULL;
        _cleanup_close_ int parent = -1;

        if (startswith(path, "../") || streq(path, ".."))
                return NULL;
        if (lstat_beneath(dir_fd, path, &st) < 0 || !S_ISLNK(st.st_mode))
                return NULL;
        slash = strrchr(path, '/');
        dir = slash ? kiln_xstrndup(path, (size_t) (slash - path)) : kiln_xstrdup(".");
        parent = slash ? openat_beneath(dir_fd, dir, O_PATH | O_DIRECTORY) : -1;
        n = readlinkat(slash ? parent : dir_fd, slash ? slash + 1 : path, buf, sizeof(buf) - 1);
        if (n <= 0)
                return NULL;
        buf[n] = '\0';
        if (buf[0] == '/')
                return path_relative(buf);
        joined = path_join(dir, buf);
        return path_relative(joined);
}

static int follow_append(int dir_fd, const char *path, struct strv *resolved, unsigned depth)
{
        _cleanup_free_ char *p = path_relative(path), *current = kiln_xstrdup(".");

        if (depth > FOLLOW_MAX_DEPTH)
                return 0; /* a loop: what was resolved so far stays */
        for (;;) {
                const char *slash = strchr(p, '/');
                _cleanup_free_ char *part =
                        slash ? kiln_xstrndup(p, (size_t) (slash - p)) : kiln_xstrdup(p);
                _cleanup_free_ char *next = path_join(current, part);
                _cleanup_free_ char *rest = kiln_xstrdup(slash ? slash + 1 : "");
                struct strv targets = { 0 };
                bool is_link = false;

                free(current);
                current = TAKE_PTR(next);

                if (kiln_pattern_has_wildcards(part)) {
                        /* Every match of the wildcard that is a link. */
                        const char *ls = strrchr(current, '/');
                        _cleanup_free_ char *dir =
                                ls ? kiln_xstrndup(current, (size_t) (ls - current))
                                   : kiln_xstrdup(".");
                        int fd = streq(dir, ".")
                                         ? fcntl(dir_fd, F_DUPFD_CLOEXEC, 3)
                                         : openat_beneath(dir_fd, dir, O_RDONLY | O_DIRECTORY);
                        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
                        struct dirent *de;

                        if (!d && fd >= 0)
                                close(fd);
                        while (d && (de = readdir(d))) {
                                bool m = false;
                                _cleanup_free_ char *cand = NULL, *tgt = NULL;

                                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                        continue;
                                if (kiln_pattern_match(part, de->d_name, &m) < 0 || !m)
                                        continue;
                                cand = path_join(dir, de->d_name);
                                tgt = link_target(dir_fd, cand);
                                if (tgt) {
                                        strv_add(&targets, tgt);
                                        is_link = true;
                                }
                        }
                        if (d)
                                closedir(d);
                } else {
                        char *tgt = link_target(dir_fd, current);

                        if (tgt) {
                                strv_add(&targets, tgt);
                                free(tgt);
                                is_link = true;
                        }
                }

                free(p);
                p = TAKE_PTR(rest);
                if (!p[0] || is_link) {
                        for (size_t i = 0; i < resolved->n; i++)
                                if (streq(resolved->v[i], current)) {
                                        strv_release(&targets);
                                        return 0;
                                }
                }
                if (is_link) {
                        strv_add(resolved, current);
                        for (size_t i = 0; i < targets.n; i++) {
                                _cleanup_free_ char *j = path_join(targets.v[i], p);

                                (void) follow_append(dir_fd, j, resolved, depth + 1);
                        }
                        strv_release(&targets);
                        return 0;
                }
                strv_release(&targets);
                if (!p[0]) {
                        strv_add(resolved, current);
                        return 0;
                }
        }
}

static int strcmp_ptr(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* FollowLinks + dedupePaths: sorted, paths below an earlier one dropped;
 * returns false (no filter at all) when the root itself was named. */
static bool follow_links(int dir_fd, const char *const *paths, size_t n, struct strv *out)
{
        struct strv resolved = { 0 };
        const char *last = NULL;

        for (size_t i = 0; i < n; i++)
                (void) follow_append(dir_fd, paths[i], &resolved, 0);
        if (resolved.n > 0)
                qsort(resolved.v, resolved.n, sizeof(char *), strcmp_ptr);
        for (size_t i = 0; i < resolved.n; i++) {
                const char *s = resolved.v[i];

                if (streq(s, ".")) {
                        strv_release(out);
                        strv_release(&resolved);
                        return false;
                }
                if (last && startswith(s, last) && s[strlen(last)] == '/')
                        continue;
                strv_add(out, s);
                last = s;
        }
        strv_release(&resolved);
        return true;
}

/* ---- the walk (fsutil's filterFS.Walk) ---- */

struct walker {
        int root_fd;
        const char *name;
        struct kiln_pattern_matcher *include;
        struct kiln_pattern_matcher *exclude;
        bool only_prefix_includes;
        bool only_prefix_exclude_exceptions;
        struct kiln_api_context_entry *entries;
        size_t n_entries;
        struct kiln_error **err;
};

/* A directory on the way down: listed only when something below is. */
struct parent {
        char *path;
        struct stat st;
        bool listed;
};

/* The pattern without a trailing "/" followed by "**" or "*". */
static char *pattern_prefix(const char *p)
{
        size_t n = strlen(p);

        if (n >= 3 && streq(p + n - 3, "/**"))
                n -= 3;
        else if (n >= 2 && streq(p + n - 2, "/*"))
                n -= 2;
        return kiln_xstrndup(p, n);
}

static bool has_pattern_chars(const char *p)
{
        return strpbrk(p, "*[]?^\\") != NULL;
}

/* Whether some pattern (exceptions or not, as want_exclusion says) could
 * name something below dir: its literal prefix starts with "dir/". */
static bool prefix_below(const struct kiln_pattern_matcher *m, const char *dir, bool want_exclusion)
{
        size_t n = kiln_pattern_matcher_count(m), dl = strlen(dir);

        for (size_t i = 0; i < n; i++) {
                bool excl = false;
                const char *pat = kiln_pattern_matcher_pattern(m, i, &excl);
                _cleanup_free_ char *pre = NULL;

                if (excl != want_exclusion || !pat)
                        continue;
                pre = pattern_prefix(pat);
                if (strncmp(pre, dir, dl) == 0 && pre[dl] == '/')
                        return true;
        }
        return false;
}

static int walker_add(struct walker *w, const char *path, const struct stat *st, int dir_fd,
                      const char *leaf)
{
        struct kiln_api_context_entry *e;

        if (w->n_entries >= KILN_CLI_LIMIT_CONTEXT_ENTRIES)
                return kiln_error_set(w->err, -E2BIG,
                                      "context '%s': more than %u files and directories", w->name,
                                      KILN_CLI_LIMIT_CONTEXT_ENTRIES);
        if (strlen(path) > KILN_API_LIMIT_CONTEXT_PATH)
                return kiln_error_set(w->err, -ENAMETOOLONG,
                                      "context '%s': path '%.64s...' is longer than %u bytes",
                                      w->name, path, KILN_API_LIMIT_CONTEXT_PATH);
        if ((w->n_entries & (w->n_entries - 1)) == 0)
                w->entries = kiln_xreallocarray(w->entries, w->n_entries ? w->n_entries * 2 : 16,
                                                sizeof(*w->entries));
        e = &w->entries[w->n_entries];
        *e = (struct kiln_api_context_entry){
                .path = kiln_xstrdup(path),
                .mode = st->st_mode,
                .size = S_ISREG(st->st_mode) ? (uint64_t) st->st_size : 0,
                .mtime_ns = (int64_t) st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
                .uid = st->st_uid,
                .gid = st->st_gid,
        };
        w->n_entries++;
        if (S_ISLNK(st->st_mode)) {
                char buf[KILN_API_LIMIT_CONTEXT_PATH + 1];
                ssize_t n = readlinkat(dir_fd, leaf, buf, sizeof(buf));

                if (n < 0)
                        return kiln_error_set(w->err, -errno, "context '%s': read link '%s': %s",
                                              w->name, path, strerror(errno));
                if ((size_t) n >= sizeof(buf))
                        return kiln_error_set(w->err, -ENAMETOOLONG,
                                              "context '%s': link '%s' points to a path longer "
                                              "than %u bytes",
                                              w->name, path, KILN_API_LIMIT_CONTEXT_PATH);
                e->link = kiln_xstrndup(buf, (size_t) n);
        }
        return 0;
}

static int walk_dir(struct walker *w, int dir_fd, const char *rel, struct parent *parents,
                    size_t depth)
{
        _cleanup_(kiln_cli_strv_freep) char **names = NULL;
        size_t n_names = 0;
        DIR *d;
        struct dirent *de;
        int fd, r;

        if (depth >= KILN_CLI_LIMIT_CONTEXT_DEPTH)
                return kiln_error_set(w->err, -ELOOP,
                                      "context '%s': '%s' is nested deeper than %u directories",
                                      w->name, rel, KILN_CLI_LIMIT_CONTEXT_DEPTH);
        fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return kiln_error_set(w->err, -errno, "context '%s': %s", w->name, strerror(errno));
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                close(fd);
                return kiln_error_set(w->err, r, "context '%s': open '%s': %s", w->name,
                                      rel[0] ? rel : ".", strerror(-r));
        }
        rewinddir(d);
        errno = 0;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                names = kiln_xreallocarray(names, n_names + 2, sizeof(char *));
                names[n_names++] = kiln_xstrdup(de->d_name);
                names[n_names] = NULL;
                errno = 0;
        }
        r = -errno;
        closedir(d);
        if (r < 0)
                return kiln_error_set(w->err, r, "context '%s': read '%s': %s", w->name,
                                      rel[0] ? rel : ".", strerror(-r));
        if (n_names > 0)
                qsort(names, n_names, sizeof(char *), strcmp_ptr);

        for (size_t i = 0; i < n_names; i++) {
                _cleanup_free_ char *path =
                        rel[0] ? kiln_xasprintf("%s/%s", rel, names[i]) : kiln_xstrdup(names[i]);
                struct stat st;
                bool is_dir, skip = false, m;

                if (fstatat(dir_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue; /* gone since the directory was read */
                        return kiln_error_set(w->err, -errno, "context '%s': stat '%s': %s",
                                              w->name, path, strerror(errno));
                }
                is_dir = S_ISDIR(st.st_mode);

                if (w->include) {
                        r = kiln_pattern_matcher_matches(w->include, path, &m);
                        if (r < 0)
                                return kiln_error_set(w->err, r,
                                                      "context '%s': failed to match "
                                                      "includepatterns",
                                                      w->name);
                        if (!m) {
                                if (is_dir && w->only_prefix_includes &&
                                    !prefix_below(w->include, path, false))
                                        continue;
                                skip = true;
                        }
                }
                if (w->exclude) {
                        r = kiln_pattern_matcher_matches(w->exclude, path, &m);
                        if (r < 0)
                                return kiln_error_set(w->err, r,
                                                      "context '%s': failed to match "
                                                      "excludepatterns",
                                                      w->name);
                        if (m) {
                                if (is_dir && w->only_prefix_exclude_exceptions &&
                                    (!kiln_pattern_matcher_exclusions(w->exclude) ||
                                     !prefix_below(w->exclude, path, true)))
                                        continue;
                                skip = true;
                        }
                }

                if (!skip && (is_dir || S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))) {
                        /* The directories above come first. */
                        for (size_t k = 0; k < depth; k++)
                                if (!parents[k].listed) {
                                        r = walker_add(w, parents[k].path, &parents[k].st, -1,
                                                       NULL);
                                        if (r < 0)
                                                return r;
                                        parents[k].listed = true;
                                }
                        r = walker_add(w, path, &st, dir_fd, names[i]);
                        if (r < 0)
                                return r;
                }
                if (is_dir) {
                        _cleanup_close_ int sub = openat(
                                dir_fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                        if (sub < 0) {
                                /* fsutil: an unreadable directory that is
                                 * filtered out anyway is no error. */
                                if (skip && errno == EACCES)
                                        continue;
                                if (errno == ENOENT)
                                        continue;
                                return kiln_error_set(w->err, -errno, "context '%s': open '%s': %s",
                                                      w->name, path, strerror(errno));
                        }
                        parents[depth] = (struct parent){ .path = path, .st = st, .listed = !skip };
                        r = walk_dir(w, sub, path, parents, depth + 1);
                        parents[depth] = (struct parent){ 0 };
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int entry_cmp(const void *a, const void *b)
{
        return strcmp(((const struct kiln_api_context_entry *) a)->path,
                      ((const struct kiln_api_context_entry *) b)->path);
}

/* Whether any pattern of m that is (or is not) an exception holds pattern
 * characters in its literal part: the walk must then descend everywhere. */
static bool only_prefixes(const struct kiln_pattern_matcher *m, bool exclusion)
{
        size_t n = kiln_pattern_matcher_count(m);

        for (size_t i = 0; i < n; i++) {
                bool excl = false;
                const char *pat = kiln_pattern_matcher_pattern(m, i, &excl);
                _cleanup_free_ char *pre = NULL;

                if (excl != exclusion || !pat)
                        continue;
                pre = pattern_prefix(pat);
                if (has_pattern_chars(pre))
                        return false;
        }
        return true;
}

int kiln_cli_context_walk(int dir_fd, const char *name, const struct kiln_cli_context_filter *f,
                          struct kiln_api_context_entry **ret, size_t *n_ret,
                          struct kiln_error **err)
{
        struct walker w = { .root_fd = dir_fd, .name = name, .err = err };
        struct strv includes = { 0 }, excludes = { 0 };
        struct parent *parents = NULL;
        int r;

        for (size_t i = 0; i < f->n_include; i++)
                strv_add(&includes, f->include[i]);
        if (f->n_follow_paths > 0) {
                struct strv followed = { 0 };

                if (follow_links(dir_fd, f->follow_paths, f->n_follow_paths, &followed))
                        for (size_t i = 0; i < followed.n; i++)
                                strv_add(&includes, followed.v[i]);
                strv_release(&followed);
        }
        /* Order matters for "!" exceptions: the .dockerignore, then the
         * request's own exclusions. Duplicates are harmless. */
        for (size_t i = 0; i < f->n_ignore; i++) {
                excludes.v = kiln_xreallocarray(excludes.v, excludes.n + 2, sizeof(char *));
                excludes.v[excludes.n++] = kiln_xstrdup(f->ignore[i]);
                excludes.v[excludes.n] = NULL;
        }
        for (size_t i = 0; i < f->n_exclude; i++) {
                excludes.v = kiln_xreallocarray(excludes.v, excludes.n + 2, sizeof(char *));
                excludes.v[excludes.n++] = kiln_xstrdup(f->exclude[i]);
                excludes.v[excludes.n] = NULL;
        }

        if (includes.n > 0) {
                r = kiln_pattern_matcher_new((const char *const *) includes.v, includes.n,
                                             &w.include, err);
                if (r < 0) {
                        kiln_error_wrap(err, "context '%s': invalid includepatterns", name);
                        goto out;
                }
                w.only_prefix_includes = only_prefixes(w.include, false);
        }
        if (excludes.n > 0) {
                r = kiln_pattern_matcher_new((const char *const *) excludes.v, excludes.n,
                                             &w.exclude, err);
                if (r < 0) {
                        kiln_error_wrap(err, "context '%s': invalid excludepatterns", name);
                        goto out;
                }
                w.only_prefix_exclude_exceptions = only_prefixes(w.exclude, true);
        }

        parents = kiln_xcalloc(KILN_CLI_LIMIT_CONTEXT_DEPTH + 1, sizeof(*parents));
        r = walk_dir(&w, dir_fd, "", parents, 0);
        if (r < 0)
                goto out;
        if (w.n_entries > 1)
                qsort(w.entries, w.n_entries, sizeof(*w.entries), entry_cmp);
        *ret = TAKE_PTR(w.entries);
        *n_ret = w.n_entries;
        w.n_entries = 0;
        r = 0;
out:
        free(parents);
        if (w.entries)
                kiln_api_context_entries_free(w.entries, w.n_entries);
        kiln_pattern_matcher_free(w.include);
        kiln_pattern_matcher_free(w.exclude);
        strv_release(&includes);
        strv_release(&excludes);
        return r;
}

/* ---- the tar stream ---- */

struct kiln_cli_context_tar {
        int dir_fd;
        const char *name;
        const struct kiln_api_context_entry *entries;
        size_t n_entries;
        const char *const *paths;
        size_t n_paths;
        const volatile int *cancel;

        struct archive *a;
        struct kiln_buf out; /* produced, not yet read */
        size_t out_pos;
        size_t next; /* the next path to start */
        int file_fd; /* the file being written, -1 between files */
        const char *file_path;
        uint64_t remaining;
        bool closed;
        char *chunk;
        uint64_t files;
        uint64_t bytes;
};

static la_ssize_t tar_write_cb(struct archive *a, void *userdata, const void *buf, size_t n)
{
        struct kiln_cli_context_tar *t = userdata;

        (void) a;
        if (kiln_buf_append(&t->out, buf, n) < 0)
                return -1;
        return (la_ssize_t) n;
}

int kiln_cli_context_tar_new(int dir_fd, const char *name,
                             const struct kiln_api_context_entry *entries, size_t n_entries,
                             const char *const *paths, size_t n, const volatile int *cancel,
                             struct kiln_cli_context_tar **ret, struct kiln_error **err)
{
        struct kiln_cli_context_tar *t = kiln_xcalloc(1, sizeof(*t));

        *t = (struct kiln_cli_context_tar){
                .dir_fd = dir_fd,
                .name = name,
                .entries = entries,
                .n_entries = n_entries,
                .paths = paths,
                .n_paths = n,
                .cancel = cancel,
                .file_fd = -1,
                /* a header, one chunk and the trailer fit */
                .out = KILN_BUF_INIT(TAR_CHUNK * 4 + (1u << 20)),
        };
        t->chunk = kiln_xmalloc(TAR_CHUNK);
        t->a = archive_write_new();
        if (!t->a || archive_write_set_format_pax_restricted(t->a) != ARCHIVE_OK ||
            archive_write_add_filter_none(t->a) != ARCHIVE_OK ||
            archive_write_set_bytes_per_block(t->a, 0) != ARCHIVE_OK ||
            archive_write_open2(t->a, t, NULL, tar_write_cb, NULL, NULL) != ARCHIVE_OK) {
                int r = kiln_error_set(err, -ENOMEM, "context '%s': cannot start a tar: %s", name,
                                       t->a ? archive_error_string(t->a) : "out of memory");

                kiln_cli_context_tar_free(t);
                return r;
        }
        *ret = t;
        return 0;
}

static const struct kiln_api_context_entry *tar_find(const struct kiln_cli_context_tar *t,
                                                     const char *path)
{
        size_t lo = 0, hi = t->n_entries;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(t->entries[mid].path, path);

                if (c == 0)
                        return &t->entries[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static int tar_start_file(struct kiln_cli_context_tar *t, struct kiln_error **err)
{
        const char *path = t->paths[t->next++];
        const struct kiln_api_context_entry *e = tar_find(t, path);
        struct archive_entry *ae;
        struct stat st;
        int fd, r;

        if (!e || !S_ISREG(e->mode))
                return kiln_error_set(err, -EINVAL,
                                      "context '%s': the daemon asked for '%s', which is not a "
                                      "file of the list sent",
                                      t->name, path);
        fd = openat_beneath(t->dir_fd, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return kiln_error_set(err, fd, "context '%s': open '%s': %s", t->name, path,
                                      strerror(-fd));
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return kiln_error_set(err, -EINVAL,
                                      "context '%s': '%s' is no longer a regular file", t->name,
                                      path);
        }
        ae = archive_entry_new();
        if (!ae) {
                close(fd);
                return kiln_error_set(err, -ENOMEM, "out of memory");
        }
        archive_entry_set_pathname(ae, path);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, e->mode & 07777);
        archive_entry_set_size(ae, (la_int64_t) e->size);
        archive_entry_set_uid(ae, e->uid);
        archive_entry_set_gid(ae, e->gid);
        archive_entry_set_mtime(ae, (time_t) (e->mtime_ns / 1000000000LL),
                                (long) (e->mtime_ns % 1000000000LL));
        r = archive_write_header(t->a, ae);
        archive_entry_free(ae);
        if (r != ARCHIVE_OK) {
                close(fd);
                return kiln_error_set(err, -EIO, "context '%s': tar header of '%s': %s", t->name,
                                      path, archive_error_string(t->a));
        }
        t->file_fd = fd;
        t->file_path = path;
        t->remaining = e->size;
        t->files++;
        return 0;
}

/* Produces more of the tar into t->out: a header, a chunk or the end. */
static int tar_produce(struct kiln_cli_context_tar *t, struct kiln_error **err)
{
        ssize_t n;
        la_ssize_t w;

        if (t->cancel && *t->cancel)
                return kiln_error_set(err, -ECANCELED, "context '%s': cancelled", t->name);
        if (t->file_fd < 0) {
                if (t->next < t->n_paths)
                        return tar_start_file(t, err);
                if (archive_write_close(t->a) != ARCHIVE_OK)
                        return kiln_error_set(err, -EIO, "context '%s': end the tar: %s", t->name,
                                              archive_error_string(t->a));
                t->closed = true;
                return 0;
        }
        if (t->remaining == 0) {
                close(t->file_fd);
                t->file_fd = -1;
                if (archive_write_finish_entry(t->a) != ARCHIVE_OK)
                        return kiln_error_set(err, -EIO, "context '%s': tar entry '%s': %s",
                                              t->name, t->file_path, archive_error_string(t->a));
                return 0;
        }
        n = read(t->file_fd, t->chunk,
                 t->remaining < TAR_CHUNK ? (size_t) t->remaining : TAR_CHUNK);
        if (n < 0 && errno == EINTR)
                return 0;
        if (n < 0)
                return kiln_error_set(err, -errno, "context '%s': read '%s': %s", t->name,
                                      t->file_path, strerror(errno));
        if (n == 0)
                return kiln_error_set(err, -EIO,
                                      "context '%s': '%s' changed while it was sent (it is "
                                      "shorter than listed)",
                                      t->name, t->file_path);
        w = archive_write_data(t->a, t->chunk, (size_t) n);
        if (w != n)
                return kiln_error_set(err, -EIO, "context '%s': tar data of '%s': %s", t->name,
                                      t->file_path, archive_error_string(t->a));
        t->remaining -= (uint64_t) n;
        t->bytes += (uint64_t) n;
        return 0;
}

ssize_t kiln_cli_context_tar_read(struct kiln_cli_context_tar *t, void *buf, size_t n,
                                  struct kiln_error **err)
{
        while (t->out_pos >= t->out.len) {
                int r;

                kiln_buf_reset(&t->out);
                t->out_pos = 0;
                if (t->closed)
                        return 0;
                r = tar_produce(t, err);
                if (r < 0)
                        return r;
        }
        if (n > t->out.len - t->out_pos)
                n = t->out.len - t->out_pos;
        memcpy(buf, t->out.data + t->out_pos, n);
        t->out_pos += n;
        return (ssize_t) n;
}

void kiln_cli_context_tar_stats(const struct kiln_cli_context_tar *t, uint64_t *files,
                                uint64_t *bytes)
{
        *files = t->files;
        *bytes = t->bytes;
}

struct kiln_cli_context_tar *kiln_cli_context_tar_free(struct kiln_cli_context_tar *t)
{
        if (!t)
                return NULL;
        if (t->a)
                archive_write_free(t->a);
        if (t->file_fd >= 0)
                close(t->file_fd);
        kiln_buf_release(&t->out);
        free(t->chunk);
        free(t);
        return NULL;
}
