/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <jansson.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "content/content.h"
#include "export/archive.h"
#include "export/compress.h"
#include "export/image.h"
#include "export/tar.h"
#include "kiln-test.h"
#include "snapshot/snapshot.h"

#define EPOCH 1700000000

/* The config the Dockerfile converter hands over: history without times
 * (the exporter fills them), no rootfs diff_ids, no created. */
static const char config3[] =
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
        "\"diff_ids\":null},\"history\":[{\"created_by\":\"COPY a /\",\"comment\":"
        "\"buildkit.dockerfile.v0\"},{\"created_by\":\"RUN x\",\"comment\":"
        "\"buildkit.dockerfile.v0\"},{\"created_by\":\"ENV A=b\",\"comment\":"
        "\"buildkit.dockerfile.v0\",\"empty_layer\":true},{\"created_by\":\"COPY c /\","
        "\"comment\":\"buildkit.dockerfile.v0\"}],\"config\":{\"Env\":[\"PATH=/bin\","
        "\"A=b\"],\"WorkingDir\":\"/\"}}";

static int setup(void)
{
        static bool done;

        if (geteuid() != 0) {
                printf("# image export tests need root (snapshot mounts)\n");
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
        char mnt[96];
        struct kiln_content_store *cs;
        struct kiln_snapshot_store *ss;
};

static void fixture_done(struct fixture *f)
{
        if (f->mnt[0])
                (void) umount2(f->mnt, MNT_DETACH);
        f->ss = kiln_snapshot_store_free(f->ss);
        f->cs = kiln_content_store_free(f->cs);
        if (f->root[0])
                (void) kiln_rm_rf_at(AT_FDCWD, f->root, NULL, NULL);
}

static int fixture_init(struct fixture *f, enum kiln_snapshot_driver driver)
{
        struct kiln_error *err = NULL;
        int r;

        *f = (struct fixture){ 0 };
        snprintf(f->root, sizeof(f->root), "/var/tmp/kiln-test-export-image-XXXXXX");
        if (!mkdtemp(f->root)) {
                f->root[0] = '\0';
                return -errno;
        }
        snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->root);
        if (mkdir(f->mnt, 0755) < 0)
                return -errno;
        _cleanup_free_ char *snapdir = kiln_xasprintf("%s/snapshots", f->root);
        r = kiln_content_store_open(f->root, &f->cs, &err);
        if (r >= 0)
                r = kiln_snapshot_store_open(snapdir, driver, &f->ss, &err);
        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        return r;
}

struct op {
        const char *path;
        const char *data; /* NULL: a directory (or, with del, a removal) */
        bool del;
};

/* A committed snapshot on parent with ops applied through a mount. */
static int make_snapshot(struct fixture *f, const char *parent, const struct op *ops, size_t n,
                         char **ret_id)
{
        struct kiln_snapshot *snap = NULL;
        struct kiln_error *err = NULL;
        int r;

        r = kiln_snapshot_prepare(f->ss, parent, &snap, &err);
        if (r >= 0)
                r = kiln_snapshot_mount(snap, f->mnt, &err);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_free_ char *p = kiln_xasprintf("%s/%s", f->mnt, ops[i].path);
                if (ops[i].del)
                        r = (ops[i].data ? unlink(p) : rmdir(p)) < 0 ? -errno : 0;
                else if (!ops[i].data)
                        r = mkdir(p, 0755) < 0 ? -errno : 0;
                else
                        r = kiln_write_file_replace(p, ops[i].data, strlen(ops[i].data), 0644);
                if (r < 0)
                        printf("# op on %s: %s\n", p, strerror(-r));
        }
        if (kiln_snapshot_unmount(f->mnt, &err) < 0 && r >= 0)
                r = -EIO;
        if (r < 0)
                goto fail;
        return kiln_snapshot_commit(TAKE_PTR(snap), NULL, ret_id, &err) < 0 ? -EIO : 0;
fail:
        if (err)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_snapshot_abort(snap);
        return r < 0 ? r : -EIO;
}

/* L1: a, d/f; L2: a changed, b added, d/f deleted; L3: c added. */
static int make_chain(struct fixture *f, char ids[3][KILN_SNAPSHOT_ID_SIZE])
{
        static const struct op l1[] = { { "a", "one", false },
                                        { "d", NULL, false },
                                        { "d/f", "eff", false } };
        static const struct op l2[] = { { "a", "second", false },
                                        { "b", "bee", false },
                                        { "d/f", "x", true } };
        static const struct op l3[] = { { "c", "sea", false } };
        char *id = NULL;
        int r;

        r = make_snapshot(f, NULL, l1, ELEMENTSOF(l1), &id);
        if (r < 0)
                return r;
        snprintf(ids[0], KILN_SNAPSHOT_ID_SIZE, "%s", id);
        free(id);
        r = make_snapshot(f, ids[0], l2, ELEMENTSOF(l2), &id);
        if (r < 0)
                return r;
        snprintf(ids[1], KILN_SNAPSHOT_ID_SIZE, "%s", id);
        free(id);
        r = make_snapshot(f, ids[1], l3, ELEMENTSOF(l3), &id);
        if (r < 0)
                return r;
        snprintf(ids[2], KILN_SNAPSHOT_ID_SIZE, "%s", id);
        free(id);
        return 0;
}

/* The uncompressed bytes of a layer blob (gzip, zstd or plain by magic). */
static int blob_uncompressed(struct kiln_content_store *cs, const char *digest,
                             struct kiln_buf *out)
{
        struct kiln_content_mapping m = { 0 };
        struct kiln_error *err = NULL;
        const unsigned char *p;
        int r = 0;

