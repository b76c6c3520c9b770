/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Platforms as containerd's platforms package (vendored in BuildKit:
 * github.com/containerd/platforms) parses, normalises and matches them.
 */

#include <ctype.h>

#include "content-internal.h"

#if defined(__x86_64__)
#define HOST_ARCH    "amd64"
#define HOST_VARIANT NULL
#elif defined(__aarch64__)
#define HOST_ARCH    "arm64"
#define HOST_VARIANT "v8"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH == 5
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v5"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH == 6
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v6"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 8
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v8"
#elif defined(__arm__)
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v7"
#elif defined(__i386__)
#define HOST_ARCH    "386"
#define HOST_VARIANT NULL
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ARCH    "ppc64le"
#define HOST_VARIANT NULL
#elif defined(__s390x__)
#define HOST_ARCH    "s390x"
#define HOST_VARIANT NULL
#elif defined(__riscv) && __riscv_xlen == 64
#define HOST_ARCH    "riscv64"
#define HOST_VARIANT NULL
#elif defined(__loongarch64)
#define HOST_ARCH    "loong64"
#define HOST_VARIANT NULL
#else
#error "unknown host architecture: teach src/content/platform.c its GOARCH name"
#endif
#define HOST_OS "linux"

/* The bytes of one platform specifier that kiln accepts (a bound for
 * hostile input; real ones are a few dozen bytes). */
#define PLATFORM_SPEC_MAX 1024

static bool known_os(const char *os)
{
        static const char *const list[] = { "aix",     "android", "darwin",  "dragonfly", "freebsd",
                                            "hurd",    "illumos", "ios",     "js",        "linux",
                                            "nacl",    "netbsd",  "openbsd", "plan9",     "solaris",
                                            "windows", "zos" };
        size_t i;

        for (i = 0; i < ELEMENTSOF(list); i++)
                if (streq(os, list[i]))
                        return true;
        return false;
}

static bool known_arch(const char *arch)
{
        static const char *const list[] = {
                "386",     "amd64",    "amd64p32",  "arm",         "armbe",   "arm64",
                "arm64be", "ppc64",    "ppc64le",   "loong64",     "mips",    "mipsle",
                "mips64",  "mips64le", "mips64p32", "mips64p32le", "ppc",     "riscv",
                "riscv64", "s390",     "s390x",     "sparc",       "sparc64", "wasm",
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(list); i++)
                if (streq(arch, list[i]))
                        return true;
        return false;
}

static void set_str(char **p, const char *v)
{
        free(*p);
        *p = v && *v ? kiln_xstrdup(v) : NULL;
}

static void lower(char *s)
{
        for (; s && *s; s++)
                *s = (char) tolower((unsigned char) *s);
}

static bool str_is(const char *s, const char *v)
{
        return streq(s ? s : "", v);
}

static void normalize_os(char **os)
{
        if (!*os || !**os) {
                set_str(os, HOST_OS);
                return;
        }
        lower(*os);
        if (streq(*os, "macos"))
                set_str(os, "darwin");
}

static void normalize_arch(char **arch, char **variant)
{
        lower(*arch);
        lower(*variant);
        if (!*arch)
                return;
        if (streq(*arch, "i386")) {
                set_str(arch, "386");
                set_str(variant, NULL);
        } else if (streq(*arch, "x86_64") || streq(*arch, "x86-64") || streq(*arch, "amd64")) {
                set_str(arch, "amd64");
                if (str_is(*variant, "v1"))
                        set_str(variant, NULL);
        } else if (streq(*arch, "aarch64") || streq(*arch, "arm64")) {
                set_str(arch, "arm64");
                if (str_is(*variant, "8") || str_is(*variant, "v8") || str_is(*variant, "v8.0"))
                        set_str(variant, NULL);
                else if (str_is(*variant, "9") || str_is(*variant, "9.0") ||
                         str_is(*variant, "v9.0"))
                        set_str(variant, "v9");
        } else if (streq(*arch, "armhf")) {
                set_str(arch, "arm");
                set_str(variant, "v7");
        } else if (streq(*arch, "armel")) {
                set_str(arch, "arm");
                set_str(variant, "v6");
        } else if (streq(*arch, "arm")) {
                if (str_is(*variant, "") || str_is(*variant, "7"))
                        set_str(variant, "v7");
                else if (str_is(*variant, "5") || str_is(*variant, "6") || str_is(*variant, "8")) {
                        _cleanup_free_ char *v = kiln_xasprintf("v%s", *variant);

                        set_str(variant, v);
                }
        }
}

