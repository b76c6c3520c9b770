/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The tar writer and snapshot diffs of kiln's exporters. */

#include "base/error.h"
