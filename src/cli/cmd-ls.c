/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln ls: every builder, with its one node under it, as buildx lists them:
 *
 *   NAME/NODE        DRIVER/ENDPOINT                      STATUS    BUILDKIT   PLATFORMS
 *   mybuilder*       local
 *    \_ mybuilder0    \_ unix:///.../kilnd.sock            running   0.1.0      linux/amd64
 *   default          local
 *    \_ default0      \_ unix:///.../kilnd.sock            inactive
 *
 * The status is asked of each daemon (GET /v1/info), of all of them at once
 * and within one --timeout for the whole listing, as buildx does; nothing
 * is started and nothing is written.
 */
#include <pthread.h>

#include "base/buf.h"
#include "builder.h"
#include "cli.h"

/* At most this many platform groups in the table (buildx's 4). */
#define PLATFORM_GROUPS 4u
/* At most this many builders are asked at the same time. */
#define PROBE_THREADS_MAX 16u

enum {
        OPT_FORMAT,
        OPT_NO_TRUNC,
        OPT_TIMEOUT,
};

static const struct kiln_cli_option options[] = {
        [OPT_FORMAT] = { "format", 0, KILN_CLI_OPTION_STRING,
                         "Format the output: \"table\", or \"json\" (one object per line)", "table",
                         false },
        [OPT_NO_TRUNC] = { "no-trunc", 0, KILN_CLI_OPTION_BOOL, "Don't truncate output", NULL,
                           false },
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "Override the default timeout for loading builder status", "20s", false },
};

struct row {
        char *name;
        struct kiln_cli_builder *b; /* NULL when it could not be loaded */
        struct kiln_error *load_err;
        struct kiln_cli_status st;
};

static const char **info_platforms(json_t *info, size_t *ret_n)
{
        json_t *a = json_object_get(
                json_object_get(json_object_get(json_object_get(info, "config"), "worker"), "oci"),
                "platforms");
        const char **v;
        json_t *x;
        size_t i, n = 0;

        *ret_n = 0;
        if (!json_is_array(a))
                return NULL;
        v = kiln_xcalloc(json_array_size(a) + 1, sizeof(char *));
        for (i = 0; i < json_array_size(a); i++) {
                x = json_array_get(a, i);
                if (json_is_string(x))
                        v[n++] = json_string_value(x);
        }
        *ret_n = n;
        return v;
}

static const char *info_version(json_t *info)
{
        json_t *v = json_object_get(info, "version");

        return json_is_string(v) ? json_string_value(v) : "";
}

static void print_table(struct row *rows, size_t n, const char *current, bool trunc)
{
        struct kiln_buf t = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_free_ char *aligned = NULL;
        bool errors = false;

        (void) kiln_buf_puts(&t, "NAME/NODE\tDRIVER/ENDPOINT\tSTATUS\tBUILDKIT\tPLATFORMS\n");
        for (size_t i = 0; i < n; i++) {
                struct row *r = &rows[i];
                const char *star = streq(r->name, current) ? "*" : "";
                _cleanup_free_ char *platforms = NULL;
                const char **pv;
                size_t pn;

                if (!r->b) {
                        (void) kiln_buf_printf(&t, "%s%s\t\terror\t\t\n", r->name, star);
                        errors = true;
                        continue;
                }
                (void) kiln_buf_printf(&t, "%s%s\t%s\t\t\t\n", r->name, star,
                                       kiln_cli_driver_kind_to_string(r->b->driver));
                pv = info_platforms(r->st.info, &pn);
                platforms = kiln_cli_platforms_format(pv, pn, trunc, PLATFORM_GROUPS);
                free(pv);
                (void) kiln_buf_printf(&t, " \\_ %s\t \\_ %s\t%s\t%s\t%s\n", r->b->node,
                                       r->b->endpoint, kiln_cli_status_kind_to_string(r->st.kind),
                                       r->st.info ? info_version(r->st.info) : "", platforms);
                if (r->st.kind == KILN_CLI_STATUS_ERROR)
                        errors = true;
        }
        aligned = kiln_cli_tabs_align(t.data, 10, 3);
        kiln_buf_release(&t);
        fputs(aligned, stdout);

        if (!errors)
                return;
        /* As buildx: what went wrong, after the table, on stderr. */
        fflush(stdout);
        fputc('\n', stderr);
        for (size_t i = 0; i < n; i++) {
                struct row *r = &rows[i];

                if (!r->b)
                        fprintf(stderr, "Cannot load builder %s: %s\n", r->name,
                                kiln_error_message(r->load_err));
                else if (r->st.kind == KILN_CLI_STATUS_ERROR)
                        fprintf(stderr, "Failed to get status for %s (%s): %s\n", r->name,
                                r->b->node, kiln_error_message(r->st.err));
        }
}

