/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token cache: expiry at 0.9 of the lifetime, keys per host and scope,
 * and one fetch per key however many threads ask at once.
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "kiln-test.h"
#include "registry/auth.h"

struct fake {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int calls;          /* fetches made */
        int arrived;        /* threads about to call get */
        int wait_for;       /* a fetch waits until this many arrived */
        int fail;           /* fetch returns this (negative) */
        int64_t expires_in; /* token lifetime */
        int64_t issued_at;
        const char *token;
        int64_t clock;
};

#define FAKE_INIT                                                                    \
        {                                                                            \
                .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, \
                .expires_in = 60, .token = "tok", .clock = 1000                      \
        }

static int64_t fake_now(void *userdata)
{
        struct fake *f = userdata;
        int64_t now;

        pthread_mutex_lock(&f->lock);
        now = f->clock;
        pthread_mutex_unlock(&f->lock);
        return now;
}

static void sleep_ms(long ms)
{
        (void) nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000 }, NULL);
}

static int fake_fetch(void *userdata, struct kiln_registry_token *ret, struct kiln_error **err)
{
        struct fake *f = userdata;
        int fail, calls;

        pthread_mutex_lock(&f->lock);
        calls = ++f->calls;
        while (f->arrived < f->wait_for)
                pthread_cond_wait(&f->cond, &f->lock);
        fail = f->fail;
        pthread_mutex_unlock(&f->lock);
        if (f->wait_for > 0)
                sleep_ms(100); /* let the last arrivals reach the cache and wait */
        if (fail < 0)
                return kiln_error_set(err, fail, "token server said no (call %d)", calls);
        *ret = (struct kiln_registry_token){
                .token = kiln_xasprintf("%s-%d", f->token, calls),
                .expires_in = f->expires_in,
                .issued_at = f->issued_at,
        };
        return 0;
}

static int get(struct kiln_registry_token_cache *c, struct fake *f, const char *host,
               const char *scope, char **ret)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = kiln_registry_token_cache_get(c, host, scope, fake_fetch, f, ret, &err);

        if (r < 0)
                printf("# %s\n", kiln_error_message(err));
        return r;
}

TEST(cache_hit_and_expiry_at_nine_tenths)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        struct fake f = FAKE_INIT;
        char *t = NULL;

        kiln_registry_token_cache_set_clock(c, fake_now, &f);
        ASSERT_EQ_INT(get(c, &f, "h", "repository:a:pull", &t), 0);
        ASSERT_STREQ(t, "tok-1");
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h", "repository:a:pull", &t), 1);
        ASSERT_STREQ(t, "tok-1");
        free(t);
        f.clock = 1000 + 53; /* 0.9 * 60 = 54 */
        ASSERT_EQ_INT(get(c, &f, "h", "repository:a:pull", &t), 1);
        free(t);
        f.clock = 1000 + 54;
        ASSERT_EQ_INT(get(c, &f, "h", "repository:a:pull", &t), 0);
        ASSERT_STREQ(t, "tok-2");
        free(t);
        ASSERT_EQ_INT(f.calls, 2);
        return 0;
}

TEST(cache_uses_issued_at)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        struct fake f = FAKE_INIT;
        char *t = NULL;

        kiln_registry_token_cache_set_clock(c, fake_now, &f);
        f.issued_at = 990;
        f.expires_in = 100; /* valid until 990 + 90 */
        ASSERT_EQ_INT(get(c, &f, "h", "s", &t), 0);
        free(t);
        f.clock = 1079;
        ASSERT_EQ_INT(get(c, &f, "h", "s", &t), 1);
        free(t);
        f.clock = 1080;
        ASSERT_EQ_INT(get(c, &f, "h", "s", &t), 0);
        free(t);

        /* issued long ago: handed out, never kept */
        f.issued_at = 1;
        ASSERT_EQ_INT(get(c, &f, "h", "old", &t), 0);
        ASSERT_STREQ(t, "tok-3");
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h", "old", &t), 0);
        ASSERT_STREQ(t, "tok-4");
        free(t);
        return 0;
}

TEST(cache_keys_and_invalidate)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        struct fake f = FAKE_INIT;
        char *t = NULL;

        kiln_registry_token_cache_set_clock(c, fake_now, &f);
        ASSERT_EQ_INT(get(c, &f, "h1", "s1", &t), 0);
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h1", "s2", &t), 0);
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h2", "s1", &t), 0);
        free(t);
        ASSERT_EQ_INT(f.calls, 3);
        kiln_registry_token_cache_invalidate(c, "h1", "s1");
        ASSERT_EQ_INT(get(c, &f, "h1", "s1", &t), 0);
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h1", "s2", &t), 1);
        free(t);
        kiln_registry_token_cache_invalidate(c, "h1", NULL);
        ASSERT_EQ_INT(get(c, &f, "h1", "s2", &t), 0);
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h2", "s1", &t), 1);
        free(t);
        ASSERT_EQ_INT(f.calls, 5);
        return 0;
}

TEST(cache_errors_not_cached)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct fake f = FAKE_INIT;
        char *t = NULL;

        f.fail = -EACCES;
        ASSERT_EQ_INT(kiln_registry_token_cache_get(c, "h", "s", fake_fetch, &f, &t, &err),
                      -EACCES);
        ASSERT_STREQ(kiln_error_message(err), "token server said no (call 1)");
        f.fail = 0;
        ASSERT_EQ_INT(get(c, &f, "h", "s", &t), 0);
        ASSERT_STREQ(t, "tok-2");
        free(t);
        return 0;
}

struct worker {
        pthread_t thread;
        struct kiln_registry_token_cache *cache;
        struct fake *fake;
        const char *scope;
        int r;
        char *token;
        char *error;
};

