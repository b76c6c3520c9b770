/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The build graph: ops, their validation, canonical form and digests, the
 * definition container and its JSON form.
 *
 * One description of every op drives everything: op_to_json() builds the
 * JSON tree of an op (skipping the members kept out of digests when asked),
 * json_write() prints a tree canonically (sorted keys, minimal escaping),
 * and the loader reads the same member names back. The canonical form that
 * digests are computed over is therefore exactly the compact printing of the
 * op as it appears in kiln_llb_def_to_json, minus the digest-free members;
 * llb.h documents it, and the tests pin digests so it cannot drift.
 */

#include <inttypes.h>
#include <jansson.h>

#include "base/buf.h"
#include "base/sha256.h"
#include "llb/llb.h"

/* ---- small helpers ---------------------------------------------------- */

static void strv_release(struct kiln_llb_strv *v)
{
        for (size_t i = 0; i < v->n; i++)
                free(v->v[i]);
        free(v->v);
        *v = (struct kiln_llb_strv){ 0 };
}

void kiln_llb_strv_push(struct kiln_llb_strv *v, const char *s)
{
        v->v = kiln_xreallocarray(v->v, v->n + 1, sizeof(*v->v));
        v->v[v->n++] = kiln_xstrdup(s);
}

static void strmap_release(struct kiln_llb_strmap *m)
{
        for (size_t i = 0; i < m->n; i++) {
                free(m->keys[i]);
                free(m->values[i]);
        }
        free(m->keys);
        free(m->values);
        *m = (struct kiln_llb_strmap){ 0 };
}

void kiln_llb_strmap_set(struct kiln_llb_strmap *m, const char *key, const char *value)
{
        for (size_t i = 0; i < m->n; i++)
                if (streq(m->keys[i], key)) {
                        free(m->values[i]);
                        m->values[i] = kiln_xstrdup(value);
                        return;
                }
        m->keys = kiln_xreallocarray(m->keys, m->n + 1, sizeof(*m->keys));
        m->values = kiln_xreallocarray(m->values, m->n + 1, sizeof(*m->values));
        m->keys[m->n] = kiln_xstrdup(key);
        m->values[m->n] = kiln_xstrdup(value);
        m->n++;
}

const char *kiln_llb_strmap_get(const struct kiln_llb_strmap *m, const char *key)
{
        for (size_t i = 0; i < m->n; i++)
                if (streq(m->keys[i], key))
                        return m->values[i];
        return NULL;
}

static char *xstrdup_or_null(const char *s)
{
        return s ? kiln_xstrdup(s) : NULL;
}

void kiln_llb_platform_set(struct kiln_llb_platform *p, const char *os, const char *arch,
                           const char *variant)
{
        free(p->os);
        free(p->architecture);
        free(p->variant);
        p->os = xstrdup_or_null(os);
        p->architecture = xstrdup_or_null(arch);
        p->variant = xstrdup_or_null(variant);
}

static void platform_release(struct kiln_llb_platform *p)
{
        kiln_llb_platform_set(p, NULL, NULL, NULL);
}

static void user_release(struct kiln_llb_user *u)
{
        free(u->name);
        *u = (struct kiln_llb_user){ 0 };
}

void kiln_llb_chown_release(struct kiln_llb_chown *c)
{
        user_release(&c->user);
        user_release(&c->group);
}

static void source_release(struct kiln_llb_source *s)
{
        switch (s->type) {
        case KILN_LLB_SOURCE_IMAGE:
                free(s->image.ref);
                break;
        case KILN_LLB_SOURCE_LOCAL:
                free(s->local.name);
                strv_release(&s->local.include_patterns);
                strv_release(&s->local.exclude_patterns);
                strv_release(&s->local.follow_paths);
                free(s->local.shared_key_hint);
                free(s->local.session_id);
                break;
        case KILN_LLB_SOURCE_HTTP:
                free(s->http.url);
                free(s->http.checksum);
                free(s->http.filename);
                break;
        case KILN_LLB_SOURCE_GIT:
                free(s->git.remote);
                free(s->git.ref);
                free(s->git.subdir);
                free(s->git.checksum);
                free(s->git.auth_header_secret);
                free(s->git.auth_token_secret);
                free(s->git.known_ssh_hosts);
                free(s->git.mount_ssh_sock);
                break;
        }
}

static void exec_release(struct kiln_llb_exec *e)
{
        strv_release(&e->args);
        strv_release(&e->env);
        free(e->cwd);
        free(e->user);
        free(e->hostname);
        for (size_t i = 0; i < e->n_mounts; i++) {
                free(e->mounts[i].selector);
                free(e->mounts[i].target);
                free(e->mounts[i].id);
        }
        free(e->mounts);
        for (size_t i = 0; i < e->n_secret_env; i++) {
                free(e->secret_env[i].id);
                free(e->secret_env[i].name);
        }
        free(e->secret_env);
        for (size_t i = 0; i < e->n_extra_hosts; i++) {
                free(e->extra_hosts[i].host);
                free(e->extra_hosts[i].ip);
        }
        free(e->extra_hosts);
        for (size_t i = 0; i < e->n_ulimits; i++)
                free(e->ulimits[i].name);
        free(e->ulimits);
        free(e->cgroup_parent);
        free(e->valid_exit_codes);
        free(e->proxy_env.http_proxy);
        free(e->proxy_env.https_proxy);
        free(e->proxy_env.ftp_proxy);
        free(e->proxy_env.no_proxy);
        free(e->proxy_env.all_proxy);
}

static void action_release(struct kiln_llb_file_action *a)
{
        switch (a->type) {
        case KILN_LLB_FILE_COPY:
                free(a->copy.src_path);
                free(a->copy.dest);
                kiln_llb_chown_release(&a->copy.chown);
                free(a->copy.mode_str);
                strv_release(&a->copy.include_patterns);
                strv_release(&a->copy.exclude_patterns);
                strv_release(&a->copy.required_paths);
                break;
        case KILN_LLB_FILE_MKDIR:
                free(a->mkdir.path);
                kiln_llb_chown_release(&a->mkdir.chown);
                break;
        case KILN_LLB_FILE_MKFILE:
                free(a->mkfile.path);
                free(a->mkfile.data);
                kiln_llb_chown_release(&a->mkfile.chown);
                break;
        case KILN_LLB_FILE_RM:
                free(a->rm.path);
                break;
        case KILN_LLB_FILE_SYMLINK:
                free(a->symlink.oldpath);
                free(a->symlink.newpath);
                kiln_llb_chown_release(&a->symlink.chown);
                break;
        }
}

static void meta_release(struct kiln_llb_meta *m)
{
        strmap_release(&m->description);
        free(m->progress_group_id);
        free(m->progress_group_name);
        strv_release(&m->caps);
}

struct kiln_llb_op *kiln_llb_op_new(enum kiln_llb_op_type type)
{
        struct kiln_llb_op *op = kiln_xcalloc(1, sizeof(*op));
        op->type = type;
        return op;
}

struct kiln_llb_op *kiln_llb_op_new_source(enum kiln_llb_source_type type)
{
        struct kiln_llb_op *op = kiln_llb_op_new(KILN_LLB_OP_SOURCE);
        op->source.type = type;
        return op;
}

struct kiln_llb_op *kiln_llb_op_free(struct kiln_llb_op *op)
{
        if (!op)
                return NULL;
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                source_release(&op->source);
                break;
        case KILN_LLB_OP_EXEC:
                exec_release(&op->exec);
                break;
        case KILN_LLB_OP_FILE:
                for (size_t i = 0; i < op->file.n_actions; i++)
                        action_release(&op->file.actions[i]);
                free(op->file.actions);
                break;
        case KILN_LLB_OP_MERGE:
                free(op->merge.inputs);
                break;
        case KILN_LLB_OP_DIFF:
                break;
        }
        platform_release(&op->platform);
        meta_release(&op->meta);
        free(op);
        return NULL;
}

struct kiln_llb_mount *kiln_llb_exec_add_mount(struct kiln_llb_op *op,
                                               enum kiln_llb_mount_type type, const char *target)
{
        struct kiln_llb_exec *e = &op->exec;
        e->mounts = kiln_xreallocarray(e->mounts, e->n_mounts + 1, sizeof(*e->mounts));
        struct kiln_llb_mount *m = &e->mounts[e->n_mounts++];
        *m = (struct kiln_llb_mount){ .type = type, .target = xstrdup_or_null(target) };
        if (type == KILN_LLB_MOUNT_SECRET)
                m->mode = 0400;
        else if (type == KILN_LLB_MOUNT_SSH)
                m->mode = 0600;
        return m;
}

void kiln_llb_exec_add_secret_env(struct kiln_llb_op *op, const char *id, const char *name,
                                  bool optional)
{
        struct kiln_llb_exec *e = &op->exec;
        e->secret_env =
                kiln_xreallocarray(e->secret_env, e->n_secret_env + 1, sizeof(*e->secret_env));
        e->secret_env[e->n_secret_env++] = (struct kiln_llb_secret_env){
                .id = xstrdup_or_null(id), .name = xstrdup_or_null(name), .optional = optional
        };
}

void kiln_llb_exec_add_extra_host(struct kiln_llb_op *op, const char *host, const char *ip)
{
        struct kiln_llb_exec *e = &op->exec;
        e->extra_hosts =
                kiln_xreallocarray(e->extra_hosts, e->n_extra_hosts + 1, sizeof(*e->extra_hosts));
        e->extra_hosts[e->n_extra_hosts++] =
                (struct kiln_llb_host_ip){ .host = xstrdup_or_null(host),
                                           .ip = xstrdup_or_null(ip) };
}

void kiln_llb_exec_add_ulimit(struct kiln_llb_op *op, const char *name, int64_t soft, int64_t hard)
{
        struct kiln_llb_exec *e = &op->exec;
        e->ulimits = kiln_xreallocarray(e->ulimits, e->n_ulimits + 1, sizeof(*e->ulimits));
        e->ulimits[e->n_ulimits++] = (struct kiln_llb_ulimit){ .name = xstrdup_or_null(name),
                                                               .soft = soft,
                                                               .hard = hard };
}

void kiln_llb_exec_add_valid_exit_code(struct kiln_llb_op *op, int32_t code)
{
        struct kiln_llb_exec *e = &op->exec;
        e->valid_exit_codes = kiln_xreallocarray(e->valid_exit_codes, e->n_valid_exit_codes + 1,
                                                 sizeof(*e->valid_exit_codes));
        e->valid_exit_codes[e->n_valid_exit_codes++] = code;
}

static bool mount_has_output(const struct kiln_llb_mount *m)
{
        return m->type == KILN_LLB_MOUNT_BIND && !m->readonly && !m->no_output;
}

int kiln_llb_exec_mount_output(const struct kiln_llb_op *op, size_t i)
{
        if (op->type != KILN_LLB_OP_EXEC || i >= op->exec.n_mounts ||
            !mount_has_output(&op->exec.mounts[i]))
                return -1;
        int n = 0;
        for (size_t j = 0; j < i; j++)
                n += mount_has_output(&op->exec.mounts[j]);
        return n;
}

uint32_t kiln_llb_op_n_outputs(const struct kiln_llb_op *op)
{
        if (op->type != KILN_LLB_OP_EXEC)
                return 1;
        uint32_t n = 0;
        for (size_t i = 0; i < op->exec.n_mounts; i++)
                n += mount_has_output(&op->exec.mounts[i]);
        return n;
}

struct kiln_llb_file_action *kiln_llb_file_add_action(struct kiln_llb_op *op,
                                                      enum kiln_llb_file_action_type type)
{
        struct kiln_llb_file *f = &op->file;
        f->actions = kiln_xreallocarray(f->actions, f->n_actions + 1, sizeof(*f->actions));
        struct kiln_llb_file_action *a = &f->actions[f->n_actions++];
        *a = (struct kiln_llb_file_action){ .type = type };
        if (type == KILN_LLB_FILE_MKDIR)
                a->mkdir.mode = 0755;
        else if (type == KILN_LLB_FILE_MKFILE)
                a->mkfile.mode = 0644;
        return a;
}

void kiln_llb_merge_add_input(struct kiln_llb_op *op, struct kiln_llb_ref ref)
{
        struct kiln_llb_merge *m = &op->merge;
        m->inputs = kiln_xreallocarray(m->inputs, m->n_inputs + 1, sizeof(*m->inputs));
        m->inputs[m->n_inputs++] = ref;
}

/* BuildKit's parseUID: "root", or strconv.ParseInt(s, 10, 32). */
static bool parse_id(const char *s, int64_t *ret)
{
        if (streq(s, "root")) {
                *ret = 0;
                return true;
        }
        const char *p = s;
        bool neg = *p == '-';
        if (*p == '+' || *p == '-')
                p++;
        if (!*p)
                return false;
        int64_t v = 0;
        for (; *p; p++) {
                if (*p < '0' || *p > '9')
                        return false;
                v = v * 10 + (*p - '0');
                if (v > (int64_t) INT32_MAX + 1)
                        return false;
        }
        if (neg)
                v = -v;
        if (v > INT32_MAX)
                return false;
        *ret = v;
        return true;
}

static void user_from_string(struct kiln_llb_user *u, const char *s)
{
        int64_t id;
        /* BuildKit turns an empty name into id 0 when marshalling, and a
         * negative id wraps to uint32 the same way. */
        if (!*s)
                *u = (struct kiln_llb_user){ .kind = KILN_LLB_USER_ID, .id = 0 };
        else if (parse_id(s, &id))
                *u = (struct kiln_llb_user){ .kind = KILN_LLB_USER_ID, .id = (uint32_t) id };
        else
                *u = (struct kiln_llb_user){ .kind = KILN_LLB_USER_NAME, .name = kiln_xstrdup(s) };
}

