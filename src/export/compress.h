/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Layer blobs: a tar stream compressed and published in the content store. */

#include "base/error.h"
