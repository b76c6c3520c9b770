/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/macro.h"
#include "kiln-test.h"
#include "snapshot/snapshot.h"
#include "source/git.h"

/* ---- pure helpers (no root needed) ---- */

TEST(git_redact)
{
        struct {
                const char *in, *out;
        } c[] = {
                { "https://user:secret@host.tld/r.git", "https://xxxxx:xxxxx@host.tld/r.git" },
                { "https://token@host.tld/r.git", "https://xxxxx@host.tld/r.git" },
                { "https://:pw@host.tld/r.git", "https://:xxxxx@host.tld/r.git" },
                { "https://host.tld/a@b", "https://host.tld/a@b" },
                { "git@github.com:moby/buildkit.git", "git@github.com:moby/buildkit.git" },
                { "fatal: unable to access 'https://u:p@h/x/': 403",
                  "fatal: unable to access 'https://xxxxx:xxxxx@h/x/': 403" },
        };
        for (size_t i = 0; i < ELEMENTSOF(c); i++) {
                _cleanup_free_ char *r = kiln_source_git_redact(c[i].in);
                ASSERT_STREQ(r, c[i].out);
        }
        return 0;
}

TEST(git_host_and_ssh)
{
        _cleanup_free_ char *h1 = kiln_source_git_host("https://u:p@github.com:8443/a/b.git");
        _cleanup_free_ char *h2 = kiln_source_git_host("git@gitlab.com:a/b.git");
        _cleanup_free_ char *h3 = kiln_source_git_host("nothing");
        ASSERT_STREQ(h1, "github.com:8443");
        ASSERT_STREQ(h2, "gitlab.com");
        ASSERT_TRUE(h3 == NULL);
        ASSERT_TRUE(kiln_source_git_is_ssh("git@github.com:moby/buildkit.git"));
        ASSERT_TRUE(kiln_source_git_is_ssh("ssh://git@github.com/moby/buildkit.git"));
        ASSERT_TRUE(!kiln_source_git_is_ssh("https://github.com/moby/buildkit.git"));
        return 0;
}

TEST(git_bad_options)
{
        struct kiln_source_git_options o = { .remote = "ftp://h/x", .work_dir = "/tmp" };
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        int r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -EPROTONOSUPPORT);
        ASSERT_TRUE(strstr(kiln_error_message(e), "invalid protocol") != NULL);
        kiln_error_free(e);
        e = NULL;
        /* BuildKit refuses file:// remotes: the daemon's files are not a build's */
        o.remote = "file:///etc";
        r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -EPROTONOSUPPORT);
        kiln_error_free(e);
        e = NULL;
        o.remote = "https://h/x.git";
        o.ref = "--upload-pack=touch /tmp/pwned";
        r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(e), "invalid git ref") != NULL);
        kiln_error_free(e);
        e = NULL;
        o.ref = "main";
        o.checksum = "xyz";
        r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -EINVAL);
        ASSERT_STREQ(kiln_error_message(e),
                     "invalid checksum xyz for Git URL, expected hex commit hash");
        kiln_error_free(e);
        e = NULL;
        /* a commit ref is a commit: no remote asked, checksum compared */
        o.ref = "0123456789abcdef0123456789abcdef01234567";
        o.checksum = "0123456";
        ASSERT_OK(kiln_source_git_resolve(&o, &res, &e));
        ASSERT_STREQ(res.commit, o.ref);
        ASSERT_STREQ(res.key, o.ref);
        o.checksum = "fff";
        r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -EBADMSG);
        ASSERT_STREQ(kiln_error_message(e), "expected checksum to match fff, got "
                                            "0123456789abcdef0123456789abcdef01234567");
        kiln_error_free(e);
        e = NULL;
        /* ssh without agent or known hosts: a clear error */
        o.remote = "git@127.0.0.1:x.git";
        o.ref = "main";
        o.checksum = NULL;
        r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -ENOKEY);
        ASSERT_TRUE(strstr(kiln_error_message(e), "ssh agent socket") != NULL);
        kiln_error_free(e);
        e = NULL;
        o.ssh_auth_sock = "/nonexistent/agent.sock";
        r = kiln_source_git_resolve(&o, &res, &e);
        ASSERT_EQ_INT(r, -ENOKEY);
        ASSERT_TRUE(strstr(kiln_error_message(e), "known hosts") != NULL);
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        return 0;
}

