/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>

#include "base/buf.h"
#include "base/limits.h"
#include "config/toml.h"
#include "kiln-test.h"

static int parse(const char *s, struct kiln_toml_value **ret, struct kiln_error **err)
{
        return kiln_toml_parse(s, strlen(s), ret, err);
}

/* Parses s, which must fail with code; returns the message (owned by *err). */
static const char *parse_fail(const char *s, int code, struct kiln_error **err)
{
        struct kiln_toml_value *v = NULL;
        int r = parse(s, &v, err);

        if (r != code || v || !*err) {
                printf("# parse of '%s' returned %d (want %d)\n", s, r, code);
                kiln_toml_value_free(v);
                return "(parse did not fail as expected)";
        }
        return (*err)->message;
}

static const struct kiln_toml_value *get(const struct kiln_toml_value *t, const char *key)
{
        const struct kiln_toml_entry *e;

        if (!t || t->type != KILN_TOML_TABLE)
                return NULL;
        e = kiln_toml_table_find(t->table, key);
        return e ? e->value : NULL;
}

#define ASSERT_POS(p, l, c)                   \
        do {                                  \
                ASSERT_EQ_INT((p).line, (l)); \
                ASSERT_EQ_INT((p).col, (c));  \
        } while (0)

TEST(positions_of_keys_and_values)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct kiln_toml_value *server, *tls, *workers;
        const struct kiln_toml_entry *e;

        ASSERT_OK(parse("# comment\n"
                        "name = \"kiln\"\n"
                        "[server]\n"
                        "  port = 8080\n"
                        "  tls.cert = 'x'\n"
                        "[[workers]]\n"
                        "  id = 1\n"
                        "[[workers]]\r\n"
                        "  id = { a = [1, 2] }\n",
                        &root, &err));
        ASSERT_TRUE(err == NULL);
        ASSERT_EQ_INT(root->type, KILN_TOML_TABLE);
        ASSERT_POS(root->pos, 1, 1);

        e = kiln_toml_table_find(root->table, "name");
        ASSERT_TRUE(e);
        ASSERT_POS(e->key_pos, 2, 1);
        ASSERT_POS(e->value->pos, 2, 8);
        ASSERT_STREQ(e->value->str.s, "kiln");

        e = kiln_toml_table_find(root->table, "server");
        ASSERT_TRUE(e);
        ASSERT_POS(e->key_pos, 3, 2);
        server = e->value;
        ASSERT_POS(server->pos, 3, 1);

        e = kiln_toml_table_find(server->table, "port");
        ASSERT_POS(e->key_pos, 4, 3);
        ASSERT_POS(e->value->pos, 4, 10);
        ASSERT_EQ_INT(e->value->integer, 8080);

        /* A table made by a dotted key starts at that key. */
        e = kiln_toml_table_find(server->table, "tls");
        tls = e->value;
        ASSERT_POS(e->key_pos, 5, 3);
        ASSERT_POS(tls->pos, 5, 3);
        e = kiln_toml_table_find(tls->table, "cert");
        ASSERT_POS(e->key_pos, 5, 7);
        ASSERT_POS(e->value->pos, 5, 14);

        workers = get(root, "workers");
        ASSERT_EQ_INT(workers->type, KILN_TOML_ARRAY);
        ASSERT_EQ_INT(workers->array.n, 2);
        ASSERT_POS(workers->pos, 6, 1);
        ASSERT_POS(workers->array.items[0]->pos, 6, 1);
        ASSERT_POS(workers->array.items[1]->pos, 8, 1);
        ASSERT_POS(get(workers->array.items[0], "id")->pos, 7, 8);

        /* Inline tables and arrays: positions inside one line. */
        ASSERT_POS(get(workers->array.items[1], "id")->pos, 9, 8);
        ASSERT_POS(get(get(workers->array.items[1], "id"), "a")->pos, 9, 14);
        ASSERT_POS(get(get(workers->array.items[1], "id"), "a")->array.items[1]->pos, 9, 18);
        return 0;
}

