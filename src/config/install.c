/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The certificate copy of `kiln create --config FILE` (see install.h).
 *
 * buildx (util/confutil/container.go) re-marshals the whole file, which
 * sorts the keys and drops the comments, copies ca and keypair files under
 * their base names (a clash overwrites silently), reads relative paths from
 * its working directory and leaves tlsconfigdir pointing at the host. Here
 * the parser's spans let us replace exactly the path literals and keep
 * every other byte; relative paths are resolved against FILE's directory;
 * clashes get new names; tlsconfigdir is copied too.
 *
 * buildx writes /etc/buildkit/certs/<host>/<file> because its buildkitd runs
 * in a container where the files are mounted at /etc/buildkit. kilnd runs on
 * the host with --config <builder>/etc/buildkit/buildkitd.toml, so the
 * paths written are the absolute paths of the copies in the builder.
 *
 * Which values count is decided as the schema loader decides it (go-toml's
 * matching: a key matches its field case-insensitively, the last of two
 * keys for one field wins, [registry."h"] and [Registry."h"] merge), and
 * checked: the values found in the tree must be the values the loader
 * kept, and the rewritten file must load to the same configuration with
 * only those paths changed. A difference is a bug here and fails the
 * install rather than writing a builder whose config means something else.
 */

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/limits.h"
#include "base/sha256.h"
#include "config/install.h"
#include "config/toml.h"

/* One name in a certs/<host>/ directory. */
struct slot {
        char *name;
        bool is_dir;
        /* files: what it holds, so that the same content under the same
         * name is copied once */
        char digest[KILN_SHA256_HEX_LEN + 1];
        size_t size;
        unsigned mode;
};

struct host_dir {
        char *name; /* sanitised host; hosts that sanitise alike share it */
        struct slot *slots;
        size_t n_slots;
};

/* One [registry."<host>"] as the loader sees it: the values that won. */
struct reg_refs {
        const char *host;
        const struct kiln_toml_value *ca;           /* array of strings */
        const struct kiln_toml_value *keypair;      /* array of tables */
        const struct kiln_toml_value *tlsconfigdir; /* array of strings */
        /* the absolute path of each copy, NULL where nothing was copied */
        char **new_ca;
        char **new_key;
        char **new_cert;
        char **new_tlsconfigdir;
};

struct edit {
        size_t offset;
        size_t length;
        char *text;
};

struct install {
        const char *file; /* as given, for diagnostics */
        char *file_dir;   /* absolute: relative paths start here */
        char *target;     /* absolute buildkit_dir, no trailing '/' */
        char *final;      /* where kilnd will find it (absolute): the paths written */
        char *parent;     /* directory of target */
        char *staging;    /* absolute, created by mkdtemp */
        int staging_fd;
        struct kiln_config_diags *diags;
        int first_code; /* of the first problem with the file, 0 if none */

        struct reg_refs *regs;
        size_t n_regs;
        struct host_dir *dirs;
        size_t n_dirs;
        size_t n_files; /* files written into staging */
        struct edit *edits;
        size_t n_edits;
};

/* ---- small helpers ---- */

static char *path_join(const char *dir, const char *name)
{
        size_t n = strlen(dir);

        if (n > 0 && dir[n - 1] == '/')
                return kiln_xasprintf("%s%s", dir, name);
        return kiln_xasprintf("%s/%s", dir, name);
}

/* The directory part of an absolute path without trailing '/'. */
static char *dir_of(const char *abs)
{
        const char *slash = strrchr(abs, '/');

        if (slash == abs)
                return kiln_xstrdup("/");
        return kiln_xstrndup(abs, (size_t) (slash - abs));
}

/* The last component of p, or fallback when there is none to use ("",
 * "/", ".", ".."): a copy must stay a plain name in its directory. */
static char *base_name(const char *p, const char *fallback)
{
        size_t end = strlen(p), start;

        while (end > 0 && p[end - 1] == '/')
                end--;
        start = end;
        while (start > 0 && p[start - 1] != '/')
                start--;
        if (end == start || (end - start == 1 && p[start] == '.') ||
            (end - start == 2 && p[start] == '.' && p[start + 1] == '.'))
                return kiln_xstrdup(fallback);
        return kiln_xstrndup(p + start, end - start);
}

/* "ca.pem", 2 -> "ca-2.pem"; "ca", 2 -> "ca-2"; ".pem", 2 -> ".pem-2". */
static char *name_with_suffix(const char *name, size_t k)
{
        const char *dot = strrchr(name, '.');

        if (!dot || dot == name)
                return kiln_xasprintf("%s-%zu", name, k);
        return kiln_xasprintf("%.*s-%zu%s", (int) (dot - name), name, k, dot);
}

