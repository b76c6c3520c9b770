/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "base/fs.h"
#include "base/log.h"
#include "config/config.h"
#include "daemon-internal.h"

/* Whether a socket file left at path is dead: 1 when nobody accepts on it
 * (a daemon crashed without removing it), 0 when a server answers, -errno
 * when path is not a socket or cannot be probed. */
static int unix_socket_is_stale(const char *path)
{
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 1 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -ENOTSOCK;

        /* Non-blocking, so that a live server with a full backlog counts as
         * live (EAGAIN) instead of stalling the start. */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        memcpy(sun.sun_path, path, strlen(path) + 1);
        if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) == 0)
                return 0;
        switch (errno) {
        case ECONNREFUSED:
        case ENOENT:
                return 1;
        case EAGAIN:
        case EINPROGRESS:
                return 0;
        default:
                return -errno;
        }
}

static int unix_parent_create(const char *path, const struct kiln_config *c,
                              struct kiln_error **err)
{
        _cleanup_free_ char *dir = kiln_xstrdup(path);
        char *slash;
        struct stat st;
        int r;

        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0; /* relative to the cwd, or directly under / */
        *slash = '\0';
        if (stat(dir, &st) == 0)
                return 0;
        if (errno != ENOENT)
                return kiln_error_set(err, -errno, "stat '%s': %s", dir, strerror(errno));

        /* Owned like the socket, as containerd's GetLocalListener (used by
         * buildkitd) does, but 0750 where it uses 0770: the group needs to
         * reach the socket, not to replace it with something else. */
        r = kiln_mkdir_p(dir, 0750);
        if (r < 0)
                return kiln_error_set(err, r, "create directory '%s': %s", dir, strerror(-r));
        if ((c->grpc.uid_set || c->grpc.gid_set) &&
            chown(dir, c->grpc.uid_set ? (uid_t) c->grpc.uid : (uid_t) -1,
                  c->grpc.gid_set ? (gid_t) c->grpc.gid : (gid_t) -1) < 0)
                return kiln_error_set(err, -errno, "chown '%s': %s", dir, strerror(errno));
        return 0;
}

static int unix_bind(int fd, const char *path)
{
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        mode_t old;
        int r;

        memcpy(sun.sun_path, path, strlen(path) + 1);
        /* The socket file is born 0660, so no chmod by name follows, which
         * a swapped path could redirect. umask is per process, but this
         * runs before the daemon has any other thread. */
        old = umask(0117);
        r = bind(fd, (struct sockaddr *) &sun, sizeof(sun));
        umask(old);
        return r < 0 ? -errno : 0;
}

static int listen_unix(struct kiln_daemon_listener *l, const struct kiln_config *c,
                       struct kiln_error **err)
{
        const char *path = l->parsed.path;
        _cleanup_close_ int fd = -1;
        struct stat st;
        int r;

        r = unix_parent_create(path, c, err);
        if (r < 0)
                return kiln_error_wrap(err, "listen on '%s'", l->address);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return kiln_error_set(err, -errno, "listen on '%s': socket: %s", l->address,
                                      strerror(errno));

        r = unix_bind(fd, path);
        if (r == -EADDRINUSE) {
                int stale = unix_socket_is_stale(path);

                if (stale == 0)
                        return kiln_error_set(err, -EADDRINUSE,
                                              "listen on '%s': address already in use "
                                              "(another server answers on '%s')",
                                              l->address, path);
                if (stale == -ENOTSOCK)
                        return kiln_error_set(err, -EADDRINUSE,
                                              "listen on '%s': '%s' exists and is not a socket",
                                              l->address, path);
                if (stale < 0)
                        return kiln_error_set(err, stale, "listen on '%s': probe '%s': %s",
                                              l->address, path, strerror(-stale));
                if (unlink(path) < 0 && errno != ENOENT)
                        return kiln_error_set(err, -errno,
                                              "listen on '%s': remove stale socket '%s': %s",
                                              l->address, path, strerror(errno));
                log_info_f(KILN_FIELDS({ "path", path }), "removed stale socket");
                r = unix_bind(fd, path);
        }
        if (r < 0)
                return kiln_error_set(err, r, "listen on '%s': bind: %s", l->address, strerror(-r));

