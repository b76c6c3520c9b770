/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/macro.h"
#include "base/sha256.h"
#include "content/content.h"
#include "kiln-test.h"
#include "snapshot/snapshot.h"
#include "source/http.h"
#include "source/image.h"

#define LAYER_TAR "application/vnd.oci.image.layer.v1.tar"

/* Every test that mounts runs as root in a private mount namespace (/
 * made rslave), so a failing test never leaves a mount on the host. */
static int setup(void)
{
        static bool done;
        if (geteuid() != 0) {
                printf("# image unpack tests need root (mounts)\n");
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

struct fixture {
        char root[64];
        struct kiln_content_store *store;
        struct kiln_snapshot_store *snaps;
        struct kiln_source_image_unpacker *u;
};

static int fixture_init(struct fixture *f, enum kiln_snapshot_driver driver)
{
        snprintf(f->root, sizeof(f->root), "/var/tmp/kiln-test-image-XXXXXX");
        if (!mkdtemp(f->root))
                return -errno;
        struct kiln_error *err = NULL;
        _cleanup_free_ char *snapdir = kiln_xasprintf("%s/snapshots", f->root);
        _cleanup_free_ char *work = kiln_xasprintf("%s/exec", f->root);
        int r = kiln_content_store_open(f->root, &f->store, &err);
        if (r >= 0)
                r = kiln_snapshot_store_open(snapdir, driver, &f->snaps, &err);
        if (r >= 0)
                r = kiln_source_image_unpacker_new(f->store, f->snaps, work, &f->u, &err);
        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        return r;
}

static bool mountinfo_has(const char *s)
{
        struct kiln_buf b = KILN_BUF_INIT(64u << 20);
        bool has = kiln_read_file_at(AT_FDCWD, "/proc/self/mountinfo", &b) < 0 ||
                   strstr(b.data, s) != NULL;
        kiln_buf_release(&b);
        return has;
}

static void fixture_done(struct fixture *f)
{
        f->u = kiln_source_image_unpacker_free(f->u);
        f->snaps = kiln_snapshot_store_free(f->snaps);
        f->store = kiln_content_store_free(f->store);
        if (f->root[0])
                (void) kiln_rm_rf_at(AT_FDCWD, f->root, NULL, NULL);
}

struct item {
        const char *path;
        const char *data; /* NULL: a directory */
};

/* An uncompressed layer tar in the store; *diff_id = its digest. */
static int put_layer(struct fixture *f, const struct item *items, size_t n,
                     char digest[KILN_CONTENT_DIGEST_SIZE], size_t *size)
{
        size_t cap = 1 << 20, used = 0;
        _cleanup_free_ char *buf = kiln_xmalloc(cap);
        struct archive *a = archive_write_new();
        archive_write_set_format_pax_restricted(a);
        archive_write_open_memory(a, buf, cap, &used);
        for (size_t i = 0; i < n; i++) {
                struct archive_entry *e = archive_entry_new();
                archive_entry_set_pathname(e, items[i].path);
                archive_entry_set_filetype(e, items[i].data ? AE_IFREG : AE_IFDIR);
                archive_entry_set_perm(e, items[i].data ? 0644 : 0755);
                archive_entry_set_size(e, items[i].data ? (la_int64_t) strlen(items[i].data) : 0);
                archive_write_header(a, e);
                if (items[i].data)
                        archive_write_data(a, items[i].data, strlen(items[i].data));
                archive_entry_free(e);
        }
        archive_write_close(a);
        archive_write_free(a);
        struct kiln_error *err = NULL;
        int r = kiln_content_store_put(f->store, NULL, buf, used, digest, &err);
        kiln_error_free(err);
        *size = used;
        return r;
}

/* An image (config + manifest) of the given layers; diff ids are the layer
 * digests (uncompressed), unless bad_diff_id. */
static int put_image(struct fixture *f, char layers[][KILN_CONTENT_DIGEST_SIZE],
                     const size_t *sizes, size_t n, bool bad_diff_id,
                     char manifest[KILN_CONTENT_DIGEST_SIZE])
{
        struct kiln_buf cfg = KILN_BUF_INIT(1 << 20), man = KILN_BUF_INIT(1 << 20);
        kiln_buf_puts(&cfg, "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
                            "\"layers\",\"diff_ids\":[");
        for (size_t i = 0; i < n; i++)
                kiln_buf_printf(
                        &cfg, "%s\"%s\"", i ? "," : "",
                        bad_diff_id && i == n - 1
                                ? "sha256:"
                                  "0000000000000000000000000000000000000000000000000000000000000000"
                                : layers[i]);
        kiln_buf_puts(&cfg, "]}}");
        char cfg_digest[KILN_CONTENT_DIGEST_SIZE];
        struct kiln_error *err = NULL;
        int r = kiln_content_store_put(f->store, NULL, cfg.data, cfg.len, cfg_digest, &err);
        kiln_buf_printf(&man,
                        "{\"schemaVersion\":2,\"mediaType\":\"application/"
                        "vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/"
                        "vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
                        "\"layers\":[",
                        cfg_digest, cfg.len);
        for (size_t i = 0; i < n; i++)
                kiln_buf_printf(&man, "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu}",
                                i ? "," : "", LAYER_TAR, layers[i], sizes[i]);
        kiln_buf_puts(&man, "]}");
        if (r >= 0)
                r = kiln_content_store_put(f->store, NULL, man.data, man.len, manifest, &err);
        if (r < 0)
                printf("# put image: %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_buf_release(&cfg);
        kiln_buf_release(&man);
        return r;
}

struct counter {
        atomic_int extracting_started;
        atomic_int extracting_done;
};

static void count_status(void *userdata, const struct kiln_source_status *st)
{
        struct counter *c = userdata;
        if (strncmp(st->id, "extracting sha256:", 18) != 0)
                return;
        if (st->completed_ns)
                atomic_fetch_add(&c->extracting_done, 1);
        else
                atomic_fetch_add(&c->extracting_started, 1);
}

static char *read_view(struct fixture *f, const char *id, const char *path)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/view", f->root);
        (void) mkdir(dir, 0700);
        struct kiln_error *err = NULL;
        if (kiln_snapshot_mount_view(f->snaps, id, dir, &err) < 0) {
                printf("# view: %s\n", kiln_error_message(err));
                kiln_error_free(err);
                return NULL;
        }
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, path);
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        char *data = kiln_read_file_at(AT_FDCWD, p, &b) < 0 ? NULL : kiln_buf_steal(&b);
        kiln_buf_release(&b);
        (void) kiln_snapshot_unmount(dir, &err);
        kiln_error_free(err);
        return data;
}

TEST(chain_ids)
{
        const char *diff[] = {
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                "sha256:2222222222222222222222222222222222222222222222222222222222222222",
        };
        char **chain = NULL;
        struct kiln_error *err = NULL;
        ASSERT_OK(kiln_source_image_chain_ids(diff, 2, &chain, &err));
        char hex[KILN_SHA256_HEX_LEN + 1];
        _cleanup_free_ char *s = kiln_xasprintf("%s %s", diff[0], diff[1]);
        kiln_sha256_hex(s, strlen(s), hex);
        _cleanup_free_ char *want = kiln_xasprintf("sha256:%s", hex);
        int rc = streq(chain[0], diff[0]) && streq(chain[1], want) && !chain[2] ? 0 : -1;
        for (size_t i = 0; chain[i]; i++)
                free(chain[i]);
        free(chain);
        const char *bad[] = { "md5:abc" };
        if (kiln_source_image_chain_ids(bad, 1, &chain, &err) != -EINVAL)
                rc = -1;
        kiln_error_free(err);
        return rc;
}

struct unpack_arg {
        struct fixture *f;
        const char *manifest;
        struct kiln_source_image_options *o;
        char *id;
        int r;
};

static void *unpack_thread(void *p)
{
        struct unpack_arg *a = p;
        struct kiln_error *err = NULL;
        a->r = kiln_source_image_unpack(a->f->u, a->manifest, a->o, &a->id, &err);
        if (a->r < 0)
                printf("# unpack: %s\n", kiln_error_message(err));
        kiln_error_free(err);
        return NULL;
}

static int unpack_layers(enum kiln_snapshot_driver driver)
{
        int r;
        int fds = kiln_test_count_fds();
        struct fixture f = { 0 };
        int rc = -1;
        struct kiln_error *err = NULL;
        char *id = NULL, *id2 = NULL, *id3 = NULL;
        if (fixture_init(&f, driver) < 0)
                goto out;
        printf("# driver %s\n", kiln_snapshot_store_driver_name(f.snaps));

        char layers[3][KILN_CONTENT_DIGEST_SIZE];
        size_t sizes[3];
        struct item l0[] = { { "etc", NULL }, { "etc/os", "base" }, { "gone", "x" } };
        struct item l1[] = { { ".wh.gone", "" }, { "etc/app", "app" } };
        struct item l2[] = { { "extra", "3" } };
        if (put_layer(&f, l0, ELEMENTSOF(l0), layers[0], &sizes[0]) < 0 ||
            put_layer(&f, l1, ELEMENTSOF(l1), layers[1], &sizes[1]) < 0 ||
            put_layer(&f, l2, ELEMENTSOF(l2), layers[2], &sizes[2]) < 0)
                goto out;
        char m2[KILN_CONTENT_DIGEST_SIZE], m3[KILN_CONTENT_DIGEST_SIZE],
                mbad[KILN_CONTENT_DIGEST_SIZE];
        if (put_image(&f, layers, sizes, 2, false, m2) < 0 ||
            put_image(&f, layers, sizes, 3, false, m3) < 0 ||
            put_image(&f, layers, sizes, 3, true, mbad) < 0)
                goto out;

        struct counter cnt = { 0 };
        struct kiln_source_image_options o = { .on_status = count_status, .userdata = &cnt };
        r = kiln_source_image_unpack(f.u, m2, &o, &id, &err);
        if (r < 0) {
                printf("# unpack: %s\n", kiln_error_message(err));
                goto out;
        }
        if (atomic_load(&cnt.extracting_started) != 2 || atomic_load(&cnt.extracting_done) != 2) {
                printf("# extracting statuses: %d started, %d done\n",
                       atomic_load(&cnt.extracting_started), atomic_load(&cnt.extracting_done));
                goto out;
        }
        {
                _cleanup_free_ char *os = read_view(&f, id, "etc/os");
                _cleanup_free_ char *app = read_view(&f, id, "etc/app");
                _cleanup_free_ char *gone = read_view(&f, id, "gone");
                if (!os || !app || gone || strcmp(os, "base") || strcmp(app, "app")) {
                        printf("# unpacked tree is wrong\n");
                        goto out;
                }
        }
        {
                /* Snapshots are named by chain ID. */
                const char *diffs[] = { layers[0], layers[1] };
                char **chain = NULL;
                if (kiln_source_image_chain_ids(diffs, 2, &chain, &err) < 0)
                        goto out;
                _cleanup_free_ char *n0 = kiln_xasprintf("layer:%s", chain[0]);
                _cleanup_free_ char *n1 = kiln_xasprintf("layer:%s", chain[1]);
                free(chain[0]);
                free(chain[1]);
                free(chain);
                _cleanup_free_ char *s0 = NULL, *s1 = NULL;
                if (kiln_snapshot_lookup(f.snaps, n0, &s0) != 1 ||
                    kiln_snapshot_lookup(f.snaps, n1, &s1) != 1 || strcmp(s1, id)) {
                        printf("# chain snapshots not named\n");
                        goto out;
                }
        }

        /* Again: nothing extracted, the same snapshot. */
        memset(&cnt, 0, sizeof(cnt));
        r = kiln_source_image_unpack(f.u, m2, &o, &id2, &err);
        if (r < 0 || strcmp(id, id2) || atomic_load(&cnt.extracting_started) != 0) {
                printf("# second unpack: %d %s\n", r, r < 0 ? kiln_error_message(err) : "");
                goto out;
        }

        /* A corrupt layer (diff id mismatch) fails and leaves nothing. */
        r = kiln_source_image_unpack(f.u, mbad, &o, &id3, &err);
        if (r >= 0 || id3) {
                printf("# bad diff id accepted\n");
                goto out;
        }
        kiln_error_free(TAKE_PTR(err));
        {
                _cleanup_free_ char *exec = kiln_xasprintf("%s/exec/unpack-", f.root);
                if (mountinfo_has(exec)) {
                        printf("# a mount is left\n");
                        goto out;
                }
        }

        /* Cancelled before it starts. */
        atomic_bool cancel = true;
        struct kiln_source_image_options oc = { .cancel = &cancel };
        r = kiln_source_image_unpack(f.u, m3, &oc, &id3, &err);
        if (r != -ECANCELED) {
                printf("# cancelled unpack: %d\n", r);
                goto out;
        }
        kiln_error_free(TAKE_PTR(err));

        /* Four concurrent unpacks of the three-layer image extract the new
         * layer once and agree on the snapshot. */
        memset(&cnt, 0, sizeof(cnt));
        struct unpack_arg args[4];
        pthread_t th[4];
        for (size_t i = 0; i < 4; i++) {
                args[i] = (struct unpack_arg){ .f = &f, .manifest = m3, .o = &o };
                pthread_create(&th[i], NULL, unpack_thread, &args[i]);
        }
        bool same = true;
        for (size_t i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                if (args[i].r < 0 || !args[i].id || strcmp(args[i].id, args[0].id ?: ""))
                        same = false;
        }
        for (size_t i = 0; i < 4; i++)
                free(args[i].id);
        if (!same || atomic_load(&cnt.extracting_done) != 1) {
                printf("# concurrent unpacks: same %d, extracted %d\n", same,
                       atomic_load(&cnt.extracting_done));
                goto out;
        }
        rc = 0;
out:
        if (rc < 0 && err)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        free(id);
        free(id2);
        free(id3);
        fixture_done(&f);
        if (rc == 0 && kiln_test_count_fds() != fds) {
                printf("# %d fds before, %d after\n", fds, kiln_test_count_fds());
                rc = -1;
        }
        return rc;
}

TEST(unpack_layers_native)
{
        int r = setup();
        return r != 0 ? r : unpack_layers(KILN_SNAPSHOT_DRIVER_NATIVE);
}

TEST(unpack_layers_auto)
{
        int r = setup();
        return r != 0 ? r : unpack_layers(KILN_SNAPSHOT_DRIVER_AUTO);
}

TEST(unpack_no_layers)
{
        int r = setup();
        if (r != 0)
                return r;
        struct fixture f = { 0 };
        int rc = -1;
        char *id = (char *) "unset";
        struct kiln_error *err = NULL;
        char m[KILN_CONTENT_DIGEST_SIZE];
        if (fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO) < 0 ||
            put_image(&f, NULL, NULL, 0, false, m) < 0)
                goto out;
        r = kiln_source_image_unpack(f.u, m, NULL, &id, &err);
        if (r < 0 || id != NULL) {
                printf("# %d %s\n", r, kiln_error_message(err));
                goto out;
        }
        rc = 0;
out:
        kiln_error_free(err);
        fixture_done(&f);
        return rc;
}

