/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/macro.h"
#include "dockerfile/shell.h"
#include "kiln-test.h"

#define ENV(...) ((const char *const[]){ __VA_ARGS__, NULL })

static size_t count(const char *const *v)
{
        size_t n = 0;

        while (v && v[n])
                n++;
        return n;
}

/* The names of v joined by spaces ("" for none). */
static char *join(char **v)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);

        (void) kiln_buf_puts(&b, "");
        for (size_t i = 0; v && v[i]; i++) {
                if (i)
                        (void) kiln_buf_putc(&b, ' ');
                (void) kiln_buf_puts(&b, v[i]);
        }
        return kiln_buf_steal(&b);
}

/* Expands word with the "NAME=value" list env; on success returns the word
 * (caller frees), on failure NULL with *msg set to the error text. */
static char *expand(const struct kiln_shell_lex *lex, const char *word, const char *const *env,
                    char **matched, char **unmatched, char **msg, int *code)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_shell_env e = { .vars = env, .n_vars = count(env) };
        struct kiln_shell_result res;
        char *w;
        int r;

        r = kiln_shell_expand(lex, word, &e, &res, &err);
        if (code)
                *code = r;
        if (r < 0) {
                if (msg)
                        *msg = kiln_xstrdup(kiln_error_message(err));
                /* a failed call leaves the result empty */
                if (res.word || res.words || res.matched || res.unmatched)
                        return kiln_xstrdup("(result not empty after failure)");
                return NULL;
        }
        if (err)
                return kiln_xstrdup("(error set on success)");
        if (matched)
                *matched = join(res.matched);
        if (unmatched)
                *unmatched = join(res.unmatched);
        if (count((const char *const *) res.words) != res.n_words ||
            count((const char *const *) res.matched) != res.n_matched ||
            count((const char *const *) res.unmatched) != res.n_unmatched) {
                kiln_shell_result_release(&res);
                return kiln_xstrdup("(counts do not match the arrays)");
        }
        w = TAKE_PTR(res.word);
        kiln_shell_result_release(&res);
        return w;
}

#define ASSERT_EXPANDS(lex, word, env, expected)                                           \
        do {                                                                               \
                _cleanup_free_ char *_msg = NULL;                                          \
                _cleanup_free_ char *_w = expand(lex, word, env, NULL, NULL, &_msg, NULL); \
                if (!_w)                                                                   \
                        KILN_TEST_FAIL("%s: unexpected error: %s", word, _msg);            \
                ASSERT_STREQ(_w, expected);                                                \
        } while (0)

#define ASSERT_FAILS(lex, word, env, message)                                              \
        do {                                                                               \
                _cleanup_free_ char *_msg = NULL;                                          \
                _cleanup_free_ char *_w = expand(lex, word, env, NULL, NULL, &_msg, NULL); \
                if (_w)                                                                    \
                        KILN_TEST_FAIL("%s: expected an error, got \"%s\"", word, _w);     \
                ASSERT_STREQ(_msg, message);                                               \
        } while (0)

/* Words of ProcessWords joined by '|'. */
static char *split(const struct kiln_shell_lex *lex, const char *word, const char *const *env)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_shell_env e = { .vars = env, .n_vars = count(env) };
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        char **words = NULL;
        size_t n = 0;

        if (kiln_shell_process_words(lex, word, &e, &words, &n, &err) < 0)
                return kiln_xasprintf("error: %s", kiln_error_message(err));
        (void) kiln_buf_puts(&b, "");
        for (size_t i = 0; i < n; i++)
                (void) kiln_buf_printf(&b, "%s%s", i ? "|" : "", words[i]);
        kiln_shell_strv_free(words);
        return kiln_buf_steal(&b);
}

#define ASSERT_SPLITS(lex, word, env, expected)                  \
        do {                                                     \
                _cleanup_free_ char *_s = split(lex, word, env); \
                ASSERT_STREQ(_s, expected);                      \
        } while (0)

/* BuildKit's TestProcessWithMatches cases, and more of the same kind. */
struct match_case {
        const char *input;
        const char *const *env;
        const char *expected; /* NULL: must fail */
        const char *matched;
        const char *unmatched;
};

