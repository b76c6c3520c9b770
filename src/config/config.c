/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration object: lifetime, diagnostics, lookups, checks that span
 * several keys, and what buildkitd derives from the host (platforms, user
 * namespaces, the default GC policy).
 */

#include <ctype.h>
#include <fcntl.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/utsname.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "base/buf.h"
#include "base/fs.h"
#include "base/limits.h"
#include "config/config-internal.h"

/* ---- small helpers ---- */

void config_strv_free(char **v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

void config_labels_free(struct kiln_config_label *l, size_t n)
{
        if (!l)
                return;
        for (size_t i = 0; i < n; i++) {
                free(l[i].key);
                free(l[i].value);
        }
        free(l);
}

size_t kiln_config_edit_distance(const char *a, const char *b, size_t max)
{
        size_t la = strlen(a), lb = strlen(b);
        _cleanup_free_ size_t *prev = NULL, *cur = NULL;

        if ((la > lb ? la - lb : lb - la) > max)
                return max + 1;
        prev = kiln_xcalloc(lb + 1, sizeof(size_t));
        cur = kiln_xcalloc(lb + 1, sizeof(size_t));
        for (size_t j = 0; j <= lb; j++)
                prev[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t row_min;
                cur[0] = i;
                row_min = cur[0];
                for (size_t j = 1; j <= lb; j++) {
                        size_t cost = tolower((unsigned char) a[i - 1]) ==
                                                      tolower((unsigned char) b[j - 1])
                                              ? 0
                                              : 1;
                        size_t v = prev[j - 1] + cost;
                        if (prev[j] + 1 < v)
                                v = prev[j] + 1;
                        if (cur[j - 1] + 1 < v)
                                v = cur[j - 1] + 1;
                        cur[j] = v;
                        if (v < row_min)
                                row_min = v;
                }
                if (row_min > max)
                        return max + 1;
                size_t *t = prev;
                prev = cur;
                cur = t;
        }
        return prev[lb] > max ? max + 1 : prev[lb];
}

char *kiln_config_fold_key(const char *s)
{
        char *r = kiln_xmalloc(strlen(s) + 1), *w = r;

        for (; *s; s++)
                if (*s != '-' && *s != '_' && *s != '.')
                        *w++ = (char) tolower((unsigned char) *s);
        *w = 0;
        return r;
}

const char *config_suggest(const char *name, const char *const *candidates, size_t n)
{
        _cleanup_free_ char *fold = kiln_config_fold_key(name);
        const char *best = NULL;
        size_t best_d = SIZE_MAX;

        if (!*name)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *f = kiln_config_fold_key(candidates[i]);
                if (*f && streq(f, fold))
                        return candidates[i];
        }
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(candidates[i]);
                size_t max = len / 3;
                if (max < 1)
                        max = 1;
                if (max > 3)
                        max = 3;
                if (len == 0)
                        continue;
                size_t d = kiln_config_edit_distance(name, candidates[i], max);
                if (d <= max && d < best_d) {
                        best = candidates[i];
                        best_d = d;
                }
        }
        return best;
}

/* ---- diagnostics ---- */

void kiln_config_diags_add(struct kiln_config_diags *d, enum kiln_config_diag_level level,
                           const char *file, unsigned line, unsigned col, const char *fmt, ...)
{
        va_list ap;
        char *m = NULL;

        va_start(ap, fmt);
        m = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        d->items = kiln_xreallocarray(d->items, d->n + 1, sizeof(*d->items));
        d->items[d->n++] = (struct kiln_config_diag){
                .level = level,
                .file = file ? kiln_xstrdup(file) : NULL,
                .line = line,
                .col = col,
                .message = m,
        };
}

size_t kiln_config_diags_count(const struct kiln_config_diags *d, enum kiln_config_diag_level l)
{
        size_t n = 0;
        for (size_t i = 0; i < d->n; i++)
                if (d->items[i].level == l)
                        n++;
        return n;
}

void kiln_config_diags_release(struct kiln_config_diags *d)
{
        for (size_t i = 0; i < d->n; i++) {
                free(d->items[i].file);
                free(d->items[i].message);
        }
        free(d->items);
        d->items = NULL;
        d->n = 0;
}