/* ---- ADD <url> ---- */

struct server {
        int fd;
        int port;
        atomic_bool stop;
        pthread_t thread;
};

static void serve_one(int c)
{
        char req[4096];
        size_t n = 0;
        while (n < sizeof(req) - 1) {
                ssize_t r = read(c, req + n, sizeof(req) - 1 - n);
                if (r <= 0)
                        return;
                n += (size_t) r;
                req[n] = 0;
                if (strstr(req, "\r\n\r\n"))
                        break;
        }
        char path[256] = "";
        if (sscanf(req, "GET %255s ", path) != 1)
                return;
        const char *status = "200 OK", *extra = "", *body = "hello http";
        if (streq(path, "/redirect")) {
                status = "302 Found";
                extra = "Location: /file.txt\r\n";
                body = "";
        } else if (streq(path, "/disp")) {
                extra = "Content-Disposition: attachment; filename=\"named.bin\"\r\n";
        } else if (streq(path, "/missing")) {
                status = "404 Not Found";
                body = "nope";
        } else if (streq(path, "/loop")) {
                status = "302 Found";
                extra = "Location: /loop\r\n";
                body = "";
        } else if (streq(path, "/ftp")) {
                status = "302 Found";
                extra = "Location: ftp://127.0.0.1/x\r\n";
                body = "";
        }
        char resp[1024];
        int len = snprintf(resp, sizeof(resp),
                           "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
                           "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n%s\r\n%s",
                           status, strlen(body), extra, body);
        (void) !write(c, resp, (size_t) len);
}

