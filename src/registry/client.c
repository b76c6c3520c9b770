/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The per-request flow: containerd's request.do / doWithRetries with
 * buildkit's dockerAuthorizer (util/resolver/authorizer.go) on top.
 */
#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#include "base/clock.h"
#include "client.h"
#include "redact.h"
#include "registry-internal.h"
#include "transfer-internal.h"

/* What a host answered 401 with last: how to authorise the next requests
 * to it (buildkit's authFetcher). */
struct auth_handler {
        char *host;
        enum kiln_registry_auth_scheme scheme;   /* BEARER or BASIC */
        struct kiln_registry_token_options opts; /* realm, service, scopes; user, secret */
        char *static_token; /* a registrytoken from the Docker config: sent as is */
        struct auth_handler *next;
};

static void auth_handler_free(struct auth_handler *h)
{
        if (!h)
                return;
        free(h->host);
        kiln_registry_token_options_release(&h->opts);
        free_secret(h->static_token);
        free(h);
}

int session_sleep(struct session *s, unsigned ms)
{
        struct kiln_registry_client *c = s->c;
        struct timespec until = kiln_mono_deadline(ms);

        pthread_mutex_lock(&c->wake_lock);
        for (;;) {
                struct timespec now, slice;

                if (session_cancelled(s))
                        break;
                clock_gettime(CLOCK_MONOTONIC, &now);
                if (now.tv_sec > until.tv_sec ||
                    (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
                        break;
                /* A flag set without kiln_registry_client_wake is still
                 * seen within a slice. */
                slice = now;
                slice.tv_sec += CANCEL_POLL_MS / 1000;
                slice.tv_nsec += (long) (CANCEL_POLL_MS % 1000) * 1000000L;
                if (slice.tv_nsec >= 1000000000L) {
                        slice.tv_sec++;
                        slice.tv_nsec -= 1000000000L;
                }
                if (slice.tv_sec > until.tv_sec ||
                    (slice.tv_sec == until.tv_sec && slice.tv_nsec > until.tv_nsec))
                        slice = until;
                (void) pthread_cond_timedwait(&c->wake_cond, &c->wake_lock, &slice);
        }
        pthread_mutex_unlock(&c->wake_lock);
        return session_cancelled(s) ? -ECANCELED : 0;
}

int session_cancelled_error(const char *what, struct kiln_error **err)
{
        kiln_error_free(*err);
        *err = NULL;
        return kiln_error_set(err, -ECANCELED, "%s: cancelled", what);
}

void kiln_registry_client_wake(struct kiln_registry_client *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&c->wake_lock);
        pthread_cond_broadcast(&c->wake_cond);
        pthread_mutex_unlock(&c->wake_lock);
        kiln_registry_transfer_manager_wake(c->manager);
}

/* ---- the client ---- */

int kiln_registry_client_new(struct kiln_registry_transfer_manager *m,
                             const struct kiln_config *config,
                             const struct kiln_registry_client_options *o,
                             struct kiln_registry_client **ret, struct kiln_error **err)
{
        _cleanup_(kiln_registry_docker_config_freep) struct kiln_registry_docker_config *dc = NULL;
        struct kiln_registry_client *c;
        int r, base = o ? o->retry_base_ms : -1;

        r = kiln_registry_docker_config_load(o ? o->docker_config_path : NULL, &dc, err);
        if (r < 0)
                return r;
        if (base < 0) {
                const char *env = secure_getenv(KILN_REGISTRY_RETRY_BASE_MS_ENV);
                char *end;
                long v;

                base = KILN_REGISTRY_RETRY_BASE_MS_DEFAULT;
                if (env && *env) {
                        errno = 0;
                        v = strtol(env, &end, 10);
                        if (errno != 0 || *end != 0 || v < 0 || v > 600000)
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid %s '%s': expected milliseconds "
                                                      "from 0 to 600000",
                                                      KILN_REGISTRY_RETRY_BASE_MS_ENV, env);
                        base = (int) v;
                }
        }

        c = kiln_xcalloc(1, sizeof(*c));
        c->manager = m;
        c->config = config;
        c->docker_config = TAKE_PTR(dc);
        c->tokens = kiln_registry_token_cache_new();
        c->retry_base_ms = base;
        pthread_mutex_init(&c->lock, NULL);
        pthread_mutex_init(&c->wake_lock, NULL);
        {
                pthread_condattr_t ca;

                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&c->wake_cond, &ca);
                pthread_condattr_destroy(&ca);
        }
        *ret = c;
        return 0;
}