static bool has_suffix(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);

        return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static bool valid_utf8(const char *s)
{
        const unsigned char *p = (const unsigned char *) s;

        while (*p) {
                size_t n;
                uint32_t cp;

                if (p[0] < 0x80) {
                        p++;
                        continue;
                }
                if (p[0] >= 0xC2 && p[0] < 0xE0) {
                        n = 2;
                        cp = p[0] & 0x1F;
                } else if (p[0] >= 0xE0 && p[0] < 0xF0) {
                        n = 3;
                        cp = p[0] & 0x0F;
                } else if (p[0] >= 0xF0 && p[0] < 0xF5) {
                        n = 4;
                        cp = p[0] & 0x07;
                } else
                        return false;
                for (size_t i = 1; i < n; i++) {
                        if ((p[i] & 0xC0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3F);
                }
                if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
                    (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
                        return false;
                p += n;
        }
        return true;
}

/* s as a TOML basic string, quotes included. s is valid UTF-8. */
static char *toml_quote(const char *s)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);

        (void) kiln_buf_putc(&b, '"');
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                switch (c) {
                case '"':
                        (void) kiln_buf_puts(&b, "\\\"");
                        break;
                case '\\':
                        (void) kiln_buf_puts(&b, "\\\\");
                        break;
                case '\b':
                        (void) kiln_buf_puts(&b, "\\b");
                        break;
                case '\t':
                        (void) kiln_buf_puts(&b, "\\t");
                        break;
                case '\n':
                        (void) kiln_buf_puts(&b, "\\n");
                        break;
                case '\f':
                        (void) kiln_buf_puts(&b, "\\f");
                        break;
                case '\r':
                        (void) kiln_buf_puts(&b, "\\r");
                        break;
                default:
                        if (c < 0x20 || c == 0x7F)
                                (void) kiln_buf_printf(&b, "\\u%04X", c);
                        else
                                (void) kiln_buf_putc(&b, (char) c);
                        break;
                }
        }
        (void) kiln_buf_putc(&b, '"');
        return kiln_buf_steal(&b);
}

char *kiln_config_install_host_dir(const char *host)
{
        char *out = kiln_xmalloc(strlen(host) + 2), *w = out;
        bool in_run = false;

        for (const char *p = host; *p; p++) {
                char c = *p;

                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-') {
                        *w++ = c;
                        in_run = false;
                } else if (!in_run) {
                        *w++ = '_';
                        in_run = true;
                }
        }
        *w = '\0';
        if (streq(out, "") || streq(out, ".") || streq(out, ".."))
                memcpy(out, "_", 2);
        return out;
}

/* ---- reading the user's files ---- */

/* Why a file named in the configuration could not be read. */
static const char *read_error(int r, char buf[static 64])
{
        return kiln_read_file_strerror(r, KILN_CONFIG_INSTALL_MAX_FILE, buf);
}

/* ---- diagnostics ---- */

_printf_(4, 5) static void problem(struct install *I, const struct kiln_toml_value *at, int code,
                                   const char *fmt, ...)
{
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        m = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        kiln_config_diags_add(I->diags, KILN_CONFIG_ERROR, I->file, at ? at->pos.line : 0,
                              at ? at->pos.col : 0, "%s", m);
        if (I->first_code == 0)
                I->first_code = code < 0 ? code : -EINVAL;
}

/* "registry."h".ca[0]" and the like, as a user would look the key up. */
_printf_(2, 3) static char *key_name(const char *host, const char *fmt, ...)
{
        _cleanup_free_ char *q = toml_quote(host), *rest = NULL;
        va_list ap;

        va_start(ap, fmt);
        rest = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_xasprintf("registry.%s.%s", q, rest);
}

/* 'ca.pem' (/etc/kiln/ca.pem) when the path was relative, else 'path'. */
static char *describe_path(const char *written, const char *resolved)
{
        if (streq(written, resolved))
                return kiln_xasprintf("'%s'", written);
        return kiln_xasprintf("'%s' (%s)", written, resolved);
}

/* Sets *err from the first error in d (sorted), and returns code. */
static int set_first_error(struct kiln_config_diags *d, int code, struct kiln_error **err)
{
        size_t n;

        kiln_config_diags_sort(d);
        n = kiln_config_diags_count(d, KILN_CONFIG_ERROR);
        for (size_t i = 0; i < d->n; i++) {
                const struct kiln_config_diag *g = &d->items[i];
                _cleanup_free_ char *s = NULL;

                if (g->level != KILN_CONFIG_ERROR)
                        continue;
                s = kiln_config_diag_format(g);
                if (n > 1)
                        kiln_error_set(err, code, "%s (and %zu more error%s)", s, n - 1,
                                       n > 2 ? "s" : "");
                else
                        kiln_error_set(err, code, "%s", s);
                if (err && *err && g->file) {
                        (*err)->file = kiln_xstrdup(g->file);
                        (*err)->line = g->line;
                        (*err)->col = g->col;
                }
                return code;
        }
        return kiln_error_set(err, code, "internal error: no diagnostic for a failure");
}

/* ---- which values count (as the schema loader decides) ---- */

/* The value of the last entry of t whose key is name, case-insensitively. */
static const struct kiln_toml_value *last_match(const struct kiln_toml_table *t, const char *name)
{
        const struct kiln_toml_value *v = NULL;

        for (size_t i = 0; i < t->n; i++)
                if (strlen(t->entries[i].key) == t->entries[i].key_len &&
                    strcasecmp(t->entries[i].key, name) == 0)
                        v = t->entries[i].value;
        return v;
}

static struct reg_refs *regs_get(struct install *I, const char *host)
{
        for (size_t i = 0; i < I->n_regs; i++)
                if (streq(I->regs[i].host, host))
                        return &I->regs[i];
        I->regs = kiln_xreallocarray(I->regs, I->n_regs + 1, sizeof(*I->regs));
        I->regs[I->n_regs] = (struct reg_refs){ .host = host };
        return &I->regs[I->n_regs++];
}

