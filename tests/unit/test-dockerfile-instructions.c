/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "dockerfile/instructions.h"
#include "dockerfile/parser.h"
#include "kiln-test.h"

/* Parses src into instructions; NULL on failure, with the message in
 * last_error. */
static char last_error[1024];
static unsigned last_error_line;

static struct kiln_dockerfile_instructions *parse(const char *src)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_dockerfile_instructions *d = NULL;

        last_error[0] = '\0';
        last_error_line = 0;
        if (kiln_dockerfile_parse(src, strlen(src), "Dockerfile", &root, &err) < 0) {
                snprintf(last_error, sizeof(last_error), "parser: %s", err->message);
                return NULL;
        }
        if (kiln_dockerfile_instructions_parse(root, "Dockerfile", &d, &err) < 0) {
                snprintf(last_error, sizeof(last_error), "%s", err->message);
                last_error_line = err->line;
                return NULL;
        }
        return d;
}

/* The error text of parsing src (without the "Dockerfile:N: " prefix when
 * it is there), or "" on success. */
static const char *perr(const char *src)
{
        struct kiln_dockerfile_instructions *d = parse(src);
        char prefix[128];
        const char *m = last_error;

        if (d) {
                kiln_dockerfile_instructions_free(d);
                return "";
        }
        snprintf(prefix, sizeof(prefix), "Dockerfile:%u: ", last_error_line);
        if (startswith(m, prefix))
                return m + strlen(prefix);
        return m;
}

/* The first command of the first stage of "FROM scratch\n" + line. */
static struct kiln_dockerfile_instructions *parse1(const char *line,
                                                   const struct kiln_dockerfile_cmd **c)
{
        char src[4096];
        struct kiln_dockerfile_instructions *d;

        snprintf(src, sizeof(src), "FROM scratch\n%s\n", line);
        d = parse(src);
        *c = d && d->n_stages == 1 && d->stages[0].n_cmds == 1 ? d->stages[0].cmds[0] : NULL;
        return d;
}

/* The error of "FROM scratch\n" + line. */
static const char *perr1(const char *line)
{
        static char src[4096];

        snprintf(src, sizeof(src), "FROM scratch\n%s\n", line);
        return perr(src);
}

#define PARSE1(line)                                                                            \
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d_ = \
                NULL;                                                                           \
        const struct kiln_dockerfile_cmd *c = NULL;                                             \
        d_ = parse1(line, &c);                                                                  \
        if (!c)                                                                                 \
                KILN_TEST_FAIL("parse of '%s' failed: %s", line, last_error);

/* ------------------------------------------------------------------- FROM */

TEST(from_stages_and_names)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("FROM --platform=$BUILDPLATFORM golang:1.22 AS Builder\n"
                      "RUN go build\n"
                      "from alpine\n"
                      "COPY --from=builder /out /bin\n");

        ASSERT_TRUE(d);
        ASSERT_EQ_INT(d->n_stages, 2);
        ASSERT_STREQ(d->stages[0].name, "builder");
        ASSERT_STREQ(d->stages[0].orig_name, "Builder");
        ASSERT_STREQ(d->stages[0].as_word, "AS");
        ASSERT_STREQ(d->stages[1].orig_name, "");
        ASSERT_STREQ(d->stages[0].base_name, "golang:1.22");
        ASSERT_STREQ(d->stages[0].platform, "$BUILDPLATFORM");
        ASSERT_STREQ(d->stages[0].orig_cmd, "FROM");
        ASSERT_STREQ(d->stages[0].code, "FROM --platform=$BUILDPLATFORM golang:1.22 AS Builder");
        ASSERT_EQ_INT(d->stages[0].start_line, 1);
        ASSERT_EQ_INT(d->stages[0].n_cmds, 1);
        ASSERT_EQ_INT(d->stages[0].cmds[0]->type, KILN_DOCKERFILE_CMD_RUN);
        ASSERT_STREQ(d->stages[1].name, "");
        ASSERT_STREQ(d->stages[1].platform, "");
        ASSERT_STREQ(d->stages[1].orig_cmd, "from");
        ASSERT_EQ_INT(d->stages[1].start_line, 3);
        ASSERT_EQ_INT(d->stages[1].cmds[0]->type, KILN_DOCKERFILE_CMD_COPY);
        ASSERT_EQ_INT(kiln_dockerfile_find_stage(d, "BUILDER"), 0);
        ASSERT_EQ_INT(kiln_dockerfile_find_stage(d, "nope"), -1);
        return 0;
}

TEST(from_errors)
{
        ASSERT_STREQ(perr("FROM a b\n"), "FROM requires either one or three arguments");
        ASSERT_STREQ(perr("FROM a AS b c\n"), "FROM requires either one or three arguments");
        ASSERT_STREQ(perr("FROM\n"), "FROM requires either one or three arguments");
        ASSERT_STREQ(perr("FROM a to b\n"), "FROM requires either one or three arguments");
        ASSERT_STREQ(perr("FROM a AS 1st\n"),
                     "invalid name for build stage: \"1st\", name can't start with a number or "
                     "contain symbols");
        ASSERT_STREQ(perr("FROM a AS na$me\n"),
                     "invalid name for build stage: \"na$me\", name can't start with a number or "
                     "contain symbols");
        ASSERT_STREQ(perr("FROM a as a-b_c.d9\n"), "");
        ASSERT_STREQ(perr("FROM --platfrom=linux a\n"),
                     "unknown flag: --platfrom (did you mean platform?)");
        ASSERT_STREQ(perr("FROM --platform a\n"), "missing a value on flag: --platform");
        return 0;
}

TEST(meta_args_and_no_stage)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("ARG BASE=alpine\nARG TAG\nFROM $BASE:$TAG\nARG X\n");

        ASSERT_TRUE(d);
        ASSERT_EQ_INT(d->n_meta_args, 2);
        ASSERT_STREQ(d->meta_args[0]->arg.args[0].key, "BASE");
        ASSERT_STREQ(d->meta_args[0]->arg.args[0].value, "alpine");
        ASSERT_TRUE(d->meta_args[1]->arg.args[0].value == NULL);
        ASSERT_EQ_INT(d->stages[0].n_cmds, 1);

        /* the location said once, as for every error */
        ASSERT_TRUE(!parse("ARG A\n\nRUN true\nFROM a\n"));
        ASSERT_STREQ(last_error, "Dockerfile:3: no build stage in current context");
        ASSERT_EQ_INT(last_error_line, 3);
        /* a parse error comes first */
        ASSERT_STREQ(perr("ENV\n"), "ENV requires at least one argument");
        return 0;
}