static int feature_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

void kiln_content_platform_normalize(struct kiln_content_platform *p)
{
        size_t n, i, o;

        normalize_os(&p->os);
        normalize_arch(&p->architecture, &p->variant);
        n = strv_length(p->os_features);
        if (n == 0)
                return;
        qsort(p->os_features, n, sizeof(char *), feature_cmp);
        for (i = 1, o = 1; i < n; i++) {
                if (streq(p->os_features[i], p->os_features[o - 1])) {
                        free(p->os_features[i]);
                        continue;
                }
                p->os_features[o++] = p->os_features[i];
        }
        p->os_features[o] = NULL;
}

void kiln_content_platform_release(struct kiln_content_platform *p)
{
        free(p->os);
        free(p->architecture);
        free(p->variant);
        free(p->os_version);
        strv_free(p->os_features);
        *p = (struct kiln_content_platform){ 0 };
}

void kiln_content_platform_copy(struct kiln_content_platform *dst,
                                const struct kiln_content_platform *src)
{
        *dst = (struct kiln_content_platform){
                .os = src->os ? kiln_xstrdup(src->os) : NULL,
                .architecture = src->architecture ? kiln_xstrdup(src->architecture) : NULL,
                .variant = src->variant ? kiln_xstrdup(src->variant) : NULL,
                .os_version = src->os_version ? kiln_xstrdup(src->os_version) : NULL,
                .os_features = strv_copy(src->os_features),
        };
}

void kiln_content_platform_default(struct kiln_content_platform *ret)
{
        *ret = (struct kiln_content_platform){
                .os = kiln_xstrdup(HOST_OS),
                .architecture = kiln_xstrdup(HOST_ARCH),
                .variant = HOST_VARIANT ? kiln_xstrdup(HOST_VARIANT) : NULL,
        };
}

/* ---- parsing ---- */

static bool spec_char(char ch)
{
        return isalnum((unsigned char) ch) || ch == '_' || ch == '.' || ch == '-';
}

static bool option_char(char ch)
{
        return isalnum((unsigned char) ch) || ch == '_' || ch == '.' || ch == '%' || ch == '-';
}

/* url.PathUnescape: every '%' starts two hex digits. */
static int unescape(const char *s, size_t n, char **ret)
{
        char *o = kiln_xmalloc(n + 1);
        size_t i, k = 0;

        for (i = 0; i < n; i++) {
                if (s[i] != '%') {
                        o[k++] = s[i];
                        continue;
                }
                if (i + 2 >= n || !isxdigit((unsigned char) s[i + 1]) ||
                    !isxdigit((unsigned char) s[i + 2])) {
                        free(o);
                        return -EINVAL;
                }
                {
                        char hex[3] = { s[i + 1], s[i + 2], 0 };

                        o[k++] = (char) strtol(hex, NULL, 16);
                }
                i += 2;
        }
        o[k] = '\0';
        *ret = o;
        return 0;
}

static int parse_error(struct kiln_error **err, const char *spec, const char *fmt, ...)
        _printf_(3, 4);
static int parse_error(struct kiln_error **err, const char *spec, const char *fmt, ...)
{
        _cleanup_free_ char *q = quote_string(spec), *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_error_set(err, -EINVAL, "invalid platform %s: %s", q, msg);
}

/* The OS component: name[(version[+feature...])]. */
static int parse_os(const char *part, size_t n, struct kiln_content_platform *p,
                    struct kiln_error **err, const char *spec)
{
        size_t i = 0, name_end, v_start, v_end;
        int r;

