/* SPDX-License-Identifier: Apache-2.0 */
/* The certificate copy of `kiln create --config`: copies, names, modes,
 * the rewritten buildkitd.toml, errors and atomicity. */

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/fs.h"
#include "config/config.h"
#include "config/install.h"
#include "config-test-util.h"
#include "kiln-test.h"

/* ---- a scratch directory per test ---- */

struct fx {
        char *dir; /* physical path: getcwd() agrees with it */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void) st;
        (void) ftw;
        return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void fx_release(struct fx *f)
{
        if (!f->dir)
                return;
        (void) chmod(f->dir, 0700);
        (void) nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(f->dir);
}

static int fx_init(struct fx *f)
{
        char tmpl[] = "/tmp/kiln-install-XXXXXX";

        if (!mkdtemp(tmpl))
                return -errno;
        f->dir = realpath(tmpl, NULL);
        return f->dir ? 0 : -errno;
}

_printf_(2, 3) static char *fx_path(const struct fx *f, const char *fmt, ...)
{
        _cleanup_free_ char *rel = NULL;
        va_list ap;

        va_start(ap, fmt);
        rel = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_xasprintf("%s/%s", f->dir, rel);
}

/* Writes content to dir/rel, creating the parents. */
static int fx_write(const struct fx *f, const char *rel, const char *content)
{
        _cleanup_free_ char *p = fx_path(f, "%s", rel);
        char *slash = strrchr(p, '/');
        int r;

        *slash = '\0';
        r = kiln_mkdir_p(p, 0755);
        *slash = '/';
        if (r < 0)
                return r;
        return kiln_write_file_atomic(p, content, strlen(content), 0644);
}

/* The contents of dir/rel, or NULL. Caller frees. */
static char *fx_read(const struct fx *f, const char *rel)
{
        _cleanup_free_ char *p = fx_path(f, "%s", rel);
        struct kiln_buf b = KILN_BUF_INIT(16u << 20);

        if (kiln_read_file_at(AT_FDCWD, p, &b) < 0) {
                kiln_buf_release(&b);
                return NULL;
        }
        return kiln_buf_steal(&b);
}

/* Permission bits of dir/rel (not following a symlink), or -1 (missing) or
 * -2 (neither a regular file nor a directory). */
static int fx_mode(const struct fx *f, const char *rel)
{
        _cleanup_free_ char *p = fx_path(f, "%s", rel);
        struct stat st;

        if (lstat(p, &st) < 0)
                return -1;
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                return -2;
        return (int) (st.st_mode & 07777);
}

/* The names in dir/rel, sorted and joined with ' ' ("" when empty, NULL
 * when it cannot be read). Caller frees. */
static char *fx_ls(const struct fx *f, const char *rel)
{
        _cleanup_free_ char *p = fx_path(f, "%s", rel);
        struct dirent **list = NULL;
        struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        int n = scandir(p, &list, NULL, alphasort);

        if (n < 0)
                return NULL;
        for (int i = 0; i < n; i++) {
                if (strcmp(list[i]->d_name, ".") != 0 && strcmp(list[i]->d_name, "..") != 0)
                        (void) kiln_buf_printf(&b, "%s%s", b.len ? " " : "", list[i]->d_name);
                free(list[i]);
        }
        free(list);
        return kiln_buf_steal(&b);
}

/* ---- running an install ---- */

struct run {
        int r;
        struct kiln_config_diags d;
        struct kiln_error *err;
};

static void run_release(struct run *x)
{
        kiln_config_diags_release(&x->d);
        kiln_error_free(x->err);
}

static struct run install(const struct fx *f, const char *conf_rel, const char *target_rel)
{
        _cleanup_free_ char *conf = fx_path(f, "%s", conf_rel);
        _cleanup_free_ char *target = fx_path(f, "%s", target_rel);
        struct run x = { 0 };

        x.r = kiln_config_install(conf, target, &x.d, &x.err);
        if (x.r < 0)
                printf("# install: %d %s\n", x.r, kiln_error_message(x.err));
        return x;
}

#define T "b/etc/buildkit" /* the target used by most tests */

