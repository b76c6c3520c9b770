/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the disk messages of src/api/disk.c: what kilnd
 * reads from any client (a du filter, a prune request) and what kiln reads
 * from a daemon (du answers), and buildx's --filter flags.
 *
 * The first byte picks the reader; the rest is the input. Every input must
 * be read or refused with a message; what is read must encode and read
 * again to the same JSON, and a parsed filter must be usable on a record.
 * No crashes, leaks or undefined behaviour.
 */

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/disk.h"
#include "base/error.h"
#include "base/macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_same(json_t *a, json_t *b)
{
        if (!a || !b || !json_equal(a, b))
                abort();
}

static void filter(const char *s)
{
        struct kiln_api_disk_filter *f = NULL;
        struct kiln_error *e = NULL;
        char *parents[] = { (char *) "sha256:abc" };
        struct kiln_api_disk_record r = {
                .id = (char *) "k1ln",
                .parents = parents,
                .n_parents = 1,
                .created_ns = 1,
                .last_used_ns = 2,
                .size = 42,
                .description = (char *) "mount / from exec /bin/sh -c echo",
                .type = (char *) KILN_API_DISK_TYPE_REGULAR,
        };

        if (kiln_api_disk_filter_parse(s, &f, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
        } else
                (void) kiln_api_disk_filter_match(f, &r);
        kiln_api_disk_filter_free(f);
        kiln_error_free(e);
}

static void flags(const char *s)
{
        /* newline-separated --filter values */
        char *copy = strdup(s), *save = NULL, *filter = NULL;
        const char *v[16];
        size_t n = 0;
        struct kiln_error *e = NULL;
        int64_t until = 0;

        if (!copy)
                return;
        for (char *t = strtok_r(copy, "\n", &save); t && n < ELEMENTSOF(v);
             t = strtok_r(NULL, "\n", &save))
                v[n++] = t;
        if (kiln_api_disk_filter_from_flags(v, n, &filter, &until, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
        } else if (filter) {
                /* what the flags make, the daemon must read */
                struct kiln_api_disk_filter *f = NULL;
                struct kiln_error *e2 = NULL;

                if (kiln_api_disk_filter_parse(filter, &f, &e2) < 0)
                        abort();
                kiln_api_disk_filter_free(f);
        }
        free(filter);
        free(copy);
        kiln_error_free(e);
}

static void prune_request(const json_t *j)
{
        struct kiln_api_prune_request r = { 0 }, again = { 0 };
        struct kiln_error *e = NULL;
        json_t *out = NULL, *out2 = NULL;

        if (kiln_api_prune_request_from_json(j, &r, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
                kiln_error_free(e);
                return;
        }
        if (kiln_api_prune_request_to_json(&r, &out) < 0 ||
            kiln_api_prune_request_from_json(out, &again, &e) < 0 ||
            kiln_api_prune_request_to_json(&again, &out2) < 0)
                abort();
        check_same(out, out2);
        json_decref(out);
        json_decref(out2);
        kiln_api_prune_request_release(&r);
        kiln_api_prune_request_release(&again);
}

static void du_result(const json_t *j)
{
        struct kiln_api_disk_record *v = NULL, *w = NULL;
        size_t n = 0, m = 0;
        struct kiln_error *e = NULL;
        json_t *out = NULL, *out2 = NULL;

        if (kiln_api_du_result_from_json(j, &v, &n, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
                kiln_error_free(e);
                return;
        }
        if (kiln_api_du_result_to_json(v, n, &out) < 0 ||
            kiln_api_du_result_from_json(out, &w, &m, &e) < 0 ||
            kiln_api_du_result_to_json(w, m, &out2) < 0 || m != n)
                abort();
        check_same(out, out2);
        json_decref(out);
        json_decref(out2);
        for (size_t i = 0; i < n; i++)
                kiln_api_disk_record_release(&v[i]);
        for (size_t i = 0; i < m; i++)
                kiln_api_disk_record_release(&w[i]);
        free(v);
        free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s;
        json_t *j;

        if (size < 1 || size > 65536)
                return 0;
        s = malloc(size);
        if (!s)
                return 0;
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';
        switch (data[0] % 4) {
        case 0:
                filter(s);
                break;
        case 1:
                flags(s);
                break;
        default:
                j = json_loadb((const char *) data + 1, size - 1, JSON_DECODE_ANY, NULL);
                if (j) {
                        if (data[0] % 4 == 2)
                                prune_request(j);
                        else
                                du_result(j);
                        json_decref(j);
                }
                break;
        }
        free(s);
        return 0;
}
