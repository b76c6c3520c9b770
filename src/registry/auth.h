/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Registry authentication, the pure parts: WWW-Authenticate challenges,
 * scopes, token requests and responses, Basic headers, and a thread-safe
 * token cache. The HTTP itself is the transfer manager's; these functions
 * decide what it sends and read what it gets, byte for byte as buildkitd's
 * daemon side (util/resolver/authorizer.go over containerd's
 * remotes/docker/auth) does:
 *
 *   1. A request gets 401 with WWW-Authenticate. Parse every header value
 *      (kiln_registry_challenges_parse), pick one
 *      (kiln_registry_challenges_select): Bearer before Basic; Basic only
 *      with a username and a secret.
 *   2. Bearer: kiln_registry_token_options_init from the challenge and the
 *      credentials of the host actually contacted (creds.h), scopes merged
 *      with the request's (kiln_registry_scope_repository,
 *      kiln_registry_scopes_merge). With a secret, GET the token URL with
 *      a Basic header; on 404, 401, or 405 when a username is known, POST
 *      the OAuth form instead (kiln_registry_token_should_post). Without a
 *      secret, an anonymous GET.
 *   3. Read the answer (kiln_registry_token_response_parse), cache it per
 *      host and scope until 0.9 of its lifetime (kiln_registry_token_cache),
 *      and send "Authorization: Bearer <token>".
 *
 * Secrets (passwords, identity tokens, tokens) never appear in errors from
 * this module; realms in errors are sanitised (redact.h).
 *
 * Challenges, token options and tokens are plain data with one owner at a
 * time; the functions on them are pure and thread safe. The token cache is
 * the one shared object, with its own lock (below).
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "registry/registry-limits.h"

/* ---- WWW-Authenticate ---- */

/* In containerd's priority order: Bearer, then Digest, then Basic. */
enum kiln_registry_auth_scheme {
        KILN_REGISTRY_AUTH_BEARER,
        KILN_REGISTRY_AUTH_DIGEST,
        KILN_REGISTRY_AUTH_BASIC,
        _KILN_REGISTRY_AUTH_SCHEME_MAX,
        _KILN_REGISTRY_AUTH_SCHEME_INVALID = -EINVAL,
};

struct kiln_registry_auth_param {
        char *key; /* lower case */
        char *value;
};

struct kiln_registry_challenge {
        enum kiln_registry_auth_scheme scheme;
        struct kiln_registry_auth_param *params; /* a key at most once (the last one wins) */
        size_t n_params;
};

struct kiln_registry_challenges {
        struct kiln_registry_challenge *items; /* sorted by scheme priority, stable */
        size_t n;
};

/* Parses one WWW-Authenticate header value (value[0..len), NUL not needed)
 * and adds its challenges to c, keeping c sorted. Call once per header
 * line. Schemes other than Bearer, Digest and Basic are skipped; scheme and
 * parameter names are case-insensitive; values are tokens or quoted strings
 * with backslash escapes. Unlike containerd, which reads one challenge per
 * header line, a line may hold several ("Basic realm=x, Bearer realm=y"),
 * as RFC 7235 allows. Malformed input never fails: what cannot be read is
 * skipped up to the next challenge. Fails only with -E2BIG when the value
 * passes KILN_LIMIT_REGISTRY_AUTH_HEADER or c would hold more than
 * KILN_LIMIT_REGISTRY_AUTH_CHALLENGES challenges or a challenge more than
 * KILN_LIMIT_REGISTRY_AUTH_PARAMS parameters. */
int kiln_registry_challenges_parse(struct kiln_registry_challenges *c, const char *value,
                                   size_t len, struct kiln_error **err);
void kiln_registry_challenges_release(struct kiln_registry_challenges *c);

/* The value of parameter key (lower case), or NULL. Borrowed. */
const char *kiln_registry_challenge_param(const struct kiln_registry_challenge *c, const char *key);

/* buildkitd's choice in AddResponses: the first Bearer challenge, else the
 * first Basic one when have_basic_creds (a username and a secret are
 * known). NULL when none fits ("failed to find supported auth scheme").
 * Borrowed. */
