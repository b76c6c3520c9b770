/* SPDX-License-Identifier: Apache-2.0 */
/* Executing one op of a solve: sources, exec, file, merge. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/goquote.h"
#include "base/log.h"
#include "base/macro.h"
#include "base/sha256.h"
#include "exec/cni.h"
#include "exec/exec.h"
#include "fileop/fileop.h"
#include "snapshot/snapshot.h"
#include "solver/solver-internal.h"
#include "source/git.h"
#include "source/http.h"
#include "source/image.h"
#include "source/local.h"

/* The per-op directories under <root>/exec start with this, so that a
 * restart can tell them from the runtime's and the unpacker's. */
#define RUN_DIR_PREFIX "solve-"
/* Longest quoted command in an exec's error message. */
#define RUN_MAX_ERROR_COMMAND (64u << 10)

/* Everything one op execution holds, released by run_cleanup in reverse. */
struct run {
        struct kiln_solver_solve *sv;
        struct kiln_solver_node *node;
        char *dir; /* <root>/exec/solve-<hex> */
        unsigned seq;
        char **mounts; /* mounted targets, unmounted last first */
        size_t n_mounts;
        struct kiln_snapshot **active; /* aborted unless committed */
        size_t n_active;
        char **uses; /* snapshot ids with a use held */
        size_t n_uses;
        struct kiln_solver_cachemount **caches;
        char **cache_keys; /* the key each of caches was acquired for */
        size_t n_caches;
        int *fds;
        size_t n_fds;
        bool unmount_failed;
};

static int run_init(struct run *run, struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                    struct kiln_error **err)
{
        *run = (struct run){ .sv = sv, .node = n };
        uint8_t rnd[8];
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
                return kiln_error_set(err, -errno, "random id: %s", strerror(errno));
        run->dir = kiln_xasprintf("%s/" RUN_DIR_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x",
                                  sv->s->exec_dir, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
                                  rnd[6], rnd[7]);
        if (mkdir(run->dir, 0700) < 0) {
                int r = -errno;
                free(run->dir);
                run->dir = NULL;
                return kiln_error_set(err, r, "create '%s': %s", sv->s->exec_dir, strerror(-r));
        }
        return 0;
}

static void push_str(char ***v, size_t *n, char *s)
{
        *v = kiln_xreallocarray(*v, *n + 1, sizeof(**v));
        (*v)[(*n)++] = s;
}

static void run_forget_mount(struct run *run, const char *path)
{
        for (size_t i = run->n_mounts; i-- > 0;)
                if (streq(run->mounts[i], path)) {
                        free(run->mounts[i]);
                        memmove(run->mounts + i, run->mounts + i + 1,
                                (run->n_mounts - i - 1) * sizeof(char *));
                        run->n_mounts--;
                        return;
                }
}

static void run_forget_active(struct run *run, struct kiln_snapshot *snap)
{
        for (size_t i = 0; i < run->n_active; i++)
                if (run->active[i] == snap) {
                        memmove(run->active + i, run->active + i + 1,
                                (run->n_active - i - 1) * sizeof(*run->active));
                        run->n_active--;
                        return;
                }
}

static void cachemount_release(struct kiln_solver *s, struct kiln_solver_cachemount *m)
{
        pthread_mutex_lock(&s->lock);
        if (m->users > 0)
                m->users--;
        m->exclusive = false;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

static void run_cleanup(struct run *run)
{
        struct kiln_solver *s = run->sv->s;
        for (size_t i = run->n_fds; i-- > 0;)
                close(run->fds[i]);
        free(run->fds);
        for (size_t i = run->n_mounts; i-- > 0;) {
                struct kiln_error *e = NULL;
                if (kiln_snapshot_unmount(run->mounts[i], &e) < 0) {
                        log_warning("unmount '%s': %s", run->mounts[i], kiln_error_message(e));
                        run->unmount_failed = true;
                }
                kiln_error_free(e);
                free(run->mounts[i]);
        }
        free(run->mounts);
        for (size_t i = run->n_active; i-- > 0;)
                kiln_snapshot_abort(run->active[i]);
        free(run->active);
        for (size_t i = 0; i < run->n_uses; i++) {
                kiln_snapshot_release(s->snapshots, run->uses[i]);
                free(run->uses[i]);
        }
        free(run->uses);
        for (size_t i = 0; i < run->n_caches; i++) {
                cachemount_release(s, run->caches[i]);
                free(run->cache_keys[i]);
        }
        free(run->caches);
        free(run->cache_keys);
        if (run->dir && !run->unmount_failed) {
                struct kiln_error *e = NULL;
                if (kiln_rm_rf_at(AT_FDCWD, run->dir, NULL, &e) < 0)
                        log_warning("%s", kiln_error_message(e));
                kiln_error_free(e);
        }
        free(run->dir);
        *run = (struct run){ 0 };
}

/* An op that holds a max-parallelism slot while it executes (exec, file,
 * git): the slot, then the run's state. */
static int run_begin(struct run *run, struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                     struct kiln_error **err)
{
        int r = kiln_solver_sem_acquire(sv);
        if (r < 0)
                return kiln_error_set(err, r, "context canceled");
        r = run_init(run, sv, n, err);
        if (r < 0)
                kiln_solver_sem_release(sv);
        return r;
}

/* Its end: the state released, the vertex's work over, the slot given back. */
static void run_end(struct run *run)
{
        struct kiln_solver_solve *sv = run->sv;
        struct kiln_solver_node *n = run->node;

        run_cleanup(run);
        kiln_solver_vertex_finished(sv, n);
        kiln_solver_sem_release(sv);
}

/* A new empty directory below the run's directory. */
static int run_mkdir(struct run *run, const char *what, char **ret, struct kiln_error **err)
{
        char *p = kiln_xasprintf("%s/%s%u", run->dir, what, run->seq++);
        if (mkdir(p, 0700) < 0) {
                int r = -errno;
                kiln_error_set(err, r, "create '%s': %s", p, strerror(-r));
                free(p);
                return r;
        }
        *ret = p;
        return 0;
}

static int run_open_dir(struct run *run, const char *path, int *ret, struct kiln_error **err)
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", path, strerror(errno));
        run->fds = kiln_xreallocarray(run->fds, run->n_fds + 1, sizeof(int));
        run->fds[run->n_fds++] = fd;
        *ret = fd;
        return 0;
}