char *kiln_config_diag_format(const struct kiln_config_diag *g)
{
        const char *lvl = g->level == KILN_CONFIG_ERROR ? "error" : "warning";

        if (g->file && g->line > 0)
                return kiln_xasprintf("%s:%u:%u: %s: %s", g->file, g->line, g->col, lvl,
                                      g->message);
        if (g->file)
                return kiln_xasprintf("%s: %s: %s", g->file, lvl, g->message);
        return kiln_xasprintf("%s: %s", lvl, g->message);
}

static int diag_cmp(const void *a, const void *b)
{
        const struct kiln_config_diag *x = a, *y = b;
        bool xl = x->file && x->line > 0, yl = y->file && y->line > 0;

        /* Positions in the file first, in file order; the rest (flags,
         * whole-file problems) after, in the order they were found. */
        if (xl != yl)
                return xl ? -1 : 1;
        if (xl && x->line != y->line)
                return x->line < y->line ? -1 : 1;
        if (xl && x->col != y->col)
                return x->col < y->col ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void kiln_config_diags_sort(struct kiln_config_diags *d)
{
        if (d->n < 2)
                return;
        for (size_t i = 0; i < d->n; i++)
                d->items[i].seq = i;
        qsort(d->items, d->n, sizeof(*d->items), diag_cmp);
}

void kiln_config_diags_print(const struct kiln_config_diags *d, FILE *f)
{
        for (size_t i = 0; i < d->n; i++) {
                _cleanup_free_ char *s = kiln_config_diag_format(&d->items[i]);
                fprintf(f, "%s\n", s);
        }
}

/* ---- lifetime ---- */

struct kiln_config *kiln_config_new(void)
{
        struct kiln_config *c = kiln_xcalloc(1, sizeof(*c));

        c->worker_oci.enabled = -1;
        c->worker_oci.gc = -1;
        c->worker_containerd.enabled = -1;
        c->worker_containerd.gc = -1;
        c->cdi.disabled = -1;
        c->frontend.dockerfile_enabled = -1;
        c->frontend.gateway_enabled = -1;
        return c;
}

struct kiln_config *kiln_config_free(struct kiln_config *c)
{
        if (!c)
                return NULL;
        schema_release(schema_root, schema_root_n, c);
        for (size_t i = 0; i < c->n_origins; i++) {
                free(c->origins[i].file);
                free(c->origins[i].flag);
        }
        free(c->origins);
        free(c);
        return NULL;
}

void config_origin_set(struct kiln_config *c, size_t offset, const struct schema_loc *loc)
{
        struct kiln_config_origin *o = NULL;

        for (size_t i = 0; i < c->n_origins; i++)
                if (c->origins[i].offset == offset)
                        o = &c->origins[i];
        if (!o) {
                c->origins = kiln_xreallocarray(c->origins, c->n_origins + 1, sizeof(*c->origins));
                o = &c->origins[c->n_origins++];
        } else {
                free(o->file);
                free(o->flag);
        }
        *o = (struct kiln_config_origin){
                .offset = offset,
                .file = loc->file ? kiln_xstrdup(loc->file) : NULL,
                .line = loc->line,
                .col = loc->col,
                .flag = loc->flag ? kiln_xstrdup(loc->flag) : NULL,
        };
}

const struct kiln_config_origin *config_origin_get(const struct kiln_config *c, size_t offset)
{
        for (size_t i = 0; i < c->n_origins; i++)
                if (c->origins[i].offset == offset)
                        return &c->origins[i];
        return NULL;
}

int kiln_config_load_file(struct kiln_config *c, const char *path, bool must_exist,
                          struct kiln_config_diags *diags, struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_CONFIG_FILE);
        int r;

        r = kiln_read_file_at(AT_FDCWD, path, &b);
        if (r == -ENOENT && !must_exist) {
                kiln_buf_release(&b);
                return 0;
        }
        if (r < 0) {
                kiln_buf_release(&b);
                if (r == -E2BIG)
                        kiln_error_set(err, r, "config file '%s' is larger than %u bytes", path,
                                       KILN_LIMIT_CONFIG_FILE);
                else
                        kiln_error_set(err, r, "failed to load config from '%s': %s", path,
                                       strerror(-r));
                kiln_config_diags_add(diags, KILN_CONFIG_ERROR, NULL, 0, 0, "%s",
                                      kiln_error_message(*err));
                return r;
        }
        r = kiln_config_load_string(c, path, b.data, b.len, diags);
        kiln_buf_release(&b);
        return r;
}