void kiln_llb_chown_parse(const char *spec, struct kiln_llb_chown *ret)
{
        kiln_llb_chown_release(ret);
        const char *colon = strchr(spec, ':');
        _cleanup_free_ char *user =
                colon ? kiln_xstrndup(spec, (size_t) (colon - spec)) : kiln_xstrdup(spec);
        user_from_string(&ret->user, user);
        if (colon)
                user_from_string(&ret->group, colon + 1);
}

/* ---- validation ------------------------------------------------------- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const char *str, size_t len)
{
        const unsigned char *s = (const unsigned char *) str;
        size_t i = 0;
        while (i < len) {
                unsigned char c = s[i];
                if (c < 0x80) {
                        i++;
                        continue;
                }
                size_t n;
                uint32_t cp, min;
                if ((c & 0xe0) == 0xc0) {
                        n = 2, cp = c & 0x1f, min = 0x80;
                } else if ((c & 0xf0) == 0xe0) {
                        n = 3, cp = c & 0x0f, min = 0x800;
                } else if ((c & 0xf8) == 0xf0) {
                        n = 4, cp = c & 0x07, min = 0x10000;
                } else {
                        return false;
                }
                if (len - i < n)
                        return false;
                for (size_t k = 1; k < n; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + k] & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += n;
        }
        return true;
}

/* The JSON path of the value being checked or read, for messages:
 * "ops[2].op.exec.mounts[0].target". Bounded: kiln's JSON shape is fixed,
 * so paths are short; a too-long path is cut, never overflowed. */
struct jpath {
        char s[256];
        size_t len;
};

static size_t jp_push(struct jpath *p, const char *fmt, ...) _printf_(2, 3);
static size_t jp_push(struct jpath *p, const char *fmt, ...)
{
        size_t mark = p->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(p->s + p->len, sizeof(p->s) - p->len, fmt, ap);
        va_end(ap);
        if (n > 0)
                p->len +=
                        (size_t) n < sizeof(p->s) - p->len ? (size_t) n : sizeof(p->s) - 1 - p->len;
        return mark;
}

/* Appends ".key" (or "key" at the start). */
static size_t jp_key(struct jpath *p, const char *key)
{
        return jp_push(p, "%s%s", p->len ? "." : "", key);
}

static size_t jp_idx(struct jpath *p, size_t i)
{
        return jp_push(p, "[%zu]", i);
}

static void jp_pop(struct jpath *p, size_t mark)
{
        p->len = mark;
        p->s[mark] = '\0';
}

static int jp_fail(struct kiln_error **err, int code, const struct jpath *p, const char *fmt, ...)
        _printf_(4, 5);
static int jp_fail(struct kiln_error **err, int code, const struct jpath *p, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_error_set(err, code, "%s: %s", p->len ? p->s : "(root)", msg);
}

/* As jp_fail, for member key of the current path. */
static int jp_fail_key(struct kiln_error **err, int code, struct jpath *p, const char *key,
                       const char *msg)
{
        size_t m = jp_key(p, key);
        int r = jp_fail(err, code, p, "%s", msg);
        jp_pop(p, m);
        return r;
}

static int check_str_at(const char *s, struct jpath *p, bool required, struct kiln_error **err)
{
        if (!s || !*s)
                return required ? jp_fail(err, -EINVAL, p, "required") : 0;
        size_t len = strlen(s);
        if (len > KILN_LIMIT_LLB_STRING)
                return jp_fail(err, -E2BIG, p, "longer than %u bytes", KILN_LIMIT_LLB_STRING);
        if (!utf8_valid(s, len))
                return jp_fail(err, -EINVAL, p, "not valid UTF-8");
        return 0;
}

static int check_str(const char *s, struct jpath *p, const char *key, bool required,
                     struct kiln_error **err)
{
        size_t m = jp_key(p, key);
        int r = check_str_at(s, p, required, err);
        jp_pop(p, m);
        return r;
}

static int check_abs_path(const char *s, struct jpath *p, const char *key, bool required,
                          struct kiln_error **err)
{
        size_t m = jp_key(p, key);
        int r = check_str_at(s, p, required, err);
        if (r >= 0 && s && *s && s[0] != '/')
                r = jp_fail(err, -EINVAL, p, "path '%s' is not absolute", s);
        jp_pop(p, m);
        return r;
}

static int check_count(size_t n, size_t max, struct jpath *p, const char *key,
                       struct kiln_error **err)
{
        if (n <= max)
                return 0;
        size_t m = jp_key(p, key);
        int r = jp_fail(err, -E2BIG, p, "more than %zu items", max);
        jp_pop(p, m);
        return r;
}

static int check_strv(const struct kiln_llb_strv *v, struct jpath *p, const char *key,
                      struct kiln_error **err)
{
        int r = check_count(v->n, KILN_LIMIT_LLB_LIST, p, key, err);
        if (r < 0)
                return r;
        size_t m = jp_key(p, key);
        for (size_t i = 0; i < v->n && r >= 0; i++) {
                size_t mi = jp_idx(p, i);
                if (!v->v[i])
                        r = jp_fail(err, -EINVAL, p, "NULL string");
                else
                        r = check_str_at(v->v[i], p, false, err);
                jp_pop(p, mi);
        }
        jp_pop(p, m);
        return r;
}

static int check_mode(uint32_t mode, struct jpath *p, const char *key, struct kiln_error **err)
{
        if (mode <= 07777)
                return 0;
        size_t m = jp_key(p, key);
        int r = jp_fail(err, -EINVAL, p, "mode %#o is not in 0..07777", mode);
        jp_pop(p, m);
        return r;
}

