/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <ftw.h>
#include <malloc.h>
#include <sched.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/param.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "base/error.h"
#include "base/macro.h"
#include "base/sha256.h"
#include "content/content.h"
#include "export/compress.h"
#include "kiln-test.h"

/* ---- helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void) st;
        (void) flag;
        (void) ftw;
        return remove(path);
}

struct tmp {
        char path[64];
        bool mounted;
};

static void tmp_release(struct tmp *t)
{
        if (t->mounted)
                (void) umount2(t->path, MNT_DETACH);
        if (t->path[0])
                (void) nftw(t->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Stores live in /dev/shm when there is one: every commit fsyncs, which
 * costs nothing there, and the tests are about the bytes. */
static int tmp_init(struct tmp *t)
{
        struct stat st;

        (void) snprintf(t->path, sizeof(t->path), "%s/kiln-compress-XXXXXX",
                        stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp");
        if (!mkdtemp(t->path)) {
                t->path[0] = '\0';
                return -errno;
        }
        return 0;
}

/* Entries of <root>/content/<sub>, or -errno. */
static int count_entries(const char *root, const char *sub)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/content/%s", root, sub);

        return kiln_test_count_entries(p);
}

static bool contains(const struct kiln_error *e, const char *s)
{
        if (!e || !strstr(kiln_error_message(e), s)) {
                printf("# message \"%s\" lacks \"%s\"\n", e ? kiln_error_message(e) : "(none)", s);
                return false;
        }
        return true;
}

/* Layer-like bytes: runs of text with repeats (compressible) and random
 * stretches (incompressible), from a fixed seed. */
static uint8_t *make_data(size_t n, uint32_t seed)
{
        static const char words[] = "usr/lib/x86_64-linux-gnu/ libc.so.6 ELF\n#!/bin/sh\nexport "
                                    "PATH=/usr/local/bin:$PATH\n0000644 root root ustar\0";
        uint8_t *p = kiln_xmalloc(n ? n : 1);
        uint32_t x = seed * 2654435761u + 1;
        size_t i = 0;

        while (i < n) {
                size_t run;

                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                run = 1 + (x % 4096);
                for (size_t j = 0; j < run && i < n; j++, i++) {
                        if (x & 0x100000) {
                                x ^= x << 13;
                                x ^= x >> 17;
                                x ^= x << 5;
                                p[i] = (uint8_t) x;
                        } else
                                p[i] = (uint8_t) words[(j + (x >> 24)) % (sizeof(words) - 1)];
                }
        }
        return p;
}

static void digest_of(const void *p, size_t n, char out[72])
{
        char hex[KILN_SHA256_HEX_LEN + 1];

        kiln_sha256_hex(p, n, hex);
        (void) snprintf(out, 72, "sha256:%s", hex);
}

/* Decompresses a whole blob; returns the size or -1. */
static ssize_t decompress(enum kiln_export_compression c, const void *blob, size_t n, uint8_t *out,
                          size_t cap)
{
        if (c == KILN_EXPORT_COMPRESSION_UNCOMPRESSED) {
                if (n > cap)
                        return -1;
                memcpy(out, blob, n);
                return (ssize_t) n;
        }
        if (c == KILN_EXPORT_COMPRESSION_GZIP) {
                z_stream z = { 0 };
                int r;

                if (inflateInit2(&z, 15 + 16) != Z_OK)
                        return -1;
                z.next_in = (Bytef *) blob;
                z.avail_in = (uInt) n;
                z.next_out = out;
                z.avail_out = (uInt) cap;
                r = inflate(&z, Z_FINISH);
                inflateEnd(&z);
                /* exactly one gzip member, nothing after it */
                if (r != Z_STREAM_END || z.avail_in != 0)
                        return -1;
                return (ssize_t) z.total_out;
        }
        {
                ZSTD_DStream *d = ZSTD_createDStream();
                ZSTD_inBuffer in = { blob, n, 0 };
                ZSTD_outBuffer o = { out, cap, 0 };
                size_t r = 1;

                while (in.pos < in.size) {
                        r = ZSTD_decompressStream(d, &o, &in);
                        if (ZSTD_isError(r) || (o.pos == o.size && r != 0))
                                break;
                }
                ZSTD_freeDStream(d);
                if (ZSTD_isError(r) || r != 0)
                        return -1;
                return (ssize_t) o.pos;
        }
}

