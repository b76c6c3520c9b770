/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Layer blobs: a tar stream compressed and published in the content store.
 *
 * The layer writer takes the uncompressed tar in any pieces, computes its
 * sha256 (the diffID), compresses it (gzip through ISA-L's igzip, zstd
 * through libzstd, or nothing), computes the sha256 of the compressed bytes
 * (the blob digest) and streams them into a content-store ingest whose
 * digest is decided at commit. Once the input outgrows one chunk,
 * compression leaves the caller's thread: gzip is compressed by up to one
 * thread per CPU (pigz's scheme: independent 1 MiB pieces, each primed
 * with the 32 KiB before it), zstd by libzstd's worker threads (one per
 * CPU); the caller only copies and hashes. The output depends only on the input
 * bytes, the compression and the level: never on how the input was cut
 * into writes nor on the number of CPUs.
 *
 * compression-level, as buildx passes it:
 *   gzip  0-9 (-1: default). 0 stores (deflate "stored" blocks, as Go's and
 *         zlib's level 0); 1 -> ISA-L level 0; 2-5 -> ISA-L level 1 (the
 *         default); 6-7 -> ISA-L level 2; 8-9 -> ISA-L level 3. ISA-L's
 *         levels are much faster than zlib's at a ratio near zlib's 1-6.
 *   zstd  0-22 (-1: default 3), libzstd's levels (0 is libzstd's default, 3).
 *   uncompressed: the level is ignored; digest == diffID.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "base/error.h"
#include "base/macro.h"

struct kiln_content_store;

/* The level that picks each compression's default. */
#define KILN_EXPORT_LEVEL_DEFAULT (-1)
/* The input is compressed in chunks of this size (the last one shorter),
 * at most KILN_EXPORT_COMPRESS_QUEUE of them (and their output) in memory
 * per writer, by at most KILN_EXPORT_COMPRESS_WORKERS threads per writer. The chunk size is part of
 * the output format: another one gives other blob digests. */
#define KILN_EXPORT_COMPRESS_CHUNK   (1u << 20)
#define KILN_EXPORT_COMPRESS_QUEUE   6u
#define KILN_EXPORT_COMPRESS_WORKERS 4u

/* Highest compression-level per compression. */
#define KILN_EXPORT_GZIP_LEVEL_MAX 9
#define KILN_EXPORT_ZSTD_LEVEL_MAX 22

enum kiln_export_compression {
        KILN_EXPORT_COMPRESSION_UNCOMPRESSED,
        KILN_EXPORT_COMPRESSION_GZIP,
        KILN_EXPORT_COMPRESSION_ZSTD,
        _KILN_EXPORT_COMPRESSION_MAX,
        _KILN_EXPORT_COMPRESSION_INVALID = -EINVAL,
};

/* Parses buildx's compression= value: "uncompressed", "gzip", "zstd".
 * "estargz" fails with -EOPNOTSUPP and a message saying kiln does not write
 * it; anything else with -EINVAL ("unsupported compression type 'x'", as
 * BuildKit says it). */
int kiln_export_compression_parse(const char *s, enum kiln_export_compression *ret,
                                  struct kiln_error **err);

/* "uncompressed", "gzip", "zstd" (labels, messages); NULL when out of range. */
const char *kiln_export_compression_to_string(enum kiln_export_compression c);

/* Checks a compression-level for c: 0 or -EINVAL with a message naming the
 * level and the range ("compression-level 12: gzip takes 0 to 9"). The
 * level KILN_EXPORT_LEVEL_DEFAULT is always valid. */
int kiln_export_compression_level_check(enum kiln_export_compression c, int level,
                                        struct kiln_error **err);

/* The layer media type of a fresh layer, as BuildKit writes them:
 *   oci:    application/vnd.oci.image.layer.v1.tar, ...tar+gzip, ...tar+zstd
 *   docker: application/vnd.docker.image.rootfs.diff.tar, ...diff.tar.gzip,
 *           ...diff.tar.zstd (containerd's Docker zstd type, which BuildKit's
 *           media type conversion gives for oci-mediatypes=false)
 * Static strings; NULL when c is out of range. */
const char *kiln_export_layer_media_type(enum kiln_export_compression c, bool oci);

/* The compression of a layer media type: OCI's and Docker's plain, gzip and
 * zstd layer types and the non-distributable ("foreign") ones. 0 and *ret,
 * or -EINVAL when mt is not a layer type kiln knows (estargz layers carry
 * the gzip type and are gzip). */
int kiln_export_compression_of_media_type(const char *mt, enum kiln_export_compression *ret);

/* Whether mt is a non-distributable layer type (OCI nondistributable or
 * Docker foreign): such layers keep that nature when converted. */
bool kiln_export_media_type_is_nondistributable(const char *mt);

/* The media type mt converted to OCI (oci) or Docker types, keeping its
 * compression and non-distributable nature, as BuildKit's
 * ConvertAllLayerMediaTypes does; NULL when mt is not a known layer type
 * (BuildKit then keeps mt as it is). Static strings. */
const char *kiln_export_layer_media_type_convert(const char *mt, bool oci);

/* A published layer blob. */
struct kiln_export_blob {
        char digest[72];  /* "sha256:<hex>" of the blob bytes */
        char diff_id[72]; /* "sha256:<hex>" of the uncompressed tar */
        int64_t size;     /* blob size in bytes */
        enum kiln_export_compression compression;
};

struct kiln_export_layer_writer;

/* Starts a layer blob in cs (which must outlive the writer). level is a
 * compression-level as above (KILN_EXPORT_LEVEL_DEFAULT: the default);
 * out of range fails with -EINVAL. Nothing touches the store before the
 * first chunk of input is complete (uncompressed: the first write) or the
 * commit. Returns 0 and *ret (free with
 * kiln_export_layer_writer_free). */
int kiln_export_layer_writer_new(struct kiln_content_store *cs, enum kiln_export_compression c,
                                 int level, struct kiln_export_layer_writer **ret,
                                 struct kiln_error **err);

/* Appends buf[0..n) of the uncompressed tar. Matches kiln_export_write_fn
 * (export/tar.h), so the writer can be handed to the tar writers with the
 * writer as userdata. Blocks while the compressor is KILN_EXPORT_COMPRESS_QUEUE
 * chunks behind. A failure (store I/O, compressor) is sticky: this and
 * every later call and the commit fail with the same code and message
 * ("write gzip layer blob: <cause>", the cause naming the store path).
 * One thread at a time per writer; different writers are independent. */
int kiln_export_layer_writer_write(void *writer, const void *buf, size_t n,
                                   struct kiln_error **err);

/* Uncompressed bytes accepted so far (progress; any thread). */
uint64_t kiln_export_layer_writer_bytes_in(const struct kiln_export_layer_writer *w);

/* Ends the stream, waits for the compressor, and publishes the blob (the
 * store verifies and renames it; a blob that is already published is fine:
 * same bytes). Fills *ret. After a failure nothing is published and no
 * ingest file is left. Call at most once; free the writer afterwards. */
int kiln_export_layer_writer_commit(struct kiln_export_layer_writer *w,
                                    struct kiln_export_blob *ret, struct kiln_error **err);

/* Stops the compressor threads and, when not committed, aborts: nothing is
 * published and the ingest file is removed. NULL-safe; returns NULL. */
struct kiln_export_layer_writer *kiln_export_layer_writer_free(struct kiln_export_layer_writer *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_export_layer_writer *, kiln_export_layer_writer_free);
