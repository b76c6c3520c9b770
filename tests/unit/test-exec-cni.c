/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CNI namespaces with the real plugins of containernetworking-plugins. The
 * test process first moves into network and mount namespaces of its own,
 * so the bridge, the veths and the iptables rules the plugins make never
 * touch the machine's network; IPAM leases go to a temporary dataDir.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/process.h"
#include "exec/cni.h"
#include "kiln-test.h"

#define PLUGINS "/usr/lib/cni"

static int isolate(void)
{
        static int done;

        if (geteuid() != 0) {
                printf("# needs root\n");
                return KILN_TEST_SKIP;
        }
        if (access(PLUGINS "/bridge", X_OK) < 0) {
                printf("# needs containernetworking-plugins in " PLUGINS "\n");
                return KILN_TEST_SKIP;
        }
        if (!done) {
                if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0 ||
                    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                        printf("# unshare: %s\n", strerror(errno));
                        return -1;
                }
                done = 1;
        }
        return 0;
}

struct fixture {
        char *dir;
        char *config;
        char *state;
        char *leases;
};

static void fixture_release(struct fixture *f)
{
        if (f->dir)
                (void) kiln_rm_rf_at(AT_FDCWD, f->dir, NULL, NULL);
        free(f->dir);
        free(f->config);
        free(f->state);
        free(f->leases);
}

/* A conflist: a bridge of its own per subnet (10.99.N.0/24 -> ktN), with
 * host-local and firewall. */
static int fixture_init(struct fixture *f, const char *subnet)
{
        char tmpl[] = "/tmp/kiln-cni-XXXXXX";
        _cleanup_free_ char *text = NULL;

        if (!mkdtemp(tmpl))
                return -errno;
        f->dir = kiln_xstrdup(tmpl);
        f->config = kiln_xasprintf("%s/net.conflist", f->dir);
        f->state = kiln_xasprintf("%s/state", f->dir);
        f->leases = kiln_xasprintf("%s/leases", f->dir);
        text = kiln_xasprintf(
                "{\"cniVersion\":\"1.0.0\",\"name\":\"kilntest\",\"plugins\":["
                "{\"type\":\"bridge\",\"bridge\":\"kt%c\",\"isGateway\":true,\"ipMasq\":true,"
                "\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"%s\","
                "\"ranges\":[[{\"subnet\":\"%s\"}]]}},"
                "{\"type\":\"firewall\"}]}",
                subnet[6], f->leases, subnet);
        return kiln_write_file_replace(f->config, text, strlen(text), 0644);
}

static int open_cni(const struct fixture *f, unsigned pool, struct kiln_cni **ret)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_cni_options o = {
                .config_path = f->config,
                .binary_dir = "/nonexistent:" PLUGINS,
                .state_dir = f->state,
                .pool_size = pool,
        };
        int r = kiln_cni_new(&o, ret, &e);

        if (r < 0)
                printf("# %s\n", kiln_error_message(e));
        return r;
}

/* Entries of dir, "." and ".." and "lock" files aside. */
static int count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && !streq(de->d_name, "lock"))
                        n++;
        closedir(d);
        return n;
}

/* `ip -4 addr` inside the namespace, as a RUN step would see it. */
static char *addresses(const char *ns_path)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_buf out = KILN_BUF_INIT(1 << 16);
        _cleanup_free_ char *arg = kiln_xasprintf("--net=%s", ns_path);
        char *argv[] = { (char *) "nsenter", arg, (char *) "ip", (char *) "-4",
                         (char *) "addr",    NULL };
        struct kiln_spawn s = {
                .program = "nsenter", .argv = argv, .out = &out, .timeout_ms = 10000
        };

        if (kiln_spawn_run(&s, &e) != 0) {
                kiln_buf_release(&out);
                return NULL;
        }
        return kiln_buf_steal(&out);
}

/* Two steps get two namespaces with different addresses of the subnet, on
 * eth0 beside lo; discarding them releases the leases and the files. */
TEST(two_namespaces_two_addresses)
{
        _cleanup_(fixture_release) struct fixture f = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_cni *c = NULL;
        struct kiln_cni_ns *a = NULL, *b = NULL;
        _cleanup_free_ char *addr = NULL;
        int r = isolate();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, "10.99.0.0/24"));
        ASSERT_OK(open_cni(&f, 0, &c));
        ASSERT_OK(kiln_cni_get(c, &a, &e));
        ASSERT_OK(kiln_cni_get(c, &b, &e));
        ASSERT_TRUE(a->ip && b->ip);
        ASSERT_TRUE(startswith(a->ip, "10.99.0.") && startswith(b->ip, "10.99.0."));
        ASSERT_TRUE(!streq(a->ip, b->ip));
        addr = addresses(a->path);
        ASSERT_TRUE(addr);
        ASSERT_TRUE(strstr(addr, "127.0.0.1") && strstr(addr, "eth0"));
        *strchr(a->ip, '/') = '\0';
        ASSERT_TRUE(strstr(addr, a->ip));
        ASSERT_EQ_INT(count_entries(f.state), 4); /* two files, two results */
        ASSERT_OK(kiln_cni_discard(c, a, &e));
        ASSERT_OK(kiln_cni_discard(c, b, &e));
        ASSERT_EQ_INT(count_entries(f.state), 0);
        /* host-local keeps a lease file per address and last_reserved_ip. */
        _cleanup_free_ char *net = kiln_xasprintf("%s/kilntest", f.leases);
        ASSERT_TRUE(count_entries(net) <= 1);
        kiln_cni_free(c);
        return 0;
}

