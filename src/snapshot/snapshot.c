/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "snapshot.h"

/* Ids are reserved on disk in blocks, so that the "ids" file is written once
 * per this many snapshots and an id is never handed out twice, even when
 * the newest snapshots were removed before a restart. */
#define SNAPSHOT_ID_RESERVE 1024u
/* The metadata file of a committed snapshot. */
#define SNAPSHOT_LIMIT_META 4096u
/* /proc/self/mountinfo, read whole at open. */
#define SNAPSHOT_LIMIT_MOUNTINFO (64u << 20)
/* How long after a commit the syncer waits for more before it syncs them
 * all together. */
#define SNAPSHOT_SYNC_DELAY_MS 200
/* The "durable" journal read at open: one id and a newline per snapshot. */
#define SNAPSHOT_LIMIT_JOURNAL (64u << 20)
/* The option string of mount(2) (one page). */
#define SNAPSHOT_LIMIT_MOUNT_DATA 4096u
/* Overlay mount options that keep the upper directory a plain diff. */
static const char *const overlay_options[][2] = {
        { "index", "off" },
        { "redirect_dir", "off" },
        { "metacopy", "off" },
};

struct entry {
        uint64_t id;
        uint64_t parent; /* 0: none */
        char *name;
        int64_t created_ns;
        unsigned depth;
        unsigned uses;
        unsigned children;
        bool committed;
};

struct kiln_snapshot_store {
        /* Guards entries, n_entries, next_id, reserved and every field of
         * every entry. Never held across a copy, a mount or an unmount. */
        pthread_mutex_t lock;
        char *dir; /* canonical, absolute */
        int dir_fd;
        int lock_fd;
        enum kiln_snapshot_driver driver;
        bool new_mount_api;
        /* Writable overlays are mounted "volatile": see overlay_mount. */
        bool volatile_upper;
        uint64_t next_id;
        uint64_t reserved;
        struct entry **entries; /* sorted by id */
        size_t n_entries, cap;

        /* Durability (snapshot.h): ids committed but not yet in the
         * journal, under lock; sync_cond wakes the syncer thread. */
        uint64_t *unsynced;
        size_t n_unsynced, cap_unsynced;
        pthread_cond_t sync_cond;
        bool stopping;
        /* Serialises batches, so that kiln_snapshot_store_sync returns only
         * once every earlier commit is in the journal. Taken before lock. */
        pthread_mutex_t sync_lock;
        int journal_fd; /* "durable", appended to */
        pthread_t syncer;
        bool syncer_running;
};

struct kiln_snapshot {
        struct kiln_snapshot_store *store;
        uint64_t id;
        uint64_t parent;
        char id_str[KILN_SNAPSHOT_ID_SIZE];
        char *target; /* mounted at, or NULL */
        uint64_t mnt_id;
};

/* ---- index (callers hold the lock) ---- */

static struct entry *entry_free(struct entry *e)
{
        if (e) {
                free(e->name);
                free(e);
        }
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct entry *, entry_free);

static size_t index_pos(const struct kiln_snapshot_store *s, uint64_t id)
{
        size_t lo = 0, hi = s->n_entries;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (s->entries[mid]->id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static struct entry *index_get(const struct kiln_snapshot_store *s, uint64_t id)
{
        size_t i = index_pos(s, id);

        return i < s->n_entries && s->entries[i]->id == id ? s->entries[i] : NULL;
}

static void index_add(struct kiln_snapshot_store *s, struct entry *e)
{
        size_t i = index_pos(s, e->id);

        if (s->n_entries == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 64;
                s->entries = kiln_xreallocarray(s->entries, s->cap, sizeof(*s->entries));
        }
        memmove(s->entries + i + 1, s->entries + i, (s->n_entries - i) * sizeof(*s->entries));
        s->entries[i] = e;
        s->n_entries++;
}

/* Takes e out of the index and its parent's children; returns it. */
static struct entry *index_del(struct kiln_snapshot_store *s, uint64_t id)
{
        size_t i = index_pos(s, id);
        struct entry *e, *p;

        if (i >= s->n_entries || s->entries[i]->id != id)
                return NULL;
        e = s->entries[i];
        memmove(s->entries + i, s->entries + i + 1, (s->n_entries - i - 1) * sizeof(*s->entries));
        s->n_entries--;
        p = e->parent ? index_get(s, e->parent) : NULL;
        if (p && p->children > 0)
                p->children--;
        return e;
}

static struct entry *index_by_name(const struct kiln_snapshot_store *s, const char *name)
{
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i]->committed && streq_ptr(s->entries[i]->name, name))
                        return s->entries[i];
        return NULL;
}

/* A committed snapshot by its id as text. */
static struct entry *index_committed(const struct kiln_snapshot_store *s, const char *id)
{
        struct entry *e;
        uint64_t v = 0;

        if (!id || !*id || strlen(id) >= KILN_SNAPSHOT_ID_SIZE)
                return NULL;
        for (const char *p = id; *p; p++) {
                if (*p < '0' || *p > '9' || (p == id && *p == '0'))
                        return NULL;
                if (v > (UINT64_MAX - 9) / 10)
                        return NULL;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        e = index_get(s, v);
        return e && e->committed ? e : NULL;
}

static void lock(struct kiln_snapshot_store *s)
{
        pthread_mutex_lock(&s->lock);
}

static void unlock(struct kiln_snapshot_store *s)
{
        pthread_mutex_unlock(&s->lock);
}

static void id_format(uint64_t id, char out[static KILN_SNAPSHOT_ID_SIZE])
{
        (void) snprintf(out, KILN_SNAPSHOT_ID_SIZE, "%" PRIu64, id);
}

static char *fs_path(const struct kiln_snapshot_store *s, uint64_t id)
{
        return kiln_xasprintf("%s/%" PRIu64 "/fs", s->dir, id);
}

/* The fs directories of id and its ancestors, top first. */
static char **chain_paths(const struct kiln_snapshot_store *s, uint64_t id, size_t *n_ret)
{
        char **v = NULL;
        size_t n = 0;

        for (const struct entry *e = index_get(s, id); e;
             e = e->parent ? index_get(s, e->parent) : NULL) {
                v = kiln_xreallocarray(v, n + 2, sizeof(*v));
                v[n++] = fs_path(s, e->id);
                v[n] = NULL;
        }
        *n_ret = n;
        return v;
}

static void strv_free(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void strv_freep(char ***v)
{
        strv_free(*v);
}

/* Hands out the next id, extending the on-disk reservation when needed. */
static int id_allocate(struct kiln_snapshot_store *s, uint64_t *ret, struct kiln_error **err)
{
        if (s->next_id > s->reserved) {
                _cleanup_free_ char *path = kiln_xasprintf("%s/ids", s->dir);
                char text[32];
                uint64_t r = s->next_id + SNAPSHOT_ID_RESERVE;
                int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", r), k;

                k = kiln_write_file_atomic(path, text, (size_t) n, 0600);
                if (k < 0)
                        return kiln_error_set(err, k, "write '%s': %s", path, strerror(-k));
                s->reserved = r;
        }
        *ret = s->next_id++;
        return 0;
}

/* ---- mounts ---- */

/* Appends the kernel's messages on a failed fs context to b. */
static void fs_context_messages(int fsfd, struct kiln_buf *b)
{
        char msg[512];
        ssize_t n;

        while ((n = read(fsfd, msg, sizeof(msg) - 1)) > 0) {
                msg[n] = '\0';
                if (n > 2 && msg[1] == ' ')
                        (void) kiln_buf_printf(b, "%s%s", b->len ? "; " : "", msg + 2);
        }
}

static int mount_set_error(struct kiln_error **err, int r, const char *what, const char *target,
                           int fsfd)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(4096);

        if (fsfd >= 0)
                fs_context_messages(fsfd, &b);
        if (b.len)
                return kiln_error_set(err, r, "mount %s at '%s': %s (%s)", what, target,
                                      strerror(-r), b.data);
        return kiln_error_set(err, r, "mount %s at '%s': %s", what, target, strerror(-r));
}

static int overlay_mount_new_api(const char *const *lowers, size_t n_lowers, const char *upper,
                                 const char *work, bool volatile_upper, const char *target,
                                 struct kiln_error **err)
{
        _cleanup_close_ int fsfd = -1, mfd = -1;

        fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
        if (fsfd < 0)
                return mount_set_error(err, -errno, "overlay", target, -1);
        if (fsconfig(fsfd, FSCONFIG_SET_STRING, "source", "overlay", 0) < 0)
                goto fail;
        for (size_t i = 0; i < n_lowers; i++)
                if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0)
                        goto fail;
        if (upper) {
                if (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
                    fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0 ||
                    (volatile_upper && fsconfig(fsfd, FSCONFIG_SET_FLAG, "volatile", NULL, 0) < 0))
                        goto fail;
        }
        for (size_t i = 0; i < ELEMENTSOF(overlay_options); i++)
                if (fsconfig(fsfd, FSCONFIG_SET_STRING, overlay_options[i][0],
                             overlay_options[i][1], 0) < 0)
                        goto fail;
        if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                goto fail;
        mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, upper ? 0 : MOUNT_ATTR_RDONLY);
        if (mfd < 0)
                goto fail;
        if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                goto fail;
        return 0;
fail:
        return mount_set_error(err, -errno, "overlay", target, fsfd);
}

/* mount(2) takes the options as one page of text, separated by ',' and
 * ':', so paths holding those (or '\\') are refused rather than escaped. */
