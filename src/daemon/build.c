/* SPDX-License-Identifier: Apache-2.0 */
/*
 * POST /v1/build (api.h, "Builds") and the build machinery of the daemon:
 * the snapshot store, the local context store and the solver.
 *
 * The handler checks the request on the loop thread and registers the
 * build (so that the context endpoints of context.c find it by id); a
 * streaming operation (ops.c) then runs it on a worker thread:
 *
 *   1. {"type":"build","id"}
 *   2. the Dockerfile is converted (dockerfile/convert.h); base images are
 *      resolved through the daemon's registry client, each shown as an
 *      "[internal] load metadata for <ref>" vertex, once per build
 *   3. lint warnings
 *   4. the solver runs the graph; when it needs a local source it calls
 *      back (build_local): the build sends a context-request and waits
 *      for the client to post the entries and the tar (context.c)
 *   5. the outputs (export.c): images written, named and pushed; archives
 *      and files offered to the client, which downloads them
 *   6. the result: the image config, the result's snapshot id and what
 *      the outputs made (exporterResponse)
 *
 * A failed step's error event carries the Dockerfile lines of the
 * instruction that made it (the converter's source locations). After
 * every build, failed or not, the garbage collector is kicked.
 *
 * Secrets arrive in the request body, are decoded into memory only, handed
 * to the solver and wiped when the build's arguments are freed. Neither
 * the body nor a secret is ever logged.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/pattern.h"
#include "base/sha256.h"
#include "config/config.h"
#include "content/content.h"
#include "daemon-internal.h"
#include "disk.h"
#include "dockerfile/convert.h"
#include "export.h"
#include "exec/cni.h"
#include "exec/exec.h"
#include "llb/llb.h"
#include "network.h"
#include "snapshot/snapshot.h"
#include "solver/solver.h"
#include "source/image.h"
#include "source/local.h"

/* How often a waiting build looks at its cancel flag. */
#define BUILD_WAIT_POLL_MS 100

/* ---- set-up ---- */

/* [dns] as a resolv.conf, as buildkitd writes it for its containers. */
static char *resolv_conf_text(const struct kiln_config *c)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        char *line;

        for (size_t i = 0; i < c->dns.n_nameservers; i++) {
                line = kiln_xasprintf("nameserver %s\n", c->dns.nameservers[i]);
                (void) kiln_buf_append(&b, line, strlen(line));
                free(line);
        }
        if (c->dns.n_search_domains > 0) {
                (void) kiln_buf_append(&b, "search", 6);
                for (size_t i = 0; i < c->dns.n_search_domains; i++) {
                        (void) kiln_buf_append(&b, " ", 1);
                        (void) kiln_buf_append(&b, c->dns.search_domains[i],
                                               strlen(c->dns.search_domains[i]));
                }
                (void) kiln_buf_append(&b, "\n", 1);
        }
        if (c->dns.n_options > 0) {
                (void) kiln_buf_append(&b, "options", 7);
                for (size_t i = 0; i < c->dns.n_options; i++) {
                        (void) kiln_buf_append(&b, " ", 1);
                        (void) kiln_buf_append(&b, c->dns.options[i], strlen(c->dns.options[i]));
                }
                (void) kiln_buf_append(&b, "\n", 1);
        }
        (void) kiln_buf_append(&b, "", 0);
        return b.data ? kiln_buf_steal(&b) : kiln_xstrdup("");
}

/* Views of results that a killed kilnd left mounted for a tar or local
 * output (export.c mounts them at <root>/exec/export-<build>-<index>). */
static void export_views_cleanup(struct kiln_daemon *d)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/exec", d->root);
        DIR *dp = opendir(dir);
        struct dirent *de;

        while (dp && (de = readdir(dp))) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                _cleanup_free_ char *path = NULL;

                if (strncmp(de->d_name, "export-", 7) != 0)
                        continue;
                path = kiln_xasprintf("%s/%s", dir, de->d_name);
                /* Not mounted (the usual case) is fine: rmdir tells. */
                (void) kiln_snapshot_unmount(path, &e);
                if (rmdir(path) < 0)
                        log_warning_f(KILN_FIELDS({ "path", path }), "remove '%s': %s", path,
                                      strerror(errno));
        }
        if (dp)
                closedir(dp);
}

