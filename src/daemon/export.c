/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The outputs of a build (export.h): BuildKit's exporters after the solve.
 *
 * Each output is a vertex of the build's progress, named and fed with
 * statuses as BuildKit's exporter of that type does:
 *   image, registry  "exporting to image": exporting layers, exporting
 *                    manifest/config sha256:..., writing image sha256:...,
 *                    naming to R, pushing layers, pushing manifest for R@sha256:...
 *   oci, docker      "exporting to oci|docker image format": the same
 *                    export, then "sending tarball"
 *   local            "exporting to client directory": "copying files"
 *   tar              "exporting to client tarball": "sending tarball"
 *
 * Client-side outputs (oci, docker, local, tar) are offered as a slot: the
 * build emits {"type":"export","index":i} and waits; the client's
 * GET /v1/build/<id>/export/<i> claims the slot and streams the archive
 * from an operation of its own (a raw stream, ops.c), which marks the slot
 * done or failed. The slots live in a small table of this file, found by
 * build id and index; a build removes its slots before it returns, and
 * never before the stream that claimed one has stopped, so a mounted view
 * is unmounted only once nobody reads it.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "content/ref.h"
#include "daemon-internal.h"
#include "export.h"
#include "export/archive.h"
#include "export/compress.h"
#include "export/image.h"
#include "export/tar.h"
#include "registry/registry.h"
#include "snapshot/snapshot.h"

/* How often a waiting build looks at its cancel flag and the bytes sent. */
#define EXPORT_WAIT_POLL_MS 100
/* Statuses one output may open (the exporters' fixed set, and one
 * naming/pushing pair per name). */
#define EXPORT_MAX_STATUSES (8u + 3u * KILN_EXPORT_LIMIT_ARCHIVE_NAMES)

#define ID_CHARS "0123456789abcdef"

/* ---- options ---- */

enum output_kind {
        OUTPUT_IMAGE,
        OUTPUT_OCI,
        OUTPUT_DOCKER,
        OUTPUT_TAR,
        OUTPUT_LOCAL,
};

struct output_opts {
        enum output_kind kind;
        const char *type;
        const char *name; /* the "name" attribute as given */
        char **names;     /* split at ',' */
        size_t n_names;
        bool push;
        bool store;
        enum kiln_export_compression compression;
        int level;
        bool force_compression;
        bool oci_mediatypes;
        bool has_epoch;
        int64_t epoch;
};

static void output_opts_release(struct output_opts *o)
{
        for (size_t i = 0; i < o->n_names; i++)
                free(o->names[i]);
        free(o->names);
        *o = (struct output_opts){ 0 };
}

/* Go's strconv.ParseBool; "" counts as true where BuildKit says so. */
static int parse_bool(const char *key, const char *v, bool *ret, struct kiln_error **err)
{
        static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };

        if (v[0] == '\0') {
                *ret = true;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (streq(v, yes[i])) {
                        *ret = true;
                        return 0;
                }
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (streq(v, no[i])) {
                        *ret = false;
                        return 0;
                }
        return kiln_error_set(err, -EINVAL,
                              "non-bool value specified for %s: strconv.ParseBool: parsing "
                              "\"%s\": invalid syntax",
                              key, v);
}

/* Go's strconv.ParseInt(v, 10, 64). */
static int parse_int64(const char *v, int64_t *ret)
{
        char *end = NULL;
        long long x;

        if (v[0] == '\0' || v[0] == ' ' || v[0] == '\t')
                return -EINVAL;
        errno = 0;
        x = strtoll(v, &end, 10);
        if (errno != 0 || !end || *end != '\0')
                return -EINVAL;
        *ret = x;
        return 0;
}

static int output_opts_parse(const struct kiln_api_build_output *out,
                             const struct kiln_daemon_export_input *in, struct output_opts *o,
                             struct kiln_error **err)
{
        const char *v;
        int r;

        *o = (struct output_opts){
                .type = out->type,
                .store = true,
                .compression = KILN_EXPORT_COMPRESSION_GZIP,
                .level = KILN_EXPORT_LEVEL_DEFAULT,
                .oci_mediatypes = true,
                .has_epoch = in->has_epoch,
                .epoch = in->epoch,
        };
        if (streq(out->type, "image") || streq(out->type, "registry"))
                o->kind = OUTPUT_IMAGE;
        else if (streq(out->type, "oci"))
                o->kind = OUTPUT_OCI;
        else if (streq(out->type, "docker"))
                o->kind = OUTPUT_DOCKER;
        else if (streq(out->type, "tar"))
                o->kind = OUTPUT_TAR;
        else if (streq(out->type, "local"))
                o->kind = OUTPUT_LOCAL;
        else
                return kiln_error_set(err, -EINVAL, "exporter \"%s\" could not be found",
                                      out->type);
        /* buildx's type=registry is an image output that pushes. */
        o->push = streq(out->type, "registry");

