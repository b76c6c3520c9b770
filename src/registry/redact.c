/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "redact.h"
#include "registry-internal.h"
#include "registry-limits.h"

#define REDACTED "REDACTED"

static void sanitize_query(struct kiln_buf *b, const char *q, size_t n)
{
        struct url_query in = { 0 }, out = { 0 };
        size_t mark = b->len;

        url_query_parse(&in, q, n);
        for (size_t i = 0; i < in.n; i++) {
                const char *v = in.items[i].value;

                /* containerd keeps ns= (it names the reference's registry)
                 * and empty values; everything else may be a credential. */
                url_query_add(&out, in.items[i].key,
                              streq(in.items[i].key, "ns") || streq(v, "") ? v : REDACTED);
        }
        if (out.n > 0) {
                (void) kiln_buf_putc(b, '?');
                if (url_query_encode(&out, b) < 0) {
                        b->len = mark;
                        b->data[b->len] = 0;
                        (void) kiln_buf_puts(b, "?" REDACTED);
                }
        }
        url_query_release(&in);
        url_query_release(&out);
}

char *kiln_registry_url_sanitize(const char *url)
{
        struct kiln_buf b = KILN_BUF_INIT(REGISTRY_DERIVED_MAX);
        const char *p = url, *q, *hash;
        size_t slen = 0;

        if ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) {
                slen = strspn(p,
                              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
                if (!startswith(p + slen, "://"))
                        slen = 0;
        }
        if (slen > 0) {
                size_t alen = strcspn(p + slen + 3, "/?#");
                const char *auth = p + slen + 3;
                const char *at = memrchr(auth, '@', alen);

                (void) kiln_buf_append(&b, p, slen + 3);
                if (at) {
                        (void) kiln_buf_puts(&b, REDACTED "@");
                        (void) kiln_buf_append(&b, at + 1, (size_t) (auth + alen - at - 1));
                } else
                        (void) kiln_buf_append(&b, auth, alen);
                p = auth + alen;
        }
        hash = strchr(p, '#');
        q = memchr(p, '?', hash ? (size_t) (hash - p) : strlen(p));
        (void) kiln_buf_append(&b, p, (size_t) ((q ? q : hash ? hash : p + strlen(p)) - p));
        if (q)
                sanitize_query(&b, q + 1, (size_t) ((hash ? hash : q + strlen(q)) - q - 1));
        if (hash && hash[1])
                (void) kiln_buf_puts(&b, "#" REDACTED);
        return kiln_buf_steal(&b);
}

static bool name_says_secret(const char *lower)
{
        static const char *const words[] = {
                "auth",    "token",      "secret",    "password", "passwd", "cookie",
                "session", "credential", "signature", "api-key",  "apikey",
        };

        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                if (strstr(lower, words[i]))
                        return true;
        return false;
}

enum kiln_registry_header_log kiln_registry_header_log_policy(const char *name, bool is_request)
{
        _cleanup_free_ char *lower = kiln_xstrdup(name);

        for (char *c = lower; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char) (*c - 'A' + 'a');

        if (is_request) {
                if (streq(lower, "authorization") || streq(lower, "proxy-authorization"))
                        return KILN_REGISTRY_HEADER_LOG_OMIT;
        } else {
                if (streq(lower, "location") || streq(lower, "content-location"))
                        return KILN_REGISTRY_HEADER_LOG_URL;
                if (streq(lower, "www-authenticate") || streq(lower, "proxy-authenticate"))
                        return KILN_REGISTRY_HEADER_LOG_KEEP;
        }
        return name_says_secret(lower) ? KILN_REGISTRY_HEADER_LOG_REDACT
                                       : KILN_REGISTRY_HEADER_LOG_KEEP;
}

char *kiln_registry_header_log_value(const char *name, const char *value, bool is_request)
{
        switch (kiln_registry_header_log_policy(name, is_request)) {
        case KILN_REGISTRY_HEADER_LOG_KEEP:
                return kiln_xstrdup(value);
        case KILN_REGISTRY_HEADER_LOG_OMIT:
                return NULL;
        case KILN_REGISTRY_HEADER_LOG_REDACT:
                return kiln_xstrdup(REDACTED);
        case KILN_REGISTRY_HEADER_LOG_URL:
                return kiln_registry_url_sanitize(value);
        }
        return NULL;
}