TEST(unknown_instruction_suggestions)
{
        ASSERT_TRUE(!parse("FROM a\n\nFOO bar\n"));
        ASSERT_STREQ(last_error, "Dockerfile:3: unknown instruction: FOO "
                                 "(did you mean FROM?)");
        ASSERT_EQ_INT(last_error_line, 3);
        ASSERT_STREQ(perr1("foo bar"), "unknown instruction: foo (did you mean from?)");
        ASSERT_STREQ(perr1("BOGUS x"), "unknown instruction: BOGUS");
        ASSERT_STREQ(perr1("RUNN echo"), "unknown instruction: RUNN (did you mean RUN?)");
        ASSERT_STREQ(perr1("runn echo"), "unknown instruction: runn (did you mean run?)");
        /* among the equally close (RUN and ENV are two substitutions from
         * RNU), the fewest edits with a swap of neighbours counting as one,
         * then the first in alphabetical order */
        ASSERT_STREQ(perr1("RNU echo"), "unknown instruction: RNU (did you mean RUN?)");
        ASSERT_STREQ(perr1("FORM a"), "unknown instruction: FORM (did you mean FROM?)");
        ASSERT_STREQ(perr1("form a"), "unknown instruction: form (did you mean from?)");
        ASSERT_STREQ(perr1("ENVV x"), "unknown instruction: ENVV (did you mean ENV?)");
        ASSERT_STREQ(perr1("AGR x"), "unknown instruction: AGR (did you mean ARG?)");
        /* no swap helps: the first in alphabetical order (ADD before ARG) */
        ASSERT_STREQ(perr1("AXX x"), "unknown instruction: AXX (did you mean ADD?)");
        /* the case of what was written only when it is all upper or lower */
        ASSERT_STREQ(perr1("RuNN echo"), "unknown instruction: RuNN (did you mean run?)");
        ASSERT_STREQ(perr1("Cpy a b"), "unknown instruction: Cpy (did you mean copy?)");
        ASSERT_STREQ(perr1("WORKDIRR /x"), "unknown instruction: WORKDIRR (did you mean WORKDIR?)");
        ASSERT_STREQ(perr1("ENTRYPIONT x"),
                     "unknown instruction: ENTRYPIONT (did you mean ENTRYPOINT?)");
        /* before the first FROM too */
        ASSERT_STREQ(perr("FRM a\n"), "unknown instruction: FRM (did you mean FROM?)");
        return 0;
}

/* ------------------------------------------------------------- arg counts */

TEST(exactly_one_argument)
{
        static const char *const cmds[] = { "MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL" };
        char want[128];

        for (size_t i = 0; i < ELEMENTSOF(cmds); i++) {
                snprintf(want, sizeof(want), "%s requires exactly one argument", cmds[i]);
                ASSERT_STREQ(perr1(cmds[i]), want);
        }
        return 0;
}

TEST(at_least_one_argument)
{
        static const char *const cmds[] = { "ENV",    "LABEL",  "ONBUILD", "HEALTHCHECK",
                                            "EXPOSE", "VOLUME", "ARG" };
        char want[128];

        for (size_t i = 0; i < ELEMENTSOF(cmds); i++) {
                snprintf(want, sizeof(want), "%s requires at least one argument", cmds[i]);
                ASSERT_STREQ(perr1(cmds[i]), want);
        }
        ASSERT_STREQ(perr1("SHELL []"), "SHELL requires at least one argument");
        return 0;
}

TEST(no_destination)
{
        ASSERT_STREQ(perr1("ADD arg1"), "ADD requires at least two arguments, but only one was "
                                        "provided. Destination could not be determined");
        ASSERT_STREQ(perr1("COPY arg1"), "COPY requires at least two arguments, but only one was "
                                         "provided. Destination could not be determined");
        /* the argument check comes before the flags */
        ASSERT_STREQ(perr1("COPY --bogus arg1"),
                     "COPY requires at least two arguments, but only one was provided. "
                     "Destination could not be determined");
        ASSERT_STREQ(perr("FROM a\nCOPY\t\n\t\tquux \\\n      bar\n"),
                     "COPY requires at least two arguments, but only one was provided. "
                     "Destination could not be determined");
        return 0;
}

static struct kiln_dockerfile_node *mknode(const char *v, struct kiln_dockerfile_node *next)
{
        struct kiln_dockerfile_node *n = kiln_xcalloc(1, sizeof(*n));

        n->value.s = kiln_xstrdup(v);
        n->value.len = strlen(v);
        n->next = next;
        return n;
}

static const char *node_error(struct kiln_dockerfile_node *n)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_dockerfile_cmd *c = NULL;
        struct kiln_dockerfile_stage *s = NULL;
        static char msg[256];

        n->start_line = 7;
        if (kiln_dockerfile_instruction_parse(n, NULL, &c, &s, &err) == 0) {
                kiln_dockerfile_cmd_free(c);
                kiln_dockerfile_stage_free(s);
                msg[0] = '\0';
        } else
                snprintf(msg, sizeof(msg), "%s", err->message);
        kiln_dockerfile_node_free(n);
        return msg;
}

TEST(kvp_too_many_and_blank)
{
        /* Nodes the parser never builds: a count that is not a multiple of
         * three, and an empty name. */
        ASSERT_STREQ(
                node_error(mknode("env", mknode("a", mknode("b", mknode("c", mknode("", NULL)))))),
                "<input>:7: Bad input to ENV, too many arguments");
        ASSERT_STREQ(node_error(mknode("label",
                                       mknode("a", mknode("b", mknode("c", mknode("", NULL)))))),
                     "<input>:7: Bad input to LABEL, too many arguments");
        ASSERT_STREQ(node_error(mknode("env", mknode("", mknode("arg2", mknode("=", NULL))))),
                     "<input>:7: ENV names can not be blank");
        ASSERT_STREQ(node_error(mknode("label", mknode("", mknode("arg2", mknode("=", NULL))))),
                     "<input>:7: LABEL names can not be blank");
        ASSERT_STREQ(perr1("ARG =x"), "ARG names can not be blank");
        return 0;
}

/* ------------------------------------------------------------------ flags */

TEST(flag_parsing)
{
        {
                PARSE1("COPY --link --parents=false a b");
                ASSERT_TRUE(c->copy.link);
                ASSERT_TRUE(!c->copy.parents);
        }
        {
                PARSE1("COPY --link=TRUE --parents=True a b");
                ASSERT_TRUE(c->copy.link && c->copy.parents);
        }
        {
                PARSE1("COPY --chown= a b");
                ASSERT_STREQ(c->copy.chown, "");
        }
        {
                PARSE1("COPY --chown=BYE a b");
                ASSERT_STREQ(c->copy.chown, "BYE");
        }
        /* "--" ends the flags */
        {
                PARSE1("COPY --link -- --parents b");
                ASSERT_TRUE(c->copy.link && !c->copy.parents);
                ASSERT_STREQ(c->copy.sources[0], "--parents");
        }
        ASSERT_STREQ(perr1("COPY --chown a b"), "missing a value on flag: --chown");
        ASSERT_STREQ(perr1("COPY --link= a b"), "missing a value on flag: --link");
        ASSERT_STREQ(perr1("COPY --link=false1 a b"),
                     "expecting boolean value for flag --link, not: false1");
        ASSERT_STREQ(perr1("COPY --from=a --from=b a b"), "duplicate flag specified: --from");
        ASSERT_STREQ(perr1("COPY --link --link=false a b"), "duplicate flag specified: --link");
        ASSERT_STREQ(perr1("COPY --exclude a b"), "missing a value on flag: --exclude");
        ASSERT_STREQ(perr1("COPY --form=x a b"), "unknown flag: --form (did you mean from?)");
        ASSERT_STREQ(perr1("COPY --checksum=sha256:x a b"), "unknown flag: --checksum");
        ASSERT_STREQ(perr1("ADD --from=x a b"), "unknown flag: --from");
        ASSERT_STREQ(perr1("ADD --parents a b"), "unknown flag: --parents");
        ASSERT_STREQ(perr1("MAINTAINER --boo joe@example.com"), "unknown flag: --boo");
        ASSERT_STREQ(perr1("RUN --mout=type=cache,target=/x true"),
                     "unknown flag: --mout (did you mean mount?)");
        ASSERT_STREQ(perr1("WORKDIR --x /a"), "unknown flag: --x");
        ASSERT_STREQ(perr1("ENV --x a=b"), "unknown flag: --x");
        ASSERT_STREQ(perr1("EXPOSE --x 80"), "unknown flag: --x");
        ASSERT_STREQ(perr1("CMD --x a"), "unknown flag: --x");
        /* BuildKit never looks at the flags of ARG, STOPSIGNAL and
         * HEALTHCHECK NONE */
        ASSERT_STREQ(perr1("ARG --x a"), "");
        ASSERT_STREQ(perr1("STOPSIGNAL --x SIGKILL"), "");
        ASSERT_STREQ(perr1("HEALTHCHECK --bogus NONE"), "");
        return 0;
}

