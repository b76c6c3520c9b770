/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * OCI layout and Docker archives of an exported image, as BuildKit's "oci"
 * and "docker" exporters write them (exporter/oci/export.go and
 * containerd's archive exporter): a tar stream, entries in a fixed order
 * with fixed times, so equal images give equal archives.
 */

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "export/tar.h"

struct kiln_content_store;

/* Names one archive may carry (each a manifest entry of index.json). */
#define KILN_EXPORT_LIMIT_ARCHIVE_NAMES 64

/*
 * Writes an OCI image layout as a tar to w: "oci-layout", "index.json" (one
 * descriptor of the manifest per name, annotated
 * "io.containerd.image.name" = the full name (docker.io/library/x:latest)
 * and "org.opencontainers.image.ref.name" = its tag; with no names, one
 * descriptor with only the created annotation), and blobs/sha256/<hex> of
 * the manifest, its config and its layers, each once. Every descriptor of
 * index.json carries "org.opencontainers.image.created" = created (Unix
 * seconds, UTC: pass the SOURCE_DATE_EPOCH when there is one, else the
 * current time, as BuildKit does) and the platform of the image config.
 * names are references as the user gave them ("x", "reg:5000/a/b:v1");
 * they are normalised as Docker does (an invalid one fails before anything
 * is written). Entries are sorted by name, with mtime 0, uid/gid 0. The
 * blobs are read from cs and streamed (the store only holds blobs whose
 * bytes match their digest); each is checked to be in the store with its
 * descriptor's size before anything is written.
 *
 * manifest_digest, media_type and size describe the manifest (a kiln
 * export's result): an image manifest, OCI or Docker schema2 (an index
 * fails with -EOPNOTSUPP). A missing blob fails with -ENOENT naming it.
 * w is called from this thread only; an error it returns stops the archive
 * and is returned unchanged. Thread safe (no shared state besides cs).
 */
int kiln_export_oci_archive(struct kiln_content_store *cs, const char *manifest_digest,
                            const char *media_type, int64_t size, const char *const *names,
                            size_t n_names, int64_t created, kiln_export_write_fn w, void *userdata,
                            struct kiln_error **err);

/*
 * As kiln_export_oci_archive, plus what `docker load` reads (dockerd 20.10
 * and newer): "manifest.json" [{"Config":"blobs/sha256/<hex>","RepoTags":
 * [names normalised to their familiar form, e.g. "x:latest"] or null
 * without names,"Layers":["blobs/sha256/<hex>", ...]}], as BuildKit's
 * docker exporter writes it.
 */
int kiln_export_docker_archive(struct kiln_content_store *cs, const char *manifest_digest,
                               const char *media_type, int64_t size, const char *const *names,
                               size_t n_names, int64_t created, kiln_export_write_fn w,
                               void *userdata, struct kiln_error **err);
