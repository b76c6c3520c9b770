/* SPDX-License-Identifier: Apache-2.0 */
#include "base/buf.h"
#include "base/error.h"
#include "kiln-test.h"
#include "llb/llb.h"

#define ASSERT_CONTAINS(s, sub)                                                                 \
        do {                                                                                    \
                const char *_s = (s), *_sub = (sub);                                            \
                if (!_s || !strstr(_s, _sub))                                                   \
                        KILN_TEST_FAIL("'%s' does not contain '%s'", _s ? _s : "(null)", _sub); \
        } while (0)

/* Adds op to def and returns the op def owns, or NULL (printing why). */
static const struct kiln_llb_op *add(struct kiln_llb_def *def, struct kiln_llb_op *op)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct kiln_llb_op *ret = NULL;
        if (kiln_llb_def_add(def, op, &ret, &err) < 0) {
                printf("# add: %s\n", kiln_error_message(err));
                return NULL;
        }
        return ret;
}

static struct kiln_llb_ref ref(const struct kiln_llb_op *op, uint32_t output)
{
        return (struct kiln_llb_ref){ op, output };
}

static const struct kiln_llb_op *add_image(struct kiln_llb_def *def, const char *name)
{
        struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_IMAGE);
        op->source.image.ref = kiln_xstrdup(name);
        kiln_llb_platform_set(&op->platform, "linux", "amd64", NULL);
        return add(def, op);
}

static const struct kiln_llb_op *add_local(struct kiln_llb_def *def)
{
        struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_LOCAL);
        op->source.local.name = kiln_xstrdup("context");
        kiln_llb_strv_push(&op->source.local.exclude_patterns, "*.md");
        return add(def, op);
}

/* ---- variants: base (0) and one digest-relevant change each ----------------- */

#define N_SOURCE_VARIANTS 33

static struct kiln_llb_op *make_source(int v)
{
        struct kiln_llb_op *op;
        if (v < 9) {
                op = kiln_llb_op_new_source(KILN_LLB_SOURCE_IMAGE);
                struct kiln_llb_source_image *s = &op->source.image;
                s->ref = kiln_xstrdup(v == 1 ? "docker.io/library/alpine:3.19"
                                             : "docker.io/library/alpine:3.20");
                if (v != 2)
                        kiln_llb_platform_set(&op->platform, "linux", v == 3 ? "arm64" : "amd64",
                                              v == 4 ? "v8" : NULL);
                if (v == 5)
                        kiln_llb_platform_set(&op->platform, "windows", "amd64", NULL);
                if (v == 6)
                        s->resolve_mode = KILN_LLB_RESOLVE_FORCE_PULL;
                if (v == 7)
                        s->resolve_mode = KILN_LLB_RESOLVE_PREFER_LOCAL;
                if (v == 8)
                        s->layer_limit = 2;
        } else if (v < 14) {
                op = kiln_llb_op_new_source(KILN_LLB_SOURCE_LOCAL);
                struct kiln_llb_source_local *s = &op->source.local;
                s->name = kiln_xstrdup(v == 9 ? "dockerfile" : "context");
                kiln_llb_strv_push(&s->exclude_patterns, "*.md");
                if (v == 11)
                        kiln_llb_strv_push(&s->include_patterns, "src");
                if (v == 12)
                        kiln_llb_strv_push(&s->exclude_patterns, "build");
                if (v == 13)
                        kiln_llb_strv_push(&s->follow_paths, "Dockerfile");
                if (v == 10) /* a local without patterns at all */
                        kiln_llb_strv_push(&s->exclude_patterns, "*.txt");
        } else if (v < 21) {
                op = kiln_llb_op_new_source(KILN_LLB_SOURCE_HTTP);
                struct kiln_llb_source_http *s = &op->source.http;
                s->url = kiln_xstrdup(v == 14 ? "https://example.com/b.tar"
                                              : "https://example.com/a.tar");
                if (v == 15)
                        s->checksum =
                                kiln_xstrdup("sha256:"
                                             "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934c"
                                             "a495991b7852b855");
                if (v == 16)
                        s->filename = kiln_xstrdup("x.tar");
                if (v == 17)
                        s->chmod = 0755;
                if (v == 18)
                        s->uid = 1000;
                if (v == 19)
                        s->gid = 1000;
                if (v == 20)
                        s->chmod = 0644;
        } else {
                op = kiln_llb_op_new_source(KILN_LLB_SOURCE_GIT);
                struct kiln_llb_source_git *s = &op->source.git;
                s->remote = kiln_xstrdup(v == 21 ? "https://github.com/moby/moby.git"
                                                 : "https://github.com/moby/buildkit.git");
                if (v == 22)
                        s->ref = kiln_xstrdup("v0.13.0");
                if (v == 23)
                        s->subdir = kiln_xstrdup("frontend");
                if (v == 24)
                        s->keep_git_dir = true;
                if (v == 25)
                        s->checksum = kiln_xstrdup("0123456789abcdef0123456789abcdef01234567");
                if (v == 26)
                        s->auth_header_secret = kiln_xstrdup("GIT_AUTH_HEADER");
                if (v == 27)
                        s->auth_token_secret = kiln_xstrdup("GIT_AUTH_TOKEN");
                if (v == 28)
                        s->known_ssh_hosts = kiln_xstrdup("github.com ssh-ed25519 AAAA");
                if (v == 29)
                        s->mount_ssh_sock = kiln_xstrdup("default");
                if (v == 30)
                        s->skip_submodules = true;
                if (v == 31)
                        s->ref = kiln_xstrdup("main");
                if (v == 32)
                        kiln_llb_platform_set(&op->platform, "linux", "amd64", NULL);
        }
        return op;
}

#define N_EXEC_VARIANTS 46

