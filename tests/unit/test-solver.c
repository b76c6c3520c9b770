/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The solver end to end, as root, with a real snapshot store, local context
 * and OCI runtime: a busybox root filesystem copied from a local context,
 * execs on it, caching, parallelism, secrets, cache mounts, cancellation.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <time.h>

#include "kiln-test.h"

#include "base/buf.h"
#include "base/fs.h"
#include "base/macro.h"
#include "llb/llb.h"
#include "snapshot/snapshot.h"
#include "solver/cache.h"
#include "solver/solver.h"
#include "source/local.h"

#define MAX_VERTICES 64

struct fixture;

struct vstate {
        char digest[KILN_LLB_DIGEST_LEN + 1];
        char name[256];
        int64_t started, completed;
        bool cached;
        char error[512];
};

struct events {
        struct vstate v[MAX_VERTICES];
        size_t n;
        struct kiln_buf logs;
        const char *cancel_on; /* name of a vertex whose start cancels the build */
        atomic_bool *cancel;
        struct fixture *fx;
};

static void on_event(void *ud, const struct kiln_solver_event *e)
{
        struct events *ev = ud;
        if (e->type == KILN_SOLVER_EVENT_LOG) {
                (void) kiln_buf_append(&ev->logs, e->log.data, e->log.len);
                if (getenv("KILN_TEST_VERBOSE"))
                        printf("# log: %.*s\n", (int) e->log.len, (const char *) e->log.data);
                return;
        }
        if (e->type != KILN_SOLVER_EVENT_VERTEX)
                return;
        struct vstate *v = NULL;
        for (size_t i = 0; i < ev->n; i++)
                if (streq(ev->v[i].digest, e->vertex.digest))
                        v = &ev->v[i];
        if (!v && ev->n < MAX_VERTICES) {
                v = &ev->v[ev->n++];
                snprintf(v->digest, sizeof(v->digest), "%s", e->vertex.digest);
        }
        if (!v)
                return;
        snprintf(v->name, sizeof(v->name), "%s", e->vertex.name);
        v->started = e->vertex.started;
        v->completed = e->vertex.completed;
        v->cached = e->vertex.cached;
        snprintf(v->error, sizeof(v->error), "%s", e->vertex.error ? e->vertex.error : "");
        if (ev->cancel_on && ev->cancel && e->vertex.started && !e->vertex.completed &&
            streq(e->vertex.name, ev->cancel_on))
                atomic_store(ev->cancel, true);
}

static const struct vstate *vertex(const struct events *ev, const char *name)
{
        for (size_t i = 0; i < ev->n; i++)
                if (streq(ev->v[i].name, name))
                        return &ev->v[i];
        return NULL;
}

/* ---- fixture ---- */

struct fixture {
        char *root;
        struct kiln_snapshot_store *snaps;
        struct kiln_source_local_store *locals;
        struct kiln_source_local_context *ctx;
        struct kiln_solver *solver;
};

static bool have_runtime(void)
{
        return access("/usr/sbin/runc", X_OK) == 0 || access("/usr/bin/runc", X_OK) == 0;
}

static void write_octal(char *field, size_t len, uint64_t v)
{
        snprintf(field, len, "%0*llo", (int) len - 1, (unsigned long long) v);
}

/* An uncompressed tar holding one regular file. */
static void tar_file(struct kiln_buf *b, const char *name, const void *data, size_t len,
                     unsigned mode)
{
        char h[512] = { 0 };
        snprintf(h, 100, "%s", name);
        write_octal(h + 100, 8, mode);
        write_octal(h + 108, 8, 0);
        write_octal(h + 116, 8, 0);
        write_octal(h + 124, 12, len);
        write_octal(h + 136, 12, 0);
        memset(h + 148, ' ', 8);
        h[156] = '0';
        memcpy(h + 257, "ustar", 6);
        memcpy(h + 263, "00", 2);
        unsigned sum = 0;
        for (size_t i = 0; i < sizeof(h); i++)
                sum += (unsigned char) h[i];
        snprintf(h + 148, 8, "%06o", sum);
        h[155] = ' ';
        (void) kiln_buf_append(b, h, sizeof(h));
        (void) kiln_buf_append(b, data, len);
        char zero[512] = { 0 };
        if (len % 512)
                (void) kiln_buf_append(b, zero, 512 - len % 512);
}

struct reader {
        const char *data;
        size_t len, off;
};

static ssize_t read_mem(void *ud, void *buf, size_t n)
{
        struct reader *r = ud;
        size_t k = r->len - r->off < n ? r->len - r->off : n;
        memcpy(buf, r->data + r->off, k);
        r->off += k;
        return (ssize_t) k;
}