static bool is_hex(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

static bool is_digest(const char *s)
{
        return startswith(s, "sha256:") && strlen(s) == KILN_LLB_DIGEST_LEN &&
               is_hex(s + 7, KILN_LLB_DIGEST_LEN - 7);
}

/* ---- the definition container ------------------------------------------- */

struct kiln_llb_def {
        struct kiln_llb_op **ops; /* dependency order */
        size_t n_ops;
        /* Open addressing on the digest: slot holds op index + 1, 0 empty. */
        size_t *table;
        size_t table_size; /* a power of two, or 0 */
        bool has_output;
        struct kiln_llb_ref output;
};

static uint64_t digest_hash(const char *digest)
{
        /* The hex of a SHA-256 is already uniformly spread. */
        uint64_t h = 0;
        for (size_t i = 7; i < 7 + 16 && digest[i]; i++)
                h = (h << 4) |
                    (uint64_t) (digest[i] <= '9' ? digest[i] - '0' : digest[i] - 'a' + 10);
        return h;
}

const struct kiln_llb_op *kiln_llb_def_find(const struct kiln_llb_def *def, const char *digest)
{
        if (!def->table_size || !digest || !is_digest(digest))
                return NULL;
        size_t mask = def->table_size - 1;
        for (size_t i = digest_hash(digest) & mask;; i = (i + 1) & mask) {
                size_t slot = def->table[i];
                if (!slot)
                        return NULL;
                if (streq(def->ops[slot - 1]->digest, digest))
                        return def->ops[slot - 1];
        }
}

static void table_insert(size_t *table, size_t size, const char *digest, size_t index)
{
        size_t mask = size - 1;
        size_t i = digest_hash(digest) & mask;
        while (table[i])
                i = (i + 1) & mask;
        table[i] = index + 1;
}

static void def_append(struct kiln_llb_def *def, struct kiln_llb_op *op)
{
        if ((def->n_ops + 1) * 2 > def->table_size) {
                size_t size = def->table_size ? def->table_size * 2 : 64;
                size_t *table = kiln_xcalloc(size, sizeof(*table));
                for (size_t i = 0; i < def->n_ops; i++)
                        table_insert(table, size, def->ops[i]->digest, i);
                free(def->table);
                def->table = table;
                def->table_size = size;
        }
        def->ops = kiln_xreallocarray(def->ops, def->n_ops + 1, sizeof(*def->ops));
        def->ops[def->n_ops] = op;
        table_insert(def->table, def->table_size, op->digest, def->n_ops);
        def->n_ops++;
}

struct kiln_llb_def *kiln_llb_def_new(void)
{
        return kiln_xcalloc(1, sizeof(struct kiln_llb_def));
}

struct kiln_llb_def *kiln_llb_def_free(struct kiln_llb_def *def)
{
        if (!def)
                return NULL;
        for (size_t i = 0; i < def->n_ops; i++)
                kiln_llb_op_free(def->ops[i]);
        free(def->ops);
        free(def->table);
        free(def);
        return NULL;
}

size_t kiln_llb_def_n_ops(const struct kiln_llb_def *def)
{
        return def->n_ops;
}

const struct kiln_llb_op *kiln_llb_def_op(const struct kiln_llb_def *def, size_t i)
{
        return i < def->n_ops ? def->ops[i] : NULL;
}

static bool def_owns(const struct kiln_llb_def *def, const struct kiln_llb_op *op)
{
        return kiln_llb_def_find(def, op->digest) == op;
}

/* ---- op validation -------------------------------------------------------- */

static int check_ref(const struct kiln_llb_def *def, struct kiln_llb_ref ref, bool allow_scratch,
                     struct jpath *p, const char *key, struct kiln_error **err)
{
        size_t m = jp_key(p, key);
        int r = 0;
        if (!ref.op) {
                if (!allow_scratch)
                        r = jp_fail(err, -EINVAL, p, "scratch is not allowed here");
                else if (ref.output != 0)
                        r = jp_fail(err, -EINVAL, p, "scratch has no output %" PRIu32, ref.output);
        } else if (!def_owns(def, ref.op)) {
                r = jp_fail(err, -EINVAL, p, "refers to an op not in this definition");
        } else if (ref.output >= kiln_llb_op_n_outputs(ref.op)) {
                r = jp_fail(err, -EINVAL, p,
                            "op '%s' has no output %" PRIu32 " (it has %" PRIu32 ")",
                            ref.op->digest, ref.output, kiln_llb_op_n_outputs(ref.op));
        }
        jp_pop(p, m);
        return r;
}

static int check_platform(const struct kiln_llb_platform *pl, struct jpath *p,
                          struct kiln_error **err)
{
        size_t m = jp_key(p, "platform");
        bool has_os = pl->os && *pl->os, has_arch = pl->architecture && *pl->architecture;
        int r;
        if ((r = check_str(pl->os, p, "os", has_arch, err)) < 0 ||
            (r = check_str(pl->architecture, p, "architecture", has_os, err)) < 0 ||
            (r = check_str(pl->variant, p, "variant", false, err)) < 0)
                goto out;
        if (pl->variant && *pl->variant && !has_arch)
                r = jp_fail_key(err, -EINVAL, p, "variant", "set without architecture");
out:
        jp_pop(p, m);
        return r;
}

static int check_user(const struct kiln_llb_user *u, struct jpath *p, const char *key,
                      struct kiln_error **err)
{
        size_t m = jp_key(p, key);
        int r = 0;
        switch (u->kind) {
        case KILN_LLB_USER_NONE:
                if (u->id || u->name)
                        r = jp_fail(err, -EINVAL, p, "id or name set on an unset user");
                break;
        case KILN_LLB_USER_ID:
                if (u->name)
                        r = jp_fail(err, -EINVAL, p, "both id and name set");
                break;
        case KILN_LLB_USER_NAME:
                if (u->id)
                        r = jp_fail(err, -EINVAL, p, "both id and name set");
                else
                        r = check_str(u->name, p, "name", true, err);
                break;
        default:
                r = jp_fail(err, -EINVAL, p, "unknown user kind %d", (int) u->kind);
        }
        jp_pop(p, m);
        return r;
}

static int check_chown(const struct kiln_llb_chown *c, struct jpath *p, struct kiln_error **err)
{
        size_t m = jp_key(p, "chown");
        int r = check_user(&c->user, p, "user", err);
        if (r >= 0)
                r = check_user(&c->group, p, "group", err);
        jp_pop(p, m);
        return r;
}

static int check_source(const struct kiln_llb_source *s, struct jpath *p, struct kiln_error **err)
{
        size_t m = jp_key(p, "source");
        int r = 0;
        switch (s->type) {
        case KILN_LLB_SOURCE_IMAGE: {
                jp_key(p, "image");
                if ((r = check_str(s->image.ref, p, "ref", true, err)) < 0)
                        break;
                if ((unsigned) s->image.resolve_mode > KILN_LLB_RESOLVE_PREFER_LOCAL)
                        r = jp_fail_key(err, -EINVAL, p, "resolve_mode", "unknown resolve mode");
                break;
        }
        case KILN_LLB_SOURCE_LOCAL: {
                const struct kiln_llb_source_local *l = &s->local;
                jp_key(p, "local");
                if ((r = check_str(l->name, p, "name", true, err)) < 0 ||
                    (r = check_strv(&l->include_patterns, p, "include_patterns", err)) < 0 ||
                    (r = check_strv(&l->exclude_patterns, p, "exclude_patterns", err)) < 0 ||
                    (r = check_strv(&l->follow_paths, p, "follow_paths", err)) < 0 ||
                    (r = check_str(l->shared_key_hint, p, "shared_key_hint", false, err)) < 0)
                        break;
                r = check_str(l->session_id, p, "session_id", false, err);
                break;
        }
        case KILN_LLB_SOURCE_HTTP: {
                const struct kiln_llb_source_http *h = &s->http;
                jp_key(p, "http");
                if ((r = check_str(h->url, p, "url", true, err)) < 0 ||
                    (r = check_str(h->checksum, p, "checksum", false, err)) < 0 ||
                    (r = check_str(h->filename, p, "filename", false, err)) < 0 ||
                    (r = check_mode(h->chmod, p, "chmod", err)) < 0)
                        break;
                if (!startswith(h->url, "http://") && !startswith(h->url, "https://")) {
                        size_t k = jp_key(p, "url");
                        r = jp_fail(err, -EINVAL, p, "'%s' is not an http:// or https:// URL",
                                    h->url);
                        jp_pop(p, k);
                } else if (h->checksum && *h->checksum && !is_digest(h->checksum)) {
                        size_t k = jp_key(p, "checksum");
                        r = jp_fail(err, -EINVAL, p, "'%s' is not a sha256 digest", h->checksum);
                        jp_pop(p, k);
                } else if (h->filename && strchr(h->filename, '/')) {
                        size_t k = jp_key(p, "filename");
                        r = jp_fail(err, -EINVAL, p, "'%s' holds a '/'", h->filename);
                        jp_pop(p, k);
                }
                break;
        }
        case KILN_LLB_SOURCE_GIT: {
                const struct kiln_llb_source_git *g = &s->git;
                jp_key(p, "git");
                if ((r = check_str(g->remote, p, "remote", true, err)) < 0 ||
                    (r = check_str(g->ref, p, "ref", false, err)) < 0 ||
                    (r = check_str(g->subdir, p, "subdir", false, err)) < 0 ||
                    (r = check_str(g->checksum, p, "checksum", false, err)) < 0 ||
                    (r = check_str(g->auth_header_secret, p, "auth_header_secret", false, err)) <
                            0 ||
                    (r = check_str(g->auth_token_secret, p, "auth_token_secret", false, err)) < 0 ||
                    (r = check_str(g->known_ssh_hosts, p, "known_ssh_hosts", false, err)) < 0 ||
                    (r = check_str(g->mount_ssh_sock, p, "mount_ssh_sock", false, err)) < 0)
                        break;
                if (g->checksum && *g->checksum &&
                    (strlen(g->checksum) > 64 || !is_hex(g->checksum, strlen(g->checksum)))) {
                        size_t k = jp_key(p, "checksum");
                        r = jp_fail(err, -EINVAL, p, "'%s' is not a hex commit id", g->checksum);
                        jp_pop(p, k);
                }
                break;
        }
        default:
                r = jp_fail(err, -EINVAL, p, "unknown source type %d", (int) s->type);
        }
        jp_pop(p, m);
        return r;
}

static const char *const mount_type_names[] = {
        [KILN_LLB_MOUNT_BIND] = "bind",   [KILN_LLB_MOUNT_CACHE] = "cache",
        [KILN_LLB_MOUNT_TMPFS] = "tmpfs", [KILN_LLB_MOUNT_SECRET] = "secret",
        [KILN_LLB_MOUNT_SSH] = "ssh",
};

static int check_mount(const struct kiln_llb_def *def, const struct kiln_llb_mount *mt, size_t i,
                       struct jpath *p, struct kiln_error **err)
{
        int r;
        if ((unsigned) mt->type > KILN_LLB_MOUNT_SSH)
                return jp_fail_key(err, -EINVAL, p, "type", "unknown mount type");
        const char *tname = mount_type_names[mt->type];
        bool bind = mt->type == KILN_LLB_MOUNT_BIND, cache = mt->type == KILN_LLB_MOUNT_CACHE;
        bool with_id = cache || mt->type == KILN_LLB_MOUNT_SECRET || mt->type == KILN_LLB_MOUNT_SSH;
        bool with_owner = mt->type == KILN_LLB_MOUNT_SECRET || mt->type == KILN_LLB_MOUNT_SSH;

        if ((r = check_abs_path(mt->target, p, "target", true, err)) < 0 ||
            (r = check_str(mt->selector, p, "selector", false, err)) < 0 ||
            (r = check_str(mt->id, p, "id", with_id, err)) < 0 ||
            (r = check_ref(def, mt->input, true, p, "input", err)) < 0 ||
            (r = check_mode(mt->mode, p, "mode", err)) < 0)
                return r;
        if (i == 0 && (!bind || !streq(mt->target, "/")))
                return jp_fail(err, -EINVAL, p,
                               "the first mount must be the root: a bind mount at '/'");

        /* A field that means nothing for this type would still change the
         * digest: refuse it so equal steps get equal digests. */
        const char *stray = NULL;
        if (!bind && !cache && (mt->input.op || mt->selector))
                stray = mt->input.op ? "input" : "selector";
        else if (!bind && mt->no_output)
                stray = "no_output";
        else if (!with_id && mt->id)
                stray = "id";
        else if (!cache && mt->sharing != KILN_LLB_CACHE_SHARED)
                stray = "sharing";
        else if (mt->type != KILN_LLB_MOUNT_TMPFS && mt->tmpfs_size)
                stray = "tmpfs_size";
        else if (!with_owner && (mt->uid || mt->gid || mt->mode || mt->optional))
                stray = mt->uid ? "uid" : mt->gid ? "gid" : mt->mode ? "mode" : "optional";
        if (stray) {
                size_t k = jp_key(p, stray);
                r = jp_fail(err, -EINVAL, p, "not allowed for a %s mount", tname);
                jp_pop(p, k);
                return r;
        }
        if ((unsigned) mt->sharing > KILN_LLB_CACHE_LOCKED)
                return jp_fail_key(err, -EINVAL, p, "sharing", "unknown cache sharing mode");
        if (mt->tmpfs_size > INT64_MAX)
                return jp_fail_key(err, -EINVAL, p, "tmpfs_size", "too large");
        return 0;
}

static int check_exec(const struct kiln_llb_def *def, const struct kiln_llb_exec *e,
                      struct jpath *p, struct kiln_error **err)
{
        size_t m = jp_key(p, "exec");
        int r;
        if ((r = check_strv(&e->args, p, "args", err)) < 0 ||
            (r = check_strv(&e->env, p, "env", err)) < 0 ||
            (r = check_abs_path(e->cwd, p, "cwd", false, err)) < 0 ||
            (r = check_str(e->user, p, "user", false, err)) < 0 ||
            (r = check_str(e->hostname, p, "hostname", false, err)) < 0 ||
            (r = check_str(e->cgroup_parent, p, "cgroup_parent", false, err)) < 0 ||
            (r = check_count(e->n_mounts, KILN_LIMIT_LLB_MOUNTS, p, "mounts", err)) < 0 ||
            (r = check_count(e->n_secret_env, KILN_LIMIT_LLB_LIST, p, "secret_env", err)) < 0 ||
            (r = check_count(e->n_extra_hosts, KILN_LIMIT_LLB_LIST, p, "extra_hosts", err)) < 0 ||
            (r = check_count(e->n_ulimits, KILN_LIMIT_LLB_LIST, p, "ulimits", err)) < 0 ||
            (r = check_count(e->n_valid_exit_codes, KILN_LIMIT_LLB_LIST, p, "valid_exit_codes",
                             err)) < 0)
                goto out;
        if (e->args.n == 0) {
                r = jp_fail_key(err, -EINVAL, p, "args", "required");
                goto out;
        }
        for (size_t i = 0; i < e->env.n; i++) {
                const char *eq = strchr(e->env.v[i], '=');
                if (!eq || eq == e->env.v[i]) {
                        size_t k = jp_push(p, ".env[%zu]", i);
                        r = jp_fail(err, -EINVAL, p, "'%s' is not KEY=value", e->env.v[i]);
                        jp_pop(p, k);
                        goto out;
                }
        }
        if ((unsigned) e->network > KILN_LLB_NETWORK_NONE) {
                r = jp_fail_key(err, -EINVAL, p, "network", "unknown network mode");
                goto out;
        }
        if ((unsigned) e->security > KILN_LLB_SECURITY_INSECURE) {
                r = jp_fail_key(err, -EINVAL, p, "security", "unknown security mode");
                goto out;
        }
        if (e->n_mounts == 0) {
                r = jp_fail_key(err, -EINVAL, p, "mounts", "required: the root mount at '/'");
                goto out;
        }
        for (size_t i = 0; i < e->n_mounts; i++) {
                size_t k = jp_push(p, ".mounts[%zu]", i);
                r = check_mount(def, &e->mounts[i], i, p, err);
                jp_pop(p, k);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < e->n_secret_env; i++) {
                size_t k = jp_push(p, ".secret_env[%zu]", i);
                if ((r = check_str(e->secret_env[i].id, p, "id", true, err)) >= 0)
                        r = check_str(e->secret_env[i].name, p, "name", true, err);
                jp_pop(p, k);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < e->n_extra_hosts; i++) {
                size_t k = jp_push(p, ".extra_hosts[%zu]", i);
                if ((r = check_str(e->extra_hosts[i].host, p, "host", true, err)) >= 0)
                        r = check_str(e->extra_hosts[i].ip, p, "ip", true, err);
                jp_pop(p, k);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < e->n_ulimits; i++) {
                size_t k = jp_push(p, ".ulimits[%zu]", i);
                r = check_str(e->ulimits[i].name, p, "name", true, err);
                jp_pop(p, k);
                if (r < 0)
                        goto out;
        }
        {
                const struct kiln_llb_proxy_env *px = &e->proxy_env;
                size_t k = jp_key(p, "proxy_env");
                if ((r = check_str(px->http_proxy, p, "http_proxy", false, err)) >= 0 &&
                    (r = check_str(px->https_proxy, p, "https_proxy", false, err)) >= 0 &&
                    (r = check_str(px->ftp_proxy, p, "ftp_proxy", false, err)) >= 0 &&
                    (r = check_str(px->no_proxy, p, "no_proxy", false, err)) >= 0)
                        r = check_str(px->all_proxy, p, "all_proxy", false, err);
                jp_pop(p, k);
        }
out:
        jp_pop(p, m);
        return r;
}

/* A symbolic chmod as BuildKit accepts it: comma-separated clauses of
 * [ugoa]* followed by one or more [-+=] each with [rwxXst]* or one of ugo. */
static bool mode_str_valid(const char *s)
{
        for (;;) {
                while (*s && strchr("ugoa", *s))
                        s++;
                if (!*s || !strchr("+-=", *s))
                        return false;
                while (*s && strchr("+-=", *s)) {
                        s++;
                        if (*s && strchr("ugo", *s))
                                s++;
                        else
                                while (*s && strchr("rwxXst", *s))
                                        s++;
                }
                if (!*s)
                        return true;
                if (*s != ',')
                        return false;
                s++;
        }
}

static int check_timestamp(bool has, int64_t ts, struct jpath *p, struct kiln_error **err)
{
        if (!has && ts)
                return jp_fail_key(err, -EINVAL, p, "timestamp", "set without has_timestamp");
        return 0;
}

static int check_action(const struct kiln_llb_def *def, const struct kiln_llb_file_action *a,
                        struct jpath *p, struct kiln_error **err)
{
        int r = 0;
        size_t m;
        switch (a->type) {
        case KILN_LLB_FILE_COPY: {
                const struct kiln_llb_file_copy *c = &a->copy;
                m = jp_key(p, "copy");
                if ((r = check_ref(def, c->src, true, p, "src", err)) < 0 ||
                    (r = check_str(c->src_path, p, "src_path", true, err)) < 0 ||
                    (r = check_str(c->dest, p, "dest", true, err)) < 0 ||
                    (r = check_chown(&c->chown, p, err)) < 0 ||
                    (r = check_mode(c->mode, p, "mode", err)) < 0 ||
                    (r = check_str(c->mode_str, p, "mode_str", false, err)) < 0 ||
                    (r = check_strv(&c->include_patterns, p, "include_patterns", err)) < 0 ||
                    (r = check_strv(&c->exclude_patterns, p, "exclude_patterns", err)) < 0 ||
                    (r = check_strv(&c->required_paths, p, "required_paths", err)) < 0 ||
                    (r = check_timestamp(c->has_timestamp, c->timestamp, p, err)) < 0)
                        break;
                if (!c->has_mode && c->mode)
                        r = jp_fail_key(err, -EINVAL, p, "mode", "set without has_mode");
                else if (c->mode_str && *c->mode_str && c->has_mode)
                        r = jp_fail_key(err, -EINVAL, p, "mode_str", "set together with mode");
                else if (c->mode_str && *c->mode_str && !mode_str_valid(c->mode_str)) {
                        size_t k = jp_key(p, "mode_str");
                        r = jp_fail(err, -EINVAL, p, "'%s' is not a symbolic mode", c->mode_str);
                        jp_pop(p, k);
                }
                break;
        }
        case KILN_LLB_FILE_MKDIR:
                m = jp_key(p, "mkdir");
                if ((r = check_str(a->mkdir.path, p, "path", true, err)) < 0 ||
                    (r = check_mode(a->mkdir.mode, p, "mode", err)) < 0 ||
                    (r = check_chown(&a->mkdir.chown, p, err)) < 0)
                        break;
                r = check_timestamp(a->mkdir.has_timestamp, a->mkdir.timestamp, p, err);
                break;
        case KILN_LLB_FILE_MKFILE:
                m = jp_key(p, "mkfile");
                if ((r = check_str(a->mkfile.path, p, "path", true, err)) < 0 ||
                    (r = check_mode(a->mkfile.mode, p, "mode", err)) < 0 ||
                    (r = check_chown(&a->mkfile.chown, p, err)) < 0 ||
                    (r = check_timestamp(a->mkfile.has_timestamp, a->mkfile.timestamp, p, err)) < 0)
                        break;
                if (a->mkfile.len > KILN_LIMIT_LLB_MKFILE_DATA)
                        r = jp_fail_key(err, -E2BIG, p, "data", "larger than the mkfile limit");
                else if (a->mkfile.len && !a->mkfile.data)
                        r = jp_fail_key(err, -EINVAL, p, "data", "NULL with a non-zero length");
                break;
        case KILN_LLB_FILE_RM:
                m = jp_key(p, "rm");
                r = check_str(a->rm.path, p, "path", true, err);
                break;
        case KILN_LLB_FILE_SYMLINK:
                m = jp_key(p, "symlink");
                if ((r = check_str(a->symlink.oldpath, p, "oldpath", true, err)) < 0 ||
                    (r = check_str(a->symlink.newpath, p, "newpath", true, err)) < 0 ||
                    (r = check_chown(&a->symlink.chown, p, err)) < 0)
                        break;
                r = check_timestamp(a->symlink.has_timestamp, a->symlink.timestamp, p, err);
                break;
        default:
                return jp_fail(err, -EINVAL, p, "unknown file action type %d", (int) a->type);
        }
        jp_pop(p, m);
        return r;
}

static int check_file(const struct kiln_llb_def *def, const struct kiln_llb_file *f,
                      struct jpath *p, struct kiln_error **err)
{
        size_t m = jp_key(p, "file");
        int r;
        if ((r = check_ref(def, f->base, true, p, "base", err)) < 0 ||
            (r = check_count(f->n_actions, KILN_LIMIT_LLB_FILE_ACTIONS, p, "actions", err)) < 0)
                goto out;
        if (f->n_actions == 0) {
                r = jp_fail_key(err, -EINVAL, p, "actions", "required");
                goto out;
        }
        for (size_t i = 0; i < f->n_actions && r >= 0; i++) {
                size_t k = jp_push(p, ".actions[%zu]", i);
                r = check_action(def, &f->actions[i], p, err);
                jp_pop(p, k);
        }
out:
        jp_pop(p, m);
        return r;
}

static int check_op_body(const struct kiln_llb_def *def, const struct kiln_llb_op *op,
                         struct jpath *p, struct kiln_error **err)
{
        int r = check_platform(&op->platform, p, err);
        if (r < 0)
                return r;
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                return check_source(&op->source, p, err);
        case KILN_LLB_OP_EXEC:
                return check_exec(def, &op->exec, p, err);
        case KILN_LLB_OP_FILE:
                return check_file(def, &op->file, p, err);
        case KILN_LLB_OP_MERGE: {
                size_t m = jp_key(p, "merge");
                r = check_count(op->merge.n_inputs, KILN_LIMIT_LLB_LIST, p, "inputs", err);
                if (r >= 0 && op->merge.n_inputs == 0)
                        r = jp_fail_key(err, -EINVAL, p, "inputs", "required");
                for (size_t i = 0; i < op->merge.n_inputs && r >= 0; i++) {
                        char key[40];
                        (void) snprintf(key, sizeof(key), "inputs[%zu]", i);
                        r = check_ref(def, op->merge.inputs[i], false, p, key, err);
                }
                jp_pop(p, m);
                return r;
        }
        case KILN_LLB_OP_DIFF: {
                size_t m = jp_key(p, "diff");
                if ((r = check_ref(def, op->diff.lower, true, p, "lower", err)) >= 0)
                        r = check_ref(def, op->diff.upper, true, p, "upper", err);
                jp_pop(p, m);
                return r;
        }
        }
        return jp_fail(err, -EINVAL, p, "unknown op type %d", (int) op->type);
}