static void collect_registries(struct install *I, const struct kiln_toml_value *root)
{
        for (size_t i = 0; i < root->table->n; i++) {
                const struct kiln_toml_entry *e = &root->table->entries[i];

                if (strlen(e->key) != e->key_len || strcasecmp(e->key, "registry") != 0 ||
                    e->value->type != KILN_TOML_TABLE)
                        continue;
                for (size_t j = 0; j < e->value->table->n; j++) {
                        const struct kiln_toml_entry *h = &e->value->table->entries[j];
                        const struct kiln_toml_value *v;
                        struct reg_refs *reg;

                        if (strlen(h->key) != h->key_len || h->value->type != KILN_TOML_TABLE)
                                continue;
                        reg = regs_get(I, h->key);
                        /* A later table for the same host overrides key by key. */
                        if ((v = last_match(h->value->table, "ca")))
                                reg->ca = v;
                        if ((v = last_match(h->value->table, "keypair")))
                                reg->keypair = v;
                        if ((v = last_match(h->value->table, "tlsconfigdir")))
                                reg->tlsconfigdir = v;
                }
        }
}

static const struct kiln_toml_value *keypair_field(const struct reg_refs *reg, size_t k,
                                                   const char *name)
{
        return last_match(reg->keypair->array.items[k]->table, name);
}

static bool str_matches(const struct kiln_toml_value *v, const char *s)
{
        if (!v || v->type != KILN_TOML_STRING)
                return !s;
        return s && streq(v->str.s, s);
}

/* The tree walk must find exactly what the loader kept. */
static bool refs_match_config(const struct install *I, const struct kiln_config *c)
{
        if (I->n_regs != c->n_registries)
                return false;
        for (size_t i = 0; i < I->n_regs; i++) {
                const struct reg_refs *reg = &I->regs[i];
                const struct kiln_config_registry *cr = &c->registries[i];
                size_t n_ca = reg->ca ? reg->ca->array.n : 0;
                size_t n_kp = reg->keypair ? reg->keypair->array.n : 0;
                size_t n_dir = reg->tlsconfigdir ? reg->tlsconfigdir->array.n : 0;

                if (!streq(reg->host, cr->host) || n_ca != cr->n_ca || n_kp != cr->n_keypairs ||
                    n_dir != cr->n_tlsconfigdir)
                        return false;
                for (size_t j = 0; j < n_ca; j++)
                        if (!str_matches(reg->ca->array.items[j], cr->ca[j]))
                                return false;
                for (size_t j = 0; j < n_dir; j++)
                        if (!str_matches(reg->tlsconfigdir->array.items[j], cr->tlsconfigdir[j]))
                                return false;
                for (size_t k = 0; k < n_kp; k++)
                        if (!str_matches(keypair_field(reg, k, "key"), cr->keypairs[k].key) ||
                            !str_matches(keypair_field(reg, k, "cert"), cr->keypairs[k].cert))
                                return false;
        }
        return true;
}

/* ---- the staging tree ---- */

/* Creates rel (relative to the staging directory) with exactly mode, never
 * through a symlink, and makes it durable. */
