/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

/* Finds a diagnostic whose "file:line:col: level: message" contains needle;
 * prints them all when none does, so a failing test shows what was said. */
static inline bool has_diag(const struct kiln_config_diags *d, const char *needle)
{
        for (size_t i = 0; i < d->n; i++) {
                char *s = kiln_config_diag_format(&d->items[i]);
                bool ok = strstr(s, needle) != NULL;
                free(s);
                if (ok)
                        return true;
        }
        printf("# no diagnostic contains: %s\n", needle);
        kiln_config_diags_print(d, stdout);
        return false;
}

#define ASSERT_DIAG(d, needle) ASSERT_TRUE(has_diag(d, needle))
