/* SPDX-License-Identifier: Apache-2.0 */
#include "source/http.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "base/fs.h"
#include "base/buf.h"
#include "base/sha256.h"
#include "kiln-version.h"
#include "registry/redact.h"
#include "snapshot/snapshot.h"
#include "source/source-internal.h"

/* The name of a download while it is written, inside the new snapshot
 * (renamed to its real name at the end; the snapshot is otherwise empty). */
#define PARTIAL_NAME ".kiln-download.partial"
/* Progress statuses of one download: at most one every 100 ms. */
#define STATUS_INTERVAL_NS (100 * 1000 * 1000)
/* One response header kept (Content-Disposition). */
#define HEADER_MAX 4096u

void kiln_source_http_result_release(struct kiln_source_http_result *r)
{
        if (!r)
                return;
        free(r->snapshot_id);
        free(r->digest);
        free(r->filename);
        memset(r, 0, sizeof(*r));
}

/* BuildKit's pathutil.SafeFileName: the base name of s, trimmed, or
 * "download" when that is empty, ".", "..", "/" or holds control bytes. */
static char *safe_file_name(const char *s)
{
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' || *s == '\f')
                s++;
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' ||
                         s[n - 1] == '\r' || s[n - 1] == '\v' || s[n - 1] == '\f'))
                n--;
        /* filepath.Base: trailing slashes dropped, then the last element. */
        while (n > 1 && s[n - 1] == '/')
                n--;
        size_t start = n;
        while (start > 0 && s[start - 1] != '/')
                start--;
        if (n == 1 && s[0] == '/')
                start = 0;
        char *name = kiln_xstrndup(s + start, n - start);
        bool bad = !name[0] || streq(name, ".") || streq(name, "..") || strchr(name, '/');
        for (const unsigned char *p = (const unsigned char *) name; !bad && *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        bad = true;
        if (bad) {
                free(name);
                return kiln_xstrdup("download");
        }
        return name;
}

/* The filename parameter of a Content-Disposition value, as Go's
 * mime.ParseMediaType reads it (quoted string or token); NULL when absent. */
static char *disposition_filename(const char *v)
{
        const char *p = strchr(v, ';');
        while (p) {
                p++;
                while (*p == ' ' || *p == '\t')
                        p++;
                const char *eq = strchr(p, '=');
                if (!eq)
                        return NULL;
                const char *k_end = eq;
                while (k_end > p && (k_end[-1] == ' ' || k_end[-1] == '\t'))
                        k_end--;
                bool is_filename = (size_t) (k_end - p) == 8 && strncasecmp(p, "filename", 8) == 0;
                const char *val = eq + 1;
                while (*val == ' ' || *val == '\t')
                        val++;
                struct kiln_buf b = KILN_BUF_INIT(HEADER_MAX);
                const char *q = val;
                if (*q == '"') {
                        q++;
                        while (*q && *q != '"') {
                                if (*q == '\\' && q[1])
                                        q++;
                                (void) kiln_buf_putc(&b, *q++);
                        }
                        if (*q != '"') {
                                kiln_buf_release(&b);
                                return NULL;
                        }
                        q++;
                } else {
                        while (*q && *q != ';' && *q != ' ' && *q != '\t')
                                (void) kiln_buf_putc(&b, *q++);
                }
                if (is_filename) {
                        if (b.len == 0) {
                                kiln_buf_release(&b);
                                return NULL;
                        }
                        return kiln_buf_steal(&b);
                }
                kiln_buf_release(&b);
                p = strchr(q, ';');
        }
        return NULL;
}

struct download {
        const struct kiln_source_http_options *o;
        const char *status_id;
        int fd;
        struct kiln_sha256 *h;
        uint64_t bytes;
        int error;         /* -errno from a write, or -EFBIG */
        char *disposition; /* of the last response */
        int64_t started;
        int64_t last_status; /* when progress was last sent */
};

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
        struct download *d = userdata;
        size_t len = size * n;
        if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
                /* A new response (after a redirect): forget the last one's. */
                free(d->disposition);
                d->disposition = NULL;
                return len;
        }
        static const char key[] = "content-disposition:";
        if (len > sizeof(key) - 1 && len < HEADER_MAX &&
            strncasecmp(data, key, sizeof(key) - 1) == 0) {
                const char *v = data + sizeof(key) - 1;
                size_t vlen = len - (sizeof(key) - 1);
                while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
                        vlen--;
                free(d->disposition);
                d->disposition = kiln_xstrndup(v, vlen);
        }
        return len;
}

static size_t on_data(char *data, size_t size, size_t n, void *userdata)
{
        struct download *d = userdata;
        size_t len = size * n;
        if (d->bytes + len > KILN_LIMIT_HTTP_SOURCE) {
                d->error = -EFBIG;
                return 0;
        }
        kiln_sha256_update(d->h, data, len);
        int r = kiln_write_all(d->fd, data, len);
        if (r < 0) {
                d->error = r;
                return 0;
        }
        d->bytes += len;
        return len;
}

