/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "base/buf.h"
#include "base/fs.h"
#include "kiln-test.h"
#include "snapshot/snapshot.h"

/* Every test runs as root in a private mount namespace (/ made rslave), so
 * a failing test never leaves a mount on the host. */
static int setup(void)
{
        static bool done;

        if (geteuid() != 0) {
                printf("# snapshot tests need root (mounts)\n");
                return KILN_TEST_SKIP;
        }
        if (!done) {
                if (unshare(CLONE_NEWNS) < 0 ||
                    mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
                        printf("# cannot make a private mount namespace: %s\n", strerror(errno));
                        return KILN_TEST_SKIP;
                }
                done = true;
        }
        return 0;
}

static char *tmpdir(void)
{
        char *d = kiln_xstrdup("/var/tmp/kiln-test-snapshot-XXXXXX");

        return mkdtemp(d) ? d : NULL;
}

/* Whether any line of /proc/self/mountinfo holds s. */
static bool mountinfo_has(const char *s)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64u << 20);

        if (kiln_read_file_at(AT_FDCWD, "/proc/self/mountinfo", &b) < 0)
                return true;
        return strstr(b.data, s) != NULL;
}

/* Cleans a test directory: detaches what is mounted below it (newest
 * first), removes it. */
static void cleanup_dir(char **dirp)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64u << 20);
        char *dir = *dirp, *line, *save = NULL, *points[256];
        size_t n = 0;

        if (!dir)
                return;
        if (kiln_read_file_at(AT_FDCWD, "/proc/self/mountinfo", &b) >= 0)
                for (line = strtok_r(b.data, "\n", &save); line && n < ELEMENTSOF(points);
                     line = strtok_r(NULL, "\n", &save)) {
                        char *f = line, *end;

                        for (int i = 0; i < 4 && f; i++) {
                                f = strchr(f, ' ');
                                f = f ? f + 1 : NULL;
                        }
                        if (!f || !(end = strchr(f, ' ')))
                                continue;
                        *end = '\0';
                        if (startswith(f, dir))
                                points[n++] = f;
                }
        while (n > 0)
                (void) umount2(points[--n], MNT_DETACH);
        (void) kiln_rm_rf_at(AT_FDCWD, dir, NULL, NULL);
        free(dir);
}

#define _cleanup_dir_ _cleanup_(cleanup_dir)

static char *mkdir_in(const char *dir, const char *name)
{
        char *p = kiln_xasprintf("%s/%s", dir, name);

        if (mkdir(p, 0755) < 0) {
                free(p);
                return NULL;
        }
        return p;
}

static int write_at(const char *dir, const char *name, const char *data)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);

        return kiln_write_file_atomic(p, data, strlen(data), 0644);
}

static bool file_is(const char *dir, const char *name, const char *data)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);

        return kiln_read_file_at(AT_FDCWD, p, &b) >= 0 && streq(b.data, data);
}

static bool exists_at(const char *dir, const char *name)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);
        struct stat st;

        return lstat(p, &st) == 0;
}

static int open_store(const char *root, enum kiln_snapshot_driver d,
                      struct kiln_snapshot_store **ret)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *dir = kiln_xasprintf("%s/snapshots", root);
        int r = kiln_snapshot_store_open(dir, d, ret, &e);

        if (r < 0)
                printf("# %s\n", kiln_error_message(e));
        return r;
}

/* Prepares on parent, writes through fn at a mount, commits as name. */
static int layer(struct kiln_snapshot_store *s, const char *parent, const char *mnt,
                 int (*fn)(const char *root, void *ud), void *ud, const char *name, char **ret_id)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_snapshot_abortp) struct kiln_snapshot *snap = NULL;
        int r;

        r = kiln_snapshot_prepare(s, parent, &snap, &e);
        if (r >= 0)
                r = kiln_snapshot_mount(snap, mnt, &e);
        if (r < 0) {
                printf("# %s\n", kiln_error_message(e));
                return r;
        }
        r = fn ? fn(mnt, ud) : 0;
        if (kiln_snapshot_unmount(mnt, &e) < 0) {
                printf("# %s\n", kiln_error_message(e));
                return -EIO;
        }
        if (r < 0)
                return r;
        r = kiln_snapshot_commit(TAKE_PTR(snap), name, ret_id, &e);
        if (r < 0)
                printf("# %s\n", kiln_error_message(e));
        return r;
}

static int write_base(const char *root, void *ud)
{
        _cleanup_free_ char *d = mkdir_in(root, "d");

        if (!d)
                return -errno;
        if (write_at(root, "a", "from base") < 0 || write_at(d, "x", "x in d") < 0 ||
            write_at(root, "keep", "kept") < 0)
                return -EIO;
        return 0;
}

