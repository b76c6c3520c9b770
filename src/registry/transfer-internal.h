/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The pure parts of the transfer manager and the request flow, exposed for
 * the unit tests (tests/unit/test-registry-transfer.c) and shared by the
 * files of src/registry/ that speak HTTP. Nothing here does I/O.
 */

#include <stdbool.h>
#include <stddef.h>

#include "registry/transfer.h"

/* The slot rule of the connection limit: whether a transfer of class k may
 * start on a host running `total` transfers of which `layers` are LAYER,
 * with N = max_concurrency. Layers need layers < N and total < N + 1;
 * metadata needs only total < N + 1. */
bool transfer_slot_available(unsigned total, unsigned layers, unsigned max_concurrency,
                             enum kiln_registry_transfer_class k);

/* Reads an HTTP status line ("HTTP/1.1 404 Not Found\r\n"): the code, and
 * the status text Go would show ("404 Not Found"; Go's text when the server
 * sent no reason). false when the line is not a status line. *ret_text is
 * malloc'd. */
bool transfer_parse_status_line(const char *line, size_t n, long *ret_code, char **ret_text);

/* Splits a header line "Name: value\r\n" (value trimmed of spaces and tabs).
 * false for a line without a colon or with an empty name. Both malloc'd. */
bool transfer_parse_header_line(const char *line, size_t n, char **ret_name, char **ret_value);

/* "host:port" of an http(s) URL, the port defaulted from the scheme
 * ("https://r.example/v2/" -> "r.example:443"), lower-cased. NULL when the
 * URL cannot be parsed. Caller frees. */
char *transfer_url_host_port(const char *url);

/* Whether a transport failure (a CURLcode) is worth retrying on the last
 * host, as containerd's isTransientTransportErr and buildkit's retry
 * handler judge Go's errors: timeouts, a connection reset or closed early,
 * an empty reply; not a refused connection, a DNS failure or a TLS error. */
bool transfer_curl_code_is_transient(int code);

/* Whether the failure of an https request means "the server speaks plain
 * HTTP", for buildkitd's http fallback: a TLS handshake that read an
 * "HTTP/" record, or a handshake timeout; with no explicit port in the
 * host, also a refused or timed-out connection. */
bool transfer_is_http_fallback_error(int code, const char *message, bool explicit_port);
