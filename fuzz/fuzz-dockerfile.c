/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the Dockerfile parser: parse or fail with a line. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/macro.h"
#include "dockerfile/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        FILE *null;

        if (kiln_dockerfile_parse((const char *) data, size, "fuzz", &root, &err) < 0) {
                if (!err || err->line == 0 || root)
                        abort();
                return 0;
        }
        if (!root || root->n_children == 0 || root->start_line == 0)
                abort();
        null = fopen("/dev/null", "w");
        if (null) {
                (void) kiln_dockerfile_dump(root, null);
                fclose(null);
        }
        return 0;
}