static int overlay_mount_legacy(const char *const *lowers, size_t n_lowers, const char *upper,
                                const char *work, bool volatile_upper, const char *target,
                                struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b =
                KILN_BUF_INIT(SNAPSHOT_LIMIT_MOUNT_DATA - 1);
        int r = kiln_buf_puts(&b, "lowerdir=");

        for (size_t i = 0; r >= 0 && i < n_lowers; i++) {
                if (strpbrk(lowers[i], ",:\\"))
                        return kiln_error_set(err, -EINVAL,
                                              "mount overlay at '%s': lower directory '%s' has "
                                              "a character mount(2) options cannot hold",
                                              target, lowers[i]);
                r = kiln_buf_printf(&b, "%s%s", i ? ":" : "", lowers[i]);
        }
        if (r >= 0 && upper)
                r = kiln_buf_printf(&b, ",upperdir=%s,workdir=%s%s", upper, work,
                                    volatile_upper ? ",volatile" : "");
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(overlay_options); i++)
                r = kiln_buf_printf(&b, ",%s=%s", overlay_options[i][0], overlay_options[i][1]);
        if (r < 0)
                return kiln_error_set(err, -E2BIG,
                                      "mount overlay at '%s': %zu lower directories do not fit "
                                      "in the %u bytes of mount(2) options",
                                      target, n_lowers, SNAPSHOT_LIMIT_MOUNT_DATA);
        if (mount("overlay", target, "overlay", upper ? 0 : MS_RDONLY, b.data) < 0)
                return mount_set_error(err, -errno, "overlay", target, -1);
        return 0;
}

/* A writable overlay (upper set) is mounted "volatile" when the kernel
 * knows the option (s->volatile_upper): without it, every unmount syncs the
 * whole file system under the upper directory (all dirty data of every
 * build, milliseconds per MB), and kiln makes snapshots durable on its own
 * (the store's syncer; a crash loses only what it had not synced, which
 * open then removes). Such a mount leaves <work>/work/incompat/volatile
 * behind, which would make the next mount of the same upper directory
 * fail: removed first. */
static int overlay_mount(struct kiln_snapshot_store *s, const char *const *lowers, size_t n_lowers,
                         const char *upper, const char *work, const char *target,
                         struct kiln_error **err)
{
        bool v = upper && s->volatile_upper;

        if (v) {
                _cleanup_free_ char *incompat = kiln_xasprintf("%s/work/incompat", work);
                int r = kiln_rm_rf_at(AT_FDCWD, incompat, NULL, err);

                if (r < 0 && r != -ENOENT)
                        return kiln_error_wrap(err, "mount overlay at '%s'", target);
        }
        if (s->new_mount_api)
                return overlay_mount_new_api(lowers, n_lowers, upper, work, v, target, err);
        return overlay_mount_legacy(lowers, n_lowers, upper, work, v, target, err);
}

static int bind_mount(const char *source, const char *target, bool readonly,
                      struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;

        fd = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
        if (fd >= 0) {
                struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY };

                if (readonly && mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
                        return kiln_error_set(err, -errno, "mount '%s' read-only at '%s': %s",
                                              source, target, strerror(errno));
                if (move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                        return kiln_error_set(err, -errno, "bind mount '%s' at '%s': %s", source,
                                              target, strerror(errno));
                return 0;
        }
        if (errno != ENOSYS)
                return kiln_error_set(err, -errno, "bind mount '%s' at '%s': %s", source, target,
                                      strerror(errno));
        if (mount(source, target, NULL, MS_BIND, NULL) < 0)
                return kiln_error_set(err, -errno, "bind mount '%s' at '%s': %s", source, target,
                                      strerror(errno));
        if (readonly && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0) {
                int r = -errno;

                (void) umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
                return kiln_error_set(err, r, "mount '%s' read-only at '%s': %s", source, target,
                                      strerror(-r));
        }
        return 0;
}

static int mount_id_of(const char *path, uint64_t *ret)
{
        struct statx stx;

        if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) < 0)
                return -errno;
        if (!(stx.stx_mask & STATX_MNT_ID))
                return -EOPNOTSUPP;
        *ret = stx.stx_mnt_id;
        return 0;
}

int kiln_snapshot_unmount(const char *target, struct kiln_error **err)
{
        if (umount2(target, UMOUNT_NOFOLLOW) == 0)
                return 0;
        if (errno == EBUSY && umount2(target, UMOUNT_NOFOLLOW | MNT_DETACH) == 0)
                return 0;
        return kiln_error_set(err, -errno, "unmount '%s': %s", target, strerror(errno));
}

/* Whether snap's mount is still where it was made. */
static bool snapshot_mounted(const struct kiln_snapshot *snap)
{
        uint64_t id = 0;

        return snap->target && mount_id_of(snap->target, &id) >= 0 && id == snap->mnt_id;
}

/* ---- native copies ---- */

struct hardlink {
        dev_t dev;
        ino_t ino;
        char *path; /* of the first copy, relative to the destination root */
};

struct copy {
        int dst_root;
        bool no_clone;
        struct hardlink *links;
        size_t n_links;
        char *list, *value;  /* xattr buffers */
        char path[PATH_MAX]; /* of the entry at hand, relative */
        struct kiln_error **err;
};

static int copy_fail(struct copy *c, int r, const char *what)
{
        return kiln_error_set(c->err, r, "%s '%s': %s", what, c->path[0] ? c->path : ".",
                              strerror(-r));
}

static struct hardlink *hardlink_find(struct copy *c, dev_t dev, ino_t ino, size_t *pos)
{
        size_t lo = 0, hi = c->n_links;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const struct hardlink *h = &c->links[mid];

                if (h->dev < dev || (h->dev == dev && h->ino < ino))
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *pos = lo;
        if (lo < c->n_links && c->links[lo].dev == dev && c->links[lo].ino == ino)
                return &c->links[lo];
        return NULL;
}

static void hardlink_add(struct copy *c, size_t pos, dev_t dev, ino_t ino, const char *path)
{
        c->links = kiln_xreallocarray(c->links, c->n_links + 1, sizeof(*c->links));
        memmove(c->links + pos + 1, c->links + pos, (c->n_links - pos) * sizeof(*c->links));
        c->links[pos] = (struct hardlink){ .dev = dev, .ino = ino, .path = kiln_xstrdup(path) };
        c->n_links++;
}

/* Copies the extended attributes of name (below the directory sfd) to name
 * below dfd. Through /proc/self/fd/<dir>/<name> with the l* calls: the
 * final component, which may be a symbolic link, is never followed. */
static int copy_xattrs(struct copy *c, int sfd, int dfd, const char *name)
{
        char sp[64 + NAME_MAX], dp[64 + NAME_MAX];
        ssize_t n;

        (void) snprintf(sp, sizeof(sp), "/proc/self/fd/%d/%s", sfd, name);
        (void) snprintf(dp, sizeof(dp), "/proc/self/fd/%d/%s", dfd, name);
        n = llistxattr(sp, c->list, XATTR_LIST_MAX);
        if (n < 0) {
                if (errno == ENOTSUP)
                        return 0;
                return copy_fail(c, -errno, "list extended attributes of");
        }
        for (ssize_t i = 0; i < n; i += (ssize_t) strlen(c->list + i) + 1) {
                const char *key = c->list + i;
                ssize_t v = lgetxattr(sp, key, c->value, XATTR_SIZE_MAX);

                if (v < 0) {
                        if (errno == ENODATA)
                                continue;
                        return copy_fail(c, -errno, "read extended attributes of");
                }
                if (lsetxattr(dp, key, c->value, (size_t) v, 0) < 0)
                        return kiln_error_set(c->err, -errno,
                                              "set extended attribute '%s' of '%s': %s", key,
                                              c->path, strerror(errno));
        }
        return 0;
}

/* Owner, mode, extended attributes and times of name below dfd from st. In
 * that order: chown clears set-id bits and security.capability. */