        if (kiln_content_store_map(cs, digest, &m, &err) < 0) {
                printf("# %s\n", kiln_error_message(err));
                kiln_error_free(err);
                return -EIO;
        }
        p = m.data;
        if (m.size >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
                z_stream z = { 0 };
                unsigned char buf[65536];
                inflateInit2(&z, 16 + MAX_WBITS);
                z.next_in = (unsigned char *) p;
                z.avail_in = (uInt) m.size;
                int zr;
                do {
                        z.next_out = buf;
                        z.avail_out = sizeof(buf);
                        zr = inflate(&z, Z_NO_FLUSH);
                        if (zr != Z_OK && zr != Z_STREAM_END) {
                                r = -EBADMSG;
                                break;
                        }
                        kiln_buf_append(out, buf, sizeof(buf) - z.avail_out);
                } while (zr != Z_STREAM_END);
                inflateEnd(&z);
        } else if (m.size >= 4 && p[0] == 0x28 && p[1] == 0xb5) {
                ZSTD_DCtx *d = ZSTD_createDCtx();
                unsigned char buf[65536];
                ZSTD_inBuffer ib = { p, m.size, 0 };
                while (ib.pos < ib.size) {
                        ZSTD_outBuffer ob = { buf, sizeof(buf), 0 };
                        size_t zr = ZSTD_decompressStream(d, &ob, &ib);
                        if (ZSTD_isError(zr)) {
                                r = -EBADMSG;
                                break;
                        }
                        kiln_buf_append(out, buf, ob.pos);
                }
                ZSTD_freeDCtx(d);
        } else {
                kiln_buf_append(out, m.data, m.size);
        }
        kiln_content_mapping_release(&m);
        return r;
}

static void sha256_digest(const void *p, size_t n, char out[KILN_CONTENT_DIGEST_SIZE])
{
        char hex[KILN_SHA256_HEX_LEN + 1];

        kiln_sha256_hex(p, n, hex);
        snprintf(out, KILN_CONTENT_DIGEST_SIZE, "sha256:%s", hex);
}

/* The entry names of a tar in memory, "\n"-joined, "name" for files and
 * "name/" kept as the tar holds it. */
static int tar_list(const void *p, size_t n, struct kiln_buf *out)
{
        struct archive *a = archive_read_new();
        struct archive_entry *e;
        int r;

        archive_read_support_filter_all(a);
        archive_read_support_format_tar(a);
        r = archive_read_open_memory(a, p, n);
        while (r == ARCHIVE_OK && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                kiln_buf_puts(out, archive_entry_pathname(e));
                kiln_buf_putc(out, '\n');
        }
        archive_read_free(a);
        return r == ARCHIVE_EOF ? 0 : -EBADMSG;
}

/* The data of entry name of a tar in memory, into out. */
static int tar_read(const void *p, size_t n, const char *name, struct kiln_buf *out)
{
        struct archive *a = archive_read_new();
        struct archive_entry *e;
        int r, found = -ENOENT;
        char buf[65536];
        ssize_t k;

        archive_read_support_format_tar(a);
        r = archive_read_open_memory(a, p, n);
        while (r == ARCHIVE_OK && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                if (!streq(archive_entry_pathname(e), name))
                        continue;
                while ((k = archive_read_data(a, buf, sizeof(buf))) > 0)
                        kiln_buf_append(out, buf, (size_t) k);
                found = 0;
                break;
        }
        archive_read_free(a);
        return found;
}

struct statuses {
        int layers_done;
        int manifest;
        int config;
};

static void on_status(void *userdata, const char *id, int64_t current, int64_t total, bool done)
{
        struct statuses *s = userdata;

        if (streq(id, "exporting layers") && done && current == total)
                s->layers_done++;
        if (startswith(id, "exporting manifest sha256:") && done)
                s->manifest++;
        if (startswith(id, "exporting config sha256:") && done)
                s->config++;
}

static int do_export(struct fixture *f, const char *id, const char *config,
                     const struct kiln_export_image_options *o,
                     struct kiln_export_image_result *res)
{
        struct kiln_error *err = NULL;
        int r = kiln_export_image(f->cs, f->ss, id, config, strlen(config), o, res, &err);

        if (r < 0)
                printf("# export: %s\n", kiln_error_message(err));
        kiln_error_free(err);
        return r;
}

static int read_manifest(struct fixture *f, const struct kiln_export_image_result *res,
                         struct kiln_content_manifest **m, struct kiln_content_config **c)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        struct kiln_buf cb = KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG);
        struct kiln_error *err = NULL;
        int r;

        r = kiln_content_store_read(f->cs, res->manifest_digest, &b, &err);
        if (r >= 0)
                r = kiln_content_manifest_parse(b.data, b.len, res->manifest_media_type, m, &err);
        if (r >= 0)
                r = kiln_content_store_read(f->cs, (*m)->config.digest, &cb, &err);
        if (r >= 0)
                r = kiln_content_config_parse(cb.data, cb.len, (*m)->config.media_type, c, &err);
        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_buf_release(&b);
        kiln_buf_release(&cb);
        return r;
}

/* Each layer decompresses to a tar whose digest is the config's diff_id. */
static int check_layers(struct fixture *f, const struct kiln_content_manifest *m,
                        const struct kiln_content_config *c)
{
        size_t n = 0;

        while (c->diff_ids[n])
                n++;
        ASSERT_EQ_INT(n, m->n_layers);
        for (size_t i = 0; i < m->n_layers; i++) {
                struct kiln_buf b = KILN_BUF_INIT(64u << 20);
                char d[KILN_CONTENT_DIGEST_SIZE];
                uint64_t size;
                struct kiln_error *err = NULL;

                ASSERT_OK(kiln_content_store_size(f->cs, m->layers[i].digest, &size, &err));
                ASSERT_EQ_INT(size, m->layers[i].size);
                ASSERT_OK(blob_uncompressed(f->cs, m->layers[i].digest, &b));
                sha256_digest(b.data, b.len, d);
                kiln_buf_release(&b);
                ASSERT_STREQ(d, c->diff_ids[i]);
        }
        return 0;
}

