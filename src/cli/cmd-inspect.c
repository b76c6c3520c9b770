/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln inspect: buildx's layout (the builder, then its node), plus what a
 * kiln builder keeps on disk (the configuration copy, the certificates,
 * the root, the log) and the daemon's summary of its effective
 * configuration from GET /v1/info.
 */
#include <sys/stat.h>

#include "base/buf.h"
#include "builder.h"
#include "cli.h"

enum {
        OPT_BOOTSTRAP,
        OPT_TIMEOUT,
};

static const struct kiln_cli_option options[] = {
        [OPT_BOOTSTRAP] = { "bootstrap", 0, KILN_CLI_OPTION_BOOL,
                            "Ensure builder has booted before inspecting", NULL, false },
        [OPT_TIMEOUT] = { "timeout", 0, KILN_CLI_OPTION_DURATION,
                          "Override the default timeout for loading builder status", "20s", false },
};

/* A word as a shell would need it to read it back. */
static void put_shell_word(struct kiln_buf *out, const char *w)
{
        if (w[0] && strspn(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                              "_@%+=:,./-") == strlen(w)) {
                (void) kiln_buf_puts(out, w);
                return;
        }
        (void) kiln_buf_putc(out, '\'');
        for (const char *p = w; *p; p++)
                if (*p == '\'')
                        (void) kiln_buf_puts(out, "'\\''");
                else
                        (void) kiln_buf_putc(out, *p);
        (void) kiln_buf_putc(out, '\'');
}

static json_t *json_path(json_t *o, const char *a, const char *b, const char *c)
{
        o = json_object_get(o, a);
        if (b)
                o = json_object_get(o, b);
        if (c)
                o = json_object_get(o, c);
        return o;
}

static void put_strings(struct kiln_buf *out, json_t *a, const char *sep)
{
        json_t *x;
        size_t i;

        for (i = 0; i < json_array_size(a); i++) {
                x = json_array_get(a, i);
                if (json_is_string(x))
                        (void) kiln_buf_printf(out, "%s%s", i ? sep : "", json_string_value(x));
        }
}

static void put_worker(struct kiln_buf *out, json_t *info)
{
        json_t *oci = json_path(info, "config", "worker", "oci");
        json_t *mp = json_object_get(oci, "max-parallelism");
        json_t *nm = json_object_get(oci, "networkMode");
        /* what the mode resolved to, and the CNI pool, from a running kilnd */
        json_t *mode = json_path(info, "network", "mode", NULL);
        json_t *pool = json_path(info, "network", "pool", NULL);
        json_t *sn = json_object_get(oci, "snapshotter");
        json_t *mrc = json_path(info, "config", "maxRegistryConcurrency", NULL);
        json_t *level = json_path(info, "config", "logLevel", NULL);

        if (!json_is_object(oci))
                return;
        (void) kiln_buf_puts(out, "Worker:\n");
        if (json_is_string(mode))
                (void) kiln_buf_printf(out, "\tNetwork Mode:\t%s\n", json_string_value(mode));
        else if (json_is_string(nm))
                (void) kiln_buf_printf(out, "\tNetwork Mode:\t%s\n", json_string_value(nm));
        if (json_is_object(pool))
                (void) kiln_buf_printf(out,
                                       "\tCNI Pool:\t%" JSON_INTEGER_FORMAT
                                       " idle, %" JSON_INTEGER_FORMAT
                                       " in use (%" JSON_INTEGER_FORMAT
                                       " set up, %" JSON_INTEGER_FORMAT " released)\n",
                                       json_integer_value(json_object_get(pool, "idle")),
                                       json_integer_value(json_object_get(pool, "inUse")),
                                       json_integer_value(json_object_get(pool, "created")),
                                       json_integer_value(json_object_get(pool, "released")));
        if (json_is_integer(mp)) {
                if (json_integer_value(mp) > 0)
                        (void) kiln_buf_printf(out,
                                               "\tMax Parallelism:\t%" JSON_INTEGER_FORMAT "\n",
                                               json_integer_value(mp));
                else
                        (void) kiln_buf_puts(out, "\tMax Parallelism:\tunlimited\n");
        }
        if (json_is_string(sn))
                (void) kiln_buf_printf(out, "\tSnapshotter:\t%s\n", json_string_value(sn));
        if (json_is_integer(mrc))
                (void) kiln_buf_printf(out,
                                       "\tMax Registry Concurrency:\t%" JSON_INTEGER_FORMAT "\n",
                                       json_integer_value(mrc));
        if (json_is_string(level))
                (void) kiln_buf_printf(out, "\tLog Level:\t%s\n", json_string_value(level));
}

static void put_registries(struct kiln_buf *out, json_t *info)
{
        static const char *const flags[] = { "http", "insecure" };
        static const char *const counts[] = { "ca", "keypairs" };
        json_t *regs = json_path(info, "config", "registries", NULL);

        if (!json_is_object(regs) || json_object_size(regs) == 0)
                return;
        (void) kiln_buf_puts(out, "Registries:\n");
        for (void *it = json_object_iter(regs); it; it = json_object_iter_next(regs, it)) {
                const char *host = json_object_iter_key(it);
                json_t *reg = json_object_iter_value(it);
                json_t *mirrors = json_object_get(reg, "mirrors");
                const char *sep = "";

                (void) kiln_buf_printf(out, "\t%s:\t", host);
                if (json_is_array(mirrors) && json_array_size(mirrors) > 0) {
                        (void) kiln_buf_puts(out, "mirrors=");
                        put_strings(out, mirrors, ",");
                        sep = " ";
                }
                for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                        json_t *v = json_object_get(reg, flags[i]);

                        if (json_is_boolean(v)) {
                                (void) kiln_buf_printf(out, "%s%s=%s", sep, flags[i],
                                                       json_is_true(v) ? "true" : "false");
                                sep = " ";
                        }
                }
                for (size_t i = 0; i < ELEMENTSOF(counts); i++) {
                        json_t *v = json_object_get(reg, counts[i]);

                        if (json_is_integer(v)) {
                                (void) kiln_buf_printf(out, "%s%s=%" JSON_INTEGER_FORMAT, sep,
                                                       counts[i], json_integer_value(v));
                                sep = " ";
                        }
                }
                (void) kiln_buf_putc(out, '\n');
        }
}