static int write_new_file(struct install *I, const char *rel, const char *data, size_t n,
                          unsigned mode)
{
        _cleanup_close_ int fd = -1;
        int r;

        fd = openat(I->staging_fd, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    (mode_t) mode);
        if (fd < 0)
                return -errno;
        /* Exactly mode, whatever the umask. */
        if (fchmod(fd, (mode_t) mode) < 0)
                return -errno;
        r = kiln_write_all(fd, data, n);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

static int make_dir(struct install *I, const char *rel)
{
        if (mkdirat(I->staging_fd, rel, 0700) < 0)
                return -errno;
        if (fchmodat(I->staging_fd, rel, 0700, 0) < 0)
                return -errno;
        return 0;
}

static int sync_dir_at(int dirfd, const char *rel)
{
        _cleanup_close_ int fd = openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

static struct host_dir *host_dir_get(struct install *I, const char *host, int *ret)
{
        _cleanup_free_ char *name = kiln_config_install_host_dir(host);
        _cleanup_free_ char *rel = NULL;
        int r;

        *ret = 0;
        for (size_t i = 0; i < I->n_dirs; i++)
                if (streq(I->dirs[i].name, name))
                        return &I->dirs[i];
        rel = path_join("certs", name);
        r = make_dir(I, rel);
        if (r < 0) {
                *ret = r;
                return NULL;
        }
        I->dirs = kiln_xreallocarray(I->dirs, I->n_dirs + 1, sizeof(*I->dirs));
        I->dirs[I->n_dirs] = (struct host_dir){ .name = TAKE_PTR(name) };
        return &I->dirs[I->n_dirs++];
}

static struct slot *slot_find(struct host_dir *d, const char *name)
{
        for (size_t i = 0; i < d->n_slots; i++)
                if (streq(d->slots[i].name, name))
                        return &d->slots[i];
        return NULL;
}

static struct slot *slot_add(struct host_dir *d, char *name, bool is_dir)
{
        d->slots = kiln_xreallocarray(d->slots, d->n_slots + 1, sizeof(*d->slots));
        d->slots[d->n_slots] = (struct slot){ .name = name, .is_dir = is_dir };
        return &d->slots[d->n_slots++];
}

/* Copies data into certs/<d>/ under base, or base-1, base-2... when another
 * content has that name; the same content under the same name is reused
 * (the stricter mode wins). *ret_name is the name used (owned by d). */
static int place_file(struct install *I, struct host_dir *d, const char *base,
                      const struct kiln_buf *data, unsigned mode, const char **ret_name)
{
        char digest[KILN_SHA256_HEX_LEN + 1];

        kiln_sha256_hex(data->data, data->len, digest);
        for (size_t k = 0;; k++) {
                _cleanup_free_ char *name = k == 0 ? kiln_xstrdup(base) : name_with_suffix(base, k);
                _cleanup_free_ char *rel = NULL;
                struct slot *s = slot_find(d, name);
                int r;

                if (s) {
                        if (s->is_dir || s->size != data->len || !streq(s->digest, digest))
                                continue;
                        if (mode < s->mode) {
                                _cleanup_free_ char *srel =
                                        kiln_xasprintf("certs/%s/%s", d->name, s->name);

                                if (fchmodat(I->staging_fd, srel, (mode_t) mode, 0) < 0)
                                        return -errno;
                                s->mode = mode;
                        }
                        *ret_name = s->name;
                        return 0;
                }
                if (I->n_files >= KILN_CONFIG_INSTALL_MAX_FILES)
                        return -EMFILE;
                rel = kiln_xasprintf("certs/%s/%s", d->name, name);
                r = write_new_file(I, rel, data->data, data->len, mode);
                if (r < 0)
                        return r;
                I->n_files++;
                s = slot_add(d, TAKE_PTR(name), false);
                memcpy(s->digest, digest, sizeof(digest));
                s->size = data->len;
                s->mode = mode;
                *ret_name = s->name;
                return 0;
        }
}

static int place_dir(struct install *I, struct host_dir *d, const char *base, const char **ret_name)
{
        for (size_t k = 0;; k++) {
                _cleanup_free_ char *name = k == 0 ? kiln_xstrdup(base) : name_with_suffix(base, k);
                _cleanup_free_ char *rel = NULL;
                int r;

                if (slot_find(d, name))
                        continue;
                rel = kiln_xasprintf("certs/%s/%s", d->name, name);
                r = make_dir(I, rel);
                if (r < 0)
                        return r;
                *ret_name = slot_add(d, TAKE_PTR(name), true)->name;
                return 0;
        }
}

static void add_edit(struct install *I, const struct kiln_toml_value *v, const char *path)
{
        I->edits = kiln_xreallocarray(I->edits, I->n_edits + 1, sizeof(*I->edits));
        I->edits[I->n_edits++] = (struct edit){
                .offset = v->offset,
                .length = v->length,
                .text = toml_quote(path),
        };
}

static const char *place_error(int r, char buf[static 64])
{
        if (r == -EMFILE) {
                (void) snprintf(buf, 64, "more than %u files to copy",
                                KILN_CONFIG_INSTALL_MAX_FILES);
                return buf;
        }
        return strerror(-r);
}

/* Copies the file named by the string v (the value of key) into d and
 * returns the absolute path of the copy, or NULL after reporting why not. */
static char *copy_one(struct install *I, struct host_dir *d, const struct kiln_toml_value *v,
                      const char *key, unsigned mode, struct kiln_buf *b)
{
        _cleanup_free_ char *src = NULL, *base = NULL, *what = NULL;
        const char *name = NULL;
        char buf[64];
        int r;

        src = v->str.s[0] == '/' ? kiln_xstrdup(v->str.s) : path_join(I->file_dir, v->str.s);
        what = describe_path(v->str.s, src);
        r = kiln_read_file_at(AT_FDCWD, src, b);
        if (r < 0) {
                problem(I, v, r, "%s: cannot copy %s: %s", key, what, read_error(r, buf));
                return NULL;
        }
        base = base_name(v->str.s, "file");
        r = place_file(I, d, base, b, mode, &name);
        if (r < 0) {
                problem(I, v, r, "%s: cannot copy %s into the builder: %s", key, what,
                        place_error(r, buf));
                return NULL;
        }
        return kiln_xasprintf("%s/certs/%s/%s", I->final, d->name, name);
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool tls_file_name(const char *name)
{
        return has_suffix(name, ".crt") || has_suffix(name, ".cert") || has_suffix(name, ".key");
}

/* Lists the names in dir that BuildKit reads (sorted). */
static int list_tls_dir(const char *dir, int *ret_fd, char ***ret, size_t *ret_n)
{
        _cleanup_close_ int fd = -1;
        char **names = NULL;
        size_t n = 0;
        DIR *dp;
        struct dirent *de;
        int r = 0;

        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        dp = fdopendir(fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!dp)
                return -errno;
        errno = 0;
        while ((de = readdir(dp))) {
                if (!tls_file_name(de->d_name))
                        continue;
                if (n >= KILN_CONFIG_INSTALL_MAX_FILES) {
                        r = -EMFILE;
                        break;
                }
                names = kiln_xreallocarray(names, n + 1, sizeof(*names));
                names[n++] = kiln_xstrdup(de->d_name);
                errno = 0;
        }
        if (r == 0 && errno != 0)
                r = -errno;
        (void) closedir(dp);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(names[i]);
                free(names);
                return r;
        }
        if (n > 0)
                qsort(names, n, sizeof(*names), name_cmp);
        *ret_fd = TAKE_FD(fd);
        *ret = names;
        *ret_n = n;
        return 0;
}

/* Copies what BuildKit reads from the directory named by v (its *.crt as
 * CAs, X.cert with X.key as key pairs) into a directory of its own in d.
 * Returns the absolute path of that directory, or NULL after reporting. */
static char *copy_tls_dir(struct install *I, struct host_dir *d, const struct kiln_toml_value *v,
                          const char *key, struct kiln_buf *b)
{
        _cleanup_free_ char *src = NULL, *base = NULL, *what = NULL;
        _cleanup_close_ int dfd = -1;
        char **names = NULL;
        size_t n = 0;
        const char *name = NULL;
        char *ret = NULL;
        bool ok = true;
        char buf[64];
        int r;

        src = v->str.s[0] == '/' ? kiln_xstrdup(v->str.s) : path_join(I->file_dir, v->str.s);
        what = describe_path(v->str.s, src);
        r = list_tls_dir(src, &dfd, &names, &n);
        if (r < 0) {
                problem(I, v, r, "%s: cannot copy directory %s: %s", key, what,
                        place_error(r, buf));
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *pair = NULL;

                if (!has_suffix(names[i], ".cert"))
                        continue;
                pair = kiln_xasprintf("%.*s.key", (int) (strlen(names[i]) - 5), names[i]);
                if (!bsearch(&pair, names, n, sizeof(*names), name_cmp)) {
                        /* BuildKit would fail its first pull on this pair. */
                        problem(I, v, -ENOENT, "%s: '%s' in %s has no '%s' to go with it", key,
                                names[i], what, pair);
                        ok = false;
                }
        }
        base = base_name(v->str.s, "tlsconfigdir");
        r = place_dir(I, d, base, &name);
        if (r < 0) {
                problem(I, v, r, "%s: cannot copy directory %s into the builder: %s", key, what,
                        strerror(-r));
                ok = false;
        }
        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_free_ char *rel = NULL;
                int q;

                q = kiln_read_file_at(dfd, names[i], b);
                if (q < 0) {
                        problem(I, v, q, "%s: cannot copy '%s' from directory %s: %s", key,
                                names[i], what, read_error(q, buf));
                        ok = false;
                        continue;
                }
                if (I->n_files >= KILN_CONFIG_INSTALL_MAX_FILES) {
                        problem(I, v, -EMFILE, "%s: cannot copy directory %s: %s", key, what,
                                place_error(-EMFILE, buf));
                        ok = false;
                        break;
                }
                rel = kiln_xasprintf("certs/%s/%s/%s", d->name, name, names[i]);
                q = write_new_file(I, rel, b->data, b->len,
                                   has_suffix(names[i], ".key") ? 0600 : 0644);
                if (q < 0) {
                        problem(I, v, q, "%s: cannot copy '%s' from directory %s: %s", key,
                                names[i], what, strerror(-q));
                        ok = false;
                        continue;
                }
                I->n_files++;
        }
        if (ok && name) {
                _cleanup_free_ char *rel = kiln_xasprintf("certs/%s/%s", d->name, name);

                r = sync_dir_at(I->staging_fd, rel);
                if (r < 0)
                        problem(I, v, r, "%s: cannot copy directory %s: %s", key, what,
                                strerror(-r));
                else
                        ret = kiln_xasprintf("%s/certs/%s/%s", I->final, d->name, name);
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return ret;
}

/* Copies everything one registry names. Problems go to diags; returns < 0
 * only for failures that are not about the file (the staging tree). */
static int copy_registry(struct install *I, struct reg_refs *reg, struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_CONFIG_INSTALL_MAX_FILE);
        size_t n_ca = reg->ca ? reg->ca->array.n : 0;
        size_t n_kp = reg->keypair ? reg->keypair->array.n : 0;
        size_t n_dir = reg->tlsconfigdir ? reg->tlsconfigdir->array.n : 0;
        struct host_dir *d;
        int r;

        reg->new_ca = kiln_xcalloc(n_ca + 1, sizeof(char *));
        reg->new_key = kiln_xcalloc(n_kp + 1, sizeof(char *));
        reg->new_cert = kiln_xcalloc(n_kp + 1, sizeof(char *));
        reg->new_tlsconfigdir = kiln_xcalloc(n_dir + 1, sizeof(char *));
        if (n_ca + n_kp + n_dir == 0)
                return 0;
        d = host_dir_get(I, reg->host, &r);
        if (!d) {
                _cleanup_free_ char *name = kiln_config_install_host_dir(reg->host);

                return kiln_error_set(err, r, "create 'certs/%.200s' in '%s': %s", name, I->staging,
                                      strerror(-r));
        }

        for (size_t j = 0; j < n_ca; j++) {
                const struct kiln_toml_value *v = reg->ca->array.items[j];
                _cleanup_free_ char *key = key_name(reg->host, "ca[%zu]", j);

                reg->new_ca[j] = copy_one(I, d, v, key, 0644, &b);
        }
        for (size_t k = 0; k < n_kp; k++) {
                static const char *const fields[] = { "key", "cert" };

                for (size_t f = 0; f < ELEMENTSOF(fields); f++) {
                        const struct kiln_toml_value *v = keypair_field(reg, k, fields[f]);
                        _cleanup_free_ char *key = NULL;
                        char **slot = f == 0 ? &reg->new_key[k] : &reg->new_cert[k];

                        /* Unset or "": nothing to copy (buildx skips them too). */
                        if (!v || v->str.len == 0)
                                continue;
                        key = key_name(reg->host, "keypair[%zu].%s", k, fields[f]);
                        *slot = copy_one(I, d, v, key, f == 0 ? 0600 : 0644, &b);
                }
        }
        for (size_t j = 0; j < n_dir; j++) {
                const struct kiln_toml_value *v = reg->tlsconfigdir->array.items[j];
                _cleanup_free_ char *key = NULL;

                /* "" names no directory; BuildKit ignores it. */
                if (v->str.len == 0)
                        continue;
                key = key_name(reg->host, "tlsconfigdir[%zu]", j);
                reg->new_tlsconfigdir[j] = copy_tls_dir(I, d, v, key, &b);
        }
        kiln_buf_release(&b);
        return 0;
}

static void record_edits(struct install *I)
{
        for (size_t i = 0; i < I->n_regs; i++) {
                struct reg_refs *reg = &I->regs[i];

                for (size_t j = 0; reg->ca && j < reg->ca->array.n; j++)
                        if (reg->new_ca[j])
                                add_edit(I, reg->ca->array.items[j], reg->new_ca[j]);
                for (size_t k = 0; reg->keypair && k < reg->keypair->array.n; k++) {
                        if (reg->new_key[k])
                                add_edit(I, keypair_field(reg, k, "key"), reg->new_key[k]);
                        if (reg->new_cert[k])
                                add_edit(I, keypair_field(reg, k, "cert"), reg->new_cert[k]);
                }
                for (size_t j = 0; reg->tlsconfigdir && j < reg->tlsconfigdir->array.n; j++)
                        if (reg->new_tlsconfigdir[j])
                                add_edit(I, reg->tlsconfigdir->array.items[j],
                                         reg->new_tlsconfigdir[j]);
        }
}

static int edit_cmp(const void *a, const void *b)
{
        const struct edit *x = a, *y = b;

        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The user's bytes with the edits spliced in. */
static int apply_edits(struct install *I, const char *data, size_t len, struct kiln_buf *out)
{
        size_t at = 0;
        int r;

        if (I->n_edits > 0)
                qsort(I->edits, I->n_edits, sizeof(*I->edits), edit_cmp);
        for (size_t i = 0; i < I->n_edits; i++) {
                const struct edit *e = &I->edits[i];

                if (e->offset < at || e->offset + e->length > len)
                        return -EIO; /* overlapping spans: a bug */
                r = kiln_buf_append(out, data + at, e->offset - at);
                if (r >= 0)
                        r = kiln_buf_puts(out, e->text);
                if (r < 0)
                        return r;
                at = e->offset + e->length;
        }
        return kiln_buf_append(out, data + at, len - at);
}

static void replace_strv(char **v, char **with, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (with[i]) {
                        free(v[i]);
                        v[i] = kiln_xstrdup(with[i]);
                }
}

/* The rewritten file must load without errors to what c is with the
 * copied paths put in. */
static int verify(struct install *I, struct kiln_config *c, const char *text, size_t len,
                  struct kiln_error **err)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c2 = kiln_config_new();
        _cleanup_free_ char *name = path_join(I->final, "buildkitd.toml");
        struct kiln_config_diags d2 = { 0 };
        json_t *j1 = NULL, *j2 = NULL;
        bool same;
        int r;

        r = kiln_config_load_string(c2, name, text, len, &d2);
        if (r < 0) {
                _cleanup_free_ char *first =
                        d2.n > 0 ? kiln_config_diag_format(&d2.items[0]) : kiln_xstrdup("?");

                kiln_config_diags_release(&d2);
                return kiln_error_set(err, -EIO,
                                      "internal error: the rewritten config is invalid: %s", first);
        }
        kiln_config_diags_release(&d2);
        for (size_t i = 0; i < I->n_regs; i++) {
                struct reg_refs *reg = &I->regs[i];
                struct kiln_config_registry *cr = &c->registries[i];

                replace_strv(cr->ca, reg->new_ca, cr->n_ca);
                replace_strv(cr->tlsconfigdir, reg->new_tlsconfigdir, cr->n_tlsconfigdir);
                for (size_t k = 0; k < cr->n_keypairs; k++) {
                        replace_strv(&cr->keypairs[k].key, &reg->new_key[k], 1);
                        replace_strv(&cr->keypairs[k].cert, &reg->new_cert[k], 1);
                }
        }
        (void) kiln_config_to_json(c, &j1);
        (void) kiln_config_to_json(c2, &j2);
        same = j1 && j2 && json_equal(j1, j2);
        json_decref(j1);
        json_decref(j2);
        if (!same)
                return kiln_error_set(err, -EIO,
                                      "internal error: the rewritten config does not mean what "
                                      "'%s' means",
                                      I->file);
        return 0;
}

/* ---- putting it in place ---- */

static void rm_rf(const char *path)
{
        (void) kiln_rm_rf_at(AT_FDCWD, path, NULL, NULL);
}

/* Removes what an install that crashed left next to the target: its
 * staging tree (and, without RENAME_EXCHANGE, the old tree on its way out).
 * Safe because callers serialise installs of one builder. */
static void remove_stale_staging(const char *parent, const char *base)
{
        _cleanup_free_ char *prefix = kiln_xasprintf(".%s.new-", base);
        struct dirent *de;
        DIR *dp;

        dp = opendir(parent);
        if (!dp)
                return;
        while ((de = readdir(dp)))
                if (startswith(de->d_name, prefix))
                        (void) kiln_rm_rf_at(dirfd(dp), de->d_name, NULL, NULL);
        (void) closedir(dp);
}

/* Creates the missing ancestors of path (0700), recording them in
 * *created, outermost first, so a failure can take them away again. */
static int make_parents(const char *path, char ***created, size_t *n_created)
{
        _cleanup_free_ char *p = kiln_xstrdup(path);
        struct stat st;

        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, 0700) == 0) {
                        *created = kiln_xreallocarray(*created, *n_created + 1, sizeof(char *));
                        (*created)[(*n_created)++] = kiln_xstrdup(p);
                } else if (errno != EEXIST)
                        return -errno;
                else if (stat(p, &st) < 0)
                        return -errno;
                else if (!S_ISDIR(st.st_mode))
                        return -ENOTDIR;
                *s = '/';
        }
        return 0;
}

