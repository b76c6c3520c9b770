/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Image export: the layers, config and manifest of a build result, written
 * to the content store as BuildKit's image exporter writes them
 * (exporter/containerimage/writer.go).
 *
 * Layers are the chain of committed snapshots from the root to the result,
 * one layer a snapshot. A snapshot whose blob is known and still in the
 * store is reused as it is: its label "blob.<compression>" (or
 * "blob.<compression>.<epoch>" when the layer's timestamps were clamped to
 * a SOURCE_DATE_EPOCH), or the "blob" label the image unpacker sets on the
 * layers it pulled. Other snapshots are diffed against their parent into a
 * reproducible tar, compressed and published, in parallel (at most one
 * thread per CPU), and labelled with the blob for the next export. A
 * snapshot that changes nothing is a layer still (the tar of nothing), as
 * BuildKit writes one for a RUN that changes nothing or a WORKDIR.
 *
 * With an epoch, equal inputs give equal digests, byte for byte: new
 * layers' mtimes, this build's history times and "created" are clamped to
 * it; base image layers and history entries keep theirs, as in BuildKit.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/macro.h"
#include "export/compress.h"

struct kiln_content_store;
struct kiln_snapshot_store;

/* Layers of one exported image: the deepest snapshot chain there is. */
#define KILN_EXPORT_LIMIT_LAYERS 500

struct kiln_export_image_options {
        /* The compression of new layers. A layer that already has a blob
         * keeps it whatever its compression, as BuildKit does; with
         * force_compression a blob of another compression is converted
         * (decompressed and compressed again: same diffID). */
        enum kiln_export_compression compression;
        int level; /* compression-level (export/compress.h); KILN_EXPORT_LEVEL_DEFAULT */
        bool force_compression;
        bool oci_mediatypes; /* true: OCI manifest and types; false: Docker schema2 */
        /* SOURCE_DATE_EPOCH: config "created", history "created" and the
         * mtimes in new layers are clamped to it (BuildKit's
         * rewrite-timestamp with an epoch). */
        bool has_epoch;
        int64_t epoch;
        /* "os/arch[/variant]" of the result, for messages only: the config
         * already holds os, architecture and variant. May be NULL. */
        const char *platform;
        /* When set and true, the export stops with -ECANCELED. */
        const atomic_bool *cancel;
        /* Progress, called from the exporting thread (never from the
         * compression threads, never with a lock held): id is
         * "exporting layers" (current/total in layers; done at the end),
         * "exporting manifest sha256:..." and "exporting config sha256:..."
         * (done only). May be NULL. */
        void (*on_status)(void *userdata, const char *id, int64_t current, int64_t total,
                          bool done);
        void *userdata;
};

/* Sets BuildKit's defaults: gzip, default level, OCI media types, no
 * epoch, no callbacks. */
void kiln_export_image_options_init(struct kiln_export_image_options *o);

struct kiln_export_image_result {
        char *manifest_digest;     /* "sha256:..." */
        char *manifest_media_type; /* OCI manifest or Docker schema2 */
        int64_t manifest_size;
        char *config_digest;
        size_t n_layers;
};

void kiln_export_image_result_release(struct kiln_export_image_result *r);

/*
 * Exports the committed snapshot snapshot_id (NULL: an image without layers,
 * FROM scratch with nothing added) with the image config config_json (the
 * converter's config: os, architecture, config, history...; NULL or empty:
 * BuildKit's default config for the host platform). "rootfs" is replaced,
 * history is normalised against the layers as BuildKit's
 * normalizeLayersAndHistory does, times are clamped to the epoch, and
 * "created" is set from the last history entry when the config has none.
 * Top-level keys come out sorted, the document compact (Go's marshalling
 * of BuildKit's patched map); the manifest is Go's MarshalIndent. The
 * layer blobs, the config and the manifest are published in cs; *ret
 * (release with kiln_export_image_result_release) names them.
 *
 * The snapshots of the chain are held (kiln_snapshot_use) while they are
 * read; the caller keeps its own use of snapshot_id. Errors name the
 * snapshot or blob involved; on error nothing is labelled that was not
 * published, and *ret is untouched. Blobs published before a failure stay
 * (they are valid; garbage collection reclaims them).
 *
 * Thread safety: may run concurrently with other exports on the same stores.
 */
int kiln_export_image(struct kiln_content_store *cs, struct kiln_snapshot_store *ss,
                      const char *snapshot_id, const char *config_json, size_t config_len,
                      const struct kiln_export_image_options *o,
                      struct kiln_export_image_result *ret, struct kiln_error **err);
