/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Descriptors, manifests and indexes (OCI and Docker schema2), validated as
 * image-spec's schema/ JSON files and containerd's images package require.
 */

#include <inttypes.h>

#include "content-internal.h"

#define ATTESTATION_TYPE_KEY   "vnd.docker.reference.type"
#define ATTESTATION_TYPE_VALUE "attestation-manifest"

/* ---- descriptors ---- */

void kiln_content_descriptor_release(struct kiln_content_descriptor *d)
{
        free(d->media_type);
        free(d->digest);
        strv_free(d->urls);
        kiln_content_annotations_release(&d->annotations);
        free(d->data);
        if (d->platform) {
                kiln_content_platform_release(d->platform);
                free(d->platform);
        }
        free(d->artifact_type);
        *d = (struct kiln_content_descriptor){ 0 };
}

struct kiln_content_descriptor *kiln_content_descriptor_free(struct kiln_content_descriptor *d)
{
        if (d) {
                kiln_content_descriptor_release(d);
                free(d);
        }
        return NULL;
}

static int b64_value(char ch)
{
        if (ch >= 'A' && ch <= 'Z')
                return ch - 'A';
        if (ch >= 'a' && ch <= 'z')
                return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9')
                return ch - '0' + 52;
        if (ch == '+')
                return 62;
        if (ch == '/')
                return 63;
        return -1;
}

/* Go's base64.StdEncoding.DecodeString: padded; '\r' and '\n' skipped. */
static int b64_decode(const char *s, unsigned char **ret, size_t *ret_len)
{
        size_t n = strlen(s), i, k = 0, o = 0;
        _cleanup_free_ unsigned char *out = kiln_xmalloc(n / 4 * 3 + 3);
        int quad[4], pad = 0;

        for (i = 0; i < n; i++) {
                int v;

                if (s[i] == '\r' || s[i] == '\n')
                        continue;
                if (pad > 0 && s[i] != '=')
                        return -EINVAL;
                if (s[i] == '=') {
                        if (k < 2)
                                return -EINVAL;
                        pad++;
                        quad[k++] = 0;
                } else {
                        v = b64_value(s[i]);
                        if (v < 0)
                                return -EINVAL;
                        quad[k++] = v;
                }
                if (k == 4) {
                        out[o++] = (unsigned char) (quad[0] << 2 | quad[1] >> 4);
                        if (pad < 2)
                                out[o++] = (unsigned char) ((quad[1] & 0xf) << 4 | quad[2] >> 2);
                        if (pad < 1)
                                out[o++] = (unsigned char) ((quad[2] & 0x3) << 6 | quad[3]);
                        k = 0;
                        if (pad)
                                break;
                }
        }
        /* Nothing but line breaks may follow the padding. */
        for (i++; i < n; i++)
                if (s[i] != '\r' && s[i] != '\n')
                        return -EINVAL;
        if (k != 0)
                return -EINVAL;
        *ret = TAKE_PTR(out);
        *ret_len = o;
        return 0;
}

static int check_media_type(struct doc_ctx *c, const char *path, const char *key, const char *mt)
{
        _cleanup_free_ char *q = NULL;

        if (!mt || media_type_valid(mt))
                return 0;
        q = quote_string(mt);
        return doc_error(c, path, key, "invalid media type %s: expected type/subtype", q);
}

int descriptor_from_json(struct doc_ctx *c, json_t *obj, const char *path,
                         struct kiln_content_descriptor *ret)
{
        _cleanup_(kiln_content_descriptor_release) struct kiln_content_descriptor d = { 0 };
        json_t *size, *platform;
        size_t i;
        int r;

        if (!json_is_object(obj)) {
                _cleanup_free_ char *got = json_brief(obj);

                return doc_error(c, path, NULL, "expected a descriptor object, got %s", got);
        }
        r = get_string(c, obj, path, "mediaType", true, &d.media_type);
        if (r >= 0)
                r = check_media_type(c, path, "mediaType", d.media_type);
        if (r >= 0)
                r = get_string(c, obj, path, "digest", true, &d.digest);
        if (r >= 0)
                r = digest_check_any(c, path, "digest", d.digest);
        if (r < 0)
                return r;