int kiln_daemon_builds_setup(struct kiln_daemon *d, struct kiln_error **err)
{
        const struct kiln_config_worker_oci *w = &d->config->worker_oci;
        _cleanup_free_ char *dir = NULL;
        enum kiln_snapshot_driver driver;
        struct kiln_solver_config sc = { 0 };
        enum kiln_solver_network network = KILN_SOLVER_NETWORK_NONE;
        char parallelism[24];
        int r;

        r = kiln_snapshot_driver_parse(w->snapshotter ? w->snapshotter : "", &driver, err);
        if (r < 0)
                return kiln_error_wrap(err, "worker.oci snapshotter");
        /* Containers a killed kilnd left running still use their snapshots
         * and cache mounts: they go first. */
        dir = kiln_xasprintf("%s/exec", d->root);
        r = kiln_exec_cleanup(&(struct kiln_exec_runtime){ .binary = w->binary && w->binary[0]
                                                                             ? w->binary
                                                                             : "runc",
                                                           .state_dir = dir },
                              err);
        if (r < 0)
                return kiln_error_wrap(err, "clean up after the previous kilnd");
        export_views_cleanup(d);
        free(dir);
        dir = kiln_xasprintf("%s/snapshots", d->root);
        r = kiln_snapshot_store_open(dir, driver, &d->snapshots, err);
        if (r < 0)
                return kiln_error_wrap(err, "open the snapshot store");
        log_info_f(KILN_FIELDS({ "snapshotter", kiln_snapshot_store_driver_name(d->snapshots) }),
                   "snapshots in %s", dir);

        r = kiln_source_local_store_open(d->root, &d->locals, err);
        if (r < 0)
                return kiln_error_wrap(err, "open the local context store");
        d->upload_dir = kiln_xasprintf("%s/local/tmp", d->root);
        r = kiln_mkdir_p(d->upload_dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", d->upload_dir, strerror(-r));

        r = kiln_daemon_network_open(d->config, d->root, &network, &d->cni, err);
        if (r < 0)
                return r;

        if (!d->config->dns.set) {
                /* RUN steps get the host's resolv.conf: no stale copy of an
                 * earlier [dns] lingers. */
                _cleanup_free_ char *stale = kiln_xasprintf("%s/resolv.conf", d->root);

                if (unlink(stale) < 0 && errno != ENOENT)
                        log_warning_f(KILN_FIELDS({ "path", stale }), "remove '%s': %s", stale,
                                      strerror(errno));
        } else {
                _cleanup_free_ char *text = resolv_conf_text(d->config);

                d->resolv_conf = kiln_xasprintf("%s/resolv.conf", d->root);
                r = kiln_write_file_atomic(d->resolv_conf, text, strlen(text), 0644);
                if (r < 0)
                        return kiln_error_set(err, r, "write '%s': %s", d->resolv_conf,
                                              strerror(-r));
        }

        sc.root = d->root;
        sc.store = d->store;
        sc.client = d->client;
        sc.snapshots = d->snapshots;
        sc.runtime_binary = w->binary && w->binary[0] ? w->binary : "runc";
        sc.max_parallelism = w->max_parallelism > 0 && w->max_parallelism <= UINT32_MAX
                                     ? (unsigned) w->max_parallelism
                                     : (w->max_parallelism > UINT32_MAX ? UINT32_MAX : 0);
        sc.default_network = network;
        sc.cni = d->cni;
        sc.resolv_conf = d->resolv_conf;
        r = kiln_solver_new(&sc, &d->solver, err);
        if (r < 0)
                return kiln_error_wrap(err, "start the solver");
        (void) snprintf(parallelism, sizeof(parallelism), "%u", sc.max_parallelism);
        log_info_f(KILN_FIELDS({ "runtime", sc.runtime_binary },
                               { "network", d->cni ? "cni" : "host" },
                               { "max-parallelism", parallelism }),
                   "oci worker ready");
        return 0;
}

void kiln_daemon_builds_free(struct kiln_daemon *d)
{
        d->solver = kiln_solver_free(d->solver);
        d->cni = kiln_cni_free(d->cni);
        d->locals = kiln_source_local_store_free(d->locals);
        d->snapshots = kiln_snapshot_store_free(d->snapshots);
        free(d->resolv_conf);
        d->resolv_conf = NULL;
        free(d->upload_dir);
        d->upload_dir = NULL;
}

/* ---- the build table ---- */

struct kiln_daemon_build *kiln_daemon_build_find(struct kiln_daemon *d, const char *id)
{
        for (struct kiln_daemon_build *b = d->builds; b; b = b->next)
                if (streq(b->id, id))
                        return b;
        return NULL;
}

struct kiln_daemon_build *kiln_daemon_build_ref(struct kiln_daemon_build *b)
{
        b->refs++;
        return b;
}

static void build_local_release(struct kiln_daemon_build_local *l)
{
        l->transfer = kiln_source_local_transfer_free(l->transfer);
        l->context = kiln_source_local_context_unref(l->context);
}

void kiln_daemon_build_unref(struct kiln_daemon_build *b)
{
        if (!b || --b->refs > 0)
                return;
        for (size_t i = 0; i < b->n_locals; i++) {
                build_local_release(&b->locals[i]);
                free(b->locals[i].name);
                free(b->locals[i].key);
                free(b->locals[i].error);
                free(b->locals[i].digest);
        }
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
        free(b->context_key);
        free(b);
}

static void build_unregister(struct kiln_daemon_build *b)
{
        for (struct kiln_daemon_build **p = &b->d->builds; *p; p = &(*p)->next)
                if (*p == b) {
                        *p = b->next;
                        b->next = NULL;
                        return;
                }
}

struct kiln_daemon_build_local *kiln_daemon_build_local_find(struct kiln_daemon_build *b,
                                                             const char *name)
{
        for (size_t i = 0; i < b->n_locals; i++)
                if (streq(b->locals[i].name, name))
                        return &b->locals[i];
        return NULL;
}

void kiln_daemon_build_local_set_state(struct kiln_daemon_build *b,
                                       struct kiln_daemon_build_local *l,
                                       enum kiln_daemon_local_state state)
{
        l->state = state;
        l->deadline_ms = kiln_mono_ms() + (int64_t) KILN_DAEMON_CONTEXT_TIMEOUT_S * 1000;
        pthread_cond_broadcast(&b->cond);
}

/* ---- the operation ---- */

struct resolved_image {
        char *key; /* ref and platform */
        char *ref;
        char *digest;
        char *config;
        size_t config_len;
};

/* The worker's state of one build. */
struct build_run {
        struct kiln_daemon_build *b;
        struct kiln_api_build_request req;
        /* Worker only, while it runs. */
        struct kiln_daemon_op *op;
        const struct kiln_llb_def *def;
        struct resolved_image *images;
        size_t n_images;
};

static void build_run_free(void *p)
{
        struct build_run *run = p;

        if (!run)
                return;
        build_unregister(run->b);
        kiln_daemon_build_unref(run->b);
        kiln_api_build_request_release(&run->req); /* wipes the secrets */
        for (size_t i = 0; i < run->n_images; i++) {
                free(run->images[i].key);
                free(run->images[i].ref);
                free(run->images[i].digest);
                free(run->images[i].config);
        }
        free(run->images);
        free(run);
}

static void emit(struct build_run *run, struct kiln_api_build_event *ev, bool droppable);

/* export.c's emitter: statuses that are not the last of their kind may be
 * dropped for a slow reader, as the solver's are. */
static void export_emit(void *userdata, struct kiln_api_build_event *ev)
{
        emit(userdata, ev, ev->type == KILN_API_BUILD_EVENT_STATUS && !ev->completed);
}

static void emit(struct build_run *run, struct kiln_api_build_event *ev, bool droppable)
{
        char now[KILN_API_TIME_SIZE];
        json_t *j = NULL;

        if (!ev->time) {
                kiln_api_time_now(now);
                ev->time = now;
        }
        if (kiln_api_build_event_to_json(ev, &j) < 0)
                return;
        kiln_daemon_op_emit_json(run->op, j, droppable);
        json_decref(j);
        if (ev->time == now)
                ev->time = NULL;
}

static void format_time(int64_t ns, char out[static KILN_API_TIME_SIZE], char **ret)
{
        if (ns <= 0) {
                *ret = NULL;
                return;
        }
        kiln_api_time_format(ns, out);
        *ret = out;
}

/* A vertex that is no op of the graph ("[internal] load metadata for ..."):
 * its digest is derived from what it is about, so it is stable. */
static void internal_vertex(struct build_run *run, const char *digest, const char *name,
                            int64_t started, int64_t completed, const char *error)
{
        char s[KILN_API_TIME_SIZE], c[KILN_API_TIME_SIZE];
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_VERTEX,
                .digest = (char *) digest,
                .name = (char *) name,
                .error = (char *) error,
        };

        format_time(started, s, &ev.started);
        format_time(completed, c, &ev.completed);
        emit(run, &ev, false);
}

