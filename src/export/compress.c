/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/param.h>
#include <unistd.h>
#include <zstd.h>

#include "base/sha256.h"
#include "content/content.h"
#include "export/compress.h"

/*
 * The input is cut into chunks of exactly KILN_EXPORT_COMPRESS_CHUNK bytes
 * (the last one shorter) whatever the caller's writes were, and each chunk
 * is compressed into a piece of the blob:
 *
 *  - gzip at ISA-L levels (compression-level 1-9, the default): pigz's
 *    scheme. Each chunk is one run of deflate blocks, primed with the last
 *    32 KiB of the chunk before as dictionary, ended by a sync flush (the
 *    last chunk by the final block and the gzip trailer); the pieces are
 *    concatenated in order. Chunks are independent, so several worker
 *    threads compress them at once; each starts from zeroed igzip state
 *    with the same output space, so the bytes depend neither on how many
 *    workers there were nor on which took which chunk.
 *  - zstd: one stream, fed by one worker in order, compressed by
 *    libzstd's own threads (one per CPU, at most
 *    KILN_EXPORT_COMPRESS_WORKERS; libzstd gives the same bytes for any
 *    number of them but zero, which kiln never uses).
 *  - gzip stored blocks (level 0): one stream, one worker.
 *
 * So the blob, and its digest, depend only on the input, the compression
 * and the level. Changing the chunk size or a level mapping changes the
 * digests of the layers kiln writes.
 *
 * The producer (the caller: the tar walk) copies into a ring of
 * KILN_EXPORT_COMPRESS_QUEUE slots and hashes the diffID (and the gzip
 * CRC); workers, started when the first chunk is full, compress slots into
 * their own output buffers; whichever worker completes the oldest
 * outstanding slot writes the finished slots, oldest first, to the ingest,
 * which hashes the blob. A layer that fits in one chunk is compressed on
 * the caller's thread at commit. Uncompressed layers go straight to the
 * ingest: its digest is the diffID.
 */

/* Gzip header as Go's compress/gzip writes it without name and mtime: no
 * flags, mtime 0, no extra flags, OS 255 (unknown). */
static const uint8_t gzip_header[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff };

/* The deflate window: the dictionary a gzip chunk gets from the one before. */
#define GZIP_DICT_SIZE (32u << 10)
/* Output space offered to igzip for one chunk (more than a chunk can take:
 * stored blocks add 5 bytes per 64 KiB), and its growth should it run
 * out. Part of the output format, as the chunk size. */
#define GZIP_OUT_FIRST (KILN_EXPORT_COMPRESS_CHUNK + KILN_EXPORT_COMPRESS_CHUNK / 16 + (64u << 10))
#define GZIP_OUT_STEP  (256u << 10)
/* The largest deflate stored block. */
#define STORED_BLOCK 65535u

enum slot_state {
        SLOT_FREE,   /* the producer may fill it */
        SLOT_FILLED, /* queued for a worker */
        SLOT_BUSY,   /* a worker compresses it */
        SLOT_DONE,   /* compressed, waiting for its turn to be written */
};

struct slot {
        enum slot_state state;
        bool first, last;
        uint8_t *in;
        size_t in_len;
        uint8_t *dict; /* parallel gzip: the tail of the chunk before */
        size_t dict_len;
        uint8_t *out;
        size_t out_len, out_cap;
};

/* Per worker thread: ISA-L's stream state is not shared. */
struct worker {
        pthread_t thread;
        struct kiln_export_layer_writer *w;
        struct isal_zstream zs;
        uint8_t *level_buf;
};

struct kiln_export_layer_writer {
        struct kiln_content_store *cs;
        enum kiln_export_compression compression;
        int level;     /* resolved: ISA-L level (-1 stored blocks) or zstd level */
        bool parallel; /* chunks are independent (gzip at an ISA-L level) */

        struct kiln_sha256 *diff_sha;
        _Atomic uint64_t bytes_in;
        struct kiln_content_ingest *ingest; /* written by one thread at a time */

        /* producer only */
        unsigned tail; /* the slot being filled */
        uint32_t crc;  /* gzip: of the input so far */
        uint64_t isize;
        bool any_queued; /* a slot was queued */
        bool finished;

