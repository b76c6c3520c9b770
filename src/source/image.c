/* SPDX-License-Identifier: Apache-2.0 */
#include "source/image.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "content/layer.h"
#include "snapshot/snapshot.h"
#include "source/source-internal.h"

/* Blobs whose progress one pull tracks at once (more are reported without
 * a start time). */
#define STATUS_SLOTS 256u

static bool is_cancelled(const struct kiln_source_image_options *o)
{
        return o && o->cancel && atomic_load(o->cancel);
}

static void send_status(const struct kiln_source_image_options *o, const char *id, uint64_t current,
                        uint64_t total, int64_t started, int64_t completed)
{
        if (!o || !o->on_status)
                return;
        struct kiln_source_status st = { .id = id,
                                         .current = current,
                                         .total = total,
                                         .started_ns = started,
                                         .completed_ns = completed };
        o->on_status(o->userdata, &st);
}

/* ---- registry events as statuses ---- */

struct status_slot {
        char *id;
        int64_t started;
        uint64_t total;
};

struct status_map {
        const struct kiln_source_image_options *o;
        pthread_mutex_t lock;
        struct status_slot slots[STATUS_SLOTS];
        size_t n;
};

static struct status_slot *slot_get(struct status_map *m, const char *id, bool create)
{
        for (size_t i = 0; i < m->n; i++)
                if (streq(m->slots[i].id, id))
                        return &m->slots[i];
        if (!create || m->n >= STATUS_SLOTS)
                return NULL;
        struct status_slot *s = &m->slots[m->n++];
        s->id = kiln_xstrdup(id);
        return s;
}

static void status_map_release(struct status_map *m)
{
        for (size_t i = 0; i < m->n; i++)
                free(m->slots[i].id);
        pthread_mutex_destroy(&m->lock);
}

static void on_registry_event(void *userdata, const struct kiln_registry_event *ev)
{
        struct status_map *m = userdata;
        const struct kiln_source_image_options *o = m->o;
        if (!o || !o->on_status)
                return;
        int64_t t = kiln_realtime_ns();
        _cleanup_free_ char *resolve_id = NULL;
        const char *id = ev->digest;
        int64_t started = 0, completed = 0;
        uint64_t current = 0, total = 0;

        pthread_mutex_lock(&m->lock);
        switch (ev->kind) {
        case KILN_REGISTRY_EVENT_RESOLVING:
        case KILN_REGISTRY_EVENT_RESOLVED: {
                if (!ev->ref)
                        goto skip;
                resolve_id = kiln_xasprintf("resolve %s", ev->ref);
                id = resolve_id;
                struct status_slot *s = slot_get(m, id, true);
                if (s && !s->started)
                        s->started = t;
                started = s ? s->started : t;
                if (ev->kind == KILN_REGISTRY_EVENT_RESOLVED)
                        completed = t;
                break;
        }
        case KILN_REGISTRY_EVENT_BLOB_STARTED:
        case KILN_REGISTRY_EVENT_BLOB_PROGRESS:
        case KILN_REGISTRY_EVENT_BLOB_DONE: {
                if (!id)
                        goto skip;
                struct status_slot *s = slot_get(m, id, true);
                if (s && !s->started)
                        s->started = t;
                if (s && ev->size > 0)
                        s->total = (uint64_t) ev->size;
                started = s ? s->started : t;
                total = s ? s->total : (ev->size > 0 ? (uint64_t) ev->size : 0);
                current = ev->kind == KILN_REGISTRY_EVENT_BLOB_DONE ? total : ev->current;
                if (ev->kind == KILN_REGISTRY_EVENT_BLOB_DONE)
                        completed = t;
                break;
        }
        case KILN_REGISTRY_EVENT_BLOB_CACHED:
        case KILN_REGISTRY_EVENT_BLOB_EXISTS:
        case KILN_REGISTRY_EVENT_BLOB_MOUNTED:
        case KILN_REGISTRY_EVENT_RETRY:
        case KILN_REGISTRY_EVENT_ERROR:
        case _KILN_REGISTRY_EVENT_KIND_MAX:
        default:
                goto skip;
        }
        pthread_mutex_unlock(&m->lock);
        send_status(o, id, current, total, started, completed);
        return;
skip:
        pthread_mutex_unlock(&m->lock);
}

