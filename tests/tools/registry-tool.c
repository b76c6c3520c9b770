/* SPDX-License-Identifier: Apache-2.0 */
/*
 * registry-tool: drives kiln's registry client for the integration tests
 * (tests/integration/test_registry_*.py) and benchmarks.
 *
 *   registry-tool --config FILE --root DIR [--debug] [--log-format json] VERB ...
 *     resolve REF
 *     pull REF [--platform P] [--all-platforms] [--metadata-only]
 *     push LAYOUT-DIR[:TAG] REF [--mount-from REPO] [--chunk-size BYTES]
 *     copy SRC-REF DEST-REF [--chunk-size BYTES]
 *     batch      commands on stdin, one a line: "ID VERB ARGS...", each run
 *                on its own thread as soon as it is read, all through the
 *                same transfer manager (for tests of the connection limit)
 *
 * stdout: one JSON object per line: progress events {"event": ...}, then
 * {"result": ...} or {"error": "..."} (in batch mode each with "id"); logs
 * (logrus text or JSON) on stderr. Exit status 0 on success, 1 on failure,
 * 2 on bad usage.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "base/log.h"
#include "config/config.h"
#include "content/content.h"
#include "registry/registry.h"
#include "registry/transfer.h"

/* index.json of a layout we push from. */
#define LAYOUT_INDEX_MAX (4u << 20)

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* The batch command a thread runs (NULL outside batch mode). */
static __thread const char *current_id;

static void emit(json_t *obj)
{
        if (current_id)
                json_object_set_new(obj, "id", json_string(current_id));

        char *s = json_dumps(obj, JSON_COMPACT);

        pthread_mutex_lock(&out_lock);
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
        free(s);
        json_decref(obj);
}

static json_t *str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

static void on_event(void *userdata, const struct kiln_registry_event *ev)
{
        json_t *o = json_object();

        current_id = userdata;
        json_object_set_new(o, "event", json_string(kiln_registry_event_kind_to_string(ev->kind)));
        if (ev->ref)
                json_object_set_new(o, "ref", json_string(ev->ref));
        if (ev->digest)
                json_object_set_new(o, "digest", json_string(ev->digest));
        if (ev->media_type)
                json_object_set_new(o, "mediaType", json_string(ev->media_type));
        if (ev->size || ev->kind == KILN_REGISTRY_EVENT_RESOLVED)
                json_object_set_new(o, "size", json_integer(ev->size));
        if (ev->current)
                json_object_set_new(o, "current", json_integer((json_int_t) ev->current));
        if (ev->message)
                json_object_set_new(o, "message", json_string(ev->message));
        emit(o);
}

static json_t *resolved_json(const struct kiln_registry_resolved *r)
{
        json_t *o = json_object();

        json_object_set_new(o, "ref", str_or_null(r->ref));
        json_object_set_new(o, "digest", str_or_null(r->digest));
        json_object_set_new(o, "mediaType", str_or_null(r->media_type));
        json_object_set_new(o, "size", json_integer(r->size));
        return o;
}

static void emit_result(json_t *result)
{
        json_t *o = json_object();

        json_object_set_new(o, "result", result);
        emit(o);
}

static int fail(struct kiln_error *e)
{
        json_t *o = json_object();

        json_object_set_new(o, "error", json_string(kiln_error_message(e)));
        emit(o);
        fprintf(stderr, "registry-tool: %s\n", kiln_error_message(e));
        kiln_error_free(e);
        return 1;
}

/* ---- importing an OCI layout into the store ---- */

static int import_blob(struct kiln_content_store *store, const char *layout, const char *digest,
                       int64_t size, struct kiln_error **err)
{
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        char buf[65536];
        int r;

        r = kiln_content_digest_check(digest, err);
        if (r < 0)
                return r;
        path = kiln_xasprintf("%s/blobs/sha256/%s", layout, digest + strlen("sha256:"));
        r = kiln_content_ingest_begin(store, digest, size, 0, &in, err);
        if (r <= 0)
                return r;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %m", path);
        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf));
                if (k < 0)
                        return kiln_error_set(err, -errno, "read '%s': %m", path);
                if (k == 0)
                        break;
                r = kiln_content_ingest_write(in, buf, (size_t) k, err);
                if (r < 0)
                        return r;
        }
        return kiln_content_ingest_commit(in, err);
}