/* Writes data in pieces of step bytes (0: one write), commits. */
static int write_layer(struct kiln_content_store *s, enum kiln_export_compression c, int level,
                       const uint8_t *data, size_t n, size_t step, struct kiln_export_blob *blob)
{
        _cleanup_(kiln_export_layer_writer_freep) struct kiln_export_layer_writer *w = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t off = 0;

        ASSERT_OK(kiln_export_layer_writer_new(s, c, level, &w, &err));
        while (off < n) {
                size_t k = step ? MIN(step, n - off) : n;

                ASSERT_OK(kiln_export_layer_writer_write(w, data + off, k, &err));
                off += k;
                /* vary the pieces: odd sizes, tiny ones */
                if (step)
                        step = step * 7 % 300007 + 1;
        }
        ASSERT_EQ_INT(kiln_export_layer_writer_bytes_in(w), n);
        ASSERT_OK(kiln_export_layer_writer_commit(w, blob, &err));
        return 0;
}

/* Checks what the store holds against independently computed digests and
 * the decompressed bytes. */
static int check_blob(struct kiln_content_store *s, const struct kiln_export_blob *b,
                      enum kiln_export_compression c, const uint8_t *data, size_t n)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ uint8_t *out = kiln_xmalloc(n + 1);
        struct kiln_content_mapping m;
        char d[72];
        ssize_t got;

        digest_of(data, n, d);
        ASSERT_STREQ(b->diff_id, d);
        ASSERT_EQ_INT(b->compression, c);
        ASSERT_OK(kiln_content_store_map(s, b->digest, &m, &err));
        ASSERT_EQ_INT(m.size, b->size);
        digest_of(m.data, m.size, d);
        ASSERT_STREQ(b->digest, d);
        if (c == KILN_EXPORT_COMPRESSION_UNCOMPRESSED)
                ASSERT_STREQ(b->digest, b->diff_id);
        got = decompress(c, m.data, m.size, out, n + 1);
        kiln_content_mapping_release(&m);
        ASSERT_EQ_INT(got, n);
        ASSERT_TRUE(n == 0 || memcmp(out, data, n) == 0);
        return 0;
}

static int round_trip(struct kiln_content_store *s, enum kiln_export_compression c, int level,
                      const uint8_t *data, size_t n, size_t step, struct kiln_export_blob *ret)
{
        struct kiln_export_blob b;

        if (write_layer(s, c, level, data, n, step, &b) < 0 || check_blob(s, &b, c, data, n) < 0) {
                printf("# %s level %d, %zu bytes, step %zu\n", kiln_export_compression_to_string(c),
                       level, n, step);
                return -1;
        }
        if (ret)
                *ret = b;
        return 0;
}

/* ---- names and media types ---- */

