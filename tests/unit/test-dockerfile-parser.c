/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dockerfile/parser.h"
#include "kiln-test.h"

static char *dump(const char *src)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char *out = NULL;
        size_t len = 0;
        FILE *f;

        if (kiln_dockerfile_parse(src, strlen(src), "t", &root, &err) < 0)
                return NULL;
        f = open_memstream(&out, &len);
        kiln_dockerfile_dump(root, f);
        fclose(f);
        return out;
}

static void q(const struct kiln_dockerfile_str *s, FILE *f)
{
        kiln_dockerfile_quote(s->s, s->len, f);
}

/* One line per heredoc: "INSTR-INDEX START-END NAME fd=N e=B c=B CONTENT",
 * or "error LINE: MESSAGE". */
static char *heredocs_n(const char *src, size_t n)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *res = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char *out = NULL;
        size_t len = 0, i, k;
        FILE *f = open_memstream(&out, &len);

        if (kiln_dockerfile_parse_full(src, n, "t", &res, &err) < 0) {
                fprintf(f, "error %u: %s", err->line, err->message);
                fclose(f);
                return out;
        }
        for (i = 0; i < res->root->n_children; i++) {
                const struct kiln_dockerfile_node *c = res->root->children[i];

                for (k = 0; k < c->n_heredocs; k++) {
                        const struct kiln_dockerfile_heredoc *h = &c->heredocs[k];

                        fprintf(f, "%zu %u-%u ", i + 1, c->start_line, c->end_line);
                        q(&h->name, f);
                        fprintf(f, " fd=%llu e=%d c=%d ", (unsigned long long) h->fd, h->expand,
                                h->chomp);
                        q(&h->content, f);
                        fputc('\n', f);
                }
        }
        fclose(f);
        return out;
}

static char *heredocs(const char *src)
{
        return heredocs_n(src, strlen(src));
}

TEST(basic_instructions)
{
        _cleanup_free_ char *a = dump("FROM a AS b\nRUN [\"x\", \"y\"]\nCMD ['a']\n");
        _cleanup_free_ char *b = dump("ENV k v w\nLABEL a=\"x y\" b=c\nonbuild copy . /\n");
        _cleanup_free_ char *c = dump("# escape=`\nCOPY --from=x --chown=\"a b\" s \\ `\n  d\n");

        ASSERT_STREQ(a, "(from \"a\" \"AS\" \"b\")\n(run \"x\" \"y\")\n(cmd \"['a']\")\n");
        ASSERT_STREQ(b, "(env \"k\" \"v w\" \"\")\n(label \"a\" \"\\\"x y\\\"\" \"=\" \"b\" \"c\" "
                        "\"=\")\n(onbuild (copy \".\" \"/\"))\n");
        ASSERT_STREQ(c, "(copy [\"--from=x\" \"--chown=a b\"] \"s\" \"\\\\\" \"d\")\n");
        return 0;
}

TEST(errors_carry_line)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *src = "FROM a\n\nENV PATH\n";
        _cleanup_free_ char *multi = heredocs("FROM a\nENV \\\n  A\n");

        ASSERT_EQ_INT(kiln_dockerfile_parse(src, strlen(src), "f", &root, &err), -EINVAL);
        ASSERT_TRUE(root == NULL);
        ASSERT_EQ_INT(err->line, 3);
        ASSERT_STREQ(err->message, "f:3: ENV must have two arguments");
        /* an instruction's error names its first line */
        ASSERT_STREQ(multi, "error 2: t:2: ENV must have two arguments");
        return 0;
}

TEST(empty_and_quote)
{
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *q = NULL;
        size_t len = 0;
        FILE *f;

        ASSERT_EQ_INT(kiln_dockerfile_parse("# c\n\n", 5, NULL, &root, &err), -EINVAL);
        ASSERT_STREQ(err->message, "<input>:2: file with no instructions");
        f = open_memstream(&q, &len);
        kiln_dockerfile_quote("a\x01\xff\t\xe2\x99\xa5", 7, f);
        fclose(f);
        ASSERT_STREQ(q, "\"a\\x01\\xff\\t\xe2\x99\xa5\"");
        return 0;
}

