/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln pull: POST /v1/pull to the builder's daemon (started when it does
 * not run), one plain line per progress event on stderr, the digest of
 * what the reference names on stdout.
 *
 * Also the pieces `kiln imagetools` shares with it: the daemon of the
 * builder in use, and the progress lines.
 */
#include "api/api.h"
#include "builder.h"
#include "cli.h"
#include "http.h"

enum {
        OPT_PLATFORM,
};

static const struct kiln_cli_option options[] = {
        [OPT_PLATFORM] = { "platform", 0, KILN_CLI_OPTION_STRING,
                           "Set platform if server is multi-platform capable", NULL, false },
};

int kiln_cli_builder_target(struct kiln_cli *cli, uint64_t timeout_ms,
                            struct kiln_cli_store **ret_store, struct kiln_cli_builder **ret,
                            struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        int r;

        r = kiln_cli_store_open(cli->config_dir, &s, err);
        if (r < 0)
                return r;
        r = kiln_cli_store_resolve(s, cli->builder, /* materialize= */ true, &b, err);
        if (r < 0)
                return r;
        r = kiln_cli_builder_boot(s, b, timeout_ms, &st, err);
        if (r < 0)
                return r;
        *ret_store = TAKE_PTR(s);
        *ret = TAKE_PTR(b);
        return 0;
}

int kiln_cli_image_target(struct kiln_cli *cli, struct kiln_cli_store **ret_store,
                          struct kiln_cli_builder **ret, struct kiln_error **err)
{
        return kiln_cli_builder_target(cli, KILN_CLI_TIMEOUT_DEFAULT_MS, ret_store, ret, err);
}

static const char *strna(const char *s)
{
        return s ? s : "n/a";
}

/* Docker's units.HumanSize: decimal units, four significant digits. */
static void human_size(int64_t n, char out[static 32])
{
        static const char *const units[] = { "B", "kB", "MB", "GB", "TB", "PB" };
        double v = (double) n;
        size_t i = 0;

        while (v >= 1000.0 && i + 1 < ELEMENTSOF(units)) {
                v /= 1000.0;
                i++;
        }
        snprintf(out, 32, "%.4g %s", v, units[i]);
}

/* "sha256:" and twelve hex digits. */
static const char *short_digest(const char *d, char out[static 32])
{
        if (!d)
                return "-";
        snprintf(out, 32, "%.19s", d);
        return out;
}

void kiln_cli_image_event_print(const struct kiln_api_event *ev, FILE *f)
{
        char size[32] = "", dg[32];

        if (ev->size >= 0)
                human_size(ev->size, size);
        switch (ev->type) {
        case KILN_API_EVENT_RESOLVING:
                fprintf(f, "resolving %s\n", strna(ev->ref));
                break;
        case KILN_API_EVENT_RESOLVED:
                fprintf(f, "resolved %s %s\n", strna(ev->ref), strna(ev->digest));
                break;
        case KILN_API_EVENT_BLOB_STARTED:
                fprintf(f, "%s %s started\n", short_digest(ev->digest, dg), size);
                break;
        case KILN_API_EVENT_BLOB_PROGRESS:
                /* Too many for plain output: the done line follows. */
                break;
        case KILN_API_EVENT_BLOB_DONE:
                fprintf(f, "%s %s done\n", short_digest(ev->digest, dg), size);
                break;
        case KILN_API_EVENT_BLOB_CACHED:
                fprintf(f, "%s %s cached\n", short_digest(ev->digest, dg), size);
                break;
        case KILN_API_EVENT_BLOB_EXISTS:
                fprintf(f, "%s %s exists\n", short_digest(ev->digest, dg), size);
                break;
        case KILN_API_EVENT_BLOB_MOUNTED:
                fprintf(f, "%s %s mounted from %s\n", short_digest(ev->digest, dg), size,
                        strna(ev->message));
                break;
        case KILN_API_EVENT_RETRY:
                if (ev->digest)
                        fprintf(f, "%s retrying: %s\n", short_digest(ev->digest, dg),
                                strna(ev->message));
                else
                        fprintf(f, "%s retrying: %s\n", strna(ev->ref), strna(ev->message));
                break;
        case KILN_API_EVENT_BLOB_ERROR:
                fprintf(f, "%s failed: %s\n", short_digest(ev->digest, dg), strna(ev->message));
                break;
        case KILN_API_EVENT_RESULT:
        case KILN_API_EVENT_ERROR:
        case _KILN_API_EVENT_TYPE_MAX:
        case _KILN_API_EVENT_TYPE_INVALID:
                break;
        }
        fflush(f);
}

