/* SPDX-License-Identifier: Apache-2.0 */
/* Media types and digests. */

#include "base/sha256.h"
#include "content-internal.h"

static const char *const media_types[_KILN_CONTENT_MEDIA_MAX] = {
        [KILN_CONTENT_MEDIA_OCI_MANIFEST] = KILN_CONTENT_MT_OCI_MANIFEST,
        [KILN_CONTENT_MEDIA_OCI_INDEX] = KILN_CONTENT_MT_OCI_INDEX,
        [KILN_CONTENT_MEDIA_OCI_CONFIG] = KILN_CONTENT_MT_OCI_CONFIG,
        [KILN_CONTENT_MEDIA_DOCKER_MANIFEST] = KILN_CONTENT_MT_DOCKER_MANIFEST,
        [KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST] = KILN_CONTENT_MT_DOCKER_MANIFEST_LIST,
        [KILN_CONTENT_MEDIA_DOCKER_CONFIG] = KILN_CONTENT_MT_DOCKER_CONFIG,
        [KILN_CONTENT_MEDIA_OCI_DESCRIPTOR] = KILN_CONTENT_MT_OCI_DESCRIPTOR,
        [KILN_CONTENT_MEDIA_OCI_LAYOUT] = KILN_CONTENT_MT_OCI_LAYOUT,
};

static const char *const media_nouns[_KILN_CONTENT_MEDIA_MAX] = {
        [KILN_CONTENT_MEDIA_OCI_MANIFEST] = "oci image manifest",
        [KILN_CONTENT_MEDIA_OCI_INDEX] = "oci image index",
        [KILN_CONTENT_MEDIA_OCI_CONFIG] = "oci image config",
        [KILN_CONTENT_MEDIA_DOCKER_MANIFEST] = "docker manifest",
        [KILN_CONTENT_MEDIA_DOCKER_MANIFEST_LIST] = "docker manifest list",
        [KILN_CONTENT_MEDIA_DOCKER_CONFIG] = "docker image config",
        [KILN_CONTENT_MEDIA_OCI_DESCRIPTOR] = "content descriptor",
        [KILN_CONTENT_MEDIA_OCI_LAYOUT] = "oci layout header",
};

const char *kiln_content_media_type_to_string(enum kiln_content_media_type t)
{
        if (t < 0 || t >= _KILN_CONTENT_MEDIA_MAX)
                return NULL;
        return media_types[t];
}

enum kiln_content_media_type kiln_content_media_type_from_string(const char *s)
{
        int i;

        if (!s)
                return _KILN_CONTENT_MEDIA_INVALID;
        for (i = 0; i < _KILN_CONTENT_MEDIA_MAX; i++)
                if (streq(s, media_types[i]))
                        return (enum kiln_content_media_type) i;
        return _KILN_CONTENT_MEDIA_INVALID;
}

const char *kiln_content_media_type_noun(enum kiln_content_media_type t)
{
        if (t < 0 || t >= _KILN_CONTENT_MEDIA_MAX)
                return "document";
        return media_nouns[t];
}

enum kiln_content_kind kiln_content_media_type_kind(const char *mt)
{
        if (!mt)
                return _KILN_CONTENT_KIND_INVALID;
        if (streq(mt, KILN_CONTENT_MT_OCI_MANIFEST) || streq(mt, KILN_CONTENT_MT_DOCKER_MANIFEST))
                return KILN_CONTENT_KIND_MANIFEST;
        if (streq(mt, KILN_CONTENT_MT_OCI_INDEX) || streq(mt, KILN_CONTENT_MT_DOCKER_MANIFEST_LIST))
                return KILN_CONTENT_KIND_INDEX;
        if (streq(mt, KILN_CONTENT_MT_OCI_CONFIG) || streq(mt, KILN_CONTENT_MT_DOCKER_CONFIG))
                return KILN_CONTENT_KIND_CONFIG;
        if (kiln_content_layer_compression(mt) >= 0)
                return KILN_CONTENT_KIND_LAYER;
        return KILN_CONTENT_KIND_OTHER;
}