        while (i < n && (isalnum((unsigned char) part[i]) || part[i] == '_' || part[i] == '-'))
                i++;
        name_end = i;
        if (name_end == 0)
                goto bad;
        if (i < n) {
                if (part[i] != '(' || part[n - 1] != ')')
                        goto bad;
                v_start = ++i;
                while (i < n - 1 && option_char(part[i]))
                        i++;
                v_end = i;
                /* (+feature)* up to the closing parenthesis */
                while (i < n - 1) {
                        size_t f = ++i;

                        if (part[f - 1] != '+')
                                goto bad;
                        while (i < n - 1 && option_char(part[i]))
                                i++;
                        if (i == f)
                                goto bad;
                }
                if (v_end > v_start) {
                        r = unescape(part + v_start, v_end - v_start, &p->os_version);
                        if (r < 0)
                                return parse_error(err, spec, "bad OS version escape");
                        if (!*p->os_version)
                                set_str(&p->os_version, NULL);
                }
                if (v_end < n - 1) {
                        /* Features: '+'-separated, each unescaped; empty
                         * results dropped as containerd drops them. */
                        const char *s = part + v_end + 1, *end = part + n - 1;
                        size_t count = 0;

                        p->os_features = kiln_xcalloc((size_t) (end - s) + 2, sizeof(char *));
                        while (s < end) {
                                const char *plus = memchr(s, '+', (size_t) (end - s));
                                size_t len = plus ? (size_t) (plus - s) : (size_t) (end - s);
                                char *feat;

                                r = unescape(s, len, &feat);
                                if (r < 0)
                                        return parse_error(err, spec, "bad OS feature escape");
                                if (*feat)
                                        p->os_features[count++] = feat;
                                else
                                        free(feat);
                                s += len + (plus ? 1 : 0);
                        }
                        if (count == 0) {
                                strv_free(p->os_features);
                                p->os_features = NULL;
                        }
                }
        }
        p->os = kiln_xstrndup(part, name_end);
        normalize_os(&p->os);
        return 0;
bad : {
        _cleanup_free_ char *c = kiln_xstrndup(part, n), *q = quote_string(c);

        return parse_error(err, spec,
                           "%s is not an OS: expected letters, digits, '_' or '-', "
                           "optionally followed by (version+features)",
                           q);
}
}

int kiln_content_platform_parse(const char *spec, struct kiln_content_platform *ret,
                                struct kiln_error **err)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 };
        const char *parts[3];
        size_t lens[3], n = 0, i;
        const char *s = spec;
        int r;

        if (strlen(spec) > PLATFORM_SPEC_MAX)
                return parse_error(err, spec, "longer than %d bytes", PLATFORM_SPEC_MAX);
        if (strchr(spec, '*'))
                return parse_error(err, spec, "wildcards are not supported");
        for (;;) {
                const char *slash = strchr(s, '/');

                if (n == 3)
                        return parse_error(err, spec,
                                           "too many components, expected os[/arch[/variant]]");
                parts[n] = s;
                lens[n] = slash ? (size_t) (slash - s) : strlen(s);
                n++;
                if (!slash)
                        break;
                s = slash + 1;
        }
        for (i = 1; i < n; i++) {
                size_t k;
                bool ok = lens[i] > 0;

                for (k = 0; ok && k < lens[i]; k++)
                        ok = spec_char(parts[i][k]);
                if (!ok) {
                        _cleanup_free_ char *c = kiln_xstrndup(parts[i], lens[i]),
                                            *q = quote_string(c);

                        return parse_error(err, spec,
                                           "bad component %s: expected letters, digits, '_', "
                                           "'.' or '-'",
                                           q);
                }
        }
        r = parse_os(parts[0], lens[0], &p, err, spec);
        if (r < 0)
                return r;

        switch (n) {
        case 1:
                if (known_os(p.os)) {
                        set_str(&p.architecture, HOST_ARCH);
                        if (streq(HOST_ARCH, "arm") && !str_is(HOST_VARIANT, "v7"))
                                set_str(&p.variant, HOST_VARIANT);
                        break;
                }
                /* A bare architecture: "amd64" is the host OS on amd64. */
                set_str(&p.architecture, NULL);
                p.architecture = kiln_xstrndup(parts[0], lens[0]);
                set_str(&p.variant, NULL);
                normalize_arch(&p.architecture, &p.variant);
                if (str_is(p.architecture, "arm") && str_is(p.variant, "v7"))
                        set_str(&p.variant, NULL);
                if (!known_arch(p.architecture))
                        return parse_error(err, spec, "unknown operating system or architecture");
                set_str(&p.os, HOST_OS);
                break;
        case 2:
                p.architecture = kiln_xstrndup(parts[1], lens[1]);
                normalize_arch(&p.architecture, &p.variant);
                if (str_is(p.architecture, "arm") && str_is(p.variant, "v7"))
                        set_str(&p.variant, NULL);
                break;
        case 3:
                p.architecture = kiln_xstrndup(parts[1], lens[1]);
                p.variant = kiln_xstrndup(parts[2], lens[2]);
                normalize_arch(&p.architecture, &p.variant);
                if (str_is(p.architecture, "arm64") && !p.variant)
                        set_str(&p.variant, "v8");
                break;
        }
        *ret = p;
        p = (struct kiln_content_platform){ 0 };
        return 0;
}