/* The context: bin/busybox and a file "other" holding `other`. */
static int make_context(struct fixture *fx, const char *other, struct kiln_error **err)
{
        struct kiln_buf bb = KILN_BUF_INIT(64u << 20);
        int r = kiln_read_file_at(AT_FDCWD, "/bin/busybox", &bb);
        if (r < 0) {
                kiln_buf_release(&bb);
                return kiln_error_set(err, r, "read /bin/busybox: %s", strerror(-r));
        }
        static int64_t mtime = 1000000000;
        mtime += 1000000000; /* a new mtime: "other" is sent again */
        struct kiln_source_local_entry entries[] = {
                { .path = "bin", .mode = S_IFDIR | 0755, .mtime_ns = 1000000000 },
                { .path = "bin/busybox",
                  .mode = S_IFREG | 0755,
                  .size = bb.len,
                  .mtime_ns = 1000000000 },
                { .path = "other",
                  .mode = S_IFREG | 0644,
                  .size = strlen(other),
                  .mtime_ns = mtime },
        };
        struct kiln_source_local_transfer *t = NULL;
        fx->ctx = kiln_source_local_context_unref(fx->ctx);
        r = kiln_source_local_transfer_begin(fx->locals, "test-context", entries,
                                             ELEMENTSOF(entries), &t, err);
        if (r >= 0) {
                const char *const *need = NULL;
                size_t n = kiln_source_local_transfer_needed(t, &need);
                struct kiln_buf tar = KILN_BUF_INIT(128u << 20);
                for (size_t i = 0; i < n; i++)
                        if (streq(need[i], "bin/busybox"))
                                tar_file(&tar, "bin/busybox", bb.data, bb.len, 0755);
                        else if (streq(need[i], "other"))
                                tar_file(&tar, "other", other, strlen(other), 0644);
                char zero[1024] = { 0 };
                (void) kiln_buf_append(&tar, zero, sizeof(zero));
                struct reader rd = { tar.data, tar.len, 0 };
                r = kiln_source_local_transfer_receive(t, read_mem, &rd, NULL, NULL, err);
                if (r >= 0)
                        r = kiln_source_local_transfer_finish(t, NULL, &fx->ctx, err);
                kiln_buf_release(&tar);
        }
        kiln_source_local_transfer_free(t);
        kiln_buf_release(&bb);
        return r;
}

static void fixture_release(struct fixture *fx)
{
        fx->solver = kiln_solver_free(fx->solver);
        fx->ctx = kiln_source_local_context_unref(fx->ctx);
        fx->locals = kiln_source_local_store_free(fx->locals);
        fx->snaps = kiln_snapshot_store_free(fx->snaps);
        if (fx->root) {
                struct kiln_error *e = NULL;
                (void) kiln_rm_rf_at(AT_FDCWD, fx->root, NULL, &e);
                kiln_error_free(e);
                free(fx->root);
        }
        *fx = (struct fixture){ 0 };
}

/* 0, or KILN_TEST_SKIP with the reason printed, or -1. */
static int fixture_init(struct fixture *fx, unsigned max_parallelism)
{
        *fx = (struct fixture){ 0 };
        if (geteuid() != 0) {
                printf("# skip: needs root\n");
                return KILN_TEST_SKIP;
        }
        if (!have_runtime()) {
                printf("# skip: runc not installed\n");
                return KILN_TEST_SKIP;
        }
        if (access("/bin/busybox", R_OK) != 0) {
                printf("# skip: no /bin/busybox\n");
                return KILN_TEST_SKIP;
        }
        char tmpl[] = "/tmp/kiln-test-solver-XXXXXX";
        if (!mkdtemp(tmpl))
                return -1;
        fx->root = kiln_xstrdup(tmpl);
        struct kiln_error *e = NULL;
        _cleanup_free_ char *sdir = kiln_xasprintf("%s/snapshots", fx->root);
        int r = kiln_snapshot_store_open(sdir, KILN_SNAPSHOT_DRIVER_AUTO, &fx->snaps, &e);
        if (r >= 0)
                r = kiln_source_local_store_open(fx->root, &fx->locals, &e);
        if (r >= 0)
                r = make_context(fx, "one", &e);
        if (r >= 0) {
                struct kiln_solver_config c = {
                        .root = fx->root,
                        .snapshots = fx->snaps,
                        .max_parallelism = max_parallelism,
                        .default_network = KILN_SOLVER_NETWORK_NONE,
                };
                r = kiln_solver_new(&c, &fx->solver, &e);
        }
        if (r < 0) {
                printf("# fixture: %s\n", kiln_error_message(e));
                kiln_error_free(e);
                fixture_release(fx);
                return -1;
        }
        return 0;
}

static int local_cb(void *ud, const char *name, struct kiln_source_local_context **ret,
                    struct kiln_error **err)
{
        struct fixture *fx = ((struct events *) ud)->fx;
        if (!streq(name, "context"))
                return kiln_error_set(err, -ENOENT, "no context '%s'", name);
        *ret = fx->ctx;
        return 0;
}

/* ---- graph helpers ---- */

static void set_name(struct kiln_llb_op *op, const char *name)
{
        kiln_llb_strmap_set(&op->meta.description, "llb.customname", name);
}

