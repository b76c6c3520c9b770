/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd's remotes/docker/auth (parse.go, fetch.go) and the request and
 * scope handling of buildkitd's util/resolver/authorizer.go. The token
 * cache is in token-cache.c.
 */
#include <jansson.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "base/clock.h"
#include "redact.h"
#include "registry-internal.h"
#include "registry-limits.h"

/* ---- WWW-Authenticate ---- */

/* RFC 2616 token characters, as containerd's octetTypes. */
static bool is_tchar(unsigned char c)
{
        return c > 31 && c < 127 && !strchr(" \t\"(),/:;<=>?@[]\\{}", c);
}

static bool is_space(unsigned char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

struct cursor {
        const char *p;
        const char *end;
};

static void skip_space(struct cursor *c)
{
        while (c->p < c->end && is_space((unsigned char) *c->p))
                c->p++;
}

static size_t take_token(struct cursor *c, const char **start)
{
        *start = c->p;
        while (c->p < c->end && is_tchar((unsigned char) *c->p))
                c->p++;
        return (size_t) (c->p - *start);
}

/* A quoted string at c->p (on the opening quote): the unescaped value, or
 * NULL when it never ends (then c->p is at the end). */
static char *take_quoted(struct cursor *c)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_REGISTRY_AUTH_HEADER);

        for (c->p++; c->p < c->end; c->p++) {
                char ch = *c->p;

                if (ch == '"') {
                        c->p++;
                        return kiln_buf_steal(&b);
                }
                if (ch == '\\') {
                        if (++c->p == c->end)
                                break;
                        ch = *c->p;
                }
                /* Cannot pass the limit: the value is shorter than the header. */
                (void) kiln_buf_putc(&b, ch);
        }
        kiln_buf_release(&b);
        return NULL;
}

/* Moves past the rest of a list element: up to a ',' outside quotes. */
static void skip_element(struct cursor *c)
{
        while (c->p < c->end && *c->p != ',') {
                if (*c->p == '"') {
                        char *v = take_quoted(c);
                        if (!v)
                                return;
                        free(v);
                } else
                        c->p++;
        }
}

static enum kiln_registry_auth_scheme scheme_from(const char *s, size_t n)
{
        static const char *const names[] = {
                [KILN_REGISTRY_AUTH_BEARER] = "bearer",
                [KILN_REGISTRY_AUTH_DIGEST] = "digest",
                [KILN_REGISTRY_AUTH_BASIC] = "basic",
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                if (strlen(names[i]) != n)
                        continue;
                bool same = true;
                for (size_t k = 0; k < n && same; k++) {
                        char ch = s[k] >= 'A' && s[k] <= 'Z' ? (char) (s[k] - 'A' + 'a') : s[k];
                        same = ch == names[i][k];
                }
                if (same)
                        return (enum kiln_registry_auth_scheme) i;
        }
        return _KILN_REGISTRY_AUTH_SCHEME_INVALID;
}

const char *kiln_registry_auth_scheme_to_string(enum kiln_registry_auth_scheme s)
{
        switch (s) {
        case KILN_REGISTRY_AUTH_BEARER:
                return "Bearer";
        case KILN_REGISTRY_AUTH_DIGEST:
                return "Digest";
        case KILN_REGISTRY_AUTH_BASIC:
                return "Basic";
        case _KILN_REGISTRY_AUTH_SCHEME_MAX:
        case _KILN_REGISTRY_AUTH_SCHEME_INVALID:
                break;
        }
        return NULL;
}

static void challenge_release(struct kiln_registry_challenge *ch)
{
        for (size_t i = 0; i < ch->n_params; i++) {
                free(ch->params[i].key);
                free(ch->params[i].value);
        }
        free(ch->params);
        *ch = (struct kiln_registry_challenge){ 0 };
}

void kiln_registry_challenges_release(struct kiln_registry_challenges *c)
{
        for (size_t i = 0; i < c->n; i++)
                challenge_release(&c->items[i]);
        free(c->items);
        *c = (struct kiln_registry_challenges){ 0 };
}

