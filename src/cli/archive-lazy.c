/* SPDX-License-Identifier: Apache-2.0 */
#define KILN_CLI_ARCHIVE_NO_MACROS
#include "archive-lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static struct kiln_cli_archive_api api;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
        void *h = dlopen(KILN_CLI_LIBARCHIVE, RTLD_NOW | RTLD_LOCAL);

        if (!h) {
                fprintf(stderr, "ERROR: cannot load %s: %s (scripts/install-deps installs it)\n",
                        KILN_CLI_LIBARCHIVE, dlerror());
                exit(1);
        }
#define X(f)                                                                       \
        api.f = (__typeof__(api.f)) dlsym(h, #f);                                  \
        if (!api.f) {                                                              \
                fprintf(stderr, "ERROR: %s has no %s\n", KILN_CLI_LIBARCHIVE, #f); \
                exit(1);                                                           \
        }
        KILN_CLI_ARCHIVE_FUNCS(X)
#undef X
}

const struct kiln_cli_archive_api *kiln_cli_archive(void)
{
        (void) pthread_once(&once, load);
        return &api;
}