static int write_child(const char *root, void *ud)
{
        _cleanup_free_ char *a = kiln_xasprintf("%s/a", root);

        /* The parent's files are there, and can be hidden. */
        if (!file_is(root, "a", "from base") || !file_is(root, "d/x", "x in d"))
                return -ENOENT;
        if (unlink(a) < 0)
                return -errno;
        if (write_at(root, "b", "from child") < 0 || write_at(root, "keep", "changed") < 0)
                return -EIO;
        return 0;
}

static int flow(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_free_ char *m = NULL, *v = NULL, *v1 = NULL, *id1 = NULL, *id2 = NULL;
        _cleanup_free_ char *found = NULL, *upper = NULL, *wh = NULL, *probe = NULL;
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_snapshot_info info = { 0 };
        uint64_t bytes = 0;
        struct stat st;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        v = mkdir_in(root, "v");
        v1 = mkdir_in(root, "v1");
        ASSERT_TRUE(m && v && v1);
        ASSERT_OK(open_store(root, d, &s));
        ASSERT_STREQ(kiln_snapshot_store_driver_name(s),
                     d == KILN_SNAPSHOT_DRIVER_NATIVE ? "native" : "overlayfs");

        ASSERT_OK(layer(s, NULL, m, write_base, NULL, "layer:sha256:base", &id1));
        ASSERT_OK(layer(s, id1, m, write_child, NULL, NULL, &id2));
        ASSERT_TRUE(!streq(id1, id2));
        ASSERT_TRUE(!mountinfo_has(m));

        /* The child's view: its files, the parent's it kept, not the one it
         * deleted; read-only. */
        ASSERT_OK(kiln_snapshot_mount_view(s, id2, v, &e));
        ASSERT_TRUE(file_is(v, "b", "from child"));
        ASSERT_TRUE(file_is(v, "d/x", "x in d"));
        ASSERT_TRUE(file_is(v, "keep", "changed"));
        ASSERT_TRUE(!exists_at(v, "a"));
        probe = kiln_xasprintf("%s/new", v);
        ASSERT_EQ_INT(open(probe, O_WRONLY | O_CREAT | O_CLOEXEC, 0644), -1);
        ASSERT_EQ_INT(errno, EROFS);
        /* The parent is unchanged. */
        ASSERT_OK(kiln_snapshot_mount_view(s, id1, v1, &e));
        ASSERT_TRUE(file_is(v1, "a", "from base"));
        ASSERT_TRUE(file_is(v1, "keep", "kept"));
        ASSERT_TRUE(!exists_at(v1, "b"));
        ASSERT_OK(kiln_snapshot_unmount(v1, &e));
        ASSERT_OK(kiln_snapshot_unmount(v, &e));
        ASSERT_TRUE(!mountinfo_has(v));

        /* Names and ids. */
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "layer:sha256:base", &found), 1);
        ASSERT_STREQ(found, id1);
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "layer:sha256:other", &found), 0);
        ASSERT_EQ_INT(kiln_snapshot_exists(s, id1), 1);
        ASSERT_EQ_INT(kiln_snapshot_exists(s, "999999"), 0);
        ASSERT_EQ_INT(kiln_snapshot_exists(s, "01"), 0);
        ASSERT_OK(kiln_snapshot_info(s, id2, &info));
        ASSERT_STREQ(info.parent, id1);
        ASSERT_EQ_INT(info.depth, 2);
        ASSERT_TRUE(info.name == NULL && info.created_ns > 0);
        kiln_snapshot_info_release(&info);

        /* The diff. */
        r = kiln_snapshot_upper_path(s, id2, &upper);
        if (d == KILN_SNAPSHOT_DRIVER_NATIVE)
                ASSERT_EQ_INT(r, -EOPNOTSUPP);
        else {
                ASSERT_OK(r);
                wh = kiln_xasprintf("%s/a", upper);
                ASSERT_OK(lstat(wh, &st));
                ASSERT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
                ASSERT_TRUE(!exists_at(upper, "d")); /* untouched: not in the diff */
        }
        ASSERT_OK(kiln_snapshot_usage(s, id2, &bytes, &e));
        ASSERT_TRUE(bytes > 0);

        /* Children and users protect from removal. */
        ASSERT_EQ_INT(kiln_snapshot_remove(s, id1, &e), -EBUSY);
        ASSERT_OK(kiln_snapshot_use(s, id2));
        ASSERT_EQ_INT(kiln_snapshot_remove(s, id2, &e), -EBUSY);
        ASSERT_TRUE(strstr(kiln_error_message(e), "in use"));
        kiln_snapshot_release(s, id2);
        ASSERT_OK(kiln_snapshot_remove(s, id2, &e));
        ASSERT_EQ_INT(kiln_snapshot_remove(s, id2, &e), -ENOENT);
        ASSERT_OK(kiln_snapshot_remove(s, id1, &e));
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "layer:sha256:base", &found), 0);
        ASSERT_TRUE(!exists_at(root, "snapshots/1"));
        return 0;
}

