/* SPDX-License-Identifier: Apache-2.0 */
#include "export/image.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "content/content.h"
#include "export/tar.h"
#include "snapshot/snapshot.h"

/* Bytes read from a blob at a time when a layer is converted to another
 * compression. */
#define CONVERT_CHUNK (256u << 10)
/* The marker BuildKit's exporter puts on history entries it adds for
 * layers the config's history does not account for. */
#define HISTORY_COMMENT_ADDED    "buildkit.exporter.image.v0"
#define HISTORY_CREATED_BY_ADDED "created by kiln"
/* A time as Go's RFC3339Nano writes it, with the NUL:
 * "-292277022657-01-27T08:29:52.999999999+23:59" fits. */
#define TIME_TEXT_SIZE 48
/* BuildKit's system.DefaultPathEnv for Linux. */
#define DEFAULT_PATH_ENV "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- blobs remembered in snapshot labels ---- */

struct blob_ref {
        char digest[KILN_CONTENT_DIGEST_SIZE];
        char diff_id[KILN_CONTENT_DIGEST_SIZE];
        char media_type[128];
        int64_t size;
        enum kiln_export_compression compression;
};

static char *label_key(enum kiln_export_compression c, bool has_epoch, int64_t epoch)
{
        const char *name = kiln_export_compression_to_string(c);

        if (has_epoch)
                return kiln_xasprintf("blob.%s.%" PRId64, name, epoch);
        return kiln_xasprintf("blob.%s", name);
}

/* Reads the first bytes of a blob to tell its compression by magic, for
 * Docker's plain layer type, which is known to carry gzip. */
static enum kiln_export_compression sniff_compression(struct kiln_content_store *cs,
                                                      const char *digest,
                                                      enum kiln_export_compression fallback)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_close_ int fd = -1;
        unsigned char m[4];

        if (kiln_content_store_open_blob(cs, digest, &fd, &e) < 0)
                return fallback;
        if (pread(fd, m, sizeof(m), 0) != (ssize_t) sizeof(m))
                return fallback;
        if (m[0] == 0x1f && m[1] == 0x8b && m[2] == 0x08)
                return KILN_EXPORT_COMPRESSION_GZIP;
        if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
                return KILN_EXPORT_COMPRESSION_ZSTD;
        return fallback;
}

/* The blob label key of snapshot id names, when it is well formed and the
 * blob is still in the store with its size: 1 and *ret; else 0. */
static int blob_label_read(struct kiln_content_store *cs, struct kiln_snapshot_store *ss,
                           const char *id, const char *key, struct blob_ref *ret)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *v = NULL;
        const char *digest, *mt, *diff_id;
        json_int_t size;
        uint64_t have;
        json_t *o;
        int r;

        r = kiln_snapshot_label_get(ss, id, key, &v);
        if (r <= 0)
                return 0;
        o = json_loads(v, JSON_REJECT_DUPLICATES, NULL);
        if (!o || json_unpack(o, "{s:s, s:s, s:I, s:s}", "digest", &digest, "mediaType", &mt,
                              "size", &size, "diffID", &diff_id) < 0)
                goto bad;
        if (kiln_content_digest_check(digest, &e) < 0 ||
            kiln_content_digest_check(diff_id, &e) < 0 || size < 0 ||
            strlen(mt) >= sizeof(ret->media_type) ||
            kiln_export_compression_of_media_type(mt, &ret->compression) < 0)
                goto bad;
        if (kiln_content_store_size(cs, digest, &have, &e) < 0 || have != (uint64_t) size) {
                json_decref(o);
                return 0; /* collected since, or another size: compress again */
        }
        snprintf(ret->digest, sizeof(ret->digest), "%s", digest);
        snprintf(ret->diff_id, sizeof(ret->diff_id), "%s", diff_id);
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", mt);
        ret->size = size;
        if (ret->compression == KILN_EXPORT_COMPRESSION_UNCOMPRESSED &&
            streq(mt, KILN_CONTENT_MT_DOCKER_LAYER))
                ret->compression = sniff_compression(cs, digest, ret->compression);
        json_decref(o);
        return 1;
bad:
        log_debug("snapshot %s: ignoring malformed label %s", id, key);
        json_decref(o);
        return 0;
}

static void blob_label_write(struct kiln_snapshot_store *ss, const char *id, const char *key,
                             const struct kiln_export_blob *b)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ char *s = NULL;
        json_t *o;

        o = json_pack("{s:s, s:s, s:I, s:s}", "digest", b->digest, "mediaType",
                      kiln_export_layer_media_type(b->compression, true), "size",
                      (json_int_t) b->size, "diffID", b->diff_id);
        s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(o);
        /* A missing label only costs a compression at the next export. */
        if (!s || kiln_snapshot_label_set(ss, id, key, s, &e) < 0)
                log_debug("label snapshot %s with its blob %s: %s", id, b->digest,
                          e ? kiln_error_message(e) : "out of memory");
}

/* ---- layers ---- */

enum job_kind {
        JOB_REUSE,   /* the blob in .blob is used as it is */
        JOB_DIFF,    /* diff the snapshot, compress, publish */
        JOB_CONVERT, /* decompress .blob, compress again, publish */
};

struct export_ctx;

struct layer {
        char id[KILN_SNAPSHOT_ID_SIZE];
        int64_t created_ns;
        bool used; /* holds a kiln_snapshot_use */
        enum job_kind kind;
        struct blob_ref blob; /* the result (and the source of a conversion) */
        struct export_ctx *ctx;
        struct kiln_export_layer_writer *writer;
        int r;
        struct kiln_error *err;
};