        /* one stream for the sequential compressors (used by one worker) */
        ZSTD_CCtx *zc;

        struct worker *workers;
        unsigned n_workers, n_started;

        /* lock guards the slots' states, head, writing, done, stop and the
         * error */
        pthread_mutex_t lock;
        pthread_cond_t cond_work; /* a slot was filled, or done/stop/failure */
        pthread_cond_t cond_room; /* a slot was freed, or failure */
        struct slot slots[KILN_EXPORT_COMPRESS_QUEUE];
        unsigned head; /* the oldest slot not yet written out */
        bool writing;  /* a worker is writing slots out */
        bool done;     /* the last slot is written */
        bool stop;
        uint32_t final_crc; /* set with the last slot */
        uint64_t final_isize;

        int err_code; /* sticky failure, negative errno */
        char *err_msg;
};

/* ---- names and media types ---- */

static const char *const compression_names[_KILN_EXPORT_COMPRESSION_MAX] = {
        [KILN_EXPORT_COMPRESSION_UNCOMPRESSED] = "uncompressed",
        [KILN_EXPORT_COMPRESSION_GZIP] = "gzip",
        [KILN_EXPORT_COMPRESSION_ZSTD] = "zstd",
};

const char *kiln_export_compression_to_string(enum kiln_export_compression c)
{
        if ((int) c < 0 || c >= _KILN_EXPORT_COMPRESSION_MAX)
                return NULL;
        return compression_names[c];
}

int kiln_export_compression_parse(const char *s, enum kiln_export_compression *ret,
                                  struct kiln_error **err)
{
        for (int i = 0; i < _KILN_EXPORT_COMPRESSION_MAX; i++)
                if (streq(s, compression_names[i])) {
                        *ret = i;
                        return 0;
                }
        if (streq(s, "estargz"))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "compression type 'estargz' is not supported by kiln: use "
                                      "gzip, zstd or uncompressed");
        return kiln_error_set(err, -EINVAL,
                              "unsupported compression type '%s': expected uncompressed, gzip or "
                              "zstd",
                              s);
}

int kiln_export_compression_level_check(enum kiln_export_compression c, int level,
                                        struct kiln_error **err)
{
        int max;

        if ((int) c < 0 || c >= _KILN_EXPORT_COMPRESSION_MAX)
                return kiln_error_set(err, -EINVAL, "invalid compression %d", (int) c);
        if (level == KILN_EXPORT_LEVEL_DEFAULT || c == KILN_EXPORT_COMPRESSION_UNCOMPRESSED)
                return 0;
        max = c == KILN_EXPORT_COMPRESSION_GZIP ? KILN_EXPORT_GZIP_LEVEL_MAX
                                                : KILN_EXPORT_ZSTD_LEVEL_MAX;
        if (level < 0 || level > max)
                return kiln_error_set(err, -EINVAL, "compression-level %d: %s takes 0 to %d", level,
                                      compression_names[c], max);
        return 0;
}

#define MT_OCI_NONDIST         "application/vnd.oci.image.layer.nondistributable.v1.tar"
#define MT_OCI_NONDIST_GZIP    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
#define MT_OCI_NONDIST_ZSTD    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
#define MT_DOCKER_FOREIGN      "application/vnd.docker.image.rootfs.foreign.diff.tar"
#define MT_DOCKER_FOREIGN_GZIP "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

/* Every layer type BuildKit converts, with its OCI and Docker forms
 * (util/compression: toOCILayerType, toDockerLayerType). Docker has no
 * non-distributable zstd type: that one has no Docker form. */