/* Sets key (n bytes, lower-cased here) to value (taken); the last wins. */
static int challenge_set(struct kiln_registry_challenge *ch, const char *key, size_t n, char *value,
                         struct kiln_error **err)
{
        _cleanup_free_ char *k = kiln_xstrndup(key, n);

        for (char *p = k; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        for (size_t i = 0; i < ch->n_params; i++)
                if (streq(ch->params[i].key, k)) {
                        free(ch->params[i].value);
                        ch->params[i].value = value;
                        return 0;
                }
        if (ch->n_params >= KILN_LIMIT_REGISTRY_AUTH_PARAMS) {
                free(value);
                return kiln_error_set(err, -E2BIG,
                                      "www-authenticate challenge with more than %u parameters",
                                      KILN_LIMIT_REGISTRY_AUTH_PARAMS);
        }
        ch->params = kiln_xreallocarray(ch->params, ch->n_params + 1, sizeof(*ch->params));
        ch->params[ch->n_params++] = (struct kiln_registry_auth_param){ TAKE_PTR(k), value };
        return 0;
}

static int challenges_add(struct kiln_registry_challenges *c, struct kiln_registry_challenge *ch,
                          struct kiln_error **err)
{
        size_t at = c->n;

        if (c->n >= KILN_LIMIT_REGISTRY_AUTH_CHALLENGES) {
                challenge_release(ch);
                return kiln_error_set(err, -E2BIG, "more than %u www-authenticate challenges",
                                      KILN_LIMIT_REGISTRY_AUTH_CHALLENGES);
        }
        /* Stable insertion by priority (containerd's sort.Stable byScheme). */
        while (at > 0 && c->items[at - 1].scheme > ch->scheme)
                at--;
        c->items = kiln_xreallocarray(c->items, c->n + 1, sizeof(*c->items));
        memmove(c->items + at + 1, c->items + at, (c->n - at) * sizeof(*c->items));
        c->items[at] = *ch;
        c->n++;
        *ch = (struct kiln_registry_challenge){ 0 };
        return 0;
}

int kiln_registry_challenges_parse(struct kiln_registry_challenges *c, const char *value,
                                   size_t len, struct kiln_error **err)
{
        struct cursor cur = { value, value + len };
        const char *nul;
        int r;

        if (len > KILN_LIMIT_REGISTRY_AUTH_HEADER)
                return kiln_error_set(err, -E2BIG, "www-authenticate header longer than %u bytes",
                                      KILN_LIMIT_REGISTRY_AUTH_HEADER);
        nul = memchr(value, 0, len);
        if (nul)
                cur.end = nul;

        for (;;) {
                struct kiln_registry_challenge ch = { 0 };
                enum kiln_registry_auth_scheme scheme;
                bool first = true, next_challenge = false;
                const char *s;
                size_t n;

                while (cur.p < cur.end && (is_space((unsigned char) *cur.p) || *cur.p == ','))
                        cur.p++;
                if (cur.p == cur.end)
                        return 0;
                n = take_token(&cur, &s);
                if (n == 0 ||
                    (cur.p < cur.end && !is_space((unsigned char) *cur.p) && *cur.p != ',')) {
                        /* Not "scheme" followed by space, ',' or the end. */
                        skip_element(&cur);
                        continue;
                }
                scheme = scheme_from(s, n);
                ch.scheme = scheme;

                /* auth-params (or a token68, which no registry sends: skipped) */
                while (!next_challenge) {
                        const char *save, *k;
                        size_t kn;
                        char *v;

                        skip_space(&cur);
                        if (cur.p == cur.end)
                                break;
                        if (*cur.p == ',') {
                                cur.p++;
                                first = false;
                                continue;
                        }
                        save = cur.p;
                        kn = take_token(&cur, &k);
                        skip_space(&cur);
                        if (kn == 0 || cur.p == cur.end || *cur.p != '=') {
                                if (kn > 0 && !first) {
                                        /* a token after ',' and not a key: the next scheme */
                                        cur.p = save;
                                        next_challenge = true;
                                } else
                                        skip_element(&cur);
                                first = false;
                                continue;
                        }
                        cur.p++; /* '=' */
                        skip_space(&cur);
                        if (cur.p < cur.end && *cur.p == '"') {
                                v = take_quoted(&cur);
                                if (!v)
                                        break; /* unterminated: drop it, nothing follows */
                        } else {
                                const char *vs;
                                size_t vn = take_token(&cur, &vs);
                                v = kiln_xstrndup(vs, vn);
                        }
                        if (scheme >= 0) {
                                r = challenge_set(&ch, k, kn, v, err);
                                if (r < 0) {
                                        challenge_release(&ch);
                                        return r;
                                }
                        } else
                                free(v);
                        skip_space(&cur);
                        if (cur.p < cur.end && *cur.p != ',')
                                skip_element(&cur);
                        first = false;
                }
                if (scheme >= 0) {
                        r = challenges_add(c, &ch, err);
                        if (r < 0)
                                return r;
                }
        }
}

const char *kiln_registry_challenge_param(const struct kiln_registry_challenge *c, const char *key)
{
        for (size_t i = 0; i < c->n_params; i++)
                if (streq(c->params[i].key, key))
                        return c->params[i].value;
        return NULL;
}

const struct kiln_registry_challenge *
kiln_registry_challenges_select(const struct kiln_registry_challenges *c, bool have_basic_creds)
{
        for (size_t i = 0; i < c->n; i++) {
                if (c->items[i].scheme == KILN_REGISTRY_AUTH_BEARER)
                        return &c->items[i];
                if (c->items[i].scheme == KILN_REGISTRY_AUTH_BASIC && have_basic_creds)
                        return &c->items[i];
        }
        return NULL;
}

/* ---- Scopes ---- */

char *kiln_registry_scope_repository(const char *path, bool push)
{
        return kiln_xasprintf("repository:%s:pull%s", path, push ? ",push" : "");
}

void kiln_registry_strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

struct scope_entry {
        char *name; /* "type:name" */
        char **actions;
        size_t n_actions;
};

static void scope_entries_free(struct scope_entry *e, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(e[i].name);
                for (size_t k = 0; k < e[i].n_actions; k++)
                        free(e[i].actions[k]);
                free(e[i].actions);
        }
        free(e);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int cmp_entry(const void *a, const void *b)
{
        return strcmp(((const struct scope_entry *) a)->name,
                      ((const struct scope_entry *) b)->name);
}

/* One scope "type:name:a,b" (or fewer parts) into the entries. */
static int scope_add(struct scope_entry **entries, size_t *n, const char *s, size_t len)
{
        _cleanup_free_ char *copy = kiln_xstrndup(s, len), *name = NULL;
        char *c1 = strchr(copy, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        struct scope_entry *e = NULL;
        const char *actions = NULL;

        /* Go's SplitN(scope, ":", 3): the name is the first two parts. */
        if (c2) {
                *c2 = 0;
                actions = c2 + 1;
        }
        name = kiln_xstrdup(copy);
        for (size_t i = 0; i < *n; i++)
                if (streq((*entries)[i].name, name))
                        e = &(*entries)[i];
        if (!e) {
                if (*n >= KILN_LIMIT_REGISTRY_SCOPES)
                        return -E2BIG;
                *entries = kiln_xreallocarray(*entries, *n + 1, sizeof(**entries));
                e = &(*entries)[(*n)++];
                *e = (struct scope_entry){ .name = TAKE_PTR(name) };
        }
        while (actions) {
                const char *comma = strchr(actions, ',');
                size_t alen = comma ? (size_t) (comma - actions) : strlen(actions);
                bool seen = false;

                for (size_t k = 0; k < e->n_actions && !seen; k++)
                        seen = strlen(e->actions[k]) == alen &&
                               memcmp(e->actions[k], actions, alen) == 0;
                if (!seen) {
                        if (e->n_actions >= KILN_LIMIT_REGISTRY_SCOPES)
                                return -E2BIG;
                        e->actions =
                                kiln_xreallocarray(e->actions, e->n_actions + 1, sizeof(char *));
                        e->actions[e->n_actions++] = kiln_xstrndup(actions, alen);
                }
                actions = comma ? comma + 1 : NULL;
        }
        return 0;
}

int kiln_registry_scopes_merge(char *const *a, size_t n_a, char *const *b, size_t n_b, char ***ret)
{
        struct scope_entry *entries = NULL;
        size_t n = 0;
        char **out;
        int r = 0;

        for (size_t i = 0; i < n_a + n_b && r >= 0; i++) {
                const char *s = i < n_a ? a[i] : b[i - n_a];

                while (s && *s && r >= 0) {
                        size_t len = strcspn(s, " ");

                        if (len > 0)
                                r = scope_add(&entries, &n, s, len);
                        s += len;
                        if (*s == ' ')
                                s++;
                }
        }
        if (r < 0) {
                scope_entries_free(entries, n);
                return r;
        }
        if (n > 0)
                qsort(entries, n, sizeof(*entries), cmp_entry);
        out = kiln_xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                struct kiln_buf buf = KILN_BUF_INIT(REGISTRY_DERIVED_MAX);

                if (entries[i].n_actions > 0)
                        qsort(entries[i].actions, entries[i].n_actions, sizeof(char *), cmp_str);
                (void) kiln_buf_printf(&buf, "%s:", entries[i].name);
                for (size_t k = 0; k < entries[i].n_actions; k++)
                        (void) kiln_buf_printf(&buf, "%s%s", k ? "," : "", entries[i].actions[k]);
                out[i] = kiln_buf_steal(&buf);
        }
        scope_entries_free(entries, n);
        *ret = out;
        return (int) n;
}

char *kiln_registry_scopes_join(char *const *scopes, size_t n)
{
        struct kiln_buf b = KILN_BUF_INIT(REGISTRY_DERIVED_MAX);

        for (size_t i = 0; i < n; i++)
                (void) kiln_buf_printf(&b, "%s%s", i ? " " : "", scopes[i]);
        return kiln_buf_steal(&b);
}

/* ---- Token requests ---- */

static bool realm_is_absolute_http(const char *realm)
{
        size_t skip;

        if (strncasecmp(realm, "https://", 8) == 0)
                skip = 8;
        else if (strncasecmp(realm, "http://", 7) == 0)
                skip = 7;
        else
                return false;
        return realm[skip] && !strchr("/?#", realm[skip]);
}

int kiln_registry_token_options_init(struct kiln_registry_token_options *o,
                                     const struct kiln_registry_challenge *c,
                                     char *const *extra_scopes, size_t n_extra,
                                     const char *username, const char *secret,
                                     struct kiln_error **err)
{
        const char *realm = kiln_registry_challenge_param(c, "realm");
        const char *service = kiln_registry_challenge_param(c, "service");
        const char *scope = kiln_registry_challenge_param(c, "scope");
        char *const challenge_scopes[] = { (char *) scope };
        char **scopes = NULL;
        int n;