/* The converter's resolver: BuildKit's ResolveImageConfig through the
 * daemon's registry client, cached per build. */
static int build_resolve(void *userdata, const char *ref,
                         const struct kiln_content_platform *platform,
                         struct kiln_dockerfile_resolved_image *ret, struct kiln_error **err)
{
        struct build_run *run = userdata;
        struct kiln_daemon *d = run->b->d;
        _cleanup_free_ char *plat = platform ? kiln_content_platform_format(platform) : NULL;
        _cleanup_free_ char *key = kiln_xasprintf("%s %s", ref, plat ? plat : "");
        _cleanup_free_ char *name = kiln_xasprintf("[internal] load metadata for %s", ref);
        struct kiln_source_image_resolved res = { 0 };
        /* BuildKit shows the vertex alone, without the manifest and config
         * fetches under it. */
        struct kiln_source_image_options o = {
                .platform = plat,
                .cancel = kiln_daemon_op_cancel_flag(run->op),
        };
        char hex[KILN_SHA256_HEX_LEN + 1], digest[8 + KILN_SHA256_HEX_LEN];
        struct resolved_image *img;
        int64_t started;
        int r;

        for (size_t i = 0; i < run->n_images; i++) {
                img = &run->images[i];
                if (!streq(img->key, key))
                        continue;
                ret->ref = img->ref ? kiln_xstrdup(img->ref) : NULL;
                ret->digest = img->digest ? kiln_xstrdup(img->digest) : NULL;
                ret->config = kiln_xmalloc(img->config_len + 1);
                memcpy(ret->config, img->config, img->config_len);
                ret->config[img->config_len] = '\0';
                ret->config_len = img->config_len;
                return 0;
        }
        if (run->n_images >= KILN_DAEMON_BUILD_IMAGES)
                return kiln_error_set(err, -E2BIG, "more than %u base images in one build",
                                      KILN_DAEMON_BUILD_IMAGES);

