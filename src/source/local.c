/* SPDX-License-Identifier: Apache-2.0 */
#include "source/local.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/pattern.h"
#include "base/sha256.h"

/* Bytes read from the client per call, and written per write. */
#define RECEIVE_CHUNK (256u << 10)
#define INDEX_VERSION 1

/* One file of a list or of an index. Arrays of these are kept sorted by
 * path_cmp, which orders every directory's descendants right after it. */
struct entry {
        char *path;
        uint32_t mode;
        uint64_t size;
        int64_t mtime_ns;
        uint32_t uid;
        uint32_t gid;
        char *link;
        char hash[KILN_SHA256_HEX_LEN + 1]; /* regular files: content; else "" */
};

struct entries {
        struct entry *v;
        size_t n;
};

/* What the store knows about one key; the members below `refs` are
 * guarded by the store's lock. */
struct key_state {
        struct key_state *next;
        char hash[KILN_SHA256_HEX_LEN + 1];
        unsigned refs;
        unsigned readers;
        unsigned writers_waiting;
        bool writer;
};

struct kiln_source_local_store {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* any key's lock state changed */
        char *dir;           /* <root>/local */
        struct key_state *keys;
        unsigned long counter;
        /* The index last read or written, by key hash: rebuilding the same
         * context again parses no index file. Under lock. */
        char last_hash[KILN_SHA256_HEX_LEN + 1];
        struct entries last;
        char *last_digest; /* the client's digest of that list, or NULL */
};

struct kiln_source_local_transfer {
        struct kiln_source_local_store *s;
        struct key_state *k;
        char *digest; /* the client's digest of the list, or NULL */
        char *key_dir;
        struct entries list;
        bool *needed;
        bool *got;
        const char **needed_paths;
        size_t n_needed;
        char *staging_dir; /* absolute */
        int staging_fd;
        bool received;
        bool finished;
};

struct kiln_source_local_context {
        atomic_uint refs;
        struct kiln_source_local_store *s;
        struct key_state *k;
        struct entries idx;
        int fd;
        char *path;
        char digest[KILN_SOURCE_LOCAL_DIGEST_LEN];
};

/* ---- paths and entries ---- */

/* '/' sorts before every other byte, so that "a/b/c" comes before "a/b-c"
 * and each directory's subtree is contiguous. */
static int path_cmp(const char *a, const char *b)
{
        for (;; a++, b++) {
                int ca = *a ? (*a == '/' ? 1 : (unsigned char) *a + 1) : 0;
                int cb = *b ? (*b == '/' ? 1 : (unsigned char) *b + 1) : 0;
                if (ca != cb)
                        return ca - cb;
                if (!ca)
                        return 0;
        }
}

static int entry_cmp(const void *a, const void *b)
{
        return path_cmp(((const struct entry *) a)->path, ((const struct entry *) b)->path);
}

static void entries_release(struct entries *e)
{
        for (size_t i = 0; i < e->n; i++) {
                free(e->v[i].path);
                free(e->v[i].link);
        }
        free(e->v);
        e->v = NULL;
        e->n = 0;
}

static void entries_copy(const struct entries *from, struct entries *to)
{
        to->v = kiln_xcalloc(from->n ?: 1, sizeof(struct entry));
        to->n = from->n;
        for (size_t i = 0; i < from->n; i++) {
                to->v[i] = from->v[i];
                to->v[i].path = kiln_xstrdup(from->v[i].path);
                to->v[i].link = from->v[i].link ? kiln_xstrdup(from->v[i].link) : NULL;
        }
}

/* Index of path in e, or -1. */
static ssize_t entries_find(const struct entries *e, const char *path)
{
        size_t lo = 0, hi = e->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = path_cmp(e->v[mid].path, path);
                if (c == 0)
                        return (ssize_t) mid;
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -1;
}

/* First index whose path is not below "prefix/" in path_cmp order, starting
 * the search at the entry of prefix itself (or at the first entry for the
 * root, prefix ""): [from, end) is the subtree. */
static size_t subtree_end(const struct entries *e, size_t from, const char *prefix)
{
        size_t plen = strlen(prefix);
        size_t i = from;
        while (i < e->n) {
                const char *p = e->v[i].path;
                if (plen && (strncmp(p, prefix, plen) != 0 || p[plen] != '/'))
                        break;
                i++;
        }
        return i;
}

/* A relative, clean path: no empty, "." or ".." component, no leading or
 * trailing '/'. Returns NULL or what is wrong. */
static const char *path_problem(const char *p, size_t *ret_depth)
{
        size_t n = strlen(p), depth = 0;
        if (n == 0)
                return "path is empty";
        if (n > KILN_LIMIT_LOCAL_PATH)
                return "path is too long";
        if (p[0] == '/')
                return "path is absolute";
        const char *c = p;
        for (;;) {
                const char *slash = strchr(c, '/');
                size_t len = slash ? (size_t) (slash - c) : strlen(c);
                if (len == 0)
                        return "path is not clean";
                if (len == 2 && c[0] == '.' && c[1] == '.')
                        return "path has a '..' component";
                if (len == 1 && c[0] == '.')
                        return "path is not clean";
                depth++;
                if (!slash)
                        break;
                c = slash + 1;
        }
        if (depth > KILN_LIMIT_LOCAL_DEPTH)
                return "path is too deep";
        if (ret_depth)
                *ret_depth = depth;
        return NULL;
}

static bool type_supported(uint32_t mode)
{
        return S_ISDIR(mode) || S_ISREG(mode) || S_ISLNK(mode) || S_ISFIFO(mode);
}

static char *quoted(const char *s)
{
        return kiln_quote_untrusted(s, strlen(s), 256);
}

/* ---- index file ---- */

static int index_to_json(const struct entries *e, char **ret)
{
        json_t *arr = json_array();
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < e->n; i++) {
                const struct entry *x = &e->v[i];
                json_t *row = json_pack("[s,I,I,I,I,I,s?,s?]", x->path, (json_int_t) x->mode,
                                        (json_int_t) x->size, (json_int_t) x->mtime_ns,
                                        (json_int_t) x->uid, (json_int_t) x->gid, x->link,
                                        x->hash[0] ? x->hash : NULL);
                if (!row || json_array_append_new(arr, row) < 0) {
                        json_decref(arr);
                        return -ENOMEM;
                }
        }
        json_t *root = json_pack("{s:i,s:o}", "version", INDEX_VERSION, "entries", arr);
        if (!root)
                return -ENOMEM;
        char *s = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static bool hex64(const char *s)
{
        if (strlen(s) != KILN_SHA256_HEX_LEN)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

/* Reads key_dir/index. -ENOENT when there is none; -EBADMSG when it is not
 * one kiln wrote. */
static int index_load(const char *key_dir, struct entries *ret, struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/index", key_dir);
        struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_LOCAL_INDEX);
        int r = kiln_read_file_at(AT_FDCWD, path, &b);
        if (r < 0) {
                char tmp[64];
                kiln_error_set(err, r, "read '%s': %s", path,
                               kiln_read_file_strerror(r, b.max, tmp));
                kiln_buf_release(&b);
                return r;
        }
        json_error_t je;
        json_t *root = json_loadb(b.data, b.len, 0, &je);
        kiln_buf_release(&b);
        json_t *arr = root ? json_object_get(root, "entries") : NULL;
        json_t *ver = root ? json_object_get(root, "version") : NULL;
        if (!json_is_array(arr) || !json_is_integer(ver) ||
            json_integer_value(ver) != INDEX_VERSION ||
            json_array_size(arr) > KILN_LIMIT_LOCAL_ENTRIES) {
                json_decref(root);
                return kiln_error_set(err, -EBADMSG, "read '%s': not a kiln context index", path);
        }
        struct entries e = { .v = kiln_xcalloc(json_array_size(arr) ?: 1, sizeof(struct entry)) };
        size_t i;
        json_t *row;
        json_array_foreach (arr, i, row) {
                const char *p = NULL, *link = NULL, *hash = NULL;
                json_t *jlink = NULL, *jhash = NULL;
                json_int_t mode, size, mtime, uid, gid;
                int ur = json_unpack(row, "[s,I,I,I,I,I,o,o]", &p, &mode, &size, &mtime, &uid, &gid,
                                     &jlink, &jhash);
                if (ur == 0) {
                        link = json_string_value(jlink);
                        hash = json_string_value(jhash);
                        if ((!link && !json_is_null(jlink)) || (!hash && !json_is_null(jhash)))
                                ur = -1;
                }
                if (ur < 0 || path_problem(p, NULL) || mode < 0 || mode > UINT32_MAX || size < 0 ||
                    uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX ||
                    !type_supported((uint32_t) mode) || (hash && !hex64(hash)) ||
                    (S_ISLNK(mode) && !link) || (e.n && path_cmp(e.v[e.n - 1].path, p) >= 0)) {
                        entries_release(&e);
                        json_decref(root);
                        return kiln_error_set(err, -EBADMSG, "read '%s': entry %zu is malformed",
                                              path, i);
                }
                struct entry *x = &e.v[e.n++];
                x->path = kiln_xstrdup(p);
                x->mode = (uint32_t) mode;
                x->size = (uint64_t) size;
                x->mtime_ns = mtime;
                x->uid = (uint32_t) uid;
                x->gid = (uint32_t) gid;
                x->link = link ? kiln_xstrdup(link) : NULL;
                if (hash)
                        memcpy(x->hash, hash, KILN_SHA256_HEX_LEN + 1);
        }
        json_decref(root);
        *ret = e;
        return 0;
}

