/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the TOML parser: any input must either parse or fail
 * with a positioned error, without crashes, leaks or undefined behaviour.
 */

#include <stdint.h>
#include <stdlib.h>

#include "base/limits.h"
#include "base/macro.h"
#include "config/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walks the tree so that every pointer the parser built is read. */
static size_t walk(const struct kiln_toml_value *v)
{
        size_t n = 1, i;

        switch (v->type) {
        case KILN_TOML_STRING:
        case KILN_TOML_DATETIME:
        case KILN_TOML_DATETIME_LOCAL:
        case KILN_TOML_DATE_LOCAL:
        case KILN_TOML_TIME_LOCAL:
                if (!v->str.s || v->str.s[v->str.len] != '\0')
                        abort();
                break;
        case KILN_TOML_ARRAY:
                for (i = 0; i < v->array.n; i++)
                        n += walk(v->array.items[i]);
                break;
        case KILN_TOML_TABLE:
                for (i = 0; i < v->table->n; i++) {
                        const struct kiln_toml_entry *e = &v->table->entries[i];

                        if (!e->value || e->key[e->key_len] != '\0' || e->key_pos.line == 0 ||
                            e->key_pos.col == 0)
                                abort();
                        if (kiln_toml_table_findn(v->table, e->key, e->key_len) != e)
                                abort();
                        n += walk(e->value);
                }
                break;
        case KILN_TOML_INTEGER:
        case KILN_TOML_FLOAT:
        case KILN_TOML_BOOL:
                break;
        case _KILN_TOML_TYPE_MAX:
        case _KILN_TOML_TYPE_INVALID:
                abort();
        }
        if (v->pos.line == 0 || v->pos.col == 0 || !kiln_toml_type_to_string(v->type))
                abort();
        return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r;

        if (size > KILN_LIMIT_CONFIG_FILE)
                return 0;
        r = kiln_toml_parse((const char *) data, size, &root, &err);
        if (r < 0) {
                /* Every failure carries a position and a "line:col: " message. */
                if (!err || err->line == 0 || err->col == 0 || !err->message || root)
                        abort();
                return 0;
        }
        if (!root || root->type != KILN_TOML_TABLE || err)
                abort();
        (void) walk(root);
        return 0;
}