        /* Per reference and platform: a build may resolve one image for
         * two platforms. */
        kiln_sha256_hex(key, strlen(key), hex);
        (void) snprintf(digest, sizeof(digest), "sha256:%s", hex);
        started = kiln_realtime_ns();
        internal_vertex(run, digest, name, started, 0, NULL);
        r = kiln_source_image_resolve(d->client, d->store, ref, &o, &res, err);
        internal_vertex(run, digest, name, started, kiln_realtime_ns(),
                        r < 0 ? kiln_error_message(*err) : NULL);
        if (r < 0)
                return r;

        run->images = kiln_xreallocarray(run->images, run->n_images + 1, sizeof(*run->images));
        img = &run->images[run->n_images++];
        *img = (struct resolved_image){
                .key = TAKE_PTR(key),
                .ref = res.ref && !streq(res.ref, ref) ? kiln_xstrdup(res.ref) : NULL,
                .digest = res.digest ? kiln_xstrdup(res.digest) : NULL,
                .config = kiln_xmalloc(res.config_len + 1),
                .config_len = res.config_len,
        };
        memcpy(img->config, res.config, res.config_len);
        img->config[res.config_len] = '\0';
        kiln_source_image_resolved_release(&res);

        ret->ref = img->ref ? kiln_xstrdup(img->ref) : NULL;
        ret->digest = img->digest ? kiln_xstrdup(img->digest) : NULL;
        ret->config = kiln_xmalloc(img->config_len + 1);
        memcpy(ret->config, img->config, img->config_len + 1);
        ret->config_len = img->config_len;
        return 0;
}

/* Solver events as the API's. Calls never overlap for one build. */
static void build_on_event(void *userdata, const struct kiln_solver_event *e)
{
        struct build_run *run = userdata;
        char s[KILN_API_TIME_SIZE], c[KILN_API_TIME_SIZE], t[KILN_API_TIME_SIZE];
        struct kiln_api_build_event ev = { 0 };

        switch (e->type) {
        case KILN_SOLVER_EVENT_VERTEX:
                ev.type = KILN_API_BUILD_EVENT_VERTEX;
                ev.digest = (char *) e->vertex.digest;
                ev.name = (char *) e->vertex.name;
                ev.inputs = (char **) e->vertex.inputs;
                ev.n_inputs = e->vertex.n_inputs;
                format_time(e->vertex.started, s, &ev.started);
                format_time(e->vertex.completed, c, &ev.completed);
                ev.cached = e->vertex.cached;
                ev.error = (char *) e->vertex.error;
                emit(run, &ev, false);
                break;
        case KILN_SOLVER_EVENT_STATUS:
                ev.type = KILN_API_BUILD_EVENT_STATUS;
                ev.vertex = (char *) e->status.vertex;
                ev.id = (char *) e->status.id;
                ev.name = (char *) e->status.name;
                ev.current = e->status.current;
                ev.total = e->status.total;
                format_time(e->status.started, s, &ev.started);
                format_time(e->status.completed, c, &ev.completed);
                emit(run, &ev, !e->status.completed);
                break;
        case KILN_SOLVER_EVENT_LOG:
                ev.type = KILN_API_BUILD_EVENT_LOG;
                ev.vertex = (char *) e->log.vertex;
                ev.stream = e->log.stream;
                ev.data = (uint8_t *) e->log.data;
                ev.len = e->log.len;
                format_time(e->log.timestamp > 0 ? e->log.timestamp : kiln_realtime_ns(), t,
                            &ev.time);
                emit(run, &ev, false);
                break;
        }
}

static const struct kiln_llb_op *find_local_source(const struct kiln_llb_def *def, const char *name)
{
        for (size_t i = 0; def && i < kiln_llb_def_n_ops(def); i++) {
                const struct kiln_llb_op *op = kiln_llb_def_op(def, i);

                if (op->type == KILN_LLB_OP_SOURCE && op->source.type == KILN_LLB_SOURCE_LOCAL &&
                    op->source.local.name && streq(op->source.local.name, name))
                        return op;
        }
        return NULL;
}

/* BuildKit's status line of a file transfer: "transferring context: 2B
 * done" under the vertex it belongs to. */
static void transfer_status(struct build_run *run, const char *vertex, const char *what,
                            uint64_t bytes, int64_t started)
{
        char s[KILN_API_TIME_SIZE], c[KILN_API_TIME_SIZE];
        _cleanup_free_ char *name = kiln_xasprintf("transferring %s:", what);
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_STATUS,
                .vertex = (char *) vertex,
                .id = name,
                .name = name,
                .current = (int64_t) bytes,
        };

        format_time(started, s, &ev.started);
        format_time(kiln_realtime_ns(), c, &ev.completed);
        emit(run, &ev, false);
}

/* A vertex of BuildKit's that has no op here: the Dockerfile and the
 * .dockerignore, which the client sent with the request. */