static int copy_attrs(struct copy *c, int sfd, int dfd, const char *name, const struct stat *st)
{
        struct timespec ts[2] = { st->st_atim, st->st_mtim };
        int r;

        if (fchownat(dfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(c, -errno, "change owner of");
        if (!S_ISLNK(st->st_mode) && fchmodat(dfd, name, st->st_mode & 07777, 0) < 0)
                return copy_fail(c, -errno, "change mode of");
        r = copy_xattrs(c, sfd, dfd, name);
        if (r < 0)
                return r;
        if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(c, -errno, "set times of");
        return 0;
}

static int copy_data(struct copy *c, int sf, int df, off_t size)
{
        char buf[65536];
        off_t done = 0;

        if (!c->no_clone) {
                if (ioctl(df, FICLONE, sf) == 0)
                        return 0;
                if (errno != EOPNOTSUPP && errno != EXDEV && errno != EINVAL && errno != ENOTTY &&
                    errno != ENOSYS)
                        return copy_fail(c, -errno, "clone");
                c->no_clone = true;
        }
        while (done < size) {
                ssize_t n = copy_file_range(sf, NULL, df, NULL, (size_t) (size - done), 0);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 &&
                    (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL))
                        break;
                if (n < 0)
                        return copy_fail(c, -errno, "copy");
                if (n == 0)
                        return 0; /* shrank meanwhile */
                done += n;
        }
        /* Plain read/write from where copy_file_range stopped. */
        if (done < size && (lseek(sf, done, SEEK_SET) < 0 || lseek(df, done, SEEK_SET) < 0))
                return copy_fail(c, -errno, "copy");
        while (done < size) {
                ssize_t n = read(sf, buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return copy_fail(c, -errno, "read");
                if (n == 0)
                        break;
                for (ssize_t w = 0; w < n;) {
                        ssize_t k = write(df, buf + w, (size_t) (n - w));

                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0)
                                return copy_fail(c, -errno, "write");
                        w += k;
                }
                done += n;
        }
        return 0;
}

static int copy_dir(struct copy *c, int sfd, int dfd, size_t plen, unsigned depth);

static int copy_entry(struct copy *c, int sfd, int dfd, const char *name, size_t plen,
                      unsigned depth)
{
        struct stat st;
        size_t pos = 0;
        int r;

        if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(c, -errno, "stat");
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
                struct hardlink *h = hardlink_find(c, st.st_dev, st.st_ino, &pos);

                if (h) {
                        if (linkat(c->dst_root, h->path, dfd, name, 0) < 0)
                                return copy_fail(c, -errno, "link");
                        return 0;
                }
        }

        switch (st.st_mode & S_IFMT) {
        case S_IFREG: {
                _cleanup_close_ int sf = -1, df = -1;
                struct stat st2;

                sf = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                if (sf < 0)
                        return copy_fail(c, -errno, "open");
                if (fstat(sf, &st2) < 0)
                        return copy_fail(c, -errno, "stat");
                if (st2.st_ino != st.st_ino || st2.st_dev != st.st_dev)
                        return copy_fail(c, -ESTALE, "open");
                df = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (df < 0)
                        return copy_fail(c, -errno, "create");
                r = copy_data(c, sf, df, st.st_size);
                if (r < 0)
                        return r;
                break;
        }
        case S_IFDIR: {
                _cleanup_close_ int sub_s = -1, sub_d = -1;

                if (depth >= KILN_SNAPSHOT_LIMIT_COPY_DEPTH)
                        return kiln_error_set(c->err, -ELOOP,
                                              "copy '%s': nested deeper than %u directories",
                                              c->path, KILN_SNAPSHOT_LIMIT_COPY_DEPTH);
                if (mkdirat(dfd, name, 0700) < 0)
                        return copy_fail(c, -errno, "create directory");
                sub_s = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub_s < 0)
                        return copy_fail(c, -errno, "open");
                sub_d = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub_d < 0)
                        return copy_fail(c, -errno, "open");
                r = copy_dir(c, sub_s, sub_d, plen, depth + 1);
                if (r < 0)
                        return r;
                c->path[plen] = '\0';
                break;
        }
        case S_IFLNK: {
                char target[PATH_MAX + 1];
                ssize_t n = readlinkat(sfd, name, target, sizeof(target));

                if (n < 0)
                        return copy_fail(c, -errno, "read link");
                if ((size_t) n >= sizeof(target))
                        return copy_fail(c, -ENAMETOOLONG, "read link");
                target[n] = '\0';
                if (symlinkat(target, dfd, name) < 0)
                        return copy_fail(c, -errno, "create symbolic link");
                break;
        }
        case S_IFCHR:
        case S_IFBLK:
        case S_IFIFO:
        case S_IFSOCK:
                if (mknodat(dfd, name, (st.st_mode & S_IFMT) | 0600, st.st_rdev) < 0)
                        return copy_fail(c, -errno, "create node");
                break;
        default:
                return copy_fail(c, -EBADF, "copy file of unknown type");
        }
        r = copy_attrs(c, sfd, dfd, name, &st);
        if (r < 0)
                return r;
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1)
                hardlink_add(c, pos, st.st_dev, st.st_ino, c->path);
        return 0;
}

/* Copies the entries of sfd into dfd; c->path[0..plen) is sfd's path. */
static int copy_dir(struct copy *c, int sfd, int dfd, size_t plen, unsigned depth)
{
        DIR *d;
        struct dirent *de;
        int fd, r = 0;

        fd = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return copy_fail(c, -errno, "open");
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                (void) close(fd);
                return copy_fail(c, r, "open");
        }
        for (;;) {
                size_t n;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno)
                                r = copy_fail(c, -errno, "read directory");
                        break;
                }
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                n = strlen(de->d_name);
                if (plen + 1 + n >= sizeof(c->path)) {
                        r = kiln_error_set(c->err, -ENAMETOOLONG, "copy '%s/%s': path too long",
                                           c->path, de->d_name);
                        break;
                }
                if (plen)
                        c->path[plen] = '/';
                memcpy(c->path + plen + (plen ? 1 : 0), de->d_name, n + 1);
                r = copy_entry(c, sfd, dfd, de->d_name, plen + (plen ? 1 : 0) + n, depth);
                c->path[plen] = '\0';
                if (r < 0)
                        break;
        }
        closedir(d);
        return r;
}

/* Copies the tree at src (a directory) into the existing, empty directory
 * dst (which gets src's owner, mode, extended attributes and times). */
static int copy_tree(const char *src, const char *dst, struct kiln_error **err)
{
        _cleanup_close_ int sfd = -1, dfd = -1, sparent = -1, dparent = -1;
        _cleanup_free_ char *sdir = kiln_xstrdup(src), *ddir = kiln_xstrdup(dst);
        struct copy c = { .err = err };
        struct stat st;
        int r;

        sfd = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", src, strerror(errno));
        dfd = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", dst, strerror(errno));
        if (fstat(sfd, &st) < 0)
                return kiln_error_set(err, -errno, "stat '%s': %s", src, strerror(errno));
        c.dst_root = dfd;
        c.list = kiln_xmalloc(XATTR_LIST_MAX);
        c.value = kiln_xmalloc(XATTR_SIZE_MAX);
        r = copy_dir(&c, sfd, dfd, 0, 1);
        if (r >= 0) {
                /* The root's own attributes, through its parents. */
                *strrchr(sdir, '/') = '\0';
                *strrchr(ddir, '/') = '\0';
                sparent = open(sdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                dparent = open(ddir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (sparent < 0 || dparent < 0)
                        r = kiln_error_set(err, -errno, "open '%s': %s", sdir, strerror(errno));
                else
                        r = copy_attrs(&c, sparent, dparent, strrchr(src, '/') + 1, &st);
        }
        for (size_t i = 0; i < c.n_links; i++)
                free(c.links[i].path);
        free(c.links);
        free(c.list);
        free(c.value);
        if (r < 0)
                return kiln_error_wrap(err, "copy '%s' to '%s'", src, dst);
        return 0;
}

/* The merged root of an overlay takes the upper directory's owner and mode:
 * the new upper starts with its parent's, so that "/" of a layer that set
 * them keeps them in every child. */
static int copy_root_attrs(const char *src, const char *dst, struct kiln_error **err)
{
        struct stat st;

        if (lstat(src, &st) < 0)
                return kiln_error_set(err, -errno, "stat '%s': %s", src, strerror(errno));
        if (lchown(dst, st.st_uid, st.st_gid) < 0 || chmod(dst, st.st_mode & 07777) < 0)
                return kiln_error_set(err, -errno, "set owner and mode of '%s': %s", dst,
                                      strerror(errno));
        return 0;
}

/* ---- usage ---- */

struct usage {
        struct copy links; /* only the hard link set and path are used */
        uint64_t bytes;
};

static int usage_dir(struct usage *u, int fd, unsigned depth)
{
        DIR *d;
        struct dirent *de;
        int dfd, r = 0;

        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return -errno;
        d = fdopendir(dfd);
        if (!d) {
                r = -errno;
                (void) close(dfd);
                return r;
        }
        while ((de = readdir(d))) {
                struct stat st;
                size_t pos;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = -errno;
                        break;
                }
                if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
                        if (hardlink_find(&u->links, st.st_dev, st.st_ino, &pos))
                                continue;
                        hardlink_add(&u->links, pos, st.st_dev, st.st_ino, "");
                }
                u->bytes += (uint64_t) st.st_blocks * 512u;
                if (S_ISDIR(st.st_mode)) {
                        _cleanup_close_ int sub = -1;

                        if (depth >= KILN_SNAPSHOT_LIMIT_COPY_DEPTH) {
                                r = -ELOOP;
                                break;
                        }
                        sub = openat(fd, de->d_name,
                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0) {
                                r = -errno;
                                break;
                        }
                        r = usage_dir(u, sub, depth + 1);
                        if (r < 0)
                                break;
                }
        }
        closedir(d);
        return r;
}

/* ---- store ---- */

int kiln_snapshot_driver_parse(const char *s, enum kiln_snapshot_driver *ret,
                               struct kiln_error **err)
{
        if (!s || streq(s, "") || streq(s, "auto"))
                *ret = KILN_SNAPSHOT_DRIVER_AUTO;
        else if (streq(s, "overlayfs"))
                *ret = KILN_SNAPSHOT_DRIVER_OVERLAYFS;
        else if (streq(s, "native"))
                *ret = KILN_SNAPSHOT_DRIVER_NATIVE;
        else if (streq(s, "fuse-overlayfs") || streq(s, "stargz"))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "snapshotter '%s' is not supported (use auto, overlayfs "
                                      "or native)",
                                      s);
        else {
                _cleanup_free_ char *q = kiln_quote_untrusted(s, strlen(s), 64);

                return kiln_error_set(err, -EINVAL,
                                      "unknown snapshotter '%s' (use auto, overlayfs or native)",
                                      q);
        }
        return 0;
}