struct kiln_registry_client *kiln_registry_client_free(struct kiln_registry_client *c)
{
        if (!c)
                return NULL;
        while (c->handlers) {
                struct auth_handler *h = c->handlers;
                c->handlers = h->next;
                auth_handler_free(h);
        }
        for (size_t i = 0; i < c->n_plain_hosts; i++)
                free(c->plain_hosts[i]);
        free(c->plain_hosts);
        kiln_registry_token_cache_free(c->tokens);
        kiln_registry_docker_config_free(c->docker_config);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->wake_cond);
        pthread_mutex_destroy(&c->wake_lock);
        free(c);
        return NULL;
}

const char *kiln_registry_event_kind_to_string(enum kiln_registry_event_kind k)
{
        static const char *const names[_KILN_REGISTRY_EVENT_KIND_MAX] = {
                [KILN_REGISTRY_EVENT_RESOLVING] = "resolving",
                [KILN_REGISTRY_EVENT_RESOLVED] = "resolved",
                [KILN_REGISTRY_EVENT_BLOB_STARTED] = "blob-started",
                [KILN_REGISTRY_EVENT_BLOB_PROGRESS] = "blob-progress",
                [KILN_REGISTRY_EVENT_BLOB_DONE] = "blob-done",
                [KILN_REGISTRY_EVENT_BLOB_CACHED] = "blob-cached",
                [KILN_REGISTRY_EVENT_BLOB_EXISTS] = "blob-exists",
                [KILN_REGISTRY_EVENT_BLOB_MOUNTED] = "blob-mounted",
                [KILN_REGISTRY_EVENT_RETRY] = "retry",
                [KILN_REGISTRY_EVENT_ERROR] = "error",
        };

        if ((int) k < 0 || k >= _KILN_REGISTRY_EVENT_KIND_MAX)
                return NULL;
        return names[k];
}

/* ---- sessions ---- */

int session_open(struct kiln_registry_client *c, const char *ref, bool push,
                 kiln_registry_event_fn on_event, void *userdata, struct session **ret,
                 struct kiln_error **err)
{
        _cleanup_(session_closep) struct session *s = NULL;
        int r;

        s = kiln_xcalloc(1, sizeof(*s));
        s->c = c;
        s->push = push;
        s->on_event = on_event;
        s->userdata = userdata;
        r = kiln_content_ref_parse(ref, &s->ref, err);
        if (r < 0)
                return r;
        s->ref_string = kiln_content_ref_canonical(s->ref);
        r = kiln_registry_hosts_build(c->config, s->ref->domain, &s->hosts, err);
        if (r < 0)
                return r;
        kiln_registry_random_hex(s->trace_id, 16);
        *ret = TAKE_PTR(s);
        return 0;
}

struct session *session_close(struct session *s)
{
        if (!s)
                return NULL;
        kiln_content_ref_free(s->ref);
        free(s->ref_string);
        kiln_registry_hosts_free(s->hosts);
        free(s);
        return NULL;
}

void session_event(struct session *s, const struct kiln_registry_event *ev)
{
        if (s->on_event)
                s->on_event(s->userdata, ev);
}

size_t session_hosts(struct session *s, unsigned caps, const struct kiln_registry_host ***ret)
{
        const struct kiln_registry_host **v = kiln_xcalloc(s->hosts->n + 1, sizeof(*v));
        size_t n = 0;

        for (size_t i = 0; i < s->hosts->n; i++)
                if (kiln_registry_host_can(&s->hosts->items[i], caps))
                        v[n++] = &s->hosts->items[i];
        *ret = v;
        return n;
}

static bool host_is_plain(struct kiln_registry_client *c, const char *host)
{
        bool found = false;

        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->n_plain_hosts && !found; i++)
                found = streq(c->plain_hosts[i], host);
        pthread_mutex_unlock(&c->lock);
        return found;
}

static void host_set_plain(struct kiln_registry_client *c, const char *host)
{
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->n_plain_hosts; i++)
                if (streq(c->plain_hosts[i], host)) {
                        pthread_mutex_unlock(&c->lock);
                        return;
                }
        c->plain_hosts = kiln_xreallocarray(c->plain_hosts, c->n_plain_hosts + 1, sizeof(char *));
        c->plain_hosts[c->n_plain_hosts++] = kiln_xstrdup(host);
        pthread_mutex_unlock(&c->lock);
}