/* ---- formatting ---- */

static void put_option(struct kiln_buf *b, const char *v)
{
        for (; *v; v++)
                switch (*v) {
                case '%':
                        (void) kiln_buf_puts(b, "%25");
                        break;
                case '+':
                        (void) kiln_buf_puts(b, "%2B");
                        break;
                case '(':
                        (void) kiln_buf_puts(b, "%28");
                        break;
                case ')':
                        (void) kiln_buf_puts(b, "%29");
                        break;
                case '/':
                        (void) kiln_buf_puts(b, "%2F");
                        break;
                default:
                        (void) kiln_buf_putc(b, *v);
                }
}

char *kiln_content_platform_format(const struct kiln_content_platform *p)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX / 2);
        char **features = NULL;
        size_t n, i;

        if (!p->os || !*p->os)
                return kiln_xstrdup("unknown");
        (void) kiln_buf_puts(&b, p->os);
        n = strv_length(p->os_features);
        if ((p->os_version && *p->os_version) || n > 0) {
                (void) kiln_buf_putc(&b, '(');
                if (p->os_version)
                        put_option(&b, p->os_version);
                features = strv_copy(p->os_features);
                if (n)
                        qsort(features, n, sizeof(char *), feature_cmp);
                for (i = 0; i < n; i++) {
                        if (!*features[i] || (i > 0 && streq(features[i], features[i - 1])))
                                continue;
                        (void) kiln_buf_putc(&b, '+');
                        put_option(&b, features[i]);
                }
                strv_free(features);
                (void) kiln_buf_putc(&b, ')');
        }
        if (p->architecture && *p->architecture) {
                (void) kiln_buf_putc(&b, '/');
                (void) kiln_buf_puts(&b, p->architecture);
        }
        if (p->variant && *p->variant) {
                (void) kiln_buf_putc(&b, '/');
                (void) kiln_buf_puts(&b, p->variant);
        }
        return kiln_buf_steal(&b);
}

/* ---- matching ---- */

/* One entry of containerd's platformVector: os and os.* come from want. */
struct vec_entry {
        const char *arch;
        char variant[16];
};

#define VEC_MAX 32

static size_t platform_vector(const char *arch, const char *variant, struct vec_entry *v)
{
        size_t n = 0;
        int ver;

        v[n].arch = arch;
        (void) snprintf(v[n].variant, sizeof(v[n].variant), "%s", variant ? variant : "");
        n++;
        if (streq(arch, "amd64")) {
                if (variant && variant[0] == 'v' &&
                    (ver = (int) strtol(variant + 1, NULL, 10)) > 1 && ver < 100)
                        for (ver--; ver >= 1 && n < VEC_MAX - 1; ver--) {
                                v[n].arch = "amd64";
                                (void) snprintf(v[n].variant, sizeof(v[n].variant), "v%d", ver);
                                n++;
                        }
                v[n].arch = "386";
                v[n].variant[0] = '\0';
                n++;
        } else if (streq(arch, "arm")) {
                if (variant && variant[0] == 'v' &&
                    (ver = (int) strtol(variant + 1, NULL, 10)) > 5 && ver < 100)
                        for (ver--; ver >= 5 && n < VEC_MAX; ver--) {
                                v[n].arch = "arm";
                                (void) snprintf(v[n].variant, sizeof(v[n].variant), "v%d", ver);
                                n++;
                        }
        } else if (streq(arch, "arm64")) {
                /* arm64/v8.x also runs v8.{x-1..0}; v9.x also v9.{x-1..0} and
                 * v8.{x+5..0} (capped at 8.9); then every arm64 runs arm/v8
                 * and below. */
                const char *var = variant && *variant ? variant : "v8";
                int major, minor = 0, majors[2], minors[2], nm = 0, i, m;
                char *end;

                n = 0;
                if (var[0] != 'v')
                        return 0;
                major = (int) strtol(var + 1, &end, 10);
                if (end == var + 1)
                        return 0;
                if (*end == '.') {
                        if (!isdigit((unsigned char) end[1]) || end[2])
                                return 0;
                        minor = end[1] - '0';
                } else if (*end)
                        return 0;
                if (major == 8) {
                        majors[nm] = 8;
                        minors[nm++] = minor;
                } else if (major == 9 && minor <= 7) {
                        majors[nm] = 9;
                        minors[nm++] = minor;
                        majors[nm] = 8;
                        minors[nm++] = minor + 5 > 9 ? 9 : minor + 5;
                } else
                        return 0;
                for (i = 0; i < nm; i++)
                        for (m = minors[i]; m >= 0; m--) {
                                v[n].arch = "arm64";
                                if (m == 0)
                                        (void) snprintf(v[n].variant, sizeof(v[n].variant), "v%d",
                                                        majors[i]);
                                else
                                        (void) snprintf(v[n].variant, sizeof(v[n].variant),
                                                        "v%d.%d", majors[i], m);
                                n++;
                        }
                for (ver = 8; ver >= 5; ver--) {
                        v[n].arch = "arm";
                        (void) snprintf(v[n].variant, sizeof(v[n].variant), "v%d", ver);
                        n++;
                }
        }
        return n;
}

