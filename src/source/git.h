/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Git sources (ADD <git url>), as BuildKit's source/git does, with the git
 * program: `git` from PATH, run with argv (never a shell) and a clean
 * environment (GIT_TERMINAL_PROMPT=0, LC_ALL=C, no system or user config:
 * GIT_CONFIG_NOSYSTEM=1, GIT_CONFIG_GLOBAL=/dev/null, HOME an empty
 * temporary directory), protocols limited to http, https, git and ssh (and
 * file when the caller allows it), in its own process group that is killed
 * on cancel or timeout.
 *
 * Two steps, so that a solver can key a git source cheaply:
 *   kiln_source_git_resolve  `git ls-remote`: the ref (NULL: the remote's
 *                            default branch) to a commit; a full 40 (or 64)
 *                            hex ref is a commit without asking the remote.
 *                            The result's key names the content: the commit
 *                            plus subdir, keep_git_dir and skip_submodules
 *                            (BuildKit's shaToCacheKey).
 *   kiln_source_git_snapshot fetches that commit into a bare cache
 *                            repository <cache_dir>/<sha256(remote)> (depth
 *                            1; a full fetch when the server refuses one by
 *                            commit), checks it out into a new snapshot
 *                            (submodules unless skip_submodules, .git only
 *                            with keep_git_dir, subdir's contents only when
 *                            given) and commits it.
 *
 * Authentication: an Authorization header (auth_header, sent as is) or a
 * token (auth_token, sent as "basic base64(x-access-token:<token>)") is
 * given to git as http.<remote>.extraheader through GIT_CONFIG_COUNT
 * environment variables (git's equivalent of -c, but not readable in the
 * world-readable /proc/<pid>/cmdline); it never appears in a log, an error,
 * the snapshot or the key. ssh remotes (ssh://, user@host:path) need an
 * agent socket (ssh_auth_sock) and known_hosts lines (known_ssh_hosts):
 * ssh runs with StrictHostKeyChecking=yes against exactly those hosts and
 * offers only the agent's keys (never the daemon host's own ~/.ssh).
 *
 * Errors name the remote with its credentials redacted, e.g.
 *   failed to fetch remote https://xxxxx:xxxxx@host/r.git: git stderr: ...
 *   expected checksum to match <checksum>, got <commit>
 *   repository does not contain ref <ref>
 *
 * Thread safety: all functions may be called from any thread; fetches of one
 * remote are serialised by an flock on <cache_dir>/<hash>.lock (waited for
 * with the cancel flag polled).
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

struct kiln_snapshot_store;

/* A remote URL, a ref or a subdir, in bytes. */
#define KILN_LIMIT_GIT_URL 8192u
#define KILN_LIMIT_GIT_REF 1024u
/* Output of one git command kept (ls-remote lists, stderr for errors). */
#define KILN_LIMIT_GIT_OUTPUT (4u << 20)
/* Git's stderr quoted in an error message. */
#define KILN_LIMIT_GIT_ERROR 4096u
/* One git command (a fetch of a big repository included), in seconds. */
#define KILN_LIMIT_GIT_TIMEOUT_SEC 3600u
/* known_hosts text, in bytes. */
#define KILN_LIMIT_GIT_KNOWN_HOSTS (1u << 20)

/* Output a git command printed (its progress on stderr): borrowed for the
 * call; stream 1 or 2. Credentials in URLs are already redacted. */
typedef void (*kiln_source_git_output_fn)(void *userdata, int stream, const void *data, size_t n);

struct kiln_source_git_options {
        const char *remote;   /* required */
        const char *ref;      /* branch, tag, "refs/..." or commit; NULL/"": default branch */
        const char *subdir;   /* NULL/"" or "/": the whole checkout */
        bool keep_git_dir;    /* keep .git (subdir must be empty then to matter) */
        const char *checksum; /* hex commit (prefix) the ref must resolve to; NULL: none */
        bool skip_submodules;
        /* Secret values (not NULL-terminated), NULL: none. The header wins. */
        const void *auth_header;
        size_t auth_header_len;
        const void *auth_token;
        size_t auth_token_len;
        /* ssh remotes: the agent socket and known_hosts text. */
        const char *ssh_auth_sock;
        const char *known_ssh_hosts;
        /* Accept file:// remotes (BuildKit refuses them: a build must not
         * read repositories of the daemon's host). Tests only. */
        bool allow_file;
        /* Bare cache repositories and their locks: <root>/git. Required
         * for kiln_source_git_snapshot. Created when missing. */
        const char *cache_dir;
        /* Temporary directories (HOME, mount points, known_hosts) go here,
         * e.g. <root>/exec. Required. */
        const char *work_dir;
        const atomic_bool *cancel;           /* NULL: never; -ECANCELED then */
        unsigned timeout_sec;                /* per git command; 0: KILN_LIMIT_GIT_TIMEOUT_SEC */
        kiln_source_git_output_fn on_output; /* NULL: output dropped */
        void *userdata;
};

struct kiln_source_git_resolved {
        char *commit; /* full hex commit id the content comes from */
        char *ref;    /* the ref as resolved ("refs/heads/main"), or the commit */
        /* Identifies the checkout's content: commit, ".git#ref" with
         * keep_git_dir, ":subdir", "(skip-submodules)". A solver's key. */
        char *key;
};
void kiln_source_git_resolved_release(struct kiln_source_git_resolved *r);

/* Resolves o->ref of o->remote to a commit (no fetch): `git ls-remote`,
 * branches preferred over tags, annotated tags peeled (the key uses the
 * commit unless keep_git_dir). With o->checksum, a commit that does not
 * start with it fails: "expected checksum to match <c>, got <commit>".
 * Not to be limited by a build's parallelism: it is cheap. Returns 0 with
 * *ret filled (release it), or a negative errno with *err set. */
int kiln_source_git_resolve(const struct kiln_source_git_options *o,
                            struct kiln_source_git_resolved *ret, struct kiln_error **err);

/* Fetches res->commit (from kiln_source_git_resolve with the same options)
 * into the cache repository and checks it out into a new committed
 * snapshot of snapshots: *ret_id (malloc'd) with a use held
 * (kiln_snapshot_release it). Nothing is left on failure (the cache
 * repository keeps what was fetched). -ECANCELED when cancelled: the git
 * process group is killed first. */
int kiln_source_git_snapshot(struct kiln_snapshot_store *snapshots,
                             const struct kiln_source_git_options *o,
                             const struct kiln_source_git_resolved *res, char **ret_id,
                             struct kiln_error **err);

/* true when remote is an ssh remote (ssh://..., or scp-like user@host:path). */
bool kiln_source_git_is_ssh(const char *remote);

/* remote with the credentials of its userinfo replaced by "xxxxx" (as
 * BuildKit's urlutil.RedactCredentials). Never NULL; caller frees. */
char *kiln_source_git_redact(const char *remote);

/* The host of remote ("github.com", "host:port"), for per-host secret names
 * ("GIT_AUTH_TOKEN.github.com"); NULL when it has none. Caller frees. */
char *kiln_source_git_host(const char *remote);
