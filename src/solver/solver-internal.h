/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Shared between solver.c (scheduling, cache keys, flights, events) and
 * run.c (executing one op). Not a public interface.
 */

#include <pthread.h>
#include <stdatomic.h>

#include "llb/llb.h"
#include "solver/cache.h"
#include "solver/solver.h"
#include "source/git.h"

struct kiln_source_image_unpacker;

/* Secrets written to one exec's private tmpfs, in bytes. */
#define KILN_SOLVER_LIMIT_SECRETS_TMPFS (16u << 20)
/* Copies of one private cache mount made because the others were busy. */
#define KILN_SOLVER_LIMIT_PRIVATE_CACHES 1024u
/* How often a wait (semaphore, flight, locked cache) looks at cancel. */
#define KILN_SOLVER_CANCEL_POLL_MS 100

/* An op being run by one solve, awaited by others with the same key. */
struct kiln_solver_flight {
        char key[KILN_SOLVER_KEY_LEN + 1];
        bool done;
        int rc;        /* 0, or the owner's negative errno */
        char *message; /* the owner's error message */
        uint32_t n_outputs;
        char **outputs;   /* committed ids (or NULL entries) */
        unsigned waiters; /* solves waiting: the last one out frees it */
        bool owner_gone;  /* the owner has stopped looking at it */
        struct kiln_solver_flight *next;
};

/* A RUN --mount=type=cache directory in use. */
struct kiln_solver_cachemount {
        char *path;     /* <root>/cachemounts/<hash>[-N] */
        unsigned users; /* mounts in use */
        bool exclusive; /* held by a locked or private mount */
        struct kiln_solver_cachemount *next;
};

struct kiln_solver {
        char *root;
        char *exec_dir;       /* <root>/exec */
        char *cachemount_dir; /* <root>/cachemounts */
        char *git_dir;        /* <root>/git: bare cache repositories of git sources */
        char *runtime_binary;
        char *resolv_conf;
        struct kiln_content_store *store;
        struct kiln_registry_client *client;
        struct kiln_snapshot_store *snapshots;
        struct kiln_source_image_unpacker *unpacker;
        struct kiln_solver_cache *cache;
        unsigned max_parallelism;
        enum kiln_solver_network default_network;
        struct kiln_cni *cni; /* borrowed; NULL: no CNI */

        /* Guards sem_used, flights and cachemounts; cond is broadcast when
         * any of them changes. */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned sem_used;
        struct kiln_solver_flight *flights;
        struct kiln_solver_cachemount *cachemounts;
};

enum kiln_solver_node_state {
        KILN_SOLVER_NODE_WAITING,
        KILN_SOLVER_NODE_RUNNING,
        KILN_SOLVER_NODE_DONE,
        KILN_SOLVER_NODE_FAILED,
};

struct kiln_solver_node {
        const struct kiln_llb_op *op;
        size_t index;
        bool needed;
        enum kiln_solver_node_state state; /* guarded by solve.lock */
        size_t *deps;                      /* indices of the nodes of the ops it reads, unique */
        size_t n_deps;
        const char **dep_digests;
        char *name;
        char key[KILN_SOLVER_KEY_LEN + 1];
        uint32_t n_outputs;
        /* Committed snapshot ids of the outputs, each with a use held
         * (kiln_snapshot_use) until the solve ends; NULL entries: empty. */
        char **outputs;
        /* Local sources: the build's context (borrowed from the caller). */
        struct kiln_source_local_context *local;
        /* HTTP sources without a checksum: the downloaded content's digest;
         * git sources: "git:" + the resolved commit's key. Part of the
         * cache key (the URL or the ref may name new content any time). */
        char *content_digest;
        /* Git sources: the ref resolved to a commit before keying. */
        struct kiln_source_git_resolved git;
        /* Vertex state, guarded by solve.event_lock. */
        int64_t started;
        int64_t completed;
        int64_t finished; /* when the work ended, before the semaphore was released */
        bool cached;
        char *error;
        pthread_t thread;
        bool joinable;
};

struct kiln_solver_solve {
        struct kiln_solver *s;
        const struct kiln_solver_build *b;
        struct kiln_solver_node *nodes;
        size_t n;
        /* Set on the build's cancel and on the first failure: running ops
         * stop, no new op starts. */
        atomic_bool cancel;
        /* Guards node states, running, the first error and the local
         * context table; cond is broadcast when a node finishes. */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned running;
        int rc;
        struct kiln_error *err;
        size_t failed; /* node index of the first failure, or SIZE_MAX */
        /* Held while the build's local callback runs: once per name. */
        pthread_mutex_t local_lock;
        /* Serialises on_event calls and guards the nodes' vertex state. */
        pthread_mutex_t event_lock;
};

/* ---- solver.c ---- */

int64_t kiln_solver_now(void);
bool kiln_solver_cancelled(struct kiln_solver_solve *sv);
/* Waits for a slot of the max-parallelism semaphore: 0, or -ECANCELED. */
int kiln_solver_sem_acquire(struct kiln_solver_solve *sv);
void kiln_solver_sem_release(struct kiln_solver_solve *sv);
/* Marks the vertex started (now) and sends its state. */
void kiln_solver_vertex_started(struct kiln_solver_solve *sv, struct kiln_solver_node *n);
/* Notes that the op's work is over (called before the semaphore is
 * released, so that steps of a max-parallelism of 1 never overlap). */
void kiln_solver_vertex_finished(struct kiln_solver_solve *sv, struct kiln_solver_node *n);
void kiln_solver_emit_log(struct kiln_solver_solve *sv, struct kiln_solver_node *n, int stream,
                          const void *data, size_t len);
void kiln_solver_emit_status(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                             const struct kiln_solver_status *st);
/* The node of the op ref points at, or NULL for scratch. */
struct kiln_solver_node *kiln_solver_ref_node(struct kiln_solver_solve *sv,
                                              struct kiln_llb_ref ref);

/* ---- run.c ---- */

/* Runs the op of n (not a local source): takes the semaphore as needed,
 * marks the vertex started, fills outputs[0..n->n_outputs) with committed
 * ids (each with a use held) or NULL. Nothing is left behind on failure. */
int kiln_solver_run_op(struct kiln_solver_solve *sv, struct kiln_solver_node *n, char **outputs,
                       struct kiln_error **err);

/* The committed snapshot holding output `output` of node (materialising a
 * local context into a new snapshot when node is a local source), with a
 * use held that the caller releases; *ret NULL: empty. */
int kiln_solver_ref_snapshot(struct kiln_solver_solve *sv, struct kiln_solver_node *node,
                             uint32_t output, char **ret, struct kiln_error **err);

/* Git sources: resolves the op's ref to a commit (git ls-remote; no
 * max-parallelism slot, as BuildKit resolves while computing cache keys)
 * into n->git and sets n->content_digest from its key. */
int kiln_solver_git_resolve(struct kiln_solver_solve *sv, struct kiln_solver_node *n,
                            struct kiln_error **err);

/* Removes what is left of exec/ from a previous run (nothing is mounted
 * there any more: the snapshot store detached it). */
void kiln_solver_cleanup_exec_dir(struct kiln_solver *s);
