/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "base/passwd.h"
#include "kiln-test.h"

static const char PASSWD[] = "root:x:0:0:root:/root:/bin/sh\n"
                             "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                             "\n"
                             "  app:x:1000:1000:App User:/home/app:/bin/sh  \r\n"
                             "short:x:1001\n"
                             "weird:x:abc:-5::/w\n"
                             "dup:x:1000:7:second:/home/dup:/bin/sh\n";

static const char GROUP[] = "root:x:0:root\n"
                            "# comment:x:55:app\n"
                            "wheel:x:10:root,app\n"
                            "staff:x:50:\n"
                            "app:x:1000:\n"
                            "audio:x:29:other,app:extra\n"
                            "docker:x:999:appx,xapp\n";

/* Resolves spec against the texts above (NULL file: missing). */
static int resolve(const char *spec, bool with_passwd, bool with_group, struct kiln_passwd_user *u,
                   struct kiln_error **err)
{
        return kiln_passwd_resolve_data(spec, with_passwd ? PASSWD : NULL, strlen(PASSWD),
                                        with_group ? GROUP : NULL, strlen(GROUP), u, err);
}

TEST(name_resolves_uid_gid_home_and_groups)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("app", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.gid, 1000);
        ASSERT_STREQ(u.home, "/home/app");
        /* wheel and audio list app; the '#' line and "appx" do not count */
        ASSERT_EQ_INT(u.n_gids, 2);
        ASSERT_EQ_INT(u.gids[0], 10);
        ASSERT_EQ_INT(u.gids[1], 29);
        return 0;
}

TEST(uid_finds_first_entry_and_its_name_for_groups)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("1000", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.gid, 1000); /* app's, not dup's */
        ASSERT_STREQ(u.home, "/home/app");
        ASSERT_EQ_INT(u.n_gids, 2);
        return 0;
}

TEST(unknown_numeric_uid_is_taken_as_is_with_gid_0)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("4242", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 4242);
        ASSERT_EQ_INT(u.gid, 0);
        ASSERT_TRUE(u.home == NULL);
        ASSERT_EQ_INT(u.n_gids, 0);
        kiln_passwd_user_release(&u);
        /* no files at all */
        ASSERT_OK(resolve("4242", false, false, &u, &err));
        ASSERT_EQ_INT(u.uid, 4242);
        return 0;
}

TEST(unknown_name_is_buildkits_error)
{
        struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_EQ_INT(resolve("nobody", true, true, &u, &err), -ENOENT);
        ASSERT_STREQ(kiln_error_message(err),
                     "unable to find user nobody: no matching entries in passwd file");
        kiln_error_free(err);
        err = NULL;
        /* a missing passwd file finds no name either */
        ASSERT_EQ_INT(resolve("app", false, true, &u, &err), -ENOENT);
        ASSERT_STREQ(kiln_error_message(err),
                     "unable to find user app: no matching entries in passwd file");
        return 0;
}

TEST(user_and_group_names_and_ids)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("app:staff", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.gid, 50);
        ASSERT_EQ_INT(u.n_gids, 0); /* an explicit group: no supplementary ones */
        kiln_passwd_user_release(&u);

        ASSERT_OK(resolve("app:29", true, true, &u, &err));
        ASSERT_EQ_INT(u.gid, 29);
        kiln_passwd_user_release(&u);

        ASSERT_OK(resolve("app:777", true, true, &u, &err)); /* numeric gid not listed */
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.gid, 777);
        kiln_passwd_user_release(&u);

        ASSERT_OK(resolve("1000:wheel", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.gid, 10);
        kiln_passwd_user_release(&u);

        ASSERT_EQ_INT(resolve("app:nogroup", true, true, &u, &err), -ENOENT);
        ASSERT_STREQ(kiln_error_message(err),
                     "unable to find group nogroup: no matching entries in group file");
        return 0;
}

TEST(numeric_uid_gid_needs_no_files)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("1234:5678", false, false, &u, &err));
        ASSERT_EQ_INT(u.uid, 1234);
        ASSERT_EQ_INT(u.gid, 5678);
        kiln_passwd_user_release(&u);
        /* the fast path takes uint32 ids and "root" */
        ASSERT_OK(resolve("4294967295:root", false, false, &u, &err));
        ASSERT_EQ_INT(u.uid, 4294967295u);
        ASSERT_EQ_INT(u.gid, 0);
        kiln_passwd_user_release(&u);
        /* "1000:1000" does not read passwd, so no home and no groups */
        ASSERT_OK(resolve("1000:1000", true, true, &u, &err));
        ASSERT_TRUE(u.home == NULL);
        ASSERT_EQ_INT(u.n_gids, 0);
        return 0;
}

