/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>

#include "base/buf.h"
#include "base/error.h"
#include "dockerfile/convert.h"
#include "kiln-test.h"
#include "llb/llb.h"

#define ASSERT_CONTAINS(s, sub)                                                                 \
        do {                                                                                    \
                const char *_s = (s), *_sub = (sub);                                            \
                if (!_s || !strstr(_s, _sub))                                                   \
                        KILN_TEST_FAIL("'%s' does not contain '%s'", _s ? _s : "(null)", _sub); \
        } while (0)

#define ASSERT_NOT_CONTAINS(s, sub)                                     \
        do {                                                            \
                const char *_s = (s), *_sub = (sub);                    \
                if (_s && strstr(_s, _sub))                             \
                        KILN_TEST_FAIL("'%s' contains '%s'", _s, _sub); \
        } while (0)

/* ---- a resolver with canned image configs ---- */

struct canned {
        const char *ref; /* as the converter asks: docker.io/library/alpine:latest */
        const char *digest;
        const char *config;
};

static const struct canned CANNED[] = {
        { "docker.io/library/alpine:latest",
          "sha256:1111111111111111111111111111111111111111111111111111111111111111",
          "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
          "\"diff_ids\":[\"sha256:aaaa\"]},\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/"
          "bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"/bin/sh\"]},"
          "\"history\":[{\"created_by\":\"ADD rootfs\"}]}" },
        { "docker.io/library/golang:1.22",
          "sha256:2222222222222222222222222222222222222222222222222222222222222222",
          "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
          "\"diff_ids\":[\"sha256:bbbb\"]},\"config\":{\"Env\":[\"PATH=/go/bin:/usr/bin\","
          "\"GOPATH=/go\"],\"WorkingDir\":\"/go\",\"User\":\"gopher\","
          "\"Shell\":[\"/bin/bash\",\"-c\"],\"Labels\":{\"base\":\"golang\"}}}" },
        { "docker.io/library/onbuild:latest",
          "sha256:3333333333333333333333333333333333333333333333333333333333333333",
          "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
          "\"diff_ids\":[\"sha256:cccc\"]},\"config\":{\"OnBuild\":[\"RUN echo from-onbuild\","
          "\"ENV TRIGGERED=yes\"]}}" },
        { "docker.io/library/arm:latest", NULL,
          "{\"architecture\":\"arm64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
          "\"diff_ids\":[\"sha256:dddd\"]}}" },
        { "docker.io/library/empty:latest", NULL,
          "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\"}}" },
};

static unsigned resolve_calls;
static char resolved_refs[16][128];

static int resolve(void *userdata, const char *ref, const struct kiln_content_platform *platform,
                   struct kiln_dockerfile_resolved_image *ret, struct kiln_error **err)
{
        (void) userdata;
        (void) platform;
        if (resolve_calls < 16)
                (void) snprintf(resolved_refs[resolve_calls], sizeof(resolved_refs[0]), "%s", ref);
        resolve_calls++;
        for (size_t i = 0; i < ELEMENTSOF(CANNED); i++)
                if (streq(CANNED[i].ref, ref)) {
                        ret->config = kiln_xstrdup(CANNED[i].config);
                        ret->config_len = strlen(CANNED[i].config);
                        ret->digest = CANNED[i].digest ? kiln_xstrdup(CANNED[i].digest) : NULL;
                        return 0;
                }
        return kiln_error_set(err, -ENOENT, "pull access denied, repository does not exist");
}

static struct kiln_dockerfile_convert_options options(void)
{
        return (struct kiln_dockerfile_convert_options){
                .resolve = resolve,
                .build_platform = "linux/amd64",
        };
}

/* Converts text; returns the result, or NULL with the message in *msg. */
static struct kiln_dockerfile_convert_result *
convert_opt(const char *text, const struct kiln_dockerfile_convert_options *opt, char **msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_dockerfile_convert_result *res = NULL;
        resolve_calls = 0;
        if (kiln_dockerfile_convert(text, strlen(text), opt, &res, &err) < 0) {
                if (msg)
                        *msg = kiln_xstrdup(kiln_error_message(err));
                else
                        printf("# convert: %s\n", kiln_error_message(err));
                return NULL;
        }
        return res;
}

static struct kiln_dockerfile_convert_result *convert(const char *text)
{
        struct kiln_dockerfile_convert_options opt = options();
        return convert_opt(text, &opt, NULL);
}

static char *convert_error(const char *text, const struct kiln_dockerfile_convert_options *opt)
{
        struct kiln_dockerfile_convert_options o = opt ? *opt : options();
        char *msg = NULL;
        struct kiln_dockerfile_convert_result *r = convert_opt(text, &o, &msg);
        if (r) {
                kiln_dockerfile_convert_result_free(r);
                return kiln_xstrdup("(no error)");
        }
        return msg;
}

/* ---- looking at results ---- */

static const char *op_name(const struct kiln_llb_op *op)
{
        return kiln_llb_strmap_get(&op->meta.description, "llb.customname");
}

/* The first op whose step name contains sub. */
static const struct kiln_llb_op *find_op(const struct kiln_dockerfile_convert_result *r,
                                         const char *sub)
{
        for (size_t i = 0; i < kiln_llb_def_n_ops(r->def); i++) {
                const struct kiln_llb_op *op = kiln_llb_def_op(r->def, i);
                const char *n = op_name(op);
                if (n && strstr(n, sub))
                        return op;
        }
        return NULL;
}

/* The first op of type t whose step name contains sub. */
static const struct kiln_llb_op *find_op_t(const struct kiln_dockerfile_convert_result *r,
                                           const char *sub, enum kiln_llb_op_type t)
{
        for (size_t i = 0; i < kiln_llb_def_n_ops(r->def); i++) {
                const struct kiln_llb_op *op = kiln_llb_def_op(r->def, i);
                const char *n = op_name(op);
                if (n && strstr(n, sub) && op->type == t)
                        return op;
        }
        return NULL;
}

static size_t count_type(const struct kiln_dockerfile_convert_result *r, enum kiln_llb_op_type t)
{
        size_t n = 0;
        for (size_t i = 0; i < kiln_llb_def_n_ops(r->def); i++)
                n += kiln_llb_def_op(r->def, i)->type == t;
        return n;
}

static const struct kiln_llb_op *output_op(const struct kiln_dockerfile_convert_result *r)
{
        return kiln_llb_def_output(r->def).op;
}

static bool has_env(const struct kiln_llb_op *op, const char *kv)
{
        for (size_t i = 0; i < op->exec.env.n; i++)
                if (streq(op->exec.env.v[i], kv))
                        return true;
        return false;
}

static bool has_env_key(const struct kiln_llb_op *op, const char *key)
{
        size_t n = strlen(key);
        for (size_t i = 0; i < op->exec.env.n; i++)
                if (!strncmp(op->exec.env.v[i], key, n) && op->exec.env.v[i][n] == '=')
                        return true;
        return false;
}

static json_t *config_of(const struct kiln_dockerfile_convert_result *r)
{
        json_error_t e;
        return json_loadb(r->config, r->config_len, 0, &e);
}

/* config["config"][key] as compact JSON text, "" when absent. */
static char *config_field(const struct kiln_dockerfile_convert_result *r, const char *key)
{
        json_t *root = config_of(r);
        json_t *v = json_object_get(json_object_get(root, "config"), key);
        char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("");
        json_decref(root);
        return s;
}

/* The created_by of history entry i counted from the end (0: last). */
static char *history_from_end(const struct kiln_dockerfile_convert_result *r, size_t i)
{
        json_t *root = config_of(r);
        json_t *h = json_object_get(root, "history");
        size_t n = json_array_size(h);
        char *s = n > i ? strdup(json_string_value(
                                  json_object_get(json_array_get(h, n - 1 - i), "created_by")))
                        : strdup("");
        json_decref(root);
        return s;
}

static bool has_step(const struct kiln_dockerfile_convert_result *r, const char *name)
{
        for (size_t i = 0; i < r->n_steps; i++)
                if (streq(r->steps[i], name))
                        return true;
        return false;
}

