/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "buf.h"
#include "goquote.h"
#include "limits.h"
#include "log.h"

static const char *const level_names[_KILN_LOG_LEVEL_MAX] = {
        [KILN_LOG_PANIC] = "panic",  [KILN_LOG_FATAL] = "fatal", [KILN_LOG_ERROR] = "error",
        [KILN_LOG_WARN] = "warning", [KILN_LOG_INFO] = "info",   [KILN_LOG_DEBUG] = "debug",
        [KILN_LOG_TRACE] = "trace",
};

/* The only mutable globals of kiln; writes are serialised by log_lock. */
static enum kiln_log_level log_level = KILN_LOG_INFO;
static enum kiln_log_format log_format = KILN_LOG_TEXT;
static int log_fd = STDERR_FILENO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

enum kiln_log_level kiln_log_level_from_string(const char *s)
{
        for (int i = 0; i < _KILN_LOG_LEVEL_MAX; i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return i;
        if (strcasecmp(s, "warn") == 0)
                return KILN_LOG_WARN;
        return _KILN_LOG_LEVEL_INVALID;
}

const char *kiln_log_level_to_string(enum kiln_log_level l)
{
        if (l < 0 || l >= _KILN_LOG_LEVEL_MAX)
                return NULL;
        return level_names[l];
}

enum kiln_log_format kiln_log_format_from_string(const char *s)
{
        if (streq(s, "") || streq(s, "text"))
                return KILN_LOG_TEXT;
        if (streq(s, "json"))
                return KILN_LOG_JSON;
        return _KILN_LOG_FORMAT_INVALID;
}

void kiln_log_set_level(enum kiln_log_level l)
{
        __atomic_store_n(&log_level, l, __ATOMIC_RELAXED);
}

enum kiln_log_level kiln_log_get_level(void)
{
        return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void kiln_log_set_format(enum kiln_log_format f)
{
        __atomic_store_n(&log_format, f, __ATOMIC_RELAXED);
}

void kiln_log_set_fd(int fd)
{
        __atomic_store_n(&log_fd, fd, __ATOMIC_RELAXED);
}

/* logrus' TextFormatter.needsQuoting with its defaults. */
static bool needs_quoting(const char *v)
{
        for (const char *p = v; *p; p++) {
                char c = *p;

                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '/' || c == '@' || c == '^' ||
                      c == '+'))
                        return true;
        }
        return false;
}

static void append_text_value(struct kiln_buf *b, const char *v)
{
        if (needs_quoting(v))
                (void) kiln_buf_go_quote(b, v, strlen(v));
        else
                (void) kiln_buf_puts(b, v);
}

/* encoding/json's string encoding, HTML escaping included (logrus' default). */
static void append_json_string(struct kiln_buf *b, const char *v)
{
        const unsigned char *s = (const unsigned char *) v;
        size_t n = strlen(v), i = 0;

        (void) kiln_buf_putc(b, '"');
        while (i < n) {
                uint32_t c;
                size_t len = kiln_utf8_decode(s + i, n - i, &c);

                if (len == 0) {
                        (void) kiln_buf_puts(b, "\\ufffd");
                        i++;
                        continue;
                }
                if (c == '"' || c == '\\')
                        (void) kiln_buf_printf(b, "\\%c", (char) c);
                else if (c == '\n')
                        (void) kiln_buf_puts(b, "\\n");
                else if (c == '\r')
                        (void) kiln_buf_puts(b, "\\r");
                else if (c == '\t')
                        (void) kiln_buf_puts(b, "\\t");
                else if (c == '\b')
                        (void) kiln_buf_puts(b, "\\b");
                else if (c == '\f')
                        (void) kiln_buf_puts(b, "\\f");
                else if (c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x2028 || c == 0x2029)
                        (void) kiln_buf_printf(b, "\\u%04x", c);
                else
                        (void) kiln_buf_append(b, s + i, len);
                i += len;
        }
        (void) kiln_buf_putc(b, '"');
}

/* time.RFC3339 in local time, as logrus' FullTimestamp prints it. */
static void format_time(long long now, char *out, size_t n)
{
        time_t t = (time_t) now;
        struct tm tm;
        size_t len;
        long off;

        localtime_r(&t, &tm);
        len = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
        off = tm.tm_gmtoff / 60;
        if (off == 0)
                (void) snprintf(out + len, n - len, "Z");
        else
                (void) snprintf(out + len, n - len, "%c%02ld:%02ld", off < 0 ? '-' : '+',
                                labs(off) / 60, labs(off) % 60);
}

