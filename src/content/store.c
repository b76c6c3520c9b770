/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The blob store: <root>/content/{blobs/sha256,ingest}.
 *
 * Publishing is git's finalize_object_file(): the verified, fsynced ingest
 * file is hard-linked under its digest, so a name never points at bytes
 * that do not hash to it, and two writers of one digest need no lock to
 * publish (EEXIST: the other one did). The in-flight table only avoids
 * downloading the same bytes twice.
 */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "base/sha256.h"
#include "content-internal.h"

#define INGEST_NAME_LEN 32 /* hex of 16 random bytes */
/* Written bytes an ingest lets pile up before it asks the kernel to start
 * writing them back, so the fsync at commit finds little left to do and the
 * disk works while the network does. */
#define INGEST_WRITEBACK_STEP ((uint64_t) 4 << 20)
/* A blob of known size at least this large gets its disk space reserved
 * (fallocate, size unchanged) ahead of the writes, a step at a time: the
 * writes then land in allocated extents instead of each page taking a
 * delayed-allocation reservation (ext4: about a sixth of the system time
 * of a pull), and the blob is laid out in one piece. A step bounds what a
 * descriptor that lies about its size can reserve before the bytes come. */
#define INGEST_PREALLOC_MIN  ((uint64_t) 1 << 20)
#define INGEST_PREALLOC_STEP ((uint64_t) 16 << 20)

struct watcher {
        struct watcher *next;
        kiln_content_watch_fn cb;
        void *userdata;
};

struct inflight {
        struct inflight *next;
        char digest[KILN_CONTENT_DIGEST_SIZE];
        struct watcher *watchers;
};

struct kiln_content_store {
        char *path;       /* <root>/content */
        char *blobs_path; /* <root>/content/blobs/sha256 */
        int blobs_fd;
        int ingest_fd;
        pthread_mutex_t lock;
        pthread_cond_t cond;       /* signalled whenever an in-flight entry ends */
        struct inflight *inflight; /* guarded by lock */
};

enum ingest_state {
        INGEST_WRITING,
        INGEST_COMMITTED,
        INGEST_FAILED,
};

struct kiln_content_ingest {
        struct kiln_content_store *store;
        char expected[KILN_CONTENT_DIGEST_SIZE]; /* "" when unknown */
        char digest[KILN_CONTENT_DIGEST_SIZE];   /* after commit */
        int64_t size;
        uint64_t offset;
        uint64_t writeback; /* bytes before this already sent to writeback */
        uint64_t prealloc;  /* bytes before this reserved on disk */
        bool no_prealloc;   /* the file system cannot reserve: stop asking */
        int fd;
        char name[INGEST_NAME_LEN + 1];
        struct kiln_sha256 *sha;
        enum ingest_state state;
        bool have_file;  /* ingest/<name> is ours to remove */
        bool registered; /* owns the in-flight entry of expected */
};

static const char *hex_of(const char *digest)
{
        return digest + strlen("sha256:");
}

/* ---- the in-flight table ---- */

static struct inflight **inflight_find(struct kiln_content_store *s, const char *digest)
{
        struct inflight **p;

        for (p = &s->inflight; *p; p = &(*p)->next)
                if (streq((*p)->digest, digest))
                        return p;
        return NULL;
}

/* Ends the ingest of digest: wakes waiters, then calls the watchers
 * outside the lock, since they may call back into the store. */
static void inflight_end(struct kiln_content_store *s, const char *digest, bool published)
{
        struct inflight **p, *e = NULL;
        struct watcher *w;

        pthread_mutex_lock(&s->lock);
        p = inflight_find(s, digest);
        if (p) {
                e = *p;
                *p = e->next;
        }
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        if (!e)
                return;
        while ((w = e->watchers)) {
                e->watchers = w->next;
                w->cb(w->userdata, e->digest, published);
                free(w);
        }
        free(e);
}