static int print_json(struct row *rows, size_t n, const char *current)
{
        for (size_t i = 0; i < n; i++) {
                struct row *r = &rows[i];
                _cleanup_free_ char *line = NULL;
                json_t *o, *node, *nodes, *platforms;
                const char **pv;
                size_t pn;

                o = json_pack("{s:s, s:b}", "Name", r->name, "Current", streq(r->name, current));
                if (!o)
                        return -ENOMEM;
                if (!r->b) {
                        json_object_set_new(o, "Error",
                                            json_string(kiln_error_message(r->load_err)));
                } else {
                        platforms = json_array();
                        pv = info_platforms(r->st.info, &pn);
                        for (size_t k = 0; k < pn; k++)
                                json_array_append_new(platforms, json_string(pv[k]));
                        free(pv);
                        node = json_pack("{s:s, s:s, s:s, s:o}", "Name", r->b->node, "Endpoint",
                                         r->b->endpoint, "Status",
                                         kiln_cli_status_kind_to_string(r->st.kind), "Platforms",
                                         platforms);
                        if (node && r->st.info)
                                json_object_set_new(node, "Version",
                                                    json_string(info_version(r->st.info)));
                        if (node && r->st.kind == KILN_CLI_STATUS_ERROR)
                                json_object_set_new(node, "Err",
                                                    json_string(kiln_error_message(r->st.err)));
                        nodes = json_array();
                        json_array_append_new(nodes, node);
                        json_object_set_new(
                                o, "Driver",
                                json_string(kiln_cli_driver_kind_to_string(r->b->driver)));
                        json_object_set_new(o, "Nodes", nodes);
                }
                line = json_dumps(o, JSON_COMPACT);
                json_decref(o);
                if (!line)
                        return -ENOMEM;
                puts(line);
        }
        return 0;
}

/* The rows the probe threads share: each takes the next row not taken. */
struct probes {
        struct row *rows;
        size_t n;
        size_t next; /* under lock */
        pthread_mutex_t lock;
        uint64_t deadline_ms;
};

static void *probe_thread(void *userdata)
{
        struct probes *p = userdata;

        for (;;) {
                uint64_t now = kiln_cli_now_ms();
                struct row *r;

                pthread_mutex_lock(&p->lock);
                r = p->next < p->n ? &p->rows[p->next++] : NULL;
                pthread_mutex_unlock(&p->lock);
                if (!r)
                        return NULL;
                if (r->b)
                        /* What is left of the one timeout; a row reached
                         * after it gets its status from what answers at once. */
                        kiln_cli_builder_status(
                                r->b, p->deadline_ms > now ? p->deadline_ms - now : 1, &r->st);
        }
}

/* Fills every row's status, PROBE_THREADS_MAX at a time, all within
 * timeout_ms. */
static void probe_all(struct row *rows, size_t n, uint64_t timeout_ms)
{
        struct probes p = {
                .rows = rows,
                .n = n,
                .lock = PTHREAD_MUTEX_INITIALIZER,
                .deadline_ms = kiln_cli_now_ms() + timeout_ms,
        };
        pthread_t threads[PROBE_THREADS_MAX];
        size_t started = 0;

        while (started < n && started < PROBE_THREADS_MAX &&
               pthread_create(&threads[started], NULL, probe_thread, &p) == 0)
                started++;
        /* Without any thread, this one does the work. */
        if (started == 0)
                (void) probe_thread(&p);
        for (size_t i = 0; i < started; i++)
                (void) pthread_join(threads[i], NULL);
        pthread_mutex_destroy(&p.lock);
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_strv_freep) char **names = NULL;
        _cleanup_free_ char *current = NULL;
        const char *format = args->values[OPT_FORMAT].set ? args->values[OPT_FORMAT].s : "table";
        uint64_t timeout = kiln_cli_args_timeout_ms(args, OPT_TIMEOUT);
        struct row *rows;
        size_t n = 0;
        bool has_default = false;
        int r;

        if (!streq(format, "table") && !streq(format, "json"))
                return kiln_error_set(err, -EINVAL,
                                      "unsupported --format \"%s\": use \"table\" or \"json\"",
                                      format);
        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_list(s, &names, &n, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_current(s, &current, err);
        if (r < 0)
                return r;

        /* The others by name, then the default builder (written yet or
         * not), as buildx lists its default last. */
        rows = kiln_xcalloc(n + 1, sizeof(*rows));
        for (size_t i = 0; i < n; i++) {
                if (streq(names[i], KILN_CLI_DEFAULT_BUILDER))
                        has_default = true;
                else
                        rows[i - has_default].name = names[i];
        }
        n -= has_default;
        rows[n++].name = (char *) KILN_CLI_DEFAULT_BUILDER;

        for (size_t i = 0; i < n; i++)
                (void) kiln_cli_store_load(s, rows[i].name, &rows[i].b, &rows[i].load_err);
        probe_all(rows, n, timeout);

        if (streq(format, "json"))
                r = print_json(rows, n, current);
        else
                print_table(rows, n, current, !args->values[OPT_NO_TRUNC].b);

        for (size_t i = 0; i < n; i++) {
                kiln_cli_builder_free(rows[i].b);
                kiln_error_free(rows[i].load_err);
                kiln_cli_status_release(&rows[i].st);
        }
        free(rows);
        if (r < 0)
                return kiln_error_set(err, r, "print builders: %s", strerror(-r));
        return 0;
}

const struct kiln_cli_command kiln_cli_command_ls = {
        .name = "ls",
        .usage = "ls",
        .summary = "List builder instances",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = 0,
        .run = run,
};
