/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: implementation in progress. */

#include "dockerfile/shell.h"
