/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The progress of a build, drawn from the daemon's events the way BuildKit's
 * progressui draws a SolveStatus stream (util/progress/progressui):
 *
 *   plain    printer.go's textMux: "#N name" blocks, status and log lines,
 *            "#N DONE 0.4s" / "#N CACHED" / "#N ERROR: ..." / "#N CANCELED",
 *            one vertex at a time with the same fair-split scheduling
 *   tty      a redrawn list of steps under "[+] Building 1.2s (3/5)", the
 *            last lines of the busiest running steps (" => => # ..."), the
 *            colours and the final "FINISHED" of display.go's ttyDisplay
 *   rawjson  one SolveStatus object a line, as Go's json.Encoder writes it
 *   quiet    nothing
 *
 * Each event of the stream is one update (one SolveStatus in BuildKit). The
 * state kept mirrors display.go's trace: vertexes by digest in order of
 * first start, their intervals, statuses, pending log lines and the last
 * KILN_CLI_PROGRESS_ERROR_LOGS lines for the error summary.
 *
 * Plain and tty are drawn at display.go's rate: at most once per 100 ms
 * after an update, so that a burst of updates shows as its final state, and
 * 150 ms after the last one by a refresher thread (what the rate held back
 * comes out, tty timers run). A mutex keeps the two threads apart.
 *
 * After the stream, buildx's failure report quotes the failing lines of the
 * Dockerfile as BuildKit's solver/errdefs Source.Print does.
 */
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/goquote.h"
#include "cli.h"

/* printer.go's scheduling constants, in nanoseconds. */
#define ANTI_FLICKER_NS  (5 * 1000000000LL)
#define MAX_DELAY_NS     (10 * 1000000000LL)
#define MIN_TIME_DELTA   (5 * 1000000000LL)
#define MIN_PROGRESS_PCT 0.05
/* display.go: a view is drawn at most once per DISPLAY_NS after an
 * update, and refreshed TICKER_NS after the last one (both
 * TTY_DISPLAY_RATE milliseconds when that is set). */
#define DISPLAY_NS (100 * 1000000LL)
#define TICKER_NS  (150 * 1000000LL)
/* tty: a step's output is shown in a small terminal TERM_PAD columns
 * narrower than the screen, TERM_HEIGHT_MIN rows unless
 * BUILDKIT_TTY_LOG_LINES says otherwise. */
#define TERM_PAD        10
#define TERM_HEIGHT_MIN 6
/* Bytes of a step's recent output kept for that terminal. */
#define TERM_LOG_MAX (64u << 10)
/* BuildKit's default colours (aec's blue, yellow, red; faint for output). */
#define COLOR_RUN    "\x1b[34m"
#define COLOR_CANCEL "\x1b[33m"
#define COLOR_ERROR  "\x1b[31m"
#define COLOR_FAINT  "\x1b[2m"
#define COLOR_MAX    24

static size_t term_height_initial(void);

struct interval {
        int64_t start;
        int64_t stop; /* 0: still open */
};

struct status {
        char *id;
        char *name;
        int64_t current;
        int64_t total;
        int64_t timestamp;
        int64_t started;
        int64_t completed;
        bool listed;  /* in the vertex's printed list (it has started) */
        bool updated; /* changed since last printed */
};

/* What plain printed last for a status id, whichever vertex it was under
 * (printer.go keys its throttle by id alone). */
struct last_status {
        char *id;
        int64_t current;
        int64_t timestamp;
};

struct warning {
        size_t vertex; /* index into p->vertexes */
        char *short_;
        char *url;
};

struct vertex {
        char *digest;
        char *name;
        char *error;
        bool cached;
        int64_t started;
        int64_t completed;
        bool seen_started; /* a started update was seen (display.go's prev) */
        char *prev_name;
        int64_t prev_started;
        bool prev_cached;
        char *prev_error;

        int index;    /* 0: not printed yet */
        bool listed;  /* in p->order */
        bool pending; /* in the trace's updates set */

        struct interval *intervals;
        size_t n_intervals;
        struct interval *merged;
        size_t n_merged;

        struct status **statuses; /* every status, in order of arrival */
        size_t n_statuses;
        struct status **listed_statuses; /* started ones, in order of start */
        size_t n_listed_statuses;

        char **logs; /* lines to print, "0.153 text" */
        size_t n_logs;
        size_t logs_bytes;
        bool logs_partial;
        size_t logs_offset;
        char *ring[KILN_CLI_PROGRESS_ERROR_LOGS];
        size_t ring_pos;

        size_t warning_idx; /* warnings printed so far */
        size_t n_warnings;

        int count;
        int64_t last_block_time;

        /* tty: recent output for the step's small terminal */
        char *term;
        size_t term_len;
        uint64_t term_bytes; /* all output so far */
        uint64_t term_count; /* drawings that showed it */
};

struct kiln_cli_progress {
        enum kiln_cli_progress_mode mode;
        int fd;
        const char *desc;
        const char *console_desc;
        int64_t (*now_ns)(void);
        struct kiln_buf out;

        struct vertex **vertexes; /* by arrival; looked up by digest */
        size_t n_vertexes;
        size_t *order; /* vertexes that started, in order of first start */
        size_t n_order;

        struct warning *warnings;
        size_t n_warnings;

        /* plain */
        struct last_status *last;
        size_t n_last;
        ssize_t current; /* the vertex being printed, -1: none */
        bool not_first;
        int next_index;

        /* the failure report's Dockerfile snippet */
        char *source_name;
        char *source_text;
        size_t source_len;
        char *error_file; /* the error event's location */
        unsigned error_start, error_end;

        /* display rate (plain and tty) */
        int64_t display_ns; /* < 0: every update */
        int64_t ticker_ns;
        int64_t last_display; /* 0: never */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool thread_running;
        bool stopping;
        uint64_t last_activity_ms; /* CLOCK_MONOTONIC */

        /* tty */
        int64_t start_time;
        int64_t local_diff; /* the local clock minus the daemon's */
        size_t line_count;
        bool repeated;
        bool cursor_hidden;
        /* colours of finished, cancelled and failed steps ("": none) */
        char color_run[COLOR_MAX];
        char color_cancel[COLOR_MAX];
        char color_error[COLOR_MAX];
};

enum kiln_cli_progress_mode kiln_cli_progress_mode_from_string(const char *s)
{
        static const char *const names[] = {
                [KILN_CLI_PROGRESS_AUTO] = "auto",       [KILN_CLI_PROGRESS_PLAIN] = "plain",
                [KILN_CLI_PROGRESS_TTY] = "tty",         [KILN_CLI_PROGRESS_QUIET] = "quiet",
                [KILN_CLI_PROGRESS_RAWJSON] = "rawjson",
        };

        if (!s)
                return _KILN_CLI_PROGRESS_MODE_INVALID;
        /* buildx: "none" is what progressui calls quiet. */
        if (streq(s, "none"))
                return KILN_CLI_PROGRESS_QUIET;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (enum kiln_cli_progress_mode) i;
        return _KILN_CLI_PROGRESS_MODE_INVALID;
}

/* ---- time ---- */

/* RFC 3339 with optional fraction and a Z or ±hh:mm offset, to ns since the
 * epoch; 0 when absent or malformed (a time the renderer then ignores). */
static int64_t parse_time(const char *s)
{
        struct tm tm = { 0 };
        int64_t frac = 0, t;
        int digits = 0, off = 0;
        const char *p;

        if (!s)
                return 0;
        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return 0;
        if (*p == '.') {
                p++;
                while (*p >= '0' && *p <= '9') {
                        if (digits < 9) {
                                frac = frac * 10 + (*p - '0');
                                digits++;
                        }
                        p++;
                }
                while (digits < 9) {
                        frac *= 10;
                        digits++;
                }
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if ((*p == '+' || *p == '-') && strlen(p) >= 6 && p[3] == ':') {
                int h = (p[1] - '0') * 10 + (p[2] - '0'), m = (p[4] - '0') * 10 + (p[5] - '0');

                off = (h * 60 + m) * 60 * (*p == '-' ? -1 : 1);
                p += 6;
        } else
                return 0;
        if (*p)
                return 0;
        t = (int64_t) timegm(&tm) - off;
        if (t <= 0)
                return 0;
        return t * 1000000000LL + frac;
}

/* Go's time.Time JSON form (RFC 3339, fraction without trailing zeros), UTC. */
static void format_time(int64_t ns, char out[static 40])
{
        time_t secs = (time_t) (ns / 1000000000LL);
        long frac = (long) (ns % 1000000000LL);
        struct tm tm;
        char f[16] = "";
        size_t n;

        gmtime_r(&secs, &tm);
        if (frac > 0) {
                snprintf(f, sizeof(f), ".%09ld", frac);
                n = strlen(f);
                while (n > 1 && f[n - 1] == '0')
                        f[--n] = '\0';
        }
        snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, f);
}