const char *kiln_snapshot_store_driver_name(const struct kiln_snapshot_store *s)
{
        return s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS ? "overlayfs" : "native";
}

enum kiln_snapshot_driver kiln_snapshot_store_driver(const struct kiln_snapshot_store *s)
{
        return s->driver;
}

static void remove_tree(struct kiln_snapshot_store *s, const char *name)
{
        struct kiln_error *e = NULL;

        if (kiln_rm_rf_at(s->dir_fd, name, NULL, &e) < 0) {
                log_debug("snapshot store '%s': %s", s->dir, kiln_error_message(e));
                kiln_error_free(e);
        }
}

/* Renames <id> out of the way, then removes it. */
static int remove_dir(struct kiln_snapshot_store *s, uint64_t id, struct kiln_error **err)
{
        char name[KILN_SNAPSHOT_ID_SIZE], gone[KILN_SNAPSHOT_ID_SIZE + 8];
        int r;

        id_format(id, name);
        (void) snprintf(gone, sizeof(gone), "rm-%s", name);
        if (renameat(s->dir_fd, name, s->dir_fd, gone) < 0) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_set(err, -errno, "remove snapshot '%s/%s': %s", s->dir, name,
                                      strerror(errno));
        }
        r = kiln_rm_rf_at(s->dir_fd, gone, NULL, err);
        if (r < 0)
                return kiln_error_wrap(err, "remove snapshot '%s'", name);
        return 0;
}

/* The overlay probe: two lowers, an upper, a whiteout made by deleting a
 * lower file. Sets s->new_mount_api and s->volatile_upper (the first of
 * new API + volatile, new API, mount(2) + volatile, mount(2) that works). */
static int probe_overlay(struct kiln_snapshot_store *s, struct kiln_error **err)
{
        _cleanup_free_ char *tmp = kiln_xasprintf("%s/probe-XXXXXX", s->dir);
        _cleanup_free_ char *l1 = NULL, *l2 = NULL, *u = NULL, *w = NULL, *m = NULL, *f = NULL;
        struct kiln_error *e1 = NULL;
        const char *lowers[2];
        struct stat st;
        int r;

        if (!mkdtemp(tmp))
                return kiln_error_set(err, -errno, "create '%s': %s", tmp, strerror(errno));
        l1 = kiln_xasprintf("%s/l1", tmp);
        l2 = kiln_xasprintf("%s/l2", tmp);
        u = kiln_xasprintf("%s/u", tmp);
        w = kiln_xasprintf("%s/w", tmp);
        m = kiln_xasprintf("%s/m", tmp);
        f = kiln_xasprintf("%s/l2/f", tmp);
        lowers[0] = l1;
        lowers[1] = l2;
        if (mkdir(l1, 0755) < 0 || mkdir(l2, 0755) < 0 || mkdir(u, 0755) < 0 ||
            mkdir(w, 0700) < 0 || mkdir(m, 0755) < 0 || mknod(f, S_IFREG | 0644, 0) < 0) {
                r = kiln_error_set(err, -errno, "create '%s': %s", tmp, strerror(errno));
                goto out;
        }
        s->new_mount_api = s->volatile_upper = true;
        r = overlay_mount_new_api(lowers, 2, u, w, true, m, NULL);
        if (r < 0) {
                s->volatile_upper = false;
                r = overlay_mount_new_api(lowers, 2, u, w, false, m, &e1);
        }
        if (r < 0) {
                s->new_mount_api = false;
                s->volatile_upper = true;
                r = overlay_mount_legacy(lowers, 2, u, w, true, m, NULL);
        }
        if (r < 0) {
                s->volatile_upper = false;
                r = overlay_mount_legacy(lowers, 2, u, w, false, m, err);
                if (r < 0) {
                        (void) kiln_error_wrap(err, "%s; with mount(2)", kiln_error_message(e1));
                        goto out;
                }
        }
        free(f);
        f = kiln_xasprintf("%s/f", m);
        if (unlink(f) < 0)
                r = kiln_error_set(err, -errno, "remove '%s': %s", f, strerror(errno));
        (void) umount2(m, MNT_DETACH | UMOUNT_NOFOLLOW);
        if (r < 0)
                goto out;
        free(f);
        f = kiln_xasprintf("%s/f", u);
        if (lstat(f, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(0, 0))
                r = kiln_error_set(err, -EOPNOTSUPP, "overlay made no whiteout '%s'", f);
out:
        kiln_error_free(e1);
        remove_tree(s, strrchr(tmp, '/') + 1);
        return r;
}

/* mountinfo's octal escapes (\040 for ' ', ...) decoded in place. */
static void unescape_octal(char *s)
{
        char *w = s;

        for (char *p = s; *p;) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
                    p[3] >= '0' && p[3] <= '7') {
                        *w++ = (char) ((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                        p += 4;
                } else
                        *w++ = *p++;
        }
        *w = '\0';
}

static bool path_below(const char *path, const char *dir)
{
        size_t n = strlen(dir);

        if (streq(dir, "/"))
                return path[0] == '/';
        return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

struct mountinfo_line {
        uint64_t id;
        unsigned major, minor;
        char *root, *point, *fstype, *super;
};

/* Splits one mountinfo line in place; 0 when malformed. */
static bool mountinfo_parse(char *line, struct mountinfo_line *m)
{
        char *f[6], *sep, *save = NULL, *p;
        size_t n = 0;

        sep = strstr(line, " - ");
        if (!sep)
                return false;
        *sep = '\0';
        for (p = strtok_r(line, " ", &save); p && n < 6; p = strtok_r(NULL, " ", &save))
                f[n++] = p;
        if (n < 5)
                return false;
        m->id = strtoull(f[0], NULL, 10);
        if (sscanf(f[2], "%u:%u", &m->major, &m->minor) != 2)
                return false;
        m->root = f[3];
        m->point = f[4];
        save = NULL;
        m->fstype = strtok_r(sep + 3, " ", &save);
        (void) strtok_r(NULL, " ", &save); /* source */
        m->super = strtok_r(NULL, " ", &save);
        if (!m->fstype)
                return false;
        if (!m->super)
                m->super = (char *) "";
        unescape_octal(m->root);
        unescape_octal(m->point);
        unescape_octal(m->super);
        return true;
}

/* Whether an overlay's options name a path starting with prefix (which
 * ends in '/'): as a value ("upperdir=<path>") or in a ':' list. */
static bool option_path_below(const char *options, const char *prefix)
{
        for (const char *p = strstr(options, prefix); p; p = strstr(p + 1, prefix))
                if (p > options && (p[-1] == '=' || p[-1] == ':'))
                        return true;
        return false;
}

/* Detaches every mount made from the store's directories: binds of them,
 * overlays using them, and anything mounted below the store. */
static int detach_leftover_mounts(struct kiln_snapshot_store *s, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SNAPSHOT_LIMIT_MOUNTINFO);
        _cleanup_free_ char *rel = NULL, *needle = NULL;
        _cleanup_(strv_freep) char **points = NULL;
        struct stat st;
        uint64_t dir_mnt;
        size_t n_points = 0;
        char *line, *save = NULL;
        int r;

        r = kiln_read_file_at(AT_FDCWD, "/proc/self/mountinfo", &b);
        if (r < 0)
                return kiln_error_set(err, r, "read '/proc/self/mountinfo': %s", strerror(-r));
        if (fstat(s->dir_fd, &st) < 0)
                return kiln_error_set(err, -errno, "stat '%s': %s", s->dir, strerror(errno));
        r = mount_id_of(s->dir, &dir_mnt);
        if (r < 0)
                return kiln_error_set(err, r, "stat '%s': %s", s->dir, strerror(-r));

        /* The store's path relative to the root of its file system, which is
         * what a bind mount of one of its directories shows as its root. */
        {
                _cleanup_free_ char *copy = kiln_xstrdup(b.data);

                for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        struct mountinfo_line m;

                        if (!mountinfo_parse(line, &m) || m.id != dir_mnt)
                                continue;
                        if (path_below(s->dir, m.point)) {
                                const char *tail =
                                        s->dir + (streq(m.point, "/") ? 0 : strlen(m.point));

                                rel = kiln_xasprintf("%s%s", streq(m.root, "/") ? "" : m.root,
                                                     tail);
                        }
                }
        }
        needle = kiln_xasprintf("%s/", s->dir);

        save = NULL;
        for (line = strtok_r(b.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                struct mountinfo_line m;
                bool ours;

                if (!mountinfo_parse(line, &m))
                        continue;
                ours = path_below(m.point, s->dir) && !streq(m.point, s->dir);
                if (streq(m.fstype, "overlay") && option_path_below(m.super, needle))
                        ours = true;
                if (rel && makedev(m.major, m.minor) == st.st_dev && path_below(m.root, rel) &&
                    !streq(m.root, rel))
                        ours = true;
                if (!ours)
                        continue;
                points = kiln_xreallocarray(points, n_points + 2, sizeof(*points));
                points[n_points++] = kiln_xstrdup(m.point);
                points[n_points] = NULL;
        }
        /* Newest first, so that mounts on top of others go first. */
        for (size_t i = n_points; i > 0; i--) {
                if (umount2(points[i - 1], MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL &&
                    errno != ENOENT)
                        return kiln_error_set(err, -errno, "detach leftover mount '%s': %s",
                                              points[i - 1], strerror(errno));
                log_debug("snapshot store '%s': detached leftover mount '%s'", s->dir,
                          points[i - 1]);
        }
        return 0;
}

static bool parse_u64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (!*s || (s[0] == '0' && s[1]))
                return false;
        for (; *s; s++) {
                if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
                        return false;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *ret = v;
        return true;
}

static bool name_valid(const char *name)
{
        size_t n = strlen(name);

        if (n == 0 || n > KILN_SNAPSHOT_LIMIT_NAME)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) name[i] < 0x20 || name[i] == 0x7f)
                        return false;
        return true;
}