/* Entries of <root>/content/ingest besides . and .. */
static int count_ingests(struct fixture *f)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/content/ingest", f->root);

        return kiln_test_count_entries(p);
}

static int blob_mtime(struct fixture *f, const char *digest, struct timespec *ret)
{
        _cleanup_free_ char *p = kiln_content_store_blob_path(f->cs, digest);
        struct stat st;

        if (!p || stat(p, &st) < 0)
                return -errno;
        *ret = st.st_mtim;
        return 0;
}

TEST(three_layers_gzip_oci)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        struct statuses st = { 0 };
        int r = setup(), fds = kiln_test_count_fds();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        if (r < 0)
                goto fail;
        kiln_export_image_options_init(&o);
        o.on_status = on_status;
        o.userdata = &st;
        r = do_export(&f, ids[2], config3, &o, &res);
        if (r < 0)
                goto fail;
        r = read_manifest(&f, &res, &m, &c);
        if (r < 0)
                goto fail;
        r = -1;
        if (res.n_layers != 3 || m->n_layers != 3 ||
            m->media_type != KILN_CONTENT_MEDIA_OCI_MANIFEST ||
            !streq(m->config.media_type, KILN_CONTENT_MT_OCI_CONFIG) ||
            !streq(m->config.digest, res.config_digest))
                goto fail;
        for (size_t i = 0; i < 3; i++)
                if (!streq(m->layers[i].media_type, KILN_CONTENT_MT_OCI_LAYER_GZIP))
                        goto fail;
        if (check_layers(&f, m, c) < 0)
                goto fail;
        /* Layer 2 holds the whiteout of d/f. */
        {
                struct kiln_buf b = KILN_BUF_INIT(64u << 20), l = KILN_BUF_INIT(1u << 20);
                blob_uncompressed(f.cs, m->layers[1].digest, &b);
                tar_list(b.data, b.len, &l);
                bool ok = strstr(l.data, "d/.wh.f\n") && strstr(l.data, "b\n") &&
                          strstr(l.data, "a\n") && !strstr(l.data, "c\n");
                if (!ok)
                        printf("# layer 2 entries:\n%s", l.data);
                kiln_buf_release(&b);
                kiln_buf_release(&l);
                if (!ok)
                        goto fail;
        }
        /* History: one entry per layer plus the empty one, all with times;
         * the config's created is the last entry's. */
        if (c->n_history != 4 || !c->history[2].empty_layer || c->history[3].empty_layer ||
            !c->created)
                goto fail;
        for (size_t i = 0; i < 4; i++)
                if (!c->history[i].created)
                        goto fail;
        /* BuildKit gives an entry without a time the time of the first
         * layer entry after it. */
        if (!streq(c->created, c->history[3].created) ||
            !streq(c->history[2].created, c->history[3].created)) {
                printf("# history times: %s %s %s %s, created %s\n", c->history[0].created,
                       c->history[1].created, c->history[2].created, c->history[3].created,
                       c->created);
                goto fail;
        }
        if (st.layers_done != 1 || st.manifest != 1 || st.config != 1)
                goto fail;
        /* Every layer is labelled with its blob. */
        for (size_t i = 0; i < 3; i++) {
                char *v = NULL;
                if (kiln_snapshot_label_get(f.ss, ids[i], "blob.gzip", &v) != 1 ||
                    !strstr(v, m->layers[i].digest)) {
                        free(v);
                        goto fail;
                }
                free(v);
        }
        if (count_ingests(&f) != 0)
                goto fail;
        r = 0;
fail:
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_export_image_result_release(&res);
        fixture_done(&f);
        if (r == 0 && kiln_test_count_fds() != fds) {
                printf("# %d open fds before, %d after\n", fds, kiln_test_count_fds());
                r = -1;
        }
        return r;
}

TEST(reexport_reuses_blobs)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result a = { 0 }, b = { 0 };
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        struct timespec before[3], after;
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        kiln_export_image_options_init(&o);
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &a);
        if (r >= 0)
                r = read_manifest(&f, &a, &m, &c);
        for (size_t i = 0; r >= 0 && i < 3; i++)
                r = blob_mtime(&f, m->layers[i].digest, &before[i]);
        if (r < 0)
                goto fail;
        usleep(20000);
        /* Another compression without force-compression keeps the blobs,
         * as BuildKit does. */
        o.compression = KILN_EXPORT_COMPRESSION_ZSTD;
        r = do_export(&f, ids[2], config3, &o, &b);
        if (r < 0)
                goto fail;
        r = -1;
        if (!streq(a.manifest_digest, b.manifest_digest))
                goto fail;
        for (size_t i = 0; i < 3; i++) {
                if (blob_mtime(&f, m->layers[i].digest, &after) < 0 ||
                    after.tv_sec != before[i].tv_sec || after.tv_nsec != before[i].tv_nsec)
                        goto fail;
                char *v = NULL;
                bool has = kiln_snapshot_label_get(f.ss, ids[i], "blob.zstd", &v) == 1;
                free(v);
                if (has)
                        goto fail;
        }
        r = 0;
fail:
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_export_image_result_release(&a);
        kiln_export_image_result_release(&b);
        fixture_done(&f);
        return r;
}

