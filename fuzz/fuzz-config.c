/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the buildkitd.toml layer: any document must load or
 * fail with diagnostics, and a usable one must survive defaults, the
 * cross-key checks and the JSON rendering, without crashes, leaks or
 * undefined behaviour.
 */

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/macro.h"
#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c = kiln_config_new();
        struct kiln_config_diags diags = { 0 };
        json_t *json = NULL;
        int r;

        r = kiln_config_load_string(c, "fuzz.toml", (const char *) data, size, &diags);
        /* A failed load names at least one error; a problem always has text. */
        if (r < 0 && kiln_config_diags_count(&diags, KILN_CONFIG_ERROR) == 0)
                abort();
        for (size_t i = 0; i < diags.n; i++)
                if (!diags.items[i].message || !diags.items[i].message[0])
                        abort();
        if (r >= 0) {
                kiln_config_set_defaults(c);
                (void) kiln_config_check(c, &diags);
                if (kiln_config_to_json(c, &json) < 0 || !json)
                        abort();
                json_decref(json);
        }
        kiln_config_diags_release(&diags);
        return 0;
}
