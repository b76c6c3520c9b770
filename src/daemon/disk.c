/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Disk usage, pruning and garbage collection (disk.h), as BuildKit's cache
 * manager (DiskUsage, Prune) and buildkitd's GC do them.
 *
 * Records (api/disk.h) are gathered afresh for every du and every prune
 * round from what is on disk:
 *   - committed snapshots: build steps, image layers, git checkouts, with
 *     the cache records that name them (description, type, usage, last
 *     use) and, added to their size, the content blobs their "blob*"
 *     labels name that no named image keeps;
 *   - cache mounts (<root>/cachemounts), git repositories (<root>/git) and
 *     local contexts (<root>/local), mutable;
 *   - content blobs no named image (<root>/images.json) reaches and no
 *     snapshot label names: manifests and configs of pulled images,
 *     leftovers. One record each, id "sha256:<hex>". A blob published less
 *     than KILN_DAEMON_DISK_BLOB_GRACE_S ago counts as in use: a running
 *     build may be about to name it (an exporter writes layers before the
 *     manifest that names them).
 *
 * A snapshot is in use while a build holds it (kiln_snapshot_use), while an
 * active snapshot is prepared on it, or while one of its children is in
 * use. It is shared when a named image needs one of its blobs (or one of
 * its children's). Only leaves are removed: a parent becomes a candidate
 * once its children are gone, in the next round, as BuildKit's pruneOnce
 * loop does.
 *
 * Sizes of committed snapshots never change: they are measured once and
 * remembered by id.
 */
#include "disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "api/disk.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "config/config.h"
#include "content/content.h"
#include "daemon-internal.h"
#include "export.h"
#include "snapshot/snapshot.h"
#include "solver/cache.h"
#include "solver/solver.h"

/* buildkitd kicks its GC a second after start and after every build, and
 * runs it at most once a minute (control.go, throttle.After). */
#define KILN_DAEMON_GC_DELAY_MS    1000
#define KILN_DAEMON_GC_INTERVAL_MS 60000
/* An unnamed content blob this young may be what a running build is about
 * to name: it counts as in use. */
#define KILN_DAEMON_DISK_BLOB_GRACE_S 600
/* BuildKit's maxPruneBatch: records removed in one round of a plain prune. */
#define KILN_DAEMON_PRUNE_BATCH 10u
/* Filters of one GC policy (BuildKit's ParseAll: any may match). */
#define KILN_DAEMON_GC_FILTERS 64u
/* Directory nesting a size measurement follows. */
#define KILN_DAEMON_DISK_FD_MAX 64
/* The "blob*" labels of one snapshot that are read. */
#define KILN_DAEMON_DISK_LABELS 32u

#define NS_PER_S INT64_C(1000000000)
/* A git repository being removed is renamed to this prefix first. */
#define REMOVING_PREFIX ".removing-"

static atomic_uint removing_counter;

struct size_entry {
        char id[KILN_SNAPSHOT_ID_SIZE];
        uint64_t bytes;
};

struct kiln_daemon_disk {
        struct kiln_daemon *d;

        /* One prune (or GC run) at a time, as BuildKit's muPrune. */
        pthread_mutex_t prune_lock;

        /* Guards everything below. */
        pthread_mutex_t lock;
        pthread_cond_t cond; /* CLOCK_MONOTONIC */
        struct size_entry *sizes;
        size_t n_sizes;
        bool thread_started;
        bool kicked;
        bool stopping;
        int64_t kick_at_ms; /* run no earlier than this */
        int64_t next_ok_ms; /* the throttle: no run before this */
        pthread_t thread;
        atomic_bool cancel;
};

/* The daemon's disk state, made by kiln_daemon_gc_start before the
 * daemon serves any request (so later readers need no lock to find it). */
static struct kiln_daemon_disk *state_get(struct kiln_daemon *d)
{
        struct kiln_daemon_disk *s = d->disk;
        pthread_condattr_t ca;

        if (s)
                return s;
        s = kiln_xcalloc(1, sizeof(*s));
        s->d = d;
        pthread_mutex_init(&s->prune_lock, NULL);
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->cond, &ca);
        pthread_condattr_destroy(&ca);
        d->disk = s;
        return s;
}

/* ---- sizes ---- */

struct walk_state {
        uint64_t bytes;
        void *inodes; /* tsearch tree of hard-linked inodes seen */
};

static _Thread_local struct walk_state *walk;

struct inode_key {
        dev_t dev;
        ino_t ino;
};

static int inode_cmp(const void *a, const void *b)
{
        const struct inode_key *x = a, *y = b;

        if (x->dev != y->dev)
                return x->dev < y->dev ? -1 : 1;
        if (x->ino != y->ino)
                return x->ino < y->ino ? -1 : 1;
        return 0;
}

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
        (void) path;
        (void) f;
        if (flag == FTW_NS)
                return 0;
        if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
                struct inode_key *k = kiln_xmalloc(sizeof(*k));
                void *found;

                *k = (struct inode_key){ st->st_dev, st->st_ino };
                found = tsearch(k, &walk->inodes, inode_cmp);
                if (!found || *(struct inode_key **) found != k) {
                        free(k);
                        return 0;
                }
        }
        walk->bytes += (uint64_t) st->st_blocks * 512u;
        return 0;
}

/* Allocated bytes below path (each hard-linked inode once), not crossing
 * mounts nor following symbolic links. 0 when path is missing. */
static uint64_t dir_usage(const char *path)
{
        struct walk_state w = { 0 };

        walk = &w;
        (void) nftw(path, walk_one, KILN_DAEMON_DISK_FD_MAX, FTW_PHYS | FTW_MOUNT);
        walk = NULL;
        tdestroy(w.inodes, free);
        return w.bytes;
}

static bool size_cached(struct kiln_daemon_disk *st, const char *id, uint64_t *ret)
{
        bool found = false;

        pthread_mutex_lock(&st->lock);
        for (size_t i = 0; i < st->n_sizes; i++)
                if (streq(st->sizes[i].id, id)) {
                        *ret = st->sizes[i].bytes;
                        found = true;
                        break;
                }
        pthread_mutex_unlock(&st->lock);
        return found;
}

static void size_remember(struct kiln_daemon_disk *st, const char *id, uint64_t bytes)
{
        pthread_mutex_lock(&st->lock);
        st->sizes = kiln_xreallocarray(st->sizes, st->n_sizes + 1, sizeof(*st->sizes));
        snprintf(st->sizes[st->n_sizes].id, sizeof(st->sizes[0].id), "%s", id);
        st->sizes[st->n_sizes++].bytes = bytes;
        pthread_mutex_unlock(&st->lock);
}