static int index_save(const char *key_dir, const struct entries *e, struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/index", key_dir);
        _cleanup_free_ char *data = NULL;
        int r = index_to_json(e, &data);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        r = kiln_write_file_atomic(path, data, strlen(data), 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        return 0;
}

/* The cached index of a key: remembered (e copied), forgotten (e NULL). */
static void index_remember(struct kiln_source_local_store *s, const char *hash,
                           const struct entries *e, const char *digest)
{
        pthread_mutex_lock(&s->lock);
        if (e || streq(s->last_hash, hash)) {
                entries_release(&s->last);
                s->last_hash[0] = '\0';
                free(s->last_digest);
                s->last_digest = NULL;
        }
        if (e) {
                entries_copy(e, &s->last);
                memcpy(s->last_hash, hash, sizeof(s->last_hash));
                s->last_digest = digest ? kiln_xstrdup(digest) : NULL;
        }
        pthread_mutex_unlock(&s->lock);
}

/* index_load, through the store's cache of the last index. */
static int index_get(struct kiln_source_local_store *s, const struct key_state *k,
                     const char *key_dir, struct entries *ret, struct kiln_error **err)
{
        pthread_mutex_lock(&s->lock);
        if (streq(s->last_hash, k->hash)) {
                entries_copy(&s->last, ret);
                pthread_mutex_unlock(&s->lock);
                return 0;
        }
        pthread_mutex_unlock(&s->lock);
        int r = index_load(key_dir, ret, err);
        if (r == 0)
                index_remember(s, k->hash, ret, NULL);
        return r;
}

/* ---- digests ---- */

static void hash_field(struct kiln_sha256 *h, const char *s)
{
        char len[24];
        int n = snprintf(len, sizeof(len), "%zu:", s ? strlen(s) : 0);
        kiln_sha256_update(h, len, (size_t) n);
        if (s)
                kiln_sha256_update(h, s, strlen(s));
}

static void hash_number(struct kiln_sha256 *h, uint64_t v)
{
        char buf[24];
        snprintf(buf, sizeof(buf), "%" PRIu64, v);
        hash_field(h, buf);
}

static void finish_digest(struct kiln_sha256 *h, char out[static KILN_SOURCE_LOCAL_DIGEST_LEN])
{
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_final_hex(h, hex);
        snprintf(out, KILN_SOURCE_LOCAL_DIGEST_LEN, "sha256:%s", hex);
}

static void context_digest(const struct entries *e, char out[static KILN_SOURCE_LOCAL_DIGEST_LEN])
{
        struct kiln_sha256 *h = kiln_sha256_new();
        if (!h)
                abort();
        hash_field(h, "kiln.local.v1");
        for (size_t i = 0; i < e->n; i++) {
                const struct entry *x = &e->v[i];
                hash_field(h, x->path);
                hash_number(h, x->mode & (S_IFMT | 07777));
                hash_number(h, x->uid);
                hash_number(h, x->gid);
                hash_field(h, S_ISLNK(x->mode) ? x->link : "");
                hash_field(h, x->hash);
        }
        finish_digest(h, out);
        kiln_sha256_free(h);
}

/* ---- per-key locks ---- */

static struct key_state *key_get(struct kiln_source_local_store *s, const char *hash)
{
        pthread_mutex_lock(&s->lock);
        struct key_state *k;
        for (k = s->keys; k; k = k->next)
                if (streq(k->hash, hash))
                        break;
        if (!k) {
                k = kiln_xcalloc(1, sizeof(*k));
                memcpy(k->hash, hash, sizeof(k->hash));
                k->next = s->keys;
                s->keys = k;
        }
        k->refs++;
        pthread_mutex_unlock(&s->lock);
        return k;
}

/* With the store's lock held. */
static void key_put_locked(struct kiln_source_local_store *s, struct key_state *k)
{
        if (--k->refs > 0)
                return;
        for (struct key_state **p = &s->keys; *p; p = &(*p)->next)
                if (*p == k) {
                        *p = k->next;
                        break;
                }
        free(k);
}

static void key_put(struct kiln_source_local_store *s, struct key_state *k)
{
        pthread_mutex_lock(&s->lock);
        key_put_locked(s, k);
        pthread_mutex_unlock(&s->lock);
}

static bool is_cancelled(const atomic_bool *cancel)
{
        return cancel && atomic_load(cancel);
}

/* Waits on the store's condition for at most 100 ms (lock held). */
static void wait_a_while(struct kiln_source_local_store *s)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        (void) pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

static int lock_exclusive(struct kiln_source_local_store *s, struct key_state *k,
                          const atomic_bool *cancel)
{
        int r = 0;
        pthread_mutex_lock(&s->lock);
        k->writers_waiting++;
        while (k->readers > 0 || k->writer) {
                if (is_cancelled(cancel)) {
                        r = -ECANCELED;
                        break;
                }
                wait_a_while(s);
        }
        k->writers_waiting--;
        if (r == 0)
                k->writer = true;
        pthread_mutex_unlock(&s->lock);
        return r;
}

static void unlock_exclusive(struct kiln_source_local_store *s, struct key_state *k, bool to_shared)
{
        pthread_mutex_lock(&s->lock);
        k->writer = false;
        if (to_shared)
                k->readers++;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

static int lock_shared(struct kiln_source_local_store *s, struct key_state *k,
                       const atomic_bool *cancel)
{
        int r = 0;
        pthread_mutex_lock(&s->lock);
        while (k->writer || k->writers_waiting > 0) {
                if (is_cancelled(cancel)) {
                        r = -ECANCELED;
                        break;
                }
                wait_a_while(s);
        }
        if (r == 0)
                k->readers++;
        pthread_mutex_unlock(&s->lock);
        return r;
}

static void unlock_shared(struct kiln_source_local_store *s, struct key_state *k)
{
        pthread_mutex_lock(&s->lock);
        k->readers--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* ---- store ---- */

static void key_hash(const char *key, char hex[static KILN_SHA256_HEX_LEN + 1])
{
        kiln_sha256_hex(key, strlen(key), hex);
}

int kiln_source_local_store_open(const char *root_dir, struct kiln_source_local_store **ret,
                                 struct kiln_error **err)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/local", root_dir);
        int r = kiln_mkdir_p(dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", dir, strerror(-r));

        /* Staged files of transfers that never finished. */
        DIR *d = opendir(dir);
        if (!d)
                return kiln_error_set(err, -errno, "open '%s': %s", dir, strerror(errno));
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!hex64(de->d_name))
                        continue;
                _cleanup_free_ char *staging = kiln_xasprintf("%s/staging", de->d_name);
                struct kiln_error *e = NULL;
                r = kiln_rm_rf_at(dirfd(d), staging, NULL, &e);
                if (r < 0)
                        log_warning("local context: %s", kiln_error_message(e));
                kiln_error_free(e);
        }
        closedir(d);

        struct kiln_source_local_store *s = kiln_xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_cond_init(&s->cond, &ca);
        pthread_condattr_destroy(&ca);
        s->dir = TAKE_PTR(dir);
        *ret = s;
        return 0;
}

struct kiln_source_local_store *kiln_source_local_store_free(struct kiln_source_local_store *s)
{
        if (!s)
                return NULL;
        if (s->keys)
                log_warning("local context store freed with keys still in use");
        entries_release(&s->last);
        free(s->last_digest);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s->dir);
        free(s);
        return NULL;
}