static const struct layer_type {
        const char *mt;
        enum kiln_export_compression compression;
        bool nondistributable;
        const char *oci;
        const char *docker;
} layer_types[] = {
        { KILN_CONTENT_MT_OCI_LAYER, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, false,
          KILN_CONTENT_MT_OCI_LAYER, KILN_CONTENT_MT_DOCKER_LAYER },
        { KILN_CONTENT_MT_OCI_LAYER_GZIP, KILN_EXPORT_COMPRESSION_GZIP, false,
          KILN_CONTENT_MT_OCI_LAYER_GZIP, KILN_CONTENT_MT_DOCKER_LAYER_GZIP },
        { KILN_CONTENT_MT_OCI_LAYER_ZSTD, KILN_EXPORT_COMPRESSION_ZSTD, false,
          KILN_CONTENT_MT_OCI_LAYER_ZSTD, KILN_CONTENT_MT_DOCKER_LAYER_ZSTD },
        { KILN_CONTENT_MT_DOCKER_LAYER, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, false,
          KILN_CONTENT_MT_OCI_LAYER, KILN_CONTENT_MT_DOCKER_LAYER },
        { KILN_CONTENT_MT_DOCKER_LAYER_GZIP, KILN_EXPORT_COMPRESSION_GZIP, false,
          KILN_CONTENT_MT_OCI_LAYER_GZIP, KILN_CONTENT_MT_DOCKER_LAYER_GZIP },
        { KILN_CONTENT_MT_DOCKER_LAYER_ZSTD, KILN_EXPORT_COMPRESSION_ZSTD, false,
          KILN_CONTENT_MT_OCI_LAYER_ZSTD, KILN_CONTENT_MT_DOCKER_LAYER_ZSTD },
        { MT_OCI_NONDIST, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, true, MT_OCI_NONDIST,
          MT_DOCKER_FOREIGN },
        { MT_OCI_NONDIST_GZIP, KILN_EXPORT_COMPRESSION_GZIP, true, MT_OCI_NONDIST_GZIP,
          MT_DOCKER_FOREIGN_GZIP },
        { MT_OCI_NONDIST_ZSTD, KILN_EXPORT_COMPRESSION_ZSTD, true, MT_OCI_NONDIST_ZSTD, NULL },
        { MT_DOCKER_FOREIGN, KILN_EXPORT_COMPRESSION_UNCOMPRESSED, true, MT_OCI_NONDIST,
          MT_DOCKER_FOREIGN },
        { MT_DOCKER_FOREIGN_GZIP, KILN_EXPORT_COMPRESSION_GZIP, true, MT_OCI_NONDIST_GZIP,
          MT_DOCKER_FOREIGN_GZIP },
};

static const struct layer_type *layer_type_find(const char *mt)
{
        if (!mt)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(layer_types); i++)
                if (streq(mt, layer_types[i].mt))
                        return &layer_types[i];
        return NULL;
}

const char *kiln_export_layer_media_type(enum kiln_export_compression c, bool oci)
{
        if ((int) c < 0 || c >= _KILN_EXPORT_COMPRESSION_MAX)
                return NULL;
        /* the first three rows are the OCI types of each compression */
        return oci ? layer_types[c].oci : layer_types[c].docker;
}

int kiln_export_compression_of_media_type(const char *mt, enum kiln_export_compression *ret)
{
        const struct layer_type *t = layer_type_find(mt);

        if (!t)
                return -EINVAL;
        *ret = t->compression;
        return 0;
}

bool kiln_export_media_type_is_nondistributable(const char *mt)
{
        const struct layer_type *t = layer_type_find(mt);

        return t && t->nondistributable;
}

const char *kiln_export_layer_media_type_convert(const char *mt, bool oci)
{
        const struct layer_type *t = layer_type_find(mt);

        if (!t)
                return NULL;
        return oci ? t->oci : t->docker;
}

/* ---- compressors ---- */

/* The ISA-L level of a gzip compression-level (see compress.h), -1 for
 * stored blocks. */
static int gzip_isal_level(int level)
{
        if (level == KILN_EXPORT_LEVEL_DEFAULT)
                return 1;
        if (level == 0)
                return -1;
        if (level == 1)
                return 0;
        if (level <= 5)
                return 1;
        if (level <= 7)
                return 2;
        return 3;
}

static size_t isal_level_buf_size(int isal_level)
{
        switch (isal_level) {
        case 1:
                return ISAL_DEF_LVL1_DEFAULT;
        case 2:
                return ISAL_DEF_LVL2_DEFAULT;
        case 3:
                return ISAL_DEF_LVL3_DEFAULT;
        default:
                return 0;
        }
}