/* A new active snapshot on parent (NULL: empty), mounted writable. */
static int run_prepare(struct run *run, const char *parent, struct kiln_snapshot **ret_snap,
                       char **ret_path, struct kiln_error **err)
{
        struct kiln_solver *s = run->sv->s;
        struct kiln_snapshot *snap = NULL;
        int r = kiln_snapshot_prepare(s->snapshots, parent, &snap, err);
        if (r < 0)
                return r;
        run->active = kiln_xreallocarray(run->active, run->n_active + 1, sizeof(*run->active));
        run->active[run->n_active++] = snap;
        char *path = NULL;
        r = run_mkdir(run, "rw", &path, err);
        if (r < 0)
                return r;
        r = kiln_snapshot_mount(snap, path, err);
        if (r < 0) {
                free(path);
                return r;
        }
        push_str(&run->mounts, &run->n_mounts, kiln_xstrdup(path));
        *ret_snap = snap;
        *ret_path = path;
        return 0;
}

/* Unmounts and commits an active snapshot of the run; *ret_id gets a use. */
static int run_commit(struct run *run, struct kiln_snapshot *snap, const char *path, char **ret_id,
                      struct kiln_error **err)
{
        struct kiln_error *e = NULL;
        int r = kiln_snapshot_unmount(path, &e);
        if (r < 0) {
                kiln_error_free(*err);
                *err = e;
                return r;
        }
        run_forget_mount(run, path);
        run_forget_active(run, snap);
        return kiln_snapshot_commit_and_use(snap, NULL, ret_id, err);
}

/* A read-only view of committed snapshot id (its use is held by the run). */
static int run_view(struct run *run, const char *id, char **ret_path, struct kiln_error **err)
{
        struct kiln_solver *s = run->sv->s;
        int r = kiln_snapshot_use(s->snapshots, id);
        if (r < 0)
                return kiln_error_set(err, r, "snapshot '%s': %s", id, strerror(-r));
        push_str(&run->uses, &run->n_uses, kiln_xstrdup(id));
        char *path = NULL;
        r = run_mkdir(run, "ro", &path, err);
        if (r < 0)
                return r;
        r = kiln_snapshot_mount_view(s->snapshots, id, path, err);
        if (r < 0) {
                free(path);
                return r;
        }
        push_str(&run->mounts, &run->n_mounts, kiln_xstrdup(path));
        *ret_path = path;
        return 0;
}

/* A read-only directory holding the tree of ref: a local context's own
 * directory, a view of a snapshot, or an empty directory for scratch. */
static int run_input_tree(struct run *run, struct kiln_llb_ref ref, char **ret_path,
                          struct kiln_error **err)
{
        struct kiln_solver_node *d = kiln_solver_ref_node(run->sv, ref);
        if (d && d->local) {
                *ret_path = kiln_xstrdup(kiln_source_local_context_path(d->local));
                return 0;
        }
        const char *id = d ? d->outputs[ref.output] : NULL;
        if (!id)
                return run_mkdir(run, "empty", ret_path, err);
        return run_view(run, id, ret_path, err);
}