/* Reads <id>/meta; -EBADMSG when malformed, -ENOENT when missing. */
static int meta_read(struct kiln_snapshot_store *s, uint64_t id, struct entry **ret)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SNAPSHOT_LIMIT_META);
        _cleanup_(entry_freep) struct entry *e = NULL;
        char path[KILN_SNAPSHOT_ID_SIZE + 8];
        char *line, *save = NULL;
        bool have_parent = false, have_created = false;
        int r;

        (void) snprintf(path, sizeof(path), "%" PRIu64 "/meta", id);
        r = kiln_read_file_at_flags(s->dir_fd, path, O_NOFOLLOW, &b);
        if (r < 0)
                return r;
        e = kiln_xcalloc(1, sizeof(*e));
        e->id = id;
        e->committed = true;
        for (line = strtok_r(b.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (startswith(line, "parent=")) {
                        have_parent = true;
                        if (line[7] && (!parse_u64(line + 7, &e->parent) || e->parent == 0))
                                return -EBADMSG;
                } else if (startswith(line, "name=")) {
                        if (!name_valid(line + 5) || e->name)
                                return -EBADMSG;
                        e->name = kiln_xstrdup(line + 5);
                } else if (startswith(line, "created=")) {
                        uint64_t v;

                        if (!parse_u64(line + 8, &v) || v > INT64_MAX)
                                return -EBADMSG;
                        e->created_ns = (int64_t) v;
                        have_created = true;
                }
                /* unknown keys: written by a newer kiln, ignored */
        }
        if (!have_parent || !have_created)
                return -EBADMSG;
        *ret = TAKE_PTR(e);
        return 0;
}

static int meta_write(struct kiln_snapshot_store *s, const struct entry *e, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SNAPSHOT_LIMIT_META);
        _cleanup_free_ char *path = kiln_xasprintf("%s/%" PRIu64 "/meta", s->dir, e->id);
        int r;

        if (e->parent)
                r = kiln_buf_printf(&b, "parent=%" PRIu64 "\n", e->parent);
        else
                r = kiln_buf_puts(&b, "parent=\n");
        if (r >= 0 && e->name)
                r = kiln_buf_printf(&b, "name=%s\n", e->name);
        if (r >= 0)
                r = kiln_buf_printf(&b, "created=%" PRId64 "\n", e->created_ns);
        if (r >= 0)
                r = kiln_write_file_replace(path, b.data, b.len, 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        return 0;
}

/* ---- durability ---- */

static int compare_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Callers hold the lock. */
static void unsynced_add(struct kiln_snapshot_store *s, uint64_t id)
{
        if (s->n_unsynced == s->cap_unsynced) {
                s->cap_unsynced = s->cap_unsynced ? 2 * s->cap_unsynced : 16;
                s->unsynced = kiln_xreallocarray(s->unsynced, s->cap_unsynced, sizeof(uint64_t));
        }
        s->unsynced[s->n_unsynced++] = id;
        pthread_cond_signal(&s->sync_cond);
}

/* One batch: everything committed so far reaches the disk, then the ids
 * taken from the list are appended to the journal. Called with sync_lock
 * held and lock not held. */
static int sync_batch(struct kiln_snapshot_store *s, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SNAPSHOT_LIMIT_JOURNAL);
        _cleanup_free_ uint64_t *ids = NULL;
        size_t n;
        int r = 0;

        lock(s);
        ids = TAKE_PTR(s->unsynced);
        n = s->n_unsynced;
        s->n_unsynced = s->cap_unsynced = 0;
        unlock(s);
        if (n == 0)
                return 0;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = kiln_buf_printf(&b, "%" PRIu64 "\n", ids[i]);
        if (r < 0 || syncfs(s->dir_fd) < 0 || kiln_write_all(s->journal_fd, b.data, b.len) < 0 ||
            fdatasync(s->journal_fd) < 0) {
                r = r < 0 ? r : -errno;
                return kiln_error_set(err, r, "sync snapshot store '%s': %s", s->dir, strerror(-r));
        }
        return 0;
}

int kiln_snapshot_store_sync(struct kiln_snapshot_store *s, struct kiln_error **err)
{
        int r;

        pthread_mutex_lock(&s->sync_lock);
        r = sync_batch(s, err);
        pthread_mutex_unlock(&s->sync_lock);
        return r;
}

static void *syncer_main(void *userdata)
{
        struct kiln_snapshot_store *s = userdata;

        for (;;) {
                struct kiln_error *e = NULL;
                struct timespec until;

                lock(s);
                while (!s->stopping && s->n_unsynced == 0)
                        pthread_cond_wait(&s->sync_cond, &s->lock);
                if (s->stopping && s->n_unsynced == 0) {
                        unlock(s);
                        return NULL;
                }
                /* Let the commits of the next few steps join this batch. */
                (void) clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += SNAPSHOT_SYNC_DELAY_MS * 1000000L;
                until.tv_sec += until.tv_nsec / 1000000000L;
                until.tv_nsec %= 1000000000L;
                while (!s->stopping && pthread_cond_timedwait(&s->sync_cond, &s->lock, &until) == 0)
                        ;
                unlock(s);
                if (kiln_snapshot_store_sync(s, &e) < 0)
                        /* They stay non-durable: an unclean stop drops them. */
                        log_warning("%s", kiln_error_message(e));
                kiln_error_free(e);
        }
}

/* Reads the journal into a sorted array of ids. A missing journal (a store
 * written before it existed) is *ret == NULL: everything counts as durable. */
static int journal_read(struct kiln_snapshot_store *s, uint64_t **ret, size_t *n_ret,
                        struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SNAPSHOT_LIMIT_JOURNAL);
        _cleanup_free_ uint64_t *ids = NULL;
        size_t n = 0, cap = 0;
        char *line, *save = NULL;
        int r = kiln_read_file_at_flags(s->dir_fd, "durable", O_NOFOLLOW, &b);

        *ret = NULL;
        *n_ret = 0;
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return kiln_error_set(err, r, "read '%s/durable': %s", s->dir, strerror(-r));
        for (line = strtok_r(b.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                uint64_t id;

                /* A torn last line of a crash is no id: skipped. */
                if (!parse_u64(line, &id))
                        continue;
                if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        ids = kiln_xreallocarray(ids, cap, sizeof(uint64_t));
                }
                ids[n++] = id;
        }
        if (n > 1)
                qsort(ids, n, sizeof(uint64_t), compare_u64);
        *ret = ids ? TAKE_PTR(ids) : kiln_xcalloc(1, sizeof(uint64_t));
        *n_ret = n;
        return 0;
}

/* Rewrites the journal with exactly the loaded snapshots, then opens it for
 * appending. */
