/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * CNI networks for RUN steps, as buildkitd's cniprovider does
 * (util/network/cniprovider): every step runs in a network namespace of its
 * own, set up by CNI plugins, taken from a pool and given back after the
 * step.
 *
 * Configuration: a file whose name ends in ".conflist" is a plugin chain
 * ({"cniVersion", "name", "plugins": [...]}); any other name is a single
 * plugin's configuration ({"cniVersion", "name", "type", ...}), as libcni's
 * ConfListFromFile and ConfFromFile read them. A loopback network
 * ("cni-loopback", plugin "loopback", interface "lo") is set up first, as
 * go-cni's WithLoNetwork. The configured network's interface is "eth0".
 * cniVersion must be 0.4.0 to 1.0.0 (or 1.1.0).
 *
 * Plugins are run as the CNI specification says: CNI_COMMAND (ADD, DEL),
 * CNI_CONTAINERID (the namespace's id), CNI_NETNS (its path), CNI_IFNAME,
 * CNI_PATH (the binary directories), the plugin's configuration on stdin
 * with "name", "cniVersion" and, after the first plugin of a chain,
 * "prevResult"; the result on stdout. DEL runs the chain backwards with the
 * ADD result as prevResult. A failing plugin's error reads
 *   plugin type="bridge" name="buildkit" failed (add): <msg>: <details>
 * as libcni words it, <msg> being the plugin's own.
 *
 * Namespaces: <state_dir>/<id> is an empty file onto which the network
 * namespace is bind-mounted; <state_dir>/<id>.result keeps the ADD result
 * for DEL. kiln_cni_new releases what a previous daemon left there (CNI DEL,
 * unmount, remove), then fills the pool to pool_size in the background.
 * A namespace handed out is returned with kiln_cni_put (kept for the next
 * step: no CNI DEL, its address is reused, as buildkitd does) or
 * kiln_cni_discard (released now). kiln_cni_free releases every namespace.
 *
 * The bind mounts are made in the calling process's mount namespace: kilnd
 * runs in a private one (snapshot.h), so a killed daemon's mounts vanish
 * with it and only the files (and the plugins' state, such as IPAM leases)
 * remain for the next start to release.
 *
 * Failures of releases nobody waits for (leftovers, the pool at stop) are
 * logged at debug level.
 *
 * Thread safety: a struct kiln_cni may be used from any number of threads
 * (kiln_cni.lock guards the pool). Plugins run without the lock held.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

/* How long one plugin call may take. */
#define KILN_CNI_PLUGIN_TIMEOUT_MS 60000
/* A configuration file, and a plugin's output. */
#define KILN_LIMIT_CNI_CONFIG (1u << 20)
#define KILN_LIMIT_CNI_OUTPUT (1u << 20)
/* Plugins in one chain. */
#define KILN_LIMIT_CNI_PLUGINS 32u
/* Namespaces alive at once (pooled and in use). */
#define KILN_LIMIT_CNI_NAMESPACES 4096u

struct kiln_cni_options {
        /* The configuration file; ignored in bridge mode. */
        const char *config_path;
        /* Where the plugins are: one directory or a ':'-separated list. */
        const char *binary_dir;
        /* <root>/net/cni: created when missing. */
        const char *state_dir;
        /* Namespaces kept ready. */
        unsigned pool_size;
        /* bridge mode: instead of a file, the chain loopback, bridge
         * (bridge_name, default gateway, IP masquerade, host-local IPAM on
         * bridge_subnet), firewall, as buildkitd's built-in bridge. */
        bool bridge;
        const char *bridge_name;   /* NULL: "buildkit0" */
        const char *bridge_subnet; /* NULL: "10.10.0.0/16" */
};

struct kiln_cni;

/* One namespace handed out for a step. */
struct kiln_cni_ns {
        char *id;   /* unique, also the CNI container id */
        char *path; /* the bind-mounted namespace file: for the OCI spec */
        char *ip;   /* the first address of the configured network ("10.10.0.2/16"),
                     * NULL when the plugins gave none */
};

/* Loads and checks the configuration (JSON, versions, every plugin binary
 * present), releases leftovers, starts filling the pool. Errors name the
 * file (and line and column for bad JSON) or the missing plugin. */
int kiln_cni_new(const struct kiln_cni_options *o, struct kiln_cni **ret, struct kiln_error **err);

/* Releases every namespace (CNI DEL, unmount, remove) and frees c. Every
 * namespace handed out must have been put back or discarded. NULL is fine. */
struct kiln_cni *kiln_cni_free(struct kiln_cni *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_cni *, kiln_cni_free);

/* A namespace from the pool, or a new one (created and set up by the
 * plugins now). On failure nothing is left behind: the namespace is torn
 * down and the plugins' error returned. */
int kiln_cni_get(struct kiln_cni *c, struct kiln_cni_ns **ret, struct kiln_error **err);

/* Gives ns back to the pool for the next step. */
void kiln_cni_put(struct kiln_cni *c, struct kiln_cni_ns *ns);

/* Releases ns now (CNI DEL, unmount, remove) and frees it. Everything is
 * attempted; the first failure is returned (a plugin's DEL error, for the
 * caller to log: the namespace is gone either way). */
int kiln_cni_discard(struct kiln_cni *c, struct kiln_cni_ns *ns, struct kiln_error **err);

struct kiln_cni_stats {
        unsigned idle;    /* in the pool */
        unsigned in_use;  /* handed out */
        uint64_t created; /* namespaces set up since start (CNI ADDs of the
                           * configured network) */
        uint64_t released;
};
void kiln_cni_get_stats(struct kiln_cni *c, struct kiln_cni_stats *ret);