/* ---- transfer: begin ---- */

static int list_build(const struct kiln_source_local_entry *in, size_t n, struct entries *ret,
                      struct kiln_error **err)
{
        if (n > KILN_LIMIT_LOCAL_ENTRIES)
                return kiln_error_set(err, -E2BIG, "local context: %zu entries, more than %u", n,
                                      KILN_LIMIT_LOCAL_ENTRIES);
        struct entries e = { .v = kiln_xcalloc(n ?: 1, sizeof(struct entry)) };
        size_t cap = n ?: 1;
        int r = 0;
        for (size_t i = 0; i < n; i++) {
                const struct kiln_source_local_entry *x = &in[i];
                if (!x->path) {
                        r = kiln_error_set(err, -EINVAL, "local context: entry %zu has no path", i);
                        goto fail;
                }
                const char *why = path_problem(x->path, NULL);
                if (!why && S_ISLNK(x->mode) &&
                    (!x->link || !x->link[0] || strlen(x->link) > KILN_LIMIT_LOCAL_LINK))
                        why = x->link && x->link[0] ? "link target is too long"
                                                    : "symbolic link without a target";
                if (!why && (S_ISCHR(x->mode) || S_ISBLK(x->mode)))
                        why = "devices are not supported";
                if (!why && S_ISSOCK(x->mode))
                        continue; /* as BuildKit's walker: sockets are not copied */
                if (!why && !type_supported(x->mode))
                        why = "unknown file type";
                if (why) {
                        _cleanup_free_ char *q = quoted(x->path);
                        r = kiln_error_set(err, -EINVAL, "local context: entry '%s': %s", q, why);
                        goto fail;
                }
                struct entry *y = &e.v[e.n++];
                y->path = kiln_xstrdup(x->path);
                y->mode = x->mode;
                y->size = S_ISREG(x->mode) ? x->size : 0;
                y->mtime_ns = x->mtime_ns;
                y->uid = x->uid;
                y->gid = x->gid;
                y->link = S_ISLNK(x->mode) ? kiln_xstrdup(x->link) : NULL;
        }
        qsort(e.v, e.n, sizeof(struct entry), entry_cmp);
        for (size_t i = 1; i < e.n; i++)
                if (path_cmp(e.v[i - 1].path, e.v[i].path) == 0) {
                        _cleanup_free_ char *q = quoted(e.v[i].path);
                        r = kiln_error_set(err, -EINVAL, "local context: entry '%s': listed twice",
                                           q);
                        goto fail;
                }

        /* Parents: each must be a listed directory; missing ones are made
         * up (a client that selected "a/b/c" by pattern need not list "a"). */
        size_t n_orig = e.n;
        for (size_t i = 0; i < n_orig; i++) {
                _cleanup_free_ char *parent = kiln_xstrdup(e.v[i].path);
                char *slash;
                while ((slash = strrchr(parent, '/'))) {
                        *slash = 0;
                        struct entries orig = { .v = e.v, .n = n_orig };
                        ssize_t j = entries_find(&orig, parent);
                        if (j >= 0) {
                                if (!S_ISDIR(e.v[j].mode)) {
                                        _cleanup_free_ char *q = quoted(e.v[i].path);
                                        r = kiln_error_set(
                                                err, -ENOTDIR,
                                                "local context: entry '%s': parent is not a "
                                                "directory",
                                                q);
                                        goto fail;
                                }
                                break;
                        }
                        if (e.n >= KILN_LIMIT_LOCAL_ENTRIES) {
                                r = kiln_error_set(err, -E2BIG,
                                                   "local context: more than %u entries",
                                                   KILN_LIMIT_LOCAL_ENTRIES);
                                goto fail;
                        }
                        if (e.n == cap) {
                                cap *= 2;
                                e.v = kiln_xreallocarray(e.v, cap, sizeof(struct entry));
                        }
                        e.v[e.n++] = (struct entry){ .path = kiln_xstrdup(parent),
                                                     .mode = S_IFDIR | 0755 };
                }
        }
        if (e.n > n_orig) {
                qsort(e.v, e.n, sizeof(struct entry), entry_cmp);
                size_t w = 0;
                for (size_t i = 0; i < e.n; i++) {
                        if (w > 0 && path_cmp(e.v[w - 1].path, e.v[i].path) == 0) {
                                free(e.v[i].path);
                                free(e.v[i].link);
                                continue;
                        }
                        e.v[w++] = e.v[i];
                }
                e.n = w;
        }
        *ret = e;
        return 0;
fail:
        entries_release(&e);
        return r;
}

static bool same_stat(const struct entry *a, const struct entry *b)
{
        return a->mode == b->mode && a->uid == b->uid && a->gid == b->gid &&
               a->mtime_ns == b->mtime_ns && (!S_ISREG(a->mode) || a->size == b->size) &&
               streq_ptr(S_ISLNK(a->mode) ? a->link : NULL, S_ISLNK(b->mode) ? b->link : NULL);
}

int kiln_source_local_transfer_begin(struct kiln_source_local_store *s, const char *key,
                                     const struct kiln_source_local_entry *entries, size_t n,
                                     struct kiln_source_local_transfer **ret,
                                     struct kiln_error **err)
{
        if (!key || !key[0] || strlen(key) > KILN_LIMIT_LOCAL_KEY)
                return kiln_error_set(err, -EINVAL, "local context: key is empty or too long");

        _cleanup_free_ char *staging_root = NULL;
        struct entries list = { 0 };
        int r = list_build(entries, n, &list, err);
        if (r < 0)
                return r;

        char hash[KILN_SHA256_HEX_LEN + 1];
        key_hash(key, hash);
        struct kiln_source_local_transfer *t = kiln_xcalloc(1, sizeof(*t));
        t->s = s;
        t->staging_fd = -1;
        t->list = list;
        t->key_dir = kiln_xasprintf("%s/%s", s->dir, hash);
        t->k = key_get(s, hash);

        r = kiln_mkdir_p(t->key_dir, 0700);
        if (r < 0) {
                kiln_error_set(err, r, "create '%s': %s", t->key_dir, strerror(-r));
                goto fail;
        }

        /* The index as it is now; finish checks again under the key's
         * exclusive lock. A missing or unreadable index means nothing is
         * known: everything is needed. */
        struct entries old = { 0 };
        struct kiln_error *e = NULL;
        r = index_get(t->s, t->k, t->key_dir, &old, &e);
        if (r < 0 && r != -ENOENT)
                log_warning("local context: %s; receiving every file", kiln_error_message(e));
        kiln_error_free(e);

        t->needed = kiln_xcalloc(t->list.n ?: 1, sizeof(bool));
        t->got = kiln_xcalloc(t->list.n ?: 1, sizeof(bool));
        t->needed_paths = kiln_xcalloc(t->list.n ?: 1, sizeof(char *));
        for (size_t i = 0; i < t->list.n; i++) {
                const struct entry *x = &t->list.v[i];
                if (!S_ISREG(x->mode))
                        continue;
                ssize_t j = entries_find(&old, x->path);
                if (j >= 0 && same_stat(&old.v[j], x) && old.v[j].hash[0])
                        continue;
                t->needed[i] = true;
                t->needed_paths[t->n_needed++] = x->path;
        }
        entries_release(&old);

