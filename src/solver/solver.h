/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The solver: runs a build definition (llb.h) to a snapshot, as BuildKit's
 * solver does.
 *
 * For each op, in dependency order, the solver computes a cache key: the
 * SHA-256 over the op's digest and its inputs' cache keys, where an input
 * that is a local source read by a file copy or a bind mount contributes
 * kiln_source_local_checksum of the paths it selects instead (so a COPY's key
 * changes only when the files it copies change). A key found in the cache
 * records (<root>/meta.db) is a hit: its snapshot is used and the op's vertex
 * is reported cached. A miss runs the op: image pulls (not limited by
 * max-parallelism; only the registry limits apply), local sources (the
 * build's context directory, read in place), HTTP downloads, execs (runc or
 * another OCI runtime) and file ops. Independent ops run in parallel; the
 * same key needed by two builds at once runs once, the other build waits
 * for it. One counting semaphore of max_parallelism slots, shared by every
 * build of the solver, is held while an HTTP source, an exec or a file op
 * executes, never while a key is looked up. Unlike BuildKit, image pulls and
 * the wait for a client's context take no slot (moby/buildkit#4296).
 *
 * Op support: image, local and HTTP sources (an HTTP source without a
 * checksum is downloaded on every solve, as BuildKit checks the URL every
 * time, and keyed by its content, so the steps after it stay cached while
 * the content is unchanged), exec (bind, cache, tmpfs, secret and ssh
 * mounts; mount stubs the runtime created are removed afterwards as
 * BuildKit's MountStubsCleaner does), file, and merge (the inputs copied in
 * order onto the first, later ones winning). Git sources (source/git.h)
 * resolve their ref to a commit with `git ls-remote` before keying (no
 * slot taken, as BuildKit resolves in CacheMap) and are keyed by that
 * commit (with subdir, keep_git_dir, skip_submodules), so a build is cached
 * while the ref names the same commit; a miss fetches into <root>/git and
 * checks out under a slot. The auth secrets they name (by default
 * GIT_AUTH_HEADER and GIT_AUTH_TOKEN, "<id>.<host>" first) come from the
 * build's secrets, absent ones are skipped as BuildKit does; ssh remotes
 * use the build's ssh agent of mount_ssh_sock ("default"). Diff ops fail
 * with "not supported yet".
 *
 * On-disk state under config.root: meta.db (cache records, SQLite WAL),
 * git/<sha256(remote)>/ (bare cache repositories of git sources),
 * exec/<id>/ (mount points and runtime bundles while a step runs),
 * cachemounts/<sha256(id)>/ (RUN --mount=type=cache directories).
 *
 * Thread safety: a solver is thread safe; any number of kiln_solver_solve
 * calls may run at once (each on its caller's thread, with up to
 * KILN_SOLVER_MAX_WORKERS helper threads of its own). The flight table and
 * the semaphore are guarded by kiln_solver.lock (solver.c); the cache by
 * kiln_solver_cache.lock (cache.c).
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct kiln_cni;
struct kiln_content_store;
struct kiln_registry_client;
struct kiln_snapshot_store;
struct kiln_source_local_context;
struct kiln_llb_def;
struct kiln_solver;

/* Ops of one build that execute at the same time (threads of one solve). */
#define KILN_SOLVER_MAX_WORKERS 32u
/* "sha256:" + 64 hex digits: a cache key. */
#define KILN_SOLVER_KEY_LEN (7 + 64)

/* The network an exec op with the default ("sandbox") network mode gets. */
enum kiln_solver_network {
        KILN_SOLVER_NETWORK_HOST, /* the host's network (BuildKit's "host") */
        KILN_SOLVER_NETWORK_NONE, /* only a loopback device */
};