/* ---- with a real repository served by git daemon (root) ---- */

struct fx {
        char root[64];
        char repo[128];  /* the work tree committed to */
        char url[128];   /* git://127.0.0.1:<port>/repo */
        char cache[128]; /* <root>/git */
        char work[128];  /* <root>/exec */
        char c1[41], c2[41];
        pid_t daemon;
        struct kiln_snapshot_store *snaps;
};

static int sh(const char *fmt, ...) _printf_(1, 2);
static int sh(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *cmd = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        int st = system(cmd);
        if (st != 0)
                printf("# command failed (%d): %s\n", st, cmd);
        return st == 0 ? 0 : -1;
}

static int read_line(const char *cmd, char *buf, size_t n)
{
        FILE *f = popen(cmd, "r");
        if (!f)
                return -1;
        bool ok = fgets(buf, (int) n, f) != NULL;
        pclose(f);
        if (!ok)
                return -1;
        buf[strcspn(buf, "\n")] = 0;
        return 0;
}

#define GITC                                                                        \
        "env -i PATH=/usr/bin:/bin HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 git -c " \
        "user.name=t -c user.email=t@e -c init.defaultBranch=main -c protocol.file.allow=always"

static int free_port(void)
{
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
        if (s < 0 || bind(s, (struct sockaddr *) &a, sizeof(a)) < 0) {
                if (s >= 0)
                        close(s);
                return -1;
        }
        socklen_t l = sizeof(a);
        getsockname(s, (struct sockaddr *) &a, &l);
        close(s);
        return ntohs(a.sin_port);
}

static int wait_port(int port)
{
        for (int i = 0; i < 100; i++) {
                int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in a = { .sin_family = AF_INET,
                                         .sin_port = htons((uint16_t) port),
                                         .sin_addr.s_addr = htonl(0x7f000001) };
                int r = connect(s, (struct sockaddr *) &a, sizeof(a));
                close(s);
                if (r == 0)
                        return 0;
                usleep(50000);
        }
        return -1;
}

static void fx_free(struct fx *f)
{
        if (f->daemon > 0) {
                kill(f->daemon, SIGTERM);
                waitpid(f->daemon, NULL, 0);
        }
        kiln_snapshot_store_free(f->snaps);
        if (f->root[0]) {
                struct kiln_error *e = NULL;
                (void) kiln_rm_rf_at(AT_FDCWD, f->root, NULL, &e);
                kiln_error_free(e);
        }
}

static int fx_init(struct fx *f)
{
        static bool ns;
        memset(f, 0, sizeof(*f));
        if (geteuid() != 0) {
                printf("# git source tests need root (snapshot mounts)\n");
                return KILN_TEST_SKIP;
        }
        if (access("/usr/bin/git", X_OK) < 0 || access("/usr/lib/git-core/git-daemon", X_OK) < 0) {
                printf("# git or git-daemon not installed\n");
                return KILN_TEST_SKIP;
        }
        if (!ns) {
                if (unshare(CLONE_NEWNS) < 0 ||
                    mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
                        printf("# cannot make a private mount namespace: %s\n", strerror(errno));
                        return KILN_TEST_SKIP;
                }
                ns = true;
        }
        snprintf(f->root, sizeof(f->root), "/var/tmp/kiln-test-git-XXXXXX");
        if (!mkdtemp(f->root))
                return -1;
        snprintf(f->repo, sizeof(f->repo), "%s/srv/repo", f->root);
        snprintf(f->cache, sizeof(f->cache), "%s/git", f->root);
        snprintf(f->work, sizeof(f->work), "%s/exec", f->root);
        const char *R = f->repo;
        if (sh("mkdir -p %s/sub/deeper && cd %s && " GITC " init -q . && "
               "printf one > a.txt && printf bee > sub/b.txt && printf sea > sub/deeper/c && "
               "ln -s a.txt link && " GITC " add -A && " GITC " commit -qm one && " GITC
               " tag -a v1 -m v1 && " GITC " tag light && " GITC " branch other && "
               "printf two > a.txt && " GITC " commit -qam two",
               R, R) < 0)
                return -1;
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "cd %s && git rev-parse HEAD~1", R);
        if (read_line(cmd, f->c1, sizeof(f->c1)) < 0)
                return -1;
        snprintf(cmd, sizeof(cmd), "cd %s && git rev-parse HEAD", R);
        if (read_line(cmd, f->c2, sizeof(f->c2)) < 0)
                return -1;
        int port = free_port();
        if (port < 0)
                return -1;
        snprintf(f->url, sizeof(f->url), "git://127.0.0.1:%d/repo", port);
        _cleanup_free_ char *base = kiln_xasprintf("--base-path=%s/srv", f->root);
        _cleanup_free_ char *portarg = kiln_xasprintf("--port=%d", port);
        f->daemon = fork();
        if (f->daemon == 0) {
                int devnull = open("/dev/null", O_RDWR);
                dup2(devnull, 0);
                dup2(devnull, 1);
                dup2(devnull, 2);
                execl("/usr/bin/git", "git", "daemon", "--reuseaddr", base, "--export-all",
                      "--listen=127.0.0.1", portarg, (char *) NULL);
                _exit(127);
        }
        if (f->daemon < 0 || wait_port(port) < 0)
                return -1;
        struct kiln_error *e = NULL;
        _cleanup_free_ char *sd = kiln_xasprintf("%s/snapshots", f->root);
        if (kiln_snapshot_store_open(sd, KILN_SNAPSHOT_DRIVER_AUTO, &f->snaps, &e) < 0) {
                printf("# %s\n", kiln_error_message(e));
                kiln_error_free(e);
                return -1;
        }
        return 0;
}