static void size_forget(struct kiln_daemon_disk *st, const char *id)
{
        pthread_mutex_lock(&st->lock);
        for (size_t i = 0; i < st->n_sizes; i++)
                if (streq(st->sizes[i].id, id)) {
                        st->sizes[i] = st->sizes[--st->n_sizes];
                        break;
                }
        pthread_mutex_unlock(&st->lock);
}

/* Forgets the sizes of snapshots that are gone (removed by anyone). */
static void sizes_keep_only(struct kiln_daemon_disk *st, char **ids, size_t n)
{
        pthread_mutex_lock(&st->lock);
        for (size_t i = 0; i < st->n_sizes;) {
                bool listed = false;

                for (size_t k = 0; k < n && !listed; k++)
                        listed = streq(ids[k], st->sizes[i].id);
                if (listed)
                        i++;
                else
                        st->sizes[i] = st->sizes[--st->n_sizes];
        }
        pthread_mutex_unlock(&st->lock);
}

static uint64_t snapshot_size(struct kiln_daemon_disk *st, const char *id)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        uint64_t bytes = 0;

        if (size_cached(st, id, &bytes))
                return bytes;
        if (kiln_snapshot_usage(st->d->snapshots, id, &bytes, &e) < 0) {
                log_debug("disk usage of snapshot %s: %s", id, kiln_error_message(e));
                return 0;
        }
        size_remember(st, id, bytes);
        return bytes;
}

/* ---- the records ---- */

enum rec_kind {
        REC_SNAPSHOT,
        REC_CACHEMOUNT,
        REC_GIT,
        REC_LOCAL,
        REC_BLOB,
};

/* A string set (digests): sorted array, binary search. */
struct strset {
        char **v;
        size_t n;
};

static int str_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool strset_has(const struct strset *s, const char *k)
{
        return s->n > 0 && bsearch_safe(&k, s->v, s->n, sizeof(char *), str_cmp);
}

static bool strset_has_linear(const struct strset *s, const char *k)
{
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->v[i], k))
                        return true;
        return false;
}

