/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * logrus-compatible logging, so that what users grep in buildkitd logs works
 * on kilnd's.
 *
 * text: time="2026-11-28T04:09:44Z" level=debug msg="do request" a=1 b="x y"
 *   time, level and msg first, the other fields sorted by key; a value is
 *   quoted with Go's %q rules exactly when logrus quotes it: when it holds a
 *   byte outside [A-Za-z0-9-._/@^+] (an empty value stays unquoted).
 * json: one object per line, keys sorted, as logrus' JSONFormatter.
 *
 * The level, format and output are the only mutable global state of kiln;
 * each line is written with one write(2) under a lock, so logging is thread
 * safe. Only daemon/ and cli/ log above debug; libraries return errors.
 */

#include <stdarg.h>
#include <stddef.h>

#include "macro.h"

enum kiln_log_level {
        KILN_LOG_PANIC,
        KILN_LOG_FATAL,
        KILN_LOG_ERROR,
        KILN_LOG_WARN,
        KILN_LOG_INFO,
        KILN_LOG_DEBUG,
        KILN_LOG_TRACE,
        _KILN_LOG_LEVEL_MAX,
        _KILN_LOG_LEVEL_INVALID = -EINVAL,
};

enum kiln_log_format {
        KILN_LOG_TEXT,
        KILN_LOG_JSON,
        _KILN_LOG_FORMAT_MAX,
        _KILN_LOG_FORMAT_INVALID = -EINVAL,
};

struct kiln_log_field {
        const char *key;
        const char *value;
};

/* logrus' names: "panic" ... "trace"; "warning" is also accepted. */
enum kiln_log_level kiln_log_level_from_string(const char *s);
const char *kiln_log_level_to_string(enum kiln_log_level l);
/* "text" or "json"; "" means text, as in buildkitd. */
enum kiln_log_format kiln_log_format_from_string(const char *s);

void kiln_log_set_level(enum kiln_log_level l);
enum kiln_log_level kiln_log_get_level(void);
void kiln_log_set_format(enum kiln_log_format f);
/* Where lines go (default 2, stderr). The fd is not owned. */
void kiln_log_set_fd(int fd);

static inline int kiln_log_enabled(enum kiln_log_level l)
{
        return l <= kiln_log_get_level();
}

/* Logs one line with n fields (any order; they are sorted). */
void kiln_log_fields(enum kiln_log_level l, const struct kiln_log_field *fields, size_t n,
                     const char *fmt, ...) _printf_(4, 5);
void kiln_log_fieldsv(enum kiln_log_level l, const struct kiln_log_field *fields, size_t n,
                      const char *fmt, va_list ap) _printf_(4, 0);

/* Formats one line into out (no trailing newline handling: it ends in '\n').
 * Exposed for tests; `now` is seconds and nanoseconds since the epoch. */
char *kiln_log_format_line(enum kiln_log_format f, enum kiln_log_level l, long long now_sec,
                           const struct kiln_log_field *fields, size_t n, const char *msg);

/* log_info("started") or log_info_f(KILN_FIELDS({"addr", a}), "listening") */
#define KILN_FIELDS(...)                                  \
        ((const struct kiln_log_field[]){ __VA_ARGS__ }), \
                ELEMENTSOF(((const struct kiln_log_field[]){ __VA_ARGS__ }))

#define log_full(l, ...)                                          \
        do {                                                      \
                if (kiln_log_enabled(l))                          \
                        kiln_log_fields(l, NULL, 0, __VA_ARGS__); \
        } while (0)
#define log_full_f(l, fields, ...)                               \
        do {                                                     \
                if (kiln_log_enabled(l))                         \
                        kiln_log_fields(l, fields, __VA_ARGS__); \
        } while (0)

#define log_error(...)   log_full(KILN_LOG_ERROR, __VA_ARGS__)
#define log_warning(...) log_full(KILN_LOG_WARN, __VA_ARGS__)
#define log_info(...)    log_full(KILN_LOG_INFO, __VA_ARGS__)
#define log_debug(...)   log_full(KILN_LOG_DEBUG, __VA_ARGS__)
#define log_trace(...)   log_full(KILN_LOG_TRACE, __VA_ARGS__)

#define log_error_f(fields, ...)   log_full_f(KILN_LOG_ERROR, fields, __VA_ARGS__)
#define log_warning_f(fields, ...) log_full_f(KILN_LOG_WARN, fields, __VA_ARGS__)
#define log_info_f(fields, ...)    log_full_f(KILN_LOG_INFO, fields, __VA_ARGS__)
#define log_debug_f(fields, ...)   log_full_f(KILN_LOG_DEBUG, fields, __VA_ARGS__)
#define log_trace_f(fields, ...)   log_full_f(KILN_LOG_TRACE, fields, __VA_ARGS__)

/* Logs at level l with an error="<strerror>" field and returns r (negative). */
int kiln_log_errno(enum kiln_log_level l, int r, const char *fmt, ...) _printf_(3, 4);
#define log_error_errno(r, ...)   kiln_log_errno(KILN_LOG_ERROR, r, __VA_ARGS__)
#define log_warning_errno(r, ...) kiln_log_errno(KILN_LOG_WARN, r, __VA_ARGS__)
