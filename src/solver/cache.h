/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Cache records of the solver: which snapshot holds output N of the op with
 * cache key K. Kept in SQLite (<root>/meta.db, WAL journal, a busy timeout)
 * so that a rebuild after a daemon restart is still cached.
 *
 * Thread safety: one connection guarded by kiln_solver_cache.lock (a
 * mutex); every function may be called from any thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* Longest description stored with a record (longer ones are cut). */
#define KILN_SOLVER_CACHE_DESCRIPTION_MAX 1024u
/* How long a statement waits for another process's lock on meta.db. */
#define KILN_SOLVER_CACHE_BUSY_TIMEOUT_MS 5000
/* The schema version this code writes; a newer database is refused. */
#define KILN_SOLVER_CACHE_SCHEMA_VERSION 2

struct kiln_solver_cache;

struct kiln_solver_cache_record {
        char *key;           /* "sha256:..." */
        uint32_t output;     /* output index of the op */
        char *snapshot_id;   /* NULL: the output is empty (scratch) */
        char *kind;          /* "source.image", "exec", "file", ... */
        char *description;   /* the step's name; never secret data */
        int64_t created;     /* unix seconds */
        int64_t last_used;   /* unix seconds */
        int64_t size;        /* bytes; -1 unknown */
        int64_t usage_count; /* 1 at insert, +1 at each touch (read only) */
};

/* Opens (creates) the database at path. Returns 0 or a negative errno with
 * *err set ("open cache '<path>': ..."). */
int kiln_solver_cache_open(const char *path, struct kiln_solver_cache **ret,
                           struct kiln_error **err);
struct kiln_solver_cache *kiln_solver_cache_close(struct kiln_solver_cache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_solver_cache *, kiln_solver_cache_close);

/* Looks up (key, output). Returns 1 with *ret filled (release with
 * kiln_solver_cache_record_release), 0 when absent, or a negative errno. */
int kiln_solver_cache_lookup(struct kiln_solver_cache *c, const char *key, uint32_t output,
                             struct kiln_solver_cache_record *ret, struct kiln_error **err);

/* Inserts or replaces the record for (r->key, r->output). created and
 * last_used are set to now when 0. */
int kiln_solver_cache_insert(struct kiln_solver_cache *c, const struct kiln_solver_cache_record *r,
                             struct kiln_error **err);

/* Sets last_used of every output of key to now. 0 when there was none. */
int kiln_solver_cache_touch(struct kiln_solver_cache *c, const char *key, struct kiln_error **err);

/* Removes the record for (key, output); 1 removed, 0 absent. */
int kiln_solver_cache_remove(struct kiln_solver_cache *c, const char *key, uint32_t output,
                             struct kiln_error **err);

/* Removes every record whose snapshot_id is snapshot_id (a snapshot that
 * was removed): returns how many, or a negative errno with *err set. */
int kiln_solver_cache_remove_snapshot(struct kiln_solver_cache *c, const char *snapshot_id,
                                      struct kiln_error **err);

/* Calls fn for every record (ordered by last_used, oldest first) until it
 * returns non-zero, which is then returned. The record is borrowed; fn must
 * not call into the cache. */
int kiln_solver_cache_foreach(struct kiln_solver_cache *c,
                              int (*fn)(void *ud, const struct kiln_solver_cache_record *r),
                              void *ud, struct kiln_error **err);

/* Releases what r owns and zeroes it. */
void kiln_solver_cache_record_release(struct kiln_solver_cache_record *r);
