/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln prune: POST /v1/prune to the builder's daemon, as `docker buildx
 * prune` does: the confirmation prompt unless --force, then every removed
 * record as its stream reports it (buildx's table rows, or --verbose
 * blocks) and "Total:" of what was reclaimed.
 */
#include <inttypes.h>
#include <time.h>

#include "api/disk.h"
#include "base/clock.h"
#include "builder.h"
#include "cli.h"
#include "config/config.h"
#include "http.h"

/* The longest a prune stream may stay silent (removing one big record). */
#define KILN_CLI_PRUNE_IDLE_TIMEOUT_MS (30u * 60u * 1000u)
/* A prune stream's line. */
#define KILN_CLI_PRUNE_LINE_MAX (64u << 10)

enum {
        OPT_ALL,
        OPT_FILTER,
        OPT_RESERVED_SPACE,
        OPT_MIN_FREE_SPACE,
        OPT_MAX_USED_SPACE,
        OPT_VERBOSE,
        OPT_FORCE,
        OPT_TIMEOUT,
        OPT_KEEP_STORAGE,
};

static const struct kiln_cli_option options[] = {
        [OPT_ALL] = { "all", 'a', KILN_CLI_OPTION_BOOL, "Include internal/frontend images", NULL,
                      false },
        [OPT_FILTER] = { "filter", 0, KILN_CLI_OPTION_STRINGS, "Provide filter values", NULL,
                         false },
        [OPT_RESERVED_SPACE] = { "reserved-space", 0, KILN_CLI_OPTION_STRING,
                                 "Amount of disk space always allowed to keep for cache", NULL,
                                 false },
        [OPT_MIN_FREE_SPACE] = { "min-free-space", 0, KILN_CLI_OPTION_STRING,
                                 "Target amount of free disk space after pruning", NULL, false },
        [OPT_MAX_USED_SPACE] = { "max-used-space", 0, KILN_CLI_OPTION_STRING,
                                 "Maximum amount of disk space allowed to keep for cache", NULL,
                                 false },
        [OPT_VERBOSE] = { "verbose", 0, KILN_CLI_OPTION_BOOL, "Provide a more verbose output", NULL,
                          false },
        [OPT_FORCE] = { "force", 'f', KILN_CLI_OPTION_BOOL, "Do not prompt for confirmation", NULL,
                        false },
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "Override the default timeout for loading builder status", "20s", false },
        [OPT_KEEP_STORAGE] = { "keep-storage", 0, KILN_CLI_OPTION_STRING,
                               "Amount of disk space to keep for cache", NULL, true },
};

static const char normal_warning[] =
        "WARNING! This will remove all dangling build cache. Are you sure you want to continue?";
static const char all_warning[] =
        "WARNING! This will remove all build cache. Are you sure you want to continue?";

/* docker's PromptForConfirmation: "y" or "yes", any case. */
static bool confirm(const char *question)
{
        char answer[64] = "";
        size_t n;
        char *p;

        fprintf(stdout, "%s [y/N] ", question);
        fflush(stdout);
        if (!fgets(answer, sizeof(answer), stdin))
                return false;
        for (p = answer; *p == ' ' || *p == '\t'; p++)
                ;
        n = strlen(p);
        while (n > 0 &&
               (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
                p[--n] = '\0';
        for (char *c = p; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char) (*c - 'A' + 'a');
        return streq(p, "y") || streq(p, "yes");
}

/* opts.MemBytes: units.RAMInBytes. */
static int mem_bytes(const struct kiln_cli_value *v, const char *flag, int64_t *ret,
                     struct kiln_error **err)
{
        if (!v->set)
                return 0;
        if (kiln_config_parse_ram_in_bytes(v->s, ret) < 0 || *ret < 0)
                return kiln_error_set(err, -EINVAL,
                                      "invalid argument \"%s\" for \"--%s\" flag: invalid size: "
                                      "'%s'",
                                      v->s, flag, v->s);
        return 0;
}

struct prune_state {
        bool verbose;
        bool first;
        int64_t total;
        bool have_result;
        char *error;
};

static void print_verbose(const struct kiln_api_disk_record *r)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_free_ char *out = NULL;
        char created[KILN_API_HUMAN_SIZE], size[KILN_API_HUMAN_SIZE], d[KILN_API_HUMAN_SIZE];

        kiln_buf_printf(&b, "ID:\t%s\n", r->id);
        if (r->n_parents > 0) {
                kiln_buf_puts(&b, "Parent:\t");
                for (size_t i = 0; i < r->n_parents; i++)
                        kiln_buf_printf(&b, "%s%s", i ? "," : "", r->parents[i]);
                kiln_buf_putc(&b, '\n');
        }
        kiln_api_go_time_string(r->created_ns, created);
        kiln_api_human_size(r->size, size);
        kiln_buf_printf(&b, "Created at:\t%s\n", created);
        kiln_buf_printf(&b, "Mutable:\t%s\n", r->mutable_ ? "true" : "false");
        kiln_buf_printf(&b, "Reclaimable:\t%s\n", r->in_use ? "false" : "true");
        kiln_buf_printf(&b, "Shared:\t%s\n", r->shared ? "true" : "false");
        kiln_buf_printf(&b, "Size:\t%s\n", size);
        if (r->description && r->description[0])
                kiln_buf_printf(&b, "Description:\t%s\n", r->description);
        kiln_buf_printf(&b, "Usage count:\t%" PRId64 "\n", r->usage_count);
        if (r->last_used_ns) {
                kiln_api_human_duration(kiln_realtime_ns() - r->last_used_ns, d);
                kiln_buf_printf(&b, "Last used:\t%s ago\n", d);
        }
        if (r->type && r->type[0])
                kiln_buf_printf(&b, "Type:\t%s\n", r->type);
        kiln_buf_putc(&b, '\n');
        out = kiln_api_tabwriter(b.data, 1, 8, 1, '\t');
        fputs(out, stdout);
}

/* buildx's printTableRow (the header before the first row, in the same
 * tabwriter flush). */
static void print_row(struct prune_state *ps, const struct kiln_api_disk_record *r)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_free_ char *out = NULL, *id = NULL;
        char size[KILN_API_HUMAN_SIZE + 1], hs[KILN_API_HUMAN_SIZE], d[KILN_API_HUMAN_SIZE];

        if (ps->first) {
                kiln_buf_puts(&b, "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\n");
                ps->first = false;
        }
        id = kiln_xasprintf("%s%s", r->id, r->mutable_ ? "*" : "");
        kiln_api_human_size(r->size, hs);
        snprintf(size, sizeof(size), "%s%s", hs, r->shared ? "*" : "");
        kiln_buf_printf(&b, "%-40s\t%-5s\t%-10s\t", id, r->in_use ? "false" : "true", size);
        if (r->last_used_ns) {
                kiln_api_human_duration(kiln_realtime_ns() - r->last_used_ns, d);
                kiln_buf_printf(&b, "%s ago", d);
        }
        kiln_buf_putc(&b, '\n');
        out = kiln_api_tabwriter(b.data, 1, 8, 1, '\t');
        fputs(out, stdout);
        fflush(stdout);
}

static int on_event(json_t *j, void *userdata, struct kiln_error **err)
{
        struct prune_state *ps = userdata;
        const char *type = json_string_value(json_object_get(j, "type"));

        if (!type)
                return 0;
        if (streq(type, "record")) {
                struct kiln_api_disk_record r = { 0 };
                int rr;

                rr = kiln_api_disk_record_from_json(json_object_get(j, "record"), &r, err);
                if (rr < 0)
                        return rr;
                ps->total += r.size;
                if (ps->verbose)
                        print_verbose(&r);
                else
                        print_row(ps, &r);
                kiln_api_disk_record_release(&r);
        } else if (streq(type, "result"))
                ps->have_result = true;
        else if (streq(type, "error")) {
                const char *e = json_string_value(json_object_get(j, "error"));

                free(ps->error);
                ps->error = kiln_xstrdup(e ? e : "unknown error");
        }
        return 0;
}

static int prune_run(struct kiln_cli *cli, const struct kiln_cli_args *args,
                     struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_api_prune_request_release) struct kiln_api_prune_request req = { 0 };
        const struct kiln_cli_value *v = args->values;
        _cleanup_free_ char *body = NULL, *total_text = NULL;
        struct prune_state ps = { .verbose = v[OPT_VERBOSE].b, .first = true };
        struct kiln_cli_http_target t;
        char total[KILN_API_HUMAN_SIZE + 16];
        char hs[KILN_API_HUMAN_SIZE];
        json_t *j = NULL;
        size_t len;
        int r;

        if (v[OPT_KEEP_STORAGE].set)
                fprintf(stderr, "Flag --keep-storage has been deprecated, keep-storage flag has "
                                "been changed to reserved-space\n");
        r = kiln_api_disk_filter_from_flags(v[OPT_FILTER].v, v[OPT_FILTER].n, &req.filter,
                                            &req.keep_duration_ns, err);
        if (r >= 0 && req.filter) {
                _cleanup_(kiln_api_disk_filter_freep) struct kiln_api_disk_filter *f = NULL;

                r = kiln_api_disk_filter_parse(req.filter, &f, err);
        }
        if (r >= 0)
                r = mem_bytes(&v[OPT_KEEP_STORAGE], "keep-storage", &req.reserved_space, err);
        if (r >= 0)
                r = mem_bytes(&v[OPT_RESERVED_SPACE], "reserved-space", &req.reserved_space, err);
        if (r >= 0)
                r = mem_bytes(&v[OPT_MAX_USED_SPACE], "max-used-space", &req.max_used_space, err);
        if (r >= 0)
                r = mem_bytes(&v[OPT_MIN_FREE_SPACE], "min-free-space", &req.min_free_space, err);
        if (r < 0)
                return r;
        req.all = v[OPT_ALL].b;

        if (!v[OPT_FORCE].b && !confirm(req.all ? all_warning : normal_warning))
                return 0;

        r = kiln_cli_builder_target(cli, kiln_cli_args_timeout_ms(args, OPT_TIMEOUT), &s, &b, err);
        if (r < 0)
                return r;
        kiln_cli_builder_http_target(b, &t);
        r = kiln_api_prune_request_to_json(&req, &j);
        body = r < 0 ? NULL : kiln_cli_http_json_body(j, &len);
        if (!body)
                return kiln_error_set(err, -ENOMEM, "out of memory");
        r = kiln_cli_http_stream(&t, "POST", KILN_API_PATH_PRUNE, body, len,
                                 KILN_CLI_PRUNE_IDLE_TIMEOUT_MS, on_event, &ps, err);
        if (r >= 0 && ps.error)
                r = kiln_error_set(err, -EIO, "%s", ps.error);
        else if (r >= 0 && !ps.have_result)
                r = kiln_error_set(err, -EBADMSG,
                                   "prune: the daemon ended the stream without a result");
        free(ps.error);
        if (r < 0)
                return r;
        kiln_api_human_size(ps.total, hs);
        snprintf(total, sizeof(total), "Total:\t%s\n", hs);
        total_text = kiln_api_tabwriter(total, 1, 8, 1, '\t');
        fputs(total_text, stdout);
        fflush(stdout);
        return 0;
}

const struct kiln_cli_command kiln_cli_command_prune = {
        .name = "prune",
        .usage = "prune",
        .summary = "Remove build cache",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .builder_option = true,
        .run = prune_run,
};
