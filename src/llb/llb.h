/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * kiln's build graph (LLB): the low-level build definition the Dockerfile
 * converter emits and the solver runs, modelled on BuildKit's LLB
 * (solver/pb/ops.proto) as plain C structs.
 *
 * A definition (struct kiln_llb_def) owns a list of ops in dependency order.
 * An op is one of: source (image, local context, http, git), exec, file (a
 * chain of copy/mkdir/mkfile/rm/symlink actions), merge, diff. An op's inputs
 * are references (struct kiln_llb_ref) to an output of an op already in the
 * same definition, or to scratch (the empty filesystem).
 *
 * Building a graph:
 *
 *   struct kiln_llb_op *op = kiln_llb_op_new_source(KILN_LLB_SOURCE_IMAGE);
 *   op->source.image.ref = kiln_xstrdup("docker.io/library/alpine:latest");
 *   kiln_llb_platform_set(&op->platform, "linux", "amd64", NULL);
 *   const struct kiln_llb_op *img;
 *   r = kiln_llb_def_add(def, op, &img, err);    // takes op, even on error
 *
 *   op = kiln_llb_op_new(KILN_LLB_OP_EXEC);
 *   kiln_llb_strv_push(&op->exec.args, "/bin/sh");
 *   ...
 *   kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, "/")->input =
 *           (struct kiln_llb_ref){ img, 0 };
 *
 * Ownership: every char * and array in an op is heap memory owned by the op
 * (set them with kiln_xstrdup and the helpers below); kiln_llb_op_free and
 * kiln_llb_def_free release all of it. The struct kiln_llb_ref pointers in an
 * op are borrowed: they point at ops owned by the definition.
 *
 * Digests. Every op added to a definition gets a digest, "sha256:" and the
 * lowercase hex SHA-256 of the op's canonical form C. C is the canonical JSON
 * encoding of the op body (the object under "op" in kiln_llb_def_to_json's
 * output) after removing the members that BuildKit keeps out of cache keys:
 *   - "metadata" (not part of the body anyway): descriptions, progress group,
 *     ignore-cache, caps;
 *   - exec "proxy_env" (BuildKit strips ProxyEnv before computing the exec
 *     cache key: proxies change how bytes travel, not what is built);
 *   - the "ip" of exec "extra_hosts" entries (BuildKit blanks it in the exec
 *     cache key: --add-host with a new address does not rerun a step);
 *   - source.local "session_id" and "shared_key_hint" (the client session
 *     changes on every build and the hint only names a transfer cache; the
 *     local source's content is keyed by what is transferred).
 * Canonical JSON: no whitespace; object members sorted by key, bytewise;
 * members whose value is the default are omitted (false, 0, "", empty array,
 * empty object, scratch reference), except: fields with a has_ flag below,
 * present exactly when the flag is set; a user or group by id, {"id":N}
 * with N written even when 0 (by name: {"name":"..."}); and the members that
 * name a variant, always present even if empty: the op type ("source",
 * "exec", "file", "merge", "diff"), the source type ({"image":{...}}) and
 * each file action's type ({"copy":{...}}). Integers are decimal ("-" for
 * negatives, no leading zeros, no exponent; modes too: 0755 is 493).
 * Strings are UTF-8 with only '"' -> \", '\' -> \\ and bytes below 0x20 ->
 * \u00xx (lowercase hex) escaped; byte strings (mkfile data) are standard
 * padded base64. Enums are the lower-case strings named in this header. An
 * input reference is {"digest":"sha256:...","output":N}, "output" omitted
 * when 0, so an op's digest covers the digests of its inputs. Array order is
 * kept as given (args, env, mounts, patterns, actions and merge inputs are
 * ordered); only metadata caps are a set (written sorted, once each). The
 * member names are those written by kiln_llb_def_to_json. Example, an image
 * source (its digest is the SHA-256 of exactly these bytes):
 *   {"platform":{"architecture":"amd64","os":"linux"},
 *    "source":{"image":{"ref":"docker.io/library/alpine:3.20"}}}
 * (on one line). tests/unit/test-llb.c pins this and other digests so any
 * change to C is caught. Adding a field that is omitted when default leaves
 * existing digests unchanged.
 *
 * Thread safety: a definition and its ops are not safe for concurrent
 * mutation. Once built (or loaded), a definition is never changed by the read
 * functions here, so any number of threads may read it at once. An op passed
 * to kiln_llb_def_add must not be modified afterwards (its digest would lie).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* The JSON text of a whole definition given to kiln_llb_def_from_json. */