static void *server_main(void *p)
{
        struct server *s = p;
        while (!atomic_load(&s->stop)) {
                struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
                if (poll(&pfd, 1, 50) <= 0)
                        continue;
                int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                serve_one(c);
                close(c);
        }
        return NULL;
}

static int server_start(struct server *s)
{
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof(a);
        if (s->fd < 0 || bind(s->fd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
            listen(s->fd, 16) < 0 || getsockname(s->fd, (struct sockaddr *) &a, &alen) < 0)
                return -errno;
        s->port = ntohs(a.sin_port);
        atomic_init(&s->stop, false);
        return pthread_create(&s->thread, NULL, server_main, s) == 0 ? 0 : -EAGAIN;
}

static void server_stop(struct server *s)
{
        atomic_store(&s->stop, true);
        pthread_join(s->thread, NULL);
        close(s->fd);
}

static size_t snapshot_count(struct fixture *f)
{
        char **ids = NULL;
        size_t n = 0;
        if (kiln_snapshot_list(f->snaps, &ids, &n) < 0)
                return (size_t) -1;
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
        return n;
}

TEST(http_download)
{
        int r = setup();
        if (r != 0)
                return r;
        int fds = kiln_test_count_fds();
        struct fixture f = { 0 };
        struct server srv = { .fd = -1 };
        int rc = -1;
        bool server = false;
        struct kiln_error *err = NULL;
        struct kiln_source_http_result res = { 0 };
        _cleanup_free_ char *work = NULL;
        if (fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO) < 0 || server_start(&srv) < 0)
                goto out;
        server = true;
        work = kiln_xasprintf("%s/exec", f.root);
        char url[128];
        char want_digest[80], hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_hex("hello http", 10, hex);
        snprintf(want_digest, sizeof(want_digest), "sha256:%s", hex);

        /* Name from the URL, mode 0600, mtime from Last-Modified. */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/file.txt", srv.port);
        struct kiln_source_http_options o = { .url = url, .work_dir = work };
        r = kiln_source_http_fetch(f.snaps, &o, &res, &err);
        if (r < 0 || strcmp(res.filename, "file.txt") || strcmp(res.digest, want_digest))
                goto out;
        {
                _cleanup_free_ char *view = kiln_xasprintf("%s/view", f.root);
                (void) mkdir(view, 0700);
                if (kiln_snapshot_mount_view(f.snaps, res.snapshot_id, view, &err) < 0)
                        goto out;
                _cleanup_free_ char *p = kiln_xasprintf("%s/file.txt", view);
                struct stat st;
                int sr = stat(p, &st);
                _cleanup_free_ char *data = read_view(&f, res.snapshot_id, "file.txt");
                (void) kiln_snapshot_unmount(view, &err);
                if (sr < 0 || (st.st_mode & 07777) != 0600 || st.st_mtime != 1445412480 || !data ||
                    strcmp(data, "hello http")) {
                        printf("# downloaded file wrong\n");
                        goto out;
                }
        }
        kiln_source_http_result_release(&res);

        /* A redirect keeps the name of the URL asked for. */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/redirect", srv.port);
        r = kiln_source_http_fetch(f.snaps, &o, &res, &err);
        if (r < 0 || strcmp(res.filename, "redirect") || strcmp(res.digest, want_digest))
                goto out;
        kiln_source_http_result_release(&res);

        /* Content-Disposition names it; the filename option wins over it. */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/disp", srv.port);
        r = kiln_source_http_fetch(f.snaps, &o, &res, &err);
        if (r < 0 || strcmp(res.filename, "named.bin"))
                goto out;
        kiln_source_http_result_release(&res);
        struct kiln_source_http_options o2 = {
                .url = url,
                .work_dir = work,
                .filename = "../x",
                .perm = 0755,
                .checksum = want_digest,
        };
        r = kiln_source_http_fetch(f.snaps, &o2, &res, &err);
        if (r < 0 || strcmp(res.filename, "x"))
                goto out;
        kiln_source_http_result_release(&res);

        /* Failures keep nothing. */
        size_t before = snapshot_count(&f);
        struct {
                const char *path;
                const char *checksum;
                const char *cause; /* NULL: the digest mismatch */
        } bad[] = {
                { "/file.txt",
                  "sha256:0000000000000000000000000000000000000000000000000000000000000000", NULL },
                { "/missing", NULL, "invalid response status 404" },
                { "/loop", NULL, "more than 10 redirects" },
                { "/ftp", NULL, "redirected to an unsupported scheme" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv.port, bad[i].path);
                struct kiln_source_http_options ob = { .url = url,
                                                       .work_dir = work,
                                                       .checksum = bad[i].checksum };
                _cleanup_free_ char *want =
                        bad[i].cause ? kiln_xasprintf("download '%s': %s", url, bad[i].cause)
                                     : kiln_xasprintf("digest mismatch for %s: %s (expected: %s)",
                                                      url, want_digest, bad[i].checksum);
                kiln_error_free(TAKE_PTR(err));
                r = kiln_source_http_fetch(f.snaps, &ob, &res, &err);
                if (r >= 0 || strcmp(kiln_error_message(err), want)) {
                        printf("# case %zu: %d %s\n", i, r, kiln_error_message(err));
                        goto out;
                }
        }
        kiln_error_free(TAKE_PTR(err));
        atomic_bool cancel = true;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/file.txt", srv.port);
        struct kiln_source_http_options oc = { .url = url, .work_dir = work, .cancel = &cancel };
        r = kiln_source_http_fetch(f.snaps, &oc, &res, &err);
        if (r != -ECANCELED) {
                printf("# cancelled download: %d\n", r);
                goto out;
        }
        kiln_error_free(TAKE_PTR(err));
        struct kiln_source_http_options of = { .url = "ftp://127.0.0.1/x", .work_dir = work };
        if (kiln_source_http_fetch(f.snaps, &of, &res, &err) != -EPROTONOSUPPORT)
                goto out;
        if (snapshot_count(&f) != before) {
                printf("# failed downloads left snapshots\n");
                goto out;
        }
        {
                _cleanup_free_ char *exec = kiln_xasprintf("%s/exec/http-", f.root);
                if (mountinfo_has(exec))
                        goto out;
        }
        rc = 0;
out:
        if (rc < 0 && err)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_source_http_result_release(&res);
        if (server)
                server_stop(&srv);
        fixture_done(&f);
        if (rc == 0 && kiln_test_count_fds() != fds) {
                printf("# %d fds before, %d after\n", fds, kiln_test_count_fds());
                rc = -1;
        }
        return rc;
}