/* The documented example, with a comment and layout of the user's. */
TEST(documented_scenario_keeps_every_other_byte)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *conf = NULL, *want = NULL, *got = NULL, *copy = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "certs/myregistry.pem", "CA\n"));
        ASSERT_OK(fx_write(&f, "certs/myregistry_key.pem", "KEY\n"));
        ASSERT_OK(fx_write(&f, "certs/myregistry_cert.pem", "CERT\n"));
        conf = kiln_xasprintf("# mirror and certificates\n"
                              "debug = true\n"
                              "\n"
                              "[registry.\"docker.io\"]\n"
                              "  mirrors = [\"mirror.gcr.io\"]   # keep me\n"
                              "\n"
                              "[registry.\"myregistry.com\"]\n"
                              "  ca=[\"%s/certs/myregistry.pem\"]\n"
                              "  [[registry.\"myregistry.com\".keypair]]\n"
                              "    key = '%s/certs/myregistry_key.pem'  # private\n"
                              "    cert = \"%s/certs/myregistry_cert.pem\"\n",
                              f.dir, f.dir, f.dir);
        ASSERT_OK(fx_write(&f, "conf/buildkitd.toml", conf));

        x = install(&f, "conf/buildkitd.toml", T);
        ASSERT_OK(x.r);
        /* Only the loader's warning about debug = true. */
        ASSERT_EQ_INT(x.d.n, 1);
        ASSERT_DIAG(&x.d,
                    "buildkitd.toml:2:9: warning: 'debug' configuration option is deprecated");

        want = kiln_xasprintf("# mirror and certificates\n"
                              "debug = true\n"
                              "\n"
                              "[registry.\"docker.io\"]\n"
                              "  mirrors = [\"mirror.gcr.io\"]   # keep me\n"
                              "\n"
                              "[registry.\"myregistry.com\"]\n"
                              "  ca=[\"%s/" T "/certs/myregistry.com/myregistry.pem\"]\n"
                              "  [[registry.\"myregistry.com\".keypair]]\n"
                              "    key = \"%s/" T "/certs/myregistry.com/myregistry_key.pem\"  "
                              "# private\n"
                              "    cert = \"%s/" T "/certs/myregistry.com/myregistry_cert.pem\"\n",
                              f.dir, f.dir, f.dir);
        got = fx_read(&f, T "/buildkitd.toml");
        ASSERT_STREQ(got, want);

        copy = fx_read(&f, T "/certs/myregistry.com/myregistry_key.pem");
        ASSERT_STREQ(copy, "KEY\n");
        free(copy);
        copy = fx_read(&f, T "/certs/myregistry.com/myregistry.pem");
        ASSERT_STREQ(copy, "CA\n");
        free(copy);
        copy = fx_ls(&f, T "/certs");
        ASSERT_STREQ(copy, "myregistry.com");

        /* Private keys 0600, directories 0700, the rest 0644. */
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry_key.pem"), 0600);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry_cert.pem"), 0644);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry.pem"), 0644);
        ASSERT_EQ_INT(fx_mode(&f, T "/buildkitd.toml"), 0644);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com"), 0700);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs"), 0700);
        ASSERT_EQ_INT(fx_mode(&f, T), 0700);
        /* Missing parents are made, private too. */
        ASSERT_EQ_INT(fx_mode(&f, "b/etc"), 0700);
        return 0;
}

TEST(modes_do_not_depend_on_the_umask)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        mode_t old;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "ca.pem", "CA"));
        ASSERT_OK(fx_write(&f, "k.pem", "K"));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"h\"]\nca = [\"ca.pem\"]\n"
                           "[[registry.\"h\".keypair]]\nkey = \"k.pem\"\n"));
        old = umask(0077);
        x = install(&f, "bk.toml", T);
        (void) umask(old);
        ASSERT_OK(x.r);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/h/ca.pem"), 0644);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/h/k.pem"), 0600);
        ASSERT_EQ_INT(fx_mode(&f, T "/buildkitd.toml"), 0644);
        return 0;
}

