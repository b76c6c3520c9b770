/* SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <stdint.h>

#include "base/pattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Input: an ignore file; its first line is also used as a path, and the
 * lines are matched as Match patterns against it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_pattern_matcher_freep) struct kiln_pattern_matcher *m = NULL;
        _cleanup_free_ char *text = NULL, *path = NULL, *clean = NULL;
        struct kiln_error *err = NULL;
        char **v = NULL;
        size_t n = 0;
        const char *nl;
        bool res;

        if (size > 1u << 16)
                return 0;
        text = kiln_xstrndup((const char *) data, size);
        nl = strchr(text, '\n');
        path = kiln_xstrndup(text, nl ? (size_t) (nl - text) : strlen(text));
        clean = kiln_pattern_clean(path);
        (void) kiln_pattern_has_wildcards(path);

        if (kiln_pattern_read_ignorefile(text, strlen(text), &v, &n, &err) < 0) {
                kiln_error_free(err);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                (void) kiln_pattern_match(v[i], clean, &res);
        if (kiln_pattern_matcher_new((const char *const *) v, n, &m, &err) < 0) {
                kiln_error_free(err);
        } else {
                bool *info = kiln_xcalloc(kiln_pattern_matcher_count(m) + 1, sizeof(bool));
                bool a = false, b = false;
                int ra = kiln_pattern_matcher_matches(m, clean, &a);
                int rb = kiln_pattern_matcher_matches_parent(m, clean, NULL, info, &b);
                if (ra != rb || a != b)
                        __builtin_trap();
                free(info);
        }
        kiln_pattern_strv_free(v);
        return 0;
}
