/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Scope-bound cleanup and small helpers used everywhere.
 *
 * A variable declared with _cleanup_(f) has f(&var) called when it leaves
 * scope. TAKE_PTR/TAKE_FD hand ownership out of such a variable so the
 * cleanup sees NULL/-1 and does nothing.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f)     __attribute__((cleanup(f)))
#define _cleanup_free_   _cleanup_(kiln_freep)
#define _cleanup_close_  _cleanup_(kiln_closep)
#define _cleanup_fclose_ _cleanup_(kiln_fclosep)
#define _unused_         __attribute__((unused))
#define _printf_(a, b)   __attribute__((format(printf, a, b)))
#define _noreturn_       __attribute__((noreturn))
#define _warn_unused_    __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* qsort and bsearch that take an empty array as a NULL pointer (the libc
 * functions declare it nonnull even for zero elements). */
#define qsort_safe(base, n, size, cmp)                     \
        do {                                               \
                if ((n) > 0)                               \
                        qsort((base), (n), (size), (cmp)); \
        } while (0)
#define bsearch_safe(key, base, n, size, cmp) \
        ((n) > 0 ? bsearch((key), (base), (n), (size), (cmp)) : NULL)

#define TAKE_PTR(p)                  \
        ({                           \
                typeof(p) _p_ = (p); \
                (p) = NULL;          \
                _p_;                 \
        })

#define TAKE_FD(fd)              \
        ({                       \
                int _fd_ = (fd); \
                (fd) = -1;       \
                _fd_;            \
        })

/* Defines name##p(type *p) calling func(*p) when *p is not NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func) \
        static inline void func##p(type *p)     \
        {                                       \
                if (*p)                         \
                        func(*p);               \
        }

static inline void kiln_freep(void *p)
{
        free(*(void **) p);
}

static inline void kiln_closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                (void) close(*fd);
                errno = saved;
        }
}

static inline void kiln_fclosep(FILE **f)
{
        if (*f)
                (void) fclose(*f);
}

static inline bool streq(const char *a, const char *b)
{
        return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b)
{
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

static inline bool startswith(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ASCII-only case mapping, whatever the locale: protocol and keyword text,
 * where tolower()/toupper() would follow LC_CTYPE. */
static inline char ascii_tolower(char c)
{
        return c >= 'A' && c <= 'Z' ? (char) (c + ('a' - 'A')) : c;
}

static inline char ascii_toupper(char c)
{
        return c >= 'a' && c <= 'z' ? (char) (c - ('a' - 'A')) : c;
}

/* The value of a hexadecimal digit (either case), -1 for anything else. */
static inline int ascii_hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* How many decimal digits v is written with (1 for 0). */
static inline unsigned decimal_digits(uint64_t v)
{
        unsigned d = 1;

        while (v >= 10) {
                v /= 10;
                d++;
        }
        return d;
}

/* Allocation helpers abort on out-of-memory: there is no sane recovery. */
void *kiln_xmalloc(size_t n);
void *kiln_xcalloc(size_t n, size_t size);
void *kiln_xrealloc(void *p, size_t n);
void *kiln_xreallocarray(void *p, size_t n, size_t size);
char *kiln_xstrdup(const char *s);
char *kiln_xstrndup(const char *s, size_t n);
char *kiln_xasprintf(const char *fmt, ...) _printf_(1, 2);
char *kiln_xvasprintf(const char *fmt, va_list ap) _printf_(1, 0);

/* Last, after the system headers it redefines names from. */
#include "banned.h"
