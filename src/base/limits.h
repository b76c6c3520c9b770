/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Named maxima for everything fed by a user or the network. */

/* A buildkitd.toml (or any TOML document kiln reads). */
#define KILN_LIMIT_CONFIG_FILE (4u << 20)
/* Nesting of TOML arrays and inline tables. */
#define KILN_LIMIT_TOML_DEPTH 128
/* One key segment or string value in a TOML document. */
#define KILN_LIMIT_TOML_STRING (1u << 20)
/* One log line. */
#define KILN_LIMIT_LOG_LINE (64u << 10)
/* A request body sent to the daemon API. */
#define KILN_LIMIT_API_REQUEST (1u << 20)
/* A JSON document from the daemon API read by the client. */
#define KILN_LIMIT_API_RESPONSE (16u << 20)