char *session_url(struct session *s, const struct kiln_registry_host *h, const char *kind,
                  const char *object)
{
        char *url = kiln_registry_host_url(h, s->ref, kind, object);

        if (url && h->http_fallback && host_is_plain(s->c, h->host)) {
                char *plain = kiln_registry_url_plain_http(url);
                free(url);
                url = plain;
        }
        return url;
}

/* ---- requests ---- */

void request_init(struct request *rq, const struct kiln_registry_host *host, const char *method,
                  char *url)
{
        *rq = (struct request){
                .host = host,
                .method = method,
                .url = url,
                .body_fd = -1,
                .klass = KILN_REGISTRY_TRANSFER_METADATA,
        };
}

void request_add_header(struct request *rq, const char *name, const char *value)
{
        if (rq->n_headers >= REQUEST_HEADERS_MAX)
                abort(); /* a programming error: the callers are ours */
        rq->headers[rq->n_headers++] =
                (struct kiln_registry_header){ (char *) name, (char *) value };
}

static void token_options_copy(struct kiln_registry_token_options *dst,
                               const struct kiln_registry_token_options *src)
{
        *dst = (struct kiln_registry_token_options){
                .realm = kiln_xstrdup(src->realm),
                .service = kiln_xstrdup(src->service),
                .n_scopes = src->n_scopes,
                .username = kiln_xstrdup(src->username),
                .secret = kiln_xstrdup(src->secret),
                .fetch_refresh_token = src->fetch_refresh_token,
        };
        dst->scopes = kiln_xcalloc(src->n_scopes + 1, sizeof(char *));
        for (size_t i = 0; i < src->n_scopes; i++)
                dst->scopes[i] = kiln_xstrdup(src->scopes[i]);
}

struct token_fetch {
        struct session *s;
        const struct kiln_registry_host *host;
        const struct kiln_registry_token_options *opts;
};

/* One HTTP exchange with a token server; *ret_t owns the answer. */
static int token_exchange(struct token_fetch *f, const char *method, const char *url,
                          const char *authorization, const char *body,
                          struct kiln_registry_transfer **ret_t, struct kiln_error **err)
{
        struct kiln_registry_header hdrs[2];
        size_t n = 0;
        struct kiln_registry_transfer_request req = {
                .method = method,
                .url = url,
                .klass = KILN_REGISTRY_TRANSFER_METADATA,
                .authorization = authorization,
                .tls = f->host ? &f->host->tls : NULL,
                .follow_redirects = true,
                .body_max = KILN_LIMIT_REGISTRY_TOKEN_RESPONSE,
                .trace_id = f->s->trace_id,
                .cancel = f->s->cancel,
        };
        int r;

        if (body) {
                hdrs[n++] = (struct kiln_registry_header){
                        "Content-Type", "application/x-www-form-urlencoded; charset=utf-8"
                };
                req.has_body = true;
                req.body = body;
                req.body_len = strlen(body);
                req.body_secret = true;
                req.body_fd = -1;
        }
        req.headers = hdrs;
        req.n_headers = n;
        r = kiln_registry_transfer_start(f->s->c->manager, &req, ret_t, err);
        if (r < 0)
                return r;
        return kiln_registry_transfer_wait(*ret_t, NULL);
}

