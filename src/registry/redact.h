/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What registry debug logs may show. kilnd logs every registry request and
 * response at debug level, as buildkitd does ("do request", "fetch response
 * received"), and these helpers keep credentials out of those lines:
 *
 *   - URLs: every query value but ns= becomes REDACTED (signed blob URLs
 *     carry their signature there), user info becomes REDACTED, a fragment
 *     becomes #REDACTED;
 *   - request headers: Authorization and Proxy-Authorization are left out
 *     (containerd leaves Authorization out too); Cookie and any header whose
 *     name says it carries a secret are REDACTED;
 *   - response headers: Set-Cookie and any header whose name says it
 *     carries a secret are REDACTED, Location and Content-Location are
 *     sanitised as URLs. WWW-Authenticate is kept: it names the realm,
 *     service and scope, never a secret, and it is what one debugs with.
 *
 * Pure functions; thread safe.
 */

#include <stdbool.h>

/* containerd's sanitizedURL, stricter: scheme://REDACTED@host/path?a=REDACTED&ns=docker.io.
 * Query pairs are re-encoded sorted by key, as Go's url.Values.Encode; an
 * empty value stays empty; a pair whose key cannot be decoded is dropped.
 * Never fails: anything unparsable after the host is REDACTED whole. Caller
 * frees. */
char *kiln_registry_url_sanitize(const char *url);

enum kiln_registry_header_log {
        KILN_REGISTRY_HEADER_LOG_KEEP,   /* log the value as it is */
        KILN_REGISTRY_HEADER_LOG_OMIT,   /* no field at all */
        KILN_REGISTRY_HEADER_LOG_REDACT, /* log "REDACTED" */
        KILN_REGISTRY_HEADER_LOG_URL,    /* log kiln_registry_url_sanitize(value) */
};

/* How a header (name in any case) may be logged, for a request header
 * (is_request) or a response header. */
enum kiln_registry_header_log kiln_registry_header_log_policy(const char *name, bool is_request);

/* The value to log for a header, or NULL when it must not be logged at
 * all. Caller frees. */
char *kiln_registry_header_log_value(const char *name, const char *value, bool is_request);