/* ------------------------------------------------------------ ENV / LABEL */

TEST(env_forms)
{
        {
                PARSE1("ENV A=1 B=\"two words\" C=");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_ENV);
                ASSERT_EQ_INT(c->kv.n_kvs, 3);
                ASSERT_STREQ(c->kv.kvs[0].key, "A");
                ASSERT_STREQ(c->kv.kvs[0].value, "1");
                ASSERT_TRUE(!c->kv.kvs[0].no_delim);
                ASSERT_STREQ(c->kv.kvs[1].value, "\"two words\"");
                ASSERT_STREQ(c->kv.kvs[2].value, "");
                ASSERT_STREQ(c->code, "ENV A=1 B=\"two words\" C=");
                ASSERT_STREQ(c->name, "ENV");
                ASSERT_EQ_INT(c->start_line, 2);
        }
        {
                PARSE1("ENV PATH /usr/bin:/bin  more");
                ASSERT_EQ_INT(c->kv.n_kvs, 1);
                ASSERT_STREQ(c->kv.kvs[0].key, "PATH");
                ASSERT_STREQ(c->kv.kvs[0].value, "/usr/bin:/bin  more");
                ASSERT_TRUE(c->kv.kvs[0].no_delim);
        }
        {
                PARSE1("LABEL org.opencontainers.image.title=\"kiln\" version=1");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_LABEL);
                ASSERT_EQ_INT(c->kv.n_kvs, 2);
                ASSERT_STREQ(c->kv.kvs[0].key, "org.opencontainers.image.title");
                ASSERT_STREQ(c->kv.kvs[1].key, "version");
        }
        ASSERT_STREQ(perr1("ENV A"), "parser: Dockerfile:2: ENV must have two arguments");
        return 0;
}

/* -------------------------------------------------------------------- ARG */

TEST(arg_names_and_defaults)
{
        PARSE1("ARG A B=2 C= D=x=y");
        ASSERT_EQ_INT(c->arg.n_args, 4);
        ASSERT_STREQ(c->arg.args[0].key, "A");
        ASSERT_TRUE(c->arg.args[0].value == NULL);
        ASSERT_STREQ(c->arg.args[1].value, "2");
        ASSERT_STREQ(c->arg.args[2].value, "");
        ASSERT_STREQ(c->arg.args[3].key, "D");
        ASSERT_STREQ(c->arg.args[3].value, "x=y");
        return 0;
}

TEST(doc_comments)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("# foo sets foo\n"
                      "ARG foo=bar\n"
                      "\n"
                      "# base defines first stage\n"
                      "FROM busybox AS base\n"
                      "# this is irrelevant\n"
                      "ARG foo\n"
                      "# bar defines bar\n"
                      "# baz is something else\n"
                      "ARG bar baz=123\n");
        const struct kiln_dockerfile_stage *st;

        ASSERT_TRUE(d);
        st = &d->stages[0];
        ASSERT_STREQ(st->doc_comment, "defines first stage");
        ASSERT_EQ_INT(st->n_comments, 1);
        ASSERT_STREQ(st->comments[0], "base defines first stage");
        ASSERT_EQ_INT(st->cmds[1]->n_comments, 2);
        ASSERT_STREQ(st->cmds[1]->comments[1], "baz is something else");
        ASSERT_STREQ(d->meta_args[0]->arg.args[0].key, "foo");
        ASSERT_STREQ(d->meta_args[0]->arg.args[0].doc_comment, "sets foo");
        ASSERT_STREQ(st->cmds[0]->arg.args[0].key, "foo");
        ASSERT_STREQ(st->cmds[0]->arg.args[0].doc_comment, "");
        ASSERT_STREQ(st->cmds[1]->arg.args[0].doc_comment, "defines bar");
        ASSERT_STREQ(st->cmds[1]->arg.args[1].key, "baz");
        ASSERT_STREQ(st->cmds[1]->arg.args[1].doc_comment, "is something else");
        return 0;
}

/* ------------------------------------------------- single-word commands */

TEST(single_words)
{
        {
                PARSE1("WORKDIR /app/$DIR");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_WORKDIR);
                ASSERT_STREQ(c->word, "/app/$DIR");
        }
        {
                PARSE1("USER 1000:1000");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_USER);
                ASSERT_STREQ(c->word, "1000:1000");
        }
        {
                PARSE1("STOPSIGNAL SIGTERM");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_STOPSIGNAL);
                ASSERT_STREQ(c->word, "SIGTERM");
        }
        {
                PARSE1("MAINTAINER Jane Doe <jane@example.com>");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_MAINTAINER);
                ASSERT_STREQ(c->word, "Jane Doe <jane@example.com>");
        }
        return 0;
}

/* --------------------------------------------------------- EXPOSE, VOLUME */

TEST(expose_sorted)
{
        PARSE1("EXPOSE 8080/udp 443 80/tcp");
        ASSERT_EQ_INT(c->list.n_items, 3);
        ASSERT_STREQ(c->list.items[0], "443");
        ASSERT_STREQ(c->list.items[1], "80/tcp");
        ASSERT_STREQ(c->list.items[2], "8080/udp");
        return 0;
}

TEST(volume_forms)
{
        {
                PARSE1("VOLUME /a /b");
                ASSERT_EQ_INT(c->list.n_items, 2);
                ASSERT_STREQ(c->list.items[1], "/b");
        }
        {
                PARSE1("VOLUME [\" /data \", \"/logs\"]");
                ASSERT_EQ_INT(c->list.n_items, 2);
                ASSERT_STREQ(c->list.items[0], "/data");
        }
        ASSERT_STREQ(perr1("VOLUME [\"/a\", \" \"]"),
                     "VOLUME specified can not be an empty string");
        return 0;
}

/* ---------------------------------------------- RUN, CMD, ENTRYPOINT, SHELL */