/* logrus renames fields that clash with its own: "msg" becomes "fields.msg". */
static const char *clash_key(const char *key)
{
        if (streq(key, "time"))
                return "fields.time";
        if (streq(key, "level"))
                return "fields.level";
        if (streq(key, "msg"))
                return "fields.msg";
        return key;
}

struct sorted_field {
        const char *key;
        const char *value;
};

static int field_cmp(const void *a, const void *b)
{
        return strcmp(((const struct sorted_field *) a)->key,
                      ((const struct sorted_field *) b)->key);
}

char *kiln_log_format_line(enum kiln_log_format f, enum kiln_log_level l, long long now_sec,
                           const struct kiln_log_field *fields, size_t n, const char *msg)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_LOG_LINE);
        _cleanup_free_ struct sorted_field *sorted = NULL;
        const char *level = kiln_log_level_to_string(l) ?: "unknown";
        char ts[64];
        size_t i, m = 0;

        format_time(now_sec, ts, sizeof(ts));
        sorted = kiln_xcalloc(n + 3, sizeof(*sorted));
        for (i = 0; i < n; i++)
                if (fields[i].key)
                        sorted[m++] = (struct sorted_field){ clash_key(fields[i].key),
                                                             fields[i].value ?: "" };

        if (f == KILN_LOG_JSON) {
                sorted[m++] = (struct sorted_field){ "level", level };
                sorted[m++] = (struct sorted_field){ "msg", msg };
                sorted[m++] = (struct sorted_field){ "time", ts };
                qsort(sorted, m, sizeof(*sorted), field_cmp);
                (void) kiln_buf_putc(&b, '{');
                for (i = 0; i < m; i++) {
                        if (i > 0)
                                (void) kiln_buf_putc(&b, ',');
                        append_json_string(&b, sorted[i].key);
                        (void) kiln_buf_putc(&b, ':');
                        append_json_string(&b, sorted[i].value);
                }
                (void) kiln_buf_putc(&b, '}');
        } else {
                qsort(sorted, m, sizeof(*sorted), field_cmp);
                (void) kiln_buf_puts(&b, "time=");
                append_text_value(&b, ts);
                (void) kiln_buf_puts(&b, " level=");
                append_text_value(&b, level);
                if (msg[0]) {
                        (void) kiln_buf_puts(&b, " msg=");
                        append_text_value(&b, msg);
                }
                for (i = 0; i < m; i++) {
                        (void) kiln_buf_putc(&b, ' ');
                        (void) kiln_buf_puts(&b, sorted[i].key);
                        (void) kiln_buf_putc(&b, '=');
                        append_text_value(&b, sorted[i].value);
                }
        }
        /* A line cut at the limit still ends with a newline. */
        if (kiln_buf_putc(&b, '\n') < 0 && b.len > 0)
                b.data[b.len - 1] = '\n';
        return kiln_buf_steal(&b);
}

void kiln_log_fieldsv(enum kiln_log_level l, const struct kiln_log_field *fields, size_t n,
                      const char *fmt, va_list ap)
{
        _cleanup_free_ char *msg = NULL, *line = NULL;
        int saved = errno;
        size_t len, off = 0;

        if (!kiln_log_enabled(l))
                return;
        msg = kiln_xvasprintf(fmt, ap);
        line = kiln_log_format_line(log_format, l, (long long) time(NULL), fields, n, msg);
        len = strlen(line);
        pthread_mutex_lock(&log_lock);
        while (off < len) {
                ssize_t w = write(log_fd, line + off, len - off);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        break;
                off += (size_t) w;
        }
        pthread_mutex_unlock(&log_lock);
        errno = saved;
}

void kiln_log_fields(enum kiln_log_level l, const struct kiln_log_field *fields, size_t n,
                     const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_log_fieldsv(l, fields, n, fmt, ap);
        va_end(ap);
}

int kiln_log_errno(enum kiln_log_level l, int r, const char *fmt, ...)
{
        struct kiln_log_field field = { "error", strerror(r < 0 ? -r : r) };
        va_list ap;

        va_start(ap, fmt);
        kiln_log_fieldsv(l, &field, 1, fmt, ap);
        va_end(ap);
        return r;
}
