/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "kiln-test.h"

extern const struct kiln_test *const __start_kiln_tests[];
extern const struct kiln_test *const __stop_kiln_tests[];

int main(int argc, char **argv)
{
        size_t n = (size_t) (__stop_kiln_tests - __start_kiln_tests);
        const char *only = argc > 1 ? argv[1] : NULL;
        int failed = 0;
        size_t i, k = 0;

        /* Line-buffered so TAP and the diagnostics interleave in order. */
        setvbuf(stdout, NULL, _IOLBF, 0);
        printf("TAP version 13\n");
        for (i = 0; i < n; i++)
                if (!only || strcmp(only, __start_kiln_tests[i]->name) == 0)
                        k++;
        printf("1..%zu\n", k);
        k = 0;
        for (i = 0; i < n; i++) {
                const struct kiln_test *t = __start_kiln_tests[i];
                int r;

                if (only && strcmp(only, t->name) != 0)
                        continue;
                r = t->func();
                k++;
                if (r == KILN_TEST_SKIP)
                        printf("ok %zu - %s # SKIP\n", k, t->name);
                else if (r == 0)
                        printf("ok %zu - %s\n", k, t->name);
                else {
                        printf("not ok %zu - %s\n", k, t->name);
                        failed++;
                }
        }
        return failed ? 1 : 0;
}