static void status_map_init(struct status_map *m, const struct kiln_source_image_options *o)
{
        memset(m, 0, sizeof(*m));
        m->o = o;
        pthread_mutex_init(&m->lock, NULL);
}

/* ---- resolve ---- */

void kiln_source_image_resolved_release(struct kiln_source_image_resolved *r)
{
        if (!r)
                return;
        free(r->ref);
        free(r->digest);
        free(r->manifest_digest);
        free(r->config);
        memset(r, 0, sizeof(*r));
}

int kiln_source_image_resolve(struct kiln_registry_client *client, struct kiln_content_store *store,
                              const char *ref, const struct kiln_source_image_options *o,
                              struct kiln_source_image_resolved *ret, struct kiln_error **err)
{
        struct status_map m;
        status_map_init(&m, o);
        struct kiln_registry_pull_options po = {
                .platform = o ? o->platform : NULL,
                .metadata_only = true,
                .cancel = o ? o->cancel : NULL,
                .on_event = on_registry_event,
                .userdata = &m,
        };
        struct kiln_registry_pull_result res = { 0 };
        int r = kiln_registry_pull(client, store, ref, &po, &res, err);
        status_map_release(&m);
        if (r < 0)
                return r;
        if (res.n_images < 1 || !res.images[0].config_digest) {
                kiln_registry_pull_result_release(&res);
                return kiln_error_set(err, -ENOENT, "resolve '%s': no image for the platform", ref);
        }
        struct kiln_buf b = KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG);
        r = kiln_content_store_read(store, res.images[0].config_digest, &b, err);
        if (r < 0) {
                kiln_buf_release(&b);
                kiln_registry_pull_result_release(&res);
                return kiln_error_wrap(err, "resolve '%s'", ref);
        }
        ret->config_len = b.len;
        ret->config = kiln_buf_steal(&b);
        ret->ref = TAKE_PTR(res.root.ref);
        ret->digest = TAKE_PTR(res.root.digest);
        ret->manifest_digest = TAKE_PTR(res.images[0].manifest_digest);
        if (!ret->ref)
                ret->ref = kiln_xstrdup(ref);
        kiln_registry_pull_result_release(&res);
        return 0;
}

/* ---- chain IDs ---- */

int kiln_source_image_chain_ids(const char *const *diff_ids, size_t n, char ***ret,
                                struct kiln_error **err)
{
        char **v = kiln_xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                struct kiln_error *e = NULL;
                if (!diff_ids[i] || kiln_content_digest_check(diff_ids[i], &e) < 0 ||
                    !startswith(diff_ids[i], "sha256:")) {
                        int r = kiln_error_set(err, -EINVAL, "diff id %zu: %s", i,
                                               e ? kiln_error_message(e) : "not a sha256 digest");
                        kiln_error_free(e);
                        for (size_t j = 0; j < i; j++)
                                free(v[j]);
                        free(v);
                        return r;
                }
                if (i == 0) {
                        v[i] = kiln_xstrdup(diff_ids[i]);
                        continue;
                }
                _cleanup_free_ char *s = kiln_xasprintf("%s %s", v[i - 1], diff_ids[i]);
                char hex[KILN_SHA256_HEX_LEN + 1];
                kiln_sha256_hex(s, strlen(s), hex);
                v[i] = kiln_xasprintf("sha256:%s", hex);
        }
        *ret = v;
        return 0;
}

static void strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

/* ---- unpacker ---- */

/* One chain being unpacked; waiters share its outcome. */
struct flight {
        struct flight *next;
        char *name;
        unsigned refs;
        bool done;
        int result;
        char *id;
};

struct kiln_source_image_unpacker {
        struct kiln_content_store *store;
        struct kiln_snapshot_store *snapshots;
        char *work_dir;
        pthread_mutex_t lock; /* guards flights */
        pthread_cond_t cond;  /* a flight landed */
        struct flight *flights;
};