        *o = (struct kiln_registry_token_options){ 0 };
        if (!realm)
                return kiln_error_set(err, -EINVAL, "no realm specified for token auth challenge");
        if (!realm_is_absolute_http(realm)) {
                _cleanup_free_ char *safe = kiln_registry_url_sanitize(realm);
                _cleanup_free_ char *q = kiln_quote_untrusted(safe, strlen(safe), 200);
                return kiln_error_set(err, -EINVAL,
                                      "invalid token auth challenge realm '%s': not an http or "
                                      "https URL",
                                      q);
        }
        n = kiln_registry_scopes_merge(challenge_scopes, scope ? 1 : 0, extra_scopes, n_extra,
                                       &scopes);
        if (n < 0)
                return kiln_error_set(err, n, "token auth challenge with more than %u scopes",
                                      KILN_LIMIT_REGISTRY_SCOPES);
        o->realm = kiln_xstrdup(realm);
        o->service = kiln_xstrdup(service ? service : "");
        o->scopes = scopes;
        o->n_scopes = (size_t) n;
        o->username = kiln_xstrdup(username ? username : "");
        o->secret = kiln_xstrdup(secret ? secret : "");
        return 0;
}

void kiln_registry_token_options_release(struct kiln_registry_token_options *o)
{
        free(o->realm);
        free(o->service);
        kiln_registry_strv_free(o->scopes);
        free(o->username);
        free_secret(o->secret);
        *o = (struct kiln_registry_token_options){ 0 };
}

char *kiln_registry_token_get_url(const struct kiln_registry_token_options *o)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_REGISTRY_URL);
        size_t base = strcspn(o->realm, "?#");
        struct url_query q = { 0 };
        int r;

        if (o->realm[base] == '?')
                url_query_parse(&q, o->realm + base + 1, strcspn(o->realm + base + 1, "#"));
        if (!streq(o->service, ""))
                url_query_add(&q, "service", o->service);
        for (size_t i = 0; i < o->n_scopes; i++)
                url_query_add(&q, "scope", o->scopes[i]);
        if (o->fetch_refresh_token)
                url_query_add(&q, "offline_token", "true");
        r = kiln_buf_append(&b, o->realm, base);
        if (r >= 0 && q.n > 0) {
                r = kiln_buf_putc(&b, '?');
                if (r >= 0)
                        r = url_query_encode(&q, &b);
        }
        url_query_release(&q);
        return r < 0 ? NULL : kiln_buf_steal(&b);
}