const struct kiln_config_registry *kiln_config_registry_find(const struct kiln_config *c,
                                                             const char *host)
{
        for (size_t i = 0; i < c->n_registries; i++)
                if (streq(c->registries[i].host, host))
                        return &c->registries[i];
        return NULL;
}

/* ---- checks across keys ---- */

_printf_(4, 5) static void diag_origin(const struct kiln_config *c, struct kiln_config_diags *d,
                                       size_t offset, const char *fmt, ...)
{
        const struct kiln_config_origin *o = config_origin_get(c, offset);
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        m = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        if (o && o->flag)
                kiln_config_diags_add(d, KILN_CONFIG_ERROR, NULL, 0, 0, "%s: %s", o->flag, m);
        else if (o)
                kiln_config_diags_add(d, KILN_CONFIG_ERROR, o->file, o->line, o->col, "%s", m);
        else
                kiln_config_diags_add(d, KILN_CONFIG_ERROR, NULL, 0, 0, "%s", m);
}

#define OFF(f) offsetof(struct kiln_config, f)

int kiln_config_check(struct kiln_config *c, struct kiln_config_diags *d)
{
        size_t errors = kiln_config_diags_count(d, KILN_CONFIG_ERROR);
        static const char *const snapshotters[] = { "auto", "overlayfs", "fuse-overlayfs", "native",
                                                    "stargz" };
        const struct kiln_config_worker_oci *w = &c->worker_oci;

        /* With a proxy snapshotter any name goes: it is only passed along. */
        if (w->enabled != 0 && (!w->proxy_snapshotter_path || !*w->proxy_snapshotter_path) &&
            w->snapshotter && *w->snapshotter) {
                bool ok = false;
                for (size_t i = 0; i < ELEMENTSOF(snapshotters); i++)
                        if (streq(w->snapshotter, snapshotters[i]))
                                ok = true;
                if (!ok) {
                        const char *s = config_suggest(w->snapshotter, snapshotters,
                                                       ELEMENTSOF(snapshotters));
                        _cleanup_free_ char *dym =
                                s ? kiln_xasprintf("; did you mean \"%s\"?", s) : NULL;
                        diag_origin(c, d, OFF(worker_oci.snapshotter),
                                    "invalid value for 'snapshotter' in [worker.oci]: unknown "
                                    "snapshotter name \"%s\"; expected one of auto, overlayfs, "
                                    "fuse-overlayfs, native, stargz%s",
                                    w->snapshotter, dym ? dym : "");
                }
        }
        if (w->enabled != 0 && w->no_process_sandbox && !w->rootless)
                diag_origin(c, d, OFF(worker_oci.no_process_sandbox),
                            "can't enable NoProcessSandbox without Rootless ('noProcessSandbox' "
                            "in [worker.oci] needs rootless = true)");

        bool cert = c->grpc.tls.cert && *c->grpc.tls.cert;
        bool key = c->grpc.tls.key && *c->grpc.tls.key;
        if (cert != key)
                diag_origin(c, d, cert ? OFF(grpc.tls.cert) : OFF(grpc.tls.key),
                            "[grpc.tls] needs both 'cert' and 'key' (--tlscert and --tlskey); "
                            "only '%s' is set",
                            cert ? "cert" : "key");
        if (c->grpc.tls.ca && *c->grpc.tls.ca && !cert && !key)
                diag_origin(c, d, OFF(grpc.tls.ca),
                            "[grpc.tls] 'ca' (--tlscacert) needs 'cert' and 'key' too");
        /* Stricter than buildkitd on purpose (DESIGN section 8): whoever
         * reaches the API can run builds as root, so TCP needs TLS. */
        for (size_t i = 0; !cert && i < c->grpc.n_address; i++)
                if (startswith(c->grpc.address[i], "tcp://"))
                        diag_origin(c, d, OFF(grpc.address),
                                    "listening on '%s' needs TLS: TCP requires [grpc.tls] cert "
                                    "and key (--tlscert and --tlskey)",
                                    c->grpc.address[i]);
        return kiln_config_diags_count(d, KILN_CONFIG_ERROR) > errors ? -EINVAL : 0;
}