/* ---- opening ---- */

static int clean_ingest(struct kiln_content_store *s, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        struct dirent *de;
        DIR *d;
        int r = 0;

        fd = fcntl(s->ingest_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return kiln_error_set(err, -errno, "clean '%s/ingest': %s", s->path,
                                      strerror(errno));
        d = fdopendir(fd);
        if (!d)
                return kiln_error_set(err, -errno, "clean '%s/ingest': %s", s->path,
                                      strerror(errno));
        fd = -1;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                /* Only ingest files are ever made here; a crash leaves
                 * nothing else, but an empty directory is removed too. */
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 &&
                    !(errno == EISDIR && unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) == 0) &&
                    errno != ENOENT) {
                        r = kiln_error_set(err, -errno, "clean '%s/ingest/%s': %s", s->path,
                                           de->d_name, strerror(errno));
                        break;
                }
        }
        closedir(d);
        return r;
}

static int open_dir(const char *path, int *ret, struct kiln_error **err)
{
        int r = kiln_mkdir_p(path, 0755);

        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", path, strerror(-r));
        *ret = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (*ret < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", path, strerror(errno));
        return 0;
}

int kiln_content_store_open(const char *root, struct kiln_content_store **ret,
                            struct kiln_error **err)
{
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_free_ char *ingest = NULL;
        int r;

        s = kiln_xcalloc(1, sizeof(*s));
        s->blobs_fd = s->ingest_fd = -1;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        s->path = kiln_xasprintf("%s/content", root);
        s->blobs_path = kiln_xasprintf("%s/blobs/sha256", s->path);
        ingest = kiln_xasprintf("%s/ingest", s->path);

        r = open_dir(s->blobs_path, &s->blobs_fd, err);
        if (r >= 0)
                r = open_dir(ingest, &s->ingest_fd, err);
        if (r >= 0)
                r = clean_ingest(s, err);
        if (r < 0)
                return kiln_error_wrap(err, "open content store '%s'", s->path);
        *ret = TAKE_PTR(s);
        return 0;
}

struct kiln_content_store *kiln_content_store_free(struct kiln_content_store *s)
{
        if (!s)
                return NULL;
        kiln_closep(&s->blobs_fd);
        kiln_closep(&s->ingest_fd);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s->path);
        free(s->blobs_path);
        free(s);
        return NULL;
}

/* ---- reading ---- */