TEST(heredoc_basic_forms)
{
        _cleanup_free_ char *a = heredocs("FROM x\nRUN <<END\n  one\n\ttwo\nEND\nRUN true\n");
        _cleanup_free_ char *b = heredocs("RUN <<END\nEND\n");
        _cleanup_free_ char *c = heredocs("RUN 7<<DOC\nx\nDOC\n");
        _cleanup_free_ char *d = heredocs("RUN --mount=type=tmpfs,target=/t <<M sh -e\nls\nM\n");
        _cleanup_free_ char *e = heredocs("RUN <<SCRIPT\n# not a comment\nFROM no\nSCRIPT\n");
        _cleanup_free_ char *f = heredocs("RUN <<  SPACED  > out\nSPACED\n");
        _cleanup_free_ char *g = heredocs("RUN <<X.y\nX.y\n");

        ASSERT_STREQ(a, "2 2-5 \"END\" fd=0 e=1 c=0 \"  one\\n\\ttwo\\n\"\n");
        ASSERT_STREQ(b, "1 1-2 \"END\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_STREQ(c, "1 1-3 \"DOC\" fd=7 e=1 c=0 \"x\\n\"\n");
        ASSERT_STREQ(d, "1 1-3 \"M\" fd=0 e=1 c=0 \"ls\\n\"\n");
        ASSERT_STREQ(e, "1 1-4 \"SCRIPT\" fd=0 e=1 c=0 \"# not a comment\\nFROM no\\n\"\n");
        ASSERT_STREQ(f, "1 1-2 \"SPACED\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_STREQ(g, "1 1-2 \"X.y\" fd=0 e=1 c=0 \"\"\n");
        return 0;
}

TEST(heredoc_chomp)
{
        /* "<<-": tabs before the terminator are ignored; the content keeps
         * them until the instruction layer chomps */
        _cleanup_free_ char *a = heredocs("RUN <<-T\n\t\tx\n\ty\n\t\tT\n");
        _cleanup_free_ char *b = heredocs("RUN <<T\n\tT\nT\n");
        _cleanup_free_ char *c = heredocs("RUN <<- T\n\tT\n");
        struct kiln_dockerfile_str s = kiln_dockerfile_heredoc_chomp("\t\ta\n b\n\t\n\tc", 11);

        ASSERT_STREQ(a, "1 1-4 \"T\" fd=0 e=1 c=1 \"\\t\\tx\\n\\ty\\n\"\n");
        ASSERT_STREQ(b, "1 1-3 \"T\" fd=0 e=1 c=0 \"\\tT\\n\"\n");
        ASSERT_STREQ(c, "");
        ASSERT_EQ_INT(s.len, 7);
        ASSERT_TRUE(memcmp(s.s, "a\n b\n\nc", 7) == 0);
        free(s.s);
        return 0;
}

TEST(heredoc_quoting_and_expand)
{
        _cleanup_free_ char *a = heredocs("RUN <<'LIT'\n$HOME\nLIT\n");
        _cleanup_free_ char *b = heredocs("RUN <<\"LIT\"\n$HOME\nLIT\n");
        _cleanup_free_ char *c = heredocs("RUN <<L\"I\"T\nx\nLIT\n");
        _cleanup_free_ char *d = heredocs("RUN <<it\\'s\nx\nit's\n");
        _cleanup_free_ char *e = heredocs("RUN <<'i't\\'s\nx\nit's\n");
        _cleanup_free_ char *f = heredocs("RUN <<'two words'\nx\ntwo words\n");
        _cleanup_free_ char *g = heredocs("RUN <<$VAR\nx\n$VAR\n");
        _cleanup_free_ char *h = heredocs("RUN <<-'Q'\n\t$x\n\tQ\n");

        ASSERT_STREQ(a, "1 1-3 \"LIT\" fd=0 e=0 c=0 \"$HOME\\n\"\n");
        ASSERT_STREQ(b, "1 1-3 \"LIT\" fd=0 e=0 c=0 \"$HOME\\n\"\n");
        ASSERT_STREQ(c, "1 1-3 \"LIT\" fd=0 e=0 c=0 \"x\\n\"\n");
        ASSERT_STREQ(d, "1 1-3 \"it's\" fd=0 e=1 c=0 \"x\\n\"\n");
        ASSERT_STREQ(e, "1 1-3 \"it's\" fd=0 e=0 c=0 \"x\\n\"\n");
        ASSERT_STREQ(f, "1 1-3 \"two words\" fd=0 e=0 c=0 \"x\\n\"\n");
        ASSERT_STREQ(g, "1 1-3 \"$VAR\" fd=0 e=1 c=0 \"x\\n\"\n");
        ASSERT_STREQ(h, "1 1-3 \"Q\" fd=0 e=0 c=1 \"\\t$x\\n\"\n");
        return 0;
}

