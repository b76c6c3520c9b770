/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln imagetools inspect|create: buildx's `imagetools`, through the
 * builder's daemon (GET /v1/imagetools/inspect, POST /v1/imagetools/create),
 * which resolves references with its own mirrors, certificates and
 * credentials.
 *
 * `imagetools` is a row of the command table of its own; main.c hands
 * `kiln imagetools VERB` to the VERB's row.
 */

#include "api/api.h"
#include "base/buf.h"
#include "builder.h"
#include "cli.h"
#include "http.h"

/* ---- inspect ---- */

enum {
        OPT_RAW,
};

static const struct kiln_cli_option inspect_options[] = {
        [OPT_RAW] = { "raw", 0, KILN_CLI_OPTION_BOOL, "Show original, unformatted JSON manifest",
                      NULL, false },
};

/* The repository of ref, without tag or digest, as buildx names the
 * entries of an index (reference.TrimNamed). Caller frees. */
static char *trim_named(const char *ref)
{
        const char *slash = strrchr(ref, '/');
        const char *at = strchr(ref, '@');
        size_t n = at ? (size_t) (at - ref) : strlen(ref);
        const char *colon = memrchr(ref, ':', n);

        if (colon && (!slash || colon > slash))
                n = (size_t) (colon - ref);
        return strndup(ref, n);
}

static void put_platform(struct kiln_buf *out, json_t *p)
{
        const char *os = json_string_value(json_object_get(p, "os"));
        const char *arch = json_string_value(json_object_get(p, "architecture"));
        const char *variant = json_string_value(json_object_get(p, "variant"));

        (void) kiln_buf_printf(out, "%s/%s", os ? os : "unknown", arch ? arch : "unknown");
        if (variant && variant[0])
                (void) kiln_buf_printf(out, "/%s", variant);
}

/* buildx's printers.go: the root, then for an index each entry. */
static int print_inspect(const struct kiln_api_inspect *in)
{
        _cleanup_(kiln_buf_release) struct kiln_buf head = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_(kiln_buf_release) struct kiln_buf list = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_free_ char *a = NULL, *bl = NULL, *name = NULL;
        json_t *manifests = json_object_get(in->manifest, "manifests");

        (void) kiln_buf_printf(&head, "Name:\t%s\nMediaType:\t%s\nDigest:\t%s\n", in->name,
                               in->media_type, in->digest);
        if (!json_is_array(manifests)) {
                a = kiln_cli_tabs_align(head.data, 0, 1);
                fputs(a, stdout);
                return 0;
        }
        (void) kiln_buf_puts(&head, "\t\nManifests:\t\n");
        name = trim_named(in->name);
        if (!name)
                return -ENOMEM;
        for (size_t i = 0; i < json_array_size(manifests); i++) {
                json_t *m = json_array_get(manifests, i);
                const char *mt = json_string_value(json_object_get(m, "mediaType"));
                const char *dg = json_string_value(json_object_get(m, "digest"));
                json_t *p = json_object_get(m, "platform");

                if (i)
                        (void) kiln_buf_puts(&list, "\t\n");
                (void) kiln_buf_printf(&list, "  Name:\t%s@%s\n", name, dg ? dg : "");
                (void) kiln_buf_printf(&list, "  MediaType:\t%s\n", mt ? mt : "");
                if (json_is_object(p)) {
                        (void) kiln_buf_puts(&list, "  Platform:\t");
                        put_platform(&list, p);
                        (void) kiln_buf_putc(&list, '\n');
                }
        }
        a = kiln_cli_tabs_align(head.data, 0, 1);
        bl = kiln_cli_tabs_align(list.data ? list.data : "", 0, 1);
        fputs(a, stdout);
        fputs(bl, stdout);
        return 0;
}

static int inspect_run(struct kiln_cli *cli, const struct kiln_cli_args *args,
                       struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_http_response_release) struct kiln_cli_http_response resp = { 0 };
        _cleanup_(kiln_api_inspect_release) struct kiln_api_inspect in = { 0 };
        _cleanup_free_ char *path = NULL, *msg = NULL;
        bool raw = args->values[OPT_RAW].b;
        struct kiln_cli_http_target t;
        json_error_t jerr;
        json_t *j;
        char *esc;
        int r;

        r = kiln_cli_image_target(cli, &s, &b, err);
        if (r < 0)
                return r;
        esc = kiln_cli_http_escape(args->pos[0]);
        path = kiln_xasprintf("%s?ref=%s&raw=%d", KILN_API_PATH_IMAGETOOLS_INSPECT, esc, raw);
        free(esc);

        kiln_cli_builder_http_target(b, &t);
        r = kiln_cli_http_request(&t, "GET", path, NULL, 0, KILN_CLI_TIMEOUT_NONE_MS, &resp, err);
        if (r < 0)
                return r;
        if (resp.status < 200 || resp.status > 299) {
                msg = kiln_api_error_parse(resp.body.data, resp.body.len);
                return kiln_error_set(err, -EIO, "%s",
                                      msg ? msg : "the daemon refused the request");
        }
        if (raw) {
                if (resp.body.len > 0 &&
                    fwrite(resp.body.data, 1, resp.body.len, stdout) != resp.body.len)
                        return kiln_error_set(err, -EIO, "write output: %s", strerror(errno));
                return 0;
        }
        j = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, &jerr);
        if (!j)
                return kiln_error_set(err, -EBADMSG, "the daemon's answer is not JSON: %s",
                                      jerr.text);
        r = kiln_api_inspect_from_json(j, &in, err);
        json_decref(j);
        if (r < 0)
                return r;
        r = print_inspect(&in);
        if (r < 0)
                return kiln_error_set(err, r, "out of memory");
        return 0;
}