/* How many times k is in s, whose strings are sorted (duplicates kept). */
static size_t strset_count_sorted(const struct strset *s, const char *k)
{
        size_t lo = 0, hi = s->n, n = 0;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (strcmp(s->v[mid], k) < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (; lo < s->n && streq(s->v[lo], k); lo++)
                n++;
        return n;
}

static void strset_add(struct strset *s, const char *k)
{
        s->v = kiln_xreallocarray(s->v, s->n + 1, sizeof(char *));
        s->v[s->n++] = kiln_xstrdup(k);
}

static void strset_sort(struct strset *s)
{
        size_t o = 0;

        if (s->n == 0)
                return;
        qsort_safe(s->v, s->n, sizeof(char *), str_cmp);
        for (size_t i = 0; i < s->n; i++) {
                if (o > 0 && streq(s->v[o - 1], s->v[i])) {
                        free(s->v[i]);
                        continue;
                }
                s->v[o++] = s->v[i];
        }
        s->n = o;
}

static void strset_release(struct strset *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (struct strset){ 0 };
}

struct rec {
        struct kiln_api_disk_record r;
        enum rec_kind kind;
        char *name;                  /* the thing to remove: snapshot id, dir name, digest */
        unsigned children;           /* snapshots: committed and active children */
        unsigned committed_children; /* snapshots: those of them that are listed */
        bool removable;              /* no children: may be removed now */
        char **blobs;                /* snapshots: label blobs removed with it */
        size_t n_blobs;
        size_t parent_index; /* snapshots: index of the parent record, SIZE_MAX none */
};

struct collection {
        struct rec *v;
        size_t n;
        struct strset keep; /* blobs named images need */
};

static void collection_release(struct collection *c)
{
        for (size_t i = 0; i < c->n; i++) {
                kiln_api_disk_record_release(&c->v[i].r);
                free(c->v[i].name);
                for (size_t k = 0; k < c->v[i].n_blobs; k++)
                        free(c->v[i].blobs[k]);
                free(c->v[i].blobs);
        }
        free(c->v);
        strset_release(&c->keep);
        *c = (struct collection){ 0 };
}

static struct rec *rec_new(struct collection *c, enum rec_kind kind, const char *id,
                           const char *type)
{
        struct rec *x;

        c->v = kiln_xreallocarray(c->v, c->n + 1, sizeof(*c->v));
        x = &c->v[c->n++];
        *x = (struct rec){ .kind = kind, .parent_index = SIZE_MAX };
        x->r.id = kiln_xstrdup(id);
        x->name = kiln_xstrdup(id);
        x->r.type = kiln_xstrdup(type);
        return x;
}

/* The blobs of the manifests named images keep: manifest, config, layers
 * (every manifest of an index). */
static int collect_keep(struct kiln_daemon *d, struct strset *keep, struct kiln_error **err)
{
        char **manifests = NULL;
        int r;

        r = kiln_daemon_images_manifests(d, &manifests, err);
        if (r < 0)
                return r;
        for (size_t i = 0; manifests && manifests[i]; i++) {
                struct strset pending = { 0 };

                strset_add(&pending, manifests[i]);
                for (size_t k = 0; k < pending.n && k < KILN_CONTENT_LIMIT_INDEX_ENTRIES; k++) {
                        _cleanup_(kiln_buf_release) struct kiln_buf doc =
                                KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                        struct kiln_content_document *dd = NULL;

                        strset_add(keep, pending.v[k]);
                        if (kiln_content_store_read(d->store, pending.v[k], &doc, &e) < 0 ||
                            kiln_content_document_parse(doc.data, doc.len, NULL, &dd, &e) < 0) {
                                log_debug("gc: named image %s: %s", pending.v[k],
                                          kiln_error_message(e));
                                continue;
                        }
                        if (dd->manifest) {
                                strset_add(keep, dd->manifest->config.digest);
                                for (size_t l = 0; l < dd->manifest->n_layers; l++)
                                        strset_add(keep, dd->manifest->layers[l].digest);
                        }
                        if (dd->index)
                                for (size_t l = 0; l < dd->index->n_manifests; l++)
                                        strset_add(&pending, dd->index->manifests[l].digest);
                        kiln_content_document_free(dd);
                }
                strset_release(&pending);
        }
        kiln_api_strv_free(manifests);
        strset_sort(keep);
        return 0;
}

/* The digests of the "blob*" labels of snapshot id (the unpacker's "blob",
 * the exporters' "blob.<compression>[.<epoch>]"). */
static size_t snapshot_label_blobs(struct kiln_daemon *d, const char *id, char **out, size_t max)
{
        char **keys = NULL;
        size_t n_keys = 0, n = 0;

        if (kiln_snapshot_label_list(d->snapshots, id, &keys, &n_keys) < 0)
                n_keys = 0;
        for (size_t i = 0; i < n_keys && n < max; i++) {
                _cleanup_free_ char *v = NULL;
                json_t *j, *dg;

                if (!streq(keys[i], "blob") && !startswith(keys[i], "blob."))
                        continue;
                if (kiln_snapshot_label_get(d->snapshots, id, keys[i], &v) <= 0)
                        continue;
                j = json_loads(v, 0, NULL);
                dg = j ? json_object_get(j, "digest") : NULL;
                if (dg && json_is_string(dg) &&
                    kiln_content_digest_check(json_string_value(dg), NULL) >= 0)
                        out[n++] = kiln_xstrdup(json_string_value(dg));
                json_decref(j);
        }
        for (size_t i = 0; i < n_keys; i++)
                free(keys[i]);
        free(keys);
        return n;
}

struct record_info {
        char *snapshot_id;
        char *kind;
        char *description;
        int64_t last_used;
        int64_t usage_count;
};

struct records_acc {
        struct record_info *v;
        size_t n;
};

static int records_each(void *ud, const struct kiln_solver_cache_record *r)
{
        struct records_acc *a = ud;

        if (!r->snapshot_id)
                return 0;
        a->v = kiln_xreallocarray(a->v, a->n + 1, sizeof(*a->v));
        a->v[a->n++] = (struct record_info){
                .snapshot_id = kiln_xstrdup(r->snapshot_id),
                .kind = kiln_xstrdup(r->kind ? r->kind : ""),
                .description = kiln_xstrdup(r->description ? r->description : ""),
                .last_used = r->last_used,
                .usage_count = r->usage_count,
        };
        return 0;
}

static void records_release(struct records_acc *a)
{
        for (size_t i = 0; i < a->n; i++) {
                free(a->v[i].snapshot_id);
                free(a->v[i].kind);
                free(a->v[i].description);
        }
        free(a->v);
        *a = (struct records_acc){ 0 };
}

static int record_info_cmp(const void *a, const void *b)
{
        const struct record_info *x = a, *y = b;

        return strcmp(x->snapshot_id, y->snapshot_id);
}

/* The index of the first record of snapshot id (recs sorted), or recs->n. */
static size_t records_first(const struct records_acc *recs, const char *id)
{
        size_t lo = 0, hi = recs->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (strcmp(recs->v[mid].snapshot_id, id) < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static const char *type_of_kind(const char *kind)
{
        if (streq(kind, "source.local"))
                return KILN_API_DISK_TYPE_LOCAL;
        if (streq(kind, "source.git"))
                return KILN_API_DISK_TYPE_GIT_CHECKOUT;
        return KILN_API_DISK_TYPE_REGULAR;
}

/* The snapshot records c->v[first..] by numeric id, for parent lookups. */
struct snap_index {
        unsigned long long id;
        size_t index;
};

static int snap_index_cmp(const void *a, const void *b)
{
        const struct snap_index *x = a, *y = b;

        return x->id < y->id ? -1 : x->id > y->id;
}

static size_t snapshot_index(const struct snap_index *v, size_t n, const char *id)
{
        struct snap_index key = { .id = strtoull(id, NULL, 10) };
        const struct snap_index *found = bsearch_safe(&key, v, n, sizeof(*v), snap_index_cmp);

        return found ? found->index : SIZE_MAX;
}

static int collect_snapshots(struct kiln_daemon_disk *st, struct collection *c,
                             struct kiln_error **err)
{
        struct kiln_daemon *d = st->d;
        struct records_acc recs = { 0 };
        struct strset labelled = { 0 }, counted = { 0 };
        _cleanup_free_ struct snap_index *index = NULL;
        char **ids = NULL;
        size_t n_ids = 0, first = c->n;
        int r;

        r = kiln_solver_cache_foreach(kiln_solver_cache_of(d->solver), records_each, &recs, err);
        if (r < 0)
                goto out;
        if (recs.n > 0)
                qsort_safe(recs.v, recs.n, sizeof(*recs.v), record_info_cmp);
        r = kiln_snapshot_list(d->snapshots, &ids, &n_ids);
        if (r < 0) {
                r = kiln_error_set(err, r, "list snapshots: %s", strerror(-r));
                goto out;
        }
        sizes_keep_only(st, ids, n_ids);
        for (size_t i = 0; i < n_ids; i++) {
                struct kiln_snapshot_info info = { 0 };
                char *blobs[KILN_DAEMON_DISK_LABELS];
                size_t n_blobs;
                struct rec *x;
                uint64_t size;

                if (kiln_snapshot_info(d->snapshots, ids[i], &info) < 0)
                        continue; /* removed meanwhile */
                x = rec_new(c, REC_SNAPSHOT, ids[i], KILN_API_DISK_TYPE_REGULAR);
                x->children = info.children;
                if (info.parent[0]) {
                        x->r.parents = kiln_xcalloc(2, sizeof(char *));
                        x->r.parents[0] = kiln_xstrdup(info.parent);
                        x->r.n_parents = 1;
                }
                x->r.created_ns = info.created_ns;
                x->r.in_use = info.uses > 0;
                size = snapshot_size(st, ids[i]);
                x->r.size = (int64_t) size;

                int64_t last = 0;
                for (size_t k = records_first(&recs, ids[i]);
                     k < recs.n && streq(recs.v[k].snapshot_id, ids[i]); k++) {
                        x->r.usage_count += recs.v[k].usage_count;
                        if (recs.v[k].last_used >= last) {
                                last = recs.v[k].last_used;
                                free(x->r.description);
                                x->r.description = recs.v[k].description[0]
                                                           ? kiln_xstrdup(recs.v[k].description)
                                                           : NULL;
                                free(x->r.type);
                                x->r.type = kiln_xstrdup(type_of_kind(recs.v[k].kind));
                        }
                }
                x->r.last_used_ns = last > 0 ? last * NS_PER_S : 0;

                n_blobs = snapshot_label_blobs(d, ids[i], blobs, ELEMENTSOF(blobs));
                for (size_t k = 0; k < n_blobs; k++) {
                        _cleanup_free_ char *blob = blobs[k];

                        if (strset_has(&c->keep, blob)) {
                                x->r.shared = true;
                                continue;
                        }
                        strset_add(&labelled, blob);
                        x->blobs = kiln_xreallocarray(x->blobs, x->n_blobs + 1, sizeof(char *));
                        x->blobs[x->n_blobs++] = kiln_xstrdup(blob);
                }
                if (!x->r.description && info.name && startswith(info.name, "layer:"))
                        x->r.description = kiln_xasprintf("pulled layer %s", info.name + 6);
                else if (!x->r.description && info.name)
                        x->r.description = kiln_xstrdup(info.name);
                kiln_snapshot_info_release(&info);
        }

        /* Parents (ids are listed in order: a binary search finds them),
         * children counts; then in-use and shared propagation, last use (a
         * layer is used whenever a step on it is). */
        index = kiln_xcalloc(c->n - first + 1, sizeof(*index));
        for (size_t i = first; i < c->n; i++)
                index[i - first] = (struct snap_index){ strtoull(c->v[i].name, NULL, 10), i };
        qsort_safe(index, c->n - first, sizeof(*index), snap_index_cmp);
        for (size_t i = first; i < c->n; i++) {
                struct rec *x = &c->v[i];

                if (x->r.n_parents > 0)
                        x->parent_index = snapshot_index(index, c->n - first, x->r.parents[0]);
                if (x->parent_index != SIZE_MAX)
                        c->v[x->parent_index].committed_children++;
        }
        for (size_t i = first; i < c->n; i++) {
                c->v[i].removable = c->v[i].children == 0;
                if (c->v[i].children > c->v[i].committed_children)
                        c->v[i].r.in_use = true; /* an active snapshot is prepared on it */
        }
        for (size_t i = first; i < c->n; i++) {
                struct rec *x = &c->v[i];
                unsigned depth = 0;

                for (size_t p = x->parent_index; p != SIZE_MAX && depth < KILN_SNAPSHOT_LIMIT_DEPTH;
                     p = c->v[p].parent_index, depth++) {
                        if (x->r.in_use)
                                c->v[p].r.in_use = true;
                        if (x->r.shared)
                                c->v[p].r.shared = true;
                        if (x->r.last_used_ns > c->v[p].r.last_used_ns)
                                c->v[p].r.last_used_ns = x->r.last_used_ns;
                }
        }
        for (size_t i = first; i < c->n; i++)
                if (c->v[i].r.last_used_ns == 0)
                        c->v[i].r.last_used_ns = c->v[i].r.created_ns;
        /* Sizes of label blobs: each counted once, with the first snapshot
         * labelled with it. A blob labelled on several snapshots goes when
         * the last of them has gone (it is an orphan blob record then), not
         * with the first. */
        qsort_safe(labelled.v, labelled.n, sizeof(char *), str_cmp);
        for (size_t i = first; i < c->n; i++) {
                struct rec *x = &c->v[i];
                size_t o = 0;

                for (size_t k = 0; k < x->n_blobs; k++) {
                        _cleanup_free_ char *p =
                                kiln_content_store_blob_path(d->store, x->blobs[k]);
                        bool multi = strset_count_sorted(&labelled, x->blobs[k]) > 1;
                        struct stat sb;

                        if ((!multi || !strset_has_linear(&counted, x->blobs[k])) && p &&
                            stat(p, &sb) == 0)
                                x->r.size += (int64_t) sb.st_blocks * 512;
                        if (multi) {
                                strset_add(&counted, x->blobs[k]);
                                free(x->blobs[k]);
                                continue;
                        }
                        x->blobs[o++] = x->blobs[k];
                }
                x->n_blobs = o;
        }
        strset_sort(&labelled);
        /* Blobs labelled on snapshots are theirs: not orphans. */
        for (size_t i = 0; i < labelled.n; i++)
                strset_add(&c->keep, labelled.v[i]);
        strset_sort(&c->keep);
        r = 0;
out:
        for (size_t i = 0; i < n_ids; i++)
                free(ids[i]);
        free(ids);
        records_release(&recs);
        strset_release(&labelled);
        strset_release(&counted);
        return r;
}

static int64_t stat_time_ns(const struct timespec *ts)
{
        return (int64_t) ts->tv_sec * NS_PER_S + ts->tv_nsec;
}

/* Mutable directories: cache mounts, git repositories, local contexts. */
static void collect_dir_record(struct collection *c, enum rec_kind kind, const char *type,
                               const char *name, const char *path, bool in_use,
                               const char *description)
{
        struct stat sb;
        struct rec *x;

        if (lstat(path, &sb) < 0 || !S_ISDIR(sb.st_mode))
                return;
        x = rec_new(c, kind, name, type);
        x->r.mutable_ = true;
        x->r.in_use = in_use;
        x->r.created_ns = stat_time_ns(&sb.st_ctim);
        x->r.last_used_ns = stat_time_ns(&sb.st_mtim);
        x->r.usage_count = 1;
        x->r.size = (int64_t) dir_usage(path);
        x->r.description = kiln_xstrdup(description);
        x->removable = true;
}

static int collect_cachemounts(struct kiln_daemon_disk *st, struct collection *c,
                               struct kiln_error **err)
{
        struct kiln_solver_cachemount_info *v = NULL;
        size_t n = 0;
        int r;

        r = kiln_solver_cachemounts_list(st->d->solver, &v, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *desc = kiln_xasprintf("cache mount %.12s", v[i].name);

                collect_dir_record(c, REC_CACHEMOUNT, KILN_API_DISK_TYPE_CACHEMOUNT, v[i].name,
                                   v[i].path, v[i].in_use, desc);
                kiln_solver_cachemount_info_release(&v[i]);
        }
        free(v);
        return 0;
}

/* Whether the flock of a git repository (<root>/git/<hex>.lock) is held:
 * a git source is fetching into it. */
static bool git_locked(const char *git_dir, const char *name)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s.lock", git_dir, name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0)
                return false;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK;
        (void) flock(fd, LOCK_UN);
        return false;
}

static bool is_hex64(const char *s)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
                        return false;
        return n == 64;
}

static void collect_hex_dirs(struct kiln_daemon *d, struct collection *c, enum rec_kind kind)
{
        _cleanup_free_ char *dir =
                kiln_xasprintf("%s/%s", d->root, kind == REC_GIT ? "git" : "local");
        struct dirent *de;
        DIR *dp;

        dp = opendir(dir);
        if (!dp)
                return;
        while ((de = readdir(dp))) {
                _cleanup_free_ char *path = NULL;

                if (kind == REC_GIT && startswith(de->d_name, REMOVING_PREFIX) &&
                    !kiln_tmp_name_is_ours(de->d_name)) {
                        /* what an interrupted removal of an earlier kilnd
                         * left (ours are removed by whoever renamed them) */
                        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, de->d_name);
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                        if (kiln_rm_rf_at(AT_FDCWD, p, NULL, &e) < 0)
                                log_debug("%s", kiln_error_message(e));
                        continue;
                }
                if (!is_hex64(de->d_name))
                        continue;
                path = kiln_xasprintf("%s/%s", dir, de->d_name);
                if (kind == REC_GIT)
                        collect_dir_record(c, kind, KILN_API_DISK_TYPE_GIT_CHECKOUT, de->d_name,
                                           path, git_locked(dir, de->d_name), "shared git repo");
                else
                        /* The local store cannot tell from outside whether a
                         * build holds a context: never reclaimable here. */
                        collect_dir_record(c, kind, KILN_API_DISK_TYPE_LOCAL, de->d_name, path,
                                           true, "shared local source");
        }
        closedir(dp);
}