        size = json_object_get(obj, "size");
        if (!size || (json_is_null(size) && c->lenient_null))
                return doc_error(c, path, "size", "required field is missing");
        if (!json_is_integer(size) || json_integer_value(size) < 0) {
                _cleanup_free_ char *got = json_brief(size);

                return doc_error(c, path, "size", "expected an integer >= 0, got %s", got);
        }
        d.size = json_integer_value(size);

        r = get_strv(c, obj, path, "urls", false, &d.urls);
        for (i = 0; r >= 0 && d.urls && d.urls[i]; i++)
                if (!uri_valid(d.urls[i])) {
                        _cleanup_free_ char *p = path_key(path, "urls"),
                                            *q = quote_string(d.urls[i]);

                        return doc_error(c, p, NULL, "[%zu]: %s is not an absolute URI", i, q);
                }
        if (r >= 0)
                r = get_string_map(c, obj, path, "annotations", false, &d.annotations);
        if (r >= 0)
                r = get_string(c, obj, path, "data", false, &d.data);
        if (r < 0)
                return r;
        if (d.data) {
                _cleanup_free_ unsigned char *raw = NULL;
                size_t len;

                if (b64_decode(d.data, &raw, &len) < 0)
                        return doc_error(c, path, "data", "not standard base64 with padding");
                if ((int64_t) len != d.size)
                        return doc_error(c, path, "data", "holds %zu bytes but size is %" PRId64,
                                         len, d.size);
                if (startswith(d.digest, "sha256:")) {
                        char actual[KILN_CONTENT_DIGEST_SIZE];

                        kiln_content_digest_of(raw, len, actual);
                        if (!streq(actual, d.digest))
                                return doc_error(c, path, "data",
                                                 "content has digest %s, the descriptor says %s",
                                                 actual, d.digest);
                }
        }
        platform = json_object_get(obj, "platform");
        if (platform && !(json_is_null(platform) && c->lenient_null)) {
                _cleanup_free_ char *p = path_key(path, "platform");

                d.platform = kiln_xcalloc(1, sizeof(*d.platform));
                r = platform_from_json(c, platform, p, d.platform);
                if (r < 0)
                        return r;
        }
        r = get_string(c, obj, path, "artifactType", false, &d.artifact_type);
        if (r >= 0)
                r = check_media_type(c, path, "artifactType", d.artifact_type);
        if (r < 0)
                return r;
        *ret = d;
        d = (struct kiln_content_descriptor){ 0 };
        return 0;
}

json_t *descriptor_to_json(const struct kiln_content_descriptor *d)
{
        json_t *o = json_object();

        /* Go's ocispec.Descriptor field order, omitempty as there. */
        (void) json_object_set_new(o, "mediaType", json_string(d->media_type ? d->media_type : ""));
        (void) json_object_set_new(o, "digest", json_string(d->digest ? d->digest : ""));
        (void) json_object_set_new(o, "size", json_integer(d->size));
        if (d->urls && d->urls[0]) {
                json_t *a = json_array();
                size_t i;

                for (i = 0; d->urls[i]; i++)
                        (void) json_array_append_new(a, json_string(d->urls[i]));
                (void) json_object_set_new(o, "urls", a);
        }
        if (d->annotations.n)
                (void) json_object_set_new(o, "annotations", annotations_to_json(&d->annotations));
        if (d->data && *d->data)
                (void) json_object_set_new(o, "data", json_string(d->data));
        if (d->platform)
                (void) json_object_set_new(o, "platform", platform_to_json(d->platform));
        if (d->artifact_type && *d->artifact_type)
                (void) json_object_set_new(o, "artifactType", json_string(d->artifact_type));
        return o;
}

int kiln_content_descriptor_parse(const char *data, size_t n, struct kiln_content_descriptor **ret,
                                  struct kiln_error **err)
{
        struct doc_ctx c = { .noun = "content descriptor", .err = err };
        _cleanup_(kiln_content_descriptor_freep) struct kiln_content_descriptor *d = NULL;
        json_t *root = NULL;
        int r;