const struct kiln_cli_command kiln_cli_command_imagetools_inspect = {
        .name = "imagetools inspect",
        .usage = "imagetools inspect [OPTIONS] NAME",
        .summary = "Show details of an image in the registry",
        .options = inspect_options,
        .n_options = ELEMENTSOF(inspect_options),
        .min_args = 1,
        .max_args = 1,
        .builder_option = true,
        .run = inspect_run,
};

/* ---- create ---- */

enum {
        OPT_TAG,
};

static const struct kiln_cli_option create_options[] = {
        [OPT_TAG] = { "tag", 't', KILN_CLI_OPTION_STRINGS, "Set reference for new image", NULL,
                      false },
};

struct create_state {
        struct kiln_api_imagetools_create_result result;
        bool have_result;
        char *error;
};

static int create_result(json_t *j, void *userdata, struct kiln_error **err)
{
        struct create_state *cs = userdata;
        int r;

        if (cs->have_result)
                kiln_api_imagetools_create_result_release(&cs->result);
        cs->have_result = false;
        r = kiln_api_imagetools_create_result_from_json(j, &cs->result, err);
        if (r >= 0)
                cs->have_result = true;
        return r;
}

static int create_on_event(json_t *j, void *userdata, struct kiln_error **err)
{
        struct create_state *cs = userdata;

        return kiln_cli_image_stream_event(j, &cs->error, create_result, cs, err);
}

static int create_run(struct kiln_cli *cli, const struct kiln_cli_args *args,
                      struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_free_ char *body = NULL;
        const struct kiln_cli_value *tags = &args->values[OPT_TAG];
        struct kiln_api_imagetools_create_request req = {
                .sources = args->pos,
                .n_sources = args->n_pos,
                .tags = (char **) tags->v,
                .n_tags = tags->n,
        };
        struct create_state cs = { 0 };
        struct kiln_cli_http_target t;
        json_t *j = NULL;
        size_t len;
        int r;

        if (tags->n == 0)
                return kiln_error_set(err, -EINVAL, "no tags specified: use -t DEST");
        r = kiln_cli_image_target(cli, &s, &b, err);
        if (r < 0)
                return r;
        r = kiln_api_imagetools_create_request_to_json(&req, &j);
        body = r < 0 ? NULL : kiln_cli_http_json_body(j, &len);
        if (!body)
                return kiln_error_set(err, -ENOMEM, "out of memory");

        kiln_cli_builder_http_target(b, &t);
        r = kiln_cli_http_stream(&t, "POST", KILN_API_PATH_IMAGETOOLS_CREATE, body, len, 0,
                                 create_on_event, &cs, err);
        if (r >= 0 && cs.error)
                r = kiln_error_set(err, -EIO, "%s", cs.error);
        else if (r >= 0 && !cs.have_result)
                r = kiln_error_set(err, -EBADMSG,
                                   "imagetools create: the daemon ended the stream without a "
                                   "result");
        if (r >= 0) {
                for (size_t i = 0; i < cs.result.n_tags; i++)
                        fprintf(stderr, "pushed %s %s\n", cs.result.tags[i].ref,
                                cs.result.tags[i].digest);
                printf("%s\n", cs.result.digest);
        }
        if (cs.have_result)
                kiln_api_imagetools_create_result_release(&cs.result);
        free(cs.error);
        return r < 0 ? r : 0;
}

const struct kiln_cli_command kiln_cli_command_imagetools_create = {
        .name = "imagetools create",
        .usage = "imagetools create [OPTIONS] [SOURCE...]",
        .summary = "Create a new image based on source images",
        .options = create_options,
        .n_options = ELEMENTSOF(create_options),
        .min_args = 1,
        .max_args = KILN_API_LIMIT_IMAGETOOLS_REFS,
        .builder_option = true,
        .run = create_run,
};

/* ---- the group ---- */

static int group_run(struct kiln_cli *cli, const struct kiln_cli_args *args,
                     struct kiln_error **err)
{
        if (args->n_pos > 0)
                return kiln_error_set(err, -EINVAL,
                                      "unknown command \"%s\" for \"%s imagetools\"\n"
                                      "See '%s imagetools --help'.",
                                      args->pos[0], cli->self, cli->self);
        kiln_cli_command_help(cli, &kiln_cli_command_imagetools, stdout);
        printf("\nCommands:\n  create   %s\n  inspect  %s\n",
               kiln_cli_command_imagetools_create.summary,
               kiln_cli_command_imagetools_inspect.summary);
        return 0;
}

const struct kiln_cli_command kiln_cli_command_imagetools = {
        .name = "imagetools",
        .usage = "imagetools COMMAND",
        .summary = "Commands to work on images in registry",
        .max_args = SIZE_MAX,
        .builder_option = true,
        .run = group_run,
};