static void internal_file_vertex(struct build_run *run, const char *name, const char *what,
                                 size_t bytes)
{
        char hex[KILN_SHA256_HEX_LEN + 1], digest[8 + KILN_SHA256_HEX_LEN];
        int64_t started = kiln_realtime_ns();

        kiln_sha256_hex(name, strlen(name), hex);
        (void) snprintf(digest, sizeof(digest), "sha256:%s", hex);
        internal_vertex(run, digest, name, started, 0, NULL);
        transfer_status(run, digest, what, bytes, started);
        internal_vertex(run, digest, name, started, kiln_realtime_ns(), NULL);
}

/* The solver needs the local source name: ask the client for it and wait
 * until context.c has applied it (or the client gives up, or the build is
 * cancelled). The context stays referenced by the build until its end. */
static int build_local(void *userdata, const char *name, struct kiln_source_local_context **ret,
                       struct kiln_error **err)
{
        struct build_run *run = userdata;
        struct kiln_daemon_build *b = run->b;
        const struct kiln_llb_op *op = find_local_source(run->def, name);
        const struct kiln_llb_source_local *src = op ? &op->source.local : NULL;
        int64_t started = kiln_realtime_ns();
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_CONTEXT_REQUEST,
                .name = (char *) name,
        };
        struct kiln_daemon_build_local *l;
        bool created = false;
        int r = 0;

        if (strlen(name) == 0 || strlen(name) > KILN_API_LIMIT_CONTEXT_NAME ||
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                    strlen(name))
                return kiln_error_set(err, -EINVAL, "local source '%s': invalid name", name);

        pthread_mutex_lock(&b->lock);
        l = kiln_daemon_build_local_find(b, name);
        if (!l) {
                if (b->n_locals >= KILN_DAEMON_BUILD_LOCALS) {
                        pthread_mutex_unlock(&b->lock);
                        return kiln_error_set(err, -E2BIG,
                                              "local source '%s': more than %u local sources in "
                                              "one build",
                                              name, KILN_DAEMON_BUILD_LOCALS);
                }
                l = &b->locals[b->n_locals++];
                *l = (struct kiln_daemon_build_local){
                        .name = kiln_xstrdup(name),
                        .key = kiln_xasprintf("%s\n%s", b->context_key, name),
                };
                kiln_daemon_build_local_set_state(b, l, KILN_DAEMON_LOCAL_REQUESTED);
                created = true;
        }
        pthread_mutex_unlock(&b->lock);

        /* Asked once; a second caller for the name just waits. */
        if (created && src) {
                ev.follow_paths = src->follow_paths.v;
                ev.n_follow_paths = src->follow_paths.n;
                ev.include_patterns = src->include_patterns.v;
                ev.n_include_patterns = src->include_patterns.n;
                ev.exclude_patterns = src->exclude_patterns.v;
                ev.n_exclude_patterns = src->exclude_patterns.n;
        }
        if (created) {
                emit(run, &ev, false);
                log_debug_f(KILN_FIELDS({ "build", b->id }, { "name", name }),
                            "waiting for context");
        }

        pthread_mutex_lock(&b->lock);
        for (;;) {
                struct timespec until;

                if (l->state == KILN_DAEMON_LOCAL_DONE) {
                        *ret = l->context;
                        if (created && op)
                                transfer_status(run, op->digest, "context", l->bytes, started);
                        break;
                }
                if (l->state == KILN_DAEMON_LOCAL_FAILED) {
                        r = kiln_error_set(err, l->error_code < 0 ? l->error_code : -EIO, "%s",
                                           l->error ? l->error : "context transfer failed");
                        break;
                }
                if (kiln_daemon_op_cancelled(run->op)) {
                        r = kiln_error_set(err, -ECANCELED, "context canceled");
                        break;
                }
                if ((l->state == KILN_DAEMON_LOCAL_REQUESTED ||
                     l->state == KILN_DAEMON_LOCAL_ENTRIES) &&
                    kiln_mono_ms() >= l->deadline_ms) {
                        r = kiln_error_set(err, -ETIMEDOUT,
                                           "local source '%s': the client did not send it "
                                           "within %u seconds",
                                           name, KILN_DAEMON_CONTEXT_TIMEOUT_S);
                        break;
                }
                until = kiln_mono_deadline(BUILD_WAIT_POLL_MS);
                (void) pthread_cond_timedwait(&b->cond, &b->lock, &until);
        }
        pthread_mutex_unlock(&b->lock);
        return r;
}

/* BuildKit's entitlements: RUN --network=host and --security=insecure
 * need the build to ask for them (--allow) and the daemon to grant them
 * (insecure-entitlements). */
static bool strv_has(char *const *v, size_t n, const char *s)
{
        for (size_t i = 0; i < n; i++)
                if (streq(v[i], s))
                        return true;
        return false;
}

