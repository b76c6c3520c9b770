/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "error.h"

_printf_(4, 0) static int error_setv(struct kiln_error **err, int code, char *prefix,
                                     const char *fmt, va_list ap)
{
        _cleanup_free_ char *msg = NULL;
        struct kiln_error *e;

        if (code >= 0)
                code = -EIO;
        if (!err) {
                free(prefix);
                return code;
        }
        msg = kiln_xvasprintf(fmt, ap);
        e = kiln_xcalloc(1, sizeof(*e));
        e->code = code;
        if (prefix) {
                e->message = kiln_xasprintf("%s%s", prefix, msg);
                free(prefix);
        } else
                e->message = TAKE_PTR(msg);
        kiln_error_free(*err);
        *err = e;
        return code;
}

int kiln_error_set(struct kiln_error **err, int code, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = error_setv(err, code, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int kiln_error_set_at(struct kiln_error **err, int code, const char *file, unsigned line,
                      unsigned col, const char *fmt, ...)
{
        char *prefix;
        va_list ap;
        int r;

        prefix = file ? kiln_xasprintf("%s:%u:%u: ", file, line, col)
                      : kiln_xasprintf("%u:%u: ", line, col);
        va_start(ap, fmt);
        r = error_setv(err, code, prefix, fmt, ap);
        va_end(ap);
        if (err && *err) {
                (*err)->file = file ? kiln_xstrdup(file) : NULL;
                (*err)->line = line;
                (*err)->col = col;
        }
        return r;
}

int kiln_error_wrap(struct kiln_error **err, const char *fmt, ...)
{
        _cleanup_free_ char *ctx = NULL;
        char *msg;
        va_list ap;

        if (!err)
                return -EIO;
        if (!*err)
                return kiln_error_set(err, -EIO, "internal error: wrapping an unset error");
        va_start(ap, fmt);
        ctx = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        msg = kiln_xasprintf("%s: %s", ctx, (*err)->message);
        free((*err)->message);
        (*err)->message = msg;
        return (*err)->code;
}

const char *kiln_error_message(const struct kiln_error *e)
{
        return e && e->message ? e->message : "unknown error";
}

struct kiln_error *kiln_error_free(struct kiln_error *e)
{
        if (e) {
                free(e->message);
                free(e->file);
                free(e);
        }
        return NULL;
}
