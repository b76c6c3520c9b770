/* SPDX-License-Identifier: Apache-2.0 */
/* Image configs: image-spec's config-schema.json, and Docker's as Go reads it. */

#include "content-internal.h"

static const enum kiln_content_media_type config_types[] = {
        KILN_CONTENT_MEDIA_OCI_CONFIG,
        KILN_CONTENT_MEDIA_DOCKER_CONFIG,
};

struct kiln_content_config *kiln_content_config_free(struct kiln_content_config *c)
{
        size_t i;

        if (!c)
                return NULL;
        kiln_content_platform_release(&c->platform);
        free(c->created);
        free(c->author);
        strv_free(c->diff_ids);
        for (i = 0; i < c->n_history; i++) {
                free(c->history[i].created);
                free(c->history[i].created_by);
                free(c->history[i].author);
                free(c->history[i].comment);
        }
        free(c->history);
        free(c->user);
        strv_free(c->env);
        strv_free(c->entrypoint);
        strv_free(c->cmd);
        free(c->working_dir);
        strv_free(c->exposed_ports);
        strv_free(c->volumes);
        kiln_content_annotations_release(&c->labels);
        free(c->stop_signal);
        json_decref(c->raw);
        free(c);
        return NULL;
}

static int check_created(struct doc_ctx *c, const char *path, const char *key, const char *v)
{
        _cleanup_free_ char *q = NULL;

        if (!v || date_time_valid(v))
                return 0;
        q = quote_string(v);
        return doc_error(c, path, key, "%s is not an RFC 3339 date-time", q);
}

static int exec_config(struct doc_ctx *c, json_t *obj, struct kiln_content_config *cfg)
{
        const char *path = "$.config";
        size_t i;
        int r;

        if (!json_is_object(obj)) {
                _cleanup_free_ char *got = json_brief(obj);

                return doc_error(c, path, NULL, "expected an object, got %s", got);
        }
        r = get_string(c, obj, path, "User", false, &cfg->user);
        if (r >= 0)
                r = get_object_keys(c, obj, path, "ExposedPorts", false, &cfg->exposed_ports);
        if (r >= 0)
                r = get_strv(c, obj, path, "Env", false, &cfg->env);
        if (r < 0)
                return r;
        /* image-spec's validator: every Env entry matches ^[^=]+=.*$. Docker
         * configs are read as Go reads them, without that check. */
        for (i = 0; !c->lenient_null && cfg->env && cfg->env[i]; i++)
                if (cfg->env[i][0] == '=' || !strchr(cfg->env[i], '=')) {
                        _cleanup_free_ char *q = quote_string(cfg->env[i]);

                        return doc_error(c, "$.config.Env", NULL, "[%zu]: %s is not KEY=value", i,
                                         q);
                }
        r = get_strv(c, obj, path, "Entrypoint", true, &cfg->entrypoint);
        if (r >= 0)
                r = get_strv(c, obj, path, "Cmd", true, &cfg->cmd);
        if (r >= 0)
                r = get_object_keys(c, obj, path, "Volumes", true, &cfg->volumes);
        if (r >= 0)
                r = get_string(c, obj, path, "WorkingDir", false, &cfg->working_dir);
        if (r >= 0)
                r = get_string_map(c, obj, path, "Labels", true, &cfg->labels);
        if (r >= 0)
                r = get_string(c, obj, path, "StopSignal", false, &cfg->stop_signal);
        if (r >= 0)
                r = get_bool(c, obj, path, "ArgsEscaped", &cfg->args_escaped);
        return r;
}