TEST(heredoc_several)
{
        /* bodies follow in the order of the "<<" words; a terminator of a
         * later heredoc is content of an earlier one */
        _cleanup_free_ char *a = heredocs("COPY <<A <<B /dst/\nB\nA\nA\nB\nRUN x\n");
        _cleanup_free_ char *b = heredocs("ADD <<one <<-two /d\n1\none\n\t2\n\ttwo\n");

        ASSERT_STREQ(a, "1 1-5 \"A\" fd=0 e=1 c=0 \"B\\n\"\n"
                        "1 1-5 \"B\" fd=0 e=1 c=0 \"A\\n\"\n");
        ASSERT_STREQ(b, "1 1-5 \"one\" fd=0 e=1 c=0 \"1\\n\"\n"
                        "1 1-5 \"two\" fd=0 e=1 c=1 \"\\t2\\n\"\n");
        return 0;
}

TEST(heredoc_only_where_allowed)
{
        _cleanup_free_ char *a = heredocs("USER <<U\nU\n");
        _cleanup_free_ char *b = heredocs("RUN [\"<<J\"]\nRUN [\"cat\", \"<<'J'\"]\n");
        _cleanup_free_ char *c = heredocs("RUN '<<S' \"<<D\" \\<<E\n");
        _cleanup_free_ char *d = heredocs("RUN <<X sh\nX\nENTRYPOINT <<Y\nY\n");
        _cleanup_free_ char *e = heredocs("ONBUILD RUN <<O\nhi\nO\n");
        _cleanup_free_ char *f = heredocs("ONBUILD ONBUILD RUN <<O\n");
        _cleanup_free_ char *g = heredocs("RUN a<<B\nCOPY x<<C /\n");
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *src = "ONBUILD RUN <<O\nhi\nO\n";

        ASSERT_STREQ(a, "");
        ASSERT_STREQ(b, "");
        ASSERT_STREQ(c, "");
        /* ENTRYPOINT has none: its "Y" line becomes an instruction */
        ASSERT_STREQ(d, "1 1-2 \"X\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_STREQ(e, "1 1-3 \"O\" fd=0 e=1 c=0 \"hi\\n\"\n");
        ASSERT_STREQ(f, "");
        ASSERT_STREQ(g, "");
        /* attached to the ONBUILD node, not the nested RUN */
        ASSERT_OK(kiln_dockerfile_parse(src, strlen(src), "t", &root, &err));
        ASSERT_EQ_INT(root->n_children, 1);
        ASSERT_EQ_INT(root->children[0]->n_heredocs, 1);
        ASSERT_EQ_INT(root->children[0]->next->children[0]->n_heredocs, 0);
        return 0;
}

TEST(heredoc_dump_unchanged)
{
        _cleanup_free_ char *a =
                dump("COPY <<EOF /x\nbody \"q\"\nEOF\nRUN <<-'A' bash\n\techo\nA\n");

        ASSERT_STREQ(a, "(copy \"<<EOF\" \"/x\")\n(run \"<<-'A' bash\")\n");
        return 0;
}