TEST(flow_native)
{
        return flow(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(flow_overlayfs)
{
        return flow(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

TEST(driver_parse)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        enum kiln_snapshot_driver d;

        ASSERT_OK(kiln_snapshot_driver_parse("auto", &d, &e));
        ASSERT_EQ_INT(d, KILN_SNAPSHOT_DRIVER_AUTO);
        ASSERT_OK(kiln_snapshot_driver_parse("", &d, &e));
        ASSERT_EQ_INT(d, KILN_SNAPSHOT_DRIVER_AUTO);
        ASSERT_OK(kiln_snapshot_driver_parse("overlayfs", &d, &e));
        ASSERT_EQ_INT(d, KILN_SNAPSHOT_DRIVER_OVERLAYFS);
        ASSERT_OK(kiln_snapshot_driver_parse("native", &d, &e));
        ASSERT_EQ_INT(d, KILN_SNAPSHOT_DRIVER_NATIVE);
        ASSERT_EQ_INT(kiln_snapshot_driver_parse("stargz", &d, &e), -EOPNOTSUPP);
        ASSERT_EQ_INT(kiln_snapshot_driver_parse("overlay", &d, &e), -EINVAL);
        ASSERT_STREQ(kiln_error_message(e),
                     "unknown snapshotter 'overlay' (use auto, overlayfs or native)");
        return 0;
}

TEST(auto_picks_overlayfs_here)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_AUTO, &s));
        /* This kernel and ext4 support overlayfs; the probe leaves nothing. */
        ASSERT_EQ_INT(kiln_snapshot_store_driver(s), KILN_SNAPSHOT_DRIVER_OVERLAYFS);
        ASSERT_TRUE(!mountinfo_has(root));
        return 0;
}

TEST(store_is_locked)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL, *s2 = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *dir = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        dir = kiln_xasprintf("%s/snapshots", root);
        ASSERT_OK(kiln_snapshot_store_open(dir, KILN_SNAPSHOT_DRIVER_NATIVE, &s, &e));
        ASSERT_EQ_INT(kiln_snapshot_store_open(dir, KILN_SNAPSHOT_DRIVER_NATIVE, &s2, &e), -EBUSY);
        ASSERT_TRUE(strstr(kiln_error_message(e), "in use by another process"));
        return 0;
}

static int name_race(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_snapshot_abortp) struct kiln_snapshot *a = NULL, *b = NULL;
        _cleanup_free_ char *ida = NULL, *idb = NULL, *bdir = NULL;
        char **list = NULL;
        size_t n = 0;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        ASSERT_OK(open_store(root, d, &s));
        ASSERT_OK(kiln_snapshot_prepare(s, NULL, &a, &e));
        ASSERT_OK(kiln_snapshot_prepare(s, NULL, &b, &e));
        bdir = kiln_xasprintf("snapshots/%s", kiln_snapshot_id(b));
        ASSERT_OK(kiln_snapshot_commit(TAKE_PTR(a), "layer:sha256:same", &ida, &e));
        ASSERT_OK(kiln_snapshot_commit_and_use(TAKE_PTR(b), "layer:sha256:same", &idb, &e));
        /* The loser gets the winner's id (with a use) and its own is gone. */
        ASSERT_STREQ(idb, ida);
        ASSERT_TRUE(!exists_at(root, bdir));
        ASSERT_EQ_INT(kiln_snapshot_remove(s, ida, &e), -EBUSY);
        kiln_snapshot_release(s, ida);
        ASSERT_OK(kiln_snapshot_list(s, &list, &n));
        ASSERT_EQ_INT(n, 1);
        ASSERT_STREQ(list[0], ida);
        for (size_t i = 0; i < n; i++)
                free(list[i]);
        free(list);
        /* Bad names are refused (and the snapshot removed). */
        ASSERT_OK(kiln_snapshot_prepare(s, NULL, &a, &e));
        ASSERT_EQ_INT(kiln_snapshot_commit(TAKE_PTR(a), "bad\nname", NULL, &e), -EINVAL);
        return 0;
}