/* Records the first failure and wakes everyone; returns code. */
static int fail(struct kiln_export_layer_writer *w, int code, const char *msg)
{
        pthread_mutex_lock(&w->lock);
        if (w->err_code == 0) {
                w->err_code = code;
                w->err_msg = kiln_xstrdup(msg);
        }
        pthread_cond_broadcast(&w->cond_room);
        pthread_cond_broadcast(&w->cond_work);
        pthread_mutex_unlock(&w->lock);
        return code;
}

/* The recorded failure into *err (a copy: it stays for later calls), or 0. */
static int failed(struct kiln_export_layer_writer *w, struct kiln_error **err)
{
        _cleanup_free_ char *msg = NULL;
        int code;

        pthread_mutex_lock(&w->lock);
        code = w->err_code;
        if (code < 0)
                msg = kiln_xstrdup(w->err_msg);
        pthread_mutex_unlock(&w->lock);
        if (code < 0)
                return kiln_error_set(err, code, "%s", msg);
        return 0;
}

/* Records an error of the ingest (consumed); returns its code. */
static int fail_err(struct kiln_export_layer_writer *w, struct kiln_error *e)
{
        int code = e ? e->code : -EIO;
        _cleanup_free_ char *msg =
                kiln_xasprintf("write %s layer blob: %s", compression_names[w->compression],
                               kiln_error_message(e));

        fail(w, code, msg);
        kiln_error_free(e);
        return code;
}

/* Room for at least want more bytes in s->out. */
static void out_reserve(struct slot *s, size_t want)
{
        if (s->out_cap - s->out_len >= want)
                return;
        s->out_cap = MAX(s->out_len + want, s->out_cap + s->out_cap / 2);
        s->out = kiln_xrealloc(s->out, s->out_cap);
}

static void out_append(struct slot *s, const void *p, size_t n)
{
        out_reserve(s, n);
        memcpy(s->out + s->out_len, p, n);
        s->out_len += n;
}

static void gzip_trailer(struct slot *s, uint32_t crc, uint64_t isize)
{
        uint8_t t[8];

        for (int i = 0; i < 4; i++) {
                t[i] = (crc >> (8 * i)) & 0xff;
                t[4 + i] = (isize >> (8 * i)) & 0xff;
        }
        out_append(s, t, sizeof(t));
}

static void compress_stored(struct kiln_export_layer_writer *w, struct slot *s)
{
        const uint8_t *p = s->in;
        size_t n = s->in_len;

        /* blocks of STORED_BLOCK bytes, the chunk's rest in a shorter one;
         * the final block may be empty */
        while (n > 0 || s->last) {
                size_t k = MIN(n, (size_t) STORED_BLOCK);
                bool final = s->last && k == n;
                uint16_t len = (uint16_t) k, nlen = (uint16_t) ~len;
                uint8_t h[5] = { final ? 1 : 0, len & 0xff, len >> 8, nlen & 0xff, nlen >> 8 };

                out_append(s, h, sizeof(h));
                out_append(s, p, k);
                p += k;
                n -= k;
                if (final)
                        break;
        }
        if (s->last)
                gzip_trailer(s, w->final_crc, w->final_isize);
}

static int isal_failed(struct kiln_export_layer_writer *w, int r)
{
        _cleanup_free_ char *msg =
                kiln_xasprintf("write gzip layer blob: igzip deflate failed (%d)", r);

        return fail(w, -EIO, msg);
}

