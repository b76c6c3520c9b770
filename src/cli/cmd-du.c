/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln du: GET /v1/du from the builder's daemon and print it as `docker
 * buildx du` does: the table "ID RECLAIMABLE SIZE LAST ACCESSED" (docker's
 * formatter: columns padded with three spaces, at least ten wide; a '*'
 * after the id of a mutable record and after the size of a shared one), or
 * with --verbose one block per record; then, without --filter, the totals
 * "Shared:/Private:" (when something is shared), "Reclaimable:" and
 * "Total:".
 */
#include <inttypes.h>
#include <time.h>

#include "api/disk.h"
#include "base/clock.h"
#include "builder.h"
#include "cli.h"
#include "http.h"

/* A du measures every record: it may take a while on a big store. */
#define KILN_CLI_DU_TIMEOUT_MS (30u * 60u * 1000u)

enum {
        OPT_FILTER,
        OPT_VERBOSE,
        OPT_TIMEOUT,
};

static const struct kiln_cli_option options[] = {
        [OPT_FILTER] = { "filter", 0, KILN_CLI_OPTION_STRINGS, "Provide filter values", NULL,
                         false },
        [OPT_VERBOSE] = { "verbose", 0, KILN_CLI_OPTION_BOOL, "Shorthand for \"--format=pretty\"",
                          NULL, false },
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "Override the default timeout for loading builder status", "20s", false },
};

static void last_accessed(const struct kiln_api_disk_record *r, int64_t now, struct kiln_buf *b)
{
        char d[KILN_API_HUMAN_SIZE];

        if (r->last_used_ns == 0)
                return;
        kiln_api_human_duration(now - r->last_used_ns, d);
        kiln_buf_printf(b, "%s ago", d);
}

static void print_table(const struct kiln_api_disk_record *v, size_t n, FILE *f)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_free_ char *out = NULL;
        int64_t now = kiln_realtime_ns();

        kiln_buf_puts(&b, "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n");
        for (size_t i = 0; i < n; i++) {
                char size[KILN_API_HUMAN_SIZE];

                kiln_api_human_size(v[i].size, size);
                kiln_buf_printf(&b, "%s%s\t%s\t%s%s\t", v[i].id, v[i].mutable_ ? "*" : "",
                                v[i].in_use ? "false" : "true", size, v[i].shared ? "*" : "");
                last_accessed(&v[i], now, &b);
                kiln_buf_putc(&b, '\n');
        }
        out = kiln_api_tabwriter(b.data, 10, 1, 3, ' ');
        fputs(out, f);
}

/* buildx's pretty template, one block per record and an empty line. */
static void print_verbose(const struct kiln_api_disk_record *v, size_t n, FILE *f)
{
        int64_t now = kiln_realtime_ns();

        for (size_t i = 0; i < n; i++) {
                _cleanup_(kiln_buf_release) struct kiln_buf last = KILN_BUF_INIT(256);
                char created[KILN_API_HUMAN_SIZE], size[KILN_API_HUMAN_SIZE];

                fprintf(f, "ID:           %s\n", v[i].id);
                if (v[i].n_parents > 0) {
                        fputs("Parents:\n", f);
                        for (size_t k = 0; k < v[i].n_parents; k++)
                                fprintf(f, " - %s\n", v[i].parents[k]);
                }
                kiln_api_go_time_string(v[i].created_ns, created);
                kiln_api_human_size(v[i].size, size);
                fprintf(f, "Created at:   %s\n", created);
                fprintf(f, "Mutable:      %s\n", v[i].mutable_ ? "true" : "false");
                fprintf(f, "Reclaimable:  %s\n", v[i].in_use ? "false" : "true");
                fprintf(f, "Shared:       %s\n", v[i].shared ? "true" : "false");
                fprintf(f, "Size:         %s\n", size);
                if (v[i].description && v[i].description[0])
                        fprintf(f, "Description:  %s\n", v[i].description);
                fprintf(f, "Usage count:  %" PRId64 "\n", v[i].usage_count);
                last_accessed(&v[i], now, &last);
                if (last.len > 0)
                        fprintf(f, "Last used:    %s\n", last.data);
                if (v[i].type && v[i].type[0])
                        fprintf(f, "Type:         %s\n", v[i].type);
                fputc('\n', f);
        }
}

/* buildx's printSummary. */
static void print_summary(const struct kiln_api_disk_record *v, size_t n, FILE *f)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(1024);
        _cleanup_free_ char *out = NULL;
        int64_t total = 0, reclaimable = 0, shared = 0;
        char s[KILN_API_HUMAN_SIZE];

        for (size_t i = 0; i < n; i++) {
                if (v[i].size > 0) {
                        total += v[i].size;
                        if (!v[i].in_use)
                                reclaimable += v[i].size;
                }
                if (v[i].shared)
                        shared += v[i].size;
        }
        if (shared > 0) {
                kiln_api_human_size(shared, s);
                kiln_buf_printf(&b, "Shared:\t%s\n", s);
                kiln_api_human_size(total - shared, s);
                kiln_buf_printf(&b, "Private:\t%s\n", s);
        }
        kiln_api_human_size(reclaimable, s);
        kiln_buf_printf(&b, "Reclaimable:\t%s\n", s);
        kiln_api_human_size(total, s);
        kiln_buf_printf(&b, "Total:\t%s\n", s);
        out = kiln_api_tabwriter(b.data, 1, 8, 1, '\t');
        fputs(out, f);
}

static int du_run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        const struct kiln_cli_value *v = args->values;
        _cleanup_free_ char *filter = NULL, *path = NULL;
        struct kiln_api_disk_record *recs = NULL;
        struct kiln_cli_http_target t;
        int64_t until = 0;
        size_t n = 0;
        json_t *j = NULL;
        int r;

        r = kiln_api_disk_filter_from_flags(v[OPT_FILTER].v, v[OPT_FILTER].n, &filter, &until, err);
        if (r < 0)
                return r;
        if (filter) {
                _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;

                r = kiln_api_disk_filter_parse(filter, &f, err);
                if (r < 0)
                        return r;
        }
        r = kiln_cli_builder_target(cli, kiln_cli_args_timeout_ms(args, OPT_TIMEOUT), &s, &b, err);
        if (r < 0)
                return r;
        kiln_cli_builder_http_target(b, &t);
        path = kiln_api_du_path(filter, until);
        r = kiln_cli_http_get_json(&t, path, KILN_CLI_DU_TIMEOUT_MS, &j, err);
        if (r < 0)
                return r;
        r = kiln_api_du_result_from_json(j, &recs, &n, err);
        json_decref(j);
        if (r < 0)
                return r;
        if (v[OPT_VERBOSE].b)
                print_verbose(recs, n, stdout);
        else
                print_table(recs, n, stdout);
        if (v[OPT_FILTER].n == 0)
                print_summary(recs, n, stdout);
        fflush(stdout);
        for (size_t i = 0; i < n; i++)
                kiln_api_disk_record_release(&recs[i]);
        free(recs);
        return 0;
}

const struct kiln_cli_command kiln_cli_command_du = {
        .name = "du",
        .usage = "du",
        .summary = "Disk usage",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .builder_option = true,
        .run = du_run,
};