/* The real path of sel resolved inside base as if base were "/". */
static int resolve_in(const char *base, const char *sel, char **ret, struct kiln_error **err)
{
        if (!sel || streq(sel, "") || streq(sel, "/")) {
                *ret = kiln_xstrdup(base);
                return 0;
        }
        _cleanup_close_ int root = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", base, strerror(errno));
        struct open_how how = {
                .flags = O_PATH | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        _cleanup_close_ int fd = (int) syscall(SYS_openat2, root, sel, &how, sizeof(how));
        if (fd < 0)
                return kiln_error_set(err, -errno, "mount source \"%s\": %s", sel, strerror(errno));
        char link[64], buf[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, buf, sizeof(buf) - 1);
        if (n < 0)
                return kiln_error_set(err, -errno, "mount source \"%s\": %s", sel, strerror(errno));
        buf[n] = 0;
        size_t bl = strlen(base);
        if (strncmp(buf, base, bl) != 0 || (buf[bl] != 0 && buf[bl] != '/'))
                return kiln_error_set(err, -EXDEV, "mount source \"%s\": outside its root", sel);
        *ret = kiln_xstrdup(buf);
        return 0;
}

static struct kiln_llb_file_action copy_all_action(const char *src)
{
        struct kiln_llb_file_action a = { .type = KILN_LLB_FILE_COPY };
        a.copy.src_path = (char *) (src ? src : "/");
        a.copy.dest = (char *) "/";
        a.copy.dir_copy_contents = true;
        a.copy.create_dest_path = true;
        a.copy.always_replace_existing = true;
        return a;
}

int kiln_solver_ref_snapshot(struct kiln_solver_solve *sv, struct kiln_solver_node *node,
                             uint32_t output, char **ret, struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        *ret = NULL;
        if (!node)
                return 0;
        if (!node->local) {
                const char *id = node->outputs[output];
                if (!id)
                        return 0;
                int r = kiln_snapshot_use(s->snapshots, id);
                if (r < 0)
                        return kiln_error_set(err, r, "snapshot '%s': %s", id, strerror(-r));
                *ret = kiln_xstrdup(id);
                return 0;
        }
        /* a local context used as a whole filesystem: copy it into a snapshot */
        struct run run;
        int r = run_init(&run, sv, node, err);
        if (r < 0)
                return r;
        struct kiln_snapshot *snap = NULL;
        char *path = NULL;
        int dest = -1;
        r = run_prepare(&run, NULL, &snap, &path, err);
        if (r >= 0)
                r = run_open_dir(&run, path, &dest, err);
        if (r >= 0) {
                struct kiln_llb_file_action a = copy_all_action("/");
                struct kiln_fileop_options o = { .cancel = &sv->cancel };
                r = kiln_fileop_apply(&a, dest, kiln_source_local_context_fd(node->local), &o, err);
        }
        if (r >= 0) {
                close(run.fds[--run.n_fds]);
                r = run_commit(&run, snap, path, ret, err);
        }
        free(path);
        run_cleanup(&run);
        return r;
}

/* ---- sources ---- */

struct status_ctx {
        struct kiln_solver_solve *sv;
        struct kiln_solver_node *n;
};

static void on_source_status(void *ud, const struct kiln_source_status *st)
{
        struct status_ctx *c = ud;
        struct kiln_solver_status s = {
                .id = st->id,
                .name = st->id,
                .current = (int64_t) st->current,
                .total = (int64_t) st->total,
                .started = st->started_ns,
                .completed = st->completed_ns,
        };
        kiln_solver_emit_status(c->sv, c->n, &s);
}

static char *platform_string(const struct kiln_llb_platform *p)
{
        if (!p->os || !p->architecture)
                return NULL;
        return p->variant ? kiln_xasprintf("%s/%s/%s", p->os, p->architecture, p->variant)
                          : kiln_xasprintf("%s/%s", p->os, p->architecture);
}

static int run_image(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                     struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        const struct kiln_llb_source_image *img = &n->op->source.image;
        if (!s->unpacker || !s->client)
                return kiln_error_set(err, -ENOTSUP, "pull '%s': no registry client", img->ref);
        if (img->layer_limit)
                return kiln_error_set(err, -ENOTSUP, "pull '%s': layer limit not supported yet",
                                      img->ref);
        /* image pulls are not limited by max-parallelism: only the
         * registry's transfer limits apply */
        kiln_solver_vertex_started(sv, n);
        _cleanup_free_ char *platform = platform_string(&n->op->platform);
        struct status_ctx sc = { sv, n };
        struct kiln_source_image_options o = {
                .platform = platform,
                .cancel = &sv->cancel,
                .on_status = on_source_status,
                .userdata = &sc,
        };
        char *id = NULL;
        int r = kiln_source_image_snapshot(s->unpacker, s->client, img->ref, &o, &id, err);
        if (r < 0)
                return r;
        if (id) {
                r = kiln_snapshot_use(s->snapshots, id);
                if (r < 0) {
                        kiln_error_set(err, r, "pull '%s': snapshot '%s': %s", img->ref, id,
                                       strerror(-r));
                        free(id);
                        return r;
                }
        }
        outputs[0] = id;
        return 0;
}

static int run_http(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                    struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        const struct kiln_llb_source_http *h = &n->op->source.http;
        int r = kiln_solver_sem_acquire(sv);
        if (r < 0)
                return kiln_error_set(err, r, "context canceled");
        kiln_solver_vertex_started(sv, n);
        struct status_ctx sc = { sv, n };
        struct kiln_source_http_options o = {
                .url = h->url,
                .filename = h->filename,
                .perm = h->chmod,
                .uid = h->uid,
                .gid = h->gid,
                .checksum = h->checksum,
                .work_dir = s->exec_dir,
                .cancel = &sv->cancel,
                .on_status = on_source_status,
                .userdata = &sc,
        };
        struct kiln_source_http_result res = { 0 };
        r = kiln_source_http_fetch(s->snapshots, &o, &res, err);
        kiln_solver_vertex_finished(sv, n);
        kiln_solver_sem_release(sv);
        if (r < 0)
                return r;
        r = kiln_snapshot_use(s->snapshots, res.snapshot_id);
        if (r < 0)
                kiln_error_set(err, r, "snapshot '%s': %s", res.snapshot_id, strerror(-r));
        else {
                outputs[0] = TAKE_PTR(res.snapshot_id);
                free(n->content_digest);
                n->content_digest = TAKE_PTR(res.digest);
        }
        kiln_source_http_result_release(&res);
        return r;
}

/* ---- cache mounts ---- */

static struct kiln_solver_cachemount *cachemount_get(struct kiln_solver *s, const char *path)
{
        for (struct kiln_solver_cachemount *m = s->cachemounts; m; m = m->next)
                if (streq(m->path, path))
                        return m;
        struct kiln_solver_cachemount *m = kiln_xcalloc(1, sizeof(*m));
        m->path = kiln_xstrdup(path);
        m->next = s->cachemounts;
        s->cachemounts = m;
        return m;
}

/* Picks the directory for a cache mount per its sharing mode, as BuildKit:
 * shared: one directory for everyone; locked: one directory, one user at a
 * time (the others wait); private: a directory no one else uses (another
 * copy when all are busy). Called without s->lock. */
static int cachemount_acquire(struct run *run, const char *hash, enum kiln_llb_cache_sharing mode,
                              struct kiln_solver_cachemount **ret, struct kiln_error **err)
{
        struct kiln_solver *s = run->sv->s;
        struct kiln_solver_cachemount *got = NULL;
        /* One exec mounting the same cache twice gets the same directory
         * both times, whatever the sharing (BuildKit: one ref per key and
         * exec): waiting for itself to release a locked one would hang. */
        for (size_t i = 0; i < run->n_caches; i++)
                if (streq(run->cache_keys[i], hash)) {
                        *ret = run->caches[i];
                        return 0;
                }
        pthread_mutex_lock(&s->lock);
        for (;;) {
                if (kiln_solver_cancelled(run->sv)) {
                        pthread_mutex_unlock(&s->lock);
                        return kiln_error_set(err, -ECANCELED, "context canceled");
                }
                _cleanup_free_ char *p0 = kiln_xasprintf("%s/%s", s->cachemount_dir, hash);
                struct kiln_solver_cachemount *m = cachemount_get(s, p0);
                if (mode == KILN_LLB_CACHE_SHARED && !m->exclusive) {
                        m->users++;
                        got = m;
                } else if (mode == KILN_LLB_CACHE_LOCKED && m->users == 0) {
                        m->users++;
                        m->exclusive = true;
                        got = m;
                } else if (mode == KILN_LLB_CACHE_PRIVATE) {
                        for (unsigned k = 0; k < KILN_SOLVER_LIMIT_PRIVATE_CACHES; k++) {
                                _cleanup_free_ char *p =
                                        k ? kiln_xasprintf("%s-%u", p0, k) : kiln_xstrdup(p0);
                                struct kiln_solver_cachemount *c = cachemount_get(s, p);
                                if (c->users == 0) {
                                        c->users++;
                                        c->exclusive = true;
                                        got = c;
                                        break;
                                }
                        }
                }
                if (got)
                        break;
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += KILN_SOLVER_CANCEL_POLL_MS * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
        pthread_mutex_unlock(&s->lock);
        run->caches = kiln_xreallocarray(run->caches, run->n_caches + 1, sizeof(*run->caches));
        run->cache_keys =
                kiln_xreallocarray(run->cache_keys, run->n_caches + 1, sizeof(*run->cache_keys));
        run->cache_keys[run->n_caches] = kiln_xstrdup(hash);
        run->caches[run->n_caches++] = got;
        *ret = got;
        return 0;
}

/* Creates the cache directory when missing, filled from the mount's input
 * (the selected directory of it) when it has one. */
static int cachemount_populate(struct run *run, const struct kiln_llb_mount *m, const char *path,
                               struct kiln_error **err)
{
        struct stat st;
        if (stat(path, &st) == 0)
                return 0;
        _cleanup_free_ char *tmp = NULL;
        int r = run_mkdir(run, "cache", &tmp, err);
        if (r < 0)
                return r;
        if (m->input.op) {
                _cleanup_free_ char *tree = NULL;
                int src = -1, dest = -1;
                r = run_input_tree(run, m->input, &tree, err);
                if (r >= 0)
                        r = run_open_dir(run, tree, &src, err);
                if (r >= 0)
                        r = run_open_dir(run, tmp, &dest, err);
                if (r >= 0) {
                        struct kiln_llb_file_action a = copy_all_action(m->selector);
                        struct kiln_fileop_options o = { .cancel = &run->sv->cancel };
                        r = kiln_fileop_apply(&a, dest, src, &o, err);
                }
                /* the directory itself takes the selected one's owner and
                 * mode (--mount=type=cache,uid=,gid=,mode=) */
                _cleanup_free_ char *sel = NULL;
                if (r >= 0)
                        r = resolve_in(tree, m->selector, &sel, err);
                struct stat sst;
                if (r >= 0 && stat(sel, &sst) == 0 && S_ISDIR(sst.st_mode)) {
                        if (chown(tmp, sst.st_uid, sst.st_gid) < 0 ||
                            chmod(tmp, sst.st_mode & 07777) < 0)
                                r = kiln_error_set(err, -errno, "set owner of '%s': %s", tmp,
                                                   strerror(errno));
                } else if (r >= 0 && chmod(tmp, 0755) < 0)
                        r = kiln_error_set(err, -errno, "chmod '%s': %s", tmp, strerror(errno));
                if (r < 0)
                        return r;
        } else if (chmod(tmp, 0755) < 0)
                return kiln_error_set(err, -errno, "chmod '%s': %s", tmp, strerror(errno));
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0 && errno != EEXIST)
                return kiln_error_set(err, -errno, "create cache '%s': %s", path, strerror(errno));
        return 0;
}

/* ---- exec ---- */

static const struct kiln_solver_secret *find_secret(const struct kiln_solver_build *b,
                                                    const char *id)
{
        for (size_t i = 0; i < b->n_secrets; i++)
                if (streq(b->secrets[i].id, id))
                        return &b->secrets[i];
        return NULL;
}

static const struct kiln_solver_ssh *find_ssh(const struct kiln_solver_build *b, const char *id)
{
        for (size_t i = 0; i < b->n_ssh; i++)
                if (streq(b->ssh[i].id, id))
                        return &b->ssh[i];
        return NULL;
}

/* The private tmpfs secrets are written to (mounted on first use). */
static int secrets_dir(struct run *run, char **dir, struct kiln_error **err)
{
        if (*dir)
                return 0;
        char *p = kiln_xasprintf("%s/secrets", run->dir);
        if (mkdir(p, 0700) < 0) {
                int r = kiln_error_set(err, -errno, "create '%s': %s", p, strerror(errno));
                free(p);
                return r;
        }
        char opts[64];
        snprintf(opts, sizeof(opts), "mode=0700,size=%u", KILN_SOLVER_LIMIT_SECRETS_TMPFS);
        if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0) {
                int r = kiln_error_set(err, -errno, "mount secrets tmpfs: %s", strerror(errno));
                free(p);
                return r;
        }
        push_str(&run->mounts, &run->n_mounts, kiln_xstrdup(p));
        *dir = p;
        return 0;
}