/* 0 with *st, -ENOENT, or another -errno. */
static int stat_blob(struct kiln_content_store *s, const char *digest, struct stat *st)
{
        if (fstatat(s->blobs_fd, hex_of(digest), st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(st->st_mode))
                return -EUCLEAN;
        return 0;
}

static int blob_error(struct kiln_content_store *s, const char *digest, int r,
                      struct kiln_error **err)
{
        if (r == -ENOENT)
                return kiln_error_set(err, r, "blob '%s' not found in '%s'", digest, s->path);
        if (r == -EUCLEAN)
                return kiln_error_set(err, r, "blob '%s' in '%s' is not a regular file", digest,
                                      s->path);
        return kiln_error_set(err, r, "blob '%s' in '%s': %s", digest, s->path, strerror(-r));
}

int kiln_content_store_has(struct kiln_content_store *s, const char *digest,
                           struct kiln_error **err)
{
        struct stat st;
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        r = stat_blob(s, digest, &st);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return blob_error(s, digest, r, err);
        return 1;
}

int kiln_content_store_size(struct kiln_content_store *s, const char *digest, uint64_t *ret,
                            struct kiln_error **err)
{
        struct stat st;
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        r = stat_blob(s, digest, &st);
        if (r < 0)
                return blob_error(s, digest, r, err);
        *ret = (uint64_t) st.st_size;
        return 0;
}

int kiln_content_store_open_blob(struct kiln_content_store *s, const char *digest, int *ret_fd,
                                 struct kiln_error **err)
{
        int r, fd;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        fd = openat(s->blobs_fd, hex_of(digest), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return blob_error(s, digest, -errno, err);
        *ret_fd = fd;
        return 0;
}

int kiln_content_store_read(struct kiln_content_store *s, const char *digest, struct kiln_buf *b,
                            struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        char chunk[16384];
        struct stat st;
        int r;

        r = kiln_content_store_open_blob(s, digest, &fd, err);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return blob_error(s, digest, -errno, err);
        if ((uint64_t) st.st_size > b->max - b->len)
                return kiln_error_set(err, -E2BIG,
                                      "blob '%s' is %" PRIu64 " bytes, more than the %zu allowed",
                                      digest, (uint64_t) st.st_size, b->max - b->len);
        for (;;) {
                ssize_t n = read(fd, chunk, sizeof(chunk));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return blob_error(s, digest, -errno, err);
                if (n == 0)
                        break;
                r = kiln_buf_append(b, chunk, (size_t) n);
                if (r < 0)
                        return kiln_error_set(err, r, "blob '%s' is larger than the %zu allowed",
                                              digest, b->max);
        }
        return kiln_buf_append(b, "", 0);
}

int kiln_content_store_map(struct kiln_content_store *s, const char *digest,
                           struct kiln_content_mapping *ret, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        void *p;
        int r;

        r = kiln_content_store_open_blob(s, digest, &fd, err);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return blob_error(s, digest, -errno, err);
        if (st.st_size == 0) {
                *ret = (struct kiln_content_mapping){ .data = "", .size = 0 };
                return 0;
        }
        if ((uint64_t) st.st_size > SIZE_MAX)
                return kiln_error_set(err, -EFBIG, "blob '%s' is too large to map", digest);
        p = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                return kiln_error_set(err, -errno, "map blob '%s': %s", digest, strerror(errno));
        *ret = (struct kiln_content_mapping){ .data = p, .size = (size_t) st.st_size };
        return 0;
}

void kiln_content_mapping_release(struct kiln_content_mapping *m)
{
        if (m->size > 0)
                (void) munmap((void *) m->data, m->size);
        *m = (struct kiln_content_mapping){ 0 };
}

int kiln_content_store_delete(struct kiln_content_store *s, const char *digest,
                              struct kiln_error **err)
{
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        if (unlinkat(s->blobs_fd, hex_of(digest), 0) < 0)
                return blob_error(s, digest, -errno, err);
        return 0;
}

char *kiln_content_store_blob_path(struct kiln_content_store *s, const char *digest)
{
        if (kiln_content_digest_check(digest, NULL) < 0)
                return NULL;
        return kiln_xasprintf("%s/%s", s->blobs_path, hex_of(digest));
}

int kiln_content_store_wait(struct kiln_content_store *s, const char *digest,
                            struct kiln_error **err)
{
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&s->lock);
        while (inflight_find(s, digest))
                pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        return kiln_content_store_has(s, digest, err);
}

int kiln_content_store_watch(struct kiln_content_store *s, const char *digest,
                             kiln_content_watch_fn cb, void *userdata, struct kiln_error **err)
{
        struct inflight **e;
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&s->lock);
        e = inflight_find(s, digest);
        if (e) {
                struct watcher *w = kiln_xcalloc(1, sizeof(*w));

                w->cb = cb;
                w->userdata = userdata;
                w->next = (*e)->watchers;
                (*e)->watchers = w;
        }
        pthread_mutex_unlock(&s->lock);
        return e ? 1 : 0;
}

/* ---- ingest ---- */

static const char *ingest_subject(const struct kiln_content_ingest *in)
{
        return in->expected[0] ? in->expected : "(new blob)";
}