TEST(relative_paths_resolve_against_the_config_directory)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *cwd = getcwd(NULL, 0), *got = NULL, *want = NULL, *c = NULL;
        struct kiln_error *err = NULL;
        int r;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "conf/ca.pem", "CA"));
        ASSERT_OK(fx_write(&f, "conf/tls/client.key", "KEY"));
        ASSERT_OK(fx_write(&f, "other/client.crt", "CERT"));
        ASSERT_OK(fx_write(&f, "conf/bk.toml",
                           "[registry.\"r\"]\n"
                           "ca = [\"ca.pem\"]\n"
                           "[[registry.\"r\".keypair]]\n"
                           "key = \"./tls/client.key\"\n"
                           "cert = \"../other/client.crt\"\n"));
        /* From another working directory, with relative arguments. */
        ASSERT_TRUE(cwd);
        ASSERT_OK(chdir(f.dir));
        r = kiln_config_install("conf/bk.toml", "out/buildkit", &x.d, &err);
        x.err = err;
        ASSERT_OK(chdir(cwd));
        ASSERT_OK(r);

        got = fx_read(&f, "out/buildkit/buildkitd.toml");
        want = kiln_xasprintf("[registry.\"r\"]\n"
                              "ca = [\"%s/out/buildkit/certs/r/ca.pem\"]\n"
                              "[[registry.\"r\".keypair]]\n"
                              "key = \"%s/out/buildkit/certs/r/client.key\"\n"
                              "cert = \"%s/out/buildkit/certs/r/client.crt\"\n",
                              f.dir, f.dir, f.dir);
        ASSERT_STREQ(got, want);
        c = fx_read(&f, "out/buildkit/certs/r/client.crt");
        ASSERT_STREQ(c, "CERT");
        return 0;
}

TEST(missing_file_names_key_path_and_reason_and_leaves_nothing)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *conf = NULL, *want = NULL, *ls = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "conf/ca.pem", "CA"));
        ASSERT_OK(fx_write(&f, "conf/client.cert", "CERT"));
        ASSERT_OK(fx_write(&f, "conf/bk.toml",
                           "[registry.\"myregistry.com\"]\n"
                           "  ca = [\"ca.pem\", \"/nonexistent/ca2.pem\"]\n"
                           "\n"
                           "[[registry.\"myregistry.com\".keypair]]\n"
                           "  cert = \"client.cert\"\n"
                           "  key = \"client.key\"\n"));
        x = install(&f, "conf/bk.toml", "builder/etc/buildkit");
        ASSERT_EQ_INT(x.r, -ENOENT);
        conf = fx_path(&f, "conf/bk.toml");
        want = kiln_xasprintf("%s:6:9: error: registry.\"myregistry.com\".keypair[0].key: cannot "
                              "copy 'client.key' (%s/conf/client.key): No such file or directory",
                              conf, f.dir);
        ASSERT_DIAG(&x.d, want);
        free(want);
        want = kiln_xasprintf("%s:2:19: error: registry.\"myregistry.com\".ca[1]: cannot copy "
                              "'/nonexistent/ca2.pem': No such file or directory",
                              conf);
        ASSERT_DIAG(&x.d, want);
        ASSERT_EQ_INT(x.d.n, 2);
        /* *err repeats the first, in file order, and counts the rest. */
        ASSERT_TRUE(strstr(kiln_error_message(x.err), want) == kiln_error_message(x.err));
        ASSERT_TRUE(strstr(kiln_error_message(x.err), "(and 1 more error)"));
        ASSERT_EQ_INT(x.err->line, 2);
        ASSERT_EQ_INT(x.err->col, 19);

        /* No half-made builder: not even the parents made for it. */
        ls = fx_ls(&f, "");
        ASSERT_STREQ(ls, "conf");
        return 0;
}