TEST(process_with_matches)
{
        const struct match_case cases[] = {
                { "x", ENV("DUMMY=dummy"), "x", "", "" },
                { "x ${UNUSED}", ENV("DUMMY=dummy"), "x ", "", "UNUSED" },
                { "x ${FOO}", ENV("FOO=y"), "x y", "FOO", "" },
                { "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", ENV("FOO=xxx", "BAR="), "xxx  ccc", "BAR FOO",
                  "BAZ" },
                { "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", ENV("FOO=xxx", "BAR="), "xxx bbb ccc",
                  "BAR FOO", "BAZ" },
                { "${FOO:-}", ENV("FOO=xxx", "BAR="), "xxx", "FOO", "" },
                { "${FOO:-}", ENV("X=1"), "", "", "FOO" },
                { "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", ENV("FOO=xxx", "BAR="), "aaa bbb ", "BAR FOO",
                  "BAZ" },
                { "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", ENV("FOO=xxx", "BAR="), "aaa  ", "BAR FOO",
                  "BAZ" },
                { "${FOO?aaa}", ENV("FOO=xxx", "BAR="), "xxx", "FOO", "" },
                { "${BAR?bbb}", ENV("FOO=xxx", "BAR="), "", "BAR", "" },
                { "${BAZ?ccc}", ENV("FOO=xxx", "BAR="), NULL, NULL, NULL },
                { "${FOO:?aaa}", ENV("FOO=xxx", "BAR="), "xxx", "FOO", "" },
                { "${BAR:?bbb}", ENV("FOO=xxx", "BAR="), NULL, NULL, NULL },
                { "${BAZ:?ccc}", ENV("FOO=xxx", "BAR="), NULL, NULL, NULL },
                { "${BAZ:?}", ENV("FOO=xxx", "BAR="), NULL, NULL, NULL },
                { "${FOO=aaa}", ENV("FOO=xxx", "BAR="), NULL, NULL, NULL },
                { "${FOO=:aaa}", ENV("FOO=xxx", "BAR="), NULL, NULL, NULL },
                { "${FOO=}", ENV("X=1"), NULL, NULL, NULL },
                /* regexp metacharacters are literal; \} keeps the brace */
                { "${FOO#()[]{\\}^$.\\*\\?|\\\\}", ENV("FOO=()[]{}^$.*?|\\x"), "x", "FOO", "" },
                { "${FOO%%\\**}", ENV("FOO=xx**"), "xx", "FOO", "" },
                { "${FOO#*x*y}", ENV("FOO=xxyy"), "y", "FOO", "" },
                { "${FOO#*}", ENV("FOO=xxyy"), "xxyy", "FOO", "" },
                { "${FOO#$BAR}", ENV("FOO=xxyy", "BAR=x"), "xyy", "BAR FOO", "" },
                { "${FOO#$BAR}", ENV("FOO=xxyy", "BAR="), "xxyy", "BAR FOO", "" },
                { "${FOO#}", ENV("FOO=xxyy"), "xxyy", "FOO", "" },
                { "${FOO##*x}", ENV("FOO=xxyy"), "yy", "FOO", "" },
                { "${FOO##}", ENV("FOO=xxyy"), "xxyy", "FOO", "" },
                { "${FOO#?\\?}", ENV("FOO=???y"), "?y", "FOO", "" },
                { "${ABC:-.}${FOO%x}${ABC:-.}", ENV("FOO=xxyy"), ".xxyy.", "FOO", "ABC" },
                { "${FOO%%\\**\\*}", ENV("FOO=a***yy*"), "a", "FOO", "" },
                { "${FOO%}", ENV("FOO=xxyy"), "xxyy", "FOO", "" },
                { "${FOO%%$BAR}", ENV("FOO=xxyy", "BAR="), "xxyy", "BAR FOO", "" },
                { "${FOO:#}", ENV("X=1"), NULL, NULL, NULL },
                { "${FOO:##}", ENV("X=1"), NULL, NULL, NULL },
                { "${FOO:%}", ENV("X=1"), NULL, NULL, NULL },
                { "${FOO:%%}", ENV("X=1"), NULL, NULL, NULL },
                { "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", ENV("FOO=/foo*/*/*.txt", "NEEDLE=\\*/"),
                  "/foo.*/*.txt - /foo..*.txt", "FOO NEEDLE", "" },
                { "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", ENV("FOO=/tmp/tmp/bar.txt", "NEEDLE=/tmp"),
                  "/tmp/bar.txt - /bar.txt", "FOO NEEDLE", "" },
                { "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                  ENV("FOO=/a/foo/b/c.txt", "NEEDLE=/?/", "REPLACEMENT=/"),
                  "/foo/b/c.txt - /foo/c.txt", "FOO NEEDLE REPLACEMENT", "" },
                { "${FOO/$NEEDLE/$REPLACEMENT}",
                  ENV("FOO=http://google.de", "NEEDLE=http://", "REPLACEMENT=https://"),
                  "https://google.de", "FOO NEEDLE REPLACEMENT", "" },
                /* escaped separators: the escape stays in the replacement */
                { "${FOO//\\//\\/}", ENV("FOO=/tmp/foo.txt"), "\\/tmp\\/foo.txt", "FOO", "" },
                { "${FOO/$BAR/ww}", ENV("FOO=xxyy", "BAR="), "wwxxyy", "BAR FOO", "" },
                { "${FOO//ww}", ENV("FOO=xxyy"), NULL, NULL, NULL },
                { "${FOO//}", ENV("FOO=xxyy"), NULL, NULL, NULL },
                { "${FOO///}", ENV("FOO=xxyy"), "xxyy", "FOO", "" },
                { "${FOO///}", ENV("X=1"), "", "", "FOO" },
                /* BuildKit's release file name example */
                { "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}"
                  "}"
                  ".tar.gz",
                  ENV("VERSION=v1.2.3", "TARGETOS=linux", "TARGETARCH=arm", "TARGETVARIANT=v7"),
                  "something-v1.2.3.linux-arm-v7.tar.gz",
                  "TARGETARCH TARGETOS TARGETVARIANT VERSION", "" },
                { "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}"
                  "}"
                  ".tar.gz",
                  ENV("VERSION=v1.2.3", "TARGETOS=linux", "TARGETARCH=arm64", "TARGETVARIANT="),
                  "something-v1.2.3.linux-arm64.tar.gz",
                  "TARGETARCH TARGETOS TARGETVARIANT VERSION", "" },
                /* an unset variable is reported even when nested in an
                 * operand that is not used */
                { "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}"
                  "}"
                  ".tar.gz",
                  ENV("VERSION=v1.2.3", "TARGETOS=linux", "TARGETARCH=arm64"),
                  "something-v1.2.3.linux-arm64.tar.gz", "TARGETARCH TARGETOS VERSION",
                  "TARGETVARIANT" },
                /* a name used both set and in a word reports once */
                { "$A$A${A}${A:-x}", ENV("A=1"), "1111", "A", "" },
                { "$1 ${2} $@ $#", ENV("X=1"), "   ", "", "# 1 2 @" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const struct match_case *c = &cases[i];
                _cleanup_free_ char *w = NULL, *m = NULL, *u = NULL, *msg = NULL;

                w = expand(NULL, c->input, c->env, &m, &u, &msg, NULL);
                if (!c->expected) {
                        if (w)
                                KILN_TEST_FAIL("%s: expected an error, got \"%s\"", c->input, w);
                        continue;
                }
                if (!w)
                        KILN_TEST_FAIL("%s: unexpected error: %s", c->input, msg);
                if (!streq(w, c->expected) || !streq(m, c->matched) || !streq(u, c->unmatched))
                        KILN_TEST_FAIL(
                                "%s: got \"%s\" matched \"%s\" unmatched \"%s\", want \"%s\" "
                                "\"%s\" \"%s\"",
                                c->input, w, m, u, c->expected, c->matched, c->unmatched);
        }
        return 0;
}

TEST(mandatory_error_texts)
{
        const char *const *set = ENV("VAR=plain", "ARG=x");
        const char *const *empty = ENV("VAR=", "ARG=x");
        const char *const *unset = ENV("ARG=x");

        ASSERT_EXPANDS(NULL, "${VAR:?message here$ARG}", set, "plain");
        ASSERT_FAILS(NULL, "${VAR:?message here$ARG}", empty,
                     "failed to process \"${VAR:?message here$ARG}\": VAR: message herex");
        ASSERT_FAILS(NULL, "${VAR:?message here$ARG}", unset,
                     "failed to process \"${VAR:?message here$ARG}\": VAR: message herex");
        ASSERT_EXPANDS(NULL, "${VAR?message here$ARG}", set, "plain");
        ASSERT_EXPANDS(NULL, "${VAR?message here$ARG}", empty, "");
        ASSERT_FAILS(NULL, "${VAR?message here$ARG}", unset,
                     "failed to process \"${VAR?message here$ARG}\": VAR: message herex");
        ASSERT_FAILS(NULL, "${VAR?}", unset,
                     "failed to process \"${VAR?}\": VAR: is not allowed to be unset");
        ASSERT_FAILS(NULL, "${VAR:?}", empty,
                     "failed to process \"${VAR:?}\": VAR: is not allowed to be empty");
        ASSERT_FAILS(NULL, "${VAR:?}", unset,
                     "failed to process \"${VAR:?}\": VAR: is not allowed to be unset");
        return 0;
}

TEST(syntax_error_texts)
{
        const char *const *env = ENV("X=1");

        ASSERT_FAILS(NULL, "${", env, "failed to process \"${\": syntax error: missing '}'");
        ASSERT_FAILS(NULL, "${}", env, "failed to process \"${}\": syntax error: bad substitution");
        ASSERT_FAILS(NULL, "${:}", env,
                     "failed to process \"${:}\": syntax error: bad substitution");
        ASSERT_FAILS(NULL, "${{a}", env,
                     "failed to process \"${{a}\": syntax error: bad substitution");
        ASSERT_FAILS(NULL, "${X:-a", env,
                     "failed to process \"${X:-a\": syntax error: missing '}'");
        ASSERT_FAILS(NULL, "${X/a", env,
                     "failed to process \"${X/a\": syntax error: missing '/' in ${}");
        ASSERT_FAILS(NULL, "${X/a/b", env,
                     "failed to process \"${X/a/b\": syntax error: missing '}'");
        ASSERT_FAILS(NULL, "${X:=y}", env,
                     "failed to process \"${X:=y}\": unsupported modifier (:=) in substitution");
        ASSERT_FAILS(NULL, "${X:%y}", env,
                     "failed to process \"${X:%y}\": unsupported modifier (:%) in substitution");
        ASSERT_FAILS(NULL, "${X=y}", env,
                     "failed to process \"${X=y}\": unsupported modifier (=) in substitution");
        ASSERT_FAILS(NULL, "${.}", env,
                     "failed to process \"${.}\": unsupported modifier (.) in substitution");
        /* the end of input reads as U+FFFD, as Go's string(EOF) */
        ASSERT_FAILS(
                NULL, "${X", env,
                "failed to process \"${X\": unsupported modifier (\xef\xbf\xbd) in substitution");
        ASSERT_FAILS(NULL, "'abc", env,
                     "failed to process \"'abc\": unexpected end of statement while looking for "
                     "matching single-quote");
        ASSERT_FAILS(NULL, "\"abc", env,
                     "failed to process \"\\\"abc\": unexpected end of statement while looking "
                     "for matching double-quote");
        ASSERT_FAILS(NULL, "\"abc\\", env,
                     "failed to process \"\\\"abc\\\\\": unexpected end of statement while looking "
                     "for matching double-quote");
        ASSERT_FAILS(NULL, "${X#\\x}", env,
                     "failed to process \"${X#\\\\x}\": invalid pattern (\\x) in substitution: "
                     "invalid escape '\\x'");
        /* % reverses the pattern before converting it, as BuildKit */
        ASSERT_FAILS(NULL, "${X%ab\\c}", env,
                     "failed to process \"${X%ab\\\\c}\": invalid pattern (\\cba) in "
                     "substitution: invalid escape '\\c'");
        ASSERT_FAILS(NULL, "${X/\\q/r}", env,
                     "failed to process \"${X/\\\\q/r}\": invalid pattern (\\q) in substitution: "
                     "invalid escape '\\q'");
        /* the error quotes the input as Go's %q */
        ASSERT_FAILS(NULL, "\t${\n", env,
                     "failed to process \"\\t${\\n\": unsupported modifier (\n) in substitution");
        return 0;
}

TEST(names)
{
        const char *const *env = ENV("PWD=/home", "ü=umlaut", "_a1=x", "a=A", "=empty-name");

        ASSERT_EXPANDS(NULL, "he$PWD.", env, "he/home.");
        /* names are case-sensitive */
        ASSERT_EXPANDS(NULL, "he$pwd.", env, "he.");
        ASSERT_EXPANDS(NULL, "$ü-$_a1-${a}b-$ab", env, "umlaut-x-Ab-");
        /* a leading digit takes the whole run of digits; specials one char */
        ASSERT_EXPANDS(NULL, "$999aaa $001aaa $@@@ $$$", env, "aaa aaa @@ $");
        /* '$' before a non-name stays */
        ASSERT_EXPANDS(NULL, "$. $ $/ $", env, "$. $ $/ $");
        /* digits of other scripts count (Arabic-Indic one) */
        ASSERT_EXPANDS(NULL, "$\xd9\xa1x", env, "x");
        /* later entries win; an entry without '=' is set and empty */
        ASSERT_EXPANDS(NULL, "$car-${flag+set}", ENV("car=hat", "car=bike", "flag"), "bike-set");
        return 0;
}

TEST(quotes_and_escapes)
{
        struct kiln_shell_lex tick = { .escape = '`' };
        const char *const *env = ENV("X=x");

        ASSERT_EXPANDS(NULL, "a\\ b\\$X\\\\", env, "a b$X\\");
        ASSERT_EXPANDS(NULL, "'a\\b $X'", env, "a\\b $X");
        ASSERT_EXPANDS(NULL, "\"a\\b \\$X \\\" \\\\ $X\"", env, "a\\b $X \" \\ x");
        /* a trailing escape is dropped */
        ASSERT_EXPANDS(NULL, "ab\\", env, "ab");
        /* with '`' the backslash is an ordinary character */
        ASSERT_EXPANDS(&tick, "a`$X\\ `` c:\\dir", env, "a$X\\ ` c:\\dir");
        ASSERT_EXPANDS(&tick, "\"`\"`$X\\\"", env, "\"$X\\");
        ASSERT_EXPANDS(&tick, "'`x'", env, "`x");
        /* a leading byte order mark is skipped, as Go's text/scanner */
        ASSERT_EXPANDS(NULL, "\xef\xbb\xbf$X", env, "x");
        /* bytes that are not UTF-8 read as U+FFFD */
        ASSERT_EXPANDS(NULL, "a\xff", env, "a\xef\xbf\xbd");
        return 0;
}

TEST(options)
{
        struct kiln_shell_lex raw_quotes = { .raw_quotes = true };
        struct kiln_shell_lex raw_escapes = { .raw_escapes = true };
        struct kiln_shell_lex skip_quotes = { .skip_process_quotes = true };
        struct kiln_shell_lex skip_unset = { .skip_unset_env = true };
        const char *const *env = ENV("X=x");

        ASSERT_EXPANDS(&raw_quotes, "'a $X'\"b $X\"", env, "'a $X'\"b x\"");
        /* inside double quotes BuildKit writes a kept escape twice when it
         * escapes nothing */
        ASSERT_EXPANDS(&raw_escapes, "a\\ b\\\\\"\\$X\\q\"", env, "a\\ b\\\\\\$X\\\\q");
        ASSERT_EXPANDS(&skip_quotes, "'$X' \"$X\"", env, "'x' \"x\"");
        ASSERT_EXPANDS(&skip_unset, "$X $U ${U} ${U:-d} ${U#p} ${U//a/b} ${X:-d}", env,
                       "x $U ${U} ${U:-d} ${U#p} ${U/a/b} x");
        /* ${X#...} and ${X/...} keep escapes in their operands */
        ASSERT_EXPANDS(&skip_unset, "${U%\\*}", env, "${U%\\*}");
        return 0;
}

TEST(patterns)
{
        const char *const *env =
                ENV("F=foo.tar.gz", "P=/a/b/c", "N=line1\nline2", "K=한국어", "D=a$b", "E=");

        ASSERT_EXPANDS(NULL, "${F%.*}|${F%%.*}|${F#*.}|${F##*.}", env, "foo.tar|foo|tar.gz|gz");
        ASSERT_EXPANDS(NULL, "${P#/*/}|${P##*/}|${P%/*}", env, "b/c|c|/a/b");
        /* brackets are literal, not classes */
        ASSERT_EXPANDS(NULL, "${F#[f]}", env, "foo.tar.gz");
        ASSERT_EXPANDS(NULL, "${F#?o}|${F%g?}", env, "o.tar.gz|foo.tar.");
        /* wildcards do not match a newline (Go's regexp '.'), so ## stops
         * before it */
        ASSERT_EXPANDS(NULL, "${N#*1}|${N##*e}|${N#line1?}", env, "\nline2|1\nline2|line1\nline2");
        ASSERT_EXPANDS(NULL, "${N//?/.}", env, ".....\n.....");
        /* runes, not bytes */
        ASSERT_EXPANDS(NULL, "${K#?}|${K%?}|${K/국/-}", env, "국어|한국|한-어");
        /* first match only / all matches; an empty pattern matches between
         * runes */
        ASSERT_EXPANDS(NULL, "${F/o/0}|${F//o/0}|${F//a*/}", env, "f0o.tar.gz|f00.tar.gz|foo.t");
        ASSERT_EXPANDS(NULL, "${E//*/x}|${D///-}", env, "x|-a-$-b-");
        /* ReplaceAllString expands $0 and $$ in the replacement, as Go's
         * regexp Expand; the single replace does not */
        ASSERT_EXPANDS(NULL, "${F//o/'<$0>'}|${F/o/'<$0>'}", env, "f<o><o>.tar.gz|f<$0>o.tar.gz");
        ASSERT_EXPANDS(NULL, "${F//o/'$$'}|${F//o/'${0}$x$'}", env, "f$$.tar.gz|fo$o$.tar.gz");
        /* unset: the value is empty */
        ASSERT_EXPANDS(NULL, "[${U#a}${U%a}${U/a/b}]", env, "[]");
        return 0;
}

TEST(words)
{
        const char *const *env = ENV("space=abc  def", "leading=  ab c", "trailing=ab c   ", "E=");

        ASSERT_SPLITS(NULL, "hello${space}bye", env, "helloabc|defbye");
        ASSERT_SPLITS(NULL, "hello\"${space}\"bye", env, "helloabc  defbye");
        ASSERT_SPLITS(NULL, "hello${leading}def", env, "hello|ab|cdef");
        ASSERT_SPLITS(NULL, "hello${trailing}d", env, "helloab|c|d");
        ASSERT_SPLITS(NULL, "  a\tb\n c  ", env, "a|b|c");
        ASSERT_SPLITS(NULL, "", env, "");
        ASSERT_SPLITS(NULL, "   ", env, "");
        /* empty quotes make no word */
        ASSERT_SPLITS(NULL, "'' \"\" $E", env, "");
        ASSERT_SPLITS(NULL, "a\\ b 'c d'", env, "a b|c d");
        /* heredoc markers and the blanks after them stay in the word */
        ASSERT_SPLITS(NULL, "cat << EOF", env, "cat|<< EOF");
        /* BuildKit clears the word being collected when a ${X<op>word}
         * starts (its words buffer is shared between nesting levels) */
        ASSERT_SPLITS(NULL, "abc${U:-x}d ef", env, "xd|ef");
        ASSERT_SPLITS(NULL, "abc${space}", env, "abcabc|def");
        ASSERT_SPLITS(NULL, "hello\" there", env,
                      "error: failed to process \"hello\\\" there\": unexpected end of statement "
                      "while looking for matching double-quote");
        return 0;
}

TEST(env_sources)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *vars[] = { "A=from-vars", "B=b" };
        const char *pairs[] = { "A", "from-pairs", "C", "c=d" };
        struct kiln_shell_env env = { .vars = vars, .n_vars = 2, .pairs = pairs, .n_pairs = 2 };
        _cleanup_free_ char *w = NULL;

        ASSERT_OK(kiln_shell_process_word(NULL, "$A $B $C", &env, &w, &err));
        ASSERT_STREQ(w, "from-pairs b c=d");
        free(w);
        w = NULL;
        ASSERT_OK(kiln_shell_process_word(NULL, "[$A]", NULL, &w, &err));
        ASSERT_STREQ(w, "[]");
        return 0;
}