TEST(implicit_table_takes_position_of_its_definition)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        const struct kiln_toml_entry *e;

        ASSERT_OK(parse("[a.b.c]\nx = 1\n\n[ a ]\ny = 2\n", &root, NULL));
        e = kiln_toml_table_find(root->table, "a");
        ASSERT_POS(e->value->pos, 4, 1);
        ASSERT_POS(e->key_pos, 4, 3);
        ASSERT_EQ_INT(e->value->table->n, 2);
        ASSERT_STREQ(e->value->table->entries[0].key, "b");
        ASSERT_STREQ(e->value->table->entries[1].key, "y");
        return 0;
}

TEST(document_order)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        static const char *const order[] = { "zeta", "alpha", "mid", "b", "a" };
        size_t i;

        ASSERT_OK(parse("zeta = 1\nalpha = 2\nmid = 3\n[b]\n[a]\n", &root, NULL));
        ASSERT_EQ_INT(root->table->n, ELEMENTSOF(order));
        for (i = 0; i < ELEMENTSOF(order); i++)
                ASSERT_STREQ(root->table->entries[i].key, order[i]);
        return 0;
}

/* The text of v's span in doc. */
static const char *span_text(const char *doc, const struct kiln_toml_value *v, char *buf,
                             size_t size)
{
        size_t n = v->length < size - 1 ? v->length : size - 1;

        memcpy(buf, doc + v->offset, n);
        buf[n] = '\0';
        return buf;
}

TEST(spans_of_values)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        static const char doc[] = "\xEF\xBB\xBF"
                                  "a = \"x\\u0041\" # c\n"
                                  "b = 'lit'\n"
                                  "c = \"\"\"\nmulti\n\"\"\"\n"
                                  "d = '''m'''\n"
                                  "e = [ 1, \"two\" ,\n  3.5 ]\n"
                                  "f = { g = true, h = 1979-05-27T07:32:00Z }\n"
                                  "i = -1_000 \n"
                                  "j.k = 'dotted'\n"
                                  "[t]\n"
                                  "[[aot]]\n"
                                  "l = [[], [\"n\"]]\n";
        const struct kiln_toml_value *v, *e, *f, *aot;
        char buf[128];

        ASSERT_OK(kiln_toml_parse(doc, sizeof(doc) - 1, &root, NULL));
        ASSERT_EQ_INT(root->offset, 0);
        ASSERT_EQ_INT(root->length, 0);
        /* The BOM counts in offsets (not in columns). */
        v = get(root, "a");
        ASSERT_EQ_INT(v->offset, 7);
        ASSERT_POS(v->pos, 1, 5);
        ASSERT_STREQ(span_text(doc, v, buf, sizeof(buf)), "\"x\\u0041\"");
        ASSERT_STREQ(v->str.s, "xA");
        ASSERT_STREQ(span_text(doc, get(root, "b"), buf, sizeof(buf)), "'lit'");
        ASSERT_STREQ(span_text(doc, get(root, "c"), buf, sizeof(buf)), "\"\"\"\nmulti\n\"\"\"");
        ASSERT_STREQ(span_text(doc, get(root, "d"), buf, sizeof(buf)), "'''m'''");
        e = get(root, "e");
        ASSERT_STREQ(span_text(doc, e, buf, sizeof(buf)), "[ 1, \"two\" ,\n  3.5 ]");
        ASSERT_STREQ(span_text(doc, e->array.items[0], buf, sizeof(buf)), "1");
        ASSERT_STREQ(span_text(doc, e->array.items[1], buf, sizeof(buf)), "\"two\"");
        ASSERT_STREQ(span_text(doc, e->array.items[2], buf, sizeof(buf)), "3.5");
        f = get(root, "f");
        ASSERT_STREQ(span_text(doc, f, buf, sizeof(buf)), "{ g = true, h = 1979-05-27T07:32:00Z }");
        ASSERT_STREQ(span_text(doc, get(f, "g"), buf, sizeof(buf)), "true");
        ASSERT_STREQ(span_text(doc, get(f, "h"), buf, sizeof(buf)), "1979-05-27T07:32:00Z");
        ASSERT_STREQ(span_text(doc, get(root, "i"), buf, sizeof(buf)), "-1_000");
        /* Tables made by dotted keys and headers: an empty span at the key or header. */
        v = get(root, "j");
        ASSERT_EQ_INT(v->length, 0);
        ASSERT_TRUE(strncmp(doc + v->offset, "j.k =", 5) == 0);
        ASSERT_STREQ(span_text(doc, get(v, "k"), buf, sizeof(buf)), "'dotted'");
        v = get(root, "t");
        ASSERT_EQ_INT(v->length, 0);
        ASSERT_TRUE(strncmp(doc + v->offset, "[t]\n", 4) == 0);
        aot = get(root, "aot");
        ASSERT_EQ_INT(aot->length, 0);
        ASSERT_TRUE(strncmp(doc + aot->offset, "[[aot]]\n", 8) == 0);
        ASSERT_EQ_INT(aot->array.items[0]->offset, aot->offset);
        ASSERT_EQ_INT(aot->array.items[0]->length, 0);
        v = get(aot->array.items[0], "l");
        ASSERT_STREQ(span_text(doc, v, buf, sizeof(buf)), "[[], [\"n\"]]");
        ASSERT_STREQ(span_text(doc, v->array.items[0], buf, sizeof(buf)), "[]");
        ASSERT_STREQ(span_text(doc, v->array.items[1]->array.items[0], buf, sizeof(buf)), "\"n\"");
        return 0;
}

