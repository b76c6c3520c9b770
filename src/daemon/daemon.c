/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "config/config.h"
#include "content/content.h"
#include "daemon-internal.h"
#include "disk.h"
#include "registry/registry.h"

/* The pid written into the lock file: "1234\n". */
#define LOCK_PID_MAX 32

static long lock_read_pid(int fd)
{
        char buf[LOCK_PID_MAX];
        ssize_t n;
        char *end;
        long pid;

        n = pread(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        errno = 0;
        pid = strtol(buf, &end, 10);
        if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || pid <= 0)
                return 0;
        return pid;
}

/* buildkitd takes <root>/buildkitd.lock with flock(2) and leaves the file
 * when it exits; kiln does the same with <root>/kilnd.lock, and records its
 * pid so that the second daemon can say who is in the way. */
static int lock_root(struct kiln_daemon *d, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        char pid[LOCK_PID_MAX];
        int n;

        d->lock_path = kiln_xasprintf("%s/kilnd.lock", d->root);
        fd = open(d->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open lock file '%s': %s", d->lock_path,
                                      strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                long holder;

                if (errno != EWOULDBLOCK)
                        return kiln_error_set(err, -errno, "lock '%s': %s", d->lock_path,
                                              strerror(errno));
                holder = lock_read_pid(fd);
                if (holder > 0)
                        return kiln_error_set(err, -EBUSY,
                                              "could not lock '%s': another kilnd (pid %ld) "
                                              "is running with root '%s'",
                                              d->lock_path, holder, d->root);
                return kiln_error_set(err, -EBUSY,
                                      "could not lock '%s': another kilnd is running with "
                                      "root '%s'",
                                      d->lock_path, d->root);
        }

        n = snprintf(pid, sizeof(pid), "%ld\n", (long) getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t) n, 0) != n)
                return kiln_error_set(err, -errno, "write lock file '%s': %s", d->lock_path,
                                      strerror(errno));
        d->lock_fd = TAKE_FD(fd);
        return 0;
}

static void unlock_root(struct kiln_daemon *d)
{
        if (d->lock_fd < 0)
                return;
        /* Empty, so that a pid in it always names a running holder. */
        (void) ftruncate(d->lock_fd, 0);
        (void) flock(d->lock_fd, LOCK_UN);
        (void) close(d->lock_fd);
        d->lock_fd = -1;
}

static int create_root(struct kiln_daemon *d, struct kiln_error **err)
{
        struct stat st;
        int r;

        if (d->root[0] != '/')
                return kiln_error_set(err, -EINVAL, "root '%s' is not an absolute path", d->root);
        r = kiln_mkdir_p(d->root, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create root '%s': %s", d->root, strerror(-r));
        if (stat(d->root, &st) < 0)
                return kiln_error_set(err, -errno, "root '%s': %s", d->root, strerror(errno));
        if (!S_ISDIR(st.st_mode))
                return kiln_error_set(err, -ENOTDIR, "root '%s' is not a directory", d->root);
        return 0;
}

static int read_pem(const char *what, const char *path, char **ret, size_t *ret_len,
                    struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_DAEMON_LIMIT_PEM);
        int r;

        r = kiln_read_file_at(AT_FDCWD, path, &b);
        if (r == -E2BIG)
                return kiln_error_set(err, r, "read TLS %s '%s': larger than %u bytes", what, path,
                                      KILN_DAEMON_LIMIT_PEM);
        if (r < 0)
                return kiln_error_set(err, r, "read TLS %s '%s': %s", what, path, strerror(-r));
        if (ret_len)
                *ret_len = b.len;
        *ret = kiln_buf_steal(&b);
        return 0;
}

/* libmicrohttpd says only "failed to initialize TLS support" when the
 * files are wrong; loading them here first names the file and the cause. */
