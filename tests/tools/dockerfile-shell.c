/* SPDX-License-Identifier: Apache-2.0 */
/* dockerfile-shell [OPTIONS] word|words|matches < INPUT
 *
 * Expands INPUT (all of stdin, taken verbatim) as BuildKit's shell lexer:
 *   word     prints the expanded word (ProcessWord), nothing added
 *   words    prints each split word (ProcessWords) followed by a NUL byte
 *   matches  prints the word, a NUL, then "matched NAME" and
 *            "unmatched NAME" lines
 * Options:
 *   -e NAME=VALUE          a variable (repeatable; later ones win)
 *   --escape C             escape token ('\' by default, or '`')
 *   --raw-quotes --raw-escapes --skip-process-quotes --skip-unset-env
 * On failure prints "error: MESSAGE" to stderr and exits 1; usage errors
 * exit 2. */

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/macro.h"
#include "dockerfile/shell.h"

static int usage(void)
{
        fprintf(stderr, "usage: dockerfile-shell [-e NAME=VALUE]... [--escape C] [--raw-quotes] "
                        "[--raw-escapes] [--skip-process-quotes] [--skip-unset-env] "
                        "word|words|matches < INPUT\n");
        return 2;
}

static char *read_stdin(size_t *ret_len)
{
        size_t len = 0, cap = 4096;
        char *data = kiln_xmalloc(cap);

        for (;;) {
                size_t got;

                if (len + 1 >= cap) {
                        if (cap > KILN_LIMIT_SHELL_INPUT + 2) {
                                free(data);
                                return NULL;
                        }
                        cap *= 2;
                        data = kiln_xrealloc(data, cap);
                }
                got = fread(data + len, 1, cap - len - 1, stdin);
                if (got == 0)
                        break;
                len += got;
        }
        data[len] = '\0';
        *ret_len = len;
        return data;
}

int main(int argc, char **argv)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ const char **vars = NULL;
        _cleanup_free_ char *input = NULL;
        struct kiln_shell_lex lex = { .escape = '\\' };
        struct kiln_shell_result res;
        struct kiln_shell_env env = { 0 };
        const char *mode = NULL;
        size_t len, i;
        int r;

        vars = kiln_xcalloc((size_t) argc + 1, sizeof(char *));
        for (int a = 1; a < argc; a++) {
                const char *o = argv[a];

                if (streq(o, "-e") && a + 1 < argc)
                        vars[env.n_vars++] = argv[++a];
                else if (streq(o, "--escape") && a + 1 < argc && strlen(argv[a + 1]) == 1)
                        lex.escape = argv[++a][0];
                else if (streq(o, "--raw-quotes"))
                        lex.raw_quotes = true;
                else if (streq(o, "--raw-escapes"))
                        lex.raw_escapes = true;
                else if (streq(o, "--skip-process-quotes"))
                        lex.skip_process_quotes = true;
                else if (streq(o, "--skip-unset-env"))
                        lex.skip_unset_env = true;
                else if (!mode && (streq(o, "word") || streq(o, "words") || streq(o, "matches")))
                        mode = o;
                else
                        return usage();
        }
        if (!mode)
                return usage();
        env.vars = vars;

        input = read_stdin(&len);
        if (!input) {
                fprintf(stderr, "error: input longer than %u bytes\n", KILN_LIMIT_SHELL_INPUT);
                return 1;
        }
        if (strlen(input) != len) {
                fprintf(stderr, "error: input holds a NUL byte\n");
                return 1;
        }

        r = kiln_shell_expand(&lex, input, &env, &res, &err);
        if (r < 0) {
                fprintf(stderr, "error: %s\n", kiln_error_message(err));
                return 1;
        }
        if (streq(mode, "words")) {
                for (i = 0; i < res.n_words; i++)
                        fwrite(res.words[i], 1, strlen(res.words[i]) + 1, stdout);
        } else {
                fputs(res.word, stdout);
                if (streq(mode, "matches")) {
                        fputc('\0', stdout);
                        for (i = 0; i < res.n_matched; i++)
                                printf("matched %s\n", res.matched[i]);
                        for (i = 0; i < res.n_unmatched; i++)
                                printf("unmatched %s\n", res.unmatched[i]);
                }
        }
        kiln_shell_result_release(&res);
        return fflush(stdout) == 0 ? 0 : 1;
}