static int on_progress(void *userdata, curl_off_t total, curl_off_t now, curl_off_t ut,
                       curl_off_t un)
{
        (void) ut;
        (void) un;
        struct download *d = userdata;
        if (d->o->cancel && atomic_load(d->o->cancel))
                return 1;
        int64_t t = d->o->on_status ? kiln_realtime_ns() : 0;
        if (d->o->on_status && t - d->last_status >= STATUS_INTERVAL_NS) {
                d->last_status = t;
                struct kiln_source_status st = { .id = d->status_id,
                                                 .current = (uint64_t) (now > 0 ? now : 0),
                                                 .total = (uint64_t) (total > 0 ? total : 0),
                                                 .started_ns = d->started };
                d->o->on_status(d->o->userdata, &st);
        }
        return 0;
}

static bool http_scheme(const char *url)
{
        return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* The last segment of the URL's (decoded) path, or NULL. */
static char *url_base_name(const char *url)
{
        CURLU *u = curl_url();
        if (!u)
                return NULL;
        char *path = NULL, *ret = NULL;
        if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK && path) {
                size_t n = strlen(path);
                while (n > 1 && path[n - 1] == '/')
                        n--;
                size_t start = n;
                while (start > 0 && path[start - 1] != '/')
                        start--;
                if (n > start && !(n - start == 1 && path[start] == '.'))
                        ret = kiln_xstrndup(path + start, n - start);
        }
        curl_free(path);
        curl_url_cleanup(u);
        return ret;
}

/* Downloads into d->fd; *ret_mtime gets Last-Modified (or 0). */
static int fetch(struct download *d, const char *safe_url, time_t *ret_mtime,
                 struct kiln_error **err)
{
        const struct kiln_source_http_options *o = d->o;
        CURL *c = curl_easy_init();
        if (!c)
                return kiln_error_set(err, -ENOMEM, "download '%s': cannot create a handle",
                                      safe_url);
        char errbuf[CURL_ERROR_SIZE] = { 0 };
        (void) curl_easy_setopt(c, CURLOPT_URL, o->url);
        (void) curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        (void) curl_easy_setopt(c, CURLOPT_MAXREDIRS, KILN_LIMIT_HTTP_REDIRECTS);
        (void) curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) KILN_LIMIT_HTTP_SOURCE);
        (void) curl_easy_setopt(c, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
        (void) curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
        (void) curl_easy_setopt(c, CURLOPT_FILETIME, 1L);
        (void) curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
        (void) curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        (void) curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 300L);
        (void) curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        (void) curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        (void) curl_easy_setopt(c, CURLOPT_HEADERDATA, d);
        (void) curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        (void) curl_easy_setopt(c, CURLOPT_WRITEDATA, d);
        (void) curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        (void) curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        (void) curl_easy_setopt(c, CURLOPT_XFERINFODATA, d);

        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        (void) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_off_t filetime = -1;
        (void) curl_easy_getinfo(c, CURLINFO_FILETIME_T, &filetime);
        curl_easy_cleanup(c);

        if (o->cancel && atomic_load(o->cancel))
                return kiln_error_set(err, -ECANCELED, "download '%s': cancelled", safe_url);
        if (d->error == -EFBIG || cc == CURLE_FILESIZE_EXCEEDED)
                return kiln_error_set(err, -EFBIG, "download '%s': larger than %" PRIu64 " bytes",
                                      safe_url, (uint64_t) KILN_LIMIT_HTTP_SOURCE);
        if (d->error < 0)
                return kiln_error_set(err, d->error, "download '%s': write: %s", safe_url,
                                      strerror(-d->error));
        if (cc == CURLE_TOO_MANY_REDIRECTS)
                return kiln_error_set(err, -ELOOP, "download '%s': more than %ld redirects",
                                      safe_url, KILN_LIMIT_HTTP_REDIRECTS);
        if (cc == CURLE_UNSUPPORTED_PROTOCOL)
                return kiln_error_set(err, -EPROTONOSUPPORT,
                                      "download '%s': redirected to an unsupported scheme",
                                      safe_url);
        if (cc != CURLE_OK) {
                /* curl's text may hold the URL: say only what failed. */
                return kiln_error_set(err, -EIO, "download '%s': %s", safe_url,
                                      curl_easy_strerror(cc));
        }
        if (status < 200 || status >= 400)
                return kiln_error_set(err, -EIO, "download '%s': invalid response status %ld",
                                      safe_url, status);
        *ret_mtime = filetime > 0 ? (time_t) filetime : 0;
        return 0;
}