char *kiln_registry_token_post_body(const struct kiln_registry_token_options *o,
                                    const char *client_id)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_REGISTRY_URL);
        struct url_query q = { 0 };
        _cleanup_free_ char *scope = NULL;
        int r;

        if (o->n_scopes > 0) {
                scope = kiln_registry_scopes_join(o->scopes, o->n_scopes);
                url_query_add(&q, "scope", scope);
        }
        url_query_add(&q, "service", o->service);
        url_query_add(&q, "client_id", client_id);
        if (streq(o->username, "")) {
                url_query_add(&q, "grant_type", "refresh_token");
                url_query_add(&q, "refresh_token", o->secret);
        } else {
                url_query_add(&q, "grant_type", "password");
                url_query_add(&q, "username", o->username);
                url_query_add(&q, "password", o->secret);
        }
        if (o->fetch_refresh_token)
                url_query_add(&q, "access_type", "offline");
        r = url_query_encode(&q, &b);
        url_query_release(&q);
        if (r < 0) {
                if (b.data)
                        explicit_bzero(b.data, b.len);
                kiln_buf_release(&b);
                return NULL;
        }
        return kiln_buf_steal(&b);
}

bool kiln_registry_token_should_post(const struct kiln_registry_token_options *o, int status)
{
        if (streq(o->secret, ""))
                return false;
        return status == 404 || status == 401 || (status == 405 && !streq(o->username, ""));
}