#define KILN_LIMIT_LLB_JSON (64u << 20)
/* Ops in one definition. */
#define KILN_LIMIT_LLB_OPS 100000u
/* One string (an argument, a path, an environment entry, a pattern...). */
#define KILN_LIMIT_LLB_STRING (1u << 20)
/* The contents of one mkfile action. */
#define KILN_LIMIT_LLB_MKFILE_DATA (16u << 20)
/* Items in one list (args, env, patterns, merge inputs, exit codes...). */
#define KILN_LIMIT_LLB_LIST 100000u
/* Mounts of one exec op. */
#define KILN_LIMIT_LLB_MOUNTS 1024u
/* Actions in one file op. */
#define KILN_LIMIT_LLB_FILE_ACTIONS 10000u

/* "sha256:" + 64 hex digits. */
#define KILN_LLB_DIGEST_LEN (7 + 64)

struct kiln_llb_op;
struct kiln_llb_def;

/* An owned list of owned strings. Zero-initialised is empty. */
struct kiln_llb_strv {
        char **v;
        size_t n;
};

/* An owned string map (keys unique). Kept in insertion order in memory,
 * always written sorted by key. Zero-initialised is empty. */
struct kiln_llb_strmap {
        char **keys;
        char **values;
        size_t n;
};

/* A reference to output `output` of op `op`. op == NULL is scratch (the
 * empty filesystem; output must then be 0). op must be owned by the same
 * definition as the op holding the reference. */
struct kiln_llb_ref {
        const struct kiln_llb_op *op;
        uint32_t output;
};

/* Target platform, as OCI: all empty means "unspecified" (the solver picks
 * the worker's default). os and architecture are set together; variant only
 * with them. Digest-relevant. */
struct kiln_llb_platform {
        char *os;           /* "linux" */
        char *architecture; /* "amd64", "arm64"... */
        char *variant;      /* "v7", "v8"; or NULL */
};

/* ---- source ---------------------------------------------------------- */

enum kiln_llb_source_type {
        KILN_LLB_SOURCE_IMAGE, /* JSON "image" */
        KILN_LLB_SOURCE_LOCAL, /* JSON "local" */
        KILN_LLB_SOURCE_HTTP,  /* JSON "http" */
        KILN_LLB_SOURCE_GIT,   /* JSON "git" */
};

enum kiln_llb_resolve_mode {
        KILN_LLB_RESOLVE_DEFAULT,      /* omitted in JSON */
        KILN_LLB_RESOLVE_FORCE_PULL,   /* "pull" */
        KILN_LLB_RESOLVE_PREFER_LOCAL, /* "local" */
};

/* An image's root filesystem. The platform pulled is the op's platform. */
struct kiln_llb_source_image {
        char *ref; /* normalised reference, required: docker.io/library/alpine:3.20 */
        enum kiln_llb_resolve_mode resolve_mode; /* JSON "resolve_mode" */
        uint32_t layer_limit;                    /* use only the first N layers; 0: all */
};

/* A directory sent by the client (the build context, a named context...). */
struct kiln_llb_source_local {
        char *name;                            /* required: "context", "dockerfile" */
        struct kiln_llb_strv include_patterns; /* "include_patterns" */
        struct kiln_llb_strv exclude_patterns; /* "exclude_patterns" (.dockerignore) */
        struct kiln_llb_strv follow_paths;     /* "follow_paths" */
        char *shared_key_hint;                 /* "shared_key_hint"; not in the digest */
        char *session_id;                      /* "session_id"; not in the digest */
};