        v = kiln_api_build_output_attr(out, "source-date-epoch");
        if (v && v[0]) {
                if (parse_int64(v, &o->epoch) < 0)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid source-date-epoch: strconv.ParseInt: "
                                              "parsing \"%s\": invalid syntax",
                                              v);
                o->has_epoch = true;
        }
        if (o->kind == OUTPUT_TAR || o->kind == OUTPUT_LOCAL)
                return 0; /* the rest is for images */

        v = kiln_api_build_output_attr(out, "name");
        if (v && v[0]) {
                const char *p = v;

                o->name = v;
                for (;;) {
                        size_t len = strcspn(p, ",");

                        if (o->n_names >= KILN_EXPORT_LIMIT_ARCHIVE_NAMES)
                                return kiln_error_set(err, -E2BIG, "more than %d image names",
                                                      KILN_EXPORT_LIMIT_ARCHIVE_NAMES);
                        o->names = kiln_xreallocarray(o->names, o->n_names + 2, sizeof(*o->names));
                        o->names[o->n_names++] = kiln_xstrndup(p, len);
                        o->names[o->n_names] = NULL;
                        if (p[len] == '\0')
                                break;
                        p += len + 1;
                }
                for (size_t i = 0; i < o->n_names; i++) {
                        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;

                        r = kiln_content_ref_parse(o->names[i], &ref, err);
                        if (r < 0)
                                return kiln_error_wrap(err, "failed to parse %s", o->names[i]);
                }
        }
        if (o->kind == OUTPUT_IMAGE) {
                v = kiln_api_build_output_attr(out, "push");
                if (v && (r = parse_bool("push", v, &o->push, err)) < 0)
                        return r;
                v = kiln_api_build_output_attr(out, "store");
                if (v && (r = parse_bool("store", v, &o->store, err)) < 0)
                        return r;
                /* unpack: kiln keeps no unpacked image store; the result's
                 * snapshots are the unpacked image already. */
                v = kiln_api_build_output_attr(out, "unpack");
                if (v) {
                        bool unpack;

                        r = parse_bool("unpack", v, &unpack, err);
                        if (r < 0)
                                return r;
                }
                if (o->push && o->n_names == 0)
                        return kiln_error_set(err, -EINVAL,
                                              "tag is needed when pushing to registry");
        } else {
                v = kiln_api_build_output_attr(out, "tar");
                if (v) {
                        bool tar;

                        r = parse_bool("tar", v, &tar, err);
                        if (r < 0)
                                return r;
                }
        }
        v = kiln_api_build_output_attr(out, "oci-mediatypes");
        if (v && (r = parse_bool("oci-mediatypes", v, &o->oci_mediatypes, err)) < 0)
                return r;
        v = kiln_api_build_output_attr(out, "rewrite-timestamp");
        if (v) {
                bool rewrite;

                r = parse_bool("rewrite-timestamp", v, &rewrite, err);
                if (r < 0)
                        return r;
        }
        v = kiln_api_build_output_attr(out, "compression");
        if (v) {
                r = kiln_export_compression_parse(v, &o->compression, err);
                if (r < 0)
                        return r;
        }
        v = kiln_api_build_output_attr(out, "force-compression");
        if (v) {
                r = parse_bool("force-compression", v, &o->force_compression, err);
                if (r < 0)
                        return kiln_error_set(err, r,
                                              "non-bool value %s specified for force-compression: "
                                              "strconv.ParseBool: parsing \"%s\": invalid syntax",
                                              v, v);
        }
        v = kiln_api_build_output_attr(out, "compression-level");
        if (v) {
                int64_t level;

                if (parse_int64(v, &level) < 0 || level < INT32_MIN || level > INT32_MAX)
                        return kiln_error_set(err, -EINVAL,
                                              "non-integer value %s specified for "
                                              "compression-level: strconv.ParseInt: parsing "
                                              "\"%s\": invalid syntax",
                                              v, v);
                o->level = (int) level;
                r = kiln_export_compression_level_check(o->compression, o->level, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- progress ---- */

struct status {
        char *id;
        int64_t started;
};

/* One output being exported: its vertex and its open statuses. */
struct exporting {
        const struct kiln_daemon_export_input *in;
        char digest[8 + KILN_SHA256_HEX_LEN];
        const char *name;
        int64_t started;
        struct status statuses[EXPORT_MAX_STATUSES];
        size_t n_statuses;
};

static void exporting_release(struct exporting *x)
{
        for (size_t i = 0; i < x->n_statuses; i++)
                free(x->statuses[i].id);
        x->n_statuses = 0;
}

static void vertex(struct exporting *x, int64_t completed, const char *error)
{
        char s[KILN_API_TIME_SIZE], c[KILN_API_TIME_SIZE];
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_VERTEX,
                .digest = x->digest,
                .name = (char *) x->name,
                .started = s,
                .error = (char *) error,
        };

        kiln_api_time_format(x->started, s);
        if (completed > 0) {
                kiln_api_time_format(completed, c);
                ev.completed = c;
        }
        x->in->emit(x->in->userdata, &ev);
}

/* A status of the output's vertex: started the first time id is seen,
 * completed when done (BuildKit's progress.OneOff, or a transfer with
 * current bytes). */
static void status(struct exporting *x, const char *id, int64_t current, bool done)
{
        char s[KILN_API_TIME_SIZE], c[KILN_API_TIME_SIZE];
        struct status *st = NULL;
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_STATUS,
                .vertex = x->digest,
                .id = (char *) id,
                .current = current,
        };

        for (size_t i = 0; i < x->n_statuses; i++)
                if (streq(x->statuses[i].id, id))
                        st = &x->statuses[i];
        if (!st) {
                if (x->n_statuses >= EXPORT_MAX_STATUSES)
                        return;
                st = &x->statuses[x->n_statuses++];
                st->id = kiln_xstrdup(id);
                st->started = kiln_realtime_ns();
        }
        kiln_api_time_format(st->started, s);
        ev.started = s;
        if (done) {
                kiln_api_time_format(kiln_realtime_ns(), c);
                ev.completed = c;
        }
        x->in->emit(x->in->userdata, &ev);
}