/* An exec on root (and, for some variants, other) inputs. */
static struct kiln_llb_op *make_exec(int v, const struct kiln_llb_op *root,
                                     const struct kiln_llb_op *other)
{
        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        struct kiln_llb_exec *e = &op->exec;
        kiln_llb_platform_set(&op->platform, "linux", "amd64", NULL);
        kiln_llb_strv_push(&e->args, "/bin/sh");
        kiln_llb_strv_push(&e->args, "-c");
        kiln_llb_strv_push(&e->args, v == 1 ? "echo bye" : "echo hello");
        if (v == 2)
                kiln_llb_strv_push(&e->args, "");
        if (v == 3) {
                kiln_llb_strv_push(&e->env, "B=2");
                kiln_llb_strv_push(&e->env, "A=1");
        } else {
                kiln_llb_strv_push(&e->env, "A=1");
                kiln_llb_strv_push(&e->env, v == 4 ? "B=3" : "B=2");
        }
        e->cwd = kiln_xstrdup(v == 5 ? "/src" : "/");
        if (v == 6)
                e->user = kiln_xstrdup("nobody");
        if (v == 7)
                e->hostname = kiln_xstrdup("builder");
        if (v == 8)
                e->network = KILN_LLB_NETWORK_HOST;
        if (v == 9)
                e->network = KILN_LLB_NETWORK_NONE;
        if (v == 10)
                e->security = KILN_LLB_SECURITY_INSECURE;
        struct kiln_llb_mount *m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/");
        m->input = ref(v == 11 ? other : root, 0);
        if (v == 12)
                m->selector = kiln_xstrdup("/sub");
        if (v == 13)
                m->readonly = true;
        if (v == 14)
                m->no_output = true;
        if (v == 15)
                kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/ctx")->input = ref(other, 0);
        if (v == 16) {
                m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/ctx");
                m->input = ref(other, 0);
                m->readonly = true;
        }
        m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_CACHE,
                                    v == 17 ? "/var/cache" : "/root/.cache");
        m->id = kiln_xstrdup(v == 18 ? "other" : "go-build");
        if (v == 19)
                m->sharing = KILN_LLB_CACHE_PRIVATE;
        if (v == 20)
                m->sharing = KILN_LLB_CACHE_LOCKED;
        if (v == 21)
                m->input = ref(other, 0);
        if (v == 22)
                m->readonly = true;
        m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_TMPFS, "/tmp");
        if (v == 23)
                m->tmpfs_size = 64 << 20;
        m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SECRET, "/run/secrets/token");
        m->id = kiln_xstrdup(v == 24 ? "other" : "token");
        if (v == 25)
                m->uid = 1000;
        if (v == 26)
                m->gid = 1000;
        if (v == 27)
                m->mode = 0440;
        if (v == 28)
                m->optional = true;
        m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SSH, "/run/ssh");
        m->id = kiln_xstrdup(v == 29 ? "work" : "default");
        if (v == 30)
                m->uid = 1;
        if (v == 31)
                m->gid = 1;
        if (v == 32)
                m->mode = 0666;
        if (v == 33)
                m->optional = true;
        if (v == 34) /* mounts are ordered */
                kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_TMPFS, "/tmp2");
        if (v == 35)
                kiln_llb_exec_add_secret_env(op, "token", "TOKEN", false);
        if (v == 36)
                kiln_llb_exec_add_secret_env(op, "token", "TOKEN", true);
        if (v == 37)
                kiln_llb_exec_add_secret_env(op, "token", "API_TOKEN", false);
        if (v == 38)
                kiln_llb_exec_add_extra_host(op, "db", "10.0.0.2");
        if (v == 39)
                kiln_llb_exec_add_ulimit(op, "nofile", 1024, 2048);
        if (v == 40)
                e->cgroup_parent = kiln_xstrdup("kiln");
        if (v == 41)
                e->remove_mount_stubs_recursive = true;
        if (v == 42)
                kiln_llb_exec_add_valid_exit_code(op, 1);
        if (v == 43)
                kiln_llb_platform_set(&op->platform, NULL, NULL, NULL);
        if (v == 44)
                kiln_llb_exec_add_ulimit(op, "nofile", 1024, 4096);
        if (v == 45)
                kiln_llb_exec_add_extra_host(op, "cache", "10.0.0.2");
        return op;
}

#define N_FILE_VARIANTS 46

static struct kiln_llb_op *make_file(int v, const struct kiln_llb_op *base,
                                     const struct kiln_llb_op *ctx)
{
        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_FILE);
        op->file.base = ref(v == 1 ? NULL : base, 0);
        if (v == 2)
                op->file.base = ref(ctx, 0);

        struct kiln_llb_file_copy *c = &kiln_llb_file_add_action(op, KILN_LLB_FILE_COPY)->copy;
        c->src = ref(v == 3 ? base : ctx, 0);
        c->src_path = kiln_xstrdup(v == 4 ? "/other" : "/app");
        c->dest = kiln_xstrdup(v == 5 ? "/srv/" : "/app/");
        if (v == 6)
                kiln_llb_chown_parse("1000:1000", &c->chown);
        if (v == 7)
                kiln_llb_chown_parse("app:staff", &c->chown);
        if (v == 8)
                kiln_llb_chown_parse("1000", &c->chown);
        if (v == 9)
                c->has_mode = true, c->mode = 0755;
        if (v == 10)
                c->has_mode = true, c->mode = 0;
        if (v == 11)
                c->mode_str = kiln_xstrdup("u+x");
        if (v == 12)
                c->follow_symlinks = true;
        if (v == 13)
                c->dir_copy_contents = true;
        if (v == 14)
                c->attempt_unpack = true;
        if (v == 15)
                c->create_dest_path = true;
        if (v == 16)
                c->allow_wildcard = true;
        if (v == 17)
                c->allow_empty_wildcard = true;
        if (v == 18)
                c->always_replace_existing = true;
        if (v == 19)
                kiln_llb_strv_push(&c->include_patterns, "*.go");
        if (v == 20)
                kiln_llb_strv_push(&c->exclude_patterns, "*_test.go");
        if (v == 21)
                kiln_llb_strv_push(&c->required_paths, "app/go.mod");
        if (v == 22)
                c->has_timestamp = true, c->timestamp = 0;
        if (v == 23)
                c->has_timestamp = true, c->timestamp = 1700000000000000000;
        if (v == 44)
                kiln_llb_chown_parse(":1000", &c->chown);
        if (v == 45)
                kiln_llb_chown_parse("1000:staff", &c->chown);

        struct kiln_llb_file_mkdir *d = &kiln_llb_file_add_action(op, KILN_LLB_FILE_MKDIR)->mkdir;
        d->path = kiln_xstrdup(v == 24 ? "/var/data" : "/data");
        if (v == 25)
                d->mode = 0700;
        if (v == 26)
                d->make_parents = true;
        if (v == 27)
                kiln_llb_chown_parse("0:0", &d->chown);
        if (v == 28)
                d->has_timestamp = true;

        struct kiln_llb_file_mkfile *f =
                &kiln_llb_file_add_action(op, KILN_LLB_FILE_MKFILE)->mkfile;
        f->path = kiln_xstrdup(v == 29 ? "/etc/other" : "/etc/motd");
        static const uint8_t data[] = { 'h', 'i', '\n', 0, 0xff };
        f->len = v == 30 ? 4 : sizeof(data);
        f->data = kiln_xmalloc(f->len);
        memcpy(f->data, data, f->len);
        if (v == 31)
                f->data[0] = 'H';
        if (v == 32)
                f->mode = 0600;
        if (v == 33)
                kiln_llb_chown_parse("nobody", &f->chown);
        if (v == 34)
                f->has_timestamp = true, f->timestamp = -1;

        struct kiln_llb_file_rm *r = &kiln_llb_file_add_action(op, KILN_LLB_FILE_RM)->rm;
        r->path = kiln_xstrdup(v == 35 ? "/tmp/y" : "/tmp/x");
        if (v == 36)
                r->allow_not_found = true;
        if (v == 37)
                r->allow_wildcard = true;

        struct kiln_llb_file_symlink *s =
                &kiln_llb_file_add_action(op, KILN_LLB_FILE_SYMLINK)->symlink;
        s->oldpath = kiln_xstrdup(v == 38 ? "/data2" : "/data");
        s->newpath = kiln_xstrdup(v == 39 ? "/srv/d" : "/srv/data");
        if (v == 40)
                kiln_llb_chown_parse("1:1", &s->chown);
        if (v == 41)
                s->has_timestamp = true, s->timestamp = 5;
        if (v == 42) /* one more action */
                kiln_llb_file_add_action(op, KILN_LLB_FILE_RM)->rm.path = kiln_xstrdup("/x");
        if (v == 43)
                kiln_llb_platform_set(&op->platform, "linux", "arm64", NULL);
        return op;
}

/* Adds every variant (each to its own def so none dedupes) and checks all
 * digests differ pairwise. */
static int all_digests_differ(char (*digests)[KILN_LLB_DIGEST_LEN + 1], int n)
{
        for (int i = 0; i < n; i++)
                for (int j = i + 1; j < n; j++)
                        if (streq(digests[i], digests[j]))
                                KILN_TEST_FAIL("variants %d and %d share digest %s", i, j,
                                               digests[i]);
        return 0;
}