TEST(cmdline_forms)
{
        {
                PARSE1("RUN echo  hello   world");
                ASSERT_EQ_INT(c->run.cmdline.n_args, 1);
                ASSERT_STREQ(c->run.cmdline.args[0], "echo  hello   world");
                ASSERT_TRUE(c->run.cmdline.prepend_shell);
                ASSERT_EQ_INT(c->run.network, KILN_DOCKERFILE_NETWORK_DEFAULT);
                ASSERT_EQ_INT(c->run.security, KILN_DOCKERFILE_SECURITY_SANDBOX);
                ASSERT_EQ_INT(c->run.n_flags_used, 0);
        }
        {
                PARSE1("RUN [\"echo\", \"a b\"]");
                ASSERT_EQ_INT(c->run.cmdline.n_args, 2);
                ASSERT_STREQ(c->run.cmdline.args[1], "a b");
                ASSERT_TRUE(!c->run.cmdline.prepend_shell);
        }
        {
                PARSE1("CMD [\"nginx\", \"-g\", \"daemon off;\"]");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_CMD);
                ASSERT_EQ_INT(c->cmdline.n_args, 3);
                ASSERT_TRUE(!c->cmdline.prepend_shell);
        }
        {
                PARSE1("CMD []");
                ASSERT_EQ_INT(c->cmdline.n_args, 0);
        }
        {
                PARSE1("ENTRYPOINT exec /bin/app");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_ENTRYPOINT);
                ASSERT_STREQ(c->cmdline.args[0], "exec /bin/app");
                ASSERT_TRUE(c->cmdline.prepend_shell);
        }
        {
                PARSE1("SHELL [\"powershell\", \"-command\"]");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_SHELL);
                ASSERT_EQ_INT(c->list.n_items, 2);
                ASSERT_STREQ(c->list.items[0], "powershell");
        }
        ASSERT_STREQ(perr1("SHELL powershell -command"),
                     "SHELL requires the arguments to be in JSON form");
        return 0;
}

TEST(run_network_security_device)
{
        {
                PARSE1("RUN --network=none --security=insecure --device=/dev/fuse,required true");
                ASSERT_EQ_INT(c->run.network, KILN_DOCKERFILE_NETWORK_NONE);
                ASSERT_EQ_INT(c->run.security, KILN_DOCKERFILE_SECURITY_INSECURE);
                ASSERT_EQ_INT(c->run.n_devices, 1);
                ASSERT_STREQ(c->run.devices[0].name, "/dev/fuse");
                ASSERT_TRUE(c->run.devices[0].required);
                ASSERT_EQ_INT(c->run.n_flags_used, 3);
                ASSERT_STREQ(c->run.flags_used[0], "network");
                ASSERT_STREQ(c->run.flags_used[2], "device");
        }
        {
                PARSE1("RUN --network=host --device=name=vendor.com/gpu=all,required=false true");
                ASSERT_EQ_INT(c->run.network, KILN_DOCKERFILE_NETWORK_HOST);
                ASSERT_STREQ(c->run.devices[0].name, "vendor.com/gpu=all");
                ASSERT_TRUE(!c->run.devices[0].required);
        }
        {
                PARSE1("RUN --mount=type=tmpfs,target=/foo/ echo hello");
                ASSERT_EQ_INT(c->run.n_flags_used, 1);
                ASSERT_STREQ(c->run.flags_used[0], "mount");
        }
        ASSERT_STREQ(perr1("RUN --network=bridge true"), "invalid network mode \"bridge\"");
        ASSERT_STREQ(perr1("RUN --network=None true"), "invalid network mode \"None\"");
        ASSERT_STREQ(perr1("RUN --security=privileged true"),
                     "security \"privileged\" is not valid");
        ASSERT_STREQ(perr1("RUN --network=none --network=host true"),
                     "duplicate flag specified: --network");
        ASSERT_STREQ(perr1("RUN --device=a,b true"), "invalid field 'b' must be a key=value pair");
        ASSERT_STREQ(perr1("RUN --device=a,name=b true"), "device name already set to a");
        ASSERT_STREQ(perr1("RUN --device=a,required=maybe true"),
                     "invalid value for required: maybe");
        ASSERT_STREQ(perr1("RUN --device=a,nme=b true"),
                     "unexpected key 'nme' in 'nme=b' (did you mean name?)");
        ASSERT_STREQ(perr1("RUN --device= true"), "failed to parse csv devices: EOF");
        return 0;
}

/* ------------------------------------------------------------------ mounts */

/* Parses "RUN --mount=<spec> true" and expands it without an expander. */
static int mount_of(const char *spec, struct kiln_dockerfile_mount *out, char *msg, size_t msgsz)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct kiln_dockerfile_cmd *c0;
        struct kiln_dockerfile_cmd *c;
        char line[1024];

        msg[0] = '\0';
        snprintf(line, sizeof(line), "RUN --mount=%s true", spec);
        d = parse1(line, &c0);
        if (!c0) {
                snprintf(msg, msgsz, "parse: %.400s", last_error);
                return -1;
        }
        c = (struct kiln_dockerfile_cmd *) c0;
        if (kiln_dockerfile_cmd_expand(c, "Dockerfile", NULL, NULL, &err) < 0) {
                snprintf(msg, msgsz, "%s", err->message);
                return -1;
        }
        if (c->run.n_mounts != 1)
                return -1;
        *out = c->run.mounts[0];
        /* keep the strings alive past the free */
        out->from = kiln_xstrdup(out->from);
        out->source = kiln_xstrdup(out->source);
        out->target = kiln_xstrdup(out->target);
        out->cache_id = kiln_xstrdup(out->cache_id);
        out->env = out->env ? kiln_xstrdup(out->env) : NULL;
        return 0;
}

static void mount_done(struct kiln_dockerfile_mount *m)
{
        free(m->from);
        free(m->source);
        free(m->target);
        free(m->cache_id);
        free(m->env);
}

static const char *mount_err(const char *spec)
{
        static char msg[512];
        struct kiln_dockerfile_mount m;

        if (mount_of(spec, &m, msg, sizeof(msg)) == 0) {
                mount_done(&m);
                return "";
        }
        return msg;
}