/* kiln_export_image's progress. BuildKit's "exporting layers" is a
 * OneOff: no counts. */
static void on_image_status(void *userdata, const char *id, int64_t current, int64_t total,
                            bool done)
{
        (void) current;
        (void) total;
        status(userdata, id, 0, done);
}

/* ---- images.json ---- */

static char *images_path(struct kiln_daemon *d)
{
        return kiln_xasprintf("%s/images.json", d->root);
}

/* Reads <root>/images.json (an object: name -> descriptor); a missing file
 * is an empty object. */
static int images_read(struct kiln_daemon *d, json_t **ret, struct kiln_error **err)
{
        _cleanup_free_ char *path = images_path(d);
        struct kiln_buf b = KILN_BUF_INIT(KILN_DAEMON_LIMIT_IMAGES_FILE);
        json_error_t jerr;
        json_t *j;
        int r;

        r = kiln_read_file_at(AT_FDCWD, path, &b);
        if (r == -ENOENT) {
                kiln_buf_release(&b);
                *ret = json_object();
                return *ret ? 0 : -ENOMEM;
        }
        if (r < 0) {
                char buf[64];

                kiln_buf_release(&b);
                return kiln_error_set(
                        err, r, "read '%s': %s", path,
                        kiln_read_file_strerror(r, KILN_DAEMON_LIMIT_IMAGES_FILE, buf));
        }
        j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
        kiln_buf_release(&b);
        if (!json_is_object(j)) {
                json_decref(j);
                return kiln_error_set(err, -EBADMSG, "read '%s': not a JSON object", path);
        }
        *ret = j;
        return 0;
}

/* Records names -> the manifest, atomically, under <root>/images.lock. */
static int images_record(struct kiln_daemon *d, char *const *names, size_t n,
                         const struct kiln_export_image_result *img, struct kiln_error **err)
{
        _cleanup_free_ char *lock_path = kiln_xasprintf("%s/images.lock", d->root);
        _cleanup_free_ char *path = images_path(d), *text = NULL;
        _cleanup_close_ int fd = -1;
        json_t *j = NULL;
        size_t len = 0;
        int r;

        fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = -errno;
                return kiln_error_set(err, r, "open '%s': %s", lock_path, strerror(-r));
        }
        while (flock(fd, LOCK_EX) < 0)
                if (errno != EINTR) {
                        r = -errno;
                        return kiln_error_set(err, r, "lock '%s': %s", lock_path, strerror(-r));
                }
        r = images_read(d, &j, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
                _cleanup_free_ char *canon = NULL;
                json_t *desc;

                r = kiln_content_ref_parse(names[i], &ref, err);
                if (r < 0) {
                        json_decref(j);
                        return r;
                }
                canon = kiln_content_ref_canonical(ref);
                if (!json_object_get(j, canon) && json_object_size(j) >= KILN_DAEMON_LIMIT_IMAGES) {
                        json_decref(j);
                        return kiln_error_set(err, -E2BIG, "more than %u named images in '%s'",
                                              KILN_DAEMON_LIMIT_IMAGES, path);
                }
                desc = json_pack("{s:s,s:s,s:I}", "mediaType", img->manifest_media_type, "digest",
                                 img->manifest_digest, "size", (json_int_t) img->manifest_size);
                if (!desc || json_object_set_new(j, canon, desc) < 0) {
                        json_decref(j);
                        return -ENOMEM;
                }
        }
        text = kiln_api_json_dump(j, &len);
        json_decref(j);
        if (!text)
                return -ENOMEM;
        r = kiln_write_file_atomic(path, text, len, 0600);
        if (r < 0)
                return kiln_error_set(err, r, "write '%s': %s", path, strerror(-r));
        return 0;
}

/* Manifests an output is still working with (streaming an archive,
 * pushing, about to record a name): the collector keeps their trees like
 * named images', since a blob that already existed keeps its old mtime and
 * no grace period protects it. Process-wide like the slots; each pin names
 * its daemon. */
struct pin {
        struct kiln_daemon *d;
        char *digest;
        struct pin *next;
};

static pthread_mutex_t pins_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pin *pins;

static struct pin *pin_add(struct kiln_daemon *d, const char *digest)
{
        struct pin *p = kiln_xcalloc(1, sizeof(*p));

        p->d = d;
        p->digest = kiln_xstrdup(digest);
        pthread_mutex_lock(&pins_lock);
        p->next = pins;
        pins = p;
        pthread_mutex_unlock(&pins_lock);
        return p;
}

static void pin_remove(struct pin **pp)
{
        struct pin *p = *pp;

        if (!p)
                return;
        pthread_mutex_lock(&pins_lock);
        for (struct pin **q = &pins; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        break;
                }
        pthread_mutex_unlock(&pins_lock);
        free(p->digest);
        free(p);
        *pp = NULL;
}