static int token_fetch_run(void *userdata, struct kiln_registry_token *ret, struct kiln_error **err)
{
        struct token_fetch *f = userdata;
        const struct kiln_registry_token_options *o = f->opts;
        _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
        _cleanup_free_ char *url = NULL, *safe = NULL;
        _cleanup_(free_secretp) char *basic = NULL;
        const struct kiln_registry_transfer_response *resp;
        bool anonymous = streq(o->secret, "");
        int r;

        url = kiln_registry_token_get_url(o);
        if (!url)
                return kiln_error_set(err, -E2BIG, "token request URL too long");
        safe = kiln_registry_url_sanitize(o->realm);
        if (!anonymous)
                basic = kiln_registry_basic_auth(o->username, o->secret);
        r = token_exchange(f, "GET", url, basic, NULL, &t, err);
        if (r < 0)
                return kiln_error_set(err, r, "fetch token from '%s': cancelled", safe);
        kiln_registry_transfer_wait(t, &resp);
        if (resp->callback_failed)
                return kiln_error_set(err, resp->callback_error->code, "fetch token from '%s': %s",
                                      safe, kiln_error_message(resp->callback_error));
        if (resp->curl_code)
                return kiln_error_set(err, -EIO, "fetch token from '%s': %s", safe,
                                      resp->transport_error);
        if (resp->status == 200) {
                r = kiln_registry_token_response_parse(resp->body.data ? resp->body.data : "",
                                                       resp->body.len, KILN_REGISTRY_TOKEN_GET, ret,
                                                       err);
                if (r < 0)
                        return kiln_error_wrap(err, "fetch token from '%s'", safe);
                return 0;
        }
        if (!anonymous && kiln_registry_token_should_post(o, (int) resp->status)) {
                _cleanup_(free_secretp) char *form = NULL;

                log_debug_f(KILN_FIELDS({ "status", resp->status_text }, { "realm", safe }),
                            "token GET failed, trying the OAuth POST");
                form = kiln_registry_token_post_body(o, KILN_REGISTRY_OAUTH_CLIENT_ID);
                if (!form)
                        return kiln_error_set(err, -E2BIG, "token request too long");
                t = kiln_registry_transfer_free(t);
                r = token_exchange(f, "POST", o->realm, NULL, form, &t, err);
                if (r < 0)
                        return kiln_error_set(err, r, "fetch oauth token from '%s': cancelled",
                                              safe);
                kiln_registry_transfer_wait(t, &resp);
                if (resp->callback_failed)
                        return kiln_error_set(err, resp->callback_error->code,
                                              "fetch oauth token from '%s': %s", safe,
                                              kiln_error_message(resp->callback_error));
                if (resp->curl_code)
                        return kiln_error_set(err, -EIO, "fetch oauth token from '%s': %s", safe,
                                              resp->transport_error);
                if (resp->status == 200) {
                        r = kiln_registry_token_response_parse(
                                resp->body.data ? resp->body.data : "", resp->body.len,
                                KILN_REGISTRY_TOKEN_OAUTH, ret, err);
                        if (r < 0)
                                return kiln_error_wrap(err, "fetch oauth token from '%s'", safe);
                        return 0;
                }
                return kiln_error_set(err, -EACCES, "fetch oauth token from '%s': %s", safe,
                                      resp->status_text);
        }
        log_debug_f(KILN_FIELDS({ "status", resp->status_text }, { "realm", safe }),
                    "token request failed");
        return kiln_error_set(err, -EACCES, "fetch %stoken from '%s': %s",
                              anonymous ? "anonymous " : "", safe, resp->status_text);
}

/* buildkit's Authorize: the header for a request to host h, or NULL when h
 * has not asked for auth yet. */
static int authorize(struct session *s, const struct kiln_registry_host *h, const char *extra_scope,
                     char **ret, bool *ret_bearer, struct kiln_error **err)
{
        struct kiln_registry_client *c = s->c;
        struct kiln_registry_token_options o = { 0 };
        enum kiln_registry_auth_scheme scheme = _KILN_REGISTRY_AUTH_SCHEME_INVALID;
        _cleanup_free_ char *repo_scope = NULL, *key = NULL;
        char **scopes = NULL;
        char *static_token = NULL;
        struct token_fetch f;
        int r, n;

        *ret = NULL;
        *ret_bearer = false;
        pthread_mutex_lock(&c->lock);
        for (struct auth_handler *a = c->handlers; a; a = a->next)
                if (streq(a->host, h->host)) {
                        scheme = a->scheme;
                        token_options_copy(&o, &a->opts);
                        static_token = a->static_token ? kiln_xstrdup(a->static_token) : NULL;
                        break;
                }
        pthread_mutex_unlock(&c->lock);
        if (scheme == _KILN_REGISTRY_AUTH_SCHEME_INVALID)
                return 0;

        if (scheme == KILN_REGISTRY_AUTH_BASIC) {
                *ret = kiln_registry_basic_auth(o.username, o.secret);
                kiln_registry_token_options_release(&o);
                return 0;
        }
        *ret_bearer = true;
        if (static_token) {
                *ret = kiln_xasprintf("Bearer %s", static_token);
                free_secret(static_token);
                kiln_registry_token_options_release(&o);
                return 0;
        }

        /* GetTokenScopes: the handler's scopes and the request's, merged. */
        repo_scope = kiln_registry_scope_repository(s->ref->path, s->push);
        {
                char *req_scopes[2] = { repo_scope, (char *) extra_scope };
                n = kiln_registry_scopes_merge(o.scopes, o.n_scopes, req_scopes,
                                               extra_scope ? 2 : 1, &scopes);
        }
        if (n < 0) {
                kiln_registry_token_options_release(&o);
                return kiln_error_set(err, n, "more than %u token scopes",
                                      KILN_LIMIT_REGISTRY_SCOPES);
        }
        kiln_registry_strv_free(o.scopes);
        o.scopes = scopes;
        o.n_scopes = (size_t) n;
        key = kiln_registry_scopes_join(o.scopes, o.n_scopes);

        f = (struct token_fetch){ .s = s, .host = h, .opts = &o };
        {
                char *token = NULL;

                r = kiln_registry_token_cache_get(c->tokens, h->host, key, token_fetch_run, &f,
                                                  &token, err);
                if (r >= 0) {
                        *ret = kiln_xasprintf("Bearer %s", token);
                        free_secret(token);
                }
        }
        kiln_registry_token_options_release(&o);
        return r < 0 ? r : 0;
}

