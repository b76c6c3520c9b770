/* SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <stdint.h>

#include "base/passwd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Input: "<spec>\0<passwd text>\0<group text>"; a missing part is a
 * missing file. Checks the resolution never crashes and that what it
 * returns is consistent. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > 1u << 20)
                return 0;
        const char *p = (const char *) data, *end = p + size;
        const char *z1 = memchr(p, '\0', size);
        _cleanup_free_ char *spec = kiln_xstrndup(p, z1 ? (size_t) (z1 - p) : size);
        const char *passwd = NULL, *group = NULL;
        size_t passwd_len = 0, group_len = 0;
        if (z1) {
                passwd = z1 + 1;
                const char *z2 = memchr(passwd, '\0', (size_t) (end - passwd));
                passwd_len = z2 ? (size_t) (z2 - passwd) : (size_t) (end - passwd);
                if (z2) {
                        group = z2 + 1;
                        group_len = (size_t) (end - group);
                }
        }

        struct kiln_passwd_user u = { 0 };
        struct kiln_error *err = NULL;
        int r = kiln_passwd_resolve_data(spec, passwd, passwd_len, group, group_len, &u, &err);
        if (r < 0) {
                if (!err || u.gids || u.home)
                        __builtin_trap();
                kiln_error_free(err);
                return 0;
        }
        if (err || (u.n_gids > 0 && !u.gids) || u.n_gids > KILN_PASSWD_MAX_GROUPS)
                __builtin_trap();
        /* An empty spec always resolves (to root when nothing matches). */
        kiln_passwd_user_release(&u);
        return 0;
}
