/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The certificate copy of `kiln create --config FILE`: a builder gets its own
 * buildkitd.toml and its own copies of the registry certificates, as buildx
 * snapshots them into a builder's /etc/buildkit (reference section 4), so
 * later edits or deletions of the user's files do not change the builder.
 *
 * Layout of buildkit_dir (<builder>/etc/buildkit):
 *   buildkitd.toml                    FILE, with the copied paths replaced
 *   certs/<host>/<file>               each registry ca, keypair key and cert
 *   certs/<host>/<dir>/<name>         the *.crt, *.cert, *.key of a tlsconfigdir
 * where <host> is the registry host with each run of characters outside
 * [a-zA-Z0-9.-] replaced by '_' (buildx's name for the directory).
 */

#include "config/config.h"

/* The largest file copied (a CA, key or certificate; buildx reads at most
 * 1 MiB and silently truncates, kiln refuses). */
#define KILN_CONFIG_INSTALL_MAX_FILE (1u << 20)
/* The most files copied for one configuration, tlsconfigdir contents included. */
#define KILN_CONFIG_INSTALL_MAX_FILES 1024u

/* Reads config_file with kilnd's configuration code and installs it, with
 * copies of the files it names, as buildkit_dir.
 *
 * For every [registry."<host>"], each `ca` file and each `keypair` `key` and
 * `cert` is copied into <buildkit_dir>/certs/<host>/, and each `tlsconfigdir`
 * into a directory of its own there (the files BuildKit reads from it:
 * *.crt, *.cert, *.key). <buildkit_dir>/buildkitd.toml is config_file byte
 * for byte (comments and layout included) except for those path strings,
 * which name the copies by absolute path. Relative paths in config_file are
 * read relative to config_file's directory; symbolic links are followed for
 * reading, and only directories and regular files are created: directories
 * 0700, private keys 0600, the rest 0644. Two different files with the same
 * name for one host get different names ("ca.pem", "ca-1.pem"); a name used
 * twice for the same content is one file.
 *
 * Atomic: everything is built and fsync'ed in a staging directory next to
 * buildkit_dir, which is then renamed into place, exchanged with an existing
 * buildkit_dir in one step (how `kiln create --append` refreshes the copies;
 * the old directory is then removed). Missing parents of buildkit_dir are
 * created 0700. On failure nothing new is left behind and an existing
 * buildkit_dir is untouched.
 *
 * Returns 0, or a negative errno with *err set. Problems with the file
 * itself (invalid TOML, a wrong type, a file named in it that cannot be
 * copied: missing, unreadable, not a regular file, larger than
 * KILN_CONFIG_INSTALL_MAX_FILE) are errors in diags with config_file:line:col
 * and the key (e.g. registry."myregistry.com".keypair[0].key), all of them,
 * not just the first; *err then repeats the first ("and N more"). So a caller
 * that prints diags, and *err only when diags holds no error, shows each
 * problem once. Warnings (unknown keys...) are added to diags also on
 * success. diags is sorted (kiln_config_diags_sort) before returning.
 *
 * Thread safe as long as no other thread changes the working directory or
 * works on the same buildkit_dir; callers serialise work on one builder.
 */
int kiln_config_install(const char *config_file, const char *buildkit_dir,
                        struct kiln_config_diags *diags, struct kiln_error **err);

/* As kiln_config_install, for a buildkit_dir inside a staging tree that the
 * caller moves into place afterwards (a new builder made in
 * builders/.new-<name> and renamed to builders/<name>): the files are
 * created under buildkit_dir, but the paths written into buildkitd.toml
 * name them under final_dir, where kilnd will read them. final_dir NULL is
 * buildkit_dir. final_dir is not touched. */
int kiln_config_install_as(const char *config_file, const char *buildkit_dir, const char *final_dir,
                           struct kiln_config_diags *diags, struct kiln_error **err);

/* The directory name of a registry host under certs/: each run of bytes
 * outside [a-zA-Z0-9.-] becomes one '_' (buildx: "myreg:5000" ->
 * "myreg_5000"). "", "." and ".." become "_" so that the name always stays
 * inside certs/. Caller frees. */
char *kiln_config_install_host_dir(const char *host);