static void handler_set(struct kiln_registry_client *c, struct auth_handler *nh)
{
        struct auth_handler **pp;

        pthread_mutex_lock(&c->lock);
        for (pp = &c->handlers; *pp; pp = &(*pp)->next)
                if (streq((*pp)->host, nh->host)) {
                        struct auth_handler *old = *pp;
                        nh->next = old->next;
                        *pp = nh;
                        auth_handler_free(old);
                        pthread_mutex_unlock(&c->lock);
                        return;
                }
        nh->next = c->handlers;
        c->handlers = nh;
        pthread_mutex_unlock(&c->lock);
}

/* buildkit's AddResponses after a 401 from host h. Returns 1 to send the
 * request again, 0 to give up (the 401 stands), or -errno. */
static int add_responses(struct session *s, const struct kiln_registry_host *h,
                         const struct kiln_registry_transfer_response *resp, bool sent_auth,
                         bool sent_bearer, struct kiln_error **err)
{
        _cleanup_(kiln_registry_challenges_release) struct kiln_registry_challenges ch = { 0 };
        _cleanup_(kiln_registry_creds_release) struct kiln_registry_creds creds = { 0 };
        const struct kiln_registry_challenge *sel;
        const char *user = NULL, *secret = NULL;
        struct auth_handler *nh;
        int r;

        for (size_t i = 0; i < resp->n_headers; i++) {
                if (!ascii_strcaseeq(resp->headers[i].name, "WWW-Authenticate"))
                        continue;
                r = kiln_registry_challenges_parse(&ch, resp->headers[i].value,
                                                   strlen(resp->headers[i].value), err);
                if (r < 0)
                        return kiln_error_wrap(err, "read WWW-Authenticate of '%s'", h->host);
        }
        if (ch.n == 0)
                return 0;

        r = kiln_registry_docker_config_lookup(s->c->docker_config, h->host, &creds, err);
        if (r < 0)
                return kiln_error_wrap(err, "credentials for '%s'", h->host);
        kiln_registry_creds_basic(&creds, &user, &secret);
        sel = kiln_registry_challenges_select(&ch, !streq(user, "") && !streq(secret, ""));
        if (!sel)
                return 0; /* "failed to find supported auth scheme": the 401 stands */

        if (sel->scheme == KILN_REGISTRY_AUTH_BASIC) {
                if (sent_auth && !sent_bearer)
                        return 0; /* these credentials were refused */
                nh = kiln_xcalloc(1, sizeof(*nh));
                nh->host = kiln_xstrdup(h->host);
                nh->scheme = KILN_REGISTRY_AUTH_BASIC;
                nh->opts.username = kiln_xstrdup(user);
                nh->opts.secret = kiln_xstrdup(secret);
                nh->opts.realm = kiln_xstrdup("");
                nh->opts.service = kiln_xstrdup("");
                nh->opts.scopes = kiln_xcalloc(1, sizeof(char *));
                handler_set(s->c, nh);
                return 1;
        }

        /* Bearer. A 401 to a request that carried a token: that token is
         * no good (expired, revoked, too narrow); fetch another once. */
        if (sent_bearer) {
                const char *e = kiln_registry_challenge_param(sel, "error");

                kiln_registry_token_cache_invalidate(s->c->tokens, h->host, NULL);
                if (e && streq(e, "insufficient_scope"))
                        return 0;
                if (creds.registry_token)
                        return 0;
        }
        nh = kiln_xcalloc(1, sizeof(*nh));
        nh->host = kiln_xstrdup(h->host);
        nh->scheme = KILN_REGISTRY_AUTH_BEARER;
        if (creds.registry_token) {
                nh->static_token = kiln_xstrdup(creds.registry_token);
                nh->opts.realm = kiln_xstrdup("");
                nh->opts.service = kiln_xstrdup("");
                nh->opts.username = kiln_xstrdup("");
                nh->opts.secret = kiln_xstrdup("");
                nh->opts.scopes = kiln_xcalloc(1, sizeof(char *));
        } else {
                r = kiln_registry_token_options_init(&nh->opts, sel, NULL, 0, user, secret, err);
                if (r < 0) {
                        auth_handler_free(nh);
                        return kiln_error_wrap(err, "token auth challenge of '%s'", h->host);
                }
        }
        handler_set(s->c, nh);
        return 1;
}