TEST(name_race_native)
{
        return name_race(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(name_race_overlayfs)
{
        return name_race(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

static int mounted_commit_and_abort(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_snapshot *a = NULL;
        _cleanup_free_ char *m = NULL, *base = NULL, *adir = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        ASSERT_TRUE(m);
        ASSERT_OK(open_store(root, d, &s));
        ASSERT_OK(layer(s, NULL, m, write_base, NULL, NULL, &base));

        /* Commit of a mounted snapshot fails (and removes it). */
        ASSERT_OK(kiln_snapshot_prepare(s, base, &a, &e));
        ASSERT_OK(kiln_snapshot_mount(a, m, &e));
        ASSERT_EQ_INT(kiln_snapshot_mount(a, m, &e), -EBUSY);
        adir = kiln_xasprintf("snapshots/%s", kiln_snapshot_id(a));
        ASSERT_EQ_INT(kiln_snapshot_commit(a, NULL, NULL, &e), -EBUSY);
        ASSERT_TRUE(!mountinfo_has(m));
        ASSERT_TRUE(!exists_at(root, adir));

        /* Abort of a mounted snapshot unmounts and removes it. */
        free(adir);
        ASSERT_OK(kiln_snapshot_prepare(s, base, &a, &e));
        ASSERT_OK(kiln_snapshot_mount(a, m, &e));
        ASSERT_OK(write_at(m, "scratch", "x"));
        adir = kiln_xasprintf("snapshots/%s", kiln_snapshot_id(a));
        ASSERT_TRUE(exists_at(root, adir));
        kiln_snapshot_abort(a);
        ASSERT_TRUE(!mountinfo_has(m));
        ASSERT_TRUE(!exists_at(root, adir));
        ASSERT_OK(kiln_snapshot_remove(s, base, &e));
        return 0;
}

/* An active snapshot mounted, unmounted and mounted again keeps what was
 * written, and can be written again (a writable overlay is "volatile" and
 * leaves a marker behind that must not block the second mount). */
static int remount_active(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_snapshot *a = NULL;
        _cleanup_free_ char *m = NULL, *base = NULL, *id = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        ASSERT_TRUE(m);
        ASSERT_OK(open_store(root, d, &s));
        ASSERT_OK(layer(s, NULL, m, write_base, NULL, NULL, &base));
        ASSERT_OK(kiln_snapshot_prepare(s, base, &a, &e));
        for (int i = 0; i < 3; i++) {
                _cleanup_free_ char *name = kiln_xasprintf("f%d", i);

                ASSERT_OK(kiln_snapshot_mount(a, m, &e));
                for (int k = 0; k < i; k++) {
                        _cleanup_free_ char *prev = kiln_xasprintf("f%d", k);
                        ASSERT_TRUE(exists_at(m, prev));
                }
                ASSERT_OK(write_at(m, name, "x"));
                ASSERT_OK(kiln_snapshot_unmount(m, &e));
                ASSERT_TRUE(!mountinfo_has(m));
        }
        ASSERT_OK(kiln_snapshot_commit(a, NULL, &id, &e));
        ASSERT_OK(kiln_snapshot_mount_view(s, id, m, &e));
        ASSERT_TRUE(exists_at(m, "f0") && exists_at(m, "f2"));
        ASSERT_OK(kiln_snapshot_unmount(m, &e));
        ASSERT_OK(kiln_snapshot_remove(s, id, &e));
        ASSERT_OK(kiln_snapshot_remove(s, base, &e));
        return 0;
}

TEST(remount_active_native)
{
        return remount_active(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(remount_active_overlayfs)
{
        return remount_active(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

TEST(mounted_commit_and_abort_native)
{
        return mounted_commit_and_abort(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(mounted_commit_and_abort_overlayfs)
{
        return mounted_commit_and_abort(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

/* A store owner that dies with an active snapshot mounted and a view, and
 * a snapshot committed after the last sync (its files may not be on disk). */
static _noreturn_ void crash(const char *root, enum kiln_snapshot_driver d, const char *m,
                             const char *v)
{
        struct kiln_snapshot_store *s = NULL;
        struct kiln_snapshot *a = NULL;
        struct kiln_error *e = NULL;
        char *base = NULL, *top = NULL, *late = NULL;

        if (open_store(root, d, &s) < 0 ||
            layer(s, NULL, m, write_base, NULL, "layer:sha256:base", &base) < 0 ||
            layer(s, base, m, write_child, NULL, "layer:sha256:top", &top) < 0 ||
            kiln_snapshot_store_sync(s, &e) < 0 ||
            layer(s, top, m, NULL, NULL, "layer:sha256:late", &late) < 0 ||
            kiln_snapshot_prepare(s, top, &a, &e) < 0 || kiln_snapshot_mount(a, m, &e) < 0 ||
            write_at(m, "half", "done") < 0 || kiln_snapshot_mount_view(s, base, v, &e) < 0)
                _exit(1);
        /* A view of a chain: an overlay of lowers only (with overlayfs). */
        if (kiln_snapshot_mount_view(s, top, kiln_xasprintf("%s/v2", root), &e) < 0)
                _exit(1);
        if (write_at(root, "active-id", kiln_snapshot_id(a)) < 0)
                _exit(1);
        _exit(0);
}

static int reopen_after_crash(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf active = KILN_BUF_INIT(64);
        _cleanup_(kiln_snapshot_abortp) struct kiln_snapshot *a = NULL;
        _cleanup_free_ char *m = NULL, *v = NULL, *top = NULL, *adir = NULL, *sdir = NULL;
        _cleanup_free_ char *idfile = NULL, *v2 = NULL, *late = NULL;
        int status = 0, r = setup();
        pid_t pid;

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        v = mkdir_in(root, "v");
        v2 = mkdir_in(root, "v2");
        ASSERT_TRUE(m && v && v2);
        fflush(stdout);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0)
                crash(root, d, m, v);
        ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT_TRUE(mountinfo_has(m));
        ASSERT_TRUE(mountinfo_has(v));
        ASSERT_TRUE(mountinfo_has(v2));
        idfile = kiln_xasprintf("%s/active-id", root);
        ASSERT_OK(kiln_read_file_at(AT_FDCWD, idfile, &active));
        adir = kiln_xasprintf("snapshots/%s", active.data);
        ASSERT_TRUE(exists_at(root, adir));

        ASSERT_OK(open_store(root, d, &s));
        /* Nothing made from the store stays mounted; the active snapshot is
         * gone; committed snapshots and names survived. */
        sdir = kiln_xasprintf("%s/snapshots", root);
        ASSERT_TRUE(!mountinfo_has(m));
        ASSERT_TRUE(!mountinfo_has(v));
        ASSERT_TRUE(!mountinfo_has(v2));
        ASSERT_TRUE(!mountinfo_has(sdir));
        ASSERT_TRUE(!exists_at(root, adir));
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "layer:sha256:top", &top), 1);
        /* Committed after the last sync: not durable, so dropped. */
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "layer:sha256:late", &late), 0);
        ASSERT_OK(kiln_snapshot_mount_view(s, top, v, &e));
        ASSERT_TRUE(file_is(v, "b", "from child"));
        ASSERT_TRUE(!exists_at(v, "a"));
        ASSERT_OK(kiln_snapshot_unmount(v, &e));
        /* Ids are not reused. */
        ASSERT_OK(kiln_snapshot_prepare(s, top, &a, &e));
        ASSERT_TRUE(strtoull(kiln_snapshot_id(a), NULL, 10) > strtoull(active.data, NULL, 10));
        return 0;
}

TEST(reopen_after_crash_native)
{
        return reopen_after_crash(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(reopen_after_crash_overlayfs)
{
        return reopen_after_crash(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

static int write_special(const char *root, void *ud)
{
        _cleanup_free_ char *f = kiln_xasprintf("%s/suid", root),
                            *l = kiln_xasprintf("%s/link", root);
        _cleanup_free_ char *sym = kiln_xasprintf("%s/sym", root),
                            *abs = kiln_xasprintf("%s/abs", root);
        _cleanup_free_ char *fifo = kiln_xasprintf("%s/fifo", root),
                            *null = kiln_xasprintf("%s/null", root);
        _cleanup_free_ char *dir = kiln_xasprintf("%s/dir", root);
        _cleanup_free_ char *l2 = kiln_xasprintf("%s/dir/link2", root);
        struct timespec ts[2] = { { .tv_sec = 1000000000 },
                                  { .tv_sec = 1234567890, .tv_nsec = 5 } };

        if (write_at(root, "suid", "binary") < 0 || chown(f, 1234, 5678) < 0 ||
            chmod(f, 04755) < 0 || setxattr(f, "user.kiln", "v", 1, 0) < 0 ||
            mkdir(dir, 0711) < 0 || link(f, l) < 0 || link(f, l2) < 0 || symlink("suid", sym) < 0 ||
            symlink("/etc/passwd", abs) < 0 || lchown(abs, 42, 43) < 0 || mkfifo(fifo, 0620) < 0 ||
            chmod(fifo, 0620) < 0 || mknod(null, S_IFCHR | 0666, makedev(1, 3)) < 0 ||
            utimensat(AT_FDCWD, dir, ts, 0) < 0 || utimensat(AT_FDCWD, f, ts, 0) < 0)
                return -errno;
        return 0;
}

TEST(native_copy_preserves_metadata)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *m = NULL, *base = NULL, *child = NULL, *p = NULL;
        char buf[64];
        struct stat a, b, c;
        ssize_t n;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        ASSERT_TRUE(m);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_NATIVE, &s));
        ASSERT_OK(layer(s, NULL, m, write_special, NULL, NULL, &base));
        ASSERT_OK(layer(s, base, m, NULL, NULL, NULL, &child));
        ASSERT_OK(kiln_snapshot_mount_view(s, child, m, &e));

        p = kiln_xasprintf("%s/suid", m);
        ASSERT_OK(lstat(p, &a));
        ASSERT_EQ_INT(a.st_uid, 1234);
        ASSERT_EQ_INT(a.st_gid, 5678);
        ASSERT_EQ_INT(a.st_mode & 07777, 04755);
        ASSERT_EQ_INT(a.st_nlink, 3);
        ASSERT_EQ_INT(a.st_mtim.tv_sec, 1234567890);
        ASSERT_EQ_INT(a.st_mtim.tv_nsec, 5);
        n = getxattr(p, "user.kiln", buf, sizeof(buf));
        ASSERT_EQ_INT(n, 1);
        ASSERT_TRUE(buf[0] == 'v');
        ASSERT_TRUE(file_is(m, "suid", "binary"));
        free(p);
        p = kiln_xasprintf("%s/link", m);
        ASSERT_OK(lstat(p, &b));
        free(p);
        p = kiln_xasprintf("%s/dir/link2", m);
        ASSERT_OK(lstat(p, &c));
        ASSERT_TRUE(a.st_ino == b.st_ino && a.st_ino == c.st_ino);
        free(p);
        p = kiln_xasprintf("%s/dir", m);
        ASSERT_OK(lstat(p, &a));
        ASSERT_EQ_INT(a.st_mode & 07777, 0711);
        ASSERT_EQ_INT(a.st_mtim.tv_sec, 1234567890);
        free(p);
        p = kiln_xasprintf("%s/abs", m);
        ASSERT_OK(lstat(p, &a));
        ASSERT_TRUE(S_ISLNK(a.st_mode));
        ASSERT_EQ_INT(a.st_uid, 42);
        n = readlink(p, buf, sizeof(buf) - 1);
        ASSERT_EQ_INT(n, 11);
        buf[n] = '\0';
        ASSERT_STREQ(buf, "/etc/passwd");
        free(p);
        p = kiln_xasprintf("%s/sym", m);
        n = readlink(p, buf, sizeof(buf) - 1);
        ASSERT_EQ_INT(n, 4);
        free(p);
        p = kiln_xasprintf("%s/fifo", m);
        ASSERT_OK(lstat(p, &a));
        ASSERT_TRUE(S_ISFIFO(a.st_mode));
        ASSERT_EQ_INT(a.st_mode & 07777, 0620);
        free(p);
        p = kiln_xasprintf("%s/null", m);
        ASSERT_OK(lstat(p, &a));
        ASSERT_TRUE(S_ISCHR(a.st_mode) && a.st_rdev == makedev(1, 3));
        ASSERT_OK(kiln_snapshot_unmount(m, &e));

        /* A copy, not a share: the child's files are its own. */
        free(p);
        p = kiln_xasprintf("%s/snapshots/%s/fs/suid", root, child);
        ASSERT_OK(lstat(p, &a));
        free(p);
        p = kiln_xasprintf("%s/snapshots/%s/fs/suid", root, base);
        ASSERT_OK(lstat(p, &b));
        ASSERT_TRUE(a.st_ino != b.st_ino);
        return 0;
}

static int write_nth(const char *root, void *ud)
{
        char name[32];

        (void) snprintf(name, sizeof(name), "f%d", *(int *) ud);
        return write_at(root, name, name);
}

TEST(overlayfs_deep_chain)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(kiln_snapshot_abortp) struct kiln_snapshot *top = NULL;
        _cleanup_free_ char *m = NULL, *v = NULL, *parent = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        v = mkdir_in(root, "v");
        ASSERT_TRUE(m && v);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_OVERLAYFS, &s));
        for (int i = 0; i < 100; i++) {
                char *id = NULL;

                ASSERT_OK(layer(s, parent, m, write_nth, &i, NULL, &id));
                free(parent);
                parent = id;
        }
        ASSERT_OK(kiln_snapshot_mount_view(s, parent, v, &e));
        for (int i = 0; i < 100; i++) {
                char name[32];

                (void) snprintf(name, sizeof(name), "f%d", i);
                ASSERT_TRUE(file_is(v, name, name));
        }
        ASSERT_OK(kiln_snapshot_unmount(v, &e));
        /* A writable mount on top of all 100. */
        ASSERT_OK(kiln_snapshot_prepare(s, parent, &top, &e));
        ASSERT_OK(kiln_snapshot_mount(top, m, &e));
        ASSERT_TRUE(file_is(m, "f0", "f0"));
        ASSERT_OK(write_at(m, "f0", "changed"));
        ASSERT_OK(kiln_snapshot_unmount(m, &e));
        return 0;
}

static int write_big(const char *root, void *ud)
{
        _cleanup_free_ char *data = kiln_xmalloc(1 << 20), *f = kiln_xasprintf("%s/big", root);
        _cleanup_free_ char *l = kiln_xasprintf("%s/big-link", root);

        memset(data, 'x', 1 << 20);
        if (kiln_write_file_atomic(f, data, 1 << 20, 0644) < 0 || link(f, l) < 0)
                return -EIO;
        return 0;
}

static int usage(enum kiln_snapshot_driver d)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *m = NULL, *base = NULL, *child = NULL;
        uint64_t b1 = 0, b2 = 0;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        ASSERT_TRUE(m);
        ASSERT_OK(open_store(root, d, &s));
        ASSERT_OK(layer(s, NULL, m, write_big, NULL, NULL, &base));
        ASSERT_OK(layer(s, base, m, NULL, NULL, NULL, &child));
        ASSERT_OK(kiln_snapshot_usage(s, base, &b1, &e));
        ASSERT_OK(kiln_snapshot_usage(s, child, &b2, &e));
        /* The hard link is counted once. */
        ASSERT_TRUE(b1 >= (1u << 20) && b1 < (2u << 20));
        /* overlayfs: a child's own files only; native: its whole tree. */
        if (d == KILN_SNAPSHOT_DRIVER_OVERLAYFS)
                ASSERT_TRUE(b2 < (64u << 10));
        else
                ASSERT_TRUE(b2 >= (1u << 20) && b2 < (2u << 20));
        ASSERT_EQ_INT(kiln_snapshot_usage(s, "42", &b2, &e), -ENOENT);
        return 0;
}

TEST(usage_native)
{
        return usage(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(usage_overlayfs)
{
        return usage(KILN_SNAPSHOT_DRIVER_OVERLAYFS);
}

TEST(depth_limit)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_snapshot *snap = NULL;
        _cleanup_free_ char *parent = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_NATIVE, &s));
        for (int i = 0; i < KILN_SNAPSHOT_LIMIT_DEPTH; i++) {
                char *id = NULL;

                ASSERT_OK(kiln_snapshot_prepare(s, parent, &snap, &e));
                ASSERT_OK(kiln_snapshot_commit(snap, NULL, &id, &e));
                free(parent);
                parent = id;
        }
        ASSERT_EQ_INT(kiln_snapshot_prepare(s, parent, &snap, &e), -E2BIG);
        ASSERT_TRUE(strstr(kiln_error_message(e), "more than 500 layers"));
        return 0;
}

struct race {
        struct kiln_snapshot_store *s;
        const char *base;
        int index;
        int failures;
        atomic_bool *stop;
};

static void *race_commit(void *p)
{
        struct race *r = p;

        for (int i = 0; i < 25; i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                struct kiln_snapshot *snap = NULL;
                _cleanup_free_ char *id = NULL;
                char name[32];

                (void) snprintf(name, sizeof(name), "layer:n%d", (r->index + i) % 5);
                if (kiln_snapshot_prepare(r->s, r->base, &snap, &e) < 0 ||
                    kiln_snapshot_commit_and_use(snap, name, &id, &e) < 0) {
                        printf("# %s\n", kiln_error_message(e));
                        r->failures++;
                        continue;
                }
                /* Held: it cannot vanish. */
                if (kiln_snapshot_exists(r->s, id) != 1)
                        r->failures++;
                kiln_snapshot_release(r->s, id);
        }
        return NULL;
}

static void *race_remove(void *p)
{
        struct race *r = p;

        while (!atomic_load(r->stop)) {
                char **list = NULL;
                size_t n = 0;

                (void) kiln_snapshot_list(r->s, &list, &n);
                for (size_t i = 0; i < n; i++) {
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                        int k = kiln_snapshot_remove(r->s, list[i], &e);

                        if (k < 0 && k != -EBUSY && k != -ENOENT) {
                                printf("# %s\n", kiln_error_message(e));
                                r->failures++;
                        }
                        free(list[i]);
                }
                free(list);
        }
        return NULL;
}

TEST(concurrent_commits_and_removals)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_snapshot *snap = NULL;
        _cleanup_free_ char *base = NULL;
        struct race races[9];
        pthread_t threads[9];
        atomic_bool stop = false;
        char **before = NULL, **after = NULL;
        size_t n_before = 0, n_after = 0;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_OVERLAYFS, &s));
        ASSERT_OK(kiln_snapshot_prepare(s, NULL, &snap, &e));
        ASSERT_OK(kiln_snapshot_commit_and_use(snap, "base", &base, &e));
        for (int i = 0; i < 9; i++) {
                races[i] = (struct race){ .s = s, .base = base, .index = i, .stop = &stop };
                ASSERT_EQ_INT(pthread_create(&threads[i], NULL, i == 8 ? race_remove : race_commit,
                                             &races[i]),
                              0);
        }
        for (int i = 0; i < 8; i++)
                (void) pthread_join(threads[i], NULL);
        atomic_store(&stop, true);
        (void) pthread_join(threads[8], NULL);
        for (int i = 0; i < 9; i++)
                ASSERT_EQ_INT(races[i].failures, 0);

        /* The base was in use all along; names stayed unique; the store
         * on disk says what the one in memory said. */
        ASSERT_EQ_INT(kiln_snapshot_exists(s, base), 1);
        ASSERT_OK(kiln_snapshot_list(s, &before, &n_before));
        ASSERT_TRUE(n_before >= 1 && n_before <= 6);
        s = kiln_snapshot_store_free(s);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_OVERLAYFS, &s));
        ASSERT_OK(kiln_snapshot_list(s, &after, &n_after));
        ASSERT_EQ_INT(n_after, n_before);
        for (size_t i = 0; i < n_before; i++) {
                ASSERT_STREQ(after[i], before[i]);
                free(before[i]);
                free(after[i]);
        }
        free(before);
        free(after);
        return 0;
}

