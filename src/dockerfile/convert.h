/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Dockerfile to build graph, as BuildKit's frontend/dockerfile/dockerfile2llb:
 * turns a Dockerfile into an LLB definition (llb/llb.h) whose output is the
 * target stage's root filesystem, plus the image config of that stage (the
 * JSON BuildKit's frontend hands to the image exporter), the progress names
 * of the steps and the lint warnings BuildKit prints.
 *
 * Pure: no I/O. Base image configs come from a callback the caller supplies
 * (the daemon pulls manifests; tests hand out canned configs). Reentrant:
 * independent conversions may run concurrently when their callbacks allow
 * it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "content/content.h"
#include "llb/llb.h"

/* --build-arg and --label entries given to one conversion. */
#define KILN_LIMIT_DOCKERFILE_OPTION_ITEMS 4096
/* Environment variables, build args or labels of one stage (and in a base
 * image config), and global build args. */
#define KILN_LIMIT_DOCKERFILE_VARS 1000
/* Stages plus the images named by COPY --from and RUN --mount from= (each
 * such reference is resolved on its own, as BuildKit does). */
#define KILN_LIMIT_DOCKERFILE_STATES 16384
/* Rounds of ONBUILD trigger resolution (each round may pull in new stages). */
#define KILN_LIMIT_DOCKERFILE_ONBUILD_ROUNDS 64
/* ONBUILD triggers of one stage (from its base image or base stage). */
#define KILN_LIMIT_DOCKERFILE_ONBUILD_TRIGGERS 1024
/* Ports one EXPOSE may produce (a range like 1-65535 counts each port). */
#define KILN_LIMIT_DOCKERFILE_EXPOSE_PORTS 65536
/* Bytes all variable expansions of one conversion may produce (values are
 * copied into the environment, history, file contents and step names). */
#define KILN_LIMIT_DOCKERFILE_EXPANDED (256u << 20)
/* Ops in the graph of one conversion. */
#define KILN_LIMIT_DOCKERFILE_OPS 100000

/* A name/value pair of the options (borrowed). */
struct kiln_dockerfile_pair {
        const char *key;
        const char *value;
};

/* What the image resolver hands back (BuildKit's ResolveImageConfig). All
 * members are heap memory the converter takes over. */
struct kiln_dockerfile_resolved_image {
        /* The reference that was resolved when it differs from the one asked
         * (e.g. after a registry mirror rewrite); NULL: the one asked. */
        char *ref;
        /* Manifest digest, "sha256:<hex>", appended to the reference of the
         * image op and step name; NULL when unknown. */
        char *digest;
        /* The image config JSON (OCI or Docker), at most
         * KILN_CONTENT_LIMIT_CONFIG bytes. */
        char *config;
        size_t config_len;
};

/*
 * Resolves an image reference for a platform (BuildKit's MetaResolver).
 * ref is normalised as BuildKit does ("docker.io/library/alpine:latest", or
 * with "@sha256:..."). Fill *ret (zeroed on entry; the converter releases
 * whatever it holds afterwards, also on failure) and return 0, or return
 * -errno with *err set; the converter prefixes the message with the
 * reference as written in the Dockerfile. Called on the converting thread,
 * in stage order, for every stage the target needs whose FROM, COPY --from
 * or RUN --mount from= names an image; the same image may be asked for more
 * than once (BuildKit's resolver caches: so may the callback).
 */
typedef int (*kiln_dockerfile_resolve_fn)(void *userdata, const char *ref,
                                          const struct kiln_content_platform *platform,
                                          struct kiln_dockerfile_resolved_image *ret,
                                          struct kiln_error **err);

/* Options of one conversion (BuildKit's dockerui.Config). Everything is
 * borrowed for the duration of the call; zero-initialised is a valid
 * default (no build args, last stage, kiln's own platform, no resolver: any
 * FROM other than scratch then fails). */