/* "host:port" or "[v6]:port" (Go's SplitHostPort finding a port). */
static bool host_has_port(const char *host)
{
        const char *colon = strrchr(host, ':');

        if (!colon || colon[1] == 0 || strspn(colon + 1, "0123456789") != strlen(colon + 1))
                return false;
        if (host[0] == '[')
                return colon > host && colon[-1] == ']';
        return strchr(host, ':') == colon;
}

/* A word on what a TLS failure usually means, for the error message. */
static const char *transport_hint(const char *e)
{
        if (!e)
                return "";
        if (strstr(e, "alert bad certificate") || strstr(e, "alert certificate required") ||
            strstr(e, "alert handshake failure") || strstr(e, "alert unknown ca"))
                return " (the registry refused the TLS handshake: it wants a client certificate "
                       "it trusts; check the keypair of this registry's section)";
        if (strstr(e, "SSL certificate problem"))
                return " (the registry's certificate is not trusted: add its CA with 'ca' in this "
                       "registry's section)";
        if (strstr(e, "wrong version number") || strstr(e, "packet length too long"))
                return " (the registry speaks plain HTTP: set http = true for it)";
        return "";
}

static bool is_manifest_url(const char *url)
{
        return strstr(url, "/manifests/") != NULL;
}

int session_do(struct session *s, struct request *rq, struct kiln_registry_transfer **ret,
               struct kiln_error **err)
{
        long prev_status = 0;
        bool bearer_retried = false;
        int r;