static int check_entitlements(const struct kiln_config *c, const struct kiln_api_build_request *req,
                              const struct kiln_llb_def *def, struct kiln_error **err)
{
        for (size_t i = 0; i < req->n_allow; i++)
                if (!strv_has(c->insecure_entitlements, c->n_insecure_entitlements, req->allow[i]))
                        return kiln_error_set(err, -EPERM,
                                              "granting entitlement %s is not allowed by build "
                                              "daemon configuration",
                                              req->allow[i]);
        for (size_t i = 0; i < kiln_llb_def_n_ops(def); i++) {
                const struct kiln_llb_op *op = kiln_llb_def_op(def, i);

                if (op->type != KILN_LLB_OP_EXEC)
                        continue;
                if (op->exec.network == KILN_LLB_NETWORK_HOST &&
                    !strv_has(req->allow, req->n_allow, "network.host"))
                        return kiln_error_set(err, -EPERM, "network.host is not allowed");
                if (op->exec.security == KILN_LLB_SECURITY_INSECURE &&
                    !strv_has(req->allow, req->n_allow, "security.insecure"))
                        return kiln_error_set(err, -EPERM, "security.insecure is not allowed");
        }
        return 0;
}

static void pairs_free(struct kiln_dockerfile_pair *p, size_t n)
{
        for (size_t i = 0; p && i < n; i++) {
                free((char *) p[i].key);
                free((char *) p[i].value);
        }
        free(p);
}

/* --add-host "host:ip" (split at the first ':', as buildx does, so that
 * IPv6 addresses keep theirs). */
static struct kiln_dockerfile_pair *parse_hosts(char *const *hosts, size_t n)
{
        struct kiln_dockerfile_pair *p = kiln_xcalloc(n + 1, sizeof(*p));

        for (size_t i = 0; i < n; i++) {
                const char *colon = strchr(hosts[i], ':');

                p[i].key = kiln_xstrndup(hosts[i], (size_t) (colon - hosts[i]));
                p[i].value = kiln_xstrdup(colon + 1);
        }
        return p;
}

/* The failed step's instruction in the final error event ("source"), as
 * buildx prints it with ">>>". */
static void error_source(struct build_run *run, const struct kiln_dockerfile_convert_result *conv,
                         const struct kiln_solver_result *result)
{
        const struct kiln_dockerfile_source_location *loc =
                kiln_dockerfile_convert_result_location(conv, result->failed_vertex);
        json_t *src;

        if (!loc)
                return;
        src = json_pack("{s:s,s:[II]}", "file",
                        run->req.dockerfile_name ? run->req.dockerfile_name : "Dockerfile", "lines",
                        (json_int_t) loc->start_line, (json_int_t) loc->end_line);
        if (src)
                kiln_daemon_op_set_error_extra(run->op, "source", src);
}