static struct kiln_source_git_options fx_opts(struct fx *f, const char *ref)
{
        return (struct kiln_source_git_options){
                .remote = f->url,
                .ref = ref,
                .cache_dir = f->cache,
                .work_dir = f->work,
        };
}

/* Resolves and checks out; *ret_id holds a use. */
static int fetch(struct fx *f, const struct kiln_source_git_options *o,
                 struct kiln_source_git_resolved *res, char **ret_id, struct kiln_error **e)
{
        int r = kiln_source_git_resolve(o, res, e);
        if (r < 0)
                return r;
        return kiln_source_git_snapshot(f->snaps, o, res, ret_id, e);
}

/* The content of path in snapshot id ("" when missing), via a view. */
static char *snap_read(struct fx *f, const char *id, const char *path)
{
        _cleanup_free_ char *mp = kiln_xasprintf("%s/view", f->root);
        (void) mkdir(mp, 0700);
        struct kiln_error *e = NULL;
        if (kiln_snapshot_mount_view(f->snaps, id, mp, &e) < 0) {
                kiln_error_free(e);
                return kiln_xstrdup("(mount failed)");
        }
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", mp, path);
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        char *out;
        if (kiln_read_file_at(AT_FDCWD, p, &b) < 0) {
                struct stat st;
                out = kiln_xstrdup(lstat(p, &st) == 0 ? "(exists)" : "");
                kiln_buf_release(&b);
        } else
                out = kiln_buf_steal(&b);
        (void) kiln_snapshot_unmount(mp, &e);
        kiln_error_free(e);
        return out;
}

static bool snap_exists(struct fx *f, const char *id, const char *path)
{
        _cleanup_free_ char *s = snap_read(f, id, path);
        return *s != 0;
}

#define FX_START(f)                   \
        struct fx f;                  \
        do {                          \
                int _r = fx_init(&f); \
                if (_r != 0) {        \
                        fx_free(&f);  \
                        return _r;    \
                }                     \
        } while (0)