        rq->transient = false;
        for (unsigned attempt = 1;; attempt++) {
                _cleanup_(kiln_registry_transfer_freep) struct kiln_registry_transfer *t = NULL;
                _cleanup_(free_secretp) char *authorization = NULL;
                _cleanup_free_ char *safe = NULL;
                const struct kiln_registry_transfer_response *resp;
                bool sent_bearer = false, more = attempt < KILN_REGISTRY_REQUEST_ATTEMPTS;
                struct kiln_registry_transfer_request req;

                safe = kiln_registry_url_sanitize(rq->url);
                if (session_cancelled(s))
                        return kiln_error_set(err, -ECANCELED, "%s %s: cancelled", rq->method,
                                              safe);
                if (rq->host && !rq->no_auth) {
                        r = authorize(s, rq->host, rq->extra_scope, &authorization, &sent_bearer,
                                      err);
                        if (r < 0)
                                return kiln_error_wrap(err, "%s %s: failed to authorize",
                                                       rq->method, safe);
                }
                req = (struct kiln_registry_transfer_request){
                        .method = rq->method,
                        .url = rq->url,
                        .klass = rq->klass,
                        .headers = rq->headers,
                        .n_headers = rq->n_headers,
                        .authorization = authorization,
                        .tls = rq->host ? &rq->host->tls : NULL,
                        .follow_redirects = true,
                        .has_body = rq->has_body,
                        .body = rq->body,
                        .body_fd = rq->body_fd,
                        .body_offset = rq->body_offset,
                        .body_len = rq->body_len,
                        .sink = rq->sink,
                        .body_max = rq->body_max,
                        .on_response = rq->on_response,
                        .userdata = rq->userdata,
                        .trace_id = s->trace_id,
                        .log_fields = rq->log_fields,
                        .n_log_fields = rq->n_log_fields,
                        .cancel = s->cancel,
                };
                r = kiln_registry_transfer_start(s->c->manager, &req, &t, err);
                if (r < 0)
                        return kiln_error_wrap(err, "%s %s", rq->method, safe);
                r = kiln_registry_transfer_wait(t, &resp);
                if (r < 0 || session_cancelled(s))
                        return kiln_error_set(err, -ECANCELED, "%s %s: cancelled", rq->method,
                                              safe);

                if (resp->callback_failed) {
                        rq->transient = false;
                        return kiln_error_set(err, resp->callback_error->code, "%s %s: %s",
                                              rq->method, safe,
                                              kiln_error_message(resp->callback_error));
                }
                if (resp->curl_code != 0) {
                        bool transient = transfer_curl_code_is_transient(resp->curl_code);
                        bool sunk = rq->sink && resp->body_received > 0;

                        if (rq->host && rq->host->http_fallback &&
                            startswith(rq->url, "https://") &&
                            transfer_is_http_fallback_error(resp->curl_code, resp->transport_error,
                                                            host_has_port(rq->host->host))) {
                                char *plain = kiln_registry_url_plain_http(rq->url);

                                log_debug_f(KILN_FIELDS({ "host", rq->host->host },
                                                        { "error", resp->transport_error }),
                                            "falling back to plain http");
                                host_set_plain(s->c, rq->host->host);
                                free(rq->url);
                                rq->url = plain;
                                continue;
                        }
                        if (rq->last_host && transient && !sunk && more) {
                                log_debug_f(KILN_FIELDS({ "error", resp->transport_error },
                                                        { "url", safe }),
                                            "transient transport error, retrying");
                                if (session_sleep(s, TRANSPORT_RETRY_PAUSE_MS) < 0)
                                        return kiln_error_set(err, -ECANCELED, "%s %s: cancelled",
                                                              rq->method, safe);
                                continue;
                        }
                        rq->transient = transient;
                        return kiln_error_set(err, -EIO, "%s %s: %s%s", rq->method, safe,
                                              resp->transport_error,
                                              transport_hint(resp->transport_error));
                }

                if (more) {
                        switch (resp->status) {
                        case 401:
                                if (!rq->host || rq->no_auth)
                                        break;
                                if (kiln_log_enabled(KILN_LOG_DEBUG)) {
                                        const char *wa = kiln_registry_transfer_response_header(
                                                resp, "WWW-Authenticate");
                                        log_debug_f(KILN_FIELDS({ "header", wa ? wa : "" }),
                                                    "Unauthorized");
                                }
                                if (sent_bearer && bearer_retried)
                                        break;
                                r = add_responses(s, rq->host, resp, authorization != NULL,
                                                  sent_bearer, err);
                                if (r < 0)
                                        return kiln_error_wrap(err, "%s %s", rq->method, safe);
                                if (r > 0) {
                                        bearer_retried = bearer_retried || sent_bearer;
                                        continue;
                                }
                                break;
                        case 405:
                                if (streq(rq->method, "HEAD") && is_manifest_url(rq->url)) {
                                        rq->method = "GET";
                                        continue;
                                }
                                break;
                        case 408:
                        case 429:
                                if (session_sleep(s, TRANSPORT_RETRY_PAUSE_MS) < 0)
                                        return kiln_error_set(err, -ECANCELED, "%s %s: cancelled",
                                                              rq->method, safe);
                                continue;
                        case 500:
                        case 503:
                        case 504:
                                if (rq->last_host && prev_status != resp->status) {
                                        prev_status = resp->status;
                                        continue;
                                }
                                break;
                        default:
                                break;
                        }
                }
                *ret = TAKE_PTR(t);
                return 0;
        }
}

/* ---- parallel work ---- */

struct parallel {
        parallel_fn fn;
        void *userdata;
        size_t n;
        pthread_mutex_t lock; /* guards next, failed, err */
        size_t next;
        bool failed;
        int code;
        struct kiln_error *err;
};