/* ---- host facts ---- */

bool config_running_in_userns(void)
{
        struct kiln_buf b = KILN_BUF_INIT(64u << 10);
        unsigned long a = 1, bb = 1, n = 0;
        bool r;

        /* As moby/sys/userns: the initial namespace maps all of 0..2^32-1. */
        if (kiln_read_file_at(AT_FDCWD, "/proc/self/uid_map", &b) < 0) {
                kiln_buf_release(&b);
                return false;
        }
        r = !(sscanf(b.data, "%lu %lu %lu", &a, &bb, &n) == 3 && a == 0 && bb == 0 &&
              n == 4294967295UL);
        kiln_buf_release(&b);
        return r;
}

#if defined(__x86_64__)
static unsigned long long xgetbv0(void)
{
        unsigned int lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        return ((unsigned long long) hi << 32) | lo;
}

/* The x86-64 micro-architecture level the CPU and OS support (1..4), as
 * tonistiigi/go-archvariant decides it. */
static int amd64_level(void)
{
        unsigned int a, b, c, d, c81 = 0, b7 = 0;
        unsigned long long xcr0 = 0;

        if (!__get_cpuid(1, &a, &b, &c, &d))
                return 1;
        if ((unsigned int) __get_cpuid_max(0x80000000, NULL) >= 0x80000001u) {
                unsigned int a8, b8, d8;
                __get_cpuid(0x80000001, &a8, &b8, &c81, &d8);
        }
        if ((unsigned int) __get_cpuid_max(0, NULL) >= 7u) {
                unsigned int a7, c7, d7;
                __cpuid_count(7, 0, a7, b7, c7, d7);
        }
        bool osxsave = c & (1u << 27);
        if (osxsave)
                xcr0 = xgetbv0();

        bool v2 = (c & (1u << 0)) && (c & (1u << 9)) && (c & (1u << 13)) && (c & (1u << 19)) &&
                  (c & (1u << 20)) && (c & (1u << 23)) && (c81 & (1u << 0));
        bool os_avx = osxsave && (xcr0 & 0x6) == 0x6;
        bool v3 = v2 && os_avx && (c & (1u << 28)) && (c & (1u << 29)) && (c & (1u << 12)) &&
                  (c & (1u << 22)) && (b7 & (1u << 3)) && (b7 & (1u << 5)) && (b7 & (1u << 8)) &&
                  (c81 & (1u << 5));
        bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
        bool v4 = v3 && os_avx512 && (b7 & (1u << 16)) && (b7 & (1u << 17)) && (b7 & (1u << 28)) &&
                  (b7 & (1u << 30)) && (b7 & (1u << 31));
        return v4 ? 4 : v3 ? 3 : v2 ? 2 : 1;
}
#endif

char **kiln_config_detect_platforms(size_t *ret_n)
{
        struct utsname u;
        const char *native = NULL;
        char **r = kiln_xcalloc(6, sizeof(char *));
        size_t n = 0;

        if (uname(&u) == 0) {
                const char *m = u.machine;
                if (streq(m, "x86_64"))
                        native = "linux/amd64";
                else if (streq(m, "aarch64") || streq(m, "arm64"))
                        native = "linux/arm64";
                else if (startswith(m, "armv7"))
                        native = "linux/arm/v7";
                else if (startswith(m, "armv6"))
                        native = "linux/arm/v6";
                else if (streq(m, "i386") || streq(m, "i486") || streq(m, "i586") ||
                         streq(m, "i686"))
                        native = "linux/386";
                else if (streq(m, "ppc64le") || streq(m, "s390x") || streq(m, "riscv64") ||
                         streq(m, "loongarch64") || streq(m, "mips64"))
                        r[n++] =
                                kiln_xasprintf("linux/%s", streq(m, "loongarch64") ? "loong64" : m);
        }
        if (native)
                r[n++] = kiln_xstrdup(native);
        else if (n == 0)
#if defined(__x86_64__)
                r[n++] = kiln_xstrdup("linux/amd64");
#elif defined(__aarch64__)
                r[n++] = kiln_xstrdup("linux/arm64");
#else
                r[n++] = kiln_xstrdup("linux/unknown");
#endif
#if defined(__x86_64__)
        if (native && streq(native, "linux/amd64")) {
                int lvl = amd64_level();
                for (int v = 2; v <= lvl; v++)
                        r[n++] = kiln_xasprintf("linux/amd64/v%d", v);
        }
#endif
        *ret_n = n;
        return r;
}