int kiln_daemon_images_manifests(struct kiln_daemon *d, char ***ret, struct kiln_error **err)
{
        char **v;
        size_t n = 0;
        const char *key;
        json_t *j = NULL, *desc;
        int r;

        r = images_read(d, &j, err);
        if (r < 0)
                return r;
        v = kiln_xcalloc(json_object_size(j) + 1, sizeof(*v));
        json_object_foreach (j, key, desc) {
                const char *dg = json_string_value(json_object_get(desc, "digest"));
                bool seen = false;

                if (!dg || kiln_content_digest_validate(dg, NULL) < 0) {
                        kiln_api_strv_free(v);
                        json_decref(j);
                        return kiln_error_set(err, -EBADMSG,
                                              "read '%s/images.json': image '%s' has no valid "
                                              "digest",
                                              d->root, key);
                }
                for (size_t i = 0; i < n && !seen; i++)
                        seen = streq(v[i], dg);
                if (!seen)
                        v[n++] = kiln_xstrdup(dg);
        }
        json_decref(j);
        pthread_mutex_lock(&pins_lock);
        for (struct pin *p = pins; p; p = p->next)
                if (p->d == d) {
                        v = kiln_xreallocarray(v, n + 2, sizeof(*v));
                        v[n++] = kiln_xstrdup(p->digest);
                        v[n] = NULL;
                }
        pthread_mutex_unlock(&pins_lock);
        *ret = v;
        return 0;
}

/* ---- client-side slots ---- */

enum slot_state {
        SLOT_WAITING,   /* offered: the client has not asked yet */
        SLOT_STREAMING, /* a GET claimed it */
        SLOT_DONE,
        SLOT_FAILED,
};

struct slot {
        struct slot *next;
        unsigned refs; /* under slots_lock */
        char build_id[KILN_DAEMON_BUILD_ID_LEN + 1];
        unsigned index;
        enum output_kind kind;
        const char *exporter;
        /* What to stream: an image (oci, docker) or a directory (tar,
         * local). Set before the slot is offered; read-only afterwards. */
        char *manifest_digest;
        char *manifest_media_type;
        int64_t manifest_size;
        char **names;
        size_t n_names;
        char *dir;
        bool has_epoch;
        int64_t epoch;
        int64_t created; /* oci, docker: the index's created annotation */

        /* Under slots_lock; cond (CLOCK_MONOTONIC) is broadcast on changes. */
        pthread_cond_t cond;
        enum slot_state state;
        char *error;
        /* Set by the build when it gives up: the stream stops at its next
         * write. */
        atomic_bool abort;
        _Atomic uint64_t bytes;
};

/* The offered slots of every build of this process. A build id is random
 * and unique, so one table serves every daemon the process runs. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots;

static void slot_unref_locked(struct slot *s)
{
        if (!s || --s->refs > 0)
                return;
        pthread_cond_destroy(&s->cond);
        free(s->manifest_digest);
        free(s->manifest_media_type);
        for (size_t i = 0; i < s->n_names; i++)
                free(s->names[i]);
        free(s->names);
        free(s->dir);
        free(s->error);
        free(s);
}

static void slot_unref(struct slot *s)
{
        pthread_mutex_lock(&slots_lock);
        slot_unref_locked(s);
        pthread_mutex_unlock(&slots_lock);
}

static struct slot *slot_new(const char *build_id, unsigned index, enum output_kind kind,
                             const char *exporter)
{
        struct slot *s = kiln_xcalloc(1, sizeof(*s));
        pthread_condattr_t attr;

        s->refs = 1;
        (void) snprintf(s->build_id, sizeof(s->build_id), "%s", build_id);
        s->index = index;
        s->kind = kind;
        s->exporter = exporter;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&s->cond, &attr);
        pthread_condattr_destroy(&attr);
        atomic_init(&s->abort, false);
        atomic_init(&s->bytes, 0);
        return s;
}

static void slot_offer(struct slot *s)
{
        pthread_mutex_lock(&slots_lock);
        s->refs++; /* the table's */
        s->next = slots;
        slots = s;
        pthread_mutex_unlock(&slots_lock);
}

/* Takes s out of the table. Under slots_lock. */
static void slot_withdraw_locked(struct slot *s)
{
        for (struct slot **p = &slots; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        s->next = NULL;
                        slot_unref_locked(s);
                        return;
                }
}

/* Splits /v1/build/<id>/export/<index>. */
static bool split_path(const char *url, const char **id, size_t *id_len, unsigned *index)
{
        const char *p;
        unsigned long v;
        char *end = NULL;

        if (!kiln_daemon_build_subpath(url, "export", id, id_len, &p))
                return false;
        if (p[0] < '0' || p[0] > '9' || (p[0] == '0' && p[1] != '\0') || strlen(p) > 5)
                return false;
        v = strtoul(p, &end, 10);
        if (!end || *end != '\0')
                return false;
        *index = (unsigned) v;
        return true;
}

bool kiln_daemon_export_path_match(const char *url)
{
        const char *id;
        size_t id_len;
        unsigned index;

        return split_path(url, &id, &id_len, &index);
}

struct stream_args {
        struct kiln_daemon *d;
        struct slot *slot; /* a reference */
        bool ran;
};

