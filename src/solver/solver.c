/* SPDX-License-Identifier: Apache-2.0 */
#include "solver/solver.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/pattern.h"
#include "base/macro.h"
#include "base/sha256.h"
#include "snapshot/snapshot.h"
#include "solver/solver-internal.h"
#include "source/image.h"
#include "source/local.h"

/* ---- small helpers ---- */

int64_t kiln_solver_now(void)
{
        return kiln_realtime_ns();
}

static void deadline_in(struct timespec *ts, long ms)
{
        clock_gettime(CLOCK_REALTIME, ts);
        ts->tv_nsec += ms * 1000000L;
        while (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

bool kiln_solver_cancelled(struct kiln_solver_solve *sv)
{
        if (atomic_load(&sv->cancel))
                return true;
        if (sv->b->cancel && atomic_load(sv->b->cancel)) {
                atomic_store(&sv->cancel, true);
                return true;
        }
        return false;
}

struct kiln_solver_node *kiln_solver_ref_node(struct kiln_solver_solve *sv, struct kiln_llb_ref ref)
{
        if (!ref.op)
                return NULL;
        for (size_t i = 0; i < sv->n; i++)
                if (sv->nodes[i].op == ref.op)
                        return &sv->nodes[i];
        return NULL;
}

/* ---- the max-parallelism semaphore ---- */

int kiln_solver_sem_acquire(struct kiln_solver_solve *sv)
{
        struct kiln_solver *s = sv->s;
        if (s->max_parallelism == 0)
                return kiln_solver_cancelled(sv) ? -ECANCELED : 0;
        pthread_mutex_lock(&s->lock);
        while (s->sem_used >= s->max_parallelism) {
                if (kiln_solver_cancelled(sv)) {
                        pthread_mutex_unlock(&s->lock);
                        return -ECANCELED;
                }
                struct timespec ts;
                deadline_in(&ts, KILN_SOLVER_CANCEL_POLL_MS);
                pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
        s->sem_used++;
        pthread_mutex_unlock(&s->lock);
        if (kiln_solver_cancelled(sv)) {
                kiln_solver_sem_release(sv);
                return -ECANCELED;
        }
        return 0;
}

void kiln_solver_sem_release(struct kiln_solver_solve *sv)
{
        struct kiln_solver *s = sv->s;
        if (s->max_parallelism == 0)
                return;
        pthread_mutex_lock(&s->lock);
        s->sem_used--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* ---- events ---- */

/* Called with event_lock held. */
static void send_vertex_locked(struct kiln_solver_solve *sv, struct kiln_solver_node *n)
{
        if (!sv->b->on_event)
                return;
        struct kiln_solver_event e = { .type = KILN_SOLVER_EVENT_VERTEX };
        e.vertex = (struct kiln_solver_vertex){
                .digest = n->op->digest,
                .name = n->name,
                .inputs = n->dep_digests,
                .n_inputs = n->n_deps,
                .started = n->started,
                .completed = n->completed,
                .cached = n->cached,
                .error = n->error,
        };
        sv->b->on_event(sv->b->userdata, &e);
}

void kiln_solver_vertex_started(struct kiln_solver_solve *sv, struct kiln_solver_node *n)
{
        pthread_mutex_lock(&sv->event_lock);
        if (n->started == 0) {
                n->started = kiln_solver_now();
                send_vertex_locked(sv, n);
        }
        pthread_mutex_unlock(&sv->event_lock);
}

void kiln_solver_vertex_finished(struct kiln_solver_solve *sv, struct kiln_solver_node *n)
{
        pthread_mutex_lock(&sv->event_lock);
        n->finished = kiln_solver_now();
        pthread_mutex_unlock(&sv->event_lock);
}

static void vertex_completed(struct kiln_solver_solve *sv, struct kiln_solver_node *n, bool cached,
                             const char *error)
{
        pthread_mutex_lock(&sv->event_lock);
        int64_t now = n->finished && !cached ? n->finished : kiln_solver_now();
        if (n->started == 0)
                n->started = now;
        n->completed = now;
        n->cached = cached;
        free(n->error);
        n->error = error ? kiln_xstrdup(error) : NULL;
        send_vertex_locked(sv, n);
        pthread_mutex_unlock(&sv->event_lock);
}

void kiln_solver_emit_log(struct kiln_solver_solve *sv, struct kiln_solver_node *n, int stream,
                          const void *data, size_t len)
{
        if (!sv->b->on_event || len == 0)
                return;
        struct kiln_solver_event e = { .type = KILN_SOLVER_EVENT_LOG };
        e.log = (struct kiln_solver_log){
                .vertex = n->op->digest,
                .stream = stream,
                .data = data,
                .len = len,
                .timestamp = kiln_solver_now(),
        };
        pthread_mutex_lock(&sv->event_lock);
        sv->b->on_event(sv->b->userdata, &e);
        pthread_mutex_unlock(&sv->event_lock);
}

void kiln_solver_emit_status(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                             const struct kiln_solver_status *st)
{
        if (!sv->b->on_event)
                return;
        struct kiln_solver_event e = { .type = KILN_SOLVER_EVENT_STATUS };
        e.status = *st;
        e.status.vertex = n->op->digest;
        pthread_mutex_lock(&sv->event_lock);
        sv->b->on_event(sv->b->userdata, &e);
        pthread_mutex_unlock(&sv->event_lock);
}

/* ---- solver ---- */

int kiln_solver_new(const struct kiln_solver_config *c, struct kiln_solver **ret,
                    struct kiln_error **err)
{
        if (!c->root || !c->snapshots)
                return kiln_error_set(err, -EINVAL, "solver: root and snapshot store are required");
        _cleanup_(kiln_solver_freep) struct kiln_solver *s = kiln_xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        s->root = kiln_xstrdup(c->root);
        s->exec_dir = kiln_xasprintf("%s/exec", c->root);
        s->cachemount_dir = kiln_xasprintf("%s/cachemounts", c->root);
        s->git_dir = kiln_xasprintf("%s/git", c->root);
        s->runtime_binary = kiln_xstrdup(c->runtime_binary ? c->runtime_binary : "runc");
        s->resolv_conf = c->resolv_conf ? kiln_xstrdup(c->resolv_conf) : NULL;
        s->store = c->store;
        s->client = c->client;
        s->snapshots = c->snapshots;
        s->max_parallelism = c->max_parallelism;
        s->default_network = c->default_network;
        s->cni = c->cni;

        const char *dirs[] = { s->root, s->exec_dir, s->cachemount_dir };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                int r = kiln_mkdir_p(dirs[i], 0700);
                if (r < 0)
                        return kiln_error_set(err, r, "create '%s': %s", dirs[i], strerror(-r));
        }
        kiln_solver_cleanup_exec_dir(s);

        _cleanup_free_ char *db = kiln_xasprintf("%s/meta.db", c->root);
        int r = kiln_solver_cache_open(db, &s->cache, err);
        if (r < 0)
                return r;
        if (s->store) {
                r = kiln_source_image_unpacker_new(s->store, s->snapshots, s->exec_dir,
                                                   &s->unpacker, err);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

struct kiln_solver *kiln_solver_free(struct kiln_solver *s)
{
        if (!s)
                return NULL;
        kiln_source_image_unpacker_free(s->unpacker);
        kiln_solver_cache_close(s->cache);
        while (s->cachemounts) {
                struct kiln_solver_cachemount *m = s->cachemounts;
                s->cachemounts = m->next;
                free(m->path);
                free(m);
        }
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s->root);
        free(s->exec_dir);
        free(s->cachemount_dir);
        free(s->git_dir);
        free(s->runtime_binary);
        free(s->resolv_conf);
        free(s);
        return NULL;
}

void kiln_solver_result_release(struct kiln_solver_result *r)
{
        if (!r)
                return;
        free(r->snapshot_id);
        free(r->failed_vertex);
        free(r->failed_name);
        *r = (struct kiln_solver_result){ 0 };
}

/* ---- graph ---- */

static void node_add_dep(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                         struct kiln_llb_ref ref)
{
        struct kiln_solver_node *d = kiln_solver_ref_node(sv, ref);
        if (!d)
                return;
        for (size_t i = 0; i < n->n_deps; i++)
                if (n->deps[i] == d->index)
                        return;
        n->deps = kiln_xreallocarray(n->deps, n->n_deps + 1, sizeof(*n->deps));
        n->dep_digests = kiln_xreallocarray(n->dep_digests, n->n_deps + 1, sizeof(*n->dep_digests));
        n->deps[n->n_deps] = d->index;
        n->dep_digests[n->n_deps] = d->op->digest;
        n->n_deps++;
}

static char *default_name(const struct kiln_llb_op *op)
{
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                switch (op->source.type) {
                case KILN_LLB_SOURCE_IMAGE:
                        return kiln_xasprintf("docker-image://%s", op->source.image.ref);
                case KILN_LLB_SOURCE_LOCAL:
                        return kiln_xasprintf("local://%s", op->source.local.name);
                case KILN_LLB_SOURCE_HTTP:
                        return kiln_xstrdup(op->source.http.url);
                case KILN_LLB_SOURCE_GIT:
                        return kiln_source_git_redact(op->source.git.remote);
                }
                break;
        case KILN_LLB_OP_EXEC: {
                struct kiln_buf b = KILN_BUF_INIT(4096);
                for (size_t i = 0; i < op->exec.args.n; i++)
                        (void) kiln_buf_printf(&b, "%s%s", i ? " " : "", op->exec.args.v[i]);
                return kiln_buf_steal(&b);
        }
        case KILN_LLB_OP_FILE:
                return kiln_xstrdup("file");
        case KILN_LLB_OP_MERGE:
                return kiln_xstrdup("merge");
        case KILN_LLB_OP_DIFF:
                return kiln_xstrdup("diff");
        }
        return kiln_xstrdup(op->digest);
}

static void build_nodes(struct kiln_solver_solve *sv)
{
        const struct kiln_llb_def *def = sv->b->def;
        sv->n = kiln_llb_def_n_ops(def);
        sv->nodes = kiln_xcalloc(sv->n ? sv->n : 1, sizeof(*sv->nodes));
        for (size_t i = 0; i < sv->n; i++) {
                struct kiln_solver_node *n = &sv->nodes[i];
                n->op = kiln_llb_def_op(def, i);
                n->index = i;
                n->n_outputs = kiln_llb_op_n_outputs(n->op);
                n->outputs = kiln_xcalloc(n->n_outputs ? n->n_outputs : 1, sizeof(char *));
                const char *cn = kiln_llb_strmap_get(&n->op->meta.description, "llb.customname");
                n->name = cn ? kiln_xstrdup(cn) : default_name(n->op);
        }
        for (size_t i = 0; i < sv->n; i++) {
                struct kiln_solver_node *n = &sv->nodes[i];
                const struct kiln_llb_op *op = n->op;
                switch (op->type) {
                case KILN_LLB_OP_SOURCE:
                        break;
                case KILN_LLB_OP_EXEC:
                        for (size_t j = 0; j < op->exec.n_mounts; j++)
                                node_add_dep(sv, n, op->exec.mounts[j].input);
                        break;
                case KILN_LLB_OP_FILE:
                        node_add_dep(sv, n, op->file.base);
                        for (size_t j = 0; j < op->file.n_actions; j++)
                                if (op->file.actions[j].type == KILN_LLB_FILE_COPY)
                                        node_add_dep(sv, n, op->file.actions[j].copy.src);
                        break;
                case KILN_LLB_OP_MERGE:
                        for (size_t j = 0; j < op->merge.n_inputs; j++)
                                node_add_dep(sv, n, op->merge.inputs[j]);
                        break;
                case KILN_LLB_OP_DIFF:
                        node_add_dep(sv, n, op->diff.lower);
                        node_add_dep(sv, n, op->diff.upper);
                        break;
                }
        }
        /* ops are in dependency order: walk back from the output */
        struct kiln_solver_node *out = kiln_solver_ref_node(sv, kiln_llb_def_output(def));
        if (out)
                out->needed = true;
        for (size_t i = sv->n; i-- > 0;)
                if (sv->nodes[i].needed)
                        for (size_t j = 0; j < sv->nodes[i].n_deps; j++)
                                sv->nodes[sv->nodes[i].deps[j]].needed = true;
}

static void release_nodes(struct kiln_solver_solve *sv)
{
        for (size_t i = 0; i < sv->n; i++) {
                struct kiln_solver_node *n = &sv->nodes[i];
                for (uint32_t j = 0; j < n->n_outputs; j++)
                        if (n->outputs[j]) {
                                kiln_snapshot_release(sv->s->snapshots, n->outputs[j]);
                                free(n->outputs[j]);
                        }
                free(n->outputs);
                free(n->deps);
                free(n->dep_digests);
                free(n->name);
                free(n->error);
                free(n->content_digest);
                kiln_source_git_resolved_release(&n->git);
        }
        free(sv->nodes);
}

/* ---- cache keys ---- */

static const char *op_kind(const struct kiln_llb_op *op)
{
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                switch (op->source.type) {
                case KILN_LLB_SOURCE_IMAGE:
                        return "source.image";
                case KILN_LLB_SOURCE_LOCAL:
                        return "source.local";
                case KILN_LLB_SOURCE_HTTP:
                        return "source.http";
                case KILN_LLB_SOURCE_GIT:
                        return "source.git";
                }
                break;
        case KILN_LLB_OP_EXEC:
                return "exec";
        case KILN_LLB_OP_FILE:
                return "file";
        case KILN_LLB_OP_MERGE:
                return "merge";
        case KILN_LLB_OP_DIFF:
                return "diff";
        }
        return "unknown";
}

static void key_put(struct kiln_sha256 *h, const char *s)
{
        kiln_sha256_update(h, s, strlen(s) + 1); /* with the NUL: unambiguous */
}

/* An input slot: the input's key and output, or for a local source read
 * through a selection, the checksum of just that selection. */
static int key_input(struct kiln_solver_solve *sv, struct kiln_sha256 *h, const char *slot,
                     struct kiln_llb_ref ref, const char *path, bool wildcard, bool follow,
                     const struct kiln_llb_strv *include, const struct kiln_llb_strv *exclude,
                     struct kiln_error **err)
{
        struct kiln_solver_node *d = kiln_solver_ref_node(sv, ref);
        if (!d)
                return 0;
        key_put(h, slot);
        if (d->local && path) {
                char sum[KILN_SOURCE_LOCAL_DIGEST_LEN];
                int r = kiln_source_local_checksum(
                        d->local, path, wildcard, follow,
                        include ? (const char *const *) include->v : NULL, include ? include->n : 0,
                        exclude ? (const char *const *) exclude->v : NULL, exclude ? exclude->n : 0,
                        sum, err);
                if (r < 0)
                        return kiln_error_wrap(err,
                                               "failed to compute cache key: failed to calculate "
                                               "checksum of ref %.12s::%s",
                                               d->key + 7, d->op->source.local.name);
                key_put(h, "local");
                key_put(h, sum);
                return 0;
        }
        char out[16];
        snprintf(out, sizeof(out), "%" PRIu32, ref.output);
        key_put(h, d->key);
        key_put(h, out);
        return 0;
}

static int compute_key(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                       struct kiln_error **err)
{
        const struct kiln_llb_op *op = n->op;
        struct kiln_sha256 *h = kiln_sha256_new();
        if (!h)
                return kiln_error_set(err, -ENOMEM, "compute cache key: out of memory");
        key_put(h, "kiln.cache.v1");
        key_put(h, op->digest);
        int r = 0;
        char slot[32];
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                if (op->source.type == KILN_LLB_SOURCE_LOCAL && n->local)
                        key_put(h, kiln_source_local_digest(n->local));
                if (n->content_digest)
                        key_put(h, n->content_digest);
                break;
        case KILN_LLB_OP_EXEC:
                for (size_t i = 0; r >= 0 && i < op->exec.n_mounts; i++) {
                        const struct kiln_llb_mount *m = &op->exec.mounts[i];
                        snprintf(slot, sizeof(slot), "mount%zu", i);
                        bool sel = m->type == KILN_LLB_MOUNT_BIND && i > 0;
                        r = key_input(sv, h, slot, m->input,
                                      sel ? (m->selector ? m->selector : "/") : NULL, false, true,
                                      NULL, NULL, err);
                }
                break;
        case KILN_LLB_OP_FILE:
                r = key_input(sv, h, "base", op->file.base, NULL, false, false, NULL, NULL, err);
                for (size_t i = 0; r >= 0 && i < op->file.n_actions; i++) {
                        const struct kiln_llb_file_action *a = &op->file.actions[i];
                        if (a->type != KILN_LLB_FILE_COPY)
                                continue;
                        snprintf(slot, sizeof(slot), "copy%zu", i);
                        /* As BuildKit: a source path without wildcard
                         * characters must exist ("\"/x\": not found"). */
                        r = key_input(sv, h, slot, a->copy.src, a->copy.src_path,
                                      a->copy.allow_wildcard &&
                                              kiln_pattern_has_wildcards(a->copy.src_path),
                                      a->copy.follow_symlinks, &a->copy.include_patterns,
                                      &a->copy.exclude_patterns, err);
                }
                break;
        case KILN_LLB_OP_MERGE:
                for (size_t i = 0; r >= 0 && i < op->merge.n_inputs; i++) {
                        snprintf(slot, sizeof(slot), "merge%zu", i);
                        r = key_input(sv, h, slot, op->merge.inputs[i], NULL, false, false, NULL,
                                      NULL, err);
                }
                break;
        case KILN_LLB_OP_DIFF:
                r = key_input(sv, h, "lower", op->diff.lower, NULL, false, false, NULL, NULL, err);
                if (r >= 0)
                        r = key_input(sv, h, "upper", op->diff.upper, NULL, false, false, NULL,
                                      NULL, err);
                break;
        }
        if (r >= 0) {
                char hex[KILN_SHA256_HEX_LEN + 1];
                kiln_sha256_final_hex(h, hex);
                snprintf(n->key, sizeof(n->key), "sha256:%s", hex);
        }
        kiln_sha256_free(h);
        return r;
}

/* ---- cache records ---- */

static void release_outputs(struct kiln_solver *s, char **outputs, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++)
                if (outputs[i]) {
                        kiln_snapshot_release(s->snapshots, outputs[i]);
                        free(outputs[i]);
                        outputs[i] = NULL;
                }
}