static bool lookup_upper(void *userdata, const char *name, const char **value)
{
        unsigned *calls = userdata;

        (*calls)++;
        if (streq(name, "HIT")) {
                *value = "hit";
                return true;
        }
        return false;
}

TEST(env_lookup_callback)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        unsigned calls = 0;
        const char *vars[] = { "HIT=ignored", "MISS=ignored" };
        struct kiln_shell_env env = {
                .vars = vars, .n_vars = 2, .lookup = lookup_upper, .userdata = &calls
        };
        struct kiln_shell_result res;

        ASSERT_OK(kiln_shell_expand(NULL, "$HIT-$MISS-$HIT", &env, &res, &err));
        ASSERT_STREQ(res.word, "hit--hit");
        ASSERT_EQ_INT(calls, 3);
        ASSERT_EQ_INT(res.n_matched, 1);
        ASSERT_STREQ(res.matched[0], "HIT");
        ASSERT_EQ_INT(res.n_unmatched, 1);
        ASSERT_STREQ(res.unmatched[0], "MISS");
        kiln_shell_result_release(&res);
        return 0;
}

TEST(limit_depth)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        _cleanup_free_ char *ok = NULL, *deep = NULL, *msg = NULL, *w = NULL;
        unsigned i;
        int code = 0;

        /* KILN_LIMIT_SHELL_DEPTH nested operands work */
        for (i = 0; i < KILN_LIMIT_SHELL_DEPTH; i++)
                (void) kiln_buf_puts(&b, "${a:-");
        (void) kiln_buf_puts(&b, "x");
        for (i = 0; i < KILN_LIMIT_SHELL_DEPTH; i++)
                (void) kiln_buf_puts(&b, "}");
        ok = kiln_buf_steal(&b);
        ASSERT_EXPANDS(NULL, ok, ENV("b=1"), "x");

        /* one more level fails cleanly; so does a huge nesting */
        for (i = 0; i < 100000; i++)
                (void) kiln_buf_puts(&b, "${a:-");
        deep = kiln_buf_steal(&b);
        w = expand(NULL, deep, ENV("b=1"), NULL, NULL, &msg, &code);
        ASSERT_TRUE(!w);
        ASSERT_EQ_INT(code, -E2BIG);
        ASSERT_TRUE(strstr(msg, "substitutions nested deeper than 128 levels"));
        free(msg);
        msg = NULL;
        w = expand(NULL, "${a:-${a:-${a:-x}}}", ENV("b=1"), NULL, NULL, &msg, &code);
        ASSERT_STREQ(w, "x");
        return 0;
}