TEST(force_compression_converts)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result a = { 0 }, b = { 0 };
        struct kiln_content_manifest *ma = NULL, *mb = NULL;
        struct kiln_content_config *ca = NULL, *cb = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        kiln_export_image_options_init(&o);
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &a);
        o.compression = KILN_EXPORT_COMPRESSION_ZSTD;
        o.force_compression = true;
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &b);
        if (r >= 0)
                r = read_manifest(&f, &a, &ma, &ca);
        if (r >= 0)
                r = read_manifest(&f, &b, &mb, &cb);
        if (r < 0)
                goto fail;
        r = -1;
        if (check_layers(&f, mb, cb) < 0)
                goto fail;
        for (size_t i = 0; i < 3; i++)
                if (!streq(mb->layers[i].media_type, KILN_CONTENT_MT_OCI_LAYER_ZSTD) ||
                    !streq(ca->diff_ids[i], cb->diff_ids[i]) ||
                    streq(ma->layers[i].digest, mb->layers[i].digest))
                        goto fail;
        r = 0;
fail:
        kiln_content_manifest_free(ma);
        kiln_content_manifest_free(mb);
        kiln_content_config_free(ca);
        kiln_content_config_free(cb);
        kiln_export_image_result_release(&a);
        kiln_export_image_result_release(&b);
        fixture_done(&f);
        return r;
}

/* A blob as the image unpacker leaves it: a gzip layer under Docker's type,
 * named by the snapshot's "blob" label. */
static int put_base_blob(struct fixture *f, const char *id, struct kiln_export_blob *blob)
{
        struct kiln_export_layer_writer *w = NULL;
        struct kiln_export_tar_writer *tw;
        struct kiln_export_tar_meta meta = { .mode = 0644, .mtime = 1000 };
        struct kiln_error *err = NULL;
        int r;

        r = kiln_export_layer_writer_new(f->cs, KILN_EXPORT_COMPRESSION_GZIP, 9, &w, &err);
        if (r < 0)
                goto out;
        tw = kiln_export_tar_writer_new(kiln_export_layer_writer_write, w, NULL);
        r = kiln_export_tar_writer_add_file_data(tw, "base", &meta, "from the registry", 17, &err);
        if (r >= 0)
                r = kiln_export_tar_writer_finish(tw, &err);
        kiln_export_tar_writer_free(tw);
        if (r >= 0)
                r = kiln_export_layer_writer_commit(w, blob, &err);
        if (r >= 0) {
                _cleanup_free_ char *v = kiln_xasprintf(
                        "{\"diffID\":\"%s\",\"digest\":\"%s\",\"mediaType\":\"%s\",\"size\":%lld}",
                        blob->diff_id, blob->digest, KILN_CONTENT_MT_DOCKER_LAYER_GZIP,
                        (long long) blob->size);
                r = kiln_snapshot_label_set(f->ss, id, "blob", v, &err);
        }
out:
        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_export_layer_writer_free(w);
        return r;
}

TEST(base_layer_blob_reused_as_is)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result a = { 0 }, b = { 0 }, z = { 0 };
        struct kiln_content_manifest *ma = NULL, *mb = NULL, *mz = NULL;
        struct kiln_content_config *ca = NULL, *cb = NULL, *cz = NULL;
        struct kiln_export_blob base;
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        if (r >= 0)
                r = put_base_blob(&f, ids[0], &base);
        kiln_export_image_options_init(&o);
        /* With an epoch too: base layers keep their bytes. */
        o.has_epoch = true;
        o.epoch = EPOCH;
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &a);
        o.oci_mediatypes = false;
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &b);
        o.oci_mediatypes = true;
        o.compression = KILN_EXPORT_COMPRESSION_ZSTD;
        o.force_compression = true;
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &z);
        if (r >= 0)
                r = read_manifest(&f, &a, &ma, &ca);
        if (r >= 0)
                r = read_manifest(&f, &b, &mb, &cb);
        if (r >= 0)
                r = read_manifest(&f, &z, &mz, &cz);
        if (r < 0)
                goto fail;
        r = -1;
        /* OCI: the blob, its media type converted. */
        if (!streq(ma->layers[0].digest, base.digest) ||
            !streq(ma->layers[0].media_type, KILN_CONTENT_MT_OCI_LAYER_GZIP) ||
            ma->layers[0].size != base.size || !streq(ca->diff_ids[0], base.diff_id))
                goto fail;
        /* Docker schema2: Docker types everywhere. */
        if (mb->media_type != KILN_CONTENT_MEDIA_DOCKER_MANIFEST ||
            !streq(mb->config.media_type, KILN_CONTENT_MT_DOCKER_CONFIG) ||
            !streq(mb->layers[0].digest, base.digest))
                goto fail;
        for (size_t i = 0; i < 3; i++)
                if (!streq(mb->layers[i].media_type, KILN_CONTENT_MT_DOCKER_LAYER_GZIP))
                        goto fail;
        if (!streq(b.manifest_media_type, KILN_CONTENT_MT_DOCKER_MANIFEST))
                goto fail;
        /* Forced zstd: converted, same diffID. */
        if (!streq(mz->layers[0].media_type, KILN_CONTENT_MT_OCI_LAYER_ZSTD) ||
            !streq(cz->diff_ids[0], base.diff_id) || check_layers(&f, mz, cz) < 0)
                goto fail;
        r = 0;
fail:
        kiln_content_manifest_free(ma);
        kiln_content_manifest_free(mb);
        kiln_content_manifest_free(mz);
        kiln_content_config_free(ca);
        kiln_content_config_free(cb);
        kiln_content_config_free(cz);
        kiln_export_image_result_release(&a);
        kiln_export_image_result_release(&b);
        kiln_export_image_result_release(&z);
        fixture_done(&f);
        return r;
}