/* One independent piece of a gzip stream (see the top of this file). */
static int compress_isal(struct kiln_export_layer_writer *w, struct worker *wk, struct slot *s)
{
        struct isal_zstream *zs = &wk->zs;
        size_t level_buf_size = isal_level_buf_size(w->level);
        size_t limit = GZIP_OUT_FIRST;
        int r;

        /* Nothing of the chunk this worker compressed before may reach this
         * one: the stream and the level buffer (hash tables) start zeroed,
         * and the output space offered is the same for every chunk (igzip
         * ends blocks differently when it runs out of output space). */
        memset(zs, 0, sizeof(*zs));
        if (level_buf_size > 0)
                memset(wk->level_buf, 0, level_buf_size);
        isal_deflate_init(zs);
        zs->level = w->level;
        zs->level_buf = wk->level_buf;
        zs->level_buf_size = level_buf_size;
        zs->gzip_flag = IGZIP_DEFLATE;
        if (s->dict_len > 0) {
                r = isal_deflate_set_dict(zs, s->dict, s->dict_len);
                if (r != COMP_OK)
                        return isal_failed(w, r);
        }
        zs->next_in = s->in;
        zs->avail_in = s->in_len;
        zs->end_of_stream = s->last;
        /* a sync flush ends the piece byte-aligned, with an empty stored
         * block, so the next piece can follow it */
        zs->flush = s->last ? NO_FLUSH : SYNC_FLUSH;
        for (;;) {
                out_reserve(s, limit - s->out_len);
                zs->next_out = s->out + s->out_len;
                zs->avail_out = limit - s->out_len;
                r = isal_deflate(zs);
                if (r != COMP_OK)
                        return isal_failed(w, r);
                s->out_len = limit - zs->avail_out;
                if (zs->avail_in == 0 && zs->avail_out > 0 &&
                    zs->internal_state.state == (s->last ? ZSTATE_END : ZSTATE_NEW_HDR))
                        break;
                if (zs->avail_out == 0)
                        limit += GZIP_OUT_STEP;
        }
        if (s->last)
                gzip_trailer(s, w->final_crc, w->final_isize);
        return 0;
}

static int compress_zstd(struct kiln_export_layer_writer *w, struct slot *s)
{
        ZSTD_inBuffer in = { s->in, s->in_len, 0 };

        for (;;) {
                ZSTD_outBuffer out;
                size_t left;

                out_reserve(s, ZSTD_CStreamOutSize());
                out = (ZSTD_outBuffer){ s->out, s->out_cap, s->out_len };
                left = ZSTD_compressStream2(w->zc, &out, &in,
                                            s->last ? ZSTD_e_end : ZSTD_e_continue);
                if (ZSTD_isError(left)) {
                        _cleanup_free_ char *msg = kiln_xasprintf("write zstd layer blob: %s",
                                                                  ZSTD_getErrorName(left));
                        return fail(w, -EIO, msg);
                }
                s->out_len = out.pos;
                if (in.pos == in.size && out.pos < out.size && (!s->last || left == 0))
                        return 0;
        }
}

/* Compresses slot s into s->out (after the gzip header for the first). */
static int compress_slot(struct kiln_export_layer_writer *w, struct worker *wk, struct slot *s)
{
        s->out_len = 0;
        if (w->compression == KILN_EXPORT_COMPRESSION_ZSTD)
                return compress_zstd(w, s);
        if (s->first)
                out_append(s, gzip_header, sizeof(gzip_header));
        if (w->parallel)
                return compress_isal(w, wk, s);
        compress_stored(w, s);
        return 0;
}

static int slot_write(struct kiln_export_layer_writer *w, struct slot *s)
{
        struct kiln_error *e = NULL;

        if (s->out_len > 0 && kiln_content_ingest_write(w->ingest, s->out, s->out_len, &e) < 0)
                return fail_err(w, e);
        return 0;
}

/* With the lock held: writes out every compressed slot whose turn it is,
 * unless another worker is at it (it will take these too). The lock is
 * dropped while writing. */
static void write_ready(struct kiln_export_layer_writer *w)
{
        if (w->writing)
                return;
        w->writing = true;
        while (w->err_code == 0 && !w->stop && w->slots[w->head].state == SLOT_DONE) {
                struct slot *s = &w->slots[w->head];
                int r;

                pthread_mutex_unlock(&w->lock);
                r = slot_write(w, s);
                pthread_mutex_lock(&w->lock);
                if (r < 0)
                        break;
                s->state = SLOT_FREE;
                w->head = (w->head + 1) % KILN_EXPORT_COMPRESS_QUEUE;
                if (s->last) {
                        w->done = true;
                        pthread_cond_broadcast(&w->cond_work);
                }
                pthread_cond_broadcast(&w->cond_room);
        }
        w->writing = false;
}

