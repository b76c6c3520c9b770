/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The outputs of a build (export.c): what runs after the solve for each
 * exporter entry of the request, as BuildKit's exporters do, and the raw
 * byte streams (ops.c) that carry client-side outputs to the client.
 *
 * image / registry: the image is written to the content store
 * (export/image.h), named (<root>/images.json) and pushed.
 * oci / docker / tar / local: the build sends an "export" event and waits
 * for the client to download the archive from
 * GET /v1/build/<id>/export/<index> (kiln_daemon_handle_export).
 */

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

struct kiln_api_build_event;
struct kiln_api_build_output;
struct kiln_daemon;
struct kiln_daemon_build;
struct kiln_daemon_op;
struct kiln_daemon_op_spec;
struct kiln_daemon_request;

/* <root>/images.json: at most this many bytes, and names. */
#define KILN_DAEMON_LIMIT_IMAGES_FILE (16u << 20)
#define KILN_DAEMON_LIMIT_IMAGES      65536u
/* Bytes a raw stream's worker may queue before it waits for the client. */
#define KILN_DAEMON_RAW_HIGH_WATER (4u << 20)
/* The largest piece a raw stream queues at once (a writer's bigger
 * buffers are split). */
#define KILN_DAEMON_RAW_PIECE (1u << 20)
/* The chunk MHD asks a raw stream for at most. */
#define KILN_DAEMON_RAW_BLOCK (256u << 10)

/* ---- the exporters (export.c) ---- */

/* What the build hands to its exporters. Borrowed for the call. */
struct kiln_daemon_export_input {
        struct kiln_daemon_build *build;
        struct kiln_daemon_op *op; /* the build's: cancel flag */
        const char *snapshot_id;   /* the result; NULL: scratch */
        const char *config;        /* the converter's image config */
        size_t config_len;
        bool has_epoch; /* SOURCE_DATE_EPOCH of the build args */
        int64_t epoch;
        const char *platform; /* for messages; may be NULL */
        /* Emits a build event on the build's stream (time filled in). */
        void (*emit)(void *userdata, struct kiln_api_build_event *ev);
        void *userdata;
};

/*
 * Runs the outputs in order on the build's worker thread, each as a vertex
 * named as BuildKit names its exporter ("exporting to image", ...), and
 * stores in *ret_response the "exporterResponse" object of the result
 * event (NULL when there are no outputs). Unknown attributes are ignored;
 * a malformed known one fails before anything is exported, with
 * BuildKit's message. Client-side outputs wait, cancel-aware, for their
 * download (at most KILN_API_CONTEXT_TIMEOUT_S for it to start). Mounts
 * made for tar and local outputs are always undone. Returns 0, or -errno
 * with *err.
 */
int kiln_daemon_export_run(const struct kiln_daemon_export_input *in,
                           const struct kiln_api_build_output *outputs, size_t n_outputs,
                           json_t **ret_response, struct kiln_error **err);

/*
 * The manifests named by type=image outputs (<root>/images.json), which
 * the garbage collector must keep with their config and layers: a
 * NULL-terminated array of distinct "sha256:<hex>" digests in *ret
 * (kiln_api_strv_free), possibly empty. A missing file is an empty list.
 * Returns 0, or -errno with *err (an unreadable or malformed file). Any
 * thread: the file is replaced atomically, never read half-written.
 */
int kiln_daemon_images_manifests(struct kiln_daemon *d, char ***ret, struct kiln_error **err);

/* ---- raw byte streams (ops.c) ---- */

/*
 * Starts an operation whose answer is status 200, "Content-Type:
 * content_type", and the bytes its worker writes with
 * kiln_daemon_op_write, chunked, as they come. spec->stream is ignored.
 * A worker that fails (returns < 0) cuts the answer (no final chunk), so
 * that the client sees an incomplete download. Otherwise as
 * kiln_daemon_op_start. Loop thread.
 */
enum MHD_Result kiln_daemon_op_start_raw(struct kiln_daemon *d, struct kiln_daemon_request *req,
                                         struct MHD_Connection *conn, const char *method,
                                         const char *url, const struct kiln_daemon_op_spec *spec,
                                         const char *content_type);

/*
 * Worker side of a raw operation: queues buf[0..n), blocking while more
 * than KILN_DAEMON_RAW_HIGH_WATER bytes wait for the client. -ECANCELED
 * (with *err) when the client went away or the operation was cancelled.
 * Has the signature of a kiln_export_write_fn (userdata: the op).
 */
int kiln_daemon_op_write(void *op, const void *buf, size_t n, struct kiln_error **err);

/* Makes kiln_daemon_op_write and _flush of op also stop (-ECANCELED) once
 * *flag is set; flag must outlive the operation's worker. Worker side,
 * before the first write. */
void kiln_daemon_op_link_cancel(struct kiln_daemon_op *op, const atomic_bool *flag);

/* Adds member key = value (taken) to the "error" event a streaming
 * operation sends when its worker fails (e.g. a build's "source"); a
 * second call for key replaces it. Worker side. */
void kiln_daemon_op_set_error_extra(struct kiln_daemon_op *op, const char *key, json_t *value);

/* Waits until every queued byte was handed to the connection (or the
 * operation is cancelled: -ECANCELED). Worker side. */
int kiln_daemon_op_flush(struct kiln_daemon_op *op, struct kiln_error **err);
