/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Runs one process in a container with an OCI runtime (runc by default, or
 * crun, or a path to either), the way BuildKit's runc executor runs a RUN
 * step: a bundle directory with config.json, hosts, resolv.conf and
 * hostname under the state directory, `<binary> --root <state_dir>/runtime
 * run --bundle <bundle> <id>`, output streamed through a callback, the
 * container killed and deleted on cancel.
 *
 * Every function here is thread safe: calls share nothing but the state
 * directory, in which each run uses its own random id.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/error.h"

/* BuildKit's default hostname for build containers. */
#define KILN_EXEC_DEFAULT_HOSTNAME "buildkitsandbox"
/* PATH given to a process whose environment has none (BuildKit's
 * system.DefaultPathEnvUnix). */
#define KILN_EXEC_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* RLIMIT_NOFILE soft and hard limit of the process. */
#define KILN_EXEC_NOFILE_LIMIT 1048576u
/* How often, at most, a running process's cancel flag goes unchecked. */
#define KILN_EXEC_CANCEL_POLL_MS 100
/* Largest resolv.conf read from the host or the configured file. */
#define KILN_EXEC_MAX_RESOLV_CONF (64u << 10)
/* Limits of a process description. */
#define KILN_EXEC_MAX_ARGS        65536u
#define KILN_EXEC_MAX_ENV         65536u
#define KILN_EXEC_MAX_MOUNTS      1024u
#define KILN_EXEC_MAX_EXTRA_HOSTS 1024u
#define KILN_EXEC_MAX_ULIMITS     64u
#define KILN_EXEC_MAX_HOSTNAME    64u

enum kiln_exec_network {
        KILN_EXEC_NETWORK_NONE, /* own network namespace with only lo (BuildKit "none"/sandbox) */
        KILN_EXEC_NETWORK_HOST, /* the host's network namespace */
};

struct kiln_exec_runtime {
        const char *binary;    /* "runc", "crun" or a path; NULL: "runc" */
        const char *state_dir; /* <root>/exec: bundles, and the runtime's --root below it */
};

struct kiln_exec_mount {
        const char *type;   /* "bind" or "tmpfs" */
        const char *source; /* bind: host path; tmpfs: ignored */
        const char *target; /* absolute path in the container */
        bool readonly;
        uint64_t tmpfs_size; /* bytes; 0: the kernel's default */
        uint32_t tmpfs_mode; /* 0: 01777 */
};

struct kiln_exec_host {
        const char *name; /* host name written to /etc/hosts */
        const char *ip;   /* IPv4 or IPv6 address */
};

struct kiln_exec_ulimit {
        const char *name; /* "nofile", "nproc", ... as `docker --ulimit` (RLIMIT_ suffix) */
        uint64_t soft;
        uint64_t hard;
};

struct kiln_exec_process {
        const char *rootfs; /* a mounted, writable merged view */
        const char *const *args;
        size_t n_args; /* at least 1 */
        const char *const *env;
        size_t n_env;         /* "K=V"; PATH=KILN_EXEC_DEFAULT_PATH added when missing */
        const char *cwd;      /* NULL or "": "/"; created when missing (kiln_exec_prepare_cwd) */
        const char *user;     /* "name[:group]", ids; resolved in rootfs; NULL or "": root */
        const char *hostname; /* NULL or "": KILN_EXEC_DEFAULT_HOSTNAME */
        enum kiln_exec_network network;
        /* A network namespace to join (a CNI namespace, cni.h) instead of
         * a new one; only with KILN_EXEC_NETWORK_NONE. NULL: none. */
        const char *netns_path;
        bool insecure; /* security=insecure: all capabilities, no masked paths, /sys rw */
        const struct kiln_exec_mount *mounts; /* after the default ones, in order */
        size_t n_mounts;
        const struct kiln_exec_host *extra_hosts; /* appended to /etc/hosts */
        size_t n_extra_hosts;
        /* File copied to the bundle (kiln_exec_resolv_conf_filter) and bound
         * at /etc/resolv.conf; NULL: the host's /etc/resolv.conf, or without
         * host networking systemd-resolved's upstream file when the host's
         * lists only its 127.0.0.53 stub. */
        const char *resolv_conf;
        const struct kiln_exec_ulimit *ulimits; /* replace the NOFILE default when given */
        size_t n_ulimits;
        const char *cgroup_parent; /* cgroup "<parent>/buildkit/<id>"; NULL: "/buildkit/<id>" */
};

