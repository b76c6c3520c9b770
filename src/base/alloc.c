/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "macro.h"

_noreturn_ static void oom(void)
{
        static const char msg[] = "kiln: out of memory\n";

        (void) !write(STDERR_FILENO, msg, sizeof(msg) - 1);
        abort();
}

void *kiln_xmalloc(size_t n)
{
        void *p = malloc(n ? n : 1);

        if (!p)
                oom();
        return p;
}

void *kiln_xcalloc(size_t n, size_t size)
{
        void *p = calloc(n ? n : 1, size ? size : 1);

        if (!p)
                oom();
        return p;
}

void *kiln_xrealloc(void *p, size_t n)
{
        p = realloc(p, n ? n : 1);
        if (!p)
                oom();
        return p;
}

void *kiln_xreallocarray(void *p, size_t n, size_t size)
{
        p = reallocarray(p, n ? n : 1, size ? size : 1);
        if (!p)
                oom();
        return p;
}

char *kiln_xstrdup(const char *s)
{
        char *p = strdup(s);

        if (!p)
                oom();
        return p;
}

char *kiln_xstrndup(const char *s, size_t n)
{
        char *p = strndup(s, n);

        if (!p)
                oom();
        return p;
}

char *kiln_xvasprintf(const char *fmt, va_list ap)
{
        char *p;

        if (vasprintf(&p, fmt, ap) < 0)
                oom();
        return p;
}

char *kiln_xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *p;

        va_start(ap, fmt);
        p = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return p;
}