TEST(driver_is_recorded)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_snapshot *snap = NULL;
        _cleanup_free_ char *id = NULL, *found = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_OVERLAYFS, &s));
        ASSERT_OK(kiln_snapshot_prepare(s, NULL, &snap, &e));
        ASSERT_OK(kiln_snapshot_commit(snap, "kept", &id, &e));
        s = kiln_snapshot_store_free(s);

        /* auto keeps overlayfs and its snapshots. */
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_AUTO, &s));
        ASSERT_EQ_INT(kiln_snapshot_store_driver(s), KILN_SNAPSHOT_DRIVER_OVERLAYFS);
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "kept", &found), 1);
        s = kiln_snapshot_store_free(s);

        /* native starts over: overlay diffs are not native trees. */
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_NATIVE, &s));
        ASSERT_EQ_INT(kiln_snapshot_exists(s, id), 0);
        ASSERT_OK(kiln_snapshot_prepare(s, NULL, &snap, &e));
        ASSERT_TRUE(!streq(kiln_snapshot_id(snap), id));
        ASSERT_OK(kiln_snapshot_commit(snap, "native", NULL, &e));
        s = kiln_snapshot_store_free(s);

        /* ... and auto keeps native from then on. */
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_AUTO, &s));
        ASSERT_EQ_INT(kiln_snapshot_store_driver(s), KILN_SNAPSHOT_DRIVER_NATIVE);
        free(found);
        found = NULL;
        ASSERT_EQ_INT(kiln_snapshot_lookup(s, "native", &found), 1);
        return 0;
}