TEST(compression_parse)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        enum kiln_export_compression c;

        ASSERT_OK(kiln_export_compression_parse("gzip", &c, &err));
        ASSERT_EQ_INT(c, KILN_EXPORT_COMPRESSION_GZIP);
        ASSERT_OK(kiln_export_compression_parse("zstd", &c, &err));
        ASSERT_EQ_INT(c, KILN_EXPORT_COMPRESSION_ZSTD);
        ASSERT_OK(kiln_export_compression_parse("uncompressed", &c, &err));
        ASSERT_EQ_INT(c, KILN_EXPORT_COMPRESSION_UNCOMPRESSED);
        for (int i = 0; i < _KILN_EXPORT_COMPRESSION_MAX; i++) {
                ASSERT_OK(kiln_export_compression_parse(kiln_export_compression_to_string(i), &c,
                                                        &err));
                ASSERT_EQ_INT(c, i);
        }
        ASSERT_TRUE(kiln_export_compression_to_string(_KILN_EXPORT_COMPRESSION_MAX) == NULL);

        ASSERT_EQ_INT(kiln_export_compression_parse("estargz", &c, &err), -EOPNOTSUPP);
        ASSERT_TRUE(contains(err, "'estargz' is not supported"));
        err = kiln_error_free(err);
        ASSERT_EQ_INT(kiln_export_compression_parse("GZIP", &c, &err), -EINVAL);
        ASSERT_TRUE(contains(err, "unsupported compression type 'GZIP'"));
        err = kiln_error_free(err);
        ASSERT_EQ_INT(kiln_export_compression_parse("", &c, &err), -EINVAL);
        return 0;
}

TEST(compression_level_check)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        for (int l = -1; l <= 9; l++)
                ASSERT_OK(
                        kiln_export_compression_level_check(KILN_EXPORT_COMPRESSION_GZIP, l, &err));
        for (int l = -1; l <= 22; l++)
                ASSERT_OK(
                        kiln_export_compression_level_check(KILN_EXPORT_COMPRESSION_ZSTD, l, &err));
        ASSERT_OK(kiln_export_compression_level_check(KILN_EXPORT_COMPRESSION_UNCOMPRESSED, 42,
                                                      &err));
        ASSERT_EQ_INT(kiln_export_compression_level_check(KILN_EXPORT_COMPRESSION_GZIP, 10, &err),
                      -EINVAL);
        ASSERT_TRUE(contains(err, "compression-level 10: gzip takes 0 to 9"));
        err = kiln_error_free(err);
        ASSERT_EQ_INT(kiln_export_compression_level_check(KILN_EXPORT_COMPRESSION_ZSTD, 23, &err),
                      -EINVAL);
        ASSERT_TRUE(contains(err, "zstd takes 0 to 22"));
        err = kiln_error_free(err);
        ASSERT_EQ_INT(kiln_export_compression_level_check(KILN_EXPORT_COMPRESSION_GZIP, -2, &err),
                      -EINVAL);
        return 0;
}