        staging_root = kiln_xasprintf("%s/staging", t->key_dir);
        if (mkdir(staging_root, 0700) < 0 && errno != EEXIST) {
                r = kiln_error_set(err, -errno, "create '%s': %s", staging_root, strerror(errno));
                goto fail;
        }
        pthread_mutex_lock(&s->lock);
        unsigned long c = ++s->counter;
        pthread_mutex_unlock(&s->lock);
        t->staging_dir = kiln_xasprintf("%s/%ld.%lu", staging_root, (long) getpid(), c);
        if (mkdir(t->staging_dir, 0700) < 0) {
                r = kiln_error_set(err, -errno, "create '%s': %s", t->staging_dir, strerror(errno));
                free(TAKE_PTR(t->staging_dir));
                goto fail;
        }
        t->staging_fd = open(t->staging_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (t->staging_fd < 0) {
                r = kiln_error_set(err, -errno, "open '%s': %s", t->staging_dir, strerror(errno));
                goto fail;
        }
        *ret = t;
        return 0;
fail:
        kiln_source_local_transfer_free(t);
        return r;
}

size_t kiln_source_local_transfer_needed(const struct kiln_source_local_transfer *t,
                                         const char *const **ret)
{
        *ret = (const char *const *) t->needed_paths;
        return t->n_needed;
}

/* ---- transfer: receive ---- */

struct reader {
        kiln_source_local_read_fn read;
        void *userdata;
        const atomic_bool *cancel;
        char *buf;
        int error; /* -errno of the last failed read */
        uint64_t total;
};

static la_ssize_t reader_read(struct archive *a, void *ud, const void **buf)
{
        struct reader *rd = ud;
        if (is_cancelled(rd->cancel)) {
                rd->error = -ECANCELED;
                archive_set_error(a, ECANCELED, "cancelled");
                return -1;
        }
        ssize_t n = rd->read(rd->userdata, rd->buf, RECEIVE_CHUNK);
        if (n < 0) {
                rd->error = (int) n;
                archive_set_error(a, (int) -n, "read: %s", strerror((int) -n));
                return -1;
        }
        rd->total += (uint64_t) n;
        *buf = rd->buf;
        return n;
}

static int receive_file(struct kiln_source_local_transfer *t, struct archive *a, size_t i,
                        const atomic_bool *cancel, uint64_t *bytes, struct kiln_error **err)
{
        struct entry *x = &t->list.v[i];
        char name[32];
        snprintf(name, sizeof(name), "%zu", i);
        _cleanup_close_ int fd = openat(t->staging_fd, name,
                                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return kiln_error_set(err, -errno, "create '%s/%s': %s", t->staging_dir, name,
                                      strerror(errno));
        struct kiln_sha256 *h = kiln_sha256_new();
        if (!h)
                return kiln_error_set(err, -ENOMEM, "sha256: out of memory");
        _cleanup_free_ char *buf = kiln_xmalloc(RECEIVE_CHUNK);
        uint64_t size = 0;
        int r = 0;
        for (;;) {
                if (is_cancelled(cancel)) {
                        r = kiln_error_set(err, -ECANCELED, "cancelled");
                        break;
                }
                la_ssize_t n = archive_read_data(a, buf, RECEIVE_CHUNK);
                if (n == 0)
                        break;
                if (n < 0) {
                        r = -EBADMSG;
                        break;
                }
                kiln_sha256_update(h, buf, (size_t) n);
                r = kiln_write_all(fd, buf, (size_t) n);
                if (r < 0) {
                        kiln_error_set(err, r, "write '%s/%s': %s", t->staging_dir, name,
                                       strerror(-r));
                        break;
                }
                size += (uint64_t) n;
        }
        if (r == 0) {
                kiln_sha256_final_hex(h, x->hash);
                /* The client may have changed the file since it listed it:
                 * the index records what was received. */
                x->size = size;
                t->got[i] = true;
                *bytes += size;
        }
        kiln_sha256_free(h);
        return r;
}

static int receive(struct kiln_source_local_transfer *t, struct reader *rd,
                   struct kiln_source_local_receive_stats *stats, struct kiln_error **err)
{
        if (t->received || t->finished)
                return kiln_error_set(err, -EALREADY, "local context: the tar was received");
        t->received = true;

        struct archive *a = archive_read_new();
        if (!a)
                return kiln_error_set(err, -ENOMEM, "libarchive: out of memory");
        archive_read_support_format_tar(a);
        struct kiln_source_local_receive_stats st = { 0 };
        int r = 0;
        rd->buf = kiln_xmalloc(RECEIVE_CHUNK);
        if (archive_read_open(a, rd, NULL, reader_read, NULL) != ARCHIVE_OK) {
                r = 1;
                goto archive_error;
        }
        for (;;) {
                struct archive_entry *ae;
                int ar = archive_read_next_header(a, &ae);
                if (ar == ARCHIVE_EOF)
                        break;
                if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
                        r = 1;
                        goto archive_error;
                }
                const char *p = archive_entry_pathname(ae);
                _cleanup_free_ char *q = quoted(p ? p : "");
                if (!p || path_problem(p, NULL)) {
                        r = kiln_error_set(err, -EINVAL,
                                           "local context: tar entry '%s': invalid path", q);
                        goto out;
                }
                if (archive_entry_filetype(ae) != AE_IFREG || archive_entry_hardlink(ae)) {
                        r = kiln_error_set(err, -EINVAL,
                                           "local context: tar entry '%s': not a regular file", q);
                        goto out;
                }
                ssize_t i = entries_find(&t->list, p);
                if (i < 0 || !t->needed[i]) {
                        r = kiln_error_set(err, -EINVAL,
                                           "local context: tar entry '%s': not a needed file", q);
                        goto out;
                }
                if (t->got[i]) {
                        r = kiln_error_set(err, -EINVAL,
                                           "local context: tar entry '%s': sent twice", q);
                        goto out;
                }
                r = receive_file(t, a, (size_t) i, rd->cancel, &st.bytes, err);
                if (r == -EBADMSG && !*err)
                        goto archive_error;
                if (r < 0) {
                        kiln_error_wrap(err, "local context: tar entry '%s'", q);
                        goto out;
                }
                st.files++;
        }
        goto out;
archive_error:
        if (rd->error == 0 && rd->total == 0) {
                /* An empty body: the client had nothing to send. */
                r = 0;
                goto out;
        }
        if (rd->error == -ECANCELED)
                r = kiln_error_set(err, -ECANCELED, "local context: cancelled");
        else if (rd->error < 0)
                r = kiln_error_set(err, rd->error, "local context: read: %s", strerror(-rd->error));
        else
                r = kiln_error_set(err, -EBADMSG, "local context: invalid tar: %s",
                                   archive_error_string(a) ?: "unknown error");
out:
        archive_read_free(a);
        free(TAKE_PTR(rd->buf));
        if (stats)
                *stats = st;
        return r < 0 ? r : 0;
}

int kiln_source_local_transfer_receive(struct kiln_source_local_transfer *t,
                                       kiln_source_local_read_fn read, void *userdata,
                                       const atomic_bool *cancel,
                                       struct kiln_source_local_receive_stats *stats,
                                       struct kiln_error **err)
{
        struct reader rd = { .read = read, .userdata = userdata, .cancel = cancel };
        return receive(t, &rd, stats, err);
}

static ssize_t fd_read(void *userdata, void *buf, size_t n)
{
        int fd = *(int *) userdata;
        for (;;) {
                ssize_t r = read(fd, buf, n);
                if (r >= 0)
                        return r;
                if (errno != EINTR)
                        return -errno;
        }
}

int kiln_source_local_transfer_receive_fd(struct kiln_source_local_transfer *t, int fd,
                                          const atomic_bool *cancel,
                                          struct kiln_source_local_receive_stats *stats,
                                          struct kiln_error **err)
{
        return kiln_source_local_transfer_receive(t, fd_read, &fd, cancel, stats, err);
}

/* ---- transfer: finish ---- */

static int open_in_root(int root_fd, const char *path, int flags, uint64_t resolve)
{
        struct open_how how = { .flags = (uint64_t) flags | O_CLOEXEC, .resolve = resolve };
        long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
        return fd < 0 ? -errno : (int) fd;
}

/* A directory of the tree, for *at() calls on its entries: every
 * component must be a real directory. */
static int open_dir_in_tree(int tree_fd, const char *path)
{
        if (!path[0]) {
                int fd = fcntl(tree_fd, F_DUPFD_CLOEXEC, 3);
                return fd < 0 ? -errno : fd;
        }
        return open_in_root(tree_fd, path, O_PATH | O_DIRECTORY,
                            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

struct applier {
        struct kiln_source_local_transfer *t;
        const struct entries *cur; /* the index before (may be empty) */
        int tree_fd;
        char *tree;
        /* The parent directory last opened, reused by consecutive entries. */
        char *parent;
        int parent_fd;
};

static int applier_parent(struct applier *ap, const char *path, const char **ret_base,
                          struct kiln_error **err)
{
        const char *slash = strrchr(path, '/');
        size_t plen = slash ? (size_t) (slash - path) : 0;
        *ret_base = slash ? slash + 1 : path;
        if (ap->parent && strlen(ap->parent) == plen && strncmp(ap->parent, path, plen) == 0)
                return ap->parent_fd;
        if (ap->parent_fd >= 0)
                close(ap->parent_fd);
        free(ap->parent);
        ap->parent = kiln_xstrndup(path, plen);
        ap->parent_fd = open_dir_in_tree(ap->tree_fd, ap->parent);
        if (ap->parent_fd < 0) {
                int r = ap->parent_fd;
                kiln_error_set(err, r, "open '%s/%s': %s", ap->tree, ap->parent, strerror(-r));
                free(TAKE_PTR(ap->parent));
                return r;
        }
        return ap->parent_fd;
}

static bool ignorable_chown_error(int e)
{
        return (e == EPERM || e == EINVAL) && geteuid() != 0;
}

static int apply_metadata(struct applier *ap, int pfd, const char *base, const struct entry *x,
                          struct kiln_error **err)
{
        if (fchownat(pfd, base, x->uid, x->gid, AT_SYMLINK_NOFOLLOW) < 0 &&
            !ignorable_chown_error(errno))
                return kiln_error_set(err, -errno, "chown '%s/%s': %s", ap->tree, x->path,
                                      strerror(errno));
        if (!S_ISLNK(x->mode) && fchmodat(pfd, base, x->mode & 07777, 0) < 0)
                return kiln_error_set(err, -errno, "chmod '%s/%s': %s", ap->tree, x->path,
                                      strerror(errno));
        struct timespec ts[2] = {
                { .tv_sec = x->mtime_ns / 1000000000, .tv_nsec = x->mtime_ns % 1000000000 },
        };
        if (ts[0].tv_nsec < 0) {
                ts[0].tv_sec--;
                ts[0].tv_nsec += 1000000000;
        }
        ts[1] = ts[0];
        if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_set(err, -errno, "set times of '%s/%s': %s", ap->tree, x->path,
                                      strerror(errno));
        return 0;
}

/* Removes from the directory dfd (the tree's dir `rel`) what the list does
 * not hold, or holds with another type or link target. */
static int prune(struct applier *ap, int dfd, const char *rel, unsigned depth,
                 struct kiln_error **err)
{
        if (depth > KILN_LIMIT_LOCAL_DEPTH)
                return kiln_error_set(err, -ELOOP, "prune '%s/%s': too deep", ap->tree, rel);
        int dup = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
        if (dup < 0)
                return kiln_error_set(err, -errno, "open '%s/%s': %s", ap->tree, rel,
                                      strerror(errno));
        DIR *d = fdopendir(dup);
        if (!d) {
                close(dup);
                return kiln_error_set(err, -errno, "open '%s/%s': %s", ap->tree, rel,
                                      strerror(errno));
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                _cleanup_free_ char *path = rel[0] ? kiln_xasprintf("%s/%s", rel, de->d_name)
                                                   : kiln_xstrdup(de->d_name);
                struct stat st;
                if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue;
                        r = kiln_error_set(err, -errno, "stat '%s/%s': %s", ap->tree, path,
                                           strerror(errno));
                        break;
                }
                ssize_t i = entries_find(&ap->t->list, path);
                bool keep = i >= 0 && (st.st_mode & S_IFMT) == (ap->t->list.v[i].mode & S_IFMT);
                if (keep && S_ISLNK(st.st_mode)) {
                        char buf[KILN_LIMIT_LOCAL_LINK + 1];
                        ssize_t n = readlinkat(dfd, de->d_name, buf, sizeof(buf) - 1);
                        keep = n >= 0 && (buf[n] = 0, streq(buf, ap->t->list.v[i].link));
                }
                if (keep && S_ISDIR(st.st_mode)) {
                        _cleanup_close_ int sub = openat(
                                dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0) {
                                r = kiln_error_set(err, -errno, "open '%s/%s': %s", ap->tree, path,
                                                   strerror(errno));
                                break;
                        }
                        r = prune(ap, sub, path, depth + 1, err);
                        if (r < 0)
                                break;
                        continue;
                }
                if (keep)
                        continue;
                if (S_ISDIR(st.st_mode)) {
                        r = kiln_rm_rf_at(dfd, de->d_name, NULL, err);
                        if (r < 0)
                                break;
                } else if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT) {
                        r = kiln_error_set(err, -errno, "remove '%s/%s': %s", ap->tree, path,
                                           strerror(errno));
                        break;
                }
        }
        closedir(d);
        return r;
}

static int create_entries(struct applier *ap, struct kiln_error **err)
{
        struct kiln_source_local_transfer *t = ap->t;
        for (size_t i = 0; i < t->list.n; i++) {
                struct entry *x = &t->list.v[i];
                const char *base;
                int pfd = applier_parent(ap, x->path, &base, err);
                if (pfd < 0)
                        return pfd;
                ssize_t j = entries_find(ap->cur, x->path);
                const struct entry *old = j >= 0 ? &ap->cur->v[j] : NULL;
                struct stat st;
                bool exists = fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
                bool changed = !old || !same_stat(old, x) || !exists;
                if (S_ISDIR(x->mode)) {
                        if (!exists && mkdirat(pfd, base, 0700) < 0)
                                return kiln_error_set(err, -errno, "create '%s/%s': %s", ap->tree,
                                                      x->path, strerror(errno));
                        continue; /* metadata at the end, children first */
                }
                if (S_ISREG(x->mode) && t->got[i]) {
                        char name[32];
                        snprintf(name, sizeof(name), "%zu", i);
                        if (renameat(t->staging_fd, name, pfd, base) < 0)
                                return kiln_error_set(err, -errno, "move '%s/%s': %s", ap->tree,
                                                      x->path, strerror(errno));
                        changed = true;
                } else if (S_ISREG(x->mode)) {
                        if (!exists)
                                return kiln_error_set(err, -ESTALE,
                                                      "local context: '%s/%s' is missing; send "
                                                      "the context again",
                                                      ap->tree, x->path);
                } else if (S_ISLNK(x->mode)) {
                        if (!exists && symlinkat(x->link, pfd, base) < 0)
                                return kiln_error_set(err, -errno, "create '%s/%s': %s", ap->tree,
                                                      x->path, strerror(errno));
                } else if (S_ISFIFO(x->mode)) {
                        if (!exists && mknodat(pfd, base, S_IFIFO | 0600, 0) < 0)
                                return kiln_error_set(err, -errno, "create '%s/%s': %s", ap->tree,
                                                      x->path, strerror(errno));
                }
                if (changed) {
                        int r = apply_metadata(ap, pfd, base, x, err);
                        if (r < 0)
                                return r;
                }
        }
        /* Directories last, deepest first, so that their mtimes stay. */
        for (size_t i = t->list.n; i-- > 0;) {
                struct entry *x = &t->list.v[i];
                if (!S_ISDIR(x->mode))
                        continue;
                const char *base;
                int pfd = applier_parent(ap, x->path, &base, err);
                if (pfd < 0)
                        return pfd;
                int r = apply_metadata(ap, pfd, base, x, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Fills the hashes of the files not received from the current index, which
 * must still describe them as the list does. */
static int check_unreceived(struct kiln_source_local_transfer *t, const struct entries *cur,
                            struct kiln_error **err)
{
        for (size_t i = 0; i < t->list.n; i++) {
                struct entry *x = &t->list.v[i];
                if (!S_ISREG(x->mode) || t->got[i])
                        continue;
                ssize_t j = entries_find(cur, x->path);
                if (j >= 0 && same_stat(&cur->v[j], x) && cur->v[j].hash[0]) {
                        memcpy(x->hash, cur->v[j].hash, sizeof(x->hash));
                        continue;
                }
                _cleanup_free_ char *q = quoted(x->path);
                if (t->needed[i])
                        return kiln_error_set(err, -EPROTO,
                                              "local context: '%s' is needed but was not sent", q);
                return kiln_error_set(err, -ESTALE,
                                      "local context: '%s' was changed by another transfer; "
                                      "send the context again",
                                      q);
        }
        return 0;
}

static int context_new(struct kiln_source_local_store *s, struct key_state *k, const char *key_dir,
                       struct entries *idx, struct kiln_source_local_context **ret,
                       struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/tree", key_dir);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", path, strerror(errno));
        struct kiln_source_local_context *c = kiln_xcalloc(1, sizeof(*c));
        atomic_init(&c->refs, 1);
        c->s = s;
        c->k = k;
        c->idx = *idx;
        *idx = (struct entries){ 0 };
        c->fd = fd;
        c->path = TAKE_PTR(path);
        context_digest(&c->idx, c->digest);
        *ret = c;
        return 0;
}

/* A transfer that changes nothing (every file received before, the list
 * equal to the index) needs no exclusive lock: builds of one context may
 * then run side by side. Returns 1 with *ret set, 0 when the tree must be
 * changed, or -errno. */
static int finish_unchanged(struct kiln_source_local_transfer *t, const atomic_bool *cancel,
                            struct kiln_source_local_context **ret, struct kiln_error **err)
{
        if (t->n_needed > 0)
                return 0;
        int r = lock_shared(t->s, t->k, cancel);
        if (r < 0)
                return kiln_error_set(err, r, "local context: cancelled");
        struct entries cur = { 0 };
        struct kiln_error *e = NULL;
        r = index_get(t->s, t->k, t->key_dir, &cur, &e);
        kiln_error_free(e);
        bool same = r == 0 && cur.n == t->list.n;
        for (size_t i = 0; same && i < cur.n; i++)
                same = streq(cur.v[i].path, t->list.v[i].path) &&
                       same_stat(&cur.v[i], &t->list.v[i]) &&
                       (!S_ISREG(cur.v[i].mode) || cur.v[i].hash[0]);
        r = 0;
        if (same) {
                r = context_new(t->s, t->k, t->key_dir, &cur, ret, err);
                if (r == 0) {
                        pthread_mutex_lock(&t->s->lock);
                        t->k->refs++;
                        /* index_get cached this key's index: the client's
                         * digest of the list goes with it */
                        if (t->digest && streq(t->s->last_hash, t->k->hash)) {
                                free(t->s->last_digest);
                                t->s->last_digest = kiln_xstrdup(t->digest);
                        }
                        pthread_mutex_unlock(&t->s->lock);
                        r = 1;
                }
        }
        entries_release(&cur);
        if (r <= 0)
                unlock_shared(t->s, t->k);
        return r;
}

int kiln_source_local_transfer_finish(struct kiln_source_local_transfer *t,
                                      const atomic_bool *cancel,
                                      struct kiln_source_local_context **ret,
                                      struct kiln_error **err)
{
        if (t->finished)
                return kiln_error_set(err, -EALREADY, "local context: transfer finished already");
        t->finished = true;

        int r = finish_unchanged(t, cancel, ret, err);
        if (r != 0)
                return r < 0 ? r : 0;

        r = lock_exclusive(t->s, t->k, cancel);
        if (r < 0)
                return kiln_error_set(err, r, "local context: cancelled");

        struct entries cur = { 0 };
        struct applier ap = { .t = t, .cur = &cur, .tree_fd = -1, .parent_fd = -1 };
        _cleanup_free_ char *index_path = kiln_xasprintf("%s/index", t->key_dir);
        struct kiln_error *e = NULL;
        r = index_get(t->s, t->k, t->key_dir, &cur, &e);
        kiln_error_free(e);
        if (r < 0)
                cur = (struct entries){ 0 };
        r = check_unreceived(t, &cur, err);
        if (r < 0)
                goto out;

        /* From here on the tree and the index disagree until the new index
         * is written: a failure leaves no index, so that the next transfer
         * sends everything again. */
        index_remember(t->s, t->k->hash, NULL, NULL);
        if (unlink(index_path) < 0 && errno != ENOENT) {
                r = kiln_error_set(err, -errno, "remove '%s': %s", index_path, strerror(errno));
                goto out;
        }
        ap.tree = kiln_xasprintf("%s/tree", t->key_dir);
        if (mkdir(ap.tree, 0755) < 0 && errno != EEXIST) {
                r = kiln_error_set(err, -errno, "create '%s': %s", ap.tree, strerror(errno));
                goto out;
        }
        ap.tree_fd = open(ap.tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (ap.tree_fd < 0) {
                r = kiln_error_set(err, -errno, "open '%s': %s", ap.tree, strerror(errno));
                goto out;
        }
        r = prune(&ap, ap.tree_fd, "", 0, err);
        if (r < 0)
                goto out;
        r = create_entries(&ap, err);
        if (r < 0)
                goto out;
        r = index_save(t->key_dir, &t->list, err);
        if (r < 0)
                goto out;
        index_remember(t->s, t->k->hash, &t->list, t->digest);

        r = context_new(t->s, t->k, t->key_dir, &t->list, ret, err);
        if (r == 0) {
                /* The context holds the key's lock shared and a reference. */
                pthread_mutex_lock(&t->s->lock);
                t->k->refs++;
                pthread_mutex_unlock(&t->s->lock);
        }
out:
        if (ap.parent_fd >= 0)
                close(ap.parent_fd);
        if (ap.tree_fd >= 0)
                close(ap.tree_fd);
        free(ap.parent);
        free(ap.tree);
        entries_release(&cur);
        unlock_exclusive(t->s, t->k, r == 0);
        return r;
}

void kiln_source_local_transfer_set_digest(struct kiln_source_local_transfer *t, const char *digest)
{
        free(t->digest);
        t->digest = digest ? kiln_xstrdup(digest) : NULL;
}

int kiln_source_local_context_open_digest(struct kiln_source_local_store *s, const char *key,
                                          const char *digest,
                                          struct kiln_source_local_context **ret,
                                          struct kiln_error **err)
{
        char hash[KILN_SHA256_HEX_LEN + 1];
        bool match;
        int r;

        if (!key || !key[0] || strlen(key) > KILN_LIMIT_LOCAL_KEY)
                return kiln_error_set(err, -EINVAL, "local context: key is empty or too long");
        key_hash(key, hash);
        pthread_mutex_lock(&s->lock);
        match = streq(s->last_hash, hash) && s->last_digest && streq(s->last_digest, digest);
        pthread_mutex_unlock(&s->lock);
        if (!match)
                return 0;
        r = kiln_source_local_context_open(s, key, ret, err);
        if (r < 0)
                return r;
        /* The context holds the key's shared lock now: a transfer that
         * changed the tree in between dropped the digest first. */
        pthread_mutex_lock(&s->lock);
        match = streq(s->last_hash, hash) && s->last_digest && streq(s->last_digest, digest);
        pthread_mutex_unlock(&s->lock);
        if (!match) {
                *ret = kiln_source_local_context_unref(*ret);
                return 0;
        }
        return 1;
}

struct kiln_source_local_transfer *
kiln_source_local_transfer_free(struct kiln_source_local_transfer *t)
{
        if (!t)
                return NULL;
        if (t->staging_fd >= 0)
                close(t->staging_fd);
        if (t->staging_dir) {
                struct kiln_error *e = NULL;
                if (kiln_rm_rf_at(AT_FDCWD, t->staging_dir, NULL, &e) < 0)
                        log_warning("local context: %s", kiln_error_message(e));
                kiln_error_free(e);
        }
        if (t->k)
                key_put(t->s, t->k);
        entries_release(&t->list);
        free(t->digest);
        free(t->needed);
        free(t->got);
        free(t->needed_paths);
        free(t->staging_dir);
        free(t->key_dir);
        free(t);
        return NULL;
}

/* ---- context ---- */

int kiln_source_local_context_open(struct kiln_source_local_store *s, const char *key,
                                   struct kiln_source_local_context **ret, struct kiln_error **err)
{
        if (!key || !key[0] || strlen(key) > KILN_LIMIT_LOCAL_KEY)
                return kiln_error_set(err, -EINVAL, "local context: key is empty or too long");
        char hash[KILN_SHA256_HEX_LEN + 1];
        key_hash(key, hash);
        struct key_state *k = key_get(s, hash);
        (void) lock_shared(s, k, NULL);
        _cleanup_free_ char *key_dir = kiln_xasprintf("%s/%s", s->dir, hash);
        struct entries idx = { 0 };
        int r = index_get(s, k, key_dir, &idx, err);
        if (r == 0)
                r = context_new(s, k, key_dir, &idx, ret, err);
        entries_release(&idx);
        if (r < 0) {
                unlock_shared(s, k);
                key_put(s, k);
                return r == -ENOENT ? kiln_error_wrap(err, "local context") : r;
        }
        return 0;
}

struct kiln_source_local_context *kiln_source_local_context_ref(struct kiln_source_local_context *c)
{
        if (c)
                atomic_fetch_add(&c->refs, 1);
        return c;
}

struct kiln_source_local_context *
kiln_source_local_context_unref(struct kiln_source_local_context *c)
{
        if (!c || atomic_fetch_sub(&c->refs, 1) > 1)
                return NULL;
        pthread_mutex_lock(&c->s->lock);
        c->k->readers--;
        pthread_cond_broadcast(&c->s->cond);
        key_put_locked(c->s, c->k);
        pthread_mutex_unlock(&c->s->lock);
        close(c->fd);
        entries_release(&c->idx);
        free(c->path);
        free(c);
        return NULL;
}

int kiln_source_local_context_fd(const struct kiln_source_local_context *c)
{
        return c->fd;
}

const char *kiln_source_local_context_path(const struct kiln_source_local_context *c)
{
        return c->path;
}

const char *kiln_source_local_digest(const struct kiln_source_local_context *c)
{
        return c->digest;
}

/* ---- checksums ---- */

/* Resolves path (clean, relative; "" is the root) inside the index,
 * following symbolic links of parent components, and of the last one with
 * follow_last. *ret: the resolved path (malloc'd), NULL when nothing is
 * there. */
static int resolve(const struct entries *idx, const char *path, bool follow_last, unsigned *hops,
                   char **ret)
{
        _cleanup_free_ char *cur = kiln_xstrdup("");
        const char *p = path;
        while (*p) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t) (slash - p) : strlen(p);
                bool last = !slash;
                _cleanup_free_ char *cand = cur[0] ? kiln_xasprintf("%s/%.*s", cur, (int) len, p)
                                                   : kiln_xstrndup(p, len);
                ssize_t i = entries_find(idx, cand);
                if (i < 0) {
                        *ret = NULL;
                        return 0;
                }
                const struct entry *x = &idx->v[i];
                if (S_ISLNK(x->mode) && (!last || follow_last)) {
                        if (++*hops > KILN_LIMIT_LOCAL_SYMLINKS)
                                return -ELOOP;
                        _cleanup_free_ char *joined = NULL;
                        const char *rest = last ? "" : slash + 1;
                        if (x->link[0] == '/')
                                joined = kiln_xasprintf("%s/%s", x->link, rest);
                        else
                                joined = kiln_xasprintf("/%s/%s/%s", cur, x->link, rest);
                        _cleanup_free_ char *clean = kiln_pattern_clean(joined);
                        const char *rel = clean;
                        while (*rel == '/')
                                rel++;
                        if (streq(rel, "."))
                                rel = "";
                        return resolve(idx, rel, follow_last, hops, ret);
                }
                if (!last && !S_ISDIR(x->mode)) {
                        *ret = NULL;
                        return 0;
                }
                free(cur);
                cur = TAKE_PTR(cand);
                p = last ? p + len : slash + 1;
        }
        *ret = TAKE_PTR(cur);
        return 0;
}

struct selection {
        const struct entries *idx;
        struct kiln_sha256 *h;
        struct kiln_pattern_matcher *include;
        struct kiln_pattern_matcher *exclude;
        size_t n_records;
};

static void record(struct selection *sel, const char *rel, const struct entry *x,
                   const char *digest_override)
{
        hash_field(sel->h, rel);
        hash_number(sel->h, x ? x->mode & (S_IFMT | 07777) : 0);
        hash_field(sel->h, x && S_ISLNK(x->mode) && !digest_override ? x->link : "");
        hash_field(sel->h, digest_override ? digest_override : x ? x->hash : "");
        sel->n_records++;
}

static int checksum_path(const struct entries *idx, const char *resolved, bool follow,
                         const struct kiln_pattern_matcher *include,
                         const struct kiln_pattern_matcher *exclude,
                         char out[static KILN_SOURCE_LOCAL_DIGEST_LEN], unsigned depth);

/* Records the subtree rooted at entry index `at` (SIZE_MAX: the whole
 * context) under the name rel_root, filtered by the patterns (matched
 * against paths relative to the subtree root). */
static int select_subtree(struct selection *sel, size_t at, const char *rel_root, bool follow,
                          unsigned depth)
{
        const struct entries *idx = sel->idx;
        const char *root_path = at == SIZE_MAX ? "" : idx->v[at].path;
        const struct entry *root = at == SIZE_MAX ? NULL : &idx->v[at];
        struct entry root_dir = { .path = (char *) "", .mode = S_IFDIR | 0755 };

        if (root && S_ISLNK(root->mode) && follow) {
                /* A followed link at the top: the content of its target. */
                char sub[KILN_SOURCE_LOCAL_DIGEST_LEN];
                unsigned hops = 0;
                _cleanup_free_ char *target = NULL;
                _cleanup_free_ char *self = kiln_xstrdup(root->path);
                int r = resolve(idx, self, true, &hops, &target);
                if (r < 0)
                        return r;
                if (!target)
                        return -ENOENT;
                r = checksum_path(idx, target, false, sel->include, sel->exclude, sub, depth + 1);
                if (r < 0)
                        return r;
                record(sel, rel_root, NULL, sub);
                return 0;
        }
        if (root && !S_ISDIR(root->mode)) {
                record(sel, rel_root, root, NULL);
                return 0;
        }

        bool filtered = sel->include || sel->exclude;
        size_t from = at == SIZE_MAX ? 0 : at + 1;
        size_t end = subtree_end(idx, from, root_path);
        size_t plen = strlen(root_path);

        /* Directories whose header is not recorded yet: recorded when
         * something below them is (as BuildKit's parentDirHeaders). */
        const struct entry **pending = kiln_xcalloc(KILN_LIMIT_LOCAL_DEPTH + 2, sizeof(*pending));
        bool *pending_done = kiln_xcalloc(KILN_LIMIT_LOCAL_DEPTH + 2, sizeof(bool));
        size_t n_pending = 0;
        pending[n_pending] = root ?: &root_dir;
        pending_done[n_pending++] = !filtered;
        if (!filtered)
                record(sel, rel_root, root ?: &root_dir, NULL);

        int r = 0;
        for (size_t i = from; i < end; i++) {
                const struct entry *x = &idx->v[i];
                const char *rel = plen ? x->path + plen + 1 : x->path;
                /* Pop the pending directories that are not x's ancestors. */
                while (n_pending > 1) {
                        const char *pp = pending[n_pending - 1]->path;
                        size_t n = strlen(pp);
                        if (strncmp(x->path, pp, n) == 0 && x->path[n] == '/')
                                break;
                        n_pending--;
                }
                bool include = true;
                if (sel->include) {
                        r = kiln_pattern_matcher_matches(sel->include, rel, &include);
                        if (r < 0)
                                break;
                }
                if (include && sel->exclude) {
                        bool ex = false;
                        r = kiln_pattern_matcher_matches(sel->exclude, rel, &ex);
                        if (r < 0)
                                break;
                        include = !ex;
                }
                _cleanup_free_ char *name =
                        rel_root[0] ? kiln_xasprintf("%s/%s", rel_root, rel) : kiln_xstrdup(rel);
                if (include) {
                        for (size_t j = 0; j < n_pending; j++) {
                                if (pending_done[j])
                                        continue;
                                const char *pp = pending[j]->path;
                                const char *prel = j == 0 ? "" : pp + (plen ? plen + 1 : 0);
                                _cleanup_free_ char *pname =
                                        !prel[0]      ? kiln_xstrdup(rel_root)
                                        : rel_root[0] ? kiln_xasprintf("%s/%s", rel_root, prel)
                                                      : kiln_xstrdup(prel);
                                record(sel, pname, pending[j], NULL);
                                pending_done[j] = true;
                        }
                        record(sel, name, x, NULL);
                }
                if (S_ISDIR(x->mode) && n_pending < KILN_LIMIT_LOCAL_DEPTH + 2) {
                        pending[n_pending] = x;
                        pending_done[n_pending++] = include;
                }
        }
        free(pending);
        free(pending_done);
        return r;
}

static int checksum_path(const struct entries *idx, const char *resolved, bool follow,
                         const struct kiln_pattern_matcher *include,
                         const struct kiln_pattern_matcher *exclude,
                         char out[static KILN_SOURCE_LOCAL_DIGEST_LEN], unsigned depth)
{
        if (depth > KILN_LIMIT_LOCAL_SYMLINKS)
                return -ELOOP;
        struct selection sel = { .idx = idx,
                                 .h = kiln_sha256_new(),
                                 .include = (struct kiln_pattern_matcher *) include,
                                 .exclude = (struct kiln_pattern_matcher *) exclude };
        if (!sel.h)
                return -ENOMEM;
        hash_field(sel.h, "kiln.local.selection.v1");
        size_t at = SIZE_MAX;
        if (resolved[0]) {
                ssize_t i = entries_find(idx, resolved);
                if (i < 0) {
                        kiln_sha256_free(sel.h);
                        return -ENOENT;
                }
                at = (size_t) i;
        }
        int r = select_subtree(&sel, at, "", follow, depth);
        if (r == 0)
                finish_digest(sel.h, out);
        kiln_sha256_free(sel.h);
        return r;
}

static void empty_digest(char out[static KILN_SOURCE_LOCAL_DIGEST_LEN])
{
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_hex("", 0, hex);
        snprintf(out, KILN_SOURCE_LOCAL_DIGEST_LEN, "sha256:%s", hex);
}

/* Splits a clean relative pattern into the components before the first
 * one holding a wildcard (*ret_prefix, malloc'd) and the rest. */
static char *wildcard_prefix(const char *pattern)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_LOCAL_PATH + 1);
        const char *p = pattern;
        while (*p) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t) (slash - p) : strlen(p);
                _cleanup_free_ char *comp = kiln_xstrndup(p, len);
                if (kiln_pattern_has_wildcards(comp))
                        break;
                if (b.len)
                        (void) kiln_buf_putc(&b, '/');
                (void) kiln_buf_puts(&b, comp);
                if (!slash)
                        break;
                p = slash + 1;
        }
        return kiln_buf_steal(&b);
}