static const struct kiln_llb_op *add(struct kiln_llb_def *def, struct kiln_llb_op *op)
{
        const struct kiln_llb_op *ret = NULL;
        struct kiln_error *e = NULL;
        if (kiln_llb_def_add(def, op, &ret, &e) < 0) {
                printf("# add op: %s\n", kiln_error_message(e));
                kiln_error_free(e);
                return NULL;
        }
        return ret;
}

/* scratch + busybox from the context + /bin/sh symlink */
static const struct kiln_llb_op *add_rootfs(struct kiln_llb_def *def)
{
        struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_LOCAL);
        op->source.local.name = kiln_xstrdup("context");
        set_name(op, "[internal] load build context");
        const struct kiln_llb_op *local = add(def, op);
        if (!local)
                return NULL;
        op = kiln_llb_op_new(KILN_LLB_OP_FILE);
        struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, KILN_LLB_FILE_COPY);
        a->copy.src = (struct kiln_llb_ref){ local, 0 };
        a->copy.src_path = kiln_xstrdup("/bin/busybox");
        a->copy.dest = kiln_xstrdup("/bin/busybox");
        a->copy.create_dest_path = true;
        a = kiln_llb_file_add_action(op, KILN_LLB_FILE_SYMLINK);
        a->symlink.oldpath = kiln_xstrdup("busybox");
        a->symlink.newpath = kiln_xstrdup("/bin/sh");
        set_name(op, "[1/2] COPY busybox");
        return add(def, op);
}

static struct kiln_llb_op *new_exec(const struct kiln_llb_op *root, const char *script,
                                    const char *name)
{
        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        kiln_llb_strv_push(&op->exec.args, "/bin/sh");
        kiln_llb_strv_push(&op->exec.args, "-c");
        kiln_llb_strv_push(&op->exec.args, script);
        kiln_llb_strv_push(&op->exec.env, "PATH=/bin");
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/")->input =
                (struct kiln_llb_ref){ root, 0 };
        set_name(op, name);
        return op;
}

static int set_output(struct kiln_llb_def *def, const struct kiln_llb_op *op)
{
        struct kiln_error *e = NULL;
        int r = kiln_llb_def_set_output(def, (struct kiln_llb_ref){ op, 0 }, &e);
        kiln_error_free(e);
        return r;
}

/* Reads path from committed snapshot id into out. */
static int read_from_snapshot(struct fixture *fx, const char *id, const char *path,
                              struct kiln_buf *out)
{
        _cleanup_free_ char *mp = kiln_xasprintf("%s/view", fx->root);
        (void) mkdir(mp, 0700);
        struct kiln_error *e = NULL;
        int r = kiln_snapshot_mount_view(fx->snaps, id, mp, &e);
        if (r < 0) {
                printf("# view: %s\n", kiln_error_message(e));
                kiln_error_free(e);
                return r;
        }
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", mp, path);
        r = kiln_read_file_at(AT_FDCWD, p, out);
        (void) kiln_snapshot_unmount(mp, &e);
        kiln_error_free(e);
        return r;
}

static int solve(struct fixture *fx, const struct kiln_llb_def *def, struct events *ev,
                 bool no_cache, const struct kiln_solver_secret *secrets, size_t n_secrets,
                 atomic_bool *cancel, struct kiln_solver_result *res, struct kiln_error **err)
{
        kiln_buf_release(&ev->logs);
        *ev = (struct events){ .logs = KILN_BUF_INIT(1u << 20),
                               .fx = fx,
                               .cancel_on = ev->cancel_on,
                               .cancel = ev->cancel };
        struct kiln_solver_build b = {
                .def = def,
                .local = local_cb,
                .secrets = secrets,
                .n_secrets = n_secrets,
                .no_cache = no_cache,
                .cancel = cancel,
                .on_event = on_event,
                .userdata = ev,
        };
        kiln_solver_result_release(res);
        return kiln_solver_solve(fx->solver, &b, res, err);
}