TEST(layer_media_types)
{
        static const struct {
                const char *mt;
                enum kiln_export_compression c;
                bool nondist;
                const char *oci, *docker;
        } cases[] = {
                { "application/vnd.oci.image.layer.v1.tar", KILN_EXPORT_COMPRESSION_UNCOMPRESSED,
                  false, "application/vnd.oci.image.layer.v1.tar",
                  "application/vnd.docker.image.rootfs.diff.tar" },
                { "application/vnd.oci.image.layer.v1.tar+gzip", KILN_EXPORT_COMPRESSION_GZIP,
                  false, "application/vnd.oci.image.layer.v1.tar+gzip",
                  "application/vnd.docker.image.rootfs.diff.tar.gzip" },
                { "application/vnd.oci.image.layer.v1.tar+zstd", KILN_EXPORT_COMPRESSION_ZSTD,
                  false, "application/vnd.oci.image.layer.v1.tar+zstd",
                  "application/vnd.docker.image.rootfs.diff.tar.zstd" },
                { "application/vnd.docker.image.rootfs.diff.tar",
                  KILN_EXPORT_COMPRESSION_UNCOMPRESSED, false,
                  "application/vnd.oci.image.layer.v1.tar",
                  "application/vnd.docker.image.rootfs.diff.tar" },
                { "application/vnd.docker.image.rootfs.diff.tar.gzip", KILN_EXPORT_COMPRESSION_GZIP,
                  false, "application/vnd.oci.image.layer.v1.tar+gzip",
                  "application/vnd.docker.image.rootfs.diff.tar.gzip" },
                { "application/vnd.docker.image.rootfs.diff.tar.zstd", KILN_EXPORT_COMPRESSION_ZSTD,
                  false, "application/vnd.oci.image.layer.v1.tar+zstd",
                  "application/vnd.docker.image.rootfs.diff.tar.zstd" },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  KILN_EXPORT_COMPRESSION_UNCOMPRESSED, true,
                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  "application/vnd.docker.image.rootfs.foreign.diff.tar" },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  KILN_EXPORT_COMPRESSION_GZIP, true,
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                  KILN_EXPORT_COMPRESSION_ZSTD, true,
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", NULL },
                { "application/vnd.docker.image.rootfs.foreign.diff.tar",
                  KILN_EXPORT_COMPRESSION_UNCOMPRESSED, true,
                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  "application/vnd.docker.image.rootfs.foreign.diff.tar" },
                { "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  KILN_EXPORT_COMPRESSION_GZIP, true,
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" },
        };
        enum kiln_export_compression c;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *d = kiln_export_layer_media_type_convert(cases[i].mt, false);

                c = _KILN_EXPORT_COMPRESSION_INVALID;
                ASSERT_OK(kiln_export_compression_of_media_type(cases[i].mt, &c));
                ASSERT_EQ_INT(c, cases[i].c);
                ASSERT_EQ_INT(kiln_export_media_type_is_nondistributable(cases[i].mt),
                              cases[i].nondist);
                ASSERT_STREQ(kiln_export_layer_media_type_convert(cases[i].mt, true), cases[i].oci);
                if (cases[i].docker)
                        ASSERT_STREQ(d, cases[i].docker);
                else
                        ASSERT_TRUE(d == NULL);
        }

        ASSERT_STREQ(kiln_export_layer_media_type(KILN_EXPORT_COMPRESSION_GZIP, true),
                     "application/vnd.oci.image.layer.v1.tar+gzip");
        ASSERT_STREQ(kiln_export_layer_media_type(KILN_EXPORT_COMPRESSION_GZIP, false),
                     "application/vnd.docker.image.rootfs.diff.tar.gzip");
        ASSERT_STREQ(kiln_export_layer_media_type(KILN_EXPORT_COMPRESSION_ZSTD, true),
                     "application/vnd.oci.image.layer.v1.tar+zstd");
        ASSERT_STREQ(kiln_export_layer_media_type(KILN_EXPORT_COMPRESSION_ZSTD, false),
                     "application/vnd.docker.image.rootfs.diff.tar.zstd");
        ASSERT_STREQ(kiln_export_layer_media_type(KILN_EXPORT_COMPRESSION_UNCOMPRESSED, true),
                     "application/vnd.oci.image.layer.v1.tar");
        ASSERT_STREQ(kiln_export_layer_media_type(KILN_EXPORT_COMPRESSION_UNCOMPRESSED, false),
                     "application/vnd.docker.image.rootfs.diff.tar");
        ASSERT_TRUE(kiln_export_layer_media_type(_KILN_EXPORT_COMPRESSION_MAX, true) == NULL);

        /* not layers, or not ones kiln knows */
        ASSERT_EQ_INT(kiln_export_compression_of_media_type(KILN_CONTENT_MT_OCI_CONFIG, &c),
                      -EINVAL);
        ASSERT_EQ_INT(kiln_export_compression_of_media_type(
                              "application/vnd.oci.image.layer.v1.tar+gzip; x=y", &c),
                      -EINVAL);
        ASSERT_EQ_INT(kiln_export_compression_of_media_type("", &c), -EINVAL);
        ASSERT_EQ_INT(kiln_export_compression_of_media_type(NULL, &c), -EINVAL);
        ASSERT_TRUE(kiln_export_layer_media_type_convert("application/octet-stream", true) == NULL);
        ASSERT_TRUE(!kiln_export_media_type_is_nondistributable(KILN_CONTENT_MT_OCI_LAYER));
        return 0;
}

/* ---- the writer ---- */