TEST(heredoc_crlf_and_lines)
{
        _cleanup_free_ char *a = heredocs("FROM x\r\nRUN <<E\r\na\r\nE\r\nRUN b\r\n");
        _cleanup_free_ char *b = heredocs("RUN <<E \\\n  cat\nbody\nE\nRUN <<F\nF");
        _cleanup_(kiln_dockerfile_node_freep) struct kiln_dockerfile_node *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *src = "FROM x\nRUN <<E\na\nE\n\nRUN b\n";

        /* the terminator line loses its line ending, the body keeps it */
        ASSERT_STREQ(a, "2 2-4 \"E\" fd=0 e=1 c=0 \"a\\r\\n\"\n");
        /* continuation first, body after; last line without newline */
        ASSERT_STREQ(b, "1 1-4 \"E\" fd=0 e=1 c=0 \"body\\n\"\n"
                        "2 5-6 \"F\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_OK(kiln_dockerfile_parse(src, strlen(src), "t", &root, &err));
        ASSERT_EQ_INT(root->start_line, 1);
        ASSERT_EQ_INT(root->end_line, 6);
        ASSERT_EQ_INT(root->children[1]->start_line, 2);
        ASSERT_EQ_INT(root->children[1]->end_line, 4);
        ASSERT_EQ_INT(root->children[2]->start_line, 6);
        return 0;
}

TEST(heredoc_errors)
{
        _cleanup_free_ char *a = heredocs("FROM x\nRUN <<E\nbody\n");
        _cleanup_free_ char *b = heredocs("FROM x\n\nCOPY <<A <<B /\nA\nb\n");
        _cleanup_free_ char *c = heredocs("FROM x\nRUN <<-E\n  E\n");
        /* a quote the line does not close: no heredoc at all */
        _cleanup_free_ char *d = heredocs("RUN <<'E\nE\n");

        ASSERT_STREQ(a, "error 2: t:2: unterminated heredoc");
        ASSERT_STREQ(b, "error 3: t:3: unterminated heredoc");
        ASSERT_STREQ(c, "error 2: t:2: unterminated heredoc");
        ASSERT_STREQ(d, "");
        return 0;
}

TEST(heredoc_parse_word)
{
        static const char *const valid[] = { "<<EOF",     "<<'EOF'",  "<<\"EOF\"",
                                             "<<-EOF",    "<<-'EOF'", "<<-\"EOF\"",
                                             "<<E\"O\"F", "<< EOF",   "<<- EOF" };
        static const char *const invalid[] = { "<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\"" };
        static const char *const not [] = { "",     "EOF",    "<<",       "<<-",
                                            "<EOF", "<<<EOF", "<<EOF sh", "x<<EOF" };
        struct kiln_dockerfile_heredoc h;
        size_t i;

        for (i = 0; i < ELEMENTSOF(valid); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_EQ_INT(kiln_dockerfile_heredoc_parse(valid[i], strlen(valid[i]), &h, &err),
                              1);
                ASSERT_STREQ(h.name.s, "EOF");
                ASSERT_EQ_INT(h.chomp, valid[i][2] == '-');
                ASSERT_EQ_INT(h.expand, !strchr(valid[i], '\'') && !strchr(valid[i], '"'));
                kiln_dockerfile_heredoc_release(&h);
        }
        for (i = 0; i < ELEMENTSOF(invalid); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_EQ_INT(
                        kiln_dockerfile_heredoc_parse(invalid[i], strlen(invalid[i]), &h, &err),
                        -EINVAL);
                ASSERT_TRUE(strstr(err->message, "failed to process ") == err->message);
        }
        for (i = 0; i < ELEMENTSOF(not ); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_EQ_INT(kiln_dockerfile_heredoc_parse(not [i], strlen(not [i]), &h, &err), 0);
                ASSERT_TRUE(h.name.s == NULL);
        }
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_EQ_INT(kiln_dockerfile_heredoc_parse("<<'EOF", 6, &h, &err), -EINVAL);
                ASSERT_STREQ(err->message, "failed to process \"'EOF\": unexpected end of "
                                           "statement while looking for matching single-quote");
                ASSERT_EQ_INT(kiln_dockerfile_heredoc_parse("12<<-x", 6, &h, NULL), 1);
                ASSERT_EQ_INT(h.fd, 12);
                kiln_dockerfile_heredoc_release(&h);
                ASSERT_EQ_INT(
                        kiln_dockerfile_heredoc_parse("99999999999999999999<<x", 23, &h, NULL), 1);
                ASSERT_TRUE(h.fd == UINT64_MAX);
                kiln_dockerfile_heredoc_release(&h);
        }
        return 0;
}

