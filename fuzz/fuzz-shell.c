/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzzes shell-word expansion.
 *
 * Input: one byte of options (bit 0 raw quotes, 1 raw escapes, 2 skip
 * process quotes, 3 skip unset env, 4 escape '`'), then the word, then
 * "NAME=value" variables, the pieces separated by NUL bytes.
 *
 * Checks: no crash or leak; success iff no error; a failed call leaves the
 * result empty and says "failed to process"; results stay within the
 * limits; every split word is non-empty and counted; matched and unmatched
 * names are sorted, unique, disjoint and agree with the variables; the
 * convenience calls agree with kiln_shell_expand; text without anything
 * to expand comes back unchanged. */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/goquote.h"
#include "base/macro.h"
#include "dockerfile/shell.h"

#define FUZZ_MAX_INPUT (64u << 10)
#define FUZZ_MAX_VARS  64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_set(const char *const *vars, size_t n, const char *name)
{
        size_t nl = strlen(name);

        for (size_t i = 0; i < n; i++) {
                const char *eq = strchr(vars[i], '=');
                size_t kl = eq ? (size_t) (eq - vars[i]) : strlen(vars[i]);

                if (kl == nl && memcmp(vars[i], name, nl) == 0)
                        return true;
        }
        return false;
}

static void check_names(char **v, size_t n, const char *const *vars, size_t n_vars, bool set)
{
        size_t i;

        for (i = 0; v[i]; i++) {
                if (i > 0 && strcmp(v[i - 1], v[i]) >= 0)
                        abort(); /* not sorted or not unique */
                if (is_set(vars, n_vars, v[i]) != set)
                        abort();
        }
        if (i != n)
                abort();
}

/* Nothing in s can change under expansion: valid UTF-8, no byte order mark
 * first, none of $ ' " < and the escape token. */
static bool inert(const char *s, char escape)
{
        size_t len = strlen(s), i = 0;

        if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
                return false;
        while (i < len) {
                uint32_t c;
                size_t w = kiln_utf8_decode((const unsigned char *) s + i, len - i, &c);

                if (w == 0 || c == '$' || c == '\'' || c == '"' || c == '<' ||
                    c == (unsigned char) escape)
                        return false;
                i += w;
        }
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *copy = NULL, *word2 = NULL;
        _cleanup_(kiln_shell_strv_freep) char **words2 = NULL;
        const char *vars[FUZZ_MAX_VARS];
        struct kiln_shell_lex lex = { 0 };
        struct kiln_shell_env env = { .vars = vars };
        struct kiln_shell_result res;
        const char *word, *p, *end;
        size_t n2 = 0;
        int r;

        if (size < 1 || size > FUZZ_MAX_INPUT)
                return 0;
        lex.raw_quotes = data[0] & 1;
        lex.raw_escapes = data[0] & 2;
        lex.skip_process_quotes = data[0] & 4;
        lex.skip_unset_env = data[0] & 8;
        lex.escape = data[0] & 16 ? '`' : '\\';

        copy = kiln_xmalloc(size);
        memcpy(copy, data + 1, size - 1);
        copy[size - 1] = '\0';
        end = copy + size - 1;
        word = copy;
        for (p = word + strlen(word) + 1; p < end && env.n_vars < FUZZ_MAX_VARS; p += strlen(p) + 1)
                vars[env.n_vars++] = p;

        r = kiln_shell_expand(&lex, word, &env, &res, &err);
        if (r < 0) {
                if (!err || err->code != r || (r != -EINVAL && r != -E2BIG))
                        abort();
                if (!startswith(kiln_error_message(err), "failed to process"))
                        abort();
                if (res.word || res.words || res.matched || res.unmatched || res.n_words)
                        abort();
                /* the other entry points fail the same way */
                kiln_error_free(TAKE_PTR(err));
                if (kiln_shell_process_word(&lex, word, &env, &word2, &err) != r)
                        abort();
                return 0;
        }
        if (err || !res.word || !res.words || !res.matched || !res.unmatched)
                abort();
        if (strlen(res.word) > KILN_LIMIT_SHELL_OUTPUT)
                abort();
        for (size_t i = 0; i < res.n_words; i++)
                if (!res.words[i] || !res.words[i][0])
                        abort();
        if (res.words[res.n_words])
                abort();
        check_names(res.matched, res.n_matched, vars, env.n_vars, true);
        check_names(res.unmatched, res.n_unmatched, vars, env.n_vars, false);
        if (inert(word, lex.escape) && !streq(res.word, word))
                abort();

        /* the convenience calls give the same results */
        if (kiln_shell_process_word(&lex, word, &env, &word2, &err) < 0 || !streq(word2, res.word))
                abort();
        if (kiln_shell_process_words(&lex, word, &env, &words2, &n2, &err) < 0 || n2 != res.n_words)
                abort();
        for (size_t i = 0; i < n2; i++)
                if (!streq(words2[i], res.words[i]))
                        abort();
        kiln_shell_result_release(&res);
        return 0;
}