struct export_ctx {
        struct kiln_content_store *cs;
        struct kiln_snapshot_store *ss;
        const struct kiln_export_image_options *o;
        char *want_key;
        struct layer *layers;
        size_t n_layers;
        size_t *jobs; /* indexes into layers of the layers to build */
        size_t n_jobs;
        atomic_size_t next;
        atomic_bool stop; /* a job failed: the others end early */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        size_t finished; /* under lock */
};

static bool cancelled(const struct export_ctx *c)
{
        return c->o->cancel && atomic_load(c->o->cancel);
}

static int stop_check(struct layer *l, struct kiln_error **err)
{
        if (cancelled(l->ctx))
                return kiln_error_set(err, -ECANCELED, "export of snapshot %s cancelled", l->id);
        if (atomic_load(&l->ctx->stop))
                return kiln_error_set(err, -ECANCELED,
                                      "export of snapshot %s stopped: another layer failed", l->id);
        return 0;
}

/* The tar sink of a layer: the layer writer, stopped by a cancel or by the
 * failure of another layer. */
static int layer_sink(void *userdata, const void *buf, size_t n, struct kiln_error **err)
{
        struct layer *l = userdata;
        int r = stop_check(l, err);

        if (r < 0)
                return r;
        return kiln_export_layer_writer_write(l->writer, buf, n, err);
}

/* Reads the next at most CONVERT_CHUNK bytes of l's blob into buf: their
 * count, 0 at its end, or -errno with *err set. */
static ssize_t read_blob(struct layer *l, int fd, void *buf, struct kiln_error **err)
{
        ssize_t n = read(fd, buf, CONVERT_CHUNK);

        if (n < 0)
                return kiln_error_set(err, -errno, "read blob %s: %s", l->blob.digest,
                                      strerror(errno));
        return n;
}

static int convert_gzip(struct layer *l, int fd, struct kiln_error **err)
{
        _cleanup_free_ unsigned char *in = kiln_xmalloc(CONVERT_CHUNK);
        _cleanup_free_ unsigned char *out = kiln_xmalloc(CONVERT_CHUNK);
        z_stream z = { 0 };
        bool ended = false;
        int r = 0, zr;

        if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
                return kiln_error_set(err, -ENOMEM, "blob %s: cannot start gzip decompression",
                                      l->blob.digest);
        for (;;) {
                if (z.avail_in == 0) {
                        ssize_t n = read_blob(l, fd, in, err);
                        if (n < 0) {
                                r = (int) n;
                                goto out;
                        }
                        if (n == 0)
                                break;
                        z.next_in = in;
                        z.avail_in = (uInt) n;
                }
                if (ended) {
                        /* Another gzip member follows (pigz, concatenated
                         * streams): Go's gzip reader reads them all. */
                        if (inflateReset(&z) != Z_OK) {
                                r = kiln_error_set(err, -EBADMSG, "blob %s: bad gzip stream",
                                                   l->blob.digest);
                                goto out;
                        }
                        ended = false;
                }
                z.next_out = out;
                z.avail_out = CONVERT_CHUNK;
                zr = inflate(&z, Z_NO_FLUSH);
                if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
                        r = kiln_error_set(err, -EBADMSG, "blob %s: bad gzip data: %s",
                                           l->blob.digest, z.msg ? z.msg : "inflate failed");
                        goto out;
                }
                if (zr == Z_STREAM_END)
                        ended = true;
                if (CONVERT_CHUNK - z.avail_out > 0) {
                        r = layer_sink(l, out, CONVERT_CHUNK - z.avail_out, err);
                        if (r < 0)
                                goto out;
                }
        }
        if (!ended)
                r = kiln_error_set(err, -EBADMSG, "blob %s: gzip stream cut short", l->blob.digest);
out:
        inflateEnd(&z);
        return r;
}

static int convert_zstd(struct layer *l, int fd, struct kiln_error **err)
{
        _cleanup_free_ unsigned char *in = kiln_xmalloc(CONVERT_CHUNK);
        size_t out_size = ZSTD_DStreamOutSize();
        _cleanup_free_ unsigned char *out = kiln_xmalloc(out_size);
        ZSTD_DCtx *d = ZSTD_createDCtx();
        size_t last = 0;
        int r = 0;

        if (!d)
                return kiln_error_set(err, -ENOMEM, "blob %s: cannot start zstd decompression",
                                      l->blob.digest);
        for (;;) {
                ssize_t n = read_blob(l, fd, in, err);
                if (n < 0) {
                        r = (int) n;
                        goto out;
                }
                if (n == 0)
                        break;
                ZSTD_inBuffer ib = { in, (size_t) n, 0 };
                while (ib.pos < ib.size) {
                        ZSTD_outBuffer ob = { out, out_size, 0 };
                        last = ZSTD_decompressStream(d, &ob, &ib);
                        if (ZSTD_isError(last)) {
                                r = kiln_error_set(err, -EBADMSG, "blob %s: bad zstd data: %s",
                                                   l->blob.digest, ZSTD_getErrorName(last));
                                goto out;
                        }
                        if (ob.pos > 0) {
                                r = layer_sink(l, out, ob.pos, err);
                                if (r < 0)
                                        goto out;
                        }
                }
        }
        /* Flush what the decoder still holds. */
        for (;;) {
                ZSTD_inBuffer ib = { in, 0, 0 };
                ZSTD_outBuffer ob = { out, out_size, 0 };
                last = ZSTD_decompressStream(d, &ob, &ib);
                if (ZSTD_isError(last)) {
                        r = kiln_error_set(err, -EBADMSG, "blob %s: bad zstd data: %s",
                                           l->blob.digest, ZSTD_getErrorName(last));
                        goto out;
                }
                if (ob.pos == 0)
                        break;
                r = layer_sink(l, out, ob.pos, err);
                if (r < 0)
                        goto out;
        }
        if (last != 0)
                r = kiln_error_set(err, -EBADMSG, "blob %s: zstd stream cut short", l->blob.digest);
out:
        ZSTD_freeDCtx(d);
        return r;
}

