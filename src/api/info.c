/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "api-internal.h"
#include "config/config.h"

/* json_string() refuses invalid UTF-8, which a path given on the command
 * line may well be; the summary then shows '?' for the bytes it cannot
 * carry rather than failing the whole request. NULL only on OOM. */
static json_t *json_str(const char *s)
{
        _cleanup_free_ char *copy = NULL;
        json_t *j;

        if (!s)
                return json_null();
        j = json_string(s);
        if (j)
                return j;
        copy = kiln_xstrdup(s);
        for (char *p = copy; *p; p++)
                if ((unsigned char) *p >= 0x80)
                        *p = '?';
        return json_string(copy);
}

json_t *kiln_api_json_string(const char *s)
{
        return json_str(s);
}

/* ---- helpers of the whole module (api-internal.h) ---- */

const char *kiln_api_name_to_string(const char *const *names, size_t n, int i)
{
        return i >= 0 && (size_t) i < n ? names[i] : NULL;
}

int kiln_api_name_from_string(const char *const *names, size_t n, const char *s)
{
        for (size_t i = 0; s && i < n; i++)
                if (names[i] && streq(s, names[i]))
                        return (int) i;
        return -EINVAL;
}

json_t *kiln_api_json_strv(const char *const *v, size_t n)
{
        json_t *a = json_array();

        if (!a)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(a, json_str(v[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

int kiln_api_json_set(json_t *o, const char *key, json_t *value)
{
        return json_object_set_new(o, key, value) < 0 ? -ENOMEM : 0;
}

int kiln_api_json_set_str(json_t *o, const char *key, const char *value)
{
        return value ? kiln_api_json_set(o, key, json_str(value)) : 0;
}

int kiln_api_json_set_int(json_t *o, const char *key, int64_t value)
{
        return kiln_api_json_set(o, key, json_integer(value));
}

int kiln_api_json_set_uint(json_t *o, const char *key, uint64_t value)
{
        return kiln_api_json_set(o, key,
                                 json_integer(value > INT64_MAX ? INT64_MAX : (json_int_t) value));
}

int kiln_api_json_finish(json_t *o, int r, json_t **ret)
{
        if (r < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        *ret = o;
        return 0;
}

int kiln_api_json_get_str(const json_t *o, const char *what, const char *key, bool required,
                          size_t max, char **ret, struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                if (required)
                        return kiln_error_set(err, -EINVAL, "%s: missing \"%s\"", what, key);
                return 0;
        }
        if (!json_is_string(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be a string", what, key);
        if (max && json_string_length(v) > max)
                return kiln_error_set(err, -E2BIG, "%s: \"%s\" is longer than %zu bytes", what, key,
                                      max);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" holds a NUL character", what, key);
        free(*ret);
        *ret = kiln_xstrndup(json_string_value(v), json_string_length(v));
        return 0;
}

int kiln_api_json_get_int(const json_t *o, const char *what, const char *key, bool required,
                          int64_t min, int64_t max, int64_t *ret, struct kiln_error **err)
{
        const json_t *v = json_object_get(o, key);

        if (!v) {
                if (required)
                        return kiln_error_set(err, -EINVAL, "%s: missing \"%s\"", what, key);
                return 0;
        }
        if (!json_is_integer(v))
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" must be an integer", what, key);
        if (json_integer_value(v) < min || json_integer_value(v) > max)
                return kiln_error_set(err, -EINVAL, "%s: \"%s\" is out of range", what, key);
        *ret = json_integer_value(v);
        return 0;
}

int kiln_api_json_check_keys(const json_t *o, const char *what, const char *const *allowed,
                             struct kiln_error **err)
{
        const char *k;
        json_t *v;

        json_object_foreach ((json_t *) o, k, v) {
                bool ok = false;

                for (size_t i = 0; allowed[i] && !ok; i++)
                        ok = streq(k, allowed[i]);
                if (!ok)
                        return kiln_error_set(err, -EINVAL, "%s: unknown field '%s'", what, k);
        }
        return 0;
}

/* ---- daemon information ---- */

static int worker_oci_to_json(const struct kiln_config_worker_oci *w, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        if (w->enabled >= 0)
                r |= kiln_api_json_set(o, "enabled", json_boolean(w->enabled));
        r |= kiln_api_json_set(o, "networkMode",
                               json_str(w->network_mode ? w->network_mode : "auto"));
        r |= kiln_api_json_set(
                o, "platforms",
                kiln_api_json_strv((const char *const *) w->platforms, w->n_platforms));
        r |= kiln_api_json_set(o, "max-parallelism", json_integer(w->max_parallelism));
        r |= kiln_api_json_set(o, "snapshotter",
                               json_str(w->snapshotter ? w->snapshotter : "auto"));
        if (r < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        *ret = o;
        return 0;
}

static int registry_to_json(const struct kiln_config_registry *reg, json_t **ret)
{
        json_t *o = json_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set(
                o, "mirrors",
                kiln_api_json_strv((const char *const *) reg->mirrors, reg->n_mirrors));
        if (reg->http >= 0)
                r |= kiln_api_json_set(o, "http", json_boolean(reg->http));
        if (reg->insecure >= 0)
                r |= kiln_api_json_set(o, "insecure", json_boolean(reg->insecure));
        /* Counts only: the paths name where keys live, which a client that
         * can reach the socket has no business learning. */
        if (reg->n_ca > 0)
                r |= kiln_api_json_set(o, "ca", json_integer((json_int_t) reg->n_ca));
        if (reg->n_keypairs > 0)
                r |= kiln_api_json_set(o, "keypairs", json_integer((json_int_t) reg->n_keypairs));
        if (r < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        *ret = o;
        return 0;
}

static int config_to_json(const struct kiln_api_info *info, json_t **ret)
{
        const struct kiln_config *c = info->config;
        json_t *config = NULL, *worker = NULL, *oci = NULL, *registries = NULL;
        int r = 0;

        config = json_object();
        worker = json_object();
        registries = json_object();
        if (!config || !worker || !registries)
                goto oom;

        if (worker_oci_to_json(&c->worker_oci, &oci) < 0)
                goto oom;
        r |= kiln_api_json_set(worker, "oci", oci);
        if (c->worker_containerd.enabled > 0) {
                json_t *ctd = json_pack("{s:b, s:b}", "enabled", 1, "supported", 0);

                r |= kiln_api_json_set(worker, "containerd", ctd);
        }

        for (size_t i = 0; i < c->n_registries; i++) {
                json_t *reg = NULL;

                if (registry_to_json(&c->registries[i], &reg) < 0)
                        goto oom;
                r |= kiln_api_json_set(registries, c->registries[i].host, reg);
        }

        if (info->config_file)
                r |= kiln_api_json_set(config, "configFile", json_str(info->config_file));
        r |= kiln_api_json_set(
                config, "addresses",
                kiln_api_json_strv((const char *const *) (char *const *) info->addresses,
                                   info->n_addresses));
        if (c->log.level)
                r |= kiln_api_json_set(config, "logLevel", json_str(c->log.level));
        r |= kiln_api_json_set(config, "worker", worker);
        worker = NULL;
        r |= kiln_api_json_set(config, "registries", registries);
        registries = NULL;
        r |= kiln_api_json_set(config, "maxRegistryConcurrency",
                               json_integer(c->system.max_registry_concurrency));
        if (r < 0)
                goto oom;
        *ret = config;
        return 0;

oom:
        json_decref(config);
        json_decref(worker);
        json_decref(registries);
        return -ENOMEM;
}

int kiln_api_info_to_json(const struct kiln_api_info *info, json_t **ret)
{
        json_t *o, *config = NULL;
        int r = 0;

        o = json_object();
        if (!o)
                return -ENOMEM;
        r |= kiln_api_json_set(o, "version", json_str(info->version));
        r |= kiln_api_json_set(o, "pid", json_integer(info->pid));
        r |= kiln_api_json_set(o, "root", json_str(info->root));
        if (info->network_mode) {
                json_t *n = json_pack("{s:s}", "mode", info->network_mode);

                if (n && info->pool)
                        r |= kiln_api_json_set(
                                n, "pool",
                                json_pack("{s:i, s:i, s:I, s:I}", "idle", (int) info->pool->idle,
                                          "inUse", (int) info->pool->in_use, "created",
                                          (json_int_t) info->pool->created, "released",
                                          (json_int_t) info->pool->released));
                r |= kiln_api_json_set(o, "network", n);
        }
        if (r == 0 && config_to_json(info, &config) == 0)
                r |= kiln_api_json_set(o, "config", config);
        else
                r = -ENOMEM;
        if (r < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        *ret = o;
        return 0;
}

char *kiln_api_json_dump(const json_t *body, size_t *ret_len)
{
        _cleanup_free_ char *s = NULL;
        char *out;
        size_t n;

        s = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
                return NULL;
        n = strlen(s);
        out = kiln_xmalloc(n + 2);
        memcpy(out, s, n);
        out[n] = '\n';
        out[n + 1] = '\0';
        if (ret_len)
                *ret_len = n + 1;
        return out;
}

char *kiln_api_error_body(const char *message, size_t *ret_len)
{
        json_t *o;
        char *s;

        o = json_object();
        if (!o)
                return NULL;
        if (kiln_api_json_set(o, "error", json_str(message)) < 0) {
                json_decref(o);
                return NULL;
        }
        s = kiln_api_json_dump(o, ret_len);
        json_decref(o);
        return s;
}

char *kiln_api_error_parse(const char *body, size_t len)
{
        json_t *o, *e;
        char *s = NULL;

        o = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        if (!o)
                return NULL;
        e = json_object_get(o, "error");
        if (json_is_string(e))
                s = kiln_xstrdup(json_string_value(e));
        json_decref(o);
        return s;
}