TEST(span_of_implicit_table_moves_to_its_header)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        static const char doc[] = "[a.b]\nx = 1\n[a]\ny = 2\n";
        const struct kiln_toml_value *a;

        ASSERT_OK(kiln_toml_parse(doc, sizeof(doc) - 1, &root, NULL));
        a = get(root, "a");
        ASSERT_EQ_INT(a->offset, 12);
        ASSERT_EQ_INT(a->length, 0);
        ASSERT_EQ_INT(get(a, "b")->offset, 0);
        ASSERT_EQ_INT(get(get(a, "b"), "x")->offset, 10);
        return 0;
}

TEST(scalars)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        const struct kiln_toml_value *v;

        ASSERT_OK(parse("max = 9_223_372_036_854_775_807\n"
                        "min = -9223372036854775808\n"
                        "hex = 0xDEAD_beef\n"
                        "oct = 0o755\n"
                        "bin = 0b1010\n"
                        "f = -1_000.5e-3\n"
                        "ninf = -inf\n"
                        "nan = +nan\n"
                        "t = true\n"
                        "odt = 1979-05-27 07:32:00.999z\n"
                        "ldt = 1979-05-27t07:32:00\n"
                        "ld = 2000-02-29\n"
                        "lt = 23:59:60.5\n"
                        "off = 1979-05-27T00:32:00-07:00\n"
                        "ml = \"\"\"\r\nline1\r\nline2 \\\r\n   still2\"\"\"\n"
                        "lit = '''\n'a' \\n'''\n",
                        &root, NULL));
        ASSERT_EQ_INT(get(root, "max")->integer, INT64_MAX);
        ASSERT_EQ_INT(get(root, "min")->integer, INT64_MIN);
        ASSERT_EQ_INT(get(root, "hex")->integer, 0xDEADBEEF);
        ASSERT_EQ_INT(get(root, "oct")->integer, 0755);
        ASSERT_EQ_INT(get(root, "bin")->integer, 10);
        ASSERT_TRUE(get(root, "f")->flt == -1.0005);
        ASSERT_TRUE(isinf(get(root, "ninf")->flt) && get(root, "ninf")->flt < 0);
        ASSERT_TRUE(isnan(get(root, "nan")->flt));
        ASSERT_TRUE(get(root, "t")->boolean);

        v = get(root, "odt");
        ASSERT_EQ_INT(v->type, KILN_TOML_DATETIME);
        ASSERT_STREQ(v->str.s, "1979-05-27T07:32:00.999Z");
        v = get(root, "ldt");
        ASSERT_EQ_INT(v->type, KILN_TOML_DATETIME_LOCAL);
        ASSERT_STREQ(v->str.s, "1979-05-27T07:32:00");
        v = get(root, "ld");
        ASSERT_EQ_INT(v->type, KILN_TOML_DATE_LOCAL);
        ASSERT_STREQ(v->str.s, "2000-02-29");
        v = get(root, "lt");
        ASSERT_EQ_INT(v->type, KILN_TOML_TIME_LOCAL);
        ASSERT_STREQ(v->str.s, "23:59:60.5");
        ASSERT_STREQ(get(root, "off")->str.s, "1979-05-27T00:32:00-07:00");

        /* CRLF decodes as LF; the line-ending backslash eats the break. */
        ASSERT_STREQ(get(root, "ml")->str.s, "line1\nline2 still2");
        ASSERT_STREQ(get(root, "lit")->str.s, "'a' \\n");

        ASSERT_STREQ(kiln_toml_type_to_string(KILN_TOML_DATETIME_LOCAL), "datetime-local");
        ASSERT_STREQ(kiln_toml_type_to_string(KILN_TOML_TABLE), "table");
        ASSERT_TRUE(kiln_toml_type_to_string(_KILN_TOML_TYPE_MAX) == NULL);
        return 0;
}