static int check_meta(const struct kiln_llb_meta *md, struct jpath *p, struct kiln_error **err)
{
        size_t m = jp_key(p, "metadata");
        int r = check_count(md->description.n, KILN_LIMIT_LLB_LIST, p, "description", err);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < md->description.n; i++) {
                size_t k = jp_key(p, "description");
                if ((r = check_str(md->description.keys[i], p, "(key)", true, err)) >= 0)
                        r = check_str(md->description.values[i] ? md->description.values[i] : "", p,
                                      md->description.keys[i], false, err);
                jp_pop(p, k);
                if (r < 0)
                        goto out;
        }
        {
                size_t k = jp_key(p, "progress_group");
                if ((r = check_str(md->progress_group_id, p, "id", false, err)) >= 0)
                        r = check_str(md->progress_group_name, p, "name", false, err);
                if (r >= 0 && !md->progress_group_id &&
                    (md->progress_group_name || md->progress_group_weak))
                        r = jp_fail_key(err, -EINVAL, p, "id", "required");
                jp_pop(p, k);
                if (r < 0)
                        goto out;
        }
        r = check_strv(&md->caps, p, "caps", err);
out:
        jp_pop(p, m);
        return r;
}

/* ---- JSON form -------------------------------------------------------------- */

/* Output buffers are unbounded (SIZE_MAX): they hold kiln's own output,
 * never input, and allocation failure aborts, so appends cannot fail. */
static void bput(struct kiln_buf *b, const void *p, size_t n)
{
        (void) kiln_buf_append(b, p, n);
}

static void bputs(struct kiln_buf *b, const char *s)
{
        bput(b, s, strlen(s));
}

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const uint8_t *p, size_t n)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                if (i + 1 < n)
                        v |= (uint32_t) p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                char q[4] = { b64_alphabet[(v >> 18) & 63], b64_alphabet[(v >> 12) & 63],
                              i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=',
                              i + 2 < n ? b64_alphabet[v & 63] : '=' };
                bput(&b, q, 4);
        }
        return kiln_buf_steal(&b);
}

static int b64_value(char c)
{
        const char *p = c ? strchr(b64_alphabet, c) : NULL;
        return p ? (int) (p - b64_alphabet) : -1;
}

/* Strict standard base64 with padding, as base64_encode writes it: the
 * canonical form must have one spelling per byte string. */
static bool base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len)
{
        if (len % 4)
                return false;
        uint8_t *out = len ? kiln_xmalloc(len / 4 * 3) : NULL;
        size_t o = 0;
        for (size_t i = 0; i < len; i += 4) {
                int v[4];
                bool last = i + 4 == len;
                for (size_t k = 0; k < 4; k++) {
                        v[k] = s[i + k] == '=' && last && k >= 2 ? -2 : b64_value(s[i + k]);
                        if (v[k] == -1)
                                goto fail;
                }
                if (v[2] == -2 && v[3] != -2)
                        goto fail;
                uint32_t x = ((uint32_t) v[0] << 18) | ((uint32_t) v[1] << 12) |
                             ((uint32_t) (v[2] < 0 ? 0 : v[2]) << 6) |
                             (uint32_t) (v[3] < 0 ? 0 : v[3]);
                out[o++] = (uint8_t) (x >> 16);
                if (v[2] >= 0)
                        out[o++] = (uint8_t) (x >> 8);
                else if (x & 0xffff)
                        goto fail; /* non-zero padding bits: not canonical */
                if (v[3] >= 0)
                        out[o++] = (uint8_t) x;
                else if (v[2] >= 0 && (x & 0xff))
                        goto fail;
        }
        *ret = out;
        *ret_len = o;
        return true;
fail:
        free(out);
        return false;
}

static json_t *jstr(const char *s)
{
        /* Strings were validated as UTF-8 before any op reaches here. */
        return json_stringn_nocheck(s, strlen(s));
}

static void js_str(json_t *o, const char *key, const char *s)
{
        if (s && *s)
                json_object_set_new_nocheck(o, key, jstr(s));
}

static void js_bool(json_t *o, const char *key, bool b)
{
        if (b)
                json_object_set_new_nocheck(o, key, json_true());
}

static void js_int(json_t *o, const char *key, int64_t v)
{
        if (v)
                json_object_set_new_nocheck(o, key, json_integer(v));
}

static void js_strv(json_t *o, const char *key, const struct kiln_llb_strv *v)
{
        if (!v->n)
                return;
        json_t *a = json_array();
        for (size_t i = 0; i < v->n; i++)
                json_array_append_new(a, jstr(v->v[i]));
        json_object_set_new_nocheck(o, key, a);
}

/* Sets key to child unless child is empty. Takes the reference. */
static void js_obj(json_t *o, const char *key, json_t *child)
{
        if (json_object_size(child) || json_array_size(child))
                json_object_set_new_nocheck(o, key, child);
        else
                json_decref(child);
}

static json_t *ref_to_json(struct kiln_llb_ref ref)
{
        json_t *o = json_object();
        if (ref.op) {
                js_str(o, "digest", ref.op->digest);
                js_int(o, "output", ref.output);
        }
        return o;
}

static void js_ref(json_t *o, const char *key, struct kiln_llb_ref ref)
{
        if (ref.op)
                json_object_set_new_nocheck(o, key, ref_to_json(ref));
}

static void js_enum(json_t *o, const char *key, unsigned v, const char *const *names)
{
        if (v)
                json_object_set_new_nocheck(o, key, jstr(names[v]));
}

static json_t *user_to_json(const struct kiln_llb_user *u)
{
        json_t *o = json_object();
        if (u->kind == KILN_LLB_USER_ID)
                json_object_set_new_nocheck(o, "id", json_integer(u->id));
        else if (u->kind == KILN_LLB_USER_NAME)
                js_str(o, "name", u->name);
        return o;
}

static void js_chown(json_t *o, const struct kiln_llb_chown *c)
{
        json_t *j = json_object();
        js_obj(j, "user", user_to_json(&c->user));
        js_obj(j, "group", user_to_json(&c->group));
        js_obj(o, "chown", j);
}

static void js_timestamp(json_t *o, bool has, int64_t ts)
{
        if (has)
                json_object_set_new_nocheck(o, "timestamp", json_integer(ts));
}

static const char *const resolve_mode_names[] = { NULL, "pull", "local" };
static const char *const network_names[] = { NULL, "host", "none" };
static const char *const security_names[] = { NULL, "insecure" };
static const char *const sharing_names[] = { NULL, "private", "locked" };
static const char *const source_type_names[] = { "image", "local", "http", "git" };
static const char *const action_type_names[] = { "copy", "mkdir", "mkfile", "rm", "symlink" };

static json_t *source_to_json(const struct kiln_llb_source *s, bool full)
{
        json_t *j = json_object();
        switch (s->type) {
        case KILN_LLB_SOURCE_IMAGE:
                js_str(j, "ref", s->image.ref);
                js_enum(j, "resolve_mode", s->image.resolve_mode, resolve_mode_names);
                js_int(j, "layer_limit", s->image.layer_limit);
                break;
        case KILN_LLB_SOURCE_LOCAL:
                js_str(j, "name", s->local.name);
                js_strv(j, "include_patterns", &s->local.include_patterns);
                js_strv(j, "exclude_patterns", &s->local.exclude_patterns);
                js_strv(j, "follow_paths", &s->local.follow_paths);
                if (full) {
                        js_str(j, "shared_key_hint", s->local.shared_key_hint);
                        js_str(j, "session_id", s->local.session_id);
                }
                break;
        case KILN_LLB_SOURCE_HTTP:
                js_str(j, "url", s->http.url);
                js_str(j, "checksum", s->http.checksum);
                js_str(j, "filename", s->http.filename);
                js_int(j, "chmod", s->http.chmod);
                js_int(j, "uid", s->http.uid);
                js_int(j, "gid", s->http.gid);
                break;
        case KILN_LLB_SOURCE_GIT:
                js_str(j, "remote", s->git.remote);
                js_str(j, "ref", s->git.ref);
                js_str(j, "subdir", s->git.subdir);
                js_bool(j, "keep_git_dir", s->git.keep_git_dir);
                js_str(j, "checksum", s->git.checksum);
                js_str(j, "auth_header_secret", s->git.auth_header_secret);
                js_str(j, "auth_token_secret", s->git.auth_token_secret);
                js_str(j, "known_ssh_hosts", s->git.known_ssh_hosts);
                js_str(j, "mount_ssh_sock", s->git.mount_ssh_sock);
                js_bool(j, "skip_submodules", s->git.skip_submodules);
                break;
        }
        json_t *o = json_object();
        /* Kept even when empty: the member names the source type. */
        json_object_set_new_nocheck(o, source_type_names[s->type], j);
        return o;
}

