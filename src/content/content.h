/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Content: the content-addressed blob store, the OCI and Docker image
 * documents (manifests, indexes, configs, descriptors) and platforms.
 *
 * Store layout under <root>/content/ (DESIGN.md section 5):
 *   blobs/sha256/<hex>   published blobs; the bytes always hash to the name
 *   ingest/<random>      blobs being written; removed on failure, and all of
 *                        them at kiln_content_store_open (a crash leaves
 *                        nothing else half-done)
 *
 * A blob is published only after its size and sha256 are verified, by
 * link() (rename() where the filesystem has no hard links) of the fsynced
 * ingest file; EEXIST means another writer published the same verified
 * bytes. One process owns a root at a time (kilnd.lock): opening cleans
 * ingest/.
 *
 * Documents are parsed with jansson under the size limits below and
 * validated as the image-spec JSON schemas require. Errors name the document
 * kind, the JSON path and what is wrong:
 *   oci image manifest: $.layers[2].size: expected an integer >= 0, got -1
 * Parsed documents are plain structs owned by the caller; serialising them
 * gives the bytes Go's encoding/json gives for BuildKit's structs (field
 * order, escaping, MarshalIndent for manifests and indexes), so kiln's
 * output is deterministic and matches BuildKit's.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/macro.h"

/* ---- limits ---- */

/* A manifest, index, standalone descriptor or oci-layout header: containerd's
 * MaxManifestSize, which is 4 * 1048 * 1048 (sic), so that kiln accepts
 * exactly what buildkitd accepts. */
#define KILN_CONTENT_LIMIT_MANIFEST (4u * 1048u * 1048u)
/* An image config. containerd reads configs without a limit; real ones are
 * a few KiB, with long histories well under 1 MiB. */
#define KILN_CONTENT_LIMIT_CONFIG (8u << 20)
/* Layers of one manifest. Runtimes stop far below (overlayfs stacks about
 * 128 lower directories); the limit only bounds hostile documents. */
#define KILN_CONTENT_LIMIT_LAYERS 1024
/* Entries of one index (an OCI layout's index.json may list many tags). */
#define KILN_CONTENT_LIMIT_INDEX_ENTRIES 10000

/* ---- digests ---- */

/* "sha256:" and 64 hex digits, and with the NUL. */
#define KILN_CONTENT_DIGEST_LEN  71
#define KILN_CONTENT_DIGEST_SIZE 72

/* Checks that s is a digest the store can hold: "sha256:" followed by 64
 * lowercase hex digits. A well-formed digest of another algorithm (sha512,
 * sha384, ...) fails with -EOPNOTSUPP, anything else with -EINVAL; the
 * message quotes s (cut short when long). */
int kiln_content_digest_check(const char *s, struct kiln_error **err);

/* Writes "sha256:<hex>" of p[0..n) into out. */
void kiln_content_digest_of(const void *p, size_t n, char out[static KILN_CONTENT_DIGEST_SIZE]);

/* ---- media types ---- */

#define KILN_CONTENT_MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define KILN_CONTENT_MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define KILN_CONTENT_MT_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"
#define KILN_CONTENT_MT_OCI_DESCRIPTOR  "application/vnd.oci.descriptor.v1+json"
#define KILN_CONTENT_MT_OCI_LAYOUT      "application/vnd.oci.layout.header.v1+json"
#define KILN_CONTENT_MT_OCI_EMPTY       "application/vnd.oci.empty.v1+json"
#define KILN_CONTENT_MT_OCI_LAYER       "application/vnd.oci.image.layer.v1.tar"
#define KILN_CONTENT_MT_OCI_LAYER_GZIP  "application/vnd.oci.image.layer.v1.tar+gzip"
#define KILN_CONTENT_MT_OCI_LAYER_ZSTD  "application/vnd.oci.image.layer.v1.tar+zstd"
#define KILN_CONTENT_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define KILN_CONTENT_MT_DOCKER_MANIFEST_LIST \
        "application/vnd.docker.distribution.manifest.list.v2+json"
#define KILN_CONTENT_MT_DOCKER_CONFIG     "application/vnd.docker.container.image.v1+json"
#define KILN_CONTENT_MT_DOCKER_LAYER      "application/vnd.docker.image.rootfs.diff.tar"
#define KILN_CONTENT_MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define KILN_CONTENT_MT_DOCKER_LAYER_ZSTD "application/vnd.docker.image.rootfs.diff.tar.zstd"
#define KILN_CONTENT_MT_IN_TOTO           "application/vnd.in-toto+json"

