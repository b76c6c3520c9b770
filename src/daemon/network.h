/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "base/error.h"
#include "config/config.h"
#include "solver/solver.h"

struct kiln_cni;

/* Picks the worker's network from config as network.c describes. Sets
 * *ret_default (the network of steps when there is no CNI) and *ret_cni (a
 * new CNI pool, or NULL for host networking; free it with kiln_cni_free
 * after the solver). Errors as buildkitd's: "failed to read cni config
 * ...", "invalid network mode: ...". */
int kiln_daemon_network_open(const struct kiln_config *config, const char *root,
                             enum kiln_solver_network *ret_default, struct kiln_cni **ret_cni,
                             struct kiln_error **err);