#define CHECK_OK(expr)                                                      \
        do {                                                                \
                int _r = (expr);                                            \
                if (_r < 0) {                                               \
                        printf("# %s: %s\n", #expr, kiln_error_message(e)); \
                        goto out;                                           \
                }                                                           \
        } while (0)

TEST(solver_exec_and_cache)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        _cleanup_free_ char *first = NULL;
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        const struct kiln_llb_op *ex =
                root ? add(def, new_exec(root, "echo hi > /out; echo hello", "[2/2] RUN echo"))
                     : NULL;
        if (!ex || set_output(def, ex) < 0)
                goto out;

        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        if (!res.snapshot_id || strlen(res.key) != KILN_SOLVER_KEY_LEN) {
                printf("# no result snapshot\n");
                goto out;
        }
        if (read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 || !streq(out.data, "hi\n")) {
                printf("# /out: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        const struct vstate *v = vertex(&ev, "[2/2] RUN echo");
        if (!v || v->cached || !v->started || v->completed < v->started || v->error[0]) {
                printf("# exec vertex wrong\n");
                goto out;
        }
        if (!ev.logs.data || !strstr(ev.logs.data, "hello\n")) {
                printf("# log: '%s'\n", ev.logs.data ? ev.logs.data : "");
                goto out;
        }
        first = kiln_xstrdup(res.snapshot_id);
        char key[KILN_SOLVER_KEY_LEN + 1];
        memcpy(key, res.key, sizeof(key));

        /* the second time every step is cached: same snapshot, no run */
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        v = vertex(&ev, "[2/2] RUN echo");
        const struct vstate *c = vertex(&ev, "[1/2] COPY busybox");
        if (!v || !v->cached || !c || !c->cached || !streq_ptr(res.snapshot_id, first) ||
            !streq(res.key, key) || ev.logs.len != 0) {
                printf("# second solve not cached\n");
                goto out;
        }

        /* no_cache runs again */
        CHECK_OK(solve(&fx, def, &ev, true, NULL, 0, NULL, &res, &e));
        v = vertex(&ev, "[2/2] RUN echo");
        if (!v || v->cached || streq_ptr(res.snapshot_id, first)) {
                printf("# no-cache solve was cached\n");
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

TEST(solver_exit_code_error)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        const struct kiln_llb_op *ex =
                root ? add(def, new_exec(root, "exit 1", "[2/2] RUN exit 1")) : NULL;
        if (!ex || set_output(def, ex) < 0)
                goto out;
        r = solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e);
        const char *want = "process \"/bin/sh -c exit 1\" did not complete successfully: "
                           "exit code: 1";
        if (r >= 0 || !e || !streq(kiln_error_message(e), want)) {
                printf("# got %d '%s'\n", r, e ? kiln_error_message(e) : "");
                goto out;
        }
        const struct vstate *v = vertex(&ev, "[2/2] RUN exit 1");
        if (!v || !streq(v->error, want) || !v->completed ||
            !streq_ptr(res.failed_name, "[2/2] RUN exit 1") ||
            !streq_ptr(res.failed_vertex, ex->digest)) {
                printf("# failed vertex not reported\n");
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

/* Two independent 0.4 s execs joined by a merge; returns whether their
 * run intervals overlapped, or -1. */
static int parallel_overlap(unsigned max_parallelism)
{
        struct fixture fx;
        int r = fixture_init(&fx, max_parallelism);
        if (r != 0)
                return r == KILN_TEST_SKIP ? -2 : -1;
        int ret = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        const struct kiln_llb_op *a =
                root ? add(def, new_exec(root, "sleep 0.4; echo a > /a", "RUN a")) : NULL;
        const struct kiln_llb_op *b =
                root ? add(def, new_exec(root, "sleep 0.4; echo b > /b", "RUN b")) : NULL;
        if (!a || !b)
                goto out;
        struct kiln_llb_op *m = kiln_llb_op_new(KILN_LLB_OP_MERGE);
        kiln_llb_merge_add_input(m, (struct kiln_llb_ref){ a, 0 });
        kiln_llb_merge_add_input(m, (struct kiln_llb_ref){ b, 0 });
        set_name(m, "merge");
        const struct kiln_llb_op *mo = add(def, m);
        if (!mo || set_output(def, mo) < 0)
                goto out;
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        const struct vstate *va = vertex(&ev, "RUN a"), *vb = vertex(&ev, "RUN b");
        if (!va || !vb || !va->started || !vb->started)
                goto out;
        struct kiln_buf out = KILN_BUF_INIT(4096);
        bool both =
                read_from_snapshot(&fx, res.snapshot_id, "a", &out) >= 0 && streq(out.data, "a\n");
        kiln_buf_reset(&out);
        both = both && read_from_snapshot(&fx, res.snapshot_id, "b", &out) >= 0 &&
               streq(out.data, "b\n");
        kiln_buf_release(&out);
        if (!both) {
                printf("# merge lacks an input's file\n");
                goto out;
        }
        ret = va->started < vb->completed && vb->started < va->completed;
out:
        kiln_error_free(e);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ret;
}

TEST(solver_max_parallelism)
{
        int serial = parallel_overlap(1);
        if (serial == -2)
                return KILN_TEST_SKIP;
        ASSERT_EQ_INT(serial, 0);
        int parallel = parallel_overlap(4);
        ASSERT_EQ_INT(parallel, 1);
        return 0;
}

static bool mounts_under(const char *root)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return true;
        char line[8192];
        bool found = false;
        while (fgets(line, sizeof(line), f))
                if (strstr(line, root))
                        found = true;
        fclose(f);
        return found;
}

/* Snapshot directories without meta are active (uncommitted) ones. */
static int count_active_snapshots(const char *root)
{
        _cleanup_free_ char *dir = kiln_xasprintf("%s/snapshots", root);
        DIR *d = opendir(dir);
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] >= '0' && de->d_name[0] <= '9') {
                        _cleanup_free_ char *m = kiln_xasprintf("%s/%s/meta", dir, de->d_name);
                        if (access(m, F_OK) != 0)
                                n++;
                }
        closedir(d);
        return n;
}

static int count_exec(void *ud, const struct kiln_solver_cache_record *r)
{
        if (streq_ptr(r->kind, "exec"))
                (*(int *) ud)++;
        return 0;
}

TEST(solver_cancel_cleans_up)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        atomic_bool cancel;
        atomic_init(&cancel, false);
        struct events ev = { .cancel_on = "RUN sleep", .cancel = &cancel };
        struct kiln_solver_result res = { 0 };
        _cleanup_free_ char *db = NULL, *exec_dir = NULL;
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        const struct kiln_llb_op *ex =
                root ? add(def, new_exec(root, "sleep 30", "RUN sleep")) : NULL;
        if (!ex || set_output(def, ex) < 0)
                goto out;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = solve(&fx, def, &ev, false, NULL, 0, &cancel, &res, &e);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (r != -ECANCELED) {
                printf("# r=%d %s\n", r, e ? kiln_error_message(e) : "");
                goto out;
        }
        if (t1.tv_sec - t0.tv_sec > 10) {
                printf("# cancel took too long\n");
                goto out;
        }
        if (mounts_under(fx.root)) {
                printf("# a mount is left under %s\n", fx.root);
                goto out;
        }
        if (count_active_snapshots(fx.root) != 0) {
                printf("# an active snapshot is left\n");
                goto out;
        }
        const struct vstate *v = vertex(&ev, "RUN sleep");
        if (!v || !v->error[0]) {
                printf("# cancelled vertex has no error\n");
                goto out;
        }
        /* nothing of the exec was recorded, no step directory is left */
        db = kiln_xasprintf("%s/meta.db", fx.root);
        struct kiln_solver_cache *cache = NULL;
        int n_exec = -1;
        if (kiln_solver_cache_open(db, &cache, &e) >= 0) {
                n_exec = 0;
                (void) kiln_solver_cache_foreach(cache, count_exec, &n_exec, &e);
                kiln_solver_cache_close(cache);
        }
        if (n_exec != 0) {
                printf("# %d exec records after a cancel\n", n_exec);
                goto out;
        }
        exec_dir = kiln_xasprintf("%s/exec", fx.root);
        DIR *d = opendir(exec_dir);
        bool left = false;
        for (struct dirent *de; d && (de = readdir(d));)
                if (startswith(de->d_name, "solve-"))
                        left = true;
        if (d)
                closedir(d);
        if (left) {
                printf("# a step directory is left in %s\n", exec_dir);
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

TEST(solver_secrets)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        _cleanup_free_ char *db = NULL;
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        struct kiln_llb_op *op =
                root ? new_exec(root,
                                "cat /run/secrets/tok > /out; stat -c %a /run/secrets/tok >> /out; "
                                "echo \"$TOKEN\" >> /out",
                                "RUN secret")
                     : NULL;
        if (!op)
                goto out;
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SECRET, "/run/secrets/tok")->id =
                kiln_xstrdup("tok");
        kiln_llb_exec_add_secret_env(op, "tok", "TOKEN", false);
        op->exec.remove_mount_stubs_recursive = true;
        const struct kiln_llb_op *ex = add(def, op);
        if (!ex || set_output(def, ex) < 0)
                goto out;

        /* a missing required secret fails as BuildKit does */
        r = solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e);
        if (r >= 0 || !streq(kiln_error_message(e), "secret tok: not found")) {
                printf("# missing secret: %d '%s'\n", r, e ? kiln_error_message(e) : "");
                goto out;
        }
        e = kiln_error_free(e);

        struct kiln_solver_secret sec = { .id = "tok", .data = "s3cr3t-value", .len = 12 };
        CHECK_OK(solve(&fx, def, &ev, false, &sec, 1, NULL, &res, &e));
        if (read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 ||
            !streq(out.data, "s3cr3t-value400\ns3cr3t-value\n")) {
                printf("# /out: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        /* neither the secret nor its mount stubs (nor those of /etc/hosts)
         * are left in the layer */
        kiln_buf_reset(&out);
        r = read_from_snapshot(&fx, res.snapshot_id, "run/secrets/tok", &out);
        int r2 = read_from_snapshot(&fx, res.snapshot_id, "run", &out);
        int r3 = read_from_snapshot(&fx, res.snapshot_id, "etc/hosts", &out);
        if (r != -ENOENT || r2 != -ENOENT || r3 != -ENOENT) {
                printf("# mount stubs left: %d %d %d\n", r, r2, r3);
                goto out;
        }
        /* and never in the cache records */
        db = kiln_xasprintf("%s/meta.db", fx.root);
        struct kiln_buf dbb = KILN_BUF_INIT(64u << 20);
        if (kiln_read_file_at(AT_FDCWD, db, &dbb) >= 0 && memmem(dbb.data, dbb.len, "s3cr3t", 6)) {
                kiln_buf_release(&dbb);
                printf("# secret in meta.db\n");
                goto out;
        }
        kiln_buf_release(&dbb);
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

TEST(solver_cache_mount_persists)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        struct kiln_llb_op *op =
                root ? new_exec(root, "echo x >> /cache/f; cat /cache/f > /out", "RUN cache")
                     : NULL;
        if (!op)
                goto out;
        struct kiln_llb_mount *m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_CACHE, "/cache");
        m->id = kiln_xstrdup("/mycache");
        m->sharing = KILN_LLB_CACHE_LOCKED;
        const struct kiln_llb_op *ex = add(def, op);
        if (!ex || set_output(def, ex) < 0)
                goto out;
        CHECK_OK(solve(&fx, def, &ev, true, NULL, 0, NULL, &res, &e));
        CHECK_OK(solve(&fx, def, &ev, true, NULL, 0, NULL, &res, &e));
        if (read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 ||
            !streq(out.data, "x\nx\n")) {
                printf("# /out: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

struct concurrent {
        struct fixture *fx;
        const struct kiln_llb_def *def;
        struct events ev;
        struct kiln_solver_result res;
        struct kiln_error *e;
        int r;
};

static void *concurrent_solve(void *p)
{
        struct concurrent *c = p;
        c->r = solve(c->fx, c->def, &c->ev, false, NULL, 0, NULL, &c->res, &c->e);
        return NULL;
}

static size_t count(const char *hay, const char *needle)
{
        size_t n = 0;
        for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

TEST(solver_concurrent_builds_run_once)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        const struct kiln_llb_op *ex =
                root ? add(def, new_exec(root, "sleep 0.5; echo ran-once > /out; echo ran-once",
                                         "RUN once"))
                     : NULL;
        struct concurrent c[2] = { { .fx = &fx, .def = def }, { .fx = &fx, .def = def } };
        pthread_t t[2];
        if (!ex || set_output(def, ex) < 0)
                goto out;
        for (size_t i = 0; i < 2; i++)
                pthread_create(&t[i], NULL, concurrent_solve, &c[i]);
        for (size_t i = 0; i < 2; i++)
                pthread_join(t[i], NULL);
        for (size_t i = 0; i < 2; i++)
                if (c[i].r < 0) {
                        printf("# solve %zu: %s\n", i, kiln_error_message(c[i].e));
                        goto out;
                }
        if (!c[0].res.snapshot_id || !streq_ptr(c[0].res.snapshot_id, c[1].res.snapshot_id)) {
                printf("# different results\n");
                goto out;
        }
        size_t runs = count(c[0].ev.logs.data, "ran-once") + count(c[1].ev.logs.data, "ran-once");
        if (runs != 1) {
                printf("# the step ran %zu times\n", runs);
                goto out;
        }
        ok = 0;
out:
        for (size_t i = 0; i < 2; i++) {
                kiln_error_free(c[i].e);
                kiln_buf_release(&c[i].ev.logs);
                kiln_solver_result_release(&c[i].res);
        }
        fixture_release(&fx);
        return ok;
}

TEST(solver_context_change_reruns_only_dependent_steps)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        const struct kiln_llb_op *local = root ? kiln_llb_def_op(def, 0) : NULL;
        const struct kiln_llb_op *ex1 =
                root ? add(def, new_exec(root, "echo first > /first", "RUN first")) : NULL;
        const struct kiln_llb_op *cp = NULL, *ex2 = NULL;
        if (ex1) {
                struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_FILE);
                op->file.base = (struct kiln_llb_ref){ ex1, 0 };
                struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, KILN_LLB_FILE_COPY);
                a->copy.src = (struct kiln_llb_ref){ local, 0 };
                a->copy.src_path = kiln_xstrdup("/other");
                a->copy.dest = kiln_xstrdup("/other");
                set_name(op, "COPY other");
                cp = add(def, op);
        }
        if (cp)
                ex2 = add(def, new_exec(cp, "cat /other > /out", "RUN cat"));
        if (!ex2 || set_output(def, ex2) < 0)
                goto out;
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));

        /* a change to the copied file: the steps from that COPY on run */
        CHECK_OK(make_context(&fx, "two", &e));
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        const struct vstate *vb = vertex(&ev, "[1/2] COPY busybox"), *v1 = vertex(&ev, "RUN first"),
                            *vc = vertex(&ev, "COPY other"), *v2 = vertex(&ev, "RUN cat");
        if (!vb || !v1 || !vc || !v2 || !vb->cached || !v1->cached || vc->cached || v2->cached) {
                printf("# wrong steps rerun after a change\n");
                goto out;
        }
        if (read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 || !streq(out.data, "two")) {
                printf("# /out: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        /* the same content again: everything is cached */
        CHECK_OK(make_context(&fx, "two", &e));
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        vc = vertex(&ev, "COPY other");
        v2 = vertex(&ev, "RUN cat");
        if (!vc || !v2 || !vc->cached || !v2->cached) {
                printf("# same content not cached\n");
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

TEST(solver_missing_context_path)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_LOCAL);
        op->source.local.name = kiln_xstrdup("context");
        const struct kiln_llb_op *local = add(def, op);
        const struct kiln_llb_op *cp = NULL;
        if (local) {
                op = kiln_llb_op_new(KILN_LLB_OP_FILE);
                struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, KILN_LLB_FILE_COPY);
                a->copy.src = (struct kiln_llb_ref){ local, 0 };
                a->copy.src_path = kiln_xstrdup("/nothere");
                a->copy.dest = kiln_xstrdup("/x");
                set_name(op, "[2/2] COPY nothere /x");
                cp = add(def, op);
        }
        if (!cp || set_output(def, cp) < 0)
                goto out;
        r = solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e);
        const char *msg = e ? kiln_error_message(e) : "";
        if (r >= 0 ||
            !startswith(msg, "failed to compute cache key: failed to calculate checksum of ref ") ||
            !strstr(msg, ": \"/nothere\": not found") ||
            !streq_ptr(res.failed_name, "[2/2] COPY nothere /x")) {
                printf("# got %d '%s'\n", r, msg);
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

/* A one-file HTTP server on 127.0.0.1 serving `body` (changeable). */
struct http_server {
        int fd;
        uint16_t port;
        pthread_t thread;
        pthread_mutex_t lock;
        char body[64];
        atomic_bool stop;
};

static void *http_serve(void *p)
{
        struct http_server *h = p;
        while (!atomic_load(&h->stop)) {
                int c = accept(h->fd, NULL, NULL);
                if (c < 0)
                        continue;
                char req[4096];
                size_t got = 0;
                while (got < sizeof(req) - 1) {
                        ssize_t k = read(c, req + got, sizeof(req) - 1 - got);
                        if (k <= 0)
                                break;
                        got += (size_t) k;
                        req[got] = 0;
                        if (strstr(req, "\r\n\r\n"))
                                break;
                }
                char resp[256];
                pthread_mutex_lock(&h->lock);
                int n = snprintf(resp, sizeof(resp),
                                 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: "
                                 "close\r\n\r\n%s",
                                 strlen(h->body), h->body);
                pthread_mutex_unlock(&h->lock);
                if (write(c, resp, (size_t) n) < 0) {
                        /* the client went away */
                }
                close(c);
        }
        return NULL;
}

static int http_start(struct http_server *h, const char *body)
{
        *h = (struct http_server){ .fd = -1 };
        pthread_mutex_init(&h->lock, NULL);
        snprintf(h->body, sizeof(h->body), "%s", body);
        h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        if (h->fd < 0 || bind(h->fd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
            listen(h->fd, 8) < 0 || getsockname(h->fd, (struct sockaddr *) &a, &len) < 0)
                return -1;
        h->port = ntohs(a.sin_port);
        return pthread_create(&h->thread, NULL, http_serve, h) == 0 ? 0 : -1;
}

static void http_stop(struct http_server *h)
{
        atomic_store(&h->stop, true);
        shutdown(h->fd, SHUT_RDWR);
        pthread_join(h->thread, NULL);
        close(h->fd);
        pthread_mutex_destroy(&h->lock);
}

TEST(solver_http_source_keyed_by_content)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        struct http_server h;
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        if (http_start(&h, "alpha") < 0) {
                printf("# http server\n");
                fixture_release(&fx);
                return -1;
        }
        const struct kiln_llb_op *root = add_rootfs(def);
        struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_HTTP);
        op->source.http.url = kiln_xasprintf("http://127.0.0.1:%u/file.txt", h.port);
        set_name(op, "ADD url");
        const struct kiln_llb_op *dl = root ? add(def, op) : NULL;
        const struct kiln_llb_op *cp = NULL, *ex = NULL;
        if (!root)
                kiln_llb_op_free(op);
        if (dl) {
                op = kiln_llb_op_new(KILN_LLB_OP_FILE);
                op->file.base = (struct kiln_llb_ref){ root, 0 };
                struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, KILN_LLB_FILE_COPY);
                a->copy.src = (struct kiln_llb_ref){ dl, 0 };
                a->copy.src_path = kiln_xstrdup("/file.txt");
                a->copy.dest = kiln_xstrdup("/dl");
                set_name(op, "COPY dl");
                cp = add(def, op);
        }
        if (cp)
                ex = add(def, new_exec(cp, "cat /dl > /out", "RUN cat dl"));
        if (!ex || set_output(def, ex) < 0)
                goto out;
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        /* same content: downloaded again, the rest cached */
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        const struct vstate *vd = vertex(&ev, "ADD url"), *vx = vertex(&ev, "RUN cat dl");
        if (!vd || !vx || !vx->cached) {
                printf("# unchanged download not cached after\n");
                goto out;
        }
        pthread_mutex_lock(&h.lock);
        snprintf(h.body, sizeof(h.body), "beta");
        pthread_mutex_unlock(&h.lock);
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        vx = vertex(&ev, "RUN cat dl");
        if (!vx || vx->cached || read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 ||
            !streq(out.data, "beta")) {
                printf("# changed download: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        ok = 0;
out:
        http_stop(&h);
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

TEST(solver_cache_mount_owner_from_input)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        /* as the Dockerfile frontend does for --mount=type=cache,uid=1000,mode=0700 */
        struct kiln_llb_op *mk = kiln_llb_op_new(KILN_LLB_OP_FILE);
        struct kiln_llb_file_action *a = kiln_llb_file_add_action(mk, KILN_LLB_FILE_MKDIR);
        a->mkdir.path = kiln_xstrdup("/cache");
        a->mkdir.mode = 0700;
        a->mkdir.make_parents = true;
        a->mkdir.chown.user.kind = KILN_LLB_USER_ID;
        a->mkdir.chown.user.id = 1000;
        a->mkdir.chown.group.kind = KILN_LLB_USER_ID;
        a->mkdir.chown.group.id = 1000;
        set_name(mk, "[internal] setting cache mount permissions");
        const struct kiln_llb_op *perm = root ? add(def, mk) : NULL;
        if (!root)
                kiln_llb_op_free(mk);
        struct kiln_llb_op *op =
                perm ? new_exec(root, "stat -c '%u:%g %a' /c > /out", "RUN stat") : NULL;
        if (!op)
                goto out;
        struct kiln_llb_mount *m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_CACHE, "/c");
        m->id = kiln_xstrdup("/owned");
        m->input = (struct kiln_llb_ref){ perm, 0 };
        m->selector = kiln_xstrdup("/cache");
        const struct kiln_llb_op *ex = add(def, op);
        if (!ex || set_output(def, ex) < 0)
                goto out;
        CHECK_OK(solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e));
        if (read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 ||
            !streq(out.data, "1000:1000 700\n")) {
                printf("# /out: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}

TEST(solver_ssh_socket_mount)
{
        struct fixture fx;
        int r = fixture_init(&fx, 0);
        if (r != 0)
                return r;
        int ok = -1, sock = -1;
        struct kiln_error *e = NULL;
        struct events ev = { 0 };
        struct kiln_solver_result res = { 0 };
        struct kiln_buf out = KILN_BUF_INIT(4096);
        _cleanup_free_ char *path = kiln_xasprintf("%s/agent.sock", fx.root);
        _cleanup_free_ char *file = kiln_xasprintf("%s/not-a-socket", fx.root);
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_rootfs(def);
        struct kiln_llb_op *op =
                root ? new_exec(root, "test -S /run/ssh.sock && echo ok > /out", "RUN ssh") : NULL;
        if (!op)
                goto out;
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SSH, "/run/ssh.sock")->id =
                kiln_xstrdup("default");
        const struct kiln_llb_op *ex = add(def, op);
        if (!ex || set_output(def, ex) < 0)
                goto out;
        sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (sock < 0 || bind(sock, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(sock, 1) < 0)
                goto out;

        /* no agent given: BuildKit's error */
        r = solve(&fx, def, &ev, false, NULL, 0, NULL, &res, &e);
        if (r >= 0 ||
            !streq(kiln_error_message(e), "no SSH key \"default\" forwarded from the client")) {
                printf("# no agent: '%s'\n", e ? kiln_error_message(e) : "");
                goto out;
        }
        e = kiln_error_free(e);

        /* a path that is not a socket is never bound */
        if (kiln_write_file_atomic(file, "x", 1, 0600) < 0)
                goto out;
        struct kiln_solver_ssh bad = { .id = "default", .path = file };
        struct kiln_solver_build b = {
                .def = def, .local = local_cb, .ssh = &bad, .n_ssh = 1, .userdata = &ev
        };
        ev.fx = &fx;
        r = kiln_solver_solve(fx.solver, &b, &res, &e);
        if (r >= 0 || !strstr(kiln_error_message(e), "is not a socket")) {
                printf("# not a socket: '%s'\n", e ? kiln_error_message(e) : "");
                goto out;
        }
        e = kiln_error_free(e);
        kiln_solver_result_release(&res);

        struct kiln_solver_ssh good = { .id = "default", .path = path };
        b.ssh = &good;
        CHECK_OK(kiln_solver_solve(fx.solver, &b, &res, &e));
        if (read_from_snapshot(&fx, res.snapshot_id, "out", &out) < 0 || !streq(out.data, "ok\n")) {
                printf("# /out: '%s'\n", out.data ? out.data : "");
                goto out;
        }
        ok = 0;
out:
        if (sock >= 0)
                close(sock);
        kiln_error_free(e);
        kiln_buf_release(&out);
        kiln_buf_release(&ev.logs);
        kiln_solver_result_release(&res);
        fixture_release(&fx);
        return ok;
}