TEST(mount_defaults)
{
        struct kiln_dockerfile_mount m;
        char msg[256];

        ASSERT_OK(mount_of("target=/src", &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.type, KILN_DOCKERFILE_MOUNT_BIND);
        ASSERT_TRUE(m.readonly);
        ASSERT_STREQ(m.target, "/src");
        ASSERT_STREQ(m.from, "");
        ASSERT_EQ_INT(m.sharing, KILN_DOCKERFILE_SHARING_UNSET);
        mount_done(&m);

        ASSERT_OK(mount_of("type=bind,from=builder,source=/out,dst=/in,rw", &m, msg, sizeof(msg)));
        ASSERT_TRUE(!m.readonly);
        ASSERT_STREQ(m.from, "builder");
        ASSERT_STREQ(m.source, "/out");
        ASSERT_STREQ(m.target, "/in");
        mount_done(&m);

        ASSERT_OK(mount_of("type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1000,"
                           "gid=1000",
                           &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.type, KILN_DOCKERFILE_MOUNT_CACHE);
        ASSERT_TRUE(!m.readonly);
        ASSERT_STREQ(m.cache_id, "go");
        ASSERT_EQ_INT(m.sharing, KILN_DOCKERFILE_SHARING_LOCKED);
        ASSERT_TRUE(m.has_mode && m.mode == 0755 && m.has_uid && m.uid == 1000 && m.has_gid);
        mount_done(&m);

        ASSERT_OK(mount_of("type=cache,target=/c,ro=true", &m, msg, sizeof(msg)));
        ASSERT_TRUE(m.readonly);
        mount_done(&m);

        ASSERT_OK(mount_of("type=tmpfs,destination=/tmp,size=64m", &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.type, KILN_DOCKERFILE_MOUNT_TMPFS);
        ASSERT_TRUE(!m.readonly);
        ASSERT_EQ_INT(m.size_limit, 64ll << 20);
        mount_done(&m);

        ASSERT_OK(mount_of("type=tmpfs,target=/t,size=1.5GiB", &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.size_limit, 3ll << 29);
        mount_done(&m);

        ASSERT_OK(mount_of("type=tmpfs,target=/t,\"size=100 kb\"", &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.size_limit, 102400);
        mount_done(&m);

        ASSERT_OK(mount_of("type=secret,id=aws,target=/root/.aws/credentials,required", &m, msg,
                           sizeof(msg)));
        ASSERT_EQ_INT(m.type, KILN_DOCKERFILE_MOUNT_SECRET);
        ASSERT_TRUE(m.readonly && m.required);
        ASSERT_TRUE(m.env == NULL);
        mount_done(&m);

        ASSERT_OK(mount_of("type=secret,id=tok,env=TOKEN,required=false", &m, msg, sizeof(msg)));
        ASSERT_STREQ(m.env, "TOKEN");
        ASSERT_TRUE(!m.required);
        mount_done(&m);

        ASSERT_OK(mount_of("type=ssh,id=default,mode=0600,required=true", &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.type, KILN_DOCKERFILE_MOUNT_SSH);
        ASSERT_TRUE(m.required && m.readonly && m.mode == 0600);
        mount_done(&m);

        /* keys and types are case-insensitive; quoted CSV fields */
        ASSERT_OK(mount_of("TYPE=Cache,\\\"target=/a,b\\\",Sharing=PRIVATE", &m, msg, sizeof(msg)));
        ASSERT_EQ_INT(m.type, KILN_DOCKERFILE_MOUNT_CACHE);
        ASSERT_STREQ(m.target, "/a,b");
        ASSERT_EQ_INT(m.sharing, KILN_DOCKERFILE_SHARING_PRIVATE);
        mount_done(&m);
        return 0;
}

/* Names are lowered as Go's strings.ToLower does: U+212A KELVIN SIGN is a
 * 'k', U+0130 (capital I with dot above) an 'i'. */
TEST(unicode_lower_case)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("FROM a AS \xe2\x84\xaailn\n"
                      "WOR\xe2\x84\xaa"
                      "DIR /src\n");

        ASSERT_TRUE(d);
        ASSERT_STREQ(d->stages[0].name, "kiln");
        ASSERT_STREQ(d->stages[0].orig_name, "\xe2\x84\xaailn");
        ASSERT_EQ_INT(d->stages[0].n_cmds, 1);
        ASSERT_EQ_INT(d->stages[0].cmds[0]->type, KILN_DOCKERFILE_CMD_WORKDIR);
        ASSERT_STREQ(d->stages[0].cmds[0]->name, "WOR\xe2\x84\xaa"
                                                 "DIR");

        /* flags reach kiln as BuildKit reads them, a byte a rune: "\xc4\xb0"
         * (U+0130) is "\xc3\x84\xc2\xb0", and U+00C4 lowers to U+00E4 */
        ASSERT_STREQ(mount_err("type=cache,target=/c,\xc4\xb0"
                               "D=x"),
                     "Dockerfile:2: unexpected key '\xc3\xa4\xc2\xb0"
                     "d' in "
                     "'\xc3\x84\xc2\xb0"
                     "D=x' (did you mean id?)");
        /* a byte that is not UTF-8 (U+FFFD once lowered) is no letter */
        ASSERT_STREQ(perr("FROM a AS \xff\n"),
                     "invalid name for build stage: \"\\xff\", name can't start with a number or "
                     "contain symbols");
        return 0;
}

TEST(mount_errors)
{
        ASSERT_STREQ(mount_err("type=cahce,target=/x"),
                     "Dockerfile:2: unsupported mount type \"cahce\" (did you mean cache?)");
        ASSERT_STREQ(mount_err("type=volume"), "Dockerfile:2: unsupported mount type \"volume\"");
        ASSERT_STREQ(mount_err("type=cache,target=/x,sharing=lock"),
                     "Dockerfile:2: unsupported sharing value \"lock\" (did you mean locked?)");
        ASSERT_STREQ(mount_err("target=/x,sharing=shared"),
                     "Dockerfile:2: invalid cache sharing set for bind mount");
        ASSERT_STREQ(mount_err("target=/x,traget=/y"),
                     "Dockerfile:2: unexpected key 'traget' in 'traget=/y' (did you mean "
                     "target?)");
        ASSERT_STREQ(mount_err("target=/x,Bogus=1"),
                     "Dockerfile:2: unexpected key 'bogus' in 'Bogus=1'");
        ASSERT_STREQ(mount_err("target=/x,bogus"),
                     "Dockerfile:2: invalid field 'bogus' must be a key=value pair");
        ASSERT_STREQ(mount_err("target=/x,required"),
                     "Dockerfile:2: unexpected key 'required' for mount type 'bind'");
        ASSERT_STREQ(mount_err("target=/x,required=true,type=secret"),
                     "Dockerfile:2: unexpected key 'required' for mount type 'bind'");
        ASSERT_STREQ(mount_err("target=/x,size=10m"),
                     "Dockerfile:2: unexpected key 'size' for mount type 'bind'");
        ASSERT_STREQ(mount_err("type=tmpfs,target=/x,size=10q"),
                     "Dockerfile:2: invalid value for size: 10q");
        ASSERT_STREQ(mount_err("type=tmpfs,target=/x,size=-1"),
                     "Dockerfile:2: invalid value for size: -1");
        ASSERT_STREQ(mount_err("target=/x,ro=maybe"), "Dockerfile:2: invalid value for ro: maybe");
        ASSERT_STREQ(mount_err("target=/x,readwrite=2"),
                     "Dockerfile:2: invalid value for readwrite: 2");
        ASSERT_STREQ(mount_err("type=cache,target=/x,mode=0999"),
                     "Dockerfile:2: invalid value 0999 for mode");
        ASSERT_STREQ(mount_err("type=cache,target=/x,uid=-1"),
                     "Dockerfile:2: invalid value -1 for uid");
        ASSERT_STREQ(mount_err("type=cache,target=/x,gid=4294967296"),
                     "Dockerfile:2: invalid value 4294967296 for gid");
        ASSERT_STREQ(mount_err("target=/x,mode=0644"),
                     "Dockerfile:2: mode not allowed for \"bind\" type mounts");
        ASSERT_STREQ(mount_err("type=tmpfs,target=/x,uid=0"),
                     "Dockerfile:2: uid not allowed for \"tmpfs\" type mounts");
        ASSERT_STREQ(mount_err("type=tmpfs,target=/x,gid=0"),
                     "Dockerfile:2: gid not allowed for \"tmpfs\" type mounts");
        ASSERT_STREQ(mount_err("type=secret,id=a,from=b"),
                     "Dockerfile:2: secret mount should not have a from");
        ASSERT_STREQ(mount_err("type=secret,id=a,sharing=shared"),
                     "Dockerfile:2: secret mount should not define sharing");
        ASSERT_STREQ(mount_err("type=secret,required"),
                     "Dockerfile:2: invalid secret mount. one of source, target required");
        ASSERT_STREQ(mount_err("type=secret,id=a,source=b"),
                     "Dockerfile:2: both source and id can't be set");
        /* checked at parse time already */
        ASSERT_STREQ(mount_err("from=$STAGE,target=/x"),
                     "parse: Dockerfile:2: 'from' doesn't "
                     "support variable expansion, define alias stage instead");
        ASSERT_STREQ(mount_err("from=stage$,target=/x"), "");
        ASSERT_STREQ(mount_err("target=/x,\\\"a"),
                     "parse: Dockerfile:2: failed to parse csv "
                     "mounts: parse error on line 1, column 12: extraneous or missing \" in "
                     "quoted-field");
        ASSERT_STREQ(mount_err("target=/x,a\\\"b"),
                     "parse: Dockerfile:2: failed to parse csv "
                     "mounts: parse error on line 1, column 12: bare \" in non-quoted-field");
        ASSERT_STREQ(mount_err("\\\"a\\\"b"),
                     "parse: Dockerfile:2: failed to parse csv "
                     "mounts: parse error on line 1, column 3: extraneous or missing \" in "
                     "quoted-field");
        ASSERT_STREQ(perr1("RUN --mount= true"), "failed to parse csv mounts: EOF");
        /* parse time does not evaluate keys: the bad type shows at expansion */
        ASSERT_STREQ(perr1("RUN --mount=type=bogus true"), "");
        return 0;
}

/* ---------------------------------------------------------------- COPY/ADD */

TEST(copy_flags)
{
        PARSE1("COPY --from=build --chown=app:app --chmod=0755 --link --parents "
               "--exclude=*.md --exclude=.git a b /dest/");
        ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_COPY);
        ASSERT_STREQ(c->copy.from, "build");
        ASSERT_STREQ(c->copy.chown, "app:app");
        ASSERT_STREQ(c->copy.chmod, "0755");
        ASSERT_TRUE(c->copy.link && c->copy.parents);
        ASSERT_EQ_INT(c->copy.n_excludes, 2);
        ASSERT_STREQ(c->copy.excludes[1], ".git");
        ASSERT_EQ_INT(c->copy.n_sources, 2);
        ASSERT_STREQ(c->copy.sources[0], "a");
        ASSERT_STREQ(c->copy.dest, "/dest/");
        ASSERT_STREQ(c->copy.checksum, "");
        ASSERT_TRUE(!c->copy.keep_git_dir_set && !c->copy.unpack_set);
        return 0;
}

TEST(add_flags)
{
        {
                PARSE1("ADD --checksum=sha256:abc --keep-git-dir=false --unpack "
                       "--chmod=u+x https://example.com/a.tar.gz /x");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_ADD);
                ASSERT_STREQ(c->copy.checksum, "sha256:abc");
                ASSERT_TRUE(c->copy.keep_git_dir_set && !c->copy.keep_git_dir);
                ASSERT_TRUE(c->copy.unpack_set && c->copy.unpack);
                ASSERT_STREQ(c->copy.chmod, "u+x");
                ASSERT_STREQ(c->copy.from, "");
        }
        {
                PARSE1("ADD [\"a b\", \"/c d/\"]");
                ASSERT_STREQ(c->copy.sources[0], "a b");
                ASSERT_STREQ(c->copy.dest, "/c d/");
                ASSERT_TRUE(!c->copy.unpack_set && !c->copy.link);
        }
        return 0;
}

TEST(copy_heredocs)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("FROM scratch\n"
                      "COPY <<EOF <<-'TABS' src /dest/\n"
                      "hello $NAME\n"
                      "EOF\n"
                      "\tindented\n"
                      "\tTABS\n");
        const struct kiln_dockerfile_cmd *c;

        ASSERT_TRUE(d);
        c = d->stages[0].cmds[0];
        ASSERT_EQ_INT(c->copy.n_sources, 1);
        ASSERT_STREQ(c->copy.sources[0], "src");
        ASSERT_EQ_INT(c->copy.n_contents, 2);
        ASSERT_STREQ(c->copy.contents[0].path, "EOF");
        ASSERT_STREQ(c->copy.contents[0].data, "hello $NAME\n");
        ASSERT_TRUE(c->copy.contents[0].expand);
        ASSERT_STREQ(c->copy.contents[1].path, "TABS");
        ASSERT_STREQ(c->copy.contents[1].data, "indented\n");
        ASSERT_TRUE(!c->copy.contents[1].expand);
        ASSERT_STREQ(perr("FROM a\nCOPY a <<EOF\nx\nEOF\n"),
                     "COPY cannot accept a heredoc as a destination");
        return 0;
}

TEST(run_heredocs)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("FROM scratch\n"
                      "RUN <<-EOT bash\n"
                      "\techo hi\n"
                      "EOT\n");
        const struct kiln_dockerfile_cmd *c;

        ASSERT_TRUE(d);
        c = d->stages[0].cmds[0];
        ASSERT_EQ_INT(c->run.cmdline.n_files, 1);
        ASSERT_STREQ(c->run.cmdline.files[0].name, "EOT");
        ASSERT_STREQ(c->run.cmdline.files[0].data, "\techo hi\n");
        ASSERT_TRUE(c->run.cmdline.files[0].chomp);
        ASSERT_STREQ(c->run.cmdline.args[0], "<<-EOT bash");
        ASSERT_TRUE(c->run.cmdline.prepend_shell);
        ASSERT_EQ_INT(c->end_line, 4);
        return 0;
}

/* ------------------------------------------------------------ HEALTHCHECK */

TEST(healthcheck)
{
        {
                PARSE1("HEALTHCHECK CMD hello world");
                ASSERT_EQ_INT(c->healthcheck.n_test, 2);
                ASSERT_STREQ(c->healthcheck.test[0], "CMD-SHELL");
                ASSERT_STREQ(c->healthcheck.test[1], "hello world");
                ASSERT_EQ_INT(c->healthcheck.interval, 0);
                ASSERT_EQ_INT(c->healthcheck.retries, 0);
        }
        {
                PARSE1("HEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=0 "
                       "--start-interval=500ms --retries=3 cmd [\"curl\", \"-f\", \"x\"]");
                ASSERT_EQ_INT(c->healthcheck.n_test, 4);
                ASSERT_STREQ(c->healthcheck.test[0], "CMD");
                ASSERT_STREQ(c->healthcheck.test[3], "x");
                ASSERT_EQ_INT(c->healthcheck.interval, 90000000000ll);
                ASSERT_EQ_INT(c->healthcheck.timeout, 1500000000ll);
                ASSERT_EQ_INT(c->healthcheck.start_period, 0);
                ASSERT_EQ_INT(c->healthcheck.start_interval, 500000000ll);
                ASSERT_EQ_INT(c->healthcheck.retries, 3);
        }
        {
                PARSE1("HEALTHCHECK none");
                ASSERT_EQ_INT(c->healthcheck.n_test, 1);
                ASSERT_STREQ(c->healthcheck.test[0], "NONE");
        }
        {
                PARSE1("HEALTHCHECK --interval=1h2m3.5s --timeout=2ms --start-period=.5h CMD x");
                ASSERT_EQ_INT(c->healthcheck.interval, 3723500000000ll);
                ASSERT_EQ_INT(c->healthcheck.timeout, 2000000);
                ASSERT_EQ_INT(c->healthcheck.start_period, 1800000000000ll);
        }
        return 0;
}

TEST(healthcheck_errors)
{
        ASSERT_STREQ(perr1("HEALTHCHECK NONE x"), "HEALTHCHECK NONE takes no arguments");
        ASSERT_STREQ(perr1("HEALTHCHECK CMD"), "Missing command after HEALTHCHECK CMD");
        ASSERT_STREQ(perr1("HEALTHCHECK CMD []"), "Missing command after HEALTHCHECK CMD");
        ASSERT_STREQ(perr1("HEALTHCHECK RUN x"), "Unknown type \"RUN\" in HEALTHCHECK (try CMD)");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=50ns CMD x"),
                     "Interval \"interval\" cannot be less than 1ms");
        ASSERT_STREQ(perr1("HEALTHCHECK --timeout=-1s CMD x"),
                     "Interval \"timeout\" cannot be less than 1ms");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=0ms --timeout=1ms CMD x"), "");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=10 CMD x"),
                     "time: missing unit in duration \"10\"");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=10d CMD x"),
                     "time: unknown unit \"d\" in duration \"10d\"");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=abc CMD x"), "time: invalid duration \"abc\"");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=.s CMD x"), "time: invalid duration \".s\"");
        ASSERT_STREQ(perr1("HEALTHCHECK --interval=9999999999h CMD x"),
                     "time: invalid duration \"9999999999h\"");
        ASSERT_STREQ(perr1("HEALTHCHECK --retries=-1 CMD x"), "--retries cannot be negative (-1)");
        ASSERT_STREQ(perr1("HEALTHCHECK --retries=x CMD x"),
                     "strconv.ParseInt: parsing \"x\": invalid syntax");
        ASSERT_STREQ(perr1("HEALTHCHECK --retries=2147483648 CMD x"),
                     "strconv.ParseInt: parsing \"2147483648\": value out of range");
        ASSERT_STREQ(perr1("HEALTHCHECK --intervall=1s CMD x"),
                     "unknown flag: --intervall (did you mean interval?)");
        return 0;
}