/* Moves staging to target: a plain rename when there is no target, an
 * atomic exchange when there is one (then staging holds the old tree). */
static int swap_into_place(struct install *I, bool *exchanged, struct kiln_error **err)
{
        struct stat st;

        *exchanged = false;
        if (lstat(I->target, &st) < 0) {
                if (errno != ENOENT)
                        return kiln_error_set(err, -errno, "install '%s': %s", I->target,
                                              strerror(errno));
                if (renameat2(AT_FDCWD, I->staging, AT_FDCWD, I->target, RENAME_NOREPLACE) == 0)
                        return 0;
                if (errno != EINVAL && errno != ENOSYS)
                        return kiln_error_set(err, -errno, "install '%s': rename '%s': %s",
                                              I->target, I->staging, strerror(errno));
                /* A file system without RENAME_NOREPLACE. */
                if (rename(I->staging, I->target) < 0)
                        return kiln_error_set(err, -errno, "install '%s': rename '%s': %s",
                                              I->target, I->staging, strerror(errno));
                return 0;
        }
        if (!S_ISDIR(st.st_mode))
                return kiln_error_set(err, -ENOTDIR,
                                      "install '%s': it exists and is not a directory", I->target);
        if (renameat2(AT_FDCWD, I->staging, AT_FDCWD, I->target, RENAME_EXCHANGE) == 0) {
                *exchanged = true;
                return 0;
        }
        if (errno != EINVAL && errno != ENOSYS)
                return kiln_error_set(err, -errno, "install '%s': exchange with '%s': %s",
                                      I->target, I->staging, strerror(errno));
        /* Without RENAME_EXCHANGE: old away, new in, old back on failure.
         * The old name only exists for the moment between the renames. */
        {
                _cleanup_free_ char *old = kiln_xasprintf("%s.old", I->staging);

                if (rename(I->target, old) < 0)
                        return kiln_error_set(err, -errno, "install '%s': rename it to '%s': %s",
                                              I->target, old, strerror(errno));
                if (rename(I->staging, I->target) < 0) {
                        int r = -errno;

                        (void) rename(old, I->target);
                        return kiln_error_set(err, r, "install '%s': rename '%s': %s", I->target,
                                              I->staging, strerror(-r));
                }
                if (rename(old, I->staging) < 0)
                        rm_rf(old);
                *exchanged = true;
                return 0;
        }
}