TEST(every_source_field_changes_the_digest)
{
        char digests[N_SOURCE_VARIANTS][KILN_LLB_DIGEST_LEN + 1];
        for (int v = 0; v < N_SOURCE_VARIANTS; v++) {
                _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
                const struct kiln_llb_op *op = add(def, make_source(v));
                ASSERT_TRUE(op);
                memcpy(digests[v], op->digest, sizeof(digests[v]));
        }
        return all_digests_differ(digests, N_SOURCE_VARIANTS);
}

TEST(every_exec_field_changes_the_digest)
{
        char digests[N_EXEC_VARIANTS][KILN_LLB_DIGEST_LEN + 1];
        for (int v = 0; v < N_EXEC_VARIANTS; v++) {
                _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
                const struct kiln_llb_op *root = add_image(def, "docker.io/library/alpine:3.20");
                const struct kiln_llb_op *ctx = add_local(def);
                ASSERT_TRUE(root && ctx);
                const struct kiln_llb_op *op = add(def, make_exec(v, root, ctx));
                ASSERT_TRUE(op);
                memcpy(digests[v], op->digest, sizeof(digests[v]));
        }
        return all_digests_differ(digests, N_EXEC_VARIANTS);
}

TEST(every_file_field_changes_the_digest)
{
        char digests[N_FILE_VARIANTS][KILN_LLB_DIGEST_LEN + 1];
        for (int v = 0; v < N_FILE_VARIANTS; v++) {
                _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
                const struct kiln_llb_op *root = add_image(def, "docker.io/library/alpine:3.20");
                const struct kiln_llb_op *ctx = add_local(def);
                ASSERT_TRUE(root && ctx);
                const struct kiln_llb_op *op = add(def, make_file(v, root, ctx));
                ASSERT_TRUE(op);
                memcpy(digests[v], op->digest, sizeof(digests[v]));
        }
        return all_digests_differ(digests, N_FILE_VARIANTS);
}

TEST(merge_and_diff_digests_cover_their_inputs)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *a = add_image(def, "docker.io/library/alpine:3.20");
        const struct kiln_llb_op *b = add_image(def, "docker.io/library/busybox:1");
        const struct kiln_llb_op *c = add_local(def);
        ASSERT_TRUE(a && b && c);
        char d[8][KILN_LLB_DIGEST_LEN + 1];
        const struct kiln_llb_op *ops[8];
        const struct kiln_llb_op *in[][3] = {
                { a, b, NULL }, { b, a, NULL }, { a, b, c }, { a, c, NULL }
        };
        for (size_t i = 0; i < 4; i++) {
                struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_MERGE);
                for (size_t k = 0; k < 3 && in[i][k]; k++)
                        kiln_llb_merge_add_input(op, ref(in[i][k], 0));
                ops[i] = add(def, op);
                ASSERT_TRUE(ops[i]);
        }
        const struct kiln_llb_op *diffs[][2] = { { a, b }, { b, a }, { NULL, b }, { a, NULL } };
        for (size_t i = 0; i < 4; i++) {
                struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_DIFF);
                op->diff.lower = ref(diffs[i][0], 0);
                op->diff.upper = ref(diffs[i][1], 0);
                ops[4 + i] = add(def, op);
                ASSERT_TRUE(ops[4 + i]);
        }
        for (size_t i = 0; i < 8; i++)
                memcpy(d[i], ops[i]->digest, sizeof(d[i]));
        ASSERT_EQ_INT(kiln_llb_def_n_ops(def), 11);
        return all_digests_differ(d, 8);
}

TEST(digest_follows_a_change_in_an_input)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *a = add_image(def, "docker.io/library/alpine:3.20");
        const struct kiln_llb_op *b = add_image(def, "docker.io/library/alpine:3.19");
        const struct kiln_llb_op *ctx = add_local(def);
        ASSERT_TRUE(a && b && ctx);
        const struct kiln_llb_op *ea = add(def, make_exec(0, a, ctx));
        const struct kiln_llb_op *eb = add(def, make_exec(0, b, ctx));
        ASSERT_TRUE(ea && eb);
        ASSERT_TRUE(!streq(ea->digest, eb->digest));
        /* ... and so does everything downstream. */
        const struct kiln_llb_op *fa = add(def, make_file(0, ea, ctx));
        const struct kiln_llb_op *fb = add(def, make_file(0, eb, ctx));
        ASSERT_TRUE(fa && fb);
        ASSERT_TRUE(!streq(fa->digest, fb->digest));
        return 0;
}

/* ---- metadata and digest-free fields ----------------------------------------- */

TEST(metadata_and_digest_free_fields_keep_the_digest)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *d0 = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_image(d0, "docker.io/library/alpine:3.20");
        const struct kiln_llb_op *ctx = add_local(d0);
        ASSERT_TRUE(root && ctx);
        const struct kiln_llb_op *base = add(d0, make_exec(0, root, ctx));
        ASSERT_TRUE(base);

        for (int v = 0; v < 9; v++) {
                _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
                const struct kiln_llb_op *r2 = add_image(def, "docker.io/library/alpine:3.20");
                struct kiln_llb_op *lop = kiln_llb_op_new_source(KILN_LLB_SOURCE_LOCAL);
                lop->source.local.name = kiln_xstrdup("context");
                kiln_llb_strv_push(&lop->source.local.exclude_patterns, "*.md");
                if (v == 0)
                        lop->source.local.session_id = kiln_xstrdup("abcdef0123");
                if (v == 1)
                        lop->source.local.shared_key_hint = kiln_xstrdup("context:/home/u/app");
                const struct kiln_llb_op *c2 = add(def, lop);
                ASSERT_TRUE(r2 && c2);
                ASSERT_STREQ(c2->digest, ctx->digest);

                struct kiln_llb_op *op = make_exec(0, r2, c2);
                struct kiln_llb_meta *m = &op->meta;
                switch (v) {
                case 2:
                        kiln_llb_strmap_set(&m->description, "llb.customname", "RUN echo hello");
                        break;
                case 3:
                        m->progress_group_id = kiln_xstrdup("g1");
                        m->progress_group_name = kiln_xstrdup("build");
                        m->progress_group_weak = true;
                        break;
                case 4:
                        m->ignore_cache = true;
                        break;
                case 5:
                        kiln_llb_strv_push(&m->caps, "exec.meta.base");
                        break;
                case 6:
                        op->exec.proxy_env.http_proxy = kiln_xstrdup("http://proxy:3128");
                        op->exec.proxy_env.https_proxy = kiln_xstrdup("http://proxy:3128");
                        op->exec.proxy_env.no_proxy = kiln_xstrdup("localhost");
                        op->exec.proxy_env.ftp_proxy = kiln_xstrdup("ftp://proxy");
                        op->exec.proxy_env.all_proxy = kiln_xstrdup("socks5://proxy");
                        break;
                default:
                        break;
                }
                const struct kiln_llb_op *e = add(def, op);
                ASSERT_TRUE(e);
                ASSERT_STREQ(e->digest, base->digest);
        }
        return 0;
}

/* As BuildKit's exec cache key: --add-host with a new address for the same
 * name keeps the step cached; the op still carries the address it runs
 * with. */
