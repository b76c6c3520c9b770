/* SPDX-License-Identifier: Apache-2.0 */
/*
 * toml-test decoder: TOML on stdin; on success the tagged JSON of
 * ../shared/testdata/toml-test/README.md on stdout and exit 0; on invalid
 * input "line:col: message" on stderr and exit 1. Exit 2 for I/O errors.
 */

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/limits.h"
#include "base/macro.h"
#include "config/toml.h"

static json_t *tagged(const char *type, const char *value, size_t len)
{
        return json_pack("{s:s, s:s%}", "type", type, "value", value, len);
}

/* Shortest "%.*g" text that reads back as d; specials as toml-test spells them. */
static void format_float(double d, char *buf, size_t size)
{
        int prec;

        if (isnan(d)) {
                (void) snprintf(buf, size, "nan");
                return;
        }
        if (isinf(d)) {
                (void) snprintf(buf, size, d < 0 ? "-inf" : "inf");
                return;
        }
        for (prec = 1; prec <= 17; prec++) {
                (void) snprintf(buf, size, "%.*g", prec, d);
                if (strtod(buf, NULL) == d)
                        return;
        }
}

static json_t *to_json(const struct kiln_toml_value *v)
{
        char buf[64];
        json_t *j;
        size_t i;

        switch (v->type) {
        case KILN_TOML_STRING:
        case KILN_TOML_DATETIME:
        case KILN_TOML_DATETIME_LOCAL:
        case KILN_TOML_DATE_LOCAL:
        case KILN_TOML_TIME_LOCAL:
                return tagged(kiln_toml_type_to_string(v->type), v->str.s, v->str.len);
        case KILN_TOML_INTEGER:
                (void) snprintf(buf, sizeof(buf), "%" PRId64, v->integer);
                return tagged("integer", buf, strlen(buf));
        case KILN_TOML_FLOAT:
                format_float(v->flt, buf, sizeof(buf));
                return tagged("float", buf, strlen(buf));
        case KILN_TOML_BOOL:
                return tagged("bool", v->boolean ? "true" : "false", v->boolean ? 4 : 5);
        case KILN_TOML_ARRAY:
                j = json_array();
                for (i = 0; j && i < v->array.n; i++) {
                        json_t *item = to_json(v->array.items[i]);

                        if (!item || json_array_append_new(j, item) < 0) {
                                json_decref(j);
                                return NULL;
                        }
                }
                return j;
        case KILN_TOML_TABLE:
                j = json_object();
                for (i = 0; j && i < v->table->n; i++) {
                        const struct kiln_toml_entry *e = &v->table->entries[i];
                        json_t *item = to_json(e->value);

                        if (!item || json_object_setn_new(j, e->key, e->key_len, item) < 0) {
                                json_decref(j);
                                return NULL;
                        }
                }
                return j;
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                break;
        }
        return NULL;
}

int main(void)
{
        /* One byte past the limit, so the parser sees and reports it. */
        _cleanup_(kiln_buf_release) struct kiln_buf in = KILN_BUF_INIT(KILN_LIMIT_CONFIG_FILE + 1);
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char chunk[65536];
        json_t *j;
        int r;

        while (in.len < in.max) {
                size_t want = in.max - in.len < sizeof(chunk) ? in.max - in.len : sizeof(chunk);
                ssize_t n = read(STDIN_FILENO, chunk, want);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        fprintf(stderr, "read stdin: %s\n", strerror(errno));
                        return 2;
                }
                if (n == 0)
                        break;
                if (kiln_buf_append(&in, chunk, (size_t) n) < 0)
                        return 2;
        }

        r = kiln_toml_parse(in.data, in.len, &root, &err);
        if (r < 0) {
                fprintf(stderr, "%s\n", kiln_error_message(err));
                return 1;
        }
        j = to_json(root);
        if (!j) {
                fprintf(stderr, "cannot convert the document to json\n");
                return 2;
        }
        r = json_dumpf(j, stdout, JSON_INDENT(2));
        json_decref(j);
        if (r < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
                fprintf(stderr, "write stdout failed\n");
                return 2;
        }
        return 0;
}
