/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dockerfile to LLB, following BuildKit's dockerfile2llb step by step:
 *
 *   parse -> instructions -> meta args (ARGs before the first FROM) ->
 *   stages (base names and platforms expanded with the meta args) ->
 *   target -> dependency graph (FROM <stage>, COPY --from, RUN --mount
 *   from=) and cycle check -> base images resolved for the stages the target
 *   needs, ONBUILD triggers added -> stages dispatched in order -> the
 *   target's image config finished.
 *
 * Ops are first built as "nodes": LLB ops whose input references point at
 * other nodes. The build context source can only be finished at the end
 * (its follow paths are what every stage copied from it), so the nodes the
 * target needs are added to the LLB definition once everything is
 * dispatched, in creation order, which is a dependency order.
 */

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>

#include "base/buf.h"
#include "base/goquote.h"
#include "base/macro.h"
#include "base/pattern.h"
#include "base/suggest.h"
#include "content/ref.h"
#include "dockerfile/convert.h"
#include "dockerfile/instructions.h"
#include "dockerfile/parser.h"
#include "dockerfile/shell.h"

#define EMPTY_IMAGE_NAME "scratch"
#define HISTORY_COMMENT  "buildkit.dockerfile.v0"
#define DEFAULT_PATH_ENV "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DEFAULT_CONTEXT  "context"
/* Text buffers built here (names, history lines): bounded by the input. */
#define TEXT_MAX (64u << 20)

/* ------------------------------------------------------------------------ */
/* small helpers */

static char *xstrdup0(const char *s)
{
        return s ? kiln_xstrdup(s) : NULL;
}

static void freep_str(char **p)
{
        free(*p);
        *p = NULL;
}

static void set_str(char **p, const char *s)
{
        char *n = xstrdup0(s);
        free(*p);
        *p = n;
}

static bool str_empty(const char *s)
{
        return !s || !*s;
}

static bool ends_with(const char *s, const char *suffix)
{
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* A growable vector of owned strings, NULL-terminated. */
struct strv {
        char **v;
        size_t n;
};

static void strv_push_take(struct strv *s, char *x)
{
        s->v = kiln_xreallocarray(s->v, s->n + 2, sizeof(char *));
        s->v[s->n++] = x;
        s->v[s->n] = NULL;
}

static void strv_push(struct strv *s, const char *x)
{
        strv_push_take(s, kiln_xstrdup(x));
}

static void strv_release(struct strv *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        s->v = NULL;
        s->n = 0;
}

static void strv_copy(struct strv *dst, const struct strv *src)
{
        strv_release(dst);
        for (size_t i = 0; i < src->n; i++)
                strv_push(dst, src->v[i]);
}

static bool strv_contains(const struct strv *s, const char *x)
{
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->v[i], x))
                        return true;
        return false;
}

static int cmp_strp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sets of strings: sorted and unique once compacted. */
static void set_sort(struct strv *s)
{
        if (s->n > 1)
                qsort(s->v, s->n, sizeof(char *), cmp_strp);
}

/* Sorts and removes duplicates. */
static void set_compact(struct strv *s)
{
        size_t w = 0;
        set_sort(s);
        for (size_t i = 0; i < s->n; i++) {
                if (w > 0 && streq(s->v[w - 1], s->v[i])) {
                        free(s->v[i]);
                        continue;
                }
                s->v[w++] = s->v[i];
        }
        s->n = w;
        if (s->v)
                s->v[w] = NULL;
}

/* Membership in a compacted set. */
static bool set_has(const struct strv *s, const char *x)
{
        return s->n > 0 && bsearch(&x, s->v, s->n, sizeof(char *), cmp_strp) != NULL;
}

/* Adds to a set kept with duplicates until it doubles: amortised
 * O(log n) per element however many are added. *mark is the size after the
 * last compaction. */
static void bag_add(struct strv *s, size_t *mark, const char *x)
{
        strv_push(s, x);
        if (s->n >= 2 * *mark + 64) {
                set_compact(s);
                *mark = s->n;
        }
}

/* Joins v with sep into a new string. */
static char *strv_join(char *const *v, size_t n, const char *sep)
{
        struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        (void) kiln_buf_puts(&b, sep);
                (void) kiln_buf_puts(&b, v[i]);
        }
        return kiln_buf_steal(&b);
}

/* ---- paths, as Go's path package ---- */

/* path.Join of two elements (empty elements ignored). */
static char *path_join(const char *a, const char *b)
{
        if (str_empty(a) && str_empty(b))
                return kiln_xstrdup("");
        _cleanup_free_ char *j = NULL;
        if (str_empty(a))
                j = kiln_xstrdup(b);
        else if (str_empty(b))
                j = kiln_xstrdup(a);
        else
                j = kiln_xasprintf("%s/%s", a, b);
        return kiln_pattern_clean(j);
}

static char *path_join3(const char *a, const char *b, const char *c)
{
        _cleanup_free_ char *ab = path_join(a, b);
        return path_join(ab, c);
}

/* path.Base */
static char *path_base(const char *p)
{
        if (!*p)
                return kiln_xstrdup(".");
        size_t n = strlen(p);
        while (n > 0 && p[n - 1] == '/')
                n--;
        if (n == 0)
                return kiln_xstrdup("/");
        size_t i = n;
        while (i > 0 && p[i - 1] != '/')
                i--;
        return kiln_xstrndup(p + i, n - i);
}

static bool path_is_abs(const char *p)
{
        return p[0] == '/';
}

/* Gives the normalised path np (taken) back the "/" or "/." the path p as
 * written ended with: the destination is a directory. */
static char *keep_trailing_slash(char *np, const char *p)
{
        char *t;
        if (ends_with(p, "/") && !ends_with(np, "/"))
                t = kiln_xasprintf("%s/", np);
        else if (ends_with(p, "/."))
                t = kiln_xasprintf("%s%s.", np, streq(np, "/") ? "" : "/");
        else
                return np;
        free(np);
        return t;
}

/* BuildKit's system.NormalizePath for a non-Windows OS. */
static char *normalize_path(const char *parent, const char *p, bool keep_slash)
{
        _cleanup_free_ char *par = NULL, *np = NULL;
        par = kiln_xstrdup(str_empty(parent) ? "/" : parent);
        if (!path_is_abs(par)) {
                char *t = path_join("/", par);
                free(par);
                par = t;
        }
        np = kiln_xstrdup(*p ? p : par);
        if (!path_is_abs(np)) {
                char *t = path_join(par, np);
                free(np);
                np = t;
        }
        return keep_slash ? keep_trailing_slash(TAKE_PTR(np), p) : TAKE_PTR(np);
}

/* The LLB client's normalizePath: how file op paths end up in the op. */
static char *llb_normalize_path(const char *parent, const char *p, bool keep_slash)
{
        char *c = kiln_pattern_clean(p);
        if (!path_is_abs(c)) {
                char *t = path_join3("/", parent, c);
                free(c);
                c = t;
        }
        return keep_slash ? keep_trailing_slash(c, p) : c;
}

/* ---- Go formatting ---- */

/* Go's %q of a []string: ["a" "b"]. */
static char *go_quote_list(char *const *v, size_t n)
{
        struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
        (void) kiln_buf_putc(&b, '[');
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        (void) kiln_buf_putc(&b, ' ');
                (void) kiln_buf_go_quote(&b, v[i], strlen(v[i]));
        }
        (void) kiln_buf_putc(&b, ']');
        return kiln_buf_steal(&b);
}

/* Go's %v of a []string: [a b]. */
static char *go_list(char *const *v, size_t n)
{
        _cleanup_free_ char *j = strv_join(v, n, " ");
        return kiln_xasprintf("[%s]", j);
}

/* Go's strconv.FormatFloat(f, 'f', -1, 64) for the fractions Duration.String
 * prints: digits of v / 10^prec with trailing zeros removed. */
static void fmt_frac(struct kiln_buf *b, uint64_t v, int prec)
{
        char digits[32];
        int len = 0;
        bool print = false;
        for (int i = 0; i < prec; i++) {
                unsigned d = (unsigned) (v % 10);
                print = print || d != 0;
                if (print)
                        digits[len++] = (char) ('0' + d);
                v /= 10;
        }
        (void) kiln_buf_printf(b, "%" PRIu64, v);
        if (len > 0) {
                (void) kiln_buf_putc(b, '.');
                for (int i = len - 1; i >= 0; i--)
                        (void) kiln_buf_putc(b, digits[i]);
        }
}

/* Go's time.Duration.String. */
static void go_duration(struct kiln_buf *b, int64_t d)
{
        uint64_t u = d < 0 ? (uint64_t) 0 - (uint64_t) d : (uint64_t) d;
        if (d < 0)
                (void) kiln_buf_putc(b, '-');
        if (u < 1000000000ull) {
                if (u == 0) {
                        (void) kiln_buf_puts(b, "0s");
                        return;
                }
                if (u < 1000ull) {
                        (void) kiln_buf_printf(b, "%" PRIu64 "ns", u);
                        return;
                }
                if (u < 1000000ull) {
                        fmt_frac(b, u, 3);
                        (void) kiln_buf_puts(b, "µs");
                        return;
                }
                fmt_frac(b, u, 6);
                (void) kiln_buf_puts(b, "ms");
                return;
        }
        uint64_t secs = u / 1000000000ull, frac = u % 1000000000ull;
        uint64_t hours = secs / 3600, mins = (secs / 60) % 60;
        secs %= 60;
        if (hours > 0)
                (void) kiln_buf_printf(b, "%" PRIu64 "h", hours);
        if (hours > 0 || mins > 0)
                (void) kiln_buf_printf(b, "%" PRIu64 "m", mins);
        fmt_frac(b, secs * 1000000000ull + frac, 9);
        (void) kiln_buf_putc(b, 's');
}

/* ------------------------------------------------------------------------ */
/* environment lists, as the LLB client's EnvList: setting a key moves it to
 * the end; keys are case-sensitive */

struct envlist {
        char **kv; /* name, value, name, value... */
        size_t n;  /* pairs */
};

static ssize_t env_find(const struct envlist *e, const char *key)
{
        for (size_t i = 0; i < e->n; i++)
                if (streq(e->kv[2 * i], key))
                        return (ssize_t) i;
        return -1;
}

static const char *env_get(const struct envlist *e, const char *key)
{
        ssize_t i = env_find(e, key);
        return i < 0 ? NULL : e->kv[2 * i + 1];
}

static void env_delete(struct envlist *e, const char *key)
{
        ssize_t i = env_find(e, key);
        if (i < 0)
                return;
        free(e->kv[2 * i]);
        free(e->kv[2 * i + 1]);
        memmove(e->kv + 2 * i, e->kv + 2 * i + 2, (e->n - (size_t) i - 1) * 2 * sizeof(char *));
        e->n--;
}

static void env_set(struct envlist *e, const char *key, const char *value)
{
        char *k = kiln_xstrdup(key), *v = kiln_xstrdup(value);
        env_delete(e, key);
        e->kv = kiln_xreallocarray(e->kv, 2 * (e->n + 1), sizeof(char *));
        e->kv[2 * e->n] = k;
        e->kv[2 * e->n + 1] = v;
        e->n++;
}

static void env_release(struct envlist *e)
{
        for (size_t i = 0; i < 2 * e->n; i++)
                free(e->kv[i]);
        free(e->kv);
        e->kv = NULL;
        e->n = 0;
}

static void env_copy(struct envlist *dst, const struct envlist *src)
{
        env_release(dst);
        if (src->n == 0)
                return;
        /* the keys of src are unique already */
        dst->kv = kiln_xreallocarray(NULL, 2 * src->n, sizeof(char *));
        for (size_t i = 0; i < 2 * src->n; i++)
                dst->kv[i] = kiln_xstrdup(src->kv[i]);
        dst->n = src->n;
}

static struct kiln_shell_env env_shell(const struct envlist *e)
{
        return (struct kiln_shell_env){ .pairs = (const char *const *) e->kv, .n_pairs = e->n };
}

/* "KEY=value" -> key and value (no '=': value ""). */
static void split_kv(const char *s, char **key, char **value)
{
        const char *eq = strchr(s, '=');
        if (eq) {
                *key = kiln_xstrndup(s, (size_t) (eq - s));
                *value = kiln_xstrdup(eq + 1);
        } else {
                *key = kiln_xstrdup(s);
                *value = kiln_xstrdup("");
        }
}

/* ------------------------------------------------------------------------ */
/* image config: the fields of BuildKit's dockerspec.DockerOCIImage */

struct history {
        char *created; /* RFC 3339 text, NULL: absent */
        char *created_by;
        char *author;
        char *comment;
        bool empty_layer;
};

struct healthcheck {
        struct strv test;
        int64_t interval, timeout, start_period, start_interval;
        int64_t retries;
};

struct image {
        char *created; /* always dropped by the frontend, kept for the base copy */
        char *author;
        char *architecture, *os, *os_version, *variant;
        struct strv os_features;
        char *rootfs_type;
        struct strv diff_ids;
        bool diff_ids_set;
        struct history *history;
        size_t n_history;
        /* config */
        char *user;
        struct strv exposed_ports; /* a bag: see bag_add */
        size_t exposed_mark;
        struct strv env;
        bool env_set; /* distinguishes [] from absent: both are omitted */
        struct strv entrypoint;
        struct strv cmd;
        struct strv volumes; /* a bag: see bag_add */
        size_t volumes_mark;
        char *working_dir;
        struct envlist labels; /* keys unique; written sorted */
        bool labels_set;
        char *stop_signal;
        bool args_escaped;
        struct healthcheck *healthcheck;
        struct strv onbuild;
        struct strv shell;
};

static void healthcheck_free(struct healthcheck *h)
{
        if (!h)
                return;
        strv_release(&h->test);
        free(h);
}

static void image_release(struct image *img)
{
        free(img->created);
        free(img->author);
        free(img->architecture);
        free(img->os);
        free(img->os_version);
        free(img->variant);
        strv_release(&img->os_features);
        free(img->rootfs_type);
        strv_release(&img->diff_ids);
        for (size_t i = 0; i < img->n_history; i++) {
                free(img->history[i].created);
                free(img->history[i].created_by);
                free(img->history[i].author);
                free(img->history[i].comment);
        }
        free(img->history);
        free(img->user);
        strv_release(&img->exposed_ports);
        strv_release(&img->env);
        strv_release(&img->entrypoint);
        strv_release(&img->cmd);
        strv_release(&img->volumes);
        free(img->working_dir);
        env_release(&img->labels);
        free(img->stop_signal);
        healthcheck_free(img->healthcheck);
        strv_release(&img->onbuild);
        strv_release(&img->shell);
        *img = (struct image){ 0 };
}

static void image_copy(struct image *dst, const struct image *src)
{
        image_release(dst);
        dst->created = xstrdup0(src->created);
        dst->author = xstrdup0(src->author);
        dst->architecture = xstrdup0(src->architecture);
        dst->os = xstrdup0(src->os);
        dst->os_version = xstrdup0(src->os_version);
        dst->variant = xstrdup0(src->variant);
        strv_copy(&dst->os_features, &src->os_features);
        dst->rootfs_type = xstrdup0(src->rootfs_type);
        strv_copy(&dst->diff_ids, &src->diff_ids);
        dst->diff_ids_set = src->diff_ids_set;
        if (src->n_history > 0) {
                dst->history = kiln_xcalloc(src->n_history, sizeof(struct history));
                for (size_t i = 0; i < src->n_history; i++) {
                        const struct history *h = &src->history[i];
                        dst->history[i] = (struct history){
                                .created = xstrdup0(h->created),
                                .created_by = xstrdup0(h->created_by),
                                .author = xstrdup0(h->author),
                                .comment = xstrdup0(h->comment),
                                .empty_layer = h->empty_layer,
                        };
                }
                dst->n_history = src->n_history;
        }
        dst->user = xstrdup0(src->user);
        strv_copy(&dst->exposed_ports, &src->exposed_ports);
        dst->exposed_mark = src->exposed_mark;
        strv_copy(&dst->env, &src->env);
        dst->env_set = src->env_set;
        strv_copy(&dst->entrypoint, &src->entrypoint);
        strv_copy(&dst->cmd, &src->cmd);
        strv_copy(&dst->volumes, &src->volumes);
        dst->volumes_mark = src->volumes_mark;
        dst->working_dir = xstrdup0(src->working_dir);
        /* labels keep insertion order in memory; order does not matter */
        for (size_t i = 0; i < src->labels.n; i++)
                env_set(&dst->labels, src->labels.kv[2 * i], src->labels.kv[2 * i + 1]);
        dst->labels_set = src->labels_set;
        dst->stop_signal = xstrdup0(src->stop_signal);
        dst->args_escaped = src->args_escaped;
        if (src->healthcheck) {
                dst->healthcheck = kiln_xcalloc(1, sizeof(struct healthcheck));
                *dst->healthcheck = *src->healthcheck;
                dst->healthcheck->test = (struct strv){ 0 };
                strv_copy(&dst->healthcheck->test, &src->healthcheck->test);
        }
        strv_copy(&dst->onbuild, &src->onbuild);
        strv_copy(&dst->shell, &src->shell);
}

static void image_add_history(struct image *img, const char *created_by, bool empty_layer,
                              const char *created)
{
        img->history = kiln_xreallocarray(img->history, img->n_history + 1, sizeof(struct history));
        img->history[img->n_history++] = (struct history){
                .created = xstrdup0(created),
                .created_by = kiln_xstrdup(created_by),
                .comment = kiln_xstrdup(HISTORY_COMMENT),
                .empty_layer = empty_layer,
        };
}

/* Whether a "KEY=value" entry (or a bare "KEY") has the key key. */
static bool env_entry_is(const char *entry, const char *key)
{
        size_t n = strlen(key);
        return strncmp(entry, key, n) == 0 && (entry[n] == '=' || entry[n] == 0);
}

/* addEnv of dockerfile2llb: replaces in place, else appends. */
static void image_env_set(struct image *img, const char *key, const char *value)
{
        char *kv = kiln_xasprintf("%s=%s", key, value);
        for (size_t i = 0; i < img->env.n; i++)
                if (env_entry_is(img->env.v[i], key)) {
                        free(img->env.v[i]);
                        img->env.v[i] = kv;
                        return;
                }
        strv_push_take(&img->env, kv);
}

static bool image_env_has(const struct image *img, const char *key)
{
        for (size_t i = 0; i < img->env.n; i++)
                if (env_entry_is(img->env.v[i], key))
                        return true;
        return false;
}

/* emptyImage of dockerfile2llb. */
static void image_empty(struct image *img, const struct kiln_content_platform *p)
{
        image_release(img);
        img->architecture = xstrdup0(p->architecture);
        img->os = xstrdup0(p->os);
        img->os_version = xstrdup0(p->os_version);
        for (char **f = p->os_features; f && *f; f++)
                strv_push(&img->os_features, *f);
        img->variant = xstrdup0(p->variant);
        img->rootfs_type = kiln_xstrdup("layers");
        img->working_dir = kiln_xstrdup("/");
        if (!streq_ptr(p->os, "windows"))
                strv_push(&img->env, "PATH=" DEFAULT_PATH_ENV);
}

/* ---- reading a config as Go's encoding/json does (keys matched without
 * regard to case, unknown keys ignored, null leaves the zero value) ---- */

static json_t *jget(json_t *obj, const char *key)
{
        const char *k;
        json_t *v, *found = NULL;
        if (!json_is_object(obj))
                return NULL;
        v = json_object_get(obj, key);
        if (v)
                return v;
        json_object_foreach (obj, k, v)
                if (kiln_dockerfile_caseeq(k, key))
                        found = v;
        return found;
}

static int jstr(json_t *obj, const char *key, char **ret, const char *path, struct kiln_error **err)
{
        json_t *v = jget(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return kiln_error_set(
                        err, -EINVAL,
                        "json: cannot unmarshal %s into Go struct field %s.%s of type string",
                        json_is_number(v) ? "number" : "value", path, key);
        set_str(ret, json_string_value(v));
        return 0;
}

static int jstrv(json_t *obj, const char *key, struct strv *ret, bool *set, const char *path,
                 struct kiln_error **err)
{
        json_t *v = jget(obj, key), *e;
        size_t i;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return kiln_error_set(
                        err, -EINVAL,
                        "json: cannot unmarshal value into Go struct field %s.%s of type []string",
                        path, key);
        strv_release(ret);
        if (set)
                *set = true;
        json_array_foreach (v, i, e) {
                if (!json_is_string(e))
                        return kiln_error_set(err, -EINVAL,
                                              "json: cannot unmarshal value into Go struct field "
                                              "%s.%s of type string",
                                              path, key);
                strv_push(ret, json_string_value(e));
        }
        return 0;
}

/* A map[string]struct{}: the keys. */
static int jkeys(json_t *obj, const char *key, struct strv *ret, const char *path,
                 struct kiln_error **err)
{
        json_t *v = jget(obj, key), *e;
        const char *k;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_object(v))
                return kiln_error_set(err, -EINVAL,
                                      "json: cannot unmarshal value into Go struct field %s.%s of "
                                      "type map[string]struct {}",
                                      path, key);
        json_object_foreach (v, k, e)
                strv_push(ret, k);
        return 0;
}

static int jint(json_t *obj, const char *key, int64_t *ret, const char *path,
                struct kiln_error **err)
{
        json_t *v = jget(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v))
                return kiln_error_set(
                        err, -EINVAL,
                        "json: cannot unmarshal value into Go struct field %s.%s of type int64",
                        path, key);
        *ret = json_integer_value(v);
        return 0;
}

static int jbool(json_t *obj, const char *key, bool *ret, const char *path, struct kiln_error **err)
{
        json_t *v = jget(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_boolean(v))
                return kiln_error_set(
                        err, -EINVAL,
                        "json: cannot unmarshal value into Go struct field %s.%s of type bool",
                        path, key);
        *ret = json_is_true(v);
        return 0;
}