TEST(heredoc_names_from_lines)
{
        _cleanup_free_ char *a = heredocs("RUN <<- EOF\nEOF\n");
        _cleanup_free_ char *b = heredocs("RUN << -EOF\n-EOF\n");
        _cleanup_free_ char *c = heredocs("RUN 4<<EOF <<EOF2\nEOF\nEOF2\n");
        /* a "${...}" with an operator resets the word being built (as
         * BuildKit's lexer does), so no heredoc word remains */
        _cleanup_free_ char *d = heredocs("RUN <<EOF${x:-y}\n");
        _cleanup_free_ char *e = heredocs("RUN <<EOF$x\nEOF$x\n");

        /* in a line, "<<-" followed by a blank is a word of its own */
        ASSERT_STREQ(a, "");
        ASSERT_STREQ(b, "1 1-2 \"-EOF\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_STREQ(c, "1 1-3 \"EOF\" fd=4 e=1 c=0 \"\"\n1 1-3 \"EOF2\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_STREQ(d, "");
        ASSERT_STREQ(e, "1 1-2 \"EOF$x\" fd=0 e=1 c=0 \"\"\n");
        return 0;
}

static struct kiln_dockerfile_result *parse_ok(const char *src)
{
        struct kiln_dockerfile_result *res = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (kiln_dockerfile_parse_full(src, strlen(src), "t", &res, &err) < 0) {
                printf("# %s\n", kiln_error_message(err));
                return NULL;
        }
        return res;
}

static char *parse_error(const char *src, unsigned *line)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *res = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        if (kiln_dockerfile_parse_full(src, strlen(src), "t", &res, &err) >= 0)
                return NULL;
        *line = err->line;
        return kiln_xstrdup(err->message);
}

TEST(directives)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *a =
                parse_ok("# SYNTAX = docker/dockerfile:1 \n#Escape=`\n# check=skip=all\nFROM x\n");
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *b =
                parse_ok("# comment\n# escape=`\nFROM x\n");
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *c =
                parse_ok("\n# escape=`\nFROM x\n");
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *d =
                parse_ok("# unknown=1\n# syntax=x\nFROM x\n");
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *e =
                parse_ok("\xef\xbb\xbf  # syntax=a b\r\nFROM x\n# escape=`\nRUN a \\\n b\n");

        ASSERT_TRUE(a && b && c && d && e);
        ASSERT_EQ_INT(a->n_directives, 3);
        ASSERT_STREQ(a->directives[0].name, "syntax");
        ASSERT_STREQ(a->directives[0].value, "docker/dockerfile:1");
        ASSERT_EQ_INT(a->directives[0].line, 1);
        ASSERT_STREQ(a->directives[1].name, "escape");
        ASSERT_STREQ(a->directives[1].value, "`");
        ASSERT_STREQ(a->directives[2].name, "check");
        ASSERT_STREQ(a->directives[2].value, "skip=all");
        ASSERT_EQ_INT(a->directives[2].line, 3);
        ASSERT_EQ_INT(a->escape, '`');
        ASSERT_EQ_INT(a->root->children[0]->n_comments, 0);
        /* a comment, an empty line or an unknown key ends the directives */
        ASSERT_EQ_INT(b->n_directives, 0);
        ASSERT_EQ_INT(b->escape, '\\');
        ASSERT_EQ_INT(c->n_directives, 0);
        ASSERT_EQ_INT(d->n_directives, 0);
        /* BOM, leading space and CRLF are fine; after an instruction a
         * directive is a comment */
        ASSERT_EQ_INT(e->n_directives, 1);
        ASSERT_STREQ(e->directives[0].value, "a b");
        ASSERT_EQ_INT(e->escape, '\\');
        ASSERT_EQ_INT(e->root->n_children, 2);
        ASSERT_STREQ(e->root->children[1]->original.s, "RUN a  b");
        return 0;
}

