/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"
#include "base/fs.h"
#include "exec/exec.h"
#include "kiln-test.h"

/* Containers with runc and crun on a busybox root file system. Root only. */

static const char *const runtimes[] = { "runc", "crun" };

struct env {
        char *dir;    /* temp dir holding everything */
        char *rootfs; /* dir/rootfs */
        char *state;  /* dir/state */
};

struct output {
        struct kiln_buf out;
        struct kiln_buf err;
};

static void on_output(void *userdata, int stream, const void *data, size_t n)
{
        struct output *o = userdata;
        (void) kiln_buf_append(stream == 1 ? &o->out : &o->err, data, n);
}

static void output_release(struct output *o)
{
        kiln_buf_release(&o->out);
        kiln_buf_release(&o->err);
}

static bool have_runtime(const char *name)
{
        static const char *const dirs[] = { "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                            "/usr/bin",        "/sbin",          "/bin" };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dirs[i], name);
                if (access(p, X_OK) == 0)
                        return true;
        }
        return false;
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
        _cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        char buf[65536];
        ssize_t n;

        if (in < 0 || out < 0)
                return -errno;
        while ((n = read(in, buf, sizeof(buf))) > 0)
                if (write(out, buf, (size_t) n) != n)
                        return -EIO;
        return n < 0 ? -errno : 0;
}

static int put(const char *root, const char *rel, const char *data)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", root, rel);
        return kiln_write_file_atomic(p, data, strlen(data), 0644);
}

static void env_release(struct env *e)
{
        if (e->dir) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                (void) kiln_rm_rf_at(AT_FDCWD, e->dir, NULL, &err);
        }
        free(e->dir);
        free(e->rootfs);
        free(e->state);
        *e = (struct env){ 0 };
}

static int env_init(struct env *e)
{
        static const char *const links[] = { "sh", "cat", "id", "echo", "sleep", "hostname", "ls" };
        *e = (struct env){ 0 };
        e->dir = kiln_xstrdup("/tmp/kiln-test-exec-run-XXXXXX");
        if (!mkdtemp(e->dir))
                return -errno;
        e->rootfs = kiln_xasprintf("%s/rootfs", e->dir);
        e->state = kiln_xasprintf("%s/state", e->dir);
        _cleanup_free_ char *bin = kiln_xasprintf("%s/bin", e->rootfs);
        _cleanup_free_ char *etc = kiln_xasprintf("%s/etc", e->rootfs);
        _cleanup_free_ char *bb = kiln_xasprintf("%s/bin/busybox", e->rootfs);
        if (mkdir(e->rootfs, 0755) < 0 || mkdir(bin, 0755) < 0 || mkdir(etc, 0755) < 0)
                return -errno;
        int r = copy_file("/bin/busybox", bb, 0755);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(links); i++) {
                _cleanup_free_ char *l = kiln_xasprintf("%s/bin/%s", e->rootfs, links[i]);
                if (symlink("busybox", l) < 0)
                        return -errno;
        }
        r = put(e->rootfs, "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n");
        if (r < 0)
                return r;
        return put(e->rootfs, "etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n");
}

/* Runs args in the busybox root with the given runtime. */
static int run(const struct env *e, const char *runtime, struct kiln_exec_process *p,
               struct output *o, const atomic_bool *cancel, int *code, struct kiln_error **err)
{
        struct kiln_exec_runtime rt = { .binary = runtime, .state_dir = e->state };
        p->rootfs = e->rootfs;
        *o = (struct output){ KILN_BUF_INIT(1 << 20), KILN_BUF_INIT(1 << 20) };
        return kiln_exec_run(&rt, p, on_output, o, cancel, code, err);
}

/* The state dir holds nothing but the runtime's (empty) root afterwards. */
static bool state_is_clean(const struct env *e)
{
        DIR *d = opendir(e->state);
        struct dirent *de;
        bool clean = true;
        if (!d)
                return errno == ENOENT;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") &&
                    !streq(de->d_name, "runtime"))
                        clean = false;
        closedir(d);
        _cleanup_free_ char *rt = kiln_xasprintf("%s/runtime", e->state);
        d = opendir(rt);
        if (!d)
                return clean;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        clean = false;
        closedir(d);
        return clean;
}