static int build_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct build_run *run = args;
        struct kiln_daemon_build *b = run->b;
        struct kiln_daemon *d = b->d;
        const struct kiln_api_build_request *req = &run->req;
        _cleanup_(
                kiln_dockerfile_convert_result_freep) struct kiln_dockerfile_convert_result *conv =
                NULL;
        _cleanup_(kiln_solver_result_release) struct kiln_solver_result result = { 0 };
        _cleanup_free_ struct kiln_dockerfile_pair *args_p = NULL, *labels_p = NULL;
        _cleanup_free_ struct kiln_solver_secret *secrets = NULL;
        _cleanup_free_ struct kiln_solver_ssh *ssh = NULL;
        struct kiln_dockerfile_pair *hosts = NULL;
        char **ignore = NULL;
        size_t n_ignore = 0;
        struct kiln_dockerfile_convert_options o = { 0 };
        struct kiln_solver_build sb = { 0 };
        struct kiln_api_build_event ev = { .type = KILN_API_BUILD_EVENT_BUILD };
        json_t *config = NULL, *response = NULL;
        bool result_used = false;
        int r;

        run->op = op;
        ev.id = b->id;
        emit(run, &ev, false);

        if (req->dockerignore) {
                r = kiln_pattern_read_ignorefile(req->dockerignore, strlen(req->dockerignore),
                                                 &ignore, &n_ignore, err);
                if (r < 0) {
                        kiln_error_wrap(err, "read .dockerignore");
                        goto out;
                }
        }
        args_p = kiln_xcalloc(req->n_build_args + 1, sizeof(*args_p));
        for (size_t i = 0; i < req->n_build_args; i++)
                args_p[i] = (struct kiln_dockerfile_pair){ req->build_args[i].key,
                                                           req->build_args[i].value };
        labels_p = kiln_xcalloc(req->n_labels + 1, sizeof(*labels_p));
        for (size_t i = 0; i < req->n_labels; i++)
                labels_p[i] =
                        (struct kiln_dockerfile_pair){ req->labels[i].key, req->labels[i].value };
        hosts = parse_hosts(req->add_hosts, req->n_add_hosts);

        o.dockerfile_name = req->dockerfile_name;
        o.build_args = args_p;
        o.n_build_args = req->n_build_args;
        o.labels = labels_p;
        o.n_labels = req->n_labels;
        o.target = req->target;
        o.target_platform = req->platform && req->platform[0] ? req->platform : NULL;
        o.dockerignore = (const char *const *) ignore;
        o.n_dockerignore = n_ignore;
        o.no_cache = req->no_cache || req->n_no_cache_filter > 0;
        o.no_cache_stages = (const char *const *) req->no_cache_filter;
        o.n_no_cache_stages = req->n_no_cache_filter;
        o.extra_hosts = hosts;
        o.n_extra_hosts = req->n_add_hosts;
        if (streq_ptr(req->network, "none"))
                o.network = KILN_LLB_NETWORK_NONE;
        else if (streq_ptr(req->network, "host"))
                o.network = KILN_LLB_NETWORK_HOST;
        o.resolve = build_resolve;
        o.userdata = run;
        {
                _cleanup_free_ char *name =
                        kiln_xasprintf("[internal] load build definition from %s",
                                       req->dockerfile_name ? req->dockerfile_name : "Dockerfile");

                internal_file_vertex(run, name, "dockerfile", strlen(req->dockerfile));
        }
        r = kiln_dockerfile_convert(req->dockerfile, strlen(req->dockerfile), &o, &conv, err);
        if (r < 0)
                goto out;
        run->def = conv->def;
        /* Without a .dockerignore BuildKit's transfer of the empty selection
         * still counts 2 bytes ("transferring context: 2B done"). */
        internal_file_vertex(run, "[internal] load .dockerignore", "context",
                             req->dockerignore ? strlen(req->dockerignore) : 2);

        for (size_t i = 0; i < conv->n_warnings; i++) {
                const struct kiln_dockerfile_lint_warning *w = &conv->warnings[i];
                struct kiln_api_build_event wev = {
                        .type = KILN_API_BUILD_EVENT_WARNING,
                        .rule = w->rule,
                        .message = w->message,
                        .url = w->url,
                        .line = w->start_line,
                };

                emit(run, &wev, false);
        }

        r = check_entitlements(d->config, req, conv->def, err);
        if (r < 0)
                goto out;

        if (!kiln_llb_def_has_output(conv->def)) {
                /* FROM scratch and nothing else: nothing to solve. */
                r = 0;
        } else {
                secrets = kiln_xcalloc(req->n_secrets + 1, sizeof(*secrets));
                for (size_t i = 0; i < req->n_secrets; i++)
                        secrets[i] = (struct kiln_solver_secret){ req->secrets[i].id,
                                                                  req->secrets[i].data,
                                                                  req->secrets[i].len };
                ssh = kiln_xcalloc(req->n_ssh + 1, sizeof(*ssh));
                for (size_t i = 0; i < req->n_ssh; i++)
                        ssh[i] = (struct kiln_solver_ssh){ req->ssh[i].id, req->ssh[i].path };
                sb.def = conv->def;
                sb.local = build_local;
                sb.secrets = secrets;
                sb.n_secrets = req->n_secrets;
                sb.ssh = ssh;
                sb.n_ssh = req->n_ssh;
                sb.no_cache = req->no_cache && req->n_no_cache_filter == 0;
                sb.keep_result_use = true;
                sb.cancel = kiln_daemon_op_cancel_flag(op);
                sb.on_event = build_on_event;
                sb.userdata = run;
                r = kiln_solver_solve(d->solver, &sb, &result, err);
                if (r < 0) {
                        error_source(run, conv, &result);
                        goto out;
                }
                kiln_daemon_op_set_digest(op, result.key);
        }
        /* The result stays while the outputs read it (and the client
         * downloads it): the solve handed over its use of the snapshot,
         * and the garbage collector skips used snapshots. */
        result_used = result.snapshot_id != NULL;
        {
                struct kiln_daemon_export_input in = {
                        .build = b,
                        .op = op,
                        .snapshot_id = result.snapshot_id,
                        .config = conv->config,
                        .config_len = conv->config_len,
                        .has_epoch = conv->has_epoch,
                        .epoch = conv->epoch,
                        .platform = o.target_platform,
                        .emit = export_emit,
                        .userdata = run,
                };

                r = kiln_daemon_export_run(&in, req->outputs, req->n_outputs, &response, err);
                if (r < 0)
                        goto out;
        }

        config = json_loadb(conv->config, conv->config_len, 0, NULL);
        if (!config) {
                r = kiln_error_set(err, -EIO, "the converter produced an invalid image config");
                goto out;
        }
        {
                struct kiln_api_build_event res = {
                        .type = KILN_API_BUILD_EVENT_RESULT,
                        .config = config,
                        .snapshot = result.snapshot_id,
                        .exporter_response = response,
                };

                emit(run, &res, false);
        }
        r = 0;
out:
        /* The build is over: contexts go now (releasing their keys for
         * other builds), and transfers that end later are dropped. */
        pthread_mutex_lock(&b->lock);
        b->closed = true;
        for (size_t i = 0; i < b->n_locals; i++)
                build_local_release(&b->locals[i]);
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        run->def = NULL;
        if (result_used)
                kiln_snapshot_release(d->snapshots, result.snapshot_id);
        json_decref(config);
        json_decref(response);
        pairs_free(hosts, req->n_add_hosts);
        kiln_pattern_strv_free(ignore);
        kiln_daemon_gc_kick(d);
        return r;
}

/* ---- the handler ---- */