static void collect_blobs(struct kiln_daemon *d, struct collection *c)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/content/blobs/sha256", d->root);
        int64_t now = kiln_realtime_ns();
        struct dirent *de;
        DIR *dp;

        dp = opendir(dir);
        if (!dp)
                return;
        while ((de = readdir(dp))) {
                _cleanup_free_ char *digest = NULL;
                struct stat sb;
                struct rec *x;

                if (!is_hex64(de->d_name))
                        continue;
                digest = kiln_xasprintf("sha256:%s", de->d_name);
                if (strset_has(&c->keep, digest))
                        continue;
                if (fstatat(dirfd(dp), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISREG(sb.st_mode))
                        continue;
                x = rec_new(c, REC_BLOB, digest, KILN_API_DISK_TYPE_REGULAR);
                x->r.created_ns = stat_time_ns(&sb.st_mtim);
                x->r.last_used_ns = x->r.created_ns;
                x->r.size = (int64_t) sb.st_blocks * 512;
                x->r.in_use = now - x->r.created_ns < KILN_DAEMON_DISK_BLOB_GRACE_S * NS_PER_S;
                x->r.description = kiln_xstrdup("content blob");
                x->removable = true;
        }
        closedir(dp);
}

static int collect(struct kiln_daemon_disk *st, struct collection *c, struct kiln_error **err)
{
        int r;

        *c = (struct collection){ 0 };
        r = collect_keep(st->d, &c->keep, err);
        if (r >= 0)
                r = collect_snapshots(st, c, err);
        if (r >= 0)
                r = collect_cachemounts(st, c, err);
        if (r < 0) {
                collection_release(c);
                return r;
        }
        collect_hex_dirs(st->d, c, REC_GIT);
        collect_hex_dirs(st->d, c, REC_LOCAL);
        collect_blobs(st->d, c);
        return 0;
}