/* Whether any process runs with exactly this argument vector. */
static bool process_with_args(const char *const *args, size_t n)
{
        struct kiln_buf want = KILN_BUF_INIT(4096);
        for (size_t i = 0; i < n; i++)
                (void) kiln_buf_append(&want, args[i], strlen(args[i]) + 1);
        DIR *d = opendir("/proc");
        struct dirent *de;
        bool found = false;
        while (d && !found && (de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                _cleanup_free_ char *p = kiln_xasprintf("/proc/%s/cmdline", de->d_name);
                struct kiln_buf b = KILN_BUF_INIT(4096);
                if (kiln_read_file_at(AT_FDCWD, p, &b) >= 0)
                        found = b.len == want.len && memcmp(b.data, want.data, b.len) == 0;
                kiln_buf_release(&b);
        }
        if (d)
                closedir(d);
        kiln_buf_release(&want);
        return found;
}

#define REQUIRE_ROOT()                                               \
        do {                                                         \
                if (geteuid() != 0) {                                \
                        printf("# skipped: containers need root\n"); \
                        return KILN_TEST_SKIP;                       \
                }                                                    \
        } while (0)

#define FOR_EACH_RUNTIME(rt)                                                    \
        for (size_t _i = 0; _i < ELEMENTSOF(runtimes); _i++)                    \
                for (const char *rt = runtimes[_i]; rt; rt = NULL)              \
                        if (!have_runtime(rt))                                  \
                                printf("# %s not installed, not tested\n", rt); \
                        else

TEST(output_streams_and_exit_codes)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));

        FOR_EACH_RUNTIME(rt)
        {
                const char *args[] = { "/bin/sh", "-c", "echo out; echo err >&2; cat; exit 3" };
                struct kiln_exec_process p = { .args = args, .n_args = 3 };
                _cleanup_(output_release) struct output o;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int code = -1;
                int r = run(&e, rt, &p, &o, NULL, &code, &err);
                if (r < 0)
                        KILN_TEST_FAIL("%s: %s", rt, kiln_error_message(err));
                ASSERT_EQ_INT(code, 3);
                ASSERT_STREQ(o.out.data, "out\n");
                ASSERT_STREQ(o.err.data, "err\n");
                ASSERT_TRUE(state_is_clean(&e));
                /* the runtime's mount points for the bundle files are gone */
                static const char *const stubs[] = { "etc/hosts", "etc/resolv.conf",
                                                     "etc/hostname" };
                for (size_t i = 0; i < ELEMENTSOF(stubs); i++) {
                        _cleanup_free_ char *f = kiln_xasprintf("%s/%s", e.rootfs, stubs[i]);
                        if (access(f, F_OK) == 0)
                                KILN_TEST_FAIL("%s: stub '%s' left", rt, stubs[i]);
                }

                const char *ok[] = { "echo", "fine" };
                struct kiln_exec_process q = { .args = ok, .n_args = 2 };
                _cleanup_(output_release) struct output o2;
                ASSERT_OK(run(&e, rt, &q, &o2, NULL, &code, &err));
                ASSERT_EQ_INT(code, 0);
                ASSERT_STREQ(o2.out.data, "fine\n");
        }
        return 0;
}

TEST(user_cwd_hostname_and_env)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));

        FOR_EACH_RUNTIME(rt)
        {
                const char *args[] = { "sh", "-c",
                                       "id; pwd; hostname; cat /etc/hostname; echo $PATH $FOO; "
                                       "grep -c buildkitsandbox /etc/hosts" };
                const char *envv[] = { "FOO=bar" };
                struct kiln_exec_process p = { .args = args,
                                               .n_args = 3,
                                               .env = envv,
                                               .n_env = 1,
                                               .user = "app",
                                               .cwd = "/home/app/work" };
                _cleanup_(output_release) struct output o;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int code = -1;
                int r = run(&e, rt, &p, &o, NULL, &code, &err);
                if (r < 0)
                        KILN_TEST_FAIL("%s: %s", rt, kiln_error_message(err));
                if (code != 0)
                        KILN_TEST_FAIL("%s: exit %d: %s%s", rt, code, o.out.data, o.err.data);
                ASSERT_STREQ(o.out.data,
                             "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n"
                             "/home/app/work\n"
                             "buildkitsandbox\n"
                             "buildkitsandbox\n"
                             "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bar\n"
                             "1\n");
                struct stat st;
                _cleanup_free_ char *work = kiln_xasprintf("%s/home/app/work", e.rootfs);
                ASSERT_OK(stat(work, &st));
                ASSERT_EQ_INT(st.st_uid, 1000);
                ASSERT_EQ_INT(st.st_mode & 07777, 0755);
                ASSERT_TRUE(state_is_clean(&e));
        }
        return 0;
}

