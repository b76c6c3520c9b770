/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dockerfile-graph: shows what kiln's Dockerfile frontend makes of a
 * Dockerfile, without a registry.
 *
 *   dockerfile-graph [--build-arg K=V]... [--label K=V]... [--target T]
 *                    [--platform P] [--build-platform P] [--no-cache]
 *                    [--dockerignore PATTERN]... [--image REF=CONFIG.json]...
 *                    FILE
 *
 * Prints one JSON object:
 *   {"graph": <LLB definition>, "config": <image config>, "steps": [...],
 *    "warnings": [{"rule", "message", "line"}...]}
 *
 * Base images: --image REF=CONFIG.json hands out that config for REF
 * (written as in a FROM line: "alpine" is docker.io/library/alpine:latest).
 * Any other image resolves to a config holding only its os, architecture
 * (and variant) for the requested platform plus one placeholder layer, so
 * that the stage is not taken for an empty image. The digest reported for
 * an image is the sha256 of its config bytes (a stand-in for the manifest
 * digest a registry would give). Exit status 1 with the error on stderr
 * when the conversion fails, 2 for usage errors.
 */

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/macro.h"
#include "content/content.h"
#include "dockerfile/convert.h"

#define MAX_FILE (16u << 20)

struct image_arg {
        char *ref; /* normalised */
        char *config;
        size_t len;
};

struct images {
        struct image_arg *v;
        size_t n;
};

static int read_file(const char *path, char **ret, size_t *len)
{
        _cleanup_fclose_ FILE *f = fopen(path, "rb");
        char *buf = NULL;
        size_t n = 0, cap = 0;
        if (!f)
                return -errno;
        for (;;) {
                if (n == cap) {
                        cap = cap ? cap * 2 : 4096;
                        if (cap > MAX_FILE + 1) {
                                free(buf);
                                return -E2BIG;
                        }
                        buf = kiln_xrealloc(buf, cap + 1);
                }
                size_t r = fread(buf + n, 1, cap - n, f);
                n += r;
                if (r == 0)
                        break;
        }
        if (ferror(f)) {
                free(buf);
                return -EIO;
        }
        if (!buf)
                buf = kiln_xmalloc(1);
        buf[n] = 0;
        *ret = buf;
        *len = n;
        return 0;
}

/* The FROM-line spelling of a reference, normalised the way the converter
 * asks for it (a simplified ParseNormalizedNamed + TagNameOnly). */
static char *normalize(const char *ref)
{
        const char *slash = strchr(ref, '/');
        char *full;
        if (!slash)
                full = kiln_xasprintf("docker.io/library/%s", ref);
        else {
                size_t n = (size_t) (slash - ref);
                bool host = memchr(ref, '.', n) || memchr(ref, ':', n) ||
                            (n == 9 && !strncmp(ref, "localhost", 9));
                full = host ? kiln_xstrdup(ref) : kiln_xasprintf("docker.io/%s", ref);
        }
        const char *last = strrchr(full, '/');
        if (!strchr(last, ':') && !strchr(full, '@')) {
                char *t = kiln_xasprintf("%s:latest", full);
                free(full);
                full = t;
        }
        return full;
}

static int resolve(void *userdata, const char *ref, const struct kiln_content_platform *platform,
                   struct kiln_dockerfile_resolved_image *ret, struct kiln_error **err)
{
        struct images *images = userdata;
        char digest[KILN_CONTENT_DIGEST_SIZE];
        (void) err;
        for (size_t i = 0; i < images->n; i++)
                if (streq(images->v[i].ref, ref)) {
                        ret->config = kiln_xmalloc(images->v[i].len + 1);
                        memcpy(ret->config, images->v[i].config, images->v[i].len);
                        ret->config[images->v[i].len] = 0;
                        ret->config_len = images->v[i].len;
                        kiln_content_digest_of(ret->config, ret->config_len, digest);
                        ret->digest = kiln_xstrdup(digest);
                        return 0;
                }
        char layer[KILN_CONTENT_DIGEST_SIZE];
        kiln_content_digest_of(ref, strlen(ref), layer);
        json_t *cfg = json_object();
        json_object_set_new(cfg, "architecture", json_string(platform->architecture ?: ""));
        json_object_set_new(cfg, "os", json_string(platform->os ?: ""));
        if (platform->variant && *platform->variant)
                json_object_set_new(cfg, "variant", json_string(platform->variant));
        json_t *rootfs = json_object();
        json_object_set_new(rootfs, "type", json_string("layers"));
        json_t *ids = json_array();
        json_array_append_new(ids, json_string(layer));
        json_object_set_new(rootfs, "diff_ids", ids);
        json_object_set_new(cfg, "rootfs", rootfs);
        ret->config = json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(cfg);
        if (!ret->config)
                return kiln_error_set(err, -ENOMEM, "cannot write config");
        ret->config_len = strlen(ret->config);
        kiln_content_digest_of(ret->config, ret->config_len, digest);
        ret->digest = kiln_xstrdup(digest);
        return 0;
}

static void usage(void)
{
        fprintf(stderr,
                "usage: dockerfile-graph [--build-arg K=V]... [--label K=V]... [--target T]\n"
                "                        [--platform P] [--build-platform P] [--no-cache]\n"
                "                        [--dockerignore PATTERN]... [--image REF=CONFIG.json]...\n"
                "                        FILE\n");
}