struct kiln_solver_config {
        /* The daemon's --root: meta.db, exec/ and cachemounts/ live here.
         * Required; created when missing. */
        const char *root;
        /* Blob store and registry client for image pulls; both required
         * (image sources fail without them). Borrowed; must outlive the
         * solver. */
        struct kiln_content_store *store;
        struct kiln_registry_client *client;
        /* The snapshot store every op output lives in. Required; borrowed. */
        struct kiln_snapshot_store *snapshots;
        /* OCI runtime for exec ops: "runc", "crun" or a path; NULL: "runc".
         * Its --root is <root>/exec/runtime. */
        const char *runtime_binary;
        /* Ops executing at once over all builds; 0: no limit. */
        unsigned max_parallelism;
        /* Network of execs that ask for the default sandbox network. */
        enum kiln_solver_network default_network;
        /* CNI networking (exec/cni.h): when set, execs with the default
         * sandbox network run in a namespace of its pool instead, put back
         * after the step (released when the step has a hostname of its
         * own, as buildkitd does). Borrowed; must outlive the solver. */
        struct kiln_cni *cni;
        /* A resolv.conf to give every exec; NULL: the host's /etc/resolv.conf. */
        const char *resolv_conf;
};

/*
 * Opens (creates) <root>/meta.db and returns a new solver in *ret.
 * The config's strings are copied; the stores are borrowed. Returns 0, or a
 * negative errno with *err set (e.g. "open cache '<root>/meta.db': ...").
 */
int kiln_solver_new(const struct kiln_solver_config *c, struct kiln_solver **ret,
                    struct kiln_error **err);
/* Frees the solver. No solve may be running. NULL is fine. Returns NULL. */
struct kiln_solver *kiln_solver_free(struct kiln_solver *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_solver *, kiln_solver_free);

/* ---- events -------------------------------------------------------------- */

enum kiln_solver_event_type {
        KILN_SOLVER_EVENT_VERTEX, /* the full state of a vertex (a step) */
        KILN_SOLVER_EVENT_STATUS, /* progress of a sub-task (pull, unpack) */
        KILN_SOLVER_EVENT_LOG,    /* output of an exec */
};

/* Timestamps are CLOCK_REALTIME nanoseconds; 0 means "not yet". */
struct kiln_solver_vertex {
        const char *digest;        /* the op's digest: the vertex id */
        const char *name;          /* llb.customname, or a generated description */
        const char *const *inputs; /* digests of the ops it reads */
        size_t n_inputs;
        int64_t started;   /* execution really began (after the semaphore) */
        int64_t completed; /* finished: done, cached or failed */
        bool cached;
        const char *error; /* set when it failed (or was cancelled) */
};

struct kiln_solver_status {
        const char *vertex; /* digest of the vertex it belongs to */
        const char *id;     /* e.g. "sha256:<layer>" or "extracting sha256:..." */
        const char *name;   /* display name; may equal id */
        int64_t current;    /* bytes (or items) done */
        int64_t total;      /* 0: unknown */
        int64_t started;
        int64_t completed;
};

struct kiln_solver_log {
        const char *vertex;
        int stream; /* 1 stdout, 2 stderr */
        const void *data;
        size_t len;
        int64_t timestamp;
};

struct kiln_solver_event {
        enum kiln_solver_event_type type;
        union {
                struct kiln_solver_vertex vertex;
                struct kiln_solver_status status;
                struct kiln_solver_log log;
        };
};

/* Called from the solver's threads; for one build the calls never overlap
 * (they are serialised by the solve), so the callee needs no lock of its own
 * for per-build state. Everything in *e is borrowed for the call. The
 * callback must not call back into the solver and should not block long. */
typedef void (*kiln_solver_event_fn)(void *userdata, const struct kiln_solver_event *e);

/* ---- solving -------------------------------------------------------------- */

/* A secret a build may mount (RUN --mount=type=secret). data is never
 * logged, never in an error, a layer or a cache record. */
struct kiln_solver_secret {
        const char *id;
        const void *data;
        size_t len;
};

/* An ssh agent socket a build may mount (RUN --mount=type=ssh). */
struct kiln_solver_ssh {
        const char *id;   /* "default" */
        const char *path; /* the agent socket on the daemon's host */
};

/*
 * Returns the finished local context named `name` ("context", "dockerfile")
 * in *ret, waiting for the client if needed (the wait must end when the
 * build's cancel flag is set: return -ECANCELED). The context is borrowed: it
 * must stay valid and unchanged (its read lock held) until kiln_solver_solve
 * returns. Returns 0, or a negative errno with *err set. Called at most once
 * per name and solve, from a solver thread.
 */
