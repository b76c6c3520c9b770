/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * kilnd's internals, shared by daemon.c (lifecycle, loop), listen.c
 * (sockets) and server.c (HTTP). Everything here runs on the daemon's one
 * thread: the loop in kiln_daemon_run drives the HTTP servers itself (MHD in
 * external epoll mode), so no object below needs a lock.
 */

#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "base/error.h"
#include "config/address.h"
#include "daemon.h"

struct MHD_Daemon;
struct kiln_config;

/* A TLS certificate, key or CA bundle read for --tlscert/--tlskey/--tlscacert. */
#define KILN_DAEMON_LIMIT_PEM (1u << 20)
/* Open HTTP connections per listening address. */
#define KILN_DAEMON_MAX_CONNECTIONS 256u
/* An idle HTTP connection is closed after this many seconds. */
#define KILN_DAEMON_CONNECTION_TIMEOUT_S 60u
/* MHD's per-connection buffer: request line, headers and our small bodies. */
#define KILN_DAEMON_CONNECTION_MEMORY (64u << 10)
/* Longest message from libmicrohttpd that is kept for an error. */
#define KILN_DAEMON_MHD_MESSAGE_MAX 256u

struct kiln_daemon_listener {
        struct kiln_daemon *daemon; /* back pointer, for the HTTP handlers */
        char *address;              /* as configured, for logs and errors */
        struct kiln_config_address parsed;
        int fd;         /* listening socket until handed to MHD, then -1 */
        bool tls;       /* TCP: served over TLS */
        bool mtls;      /* TLS with --tlscacert: a verified client cert is required */
        bool unlink;    /* unix: we created the socket file; remove it at stop */
        dev_t sock_dev; /* unix: identity of the socket file we created, so that */
        ino_t sock_ino; /*   we never remove a file another process put there */
        struct MHD_Daemon *mhd;
        char mhd_message[KILN_DAEMON_MHD_MESSAGE_MAX]; /* MHD's last complaint */
};

struct kiln_daemon {
        const struct kiln_config *config;
        char *config_path;
        char *root;
        char *lock_path;
        int lock_fd;
        int signal_fd;
        int epoll_fd;
        sigset_t saved_mask;
        bool mask_saved;
        /* PEM text of [grpc.tls], NUL-terminated; the key is wiped at free. */
        char *tls_cert;
        char *tls_key;
        char *tls_ca;
        size_t tls_key_len;
        struct kiln_daemon_listener *listeners;
        size_t n_listeners;
};

/* Creates the socket for l->parsed, listening, in l->fd. A unix socket's
 * parent directory is created, a stale socket file (nobody accepts on it)
 * is replaced, a live one fails with -EADDRINUSE; the file gets mode 0660
 * and, when [grpc] uid/gid are set, that owner. */
int kiln_daemon_listener_open(struct kiln_daemon_listener *l, const struct kiln_config *c,
                              struct kiln_error **err);
/* Stops l's server, closes its socket and removes the socket file when it
 * is still the one we created. Idempotent. */
void kiln_daemon_listener_close(struct kiln_daemon_listener *l);

/* Checks that the TLS options make sense for the configured addresses.
 * Called before anything is created, so that a bad address or a TCP
 * address without a certificate fails fast. */
int kiln_daemon_server_check(const struct kiln_config *c, struct kiln_error **err);
/* Starts the HTTP server of l on a duplicate of l->fd (l->fd is closed
 * once MHD serves) and adds the server to the daemon's epoll set. */
int kiln_daemon_server_start(struct kiln_daemon *d, struct kiln_daemon_listener *l,
                             struct kiln_error **err);
/* Lets every server do the work that is ready: accept, read, answer, time
 * out idle connections. Never blocks. */
void kiln_daemon_server_dispatch(struct kiln_daemon *d);
/* Milliseconds until a server needs kiln_daemon_server_dispatch without
 * I/O (a connection timing out), or -1 for never. */
int kiln_daemon_server_timeout(struct kiln_daemon *d);
/* Stops l's server (closing its listening socket and connections). */
void kiln_daemon_server_stop(struct kiln_daemon_listener *l);
