/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "base/passwd.h"
#include "exec/exec.h"
#include "kiln-test.h"

static char *make_dir(void)
{
        char *d = kiln_xstrdup("/tmp/kiln-test-exec-user-XXXXXX");
        if (!mkdtemp(d)) {
                free(d);
                return NULL;
        }
        return d;
}

static void remove_dir(char **d)
{
        if (*d) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                (void) kiln_rm_rf_at(AT_FDCWD, *d, NULL, &e);
                free(*d);
        }
}

/* A uid/gid the test may chown to: 1000 as root, else our own. */
static uint32_t test_uid(void)
{
        return geteuid() == 0 ? 1000 : geteuid();
}

static uint32_t test_gid(void)
{
        return geteuid() == 0 ? 1000 : getegid();
}

TEST(cwd_is_created_with_mode_and_owner)
{
        _cleanup_(remove_dir) char *root = make_dir();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;

        ASSERT_TRUE(root);
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        mode_t old = umask(077);
        int r = kiln_exec_prepare_cwd(fd, "/srv/./app/../app/data/", test_uid(), test_gid(), &err);
        umask(old);
        ASSERT_OK(r);
        static const char *const made[] = { "srv", "srv/app", "srv/app/data" };
        for (size_t i = 0; i < ELEMENTSOF(made); i++) {
                _cleanup_free_ char *p = kiln_xasprintf("%s/%s", root, made[i]);
                ASSERT_OK(stat(p, &st));
                ASSERT_TRUE(S_ISDIR(st.st_mode));
                ASSERT_EQ_INT(st.st_mode & 07777, 0755);
                ASSERT_EQ_INT(st.st_uid, test_uid());
                ASSERT_EQ_INT(st.st_gid, test_gid());
        }
        return 0;
}

TEST(existing_dirs_are_left_alone)
{
        _cleanup_(remove_dir) char *root = make_dir();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;

        ASSERT_TRUE(root);
        _cleanup_free_ char *tmp = kiln_xasprintf("%s/tmp", root);
        ASSERT_OK(mkdir(tmp, 0700));
        ASSERT_OK(chmod(tmp, 01777));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(kiln_exec_prepare_cwd(fd, "/tmp", test_uid(), test_gid(), &err));
        ASSERT_OK(kiln_exec_prepare_cwd(fd, "/", test_uid(), test_gid(), &err));
        ASSERT_OK(kiln_exec_prepare_cwd(fd, NULL, test_uid(), test_gid(), &err));
        ASSERT_OK(stat(tmp, &st));
        ASSERT_EQ_INT(st.st_mode & 07777, 01777);
        ASSERT_EQ_INT(st.st_uid, geteuid());
        return 0;
}

TEST(symlinks_never_lead_out_of_the_root)
{
        _cleanup_(remove_dir) char *parent = make_dir();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;

        ASSERT_TRUE(parent);
        _cleanup_free_ char *root = kiln_xasprintf("%s/root", parent);
        ASSERT_OK(mkdir(root, 0755));
        /* relative link climbing out: resolves to the root itself */
        _cleanup_free_ char *up = kiln_xasprintf("%s/up", root);
        ASSERT_OK(symlink("../../../../..", up));
        /* absolute link to the parent: resolves below the root */
        _cleanup_free_ char *abs = kiln_xasprintf("%s/abs", root);
        ASSERT_OK(symlink(parent, abs));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);

        ASSERT_OK(kiln_exec_prepare_cwd(fd, "/up/escaped", test_uid(), test_gid(), &err));
        _cleanup_free_ char *inside = kiln_xasprintf("%s/escaped", root);
        _cleanup_free_ char *outside = kiln_xasprintf("%s/escaped", parent);
        ASSERT_OK(stat(inside, &st));
        ASSERT_TRUE(stat(outside, &st) < 0 && errno == ENOENT);

        /* the target of /abs does not exist inside the root: refused */
        ASSERT_TRUE(kiln_exec_prepare_cwd(fd, "/abs/x", test_uid(), test_gid(), &err) < 0);
        _cleanup_free_ char *outside2 = kiln_xasprintf("%s/x", parent);
        ASSERT_TRUE(stat(outside2, &st) < 0 && errno == ENOENT);
        return 0;
}

TEST(a_file_in_the_way_is_an_error)
{
        _cleanup_(remove_dir) char *root = make_dir();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;

        ASSERT_TRUE(root);
        _cleanup_free_ char *f = kiln_xasprintf("%s/file", root);
        ASSERT_OK(kiln_write_file_atomic(f, "x", 1, 0644));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ_INT(kiln_exec_prepare_cwd(fd, "/file/sub", 0, 0, &err), -ENOTDIR);
        ASSERT_STREQ(kiln_error_message(err),
                     "failed to create working directory '/file': not a directory");
        kiln_error_free(err);
        err = NULL;
        ASSERT_EQ_INT(kiln_exec_prepare_cwd(fd, "relative", 0, 0, &err), -EINVAL);
        return 0;
}

TEST(user_resolves_in_the_rootfs)
{
        _cleanup_(remove_dir) char *root = make_dir();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_close_ int fd = -1;

        ASSERT_TRUE(root);
        _cleanup_free_ char *etc = kiln_xasprintf("%s/etc", root);
        ASSERT_OK(mkdir(etc, 0755));
        _cleanup_free_ char *pw = kiln_xasprintf("%s/etc/passwd", root);
        static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
                                     "app:x:1000:1000::/home/app:/bin/sh\n";
        ASSERT_OK(kiln_write_file_atomic(pw, passwd, strlen(passwd), 0644));
        _cleanup_free_ char *gr = kiln_xasprintf("%s/etc/group", root);
        static const char group[] = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n";
        ASSERT_OK(kiln_write_file_atomic(gr, group, strlen(group), 0644));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);

        ASSERT_OK(kiln_passwd_resolve(fd, "app", &u, &err));
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.gid, 1000);
        ASSERT_EQ_INT(u.n_gids, 1);
        ASSERT_EQ_INT(u.gids[0], 2000);

        /* and the spec carries them, primary gid first */
        const char *args[] = { "id" };
        struct kiln_exec_process p = { .rootfs = root, .args = args, .n_args = 1 };
        json_t *spec = kiln_exec_spec_new(&p, "/b/id1", u.uid, u.gid, u.gids, u.n_gids, &err);
        ASSERT_TRUE(spec);
        json_t *add = json_object_get(json_object_get(json_object_get(spec, "process"), "user"),
                                      "additionalGids");
        ASSERT_EQ_INT(json_array_size(add), 2);
        ASSERT_EQ_INT(json_integer_value(json_array_get(add, 0)), 1000);
        ASSERT_EQ_INT(json_integer_value(json_array_get(add, 1)), 2000);
        json_decref(spec);
        return 0;
}