/* The JSON documents kiln parses. */
enum kiln_content_media_type {
        KILN_CONTENT_MEDIA_OCI_MANIFEST,
        KILN_CONTENT_MEDIA_OCI_INDEX,
        KILN_CONTENT_MEDIA_OCI_CONFIG,
        KILN_CONTENT_MEDIA_DOCKER_MANIFEST,
        KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST,
        KILN_CONTENT_MEDIA_DOCKER_CONFIG,
        KILN_CONTENT_MEDIA_OCI_DESCRIPTOR,
        KILN_CONTENT_MEDIA_OCI_LAYOUT,
        _KILN_CONTENT_MEDIA_MAX,
        _KILN_CONTENT_MEDIA_INVALID = -EINVAL,
};

/* What a media type names, for any string (descriptors may carry anything). */
enum kiln_content_kind {
        KILN_CONTENT_KIND_MANIFEST, /* OCI manifest, Docker schema2 manifest */
        KILN_CONTENT_KIND_INDEX,    /* OCI index, Docker manifest list */
        KILN_CONTENT_KIND_CONFIG,   /* OCI or Docker image config */
        KILN_CONTENT_KIND_LAYER,    /* OCI and Docker layer types, any compression */
        KILN_CONTENT_KIND_OTHER,    /* artifacts, attestations, empty, unknown */
        _KILN_CONTENT_KIND_MAX,
        _KILN_CONTENT_KIND_INVALID = -EINVAL,
};

enum kiln_content_compression {
        KILN_CONTENT_COMPRESSION_NONE,
        KILN_CONTENT_COMPRESSION_GZIP,
        KILN_CONTENT_COMPRESSION_ZSTD,
        /* application/vnd.docker.image.rootfs.diff.tar: Docker images are
         * known to carry gzip under it, so the reader must sniff. */
        KILN_CONTENT_COMPRESSION_UNKNOWN,
        _KILN_CONTENT_COMPRESSION_MAX,
        _KILN_CONTENT_COMPRESSION_INVALID = -EINVAL,
};

const char *kiln_content_media_type_to_string(enum kiln_content_media_type t);
/* Exact match of one of the strings above (parameters such as
 * "; charset=utf-8" are not accepted: registries send bare types). */
enum kiln_content_media_type kiln_content_media_type_from_string(const char *s);
/* A lower-case noun for messages: "oci image manifest", "docker manifest list"... */
const char *kiln_content_media_type_noun(enum kiln_content_media_type t);
enum kiln_content_kind kiln_content_media_type_kind(const char *mt);
/* The compression of a layer media type; _INVALID when mt is not a layer. */
enum kiln_content_compression kiln_content_layer_compression(const char *mt);

/* ---- platforms ---- */

/* A platform as in image-spec. Strings are owned; variant and os_version
 * are NULL when absent, os_features a NULL-terminated vector or NULL. */
struct kiln_content_platform {
        char *os;
        char *architecture;
        char *variant;
        char *os_version;
        char **os_features;
};

/* Parses "os[(version[+feature...])][/arch[/variant]]" or a bare "arch" as
 * containerd's platforms.Parse does: aliases (x86_64, aarch64, armhf, ...)
 * normalised, "linux/arm" stands for arm/v7 (variant left empty),
 * "linux/arm64/v8" keeps its variant, a bare OS gets the host architecture
 * and a bare architecture the host OS ("amd64" is linux/amd64). Wildcards
 * and unknown bare words fail with -EINVAL and a message quoting spec.
 * *ret is overwritten (not released) and owned by the caller on success. */
int kiln_content_platform_parse(const char *spec, struct kiln_content_platform *ret,
                                struct kiln_error **err);

/* The platform this kiln was built for (linux/amd64 on x86-64, linux/arm64
 * on aarch64, linux/arm/vN from the compiler's ARM level...). */
void kiln_content_platform_default(struct kiln_content_platform *ret);

/* Lower-cases and applies containerd's normalisation in place: os "" ->
 * linux, macos -> darwin; i386 -> 386; x86_64/x86-64 -> amd64 (v1 dropped);
 * aarch64 -> arm64 with 8/v8/v8.0 dropped and 9/v9.0 -> v9; armhf -> arm/v7;
 * armel -> arm/v6; arm "" or 7 -> v7, 5/6/8 -> v5/v6/v8; os.features sorted
 * and deduplicated. */