static int image_parse(const char *data, size_t len, struct image *img, struct kiln_error **err)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        json_error_t jerr;
        json_t *cfg, *v;
        int r;

        if (len > KILN_CONTENT_LIMIT_CONFIG)
                return kiln_error_set(err, -E2BIG, "image config of %zu bytes is larger than %u",
                                      len, KILN_CONTENT_LIMIT_CONFIG);
        root = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!root)
                return kiln_error_set(err, -EINVAL, "%s", jerr.text);
        if (!json_is_object(root))
                return kiln_error_set(
                        err, -EINVAL,
                        "json: cannot unmarshal value into Go value of type v1.DockerOCIImage");
        if ((r = jstr(root, "created", &img->created, "DockerOCIImage", err)) < 0 ||
            (r = jstr(root, "author", &img->author, "DockerOCIImage", err)) < 0 ||
            (r = jstr(root, "architecture", &img->architecture, "DockerOCIImage", err)) < 0 ||
            (r = jstr(root, "os", &img->os, "DockerOCIImage", err)) < 0 ||
            (r = jstr(root, "os.version", &img->os_version, "DockerOCIImage", err)) < 0 ||
            (r = jstrv(root, "os.features", &img->os_features, NULL, "DockerOCIImage", err)) < 0 ||
            (r = jstr(root, "variant", &img->variant, "DockerOCIImage", err)) < 0)
                return r;
        v = jget(root, "rootfs");
        if (v && !json_is_null(v)) {
                if ((r = jstr(v, "type", &img->rootfs_type, "RootFS", err)) < 0 ||
                    (r = jstrv(v, "diff_ids", &img->diff_ids, &img->diff_ids_set, "RootFS", err)) <
                            0)
                        return r;
        }
        v = jget(root, "history");
        if (v && !json_is_null(v)) {
                json_t *h;
                size_t i;
                if (!json_is_array(v))
                        return kiln_error_set(err, -EINVAL,
                                              "json: cannot unmarshal value into Go struct field "
                                              "DockerOCIImage.history of type []v1.History");
                img->history = kiln_xcalloc(json_array_size(v) + 1, sizeof(struct history));
                json_array_foreach (v, i, h) {
                        struct history *e = &img->history[img->n_history++];
                        if (!json_is_object(h) && !json_is_null(h))
                                return kiln_error_set(
                                        err, -EINVAL,
                                        "json: cannot unmarshal value into Go struct field "
                                        "DockerOCIImage.history of type v1.History");
                        if ((r = jstr(h, "created", &e->created, "History", err)) < 0 ||
                            (r = jstr(h, "created_by", &e->created_by, "History", err)) < 0 ||
                            (r = jstr(h, "author", &e->author, "History", err)) < 0 ||
                            (r = jstr(h, "comment", &e->comment, "History", err)) < 0 ||
                            (r = jbool(h, "empty_layer", &e->empty_layer, "History", err)) < 0)
                                return r;
                }
        }
        cfg = jget(root, "config");
        if (cfg && !json_is_null(cfg)) {
                const char *P = "DockerOCIImage.config";
                if (!json_is_object(cfg))
                        return kiln_error_set(
                                err, -EINVAL,
                                "json: cannot unmarshal value into Go struct field "
                                "DockerOCIImage.config of type v1.DockerOCIImageConfig");
                if ((r = jstr(cfg, "User", &img->user, P, err)) < 0 ||
                    (r = jkeys(cfg, "ExposedPorts", &img->exposed_ports, P, err)) < 0 ||
                    (r = jstrv(cfg, "Env", &img->env, &img->env_set, P, err)) < 0 ||
                    (r = jstrv(cfg, "Entrypoint", &img->entrypoint, NULL, P, err)) < 0 ||
                    (r = jstrv(cfg, "Cmd", &img->cmd, NULL, P, err)) < 0 ||
                    (r = jkeys(cfg, "Volumes", &img->volumes, P, err)) < 0 ||
                    (r = jstr(cfg, "WorkingDir", &img->working_dir, P, err)) < 0 ||
                    (r = jstr(cfg, "StopSignal", &img->stop_signal, P, err)) < 0 ||
                    (r = jbool(cfg, "ArgsEscaped", &img->args_escaped, P, err)) < 0 ||
                    (r = jstrv(cfg, "OnBuild", &img->onbuild, NULL, P, err)) < 0 ||
                    (r = jstrv(cfg, "Shell", &img->shell, NULL, P, err)) < 0)
                        return r;
                if (img->env.n > KILN_LIMIT_DOCKERFILE_VARS)
                        return kiln_error_set(err, -E2BIG, "more than %d environment variables",
                                              KILN_LIMIT_DOCKERFILE_VARS);
                v = jget(cfg, "Labels");
                if (v && !json_is_null(v)) {
                        const char *k;
                        json_t *e;
                        if (!json_is_object(v))
                                return kiln_error_set(err, -EINVAL,
                                                      "json: cannot unmarshal value into Go struct "
                                                      "field %s.Labels of type map[string]string",
                                                      P);
                        img->labels_set = true;
                        if (json_object_size(v) > KILN_LIMIT_DOCKERFILE_VARS)
                                return kiln_error_set(err, -E2BIG, "more than %d labels",
                                                      KILN_LIMIT_DOCKERFILE_VARS);
                        json_object_foreach (v, k, e) {
                                if (!json_is_string(e) && !json_is_null(e))
                                        return kiln_error_set(
                                                err, -EINVAL,
                                                "json: cannot unmarshal value into Go struct field "
                                                "%s.Labels of type string",
                                                P);
                                env_set(&img->labels, k,
                                        json_is_string(e) ? json_string_value(e) : "");
                        }
                }
                v = jget(cfg, "Healthcheck");
                if (v && !json_is_null(v)) {
                        const char *H = "HealthcheckConfig";
                        if (!json_is_object(v))
                                return kiln_error_set(
                                        err, -EINVAL,
                                        "json: cannot unmarshal value into Go struct field "
                                        "%s.Healthcheck of type v1.HealthcheckConfig",
                                        P);
                        img->healthcheck = kiln_xcalloc(1, sizeof(struct healthcheck));
                        if ((r = jstrv(v, "Test", &img->healthcheck->test, NULL, H, err)) < 0 ||
                            (r = jint(v, "Interval", &img->healthcheck->interval, H, err)) < 0 ||
                            (r = jint(v, "Timeout", &img->healthcheck->timeout, H, err)) < 0 ||
                            (r = jint(v, "StartPeriod", &img->healthcheck->start_period, H, err)) <
                                    0 ||
                            (r = jint(v, "StartInterval", &img->healthcheck->start_interval, H,
                                      err)) < 0 ||
                            (r = jint(v, "Retries", &img->healthcheck->retries, H, err)) < 0)
                                return r;
                }
        }
        return 0;
}

static json_t *json_strv(const struct strv *s)
{
        json_t *a = json_array();
        for (size_t i = 0; i < s->n; i++)
                json_array_append_new(a, json_string(s->v[i]));
        return a;
}

static json_t *json_set(const struct strv *s)
{
        _cleanup_(strv_release) struct strv sorted = { 0 };
        json_t *o = json_object();
        strv_copy(&sorted, s);
        set_compact(&sorted);
        for (size_t i = 0; i < sorted.n; i++)
                json_object_set_new(o, sorted.v[i], json_object());
        return o;
}

/* Go's json.Marshal of DockerOCIImage: fields in struct order, with the
 * embedded ocispec.Image's fields first and the shadowing Docker config
 * last; maps sorted by key. */
static json_t *image_to_json(const struct image *img)
{
        json_t *o = json_object(), *rootfs, *cfg;

        if (!str_empty(img->created))
                json_object_set_new(o, "created", json_string(img->created));
        if (!str_empty(img->author))
                json_object_set_new(o, "author", json_string(img->author));
        json_object_set_new(o, "architecture", json_string(img->architecture ?: ""));
        json_object_set_new(o, "os", json_string(img->os ?: ""));
        if (!str_empty(img->os_version))
                json_object_set_new(o, "os.version", json_string(img->os_version));
        if (img->os_features.n > 0)
                json_object_set_new(o, "os.features", json_strv(&img->os_features));
        if (!str_empty(img->variant))
                json_object_set_new(o, "variant", json_string(img->variant));
        rootfs = json_object();
        json_object_set_new(rootfs, "type", json_string(img->rootfs_type ?: ""));
        json_object_set_new(rootfs, "diff_ids",
                            img->diff_ids_set || img->diff_ids.n > 0 ? json_strv(&img->diff_ids)
                                                                     : json_null());
        json_object_set_new(o, "rootfs", rootfs);
        if (img->n_history > 0) {
                json_t *a = json_array();
                for (size_t i = 0; i < img->n_history; i++) {
                        const struct history *h = &img->history[i];
                        json_t *e = json_object();
                        if (!str_empty(h->created))
                                json_object_set_new(e, "created", json_string(h->created));
                        if (!str_empty(h->created_by))
                                json_object_set_new(e, "created_by", json_string(h->created_by));
                        if (!str_empty(h->author))
                                json_object_set_new(e, "author", json_string(h->author));
                        if (!str_empty(h->comment))
                                json_object_set_new(e, "comment", json_string(h->comment));
                        if (h->empty_layer)
                                json_object_set_new(e, "empty_layer", json_true());
                        json_array_append_new(a, e);
                }
                json_object_set_new(o, "history", a);
        }
        cfg = json_object();
        if (!str_empty(img->user))
                json_object_set_new(cfg, "User", json_string(img->user));
        if (img->exposed_ports.n > 0)
                json_object_set_new(cfg, "ExposedPorts", json_set(&img->exposed_ports));
        if (img->env.n > 0)
                json_object_set_new(cfg, "Env", json_strv(&img->env));
        if (img->entrypoint.n > 0)
                json_object_set_new(cfg, "Entrypoint", json_strv(&img->entrypoint));
        if (img->cmd.n > 0)
                json_object_set_new(cfg, "Cmd", json_strv(&img->cmd));
        if (img->volumes.n > 0)
                json_object_set_new(cfg, "Volumes", json_set(&img->volumes));
        if (!str_empty(img->working_dir))
                json_object_set_new(cfg, "WorkingDir", json_string(img->working_dir));
        if (img->labels.n > 0) {
                _cleanup_(strv_release) struct strv keys = { 0 };
                json_t *l = json_object();
                for (size_t i = 0; i < img->labels.n; i++)
                        strv_push(&keys, img->labels.kv[2 * i]);
                set_sort(&keys);
                for (size_t i = 0; i < keys.n; i++)
                        json_object_set_new(l, keys.v[i],
                                            json_string(env_get(&img->labels, keys.v[i])));
                json_object_set_new(cfg, "Labels", l);
        }
        if (!str_empty(img->stop_signal))
                json_object_set_new(cfg, "StopSignal", json_string(img->stop_signal));
        if (img->args_escaped)
                json_object_set_new(cfg, "ArgsEscaped", json_true());
        if (img->healthcheck) {
                const struct healthcheck *h = img->healthcheck;
                json_t *e = json_object();
                if (h->test.n > 0)
                        json_object_set_new(e, "Test", json_strv(&h->test));
                if (h->interval)
                        json_object_set_new(e, "Interval", json_integer(h->interval));
                if (h->timeout)
                        json_object_set_new(e, "Timeout", json_integer(h->timeout));
                if (h->start_period)
                        json_object_set_new(e, "StartPeriod", json_integer(h->start_period));
                if (h->start_interval)
                        json_object_set_new(e, "StartInterval", json_integer(h->start_interval));
                if (h->retries)
                        json_object_set_new(e, "Retries", json_integer(h->retries));
                json_object_set_new(cfg, "Healthcheck", e);
        }
        if (img->onbuild.n > 0)
                json_object_set_new(cfg, "OnBuild", json_strv(&img->onbuild));
        if (img->shell.n > 0)
                json_object_set_new(cfg, "Shell", json_strv(&img->shell));
        json_object_set_new(o, "config", cfg);
        return o;
}

/* ------------------------------------------------------------------------ */
/* image references */

/* "alpine" -> "docker.io/library/alpine:latest": distribution's
 * ParseNormalizedNamed + TagNameOnly, as content/ref.h reads them. Returns 0
 * with a new *ret, or -EINVAL with *err quoting s. */
static int normalize_ref(const char *s, char **ret, struct kiln_error **err)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
        int r = kiln_content_ref_parse(s, &ref, err);
        if (r < 0)
                return r;
        *ret = kiln_content_ref_canonical(ref);
        return 0;
}

/* ------------------------------------------------------------------------ */
/* platforms */

/* platforms.Format: os/arch[/variant], "unknown" without an OS. */
static char *platform_format(const struct kiln_content_platform *p)
{
        if (str_empty(p->os))
                return kiln_xstrdup("unknown");
        return kiln_xasprintf("%s/%s%s%s", p->os, p->architecture ?: "",
                              str_empty(p->variant) ? "" : "/", p->variant ?: "");
}

/* platforms.FormatAll */
static char *platform_format_all(const struct kiln_content_platform *p)
{
        return kiln_content_platform_format(p);
}

static void llb_platform_from(struct kiln_llb_platform *dst, const struct kiln_content_platform *p)
{
        kiln_llb_platform_set(dst, p->os ?: "", p->architecture ?: "",
                              str_empty(p->variant) ? NULL : p->variant);
}

/* ------------------------------------------------------------------------ */
/* lint rules (BuildKit's frontend/dockerfile/linter) */

struct lint_rule {
        const char *name;
        const char *description;
        const char *url;
};

#define RULE(id, n, slug, d)                                                                    \
        static const struct lint_rule id = { n, d,                                              \
                                             "https://docs.docker.com/go/dockerfile/rule/" slug \
                                             "/" }
RULE(RULE_NO_EMPTY_CONTINUATION, "NoEmptyContinuation", "no-empty-continuation",
     "Empty continuation lines will become errors in a future release");
RULE(RULE_CONSISTENT_CASING, "ConsistentInstructionCasing", "consistent-instruction-casing",
     "All commands within the Dockerfile should use the same casing (either upper or lower)");
RULE(RULE_DUPLICATE_STAGE_NAME, "DuplicateStageName", "duplicate-stage-name",
     "Stage names should be unique");
RULE(RULE_RESERVED_STAGE_NAME, "ReservedStageName", "reserved-stage-name",
     "Reserved words should not be used as stage names");
RULE(RULE_JSON_ARGS, "JSONArgsRecommended", "json-args-recommended",
     "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS "
     "signals");
RULE(RULE_MAINTAINER_DEPRECATED, "MaintainerDeprecated", "maintainer-deprecated",
     "The MAINTAINER instruction is deprecated, use a label instead to define an image author");
RULE(RULE_UNDEFINED_ARG_IN_FROM, "UndefinedArgInFrom", "undefined-arg-in-from",
     "FROM command must use declared ARGs");
RULE(RULE_WORKDIR_RELATIVE, "WorkdirRelativePath", "workdir-relative-path",
     "Relative workdir without an absolute workdir declared within the build can have unexpected "
     "results if the base image changes");
RULE(RULE_UNDEFINED_VAR, "UndefinedVar", "undefined-var",
     "Variables should be defined before their use");
RULE(RULE_MULTIPLE_INSTRUCTIONS, "MultipleInstructionsDisallowed",
     "multiple-instructions-disallowed",
     "Multiple instructions of the same type should not be used in the same stage");
RULE(RULE_LEGACY_KEY_VALUE, "LegacyKeyValueFormat", "legacy-key-value-format",
     "Legacy key/value format with whitespace separator should not be used");
RULE(RULE_REDUNDANT_TARGET_PLATFORM, "RedundantTargetPlatform", "redundant-target-platform",
     "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default "
     "behavior");
RULE(RULE_SECRETS_IN_ARG_OR_ENV, "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env",
     "Sensitive data should not be used in the ARG or ENV commands");
RULE(RULE_INVALID_DEFAULT_ARG_IN_FROM, "InvalidDefaultArgInFrom", "invalid-default-arg-in-from",
     "Default value for global ARG results in an empty or invalid base image name");
RULE(RULE_FROM_PLATFORM_CONST, "FromPlatformFlagConstDisallowed",
     "from-platform-flag-const-disallowed", "FROM --platform flag should not use a constant value");
RULE(RULE_EXPOSE_PROTO_CASING, "ExposeProtoCasing", "expose-proto-casing",
     "Protocol in EXPOSE instruction should be lowercase");
RULE(RULE_EXPOSE_INVALID_FORMAT, "ExposeInvalidFormat", "expose-invalid-format",
     "IP address and host-port mapping should not be used in EXPOSE instruction. This will become "
     "an error in a future release");
RULE(RULE_FROM_AS_CASING, "FromAsCasing", "from-as-casing",
     "The 'as' keyword should match the case of the 'from' keyword");
RULE(RULE_STAGE_NAME_CASING, "StageNameCasing", "stage-name-casing",
     "Stage names should be lowercase");
RULE(RULE_COPY_IGNORED_FILE, "CopyIgnoredFile", "copy-ignored-file",
     "Attempting to Copy file that is excluded by .dockerignore");
static const struct lint_rule RULE_INVALID_BASE_IMAGE_PLATFORM = {
        "InvalidBaseImagePlatform", "Base image platform does not match expected target platform",
        NULL
};
#undef RULE

static char *rule_url(const struct lint_rule *r)
{
        return kiln_xstrdup(r->url ?: "");
}

/* ------------------------------------------------------------------------ */
/* graph nodes: ops whose references point at other nodes' tokens */

struct node {
        /* Never used as an op: its address stands for this node in the
         * kiln_llb_ref of other nodes' ops until they are emitted. */
        struct kiln_llb_op token;
        struct kiln_llb_op *op; /* owned until emitted */
        const struct kiln_llb_op *final;
        bool needed;
        unsigned start_line, end_line; /* the instruction that made it; 0: none */
};

#define NODE_OF(ref_op) ((struct node *) (void *) (ref_op))

static struct kiln_llb_ref node_ref(const struct node *n)
{
        return (struct kiln_llb_ref){ .op = n ? &n->token : NULL, .output = 0 };
}

/* ------------------------------------------------------------------------ */
/* the LLB client's State: an output plus what later ops inherit */

struct lstate {
        struct node *out; /* NULL: scratch */
        struct envlist env;
        char *dir; /* "/" as llb.NewState sets it */
        char *user;
        char *hostname;
        bool has_platform;
        struct kiln_content_platform platform;
        enum kiln_llb_network network;
};

static void lstate_init(struct lstate *s, struct node *out)
{
        *s = (struct lstate){ .out = out, .dir = kiln_xstrdup("/") };
}

static void lstate_release(struct lstate *s)
{
        env_release(&s->env);
        free(s->dir);
        free(s->user);
        free(s->hostname);
        kiln_content_platform_release(&s->platform);
        *s = (struct lstate){ 0 };
}

static void lstate_copy(struct lstate *dst, const struct lstate *src)
{
        lstate_release(dst);
        dst->out = src->out;
        env_copy(&dst->env, &src->env);
        dst->dir = xstrdup0(src->dir);
        dst->user = xstrdup0(src->user);
        dst->hostname = xstrdup0(src->hostname);
        dst->has_platform = src->has_platform;
        if (src->has_platform)
                kiln_content_platform_copy(&dst->platform, &src->platform);
        dst->network = src->network;
}

/* llb's Dir: relative paths join the previous directory. */
static void lstate_set_dir(struct lstate *s, const char *dir)
{
        char *d;
        if (path_is_abs(dir))
                d = kiln_xstrdup(dir);
        else
                d = path_join(str_empty(s->dir) ? "/" : s->dir, dir);
        free(s->dir);
        s->dir = d;
}

/* ------------------------------------------------------------------------ */
/* stages (BuildKit's dispatchState) */

struct dstate;

struct command {
        struct kiln_dockerfile_cmd *cmd; /* borrowed from the instructions, or owned */
        bool owned;                      /* an ONBUILD trigger parsed here */
        bool is_onbuild;
        struct dstate **sources; /* COPY --from: 1; RUN: one per mount (NULL: none) */
        size_t n_sources;
};

struct dep {
        struct dstate *state;
        const struct kiln_dockerfile_cmd *cmd; /* for the cycle message */
};

struct build_arg {
        char *key;
        char *value; /* NULL: declared without a value */
};

struct dstate {
        size_t index;
        const struct kiln_dockerfile_stage *stage; /* NULL for unregistered */
        char *stage_name_lower;                    /* "AS" name as registered ("" unnamed) */
        char *base_name;                           /* expanded, then normalised */
        char *source_code;                         /* FROM text, for the op description */
        unsigned start_line, end_line;
        struct dstate *base;
        struct dep *deps;
        size_t n_deps;
        struct command *commands;
        size_t n_commands;

        struct lstate state;
        struct image image;
        bool has_base_img;
        struct image base_img;
        bool has_platform;
        struct kiln_content_platform platform;

        bool unregistered, dispatched, resolved, onbuild_init;
        struct build_arg *build_args;
        size_t n_build_args;
        struct strv ctx_paths;
        bool ignore_cache;
        char *stage_name; /* for step names; "" for a single stage */
        unsigned cmd_index, cmd_total;
        bool cmd_is_onbuild;
        bool workdir_set;
        bool cmd_set, entrypoint_set, healthcheck_set;
        unsigned cmd_line, entrypoint_line, healthcheck_line;
};

static void dstate_free(struct dstate *d)
{
        if (!d)
                return;
        free(d->stage_name_lower);
        free(d->base_name);
        free(d->source_code);
        free(d->deps);
        for (size_t i = 0; i < d->n_commands; i++) {
                if (d->commands[i].owned)
                        kiln_dockerfile_cmd_free(d->commands[i].cmd);
                free(d->commands[i].sources);
        }
        free(d->commands);
        lstate_release(&d->state);
        image_release(&d->image);
        image_release(&d->base_img);
        if (d->has_platform)
                kiln_content_platform_release(&d->platform);
        for (size_t i = 0; i < d->n_build_args; i++) {
                free(d->build_args[i].key);
                free(d->build_args[i].value);
        }
        free(d->build_args);
        strv_release(&d->ctx_paths);
        free(d->stage_name);
        free(d);
}

static void dstate_set_platform(struct dstate *d, const struct kiln_content_platform *p)
{
        struct kiln_content_platform copy;
        kiln_content_platform_copy(&copy, p);
        if (d->has_platform)
                kiln_content_platform_release(&d->platform);
        d->platform = copy;
        d->has_platform = true;
}

static void dstate_add_dep(struct dstate *d, struct dstate *src,
                           const struct kiln_dockerfile_cmd *cmd)
{
        for (size_t i = 0; i < d->n_deps; i++)
                if (d->deps[i].state == src) {
                        d->deps[i].cmd = cmd;
                        return;
                }
        d->deps = kiln_xreallocarray(d->deps, d->n_deps + 1, sizeof(struct dep));
        d->deps[d->n_deps++] = (struct dep){ src, cmd };
}

static void dstate_add_build_arg(struct dstate *d, const char *key, const char *value)
{
        d->build_args =
                kiln_xreallocarray(d->build_args, d->n_build_args + 1, sizeof(struct build_arg));
        d->build_args[d->n_build_args++] = (struct build_arg){ kiln_xstrdup(key), xstrdup0(value) };
}

static bool dstate_has_build_arg(const struct dstate *d, const char *key)
{
        for (size_t i = 0; i < d->n_build_args; i++)
                if (streq(d->build_args[i].key, key))
                        return true;
        return false;
}

/* ------------------------------------------------------------------------ */
/* the conversion */

struct conv {
        const struct kiln_dockerfile_convert_options *opt;
        const char *file;
        struct kiln_dockerfile_result *parsed;
        struct kiln_dockerfile_instructions *ins;
        struct kiln_shell_lex lex;

        struct envlist build_args; /* --build-arg values */
        struct envlist global_args;
        struct strv declared_meta_args; /* every meta ARG key, for lint */

        struct kiln_content_platform target_platform, build_platform;
        bool implicit_target;

        bool has_epoch;
        int64_t epoch;
        char *epoch_text; /* RFC 3339 */

        char *hostname;
        char *cache_ns;
        bool has_proxy;
        struct kiln_llb_proxy_env proxy;

        struct dstate **states;
        size_t n_states;

        struct node **nodes;
        size_t n_nodes;
        struct node *context; /* the build context source */
        /* The instruction being dispatched, for the nodes it makes. */
        unsigned cur_start_line, cur_end_line;

        struct strv internal_steps; /* "[internal] load metadata for ..." */

        struct kiln_dockerfile_lint_warning *warnings;
        size_t n_warnings;
        bool lint_skip_all;
        struct strv lint_skip;
        /* "# check=" comments above the instruction being handled */
        bool lint_local_skip_all;
        struct strv lint_local_skip;
        bool lint_error;
        struct strv lint_called;
        size_t expanded; /* bytes produced by variable expansion so far */
        bool multi_platform;
};

static void conv_release(struct conv *c)
{
        kiln_dockerfile_result_free(c->parsed);
        kiln_dockerfile_instructions_free(c->ins);
        env_release(&c->build_args);
        env_release(&c->global_args);
        strv_release(&c->declared_meta_args);
        kiln_content_platform_release(&c->target_platform);
        kiln_content_platform_release(&c->build_platform);
        free(c->epoch_text);
        free(c->hostname);
        free(c->cache_ns);
        free(c->proxy.http_proxy);
        free(c->proxy.https_proxy);
        free(c->proxy.ftp_proxy);
        free(c->proxy.no_proxy);
        free(c->proxy.all_proxy);
        for (size_t i = 0; i < c->n_states; i++)
                dstate_free(c->states[i]);
        free(c->states);
        for (size_t i = 0; i < c->n_nodes; i++) {
                kiln_llb_op_free(c->nodes[i]->op);
                free(c->nodes[i]);
        }
        free(c->nodes);
        strv_release(&c->internal_steps);
        for (size_t i = 0; i < c->n_warnings; i++) {
                free(c->warnings[i].rule);
                free(c->warnings[i].description);
                free(c->warnings[i].url);
                free(c->warnings[i].message);
        }
        free(c->warnings);
        strv_release(&c->lint_skip);
        strv_release(&c->lint_local_skip);
        strv_release(&c->lint_called);
}

/* linter.Run */
static void lint_run(struct conv *c, const struct lint_rule *rule, unsigned start, unsigned end,
                     const char *fmt, ...) _printf_(5, 6);
static void lint_run(struct conv *c, const struct lint_rule *rule, unsigned start, unsigned end,
                     const char *fmt, ...)
{
        va_list ap;
        if (c->lint_skip_all || strv_contains(&c->lint_skip, rule->name) ||
            c->lint_local_skip_all || strv_contains(&c->lint_local_skip, rule->name))
                return;
        strv_push(&c->lint_called, rule->name);
        c->warnings = kiln_xreallocarray(c->warnings, c->n_warnings + 1,
                                         sizeof(struct kiln_dockerfile_lint_warning));
        struct kiln_dockerfile_lint_warning *w = &c->warnings[c->n_warnings++];
        va_start(ap, fmt);
        *w = (struct kiln_dockerfile_lint_warning){
                .rule = kiln_xstrdup(rule->name),
                .description = kiln_xstrdup(rule->description),
                .url = rule_url(rule),
                .message = kiln_xvasprintf(fmt, ap),
                .start_line = start,
                .end_line = end,
        };
        va_end(ap);
}

