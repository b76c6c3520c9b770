/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buildkitd's authFetcher.scopedTokens with its flightcontrol group: one
 * token per (host, scope key), one fetch at a time per key.
 *
 * Lock: c->lock guards c->entries and every field of every entry and
 * flight. A fetch runs unlocked; its flight outlives it while waiters hold
 * references, so a waiter woken late still reads the result it waited for.
 */
#include <string.h>
#include <time.h>

#include "auth.h"
#include "registry-internal.h"
#include "registry-limits.h"

struct flight {
        pthread_cond_t done_cond;
        unsigned refs;
        bool done;
        int code;      /* the fetch's return */
        char *message; /* its error message, when code < 0 */
        char *token;   /* its token, when code >= 0 */
};

struct entry {
        char *host;
        char *scope;
        char *token; /* NULL: none kept */
        int64_t expiry;
        struct flight *flight; /* non-NULL while a fetch for this key runs */
};

struct kiln_registry_token_cache {
        pthread_mutex_t lock;
        struct entry **entries;
        size_t n;
        int64_t (*now)(void *userdata);
        void *now_userdata;
};

static int64_t realtime_now(void *userdata)
{
        struct timespec ts;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec;
}

struct kiln_registry_token_cache *kiln_registry_token_cache_new(void)
{
        struct kiln_registry_token_cache *c = kiln_xcalloc(1, sizeof(*c));

        pthread_mutex_init(&c->lock, NULL);
        c->now = realtime_now;
        return c;
}

static void entry_free(struct entry *e)
{
        free(e->host);
        free(e->scope);
        free_secret(e->token);
        free(e);
}

static void flight_unref(struct flight *f)
{
        if (--f->refs > 0)
                return;
        pthread_cond_destroy(&f->done_cond);
        free(f->message);
        free_secret(f->token);
        free(f);
}

struct kiln_registry_token_cache *
kiln_registry_token_cache_free(struct kiln_registry_token_cache *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n; i++)
                entry_free(c->entries[i]);
        free(c->entries);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

void kiln_registry_token_cache_set_clock(struct kiln_registry_token_cache *c,
                                         int64_t (*now)(void *userdata), void *userdata)
{
        c->now = now ? now : realtime_now;
        c->now_userdata = userdata;
}

static struct entry *find(struct kiln_registry_token_cache *c, const char *host, const char *scope)
{
        for (size_t i = 0; i < c->n; i++)
                if (streq(c->entries[i]->host, host) && streq(c->entries[i]->scope, scope))
                        return c->entries[i];
        return NULL;
}

static void remove_at(struct kiln_registry_token_cache *c, size_t i)
{
        entry_free(c->entries[i]);
        c->entries[i] = c->entries[--c->n];
}

/* Makes room for one more entry: drops idle entries with no valid token,
 * then, if still full, the idle one that expires first. Entries with a
 * flight are never dropped (their fetcher holds them). */
static void make_room(struct kiln_registry_token_cache *c, int64_t now)
{
        size_t victim = SIZE_MAX;

        if (c->n < KILN_LIMIT_REGISTRY_TOKEN_CACHE)
                return;
        for (size_t i = 0; i < c->n;) {
                struct entry *e = c->entries[i];

                if (!e->flight && (!e->token || e->expiry <= now))
                        remove_at(c, i);
                else
                        i++;
        }
        if (c->n < KILN_LIMIT_REGISTRY_TOKEN_CACHE)
                return;
        for (size_t i = 0; i < c->n; i++)
                if (!c->entries[i]->flight &&
                    (victim == SIZE_MAX || c->entries[i]->expiry < c->entries[victim]->expiry))
                        victim = i;
        if (victim != SIZE_MAX)
                remove_at(c, victim);
}

/* Waits (c->lock held) for f and hands out its result. */
static int wait_flight(struct kiln_registry_token_cache *c, struct flight *f, char **ret_token,
                       struct kiln_error **err)
{
        int r;

        f->refs++;
        while (!f->done)
                pthread_cond_wait(&f->done_cond, &c->lock);
        if (f->code < 0)
                r = kiln_error_set(err, f->code, "%s", f->message);
        else {
                *ret_token = kiln_xstrdup(f->token);
                r = 1;
        }
        flight_unref(f);
        return r;
}

int kiln_registry_token_cache_get(struct kiln_registry_token_cache *c, const char *host,
                                  const char *scope, kiln_registry_token_fetch_fn fetch,
                                  void *userdata, char **ret_token, struct kiln_error **err)
{
        struct kiln_registry_token tok = { 0 };
        struct flight *f;
        struct entry *e;
        int64_t now;
        int r;

        pthread_mutex_lock(&c->lock);
        now = c->now(c->now_userdata);
        e = find(c, host, scope);
        if (e && e->token && e->expiry > now) {
                *ret_token = kiln_xstrdup(e->token);
                pthread_mutex_unlock(&c->lock);
                return 1;
        }
        if (e && e->flight) {
                r = wait_flight(c, e->flight, ret_token, err);
                pthread_mutex_unlock(&c->lock);
                return r;
        }
        if (!e) {
                make_room(c, now);
                e = kiln_xcalloc(1, sizeof(*e));
                e->host = kiln_xstrdup(host);
                e->scope = kiln_xstrdup(scope);
                c->entries = kiln_xreallocarray(c->entries, c->n + 1, sizeof(*c->entries));
                c->entries[c->n++] = e;
        }
        f = kiln_xcalloc(1, sizeof(*f));
        pthread_cond_init(&f->done_cond, NULL);
        f->refs = 1;
        e->flight = f;
        pthread_mutex_unlock(&c->lock);

        r = fetch(userdata, &tok, err);

        pthread_mutex_lock(&c->lock);
        now = c->now(c->now_userdata);
        /* e is still in the table: entries with a flight are never removed. */
        if (r >= 0 && tok.token) {
                int64_t expiry = kiln_registry_token_expiry(&tok, now);

                f->code = 0;
                f->token = kiln_xstrdup(tok.token);
                free_secret(e->token);
                e->token = NULL;
                if (expiry > now) {
                        e->token = kiln_xstrdup(tok.token);
                        e->expiry = expiry;
                }
        } else {
                if (r >= 0) /* a fetch that "succeeded" without a token */
                        r = kiln_error_set(err, -EBADMSG, "token fetch returned no token");
                f->code = r;
                f->message = kiln_xstrdup(kiln_error_message(err ? *err : NULL));
        }
        f->done = true;
        e->flight = NULL;
        pthread_cond_broadcast(&f->done_cond);
        if (r >= 0)
                *ret_token = kiln_xstrdup(f->token);
        flight_unref(f);
        if (!e->token) {
                for (size_t i = 0; i < c->n; i++)
                        if (c->entries[i] == e) {
                                remove_at(c, i);
                                break;
                        }
        }
        pthread_mutex_unlock(&c->lock);
        kiln_registry_token_release(&tok);
        return r < 0 ? r : 0;
}

void kiln_registry_token_cache_invalidate(struct kiln_registry_token_cache *c, const char *host,
                                          const char *scope)
{
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->n;) {
                struct entry *e = c->entries[i];

                if (!streq(e->host, host) || (scope && !streq(e->scope, scope))) {
                        i++;
                        continue;
                }
                free_secret(e->token);
                e->token = NULL;
                if (!e->flight)
                        remove_at(c, i);
                else
                        i++;
        }
        pthread_mutex_unlock(&c->lock);
}