void kiln_content_platform_normalize(struct kiln_content_platform *p);

/* "os/arch[/variant]" as containerd's platforms.Format ("unknown" without an
 * OS); os.version and os.features, when set, in parentheses after the OS as
 * platforms.FormatAll does. Caller frees. */
char *kiln_content_platform_format(const struct kiln_content_platform *p);

/* Deep copy into *dst (overwritten). */
void kiln_content_platform_copy(struct kiln_content_platform *dst,
                                const struct kiln_content_platform *src);
void kiln_content_platform_release(struct kiln_content_platform *p);

/* How well have serves a request for want, containerd's platforms.Only order:
 * 0 is an exact match (after normalisation), 1, 2, ... compatible fallbacks
 * in order of preference (arm/v7 then v6 then v5; arm64/v8 then arm/v8 ...;
 * amd64 then 386), -1 no match. os.version and os.features take part only
 * when want sets them: then have's os.version must be equal and have's
 * features a subset of want's. */
int kiln_content_platform_rank(const struct kiln_content_platform *want,
                               const struct kiln_content_platform *have);

/* ---- descriptors ---- */

struct kiln_content_annotation {
        char *key;
        char *value;
};

/* Annotations are kept sorted by key (byte order), as Go marshals maps. */
struct kiln_content_annotations {
        struct kiln_content_annotation *items;
        size_t n;
};

struct kiln_content_descriptor {
        char *media_type;
        char *digest; /* any registered algorithm: sha256, sha384, sha512 */
        int64_t size;
        char **urls; /* NULL-terminated, or NULL */
        struct kiln_content_annotations annotations;
        char *data; /* the base64 text, NULL when absent; checked against
                     * digest and size at parse time */
        struct kiln_content_platform *platform; /* NULL when absent */
        char *artifact_type;                    /* NULL when absent */
};

void kiln_content_descriptor_release(struct kiln_content_descriptor *d);
/* The value of annotation key, or NULL. */
const char *kiln_content_annotations_get(const struct kiln_content_annotations *a, const char *key);
/* Sets (replacing) key; copies both strings; keeps the order. */
void kiln_content_annotations_set(struct kiln_content_annotations *a, const char *key,
                                  const char *value);
void kiln_content_annotations_release(struct kiln_content_annotations *a);

/* ---- manifests (OCI image manifest, Docker schema2 manifest) ---- */

struct kiln_content_manifest {
        enum kiln_content_media_type media_type; /* OCI_MANIFEST or DOCKER_MANIFEST */
        bool media_type_set;                     /* the document had a mediaType field */
        char *artifact_type;
        struct kiln_content_descriptor config;
        struct kiln_content_descriptor *layers;
        size_t n_layers;
        struct kiln_content_descriptor *subject; /* NULL when absent */
        struct kiln_content_annotations annotations;
};

/* Parses and validates a manifest of at most KILN_CONTENT_LIMIT_MANIFEST
 * bytes. media_type is what the caller was told (Content-Type, a
 * descriptor): one of the two manifest types, or NULL to go by the
 * document's own mediaType (an OCI manifest may omit it). A document whose
 * mediaType contradicts media_type is an error, as in containerd. Layers of
 * any media type are accepted (artifacts); see _check_image. Errors: -EBADMSG
 * (not JSON), -EINVAL (invalid), -E2BIG (too large), -EOPNOTSUPP (not a
 * manifest type: the message lists the supported ones). */
int kiln_content_manifest_parse(const char *data, size_t n, const char *media_type,
                                struct kiln_content_manifest **ret, struct kiln_error **err);

/* Checks that m is a container image rather than another artifact: the
 * config is an image config and every layer a layer type. The error names
 * the offending descriptor and lists the supported types. */
int kiln_content_manifest_check_image(const struct kiln_content_manifest *m,
                                      struct kiln_error **err);

/* Appends the document to out: Go's MarshalIndent(m, "", "  ") of BuildKit's
 * struct, no final newline. Returns 0 or -E2BIG when out->max is reached. */
int kiln_content_manifest_serialize(const struct kiln_content_manifest *m, struct kiln_buf *out);

struct kiln_content_manifest *kiln_content_manifest_free(struct kiln_content_manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_manifest *, kiln_content_manifest_free);