static int convert_plain(struct layer *l, int fd, struct kiln_error **err)
{
        _cleanup_free_ unsigned char *in = kiln_xmalloc(CONVERT_CHUNK);

        for (;;) {
                ssize_t n = read_blob(l, fd, in, err);
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return 0;
                int r = layer_sink(l, in, (size_t) n, err);
                if (r < 0)
                        return r;
        }
}

static int convert_blob(struct layer *l, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        int r;

        r = kiln_content_store_open_blob(l->ctx->cs, l->blob.digest, &fd, err);
        if (r < 0)
                return r;
        switch (l->blob.compression) {
        case KILN_EXPORT_COMPRESSION_GZIP:
                return convert_gzip(l, fd, err);
        case KILN_EXPORT_COMPRESSION_ZSTD:
                return convert_zstd(l, fd, err);
        case KILN_EXPORT_COMPRESSION_UNCOMPRESSED:
                return convert_plain(l, fd, err);
        case _KILN_EXPORT_COMPRESSION_MAX:
        case _KILN_EXPORT_COMPRESSION_INVALID:
                break;
        }
        return kiln_error_set(err, -EINVAL, "blob %s: unknown compression", l->blob.digest);
}

static int build_layer(struct layer *l, struct kiln_error **err)
{
        const struct kiln_export_image_options *o = l->ctx->o;
        struct kiln_export_blob b;
        int r;

        r = stop_check(l, err);
        if (r < 0)
                return r;
        r = kiln_export_layer_writer_new(l->ctx->cs, o->compression, o->level, &l->writer, err);
        if (r < 0)
                return r;
        if (l->kind == JOB_CONVERT) {
                r = convert_blob(l, err);
        } else {
                struct kiln_export_tar_options to = { .has_epoch = o->has_epoch,
                                                      .epoch = o->epoch };
                r = kiln_export_tar_diff(l->ctx->ss, l->id, &to, layer_sink, l, err);
        }
        if (r >= 0)
                r = kiln_export_layer_writer_commit(l->writer, &b, err);
        l->writer = kiln_export_layer_writer_free(l->writer);
        if (r < 0)
                return r;
        if (l->kind == JOB_CONVERT && !streq(b.diff_id, l->blob.diff_id))
                return kiln_error_set(err, -EBADMSG,
                                      "blob %s: uncompressed content is %s, its label says %s",
                                      l->blob.digest, b.diff_id, l->blob.diff_id);
        blob_label_write(l->ctx->ss, l->id, l->ctx->want_key, &b);
        snprintf(l->blob.digest, sizeof(l->blob.digest), "%s", b.digest);
        snprintf(l->blob.diff_id, sizeof(l->blob.diff_id), "%s", b.diff_id);
        snprintf(l->blob.media_type, sizeof(l->blob.media_type), "%s",
                 kiln_export_layer_media_type(b.compression, true));
        l->blob.size = b.size;
        l->blob.compression = b.compression;
        return 0;
}

static void *worker(void *userdata)
{
        struct export_ctx *c = userdata;

        for (;;) {
                size_t i = atomic_fetch_add(&c->next, 1);
                if (i >= c->n_jobs)
                        break;
                struct layer *l = &c->layers[c->jobs[i]];
                l->r = build_layer(l, &l->err);
                if (l->r < 0 && l->r != -ECANCELED)
                        atomic_store(&c->stop, true);
                pthread_mutex_lock(&c->lock);
                c->finished++;
                pthread_cond_signal(&c->cond);
                pthread_mutex_unlock(&c->lock);
        }
        return NULL;
}

static size_t cpu_count(void)
{
        cpu_set_t set;
        long n;

        if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
                return (size_t) CPU_COUNT(&set);
        n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (size_t) n : 1;
}

static void status(const struct kiln_export_image_options *o, const char *id, int64_t current,
                   int64_t total, bool done)
{
        if (o->on_status)
                o->on_status(o->userdata, id, current, total, done);
}

/* Runs the jobs on at most one thread per CPU, reporting progress from
 * this thread. */