static void stream_args_free(void *p)
{
        struct stream_args *a = p;

        if (!a)
                return;
        pthread_mutex_lock(&slots_lock);
        if (!a->ran && a->slot->state == SLOT_STREAMING) {
                /* Refused before the worker ran: offered again. */
                a->slot->state = SLOT_WAITING;
                pthread_cond_broadcast(&a->slot->cond);
        }
        slot_unref_locked(a->slot);
        pthread_mutex_unlock(&slots_lock);
        free(a);
}

struct stream_sink {
        struct kiln_daemon_op *op;
        struct slot *slot;
};

static int stream_write(void *userdata, const void *buf, size_t n, struct kiln_error **err)
{
        struct stream_sink *k = userdata;
        int r;

        if (atomic_load(&k->slot->abort))
                return kiln_error_set(err, -ECANCELED, "the build was cancelled");
        r = kiln_daemon_op_write(k->op, buf, n, err);
        if (r < 0)
                return r;
        atomic_fetch_add(&k->slot->bytes, (uint64_t) n);
        return 0;
}

static int stream_run(struct kiln_daemon_op *op, void *args, struct kiln_error **err)
{
        struct stream_args *a = args;
        struct slot *s = a->slot;
        struct stream_sink sink = { .op = op, .slot = s };
        /* BuildKit's local and tar exporters give every file the epoch */
        struct kiln_export_tar_options topts = { .has_epoch = s->has_epoch,
                                                 .epoch = s->epoch,
                                                 .epoch_all = true };
        int r;

        a->ran = true;
        kiln_daemon_op_link_cancel(op, &s->abort);
        switch (s->kind) {
        case OUTPUT_OCI:
                r = kiln_export_oci_archive(a->d->store, s->manifest_digest, s->manifest_media_type,
                                            s->manifest_size, (const char *const *) s->names,
                                            s->n_names, s->created, stream_write, &sink, err);
                break;
        case OUTPUT_DOCKER:
                r = kiln_export_docker_archive(a->d->store, s->manifest_digest,
                                               s->manifest_media_type, s->manifest_size,
                                               (const char *const *) s->names, s->n_names,
                                               s->created, stream_write, &sink, err);
                break;
        case OUTPUT_TAR:
        case OUTPUT_LOCAL: {
                _cleanup_close_ int fd =
                        open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                if (fd < 0) {
                        r = -errno;
                        r = kiln_error_set(err, r, "open '%s': %s", s->dir, strerror(-r));
                        break;
                }
                r = kiln_export_tar_tree(fd, &topts, stream_write, &sink, err);
                break;
        }
        case OUTPUT_IMAGE:
        default:
                r = kiln_error_set(err, -EINVAL, "output %u is no client-side output", s->index);
                break;
        }
        if (r >= 0)
                r = kiln_daemon_op_flush(op, err);

        pthread_mutex_lock(&slots_lock);
        s->state = r < 0 ? SLOT_FAILED : SLOT_DONE;
        if (r < 0)
                s->error = kiln_xstrdup(kiln_error_message(*err));
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&slots_lock);
        return r;
}

enum MHD_Result kiln_daemon_handle_export(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                          struct MHD_Connection *conn, const char *method,
                                          const char *url)
{
        struct kiln_daemon_op_spec spec = { .what = "export", .uncounted = true };
        char idbuf[KILN_DAEMON_BUILD_ID_LEN + 1];
        struct stream_args *a;
        struct slot *s = NULL;
        const char *id;
        size_t id_len;
        unsigned index;

        if (!split_path(url, &id, &id_len, &index))
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_NOT_FOUND, NULL,
                                                 "no such endpoint");
        if (MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, NULL, NULL) > 0)
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_BAD_REQUEST, NULL,
                                                 "query parameters are not taken");
        if (id_len != KILN_DAEMON_BUILD_ID_LEN || strspn(id, ID_CHARS) < id_len) {
                _cleanup_free_ char *msg =
                        kiln_xasprintf("no build '%.*s'", (int) (id_len > 64 ? 64 : id_len), id);

                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_NOT_FOUND, NULL, msg);
        }
        memcpy(idbuf, id, id_len);
        idbuf[id_len] = '\0';

        pthread_mutex_lock(&slots_lock);
        for (struct slot *p = slots; p; p = p->next)
                if (streq(p->build_id, idbuf) && p->index == index)
                        s = p;
        if (!s) {
                _cleanup_free_ char *msg = NULL;

                pthread_mutex_unlock(&slots_lock);
                msg = kiln_xasprintf("build '%s' has no output %u waiting to be downloaded", idbuf,
                                     index);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_NOT_FOUND, NULL, msg);
        }
        if (s->state != SLOT_WAITING) {
                _cleanup_free_ char *msg = NULL;

                pthread_mutex_unlock(&slots_lock);
                msg = kiln_xasprintf("output %u of build '%s' is already being downloaded", index,
                                     idbuf);
                return kiln_daemon_respond_error(conn, method, url, MHD_HTTP_CONFLICT, NULL, msg);
        }
        s->state = SLOT_STREAMING;
        s->refs++;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&slots_lock);

        a = kiln_xcalloc(1, sizeof(*a));
        a->d = d;
        a->slot = s;
        spec.ref = s->build_id;
        spec.fn = stream_run;
        spec.args = a;
        spec.args_free = stream_args_free;
        return kiln_daemon_op_start_raw(d, req, conn, method, url, &spec,
                                        KILN_API_CONTENT_TYPE_TAR);
}

