/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Registry credentials from the user's Docker client configuration, read as
 * the docker CLI and buildx read them (docker/cli cli/config):
 *
 *   $DOCKER_CONFIG/config.json, else ~/.docker/config.json
 *   {"auths": {"<server>": {"auth": base64(user:password)}          or
 *                          {"username": .., "password": ..}         or
 *                          {"identitytoken": ..} / {"registrytoken": ..}},
 *    "credsStore": "<name>", "credHelpers": {"<server>": "<name>"}}
 *
 * Credentials are looked up by the host actually contacted (a mirror's
 * credentials are the mirror's, as in buildkitd): registry-1.docker.io,
 * docker.io and index.docker.io use the key "https://index.docker.io/v1/",
 * any other host its own name. A helper (credHelpers[key], else credsStore)
 * is run as "docker-credential-<name> get" with the key on stdin and answers
 * {"ServerURL":..,"Username":..,"Secret":..} ("<token>" as the username
 * means an identity token); "credentials not found in native keychain"
 * means anonymous. Without a helper, auths[key] is used, else the first
 * auths entry (in file order) whose key names the host as a URL
 * ("https://host/v1/", "http://host") or "host/path" does.
 *
 * Helpers run in their own process group with stdin a socket, stdout a
 * pipe and stderr /dev/null; on a timeout the group is killed. A process
 * that reaps every child (waitpid(-1) on SIGCHLD) would take their exit
 * status: kilnd must not.
 *
 * Secrets never appear in errors or logs; they are wiped when released.
 * A loaded configuration may be shared between threads: lookups are
 * serialised by its mutex (a helper runs with it held, as buildkit's auth
 * provider does) and their results cached for KILN_REGISTRY_CREDS_CACHE_SEC.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"
#include "registry/registry-limits.h"

#define KILN_REGISTRY_DOCKER_HUB_AUTH_KEY "https://index.docker.io/v1/"

struct kiln_registry_creds {
        char *username;       /* NULL when none */
        char *password;       /* NULL when none */
        char *identity_token; /* a refresh token; used as the secret with no username */
        char *registry_token; /* a bearer token to send as it is */
        char *server_address; /* the key it was found under (not secret) */
};

/* Wipes and frees the fields. */
void kiln_registry_creds_release(struct kiln_registry_creds *c);

/* buildkit's toCredentials: with an identity token, (no username, the
 * token); else (username, password). Borrowed; "" for missing ones. */
void kiln_registry_creds_basic(const struct kiln_registry_creds *c, const char **ret_username,
                               const char **ret_secret);

/* Whether c holds anything to authenticate with. */
bool kiln_registry_creds_empty(const struct kiln_registry_creds *c);

struct kiln_registry_docker_config;

/* $DOCKER_CONFIG/config.json, or ~/.docker/config.json (HOME, else the
 * password database). Caller frees. */
char *kiln_registry_docker_config_default_path(void);

/* Loads path (NULL: the default path). A missing file is an empty
 * configuration (anonymous everywhere), as docker's. A file that is not
 * JSON, too large (KILN_LIMIT_REGISTRY_DOCKER_CONFIG), has values of the
 * wrong type or an "auth" that is not base64 of "user:password" is an error
 * naming the file (and a position or the auths key), never its contents. */
int kiln_registry_docker_config_load(const char *path, struct kiln_registry_docker_config **ret,
                                     struct kiln_error **err);
struct kiln_registry_docker_config *
kiln_registry_docker_config_free(struct kiln_registry_docker_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_registry_docker_config *, kiln_registry_docker_config_free);

/* The auth-config key docker and buildkit use for a host. Caller frees. */
char *kiln_registry_creds_key(const char *host);

/* Credentials for host (host[:port] as contacted). No entry is success
 * with empty *ret. A helper that is missing, fails, times out
 * (KILN_REGISTRY_CRED_HELPER_TIMEOUT_MS; it is then killed), prints more
 * than KILN_LIMIT_REGISTRY_CRED_HELPER_OUTPUT or prints what is not JSON
 * is an error (with the helper's one-line message, unless it looks like
 * JSON). Thread safe. */
int kiln_registry_docker_config_lookup(struct kiln_registry_docker_config *c, const char *host,
                                       struct kiln_registry_creds *ret, struct kiln_error **err);

/* How long a helper may run (default KILN_REGISTRY_CRED_HELPER_TIMEOUT_MS);
 * for tests. Set before any lookup. */
void kiln_registry_docker_config_set_helper_timeout(struct kiln_registry_docker_config *c,
                                                    int timeout_ms);

/* The clock for the lookup cache (seconds, monotonic); for tests. */
void kiln_registry_docker_config_set_clock(struct kiln_registry_docker_config *c,
                                           int64_t (*now)(void *userdata), void *userdata);