enum kiln_content_compression kiln_content_layer_compression(const char *mt)
{
        /* containerd's images.IsLayerType and DiffCompression; a layer type
         * wrapped in another suffix ("+encrypted") is not one kiln can read. */
        static const struct {
                const char *mt;
                enum kiln_content_compression c;
        } layers[] = {
                { KILN_CONTENT_MT_OCI_LAYER, KILN_CONTENT_COMPRESSION_NONE },
                { KILN_CONTENT_MT_OCI_LAYER_GZIP, KILN_CONTENT_COMPRESSION_GZIP },
                { KILN_CONTENT_MT_OCI_LAYER_ZSTD, KILN_CONTENT_COMPRESSION_ZSTD },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  KILN_CONTENT_COMPRESSION_NONE },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  KILN_CONTENT_COMPRESSION_GZIP },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                  KILN_CONTENT_COMPRESSION_ZSTD },
                { KILN_CONTENT_MT_DOCKER_LAYER, KILN_CONTENT_COMPRESSION_UNKNOWN },
                { KILN_CONTENT_MT_DOCKER_LAYER_GZIP, KILN_CONTENT_COMPRESSION_GZIP },
                { KILN_CONTENT_MT_DOCKER_LAYER_ZSTD, KILN_CONTENT_COMPRESSION_ZSTD },
                { "application/vnd.docker.image.rootfs.foreign.diff.tar",
                  KILN_CONTENT_COMPRESSION_UNKNOWN },
                { "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  KILN_CONTENT_COMPRESSION_GZIP },
        };
        size_t i;

        if (!mt)
                return _KILN_CONTENT_COMPRESSION_INVALID;
        for (i = 0; i < ELEMENTSOF(layers); i++)
                if (streq(mt, layers[i].mt))
                        return layers[i].c;
        return _KILN_CONTENT_COMPRESSION_INVALID;
}

int media_type_expect(const char *hint, const enum kiln_content_media_type *allowed,
                      size_t n_allowed, const char *what, enum kiln_content_media_type *ret,
                      struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf list = KILN_BUF_INIT(4096);
        enum kiln_content_media_type t;
        const char *why = "unsupported";
        size_t i;

        if (!hint)
                return 0;
        t = kiln_content_media_type_from_string(hint);
        for (i = 0; i < n_allowed; i++)
                if (t == allowed[i]) {
                        *ret = t;
                        return 0;
                }
        for (i = 0; i < n_allowed; i++)
                (void) kiln_buf_printf(&list, "%s%s", i ? ", " : "",
                                       kiln_content_media_type_to_string(allowed[i]));
        if (startswith(hint, "application/vnd.docker.distribution.manifest.v1"))
                why = "docker schema 1 manifests are not supported";
        else if (t >= 0)
                why = "not a document of this kind";
        else
                why = "unknown media type";
        {
                _cleanup_free_ char *q = quote_string(hint);

                return kiln_error_set(err, -EOPNOTSUPP, "%s: media type %s: %s; supported: %s",
                                      what, q, why, list.data);
        }
}

int kiln_content_digest_check(const char *s, struct kiln_error **err)
{
        _cleanup_free_ char *q = NULL;
        const char *colon;
        size_t i, n;

        if (!s)
                return kiln_error_set(err, -EINVAL, "invalid digest: none given");
        colon = strchr(s, ':');
        n = strlen(s);
        if (colon && colon != s) {
                size_t alg = (size_t) (colon - s);
                bool word = alg <= 16;

                for (i = 0; word && i < alg; i++)
                        word = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9');
                if (word && !(alg == 6 && strncmp(s, "sha256", 6) == 0)) {
                        q = quote_string(s);
                        return kiln_error_set(err, -EOPNOTSUPP,
                                              "invalid digest %s: unsupported algorithm '%.*s', "
                                              "only sha256 is supported",
                                              q, (int) alg, s);
                }
        }
        if (n == KILN_CONTENT_DIGEST_LEN && startswith(s, "sha256:")) {
                for (i = 7; i < n; i++)
                        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                                break;
                if (i == n)
                        return 0;
        }
        q = quote_string(s);
        return kiln_error_set(err, -EINVAL,
                              "invalid digest %s: expected 'sha256:' and 64 lowercase hex digits",
                              q);
}

void kiln_content_digest_of(const void *p, size_t n, char out[static KILN_CONTENT_DIGEST_SIZE])
{
        char hex[KILN_SHA256_HEX_LEN + 1];

        kiln_sha256_hex(p, n, hex);
        memcpy(out, "sha256:", 7);
        memcpy(out + 7, hex, sizeof(hex));
}