/* Two chains with equal trees made at different times. */
static int epoch_export(enum kiln_snapshot_driver d, bool has_epoch, char digest[2][80])
{
        for (int k = 0; k < 2; k++) {
                struct fixture f;
                char ids[3][KILN_SNAPSHOT_ID_SIZE];
                struct kiln_export_image_options o;
                struct kiln_export_image_result res = { 0 };
                int r;

                if (fixture_init(&f, d) < 0) {
                        fixture_done(&f);
                        return -1;
                }
                r = make_chain(&f, ids);
                kiln_export_image_options_init(&o);
                o.has_epoch = has_epoch;
                o.epoch = EPOCH;
                if (r >= 0)
                        r = do_export(&f, ids[2], config3, &o, &res);
                if (r >= 0)
                        snprintf(digest[k], 80, "%s", res.manifest_digest);
                kiln_export_image_result_release(&res);
                fixture_done(&f);
                if (r < 0)
                        return r;
                if (k == 0)
                        sleep(1); /* other mtimes and commit times */
        }
        return 0;
}

TEST(epoch_makes_equal_digests)
{
        char with[2][80], without[2][80];
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(epoch_export(KILN_SNAPSHOT_DRIVER_AUTO, true, with));
        ASSERT_STREQ(with[0], with[1]);
        ASSERT_OK(epoch_export(KILN_SNAPSHOT_DRIVER_AUTO, false, without));
        ASSERT_TRUE(!streq(without[0], without[1]));
        /* The native driver gives the same layers, so the same image. */
        char native[2][80];
        ASSERT_OK(epoch_export(KILN_SNAPSHOT_DRIVER_NATIVE, true, native));
        ASSERT_STREQ(native[0], with[0]);
        return 0;
}

TEST(epoch_clamps_config_times)
{
        /* Two base image entries (one dated after the epoch: BuildKit keeps
         * base times), then this build's: dated at the epoch by the
         * converter, undated, or later (clamped). */
        static const char cfg[] =
                "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2030-01-01T00:00:00Z\","
                "\"history\":["
                "{\"created\":\"2001-02-03T04:05:06.5+01:00\",\"created_by\":\"base\"},"
                "{\"created\":\"2030-01-01T00:00:00.000Z\",\"created_by\":\"late\","
                "\"empty_layer\":true},"
                "{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"RUN new\"},"
                "{\"created_by\":\"x\",\"empty_layer\":true},"
                "{\"created\":\"2031-01-01T00:00:00+00:00\",\"created_by\":\"after\","
                "\"empty_layer\":true}"
                "],\"zz\":1,\"aa\":{\"k\":\"<v>\"}}";
        struct fixture f;
        char *id = NULL;
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_buf b = KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG);
        static const struct op ops[] = { { "x", "y", false } };
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        struct kiln_error *err = NULL;
        char *snap2 = NULL;
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_snapshot(&f, NULL, ops, 1, &id);
        if (r >= 0)
                r = make_snapshot(&f, id, ops, 0, &snap2);
        kiln_export_image_options_init(&o);
        o.has_epoch = true;
        o.epoch = EPOCH;
        if (r >= 0)
                r = do_export(&f, snap2, cfg, &o, &res);
        if (r >= 0)
                r = read_manifest(&f, &res, &m, &c);
        if (r >= 0)
                r = kiln_content_store_read(f.cs, res.config_digest, &b, &err);
        if (r < 0)
                goto fail;
        r = -1;
        /* Keys sorted, times normalised and clamped, HTML escaped as Go. */
        static const char want[] =
                "{\"aa\":{\"k\":\"\\u003cv\\u003e\"},\"architecture\":\"amd64\",\"created\":"
                "\"2023-11-14T22:13:20Z\",\"history\":["
                "{\"created\":\"2001-02-03T04:05:06.5+01:00\",\"created_by\":\"base\"},"
                "{\"created\":\"2030-01-01T00:00:00Z\",\"created_by\":\"late\","
                "\"empty_layer\":true},"
                "{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"RUN new\"},"
                "{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"x\","
                "\"empty_layer\":true},"
                "{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"after\","
                "\"empty_layer\":true}"
                "],\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[";
        if (!startswith(b.data, want)) {
                printf("# config: %s\n", b.data);
                goto fail;
        }
        if (!strstr(b.data, "]},\"zz\":1}"))
                goto fail;
        /* Two layers, the second empty: the tar of nothing (two zero
         * blocks), as BuildKit writes for a step that changes nothing. */
        if (m->n_layers != 2 ||
            !streq(c->diff_ids[1],
                   "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"))
                goto fail;
        r = 0;
fail:
        if (err)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_buf_release(&b);
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_export_image_result_release(&res);
        free(id);
        free(snap2);
        fixture_done(&f);
        return r;
}

TEST(scratch_image_and_bad_configs)
{
        struct fixture f;
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        struct kiln_error *err = NULL;
        static const char cfg[] = "{\"architecture\":\"arm64\",\"os\":\"linux\"}";
        int r;

        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_NATIVE));
        kiln_export_image_options_init(&o);
        r = do_export(&f, NULL, cfg, &o, &res);
        if (r >= 0)
                r = read_manifest(&f, &res, &m, &c);
        if (r < 0) {
                printf("# r=%d %s\n", r, err ? kiln_error_message(err) : "");
                goto fail;
        }
        r = -1;
        if (m->n_layers != 0 || c->diff_ids[0] || res.n_layers != 0) {
                printf("# r=%d %s\n", r, err ? kiln_error_message(err) : "");
                goto fail;
        }
        r = kiln_export_image(f.cs, f.ss, NULL, "{\"architecture\":\"amd64\"}", 24, &o, &res, &err);
        if (r != -EINVAL || !strstr(kiln_error_message(err), "missing os")) {
                printf("# r=%d %s\n", r, err ? kiln_error_message(err) : "");
                goto fail;
        }
        kiln_error_free(TAKE_PTR(err));
        /* No config at all: BuildKit's default one. */
        kiln_export_image_result_release(&res);
        kiln_content_manifest_free(TAKE_PTR(m));
        kiln_content_config_free(TAKE_PTR(c));
        r = kiln_export_image(f.cs, f.ss, NULL, NULL, 0, &o, &res, &err);
        if (r >= 0)
                r = read_manifest(&f, &res, &m, &c);
        if (r < 0 || !c->env ||
            !streq(c->env[0],
                   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") ||
            !streq(c->working_dir, "/") || !streq(c->platform.os, "linux")) {
                printf("# default config: r=%d %s\n", r, err ? kiln_error_message(err) : "");
                r = -1;
                goto fail;
        }
        r = kiln_export_image(f.cs, f.ss, "999", cfg, strlen(cfg), &o, &res, &err);
        if (r != -ENOENT) {
                printf("# r=%d %s\n", r, err ? kiln_error_message(err) : "");
                goto fail;
        }
        r = 0;
fail:
        kiln_error_free(err);
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_export_image_result_release(&res);
        fixture_done(&f);
        return r;
}