/* Ends a failed ingest: nothing of it stays, and waiters take over. */
static void ingest_fail(struct kiln_content_ingest *in)
{
        if (in->state != INGEST_WRITING)
                return;
        in->state = INGEST_FAILED;
        kiln_closep(&in->fd);
        in->fd = -1;
        if (in->have_file)
                (void) unlinkat(in->store->ingest_fd, in->name, 0);
        in->have_file = false;
        if (in->registered) {
                in->registered = false;
                inflight_end(in->store, in->expected, false);
        }
}

static int ingest_create(struct kiln_content_ingest *in, struct kiln_error **err)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char rnd[INGEST_NAME_LEN / 2];
        int attempt;

        for (attempt = 0; attempt < 16; attempt++) {
                size_t i;

                if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
                        return kiln_error_set(err, -errno ? -errno : -EIO,
                                              "ingest '%s': no random name: %s", ingest_subject(in),
                                              strerror(errno));
                for (i = 0; i < sizeof(rnd); i++) {
                        in->name[2 * i] = hex[rnd[i] >> 4];
                        in->name[2 * i + 1] = hex[rnd[i] & 0xf];
                }
                in->name[INGEST_NAME_LEN] = '\0';
                in->fd = openat(in->store->ingest_fd, in->name,
                                O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (in->fd >= 0) {
                        in->have_file = true;
                        return 0;
                }
                if (errno != EEXIST)
                        break;
        }
        return kiln_error_set(err, -errno, "create ingest file in '%s/ingest' for '%s': %s",
                              in->store->path, ingest_subject(in), strerror(errno));
}

int kiln_content_ingest_begin(struct kiln_content_store *s, const char *digest, int64_t size,
                              unsigned flags, struct kiln_content_ingest **ret,
                              struct kiln_error **err)
{
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        struct stat st;
        int r;

        if (digest) {
                r = kiln_content_digest_check(digest, err);
                if (r < 0)
                        return r;
        }
        if (size < 0 && size != KILN_CONTENT_SIZE_UNKNOWN)
                return kiln_error_set(err, -EINVAL, "ingest '%s': invalid size %" PRId64,
                                      digest ? digest : "(new blob)", size);

        in = kiln_xcalloc(1, sizeof(*in));
        in->store = s;
        in->size = size;
        in->fd = -1;
        in->state = INGEST_FAILED; /* nothing to undo until the file exists */
        if (digest) {
                memcpy(in->expected, digest, KILN_CONTENT_DIGEST_SIZE);
                pthread_mutex_lock(&s->lock);
                for (;;) {
                        struct inflight *e;

                        if (inflight_find(s, digest)) {
                                if (flags & KILN_CONTENT_INGEST_NOWAIT) {
                                        pthread_mutex_unlock(&s->lock);
                                        return kiln_error_set(err, -EBUSY,
                                                              "blob '%s' is being written by "
                                                              "another ingest",
                                                              digest);
                                }
                                pthread_cond_wait(&s->cond, &s->lock);
                                continue;
                        }
                        r = stat_blob(s, digest, &st);
                        if (r == 0) {
                                pthread_mutex_unlock(&s->lock);
                                if (size >= 0 && st.st_size != size)
                                        return kiln_error_set(
                                                err, -EBADMSG,
                                                "blob '%s' is in the store with %" PRIu64
                                                " bytes, but %" PRId64 " were expected",
                                                digest, (uint64_t) st.st_size, size);
                                *ret = NULL;
                                return 0;
                        }
                        if (r != -ENOENT) {
                                pthread_mutex_unlock(&s->lock);
                                return blob_error(s, digest, r, err);
                        }
                        e = kiln_xcalloc(1, sizeof(*e));
                        memcpy(e->digest, digest, KILN_CONTENT_DIGEST_SIZE);
                        e->next = s->inflight;
                        s->inflight = e;
                        in->registered = true;
                        break;
                }
                pthread_mutex_unlock(&s->lock);
        }
        in->state = INGEST_WRITING;
        r = ingest_create(in, err);
        if (r >= 0) {
                in->sha = kiln_sha256_new();
                if (!in->sha)
                        r = kiln_error_set(err, -ENOMEM, "ingest '%s': no sha256 context",
                                           ingest_subject(in));
        }
        if (r < 0) {
                ingest_fail(in);
                return r;
        }
        *ret = TAKE_PTR(in);
        return 1;
}