/* ---- running the outputs ---- */

static bool cancelled(const struct kiln_daemon_export_input *in)
{
        return kiln_daemon_op_cancelled(in->op);
}

/* Offers s, emits the export event and waits for the download (reporting
 * the bytes sent under status_id while it runs). The slot is withdrawn on
 * every path, after its stream stopped. */
static int offer_and_wait(struct exporting *x, struct slot *s, const char *status_id,
                          bool report_bytes, struct kiln_error **err)
{
        const struct kiln_daemon_export_input *in = x->in;
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_EXPORT,
                .index = s->index,
                .exporter = (char *) s->exporter,
        };
        int64_t deadline = kiln_mono_ms() + (int64_t) KILN_API_CONTEXT_TIMEOUT_S * 1000;
        int64_t last_report = 0;
        uint64_t reported = 0;
        int r = 0;

        slot_offer(s);
        status(x, status_id, 0, false);
        in->emit(in->userdata, &ev);

        pthread_mutex_lock(&slots_lock);
        for (;;) {
                struct timespec until;

                if (s->state == SLOT_DONE)
                        break;
                if (s->state == SLOT_FAILED) {
                        if (cancelled(in))
                                r = kiln_error_set(err, -ECANCELED, "context canceled");
                        else
                                r = kiln_error_set(err, -EIO, "send output %u (%s): %s", s->index,
                                                   s->exporter,
                                                   s->error ? s->error : "the download failed");
                        break;
                }
                if (s->state == SLOT_WAITING && cancelled(in)) {
                        r = kiln_error_set(err, -ECANCELED, "context canceled");
                        break;
                }
                if (s->state == SLOT_STREAMING && cancelled(in)) {
                        /* Stop the stream, then wait for it: it may read
                         * the directory that is unmounted next. */
                        atomic_store(&s->abort, true);
                } else if (s->state == SLOT_WAITING && kiln_mono_ms() >= deadline) {
                        r = kiln_error_set(err, -ETIMEDOUT,
                                           "output %u (%s): the client did not download it "
                                           "within %u seconds",
                                           s->index, s->exporter, KILN_API_CONTEXT_TIMEOUT_S);
                        break;
                }
                if (report_bytes && kiln_mono_ms() - last_report >= EXPORT_WAIT_POLL_MS &&
                    atomic_load(&s->bytes) != reported) {
                        reported = atomic_load(&s->bytes);
                        last_report = kiln_mono_ms();
                        pthread_mutex_unlock(&slots_lock);
                        status(x, status_id, (int64_t) reported, false);
                        pthread_mutex_lock(&slots_lock);
                        continue;
                }
                until = kiln_mono_deadline(EXPORT_WAIT_POLL_MS);
                (void) pthread_cond_timedwait(&s->cond, &slots_lock, &until);
        }
        /* A stream that claims the slot from now on finds it gone; one that
         * claimed it already has ended (DONE/FAILED) or was never started. */
        slot_withdraw_locked(s);
        pthread_mutex_unlock(&slots_lock);
        if (r >= 0)
                status(x, status_id, report_bytes ? (int64_t) atomic_load(&s->bytes) : 0, true);
        return r;
}

static void response_set(json_t *resp, const char *key, json_t *value)
{
        if (value)
                (void) json_object_set_new(resp, key, value);
}

/* exporterResponse of an image export, as BuildKit's exporters report it
 * (the descriptor as an object: buildx decodes it for its metadata). */
static void image_response(json_t *resp, const struct kiln_export_image_result *img,
                           const char *names)
{
        response_set(resp, "containerimage.digest", json_string(img->manifest_digest));
        response_set(resp, "containerimage.config.digest", json_string(img->config_digest));
        response_set(resp, "containerimage.descriptor",
                     json_pack("{s:s,s:s,s:I}", "mediaType", img->manifest_media_type, "digest",
                               img->manifest_digest, "size", (json_int_t) img->manifest_size));
        if (names && names[0])
                response_set(resp, "image.name", json_string(names));
        else
                (void) json_object_del(resp, "image.name");
}

static int export_image(struct exporting *x, const struct output_opts *o,
                        struct kiln_export_image_result *img, struct kiln_error **err)
{
        const struct kiln_daemon_export_input *in = x->in;
        struct kiln_daemon *d = in->build->d;
        struct kiln_export_image_options io;

        kiln_export_image_options_init(&io);
        io.compression = (int) o->compression;
        io.level = o->level;
        io.force_compression = o->force_compression;
        io.oci_mediatypes = o->oci_mediatypes;
        io.has_epoch = o->has_epoch;
        io.epoch = o->epoch;
        io.platform = in->platform;
        io.cancel = kiln_daemon_op_cancel_flag(in->op);
        io.on_status = on_image_status;
        io.userdata = x;
        return kiln_export_image(d->store, d->snapshots, in->snapshot_id, in->config,
                                 in->config_len, &io, img, err);
}

/* Registry progress of a push: BuildKit shows "pushing layers" until the
 * blobs are up, then "pushing manifest for R@sha256:...". */
