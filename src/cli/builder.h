/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Builder instances, as buildx keeps them in ~/.docker/buildx.
 *
 * The store is a directory ($KILN_CONFIG, default ~/.kiln):
 *
 *   .lock                     the store lock (flock): held while builders
 *                             are published, removed or selected
 *   locks/<name>.lock         one lock per builder: held while its daemon
 *                             is started, stopped or its files replaced;
 *                             removed (while held) with the builder
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
 *   builders/.new-<name>-XXXXXX/   a builder being made (see below)
 *
 * The store decides which programs kiln starts and which certificates it
 * trusts, so, as ssh does with ~/.ssh, kiln refuses a store directory (or
 * builders/, locks/) that is not owned by the user running it or that group
 * or others may write. It is created 0700, only when something is written:
 * commands that only look (ls, logs, stop, rm of nothing) write nothing.
 * State files are opened with O_NOFOLLOW.
 *
 * A builder exists when builders/<name>/builder.json does. A new builder
 * is made in a staging directory builders/.new-<name>-XXXXXX, which its
 * maker holds an flock on, builder.json last, and renamed into place in
 * one step: a create that fails or is killed never leaves a half-made
 * builders/<name>/. A staging directory whose flock nobody holds is left by
 * a kiln that died; the next one to make a builder removes it. Every other
 * file is written atomically (temporary file, rename).
 *
 * The builder named "default" always exists: until something needs its
 * files it is implicit (local driver, configuration from
 * buildkitd.default.toml or kilnd's defaults), then it is written like any
 * other.
 *
 * Locks are taken builder first, then store, never the other way round.
 * Functions here are for one thread, except kiln_cli_builder_status (and
 * the drivers' status), which `kiln ls` calls from several threads at once
 * for different builders.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/error.h"
#include "config/config.h"

struct kiln_cli;
struct kiln_cli_args;
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
/* The value of driver option key among opts[0..n), or NULL. */
const char *kiln_cli_driver_opts_get(const struct kiln_cli_driver_opt *opts, size_t n,
                                     const char *key);
/* Where and how to reach the builder's daemon; the strings are borrowed
 * from b. */
void kiln_cli_builder_http_target(const struct kiln_cli_builder *b,
                                  struct kiln_cli_http_target *ret);

/* ---- The store ---- */

/* Opens the store at dir, which must be absolute. A store that does not
 * exist yet is not created (kiln_cli_store_lock and the making of a
 * builder do that); one that exists is checked: owned by the user, not
 * writable by group or others, else -EPERM and *err naming the directory
 * and what is wrong. */
int kiln_cli_store_open(const char *dir, struct kiln_cli_store **ret, struct kiln_error **err);
struct kiln_cli_store *kiln_cli_store_free(struct kiln_cli_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_store *, kiln_cli_store_free);

/* Takes the store lock, creating the store first, waiting up to
 * KILN_CLI_LOCK_TIMEOUT_MS (less when interrupted, see below). Unlocking
 * an unlocked store does nothing; freeing the store unlocks it. */
int kiln_cli_store_lock(struct kiln_cli_store *s, struct kiln_error **err);
void kiln_cli_store_unlock(struct kiln_cli_store *s);

/* Takes the lock of builder name into *ret_fd (close it to unlock; the fd
 * is close-on-exec, so a daemon started meanwhile does not keep it). The
 * lock is on locks/<name>.lock as it is when the lock is granted: a file
 * removed by kiln_cli_store_drop_builder_lock while this call waited is
 * not a lock, and the wait goes on with the new one. */
int kiln_cli_store_lock_builder(struct kiln_cli_store *s, const char *name, int *ret_fd,
                                struct kiln_error **err);
/* Removes locks/<name>.lock, whose lock fd holds, then closes fd: for a
 * builder that is gone, so that locks/ does not collect files. */
void kiln_cli_store_drop_builder_lock(struct kiln_cli_store *s, const char *name, int fd);
/* kiln_cli_store_lock_builder for a builder that must still exist once the
 * lock is held (`kiln rm` may have removed it while this kiln waited): if
 * it does not, the lock is dropped and -ENOENT returned with *err 'no
 * builder "name" found'. */
int kiln_cli_store_lock_existing(struct kiln_cli_store *s, const char *name, int *ret_fd,
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

/* Writes b's builder.json into dir (b->dir, or the staging directory of a
 * new builder) atomically. */
int kiln_cli_store_save(const struct kiln_cli_builder *b, const char *dir, struct kiln_error **err);

/* The name of the builder in use into *ret: current if it names a builder
 * that exists (or "default"), else default-builder if that does, else
 * "default". A current or default-builder that cannot be read, or that
 * holds no valid name, fails with *err naming the file and the cause. */
int kiln_cli_store_current(const struct kiln_cli_store *s, char **ret, struct kiln_error **err);
/* Makes name current; with as_default, also the fallback used when the
 * current builder goes away (kiln has no docker contexts, so buildx's
 * "default for the current context" becomes the default of the store);
 * "default" as the default clears the fallback. Needs the store lock. */
int kiln_cli_store_set_current(struct kiln_cli_store *s, const char *name, bool as_default,
                               struct kiln_error **err);
/* Drops current and default-builder when they name name (rm). Needs the
 * store lock. */
int kiln_cli_store_forget(struct kiln_cli_store *s, const char *name, struct kiln_error **err);

/* The builder a command works on: name when given, else the current one.
 * With materialize, an implicit default builder is written first (with the
 * store lock), so that it has files to show and a daemon to start; without,
 * it comes back implicit and nothing is written. */
int kiln_cli_store_resolve(struct kiln_cli_store *s, const char *name, bool materialize,
                           struct kiln_cli_builder **ret, struct kiln_error **err);

/* What `kiln CMD [NAME]` works on: the store (*ret_store) and the builder
 * resolved (kiln_cli_store_resolve) from the command's first argument, else
 * --builder or KILN_BUILDER, else the current one. */
int kiln_cli_open_builder(const struct kiln_cli *cli, const struct kiln_cli_args *args,
                          bool materialize, struct kiln_cli_store **ret_store,
                          struct kiln_cli_builder **ret, struct kiln_error **err);

/* ---- Making builders ---- */

struct kiln_cli_staging;

/* Creates (with the store lock, briefly) builders/.new-<name>-XXXXXX for a
 * new builder name and holds its flock until it is published or freed;
 * removes the staging directories of kilns that died first. The caller
 * fills it without any lock held, builder.json last. */
int kiln_cli_store_stage(struct kiln_cli_store *s, const char *name, struct kiln_cli_staging **ret,
                         struct kiln_error **err);
/* The staging directory (absolute). */
const char *kiln_cli_staging_dir(const struct kiln_cli_staging *st);
/* Moves the staging directory to builders/<name>, under the builder lock
 * and the store lock: -EEXIST and *err when the builder exists by now,
 * -EINTR when kiln_cli_interrupted() says so. A builders/<name> without
 * builder.json (left by `rm --keep-state`) gives its root/, the daemon's
 * state, to the new builder and is replaced. With use, the builder is made
 * current under the same lock. */
int kiln_cli_store_publish(struct kiln_cli_store *s, struct kiln_cli_staging *st, bool use,
                           struct kiln_error **err);
/* Removes the staging directory unless it was published, and frees st. */
struct kiln_cli_staging *kiln_cli_staging_free(struct kiln_cli_staging *st);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cli_staging *, kiln_cli_staging_free);

/* Writes <dir>/etc/buildkit: with config_file, through
 * kiln_config_install_as (its warnings and errors in diags); without, an
 * empty buildkitd.toml, so that kilnd runs on its defaults, as buildkitd
 * in a fresh buildx container does. The copy names its certificates under
 * final_dir/etc/buildkit, where kilnd will find them: the builder's own
 * directory (dir itself, or where its staging directory is published). */
int kiln_cli_store_write_config(const char *config_file, const char *dir, const char *final_dir,
                                struct kiln_config_diags *diags, struct kiln_error **err);
/* The configuration for builders created without --config:
 * <store>/buildkitd.default.toml when it exists, else NULL. Caller frees. */
char *kiln_cli_store_default_config(const struct kiln_cli_store *s);

/* ---- Interruption ---- */

/* From kiln_cli_interrupt_catch() on, SIGINT (unless kiln was started with
 * it ignored), SIGTERM and SIGHUP only note the signal: waits for a lock
 * stop with -EINTR, and the caller undoes what it made.
 * kiln_cli_interrupt_release() restores the default actions and, when a
 * signal came, raises it again, so that kiln ends as the signal asked
 * (after its cleanup). */
void kiln_cli_interrupt_catch(void);
/* The signal that came since kiln_cli_interrupt_catch(), or 0. */
int kiln_cli_interrupted(void);
void kiln_cli_interrupt_release(void);

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

/* The builder's daemon's GET /v1/info, or -errno and *err. Thread safe. */
int kiln_cli_builder_probe(const struct kiln_cli_builder *b, uint64_t timeout_ms, json_t **ret,
                           struct kiln_error **err);
/* The builder's status (no lock needed). Thread safe for different
 * builders. */
void kiln_cli_builder_status(const struct kiln_cli_builder *b, uint64_t timeout_ms,
                             struct kiln_cli_status *ret);
/* Starts the builder's daemon unless it runs, under the builder lock, and
 * returns its status. A builder removed while the lock was waited for
 * fails with 'no builder "name" found' (-ENOENT) and starts nothing. Other
 * errors name the builder. What every command that needs a daemon calls. */
int kiln_cli_builder_boot(struct kiln_cli_store *s, const struct kiln_cli_builder *b,
                          uint64_t timeout_ms, struct kiln_cli_status *ret,
                          struct kiln_error **err);
/* Stops the builder's daemon (a remote one is left alone, as buildx does),
 * under the builder lock; an implicit default builder has none and
 * nothing is done. */
int kiln_cli_builder_stop(struct kiln_cli_store *s, const struct kiln_cli_builder *b,
                          uint64_t timeout_ms, struct kiln_error **err);

/* A pidfd for pid, when is_ours(pid, userdata) says that pid is the process
 * meant (a daemon of this builder, by its command line). The pidfd is
 * opened first and the process is still alive after the check, so the
 * check saw the process the pidfd refers to: signals sent through it
 * (pidfd_send_signal) never reach a process that got the pid after the
 * one checked exited. Returns the pidfd (close-on-exec), -ESRCH when pid
 * is gone or not ours, or another -errno. */
int kiln_cli_pidfd_open_checked(pid_t pid, bool (*is_ours)(pid_t pid, void *userdata),
                                void *userdata);