TEST(default_user_is_root)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 0);
        ASSERT_EQ_INT(u.gid, 0);
        ASSERT_STREQ(u.home, "/root");
        ASSERT_EQ_INT(u.n_gids, 2); /* root is in root and wheel */
        kiln_passwd_user_release(&u);
        ASSERT_OK(kiln_passwd_resolve_data(NULL, NULL, 0, NULL, 0, &u, &err));
        ASSERT_EQ_INT(u.uid, 0);
        ASSERT_TRUE(err == NULL);
        return 0;
}

TEST(out_of_range_ids_are_refused)
{
        struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_EQ_INT(resolve("-1", true, true, &u, &err), -ERANGE);
        ASSERT_STREQ(kiln_error_message(err), "uids and gids must be in range 0-2147483647");
        kiln_error_free(err);
        err = NULL;
        ASSERT_EQ_INT(resolve("app:2147483648", true, true, &u, &err), -ERANGE);
        return 0;
}

TEST(malformed_lines_do_not_break_parsing)
{
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(resolve("short", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 1001);
        ASSERT_EQ_INT(u.gid, 0); /* missing field */
        ASSERT_STREQ(u.home, "");
        kiln_passwd_user_release(&u);
        ASSERT_OK(resolve("weird", true, true, &u, &err));
        ASSERT_EQ_INT(u.uid, 0); /* "abc" is 0, as runc reads it */
        ASSERT_EQ_INT(u.gid, (uint32_t) -5);
        ASSERT_STREQ(u.home, "/w");
        return 0;
}

TEST(overlong_line_is_an_error)
{
        size_t n = KILN_PASSWD_MAX_LINE + 64;
        _cleanup_free_ char *big = kiln_xmalloc(n);
        struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        memcpy(big, "app:x:1:1::/:/bin/sh\n", 21);
        memset(big + 21, 'a', n - 21);
        ASSERT_EQ_INT(kiln_passwd_resolve_data("app", big, n, NULL, 0, &u, &err), -E2BIG);
        ASSERT_TRUE(
                strstr(kiln_error_message(err), "unable to find user app: '/etc/passwd' line 2"));
        return 0;
}

/* ---- against a tree ---- */

static char *make_root(void)
{
        char *d = kiln_xstrdup("/tmp/kiln-test-passwd-XXXXXX");
        if (!mkdtemp(d)) {
                free(d);
                return NULL;
        }
        return d;
}

static int put(const char *root, const char *rel, const char *data)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", root, rel);
        return kiln_write_file_atomic(p, data, strlen(data), 0644);
}

static void cleanup_root(char **root)
{
        if (*root) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                (void) kiln_rm_rf_at(AT_FDCWD, *root, NULL, &e);
                free(*root);
        }
}

TEST(resolve_reads_files_in_the_tree)
{
        _cleanup_(cleanup_root) char *root = make_root();
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;

        ASSERT_TRUE(root);
        _cleanup_free_ char *etc = kiln_xasprintf("%s/etc", root);
        ASSERT_OK(mkdir(etc, 0755));
        ASSERT_OK(put(root, "etc/passwd", PASSWD));
        ASSERT_OK(put(root, "etc/group", GROUP));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(kiln_passwd_resolve(fd, "app", &u, &err));
        ASSERT_EQ_INT(u.uid, 1000);
        ASSERT_EQ_INT(u.n_gids, 2);

        uint32_t uid = 1, gid = 1;
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "daemon", &uid, &gid, &err), 1);
        ASSERT_EQ_INT(uid, 1);
        ASSERT_EQ_INT(gid, 1);
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "nobody", &uid, NULL, &err), 0);
        ASSERT_EQ_INT(kiln_passwd_lookup_group(fd, "staff", &gid, &err), 1);
        ASSERT_EQ_INT(gid, 50);
        ASSERT_EQ_INT(kiln_passwd_lookup_group(fd, "nothere", &gid, &err), 0);
        return 0;
}