/* ---- indexes (OCI image index, Docker manifest list) ---- */

struct kiln_content_index {
        enum kiln_content_media_type media_type; /* OCI_INDEX or DOCKER_MANIFEST_LIST */
        bool media_type_set;
        char *artifact_type;
        /* Every entry, whatever its media type (attestations, artifacts). */
        struct kiln_content_descriptor *manifests;
        size_t n_manifests;
        struct kiln_content_descriptor *subject;
        struct kiln_content_annotations annotations;
};

/* As kiln_content_manifest_parse, for the two index types. */
int kiln_content_index_parse(const char *data, size_t n, const char *media_type,
                             struct kiln_content_index **ret, struct kiln_error **err);

/* Picks the entry of idx that serves want best (NULL: the default platform):
 * entries whose media type is not a manifest or index, and BuildKit
 * attestation manifests, are skipped as containerd skips them; among entries
 * with a platform the best kiln_content_platform_rank wins, earlier entries
 * on ties (with os.features requested, the entry with more of them first;
 * without, entries without os.features first).
 * Returns 0 and sets *ret (borrowed from idx) for a platform match; 1 when
 * only an entry without a platform is left (containerd tries those last:
 * the caller must check that manifest's config, or descend into the index);
 * -ENOENT with an error listing the platforms the index offers otherwise. */
int kiln_content_index_select(const struct kiln_content_index *idx,
                              const struct kiln_content_platform *want,
                              const struct kiln_content_descriptor **ret, struct kiln_error **err);

/* As kiln_content_manifest_serialize. */
int kiln_content_index_serialize(const struct kiln_content_index *idx, struct kiln_buf *out);

struct kiln_content_index *kiln_content_index_free(struct kiln_content_index *idx);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_index *, kiln_content_index_free);

/* ---- image configs (OCI and Docker) ---- */

struct kiln_content_history {
        char *created; /* RFC 3339, NULL when absent */
        char *created_by;
        char *author;
        char *comment;
        bool empty_layer;
};

struct kiln_content_config {
        enum kiln_content_media_type media_type; /* OCI_CONFIG or DOCKER_CONFIG */
        /* architecture, os (required), variant, os.version, os.features */
        struct kiln_content_platform platform;
        char *created; /* RFC 3339 */
        char *author;
        char **diff_ids; /* rootfs.diff_ids, NULL-terminated, never NULL */
        struct kiln_content_history *history;
        size_t n_history;
        /* The "config" object; vectors are NULL when absent or null. */
        char *user;
        char **env; /* each "KEY=value" */
        char **entrypoint;
        char **cmd;
        char *working_dir;
        char **exposed_ports; /* the keys of ExposedPorts, in document order */
        char **volumes;       /* the keys of Volumes */
        struct kiln_content_annotations labels;
        char *stop_signal;
        bool args_escaped;
        /* The whole document as parsed (key order kept), for fields kiln does
         * not model (Docker's container_config, Healthcheck, OnBuild ...). */
        json_t *raw;
};

/* Parses and validates an image config of at most KILN_CONTENT_LIMIT_CONFIG
 * bytes; media_type as for manifests (NULL means OCI). OCI configs follow
 * the schema strictly; Docker configs may carry null where Go's decoder
 * accepts it (Docker writes "Env":null). */
int kiln_content_config_parse(const char *data, size_t n, const char *media_type,
                              struct kiln_content_config **ret, struct kiln_error **err);

/* Appends the raw document in Go's compact form (BuildKit writes configs as
 * compact JSON), so a config read from a registry serialises to its bytes. */
int kiln_content_config_serialize(const struct kiln_content_config *c, struct kiln_buf *out);

struct kiln_content_config *kiln_content_config_free(struct kiln_content_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_config *, kiln_content_config_free);

/* ---- any document ---- */

/* One parsed document of any kind; exactly the member for media_type is set
 * (an oci-layout header sets only layout_version). */
struct kiln_content_document {
        enum kiln_content_media_type media_type;
        struct kiln_content_manifest *manifest;
        struct kiln_content_index *index;
        struct kiln_content_config *config;
        struct kiln_content_descriptor *descriptor;
        char *layout_version;
        char digest[KILN_CONTENT_DIGEST_SIZE]; /* sha256 of the bytes parsed */
        size_t size;
};