TEST(extra_host_address_is_not_in_the_digest)
{
        char digests[2][KILN_LLB_DIGEST_LEN + 1];
        for (int v = 0; v < 2; v++) {
                _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
                const struct kiln_llb_op *root = add_image(def, "docker.io/library/alpine:3.20");
                const struct kiln_llb_op *ctx = add_local(def);
                ASSERT_TRUE(root && ctx);
                struct kiln_llb_op *op = make_exec(0, root, ctx);
                kiln_llb_exec_add_extra_host(op, "db", v ? "10.0.0.9" : "10.0.0.2");
                const struct kiln_llb_op *e = add(def, op);
                ASSERT_TRUE(e);
                ASSERT_STREQ(e->exec.extra_hosts[0].ip, v ? "10.0.0.9" : "10.0.0.2");
                memcpy(digests[v], e->digest, sizeof(digests[v]));
        }
        ASSERT_STREQ(digests[0], digests[1]);
        return 0;
}

TEST(env_order_matters_description_order_does_not)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_image(def, "docker.io/library/alpine:3.20");
        const struct kiln_llb_op *ctx = add_local(def);
        ASSERT_TRUE(root && ctx);
        const struct kiln_llb_op *a = add(def, make_exec(0, root, ctx));
        const struct kiln_llb_op *b = add(def, make_exec(3, root, ctx)); /* B=2 A=1 */
        ASSERT_TRUE(a && b);
        ASSERT_TRUE(!streq(a->digest, b->digest));

        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *d1 = kiln_llb_def_new();
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *d2 = kiln_llb_def_new();
        struct kiln_llb_op *o1 = make_source(0), *o2 = make_source(0);
        kiln_llb_strmap_set(&o1->meta.description, "a", "1");
        kiln_llb_strmap_set(&o1->meta.description, "b", "2");
        kiln_llb_strmap_set(&o2->meta.description, "b", "2");
        kiln_llb_strmap_set(&o2->meta.description, "a", "1");
        kiln_llb_strv_push(&o1->meta.caps, "x");
        kiln_llb_strv_push(&o1->meta.caps, "y");
        kiln_llb_strv_push(&o2->meta.caps, "y");
        kiln_llb_strv_push(&o2->meta.caps, "x");
        kiln_llb_strv_push(&o2->meta.caps, "y");
        ASSERT_TRUE(add(d1, o1) && add(d2, o2));
        ASSERT_TRUE(kiln_llb_def_equal(d1, d2));
        return 0;
}

/* ---- pinned digests: the canonical form must never drift -------------------- */

TEST(canonical_form_is_pinned)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *img = add_image(def, "docker.io/library/alpine:3.20");
        ASSERT_TRUE(img);
        _cleanup_free_ char *c = NULL;
        ASSERT_OK(kiln_llb_op_canonical(img, &c));
        ASSERT_STREQ(c, "{\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},"
                        "\"source\":{\"image\":{\"ref\":\"docker.io/library/alpine:3.20\"}}}");

        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        kiln_llb_strv_push(&op->exec.args, "sh");
        kiln_llb_strv_push(&op->exec.args, "-c");
        kiln_llb_strv_push(&op->exec.args, "printf \"a\tb\" \xc3\xa9");
        kiln_llb_strv_push(&op->exec.env, "PATH=/bin");
        op->exec.proxy_env.http_proxy = kiln_xstrdup("http://p");
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/")->input = ref(img, 0);
        struct kiln_llb_mount *m = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SECRET, "/s");
        m->id = kiln_xstrdup("tok");
        kiln_llb_strmap_set(&op->meta.description, "llb.customname", "RUN x");
        const struct kiln_llb_op *e = add(def, op);
        ASSERT_TRUE(e);
        free(c);
        c = NULL;
        ASSERT_OK(kiln_llb_op_canonical(e, &c));
        _cleanup_free_ char *want = kiln_xasprintf(
                "{\"exec\":{\"args\":[\"sh\",\"-c\",\"printf \\\"a\\u0009b\\\" \xc3\xa9\"],"
                "\"env\":[\"PATH=/bin\"],\"mounts\":[{\"input\":{\"digest\":\"%s\"},"
                "\"target\":\"/\"},{\"id\":\"tok\",\"mode\":256,\"target\":\"/s\","
                "\"type\":\"secret\"}]}}",
                img->digest);
        ASSERT_STREQ(c, want);
        return 0;
}

TEST(digests_are_pinned)
{
        /* Computed once; a change here means every cache key in the field
         * changes. Only ever update these on purpose. */
        static const char *const pinned[] = {
                "sha256:c2536ed9426a8e92998d215bcecd2c45ad63a1d46d5a2aee541a85a32c034184",
                "sha256:b2b407ffa02a17b4fcedbd2a28f9c344e8f13d9fcc240b390ba2fe9dbd127c23",
                "sha256:deb6f1fdd4d5bff9fbe18f337f71cf9045d2aa2418b164ab45522fcd1060b988",
                "sha256:a67c2f91eea6827f49f142992e315c68e14a337eed3b12cdb9b5f9377f27ff66",
                "sha256:fecd2404c1caf9c0298f5fb46949d0236cf00874343f3d9df2abd0fbc37cfad0",
        };
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *ops[5];
        ops[0] = add(def, make_source(0));
        ops[1] = add_local(def);
        ASSERT_TRUE(ops[0] && ops[1]);
        ops[2] = add(def, make_exec(0, ops[0], ops[1]));
        ASSERT_TRUE(ops[2]);
        ops[3] = add(def, make_file(0, ops[2], ops[1]));
        ASSERT_TRUE(ops[3]);
        struct kiln_llb_op *mg = kiln_llb_op_new(KILN_LLB_OP_MERGE);
        kiln_llb_merge_add_input(mg, ref(ops[0], 0));
        kiln_llb_merge_add_input(mg, ref(ops[3], 0));
        ops[4] = add(def, mg);
        ASSERT_TRUE(ops[4]);
        for (size_t i = 0; i < 5; i++)
                if (!streq(ops[i]->digest, pinned[i]))
                        KILN_TEST_FAIL("op %zu: digest %s, pinned %s", i, ops[i]->digest,
                                       pinned[i]);
        return 0;
}

/* ---- the container ------------------------------------------------------------ */

TEST(identical_ops_are_deduplicated_and_metadata_merged)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        struct kiln_llb_op *a = make_source(0), *b = make_source(0);
        kiln_llb_strmap_set(&a->meta.description, "llb.customname", "FROM alpine");
        kiln_llb_strv_push(&a->meta.caps, "source.image");
        kiln_llb_strmap_set(&b->meta.description, "llb.customname", "FROM alpine AS other");
        kiln_llb_strmap_set(&b->meta.description, "com.example", "x");
        kiln_llb_strv_push(&b->meta.caps, "source.image");
        kiln_llb_strv_push(&b->meta.caps, "source.image.layerlimit");
        b->meta.ignore_cache = true;
        const struct kiln_llb_op *oa = add(def, a), *ob = add(def, b);
        ASSERT_TRUE(oa && ob);
        ASSERT_TRUE(oa == ob);
        ASSERT_EQ_INT(kiln_llb_def_n_ops(def), 1);
        ASSERT_TRUE(kiln_llb_def_op(def, 0) == oa);
        ASSERT_TRUE(kiln_llb_def_op(def, 1) == NULL);
        ASSERT_TRUE(kiln_llb_def_find(def, oa->digest) == oa);
        ASSERT_TRUE(kiln_llb_def_find(def, "sha256:0000") == NULL);
        ASSERT_TRUE(oa->meta.ignore_cache);
        ASSERT_STREQ(kiln_llb_strmap_get(&oa->meta.description, "llb.customname"), "FROM alpine");
        ASSERT_STREQ(kiln_llb_strmap_get(&oa->meta.description, "com.example"), "x");
        ASSERT_EQ_INT(oa->meta.caps.n, 2);

        /* Many distinct ops: the lookup table grows and finds them all. */
        const struct kiln_llb_op *ops[300];
        for (int i = 0; i < 300; i++) {
                char name[64];
                (void) snprintf(name, sizeof(name), "docker.io/library/img%d:latest", i);
                ops[i] = add_image(def, name);
                ASSERT_TRUE(ops[i]);
        }
        for (int i = 0; i < 300; i++)
                ASSERT_TRUE(kiln_llb_def_find(def, ops[i]->digest) == ops[i]);
        ASSERT_EQ_INT(kiln_llb_def_n_ops(def), 301);
        return 0;
}

