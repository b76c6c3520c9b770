/* SPDX-License-Identifier: Apache-2.0 */
#include "base/buf.h"
#include "cli.h"
#include "config/config.h"

/* The options every command takes besides its own. */
static const struct kiln_cli_option builder_option = {
        "builder", 0,     KILN_CLI_OPTION_STRING, "Override the configured builder instance",
        NULL,      false,
};

static int parse_bool(const char *s, bool *ret)
{
        /* Go's strconv.ParseBool, which pflag uses. */
        static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
        static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (streq(s, yes[i])) {
                        *ret = true;
                        return 0;
                }
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (streq(s, no[i])) {
                        *ret = false;
                        return 0;
                }
        return -EINVAL;
}

static int set_value(const struct kiln_cli_option *o, struct kiln_cli_value *v, const char *val,
                     struct kiln_error **err)
{
        v->set = true;
        switch (o->kind) {
        case KILN_CLI_OPTION_BOOL:
                if (!val) {
                        v->b = true;
                        return 0;
                }
                if (parse_bool(val, &v->b) < 0)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid argument \"%s\" for \"--%s\" flag: "
                                              "expected true or false",
                                              val, o->name);
                return 0;
        case KILN_CLI_OPTION_STRING:
                v->s = val;
                return 0;
        case KILN_CLI_OPTION_STRINGS:
                v->v = kiln_xreallocarray(v->v, v->n + 2, sizeof(char *));
                v->v[v->n++] = val;
                v->v[v->n] = NULL;
                return 0;
        case KILN_CLI_OPTION_DURATION:
                if (kiln_config_parse_duration(val, &v->ns) < 0 || v->ns < 0)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid argument \"%s\" for \"--%s\" flag: "
                                              "expected a duration such as 20s or 1m30s",
                                              val, o->name);
                return 0;
        case _KILN_CLI_OPTION_KIND_MAX:
        case _KILN_CLI_OPTION_KIND_INVALID:
                break;
        }
        return kiln_error_set(err, -EINVAL, "internal error: bad option kind");
}

/* Finds an option by long name (len bytes of name) or short name. Index
 * n_options means the global --builder. */
static int option_find(const struct kiln_cli_command *cmd, const char *name, size_t len,
                       char short_name, size_t *ret)
{
        for (size_t i = 0; i < cmd->n_options; i++) {
                const struct kiln_cli_option *o = &cmd->options[i];

                if ((short_name && o->short_name == short_name) ||
                    (!short_name && strlen(o->name) == len && strncmp(o->name, name, len) == 0)) {
                        *ret = i;
                        return 0;
                }
        }
        if (!short_name && len == strlen(builder_option.name) &&
            strncmp(name, builder_option.name, len) == 0) {
                *ret = cmd->n_options;
                return 0;
        }
        return -ENOENT;
}

/* "<msg>\nSee 'kiln CMD --help'.", as cobra words flag errors. */
static int usage_error(struct kiln_error **err, const char *self,
                       const struct kiln_cli_command *cmd, const char *what, const char *arg)
{
        return kiln_error_set(err, -EINVAL, "%s%s\nSee '%s %s --help'.", what, arg, self,
                              cmd->name);
}

int kiln_cli_args_parse(struct kiln_cli *cli, const struct kiln_cli_command *cmd, int argc,
                        char **argv, struct kiln_cli_args *ret, struct kiln_error **err)
{
        struct kiln_cli_args a = { 0 };
        struct kiln_cli_value builder = { 0 };
        bool flags_done = false;
        int r = 0;

        a.values = kiln_xcalloc(cmd->n_options + 1, sizeof(*a.values));
        a.n_values = cmd->n_options;
        a.pos = kiln_xcalloc((size_t) argc + 1, sizeof(char *));

        for (int i = 1; i < argc; i++) {
                const char *arg = argv[i], *name, *eq, *val = NULL;
                const struct kiln_cli_option *o;
                struct kiln_cli_value *v;
                size_t idx, len;

                if (flags_done || arg[0] != '-' || streq(arg, "-")) {
                        a.pos[a.n_pos++] = argv[i];
                        continue;
                }
                if (streq(arg, "--")) {
                        flags_done = true;
                        continue;
                }
                if (streq(arg, "-h") || streq(arg, "--help")) {
                        a.help = true;
                        continue;
                }

                if (arg[1] == '-') {
                        name = arg + 2;
                        eq = strchr(name, '=');
                        len = eq ? (size_t) (eq - name) : strlen(name);
                        if (option_find(cmd, name, len, 0, &idx) < 0) {
                                _cleanup_free_ char *n = kiln_xstrndup(name, len);
                                _cleanup_free_ char *flag = kiln_xasprintf("--%s", n);

                                r = usage_error(err, cli->self, cmd, "unknown flag: ", flag);
                                goto fail;
                        }
                        if (eq)
                                val = eq + 1;
                } else {
                        /* -f, -fVALUE and -f=VALUE; bundles of bool shorthands
                         * ("-ab") are not used by any kiln command. */
                        if (option_find(cmd, NULL, 0, arg[1], &idx) < 0) {
                                _cleanup_free_ char *what =
                                        kiln_xasprintf("'%c' in %s", arg[1], arg);

                                r = usage_error(err, cli->self, cmd,
                                                "unknown shorthand flag: ", what);
                                goto fail;
                        }
                        if (arg[2])
                                val = arg[2] == '=' ? arg + 3 : arg + 2;
                }

                o = idx < cmd->n_options ? &cmd->options[idx] : &builder_option;
                v = idx < cmd->n_options ? &a.values[idx] : &builder;
                if (o->kind != KILN_CLI_OPTION_BOOL && !val) {
                        if (i + 1 >= argc) {
                                _cleanup_free_ char *flag = kiln_xasprintf("--%s", o->name);

                                r = usage_error(err, cli->self, cmd,
                                                "flag needs an argument: ", flag);
                                goto fail;
                        }
                        val = argv[++i];
                }
                r = set_value(o, v, val, err);
                if (r < 0)
                        goto fail;
        }

        if (builder.set)
                cli->builder = builder.s;

        if (!a.help && (a.n_pos < cmd->min_args || a.n_pos > cmd->max_args)) {
                _cleanup_free_ char *what = kiln_xasprintf("%s %s", cli->self, cmd->name);

                if (cmd->max_args == 0)
                        r = kiln_error_set(err, -EINVAL,
                                           "\"%s\" accepts no arguments\nSee '%s --help'.", what,
                                           what);
                else if (cmd->min_args == cmd->max_args)
                        r = kiln_error_set(err, -EINVAL,
                                           "\"%s\" requires exactly %zu argument%s\nSee '%s "
                                           "--help'.",
                                           what, cmd->min_args, cmd->min_args == 1 ? "" : "s",
                                           what);
                else
                        r = kiln_error_set(err, -EINVAL,
                                           "\"%s\" requires at most %zu argument%s\nSee '%s "
                                           "--help'.",
                                           what, cmd->max_args, cmd->max_args == 1 ? "" : "s",
                                           what);
                goto fail;
        }

        *ret = a;
        return 0;

fail:
        kiln_cli_args_release(&a);
        return r;
}