TEST(cancel_stops_export)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_error *err = NULL;
        atomic_bool cancel = true;
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        kiln_export_image_options_init(&o);
        o.cancel = &cancel;
        if (r >= 0)
                r = kiln_export_image(f.cs, f.ss, ids[2], config3, strlen(config3), &o, &res, &err);
        kiln_error_free(err);
        bool labelled = false;
        for (size_t i = 0; i < 3; i++) {
                char *v = NULL;
                labelled |= kiln_snapshot_label_get(f.ss, ids[i], "blob.gzip", &v) == 1;
                free(v);
        }
        /* The uses taken on the chain are all released. */
        struct kiln_snapshot_info info = { 0 };
        kiln_snapshot_info(f.ss, ids[0], &info);
        unsigned uses = info.uses;
        kiln_snapshot_info_release(&info);
        fixture_done(&f);
        ASSERT_EQ_INT(r, -ECANCELED);
        ASSERT_TRUE(!labelled);
        ASSERT_EQ_INT(uses, 0);
        return 0;
}

static int buf_sink(void *userdata, const void *p, size_t n, struct kiln_error **err)
{
        struct kiln_buf *b = userdata;

        if (kiln_buf_append(b, p, n) < 0)
                return kiln_error_set(err, -E2BIG, "test archive too large");
        return 0;
}

static int write_archive(struct fixture *f, const struct kiln_export_image_result *res, bool docker,
                         const char *const *names, size_t n, struct kiln_buf *out)
{
        struct kiln_error *err = NULL;
        int r = (docker ? kiln_export_docker_archive : kiln_export_oci_archive)(
                f->cs, res->manifest_digest, res->manifest_media_type, res->manifest_size, names, n,
                EPOCH, buf_sink, out, &err);

        if (r < 0)
                printf("# archive: %s\n", kiln_error_message(err));
        kiln_error_free(err);
        return r;
}

TEST(archives)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        struct kiln_content_index *idx = NULL;
        struct kiln_buf oci = KILN_BUF_INIT(256u << 20), oci2 = KILN_BUF_INIT(256u << 20),
                        dock = KILN_BUF_INIT(256u << 20), list = KILN_BUF_INIT(1u << 20),
                        doc = KILN_BUF_INIT(1u << 20), want = KILN_BUF_INIT(1u << 20);
        struct kiln_error *err = NULL;
        const char *names[] = { "x", "127.0.0.1:5000/a/b:v1" };
        int r = setup();

        if (r)
                return r;
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        kiln_export_image_options_init(&o);
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &res);
        if (r >= 0)
                r = read_manifest(&f, &res, &m, &c);
        if (r >= 0)
                r = write_archive(&f, &res, false, names, 2, &oci);
        if (r >= 0)
                r = write_archive(&f, &res, false, names, 2, &oci2);
        if (r >= 0)
                r = write_archive(&f, &res, true, names, 2, &dock);
        if (r < 0)
                goto fail;
        r = -1;
        if (oci.len != oci2.len || memcmp(oci.data, oci2.data, oci.len) != 0)
                goto fail;
        /* Entries sorted by name; each blob once. */
        tar_list(oci.data, oci.len, &list);
        const char *blobs[5] = { res.manifest_digest, res.config_digest, m->layers[0].digest,
                                 m->layers[1].digest, m->layers[2].digest };
        {
                for (size_t i = 0; i < 5; i++)
                        for (size_t j = i + 1; j < 5; j++)
                                if (strcmp(blobs[i], blobs[j]) > 0) {
                                        const char *t = blobs[i];
                                        blobs[i] = blobs[j];
                                        blobs[j] = t;
                                }
        }
        kiln_buf_puts(&want, "blobs/\nblobs/sha256/\n");
        for (size_t i = 0; i < 5; i++)
                kiln_buf_printf(&want, "blobs/sha256/%s\n", blobs[i] + 7);
        kiln_buf_puts(&want, "index.json\noci-layout\n");
        if (!streq(list.data, want.data)) {
                printf("# oci archive entries:\n%s# want:\n%s", list.data, want.data);
                goto fail;
        }
        /* index.json: a descriptor per name, annotated as containerd does. */
        if (tar_read(oci.data, oci.len, "index.json", &doc) < 0 ||
            kiln_content_index_parse(doc.data, doc.len, NULL, &idx, &err) < 0 ||
            idx->n_manifests != 2)
                goto fail;
        if (!streq(idx->manifests[0].digest, res.manifest_digest) ||
            !streq(kiln_content_annotations_get(&idx->manifests[0].annotations,
                                                "io.containerd.image.name"),
                   "docker.io/library/x:latest") ||
            !streq(kiln_content_annotations_get(&idx->manifests[0].annotations,
                                                "org.opencontainers.image.ref.name"),
                   "latest") ||
            !streq(kiln_content_annotations_get(&idx->manifests[1].annotations,
                                                "org.opencontainers.image.ref.name"),
                   "v1") ||
            !streq(kiln_content_annotations_get(&idx->manifests[1].annotations,
                                                "org.opencontainers.image.created"),
                   "2023-11-14T22:13:20Z") ||
            !idx->manifests[0].platform || !streq(idx->manifests[0].platform->os, "linux") ||
            !streq(idx->manifests[0].platform->architecture, "amd64"))
                goto fail;
        kiln_buf_reset(&doc);
        if (tar_read(oci.data, oci.len, "oci-layout", &doc) < 0 ||
            !streq(doc.data, "{\"imageLayoutVersion\":\"1.0.0\"}"))
                goto fail;
        if (tar_read(oci.data, oci.len, "manifest.json", &doc) != -ENOENT)
                goto fail;
        /* docker: the same plus manifest.json. */
        kiln_buf_reset(&doc);
        kiln_buf_reset(&want);
        kiln_buf_printf(&want,
                        "[{\"Config\":\"blobs/sha256/%s\",\"RepoTags\":[\"x:latest\","
                        "\"127.0.0.1:5000/a/b:v1\"],\"Layers\":[",
                        res.config_digest + 7);
        for (size_t i = 0; i < 3; i++)
                kiln_buf_printf(&want, "%s\"blobs/sha256/%s\"", i ? "," : "",
                                m->layers[i].digest + 7);
        kiln_buf_puts(&want, "]}]");
        if (tar_read(dock.data, dock.len, "manifest.json", &doc) < 0 ||
            !streq(doc.data, want.data)) {
                printf("# manifest.json: %s\n", doc.data);
                goto fail;
        }
        /* A blob that is gone fails before anything is written. */
        {
                struct kiln_buf none = KILN_BUF_INIT(1u << 20);
                kiln_content_store_delete(f.cs, m->layers[1].digest, &err);
                kiln_error_free(TAKE_PTR(err));
                int k = kiln_export_oci_archive(f.cs, res.manifest_digest, res.manifest_media_type,
                                                res.manifest_size, NULL, 0, EPOCH, buf_sink, &none,
                                                &err);
                if (k != -ENOENT || !strstr(kiln_error_message(err), m->layers[1].digest))
                        k = -1;
                kiln_error_free(TAKE_PTR(err));
                bool ok = k == -ENOENT && none.len == 0;
                kiln_buf_release(&none);
                if (!ok)
                        goto fail;
        }
        r = 0;