TEST(exec_outputs_are_numbered_over_writable_binds)
{
        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/");
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/ro")->readonly = true;
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_CACHE, "/cache");
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/out");
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/scratchpad")->no_output = true;
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/out2");
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 0), 0);
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 1), -1);
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 2), -1);
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 3), 1);
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 4), -1);
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 5), 2);
        ASSERT_EQ_INT(kiln_llb_exec_mount_output(op, 6), -1);
        ASSERT_EQ_INT(kiln_llb_op_n_outputs(op), 3);
        ASSERT_EQ_INT(op->exec.mounts[2].mode, 0);
        kiln_llb_op_free(op);

        op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        ASSERT_EQ_INT(kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SECRET, "/s")->mode, 0400);
        ASSERT_EQ_INT(kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SSH, "/a")->mode, 0600);
        kiln_llb_op_free(op);
        op = kiln_llb_op_new(KILN_LLB_OP_FILE);
        ASSERT_EQ_INT(kiln_llb_file_add_action(op, KILN_LLB_FILE_MKDIR)->mkdir.mode, 0755);
        ASSERT_EQ_INT(kiln_llb_file_add_action(op, KILN_LLB_FILE_MKFILE)->mkfile.mode, 0644);
        ASSERT_EQ_INT(kiln_llb_op_n_outputs(op), 1);
        kiln_llb_op_free(op);
        return 0;
}

TEST(chown_parses_as_buildkit_with_user)
{
        static const struct {
                const char *spec;
                int ukind;
                uint32_t uid;
                const char *uname;
                int gkind;
                uint32_t gid;
                const char *gname;
        } cases[] = {
                { "1000:1000", KILN_LLB_USER_ID, 1000, NULL, KILN_LLB_USER_ID, 1000, NULL },
                { "app", KILN_LLB_USER_NAME, 0, "app", KILN_LLB_USER_NONE, 0, NULL },
                { "root:staff", KILN_LLB_USER_ID, 0, NULL, KILN_LLB_USER_NAME, 0, "staff" },
                { ":1000", KILN_LLB_USER_ID, 0, NULL, KILN_LLB_USER_ID, 1000, NULL },
                { "app:", KILN_LLB_USER_NAME, 0, "app", KILN_LLB_USER_ID, 0, NULL },
                { "+5", KILN_LLB_USER_ID, 5, NULL, KILN_LLB_USER_NONE, 0, NULL },
                { "2147483647", KILN_LLB_USER_ID, 2147483647, NULL, KILN_LLB_USER_NONE, 0, NULL },
                { "2147483648", KILN_LLB_USER_NAME, 0, "2147483648", KILN_LLB_USER_NONE, 0, NULL },
                { "a:b:c", KILN_LLB_USER_NAME, 0, "a", KILN_LLB_USER_NAME, 0, "b:c" },
                { "0x10", KILN_LLB_USER_NAME, 0, "0x10", KILN_LLB_USER_NONE, 0, NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kiln_llb_chown c = { 0 };
                kiln_llb_chown_parse("junk:junk", &c); /* replaced, not leaked */
                kiln_llb_chown_parse(cases[i].spec, &c);
                ASSERT_EQ_INT(c.user.kind, cases[i].ukind);
                ASSERT_EQ_INT(c.user.id, cases[i].uid);
                ASSERT_TRUE(streq_ptr(c.user.name, cases[i].uname));
                ASSERT_EQ_INT(c.group.kind, cases[i].gkind);
                ASSERT_EQ_INT(c.group.id, cases[i].gid);
                ASSERT_TRUE(streq_ptr(c.group.name, cases[i].gname));
                kiln_llb_chown_release(&c);
        }
        return 0;
}

/* Expects kiln_llb_def_add to refuse op with code and a message holding msg. */
static int add_fails(struct kiln_llb_def *def, struct kiln_llb_op *op, int code, const char *msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct kiln_llb_op *ret = NULL;
        ASSERT_EQ_INT(kiln_llb_def_add(def, op, &ret, &err), code);
        ASSERT_STREQ(kiln_error_message(err), msg);
        ASSERT_TRUE(ret == NULL);
        return 0;
}

TEST(invalid_ops_are_refused_with_their_path)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *other = kiln_llb_def_new();
        const struct kiln_llb_op *img = add_image(def, "docker.io/library/alpine:3.20");
        const struct kiln_llb_op *ctx = add_local(def);
        const struct kiln_llb_op *foreign = add_image(other, "docker.io/library/busybox:1");
        ASSERT_TRUE(img && ctx && foreign);
        struct kiln_llb_op *op;

        op = kiln_llb_op_new_source(KILN_LLB_SOURCE_IMAGE);
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: source.image.ref: required"));

        op = kiln_llb_op_new_source(KILN_LLB_SOURCE_HTTP);
        op->source.http.url = kiln_xstrdup("ftp://example.com/x");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: source.http.url: 'ftp://example.com/x' is not an "
                            "http:// or https:// URL"));

        op = kiln_llb_op_new_source(KILN_LLB_SOURCE_HTTP);
        op->source.http.url = kiln_xstrdup("https://example.com/x");
        op->source.http.checksum = kiln_xstrdup("md5:abc");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: source.http.checksum: 'md5:abc' is not a sha256 digest"));

        op = make_source(0);
        kiln_llb_platform_set(&op->platform, "linux", NULL, NULL);
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: platform.architecture: required"));

        op = make_exec(0, img, ctx);
        op->exec.mounts[0].input = ref(foreign, 0);
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[0].input: refers to an op not in this "
                            "definition"));

        op = make_exec(0, img, ctx);
        op->exec.mounts[0].input = ref(img, 1);
        _cleanup_free_ char *msg = kiln_xasprintf(
                "invalid op: exec.mounts[0].input: op '%s' has no output 1 (it has 1)",
                img->digest);
        ASSERT_OK(add_fails(def, op, -EINVAL, msg));

        op = make_exec(0, img, ctx);
        op->exec.mounts[0].input = ref(NULL, 1);
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[0].input: scratch has no output 1"));

        op = make_exec(0, img, ctx);
        free(op->exec.mounts[0].target);
        op->exec.mounts[0].target = kiln_xstrdup("/x");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[0]: the first mount must be the root: a "
                            "bind mount at '/'"));

        op = make_exec(0, img, ctx);
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "rel");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[5].target: path 'rel' is not absolute"));

        op = make_exec(0, img, ctx);
        op->exec.mounts[2].tmpfs_size = 0;
        op->exec.mounts[2].id = kiln_xstrdup("x");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[2].id: not allowed for a tmpfs mount"));

        op = make_exec(0, img, ctx);
        op->exec.mounts[3].input = ref(ctx, 0);
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[3].input: not allowed for a secret mount"));

        op = make_exec(0, img, ctx);
        free(op->exec.mounts[1].id);
        op->exec.mounts[1].id = NULL;
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: exec.mounts[1].id: required"));

        op = make_exec(0, img, ctx);
        op->exec.mounts[3].mode = 010000;
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts[3].mode: mode 010000 is not in 0..07777"));

        op = make_exec(0, img, ctx);
        kiln_llb_strv_push(&op->exec.env, "NOVALUE");
        ASSERT_OK(
                add_fails(def, op, -EINVAL, "invalid op: exec.env[2]: 'NOVALUE' is not KEY=value"));

        op = make_exec(0, img, ctx);
        kiln_llb_strv_push(&op->exec.args, "bad \xff utf8");
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: exec.args[3]: not valid UTF-8"));

        op = make_exec(0, img, ctx);
        kiln_llb_strv_push(&op->exec.args, "\xed\xa0\x80"); /* a surrogate */
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: exec.args[3]: not valid UTF-8"));

        op = make_exec(0, img, ctx);
        op->exec.network = 7;
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: exec.network: unknown network mode"));

        op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        kiln_llb_strv_push(&op->exec.args, "true");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: exec.mounts: required: the root mount at '/'"));

        op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/");
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: exec.args: required"));

        op = make_file(0, img, ctx);
        op->file.actions[0].copy.has_mode = true;
        op->file.actions[0].copy.mode_str = kiln_xstrdup("u+x");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: file.actions[0].copy.mode_str: set together with mode"));

        op = make_file(0, img, ctx);
        op->file.actions[0].copy.mode_str = kiln_xstrdup("u+q");
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: file.actions[0].copy.mode_str: 'u+q' is not a symbolic "
                            "mode"));

        op = make_file(0, img, ctx);
        op->file.actions[1].mkdir.chown.user.kind = KILN_LLB_USER_NAME;
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: file.actions[1].mkdir.chown.user.name: required"));

        op = make_file(0, img, ctx);
        free(op->file.actions[4].symlink.newpath);
        op->file.actions[4].symlink.newpath = NULL;
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: file.actions[4].symlink.newpath: required"));

        op = kiln_llb_op_new(KILN_LLB_OP_FILE);
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: file.actions: required"));

        op = kiln_llb_op_new(KILN_LLB_OP_MERGE);
        kiln_llb_merge_add_input(op, ref(img, 0));
        kiln_llb_merge_add_input(op, ref(NULL, 0));
        ASSERT_OK(add_fails(def, op, -EINVAL,
                            "invalid op: merge.inputs[1]: scratch is not allowed here"));

        op = kiln_llb_op_new(KILN_LLB_OP_MERGE);
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: merge.inputs: required"));

        op = make_source(0);
        op->meta.progress_group_name = kiln_xstrdup("x");
        ASSERT_OK(add_fails(def, op, -EINVAL, "invalid op: metadata.progress_group.id: required"));

        /* A too-long string is a passed limit. */
        op = make_exec(0, img, ctx);
        char *big = kiln_xmalloc(KILN_LIMIT_LLB_STRING + 2);
        memset(big, 'a', KILN_LIMIT_LLB_STRING + 1);
        big[KILN_LIMIT_LLB_STRING + 1] = '\0';
        kiln_llb_strv_push(&op->exec.args, big);
        free(big);
        ASSERT_OK(
                add_fails(def, op, -E2BIG, "invalid op: exec.args[3]: longer than 1048576 bytes"));

        /* An exec whose root is readonly has no output to refer to. */
        op = make_exec(13, img, ctx);
        const struct kiln_llb_op *ro = add(def, op);
        ASSERT_TRUE(ro);
        ASSERT_EQ_INT(kiln_llb_op_n_outputs(ro), 0);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        ASSERT_EQ_INT(kiln_llb_def_set_output(def, ref(ro, 0), &err), -EINVAL);
        ASSERT_CONTAINS(kiln_error_message(err), "has no output 0 (it has 0)");
        ASSERT_TRUE(!kiln_llb_def_has_output(def));

        /* Nothing refused was added. */
        ASSERT_EQ_INT(kiln_llb_def_n_ops(def), 3);
        return 0;
}