void kiln_cli_progress_format_bytes(int64_t n, char out[static 32])
{
        static const char *const units[] = { "B", "kB", "MB", "GB", "TB", "PB", "EB" };
        double base = 1;
        size_t i = 0;

        /* tonistiigi/units: decimal units; whole bytes below 1kB. */
        while (i + 1 < ELEMENTSOF(units) && (n < 0 ? -(double) n : (double) n) >= base * 1000) {
                base *= 1000;
                i++;
        }
        if (i == 0)
                snprintf(out, 32, "%" PRId64 "B", n);
        else
                snprintf(out, 32, "%.2f%s", (double) n / base, units[i]);
}

/* ---- output ---- */

static void out_flush(struct kiln_cli_progress *p)
{
        const char *d = p->out.data;
        size_t n = p->out.len;

        while (n > 0) {
                ssize_t w = write(p->fd, d, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        break; /* progress is best effort: a closed stderr is not an error */
                d += w;
                n -= (size_t) w;
        }
        kiln_buf_reset(&p->out);
}

_printf_(2, 3) static void out_printf(struct kiln_cli_progress *p, const char *fmt, ...)
{
        va_list ap;
        char *s;

        va_start(ap, fmt);
        s = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        if (kiln_buf_puts(&p->out, s) < 0) {
                out_flush(p);
                (void) kiln_buf_puts(&p->out, s);
        }
        free(s);
}

/* ---- intervals (display.go's mergeIntervals) ---- */

static int interval_cmp(const void *a, const void *b)
{
        const struct interval *x = a, *y = b;

        return x->start < y->start ? -1 : x->start > y->start;
}

static void vertex_merge_intervals(struct vertex *v)
{
        struct interval *s, cur;
        size_t n = 0;

        free(v->merged);
        v->merged = NULL;
        v->n_merged = 0;
        if (v->n_intervals == 0)
                return;
        s = kiln_xmalloc(v->n_intervals * sizeof(*s));
        memcpy(s, v->intervals, v->n_intervals * sizeof(*s));
        qsort(s, v->n_intervals, sizeof(*s), interval_cmp);
        v->merged = kiln_xmalloc(v->n_intervals * sizeof(*s));
        cur = s[0];
        for (size_t i = 1; i < v->n_intervals; i++) {
                struct interval next = s[i];

                if (cur.stop == 0)
                        break; /* an open interval swallows every later one */
                if (cur.stop < next.start) {
                        v->merged[n++] = cur;
                        cur = next;
                        continue;
                }
                if (next.stop == 0) {
                        cur.stop = 0;
                        break;
                }
                if (cur.stop >= next.stop)
                        continue;
                cur.stop = next.stop;
        }
        v->merged[n++] = cur;
        v->n_merged = n;
        free(s);
}

static bool vertex_started(const struct vertex *v)
{
        return v->n_merged > 0;
}

static bool vertex_completed(const struct vertex *v)
{
        return v->n_merged > 0 && v->merged[v->n_merged - 1].stop != 0;
}

static void vertex_update(struct kiln_cli_progress *p, struct vertex *v, int c)
{
        if (v->count == 0)
                v->last_block_time = p->now_ns();
        v->count += c;
}

static void vertex_free(struct vertex *v)
{
        if (!v)
                return;
        free(v->digest);
        free(v->name);
        free(v->error);
        free(v->prev_name);
        free(v->prev_error);
        free(v->term);
        free(v->intervals);
        free(v->merged);
        for (size_t i = 0; i < v->n_statuses; i++) {
                free(v->statuses[i]->id);
                free(v->statuses[i]->name);
                free(v->statuses[i]);
        }
        free(v->statuses);
        free(v->listed_statuses);
        for (size_t i = 0; i < v->n_logs; i++)
                free(v->logs[i]);
        free(v->logs);
        for (size_t i = 0; i < ELEMENTSOF(v->ring); i++)
                free(v->ring[i]);
        free(v);
}

static ssize_t vertex_find(const struct kiln_cli_progress *p, const char *digest)
{
        if (!digest)
                return -1;
        /* Newest first: events mostly concern recent vertexes. */
        for (size_t i = p->n_vertexes; i > 0; i--)
                if (streq(p->vertexes[i - 1]->digest, digest))
                        return (ssize_t) (i - 1);
        return -1;
}

static bool str_differs(const char *a, const char *b)
{
        return !streq(a ? a : "", b ? b : "");
}

/* A warning's vertex until one has started (BuildKit's lint warnings
 * belong to the Dockerfile's vertex, which a daemon may not report). */
#define NO_VERTEX SIZE_MAX

static void attach_warnings(struct kiln_cli_progress *p, size_t idx)
{
        for (size_t i = 0; i < p->n_warnings; i++)
                if (p->warnings[i].vertex == NO_VERTEX) {
                        p->warnings[i].vertex = idx;
                        p->vertexes[idx]->n_warnings++;
                }
}

/* ---- the trace (display.go's trace.update) ---- */

static void trace_vertex(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev)
{
        int64_t started = parse_time(ev->started), completed = parse_time(ev->completed);
        ssize_t idx = vertex_find(p, ev->digest);
        struct vertex *v;
        bool was_started, changed;

        if (!ev->digest)
                return;
        if (idx < 0) {
                if (p->n_vertexes >= KILN_CLI_LIMIT_PROGRESS_VERTEXES)
                        return;
                v = kiln_xcalloc(1, sizeof(*v));
                v->digest = kiln_xstrdup(ev->digest);
                p->vertexes =
                        kiln_xreallocarray(p->vertexes, p->n_vertexes + 1, sizeof(*p->vertexes));
                idx = (ssize_t) p->n_vertexes;
                p->vertexes[p->n_vertexes++] = v;
        }
        v = p->vertexes[idx];
        was_started = vertex_started(v);

        /* triggerVertexEvent: only updates with a start time count. */
        if (started != 0) {
                changed = !v->seen_started || str_differs(ev->name, v->prev_name) ||
                          started != v->prev_started || completed != 0 ||
                          ev->cached != v->prev_cached || str_differs(ev->error, v->prev_error);
                if (changed) {
                        vertex_update(p, v, 1);
                        v->pending = true;
                }
                v->seen_started = true;
                free(v->prev_name);
                v->prev_name = ev->name ? kiln_xstrdup(ev->name) : NULL;
                free(v->prev_error);
                v->prev_error = ev->error ? kiln_xstrdup(ev->error) : NULL;
                v->prev_started = started;
                v->prev_cached = ev->cached;
        }
        if (started != 0 && !was_started && !v->listed) {
                p->order = kiln_xreallocarray(p->order, p->n_order + 1, sizeof(*p->order));
                p->order[p->n_order++] = (size_t) idx;
                v->listed = true;
                if (p->start_time == 0)
                        p->start_time = started;
                if (p->local_diff == 0)
                        p->local_diff = p->now_ns() - started;
                if (p->n_order == 1)
                        attach_warnings(p, (size_t) idx);
        }
        /* A duplicate initial vertex (no start) does not reset the state. */
        if (!was_started || started != 0) {
                free(v->name);
                v->name = kiln_xstrdup(ev->name ? ev->name : "");
                free(v->error);
                v->error = ev->error && ev->error[0] ? kiln_xstrdup(ev->error) : NULL;
                v->cached = ev->cached;
                v->started = started;
                v->completed = completed;
        }
        if (started != 0) {
                size_t i;

                for (i = 0; i < v->n_intervals; i++)
                        if (v->intervals[i].start == started)
                                break;
                if (i == v->n_intervals) {
                        v->intervals = kiln_xreallocarray(v->intervals, v->n_intervals + 1,
                                                          sizeof(*v->intervals));
                        v->n_intervals++;
                }
                v->intervals[i] = (struct interval){ started, completed };
                vertex_merge_intervals(v);
        }
}

static void trace_status(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev)
{
        ssize_t idx = vertex_find(p, ev->vertex);
        struct status *s = NULL;
        struct vertex *v;
        int64_t started = parse_time(ev->started);
        bool prev_started;

        if (idx < 0 || !ev->id)
                return;
        v = p->vertexes[idx];
        for (size_t i = 0; i < v->n_statuses; i++)
                if (streq(v->statuses[i]->id, ev->id)) {
                        s = v->statuses[i];
                        break;
                }
        if (!s) {
                if (v->n_statuses >= KILN_CLI_LIMIT_PROGRESS_STATUSES)
                        return;
                s = kiln_xcalloc(1, sizeof(*s));
                s->id = kiln_xstrdup(ev->id);
                v->statuses =
                        kiln_xreallocarray(v->statuses, v->n_statuses + 1, sizeof(*v->statuses));
                v->statuses[v->n_statuses++] = s;
        }
        prev_started = s->started != 0;
        free(s->name);
        s->name = ev->name ? kiln_xstrdup(ev->name) : NULL;
        s->current = ev->current;
        s->total = ev->total;
        s->timestamp = parse_time(ev->time);
        s->started = started;
        s->completed = parse_time(ev->completed);
        if (started != 0 && !prev_started && !s->listed) {
                v->listed_statuses = kiln_xreallocarray(
                        v->listed_statuses, v->n_listed_statuses + 1, sizeof(*v->listed_statuses));
                v->listed_statuses[v->n_listed_statuses++] = s;
                s->listed = true;
        }
        s->updated = true;
        v->pending = true;
        vertex_update(p, v, 1);
}

static void trace_warning(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev)
{
        struct warning *w;

        if (p->n_warnings >= KILN_CLI_LIMIT_PROGRESS_STATUSES)
                return;
        p->warnings = kiln_xreallocarray(p->warnings, p->n_warnings + 1, sizeof(*p->warnings));
        w = &p->warnings[p->n_warnings++];
        *w = (struct warning){ .vertex = NO_VERTEX };
        /* linter.LintFormatShort */
        if (ev->line > 0)
                w->short_ = kiln_xasprintf("%s: %s (line %u)", ev->rule ? ev->rule : "",
                                           ev->message ? ev->message : "", ev->line);
        else
                w->short_ = kiln_xasprintf("%s: %s", ev->rule ? ev->rule : "",
                                           ev->message ? ev->message : "");
        w->url = ev->url ? kiln_xstrdup(ev->url) : NULL;
        if (p->n_order > 0) {
                attach_warnings(p, p->order[0]);
                vertex_update(p, p->vertexes[p->order[0]], 1);
        }
}

static void ring_push(struct vertex *v, const char *line, bool advance)
{
        free(v->ring[v->ring_pos]);
        v->ring[v->ring_pos] = kiln_xstrdup(line);
        if (advance)
                v->ring_pos = (v->ring_pos + 1) % ELEMENTSOF(v->ring);
}

static void vertex_drop_oldest_log(struct vertex *v)
{
        v->logs_bytes -= strlen(v->logs[0]);
        free(v->logs[0]);
        memmove(v->logs, v->logs + 1, (v->n_logs - 1) * sizeof(*v->logs));
        v->n_logs--;
        v->logs_offset = 0;
}

static void trace_log(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev)
{
        ssize_t idx = vertex_find(p, ev->vertex);
        const uint8_t *d = ev->data;
        size_t n = ev->len, piece = 0;
        struct vertex *v;
        int64_t ts = parse_time(ev->time);

        if (idx < 0 || n == 0)
                return;
        v = p->vertexes[idx];
        if (p->mode == KILN_CLI_PROGRESS_TTY) {
                size_t keep = n < TERM_LOG_MAX ? n : TERM_LOG_MAX;

                v->term_bytes += n;
                v->term = kiln_xrealloc(v->term, v->term_len + keep);
                memcpy(v->term + v->term_len, d + (n - keep), keep);
                v->term_len += keep;
                if (v->term_len > TERM_LOG_MAX) {
                        /* drop whole lines from the front */
                        size_t drop = v->term_len - TERM_LOG_MAX;
                        const char *nl = memchr(v->term + drop, '\n', v->term_len - drop);

                        if (nl)
                                drop = (size_t) (nl + 1 - v->term);
                        memmove(v->term, v->term + drop, v->term_len - drop);
                        v->term_len -= drop;
                }
        }
        for (;;) {
                const uint8_t *nl = memchr(d, '\n', n);
                size_t len = nl ? (size_t) (nl - d) : n;
                char *line;

                if (len == 0 && !nl)
                        break;
                if (v->logs_partial && v->n_logs > 0 && piece == 0) {
                        char *old = v->logs[v->n_logs - 1];

                        line = kiln_xasprintf("%s%.*s", old, (int) len, (const char *) d);
                        v->logs_bytes += len;
                        free(old);
                        v->logs[v->n_logs - 1] = line;
                } else {
                        double sec = 0;
                        int prec;

                        if (vertex_started(v) && ts != 0)
                                sec = (double) (ts - v->merged[v->n_merged - 1].start) / 1e9;
                        prec = sec < 10 ? 3 : sec < 100 ? 2 : 1;
                        line = kiln_xasprintf("%.*f %.*s", prec, sec, (int) len, (const char *) d);
                        v->logs = kiln_xreallocarray(v->logs, v->n_logs + 1, sizeof(*v->logs));
                        v->logs[v->n_logs++] = line;
                        v->logs_bytes += strlen(line);
                }
                piece++;
                if (!nl) {
                        v->logs_partial = true;
                        break;
                }
                v->logs_partial = false;
                d = nl + 1;
                n -= len + 1;
                if (n == 0)
                        break;
        }
        /* A vertex that is not being printed keeps its lines until its
         * turn; a runaway one loses its oldest. */
        while (v->logs_bytes > KILN_CLI_LIMIT_PROGRESS_PENDING_LOG && v->n_logs > 1)
                vertex_drop_oldest_log(v);
        v->pending = true;
        vertex_update(p, v, 1);
}

/* ---- plain (printer.go) ---- */

static bool error_is_canceled(const char *e)
{
        static const char suffix[] = "context canceled";
        size_t n = e ? strlen(e) : 0;

        return n >= sizeof(suffix) - 1 && streq(e + n - (sizeof(suffix) - 1), suffix);
}

static struct last_status *last_status_find(struct kiln_cli_progress *p, const char *id)
{
        /* the latest added first: a status is mostly printed again soon */
        for (size_t i = p->n_last; i > 0; i--)
                if (streq(p->last[i - 1].id, id))
                        return &p->last[i - 1];
        return NULL;
}

static void plain_print_vertex(struct kiln_cli_progress *p, size_t idx)
{
        struct vertex *v = p->vertexes[idx];
        bool open_status = false;

        if (v->index == 0)
                v->index = ++p->next_index;

        if ((ssize_t) idx != p->current) {
                if (p->current >= 0) {
                        struct vertex *old = p->vertexes[p->current];

                        if (old->logs_partial)
                                out_printf(p, "\n");
                        old->logs_offset = 0;
                        old->count = 0;
                        out_printf(p, "#%d ...\n", old->index);
                }
                if (p->not_first)
                        out_printf(p, "\n");
                else {
                        if (p->desc)
                                out_printf(p, "#0 %s\n\n", p->desc);
                        p->not_first = true;
                }
                /* printer.go: names are cut only when PROGRESS_NO_TRUNC=0 */
                if (streq(getenv("PROGRESS_NO_TRUNC") ?: "", "0") && strlen(v->name) > 72)
                        out_printf(p, "#%d %.72s...\n", v->index, v->name);
                else
                        out_printf(p, "#%d %s\n", v->index, v->name);
        }

        for (size_t i = 0; i < v->n_listed_statuses; i++) {
                struct status *s = v->listed_statuses[i];
                struct last_status *last;
                char cur[32], tot[32], tm[48] = "";
                int64_t end;

                if (!s->updated)
                        continue;
                last = last_status_find(p, s->id);
                if (last && s->completed == 0) {
                        double delta = 0;

                        if (s->total > 0)
                                delta = (double) (s->current - last->current) / (double) s->total;
                        if (delta < MIN_PROGRESS_PCT &&
                            s->timestamp - last->timestamp < MIN_TIME_DELTA)
                                continue; /* dropped with the update set below */
                }
                if (!last && p->n_last < KILN_CLI_LIMIT_PROGRESS_STATUSES) {
                        p->last = kiln_xreallocarray(p->last, p->n_last + 1, sizeof(*p->last));
                        last = &p->last[p->n_last++];
                        last->id = kiln_xstrdup(s->id);
                }
                if (last) {
                        last->current = s->current;
                        last->timestamp = s->timestamp;
                }
                s->updated = false;

                end = s->completed ? s->completed : s->timestamp;
                if (s->started) {
                        double diff = (double) (end - s->started) / 1e9;

                        if (diff > 0.01)
                                snprintf(tm, sizeof(tm), " %.1fs", diff);
                }
                if (s->completed) {
                        size_t l = strlen(tm);

                        snprintf(tm + l, sizeof(tm) - l, " done");
                } else
                        open_status = true;
                if (s->total != 0) {
                        kiln_cli_progress_format_bytes(s->current, cur);
                        kiln_cli_progress_format_bytes(s->total, tot);
                        out_printf(p, "#%d %s %s / %s%s\n", v->index, s->id, cur, tot, tm);
                } else if (s->current != 0) {
                        kiln_cli_progress_format_bytes(s->current, cur);
                        out_printf(p, "#%d %s %s%s\n", v->index, s->id, cur, tm);
                } else
                        out_printf(p, "#%d %s%s\n", v->index, s->id, tm);
        }
        /* Statuses skipped by the throttle above are dropped from the
         * update set, as BuildKit resets statusUpdates. */
        for (size_t i = 0; i < v->n_listed_statuses; i++)
                v->listed_statuses[i]->updated = false;

        for (; v->warning_idx < v->n_warnings; v->warning_idx++) {
                size_t seen = 0;

                for (size_t i = 0; i < p->n_warnings; i++)
                        if (p->warnings[i].vertex == idx && seen++ == v->warning_idx) {
                                out_printf(p, "#%d WARN: %s\n", v->index, p->warnings[i].short_);
                                break;
                        }
        }

        for (size_t i = 0; i < v->n_logs; i++) {
                const char *l = v->logs[i];
                bool last = i + 1 == v->n_logs;

                if (i == 0 && v->logs_offset != 0)
                        out_printf(p, "%s",
                                   l + (v->logs_offset < strlen(l) ? v->logs_offset : strlen(l)));
                else
                        out_printf(p, "#%d %s", v->index, l);
                if (!last || !v->logs_partial)
                        out_printf(p, "\n");
                ring_push(v, l, !(last && v->logs_partial));
        }
        if (v->n_logs > 0) {
                if (v->logs_partial) {
                        char *keep = v->logs[v->n_logs - 1];

                        for (size_t i = 0; i + 1 < v->n_logs; i++)
                                free(v->logs[i]);
                        v->logs[0] = keep;
                        v->n_logs = 1;
                        v->logs_offset = strlen(keep);
                        v->logs_bytes = v->logs_offset;
                } else {
                        for (size_t i = 0; i < v->n_logs; i++)
                                free(v->logs[i]);
                        v->n_logs = 0;
                        v->logs_offset = 0;
                        v->logs_bytes = 0;
                }
        }

        p->current = (ssize_t) idx;
        if (vertex_completed(v) && !open_status) {
                p->current = -1;
                v->count = 0;
                if (v->logs_partial)
                        out_printf(p, "\n");
                if (v->error) {
                        if (error_is_canceled(v->error))
                                out_printf(p, "#%d CANCELED\n", v->index);
                        else
                                out_printf(p, "#%d ERROR: %s\n", v->index, v->error);
                } else if (v->cached)
                        out_printf(p, "#%d CACHED\n", v->index);
                else {
                        double dt = 0;

                        for (size_t i = 0; i < v->n_merged; i++)
                                dt += (double) (v->merged[i].stop - v->merged[i].start) / 1e9;
                        if (v->n_merged > 0)
                                out_printf(p, "#%d DONE %.1fs\n", v->index, dt);
                        else
                                out_printf(p, "#%d DONE\n", v->index);
                }
        }
        v->pending = false;
}

static int64_t vertex_last_stop(const struct vertex *v)
{
        return v->n_merged > 0 ? v->merged[v->n_merged - 1].stop : 0;
}

static void plain_print(struct kiln_cli_progress *p)
{
        size_t *completed, *rest, n_completed = 0, n_rest = 0;
        ssize_t current = p->current, max = -1;
        bool current_completed = false, current_in_rest = false;
        double sum = 0, max_speed = 0;
        int64_t now;

        completed = kiln_xcalloc(p->n_vertexes + 1, sizeof(size_t));
        rest = kiln_xcalloc(p->n_vertexes + 1, sizeof(size_t));
        /* Vertexes in order of first start (map order in BuildKit). */
        for (size_t k = 0; k < p->n_order; k++) {
                size_t i = p->order[k];
                struct vertex *v = p->vertexes[i];

                if (!v->pending)
                        continue;
                if (vertex_completed(v)) {
                        completed[n_completed++] = i;
                        if ((ssize_t) i == current)
                                current_completed = true;
                } else {
                        rest[n_rest++] = i;
                        if ((ssize_t) i == current)
                                current_in_rest = true;
                }
        }

        /* Completed ones first: the current one, then by completion time. */
        if (current_completed)
                plain_print_vertex(p, (size_t) current);
        for (size_t a = 1; a < n_completed; a++)
                for (size_t b = a; b > 0 && vertex_last_stop(p->vertexes[completed[b - 1]]) >
                                                    vertex_last_stop(p->vertexes[completed[b]]);
                     b--) {
                        size_t t = completed[b];

                        completed[b] = completed[b - 1];
                        completed[b - 1] = t;
                }
        for (size_t k = 0; k < n_completed; k++)
                if ((ssize_t) completed[k] != current)
                        plain_print_vertex(p, completed[k]);

        if (n_rest == 0) {
                if (current >= 0) {
                        struct vertex *v = p->vertexes[current];

                        if (vertex_started(v) && !vertex_completed(v))
                                goto out;
                }
                /* Make any open vertex the active one. */
                for (size_t k = 0; k < p->n_order; k++) {
                        struct vertex *v = p->vertexes[p->order[k]];

                        if (vertex_started(v) && !vertex_completed(v)) {
                                plain_print_vertex(p, p->order[k]);
                                break;
                        }
                }
                goto out;
        }

        if (current_in_rest)
                plain_print_vertex(p, (size_t) current);

        /* The fair split between concurrent vertexes. */
        now = p->now_ns();
        {
                size_t n_cand = n_rest;
                size_t *cand = rest;
                double *speed = kiln_xcalloc(n_cand + 1, sizeof(double));
                bool *over = kiln_xcalloc(n_cand + 1, sizeof(bool));
                int64_t *block = kiln_xcalloc(n_cand + 1, sizeof(int64_t));
                ssize_t cur_k = -1;

                if (current >= 0 && !current_in_rest) {
                        cand[n_cand++] = (size_t) current;
                }
                for (size_t k = 0; k < n_cand; k++) {
                        struct vertex *v = p->vertexes[cand[k]];
                        int64_t tm = v->last_block_time ? now - v->last_block_time : 0;
                        double secs = (double) tm / 1e9;

                        if ((ssize_t) cand[k] == current)
                                cur_k = (ssize_t) k;
                        if (v->last_block_time == 0)
                                continue;
                        block[k] = tm;
                        speed[k] = secs > 0 ? v->count / secs : (double) v->count * 1e9;
                        over[k] = tm > MAX_DELAY_NS && (ssize_t) cand[k] != current;
                        sum += speed[k];
                        if (over[k] || max < 0 || max_speed < speed[k]) {
                                max = (ssize_t) cand[k];
                                max_speed = speed[k];
                        }
                }
                if (current_completed || current < 0) {
                        if (max >= 0)
                                plain_print_vertex(p, (size_t) max);
                } else {
                        bool done = false;

                        for (size_t k = 0; k < n_cand && !done; k++)
                                if (over[k]) {
                                        plain_print_vertex(p, cand[k]);
                                        done = true;
                                }
                        if (!done && cur_k >= 0 && max >= 0) {
                                double share = sum > 0 ? speed[cur_k] / sum : 0;

                                if (share < 1.0 &&
                                    1.0 / (1.0 - share) * ((double) ANTI_FLICKER_NS / 1e9) <
                                            (double) block[cur_k] / 1e9)
                                        plain_print_vertex(p, (size_t) max);
                        }
                }
                free(speed);
                free(over);
                free(block);
        }
out:
        free(completed);
        free(rest);
}

static void print_error_logs(struct kiln_cli_progress *p)
{
        for (size_t k = 0; k < p->n_order; k++) {
                struct vertex *v = p->vertexes[p->order[k]];

                if (!v->error || error_is_canceled(v->error))
                        continue;
                out_printf(p, "------\n > %s:\n", v->name);
                /* tty keeps the step's lines; plain its last ten */
                for (size_t i = 0; i < v->n_logs; i++)
                        out_printf(p, "%s\n", v->logs[i]);
                for (size_t i = 0; i < ELEMENTSOF(v->ring); i++) {
                        const char *l = v->ring[(v->ring_pos + i) % ELEMENTSOF(v->ring)];

                        if (l)
                                out_printf(p, "%s\n", l);
                }
                out_printf(p, "------\n");
        }
}

/* ---- tty (display.go's ttyDisplay) ---- */

static void tty_size(struct kiln_cli_progress *p, int *w, int *h)
{
        struct winsize ws;

        *w = 80;
        *h = 10;
        if (ioctl(p->fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
                *w = ws.ws_col;
                *h = ws.ws_row;
        }
}

/* The rows a small terminal of cols columns shows for the vertex's recent
 * output (its vt100 view): lines wrapped at cols, a carriage return going
 * back to the start of the line, other control characters dropped; the
 * last max rows, the line being written last. *ret: malloc'd rows. */
static size_t term_rows(const struct vertex *v, size_t cols, size_t max, char ***ret)
{
        char **rows, *cur;
        size_t n = 0, col = 0, len = 0;

        if (cols == 0)
                cols = 1;
        if (max == 0)
                max = 1;
        rows = kiln_xcalloc(max + 1, sizeof(char *));
        cur = kiln_xcalloc(cols + 1, 1);
#define PUSH_ROW()                                                           \
        do {                                                                 \
                if (n == max) {                                              \
                        free(rows[0]);                                       \
                        memmove(rows, rows + 1, (max - 1) * sizeof(char *)); \
                        n--;                                                 \
                }                                                            \
                rows[n++] = kiln_xstrndup(cur, len);                         \
                memset(cur, 0, cols + 1);                                    \
                col = len = 0;                                               \
        } while (0)
        for (size_t i = 0; i < v->term_len; i++) {
                unsigned char c = (unsigned char) v->term[i];

                if (c == '\n') {
                        PUSH_ROW();
                        continue;
                }
                if (c == '\r') {
                        col = 0;
                        continue;
                }
                if (c == '\t')
                        c = ' ';
                if (c < 0x20 || c == 0x7f)
                        continue;
                if (col == cols)
                        PUSH_ROW();
                cur[col++] = (char) c;
                if (col > len)
                        len = col;
        }
        PUSH_ROW(); /* the line the cursor is on */
#undef PUSH_ROW
        free(cur);
        *ret = rows;
        return n;
}

static bool row_empty(const char *s)
{
        for (; *s; s++)
                if (*s != ' ')
                        return false;
        return true;
}

struct job {
        struct vertex *v; /* the vertex's own line; NULL for its statuses and warnings */
        char *name;
        char status[80];
        bool has_interval;
        double dt;
        bool completed;
        bool error;
        bool canceled;
        bool show_term;
};

static double interval_seconds(int64_t start, int64_t stop, int64_t now, int64_t local_diff)
{
        if (start == 0)
                return 0;
        if (stop == 0)
                return (double) (now - (start + local_diff)) / 1e9;
        return (double) (stop - start) / 1e9;
}

/* display.go's displayInfo: a job for each started vertex, its statuses
 * and its warnings. */
static size_t tty_jobs(struct kiln_cli_progress *p, int64_t now, struct job **ret)
{
        struct job *jobs = NULL;
        size_t n = 0;

        for (size_t k = 0; k < p->n_order; k++) {
                size_t idx = p->order[k];
                struct vertex *v = p->vertexes[idx];
                _cleanup_free_ char *name = kiln_xstrdup(v->name);
                struct job *j;
                size_t extra = v->n_listed_statuses + v->n_warnings + 1;

                jobs = kiln_xreallocarray(jobs, n + extra, sizeof(*jobs));
                for (char *c = name; *c; c++)
                        if (*c == '\t')
                                *c = ' ';
                j = &jobs[n++];
                *j = (struct job){ .v = v, .completed = true };
                for (size_t i = 0; i < v->n_intervals; i++)
                        if (v->intervals[i].stop == 0)
                                j->completed = false;
                j->has_interval = v->n_merged > 0;
                for (size_t i = 0; i < v->n_merged; i++)
                        j->dt += interval_seconds(v->merged[i].start, v->merged[i].stop, now,
                                                  p->local_diff);
                if (v->error && error_is_canceled(v->error)) {
                        j->canceled = true;
                        j->name = kiln_xasprintf("CANCELED %s", name);
                } else if (v->error) {
                        j->error = true;
                        j->name = kiln_xasprintf("ERROR %s", name);
                } else
                        j->name = kiln_xstrdup(name);
                if (v->cached) {
                        char *c = kiln_xasprintf("CACHED %s", j->name);

                        free(j->name);
                        j->name = c;
                }

                for (size_t i = 0; i < v->n_listed_statuses; i++) {
                        const struct status *s = v->listed_statuses[i];
                        char cur[32], tot[32];

                        j = &jobs[n++];
                        *j = (struct job){ .has_interval = true, .completed = s->completed != 0 };
                        j->name = kiln_xasprintf("=> %s", s->id);
                        j->dt = interval_seconds(s->started, s->completed, now, p->local_diff);
                        if (s->total != 0) {
                                kiln_cli_progress_format_bytes(s->current, cur);
                                kiln_cli_progress_format_bytes(s->total, tot);
                                snprintf(j->status, sizeof(j->status), "%s / %s", cur, tot);
                        } else if (s->current != 0)
                                kiln_cli_progress_format_bytes(s->current, j->status);
                }
                for (size_t i = 0; i < p->n_warnings; i++) {
                        const struct interval *last =
                                v->n_merged ? &v->merged[v->n_merged - 1] : NULL;

                        if (p->warnings[i].vertex != idx)
                                continue;
                        j = &jobs[n++];
                        /* shown as canceled, but never coloured: a warning
                         * is never "completed" */
                        *j = (struct job){ .has_interval = true, .canceled = true };
                        j->name = kiln_xasprintf("WARN: %s", p->warnings[i].short_);
                        if (last)
                                j->dt = interval_seconds(last->start, last->stop, now,
                                                         p->local_diff);
                }
        }
        *ret = jobs;
        return n;
}

/* display.go's wrapHeight: the last limit jobs, the unfinished ones that
 * were cut taking the place of the first finished ones. vis gets indexes
 * into jobs (room for n); returns their count. */
static size_t wrap_height(const struct job *jobs, size_t n, ssize_t limit, size_t *vis)
{
        size_t cut, n_inv = 0, n_vis = 0, n_re = 0, freespace, *inv, *re;
        ssize_t l;

        if (limit < 0)
                return 0;
        if (n <= (size_t) limit) {
                for (size_t i = 0; i < n; i++)
                        vis[i] = i;
                return n;
        }
        cut = n - (size_t) limit;
        inv = kiln_xcalloc(cut + 1, sizeof(*inv));
        re = kiln_xcalloc(n + 1, sizeof(*re));
        for (size_t i = 0; i < cut; i++)
                if (!jobs[i].completed)
                        inv[n_inv++] = i;
        if (n_inv == 0) {
                for (size_t i = cut; i < n; i++)
                        vis[n_vis++] = i;
                goto out;
        }
        l = (ssize_t) n_inv;
        for (size_t i = cut; i < n; i++) {
                if (!jobs[i].completed || l <= 0)
                        re[n_re++] = i;
                l--;
        }
        freespace = (n - cut) - n_re;
        for (size_t i = n_inv - freespace; i < n_inv; i++)
                vis[n_vis++] = inv[i];
        for (size_t i = 0; i < n_re; i++)
                vis[n_vis++] = re[i];
out:
        free(inv);
        free(re);
        return n_vis;
}

static size_t tty_term_height(int height)
{
        int h = height - TERM_HEIGHT_MIN - 1;

        if (h > (int) term_height_initial())
                h = (int) term_height_initial();
        if (h < TERM_HEIGHT_MIN)
                h = TERM_HEIGHT_MIN;
        return (size_t) h;
}

static int job_term_cmp(const void *a, const void *b)
{
        const struct job *x = *(struct job *const *) a, *y = *(struct job *const *) b;
        uint64_t ix = x->v->term_bytes + x->v->term_count * 50,
                 iy = y->v->term_bytes + y->v->term_count * 50;

        return ix > iy ? -1 : ix < iy;
}

static void tty_apply(struct kiln_cli_progress *p, const char *color, const char *s)
{
        if (color && color[0])
                out_printf(p, "%s%s\x1b[0m", color, s);
        else
                out_printf(p, "%s", s);
}

static void tty_draw(struct kiln_cli_progress *p, bool all)
{
        size_t total = 0, done = 0, prev = p->line_count, n_jobs, shown, line_count = 0, *vis;
        size_t th, n_cand = 0, num_in_use = 0, to_hide = 0;
        ssize_t num_free;
        int64_t now = p->now_ns();
        int width, height;
        struct job *jobs = NULL, **cand;
        _cleanup_free_ char *head = NULL, *line = NULL;

        tty_size(p, &width, &height);
        n_jobs = tty_jobs(p, now, &jobs);

        /* setupTerminals: the busiest unfinished steps show their output
         * while there is room */
        th = tty_term_height(height);
        cand = kiln_xcalloc(n_jobs + 1, sizeof(*cand));
        for (size_t i = 0; i < n_jobs; i++) {
                if (jobs[i].v && jobs[i].v->term_bytes > 0 && !jobs[i].completed)
                        cand[n_cand++] = &jobs[i];
                if (!jobs[i].completed)
                        num_in_use++;
        }
        qsort(cand, n_cand, sizeof(*cand), job_term_cmp);
        num_free = (ssize_t) height - 2 - (ssize_t) num_in_use;
        for (size_t i = 0; num_free > (ssize_t) th + 3 && i < n_cand; i++) {
                char **rows = NULL;
                size_t nr = term_rows(cand[i]->v,
                                      (size_t) (width > TERM_PAD ? width - TERM_PAD : 1), th,
                                      &rows),
                       used = 0;

                for (size_t r = 0; r < nr; r++) {
                        if (!row_empty(rows[r]))
                                used = r + 1;
                        free(rows[r]);
                }
                free(rows);
                cand[i]->show_term = true;
                to_hide += used;
                num_free -= (ssize_t) th + 3;
        }
        free(cand);
        vis = kiln_xcalloc(n_jobs + 1, sizeof(*vis));
        shown = wrap_height(jobs, n_jobs,
                            all ? (ssize_t) n_jobs : (ssize_t) height - 2 - (ssize_t) to_hide, vis);

        if (p->repeated)
                out_printf(p, "\x1b[%zuA", prev + 1);
        p->repeated = true;
        out_printf(p, "\r\x1b[?25l");
        p->cursor_hidden = true;

        for (size_t i = 0; i < p->n_vertexes; i++) {
                total++;
                if (vertex_completed(p->vertexes[i]))
                        done++;
        }
        head = kiln_xasprintf("[+] Building %.1fs (%zu/%zu) %s",
                              p->start_time ? (double) (now - (p->start_time + p->local_diff)) / 1e9
                                            : 0.0,
                              done, total, all && done > 0 && done == total ? "FINISHED" : "");
        {
                const char *r = p->console_desc ? p->console_desc : "";
                int w = (p->console_desc ? width - 1 : width) - (int) strlen(r) - 1;

                line = kiln_xasprintf("%-*s %s", w > 0 ? w : 0, head, r);
                if ((int) strlen(line) > width)
                        line[width] = '\0';
                out_printf(p, "%s\n", line);
        }

        for (size_t k = 0; k < shown; k++) {
                struct job *j = &jobs[vis[k]];
                char timer[32];
                _cleanup_free_ char *o = NULL, *aligned = NULL;
                const char *color = NULL;
                bool show_status = false;
                int left;
                double dt = j->dt;

                if (!j->has_interval)
                        continue;
                if (dt < 0.05)
                        dt = 0;
                snprintf(timer, sizeof(timer), " %3.1fs\n", dt);
                left = width - 4 - (int) strlen(timer) - 1;
                if (j->status[0] && left + (int) strlen(j->status) > 20) {
                        show_status = true;
                        left -= (int) strlen(j->status) + 1;
                }
                if (left < 12)
                        continue; /* too narrow to show progress */
                o = kiln_xasprintf(" => %.*s%s%s", left, j->name, show_status ? " " : "",
                                   show_status ? j->status : "");
                aligned = kiln_xasprintf("%-*s %s", width - (int) strlen(timer) - 1, o, timer);
                if (j->completed)
                        color = j->canceled ? p->color_cancel
                                : j->error  ? p->color_error
                                            : p->color_run;
                tty_apply(p, color, aligned);
                line_count++;
                if (j->show_term) {
                        char **rows = NULL;
                        size_t nr =
                                term_rows(j->v, (size_t) (width > TERM_PAD ? width - TERM_PAD : 1),
                                          th, &rows);

                        for (size_t r = 0; r < nr; r++) {
                                if (!row_empty(rows[r])) {
                                        _cleanup_free_ char *t =
                                                kiln_xasprintf(" => => # %s\n", rows[r]);

                                        tty_apply(p, COLOR_FAINT, t);
                                        line_count++;
                                }
                                free(rows[r]);
                        }
                        free(rows);
                        j->v->term_count++;
                }
        }
        /* Blank what the previous drawing had below. */
        if (prev > line_count) {
                for (size_t i = line_count; i < prev; i++)
                        out_printf(p, "%*s\n", width, "");
                out_printf(p, "\x1b[%zuA\r", prev - line_count);
        }
        p->line_count = line_count;
        out_printf(p, "\x1b[?25h");
        p->cursor_hidden = false;
        for (size_t i = 0; i < n_jobs; i++)
                free(jobs[i].name);
        free(jobs);
        free(vis);
}

/* ---- rawjson ---- */

/* A string as Go's encoding/json writes it (HTML characters escaped). */
static void json_str(struct kiln_buf *b, const char *s, size_t n)
{
        static const char hex[] = "0123456789abcdef";

        (void) kiln_buf_putc(b, '"');
        for (size_t i = 0; i < n;) {
                unsigned char c = (unsigned char) s[i];

                if (c >= 0x80) {
                        /* Valid UTF-8 passes (U+2028/9 escaped); anything
                         * else becomes U+FFFD. */
                        uint32_t r;
                        size_t len = kiln_utf8_decode((const unsigned char *) s + i, n - i, &r);

                        if (len == 0) {
                                (void) kiln_buf_puts(b, "\\ufffd");
                                i++;
                                continue;
                        }
                        if (r == 0x2028 || r == 0x2029)
                                (void) kiln_buf_printf(b, "\\u%04" PRIx32, r);
                        else
                                (void) kiln_buf_append(b, s + i, len);
                        i += len;
                        continue;
                }
                switch (c) {
                case '"':
                        (void) kiln_buf_puts(b, "\\\"");
                        break;
                case '\\':
                        (void) kiln_buf_puts(b, "\\\\");
                        break;
                case '\n':
                        (void) kiln_buf_puts(b, "\\n");
                        break;
                case '\r':
                        (void) kiln_buf_puts(b, "\\r");
                        break;
                case '\t':
                        (void) kiln_buf_puts(b, "\\t");
                        break;
                case '\b':
                        (void) kiln_buf_puts(b, "\\b");
                        break;
                case '\f':
                        (void) kiln_buf_puts(b, "\\f");
                        break;
                default:
                        if (c < 0x20 || c == '<' || c == '>' || c == '&') {
                                char e[7] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0 };

                                (void) kiln_buf_puts(b, e);
                        } else
                                (void) kiln_buf_putc(b, (char) c);
                }
                i++;
        }
        (void) kiln_buf_putc(b, '"');
}

static void json_key_str(struct kiln_buf *b, bool *first, const char *key, const char *s)
{
        (void) kiln_buf_printf(b, "%s\"%s\":", *first ? "" : ",", key);
        json_str(b, s, strlen(s));
        *first = false;
}

static void json_key_time(struct kiln_buf *b, bool *first, const char *key, int64_t ns)
{
        char t[40];

        /* Go's zero time.Time, for a timestamp the event did not carry */
        if (ns == 0)
                snprintf(t, sizeof(t), "0001-01-01T00:00:00Z");
        else
                format_time(ns, t);
        (void) kiln_buf_printf(b, "%s\"%s\":\"%s\"", *first ? "" : ",", key, t);
        *first = false;
}

static void json_key_b64(struct kiln_buf *b, bool *first, const char *key, const void *d, size_t n)
{
        _cleanup_free_ char *enc = kiln_api_base64_encode(d, n);

        (void) kiln_buf_printf(b, "%s\"%s\":\"%s\"", *first ? "" : ",", key, enc ? enc : "");
        *first = false;
}

static void rawjson_event(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev)
{
        struct kiln_buf *b = &p->out;
        bool first = true;

        if (ev->type == KILN_API_BUILD_EVENT_VERTEX) {
                int64_t started = parse_time(ev->started), completed = parse_time(ev->completed);

                if (!ev->digest)
                        return;
                (void) kiln_buf_puts(b, "{\"vertexes\":[{");
                json_key_str(b, &first, "digest", ev->digest);
                if (ev->n_inputs > 0) {
                        (void) kiln_buf_puts(b, ",\"inputs\":[");
                        for (size_t i = 0; i < ev->n_inputs; i++) {
                                if (i > 0)
                                        (void) kiln_buf_putc(b, ',');
                                json_str(b, ev->inputs[i], strlen(ev->inputs[i]));
                        }
                        (void) kiln_buf_putc(b, ']');
                }
                if (ev->name && ev->name[0])
                        json_key_str(b, &first, "name", ev->name);
                if (started)
                        json_key_time(b, &first, "started", started);
                if (completed)
                        json_key_time(b, &first, "completed", completed);
                if (ev->cached)
                        (void) kiln_buf_puts(b, ",\"cached\":true");
                if (ev->error && ev->error[0])
                        json_key_str(b, &first, "error", ev->error);
                (void) kiln_buf_puts(b, "}]}\n");
        } else if (ev->type == KILN_API_BUILD_EVENT_STATUS) {
                int64_t started = parse_time(ev->started), completed = parse_time(ev->completed);

                (void) kiln_buf_puts(b, "{\"statuses\":[{");
                json_key_str(b, &first, "id", ev->id ? ev->id : "");
                if (ev->vertex && ev->vertex[0])
                        json_key_str(b, &first, "vertex", ev->vertex);
                if (ev->name && ev->name[0])
                        json_key_str(b, &first, "name", ev->name);
                if (ev->total != 0)
                        (void) kiln_buf_printf(b, ",\"total\":%" PRId64, ev->total);
                (void) kiln_buf_printf(b, ",\"current\":%" PRId64, ev->current);
                json_key_time(b, &first, "timestamp", parse_time(ev->time));
                if (started)
                        json_key_time(b, &first, "started", started);
                if (completed)
                        json_key_time(b, &first, "completed", completed);
                (void) kiln_buf_puts(b, "}]}\n");
        } else if (ev->type == KILN_API_BUILD_EVENT_LOG) {
                (void) kiln_buf_puts(b, "{\"logs\":[{");
                if (ev->vertex && ev->vertex[0])
                        json_key_str(b, &first, "vertex", ev->vertex);
                if (ev->stream != 0) {
                        (void) kiln_buf_printf(b, "%s\"stream\":%d", first ? "" : ",", ev->stream);
                        first = false;
                }
                json_key_b64(b, &first, "data", ev->data ? (const void *) ev->data : "", ev->len);
                json_key_time(b, &first, "timestamp", parse_time(ev->time));
                (void) kiln_buf_puts(b, "}]}\n");
        } else if (ev->type == KILN_API_BUILD_EVENT_WARNING) {
                const struct warning *w;

                if (p->n_warnings == 0)
                        return;
                w = &p->warnings[p->n_warnings - 1];
                (void) kiln_buf_puts(b, "{\"warnings\":[{");
                if (w->vertex != NO_VERTEX)
                        json_key_str(b, &first, "vertex", p->vertexes[w->vertex]->digest);
                (void) kiln_buf_printf(b, "%s\"level\":1", first ? "" : ",");
                first = false;
                json_key_b64(b, &first, "short", w->short_, strlen(w->short_));
                if (w->url && w->url[0])
                        json_key_str(b, &first, "url", w->url);
                (void) kiln_buf_puts(b, "}]}\n");
        } else
                return;
        out_flush(p);
}

/* ---- the renderer ---- */

static size_t term_height_initial(void)
{
        const char *e = getenv("BUILDKIT_TTY_LOG_LINES");
        char *end;
        long v;

        if (!e || !e[0])
                return TERM_HEIGHT_MIN;
        errno = 0;
        v = strtol(e, &end, 10);
        if (errno || *end || v <= 0 || v > 1000)
                return TERM_HEIGHT_MIN;
        return (size_t) v;
}

/* One colour of BUILDKIT_COLORS: a name of aec's, or "r,g,b" (an 8-bit
 * colour as aec picks it). Returns false for anything else. */
static bool color_parse(const char *v, size_t n, char out[static COLOR_MAX])
{
        static const struct {
                const char *name;
                int code;
        } names[] = {
                { "default", 39 },     { "black", 30 },         { "blue", 34 },
                { "cyan", 36 },        { "green", 32 },         { "magenta", 35 },
                { "red", 31 },         { "white", 37 },         { "yellow", 33 },
                { "light-black", 90 }, { "light-blue", 94 },    { "light-cyan", 96 },
                { "light-green", 92 }, { "light-magenta", 95 }, { "light-red", 91 },
                { "light-white", 97 }, { "light-yellow", 93 },
        };
        unsigned rgb[3];
        char tail;
        char buf[32];

        if (n == 0 || n >= sizeof(buf))
                return false;
        memcpy(buf, v, n);
        buf[n] = '\0';
        for (size_t i = 0; i < n; i++)
                buf[i] = (char) tolower((unsigned char) buf[i]);
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(buf, names[i].name)) {
                        snprintf(out, COLOR_MAX, "\x1b[%dm", names[i].code);
                        return true;
                }
        if (sscanf(buf, "%u,%u,%u%c", &rgb[0], &rgb[1], &rgb[2], &tail) != 3 || rgb[0] > 255 ||
            rgb[1] > 255 || rgb[2] > 255)
                return false;
        /* aec.NewRGB8Bit: the 6x6x6 cube of the 256-colour palette */
        snprintf(out, COLOR_MAX, "\x1b[38;5;%um",
                 16 + 36 * (rgb[0] / 43) + 6 * (rgb[1] / 43) + rgb[2] / 43);
        return true;
}

