/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Disk usage, pruning and the garbage collector of kilnd (disk.c): the
 * records a user sees in `kiln du` (committed snapshots, with the cache
 * records that point at them, and content blobs no named image needs), the
 * /v1/du and /v1/prune endpoints, and the GC thread that applies
 * [worker.oci] gc, reservedSpace, maxUsedSpace, minFreeSpace and
 * [[worker.oci.gcpolicy]] as buildkitd does.
 *
 * A snapshot a running build uses (kiln_snapshot_use, or a child being
 * prepared) is never removed: kiln_snapshot_remove refuses it with -EBUSY
 * and the pruner skips it. Every cache record naming a removed snapshot is
 * removed with it, so the solver's cache never points at nothing.
 */

struct kiln_daemon;
struct kiln_error;

/* Starts the GC thread of d (after kiln_daemon_builds_setup), which runs
 * one collection at once when [worker.oci] gc is on (the default).
 * Returns 0, or -errno with *err set. Loop thread. */
int kiln_daemon_gc_start(struct kiln_daemon *d, struct kiln_error **err);

/* Asks the GC thread for a collection (a build ended). Never blocks and
 * never fails: kicks that arrive while a collection runs fold into one
 * more run. A no-op when gc is off or the thread is not running. Any
 * thread. */
void kiln_daemon_gc_kick(struct kiln_daemon *d);

/* Stops the GC thread (interrupting a collection between two records) and
 * joins it; later kicks are ignored. Call it before the operations are
 * stopped, so that a prune waiting for the collector is not held up.
 * Idempotent. */
void kiln_daemon_gc_stop(struct kiln_daemon *d);

/* Frees what disk.c keeps for d (stopping the GC thread first). After
 * every operation has been joined (a du or prune worker uses it), before
 * kiln_daemon_builds_free. Idempotent. */
void kiln_daemon_disk_free(struct kiln_daemon *d);