/* ---- JSON ------------------------------------------------------------------- */

/* A definition using every op, most fields and all metadata. */
static struct kiln_llb_def *build_full(void)
{
        struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *img = add(def, make_source(8));
        const struct kiln_llb_op *ctx = add(def, make_source(13));
        struct kiln_llb_op *lop = make_source(11);
        lop->source.local.session_id = kiln_xstrdup("session-1");
        lop->source.local.shared_key_hint = kiln_xstrdup("context:/src");
        const struct kiln_llb_op *ctx2 = add(def, lop);
        const struct kiln_llb_op *http = add(def, make_source(17));
        const struct kiln_llb_op *git = add(def, make_source(25));
        if (!img || !ctx || !ctx2 || !http || !git)
                return kiln_llb_def_free(def);
        struct kiln_llb_op *op = make_exec(15, img, ctx);
        op->exec.proxy_env.http_proxy = kiln_xstrdup("http://proxy:3128");
        op->exec.proxy_env.no_proxy = kiln_xstrdup("localhost,\"quoted\"\\");
        kiln_llb_exec_add_secret_env(op, "token", "TOKEN", true);
        kiln_llb_exec_add_extra_host(op, "db", "10.0.0.2");
        kiln_llb_exec_add_ulimit(op, "nofile", -1, 1 << 20);
        kiln_llb_exec_add_valid_exit_code(op, 0);
        kiln_llb_exec_add_valid_exit_code(op, -1);
        op->exec.mounts[3].tmpfs_size = 1 << 20;
        op->exec.user = kiln_xstrdup("1000:1000");
        op->exec.remove_mount_stubs_recursive = true;
        op->exec.network = KILN_LLB_NETWORK_NONE;
        op->exec.security = KILN_LLB_SECURITY_INSECURE;
        op->exec.mounts[2].sharing = KILN_LLB_CACHE_LOCKED;
        kiln_llb_strmap_set(&op->meta.description, "llb.customname", "[2/3] RUN echo \"hi\"\n");
        kiln_llb_strmap_set(&op->meta.description, "com.docker.dockerfile.v1.step", "2");
        op->meta.progress_group_id = kiln_xstrdup("stage-0");
        op->meta.progress_group_name = kiln_xstrdup("build");
        op->meta.progress_group_weak = true;
        op->meta.ignore_cache = true;
        kiln_llb_strv_push(&op->meta.caps, "exec.mount.bind");
        kiln_llb_strv_push(&op->meta.caps, "exec.meta.base");
        const struct kiln_llb_op *run = add(def, op);
        if (!run)
                return kiln_llb_def_free(def);
        op = make_file(0, run, ctx);
        struct kiln_llb_file_copy *c = &op->file.actions[0].copy;
        c->mode_str = kiln_xstrdup("u+x,g=u,o-rwx");
        kiln_llb_chown_parse("app:0", &c->chown);
        c->allow_wildcard = c->allow_empty_wildcard = c->follow_symlinks = true;
        c->dir_copy_contents = c->create_dest_path = c->always_replace_existing = true;
        c->attempt_unpack = true;
        kiln_llb_strv_push(&c->include_patterns, "*.go");
        kiln_llb_strv_push(&c->exclude_patterns, "vendor");
        kiln_llb_strv_push(&c->required_paths, "go.mod");
        c->has_timestamp = true;
        c->timestamp = 0;
        op->file.actions[1].mkdir.make_parents = true;
        op->file.actions[1].mkdir.has_timestamp = true;
        op->file.actions[1].mkdir.timestamp = INT64_MIN;
        op->file.actions[3].rm.allow_not_found = true;
        op->file.actions[3].rm.allow_wildcard = true;
        kiln_llb_chown_parse("1:2", &op->file.actions[4].symlink.chown);
        kiln_llb_platform_set(&op->platform, "linux", "arm", "v7");
        const struct kiln_llb_op *file = add(def, op);
        if (!file)
                return kiln_llb_def_free(def);
        op = kiln_llb_op_new(KILN_LLB_OP_MERGE);
        kiln_llb_merge_add_input(op, ref(file, 0));
        kiln_llb_merge_add_input(op, ref(http, 0));
        kiln_llb_merge_add_input(op, ref(run, 1));
        const struct kiln_llb_op *merge = add(def, op);
        op = kiln_llb_op_new(KILN_LLB_OP_DIFF);
        op->diff.upper = ref(git, 0);
        const struct kiln_llb_op *diff = add(def, op);
        if (!merge || !diff)
                return kiln_llb_def_free(def);
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        if (kiln_llb_def_set_output(def, ref(merge, 0), &err) < 0)
                return kiln_llb_def_free(def);
        return def;
}