/* BuildKit's colours: blue, yellow and red; none with NO_COLOR; each
 * changed by BUILDKIT_COLORS ("run=green:error=255,0,0"), entries that do
 * not parse being ignored as BuildKit ignores them (with a warning there). */
static void colors_init(struct kiln_cli_progress *p)
{
        const char *e = getenv("NO_COLOR"), *c;

        if (e && e[0])
                return;
        snprintf(p->color_run, COLOR_MAX, COLOR_RUN);
        snprintf(p->color_cancel, COLOR_MAX, COLOR_CANCEL);
        snprintf(p->color_error, COLOR_MAX, COLOR_ERROR);
        c = getenv("BUILDKIT_COLORS");
        while (c && *c) {
                const char *end = strchrnul(c, ':'), *eq = memchr(c, '=', (size_t) (end - c));
                char color[COLOR_MAX], *dst = NULL;

                if (eq && !memchr(eq + 1, '=', (size_t) (end - eq - 1)) &&
                    color_parse(eq + 1, (size_t) (end - eq - 1), color)) {
                        size_t k = (size_t) (eq - c);

                        if (k == 3 && strncasecmp(c, "run", 3) == 0)
                                dst = p->color_run;
                        else if (k == 6 && strncasecmp(c, "cancel", 6) == 0)
                                dst = p->color_cancel;
                        else if (k == 5 && strncasecmp(c, "error", 5) == 0)
                                dst = p->color_error;
                        /* "warning" is accepted: BuildKit colours nothing
                         * with it yet */
                        if (dst)
                                memcpy(dst, color, COLOR_MAX);
                }
                c = *end ? end + 1 : end;
        }
}