static void install_release(struct install *I)
{
        for (size_t i = 0; i < I->n_regs; i++) {
                struct reg_refs *reg = &I->regs[i];
                size_t n_ca = reg->ca ? reg->ca->array.n : 0;
                size_t n_kp = reg->keypair ? reg->keypair->array.n : 0;
                size_t n_dir = reg->tlsconfigdir ? reg->tlsconfigdir->array.n : 0;

                for (size_t j = 0; reg->new_ca && j < n_ca; j++)
                        free(reg->new_ca[j]);
                for (size_t k = 0; reg->new_key && k < n_kp; k++) {
                        free(reg->new_key[k]);
                        free(reg->new_cert[k]);
                }
                for (size_t j = 0; reg->new_tlsconfigdir && j < n_dir; j++)
                        free(reg->new_tlsconfigdir[j]);
                free(reg->new_ca);
                free(reg->new_key);
                free(reg->new_cert);
                free(reg->new_tlsconfigdir);
        }
        free(I->regs);
        for (size_t i = 0; i < I->n_dirs; i++) {
                for (size_t j = 0; j < I->dirs[i].n_slots; j++)
                        free(I->dirs[i].slots[j].name);
                free(I->dirs[i].slots);
                free(I->dirs[i].name);
        }
        free(I->dirs);
        for (size_t i = 0; i < I->n_edits; i++)
                free(I->edits[i].text);
        free(I->edits);
        if (I->staging_fd >= 0)
                (void) close(I->staging_fd);
        free(I->staging);
        free(I->parent);
        free(I->target);
        free(I->final);
        free(I->file_dir);
}