/* Sets *err to "file:line: message". */
static int err_at(struct conv *c, struct kiln_error **err, int code, unsigned line, const char *fmt,
                  ...) _printf_(5, 6);
static int err_at(struct conv *c, struct kiln_error **err, int code, unsigned line, const char *fmt,
                  ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        va_start(ap, fmt);
        msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        if (line == 0)
                return kiln_error_set(err, code, "%s: %s", c->file, msg);
        kiln_error_set(err, code, "%s:%u: %s", c->file, line, msg);
        if (*err) {
                (*err)->line = line;
                set_str(&(*err)->file, c->file);
        }
        return code;
}

/* Prefixes an error from below with "file:line: ", unless it has a
 * location already. */
static int wrap_at(struct conv *c, struct kiln_error **err, int code, unsigned line)
{
        if (!*err)
                return err_at(c, err, code, line, "internal error");
        if ((*err)->line != 0 || line == 0)
                return code;
        kiln_error_wrap(err, "%s:%u", c->file, line);
        (*err)->line = line;
        set_str(&(*err)->file, c->file);
        return code;
}

static struct node *conv_add_node(struct conv *c, struct kiln_llb_op *op)
{
        struct node *n = kiln_xcalloc(1, sizeof(struct node));
        n->op = op;
        n->start_line = c->cur_start_line;
        n->end_line = c->cur_end_line;
        c->nodes = kiln_xreallocarray(c->nodes, c->n_nodes + 1, sizeof(struct node *));
        c->nodes[c->n_nodes++] = n;
        return n;
}

static void op_set_name(struct kiln_llb_op *op, const char *name)
{
        kiln_llb_strmap_set(&op->meta.description, "llb.customname", name);
}

static void op_set_command(struct kiln_llb_op *op, const char *code)
{
        kiln_llb_strmap_set(&op->meta.description, "com.docker.dockerfile.v1.command", code);
}

/* The expander's environment: the state's, as getEnv(d.state). */
static int expand_word(struct conv *c, const struct kiln_shell_lex *lex, const char *word,
                       const struct envlist *env, struct kiln_shell_result *res,
                       struct kiln_error **err)
{
        struct kiln_shell_env e = env_shell(env);
        int r = kiln_shell_expand(lex, word, &e, res, err);
        if (r < 0)
                return r;
        c->expanded += strlen(res->word) + 1;
        for (size_t i = 0; i < res->n_words; i++)
                c->expanded += strlen(res->words[i]) + 1;
        if (c->expanded > KILN_LIMIT_DOCKERFILE_EXPANDED) {
                kiln_shell_result_release(res);
                return kiln_error_set(err, -E2BIG,
                                      "variable expansion produced more than %u bytes in total",
                                      KILN_LIMIT_DOCKERFILE_EXPANDED);
        }
        return 0;
}

/* ------------------------------------------------------------------------ */
/* options */

static bool parse_bool(const char *s, bool *ret)
{
        static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };
        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                if (streq(s, t[i])) {
                        *ret = true;
                        return true;
                }
        for (size_t i = 0; i < ELEMENTSOF(f); i++)
                if (streq(s, f[i])) {
                        *ret = false;
                        return true;
                }
        return false;
}

/* linter.ParseLintOptions: "skip=A,B;error=true;experimental=C". */
static int lint_options(struct conv *c, const char *spec, bool *skip_all, struct strv *skip,
                        struct kiln_error **err)
{
        _cleanup_free_ char *s = NULL;
        char *p, *save = NULL;
        size_t n = strlen(spec);
        while (n > 0 && isspace((unsigned char) spec[n - 1]))
                n--;
        while (n > 0 && isspace((unsigned char) *spec)) {
                spec++;
                n--;
        }
        if (n == 0)
                return 0;
        s = kiln_xstrndup(spec, n);
        for (p = strtok_r(s, ";", &save); p; p = strtok_r(NULL, ";", &save)) {
                char *eq = strchr(p, '=');
                if (!eq)
                        return kiln_error_set(err, -EINVAL, "invalid check option \"%s\"", p);
                *eq = 0;
                const char *k = p, *v = eq + 1;
                _cleanup_free_ char *kt = NULL;
                /* strings.TrimSpace of the key */
                while (isspace((unsigned char) *k))
                        k++;
                kt = kiln_xstrdup(k);
                for (size_t l = strlen(kt); l > 0 && isspace((unsigned char) kt[l - 1]); l--)
                        kt[l - 1] = 0;
                if (streq(kt, "skip")) {
                        _cleanup_free_ char *vv = kiln_xstrdup(v);
                        char *save2 = NULL;
                        for (char *r = strtok_r(vv, ",", &save2); r;
                             r = strtok_r(NULL, ",", &save2)) {
                                while (isspace((unsigned char) *r))
                                        r++;
                                for (size_t l = strlen(r);
                                     l > 0 && isspace((unsigned char) r[l - 1]); l--)
                                        r[l - 1] = 0;
                                if (streq(r, "all"))
                                        *skip_all = true;
                                else
                                        strv_push(skip, r);
                        }
                } else if (streq(kt, "error")) {
                        bool b;
                        if (!parse_bool(v, &b))
                                return kiln_error_set(
                                        err, -EINVAL,
                                        "strconv.ParseBool: parsing \"%s\": invalid syntax", v);
                        c->lint_error = b;
                } else if (streq(kt, "experimental")) {
                        /* kiln has no experimental rules */
                } else
                        return kiln_error_set(err, -EINVAL, "invalid check option \"%s\"", kt);
        }
        return 0;
}

/* WithMergedConfigFromComments: a "# check=..." comment right above an
 * instruction adds to the rules skipped while that instruction is handled. */
static void lint_scope_begin(struct conv *c, char *const *comments, size_t n)
{
        strv_release(&c->lint_local_skip);
        c->lint_local_skip_all = false;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *name = NULL, *value = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                if (kiln_dockerfile_directive_parse_line(comments[i], strlen(comments[i]), "",
                                                         &name, &value) != 1 ||
                    !streq(name, "check"))
                        continue;
                char *sp = strchr(value, ' ');
                if (sp)
                        *sp = 0;
                bool error = c->lint_error;
                if (lint_options(c, value, &c->lint_local_skip_all, &c->lint_local_skip, &e) < 0) {
                        strv_release(&c->lint_local_skip);
                        c->lint_local_skip_all = false;
                }
                c->lint_error = error; /* only the file's directive decides */
                return;
        }
}

static void lint_scope_end(struct conv *c)
{
        strv_release(&c->lint_local_skip);
        c->lint_local_skip_all = false;
}

static int parse_platform_opt(const char *spec, struct kiln_content_platform *ret,
                              struct kiln_error **err)
{
        int r = kiln_content_platform_parse(spec, ret, err);
        if (r < 0)
                return r;
        kiln_content_platform_normalize(ret);
        return 0;
}

/* RFC 3339 of a unix time, as Go marshals time.Time in UTC. */
static char *format_time(int64_t t)
{
        int64_t days = t / 86400, rem = t % 86400;
        if (rem < 0) {
                rem += 86400;
                days--;
        }
        /* civil from days (Howard Hinnant) */
        int64_t z = days + 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t y = yoe + era * 400;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        int64_t d = doy - (153 * mp + 2) / 5 + 1;
        int64_t m = mp + (mp < 10 ? 3 : -9);
        y += m <= 2;
        return kiln_xasprintf("%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T%02" PRId64 ":%02" PRId64
                              ":%02" PRId64 "Z",
                              y, m, d, rem / 3600, (rem / 60) % 60, rem % 60);
}

static bool parse_int64(const char *s, int64_t *ret)
{
        char *end;
        if (str_empty(s))
                return false;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || *end || isspace((unsigned char) *s))
                return false;
        *ret = v;
        return true;
}

static int conv_setup(struct conv *c, const struct kiln_dockerfile_convert_options *opt,
                      struct kiln_error **err)
{
        const char *v;
        int r;

        c->opt = opt;
        c->file = opt->dockerfile_name ?: "Dockerfile";
        if (opt->n_build_args > KILN_LIMIT_DOCKERFILE_OPTION_ITEMS ||
            opt->n_labels > KILN_LIMIT_DOCKERFILE_OPTION_ITEMS ||
            opt->n_extra_hosts > KILN_LIMIT_DOCKERFILE_OPTION_ITEMS ||
            opt->n_dockerignore > KILN_LIMIT_LLB_LIST)
                return kiln_error_set(err, -E2BIG,
                                      "more than %d build args, labels or extra hosts, or more "
                                      "than %u .dockerignore patterns",
                                      KILN_LIMIT_DOCKERFILE_OPTION_ITEMS, KILN_LIMIT_LLB_LIST);
        for (size_t i = 0; i < opt->n_build_args; i++) {
                if (!opt->build_args[i].key)
                        continue;
                env_set(&c->build_args, opt->build_args[i].key, opt->build_args[i].value ?: "");
        }

        if (opt->build_platform) {
                r = parse_platform_opt(opt->build_platform, &c->build_platform, err);
                if (r < 0)
                        return kiln_error_wrap(err, "invalid build platform");
        } else {
                kiln_content_platform_default(&c->build_platform);
                kiln_content_platform_normalize(&c->build_platform);
        }
        if (opt->target_platform && *opt->target_platform) {
                r = parse_platform_opt(opt->target_platform, &c->target_platform, err);
                if (r < 0)
                        return kiln_error_wrap(err, "failed to parse target platform %s",
                                               opt->target_platform);
        } else {
                kiln_content_platform_copy(&c->target_platform, &c->build_platform);
                c->implicit_target = true;
        }

        v = opt->hostname;
        if (!v && !str_empty(env_get(&c->build_args, "BUILDKIT_SANDBOX_HOSTNAME")))
                v = env_get(&c->build_args, "BUILDKIT_SANDBOX_HOSTNAME");
        c->hostname = str_empty(v) ? NULL : kiln_xstrdup(v);
        c->cache_ns = xstrdup0(env_get(&c->build_args, "BUILDKIT_CACHE_MOUNT_NS"));
        c->multi_platform = opt->multi_platform;
        v = env_get(&c->build_args, "BUILDKIT_MULTI_PLATFORM");
        if (!str_empty(v) && !parse_bool(v, &c->multi_platform))
                return kiln_error_set(err, -EINVAL, "invalid boolean value for multi-platform: %s",
                                      v);
        if (opt->source_date_epoch)
                env_set(&c->build_args, "SOURCE_DATE_EPOCH", opt->source_date_epoch);

        /* proxyEnvFromBuildArgs: keys in sorted order, case-insensitive */
        {
                _cleanup_(strv_release) struct strv keys = { 0 };
                for (size_t i = 0; i < c->build_args.n; i++)
                        strv_push(&keys, c->build_args.kv[2 * i]);
                set_sort(&keys);
                for (size_t i = 0; i < keys.n; i++) {
                        const char *k = keys.v[i], *val = env_get(&c->build_args, k);
                        char **slot = NULL;
                        if (kiln_dockerfile_caseeq(k, "http_proxy"))
                                slot = &c->proxy.http_proxy;
                        else if (kiln_dockerfile_caseeq(k, "https_proxy"))
                                slot = &c->proxy.https_proxy;
                        else if (kiln_dockerfile_caseeq(k, "ftp_proxy"))
                                slot = &c->proxy.ftp_proxy;
                        else if (kiln_dockerfile_caseeq(k, "no_proxy"))
                                slot = &c->proxy.no_proxy;
                        else if (kiln_dockerfile_caseeq(k, "all_proxy"))
                                slot = &c->proxy.all_proxy;
                        if (slot) {
                                set_str(slot, val);
                                c->has_proxy = true;
                        }
                }
        }
        return 0;
}

/* ------------------------------------------------------------------------ */
/* lint checks made before dispatch (BuildKit: instructions.Parse and
 * validations.go) */

static bool consistent_case(const char *s)
{
        _cleanup_free_ char *lo = kiln_dockerfile_lower(s), *up = kiln_dockerfile_upper(s);
        return streq(s, lo) || streq(s, up);
}

static void lint_case_match(struct conv *c, const char *name, bool majority_lower, unsigned start,
                            unsigned end)
{
        _cleanup_free_ char *lo = kiln_dockerfile_lower(name), *up = kiln_dockerfile_upper(name);
        const char *correct = NULL;
        if (majority_lower && !streq(lo, name))
                correct = "lowercase";
        else if (!majority_lower && !streq(up, name))
                correct = "uppercase";
        if (correct)
                lint_run(c, &RULE_CONSISTENT_CASING, start, end,
                         "Command '%s' should match the case of the command majority (%s)", name,
                         correct);
}

static void lint_prepass(struct conv *c)
{
        const struct kiln_dockerfile_instructions *ins = c->ins;
        unsigned lower = 0, upper = 0;

        /* parse-time rules, in file order */
        for (size_t i = 0; i < ins->n_stages; i++) {
                const struct kiln_dockerfile_stage *st = &ins->stages[i];
                lint_scope_begin(c, st->comments, st->n_comments);
                if (!str_empty(st->orig_name)) {
                        _cleanup_free_ char *lo = kiln_dockerfile_lower(st->orig_name);
                        if (!streq(lo, st->orig_name))
                                lint_run(c, &RULE_STAGE_NAME_CASING, st->start_line, st->end_line,
                                         "Stage name '%s' should be lowercase", st->orig_name);
                }
                if (!str_empty(st->as_word)) {
                        const char *cmd = st->orig_cmd;
                        _cleanup_free_ char *clo = kiln_dockerfile_lower(cmd),
                                            *cup = kiln_dockerfile_upper(cmd);
                        _cleanup_free_ char *alo = kiln_dockerfile_lower(st->as_word);
                        _cleanup_free_ char *aup = kiln_dockerfile_upper(st->as_word);
                        bool ok = true;
                        if (streq(cmd, clo))
                                ok = streq(st->as_word, alo);
                        else if (streq(cmd, cup))
                                ok = streq(st->as_word, aup);
                        if (!ok)
                                lint_run(c, &RULE_FROM_AS_CASING, st->start_line, st->end_line,
                                         "'%s' and '%s' keywords' casing do not match", st->as_word,
                                         cmd);
                }
                lint_scope_end(c);
                for (size_t j = 0; j < st->n_cmds; j++) {
                        const struct kiln_dockerfile_cmd *cmd = st->cmds[j];
                        if (cmd->type != KILN_DOCKERFILE_CMD_MAINTAINER)
                                continue;
                        lint_scope_begin(c, cmd->comments, cmd->n_comments);
                        lint_run(c, &RULE_MAINTAINER_DEPRECATED, cmd->start_line, cmd->end_line,
                                 "Maintainer instruction is deprecated in favor of using label");
                        lint_scope_end(c);
                }
        }

        /* validateStageNames */
        {
                _cleanup_(strv_release) struct strv names = { 0 };
                for (size_t i = 0; i < ins->n_stages; i++) {
                        const struct kiln_dockerfile_stage *s = &ins->stages[i];
                        if (str_empty(s->name))
                                continue;
                        if (streq(s->name, "context") || streq(s->name, "scratch"))
                                lint_run(c, &RULE_RESERVED_STAGE_NAME, s->start_line, s->end_line,
                                         "Stage name should not use the same name as reserved "
                                         "stage \"%s\"",
                                         s->name);
                        if (strv_contains(&names, s->name))
                                lint_run(
                                        c, &RULE_DUPLICATE_STAGE_NAME, s->start_line, s->end_line,
                                        "Duplicate stage name \"%s\", stage names should be unique",
                                        s->name);
                        strv_push(&names, s->name);
                }
        }

        /* validateCommandCasing */
        for (size_t i = 0; i < ins->n_stages; i++) {
                const struct kiln_dockerfile_stage *s = &ins->stages[i];
                if (consistent_case(s->orig_cmd)) {
                        _cleanup_free_ char *lo = kiln_dockerfile_lower(s->orig_cmd);
                        if (streq(lo, s->orig_cmd))
                                lower++;
                        else
                                upper++;
                }
                for (size_t j = 0; j < s->n_cmds; j++) {
                        const char *name = s->cmds[j]->name;
                        if (consistent_case(name)) {
                                _cleanup_free_ char *lo = kiln_dockerfile_lower(name);
                                if (streq(lo, name))
                                        lower++;
                                else
                                        upper++;
                        }
                }
        }
        for (size_t i = 0; i < ins->n_stages; i++) {
                const struct kiln_dockerfile_stage *s = &ins->stages[i];
                lint_case_match(c, s->orig_cmd, lower > upper, s->start_line, s->end_line);
                for (size_t j = 0; j < s->n_cmds; j++)
                        lint_case_match(c, s->cmds[j]->name, lower > upper, s->cmds[j]->start_line,
                                        s->cmds[j]->end_line);
        }
}

/* getSecretsRegex: a token of the key (split at '_') is a secret word and
 * none is an allowed word. */
static bool key_has_token(const char *key, const char *const *tokens, size_t n)
{
        _cleanup_free_ char *k = kiln_dockerfile_lower(key);
        char *save = NULL;
        /* (?:_|^)(?:tok)(?:_|$): a whole '_'-separated part equals tok */
        for (char *p = strtok_r(k, "_", &save); p; p = strtok_r(NULL, "_", &save))
                for (size_t i = 0; i < n; i++)
                        if (streq(p, tokens[i]))
                                return true;
        return false;
}

static void lint_secret_key(struct conv *c, const char *instruction, const char *key,
                            unsigned start, unsigned end)
{
        static const char *const deny[] = { "apikey", "auth",     "credential", "credentials",
                                            "key",    "password", "pword",      "passwd",
                                            "secret", "token" };
        static const char *const allow[] = { "public", "file", "version" };
        if (key_has_token(key, deny, ELEMENTSOF(deny)) &&
            !key_has_token(key, allow, ELEMENTSOF(allow)))
                lint_run(c, &RULE_SECRETS_IN_ARG_OR_ENV, start, end,
                         "Do not use ARG or ENV instructions for sensitive data (%s \"%s\")",
                         instruction, key);
}

/* ------------------------------------------------------------------------ */
/* global scope: defaultArgs and buildMetaArgs */

static void default_args(struct conv *c, const char *target)
{
        const struct kiln_content_platform *bp = &c->build_platform, *tp = &c->target_platform;
        _cleanup_free_ char *bps = platform_format(bp), *tps = platform_format_all(tp);
        const char *s[][2] = {
                { "BUILDPLATFORM", bps },
                { "BUILDOS", bp->os ?: "" },
                { "BUILDOSVERSION", bp->os_version ?: "" },
                { "BUILDARCH", bp->architecture ?: "" },
                { "BUILDVARIANT", bp->variant ?: "" },
                { "TARGETPLATFORM", tps },
                { "TARGETOS", tp->os ?: "" },
                { "TARGETOSVERSION", tp->os_version ?: "" },
                { "TARGETARCH", tp->architecture ?: "" },
                { "TARGETVARIANT", tp->variant ?: "" },
                { "TARGETSTAGE", str_empty(target) ? "default" : target },
        };
        for (size_t i = 0; i < ELEMENTSOF(s); i++) {
                const char *ov = env_get(&c->build_args, s[i][0]);
                env_set(&c->global_args, s[i][0], ov ?: s[i][1]);
        }
}

/* buildMetaArgs; with_build_args false gives the defaults-only scope the
 * InvalidDefaultArgInFrom check uses. */
static int meta_args(struct conv *c, struct envlist *args, bool with_build_args,
                     struct kiln_error **err)
{
        for (size_t i = 0; i < c->ins->n_meta_args; i++) {
                const struct kiln_dockerfile_cmd *cmd = c->ins->meta_args[i];
                if (args->n + cmd->arg.n_args > KILN_LIMIT_DOCKERFILE_VARS)
                        return err_at(c, err, -E2BIG, cmd->start_line,
                                      "more than %d global build args", KILN_LIMIT_DOCKERFILE_VARS);
                for (size_t j = 0; j < cmd->arg.n_args; j++) {
                        const struct kiln_dockerfile_arg *kp = &cmd->arg.args[j];
                        const char *bv = with_build_args ? env_get(&c->build_args, kp->key) : NULL;
                        if (with_build_args)
                                strv_push(&c->declared_meta_args, kp->key);
                        if (bv) {
                                env_set(args, kp->key, bv);
                        } else if (kp->value) {
                                struct kiln_shell_result res = { 0 };
                                int r = expand_word(c, &c->lex, kp->value, args, &res, err);
                                if (r < 0)
                                        return wrap_at(c, err, r, cmd->start_line);
                                env_set(args, kp->key, res.word);
                                kiln_shell_result_release(&res);
                        }
                }
        }
        return 0;
}

/* ------------------------------------------------------------------------ */
/* stages */

static struct dstate *find_state(struct conv *c, const char *name)
{
        _cleanup_free_ char *lo = kiln_dockerfile_lower(name);
        struct dstate *found = NULL;
        /* statesByName: a later stage of the same name replaces an earlier */
        for (size_t i = 0; i < c->n_states; i++)
                if (!str_empty(c->states[i]->stage_name_lower) &&
                    streq(c->states[i]->stage_name_lower, lo))
                        found = c->states[i];
        return found;
}

/* statesByName as it stood when a state was added: only earlier states. */
static struct dstate *find_state_before(struct conv *c, const char *name, size_t before)
{
        struct dstate *found = NULL;
        for (size_t i = 0; i < before && i < c->n_states; i++)
                if (!str_empty(c->states[i]->stage_name_lower) &&
                    streq(c->states[i]->stage_name_lower, name))
                        found = c->states[i];
        return found;
}

static void add_state(struct conv *c, struct dstate *d)
{
        d->index = c->n_states;
        /* the base-name lookup is exact: names are lower case already */
        d->base = find_state_before(c, d->base_name, c->n_states);
        c->states = kiln_xreallocarray(c->states, c->n_states + 1, sizeof(struct dstate *));
        c->states[c->n_states++] = d;
}

static struct dstate *new_state(void)
{
        struct dstate *d = kiln_xcalloc(1, sizeof(struct dstate));
        d->stage_name_lower = kiln_xstrdup("");
        d->stage_name = kiln_xstrdup("");
        lstate_init(&d->state, NULL);
        return d;
}

static void report_unused_from_args(struct conv *c, char *const *unmatched, size_t n,
                                    unsigned start, unsigned end)
{
        _cleanup_(strv_release) struct strv keys = { 0 };
        if (n == 0)
                return;
        for (size_t i = 0; i < c->declared_meta_args.n; i++)
                strv_push(&keys, c->declared_meta_args.v[i]);
        for (size_t i = 0; i < c->global_args.n; i++)
                strv_push(&keys, c->global_args.kv[2 * i]);
        set_compact(&keys);
        for (size_t i = 0; i < n; i++) {
                if (set_has(&keys, unmatched[i]))
                        continue;
                _cleanup_free_ char *s = kiln_suggest(unmatched[i], (const char *const *) keys.v,
                                                      keys.n, KILN_SUGGEST_CASE_SENSITIVE);
                if (s)
                        lint_run(c, &RULE_UNDEFINED_ARG_IN_FROM, start, end,
                                 "FROM argument '%s' is not declared (did you mean %s?)",
                                 unmatched[i], s);
                else
                        lint_run(c, &RULE_UNDEFINED_ARG_IN_FROM, start, end,
                                 "FROM argument '%s' is not declared", unmatched[i]);
        }
}

static bool stage_no_cache(struct conv *c, const char *name)
{
        if (!c->opt->no_cache)
                return false;
        if (!c->opt->no_cache_stages)
                return true;
        for (size_t i = 0; i < c->opt->n_no_cache_stages; i++)
                if (kiln_dockerfile_caseeq(c->opt->no_cache_stages[i], name ?: ""))
                        return true;
        return false;
}

static int build_state(struct conv *c, size_t i, const struct kiln_dockerfile_stage *st,
                       struct kiln_error **err);