TEST(unreadable_not_regular_and_too_large_files_fail)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *fifo = NULL, *big = NULL, *ls = NULL, *secret = NULL;

        ASSERT_OK(fx_init(&f));
        fifo = fx_path(&f, "fifo.pem");
        ASSERT_OK(mkfifo(fifo, 0644));
        big = kiln_xmalloc(KILN_CONFIG_INSTALL_MAX_FILE + 2);
        memset(big, 'x', KILN_CONFIG_INSTALL_MAX_FILE + 1);
        big[KILN_CONFIG_INSTALL_MAX_FILE + 1] = '\0';
        ASSERT_OK(fx_write(&f, "big.pem", big));
        ASSERT_OK(fx_write(&f, "secret.key", "K"));
        secret = fx_path(&f, "secret.key");
        ASSERT_OK(chmod(secret, 0));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"h\"]\n"
                           "ca = [\"fifo.pem\", \"big.pem\", \".\"]\n"
                           "[[registry.\"h\".keypair]]\n"
                           "key = \"secret.key\"\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_TRUE(x.r < 0);
        ASSERT_DIAG(&x.d, "ca[0]: cannot copy 'fifo.pem' (");
        ASSERT_DIAG(&x.d, "fifo.pem): not a regular file");
        ASSERT_DIAG(&x.d, "big.pem): larger than 1048576 bytes");
        ASSERT_DIAG(&x.d, "ca[2]: cannot copy '.' (");
        ASSERT_DIAG(&x.d, "): Is a directory");
        if (geteuid() != 0)
                ASSERT_DIAG(&x.d, "keypair[0].key: cannot copy 'secret.key' (");
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);
        ls = fx_ls(&f, "");
        ASSERT_STREQ(ls, "big.pem bk.toml fifo.pem secret.key");
        return 0;
}

TEST(symlinks_are_followed_for_reading_and_never_created)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *c = NULL, *p1 = NULL, *p2 = NULL, *p3 = NULL, *p4 = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "real/ca.pem", "CA"));
        p1 = fx_path(&f, "link.pem");
        p2 = fx_path(&f, "tls");
        p3 = fx_path(&f, "tls/x.crt");
        p4 = fx_path(&f, "tlslink");
        ASSERT_OK(symlink("real/ca.pem", p1));
        ASSERT_OK(mkdir(p2, 0755));
        ASSERT_OK(symlink("../real/ca.pem", p3));
        ASSERT_OK(symlink("tls", p4));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"h\"]\n"
                           "ca = [\"link.pem\"]\n"
                           "tlsconfigdir = [\"tlslink\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/h/link.pem"), 0644);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/h/tlslink"), 0700);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/h/tlslink/x.crt"), 0644);
        c = fx_read(&f, T "/certs/h/tlslink/x.crt");
        ASSERT_STREQ(c, "CA");
        return 0;
}

TEST(same_name_different_files_do_not_overwrite)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *got = NULL, *want = NULL, *ls = NULL, *c = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "a/ca.pem", "CA-A"));
        ASSERT_OK(fx_write(&f, "b/ca.pem", "CA-B"));
        ASSERT_OK(fx_write(&f, "c/ca.pem", "CA-A"));
        ASSERT_OK(fx_write(&f, "both.pem", "KEY+CERT"));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"h\"]\n"
                           "ca = [\"a/ca.pem\", \"b/ca.pem\", \"c/ca.pem\"]\n"
                           "[[registry.\"h\".keypair]]\n"
                           "cert = \"both.pem\"\n"
                           "key = \"both.pem\"\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        want = kiln_xasprintf("[registry.\"h\"]\n"
                              "ca = [\"%s/" T "/certs/h/ca.pem\", \"%s/" T "/certs/h/ca-1.pem\", "
                              "\"%s/" T "/certs/h/ca.pem\"]\n"
                              "[[registry.\"h\".keypair]]\n"
                              "cert = \"%s/" T "/certs/h/both.pem\"\n"
                              "key = \"%s/" T "/certs/h/both.pem\"\n",
                              f.dir, f.dir, f.dir, f.dir, f.dir);
        got = fx_read(&f, T "/buildkitd.toml");
        ASSERT_STREQ(got, want);
        ls = fx_ls(&f, T "/certs/h");
        ASSERT_STREQ(ls, "both.pem ca-1.pem ca.pem");
        c = fx_read(&f, T "/certs/h/ca-1.pem");
        ASSERT_STREQ(c, "CA-B");
        /* Shared by a key: private. */
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/h/both.pem"), 0600);
        return 0;
}