TEST(network_none_has_only_lo)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));

        FOR_EACH_RUNTIME(rt)
        {
                const char *args[] = { "cat", "/proc/net/dev" };
                struct kiln_exec_process p = { .args = args, .n_args = 2 };
                _cleanup_(output_release) struct output o;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int code = -1;
                int r = run(&e, rt, &p, &o, NULL, &code, &err);
                if (r < 0)
                        KILN_TEST_FAIL("%s: %s", rt, kiln_error_message(err));
                ASSERT_EQ_INT(code, 0);
                size_t ifaces = 0;
                for (const char *s = o.out.data; (s = strchr(s, ':')); s++)
                        ifaces++;
                ASSERT_EQ_INT(ifaces, 1);
                ASSERT_TRUE(strstr(o.out.data, "lo:"));
        }
        return 0;
}

TEST(unknown_user_fails_before_starting)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));

        const char *args[] = { "id" };
        struct kiln_exec_process p = { .args = args, .n_args = 1, .user = "nobody" };
        _cleanup_(output_release) struct output o;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int code = -1;
        ASSERT_EQ_INT(run(&e, "runc", &p, &o, NULL, &code, &err), -ENOENT);
        ASSERT_STREQ(kiln_error_message(err),
                     "unable to find user nobody: no matching entries in passwd file");
        ASSERT_TRUE(state_is_clean(&e));

        /* a missing command is the runtime's error, with its exit code */
        const char *missing[] = { "/bin/nothere" };
        struct kiln_exec_process q = { .args = missing, .n_args = 1 };
        _cleanup_(output_release) struct output o2;
        ASSERT_OK(run(&e, "runc", &q, &o2, NULL, &code, &err));
        ASSERT_TRUE(code != 0);
        ASSERT_TRUE(o2.err.len > 0);
        ASSERT_TRUE(state_is_clean(&e));
        return 0;
}

struct canceller {
        atomic_bool flag;
        int64_t set_at_ms;
};

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *cancel_later(void *arg)
{
        struct canceller *c = arg;
        struct timespec ts = { 0, 700 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        c->set_at_ms = mono_ms();
        atomic_store(&c->flag, true);
        return NULL;
}

TEST(cancel_kills_and_cleans_up)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));

        FOR_EACH_RUNTIME(rt)
        {
                /* A duration no other process on the machine sleeps for. */
                _cleanup_free_ char *secs = kiln_xasprintf("100.%d", (int) getpid());
                _cleanup_free_ char *cmd = kiln_xasprintf("echo started; exec sleep %s", secs);
                const char *shargs[] = { "sh", "-c", cmd, "kiln-cancel-test" };
                struct kiln_exec_process p = { .args = shargs, .n_args = 4 };
                struct canceller c = { .flag = false };
                pthread_t t;
                ASSERT_EQ_INT(pthread_create(&t, NULL, cancel_later, &c), 0);
                _cleanup_(output_release) struct output o;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int code = -1;
                int r = run(&e, rt, &p, &o, &c.flag, &code, &err);
                int64_t done = mono_ms();
                pthread_join(t, NULL);
                if (r != -ECANCELED)
                        KILN_TEST_FAIL("%s: %d %s (out %s)", rt, r, kiln_error_message(err),
                                       o.out.data);
                ASSERT_STREQ(o.out.data, "started\n");
                if (done - c.set_at_ms > 2000)
                        KILN_TEST_FAIL("%s: cancel took %lld ms", rt,
                                       (long long) (done - c.set_at_ms));
                const char *sleeping[] = { "sleep", secs };
                ASSERT_TRUE(!process_with_args(sleeping, 2));
                ASSERT_TRUE(state_is_clean(&e));
        }
        return 0;
}

TEST(cancel_before_start)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));
        atomic_bool flag = true;
        const char *args[] = { "id" };
        struct kiln_exec_process p = { .args = args, .n_args = 1 };
        _cleanup_(output_release) struct output o;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int code = -1;
        ASSERT_EQ_INT(run(&e, "runc", &p, &o, &flag, &code, &err), -ECANCELED);
        ASSERT_TRUE(state_is_clean(&e));
        return 0;
}