/* Builds the staging tree and moves it into place. */
static int install_tree(struct install *I, struct kiln_config *c, const char *data, size_t len,
                        struct kiln_error **err)
{
        struct kiln_buf text = KILN_BUF_INIT(KILN_LIMIT_CONFIG_FILE);
        _cleanup_free_ char *base = NULL;
        bool exchanged;
        int r;

        remove_stale_staging(I->parent, strrchr(I->target, '/') + 1);
        base = kiln_xasprintf("%s/.%s.new-XXXXXX", I->parent, strrchr(I->target, '/') + 1);
        if (!mkdtemp(base))
                return kiln_error_set(err, -errno,
                                      "install '%s': create a directory next to it: %s", I->target,
                                      strerror(errno));
        I->staging = TAKE_PTR(base);
        I->staging_fd = open(I->staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (I->staging_fd < 0)
                return kiln_error_set(err, -errno, "open '%s': %s", I->staging, strerror(errno));
        r = make_dir(I, "certs");
        if (r < 0)
                return kiln_error_set(err, r, "create '%s/certs': %s", I->staging, strerror(-r));

        for (size_t i = 0; i < I->n_regs; i++) {
                r = copy_registry(I, &I->regs[i], err);
                if (r < 0)
                        return r;
        }
        if (I->first_code < 0)
                return set_first_error(I->diags, I->first_code, err);

        record_edits(I);
        r = apply_edits(I, data, len, &text);
        if (r < 0) {
                kiln_buf_release(&text);
                if (r == -E2BIG)
                        return kiln_error_set(err, r,
                                              "install '%s': the rewritten config would be larger "
                                              "than %u bytes",
                                              I->target, KILN_LIMIT_CONFIG_FILE);
                return kiln_error_set(err, r, "internal error: overlapping values in '%s'",
                                      I->file);
        }
        r = verify(I, c, text.data, text.len, err);
        if (r >= 0) {
                r = write_new_file(I, "buildkitd.toml", text.data, text.len, 0644);
                if (r < 0)
                        kiln_error_set(err, r, "write '%s/buildkitd.toml': %s", I->staging,
                                       strerror(-r));
        }
        kiln_buf_release(&text);
        if (r < 0)
                return r;

        /* Directories too: the renames below must not publish entries the
         * disk does not have yet. */
        for (size_t i = 0; i < I->n_dirs && r >= 0; i++) {
                _cleanup_free_ char *rel = path_join("certs", I->dirs[i].name);

                r = sync_dir_at(I->staging_fd, rel);
        }
        if (r >= 0)
                r = sync_dir_at(I->staging_fd, "certs");
        if (r >= 0 && fsync(I->staging_fd) < 0)
                r = -errno;
        if (r < 0)
                return kiln_error_set(err, r, "sync '%s': %s", I->staging, strerror(-r));

        r = swap_into_place(I, &exchanged, err);
        if (r < 0)
                return r;
        (void) sync_dir_at(AT_FDCWD, I->parent);
        /* staging now holds the old tree (or nothing): remove it. A failure
         * leaves a hidden directory behind but the install has happened. */
        if (exchanged)
                rm_rf(I->staging);
        free(I->staging);
        I->staging = NULL;
        return 0;
}

int kiln_config_install_as(const char *config_file, const char *buildkit_dir, const char *final_dir,
                           struct kiln_config_diags *diags, struct kiln_error **err)
{
        _cleanup_(kiln_config_freep) struct kiln_config *c = NULL;
        _cleanup_(kiln_toml_value_freep) struct kiln_toml_value *root = NULL;
        _cleanup_free_ char *abs_file = NULL;
        struct kiln_buf data = KILN_BUF_INIT(KILN_LIMIT_CONFIG_FILE);
        struct kiln_config_diags d = { 0 };
        struct install I = { .file = config_file, .diags = &d, .staging_fd = -1 };
        char **created = NULL;
        size_t n_created = 0;
        char buf[64];
        int r;