/* Parses data as media_type (one of the documents above), or, with NULL, as
 * the document's own mediaType says (without one: an object with
 * "manifests" is an OCI index, one with "config" or "layers" an OCI
 * manifest). Unknown and unsupported types (Docker schema 1, ...) fail with
 * -EOPNOTSUPP and a message listing the supported ones. */
int kiln_content_document_parse(const char *data, size_t n, const char *media_type,
                                struct kiln_content_document **ret, struct kiln_error **err);

/* A standalone descriptor (application/vnd.oci.descriptor.v1+json). */
int kiln_content_descriptor_parse(const char *data, size_t n, struct kiln_content_descriptor **ret,
                                  struct kiln_error **err);
/* Appends Go's MarshalIndent of the descriptor. */
int kiln_content_descriptor_serialize(const struct kiln_content_descriptor *d,
                                      struct kiln_buf *out);
struct kiln_content_descriptor *kiln_content_descriptor_free(struct kiln_content_descriptor *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_descriptor *, kiln_content_descriptor_free);

struct kiln_content_document *kiln_content_document_free(struct kiln_content_document *doc);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_document *, kiln_content_document_free);

/* ---- JSON output ---- */

enum {
        /* Go's MarshalIndent(v, "", "  "); without it, Go's compact Marshal. */
        KILN_CONTENT_JSON_INDENT = 1 << 0,
};

/* Appends v as Go's encoding/json writes it: object keys in v's order,
 * strings escaped as Go does (<, >, & as \u003c..., U+2028/9, \b \f \n \r
 * \t, other controls as \u00XX), shortest round-trip floats, no final
 * newline. Returns 0 or -E2BIG. */
int kiln_content_json_dump(const json_t *v, unsigned flags, struct kiln_buf *out);

/* ---- the blob store ---- */

struct kiln_content_store;
struct kiln_content_ingest;

/* Opens (creating as needed) the store under <root>/content and removes
 * every leftover file in ingest/. Returns 0 and *ret, or -errno with an
 * error naming the path. */
int kiln_content_store_open(const char *root, struct kiln_content_store **ret,
                            struct kiln_error **err);

/* Closes the store. Every ingest must have been freed first. */
struct kiln_content_store *kiln_content_store_free(struct kiln_content_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_store *, kiln_content_store_free);

/*
 * Thread safety: every kiln_content_store_* function but _open and _free,
 * and kiln_content_ingest_begin, may be called from any thread at once.
 * The store's one lock, kiln_content_store.lock (a mutex, with the
 * condition variable .cond signalled whenever an ingest ends), guards only
 * the table of digests being ingested; it is never held across reads or
 * writes of blob data, nor while watch callbacks run. An ingest object is
 * used by one thread at a time.
 */

/* 1 when the blob is published, 0 when not; -EINVAL/-EOPNOTSUPP for a bad
 * digest. */
int kiln_content_store_has(struct kiln_content_store *s, const char *digest,
                           struct kiln_error **err);

/* The size of a published blob; -ENOENT when absent. */
int kiln_content_store_size(struct kiln_content_store *s, const char *digest, uint64_t *ret,
                            struct kiln_error **err);

/* Opens a published blob read-only; the caller closes *ret_fd. -ENOENT when
 * absent. The file stays readable after a delete of the digest. */
int kiln_content_store_open_blob(struct kiln_content_store *s, const char *digest, int *ret_fd,
                                 struct kiln_error **err);

/* Reads a published blob into b (after what b holds), failing with -E2BIG
 * when it is larger than b allows. For documents: pass a buffer limited to
 * KILN_CONTENT_LIMIT_MANIFEST or _CONFIG. */
int kiln_content_store_read(struct kiln_content_store *s, const char *digest, struct kiln_buf *b,
                            struct kiln_error **err);

/* A read-only mapping of a published blob (data is valid, and "" for an
 * empty blob, until kiln_content_mapping_release). */
struct kiln_content_mapping {
        const void *data;
        size_t size;
};
int kiln_content_store_map(struct kiln_content_store *s, const char *digest,
                           struct kiln_content_mapping *ret, struct kiln_error **err);
void kiln_content_mapping_release(struct kiln_content_mapping *m);

/* Unpublishes a blob; -ENOENT when absent. Open files and mappings of it
 * stay valid. Nothing here knows who still needs a blob: that is the
 * caller's (leases and garbage collection live above the store). */