/* ---- removal ---- */

/* Removes x. 1 removed, 0 skipped (in use, or gone), < 0 failed. */
static int rec_remove(struct kiln_daemon_disk *st, const struct rec *x, struct kiln_error **err)
{
        struct kiln_daemon *d = st->d;
        int r;

        switch (x->kind) {
        case REC_SNAPSHOT:
                r = kiln_snapshot_remove(d->snapshots, x->name, err);
                if (r == -EBUSY || r == -ENOENT) {
                        *err = kiln_error_free(*err);
                        return 0;
                }
                if (r < 0)
                        return r;
                size_forget(st, x->name);
                /* The records go with the snapshot: a record never names a
                 * missing snapshot for long (the solver drops such a record
                 * as a miss anyway). */
                r = kiln_solver_cache_remove_snapshot(kiln_solver_cache_of(d->solver), x->name,
                                                      err);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < x->n_blobs; i++) {
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                        r = kiln_content_store_delete(d->store, x->blobs[i], &e);
                        if (r < 0 && r != -ENOENT)
                                log_debug("remove blob %s: %s", x->blobs[i], kiln_error_message(e));
                }
                return 1;
        case REC_CACHEMOUNT:
                r = kiln_solver_cachemount_remove(d->solver, x->name, err);
                if (r == -EBUSY || r == -ENOENT) {
                        *err = kiln_error_free(*err);
                        return 0;
                }
                return r < 0 ? r : 1;
        case REC_GIT: {
                _cleanup_free_ char *dir = kiln_xasprintf("%s/git", d->root);
                _cleanup_free_ char *lockp = kiln_xasprintf("%s/%s.lock", dir, x->name);
                _cleanup_free_ char *path = kiln_xasprintf("%s/%s", dir, x->name);
                _cleanup_free_ char *tmp =
                        kiln_xasprintf("%s/" REMOVING_PREFIX "%s-%ld-%u", dir, x->name,
                                       (long) getpid(), atomic_fetch_add(&removing_counter, 1));
                _cleanup_close_ int fd =
                        open(lockp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

                if (fd < 0)
                        return kiln_error_set(err, -errno, "remove git repository '%s': %s", path,
                                              strerror(errno));
                if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                        return errno == EWOULDBLOCK
                                       ? 0
                                       : kiln_error_set(err, -errno,
                                                        "remove git repository '%s': lock: %s",
                                                        path, strerror(errno));
                if (rename(path, tmp) < 0)
                        return errno == ENOENT ? 0
                                               : kiln_error_set(err, -errno,
                                                                "remove git repository '%s': %s",
                                                                path, strerror(errno));
                r = kiln_rm_rf_at(AT_FDCWD, tmp, NULL, err);
                return r < 0 ? r : 1;
        }
        case REC_LOCAL:
                return 0;
        case REC_BLOB:
                r = kiln_content_store_delete(d->store, x->name, err);
                if (r == -ENOENT) {
                        *err = kiln_error_free(*err);
                        return 0;
                }
                return r < 0 ? r : 1;
        }
        return 0;
}

/* ---- prune (BuildKit's cacheManager.prune) ---- */

struct prune_opts {
        bool all;
        struct kiln_api_disk_filter **filters; /* any matches; none: all */
        size_t n_filters;
        int64_t keep_duration_ns;
        int64_t reserved_space;
        int64_t max_used_space;
        int64_t min_free_space;
        const atomic_bool *cancel;
        /* Called for every removed record (may be NULL). */
        void (*on_removed)(void *userdata, const struct kiln_api_disk_record *r);
        void *userdata;
};

