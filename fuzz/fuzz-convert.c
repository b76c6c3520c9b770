/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the Dockerfile converter: any input converts or fails
 * with a located error, and what a conversion produces is whole (the graph
 * survives its JSON form, the image config is JSON, there are steps). The
 * resolver hands out canned image configs chosen by the name asked for:
 * ONBUILD triggers, a rewritten reference, an image with no layers, bad
 * configs and failures. */

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "dockerfile/convert.h"
#include "llb/llb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                 \
        do {                     \
                if (!(x))        \
                        abort(); \
        } while (0)

/* Larger inputs only slow the search down; the converter's own limits are
 * exercised by the unit tests. */
#define FUZZ_MAX_INPUT (64u << 10)

#define LAYER                                                              \
        "\"sha256:"                                                        \
        "1111111111111111111111111111111111111111111111111111111111111111" \
        "\""
#define DIGEST "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static const char config_plain[] =
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
        "\"diff_ids\":[" LAYER "]},\"history\":[{\"created_by\":\"base\"}],\"config\":{\"Env\":"
        "[\"PATH=/usr/bin:/bin\"]}}";
/* Triggers that copy from a stage, run with a relative workdir and user. */
static const char config_onbuild[] =
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
        "\"diff_ids\":[" LAYER "]},\"config\":{\"OnBuild\":[\"RUN echo $A\",\"COPY --from=b /a "
        "/b\",\"ENV X=1\",\"FROM x\"],\"WorkingDir\":\"rel\",\"User\":\"u:g\",\"Env\":[\"A=1\","
        "\"B\"],\"Healthcheck\":{\"Test\":[\"CMD\",\"true\"],\"Interval\":1000000000}}}";
/* No layers: the stage starts from scratch. */
static const char config_empty[] =
        "{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\",\"rootfs\":{\"type\":"
        "\"layers\",\"diff_ids\":[]},\"config\":{\"Shell\":[\"/bin/bash\",\"-c\"]}}";
static const char config_bad[] = "{\"config\":{\"Env\":\"not a list\"}}";

static int resolve(void *userdata, const char *ref, const struct kiln_content_platform *platform,
                   struct kiln_dockerfile_resolved_image *ret, struct kiln_error **err)
{
        const char *cfg = config_plain;

        (void) userdata;
        (void) platform;
        if (strstr(ref, "fail"))
                return kiln_error_set(err, -ENOENT, "pull access denied");
        if (strstr(ref, "noconfig"))
                return 0;
        if (strstr(ref, "onbuild"))
                cfg = config_onbuild;
        else if (strstr(ref, "empty"))
                cfg = config_empty;
        else if (strstr(ref, "bad"))
                cfg = config_bad;
        if (strstr(ref, "mirror"))
                ret->ref =
                        kiln_xstrdup(strstr(ref, "bad") ? "Bad/Ref" : "mirror.example/lib/img:1");
        ret->config = kiln_xstrdup(cfg);
        ret->config_len = strlen(cfg);
        if (!strstr(ref, "nodigest"))
                ret->digest = kiln_xstrdup(DIGEST);
        return 0;
}

static unsigned count_lines(const char *s, size_t n)
{
        unsigned lines = 1;

        for (size_t i = 0; i < n; i++)
                lines += s[i] == '\n';
        return lines;
}

/* A Dockerfile error names the file and its line once, as err->line says. */
static void check_error(const struct kiln_error *err, const char *data, size_t size)
{
        char prefix[64];

        CHECK(err && err->message && err->message[0]);
        if (err->line == 0)
                return;
        CHECK(err->line <= count_lines(data, size));
        snprintf(prefix, sizeof(prefix), "Dockerfile:%u: ", err->line);
        CHECK(startswith(err->message, prefix));
        /* the location once: the rest may quote the input, not start with it */
        CHECK(!startswith(err->message + strlen(prefix), "Dockerfile:"));
        CHECK(!startswith(err->message + strlen(prefix), "dockerfile parse error"));
}

static void check_result(const struct kiln_dockerfile_convert_result *r)
{
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *back = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *j = NULL;
        json_t *cfg;

        /* FROM scratch with only config changes has no step at all */
        CHECK(r->def && (r->n_steps > 0 || !kiln_llb_def_has_output(r->def)));
        for (size_t i = 0; i < r->n_steps; i++)
                CHECK(r->steps[i] && r->steps[i][0]);
        CHECK(kiln_llb_def_to_json(r->def, &j) >= 0);
        CHECK(kiln_llb_def_from_json(j, strlen(j), &back, &err) >= 0);
        CHECK(kiln_llb_def_equal(r->def, back));

        CHECK(r->config && strlen(r->config) == r->config_len);
        cfg = json_loadb(r->config, r->config_len, 0, NULL);
        CHECK(json_is_object(cfg));
        json_decref(cfg);

        for (size_t i = 0; i < r->n_warnings; i++)
                CHECK(r->warnings[i].rule && r->warnings[i].message &&
                      r->warnings[i].end_line >= r->warnings[i].start_line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const struct kiln_dockerfile_pair args[] = {
                { "HTTP_PROXY", "http://proxy.example:3128" },
                { "A", "1" },
                { "BASE", "alpine" },
                { "TAG", "3.20" },
        };
        static const char *const ignore[] = { "*.md",     "build/**", "**/x",
                                              "a/[b-d]?", "!a/keep",  "c/**/d*e" };
        const struct kiln_dockerfile_convert_options opt = {
                .build_args = args,
                .n_build_args = ELEMENTSOF(args),
                .build_platform = "linux/amd64",
                .dockerignore = ignore,
                .n_dockerignore = ELEMENTSOF(ignore),
                .resolve = resolve,
        };
        _cleanup_(kiln_dockerfile_convert_result_freep) struct kiln_dockerfile_convert_result *r =
                NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int q;

        if (size > FUZZ_MAX_INPUT)
                return 0;
        q = kiln_dockerfile_convert((const char *) data, size, &opt, &r, &err);
        if (q < 0) {
                CHECK(!r);
                check_error(err, (const char *) data, size);
                return 0;
        }
        CHECK(r && !err);
        check_result(r);
        return 0;
}