static bool split_pair(const char *s, struct kiln_dockerfile_pair *p)
{
        const char *eq = strchr(s, '=');
        if (!eq)
                return false;
        p->key = kiln_xstrndup(s, (size_t) (eq - s));
        p->value = eq + 1;
        return true;
}

int main(int argc, char **argv)
{
        struct kiln_dockerfile_convert_options opt = { .resolve = resolve };
        struct kiln_dockerfile_pair *args = NULL, *labels = NULL;
        size_t n_args = 0, n_labels = 0, n_ignore = 0;
        const char **ignore = NULL;
        struct images images = { 0 };
        const char *file = NULL;
        int status = 1;

        opt.userdata = &images;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (streq(a, "--no-cache")) {
                        opt.no_cache = true;
                        continue;
                }
                if (a[0] != '-' || streq(a, "-")) {
                        if (file) {
                                usage();
                                return 2;
                        }
                        file = a;
                        continue;
                }
                if (!v) {
                        usage();
                        return 2;
                }
                i++;
                if (streq(a, "--build-arg")) {
                        args = kiln_xreallocarray(args, n_args + 1, sizeof(*args));
                        if (!split_pair(v, &args[n_args])) {
                                /* "--build-arg K" without a value is ignored, as
                                 * buildx takes it from an unset environment */
                                continue;
                        }
                        n_args++;
                } else if (streq(a, "--label")) {
                        labels = kiln_xreallocarray(labels, n_labels + 1, sizeof(*labels));
                        if (!split_pair(v, &labels[n_labels])) {
                                usage();
                                return 2;
                        }
                        n_labels++;
                } else if (streq(a, "--target"))
                        opt.target = v;
                else if (streq(a, "--platform"))
                        opt.target_platform = v;
                else if (streq(a, "--build-platform"))
                        opt.build_platform = v;
                else if (streq(a, "--dockerignore")) {
                        ignore = kiln_xreallocarray(ignore, n_ignore + 1, sizeof(*ignore));
                        ignore[n_ignore++] = v;
                } else if (streq(a, "--image")) {
                        const char *eq = strchr(v, '=');
                        if (!eq) {
                                usage();
                                return 2;
                        }
                        _cleanup_free_ char *ref = kiln_xstrndup(v, (size_t) (eq - v));
                        struct image_arg im = { .ref = normalize(ref) };
                        int r = read_file(eq + 1, &im.config, &im.len);
                        if (r < 0) {
                                fprintf(stderr, "dockerfile-graph: read '%s': %s\n", eq + 1,
                                        strerror(-r));
                                return 1;
                        }
                        images.v = kiln_xreallocarray(images.v, images.n + 1, sizeof(im));
                        images.v[images.n++] = im;
                } else {
                        usage();
                        return 2;
                }
        }
        if (!file) {
                usage();
                return 2;
        }
        opt.build_args = args;
        opt.n_build_args = n_args;
        opt.labels = labels;
        opt.n_labels = n_labels;
        opt.dockerignore = ignore;
        opt.n_dockerignore = n_ignore;

        /* Declared before the first goto, so every cleanup runs on NULL. */
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_dockerfile_convert_result_freep) struct kiln_dockerfile_convert_result *res =
                NULL;
        _cleanup_free_ char *data = NULL, *graph = NULL;
        size_t len = 0;
        int r = read_file(file, &data, &len);
        if (r < 0) {
                fprintf(stderr, "dockerfile-graph: read '%s': %s\n", file, strerror(-r));
                goto out;
        }

        r = kiln_dockerfile_convert(data, len, &opt, &res, &err);
        if (r < 0) {
                fprintf(stderr, "dockerfile-graph: %s\n", kiln_error_message(err));
                goto out;
        }

        (void) kiln_llb_def_to_json(res->def, &graph);
        json_error_t jerr;
        json_t *out = json_object();
        json_object_set_new(out, "graph", json_loads(graph, 0, &jerr));
        json_object_set_new(out, "config", json_loadb(res->config, res->config_len, 0, &jerr));
        json_t *steps = json_array();
        for (size_t i = 0; i < res->n_steps; i++)
                json_array_append_new(steps, json_string(res->steps[i]));
        json_object_set_new(out, "steps", steps);
        json_t *warnings = json_array();
        for (size_t i = 0; i < res->n_warnings; i++) {
                json_t *w = json_object();
                json_object_set_new(w, "rule", json_string(res->warnings[i].rule));
                json_object_set_new(w, "message", json_string(res->warnings[i].message));
                json_object_set_new(w, "line", json_integer(res->warnings[i].start_line));
                json_array_append_new(warnings, w);
        }
        json_object_set_new(out, "warnings", warnings);
        if (json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
            fputc('\n', stdout) == EOF)
                r = -EIO;
        json_decref(out);
        status = r < 0 ? 1 : 0;
out:
        for (size_t i = 0; i < n_args; i++)
                free((char *) args[i].key);
        for (size_t i = 0; i < n_labels; i++)
                free((char *) labels[i].key);
        free(args);
        free(labels);
        free(ignore);
        for (size_t i = 0; i < images.n; i++) {
                free(images.v[i].ref);
                free(images.v[i].config);
        }
        free(images.v);
        return status;
}