        /* Read once: the bytes checked are the bytes rewritten. Messages
         * as kiln_config_load_file's. */
        r = kiln_read_file_at(AT_FDCWD, config_file, &data);
        if (r < 0) {
                kiln_buf_release(&data);
                if (r == -E2BIG)
                        kiln_error_set(err, r, "config file '%s' is larger than %u bytes",
                                       config_file, KILN_LIMIT_CONFIG_FILE);
                else
                        kiln_error_set(err, r, "failed to load config from '%s': %s", config_file,
                                       read_error(r, buf));
                kiln_config_diags_add(&d, KILN_CONFIG_ERROR, NULL, 0, 0, "%s",
                                      kiln_error_message(*err));
                goto out;
        }
        c = kiln_config_new();
        r = kiln_config_load_string(c, config_file, data.data, data.len, &d);
        if (r < 0) {
                set_first_error(&d, r, err);
                goto out;
        }
        r = kiln_toml_parse(data.data, data.len, &root, err);
        if (r < 0) {
                kiln_error_wrap(err, "internal error: parse '%s' again", config_file);
                goto out;
        }

        r = kiln_path_absolute(config_file, &abs_file);
        if (r >= 0) {
                I.file_dir = dir_of(abs_file);
                r = kiln_path_absolute(buildkit_dir, &I.target);
        }
        if (r >= 0)
                r = kiln_path_absolute(final_dir ? final_dir : buildkit_dir, &I.final);
        if (r < 0) {
                kiln_error_set(err, r, "get the working directory: %s", strerror(-r));
                goto out;
        }
        if (streq(I.target, "/")) {
                r = kiln_error_set(err, -EINVAL, "install: '%s' cannot be replaced", buildkit_dir);
                goto out;
        }
        /* The copies are named in a TOML string, which must be UTF-8. */
        if (!valid_utf8(I.final)) {
                r = kiln_error_set(err, -EINVAL,
                                   "install '%s': the path is not valid UTF-8, so "
                                   "buildkitd.toml cannot name files in it",
                                   I.final);
                goto out;
        }
        I.parent = dir_of(I.target);

        collect_registries(&I, root);
        if (!refs_match_config(&I, c)) {
                r = kiln_error_set(err, -EIO,
                                   "internal error: registries in '%s' read differently by "
                                   "the copy and the loader",
                                   config_file);
                goto out;
        }

        r = make_parents(I.target, &created, &n_created);
        if (r < 0) {
                kiln_error_set(err, r, "install '%s': create its parent directories: %s", I.target,
                               strerror(-r));
                goto out;
        }
        r = install_tree(&I, c, data.data, data.len, err);
out:
        if (r < 0 && I.staging)
                rm_rf(I.staging);
        /* Innermost first; rmdir only takes them if still empty. */
        for (size_t i = n_created; i > 0; i--) {
                if (r < 0)
                        (void) rmdir(created[i - 1]);
                free(created[i - 1]);
        }
        free(created);
        kiln_buf_release(&data);
        install_release(&I);
        /* Hand the diagnostics over, in file order. */
        kiln_config_diags_sort(&d);
        if (d.n > 0) {
                diags->items = kiln_xreallocarray(diags->items, diags->n + d.n, sizeof(*d.items));
                memcpy(diags->items + diags->n, d.items, d.n * sizeof(*d.items));
                diags->n += d.n;
        }
        free(d.items);
        return r;
}

int kiln_config_install(const char *config_file, const char *buildkit_dir,
                        struct kiln_config_diags *diags, struct kiln_error **err)
{
        return kiln_config_install_as(config_file, buildkit_dir, NULL, diags, err);
}