fail:
        if (err)
                printf("# %s\n", kiln_error_message(err));
        kiln_error_free(err);
        kiln_content_index_free(idx);
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_export_image_result_release(&res);
        kiln_buf_release(&oci);
        kiln_buf_release(&oci2);
        kiln_buf_release(&dock);
        kiln_buf_release(&list);
        kiln_buf_release(&doc);
        kiln_buf_release(&want);
        fixture_done(&f);
        return r;
}

static bool have_command(const char *name)
{
        _cleanup_free_ char *cmd = kiln_xasprintf("command -v %s >/dev/null 2>&1", name);

        return system(cmd) == 0;
}

/* skopeo and umoci read kiln's OCI archive (and umoci unpacks its layers). */
TEST(oci_archive_read_by_skopeo_and_umoci)
{
        struct fixture f;
        char ids[3][KILN_SNAPSHOT_ID_SIZE];
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_buf tar = KILN_BUF_INIT(256u << 20), out = KILN_BUF_INIT(1u << 20),
                        dock = KILN_BUF_INIT(256u << 20);
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        json_t *inspect = NULL;
        const char *names[] = { "kiln-test:v1" };
        _cleanup_free_ char *file = NULL, *dfile = NULL, *cmd = NULL, *a = NULL, *df = NULL,
                            *cc = NULL, *dinspect = NULL;
        int r = setup();

        if (r)
                return r;
        if (!have_command("skopeo") || !have_command("umoci") || !have_command("tar")) {
                printf("# skopeo, umoci or tar is not installed\n");
                return KILN_TEST_SKIP;
        }
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        r = make_chain(&f, ids);
        kiln_export_image_options_init(&o);
        if (r >= 0)
                r = do_export(&f, ids[2], config3, &o, &res);
        if (r >= 0)
                r = write_archive(&f, &res, false, names, 1, &tar);
        if (r >= 0)
                r = write_archive(&f, &res, true, names, 1, &dock);
        if (r >= 0)
                r = read_manifest(&f, &res, &m, &c);
        if (r < 0)
                goto fail;
        file = kiln_xasprintf("%s/image.tar", f.root);
        dfile = kiln_xasprintf("%s/docker.tar", f.root);
        dinspect = kiln_xasprintf("%s/dinspect", f.root);
        r = kiln_write_file_replace(file, tar.data, tar.len, 0644);
        if (r >= 0)
                r = kiln_write_file_replace(dfile, dock.data, dock.len, 0644);
        if (r < 0)
                goto fail;
        cmd = kiln_xasprintf("skopeo inspect --raw oci-archive:%s > %s/raw 2>&1 && "
                             "mkdir %s/layout && tar -xf %s -C %s/layout && "
                             "umoci unpack --image %s/layout:v1 %s/bundle > %s/umoci.log 2>&1 && "
                             "skopeo inspect docker-archive:%s > %s 2>&1",
                             file, f.root, f.root, file, f.root, f.root, f.root, f.root, dfile,
                             dinspect);
        r = system(cmd);
        if (r != 0) {
                _cleanup_free_ char *log = kiln_xasprintf("%s/umoci.log", f.root);
                kiln_read_file_at(AT_FDCWD, log, &out);
                printf("# %s: exit %d\n# %s\n", cmd, r, out.data ? out.data : "");
                r = -1;
                goto fail;
        }
        r = -1;
        /* skopeo read the manifest kiln wrote, byte for byte. */
        {
                _cleanup_free_ char *raw = kiln_xasprintf("%s/raw", f.root);
                char d[KILN_CONTENT_DIGEST_SIZE];
                if (kiln_read_file_at(AT_FDCWD, raw, &out) < 0)
                        goto fail;
                sha256_digest(out.data, out.len, d);
                if (!streq(d, res.manifest_digest)) {
                        printf("# skopeo: %s\n", out.data);
                        goto fail;
                }
        }
        /* umoci applied the three layers: a and the deletion of d/f from
         * layer 2, c from layer 3. */
        kiln_buf_reset(&out);
        a = kiln_xasprintf("%s/bundle/rootfs/a", f.root);
        df = kiln_xasprintf("%s/bundle/rootfs/d/f", f.root);
        cc = kiln_xasprintf("%s/bundle/rootfs/c", f.root);
        if (kiln_read_file_at(AT_FDCWD, a, &out) < 0 || !streq(out.data, "second") ||
            access(df, F_OK) == 0 || access(cc, F_OK) != 0)
                goto fail;
        /* skopeo reads the docker archive's manifest.json: its layers are
         * the config's diff_ids, its tag the name. */
        inspect = json_load_file(dinspect, 0, NULL);
        json_t *layers = json_object_get(inspect, "Layers");
        if (json_array_size(layers) != 3)
                goto fail;
        for (size_t i = 0; i < 3; i++)
                if (!streq(json_string_value(json_array_get(layers, i)) ?: "", c->diff_ids[i]))
                        goto fail;
        r = 0;
fail:
        json_decref(inspect);
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_buf_release(&dock);
        kiln_buf_release(&tar);
        kiln_buf_release(&out);
        kiln_export_image_result_release(&res);
        fixture_done(&f);
        return r;
}