static json_t *exec_to_json(const struct kiln_llb_exec *e, bool full)
{
        json_t *j = json_object();
        js_strv(j, "args", &e->args);
        js_strv(j, "env", &e->env);
        js_str(j, "cwd", e->cwd);
        js_str(j, "user", e->user);
        js_str(j, "hostname", e->hostname);
        js_enum(j, "network", e->network, network_names);
        js_enum(j, "security", e->security, security_names);
        json_t *mounts = json_array();
        for (size_t i = 0; i < e->n_mounts; i++) {
                const struct kiln_llb_mount *m = &e->mounts[i];
                json_t *mj = json_object();
                if (m->type != KILN_LLB_MOUNT_BIND)
                        json_object_set_new_nocheck(mj, "type", jstr(mount_type_names[m->type]));
                js_ref(mj, "input", m->input);
                js_str(mj, "selector", m->selector);
                js_str(mj, "target", m->target);
                js_bool(mj, "readonly", m->readonly);
                js_bool(mj, "no_output", m->no_output);
                js_str(mj, "id", m->id);
                js_enum(mj, "sharing", m->sharing, sharing_names);
                js_int(mj, "tmpfs_size", (int64_t) m->tmpfs_size);
                js_int(mj, "uid", m->uid);
                js_int(mj, "gid", m->gid);
                js_int(mj, "mode", m->mode);
                js_bool(mj, "optional", m->optional);
                json_array_append_new(mounts, mj);
        }
        js_obj(j, "mounts", mounts);
        json_t *se = json_array();
        for (size_t i = 0; i < e->n_secret_env; i++) {
                json_t *sj = json_object();
                js_str(sj, "id", e->secret_env[i].id);
                js_str(sj, "name", e->secret_env[i].name);
                js_bool(sj, "optional", e->secret_env[i].optional);
                json_array_append_new(se, sj);
        }
        js_obj(j, "secret_env", se);
        json_t *hosts = json_array();
        for (size_t i = 0; i < e->n_extra_hosts; i++) {
                json_t *hj = json_object();
                js_str(hj, "host", e->extra_hosts[i].host);
                /* BuildKit's exec cache key blanks the address: a new IP for
                 * the same --add-host name does not rerun the step. */
                if (full)
                        js_str(hj, "ip", e->extra_hosts[i].ip);
                json_array_append_new(hosts, hj);
        }
        js_obj(j, "extra_hosts", hosts);
        json_t *ul = json_array();
        for (size_t i = 0; i < e->n_ulimits; i++) {
                json_t *uj = json_object();
                js_str(uj, "name", e->ulimits[i].name);
                js_int(uj, "soft", e->ulimits[i].soft);
                js_int(uj, "hard", e->ulimits[i].hard);
                json_array_append_new(ul, uj);
        }
        js_obj(j, "ulimits", ul);
        js_str(j, "cgroup_parent", e->cgroup_parent);
        js_bool(j, "remove_mount_stubs_recursive", e->remove_mount_stubs_recursive);
        json_t *codes = json_array();
        for (size_t i = 0; i < e->n_valid_exit_codes; i++)
                json_array_append_new(codes, json_integer(e->valid_exit_codes[i]));
        js_obj(j, "valid_exit_codes", codes);
        if (full) {
                json_t *px = json_object();
                js_str(px, "http_proxy", e->proxy_env.http_proxy);
                js_str(px, "https_proxy", e->proxy_env.https_proxy);
                js_str(px, "ftp_proxy", e->proxy_env.ftp_proxy);
                js_str(px, "no_proxy", e->proxy_env.no_proxy);
                js_str(px, "all_proxy", e->proxy_env.all_proxy);
                js_obj(j, "proxy_env", px);
        }
        return j;
}

static json_t *action_to_json(const struct kiln_llb_file_action *a)
{
        json_t *j = json_object();
        switch (a->type) {
        case KILN_LLB_FILE_COPY: {
                const struct kiln_llb_file_copy *c = &a->copy;
                js_ref(j, "src", c->src);
                js_str(j, "src_path", c->src_path);
                js_str(j, "dest", c->dest);
                js_chown(j, &c->chown);
                if (c->has_mode)
                        json_object_set_new_nocheck(j, "mode", json_integer(c->mode));
                js_str(j, "mode_str", c->mode_str);
                js_bool(j, "follow_symlinks", c->follow_symlinks);
                js_bool(j, "dir_copy_contents", c->dir_copy_contents);
                js_bool(j, "attempt_unpack", c->attempt_unpack);
                js_bool(j, "create_dest_path", c->create_dest_path);
                js_bool(j, "allow_wildcard", c->allow_wildcard);
                js_bool(j, "allow_empty_wildcard", c->allow_empty_wildcard);
                js_bool(j, "always_replace_existing", c->always_replace_existing);
                js_strv(j, "include_patterns", &c->include_patterns);
                js_strv(j, "exclude_patterns", &c->exclude_patterns);
                js_strv(j, "required_paths", &c->required_paths);
                js_timestamp(j, c->has_timestamp, c->timestamp);
                break;
        }
        case KILN_LLB_FILE_MKDIR:
                js_str(j, "path", a->mkdir.path);
                js_int(j, "mode", a->mkdir.mode);
                js_bool(j, "make_parents", a->mkdir.make_parents);
                js_chown(j, &a->mkdir.chown);
                js_timestamp(j, a->mkdir.has_timestamp, a->mkdir.timestamp);
                break;
        case KILN_LLB_FILE_MKFILE:
                js_str(j, "path", a->mkfile.path);
                js_int(j, "mode", a->mkfile.mode);
                if (a->mkfile.len) {
                        char *b64 = base64_encode(a->mkfile.data, a->mkfile.len);
                        json_object_set_new_nocheck(j, "data", jstr(b64));
                        free(b64);
                }
                js_chown(j, &a->mkfile.chown);
                js_timestamp(j, a->mkfile.has_timestamp, a->mkfile.timestamp);
                break;
        case KILN_LLB_FILE_RM:
                js_str(j, "path", a->rm.path);
                js_bool(j, "allow_not_found", a->rm.allow_not_found);
                js_bool(j, "allow_wildcard", a->rm.allow_wildcard);
                break;
        case KILN_LLB_FILE_SYMLINK:
                js_str(j, "oldpath", a->symlink.oldpath);
                js_str(j, "newpath", a->symlink.newpath);
                js_chown(j, &a->symlink.chown);
                js_timestamp(j, a->symlink.has_timestamp, a->symlink.timestamp);
                break;
        }
        json_t *o = json_object();
        json_object_set_new_nocheck(o, action_type_names[a->type], j);
        return o;
}

/* The op body; full adds the members kept out of the digest. */
static json_t *op_to_json(const struct kiln_llb_op *op, bool full)
{
        json_t *o = json_object();
        json_t *pl = json_object();
        js_str(pl, "os", op->platform.os);
        js_str(pl, "architecture", op->platform.architecture);
        js_str(pl, "variant", op->platform.variant);
        js_obj(o, "platform", pl);
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                json_object_set_new_nocheck(o, "source", source_to_json(&op->source, full));
                break;
        case KILN_LLB_OP_EXEC:
                json_object_set_new_nocheck(o, "exec", exec_to_json(&op->exec, full));
                break;
        case KILN_LLB_OP_FILE: {
                json_t *f = json_object();
                js_ref(f, "base", op->file.base);
                json_t *actions = json_array();
                for (size_t i = 0; i < op->file.n_actions; i++)
                        json_array_append_new(actions, action_to_json(&op->file.actions[i]));
                js_obj(f, "actions", actions);
                json_object_set_new_nocheck(o, "file", f);
                break;
        }
        case KILN_LLB_OP_MERGE: {
                json_t *m = json_object();
                json_t *inputs = json_array();
                for (size_t i = 0; i < op->merge.n_inputs; i++)
                        json_array_append_new(inputs, ref_to_json(op->merge.inputs[i]));
                js_obj(m, "inputs", inputs);
                json_object_set_new_nocheck(o, "merge", m);
                break;
        }
        case KILN_LLB_OP_DIFF: {
                json_t *d = json_object();
                js_ref(d, "lower", op->diff.lower);
                js_ref(d, "upper", op->diff.upper);
                json_object_set_new_nocheck(o, "diff", d);
                break;
        }
        }
        return o;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static json_t *meta_to_json(const struct kiln_llb_meta *md)
{
        json_t *o = json_object();
        json_t *d = json_object();
        for (size_t i = 0; i < md->description.n; i++)
                json_object_set_new_nocheck(d, md->description.keys[i],
                                            jstr(md->description.values[i]));
        js_obj(o, "description", d);
        json_t *pg = json_object();
        js_str(pg, "id", md->progress_group_id);
        js_str(pg, "name", md->progress_group_name);
        js_bool(pg, "weak", md->progress_group_weak);
        js_obj(o, "progress_group", pg);
        js_bool(o, "ignore_cache", md->ignore_cache);
        if (md->caps.n) {
                /* A set: written sorted, once each. */
                _cleanup_free_ const char **caps =
                        kiln_xreallocarray(NULL, md->caps.n, sizeof(*caps));
                for (size_t i = 0; i < md->caps.n; i++)
                        caps[i] = md->caps.v[i];
                qsort(caps, md->caps.n, sizeof(*caps), cmp_str);
                json_t *a = json_array();
                for (size_t i = 0; i < md->caps.n; i++)
                        if (i == 0 || !streq(caps[i], caps[i - 1]))
                                json_array_append_new(a, jstr(caps[i]));
                json_object_set_new_nocheck(o, "caps", a);
        }
        return o;
}

/* Writes a JSON string: only '"', '\\' and bytes below 0x20 are escaped
 * (the latter as \u00xx), so every string has exactly one spelling. */
static void json_write_string(struct kiln_buf *b, const char *s, size_t len)
{
        bputs(b, "\"");
        size_t start = 0;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c >= 0x20 && c != '"' && c != '\\')
                        continue;
                bput(b, s + start, i - start);
                if (c == '"')
                        bputs(b, "\\\"");
                else if (c == '\\')
                        bputs(b, "\\\\");
                else
                        (void) kiln_buf_printf(b, "\\u%04x", c);
                start = i + 1;
        }
        bput(b, s + start, len - start);
        bputs(b, "\"");
}

/* Writes v canonically: members sorted bytewise by key, minimal escapes.
 * indent < 0: no whitespace at all (the digest form); otherwise that many
 * spaces per level and ": " after keys. */
static void json_write(const json_t *v, struct kiln_buf *b, int indent, int level)
{
        switch (json_typeof(v)) {
        case JSON_OBJECT: {
                size_t n = json_object_size(v);
                if (!n) {
                        bputs(b, "{}");
                        return;
                }
                _cleanup_free_ const char **keys = kiln_xreallocarray(NULL, n, sizeof(*keys));
                size_t i = 0;
                const char *key;
                json_t *child;
                json_object_foreach ((json_t *) v, key, child)
                        keys[i++] = key;
                qsort(keys, n, sizeof(*keys), cmp_str);
                bputs(b, "{");
                for (i = 0; i < n; i++) {
                        if (i)
                                bputs(b, ",");
                        if (indent >= 0)
                                (void) kiln_buf_printf(b, "\n%*s", indent * (level + 1), "");
                        json_write_string(b, keys[i], strlen(keys[i]));
                        bputs(b, indent >= 0 ? ": " : ":");
                        json_write(json_object_get(v, keys[i]), b, indent, level + 1);
                }
                if (indent >= 0)
                        (void) kiln_buf_printf(b, "\n%*s", indent * level, "");
                bputs(b, "}");
                return;
        }
        case JSON_ARRAY: {
                size_t n = json_array_size(v);
                if (!n) {
                        bputs(b, "[]");
                        return;
                }
                bputs(b, "[");
                for (size_t i = 0; i < n; i++) {
                        if (i)
                                bputs(b, ",");
                        if (indent >= 0)
                                (void) kiln_buf_printf(b, "\n%*s", indent * (level + 1), "");
                        json_write(json_array_get(v, i), b, indent, level + 1);
                }
                if (indent >= 0)
                        (void) kiln_buf_printf(b, "\n%*s", indent * level, "");
                bputs(b, "]");
                return;
        }
        case JSON_STRING:
                json_write_string(b, json_string_value(v), json_string_length(v));
                return;
        case JSON_INTEGER:
                (void) kiln_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return;
        case JSON_TRUE:
                bputs(b, "true");
                return;
        case JSON_FALSE:
                bputs(b, "false");
                return;
        case JSON_NULL:
        case JSON_REAL:
                /* Never built by kiln. */
                bputs(b, "null");
                return;
        }
}

int kiln_llb_op_canonical(const struct kiln_llb_op *op, char **ret)
{
        json_t *j = op_to_json(op, false);
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        json_write(j, &b, -1, 0);
        json_decref(j);
        *ret = kiln_buf_steal(&b);
        return 0;
}

static void op_compute_digest(struct kiln_llb_op *op)
{
        _cleanup_free_ char *c = NULL;
        (void) kiln_llb_op_canonical(op, &c);
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_hex(c, strlen(c), hex);
        (void) snprintf(op->digest, sizeof(op->digest), "sha256:%s", hex);
}

/* ---- adding ops ------------------------------------------------------------- */

static void meta_merge(struct kiln_llb_meta *into, const struct kiln_llb_meta *from)
{
        into->ignore_cache |= from->ignore_cache;
        for (size_t i = 0; i < from->caps.n; i++) {
                bool have = false;
                for (size_t k = 0; k < into->caps.n && !have; k++)
                        have = streq(into->caps.v[k], from->caps.v[i]);
                if (!have)
                        kiln_llb_strv_push(&into->caps, from->caps.v[i]);
        }
        for (size_t i = 0; i < from->description.n; i++)
                if (!kiln_llb_strmap_get(&into->description, from->description.keys[i]))
                        kiln_llb_strmap_set(&into->description, from->description.keys[i],
                                            from->description.values[i]);
}

/* Validates and adds op (always taken). body and meta are the paths used in
 * messages. A duplicate is merged into the existing op when dedupe is set,
 * an error otherwise. */
static int def_insert(struct kiln_llb_def *def, struct kiln_llb_op *op, struct jpath *body,
                      struct jpath *meta, bool dedupe, const struct kiln_llb_op **ret,
                      struct kiln_error **err)
{
        _cleanup_(kiln_llb_op_freep) struct kiln_llb_op *o = op;
        int r;

        if ((r = check_op_body(def, o, body, err)) < 0 || (r = check_meta(&o->meta, meta, err)) < 0)
                return r;
        op_compute_digest(o);
        struct kiln_llb_op *existing = (struct kiln_llb_op *) kiln_llb_def_find(def, o->digest);
        if (existing) {
                if (!dedupe)
                        return jp_fail(err, -EINVAL, body, "same op as an earlier one ('%s')",
                                       o->digest);
                meta_merge(&existing->meta, &o->meta);
                if (ret)
                        *ret = existing;
                return 0;
        }
        if (def->n_ops >= KILN_LIMIT_LLB_OPS)
                return kiln_error_set(err, -E2BIG, "definition has more than %u ops",
                                      KILN_LIMIT_LLB_OPS);
        if (ret)
                *ret = o;
        def_append(def, TAKE_PTR(o));
        return 0;
}