        r = doc_load(&c, data, n, KILN_CONTENT_LIMIT_MANIFEST, &root);
        if (r < 0)
                return r;
        d = kiln_xcalloc(1, sizeof(*d));
        r = descriptor_from_json(&c, root, "$", d);
        json_decref(root);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(d);
        return 0;
}

static int serialize(json_t *o, unsigned flags, struct kiln_buf *out)
{
        int r = kiln_content_json_dump(o, flags, out);

        json_decref(o);
        return r;
}

int kiln_content_descriptor_serialize(const struct kiln_content_descriptor *d, struct kiln_buf *out)
{
        return serialize(descriptor_to_json(d), KILN_CONTENT_JSON_INDENT, out);
}

/* ---- shared top-level fields ---- */

static int descriptor_array(struct doc_ctx *c, json_t *root, const char *key, size_t limit,
                            struct kiln_content_descriptor **ret, size_t *ret_n)
{
        json_t *a = json_object_get(root, key);
        struct kiln_content_descriptor *items;
        size_t i, n;
        int r;

        *ret = NULL;
        *ret_n = 0;
        if (!a || (json_is_null(a) && c->lenient_null))
                return doc_error(c, "$", key, "required field is missing");
        if (!json_is_array(a)) {
                _cleanup_free_ char *got = json_brief(a);

                return doc_error(c, "$", key, "expected an array of descriptors, got %s", got);
        }
        n = json_array_size(a);
        if (n > limit)
                return doc_error(c, "$", key, "%zu entries, more than the limit of %zu", n, limit);
        items = kiln_xcalloc(n ? n : 1, sizeof(*items));
        for (i = 0; i < n; i++) {
                _cleanup_free_ char *base = path_key("$", key), *p = path_index(base, i);

                r = descriptor_from_json(c, json_array_get(a, i), p, &items[i]);
                if (r < 0) {
                        while (i > 0)
                                kiln_content_descriptor_release(&items[--i]);
                        free(items);
                        return r;
                }
        }
        *ret = items;
        *ret_n = n;
        return 0;
}

static int optional_descriptor(struct doc_ctx *c, json_t *root, const char *key,
                               struct kiln_content_descriptor **ret)
{
        json_t *v = json_object_get(root, key);
        _cleanup_free_ char *p = NULL;
        struct kiln_content_descriptor *d;
        int r;

        *ret = NULL;
        if (!v || (json_is_null(v) && c->lenient_null))
                return 0;
        p = path_key("$", key);
        d = kiln_xcalloc(1, sizeof(*d));
        r = descriptor_from_json(c, v, p, d);
        if (r < 0) {
                free(d);
                return r;
        }
        *ret = d;
        return 0;
}

static int schema_version(struct doc_ctx *c, json_t *root)
{
        json_t *v = json_object_get(root, "schemaVersion");

        if (!v || (json_is_null(v) && c->lenient_null))
                return doc_error(c, "$", "schemaVersion", "required field is missing");
        if (json_is_integer(v) && json_integer_value(v) == 1 && json_object_get(root, "fsLayers"))
                return kiln_error_set(c->err, -EOPNOTSUPP,
                                      "%s: docker schema 1 manifests are not supported", c->noun);
        if (!json_is_integer(v) || json_integer_value(v) != 2) {
                _cleanup_free_ char *got = json_brief(v);

                return doc_error(c, "$", "schemaVersion", "expected 2, got %s", got);
        }
        return 0;
}

/*
 * Reads the document's own mediaType and settles which type it is: the
 * caller's (*mt, when has_hint) must agree with it; without a hint it must
 * be one of allowed. Updates the noun used in messages.
 */
static int settle_media_type(struct doc_ctx *c, json_t *root, bool has_hint,
                             const enum kiln_content_media_type *allowed, size_t n_allowed,
                             enum kiln_content_media_type *mt, bool *ret_set)
{
        _cleanup_free_ char *field = NULL, *q = NULL;
        enum kiln_content_media_type t;
        size_t i;
        int r;

