/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Image export: layers, config and manifest of a build result. */

#include "base/error.h"