int kiln_llb_def_add(struct kiln_llb_def *def, struct kiln_llb_op *op,
                     const struct kiln_llb_op **ret, struct kiln_error **err)
{
        struct jpath body = { 0 }, meta = { 0 };
        if (!op)
                return kiln_error_set(err, -EINVAL, "invalid op: NULL");
        int r = def_insert(def, op, &body, &meta, true, ret, err);
        /* Everything but the definition's own size limit is about the op. */
        if (r < 0 && !(r == -E2BIG && def->n_ops >= KILN_LIMIT_LLB_OPS))
                return kiln_error_wrap(err, "invalid op");
        return r;
}

int kiln_llb_def_set_output(struct kiln_llb_def *def, struct kiln_llb_ref ref,
                            struct kiln_error **err)
{
        struct jpath p = { 0 };
        int r = check_ref(def, ref, true, &p, "output", err);
        if (r < 0)
                return r;
        def->has_output = true;
        def->output = ref;
        return 0;
}

bool kiln_llb_def_has_output(const struct kiln_llb_def *def)
{
        return def->has_output;
}

struct kiln_llb_ref kiln_llb_def_output(const struct kiln_llb_def *def)
{
        return def->output;
}

int kiln_llb_def_to_json(const struct kiln_llb_def *def, char **ret)
{
        json_t *root = json_object();
        json_t *ops = json_array();
        for (size_t i = 0; i < def->n_ops; i++) {
                const struct kiln_llb_op *op = def->ops[i];
                json_t *e = json_object();
                json_object_set_new_nocheck(e, "digest", jstr(op->digest));
                json_object_set_new_nocheck(e, "op", op_to_json(op, true));
                js_obj(e, "metadata", meta_to_json(&op->meta));
                json_array_append_new(ops, e);
        }
        json_object_set_new_nocheck(root, "ops", ops);
        if (def->has_output)
                json_object_set_new_nocheck(root, "output", ref_to_json(def->output));
        json_object_set_new_nocheck(root, "version", json_integer(1));
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        json_write(root, &b, 2, 0);
        bputs(&b, "\n");
        json_decref(root);
        *ret = kiln_buf_steal(&b);
        return 0;
}

bool kiln_llb_def_equal(const struct kiln_llb_def *a, const struct kiln_llb_def *b)
{
        /* The JSON form holds every field, the digest-free ones included. */
        _cleanup_free_ char *ja = NULL, *jb = NULL;
        (void) kiln_llb_def_to_json(a, &ja);
        (void) kiln_llb_def_to_json(b, &jb);
        return streq(ja, jb);
}

/* ---- loading ------------------------------------------------------------------ */

struct loader {
        struct kiln_llb_def *def;
        struct jpath p;
        struct kiln_error **err;
};

/* Checks that v is an object whose members are all in keys (NULL-ended). */
static int lj_object(struct loader *L, const json_t *v, const char *const *keys)
{
        if (!json_is_object(v))
                return jp_fail(L->err, -EINVAL, &L->p, "expected an object");
        const char *key;
        json_t *child;
        json_object_foreach ((json_t *) v, key, child) {
                bool known = false;
                for (size_t i = 0; keys[i] && !known; i++)
                        known = streq(keys[i], key);
                if (!known)
                        return jp_fail(L->err, -EINVAL, &L->p, "unknown member '%s'", key);
        }
        return 0;
}

static int lj_string_value(struct loader *L, const json_t *v, bool null_if_empty, char **out)
{
        if (!json_is_string(v))
                return jp_fail(L->err, -EINVAL, &L->p, "expected a string");
        size_t len = json_string_length(v);
        const char *s = json_string_value(v);
        if (len > KILN_LIMIT_LLB_STRING)
                return jp_fail(L->err, -E2BIG, &L->p, "longer than %u bytes",
                               KILN_LIMIT_LLB_STRING);
        if (strlen(s) != len)
                return jp_fail(L->err, -EINVAL, &L->p, "holds a NUL byte");
        free(*out);
        *out = null_if_empty && !len ? NULL : kiln_xstrdup(s);
        return 0;
}

/* Optional string member; "" reads as absent, as the writer omits it. */
static int lj_str(struct loader *L, const json_t *o, const char *key, char **out)
{
        const json_t *v = json_object_get(o, key);
        if (!v)
                return 0;
        size_t m = jp_key(&L->p, key);
        int r = lj_string_value(L, v, true, out);
        jp_pop(&L->p, m);
        return r;
}

static int lj_bool(struct loader *L, const json_t *o, const char *key, bool *out)
{
        const json_t *v = json_object_get(o, key);
        if (!v)
                return 0;
        if (!json_is_boolean(v))
                return jp_fail_key(L->err, -EINVAL, &L->p, key, "expected true or false");
        *out = json_is_true(v);
        return 0;
}

static int lj_int_value(struct loader *L, const json_t *v, int64_t min, int64_t max, int64_t *out)
{
        if (!json_is_integer(v))
                return jp_fail(L->err, -EINVAL, &L->p, "expected an integer");
        json_int_t x = json_integer_value(v);
        if (x < min || x > max)
                return jp_fail(L->err, -EINVAL, &L->p,
                               "%" JSON_INTEGER_FORMAT " is out of range %" PRId64 "..%" PRId64, x,
                               min, max);
        *out = x;
        return 0;
}

static int lj_int(struct loader *L, const json_t *o, const char *key, int64_t min, int64_t max,
                  bool *present, int64_t *out)
{
        const json_t *v = json_object_get(o, key);
        if (present)
                *present = v != NULL;
        if (!v)
                return 0;
        size_t m = jp_key(&L->p, key);
        int r = lj_int_value(L, v, min, max, out);
        jp_pop(&L->p, m);
        return r;
}

static int lj_u32(struct loader *L, const json_t *o, const char *key, uint32_t max, uint32_t *out)
{
        int64_t v = *out;
        int r = lj_int(L, o, key, 0, max, NULL, &v);
        *out = (uint32_t) v;
        return r;
}

/* Optional array member: *arr is NULL when absent. */
static int lj_array(struct loader *L, const json_t *o, const char *key, size_t max, json_t **arr)
{
        json_t *v = json_object_get(o, key);
        *arr = NULL;
        if (!v)
                return 0;
        if (!json_is_array(v))
                return jp_fail_key(L->err, -EINVAL, &L->p, key, "expected an array");
        if (json_array_size(v) > max) {
                size_t m = jp_key(&L->p, key);
                int r = jp_fail(L->err, -E2BIG, &L->p, "more than %zu items", max);
                jp_pop(&L->p, m);
                return r;
        }
        *arr = v;
        return 0;
}

static int lj_strv(struct loader *L, const json_t *o, const char *key, struct kiln_llb_strv *out)
{
        json_t *a;
        int r = lj_array(L, o, key, KILN_LIMIT_LLB_LIST, &a);
        if (r < 0 || !a)
                return r;
        size_t m = jp_key(&L->p, key);
        for (size_t i = 0; i < json_array_size(a) && r >= 0; i++) {
                size_t mi = jp_idx(&L->p, i);
                char *s = NULL;
                r = lj_string_value(L, json_array_get(a, i), false, &s);
                if (r >= 0) {
                        out->v = kiln_xreallocarray(out->v, out->n + 1, sizeof(*out->v));
                        out->v[out->n++] = s;
                }
                jp_pop(&L->p, mi);
        }
        jp_pop(&L->p, m);
        return r;
}

/* An enum member: names[0] (the default, may be NULL) or another name. */
static int lj_enum(struct loader *L, const json_t *o, const char *key, const char *const *names,
                   size_t n, unsigned *out)
{
        const json_t *v = json_object_get(o, key);
        if (!v)
                return 0;
        size_t m = jp_key(&L->p, key);
        int r;
        if (!json_is_string(v)) {
                r = jp_fail(L->err, -EINVAL, &L->p, "expected a string");
        } else {
                size_t i = 0;
                while (i < n && !(names[i] && streq(names[i], json_string_value(v))))
                        i++;
                if (i < n) {
                        *out = (unsigned) i;
                        r = 0;
                } else {
                        r = jp_fail(L->err, -EINVAL, &L->p, "unknown value '%s'",
                                    json_string_value(v));
                }
        }
        jp_pop(&L->p, m);
        return r;
}

static int lj_ref_value(struct loader *L, const json_t *v, struct kiln_llb_ref *out)
{
        static const char *const keys[] = { "digest", "output", NULL };
        int r = lj_object(L, v, keys);
        if (r < 0)
                return r;
        _cleanup_free_ char *digest = NULL;
        int64_t output = 0;
        bool has_output;
        if ((r = lj_str(L, v, "digest", &digest)) < 0 ||
            (r = lj_int(L, v, "output", 0, UINT32_MAX, &has_output, &output)) < 0)
                return r;
        if (!digest) {
                if (has_output)
                        return jp_fail_key(L->err, -EINVAL, &L->p, "digest", "required");
                *out = (struct kiln_llb_ref){ 0 };
                return 0;
        }
        const struct kiln_llb_op *op = kiln_llb_def_find(L->def, digest);
        if (!op) {
                size_t m = jp_key(&L->p, "digest");
                r = jp_fail(L->err, -EINVAL, &L->p, "no earlier op '%s'", digest);
                jp_pop(&L->p, m);
                return r;
        }
        *out = (struct kiln_llb_ref){ op, (uint32_t) output };
        return 0;
}

static int lj_ref(struct loader *L, const json_t *o, const char *key, struct kiln_llb_ref *out)
{
        const json_t *v = json_object_get(o, key);
        if (!v)
                return 0;
        size_t m = jp_key(&L->p, key);
        int r = lj_ref_value(L, v, out);
        jp_pop(&L->p, m);
        return r;
}

static int lj_user(struct loader *L, const json_t *o, const char *key, struct kiln_llb_user *u)
{
        static const char *const keys[] = { "id", "name", NULL };
        const json_t *v = json_object_get(o, key);
        if (!v)
                return 0;
        size_t m = jp_key(&L->p, key);
        int r = lj_object(L, v, keys);
        if (r >= 0 && json_object_get(v, "id") && json_object_get(v, "name"))
                r = jp_fail(L->err, -EINVAL, &L->p, "both id and name set");
        if (r >= 0 && json_object_get(v, "id")) {
                u->kind = KILN_LLB_USER_ID;
                r = lj_u32(L, v, "id", UINT32_MAX, &u->id);
        } else if (r >= 0 && json_object_get(v, "name")) {
                u->kind = KILN_LLB_USER_NAME;
                r = lj_str(L, v, "name", &u->name);
        }
        jp_pop(&L->p, m);
        return r;
}

static int lj_chown(struct loader *L, const json_t *o, struct kiln_llb_chown *c)
{
        static const char *const keys[] = { "user", "group", NULL };
        const json_t *v = json_object_get(o, "chown");
        if (!v)
                return 0;
        size_t m = jp_key(&L->p, "chown");
        int r = lj_object(L, v, keys);
        if (r >= 0 && (r = lj_user(L, v, "user", &c->user)) >= 0)
                r = lj_user(L, v, "group", &c->group);
        jp_pop(&L->p, m);
        return r;
}

static int lj_timestamp(struct loader *L, const json_t *o, bool *has, int64_t *ts)
{
        return lj_int(L, o, "timestamp", INT64_MIN, INT64_MAX, has, ts);
}

/* The single member of a one-member object naming a variant: {"copy": {...}}. */
static int lj_variant(struct loader *L, const json_t *v, const char *const *names, size_t n,
                      unsigned *type, json_t **body)
{
        if (!json_is_object(v))
                return jp_fail(L->err, -EINVAL, &L->p, "expected an object");
        if (json_object_size(v) != 1)
                return jp_fail(L->err, -EINVAL, &L->p, "expected exactly one member of %s%s%s%s%s",
                               names[0], n > 1 ? ", " : "", n > 1 ? names[1] : "",
                               n > 2 ? ", ..." : "", "");
        const char *key;
        json_t *child;
        json_object_foreach ((json_t *) v, key, child) {
                for (size_t i = 0; i < n; i++)
                        if (streq(names[i], key)) {
                                *type = (unsigned) i;
                                *body = child;
                                return 0;
                        }
                return jp_fail(L->err, -EINVAL, &L->p, "unknown member '%s'", key);
        }
        return 0; /* not reached */
}

