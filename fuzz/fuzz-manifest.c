/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the image documents and platforms of src/content/.
 *
 * The first byte picks the mode: one of the document media types, none (the
 * document says), or a platform specifier. Every input must parse or fail
 * with a message; a parsed document must serialise, parse again as the same
 * type and serialise to the same bytes; index selection and image checks
 * must hold their contracts. No crashes, leaks or undefined behaviour.
 */

#include <stdint.h>
#include <stdlib.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/macro.h"
#include "content/content.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MODE_NO_HINT  _KILN_CONTENT_MEDIA_MAX
#define MODE_PLATFORM (_KILN_CONTENT_MEDIA_MAX + 1)
#define N_MODES       (_KILN_CONTENT_MEDIA_MAX + 2)

static int serialize(const struct kiln_content_document *doc, struct kiln_buf *out)
{
        if (doc->manifest)
                return kiln_content_manifest_serialize(doc->manifest, out);
        if (doc->index)
                return kiln_content_index_serialize(doc->index, out);
        if (doc->config)
                return kiln_content_config_serialize(doc->config, out);
        if (doc->descriptor)
                return kiln_content_descriptor_serialize(doc->descriptor, out);
        if (!doc->layout_version)
                abort();
        return kiln_buf_puts(out, "{\"imageLayoutVersion\":\"1.0.0\"}");
}

static void check_index(const struct kiln_content_index *idx)
{
        static const char *const wants[] = { "linux/amd64", "linux/arm/v7", "linux/arm64",
                                             "windows(10.0+win32k)/amd64" };
        size_t i;

        for (i = 0; i <= ELEMENTSOF(wants); i++) {
                _cleanup_(kiln_content_platform_release) struct kiln_content_platform w = { 0 };
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                const struct kiln_content_descriptor *d = NULL;
                int r;

                if (i < ELEMENTSOF(wants) && kiln_content_platform_parse(wants[i], &w, NULL) < 0)
                        abort();
                r = kiln_content_index_select(idx, i < ELEMENTSOF(wants) ? &w : NULL, &d, &err);
                if (r < 0) {
                        if (r != -ENOENT || !err || d)
                                abort();
                        continue;
                }
                /* The pick is one of the entries, and a manifest or index. */
                if (!d || d < idx->manifests || d >= idx->manifests + idx->n_manifests || err)
                        abort();
                if (kiln_content_media_type_kind(d->media_type) != KILN_CONTENT_KIND_MANIFEST &&
                    kiln_content_media_type_kind(d->media_type) != KILN_CONTENT_KIND_INDEX)
                        abort();
                if ((r == 0) != (d->platform != NULL))
                        abort();
        }
}

static void fuzz_platform(const char *spec)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 }, q = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *f = NULL, *g = NULL;
        int rank;

        if (kiln_content_platform_parse(spec, &p, &err) < 0) {
                if (!err || !err->message)
                        abort();
                return;
        }
        if (!p.os || !p.architecture)
                abort();
        f = kiln_content_platform_format(&p);
        /* What format writes parses back to itself, unless a decoded
         * os.version or feature holds bytes the grammar cannot carry
         * (containerd's format has the same gap). */
        if (kiln_content_platform_parse(f, &q, NULL) >= 0) {
                g = kiln_content_platform_format(&q);
                if (!streq(f, g))
                        abort();
        }
        rank = kiln_content_platform_rank(&p, &p);
        if (rank < -1 || rank > 0)
                abort();
        kiln_content_platform_normalize(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(kiln_content_document_freep) struct kiln_content_document *doc = NULL,
                                                                            *again = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(64u << 20);
        _cleanup_(kiln_buf_release) struct kiln_buf out2 = KILN_BUF_INIT(64u << 20);
        const char *hint = NULL;
        unsigned mode;
        int r;

        if (size < 1 || size > KILN_CONTENT_LIMIT_CONFIG + 1)
                return 0;
        mode = data[0] % N_MODES;
        data++;
        size--;
        if (mode == MODE_PLATFORM) {
                _cleanup_free_ char *spec = kiln_xstrndup((const char *) data, size);

                fuzz_platform(spec);
                return 0;
        }
        if (mode != MODE_NO_HINT)
                hint = kiln_content_media_type_to_string((enum kiln_content_media_type) mode);

        r = kiln_content_document_parse((const char *) data, size, hint, &doc, &err);
        if (r < 0) {
                if (!err || !err->message || doc || err->code != r)
                        abort();
                return 0;
        }
        if (!doc || err || doc->size != size)
                abort();
        if (doc->manifest) {
                _cleanup_(kiln_error_freep) struct kiln_error *e2 = NULL;

                if (kiln_content_manifest_check_image(doc->manifest, &e2) < 0 && !e2)
                        abort();
        }
        if (doc->index)
                check_index(doc->index);

        /* Serialise, parse that, serialise again: same bytes. */
        if (serialize(doc, &out) < 0)
                abort();
        r = kiln_content_document_parse(out.data, out.len,
                                        kiln_content_media_type_to_string(doc->media_type), &again,
                                        &err);
        if (r < 0) {
                /* Go writes floats >= 1e20 in full, which jansson cannot
                 * read back as integers; only configs keep foreign numbers. */
                if (doc->config && r == -EBADMSG)
                        return 0;
                abort();
        }
        if (serialize(again, &out2) < 0 || out.len != out2.len ||
            memcmp(out.data, out2.data, out.len) != 0)
                abort();
        return 0;
}