/* A file downloaded over HTTP(S): ADD <url>. */
struct kiln_llb_source_http {
        char *url;      /* required, http:// or https:// */
        char *checksum; /* "sha256:<hex>" the download must match, or NULL */
        char *filename; /* name of the file in the output; NULL: from the URL */
        uint32_t chmod; /* "chmod": permission bits (<= 07777); 0: default 0600 */
        uint32_t uid;
        uint32_t gid;
};

/* A git checkout: ADD <git url>. */
struct kiln_llb_source_git {
        char *remote;             /* required: "https://github.com/moby/buildkit.git" */
        char *ref;                /* branch, tag or commit; NULL: default branch */
        char *subdir;             /* directory of the checkout to use; NULL: root */
        bool keep_git_dir;        /* "keep_git_dir": keep .git in the output */
        char *checksum;           /* commit the ref must resolve to, or NULL */
        char *auth_header_secret; /* secret id for an Authorization header */
        char *auth_token_secret;  /* secret id for a token */
        char *known_ssh_hosts;    /* known_hosts lines for ssh remotes */
        char *mount_ssh_sock;     /* ssh agent id for ssh remotes */
        bool skip_submodules;     /* "skip_submodules" */
};

struct kiln_llb_source {
        enum kiln_llb_source_type type;
        union {
                struct kiln_llb_source_image image;
                struct kiln_llb_source_local local;
                struct kiln_llb_source_http http;
                struct kiln_llb_source_git git;
        };
};

/* ---- exec ------------------------------------------------------------ */

enum kiln_llb_network {
        KILN_LLB_NETWORK_SANDBOX, /* default, omitted in JSON */
        KILN_LLB_NETWORK_HOST,    /* "host" */
        KILN_LLB_NETWORK_NONE,    /* "none" */
};

enum kiln_llb_security {
        KILN_LLB_SECURITY_SANDBOX,  /* default, omitted in JSON */
        KILN_LLB_SECURITY_INSECURE, /* "insecure" */
};

enum kiln_llb_mount_type {
        KILN_LLB_MOUNT_BIND,   /* default, omitted in JSON; "bind" */
        KILN_LLB_MOUNT_CACHE,  /* "cache" */
        KILN_LLB_MOUNT_TMPFS,  /* "tmpfs" */
        KILN_LLB_MOUNT_SECRET, /* "secret" */
        KILN_LLB_MOUNT_SSH,    /* "ssh" */
};

enum kiln_llb_cache_sharing {
        KILN_LLB_CACHE_SHARED,  /* default, omitted in JSON */
        KILN_LLB_CACHE_PRIVATE, /* "private" */
        KILN_LLB_CACHE_LOCKED,  /* "locked" */
};

/*
 * One mount of an exec. mounts[0] is the root filesystem: type bind, target
 * "/". A mount produces an output of the exec iff it is a bind mount, not
 * readonly and not no_output; outputs are numbered 0, 1, ... in mount order
 * (see kiln_llb_exec_mount_output).
 */
struct kiln_llb_mount {
        enum kiln_llb_mount_type type; /* JSON "type" */
        /* bind: the filesystem mounted (scratch allowed); cache: initial
         * contents of a new cache (scratch: empty); others: must be scratch. */
        struct kiln_llb_ref input;
        char *selector; /* bind/cache: path inside input to mount; NULL: its root */
        char *target;   /* required, absolute path in the container */
        bool readonly;
        bool no_output; /* writable bind whose changes are thrown away */
        /* cache: the cache id (required); secret: the secret id (required);
         * ssh: the agent id (required, "default" in Dockerfiles). */
        char *id;
        enum kiln_llb_cache_sharing sharing; /* cache only */
        uint64_t tmpfs_size;                 /* tmpfs only, bytes; 0: no limit */
        /* secret and ssh only: owner and permission bits (<= 07777) of the
         * file or socket. kiln_llb_exec_add_mount sets mode to 0400 for a
         * secret and 0600 for ssh, as BuildKit's defaults. */
        uint32_t uid;
        uint32_t gid;
        uint32_t mode;
        bool optional; /* secret/ssh: a missing secret or agent is not an error */
};

