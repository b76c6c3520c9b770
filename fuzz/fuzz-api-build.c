/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the build messages of src/api/build.c: what kilnd
 * reads from any client (the build request, the context entry list) and
 * what kiln reads from a daemon (build events, the need list), and the
 * context probe both ways.
 *
 * The first byte picks the decoder; the rest is JSON. Every input must
 * decode or fail with a message; a decoded request, entry list or event
 * must encode and decode again to the same JSON. No crashes, leaks or undefined
 * behaviour.
 */

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/error.h"
#include "base/macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encodes and compares with the first encoding. */
static void check_same(json_t *a, json_t *b)
{
        if (!a || !b || !json_equal(a, b))
                abort();
}

static void request(const json_t *j)
{
        struct kiln_api_build_request r = { 0 }, again = { 0 };
        struct kiln_error *e = NULL;
        json_t *out = NULL, *out2 = NULL;

        if (kiln_api_build_request_from_json(j, &r, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
                kiln_error_free(e);
                return;
        }
        if (kiln_api_build_request_to_json(&r, &out) < 0 ||
            kiln_api_build_request_from_json(out, &again, &e) < 0 ||
            kiln_api_build_request_to_json(&again, &out2) < 0)
                abort();
        check_same(out, out2);
        json_decref(out);
        json_decref(out2);
        kiln_api_build_request_release(&r);
        kiln_api_build_request_release(&again);
}

static void entries(const json_t *j)
{
        struct kiln_api_context_entry *v = NULL, *w = NULL;
        size_t n = 0, m = 0;
        struct kiln_error *e = NULL;
        json_t *out = NULL, *out2 = NULL;

        if (kiln_api_context_entries_from_json(j, &v, &n, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
                kiln_error_free(e);
                return;
        }
        if (kiln_api_context_entries_to_json(v, n, &out) < 0 ||
            kiln_api_context_entries_from_json(out, &w, &m, &e) < 0 || m != n ||
            kiln_api_context_entries_to_json(w, m, &out2) < 0)
                abort();
        check_same(out, out2);
        json_decref(out);
        json_decref(out2);
        kiln_api_context_entries_free(v, n);
        kiln_api_context_entries_free(w, m);
}

/* A decoded event encodes, and decodes again to what encodes the same. */
static void event(const json_t *j)
{
        struct kiln_api_build_event ev = { 0 }, again = { 0 };
        struct kiln_error *e = NULL;
        json_t *out = NULL, *out2 = NULL;

        if (kiln_api_build_event_from_json(j, &ev, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
                kiln_error_free(e);
                return;
        }
        if (kiln_api_build_event_to_json(&ev, &out) < 0 ||
            kiln_api_build_event_from_json(out, &again, &e) < 0 ||
            kiln_api_build_event_to_json(&again, &out2) < 0)
                abort();
        check_same(out, out2);
        json_decref(out);
        json_decref(out2);
        kiln_api_build_event_release(&ev);
        kiln_api_build_event_release(&again);
}

static void probe(const json_t *j)
{
        char *digest = NULL;
        struct kiln_error *e = NULL;
        json_t *out = NULL;

        if (kiln_api_context_probe_from_json(j, &digest, &e) < 0) {
                if (!kiln_error_message(e))
                        abort();
                kiln_error_free(e);
                return;
        }
        if (kiln_api_context_probe_to_json(digest, &out) < 0 || !json_equal(out, j))
                abort();
        json_decref(out);
        free(digest);
}

static void need(const json_t *j)
{
        char **v = NULL;
        size_t n = 0;
        struct kiln_error *e = NULL;

        if (kiln_api_context_need_from_json(j, &v, &n, &e) < 0) {
                kiln_error_free(e);
                return;
        }
        kiln_api_strv_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        json_t *j;

        if (size < 1)
                return 0;
        j = json_loadb((const char *) data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
        if (!j)
                return 0;
        switch (data[0] % 5) {
        case 0:
                request(j);
                break;
        case 1:
                entries(j);
                break;
        case 2:
                event(j);
                break;
        case 3:
                need(j);
                break;
        default:
                probe(j);
                break;
        }
        json_decref(j);
        return 0;
}