/* The pool fills in the background; a warm get makes no new namespace, and
 * a namespace put back is handed out again. */
TEST(pool_reuses)
{
        _cleanup_(fixture_release) struct fixture f = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_cni *c = NULL;
        struct kiln_cni_ns *a = NULL, *b = NULL;
        struct kiln_cni_stats st;
        char *id;
        int r = isolate();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, "10.99.1.0/24"));
        ASSERT_OK(open_cni(&f, 2, &c));
        for (int i = 0; i < 1000; i++) {
                kiln_cni_get_stats(c, &st);
                if (st.idle == 2)
                        break;
                (void) nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
        }
        ASSERT_EQ_INT((int) st.idle, 2);
        ASSERT_OK(kiln_cni_get(c, &a, &e));
        id = kiln_xstrdup(a->id);
        kiln_cni_put(c, a);
        ASSERT_OK(kiln_cni_get(c, &b, &e));
        ASSERT_STREQ(b->id, id);
        free(id);
        kiln_cni_get_stats(c, &st);
        ASSERT_EQ_INT((int) st.created, 2);
        ASSERT_EQ_INT((int) st.in_use, 1);
        kiln_cni_put(c, b);
        kiln_cni_free(c);
        /* Stopping releases every pooled namespace. */
        ASSERT_EQ_INT(count_entries(f.state), 0);
        return 0;
}

/* What a killed daemon left (namespace files, results, leases) is released
 * by the next one at start. */
TEST(leftovers_released)
{
        _cleanup_(fixture_release) struct fixture f = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_cni *c = NULL, *c2 = NULL;
        struct kiln_cni_ns *a = NULL;
        _cleanup_free_ char *net = NULL;
        int r = isolate();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, "10.99.2.0/24"));
        ASSERT_OK(open_cni(&f, 0, &c));
        ASSERT_OK(kiln_cni_get(c, &a, &e));
        net = kiln_xasprintf("%s/kilntest", f.leases);
        ASSERT_TRUE(count_entries(net) >= 1);
        /* A crash: the daemon's mount namespace, and with it the mount, is
         * gone; the files stay. */
        ASSERT_OK(umount2(a->path, MNT_DETACH));
        ASSERT_OK(open_cni(&f, 0, &c2));
        ASSERT_EQ_INT(count_entries(f.state), 0);
        ASSERT_TRUE(count_entries(net) <= 1); /* only last_reserved_ip */
        kiln_cni_free(c2);
        ASSERT_OK(kiln_cni_discard(c, a, &e)); /* a second DEL is harmless */
        kiln_cni_free(c);
        return 0;
}

/* Bad configurations fail with the file and the cause; a plugin's own
 * error reaches the caller with its name, and leaves nothing behind. */
TEST(errors)
{
        _cleanup_(fixture_release) struct fixture f = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *e1 = NULL, *e2 = NULL, *e3 = NULL;
        struct kiln_cni *c = NULL;
        struct kiln_cni_ns *a = NULL;
        struct kiln_cni_options o = { .binary_dir = PLUGINS };
        int r = isolate();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, "10.99.3.0/33"));
        o.state_dir = f.state;
        ASSERT_OK(open_cni(&f, 0, &c));
        ASSERT_TRUE(kiln_cni_get(c, &a, &e1) < 0);
        ASSERT_TRUE(strstr(kiln_error_message(e1), "plugin type=\"bridge\" name=\"kilntest\" "
                                                   "failed (add):"));
        ASSERT_TRUE(strstr(kiln_error_message(e1), "10.99.3.0/33"));
        ASSERT_EQ_INT(count_entries(f.state), 0);
        kiln_cni_free(c);

        _cleanup_free_ char *bad = kiln_xasprintf("%s/bad.json", f.dir);
        const char *truncated = "{\"cniVersion\":\"1.0.0\",\n\"name\":";
        const char *unknown = "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"nosuch\"}";

        ASSERT_OK(kiln_write_file_replace(bad, truncated, strlen(truncated), 0644));
        o.config_path = bad;
        ASSERT_TRUE(kiln_cni_new(&o, &c, &e2) < 0);
        ASSERT_TRUE(strstr(kiln_error_message(e2), "bad.json':2:"));

        ASSERT_OK(kiln_write_file_replace(bad, unknown, strlen(unknown), 0644));
        ASSERT_TRUE(kiln_cni_new(&o, &c, &e3) < 0);
        ASSERT_TRUE(strstr(kiln_error_message(e3), "plugin \"nosuch\" not found"));
        return 0;
}