TEST(directive_errors)
{
        unsigned line = 0;
        _cleanup_free_ char *a = parse_error("# escape=`\n# ESCAPE=\\\nFROM x\n", &line);
        unsigned la = line;
        _cleanup_free_ char *b = parse_error("#escape=x\nFROM x\n", &line);
        unsigned lb = line;
        /* the value regexp leaves one blank when there is nothing else */
        _cleanup_free_ char *c = parse_error("# escape=  \nFROM x\n", &line);
        _cleanup_free_ char *d = parse_error("# syntax=a\n# check=x\n#syntax=b\nFROM x\n", &line);

        ASSERT_STREQ(a, "t:2: only one escape parser directive can be used");
        ASSERT_EQ_INT(la, 2);
        ASSERT_STREQ(b, "t:1: invalid escape token 'x' does not match ` or \\");
        ASSERT_EQ_INT(lb, 1);
        ASSERT_STREQ(c, "t:1: invalid escape token ' ' does not match ` or \\");
        ASSERT_STREQ(d, "t:3: only one syntax parser directive can be used");
        ASSERT_EQ_INT(line, 3);
        return 0;
}

TEST(directive_line_and_detect)
{
        _cleanup_free_ char *n = NULL, *v = NULL, *ref = NULL, *cmd = NULL;
        unsigned line = 0;
        const char *j = "{\"syntax\": \"img:1 x\", \"a\": [1]}";
        const char *sh = "#!/bin/sh\n# syntax = dockerfile:exp // opts\nFROM busybox\n";

        ASSERT_EQ_INT(
                kiln_dockerfile_directive_parse_line("check=skip=all;error=true", 25, "", &n, &v),
                1);
        ASSERT_STREQ(n, "check");
        ASSERT_STREQ(v, "skip=all;error=true");
        free(n);
        free(v);
        ASSERT_EQ_INT(kiln_dockerfile_directive_parse_line("# key = v", 9, "#", &n, &v), 0);
        ASSERT_TRUE(n == NULL && v == NULL);

        ASSERT_EQ_INT(
                kiln_dockerfile_directive_detect(sh, strlen(sh), "syntax", true, &ref, &cmd, &line),
                1);
        ASSERT_STREQ(ref, "dockerfile:exp");
        ASSERT_STREQ(cmd, "dockerfile:exp // opts");
        ASSERT_EQ_INT(line, 2);
        free(ref);
        free(cmd);
        ASSERT_EQ_INT(kiln_dockerfile_directive_detect("#!/bin/sh\n\n# syntax=x\n", 21, "syntax",
                                                       true, &ref, &cmd, &line),
                      0);
        ASSERT_TRUE(ref == NULL && cmd == NULL);
        ASSERT_EQ_INT(kiln_dockerfile_directive_detect("//syntax=foo\n//key=v", 21, "syntax", true,
                                                       &ref, NULL, NULL),
                      1);
        ASSERT_STREQ(ref, "foo");
        free(ref);
        /* "//" and JSON only for the syntax detection */
        ASSERT_EQ_INT(kiln_dockerfile_directive_detect("//check=skip=all", 16, "check", false, &ref,
                                                       NULL, NULL),
                      0);
        ASSERT_EQ_INT(
                kiln_dockerfile_directive_detect(j, strlen(j), "syntax", true, &ref, &cmd, &line),
                1);
        ASSERT_STREQ(ref, "img:1 x");
        ASSERT_STREQ(cmd, "img:1 x");
        ASSERT_EQ_INT(line, 0);
        free(ref);
        free(cmd);
        ASSERT_EQ_INT(kiln_dockerfile_directive_detect("{\"syntax\": \"a\"}\n# syntax=b", 27,
                                                       "syntax", true, &ref, NULL, NULL),
                      0);
        ASSERT_EQ_INT(kiln_dockerfile_directive_detect("\xef\xbb\xbf# syntax = f\r\n", 19, "syntax",
                                                       false, &ref, &cmd, &line),
                      1);
        ASSERT_STREQ(ref, "f");
        ASSERT_EQ_INT(line, 1);
        return 0;
}