TEST(keys_with_nul_and_unicode)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        const struct kiln_toml_entry *e;

        ASSERT_OK(parse("\"a\\u0000b\" = 1\n'a\\u0000b' = 2\n\"\\u00e9\" = \"\\U0001F600\"\n",
                        &root, NULL));
        e = kiln_toml_table_findn(root->table, "a\0b", 3);
        ASSERT_TRUE(e);
        ASSERT_EQ_INT(e->key_len, 3);
        ASSERT_EQ_INT(e->value->integer, 1);
        ASSERT_EQ_INT(kiln_toml_table_find(root->table, "a\\u0000b")->value->integer, 2);
        ASSERT_TRUE(kiln_toml_table_find(root->table, "a") == NULL);
        ASSERT_STREQ(kiln_toml_table_find(root->table, "\xc3\xa9")->value->str.s,
                     "\xf0\x9f\x98\x80");
        return 0;
}

TEST(bom_is_skipped_and_not_counted)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(parse("\xEF\xBB\xBF"
                        "a = 1\n",
                        &root, NULL));
        ASSERT_POS(root->table->entries[0].key_pos, 1, 1);
        ASSERT_STREQ(parse_fail("\xEF\xBB\xBF"
                                "a = ?\n",
                                -EINVAL, &err),
                     "1:5: expected a value, found '?'");
        return 0;
}

