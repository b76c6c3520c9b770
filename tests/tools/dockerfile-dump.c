/* SPDX-License-Identifier: Apache-2.0 */
/* dockerfile-dump [--lines] FILE: prints BuildKit's AST dump of FILE (or, with
 * --lines, "root START-END N" and one "START-END" per instruction). */

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/fs.h"
#include "base/macro.h"
#include "dockerfile/parser.h"

int main(int argc, char **argv)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        bool lines = argc == 3 && streq(argv[1], "--lines");
        const char *path = argv[argc - 1];
        _cleanup_free_ char *data = NULL;
        size_t size = 0, cap = 0, i;
        FILE *f;

        if (argc != 2 && !lines) {
                fprintf(stderr, "usage: dockerfile-dump [--lines] FILE\n");
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
        if (kiln_dockerfile_parse(data ? data : "", size, path, &root, &err) < 0) {
                fprintf(stderr, "%s\n", kiln_error_message(err));
                return 1;
        }
        if (lines) {
                printf("root %u-%u %zu\n", root->start_line, root->end_line, root->n_children);
                for (i = 0; i < root->n_children; i++)
                        printf("%u-%u\n", root->children[i]->start_line,
                               root->children[i]->end_line);
                return 0;
        }
        return kiln_dockerfile_dump(root, stdout) < 0 ? 1 : 0;
}