TEST(hosts_resolv_conf_and_mounts)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));
        _cleanup_free_ char *resolv = kiln_xasprintf("%s/resolv.conf", e.dir);
        static const char rc[] = "nameserver 127.0.0.1\nnameserver 10.9.9.9\nsearch lan\n";
        ASSERT_OK(kiln_write_file_atomic(resolv, rc, strlen(rc), 0644));
        _cleanup_free_ char *shared = kiln_xasprintf("%s/shared", e.dir);
        ASSERT_OK(mkdir(shared, 0755));
        ASSERT_OK(put(e.dir, "shared/in", "from host\n"));

        FOR_EACH_RUNTIME(rt)
        {
                const char *args[] = { "sh", "-c",
                                       "cat /etc/resolv.conf; grep db /etc/hosts; hostname; "
                                       "cat /mnt/in; echo x > /mnt/new || echo ro; "
                                       "echo t > /scratch/f && cat /scratch/f" };
                const struct kiln_exec_host hosts[] = { { "db", "10.0.0.5" } };
                const struct kiln_exec_mount mounts[] = {
                        { .type = "bind", .source = shared, .target = "/mnt", .readonly = true },
                        { .type = "tmpfs", .target = "/scratch", .tmpfs_size = 1 << 20 },
                };
                struct kiln_exec_process p = { .args = args,
                                               .n_args = 3,
                                               .hostname = "box",
                                               .extra_hosts = hosts,
                                               .n_extra_hosts = 1,
                                               .resolv_conf = resolv,
                                               .mounts = mounts,
                                               .n_mounts = 2 };
                _cleanup_(output_release) struct output o;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int code = -1;
                int fds = kiln_test_count_fds();
                int r = run(&e, rt, &p, &o, NULL, &code, &err);
                if (r < 0)
                        KILN_TEST_FAIL("%s: %s", rt, kiln_error_message(err));
                if (code != 0)
                        KILN_TEST_FAIL("%s: exit %d: %s%s", rt, code, o.out.data, o.err.data);
                ASSERT_STREQ(o.out.data, "nameserver 10.9.9.9\nsearch lan\n"
                                         "10.0.0.5\tdb\n"
                                         "box\n"
                                         "from host\n"
                                         "ro\n"
                                         "t\n");
                ASSERT_EQ_INT(kiln_test_count_fds(), fds); /* nothing leaked */
                _cleanup_free_ char *newf = kiln_xasprintf("%s/new", shared);
                ASSERT_TRUE(access(newf, F_OK) < 0);
                ASSERT_TRUE(state_is_clean(&e));
        }
        return 0;
}

struct parallel_run {
        const struct env *e;
        const char *runtime;
        int index;
        int r;
        int code;
        char out[32];
};

static void *parallel_one(void *arg)
{
        struct parallel_run *pr = arg;
        _cleanup_free_ char *word = kiln_xasprintf("run%d", pr->index);
        const char *args[] = { "echo", word };
        struct kiln_exec_process p = { .args = args, .n_args = 2 };
        struct output o;
        struct kiln_error *err = NULL;
        pr->r = run(pr->e, pr->runtime, &p, &o, NULL, &pr->code, &err);
        snprintf(pr->out, sizeof(pr->out), "%s", o.out.data ? o.out.data : "");
        output_release(&o);
        kiln_error_free(err);
        return NULL;
}

TEST(parallel_runs_share_the_state_dir)
{
        REQUIRE_ROOT();
        _cleanup_(env_release) struct env e = { 0 };
        ASSERT_OK(env_init(&e));
        /* The four share one root here (kilnd gives every container its
         * own snapshot): the mount points a runtime makes for /etc/hosts,
         * /etc/hostname and /etc/resolv.conf, and removes after the step,
         * must already be there, or one run removes them under another. */
        ASSERT_OK(put(e.rootfs, "etc/hosts", ""));
        ASSERT_OK(put(e.rootfs, "etc/hostname", ""));
        ASSERT_OK(put(e.rootfs, "etc/resolv.conf", ""));

        FOR_EACH_RUNTIME(rt)
        {
                struct parallel_run runs[4];
                pthread_t t[4];
                for (int i = 0; i < 4; i++) {
                        runs[i] = (struct parallel_run){ .e = &e, .runtime = rt, .index = i };
                        ASSERT_EQ_INT(pthread_create(&t[i], NULL, parallel_one, &runs[i]), 0);
                }
                for (int i = 0; i < 4; i++)
                        pthread_join(t[i], NULL);
                for (int i = 0; i < 4; i++) {
                        char want[16];
                        snprintf(want, sizeof(want), "run%d\n", i);
                        ASSERT_OK(runs[i].r);
                        ASSERT_EQ_INT(runs[i].code, 0);
                        ASSERT_STREQ(runs[i].out, want);
                }
                ASSERT_TRUE(state_is_clean(&e));
        }
        return 0;
}