static int check_tls(struct kiln_daemon *d, struct kiln_error **err)
{
        const struct kiln_config *c = d->config;
        gnutls_certificate_credentials_t cred = NULL;
        gnutls_datum_t cert = { (unsigned char *) d->tls_cert, (unsigned) strlen(d->tls_cert) };
        gnutls_datum_t key = { (unsigned char *) d->tls_key, (unsigned) d->tls_key_len };
        int r = 0, g;

        if (gnutls_certificate_allocate_credentials(&cred) != GNUTLS_E_SUCCESS)
                return kiln_error_set(err, -ENOMEM, "load TLS credentials: out of memory");
        g = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
        if (g < 0) {
                r = kiln_error_set(err, -EINVAL, "load TLS certificate '%s' with key '%s': %s",
                                   c->grpc.tls.cert, c->grpc.tls.key, gnutls_strerror(g));
                goto out;
        }
        if (d->tls_ca) {
                gnutls_datum_t ca = { (unsigned char *) d->tls_ca, (unsigned) strlen(d->tls_ca) };

                g = gnutls_certificate_set_x509_trust_mem(cred, &ca, GNUTLS_X509_FMT_PEM);
                if (g <= 0) {
                        r = kiln_error_set(err, -EINVAL, "load TLS CA certificate '%s': %s",
                                           c->grpc.tls.ca,
                                           g < 0 ? gnutls_strerror(g) : "no certificate in it");
                        goto out;
                }
        }
out:
        gnutls_certificate_free_credentials(cred);
        return r;
}

static int load_tls(struct kiln_daemon *d, struct kiln_error **err)
{
        const struct kiln_config *c = d->config;
        bool need = false;
        int r;

        for (size_t i = 0; i < d->n_listeners; i++)
                need |= d->listeners[i].tls;
        if (!need)
                return 0;

        r = read_pem("certificate", c->grpc.tls.cert, &d->tls_cert, NULL, err);
        if (r < 0)
                return r;
        r = read_pem("key", c->grpc.tls.key, &d->tls_key, &d->tls_key_len, err);
        if (r < 0)
                return r;
        if (c->grpc.tls.ca && c->grpc.tls.ca[0]) {
                r = read_pem("CA certificate", c->grpc.tls.ca, &d->tls_ca, NULL, err);
                if (r < 0)
                        return r;
        }
        return check_tls(d, err);
}

static int setup_signals(struct kiln_daemon *d, struct kiln_error **err)
{
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &d->signal_source };
        struct epoll_event wake = { .events = EPOLLIN, .data.ptr = &d->wake_source };
        sigset_t mask;
        int r;

        /* Signals are read from a signalfd in the loop: no handler runs in
         * an arbitrary place, and stopping is ordinary code. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        r = pthread_sigmask(SIG_BLOCK, &mask, &d->saved_mask);
        if (r != 0)
                return kiln_error_set(err, -r, "block SIGTERM and SIGINT: %s", strerror(r));
        d->mask_saved = true;

        d->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (d->signal_fd < 0)
                return kiln_error_set(err, -errno, "signalfd: %s", strerror(errno));
        d->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (d->epoll_fd < 0)
                return kiln_error_set(err, -errno, "epoll: %s", strerror(errno));
        if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, d->signal_fd, &ev) < 0)
                return kiln_error_set(err, -errno, "epoll: %s", strerror(errno));
        /* Operations' worker threads tell the loop they have news here. */
        d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (d->wake_fd < 0)
                return kiln_error_set(err, -errno, "eventfd: %s", strerror(errno));
        if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, d->wake_fd, &wake) < 0)
                return kiln_error_set(err, -errno, "epoll: %s", strerror(errno));
        return 0;
}

/* The content store and the one transfer manager and registry client of
 * the daemon. After setup_signals: the manager's thread must inherit the
 * blocked stop signals. */
static int setup_registry(struct kiln_daemon *d, struct kiln_error **err)
{
        struct kiln_registry_transfer_manager_options mo = {
                .max_concurrency = d->config->system.max_registry_concurrency > 0
                                           ? (unsigned) d->config->system.max_registry_concurrency
                                           : 0,
        };
        struct kiln_registry_client_options co = { .retry_base_ms = -1 };
        int r;

        r = kiln_content_store_open(d->root, &d->store, err);
        if (r < 0)
                return r;
        r = kiln_registry_transfer_manager_new(&mo, &d->manager, err);
        if (r < 0)
                return kiln_error_wrap(err, "start the registry transfer manager");
        r = kiln_registry_client_new(d->manager, d->config, &co, &d->client, err);
        if (r < 0)
                return kiln_error_wrap(err, "start the registry client");
        return 0;
}

int kiln_daemon_new(const struct kiln_config *config, const char *config_path,
                    struct kiln_daemon **ret, struct kiln_error **err)
{
        _cleanup_(kiln_daemon_freep) struct kiln_daemon *d = NULL;
        const char *cert = config->grpc.tls.cert;
        int r;