static int run_jobs(struct export_ctx *c, struct kiln_error **err)
{
        size_t n_threads = cpu_count(), started = 0, reused;
        _cleanup_free_ pthread_t *threads = NULL;
        int r = 0;

        if (n_threads > c->n_jobs)
                n_threads = c->n_jobs;
        reused = c->n_layers - c->n_jobs;
        status(c->o, "exporting layers", (int64_t) reused, (int64_t) c->n_layers, false);
        if (c->n_jobs == 0)
                return 0;
        threads = kiln_xcalloc(n_threads, sizeof(*threads));
        for (size_t i = 0; i < n_threads; i++) {
                int pr = pthread_create(&threads[i], NULL, worker, c);
                if (pr != 0) {
                        if (started > 0)
                                break; /* the started ones take every job */
                        return kiln_error_set(err, -pr, "export layers: cannot start a thread: %s",
                                              strerror(pr));
                }
                started++;
        }
        pthread_mutex_lock(&c->lock);
        for (size_t seen = 0; c->finished < c->n_jobs;) {
                pthread_cond_wait(&c->cond, &c->lock);
                if (c->finished != seen) {
                        seen = c->finished;
                        pthread_mutex_unlock(&c->lock);
                        status(c->o, "exporting layers", (int64_t) (reused + seen),
                               (int64_t) c->n_layers, false);
                        pthread_mutex_lock(&c->lock);
                }
        }
        pthread_mutex_unlock(&c->lock);
        for (size_t i = 0; i < started; i++)
                pthread_join(threads[i], NULL);

        /* The first failure in layer order that is not the echo of another
         * one; a cancel shows as such. */
        struct layer *failed = NULL;
        for (size_t i = 0; i < c->n_jobs; i++) {
                struct layer *l = &c->layers[c->jobs[i]];
                if (l->r >= 0)
                        continue;
                if (!failed || (failed->r == -ECANCELED && l->r != -ECANCELED))
                        failed = l;
        }
        if (failed) {
                r = failed->r;
                *err = TAKE_PTR(failed->err);
                if (r == -ECANCELED && cancelled(c))
                        return kiln_error_set(err, r, "export cancelled");
                return kiln_error_wrap(err, "export layer of snapshot %s", failed->id);
        }
        return 0;
}

/* Decides per layer: reuse a blob its labels name, convert one, or diff. */
static void plan_layer(struct export_ctx *c, struct layer *l)
{
        const struct kiln_export_image_options *o = c->o;
        struct blob_ref b;

        l->kind = JOB_DIFF;
        if (blob_label_read(c->cs, c->ss, l->id, c->want_key, &b) > 0 &&
            b.compression == o->compression) {
                l->blob = b;
                l->kind = JOB_REUSE;
                return;
        }
        /* The blob the layer was pulled as: its bytes are the base image's,
         * whatever the epoch (BuildKit keeps base layers as they are). */
        if (blob_label_read(c->cs, c->ss, l->id, "blob", &b) > 0) {
                l->blob = b;
                l->kind = !o->force_compression || b.compression == o->compression ? JOB_REUSE
                                                                                   : JOB_CONVERT;
                return;
        }
        for (int k = 0; k < _KILN_EXPORT_COMPRESSION_MAX; k++) {
                if ((enum kiln_export_compression) k == o->compression)
                        continue;
                _cleanup_free_ char *key = label_key(k, o->has_epoch, o->epoch);
                if (blob_label_read(c->cs, c->ss, l->id, key, &b) > 0) {
                        l->blob = b;
                        l->kind = o->force_compression ? JOB_CONVERT : JOB_REUSE;
                        return;
                }
        }
}

/* ---- times ---- */

struct gotime {
        int64_t sec; /* Unix seconds */
        int32_t nsec;
        int32_t offset; /* seconds east of UTC */
};

static int days_in_month(int y, int m)
{
        static const int d[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

        return m == 2 && leap ? 29 : d[m - 1];
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
        int64_t era, doe, yoe, doy, mp;

        z += 719468;
        era = (z >= 0 ? z : z - 146096) / 146097;
        doe = z - era * 146097;
        yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        mp = (5 * doy + 2) / 153;
        *d = (int) (doy - (153 * mp + 2) / 5 + 1);
        *m = (int) (mp < 10 ? mp + 3 : mp - 9);
        *y = yoe + era * 400 + (*m <= 2);
}

/* Go's time.Parse(time.RFC3339, s) as encoding/json uses it. */
static bool gotime_parse(const char *s, struct gotime *ret)
{
        int y, mo, d, h, mi, sec, oh, om;
        int32_t nsec = 0, offset = 0;
        const char *p;

        if (strlen(s) < 20 || !kiln_parse_digits(s, 4, &y) || s[4] != '-' ||
            !kiln_parse_digits(s + 5, 2, &mo) || s[7] != '-' || !kiln_parse_digits(s + 8, 2, &d) ||
            s[10] != 'T' || !kiln_parse_digits(s + 11, 2, &h) || s[13] != ':' ||
            !kiln_parse_digits(s + 14, 2, &mi) || s[16] != ':' ||
            !kiln_parse_digits(s + 17, 2, &sec))
                return false;
        if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59)
                return false;
        p = s + 19;
        if (*p == '.') {
                int n = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, n++)
                        if (n < 9)
                                nsec = nsec * 10 + (*p - '0');
                if (n == 0)
                        return false;
                for (; n < 9; n++)
                        nsec *= 10;
        }
        if (streq(p, "Z")) {
                offset = 0;
        } else if ((p[0] == '+' || p[0] == '-') && strlen(p) == 6 &&
                   kiln_parse_digits(p + 1, 2, &oh) && p[3] == ':' &&
                   kiln_parse_digits(p + 4, 2, &om) && oh < 24 && om < 60) {
                offset = (oh * 3600 + om * 60) * (p[0] == '-' ? -1 : 1);
        } else {
                return false;
        }
        ret->sec = kiln_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
        ret->nsec = nsec;
        ret->offset = offset;
        return true;
}