static void build_id(char out[static KILN_DAEMON_BUILD_ID_LEN + 1])
{
        static const char hex[] = "0123456789abcdef";
        uint8_t bytes[KILN_DAEMON_BUILD_ID_LEN / 2];
        size_t got = 0;

        while (got < sizeof(bytes)) {
                ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        abort(); /* the kernel's random source cannot fail after boot */
                got += (size_t) n;
        }
        for (size_t i = 0; i < sizeof(bytes); i++) {
                out[2 * i] = hex[bytes[i] >> 4];
                out[2 * i + 1] = hex[bytes[i] & 15];
        }
        out[KILN_DAEMON_BUILD_ID_LEN] = '\0';
}

static enum MHD_Result bad_request(struct MHD_Connection *conn, const char *method, const char *url,
                                   int r, const char *message)
{
        return kiln_daemon_respond_error(
                conn, method, url, r == -E2BIG ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST,
                NULL, message);
}

/* An ssh agent is forwarded by binding its socket into RUN steps, so a
 * client may name only a socket it could use itself: the request must come
 * over a unix socket, and the agent socket must belong to the client's uid
 * (root may name any). Otherwise a remote client could mount the daemon
 * host's own sockets (a container runtime's, kilnd's) into a build. */
static int check_ssh_sockets(const struct kiln_daemon_request *req, struct MHD_Connection *conn,
                             const struct kiln_api_build_request *breq, struct kiln_error **err)
{
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred peer;
        socklen_t len = sizeof(peer);

        if (req->listener->parsed.kind != KILN_CONFIG_ADDRESS_UNIX || !ci ||
            getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0)
                return kiln_error_set(err, -EPERM,
                                      "ssh agent forwarding needs a client on the daemon's own "
                                      "machine, connected through its unix socket");
        for (size_t i = 0; i < breq->n_ssh; i++) {
                struct stat st;

                if (lstat(breq->ssh[i].path, &st) < 0 || !S_ISSOCK(st.st_mode) ||
                    (peer.uid != 0 && st.st_uid != peer.uid))
                        return kiln_error_set(err, -EPERM,
                                              "ssh agent '%s': '%s' is no socket of the client's "
                                              "user (uid %u)",
                                              breq->ssh[i].id, breq->ssh[i].path,
                                              (unsigned) peer.uid);
        }
        return 0;
}

enum MHD_Result kiln_daemon_handle_build(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                         struct MHD_Connection *conn, const char *method,
                                         const char *url)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_api_build_request breq = { 0 };
        struct kiln_daemon_op_spec spec = { .what = "build", .stream = true };
        struct kiln_daemon_build *b;
        struct build_run *run;
        json_error_t jerr;
        json_t *j;
        int r;

        if (MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, NULL, NULL) > 0)
                return bad_request(conn, method, url, -EINVAL,
                                   "query parameters are not taken: the request is the body");
        if (req->body.len == 0)
                return bad_request(conn, method, url, -EINVAL,
                                   "the request has no body: a JSON object is expected");
        j = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &jerr);
        /* The body may hold secrets: it is wiped as soon as it is read. */
        explicit_bzero(req->body.data, req->body.len);
        if (!j) {
                _cleanup_free_ char *msg = kiln_xasprintf("invalid JSON body: %d:%d: %s", jerr.line,
                                                          jerr.column, jerr.text);

                return bad_request(conn, method, url, -EINVAL, msg);
        }
        r = kiln_api_build_request_from_json(j, &breq, &err);
        /* jansson keeps its copy of the strings: wipe the secrets there too. */
        {
                json_t *secrets = json_object_get(j, "secrets"), *s;
                size_t i;

                json_array_foreach (secrets, i, s) {
                        json_t *data = json_object_get(s, "data");

                        if (json_is_string(data))
                                explicit_bzero((char *) json_string_value(data),
                                               json_string_length(data));
                }
        }
        json_decref(j);
        if (r < 0)
                return bad_request(conn, method, url, r, kiln_error_message(err));
        if (breq.n_ssh > 0 && check_ssh_sockets(req, conn, &breq, &err) < 0) {
                kiln_api_build_request_release(&breq);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_FORBIDDEN, NULL,
                                                 kiln_error_message(err));
        }
        if (!d->solver) {
                kiln_api_build_request_release(&breq);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                 NULL, "this daemon cannot build");
        }

        b = kiln_xcalloc(1, sizeof(*b));
        b->d = d;
        b->refs = 1;
        build_id(b->id);
        b->context_key = kiln_xstrdup(breq.context_key);
        pthread_mutex_init(&b->lock, NULL);
        {
                pthread_condattr_t attr;

                pthread_condattr_init(&attr);
                pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
                pthread_cond_init(&b->cond, &attr);
                pthread_condattr_destroy(&attr);
        }
        b->next = d->builds;
        d->builds = b;

        run = kiln_xcalloc(1, sizeof(*run));
        run->b = b; /* takes the first reference */
        run->req = breq;
        spec.ref = b->id;
        spec.fn = build_run;
        spec.args = run;
        spec.args_free = build_run_free;
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}