#define CHECK(x)                                                                 \
        do {                                                                     \
                if (!(x)) {                                                      \
                        printf("# %s:%d: failed: %s\n", __FILE__, __LINE__, #x); \
                        goto fail;                                               \
                }                                                                \
        } while (0)

#define CHECK_OK(r, e)                                                        \
        do {                                                                  \
                if ((r) < 0) {                                                \
                        printf("# %s:%d: %s\n", __FILE__, __LINE__,           \
                               (e) ? kiln_error_message(e) : strerror(-(r))); \
                        goto fail;                                            \
                }                                                             \
        } while (0)

TEST(git_resolve_refs)
{
        FX_START(f);
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        int rc = -1;
        struct kiln_source_git_options o = fx_opts(&f, "main");
        int r = kiln_source_git_resolve(&o, &res, &e);
        CHECK_OK(r, e);
        CHECK(streq(res.commit, f.c2));
        CHECK(streq(res.ref, "refs/heads/main"));
        CHECK(streq(res.key, f.c2));
        /* the default branch */
        o.ref = NULL;
        r = kiln_source_git_resolve(&o, &res, &e);
        CHECK_OK(r, e);
        CHECK(streq(res.commit, f.c2));
        /* an annotated tag: peeled to its commit */
        o.ref = "v1";
        r = kiln_source_git_resolve(&o, &res, &e);
        CHECK_OK(r, e);
        CHECK(streq(res.commit, f.c1));
        CHECK(streq(res.ref, "refs/tags/v1"));
        CHECK(streq(res.key, f.c1));
        /* keep_git_dir and subdir make other keys */
        o.keep_git_dir = true;
        o.subdir = "/sub/";
        r = kiln_source_git_resolve(&o, &res, &e);
        CHECK_OK(r, e);
        CHECK(strstr(res.key, ".git#refs/tags/v1:sub") != NULL);
        o.keep_git_dir = false;
        o.subdir = NULL;
        o.ref = "nosuchref";
        r = kiln_source_git_resolve(&o, &res, &e);
        CHECK(r == -ENOENT);
        CHECK(streq(kiln_error_message(e),
                    "repository does not contain ref nosuchref, output: \"\""));
        rc = 0;
fail:
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        fx_free(&f);
        return rc;
}

TEST(git_checkout_branch_tag_commit)
{
        FX_START(f);
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        char *id = NULL;
        int rc = -1;
        const char *refs[] = { "main", "v1", "light", f.c1, "other" };
        const char *want[] = { "two", "one", "one", "one", "one" };
        for (size_t i = 0; i < ELEMENTSOF(refs); i++) {
                struct kiln_source_git_options o = fx_opts(&f, refs[i]);
                int r = fetch(&f, &o, &res, &id, &e);
                CHECK_OK(r, e);
                _cleanup_free_ char *a = snap_read(&f, id, "a.txt");
                _cleanup_free_ char *c = snap_read(&f, id, "sub/deeper/c");
                if (!streq(a, want[i]))
                        printf("# ref %s: a.txt \"%s\"\n", refs[i], a);
                CHECK(streq(a, want[i]));
                CHECK(streq(c, "sea"));
                CHECK(!snap_exists(&f, id, ".git"));
                kiln_snapshot_release(f.snaps, id);
                free(id);
                id = NULL;
        }
        /* the symlink is a symlink */
        {
                struct kiln_source_git_options o = fx_opts(&f, "main");
                CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
                _cleanup_free_ char *mp = kiln_xasprintf("%s/view", f.root);
                (void) mkdir(mp, 0700);
                CHECK_OK(kiln_snapshot_mount_view(f.snaps, id, mp, &e), e);
                _cleanup_free_ char *l = kiln_xasprintf("%s/link", mp);
                char t[64] = { 0 };
                ssize_t n = readlink(l, t, sizeof(t) - 1);
                struct stat st;
                _cleanup_free_ char *a = kiln_xasprintf("%s/a.txt", mp);
                int sr = stat(a, &st);
                (void) kiln_snapshot_unmount(mp, &e);
                CHECK(n == 5 && streq(t, "a.txt"));
                CHECK(sr == 0 && (st.st_mode & 0777) == 0644);
        }
        rc = 0;
fail:
        if (id)
                kiln_snapshot_release(f.snaps, id);
        free(id);
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        fx_free(&f);
        return rc;
}

TEST(git_subdir_and_keep_git_dir)
{
        FX_START(f);
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        char *id = NULL;
        int rc = -1;
        struct kiln_source_git_options o = fx_opts(&f, "main");
        o.subdir = "sub";
        CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
        {
                _cleanup_free_ char *b = snap_read(&f, id, "b.txt");
                _cleanup_free_ char *c = snap_read(&f, id, "deeper/c");
                CHECK(streq(b, "bee"));
                CHECK(streq(c, "sea"));
                CHECK(!snap_exists(&f, id, "a.txt"));
        }
        kiln_snapshot_release(f.snaps, id);
        free(id);
        id = NULL;
        /* a subdir through a file fails, naming it */
        o.subdir = "a.txt";
        int r = fetch(&f, &o, &res, &id, &e);
        CHECK(r == -ENOTDIR);
        CHECK(strstr(kiln_error_message(e), "contains non-directory \"a.txt\"") != NULL);
        o.subdir = "link";
        r = fetch(&f, &o, &res, &id, &e);
        CHECK(r == -ENOTDIR);
        o.subdir = "nothere";
        r = fetch(&f, &o, &res, &id, &e);
        CHECK(r == -ENOENT);
        CHECK(strstr(kiln_error_message(e), "invalid subdir nothere") != NULL);
        /* a cancelled checkout fails at once */
        {
                atomic_bool cancel = true;
                struct kiln_source_git_options oc = o;
                oc.subdir = NULL;
                oc.cancel = &cancel;
                r = kiln_source_git_snapshot(f.snaps, &oc, &res, &id, &e);
                CHECK(r == -ECANCELED);
        }
        /* failures leave no snapshot, mount or temporary directory */
        {
                char **ids = NULL;
                size_t nids = 0;
                CHECK_OK(kiln_snapshot_list(f.snaps, &ids, &nids), NULL);
                for (size_t i = 0; i < nids; i++)
                        free(ids[i]);
                free(ids);
                CHECK(nids == 1);
                DIR *d = opendir(f.work);
                int entries = 0;
                struct dirent *de;
                while (d && (de = readdir(d)))
                        if (de->d_name[0] != '.')
                                entries++;
                if (d)
                        closedir(d);
                CHECK(entries == 0);
                FILE *mi = fopen("/proc/self/mountinfo", "re");
                char line[4096];
                bool mounted = false;
                while (mi && fgets(line, sizeof(line), mi))
                        if (strstr(line, f.root))
                                mounted = true;
                if (mi)
                        fclose(mi);
                CHECK(!mounted);
        }
        /* keep_git_dir: a real repository at the commit, origin redacted */
        o.subdir = NULL;
        o.keep_git_dir = true;
        o.ref = "v1";
        CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
        {
                _cleanup_free_ char *a = snap_read(&f, id, "a.txt");
                CHECK(streq(a, "one"));
                CHECK(snap_exists(&f, id, ".git/HEAD"));
                CHECK(!snap_exists(&f, id, ".git/FETCH_HEAD"));
                _cleanup_free_ char *mp = kiln_xasprintf("%s/view", f.root);
                CHECK_OK(kiln_snapshot_mount_view(f.snaps, id, mp, &e), e);
                char head[64] = { 0 }, tag[64] = { 0 }, url[256] = { 0 };
                _cleanup_free_ char *c1 = kiln_xasprintf(
                        "git --git-dir=%s/.git -c safe.directory='*' rev-parse HEAD", mp);
                _cleanup_free_ char *c2 = kiln_xasprintf(
                        "git --git-dir=%s/.git -c safe.directory='*' rev-parse v1^{commit}", mp);
                _cleanup_free_ char *c3 = kiln_xasprintf(
                        "git --git-dir=%s/.git -c safe.directory='*' remote get-url origin", mp);
                int r1 = read_line(c1, head, sizeof(head));
                int r2 = read_line(c2, tag, sizeof(tag));
                int r3 = read_line(c3, url, sizeof(url));
                (void) kiln_snapshot_unmount(mp, &e);
                CHECK(r1 == 0 && streq(head, f.c1));
                CHECK(r2 == 0 && streq(tag, f.c1));
                CHECK(r3 == 0 && streq(url, f.url));
        }
        rc = 0;
fail:
        if (id)
                kiln_snapshot_release(f.snaps, id);
        free(id);
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        fx_free(&f);
        return rc;
}

TEST(git_checksum_and_key_changes)
{
        FX_START(f);
        struct kiln_source_git_resolved res = { 0 }, res2 = { 0 };
        struct kiln_error *e = NULL;
        char *id = NULL;
        int rc = -1;
        struct kiln_source_git_options o = fx_opts(&f, "main");
        o.checksum = "deadbeef";
        int r = kiln_source_git_resolve(&o, &res, &e);
        CHECK(r == -EBADMSG);
        {
                _cleanup_free_ char *want =
                        kiln_xasprintf("expected checksum to match deadbeef, got %s", f.c2);
                CHECK(streq(kiln_error_message(e), want));
        }
        /* a matching prefix is fine */
        char pfx[9];
        snprintf(pfx, sizeof(pfx), "%.8s", f.c2);
        o.checksum = pfx;
        CHECK_OK(kiln_source_git_resolve(&o, &res, &e), e);
        o.checksum = NULL;
        /* the key follows the commit: equal while the branch stays, new
         * after a commit */
        CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
        CHECK_OK(kiln_source_git_resolve(&o, &res2, &e), e);
        CHECK(streq(res.key, res2.key));
        CHECK(sh("cd %s && printf three > a.txt && " GITC " commit -qam three", f.repo) == 0);
        CHECK_OK(kiln_source_git_resolve(&o, &res2, &e), e);
        CHECK(!streq(res.key, res2.key));
        kiln_snapshot_release(f.snaps, id);
        free(id);
        id = NULL;
        /* the cache repository fetches the new commit */
        CHECK_OK(kiln_source_git_snapshot(f.snaps, &o, &res2, &id, &e), e);
        {
                _cleanup_free_ char *a = snap_read(&f, id, "a.txt");
                CHECK(streq(a, "three"));
        }
        kiln_snapshot_release(f.snaps, id);
        free(id);
        id = NULL;
        /* and can still check out the old commit the first key names */
        CHECK_OK(kiln_source_git_snapshot(f.snaps, &o, &res, &id, &e), e);
        {
                _cleanup_free_ char *a = snap_read(&f, id, "a.txt");
                CHECK(streq(a, "two"));
        }
        kiln_snapshot_release(f.snaps, id);
        free(id);
        id = NULL;
        /* a commit that no ref points at any more, into a new cache */
        {
                _cleanup_free_ char *cache2 = kiln_xasprintf("%s/git2", f.root);
                struct kiln_source_git_options oc = fx_opts(&f, f.c2);
                oc.cache_dir = cache2;
                CHECK_OK(fetch(&f, &oc, &res, &id, &e), e);
                _cleanup_free_ char *a = snap_read(&f, id, "a.txt");
                CHECK(streq(a, "two"));
        }
        rc = 0;
fail:
        if (id)
                kiln_snapshot_release(f.snaps, id);
        free(id);
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        kiln_source_git_resolved_release(&res2);
        fx_free(&f);
        return rc;
}

TEST(git_file_url)
{
        FX_START(f);
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        char *id = NULL;
        int rc = -1;
        _cleanup_free_ char *url = kiln_xasprintf("file://%s", f.repo);
        struct kiln_source_git_options o = fx_opts(&f, "other");
        o.remote = url;
        int r = kiln_source_git_resolve(&o, &res, &e);
        CHECK(r == -EPROTONOSUPPORT);
        o.allow_file = true;
        CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
        {
                _cleanup_free_ char *a = snap_read(&f, id, "a.txt");
                CHECK(streq(a, "one"));
        }
        rc = 0;
fail:
        if (id)
                kiln_snapshot_release(f.snaps, id);
        free(id);
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        fx_free(&f);
        return rc;
}

TEST(git_submodules)
{
        FX_START(f);
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        char *id = NULL;
        int rc = -1;
        /* a second repository served next to the first, added as a
         * submodule by its git:// URL */
        _cleanup_free_ char *subrepo = kiln_xasprintf("%s/srv/subrepo", f.root);
        _cleanup_free_ char *suburl = kiln_xstrdup(f.url);
        size_t ul = strlen(suburl);
        _cleanup_free_ char *surl = kiln_xasprintf("%.*ssubrepo", (int) (ul - 4), suburl);
        CHECK(sh("mkdir -p %s && cd %s && " GITC " init -q . && printf inner > in.txt && " GITC
                 " add -A && " GITC " commit -qm s",
                 subrepo, subrepo) == 0);
        CHECK(sh("cd %s && " GITC " submodule -q add %s mod && " GITC " commit -qm sub", f.repo,
                 surl) == 0);
        struct kiln_source_git_options o = fx_opts(&f, "main");
        CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
        {
                _cleanup_free_ char *in = snap_read(&f, id, "mod/in.txt");
                CHECK(streq(in, "inner"));
                /* no gitdir link into the daemon's cache */
                CHECK(!snap_exists(&f, id, "mod/.git"));
        }
        kiln_snapshot_release(f.snaps, id);
        free(id);
        id = NULL;
        o.skip_submodules = true;
        CHECK_OK(fetch(&f, &o, &res, &id, &e), e);
        CHECK(strstr(res.key, "(skip-submodules)") != NULL);
        CHECK(!snap_exists(&f, id, "mod/in.txt"));
        rc = 0;
fail:
        if (id)
                kiln_snapshot_release(f.snaps, id);
        free(id);
        kiln_error_free(e);
        kiln_source_git_resolved_release(&res);
        fx_free(&f);
        return rc;
}

/* ---- failures ---- */

static int count_children(void)
{
        int n = 0;
        DIR *d = opendir("/proc");
        if (!d)
                return -1;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                char p[300], buf[512];
                snprintf(p, sizeof(p), "/proc/%s/stat", de->d_name);
                FILE *f = fopen(p, "re");
                if (!f)
                        continue;
                size_t l = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[l] = 0;
                char *rp = strrchr(buf, ')');
                char st;
                int ppid, pgid;
                if (rp && sscanf(rp + 2, "%c %d %d", &st, &ppid, &pgid) == 3) {
                        /* our children, and anything left in their groups */
                        if (ppid == getpid() && st != 'Z')
                                n++;
                        else if (strstr(buf, "(git") && st != 'Z' && ppid == 1)
                                n++;
                }
        }
        closedir(d);
        return n;
}