int kiln_source_http_fetch(struct kiln_snapshot_store *snapshots,
                           const struct kiln_source_http_options *o,
                           struct kiln_source_http_result *ret, struct kiln_error **err)
{
        if (!o->url || strlen(o->url) > KILN_LIMIT_HTTP_URL)
                return kiln_error_set(err, -EINVAL, "download: URL missing or longer than %u bytes",
                                      KILN_LIMIT_HTTP_URL);
        _cleanup_free_ char *safe_url = kiln_registry_url_sanitize(o->url);
        if (!http_scheme(o->url))
                return kiln_error_set(err, -EPROTONOSUPPORT,
                                      "download '%s': only http and https URLs are supported",
                                      safe_url);
        if (o->checksum && o->checksum[0] &&
            (!startswith(o->checksum, "sha256:") || strlen(o->checksum) != 7 + KILN_SHA256_HEX_LEN))
                return kiln_error_set(err, -EINVAL, "download '%s': unsupported checksum '%s'",
                                      safe_url, o->checksum);
        if (!o->work_dir)
                return kiln_error_set(err, -EINVAL, "download '%s': no work directory", safe_url);

        struct source_scratch sc;
        int r = source_scratch_open(snapshots, NULL, o->work_dir, "http", &sc, err);
        if (r < 0)
                return kiln_error_wrap(err, "download '%s'", safe_url);
        const char *dir = sc.dir;
        int root_fd = sc.root_fd;
        char *name = NULL;
        _cleanup_free_ char *digest = NULL;
        struct download d = {
                .o = o, .fd = -1, .status_id = safe_url, .started = kiln_realtime_ns()
        };
        d.h = kiln_sha256_new();
        if (!d.h) {
                r = kiln_error_set(err, -ENOMEM, "sha256: out of memory");
                goto fail;
        }
        d.fd = openat(root_fd, PARTIAL_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      0600);
        if (d.fd < 0) {
                r = kiln_error_set(err, -errno, "create '%s/%s': %s", dir, PARTIAL_NAME,
                                   strerror(errno));
                goto fail;
        }
        if (o->on_status) {
                struct kiln_source_status st = { .id = safe_url, .started_ns = d.started };
                o->on_status(o->userdata, &st);
        }
        time_t mtime = 0;
        r = fetch(&d, safe_url, &mtime, err);
        if (r < 0)
                goto fail;
        if (fsync(d.fd) < 0 || close(TAKE_FD(d.fd)) < 0) {
                r = kiln_error_set(err, -errno, "write '%s/%s': %s", dir, PARTIAL_NAME,
                                   strerror(errno));
                goto fail;
        }
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_final_hex(d.h, hex);
        digest = kiln_xasprintf("sha256:%s", hex);
        if (o->checksum && o->checksum[0] && !streq(digest, o->checksum)) {
                r = kiln_error_set(err, -EBADMSG, "digest mismatch for %s: %s (expected: %s)",
                                   safe_url, digest, o->checksum);
                goto fail;
        }

        if (o->filename && o->filename[0])
                name = safe_file_name(o->filename);
        else if (d.disposition) {
                _cleanup_free_ char *fn = disposition_filename(d.disposition);
                if (fn && fn[strlen(fn) - 1] != '/')
                        name = safe_file_name(fn);
        }
        if (!name) {
                _cleanup_free_ char *base = url_base_name(o->url);
                name = safe_file_name(base ? base : "");
        }
        if (!streq(name, PARTIAL_NAME) && renameat(root_fd, PARTIAL_NAME, root_fd, name) < 0) {
                r = kiln_error_set(err, -errno, "rename '%s/%s': %s", dir, name, strerror(errno));
                goto fail;
        }
        if ((o->uid || o->gid) &&
            fchownat(root_fd, name, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0) {
                r = kiln_error_set(err, -errno, "chown '%s/%s': %s", dir, name, strerror(errno));
                goto fail;
        }
        if (fchmodat(root_fd, name, o->perm ? (o->perm & 07777) : 0600, 0) < 0) {
                r = kiln_error_set(err, -errno, "chmod '%s/%s': %s", dir, name, strerror(errno));
                goto fail;
        }
        struct timespec ts[2] = { { .tv_sec = mtime }, { .tv_sec = mtime } };
        if (utimensat(root_fd, name, ts, AT_SYMLINK_NOFOLLOW) < 0) {
                r = kiln_error_set(err, -errno, "set times of '%s/%s': %s", dir, name,
                                   strerror(errno));
                goto fail;
        }
        char *id = NULL;
        r = source_scratch_commit(&sc, NULL, &id, err);
        if (r < 0) {
                kiln_error_wrap(err, "download '%s'", safe_url);
                goto fail;
        }
        if (o->on_status) {
                struct kiln_source_status st = { .id = safe_url,
                                                 .current = d.bytes,
                                                 .total = d.bytes,
                                                 .started_ns = d.started,
                                                 .completed_ns = kiln_realtime_ns() };
                o->on_status(o->userdata, &st);
        }
        ret->snapshot_id = id;
        ret->digest = TAKE_PTR(digest);
        ret->filename = TAKE_PTR(name);
        kiln_sha256_free(d.h);
        free(d.disposition);
        return 0;
fail:
        if (d.fd >= 0)
                close(d.fd);
        source_scratch_abort(&sc);
        kiln_sha256_free(d.h);
        free(d.disposition);
        free(name);
        return r;
}