/* A secret exposed as an environment variable (RUN --mount=type=secret,env=). */
struct kiln_llb_secret_env {
        char *id;   /* required */
        char *name; /* required: the variable */
        bool optional;
};

/* An /etc/hosts entry (--add-host). */
struct kiln_llb_host_ip {
        char *host;
        char *ip;
};

struct kiln_llb_ulimit {
        char *name; /* "nofile" */
        int64_t soft;
        int64_t hard;
};

/* Proxy settings passed to the process; not in the digest. */
struct kiln_llb_proxy_env {
        char *http_proxy;
        char *https_proxy;
        char *ftp_proxy;
        char *no_proxy;
        char *all_proxy;
};

struct kiln_llb_exec {
        struct kiln_llb_strv args; /* required, at least one */
        struct kiln_llb_strv env;  /* "KEY=value", ordered as given */
        char *cwd;                 /* absolute; NULL: "/" */
        char *user;                /* "user[:group]"; NULL: root */
        char *hostname;
        enum kiln_llb_network network;   /* JSON "network" */
        enum kiln_llb_security security; /* JSON "security" */
        struct kiln_llb_mount *mounts;   /* see kiln_llb_exec_add_mount */
        size_t n_mounts;
        struct kiln_llb_secret_env *secret_env; /* JSON "secret_env" */
        size_t n_secret_env;
        struct kiln_llb_host_ip *extra_hosts; /* JSON "extra_hosts" */
        size_t n_extra_hosts;
        struct kiln_llb_ulimit *ulimits;
        size_t n_ulimits;
        char *cgroup_parent;
        bool remove_mount_stubs_recursive;
        int32_t *valid_exit_codes; /* empty: only 0 is success */
        size_t n_valid_exit_codes;
        struct kiln_llb_proxy_env proxy_env; /* "proxy_env"; not in the digest */
};

/* ---- file ------------------------------------------------------------ */

enum kiln_llb_file_action_type {
        KILN_LLB_FILE_COPY,    /* "copy" */
        KILN_LLB_FILE_MKDIR,   /* "mkdir" */
        KILN_LLB_FILE_MKFILE,  /* "mkfile" */
        KILN_LLB_FILE_RM,      /* "rm" */
        KILN_LLB_FILE_SYMLINK, /* "symlink" */
};

enum kiln_llb_user_kind {
        KILN_LLB_USER_NONE, /* unchanged (copy: keep; others: root) */
        KILN_LLB_USER_ID,   /* JSON {"id": N} */
        KILN_LLB_USER_NAME, /* JSON {"name": "..."} */
};

/* A user or group, by number or by name. Names are resolved against
 * /etc/passwd and /etc/group of the filesystem the action writes to, as
 * BuildKit resolves them. */
struct kiln_llb_user {
        enum kiln_llb_user_kind kind;
        uint32_t id; /* KILN_LLB_USER_ID */
        char *name;  /* KILN_LLB_USER_NAME, required then */
};

struct kiln_llb_chown {
        struct kiln_llb_user user;
        struct kiln_llb_user group;
};