static int checksum_wildcard(struct kiln_source_local_context *c, const char *pattern, bool follow,
                             const struct kiln_pattern_matcher *include,
                             const struct kiln_pattern_matcher *exclude,
                             char out[static KILN_SOURCE_LOCAL_DIGEST_LEN], struct kiln_error **err)
{
        const struct entries *idx = &c->idx;
        _cleanup_free_ char *prefix = wildcard_prefix(pattern);
        bool has_rest = strlen(prefix) < strlen(pattern);
        unsigned hops = 0;
        _cleanup_free_ char *rprefix = NULL;
        int r = resolve(idx, prefix, has_rest || follow, &hops, &rprefix);
        if (r < 0)
                return kiln_error_set(err, r, "\"/%s\": %s", pattern, strerror(-r));
        if (!rprefix) {
                empty_digest(out);
                return 0;
        }
        if (!has_rest) {
                /* No wildcard after all: the path itself. */
                r = checksum_path(idx, rprefix, follow, include, exclude, out, 0);
                if (r == -ENOENT) {
                        empty_digest(out);
                        return 0;
                }
                if (r < 0)
                        return kiln_error_set(err, r, "\"/%s\": %s", pattern, strerror(-r));
                return 0;
        }

        size_t at = 0;
        if (rprefix[0]) {
                ssize_t i = entries_find(idx, rprefix);
                if (i < 0 || !S_ISDIR(idx->v[i].mode)) {
                        empty_digest(out);
                        return 0;
                }
                at = (size_t) i + 1;
        }
        size_t end = subtree_end(idx, at, rprefix);
        size_t rlen = strlen(rprefix);

        struct selection sel = { .idx = idx,
                                 .h = kiln_sha256_new(),
                                 .include = (struct kiln_pattern_matcher *) include,
                                 .exclude = (struct kiln_pattern_matcher *) exclude };
        if (!sel.h)
                return kiln_error_set(err, -ENOMEM, "sha256: out of memory");
        hash_field(sel.h, "kiln.local.wildcard.v1");
        for (size_t i = at; i < end; i++) {
                const struct entry *x = &idx->v[i];
                /* The name as the pattern spells it (the prefix may have
                 * been reached through a symbolic link). */
                const char *tail = rlen ? x->path + rlen + 1 : x->path;
                _cleanup_free_ char *fn =
                        prefix[0] ? kiln_xasprintf("%s/%s", prefix, tail) : kiln_xstrdup(tail);
                bool m = false;
                r = kiln_pattern_match(pattern, fn, &m);
                if (r < 0) {
                        kiln_sha256_free(sel.h);
                        return kiln_error_set(err, r, "invalid pattern \"/%s\"", pattern);
                }
                if (!m)
                        continue;
                r = select_subtree(&sel, i, tail, follow, 0);
                if (r < 0) {
                        kiln_sha256_free(sel.h);
                        return kiln_error_set(err, r, "\"/%s\": %s", fn,
                                              r == -ENOENT ? "not found" : strerror(-r));
                }
                /* Skip what select_subtree covered. */
                i = subtree_end(idx, i + 1, x->path) - 1;
        }
        if (sel.n_records == 0)
                empty_digest(out);
        else
                finish_digest(sel.h, out);
        kiln_sha256_free(sel.h);
        return 0;
}