const struct kiln_registry_challenge *
kiln_registry_challenges_select(const struct kiln_registry_challenges *c, bool have_basic_creds);

const char *kiln_registry_auth_scheme_to_string(enum kiln_registry_auth_scheme s);

/* ---- Scopes ---- */

/* "repository:<path>:pull", or "repository:<path>:pull,push" (containerd's
 * RepositoryScope; path as in kiln_content_ref.path). Caller frees. */
char *kiln_registry_scope_repository(const char *path, bool push);

/* buildkitd's parseScopes + normalize over a and b together: each entry
 * may hold several space-separated scopes; "type:name:a,b" entries of one
 * type:name are merged into one with their actions deduplicated and sorted;
 * the result is sorted. Empty entries are skipped (buildkitd drops every
 * scope when it meets one, which loses the request's scope; kiln does not).
 * Returns the number of scopes in *ret (a NULL-terminated array the caller
 * frees with kiln_registry_strv_free), or -E2BIG past
 * KILN_LIMIT_REGISTRY_SCOPES. */
int kiln_registry_scopes_merge(char *const *a, size_t n_a, char *const *b, size_t n_b, char ***ret);
/* The scopes joined with ' ': the token cache key buildkitd uses. */
char *kiln_registry_scopes_join(char *const *scopes, size_t n);
void kiln_registry_strv_free(char **v);

/* ---- Token requests ---- */

struct kiln_registry_token_options {
        char *realm;   /* absolute http(s) URL from the challenge */
        char *service; /* may be "" */
        char **scopes; /* normalised (kiln_registry_scopes_merge), NULL-terminated */
        size_t n_scopes;
        char *username;           /* "" when only a secret (an identity token) is known */
        char *secret;             /* password or identity token; "" for anonymous */
        bool fetch_refresh_token; /* offline_token / access_type; buildkitd never sets it */
};

/* containerd's GenerateTokenOptions: realm (required, must be an absolute
 * http or https URL), service, and the challenge's "scope" (space
 * separated) merged with extra_scopes (the request's). username and secret
 * may be NULL. Returns 0 or -EINVAL with *err. */
int kiln_registry_token_options_init(struct kiln_registry_token_options *o,
                                     const struct kiln_registry_challenge *c,
                                     char *const *extra_scopes, size_t n_extra,
                                     const char *username, const char *secret,
                                     struct kiln_error **err);
/* Frees the fields, wiping the secret. */
void kiln_registry_token_options_release(struct kiln_registry_token_options *o);

/* The GET token URL (containerd's FetchToken): the realm with its own query
 * kept, plus service (when not empty), one scope= per scope and
 * offline_token=true when asked, all re-encoded as Go's url.Values.Encode
 * does (keys sorted). Caller frees; NULL past KILN_LIMIT_REGISTRY_URL. When
 * the options hold a secret, the GET also carries
 * kiln_registry_basic_auth(username, secret). */
char *kiln_registry_token_get_url(const struct kiln_registry_token_options *o);

/* The OAuth POST form (containerd's FetchTokenWithOAuth), sent to the realm
 * with "Content-Type: application/x-www-form-urlencoded; charset=utf-8":
 * client_id, grant_type=password with username and password, or
 * grant_type=refresh_token with refresh_token=<secret> when there is no
 * username; scope (joined with ' ') when any, service always, access_type=
 * offline when asked; keys sorted. client_id is "buildkit-client" in
 * buildkitd. Holds the secret: free with a wipe (explicit_bzero). NULL past
 * KILN_LIMIT_REGISTRY_URL. */
char *kiln_registry_token_post_body(const struct kiln_registry_token_options *o,
                                    const char *client_id);
#define KILN_REGISTRY_OAUTH_CLIENT_ID "buildkit-client"

/* buildkitd's daemon side asks with GET first ("Docker Hub does not support
 * POST"); after a GET that failed with HTTP status, it tries the POST when
 * there is a secret and the status is 404, 401, or 405 with a username. */
bool kiln_registry_token_should_post(const struct kiln_registry_token_options *o, int status);

