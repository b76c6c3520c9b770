/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The registry client: resolve, pull, push and copy images as buildkitd
 * does (reference section 2), over the transfer manager (transfer.h).
 *
 *   manager = kiln_registry_transfer_manager_new(...)        one per daemon
 *   client  = kiln_registry_client_new(manager, config, ...)  one per daemon
 *   kiln_registry_pull(client, store, "alpine", &opts, &res, &err)
 *
 * Requests go to the hosts of the reference (hosts.h: mirrors in order,
 * then the origin). For each request, as containerd's request.do and
 * doWithRetries, with buildkit's authorizer and retry handler:
 *   - a transport error, a 404 or any other error status on a host that is
 *     not the last moves on to the next host, logging "trying next host"
 *     (info, with error=); pushes go to the origin only;
 *   - 401: the WWW-Authenticate challenges are read, the credentials of the
 *     host actually contacted are looked up (creds.h), a Bearer token is
 *     fetched (GET, then the OAuth POST where buildkitd falls back to it)
 *     and cached per scope, or Basic is used; the request is sent again;
 *   - 405 on a HEAD of a manifest: sent again as GET; 408 and 429: sent
 *     again; 500, 503, 504 and transient transport errors (timeouts,
 *     connections reset or closed early): sent again on the last host
 *     only (not after the same status twice), at most 5 attempts;
 *   - a whole fetch or upload that still failed with a 5xx or a transient
 *     error is tried again after 1 s, 2 s and 4 s (buildkit's retry
 *     handler). The base delay is KILN_REGISTRY_RETRY_BASE_MS (environment,
 *     milliseconds; default 1000), for tests;
 *   - https hosts marked http_fallback that answer like plain HTTP are
 *     used over http from then on (buildkitd's httpFallback).
 * When every host fails, the error names the reference and, for each host
 * tried, its sanitised URL and what went wrong.
 *
 * Blobs already in the store are neither downloaded nor counted against
 * the connection limit; concurrent pulls of one blob download it once (the
 * store's ingests). Every blob is verified before it is published.
 *
 * Credentials, tokens and keys never appear in errors, logs or events.
 *
 * Thread safety: a client may be used by any number of threads at once;
 * its lock (kiln_registry_client.lock) guards the auth handlers and the
 * hosts that fell back to plain http. Event callbacks run on any thread,
 * possibly several at once.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "config/config.h"
#include "content/content.h"
#include "registry/transfer.h"

/* The default retry base delay, and the variable that changes it. */
#define KILN_REGISTRY_RETRY_BASE_MS_DEFAULT 1000
#define KILN_REGISTRY_RETRY_BASE_MS_ENV     "KILN_REGISTRY_RETRY_BASE_MS"
/* Attempts of one request on one host (containerd's maxAttempts). */
#define KILN_REGISTRY_REQUEST_ATTEMPTS 5
/* Backoff steps of a whole fetch or upload: base, 2 base, 4 base. */
#define KILN_REGISTRY_RETRY_STEPS 3
/* Uploads larger than this go in PATCH chunks of this size (default). */
#define KILN_REGISTRY_UPLOAD_CHUNK_DEFAULT ((uint64_t) 64 << 20)
/* Distinct blobs in one pull or push. */
#define KILN_LIMIT_REGISTRY_BLOBS 4096u
/* Threads a pull or push uses for its blobs (they mostly wait for the
 * transfer manager, which enforces the real limit). */
#define KILN_REGISTRY_BLOB_THREADS_MAX 16u
/* Progress events per blob: at most one every this many ms. */
#define KILN_REGISTRY_PROGRESS_INTERVAL_MS 100

struct kiln_registry_client;

struct kiln_registry_client_options {
        /* A Docker config.json; NULL: $DOCKER_CONFIG/config.json or
         * ~/.docker/config.json. */
        const char *docker_config_path;
        /* Backoff base in ms; negative: KILN_REGISTRY_RETRY_BASE_MS_ENV or
         * the default. */
        int retry_base_ms;
};

/* The manager and the config are borrowed and must outlive the client.
 * Fails when the Docker config cannot be read. */
int kiln_registry_client_new(struct kiln_registry_transfer_manager *m,
                             const struct kiln_config *config,
                             const struct kiln_registry_client_options *o,
                             struct kiln_registry_client **ret, struct kiln_error **err);
struct kiln_registry_client *kiln_registry_client_free(struct kiln_registry_client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_registry_client *, kiln_registry_client_free);

/*
 * Cancellation: the operations take a `const atomic_bool *cancel` (NULL:
 * never). It is read before every request and retry, while backoff sleeps
 * and by the transfer manager for running transfers, which it aborts. A
 * cancelled operation returns -ECANCELED ("pull '<ref>': cancelled") and
 * publishes nothing partial (its ingests are aborted).
 *
 * After setting a flag, call kiln_registry_client_wake so that sleepers
 * and the manager see it at once (without it they do within a second).
 * Thread safe; may be called from any thread, but not from a signal
 * handler.
 */
void kiln_registry_client_wake(struct kiln_registry_client *c);

/* ---- progress events ---- */

enum kiln_registry_event_kind {
        KILN_REGISTRY_EVENT_RESOLVING,     /* ref */
        KILN_REGISTRY_EVENT_RESOLVED,      /* ref, digest, media_type, size */
        KILN_REGISTRY_EVENT_BLOB_STARTED,  /* digest, media_type, size */
        KILN_REGISTRY_EVENT_BLOB_PROGRESS, /* digest, current of size */
        KILN_REGISTRY_EVENT_BLOB_DONE,     /* digest (downloaded or uploaded) */
        KILN_REGISTRY_EVENT_BLOB_CACHED,   /* pull: already in the store */
        KILN_REGISTRY_EVENT_BLOB_EXISTS,   /* push: already on the registry */
        KILN_REGISTRY_EVENT_BLOB_MOUNTED,  /* push: mounted from message (a repository) */
        KILN_REGISTRY_EVENT_RETRY,         /* digest (or NULL), message: error and delay */
        KILN_REGISTRY_EVENT_ERROR,         /* digest (or NULL), message */
        _KILN_REGISTRY_EVENT_KIND_MAX,
};

struct kiln_registry_event {
        enum kiln_registry_event_kind kind;
        const char *ref;
        const char *digest;
        const char *media_type;
        int64_t size;
        uint64_t current;
        const char *message;
};

/* "resolving", "resolved", "blob-started", ... */
const char *kiln_registry_event_kind_to_string(enum kiln_registry_event_kind k);

typedef void (*kiln_registry_event_fn)(void *userdata, const struct kiln_registry_event *ev);

/* ---- resolve ---- */

struct kiln_registry_resolved {
        char *ref;        /* canonical: docker.io/library/alpine:latest */
        char *digest;     /* sha256:... */
        char *media_type; /* manifest or index type, as the registry said */
        int64_t size;
};
void kiln_registry_resolved_release(struct kiln_registry_resolved *r);

/* Tag (or digest) -> descriptor: HEAD .../manifests/<tag> with every
 * manifest and index type accepted, Docker-Content-Digest, else a GET
 * hashed. Manifests larger than KILN_CONTENT_LIMIT_MANIFEST are refused. */
int kiln_registry_resolve(struct kiln_registry_client *c, const char *ref,
                          kiln_registry_event_fn on_event, void *userdata,
                          struct kiln_registry_resolved *ret, struct kiln_error **err);

/* ---- one manifest ---- */

struct kiln_registry_manifest {
        char *ref;        /* canonical */
        char *digest;     /* sha256:..., verified against the bytes */
        char *media_type; /* as the registry said when resolving */
        char *data;       /* the bytes as sent (NUL-terminated for convenience) */
        size_t size;
};
void kiln_registry_manifest_release(struct kiln_registry_manifest *m);

struct kiln_registry_fetch_options {
        const atomic_bool *cancel; /* NULL: never */
        kiln_registry_event_fn on_event;
        void *userdata;
};

/* Resolves ref (a tag or a digest) and GETs exactly that manifest or index
 * on the metadata slot, without its children and without storing it. The
 * bytes are verified against the resolved digest (the reference's own when
 * it has one). Other media types are refused (-EOPNOTSUPP). *ret is owned
 * by the caller. Thread safe as kiln_registry_pull. */
int kiln_registry_fetch_manifest(struct kiln_registry_client *c, const char *ref,
                                 const struct kiln_registry_fetch_options *o,
                                 struct kiln_registry_manifest *ret, struct kiln_error **err);

/* ---- pull ---- */

struct kiln_registry_pull_options {
        const char *platform; /* NULL: the default platform (linux/amd64 here) */
        /* Every manifest of an index (for copies), not one platform. */
        bool all_platforms;
        /* Manifests, indexes and configs only (no layers): what
         * `imagetools inspect` and FROM's metadata resolution need. */
        bool metadata_only;
        /* Set (by another thread) to stop the pull; NULL: never. */
        const atomic_bool *cancel;
        kiln_registry_event_fn on_event;
        void *userdata;
};

struct kiln_registry_pull_image {
        char *manifest_digest;
        char *manifest_media_type;
        char *platform; /* "linux/amd64", or NULL when the index did not say */
        char *config_digest;
        char **layers; /* digests, NULL-terminated */
        size_t n_layers;
};

struct kiln_registry_pull_result {
        struct kiln_registry_resolved root; /* what the reference named */
        struct kiln_registry_pull_image *images;
        size_t n_images;
        uint64_t bytes_downloaded;
        unsigned blobs_downloaded;
        unsigned blobs_cached;
};
void kiln_registry_pull_result_release(struct kiln_registry_pull_result *r);

/* Pulls ref into store: resolve, the index (then the platform's manifest,
 * or with all_platforms every manifest it lists), the manifest, then the
 * config and layers in parallel under the connection limit. */
int kiln_registry_pull(struct kiln_registry_client *c, struct kiln_content_store *store,
                       const char *ref, const struct kiln_registry_pull_options *o,
                       struct kiln_registry_pull_result *ret, struct kiln_error **err);

/* ---- push ---- */

struct kiln_registry_push_options {
        /* A repository on the destination's registry holding the blobs:
         * they are mounted from it (POST .../blobs/uploads/?mount=&from=)
         * instead of uploaded. NULL: none. */
        const char *mount_from;
        /* Blobs larger than this are uploaded in PATCH chunks of this size;
         * 0: KILN_REGISTRY_UPLOAD_CHUNK_DEFAULT. */
        uint64_t chunk_size;
        /* Set (by another thread) to stop the push or copy; NULL: never. */
        const atomic_bool *cancel;
        kiln_registry_event_fn on_event;
        void *userdata;
};

struct kiln_registry_push_result {
        char *ref;
        char *digest; /* of the root manifest or index */
        unsigned blobs_uploaded;
        unsigned blobs_existing;
        unsigned blobs_mounted;
        uint64_t bytes_uploaded;
};
void kiln_registry_push_result_release(struct kiln_registry_push_result *r);

/* Pushes the manifest or index root_digest (in store, with its whole tree)
 * to ref on the reference's origin (never a mirror): blobs first (a HEAD
 * to skip those the registry has, a mount when mount_from is set, else
 * POST then PUT ?digest=, or PATCH chunks), then child manifests by
 * digest, the root last by ref's tag (or digest). */
int kiln_registry_push(struct kiln_registry_client *c, struct kiln_content_store *store,
                       const char *ref, const char *root_digest, const char *root_media_type,
                       const struct kiln_registry_push_options *o,
                       struct kiln_registry_push_result *ret, struct kiln_error **err);

/* ---- copy ---- */

/* Copies src (every platform of an index) to dest through store: the
 * manifests and indexes are pulled, then pushed as kiln_registry_push does;
 * a blob is downloaded from src only when dest has neither it nor (src and
 * dest on one registry) a mount of it. */
int kiln_registry_copy(struct kiln_registry_client *c, struct kiln_content_store *store,
                       const char *src, const char *dest,
                       const struct kiln_registry_push_options *o,
                       struct kiln_registry_push_result *ret, struct kiln_error **err);
