/* SPDX-License-Identifier: Apache-2.0 */
#include "export/archive.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "content/content.h"
#include "content/ref.h"

/* Bytes of index.json and manifest.json: a descriptor per name, a path
 * per layer. */
#define ARCHIVE_LIMIT_DOCUMENT (4u << 20)

enum record_kind {
        RECORD_DIR,
        RECORD_BLOB,
        RECORD_DATA,
};

struct record {
        char *name;
        enum record_kind kind;
        uint32_t mode;
        const char *digest; /* RECORD_BLOB: borrowed from the manifest */
        int64_t size;
        char *data; /* RECORD_DATA */
        size_t len;
};

struct records {
        struct record *v;
        size_t n;
};

static void records_release(struct records *rs)
{
        for (size_t i = 0; i < rs->n; i++) {
                free(rs->v[i].name);
                free(rs->v[i].data);
        }
        free(rs->v);
        *rs = (struct records){ 0 };
}

static struct record *records_add(struct records *rs, char *name, enum record_kind kind,
                                  uint32_t mode)
{
        struct record *r;

        rs->v = kiln_xreallocarray(rs->v, rs->n + 1, sizeof(*rs->v));
        r = &rs->v[rs->n++];
        *r = (struct record){ .name = name, .kind = kind, .mode = mode };
        return r;
}

static void records_add_blob(struct records *rs, const char *digest, int64_t size)
{
        struct record *r =
                records_add(rs, kiln_xasprintf("blobs/sha256/%s", digest + 7), RECORD_BLOB, 0444);

        r->digest = digest;
        r->size = size;
}

static int records_add_json(struct records *rs, const char *name, uint32_t mode, const json_t *v,
                            struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(ARCHIVE_LIMIT_DOCUMENT);
        struct record *r;

        if (kiln_content_json_dump(v, 0, &b) < 0) {
                kiln_buf_release(&b);
                return kiln_error_set(err, -E2BIG, "archive '%s': larger than %u bytes", name,
                                      ARCHIVE_LIMIT_DOCUMENT);
        }
        r = records_add(rs, kiln_xstrdup(name), RECORD_DATA, mode);
        r->len = b.len;
        r->data = kiln_buf_steal(&b);
        return 0;
}

static int record_cmp(const void *a, const void *b)
{
        return strcmp(((const struct record *) a)->name, ((const struct record *) b)->name);
}

/* A name of the archive: its canonical form (docker.io/library/x:latest),
 * the OCI ref name containerd derives from it (the tag, "tag@digest", or
 * the whole name for a digest alone) and Docker's familiar form. */
struct archive_name {
        char *full;
        char *ref_name;
        char *familiar;
};

static void names_release(struct archive_name *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(v[i].full);
                free(v[i].ref_name);
                free(v[i].familiar);
        }
        free(v);
}

static int names_parse(const char *const *names, size_t n, struct archive_name **ret,
                       struct kiln_error **err)
{
        struct archive_name *v;

        if (n > KILN_EXPORT_LIMIT_ARCHIVE_NAMES)
                return kiln_error_set(err, -E2BIG, "archive: %zu names, at most %d", n,
                                      KILN_EXPORT_LIMIT_ARCHIVE_NAMES);
        v = kiln_xcalloc(n + 1, sizeof(*v));
        for (size_t i = 0; i < n; i++) {
                _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
                int r = kiln_content_ref_parse(names[i], &ref, err);
                if (r < 0) {
                        names_release(v, n);
                        return kiln_error_wrap(err, "failed to parse %s", names[i]);
                }
                v[i].full = kiln_content_ref_canonical(ref);
                if (ref->tag && ref->digest)
                        v[i].ref_name = kiln_xasprintf("%s@%s", ref->tag, ref->digest);
                else if (ref->tag)
                        v[i].ref_name = kiln_xstrdup(ref->tag);
                else
                        v[i].ref_name = kiln_xstrdup(v[i].full);
                v[i].familiar = kiln_content_ref_familiar(ref);
        }
        *ret = v;
        return 0;
}

/* The platform of the image, from its config, as ocispec.Platform
 * marshals. */
static json_t *platform_json(const struct kiln_content_config *cfg)
{
        const struct kiln_content_platform *p = &cfg->platform;
        json_t *o = json_object();

        json_object_set_new(o, "architecture", json_string(p->architecture ? p->architecture : ""));
        json_object_set_new(o, "os", json_string(p->os ? p->os : ""));
        if (p->os_version && *p->os_version)
                json_object_set_new(o, "os.version", json_string(p->os_version));
        if (p->os_features && p->os_features[0]) {
                json_t *a = json_array();
                for (char **f = p->os_features; *f; f++)
                        json_array_append_new(a, json_string(*f));
                json_object_set_new(o, "os.features", a);
        }
        if (p->variant && *p->variant)
                json_object_set_new(o, "variant", json_string(p->variant));
        return o;
}

