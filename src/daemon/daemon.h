/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * kilnd, the build daemon: one object that owns the root directory (and its
 * lock), the listening sockets and the HTTP API, driven by one thread.
 *
 *   kiln_daemon_new()   block SIGTERM/SIGINT, create and lock the root,
 *                       listen on every [grpc] address
 *   kiln_daemon_run()   serve until SIGTERM or SIGINT
 *   kiln_daemon_free()  stop serving, remove the socket files we created,
 *                       unlock the root (the lock file stays, as buildkitd's)
 *
 * All three must be called from the same thread, and kiln_daemon_new must
 * run before the process starts any other thread: it blocks the stop
 * signals for the calling thread, and threads started later inherit that.
 */

#include "base/error.h"

struct kiln_config;
struct kiln_daemon;

/* config must be after kiln_config_set_defaults, with an absolute root; it
 * is borrowed and must outlive the daemon. config_path is the file it was
 * read from (NULL: none), copied. Logs each address it listens on. Fails with *err naming what
 * could not be done: another kilnd holding <root>/kilnd.lock (-EBUSY, with its pid when known), an
 * address in use (-EADDRINUSE), a TCP address without a TLS certificate (-EINVAL), an unreadable
 * certificate... On failure nothing it created is left behind but the root directory and its lock
 * file. */
int kiln_daemon_new(const struct kiln_config *config, const char *config_path,
                    struct kiln_daemon **ret, struct kiln_error **err);

/* Serves requests until SIGTERM or SIGINT arrives (returns 0, after logging
 * "stopping"), or the loop itself fails (-errno and *err). */
int kiln_daemon_run(struct kiln_daemon *d, struct kiln_error **err);

/* Closes listeners and connections, removes the unix socket files the
 * daemon created, releases the root lock and restores the signal mask.
 * Returns NULL. */
struct kiln_daemon *kiln_daemon_free(struct kiln_daemon *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_daemon *, kiln_daemon_free);
