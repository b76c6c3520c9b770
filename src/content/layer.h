/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Applying an image layer (a tar stream, gzip- or zstd-compressed or not)
 * onto a directory tree, confined to that tree.
 *
 * The tree is the merged view of the parent snapshot (a mounted overlay or
 * a full copy): a whiteout removes what the parent holds, and overlayfs
 * records the removal in its upper directory by itself.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

/* Entries (headers, whiteouts included) one layer may hold. */
#define KILN_LIMIT_LAYER_ENTRIES (4u << 20)
/* Bytes of an entry's path or link target, as found in the tar. */
#define KILN_LIMIT_LAYER_PATH 4096u
/* Bytes of all extended attributes (names and values) of one entry. */
#define KILN_LIMIT_LAYER_XATTR_BYTES (256u << 10)
/* Bytes of the paths of all directories of one layer: their times are set
 * once the layer is written, so their paths are kept until then. */
#define KILN_LIMIT_LAYER_DIR_PATH_BYTES (64u << 20)

struct kiln_content_layer_options {
        /* Whiteout names (".wh.*") are ordinary files: an archive ADDed
         * from the build context, not an image layer. */
        bool no_whiteouts;
        /* Character and block devices are skipped (and counted) instead of
         * created. FIFOs are always created. */
        bool no_devices;
        /* Any xattr the file system refuses is skipped (and counted), not
         * only EOPNOTSUPP/EPERM: BuildKit's ADD unpack (BestEffortXattrs). */
        bool best_effort_xattrs;
        /* Every entry gets this owner instead of the one in the tar. */
        bool override_owner;
        uint32_t uid;
        uint32_t gid;
        /* Compute the sha256 of the uncompressed stream into
         * stats.diff_id (implied by expect_diff_id). */
        bool want_diff_id;
        /* "sha256:<hex>" the uncompressed stream must hash to (the image
         * config's diff id): a mismatch fails with -EBADMSG after the
         * layer was written, so the caller aborts the snapshot. NULL: not
         * checked. */
        const char *expect_diff_id;
        /* Checked between entries and while file data is written; when set
         * the apply stops with -ECANCELED. NULL: never cancelled. */
        const atomic_bool *cancel;
};

struct kiln_content_layer_stats {
        uint64_t entries;         /* tar headers read */
        uint64_t bytes;           /* file data bytes written */
        uint64_t whiteouts;       /* .wh.<name> and opaque markers applied */
        uint64_t devices_skipped; /* with no_devices */
        uint64_t xattrs_skipped;  /* refused by the file system (EOPNOTSUPP, EPERM) */
        uint64_t xattrs_refused;  /* {trusted,user}.overlay.* in the tar: never set */
        char diff_id[7 + 64 + 1]; /* "sha256:<hex>" with want_diff_id, else "" */
};

/*
 * Applies the layer read from blob_fd (read from its current offset to its
 * end; the fd is neither closed nor rewound) onto the tree root_fd (a
 * directory fd; every path is resolved inside it).
 *
 * media_type picks the decompression: the OCI/Docker "+gzip"/".gzip" types
 * gzip only, "+zstd"/".zstd" zstd only. NULL, the uncompressed layer types
 * and any other type naming a tar (containing "tar", e.g. "application/x-tar")
 * are sniffed by magic (gzip, zstd, bzip2, xz or none). Other types (JSON
 * documents, artifacts, "+encrypted") fail with -EMEDIUMTYPE; a stream not
 * compressed as its type says fails with -EBADMSG. The blob's integrity is
 * the caller's (digest checked before); gzip is read as Go's compress/gzip
 * reads it (members may follow one another, each member's CRC-32 and size
 * are checked, anything else after the last member fails with -EBADMSG),
 * and expect_diff_id covers the uncompressed stream.
 *
 * Tar semantics as containerd's archive.Apply: absolute names are made
 * relative; a name whose '..' components climb above the root, or a hard
 * link whose target does, is refused with -EINVAL and an error naming the
 * entry ('layer entry "../x": path escapes the root'). Parent directories
 * are resolved with RESOLVE_IN_ROOT (a symlink in the tree, even to "/etc",
 * stays inside root_fd); missing ones are created (0755, through a dangling
 * symlink too, inside the root). An existing entry
 * is replaced unless both it and the new entry are directories (then the
 * directory is kept and gets the entry's metadata). Owners (from the tar,
 * or override_owner), modes (setuid/setgid/sticky included), atime/mtime
 * (directories at the end of the layer), xattrs (pax SCHILY.xattr; overlayfs'
 * own trusted.overlay.* and user.overlay.* are never set; EOPNOTSUPP and
 * EPERM from the file system skip the attribute, as moby does), hard
 * links (the target must already be in the tree), symlinks (any target),
 * FIFOs and devices. Unless no_whiteouts: ".wh.<name>" removes <name> and
 * everything below it; ".wh..wh..opq" removes every entry of its directory
 * that this same layer did not create; other ".wh..wh.*" names (aufs
 * metadata) are skipped.
 *
 * A stream that is not a tar archive (after decompression) fails with
 * -EMEDIUMTYPE before anything was written; a corrupt or truncated stream
 * with -EBADMSG; limits (KILN_LIMIT_LAYER_*) with -E2BIG. On any failure
 * root_fd may be partly written: the caller discards the tree. ret (may be
 * NULL) is filled on success and failure alike.
 *
 * A compressed stream is decompressed by a helper thread the call starts
 * and joins (1 MiB of buffers). Thread safe: concurrent calls on different
 * trees share no state; one tree must not be changed by anyone else during
 * the call.
 */
int kiln_content_layer_apply(int blob_fd, const char *media_type, int root_fd,
                             const struct kiln_content_layer_options *o,
                             struct kiln_content_layer_stats *ret, struct kiln_error **err);
