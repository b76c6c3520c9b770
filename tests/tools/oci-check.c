/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oci-check: parses one OCI/Docker JSON document with src/content/ and
 * prints what it found, for tests/golden/test_oci.py.
 *
 *   oci-check [-t MEDIA_TYPE] FILE
 *
 * Without -t the document's own mediaType decides. On success: exit 0 and
 * one JSON object on stdout:
 *   {"media_type": ..., "kind": "manifest"|"index"|"config"|"descriptor"|
 *    "oci-layout", "digest": "sha256:...", "size": N, "roundtrip": bool, ...}
 * with "layers", "config_digest", "config_media_type", "image" (manifest),
 * "manifests", "platforms" (index), "platform", "diff_ids" (config).
 * "roundtrip" tells whether serialising the parsed document gives back the
 * input bytes exactly. Invalid input: exit 1, the error on stderr.
 * I/O errors: exit 2.
 */

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/macro.h"
#include "content/content.h"

static const char *kind_name(enum kiln_content_media_type t)
{
        switch (t) {
        case KILN_CONTENT_MEDIA_OCI_MANIFEST:
        case KILN_CONTENT_MEDIA_DOCKER_MANIFEST:
                return "manifest";
        case KILN_CONTENT_MEDIA_OCI_INDEX:
        case KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST:
                return "index";
        case KILN_CONTENT_MEDIA_OCI_CONFIG:
        case KILN_CONTENT_MEDIA_DOCKER_CONFIG:
                return "config";
        case KILN_CONTENT_MEDIA_OCI_DESCRIPTOR:
                return "descriptor";
        case KILN_CONTENT_MEDIA_OCI_LAYOUT:
                return "oci-layout";
        case _KILN_CONTENT_MEDIA_MAX:
        case _KILN_CONTENT_MEDIA_INVALID:
                break;
        }
        return "unknown";
}

static bool same(const struct kiln_buf *out, const struct kiln_buf *in)
{
        return out->len == in->len && memcmp(out->data, in->data, in->len) == 0;
}

int main(int argc, char **argv)
{
        _cleanup_(kiln_buf_release) struct kiln_buf in = KILN_BUF_INIT(64u << 20);
        _cleanup_(kiln_buf_release) struct kiln_buf out = KILN_BUF_INIT(64u << 20);
        _cleanup_(kiln_content_document_freep) struct kiln_content_document *doc = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const char *media_type = NULL, *path;
        json_t *o;
        char *text;
        size_t i;
        int r;

        if (argc == 4 && streq(argv[1], "-t")) {
                media_type = argv[2];
                path = argv[3];
        } else if (argc == 2) {
                path = argv[1];
        } else {
                fprintf(stderr, "usage: oci-check [-t MEDIA_TYPE] FILE\n");
                return 2;
        }
        r = kiln_read_file_at(AT_FDCWD, path, &in);
        if (r < 0) {
                fprintf(stderr, "read '%s': %s\n", path, strerror(-r));
                return 2;
        }
        r = kiln_content_document_parse(in.data, in.len, media_type, &doc, &err);
        if (r < 0) {
                fprintf(stderr, "%s\n", kiln_error_message(err));
                return 1;
        }

        o = json_pack("{s:s, s:s, s:s, s:I}", "media_type",
                      kiln_content_media_type_to_string(doc->media_type), "kind",
                      kind_name(doc->media_type), "digest", doc->digest, "size",
                      (json_int_t) doc->size);
        if (doc->manifest) {
                const struct kiln_content_manifest *m = doc->manifest;

                (void) json_object_set_new(o, "layers", json_integer((json_int_t) m->n_layers));
                (void) json_object_set_new(o, "config_digest", json_string(m->config.digest));
                (void) json_object_set_new(o, "config_media_type",
                                           json_string(m->config.media_type));
                (void) json_object_set_new(o, "config_size", json_integer(m->config.size));
                (void) json_object_set_new(
                        o, "image", json_boolean(kiln_content_manifest_check_image(m, NULL) >= 0));
                r = kiln_content_manifest_serialize(m, &out);
        } else if (doc->index) {
                const struct kiln_content_index *idx = doc->index;
                json_t *platforms = json_array();

                for (i = 0; i < idx->n_manifests; i++) {
                        char *f = idx->manifests[i].platform
                                          ? kiln_content_platform_format(idx->manifests[i].platform)
                                          : NULL;

                        (void) json_array_append_new(platforms, f ? json_string(f) : json_null());
                        free(f);
                }
                (void) json_object_set_new(o, "manifests",
                                           json_integer((json_int_t) idx->n_manifests));
                (void) json_object_set_new(o, "platforms", platforms);
                r = kiln_content_index_serialize(idx, &out);
        } else if (doc->config) {
                const struct kiln_content_config *c = doc->config;
                char *f = kiln_content_platform_format(&c->platform);
                size_t n = 0;

                while (c->diff_ids[n])
                        n++;
                (void) json_object_set_new(o, "platform", json_string(f));
                (void) json_object_set_new(o, "diff_ids", json_integer((json_int_t) n));
                free(f);
                r = kiln_content_config_serialize(c, &out);
        } else if (doc->descriptor) {
                (void) json_object_set_new(o, "target_media_type",
                                           json_string(doc->descriptor->media_type));
                r = kiln_content_descriptor_serialize(doc->descriptor, &out);
        } else {
                (void) json_object_set_new(o, "layout_version", json_string(doc->layout_version));
                r = 0;
        }
        if (r < 0) {
                fprintf(stderr, "serialise: %s\n", strerror(-r));
                json_decref(o);
                return 2;
        }
        (void) json_object_set_new(o, "roundtrip",
                                   json_boolean(doc->layout_version || same(&out, &in)));
        text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        if (!text)
                return 2;
        printf("%s\n", text);
        free(text);
        return 0;
}