/* "Basic base64(username:secret)". Holds the secret: wipe it after use. */
char *kiln_registry_basic_auth(const char *username, const char *secret);

/* ---- Token responses ---- */

struct kiln_registry_token {
        char *token;         /* what follows "Bearer " */
        char *refresh_token; /* NULL when none */
        int64_t expires_in;  /* seconds; 60 when the server gave none (or 0) */
        int64_t issued_at;   /* Unix seconds from the server, 0 when absent */
};

enum kiln_registry_token_kind {
        KILN_REGISTRY_TOKEN_GET,   /* "token", or "access_token" which then wins */
        KILN_REGISTRY_TOKEN_OAUTH, /* "access_token" only */
};

/* Reads a token server's JSON answer as Go's encoding/json reads it into
 * containerd's response structs: keys matched case-insensitively, unknown
 * keys ignored, data after the first value ignored, expires_in an integer,
 * issued_at an RFC 3339 time. An answer without a token is an error
 * ("authorization server did not include a token in the response"). The
 * body is at most KILN_LIMIT_REGISTRY_TOKEN_RESPONSE bytes. Errors never
 * quote the body. */
int kiln_registry_token_response_parse(const char *body, size_t len,
                                       enum kiln_registry_token_kind kind,
                                       struct kiln_registry_token *ret, struct kiln_error **err);
/* Frees the fields, wiping the tokens. */
void kiln_registry_token_release(struct kiln_registry_token *t);

/* When a token stops being used: issued_at (or now when 0) plus 0.9 of
 * expires_in, in whole seconds as buildkitd truncates it. */
int64_t kiln_registry_token_expiry(const struct kiln_registry_token *t, int64_t now);

/* ---- Token cache ---- */

/*
 * Tokens per (host, scope key), kept until their expiry; concurrent
 * requests for one key fetch once (buildkitd's flightcontrol).
 *
 * Thread safety: every function may be called from any thread. One mutex
 * (the cache's) guards the table; a fetch runs with no lock held, and the
 * callers that find that key in flight wait on a condition variable of
 * that flight (with the cache's mutex) and get its result, the token or a
 * copy of its error. Errors are not cached: the next call fetches again.
 * A token already past its expiry when fetched is handed to its callers
 * but not kept (buildkitd keeps those forever, a bug). At most
 * KILN_LIMIT_REGISTRY_TOKEN_CACHE tokens are kept; expired ones go first,
 * then the ones closest to expiry.
 */
struct kiln_registry_token_cache;

/* Fetches a token for the caller's flight; runs on the calling thread with
 * no lock held. Fills *ret and returns 0, or returns -errno with *err. */
typedef int (*kiln_registry_token_fetch_fn)(void *userdata, struct kiln_registry_token *ret,
                                            struct kiln_error **err);

struct kiln_registry_token_cache *kiln_registry_token_cache_new(void);
/* No call may be in progress. */
struct kiln_registry_token_cache *
kiln_registry_token_cache_free(struct kiln_registry_token_cache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_registry_token_cache *, kiln_registry_token_cache_free);

/* The clock used for expiry (Unix seconds); for tests. Default: the
 * system's real-time clock. Set before any other call. */
void kiln_registry_token_cache_set_clock(struct kiln_registry_token_cache *c,
                                         int64_t (*now)(void *userdata), void *userdata);

/* The token for (host, scope): a cached one still valid, the result of a
 * fetch in flight for that key, or a new fetch with fetch(userdata). On
 * success *ret_token is a malloc'd copy of the token (wipe it after use).
 * Returns 1 when served from the cache or another caller's fetch, 0 when
 * this call fetched, or the fetch's -errno with *err. */
int kiln_registry_token_cache_get(struct kiln_registry_token_cache *c, const char *host,
                                  const char *scope, kiln_registry_token_fetch_fn fetch,
                                  void *userdata, char **ret_token, struct kiln_error **err);

/* Forgets the tokens of host for scope, or all of host's when scope is
 * NULL (after a 401 that rejected a token). A fetch in flight is not
 * affected. */
void kiln_registry_token_cache_invalidate(struct kiln_registry_token_cache *c, const char *host,
                                          const char *scope);