        r = get_string(c, root, "$", "mediaType", false, &field);
        if (r < 0)
                return r;
        *ret_set = field != NULL;
        if (!field)
                return 0;
        r = check_media_type(c, "$", "mediaType", field);
        if (r < 0)
                return r;
        t = kiln_content_media_type_from_string(field);
        q = quote_string(field);
        if (has_hint) {
                if (t != *mt)
                        return doc_error(c, "$", "mediaType", "%s contradicts the expected %s", q,
                                         kiln_content_media_type_to_string(*mt));
                return 0;
        }
        for (i = 0; i < n_allowed; i++)
                if (t == allowed[i]) {
                        *mt = t;
                        c->noun = kiln_content_media_type_noun(t);
                        return 0;
                }
        return media_type_expect(field, allowed, n_allowed, c->noun, mt, c->err);
}

/* ---- manifests ---- */

static const enum kiln_content_media_type manifest_types[] = {
        KILN_CONTENT_MEDIA_OCI_MANIFEST,
        KILN_CONTENT_MEDIA_DOCKER_MANIFEST,
};

static const enum kiln_content_media_type index_types[] = {
        KILN_CONTENT_MEDIA_OCI_INDEX,
        KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST,
};

struct kiln_content_manifest *kiln_content_manifest_free(struct kiln_content_manifest *m)
{
        size_t i;

        if (!m)
                return NULL;
        free(m->artifact_type);
        kiln_content_descriptor_release(&m->config);
        for (i = 0; i < m->n_layers; i++)
                kiln_content_descriptor_release(&m->layers[i]);
        free(m->layers);
        kiln_content_descriptor_free(m->subject);
        kiln_content_annotations_release(&m->annotations);
        free(m);
        return NULL;
}

static int manifest_from_root(struct doc_ctx *c, json_t *root, bool has_hint,
                              enum kiln_content_media_type mt, struct kiln_content_manifest **ret)
{
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        json_t *config;
        int r;

        m = kiln_xcalloc(1, sizeof(*m));
        c->noun = kiln_content_media_type_noun(mt);
        c->lenient_null = mt == KILN_CONTENT_MEDIA_DOCKER_MANIFEST;
        r = settle_media_type(c, root, has_hint, manifest_types, ELEMENTSOF(manifest_types), &mt,
                              &m->media_type_set);
        if (r < 0)
                return r;
        m->media_type = mt;
        c->noun = kiln_content_media_type_noun(mt);
        c->lenient_null = mt == KILN_CONTENT_MEDIA_DOCKER_MANIFEST;

        /* containerd's validateMediaType: an index served as a manifest is
         * refused before it is misread. */
        if (json_object_get(root, "manifests"))
                return doc_error(c, "$", "manifests", "expected a manifest, found an index field");
        r = schema_version(c, root);
        if (r < 0)
                return r;
        r = get_string(c, root, "$", "artifactType", false, &m->artifact_type);
        if (r >= 0)
                r = check_media_type(c, "$", "artifactType", m->artifact_type);
        if (r < 0)
                return r;
        config = json_object_get(root, "config");
        if (!config || (json_is_null(config) && c->lenient_null))
                return doc_error(c, "$", "config", "required field is missing");
        r = descriptor_from_json(c, config, "$.config", &m->config);
        if (r >= 0)
                r = descriptor_array(c, root, "layers", KILN_CONTENT_LIMIT_LAYERS, &m->layers,
                                     &m->n_layers);
        if (r >= 0)
                r = optional_descriptor(c, root, "subject", &m->subject);
        if (r >= 0)
                r = get_string_map(c, root, "$", "annotations", false, &m->annotations);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

int kiln_content_manifest_parse(const char *data, size_t n, const char *media_type,
                                struct kiln_content_manifest **ret, struct kiln_error **err)
{
        enum kiln_content_media_type mt = KILN_CONTENT_MEDIA_OCI_MANIFEST;
        struct doc_ctx c = { .err = err };
        json_t *root = NULL;
        int r;