/* Go's RFC3339Nano: fraction without trailing zeros, "Z" for a zero offset. */
static void gotime_format(const struct gotime *t, char out[static TIME_TEXT_SIZE])
{
        int64_t local = t->sec + t->offset, days = local / 86400, rem = local % 86400, y;
        char frac[16] = "";
        int m, d;

        if (rem < 0) {
                rem += 86400;
                days--;
        }
        civil_from_days(days, &y, &m, &d);
        if (t->nsec > 0) {
                int n = snprintf(frac, sizeof(frac), ".%09" PRId32, t->nsec);
                while (n > 1 && frac[n - 1] == '0')
                        frac[--n] = '\0';
        }
        if (t->offset == 0)
                snprintf(out, TIME_TEXT_SIZE, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d%sZ", y, m, d,
                         (int) (rem / 3600), (int) (rem / 60 % 60), (int) (rem % 60), frac);
        else
                snprintf(out, TIME_TEXT_SIZE, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d%s%c%02d:%02d",
                         y, m, d, (int) (rem / 3600), (int) (rem / 60 % 60), (int) (rem % 60), frac,
                         t->offset < 0 ? '-' : '+', abs(t->offset) / 3600,
                         abs(t->offset) / 60 % 60);
}

static bool gotime_after(const struct gotime *a, const struct gotime *b)
{
        return a->sec > b->sec || (a->sec == b->sec && a->nsec > b->nsec);
}

/* ---- config ---- */

struct history {
        bool has_created;
        struct gotime created;
        char *created_by;
        char *author;
        char *comment;
        bool empty_layer;
};

static void history_free(struct history *h, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(h[i].created_by);
                free(h[i].author);
                free(h[i].comment);
        }
        free(h);
}

static int history_string(json_t *e, const char *key, size_t i, char **ret, struct kiln_error **err)
{
        json_t *v = json_object_get(e, key);

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return kiln_error_set(
                        err, -EINVAL,
                        "invalid image config for export: history[%zu].%s: expected a "
                        "string",
                        i, key);
        *ret = kiln_xstrdup(json_string_value(v));
        return 0;
}

static int history_parse(json_t *cfg, struct history **ret, size_t *n_ret, struct kiln_error **err)
{
        json_t *a = json_object_get(cfg, "history"), *e;
        struct history *h;
        size_t i;
        int r;

        *ret = NULL;
        *n_ret = 0;
        if (!a || json_is_null(a))
                return 0;
        if (!json_is_array(a))
                return kiln_error_set(
                        err, -EINVAL,
                        "invalid image config for export: history: expected an array");
        h = kiln_xcalloc(json_array_size(a) + 1, sizeof(*h));
        json_array_foreach (a, i, e) {
                json_t *v;

                if (!json_is_object(e)) {
                        r = kiln_error_set(err, -EINVAL,
                                           "invalid image config for export: history[%zu]: "
                                           "expected an object",
                                           i);
                        goto fail;
                }
                v = json_object_get(e, "created");
                if (v && !json_is_null(v)) {
                        if (!json_is_string(v) ||
                            !gotime_parse(json_string_value(v), &h[i].created)) {
                                r = kiln_error_set(err, -EINVAL,
                                                   "invalid image config for export: "
                                                   "history[%zu].created: expected an RFC 3339 "
                                                   "time",
                                                   i);
                                goto fail;
                        }
                        h[i].has_created = true;
                }
                if ((r = history_string(e, "created_by", i, &h[i].created_by, err)) < 0 ||
                    (r = history_string(e, "author", i, &h[i].author, err)) < 0 ||
                    (r = history_string(e, "comment", i, &h[i].comment, err)) < 0)
                        goto fail;
                v = json_object_get(e, "empty_layer");
                if (v && !json_is_null(v)) {
                        if (!json_is_boolean(v)) {
                                r = kiln_error_set(err, -EINVAL,
                                                   "invalid image config for export: "
                                                   "history[%zu].empty_layer: expected a boolean",
                                                   i);
                                goto fail;
                        }
                        h[i].empty_layer = json_is_true(v);
                }
        }
        *ret = h;
        *n_ret = json_array_size(a);
        return 0;
fail:
        history_free(h, json_array_size(a));
        return r;
}

static struct gotime gotime_from_ns(int64_t ns)
{
        int64_t s = ns / 1000000000, n = ns % 1000000000;

        if (n < 0) {
                n += 1000000000;
                s--;
        }
        return (struct gotime){ .sec = s, .nsec = (int32_t) n };
}

/* BuildKit's normalizeLayersAndHistory: one non-empty history entry per
 * layer, every entry with a created time. */
static void history_normalize(struct history **hp, size_t *np, const struct layer *layers,
                              size_t n_layers)
{
        struct history *h = *hp;
        size_t n = *np, history_layers = 0, li = 0;
        const struct gotime *created = NULL;
        bool no_created = false;

        for (size_t i = 0; i < n; i++)
                history_layers += !h[i].empty_layer;
        if (history_layers > n_layers) {
                /* Entries for layers that are not there: the surplus becomes
                 * empty, from the bottom. */
                size_t l = 0;
                for (size_t i = 0; i < n; i++) {
                        if (l >= n_layers)
                                h[i].empty_layer = true;
                        if (!h[i].empty_layer)
                                l++;
                }
                history_layers = n_layers;
        }
        if (n_layers > history_layers) {
                h = kiln_xreallocarray(h, n + n_layers - history_layers, sizeof(*h));
                for (size_t i = history_layers; i < n_layers; i++)
                        h[n++] = (struct history){
                                .has_created = true,
                                .created = gotime_from_ns(layers[i].created_ns),
                                .created_by = kiln_xstrdup(HISTORY_CREATED_BY_ADDED),
                                .comment = kiln_xstrdup(HISTORY_COMMENT_ADDED),
                        };
        }
        for (size_t i = 0; i < n; i++) {
                if (h[i].empty_layer)
                        continue;
                if (!h[i].has_created && li < n_layers) {
                        h[i].created = gotime_from_ns(layers[li].created_ns);
                        h[i].has_created = true;
                }
                li++;
        }
        /* The first new layer's time, so that a metadata entry after base
         * layers does not get a base layer's time; else the last time. */
        for (size_t i = 0; i < n; i++) {
                if (h[i].has_created) {
                        created = &h[i].created;
                        if (no_created)
                                break;
                } else {
                        no_created = true;
                }
        }
        no_created = false;
        for (size_t i = 0; i < n; i++) {
                if (h[i].has_created) {
                        if (no_created)
                                created = &h[i].created;
                } else {
                        no_created = true;
                        if (created) {
                                h[i].created = *created;
                                h[i].has_created = true;
                        }
                }
        }
        *hp = h;
        *np = n;
}