TEST(limit_output)
{
        _cleanup_free_ char *big = kiln_xmalloc(KILN_LIMIT_SHELL_OUTPUT / 4 + 3);
        _cleanup_free_ char *w = NULL, *msg = NULL;
        const char *env[2];
        int code = 0;

        memcpy(big, "A=", 2);
        memset(big + 2, 'x', KILN_LIMIT_SHELL_OUTPUT / 4);
        big[KILN_LIMIT_SHELL_OUTPUT / 4 + 2] = '\0';
        env[0] = big;
        env[1] = NULL;
        w = expand(NULL, "$A$A$A$A", env, NULL, NULL, &msg, &code);
        ASSERT_TRUE(w);
        ASSERT_EQ_INT(strlen(w), KILN_LIMIT_SHELL_OUTPUT);
        free(w);
        w = expand(NULL, "$A$A$A$A.", env, NULL, NULL, &msg, &code);
        ASSERT_TRUE(!w);
        ASSERT_EQ_INT(code, -E2BIG);
        ASSERT_TRUE(strstr(msg, "expanded text longer than"));
        return 0;
}

TEST(limit_match_work)
{
        _cleanup_free_ char *val = kiln_xmalloc(200003), *pat = kiln_xmalloc(4000);
        _cleanup_free_ char *w = NULL, *msg = NULL, *word = NULL;
        const char *env[2] = { NULL, NULL };
        int code = 0;

        /* a long value and a long pattern with many stars */
        memcpy(val, "V=", 2);
        memset(val + 2, 'a', 200000);
        val[200002] = '\0';
        env[0] = val;
        for (size_t i = 0; i < 3998; i += 2)
                memcpy(pat + i, "*a", 2);
        pat[3998] = '\0';
        word = kiln_xasprintf("${V//%s/x}", pat);
        w = expand(NULL, word, env, NULL, NULL, &msg, &code);
        ASSERT_TRUE(!w);
        ASSERT_EQ_INT(code, -E2BIG);
        ASSERT_TRUE(strstr(msg, "pattern matching in substitution exceeds"));
        return 0;
}

