/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Helpers shared by the source module's files (defined in image.c). Not for
 * other modules.
 */

#include <stdbool.h>

#include "base/error.h"
#include "snapshot/snapshot.h"

/* A new snapshot that a source is writing, mounted at a directory of its
 * own. Used from one thread. */
struct source_scratch {
        struct kiln_snapshot *snap;
        char *dir;   /* where it is mounted */
        int root_fd; /* dir, opened */
        bool mounted;
};

/* Prepares a snapshot on parent (NULL: an empty one), mounts it at a new
 * directory <work_dir>/<prefix>-XXXXXX and opens that. On failure nothing
 * is left behind. */
int source_scratch_open(struct kiln_snapshot_store *store, const char *parent, const char *work_dir,
                        const char *prefix, struct source_scratch *ret, struct kiln_error **err);

/* Closes and unmounts the tree, removes the directory and commits the
 * snapshot under name (NULL: none), its id in *ret_id. sc is released
 * whatever happens (a failure aborts the snapshot). */
int source_scratch_commit(struct source_scratch *sc, const char *name, char **ret_id,
                          struct kiln_error **err);

/* Closes and unmounts the tree, aborts the snapshot and removes the
 * directory. A released sc is left as it is. */
void source_scratch_abort(struct source_scratch *sc);