static json_t *time_json(const struct gotime *t)
{
        char s[TIME_TEXT_SIZE];

        gotime_format(t, s);
        return json_string(s);
}

static int cmp_keys(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* BuildKit's defaultImageConfig, for a result without a config: the
 * platform kiln runs on, PATH set, working directory "/". */
static json_t *default_config(void)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 };
        json_t *o = json_object(), *c = json_object(), *env = json_array(), *rootfs = json_object();

        kiln_content_platform_default(&p);
        json_object_set_new(o, "architecture", json_string(p.architecture));
        json_object_set_new(o, "os", json_string(p.os));
        if (p.variant && *p.variant)
                json_object_set_new(o, "variant", json_string(p.variant));
        json_array_append_new(env, json_string("PATH=" DEFAULT_PATH_ENV));
        json_object_set_new(c, "Env", env);
        json_object_set_new(c, "WorkingDir", json_string("/"));
        json_object_set_new(o, "config", c);
        json_object_set_new(rootfs, "type", json_string("layers"));
        json_object_set_new(rootfs, "diff_ids", json_null());
        json_object_set_new(o, "rootfs", rootfs);
        return o;
}

/* BuildKit's patchImageConfig: rootfs, history and created replaced, the
 * top-level keys sorted (Go marshals the map), compact. */
static int config_build(const char *config_json, size_t config_len, const struct layer *layers,
                        size_t n_layers, const struct kiln_export_image_options *o,
                        struct kiln_buf *out, struct kiln_error **err)
{
        struct history *h = NULL;
        size_t n_h = 0, n_keys = 0, base_entries = 0;
        json_t *cfg, *patched = NULL, *v, *rootfs, *ids, *hist;
        const char *key;
        const char **keys = NULL;
        struct gotime epoch = { .sec = o->epoch };
        json_error_t je;
        int r;

        if (!config_json || config_len == 0)
                cfg = default_config();
        else
                cfg = json_loadb(config_json, config_len, JSON_REJECT_DUPLICATES, &je);
        if (!cfg)
                return kiln_error_set(err, -EINVAL,
                                      "invalid image config for export: %s (offset %d)", je.text,
                                      je.position);
        if (!json_is_object(cfg)) {
                r = kiln_error_set(err, -EINVAL, "invalid image config for export: not an object");
                goto out;
        }
        v = json_object_get(cfg, "os");
        if (!json_is_string(v) || !*json_string_value(v)) {
                r = kiln_error_set(err, -EINVAL, "invalid image config for export: missing os");
                goto out;
        }
        v = json_object_get(cfg, "architecture");
        if (!json_is_string(v) || !*json_string_value(v)) {
                r = kiln_error_set(err, -EINVAL,
                                   "invalid image config for export: missing architecture");
                goto out;
        }
        r = history_parse(cfg, &h, &n_h, err);
        if (r < 0)
                goto out;
        /* BuildKit keeps the times of the base image's entries (those equal
         * to the base config's history) and clamps from the first entry of
         * this build on. The converter dates this build's entries with the
         * epoch itself, so the base entries are those before the first entry
         * without a time or dated at the epoch, before normalisation gives
         * every entry a time. */
        while (o->has_epoch && base_entries < n_h && h[base_entries].has_created &&
               (h[base_entries].created.sec != epoch.sec || h[base_entries].created.nsec != 0))
                base_entries++;
        history_normalize(&h, &n_h, layers, n_layers);

        rootfs = json_object();
        json_object_set_new(rootfs, "type", json_string("layers"));
        /* BuildKit's Go leaves an empty list null; the image-spec schema
         * (and kiln's own parser) want an array. */
        ids = json_array();
        for (size_t i = 0; i < n_layers; i++)
                json_array_append_new(ids, json_string(layers[i].blob.diff_id));
        json_object_set_new(rootfs, "diff_ids", ids);
        json_object_set_new(cfg, "rootfs", rootfs);

        if (o->has_epoch)
                for (size_t i = base_entries; i < n_h; i++)
                        if (!h[i].has_created || gotime_after(&h[i].created, &epoch)) {
                                h[i].created = epoch;
                                h[i].has_created = true;
                        }
        hist = json_array();
        for (size_t i = 0; i < n_h; i++) {
                json_t *e = json_object();
                if (h[i].has_created)
                        json_object_set_new(e, "created", time_json(&h[i].created));
                if (h[i].created_by && *h[i].created_by)
                        json_object_set_new(e, "created_by", json_string(h[i].created_by));
                if (h[i].author && *h[i].author)
                        json_object_set_new(e, "author", json_string(h[i].author));
                if (h[i].comment && *h[i].comment)
                        json_object_set_new(e, "comment", json_string(h[i].comment));
                if (h[i].empty_layer)
                        json_object_set_new(e, "empty_layer", json_true());
                json_array_append_new(hist, e);
        }
        /* Go would write null for no entries; the schema wants an array or
         * nothing (ocispec.Image omits an empty history). */
        if (n_h > 0)
                json_object_set_new(cfg, "history", hist);
        else {
                json_decref(hist);
                json_object_del(cfg, "history");
        }