/* Is every feature of have in want (both sorted)? */
static bool features_subset(char *const *have, char *const *want)
{
        size_t i, j = 0, nw = strv_length(want);

        for (i = 0; have && have[i]; i++) {
                bool found = false;

                for (; j < nw; j++) {
                        int c = strcmp(have[i], want[j]);

                        if (c == 0) {
                                found = true;
                                j++;
                                break;
                        }
                        if (c < 0)
                                return false;
                }
                if (!found)
                        return false;
        }
        return true;
}

int kiln_content_platform_rank(const struct kiln_content_platform *want,
                               const struct kiln_content_platform *have)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform w = { 0 }, h = { 0 };
        struct vec_entry vec[VEC_MAX];
        size_t n, i;

        kiln_content_platform_copy(&w, want);
        kiln_content_platform_copy(&h, have);
        kiln_content_platform_normalize(&w);
        kiln_content_platform_normalize(&h);
        if (!w.architecture || !h.architecture || !streq(w.os, h.os))
                return -1;
        if (w.os_version && !streq_ptr(w.os_version, h.os_version))
                return -1;
        if (w.os_features && !features_subset(h.os_features, w.os_features))
                return -1;
        n = platform_vector(w.architecture, w.variant, vec);
        for (i = 0; i < n; i++) {
                _cleanup_free_ char *arch = kiln_xstrdup(vec[i].arch);
                _cleanup_free_ char *variant =
                        vec[i].variant[0] ? kiln_xstrdup(vec[i].variant) : NULL;

                normalize_arch(&arch, &variant);
                if (streq(arch, h.architecture) && streq_ptr(variant, h.variant))
                        return (int) i;
        }
        return -1;
}

/* ---- JSON ---- */

int platform_from_json(struct doc_ctx *c, json_t *obj, const char *path,
                       struct kiln_content_platform *ret)
{
        _cleanup_(kiln_content_platform_release) struct kiln_content_platform p = { 0 };
        int r;

        if (!json_is_object(obj)) {
                _cleanup_free_ char *got = json_brief(obj);

                return doc_error(c, path, NULL, "expected an object, got %s", got);
        }
        r = get_string(c, obj, path, "architecture", true, &p.architecture);
        if (r >= 0)
                r = get_string(c, obj, path, "os", true, &p.os);
        if (r >= 0)
                r = get_string(c, obj, path, "os.version", false, &p.os_version);
        if (r >= 0)
                r = get_strv(c, obj, path, "os.features", false, &p.os_features);
        if (r >= 0)
                r = get_string(c, obj, path, "variant", false, &p.variant);
        if (r < 0)
                return r;
        *ret = p;
        p = (struct kiln_content_platform){ 0 };
        return 0;
}

json_t *platform_to_json(const struct kiln_content_platform *p)
{
        json_t *o = json_object();

        /* Go's specs.Platform field order; omitempty as there. */
        (void) json_object_set_new(o, "architecture",
                                   json_string(p->architecture ? p->architecture : ""));
        (void) json_object_set_new(o, "os", json_string(p->os ? p->os : ""));
        if (p->os_version && *p->os_version)
                (void) json_object_set_new(o, "os.version", json_string(p->os_version));
        if (p->os_features && p->os_features[0]) {
                json_t *a = json_array();
                size_t i;

                for (i = 0; p->os_features[i]; i++)
                        (void) json_array_append_new(a, json_string(p->os_features[i]));
                (void) json_object_set_new(o, "os.features", a);
        }
        if (p->variant && *p->variant)
                (void) json_object_set_new(o, "variant", json_string(p->variant));
        return o;
}
