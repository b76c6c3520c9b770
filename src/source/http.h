/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * HTTP sources (ADD <url>): download one file into a new snapshot, as
 * BuildKit's source/http does. Only http and https URLs, redirects followed
 * (to http or https only), at most KILN_LIMIT_HTTP_SOURCE bytes. The file
 * is named by the filename option, else the Content-Disposition filename,
 * else the last segment of the URL path, else "download"; mode perm
 * (0: 0600), owner uid:gid; its mtime is the Last-Modified time, else the
 * epoch. With a checksum, a download whose sha256 differs fails with
 * "digest mismatch for <url>: sha256:<got> (expected: <checksum>)" and
 * nothing is kept.
 */

#include <stdatomic.h>
#include <stdint.h>

#include "base/error.h"
#include "source/image.h"

/* Bytes of one download. */
#define KILN_LIMIT_HTTP_SOURCE ((uint64_t) 8 << 30)
/* Redirects followed by one download. */
#define KILN_LIMIT_HTTP_REDIRECTS 10L
/* A URL. */
#define KILN_LIMIT_HTTP_URL 8192u

struct kiln_snapshot_store;

struct kiln_source_http_options {
        const char *url;
        const char *filename; /* NULL or "": from the response or the URL */
        uint32_t perm;        /* 0: 0600 */
        uint32_t uid;
        uint32_t gid;
        const char *checksum; /* "sha256:<hex>" to verify; NULL: none */
        /* Temporary mount points go below this directory (e.g. <root>/exec). */
        const char *work_dir;
        const atomic_bool *cancel;       /* NULL: never; checked while downloading */
        kiln_source_status_fn on_status; /* id: the URL without query; bytes */
        void *userdata;
};

struct kiln_source_http_result {
        char *snapshot_id; /* committed, holding the one file */
        char *digest;      /* "sha256:<hex>" of the content */
        char *filename;    /* the name it got */
};
void kiln_source_http_result_release(struct kiln_source_http_result *r);

/* Downloads o->url into a new committed snapshot of snapshots. Errors name
 * the URL (without its query string or credentials): "download
 * '<url>': invalid response status 404". -ECANCELED when cancelled. No
 * snapshot is left on failure. Thread safe. */
int kiln_source_http_fetch(struct kiln_snapshot_store *snapshots,
                           const struct kiln_source_http_options *o,
                           struct kiln_source_http_result *ret, struct kiln_error **err);