char *kiln_registry_basic_auth(const char *username, const char *secret)
{
        _cleanup_(free_secretp) char *plain = kiln_xasprintf("%s:%s", username, secret);
        _cleanup_(free_secretp) char *enc = base64_encode(plain, strlen(plain));

        return kiln_xasprintf("Basic %s", enc);
}

/* ---- Token responses ---- */

/* RFC 3339 as Go's time.Time.UnmarshalJSON reads it; fractions dropped. */
static bool parse_rfc3339(const char *s, int64_t *ret)
{
        static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
        size_t n = strlen(s), i = 19;

        if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
                return false;
        if (!kiln_parse_digits(s, 4, &y) || !kiln_parse_digits(s + 5, 2, &mo) ||
            !kiln_parse_digits(s + 8, 2, &d) || !kiln_parse_digits(s + 11, 2, &h) ||
            !kiln_parse_digits(s + 14, 2, &mi) || !kiln_parse_digits(s + 17, 2, &sec))
                return false;
        if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 59)
                return false;
        if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
                return false;
        if (s[i] == '.' || s[i] == ',') {
                size_t k = ++i;
                while (i < n && s[i] >= '0' && s[i] <= '9')
                        i++;
                if (i == k)
                        return false;
        }
        if (i < n && s[i] == 'Z' && i + 1 == n) {
        } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
                sign = s[i] == '-' ? -1 : 1;
                if (!kiln_parse_digits(s + i + 1, 2, &oh) ||
                    !kiln_parse_digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
                        return false;
        } else
                return false;
        *ret = kiln_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
               sign * (oh * 3600 + om * 60);
        return true;
}

static const char *const ERR_NO_TOKEN = "authorization server did not include a token in the "
                                        "response";

