/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The hosts a reference is pulled from and pushed to, built from
 * buildkitd.toml exactly as buildkitd's resolver.NewRegistryConfig and
 * containerd's ConfigureDefaultRegistries build them.
 *
 * For a reference on host H:
 *  - no [registry."H"] section: one host, https://H/v2 (plain http when H
 *    is loopback: localhost, 127.0.0.0/8, ::1), able to pull, resolve, push
 *    and list referrers; docker.io is served by registry-1.docker.io.
 *  - a section: first its mirrors, in order, then the origin. A mirror is
 *    "host[:port][/prefix]"; any scheme in it is dropped (as buildkitd does),
 *    the prefix kept as /v2/<prefix>; mirrors may pull and resolve only. Each
 *    mirror takes its TLS and http settings from ITS OWN section
 *    [registry."<mirror host>"] (defaults when it has none), never from H's.
 *    The origin (docker.io -> registry-1.docker.io, /v2) may pull, resolve
 *    and push, with H's settings.
 *  - settings of a host: http = true, or http unset and a loopback host,
 *    means plain HTTP; insecure = true means HTTPS without verification, and
 *    with plain HTTP also wanted, HTTPS first and plain HTTP as a fallback
 *    (http_fallback). ca files are added to the system roots; keypairs are
 *    client certificates; each tlsconfigdir is read for "*.crt" (a CA) and
 *    "X.cert" (a keypair with "X.key"), a missing or unreadable one ignored.
 *
 * Build a list for one operation, then share it read-only.
 */

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "config/config.h"
#include "content/ref.h"

enum kiln_registry_cap {
        KILN_REGISTRY_CAP_PULL = 1u << 0,      /* fetch manifests and blobs by digest */
        KILN_REGISTRY_CAP_RESOLVE = 1u << 1,   /* turn a tag into a digest */
        KILN_REGISTRY_CAP_PUSH = 1u << 2,      /* upload */
        KILN_REGISTRY_CAP_REFERRERS = 1u << 3, /* the OCI referrers API */
};

struct kiln_registry_keypair {
        char *cert;
        char *key;
};

struct kiln_registry_tls {
        char **ca_files; /* PEM files to add to the system roots (none: system roots only) */
        size_t n_ca_files;
        /* Client certificates in order. Go offers them all and picks one
         * per handshake; curl takes one: the first. */
        struct kiln_registry_keypair *keypairs;
        size_t n_keypairs;
        bool insecure_skip_verify;
};

struct kiln_registry_host {
        char *scheme;      /* "https" or "http" */
        char *host;        /* host[:port], as in the reference or the mirror entry */
        char *path_prefix; /* "/v2" or "/v2/<mirror prefix>" */
        unsigned caps;     /* KILN_REGISTRY_CAP_* */
        bool is_mirror;
        /* https, but on a TLS handshake that meets plain HTTP ("HTTP/"
         * record), a handshake timeout, or (no explicit port only) a refused
         * or timed-out connection, retry the request over http and remember
         * the host (buildkitd's httpFallback). */
        bool http_fallback;
        struct kiln_registry_tls tls;
};

struct kiln_registry_hosts {
        char *ref_host; /* the reference's host, e.g. "docker.io" */
        struct kiln_registry_host *items;
        size_t n;
};

/* Builds the hosts for a reference on ref_host (c may be NULL: no
 * sections). Reads each tlsconfigdir, checks that ca files can be read and
 * that every keypair loads (a PEM certificate, a matching unencrypted
 * key), as buildkitd does before any request; a failure is an error naming
 * the host and the file. */
int kiln_registry_hosts_build(const struct kiln_config *c, const char *ref_host,
                              struct kiln_registry_hosts **ret, struct kiln_error **err);

struct kiln_registry_hosts *kiln_registry_hosts_free(struct kiln_registry_hosts *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_registry_hosts *, kiln_registry_hosts_free);

static inline bool kiln_registry_host_can(const struct kiln_registry_host *h, unsigned caps)
{
        return (h->caps & caps) == caps;
}

/* The host pushes go to: the first with the push capability (the origin;
 * mirrors never push). NULL if none. Borrowed. */
const struct kiln_registry_host *kiln_registry_hosts_push_host(const struct kiln_registry_hosts *h);

/* Whether requests to h for a reference on ref_host carry ?ns=<ref_host>:
 * whenever h is not the reference's own host, docker.io being the same
 * host as registry-1.docker.io. */
bool kiln_registry_host_is_proxy(const struct kiln_registry_host *h, const char *ref_host);

/* "<scheme>://<host><path_prefix>/<repository>/<kind>[/<object>][?ns=<ref host>]",
 * the path cleaned as Go's path.Join and a trailing '/' of kind or object
 * kept (for "blobs/uploads/"); e.g.
 *   https://m.example/v2/prefix/library/alpine/manifests/3.20?ns=docker.io
 * object may be NULL. Caller frees; NULL only if the URL would pass
 * KILN_LIMIT_REGISTRY_URL. */
char *kiln_registry_host_url(const struct kiln_registry_host *h, const struct kiln_content_ref *ref,
                             const char *kind, const char *object);

/* The same URL over plain http, for the http_fallback retry: a copy of url
 * with its "https://" replaced by "http://" (other URLs copied as they are).
 * Caller frees. */
char *kiln_registry_url_plain_http(const char *url);

/* containerd's MatchLocalhost: "localhost", an IPv4 loopback address or ::1,
 * with or without a port ("[::1]:5000"). */
bool kiln_registry_host_is_loopback(const char *host);

/* buildkitd's extractMirrorHostAndPath: "https://m.example:5000/a/b/" gives
 * host "m.example:5000" and prefix "/a/b" (scheme, user info, query and the
 * trailing '/' dropped; the path percent-decoded); when the entry is not a
 * URL at all, host is the entry and prefix "". Both malloc'd. */
void kiln_registry_mirror_split(const char *mirror, char **ret_host, char **ret_prefix);