TEST(writer_bad_arguments)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_export_layer_writer *w = NULL;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_export_layer_writer_new(s, KILN_EXPORT_COMPRESSION_GZIP, 10, &w, &err),
                      -EINVAL);
        ASSERT_TRUE(w == NULL);
        ASSERT_TRUE(contains(err, "compression-level 10"));
        err = kiln_error_free(err);
        ASSERT_EQ_INT(kiln_export_layer_writer_new(s, _KILN_EXPORT_COMPRESSION_MAX, -1, &w, &err),
                      -EINVAL);
        ASSERT_TRUE(w == NULL);
        return 0;
}

TEST(round_trip_every_gzip_level)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        /* more than one chunk: the compressor thread runs */
        size_t n = KILN_EXPORT_COMPRESS_CHUNK + 300000;
        _cleanup_free_ uint8_t *data = make_data(n, 1);
        int64_t size[11];

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        for (int l = -1; l <= 9; l++) {
                struct kiln_export_blob b;

                ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_GZIP, l, data, n, 65536, &b));
                size[l + 1] = b.size;
        }
        /* level 0 stores; 1 (ISA-L 0) is larger than the default, which
         * is the same as 2-5; 9 at most the default */
        ASSERT_TRUE(size[1] > (int64_t) n);
        ASSERT_TRUE(size[2] < (int64_t) n);
        ASSERT_EQ_INT(size[0], size[3]);
        ASSERT_EQ_INT(size[3], size[6]);
        ASSERT_TRUE(size[10] <= size[0]);
        /* small (one chunk, compressed at commit) at every level */
        for (int l = -1; l <= 9; l++)
                ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_GZIP, l, data, 70000, 1000, NULL));
        return 0;
}

TEST(round_trip_every_zstd_level)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = KILN_EXPORT_COMPRESS_CHUNK + 200000;
        _cleanup_free_ uint8_t *data = make_data(n, 2);
        static const int threaded[] = { -1, 0, 1, 3, 9, 19, 22 };
        struct kiln_export_blob def, three;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        /* every level on one chunk (compressed at commit) */
        for (int l = -1; l <= KILN_EXPORT_ZSTD_LEVEL_MAX; l++)
                ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_ZSTD, l, data, 300000, 9999, NULL));
        /* more than one chunk: the compressor threads run */
        for (size_t i = 0; i < ELEMENTSOF(threaded); i++)
                ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_ZSTD, threaded[i], data, n, 100000,
                                     NULL));
        /* the default is level 3 */
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_ZSTD, -1, data, n, 0, &def));
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_ZSTD, 3, data, n, 0, &three));
        ASSERT_STREQ(def.digest, three.digest);
        return 0;
}

TEST(round_trip_uncompressed)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 3 * KILN_EXPORT_COMPRESS_CHUNK + 5;
        _cleanup_free_ uint8_t *data = make_data(n, 3);
        struct kiln_export_blob b;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, -1, data, n, 4097, &b));
        ASSERT_EQ_INT(b.size, n);
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, 5, data, 10, 0, NULL));
        return 0;
}

TEST(round_trip_empty)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        static const uint8_t none[1];
        struct kiln_export_blob b;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++)
                for (int l = -1; l <= 1; l++) {
                        ASSERT_OK(round_trip(s, c, l, none, 0, 0, &b));
                        ASSERT_STREQ(b.diff_id, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e"
                                                "4649b934ca495991b7852b855");
                        if (c == KILN_EXPORT_COMPRESSION_UNCOMPRESSED)
                                ASSERT_EQ_INT(b.size, 0);
                        else
                                ASSERT_TRUE(b.size > 0);
                }
        /* zero-length writes change nothing */
        {
                _cleanup_(kiln_export_layer_writer_freep) struct kiln_export_layer_writer *w = NULL;
                struct kiln_export_blob e;

                ASSERT_OK(kiln_export_layer_writer_new(s, KILN_EXPORT_COMPRESSION_GZIP, -1, &w,
                                                       &err));
                ASSERT_OK(kiln_export_layer_writer_write(w, none, 0, &err));
                ASSERT_OK(kiln_export_layer_writer_commit(w, &e, &err));
                ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_GZIP, -1, none, 0, 0, &b));
                ASSERT_STREQ(e.digest, b.digest);
        }
        return 0;
}

