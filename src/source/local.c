/* SPDX-License-Identifier: Apache-2.0 */
#include "source/local.h"