struct progress_log {
        int64_t last;
        int64_t total;
        bool monotonic;
        bool done;
};

static void on_progress(void *userdata, const char *id, int64_t current, int64_t total, bool done)
{
        struct progress_log *p = userdata;

        if (!streq(id, "exporting layers"))
                return;
        if (current < p->last || current > total)
                p->monotonic = false;
        p->last = current;
        p->total = total;
        p->done |= done;
}

struct concurrent {
        struct fixture *f;
        const char *id;
        struct kiln_export_image_result res;
        int r;
};

static void *concurrent_export(void *userdata)
{
        struct concurrent *c = userdata;
        struct kiln_export_image_options o;

        kiln_export_image_options_init(&o);
        c->r = do_export(c->f, c->id, config3, &o, &c->res);
        return NULL;
}

/* A long chain of larger layers: compressed in parallel, progress counts
 * up to the number of layers; two exports of it at once agree. */
TEST(many_layers_in_parallel)
{
        enum { N = 12, FILE_SIZE = 512 * 1024 };
        struct fixture f;
        char *ids[N] = { 0 };
        struct kiln_export_image_options o;
        struct kiln_export_image_result res = { 0 };
        struct kiln_content_manifest *m = NULL;
        struct kiln_content_config *c = NULL;
        struct progress_log p = { .monotonic = true };
        struct concurrent cc[2] = { { 0 } };
        pthread_t t[2];
        char *data = kiln_xmalloc(FILE_SIZE + 1);
        int r = setup();

        if (r) {
                free(data);
                return r;
        }
        ASSERT_OK(fixture_init(&f, KILN_SNAPSHOT_DRIVER_AUTO));
        /* Compressible but not trivially: a pseudo-random walk over a few
         * letters. */
        uint32_t x = 12345;
        for (size_t i = 0; i < FILE_SIZE; i++) {
                x = x * 1103515245u + 12345u;
                data[i] = (char) ('a' + (x >> 16) % 7);
        }
        data[FILE_SIZE] = '\0';
        for (int i = 0; i < N && r >= 0; i++) {
                char name[16];
                snprintf(name, sizeof(name), "file%d", i);
                data[0] = (char) ('A' + i);
                struct op op = { name, data, false };
                r = make_snapshot(&f, i ? ids[i - 1] : NULL, &op, 1, &ids[i]);
        }
        /* Two exports of a fresh chain at once first: both compress, both
         * publish the same bytes. */
        for (int i = 0; r >= 0 && i < 2; i++) {
                cc[i] = (struct concurrent){ .f = &f, .id = ids[N - 1] };
                if (pthread_create(&t[i], NULL, concurrent_export, &cc[i]) != 0)
                        r = -1;
                else if (i == 1) {
                        pthread_join(t[0], NULL);
                        pthread_join(t[1], NULL);
                }
        }
        if (r < 0 || cc[0].r < 0 || cc[1].r < 0 ||
            !streq(cc[0].res.manifest_digest, cc[1].res.manifest_digest)) {
                r = -1;
                goto fail;
        }
        /* Then one with progress (all reused now) and a forced other
         * compression (all new again). */
        kiln_export_image_options_init(&o);
        o.compression = KILN_EXPORT_COMPRESSION_ZSTD;
        o.force_compression = true;
        o.on_status = on_progress;
        o.userdata = &p;
        r = do_export(&f, ids[N - 1], config3, &o, &res);
        if (r >= 0)
                r = read_manifest(&f, &res, &m, &c);
        if (r < 0)
                goto fail;
        r = -1;
        if (m->n_layers != N || !p.monotonic || !p.done || p.last != N || p.total != N)
                goto fail;
        if (check_layers(&f, m, c) < 0)
                goto fail;
        r = 0;
fail:
        kiln_content_manifest_free(m);
        kiln_content_config_free(c);
        kiln_export_image_result_release(&res);
        kiln_export_image_result_release(&cc[0].res);
        kiln_export_image_result_release(&cc[1].res);
        for (int i = 0; i < N; i++)
                free(ids[i]);
        free(data);
        fixture_done(&f);
        return r;
}