static void *parallel_worker(void *userdata)
{
        struct parallel *p = userdata;

        for (;;) {
                struct kiln_error *e = NULL;
                size_t i;
                int r;

                pthread_mutex_lock(&p->lock);
                if (p->failed || p->next >= p->n) {
                        pthread_mutex_unlock(&p->lock);
                        return NULL;
                }
                i = p->next++;
                pthread_mutex_unlock(&p->lock);

                r = p->fn(p->userdata, i, &e);
                if (r < 0) {
                        pthread_mutex_lock(&p->lock);
                        if (!p->failed) {
                                p->failed = true;
                                p->code = r;
                                p->err = TAKE_PTR(e);
                        }
                        pthread_mutex_unlock(&p->lock);
                }
                kiln_error_free(e);
        }
}

int parallel_run(size_t n, size_t max_threads, parallel_fn fn, void *userdata,
                 struct kiln_error **err)
{
        struct parallel p = { .fn = fn, .userdata = userdata, .n = n };
        pthread_t threads[KILN_REGISTRY_BLOB_THREADS_MAX];
        size_t want = n < max_threads ? n : max_threads, started = 0;

        if (want > KILN_REGISTRY_BLOB_THREADS_MAX)
                want = KILN_REGISTRY_BLOB_THREADS_MAX;
        pthread_mutex_init(&p.lock, NULL);
        for (size_t i = 1; i < want; i++) {
                if (pthread_create(&threads[started], NULL, parallel_worker, &p) != 0)
                        break; /* fewer threads: slower, not wrong */
                started++;
        }
        parallel_worker(&p);
        for (size_t i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        pthread_mutex_destroy(&p.lock);
        if (p.failed) {
                kiln_error_free(*err);
                *err = p.err;
                return p.code;
        }
        return 0;
}

/* ---- errors ---- */

static char *registry_error_detail(const struct kiln_buf *body)
{
        json_t *root, *errors, *first, *code, *message;
        json_error_t je;
        char *out = NULL;

        if (!body->data || body->len == 0)
                return NULL;
        root = json_loadb(body->data, body->len, JSON_DISABLE_EOF_CHECK, &je);
        if (!root)
                return NULL;
        errors = json_object_get(root, "errors");
        first = json_is_array(errors) ? json_array_get(errors, 0) : NULL;
        code = first ? json_object_get(first, "code") : NULL;
        message = first ? json_object_get(first, "message") : NULL;
        if (json_is_string(code) || json_is_string(message)) {
                _cleanup_free_ char *c =
                        json_is_string(code) ? kiln_quote_untrusted(json_string_value(code),
                                                                    json_string_length(code), 64)
                                             : kiln_xstrdup("");
                _cleanup_free_ char *m =
                        json_is_string(message)
                                ? kiln_quote_untrusted(json_string_value(message),
                                                       json_string_length(message), 200)
                                : kiln_xstrdup("");
                out = kiln_xasprintf("%s%s%s", c, c[0] && m[0] ? ": " : "", m);
        }
        json_decref(root);
        return out;
}

int response_status_error(const char *method, const char *url,
                          const struct kiln_registry_transfer_response *resp,
                          struct kiln_error **err)
{
        _cleanup_free_ char *safe = kiln_registry_url_sanitize(url);
        _cleanup_free_ char *detail = registry_error_detail(&resp->body);
        int code = resp->status == 404                          ? -ENOENT
                   : resp->status == 401 || resp->status == 403 ? -EACCES
                                                                : -EIO;

        return kiln_error_set(err, code, "%s %s: %s%s%s%s", method, safe, resp->status_text,
                              detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
}

void host_errors_add(struct host_errors *he, const char *url, const char *what)
{
        if (he->n >= HOST_ERRORS_MAX)
                return;
        he->items[he->n++] = url ? kiln_xasprintf("%s: %s", url, what) : kiln_xstrdup(what);
}

int host_errors_finish(struct host_errors *he, const char *what, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(REGISTRY_DERIVED_MAX);
        int code = he->code < 0 ? he->code : -EIO;

        if (he->n == 0)
                return kiln_error_set(err, code, "%s: no host to try", what);
        if (he->n == 1)
                return kiln_error_set(err, code, "%s: %s", what, he->items[0]);
        (void) kiln_buf_printf(&b, "%s: all %zu hosts failed: ", what, he->n);
        for (size_t i = 0; i < he->n; i++)
                (void) kiln_buf_printf(&b, "%s%s", i ? "; " : "", he->items[i]);
        return kiln_error_set(err, code, "%s", b.data);
}

void host_errors_release(struct host_errors *he)
{
        for (size_t i = 0; i < he->n; i++)
                free(he->items[i]);
        *he = (struct host_errors){ 0 };
}