static int import_tree(struct kiln_content_store *store, const char *layout, const char *digest,
                       const char *media_type, int64_t size, unsigned depth,
                       struct kiln_error **err)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_CONTENT_LIMIT_MANIFEST);
        enum kiln_content_kind kind = kiln_content_media_type_kind(media_type);
        int r;

        if (depth > 4)
                return kiln_error_set(err, -ELOOP, "layout too deep");
        r = import_blob(store, layout, digest, size, err);
        if (r < 0)
                return r;
        if (kind == KILN_CONTENT_KIND_INDEX) {
                _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;

                r = kiln_content_store_read(store, digest, &b, err);
                if (r >= 0)
                        r = kiln_content_index_parse(b.data, b.len, media_type, &idx, err);
                for (size_t i = 0; r >= 0 && i < idx->n_manifests; i++)
                        r = import_tree(store, layout, idx->manifests[i].digest,
                                        idx->manifests[i].media_type, idx->manifests[i].size,
                                        depth + 1, err);
                return r;
        }
        if (kind == KILN_CONTENT_KIND_MANIFEST) {
                _cleanup_(kiln_content_manifest_freep) struct kiln_content_manifest *m = NULL;

                r = kiln_content_store_read(store, digest, &b, err);
                if (r >= 0)
                        r = kiln_content_manifest_parse(b.data, b.len, media_type, &m, err);
                if (r >= 0)
                        r = import_blob(store, layout, m->config.digest, m->config.size, err);
                for (size_t i = 0; r >= 0 && i < m->n_layers; i++)
                        r = import_blob(store, layout, m->layers[i].digest, m->layers[i].size, err);
                return r;
        }
        return 0;
}

/* "DIR" or "DIR:TAG": the root descriptor (the only one, or the one
 * tagged TAG) imported with its tree. */
static int import_layout(struct kiln_content_store *store, const char *spec, char **ret_digest,
                         char **ret_media_type, struct kiln_error **err)
{
        _cleanup_free_ char *dir = kiln_xstrdup(spec), *path = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(LAYOUT_INDEX_MAX);
        _cleanup_(kiln_content_index_freep) struct kiln_content_index *idx = NULL;
        const struct kiln_content_descriptor *sel = NULL;
        char *tag = NULL, *colon = strrchr(dir, ':');
        _cleanup_close_ int fd = -1;
        char buf[65536];
        int r;

        if (colon && !strchr(colon, '/')) {
                *colon = 0;
                tag = colon + 1;
        }
        path = kiln_xasprintf("%s/index.json", dir);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %m", path);
        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf));
                if (k < 0)
                        return kiln_error_set(err, -errno, "read '%s': %m", path);
                if (k == 0)
                        break;
                if (kiln_buf_append(&b, buf, (size_t) k) < 0)
                        return kiln_error_set(err, -E2BIG, "'%s' too large", path);
        }
        r = kiln_content_index_parse(b.data, b.len, KILN_CONTENT_MT_OCI_INDEX, &idx, err);
        if (r < 0)
                return kiln_error_wrap(err, "'%s'", path);
        for (size_t i = 0; i < idx->n_manifests; i++) {
                const char *name = kiln_content_annotations_get(
                        &idx->manifests[i].annotations, "org.opencontainers.image.ref.name");
                if (tag ? streq_ptr(name, tag) : idx->n_manifests == 1)
                        sel = &idx->manifests[i];
        }
        if (!sel)
                return kiln_error_set(err, -ENOENT, "'%s': no manifest %s%s%s", path,
                                      tag ? "tagged '" : "(several: give DIR:TAG)", tag ? tag : "",
                                      tag ? "'" : "");
        r = import_tree(store, dir, sel->digest, sel->media_type, sel->size, 0, err);
        if (r < 0)
                return kiln_error_wrap(err, "import '%s'", dir);
        *ret_digest = kiln_xstrdup(sel->digest);
        *ret_media_type = kiln_xstrdup(sel->media_type);
        return 0;
}

static json_t *push_json(const struct kiln_registry_push_result *r)
{
        json_t *o = json_object();

        json_object_set_new(o, "ref", str_or_null(r->ref));
        json_object_set_new(o, "digest", str_or_null(r->digest));
        json_object_set_new(o, "blobsUploaded", json_integer(r->blobs_uploaded));
        json_object_set_new(o, "blobsExisting", json_integer(r->blobs_existing));
        json_object_set_new(o, "blobsMounted", json_integer(r->blobs_mounted));
        json_object_set_new(o, "bytesUploaded", json_integer((json_int_t) r->bytes_uploaded));
        return o;
}

