/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the Dockerfile parser: parse or fail with a line, and
 * check what the parse returns (lines, heredocs, directives, warnings), plus
 * the heredoc and directive helpers on the same input. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "dockerfile/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                 \
        do {                     \
                if (!(x))        \
                        abort(); \
        } while (0)

static unsigned count_lines(const char *s, size_t n)
{
        unsigned lines = 0;
        size_t i;

        for (i = 0; i < n; i++)
                lines += s[i] == '\n';
        return lines + (n > 0 && s[n - 1] != '\n');
}

static bool is_heredoc_instruction(const struct kiln_dockerfile_node *c)
{
        const char *v = c->value.s;

        if (!strcasecmp(v, "onbuild") && c->next && c->next->n_children > 0)
                v = c->next->children[0]->value.s;
        return !strcasecmp(v, "run") || !strcasecmp(v, "copy") || !strcasecmp(v, "add");
}

static void check_result(const struct kiln_dockerfile_result *res, const char *s, size_t size)
{
        const struct kiln_dockerfile_node *root = res->root;
        unsigned lines = count_lines(s, size), prev_end = 0, prev_dir = 0;
        size_t i, k;

        CHECK(root && root->n_children > 0);
        CHECK(res->escape == '\\' || res->escape == '`');
        CHECK(root->start_line == root->children[0]->start_line);
        CHECK(root->end_line == root->children[root->n_children - 1]->end_line);
        for (i = 0; i < root->n_children; i++) {
                const struct kiln_dockerfile_node *c = root->children[i];

                CHECK(c->start_line > prev_end && c->end_line >= c->start_line);
                CHECK(c->end_line <= lines);
                CHECK(c->original.s && c->value.s);
                prev_end = c->end_line;
                CHECK(c->n_heredocs == 0 || is_heredoc_instruction(c));
                /* each heredoc body ends with a terminator line */
                CHECK(c->end_line - c->start_line >= c->n_heredocs);
                for (k = 0; k < c->n_heredocs; k++) {
                        const struct kiln_dockerfile_heredoc *h = &c->heredocs[k];
                        struct kiln_dockerfile_str ch;

                        CHECK(h->name.s && h->name.len > 0 && h->content.s);
                        CHECK(h->content.len < size);
                        CHECK(h->content.len == 0 || h->content.s[h->content.len - 1] == '\n');
                        ch = kiln_dockerfile_heredoc_chomp(h->content.s, h->content.len);
                        CHECK(ch.len <= h->content.len);
                        free(ch.s);
                }
                for (k = 0; k < c->n_comments; k++)
                        CHECK(c->comments[k].s && c->comments[k].len > 0);
        }
        for (i = 0; i < res->n_directives; i++) {
                CHECK(res->directives[i].line > prev_dir);
                prev_dir = res->directives[i].line;
                CHECK(prev_dir < root->start_line);
                CHECK(res->directives[i].name && res->directives[i].value);
        }
        for (i = 0; i < res->n_warnings; i++) {
                CHECK(res->warnings[i].line >= root->start_line);
                CHECK(res->warnings[i].line <= root->end_line);
                CHECK(!strncmp(res->warnings[i].message, "Empty continuation line found in: ", 34));
        }
}

static void check_helpers(const char *s, size_t size)
{
        struct kiln_dockerfile_heredoc h;
        char *a = NULL, *b = NULL;
        unsigned line = 0;
        size_t n = size < 256 ? size : 256;
        const char *nl = memchr(s, '\n', n);
        int r;

        r = kiln_dockerfile_heredoc_parse(s, n, &h, NULL);
        CHECK(r >= -EINVAL && r <= 1);
        if (r == 1)
                CHECK(h.name.s && h.name.len > 0 && h.content.len == 0);
        else
                CHECK(!h.name.s);
        kiln_dockerfile_heredoc_release(&h);

        if (kiln_dockerfile_directive_parse_line(s, nl ? (size_t) (nl - s) : n, "", &a, &b) > 0)
                CHECK(a && b);
        else
                CHECK(!a && !b);
        free(a);
        free(b);

        if (kiln_dockerfile_directive_detect(s, size, "syntax", true, &a, &b, &line) > 0) {
                CHECK(a && b && strlen(a) <= strlen(b));
                CHECK(line <= 4); /* three directives after a "#!" line */
        } else
                CHECK(!a && !b);
        free(a);
        free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *res = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        static FILE *null;
        const char *s = (const char *) data;

        check_helpers(s, size);
        if (kiln_dockerfile_parse_full(s, size, "fuzz", &res, &err) < 0) {
                CHECK(err && err->line != 0 && !res);
                return 0;
        }
        check_result(res, s, size);
        if (!null)
                null = fopen("/dev/null", "w");
        if (null)
                (void) kiln_dockerfile_dump(res->root, null);
        return 0;
}