TEST(round_trip_large)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 24u << 20;
        _cleanup_free_ uint8_t *data = make_data(n, 4);
        struct kiln_export_blob g, z, u;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_GZIP, -1, data, n, 10240, &g));
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_ZSTD, -1, data, n, 0, &z));
        ASSERT_OK(round_trip(s, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, -1, data, n, 512, &u));
        ASSERT_STREQ(g.diff_id, z.diff_id);
        ASSERT_STREQ(g.diff_id, u.digest);
        ASSERT_TRUE(g.size < (int64_t) n);
        ASSERT_TRUE(z.size < (int64_t) n);
        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 3);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        return 0;
}

TEST(same_input_same_digest)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        /* a whole number of chunks: the last one is empty */
        size_t n = 5 * KILN_EXPORT_COMPRESS_CHUNK;
        _cleanup_free_ uint8_t *data = make_data(n, 5);
        static const size_t steps[] = { 0, KILN_EXPORT_COMPRESS_CHUNK, 4096, 999983 };

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++)
                for (int l = -1; l <= 1; l++) {
                        struct kiln_export_blob first;

                        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                                struct kiln_export_blob b;

                                ASSERT_OK(round_trip(s, c, l, data, n, steps[i], &b));
                                if (i == 0)
                                        first = b;
                                else {
                                        ASSERT_STREQ(b.digest, first.digest);
                                        ASSERT_STREQ(b.diff_id, first.diff_id);
                                        ASSERT_EQ_INT(b.size, first.size);
                                }
                        }
                }
        /* writes of varying sizes across a chunk boundary give the bytes of
         * one write */
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++) {
                struct kiln_export_blob a, b;
                size_t len = KILN_EXPORT_COMPRESS_CHUNK + 1000;

                ASSERT_OK(round_trip(s, c, -1, data, len, 0, &a));
                ASSERT_OK(round_trip(s, c, -1, data, len, 3, &b));
                ASSERT_STREQ(a.digest, b.digest);
        }
        return 0;
}

/* Memory the writer gets from malloc may hold anything: the bytes must not
 * depend on it (the compressors' tables are reset for every chunk). */
TEST(same_digest_after_dirty_heap)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 6 * KILN_EXPORT_COMPRESS_CHUNK + 777;
        _cleanup_free_ uint8_t *data = make_data(n, 10);

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        /* keep freed blocks in the heap, where the next malloc finds them
         * (best effort: sanitizers bring their own malloc) */
        (void) mallopt(M_MMAP_THRESHOLD, 64 << 20);
        (void) mallopt(M_TRIM_THRESHOLD, 256 << 20);
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++)
                for (int l = -1; l <= 9; l++) {
                        struct kiln_export_blob clean, dirty;
                        void *junk[16];

                        if (c != KILN_EXPORT_COMPRESSION_GZIP && l > 1)
                                break;
                        ASSERT_OK(round_trip(s, c, l, data, n, 0, &clean));
                        for (size_t i = 0; i < ELEMENTSOF(junk); i++) {
                                size_t size = (size_t) 64 << (i % 12);

                                junk[i] = kiln_xmalloc(size * 1024);
                                memset(junk[i], 0x5a + (int) i, size * 1024);
                        }
                        for (size_t i = 0; i < ELEMENTSOF(junk); i++)
                                free(junk[i]);
                        ASSERT_OK(round_trip(s, c, l, data, n, 0, &dirty));
                        ASSERT_STREQ(clean.digest, dirty.digest);
                }
        return 0;
}

/* The number of compressor threads (from the CPUs the caller may use) never
 * changes the bytes. */