TEST(warnings_empty_continuation)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *r = parse_ok(
                "FROM a\nRUN ok \\\n  go\nRUN x \\\n\n  y \\\n \n  z\nRUN c \\\n# note\n  d\n"
                "RUN e \\\n  \t\r\n  f\n");

        ASSERT_TRUE(r);
        ASSERT_EQ_INT(r->n_warnings, 2);
        ASSERT_STREQ(r->warnings[0].message, "Empty continuation line found in: RUN x   y   z");
        ASSERT_EQ_INT(r->warnings[0].line, 8);
        ASSERT_STREQ(r->warnings[0].detail,
                     "Empty continuation lines will become errors in a future release");
        ASSERT_STREQ(r->warnings[0].url,
                     "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/");
        ASSERT_STREQ(r->warnings[1].message, "Empty continuation line found in: RUN e   f");
        ASSERT_EQ_INT(r->warnings[1].line, 14);
        return 0;
}

TEST(comments_and_original)
{
        _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *r = parse_ok(
                "# syntax=x\n# first\n  # second  \n\nFROM a\n# gone\n#\n# kept\nRUN b \\\n"
                "# inner\n c\nONBUILD  RUN   x  \n");
        const struct kiln_dockerfile_node *c0, *c1, *c2;

        ASSERT_TRUE(r);
        c0 = r->root->children[0];
        c1 = r->root->children[1];
        c2 = r->root->children[2];
        /* BuildKit drops the line's first byte before trimming */
        ASSERT_EQ_INT(c0->n_comments, 2);
        ASSERT_STREQ(c0->comments[0].s, "first");
        ASSERT_STREQ(c0->comments[1].s, "# second");
        ASSERT_EQ_INT(c1->n_comments, 1);
        ASSERT_STREQ(c1->comments[0].s, "kept");
        ASSERT_STREQ(c1->original.s, "RUN b  c");
        ASSERT_EQ_INT(c2->n_comments, 0);
        ASSERT_STREQ(c2->original.s, "ONBUILD  RUN   x  ");
        ASSERT_STREQ(c2->next->children[0]->original.s, "RUN   x");
        return 0;
}

TEST(json_like_go)
{
        _cleanup_free_ char *a = dump("RUN [\"a\\ud800\", \"\\ud83d\\ude00\", \"\xff\"]\n");
        _cleanup_free_ char *b = dump("RUN [\"a\", 99999999999999999999999]\n");
        _cleanup_free_ char *c = dump("CMD [\"a\", 1e999]\nCMD [\"a\"] x\nSHELL [\"a\",]\n");

        /* Go decodes lone surrogates and bad UTF-8 as U+FFFD */
        ASSERT_STREQ(a, "(run \"a\xef\xbf\xbd\" \"\xf0\x9f\x98\x80\" \"\xef\xbf\xbd\")\n");
        /* a big number is a number: not a string array */
        ASSERT_TRUE(b == NULL);
        /* not JSON: the text */
        ASSERT_STREQ(c, "(cmd \"[\\\"a\\\", 1e999]\")\n(cmd \"[\\\"a\\\"] x\")\n"
                        "(shell \"[\\\"a\\\",]\")\n");
        return 0;
}

TEST(long_lines)
{
        size_t n = KILN_LIMIT_DOCKERFILE_LINE + 1;
        _cleanup_free_ char *src = kiln_xmalloc(n + 32);
        _cleanup_free_ char *a = NULL, *b = NULL;
        unsigned line = 0;

        memcpy(src, "FROM x\nLABEL a=", 15);
        memset(src + 15, 'b', n - 8);
        memcpy(src + 15 + n - 8, "\n", 2);
        a = parse_error(src, &line);
        ASSERT_STREQ(a, "t:2: dockerfile line greater than max allowed size of 65535");
        /* with nothing parsed before it, BuildKit reports an empty file */
        b = parse_error(src + 7, &line);
        ASSERT_STREQ(b, "t:1: file with no instructions");
        /* the longest allowed line parses */
        src[15 + n - 9] = '\n';
        src[15 + n - 8] = '\0';
        kiln_dockerfile_result_free(parse_ok(src));
        ASSERT_TRUE(1);
        return 0;
}