/* Labels live with their snapshot: set, replaced, read back, refused for
 * bad keys and unknown ids, and gone when the snapshot is removed. */
TEST(labels)
{
        _cleanup_dir_ char *root = tmpdir();
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *m = NULL, *id = NULL, *v = NULL, *fs = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_TRUE(root);
        m = mkdir_in(root, "m");
        ASSERT_TRUE(m);
        ASSERT_OK(open_store(root, KILN_SNAPSHOT_DRIVER_NATIVE, &s));
        ASSERT_OK(layer(s, NULL, m, write_base, NULL, NULL, &id));
        ASSERT_EQ_INT(kiln_snapshot_label_get(s, id, "blob", &v), 0);
        ASSERT_OK(kiln_snapshot_label_set(s, id, "blob", "{\"a\":1}", &e));
        ASSERT_OK(kiln_snapshot_label_set(s, id, "blob", "{\"a\":2}", &e));
        ASSERT_EQ_INT(kiln_snapshot_label_get(s, id, "blob", &v), 1);
        ASSERT_STREQ(v, "{\"a\":2}");
        ASSERT_OK(kiln_snapshot_label_set(s, id, "blob.gzip", "{}", &e));
        {
                char **keys = NULL;
                size_t n = 0;

                ASSERT_OK(kiln_snapshot_label_list(s, id, &keys, &n));
                ASSERT_EQ_INT((int) n, 2);
                ASSERT_STREQ(keys[0], "blob");
                ASSERT_STREQ(keys[1], "blob.gzip");
                ASSERT_TRUE(keys[2] == NULL);
                for (size_t i = 0; i < n; i++)
                        free(keys[i]);
                free(keys);
        }
        ASSERT_EQ_INT(kiln_snapshot_label_set(s, id, "../x", "v", &e), -EINVAL);
        ASSERT_EQ_INT(kiln_snapshot_label_set(s, "42", "blob", "v", &e), -ENOENT);
        ASSERT_EQ_INT(kiln_snapshot_label_get(s, "42", "blob", &v), 0);
        ASSERT_OK(kiln_snapshot_fs_path(s, id, &fs));
        ASSERT_TRUE(exists_at(fs, "a"));
        ASSERT_OK(kiln_snapshot_remove(s, id, &e));
        ASSERT_EQ_INT(kiln_snapshot_fs_path(s, id, &fs), -ENOENT);
        return 0;
}
