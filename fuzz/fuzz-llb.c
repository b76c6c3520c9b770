/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the build-graph JSON loader of src/llb/.
 *
 * The first byte picks the mode. Raw: the rest is given to the loader as it
 * is. Linked: the rest is parsed as JSON first and every op's "digest", and
 * any reference digest written "@N" (op N of the array), is replaced with
 * the real digest, so inputs get past the digest checks into references,
 * outputs and the ops that depend on them (a fuzzer cannot find SHA-256
 * preimages). Every input must load or fail with a message; a loaded
 * definition must serialise, load again, compare equal and serialise to the
 * same bytes. No crashes, leaks or undefined behaviour.
 */

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/macro.h"
#include "llb/llb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PLACEHOLDER    "sha256:0000000000000000000000000000000000000000000000000000000000000000"
#define MAX_LINKED_OPS 64

static void check_round_trip(const struct kiln_llb_def *def)
{
        _cleanup_free_ char *json = NULL, *json2 = NULL;
        struct kiln_error *err = NULL;
        struct kiln_llb_def *back = NULL;

        if (kiln_llb_def_to_json(def, &json) < 0)
                abort();
        if (kiln_llb_def_from_json(json, strlen(json), &back, &err) < 0) {
                fprintf(stderr, "reload failed: %s\n%s", kiln_error_message(err), json);
                abort();
        }
        if (!kiln_llb_def_equal(def, back))
                abort();
        if (kiln_llb_def_to_json(back, &json2) < 0 || !streq(json, json2))
                abort();
        for (size_t i = 0; i < kiln_llb_def_n_ops(def); i++) {
                const struct kiln_llb_op *op = kiln_llb_def_op(def, i);
                if (kiln_llb_def_find(def, op->digest) != op)
                        abort();
        }
        kiln_llb_def_free(back);
}

/* Replaces string values "@N" of members named "digest" under v. */
static void link_refs(json_t *v, char (*digests)[KILN_LLB_DIGEST_LEN + 1], size_t n)
{
        const char *key;
        json_t *child;
        size_t i;

        if (json_is_object(v)) {
                json_object_foreach (v, key, child) {
                        const char *s = json_string_value(child);
                        if (streq(key, "digest") && s && s[0] == '@') {
                                char *end;
                                unsigned long k = strtoul(s + 1, &end, 10);
                                if (!*end && k < n)
                                        json_object_set_new(v, key, json_string(digests[k]));
                        } else {
                                link_refs(child, digests, n);
                        }
                }
        } else if (json_is_array(v)) {
                json_array_foreach (v, i, child)
                        link_refs(child, digests, n);
        }
}

/* Loads doc (ops cut to n) and returns the digest the loader computed for
 * op n-1, read from its mismatch message; false if it failed otherwise. */
static bool learn_digest(json_t *doc, json_t *ops, size_t n, char *out)
{
        json_t *copy = json_deep_copy(doc);
        json_t *cut = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append(cut, json_array_get(ops, i));
        json_object_set_new(copy, "ops", cut);
        json_object_del(copy, "output");
        char *text = json_dumps(copy, JSON_COMPACT);
        json_decref(copy);
        if (!text)
                return false;
        struct kiln_error *err = NULL;
        struct kiln_llb_def *def = NULL;
        bool ok = false;
        if (kiln_llb_def_from_json(text, strlen(text), &def, &err) < 0) {
                const char *m = strstr(kiln_error_message(err), "does not match the op's digest '");
                if (m) {
                        m += strlen("does not match the op's digest '");
                        if (strlen(m) > KILN_LLB_DIGEST_LEN) {
                                memcpy(out, m, KILN_LLB_DIGEST_LEN);
                                out[KILN_LLB_DIGEST_LEN] = '\0';
                                ok = true;
                        }
                }
        }
        kiln_llb_def_free(def);
        kiln_error_free(err);
        free(text);
        return ok;
}

static char *link_document(const uint8_t *data, size_t size)
{
        static char digests[MAX_LINKED_OPS][KILN_LLB_DIGEST_LEN + 1];
        json_t *doc = json_loadb((const char *) data, size, 0, NULL);
        json_t *ops = json_object_get(doc, "ops");
        char *text = NULL;

        if (!json_is_array(ops) || json_array_size(ops) > MAX_LINKED_OPS)
                goto out;
        for (size_t i = 0; i < json_array_size(ops); i++) {
                json_t *e = json_array_get(ops, i);
                if (!json_is_object(e))
                        goto out;
                link_refs(e, digests, i);
                json_object_set_new(e, "digest", json_string(PLACEHOLDER));
                if (!learn_digest(doc, ops, i + 1, digests[i]))
                        break; /* leave the placeholder: the loader says why */
                json_object_set_new(e, "digest", json_string(digests[i]));
        }
        link_refs(json_object_get(doc, "output"), digests, json_array_size(ops));
        text = json_dumps(doc, JSON_COMPACT);
out:
        json_decref(doc);
        return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        bool linked = data[0] & 1;
        data++;
        size--;

        _cleanup_free_ char *text = NULL;
        if (linked) {
                text = link_document(data, size);
                if (!text)
                        return 0;
        }
        struct kiln_error *err = NULL;
        struct kiln_llb_def *def = NULL;
        int r = text ? kiln_llb_def_from_json(text, strlen(text), &def, &err)
                     : kiln_llb_def_from_json((const char *) data, size, &def, &err);
        if (r < 0) {
                if (!err || !kiln_error_message(err)[0] || def)
                        abort();
                kiln_error_free(err);
                return 0;
        }
        check_round_trip(def);
        kiln_llb_def_free(def);
        return 0;
}