void kiln_cli_args_release(struct kiln_cli_args *a)
{
        if (a->values)
                for (size_t i = 0; i < a->n_values; i++)
                        free(a->values[i].v);
        free(a->values);
        free(a->pos);
        *a = (struct kiln_cli_args){ 0 };
}

uint64_t kiln_cli_args_timeout_ms(const struct kiln_cli_args *a, size_t i)
{
        uint64_t ms;

        if (i >= a->n_values || !a->values[i].set)
                return KILN_CLI_TIMEOUT_DEFAULT_MS;
        /* As buildx: --timeout 0 waits without limit. */
        if (a->values[i].ns == 0)
                return KILN_CLI_TIMEOUT_NONE_MS;
        ms = (uint64_t) a->values[i].ns / 1000000u;
        return ms > 0 ? ms : 1;
}

static const char *kind_name(enum kiln_cli_option_kind k)
{
        switch (k) {
        case KILN_CLI_OPTION_STRING:
                return "string";
        case KILN_CLI_OPTION_STRINGS:
                return "stringArray";
        case KILN_CLI_OPTION_DURATION:
                return "duration";
        case KILN_CLI_OPTION_BOOL:
        case _KILN_CLI_OPTION_KIND_MAX:
        case _KILN_CLI_OPTION_KIND_INVALID:
                break;
        }
        return NULL;
}

static int option_cmp(const void *a, const void *b)
{
        return strcmp((*(const struct kiln_cli_option *const *) a)->name,
                      (*(const struct kiln_cli_option *const *) b)->name);
}

void kiln_cli_command_help(const struct kiln_cli *cli, const struct kiln_cli_command *cmd, FILE *f)
{
        const struct kiln_cli_option **shown;
        size_t n = 0, width = 0;

        fprintf(f, "\nUsage:  %s %s\n\n%s\n", cli->self, cmd->usage, cmd->summary);

        /* pflag's layout: sorted, "  -s, --name type", help in one column. */
        shown = kiln_xcalloc(cmd->n_options + 1, sizeof(*shown));
        for (size_t i = 0; i < cmd->n_options; i++)
                if (!cmd->options[i].hidden)
                        shown[n++] = &cmd->options[i];
        if (cmd->builder_option)
                shown[n++] = &builder_option;
        qsort(shown, n, sizeof(*shown), option_cmp);

        for (size_t i = 0; i < n; i++) {
                const char *type = kind_name(shown[i]->kind);
                size_t w = 6 + 2 + strlen(shown[i]->name) + (type ? 1 + strlen(type) : 0);

                if (w > width)
                        width = w;
        }
        if (n > 0)
                fprintf(f, "\nOptions:\n");
        for (size_t i = 0; i < n; i++) {
                const struct kiln_cli_option *o = shown[i];
                const char *type = kind_name(o->kind);
                _cleanup_free_ char *left = NULL;

                if (o->short_name)
                        left = kiln_xasprintf("  -%c, --%s%s%s", o->short_name, o->name,
                                              type ? " " : "", type ? type : "");
                else
                        left = kiln_xasprintf("      --%s%s%s", o->name, type ? " " : "",
                                              type ? type : "");
                fprintf(f, "%-*s   %s", (int) width, left, o->help);
                if (o->default_text)
                        fprintf(f, " (default %s)", o->default_text);
                fputc('\n', f);
        }
        free(shown);
}