struct kiln_dockerfile_convert_options {
        /* Name used in messages; NULL: "Dockerfile". */
        const char *dockerfile_name;
        /* --build-arg K=V, in order (a later key wins). Also read from here
         * as BuildKit does: BUILDKIT_SANDBOX_HOSTNAME, BUILDKIT_CACHE_MOUNT_NS,
         * BUILDKIT_MULTI_PLATFORM, BUILDKIT_DOCKERFILE_CHECK (overrides the
         * "# check=" directive), SOURCE_DATE_EPOCH, and the proxy variables
         * (HTTP_PROXY, https_proxy, ... in any case), which reach every RUN
         * outside its cache key unless declared with ARG. */
        const struct kiln_dockerfile_pair *build_args;
        size_t n_build_args;
        /* --label K=V, set on the result's config after the Dockerfile's. */
        const struct kiln_dockerfile_pair *labels;
        size_t n_labels;
        /* --target: stage name, case-insensitive; NULL or "": the last stage. */
        const char *target;
        /* --platform: "linux/arm64"...; NULL: the build platform, and the
         * config keeps the base image's os/architecture (BuildKit's implicit
         * target platform). */
        const char *target_platform;
        /* The worker's platform (BUILDPLATFORM); NULL: kiln's own. */
        const char *build_platform;
        /* The patterns of .dockerignore as BuildKit's ignorefile.ReadAll
         * returns them (comments dropped, cleaned, leading '/' removed, "!"
         * for exceptions): set on the build context source, and checked by
         * the CopyIgnoredFile rule. */
        const char *const *dockerignore;
        size_t n_dockerignore;
        /* Local name of the build context; NULL: "context". */
        const char *context_name;
        /* Session id of the local sources (not part of any digest); NULL:
         * none. */
        const char *session_id;
        /* Hostname of RUN containers; NULL: BUILDKIT_SANDBOX_HOSTNAME from
         * the build args, else unset. */
        const char *hostname;
        /* SOURCE_DATE_EPOCH (decimal seconds); NULL: from the build args.
         * Sets the history timestamps and WORKDIR mkdir times. */
        const char *source_date_epoch;
        /* --no-cache: every step ignores the cache (no_cache_stages NULL),
         * or only the steps of the stages named (--no-cache-filter). */
        bool no_cache;
        const char *const *no_cache_stages;
        size_t n_no_cache_stages;
        /* --add-host: host name and IP address pairs added to /etc/hosts
         * of every RUN. */
        const struct kiln_dockerfile_pair *extra_hosts;
        size_t n_extra_hosts;
        /* Prefix step names with the platform, as BuildKit does when more
         * than one platform is built (also set by the build arg
         * BUILDKIT_MULTI_PLATFORM=true). */
        bool multi_platform;
        /* image-resolve-mode: set on every image source (pull, local). */
        enum kiln_llb_resolve_mode resolve_mode;
        /* --network: the network of every RUN that does not name its own
         * (BuildKit's force-network-mode); KILN_LLB_NETWORK_SANDBOX: the
         * worker's default. */
        enum kiln_llb_network network;
        kiln_dockerfile_resolve_fn resolve;
        void *userdata;
};

/* A warning BuildKit prints after the build ("WARN: UndefinedVar: ..."). */
struct kiln_dockerfile_lint_warning {
        char *rule;                    /* "UndefinedVar", "NoEmptyContinuation"... */
        char *description;             /* the rule's description */
        char *url;                     /* documentation link, "" for rules without one */
        char *message;                 /* "Usage of undefined variable '$FOO'" */
        unsigned start_line, end_line; /* 1-based; 0 when unknown */
};

/* What a conversion produced. Owned by the caller; free with
 * kiln_dockerfile_convert_result_free. */
/* Where the instruction that made an op is in the Dockerfile (BuildKit's
 * source map ranges), for failure reports. */
struct kiln_dockerfile_source_location {
        char digest[KILN_LLB_DIGEST_LEN + 1]; /* the op's */
        unsigned start_line;                  /* 1-based, inclusive */
        unsigned end_line;
};

struct kiln_dockerfile_convert_result {
        /* The graph; its output is the target stage's filesystem (scratch
         * output: kiln_llb_def_has_output is false for a target that is an
         * empty FROM scratch stage). */
        struct kiln_llb_def *def;
        /* The target's image config as BuildKit's frontend returns it (Go's
         * compact json.Marshal of DockerOCIImage): rootfs and history are
         * those of the base image plus this build's history entries; the
         * exporter adds the layers' diff_ids and "created". NUL-terminated. */
        char *config;
        size_t config_len;
        /* Progress names in the order BuildKit prints them: "[internal] load
         * metadata for ...", then each op's name in graph order. */
        char **steps;
        size_t n_steps;
        struct kiln_dockerfile_lint_warning *warnings;
        size_t n_warnings;
        /* SOURCE_DATE_EPOCH in effect (seconds), when has_epoch. */
        bool has_epoch;
        int64_t epoch;
        /* One entry per op of def that an instruction made (FROM, RUN,
         * COPY, ADD, WORKDIR...), in graph order; ops made by none (the
         * build context) have no entry. */
        struct kiln_dockerfile_source_location *locations;
        size_t n_locations;
};

/* The location of the op with digest in r, or NULL. */
const struct kiln_dockerfile_source_location *
kiln_dockerfile_convert_result_location(const struct kiln_dockerfile_convert_result *r,
                                        const char *digest);

/*
 * Converts the Dockerfile data[0..size) with opt (NULL: defaults). On
 * success stores a new result in *ret and returns 0. On failure returns
 * -errno and sets *err; errors in the Dockerfile read "Dockerfile:LINE:
 * message" (with err->line set), BuildKit's texts, with "(did you mean
 * X?)" hints where BuildKit gives them; a base image name that is no image
 * reference reads "failed to parse stage name \"X\": " and content/ref.h's
 * reason. Resolver errors are wrapped with the image name as written.
 */
int kiln_dockerfile_convert(const char *data, size_t size,
                            const struct kiln_dockerfile_convert_options *opt,
                            struct kiln_dockerfile_convert_result **ret, struct kiln_error **err);

struct kiln_dockerfile_convert_result *
kiln_dockerfile_convert_result_free(struct kiln_dockerfile_convert_result *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_convert_result *,
                            kiln_dockerfile_convert_result_free);

/* Releases what a resolver result holds and zeroes it (for resolvers that
 * fail half-way). */
void kiln_dockerfile_resolved_image_release(struct kiln_dockerfile_resolved_image *r);