static void *worker_main(void *userdata)
{
        struct worker *wk = userdata;
        struct kiln_export_layer_writer *w = wk->w;

        pthread_mutex_lock(&w->lock);
        for (;;) {
                struct slot *s = NULL;
                int r;

                if (w->stop || w->done || w->err_code < 0)
                        break;
                /* the oldest filled slot (ring order from head is age
                 * order); a sequential stream takes the head slot only */
                for (unsigned i = 0; i < (w->parallel ? KILN_EXPORT_COMPRESS_QUEUE : 1u); i++) {
                        struct slot *c = &w->slots[(w->head + i) % KILN_EXPORT_COMPRESS_QUEUE];

                        if (c->state == SLOT_FILLED) {
                                s = c;
                                break;
                        }
                }
                if (!s) {
                        pthread_cond_wait(&w->cond_work, &w->lock);
                        continue;
                }
                s->state = SLOT_BUSY;
                pthread_mutex_unlock(&w->lock);

                r = compress_slot(w, wk, s);

                pthread_mutex_lock(&w->lock);
                if (r < 0)
                        break;
                s->state = SLOT_DONE;
                write_ready(w);
        }
        pthread_mutex_unlock(&w->lock);
        return NULL;
}

/* ---- the writer ---- */

static int ingest_start(struct kiln_export_layer_writer *w, struct kiln_error **err)
{
        struct kiln_error *e = NULL;
        int r;

        if (w->ingest)
                return 0;
        r = kiln_content_ingest_begin(w->cs, NULL, KILN_CONTENT_SIZE_UNKNOWN, 0, &w->ingest, &e);
        if (r < 0) {
                fail_err(w, e);
                return failed(w, err);
        }
        return 0;
}

/* CPUs this thread may run on (cgroup cpusets and affinity included). */
static unsigned cpu_count(void)
{
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
                return (unsigned) CPU_COUNT(&set);
        return 1;
}

int kiln_export_layer_writer_new(struct kiln_content_store *cs, enum kiln_export_compression c,
                                 int level, struct kiln_export_layer_writer **ret,
                                 struct kiln_error **err)
{
        _cleanup_(kiln_export_layer_writer_freep) struct kiln_export_layer_writer *w = NULL;
        int r;

        if ((int) c < 0 || c >= _KILN_EXPORT_COMPRESSION_MAX)
                return kiln_error_set(err, -EINVAL, "invalid compression %d", (int) c);
        r = kiln_export_compression_level_check(c, level, err);
        if (r < 0)
                return r;

        w = kiln_xcalloc(1, sizeof(*w));
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond_work, NULL);
        pthread_cond_init(&w->cond_room, NULL);
        w->cs = cs;
        w->compression = c;
        if (c == KILN_EXPORT_COMPRESSION_UNCOMPRESSED) {
                *ret = TAKE_PTR(w);
                return 0;
        }

        w->diff_sha = kiln_sha256_new();
        if (!w->diff_sha)
                return kiln_error_set(err, -ENOMEM, "write layer blob: sha256: out of memory");
        w->n_workers = 1;
        if (c == KILN_EXPORT_COMPRESSION_GZIP) {
                w->level = gzip_isal_level(level);
                w->parallel = w->level >= 0;
                if (w->parallel)
                        w->n_workers = MIN(cpu_count(), KILN_EXPORT_COMPRESS_WORKERS);
        } else {
                size_t z;

                w->level = level == KILN_EXPORT_LEVEL_DEFAULT ? 3 : level;
                w->zc = ZSTD_createCCtx();
                if (!w->zc)
                        return kiln_error_set(err, -ENOMEM, "write zstd layer blob: out of memory");
                z = ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, w->level);
                if (!ZSTD_isError(z))
                        z = ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 1);
                /* libzstd's own threads: with one or more, the bytes are the
                 * same whatever their number (with none they differ) */
                if (!ZSTD_isError(z))
                        z = ZSTD_CCtx_setParameter(
                                w->zc, ZSTD_c_nbWorkers,
                                (int) MIN(cpu_count(), KILN_EXPORT_COMPRESS_WORKERS));
                if (ZSTD_isError(z))
                        return kiln_error_set(err, -EINVAL, "write zstd layer blob: level %d: %s",
                                              w->level, ZSTD_getErrorName(z));
        }
        w->workers = kiln_xcalloc(w->n_workers, sizeof(*w->workers));
        for (unsigned i = 0; i < w->n_workers; i++) {
                size_t n = w->parallel ? isal_level_buf_size(w->level) : 0;

                w->workers[i].w = w;
                if (n > 0)
                        w->workers[i].level_buf = kiln_xmalloc(n);
        }
        w->slots[0].in = kiln_xmalloc(KILN_EXPORT_COMPRESS_CHUNK);
        *ret = TAKE_PTR(w);
        return 0;
}