struct push_progress {
        struct exporting *x;
        const char *manifest_digest;
        const char *manifest_line;
        /* The registry may call from its transfer threads at once. */
        pthread_mutex_t lock;
        bool manifest_phase;
};

static void push_event(void *userdata, const struct kiln_registry_event *ev)
{
        struct push_progress *p = userdata;

        if (!ev->digest || !streq(ev->digest, p->manifest_digest))
                return;
        if (ev->kind != KILN_REGISTRY_EVENT_BLOB_STARTED &&
            ev->kind != KILN_REGISTRY_EVENT_BLOB_DONE &&
            ev->kind != KILN_REGISTRY_EVENT_BLOB_EXISTS)
                return;
        pthread_mutex_lock(&p->lock);
        if (!p->manifest_phase) {
                p->manifest_phase = true;
                status(p->x, "pushing layers", 0, true);
                status(p->x, p->manifest_line, 0, false);
        }
        pthread_mutex_unlock(&p->lock);
}

static int push_one(struct exporting *x, const char *name,
                    const struct kiln_export_image_result *img, struct kiln_error **err)
{
        const struct kiln_daemon_export_input *in = x->in;
        struct kiln_daemon *d = in->build->d;
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
        _cleanup_free_ char *with_digest = NULL, *line = NULL;
        struct kiln_registry_push_result res = { 0 };
        struct push_progress p = { .x = x,
                                   .manifest_digest = img->manifest_digest,
                                   .lock = PTHREAD_MUTEX_INITIALIZER };
        struct kiln_registry_push_options po = {
                .cancel = kiln_daemon_op_cancel_flag(in->op),
                .on_event = push_event,
                .userdata = &p,
        };
        int r;

        r = kiln_content_ref_parse(name, &ref, err);
        if (r < 0)
                return kiln_error_wrap(err, "failed to push %s", name);
        free(ref->digest);
        ref->digest = kiln_xstrdup(img->manifest_digest);
        with_digest = kiln_content_ref_canonical(ref);
        line = kiln_xasprintf("pushing manifest for %s", with_digest);
        p.manifest_line = line;

        status(x, "pushing layers", 0, false);
        r = kiln_registry_push(d->client, d->store, name, img->manifest_digest,
                               img->manifest_media_type, &po, &res, err);
        kiln_registry_push_result_release(&res);
        pthread_mutex_destroy(&p.lock);
        if (r < 0)
                return kiln_error_wrap(err, "failed to push %s", name);
        if (!p.manifest_phase) {
                status(x, "pushing layers", 0, true);
                status(x, line, 0, false);
        }
        status(x, line, 0, true);
        return 0;
}

static int run_image(struct exporting *x, const struct output_opts *o, json_t *resp,
                     struct kiln_error **err)
{
        _cleanup_(kiln_export_image_result_release) struct kiln_export_image_result img = { 0 };
        _cleanup_(pin_remove) struct pin *pin = NULL;
        const struct kiln_daemon_export_input *in = x->in;
        int r;

        r = export_image(x, o, &img, err);
        if (r < 0)
                return r;
        pin = pin_add(in->build->d, img.manifest_digest);
        if (o->store) {
                _cleanup_free_ char *line = kiln_xasprintf("writing image %s", img.manifest_digest);

                status(x, line, 0, false);
                status(x, line, 0, true);
                for (size_t i = 0; i < o->n_names; i++) {
                        _cleanup_free_ char *naming = kiln_xasprintf("naming to %s", o->names[i]);

                        status(x, naming, 0, false);
                        status(x, naming, 0, true);
                }
                if (!o->push && o->n_names > 0) {
                        r = images_record(in->build->d, o->names, o->n_names, &img, err);
                        if (r < 0)
                                return r;
                }
        }
        for (size_t i = 0; o->push && i < o->n_names; i++) {
                r = push_one(x, o->names[i], &img, err);
                if (r < 0)
                        return r;
        }
        image_response(resp, &img, o->name);
        return 0;
}

static int run_archive(struct exporting *x, unsigned index, const struct output_opts *o,
                       json_t *resp, struct kiln_error **err)
{
        _cleanup_(kiln_export_image_result_release) struct kiln_export_image_result img = { 0 };
        _cleanup_(pin_remove) struct pin *pin = NULL;
        const struct kiln_daemon_export_input *in = x->in;
        struct kiln_buf joined = KILN_BUF_INIT(SIZE_MAX);
        struct slot *s;
        int r;

        r = export_image(x, o, &img, err);
        if (r < 0)
                return r;
        pin = pin_add(in->build->d, img.manifest_digest);
        image_response(resp, &img, NULL);
        /* The oci and docker exporters report the names normalised. */
        for (size_t i = 0; i < o->n_names; i++) {
                _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
                _cleanup_free_ char *canon = NULL;

                r = kiln_content_ref_parse(o->names[i], &ref, err);
                if (r < 0) {
                        kiln_buf_release(&joined);
                        return kiln_error_wrap(err, "failed to parse %s", o->names[i]);
                }
                canon = kiln_content_ref_canonical(ref);
                if (i > 0)
                        (void) kiln_buf_putc(&joined, ',');
                (void) kiln_buf_puts(&joined, canon);
        }
        if (joined.len > 0)
                response_set(resp, "image.name", json_string(joined.data));
        kiln_buf_release(&joined);

        s = slot_new(in->build->id, index, o->kind, o->type);
        s->manifest_digest = kiln_xstrdup(img.manifest_digest);
        s->manifest_media_type = kiln_xstrdup(img.manifest_media_type);
        s->manifest_size = img.manifest_size;
        s->names = kiln_xcalloc(o->n_names + 1, sizeof(*s->names));
        for (size_t i = 0; i < o->n_names; i++)
                s->names[i] = kiln_xstrdup(o->names[i]);
        s->n_names = o->n_names;
        s->created = o->has_epoch ? o->epoch : (int64_t) time(NULL);
        r = offer_and_wait(x, s, "sending tarball", false, err);
        slot_unref(s);
        return r;
}