int kiln_source_image_unpacker_new(struct kiln_content_store *store,
                                   struct kiln_snapshot_store *snapshots, const char *work_dir,
                                   struct kiln_source_image_unpacker **ret, struct kiln_error **err)
{
        int r = kiln_mkdir_p(work_dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", work_dir, strerror(-r));
        struct kiln_source_image_unpacker *u = kiln_xcalloc(1, sizeof(*u));
        u->store = store;
        u->snapshots = snapshots;
        u->work_dir = kiln_xstrdup(work_dir);
        pthread_mutex_init(&u->lock, NULL);
        pthread_cond_init(&u->cond, NULL);
        *ret = u;
        return 0;
}

struct kiln_source_image_unpacker *
kiln_source_image_unpacker_free(struct kiln_source_image_unpacker *u)
{
        if (!u)
                return NULL;
        pthread_mutex_destroy(&u->lock);
        pthread_cond_destroy(&u->cond);
        free(u->work_dir);
        free(u);
        return NULL;
}

static void flight_put_locked(struct kiln_source_image_unpacker *u, struct flight *f)
{
        if (--f->refs > 0)
                return;
        for (struct flight **p = &u->flights; *p; p = &(*p)->next)
                if (*p == f) {
                        *p = f->next;
                        break;
                }
        free(f->name);
        free(f->id);
        free(f);
}

struct layer_job {
        const char *parent; /* snapshot id or NULL */
        const char *name;   /* "layer:<chainid>" */
        const struct kiln_content_descriptor *layer;
        const char *diff_id;
};

/* ---- scratch snapshots (source-internal.h) ---- */

int source_scratch_open(struct kiln_snapshot_store *store, const char *parent, const char *work_dir,
                        const char *prefix, struct source_scratch *ret, struct kiln_error **err)
{
        struct source_scratch sc = { .root_fd = -1 };
        int r;

        r = kiln_snapshot_prepare(store, parent, &sc.snap, err);
        if (r < 0)
                return r;
        sc.dir = kiln_xasprintf("%s/%s-XXXXXX", work_dir, prefix);
        if (!mkdtemp(sc.dir)) {
                r = kiln_error_set(err, -errno, "create '%s': %s", sc.dir, strerror(errno));
                kiln_snapshot_abort(sc.snap);
                free(sc.dir);
                return r;
        }
        r = kiln_snapshot_mount(sc.snap, sc.dir, err);
        if (r < 0)
                goto fail;
        sc.mounted = true;
        sc.root_fd = open(sc.dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sc.root_fd < 0) {
                r = kiln_error_set(err, -errno, "open '%s': %s", sc.dir, strerror(errno));
                goto fail;
        }
        *ret = sc;
        return 0;
fail:
        source_scratch_abort(&sc);
        return r;
}

int source_scratch_commit(struct source_scratch *sc, const char *name, char **ret_id,
                          struct kiln_error **err)
{
        int r;

        if (sc->root_fd >= 0)
                close(TAKE_FD(sc->root_fd));
        sc->mounted = false;
        r = kiln_snapshot_unmount(sc->dir, err);
        if (r < 0) {
                source_scratch_abort(sc);
                return r;
        }
        (void) rmdir(sc->dir);
        r = kiln_snapshot_commit(TAKE_PTR(sc->snap), name, ret_id, err);
        free(sc->dir);
        *sc = (struct source_scratch){ .root_fd = -1 };
        return r;
}

void source_scratch_abort(struct source_scratch *sc)
{
        if (sc->root_fd >= 0)
                close(sc->root_fd);
        if (sc->mounted) {
                struct kiln_error *e = NULL;

                (void) kiln_snapshot_unmount(sc->dir, &e);
                kiln_error_free(e);
        }
        kiln_snapshot_abort(sc->snap);
        if (sc->dir) {
                (void) rmdir(sc->dir);
                free(sc->dir);
        }
        *sc = (struct source_scratch){ .root_fd = -1 };
}

/* ---- unpacking ---- */

/* Labels a layer's snapshot "blob" with the blob it was unpacked from, so
 * that an exporter reuses that blob instead of compressing the diff again.
 * A missing label only costs that work: failures are logged, not fatal. */
static void label_blob(struct kiln_source_image_unpacker *u, const char *id,
                       const struct layer_job *j)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "digest", j->layer->digest, "mediaType",
                              j->layer->media_type, "size", (json_int_t) j->layer->size, "diffID",
                              j->diff_id);
        _cleanup_free_ char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

        json_decref(o);
        if (!s || kiln_snapshot_label_set(u->snapshots, id, "blob", s, &e) < 0)
                log_debug("label snapshot %s with its layer blob: %s", id,
                          e ? e->message : "out of memory");
}