struct hang {
        int fd;
        atomic_bool stop;
        atomic_int accepted;
        char request[4096];
};

/* Accepts connections and answers nothing (reads what comes). */
static void *hang_main(void *p)
{
        struct hang *h = p;
        int conns[16];
        int n = 0;
        while (!atomic_load(&h->stop)) {
                struct pollfd pfd = { .fd = h->fd, .events = POLLIN };
                if (poll(&pfd, 1, 50) <= 0)
                        continue;
                int c = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                if (n < 16)
                        conns[n++] = c;
                else
                        close(c);
                usleep(100000);
                ssize_t l = recv(c, h->request, sizeof(h->request) - 1, MSG_DONTWAIT);
                if (l > 0)
                        h->request[l] = 0;
                atomic_fetch_add(&h->accepted, 1);
        }
        for (int i = 0; i < n; i++)
                close(conns[i]);
        return NULL;
}

static int hang_start(struct hang *h, pthread_t *t)
{
        memset(h, 0, sizeof(*h));
        h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
        if (h->fd < 0 || bind(h->fd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
            listen(h->fd, 16) < 0)
                return -1;
        socklen_t l = sizeof(a);
        getsockname(h->fd, (struct sockaddr *) &a, &l);
        if (pthread_create(t, NULL, hang_main, h) != 0)
                return -1;
        return ntohs(a.sin_port);
}

static void hang_stop(struct hang *h, pthread_t t)
{
        atomic_store(&h->stop, true);
        pthread_join(t, NULL);
        close(h->fd);
}

struct canceller {
        atomic_bool *flag;
        int ms;
};

static void *cancel_main(void *p)
{
        struct canceller *c = p;
        usleep((useconds_t) c->ms * 1000);
        atomic_store(c->flag, true);
        return NULL;
}

TEST(git_cancel_kills_git)
{
        if (geteuid() != 0) {
                printf("# needs root (like the others)\n");
                return KILN_TEST_SKIP;
        }
        struct hang h;
        pthread_t t, ct;
        int port = hang_start(&h, &t);
        ASSERT_TRUE(port > 0);
        char root[] = "/var/tmp/kiln-test-git-XXXXXX";
        ASSERT_TRUE(mkdtemp(root) != NULL);
        _cleanup_free_ char *url = kiln_xasprintf("git://127.0.0.1:%d/x", port);
        atomic_bool cancel = false;
        struct kiln_source_git_options o = {
                .remote = url, .ref = "main", .work_dir = root, .cancel = &cancel
        };
        struct canceller c = { &cancel, 500 };
        pthread_create(&ct, NULL, cancel_main, &c);
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        int before = count_children();
        int r = kiln_source_git_resolve(&o, &res, &e);
        pthread_join(ct, NULL);
        int after = count_children();
        int accepted = atomic_load(&h.accepted);
        /* a timeout ends a hung git too */
        atomic_store(&cancel, false);
        o.timeout_sec = 1;
        struct kiln_error *e2 = NULL;
        int r2 = kiln_source_git_resolve(&o, &res, &e2);
        hang_stop(&h, t);
        struct kiln_error *re = NULL;
        (void) kiln_rm_rf_at(AT_FDCWD, root, NULL, &re);
        kiln_error_free(re);
        DIR *d = opendir(root);
        bool left = d != NULL;
        if (d)
                closedir(d);
        const char *m = kiln_error_message(e);
        bool named = m && strstr(m, "canceled") != NULL;
        const char *m2 = kiln_error_message(e2);
        bool timed = m2 && strstr(m2, "timed out") != NULL;
        kiln_error_free(e);
        kiln_error_free(e2);
        ASSERT_EQ_INT(r, -ECANCELED);
        ASSERT_TRUE(named);
        ASSERT_TRUE(accepted >= 1); /* git was really running */
        ASSERT_EQ_INT(after, before);
        ASSERT_EQ_INT(r2, -ETIMEDOUT);
        ASSERT_TRUE(timed);
        ASSERT_TRUE(!left);
        return 0;
}

TEST(git_bad_remote_and_auth)
{
        if (geteuid() != 0) {
                printf("# needs root (like the others)\n");
                return KILN_TEST_SKIP;
        }
        char root[] = "/var/tmp/kiln-test-git-XXXXXX";
        ASSERT_TRUE(mkdtemp(root) != NULL);
        /* nothing listens there */
        int port = free_port();
        _cleanup_free_ char *url =
                kiln_xasprintf("http://user:s3cr3tpw@127.0.0.1:%d/nope.git", port);
        struct kiln_source_git_options o = { .remote = url, .ref = "main", .work_dir = root };
        struct kiln_source_git_resolved res = { 0 };
        struct kiln_error *e = NULL;
        int r = kiln_source_git_resolve(&o, &res, &e);
        _cleanup_free_ char *msg = kiln_xstrdup(kiln_error_message(e) ? kiln_error_message(e) : "");
        kiln_error_free(e);
        e = NULL;
        /* a server that records the request: the token goes as a header,
         * never into the error */
        struct hang h;
        pthread_t t;
        int hport = hang_start(&h, &t);
        _cleanup_free_ char *url2 = kiln_xasprintf("http://127.0.0.1:%d/r.git", hport);
        static const char token[] = "tok3n-value";
        struct kiln_source_git_options o2 = { .remote = url2,
                                              .ref = "main",
                                              .work_dir = root,
                                              .auth_token = token,
                                              .auth_token_len = sizeof(token) - 1,
                                              .timeout_sec = 2 };
        int r2 = kiln_source_git_resolve(&o2, &res, &e);
        hang_stop(&h, t);
        _cleanup_free_ char *msg2 =
                kiln_xstrdup(kiln_error_message(e) ? kiln_error_message(e) : "");
        kiln_error_free(e);
        /* ssh runs (as GIT_SSH_COMMAND) with the given known hosts */
        _cleanup_free_ char *url3 = kiln_xasprintf("ssh://git@127.0.0.1:%d/x.git", port);
        struct kiln_source_git_options o3 = {
                .remote = url3,
                .ref = "main",
                .work_dir = root,
                .ssh_auth_sock = "/nonexistent/agent.sock",
                .known_ssh_hosts =
                        "[127.0.0.1]:1 ssh-ed25519 "
                        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
        };
        e = NULL;
        int r3 = kiln_source_git_resolve(&o3, &res, &e);
        _cleanup_free_ char *msg3 =
                kiln_xstrdup(kiln_error_message(e) ? kiln_error_message(e) : "");
        kiln_error_free(e);
        struct kiln_error *re = NULL;
        (void) kiln_rm_rf_at(AT_FDCWD, root, NULL, &re);
        kiln_error_free(re);
        printf("# %s\n# %s\n", msg, msg3);
        ASSERT_TRUE(r3 < 0);
        ASSERT_TRUE(strstr(msg3, "Connection refused") != NULL);
        ASSERT_TRUE(r < 0);
        ASSERT_TRUE(strstr(msg, "failed to fetch remote http://xxxxx:xxxxx@127.0.0.1:") != NULL);
        ASSERT_TRUE(strstr(msg, "s3cr3tpw") == NULL);
        ASSERT_TRUE(r2 < 0);
        /* base64("x-access-token:tok3n-value") */
        ASSERT_TRUE(strstr(h.request,
                           "Authorization: basic eC1hY2Nlc3MtdG9rZW46dG9rM24tdmFsdWU=") != NULL);
        ASSERT_TRUE(strstr(msg2, "tok3n") == NULL);
        ASSERT_TRUE(strstr(msg2, "eC1hY2Nlc3MtdG9rZW46") == NULL);
        return 0;
}