/* buildDispatchStates */
static int build_states(struct conv *c, struct kiln_error **err)
{
        for (size_t i = 0; i < c->ins->n_stages; i++) {
                const struct kiln_dockerfile_stage *st = &c->ins->stages[i];
                int r;
                lint_scope_begin(c, st->comments, st->n_comments);
                r = build_state(c, i, st, err);
                lint_scope_end(c);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int build_state(struct conv *c, size_t i, const struct kiln_dockerfile_stage *st,
                       struct kiln_error **err)
{
        {
                struct kiln_shell_result name = { 0 };
                int r;

                r = expand_word(c, &c->lex, st->base_name, &c->global_args, &name, err);
                if (r >= 0)
                        report_unused_from_args(c, name.unmatched, name.n_unmatched, st->start_line,
                                                st->end_line);
                if (r < 0)
                        return wrap_at(c, err, r, st->start_line);
                if (str_empty(name.word)) {
                        kiln_shell_result_release(&name);
                        return err_at(c, err, -EINVAL, st->start_line,
                                      "base name (%s) should not be blank", st->base_name);
                }

                struct dstate *d = new_state();
                d->stage = st;
                set_str(&d->stage_name_lower, st->name);
                d->base_name = TAKE_PTR(name.word);
                kiln_shell_result_release(&name);
                d->source_code = kiln_xstrdup(st->code);
                d->start_line = st->start_line;
                d->end_line = st->end_line;
                if (!str_empty(st->platform)) {
                        struct kiln_shell_result pm = { 0 };
                        struct kiln_content_platform p;
                        r = expand_word(c, &c->lex, st->platform, &c->global_args, &pm, err);
                        if (r < 0) {
                                dstate_free(d);
                                return wrap_at(c, err, r, st->start_line);
                        }
                        report_unused_from_args(c, pm.unmatched, pm.n_unmatched, st->start_line,
                                                st->end_line);
                        if (pm.n_matched == 1 && pm.n_unmatched == 0 &&
                            streq(pm.matched[0], "TARGETPLATFORM") &&
                            streq_ptr(pm.word, env_get(&c->global_args, "TARGETPLATFORM")))
                                lint_run(c, &RULE_REDUNDANT_TARGET_PLATFORM, st->start_line,
                                         st->end_line,
                                         "Setting platform to predefined %s in FROM is redundant "
                                         "as this is the default behavior",
                                         st->platform);
                        if (pm.n_matched == 0 && pm.n_unmatched == 0) {
                                struct kiln_content_platform cp;
                                _cleanup_(kiln_error_freep) struct kiln_error *perr = NULL;
                                if (kiln_content_platform_parse(pm.word, &cp, &perr) >= 0) {
                                        kiln_content_platform_normalize(&cp);
                                        if (!strstr(st->name, cp.os ?: "") &&
                                            !strstr(st->name, cp.architecture ?: ""))
                                                lint_run(c, &RULE_FROM_PLATFORM_CONST,
                                                         st->start_line, st->end_line,
                                                         "FROM --platform flag should not use "
                                                         "constant value \"%s\"",
                                                         pm.word);
                                        kiln_content_platform_release(&cp);
                                }
                        }
                        if (str_empty(pm.word)) {
                                kiln_shell_result_release(&pm);
                                dstate_free(d);
                                return err_at(c, err, -EINVAL, st->start_line,
                                              "empty platform value from expression %s",
                                              st->platform);
                        }
                        r = parse_platform_opt(pm.word, &p, err);
                        if (r < 0) {
                                kiln_error_wrap(err, "failed to parse platform %s", st->platform);
                                kiln_shell_result_release(&pm);
                                dstate_free(d);
                                return wrap_at(c, err, r, st->start_line);
                        }
                        kiln_shell_result_release(&pm);
                        dstate_set_platform(d, &p);
                        kiln_content_platform_release(&p);
                }
                if (str_empty(st->name))
                        set_str(&d->stage_name, NULL),
                                d->stage_name = kiln_xasprintf("stage-%zu", i);
                else
                        set_str(&d->stage_name, st->name);
                add_state(c, d);

                unsigned total = 0;
                if (!streq(d->base_name, EMPTY_IMAGE_NAME) && !d->base)
                        total = 1;
                for (size_t j = 0; j < st->n_cmds; j++) {
                        enum kiln_dockerfile_cmd_type t = st->cmds[j]->type;
                        if (t == KILN_DOCKERFILE_CMD_ADD || t == KILN_DOCKERFILE_CMD_COPY ||
                            t == KILN_DOCKERFILE_CMD_RUN || t == KILN_DOCKERFILE_CMD_WORKDIR)
                                total++;
                }
                d->cmd_total = total;
                d->ignore_cache = stage_no_cache(c, st->name);
        }
        return 0;
}

static const char *const *state_names(struct conv *c, struct strv *out)
{
        for (size_t i = 0; i < c->n_states; i++)
                if (!str_empty(c->states[i]->stage_name))
                        strv_push(out, c->states[i]->stage_name);
        return (const char *const *) out->v;
}

static int resolve_target(struct conv *c, struct dstate **ret, struct kiln_error **err)
{
        const char *t = c->opt->target;
        if (str_empty(t)) {
                *ret = c->states[c->n_states - 1];
                return 0;
        }
        *ret = find_state(c, t);
        if (*ret)
                return 0;
        _cleanup_(strv_release) struct strv names = { 0 };
        state_names(c, &names);
        _cleanup_free_ char *s = kiln_suggest(t, (const char *const *) names.v, names.n,
                                              KILN_SUGGEST_CASE_SENSITIVE);
        if (s)
                return kiln_error_set(err, -ENOENT,
                                      "target stage \"%s\" could not be found (did you mean %s?)",
                                      t, s);
        return kiln_error_set(err, -ENOENT, "target stage \"%s\" could not be found", t);
}

static struct dstate *unregistered_state(const char *base_name, unsigned start, unsigned end)
{
        struct dstate *d = new_state();
        d->base_name = kiln_xstrdup(base_name);
        d->start_line = start;
        d->end_line = end;
        d->unregistered = true;
        return d;
}

/* toCommand (with detectRunMount): the stages a command reads from. */
static int to_command_inner(struct conv *c, struct kiln_dockerfile_cmd *cmd, struct command *out,
                            struct kiln_error **err);

static int to_command(struct conv *c, struct kiln_dockerfile_cmd *cmd, struct command *out,
                      struct kiln_error **err)
{
        int r = to_command_inner(c, cmd, out, err);
        if (r < 0) {
                free(out->sources);
                out->sources = NULL;
                out->n_sources = 0;
        }
        return r;
}

/* The state called from (a stage, or an image COPY --from or RUN --mount
 * from= names, added on first use) into *ret. */
static int find_or_add_state(struct conv *c, const char *from,
                             const struct kiln_dockerfile_cmd *cmd, struct dstate **ret,
                             struct kiln_error **err)
{
        struct dstate *src = find_state(c, from);
        if (!src) {
                if (c->n_states >= KILN_LIMIT_DOCKERFILE_STATES)
                        return err_at(c, err, -E2BIG, cmd->start_line,
                                      "more than %d stages and images referenced",
                                      KILN_LIMIT_DOCKERFILE_STATES);
                src = unregistered_state(from, cmd->start_line, cmd->end_line);
                add_state(c, src);
        }
        *ret = src;
        return 0;
}

static int to_command_inner(struct conv *c, struct kiln_dockerfile_cmd *cmd, struct command *out,
                            struct kiln_error **err)
{
        *out = (struct command){ .cmd = cmd };
        if (cmd->type == KILN_DOCKERFILE_CMD_COPY && !str_empty(cmd->copy.from)) {
                const char *from = cmd->copy.from;
                _cleanup_free_ char *w = NULL;
                int r = kiln_shell_process_word(&c->lex, from, NULL, &w, err);
                if (r < 0)
                        return wrap_at(c, err, r, cmd->start_line);
                if (!streq(w, from))
                        return err_at(
                                c, err, -EINVAL, cmd->start_line,
                                "variable expansion is not supported for --from, define a new "
                                "stage with FROM using ARG from global scope as a workaround");
                struct dstate *src;
                int64_t index;
                /* strconv.Atoi */
                if (parse_int64(from, &index)) {
                        if (index < 0 || (uint64_t) index >= c->n_states)
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "invalid stage index %" PRId64, index);
                        src = c->states[index];
                } else if ((r = find_or_add_state(c, from, cmd, &src, err)) < 0)
                        return r;
                out->sources = kiln_xcalloc(1, sizeof(struct dstate *));
                out->sources[0] = src;
                out->n_sources = 1;
        }
        if (cmd->type == KILN_DOCKERFILE_CMD_RUN) {
                if (!cmd->run.mounts && cmd->run.n_mount_specs > 0) {
                        int r = kiln_dockerfile_cmd_expand(cmd, c->file, NULL, NULL, err);
                        if (r < 0)
                                return wrap_at(c, err, r, cmd->start_line);
                }
                out->n_sources = cmd->run.n_mounts;
                out->sources = kiln_xcalloc(out->n_sources + 1, sizeof(struct dstate *));
                for (size_t i = 0; i < cmd->run.n_mounts; i++) {
                        const char *from = cmd->run.mounts[i].from;
                        if (str_empty(from))
                                from = EMPTY_IMAGE_NAME;
                        int r = find_or_add_state(c, from, cmd, &out->sources[i], err);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static void state_add_command(struct dstate *d, struct command *cmd, bool prepend)
{
        d->commands = kiln_xreallocarray(d->commands, d->n_commands + 1, sizeof(struct command));
        if (prepend) {
                memmove(d->commands + 1, d->commands, d->n_commands * sizeof(struct command));
                d->commands[0] = *cmd;
        } else
                d->commands[d->n_commands] = *cmd;
        d->n_commands++;
}

static int visit_cycle(struct dstate *s, struct dstate **visited, size_t *n_visited,
                       struct dstate **path, size_t *n_path,
                       const struct kiln_dockerfile_cmd **cmds, size_t *n_cmds)
{
        for (size_t i = 0; i < *n_visited; i++)
                if (visited[i] == s)
                        return 0;
        visited[(*n_visited)++] = s;
        path[(*n_path)++] = s;
        for (size_t i = 0; i < s->n_deps; i++) {
                struct dstate *dep = s->deps[i].state;
                cmds[(*n_cmds)++] = s->deps[i].cmd;
                for (size_t j = 0; j < *n_path; j++)
                        if (path[j] == dep)
                                return 1;
                if (visit_cycle(dep, visited, n_visited, path, n_path, cmds, n_cmds) > 0)
                        return 1;
                (*n_cmds)--;
        }
        (*n_path)--;
        return 0;
}

/* buildStageDependencyGraph */
static int build_graph(struct conv *c, struct kiln_error **err)
{
        size_t n = c->n_states; /* unregistered states are added behind */
        for (size_t i = 0; i < n; i++) {
                struct dstate *d = c->states[i];
                if (!d->stage)
                        continue;
                for (size_t j = 0; j < d->stage->n_cmds; j++) {
                        struct command cmd;
                        int r = to_command(c, d->stage->cmds[j], &cmd, err);
                        if (r < 0)
                                return r;
                        state_add_command(d, &cmd, false);
                        for (size_t k = 0; k < cmd.n_sources; k++)
                                if (cmd.sources[k])
                                        dstate_add_dep(d, cmd.sources[k], cmd.cmd);
                }
        }
        /* validateCircularDependency */
        {
                size_t total = c->n_states, n_visited = 0;
                _cleanup_free_ struct dstate **visited = kiln_xcalloc(total + 1, sizeof(void *));
                _cleanup_free_ struct dstate **path = kiln_xcalloc(total + 1, sizeof(void *));
                size_t max_cmds = 1;
                for (size_t i = 0; i < total; i++)
                        max_cmds += c->states[i]->n_deps;
                _cleanup_free_ const struct kiln_dockerfile_cmd **cmds =
                        kiln_xcalloc(max_cmds + total + 1, sizeof(void *));
                for (size_t i = 0; i < total; i++) {
                        size_t n_path = 0, n_cmds = 0;
                        if (visit_cycle(c->states[i], visited, &n_visited, path, &n_path, cmds,
                                        &n_cmds) > 0) {
                                unsigned line = n_cmds > 0 && cmds[0] ? cmds[0]->start_line : 0;
                                return err_at(c, err, -ELOOP, line,
                                              "circular dependency detected on stage: %s",
                                              c->states[i]->stage_name);
                        }
                }
        }
        if (c->n_states == 1)
                set_str(&c->states[0]->stage_name, "");
        return 0;
}

/* ------------------------------------------------------------------------ */
/* step names */

/* platformFromEnv + formatTargetPlatform: "->arm64" for cross builds. */
static char *format_target_platform(const struct kiln_content_platform *base,
                                    const struct envlist *env)
{
        struct kiln_content_platform p = { 0 };
        bool set = false;
        char *out = NULL;
        if (env) {
                for (size_t i = 0; i < env->n && !out; i++) {
                        const char *k = env->kv[2 * i], *v = env->kv[2 * i + 1];
                        if (streq(k, "TARGETPLATFORM")) {
                                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                                struct kiln_content_platform tp;
                                if (kiln_content_platform_parse(v, &tp, &e) < 0)
                                        continue;
                                kiln_content_platform_release(&p);
                                p = tp;
                                set = true;
                                break;
                        } else if (streq(k, "TARGETOS")) {
                                set_str(&p.os, v);
                                set = true;
                        } else if (streq(k, "TARGETARCH")) {
                                set_str(&p.architecture, v);
                                set = true;
                        } else if (streq(k, "TARGETVARIANT")) {
                                set_str(&p.variant, v);
                                set = true;
                        }
                }
        }
        if (!set) {
                kiln_content_platform_release(&p);
                return kiln_xstrdup("");
        }
        if (str_empty(p.os))
                set_str(&p.os, base->os);
        if (str_empty(p.architecture))
                set_str(&p.architecture, base->architecture);
        kiln_content_platform_normalize(&p);
        if (streq_ptr(p.os, base->os) && !streq_ptr(p.architecture, base->architecture))
                out = kiln_xasprintf("->%s%s%s", p.architecture, str_empty(p.variant) ? "" : "/",
                                     p.variant ?: "");
        else if (!streq_ptr(p.os, base->os)) {
                _cleanup_free_ char *f = platform_format_all(&p);
                out = kiln_xasprintf("->%s", f);
        } else
                out = kiln_xstrdup("");
        kiln_content_platform_release(&p);
        return out;
}

/* prefixCommand */
static char *prefix_command(struct conv *c, struct dstate *d, const char *str,
                            const struct kiln_content_platform *platform, const struct envlist *env)
{
        struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
        if (d->cmd_total == 0)
                return kiln_xstrdup(str);
        (void) kiln_buf_putc(&b, '[');
        if (c->multi_platform && platform) {
                _cleanup_free_ char *f = platform_format_all(platform);
                _cleanup_free_ char *t = format_target_platform(platform, env);
                (void) kiln_buf_printf(&b, "%s%s ", f, t);
        }
        if (!str_empty(d->stage_name))
                (void) kiln_buf_printf(&b, "%s ", d->stage_name);
        d->cmd_index++;
        (void) kiln_buf_printf(&b, "%*u/%u] ", (int) decimal_digits(d->cmd_total), d->cmd_index,
                               d->cmd_total);
        if (d->cmd_is_onbuild)
                (void) kiln_buf_puts(&b, "ONBUILD ");
        (void) kiln_buf_puts(&b, str);
        return kiln_buf_steal(&b);
}

/* uppercaseCmd */
static char *uppercase_cmd(const char *s)
{
        char *r = kiln_xstrdup(s);
        for (char *p = r; *p && *p != ' '; p++)
                *p = ascii_toupper(*p);
        return r;
}

/* processCmdEnv: the expanded text, or the text itself on error. */
static char *process_cmd_env(struct conv *c, const struct kiln_shell_lex *lex, const char *cmd,
                             const struct envlist *env)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_shell_result res = { 0 };
        if (expand_word(c, lex, cmd, env, &res, &e) < 0)
                return kiln_xstrdup(cmd);
        char *w = TAKE_PTR(res.word);
        kiln_shell_result_release(&res);
        return w;
}

/* ------------------------------------------------------------------------ */
/* reachability, ONBUILD triggers, base images */

static bool in_list(struct dstate *const *v, size_t n, const struct dstate *d)
{
        for (size_t i = 0; i < n; i++)
                if (v[i] == d)
                        return true;
        return false;
}

static void add_reachable(struct dstate *s, struct dstate **out, size_t *n)
{
        if (in_list(out, *n, s))
                return;
        out[(*n)++] = s;
        if (s->base)
                add_reachable(s->base, out, n);
        for (size_t i = 0; i < s->n_deps; i++)
                add_reachable(s->deps[i].state, out, n);
}

/* init(): inherit from the base stage. */
static void state_init(struct dstate *d)
{
        if (!d->base)
                return;
        lstate_copy(&d->state, &d->base->state);
        if (d->base->has_platform)
                dstate_set_platform(d, &d->base->platform);
        image_copy(&d->image, &d->base->image);
        strv_release(&d->image.onbuild);
        if (d->base->has_base_img) {
                image_copy(&d->base_img, &d->base->base_img);
                d->has_base_img = true;
        }
        d->workdir_set = d->base->workdir_set;
        size_t n = d->base->n_build_args;
        for (size_t i = 0; i < n; i++)
                dstate_add_build_arg(d, d->base->build_args[i].key, d->base->build_args[i].value);
}

static int init_onbuild_triggers(struct conv *c, struct dstate *d, const struct strv *triggers,
                                 bool *new_deps, struct kiln_error **err)
{
        struct command *cmds = NULL;
        size_t n = 0;
        int r = 0;

        if (triggers->n > KILN_LIMIT_DOCKERFILE_ONBUILD_TRIGGERS)
                return err_at(c, err, -E2BIG, d->start_line, "more than %d ONBUILD triggers",
                              KILN_LIMIT_DOCKERFILE_ONBUILD_TRIGGERS);
        cmds = kiln_xcalloc(triggers->n + 1, sizeof(struct command));
        for (size_t i = 0; i < triggers->n; i++) {
                _cleanup_(kiln_dockerfile_result_freep) struct kiln_dockerfile_result *res = NULL;
                struct kiln_dockerfile_cmd *cmd = NULL;
                struct kiln_dockerfile_stage *stage = NULL;
                const char *t = triggers->v[i];

                r = kiln_dockerfile_parse_full(t, strlen(t), c->file, &res, err);
                if (r < 0)
                        goto fail;
                if (res->root->n_children != 1) {
                        r = err_at(c, err, -EINVAL, d->start_line,
                                   "onbuild trigger should be a single expression");
                        goto fail;
                }
                res->root->children[0]->start_line = d->start_line;
                res->root->children[0]->end_line = d->end_line;
                r = kiln_dockerfile_instruction_parse(res->root->children[0], c->file, &cmd, &stage,
                                                      err);
                if (r < 0)
                        goto fail;
                if (stage) {
                        kiln_dockerfile_stage_free(stage);
                        r = err_at(c, err, -EINVAL, d->start_line,
                                   "FROM isn't allowed as an ONBUILD trigger");
                        goto fail;
                }
                cmd->start_line = d->start_line;
                cmd->end_line = d->end_line;
                r = to_command(c, cmd, &cmds[n], err);
                if (r < 0) {
                        kiln_dockerfile_cmd_free(cmd);
                        goto fail;
                }
                cmds[n].owned = true;
                cmds[n].is_onbuild = true;
                if (cmds[n].n_sources > 0)
                        *new_deps = true;
                for (size_t k = 0; k < cmds[n].n_sources; k++)
                        if (cmds[n].sources[k])
                                dstate_add_dep(d, cmds[n].sources[k], cmd);
                n++;
        }
        /* d.commands = append(triggers, d.commands...) */
        for (size_t i = n; i > 0; i--)
                state_add_command(d, &cmds[i - 1], true);
        d->cmd_total += (unsigned) n;
        free(cmds);
        return 0;
fail:
        for (size_t i = 0; i < n; i++) {
                kiln_dockerfile_cmd_free(cmds[i].cmd);
                free(cmds[i].sources);
        }
        free(cmds);
        if (r < 0 && *err && (*err)->line == 0)
                wrap_at(c, err, r, d->start_line);
        return r;
}

static char *conv_log_prefix(struct conv *c, const struct kiln_content_platform *p)
{
        if (c->multi_platform && p) {
                _cleanup_free_ char *f = platform_format_all(p);
                return kiln_xasprintf("[%s internal]", f);
        }
        return kiln_xstrdup("[internal]");
}

static const char *const common_image_names[] = {
        "alpine", "busybox", "centos", "debian", "golang", "ubuntu", "fedora",
};

/* resolveBaseImage */
static int resolve_base_image(struct conv *c, struct dstate *d, bool reachable,
                              struct kiln_error **err)
{
        _cleanup_free_ char *orig = kiln_xstrdup(d->base_name), *norm = NULL;
        struct kiln_dockerfile_resolved_image res = { 0 };
        struct kiln_content_platform platform;
        bool is_scratch = false;
        int r;

        r = normalize_ref(d->base_name, &norm, err);
        if (r < 0) {
                kiln_error_wrap(err, "failed to parse stage name \"%s\"", d->base_name);
                wrap_at(c, err, r, d->start_line);
                goto out_unreg;
        }
        kiln_content_platform_copy(&platform, d->has_platform ? &d->platform : &c->target_platform);
        set_str(&d->base_name, norm);

        if (reachable) {
                _cleanup_free_ char *prefix = conv_log_prefix(c, &platform);
                _cleanup_free_ char *step =
                        kiln_xasprintf("%s load metadata for %s", prefix, d->base_name);
                if (!strv_contains(&c->internal_steps, step))
                        strv_push(&c->internal_steps, step);
                if (!c->opt->resolve)
                        r = kiln_error_set(err, -ENOENT, "no image resolver to load %s",
                                           d->base_name);
                else
                        r = c->opt->resolve(c->opt->userdata, d->base_name, &platform, &res, err);
                if (r >= 0 && !res.config)
                        r = kiln_error_set(err, -EINVAL, "no image config returned");
                if (r < 0) {
                        _cleanup_(strv_release) struct strv names = { 0 };
                        state_names(c, &names);
                        for (size_t i = 0; i < ELEMENTSOF(common_image_names); i++) {
                                const char *n = common_image_names[i];
                                strv_push(&names, n);
                                strv_push_take(&names, kiln_xasprintf("docker.io/library%s", n));
                                strv_push_take(&names, kiln_xasprintf("%s:latest", n));
                                strv_push_take(&names,
                                               kiln_xasprintf("docker.io/library%s:latest", n));
                        }
                        _cleanup_free_ char *s = kiln_suggest(orig, (const char *const *) names.v,
                                                              names.n, KILN_SUGGEST_CASE_SENSITIVE);
                        if (!*err)
                                kiln_error_set(err, r, "resolver failed");
                        kiln_error_wrap(err, "%s", orig);
                        if (s) {
                                char *m =
                                        kiln_xasprintf("%s (did you mean %s?)", (*err)->message, s);
                                free((*err)->message);
                                (*err)->message = m;
                        }
                        wrap_at(c, err, r, d->start_line);
                        goto out;
                }
                if (res.ref && !streq(res.ref, d->base_name)) {
                        _cleanup_free_ char *n2 = NULL;
                        r = normalize_ref(res.ref, &n2, err);
                        if (r < 0) {
                                kiln_error_wrap(err, "failed to parse ref \"%s\"", res.ref);
                                wrap_at(c, err, r, d->start_line);
                                goto out;
                        }
                        set_str(&d->base_name, n2);
                }
                struct image img = { 0 };
                r = image_parse(res.config, res.config_len, &img, err);
                if (r < 0) {
                        image_release(&img);
                        kiln_error_wrap(err, "failed to parse image config");
                        wrap_at(c, err, r, d->start_line);
                        goto out;
                }
                image_copy(&d->base_img, &img);
                d->has_base_img = true;
                freep_str(&img.created);
                /* autoDetectPlatform is the identity here: the only build
                 * platform is the implicit target. */
                if (res.digest) {
                        /* reference.WithDigest keeps the tag */
                        char *at = strchr(d->base_name, '@');
                        if (at)
                                *at = 0;
                        char *t = kiln_xasprintf("%s@%s", d->base_name, res.digest);
                        free(d->base_name);
                        d->base_name = t;
                }
                if (img.diff_ids.n == 0) {
                        is_scratch = true;
                        for (size_t i = 0; i < img.n_history; i++)
                                if (!img.history[i].empty_layer) {
                                        is_scratch = false;
                                        break;
                                }
                }
                image_release(&d->image);
                d->image = img;
        }
        if (is_scratch) {
                d->state.out = NULL;
        } else {
                struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_IMAGE);
                _cleanup_free_ char *from = kiln_xasprintf("FROM %s", d->base_name);
                _cleanup_free_ char *name = prefix_command(c, d, from, &platform, NULL);
                op->source.image.ref = kiln_xstrdup(d->base_name);
                op->source.image.resolve_mode = c->opt->resolve_mode;
                llb_platform_from(&op->platform, &platform);
                op_set_command(op, d->source_code ?: "");
                op_set_name(op, name);
                d->state.out = conv_add_node(c, op);
                d->state.out->start_line = d->start_line;
                d->state.out->end_line = d->end_line;
                if (!str_empty(d->image.os) || !str_empty(d->image.architecture)) {
                        struct kiln_content_platform actual = { .os = d->image.os,
                                                                .architecture =
                                                                        d->image.architecture,
                                                                .variant = d->image.variant };
                        if (!streq_ptr(platform.os, actual.os) ||
                            !streq_ptr(platform.architecture, actual.architecture)) {
                                struct kiln_content_platform e, a;
                                kiln_content_platform_copy(&e, &platform);
                                kiln_content_platform_copy(&a, &actual);
                                kiln_content_platform_normalize(&e);
                                kiln_content_platform_normalize(&a);
                                _cleanup_free_ char *es = platform_format_all(&e);
                                _cleanup_free_ char *as = platform_format_all(&a);
                                lint_run(c, &RULE_INVALID_BASE_IMAGE_PLATFORM, d->start_line,
                                         d->end_line,
                                         "Base image %s was pulled with platform \"%s\", expected "
                                         "\"%s\" for current build",
                                         orig, as, es);
                                kiln_content_platform_release(&e);
                                kiln_content_platform_release(&a);
                        }
                }
        }
        dstate_set_platform(d, &platform);
        r = 0;
out:
        kiln_content_platform_release(&platform);
        kiln_dockerfile_resolved_image_release(&res);
out_unreg:
        if (d->unregistered)
                d->dispatched = true;
        return r;
}

/* resolveReachableStages */
static int resolve_reachable(struct conv *c, struct dstate *target, struct dstate ***ret,
                             size_t *ret_n, struct kiln_error **err)
{
        struct dstate **reach = kiln_xcalloc(c->n_states + 1, sizeof(struct dstate *));
        size_t n = 0;
        int r;

        add_reachable(target, reach, &n);
        for (size_t i = 0; i < c->n_states; i++) {
                struct dstate *d = c->states[i];
                bool reachable = in_list(reach, n, d);
                if (d->base || d->dispatched || d->resolved)
                        continue;
                d->resolved = reachable;
                if (streq(d->base_name, EMPTY_IMAGE_NAME)) {
                        d->state.out = NULL;
                        image_empty(&d->image, &c->target_platform);
                        dstate_set_platform(d, &c->target_platform);
                        if (d->unregistered)
                                d->dispatched = true;
                        continue;
                }
                r = resolve_base_image(c, d, reachable, err);
                if (r < 0) {
                        free(reach);
                        return r;
                }
        }
        *ret = reach;
        *ret_n = n;
        return 0;
}

/* resolveStages */
static int resolve_stages(struct conv *c, struct dstate *target, struct dstate ***ret,
                          size_t *ret_n, struct kiln_error **err)
{
        for (unsigned round = 0;; round++) {
                struct dstate **reach = NULL;
                size_t n = 0;
                bool new_deps = false;
                int r;

                if (round >= KILN_LIMIT_DOCKERFILE_ONBUILD_ROUNDS)
                        return kiln_error_set(err, -E2BIG,
                                              "ONBUILD triggers keep adding stages after %d rounds",
                                              KILN_LIMIT_DOCKERFILE_ONBUILD_ROUNDS);
                r = resolve_reachable(c, target, &reach, &n, err);
                if (r < 0)
                        return r;
                /* a stable order: as the states were added */
                for (size_t i = 0; i < c->n_states; i++) {
                        struct dstate *d = c->states[i];
                        _cleanup_(strv_release) struct strv onbuilds = { 0 };
                        if (!in_list(reach, n, d))
                                continue;
                        state_init(d);
                        strv_copy(&onbuilds, &d->image.onbuild);
                        if (d->base && !d->onbuild_init) {
                                for (size_t j = 0; j < d->base->n_commands; j++) {
                                        const struct kiln_dockerfile_cmd *cmd =
                                                d->base->commands[j].cmd;
                                        if (cmd->type == KILN_DOCKERFILE_CMD_ONBUILD)
                                                strv_push(&onbuilds, cmd->word);
                                }
                                d->onbuild_init = true;
                        }
                        if (onbuilds.n > 0) {
                                r = init_onbuild_triggers(c, d, &onbuilds, &new_deps, err);
                                if (r < 0) {
                                        free(reach);
                                        return r;
                                }
                                strv_release(&d->image.onbuild);
                        }
                }
                if (!new_deps) {
                        *ret = reach;
                        *ret_n = n;
                        return 0;
                }
                free(reach);
        }
}

/* ------------------------------------------------------------------------ */
/* dispatch */

struct expander {
        struct conv *c;
        struct dstate *d;
        const struct kiln_dockerfile_cmd *cmd;
        const struct kiln_shell_lex *lex;
};

static const char *const non_env_args[] = { "BUILDKIT_SBOM_SCAN_CONTEXT",
                                            "BUILDKIT_SBOM_SCAN_STAGE" };

static bool is_non_env_arg(const char *k)
{
        for (size_t i = 0; i < ELEMENTSOF(non_env_args); i++)
                if (streq(k, non_env_args[i]))
                        return true;
        return false;
}

/* reportUnmatchedVariables */
static void report_unmatched(struct conv *c, struct dstate *d,
                             const struct kiln_dockerfile_cmd *cmd, const struct envlist *env,
                             char *const *unmatched, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                const char *v = unmatched[i];
                if (dstate_has_build_arg(d, v) || is_non_env_arg(v))
                        continue;
                _cleanup_(strv_release) struct strv keys = { 0 };
                for (size_t k = 0; k < env->n; k++)
                        strv_push(&keys, env->kv[2 * k]);
                _cleanup_free_ char *s = kiln_suggest(v, (const char *const *) keys.v, keys.n,
                                                      KILN_SUGGEST_CASE_SENSITIVE);
                if (s)
                        lint_run(c, &RULE_UNDEFINED_VAR, cmd->start_line, cmd->end_line,
                                 "Usage of undefined variable '$%s' (did you mean $%s?)", v, s);
                else
                        lint_run(c, &RULE_UNDEFINED_VAR, cmd->start_line, cmd->end_line,
                                 "Usage of undefined variable '$%s'", v);
        }
}

static int expander_fn(void *userdata, const char *word, char **out, struct kiln_error **err)
{
        struct expander *x = userdata;
        struct kiln_shell_result res = { 0 };
        int r = expand_word(x->c, x->lex, word, &x->d->state.env, &res, err);
        if (r < 0)
                return r;
        report_unmatched(x->c, x->d, x->cmd, &x->d->state.env, res.unmatched, res.n_unmatched);
        *out = TAKE_PTR(res.word);
        kiln_shell_result_release(&res);
        return 0;
}

static void commit_history(struct conv *c, struct dstate *d, const char *msg, bool with_layer,
                           bool buildkit)
{
        _cleanup_free_ char *m = buildkit ? kiln_xasprintf("%s # buildkit", msg) : NULL;
        image_add_history(&d->image, m ?: msg, !with_layer, c->has_epoch ? c->epoch_text : NULL);
}

/* withShell */
static void with_shell(const struct image *img, char *const *args, size_t n, struct strv *out)
{
        if (img->shell.n > 0)
                strv_copy(out, &img->shell);
        else if (streq_ptr(img->os, "windows")) {
                strv_push(out, "cmd");
                strv_push(out, "/S");
                strv_push(out, "/C");
        } else {
                strv_push(out, "/bin/sh");
                strv_push(out, "-c");
        }
        strv_push_take(out, strv_join(args, n, " "));
}

static struct node *new_file_node(struct conv *c, struct dstate *d, struct node *base,
                                  struct kiln_llb_op **op_ret)
{
        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_FILE);
        op->file.base = node_ref(base);
        if (d && d->has_platform)
                llb_platform_from(&op->platform, &d->platform);
        else
                llb_platform_from(&op->platform, &c->target_platform);
        *op_ret = op;
        return conv_add_node(c, op);
}