static int rootfs(struct doc_ctx *c, json_t *root, struct kiln_content_config *cfg)
{
        json_t *obj = json_object_get(root, "rootfs");
        _cleanup_free_ char *type = NULL;
        size_t i;
        int r;

        if (!obj || (json_is_null(obj) && c->lenient_null))
                return doc_error(c, "$", "rootfs", "required field is missing");
        if (!json_is_object(obj)) {
                _cleanup_free_ char *got = json_brief(obj);

                return doc_error(c, "$", "rootfs", "expected an object, got %s", got);
        }
        r = get_string(c, obj, "$.rootfs", "type", true, &type);
        if (r < 0)
                return r;
        if (!streq(type, "layers")) {
                _cleanup_free_ char *q = quote_string(type);

                return doc_error(c, "$.rootfs", "type", "expected 'layers', got %s", q);
        }
        r = get_strv(c, obj, "$.rootfs", "diff_ids", false, &cfg->diff_ids);
        if (r < 0)
                return r;
        if (!cfg->diff_ids)
                return doc_error(c, "$.rootfs", "diff_ids", "required field is missing");
        if (strv_length(cfg->diff_ids) > KILN_CONTENT_LIMIT_LAYERS)
                return doc_error(c, "$.rootfs", "diff_ids",
                                 "%zu entries, more than the limit of %d",
                                 strv_length(cfg->diff_ids), KILN_CONTENT_LIMIT_LAYERS);
        for (i = 0; cfg->diff_ids[i]; i++) {
                _cleanup_free_ char *p = path_index("$.rootfs.diff_ids", i);

                r = digest_check_any(c, p, NULL, cfg->diff_ids[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int history(struct doc_ctx *c, json_t *root, struct kiln_content_config *cfg)
{
        json_t *a = json_object_get(root, "history");
        size_t i;
        int r;

        if (!a || (json_is_null(a) && c->lenient_null))
                return 0;
        if (!json_is_array(a)) {
                _cleanup_free_ char *got = json_brief(a);

                return doc_error(c, "$", "history", "expected an array, got %s", got);
        }
        cfg->history = kiln_xcalloc(json_array_size(a) + 1, sizeof(*cfg->history));
        for (i = 0; i < json_array_size(a); i++) {
                struct kiln_content_history *h = &cfg->history[i];
                _cleanup_free_ char *p = path_index("$.history", i);
                json_t *item = json_array_get(a, i);

                cfg->n_history = i + 1;
                if (!json_is_object(item)) {
                        _cleanup_free_ char *got = json_brief(item);

                        return doc_error(c, p, NULL, "expected an object, got %s", got);
                }
                r = get_string(c, item, p, "created", false, &h->created);
                if (r >= 0)
                        r = check_created(c, p, "created", h->created);
                if (r >= 0)
                        r = get_string(c, item, p, "author", false, &h->author);
                if (r >= 0)
                        r = get_string(c, item, p, "created_by", false, &h->created_by);
                if (r >= 0)
                        r = get_string(c, item, p, "comment", false, &h->comment);
                if (r >= 0)
                        r = get_bool(c, item, p, "empty_layer", &h->empty_layer);
                if (r < 0)
                        return r;
        }
        return 0;
}

int config_from_root(struct doc_ctx *c, json_t *root, enum kiln_content_media_type mt,
                     struct kiln_content_config **ret)
{
        _cleanup_(kiln_content_config_freep) struct kiln_content_config *cfg = NULL;
        struct kiln_content_platform *p;
        json_t *exec;
        int r;

        cfg = kiln_xcalloc(1, sizeof(*cfg));
        cfg->media_type = mt;
        cfg->raw = json_incref(root);
        c->noun = kiln_content_media_type_noun(mt);
        c->lenient_null = mt == KILN_CONTENT_MEDIA_DOCKER_CONFIG;
        p = &cfg->platform;

        r = get_string(c, root, "$", "created", false, &cfg->created);
        if (r >= 0)
                r = check_created(c, "$", "created", cfg->created);
        if (r >= 0)
                r = get_string(c, root, "$", "author", false, &cfg->author);
        if (r >= 0)
                r = get_string(c, root, "$", "architecture", true, &p->architecture);
        if (r >= 0)
                r = get_string(c, root, "$", "os", true, &p->os);
        if (r >= 0)
                r = get_string(c, root, "$", "os.version", false, &p->os_version);
        if (r >= 0)
                r = get_strv(c, root, "$", "os.features", false, &p->os_features);
        if (r >= 0)
                r = get_string(c, root, "$", "variant", false, &p->variant);
        if (r < 0)
                return r;
        exec = json_object_get(root, "config");
        if (exec && !(json_is_null(exec) && c->lenient_null)) {
                r = exec_config(c, exec, cfg);
                if (r < 0)
                        return r;
        }
        r = rootfs(c, root, cfg);
        if (r >= 0)
                r = history(c, root, cfg);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(cfg);
        return 0;
}

int kiln_content_config_parse(const char *data, size_t n, const char *media_type,
                              struct kiln_content_config **ret, struct kiln_error **err)
{
        enum kiln_content_media_type mt = KILN_CONTENT_MEDIA_OCI_CONFIG;
        struct doc_ctx c = { .err = err };
        json_t *root = NULL;
        int r;

        r = media_type_expect(media_type, config_types, ELEMENTSOF(config_types), "parse config",
                              &mt, err);
        if (r < 0)
                return r;
        c.noun = kiln_content_media_type_noun(mt);
        r = doc_load(&c, data, n, KILN_CONTENT_LIMIT_CONFIG, &root);
        if (r < 0)
                return r;
        r = config_from_root(&c, root, mt, ret);
        json_decref(root);
        return r;
}

int kiln_content_config_serialize(const struct kiln_content_config *c, struct kiln_buf *out)
{
        return kiln_content_json_dump(c->raw, 0, out);
}