TEST(json_round_trips_exactly)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = build_full();
        ASSERT_TRUE(def);
        ASSERT_EQ_INT(kiln_llb_def_n_ops(def), 9);
        _cleanup_free_ char *json = NULL;
        ASSERT_OK(kiln_llb_def_to_json(def, &json));
        ASSERT_CONTAINS(json, "\"session_id\": \"session-1\"");
        ASSERT_CONTAINS(json, "\"http_proxy\": \"http://proxy:3128\"");
        ASSERT_CONTAINS(json, "\"data\": \"aGkKAP8=\"");
        ASSERT_CONTAINS(json, "\"version\": 1\n}\n");

        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *back = NULL;
        int r = kiln_llb_def_from_json(json, strlen(json), &back, &err);
        if (r < 0)
                KILN_TEST_FAIL("load: %s", kiln_error_message(err));
        ASSERT_TRUE(kiln_llb_def_equal(def, back));
        _cleanup_free_ char *json2 = NULL;
        ASSERT_OK(kiln_llb_def_to_json(back, &json2));
        ASSERT_STREQ(json, json2);
        ASSERT_EQ_INT(kiln_llb_def_n_ops(back), kiln_llb_def_n_ops(def));
        for (size_t i = 0; i < kiln_llb_def_n_ops(def); i++)
                ASSERT_STREQ(kiln_llb_def_op(back, i)->digest, kiln_llb_def_op(def, i)->digest);
        const struct kiln_llb_op *mk = kiln_llb_def_op(back, 6);
        ASSERT_EQ_INT(mk->type, KILN_LLB_OP_FILE);
        ASSERT_EQ_INT(mk->file.actions[2].mkfile.len, 5);
        ASSERT_TRUE(memcmp(mk->file.actions[2].mkfile.data, "hi\n\0\xff", 5) == 0);
        ASSERT_EQ_INT(mk->file.actions[1].mkdir.timestamp, INT64_MIN);
        ASSERT_TRUE(mk->file.actions[0].copy.has_timestamp);
        ASSERT_TRUE(!mk->file.actions[0].copy.has_mode);
        ASSERT_TRUE(kiln_llb_def_has_output(back));
        ASSERT_TRUE(kiln_llb_def_output(back).op == kiln_llb_def_op(back, 7));

        /* A change in a digest-free field is still a different definition. */
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *empty = kiln_llb_def_new();
        ASSERT_TRUE(!kiln_llb_def_equal(def, empty));
        _cleanup_free_ char *ej = NULL;
        ASSERT_OK(kiln_llb_def_to_json(empty, &ej));
        ASSERT_STREQ(ej, "{\n  \"ops\": [],\n  \"version\": 1\n}\n");
        return 0;
}

TEST(json_scratch_output_round_trips)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        ASSERT_OK(kiln_llb_def_set_output(def, ref(NULL, 0), &err));
        _cleanup_free_ char *json = NULL;
        ASSERT_OK(kiln_llb_def_to_json(def, &json));
        ASSERT_STREQ(json, "{\n  \"ops\": [],\n  \"output\": {},\n  \"version\": 1\n}\n");
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *back = NULL;
        ASSERT_OK(kiln_llb_def_from_json(json, strlen(json), &back, &err));
        ASSERT_TRUE(kiln_llb_def_has_output(back));
        ASSERT_TRUE(kiln_llb_def_output(back).op == NULL);
        ASSERT_TRUE(kiln_llb_def_equal(def, back));
        return 0;
}

/* Loads text and expects code with a message holding msg. */
static int load_fails(const char *text, int code, const char *msg)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_llb_def *def = NULL;
        int r = kiln_llb_def_from_json(text, strlen(text), &def, &err);
        if (r >= 0) {
                kiln_llb_def_free(def);
                KILN_TEST_FAIL("loaded: %s", text);
        }
        ASSERT_EQ_INT(r, code);
        ASSERT_TRUE(def == NULL);
        ASSERT_CONTAINS(kiln_error_message(err), msg);
        return 0;
}

#define Z64 "sha256:0000000000000000000000000000000000000000000000000000000000000000"