/* ---------------------------------------------------------------- ONBUILD */

TEST(onbuild)
{
        {
                PARSE1("ONBUILD  RUN echo \"built\"   ");
                ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_ONBUILD);
                ASSERT_STREQ(c->word, "RUN echo \"built\"   "); /* as BuildKit */
        }
        {
                PARSE1("onbuild copy --from=x a b");
                ASSERT_STREQ(c->word, "copy --from=x a b");
        }
        ASSERT_STREQ(perr1("ONBUILD FROM scratch"), "FROM isn't allowed as an ONBUILD trigger");
        ASSERT_STREQ(perr1("ONBUILD maintainer me"),
                     "MAINTAINER isn't allowed as an ONBUILD trigger");
        ASSERT_STREQ(perr1("ONBUILD ONBUILD RUN touch foobar"),
                     "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
        return 0;
}

TEST(onbuild_heredoc)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("FROM scratch\n"
                      "ONBUILD RUN <<EOF\n"
                      "echo hi\n"
                      "EOF\n");

        ASSERT_TRUE(d);
        ASSERT_STREQ(d->stages[0].cmds[0]->word, "RUN <<EOF\necho hi\nEOF");
        return 0;
}

/* -------------------------------------------------------------- expansion */

/* Replaces "$X" by "<x>" and fails on "$FAIL". */
static int test_expand(void *userdata, const char *word, char **out, struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        unsigned *calls = userdata;

        (*calls)++;
        if (strstr(word, "$FAIL"))
                return kiln_error_set(err, -EINVAL, "expander says no to '%s'", word);
        for (const char *p = word; *p; p++) {
                if (p[0] == '$' && p[1] == 'X') {
                        (void) kiln_buf_puts(&b, "<x>");
                        p++;
                } else
                        (void) kiln_buf_putc(&b, *p);
        }
        *out = kiln_buf_steal(&b);
        return 0;
}