static int journal_open(struct kiln_snapshot_store *s, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SNAPSHOT_LIMIT_JOURNAL);
        _cleanup_free_ char *path = kiln_xasprintf("%s/durable", s->dir);
        int r = 0;

        for (size_t i = 0; i < s->n_entries && r >= 0; i++)
                r = kiln_buf_printf(&b, "%" PRIu64 "\n", s->entries[i]->id);
        if (r >= 0)
                r = kiln_write_file_atomic(path, b.data, b.len, 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        s->journal_fd = openat(s->dir_fd, "durable", O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        if (s->journal_fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", path, strerror(errno));
        return 0;
}

/* The driver that made the store's snapshots: AUTO when none is recorded
 * (a new store). */
static int driver_read(struct kiln_snapshot_store *s, enum kiln_snapshot_driver *ret,
                       struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(64);
        int r = kiln_read_file_at_flags(s->dir_fd, "driver", O_NOFOLLOW, &b);

        if (r == -ENOENT) {
                *ret = KILN_SNAPSHOT_DRIVER_AUTO;
                return 0;
        }
        if (r < 0)
                return kiln_error_set(err, r, "read '%s/driver': %s", s->dir, strerror(-r));
        if (streq(b.data, "overlayfs\n"))
                *ret = KILN_SNAPSHOT_DRIVER_OVERLAYFS;
        else if (streq(b.data, "native\n"))
                *ret = KILN_SNAPSHOT_DRIVER_NATIVE;
        else
                return kiln_error_set(err, -EBADMSG, "read '%s/driver': unknown driver", s->dir);
        return 0;
}

static int driver_write(struct kiln_snapshot_store *s, struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/driver", s->dir);
        _cleanup_free_ char *text = kiln_xasprintf("%s\n", kiln_snapshot_store_driver_name(s));
        int r = kiln_write_file_atomic(path, text, strlen(text), 0600);

        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        return 0;
}

/* Loads the committed snapshots and removes everything else the store's
 * previous owner left half-done. */
static int store_load(struct kiln_snapshot_store *s, bool wipe, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf ids = KILN_BUF_INIT(64);
        _cleanup_free_ uint64_t *durable = NULL;
        size_t n_durable = 0;
        DIR *d;
        struct dirent *de;
        uint64_t max = 0;
        int fd, r;
        bool changed;

        r = kiln_read_file_at_flags(s->dir_fd, "ids", O_NOFOLLOW, &ids);
        if (r >= 0) {
                char *nl = strchr(ids.data, '\n');

                if (nl)
                        *nl = '\0';
                if (!parse_u64(ids.data, &max))
                        return kiln_error_set(err, -EBADMSG, "read '%s/ids': not a number", s->dir);
        } else if (r != -ENOENT)
                return kiln_error_set(err, r, "read '%s/ids': %s", s->dir, strerror(-r));

        fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || !(d = fdopendir(fd))) {
                r = -errno;
                if (fd >= 0)
                        (void) close(fd);
                return kiln_error_set(err, r, "open '%s': %s", s->dir, strerror(-r));
        }
        r = 0;
        while ((de = readdir(d))) {
                uint64_t id;
                struct entry *e = NULL;
                int k;

                /* Half-removed snapshots, probe mounts, temporary files of
                 * an "ids" write. */
                if (startswith(de->d_name, "rm-") || startswith(de->d_name, "probe-") ||
                    startswith(de->d_name, "ids.") || startswith(de->d_name, "driver.") ||
                    startswith(de->d_name, "durable.")) {
                        r = kiln_rm_rf_at(s->dir_fd, de->d_name, NULL, err);
                        if (r < 0)
                                break;
                        continue;
                }
                if (!parse_u64(de->d_name, &id) || id == 0)
                        continue;
                if (id > max)
                        max = id;
                if (wipe) {
                        r = kiln_rm_rf_at(s->dir_fd, de->d_name, NULL, err);
                        if (r < 0)
                                break;
                        continue;
                }
                k = meta_read(s, id, &e);
                if (k == -ENOENT || k == -EBADMSG) {
                        log_debug("snapshot store '%s': removing %s snapshot %s", s->dir,
                                  k == -ENOENT ? "active" : "malformed", de->d_name);
                        r = kiln_rm_rf_at(s->dir_fd, de->d_name, NULL, err);
                        if (r < 0)
                                break;
                        continue;
                }
                if (k < 0) {
                        r = kiln_error_set(err, k, "read '%s/%s/meta': %s", s->dir, de->d_name,
                                           strerror(-k));
                        break;
                }
                index_add(s, e);
        }
        closedir(d);
        if (r < 0)
                return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);

        /* Committed snapshots the journal does not name were not durable
         * when the previous owner stopped: their files may be incomplete. */
        r = journal_read(s, &durable, &n_durable, err);
        if (r < 0)
                return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);
        for (size_t i = 0; durable && i < s->n_entries;) {
                uint64_t id = s->entries[i]->id;

                if (bsearch(&id, durable, n_durable, sizeof(uint64_t), compare_u64)) {
                        i++;
                        continue;
                }
                log_debug("snapshot store '%s': removing snapshot %" PRIu64
                          ", which was not on disk for sure when its owner stopped",
                          s->dir, id);
                entry_free(index_del(s, id));
                r = remove_dir(s, id, err);
                if (r < 0)
                        return r;
        }

        /* Drop snapshots whose chain is broken (never made by kiln, but a
         * store must not mount half a chain), deepest first. */
        do {
                changed = false;
                for (size_t i = 0; i < s->n_entries; i++) {
                        struct entry *e = s->entries[i];

                        if (e->parent && !index_get(s, e->parent)) {
                                log_debug("snapshot store '%s': removing snapshot %" PRIu64
                                          " of missing parent %" PRIu64,
                                          s->dir, e->id, e->parent);
                                entry_free(index_del(s, e->id));
                                r = remove_dir(s, e->id, err);
                                if (r < 0)
                                        return r;
                                changed = true;
                                break;
                        }
                }
        } while (changed);
        /* Parents have smaller ids, so one pass in id order sets depths. */
        for (size_t i = 0; i < s->n_entries; i++) {
                struct entry *e = s->entries[i], *p = e->parent ? index_get(s, e->parent) : NULL;

                e->depth = p ? p->depth + 1 : 1;
                if (p)
                        p->children++;
        }
        s->reserved = max;
        s->next_id = max + 1;
        return 0;
}

int kiln_snapshot_store_open(const char *dir, enum kiln_snapshot_driver d,
                             struct kiln_snapshot_store **ret, struct kiln_error **err)
{
        _cleanup_(kiln_snapshot_store_freep) struct kiln_snapshot_store *s = NULL;
        enum kiln_snapshot_driver recorded = KILN_SNAPSHOT_DRIVER_AUTO, want;
        char real[PATH_MAX];
        int r;

        if (dir[0] != '/')
                return kiln_error_set(err, -EINVAL, "snapshot store '%s': not an absolute path",
                                      dir);
        r = kiln_mkdir_p(dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", dir, strerror(-r));
        if (!realpath(dir, real))
                return kiln_error_set(err, -errno, "resolve '%s': %s", dir, strerror(errno));

        s = kiln_xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        pthread_mutex_init(&s->sync_lock, NULL);
        pthread_cond_init(&s->sync_cond, NULL);
        s->journal_fd = -1;
        s->dir = kiln_xstrdup(real);
        s->lock_fd = -1;
        s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s->dir_fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", s->dir, strerror(errno));
        s->lock_fd = openat(s->dir_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (s->lock_fd < 0)
                return kiln_error_set(err, -errno, "open '%s/lock': %s", s->dir, strerror(errno));
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK)
                        return kiln_error_set(err, -EBUSY,
                                              "snapshot store '%s' is in use by another process",
                                              s->dir);
                return kiln_error_set(err, -errno, "lock '%s/lock': %s", s->dir, strerror(errno));
        }

        r = detach_leftover_mounts(s, err);
        if (r < 0)
                return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);
        r = driver_read(s, &recorded, err);
        if (r < 0)
                return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);

        /* auto keeps what the store holds: a failing probe must not turn
         * a cache of overlay diffs into native trees. */
        want = d == KILN_SNAPSHOT_DRIVER_AUTO && recorded != KILN_SNAPSHOT_DRIVER_AUTO ? recorded
                                                                                       : d;
        s->driver = want;
        if (want != KILN_SNAPSHOT_DRIVER_NATIVE) {
                struct kiln_error *pe = NULL;

                r = probe_overlay(s, &pe);
                if (r >= 0)
                        s->driver = KILN_SNAPSHOT_DRIVER_OVERLAYFS;
                else if (want == KILN_SNAPSHOT_DRIVER_OVERLAYFS) {
                        if (d == KILN_SNAPSHOT_DRIVER_AUTO)
                                r = kiln_error_set(err, r,
                                                   "snapshotter overlayfs (which made the "
                                                   "store's snapshots; snapshotter \"native\" "
                                                   "starts over without them): %s",
                                                   kiln_error_message(pe));
                        else
                                r = kiln_error_set(err, r, "snapshotter overlayfs: %s",
                                                   kiln_error_message(pe));
                        kiln_error_free(pe);
                        return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);
                } else {
                        log_debug("snapshot store '%s': overlayfs unusable: %s", s->dir,
                                  kiln_error_message(pe));
                        s->driver = KILN_SNAPSHOT_DRIVER_NATIVE;
                }
                kiln_error_free(pe);
        }

        /* Snapshots of another driver mean nothing to this one. */
        if (recorded != KILN_SNAPSHOT_DRIVER_AUTO && recorded != s->driver)
                log_debug("snapshot store '%s': removing the snapshots of driver %s", s->dir,
                          recorded == KILN_SNAPSHOT_DRIVER_NATIVE ? "native" : "overlayfs");
        r = store_load(s, recorded != KILN_SNAPSHOT_DRIVER_AUTO && recorded != s->driver, err);
        if (r < 0)
                return r;
        if (recorded != s->driver) {
                r = driver_write(s, err);
                if (r < 0)
                        return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);
        }
        r = journal_open(s, err);
        if (r < 0)
                return kiln_error_wrap(err, "open snapshot store '%s'", s->dir);
        r = -pthread_create(&s->syncer, NULL, syncer_main, s);
        if (r < 0)
                return kiln_error_set(err, r, "open snapshot store '%s': start its syncer: %s",
                                      s->dir, strerror(-r));
        s->syncer_running = true;
        log_debug_f(KILN_FIELDS({ "snapshotter", kiln_snapshot_store_driver_name(s) },
                                { "root", s->dir }),
                    "snapshot store opened%s%s",
                    s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS && !s->new_mount_api
                            ? " (overlay mounts through mount(2))"
                            : "",
                    s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS && !s->volatile_upper
                            ? " (no volatile overlays: every unmount syncs)"
                            : "");
        *ret = TAKE_PTR(s);
        return 0;
}

struct kiln_snapshot_store *kiln_snapshot_store_free(struct kiln_snapshot_store *s)
{
        if (!s)
                return NULL;
        if (s->syncer_running) {
                /* The syncer drains what is left before it ends. */
                lock(s);
                s->stopping = true;
                pthread_cond_signal(&s->sync_cond);
                unlock(s);
                (void) pthread_join(s->syncer, NULL);
        }
        if (s->journal_fd >= 0)
                (void) close(s->journal_fd);
        free(s->unsynced);
        pthread_cond_destroy(&s->sync_cond);
        pthread_mutex_destroy(&s->sync_lock);
        for (size_t i = 0; i < s->n_entries; i++)
                entry_free(s->entries[i]);
        free(s->entries);
        if (s->lock_fd >= 0)
                (void) close(s->lock_fd);
        if (s->dir_fd >= 0)
                (void) close(s->dir_fd);
        pthread_mutex_destroy(&s->lock);
        free(s->dir);
        free(s);
        return NULL;
}