        /* Everything that can be checked without side effects first, so a
         * bad address fails before the root is touched. */
        r = kiln_daemon_server_check(config, err);
        if (r < 0)
                return r;

        d = kiln_xcalloc(1, sizeof(*d));
        d->config = config;
        d->config_path = config_path ? kiln_xstrdup(config_path) : NULL;
        d->root = kiln_xstrdup(config->root ? config->root : KILN_CONFIG_DEFAULT_ROOT);
        d->lock_fd = d->signal_fd = d->epoll_fd = d->wake_fd = -1;
        d->signal_source.kind = KILN_DAEMON_SOURCE_SIGNAL;
        d->wake_source.kind = KILN_DAEMON_SOURCE_WAKE;
        d->listeners = kiln_xcalloc(config->grpc.n_address, sizeof(*d->listeners));
        d->n_listeners = config->grpc.n_address;
        for (size_t i = 0; i < d->n_listeners; i++) {
                struct kiln_daemon_listener *l = &d->listeners[i];

                l->source.kind = KILN_DAEMON_SOURCE_SERVER;
                l->daemon = d;
                l->fd = -1;
                l->address = kiln_xstrdup(config->grpc.address[i]);
                r = kiln_config_address_parse(l->address, &l->parsed, err);
                if (r < 0)
                        return r;
                l->tls = l->parsed.kind == KILN_CONFIG_ADDRESS_TCP;
                l->mtls = l->tls && config->grpc.tls.ca && config->grpc.tls.ca[0];
        }

        r = setup_signals(d, err);
        if (r < 0)
                return r;

        r = create_root(d, err);
        if (r < 0)
                return r;
        r = lock_root(d, err);
        if (r < 0)
                return r;
        r = load_tls(d, err);
        if (r < 0)
                return r;
        r = setup_registry(d, err);
        if (r < 0)
                return r;
        r = kiln_daemon_builds_setup(d, err);
        if (r < 0)
                return r;
        /* buildkitd collects garbage once at start, then after builds. */
        r = kiln_daemon_gc_start(d, err);
        if (r < 0)
                return r;

        for (size_t i = 0; i < d->n_listeners; i++) {
                struct kiln_daemon_listener *l = &d->listeners[i];

                if (!l->tls && cert && cert[0])
                        log_warning("TLS is disabled for %s", l->address);
                r = kiln_daemon_listener_open(l, config, err);
                if (r < 0)
                        return r;
                r = kiln_daemon_server_start(d, l, err);
                if (r < 0)
                        return r;
                log_info_f(KILN_FIELDS({ "addr", l->address }), "running server on %s",
                           l->parsed.kind == KILN_CONFIG_ADDRESS_UNIX ? l->parsed.path
                                                                      : l->address);
        }

        *ret = TAKE_PTR(d);
        return 0;
}

static const char *signal_name(uint32_t sig)
{
        switch (sig) {
        case SIGTERM:
                return "SIGTERM";
        case SIGINT:
                return "SIGINT";
        default:
                return "signal";
        }
}

/* Returns the stop signal read from the signalfd, or 0 when none was. */
static uint32_t read_signal(struct kiln_daemon *d)
{
        struct signalfd_siginfo si;
        uint32_t sig = 0;

        for (;;) {
                ssize_t n = read(d->signal_fd, &si, sizeof(si));

                if (n != (ssize_t) sizeof(si))
                        return sig;
                sig = si.ssi_signo;
        }
}

static void read_wake(struct kiln_daemon *d)
{
        uint64_t n;

        (void) !read(d->wake_fd, &n, sizeof(n));
}

/* The epoll timeout: the servers' own, and while stopping, the end of the
 * grace period for streams still delivering their last events. */
static int loop_timeout(struct kiln_daemon *d, int64_t drain_deadline)
{
        int timeout = kiln_daemon_server_timeout(d);
        int64_t left;

        if (drain_deadline < 0)
                return timeout;
        left = drain_deadline - kiln_mono_ms();
        if (left < 0)
                left = 0;
        if (timeout < 0 || left < timeout)
                timeout = (int) left;
        return timeout;
}