        r = media_type_expect(media_type, manifest_types, ELEMENTSOF(manifest_types),
                              "parse manifest", &mt, err);
        if (r < 0)
                return r;
        c.noun = kiln_content_media_type_noun(mt);
        r = doc_load(&c, data, n, KILN_CONTENT_LIMIT_MANIFEST, &root);
        if (r < 0)
                return r;
        r = manifest_from_root(&c, root, media_type != NULL, mt, ret);
        json_decref(root);
        return r;
}

static int list_types(struct kiln_buf *b, const char *const *types, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++)
                (void) kiln_buf_printf(b, "%s%s", i ? ", " : "", types[i]);
        return 0;
}

int kiln_content_manifest_check_image(const struct kiln_content_manifest *m,
                                      struct kiln_error **err)
{
        static const char *const configs[] = { KILN_CONTENT_MT_OCI_CONFIG,
                                               KILN_CONTENT_MT_DOCKER_CONFIG };
        static const char *const layers[] = {
                KILN_CONTENT_MT_OCI_LAYER,         KILN_CONTENT_MT_OCI_LAYER_GZIP,
                KILN_CONTENT_MT_OCI_LAYER_ZSTD,    KILN_CONTENT_MT_DOCKER_LAYER,
                KILN_CONTENT_MT_DOCKER_LAYER_GZIP, KILN_CONTENT_MT_DOCKER_LAYER_ZSTD,
        };
        _cleanup_(kiln_buf_release) struct kiln_buf list = KILN_BUF_INIT(4096);
        const char *noun = kiln_content_media_type_noun(m->media_type);
        size_t i;

        if (kiln_content_media_type_kind(m->config.media_type) != KILN_CONTENT_KIND_CONFIG) {
                _cleanup_free_ char *q = quote_string(m->config.media_type);

                list_types(&list, configs, ELEMENTSOF(configs));
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "%s: not a container image: $.config.mediaType %s is not an "
                                      "image config; supported: %s",
                                      noun, q, list.data);
        }
        for (i = 0; i < m->n_layers; i++)
                if (kiln_content_media_type_kind(m->layers[i].media_type) !=
                    KILN_CONTENT_KIND_LAYER) {
                        _cleanup_free_ char *q = quote_string(m->layers[i].media_type);

                        list_types(&list, layers, ELEMENTSOF(layers));
                        return kiln_error_set(err, -EOPNOTSUPP,
                                              "%s: not a container image: $.layers[%zu].mediaType "
                                              "%s is not a layer type; supported: %s",
                                              noun, i, q, list.data);
                }
        return 0;
}

static json_t *descriptors_to_json(const struct kiln_content_descriptor *d, size_t n)
{
        json_t *a = json_array();
        size_t i;

        for (i = 0; i < n; i++)
                (void) json_array_append_new(a, descriptor_to_json(&d[i]));
        return a;
}

int kiln_content_manifest_serialize(const struct kiln_content_manifest *m, struct kiln_buf *out)
{
        json_t *o = json_object();

        /* Go's ocispec.Manifest field order: BuildKit marshals Docker
         * schema2 manifests through the same struct. */
        (void) json_object_set_new(o, "schemaVersion", json_integer(2));
        if (m->media_type_set || m->media_type == KILN_CONTENT_MEDIA_DOCKER_MANIFEST)
                (void) json_object_set_new(
                        o, "mediaType",
                        json_string(kiln_content_media_type_to_string(m->media_type)));
        if (m->artifact_type && *m->artifact_type)
                (void) json_object_set_new(o, "artifactType", json_string(m->artifact_type));
        (void) json_object_set_new(o, "config", descriptor_to_json(&m->config));
        (void) json_object_set_new(o, "layers", descriptors_to_json(m->layers, m->n_layers));
        if (m->subject)
                (void) json_object_set_new(o, "subject", descriptor_to_json(m->subject));
        if (m->annotations.n)
                (void) json_object_set_new(o, "annotations", annotations_to_json(&m->annotations));
        return serialize(o, KILN_CONTENT_JSON_INDENT, out);
}

/* ---- indexes ---- */

struct kiln_content_index *kiln_content_index_free(struct kiln_content_index *idx)
{
        size_t i;