/* Applies one layer on parent into a new committed snapshot named name. */
static int apply_layer(struct kiln_source_image_unpacker *u, const struct layer_job *j,
                       const struct kiln_source_image_options *o, char **ret_id,
                       struct kiln_error **err)
{
        _cleanup_free_ char *status_id = kiln_xasprintf("extracting %s", j->layer->digest);
        int64_t started = kiln_realtime_ns();
        struct source_scratch sc;
        int blob_fd = -1;
        int r;

        send_status(o, status_id, 0, 0, started, 0);
        r = source_scratch_open(u->snapshots, j->parent, u->work_dir, "unpack", &sc, err);
        if (r < 0)
                return r;
        r = kiln_content_store_open_blob(u->store, j->layer->digest, &blob_fd, err);
        if (r < 0)
                goto fail;
        struct kiln_content_layer_options lo = {
                .expect_diff_id = j->diff_id,
                .cancel = o ? o->cancel : NULL,
        };
        r = kiln_content_layer_apply(blob_fd, j->layer->media_type, sc.root_fd, &lo, NULL, err);
        if (r < 0)
                goto fail;
        close(TAKE_FD(blob_fd));
        r = source_scratch_commit(&sc, j->name, ret_id, err);
        if (r < 0)
                return r;
        label_blob(u, *ret_id, j);
        send_status(o, status_id, 0, 0, started, kiln_realtime_ns());
        return 0;
fail:
        if (blob_fd >= 0)
                close(blob_fd);
        source_scratch_abort(&sc);
        return r;
}

/* The snapshot of one chain: an existing one, the outcome of a concurrent
 * unpack of it, or our own. */
static int unpack_chain(struct kiln_source_image_unpacker *u, const struct layer_job *j,
                        const struct kiln_source_image_options *o, char **ret_id,
                        struct kiln_error **err)
{
        for (;;) {
                if (is_cancelled(o))
                        return kiln_error_set(err, -ECANCELED, "cancelled");
                if (kiln_snapshot_lookup(u->snapshots, j->name, ret_id) == 1)
                        return 0;

                pthread_mutex_lock(&u->lock);
                struct flight *f;
                for (f = u->flights; f; f = f->next)
                        if (streq(f->name, j->name))
                                break;
                if (f) {
                        f->refs++;
                        while (!f->done && !is_cancelled(o)) {
                                struct timespec ts;
                                clock_gettime(CLOCK_REALTIME, &ts);
                                ts.tv_nsec += 100 * 1000 * 1000;
                                if (ts.tv_nsec >= 1000000000L) {
                                        ts.tv_sec++;
                                        ts.tv_nsec -= 1000000000L;
                                }
                                (void) pthread_cond_timedwait(&u->cond, &u->lock, &ts);
                        }
                        bool ok = f->done && f->result == 0 && f->id;
                        char *id = ok ? kiln_xstrdup(f->id) : NULL;
                        flight_put_locked(u, f);
                        pthread_mutex_unlock(&u->lock);
                        if (ok) {
                                *ret_id = id;
                                return 0;
                        }
                        /* Cancelled here, or the other unpack failed (it
                         * may have been cancelled itself): look again. */
                        continue;
                }
                f = kiln_xcalloc(1, sizeof(*f));
                f->name = kiln_xstrdup(j->name);
                f->refs = 1;
                f->next = u->flights;
                u->flights = f;
                pthread_mutex_unlock(&u->lock);

                char *id = NULL;
                int r = apply_layer(u, j, o, &id, err);

                pthread_mutex_lock(&u->lock);
                f->done = true;
                f->result = r;
                f->id = id ? kiln_xstrdup(id) : NULL;
                /* Out of the table at once: later callers find the snapshot. */
                for (struct flight **p = &u->flights; *p; p = &(*p)->next)
                        if (*p == f) {
                                *p = f->next;
                                break;
                        }
                f->next = NULL;
                pthread_cond_broadcast(&u->cond);
                if (--f->refs == 0) {
                        free(f->name);
                        free(f->id);
                        free(f);
                }
                pthread_mutex_unlock(&u->lock);
                if (r < 0) {
                        free(id);
                        return r;
                }
                *ret_id = id;
                return 0;
        }
}

static int read_document(struct kiln_content_store *store, const char *digest, size_t max,
                         struct kiln_buf *b, struct kiln_error **err)
{
        *b = KILN_BUF_INIT(max);
        int r = kiln_content_store_read(store, digest, b, err);
        if (r < 0)
                kiln_buf_release(b);
        return r;
}