uint64_t kiln_export_layer_writer_bytes_in(const struct kiln_export_layer_writer *w)
{
        return atomic_load(&w->bytes_in);
}

static int workers_start(struct kiln_export_layer_writer *w, struct kiln_error **err)
{
        int r;

        r = ingest_start(w, err);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < KILN_EXPORT_COMPRESS_QUEUE; i++) {
                struct slot *s = &w->slots[i];

                if (!s->in)
                        s->in = kiln_xmalloc(KILN_EXPORT_COMPRESS_CHUNK);
                if (w->parallel && !s->dict)
                        s->dict = kiln_xmalloc(GZIP_DICT_SIZE);
        }
        for (unsigned i = 0; i < w->n_workers; i++) {
                r = -pthread_create(&w->workers[i].thread, NULL, worker_main, &w->workers[i]);
                if (r < 0) {
                        fail(w, r, "write layer blob: cannot start a compressor thread");
                        return failed(w, err);
                }
                w->n_started++;
        }
        return 0;
}

/* Hands the producer's slot to the workers (starting them the first time)
 * and, unless it was the last, waits until the next slot is free. */
static int slot_queue(struct kiln_export_layer_writer *w, bool last, struct kiln_error **err)
{
        struct slot *s = &w->slots[w->tail];
        bool first = !w->any_queued;
        int r;

        if (w->n_started == 0) {
                r = workers_start(w, err);
                if (r < 0)
                        return r;
        }
        s->first = first;
        s->last = last;
        s->dict_len = 0;
        if (w->parallel && !first) {
                const struct slot *prev = &w->slots[(w->tail + KILN_EXPORT_COMPRESS_QUEUE - 1) %
                                                    KILN_EXPORT_COMPRESS_QUEUE];

                /* prev is a full chunk the producer has not refilled */
                s->dict_len = MIN(prev->in_len, (size_t) GZIP_DICT_SIZE);
                memcpy(s->dict, prev->in + prev->in_len - s->dict_len, s->dict_len);
        }
        w->any_queued = true;

        pthread_mutex_lock(&w->lock);
        if (last) {
                w->final_crc = w->crc;
                w->final_isize = w->isize;
        }
        s->state = SLOT_FILLED;
        pthread_cond_signal(&w->cond_work);
        w->tail = (w->tail + 1) % KILN_EXPORT_COMPRESS_QUEUE;
        if (!last) {
                while (w->slots[w->tail].state != SLOT_FREE && w->err_code == 0)
                        pthread_cond_wait(&w->cond_room, &w->lock);
                w->slots[w->tail].in_len = 0;
        }
        r = w->err_code;
        pthread_mutex_unlock(&w->lock);
        return r < 0 ? failed(w, err) : 0;
}