/* Reserves the disk space of the next step of a large blob (see
 * INGEST_PREALLOC_STEP); a failure only ends the reserving. */
static void ingest_prealloc(struct kiln_content_ingest *in, uint64_t end)
{
        while (!in->no_prealloc && in->size >= (int64_t) INGEST_PREALLOC_MIN &&
               end > in->prealloc && in->prealloc < (uint64_t) in->size) {
                uint64_t len = (uint64_t) in->size - in->prealloc;

                if (len > INGEST_PREALLOC_STEP)
                        len = INGEST_PREALLOC_STEP;
                if (fallocate(in->fd, FALLOC_FL_KEEP_SIZE, (off_t) in->prealloc, (off_t) len) < 0) {
                        in->no_prealloc = true;
                        return;
                }
                in->prealloc += len;
        }
}

int kiln_content_ingest_write(struct kiln_content_ingest *in, const void *p, size_t n,
                              struct kiln_error **err)
{
        const char *c = p;
        size_t left = n;

        if (in->state != INGEST_WRITING)
                return kiln_error_set(err, -ESTALE, "ingest of '%s' is already over",
                                      ingest_subject(in));
        if (in->size >= 0 && n > (uint64_t) in->size - in->offset) {
                int r = kiln_error_set(err, -EFBIG,
                                       "blob '%s' is larger than its expected size of %" PRId64
                                       " bytes (%" PRIu64 " bytes received)",
                                       ingest_subject(in), in->size, in->offset + n);

                ingest_fail(in);
                return r;
        }
        ingest_prealloc(in, in->offset + n);
        while (left > 0) {
                ssize_t w = write(in->fd, c, left);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0) {
                        int r = kiln_error_set(err, -errno, "write ingest of '%s': %s",
                                               ingest_subject(in), strerror(errno));

                        ingest_fail(in);
                        return r;
                }
                c += w;
                left -= (size_t) w;
        }
        kiln_sha256_update(in->sha, p, n);
        in->offset += n;
        if (in->offset - in->writeback >= INGEST_WRITEBACK_STEP) {
                /* Only a head start for the fsync at commit, which is what
                 * makes the bytes durable: a failure here changes nothing. */
                (void) sync_file_range(in->fd, (off_t) in->writeback,
                                       (off_t) (in->offset - in->writeback), SYNC_FILE_RANGE_WRITE);
                in->writeback = in->offset;
        }
        return 0;
}

static int publish(struct kiln_content_ingest *in)
{
        struct kiln_content_store *s = in->store;
        const char *hex = hex_of(in->digest);

        if (linkat(s->ingest_fd, in->name, s->blobs_fd, hex, 0) == 0 || errno == EEXIST)
                return 0;
        /* Filesystems without hard links: a rename that never replaces. */
        if (errno != EPERM && errno != EOPNOTSUPP && errno != EMLINK)
                return -errno;
        if (renameat2(s->ingest_fd, in->name, s->blobs_fd, hex, RENAME_NOREPLACE) == 0 ||
            errno == EEXIST)
                return 0;
        if (errno != EINVAL)
                return -errno;
        /* No RENAME_NOREPLACE either: replacing a blob with the same
         * verified bytes is harmless. */
        if (renameat(s->ingest_fd, in->name, s->blobs_fd, hex) < 0)
                return -errno;
        return 0;
}

