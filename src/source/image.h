/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Image sources: resolve an image's config (for the Dockerfile converter)
 * and pull an image into snapshots (for the solver).
 *
 * Unpacking: each layer becomes a committed snapshot named
 * "layer:<chainID>" (chainID as the OCI image spec defines it: the first
 * layer's diffID, then sha256("<parent chainID> <diffID>")), so images
 * sharing a base share its snapshots. A missing one is made by preparing a
 * snapshot on the previous chain, mounting it under the work directory,
 * applying the layer blob (content/layer.h), unmounting and committing
 * with the name. Concurrent unpacks of one chain, in any number of builds,
 * do the work once: the others wait for it (the unpacker's flight table,
 * guarded by kiln_source_image_unpacker.lock).
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "content/content.h"
#include "registry/registry.h"

/* Layers of one image unpacked into snapshots. */
#define KILN_LIMIT_IMAGE_LAYERS 1024u

struct kiln_snapshot_store;

/* A progress line, as BuildKit's VertexStatus: id "resolve <ref>",
 * "sha256:<hex>" (a blob being downloaded, current/total in bytes),
 * "extracting sha256:<hex>" (a layer being unpacked). Sent when it starts,
 * as it progresses and when it completes. Times are CLOCK_REALTIME ns; all
 * strings borrowed for the call. */
struct kiln_source_status {
        const char *id;
        uint64_t current;
        uint64_t total;       /* 0: unknown */
        int64_t started_ns;   /* 0: not started */
        int64_t completed_ns; /* 0: not completed */
};

/* Called on any thread, possibly several at once. */
typedef void (*kiln_source_status_fn)(void *userdata, const struct kiln_source_status *st);

struct kiln_source_image_options {
        /* "linux/amd64"...; NULL: the default platform. */
        const char *platform;
        /* Set by another thread to stop; NULL: never. -ECANCELED then. */
        const atomic_bool *cancel;
        kiln_source_status_fn on_status; /* NULL: no progress */
        void *userdata;
};

/* ---- resolve (metadata only) ---- */

struct kiln_source_image_resolved {
        char *ref;             /* canonical, as resolved */
        char *digest;          /* the root the reference names (index or manifest) */
        char *manifest_digest; /* the platform's manifest */
        char *config;          /* the config JSON bytes, NUL-terminated */
        size_t config_len;
};
void kiln_source_image_resolved_release(struct kiln_source_image_resolved *r);

/* Pulls the manifests and the config of ref for the platform (no layers)
 * into store and returns them. For the converter's resolver callback.
 * Thread safe. Errors: "resolve '<ref>': <cause>" from the registry. */
int kiln_source_image_resolve(struct kiln_registry_client *client, struct kiln_content_store *store,
                              const char *ref, const struct kiln_source_image_options *o,
                              struct kiln_source_image_resolved *ret, struct kiln_error **err);

/* ---- pull and unpack ---- */

struct kiln_source_image_unpacker;

/* store and snapshots are borrowed and must outlive the unpacker. work_dir
 * (e.g. <root>/exec) receives temporary mount points, removed again. */
int kiln_source_image_unpacker_new(struct kiln_content_store *store,
                                   struct kiln_snapshot_store *snapshots, const char *work_dir,
                                   struct kiln_source_image_unpacker **ret,
                                   struct kiln_error **err);
/* No unpack may be running. Returns NULL. */
struct kiln_source_image_unpacker *
kiln_source_image_unpacker_free(struct kiln_source_image_unpacker *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_source_image_unpacker *, kiln_source_image_unpacker_free);

/* Pulls ref (kiln_registry_pull: manifests, config, layers) into the
 * unpacker's store, then unpacks it (kiln_source_image_unpack). *ret_id:
 * the committed snapshot of the top layer (malloc'd), or NULL for an image
 * without layers. Thread safe. */
int kiln_source_image_snapshot(struct kiln_source_image_unpacker *u,
                               struct kiln_registry_client *client, const char *ref,
                               const struct kiln_source_image_options *o, char **ret_id,
                               struct kiln_error **err);

/* Unpacks the image manifest manifest_digest whose config and layers are
 * in the store already (o->platform is not used). *ret_id as above.
 * Sends "extracting sha256:<layer>" statuses for layers it applies. Thread
 * safe. */
int kiln_source_image_unpack(struct kiln_source_image_unpacker *u, const char *manifest_digest,
                             const struct kiln_source_image_options *o, char **ret_id,
                             struct kiln_error **err);

/* The chain IDs of diff_ids (n of them): ret[i] is the chainID of layers
 * 0..i, "sha256:<hex>", malloc'd (free each and the array). Pure. */
int kiln_source_image_chain_ids(const char *const *diff_ids, size_t n, char ***ret,
                                struct kiln_error **err);