TEST(json_loader_names_the_path_of_every_error)
{
        /* A real image op to refer to. */
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *img = add(def, make_source(0));
        ASSERT_TRUE(img);
        _cleanup_free_ char *img_json = kiln_xasprintf(
                "{\"digest\":\"%s\",\"op\":{\"platform\":{\"architecture\":\"amd64\","
                "\"os\":\"linux\"},\"source\":{\"image\":{\"ref\":"
                "\"docker.io/library/alpine:3.20\"}}}}",
                img->digest);
#define DOC(op) kiln_xasprintf("{\"version\":1,\"ops\":[%s," op "]}", img_json)
        struct {
                char *text;
                int code;
                const char *msg;
        } cases[] = {
                { kiln_xstrdup("not json"), -EINVAL, "1:3: '[' or '{' expected" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[],\"extra\":1}"), -EINVAL,
                  "(root): unknown member 'extra'" },
                { kiln_xstrdup("{\"ops\":[]}"), -EINVAL, "version: required" },
                { kiln_xstrdup("{\"version\":2,\"ops\":[]}"), -EINVAL,
                  "version: unsupported version, expected 1" },
                { kiln_xstrdup("{\"version\":1,\"ops\":{}}"), -EINVAL, "ops: expected an array" },
                { kiln_xstrdup("{\"version\":1,\"version\":1,\"ops\":[]}"), -EINVAL,
                  "duplicate object key" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"op\":{}}]}"), -EINVAL,
                  "ops[0].digest: required" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64 "\",\"op\":{}}]}"),
                  -EINVAL, "ops[0].op: expected one of source, exec, file, merge, diff" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{}}}}]}"),
                  -EINVAL, "ops[0].op.source.image.ref: required" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\"},\"git\":{}}}}]}"),
                  -EINVAL, "ops[0].op.source: expected exactly one member" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"svn\":{}}}}]}"),
                  -EINVAL, "ops[0].op.source: unknown member 'svn'" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\"}},\"exec\":{}}}]}"),
                  -EINVAL, "ops[0].op: both 'source' and 'exec' set" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\"}}}}]}"),
                  -EINVAL, "ops[0].digest: '" Z64 "' does not match the op's digest 'sha256:" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\","
                               "\"layer_limit\":-1}}}}]}"),
                  -EINVAL, "ops[0].op.source.image.layer_limit: -1 is out of range 0..4294967295" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\","
                               "\"resolve_mode\":\"sometimes\"}}}}]}"),
                  -EINVAL, "ops[0].op.source.image.resolve_mode: unknown value 'sometimes'" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\"}}},"
                               "\"metadata\":{\"ignore_cache\":1}}]}"),
                  -EINVAL, "ops[0].metadata.ignore_cache: expected true or false" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\"}}},"
                               "\"metadata\":{\"description\":{\"a\":1}}}]}"),
                  -EINVAL, "ops[0].metadata.description.a: expected a string" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":\"x\\u0000y\"}}}}]}"),
                  -EINVAL, "NUL" },
                { kiln_xstrdup("{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                               "\",\"op\":{\"source\":{\"image\":{\"ref\":1.5}}}}]}"),
                  -EINVAL, "ops[0].op.source.image.ref: expected a string" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":\"sh\"}}}"), -EINVAL,
                  "ops[1].op.exec.args: expected an array" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"x\"}]}}}"),
                  -EINVAL, "ops[1].op.exec.mounts[0].target: path 'x' is not absolute" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"/\",\"bogus\":true}]}}}"),
                  -EINVAL, "ops[1].op.exec.mounts[0]: unknown member 'bogus'" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"network\":\"bridge\",\"mounts\":[{\"target\":\"/\"}]}}}"),
                  -EINVAL, "ops[1].op.exec.network: unknown value 'bridge'" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"/\",\"input\":{\"digest\":\"" Z64 "\"}}]}}}"),
                  -EINVAL, "ops[1].op.exec.mounts[0].input.digest: no earlier op '" Z64 "'" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"/\",\"input\":{\"output\":1}}]}}}"),
                  -EINVAL, "ops[1].op.exec.mounts[0].input.digest: required" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"/\"},{\"type\":\"tmpfs\",\"target\":\"/t\","
                      "\"mode\":4096}]}}}"),
                  -EINVAL, "ops[1].op.exec.mounts[1].mode: 4096 is out of range 0..4095" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"/\"},{\"type\":\"tmpfs\",\"target\":\"/t\","
                      "\"mode\":256}]}}}"),
                  -EINVAL, "ops[1].op.exec.mounts[1].mode: not allowed for a tmpfs mount" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"exec\":{\"args\":[\"sh\"],"
                      "\"mounts\":[{\"target\":\"/\"}],\"valid_exit_codes\":[0,\"1\"]}}}"),
                  -EINVAL, "ops[1].op.exec.valid_exit_codes[1]: expected an integer" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"file\":{\"actions\":[{\"mkfile\":"
                      "{\"path\":\"/a\",\"data\":\"aGk\"}}]}}}"),
                  -EINVAL, "ops[1].op.file.actions[0].mkfile.data: not canonical padded base64" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"file\":{\"actions\":[{\"mkfile\":"
                      "{\"path\":\"/a\",\"data\":\"aGl=\"}}]}}}"),
                  -EINVAL, "ops[1].op.file.actions[0].mkfile.data: not canonical padded base64" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"file\":{\"actions\":[{\"copy\":"
                      "{\"src_path\":\"/a\",\"dest\":\"/b\",\"chown\":{\"user\":{\"id\":1,"
                      "\"name\":\"x\"}}}}]}}}"),
                  -EINVAL, "ops[1].op.file.actions[0].copy.chown.user: both id and name set" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"file\":{\"actions\":[{\"rm\":"
                      "{\"path\":\"/a\"},\"mkdir\":{}}]}}}"),
                  -EINVAL, "ops[1].op.file.actions[0]: expected exactly one member" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"merge\":{\"inputs\":[{}]}}}"), -EINVAL,
                  "ops[1].op.merge.inputs[0]: scratch is not allowed here" },
                { DOC("{\"digest\":\"" Z64 "\",\"op\":{\"diff\":{\"lower\":[]}}}"), -EINVAL,
                  "ops[1].op.diff.lower: expected an object" },
                { kiln_xasprintf("{\"version\":1,\"ops\":[%s,%s]}", img_json, img_json), -EINVAL,
                  "ops[1].op: same op as an earlier one" },
                { kiln_xasprintf("{\"version\":1,\"ops\":[%s],\"output\":{\"digest\":\"%s\","
                                 "\"output\":1}}",
                                 img_json, img->digest),
                  -EINVAL, "output: op 'sha256:" },
        };
#undef DOC
        int ret = 0;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                if (ret == 0 && load_fails(cases[i].text, cases[i].code, cases[i].msg) < 0) {
                        printf("# case %zu\n", i);
                        ret = -1;
                }
                free(cases[i].text);
        }
        return ret;
}

TEST(json_loader_enforces_limits)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_llb_def *def = NULL;
        size_t len = KILN_LIMIT_LLB_JSON + 1;
        _cleanup_free_ char *big = kiln_xmalloc(len);
        memset(big, ' ', len);
        ASSERT_EQ_INT(kiln_llb_def_from_json(big, len, &def, &err), -E2BIG);
        ASSERT_STREQ(kiln_error_message(err), "definition is larger than 67108864 bytes");

        /* A string one byte over the limit. */
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        ASSERT_OK(kiln_buf_puts(&b, "{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                                    "\",\"op\":{\"source\":{\"image\":{\"ref\":\""));
        for (size_t i = 0; i <= KILN_LIMIT_LLB_STRING; i++)
                ASSERT_OK(kiln_buf_putc(&b, 'a'));
        ASSERT_OK(kiln_buf_puts(&b, "\"}}}}]}"));
        _cleanup_free_ char *text = kiln_buf_steal(&b);
        ASSERT_OK(
                load_fails(text, -E2BIG, "ops[0].op.source.image.ref: longer than 1048576 bytes"));

        /* Too many mounts. */
        ASSERT_OK(kiln_buf_puts(&b, "{\"version\":1,\"ops\":[{\"digest\":\"" Z64
                                    "\",\"op\":{\"exec\":{\"mounts\":["));
        for (size_t i = 0; i <= KILN_LIMIT_LLB_MOUNTS; i++)
                ASSERT_OK(kiln_buf_puts(&b, i ? ",{}" : "{}"));
        ASSERT_OK(kiln_buf_puts(&b, "]}}}]}"));
        _cleanup_free_ char *text2 = kiln_buf_steal(&b);
        ASSERT_OK(load_fails(text2, -E2BIG, "ops[0].op.exec.mounts: more than 1024 items"));
        return 0;
}

TEST(output_index_of_a_reference_changes_the_digest)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        const struct kiln_llb_op *root = add_image(def, "docker.io/library/alpine:3.20");
        const struct kiln_llb_op *ctx = add_local(def);
        ASSERT_TRUE(root && ctx);
        const struct kiln_llb_op *run = add(def, make_exec(15, root, ctx)); /* 2 outputs */
        ASSERT_TRUE(run);
        ASSERT_EQ_INT(kiln_llb_op_n_outputs(run), 2);
        const struct kiln_llb_op *m[2], *f[2];
        for (uint32_t i = 0; i < 2; i++) {
                struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_MERGE);
                kiln_llb_merge_add_input(op, ref(root, 0));
                kiln_llb_merge_add_input(op, ref(run, i));
                m[i] = add(def, op);
                f[i] = add(def, make_file(0, run, ctx));
                ASSERT_TRUE(m[i] && f[i]);
        }
        ASSERT_TRUE(!streq(m[0]->digest, m[1]->digest));
        /* Identical file ops dedupe. */
        ASSERT_TRUE(f[0] == f[1]);
        return 0;
}
