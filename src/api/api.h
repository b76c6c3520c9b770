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
 */

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "base/error.h"

struct kiln_config;

#define KILN_API_PATH_INFO         "/v1/info"
#define KILN_API_CONTENT_TYPE_JSON "application/json"

/* What the daemon knows about itself, for kiln_api_info_to_json. All
 * pointers are borrowed. */
struct kiln_api_info {
        const char *version;
        pid_t pid;
        const char *root;
        const char *config_file; /* NULL: no file was read */
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