static const struct kiln_content_platform *dplatform(struct conv *c, const struct dstate *d)
{
        return d->has_platform ? &d->platform : &c->target_platform;
}

static int check_env_size(struct conv *c, struct dstate *d, unsigned line, struct kiln_error **err)
{
        if (d->state.env.n > KILN_LIMIT_DOCKERFILE_VARS ||
            d->image.env.n > KILN_LIMIT_DOCKERFILE_VARS ||
            d->n_build_args > KILN_LIMIT_DOCKERFILE_VARS ||
            d->image.labels.n > KILN_LIMIT_DOCKERFILE_VARS)
                return err_at(
                        c, err, -E2BIG, line,
                        "more than %d environment variables, build args or labels in one stage",
                        KILN_LIMIT_DOCKERFILE_VARS);
        return 0;
}

/* ENV */
static int dispatch_env(struct conv *c, struct dstate *d, struct kiln_dockerfile_cmd *cmd,
                        struct kiln_error **err)
{
        struct kiln_buf msg = KILN_BUF_INIT(TEXT_MAX);
        (void) kiln_buf_puts(&msg, "ENV");
        for (size_t i = 0; i < cmd->kv.n_kvs; i++) {
                const struct kiln_dockerfile_kv *kv = &cmd->kv.kvs[i];
                if (kv->no_delim)
                        lint_run(c, &RULE_LEGACY_KEY_VALUE, cmd->start_line, cmd->end_line,
                                 "\"%s key=value\" should be used instead of legacy \"%s key "
                                 "value\" format",
                                 cmd->name, cmd->name);
                lint_secret_key(c, "ENV", kv->key, cmd->start_line, cmd->end_line);
                (void) kiln_buf_printf(&msg, " %s=%s", kv->key, kv->value);
                env_set(&d->state.env, kv->key, kv->value);
                image_env_set(&d->image, kv->key, kv->value);
        }
        commit_history(c, d, msg.data, false, false);
        kiln_buf_release(&msg);
        return check_env_size(c, d, cmd->start_line, err);
}

/* ARG */
static int dispatch_arg(struct conv *c, struct dstate *d, struct kiln_dockerfile_cmd *cmd,
                        struct kiln_error **err)
{
        _cleanup_(strv_release) struct strv parts = { 0 };
        for (size_t i = 0; i < cmd->arg.n_args; i++) {
                const struct kiln_dockerfile_arg *arg = &cmd->arg.args[i];
                const char *bv = env_get(&c->build_args, arg->key);
                _cleanup_free_ char *value = NULL;
                lint_secret_key(c, "ARG", arg->key, cmd->start_line, cmd->end_line);
                if (!arg->value && !bv) {
                        const char *g = env_get(&c->global_args, arg->key);
                        if (g)
                                value = kiln_xstrdup(g);
                }
                if (bv) {
                        set_str(&value, bv);
                } else if (arg->value) {
                        struct kiln_shell_result res = { 0 };
                        int r = expand_word(c, &c->lex, arg->value, &d->state.env, &res, err);
                        if (r < 0)
                                return wrap_at(c, err, r, cmd->start_line);
                        report_unmatched(c, d, cmd, &d->state.env, res.unmatched, res.n_unmatched);
                        value = TAKE_PTR(res.word);
                        kiln_shell_result_release(&res);
                }
                if (value && !is_non_env_arg(arg->key))
                        env_set(&d->state.env, arg->key, value);
                dstate_add_build_arg(d, arg->key, value);
                strv_push_take(&parts, value ? kiln_xasprintf("%s=%s", arg->key, value)
                                             : kiln_xstrdup(arg->key));
        }
        _cleanup_free_ char *j = strv_join(parts.v, parts.n, " ");
        _cleanup_free_ char *msg = kiln_xasprintf("ARG %s", j);
        commit_history(c, d, msg, false, false);
        return check_env_size(c, d, cmd->start_line, err);
}

/* WORKDIR; commit false applies a base image's WorkingDir. */
static int dispatch_workdir(struct conv *c, struct dstate *d, const char *path, bool commit,
                            const struct kiln_dockerfile_cmd *cmd, struct kiln_error **err)
{
        if (commit) {
                if (!d->workdir_set && !path_is_abs(path))
                        lint_run(c, &RULE_WORKDIR_RELATIVE, cmd->start_line, cmd->end_line,
                                 "Relative workdir \"%s\" can have unexpected results if the base "
                                 "image changes",
                                 path);
                d->workdir_set = true;
        }
        _cleanup_free_ char *wd = normalize_path(d->image.working_dir ?: "", path, false);
        set_str(&d->image.working_dir, wd);
        lstate_set_dir(&d->state, wd);
        if (!commit)
                return 0;
        bool with_layer = false;
        if (!streq(wd, "/")) {
                struct kiln_llb_op *op;
                struct node *n = new_file_node(c, d, d->state.out, &op);
                struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, KILN_LLB_FILE_MKDIR);
                a->mkdir.path = llb_normalize_path(d->state.dir, wd, false);
                a->mkdir.mode = 0755;
                a->mkdir.make_parents = true;
                if (!str_empty(d->image.user))
                        kiln_llb_chown_parse(d->image.user, &a->mkdir.chown);
                if (c->has_epoch) {
                        a->mkdir.has_timestamp = true;
                        a->mkdir.timestamp = c->epoch * 1000000000;
                }
                _cleanup_free_ char *pe = process_cmd_env(c, &c->lex, cmd->code, &d->state.env);
                _cleanup_free_ char *up = uppercase_cmd(pe);
                _cleanup_free_ char *name =
                        prefix_command(c, d, up, dplatform(c, d), &d->state.env);
                op_set_name(op, name);
                d->state.out = n;
                with_layer = true;
        }
        _cleanup_free_ char *msg = kiln_xasprintf("WORKDIR %s", wd);
        commit_history(c, d, msg, with_layer, false);
        return 0;
}

static int dispatch_user(struct conv *c, struct dstate *d, const char *user, bool commit)
{
        set_str(&d->state.user, user);
        set_str(&d->image.user, user);
        if (commit) {
                _cleanup_free_ char *msg = kiln_xasprintf("USER %s", user);
                commit_history(c, d, msg, false, false);
        }
        return 0;
}

static void used_once(struct conv *c, const struct kiln_dockerfile_cmd *cmd, bool *set,
                      unsigned *line)
{
        if (*set)
                lint_run(c, &RULE_MULTIPLE_INSTRUCTIONS, *line, *line,
                         "Multiple %s instructions should not be used in the same stage because "
                         "only the last one will be used",
                         cmd->name);
        *set = true;
        *line = cmd->start_line;
}

/* CMD and ENTRYPOINT */
static int dispatch_cmdline(struct conv *c, struct dstate *d, const struct kiln_dockerfile_cmd *cmd)
{
        bool entrypoint = cmd->type == KILN_DOCKERFILE_CMD_ENTRYPOINT;
        _cleanup_(strv_release) struct strv args = { 0 };
        if (entrypoint)
                used_once(c, cmd, &d->entrypoint_set, &d->entrypoint_line);
        else
                used_once(c, cmd, &d->cmd_set, &d->cmd_line);
        if (cmd->cmdline.prepend_shell) {
                if (d->image.shell.n == 0)
                        lint_run(c, &RULE_JSON_ARGS, cmd->start_line, cmd->end_line,
                                 "JSON arguments recommended for %s to prevent unintended behavior "
                                 "related to OS signals",
                                 cmd->name);
                with_shell(&d->image, cmd->cmdline.args, cmd->cmdline.n_args, &args);
        } else
                for (size_t i = 0; i < cmd->cmdline.n_args; i++)
                        strv_push(&args, cmd->cmdline.args[i]);
        _cleanup_free_ char *q = go_quote_list(args.v, args.n);
        _cleanup_free_ char *msg = kiln_xasprintf("%s %s", entrypoint ? "ENTRYPOINT" : "CMD", q);
        if (entrypoint) {
                strv_copy(&d->image.entrypoint, &args);
                if (!d->cmd_set)
                        strv_release(&d->image.cmd);
        } else {
                strv_copy(&d->image.cmd, &args);
                d->image.args_escaped = true;
        }
        commit_history(c, d, msg, false, false);
        return 0;
}

static int dispatch_healthcheck(struct conv *c, struct dstate *d,
                                const struct kiln_dockerfile_cmd *cmd)
{
        const struct kiln_dockerfile_healthcheck *h = &cmd->healthcheck;
        struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
        used_once(c, cmd, &d->healthcheck_set, &d->healthcheck_line);
        healthcheck_free(d->image.healthcheck);
        d->image.healthcheck = kiln_xcalloc(1, sizeof(struct healthcheck));
        for (size_t i = 0; i < h->n_test; i++)
                strv_push(&d->image.healthcheck->test, h->test[i]);
        d->image.healthcheck->interval = h->interval;
        d->image.healthcheck->timeout = h->timeout;
        d->image.healthcheck->start_period = h->start_period;
        d->image.healthcheck->start_interval = h->start_interval;
        d->image.healthcheck->retries = h->retries;
        /* Go's %+v of HealthcheckConfig */
        _cleanup_free_ char *test =
                go_list(d->image.healthcheck->test.v, d->image.healthcheck->test.n);
        (void) kiln_buf_printf(&b, "HEALTHCHECK {Test:%s Interval:", test);
        go_duration(&b, h->interval);
        (void) kiln_buf_puts(&b, " Timeout:");
        go_duration(&b, h->timeout);
        (void) kiln_buf_puts(&b, " StartPeriod:");
        go_duration(&b, h->start_period);
        (void) kiln_buf_puts(&b, " StartInterval:");
        go_duration(&b, h->start_interval);
        (void) kiln_buf_printf(&b, " Retries:%" PRId32 "}", h->retries);
        commit_history(c, d, b.data, false, false);
        kiln_buf_release(&b);
        return 0;
}

/* ---- EXPOSE: BuildKit's port spec parsing ---- */

static int parse_port_number(const char *s, size_t n, long *ret, char **why)
{
        if (n == 0) {
                *why = kiln_xstrdup("value is empty");
                return -EINVAL;
        }
        _cleanup_free_ char *t = kiln_xstrndup(s, n);
        char *end;
        errno = 0;
        long long v = strtoll(t, &end, 10);
        if (*end || isspace((unsigned char) *t)) {
                *why = kiln_xstrdup("invalid syntax");
                return -EINVAL;
        }
        if (errno == ERANGE) {
                *why = kiln_xstrdup("value out of range");
                return -EINVAL;
        }
        if (v < 0 || v > 65535) {
                *why = kiln_xstrdup("value out of range (0–65535)");
                return -EINVAL;
        }
        *ret = (long) v;
        return 0;
}

static int parse_port_range(const char *s, long *start, long *end)
{
        _cleanup_free_ char *why = NULL;
        if (!*s)
                return -EINVAL;
        const char *dash = strchr(s, '-');
        size_t n1 = dash ? (size_t) (dash - s) : strlen(s);
        if (parse_port_number(s, n1, start, &why) < 0)
                return -EINVAL;
        if (!dash || (strlen(dash + 1) == n1 && memcmp(s, dash + 1, n1) == 0)) {
                *end = *start;
                return 0;
        }
        freep_str(&why);
        if (parse_port_number(dash + 1, strlen(dash + 1), end, &why) < 0)
                return -EINVAL;
        if (*end < *start)
                return -EINVAL;
        return 0;
}

static int parse_port(struct conv *c, const struct kiln_dockerfile_cmd *cmd, const char *raw,
                      struct strv *out, struct kiln_error **err)
{
        _cleanup_(strv_release) struct strv parts = { 0 };
        _cleanup_free_ char *copy = kiln_xstrdup(raw);
        const char *ip = "", *host_port = "", *container = "";
        _cleanup_free_ char *ipj = NULL;
        char *p = copy, *colon;
        while ((colon = strchr(p, ':'))) {
                *colon = 0;
                strv_push(&parts, p);
                p = colon + 1;
        }
        strv_push(&parts, p);
        if (parts.n == 1)
                container = parts.v[0];
        else if (parts.n == 2) {
                host_port = parts.v[0];
                container = parts.v[1];
        } else {
                ipj = strv_join(parts.v, parts.n - 2, ":");
                ip = ipj;
                host_port = parts.v[parts.n - 2];
                container = parts.v[parts.n - 1];
        }
        /* splitProtoPort */
        _cleanup_free_ char *port = NULL, *proto = NULL;
        const char *slash = strchr(container, '/');
        port = slash ? kiln_xstrndup(container, (size_t) (slash - container))
                     : kiln_xstrdup(container);
        proto = kiln_xstrdup(slash ? slash + 1 : "");
        if (!*port)
                return err_at(c, err, -EINVAL, cmd->start_line,
                              "invalid port: \"%s\": no port specified", raw);
        _cleanup_free_ char *plo = kiln_dockerfile_lower(proto);
        if (!*plo)
                set_str(&proto, "tcp"), set_str(&plo, "tcp");
        else if (!streq(plo, "tcp") && !streq(plo, "udp") && !streq(plo, "sctp"))
                return err_at(c, err, -EINVAL, cmd->start_line,
                              "invalid port: \"%s\": invalid proto: %s", raw, proto);
        if (!streq(proto, plo))
                lint_run(c, &RULE_EXPOSE_PROTO_CASING, cmd->start_line, cmd->end_line,
                         "Defined protocol '%s' in EXPOSE instruction should be lowercase", raw);
        if (*ip || *host_port)
                lint_run(c, &RULE_EXPOSE_INVALID_FORMAT, cmd->start_line, cmd->end_line,
                         "EXPOSE instruction should not define an IP address or host-port mapping, "
                         "found '%s'",
                         raw);
        long start, end;
        if (parse_port_range(port, &start, &end) < 0)
                return err_at(c, err, -EINVAL, cmd->start_line, "invalid containerPort: %s", port);
        if (*host_port) {
                long hs, he;
                if (parse_port_range(host_port, &hs, &he) < 0)
                        return err_at(c, err, -EINVAL, cmd->start_line, "invalid hostPort: %s",
                                      host_port);
                if (end - start != he - hs && end != start)
                        return err_at(
                                c, err, -EINVAL, cmd->start_line,
                                "invalid ranges specified for container and host Ports: %s and %s",
                                port, host_port);
        }
        if (out->n + (size_t) (end - start + 1) > KILN_LIMIT_DOCKERFILE_EXPOSE_PORTS)
                return err_at(c, err, -E2BIG, cmd->start_line, "more than %d exposed ports",
                              KILN_LIMIT_DOCKERFILE_EXPOSE_PORTS);
        for (long i = start; i <= end; i++)
                strv_push_take(out, kiln_xasprintf("%ld/%s", i, plo));
        return 0;
}

static int dispatch_expose(struct conv *c, struct dstate *d, const struct kiln_dockerfile_cmd *cmd,
                           struct kiln_error **err)
{
        _cleanup_(strv_release) struct strv ports = { 0 }, specs = { 0 };
        int r;
        for (size_t i = 0; i < cmd->list.n_items; i++) {
                struct kiln_shell_result res = { 0 };
                r = expand_word(c, &c->lex, cmd->list.items[i], &d->state.env, &res, err);
                if (r < 0)
                        return wrap_at(c, err, r, cmd->start_line);
                for (size_t j = 0; j < res.n_words; j++)
                        strv_push(&ports, res.words[j]);
                kiln_shell_result_release(&res);
        }
        for (size_t i = 0; i < ports.n; i++) {
                r = parse_port(c, cmd, ports.v[i], &specs, err);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < specs.n; i++)
                bag_add(&d->image.exposed_ports, &d->image.exposed_mark, specs.v[i]);
        _cleanup_free_ char *l = go_list(specs.v, specs.n);
        _cleanup_free_ char *msg = kiln_xasprintf("EXPOSE %s", l);
        commit_history(c, d, msg, false, false);
        return 0;
}

static const char *const signal_names[] = {
        "ABRT", "ALRM",   "BUS",  "CHLD",   "CLD",   "CONT", "FPE",  "HUP",   "ILL",
        "INT",  "IO",     "IOT",  "KILL",   "PIPE",  "POLL", "PROF", "PWR",   "QUIT",
        "SEGV", "STKFLT", "STOP", "SYS",    "TERM",  "TRAP", "TSTP", "TTIN",  "TTOU",
        "URG",  "USR1",   "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
};

/* signal.ParseSignal */
static bool signal_valid(const char *s)
{
        int64_t n;
        if (parse_int64(s, &n))
                return n != 0 && n >= INT_MIN && n <= INT_MAX;
        _cleanup_free_ char *u = kiln_dockerfile_upper(s);
        const char *name = startswith(u, "SIG") ? u + 3 : u;
        for (size_t i = 0; i < ELEMENTSOF(signal_names); i++)
                if (streq(name, signal_names[i]))
                        return true;
        for (int i = 1; i <= 15; i++) {
                char b[16];
                (void) snprintf(b, sizeof(b), "RTMIN+%d", i);
                if (streq(name, b))
                        return true;
        }
        for (int i = 1; i <= 14; i++) {
                char b[16];
                (void) snprintf(b, sizeof(b), "RTMAX-%d", i);
                if (streq(name, b))
                        return true;
        }
        return false;
}