TEST(missing_files_are_empty)
{
        _cleanup_(cleanup_root) char *root = make_root();
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;
        uint32_t uid = 7;

        ASSERT_TRUE(root);
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(kiln_passwd_resolve(fd, "", &u, &err));
        ASSERT_EQ_INT(u.uid, 0);
        kiln_passwd_user_release(&u);
        ASSERT_OK(kiln_passwd_resolve(fd, "33", &u, &err));
        ASSERT_EQ_INT(u.uid, 33);
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "app", &uid, NULL, &err), 0);
        ASSERT_EQ_INT(kiln_passwd_resolve(fd, "app", &u, &err), -ENOENT);
        return 0;
}

TEST(symlinked_passwd_stays_inside_the_root)
{
        _cleanup_(cleanup_root) char *root = make_root();
        _cleanup_(cleanup_root) char *outside = make_root();
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = -1;

        ASSERT_TRUE(root && outside);
        /* outside/etc/passwd knows "evil"; root/etc/passwd points at it
         * with an absolute and a relative link: both resolve inside root */
        _cleanup_free_ char *oetc = kiln_xasprintf("%s/etc", outside);
        ASSERT_OK(mkdir(oetc, 0755));
        ASSERT_OK(put(outside, "etc/passwd", "evil:x:666:666::/:/bin/sh\n"));
        _cleanup_free_ char *etc = kiln_xasprintf("%s/etc", root);
        ASSERT_OK(mkdir(etc, 0755));
        _cleanup_free_ char *target = kiln_xasprintf("%s/etc/passwd", outside);
        _cleanup_free_ char *link = kiln_xasprintf("%s/etc/passwd", root);
        ASSERT_OK(symlink(target, link));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ_INT(kiln_passwd_resolve(fd, "evil", &u, &err), -ENOENT);
        uint32_t uid = 0;
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "evil", &uid, NULL, &err), 0);

        ASSERT_OK(unlink(link));
        _cleanup_free_ char *rel = kiln_xasprintf("../../../../../../..%s", target);
        ASSERT_OK(symlink(rel, link));
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "evil", &uid, NULL, &err), 0);

        /* a link to a file inside the root is followed */
        ASSERT_OK(unlink(link));
        ASSERT_OK(put(root, "etc/passwd.real", "good:x:5:6::/g:/bin/sh\n"));
        ASSERT_OK(symlink("/etc/passwd.real", link));
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "good", &uid, NULL, &err), 1);
        ASSERT_EQ_INT(uid, 5);
        return 0;
}

TEST(non_regular_and_oversized_files)
{
        _cleanup_(cleanup_root) char *root = make_root();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_passwd_user_release) struct kiln_passwd_user u = { 0 };
        _cleanup_close_ int fd = -1;
        uint32_t uid = 0;

        ASSERT_TRUE(root);
        _cleanup_free_ char *etc = kiln_xasprintf("%s/etc", root);
        ASSERT_OK(mkdir(etc, 0755));
        _cleanup_free_ char *pw = kiln_xasprintf("%s/etc/passwd", root);
        ASSERT_OK(mkfifo(pw, 0644));
        fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        /* a FIFO never blocks: it is refused for --chown, ignored for USER */
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "app", &uid, NULL, &err), -EINVAL);
        ASSERT_STREQ(kiln_error_message(err), "'/etc/passwd' is not a regular file");
        kiln_error_free(err);
        err = NULL;
        ASSERT_OK(kiln_passwd_resolve(fd, "12", &u, &err));
        ASSERT_EQ_INT(u.uid, 12);
        kiln_passwd_user_release(&u);

        ASSERT_OK(unlink(pw));
        _cleanup_close_ int big = open(pw, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_TRUE(big >= 0);
        ASSERT_OK(ftruncate(big, KILN_PASSWD_MAX_FILE_SIZE + 1));
        ASSERT_EQ_INT(kiln_passwd_resolve(fd, "app", &u, &err), -E2BIG);
        ASSERT_STREQ(kiln_error_message(err),
                     "unable to find user app: '/etc/passwd' exceeds 10485760 bytes");
        kiln_error_free(err);
        err = NULL;
        ASSERT_EQ_INT(kiln_passwd_lookup_user(fd, "app", &uid, NULL, &err), -E2BIG);
        /* the default user falls back to root whatever the files hold */
        ASSERT_OK(kiln_passwd_resolve(fd, "", &u, &err));
        ASSERT_EQ_INT(u.uid, 0);
        return 0;
}
