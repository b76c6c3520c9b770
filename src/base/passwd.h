/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * User and group resolution against the /etc/passwd and /etc/group of a
 * container's root tree, with the semantics of the user package runc and
 * BuildKit use (USER in a RUN step, COPY --chown by name).
 *
 * Files are read inside the root directory with openat2(RESOLVE_IN_ROOT):
 * a symbolic link at /etc/passwd resolves within the tree, never outside.
 * A missing file is the same as an empty one. A file larger than
 * KILN_PASSWD_MAX_FILE_SIZE or with a line longer than KILN_PASSWD_MAX_LINE
 * is an error; one that is not a regular file (never opened blocking) is an
 * error for the lookups and counts as missing for kiln_passwd_resolve, as
 * in BuildKit. Lines are split on ':' like runc does:
 * missing fields are empty, unparsable numbers are 0, blank lines (and '#'
 * lines of the group file) are skipped.
 *
 * All functions are thread safe (no shared state).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* BuildKit's maxUserFileBytes. */
#define KILN_PASSWD_MAX_FILE_SIZE (10u << 20)
/* The longest line of either file (runc's group scanner buffer). */
#define KILN_PASSWD_MAX_LINE (1u << 20)
/* Largest uid or gid accepted in a user spec (runc's maxID). */
#define KILN_PASSWD_MAX_ID 2147483647u
/* Most additional groups a user resolves to (the kernel's NGROUPS_MAX). */
#define KILN_PASSWD_MAX_GROUPS 65536u

struct kiln_passwd_user {
        uint32_t uid;
        uint32_t gid;
        uint32_t *gids; /* additional gids, from /etc/group membership; malloc'd */
        size_t n_gids;
        char *home; /* the passwd entry's home, NULL when no entry matched */
};

/* Frees what u holds and empties it; safe on a zeroed or released struct. */
void kiln_passwd_user_release(struct kiln_passwd_user *u);

/*
 * Resolves a user spec the way a RUN step's USER is resolved (BuildKit's
 * oci.GetUser): "", "user", "uid", "user:group", "uid:gid", names or ids on
 * either side. "" is root (uid 0, gid 0), and so is an empty spec that
 * matches nothing. "uid:gid" (both numeric, or "root") is taken as is
 * without reading any file. Otherwise the user is looked up in /etc/passwd
 * below rootfd (a numeric uid without an entry is accepted as is), the group
 * in /etc/group (a numeric gid without an entry is accepted), and when no
 * group is given the user's primary gid is the entry's and the additional
 * gids are the groups listing the user as a member. Errors, with runc's
 * words: "unable to find user NAME: no matching entries in passwd file",
 * "unable to find group NAME: no matching entries in group file", "uids and
 * gids must be in range 0-2147483647", file errors naming the file.
 * *ret is filled only on success (caller releases it). Returns 0 or -errno.
 */
int kiln_passwd_resolve(int rootfd, const char *spec, struct kiln_passwd_user *ret,
                        struct kiln_error **err);

/*
 * kiln_passwd_resolve on file contents in memory instead of a tree: passwd
 * and group are the texts (not NUL-terminated; NULL means the file does not
 * exist). Pure; this is what the fuzz target drives.
 */
int kiln_passwd_resolve_data(const char *spec, const char *passwd, size_t passwd_len,
                             const char *group, size_t group_len, struct kiln_passwd_user *ret,
                             struct kiln_error **err);

/*
 * Looks the user name up in /etc/passwd below rootfd, as COPY --chown does
 * against the destination tree. Returns 1 and sets *ret_uid and *ret_gid
 * (the entry's primary group; ret_gid may be NULL) when found, 0 when the
 * file or the entry does not exist (BuildKit then uses 0), -errno with *err
 * set when the file cannot be read.
 */
int kiln_passwd_lookup_user(int rootfd, const char *name, uint32_t *ret_uid, uint32_t *ret_gid,
                            struct kiln_error **err);

/* As kiln_passwd_lookup_user, for a group name in /etc/group. */
int kiln_passwd_lookup_group(int rootfd, const char *name, uint32_t *ret_gid,
                             struct kiln_error **err);