/* ---- RUN ---- */

/* summarizeHeredoc */
static char *summarize_heredoc(const char *doc)
{
        size_t n = strlen(doc);
        while (n > 0 && isspace((unsigned char) *doc)) {
                doc++;
                n--;
        }
        while (n > 0 && isspace((unsigned char) doc[n - 1]))
                n--;
        const char *nl = memchr(doc, '\n', n);
        size_t first = nl ? (size_t) (nl - doc) : n;
        if (first > 0 && doc[first - 1] == '\r' && nl)
                first--;
        return kiln_xasprintf("%.*s%s", (int) first, doc, nl ? "..." : "");
}

/* runCommandString */
static char *run_command_string(const struct dstate *d, const struct strv *args)
{
        _cleanup_(strv_release) struct strv env = { 0 }, keys = { 0 };
        for (size_t i = 0; i < d->n_build_args; i++) {
                const struct build_arg *a = &d->build_args[i];
                const char *v = env_get(&d->state.env, a->key);
                if (!v)
                        v = a->value ?: "";
                char *kv = kiln_xasprintf("%s=%s", a->key, v);
                size_t j;
                for (j = 0; j < keys.n; j++)
                        if (streq(keys.v[j], a->key))
                                break;
                if (j < keys.n) {
                        free(env.v[j]);
                        env.v[j] = kv;
                } else {
                        strv_push(&keys, a->key);
                        strv_push_take(&env, kv);
                }
        }
        struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
        if (env.n > 0) {
                (void) kiln_buf_printf(&b, "|%zu", env.n);
                for (size_t i = 0; i < env.n; i++)
                        (void) kiln_buf_printf(&b, " %s", env.v[i]);
        }
        for (size_t i = 0; i < args->n; i++)
                (void) kiln_buf_printf(&b, "%s%s", b.len > 0 ? " " : "", args->v[i]);
        return kiln_buf_steal(&b);
}

/* setCacheUIDGID: a directory with the cache's owner and mode. */
static struct node *cache_uid_gid(struct conv *c, struct dstate *d,
                                  const struct kiln_dockerfile_mount *m, struct node *in)
{
        struct kiln_llb_op *op;
        struct node *n = new_file_node(c, d, in, &op);
        struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, KILN_LLB_FILE_MKDIR);
        a->mkdir.path = kiln_xstrdup("/cache");
        a->mkdir.mode = m->has_mode ? m->mode : 0755;
        a->mkdir.chown.user.kind = KILN_LLB_USER_ID;
        a->mkdir.chown.user.id = m->has_uid ? m->uid : 0;
        a->mkdir.chown.group.kind = KILN_LLB_USER_ID;
        a->mkdir.chown.group.id = m->has_gid ? m->gid : 0;
        op_set_name(op, "[internal] setting cache mount permissions");
        return n;
}

static int dispatch_run_mounts(struct conv *c, struct dstate *d, struct kiln_dockerfile_cmd *cmd,
                               const struct command *command, struct kiln_llb_op *op,
                               struct kiln_error **err)
{
        unsigned n_ssh = 0;
        for (size_t i = 0; i < cmd->run.n_mounts; i++) {
                const struct kiln_dockerfile_mount *m = &cmd->run.mounts[i];
                const char *from = m->from;
                struct node *input = c->context;
                struct kiln_llb_mount *lm;

                if (str_empty(from) && m->type == KILN_DOCKERFILE_MOUNT_CACHE)
                        from = EMPTY_IMAGE_NAME;
                if (!str_empty(from)) {
                        struct dstate *src = i < command->n_sources ? command->sources[i] : NULL;
                        if (!src || !src->dispatched)
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "cannot mount from stage \"%s\" to \"%s\", stage "
                                              "needs to be defined before current command",
                                              from, m->target);
                        input = src->state.out;
                }
                if (m->type == KILN_DOCKERFILE_MOUNT_SECRET) {
                        /* dispatchSecret */
                        const char *id = !str_empty(m->source) ? m->source : m->cache_id;
                        _cleanup_free_ char *idb = NULL, *dest = NULL;
                        if (str_empty(id)) {
                                if (str_empty(m->target))
                                        return err_at(c, err, -EINVAL, cmd->start_line,
                                                      "one of source, target required");
                                idb = path_base(m->target);
                                id = idb;
                        }
                        if (!m->env) {
                                if (!str_empty(m->target))
                                        dest = kiln_xstrdup(m->target);
                                else {
                                        _cleanup_free_ char *b = path_base(id);
                                        dest = kiln_xasprintf("/run/secrets/%s", b);
                                }
                        } else if (!str_empty(m->target))
                                dest = kiln_xstrdup(m->target);
                        if (dest) {
                                lm = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SECRET, dest);
                                lm->id = kiln_xstrdup(id);
                                lm->optional = !m->required;
                                if (m->has_uid || m->has_gid || m->has_mode) {
                                        lm->uid = m->has_uid ? m->uid : 0;
                                        lm->gid = m->has_gid ? m->gid : 0;
                                        lm->mode = m->has_mode ? m->mode : 0400;
                                }
                        }
                        if (m->env)
                                kiln_llb_exec_add_secret_env(op, id, m->env, !m->required);
                        continue;
                }
                if (m->type == KILN_DOCKERFILE_MOUNT_SSH) {
                        /* dispatchSSH */
                        _cleanup_free_ char *target = NULL;
                        if (!str_empty(m->source))
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "ssh does not support source");
                        target = !str_empty(m->target)
                                         ? kiln_xstrdup(m->target)
                                         : kiln_xasprintf("/run/buildkit/ssh_agent.%u", n_ssh);
                        n_ssh++;
                        lm = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_SSH, target);
                        lm->id = kiln_xstrdup(str_empty(m->cache_id) ? "default" : m->cache_id);
                        lm->optional = !m->required;
                        if (m->has_uid || m->has_gid || m->has_mode) {
                                lm->uid = m->has_uid ? m->uid : 0;
                                lm->gid = m->has_gid ? m->gid : 0;
                                lm->mode = m->has_mode ? m->mode : 0600;
                        }
                        continue;
                }

                _cleanup_free_ char *target = NULL, *clean = kiln_pattern_clean(m->target);
                if (!path_is_abs(clean))
                        target = path_join3("/", d->state.dir, m->target);
                else
                        target = kiln_xstrdup(m->target);
                if (streq(target, "/"))
                        return err_at(c, err, -EINVAL, cmd->start_line,
                                      "invalid mount target \"%s\"", target);

                enum kiln_llb_mount_type type = KILN_LLB_MOUNT_BIND;
                if (m->type == KILN_DOCKERFILE_MOUNT_TMPFS) {
                        type = KILN_LLB_MOUNT_TMPFS;
                        input = NULL;
                } else if (m->type == KILN_DOCKERFILE_MOUNT_CACHE)
                        type = KILN_LLB_MOUNT_CACHE;

                _cleanup_free_ char *src = path_join("/", m->source);
                const char *selector = NULL;
                if (!streq(src, "/"))
                        selector = src;
                else if (m->has_uid || m->has_gid || m->has_mode) {
                        input = cache_uid_gid(c, d, m, input);
                        selector = "/cache";
                }

                lm = kiln_llb_exec_add_mount(op, type, target);
                lm->input = node_ref(input);
                if (type != KILN_LLB_MOUNT_TMPFS)
                        lm->selector = xstrdup0(selector);
                if (m->readonly)
                        lm->readonly = true;
                else if (type == KILN_LLB_MOUNT_BIND)
                        lm->no_output = true;
                if (type == KILN_LLB_MOUNT_TMPFS)
                        lm->tmpfs_size = m->size_limit > 0 ? (uint64_t) m->size_limit : 0;
                if (type == KILN_LLB_MOUNT_CACHE) {
                        _cleanup_free_ char *cid = str_empty(m->cache_id)
                                                           ? kiln_pattern_clean(m->target)
                                                           : kiln_xstrdup(m->cache_id);
                        lm->id = kiln_xasprintf("%s/%s", c->cache_ns ?: "", cid);
                        if (m->sharing == KILN_DOCKERFILE_SHARING_PRIVATE)
                                lm->sharing = KILN_LLB_CACHE_PRIVATE;
                        else if (m->sharing == KILN_DOCKERFILE_SHARING_LOCKED)
                                lm->sharing = KILN_LLB_CACHE_LOCKED;
                        else
                                lm->sharing = KILN_LLB_CACHE_SHARED;
                }
                _cleanup_free_ char *used = path_join("/", m->source);
                /* paths used in other stages only matter for named
                 * contexts, which kiln does not have */
                if (str_empty(from))
                        strv_push(&d->ctx_paths, used);
        }
        return 0;
}

static int cmp_mount(const void *a, const void *b)
{
        return strcmp(((const struct kiln_llb_mount *) a)->target,
                      ((const struct kiln_llb_mount *) b)->target);
}

static int dispatch_run(struct conv *c, struct dstate *d, struct kiln_dockerfile_cmd *cmd,
                        const struct command *command, struct kiln_error **err)
{
        const struct kiln_dockerfile_cmdline *cl = &cmd->run.cmdline;
        _cleanup_(strv_release) struct strv args = { 0 }, final = { 0 };
        _cleanup_free_ char *customname = kiln_xstrdup(cmd->code);
        _cleanup_(kiln_llb_op_freep) struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
        struct node *pipes = NULL;
        int r;

        for (size_t i = 0; i < cl->n_args; i++)
                strv_push(&args, cl->args[i]);
        if (cl->n_files > 0) {
                struct kiln_dockerfile_heredoc h = { 0 };
                _cleanup_(kiln_error_freep) struct kiln_error *herr = NULL;
                if (args.n != 1 || !cl->prepend_shell) {
                        _cleanup_free_ char *l = go_list(args.v, args.n);
                        return err_at(c, err, -EINVAL, cmd->start_line,
                                      "parsing produced an invalid run command: %s", l);
                }
                int is_heredoc =
                        kiln_dockerfile_heredoc_parse(args.v[0], strlen(args.v[0]), &h, &herr);
                kiln_dockerfile_heredoc_release(&h);
                if (is_heredoc == 1) {
                        const struct kiln_dockerfile_inline_file *f = &cl->files[0];
                        _cleanup_free_ char *data = NULL;
                        if (f->chomp) {
                                struct kiln_dockerfile_str s =
                                        kiln_dockerfile_heredoc_chomp(f->data, strlen(f->data));
                                data = s.s;
                        } else
                                data = kiln_xstrdup(f->data);
                        if (!streq_ptr(d->image.os, "windows") && startswith(data, "#!")) {
                                struct kiln_llb_op *fop;
                                pipes = new_file_node(c, d, NULL, &fop);
                                struct kiln_llb_file_action *a =
                                        kiln_llb_file_add_action(fop, KILN_LLB_FILE_MKFILE);
                                a->mkfile.path = llb_normalize_path("/", f->name, false);
                                a->mkfile.mode = 0755;
                                a->mkfile.len = strlen(data);
                                a->mkfile.data =
                                        a->mkfile.len
                                                ? (uint8_t *) kiln_xstrndup(data, a->mkfile.len)
                                                : NULL;
                                op_set_name(fop, "[internal] preparing inline document");
                                strv_release(&args);
                                strv_push_take(&args, path_join("/dev/pipes/", f->name));
                        } else {
                                strv_release(&args);
                                strv_push(&args, data);
                        }
                        _cleanup_free_ char *sum = summarize_heredoc(f->data);
                        char *t = kiln_xasprintf("%s (%s)", customname, sum);
                        free(customname);
                        customname = t;
                } else {
                        struct kiln_buf b = KILN_BUF_INIT(TEXT_MAX);
                        (void) kiln_buf_puts(&b, args.v[0]);
                        for (size_t i = 0; i < cl->n_files; i++)
                                (void) kiln_buf_printf(&b, "\n%s%s", cl->files[i].data,
                                                       cl->files[i].name);
                        strv_release(&args);
                        strv_push_take(&args, kiln_buf_steal(&b));
                }
        }
        if (cl->prepend_shell)
                with_shell(&d->image, args.v, args.n, &final);
        else
                strv_copy(&final, &args);
        if (final.n == 0)
                return err_at(c, err, -EINVAL, cmd->start_line, "arguments are required");

        for (size_t i = 0; i < final.n; i++)
                kiln_llb_strv_push(&op->exec.args, final.v[i]);
        op->exec.cwd = kiln_xstrdup(d->state.dir ?: "/");
        op->exec.user = xstrdup0(d->state.user);
        op->exec.hostname = xstrdup0(d->state.hostname);
        op->exec.network = d->state.network;
        op->exec.remove_mount_stubs_recursive = true;
        op_set_command(op, cmd->code);
        op->meta.ignore_cache = d->ignore_cache;
        if (c->has_proxy) {
                op->exec.proxy_env.http_proxy = xstrdup0(c->proxy.http_proxy);
                op->exec.proxy_env.https_proxy = xstrdup0(c->proxy.https_proxy);
                op->exec.proxy_env.ftp_proxy = xstrdup0(c->proxy.ftp_proxy);
                op->exec.proxy_env.no_proxy = xstrdup0(c->proxy.no_proxy);
                op->exec.proxy_env.all_proxy = xstrdup0(c->proxy.all_proxy);
        }
        llb_platform_from(&op->platform, dplatform(c, d));
        for (size_t i = 0; i < c->opt->n_extra_hosts; i++)
                if (c->opt->extra_hosts[i].key && c->opt->extra_hosts[i].value)
                        kiln_llb_exec_add_extra_host(op, c->opt->extra_hosts[i].key,
                                                     c->opt->extra_hosts[i].value);

        struct kiln_llb_mount *root = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/");
        root->input = node_ref(d->state.out);
        if (pipes) {
                struct kiln_llb_mount *pm =
                        kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/dev/pipes/");
                pm->input = node_ref(pipes);
                pm->selector = kiln_xstrdup("/");
                pm->readonly = true;
        }
        r = dispatch_run_mounts(c, d, cmd, command, op, err);
        if (r < 0)
                return r;

        op->exec.security = cmd->run.security == KILN_DOCKERFILE_SECURITY_INSECURE
                                    ? KILN_LLB_SECURITY_INSECURE
                                    : KILN_LLB_SECURITY_SANDBOX;
        if (cmd->run.network == KILN_DOCKERFILE_NETWORK_NONE)
                op->exec.network = KILN_LLB_NETWORK_NONE;
        else if (cmd->run.network == KILN_DOCKERFILE_NETWORK_HOST)
                op->exec.network = KILN_LLB_NETWORK_HOST;

        /* env: the state's, with SSH_AUTH_SOCK for the first ssh mount */
        {
                struct envlist env = { 0 };
                env_copy(&env, &d->state.env);
                for (size_t i = 0; i < op->exec.n_mounts; i++)
                        if (op->exec.mounts[i].type == KILN_LLB_MOUNT_SSH) {
                                if (!env_get(&env, "SSH_AUTH_SOCK"))
                                        env_set(&env, "SSH_AUTH_SOCK", op->exec.mounts[i].target);
                                break;
                        }
                for (size_t i = 0; i < env.n; i++) {
                        _cleanup_free_ char *kv =
                                kiln_xasprintf("%s=%s", env.kv[2 * i], env.kv[2 * i + 1]);
                        kiln_llb_strv_push(&op->exec.env, kv);
                }
                env_release(&env);
        }
        /* mounts sorted by target, the root first */
        if (op->exec.n_mounts > 1)
                qsort(op->exec.mounts, op->exec.n_mounts, sizeof(struct kiln_llb_mount), cmp_mount);

        /* the step name: expanded with quotes kept and unset variables left
         * alone, secrets taken from the environment masked */
        {
                struct kiln_shell_lex lex = c->lex;
                struct envlist masked = { 0 };
                lex.raw_quotes = true;
                lex.skip_unset_env = true;
                env_copy(&masked, &d->state.env);
                for (size_t i = 0; i < cmd->run.n_mounts; i++)
                        if (cmd->run.mounts[i].type == KILN_DOCKERFILE_MOUNT_SECRET &&
                            cmd->run.mounts[i].env)
                                env_set(&masked, cmd->run.mounts[i].env, "****");
                _cleanup_free_ char *pe = process_cmd_env(c, &lex, customname, &masked);
                _cleanup_free_ char *up = uppercase_cmd(pe);
                _cleanup_free_ char *name =
                        prefix_command(c, d, up, dplatform(c, d), &d->state.env);
                op_set_name(op, name);
                env_release(&masked);
        }

        d->state.out = conv_add_node(c, TAKE_PTR(op));
        _cleanup_free_ char *rcs = run_command_string(d, &final);
        _cleanup_free_ char *msg = kiln_xasprintf("RUN %s", rcs);
        commit_history(c, d, msg, true, true);
        return 0;
}

/* ---- COPY and ADD ---- */

struct git_ref {
        char *remote;
        char *ref;
        char *subdir;
        char *checksum;
        bool has_keep_git_dir, keep_git_dir;
        bool has_submodules, submodules;
};

static void git_ref_release(struct git_ref *g)
{
        free(g->remote);
        free(g->ref);
        free(g->subdir);
        free(g->checksum);
        *g = (struct git_ref){ 0 };
}

/* gitutil's parseOpts: "#ref:subdir" */
static void git_fragment(struct git_ref *g, const char *frag)
{
        if (str_empty(frag))
                return;
        const char *colon = strchr(frag, ':');
        g->ref = colon ? kiln_xstrndup(frag, (size_t) (colon - frag)) : kiln_xstrdup(frag);
        _cleanup_free_ char *sub = path_join("/", colon ? colon + 1 : "");
        const char *s = sub[0] == '/' ? sub + 1 : sub;
        g->subdir = kiln_xstrdup(s);
}

static int git_bool(const char *k, const char *v, bool *ret, struct kiln_error **err)
{
        if (!v) {
                *ret = true;
                return 0;
        }
        if (!parse_bool(v, ret))
                return kiln_error_set(err, -EINVAL, "invalid %s value: \"%s\"", k, v);
        return 0;
}