static json_t *pull_json(const struct kiln_registry_pull_result *res)
{
        json_t *o = resolved_json(&res->root), *images = json_array();

        for (size_t i = 0; i < res->n_images; i++) {
                const struct kiln_registry_pull_image *im = &res->images[i];
                json_t *io = json_object(), *layers = json_array();

                json_object_set_new(io, "manifest", json_string(im->manifest_digest));
                json_object_set_new(io, "mediaType", json_string(im->manifest_media_type));
                json_object_set_new(io, "platform", str_or_null(im->platform));
                json_object_set_new(io, "config", json_string(im->config_digest));
                for (size_t k = 0; k < im->n_layers; k++)
                        json_array_append_new(layers, json_string(im->layers[k]));
                json_object_set_new(io, "layers", layers);
                json_array_append_new(images, io);
        }
        json_object_set_new(o, "images", images);
        json_object_set_new(o, "bytesDownloaded", json_integer((json_int_t) res->bytes_downloaded));
        json_object_set_new(o, "blobsDownloaded", json_integer(res->blobs_downloaded));
        json_object_set_new(o, "blobsCached", json_integer(res->blobs_cached));
        return o;
}

struct tool {
        struct kiln_content_store *store;
        struct kiln_registry_transfer_manager *m;
        struct kiln_registry_client *client;
};

#define COMMAND_ARGS_MAX 16

/* One command: "VERB ARGS... [OPTIONS]". Returns 0, 1 (failed: reported)
 * or 2 (bad usage). id tags the output in batch mode (NULL otherwise). */
/* --cancel-after MS: a thread sets the command's cancel flag then. */
struct canceller {
        struct kiln_registry_client *client;
        atomic_bool flag;
        unsigned ms;
        pthread_t thread;
        bool started;
};