TEST(error_positions)
{
        static const struct {
                const char *input;
                const char *message;
                unsigned line, col;
        } cases[] = {
                { "key value\n", "1:5: expected '=' after key, found 'v'", 1, 5 },
                { "a = 1\nb = 2\n  b = 3\n", "3:3: duplicate key 'b' (first defined at 2:1)", 3,
                  3 },
                { "[a.b]\nx = 1\n[a]\n[a.b]\n", "4:1: table 'a.b' already defined at 1:1", 4, 1 },
                { "a = 1 b = 2\n", "1:7: expected end of line after value, found 'b'", 1, 7 },
                { "s = \"abc\\q\"\n", "1:9: invalid escape '\\q'", 1, 9 },
                { "s = \"\\uD800\"\n", "1:6: escape '\\uD800' is not a unicode scalar value", 1,
                  6 },
                { "d = 2023-02-29\n", "1:13: invalid day 29 (2023-02 has 28 days)", 1, 13 },
                { "i = 9223372036854775808\n",
                  "1:5: integer '9223372036854775808' does not fit in 64 bits", 1, 5 },
                { "i = 0x_1\n",
                  "1:7: invalid hexadecimal integer '0x_1': '_' must be between digits", 1, 7 },
                { "t = {a = 1}\nt.b = 2\n", "2:1: cannot extend inline table 't' (defined at 1:5)",
                  2, 1 },
                { "t = {a = 1,}\n", "1:12: trailing comma is not allowed in an inline table", 1,
                  12 },
                { "a = [1]\n[[a]]\n",
                  "2:1: cannot append a table to static array 'a' (defined at 1:1)", 2, 1 },
                { "[a]\nb.c = 1\n[a.b]\n", "3:1: table 'a.b' already defined at 2:1", 3, 1 },
                { "[x]\n\"k y\".z = 1\n[x]\n", "3:1: table 'x' already defined at 1:1", 3, 1 },
                { "a = 1 # ok\n# bad \x01\n",
                  "2:7: control character U+0001 is not allowed in a comment", 2, 7 },
                { "a = \"\xC0\xAF\"\n", "1:6: invalid utf-8 in string (byte 0xC0)", 1, 6 },
                { "a = \"\xED\xA0\x80\"\n", "1:6: invalid utf-8 in string (byte 0xED)", 1, 6 },
                { "a = 1\rb = 2\n",
                  "1:6: expected end of line after value, found a carriage return not followed by "
                  "a line feed",
                  1, 6 },
                { "a = \"\"\"\nx\n", "1:5: unterminated string", 1, 5 },
                { "\"\" = 1\n\"\" = 2\n", "2:1: duplicate key '\"\"' (first defined at 1:1)", 2,
                  1 },
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_STREQ(parse_fail(cases[i].input, -EINVAL, &err), cases[i].message);
                ASSERT_EQ_INT(err->line, cases[i].line);
                ASSERT_EQ_INT(err->col, cases[i].col);
        }
        return 0;
}

TEST(redefinitions)
{
        static const char *const invalid[] = {
                "[a]\n[a]\n",
                "[a]\nb = 1\n[a.b]\n",
                "a = {}\n[a.b]\n",
                "[[a]]\n[a]\n",
                "[a]\n[[a]]\n",
                "a.b = 1\n[a]\n",
                "[a.b.c]\n[a]\nb.c.d = 1\n",
                "[[a.b]]\n[a]\nb.c = 1\n",
                "a = {b = {c = 1}}\na.b.d = 2\n",
                "a = {b.c = 1, b = 2}\n",
                "a = [{b = 1}]\n[a.c]\n",
                "a.b = 1\na.b.c = 2\n",
                "[t]\nx.y = 1\n[u]\n[t.x]\n",
        };
        static const char *const valid[] = {
                "[a.b]\n[a]\n",
                "[a]\nb.c = 1\nb.d = 2\n[a.b.e]\n",
                "[[a]]\nb.c = 1\n[[a]]\nb.c = 2\n",
                "[[a]]\n[a.b]\n[[a]]\n[a.b]\n",
                "a = {b.c = 1, b.d = 2}\n",
                "[a.b.c]\n[a]\nb.d = 1\n",
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(invalid); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                const char *msg = parse_fail(invalid[i], -EINVAL, &err);

                ASSERT_TRUE(err != NULL);
                ASSERT_TRUE(err->line > 0 && err->col > 0);
                ASSERT_TRUE(msg[0] >= '1' && msg[0] <= '9');
        }
        for (i = 0; i < ELEMENTSOF(valid); i++) {
                _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                int r = parse(valid[i], &root, &err);

                if (r < 0)
                        KILN_TEST_FAIL("'%s': %s", valid[i], kiln_error_message(err));
        }
        return 0;
}

static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
        size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), i;
        char *s = kiln_xmalloc(hl + ul * n + tl + 1), *p = s;

        memcpy(p, head, hl);
        p += hl;
        for (i = 0; i < n; i++, p += ul)
                memcpy(p, unit, ul);
        memcpy(p, tail, tl + 1);
        return s;
}