static bool filters_match(const struct prune_opts *o, const struct kiln_api_disk_record *r)
{
        if (o->n_filters == 0)
                return true;
        for (size_t i = 0; i < o->n_filters; i++)
                if (kiln_api_disk_filter_match(o->filters[i], r))
                        return true;
        return false;
}

/* calculateKeepBytes */
static int64_t keep_bytes_of(int64_t total, int64_t free_bytes, const struct prune_opts *o)
{
        int64_t keep;

        if (o->max_used_space == 0 && o->reserved_space == 0 && o->min_free_space == 0)
                return 0;
        keep = o->max_used_space;
        int64_t excess = o->min_free_space - free_bytes;
        if (o->min_free_space != 0 && excess > 0) {
                if (keep == 0)
                        keep = total - excess;
                else
                        keep = keep < total - excess ? keep : total - excess;
        } else if (o->min_free_space != 0 && keep == 0)
                keep = total;
        return keep > o->reserved_space ? keep : o->reserved_space;
}

struct candidate {
        size_t index;
        int64_t last_used;
        int64_t usage_count;
        double last_used_index;
        double usage_count_index;
};

static int cand_by_last_used(const void *a, const void *b)
{
        const struct candidate *x = a, *y = b;

        return x->last_used < y->last_used ? -1 : x->last_used > y->last_used;
}

static int cand_by_usage(const void *a, const void *b)
{
        const struct candidate *x = a, *y = b;

        return x->usage_count < y->usage_count ? -1 : x->usage_count > y->usage_count;
}

/* The normalisers of cand_by_score, set by sort_candidates for its qsort. */
static _Thread_local double cmp_max_last, cmp_max_usage;

static int cand_by_score(const void *a, const void *b)
{
        const struct candidate *x = a, *y = b;
        double sx = x->last_used_index / cmp_max_last + x->usage_count_index / cmp_max_usage;
        double sy = y->last_used_index / cmp_max_last + y->usage_count_index / cmp_max_usage;

        return sx < sy ? -1 : sx > sy;
}

/* sortDeleteRecords: least recently and least often used first. */
static void sort_candidates(struct candidate *v, size_t n)
{
        double max_last = 1.0, max_usage = 1.0;
        int64_t val = 0, count = 0;

        qsort_safe(v, n, sizeof(*v), cand_by_last_used);
        for (size_t i = 0; i < n; i++) {
                if (v[i].last_used > val) {
                        val = v[i].last_used;
                        max_last++;
                }
                v[i].last_used_index = max_last;
        }
        qsort_safe(v, n, sizeof(*v), cand_by_usage);
        for (size_t i = 0; i < n; i++) {
                if (v[i].usage_count != count) {
                        count = v[i].usage_count;
                        max_usage++;
                }
                v[i].usage_count_index = max_usage;
        }
        cmp_max_last = max_last;
        cmp_max_usage = max_usage;
        qsort_safe(v, n, sizeof(*v), cand_by_score);
}

/* One round: removes candidates (one in GC mode: the first of the sorted
 * candidates that can go; else up to KILN_DAEMON_PRUNE_BATCH). */
static int prune_once(struct kiln_daemon_disk *st, const struct prune_opts *o, int64_t keep_bytes,
                      int64_t total, int64_t *released_size, int64_t *released_count,
                      struct kiln_error **err)
{
        _cleanup_free_ struct candidate *cands = NULL;
        struct collection c;
        int64_t cutoff = kiln_realtime_ns() - o->keep_duration_ns;
        bool gc_mode = keep_bytes != 0;
        size_t n = 0, batch;
        int r;

        *released_size = *released_count = 0;
        if (keep_bytes != 0 && total < keep_bytes)
                return 0;
        r = collect(st, &c, err);
        if (r < 0)
                return r;
        cands = kiln_xcalloc(c.n + 1, sizeof(*cands));
        for (size_t i = 0; i < c.n; i++) {
                const struct rec *x = &c.v[i];

                if (x->r.in_use || !x->removable || x->kind == REC_LOCAL)
                        continue;
                if (!o->all && x->r.shared)
                        continue;
                if (o->keep_duration_ns != 0 && x->r.last_used_ns > cutoff)
                        continue;
                if (!filters_match(o, &x->r))
                        continue;
                cands[n++] = (struct candidate){ .index = i,
                                                 .last_used = x->r.last_used_ns,
                                                 .usage_count = x->r.usage_count };
        }
        batch = n;
        if (gc_mode && n > 0) {
                batch = 1;
                sort_candidates(cands, n);
        } else if (batch > KILN_DAEMON_PRUNE_BATCH)
                batch = KILN_DAEMON_PRUNE_BATCH;
        for (size_t i = 0, removed = 0; i < n && removed < batch; i++) {
                const struct rec *x = &c.v[cands[i].index];

                if (o->cancel && atomic_load(o->cancel)) {
                        r = kiln_error_set(err, -ECANCELED, "prune: cancelled");
                        break;
                }
                r = rec_remove(st, x, err);
                if (r < 0) {
                        kiln_error_wrap(err, "prune '%s'", x->r.id);
                        break;
                }
                if (r == 0)
                        continue;
                removed++;
                *released_size += x->r.size;
                (*released_count)++;
                if (o->on_removed)
                        o->on_removed(o->userdata, &x->r);
                r = 0;
        }
        collection_release(&c);
        return r < 0 ? r : 0;
}

static int disk_stat(const char *root, int64_t *total, int64_t *free_bytes)
{
        struct statvfs sv;

        if (statvfs(root, &sv) < 0)
                return -errno;
        *total = (int64_t) sv.f_frsize * (int64_t) sv.f_blocks;
        *free_bytes = (int64_t) sv.f_frsize * (int64_t) sv.f_bfree;
        return 0;
}

/* Returns the bytes released in *ret_released (may be NULL). st->prune_lock
 * held. */
static int prune_run(struct kiln_daemon_disk *st, const struct prune_opts *o, int64_t *ret_released,
                     int64_t *ret_count, struct kiln_error **err)
{
        int64_t total = 0, dtotal = 0, dfree = 0, keep, released = 0, count = 0;
        int r;

        if (o->max_used_space != 0 || o->reserved_space != 0 || o->min_free_space != 0) {
                struct collection c;

                r = collect(st, &c, err);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < c.n; i++)
                        if (!c.v[i].r.shared)
                                total += c.v[i].r.size;
                collection_release(&c);
        }
        if (o->min_free_space != 0) {
                r = disk_stat(st->d->root, &dtotal, &dfree);
                if (r < 0)
                        return kiln_error_set(err, r, "could not stat fs at %s: %s", st->d->root,
                                              strerror(-r));
        }
        keep = keep_bytes_of(total, dfree, o);
        for (;;) {
                int64_t size = 0, n = 0;

                r = prune_once(st, o, keep, total, &size, &n, err);
                released += size;
                count += n;
                if (r < 0 || n == 0)
                        break;
                total -= size;
        }
        if (ret_released)
                *ret_released = released;
        if (ret_count)
                *ret_count = count;
        return r;
}