TEST(hosts_that_sanitise_alike_share_a_directory_safely)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *ls = NULL, *c = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "one/ca.pem", "ONE"));
        ASSERT_OK(fx_write(&f, "two/ca.pem", "TWO"));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"myreg:5000\"]\n"
                           "ca = [\"one/ca.pem\"]\n"
                           "[registry.\"myreg_5000\"]\n"
                           "ca = [\"two/ca.pem\"]\n"
                           "[registry.\"..\"]\n"
                           "ca = [\"one/ca.pem\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        ls = fx_ls(&f, T "/certs");
        ASSERT_STREQ(ls, "_ myreg_5000");
        free(ls);
        ls = fx_ls(&f, T "/certs/myreg_5000");
        ASSERT_STREQ(ls, "ca-1.pem ca.pem");
        c = fx_read(&f, T "/certs/myreg_5000/ca-1.pem");
        ASSERT_STREQ(c, "TWO");
        return 0;
}

TEST(host_directory_names)
{
        static const char *const cases[][2] = {
                { "myregistry.com", "myregistry.com" },
                { "myreg:5000", "myreg_5000" },
                { "a::b//c", "a_b_c" },
                { "Host-1.example", "Host-1.example" },
                { "[::1]:5000", "_1_5000" },
                { "", "_" },
                { ".", "_" },
                { "..", "_" },
                { "...", "..." },
                { "x/../y", "x_.._y" },
                { "h\xc3\xa9", "h_" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *s = kiln_config_install_host_dir(cases[i][0]);

                ASSERT_STREQ(s, cases[i][1]);
        }
        return 0;
}

TEST(tlsconfigdir_is_copied_and_rewritten)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *got = NULL, *want = NULL, *ls = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "certs.d/myregistry.com/ca.crt", "CA"));
        ASSERT_OK(fx_write(&f, "certs.d/myregistry.com/client.cert", "CERT"));
        ASSERT_OK(fx_write(&f, "certs.d/myregistry.com/client.key", "KEY"));
        ASSERT_OK(fx_write(&f, "certs.d/myregistry.com/README", "not read by BuildKit"));
        ASSERT_OK(fx_write(&f, "certs.d/myregistry.com/sub/deep.crt", "not read either"));
        ASSERT_OK(fx_write(&f, "ca/myregistry.com", "A FILE NAMED LIKE THE DIRECTORY"));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"myregistry.com\"]\n"
                           "ca = [\"ca/myregistry.com\"]\n"
                           "tlsconfigdir = [\"certs.d/myregistry.com/\", \"\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        want = kiln_xasprintf("[registry.\"myregistry.com\"]\n"
                              "ca = [\"%s/" T "/certs/myregistry.com/myregistry.com\"]\n"
                              "tlsconfigdir = [\"%s/" T
                              "/certs/myregistry.com/myregistry-1.com\", \"\"]\n",
                              f.dir, f.dir);
        got = fx_read(&f, T "/buildkitd.toml");
        ASSERT_STREQ(got, want);
        ls = fx_ls(&f, T "/certs/myregistry.com/myregistry-1.com");
        ASSERT_STREQ(ls, "ca.crt client.cert client.key");
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry-1.com"), 0700);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry-1.com/client.key"), 0600);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry-1.com/client.cert"), 0644);
        ASSERT_EQ_INT(fx_mode(&f, T "/certs/myregistry.com/myregistry-1.com/ca.crt"), 0644);
        return 0;
}

TEST(tlsconfigdir_problems_fail)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "d/client.cert", "CERT"));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"h\"]\n"
                           "tlsconfigdir = [\"d\", \"missing\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_TRUE(x.r < 0);
        ASSERT_DIAG(&x.d, "bk.toml:2:17: error: registry.\"h\".tlsconfigdir[0]: 'client.cert' in "
                          "'d' (");
        ASSERT_DIAG(&x.d, "has no 'client.key' to go with it");
        ASSERT_DIAG(&x.d, "bk.toml:2:22: error: registry.\"h\".tlsconfigdir[1]: cannot copy "
                          "directory 'missing' (");
        ASSERT_DIAG(&x.d, "missing): No such file or directory");
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);
        return 0;
}