static json_t *index_descriptor(const char *mt, const char *digest, int64_t size,
                                const char *created, const struct archive_name *name,
                                const struct kiln_content_config *cfg)
{
        json_t *d = json_object(), *a = json_object();

        json_object_set_new(d, "mediaType", json_string(mt));
        json_object_set_new(d, "digest", json_string(digest));
        json_object_set_new(d, "size", json_integer(size));
        /* Sorted keys, as Go marshals the map. */
        if (name)
                json_object_set_new(a, "io.containerd.image.name", json_string(name->full));
        json_object_set_new(a, "org.opencontainers.image.created", json_string(created));
        if (name)
                json_object_set_new(a, "org.opencontainers.image.ref.name",
                                    json_string(name->ref_name));
        json_object_set_new(d, "annotations", a);
        json_object_set_new(d, "platform", platform_json(cfg));
        return d;
}

static int write_records(struct kiln_content_store *cs, struct records *rs, kiln_export_write_fn w,
                         void *userdata, struct kiln_error **err)
{
        _cleanup_(kiln_export_tar_writer_freep) struct kiln_export_tar_writer *tw = NULL;
        const char *last = NULL;
        int r;

        qsort_safe(rs->v, rs->n, sizeof(*rs->v), record_cmp);
        tw = kiln_export_tar_writer_new(w, userdata, NULL);
        for (size_t i = 0; i < rs->n; i++) {
                const struct record *rec = &rs->v[i];
                struct kiln_export_tar_meta m = { .mode = rec->mode };

                if (last && streq(last, rec->name))
                        continue; /* a blob the manifest names twice */
                last = rec->name;
                switch (rec->kind) {
                case RECORD_DIR:
                        r = kiln_export_tar_writer_add_dir(tw, rec->name, &m, err);
                        break;
                case RECORD_DATA:
                        r = kiln_export_tar_writer_add_file_data(tw, rec->name, &m, rec->data,
                                                                 rec->len, err);
                        break;
                case RECORD_BLOB: {
                        _cleanup_close_ int fd = -1;
                        struct stat st;

                        r = kiln_content_store_open_blob(cs, rec->digest, &fd, err);
                        if (r < 0)
                                break;
                        if (fstat(fd, &st) < 0) {
                                r = kiln_error_set(err, -errno, "stat blob %s: %s", rec->digest,
                                                   strerror(errno));
                                break;
                        }
                        if (st.st_size != rec->size) {
                                r = kiln_error_set(err, -EBADMSG,
                                                   "blob %s: %lld bytes, its descriptor says %lld",
                                                   rec->digest, (long long) st.st_size,
                                                   (long long) rec->size);
                                break;
                        }
                        r = kiln_export_tar_writer_add_file_fd(tw, rec->name, &m, fd,
                                                               (uint64_t) rec->size, err);
                        break;
                }
                default:
                        r = kiln_error_set(err, -EINVAL, "archive: bad record");
                        break;
                }
                if (r < 0)
                        return r;
        }
        return kiln_export_tar_writer_finish(tw, err);
}

/* Checks that a blob is in the store with the size its descriptor gives. */
static int blob_check(struct kiln_content_store *cs, const char *what, const char *digest,
                      int64_t size, struct kiln_error **err)
{
        uint64_t have;
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return kiln_error_wrap(err, "%s", what);
        r = kiln_content_store_size(cs, digest, &have, err);
        if (r == -ENOENT)
                return kiln_error_set(err, r, "%s %s: not in the content store", what, digest);
        if (r < 0)
                return kiln_error_wrap(err, "%s %s", what, digest);
        if (size < 0 || have != (uint64_t) size)
                return kiln_error_set(err, -EBADMSG,
                                      "%s %s: %llu bytes in the store, %lld expected", what, digest,
                                      (unsigned long long) have, (long long) size);
        return 0;
}