static void *run_worker(void *p)
{
        struct worker *w = p;
        struct kiln_error *err = NULL;

        pthread_mutex_lock(&w->fake->lock);
        w->fake->arrived++;
        pthread_cond_broadcast(&w->fake->cond);
        pthread_mutex_unlock(&w->fake->lock);
        w->r = kiln_registry_token_cache_get(w->cache, "registry.example", w->scope, fake_fetch,
                                             w->fake, &w->token, &err);
        if (w->r < 0)
                w->error = kiln_xstrdup(kiln_error_message(err));
        kiln_error_free(err);
        return NULL;
}

#define N_THREADS 16

TEST(cache_single_flight_with_threads)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        struct fake f = FAKE_INIT;
        struct worker w[N_THREADS];
        int fetched = 0;

        f.wait_for = N_THREADS;
        for (int i = 0; i < N_THREADS; i++) {
                w[i] = (struct worker){ .cache = c, .fake = &f, .scope = "repository:x:pull" };
                ASSERT_OK(-pthread_create(&w[i].thread, NULL, run_worker, &w[i]));
        }
        for (int i = 0; i < N_THREADS; i++)
                pthread_join(w[i].thread, NULL);
        ASSERT_EQ_INT(f.calls, 1);
        for (int i = 0; i < N_THREADS; i++) {
                ASSERT_TRUE(w[i].r >= 0);
                fetched += w[i].r == 0;
                ASSERT_STREQ(w[i].token, "tok-1");
                free(w[i].token);
        }
        ASSERT_EQ_INT(fetched, 1);
        return 0;
}

TEST(cache_single_flight_shares_the_error)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        struct fake f = FAKE_INIT;
        struct worker w[N_THREADS];

        f.wait_for = N_THREADS;
        f.fail = -ECONNREFUSED;
        for (int i = 0; i < N_THREADS; i++) {
                w[i] = (struct worker){ .cache = c, .fake = &f, .scope = "s" };
                ASSERT_OK(-pthread_create(&w[i].thread, NULL, run_worker, &w[i]));
        }
        for (int i = 0; i < N_THREADS; i++)
                pthread_join(w[i].thread, NULL);
        ASSERT_EQ_INT(f.calls, 1);
        for (int i = 0; i < N_THREADS; i++) {
                ASSERT_EQ_INT(w[i].r, -ECONNREFUSED);
                ASSERT_STREQ(w[i].error, "token server said no (call 1)");
                free(w[i].error);
        }
        return 0;
}

/* Fetches for two keys run at once: the first waits for the second. */
struct pair {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool b_started;
        bool timed_out;
};

static int fetch_a(void *userdata, struct kiln_registry_token *ret, struct kiln_error **err)
{
        struct pair *p = userdata;
        struct timespec deadline;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 5;
        pthread_mutex_lock(&p->lock);
        while (!p->b_started && !p->timed_out)
                if (pthread_cond_timedwait(&p->cond, &p->lock, &deadline) != 0)
                        p->timed_out = true;
        pthread_mutex_unlock(&p->lock);
        *ret = (struct kiln_registry_token){ .token = kiln_xstrdup("a"), .expires_in = 60 };
        return 0;
}

static int fetch_b(void *userdata, struct kiln_registry_token *ret, struct kiln_error **err)
{
        struct pair *p = userdata;

        pthread_mutex_lock(&p->lock);
        p->b_started = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        *ret = (struct kiln_registry_token){ .token = kiln_xstrdup("b"), .expires_in = 60 };
        return 0;
}

struct pair_worker {
        pthread_t thread;
        struct kiln_registry_token_cache *cache;
        struct pair *pair;
        char *token;
};

static void *run_a(void *q)
{
        struct pair_worker *w = q;
        struct kiln_error *err = NULL;

        (void) kiln_registry_token_cache_get(w->cache, "h", "a", fetch_a, w->pair, &w->token, &err);
        kiln_error_free(err);
        return NULL;
}

TEST(cache_different_keys_fetch_in_parallel)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct pair p = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };
        struct pair_worker a = { .cache = c, .pair = &p };
        _cleanup_free_ char *tb = NULL;

        ASSERT_OK(-pthread_create(&a.thread, NULL, run_a, &a));
        sleep_ms(50); /* a's fetch is running (and waiting for b) */
        ASSERT_OK(kiln_registry_token_cache_get(c, "h", "b", fetch_b, &p, &tb, &err));
        pthread_join(a.thread, NULL);
        ASSERT_TRUE(!p.timed_out);
        ASSERT_STREQ(a.token, "a");
        ASSERT_STREQ(tb, "b");
        free(a.token);
        return 0;
}

TEST(cache_is_bounded)
{
        _cleanup_(kiln_registry_token_cache_freep) struct kiln_registry_token_cache *c =
                kiln_registry_token_cache_new();
        struct fake f = FAKE_INIT;
        char *t = NULL;

        kiln_registry_token_cache_set_clock(c, fake_now, &f);
        for (int i = 0; i < 1100; i++) {
                _cleanup_free_ char *scope = kiln_xasprintf("repository:r%d:pull", i);

                f.expires_in = 1000 + i; /* the first ones expire first */
                ASSERT_EQ_INT(get(c, &f, "h", scope, &t), 0);
                free(t);
        }
        /* the newest is kept, the oldest was dropped to make room */
        ASSERT_EQ_INT(get(c, &f, "h", "repository:r1099:pull", &t), 1);
        free(t);
        ASSERT_EQ_INT(get(c, &f, "h", "repository:r0:pull", &t), 0);
        free(t);
        return 0;
}