/* Draws what changed (plain) or the whole view (tty). Lock held. */
static void refresh(struct kiln_cli_progress *p)
{
        if (p->mode == KILN_CLI_PROGRESS_PLAIN)
                plain_print(p);
        else if (p->mode == KILN_CLI_PROGRESS_TTY)
                tty_draw(p, false);
        out_flush(p);
}

/* display.go's ticker: the view is refreshed TICKER_NS after the last
 * update, and again every TICKER_NS while nothing comes (tty timers keep
 * running, plain output held back by the display rate comes out). */
static void *refresher(void *userdata)
{
        struct kiln_cli_progress *p = userdata;
        uint64_t ticker_ms = (uint64_t) (p->ticker_ns / 1000000);

        pthread_mutex_lock(&p->lock);
        while (!p->stopping) {
                uint64_t now = kiln_cli_now_ms(), due = p->last_activity_ms + ticker_ms;
                struct timespec ts;

                if (now >= due) {
                        refresh(p);
                        p->last_activity_ms = now;
                        continue;
                }
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += (time_t) ((due - now) / 1000u);
                ts.tv_nsec += (long) ((due - now) % 1000u) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                (void) pthread_cond_timedwait(&p->cond, &p->lock, &ts);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

static void refresher_stop(struct kiln_cli_progress *p)
{
        if (!p->thread_running)
                return;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
        p->thread_running = false;
}

int kiln_cli_progress_new(const struct kiln_cli_progress_options *o, struct kiln_cli_progress **ret,
                          struct kiln_error **err)
{
        struct kiln_cli_progress *p;
        enum kiln_cli_progress_mode mode = o->mode;
        const char *rate = getenv("TTY_DISPLAY_RATE");
        pthread_condattr_t ca;

        if (mode < 0 || mode >= _KILN_CLI_PROGRESS_MODE_MAX)
                return kiln_error_set(err, -EINVAL, "invalid progress mode");
        if (mode == KILN_CLI_PROGRESS_AUTO)
                mode = isatty(o->fd) ? KILN_CLI_PROGRESS_TTY : KILN_CLI_PROGRESS_PLAIN;
        else if (mode == KILN_CLI_PROGRESS_TTY && !isatty(o->fd))
                return kiln_error_set(err, -ENOTTY, "failed to get console: %s",
                                      "provided file is not a console");
        p = kiln_xcalloc(1, sizeof(*p));
        p->mode = mode;
        p->fd = o->fd;
        p->desc = o->desc;
        p->console_desc = o->console_desc;
        p->now_ns = o->now_ns ? o->now_ns : kiln_realtime_ns;
        p->out = KILN_BUF_INIT(1u << 20);
        p->current = -1;
        colors_init(p);
        p->display_ns = DISPLAY_NS;
        p->ticker_ns = TICKER_NS;
        if (rate && rate[0]) {
                char *end;
                long long ms;

                errno = 0;
                ms = strtoll(rate, &end, 10);
                if (!errno && !*end && ms >= 0 && ms <= 3600 * 1000) {
                        p->display_ns = ms * 1000000LL;
                        p->ticker_ns = ms > 0 ? ms * 1000000LL : TICKER_NS;
                }
        }
        if (o->display_every_update)
                p->display_ns = -1;

        pthread_mutex_init(&p->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->cond, &ca);
        pthread_condattr_destroy(&ca);
        /* The real clock only: a test's clock does not move by itself. */
        if (!o->now_ns && !o->display_every_update &&
            (mode == KILN_CLI_PROGRESS_PLAIN || mode == KILN_CLI_PROGRESS_TTY)) {
                sigset_t all, old;

                /* Signals stay with the thread that waits on the daemon. */
                sigfillset(&all);
                pthread_sigmask(SIG_BLOCK, &all, &old);
                p->last_activity_ms = kiln_cli_now_ms();
                p->thread_running = pthread_create(&p->thread, NULL, refresher, p) == 0;
                pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
        *ret = p;
        return 0;
}

struct kiln_cli_progress *kiln_cli_progress_free(struct kiln_cli_progress *p)
{
        if (!p)
                return NULL;
        refresher_stop(p);
        if (p->cursor_hidden)
                out_printf(p, "\x1b[?25h");
        out_flush(p);
        kiln_buf_release(&p->out);
        for (size_t i = 0; i < p->n_vertexes; i++)
                vertex_free(p->vertexes[i]);
        free(p->vertexes);
        free(p->order);
        for (size_t i = 0; i < p->n_warnings; i++) {
                free(p->warnings[i].short_);
                free(p->warnings[i].url);
        }
        free(p->warnings);
        for (size_t i = 0; i < p->n_last; i++)
                free(p->last[i].id);
        free(p->last);
        free(p->source_name);
        free(p->source_text);
        free(p->error_file);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

enum kiln_cli_progress_mode kiln_cli_progress_mode(const struct kiln_cli_progress *p)
{
        return p->mode;
}

/* display.go's limiter: one drawing per display_ns, the first at once. */
static bool display_allow(struct kiln_cli_progress *p)
{
        int64_t now;

        if (p->display_ns < 0)
                return true;
        now = p->now_ns();
        if (p->last_display != 0 && now - p->last_display < p->display_ns)
                return false;
        p->last_display = now;
        return true;
}

void kiln_cli_progress_event(struct kiln_cli_progress *p, const struct kiln_api_build_event *ev)
{
        pthread_mutex_lock(&p->lock);
        if (ev->type == KILN_API_BUILD_EVENT_VERTEX)
                trace_vertex(p, ev);
        else if (ev->type == KILN_API_BUILD_EVENT_STATUS)
                trace_status(p, ev);
        else if (ev->type == KILN_API_BUILD_EVENT_LOG)
                trace_log(p, ev);
        else if (ev->type == KILN_API_BUILD_EVENT_ERROR) {
                free(p->error_file);
                p->error_file = NULL;
                p->error_start = p->error_end = 0;
                if (ev->source_file && ev->source_start > 0) {
                        p->error_file = kiln_xstrdup(ev->source_file);
                        p->error_start = ev->source_start;
                        p->error_end = ev->source_end;
                }
                goto out;
        } else if (ev->type == KILN_API_BUILD_EVENT_WARNING) {
                trace_warning(p, ev);
                /* A warning marks no update: it shows with its vertex's next
                 * block, unless that vertex is the one being printed. */
                if (p->n_order > 0 && p->current == (ssize_t) p->order[0])
                        p->vertexes[p->order[0]]->pending = true;
        } else
                goto out;

        if (p->mode == KILN_CLI_PROGRESS_PLAIN || p->mode == KILN_CLI_PROGRESS_TTY) {
                if (display_allow(p))
                        refresh(p);
                p->last_activity_ms = kiln_cli_now_ms();
        } else if (p->mode == KILN_CLI_PROGRESS_RAWJSON)
                rawjson_event(p, ev);
out:
        pthread_mutex_unlock(&p->lock);
}

void kiln_cli_progress_done(struct kiln_cli_progress *p)
{
        refresher_stop(p);
        if (p->mode == KILN_CLI_PROGRESS_PLAIN) {
                plain_print(p);
                print_error_logs(p);
        } else if (p->mode == KILN_CLI_PROGRESS_TTY) {
                tty_draw(p, true);
                print_error_logs(p);
        }
        out_flush(p);
}

size_t kiln_cli_progress_n_warnings(const struct kiln_cli_progress *p)
{
        return p->n_warnings;
}

void kiln_cli_progress_print_warnings(const struct kiln_cli_progress *p, FILE *f, bool verbose)
{
        if (p->n_warnings == 0 || p->mode == KILN_CLI_PROGRESS_QUIET ||
            p->mode == KILN_CLI_PROGRESS_RAWJSON)
                return;
        /* yellow whatever f is: buildx applies the colour unconditionally */
        fprintf(f, "\n \x1b[33m");
        if (p->n_warnings == 1)
                fprintf(f, "1 warning found");
        else
                fprintf(f, "%zu warnings found", p->n_warnings);
        if (!verbose)
                fprintf(f, " (use kiln --debug to expand)");
        fprintf(f, ":\n\x1b[0m");
        for (size_t i = 0; i < p->n_warnings; i++) {
                fprintf(f, " - %s\n", p->warnings[i].short_);
                if (!verbose)
                        continue;
                if (p->warnings[i].url && p->warnings[i].url[0])
                        fprintf(f, "More info: %s\n", p->warnings[i].url);
                fprintf(f, "\n");
        }
        fflush(f);
}

json_t *kiln_cli_progress_warnings_json(const struct kiln_cli_progress *p)
{
        json_t *a;

        if (p->n_warnings == 0)
                return NULL;
        a = json_array();
        if (!a)
                return NULL;
        for (size_t i = 0; i < p->n_warnings; i++) {
                const struct warning *w = &p->warnings[i];
                _cleanup_free_ char *s = kiln_api_base64_encode(w->short_, strlen(w->short_));
                json_t *o = json_object();

                if (!o || !s) {
                        json_decref(o);
                        json_decref(a);
                        return NULL;
                }
                if (w->vertex != NO_VERTEX)
                        (void) json_object_set_new(o, "vertex",
                                                   json_string(p->vertexes[w->vertex]->digest));
                (void) json_object_set_new(o, "level", json_integer(1));
                (void) json_object_set_new(o, "short", json_string(s));
                if (w->url && w->url[0])
                        (void) json_object_set_new(o, "url", kiln_api_json_string(w->url));
                (void) json_array_append_new(a, o);
        }
        return a;
}

/* ---- the failure report's snippet (solver/errdefs Source.Print) ---- */

void kiln_cli_progress_set_source(struct kiln_cli_progress *p, const char *name, const char *text,
                                  size_t len)
{
        pthread_mutex_lock(&p->lock);
        free(p->source_name);
        free(p->source_text);
        p->source_name = name ? kiln_xstrdup(name) : NULL;
        p->source_text = NULL;
        p->source_len = 0;
        if (text) {
                if (len > KILN_CLI_LIMIT_DOCKERFILE)
                        len = KILN_CLI_LIMIT_DOCKERFILE;
                p->source_text = kiln_xmalloc(len + 1);
                memcpy(p->source_text, text, len);
                p->source_text[len] = '\0';
                p->source_len = len;
        }
        pthread_mutex_unlock(&p->lock);
}

void kiln_cli_progress_print_source(const struct kiln_cli_progress *p, FILE *f)
{
        const char **lines = NULL;
        size_t n = 0, start, end, first, last, pad, added = 0;
        const char *s, *name;

        if (!p->source_text || !p->error_file || p->error_start == 0)
                return;
        /* Go's strings.Split on "\n": a trailing newline gives an empty
         * last line, which is shown as context. */
        s = p->source_text;
        for (;;) {
                const char *nl = memchr(s, '\n', p->source_len - (size_t) (s - p->source_text));

                lines = kiln_xreallocarray(lines, n + 1, sizeof(*lines));
                lines[n++] = s;
                if (!nl)
                        break;
                s = nl + 1;
        }
        start = p->error_start;
        end = p->error_end > start ? p->error_end : start;
        if (start > n) {
                free(lines);
                return;
        }
        if (end > n)
                end = n;
        /* Two lines of context around a range, four around a single line;
         * each round takes one before and one after while there are. */
        pad = end == start ? 4 : 2;
        first = start;
        last = end;
        while (added < pad) {
                if (first > 1) {
                        first--;
                        added++;
                }
                if (last != n) {
                        last++;
                        added++;
                }
                added++;
        }
        name = p->error_file[0] ? p->error_file : p->source_name ? p->source_name : "Dockerfile";
        fprintf(f, "%s:%zu\n--------------------\n", name, start);
        for (size_t i = first; i <= last; i++) {
                const char *l = lines[i - 1];
                const char *e = i < n ? lines[i] - 1 : p->source_text + p->source_len;
                bool marked = i >= p->error_start &&
                              i <= (p->error_end > p->error_start ? p->error_end : p->error_start);

                fprintf(f, " %3zu | %s %.*s\n", i, marked ? ">>>" : "   ", (int) (e - l), l);
        }
        fprintf(f, "--------------------\n");
        fflush(f);
        free(lines);
}