        if (!idx)
                return NULL;
        free(idx->artifact_type);
        for (i = 0; i < idx->n_manifests; i++)
                kiln_content_descriptor_release(&idx->manifests[i]);
        free(idx->manifests);
        kiln_content_descriptor_free(idx->subject);
        kiln_content_annotations_release(&idx->annotations);
        free(idx);
        return NULL;
}

static int index_from_root(struct doc_ctx *c, json_t *root, bool has_hint,
                           enum kiln_content_media_type mt, struct kiln_content_index **ret)
{
        _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;
        int r;

        idx = kiln_xcalloc(1, sizeof(*idx));
        c->noun = kiln_content_media_type_noun(mt);
        c->lenient_null = mt == KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST;
        r = settle_media_type(c, root, has_hint, index_types, ELEMENTSOF(index_types), &mt,
                              &idx->media_type_set);
        if (r < 0)
                return r;
        idx->media_type = mt;
        c->noun = kiln_content_media_type_noun(mt);
        c->lenient_null = mt == KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST;

        if (json_object_get(root, "config") || json_object_get(root, "layers"))
                return doc_error(c, "$", json_object_get(root, "config") ? "config" : "layers",
                                 "expected an index, found a manifest field");
        r = schema_version(c, root);
        if (r < 0)
                return r;
        r = get_string(c, root, "$", "artifactType", false, &idx->artifact_type);
        if (r >= 0)
                r = check_media_type(c, "$", "artifactType", idx->artifact_type);
        if (r >= 0)
                r = descriptor_array(c, root, "manifests", KILN_CONTENT_LIMIT_INDEX_ENTRIES,
                                     &idx->manifests, &idx->n_manifests);
        if (r >= 0)
                r = optional_descriptor(c, root, "subject", &idx->subject);
        if (r >= 0)
                r = get_string_map(c, root, "$", "annotations", false, &idx->annotations);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(idx);
        return 0;
}

int kiln_content_index_parse(const char *data, size_t n, const char *media_type,
                             struct kiln_content_index **ret, struct kiln_error **err)
{
        enum kiln_content_media_type mt = KILN_CONTENT_MEDIA_OCI_INDEX;
        struct doc_ctx c = { .err = err };
        json_t *root = NULL;
        int r;

        r = media_type_expect(media_type, index_types, ELEMENTSOF(index_types), "parse index", &mt,
                              err);
        if (r < 0)
                return r;
        c.noun = kiln_content_media_type_noun(mt);
        r = doc_load(&c, data, n, KILN_CONTENT_LIMIT_MANIFEST, &root);
        if (r < 0)
                return r;
        r = index_from_root(&c, root, media_type != NULL, mt, ret);
        json_decref(root);
        return r;
}

int kiln_content_index_serialize(const struct kiln_content_index *idx, struct kiln_buf *out)
{
        json_t *o = json_object();

        (void) json_object_set_new(o, "schemaVersion", json_integer(2));
        if (idx->media_type_set || idx->media_type == KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST)
                (void) json_object_set_new(
                        o, "mediaType",
                        json_string(kiln_content_media_type_to_string(idx->media_type)));
        if (idx->artifact_type && *idx->artifact_type)
                (void) json_object_set_new(o, "artifactType", json_string(idx->artifact_type));
        (void) json_object_set_new(o, "manifests",
                                   descriptors_to_json(idx->manifests, idx->n_manifests));
        if (idx->subject)
                (void) json_object_set_new(o, "subject", descriptor_to_json(idx->subject));
        if (idx->annotations.n)
                (void) json_object_set_new(o, "annotations",
                                           annotations_to_json(&idx->annotations));
        return serialize(o, KILN_CONTENT_JSON_INDENT, out);
}

static bool is_attestation(const struct kiln_content_descriptor *d)
{
        return streq_ptr(kiln_content_annotations_get(&d->annotations, ATTESTATION_TYPE_KEY),
                         ATTESTATION_TYPE_VALUE);
}