/* 1 and every output (with a use held) when all are recorded and their
 * snapshots still exist; 0 otherwise. */
static int cache_lookup_outputs(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                                char **outputs, struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        for (uint32_t i = 0; i < n->n_outputs; i++) {
                struct kiln_solver_cache_record rec = { 0 };
                int r = kiln_solver_cache_lookup(s->cache, n->key, i, &rec, err);
                if (r <= 0) {
                        release_outputs(s, outputs, i);
                        return r;
                }
                if (rec.snapshot_id && kiln_snapshot_use(s->snapshots, rec.snapshot_id) < 0) {
                        /* pruned behind the record's back */
                        (void) kiln_solver_cache_remove(s->cache, n->key, i, err);
                        kiln_solver_cache_record_release(&rec);
                        release_outputs(s, outputs, i);
                        return 0;
                }
                outputs[i] = TAKE_PTR(rec.snapshot_id);
                kiln_solver_cache_record_release(&rec);
        }
        (void) kiln_solver_cache_touch(s->cache, n->key, err);
        return 1;
}

static int cache_record_outputs(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                                char **outputs, struct kiln_error **err)
{
        for (uint32_t i = 0; i < n->n_outputs; i++) {
                struct kiln_solver_cache_record rec = {
                        .key = n->key,
                        .output = i,
                        .snapshot_id = outputs[i],
                        .kind = (char *) op_kind(n->op),
                        .description = n->name,
                        .size = -1,
                };
                int r = kiln_solver_cache_insert(sv->s->cache, &rec, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- flights: one run per key across concurrent solves ---- */

static void flight_free(struct kiln_solver_flight *f)
{
        for (uint32_t i = 0; i < f->n_outputs; i++)
                free(f->outputs[i]);
        free(f->outputs);
        free(f->message);
        free(f);
}

/* Called with s->lock held. */
static struct kiln_solver_flight *flight_find(struct kiln_solver *s, const char *key)
{
        for (struct kiln_solver_flight *f = s->flights; f; f = f->next)
                if (streq(f->key, key))
                        return f;
        return NULL;
}

static void flight_unlink(struct kiln_solver *s, struct kiln_solver_flight *f)
{
        for (struct kiln_solver_flight **p = &s->flights; *p; p = &(*p)->next)
                if (*p == f) {
                        *p = f->next;
                        return;
                }
}

/* Waits for another solve's run of the same key. 1: outputs filled (uses
 * held); 0: the owner was cancelled, try again; <0: its error (or ours). */
static int flight_wait(struct kiln_solver_solve *sv, struct kiln_solver_flight *f,
                       struct kiln_solver_node *n, char **outputs, struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        int r;
        /* s->lock held, f->waiters counted us */
        while (!f->done) {
                if (kiln_solver_cancelled(sv)) {
                        r = kiln_error_set(err, -ECANCELED, "context canceled");
                        goto out;
                }
                struct timespec ts;
                deadline_in(&ts, KILN_SOLVER_CANCEL_POLL_MS);
                pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
        if (f->rc == -ECANCELED && !kiln_solver_cancelled(sv))
                r = 0;
        else if (f->rc < 0)
                r = kiln_error_set(err, f->rc, "%s", f->message ? f->message : "failed");
        else {
                r = 1;
                for (uint32_t i = 0; i < n->n_outputs && i < f->n_outputs; i++) {
                        if (!f->outputs[i])
                                continue;
                        if (kiln_snapshot_use(s->snapshots, f->outputs[i]) < 0) {
                                release_outputs(s, outputs, i);
                                r = 0;
                                break;
                        }
                        outputs[i] = kiln_xstrdup(f->outputs[i]);
                }
        }
out:
        if (--f->waiters == 0 && f->done)
                flight_free(f);
        return r;
}

static void flight_finish(struct kiln_solver *s, struct kiln_solver_flight *f, int rc,
                          const struct kiln_error *e, char **outputs, uint32_t n_outputs)
{
        pthread_mutex_lock(&s->lock);
        flight_unlink(s, f);
        f->done = true;
        f->rc = rc;
        if (rc < 0)
                f->message = kiln_xstrdup(kiln_error_message(e));
        else {
                f->n_outputs = n_outputs;
                f->outputs = kiln_xcalloc(n_outputs ? n_outputs : 1, sizeof(char *));
                for (uint32_t i = 0; i < n_outputs; i++)
                        f->outputs[i] = outputs[i] ? kiln_xstrdup(outputs[i]) : NULL;
        }
        if (f->waiters == 0)
                flight_free(f);
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* ---- processing one node ---- */

static struct kiln_source_local_context *local_find(struct kiln_solver_solve *sv, const char *name)
{
        struct kiln_source_local_context *ctx = NULL;
        pthread_mutex_lock(&sv->lock);
        for (size_t i = 0; i < sv->n && !ctx; i++) {
                struct kiln_solver_node *o = &sv->nodes[i];
                if (o->local && o->op->type == KILN_LLB_OP_SOURCE &&
                    o->op->source.type == KILN_LLB_SOURCE_LOCAL &&
                    streq(o->op->source.local.name, name))
                        ctx = o->local;
        }
        pthread_mutex_unlock(&sv->lock);
        return ctx;
}

static int local_context(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                         struct kiln_error **err)
{
        const char *name = n->op->source.local.name;
        if (!sv->b->local)
                return kiln_error_set(err, -ENOENT, "local source '%s': no context given", name);
        /* the callback is called once per name: another node may have it */
        pthread_mutex_lock(&sv->local_lock);
        struct kiln_source_local_context *ctx = local_find(sv, name);
        int r = 0;
        if (!ctx) {
                r = sv->b->local(sv->b->userdata, name, &ctx, err);
                if (r >= 0 && !ctx)
                        r = kiln_error_set(err, -ENOENT, "local source '%s': no context given",
                                           name);
        }
        if (r >= 0) {
                pthread_mutex_lock(&sv->lock);
                n->local = ctx;
                pthread_mutex_unlock(&sv->lock);
        }
        pthread_mutex_unlock(&sv->local_lock);
        return r;
}

/* Unlike BuildKit, waiting for a client's context takes no max-parallelism
 * slot: the daemon's upload handler does the transfer, and a slot held while
 * a slow client sends would stall every other build (with one slot, two
 * builds of one context would wait for each other: the first keeps the
 * context's read lock while the second's upload waits to replace it). */
static int process_local(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                         struct kiln_error **err)
{
        kiln_solver_vertex_started(sv, n);
        int r = local_context(sv, n, err);
        if (r < 0)
                return r;
        return compute_key(sv, n, err);
}

/* An HTTP source without a checksum is downloaded every time, as BuildKit
 * checks the URL every time: its key covers the content, so the steps
 * after it stay cached while the content does not change. */
static int process_http(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                        struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        char *fresh[1] = { NULL };
        int r = kiln_solver_run_op(sv, n, fresh, err);
        if (r < 0)
                return r;
        r = compute_key(sv, n, err);
        if (r < 0)
                goto fail;
        char *cached[1] = { NULL };
        bool use_cache = !sv->b->no_cache && !n->op->meta.ignore_cache;
        r = use_cache ? cache_lookup_outputs(sv, n, cached, err) : 0;
        if (r < 0)
                goto fail;
        if (r > 0) {
                /* the same content as before: keep the recorded snapshot so
                 * that everything after it is cached */
                _cleanup_free_ char *id = TAKE_PTR(fresh[0]);
                struct kiln_error *e = NULL;
                kiln_snapshot_release(s->snapshots, id);
                if (kiln_snapshot_remove(s->snapshots, id, &e) < 0)
                        log_debug("remove snapshot '%s': %s", id, kiln_error_message(e));
                kiln_error_free(e);
                n->outputs[0] = cached[0];
        } else {
                r = cache_record_outputs(sv, n, fresh, err);
                if (r < 0)
                        goto fail;
                n->outputs[0] = fresh[0];
        }
        vertex_completed(sv, n, false, NULL);
        return 0;
fail:
        release_outputs(s, fresh, 1);
        return r;
}

static bool is_image(const struct kiln_llb_op *op)
{
        return op->type == KILN_LLB_OP_SOURCE && op->source.type == KILN_LLB_SOURCE_IMAGE;
}

/* BuildKit resolves an image source to compute its cache key even when
 * every step after it is cached, and shows that ("resolve <ref> done",
 * the step done, not CACHED): kiln's cache hit on an image shows the same. */
static void cached_source_resolved(struct kiln_solver_solve *sv, struct kiln_solver_node *n)
{
        if (!is_image(n->op))
                return;
        _cleanup_free_ char *id = kiln_xasprintf("resolve %s", n->op->source.image.ref);
        int64_t now = kiln_solver_now();
        struct kiln_solver_status st = {
                .id = id,
                .name = id,
                .started = now,
                .completed = now,
        };

        kiln_solver_vertex_started(sv, n);
        kiln_solver_emit_status(sv, n, &st);
}

static int process_node(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                        struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        const struct kiln_llb_op *op = n->op;

        if (op->type == KILN_LLB_OP_SOURCE && op->source.type == KILN_LLB_SOURCE_LOCAL) {
                int r = process_local(sv, n, err);
                if (r >= 0)
                        vertex_completed(sv, n, false, NULL);
                return r;
        }
        if (op->type == KILN_LLB_OP_SOURCE && op->source.type == KILN_LLB_SOURCE_HTTP &&
            !op->source.http.checksum)
                return process_http(sv, n, err);

        int r;
        if (op->type == KILN_LLB_OP_SOURCE && op->source.type == KILN_LLB_SOURCE_GIT) {
                /* the key is the commit the ref names now */
                r = kiln_solver_git_resolve(sv, n, err);
                if (r < 0)
                        return r;
        }
        r = compute_key(sv, n, err);
        if (r < 0)
                return r;
        _cleanup_free_ char **outputs =
                kiln_xcalloc(n->n_outputs ? n->n_outputs : 1, sizeof(char *));
        bool use_cache = !sv->b->no_cache && !op->meta.ignore_cache;
        for (;;) {
                if (kiln_solver_cancelled(sv))
                        return kiln_error_set(err, -ECANCELED, "context canceled");
                if (use_cache) {
                        r = cache_lookup_outputs(sv, n, outputs, err);
                        if (r < 0)
                                return r;
                        if (r > 0) {
                                memcpy(n->outputs, outputs, n->n_outputs * sizeof(char *));
                                cached_source_resolved(sv, n);
                                vertex_completed(sv, n, !is_image(op), NULL);
                                return 0;
                        }
                }
                pthread_mutex_lock(&s->lock);
                struct kiln_solver_flight *f = flight_find(s, n->key);
                if (f) {
                        f->waiters++;
                        pthread_mutex_unlock(&s->lock);
                        kiln_solver_vertex_started(sv, n);
                        pthread_mutex_lock(&s->lock);
                        r = flight_wait(sv, f, n, outputs, err);
                        pthread_mutex_unlock(&s->lock);
                        if (r < 0)
                                return r;
                        if (r == 0)
                                continue;
                        memcpy(n->outputs, outputs, n->n_outputs * sizeof(char *));
                        vertex_completed(sv, n, false, NULL);
                        return 0;
                }
                f = kiln_xcalloc(1, sizeof(*f));
                memcpy(f->key, n->key, sizeof(f->key));
                f->next = s->flights;
                s->flights = f;
                pthread_mutex_unlock(&s->lock);

                r = kiln_solver_run_op(sv, n, outputs, err);
                if (r >= 0) {
                        r = cache_record_outputs(sv, n, outputs, err);
                        if (r < 0)
                                release_outputs(s, outputs, n->n_outputs);
                }
                flight_finish(s, f, r, r < 0 ? *err : NULL, outputs, n->n_outputs);
                if (r < 0)
                        return r;
                memcpy(n->outputs, outputs, n->n_outputs * sizeof(char *));
                vertex_completed(sv, n, false, NULL);
                return 0;
        }
}

struct node_thread_arg {
        struct kiln_solver_solve *sv;
        struct kiln_solver_node *n;
};

static void *node_thread(void *p)
{
        struct node_thread_arg *a = p;
        struct kiln_solver_solve *sv = a->sv;
        struct kiln_solver_node *n = a->n;
        free(a);

        struct kiln_error *e = NULL;
        int r = process_node(sv, n, &e);
        if (r < 0) {
                if (r == -ECANCELED && sv->b->cancel && atomic_load(sv->b->cancel)) {
                        kiln_error_free(e);
                        e = NULL;
                        (void) kiln_error_set(&e, -ECANCELED, "context canceled");
                }
                vertex_completed(sv, n, false, kiln_error_message(e));
        }

        pthread_mutex_lock(&sv->lock);
        n->state = r < 0 ? KILN_SOLVER_NODE_FAILED : KILN_SOLVER_NODE_DONE;
        if (r < 0) {
                /* the first real failure wins over the cancellations it causes */
                bool replace = sv->rc == 0 || (sv->rc == -ECANCELED && r != -ECANCELED);
                if (replace) {
                        kiln_error_free(sv->err);
                        sv->err = TAKE_PTR(e);
                        sv->rc = r;
                        sv->failed = n->index;
                }
                atomic_store(&sv->cancel, true);
        }
        sv->running--;
        pthread_cond_broadcast(&sv->cond);
        pthread_mutex_unlock(&sv->lock);
        kiln_error_free(e);
        return NULL;
}

static bool node_ready(struct kiln_solver_solve *sv, struct kiln_solver_node *n)
{
        if (!n->needed || n->state != KILN_SOLVER_NODE_WAITING)
                return false;
        for (size_t i = 0; i < n->n_deps; i++)
                if (sv->nodes[n->deps[i]].state != KILN_SOLVER_NODE_DONE)
                        return false;
        return true;
}

static void schedule(struct kiln_solver_solve *sv)
{
        pthread_mutex_lock(&sv->lock);
        for (;;) {
                bool cancelled = kiln_solver_cancelled(sv);
                bool pending = false;
                for (size_t i = 0; i < sv->n; i++) {
                        struct kiln_solver_node *n = &sv->nodes[i];
                        if (n->needed && n->state == KILN_SOLVER_NODE_WAITING)
                                pending = true;
                        if (cancelled || sv->running >= KILN_SOLVER_MAX_WORKERS ||
                            !node_ready(sv, n))
                                continue;
                        struct node_thread_arg *a = kiln_xmalloc(sizeof(*a));
                        *a = (struct node_thread_arg){ sv, n };
                        n->state = KILN_SOLVER_NODE_RUNNING;
                        sv->running++;
                        int r = pthread_create(&n->thread, NULL, node_thread, a);
                        if (r != 0) {
                                free(a);
                                n->state = KILN_SOLVER_NODE_FAILED;
                                sv->running--;
                                if (sv->rc == 0) {
                                        sv->rc = kiln_error_set(&sv->err, -r, "start a thread: %s",
                                                                strerror(r));
                                        sv->failed = SIZE_MAX;
                                }
                                atomic_store(&sv->cancel, true);
                                continue;
                        }
                        n->joinable = true;
                }
                if (sv->running == 0 && (cancelled || !pending))
                        break;
                struct timespec ts;
                deadline_in(&ts, KILN_SOLVER_CANCEL_POLL_MS);
                pthread_cond_timedwait(&sv->cond, &sv->lock, &ts);
        }
        pthread_mutex_unlock(&sv->lock);
        for (size_t i = 0; i < sv->n; i++)
                if (sv->nodes[i].joinable) {
                        pthread_join(sv->nodes[i].thread, NULL);
                        sv->nodes[i].joinable = false;
                }
}

int kiln_solver_solve(struct kiln_solver *s, const struct kiln_solver_build *b,
                      struct kiln_solver_result *ret, struct kiln_error **err)
{
        kiln_solver_result_release(ret);
        if (!b->def)
                return kiln_error_set(err, -EINVAL, "solve: no definition");
        struct kiln_solver_solve sv = { .s = s, .b = b, .failed = SIZE_MAX };
        atomic_init(&sv.cancel, false);
        pthread_mutex_init(&sv.lock, NULL);
        pthread_cond_init(&sv.cond, NULL);
        pthread_mutex_init(&sv.event_lock, NULL);
        pthread_mutex_init(&sv.local_lock, NULL);
        build_nodes(&sv);

        schedule(&sv);

        int r = sv.rc;
        if (r == 0 && b->cancel && atomic_load(b->cancel))
                r = kiln_error_set(err, -ECANCELED, "context canceled");
        else if (r < 0) {
                if (b->cancel && atomic_load(b->cancel) && r == -ECANCELED) {
                        kiln_error_free(sv.err);
                        sv.err = NULL;
                        r = kiln_error_set(err, -ECANCELED, "context canceled");
                } else {
                        kiln_error_free(*err);
                        *err = TAKE_PTR(sv.err);
                        if (sv.failed != SIZE_MAX) {
                                ret->failed_vertex = kiln_xstrdup(sv.nodes[sv.failed].op->digest);
                                ret->failed_name = kiln_xstrdup(sv.nodes[sv.failed].name);
                        }
                }
        } else {
                struct kiln_llb_ref ref = kiln_llb_def_output(b->def);
                struct kiln_solver_node *out = kiln_solver_ref_node(&sv, ref);
                if (out) {
                        char *id = NULL;
                        r = kiln_solver_ref_snapshot(&sv, out, ref.output, &id, err);
                        if (r >= 0) {
                                memcpy(ret->key, out->key, sizeof(ret->key));
                                if (id && !b->keep_result_use)
                                        kiln_snapshot_release(s->snapshots, id);
                                ret->snapshot_id = id;
                        }
                }
        }
        kiln_error_free(sv.err);
        release_nodes(&sv);
        pthread_mutex_destroy(&sv.lock);
        pthread_cond_destroy(&sv.cond);
        pthread_mutex_destroy(&sv.event_lock);
        pthread_mutex_destroy(&sv.local_lock);
        return r < 0 ? r : 0;
}