        /* From here on the file is ours: remove it if anything below fails. */
        if (lstat(path, &st) < 0) {
                r = -errno;
                (void) unlink(path);
                return kiln_error_set(err, r, "listen on '%s': stat: %s", l->address, strerror(-r));
        }
        l->unlink = true;
        l->sock_dev = st.st_dev;
        l->sock_ino = st.st_ino;

        /* lchown: never follows a link put in the socket's place. */
        if ((c->grpc.uid_set || c->grpc.gid_set) &&
            lchown(path, c->grpc.uid_set ? (uid_t) c->grpc.uid : (uid_t) -1,
                   c->grpc.gid_set ? (gid_t) c->grpc.gid : (gid_t) -1) < 0)
                return kiln_error_set(err, -errno, "listen on '%s': chown: %s", l->address,
                                      strerror(errno));
        if (listen(fd, SOMAXCONN) < 0)
                return kiln_error_set(err, -errno, "listen on '%s': %s", l->address,
                                      strerror(errno));

        l->fd = TAKE_FD(fd);
        return 0;
}

static int listen_tcp(struct kiln_daemon_listener *l, struct kiln_error **err)
{
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
                .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
        };
        struct addrinfo *ai = NULL;
        int r, saved = 0;

        r = getaddrinfo(l->parsed.host[0] ? l->parsed.host : NULL, l->parsed.port, &hints, &ai);
        if (r != 0)
                return kiln_error_set(err, -EADDRNOTAVAIL, "listen on '%s': resolve '%s': %s",
                                      l->address, l->parsed.host, gai_strerror(r));

        /* The first address that works, as Go's net.Listen does. */
        for (struct addrinfo *p = ai; p; p = p->ai_next) {
                _cleanup_close_ int fd = -1;
                int one = 1;

                fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
                if (fd < 0) {
                        saved = -errno;
                        continue;
                }
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, p->ai_addr, p->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
                        saved = -errno;
                        continue;
                }
                l->fd = TAKE_FD(fd);
                break;
        }
        freeaddrinfo(ai);
        if (l->fd < 0) {
                if (saved == 0)
                        saved = -EADDRNOTAVAIL;
                return kiln_error_set(err, saved, "listen on '%s': %s", l->address,
                                      strerror(-saved));
        }
        return 0;
}

int kiln_daemon_listener_open(struct kiln_daemon_listener *l, const struct kiln_config *c,
                              struct kiln_error **err)
{
        switch (l->parsed.kind) {
        case KILN_CONFIG_ADDRESS_UNIX:
                return listen_unix(l, c, err);
        case KILN_CONFIG_ADDRESS_TCP:
                return listen_tcp(l, err);
        case _KILN_CONFIG_ADDRESS_KIND_MAX:
        case _KILN_CONFIG_ADDRESS_KIND_INVALID:
                break;
        }
        return kiln_error_set(err, -EINVAL, "listen on '%s': invalid address", l->address);
}

void kiln_daemon_listener_close(struct kiln_daemon_listener *l)
{
        struct stat st;

        kiln_daemon_server_stop(l);
        if (l->fd >= 0) {
                (void) close(l->fd);
                l->fd = -1;
        }
        /* Only the file we bound: if someone replaced it meanwhile, it is
         * theirs to remove. */
        if (l->unlink && lstat(l->parsed.path, &st) == 0 && S_ISSOCK(st.st_mode) &&
            st.st_dev == l->sock_dev && st.st_ino == l->sock_ino)
                (void) unlink(l->parsed.path);
        l->unlink = false;
}