static void put_node(struct kiln_buf *out, const struct kiln_cli_builder *b,
                     const struct kiln_cli_status *st)
{
        json_t *info = st->info;

        (void) kiln_buf_printf(out, "Name:\t%s\nEndpoint:\t%s\n", b->node, b->endpoint);
        if (b->n_opts > 0) {
                (void) kiln_buf_puts(out, "Driver Options:\t");
                for (size_t i = 0; i < b->n_opts; i++)
                        (void) kiln_buf_printf(out, "%s%s=\"%s\"", i ? " " : "", b->opts[i].key,
                                               b->opts[i].value);
                (void) kiln_buf_putc(out, '\n');
        }
        (void) kiln_buf_printf(out, "Status:\t%s\n", kiln_cli_status_kind_to_string(st->kind));
        if (st->kind == KILN_CLI_STATUS_ERROR || (st->kind == KILN_CLI_STATUS_INACTIVE &&
                                                  b->driver == KILN_CLI_DRIVER_REMOTE && st->err))
                (void) kiln_buf_printf(out, "Error:\t%s\n", kiln_error_message(st->err));
        if (b->n_flags > 0) {
                (void) kiln_buf_puts(out, "BuildKit daemon flags:\t");
                for (size_t i = 0; i < b->n_flags; i++) {
                        if (i)
                                (void) kiln_buf_putc(out, ' ');
                        put_shell_word(out, b->flags[i]);
                }
                (void) kiln_buf_putc(out, '\n');
        }
        if (info) {
                json_t *v = json_object_get(info, "version");
                json_t *p = json_path(info, "config", "worker", "oci");

                if (json_is_string(v))
                        (void) kiln_buf_printf(out, "BuildKit version:\t%s\n",
                                               json_string_value(v));
                p = json_object_get(p, "platforms");
                if (json_is_array(p) && json_array_size(p) > 0) {
                        (void) kiln_buf_puts(out, "Platforms:\t");
                        put_strings(out, p, ", ");
                        (void) kiln_buf_putc(out, '\n');
                }
        }

        if (b->driver == KILN_CLI_DRIVER_LOCAL) {
                _cleanup_free_ char *config =
                        kiln_cli_builder_path(b, "etc/buildkit/buildkitd.toml");
                _cleanup_free_ char *certs = kiln_cli_builder_path(b, "etc/buildkit/certs");
                _cleanup_free_ char *root = kiln_cli_builder_path(b, "root");
                _cleanup_free_ char *log = kiln_cli_builder_path(b, "kilnd.log");

                (void) kiln_buf_printf(out, "Config File:\t%s\n", config);
                if (b->config_file)
                        (void) kiln_buf_printf(out, "Config Source:\t%s\n", b->config_file);
                (void) kiln_buf_printf(out, "Certs Directory:\t%s\n", certs);
                (void) kiln_buf_printf(out, "Root:\t%s\nLog:\t%s\n", root, log);
        } else {
                json_t *root = json_object_get(info, "root");

                if (b->tls_ca || b->tls_cert) {
                        _cleanup_free_ char *tls = kiln_cli_builder_path(b, "tls");

                        (void) kiln_buf_printf(out, "TLS Directory:\t%s\n", tls);
                }
                if (json_is_string(root))
                        (void) kiln_buf_printf(out, "Root:\t%s\n", json_string_value(root));
        }
        if (st->kind == KILN_CLI_STATUS_RUNNING && st->pid > 0)
                (void) kiln_buf_printf(out, "PID:\t%ld\n", (long) st->pid);
        if (info) {
                put_worker(out, info);
                put_registries(out, info);
        }
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *s = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_status_release) struct kiln_cli_status st = { 0 };
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(SIZE_MAX / 2);
        _cleanup_free_ char *aligned = NULL;
        uint64_t timeout = kiln_cli_args_timeout_ms(args, OPT_TIMEOUT);
        int r;

        r = kiln_cli_open_builder(cli, args, /* materialize= */ true, &s, &b, err);
        if (r < 0)
                return r;
        if (args->values[OPT_BOOTSTRAP].b) {
                r = kiln_cli_builder_boot(s, b, timeout, &st, err);
                if (r < 0)
                        return r;
        } else
                kiln_cli_builder_status(b, timeout, &st);

        (void) kiln_buf_printf(&out, "Name:\t%s\nDriver:\t%s\n", b->name,
                               kiln_cli_driver_kind_to_string(b->driver));
        if (b->created && b->created[0])
                (void) kiln_buf_printf(&out, "Created:\t%s\n", b->created);
        (void) kiln_buf_puts(&out, "\nNodes:\n");
        put_node(&out, b, &st);

        aligned = kiln_cli_tabs_align(out.data, 0, 1);
        fputs(aligned, stdout);
        return 0;
}

const struct kiln_cli_command kiln_cli_command_inspect = {
        .name = "inspect",
        .usage = "inspect [OPTIONS] [NAME]",
        .summary = "Inspect current builder instance",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .max_args = 1,
        .builder_option = true,
        .run = run,
};