TEST(same_digest_with_one_cpu)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 7u << 20;
        _cleanup_free_ uint8_t *data = make_data(n, 9);
        cpu_set_t all, one;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(sched_getaffinity(0, sizeof(all), &all), 0);
        CPU_ZERO(&one);
        for (int i = 0; i < CPU_SETSIZE; i++)
                if (CPU_ISSET(i, &all)) {
                        CPU_SET(i, &one);
                        break;
                }
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++)
                for (int l = -1; l <= 9; l += 5) {
                        struct kiln_export_blob many, single;
                        int r;

                        ASSERT_OK(round_trip(s, c, l, data, n, 0, &many));
                        ASSERT_EQ_INT(sched_setaffinity(0, sizeof(one), &one), 0);
                        r = round_trip(s, c, l, data, n, 0, &single);
                        ASSERT_EQ_INT(sched_setaffinity(0, sizeof(all), &all), 0);
                        ASSERT_OK(r);
                        ASSERT_STREQ(many.digest, single.digest);
                }
        return 0;
}

struct par {
        struct kiln_content_store *s;
        const uint8_t *data;
        size_t n;
        enum kiln_export_compression c;
        struct kiln_export_blob blob;
        int r;
};

static void *par_main(void *userdata)
{
        struct par *p = userdata;

        p->r = write_layer(p->s, p->c, -1, p->data, p->n, 50000, &p->blob);
        return NULL;
}

TEST(concurrent_writers_same_digest)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 6u << 20;
        _cleanup_free_ uint8_t *data = make_data(n, 6);
        struct par p[6];
        pthread_t th[6];

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        for (int i = 0; i < 6; i++) {
                p[i] = (struct par){ .s = s,
                                     .data = data,
                                     .n = n,
                                     .c = i % 2 ? KILN_EXPORT_COMPRESSION_ZSTD
                                                : KILN_EXPORT_COMPRESSION_GZIP };
                ASSERT_EQ_INT(pthread_create(&th[i], NULL, par_main, &p[i]), 0);
        }
        for (int i = 0; i < 6; i++)
                pthread_join(th[i], NULL);
        for (int i = 0; i < 6; i++) {
                ASSERT_OK(p[i].r);
                ASSERT_OK(check_blob(s, &p[i].blob, p[i].c, data, n));
                ASSERT_STREQ(p[i].blob.digest, p[i % 2].blob.digest);
        }
        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 2);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        return 0;
}

TEST(abort_publishes_nothing)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t n = 5u << 20;
        _cleanup_free_ uint8_t *data = make_data(n, 7);
        static const size_t sizes[] = { 0, 100, 5u << 20 };

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++)
                for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                        struct kiln_export_layer_writer *w = NULL;

                        ASSERT_OK(kiln_export_layer_writer_new(s, c, -1, &w, &err));
                        if (sizes[i] > 0)
                                ASSERT_OK(kiln_export_layer_writer_write(w, data, sizes[i], &err));
                        if (sizes[i] > KILN_EXPORT_COMPRESS_CHUNK)
                                ASSERT_EQ_INT(count_entries(t.path, "ingest"), 1);
                        kiln_export_layer_writer_free(w);
                        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
                        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 0);
                }
        return 0;
}

TEST(commit_twice_and_write_after_commit)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_export_layer_writer_freep) struct kiln_export_layer_writer *w = NULL;
        struct kiln_export_blob b;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_OK(kiln_export_layer_writer_new(s, KILN_EXPORT_COMPRESSION_GZIP, -1, &w, &err));
        ASSERT_OK(kiln_export_layer_writer_write(w, "abc", 3, &err));
        ASSERT_OK(kiln_export_layer_writer_commit(w, &b, &err));
        ASSERT_EQ_INT(kiln_export_layer_writer_write(w, "d", 1, &err), -ESTALE);
        err = kiln_error_free(err);
        ASSERT_EQ_INT(kiln_export_layer_writer_commit(w, &b, &err), -ESTALE);
        w = kiln_export_layer_writer_free(w);
        /* the committed blob stays */
        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 1);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        return 0;
}