int kiln_export_layer_writer_write(void *writer, const void *buf, size_t n, struct kiln_error **err)
{
        struct kiln_export_layer_writer *w = writer;
        const uint8_t *p = buf;
        int r;

        r = failed(w, err);
        if (r < 0)
                return r;
        if (w->finished)
                return kiln_error_set(err, -ESTALE,
                                      "write layer blob: the blob is already committed");
        if (n == 0)
                return 0;

        if (w->compression == KILN_EXPORT_COMPRESSION_UNCOMPRESSED) {
                struct kiln_error *e = NULL;

                r = ingest_start(w, err);
                if (r < 0)
                        return r;
                r = kiln_content_ingest_write(w->ingest, buf, n, &e);
                if (r < 0) {
                        fail_err(w, e);
                        return failed(w, err);
                }
                atomic_fetch_add(&w->bytes_in, n);
                return 0;
        }

        kiln_sha256_update(w->diff_sha, buf, n);
        if (w->compression == KILN_EXPORT_COMPRESSION_GZIP) {
                w->crc = crc32_gzip_refl(w->crc, (unsigned char *) buf, n);
                w->isize += n;
        }
        while (n > 0) {
                struct slot *s = &w->slots[w->tail];
                size_t k = MIN(n, (size_t) KILN_EXPORT_COMPRESS_CHUNK - s->in_len);

                memcpy(s->in + s->in_len, p, k);
                s->in_len += k;
                p += k;
                n -= k;
                atomic_fetch_add(&w->bytes_in, k);
                if (s->in_len == KILN_EXPORT_COMPRESS_CHUNK) {
                        r = slot_queue(w, false, err);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int kiln_export_layer_writer_commit(struct kiln_export_layer_writer *w,
                                    struct kiln_export_blob *ret, struct kiln_error **err)
{
        char hex[KILN_SHA256_HEX_LEN + 1];
        struct kiln_error *e = NULL;
        const char *digest;
        int r;

        r = failed(w, err);
        if (r < 0)
                return r;
        if (w->finished)
                return kiln_error_set(err, -ESTALE, "commit layer blob: already committed");
        w->finished = true;

        r = ingest_start(w, err);
        if (r < 0)
                return r;
        if (w->compression != KILN_EXPORT_COMPRESSION_UNCOMPRESSED) {
                if (w->n_started > 0) {
                        (void) slot_queue(w, true, err);
                        for (unsigned i = 0; i < w->n_started; i++)
                                pthread_join(w->workers[i].thread, NULL);
                        w->n_started = 0;
                } else {
                        /* one chunk at most: compressed here */
                        struct slot *s = &w->slots[0];

                        s->first = s->last = true;
                        w->final_crc = w->crc;
                        w->final_isize = w->isize;
                        if (compress_slot(w, &w->workers[0], s) >= 0)
                                (void) slot_write(w, s);
                }
                r = failed(w, err);
                if (r < 0)
                        return r;
        }

        r = kiln_content_ingest_commit(w->ingest, &e);
        if (r < 0) {
                fail_err(w, e);
                return failed(w, err);
        }
        digest = kiln_content_ingest_digest(w->ingest);
        memset(ret, 0, sizeof(*ret));
        (void) snprintf(ret->digest, sizeof(ret->digest), "%s", digest);
        if (w->compression == KILN_EXPORT_COMPRESSION_UNCOMPRESSED)
                (void) snprintf(ret->diff_id, sizeof(ret->diff_id), "%s", digest);
        else {
                kiln_sha256_final_hex(w->diff_sha, hex);
                (void) snprintf(ret->diff_id, sizeof(ret->diff_id), "sha256:%s", hex);
        }
        ret->size = (int64_t) kiln_content_ingest_offset(w->ingest);
        ret->compression = w->compression;
        return 0;
}

struct kiln_export_layer_writer *kiln_export_layer_writer_free(struct kiln_export_layer_writer *w)
{
        if (!w)
                return NULL;
        if (w->n_started > 0) {
                pthread_mutex_lock(&w->lock);
                w->stop = true;
                pthread_cond_broadcast(&w->cond_work);
                pthread_mutex_unlock(&w->lock);
                for (unsigned i = 0; i < w->n_started; i++)
                        pthread_join(w->workers[i].thread, NULL);
        }
        /* aborts the ingest when it was not committed: its file goes */
        kiln_content_ingest_free(w->ingest);
        kiln_sha256_free(w->diff_sha);
        ZSTD_freeCCtx(w->zc);
        for (unsigned i = 0; i < w->n_workers; i++)
                free(w->workers[i].level_buf);
        free(w->workers);
        for (unsigned i = 0; i < KILN_EXPORT_COMPRESS_QUEUE; i++) {
                free(w->slots[i].in);
                free(w->slots[i].dict);
                free(w->slots[i].out);
        }
        free(w->err_msg);
        pthread_cond_destroy(&w->cond_room);
        pthread_cond_destroy(&w->cond_work);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
}