/* ---- du and prune endpoints ---- */

struct du_args {
        char *filter;
        int64_t until_ns;
};

static void du_args_free(void *p)
{
        struct du_args *a = p;

        if (!a)
                return;
        free(a->filter);
        free(a);
}

static int du_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct du_args *a = args;
        struct kiln_daemon *d = kiln_daemon_op_daemon(op);
        struct kiln_daemon_disk *st = state_get(d);
        _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;
        struct kiln_api_disk_record *out = NULL;
        int64_t cutoff = kiln_realtime_ns() - a->until_ns;
        struct collection c;
        json_t *j = NULL;
        size_t n = 0, len;
        char *body;
        int r;

        r = kiln_api_disk_filter_parse(a->filter, &f, err);
        if (r < 0)
                return r;
        r = collect(st, &c, err);
        if (r < 0)
                return kiln_error_wrap(err, "disk usage");
        out = kiln_xcalloc(c.n + 1, sizeof(*out));
        for (size_t i = 0; i < c.n; i++) {
                if (!kiln_api_disk_filter_match(f, &c.v[i].r))
                        continue;
                if (a->until_ns > 0 && c.v[i].r.last_used_ns > cutoff)
                        continue;
                out[n++] = c.v[i].r; /* borrowed */
        }
        r = kiln_api_du_result_to_json(out, n, &j);
        free(out);
        collection_release(&c);
        if (r < 0)
                return kiln_error_set(err, -ENOMEM, "disk usage: out of memory");
        body = kiln_api_json_dump(j, &len);
        json_decref(j);
        if (!body)
                return kiln_error_set(err, -ENOMEM, "disk usage: out of memory");
        kiln_daemon_op_set_answer(op, MHD_HTTP_OK, KILN_API_CONTENT_TYPE_JSON, body, len, NULL,
                                  NULL);
        return 0;
}

struct du_query {
        const char *filter;
        const char *until;
        char *error;
};

static enum MHD_Result du_query_each(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
        struct du_query *q = cls;
        const char **slot = streq(key, "filter")  ? &q->filter
                            : streq(key, "until") ? &q->until
                                                  : NULL;

        (void) kind;
        if (!slot) {
                q->error = kiln_xasprintf("unknown query parameter '%s'", key);
                return MHD_NO;
        }
        if (*slot) {
                q->error = kiln_xasprintf("query parameter '%s' given more than once", key);
                return MHD_NO;
        }
        *slot = value ? value : "";
        return MHD_YES;
}

enum MHD_Result kiln_daemon_handle_du(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                      struct MHD_Connection *conn, const char *method,
                                      const char *url)
{
        _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct du_query q = { 0 };
        struct kiln_daemon_op_spec spec;
        struct du_args *a;
        int64_t until = 0;

        (void) MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, du_query_each, &q);
        if (q.error) {
                _cleanup_free_ char *msg = TAKE_PTR(q.error);

                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL,
                                                 msg);
        }
        if (q.until && (kiln_config_parse_duration(q.until, &until) < 0 || until < 0)) {
                _cleanup_free_ char *msg =
                        kiln_xasprintf("query parameter 'until': invalid duration '%s'", q.until);

                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL,
                                                 msg);
        }
        if (kiln_api_disk_filter_parse(q.filter, &f, &err) < 0)
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL,
                                                 kiln_error_message(err));
        a = kiln_xcalloc(1, sizeof(*a));
        a->filter = q.filter ? kiln_xstrdup(q.filter) : NULL;
        a->until_ns = until;
        spec = (struct kiln_daemon_op_spec){
                .what = "du",
                .ref = "",
                .stream = false,
                .fn = du_run,
                .args = a,
                .args_free = du_args_free,
        };
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}

struct prune_args {
        struct kiln_api_prune_request req;
};

static void prune_args_free(void *p)
{
        struct prune_args *a = p;

        if (!a)
                return;
        kiln_api_prune_request_release(&a->req);
        free(a);
}

static void prune_emit(void *userdata, const struct kiln_api_disk_record *r)
{
        struct kiln_daemon_op *op = userdata;
        char now[KILN_API_TIME_SIZE];
        json_t *j = NULL;

        kiln_api_time_now(now);
        if (kiln_api_prune_record_event_to_json(r, now, &j) < 0)
                return;
        kiln_daemon_op_emit_json(op, j, false);
        json_decref(j);
}

static int prune_op_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct prune_args *a = args;
        struct kiln_daemon *d = kiln_daemon_op_daemon(op);
        struct kiln_daemon_disk *st = state_get(d);
        _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;
        struct kiln_api_disk_filter *fs[1];
        char now[KILN_API_TIME_SIZE];
        int64_t released = 0, count = 0;
        json_t *j = NULL;
        int r;

        r = kiln_api_disk_filter_parse(a->req.filter, &f, err);
        if (r < 0)
                return r;
        fs[0] = f;
        struct prune_opts o = {
                .all = a->req.all,
                .filters = fs,
                .n_filters = 1,
                .keep_duration_ns = a->req.keep_duration_ns,
                .reserved_space = a->req.reserved_space,
                .max_used_space = a->req.max_used_space,
                .min_free_space = a->req.min_free_space,
                .cancel = kiln_daemon_op_cancel_flag(op),
                .on_removed = prune_emit,
                .userdata = op,
        };
        pthread_mutex_lock(&st->prune_lock);
        r = prune_run(st, &o, &released, &count, err);
        pthread_mutex_unlock(&st->prune_lock);
        if (r < 0)
                return r;
        log_debug("prune removed %" PRId64 " records, %" PRId64 " bytes", count, released);
        kiln_api_time_now(now);
        if (kiln_api_prune_result_to_json(released, count, now, &j) < 0)
                return kiln_error_set(err, -ENOMEM, "prune: out of memory");
        kiln_daemon_op_emit_json(op, j, false);
        json_decref(j);
        return 0;
}