        v = json_object_get(cfg, "created");
        if (v && o->has_epoch) {
                struct gotime t;
                if (!json_is_null(v) &&
                    (!json_is_string(v) || !gotime_parse(json_string_value(v), &t))) {
                        r = kiln_error_set(err, -EINVAL,
                                           "invalid image config for export: created: expected "
                                           "an RFC 3339 time");
                        goto out;
                }
                if (!json_is_null(v) && gotime_after(&t, &epoch))
                        json_object_set_new(cfg, "created", time_json(&epoch));
        }
        if (!v) {
                const struct gotime *last = NULL;
                for (size_t i = 0; i < n_h; i++)
                        if (h[i].has_created)
                                last = &h[i].created;
                if (last) {
                        json_object_set_new(cfg, "created", time_json(last));
                } else {
                        /* No time anywhere (no layers, no history): Go would
                         * write null, which the image-spec schema refuses. */
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        struct gotime now =
                                o->has_epoch ? epoch
                                             : gotime_from_ns((int64_t) ts.tv_sec * 1000000000 +
                                                              ts.tv_nsec);
                        json_object_set_new(cfg, "created", time_json(&now));
                }
        }

        keys = kiln_xcalloc(json_object_size(cfg) + 1, sizeof(*keys));
        json_object_foreach (cfg, key, v)
                keys[n_keys++] = key;
        qsort_safe(keys, n_keys, sizeof(*keys), cmp_keys);
        patched = json_object();
        for (size_t i = 0; i < n_keys; i++)
                json_object_set(patched, keys[i], json_object_get(cfg, keys[i]));
        r = kiln_content_json_dump(patched, 0, out);
        if (r < 0)
                r = kiln_error_set(err, r, "image config for export: larger than %zu bytes",
                                   out->max);
out:
        free(keys);
        json_decref(patched);
        json_decref(cfg);
        history_free(h, n_h);
        return r;
}

/* ---- manifest ---- */

static json_t *descriptor_json(const char *mt, const char *digest, int64_t size)
{
        json_t *d = json_object();

        json_object_set_new(d, "mediaType", json_string(mt));
        json_object_set_new(d, "digest", json_string(digest));
        json_object_set_new(d, "size", json_integer(size));
        return d;
}

/* Go's MarshalIndent of ocispec.Manifest as BuildKit fills it. */
static int manifest_build(const struct layer *layers, size_t n_layers, const char *config_digest,
                          size_t config_size, bool oci, struct kiln_buf *out,
                          struct kiln_error **err)
{
        json_t *m = json_object(), *ls;
        int r;

        json_object_set_new(m, "schemaVersion", json_integer(2));
        json_object_set_new(
                m, "mediaType",
                json_string(oci ? KILN_CONTENT_MT_OCI_MANIFEST : KILN_CONTENT_MT_DOCKER_MANIFEST));
        json_object_set_new(
                m, "config",
                descriptor_json(oci ? KILN_CONTENT_MT_OCI_CONFIG : KILN_CONTENT_MT_DOCKER_CONFIG,
                                config_digest, (int64_t) config_size));
        ls = json_array(); /* [] where Go would write null: the schema wants an array */
        for (size_t i = 0; i < n_layers; i++) {
                const char *mt =
                        kiln_export_layer_media_type_convert(layers[i].blob.media_type, oci);
                json_array_append_new(ls,
                                      descriptor_json(mt ? mt : layers[i].blob.media_type,
                                                      layers[i].blob.digest, layers[i].blob.size));
        }
        json_object_set_new(m, "layers", ls);
        r = kiln_content_json_dump(m, KILN_CONTENT_JSON_INDENT, out);
        json_decref(m);
        if (r < 0)
                return kiln_error_set(err, r, "image manifest: larger than %zu bytes", out->max);
        return 0;
}

/* ---- the export ---- */

void kiln_export_image_options_init(struct kiln_export_image_options *o)
{
        *o = (struct kiln_export_image_options){
                .compression = KILN_EXPORT_COMPRESSION_GZIP,
                .level = KILN_EXPORT_LEVEL_DEFAULT,
                .oci_mediatypes = true,
        };
}

void kiln_export_image_result_release(struct kiln_export_image_result *r)
{
        if (!r)
                return;
        free(r->manifest_digest);
        free(r->manifest_media_type);
        free(r->config_digest);
        *r = (struct kiln_export_image_result){ 0 };
}

/* Walks the chain from id to its root, holding a use on each snapshot;
 * fills c->layers root first. */