typedef int (*kiln_solver_local_fn)(void *userdata, const char *name,
                                    struct kiln_source_local_context **ret,
                                    struct kiln_error **err);

struct kiln_solver_build {
        const struct kiln_llb_def *def; /* required; its output is what is solved */
        kiln_solver_local_fn local;     /* required if def has local sources */
        const struct kiln_solver_secret *secrets;
        size_t n_secrets;
        const struct kiln_solver_ssh *ssh;
        size_t n_ssh;
        bool no_cache; /* run every op (records are still written) */
        /* The result's snapshot keeps the use the solve held on it, so
         * that nothing (a prune, the collector) removes it before the
         * caller's outputs have read it: the caller releases it with
         * kiln_snapshot_release. */
        bool keep_result_use;
        /* Set (by any thread) to cancel: running execs are killed, pulls
         * stopped, everything prepared is removed, nothing recorded. */
        const atomic_bool *cancel;
        kiln_solver_event_fn on_event; /* may be NULL */
        void *userdata;                /* for on_event and local */
};

struct kiln_solver_result {
        /* The committed snapshot holding the definition's output, or NULL
         * when the output is scratch (empty). Owned by the result. The
         * snapshot is recorded in the cache; it stays until pruned. */
        char *snapshot_id;
        /* The output's cache key ("sha256:..."); "" when scratch. */
        char key[KILN_SOLVER_KEY_LEN + 1];
        /* On failure, the step that failed first: its digest and name
         * (llb.customname), for "------ > [2/2] RUN exit 1:" style reports.
         * NULL when the failure was not in a step. Owned by the result. */
        char *failed_vertex;
        char *failed_name;
};

/*
 * Solves b->def's output. Blocks until every op it needs has finished (or,
 * after a failure or cancel, until every started op has stopped and cleaned
 * up). Returns 0 with *ret filled, or a negative errno with *err set to the
 * failing op's error, exactly as BuildKit words it, e.g.
 *   process "/bin/sh -c exit 1" did not complete successfully: exit code: 1
 *   secret foo: not found
 * (-ECANCELED when cancelled: "context canceled", the text BuildKit's
 * progress shows as CANCELED), and ret->failed_vertex/name set
 * when a step failed. *ret must be zeroed (or hold an earlier result, which
 * is released first) and is released with kiln_solver_result_release in
 * both cases.
 * Thread safe: concurrent solves share the cache, the flight table and the
 * max-parallelism semaphore.
 */
int kiln_solver_solve(struct kiln_solver *s, const struct kiln_solver_build *b,
                      struct kiln_solver_result *ret, struct kiln_error **err);

/* Frees what r owns and zeroes it. */
void kiln_solver_result_release(struct kiln_solver_result *r);

/* ---- disk usage and pruning --------------------------------------------- */

struct kiln_solver_cache;

/* The solver's cache records (solver/cache.h), owned by the solver: for
 * listing records and removing those of a pruned snapshot. */
struct kiln_solver_cache *kiln_solver_cache_of(struct kiln_solver *s);

/* One RUN --mount=type=cache directory under <root>/cachemounts. */
struct kiln_solver_cachemount_info {
        char *name;  /* the directory's name ("<sha256(id)>[-N]") */
        char *path;  /* <root>/cachemounts/<name> */
        bool in_use; /* mounted by a running exec */
};
void kiln_solver_cachemount_info_release(struct kiln_solver_cachemount_info *i);

/* Every cache mount directory: *ret (malloc'd, *n_ret entries; release
 * each, then free the array). Thread safe. */
int kiln_solver_cachemounts_list(struct kiln_solver *s, struct kiln_solver_cachemount_info **ret,
                                 size_t *n_ret, struct kiln_error **err);

/* Removes the cache mount directory name (as listed): -EBUSY while an exec
 * mounts it, -ENOENT when there is none, -EINVAL for a name that is not a
 * plain directory entry. The directory is renamed out of the way under the
 * solver's lock (an exec starting then gets a fresh, empty one) and removed
 * afterwards. Thread safe. */
int kiln_solver_cachemount_remove(struct kiln_solver *s, const char *name, struct kiln_error **err);