struct kiln_llb_file_copy {
        struct kiln_llb_ref src; /* filesystem copied from (scratch allowed) */
        char *src_path;          /* required: path or pattern inside src */
        char *dest;              /* required: path in the result */
        struct kiln_llb_chown chown;
        bool has_mode;  /* "mode" present iff set */
        uint32_t mode;  /* permission bits <= 07777 */
        char *mode_str; /* symbolic chmod ("u+x,g-w"); exclusive with has_mode */
        bool follow_symlinks;
        bool dir_copy_contents;       /* copy a directory's contents, not itself */
        bool attempt_unpack;          /* ADD: extract local archives */
        bool create_dest_path;        /* create missing parents of dest */
        bool allow_wildcard;          /* src_path may hold * ? [ ] */
        bool allow_empty_wildcard;    /* a wildcard matching nothing is fine */
        bool always_replace_existing; /* replace dest entries (COPY --link) */
        struct kiln_llb_strv include_patterns;
        struct kiln_llb_strv exclude_patterns;
        struct kiln_llb_strv required_paths; /* COPY --parents */
        bool has_timestamp;                  /* "timestamp" present iff set */
        int64_t timestamp;                   /* unix nanoseconds for created files */
};

struct kiln_llb_file_mkdir {
        char *path;    /* required */
        uint32_t mode; /* <= 07777, e.g. 0755 */
        bool make_parents;
        struct kiln_llb_chown chown;
        bool has_timestamp;
        int64_t timestamp;
};

struct kiln_llb_file_mkfile {
        char *path;    /* required */
        uint32_t mode; /* <= 07777, e.g. 0644 */
        uint8_t *data; /* owned; may hold any bytes; NULL when len is 0 */
        size_t len;
        struct kiln_llb_chown chown;
        bool has_timestamp;
        int64_t timestamp;
};

struct kiln_llb_file_rm {
        char *path; /* required */
        bool allow_not_found;
        bool allow_wildcard;
};

struct kiln_llb_file_symlink {
        char *oldpath; /* required: the link's target text */
        char *newpath; /* required: where the link is created */
        struct kiln_llb_chown chown;
        bool has_timestamp;
        int64_t timestamp;
};

struct kiln_llb_file_action {
        enum kiln_llb_file_action_type type;
        union {
                struct kiln_llb_file_copy copy;
                struct kiln_llb_file_mkdir mkdir;
                struct kiln_llb_file_mkfile mkfile;
                struct kiln_llb_file_rm rm;
                struct kiln_llb_file_symlink symlink;
        };
};

/* Actions applied in order, each to the result of the one before; the first
 * to base. The op has one output: the result of the last action. Paths are
 * resolved inside the filesystem written to (relative ones against "/"). */
struct kiln_llb_file {
        struct kiln_llb_ref base;             /* scratch allowed */
        struct kiln_llb_file_action *actions; /* at least one */
        size_t n_actions;
};

/* ---- merge, diff ------------------------------------------------------ */

/* Layers the inputs on top of each other, later ones winning. At least one
 * input, none scratch (leave scratch inputs out; with one input left, use it
 * directly instead of a merge). One output. */
struct kiln_llb_merge {
        struct kiln_llb_ref *inputs;
        size_t n_inputs;
};

/* The changes that turn lower into upper. One output. */
struct kiln_llb_diff {
        struct kiln_llb_ref lower; /* scratch allowed */
        struct kiln_llb_ref upper; /* scratch allowed */
};

/* ---- op -------------------------------------------------------------- */

enum kiln_llb_op_type {
        KILN_LLB_OP_SOURCE, /* "source" */
        KILN_LLB_OP_EXEC,   /* "exec" */
        KILN_LLB_OP_FILE,   /* "file" */
        KILN_LLB_OP_MERGE,  /* "merge" */
        KILN_LLB_OP_DIFF,   /* "diff" */
};

/* Metadata: never in the digest (JSON "metadata", beside "op"). */
struct kiln_llb_meta {
        /* "description": "llb.customname" is the step's progress name. */
        struct kiln_llb_strmap description;
        /* "progress_group": steps shown together; id NULL: none. */
        char *progress_group_id;
        char *progress_group_name;
        bool progress_group_weak;
        bool ignore_cache;         /* "ignore_cache": --no-cache for this step */
        struct kiln_llb_strv caps; /* "caps": capability ids needed, a set */
};