void kiln_registry_token_release(struct kiln_registry_token *t)
{
        free_secret(t->token);
        free_secret(t->refresh_token);
        *t = (struct kiln_registry_token){ 0 };
}

int kiln_registry_token_response_parse(const char *body, size_t len,
                                       enum kiln_registry_token_kind kind,
                                       struct kiln_registry_token *ret, struct kiln_error **err)
{
        _cleanup_(kiln_registry_token_release) struct kiln_registry_token t = { 0 };
        _cleanup_(free_secretp) char *token = NULL, *access = NULL;
        json_t *root, *v;
        json_error_t je;
        const char *key;

        if (len > KILN_LIMIT_REGISTRY_TOKEN_RESPONSE)
                return kiln_error_set(err, -E2BIG, "token response larger than %u bytes",
                                      KILN_LIMIT_REGISTRY_TOKEN_RESPONSE);
        root = json_loadb(body, len, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        if (!root)
                /* je.text can quote the body, which holds secrets: position only. */
                return kiln_error_set(err, -EBADMSG,
                                      "unable to decode token response: invalid JSON at line %d "
                                      "column %d",
                                      je.line, je.column);
        if (json_is_null(root)) {
                json_decref(root);
                return kiln_error_set(err, -EBADMSG, "%s", ERR_NO_TOKEN);
        }
        if (!json_is_object(root)) {
                json_decref(root);
                return kiln_error_set(err, -EBADMSG,
                                      "unable to decode token response: not a JSON object");
        }

        /* encoding/json: keys case-insensitively, a later one wins. */
        json_object_foreach (root, key, v) {
                char **field = NULL;
                const char *name = NULL;

                if (ascii_strcaseeq(key, "token"))
                        field = &token, name = "token";
                else if (ascii_strcaseeq(key, "access_token"))
                        field = &access, name = "access_token";
                else if (ascii_strcaseeq(key, "refresh_token"))
                        field = &t.refresh_token, name = "refresh_token";
                if (field) {
                        if (json_is_null(v))
                                continue;
                        if (!json_is_string(v)) {
                                json_decref(root);
                                return kiln_error_set(err, -EBADMSG,
                                                      "unable to decode token response: %s is "
                                                      "not a string",
                                                      name);
                        }
                        free_secret(*field);
                        *field = kiln_xstrdup(json_string_value(v));
                } else if (ascii_strcaseeq(key, "expires_in")) {
                        if (json_is_null(v))
                                continue;
                        if (!json_is_integer(v)) {
                                json_decref(root);
                                return kiln_error_set(err, -EBADMSG,
                                                      "unable to decode token response: "
                                                      "expires_in is not an integer");
                        }
                        t.expires_in = (int64_t) json_integer_value(v);
                } else if (ascii_strcaseeq(key, "issued_at")) {
                        if (json_is_null(v))
                                continue;
                        if (!json_is_string(v) ||
                            !parse_rfc3339(json_string_value(v), &t.issued_at)) {
                                json_decref(root);
                                return kiln_error_set(err, -EBADMSG,
                                                      "unable to decode token response: "
                                                      "issued_at is not an RFC 3339 time");
                        }
                }
        }
        json_decref(root);

        if (kind == KILN_REGISTRY_TOKEN_GET && access && *access)
                t.token = TAKE_PTR(access);
        else if (kind == KILN_REGISTRY_TOKEN_GET)
                t.token = TAKE_PTR(token);
        else
                t.token = TAKE_PTR(access);
        if (!t.token || !*t.token)
                return kiln_error_set(err, -EBADMSG, "%s", ERR_NO_TOKEN);
        if (t.expires_in == 0)
                t.expires_in = 60; /* buildkitd's defaultExpiration */
        *ret = t;
        t = (struct kiln_registry_token){ 0 };
        return 0;
}

int64_t kiln_registry_token_expiry(const struct kiln_registry_token *t, int64_t now)
{
        int64_t issued = t->issued_at != 0 ? t->issued_at : now;

        /* time.Duration(float64(expires)*0.9) * time.Second */
        return issued + (int64_t) ((double) t->expires_in * 0.9);
}