int kiln_content_ingest_commit(struct kiln_content_ingest *in, struct kiln_error **err)
{
        char hex[KILN_SHA256_HEX_LEN + 1];
        int r;

        if (in->state != INGEST_WRITING)
                return kiln_error_set(err, -ESTALE, "ingest of '%s' is already over",
                                      ingest_subject(in));
        if (in->size >= 0 && in->offset != (uint64_t) in->size) {
                r = kiln_error_set(err, -EBADMSG,
                                   "blob '%s': size mismatch: expected %" PRId64
                                   " bytes, got %" PRIu64,
                                   ingest_subject(in), in->size, in->offset);
                ingest_fail(in);
                return r;
        }
        kiln_sha256_final_hex(in->sha, hex);
        (void) snprintf(in->digest, sizeof(in->digest), "sha256:%s", hex);
        if (in->expected[0] && !streq(in->expected, in->digest)) {
                r = kiln_error_set(err, -EBADMSG,
                                   "blob '%s': digest mismatch: expected %s, got %s (%" PRIu64
                                   " bytes)",
                                   in->expected, in->expected, in->digest, in->offset);
                in->digest[0] = '\0';
                ingest_fail(in);
                return r;
        }
        /* Read-only once published; the data is on disk before its name.
         * fdatasync writes the data and the size, all a reader of the blob
         * depends on; the 0444 mode is a guard, not content. */
        if (fchmod(in->fd, 0444) < 0 || fdatasync(in->fd) < 0) {
                r = kiln_error_set(err, -errno, "sync ingest of '%s': %s", in->digest,
                                   strerror(errno));
                in->digest[0] = '\0';
                ingest_fail(in);
                return r;
        }
        kiln_closep(&in->fd);
        in->fd = -1;
        r = publish(in);
        if (r < 0) {
                r = kiln_error_set(err, r, "publish blob '%s' in '%s': %s", in->digest,
                                   in->store->blobs_path, strerror(-r));
                in->digest[0] = '\0';
                ingest_fail(in);
                return r;
        }
        (void) unlinkat(in->store->ingest_fd, in->name, 0);
        in->have_file = false;
        /* No fsync of the directory: a crash may forget the new name (the
         * blob is then fetched again), but a name never holds other bytes,
         * which is what the fdatasync before the rename is for. */
        in->state = INGEST_COMMITTED;
        if (in->registered) {
                in->registered = false;
                inflight_end(in->store, in->expected, true);
        }
        return 0;
}

uint64_t kiln_content_ingest_offset(const struct kiln_content_ingest *in)
{
        return in->offset;
}

const char *kiln_content_ingest_digest(const struct kiln_content_ingest *in)
{
        if (in->state == INGEST_COMMITTED)
                return in->digest;
        return in->expected[0] ? in->expected : NULL;
}

struct kiln_content_ingest *kiln_content_ingest_free(struct kiln_content_ingest *in)
{
        if (!in)
                return NULL;
        ingest_fail(in);
        kiln_closep(&in->fd);
        kiln_sha256_free(in->sha);
        free(in);
        return NULL;
}

int kiln_content_store_put(struct kiln_content_store *s, const char *expected, const void *data,
                           size_t n, char *ret_digest, struct kiln_error **err)
{
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        char computed[KILN_CONTENT_DIGEST_SIZE];
        int r;

        /* Hashing first gives even kiln's own blobs a digest to dedupe on. */
        if (!expected) {
                kiln_content_digest_of(data, n, computed);
                expected = computed;
        }
        if ((uint64_t) n > INT64_MAX)
                return kiln_error_set(err, -EFBIG, "blob '%s' is too large", expected);
        r = kiln_content_ingest_begin(s, expected, (int64_t) n, 0, &in, err);
        if (r < 0)
                return r;
        if (r > 0) {
                r = kiln_content_ingest_write(in, data, n, err);
                if (r >= 0)
                        r = kiln_content_ingest_commit(in, err);
                if (r < 0)
                        return r;
                r = 1;
        }
        if (ret_digest)
                memcpy(ret_digest, expected, KILN_CONTENT_DIGEST_SIZE);
        return r;
}