int kiln_source_image_unpack(struct kiln_source_image_unpacker *u, const char *manifest_digest,
                             const struct kiln_source_image_options *o, char **ret_id,
                             struct kiln_error **err)
{
        struct kiln_buf b;
        int r = read_document(u->store, manifest_digest, KILN_CONTENT_LIMIT_MANIFEST, &b, err);
        if (r < 0)
                return kiln_error_wrap(err, "unpack '%s'", manifest_digest);
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        r = kiln_content_manifest_parse(b.data, b.len, NULL, &m, err);
        kiln_buf_release(&b);
        if (r == 0)
                r = kiln_content_manifest_check_image(m, err);
        if (r < 0)
                return kiln_error_wrap(err, "unpack '%s'", manifest_digest);

        r = read_document(u->store, m->config.digest, KILN_CONTENT_LIMIT_CONFIG, &b, err);
        if (r < 0)
                return kiln_error_wrap(err, "unpack '%s': config", manifest_digest);
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *c = NULL;
        r = kiln_content_config_parse(b.data, b.len, m->config.media_type, &c, err);
        kiln_buf_release(&b);
        if (r < 0)
                return kiln_error_wrap(err, "unpack '%s': config '%s'", manifest_digest,
                                       m->config.digest);

        size_t n_diff = 0;
        while (c->diff_ids[n_diff])
                n_diff++;
        if (n_diff != m->n_layers)
                return kiln_error_set(err, -EINVAL,
                                      "unpack '%s': %zu layers but %zu diff ids in the config",
                                      manifest_digest, m->n_layers, n_diff);
        if (n_diff > KILN_LIMIT_IMAGE_LAYERS)
                return kiln_error_set(err, -E2BIG, "unpack '%s': more than %u layers",
                                      manifest_digest, KILN_LIMIT_IMAGE_LAYERS);
        if (n_diff == 0) {
                *ret_id = NULL;
                return 0;
        }
        char **chain = NULL;
        r = kiln_source_image_chain_ids((const char *const *) c->diff_ids, n_diff, &chain, err);
        if (r < 0)
                return kiln_error_wrap(err, "unpack '%s'", manifest_digest);

        /* The longest chain already unpacked, from the top. */
        char *parent = NULL;
        size_t start = 0;
        for (size_t i = n_diff; i-- > 0;) {
                _cleanup_free_ char *name = kiln_xasprintf("layer:%s", chain[i]);
                if (kiln_snapshot_lookup(u->snapshots, name, &parent) == 1) {
                        start = i + 1;
                        break;
                }
        }
        for (size_t i = start; i < n_diff; i++) {
                _cleanup_free_ char *name = kiln_xasprintf("layer:%s", chain[i]);
                struct layer_job j = {
                        .parent = parent,
                        .name = name,
                        .layer = &m->layers[i],
                        .diff_id = c->diff_ids[i],
                };
                char *id = NULL;
                r = unpack_chain(u, &j, o, &id, err);
                if (r < 0) {
                        kiln_error_wrap(err, "unpack '%s': layer '%s'", manifest_digest,
                                        m->layers[i].digest);
                        free(parent);
                        strv_free(chain);
                        return r;
                }
                free(parent);
                parent = id;
        }
        strv_free(chain);
        *ret_id = parent;
        return 0;
}

int kiln_source_image_snapshot(struct kiln_source_image_unpacker *u,
                               struct kiln_registry_client *client, const char *ref,
                               const struct kiln_source_image_options *o, char **ret_id,
                               struct kiln_error **err)
{
        struct status_map m;
        status_map_init(&m, o);
        struct kiln_registry_pull_options po = {
                .platform = o ? o->platform : NULL,
                .cancel = o ? o->cancel : NULL,
                .on_event = on_registry_event,
                .userdata = &m,
        };
        struct kiln_registry_pull_result res = { 0 };
        int r = kiln_registry_pull(client, u->store, ref, &po, &res, err);
        status_map_release(&m);
        if (r < 0)
                return r;
        if (res.n_images < 1) {
                kiln_registry_pull_result_release(&res);
                return kiln_error_set(err, -ENOENT, "pull '%s': no image for the platform", ref);
        }
        r = kiln_source_image_unpack(u, res.images[0].manifest_digest, o, ret_id, err);
        kiln_registry_pull_result_release(&res);
        if (r < 0)
                return kiln_error_wrap(err, "pull '%s'", ref);
        return 0;
}