static int chain_collect(struct export_ctx *c, const char *id, struct kiln_error **err)
{
        char cur[KILN_SNAPSHOT_ID_SIZE];
        size_t n = 0;

        c->layers = kiln_xcalloc(KILN_EXPORT_LIMIT_LAYERS, sizeof(*c->layers));
        if (strlen(id) >= sizeof(cur))
                return kiln_error_set(err, -ENOENT, "export snapshot '%s': no such snapshot", id);
        snprintf(cur, sizeof(cur), "%s", id);
        while (cur[0]) {
                struct kiln_snapshot_info info;
                struct layer *l;
                int r;

                if (n >= KILN_EXPORT_LIMIT_LAYERS)
                        return kiln_error_set(err, -E2BIG,
                                              "export snapshot %s: more than %d layers", id,
                                              KILN_EXPORT_LIMIT_LAYERS);
                l = &c->layers[n];
                snprintf(l->id, sizeof(l->id), "%s", cur);
                l->ctx = c;
                r = kiln_snapshot_use(c->ss, cur);
                if (r < 0)
                        return kiln_error_set(err, r, "export snapshot %s: snapshot %s: %s", id,
                                              cur, r == -ENOENT ? "not committed" : strerror(-r));
                l->used = true;
                n++;
                c->n_layers = n;
                r = kiln_snapshot_info(c->ss, cur, &info);
                if (r < 0)
                        return kiln_error_set(err, r, "export snapshot %s: snapshot %s: %s", id,
                                              cur, strerror(-r));
                l->created_ns = info.created_ns;
                snprintf(cur, sizeof(cur), "%s", info.parent);
                kiln_snapshot_info_release(&info);
        }
        for (size_t i = 0; i < n / 2; i++) {
                struct layer t = c->layers[i];
                c->layers[i] = c->layers[n - 1 - i];
                c->layers[n - 1 - i] = t;
        }
        return 0;
}

static void export_ctx_release(struct export_ctx *c)
{
        for (size_t i = 0; i < c->n_layers; i++) {
                struct layer *l = &c->layers[i];
                if (l->used)
                        kiln_snapshot_release(c->ss, l->id);
                kiln_export_layer_writer_free(l->writer);
                kiln_error_free(l->err);
        }
        free(c->layers);
        free(c->jobs);
        free(c->want_key);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
}

int kiln_export_image(struct kiln_content_store *cs, struct kiln_snapshot_store *ss,
                      const char *snapshot_id, const char *config_json, size_t config_len,
                      const struct kiln_export_image_options *o,
                      struct kiln_export_image_result *ret, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf config =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG);
        _cleanup_(kiln_buf_release) struct kiln_buf manifest =
                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        char config_digest[KILN_CONTENT_DIGEST_SIZE], manifest_digest[KILN_CONTENT_DIGEST_SIZE];
        struct export_ctx c = {
                .cs = cs,
                .ss = ss,
                .o = o,
                .lock = PTHREAD_MUTEX_INITIALIZER,
                .cond = PTHREAD_COND_INITIALIZER,
        };
        int r;

        if (!kiln_export_compression_to_string(o->compression)) {
                r = kiln_error_set(err, -EINVAL, "export image: unknown compression %d",
                                   (int) o->compression);
                goto out;
        }
        r = kiln_export_compression_level_check(o->compression, o->level, err);
        if (r < 0)
                goto out;
        c.want_key = label_key(o->compression, o->has_epoch, o->epoch);
        if (snapshot_id) {
                r = chain_collect(&c, snapshot_id, err);
                if (r < 0)
                        goto out;
        }
        c.jobs = kiln_xcalloc(c.n_layers + 1, sizeof(*c.jobs));
        for (size_t i = 0; i < c.n_layers; i++) {
                plan_layer(&c, &c.layers[i]);
                if (c.layers[i].kind != JOB_REUSE)
                        c.jobs[c.n_jobs++] = i;
        }
        r = run_jobs(&c, err);
        if (r < 0)
                goto out;
        status(o, "exporting layers", (int64_t) c.n_layers, (int64_t) c.n_layers, true);

        r = config_build(config_json, config_len, c.layers, c.n_layers, o, &config, err);
        if (r < 0)
                goto out;
        kiln_content_digest_of(config.data, config.len, config_digest);
        r = manifest_build(c.layers, c.n_layers, config_digest, config.len, o->oci_mediatypes,
                           &manifest, err);
        if (r < 0)
                goto out;
        kiln_content_digest_of(manifest.data, manifest.len, manifest_digest);
        if (cancelled(&c)) {
                r = kiln_error_set(err, -ECANCELED, "export cancelled");
                goto out;
        }
        /* The config first: a manifest in the store always finds its
         * config. */
        r = kiln_content_store_put(cs, config_digest, config.data, config.len, NULL, err);
        if (r < 0) {
                r = kiln_error_wrap(err, "error writing config blob");
                goto out;
        }
        r = kiln_content_store_put(cs, manifest_digest, manifest.data, manifest.len, NULL, err);
        if (r < 0) {
                r = kiln_error_wrap(err, "error writing manifest blob %s", manifest_digest);
                goto out;
        }
        {
                _cleanup_free_ char *m = kiln_xasprintf("exporting manifest %s", manifest_digest);
                _cleanup_free_ char *cf = kiln_xasprintf("exporting config %s", config_digest);
                status(o, m, 0, 0, true);
                status(o, cf, 0, 0, true);
        }
        *ret = (struct kiln_export_image_result){
                .manifest_digest = kiln_xstrdup(manifest_digest),
                .manifest_media_type =
                        kiln_xstrdup(o->oci_mediatypes ? KILN_CONTENT_MT_OCI_MANIFEST
                                                       : KILN_CONTENT_MT_DOCKER_MANIFEST),
                .manifest_size = (int64_t) manifest.len,
                .config_digest = kiln_xstrdup(config_digest),
                .n_layers = c.n_layers,
        };
        r = 0;
out:
        export_ctx_release(&c);
        return r;
}