TEST(depth_limit)
{
        /* "a" is at depth 1, so KILN_LIMIT_TOML_DEPTH arrays nest exactly to the limit. */
        const size_t max = KILN_LIMIT_TOML_DEPTH;
        _cleanup_free_ char *open_ok = repeat("a = ", "[", max, "");
        _cleanup_free_ char *ok = NULL, *deep = NULL, *open_deep = repeat("a = ", "[", max + 1, "");
        _cleanup_free_ char *inl = repeat("a = ", "{b=", max + 1, "1");
        _cleanup_free_ char *dotted = repeat("a", ".a", max, " = 1\n");
        _cleanup_free_ char *header = repeat("[a", ".a", max, "]\n");
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ok = repeat(open_ok, "]", max, "\n");
        deep = repeat(open_deep, "]", max + 1, "\n");
        ASSERT_OK(parse(ok, &root, &err));
        ASSERT_EQ_INT(parse(deep, &root, &err), -E2BIG);
        ASSERT_STREQ(kiln_error_message(err), "1:133: nesting deeper than 128 levels");
        ASSERT_EQ_INT(parse(inl, &root, &err), -E2BIG);
        ASSERT_EQ_INT(parse(dotted, &root, &err), -E2BIG);
        ASSERT_EQ_INT(parse(header, &root, &err), -E2BIG);
        ASSERT_TRUE(err->line == 1 && err->col > 1);
        return 0;
}

TEST(size_limits)
{
        size_t n = KILN_LIMIT_TOML_STRING + 1;
        _cleanup_free_ char *big = kiln_xmalloc(KILN_LIMIT_CONFIG_FILE + 1);
        _cleanup_free_ char *str = repeat("s = \"", "x", n, "\"\n");
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        memset(big, '#', KILN_LIMIT_CONFIG_FILE + 1);
        ASSERT_EQ_INT(kiln_toml_parse(big, KILN_LIMIT_CONFIG_FILE + 1, &root, &err), -E2BIG);
        ASSERT_TRUE(root == NULL);
        ASSERT_EQ_INT(err->line, 1);
        ASSERT_EQ_INT(parse(str, &root, &err), -E2BIG);
        ASSERT_STREQ(kiln_error_message(err), "1:5: string longer than 1048576 bytes");

        /* A comment line of exactly the maximum size is fine. */
        ASSERT_OK(kiln_toml_parse(big, KILN_LIMIT_CONFIG_FILE, &root, &err));
        ASSERT_EQ_INT(root->table->n, 0);
        return 0;
}

TEST(empty_and_null_inputs)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;

        ASSERT_OK(kiln_toml_parse(NULL, 0, &root, NULL));
        ASSERT_EQ_INT(root->type, KILN_TOML_TABLE);
        ASSERT_EQ_INT(root->table->n, 0);
        ASSERT_TRUE(kiln_toml_table_find(root->table, "x") == NULL);
        ASSERT_TRUE(kiln_toml_value_free(NULL) == NULL);
        /* err may be NULL: only the code is returned. */
        root = kiln_toml_value_free(root);
        ASSERT_EQ_INT(parse("=", &root, NULL), -EINVAL);
        ASSERT_TRUE(root == NULL);
        return 0;
}

TEST(many_keys_stay_fast)
{
        /* 100k keys in one table: quadratic lookups would take seconds. */
        const size_t n = 100000;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_CONFIG_FILE);
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        size_t i;

        for (i = 0; i < n; i++)
                ASSERT_OK(kiln_buf_printf(&b, "k%zu = %zu\n", i, i));
        ASSERT_OK(kiln_toml_parse(b.data, b.len, &root, NULL));
        ASSERT_EQ_INT(root->table->n, n);
        ASSERT_STREQ(root->table->entries[n - 1].key, "k99999");
        return 0;
}