TEST(rewritten_file_reloads_and_points_at_the_copies)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_(kiln_config_freep) struct kiln_config *c = kiln_config_new();
        struct kiln_config_diags d = { 0 };
        _cleanup_free_ char *text = NULL, *p = NULL;
        const struct kiln_config_registry *reg;
        struct stat st;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "ca.pem", "CA"));
        ASSERT_OK(fx_write(&f, "k1.pem", "K1"));
        ASSERT_OK(fx_write(&f, "c1.pem", "C1"));
        ASSERT_OK(fx_write(&f, "tls/x.crt", "X"));
        /* Inline tables, escapes, literal and multi-line strings, dotted
         * keys, a key in another case: each path is replaced where it is. */
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "registry.\"a.example\".ca = ['ca.pem'] # dotted\n"
                           "[Registry.\"b.example\"]\n"
                           "CA = [\"\"\"\\\n   ca.pem\"\"\"]\n"
                           "keypair = [ { key = \"k\\u0031.pem\", cert = '''c1.pem''' }, {} ]\n"
                           "tlsconfigdir = [\"tls\"]\n"
                           "mirrors = [\"m.example\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        /* The loader's warnings come through. */
        ASSERT_DIAG(&x.d,
                    "bk.toml:3:1: warning: key 'CA' in [registry.\"b.example\"] is read as 'ca'");

        text = fx_read(&f, T "/buildkitd.toml");
        ASSERT_TRUE(text);
        ASSERT_TRUE(strstr(text, "# dotted\n[Registry.\"b.example\"]\nCA = [\""));
        ASSERT_OK(kiln_config_load_string(c, "rewritten", text, strlen(text), &d));
        kiln_config_diags_release(&d);

        reg = kiln_config_registry_find(c, "a.example");
        ASSERT_TRUE(reg && reg->n_ca == 1);
        p = fx_path(&f, T "/certs/a.example/ca.pem");
        ASSERT_STREQ(reg->ca[0], p);
        ASSERT_OK(stat(reg->ca[0], &st));

        reg = kiln_config_registry_find(c, "b.example");
        ASSERT_TRUE(reg && reg->n_ca == 1 && reg->n_keypairs == 2 && reg->n_tlsconfigdir == 1);
        free(p);
        p = fx_path(&f, T "/certs/b.example/ca.pem");
        ASSERT_STREQ(reg->ca[0], p);
        free(p);
        p = fx_path(&f, T "/certs/b.example/k1.pem");
        ASSERT_STREQ(reg->keypairs[0].key, p);
        free(p);
        p = fx_path(&f, T "/certs/b.example/c1.pem");
        ASSERT_STREQ(reg->keypairs[0].cert, p);
        ASSERT_TRUE(reg->keypairs[1].key == NULL && reg->keypairs[1].cert == NULL);
        free(p);
        p = fx_path(&f, T "/certs/b.example/tls");
        ASSERT_STREQ(reg->tlsconfigdir[0], p);
        ASSERT_STREQ(reg->mirrors[0], "m.example");
        ASSERT_OK(stat(reg->keypairs[0].key, &st));
        ASSERT_OK(stat(reg->keypairs[0].cert, &st));
        return 0;
}

TEST(a_key_set_twice_copies_only_the_one_that_counts)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *text = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "used.pem", "CA"));
        /* go-toml: the last of ca and CA wins; the other is never read. */
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "[registry.\"h\"]\n"
                           "ca = [\"gone.pem\"]\n"
                           "CA = [\"used.pem\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        text = fx_read(&f, T "/buildkitd.toml");
        ASSERT_TRUE(strstr(text, "ca = [\"gone.pem\"]\n"));
        ASSERT_TRUE(strstr(text, "/certs/h/used.pem\"]\n"));
        return 0;
}

