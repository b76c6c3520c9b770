/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Named maxima for what the registry client reads from users, config files,
 * registries, token servers and credential helpers. (They live here rather
 * than in base/limits.h while the module is young; move them there when a
 * second module needs one.)
 */

/* One URL kiln builds or sanitises (request URLs, token realms). */
#define KILN_LIMIT_REGISTRY_URL (64u << 10)

/* One WWW-Authenticate header value, and what it may hold. */
#define KILN_LIMIT_REGISTRY_AUTH_HEADER     (16u << 10)
#define KILN_LIMIT_REGISTRY_AUTH_CHALLENGES 16u
#define KILN_LIMIT_REGISTRY_AUTH_PARAMS     32u
/* Scopes in one token request (the challenge's, the request's and the ones
 * remembered for the host, merged). */
#define KILN_LIMIT_REGISTRY_SCOPES 64u

/* A token server's JSON answer. */
#define KILN_LIMIT_REGISTRY_TOKEN_RESPONSE (1u << 20)
/* Tokens kept by one token cache (expired ones are dropped first). */
#define KILN_LIMIT_REGISTRY_TOKEN_CACHE 1024u

/* ~/.docker/config.json. */
#define KILN_LIMIT_REGISTRY_DOCKER_CONFIG (4u << 20)
/* What a docker-credential-<name> helper may print, and how long it may take. */
#define KILN_LIMIT_REGISTRY_CRED_HELPER_OUTPUT (64u << 10)
#define KILN_REGISTRY_CRED_HELPER_TIMEOUT_MS   30000
/* buildkit's client keeps a looked-up credential 4m50s (authprovider.go). */
#define KILN_REGISTRY_CREDS_CACHE_SEC 290

/* Entries read from one tlsconfigdir. */
#define KILN_LIMIT_REGISTRY_TLSCONFIGDIR_ENTRIES 4096u