int kiln_content_index_select(const struct kiln_content_index *idx,
                              const struct kiln_content_platform *want,
                              const struct kiln_content_descriptor **ret, struct kiln_error **err)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform def = { 0 };
        _cleanup_(kiln_buf_release) struct kiln_buf avail = KILN_BUF_INIT(64u << 10);
        const struct kiln_content_descriptor *best = NULL, *unplatformed = NULL;
        _cleanup_free_ char *wanted = NULL;
        size_t i, best_features = 0, n_avail = 0, skipped = 0;
        int best_rank = -1;

        if (!want) {
                kiln_content_platform_default(&def);
                want = &def;
        }
        for (i = 0; i < idx->n_manifests; i++) {
                const struct kiln_content_descriptor *d = &idx->manifests[i];
                enum kiln_content_kind kind = kiln_content_media_type_kind(d->media_type);
                size_t nf;
                int rank;

                if ((kind != KILN_CONTENT_KIND_MANIFEST && kind != KILN_CONTENT_KIND_INDEX) ||
                    is_attestation(d)) {
                        skipped++;
                        continue;
                }
                if (!d->platform) {
                        if (!unplatformed)
                                unplatformed = d;
                        continue;
                }
                {
                        _cleanup_free_ char *f = kiln_content_platform_format(d->platform);

                        /* The list is for a message: past its cap it ends. */
                        if (kiln_buf_printf(&avail, "%s%s", n_avail ? ", " : "", f) >= 0)
                                n_avail++;
                }
                rank = kiln_content_platform_rank(want, d->platform);
                if (rank < 0)
                        continue;
                /* With features asked for, the entry using most of them;
                 * without, the plainest (containerd would not match a
                 * featured entry at all then). */
                nf = strv_length(d->platform->os_features);
                if (!best || rank < best_rank ||
                    (rank == best_rank &&
                     (want->os_features && want->os_features[0] ? nf > best_features
                                                                : nf < best_features))) {
                        best = d;
                        best_rank = rank;
                        best_features = nf;
                }
        }
        if (best) {
                *ret = best;
                return 0;
        }
        if (unplatformed) {
                *ret = unplatformed;
                return 1;
        }
        wanted = kiln_content_platform_format(want);
        if (n_avail == 0)
                return kiln_error_set(err, -ENOENT,
                                      "no match for platform %s in %s: it lists no platforms (%zu "
                                      "entries skipped: attestations or other artifacts)",
                                      wanted, kiln_content_media_type_noun(idx->media_type),
                                      skipped);
        return kiln_error_set(err, -ENOENT, "no match for platform %s in %s; available: %s", wanted,
                              kiln_content_media_type_noun(idx->media_type), avail.data);
}

/* ---- any document ---- */

struct kiln_content_document *kiln_content_document_free(struct kiln_content_document *doc)
{
        if (!doc)
                return NULL;
        kiln_content_manifest_free(doc->manifest);
        kiln_content_index_free(doc->index);
        kiln_content_config_free(doc->config);
        kiln_content_descriptor_free(doc->descriptor);
        free(doc->layout_version);
        free(doc);
        return NULL;
}

static int layout_from_root(struct doc_ctx *c, json_t *root, char **ret)
{
        _cleanup_free_ char *v = NULL;
        int r;

        r = get_string(c, root, "$", "imageLayoutVersion", true, &v);
        if (r < 0)
                return r;
        if (!streq(v, "1.0.0")) {
                _cleanup_free_ char *q = quote_string(v);

                return doc_error(c, "$", "imageLayoutVersion", "expected '1.0.0', got %s", q);
        }
        *ret = TAKE_PTR(v);
        return 0;
}

int kiln_content_document_parse(const char *data, size_t n, const char *media_type,
                                struct kiln_content_document **ret, struct kiln_error **err)
{
        static const enum kiln_content_media_type all[] = {
                KILN_CONTENT_MEDIA_OCI_MANIFEST,         KILN_CONTENT_MEDIA_OCI_INDEX,
                KILN_CONTENT_MEDIA_OCI_CONFIG,           KILN_CONTENT_MEDIA_DOCKER_MANIFEST,
                KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST, KILN_CONTENT_MEDIA_DOCKER_CONFIG,
                KILN_CONTENT_MEDIA_OCI_DESCRIPTOR,       KILN_CONTENT_MEDIA_OCI_LAYOUT,
        };
        static const enum kiln_content_media_type self_describing[] = {
                KILN_CONTENT_MEDIA_OCI_MANIFEST,
                KILN_CONTENT_MEDIA_OCI_INDEX,
                KILN_CONTENT_MEDIA_DOCKER_MANIFEST,
                KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST,
        };
        _cleanup_(kiln_content_document_freep) struct kiln_content_document *doc = NULL;
        enum kiln_content_media_type mt = _KILN_CONTENT_MEDIA_INVALID;
        struct doc_ctx c = { .noun = "document", .err = err };
        size_t limit;
        json_t *root = NULL;
        int r;

