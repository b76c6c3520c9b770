/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Image references, read as BuildKit reads them: distribution's grammar
 * (github.com/distribution/reference) through ParseNormalizedNamed, then
 * TagNameOnly.
 *
 *   alpine                       docker.io/library/alpine:latest
 *   user/repo                    docker.io/user/repo:latest
 *   localhost/repo               localhost/repo:latest        (localhost is a host)
 *   host:5000/repo:tag           host:5000/repo:tag
 *   repo@sha256:<64 hex>         docker.io/library/repo@sha256:...   (no tag added)
 *   repo:tag@sha256:<64 hex>     both kept; the digest is what is fetched
 *
 * The first path component is a host when it is "localhost" or holds '.',
 * ':' or an upper-case letter; else the reference is on docker.io, and a
 * one-component path there gets "library/". Paths are lower case, at most
 * 255 bytes; tags are [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; digests are
 * sha256, sha384 or sha512 in lower-case hex. A bad reference is an error
 * that quotes it and says which part is wrong.
 *
 * A parsed reference is plain data: share it read-only between threads.
 */

#include "base/error.h"

/* An image reference as a user or a Dockerfile writes it. distribution
 * bounds only the path (255) and the tag (128); the whole string is bounded
 * here so hostile input cannot make us copy megabytes. */
#define KILN_LIMIT_CONTENT_REFERENCE 4096u
/* distribution's RepositoryNameTotalLengthMax: the path after the host. */
#define KILN_LIMIT_CONTENT_REF_PATH 255u
/* distribution's tag grammar: [\w][\w.-]{0,127}. */
#define KILN_LIMIT_CONTENT_REF_TAG 128u

struct kiln_content_ref {
        char *domain; /* "docker.io", "localhost:5000", "[::1]:5000" */
        char *path;   /* "library/alpine": the repository on that host */
        char *tag;    /* "latest", or NULL when only a digest was given */
        char *digest; /* "sha256:<hex>", or NULL */
};

/* Parses s (normalising it as above) into a new reference. Returns 0, or
 * -EINVAL with *err: "invalid reference 'Foo': repository name 'Foo' must
 * be lowercase". */
int kiln_content_ref_parse(const char *s, struct kiln_content_ref **ret, struct kiln_error **err);

struct kiln_content_ref *kiln_content_ref_free(struct kiln_content_ref *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_content_ref *, kiln_content_ref_free);

/* A deep copy. */
struct kiln_content_ref *kiln_content_ref_copy(const struct kiln_content_ref *r);

/* "docker.io/library/alpine:3.20", "...@sha256:..." or both: the form BuildKit
 * prints and stores. Caller frees. */
char *kiln_content_ref_canonical(const struct kiln_content_ref *r);
/* "docker.io/library/alpine" (no tag or digest). Caller frees. */
char *kiln_content_ref_name(const struct kiln_content_ref *r);
/* Docker's short form: "alpine:3.20", "user/repo:tag", "host:5000/repo:tag".
 * Caller frees. */
char *kiln_content_ref_familiar(const struct kiln_content_ref *r);
/* What goes after /manifests/: the digest when there is one, else the tag.
 * Borrowed from r. */
const char *kiln_content_ref_object(const struct kiln_content_ref *r);

/* Checks a digest as go-digest's Validate does: "<alg>:<hex>" with alg one
 * of sha256, sha384, sha512 and the hex lower case and of the algorithm's
 * length. Returns 0 or -EINVAL with *err (the digest quoted). */
int kiln_content_digest_validate(const char *digest, struct kiln_error **err);