enum MHD_Result kiln_daemon_handle_prune(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                         struct MHD_Connection *conn, const char *method,
                                         const char *url)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_daemon_op_spec spec;
        struct prune_args *a;
        json_error_t jerr;
        json_t *j;
        int r;

        if (req->body.len == 0)
                j = json_object();
        else
                j = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j) {
                _cleanup_free_ char *msg = kiln_xasprintf("invalid JSON body: %d:%d: %s", jerr.line,
                                                          jerr.column, jerr.text);

                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL,
                                                 msg);
        }
        a = kiln_xcalloc(1, sizeof(*a));
        r = kiln_api_prune_request_from_json(j, &a->req, &err);
        json_decref(j);
        if (r < 0) {
                prune_args_free(a);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL,
                                                 kiln_error_message(err));
        }
        spec = (struct kiln_daemon_op_spec){
                .what = "prune",
                .ref = "",
                .stream = true,
                .fn = prune_op_run,
                .args = a,
                .args_free = prune_args_free,
        };
        return kiln_daemon_op_start(d, req, conn, method, url, &spec);
}

/* ---- the garbage collector ---- */

static void gc_once(struct kiln_daemon_disk *st)
{
        struct kiln_daemon *d = st->d;
        struct kiln_config_gc_policy *pol;
        int64_t dtotal = 0, dfree = 0, size = 0;
        size_t n = 0;

        if (disk_stat(d->root, &dtotal, &dfree) < 0)
                dtotal = 0;
        pol = kiln_config_gc_policies_effective(&d->config->worker_oci, (uint64_t) dtotal, &n);
        pthread_mutex_lock(&st->prune_lock);
        for (size_t i = 0; i < n && !atomic_load(&st->cancel); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                struct kiln_api_disk_filter *fs[KILN_DAEMON_GC_FILTERS] = { 0 };
                size_t nf = 0;
                int64_t released = 0;
                int r = 0;

                for (size_t k = 0; k < pol[i].n_filters && nf < ELEMENTSOF(fs) && r >= 0; k++) {
                        r = kiln_api_disk_filter_parse(pol[i].filters[k], &fs[nf], &e);
                        if (r >= 0)
                                nf++;
                }
                if (r >= 0) {
                        struct prune_opts o = {
                                .all = pol[i].all,
                                .filters = fs,
                                .n_filters = nf,
                                .keep_duration_ns = pol[i].keep_duration,
                                .reserved_space = kiln_config_disk_space_as_bytes(
                                        &pol[i].reserved_space, (uint64_t) dtotal),
                                .max_used_space = kiln_config_disk_space_as_bytes(
                                        &pol[i].max_used_space, (uint64_t) dtotal),
                                .min_free_space = kiln_config_disk_space_as_bytes(
                                        &pol[i].min_free_space, (uint64_t) dtotal),
                                .cancel = &st->cancel,
                        };
                        r = prune_run(st, &o, &released, NULL, &e);
                        size += released;
                }
                if (r < 0 && r != -ECANCELED)
                        log_error("gc error: %s", kiln_error_message(e));
                for (size_t k = 0; k < nf; k++)
                        kiln_api_disk_filter_free(fs[k]);
                if (r < 0)
                        break;
        }
        pthread_mutex_unlock(&st->prune_lock);
        kiln_config_gc_policies_free(pol, n);
        if (size > 0)
                log_debug("gc cleaned up %" PRId64 " bytes", size);
}

static void *gc_thread(void *p)
{
        struct kiln_daemon_disk *st = p;

        pthread_mutex_lock(&st->lock);
        for (;;) {
                int64_t now = kiln_mono_ms(), at;

                if (st->stopping)
                        break;
                if (!st->kicked) {
                        pthread_cond_wait(&st->cond, &st->lock);
                        continue;
                }
                at = st->kick_at_ms > st->next_ok_ms ? st->kick_at_ms : st->next_ok_ms;
                if (now < at) {
                        struct timespec ts = { .tv_sec = at / 1000,
                                               .tv_nsec = (at % 1000) * 1000000L };

                        pthread_cond_timedwait(&st->cond, &st->lock, &ts);
                        continue;
                }
                st->kicked = false;
                pthread_mutex_unlock(&st->lock);
                gc_once(st);
                pthread_mutex_lock(&st->lock);
                st->next_ok_ms = kiln_mono_ms() + KILN_DAEMON_GC_INTERVAL_MS;
        }
        pthread_mutex_unlock(&st->lock);
        return NULL;
}

int kiln_daemon_gc_start(struct kiln_daemon *d, struct kiln_error **err)
{
        struct kiln_daemon_disk *st = state_get(d);
        int r;

        if (d->config->worker_oci.gc == 0 || !d->solver || !d->snapshots)
                return 0; /* gc = false: prune only on request */
        pthread_mutex_lock(&st->lock);
        if (st->thread_started) {
                pthread_mutex_unlock(&st->lock);
                return 0;
        }
        st->stopping = false;
        atomic_store(&st->cancel, false);
        r = -pthread_create(&st->thread, NULL, gc_thread, st);
        if (r == 0)
                st->thread_started = true;
        pthread_mutex_unlock(&st->lock);
        if (r < 0)
                return kiln_error_set(err, r, "start the garbage collector: %s", strerror(-r));
        kiln_daemon_gc_kick(d);
        return 0;
}

void kiln_daemon_gc_kick(struct kiln_daemon *d)
{
        struct kiln_daemon_disk *st = d->disk;

        if (!st)
                return;
        pthread_mutex_lock(&st->lock);
        if (st->thread_started && !st->stopping) {
                if (!st->kicked)
                        st->kick_at_ms = kiln_mono_ms() + KILN_DAEMON_GC_DELAY_MS;
                st->kicked = true;
                pthread_cond_broadcast(&st->cond);
        }
        pthread_mutex_unlock(&st->lock);
}

void kiln_daemon_gc_stop(struct kiln_daemon *d)
{
        struct kiln_daemon_disk *st = d->disk;
        bool join;

        if (!st)
                return;
        pthread_mutex_lock(&st->lock);
        st->stopping = true;
        atomic_store(&st->cancel, true);
        join = st->thread_started;
        st->thread_started = false;
        pthread_cond_broadcast(&st->cond);
        pthread_mutex_unlock(&st->lock);
        if (join)
                (void) pthread_join(st->thread, NULL);
}

void kiln_daemon_disk_free(struct kiln_daemon *d)
{
        struct kiln_daemon_disk *st = d->disk;

        kiln_daemon_gc_stop(d);
        if (!st)
                return;
        d->disk = NULL;
        pthread_mutex_destroy(&st->prune_lock);
        pthread_mutex_destroy(&st->lock);
        pthread_cond_destroy(&st->cond);
        free(st->sizes);
        free(st);
}