/* ---- GC ---- */

static bool disk_unset(const struct kiln_config_disk_space *d)
{
        return d->bytes == 0 && d->percentage == 0;
}

static void policy_copy(struct kiln_config_gc_policy *dst, const struct kiln_config_gc_policy *src)
{
        *dst = *src;
        dst->filters = kiln_xcalloc(src->n_filters + 1, sizeof(char *));
        for (size_t i = 0; i < src->n_filters; i++)
                dst->filters[i] = kiln_xstrdup(src->filters[i]);
}

struct kiln_config_gc_policy *
kiln_config_gc_policies_effective(const struct kiln_config_worker_oci *w, uint64_t disk_total,
                                  size_t *ret_n)
{
        struct kiln_config_gc_policy *p;

        *ret_n = 0;
        if (w->gc == 0)
                return NULL;
        if (w->n_gc_policies > 0) {
                p = kiln_xcalloc(w->n_gc_policies, sizeof(*p));
                for (size_t i = 0; i < w->n_gc_policies; i++) {
                        policy_copy(&p[i], &w->gc_policies[i]);
                        /* getGCPolicy: the deprecated keepBytes stands in for reservedSpace. */
                        if (disk_unset(&p[i].reserved_space) && !disk_unset(&p[i].keep_bytes))
                                p[i].reserved_space = p[i].keep_bytes;
                }
                *ret_n = w->n_gc_policies;
                return p;
        }

        /* DefaultGCPolicy */
        struct kiln_config_disk_space reserved = w->reserved_space, max_used = w->max_used_space,
                                      min_free = w->min_free_space;
        if (disk_unset(&reserved) && disk_unset(&max_used) && disk_unset(&min_free))
                reserved = w->gc_keep_storage;
        if (disk_unset(&reserved) && disk_unset(&max_used) && disk_unset(&min_free)) {
                reserved = (struct kiln_config_disk_space){ .percentage = 10 };
                if (kiln_config_disk_space_as_bytes(&reserved, disk_total) > 10000000000LL)
                        reserved = (struct kiln_config_disk_space){ .bytes = 10000000000LL };
                max_used = (struct kiln_config_disk_space){ .percentage = 80 };
                if (kiln_config_disk_space_as_bytes(&max_used, disk_total) > 100000000000LL)
                        max_used = (struct kiln_config_disk_space){ .bytes = 100000000000LL };
                min_free = (struct kiln_config_disk_space){ .percentage = 20 };
        }
        static const char *const filters[] = { "type==source.local", "type==exec.cachemount",
                                               "type==source.git.checkout" };
        p = kiln_xcalloc(4, sizeof(*p));
        p[0].filters = kiln_xcalloc(ELEMENTSOF(filters) + 1, sizeof(char *));
        for (size_t i = 0; i < ELEMENTSOF(filters); i++)
                p[0].filters[i] = kiln_xstrdup(filters[i]);
        p[0].n_filters = ELEMENTSOF(filters);
        p[0].keep_duration = 48LL * 3600 * 1000000000;
        p[0].max_used_space.bytes = 512LL * 1000000;
        for (size_t i = 1; i < 4; i++) {
                p[i].reserved_space = reserved;
                p[i].max_used_space = max_used;
                p[i].min_free_space = min_free;
        }
        p[1].keep_duration = 60LL * 24 * 3600 * 1000000000;
        p[3].all = true;
        *ret_n = 4;
        return p;
}
