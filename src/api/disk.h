/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Disk usage and pruning: the /v1/du and /v1/prune wire types, the
 * record filters both sides apply, and the conversions buildx makes from
 * its --filter flags.
 *
 * A record is one thing kilnd keeps on disk under its root that the user
 * may reclaim, with BuildKit's UsageInfo fields:
 *
 *   {"id": "42",                      snapshot id, cache mount or git
 *                                     repository name, or "sha256:..." of a
 *                                     content blob no image or snapshot names
 *    "parents": ["41"],               absent without parent
 *    "createdAt": "2026-11-28T06:40:01.123456789Z",
 *    "lastUsedAt": "...",             absent when never used
 *    "usageCount": 3,
 *    "mutable": false, "inUse": false, "shared": false,
 *    "size": 1234,                    bytes on disk
 *    "description": "[2/3] RUN make",
 *    "type": "regular"}               regular | exec.cachemount |
 *                                     source.local | source.git.checkout
 *
 * GET /v1/du[?filter=F][&until=D]: every record matching the filter F
 * (containerd filter syntax, below) and, with until (a Go duration), not
 * used for at least D. Answer: {"records": [record, ...]}.
 *
 * POST /v1/prune: removes records, as BuildKit's Prune with one PruneInfo.
 *   request  {"all": false, "filter": "type==regular",
 *             "keepDuration": 0,       ns: keep what was used this recently
 *             "reservedSpace": 0, "maxUsedSpace": 0, "minFreeSpace": 0}
 *                                      bytes; all members optional
 *   answer   an NDJSON stream (api.h, "Images"): one
 *              {"type": "record", "time": ..., "record": record}
 *            per removed record, then
 *              {"type": "result", "time": ..., "reclaimed": bytes,
 *               "records": count}
 *            or an "error" event.
 *
 * Filters (containerd's filters.ParseAll as BuildKit applies it): a filter
 * is selectors joined by ',' (all must match); a selector is a field alone
 * (present/true) or field OP value with OP '==', '!=' or '~=' (POSIX
 * extended regular expression search). Values are bare (up to the next
 * ',') or "quoted" with backslash escapes. Fields: id, parents (joined by
 * ';'), description, type, inuse, mutable, immutable, shared, private.
 */

#include "api/api.h"

#define KILN_API_PATH_DU    "/v1/du"
#define KILN_API_PATH_PRUNE "/v1/prune"

/* A filter string. */
#define KILN_API_LIMIT_DISK_FILTER 4096u
/* Selectors in one filter. */
#define KILN_API_LIMIT_DISK_SELECTORS 64u
/* A ~= pattern of a filter. */
#define KILN_API_LIMIT_DISK_PATTERN 256u
/* Groups nested in a ~= pattern. */
#define KILN_API_LIMIT_DISK_PATTERN_DEPTH 4u
/* Records in one du answer (the client refuses more). */
#define KILN_API_LIMIT_DISK_RECORDS 1000000u
/* A du answer, in bytes. */
#define KILN_API_LIMIT_DU_ANSWER (512u << 20)
/* A description, id or type in a record. */
#define KILN_API_LIMIT_DISK_STRING 4096u
/* Parents of one record. */
#define KILN_API_LIMIT_DISK_PARENTS 64u
/* Longest human duration or size text, with its NUL. */
#define KILN_API_HUMAN_SIZE 48u

/* UsageRecordType values. */
#define KILN_API_DISK_TYPE_REGULAR      "regular"
#define KILN_API_DISK_TYPE_CACHEMOUNT   "exec.cachemount"
#define KILN_API_DISK_TYPE_LOCAL        "source.local"
#define KILN_API_DISK_TYPE_GIT_CHECKOUT "source.git.checkout"

struct kiln_api_disk_record {
        char *id;
        char **parents;
        size_t n_parents;
        int64_t created_ns;   /* unix nanoseconds */
        int64_t last_used_ns; /* unix nanoseconds; 0: never used */
        int64_t usage_count;
        bool mutable_;
        bool in_use;
        bool shared;
        int64_t size;
        char *description; /* NULL: none */
        char *type;
};
void kiln_api_disk_record_release(struct kiln_api_disk_record *r);

/* The record object above in *ret (a new reference). 0 or -ENOMEM. */
int kiln_api_disk_record_to_json(const struct kiln_api_disk_record *r, json_t **ret);
/* Reads a record object (unknown keys ignored); -EBADMSG and *err when a
 * member is missing or malformed. *ret is overwritten. */
int kiln_api_disk_record_from_json(const json_t *j, struct kiln_api_disk_record *ret,
                                   struct kiln_error **err);

/* The du answer: {"records": [...]}; *ret a new reference. */
int kiln_api_du_result_to_json(const struct kiln_api_disk_record *r, size_t n, json_t **ret);
/* *ret (malloc'd array, n_ret records; free each with
 * kiln_api_disk_record_release, then the array). -EBADMSG and *err. */
int kiln_api_du_result_from_json(const json_t *j, struct kiln_api_disk_record **ret, size_t *n_ret,
                                 struct kiln_error **err);

/* The du path with its query: "/v1/du", "?filter=..." (URL-encoded) when
 * filter is set and not empty, "until=<duration>" when until_ns > 0. Caller
 * frees. */
char *kiln_api_du_path(const char *filter, int64_t until_ns);

struct kiln_api_prune_request {
        bool all;
        char *filter; /* NULL: everything */
        int64_t keep_duration_ns;
        int64_t reserved_space;
        int64_t max_used_space;
        int64_t min_free_space;
};
void kiln_api_prune_request_release(struct kiln_api_prune_request *r);
int kiln_api_prune_request_to_json(const struct kiln_api_prune_request *r, json_t **ret);
/* Strict: only the members above, non-negative numbers, a filter of at
 * most KILN_API_LIMIT_DISK_FILTER bytes that parses. -EINVAL and *err. */
int kiln_api_prune_request_from_json(const json_t *j, struct kiln_api_prune_request *ret,
                                     struct kiln_error **err);

/* The prune stream's events. time may be NULL (no "time" key). */
int kiln_api_prune_record_event_to_json(const struct kiln_api_disk_record *r, const char *time,
                                        json_t **ret);
int kiln_api_prune_result_to_json(int64_t reclaimed, int64_t records, const char *time,
                                  json_t **ret);

/* ---- filters ---- */

struct kiln_api_disk_filter;

/* Parses a filter (NULL or "" matches everything). -EINVAL and *err naming
 * the filter and the problem. *ret is freed with kiln_api_disk_filter_free. */
int kiln_api_disk_filter_parse(const char *s, struct kiln_api_disk_filter **ret,
                               struct kiln_error **err);
struct kiln_api_disk_filter *kiln_api_disk_filter_free(struct kiln_api_disk_filter *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_api_disk_filter *, kiln_api_disk_filter_free);
/* Whether r matches f (NULL f: true). Thread safe for a shared f. */
bool kiln_api_disk_filter_match(const struct kiln_api_disk_filter *f,
                                const struct kiln_api_disk_record *r);

/* buildx's toBuildkitPruneInfo: --filter values ("key=value", docker's
 * filter flag syntax: the key is trimmed and lower-cased) into one filter
 * string (*ret_filter, malloc'd; NULL without filters) and the "until" (or
 * deprecated "unused-for") duration (*ret_until_ns, 0 without). "id" becomes
 * id~=V, a key ending in '!' or '~' key=V, others key==V. Errors as buildx's
 * ("\"until\" filter expects a duration (e.g., '24h')", conflicting
 * filters, a key given twice, "bad format of filter (expected
 * name=value)"): -EINVAL and *err. */
int kiln_api_disk_filter_from_flags(const char *const *flags, size_t n, char **ret_filter,
                                    int64_t *ret_until_ns, struct kiln_error **err);

/* ---- what the client prints (docker/go-units, Go's time) ---- */

/* units.HumanSize: decimal units, four significant digits ("1.234MB",
 * "0B"). */
void kiln_api_human_size(int64_t bytes, char out[static KILN_API_HUMAN_SIZE]);
/* units.HumanDuration ("Less than a second", "About a minute", "3 hours",
 * "2 weeks"...). */
void kiln_api_human_duration(int64_t ns, char out[static KILN_API_HUMAN_SIZE]);
/* Go's time.Time.String() of a UTC time: "2026-11-28 06:40:01.1234 +0000
 * UTC" (the fraction without trailing zeros, none when whole). */
void kiln_api_go_time_string(int64_t unix_ns, char out[static KILN_API_HUMAN_SIZE]);

/* Go's text/tabwriter (flags 0) over text: cells end in '\t'; a column is
 * as wide as its widest cell plus padding (at least minwidth), computed
 * over each run of consecutive lines that have it; the last cell of a line
 * is not a column. padchar '\t' pads with tabs to multiples of tabwidth
 * (buildx's tables), ' ' with spaces (docker's formatter). Caller frees. */
char *kiln_api_tabwriter(const char *text, size_t minwidth, size_t tabwidth, size_t padding,
                         char padchar);