static int export_archive(struct kiln_content_store *cs, const char *manifest_digest,
                          const char *media_type, int64_t size, const char *const *names,
                          size_t n_names, int64_t created, bool docker, kiln_export_write_fn w,
                          void *userdata, struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf mb = KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        _cleanup_(kiln_buf_release) struct kiln_buf cb = KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG);
        _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *cfg = NULL;
        _cleanup_(records_release) struct records rs = { 0 };
        struct archive_name *nv = NULL;
        json_t *index = NULL, *manifests, *layout;
        char created_text[32];
        struct tm tm;
        time_t t = (time_t) created;
        int r;

        if (!media_type || kiln_content_media_type_kind(media_type) != KILN_CONTENT_KIND_MANIFEST)
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "archive of %s: media type '%s' is not an image manifest",
                                      manifest_digest, media_type ? media_type : "");
        r = blob_check(cs, "manifest", manifest_digest, size, err);
        if (r < 0)
                return r;
        r = kiln_content_store_read(cs, manifest_digest, &mb, err);
        if (r < 0)
                return kiln_error_wrap(err, "read manifest %s", manifest_digest);
        r = kiln_content_manifest_parse(mb.data, mb.len, media_type, &m, err);
        if (r < 0)
                return kiln_error_wrap(err, "manifest %s", manifest_digest);
        r = blob_check(cs, "config", m->config.digest, m->config.size, err);
        if (r < 0)
                return r;
        r = kiln_content_store_read(cs, m->config.digest, &cb, err);
        if (r < 0)
                return kiln_error_wrap(err, "read config %s", m->config.digest);
        r = kiln_content_config_parse(cb.data, cb.len, m->config.media_type, &cfg, err);
        if (r < 0)
                return kiln_error_wrap(err, "config %s", m->config.digest);
        for (size_t i = 0; i < m->n_layers; i++) {
                r = blob_check(cs, "layer", m->layers[i].digest, m->layers[i].size, err);
                if (r < 0)
                        return r;
        }
        r = names_parse(names, n_names, &nv, err);
        if (r < 0)
                return r;
        if (!gmtime_r(&t, &tm) ||
            strftime(created_text, sizeof(created_text), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
                r = kiln_error_set(err, -EINVAL, "archive: bad creation time %lld",
                                   (long long) created);
                goto out;
        }

        layout = json_pack("{s:s}", "imageLayoutVersion", "1.0.0");
        r = records_add_json(&rs, "oci-layout", 0444, layout, err);
        json_decref(layout);
        if (r < 0)
                goto out;
        records_add(&rs, kiln_xstrdup("blobs"), RECORD_DIR, 0755);
        records_add(&rs, kiln_xstrdup("blobs/sha256"), RECORD_DIR, 0755);
        records_add_blob(&rs, manifest_digest, size);
        records_add_blob(&rs, m->config.digest, m->config.size);
        for (size_t i = 0; i < m->n_layers; i++)
                records_add_blob(&rs, m->layers[i].digest, m->layers[i].size);

        index = json_object();
        json_object_set_new(index, "schemaVersion", json_integer(2));
        json_object_set_new(index, "mediaType", json_string(KILN_CONTENT_MT_OCI_INDEX));
        manifests = json_array();
        if (n_names == 0)
                json_array_append_new(manifests, index_descriptor(media_type, manifest_digest, size,
                                                                  created_text, NULL, cfg));
        for (size_t i = 0; i < n_names; i++)
                json_array_append_new(manifests, index_descriptor(media_type, manifest_digest, size,
                                                                  created_text, &nv[i], cfg));
        json_object_set_new(index, "manifests", manifests);
        r = records_add_json(&rs, "index.json", 0644, index, err);
        if (r < 0)
                goto out;

        if (docker) {
                /* containerd's manifestsRecord: the file docker load reads. */
                json_t *a = json_array(), *e = json_object(), *tags, *layers;

                json_object_set_new(e, "Config",
                                    json_sprintf("blobs/sha256/%s", m->config.digest + 7));
                tags = n_names > 0 ? json_array() : json_null();
                for (size_t i = 0; i < n_names; i++)
                        json_array_append_new(tags, json_string(nv[i].familiar));
                json_object_set_new(e, "RepoTags", tags);
                layers = m->n_layers > 0 ? json_array() : json_null();
                for (size_t i = 0; i < m->n_layers; i++)
                        json_array_append_new(
                                layers, json_sprintf("blobs/sha256/%s", m->layers[i].digest + 7));
                json_object_set_new(e, "Layers", layers);
                json_array_append_new(a, e);
                r = records_add_json(&rs, "manifest.json", 0644, a, err);
                json_decref(a);
                if (r < 0)
                        goto out;
        }
        r = write_records(cs, &rs, w, userdata, err);
out:
        json_decref(index);
        names_release(nv, n_names);
        return r;
}

int kiln_export_oci_archive(struct kiln_content_store *cs, const char *manifest_digest,
                            const char *media_type, int64_t size, const char *const *names,
                            size_t n_names, int64_t created, kiln_export_write_fn w, void *userdata,
                            struct kiln_error **err)
{
        return export_archive(cs, manifest_digest, media_type, size, names, n_names, created, false,
                              w, userdata, err);
}

int kiln_export_docker_archive(struct kiln_content_store *cs, const char *manifest_digest,
                               const char *media_type, int64_t size, const char *const *names,
                               size_t n_names, int64_t created, kiln_export_write_fn w,
                               void *userdata, struct kiln_error **err)
{
        return export_archive(cs, manifest_digest, media_type, size, names, n_names, created, true,
                              w, userdata, err);
}