static int write_secret(const char *dir, size_t i, const struct kiln_llb_mount *m,
                        const struct kiln_solver_secret *sec, char **ret, struct kiln_error **err)
{
        char *p = kiln_xasprintf("%s/%zu", dir, i);
        int r = 0;
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                r = -errno;
        for (size_t off = 0; r == 0 && off < sec->len;) {
                ssize_t k = write(fd, (const char *) sec->data + off, sec->len - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        r = k < 0 ? -errno : -EIO;
                else
                        off += (size_t) k;
        }
        if (r == 0 && fchown(fd, m->uid, m->gid) < 0)
                r = -errno;
        if (r == 0 && fchmod(fd, m->mode & 07777) < 0)
                r = -errno;
        if (fd >= 0)
                close(fd);
        if (r < 0) {
                free(p);
                /* the id is not secret; the contents never appear */
                return kiln_error_set(err, r, "secret %s: %s", m->id, strerror(-r));
        }
        *ret = p;
        return 0;
}

struct exec_out {
        struct kiln_solver_solve *sv;
        struct kiln_solver_node *n;
};

static void on_exec_output(void *ud, int stream, const void *data, size_t len)
{
        struct exec_out *o = ud;
        kiln_solver_emit_log(o->sv, o->n, stream, data, len);
}

/* BuildKit's: process %q did not complete successfully: exit code: N */
static int exit_error(const struct kiln_llb_exec *e, int code, struct kiln_error **err)
{
        struct kiln_buf joined = KILN_BUF_INIT(RUN_MAX_ERROR_COMMAND);
        for (size_t i = 0; i < e->args.n; i++)
                (void) kiln_buf_printf(&joined, "%s%s", i ? " " : "", e->args.v[i]);
        struct kiln_buf q = KILN_BUF_INIT(RUN_MAX_ERROR_COMMAND * 4 + 16);
        (void) kiln_buf_go_quote(&q, joined.data ? joined.data : "", joined.len);
        int r = kiln_error_set(err, -EIO, "process %s did not complete successfully: exit code: %d",
                               q.data ? q.data : "\"\"", code);
        kiln_buf_release(&joined);
        kiln_buf_release(&q);
        return r;
}

static bool exit_ok(const struct kiln_llb_exec *e, int code)
{
        if (e->n_valid_exit_codes == 0)
                return code == 0;
        for (size_t i = 0; i < e->n_valid_exit_codes; i++)
                if (e->valid_exit_codes[i] == code)
                        return true;
        return false;
}

static void env_push(char ***v, size_t *n, const char *name, const char *value)
{
        if (value && *value)
                push_str(v, n, kiln_xasprintf("%s=%s", name, value));
}

struct exec_state {
        struct kiln_snapshot **snaps; /* per mount: the active snapshot, or NULL */
        char **paths;                 /* per mount: where that snapshot is mounted */
        struct kiln_exec_mount *mounts;
        size_t n_mounts;
        char **strs; /* strings the mounts point at */
        size_t n_strs;
        char **env;
        size_t n_env;
        char *secrets;
};

static void exec_state_release(struct exec_state *x, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(x->paths[i]);
        free(x->paths);
        free(x->snaps);
        free(x->mounts);
        for (size_t i = 0; i < x->n_strs; i++)
                free(x->strs[i]);
        free(x->strs);
        for (size_t i = 0; i < x->n_env; i++) {
                /* may hold a secret: wipe before freeing */
                explicit_bzero(x->env[i], strlen(x->env[i]));
                free(x->env[i]);
        }
        free(x->env);
        free(x->secrets);
}

static int exec_add_mount(struct exec_state *x, const char *type, char *source, const char *target,
                          bool readonly)
{
        x->mounts = kiln_xreallocarray(x->mounts, x->n_mounts + 1, sizeof(*x->mounts));
        if (source)
                push_str(&x->strs, &x->n_strs, source);
        x->mounts[x->n_mounts++] = (struct kiln_exec_mount){
                .type = type,
                .source = source,
                .target = target,
                .readonly = readonly,
        };
        return 0;
}

/* Sets up mount i of the exec. */
static int exec_mount(struct run *run, struct exec_state *x, size_t i, struct kiln_error **err)
{
        struct kiln_solver_solve *sv = run->sv;
        const struct kiln_llb_exec *e = &run->node->op->exec;
        const struct kiln_llb_mount *m = &e->mounts[i];
        struct kiln_solver_node *d = kiln_solver_ref_node(sv, m->input);
        int r;

        switch (m->type) {
        case KILN_LLB_MOUNT_BIND: {
                bool writable = i == 0 || !m->readonly;
                if (!writable) {
                        _cleanup_free_ char *tree = NULL;
                        r = run_input_tree(run, m->input, &tree, err);
                        if (r < 0)
                                return r;
                        char *src = NULL;
                        r = resolve_in(tree, m->selector, &src, err);
                        if (r < 0)
                                return r;
                        return exec_add_mount(x, "bind", src, m->target, true);
                }
                _cleanup_free_ char *parent = NULL;
                r = kiln_solver_ref_snapshot(sv, d, m->input.output, &parent, err);
                if (r < 0)
                        return r;
                r = run_prepare(run, parent, &x->snaps[i], &x->paths[i], err);
                if (parent)
                        kiln_snapshot_release(sv->s->snapshots, parent);
                if (r < 0)
                        return r;
                if (i == 0)
                        return 0;
                char *src = NULL;
                r = resolve_in(x->paths[i], m->selector, &src, err);
                if (r < 0)
                        return r;
                return exec_add_mount(x, "bind", src, m->target, false);
        }
        case KILN_LLB_MOUNT_CACHE: {
                /* BuildKit keys a cache directory by its id and its base */
                struct kiln_sha256 *h = kiln_sha256_new();
                if (!h)
                        return kiln_error_set(err, -ENOMEM, "cache mount: out of memory");
                kiln_sha256_update(h, m->id, strlen(m->id));
                if (d) {
                        char out[16];
                        snprintf(out, sizeof(out), "%" PRIu32, m->input.output);
                        kiln_sha256_update(h, "\0", 1);
                        kiln_sha256_update(h, d->key, strlen(d->key));
                        kiln_sha256_update(h, ":", 1);
                        kiln_sha256_update(h, out, strlen(out));
                        if (m->selector) {
                                kiln_sha256_update(h, "\0", 1);
                                kiln_sha256_update(h, m->selector, strlen(m->selector));
                        }
                }
                char hex[KILN_SHA256_HEX_LEN + 1];
                kiln_sha256_final_hex(h, hex);
                kiln_sha256_free(h);
                struct kiln_solver_cachemount *cm = NULL;
                r = cachemount_acquire(run, hex, m->sharing, &cm, err);
                if (r < 0)
                        return r;
                r = cachemount_populate(run, m, cm->path, err);
                if (r < 0)
                        return kiln_error_wrap(err, "cache mount '%s'", m->target);
                return exec_add_mount(x, "bind", kiln_xstrdup(cm->path), m->target, m->readonly);
        }
        case KILN_LLB_MOUNT_TMPFS:
                exec_add_mount(x, "tmpfs", NULL, m->target, false);
                x->mounts[x->n_mounts - 1].tmpfs_size = m->tmpfs_size;
                return 0;
        case KILN_LLB_MOUNT_SECRET: {
                const struct kiln_solver_secret *sec = find_secret(sv->b, m->id);
                if (!sec) {
                        if (m->optional)
                                return 0;
                        return kiln_error_set(err, -ENOENT, "secret %s: not found", m->id);
                }
                r = secrets_dir(run, &x->secrets, err);
                if (r < 0)
                        return r;
                char *file = NULL;
                r = write_secret(x->secrets, i, m, sec, &file, err);
                if (r < 0)
                        return r;
                return exec_add_mount(x, "bind", file, m->target, true);
        }
        case KILN_LLB_MOUNT_SSH: {
                const struct kiln_solver_ssh *ssh = find_ssh(sv->b, m->id);
                if (!ssh) {
                        if (m->optional)
                                return 0;
                        return kiln_error_set(err, -ENOENT,
                                              "no SSH key \"%s\" forwarded from the client", m->id);
                }
                /* only an agent socket is ever bound, never another host path */
                struct stat st;
                if (stat(ssh->path, &st) < 0 || !S_ISSOCK(st.st_mode))
                        return kiln_error_set(err, -EINVAL,
                                              "ssh agent \"%s\": '%s' is not a socket", m->id,
                                              ssh->path);
                return exec_add_mount(x, "bind", kiln_xstrdup(ssh->path), m->target, false);
        }
        }
        return kiln_error_set(err, -EINVAL, "mount '%s': unknown type", m->target);
}

/* ---- mount stubs ---- */

/* Paths (relative to the rootfs, no leading '/') that did not exist before
 * the process ran: the runtime creates them as mount points. As BuildKit's
 * MountStubsCleaner, empty ones are removed afterwards (with the parents
 * that did not exist either when recursive) so that they stay out of the
 * layer, and the parent's times are kept. */
struct stubs {
        char **paths;
        size_t n;
};

static int open_in_root(int rootfd, const char *rel, int flags, uint64_t resolve)
{
        struct open_how how = { .flags = (uint64_t) flags | O_CLOEXEC, .resolve = resolve };
        return (int) syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
}

static void stubs_collect(struct stubs *st, int rootfd, const char *target, bool recursive)
{
        /* clean the target: no empty or "." components, no trailing '/' */
        struct kiln_buf b = KILN_BUF_INIT(PATH_MAX);
        _cleanup_free_ char *copy = kiln_xstrdup(target);
        char *save = NULL;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (streq(c, "."))
                        continue;
                if (streq(c, "..")) {
                        char *slash = b.data ? strrchr(b.data, '/') : NULL;
                        if (slash) {
                                b.len = (size_t) (slash - b.data);
                                b.data[b.len] = 0;
                        } else
                                kiln_buf_reset(&b);
                        continue;
                }
                (void) kiln_buf_printf(&b, "%s%s", b.len ? "/" : "", c);
        }
        if (b.len == 0) {
                kiln_buf_release(&b);
                return;
        }
        char *p = kiln_buf_steal(&b);
        for (;;) {
                int fd = open_in_root(rootfd, p, O_PATH | O_NOFOLLOW,
                                      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
                if (fd >= 0 || (errno != ENOENT && errno != ENOTDIR)) {
                        if (fd >= 0)
                                close(fd);
                        break;
                }
                push_str(&st->paths, &st->n, kiln_xstrdup(p));
                char *slash = strrchr(p, '/');
                if (!recursive || !slash)
                        break;
                *slash = 0;
        }
        free(p);
}

static bool dir_empty(int dirfd, const char *name)
{
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return false;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return false;
        }
        bool empty = true;
        struct dirent *de;
        while (empty && (de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        empty = false;
        closedir(d);
        return empty;
}

static void stubs_remove(struct stubs *st, int rootfd)
{
        for (size_t i = 0; i < st->n; i++) {
                char *p = st->paths[i];
                char *slash = strrchr(p, '/');
                const char *base = slash ? slash + 1 : p;
                _cleanup_free_ char *parent =
                        slash ? kiln_xstrndup(p, (size_t) (slash - p)) : kiln_xstrdup(".");
                /* a parent reached through a symbolic link is left alone */
                _cleanup_close_ int pfd = open_in_root(rootfd, parent, O_RDONLY | O_DIRECTORY,
                                                       RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
                if (pfd < 0)
                        continue;
                struct stat s, ps;
                if (fstatat(pfd, base, &s, AT_SYMLINK_NOFOLLOW) < 0 || fstat(pfd, &ps) < 0)
                        continue;
                if (S_ISDIR(s.st_mode) ? !dir_empty(pfd, base) : s.st_size != 0)
                        continue;
                if (unlinkat(pfd, base, S_ISDIR(s.st_mode) ? AT_REMOVEDIR : 0) < 0)
                        continue;
                struct timespec times[2] = { ps.st_atim, ps.st_mtim };
                (void) futimens(pfd, times);
        }
}

static void stubs_release(struct stubs *st)
{
        for (size_t i = 0; i < st->n; i++)
                free(st->paths[i]);
        free(st->paths);
        *st = (struct stubs){ 0 };
}

/* Back to the pool, or released when the step had a hostname of its own
 * (buildkitd makes those namespaces outside the pool). A release failure
 * costs only a leak the next start cleans: it is logged, not fatal. */
static void cni_return(struct kiln_solver *s, struct kiln_cni_ns *ns, const char *hostname)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

        if (!hostname || !hostname[0] || streq(hostname, KILN_EXEC_DEFAULT_HOSTNAME)) {
                kiln_cni_put(s->cni, ns);
                return;
        }
        if (kiln_cni_discard(s->cni, ns, &e) < 0)
                log_debug("%s", kiln_error_message(e));
}

static int run_exec(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                    struct kiln_error **err)
{
        struct kiln_solver *s = sv->s;
        const struct kiln_llb_exec *e = &n->op->exec;
        struct run run;
        struct exec_state x = { 0 };
        size_t nm = e->n_mounts;

        int r = run_begin(&run, sv, n, err);
        if (r < 0)
                return r;
        x.snaps = kiln_xcalloc(nm ? nm : 1, sizeof(*x.snaps));
        x.paths = kiln_xcalloc(nm ? nm : 1, sizeof(*x.paths));

        if (nm == 0 || e->mounts[0].type != KILN_LLB_MOUNT_BIND) {
                r = kiln_error_set(err, -EINVAL, "exec: no root mount");
                goto out;
        }
        for (size_t i = 0; i < nm; i++) {
                r = exec_mount(&run, &x, i, err);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < e->env.n; i++)
                push_str(&x.env, &x.n_env, kiln_xstrdup(e->env.v[i]));
        const struct kiln_llb_proxy_env *pe = &e->proxy_env;
        env_push(&x.env, &x.n_env, "HTTP_PROXY", pe->http_proxy);
        env_push(&x.env, &x.n_env, "http_proxy", pe->http_proxy);
        env_push(&x.env, &x.n_env, "HTTPS_PROXY", pe->https_proxy);
        env_push(&x.env, &x.n_env, "https_proxy", pe->https_proxy);
        env_push(&x.env, &x.n_env, "FTP_PROXY", pe->ftp_proxy);
        env_push(&x.env, &x.n_env, "ftp_proxy", pe->ftp_proxy);
        env_push(&x.env, &x.n_env, "NO_PROXY", pe->no_proxy);
        env_push(&x.env, &x.n_env, "no_proxy", pe->no_proxy);
        env_push(&x.env, &x.n_env, "ALL_PROXY", pe->all_proxy);
        env_push(&x.env, &x.n_env, "all_proxy", pe->all_proxy);
        for (size_t i = 0; i < e->n_secret_env; i++) {
                const struct kiln_llb_secret_env *se = &e->secret_env[i];
                const struct kiln_solver_secret *sec = find_secret(sv->b, se->id);
                if (!sec) {
                        if (se->optional)
                                continue;
                        r = kiln_error_set(err, -ENOENT, "secret %s: not found", se->id);
                        goto out;
                }
                char *kv = kiln_xmalloc(strlen(se->name) + 1 + sec->len + 1);
                size_t nl = strlen(se->name);
                memcpy(kv, se->name, nl);
                kv[nl] = '=';
                memcpy(kv + nl + 1, sec->data, sec->len);
                kv[nl + 1 + sec->len] = 0;
                push_str(&x.env, &x.n_env, kv);
        }

        struct kiln_exec_host *hosts =
                kiln_xcalloc(e->n_extra_hosts ? e->n_extra_hosts : 1, sizeof(*hosts));
        for (size_t i = 0; i < e->n_extra_hosts; i++)
                hosts[i] = (struct kiln_exec_host){ e->extra_hosts[i].host, e->extra_hosts[i].ip };
        struct kiln_exec_ulimit *ul = kiln_xcalloc(e->n_ulimits ? e->n_ulimits : 1, sizeof(*ul));
        for (size_t i = 0; i < e->n_ulimits; i++)
                ul[i] = (struct kiln_exec_ulimit){ e->ulimits[i].name,
                                                   (uint64_t) e->ulimits[i].soft,
                                                   (uint64_t) e->ulimits[i].hard };
        enum kiln_exec_network net = e->network == KILN_LLB_NETWORK_HOST   ? KILN_EXEC_NETWORK_HOST
                                     : e->network == KILN_LLB_NETWORK_NONE ? KILN_EXEC_NETWORK_NONE
                                     : s->default_network == KILN_SOLVER_NETWORK_HOST
                                             ? KILN_EXEC_NETWORK_HOST
                                             : KILN_EXEC_NETWORK_NONE;
        struct kiln_exec_process p = {
                .rootfs = x.paths[0],
                .args = (const char *const *) e->args.v,
                .n_args = e->args.n,
                .env = (const char *const *) x.env,
                .n_env = x.n_env,
                .cwd = e->cwd,
                .user = e->user,
                .hostname = e->hostname,
                .network = net,
                .insecure = e->security == KILN_LLB_SECURITY_INSECURE,
                .mounts = x.mounts,
                .n_mounts = x.n_mounts,
                .extra_hosts = hosts,
                .n_extra_hosts = e->n_extra_hosts,
                .resolv_conf = s->resolv_conf,
                .ulimits = ul,
                .n_ulimits = e->n_ulimits,
                .cgroup_parent = e->cgroup_parent,
        };
        struct kiln_exec_runtime rt = { .binary = s->runtime_binary, .state_dir = s->exec_dir };
        struct exec_out eo = { sv, n };
        int code = -1;
        int rootfd = -1;
        /* The default network with CNI: a namespace of the pool, given
         * back as soon as the process is gone. */
        struct kiln_cni_ns *cns = NULL;
        if (s->cni && e->network == KILN_LLB_NETWORK_SANDBOX) {
                r = kiln_cni_get(s->cni, &cns, err);
                if (r < 0) {
                        free(hosts);
                        free(ul);
                        goto out;
                }
                p.network = KILN_EXEC_NETWORK_NONE;
                p.netns_path = cns->path;
        }
        r = run_open_dir(&run, x.paths[0], &rootfd, err);
        if (r < 0) {
                if (cns)
                        cni_return(s, cns, e->hostname);
                free(hosts);
                free(ul);
                goto out;
        }
        struct stubs stubs = { 0 };
        stubs_collect(&stubs, rootfd, "/etc/resolv.conf", e->remove_mount_stubs_recursive);
        stubs_collect(&stubs, rootfd, "/etc/hosts", e->remove_mount_stubs_recursive);
        for (size_t i = 0; i < x.n_mounts; i++)
                stubs_collect(&stubs, rootfd, x.mounts[i].target, e->remove_mount_stubs_recursive);
        kiln_solver_vertex_started(sv, n);
        r = kiln_exec_run(&rt, &p, on_exec_output, &eo, &sv->cancel, &code, err);
        if (cns)
                cni_return(s, cns, e->hostname);
        free(hosts);
        free(ul);
        if (r >= 0)
                stubs_remove(&stubs, rootfd);
        stubs_release(&stubs);
        /* no fd may keep the rootfs busy when it is unmounted */
        for (size_t i = run.n_fds; i-- > 0;)
                close(run.fds[i]);
        run.n_fds = 0;
        if (r < 0)
                goto out;
        if (!exit_ok(e, code)) {
                r = exit_error(e, code, err);
                goto out;
        }
        /* commit the outputs (other mounts unmount at cleanup, after) */
        for (size_t i = 0; i < nm; i++) {
                int o = kiln_llb_exec_mount_output(n->op, i);
                if (o < 0 || !x.snaps[i])
                        continue;
                r = run_commit(&run, x.snaps[i], x.paths[i], &outputs[o], err);
                x.snaps[i] = NULL;
                if (r < 0) {
                        for (uint32_t k = 0; k < n->n_outputs; k++)
                                if (outputs[k]) {
                                        kiln_snapshot_release(s->snapshots, outputs[k]);
                                        free(outputs[k]);
                                        outputs[k] = NULL;
                                }
                        goto out;
                }
        }
out:
        exec_state_release(&x, nm);
        run_end(&run);
        return r;
}

/* ---- file ---- */

static int run_file(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                    struct kiln_error **err)
{
        const struct kiln_llb_file *f = &n->op->file;
        struct run run;
        int r = run_begin(&run, sv, n, err);
        if (r < 0)
                return r;
        kiln_solver_vertex_started(sv, n);
        _cleanup_free_ char *base = NULL, *path = NULL;
        struct kiln_snapshot *snap = NULL;
        int dest = -1;
        r = kiln_solver_ref_snapshot(sv, kiln_solver_ref_node(sv, f->base), f->base.output, &base,
                                     err);
        if (r >= 0) {
                r = run_prepare(&run, base, &snap, &path, err);
                if (base)
                        kiln_snapshot_release(sv->s->snapshots, base);
        }
        if (r >= 0)
                r = run_open_dir(&run, path, &dest, err);
        struct kiln_fileop_options o = { .cancel = &sv->cancel };
        for (size_t i = 0; r >= 0 && i < f->n_actions; i++) {
                const struct kiln_llb_file_action *a = &f->actions[i];
                int src = -1;
                if (a->type == KILN_LLB_FILE_COPY) {
                        struct kiln_solver_node *d = kiln_solver_ref_node(sv, a->copy.src);
                        if (d && d->local)
                                src = kiln_source_local_context_fd(d->local);
                        else if (d && d->outputs[a->copy.src.output]) {
                                _cleanup_free_ char *tree = NULL;
                                r = run_input_tree(&run, a->copy.src, &tree, err);
                                if (r >= 0)
                                        r = run_open_dir(&run, tree, &src, err);
                                if (r < 0)
                                        break;
                        }
                }
                r = kiln_fileop_apply(a, dest, src, &o, err);
        }
        if (r >= 0) {
                /* close every fd into the trees before unmounting */
                for (size_t i = run.n_fds; i-- > 0;)
                        close(run.fds[i]);
                run.n_fds = 0;
                r = run_commit(&run, snap, path, &outputs[0], err);
        }
        run_end(&run);
        return r;
}

/* ---- git ---- */

struct git_secret {
        const char *id;
        bool token;
};

static void on_git_output(void *ud, int stream, const void *data, size_t n)
{
        struct status_ctx *c = ud;
        kiln_solver_emit_log(c->sv, c->n, stream, data, n);
}

/* The options of n's git source: secrets and ssh agent from the build. */
static int git_options(struct kiln_solver_solve *sv, struct kiln_solver_node *n, const char *dir,
                       struct status_ctx *sc, struct kiln_source_git_options *o,
                       struct kiln_error **err)
{
        const struct kiln_llb_source_git *g = &n->op->source.git;
        *o = (struct kiln_source_git_options){
                .remote = g->remote,
                .ref = g->ref,
                .subdir = g->subdir,
                .keep_git_dir = g->keep_git_dir,
                .checksum = g->checksum,
                .skip_submodules = g->skip_submodules,
                .known_ssh_hosts = g->known_ssh_hosts,
                .cache_dir = sv->s->git_dir,
                .work_dir = dir,
                .cancel = &sv->cancel,
                .on_output = on_git_output,
                .userdata = sc,
        };
        /* BuildKit's llb.Git always names these two; the first one the
         * build has wins: per host first, then plain, header before token.
         * A secret the build does not have is skipped, as BuildKit does. */
        const char *hdr = g->auth_header_secret, *tok = g->auth_token_secret;
        if (!hdr && !tok) {
                hdr = "GIT_AUTH_HEADER";
                tok = "GIT_AUTH_TOKEN";
        }
        _cleanup_free_ char *host = kiln_source_git_host(g->remote);
        _cleanup_free_ char *hdr_host = hdr && host ? kiln_xasprintf("%s.%s", hdr, host) : NULL;
        _cleanup_free_ char *tok_host = tok && host ? kiln_xasprintf("%s.%s", tok, host) : NULL;
        const struct git_secret names[] = {
                { hdr_host, false }, { tok_host, true }, { hdr, false }, { tok, true }
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                const struct kiln_solver_secret *sec =
                        names[i].id ? find_secret(sv->b, names[i].id) : NULL;
                if (!sec)
                        continue;
                if (names[i].token) {
                        o->auth_token = sec->data;
                        o->auth_token_len = sec->len;
                } else {
                        o->auth_header = sec->data;
                        o->auth_header_len = sec->len;
                }
                break;
        }
        if (kiln_source_git_is_ssh(g->remote)) {
                const char *id =
                        g->mount_ssh_sock && *g->mount_ssh_sock ? g->mount_ssh_sock : "default";
                const struct kiln_solver_ssh *ssh = find_ssh(sv->b, id);
                if (!ssh)
                        return kiln_error_set(err, -ENOKEY,
                                              "no SSH key \"%s\" forwarded from the client", id);
                o->ssh_auth_sock = ssh->path;
        }
        return 0;
}

int kiln_solver_git_resolve(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                            struct kiln_error **err)
{
        struct run run;
        int r = run_init(&run, sv, n, err);
        if (r < 0)
                return r;
        struct status_ctx sc = { sv, n };
        struct kiln_source_git_options o;
        r = git_options(sv, n, run.dir, &sc, &o, err);
        if (r >= 0)
                r = kiln_source_git_resolve(&o, &n->git, err);
        /* as BuildKit's solver words a failing CacheMap */
        if (r < 0 && r != -ECANCELED)
                kiln_error_wrap(err, "failed to load cache key");
        run_cleanup(&run);
        if (r < 0)
                return r;
        free(n->content_digest);
        n->content_digest = kiln_xasprintf("git:%s", n->git.key);
        return 0;
}

/* Fetches the resolved commit and checks it out into a new snapshot,
 * holding a max-parallelism slot as BuildKit's source ops do. */
static int run_git(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                   struct kiln_error **err)
{
        if (!n->git.commit)
                return kiln_error_set(err, -EINVAL, "git source: not resolved");
        struct run run;
        int r = run_begin(&run, sv, n, err);
        if (r < 0)
                return r;
        kiln_solver_vertex_started(sv, n);
        struct status_ctx sc = { sv, n };
        struct kiln_source_git_options o;
        r = git_options(sv, n, run.dir, &sc, &o, err);
        if (r >= 0)
                r = kiln_source_git_snapshot(sv->s->snapshots, &o, &n->git, &outputs[0], err);
        run_end(&run);
        return r;
}

/* ---- merge ---- */

/* The inputs layered in order onto a copy of the first: a later input's
 * files replace an earlier one's. Not limited by max-parallelism, as
 * BuildKit's merge op. */
static int run_merge(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                     struct kiln_error **err)
{
        const struct kiln_llb_merge *m = &n->op->merge;
        struct run run;
        int r = run_init(&run, sv, n, err);
        if (r < 0)
                return r;
        kiln_solver_vertex_started(sv, n);
        _cleanup_free_ char *base = NULL, *path = NULL;
        struct kiln_snapshot *snap = NULL;
        int dest = -1;
        r = kiln_solver_ref_snapshot(sv, kiln_solver_ref_node(sv, m->inputs[0]),
                                     m->inputs[0].output, &base, err);
        if (r >= 0) {
                r = run_prepare(&run, base, &snap, &path, err);
                if (base)
                        kiln_snapshot_release(sv->s->snapshots, base);
        }
        if (r >= 0)
                r = run_open_dir(&run, path, &dest, err);
        struct kiln_fileop_options o = { .cancel = &sv->cancel };
        for (size_t i = 1; r >= 0 && i < m->n_inputs; i++) {
                struct kiln_solver_node *d = kiln_solver_ref_node(sv, m->inputs[i]);
                if (!d || (!d->local && !d->outputs[m->inputs[i].output]))
                        continue;
                _cleanup_free_ char *tree = NULL;
                int src = -1;
                r = run_input_tree(&run, m->inputs[i], &tree, err);
                if (r >= 0)
                        r = run_open_dir(&run, tree, &src, err);
                if (r >= 0) {
                        struct kiln_llb_file_action a = copy_all_action("/");
                        r = kiln_fileop_apply(&a, dest, src, &o, err);
                }
        }
        if (r >= 0) {
                for (size_t i = run.n_fds; i-- > 0;)
                        close(run.fds[i]);
                run.n_fds = 0;
                r = run_commit(&run, snap, path, &outputs[0], err);
        }
        kiln_solver_vertex_finished(sv, n);
        run_cleanup(&run);
        return r;
}

int kiln_solver_run_op(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                       struct kiln_error **err)
{
        const struct kiln_llb_op *op = n->op;
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                switch (op->source.type) {
                case KILN_LLB_SOURCE_IMAGE:
                        return run_image(sv, n, outputs, err);
                case KILN_LLB_SOURCE_HTTP:
                        return run_http(sv, n, outputs, err);
                case KILN_LLB_SOURCE_GIT:
                        return run_git(sv, n, outputs, err);
                case KILN_LLB_SOURCE_LOCAL:
                        break;
                }
                break;
        case KILN_LLB_OP_EXEC:
                return run_exec(sv, n, outputs, err);
        case KILN_LLB_OP_FILE:
                return run_file(sv, n, outputs, err);
        case KILN_LLB_OP_MERGE:
                return run_merge(sv, n, outputs, err);
        case KILN_LLB_OP_DIFF:
                return kiln_error_set(err, -ENOTSUP, "diff: not supported yet");
        }
        return kiln_error_set(err, -EINVAL, "op %s: cannot run", op->digest);
}

/* ---- restart cleanup ---- */

void kiln_solver_cleanup_exec_dir(struct kiln_solver *s)
{
        _cleanup_free_ char *prefix = kiln_xasprintf("%s/" RUN_DIR_PREFIX, s->exec_dir);
        /* detach what a previous run left mounted, deepest (latest) first */
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        char **targets = NULL;
        size_t n = 0;
        if (f) {
                char *line = NULL;
                size_t cap = 0;
                while (getline(&line, &cap, f) > 0) {
                        char mp[PATH_MAX];
                        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 &&
                            startswith(mp, prefix))
                                push_str(&targets, &n, kiln_xstrdup(mp));
                }
                free(line);
        }
        bool busy = false;
        for (size_t i = n; i-- > 0;) {
                if (umount2(targets[i], MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                        busy = true;
                free(targets[i]);
        }
        free(targets);
        if (busy)
                return;
        DIR *d = opendir(s->exec_dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!startswith(de->d_name, RUN_DIR_PREFIX))
                        continue;
                struct kiln_error *e = NULL;
                if (kiln_rm_rf_at(dirfd(d), de->d_name, NULL, &e) < 0)
                        log_warning("%s", kiln_error_message(e));
                kiln_error_free(e);
        }
        closedir(d);
}
