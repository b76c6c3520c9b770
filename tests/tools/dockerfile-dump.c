/* SPDX-License-Identifier: Apache-2.0 */
/* dockerfile-dump [--lines|--full] FILE: prints BuildKit's AST dump of FILE.
 * --lines: "root START-END N" and one "START-END" per instruction instead.
 * --full: the dump, then "escape C", one line per directive, warning and
 * heredoc (strings quoted as Go's %q):
 *   directive NAME "VALUE" LINE
 *   warning LINE "MESSAGE"
 *   heredoc INSTRUCTION-INDEX START-END "NAME" fd=N expand=B chomp=B "CONTENT"
 *   comment INSTRUCTION-INDEX "TEXT" */

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/fs.h"
#include "base/macro.h"
#include "dockerfile/parser.h"

static void print_full(const struct kiln_dockerfile_result *res)
{
        const struct kiln_dockerfile_node *root = res->root;
        size_t i, k;

        (void) kiln_dockerfile_dump(root, stdout);
        printf("escape %c\n", res->escape);
        for (i = 0; i < res->n_directives; i++) {
                printf("directive %s ", res->directives[i].name);
                kiln_dockerfile_quote(res->directives[i].value, strlen(res->directives[i].value),
                                      stdout);
                printf(" %u\n", res->directives[i].line);
        }
        for (i = 0; i < res->n_warnings; i++) {
                printf("warning %u ", res->warnings[i].line);
                kiln_dockerfile_quote(res->warnings[i].message, strlen(res->warnings[i].message),
                                      stdout);
                fputc('\n', stdout);
        }
        for (i = 0; i < root->n_children; i++) {
                const struct kiln_dockerfile_node *c = root->children[i];

                for (k = 0; k < c->n_comments; k++) {
                        printf("comment %zu ", i + 1);
                        kiln_dockerfile_quote(c->comments[k].s, c->comments[k].len, stdout);
                        fputc('\n', stdout);
                }
                for (k = 0; k < c->n_heredocs; k++) {
                        const struct kiln_dockerfile_heredoc *h = &c->heredocs[k];

                        printf("heredoc %zu %u-%u ", i + 1, c->start_line, c->end_line);
                        kiln_dockerfile_quote(h->name.s, h->name.len, stdout);
                        printf(" fd=%llu expand=%d chomp=%d ", (unsigned long long) h->fd,
                               h->expand, h->chomp);
                        kiln_dockerfile_quote(h->content.s, h->content.len, stdout);
                        fputc('\n', stdout);
                }
        }
}

int main(int argc, char **argv)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *res = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        bool lines = argc == 3 && streq(argv[1], "--lines");
        bool full = argc == 3 && streq(argv[1], "--full");
        const char *path = argv[argc - 1];
        _cleanup_free_ char *data = NULL;
        size_t size = 0, cap = 0, i;
        FILE *f;

        if (argc != 2 && !lines && !full) {
                fprintf(stderr, "usage: dockerfile-dump [--lines|--full] FILE\n");
                return 2;
        }
        f = fopen(path, "rb");
        if (!f) {
                fprintf(stderr, "%s:0: cannot open\n", path);
                return 1;
        }
        for (;;) {
                size_t got;

                if (size == cap) {
                        cap = cap ? cap * 2 : 4096;
                        if (cap > KILN_LIMIT_DOCKERFILE_FILE + 1)
                                cap = KILN_LIMIT_DOCKERFILE_FILE + 1;
                        data = kiln_xrealloc(data, cap);
                }
                got = fread(data + size, 1, cap - size, f);
                size += got;
                if (got == 0 || size > KILN_LIMIT_DOCKERFILE_FILE)
                        break;
        }
        fclose(f);
        if (kiln_dockerfile_parse_full(data ? data : "", size, path, &res, &err) < 0) {
                fprintf(stderr, "%s\n", kiln_error_message(err));
                return 1;
        }
        if (lines) {
                printf("root %u-%u %zu\n", res->root->start_line, res->root->end_line,
                       res->root->n_children);
                for (i = 0; i < res->root->n_children; i++)
                        printf("%u-%u\n", res->root->children[i]->start_line,
                               res->root->children[i]->end_line);
                return 0;
        }
        if (full) {
                print_full(res);
                return ferror(stdout) ? 1 : 0;
        }
        return kiln_dockerfile_dump(res->root, stdout) < 0 ? 1 : 0;
}
