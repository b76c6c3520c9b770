/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buildkitd's util/resolver/resolver.go (NewRegistryConfig, fillInsecureOpts,
 * loadTLSConfig) and utils.go (extractMirrorHostAndPath), with containerd's
 * ConfigureDefaultRegistries and MatchLocalhost for hosts without a section.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <string.h>
#include <sys/stat.h>

#include "hosts.h"
#include "registry-internal.h"
#include "registry-limits.h"

#define DOCKER_HUB_DOMAIN "docker.io"
#define DOCKER_HUB_HOST   "registry-1.docker.io"
#define DEFAULT_PATH      "/v2"

/* ---- loopback ---- */

static bool ip_is_loopback(const char *s)
{
        unsigned char a[16];

        if (inet_pton(AF_INET, s, a) == 1)
                return a[0] == 127;
        if (inet_pton(AF_INET6, s, a) == 1) {
                static const unsigned char v4mapped[12] = {
                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
                };
                static const unsigned char one[16] = { [15] = 1 };

                if (memcmp(a, one, 16) == 0)
                        return true;
                return memcmp(a, v4mapped, 12) == 0 && a[12] == 127;
        }
        return false;
}

bool kiln_registry_host_is_loopback(const char *host)
{
        _cleanup_free_ char *h = NULL;
        const char *colon;

        if (streq(host, "::1") || streq(host, "[::1]"))
                return true;
        /* Go's net.SplitHostPort; "missing port" means the host alone. */
        if (host[0] == '[') {
                const char *close = strchr(host, ']');

                if (!close)
                        return false;
                if (close[1] == 0)
                        h = kiln_xstrdup(host); /* "[x]" alone never parses as an IP */
                else if (close[1] == ':' && close[2] != 0)
                        h = kiln_xstrndup(host + 1, (size_t) (close - host - 1));
                else
                        return false;
        } else {
                colon = strchr(host, ':');
                if (!colon)
                        h = kiln_xstrdup(host);
                else if (strchr(colon + 1, ':') || colon[1] == 0)
                        return false; /* too many colons; empty port */
                else
                        h = kiln_xstrndup(host, (size_t) (colon - host));
        }
        if (streq(h, "localhost"))
                return true;
        return ip_is_loopback(h);
}

/* ---- mirrors ---- */

static bool valid_url_host_byte(unsigned char c)
{
        if (c >= 0x80)
                return true;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                return true;
        return c && strchr("-_.~!$&'()*+,;=:[]<>\"", c);
}

/* Go's url.Parse("//" + rest): the host (user info dropped) and the
 * decoded path. false where Go would fail or find no host. */
static bool parse_authority_and_path(const char *rest, char **ret_host, char **ret_path)
{
        size_t alen = strcspn(rest, "/?#"), plen;
        const char *auth = rest, *at, *hend, *path = rest + alen;
        _cleanup_free_ char *host = NULL, *p = NULL;

        for (const char *c = rest; *c; c++)
                if ((unsigned char) *c < 0x20 || *c == 0x7f)
                        return false;
        at = memrchr(auth, '@', alen);
        if (at) {
                alen -= (size_t) (at + 1 - auth);
                auth = at + 1;
        }
        if (alen == 0)
                return false;
        if (auth[0] == '[') {
                const char *close = memchr(auth, ']', alen);

                if (!close)
                        return false;
                hend = close + 1;
        } else {
                const char *colon = memrchr(auth, ':', alen);

                hend = colon ? colon : auth + alen;
        }
        /* validOptionalPort: ":" and digits, or nothing */
        if (hend < auth + alen) {
                if (*hend != ':')
                        return false;
                for (const char *c = hend + 1; c < auth + alen; c++)
                        if (*c < '0' || *c > '9')
                                return false;
        }
        for (const char *c = auth; c < auth + alen; c++)
                if (!valid_url_host_byte((unsigned char) *c))
                        return false;
        host = kiln_xstrndup(auth, alen);

        plen = strcspn(path, "?#");
        p = url_path_unescape(path, plen);
        if (!p)
                return false;
        for (size_t n = strlen(p); n > 0 && p[n - 1] == '/'; n--)
                p[n - 1] = 0;
        *ret_host = TAKE_PTR(host);
        *ret_path = TAKE_PTR(p);
        return true;
}