int kiln_content_store_delete(struct kiln_content_store *s, const char *digest,
                              struct kiln_error **err);

/* "<root>/content/blobs/sha256/<hex>" (caller frees), or NULL for a digest
 * that kiln_content_digest_check refuses. The file may or may not exist. */
char *kiln_content_store_blob_path(struct kiln_content_store *s, const char *digest);

/* Writes data[0..n) as one blob: an ingest of expected (NULL: whatever the
 * bytes hash to) and n bytes, committed. The digest is written to
 * ret_digest when not NULL. Returns 1 when written, 0 when it was present
 * (waiting for a concurrent ingest of it, if any). */
int kiln_content_store_put(struct kiln_content_store *s, const char *expected, const void *data,
                           size_t n, char *ret_digest, struct kiln_error **err);

/* Blocks until no ingest of digest is in flight; then 1 when the blob is
 * published, 0 when not (the writer failed, or there was none). */
int kiln_content_store_wait(struct kiln_content_store *s, const char *digest,
                            struct kiln_error **err);

/* For event loops that must not block: when an ingest of digest is in
 * flight, registers cb to be called once when it ends (from the thread that
 * ends it, without the store's lock held; published tells whether the blob
 * is now in the store) and returns 1; returns 0 when none is in flight
 * (then check kiln_content_store_has). */
typedef void (*kiln_content_watch_fn)(void *userdata, const char *digest, bool published);
int kiln_content_store_watch(struct kiln_content_store *s, const char *digest,
                             kiln_content_watch_fn cb, void *userdata, struct kiln_error **err);

/* ---- ingests: writing one blob ---- */

#define KILN_CONTENT_SIZE_UNKNOWN (-1)

enum {
        /* Fail with -EBUSY instead of waiting while another ingest of the
         * same digest is in flight. */
        KILN_CONTENT_INGEST_NOWAIT = 1 << 0,
};

/*
 * Starts writing a blob. digest is the expected digest (sha256 only), or
 * NULL when the bytes decide it at commit (kiln's own output); size the
 * expected size in bytes or KILN_CONTENT_SIZE_UNKNOWN (then the caller
 * bounds what it writes).
 *
 * Returns 1 and *ret (owned by the caller, free with
 * kiln_content_ingest_free) when the caller must write the blob. Returns 0
 * and *ret = NULL when the blob is already published. While another ingest
 * of the same digest is in flight this waits for it (or, with
 * KILN_CONTENT_INGEST_NOWAIT, fails with -EBUSY): if it publishes, 0; if it
 * fails, this caller becomes the writer. So concurrent fetches of one digest
 * download it once. A published blob of another size than size is an error
 * (-EBADMSG): the caller's descriptor is wrong. On failure *ret is untouched.
 * A thread must not begin an ingest of a digest it is writing itself (it
 * would wait for itself).
 */
int kiln_content_ingest_begin(struct kiln_content_store *s, const char *digest, int64_t size,
                              unsigned flags, struct kiln_content_ingest **ret,
                              struct kiln_error **err);

/* Appends p[0..n) to the ingest file and the running sha256. Writing past
 * the expected size fails at once (-EFBIG), naming the digest and the
 * sizes; any failure ends the ingest: its file is removed, waiters wake,
 * and later writes and the commit fail with -ESTALE. */
int kiln_content_ingest_write(struct kiln_content_ingest *in, const void *p, size_t n,
                              struct kiln_error **err);

/* Verifies the size and the sha256, fsyncs and publishes the blob. A
 * mismatch fails with -EBADMSG and a message giving the expected and actual
 * digest or size; then nothing is published and the ingest file is gone.
 * Success or failure, the ingest is over (free it afterwards). */
int kiln_content_ingest_commit(struct kiln_content_ingest *in, struct kiln_error **err);

/* Bytes written so far (progress). */
uint64_t kiln_content_ingest_offset(const struct kiln_content_ingest *in);

/* The expected digest, or after a successful commit the published one;
 * NULL before commit when it was not given. Borrowed from in. */
const char *kiln_content_ingest_digest(const struct kiln_content_ingest *in);

/* Aborts the ingest if it was not committed (the ingest file is removed and
 * waiters wake to take over), then frees it. */
struct kiln_content_ingest *kiln_content_ingest_free(struct kiln_content_ingest *in);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_ingest *, kiln_content_ingest_free);