struct pull_state {
        struct kiln_api_pull_result result;
        bool have_result;
        char *error;
};

int kiln_cli_image_stream_event(json_t *j, char **error, kiln_cli_image_result_fn on_result,
                                void *userdata, struct kiln_error **err)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_api_event ev = { 0 };
        int r;

        r = kiln_api_event_from_json(j, &ev, &e);
        if (r == -EBADMSG)
                return 0; /* a type this kiln does not know */
        if (r < 0)
                return kiln_error_set(err, r, "%s", kiln_error_message(e));
        if (ev.type == KILN_API_EVENT_ERROR) {
                free(*error);
                *error = kiln_xstrdup(ev.error ? ev.error : "unknown error");
        } else if (ev.type == KILN_API_EVENT_RESULT)
                r = on_result(j, userdata, err);
        else
                kiln_cli_image_event_print(&ev, stderr);
        kiln_api_event_release(&ev);
        return r < 0 ? r : 0;
}

static int pull_result(json_t *j, void *userdata, struct kiln_error **err)
{
        struct pull_state *ps = userdata;
        int r;

        if (ps->have_result)
                kiln_api_pull_result_release(&ps->result);
        ps->have_result = false;
        r = kiln_api_pull_result_from_json(j, &ps->result, err);
        if (r >= 0)
                ps->have_result = true;
        return r;
}

static int on_event(json_t *j, void *userdata, struct kiln_error **err)
{
        struct pull_state *ps = userdata;

        return kiln_cli_image_stream_event(j, &ps->error, pull_result, ps, err);
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_free_ char *body = NULL;
        struct kiln_api_pull_request req = {
                .ref = args->pos[0],
                .platform = (char *) args->values[OPT_PLATFORM].s,
        };
        struct pull_state ps = { 0 };
        struct kiln_cli_http_target t;
        json_t *j = NULL;
        size_t len;
        int r;

        r = kiln_cli_image_target(cli, &s, &b, err);
        if (r < 0)
                return r;
        r = kiln_api_pull_request_to_json(&req, &j);
        body = r < 0 ? NULL : kiln_cli_http_json_body(j, &len);
        if (!body)
                return kiln_error_set(err, -ENOMEM, "out of memory");

        kiln_cli_builder_http_target(b, &t);
        r = kiln_cli_http_stream(&t, "POST", KILN_API_PATH_PULL, body, len, 0, on_event, &ps, err);
        if (r >= 0 && ps.error)
                r = kiln_error_set(err, -EIO, "%s", ps.error);
        else if (r >= 0 && !ps.have_result)
                r = kiln_error_set(err, -EBADMSG,
                                   "pull %s: the daemon ended the stream "
                                   "without a result",
                                   args->pos[0]);
        if (r >= 0)
                printf("%s\n", ps.result.root.digest);
        if (ps.have_result)
                kiln_api_pull_result_release(&ps.result);
        free(ps.error);
        return r < 0 ? r : 0;
}

const struct kiln_cli_command kiln_cli_command_pull = {
        .name = "pull",
        .usage = "pull [OPTIONS] NAME[:TAG|@DIGEST]",
        .summary = "Download an image from a registry into the builder's store",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .min_args = 1,
        .max_args = 1,
        .builder_option = true,
        .run = run,
};
