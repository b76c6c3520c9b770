/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Dockerfile parser: turns a Dockerfile into BuildKit's AST (the Node tree of
 * frontend/dockerfile/parser), without shell expansion or instruction checks.
 * Not thread-safe per tree; independent parses may run concurrently.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/error.h"

/* A whole Dockerfile. */
#define KILN_LIMIT_DOCKERFILE_FILE (16u << 20)
/* One physical line, as BuildKit's bufio.Scanner limit (64 KiB - 1). */
#define KILN_LIMIT_DOCKERFILE_LINE 65535u
/* Nesting of ONBUILD instructions. */
#define KILN_LIMIT_DOCKERFILE_DEPTH 16

struct kiln_dockerfile_str {
        char *s; /* NUL-terminated, may also hold NUL bytes: use len */
        size_t len;
};

struct kiln_dockerfile_node {
        struct kiln_dockerfile_str value;
        struct kiln_dockerfile_str *flags;
        size_t n_flags;
        struct kiln_dockerfile_node *next;
        struct kiln_dockerfile_node **children;
        size_t n_children;
        unsigned start_line, end_line; /* 1-based, 0 for argument nodes */
        bool json;                     /* arguments came from a JSON array */
};

/* Parses data (size bytes). On success stores the root in *root (children:
 * one per instruction) and returns 0; on failure returns -errno and sets *err
 * with a "file:line: message" text and err->line. file is used only in
 * messages and may be NULL. */
int kiln_dockerfile_parse(const char *data, size_t size, const char *file,
                          struct kiln_dockerfile_node **root, struct kiln_error **err);

struct kiln_dockerfile_node *kiln_dockerfile_node_free(struct kiln_dockerfile_node *n);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_dockerfile_node *, kiln_dockerfile_node_free);

/* Writes n's dump as BuildKit's Node.Dump() does (the root: one line per
 * instruction, each ending in "\n"). Returns 0 or -errno. */
int kiln_dockerfile_dump(const struct kiln_dockerfile_node *n, FILE *out);

/* Writes s as Go's strconv.Quote does. */
void kiln_dockerfile_quote(const char *s, size_t len, FILE *out);
