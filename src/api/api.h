/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon API: HTTP/1.1 with JSON bodies, spoken by kilnd and the kiln
 * client over a unix socket (or TCP with mutual TLS). This header is the
 * contract between the two; both sides build and read the wire types only
 * through it.
 *
 * Conventions
 *   - Paths are versioned: /v1/...
 *   - Bodies are UTF-8 JSON objects, "Content-Type: application/json",
 *     compact, ending in a newline. Clients must ignore unknown keys, so that
 *     later daemons may add some.
 *   - A failed request has a 4xx/5xx status and the body
 *       {"error": "<message>"}
 *     whose message follows kiln's style (lower case, cause last).
 *   - 404 for an unknown path, 405 (with an Allow header) for a known path
 *     and a method it does not take.
 *
 * GET /v1/info: who the daemon is and a summary of its effective
 * configuration (after the file, defaults and flags), the part of it that
 * `kiln inspect` shows:
 *
 *   {
 *     "version": "0.1.0",                 kilnd's version
 *     "pid": 1234,                        kilnd's process id
 *     "root": "/var/lib/kiln",            --root, absolute
 *     "network": {                        the network RUN steps get by default
 *       "mode": "cni",                    cni | host (what networkMode resolved to)
 *       "pool": {"idle": 2, "inUse": 1, "created": 3, "released": 0}
 *     },                                  pool: CNI namespaces, only with cni
 *     "config": {
 *       "configFile": "/etc/buildkit/buildkitd.toml",
 *                                         the file read; absent when the
 *                                         default file did not exist
 *       "addresses": ["unix:///run/kiln/kilnd.sock"],
 *                                         where the daemon listens
 *       "logLevel": "info",
 *       "worker": {
 *         "oci": {
 *           "enabled": true,              absent while "auto" (no runc probe yet)
 *           "networkMode": "auto",        auto | cni | host | bridge
 *           "platforms": ["linux/amd64"], configured, else detected
 *           "max-parallelism": 0,         0 means unlimited
 *           "snapshotter": "auto"
 *         },
 *         "containerd": {"enabled": true, "supported": false}
 *                                         only when [worker.containerd] is
 *                                         enabled: kiln has no such worker
 *       },
 *       "registries": {                   one per [registry."<host>"]
 *         "docker.io": {
 *           "mirrors": ["mirror.example:5000"],
 *           "http": false,                present only when set
 *           "insecure": false,            present only when set
 *           "ca": 1,                      number of CA files (paths are not
 *           "keypairs": 1                 exposed); present when non-zero
 *         }
 *       },
 *       "maxRegistryConcurrency": 4       [system] maxRegistryConcurrency
 *     }
 *   }
 *
 * Key names inside "worker.oci" are buildkitd.toml's, so a user can match
 * them with the file; the rest are camelCase like buildx's JSON.
 *
 * ---- Images ----
 *
 * Long operations answer with a stream: status 200, "Content-Type:
 * application/x-ndjson", chunked, one compact JSON object (an event) a
 * line, each with "type" and "time" (RFC 3339, UTC, nanoseconds, when the
 * daemon queued it). The last line is the final event: "result" or
 * "error"; a stream that ends without one was cut (the daemon stopped or
 * failed). Problems found before the stream starts (a bad body, too many
 * operations) get an ordinary error answer instead. Keys without a value
 * are left out.
 *
 * Progress events, as the registry client reports them (every one has
 * "ref", the canonical reference the request is about: the source while
 * pulling, the destination while pushing):
 *
 *   resolving      ref
 *   resolved       ref, digest, mediaType, size        what ref names
 *   blob-started   ref, digest, mediaType, size        a download or upload
 *   blob-progress  ref, digest, current, size          bytes so far; at most
 *                                                      every 100 ms per blob,
 *                                                      and dropped first when
 *                                                      the client reads slowly
 *   blob-done      ref, digest, mediaType, size
 *   blob-cached    ref, digest, mediaType, size        pull: already in the store
 *   blob-exists    ref, digest, mediaType, size        push: the registry has it
 *   blob-mounted   ref, digest, mediaType, size, message
 *                                                      push: mounted from the
 *                                                      repository in message
 *   retry          ref, digest?, message               a failure and the delay
 *                                                      before the next attempt
 *   blob-error     ref, digest, message                one blob failed (the
 *                                                      operation fails next)
 *
 * Final events:
 *
 *   error          {"type": "error", "error": "pull 'alpine': ..."}
 *   result         per endpoint, below
 *
 * Descriptors in results are {"mediaType": ..., "digest": ..., "size": N}.
 *
 * POST /v1/pull: fetches an image (manifest, config and layers) into the
 * daemon's content store.
 *
 *   request  {"ref": "alpine", "platform": "linux/arm64"}
 *            ref: required; platform: optional, default the daemon's
 *            own (linux/amd64 on x86-64). Nothing else is allowed.
 *   result   {"type": "result",
 *             "ref": "docker.io/library/alpine:latest",
 *             "digest": "sha256:...", "mediaType": "...", "size": 1234,
 *                                            what ref names (index or manifest)
 *             "platform": "linux/arm64",     absent when the index did not say
 *             "manifest": {descriptor},      the platform's manifest (the
 *                                            root itself without an index)
 *             "config": {descriptor},
 *             "layers": [{descriptor}, ...],
 *             "bytesDownloaded": 3460000, "blobsDownloaded": 3,
 *             "blobsCached": 0}
 *
 * POST /v1/imagetools/create: copies an image, every platform of an index,
 * from a registry to one or more references (buildx's `imagetools create
 * -t DEST SRC...`), through the daemon's store and configuration.
 *
 *   request  {"sources": ["SRC", ...], "tags": ["DEST", ...]}
 *            at least one of each. One source is copied as it is (the
 *            same digest at every tag); several are merged into a new
 *            index as buildx does (every entry of an index source, a lone
 *            manifest with its config's platform, duplicates dropped; a
 *            Docker manifest list when every entry is a Docker type, else
 *            an OCI index).
 *   result   {"type": "result",
 *             "digest": "sha256:...", "mediaType": "...",
 *                                            what was pushed: the source
 *                                            root, or the merged index
 *             "tags": [{"ref": "127.0.0.1:5000/x:latest",
 *                       "digest": "sha256:..."}, ...],
 *             "blobsUploaded": 2, "blobsExisting": 0, "blobsMounted": 0,
 *             "bytesUploaded": 1234}
 *
 * GET /v1/imagetools/inspect?ref=R[&raw=1]: resolves R through the daemon's
 * configuration (mirrors, certificates, credentials) and answers with what
 * it names, in one ordinary answer (not a stream):
 *
 *   raw=1    the manifest or index bytes exactly as the registry sent them,
 *            "Content-Type: <its media type>",
 *            "Docker-Content-Digest: sha256:..."
 *   else     {"name": "docker.io/library/alpine:latest",
 *             "mediaType": "...", "digest": "sha256:...", "size": 1234,
 *             "manifest": {the document, parsed}}
 *
 *   raw takes 1/true or 0/false; other parameters are refused (400).
 *
 * Status codes of the image endpoints: 400 for a bad body or parameter
 * (including a reference or platform that does not parse), 404 when no
 * host has the image, 403 when a registry refused the daemon's
 * credentials, 502 for other registry failures (the message names the
 * reference and, for each host tried, its URL and what went wrong), 503
 * when the daemon runs as many operations as it allows, or is stopping.
 *
 * ---- Builds ----
 *
 * POST /v1/build: builds a Dockerfile (`kiln build`). The body (at most
 * KILN_API_LIMIT_BUILD_REQUEST bytes) is a JSON object:
 *
 *   {"dockerfile": "FROM alpine\n...",    required: the Dockerfile's text
 *    "dockerfileName": "Dockerfile",      for messages; default "Dockerfile"
 *    "dockerignore": "...",               raw .dockerignore text; optional
 *    "contextKey": "<key>",               required: a stable key of the
 *                                         client's context directory (the
 *                                         daemon keeps one copy per key and
 *                                         asks only for what changed)
 *    "buildArgs": {"K": "V"},             --build-arg
 *    "labels": {"K": "V"},                --label
 *    "target": "stage",                   --target; default the last stage
 *    "platform": "linux/arm64",           --platform; default the daemon's
 *    "noCache": false,                    --no-cache
 *    "noCacheFilter": ["stage"],          --no-cache-filter
 *    "addHosts": ["host:1.2.3.4"],        --add-host
 *    "network": "default",                --network: default | none | host,
 *                                         for every RUN that names none
 *                                         (host needs network.host)
 *    "allow": ["network.host"],           --allow: entitlements the build
 *                                         asks for (network.host,
 *                                         security.insecure); the daemon's
 *                                         insecure-entitlements must grant
 *                                         them, and a RUN --network=host or
 *                                         --security=insecure needs them
 *    "secrets": [{"id": "x", "data": "<base64>"}],
 *                                         --secret: the contents, sent by the
 *                                         client; kept only in memory
 *    "ssh": [{"id": "default", "path": "/run/agent.sock"}],
 *                                         --ssh: agent sockets on the daemon's
 *                                         host
 *    "outputs": [{"type": "image", "attrs": {"name": "a,b", "push": "true"}}]}
 *                                         -o/--output, --push, --load, -t: the
 *                                         exporters, as buildx sends them
 *                                         (at most KILN_API_LIMIT_BUILD_OUTPUTS;
 *                                         none: the result is only cached).
 *                                         type: image, registry, oci, docker,
 *                                         local or tar; attrs: strings, as
 *                                         BuildKit's exporters take them:
 *                                         name (comma-separated), push,
 *                                         compression (uncompressed, gzip,
 *                                         zstd), compression-level,
 *                                         force-compression, oci-mediatypes,
 *                                         rewrite-timestamp, store, unpack,
 *                                         tar ("false": the client writes an
 *                                         OCI/Docker layout directory; the
 *                                         daemon sends the same tar);
 *                                         attributes the daemon does not know
 *                                         are ignored, as BuildKit does. dest
 *                                         is never sent: the client keeps it.
 *
 * Every key but "dockerfile" and "contextKey" is optional; unknown keys
 * are refused (400). The answer is an event stream (see Images) whose
 * events are:
 *
 *   build            id                  first: the build's id, used by the
 *                                        context endpoints below
 *   vertex           digest, name, inputs[], started, completed, cached,
 *                    error               a step (op digest), its full state
 *                                        each time it changes; started and
 *                                        completed are RFC 3339 times
 *   status           vertex, id, name, current, total, started, completed
 *                                        progress inside a step (pull,
 *                                        unpack, transfer)
 *   log              vertex, stream (1 or 2), data (base64)
 *                                        output of a step; "time" is when
 *                                        it was written
 *   warning          rule, message, url, line
 *                                        a Dockerfile lint warning
 *   context-request  name, followPaths[], includePatterns[], excludePatterns[]
 *                                        the daemon needs the local source
 *                                        name ("context", or a named one):
 *                                        the client answers with the two
 *                                        context requests below (on another
 *                                        connection, while it keeps reading
 *                                        the stream), within
 *                                        KILN_API_CONTEXT_TIMEOUT_S seconds
 *                                        for each. Sent when the solver
 *                                        first needs the source (once per
 *                                        name), so base image pulls may
 *                                        already be running; a fully cached
 *                                        build still asks (the cache key
 *                                        of a COPY is the content of what
 *                                        it copies).
 *   export           index, exporter     the output outputs[index] (of type
 *                                        exporter: oci, docker, local or
 *                                        tar) is ready: the client GETs
 *                                        /v1/build/<id>/export/<index> on
 *                                        another connection, while it keeps
 *                                        reading the stream, within
 *                                        KILN_API_CONTEXT_TIMEOUT_S seconds.
 *                                        The build goes on (its "result")
 *                                        once that download has ended.
 *                                        image and registry outputs run in
 *                                        the daemon and send no such event.
 *   result           config (the image config, a JSON object), snapshot
 *                                        (the result's snapshot id; absent
 *                                        for an empty scratch result),
 *                                        exporterResponse: what the outputs
 *                                        made, as BuildKit's exporters
 *                                        report it (absent without outputs):
 *                                          {"containerimage.digest":
 *                                             "sha256:...",   the manifest
 *                                           "containerimage.config.digest":
 *                                             "sha256:...",
 *                                           "containerimage.descriptor":
 *                                             {"mediaType", "digest", "size"},
 *                                           "image.name": "a,b"}
 *                                        (all strings but the descriptor;
 *                                        image.name only when named)
 *   error            error, source       final: the build failed. source,
 *                                        when a Dockerfile step failed: where
 *                                        that step's instruction is,
 *                                        {"file": "Dockerfile", "lines":
 *                                        [start, end]} (1-based, inclusive:
 *                                        a continued instruction spans
 *                                        lines), as buildx prints them with
 *                                        ">>>"
 *
 * POST /v1/build/<id>/context/<name>: first, optionally, a probe: the
 * digest of the entries the client would send (sha256 of the entries
 * request body exactly as it would send it):
 *
 *   request  {"digest": "sha256:<64 hex>"}
 *   answer   {"unchanged": true}   the daemon's copy is that list, and the
 *                                  context is complete (no entries, no tar)
 *            {"unchanged": false}  send the entries (the daemon keeps the
 *                                  digest, to recognise the list next time)
 *
 * Then the entries of the local source name of build id, as the client's
 * directory holds them after its patterns and .dockerignore:
 *
 *   request  {"entries": [{"path": "a/b", "mode": 33188, "size": 12,
 *                          "mtime": 1700000000000000000, "uid": 0,
 *                          "gid": 0, "link": "target"}, ...]}
 *            path: relative, '/'-separated, no "." or ".." component,
 *            no leading or trailing '/', strictly sorted (byte order),
 *            parent directories listed before what they hold; mode:
 *            st_mode with the type bits (regular, directory or symlink
 *            only); mtime in nanoseconds; link only for symlinks. At
 *            most KILN_API_LIMIT_CONTEXT_ENTRIES entries.
 *   answer   {"need": ["a/b", ...]}  regular files whose content the
 *            daemon does not have yet, in entry order
 *
 * PUT /v1/build/<id>/context/<name>: "Content-Type: application/x-tar",
 * an uncompressed tar of exactly the needed files (possibly empty: it is
 * sent even when nothing is needed, and completes the context); answer
 * {"files": N, "bytes": N} once the files are in place (the build then
 * goes on). 404 for an unknown (or ended) build or a name it did not ask
 * for; 409 when the step comes out of order (a PUT before the entries,
 * entries posted twice), or the build is over; 400 for entries or a tar
 * that break the rules (a tar entry that is not a needed regular file, a
 * needed file missing). A failed POST of the entries may be retried; a
 * failed tar fails the build with the same message. The PUT body may be
 * at most 64 GiB; the POST body 256 MiB.
 *
 * A client that disconnects from the build's stream cancels the build.
 *
 * GET /v1/build/<id>/export/<index>: the bytes of a client-side output,
 * once the build sent its "export" event: status 200, "Content-Type:
 * application/x-tar", chunked, streamed as it is made (the daemon writes
 * only as fast as the client reads):
 *   oci      an OCI image layout tar (oci-layout, index.json, blobs/)
 *   docker   the same plus manifest.json, as `docker load` takes it
 *   tar      the result's files as a tar
 *   local    the same tar: the client extracts it into its directory
 * A failure while streaming cuts the answer (no final chunk): the client
 * must treat a download that does not end cleanly as failed; the build's
 * stream then ends with the "error" event. 404 for an unknown build or an
 * index that is not (or no longer) waiting; 409 when it is already being
 * downloaded. A download the client abandons fails the build.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"

struct kiln_config;

#define KILN_API_PATH_INFO               "/v1/info"
#define KILN_API_PATH_PULL               "/v1/pull"
#define KILN_API_PATH_IMAGETOOLS_INSPECT "/v1/imagetools/inspect"
#define KILN_API_PATH_IMAGETOOLS_CREATE  "/v1/imagetools/create"
#define KILN_API_PATH_BUILD              "/v1/build"
#define KILN_API_CONTENT_TYPE_TAR        "application/x-tar"
#define KILN_API_CONTENT_TYPE_JSON       "application/json"
#define KILN_API_CONTENT_TYPE_NDJSON     "application/x-ndjson"
#define KILN_API_HEADER_DOCKER_DIGEST    "Docker-Content-Digest"

/* A reference or platform in a request (the registry client has its own,
 * equal, limit on references). */
#define KILN_API_LIMIT_REF 4096u
/* Sources and tags of one imagetools create. */
#define KILN_API_LIMIT_IMAGETOOLS_REFS 64u
/* Layers listed in one pull result (the content module's limit). */
#define KILN_API_LIMIT_LAYERS 1024u
/* "2026-11-28T06:40:01.123456789Z" and its NUL. */
#define KILN_API_TIME_SIZE 32u

/* What the daemon knows about itself, for kiln_api_info_to_json. All
 * pointers are borrowed. */
struct kiln_api_info_pool {
        unsigned idle, in_use;
        uint64_t created, released;
};

struct kiln_api_info {
        const char *version;
        pid_t pid;
        const char *root;
        const char *network_mode;              /* resolved: "cni" or "host"; NULL: absent */
        const struct kiln_api_info_pool *pool; /* NULL: no CNI pool */
        const char *config_file;               /* NULL: no file was read */
        const char *const *addresses;
        size_t n_addresses;
        const struct kiln_config *config; /* after kiln_config_set_defaults */
};

/* Builds the GET /v1/info body described above into *ret (a new reference
 * the caller owns). Returns 0, or -ENOMEM when jansson cannot allocate.
 * Reads only its argument, so it may run on any thread. */
int kiln_api_info_to_json(const struct kiln_api_info *info, json_t **ret);

/* Serialises a response body: compact, keys sorted, newline-terminated.
 * Returns a malloc'd string and its length in *ret_len, or NULL on
 * allocation failure. */
char *kiln_api_json_dump(const json_t *body, size_t *ret_len);

/* The body of a failed request: {"error": message}, serialised as by
 * kiln_api_json_dump. */
char *kiln_api_error_body(const char *message, size_t *ret_len);

/* Reads an error body sent by the daemon: the "error" string of a JSON
 * object, or NULL when body is not one. Returns a malloc'd string. */
char *kiln_api_error_parse(const char *body, size_t len);

/* ---- images ---- */

/* JSON helpers shared by the encoders: a string (invalid UTF-8 shown as
 * '?'), or JSON null for NULL; NULL only when jansson cannot allocate. */
json_t *kiln_api_json_string(const char *s);

/* Now, as events carry it: "2026-11-28T06:40:01.123456789Z". */
void kiln_api_time_now(char out[static KILN_API_TIME_SIZE]);

enum kiln_api_event_type {
        KILN_API_EVENT_RESOLVING,
        KILN_API_EVENT_RESOLVED,
        KILN_API_EVENT_BLOB_STARTED,
        KILN_API_EVENT_BLOB_PROGRESS,
        KILN_API_EVENT_BLOB_DONE,
        KILN_API_EVENT_BLOB_CACHED,
        KILN_API_EVENT_BLOB_EXISTS,
        KILN_API_EVENT_BLOB_MOUNTED,
        KILN_API_EVENT_RETRY,
        KILN_API_EVENT_BLOB_ERROR,
        KILN_API_EVENT_RESULT, /* final: the fields are per endpoint */
        KILN_API_EVENT_ERROR,  /* final: error */
        _KILN_API_EVENT_TYPE_MAX,
        _KILN_API_EVENT_TYPE_INVALID = -EINVAL,
};

/* "resolving", "blob-progress", ...; NULL for a value out of range. */
const char *kiln_api_event_type_to_string(enum kiln_api_event_type t);
/* -EINVAL for a name this version does not know (a client skips those). */
enum kiln_api_event_type kiln_api_event_type_from_string(const char *s);

/* A progress or error event. Strings are borrowed when encoding and owned
 * (released by kiln_api_event_release) when decoded; NULL means absent. */
struct kiln_api_event {
        enum kiln_api_event_type type;
        const char *time;
        const char *ref;
        const char *digest;
        const char *media_type;
        int64_t size;     /* < 0: absent */
        uint64_t current; /* blob-progress */
        const char *message;
        const char *error; /* the error event's message */
};

/* Builds one event line's object (not for KILN_API_EVENT_RESULT, whose
 * encoders are below). Returns 0 and *ret, -EINVAL for a type out of range
 * or -ENOMEM. Any thread. */
int kiln_api_event_to_json(const struct kiln_api_event *ev, json_t **ret);

/* Reads an event object's type and common fields into *ret (strings
 * copied). Unknown keys are ignored; a known key of the wrong type, a
 * missing or unknown type fails with -EBADMSG (the type's name quoted, so
 * that a client may choose to skip unknown types). A result event gets
 * only type and time: decode the rest with the result decoder of its
 * endpoint. */
int kiln_api_event_from_json(const json_t *j, struct kiln_api_event *ret, struct kiln_error **err);
void kiln_api_event_release(struct kiln_api_event *ev);

struct kiln_api_descriptor {
        char *media_type;
        char *digest;
        int64_t size;
};
void kiln_api_descriptor_release(struct kiln_api_descriptor *d);

/* POST /v1/pull's body. */
struct kiln_api_pull_request {
        char *ref;
        char *platform; /* NULL: the daemon's default */
};
int kiln_api_pull_request_to_json(const struct kiln_api_pull_request *r, json_t **ret);
/* Strict: the body must be an object with a non-empty "ref" string of at
 * most KILN_API_LIMIT_REF bytes, an optional "platform" string, and no other
 * key. Errors are -EINVAL with a message for the client ("unknown field
 * 'x'"). *ret is overwritten; release it on success. */
int kiln_api_pull_request_from_json(const json_t *j, struct kiln_api_pull_request *ret,
                                    struct kiln_error **err);
void kiln_api_pull_request_release(struct kiln_api_pull_request *r);

/* The pull's result event. */
struct kiln_api_pull_result {
        char *ref;
        struct kiln_api_descriptor root;
        char *platform; /* NULL when the index did not say */
        struct kiln_api_descriptor manifest;
        struct kiln_api_descriptor config;
        struct kiln_api_descriptor *layers;
        size_t n_layers;
        uint64_t bytes_downloaded;
        unsigned blobs_downloaded;
        unsigned blobs_cached;
};
/* time may be NULL (then no "time" key). */
int kiln_api_pull_result_to_json(const struct kiln_api_pull_result *r, const char *time,
                                 json_t **ret);
/* Unknown keys are ignored; missing or mistyped known ones fail with
 * -EBADMSG. More than KILN_API_LIMIT_LAYERS layers fail with -E2BIG. */
int kiln_api_pull_result_from_json(const json_t *j, struct kiln_api_pull_result *ret,
                                   struct kiln_error **err);
void kiln_api_pull_result_release(struct kiln_api_pull_result *r);

/* POST /v1/imagetools/create's body. */
struct kiln_api_imagetools_create_request {
        char **sources;
        size_t n_sources;
        char **tags;
        size_t n_tags;
};
int kiln_api_imagetools_create_request_to_json(const struct kiln_api_imagetools_create_request *r,
                                               json_t **ret);
/* Strict, as the pull request: "sources" and "tags" arrays of 1 to
 * KILN_API_LIMIT_IMAGETOOLS_REFS non-empty strings, nothing else. */
int kiln_api_imagetools_create_request_from_json(const json_t *j,
                                                 struct kiln_api_imagetools_create_request *ret,
                                                 struct kiln_error **err);
void kiln_api_imagetools_create_request_release(struct kiln_api_imagetools_create_request *r);

struct kiln_api_pushed_tag {
        char *ref;
        char *digest;
};

/* The imagetools create result event. */
struct kiln_api_imagetools_create_result {
        char *digest;
        char *media_type;
        struct kiln_api_pushed_tag *tags;
        size_t n_tags;
        unsigned blobs_uploaded;
        unsigned blobs_existing;
        unsigned blobs_mounted;
        uint64_t bytes_uploaded;
};
int kiln_api_imagetools_create_result_to_json(const struct kiln_api_imagetools_create_result *r,
                                              const char *time, json_t **ret);
int kiln_api_imagetools_create_result_from_json(const json_t *j,
                                                struct kiln_api_imagetools_create_result *ret,
                                                struct kiln_error **err);
void kiln_api_imagetools_create_result_release(struct kiln_api_imagetools_create_result *r);

/* GET /v1/imagetools/inspect's answer without raw. */
struct kiln_api_inspect {
        char *name;
        char *media_type;
        char *digest;
        int64_t size;
        json_t *manifest; /* a reference owned by the struct */
};
int kiln_api_inspect_to_json(const struct kiln_api_inspect *in, json_t **ret);
/* "manifest" must be an object; unknown keys are ignored. */
int kiln_api_inspect_from_json(const json_t *j, struct kiln_api_inspect *ret,
                               struct kiln_error **err);
void kiln_api_inspect_release(struct kiln_api_inspect *in);

/* ---- builds ---- */

/* The POST /v1/build body. */
#define KILN_API_LIMIT_BUILD_REQUEST (64u << 20)
/* Build args, labels, no-cache filters, add-hosts of one request. */
#define KILN_API_LIMIT_BUILD_ITEMS 4096u
/* Secrets and ssh sockets of one request. */
#define KILN_API_LIMIT_BUILD_SECRETS 256u
/* Entries of one context (POST .../context/<name>). */
#define KILN_API_LIMIT_CONTEXT_ENTRIES 1000000u
/* A context entry's path and link target. */
#define KILN_API_LIMIT_CONTEXT_PATH 4096u
/* A local source name (".../context/<name>"). */
#define KILN_API_LIMIT_CONTEXT_NAME 256u
/* A request's contextKey. */
#define KILN_API_LIMIT_CONTEXT_KEY 1024u
/* Seconds the daemon waits for a requested context. */
#define KILN_API_CONTEXT_TIMEOUT_S 600u
/* Outputs of one build request, and attributes of one output. */
#define KILN_API_LIMIT_BUILD_OUTPUTS 16u
#define KILN_API_LIMIT_OUTPUT_ATTRS  256u

/* "/v1/build/<id>/context/<name>" into a malloc'd string (id and name are
 * used as they are: build ids are hex, names [A-Za-z0-9_.-]). */
char *kiln_api_build_context_path(const char *build_id, const char *name);
/* "/v1/build/<id>/export/<index>" into a malloc'd string. */
char *kiln_api_build_export_path(const char *build_id, unsigned index);

/* A name with its value (build args, labels). */
struct kiln_api_kv {
        char *key;
        char *value;
};

struct kiln_api_build_secret {
        char *id;
        uint8_t *data; /* decoded; wiped and freed by the release function */
        size_t len;
};

struct kiln_api_build_ssh {
        char *id;
        char *path;
};

/* One exporter entry of a build request (-o type=...,k=v). */
struct kiln_api_build_output {
        char *type; /* image, registry, oci, docker, local, tar */
        struct kiln_api_kv *attrs;
        size_t n_attrs;
};

/* The value of attribute key of o, or NULL when absent. */
const char *kiln_api_build_output_attr(const struct kiln_api_build_output *o, const char *key);

/* POST /v1/build's body. Everything is owned by the struct: release with
 * kiln_api_build_request_release (which wipes the secrets). Encoding
 * leaves NULL/empty members out. */
struct kiln_api_build_request {
        char *dockerfile; /* required */
        char *dockerfile_name;
        char *dockerignore;
        char *context_key; /* required */
        struct kiln_api_kv *build_args;
        size_t n_build_args;
        struct kiln_api_kv *labels;
        size_t n_labels;
        char *target;
        char *platform;
        bool no_cache;
        char **no_cache_filter;
        size_t n_no_cache_filter;
        char **add_hosts;
        size_t n_add_hosts;
        char *network; /* NULL, "default", "none" or "host" */
        char **allow;  /* "network.host", "security.insecure" */
        size_t n_allow;
        struct kiln_api_build_secret *secrets;
        size_t n_secrets;
        struct kiln_api_build_ssh *ssh;
        size_t n_ssh;
        struct kiln_api_build_output *outputs;
        size_t n_outputs;
};

/* Encodes r (secrets base64-encoded). Returns 0, or -ENOMEM. Any thread. */
int kiln_api_build_request_to_json(const struct kiln_api_build_request *r, json_t **ret);
/* Strict: unknown keys, wrong types, missing required keys, more than the
 * limits above, a secret that is not base64, duplicate secret or ssh ids,
 * a network other than default/none/host, an output of a type other than
 * the six above ("exporter \"x\" could not be found", as BuildKit says)
 * all fail with -EINVAL (or
 * -E2BIG) and a message for the client naming the key ("build request:
 * \"secrets\"[1]: \"data\" is not base64"). Secret contents never appear
 * in messages. Build args and labels come in the object's order (keys are
 * unique: a client folds repeated --build-arg K=V, the last one winning). */
int kiln_api_build_request_from_json(const json_t *j, struct kiln_api_build_request *ret,
                                     struct kiln_error **err);
void kiln_api_build_request_release(struct kiln_api_build_request *r);

/* One entry of a context list. */
struct kiln_api_context_entry {
        char *path;
        uint32_t mode; /* st_mode, type bits included */
        uint64_t size;
        int64_t mtime_ns;
        uint32_t uid;
        uint32_t gid;
        char *link; /* symlinks only, else NULL */
};

/* {"entries": [...]}. Returns 0 or -ENOMEM. */
int kiln_api_context_entries_to_json(const struct kiln_api_context_entry *entries, size_t n,
                                     json_t **ret);
/* Strict, with the rules of the contract comment (relative clean paths,
 * strictly sorted, types, link only on symlinks, limits): -EINVAL and a
 * message naming the entry. *ret is a new array the caller frees with
 * kiln_api_context_entries_free. */
int kiln_api_context_entries_from_json(const json_t *j, struct kiln_api_context_entry **ret,
                                       size_t *n_ret, struct kiln_error **err);
void kiln_api_context_entries_free(struct kiln_api_context_entry *entries, size_t n);

/* {"need": [...]} both ways; paths are borrowed when encoding; decoding
 * makes a NULL-terminated array (count also in *n_ret) freed with
 * kiln_api_strv_free. */
int kiln_api_context_need_to_json(const char *const *paths, size_t n, json_t **ret);
int kiln_api_context_need_from_json(const json_t *j, char ***ret, size_t *n_ret,
                                    struct kiln_error **err);

/* The probe, {"digest": "sha256:<64 hex>"}, and its answer {"unchanged":
 * B}, both ways. Decoding is strict (-EINVAL for the probe, -EBADMSG for
 * the answer, with a message); *ret_digest is the caller's to free. */
int kiln_api_context_probe_to_json(const char *digest, json_t **ret);
int kiln_api_context_probe_from_json(const json_t *j, char **ret_digest, struct kiln_error **err);
int kiln_api_context_unchanged_to_json(bool unchanged, json_t **ret);
int kiln_api_context_unchanged_from_json(const json_t *j, bool *ret, struct kiln_error **err);

/* {"files": N, "bytes": N} both ways. */
int kiln_api_context_upload_result_to_json(uint64_t files, uint64_t bytes, json_t **ret);
int kiln_api_context_upload_result_from_json(const json_t *j, uint64_t *files, uint64_t *bytes,
                                             struct kiln_error **err);

enum kiln_api_build_event_type {
        KILN_API_BUILD_EVENT_BUILD,
        KILN_API_BUILD_EVENT_VERTEX,
        KILN_API_BUILD_EVENT_STATUS,
        KILN_API_BUILD_EVENT_LOG,
        KILN_API_BUILD_EVENT_WARNING,
        KILN_API_BUILD_EVENT_CONTEXT_REQUEST,
        KILN_API_BUILD_EVENT_EXPORT,
        KILN_API_BUILD_EVENT_RESULT,
        KILN_API_BUILD_EVENT_ERROR,
        _KILN_API_BUILD_EVENT_TYPE_MAX,
        _KILN_API_BUILD_EVENT_TYPE_INVALID = -EINVAL,
};

const char *kiln_api_build_event_type_to_string(enum kiln_api_build_event_type t);
enum kiln_api_build_event_type kiln_api_build_event_type_from_string(const char *s);

/* One event of a build stream. Which members are used depends on type
 * (see the contract comment); NULL strings and empty arrays are absent.
 * Encoding borrows everything; decoding fills owned copies released by
 * kiln_api_build_event_release. */
struct kiln_api_build_event {
        enum kiln_api_build_event_type type;
        char *time;
        char *id;      /* build: the build id; status: the status id */
        char *digest;  /* vertex */
        char *vertex;  /* status, log: the vertex digest */
        char *name;    /* vertex, status; context-request: the source name */
        char **inputs; /* vertex */
        size_t n_inputs;
        char *started;   /* vertex, status: RFC 3339 or NULL */
        char *completed; /* vertex, status */
        bool cached;     /* vertex */
        char *error;     /* vertex (its failure), error */
        int64_t current; /* status */
        int64_t total;   /* status; 0: unknown */
        int stream;      /* log: 1 or 2 */
        uint8_t *data;   /* log: raw bytes (base64 on the wire) */
        size_t len;
        char *rule; /* warning */
        char *message;
        char *url;
        unsigned line;
        char **follow_paths; /* context-request */
        size_t n_follow_paths;
        char **include_patterns;
        size_t n_include_patterns;
        char **exclude_patterns;
        size_t n_exclude_patterns;
        json_t *config;            /* result: the image config (a reference) */
        char *snapshot;            /* result */
        json_t *exporter_response; /* result: an object (a reference), or NULL */
        unsigned index;            /* export: the output's index in the request */
        char *exporter;            /* export: its type */
        char *source_file;         /* error: the failing step's Dockerfile, or NULL */
        unsigned source_start;     /* error: its first and last line (1-based); */
        unsigned source_end;       /*   0 when source_file is NULL */
};

/* Returns 0, -EINVAL for a type out of range, or -ENOMEM. Any thread. */
int kiln_api_build_event_to_json(const struct kiln_api_build_event *ev, json_t **ret);
/* Unknown keys are ignored; an unknown type fails with -EBADMSG naming it
 * (a client may skip such events); known keys of the wrong type, a log's
 * data that is not base64 fail with -EBADMSG. */
int kiln_api_build_event_from_json(const json_t *j, struct kiln_api_build_event *ret,
                                   struct kiln_error **err);
void kiln_api_build_event_release(struct kiln_api_build_event *ev);

/* A CLOCK_REALTIME time in nanoseconds as events carry it, in the format
 * of kiln_api_time_now. */
void kiln_api_time_format(int64_t ns, char out[static KILN_API_TIME_SIZE]);

/* Frees a NULL-terminated array of strings and the strings; NULL is
 * fine. */
void kiln_api_strv_free(char **v);

/* Base64 (standard alphabet, padded), as the build messages carry bytes.
 * Encode returns a malloc'd NUL-terminated string; decode returns -EINVAL
 * for bad input (whitespace is not allowed) and a malloc'd buffer. */
char *kiln_api_base64_encode(const void *data, size_t n);
int kiln_api_base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len);
