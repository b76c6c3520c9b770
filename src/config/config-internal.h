/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The buildkitd.toml schema: one table of keys (schema.c) that drives
 * loading, validation, defaults, the JSON view, "did you mean" hints and the
 * command-line flags (flags.c). Private to src/config.
 */

#include "config/config.h"
#include "config/toml.h"

enum schema_type {
        ST_TABLE,       /* a nested struct: children, base += offset */
        ST_STRING,      /* char * */
        ST_BOOL,        /* bool */
        ST_TRIBOOL,     /* int: -1 unset, 0, 1 */
        ST_INT,         /* int64_t, min..max */
        ST_STRV,        /* char ** at offset, size_t count at aux */
        ST_DURATION,    /* int64_t ns */
        ST_DISK,        /* struct kiln_config_disk_space */
        ST_LABELS,      /* struct kiln_config_label * at offset, count at aux */
        ST_JSON,        /* json_t * (any table, passed through) */
        ST_TABLE_ARRAY, /* array of structs (elem_size) at offset, count at aux */
        ST_MAP,         /* table of structs keyed by a string (registry hosts) */
};

enum {
        K_PRESENCE = 1 << 0,      /* TABLE: bool at aux set when the table appears */
        K_DEPRECATED = 1 << 1,    /* warn with note when set */
        K_CHOICE_CI = 1 << 2,     /* choices match case-insensitively */
        K_MIN_EXCLUSIVE = 1 << 3, /* INT: value must be > min */
        K_JSON_IF_TRUE = 1 << 4,  /* BOOL: leave out of the JSON when false */
        K_UNQUOTED_HINT = 1 << 5, /* MAP: a sub-table in an element means an unquoted dotted key */
};

struct schema_key {
        const char *name;
        enum schema_type type;
        size_t offset;
        size_t aux;
        const struct schema_key *children; /* TABLE, TABLE_ARRAY, MAP */
        size_t n_children;
        size_t elem_size;              /* TABLE_ARRAY, MAP */
        size_t map_key_offset;         /* MAP: char * of the element's key */
        void (*elem_init)(void *elem); /* TABLE_ARRAY, MAP */
        int64_t min, max;              /* INT */
        const char *const *choices;    /* STRING, STRV elements (NULL-terminated) */
        /* STRING, STRV elements: returns 0 or -EINVAL with *why set (malloc'd). */
        int (*check)(const char *value, char **why);
        const char *def; /* STRING: default when unset or "" */
        int64_t def_int; /* INT: default when 0 (unset) */
        unsigned flags;
        const char *note; /* K_DEPRECATED: the warning */
};

/* Where a value came from, for diagnostics. */
struct schema_loc {
        const char *file; /* NULL for a flag */
        unsigned line, col;
        const char *flag; /* "--oci-max-parallelism" when set from a flag */
};

/* Private bookkeeping kept in struct kiln_config (see origins). */
struct kiln_config_origin {
        size_t offset; /* of the field within struct kiln_config */
        char *file;
        unsigned line, col;
        char *flag;
};

extern const struct schema_key schema_root[];
extern const size_t schema_root_n;

/* The key at a dotted path ("worker.oci.max-parallelism"), with the offset
 * of its field from the start of struct kiln_config in *ret_offset. Map and
 * array members cannot be named. NULL if unknown. */
const struct schema_key *schema_find_path(const char *path, size_t *ret_offset);

/* Loads a value given on the command line (as flag) into the key at path,
 * with the same conversions and checks as the file. Problems go to diags
 * (without a position); returns 0 or -EINVAL. */
int schema_load_flag(struct kiln_config *c, const char *path, const struct kiln_toml_value *v,
                     const char *flag, struct kiln_config_diags *diags);

void schema_release(const struct schema_key *keys, size_t n, void *base);

/* Records/looks up where a field of c was set. */
void config_origin_set(struct kiln_config *c, size_t offset, const struct schema_loc *loc);
const struct kiln_config_origin *config_origin_get(const struct kiln_config *c, size_t offset);

/* "did you mean" over a set of names: the best candidate or NULL. */
const char *config_suggest(const char *name, const char *const *candidates, size_t n);

/* Whether this process runs in a user namespace (buildkitd's userns check). */
bool config_running_in_userns(void);

void config_strv_free(char **v, size_t n);
void config_labels_free(struct kiln_config_label *l, size_t n);
void config_registry_init(void *p);