/* One chunk of the process's output: stream is 1 (stdout) or 2 (stderr).
 * Called on the thread running kiln_exec_run, as the output comes. */
typedef void (*kiln_exec_output_fn)(void *userdata, int stream, const void *data, size_t n);

/*
 * Runs p in a new container and waits for it. On return the container is
 * deleted and its bundle removed, whatever happened, and the empty
 * /etc/resolv.conf, /etc/hosts and /etc/hostname (and /etc) the runtime
 * created in rootfs as mount points are removed again. The default
 * NOFILE limit is lowered to the daemon's own hard limit when the daemon
 * cannot raise it (no CAP_SYS_RESOURCE). out may be NULL
 * (output dropped). cancel may be NULL; when it becomes true (checked at
 * least every KILN_EXEC_CANCEL_POLL_MS) the container is killed with
 * SIGKILL and deleted, and the call returns -ECANCELED with *err set.
 * Returns 0 with *ret_exit_code set to the process's exit code (128+signal
 * when it was killed by a signal) once it ran, or -errno with *err set when
 * it could not be started (bad user spec, runtime missing, state directory
 * not writable). The runtime's own messages (a missing executable, say) go
 * to out on stream 2, as BuildKit shows them, and its exit code is then the
 * runtime's (runc: 1 or 127 and up).
 */
int kiln_exec_run(const struct kiln_exec_runtime *rt, const struct kiln_exec_process *p,
                  kiln_exec_output_fn out, void *userdata, const atomic_bool *cancel,
                  int *ret_exit_code, struct kiln_error **err);

/*
 * What a daemon that died left in rt->state_dir: every container still
 * known to the runtime there is killed (SIGKILL) and deleted, and every
 * bundle directory kiln_exec_run made is removed (other entries, such as a
 * caller's own directories, are left alone). For daemon start, before any
 * kiln_exec_run. Returns 0, or -errno with *err set when the state
 * directory cannot be read.
 */
int kiln_exec_cleanup(const struct kiln_exec_runtime *rt, struct kiln_error **err);

/*
 * The OCI runtime spec (config.json) for p, as BuildKit's oci.GenerateSpec
 * makes it, with root.path = p->rootfs, the process's user already resolved
 * (user: uid, gid, additional gids; the primary gid comes first in them),
 * and /etc/resolv.conf, /etc/hosts and /etc/hostname bound from those files
 * in bundle_dir. Pure (no file is read). Returns a new reference or NULL
 * with *err set for an invalid process description (empty args, relative
 * mount target, unknown ulimit name, limits exceeded).
 */
json_t *kiln_exec_spec_new(const struct kiln_exec_process *p, const char *bundle_dir, uint32_t uid,
                           uint32_t gid, const uint32_t *gids, size_t n_gids,
                           struct kiln_error **err);

/*
 * The resolv.conf text a container gets from the text src (n bytes; NULL:
 * none): as is with host networking, else with localhost name servers
 * (127.0.0.0/8, ::1) removed and, when no name server is left, Google's
 * public ones added, as BuildKit does. *ret is malloc'd, NUL-terminated.
 */
void kiln_exec_resolv_conf_filter(const char *src, size_t n, enum kiln_exec_network network,
                                  char **ret);

/*
 * Creates the working directory cwd (absolute; resolved inside rootfd with
 * RESOLVE_IN_ROOT, so symbolic links never lead out of the tree) and its
 * missing parents, each new one mode 0755 and owned by uid:gid, as BuildKit
 * creates a RUN step's working directory. An existing directory is left as
 * it is; an existing non-directory is an error naming the path. Used by
 * kiln_exec_run; thread safe.
 */
int kiln_exec_prepare_cwd(int rootfd, const char *cwd, uint32_t uid, uint32_t gid,
                          struct kiln_error **err);

/*
 * The /etc/hosts text of a container: the localhost lines, the extra hosts,
 * and hostname on 127.0.0.1, as BuildKit's GetHostsFile. *ret is malloc'd.
 */
void kiln_exec_hosts_file(const char *hostname, const struct kiln_exec_host *extra_hosts,
                          size_t n_extra_hosts, char **ret);