TEST(store_gone_is_a_clear_error)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *content = NULL;
        _cleanup_free_ uint8_t *data = make_data(3u << 20, 8);

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        content = kiln_xasprintf("%s/content", t.path);
        ASSERT_EQ_INT(nftw(content, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);

        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++) {
                _cleanup_(kiln_export_layer_writer_freep) struct kiln_export_layer_writer *w = NULL;
                struct kiln_export_blob b;
                int r;

                ASSERT_OK(kiln_export_layer_writer_new(s, c, -1, &w, &err));
                /* small input: a compressed layer first touches the store at
                 * commit, an uncompressed one at the first write */
                r = kiln_export_layer_writer_write(w, data, 1000, &err);
                if (c == KILN_EXPORT_COMPRESSION_UNCOMPRESSED) {
                        ASSERT_EQ_INT(r, -ENOENT);
                        printf("# %s\n", kiln_error_message(err));
                        err = kiln_error_free(err);
                } else
                        ASSERT_OK(r);
                r = kiln_export_layer_writer_commit(w, &b, &err);
                ASSERT_EQ_INT(r, -ENOENT);
                ASSERT_TRUE(contains(err, "layer blob"));
                ASSERT_TRUE(contains(err, content));
                err = kiln_error_free(err);
                w = kiln_export_layer_writer_free(w);

                /* large input: the first full chunk fails, and keeps failing */
                ASSERT_OK(kiln_export_layer_writer_new(s, c, -1, &w, &err));
                r = kiln_export_layer_writer_write(w, data, 3u << 20, &err);
                ASSERT_EQ_INT(r, -ENOENT);
                ASSERT_TRUE(contains(err, kiln_export_compression_to_string(c)));
                err = kiln_error_free(err);
                ASSERT_EQ_INT(kiln_export_layer_writer_write(w, data, 10, &err), -ENOENT);
                ASSERT_TRUE(contains(err, content));
                err = kiln_error_free(err);
                ASSERT_EQ_INT(kiln_export_layer_writer_commit(w, &b, &err), -ENOENT);
                err = kiln_error_free(err);
        }
        return 0;
}

TEST(store_full_fails_and_leaves_nothing)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        /* random bytes do not compress: the store fills up mid-stream */
        size_t n = 24u << 20;
        _cleanup_free_ uint8_t *data = kiln_xmalloc(n);
        uint32_t x = 12345;

        if (geteuid() != 0) {
                printf("# skip: mounting a small tmpfs needs root\n");
                return KILN_TEST_SKIP;
        }
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                data[i] = (uint8_t) x;
        }
        ASSERT_OK(tmp_init(&t));
        if (mount("kiln-test", t.path, "tmpfs", 0, "size=8m") < 0) {
                printf("# skip: cannot mount tmpfs: %s\n", strerror(errno));
                return KILN_TEST_SKIP;
        }
        t.mounted = true;
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        for (int c = 0; c < _KILN_EXPORT_COMPRESSION_MAX; c++) {
                _cleanup_(kiln_export_layer_writer_freep) struct kiln_export_layer_writer *w = NULL;
                struct kiln_export_blob b;
                size_t off = 0;
                int r = 0;

                ASSERT_OK(kiln_export_layer_writer_new(s, c, 1, &w, &err));
                while (off < n && r >= 0) {
                        r = kiln_export_layer_writer_write(w, data + off, 65536, &err);
                        off += 65536;
                }
                if (r >= 0)
                        r = kiln_export_layer_writer_commit(w, &b, &err);
                ASSERT_EQ_INT(r, -ENOSPC);
                ASSERT_TRUE(contains(err, "layer blob"));
                err = kiln_error_free(err);
                /* the failure sticks */
                ASSERT_EQ_INT(kiln_export_layer_writer_commit(w, &b, &err), -ENOSPC);
                err = kiln_error_free(err);
                w = kiln_export_layer_writer_free(w);
                ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
                ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 0);
        }
        return 0;
}