TEST(invalid_config_fails_with_position_and_creates_nothing)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_(run_release) struct run y = { 0 };

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "bk.toml", "[registry.\"h\"]\nca = \"ca.pem\"\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_EQ_INT(x.r, -EINVAL);
        ASSERT_DIAG(&x.d, "bk.toml:2:6: error: invalid type for 'ca' in [registry.h]");
        ASSERT_TRUE(strstr(kiln_error_message(x.err), "bk.toml:2:6: error: invalid type"));
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);

        ASSERT_OK(fx_write(&f, "bad.toml", "a = \n"));
        y = install(&f, "bad.toml", T);
        ASSERT_EQ_INT(y.r, -EINVAL);
        ASSERT_DIAG(&y.d, "bad.toml:1:5: error: invalid TOML");
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);
        run_release(&y);
        y = install(&f, "nonexistent.toml", T);
        ASSERT_EQ_INT(y.r, -ENOENT);
        ASSERT_TRUE(strstr(kiln_error_message(y.err), "nonexistent.toml': No such file"));
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);
        return 0;
}

TEST(install_again_replaces_atomically)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_(run_release) struct run y = { 0 };
        _cleanup_free_ char *c = NULL, *ls = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "ca.pem", "ONE"));
        ASSERT_OK(fx_write(&f, "old.pem", "OLD"));
        ASSERT_OK(fx_write(&f, "bk.toml", "[registry.\"h\"]\nca = [\"ca.pem\", \"old.pem\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);

        ASSERT_OK(fx_write(&f, "ca.pem", "TWO"));
        ASSERT_OK(fx_write(&f, "bk.toml", "[registry.\"h\"]\nca = [\"ca.pem\"]\n"));
        /* What a crashed install would have left behind is cleaned up. */
        ASSERT_OK(fx_write(&f, "b/etc/.buildkit.new-abcdef/certs/h/ca.pem", "STALE"));
        y = install(&f, "bk.toml", T);
        ASSERT_OK(y.r);
        c = fx_read(&f, T "/certs/h/ca.pem");
        ASSERT_STREQ(c, "TWO");
        ls = fx_ls(&f, T "/certs/h");
        ASSERT_STREQ(ls, "ca.pem");
        free(ls);
        /* No staging or old tree left next to it. */
        ls = fx_ls(&f, "b/etc");
        ASSERT_STREQ(ls, "buildkit");
        return 0;
}

TEST(failure_leaves_the_previous_install_intact)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_(run_release) struct run y = { 0 };
        _cleanup_free_ char *before = NULL, *after = NULL, *c = NULL, *ls = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "ca.pem", "ONE"));
        ASSERT_OK(fx_write(&f, "bk.toml", "[registry.\"h\"]\nca = [\"ca.pem\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        before = fx_read(&f, T "/buildkitd.toml");

        ASSERT_OK(fx_write(&f, "ca.pem", "TWO"));
        ASSERT_OK(fx_write(&f, "bk.toml",
                           "# new\n[registry.\"h\"]\nca = [\"ca.pem\", \"no.pem\"]\n"));
        y = install(&f, "bk.toml", T);
        ASSERT_EQ_INT(y.r, -ENOENT);
        after = fx_read(&f, T "/buildkitd.toml");
        ASSERT_STREQ(after, before);
        c = fx_read(&f, T "/certs/h/ca.pem");
        ASSERT_STREQ(c, "ONE");
        ls = fx_ls(&f, "b/etc");
        ASSERT_STREQ(ls, "buildkit");
        return 0;
}

TEST(target_that_is_not_a_directory_is_left_alone)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *c = NULL, *ls = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, T, "A FILE"));
        ASSERT_OK(fx_write(&f, "bk.toml", "debug = true\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_EQ_INT(x.r, -ENOTDIR);
        c = fx_read(&f, T);
        ASSERT_STREQ(c, "A FILE");
        ls = fx_ls(&f, "b/etc");
        ASSERT_STREQ(ls, "buildkit");
        return 0;
}

TEST(config_without_registries_is_copied_as_is)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *c = NULL, *ls = NULL;
        static const char conf[] = "\xEF\xBB\xBF# crlf and a BOM\r\n"
                                   "debug = true\r\n"
                                   "[worker.oci]\r\n"
                                   "  max-parallelism = 4\r\n"
                                   "unknown-key = 1\r\n";

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "bk.toml", conf));
        x = install(&f, "bk.toml", T);
        ASSERT_OK(x.r);
        ASSERT_DIAG(&x.d, "bk.toml:5:1: warning: unknown key 'unknown-key'");
        c = fx_read(&f, T "/buildkitd.toml");
        ASSERT_STREQ(c, conf);
        ls = fx_ls(&f, T "/certs");
        ASSERT_STREQ(ls, "");
        return 0;
}

