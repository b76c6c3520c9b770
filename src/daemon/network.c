/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker's network, as buildkitd's netproviders.Providers picks it
 * ([worker.oci] networkMode, --oci-worker-net):
 *
 *   host    RUN steps share the host's network
 *   cni     each RUN step gets a namespace of the CNI pool (exec/cni.h),
 *           configured by cniConfigPath with the plugins of cniBinaryPath
 *   bridge  the same with kiln's own chain (bridge bridgeName on
 *           bridgeSubnet, host-local, firewall): isolation without writing
 *           a CNI file
 *   auto    bridge when BUILDKIT_NETWORK_BRIDGE_AUTO is true, else cni when
 *           the configuration file exists, else host ("using host network
 *           as the default"); rootless: host
 *
 * The choice is logged. Unlike buildkitd, a configuration whose plugins
 * fail (a bad subnet, a missing iptables) does not keep the daemon from
 * starting: the pool stays empty and each build fails with the plugin's
 * message, where the user sees it.
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "base/log.h"
#include "daemon-internal.h"
#include "exec/cni.h"
#include "network.h"

#define DEFAULT_CNI_CONFIG "/etc/buildkit/cni.json"
#define DEFAULT_CNI_BIN    "/opt/cni/bin"
/* Where Debian's containernetworking-plugins puts them. */
#define DEBIAN_CNI_BIN "/usr/lib/cni"

static bool env_true(const char *name)
{
        const char *v = getenv(name);

        /* Go's strconv.ParseBool */
        return v && (streq(v, "1") || streq(v, "t") || streq(v, "T") || streq(v, "true") ||
                     streq(v, "TRUE") || streq(v, "True"));
}

static int open_cni(const struct kiln_config_worker_oci *w, const char *root, bool bridge,
                    struct kiln_cni **ret, struct kiln_error **err)
{
        const char *config = w->cni_config_path && w->cni_config_path[0] ? w->cni_config_path
                                                                         : DEFAULT_CNI_CONFIG;
        const char *bin =
                w->cni_binary_path && w->cni_binary_path[0] ? w->cni_binary_path : DEFAULT_CNI_BIN;
        _cleanup_free_ char *state = kiln_xasprintf("%s/net/cni", root);
        struct kiln_cni_options o = {
                .config_path = config,
                .binary_dir = bin,
                .state_dir = state,
                .pool_size = w->cni_pool_size > 0 && w->cni_pool_size < KILN_LIMIT_CNI_NAMESPACES
                                     ? (unsigned) w->cni_pool_size
                                     : 0,
                .bridge = bridge,
                .bridge_name = w->bridge_name && w->bridge_name[0] ? w->bridge_name : NULL,
                .bridge_subnet = w->bridge_subnet && w->bridge_subnet[0] ? w->bridge_subnet : NULL,
        };
        struct stat st;
        int r;

        if (!bridge && stat(config, &st) < 0)
                return kiln_error_set(err, -errno, "failed to read cni config \"%s\": %s", config,
                                      strerror(errno));
        if (stat(bin, &st) < 0) {
                r = -errno;
                return kiln_error_set(
                        err, r, "failed to read cni binary dir \"%s\": %s%s", bin, strerror(-r),
                        stat(DEBIAN_CNI_BIN, &st) == 0
                                ? " (Debian's containernetworking-plugins are in " DEBIAN_CNI_BIN
                                  ": set cniBinaryPath)"
                                : "");
        }
        r = kiln_cni_new(&o, ret, err);
        if (r < 0)
                return r;
        log_info_f(KILN_FIELDS({ "config", bridge ? "(bridge)" : config }, { "binaries", bin }),
                   "using CNI network");
        return 0;
}

int kiln_daemon_network_open(const struct kiln_config *config, const char *root,
                             enum kiln_solver_network *ret_default, struct kiln_cni **ret_cni,
                             struct kiln_error **err)
{
        const struct kiln_config_worker_oci *w = &config->worker_oci;
        const char *mode = w->network_mode ? w->network_mode : "";

        *ret_cni = NULL;
        /* Without CNI the default is host; with it, the pool replaces
         * the default for every step that does not ask for another. */
        *ret_default = KILN_SOLVER_NETWORK_HOST;
        if (streq(mode, "host"))
                return 0;
        if (streq(mode, "cni"))
                return open_cni(w, root, false, ret_cni, err);
        if (streq(mode, "bridge"))
                return open_cni(w, root, true, ret_cni, err);
        if (streq(mode, "auto") || streq(mode, "")) {
                const char *cni = w->cni_config_path && w->cni_config_path[0] ? w->cni_config_path
                                                                              : DEFAULT_CNI_CONFIG;
                struct stat st;

                if (!w->rootless && env_true("BUILDKIT_NETWORK_BRIDGE_AUTO"))
                        return open_cni(w, root, true, ret_cni, err);
                if (!w->rootless && stat(cni, &st) == 0)
                        return open_cni(w, root, false, ret_cni, err);
                log_warning("using host network as the default");
                return 0;
        }
        return kiln_error_set(err, -EINVAL, "invalid network mode: \"%s\"", mode);
}