static bool has_warning(const struct kiln_dockerfile_convert_result *r, const char *rule,
                        const char *msg)
{
        for (size_t i = 0; i < r->n_warnings; i++)
                if (streq(r->warnings[i].rule, rule) &&
                    (!msg || streq(r->warnings[i].message, msg)))
                        return true;
        return false;
}

static char *terminal_digest(const char *text, const struct kiln_dockerfile_convert_options *opt)
{
        struct kiln_dockerfile_convert_result *r = convert_opt(text, opt, NULL);
        if (!r)
                return NULL;
        char *d = kiln_xstrdup(output_op(r)->digest);
        kiln_dockerfile_convert_result_free(r);
        return d;
}

#define RESULT _cleanup_(kiln_dockerfile_convert_result_freep) struct kiln_dockerfile_convert_result

/* ---- FROM and RUN ---- */

TEST(run_shell_form)
{
        RESULT *r = convert("FROM alpine\nRUN echo hi\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(op && op->type == KILN_LLB_OP_EXEC);
        ASSERT_EQ_INT(op->exec.args.n, 3);
        ASSERT_STREQ(op->exec.args.v[0], "/bin/sh");
        ASSERT_STREQ(op->exec.args.v[1], "-c");
        ASSERT_STREQ(op->exec.args.v[2], "echo hi");
        ASSERT_STREQ(op->exec.cwd, "/");
        ASSERT_TRUE(
                has_env(op, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
        ASSERT_EQ_INT(op->exec.n_mounts, 1);
        ASSERT_STREQ(op->exec.mounts[0].target, "/");
        const struct kiln_llb_op *img = op->exec.mounts[0].input.op;
        ASSERT_TRUE(img && img->type == KILN_LLB_OP_SOURCE);
        ASSERT_STREQ(img->source.image.ref,
                     "docker.io/library/"
                     "alpine:latest@sha256:"
                     "1111111111111111111111111111111111111111111111111111111111111111");
        ASSERT_STREQ(img->platform.os, "linux");
        ASSERT_STREQ(img->platform.architecture, "amd64");
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "RUN /bin/sh -c echo hi # buildkit");
        /* the base image's history is kept, its Cmd too */
        ASSERT_CONTAINS(r->config, "\"created_by\":\"ADD rootfs\"");
        _cleanup_free_ char *cmd = config_field(r, "Cmd");
        ASSERT_STREQ(cmd, "[\"/bin/sh\"]");
        return 0;
}

TEST(run_exec_form_and_steps)
{
        RESULT *r = convert("FROM alpine\nRUN [\"echo\", \"a b\"]\nRUN echo two\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = find_op(r, "RUN [");
        ASSERT_TRUE(op);
        ASSERT_EQ_INT(op->exec.args.n, 2);
        ASSERT_STREQ(op->exec.args.v[1], "a b");
        ASSERT_TRUE(has_step(r, "[internal] load metadata for docker.io/library/alpine:latest"));
        ASSERT_TRUE(has_step(r,
                             "[1/3] FROM "
                             "docker.io/library/"
                             "alpine:latest@sha256:"
                             "1111111111111111111111111111111111111111111111111111111111111111"));
        ASSERT_TRUE(has_step(r, "[2/3] RUN [\"echo\", \"a b\"]"));
        ASSERT_TRUE(has_step(r, "[3/3] RUN echo two"));
        ASSERT_STREQ(r->steps[0], "[internal] load metadata for docker.io/library/alpine:latest");
        _cleanup_free_ char *h = history_from_end(r, 1);
        ASSERT_STREQ(h, "RUN echo a b # buildkit");
        return 0;
}

TEST(step_index_right_aligned)
{
        RESULT *r = convert("FROM alpine\nRUN 1\nRUN 2\nRUN 3\nRUN 4\nRUN 5\nRUN 6\nRUN 7\n"
                            "RUN 8\nRUN 9\nRUN 10\nRUN 11\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_step(r, "[ 3/12] RUN 2"));
        ASSERT_TRUE(has_step(r, "[12/12] RUN 11"));
        ASSERT_TRUE(find_op(r, "[ 1/12] FROM docker.io/library/alpine:latest@sha256:"));
        return 0;
}

TEST(stage_step_names)
{
        RESULT *r = convert("FROM alpine AS build\nRUN make\nFROM alpine\nCOPY --from=build /a /b\n"
                            "RUN x\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_step(r, "[build 2/2] RUN make"));
        ASSERT_TRUE(has_step(r, "[stage-1 2/3] COPY --from=build /a /b"));
        ASSERT_TRUE(has_step(r, "[stage-1 3/3] RUN x"));
        ASSERT_TRUE(find_op(r, "[build 1/2] FROM docker.io/library/alpine:latest@sha256:"));
        return 0;
}

TEST(run_heredoc)
{
        RESULT *r = convert("FROM alpine\nRUN <<EOT\necho one\necho two\nEOT\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_STREQ(op->exec.args.v[2], "echo one\necho two\n");
        ASSERT_TRUE(has_step(r, "[2/2] RUN <<EOT (echo one...)"));
        RESULT *s = convert("FROM alpine\nRUN <<EOT\n#!/usr/bin/env python3\nprint(1)\nEOT\n");
        ASSERT_TRUE(s);
        op = output_op(s);
        ASSERT_STREQ(op->exec.args.v[2], "/dev/pipes/EOT");
        ASSERT_EQ_INT(op->exec.n_mounts, 2);
        ASSERT_STREQ(op->exec.mounts[1].target, "/dev/pipes/");
        ASSERT_TRUE(op->exec.mounts[1].readonly);
        const struct kiln_llb_op *mk = op->exec.mounts[1].input.op;
        ASSERT_TRUE(mk && mk->type == KILN_LLB_OP_FILE);
        ASSERT_EQ_INT(mk->file.actions[0].type, KILN_LLB_FILE_MKFILE);
        ASSERT_STREQ(mk->file.actions[0].mkfile.path, "/EOT");
        ASSERT_EQ_INT(mk->file.actions[0].mkfile.mode, 0755);
        ASSERT_STREQ(op_name(mk), "[internal] preparing inline document");
        return 0;
}

TEST(run_mounts)
{
        RESULT *r = convert("FROM alpine AS src\nRUN make\n"
                            "FROM alpine\n"
                            "RUN --mount=type=bind,from=src,source=/out,target=/in "
                            "--mount=type=cache,target=/root/.cache,sharing=locked "
                            "--mount=type=tmpfs,target=/tmp,size=1m "
                            "--mount=type=secret,id=tok,env=TOKEN "
                            "--mount=type=ssh --network=none --security=insecure echo $TOKEN\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(op->type == KILN_LLB_OP_EXEC);
        ASSERT_EQ_INT(op->exec.network, KILN_LLB_NETWORK_NONE);
        ASSERT_EQ_INT(op->exec.security, KILN_LLB_SECURITY_INSECURE);
        bool bind = false, cache = false, tmpfs = false, ssh = false;
        for (size_t i = 0; i < op->exec.n_mounts; i++) {
                const struct kiln_llb_mount *m = &op->exec.mounts[i];
                if (streq(m->target, "/in")) {
                        bind = m->type == KILN_LLB_MOUNT_BIND && m->readonly &&
                               streq(m->selector, "/out") && m->input.op &&
                               m->input.op->type == KILN_LLB_OP_EXEC;
                } else if (streq(m->target, "/root/.cache")) {
                        cache = m->type == KILN_LLB_MOUNT_CACHE && streq(m->id, "//root/.cache") &&
                                m->sharing == KILN_LLB_CACHE_LOCKED && !m->input.op;
                } else if (streq(m->target, "/tmp")) {
                        tmpfs = m->type == KILN_LLB_MOUNT_TMPFS && m->tmpfs_size == 1024 * 1024;
                } else if (m->type == KILN_LLB_MOUNT_SSH) {
                        ssh = streq(m->id, "default") &&
                              streq(m->target, "/run/buildkit/ssh_agent.0") && m->optional;
                }
        }
        ASSERT_TRUE(bind);
        ASSERT_TRUE(cache);
        ASSERT_TRUE(tmpfs);
        ASSERT_TRUE(ssh);
        ASSERT_EQ_INT(op->exec.n_secret_env, 1);
        ASSERT_STREQ(op->exec.secret_env[0].id, "tok");
        ASSERT_STREQ(op->exec.secret_env[0].name, "TOKEN");
        ASSERT_TRUE(has_env(op, "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"));
        /* mounts are sorted by target */
        for (size_t i = 1; i < op->exec.n_mounts; i++)
                ASSERT_TRUE(strcmp(op->exec.mounts[i - 1].target, op->exec.mounts[i].target) <= 0);
        /* the secret's value is masked in the step name */
        ASSERT_TRUE(find_op(r, "echo ****"));
        return 0;
}

/* --network for the whole build: every RUN without its own --network. */
TEST(run_network_for_the_whole_build)
{
        struct kiln_dockerfile_convert_options o = options();
        o.network = KILN_LLB_NETWORK_NONE;
        RESULT *r = convert_opt("FROM alpine\nRUN echo a\nRUN --network=host echo b\n", &o, NULL);
        ASSERT_TRUE(r);
        const struct kiln_llb_op *a = find_op(r, "RUN echo a");
        const struct kiln_llb_op *b = find_op(r, "RUN --network=host echo b");
        ASSERT_TRUE(a && b);
        ASSERT_EQ_INT(a->exec.network, KILN_LLB_NETWORK_NONE);
        ASSERT_EQ_INT(b->exec.network, KILN_LLB_NETWORK_HOST);
        /* the network is part of the op, so of its cache key */
        RESULT *d = convert("FROM alpine\nRUN echo a\nRUN --network=host echo b\n");
        ASSERT_TRUE(d);
        ASSERT_TRUE(!streq(find_op(d, "RUN echo a")->digest, a->digest));
        return 0;
}

TEST(run_secret_file_and_bind_context)
{
        RESULT *r = convert("FROM alpine\nWORKDIR /w\n"
                            "RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required "
                            "--mount=src=pkg,dst=pkg,rw true\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        bool secret = false, bind = false;
        for (size_t i = 0; i < op->exec.n_mounts; i++) {
                const struct kiln_llb_mount *m = &op->exec.mounts[i];
                if (m->type == KILN_LLB_MOUNT_SECRET)
                        secret = streq(m->id, "npmrc") && streq(m->target, "/root/.npmrc") &&
                                 !m->optional && m->mode == 0400;
                if (streq(m->target, "/w/pkg"))
                        bind = m->no_output && !m->readonly && streq(m->selector, "/pkg") &&
                               m->input.op && m->input.op->type == KILN_LLB_OP_SOURCE &&
                               m->input.op->source.type == KILN_LLB_SOURCE_LOCAL;
        }
        ASSERT_TRUE(secret);
        ASSERT_TRUE(bind);
        return 0;
}

/* ---- scoping ---- */

TEST(scope_global_arg_in_from)
{
        RESULT *r = convert("ARG IMG=golang\nARG TAG=1.22\nFROM ${IMG}:$TAG\nRUN echo $TAG\n");
        ASSERT_TRUE(r);
        ASSERT_STREQ(resolved_refs[0], "docker.io/library/golang:1.22");
        /* not visible in the stage without a redeclaration */
        ASSERT_TRUE(!has_env_key(output_op(r), "TAG"));
        return 0;
}

TEST(scope_redeclared_arg_takes_global_default)
{
        RESULT *r = convert("ARG V=1\nFROM alpine\nARG V\nRUN echo $V\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_env(output_op(r), "V=1"));
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "RUN |1 V=1 /bin/sh -c echo $V # buildkit");
        _cleanup_free_ char *a = history_from_end(r, 1);
        ASSERT_STREQ(a, "ARG V=1");
        return 0;
}

TEST(scope_build_arg_overrides)
{
        struct kiln_dockerfile_pair args[] = { { "V", "cli" }, { "UNDECLARED", "x" } };
        struct kiln_dockerfile_convert_options o = options();
        o.build_args = args;
        o.n_build_args = ELEMENTSOF(args);
        RESULT *r = convert_opt("ARG V=1\nFROM alpine\nARG V=2\nARG W\nRUN env\n", &o, NULL);
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(has_env(op, "V=cli"));
        ASSERT_TRUE(!has_env_key(op, "UNDECLARED"));
        /* declared without a value: not in the environment, in the history */
        ASSERT_TRUE(!has_env_key(op, "W"));
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "RUN |2 V=cli W= /bin/sh -c env # buildkit");
        return 0;
}

TEST(scope_env_over_arg)
{
        RESULT *r = convert("FROM alpine\nARG A=1\nENV A=2\nRUN echo $A\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_env(output_op(r), "A=2"));
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "RUN |1 A=2 /bin/sh -c echo $A # buildkit");
        return 0;
}

TEST(scope_same_instruction_sees_old_values)
{
        RESULT *r = convert("FROM alpine\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n"
                            "RUN true\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(has_env(op, "def=hello"));
        ASSERT_TRUE(has_env(op, "ghi=bye"));
        _cleanup_free_ char *h = history_from_end(r, 2);
        ASSERT_STREQ(h, "ENV abc=bye def=hello");
        return 0;
}

TEST(scope_arg_inherited_by_child_stage)
{
        RESULT *r = convert("FROM alpine AS base\nARG X=1\nFROM base\nRUN echo $X\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_env(output_op(r), "X=1"));
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "RUN |1 X=1 /bin/sh -c echo $X # buildkit");
        /* but not by a stage that only copies from it */
        RESULT *s = convert("FROM alpine AS base\nARG X=1\nFROM alpine\nCOPY --from=base / /\n"
                            "RUN echo $X\n");
        ASSERT_TRUE(s);
        ASSERT_TRUE(!has_env_key(output_op(s), "X"));
        return 0;
}

TEST(scope_arg_visible_from_declaration)
{
        RESULT *r = convert("FROM alpine\nRUN echo $A\nARG A=1\nRUN echo $A\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *first = find_op(r, "[2/3]");
        ASSERT_TRUE(first && !has_env_key(first, "A"));
        ASSERT_TRUE(has_env(output_op(r), "A=1"));
        return 0;
}

TEST(scope_platform_args)
{
        struct kiln_dockerfile_convert_options o = options();
        o.target_platform = "linux/arm64";
        RESULT *r =
                convert_opt("FROM alpine\nRUN echo $TARGETARCH\nARG TARGETARCH\nARG BUILDPLATFORM\n"
                            "ARG TARGETPLATFORM\nRUN echo $TARGETARCH\n",
                            &o, NULL);
        ASSERT_TRUE(r);
        const struct kiln_llb_op *first = find_op(r, "[2/3]");
        ASSERT_TRUE(first && !has_env_key(first, "TARGETARCH"));
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(has_env(op, "TARGETARCH=arm64"));
        ASSERT_TRUE(has_env(op, "BUILDPLATFORM=linux/amd64"));
        ASSERT_TRUE(has_env(op, "TARGETPLATFORM=linux/arm64"));
        ASSERT_STREQ(op->platform.architecture, "arm64");
        /* the config takes the target platform */
        json_t *cfg = config_of(r);
        ASSERT_STREQ(json_string_value(json_object_get(cfg, "architecture")), "arm64");
        json_decref(cfg);
        return 0;
}

TEST(scope_from_platform_build_platform)
{
        struct kiln_dockerfile_convert_options o = options();
        o.target_platform = "linux/arm64";
        RESULT *r = convert_opt("FROM --platform=$BUILDPLATFORM alpine AS b\nRUN true\n"
                                "FROM alpine\nCOPY --from=b /x /x\n",
                                &o, NULL);
        ASSERT_TRUE(r);
        const struct kiln_llb_op *run = find_op(r, "[b 2/2] RUN true");
        ASSERT_TRUE(run);
        ASSERT_STREQ(run->platform.architecture, "amd64");
        ASSERT_STREQ(output_op(r)->platform.architecture, "arm64");
        return 0;
}

TEST(scope_proxy_args)
{
        struct kiln_dockerfile_pair args[] = { { "HTTP_PROXY", "http://proxy:3128" },
                                               { "no_proxy", "localhost" } };
        struct kiln_dockerfile_convert_options o = options();
        o.build_args = args;
        o.n_build_args = ELEMENTSOF(args);
        RESULT *r = convert_opt("FROM alpine\nRUN wget x\n", &o, NULL);
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_STREQ(op->exec.proxy_env.http_proxy, "http://proxy:3128");
        ASSERT_STREQ(op->exec.proxy_env.no_proxy, "localhost");
        ASSERT_TRUE(!has_env_key(op, "HTTP_PROXY"));
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "RUN /bin/sh -c wget x # buildkit");
        /* declared: part of the environment and the history */
        RESULT *s = convert_opt("FROM alpine\nARG HTTP_PROXY\nRUN wget x\n", &o, NULL);
        ASSERT_TRUE(s);
        ASSERT_TRUE(has_env(output_op(s), "HTTP_PROXY=http://proxy:3128"));
        return 0;
}

/* ---- digests ---- */

TEST(digest_stability)
{
        struct kiln_dockerfile_convert_options o = options();
        const char *df = "FROM alpine\nARG V=1\nRUN echo $V\nCOPY . /app\n";
        _cleanup_free_ char *a = terminal_digest(df, &o);
        _cleanup_free_ char *b = terminal_digest(df, &o);
        ASSERT_TRUE(a && b);
        ASSERT_STREQ(a, b);
        _cleanup_free_ char *c =
                terminal_digest("FROM alpine\nARG V=1\nRUN echo $V!\nCOPY . /app\n", &o);
        ASSERT_TRUE(c && !streq(a, c));
        struct kiln_dockerfile_pair p1[] = { { "HTTP_PROXY", "http://one" } };
        struct kiln_dockerfile_pair p2[] = { { "HTTP_PROXY", "http://two" } };
        o.build_args = p1;
        o.n_build_args = 1;
        _cleanup_free_ char *d = terminal_digest(df, &o);
        o.build_args = p2;
        _cleanup_free_ char *e = terminal_digest(df, &o);
        ASSERT_TRUE(d && e);
        ASSERT_STREQ(d, e);
        ASSERT_STREQ(a, d);
        /* a declared build arg is part of the key */
        struct kiln_dockerfile_pair v2[] = { { "V", "2" } };
        o.build_args = v2;
        _cleanup_free_ char *f = terminal_digest(df, &o);
        ASSERT_TRUE(f && !streq(a, f));
        return 0;
}

/* ---- stages ---- */

TEST(target_and_unused_stages)
{
        struct kiln_dockerfile_convert_options o = options();
        o.target = "BUILD";
        RESULT *r = convert_opt("FROM golang:1.22 AS build\nRUN make\n"
                                "FROM nosuchimage AS other\nRUN never\n"
                                "FROM alpine\nCOPY --from=build /a /a\n",
                                &o, NULL);
        ASSERT_TRUE(r);
        ASSERT_EQ_INT(resolve_calls, 1);
        ASSERT_STREQ(resolved_refs[0], "docker.io/library/golang:1.22");
        ASSERT_TRUE(has_step(r, "[build 2/2] RUN make"));
        ASSERT_TRUE(!find_op(r, "never"));
        /* the default target: the last stage, which does not need "other" */
        RESULT *s = convert("FROM golang:1.22 AS build\nRUN make\nFROM nosuchimage AS other\n"
                            "RUN never\nFROM alpine\nCOPY --from=build /a /a\n");
        ASSERT_TRUE(s);
        ASSERT_EQ_INT(resolve_calls, 2);
        ASSERT_TRUE(!find_op(s, "never"));
        return 0;
}

TEST(target_not_found)
{
        struct kiln_dockerfile_convert_options o = options();
        o.target = "buidl";
        _cleanup_free_ char *m = convert_error("FROM alpine AS build\nRUN x\n", &o);
        ASSERT_STREQ(m, "target stage \"buidl\" could not be found (did you mean build?)");
        o.target = "zzz";
        _cleanup_free_ char *n = convert_error("FROM alpine AS build\nRUN x\n", &o);
        ASSERT_STREQ(n, "target stage \"zzz\" could not be found");
        return 0;
}

TEST(stage_by_index)
{
        RESULT *r = convert("FROM alpine\nRUN make\nFROM alpine\nCOPY --from=0 /out /out\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(op->type == KILN_LLB_OP_FILE);
        const struct kiln_llb_op *src = op->file.actions[0].copy.src.op;
        ASSERT_TRUE(src && src->type == KILN_LLB_OP_EXEC);
        ASSERT_STREQ(src->exec.args.v[2], "make");
        _cleanup_free_ char *m = convert_error(
                "FROM alpine\nRUN make\nFROM alpine\nCOPY --from=5 /out /out\n", NULL);
        ASSERT_STREQ(m, "Dockerfile:4: invalid stage index 5");
        return 0;
}

TEST(copy_from_image)
{
        RESULT *r = convert("FROM alpine\nCOPY --from=golang:1.22 /usr/local/go /go\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        const struct kiln_llb_op *src = op->file.actions[0].copy.src.op;
        ASSERT_TRUE(src && src->type == KILN_LLB_OP_SOURCE);
        ASSERT_CONTAINS(src->source.image.ref, "docker.io/library/golang:1.22@sha256:2222");
        ASSERT_STREQ(op_name(src),
                     "FROM "
                     "docker.io/library/"
                     "golang:1.22@sha256:"
                     "2222222222222222222222222222222222222222222222222222222222222222");
        return 0;
}

TEST(stage_errors)
{
        _cleanup_free_ char *cycle =
                convert_error("FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\n"
                              "COPY --from=a /y /y\n",
                              NULL);
        ASSERT_CONTAINS(cycle, "circular dependency detected on stage: a");
        ASSERT_CONTAINS(cycle, "Dockerfile:2:");
        _cleanup_free_ char *fwd = convert_error(
                "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nFROM a\n", NULL);
        ASSERT_STREQ(fwd, "Dockerfile:2: cannot copy from stage \"b\", it needs to be defined "
                          "before current stage \"a\"");
        _cleanup_free_ char *blank = convert_error("ARG X\nFROM $X\n", NULL);
        ASSERT_STREQ(blank, "Dockerfile:2: base name ($X) should not be blank");
        _cleanup_free_ char *var =
                convert_error("FROM alpine\nARG S=a\nCOPY --from=$S /x /x\n", NULL);
        ASSERT_CONTAINS(var, "variable expansion is not supported for --from");
        _cleanup_free_ char *missing = convert_error("FROM alpien\n", NULL);
        ASSERT_STREQ(missing, "Dockerfile:1: alpien: pull access denied, repository does not exist "
                              "(did you mean alpine?)");
        _cleanup_free_ char *unknown = convert_error("FROM alpine\nRUNN x\n", NULL);
        ASSERT_STREQ(unknown, "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)");
        _cleanup_free_ char *bad = convert_error("FROM Alpine\n", NULL);
        ASSERT_STREQ(bad, "Dockerfile:1: failed to parse stage name \"Alpine\": invalid reference "
                          "'Alpine': repository name 'library/Alpine' must be lowercase");
        _cleanup_free_ char *empty = convert_error("", NULL);
        ASSERT_STREQ(empty, "the Dockerfile cannot be empty");
        _cleanup_free_ char *nostage = convert_error("ARG X=1\n", NULL);
        ASSERT_STREQ(nostage, "dockerfile contains no stages to build");
        _cleanup_free_ char *flag = convert_error("FROM alpine\nCOPY --nope=1 a b\n", NULL);
        ASSERT_CONTAINS(flag, "unknown flag: --nope");
        ASSERT_CONTAINS(flag, ":2");
        return 0;
}

TEST(from_scratch)
{
        RESULT *r = convert("FROM scratch\nCOPY a /a\n");
        ASSERT_TRUE(r);
        ASSERT_EQ_INT(resolve_calls, 0);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(op->type == KILN_LLB_OP_FILE && !op->file.base.op);
        ASSERT_TRUE(has_step(r, "[1/1] COPY a /a"));
        _cleanup_free_ char *env = config_field(r, "Env");
        ASSERT_STREQ(env,
                     "[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]");
        _cleanup_free_ char *wd = config_field(r, "WorkingDir");
        ASSERT_STREQ(wd, "\"/\"");
        /* an empty target: no output */
        RESULT *s = convert("FROM scratch\nENV A=1\n");
        ASSERT_TRUE(s);
        ASSERT_TRUE(!kiln_llb_def_has_output(s->def));
        /* an image without layers is treated as scratch */
        RESULT *e = convert("FROM empty\nRUN true\n");
        ASSERT_TRUE(e);
        ASSERT_TRUE(!output_op(e)->exec.mounts[0].input.op);
        return 0;
}

/* ---- COPY and ADD ---- */

TEST(copy_context_and_dockerignore)
{
        const char *ignore[] = { "*.md", "node_modules" };
        struct kiln_dockerfile_convert_options o = options();
        o.dockerignore = ignore;
        o.n_dockerignore = 2;
        RESULT *r = convert_opt("FROM alpine\nWORKDIR /app\nCOPY --chown=1000:1000 src/ lib ./\n"
                                "ADD --chmod=644 a.tar /opt/\n",
                                &o, NULL);
        ASSERT_TRUE(r);
        const struct kiln_llb_op *cp = find_op_t(r, "COPY --chown", KILN_LLB_OP_FILE);
        ASSERT_TRUE(cp && cp->file.n_actions == 2);
        const struct kiln_llb_file_copy *a = &cp->file.actions[0].copy;
        ASSERT_STREQ(a->src_path, "/src");
        ASSERT_STREQ(a->dest, "/app/");
        ASSERT_TRUE(a->follow_symlinks && a->dir_copy_contents && a->allow_wildcard &&
                    a->allow_empty_wildcard && a->create_dest_path && !a->attempt_unpack);
        ASSERT_EQ_INT(a->chown.user.kind, KILN_LLB_USER_ID);
        ASSERT_EQ_INT(a->chown.user.id, 1000);
        const struct kiln_llb_op *ctx = a->src.op;
        ASSERT_TRUE(ctx && ctx->source.type == KILN_LLB_SOURCE_LOCAL);
        ASSERT_STREQ(ctx->source.local.name, "context");
        ASSERT_EQ_INT(ctx->source.local.exclude_patterns.n, 2);
        ASSERT_STREQ(ctx->source.local.exclude_patterns.v[0], "*.md");
        ASSERT_EQ_INT(ctx->source.local.follow_paths.n, 3);
        ASSERT_STREQ(ctx->source.local.follow_paths.v[0], "a.tar");
        ASSERT_STREQ(ctx->source.local.follow_paths.v[1], "lib");
        ASSERT_STREQ(ctx->source.local.follow_paths.v[2], "src");
        ASSERT_STREQ(op_name(ctx), "[internal] load build context");
        const struct kiln_llb_op *add = output_op(r);
        ASSERT_TRUE(add->file.actions[0].copy.attempt_unpack);
        ASSERT_TRUE(add->file.actions[0].copy.has_mode);
        ASSERT_EQ_INT(add->file.actions[0].copy.mode, 0644);
        _cleanup_free_ char *h = history_from_end(r, 1);
        ASSERT_STREQ(h, "COPY --chown=1000:1000 src/ lib ./ # buildkit");
        _cleanup_free_ char *h2 = history_from_end(r, 0);
        ASSERT_STREQ(h2, "ADD --chmod=644 a.tar /opt/ # buildkit");
        return 0;
}

TEST(copy_parents_exclude_link)
{
        RESULT *r = convert("FROM alpine\nCOPY --parents --exclude=*.tmp ./x/./a/b.txt /dst/\n"
                            "COPY --link c /c\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *cp = find_op_t(r, "--parents", KILN_LLB_OP_FILE);
        ASSERT_TRUE(cp);
        const struct kiln_llb_file_copy *a = &cp->file.actions[0].copy;
        ASSERT_STREQ(a->src_path, "/x");
        ASSERT_EQ_INT(a->include_patterns.n, 1);
        ASSERT_STREQ(a->include_patterns.v[0], "a/b.txt");
        ASSERT_EQ_INT(a->required_paths.n, 1);
        ASSERT_STREQ(a->required_paths.v[0], "/x/a/b.txt");
        ASSERT_EQ_INT(a->exclude_patterns.n, 1);
        ASSERT_STREQ(a->exclude_patterns.v[0], "*.tmp");
        const struct kiln_llb_op *m = output_op(r);
        ASSERT_TRUE(m->type == KILN_LLB_OP_MERGE && m->merge.n_inputs == 2);
        ASSERT_TRUE(m->merge.inputs[0].op == cp);
        const struct kiln_llb_op *linked = m->merge.inputs[1].op;
        ASSERT_TRUE(linked->type == KILN_LLB_OP_FILE && !linked->file.base.op);
        ASSERT_STREQ(op_name(m), "[3/3] LINK COPY --link c /c");
        ASSERT_STREQ(op_name(linked), "[3/3] COPY --link c /c");
        return 0;
}

TEST(copy_heredoc)
{
        RESULT *r = convert("FROM alpine\nENV NAME=kiln\nCOPY <<EOF /etc/motd\nhello $NAME\nEOF\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        const struct kiln_llb_file_copy *a = &op->file.actions[0].copy;
        ASSERT_STREQ(a->dest, "/etc/motd");
        ASSERT_STREQ(a->src_path, "/EOF");
        const struct kiln_llb_op *mk = a->src.op;
        ASSERT_TRUE(mk && mk->file.actions[0].type == KILN_LLB_FILE_MKFILE);
        ASSERT_EQ_INT(mk->file.actions[0].mkfile.len, strlen("hello kiln\n"));
        ASSERT_TRUE(!memcmp(mk->file.actions[0].mkfile.data, "hello kiln\n", 11));
        _cleanup_free_ char *h = history_from_end(r, 0);
        ASSERT_STREQ(h, "COPY <<EOF /etc/motd # buildkit");
        return 0;
}

TEST(add_url_and_git)
{
        RESULT *r = convert(
                "FROM alpine\n"
                "ADD "
                "--checksum=sha256:"
                "24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d "
                "https://example.com/files/tool.tar.gz /opt/\n"
                "ADD --keep-git-dir https://github.com/moby/buildkit.git#v0.13.0:docs /src\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *h = find_op_t(r, "ADD --checksum", KILN_LLB_OP_FILE);
        ASSERT_TRUE(h);
        const struct kiln_llb_op *http = h->file.actions[0].copy.src.op;
        ASSERT_TRUE(http && http->source.type == KILN_LLB_SOURCE_HTTP);
        ASSERT_STREQ(http->source.http.url, "https://example.com/files/tool.tar.gz");
        ASSERT_STREQ(http->source.http.filename, "tool.tar.gz");
        ASSERT_STREQ(http->source.http.checksum,
                     "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d");
        ASSERT_STREQ(h->file.actions[0].copy.src_path, "/tool.tar.gz");
        ASSERT_TRUE(!h->file.actions[0].copy.attempt_unpack);
        const struct kiln_llb_op *g = output_op(r)->file.actions[0].copy.src.op;
        ASSERT_TRUE(g && g->source.type == KILN_LLB_SOURCE_GIT);
        ASSERT_STREQ(g->source.git.remote, "https://github.com/moby/buildkit.git");
        ASSERT_STREQ(g->source.git.ref, "v0.13.0");
        ASSERT_STREQ(g->source.git.subdir, "docs");
        ASSERT_TRUE(g->source.git.keep_git_dir);
        _cleanup_free_ char *m =
                convert_error("FROM alpine\nCOPY https://example.com/x /x\n", NULL);
        ASSERT_STREQ(m, "Dockerfile:2: source can't be a URL for COPY");
        _cleanup_free_ char *c =
                convert_error("FROM alpine\nADD --checksum=md5:1 https://e.com/x /x\n", NULL);
        ASSERT_STREQ(c, "Dockerfile:2: unsupported digest algorithm");
        return 0;
}

/* ---- the image config ---- */

TEST(config_instructions)
{
        RESULT *r = convert(
                "FROM alpine\n"
                "MAINTAINER kiln <kiln@example.com>\n"
                "ENV A=1 B=\"two words\"\n"
                "LABEL version=\"1.0\" desc=x\n"
                "EXPOSE 8080 53/udp 7000-7001\n"
                "VOLUME [\"/data\", \"/logs\"]\n"
                "USER app:app\n"
                "WORKDIR /srv\n"
                "WORKDIR sub\n"
                "SHELL [\"/bin/bash\", \"-c\"]\n"
                "CMD run --fast\n"
                "ENTRYPOINT [\"/entry\"]\n"
                "STOPSIGNAL SIGQUIT\n"
                "HEALTHCHECK --interval=1m30s --timeout=5s --retries=3 CMD curl -f http://x/\n"
                "ONBUILD RUN echo child\n");
        ASSERT_TRUE(r);
        json_t *cfg = config_of(r);
        ASSERT_TRUE(cfg);
        ASSERT_STREQ(json_string_value(json_object_get(cfg, "author")), "kiln <kiln@example.com>");
        json_decref(cfg);
        _cleanup_free_ char *env = config_field(r, "Env");
        ASSERT_STREQ(env, "[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/"
                          "bin\",\"A=1\",\"B=two words\"]");
        _cleanup_free_ char *labels = config_field(r, "Labels");
        ASSERT_STREQ(labels, "{\"desc\":\"x\",\"version\":\"1.0\"}");
        _cleanup_free_ char *ports = config_field(r, "ExposedPorts");
        ASSERT_STREQ(ports, "{\"53/udp\":{},\"7000/tcp\":{},\"7001/tcp\":{},\"8080/tcp\":{}}");
        _cleanup_free_ char *vols = config_field(r, "Volumes");
        ASSERT_STREQ(vols, "{\"/data\":{},\"/logs\":{}}");
        _cleanup_free_ char *user = config_field(r, "User");
        ASSERT_STREQ(user, "\"app:app\"");
        _cleanup_free_ char *wd = config_field(r, "WorkingDir");
        ASSERT_STREQ(wd, "\"/srv/sub\"");
        _cleanup_free_ char *shell = config_field(r, "Shell");
        ASSERT_STREQ(shell, "[\"/bin/bash\",\"-c\"]");
        /* ENTRYPOINT after CMD in the same stage keeps CMD */
        _cleanup_free_ char *cmd = config_field(r, "Cmd");
        ASSERT_STREQ(cmd, "[\"/bin/bash\",\"-c\",\"run --fast\"]");
        _cleanup_free_ char *ep = config_field(r, "Entrypoint");
        ASSERT_STREQ(ep, "[\"/entry\"]");
        _cleanup_free_ char *sig = config_field(r, "StopSignal");
        ASSERT_STREQ(sig, "\"SIGQUIT\"");
        _cleanup_free_ char *hc = config_field(r, "Healthcheck");
        ASSERT_STREQ(hc,
                     "{\"Test\":[\"CMD-SHELL\",\"curl -f "
                     "http://x/\"],\"Interval\":90000000000,\"Timeout\":5000000000,\"Retries\":3}");
        _cleanup_free_ char *ob = config_field(r, "OnBuild");
        ASSERT_STREQ(ob, "[\"RUN echo child\"]");
        _cleanup_free_ char *esc = config_field(r, "ArgsEscaped");
        ASSERT_STREQ(esc, "true");
        /* the key order of the document is Go's */
        ASSERT_CONTAINS(r->config, "{\"author\":\"kiln "
                                   "\\u003ckiln@example.com\\u003e\",\"architecture\":\"amd64\","
                                   "\"os\":\"linux\",\"rootfs\":");
        ASSERT_CONTAINS(r->config, "\"config\":{\"User\":\"app:app\",\"ExposedPorts\":");
        /* history texts */
        const char *expect[] = {
                "ONBUILD",
                "HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:1m30s Timeout:5s "
                "StartPeriod:0s StartInterval:0s Retries:3}",
                "STOPSIGNAL SIGQUIT",
                "ENTRYPOINT [\"/entry\"]",
                "CMD [\"/bin/bash\" \"-c\" \"run --fast\"]",
                "SHELL [/bin/bash -c]",
                "WORKDIR /srv/sub",
                "WORKDIR /srv",
                "USER app:app",
                "VOLUME [/data /logs]",
                "EXPOSE [53/udp 7000/tcp 7001/tcp 8080/tcp]",
                "LABEL version=1.0 desc=x",
                "ENV A=1 B=two words",
                "MAINTAINER kiln <kiln@example.com>",
        };
        /* ONBUILD adds no history entry: start at the HEALTHCHECK */
        for (size_t i = 1; i < ELEMENTSOF(expect); i++) {
                _cleanup_free_ char *h = history_from_end(r, i - 1);
                ASSERT_STREQ(h, expect[i]);
        }
        /* WORKDIR makes a directory, owned by the USER */
        const struct kiln_llb_op *mk = find_op_t(r, "WORKDIR sub", KILN_LLB_OP_FILE);
        ASSERT_TRUE(mk && mk->file.actions[0].type == KILN_LLB_FILE_MKDIR);
        ASSERT_STREQ(mk->file.actions[0].mkdir.path, "/srv/sub");
        ASSERT_TRUE(mk->file.actions[0].mkdir.make_parents);
        ASSERT_EQ_INT(mk->file.actions[0].mkdir.chown.user.kind, KILN_LLB_USER_NAME);
        ASSERT_STREQ(mk->file.actions[0].mkdir.chown.user.name, "app");
        ASSERT_TRUE(has_warning(r, "MaintainerDeprecated", NULL));
        ASSERT_TRUE(has_warning(r, "JSONArgsRecommended",
                                "JSON arguments recommended for CMD to prevent unintended behavior "
                                "related to OS signals") == false);
        return 0;
}

TEST(config_entrypoint_resets_cmd)
{
        RESULT *r = convert("FROM alpine\nENTRYPOINT [\"/x\"]\n");
        ASSERT_TRUE(r);
        _cleanup_free_ char *cmd = config_field(r, "Cmd");
        ASSERT_STREQ(cmd, "");
        return 0;
}

TEST(config_base_image_applied)
{
        RESULT *r = convert("FROM golang:1.22\nRUN go build\nRUN echo $GOPATH\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_STREQ(op->exec.cwd, "/go");
        ASSERT_STREQ(op->exec.user, "gopher");
        ASSERT_STREQ(op->exec.args.v[0], "/bin/bash");
        ASSERT_TRUE(has_env(op, "GOPATH=/go"));
        ASSERT_TRUE(has_env(op, "PATH=/go/bin:/usr/bin"));
        _cleanup_free_ char *labels = config_field(r, "Labels");
        ASSERT_STREQ(labels, "{\"base\":\"golang\"}");
        /* no WORKDIR op for the base image's directory */
        ASSERT_EQ_INT(count_type(r, KILN_LLB_OP_FILE), 0);
        return 0;
}

TEST(config_labels_option_and_epoch)
{
        struct kiln_dockerfile_pair labels[] = { { "org.opencontainers.image.title", "t" } };
        struct kiln_dockerfile_pair args[] = { { "SOURCE_DATE_EPOCH", "1700000000" } };
        struct kiln_dockerfile_convert_options o = options();
        o.labels = labels;
        o.n_labels = 1;
        o.build_args = args;
        o.n_build_args = 1;
        RESULT *r = convert_opt("FROM alpine\nLABEL a=b\nWORKDIR /x\n", &o, NULL);
        ASSERT_TRUE(r);
        _cleanup_free_ char *l = config_field(r, "Labels");
        ASSERT_STREQ(l, "{\"a\":\"b\",\"org.opencontainers.image.title\":\"t\"}");
        ASSERT_CONTAINS(r->config,
                        "{\"created\":\"2023-11-14T22:13:20Z\",\"created_by\":\"WORKDIR /x\"");
        ASSERT_TRUE(r->has_epoch && r->epoch == 1700000000);
        const struct kiln_llb_op *mk = output_op(r);
        ASSERT_TRUE(mk->file.actions[0].mkdir.has_timestamp);
        ASSERT_TRUE(mk->file.actions[0].mkdir.timestamp == 1700000000LL * 1000000000LL);
        return 0;
}

TEST(onbuild_triggers)
{
        RESULT *r = convert("FROM onbuild\nRUN echo mine\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *trig = find_op(r, "ONBUILD RUN echo from-onbuild");
        ASSERT_TRUE(trig);
        ASSERT_STREQ(op_name(trig), "[2/4] ONBUILD RUN echo from-onbuild");
        const struct kiln_llb_op *op = output_op(r);
        ASSERT_TRUE(has_env(op, "TRIGGERED=yes"));
        ASSERT_TRUE(op->exec.mounts[0].input.op == trig);
        _cleanup_free_ char *ob = config_field(r, "OnBuild");
        ASSERT_STREQ(ob, "");
        /* a stage's own ONBUILD runs in stages built FROM it */
        RESULT *s = convert("FROM alpine AS base\nONBUILD RUN echo child\nRUN echo base\n"
                            "FROM base\nRUN echo last\n");
        ASSERT_TRUE(s);
        ASSERT_TRUE(find_op(s, "[stage-1 1/2] ONBUILD RUN echo child"));
        return 0;
}

TEST(invalid_instruction_values)
{
        _cleanup_free_ char *sig = convert_error("FROM alpine\nSTOPSIGNAL SIGNOPE\n", NULL);
        ASSERT_STREQ(sig, "Dockerfile:2: invalid signal: SIGNOPE");
        _cleanup_free_ char *port = convert_error("FROM alpine\nEXPOSE 80/xyz\n", NULL);
        ASSERT_STREQ(port, "Dockerfile:2: invalid port: \"80/xyz\": invalid proto: xyz");
        _cleanup_free_ char *chmod = convert_error("FROM alpine\nCOPY --chmod=999 a b\n", NULL);
        ASSERT_CONTAINS(chmod, "invalid chmod parameter: '999'");
        _cleanup_free_ char *mount =
                convert_error("FROM alpine\nRUN --mount=type=cache,target=/ true\n", NULL);
        ASSERT_STREQ(mount, "Dockerfile:2: invalid mount target \"/\"");
        return 0;
}

/* ---- warnings ---- */

TEST(lint_warnings)
{
        RESULT *r = convert("FROM alpine AS Build\nRUN echo $NOPE\nCOPY $UNDEFINED /x\nCMD run\n"
                            "ENV PATH2 x\nCMD again\nfrom build\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_warning(r, "StageNameCasing", "Stage name 'Build' should be lowercase"));
        ASSERT_TRUE(has_warning(r, "UndefinedVar", "Usage of undefined variable '$UNDEFINED'"));
        ASSERT_TRUE(has_warning(r, "JSONArgsRecommended",
                                "JSON arguments recommended for CMD to prevent unintended behavior "
                                "related to OS signals"));
        ASSERT_TRUE(has_warning(
                r, "LegacyKeyValueFormat",
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"));
        ASSERT_TRUE(has_warning(r, "MultipleInstructionsDisallowed", NULL));
        ASSERT_TRUE(has_warning(
                r, "ConsistentInstructionCasing",
                "Command 'from' should match the case of the command majority (uppercase)"));
        /* RUN's own text is expanded by the shell, not the frontend */
        ASSERT_TRUE(!has_warning(r, "UndefinedVar", "Usage of undefined variable '$NOPE'"));
        for (size_t i = 0; i < r->n_warnings; i++)
                ASSERT_TRUE(r->warnings[i].start_line > 0);
        /* # check=skip=... silences a rule */
        RESULT *s = convert("# check=skip=JSONArgsRecommended\nFROM alpine\nCMD run\n");
        ASSERT_TRUE(s);
        ASSERT_EQ_INT(s->n_warnings, 0);
        /* error=true turns warnings into an error */
        _cleanup_free_ char *e = convert_error("# check=error=true\nFROM alpine\nCMD run\n", NULL);
        ASSERT_STREQ(e, "lint violation found for rules: JSONArgsRecommended");
        return 0;
}

TEST(hostname_and_no_cache)
{
        struct kiln_dockerfile_pair args[] = { { "BUILDKIT_SANDBOX_HOSTNAME", "builder" } };
        struct kiln_dockerfile_convert_options o = options();
        o.build_args = args;
        o.n_build_args = 1;
        struct kiln_dockerfile_pair hosts[] = { { "db", "10.0.0.2" } };
        o.extra_hosts = hosts;
        o.n_extra_hosts = 1;
        o.no_cache = true;
        o.resolve_mode = KILN_LLB_RESOLVE_FORCE_PULL;
        RESULT *r = convert_opt("FROM alpine\nRUN hostname\n", &o, NULL);
        ASSERT_TRUE(r);
        ASSERT_STREQ(output_op(r)->exec.hostname, "builder");
        ASSERT_TRUE(output_op(r)->meta.ignore_cache);
        ASSERT_EQ_INT(output_op(r)->exec.n_extra_hosts, 1);
        ASSERT_STREQ(output_op(r)->exec.extra_hosts[0].host, "db");
        ASSERT_STREQ(output_op(r)->exec.extra_hosts[0].ip, "10.0.0.2");
        ASSERT_EQ_INT(output_op(r)->exec.mounts[0].input.op->source.image.resolve_mode,
                      KILN_LLB_RESOLVE_FORCE_PULL);
        /* --no-cache-filter: only the stages named */
        const char *only[] = { "build" };
        o.no_cache_stages = only;
        o.n_no_cache_stages = 1;
        RESULT *s = convert_opt(
                "FROM alpine AS build\nRUN a\nFROM alpine\nCOPY --from=build /a /a\nRUN b\n", &o,
                NULL);
        ASSERT_TRUE(s);
        ASSERT_TRUE(find_op(s, "RUN a")->meta.ignore_cache);
        ASSERT_TRUE(!output_op(s)->meta.ignore_cache);
        return 0;
}

TEST(lint_more_rules)
{
        RESULT *r = convert("ARG TAG\nFROM alpine:${TAGG:-latest} AS a\nFROM alpine as b\n"
                            "FROM --platform=$TARGETPLATFORM alpine AS a\nARG API_TOKEN=x\n"
                            "# check=skip=JSONArgsRecommended\nCMD run\nENTRYPOINT run\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_warning(r, "UndefinedArgInFrom",
                                "FROM argument 'TAGG' is not declared (did you mean TAG?)"));
        ASSERT_TRUE(
                has_warning(r, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match"));
        ASSERT_TRUE(has_warning(r, "DuplicateStageName",
                                "Duplicate stage name \"a\", stage names should be unique"));
        ASSERT_TRUE(has_warning(r, "RedundantTargetPlatform",
                                "Setting platform to predefined $TARGETPLATFORM in FROM is "
                                "redundant as this is the default behavior"));
        ASSERT_TRUE(has_warning(
                r, "SecretsUsedInArgOrEnv",
                "Do not use ARG or ENV instructions for sensitive data (ARG \"API_TOKEN\")"));
        size_t json_args = 0;
        for (size_t i = 0; i < r->n_warnings; i++)
                if (streq(r->warnings[i].rule, "JSONArgsRecommended")) {
                        json_args++;
                        ASSERT_EQ_INT(r->warnings[i].start_line, 8);
                        ASSERT_STREQ(r->warnings[i].url, "https://docs.docker.com/go/dockerfile/"
                                                         "rule/json-args-recommended/");
                }
        ASSERT_EQ_INT(json_args, 1);
        RESULT *s = convert("ARG IMG=\nFROM ${IMG}alpine\n");
        ASSERT_TRUE(s);
        _cleanup_free_ char *t = convert_error("ARG V=\nFROM alpine:${V}\n", NULL);
        ASSERT_STREQ(t, "Dockerfile:2: failed to parse stage name \"alpine:\": invalid reference "
                        "'alpine:': invalid tag '': up to 128 letters, digits, '_', '.' and '-', "
                        "not starting with '.' or '-'");
        return 0;
}

TEST(lint_invalid_default_arg)
{
        struct kiln_dockerfile_pair args[] = { { "V", "latest" } };
        struct kiln_dockerfile_convert_options o = options();
        o.build_args = args;
        o.n_build_args = 1;
        RESULT *r = convert_opt("ARG V\nFROM alpine:${V}\n", &o, NULL);
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_warning(
                r, "InvalidDefaultArgInFrom",
                "Default value for ARG alpine:${V} results in empty or invalid base image name"));
        return 0;
}

TEST(multi_platform_names)
{
        struct kiln_dockerfile_convert_options o = options();
        o.multi_platform = true;
        o.target_platform = "linux/arm64";
        RESULT *r = convert_opt("FROM --platform=$BUILDPLATFORM alpine AS b\nARG TARGETARCH\n"
                                "RUN build\nFROM alpine\nCOPY --from=b /x /x\n",
                                &o, NULL);
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_step(
                r, "[linux/amd64 internal] load metadata for docker.io/library/alpine:latest"));
        ASSERT_TRUE(has_step(r, "[linux/amd64->arm64 b 2/2] RUN build"));
        ASSERT_TRUE(has_step(r, "[linux/arm64 stage-1 2/2] COPY --from=b /x /x"));
        return 0;
}

TEST(base_image_platform_mismatch)
{
        RESULT *r = convert("FROM arm\nRUN true\n");
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_warning(r, "InvalidBaseImagePlatform",
                                "Base image arm was pulled with platform \"linux/arm64\", expected "
                                "\"linux/amd64\" for current build"));
        /* the implicit target keeps the image's platform in the config */
        json_t *cfg = config_of(r);
        ASSERT_STREQ(json_string_value(json_object_get(cfg, "architecture")), "arm64");
        json_decref(cfg);
        return 0;
}

TEST(mount_errors)
{
        _cleanup_free_ char *fwd =
                convert_error("FROM alpine AS a\nRUN --mount=from=b,target=/b true\n"
                              "FROM alpine AS b\nFROM a\n",
                              NULL);
        ASSERT_STREQ(fwd, "Dockerfile:2: cannot mount from stage \"b\" to \"/b\", stage needs to "
                          "be defined before current command");
        _cleanup_free_ char *sec =
                convert_error("FROM alpine\nRUN --mount=type=secret true\n", NULL);
        ASSERT_STREQ(sec, "Dockerfile:2: invalid secret mount. one of source, target required");
        _cleanup_free_ char *ssh =
                convert_error("FROM alpine\nRUN --mount=type=ssh,source=x true\n", NULL);
        ASSERT_STREQ(ssh, "Dockerfile:2: ssh does not support source");
        return 0;
}

TEST(mount_from_image_and_cache_owner)
{
        RESULT *r =
                convert("FROM alpine\nRUN --mount=from=golang:1.22,source=/usr/local/go,target=/go "
                        "--mount=type=cache,target=/c,id=mine,uid=1000,mode=0700 true\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *op = output_op(r);
        bool img = false, cache = false;
        for (size_t i = 0; i < op->exec.n_mounts; i++) {
                const struct kiln_llb_mount *m = &op->exec.mounts[i];
                if (streq(m->target, "/go"))
                        img = m->input.op && m->input.op->type == KILN_LLB_OP_SOURCE &&
                              strstr(m->input.op->source.image.ref, "golang:1.22@sha256:2222") &&
                              streq(m->selector, "/usr/local/go");
                if (streq(m->target, "/c")) {
                        const struct kiln_llb_op *mk = m->input.op;
                        cache = streq(m->id, "/mine") && streq(m->selector, "/cache") && mk &&
                                mk->type == KILN_LLB_OP_FILE &&
                                mk->file.actions[0].mkdir.chown.user.id == 1000 &&
                                mk->file.actions[0].mkdir.mode == 0700 &&
                                streq(op_name(mk), "[internal] setting cache mount permissions");
                }
        }
        ASSERT_TRUE(img);
        ASSERT_TRUE(cache);
        ASSERT_TRUE(has_step(r, "[internal] load metadata for docker.io/library/golang:1.22"));
        return 0;
}

TEST(onbuild_copy_from_pulls_in_stage)
{
        RESULT *r = convert("FROM alpine AS assets\nRUN make assets\n"
                            "FROM alpine AS base\nONBUILD COPY --from=assets /a /a\n"
                            "FROM base\nRUN ls /a\n");
        ASSERT_TRUE(r);
        const struct kiln_llb_op *cp = find_op_t(r, "ONBUILD COPY --from=assets", KILN_LLB_OP_FILE);
        ASSERT_TRUE(cp);
        const struct kiln_llb_op *src = cp->file.actions[0].copy.src.op;
        ASSERT_TRUE(src && src->type == KILN_LLB_OP_EXEC);
        ASSERT_STREQ(src->exec.args.v[2], "make assets");
        return 0;
}

TEST(lint_copy_ignored_file)
{
        const char *ignore[] = { "*.md", "build/**", "**/secret.txt", "docs/[a-c]*" };
        struct kiln_dockerfile_convert_options o = options();
        o.dockerignore = ignore;
        o.n_dockerignore = ELEMENTSOF(ignore);
        RESULT *r =
                convert_opt("FROM alpine\nCOPY README.md build/out/x a/b/secret.txt docs/b1 docs/z "
                            "src/ /dst/\nCOPY . /all\n",
                            &o, NULL);
        ASSERT_TRUE(r);
        ASSERT_TRUE(has_warning(
                r, "CopyIgnoredFile",
                "Attempting to Copy file \"README.md\" that is excluded by .dockerignore"));
        ASSERT_TRUE(has_warning(
                r, "CopyIgnoredFile",
                "Attempting to Copy file \"build/out/x\" that is excluded by .dockerignore"));
        ASSERT_TRUE(has_warning(
                r, "CopyIgnoredFile",
                "Attempting to Copy file \"a/b/secret.txt\" that is excluded by .dockerignore"));
        ASSERT_TRUE(has_warning(
                r, "CopyIgnoredFile",
                "Attempting to Copy file \"docs/b1\" that is excluded by .dockerignore"));
        ASSERT_TRUE(!has_warning(
                r, "CopyIgnoredFile",
                "Attempting to Copy file \"docs/z\" that is excluded by .dockerignore"));
        ASSERT_TRUE(
                !has_warning(r, "CopyIgnoredFile",
                             "Attempting to Copy file \"src\" that is excluded by .dockerignore"));
        ASSERT_TRUE(
                !has_warning(r, "CopyIgnoredFile",
                             "Attempting to Copy file \".\" that is excluded by .dockerignore"));
        /* with an exclusion the rule stays quiet */
        const char *ignore2[] = { "*.md", "!README.md" };
        o.dockerignore = ignore2;
        o.n_dockerignore = 2;
        RESULT *s = convert_opt("FROM alpine\nCOPY CHANGES.md /x\n", &o, NULL);
        ASSERT_TRUE(s);
        ASSERT_TRUE(!has_warning(s, "CopyIgnoredFile", NULL));
        return 0;
}

TEST(limits)
{
        struct kiln_buf b = KILN_BUF_INIT(1u << 20);
        (void) kiln_buf_puts(&b, "FROM alpine\n");
        for (unsigned i = 0; i <= KILN_LIMIT_DOCKERFILE_VARS; i++)
                (void) kiln_buf_printf(&b, "ENV V%u=x\n", i);
        _cleanup_free_ char *text = kiln_buf_steal(&b);
        _cleanup_free_ char *m = convert_error(text, NULL);
        ASSERT_CONTAINS(m,
                        "more than 1000 environment variables, build args or labels in one stage");
        /* a range counts each port */
        _cleanup_free_ char *p = convert_error("FROM alpine\nEXPOSE 1-65535 1-65535/udp\n", NULL);
        ASSERT_STREQ(p, "Dockerfile:2: more than 65536 exposed ports");
        return 0;
}