/* loadQuery, for the keys BuildKit knows */
static int git_query(struct git_ref *g, const char *query, struct kiln_error **err)
{
        _cleanup_free_ char *q = kiln_xstrdup(query), *tag = NULL, *branch = NULL;
        char *save = NULL;
        int r;
        for (char *p = strtok_r(q, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
                char *eq = strchr(p, '=');
                const char *v = NULL;
                if (eq) {
                        *eq = 0;
                        v = eq + 1;
                }
                if (str_empty(v)) {
                        if (streq(p, "submodules") || streq(p, "keep-git-dir") ||
                            streq(p, "fetch-by-commit"))
                                v = NULL;
                        else
                                return kiln_error_set(err, -EINVAL, "query \"%s\" has no value", p);
                }
                if (streq(p, "ref")) {
                        if (!str_empty(g->ref) && !streq(g->ref, v))
                                return kiln_error_set(err, -EINVAL,
                                                      "ref conflicts: \"%s\" vs \"%s\"", g->ref, v);
                        set_str(&g->ref, v);
                } else if (streq(p, "tag"))
                        set_str(&tag, v);
                else if (streq(p, "branch"))
                        set_str(&branch, v);
                else if (streq(p, "subdir")) {
                        if (!str_empty(g->subdir) && !streq(g->subdir, v))
                                return kiln_error_set(err, -EINVAL,
                                                      "subdir conflicts: \"%s\" vs \"%s\"",
                                                      g->subdir, v);
                        set_str(&g->subdir, v);
                } else if (streq(p, "checksum") || streq(p, "commit"))
                        set_str(&g->checksum, v);
                else if (streq(p, "keep-git-dir")) {
                        if ((r = git_bool(p, v, &g->keep_git_dir, err)) < 0)
                                return r;
                        g->has_keep_git_dir = true;
                } else if (streq(p, "submodules")) {
                        if ((r = git_bool(p, v, &g->submodules, err)) < 0)
                                return r;
                        g->has_submodules = true;
                } else if (streq(p, "fetch-by-commit")) {
                        bool b;
                        if ((r = git_bool(p, v, &b, err)) < 0)
                                return r;
                } else if (streq(p, "mtime")) {
                        if (!streq(v, "checkout") && !streq(v, "commit"))
                                return kiln_error_set(err, -EINVAL,
                                                      "invalid mtime value: \"%s\" (must be "
                                                      "\"checkout\" or \"commit\")",
                                                      v);
                } else
                        return kiln_error_set(err, -EINVAL, "unexpected query \"%s\"", p);
        }
        if (tag) {
                _cleanup_free_ char *t = startswith(tag, "refs/tags/")
                                                 ? kiln_xstrdup(tag)
                                                 : kiln_xasprintf("refs/tags/%s", tag);
                if (!str_empty(g->ref) && !streq(g->ref, t))
                        return kiln_error_set(err, -EINVAL, "ref conflicts: \"%s\" vs \"%s\"",
                                              g->ref, t);
                set_str(&g->ref, t);
        }
        if (branch) {
                if (tag)
                        return kiln_error_set(err, -EINVAL, "branch conflicts with tag");
                _cleanup_free_ char *b = startswith(branch, "refs/heads/")
                                                 ? kiln_xstrdup(branch)
                                                 : kiln_xasprintf("refs/heads/%s", branch);
                if (!str_empty(g->ref) && !streq(g->ref, b))
                        return kiln_error_set(err, -EINVAL, "ref conflicts: \"%s\" vs \"%s\"",
                                              g->ref, b);
                set_str(&g->ref, b);
        }
        return 0;
}

/* dfgitutil.ParseGitRef: returns 1 for a git source (filling *g), 0 when
 * src is something else, -errno (with *err) for a malformed git source. */
static int parse_git_ref(const char *src, struct git_ref *g, struct kiln_error **err)
{
        _cleanup_free_ char *s = NULL;
        char *frag, *query;
        size_t i = 0;

        *g = (struct git_ref){ 0 };
        if (startswith(src, "./") || startswith(src, "../") || startswith(src, "github.com/"))
                return 0; /* github.com/... is indistinguishable from a local path */
        while (isalnum((unsigned char) src[i]))
                i++;
        s = kiln_xstrdup(src);
        frag = strchr(s, '#');
        if (frag)
                *frag++ = 0;
        query = strchr(s, '?');
        if (query)
                *query++ = 0;
        if (i > 0 && startswith(src + i, "://")) {
                _cleanup_free_ char *proto = kiln_xstrndup(src, i);
                char *lp = kiln_dockerfile_lower(proto);
                bool http = streq(lp, "http") || streq(lp, "https");
                bool ok = http || streq(lp, "ssh") || streq(lp, "git");
                free(lp);
                if (!ok)
                        return 0;
                if (http) {
                        const char *path = strchr(s + i + 3, '/');
                        if (!path || !ends_with(path, ".git"))
                                return 0;
                }
        } else {
                /* scp style: user@host:path */
                const char *at = strchr(s, '@');
                if (!at || at == s)
                        return 0;
                for (const char *p = s; p < at; p++)
                        if (!isalnum((unsigned char) *p) && *p != '-' && *p != '_')
                                return 0;
                const char *colon = strchr(at, ':');
                if (!colon || colon == at + 1)
                        return 0;
                for (const char *p = at + 1; p < colon; p++)
                        if (!isalnum((unsigned char) *p) && *p != '-' && *p != '.')
                                return 0;
        }
        g->remote = kiln_xstrdup(s);
        git_fragment(g, frag);
        if (query && *query) {
                int r = git_query(g, query, err);
                if (r < 0) {
                        git_ref_release(g);
                        return r;
                }
        }
        return 1;
}

/* go-digest's Parse, for ADD --checksum of an HTTP source */
static int check_digest(const char *s, struct kiln_error **err)
{
        const char *colon = strchr(s, ':');
        if (!colon || !colon[1])
                return kiln_error_set(err, -EINVAL, "invalid checksum digest format");
        size_t alg = (size_t) (colon - s), hex = strlen(colon + 1), want;
        if (alg == 6 && !strncmp(s, "sha256", 6))
                want = 64;
        else if (alg == 6 && !strncmp(s, "sha384", 6))
                want = 96;
        else if (alg == 6 && !strncmp(s, "sha512", 6))
                want = 128;
        else
                return kiln_error_set(err, -EINVAL, "unsupported digest algorithm");
        if (hex != want)
                return kiln_error_set(err, -EINVAL, "invalid checksum digest length");
        for (const char *p = colon + 1; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return kiln_error_set(err, -EINVAL, "invalid checksum digest format");
        return 0;
}

static bool is_http_source(const char *src)
{
        struct git_ref g;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        if (!startswith(src, "http://") && !startswith(src, "https://"))
                return false;
        int r = parse_git_ref(src, &g, &e);
        git_ref_release(&g);
        return r != 1;
}

static bool contains_wildcards(const char *s)
{
        for (; *s; s++) {
                if (*s == '*' || *s == '?' || *s == '[')
                        return true;
                if (*s == '\\' && s[1])
                        s++;
        }
        return false;
}

/* The basename of a URL's path (url.Parse + path.Base), or __unnamed__. */
static char *url_filename(const char *url)
{
        const char *p = strstr(url, "://");
        p = p ? strchr(p + 3, '/') : NULL;
        if (!p)
                return kiln_xstrdup("__unnamed__");
        size_t n = strcspn(p, "?#");
        _cleanup_free_ char *path = kiln_xstrndup(p, n);
        char *b = path_base(path);
        if (streq(b, ".") || streq(b, "/")) {
                free(b);
                return kiln_xstrdup("__unnamed__");
        }
        return b;
}

static void copy_common(struct kiln_llb_file_action *a, const struct kiln_dockerfile_copy *cp,
                        const struct kiln_dockerfile_chmod *chmod, bool has_chmod)
{
        if (!str_empty(cp->chown))
                kiln_llb_chown_parse(cp->chown, &a->copy.chown);
        for (size_t i = 0; i < cp->n_excludes; i++)
                kiln_llb_strv_push(&a->copy.exclude_patterns, cp->excludes[i]);
        if (has_chmod) {
                if (chmod->symbolic)
                        a->copy.mode_str = kiln_xstrdup(cp->chmod);
                else {
                        a->copy.has_mode = true;
                        a->copy.mode = chmod->mode;
                }
        }
        a->copy.create_dest_path = true;
}

/* ---- .dockerignore matching (moby/patternmatcher), for CopyIgnoredFile ---- */

/* Longest pattern or path the lint looks at. */
#define IGNORE_MATCH_MAX 4096

enum tok_kind { TOK_LIT, TOK_STAR, TOK_QMARK, TOK_ANY, TOK_OPTDIR, TOK_CLASS };

struct tok {
        enum tok_kind kind;
        char ch;           /* TOK_LIT */
        const char *class; /* TOK_CLASS: the text between '[' and ']' */
        size_t class_len;
};

static bool class_match(const char *cls, size_t n, char ch)
{
        bool neg = n > 0 && cls[0] == '^', hit = false;
        for (size_t i = neg ? 1 : 0; i < n; i++) {
                char lo = cls[i];
                if (lo == '\\' && i + 1 < n)
                        lo = cls[++i];
                char hi = lo;
                if (i + 2 < n && cls[i + 1] == '-') {
                        hi = cls[i + 2];
                        if (hi == '\\' && i + 3 < n)
                                hi = cls[++i + 2];
                        i += 2;
                }
                if ((unsigned char) ch >= (unsigned char) lo &&
                    (unsigned char) ch <= (unsigned char) hi)
                        hit = true;
        }
        return hit != neg;
}

/* Whether toks match all of s (the pattern's anchored regexp). */
static bool toks_match(const struct tok *t, size_t k, const char *s)
{
        size_t n = strlen(s);
        _cleanup_free_ bool *next = kiln_xcalloc(n + 2, sizeof(bool));
        _cleanup_free_ bool *cur = kiln_xcalloc(n + 2, sizeof(bool));
        next[n] = true; /* no tokens left: only the end matches */
        for (size_t i = k; i > 0; i--) {
                const struct tok *x = &t[i - 1];
                bool slash_then = false; /* TOK_OPTDIR: some '/' at m-1 >= j with next[m] */
                for (size_t jj = n + 1; jj > 0; jj--) {
                        size_t j = jj - 1;
                        bool v = false, more = j < n;
                        switch (x->kind) {
                        case TOK_LIT:
                                v = more && s[j] == x->ch && next[j + 1];
                                break;
                        case TOK_QMARK:
                                v = more && s[j] != '/' && next[j + 1];
                                break;
                        case TOK_CLASS:
                                v = more && class_match(x->class, x->class_len, s[j]) &&
                                    next[j + 1];
                                break;
                        case TOK_STAR:
                                v = next[j] || (more && s[j] != '/' && cur[j + 1]);
                                break;
                        case TOK_ANY:
                                v = next[j] || (more && cur[j + 1]);
                                break;
                        case TOK_OPTDIR:
                                if (more && s[j] == '/' && next[j + 1])
                                        slash_then = true;
                                v = next[j] || slash_then;
                                break;
                        }
                        cur[j] = v;
                }
                bool *tmp = next;
                next = cur;
                cur = tmp;
                memset(cur, 0, (n + 2) * sizeof(bool));
        }
        return next[0];
}

struct ignore_pattern {
        enum { MATCH_EXACT, MATCH_PREFIX, MATCH_SUFFIX, MATCH_REGEXP } type;
        char *text; /* cleaned pattern */
        struct tok *toks;
        size_t n_toks;
};

/* Pattern.compile; returns false for a pattern the regexp engine would
 * reject (an unclosed '['). */
static bool ignore_compile(struct ignore_pattern *p)
{
        const char *s = p->text;
        size_t n = strlen(s);
        p->type = MATCH_EXACT;
        p->toks = kiln_xcalloc(n + 1, sizeof(struct tok));
        for (size_t i = 0; i < n;) {
                char ch = s[i++];
                struct tok *t = &p->toks[p->n_toks];
                if (ch == '*') {
                        if (s[i] == '*') {
                                i++;
                                if (s[i] == '/')
                                        i++;
                                if (i == n) {
                                        if (p->type == MATCH_EXACT)
                                                p->type = MATCH_PREFIX;
                                        else {
                                                t->kind = TOK_ANY;
                                                p->n_toks++;
                                                p->type = MATCH_REGEXP;
                                        }
                                } else {
                                        t->kind = TOK_OPTDIR;
                                        p->n_toks++;
                                        p->type = MATCH_REGEXP;
                                }
                                /* the first thing in the pattern: a suffix */
                                if (i <= 3 && s[0] == '*' && s[1] == '*' && t == &p->toks[0])
                                        p->type = MATCH_SUFFIX;
                        } else {
                                t->kind = TOK_STAR;
                                p->n_toks++;
                                p->type = MATCH_REGEXP;
                        }
                } else if (ch == '?') {
                        t->kind = TOK_QMARK;
                        p->n_toks++;
                        p->type = MATCH_REGEXP;
                } else if (ch == '\\') {
                        t->kind = TOK_LIT;
                        if (i < n) {
                                t->ch = s[i++];
                                p->type = MATCH_REGEXP;
                        } else
                                t->ch = '\\';
                        p->n_toks++;
                } else if (ch == '[') {
                        size_t st = i;
                        if (s[i] == '^')
                                i++;
                        if (s[i] == ']')
                                i++;
                        while (i < n && s[i] != ']') {
                                if (s[i] == '\\' && i + 1 < n)
                                        i++;
                                i++;
                        }
                        if (i >= n)
                                return false;
                        t->kind = TOK_CLASS;
                        t->class = s + st;
                        t->class_len = i - st;
                        i++;
                        p->n_toks++;
                        p->type = MATCH_REGEXP;
                } else if (ch == ']') {
                        return false;
                } else {
                        t->kind = TOK_LIT;
                        t->ch = ch;
                        p->n_toks++;
                }
        }
        return true;
}

static bool ignore_match(const struct ignore_pattern *p, const char *path)
{
        size_t n = strlen(p->text);
        switch (p->type) {
        case MATCH_EXACT:
                return streq(path, p->text);
        case MATCH_PREFIX:
                return !strncmp(path, p->text, n - 2);
        case MATCH_SUFFIX: {
                const char *suffix = p->text + 2;
                if (ends_with(path, suffix))
                        return true;
                return suffix[0] == '/' && streq(path, suffix + 1);
        }
        case MATCH_REGEXP:
                return toks_match(p->toks, p->n_toks, path);
        }
        return false;
}

/* validateCopySourcePath: warns when .dockerignore excludes a source. */
static void lint_copy_source(struct conv *c, const struct kiln_dockerfile_cmd *cmd, const char *src)
{
        const struct kiln_dockerfile_convert_options *o = c->opt;
        struct ignore_pattern *pats = NULL;
        size_t n = 0;
        bool root_ignored = false, matched = false, ok = true;

        if (o->n_dockerignore == 0 || strlen(src) > IGNORE_MATCH_MAX)
                return;
        pats = kiln_xcalloc(o->n_dockerignore, sizeof(*pats));
        for (size_t i = 0; i < o->n_dockerignore && ok; i++) {
                const char *raw = o->dockerignore[i];
                size_t len = strlen(raw);
                while (len > 0 && isspace((unsigned char) raw[len - 1]))
                        len--;
                while (len > 0 && isspace((unsigned char) *raw)) {
                        raw++;
                        len--;
                }
                if (len == 0)
                        continue;
                if (raw[0] == '!' || len > IGNORE_MATCH_MAX)
                        ok = false; /* exclusions: too hard to judge statically */
                else {
                        _cleanup_free_ char *t = kiln_xstrndup(raw, len);
                        pats[n].text = kiln_pattern_clean(t);
                        if (!ignore_compile(&pats[n]))
                                ok = false;
                        const char *pt = pats[n].text;
                        if (streq(pt, "*") || streq(pt, "**") || streq(pt, "**/*"))
                                root_ignored = true;
                        n++;
                }
        }
        if (ok) {
                _cleanup_free_ char *p = kiln_pattern_clean(src);
                if ((!streq(p, ".") && !streq(p, "/")) || root_ignored) {
                        _cleanup_free_ char *parent = NULL;
                        {
                                /* filepath.Dir */
                                char *slash = strrchr(p, '/');
                                parent = !slash       ? kiln_xstrdup(".")
                                         : slash == p ? kiln_xstrdup("/")
                                                      : kiln_xstrndup(p, (size_t) (slash - p));
                        }
                        for (size_t i = 0; i < n && !matched; i++) {
                                bool m = ignore_match(&pats[i], p);
                                if (!m && !streq(parent, ".")) {
                                        /* the parent directories, "a", "a/b"... */
                                        _cleanup_free_ char *pre = kiln_xstrdup(parent);
                                        size_t len = strlen(pre);
                                        for (size_t e = 0; e <= len && !m; e++) {
                                                if (e < len && pre[e] != '/')
                                                        continue;
                                                char saved = pre[e];
                                                pre[e] = 0;
                                                m = ignore_match(&pats[i], pre);
                                                pre[e] = saved;
                                        }
                                }
                                matched = m;
                        }
                        if (matched)
                                lint_run(c, &RULE_COPY_IGNORED_FILE, cmd->start_line, cmd->end_line,
                                         "Attempting to %s file \"%s\" that is excluded by "
                                         ".dockerignore",
                                         cmd->type == KILN_DOCKERFILE_CMD_ADD ? "Add" : "Copy", p);
                }
        }
        for (size_t i = 0; i < n; i++) {
                free(pats[i].text);
                free(pats[i].toks);
        }
        free(pats);
}

static int dispatch_copy(struct conv *c, struct dstate *d, struct kiln_dockerfile_cmd *cmd,
                         struct node *source, struct kiln_error **err)
{
        struct kiln_dockerfile_copy *cp = &cmd->copy;
        bool is_add = cmd->type == KILN_DOCKERFILE_CMD_ADD;
        struct kiln_dockerfile_chmod chmod = { 0 };
        bool has_chmod = !str_empty(cp->chmod);
        _cleanup_(kiln_llb_op_freep) struct kiln_llb_op *fop = kiln_llb_op_new(KILN_LLB_OP_FILE);
        _cleanup_free_ char *dest = NULL, *checksum = kiln_xstrdup(cp->checksum ?: "");
        struct kiln_buf msg = KILN_BUF_INIT(TEXT_MAX);
        bool keep_git_set = cp->keep_git_dir_set, keep_git = cp->keep_git_dir;
        int r;

        /* pathRelativeToWorkingDir */
        if (path_is_abs(cp->dest))
                dest = normalize_path("/", cp->dest, true);
        else
                dest = normalize_path(d->state.dir,
                                      streq(cp->dest, ".") || !*cp->dest ? "./" : cp->dest, true);

        if (has_chmod) {
                r = kiln_dockerfile_chmod_parse(cp->chmod, &chmod, err);
                if (r < 0)
                        return wrap_at(c, err, r, cmd->start_line);
        }
        if (!str_empty(checksum)) {
                if (!is_add)
                        return err_at(c, err, -EINVAL, cmd->start_line,
                                      "checksum can't be specified for COPY");
                if (cp->n_sources != 1)
                        return err_at(c, err, -EINVAL, cmd->start_line,
                                      "checksum can't be specified for multiple sources");
                struct git_ref g;
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                int isgit = parse_git_ref(cp->sources[0], &g, &e);
                git_ref_release(&g);
                if (!is_http_source(cp->sources[0]) && isgit != 1)
                        return err_at(c, err, -EINVAL, cmd->start_line,
                                      "checksum requires HTTP(S) or Git sources");
        }

        (void) kiln_buf_puts(&msg, is_add ? "ADD" : "COPY");
        if (cp->parents)
                (void) kiln_buf_puts(&msg, " --parents");
        if (!str_empty(cp->chown))
                (void) kiln_buf_printf(&msg, " --chown=%s", cp->chown);
        if (has_chmod)
                (void) kiln_buf_printf(&msg, " --chmod=%s", cp->chmod);

        const struct kiln_content_platform *platform = dplatform(c, d);
        _cleanup_free_ char *pe = process_cmd_env(c, &c->lex, cmd->code, &d->state.env);
        _cleanup_free_ char *name = uppercase_cmd(pe);
        _cleanup_free_ char *pg_name = prefix_command(c, d, name, platform, &d->state.env);

        for (size_t i = 0; i < cp->n_sources; i++) {
                const char *src = cp->sources[i];
                struct git_ref g;
                struct kiln_llb_file_action *a;
                (void) kiln_buf_printf(&msg, " %s", src);
                r = parse_git_ref(src, &g, err);
                if (r < 0) {
                        kiln_buf_release(&msg);
                        return wrap_at(c, err, r, cmd->start_line);
                }
                if (r == 1) {
                        if (!is_add) {
                                git_ref_release(&g);
                                kiln_buf_release(&msg);
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "source can't be a git ref for COPY");
                        }
                        struct kiln_llb_op *gop = kiln_llb_op_new_source(KILN_LLB_SOURCE_GIT);
                        gop->source.git.remote = kiln_xstrdup(g.remote);
                        gop->source.git.ref = str_empty(g.ref) ? NULL : kiln_xstrdup(g.ref);
                        if (keep_git_set && g.has_keep_git_dir && keep_git != g.keep_git_dir) {
                                kiln_llb_op_free(gop);
                                git_ref_release(&g);
                                kiln_buf_release(&msg);
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "inconsistent keep-git-dir configuration");
                        }
                        if (g.has_keep_git_dir) {
                                keep_git_set = true;
                                keep_git = g.keep_git_dir;
                        }
                        gop->source.git.keep_git_dir = keep_git_set && keep_git;
                        if (!str_empty(checksum) && !str_empty(g.checksum) &&
                            !streq(checksum, g.checksum)) {
                                r = err_at(c, err, -EINVAL, cmd->start_line,
                                           "checksum mismatch \"%s\" != \"%s\"", checksum,
                                           g.checksum);
                                kiln_llb_op_free(gop);
                                git_ref_release(&g);
                                kiln_buf_release(&msg);
                                return r;
                        }
                        if (!str_empty(g.checksum))
                                set_str(&checksum, g.checksum);
                        /* BuildKit lets a non-commit checksum through to
                         * fail at fetch time; say so here, at its line. */
                        if (!str_empty(checksum) &&
                            strspn(checksum, "0123456789abcdef") != strlen(checksum)) {
                                r = err_at(c, err, -EINVAL, cmd->start_line,
                                           "invalid checksum \"%s\" for a git source: "
                                           "expected a commit id (hex)",
                                           checksum);
                                kiln_llb_op_free(gop);
                                git_ref_release(&g);
                                kiln_buf_release(&msg);
                                return r;
                        }
                        if (!str_empty(checksum))
                                gop->source.git.checksum = kiln_xstrdup(checksum);
                        if (!str_empty(g.subdir))
                                gop->source.git.subdir = kiln_xstrdup(g.subdir);
                        gop->source.git.skip_submodules = g.has_submodules && !g.submodules;
                        op_set_name(gop, pg_name);
                        struct node *gn = conv_add_node(c, gop);
                        git_ref_release(&g);
                        a = kiln_llb_file_add_action(fop, KILN_LLB_FILE_COPY);
                        a->copy.src = node_ref(gn);
                        a->copy.src_path = kiln_xstrdup("/");
                        a->copy.dest = llb_normalize_path(d->state.dir, dest, true);
                        copy_common(a, cp, &chmod, has_chmod);
                } else if (is_http_source(src)) {
                        if (!is_add) {
                                kiln_buf_release(&msg);
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "source can't be a URL for COPY");
                        }
                        _cleanup_free_ char *f = url_filename(src);
                        if (!str_empty(checksum)) {
                                r = check_digest(checksum, err);
                                if (r < 0) {
                                        kiln_buf_release(&msg);
                                        return wrap_at(c, err, r, cmd->start_line);
                                }
                        }
                        struct kiln_llb_op *hop = kiln_llb_op_new_source(KILN_LLB_SOURCE_HTTP);
                        hop->source.http.url = kiln_xstrdup(src);
                        hop->source.http.filename = kiln_xstrdup(f);
                        hop->source.http.checksum =
                                str_empty(checksum) ? NULL : kiln_xstrdup(checksum);
                        op_set_name(hop, pg_name);
                        op_set_command(hop, "");
                        struct node *hn = conv_add_node(c, hop);
                        a = kiln_llb_file_add_action(fop, KILN_LLB_FILE_COPY);
                        a->copy.src = node_ref(hn);
                        a->copy.src_path = llb_normalize_path("/", f, false);
                        a->copy.dest = llb_normalize_path(d->state.dir, dest, true);
                        copy_common(a, cp, &chmod, has_chmod);
                        a->copy.attempt_unpack = cp->unpack_set && cp->unpack;
                } else {
                        if (source == c->context)
                                lint_copy_source(c, cmd, src);
                        _cleanup_free_ char *s = kiln_xstrdup(src), *pattern = NULL,
                                            *required = NULL;
                        if (cp->parents) {
                                char *pivot = strstr(s, "/./");
                                _cleanup_free_ char *pat = NULL;
                                if (pivot) {
                                        pat = kiln_xstrdup(pivot + 3);
                                        *pivot = 0;
                                } else {
                                        pat = kiln_xstrdup(s);
                                        set_str(&s, "/");
                                }
                                _cleanup_free_ char *np = normalize_path("/", pat, false);
                                pattern = kiln_xstrdup(np[0] == '/' ? np + 1 : np);
                                if (!contains_wildcards(s) && !contains_wildcards(np)) {
                                        _cleanup_free_ char *j = path_join(s, np);
                                        required = normalize_path("/", j, false);
                                }
                        }
                        _cleanup_free_ char *ns = normalize_path("/", s, false);
                        a = kiln_llb_file_add_action(fop, KILN_LLB_FILE_COPY);
                        a->copy.src = node_ref(source);
                        {
                                /* sourcePath: relative to the source state's dir, "/" */
                                _cleanup_free_ char *cl = kiln_pattern_clean(ns);
                                a->copy.src_path =
                                        path_is_abs(cl) ? kiln_xstrdup(cl) : path_join("/", cl);
                        }
                        a->copy.dest = llb_normalize_path(d->state.dir, dest, true);
                        copy_common(a, cp, &chmod, has_chmod);
                        if (pattern)
                                kiln_llb_strv_push(&a->copy.include_patterns, pattern);
                        if (required)
                                kiln_llb_strv_push(&a->copy.required_paths, required);
                        a->copy.follow_symlinks = true;
                        a->copy.dir_copy_contents = true;
                        a->copy.attempt_unpack = cp->unpack_set ? cp->unpack : is_add;
                        a->copy.allow_wildcard = true;
                        a->copy.allow_empty_wildcard = true;
                }
        }
        for (size_t i = 0; i < cp->n_contents; i++) {
                const struct kiln_dockerfile_source_content *sc = &cp->contents[i];
                struct kiln_llb_op *mop;
                (void) kiln_buf_printf(&msg, " <<%s", sc->path);
                struct node *mn = new_file_node(c, d, NULL, &mop);
                struct kiln_llb_file_action *ma =
                        kiln_llb_file_add_action(mop, KILN_LLB_FILE_MKFILE);
                ma->mkfile.path = llb_normalize_path("/", sc->path, false);
                ma->mkfile.mode = 0644;
                ma->mkfile.len = strlen(sc->data);
                ma->mkfile.data =
                        ma->mkfile.len ? (uint8_t *) kiln_xstrndup(sc->data, ma->mkfile.len) : NULL;
                op_set_name(mop, "[internal] preparing inline document");
                struct kiln_llb_file_action *a = kiln_llb_file_add_action(fop, KILN_LLB_FILE_COPY);
                a->copy.src = node_ref(mn);
                a->copy.src_path = llb_normalize_path("/", sc->path, false);
                a->copy.dest = llb_normalize_path(d->state.dir, dest, true);
                copy_common(a, cp, &chmod, has_chmod);
        }
        (void) kiln_buf_printf(&msg, " %s", cp->dest);

        if (fop->file.n_actions == 0) {
                kiln_buf_release(&msg);
                return err_at(c, err, -EINVAL, cmd->start_line,
                              "%s requires at least two arguments", is_add ? "ADD" : "COPY");
        }
        fop->meta.ignore_cache = d->ignore_cache;
        llb_platform_from(&fop->platform, platform);
        if (cp->link && !has_chmod) {
                /* COPY --link: the copy on scratch, merged onto the stage */
                _cleanup_free_ char *pg_id = kiln_xasprintf("link-%zu-%u", d->index, d->cmd_index);
                _cleanup_free_ char *link = kiln_xasprintf("LINK %s", name);
                d->cmd_index--;
                _cleanup_free_ char *pg = prefix_command(c, d, name, platform, &d->state.env);
                fop->file.base = node_ref(NULL);
                op_set_name(fop, pg);
                fop->meta.progress_group_id = kiln_xstrdup(pg_id);
                fop->meta.progress_group_name = kiln_xstrdup(pg);
                fop->meta.progress_group_weak = true;
                struct node *copied = conv_add_node(c, TAKE_PTR(fop));
                if (!d->state.out)
                        d->state.out = copied;
                else {
                        struct kiln_llb_op *mop = kiln_llb_op_new(KILN_LLB_OP_MERGE);
                        d->cmd_index--;
                        _cleanup_free_ char *ln =
                                prefix_command(c, d, link, platform, &d->state.env);
                        kiln_llb_merge_add_input(mop, node_ref(d->state.out));
                        kiln_llb_merge_add_input(mop, node_ref(copied));
                        op_set_name(mop, ln);
                        mop->meta.ignore_cache = d->ignore_cache;
                        mop->meta.progress_group_id = kiln_xstrdup(pg_id);
                        mop->meta.progress_group_name = kiln_xstrdup(pg);
                        llb_platform_from(&mop->platform, &c->target_platform);
                        d->state.out = conv_add_node(c, mop);
                }
        } else {
                fop->file.base = node_ref(d->state.out);
                op_set_name(fop, pg_name);
                d->state.out = conv_add_node(c, TAKE_PTR(fop));
        }
        commit_history(c, d, msg.data, true, true);
        kiln_buf_release(&msg);
        return 0;
}

/* ---- the dispatcher ---- */

static int dispatch_one(struct conv *c, struct dstate *d, struct command *command,
                        struct kiln_error **err);

static int dispatch(struct conv *c, struct dstate *d, struct command *command,
                    struct kiln_error **err)
{
        struct kiln_dockerfile_cmd *cmd = command->cmd;
        int r;

        d->cmd_is_onbuild = command->is_onbuild;
        lint_scope_begin(c, cmd->comments, cmd->n_comments);
        c->cur_start_line = cmd->start_line;
        c->cur_end_line = cmd->end_line;
        r = dispatch_one(c, d, command, err);
        c->cur_start_line = c->cur_end_line = 0;
        lint_scope_end(c);
        return r;
}

static int dispatch_one(struct conv *c, struct dstate *d, struct command *command,
                        struct kiln_error **err)
{
        struct kiln_dockerfile_cmd *cmd = command->cmd;
        struct expander x = { .c = c, .d = d, .cmd = cmd, .lex = &c->lex };
        int r;

