/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Builder instances, as buildx keeps them in ~/.docker/buildx.
 *
 * The store is a directory ($KILN_CONFIG, default ~/.kiln):
 *
 *   .lock                     the store lock (flock): held while builders
 *                             are created, removed or selected
 *   locks/<name>.lock         one lock per builder: held while its daemon
 *                             is started, stopped or its files replaced
 *   current                   the builder in use ("name\n"); absent, or
 *                             naming a removed builder: default-builder,
 *                             else "default"
 *   default-builder           set by `kiln use --default NAME`: the
 *                             builder to fall back to
 *   buildkitd.default.toml    optional: the configuration of builders
 *                             created without --config (buildx's
 *                             buildkitd.default.toml)
 *   builders/<name>/
 *     builder.json            what `kiln create` was told (driver,
 *                             flags, driver options, config source)
 *     etc/buildkit/buildkitd.toml   the daemon's copy of the configuration
 *     etc/buildkit/certs/<host>/    the files it refers to, copied
 *     tls/ca.pem cert.pem key.pem   remote driver: the client's TLS files
 *     kilnd.sock kilnd.log kilnd.pid root/   local driver: the daemon's
 *
 * A builder exists when its builder.json does, and builder.json is the last
 * file a create writes: a failed create removes what it wrote and leaves no
 * builder behind. Every file is written atomically (temporary file,
 * rename).
 *
 * The builder named "default" always exists: until something needs its
 * files it is implicit (local driver, configuration from
 * buildkitd.default.toml or kilnd's defaults), then it is written like any
 * other.
 *
 * Locks are taken builder first, then store, never the other way round.
 * Not thread safe: one kiln process is one thread.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "config/config.h"

struct kiln_cli_http_target;

/* builder.json and the pid file. */
#define KILN_CLI_LIMIT_BUILDER_FILE (1u << 20)
/* How long a command waits for a lock another kiln command holds. */
#define KILN_CLI_LOCK_TIMEOUT_MS 120000u

#define KILN_CLI_DEFAULT_BUILDER "default"

enum kiln_cli_driver_kind {
        KILN_CLI_DRIVER_LOCAL,
        KILN_CLI_DRIVER_REMOTE,
        _KILN_CLI_DRIVER_KIND_MAX,
        _KILN_CLI_DRIVER_KIND_INVALID = -EINVAL,
};

const char *kiln_cli_driver_kind_to_string(enum kiln_cli_driver_kind k);
enum kiln_cli_driver_kind kiln_cli_driver_kind_from_string(const char *s);

struct kiln_cli_driver_opt {
        char *key;
        char *value;
};

struct kiln_cli_builder {
        char *name;
        char *node; /* "<name>0": buildx shows a builder's one node under it */
        enum kiln_cli_driver_kind driver;
        char *dir;      /* <store>/builders/<name> */
        char *endpoint; /* local: unix://<dir>/kilnd.sock; remote: as created */
        char **flags;   /* --buildkitd-flags, split; NULL-terminated */
        size_t n_flags;
        struct kiln_cli_driver_opt *opts; /* --driver-opt, in order given */
        size_t n_opts;
        char *config_file; /* the file --config named (absolute), or NULL */
        char *created;     /* RFC 3339, UTC */
        bool implicit;     /* the default builder, not written yet */
        /* remote: copies of the TLS files in <dir>/tls (NULL when not
         * given) and the name to verify the daemon's certificate against */
        char *tls_ca;
        char *tls_cert;
        char *tls_key;
        char *server_name;
};

struct kiln_cli_store {
        char *dir;
        int lock_fd; /* the store lock while held, else -1 */
};

/* ---- Builders ---- */

/* A local builder named name in s, with nothing else set. */
struct kiln_cli_builder *kiln_cli_builder_new(const struct kiln_cli_store *s, const char *name);
struct kiln_cli_builder *kiln_cli_builder_free(struct kiln_cli_builder *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_builder *, kiln_cli_builder_free);

/* <dir>/<rel>. Caller frees. */
char *kiln_cli_builder_path(const struct kiln_cli_builder *b, const char *rel);
/* The driver option key, or NULL. */
const char *kiln_cli_builder_opt(const struct kiln_cli_builder *b, const char *key);
/* Where and how to reach the builder's daemon; the strings are borrowed
 * from b. */
void kiln_cli_builder_http_target(const struct kiln_cli_builder *b,
                                  struct kiln_cli_http_target *ret);

/* ---- The store ---- */

/* Opens (creating it 0700 when needed) the store at dir, which must be
 * absolute. */
int kiln_cli_store_open(const char *dir, struct kiln_cli_store **ret, struct kiln_error **err);
struct kiln_cli_store *kiln_cli_store_free(struct kiln_cli_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_store *, kiln_cli_store_free);

/* Takes the store lock, waiting up to KILN_CLI_LOCK_TIMEOUT_MS. Unlocking
 * an unlocked store does nothing; freeing the store unlocks it. */
int kiln_cli_store_lock(struct kiln_cli_store *s, struct kiln_error **err);
void kiln_cli_store_unlock(struct kiln_cli_store *s);

/* Takes the lock of builder name into *ret_fd (close it to unlock; the fd
 * is close-on-exec, so a daemon started meanwhile does not keep it). */
int kiln_cli_store_lock_builder(struct kiln_cli_store *s, const char *name, int *ret_fd,
                                struct kiln_error **err);

/* <store>/builders/<name>. Caller frees. */
char *kiln_cli_store_builder_dir(const struct kiln_cli_store *s, const char *name);
/* Whether builders/<name>/builder.json exists. */
bool kiln_cli_store_has(const struct kiln_cli_store *s, const char *name);

/* The builders on disk, sorted by name (*ret NULL-terminated). */
int kiln_cli_store_list(const struct kiln_cli_store *s, char ***ret, size_t *ret_n,
                        struct kiln_error **err);

/* Reads builder name. "default" that is not on disk comes back implicit.
 * -ENOENT with *err 'no builder "name" found' when there is none. */
int kiln_cli_store_load(const struct kiln_cli_store *s, const char *name,
                        struct kiln_cli_builder **ret, struct kiln_error **err);

/* Writes b's builder.json into dir (b->dir) atomically. */
int kiln_cli_store_save(const struct kiln_cli_builder *b, const char *dir, struct kiln_error **err);

/* The name of the builder in use: current if it names a builder that
 * exists (or "default"), else default-builder if that does, else
 * "default". Caller frees. */
char *kiln_cli_store_current(const struct kiln_cli_store *s);
/* Makes name current; with as_default, also the fallback used when the
 * current builder goes away (kiln has no docker contexts, so buildx's
 * "default for the current context" becomes the default of the store);
 * "default" as the default clears the fallback. Needs the store lock. */
int kiln_cli_store_set_current(struct kiln_cli_store *s, const char *name, bool as_default,
                               struct kiln_error **err);
/* Drops current and default-builder when they name name (rm). Needs the
 * store lock. */
int kiln_cli_store_forget(struct kiln_cli_store *s, const char *name, struct kiln_error **err);

/* The builder a command works on: name when given, else the current one;
 * an implicit default builder is written first (with the store lock), so
 * that it has files to show and a daemon to start. */
int kiln_cli_store_resolve(struct kiln_cli_store *s, const char *name,
                           struct kiln_cli_builder **ret, struct kiln_error **err);

/* ---- Making builders ---- */

/* Makes builders/<name> ready for a new builder: creates it, or empties
 * what an earlier `rm --keep-state` (or a create that died) left there but
 * for root/, the daemon's state, which the new builder takes over. The
 * builder exists only once kiln_cli_store_save has written builder.json
 * there. Needs the store lock. */
int kiln_cli_store_prepare(struct kiln_cli_store *s, const char *name, struct kiln_error **err);
/* Undoes kiln_cli_store_prepare after a failure: nothing of the new
 * builder is left, only a root/ that was there before. */
void kiln_cli_store_abandon(struct kiln_cli_store *s, const char *name);
/* Writes <dir>/etc/buildkit: with config_file, through
 * kiln_config_install (its warnings and errors in diags); without, an
 * empty buildkitd.toml, so that kilnd runs on its defaults, as buildkitd
 * in a fresh buildx container does. dir must be the builder's final
 * directory: the copy refers to its certificates by absolute path. */
int kiln_cli_store_write_config(const char *config_file, const char *dir,
                                struct kiln_config_diags *diags, struct kiln_error **err);
/* The configuration for builders created without --config:
 * <store>/buildkitd.default.toml when it exists, else NULL. Caller frees. */
char *kiln_cli_store_default_config(const struct kiln_cli_store *s);

/* Removes path and everything below it without following symlinks or
 * crossing into other file systems (a daemon's mounts stay untouched and
 * fail the removal with -EBUSY). keep names an entry directly below path
 * that is kept (and path with it); NULL keeps nothing. A missing path is
 * not an error. */
int kiln_cli_rm_rf(const char *path, const char *keep, struct kiln_error **err);

/* ---- Status and lifecycle (driver-*.c) ---- */

enum kiln_cli_status_kind {
        KILN_CLI_STATUS_INACTIVE, /* never started, or a remote that does not answer */
        KILN_CLI_STATUS_STOPPED,  /* started before, not running now */
        KILN_CLI_STATUS_RUNNING,
        KILN_CLI_STATUS_ERROR, /* a daemon process exists but does not answer */
        _KILN_CLI_STATUS_KIND_MAX,
        _KILN_CLI_STATUS_KIND_INVALID = -EINVAL,
};

const char *kiln_cli_status_kind_to_string(enum kiln_cli_status_kind k);

struct kiln_cli_status {
        enum kiln_cli_status_kind kind;
        json_t *info;           /* RUNNING: the daemon's GET /v1/info */
        pid_t pid;              /* local: the daemon's pid when one runs */
        struct kiln_error *err; /* why it does not answer, when known */
};

void kiln_cli_status_release(struct kiln_cli_status *st);

struct kiln_cli_driver {
        const char *name;
        /* What the builder's daemon is doing now; never starts anything. */
        void (*status)(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                       struct kiln_cli_status *ret);
        /* Makes it run (the caller holds the builder lock) and returns its
         * status, RUNNING with info. */
        int (*boot)(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                    struct kiln_cli_status *ret, struct kiln_error **err);
        /* Stops it and waits for it to exit (the caller holds the lock). */
        int (*stop)(const struct kiln_cli_builder *b, uint64_t timeout_ms, struct kiln_error **err);
};

extern const struct kiln_cli_driver kiln_cli_driver_local;
extern const struct kiln_cli_driver kiln_cli_driver_remote;

const struct kiln_cli_driver *kiln_cli_builder_driver(const struct kiln_cli_builder *b);

/* The builder's status (no lock needed). */
void kiln_cli_builder_status(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                             struct kiln_cli_status *ret);
/* Starts the builder's daemon unless it runs, under the builder lock, and
 * returns its status. Errors name the builder. What every command that
 * needs a daemon calls. */
int kiln_cli_builder_boot(struct kiln_cli_store *s, const struct kiln_cli_builder *b,
                          uint64_t timeout_ms, struct kiln_cli_status *ret,
                          struct kiln_error **err);
/* Stops the builder's daemon (a remote one is left alone, as buildx does),
 * under the builder lock. */
int kiln_cli_builder_stop(struct kiln_cli_store *s, const struct kiln_cli_builder *b,
                          uint64_t timeout_ms, struct kiln_error **err);