static int run_files(struct exporting *x, unsigned index, const struct output_opts *o,
                     struct kiln_error **err)
{
        const struct kiln_daemon_export_input *in = x->in;
        struct kiln_daemon *d = in->build->d;
        _cleanup_free_ char *dir =
                kiln_xasprintf("%s/exec/export-%s-%u", d->root, in->build->id, index);
        _cleanup_(kiln_error_freep) struct kiln_error *uerr = NULL;
        bool mounted = false, used = false;
        struct slot *s;
        int r;

        r = kiln_mkdir_p(dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", dir, strerror(-r));
        if (in->snapshot_id) {
                r = kiln_snapshot_use(d->snapshots, in->snapshot_id);
                if (r < 0) {
                        r = kiln_error_set(err, r, "snapshot '%s': %s", in->snapshot_id,
                                           strerror(-r));
                        goto out;
                }
                used = true;
                r = kiln_snapshot_mount_view(d->snapshots, in->snapshot_id, dir, err);
                if (r < 0)
                        goto out;
                mounted = true;
        }
        s = slot_new(in->build->id, index, o->kind, o->type);
        s->dir = kiln_xstrdup(dir);
        s->has_epoch = o->has_epoch;
        s->epoch = o->epoch;
        if (o->kind == OUTPUT_LOCAL)
                r = offer_and_wait(x, s, "copying files", true, err);
        else
                r = offer_and_wait(x, s, "sending tarball", false, err);
        slot_unref(s);
out:
        if (mounted && kiln_snapshot_unmount(dir, &uerr) < 0)
                log_warning_f(KILN_FIELDS({ "path", dir }), "unmount '%s': %s", dir,
                              kiln_error_message(uerr));
        if (used)
                kiln_snapshot_release(d->snapshots, in->snapshot_id);
        if (rmdir(dir) < 0 && errno != ENOENT)
                log_warning_f(KILN_FIELDS({ "path", dir }), "remove '%s': %s", dir,
                              strerror(errno));
        return r;
}

static const char *vertex_name(enum output_kind k)
{
        switch (k) {
        case OUTPUT_IMAGE:
                return "exporting to image";
        case OUTPUT_OCI:
                return "exporting to oci image format";
        case OUTPUT_DOCKER:
                return "exporting to docker image format";
        case OUTPUT_LOCAL:
                return "exporting to client directory";
        case OUTPUT_TAR:
                return "exporting to client tarball";
        }
        return "exporting";
}

int kiln_daemon_export_run(const struct kiln_daemon_export_input *in,
                           const struct kiln_api_build_output *outputs, size_t n_outputs,
                           json_t **ret_response, struct kiln_error **err)
{
        struct output_opts *opts;
        json_t *resp = NULL;
        int r = 0;

        *ret_response = NULL;
        if (n_outputs == 0)
                return 0;
        /* Every output's attributes are checked before anything is made. */
        opts = kiln_xcalloc(n_outputs, sizeof(*opts));
        for (size_t i = 0; i < n_outputs; i++) {
                r = output_opts_parse(&outputs[i], in, &opts[i], err);
                if (r < 0)
                        goto out;
        }
        resp = json_object();
        if (!resp) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n_outputs; i++) {
                struct exporting x = { .in = in, .name = vertex_name(opts[i].kind) };
                _cleanup_free_ char *vid = kiln_xasprintf("%s-export-%zu", in->build->id, i);
                char hex[KILN_SHA256_HEX_LEN + 1];

                kiln_sha256_hex(vid, strlen(vid), hex);
                (void) snprintf(x.digest, sizeof(x.digest), "sha256:%s", hex);
                x.started = kiln_realtime_ns();
                vertex(&x, 0, NULL);
                switch (opts[i].kind) {
                case OUTPUT_IMAGE:
                        r = run_image(&x, &opts[i], resp, err);
                        break;
                case OUTPUT_OCI:
                case OUTPUT_DOCKER:
                        r = run_archive(&x, (unsigned) i, &opts[i], resp, err);
                        break;
                case OUTPUT_TAR:
                case OUTPUT_LOCAL:
                        r = run_files(&x, (unsigned) i, &opts[i], err);
                        break;
                }
                vertex(&x, kiln_realtime_ns(), r < 0 ? kiln_error_message(*err) : NULL);
                exporting_release(&x);
                if (r < 0)
                        goto out;
        }
        *ret_response = TAKE_PTR(resp);
out:
        json_decref(resp);
        for (size_t i = 0; i < n_outputs; i++)
                output_opts_release(&opts[i]);
        free(opts);
        return r;
}