void kiln_registry_mirror_split(const char *mirror, char **ret_host, char **ret_prefix)
{
        size_t slen = 0;

        /* A "scheme://" (scheme = [A-Za-z][A-Za-z0-9+.-]*) is parsed and
         * dropped; without one the entry is read as "//" + entry. */
        if ((mirror[0] >= 'a' && mirror[0] <= 'z') || (mirror[0] >= 'A' && mirror[0] <= 'Z')) {
                slen = strspn(mirror,
                              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
                if (!startswith(mirror + slen, "://"))
                        slen = 0;
        }
        if (slen > 0 && parse_authority_and_path(mirror + slen + 3, ret_host, ret_prefix))
                return;
        if (parse_authority_and_path(startswith(mirror, "//") ? mirror + 2 : mirror, ret_host,
                                     ret_prefix))
                return;
        *ret_host = kiln_xstrdup(mirror);
        *ret_prefix = kiln_xstrdup("");
}

/* ---- TLS ---- */

static void tls_release(struct kiln_registry_tls *t)
{
        for (size_t i = 0; i < t->n_ca_files; i++)
                free(t->ca_files[i]);
        free(t->ca_files);
        for (size_t i = 0; i < t->n_keypairs; i++) {
                free(t->keypairs[i].cert);
                free(t->keypairs[i].key);
        }
        free(t->keypairs);
        *t = (struct kiln_registry_tls){ 0 };
}

static void tls_add_ca(struct kiln_registry_tls *t, const char *path)
{
        t->ca_files = kiln_xreallocarray(t->ca_files, t->n_ca_files + 1, sizeof(char *));
        t->ca_files[t->n_ca_files++] = kiln_xstrdup(path);
}

static void tls_add_keypair(struct kiln_registry_tls *t, const char *cert, const char *key)
{
        t->keypairs = kiln_xreallocarray(t->keypairs, t->n_keypairs + 1, sizeof(*t->keypairs));
        t->keypairs[t->n_keypairs].cert = kiln_xstrdup(cert);
        t->keypairs[t->n_keypairs].key = kiln_xstrdup(key);
        t->n_keypairs++;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void free_names(char **names, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

/* Appends dir's "*.crt" and "X.cert" (+ "X.key") in name order, as Go's
 * os.ReadDir lists them. A missing or forbidden dir adds nothing. */
static int tls_expand_dir(struct kiln_registry_tls *t, const char *dir, struct kiln_error **err)
{
        DIR *d = opendir(dir);
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;

        if (!d) {
                if (errno == ENOENT || errno == EACCES || errno == EPERM)
                        return 0;
                return kiln_error_set(err, -errno, "read tlsconfigdir '%s': %m", dir);
        }
        errno = 0;
        while ((e = readdir(d))) {
                if (streq(e->d_name, ".") || streq(e->d_name, ".."))
                        continue;
                if (n >= KILN_LIMIT_REGISTRY_TLSCONFIGDIR_ENTRIES) {
                        closedir(d);
                        free_names(names, n);
                        return kiln_error_set(err, -E2BIG,
                                              "read tlsconfigdir '%s': more than %u entries", dir,
                                              KILN_LIMIT_REGISTRY_TLSCONFIGDIR_ENTRIES);
                }
                names = kiln_xreallocarray(names, n + 1, sizeof(char *));
                names[n++] = kiln_xstrdup(e->d_name);
        }
        if (errno != 0) {
                int r = -errno;
                closedir(d);
                free_names(names, n);
                return kiln_error_set(err, r, "read tlsconfigdir '%s': %s", dir, strerror(-r));
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(names[i]);
                _cleanup_free_ char *path = kiln_xasprintf("%s/%s", dir, names[i]);

                if (len >= 4 && streq(names[i] + len - 4, ".crt"))
                        tls_add_ca(t, path);
                if (len >= 5 && streq(names[i] + len - 5, ".cert")) {
                        _cleanup_free_ char *key =
                                kiln_xasprintf("%s/%.*s.key", dir, (int) (len - 5), names[i]);
                        tls_add_keypair(t, path, key);
                }
        }
        free_names(names, n);
        return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
        /* Never prompt on a terminal: an encrypted key is an error, as in Go. */
        return -1;
}

static int check_keypair(const struct kiln_registry_keypair *kp, struct kiln_error **err)
{
        _cleanup_fclose_ FILE *cf = NULL, *kf = NULL;
        X509 *cert = NULL;
        EVP_PKEY *key = NULL;
        int r = 0;

        cf = fopen(kp->cert, "re");
        if (!cf)
                return kiln_error_set(err, -errno, "load keypair for '%s': %m", kp->cert);
        kf = fopen(kp->key, "re");
        if (!kf)
                return kiln_error_set(err, -errno, "load keypair for '%s': key '%s': %m", kp->cert,
                                      kp->key);
        cert = PEM_read_X509(cf, NULL, no_passphrase, NULL);
        if (!cert) {
                r = kiln_error_set(err, -EINVAL,
                                   "load keypair for '%s': no PEM certificate in the file",
                                   kp->cert);
                goto out;
        }
        key = PEM_read_PrivateKey(kf, NULL, no_passphrase, NULL);
        if (!key) {
                r = kiln_error_set(err, -EINVAL,
                                   "load keypair for '%s': no usable PEM private key in '%s' "
                                   "(encrypted keys are not supported)",
                                   kp->cert, kp->key);
                goto out;
        }
        if (X509_check_private_key(cert, key) != 1)
                r = kiln_error_set(err, -EINVAL,
                                   "load keypair for '%s': private key '%s' does not match the "
                                   "certificate",
                                   kp->cert, kp->key);
out:
        /* OpenSSL's error queue is per thread; leave nothing in it. */
        ERR_clear_error();
        X509_free(cert);
        EVP_PKEY_free(key);
        return r;
}

/* loadTLSConfig: the settings' files, then each tlsconfigdir's; every CA
 * file must be readable and every keypair must load. */
static int load_tls(struct kiln_registry_tls *t, const struct kiln_config_registry *s,
                    struct kiln_error **err)
{
        int r;

        if (!s)
                return 0;
        for (size_t i = 0; i < s->n_ca; i++)
                tls_add_ca(t, s->ca[i]);
        for (size_t i = 0; i < s->n_keypairs; i++)
                tls_add_keypair(t, s->keypairs[i].cert ? s->keypairs[i].cert : "",
                                s->keypairs[i].key ? s->keypairs[i].key : "");
        for (size_t i = 0; i < s->n_tlsconfigdir; i++) {
                r = tls_expand_dir(t, s->tlsconfigdir[i], err);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < t->n_ca_files; i++) {
                _cleanup_close_ int fd = open(t->ca_files[i], O_RDONLY | O_CLOEXEC);
                struct stat st;

                if (fd < 0)
                        return kiln_error_set(err, -errno, "read ca '%s': %m", t->ca_files[i]);
                if (fstat(fd, &st) < 0)
                        return kiln_error_set(err, -errno, "read ca '%s': %m", t->ca_files[i]);
                if (S_ISDIR(st.st_mode))
                        return kiln_error_set(err, -EISDIR, "read ca '%s': %s", t->ca_files[i],
                                              strerror(EISDIR));
        }
        for (size_t i = 0; i < t->n_keypairs; i++) {
                r = check_keypair(&t->keypairs[i], err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* fillInsecureOpts for host h with settings s (NULL: none). */
static int fill_insecure_opts(struct kiln_registry_host *h, const struct kiln_config_registry *s,
                              struct kiln_error **err)
{
        bool is_http = false;
        int r;

        r = load_tls(&h->tls, s, err);
        if (r < 0)
                return r;
        if (s && s->http > 0)
                is_http = true;
        if ((!s || s->http < 0) && kiln_registry_host_is_loopback(h->host))
                is_http = true;

        if (s && s->insecure > 0) {
                h->tls.insecure_skip_verify = true;
                h->http_fallback = is_http;
        } else if (is_http) {
                free(h->scheme);
                h->scheme = kiln_xstrdup("http");
        }
        return 0;
}

/* ---- the list ---- */

static void host_release(struct kiln_registry_host *h)
{
        free(h->scheme);
        free(h->host);
        free(h->path_prefix);
        tls_release(&h->tls);
}

struct kiln_registry_hosts *kiln_registry_hosts_free(struct kiln_registry_hosts *h)
{
        if (!h)
                return NULL;
        for (size_t i = 0; i < h->n; i++)
                host_release(&h->items[i]);
        free(h->items);
        free(h->ref_host);
        free(h);
        return NULL;
}

static struct kiln_registry_host *hosts_add(struct kiln_registry_hosts *hs, const char *host,
                                            const char *path, unsigned caps)
{
        struct kiln_registry_host *h;

        hs->items = kiln_xreallocarray(hs->items, hs->n + 1, sizeof(*hs->items));
        h = &hs->items[hs->n++];
        *h = (struct kiln_registry_host){
                .scheme = kiln_xstrdup("https"),
                .host = kiln_xstrdup(host),
                .path_prefix = kiln_xstrdup(path),
                .caps = caps,
        };
        return h;
}

int kiln_registry_hosts_build(const struct kiln_config *c, const char *ref_host,
                              struct kiln_registry_hosts **ret, struct kiln_error **err)
{
        _cleanup_(kiln_registry_hosts_freep) struct kiln_registry_hosts *hs = NULL;
        const struct kiln_config_registry *s = c ? kiln_config_registry_find(c, ref_host) : NULL;
        const char *origin = streq(ref_host, DOCKER_HUB_DOMAIN) ? DOCKER_HUB_HOST : ref_host;
        struct kiln_registry_host *h;
        int r;

        hs = kiln_xcalloc(1, sizeof(*hs));
        hs->ref_host = kiln_xstrdup(ref_host);

        if (!s) {
                /* ConfigureDefaultRegistries with WithPlainHTTP(MatchLocalhost):
                 * the loopback test is on the reference's host. */
                h = hosts_add(hs, origin, DEFAULT_PATH,
                              KILN_REGISTRY_CAP_PULL | KILN_REGISTRY_CAP_RESOLVE |
                                      KILN_REGISTRY_CAP_PUSH | KILN_REGISTRY_CAP_REFERRERS);
                if (kiln_registry_host_is_loopback(ref_host)) {
                        free(h->scheme);
                        h->scheme = kiln_xstrdup("http");
                }
                *ret = TAKE_PTR(hs);
                return 0;
        }

        for (size_t i = 0; i < s->n_mirrors; i++) {
                _cleanup_free_ char *mhost = NULL, *prefix = NULL;
                _cleanup_(kiln_buf_release) struct kiln_buf path =
                        KILN_BUF_INIT(KILN_LIMIT_REGISTRY_URL);
                const char *parts[] = { DEFAULT_PATH, NULL };

                kiln_registry_mirror_split(s->mirrors[i], &mhost, &prefix);
                parts[1] = prefix;
                r = url_path_join(&path, parts, ELEMENTSOF(parts));
                if (r < 0)
                        return kiln_error_set(err, r, "registry mirror '%s' of '%s': path too long",
                                              mhost, ref_host);
                h = hosts_add(hs, mhost, path.data,
                              KILN_REGISTRY_CAP_PULL | KILN_REGISTRY_CAP_RESOLVE);
                h->is_mirror = true;
                r = fill_insecure_opts(h, c ? kiln_config_registry_find(c, mhost) : NULL, err);
                if (r < 0)
                        return kiln_error_wrap(err, "registry mirror '%s' of '%s'", mhost,
                                               ref_host);
        }

        h = hosts_add(hs, origin, DEFAULT_PATH,
                      KILN_REGISTRY_CAP_PUSH | KILN_REGISTRY_CAP_PULL | KILN_REGISTRY_CAP_RESOLVE);
        r = fill_insecure_opts(h, s, err);
        if (r < 0)
                return kiln_error_wrap(err, "registry '%s'", ref_host);

        *ret = TAKE_PTR(hs);
        return 0;
}

const struct kiln_registry_host *kiln_registry_hosts_push_host(const struct kiln_registry_hosts *h)
{
        for (size_t i = 0; i < h->n; i++)
                if (kiln_registry_host_can(&h->items[i], KILN_REGISTRY_CAP_PUSH))
                        return &h->items[i];
        return NULL;
}

bool kiln_registry_host_is_proxy(const struct kiln_registry_host *h, const char *ref_host)
{
        if (streq(ref_host, h->host))
                return false;
        return !(streq(ref_host, DOCKER_HUB_DOMAIN) && streq(h->host, DOCKER_HUB_HOST));
}

char *kiln_registry_host_url(const struct kiln_registry_host *h, const struct kiln_content_ref *ref,
                             const char *kind, const char *object)
{
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_REGISTRY_URL);
        const char *parts[] = { "/", h->path_prefix, ref->path, kind, object };
        size_t n = object ? 5 : 4;

        if (kiln_buf_printf(&b, "%s://%s", h->scheme, h->host) < 0 ||
            url_path_join(&b, parts, n) < 0)
                return NULL;
        if (kiln_registry_host_is_proxy(h, ref->domain)) {
                struct url_query q = { 0 };
                int r;

                url_query_add(&q, "ns", ref->domain);
                r = kiln_buf_putc(&b, '?');
                if (r >= 0)
                        r = url_query_encode(&q, &b);
                url_query_release(&q);
                if (r < 0)
                        return NULL;
        }
        return kiln_buf_steal(&b);
}

char *kiln_registry_url_plain_http(const char *url)
{
        if (startswith(url, "https://"))
                return kiln_xasprintf("http://%s", url + strlen("https://"));
        return kiln_xstrdup(url);
}