/* ---- active snapshots ---- */

static struct kiln_snapshot *snapshot_free(struct kiln_snapshot *snap)
{
        if (snap) {
                free(snap->target);
                free(snap);
        }
        return NULL;
}

/* Takes the snapshot out of the index and off the disk. */
static void snapshot_discard(struct kiln_snapshot *snap)
{
        struct kiln_snapshot_store *s = snap->store;
        struct kiln_error *e = NULL;

        lock(s);
        entry_free(index_del(s, snap->id));
        unlock(s);
        if (remove_dir(s, snap->id, &e) < 0) {
                log_debug("snapshot store '%s': %s", s->dir, kiln_error_message(e));
                kiln_error_free(e);
        }
}

int kiln_snapshot_prepare(struct kiln_snapshot_store *s, const char *parent_id,
                          struct kiln_snapshot **ret, struct kiln_error **err)
{
        _cleanup_free_ char *dir = NULL, *fs = NULL, *work = NULL, *parent_fs = NULL;
        struct kiln_snapshot *snap;
        struct entry *p = NULL, *e;
        uint64_t id = 0;
        int r;

        lock(s);
        if (parent_id) {
                p = index_committed(s, parent_id);
                if (!p) {
                        unlock(s);
                        return kiln_error_set(err, -ENOENT,
                                              "prepare snapshot on '%s': no such "
                                              "snapshot",
                                              parent_id);
                }
                if (p->depth >= KILN_SNAPSHOT_LIMIT_DEPTH) {
                        unlock(s);
                        return kiln_error_set(err, -E2BIG,
                                              "prepare snapshot on '%s': more than %u layers",
                                              parent_id, KILN_SNAPSHOT_LIMIT_DEPTH);
                }
        }
        r = id_allocate(s, &id, err);
        if (r < 0) {
                unlock(s);
                return kiln_error_wrap(err, "prepare snapshot");
        }
        e = kiln_xcalloc(1, sizeof(*e));
        e->id = id;
        e->parent = p ? p->id : 0;
        e->depth = p ? p->depth + 1 : 1;
        if (p)
                p->children++;
        index_add(s, e);
        unlock(s);

        snap = kiln_xcalloc(1, sizeof(*snap));
        snap->store = s;
        snap->id = id;
        id_format(id, snap->id_str);
        snap->parent = e->parent;

        dir = kiln_xasprintf("%s/%s", s->dir, snap->id_str);
        fs = kiln_xasprintf("%s/fs", dir);
        work = kiln_xasprintf("%s/work", dir);
        if (mkdir(dir, 0700) < 0 || mkdir(fs, 0755) < 0 ||
            (s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS && mkdir(work, 0700) < 0)) {
                r = kiln_error_set(err, -errno, "prepare snapshot: create '%s': %s", dir,
                                   strerror(errno));
                goto fail;
        }
        if (snap->parent) {
                parent_fs = fs_path(s, snap->parent);
                if (s->driver == KILN_SNAPSHOT_DRIVER_NATIVE)
                        r = copy_tree(parent_fs, fs, err);
                else
                        r = copy_root_attrs(parent_fs, fs, err);
                if (r < 0) {
                        (void) kiln_error_wrap(err, "prepare snapshot on '%s'", parent_id);
                        goto fail;
                }
        } else if (chmod(fs, 0755) < 0) {
                r = kiln_error_set(err, -errno, "prepare snapshot: chmod '%s': %s", fs,
                                   strerror(errno));
                goto fail;
        }
        *ret = snap;
        return 0;
fail:
        snapshot_discard(snap);
        snapshot_free(snap);
        return r;
}

const char *kiln_snapshot_id(const struct kiln_snapshot *snap)
{
        return snap->id_str;
}

int kiln_snapshot_mount(struct kiln_snapshot *snap, const char *target, struct kiln_error **err)
{
        struct kiln_snapshot_store *s = snap->store;
        _cleanup_free_ char *fs = fs_path(s, snap->id), *work = NULL;
        _cleanup_(strv_freep) char **lowers = NULL;
        size_t n = 0;
        int r;

        if (snapshot_mounted(snap))
                return kiln_error_set(err, -EBUSY, "mount snapshot '%s' at '%s': mounted at '%s'",
                                      snap->id_str, target, snap->target);
        free(snap->target);
        snap->target = NULL;
        if (s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS && snap->parent) {
                lock(s);
                lowers = chain_paths(s, snap->parent, &n);
                unlock(s);
                work = kiln_xasprintf("%s/%s/work", s->dir, snap->id_str);
                r = overlay_mount(s, (const char *const *) lowers, n, fs, work, target, err);
        } else
                r = bind_mount(fs, target, false, err);
        if (r < 0)
                return kiln_error_wrap(err, "mount snapshot '%s'", snap->id_str);
        r = mount_id_of(target, &snap->mnt_id);
        if (r < 0) {
                (void) umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
                return kiln_error_set(err, r, "mount snapshot '%s': stat '%s': %s", snap->id_str,
                                      target, strerror(-r));
        }
        snap->target = kiln_xstrdup(target);
        return 0;
}

int kiln_snapshot_mount_view(struct kiln_snapshot_store *s, const char *id, const char *target,
                             struct kiln_error **err)
{
        _cleanup_(strv_freep) char **lowers = NULL;
        struct entry *e;
        size_t n = 0;
        int r;

        lock(s);
        e = index_committed(s, id);
        if (e) {
                if (s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS)
                        lowers = chain_paths(s, e->id, &n);
                else {
                        lowers = kiln_xcalloc(2, sizeof(*lowers));
                        lowers[n++] = fs_path(s, e->id);
                }
        }
        unlock(s);
        if (!e)
                return kiln_error_set(err, -ENOENT, "mount snapshot '%s': no such snapshot", id);
        if (n == 1)
                r = bind_mount(lowers[0], target, true, err);
        else
                r = overlay_mount(s, (const char *const *) lowers, n, NULL, NULL, target, err);
        if (r < 0)
                return kiln_error_wrap(err, "mount snapshot '%s'", id);
        return 0;
}

static int commit_impl(struct kiln_snapshot *snap, const char *name, bool use, char **ret_id,
                       struct kiln_error **err)
{
        struct kiln_snapshot_store *s = snap->store;
        struct entry *e, *other;
        struct timespec now;
        char work[KILN_SNAPSHOT_ID_SIZE + 8];
        int r;

        if (name && !name_valid(name)) {
                _cleanup_free_ char *q = kiln_quote_untrusted(name, strlen(name), 128);

                r = kiln_error_set(err, -EINVAL,
                                   "commit snapshot '%s': invalid name '%s' (1 to %u bytes, no "
                                   "control characters)",
                                   snap->id_str, q, KILN_SNAPSHOT_LIMIT_NAME);
                goto fail;
        }
        if (snapshot_mounted(snap)) {
                r = kiln_error_set(err, -EBUSY, "commit snapshot '%s': still mounted at '%s'",
                                   snap->id_str, snap->target);
                goto fail;
        }
        if (s->driver == KILN_SNAPSHOT_DRIVER_OVERLAYFS) {
                (void) snprintf(work, sizeof(work), "%s/work", snap->id_str);
                remove_tree(s, work);
        }
        (void) clock_gettime(CLOCK_REALTIME, &now);

        lock(s);
        other = name ? index_by_name(s, name) : NULL;
        if (other) {
                /* Another commit of the same content won: use it. */
                if (use)
                        other->uses++;
                if (ret_id) {
                        *ret_id = kiln_xmalloc(KILN_SNAPSHOT_ID_SIZE);
                        id_format(other->id, *ret_id);
                }
                unlock(s);
                log_debug("snapshot store '%s': snapshot %s discarded, '%s' exists as %" PRIu64,
                          s->dir, snap->id_str, name, other->id);
                snapshot_discard(snap);
                snapshot_free(snap);
                return 0;
        }
        e = index_get(s, snap->id);
        e->name = name ? kiln_xstrdup(name) : NULL;
        e->created_ns = (int64_t) now.tv_sec * 1000000000 + now.tv_nsec;
        r = meta_write(s, e, err);
        if (r < 0) {
                free(e->name);
                e->name = NULL;
                unlock(s);
                (void) kiln_error_wrap(err, "commit snapshot '%s'", snap->id_str);
                goto fail;
        }
        e->committed = true;
        if (use)
                e->uses++;
        unsynced_add(s, snap->id);
        unlock(s);
        if (ret_id)
                *ret_id = kiln_xstrdup(snap->id_str);
        snapshot_free(snap);
        return 0;
fail:
        kiln_snapshot_abort(snap);
        return r;
}

int kiln_snapshot_commit(struct kiln_snapshot *snap, const char *name, char **ret_id,
                         struct kiln_error **err)
{
        return commit_impl(snap, name, false, ret_id, err);
}

int kiln_snapshot_commit_and_use(struct kiln_snapshot *snap, const char *name, char **ret_id,
                                 struct kiln_error **err)
{
        return commit_impl(snap, name, true, ret_id, err);
}

void kiln_snapshot_abort(struct kiln_snapshot *snap)
{
        if (!snap)
                return;
        if (snapshot_mounted(snap))
                (void) umount2(snap->target, MNT_DETACH | UMOUNT_NOFOLLOW);
        snapshot_discard(snap);
        snapshot_free(snap);
}