struct kiln_llb_op {
        enum kiln_llb_op_type type;
        union {
                struct kiln_llb_source source;
                struct kiln_llb_exec exec;
                struct kiln_llb_file file;
                struct kiln_llb_merge merge;
                struct kiln_llb_diff diff;
        };
        struct kiln_llb_platform platform; /* digest-relevant */
        struct kiln_llb_meta meta;         /* not in the digest */
        /* Set by kiln_llb_def_add; read-only. "" before. */
        char digest[KILN_LLB_DIGEST_LEN + 1];
};

/* Returns a new zeroed op of the given type (never NULL; aborts on OOM). */
struct kiln_llb_op *kiln_llb_op_new(enum kiln_llb_op_type type);
/* As kiln_llb_op_new(KILN_LLB_OP_SOURCE) with source.type set. */
struct kiln_llb_op *kiln_llb_op_new_source(enum kiln_llb_source_type type);
/* Frees op and everything it owns (not the ops it references). Must not be
 * called on an op owned by a definition. NULL is fine. Returns NULL. */
struct kiln_llb_op *kiln_llb_op_free(struct kiln_llb_op *op);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_llb_op *, kiln_llb_op_free);

/* Appends a copy of s. */
void kiln_llb_strv_push(struct kiln_llb_strv *v, const char *s);
/* Sets key to a copy of value, replacing an existing value. */
void kiln_llb_strmap_set(struct kiln_llb_strmap *m, const char *key, const char *value);
/* Returns the value for key, or NULL. */
const char *kiln_llb_strmap_get(const struct kiln_llb_strmap *m, const char *key);
/* Sets the platform to copies of the strings (variant may be NULL). */
void kiln_llb_platform_set(struct kiln_llb_platform *p, const char *os, const char *arch,
                           const char *variant);

/* Appends a mount to an exec op: zeroed, type and a copy of target set, mode
 * 0400 (secret) or 0600 (ssh). The pointer is valid until the next append. */
struct kiln_llb_mount *kiln_llb_exec_add_mount(struct kiln_llb_op *op,
                                               enum kiln_llb_mount_type type, const char *target);
/* Appends a secret environment variable (copies id and name). */
void kiln_llb_exec_add_secret_env(struct kiln_llb_op *op, const char *id, const char *name,
                                  bool optional);
/* Appends an extra /etc/hosts entry (copies both). */
void kiln_llb_exec_add_extra_host(struct kiln_llb_op *op, const char *host, const char *ip);
/* Appends a ulimit (copies name). */
void kiln_llb_exec_add_ulimit(struct kiln_llb_op *op, const char *name, int64_t soft, int64_t hard);
/* Appends a valid exit code. */
void kiln_llb_exec_add_valid_exit_code(struct kiln_llb_op *op, int32_t code);
/* Returns the output index mount i produces, or -1 if it produces none. */
int kiln_llb_exec_mount_output(const struct kiln_llb_op *op, size_t i);

/* Appends a zeroed action of the given type to a file op; mkdir gets mode
 * 0755 and mkfile 0644. The pointer is valid until the next append. */
struct kiln_llb_file_action *kiln_llb_file_add_action(struct kiln_llb_op *op,
                                                      enum kiln_llb_file_action_type type);

/* Appends an input to a merge op. */
void kiln_llb_merge_add_input(struct kiln_llb_op *op, struct kiln_llb_ref ref);

/* Parses a chown specification exactly as BuildKit's llb.WithUser:
 * "user[:group]" split at the first ':', each part a decimal id that fits
 * an int32 ("+5" too), "root" (id 0) or else a name; an empty part is id 0
 * (so ":1000" is 0:1000); no group part leaves the group unset. Fills *ret,
 * releasing its previous contents. */
void kiln_llb_chown_parse(const char *spec, struct kiln_llb_chown *ret);
/* Releases what c owns and zeroes it. */
void kiln_llb_chown_release(struct kiln_llb_chown *c);

/* Number of outputs of op (exec: its output mounts; others: 1). */
uint32_t kiln_llb_op_n_outputs(const struct kiln_llb_op *op);

/* ---- definition ------------------------------------------------------ */