int kiln_source_local_checksum(struct kiln_source_local_context *c, const char *path, bool wildcard,
                               bool follow_symlinks, const char *const *include, size_t n_include,
                               const char *const *exclude, size_t n_exclude,
                               char out[static KILN_SOURCE_LOCAL_DIGEST_LEN],
                               struct kiln_error **err)
{
        if (!path)
                path = "";
        if (strlen(path) > KILN_LIMIT_LOCAL_PATH)
                return kiln_error_set(err, -ENAMETOOLONG, "checksum: path is too long");
        _cleanup_free_ char *abs = kiln_xasprintf("/%s", path);
        _cleanup_free_ char *clean = kiln_pattern_clean(abs);
        const char *rel = clean;
        while (*rel == '/')
                rel++;

        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *inc = NULL;
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *exc = NULL;
        int r;
        if (n_include > 0) {
                r = kiln_pattern_matcher_new(include, n_include, &inc, err);
                if (r < 0)
                        return kiln_error_wrap(err, "invalid include patterns");
                if (kiln_pattern_matcher_count(inc) == 0)
                        inc = kiln_pattern_matcher_free(inc);
        }
        if (n_exclude > 0) {
                r = kiln_pattern_matcher_new(exclude, n_exclude, &exc, err);
                if (r < 0)
                        return kiln_error_wrap(err, "invalid exclude patterns");
                if (kiln_pattern_matcher_count(exc) == 0)
                        exc = kiln_pattern_matcher_free(exc);
        }

        if (wildcard)
                return checksum_wildcard(c, rel, follow_symlinks, inc, exc, out, err);

        unsigned hops = 0;
        _cleanup_free_ char *resolved = NULL;
        r = resolve(&c->idx, rel, follow_symlinks, &hops, &resolved);
        if (r < 0)
                return kiln_error_set(err, r, "\"/%s\": %s", rel, strerror(-r));
        if (!resolved)
                return kiln_error_set(err, -ENOENT, "\"/%s\": not found", rel);
        r = checksum_path(&c->idx, resolved, false, inc, exc, out, 0);
        if (r == -ENOENT)
                return kiln_error_set(err, r, "\"/%s\": not found", rel);
        if (r < 0)
                return kiln_error_set(err, r, "\"/%s\": %s", rel, strerror(-r));
        return 0;
}