TEST(result_api)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *vars[] = { "A=1 2" };
        struct kiln_shell_env env = { .vars = vars, .n_vars = 1 };
        struct kiln_shell_result res;
        _cleanup_(kiln_shell_strv_freep) char **words = NULL;
        size_t n = 99;

        ASSERT_OK(kiln_shell_expand(NULL, "x $A $B", &env, &res, &err));
        ASSERT_STREQ(res.word, "x 1 2 ");
        ASSERT_EQ_INT(res.n_words, 3);
        ASSERT_STREQ(res.words[2], "2");
        ASSERT_TRUE(res.words[3] == NULL);
        kiln_shell_result_release(&res);
        ASSERT_TRUE(res.word == NULL && res.words == NULL);
        kiln_shell_result_release(&res);

        ASSERT_OK(kiln_shell_process_words(NULL, "", &env, &words, &n, &err));
        ASSERT_EQ_INT(n, 0);
        ASSERT_TRUE(words && words[0] == NULL);

        ASSERT_EQ_INT(kiln_shell_expand(NULL, "${", &env, &res, &err), -EINVAL);
        ASSERT_TRUE(err);
        ASSERT_TRUE(res.word == NULL && res.words == NULL && res.matched == NULL);
        return 0;
}

TEST(nul_bytes_with_lengths)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct kiln_shell_lex keep = { .raw_quotes = true, .skip_unset_env = true };
        static const char word[] = "a\0b '\0' ${x:-c\0d}z";
        struct kiln_shell_result res;

        /* a NUL is an ordinary character: it stays in words, also in an
         * operand kept as written for an unset variable */
        ASSERT_OK(kiln_shell_expand_n(&keep, word, sizeof(word) - 1, NULL, &res, &err));
        ASSERT_EQ_INT(res.word_len, 18);
        ASSERT_TRUE(memcmp(res.word, word, sizeof(word)) == 0);
        ASSERT_EQ_INT(res.n_words, 3);
        ASSERT_EQ_INT(res.word_lens[0], 3);
        ASSERT_TRUE(memcmp(res.words[0], "a\0b", 4) == 0);
        ASSERT_EQ_INT(res.word_lens[1], 3);
        ASSERT_TRUE(memcmp(res.words[1], "'\0'", 4) == 0);
        /* the words buffer restarts inside ${...}, as in BuildKit */
        ASSERT_EQ_INT(res.word_lens[2], 10);
        ASSERT_TRUE(memcmp(res.words[2], "${x:-c\0d}z", 11) == 0);
        kiln_shell_result_release(&res);
        ASSERT_TRUE(res.word_lens == NULL);

        /* the lengths are there for NUL-terminated input too, also when
         * nothing is left */
        ASSERT_OK(kiln_shell_expand(NULL, " \t", NULL, &res, &err));
        ASSERT_EQ_INT(res.word_len, 2);
        ASSERT_TRUE(res.n_words == 0 && res.word_lens != NULL);
        kiln_shell_result_release(&res);

        /* the error quotes the whole input */
        ASSERT_EQ_INT(kiln_shell_expand_n(NULL, "'a\0", 3, NULL, &res, &err), -EINVAL);
        ASSERT_STREQ(err->message, "failed to process \"'a\\x00\": unexpected end of statement "
                                   "while looking for matching single-quote");
        return 0;
}