/* Returns a new empty definition (never NULL). */
struct kiln_llb_def *kiln_llb_def_new(void);
/* Frees the definition and all its ops. NULL is fine. Returns NULL. */
struct kiln_llb_def *kiln_llb_def_free(struct kiln_llb_def *def);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_llb_def *, kiln_llb_def_free);

/*
 * Validates op, computes its digest and adds it to def. Always takes
 * ownership of op. Every reference in op must point to an op of def (so ops
 * are added in dependency order) and to one of its outputs.
 *
 * If def already holds an op with the same digest, op is freed and the
 * existing one is returned: its metadata is kept, except that ignore_cache
 * becomes true if either asked for it, caps are united and description
 * keys missing from the existing op are added.
 *
 * On success stores the op owned by def in *ret (may be NULL; the pointer
 * stays valid until def is freed) and returns 0; on failure returns -EINVAL (-E2BIG for a passed
 * limit) with *err set
 * ("invalid op: exec.mounts[1].target: path 'x' is not absolute").
 */
int kiln_llb_def_add(struct kiln_llb_def *def, struct kiln_llb_op *op,
                     const struct kiln_llb_op **ret, struct kiln_error **err);

/* Sets the definition's result. ref.op must belong to def (or be NULL for
 * an empty result). Returns 0 or -EINVAL with *err set. */
int kiln_llb_def_set_output(struct kiln_llb_def *def, struct kiln_llb_ref ref,
                            struct kiln_error **err);
/* Whether an output was set, and which (scratch if not). */
bool kiln_llb_def_has_output(const struct kiln_llb_def *def);
struct kiln_llb_ref kiln_llb_def_output(const struct kiln_llb_def *def);

/* Number of ops, and the i-th in dependency order (i < number). */
size_t kiln_llb_def_n_ops(const struct kiln_llb_def *def);
const struct kiln_llb_op *kiln_llb_def_op(const struct kiln_llb_def *def, size_t i);
/* Returns the op with digest ("sha256:<hex>"), or NULL. */
const struct kiln_llb_op *kiln_llb_def_find(const struct kiln_llb_def *def, const char *digest);

/*
 * Writes the definition as JSON, deterministically (keys sorted, 2-space
 * indent, "\n" at the end):
 *   {"ops": [{"digest": "sha256:...", "op": {...}, "metadata": {...}}, ...],
 *    "output": {"digest": "sha256:...", "output": 0}, "version": 1}
 * "metadata" is omitted when empty and "output" when none was set. Stores a
 * NUL-terminated string the caller frees in *ret; returns 0 (never fails
 * except by aborting on OOM).
 */
int kiln_llb_def_to_json(const struct kiln_llb_def *def, char **ret);

/* Writes the canonical form of an op added to a definition (see the top of
 * this file): what its digest is the SHA-256 of. Caller frees *ret. */
int kiln_llb_op_canonical(const struct kiln_llb_op *op, char **ret);

/*
 * Parses the JSON written by kiln_llb_def_to_json (at most
 * KILN_LIMIT_LLB_JSON bytes) into a new definition, validating everything:
 * unknown members, types, ranges, limits, references (which must name an
 * earlier op) and every op's stated digest against its content; an op equal
 * to an earlier one is refused (the writer never repeats one). Returns 0 and
 * stores the definition in *ret, or -EINVAL (-E2BIG for a passed limit)
 * with *err naming the JSON path ("ops[2].op.exec.mounts[0].target: ...")
 * or, for malformed JSON, the position ("1:3: '[' or '{' expected ...").
 * Safe on untrusted input; reentrant.
 */
int kiln_llb_def_from_json(const char *data, size_t len, struct kiln_llb_def **ret,
                           struct kiln_error **err);

/* Whether a and b hold the same ops (including metadata and the fields kept
 * out of digests) in the same order and the same output. */
bool kiln_llb_def_equal(const struct kiln_llb_def *a, const struct kiln_llb_def *b);