static void *canceller_thread(void *userdata)
{
        struct canceller *c = userdata;
        struct timespec ts = { .tv_sec = c->ms / 1000,
                               .tv_nsec = (long) (c->ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        atomic_store(&c->flag, true);
        kiln_registry_client_wake(c->client);
        return NULL;
}

static void canceller_join(struct canceller *c)
{
        if (c->started) {
                pthread_join(c->thread, NULL);
                c->started = false;
        }
}

static int run_command_flagged(struct tool *t, const char *id, int argc, char **argv,
                               const atomic_bool *cancel);

static int run_command(struct tool *t, const char *id, int argc, char **argv)
{
        struct canceller c = { .client = t->client };
        int r;

        atomic_init(&c.flag, false);
        for (int i = 0; i + 1 < argc; i++)
                if (streq(argv[i], "--cancel-after")) {
                        c.ms = (unsigned) strtoul(argv[i + 1], NULL, 10);
                        c.started = pthread_create(&c.thread, NULL, canceller_thread, &c) == 0;
                        if (!c.started)
                                return 2;
                }
        r = run_command_flagged(t, id, argc, argv, c.started ? &c.flag : NULL);
        canceller_join(&c);
        return r;
}

static int run_command_flagged(struct tool *t, const char *id, int argc, char **argv,
                               const atomic_bool *cancel)
{
        const char *platform = NULL, *mount_from = NULL, *pos[COMMAND_ARGS_MAX];
        bool all_platforms = false, metadata_only = false;
        uint64_t chunk_size = 0;
        struct kiln_error *err = NULL;
        int n = 0, r;

        current_id = id;
        for (int i = 0; i < argc; i++) {
                const char *a = argv[i];

                if (streq(a, "--platform") && i + 1 < argc)
                        platform = argv[++i];
                else if (streq(a, "--mount-from") && i + 1 < argc)
                        mount_from = argv[++i];
                else if (streq(a, "--chunk-size") && i + 1 < argc)
                        chunk_size = strtoull(argv[++i], NULL, 10);
                else if (streq(a, "--all-platforms"))
                        all_platforms = true;
                else if (streq(a, "--metadata-only"))
                        metadata_only = true;
                else if (streq(a, "--cancel-after") && i + 1 < argc)
                        i++; /* run_command's */
                else if (a[0] == '-' || n >= COMMAND_ARGS_MAX)
                        return 2;
                else
                        pos[n++] = a;
        }
        if (n == 0)
                return 2;

        if (streq(pos[0], "resolve") && n == 2) {
                struct kiln_registry_resolved res = { 0 };

                r = kiln_registry_resolve(t->client, pos[1], on_event, (void *) id, &res, &err);
                if (r < 0)
                        return fail(err);
                emit_result(resolved_json(&res));
                kiln_registry_resolved_release(&res);
                return 0;
        }
        if (streq(pos[0], "fetch-manifest") && n == 2) {
                struct kiln_registry_fetch_options fo = {
                        .cancel = cancel,
                        .on_event = on_event,
                        .userdata = (void *) id,
                };
                struct kiln_registry_manifest mf = { 0 };
                json_t *o;

                r = kiln_registry_fetch_manifest(t->client, pos[1], &fo, &mf, &err);
                if (r < 0)
                        return fail(err);
                o = json_object();
                json_object_set_new(o, "ref", str_or_null(mf.ref));
                json_object_set_new(o, "digest", str_or_null(mf.digest));
                json_object_set_new(o, "mediaType", str_or_null(mf.media_type));
                json_object_set_new(o, "size", json_integer((json_int_t) mf.size));
                json_object_set_new(o, "data", json_stringn(mf.data, mf.size));
                emit_result(o);
                kiln_registry_manifest_release(&mf);
                return 0;
        }
        if (streq(pos[0], "pull") && n == 2) {
                struct kiln_registry_pull_options po = {
                        .platform = platform,
                        .all_platforms = all_platforms,
                        .metadata_only = metadata_only,
                        .cancel = cancel,
                        .on_event = on_event,
                        .userdata = (void *) id,
                };
                struct kiln_registry_pull_result res = { 0 };

                r = kiln_registry_pull(t->client, t->store, pos[1], &po, &res, &err);
                if (r < 0)
                        return fail(err);
                emit_result(pull_json(&res));
                kiln_registry_pull_result_release(&res);
                return 0;
        }
        if (streq(pos[0], "push") && n == 3) {
                _cleanup_free_ char *digest = NULL, *mt = NULL;
                struct kiln_registry_push_options po = {
                        .mount_from = mount_from,
                        .chunk_size = chunk_size,
                        .cancel = cancel,
                        .on_event = on_event,
                        .userdata = (void *) id,
                };
                struct kiln_registry_push_result res = { 0 };

                r = import_layout(t->store, pos[1], &digest, &mt, &err);
                if (r < 0)
                        return fail(err);
                r = kiln_registry_push(t->client, t->store, pos[2], digest, mt, &po, &res, &err);
                if (r < 0)
                        return fail(err);
                emit_result(push_json(&res));
                kiln_registry_push_result_release(&res);
                return 0;
        }
        if (streq(pos[0], "copy") && n == 3) {
                struct kiln_registry_push_options po = {
                        .mount_from = mount_from,
                        .chunk_size = chunk_size,
                        .cancel = cancel,
                        .on_event = on_event,
                        .userdata = (void *) id,
                };
                struct kiln_registry_push_result res = { 0 };

                r = kiln_registry_copy(t->client, t->store, pos[1], pos[2], &po, &res, &err);
                if (r < 0)
                        return fail(err);
                emit_result(push_json(&res));
                kiln_registry_push_result_release(&res);
                return 0;
        }
        return 2;
}

struct batch_job {
        struct tool *t;
        char *line;
        char *id;
        char *argv[COMMAND_ARGS_MAX + 2];
        int argc;
        pthread_t thread;
};

static void *batch_thread(void *userdata)
{
        struct batch_job *j = userdata;

        if (run_command(j->t, j->id, j->argc, j->argv) == 2) {
                json_t *o = json_object();
                json_object_set_new(o, "error", json_string("bad command"));
                emit(o);
        }
        return NULL;
}

static int run_batch(struct tool *t)
{
        struct batch_job **jobs = NULL;
        size_t n_jobs = 0;
        char *line = NULL;
        size_t cap = 0;
        int status = 0;

        while (getline(&line, &cap, stdin) > 0) {
                struct batch_job *j = kiln_xcalloc(1, sizeof(*j));
                char *save = NULL, *tok;

                j->t = t;
                j->line = kiln_xstrdup(line);
                for (tok = strtok_r(j->line, " \t\n", &save); tok;
                     tok = strtok_r(NULL, " \t\n", &save)) {
                        if (!j->id)
                                j->id = tok;
                        else if (j->argc < COMMAND_ARGS_MAX + 1)
                                j->argv[j->argc++] = tok;
                }
                if (!j->id) {
                        free(j->line);
                        free(j);
                        continue;
                }
                if (pthread_create(&j->thread, NULL, batch_thread, j) != 0) {
                        fprintf(stderr, "registry-tool: cannot start a thread\n");
                        free(j->line);
                        free(j);
                        status = 1;
                        break;
                }
                jobs = kiln_xreallocarray(jobs, n_jobs + 1, sizeof(*jobs));
                jobs[n_jobs++] = j;
        }
        free(line);
        for (size_t i = 0; i < n_jobs; i++) {
                pthread_join(jobs[i]->thread, NULL);
                free(jobs[i]->line);
                free(jobs[i]);
        }
        free(jobs);
        return status;
}

static void usage(FILE *f)
{
        fputs("usage: registry-tool --config FILE --root DIR [--debug] [--log-format text|json]\n"
              "                     resolve REF\n"
              "                   | fetch-manifest REF\n"
              "                   | pull REF [--platform P] [--all-platforms] [--metadata-only]\n"
              "                   | push LAYOUT-DIR[:TAG] REF [--mount-from REPO] "
              "[--chunk-size BYTES]\n"
              "                   | copy SRC-REF DEST-REF [--chunk-size BYTES]\n"
              "                   | batch   (\"ID VERB ARGS...\" lines on stdin)\n"
              "  every verb: [--cancel-after MS] (sets the operation's cancel flag then)\n",
              f);
}

int main(int argc, char **argv)
{
        const char *config_path = NULL, *root = NULL, *log_format = NULL;
        bool debug = false;
        _cleanup_(kiln_config_freep) struct kiln_config *config = NULL;
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *store = NULL;
        _cleanup_(kiln_registry_transfer_manager_freep) struct kiln_registry_transfer_manager *m =
                NULL;
        _cleanup_(kiln_registry_client_freep) struct kiln_registry_client *client = NULL;
        struct kiln_registry_transfer_manager_options mo = { 0 };
        struct kiln_config_diags diags = { 0 };
        struct kiln_error *err = NULL;
        char *rest[COMMAND_ARGS_MAX + 2];
        int n_rest = 0, r;
        struct tool t;

        /* The global options, anywhere; the rest is the command. */
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (streq(a, "--config") && i + 1 < argc)
                        config_path = argv[++i];
                else if (streq(a, "--root") && i + 1 < argc)
                        root = argv[++i];
                else if (streq(a, "--log-format") && i + 1 < argc)
                        log_format = argv[++i];
                else if (streq(a, "--debug"))
                        debug = true;
                else if (streq(a, "--help") || streq(a, "-h")) {
                        usage(stdout);
                        return 0;
                } else if (n_rest < COMMAND_ARGS_MAX + 1)
                        rest[n_rest++] = argv[i];
        }
        if (!config_path || !root || n_rest == 0) {
                usage(stderr);
                return 2;
        }

        config = kiln_config_new();
        r = kiln_config_load_file(config, config_path, true, &diags, &err);
        if (r < 0 || kiln_config_diags_count(&diags, KILN_CONFIG_ERROR) > 0) {
                kiln_config_diags_print(&diags, stderr);
                kiln_config_diags_release(&diags);
                if (!err)
                        kiln_error_set(&err, -EINVAL, "invalid config '%s'", config_path);
                return fail(err);
        }
        kiln_config_diags_print(&diags, stderr);
        kiln_config_diags_release(&diags);
        kiln_config_set_defaults(config);

        /* Logging as kilnd sets it up: --debug, else the config's level. */
        kiln_log_set_fd(STDERR_FILENO);
        kiln_log_set_level(debug ? KILN_LOG_DEBUG : kiln_log_level_from_string(config->log.level));
        if (log_format || config->log.format)
                kiln_log_set_format(
                        kiln_log_format_from_string(log_format ? log_format : config->log.format));

        r = kiln_content_store_open(root, &store, &err);
        if (r < 0)
                return fail(err);
        mo.max_concurrency = (unsigned) config->system.max_registry_concurrency;
        r = kiln_registry_transfer_manager_new(&mo, &m, &err);
        if (r < 0)
                return fail(err);
        r = kiln_registry_client_new(m, config, NULL, &client, &err);
        if (r < 0)
                return fail(err);

        t = (struct tool){ .store = store, .m = m, .client = client };
        if (streq(rest[0], "batch") && n_rest == 1)
                return run_batch(&t);
        r = run_command(&t, NULL, n_rest, rest);
        if (r == 2)
                usage(stderr);
        return r;
}