static int lj_source(struct loader *L, const json_t *v, struct kiln_llb_op *op)
{
        unsigned type;
        json_t *j;
        int r = lj_variant(L, v, source_type_names, ELEMENTSOF(source_type_names), &type, &j);
        if (r < 0)
                return r;
        op->source.type = type;
        size_t m = jp_key(&L->p, source_type_names[type]);
        switch (op->source.type) {
        case KILN_LLB_SOURCE_IMAGE: {
                static const char *const keys[] = { "ref", "resolve_mode", "layer_limit", NULL };
                struct kiln_llb_source_image *s = &op->source.image;
                unsigned mode = 0;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_str(L, j, "ref", &s->ref)) < 0 ||
                    (r = lj_enum(L, j, "resolve_mode", resolve_mode_names,
                                 ELEMENTSOF(resolve_mode_names), &mode)) < 0)
                        break;
                s->resolve_mode = mode;
                r = lj_u32(L, j, "layer_limit", UINT32_MAX, &s->layer_limit);
                break;
        }
        case KILN_LLB_SOURCE_LOCAL: {
                static const char *const keys[] = { "name",
                                                    "include_patterns",
                                                    "exclude_patterns",
                                                    "follow_paths",
                                                    "shared_key_hint",
                                                    "session_id",
                                                    NULL };
                struct kiln_llb_source_local *s = &op->source.local;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_str(L, j, "name", &s->name)) < 0 ||
                    (r = lj_strv(L, j, "include_patterns", &s->include_patterns)) < 0 ||
                    (r = lj_strv(L, j, "exclude_patterns", &s->exclude_patterns)) < 0 ||
                    (r = lj_strv(L, j, "follow_paths", &s->follow_paths)) < 0 ||
                    (r = lj_str(L, j, "shared_key_hint", &s->shared_key_hint)) < 0)
                        break;
                r = lj_str(L, j, "session_id", &s->session_id);
                break;
        }
        case KILN_LLB_SOURCE_HTTP: {
                static const char *const keys[] = { "url", "checksum", "filename", "chmod",
                                                    "uid", "gid",      NULL };
                struct kiln_llb_source_http *s = &op->source.http;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_str(L, j, "url", &s->url)) < 0 ||
                    (r = lj_str(L, j, "checksum", &s->checksum)) < 0 ||
                    (r = lj_str(L, j, "filename", &s->filename)) < 0 ||
                    (r = lj_u32(L, j, "chmod", 07777, &s->chmod)) < 0 ||
                    (r = lj_u32(L, j, "uid", UINT32_MAX, &s->uid)) < 0)
                        break;
                r = lj_u32(L, j, "gid", UINT32_MAX, &s->gid);
                break;
        }
        case KILN_LLB_SOURCE_GIT: {
                static const char *const keys[] = { "remote",
                                                    "ref",
                                                    "subdir",
                                                    "keep_git_dir",
                                                    "checksum",
                                                    "auth_header_secret",
                                                    "auth_token_secret",
                                                    "known_ssh_hosts",
                                                    "mount_ssh_sock",
                                                    "skip_submodules",
                                                    NULL };
                struct kiln_llb_source_git *s = &op->source.git;
                if ((r = lj_object(L, j, keys)) < 0 ||
                    (r = lj_str(L, j, "remote", &s->remote)) < 0 ||
                    (r = lj_str(L, j, "ref", &s->ref)) < 0 ||
                    (r = lj_str(L, j, "subdir", &s->subdir)) < 0 ||
                    (r = lj_bool(L, j, "keep_git_dir", &s->keep_git_dir)) < 0 ||
                    (r = lj_str(L, j, "checksum", &s->checksum)) < 0 ||
                    (r = lj_str(L, j, "auth_header_secret", &s->auth_header_secret)) < 0 ||
                    (r = lj_str(L, j, "auth_token_secret", &s->auth_token_secret)) < 0 ||
                    (r = lj_str(L, j, "known_ssh_hosts", &s->known_ssh_hosts)) < 0 ||
                    (r = lj_str(L, j, "mount_ssh_sock", &s->mount_ssh_sock)) < 0)
                        break;
                r = lj_bool(L, j, "skip_submodules", &s->skip_submodules);
                break;
        }
        }
        jp_pop(&L->p, m);
        return r;
}

static int lj_mount(struct loader *L, const json_t *j, struct kiln_llb_mount *mt)
{
        static const char *const keys[] = { "type",       "input",     "selector", "target",
                                            "readonly",   "no_output", "id",       "sharing",
                                            "tmpfs_size", "uid",       "gid",      "mode",
                                            "optional",   NULL };
        unsigned type = 0, sharing = 0;
        int64_t size = 0;
        int r;
        if ((r = lj_object(L, j, keys)) < 0 ||
            (r = lj_enum(L, j, "type", mount_type_names, ELEMENTSOF(mount_type_names), &type)) <
                    0 ||
            (r = lj_ref(L, j, "input", &mt->input)) < 0 ||
            (r = lj_str(L, j, "selector", &mt->selector)) < 0 ||
            (r = lj_str(L, j, "target", &mt->target)) < 0 ||
            (r = lj_bool(L, j, "readonly", &mt->readonly)) < 0 ||
            (r = lj_bool(L, j, "no_output", &mt->no_output)) < 0 ||
            (r = lj_str(L, j, "id", &mt->id)) < 0 ||
            (r = lj_enum(L, j, "sharing", sharing_names, ELEMENTSOF(sharing_names), &sharing)) <
                    0 ||
            (r = lj_int(L, j, "tmpfs_size", 0, INT64_MAX, NULL, &size)) < 0 ||
            (r = lj_u32(L, j, "uid", UINT32_MAX, &mt->uid)) < 0 ||
            (r = lj_u32(L, j, "gid", UINT32_MAX, &mt->gid)) < 0 ||
            (r = lj_u32(L, j, "mode", 07777, &mt->mode)) < 0 ||
            (r = lj_bool(L, j, "optional", &mt->optional)) < 0)
                return r;
        mt->type = type;
        mt->sharing = sharing;
        mt->tmpfs_size = (uint64_t) size;
        return 0;
}

/* Reads array member key of o, calling item() on each element with the
 * path at "key[i]". */
static int lj_each(struct loader *L, const json_t *o, const char *key, size_t max, void *ctx,
                   int (*item)(struct loader *L, const json_t *v, void *ctx))
{
        json_t *a;
        int r = lj_array(L, o, key, max, &a);
        if (r < 0 || !a)
                return r;
        size_t m = jp_key(&L->p, key);
        for (size_t i = 0; i < json_array_size(a) && r >= 0; i++) {
                size_t mi = jp_idx(&L->p, i);
                r = item(L, json_array_get(a, i), ctx);
                jp_pop(&L->p, mi);
        }
        jp_pop(&L->p, m);
        return r;
}

static int lj_mount_item(struct loader *L, const json_t *v, void *ctx)
{
        struct kiln_llb_op *op = ctx;
        /* Appended first so a half-read mount is freed with the op. */
        struct kiln_llb_mount *mt = kiln_llb_exec_add_mount(op, KILN_LLB_MOUNT_BIND, NULL);
        return lj_mount(L, v, mt);
}

static int lj_secret_env_item(struct loader *L, const json_t *v, void *ctx)
{
        static const char *const keys[] = { "id", "name", "optional", NULL };
        struct kiln_llb_op *op = ctx;
        int r = lj_object(L, v, keys);
        if (r < 0)
                return r;
        kiln_llb_exec_add_secret_env(op, NULL, NULL, false);
        struct kiln_llb_secret_env *s = &op->exec.secret_env[op->exec.n_secret_env - 1];
        if ((r = lj_str(L, v, "id", &s->id)) < 0 || (r = lj_str(L, v, "name", &s->name)) < 0)
                return r;
        return lj_bool(L, v, "optional", &s->optional);
}

static int lj_host_item(struct loader *L, const json_t *v, void *ctx)
{
        static const char *const keys[] = { "host", "ip", NULL };
        struct kiln_llb_op *op = ctx;
        int r = lj_object(L, v, keys);
        if (r < 0)
                return r;
        kiln_llb_exec_add_extra_host(op, NULL, NULL);
        struct kiln_llb_host_ip *h = &op->exec.extra_hosts[op->exec.n_extra_hosts - 1];
        if ((r = lj_str(L, v, "host", &h->host)) < 0)
                return r;
        return lj_str(L, v, "ip", &h->ip);
}

static int lj_ulimit_item(struct loader *L, const json_t *v, void *ctx)
{
        static const char *const keys[] = { "name", "soft", "hard", NULL };
        struct kiln_llb_op *op = ctx;
        int r = lj_object(L, v, keys);
        if (r < 0)
                return r;
        kiln_llb_exec_add_ulimit(op, NULL, 0, 0);
        struct kiln_llb_ulimit *u = &op->exec.ulimits[op->exec.n_ulimits - 1];
        if ((r = lj_str(L, v, "name", &u->name)) < 0 ||
            (r = lj_int(L, v, "soft", INT64_MIN, INT64_MAX, NULL, &u->soft)) < 0)
                return r;
        return lj_int(L, v, "hard", INT64_MIN, INT64_MAX, NULL, &u->hard);
}

static int lj_exit_code_item(struct loader *L, const json_t *v, void *ctx)
{
        int64_t code = 0;
        int r = lj_int_value(L, v, INT32_MIN, INT32_MAX, &code);
        if (r >= 0)
                kiln_llb_exec_add_valid_exit_code(ctx, (int32_t) code);
        return r;
}

static int lj_exec(struct loader *L, const json_t *j, struct kiln_llb_op *op)
{
        static const char *const keys[] = { "args",
                                            "env",
                                            "cwd",
                                            "user",
                                            "hostname",
                                            "network",
                                            "security",
                                            "mounts",
                                            "secret_env",
                                            "extra_hosts",
                                            "ulimits",
                                            "cgroup_parent",
                                            "remove_mount_stubs_recursive",
                                            "valid_exit_codes",
                                            "proxy_env",
                                            NULL };
        static const char *const proxy_keys[] = { "http_proxy", "https_proxy", "ftp_proxy",
                                                  "no_proxy",   "all_proxy",   NULL };
        struct kiln_llb_exec *e = &op->exec;
        size_t m = jp_key(&L->p, "exec");
        unsigned network = 0, security = 0;
        int r;
        if ((r = lj_object(L, j, keys)) < 0 || (r = lj_strv(L, j, "args", &e->args)) < 0 ||
            (r = lj_strv(L, j, "env", &e->env)) < 0 || (r = lj_str(L, j, "cwd", &e->cwd)) < 0 ||
            (r = lj_str(L, j, "user", &e->user)) < 0 ||
            (r = lj_str(L, j, "hostname", &e->hostname)) < 0 ||
            (r = lj_enum(L, j, "network", network_names, ELEMENTSOF(network_names), &network)) <
                    0 ||
            (r = lj_enum(L, j, "security", security_names, ELEMENTSOF(security_names), &security)) <
                    0 ||
            (r = lj_each(L, j, "mounts", KILN_LIMIT_LLB_MOUNTS, op, lj_mount_item)) < 0 ||
            (r = lj_each(L, j, "secret_env", KILN_LIMIT_LLB_LIST, op, lj_secret_env_item)) < 0 ||
            (r = lj_each(L, j, "extra_hosts", KILN_LIMIT_LLB_LIST, op, lj_host_item)) < 0 ||
            (r = lj_each(L, j, "ulimits", KILN_LIMIT_LLB_LIST, op, lj_ulimit_item)) < 0 ||
            (r = lj_str(L, j, "cgroup_parent", &e->cgroup_parent)) < 0 ||
            (r = lj_bool(L, j, "remove_mount_stubs_recursive", &e->remove_mount_stubs_recursive)) <
                    0 ||
            (r = lj_each(L, j, "valid_exit_codes", KILN_LIMIT_LLB_LIST, op, lj_exit_code_item)) < 0)
                goto out;
        e->network = network;
        e->security = security;
        const json_t *px = json_object_get(j, "proxy_env");
        if (px) {
                size_t k = jp_key(&L->p, "proxy_env");
                struct kiln_llb_proxy_env *pe = &e->proxy_env;
                if ((r = lj_object(L, px, proxy_keys)) >= 0 &&
                    (r = lj_str(L, px, "http_proxy", &pe->http_proxy)) >= 0 &&
                    (r = lj_str(L, px, "https_proxy", &pe->https_proxy)) >= 0 &&
                    (r = lj_str(L, px, "ftp_proxy", &pe->ftp_proxy)) >= 0 &&
                    (r = lj_str(L, px, "no_proxy", &pe->no_proxy)) >= 0)
                        r = lj_str(L, px, "all_proxy", &pe->all_proxy);
                jp_pop(&L->p, k);
        }
out:
        jp_pop(&L->p, m);
        return r;
}