TEST(instruction_names_like_go)
{
        /* strings.ToLower: the Kelvin sign is a 'k', other letters lower as
         * Unicode says, invalid UTF-8 dumps as U+FFFD; "RUN\0" is no RUN */
        _cleanup_free_ char *a = dump("WOR\xe2\x84\xaa"
                                      "DIR /a b\nR\xc3\x9cN x\nR\xffN y\n");
        _cleanup_free_ char *b = heredocs_n("RUN\0 <<E\nE\n", 11);

        ASSERT_STREQ(a, "(workdir \"/a b\")\n(r\xc3\xbcn \"\")\n(r\xef\xbf\xbdn \"\")\n");
        ASSERT_STREQ(b, "");
        return 0;
}

TEST(heredoc_deep_substitution)
{
        /* nesting past the lexer's limit: the line has no heredocs (and the
         * stack stays bounded) */
        size_t depth = 5000, i;
        _cleanup_free_ char *src = kiln_xmalloc(depth * 5 + 32);
        _cleanup_free_ char *a = NULL, *b = NULL;
        char *p = src;

        p += snprintf(p, 16, "RUN <<E ");
        for (i = 0; i < depth; i++)
                p += snprintf(p, 8, "${a-");
        for (i = 0; i < depth; i++)
                *p++ = '}';
        memcpy(p, "\nE\n", 4);
        a = heredocs(src);
        ASSERT_STREQ(a, "");
        b = heredocs("RUN <<E ${a-${b:-${c/x/y}}}\nE\n");
        ASSERT_STREQ(b, "1 1-2 \"E\" fd=0 e=1 c=0 \"\"\n");
        return 0;
}

TEST(heredoc_lexer_quirks)
{
        /* an escaped blank stays in the word; BuildKit's lexer (text/scanner)
         * skips a byte order mark at the start of the name */
        _cleanup_free_ char *a = heredocs("RUN <<E\\ F\nE F\n");
        _cleanup_free_ char *b = heredocs("RUN <<\"E\"'F'\nEF\n");
        _cleanup_free_ char *c = heredocs("RUN <<\xef\xbb\xbf"
                                          "EOF\nEOF\n");
        _cleanup_free_ char *d = heredocs("# escape=`\nRUN <<E\\\"F `\n  x\nE\"F\n");

        ASSERT_STREQ(a, "1 1-2 \"E F\" fd=0 e=1 c=0 \"\"\n");
        ASSERT_STREQ(b, "1 1-2 \"EF\" fd=0 e=0 c=0 \"\"\n");
        ASSERT_STREQ(c, "1 1-2 \"EOF\" fd=0 e=1 c=0 \"\"\n");
        /* heredoc names always use '\\' as escape, whatever the directive */
        ASSERT_STREQ(d, "1 2-4 \"E\\\"F\" fd=0 e=1 c=0 \"\"\n");
        return 0;
}

TEST(heredoc_name_with_nul)
{
        /* the lexer reads a NUL as an ordinary character: it is part of the
         * name, and the terminator line must hold it too */
        static const char src_a[] = "RUN <<E\0F cat\nx\nE\0F\n";
        static const char src_b[] = "RUN <<'E\0F'\nE\nE\0F\n";
        static const char word[] = "3<<-\"a\0\"";
        _cleanup_free_ char *a = heredocs_n(src_a, sizeof(src_a) - 1);
        _cleanup_free_ char *b = heredocs_n(src_b, sizeof(src_b) - 1);
        struct kiln_dockerfile_heredoc h;

        ASSERT_STREQ(a, "1 1-3 \"E\\x00F\" fd=0 e=1 c=0 \"x\\n\"\n");
        ASSERT_STREQ(b, "1 1-3 \"E\\x00F\" fd=0 e=0 c=0 \"E\\n\"\n");
        ASSERT_EQ_INT(kiln_dockerfile_heredoc_parse(word, sizeof(word) - 1, &h, NULL), 1);
        ASSERT_EQ_INT(h.name.len, 2);
        ASSERT_TRUE(memcmp(h.name.s, "a\0", 3) == 0);
        ASSERT_TRUE(h.fd == 3 && h.chomp && !h.expand);
        kiln_dockerfile_heredoc_release(&h);
        return 0;
}
