/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the instruction layer: parse, turn the AST into
 * stages and commands, expand every command (identity, a rewriting expander
 * and one that fails), and check what comes back. */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "dockerfile/instructions.h"
#include "dockerfile/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                 \
        do {                     \
                if (!(x))        \
                        abort(); \
        } while (0)

/* Doubles every '$'; fails on words containing "!!". */
static int expander(void *userdata, const char *word, char **out, struct kiln_error **err)
{
        size_t n = strlen(word), k = 0;
        char *r;

        (*(unsigned *) userdata)++;
        if (strstr(word, "!!"))
                return kiln_error_set(err, -EINVAL, "no bangs");
        r = kiln_xmalloc(2 * n + 1);
        for (size_t i = 0; i < n; i++) {
                r[k++] = word[i];
                if (word[i] == '$')
                        r[k++] = '$';
        }
        r[k] = '\0';
        *out = r;
        return 0;
}

static bool is_ascii(const char *s)
{
        for (; *s; s++)
                if ((unsigned char) *s >= 0x80)
                        return false;
        return true;
}

static bool valid_stage_name(const char *s)
{
        if (!*s)
                return true;
        if (!(*s >= 'a' && *s <= 'z'))
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr("-_.", *s)))
                        return false;
        return true;
}

static void check_cmd(struct kiln_dockerfile_cmd *c, unsigned after_line)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        unsigned calls = 0;
        int r;

        CHECK(c->name && c->code);
        CHECK(c->start_line > after_line && c->end_line >= c->start_line);
        CHECK(kiln_dockerfile_cmd_type_name(c->type)[0] != '\0');
        switch (c->type) {
        case KILN_DOCKERFILE_CMD_ADD:
        case KILN_DOCKERFILE_CMD_COPY: {
                struct kiln_dockerfile_chmod m;
                struct kiln_error *e = NULL;

                CHECK(c->copy.dest && c->copy.from && c->copy.chown && c->copy.chmod);
                CHECK(c->copy.checksum);
                CHECK(c->copy.n_sources + c->copy.n_contents >= 1);
                if (c->type == KILN_DOCKERFILE_CMD_ADD)
                        CHECK(!*c->copy.from && !c->copy.parents);
                else
                        CHECK(!c->copy.unpack_set && !c->copy.keep_git_dir_set);
                if (kiln_dockerfile_chmod_parse(c->copy.chmod, &m, &e) < 0)
                        CHECK(e && e->message[0]);
                else
                        CHECK(m.symbolic || m.mode <= 07777);
                kiln_error_free(e);
                break;
        }
        case KILN_DOCKERFILE_CMD_ARG:
                CHECK(c->arg.n_args >= 1);
                for (size_t i = 0; i < c->arg.n_args; i++)
                        CHECK(c->arg.args[i].key[0] && !strchr(c->arg.args[i].key, '=') &&
                              c->arg.args[i].doc_comment);
                break;
        case KILN_DOCKERFILE_CMD_ENV:
        case KILN_DOCKERFILE_CMD_LABEL:
                CHECK(c->kv.n_kvs >= 1);
                for (size_t i = 0; i < c->kv.n_kvs; i++)
                        CHECK(c->kv.kvs[i].key[0] && c->kv.kvs[i].value);
                break;
        case KILN_DOCKERFILE_CMD_EXPOSE:
                CHECK(c->list.n_items >= 1);
                for (size_t i = 1; i < c->list.n_items; i++)
                        CHECK(strcmp(c->list.items[i - 1], c->list.items[i]) <= 0);
                break;
        case KILN_DOCKERFILE_CMD_VOLUME:
                CHECK(c->list.n_items >= 1);
                for (size_t i = 0; i < c->list.n_items; i++)
                        CHECK(c->list.items[i][0]);
                break;
        case KILN_DOCKERFILE_CMD_SHELL:
                CHECK(c->list.n_items >= 1);
                break;
        case KILN_DOCKERFILE_CMD_HEALTHCHECK:
                CHECK(c->healthcheck.n_test >= 1);
                CHECK(c->healthcheck.retries >= 0);
                CHECK(c->healthcheck.interval == 0 || c->healthcheck.interval >= 1000000);
                CHECK(c->healthcheck.timeout == 0 || c->healthcheck.timeout >= 1000000);
                if (streq(c->healthcheck.test[0], "NONE"))
                        CHECK(c->healthcheck.n_test == 1);
                else
                        CHECK(c->healthcheck.n_test >= 2);
                break;
        case KILN_DOCKERFILE_CMD_CMD:
        case KILN_DOCKERFILE_CMD_ENTRYPOINT:
                CHECK(c->cmdline.prepend_shell ? c->cmdline.n_args <= 1 : true);
                break;
        case KILN_DOCKERFILE_CMD_RUN:
                CHECK(c->run.mounts == NULL);
                CHECK(kiln_dockerfile_network_name(c->run.network)[0]);
                CHECK(kiln_dockerfile_security_name(c->run.security)[0]);
                CHECK(c->run.n_flags_used <= 4);
                for (size_t i = 0; i < c->run.n_devices; i++)
                        CHECK(c->run.devices[i].name);
                break;
        case KILN_DOCKERFILE_CMD_MAINTAINER:
        case KILN_DOCKERFILE_CMD_ONBUILD:
        case KILN_DOCKERFILE_CMD_STOPSIGNAL:
        case KILN_DOCKERFILE_CMD_USER:
        case KILN_DOCKERFILE_CMD_WORKDIR:
                CHECK(c->word);
                break;
        }

        /* identity first: mounts parse, nothing else changes */
        r = kiln_dockerfile_cmd_expand(c, "fuzz", NULL, NULL, &err);
        if (r < 0) {
                CHECK(c->type == KILN_DOCKERFILE_CMD_RUN && err && err->line == c->start_line);
                CHECK(c->run.mounts == NULL);
                return;
        }
        if (c->type == KILN_DOCKERFILE_CMD_RUN) {
                CHECK(c->run.n_mounts == c->run.n_mount_specs);
                for (size_t i = 0; i < c->run.n_mounts; i++) {
                        const struct kiln_dockerfile_mount *m = &c->run.mounts[i];

                        CHECK(m->from && m->source && m->target && m->cache_id);
                        CHECK(kiln_dockerfile_mount_type_name(m->type)[0]);
                        if (m->sharing != KILN_DOCKERFILE_SHARING_UNSET)
                                CHECK(m->type == KILN_DOCKERFILE_MOUNT_CACHE);
                        if (m->has_mode || m->has_uid || m->has_gid)
                                CHECK(m->type != KILN_DOCKERFILE_MOUNT_BIND &&
                                      m->type != KILN_DOCKERFILE_MOUNT_TMPFS);
                }
        }
        r = kiln_dockerfile_cmd_expand(c, "fuzz", expander, &calls, &err);
        if (r < 0)
                CHECK(err && err->message[0]);
        if (!kiln_dockerfile_cmd_expandable(c->type))
                CHECK(calls == 0);
        err = kiln_error_free(err);
        r = kiln_dockerfile_cmd_expand_raw(c, "fuzz", expander, &calls, &err);
        if (r < 0)
                CHECK(err && err->message[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_dockerfile_instructions_freep) struct kiln_dockerfile_instructions *d = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        unsigned line = 0;
        int r;

        if (kiln_dockerfile_parse((const char *) data, size, "fuzz", &root, &err) < 0)
                return 0;
        r = kiln_dockerfile_instructions_parse(root, "fuzz", &d, &err);
        if (r < 0) {
                CHECK(!d && err && err->line > 0 && startswith(err->message, "fuzz:"));
                CHECK(r == -EINVAL || r == -E2BIG);
                return 0;
        }
        CHECK(d && !err);

        /* each instruction on its own parses as well */
        for (size_t i = 0; i < root->n_children; i++) {
                struct kiln_dockerfile_cmd *c = NULL;
                struct kiln_dockerfile_stage *s = NULL;

                CHECK(kiln_dockerfile_instruction_parse(root->children[i], "fuzz", &c, &s, &err) ==
                      0);
                CHECK(!c != !s);
                kiln_dockerfile_cmd_free(c);
                kiln_dockerfile_stage_free(s);
        }

        for (size_t i = 0; i < d->n_meta_args; i++) {
                CHECK(d->meta_args[i]->type == KILN_DOCKERFILE_CMD_ARG);
                check_cmd(d->meta_args[i], line);
                line = d->meta_args[i]->end_line;
        }
        CHECK(d->n_stages > 0 || d->n_meta_args == root->n_children);
        for (size_t i = 0; i < d->n_stages; i++) {
                struct kiln_dockerfile_stage *s = &d->stages[i];

                CHECK(s->name && s->base_name && s->platform && s->code && s->doc_comment);
                CHECK(valid_stage_name(s->name));
                CHECK(s->orig_name && s->as_word);
                /* Go's strings.ToLower: ASCII names lower byte by byte; a
                 * valid name from a non-ASCII one (U+212A KELVIN SIGN lowers
                 * to 'k') is shorter than it */
                CHECK(!strcasecmp(s->orig_name, s->name) ||
                      (!is_ascii(s->orig_name) && strlen(s->name) < strlen(s->orig_name)));
                CHECK(!*s->name || !strcasecmp(s->as_word, "as"));
                for (size_t j = 0; j < s->n_comments; j++)
                        CHECK(s->comments[j]);
                CHECK(s->start_line > line);
                line = s->end_line;
                if (*s->name)
                        CHECK(kiln_dockerfile_find_stage(d, s->name) <= (ssize_t) i);
                for (size_t j = 0; j < s->n_cmds; j++) {
                        check_cmd(s->cmds[j], line);
                        line = s->cmds[j]->end_line;
                }
        }
        return 0;
}