        r = media_type_expect(media_type, all, ELEMENTSOF(all), "parse document", &mt, err);
        if (r < 0)
                return r;
        if (mt >= 0)
                c.noun = kiln_content_media_type_noun(mt);
        limit = mt == KILN_CONTENT_MEDIA_OCI_CONFIG || mt == KILN_CONTENT_MEDIA_DOCKER_CONFIG ||
                                mt < 0
                        ? KILN_CONTENT_LIMIT_CONFIG
                        : KILN_CONTENT_LIMIT_MANIFEST;
        r = doc_load(&c, data, n, limit, &root);
        if (r < 0)
                return r;
        if (mt < 0) {
                /* Only manifests and indexes say what they are. */
                json_t *field = json_object_get(root, "mediaType");

                if (json_is_string(field))
                        r = media_type_expect(json_string_value(field), self_describing,
                                              ELEMENTSOF(self_describing), "parse document", &mt,
                                              err);
                else if (json_object_get(root, "manifests"))
                        mt = KILN_CONTENT_MEDIA_OCI_INDEX;
                else if (json_object_get(root, "config") || json_object_get(root, "layers"))
                        mt = KILN_CONTENT_MEDIA_OCI_MANIFEST;
                else
                        r = kiln_error_set(err, -EOPNOTSUPP,
                                           "parse document: no mediaType, and neither manifests "
                                           "nor config and layers: cannot tell its kind");
                if (r >= 0 && n > KILN_CONTENT_LIMIT_MANIFEST)
                        r = kiln_error_set(
                                err, -E2BIG, "%s: document is %zu bytes, more than the limit of %u",
                                kiln_content_media_type_noun(mt), n, KILN_CONTENT_LIMIT_MANIFEST);
                if (r < 0) {
                        json_decref(root);
                        return r;
                }
        }
        doc = kiln_xcalloc(1, sizeof(*doc));
        doc->media_type = mt;
        c.noun = kiln_content_media_type_noun(mt);
        switch (mt) {
        case KILN_CONTENT_MEDIA_OCI_MANIFEST:
        case KILN_CONTENT_MEDIA_DOCKER_MANIFEST:
                r = manifest_from_root(&c, root, true, mt, &doc->manifest);
                break;
        case KILN_CONTENT_MEDIA_OCI_INDEX:
        case KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST:
                r = index_from_root(&c, root, true, mt, &doc->index);
                break;
        case KILN_CONTENT_MEDIA_OCI_CONFIG:
        case KILN_CONTENT_MEDIA_DOCKER_CONFIG:
                r = config_from_root(&c, root, mt, &doc->config);
                break;
        case KILN_CONTENT_MEDIA_OCI_DESCRIPTOR:
                doc->descriptor = kiln_xcalloc(1, sizeof(*doc->descriptor));
                r = descriptor_from_json(&c, root, "$", doc->descriptor);
                break;
        case KILN_CONTENT_MEDIA_OCI_LAYOUT:
                r = layout_from_root(&c, root, &doc->layout_version);
                break;
        case _KILN_CONTENT_MEDIA_MAX:
        case _KILN_CONTENT_MEDIA_INVALID:
                r = kiln_error_set(err, -EINVAL, "parse document: no media type");
                break;
        }
        json_decref(root);
        if (r < 0)
                return r;
        kiln_content_digest_of(data, n, doc->digest);
        doc->size = n;
        *ret = TAKE_PTR(doc);
        return 0;
}
