/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Disk usage and pruning: the /v1/du and /v1/prune bodies. */

#include "api/api.h"

#define KILN_API_PATH_DU    "/v1/du"
#define KILN_API_PATH_PRUNE "/v1/prune"