static int expand_first(const char *src, struct kiln_dockerfile_instructions **d,
                        struct kiln_dockerfile_cmd **c, unsigned *calls, struct kiln_error **err)
{
        *d = parse(src);
        if (!*d)
                return -1;
        *c = (*d)->stages[0].cmds[0];
        *calls = 0;
        return kiln_dockerfile_cmd_expand(*c, "Dockerfile", test_expand, calls, err);
}

TEST(expand_fields)
{
        struct kiln_dockerfile_instructions *d = NULL;
        struct kiln_dockerfile_cmd *c = NULL;
        struct kiln_error *err = NULL;
        unsigned calls;

        ASSERT_OK(expand_first("FROM a\nENV $X=$X B=c\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->kv.kvs[0].key, "<x>");
        ASSERT_STREQ(c->kv.kvs[0].value, "<x>");
        ASSERT_EQ_INT(calls, 4);
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_OK(expand_first("FROM a\nARG A=$X B\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->arg.args[0].value, "<x>");
        ASSERT_TRUE(c->arg.args[1].value == NULL);
        ASSERT_EQ_INT(calls, 3);
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_OK(expand_first("FROM a\nADD --chown=$X --checksum=$X $X /$X\n", &d, &c, &calls,
                               &err));
        ASSERT_STREQ(c->copy.chown, "<x>");
        ASSERT_STREQ(c->copy.checksum, "<x>");
        ASSERT_STREQ(c->copy.sources[0], "<x>");
        ASSERT_STREQ(c->copy.dest, "/<x>");
        ASSERT_EQ_INT(calls, 5); /* chown, chmod, checksum, source, dest */
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_OK(expand_first("FROM a\nCOPY --from=$X $X /d\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->copy.from, "$X"); /* the converter resolves --from */
        ASSERT_EQ_INT(calls, 4);
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_OK(expand_first("FROM a\nVOLUME $X /b\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->list.items[0], "<x>");
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_OK(expand_first("FROM a\nWORKDIR /$X\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->word, "/<x>");
        d = kiln_dockerfile_instructions_free(d);

        /* not expanded here */
        ASSERT_OK(expand_first("FROM a\nCMD echo $X\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->cmdline.args[0], "echo $X");
        ASSERT_EQ_INT(calls, 0);
        ASSERT_TRUE(!kiln_dockerfile_cmd_expandable(c->type));
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_OK(expand_first("FROM a\nEXPOSE $X\n", &d, &c, &calls, &err));
        ASSERT_STREQ(c->list.items[0], "$X");
        d = kiln_dockerfile_instructions_free(d);

        /* the expander's errors come back unchanged */
        ASSERT_TRUE(expand_first("FROM a\nUSER $FAIL\n", &d, &c, &calls, &err) < 0);
        ASSERT_STREQ(err->message, "expander says no to '$FAIL'");
        err = kiln_error_free(err);
        d = kiln_dockerfile_instructions_free(d);
        return 0;
}

TEST(expand_mounts)
{
        struct kiln_dockerfile_instructions *d = NULL;
        struct kiln_dockerfile_cmd *c = NULL;
        struct kiln_error *err = NULL;
        unsigned calls;

        ASSERT_OK(expand_first("FROM a\nRUN --mount=type=cache,target=/$X,id=$X,ro "
                               "--mount=type=tmpfs,target=/t true\n",
                               &d, &c, &calls, &err));
        ASSERT_EQ_INT(c->run.n_mounts, 2);
        ASSERT_STREQ(c->run.mounts[0].target, "/<x>");
        ASSERT_STREQ(c->run.mounts[0].cache_id, "<x>");
        ASSERT_TRUE(c->run.mounts[0].readonly);
        ASSERT_EQ_INT(c->run.mounts[1].type, KILN_DOCKERFILE_MOUNT_TMPFS);
        ASSERT_EQ_INT(calls, 5); /* values only, not "ro" */
        /* expanding again gives the same */
        ASSERT_OK(kiln_dockerfile_cmd_expand(c, "Dockerfile", test_expand, &calls, &err));
        ASSERT_EQ_INT(c->run.n_mounts, 2);
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_TRUE(expand_first("FROM a\n\nRUN --mount=type=$X true\n", &d, &c, &calls, &err) < 0);
        ASSERT_STREQ(err->message, "Dockerfile:3: unsupported mount type \"<x>\"");
        ASSERT_EQ_INT(err->line, 3);
        ASSERT_TRUE(c->run.mounts == NULL);
        err = kiln_error_free(err);
        d = kiln_dockerfile_instructions_free(d);

        ASSERT_TRUE(expand_first("FROM a\nRUN --mount=target=$FAIL true\n", &d, &c, &calls, &err) <
                    0);
        ASSERT_STREQ(err->message, "expander says no to '$FAIL'");
        err = kiln_error_free(err);
        d = kiln_dockerfile_instructions_free(d);
        return 0;
}

TEST(expand_raw_heredoc)
{
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d =
                parse("FROM scratch\n"
                      "COPY <<A <<'B' /d/\n"
                      "a=$X\n"
                      "A\n"
                      "b=$X\n"
                      "B\n");
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        unsigned calls = 0;
        struct kiln_dockerfile_cmd *c;

        ASSERT_TRUE(d);
        c = d->stages[0].cmds[0];
        ASSERT_OK(kiln_dockerfile_cmd_expand_raw(c, "Dockerfile", test_expand, &calls, &err));
        ASSERT_EQ_INT(calls, 1);
        ASSERT_STREQ(c->copy.contents[0].data, "a=<x>\n");
        ASSERT_STREQ(c->copy.contents[1].data, "b=$X\n");
        return 0;
}

/* ------------------------------------------------------------------ chmod */

static const char *chmod_err(const char *s)
{
        static char msg[256];
        struct kiln_dockerfile_chmod m;
        struct kiln_error *err = NULL;

        msg[0] = '\0';
        if (kiln_dockerfile_chmod_parse(s, &m, &err) < 0) {
                snprintf(msg, sizeof(msg), "%s", err->message);
                kiln_error_free(err);
        }
        return msg;
}

TEST(chmod_values)
{
        struct kiln_dockerfile_chmod m;
        struct kiln_error *err = NULL;

        ASSERT_OK(kiln_dockerfile_chmod_parse("0755", &m, &err));
        ASSERT_TRUE(!m.symbolic && m.mode == 0755);
        ASSERT_OK(kiln_dockerfile_chmod_parse("7777", &m, &err));
        ASSERT_EQ_INT(m.mode, 07777);
        ASSERT_OK(kiln_dockerfile_chmod_parse("u+rwx,go=rx", &m, &err));
        ASSERT_TRUE(m.symbolic);
        static const char *const ok[] = { "+x",     "a-w",          "u=g", "go=",
                                          "=rw,+X", "u=rwx,go=u-w", "o+t", "ug+s" };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                ASSERT_STREQ(chmod_err(ok[i]), "");
        ASSERT_STREQ(chmod_err("10000"), "invalid chmod parameter: '10000'. it should be octal "
                                         "string and between 0 and 07777");
        ASSERT_STREQ(chmod_err("0999"), "invalid chmod parameter: '0999'. it should be octal "
                                        "string and between 0 and 07777");
        ASSERT_STREQ(chmod_err("u"), "invalid syntax");
        ASSERT_STREQ(chmod_err("x+u"), "invalid syntax");
        ASSERT_STREQ(chmod_err("u+r,"), "invalid syntax");
        ASSERT_STREQ(chmod_err("u+y"), "invalid syntax");
        ASSERT_STREQ(chmod_err("+5"), "invalid syntax");
        return 0;
}

TEST(names)
{
        ASSERT_STREQ(kiln_dockerfile_cmd_type_name(KILN_DOCKERFILE_CMD_HEALTHCHECK), "HEALTHCHECK");
        ASSERT_STREQ(kiln_dockerfile_mount_type_name(KILN_DOCKERFILE_MOUNT_SSH), "ssh");
        ASSERT_STREQ(kiln_dockerfile_network_name(KILN_DOCKERFILE_NETWORK_HOST), "host");
        ASSERT_STREQ(kiln_dockerfile_security_name(KILN_DOCKERFILE_SECURITY_INSECURE), "insecure");
        ASSERT_STREQ(kiln_dockerfile_sharing_name(KILN_DOCKERFILE_SHARING_UNSET), "");
        ASSERT_STREQ(kiln_dockerfile_sharing_name(KILN_DOCKERFILE_SHARING_SHARED), "shared");
        ASSERT_TRUE(kiln_dockerfile_cmd_expandable(KILN_DOCKERFILE_CMD_RUN));
        ASSERT_TRUE(!kiln_dockerfile_cmd_expandable(KILN_DOCKERFILE_CMD_ONBUILD));
        return 0;
}

/* Every instruction with a handful of argument shapes: no crash, and either
 * a result or an error with the line (BuildKit's TestNilLinter). */
TEST(every_instruction_shapes)
{
        static const char *const cmds[] = { "add",         "arg",    "cmd",        "copy",
                                            "entrypoint",  "env",    "expose",     "from",
                                            "healthcheck", "label",  "maintainer", "onbuild",
                                            "run",         "shell",  "stopsignal", "user",
                                            "volume",      "workdir" };
        static const char *const shapes[] = { " foo=bar", " a", " a b", " a b c", " 0 0" };
        char src[256];

        for (size_t i = 0; i < ELEMENTSOF(cmds); i++)
                for (size_t j = 0; j < ELEMENTSOF(shapes); j++) {
                        struct kiln_dockerfile_instructions *d;

                        snprintf(src, sizeof(src), "FROM busybox\n%s%s\n", cmds[i], shapes[j]);
                        d = parse(src);
                        if (!d && !startswith(last_error, "parser:"))
                                ASSERT_EQ_INT(last_error_line, 2);
                        kiln_dockerfile_instructions_free(d);
                }
        return 0;
}

TEST(single_instruction_api)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_dockerfile_cmd *c = NULL;
        struct kiln_dockerfile_stage *s = NULL;
        const char *src = "FROM a AS b\nRUN true\nCOPY x\n";

        ASSERT_OK(kiln_dockerfile_parse(src, strlen(src), "Dockerfile", &root, &err));
        ASSERT_OK(kiln_dockerfile_instruction_parse(root->children[0], "Dockerfile", &c, &s, &err));
        ASSERT_TRUE(s && !c);
        ASSERT_STREQ(s->name, "b");
        s = kiln_dockerfile_stage_free(s);
        ASSERT_OK(kiln_dockerfile_instruction_parse(root->children[1], "Dockerfile", &c, &s, &err));
        ASSERT_TRUE(c && !s);
        ASSERT_EQ_INT(c->type, KILN_DOCKERFILE_CMD_RUN);
        c = kiln_dockerfile_cmd_free(c);
        ASSERT_TRUE(kiln_dockerfile_instruction_parse(root->children[2], "Dockerfile", &c, &s,
                                                      &err) == -EINVAL);
        ASSERT_TRUE(!c && !s);
        ASSERT_STREQ(err->message, "Dockerfile:3: COPY requires at least two arguments, but only "
                                   "one was provided. Destination could not be determined");
        ASSERT_EQ_INT(err->line, 3);
        ASSERT_STREQ(err->file, "Dockerfile");
        return 0;
}