static int lj_action_item(struct loader *L, const json_t *v, void *ctx)
{
        struct kiln_llb_op *op = ctx;
        unsigned type;
        json_t *j;
        int r = lj_variant(L, v, action_type_names, ELEMENTSOF(action_type_names), &type, &j);
        if (r < 0)
                return r;
        struct kiln_llb_file_action *a = kiln_llb_file_add_action(op, type);
        size_t m = jp_key(&L->p, action_type_names[type]);
        switch (a->type) {
        case KILN_LLB_FILE_COPY: {
                static const char *const keys[] = { "src",
                                                    "src_path",
                                                    "dest",
                                                    "chown",
                                                    "mode",
                                                    "mode_str",
                                                    "follow_symlinks",
                                                    "dir_copy_contents",
                                                    "attempt_unpack",
                                                    "create_dest_path",
                                                    "allow_wildcard",
                                                    "allow_empty_wildcard",
                                                    "always_replace_existing",
                                                    "include_patterns",
                                                    "exclude_patterns",
                                                    "required_paths",
                                                    "timestamp",
                                                    NULL };
                struct kiln_llb_file_copy *c = &a->copy;
                int64_t mode = 0;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_ref(L, j, "src", &c->src)) < 0 ||
                    (r = lj_str(L, j, "src_path", &c->src_path)) < 0 ||
                    (r = lj_str(L, j, "dest", &c->dest)) < 0 ||
                    (r = lj_chown(L, j, &c->chown)) < 0 ||
                    (r = lj_int(L, j, "mode", 0, 07777, &c->has_mode, &mode)) < 0 ||
                    (r = lj_str(L, j, "mode_str", &c->mode_str)) < 0 ||
                    (r = lj_bool(L, j, "follow_symlinks", &c->follow_symlinks)) < 0 ||
                    (r = lj_bool(L, j, "dir_copy_contents", &c->dir_copy_contents)) < 0 ||
                    (r = lj_bool(L, j, "attempt_unpack", &c->attempt_unpack)) < 0 ||
                    (r = lj_bool(L, j, "create_dest_path", &c->create_dest_path)) < 0 ||
                    (r = lj_bool(L, j, "allow_wildcard", &c->allow_wildcard)) < 0 ||
                    (r = lj_bool(L, j, "allow_empty_wildcard", &c->allow_empty_wildcard)) < 0 ||
                    (r = lj_bool(L, j, "always_replace_existing", &c->always_replace_existing)) <
                            0 ||
                    (r = lj_strv(L, j, "include_patterns", &c->include_patterns)) < 0 ||
                    (r = lj_strv(L, j, "exclude_patterns", &c->exclude_patterns)) < 0 ||
                    (r = lj_strv(L, j, "required_paths", &c->required_paths)) < 0)
                        break;
                c->mode = (uint32_t) mode;
                r = lj_timestamp(L, j, &c->has_timestamp, &c->timestamp);
                break;
        }
        case KILN_LLB_FILE_MKDIR: {
                static const char *const keys[] = { "path",  "mode",      "make_parents",
                                                    "chown", "timestamp", NULL };
                struct kiln_llb_file_mkdir *d = &a->mkdir;
                d->mode = 0;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_str(L, j, "path", &d->path)) < 0 ||
                    (r = lj_u32(L, j, "mode", 07777, &d->mode)) < 0 ||
                    (r = lj_bool(L, j, "make_parents", &d->make_parents)) < 0 ||
                    (r = lj_chown(L, j, &d->chown)) < 0)
                        break;
                r = lj_timestamp(L, j, &d->has_timestamp, &d->timestamp);
                break;
        }
        case KILN_LLB_FILE_MKFILE: {
                static const char *const keys[] = { "path",  "mode",      "data",
                                                    "chown", "timestamp", NULL };
                struct kiln_llb_file_mkfile *f = &a->mkfile;
                f->mode = 0;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_str(L, j, "path", &f->path)) < 0 ||
                    (r = lj_u32(L, j, "mode", 07777, &f->mode)) < 0 ||
                    (r = lj_chown(L, j, &f->chown)) < 0 ||
                    (r = lj_timestamp(L, j, &f->has_timestamp, &f->timestamp)) < 0)
                        break;
                const json_t *d = json_object_get(j, "data");
                if (!d)
                        break;
                size_t k = jp_key(&L->p, "data");
                if (!json_is_string(d))
                        r = jp_fail(L->err, -EINVAL, &L->p, "expected a base64 string");
                else if (json_string_length(d) / 4 * 3 > KILN_LIMIT_LLB_MKFILE_DATA + 2)
                        r = jp_fail(L->err, -E2BIG, &L->p, "larger than %u bytes",
                                    KILN_LIMIT_LLB_MKFILE_DATA);
                else if (!base64_decode(json_string_value(d), json_string_length(d), &f->data,
                                        &f->len))
                        r = jp_fail(L->err, -EINVAL, &L->p, "not canonical padded base64");
                jp_pop(&L->p, k);
                break;
        }
        case KILN_LLB_FILE_RM: {
                static const char *const keys[] = { "path", "allow_not_found", "allow_wildcard",
                                                    NULL };
                struct kiln_llb_file_rm *x = &a->rm;
                if ((r = lj_object(L, j, keys)) < 0 || (r = lj_str(L, j, "path", &x->path)) < 0 ||
                    (r = lj_bool(L, j, "allow_not_found", &x->allow_not_found)) < 0)
                        break;
                r = lj_bool(L, j, "allow_wildcard", &x->allow_wildcard);
                break;
        }
        case KILN_LLB_FILE_SYMLINK: {
                static const char *const keys[] = { "oldpath", "newpath", "chown", "timestamp",
                                                    NULL };
                struct kiln_llb_file_symlink *s = &a->symlink;
                if ((r = lj_object(L, j, keys)) < 0 ||
                    (r = lj_str(L, j, "oldpath", &s->oldpath)) < 0 ||
                    (r = lj_str(L, j, "newpath", &s->newpath)) < 0 ||
                    (r = lj_chown(L, j, &s->chown)) < 0)
                        break;
                r = lj_timestamp(L, j, &s->has_timestamp, &s->timestamp);
                break;
        }
        }
        jp_pop(&L->p, m);
        return r;
}

static int lj_merge_item(struct loader *L, const json_t *v, void *ctx)
{
        struct kiln_llb_ref ref = { 0 };
        int r = lj_ref_value(L, v, &ref);
        if (r >= 0)
                kiln_llb_merge_add_input(ctx, ref);
        return r;
}

static const char *const op_type_names[] = { "source", "exec", "file", "merge", "diff" };

/* Reads an op body into a new op in *ret (set even on failure, for freeing). */
static int lj_op(struct loader *L, const json_t *v, struct kiln_llb_op **ret)
{
        static const char *const keys[] = { "platform", "source", "exec", "file",
                                            "merge",    "diff",   NULL };
        static const char *const platform_keys[] = { "os", "architecture", "variant", NULL };
        int r = lj_object(L, v, keys);
        if (r < 0)
                return r;
        int type = -1;
        for (size_t i = 0; i < ELEMENTSOF(op_type_names); i++) {
                if (!json_object_get(v, op_type_names[i]))
                        continue;
                if (type >= 0)
                        return jp_fail(L->err, -EINVAL, &L->p, "both '%s' and '%s' set",
                                       op_type_names[type], op_type_names[i]);
                type = (int) i;
        }
        if (type < 0)
                return jp_fail(L->err, -EINVAL, &L->p,
                               "expected one of source, exec, file, merge, diff");
        struct kiln_llb_op *op = *ret = kiln_llb_op_new((enum kiln_llb_op_type) type);
        const json_t *pl = json_object_get(v, "platform");
        if (pl) {
                size_t k = jp_key(&L->p, "platform");
                if ((r = lj_object(L, pl, platform_keys)) >= 0 &&
                    (r = lj_str(L, pl, "os", &op->platform.os)) >= 0 &&
                    (r = lj_str(L, pl, "architecture", &op->platform.architecture)) >= 0)
                        r = lj_str(L, pl, "variant", &op->platform.variant);
                jp_pop(&L->p, k);
                if (r < 0)
                        return r;
        }
        const json_t *j = json_object_get(v, op_type_names[type]);
        size_t m;
        switch (op->type) {
        case KILN_LLB_OP_SOURCE:
                m = jp_key(&L->p, "source");
                r = lj_source(L, j, op);
                jp_pop(&L->p, m);
                return r;
        case KILN_LLB_OP_EXEC:
                return lj_exec(L, j, op);
        case KILN_LLB_OP_FILE: {
                static const char *const fkeys[] = { "base", "actions", NULL };
                m = jp_key(&L->p, "file");
                if ((r = lj_object(L, j, fkeys)) >= 0 &&
                    (r = lj_ref(L, j, "base", &op->file.base)) >= 0)
                        r = lj_each(L, j, "actions", KILN_LIMIT_LLB_FILE_ACTIONS, op,
                                    lj_action_item);
                jp_pop(&L->p, m);
                return r;
        }
        case KILN_LLB_OP_MERGE: {
                static const char *const mkeys[] = { "inputs", NULL };
                m = jp_key(&L->p, "merge");
                if ((r = lj_object(L, j, mkeys)) >= 0)
                        r = lj_each(L, j, "inputs", KILN_LIMIT_LLB_LIST, op, lj_merge_item);
                jp_pop(&L->p, m);
                return r;
        }
        case KILN_LLB_OP_DIFF: {
                static const char *const dkeys[] = { "lower", "upper", NULL };
                m = jp_key(&L->p, "diff");
                if ((r = lj_object(L, j, dkeys)) >= 0 &&
                    (r = lj_ref(L, j, "lower", &op->diff.lower)) >= 0)
                        r = lj_ref(L, j, "upper", &op->diff.upper);
                jp_pop(&L->p, m);
                return r;
        }
        }
        return 0;
}

static int lj_description_item(struct loader *L, const json_t *d, struct kiln_llb_meta *md)
{
        if (!json_is_object(d))
                return jp_fail(L->err, -EINVAL, &L->p, "expected an object");
        if (json_object_size(d) > KILN_LIMIT_LLB_LIST)
                return jp_fail(L->err, -E2BIG, &L->p, "more than %u items", KILN_LIMIT_LLB_LIST);
        const char *key;
        json_t *value;
        int r = 0;
        json_object_foreach ((json_t *) d, key, value) {
                size_t k = jp_key(&L->p, key);
                _cleanup_free_ char *s = NULL;
                if ((r = lj_string_value(L, value, false, &s)) >= 0)
                        kiln_llb_strmap_set(&md->description, key, s);
                jp_pop(&L->p, k);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int lj_meta(struct loader *L, const json_t *v, struct kiln_llb_meta *md)
{
        static const char *const keys[] = { "description", "progress_group", "ignore_cache", "caps",
                                            NULL };
        static const char *const pg_keys[] = { "id", "name", "weak", NULL };
        int r;
        if ((r = lj_object(L, v, keys)) < 0 ||
            (r = lj_bool(L, v, "ignore_cache", &md->ignore_cache)) < 0 ||
            (r = lj_strv(L, v, "caps", &md->caps)) < 0)
                return r;
        const json_t *d = json_object_get(v, "description");
        if (d) {
                size_t k = jp_key(&L->p, "description");
                r = lj_description_item(L, d, md);
                jp_pop(&L->p, k);
                if (r < 0)
                        return r;
        }
        const json_t *pg = json_object_get(v, "progress_group");
        if (pg) {
                size_t k = jp_key(&L->p, "progress_group");
                if ((r = lj_object(L, pg, pg_keys)) >= 0 &&
                    (r = lj_str(L, pg, "id", &md->progress_group_id)) >= 0 &&
                    (r = lj_str(L, pg, "name", &md->progress_group_name)) >= 0)
                        r = lj_bool(L, pg, "weak", &md->progress_group_weak);
                jp_pop(&L->p, k);
        }
        return r;
}

static int lj_op_entry(struct loader *L, const json_t *v, void *ctx)
{
        static const char *const keys[] = { "digest", "op", "metadata", NULL };
        int r = lj_object(L, v, keys);
        if (r < 0)
                return r;
        _cleanup_free_ char *digest = NULL;
        if ((r = lj_str(L, v, "digest", &digest)) < 0)
                return r;
        if (!digest)
                return jp_fail_key(L->err, -EINVAL, &L->p, "digest", "required");
        const json_t *body = json_object_get(v, "op");
        if (!body)
                return jp_fail_key(L->err, -EINVAL, &L->p, "op", "required");

        _cleanup_(kiln_llb_op_freep) struct kiln_llb_op *op = NULL;
        struct jpath body_path = L->p, meta_path = L->p;
        jp_key(&body_path, "op");
        size_t m = jp_key(&L->p, "op");
        r = lj_op(L, body, &op);
        jp_pop(&L->p, m);
        if (r < 0)
                return r;
        const json_t *meta = json_object_get(v, "metadata");
        if (meta) {
                m = jp_key(&L->p, "metadata");
                r = lj_meta(L, meta, &op->meta);
                jp_pop(&L->p, m);
                if (r < 0)
                        return r;
        }
        /* check_meta appends "metadata" itself. */
        const struct kiln_llb_op *added;
        r = def_insert(L->def, TAKE_PTR(op), &body_path, &meta_path, false, &added, L->err);
        if (r < 0)
                return r;
        if (!streq(added->digest, digest)) {
                m = jp_key(&L->p, "digest");
                r = jp_fail(L->err, -EINVAL, &L->p, "'%s' does not match the op's digest '%s'",
                            digest, added->digest);
                jp_pop(&L->p, m);
        }
        return r;
}

int kiln_llb_def_from_json(const char *data, size_t len, struct kiln_llb_def **ret,
                           struct kiln_error **err)
{
        static const char *const keys[] = { "ops", "output", "version", NULL };
        if (len > KILN_LIMIT_LLB_JSON)
                return kiln_error_set(err, -E2BIG, "definition is larger than %u bytes",
                                      KILN_LIMIT_LLB_JSON);
        json_error_t jerr;
        json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return kiln_error_set_at(
                        err, -EINVAL, NULL, (unsigned) (jerr.line > 0 ? jerr.line : 0),
                        (unsigned) (jerr.column > 0 ? jerr.column : 0), "%s", jerr.text);
        _cleanup_(kiln_llb_def_freep) struct kiln_llb_def *def = kiln_llb_def_new();
        struct loader L = { .def = def, .err = err };
        int64_t version = 0;
        bool has_version;
        int r;
        if ((r = lj_object(&L, root, keys)) < 0 ||
            (r = lj_int(&L, root, "version", INT64_MIN, INT64_MAX, &has_version, &version)) < 0)
                goto out;
        if (!has_version || version != 1) {
                r = jp_fail_key(err, -EINVAL, &L.p, "version",
                                has_version ? "unsupported version, expected 1" : "required");
                goto out;
        }
        if ((r = lj_each(&L, root, "ops", KILN_LIMIT_LLB_OPS, NULL, lj_op_entry)) < 0)
                goto out;
        const json_t *out = json_object_get(root, "output");
        if (out) {
                struct kiln_llb_ref ref = { 0 };
                size_t m = jp_key(&L.p, "output");
                r = lj_ref_value(&L, out, &ref);
                jp_pop(&L.p, m);
                if (r >= 0)
                        r = kiln_llb_def_set_output(def, ref, err);
        }
out:
        json_decref(root);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(def);
        return 0;
}