TEST(too_many_files_fail)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        char name[64];

        ASSERT_OK(fx_init(&f));
        for (unsigned i = 0; i <= KILN_CONFIG_INSTALL_MAX_FILES; i++) {
                _cleanup_free_ char *p = NULL;
                int fd;

                (void) snprintf(name, sizeof(name), "d/%u.crt", i);
                if (i == 0)
                        ASSERT_OK(fx_write(&f, name, "X"));
                p = fx_path(&f, "%s", name);
                fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                ASSERT_TRUE(fd >= 0);
                close(fd);
        }
        ASSERT_OK(fx_write(&f, "bk.toml", "[registry.\"h\"]\ntlsconfigdir = [\"d\"]\n"));
        x = install(&f, "bk.toml", T);
        ASSERT_EQ_INT(x.r, -EMFILE);
        ASSERT_DIAG(&x.d, "more than 1024 files to copy");
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);
        return 0;
}

TEST(install_as_names_the_final_place_of_a_staged_builder)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *conf = NULL, *staged = NULL, *final = NULL, *text = NULL, *want = NULL,
                            *from = NULL, *to = NULL, *ls = NULL;

        ASSERT_OK(fx_init(&f));
        ASSERT_OK(fx_write(&f, "ca.pem", "CA"));
        ASSERT_OK(fx_write(&f, "bk.toml", "[registry.\"h\"]\nca = [\"ca.pem\"]\n"));
        conf = fx_path(&f, "bk.toml");
        staged = fx_path(&f, "builders/.new-b/etc/buildkit");
        final = fx_path(&f, "builders/b/etc/buildkit");
        x.r = kiln_config_install_as(conf, staged, final, &x.d, &x.err);
        ASSERT_OK(x.r);
        /* Nothing at the final place yet; the staged copy names it. */
        ls = fx_ls(&f, "builders");
        ASSERT_STREQ(ls, ".new-b");
        text = fx_read(&f, "builders/.new-b/etc/buildkit/buildkitd.toml");
        want = kiln_xasprintf("[registry.\"h\"]\nca = [\"%s/certs/h/ca.pem\"]\n", final);
        ASSERT_STREQ(text, want);

        from = fx_path(&f, "builders/.new-b");
        to = fx_path(&f, "builders/b");
        ASSERT_OK(rename(from, to));
        free(text);
        text = fx_read(&f, "builders/b/etc/buildkit/certs/h/ca.pem");
        ASSERT_STREQ(text, "CA");
        return 0;
}

TEST(config_file_that_is_a_fifo_fails_at_once)
{
        _cleanup_(fx_release) struct fx f = { 0 };
        _cleanup_(run_release) struct run x = { 0 };
        _cleanup_free_ char *fifo = NULL;

        ASSERT_OK(fx_init(&f));
        fifo = fx_path(&f, "bk.toml");
        ASSERT_OK(mkfifo(fifo, 0600));
        /* Nobody writes to it: reading it would wait forever. */
        x = install(&f, "bk.toml", T);
        ASSERT_EQ_INT(x.r, -EINVAL);
        ASSERT_TRUE(strstr(kiln_error_message(x.err), "bk.toml': not a regular file"));
        ASSERT_DIAG(&x.d, "bk.toml': not a regular file");
        ASSERT_EQ_INT(fx_mode(&f, "b"), -1);
        return 0;
}