/* ---- committed snapshots ---- */

static int lookup_impl(struct kiln_snapshot_store *s, const char *name, bool use, char **ret_id)
{
        struct entry *e;

        lock(s);
        e = name ? index_by_name(s, name) : NULL;
        if (e) {
                if (use)
                        e->uses++;
                *ret_id = kiln_xmalloc(KILN_SNAPSHOT_ID_SIZE);
                id_format(e->id, *ret_id);
        }
        unlock(s);
        return e ? 1 : 0;
}

int kiln_snapshot_lookup(struct kiln_snapshot_store *s, const char *name, char **ret_id)
{
        return lookup_impl(s, name, false, ret_id);
}

int kiln_snapshot_lookup_and_use(struct kiln_snapshot_store *s, const char *name, char **ret_id)
{
        return lookup_impl(s, name, true, ret_id);
}

int kiln_snapshot_exists(struct kiln_snapshot_store *s, const char *id)
{
        bool found;

        lock(s);
        found = index_committed(s, id) != NULL;
        unlock(s);
        return found ? 1 : 0;
}

void kiln_snapshot_info_release(struct kiln_snapshot_info *i)
{
        if (i) {
                free(i->name);
                i->name = NULL;
        }
}

int kiln_snapshot_info(struct kiln_snapshot_store *s, const char *id,
                       struct kiln_snapshot_info *ret)
{
        struct entry *e;

        lock(s);
        e = index_committed(s, id);
        if (e) {
                *ret = (struct kiln_snapshot_info){
                        .name = e->name ? kiln_xstrdup(e->name) : NULL,
                        .created_ns = e->created_ns,
                        .depth = e->depth,
                        .uses = e->uses,
                        .children = e->children,
                };
                id_format(e->id, ret->id);
                if (e->parent)
                        id_format(e->parent, ret->parent);
        }
        unlock(s);
        return e ? 0 : -ENOENT;
}

int kiln_snapshot_list(struct kiln_snapshot_store *s, char ***ret, size_t *n_ret)
{
        char **v;
        size_t n = 0;

        lock(s);
        v = kiln_xcalloc(s->n_entries + 1, sizeof(*v));
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i]->committed) {
                        v[n] = kiln_xmalloc(KILN_SNAPSHOT_ID_SIZE);
                        id_format(s->entries[i]->id, v[n++]);
                }
        unlock(s);
        *ret = v;
        *n_ret = n;
        return 0;
}

int kiln_snapshot_use(struct kiln_snapshot_store *s, const char *id)
{
        struct entry *e;

        lock(s);
        e = index_committed(s, id);
        if (e)
                e->uses++;
        unlock(s);
        return e ? 0 : -ENOENT;
}

void kiln_snapshot_release(struct kiln_snapshot_store *s, const char *id)
{
        struct entry *e;

        lock(s);
        e = index_committed(s, id);
        if (e && e->uses > 0)
                e->uses--;
        unlock(s);
}

int kiln_snapshot_remove(struct kiln_snapshot_store *s, const char *id, struct kiln_error **err)
{
        char name[KILN_SNAPSHOT_ID_SIZE], gone[KILN_SNAPSHOT_ID_SIZE + 8];
        struct entry *e;
        int r;

        lock(s);
        e = index_committed(s, id);
        if (!e) {
                unlock(s);
                return kiln_error_set(err, -ENOENT, "remove snapshot '%s': no such snapshot", id);
        }
        if (e->children || e->uses) {
                unsigned children = e->children, uses = e->uses;

                unlock(s);
                return kiln_error_set(err, -EBUSY,
                                      "remove snapshot '%s': in use (%u children, %u users)", id,
                                      children, uses);
        }
        id_format(e->id, name);
        (void) snprintf(gone, sizeof(gone), "rm-%s", name);
        if (renameat(s->dir_fd, name, s->dir_fd, gone) < 0) {
                r = -errno;
                unlock(s);
                return kiln_error_set(err, r, "remove snapshot '%s': rename '%s/%s': %s", id,
                                      s->dir, name, strerror(-r));
        }
        entry_free(index_del(s, e->id));
        unlock(s);
        r = kiln_rm_rf_at(s->dir_fd, gone, NULL, err);
        if (r < 0)
                return kiln_error_wrap(err, "remove snapshot '%s'", id);
        return 0;
}

int kiln_snapshot_upper_path(struct kiln_snapshot_store *s, const char *id, char **ret)
{
        struct entry *e;

        if (s->driver != KILN_SNAPSHOT_DRIVER_OVERLAYFS)
                return -EOPNOTSUPP;
        lock(s);
        e = index_committed(s, id);
        if (e)
                *ret = fs_path(s, e->id);
        unlock(s);
        return e ? 0 : -ENOENT;
}

int kiln_snapshot_fs_path(struct kiln_snapshot_store *s, const char *id, char **ret)
{
        struct entry *e;

        lock(s);
        e = index_committed(s, id);
        if (e)
                *ret = fs_path(s, e->id);
        unlock(s);
        return e ? 0 : -ENOENT;
}

static bool label_key_valid(const char *key)
{
        size_t n = strlen(key);

        if (n == 0 || n > KILN_SNAPSHOT_LIMIT_LABEL_KEY || key[0] == '.')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') ||
                      key[i] == '.' || key[i] == '-'))
                        return false;
        return true;
}

/* <dir>/<id>/labels/<key> of a committed id, or NULL when id is unknown. */
static char *label_path(struct kiln_snapshot_store *s, const char *id, const char *key)
{
        struct entry *e;
        char *p = NULL;

        lock(s);
        e = index_committed(s, id);
        if (e)
                p = kiln_xasprintf("%s/%" PRIu64 "/labels/%s", s->dir, e->id, key);
        unlock(s);
        return p;
}

int kiln_snapshot_label_set(struct kiln_snapshot_store *s, const char *id, const char *key,
                            const char *value, struct kiln_error **err)
{
        _cleanup_free_ char *p = NULL;
        char *slash;
        int r;

        if (!label_key_valid(key))
                return kiln_error_set(err, -EINVAL, "snapshot label '%s': invalid key", key);
        if (strlen(value) > KILN_SNAPSHOT_LIMIT_LABEL_VALUE)
                return kiln_error_set(err, -EINVAL,
                                      "snapshot label '%s': value longer than %d bytes", key,
                                      KILN_SNAPSHOT_LIMIT_LABEL_VALUE);
        p = label_path(s, id, key);
        if (!p)
                return kiln_error_set(err, -ENOENT, "snapshot '%s': no such snapshot", id);
        slash = strrchr(p, '/');
        *slash = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return kiln_error_set(err, -errno, "create '%s': %s", p, strerror(errno));
        *slash = '/';
        r = kiln_write_file_replace(p, value, strlen(value), 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", p, strerror(-r));
        return 0;
}

int kiln_snapshot_label_get(struct kiln_snapshot_store *s, const char *id, const char *key,
                            char **ret)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = { .max = KILN_SNAPSHOT_LIMIT_LABEL_VALUE };
        _cleanup_free_ char *p = NULL;
        int r;

        if (!label_key_valid(key))
                return -EINVAL;
        p = label_path(s, id, key);
        if (!p)
                return 0;
        r = kiln_read_file_at_flags(AT_FDCWD, p, O_NOFOLLOW, &b);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        *ret = kiln_buf_steal(&b);
        return 1;
}

static int strcmp_p(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int kiln_snapshot_label_list(struct kiln_snapshot_store *s, const char *id, char ***ret,
                             size_t *n_ret)
{
        _cleanup_free_ char *dir = label_path(s, id, "");
        char **v = kiln_xcalloc(1, sizeof(char *));
        struct dirent *de;
        size_t n = 0;
        DIR *dp;

        *ret = v;
        *n_ret = 0;
        dp = dir ? opendir(dir) : NULL;
        if (!dp)
                return !dir || errno == ENOENT ? 0 : -errno;
        while ((de = readdir(dp))) {
                if (!label_key_valid(de->d_name))
                        continue;
                v = kiln_xreallocarray(v, n + 2, sizeof(char *));
                v[n++] = kiln_xstrdup(de->d_name);
                v[n] = NULL;
        }
        closedir(dp);
        qsort(v, n, sizeof(char *), strcmp_p);
        *ret = v;
        *n_ret = n;
        return 0;
}

int kiln_snapshot_usage(struct kiln_snapshot_store *s, const char *id, uint64_t *bytes,
                        struct kiln_error **err)
{
        _cleanup_free_ char *fs = NULL;
        _cleanup_close_ int fd = -1;
        struct usage u = { .bytes = 0 };
        struct stat st;
        int r;

        r = kiln_snapshot_use(s, id);
        if (r < 0)
                return kiln_error_set(err, r, "usage of snapshot '%s': no such snapshot", id);
        lock(s);
        fs = fs_path(s, index_committed(s, id)->id);
        unlock(s);
        fd = open(fs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                r = -errno;
        else {
                u.bytes = (uint64_t) st.st_blocks * 512u;
                r = usage_dir(&u, fd, 1);
        }
        for (size_t i = 0; i < u.links.n_links; i++)
                free(u.links.links[i].path);
        free(u.links.links);
        kiln_snapshot_release(s, id);
        if (r < 0)
                return kiln_error_set(err, r, "usage of snapshot '%s': walk '%s': %s", id, fs,
                                      strerror(-r));
        *bytes = u.bytes;
        return 0;
}