int kiln_daemon_run(struct kiln_daemon *d, struct kiln_error **err)
{
        int64_t drain_deadline = -1;
        bool waiting_logged = false;

        for (;;) {
                struct epoll_event events[16];
                bool wake = false;
                uint32_t sig = 0;
                int n;

                n = epoll_wait(d->epoll_fd, events, ELEMENTSOF(events),
                               loop_timeout(d, drain_deadline));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_set(err, -errno, "wait for events: %s", strerror(errno));
                }
                /* Nothing is freed while the batch is read (operations go in
                 * ops_dispatch and the servers' dispatch, below), so every
                 * source an event points at is alive. */
                for (int i = 0; i < n; i++) {
                        struct kiln_daemon_source *src = events[i].data.ptr;

                        switch (src->kind) {
                        case KILN_DAEMON_SOURCE_SIGNAL:
                                sig = read_signal(d);
                                break;
                        case KILN_DAEMON_SOURCE_WAKE:
                                read_wake(d);
                                wake = true;
                                break;
                        case KILN_DAEMON_SOURCE_HANGUP:
                                kiln_daemon_ops_hangup(d, src);
                                break;
                        case KILN_DAEMON_SOURCE_SERVER:
                                break;
                        }
                }
                if (sig && !d->stopping) {
                        log_info_f(KILN_FIELDS({ "signal", signal_name(sig) }), "stopping");
                        d->stopping = true;
                        kiln_daemon_ops_cancel(d);
                } else if (sig) {
                        /* A second signal: no more grace for slow readers;
                         * workers still have to end before the store goes. */
                        drain_deadline = kiln_mono_ms();
                }
                if (wake || sig)
                        kiln_daemon_ops_dispatch(d);
                kiln_daemon_server_dispatch(d);
                /* Requests that ended in there may leave operations to forget. */
                kiln_daemon_ops_dispatch(d);

                if (!d->stopping)
                        continue;
                if (kiln_daemon_ops_idle(d))
                        return 0;
                if (d->n_running > 0) {
                        if (!waiting_logged) {
                                char count[16];

                                (void) snprintf(count, sizeof(count), "%u", d->n_running);
                                log_info_f(KILN_FIELDS({ "operations", count }),
                                           "waiting for running operations to end");
                                waiting_logged = true;
                        }
                        continue;
                }
                if (drain_deadline < 0)
                        drain_deadline = kiln_mono_ms() + KILN_DAEMON_STOP_DRAIN_MS;
                else if (kiln_mono_ms() >= drain_deadline)
                        return 0;
        }
}

struct kiln_daemon *kiln_daemon_free(struct kiln_daemon *d)
{
        if (!d)
                return NULL;
        /* Workers first (they use the store and the client), then the
         * servers (which refuse to stop with suspended connections), then
         * what the workers used. The collector stops first, so that a
         * prune waiting for it is not held up. */
        kiln_daemon_gc_stop(d);
        kiln_daemon_ops_stop(d);
        for (size_t i = 0; i < d->n_listeners; i++) {
                kiln_daemon_listener_close(&d->listeners[i]);
                kiln_config_address_release(&d->listeners[i].parsed);
                free(d->listeners[i].address);
        }
        free(d->listeners);
        kiln_daemon_ops_free(d);
        kiln_daemon_disk_free(d);
        /* Builds are gone with their operations; the solver and the stores
         * they used go before the registry client the solver pulls with. */
        kiln_daemon_builds_free(d);
        d->client = kiln_registry_client_free(d->client);
        d->manager = kiln_registry_transfer_manager_free(d->manager);
        d->store = kiln_content_store_free(d->store);
        if (d->wake_fd >= 0)
                (void) close(d->wake_fd);
        unlock_root(d);
        if (d->signal_fd >= 0) {
                /* A second stop signal that arrived while stopping is
                 * consumed here, so that restoring the mask does not let it
                 * kill a daemon that has already stopped cleanly. */
                (void) read_signal(d);
                (void) close(d->signal_fd);
        }
        if (d->epoll_fd >= 0)
                (void) close(d->epoll_fd);
        if (d->mask_saved)
                (void) pthread_sigmask(SIG_SETMASK, &d->saved_mask, NULL);
        if (d->tls_key)
                explicit_bzero(d->tls_key, d->tls_key_len);
        free(d->tls_key);
        free(d->tls_cert);
        free(d->tls_ca);
        free(d->lock_path);
        free(d->root);
        free(d->config_path);
        free(d);
        return NULL;
}
