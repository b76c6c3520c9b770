/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* OCI layout and Docker archives of an exported image. */

#include "base/error.h"