        if (cmd->type != KILN_DOCKERFILE_CMD_ARG && kiln_dockerfile_cmd_expandable(cmd->type)) {
                r = kiln_dockerfile_cmd_expand(cmd, c->file, expander_fn, &x, err);
                if (r < 0)
                        return wrap_at(c, err, r, cmd->start_line);
        }
        if (cmd->type == KILN_DOCKERFILE_CMD_COPY || cmd->type == KILN_DOCKERFILE_CMD_ADD) {
                struct kiln_shell_lex raw = { .escape = '\\', .skip_process_quotes = true };
                struct expander xr = { .c = c, .d = d, .cmd = cmd, .lex = &raw };
                r = kiln_dockerfile_cmd_expand_raw(cmd, c->file, expander_fn, &xr, err);
                if (r < 0)
                        return wrap_at(c, err, r, cmd->start_line);
        }

        switch (cmd->type) {
        case KILN_DOCKERFILE_CMD_MAINTAINER: {
                set_str(&d->image.author, cmd->word);
                _cleanup_free_ char *msg = kiln_xasprintf("MAINTAINER %s", cmd->word);
                commit_history(c, d, msg, false, false);
                return 0;
        }
        case KILN_DOCKERFILE_CMD_ENV:
                return dispatch_env(c, d, cmd, err);
        case KILN_DOCKERFILE_CMD_RUN:
                return dispatch_run(c, d, cmd, command, err);
        case KILN_DOCKERFILE_CMD_WORKDIR:
                return dispatch_workdir(c, d, cmd->word, true, cmd, err);
        case KILN_DOCKERFILE_CMD_ADD:
                r = dispatch_copy(c, d, cmd, c->context, err);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < cmd->copy.n_sources; i++) {
                        const char *s = cmd->copy.sources[i];
                        if (!startswith(s, "http://") && !startswith(s, "https://")) {
                                _cleanup_free_ char *p = path_join("/", s);
                                strv_push(&d->ctx_paths, p);
                        }
                }
                return 0;
        case KILN_DOCKERFILE_CMD_LABEL: {
                struct kiln_buf msg = KILN_BUF_INIT(TEXT_MAX);
                (void) kiln_buf_puts(&msg, "LABEL");
                d->image.labels_set = true;
                for (size_t i = 0; i < cmd->kv.n_kvs; i++) {
                        const struct kiln_dockerfile_kv *kv = &cmd->kv.kvs[i];
                        if (kv->no_delim)
                                lint_run(c, &RULE_LEGACY_KEY_VALUE, cmd->start_line, cmd->end_line,
                                         "\"%s key=value\" should be used instead of legacy \"%s "
                                         "key value\" format",
                                         cmd->name, cmd->name);
                        env_set(&d->image.labels, kv->key, kv->value);
                        (void) kiln_buf_printf(&msg, " %s=%s", kv->key, kv->value);
                }
                commit_history(c, d, msg.data, false, false);
                kiln_buf_release(&msg);
                return check_env_size(c, d, cmd->start_line, err);
        }
        case KILN_DOCKERFILE_CMD_ONBUILD:
                strv_push(&d->image.onbuild, cmd->word);
                return 0;
        case KILN_DOCKERFILE_CMD_CMD:
        case KILN_DOCKERFILE_CMD_ENTRYPOINT:
                return dispatch_cmdline(c, d, cmd);
        case KILN_DOCKERFILE_CMD_HEALTHCHECK:
                return dispatch_healthcheck(c, d, cmd);
        case KILN_DOCKERFILE_CMD_EXPOSE:
                return dispatch_expose(c, d, cmd, err);
        case KILN_DOCKERFILE_CMD_USER:
                return dispatch_user(c, d, cmd->word, true);
        case KILN_DOCKERFILE_CMD_VOLUME: {
                for (size_t i = 0; i < cmd->list.n_items; i++) {
                        if (str_empty(cmd->list.items[i]))
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "VOLUME specified can not be an empty string");
                        bag_add(&d->image.volumes, &d->image.volumes_mark, cmd->list.items[i]);
                }
                _cleanup_free_ char *l = go_list(cmd->list.items, cmd->list.n_items);
                _cleanup_free_ char *msg = kiln_xasprintf("VOLUME %s", l);
                commit_history(c, d, msg, false, false);
                return 0;
        }
        case KILN_DOCKERFILE_CMD_STOPSIGNAL: {
                if (!signal_valid(cmd->word))
                        return err_at(c, err, -EINVAL, cmd->start_line, "invalid signal: %s",
                                      cmd->word);
                set_str(&d->image.stop_signal, cmd->word);
                _cleanup_free_ char *msg = kiln_xasprintf("STOPSIGNAL %s", cmd->word);
                commit_history(c, d, msg, false, false);
                return 0;
        }
        case KILN_DOCKERFILE_CMD_SHELL: {
                strv_release(&d->image.shell);
                for (size_t i = 0; i < cmd->list.n_items; i++)
                        strv_push(&d->image.shell, cmd->list.items[i]);
                _cleanup_free_ char *l = go_list(cmd->list.items, cmd->list.n_items);
                _cleanup_free_ char *msg = kiln_xasprintf("SHELL %s", l);
                commit_history(c, d, msg, false, false);
                return 0;
        }
        case KILN_DOCKERFILE_CMD_ARG:
                return dispatch_arg(c, d, cmd, err);
        case KILN_DOCKERFILE_CMD_COPY: {
                struct node *src = c->context;
                struct dstate *from = command->n_sources > 0 ? command->sources[0] : NULL;
                if (from) {
                        if (!from->dispatched)
                                return err_at(c, err, -EINVAL, cmd->start_line,
                                              "cannot copy from stage \"%s\", it needs to be "
                                              "defined before current stage \"%s\"",
                                              cmd->copy.from, d->stage_name);
                        src = from->state.out;
                }
                r = dispatch_copy(c, d, cmd, src, err);
                if (r < 0)
                        return r;
                for (size_t i = 0; !from && i < cmd->copy.n_sources; i++) {
                        _cleanup_free_ char *p = path_join("/", cmd->copy.sources[i]);
                        strv_push(&d->ctx_paths, p);
                }
                return 0;
        }
        }
        return 0;
}

/* dispatchStages */
static int dispatch_stages(struct conv *c, struct dstate *const *reach, size_t n_reach,
                           struct strv *ctx_paths, struct kiln_error **err)
{
        for (size_t i = 0; i < c->n_states; i++) {
                struct dstate *d = c->states[i];
                int r;
                if (!in_list(reach, n_reach, d) || d->dispatched)
                        continue;
                state_init(d);
                d->dispatched = true;
                if (!d->has_platform)
                        dstate_set_platform(d, &c->target_platform);
                r = check_env_size(c, d, d->start_line, err);
                if (r < 0)
                        return r;
                if (!image_env_has(&d->image, "PATH") && !streq_ptr(d->platform.os, "windows"))
                        strv_push(&d->image.env, "PATH=" DEFAULT_PATH_ENV);
                for (size_t j = 0; j < d->image.env.n; j++) {
                        _cleanup_free_ char *k = NULL, *v = NULL;
                        split_kv(d->image.env.v[j], &k, &v);
                        env_set(&d->state.env, k, v);
                }
                if (c->hostname)
                        set_str(&d->state.hostname, c->hostname);
                if (!str_empty(d->image.working_dir)) {
                        _cleanup_free_ char *wd = kiln_xstrdup(d->image.working_dir);
                        r = dispatch_workdir(c, d, wd, false, NULL, err);
                        if (r < 0)
                                return r;
                }
                if (!str_empty(d->image.user)) {
                        _cleanup_free_ char *u = kiln_xstrdup(d->image.user);
                        dispatch_user(c, d, u, false);
                }
                d->state.network = c->opt->network;
                for (size_t j = 0; j < d->n_commands; j++) {
                        r = dispatch(c, d, &d->commands[j], err);
                        if (r < 0)
                                return wrap_at(c, err, r, d->commands[j].cmd->start_line);
                }
                for (size_t j = 0; j < d->ctx_paths.n; j++)
                        strv_push(ctx_paths, d->ctx_paths.v[j]);
                strv_release(&d->ctx_paths);
                set_compact(ctx_paths);
        }
        return 0;
}

/* ------------------------------------------------------------------------ */
/* emission */

static void mark_needed(struct node *n)
{
        /* iterative: graphs can be deep */
        size_t cap = 16, len = 0;
        struct node **stack = kiln_xcalloc(cap, sizeof(struct node *));
        stack[len++] = n;
        while (len > 0) {
                struct node *x = stack[--len];
                if (!x || x->needed)
                        continue;
                x->needed = true;
                const struct kiln_llb_op *op = x->op;
#define PUSH(ref)                                                                              \
        do {                                                                                   \
                if ((ref).op) {                                                                \
                        if (len == cap) {                                                      \
                                cap *= 2;                                                      \
                                stack = kiln_xreallocarray(stack, cap, sizeof(struct node *)); \
                        }                                                                      \
                        stack[len++] = NODE_OF((ref).op);                                      \
                }                                                                              \
        } while (0)
                switch (op->type) {
                case KILN_LLB_OP_EXEC:
                        for (size_t i = 0; i < op->exec.n_mounts; i++)
                                PUSH(op->exec.mounts[i].input);
                        break;
                case KILN_LLB_OP_FILE:
                        PUSH(op->file.base);
                        for (size_t i = 0; i < op->file.n_actions; i++)
                                if (op->file.actions[i].type == KILN_LLB_FILE_COPY)
                                        PUSH(op->file.actions[i].copy.src);
                        break;
                case KILN_LLB_OP_MERGE:
                        for (size_t i = 0; i < op->merge.n_inputs; i++)
                                PUSH(op->merge.inputs[i]);
                        break;
                case KILN_LLB_OP_DIFF:
                        PUSH(op->diff.lower);
                        PUSH(op->diff.upper);
                        break;
                case KILN_LLB_OP_SOURCE:
                        break;
                }
#undef PUSH
        }
        free(stack);
}

static void fix_ref(struct kiln_llb_ref *r)
{
        if (r->op)
                r->op = NODE_OF(r->op)->final;
}

static void fix_refs(struct kiln_llb_op *op)
{
        switch (op->type) {
        case KILN_LLB_OP_EXEC:
                for (size_t i = 0; i < op->exec.n_mounts; i++)
                        fix_ref(&op->exec.mounts[i].input);
                break;
        case KILN_LLB_OP_FILE:
                fix_ref(&op->file.base);
                for (size_t i = 0; i < op->file.n_actions; i++)
                        if (op->file.actions[i].type == KILN_LLB_FILE_COPY)
                                fix_ref(&op->file.actions[i].copy.src);
                break;
        case KILN_LLB_OP_MERGE:
                for (size_t i = 0; i < op->merge.n_inputs; i++)
                        fix_ref(&op->merge.inputs[i]);
                break;
        case KILN_LLB_OP_DIFF:
                fix_ref(&op->diff.lower);
                fix_ref(&op->diff.upper);
                break;
        case KILN_LLB_OP_SOURCE:
                break;
        }
}

static int emit(struct conv *c, struct node *terminal, struct kiln_llb_def **ret_def,
                struct strv *steps, struct kiln_dockerfile_source_location **locs, size_t *n_locs,
                struct kiln_error **err)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        size_t n_needed = 0;
        int r;

        if (terminal)
                mark_needed(terminal);
        for (size_t i = 0; i < c->n_nodes; i++)
                n_needed += c->nodes[i]->needed;
        if (n_needed > KILN_LIMIT_DOCKERFILE_OPS)
                return kiln_error_set(err, -E2BIG, "the build graph has more than %d ops",
                                      KILN_LIMIT_DOCKERFILE_OPS);
        for (size_t i = 0; i < c->n_nodes; i++) {
                struct node *n = c->nodes[i];
                if (!n->needed)
                        continue;
                fix_refs(n->op);
                size_t before = kiln_llb_def_n_ops(def);
                r = kiln_llb_def_add(def, TAKE_PTR(n->op), &n->final, err);
                if (r < 0)
                        return kiln_error_wrap(err, "internal error: invalid op");
                /* an op equal to one already there is merged into it */
                const char *name =
                        kiln_llb_strmap_get(&n->final->meta.description, "llb.customname");
                if (name && kiln_llb_def_n_ops(def) > before)
                        strv_push(steps, name);
                if (n->start_line > 0 && kiln_llb_def_n_ops(def) > before) {
                        struct kiln_dockerfile_source_location *l;
                        *locs = kiln_xreallocarray(*locs, *n_locs + 1, sizeof(**locs));
                        l = &(*locs)[(*n_locs)++];
                        memcpy(l->digest, n->final->digest, sizeof(l->digest));
                        l->start_line = n->start_line;
                        l->end_line = n->end_line >= n->start_line ? n->end_line : n->start_line;
                }
        }
        if (terminal) {
                r = kiln_llb_def_set_output(def, (struct kiln_llb_ref){ terminal->final, 0 }, err);
                if (r < 0)
                        return r;
        }
        *ret_def = TAKE_PTR(def);
        return 0;
}

/* ------------------------------------------------------------------------ */

static int lint_from_defaults(struct conv *c)
{
        struct envlist args = { 0 };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        env_copy(&args, &c->global_args);
        if (meta_args(c, &args, false, &e) < 0) {
                env_release(&args);
                return 0;
        }
        for (size_t i = 0; i < c->ins->n_stages; i++) {
                const struct kiln_dockerfile_stage *st = &c->ins->stages[i];
                struct kiln_shell_result res = { 0 };
                _cleanup_free_ char *norm = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *ref_err = NULL;
                if (expand_word(c, &c->lex, st->base_name, &args, &res, &e) < 0)
                        break;
                if (normalize_ref(res.word, &norm, &ref_err) < 0)
                        lint_run(c, &RULE_INVALID_DEFAULT_ARG_IN_FROM, st->start_line, st->end_line,
                                 "Default value for ARG %s results in empty or invalid base image "
                                 "name",
                                 st->base_name);
                kiln_shell_result_release(&res);
        }
        env_release(&args);
        return 0;
}

static struct node *make_context(struct conv *c)
{
        struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_LOCAL);
        const char *name = c->opt->context_name ?: DEFAULT_CONTEXT;
        op->source.local.name = kiln_xstrdup(name);
        op->source.local.session_id = xstrdup0(c->opt->session_id);
        for (size_t i = 0; i < c->opt->n_dockerignore; i++)
                kiln_llb_strv_push(&op->source.local.exclude_patterns, c->opt->dockerignore[i]);
        op->source.local.shared_key_hint = kiln_xstrdup(name);
        op_set_name(op, "[internal] load build context");
        return conv_add_node(c, op);
}

int kiln_dockerfile_convert(const char *data, size_t size,
                            const struct kiln_dockerfile_convert_options *opt,
                            struct kiln_dockerfile_convert_result **ret, struct kiln_error **err)
{
        static const struct kiln_dockerfile_convert_options defaults = { 0 };
        _cleanup_(conv_release) struct conv c = { 0 };
        _cleanup_(strv_release) struct strv ctx_paths = { 0 }, steps = { 0 };
        _cleanup_free_ struct dstate **reach = NULL;
        struct kiln_llb_def *def = NULL;
        struct dstate *target = NULL;
        size_t n_reach = 0;
        char *check = NULL;
        int r;

        *ret = NULL;
        r = conv_setup(&c, opt ?: &defaults, err);
        if (r < 0)
                return r;
        if (size == 0)
                return kiln_error_set(err, -EINVAL, "the Dockerfile cannot be empty");

        r = kiln_dockerfile_parse_full(data, size, c.file, &c.parsed, err);
        if (r < 0)
                return r;
        c.lex = (struct kiln_shell_lex){ .escape = c.parsed->escape ?: '\\' };

        /* the linter: BUILDKIT_DOCKERFILE_CHECK wins over "# check=" */
        if (env_get(&c.build_args, "BUILDKIT_DOCKERFILE_CHECK"))
                check = kiln_xstrdup(env_get(&c.build_args, "BUILDKIT_DOCKERFILE_CHECK"));
        else
                for (size_t i = 0; i < c.parsed->n_directives; i++)
                        if (streq(c.parsed->directives[i].name, "check"))
                                set_str(&check, c.parsed->directives[i].value);
        if (check) {
                r = lint_options(&c, check, &c.lint_skip_all, &c.lint_skip, err);
                free(check);
                if (r < 0)
                        return kiln_error_wrap(err, "failed to parse check options");
        }
        for (size_t i = 0; i < c.parsed->n_warnings; i++) {
                const struct kiln_dockerfile_warning *w = &c.parsed->warnings[i];
                lint_run(&c, &RULE_NO_EMPTY_CONTINUATION, w->line, w->line,
                         "Empty continuation line");
        }

        r = kiln_dockerfile_instructions_parse(c.parsed->root, c.file, &c.ins, err);
        if (r < 0)
                return r;
        if (c.ins->n_stages == 0)
                return kiln_error_set(err, -EINVAL, "dockerfile contains no stages to build");
        lint_prepass(&c);

        {
                const char *tn = c.opt->target;
                if (str_empty(tn))
                        tn = c.ins->stages[c.ins->n_stages - 1].name;
                default_args(&c, tn);
        }
        lint_from_defaults(&c);
        r = meta_args(&c, &c.global_args, true, err);
        if (r < 0)
                return r;

        /* SOURCE_DATE_EPOCH */
        {
                const char *v = env_get(&c.build_args, "SOURCE_DATE_EPOCH");
                if (!v && !str_empty(env_get(&c.global_args, "SOURCE_DATE_EPOCH")))
                        v = env_get(&c.global_args, "SOURCE_DATE_EPOCH");
                if (!str_empty(v)) {
                        int64_t t;
                        /* the LLB timestamps are nanoseconds in an int64 */
                        if (!parse_int64(v, &t))
                                return kiln_error_set(err, -EINVAL, "invalid SOURCE_DATE_EPOCH: %s",
                                                      v);
                        /* Go writes times of the years 0 to 9999 only */
                        if (t < -62167219200LL || t > 253402300799LL)
                                return kiln_error_set(
                                        err, -EINVAL,
                                        "SOURCE_DATE_EPOCH %s: year outside of range [0,9999]", v);
                        c.has_epoch = true;
                        c.epoch = t;
                        c.epoch_text = format_time(t);
                        _cleanup_free_ char *s = kiln_xasprintf("%" PRId64, t);
                        if (env_get(&c.build_args, "SOURCE_DATE_EPOCH"))
                                env_set(&c.build_args, "SOURCE_DATE_EPOCH", s);
                        if (env_get(&c.global_args, "SOURCE_DATE_EPOCH"))
                                env_set(&c.global_args, "SOURCE_DATE_EPOCH", s);
                }
        }

        c.context = make_context(&c);

        r = build_states(&c, err);
        if (r < 0)
                return r;
        r = resolve_target(&c, &target, err);
        if (r < 0)
                return r;
        r = build_graph(&c, err);
        if (r < 0)
                return r;
        r = resolve_stages(&c, target, &reach, &n_reach, err);
        if (r < 0)
                return r;
        r = dispatch_stages(&c, reach, n_reach, &ctx_paths, err);
        if (r < 0)
                return r;

        /* finalizeResultImage */
        if (c.opt->n_labels > 0)
                target->image.labels_set = true;
        for (size_t i = 0; i < c.opt->n_labels; i++)
                if (c.opt->labels[i].key)
                        env_set(&target->image.labels, c.opt->labels[i].key,
                                c.opt->labels[i].value ?: "");
        if (c.lint_error && c.lint_called.n > 0) {
                _cleanup_(strv_release) struct strv uniq = { 0 };
                for (size_t i = 0; i < c.lint_called.n; i++)
                        strv_push(&uniq, c.lint_called.v[i]);
                set_compact(&uniq);
                _cleanup_free_ char *j = strv_join(uniq.v, uniq.n, ", ");
                return kiln_error_set(err, -EINVAL, "lint violation found for rules: %s", j);
        }
        /* the context's follow paths: what the stages copied from it */
        {
                bool all = false;
                _cleanup_(strv_release) struct strv paths = { 0 };
                for (size_t i = 0; i < ctx_paths.n; i++) {
                        if (streq(ctx_paths.v[i], "/")) {
                                all = true;
                                break;
                        }
                        strv_push_take(&paths, path_join(".", ctx_paths.v[i]));
                }
                if (!all) {
                        set_sort(&paths);
                        for (size_t i = 0; i < paths.n; i++)
                                kiln_llb_strv_push(&c.context->op->source.local.follow_paths,
                                                   paths.v[i]);
                }
        }
        if (!c.implicit_target) {
                const struct kiln_content_platform *tp = &c.target_platform;
                bool same = streq_ptr(tp->os, target->image.os) &&
                            streq_ptr(tp->architecture, target->image.architecture);
                set_str(&target->image.os, tp->os);
                set_str(&target->image.architecture, tp->architecture);
                if (!str_empty(tp->variant) || !same)
                        set_str(&target->image.variant, tp->variant);
                if (!str_empty(tp->os_version) || !same)
                        set_str(&target->image.os_version, tp->os_version);
                if (tp->os_features) {
                        strv_release(&target->image.os_features);
                        for (char **f = tp->os_features; *f; f++)
                                strv_push(&target->image.os_features, *f);
                }
        }
        {
                struct kiln_content_platform p = {
                        .os = target->image.os,
                        .architecture = target->image.architecture,
                        .variant = target->image.variant,
                        .os_version = target->image.os_version,
                };
                struct kiln_content_platform n;
                kiln_content_platform_copy(&n, &p);
                kiln_content_platform_normalize(&n);
                set_str(&target->image.os, n.os);
                set_str(&target->image.architecture, n.architecture);
                set_str(&target->image.variant, n.variant);
                set_str(&target->image.os_version, n.os_version);
                kiln_content_platform_release(&n);
        }
        freep_str(&target->image.created);

        struct kiln_dockerfile_source_location *locs = NULL;
        size_t n_locs = 0;
        r = emit(&c, target->state.out, &def, &steps, &locs, &n_locs, err);
        if (r < 0) {
                free(locs);
                return r;
        }

        struct kiln_dockerfile_convert_result *res = kiln_xcalloc(1, sizeof(*res));
        res->def = def;
        res->locations = locs;
        res->n_locations = n_locs;
        {
                _cleanup_(json_decrefp) json_t *j = image_to_json(&target->image);
                struct kiln_buf b = KILN_BUF_INIT(KILN_CONTENT_LIMIT_CONFIG * 4ull);
                r = kiln_content_json_dump(j, 0, &b);
                if (r < 0) {
                        kiln_buf_release(&b);
                        kiln_dockerfile_convert_result_free(res);
                        return kiln_error_set(err, r, "image config too large");
                }
                res->config_len = b.len;
                res->config = kiln_buf_steal(&b);
        }
        for (size_t i = 0; i < c.internal_steps.n; i++)
                strv_push(&steps, c.internal_steps.v[i]);
        /* internal metadata loads first, then the graph's steps */
        {
                struct strv ordered = { 0 };
                for (size_t i = 0; i < c.internal_steps.n; i++)
                        strv_push(&ordered, c.internal_steps.v[i]);
                for (size_t i = 0; i + c.internal_steps.n < steps.n; i++)
                        strv_push(&ordered, steps.v[i]);
                res->steps = ordered.v;
                res->n_steps = ordered.n;
        }
        res->warnings = TAKE_PTR(c.warnings);
        res->n_warnings = c.n_warnings;
        c.n_warnings = 0;
        res->has_epoch = c.has_epoch;
        res->epoch = c.epoch;
        *ret = res;
        return 0;
}

struct kiln_dockerfile_convert_result *
kiln_dockerfile_convert_result_free(struct kiln_dockerfile_convert_result *r)
{
        if (!r)
                return NULL;
        kiln_llb_def_free(r->def);
        free(r->config);
        for (size_t i = 0; i < r->n_steps; i++)
                free(r->steps[i]);
        free(r->steps);
        for (size_t i = 0; i < r->n_warnings; i++) {
                free(r->warnings[i].rule);
                free(r->warnings[i].description);
                free(r->warnings[i].url);
                free(r->warnings[i].message);
        }
        free(r->warnings);
        free(r->locations);
        free(r);
        return NULL;
}

const struct kiln_dockerfile_source_location *
kiln_dockerfile_convert_result_location(const struct kiln_dockerfile_convert_result *r,
                                        const char *digest)
{
        for (size_t i = 0; r && digest && i < r->n_locations; i++)
                if (streq(r->locations[i].digest, digest))
                        return &r->locations[i];
        return NULL;
}

void kiln_dockerfile_resolved_image_release(struct kiln_dockerfile_resolved_image *r)
{
        if (!r)
                return;
        free(r->ref);
        free(r->digest);
        free(r->config);
        *r = (struct kiln_dockerfile_resolved_image){ 0 };
}
