/* SPDX-License-Identifier: Apache-2.0 */
/*
 * distribution's reference grammar, written out as small checks instead of
 * its regular expressions, so that a refusal can say which part is wrong.
 * The accepted language is the same as ParseNormalizedNamed's (see
 * tests/unit/test-registry-ref.c, which carries distribution's cases), with
 * one exception: where distribution quietly reads "foo_bar.com/x" (a first
 * component that looks like a host but is not a valid one) as a path on no
 * host at all, kiln refuses it, since no registry can be reached that way.
 */
#include <string.h>

#include "ref.h"
#include "base/buf.h"

#define DEFAULT_DOMAIN        "docker.io"
#define LEGACY_DEFAULT_DOMAIN "index.docker.io"
#define OFFICIAL_REPO_PREFIX  "library/"
#define DEFAULT_TAG           "latest"

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
        return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_word(char c)
{
        return is_alnum(c) || c == '_';
}

static bool is_hex(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool has_upper(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (s[i] >= 'A' && s[i] <= 'Z')
                        return true;
        return false;
}

/* pathComponent = [a-z0-9]+ (separator [a-z0-9]+)*, separator = [._] | __ | -+ */
static bool valid_path_component(const char *s, size_t n)
{
        size_t i = 0;

        for (;;) {
                size_t run = 0, sep_start;

                while (i < n && is_lower_alnum(s[i]))
                        i++, run++;
                if (run == 0)
                        return false;
                if (i == n)
                        return true;
                sep_start = i;
                if (s[i] == '.')
                        i++;
                else if (s[i] == '_') {
                        i++;
                        if (i < n && s[i] == '_')
                                i++;
                } else if (s[i] == '-') {
                        while (i < n && s[i] == '-')
                                i++;
                } else
                        return false;
                if (i == sep_start || i == n)
                        return false;
        }
}

/* domainNameComponent = [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9] */
static bool valid_domain_name(const char *s, size_t n)
{
        size_t start = 0;

        if (n == 0)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || s[i] == '.') {
                        size_t len = i - start;

                        if (len == 0 || !is_alnum(s[start]) || !is_alnum(s[i - 1]))
                                return false;
                        for (size_t k = start; k < i; k++)
                                if (!is_alnum(s[k]) && s[k] != '-')
                                        return false;
                        start = i + 1;
                }
        }
        return true;
}

/* domainAndPort = (domainName | \[[a-fA-F0-9:]+\]) (:[0-9]+)? */
static bool valid_domain(const char *s, size_t n)
{
        size_t host_end;

        if (n > 0 && s[0] == '[') {
                const char *close = memchr(s, ']', n);

                if (!close || close == s + 1)
                        return false;
                for (const char *p = s + 1; p < close; p++)
                        if (!is_hex(*p) && *p != ':')
                                return false;
                host_end = (size_t) (close - s) + 1;
        } else {
                const char *colon = memchr(s, ':', n);

                host_end = colon ? (size_t) (colon - s) : n;
                if (!valid_domain_name(s, host_end))
                        return false;
        }
        if (host_end == n)
                return true;
        if (s[host_end] != ':' || host_end + 1 == n)
                return false;
        for (size_t i = host_end + 1; i < n; i++)
                if (s[i] < '0' || s[i] > '9')
                        return false;
        return true;
}

static bool valid_tag(const char *s, size_t n)
{
        if (n == 0 || n > KILN_LIMIT_CONTENT_REF_TAG || !is_word(s[0]))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!is_word(s[i]) && s[i] != '.' && s[i] != '-')
                        return false;
        return true;
}

/* digestPat = [A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[[:xdigit:]]{32,} */
static bool matches_digest_pattern(const char *s)
{
        const char *colon = strchr(s, ':');
        size_t i = 0, alg_len, hex_len;

        if (!colon)
                return false;
        alg_len = (size_t) (colon - s);
        for (;;) {
                if (i >= alg_len || !is_alnum(s[i]) || (s[i] >= '0' && s[i] <= '9'))
                        return false;
                while (i < alg_len && is_alnum(s[i]))
                        i++;
                if (i == alg_len)
                        break;
                if (!strchr("-_+.", s[i]))
                        return false;
                i++;
        }
        hex_len = strlen(colon + 1);
        if (hex_len < 32)
                return false;
        for (const char *p = colon + 1; *p; p++)
                if (!is_hex(*p))
                        return false;
        return true;
}

static int digest_error(struct kiln_error **err, const char *digest, const char *why)
{
        _cleanup_free_ char *q = kiln_quote_untrusted(digest, strlen(digest), 160);

        return kiln_error_set(err, -EINVAL, "digest '%s': %s", q, why);
}

int kiln_content_digest_validate(const char *digest, struct kiln_error **err)
{
        static const struct {
                const char *name;
                size_t hex_len;
        } algs[] = { { "sha256", 64 }, { "sha384", 96 }, { "sha512", 128 } };
        const char *colon = strchr(digest, ':');
        size_t alg_len;

        /* go-digest: "invalid checksum digest format" for a missing part, an
         * unknown algorithm is "unsupported", then length, then the case. */
        if (!colon || colon == digest || colon[1] == 0)
                return digest_error(err, digest, "invalid checksum digest format");
        alg_len = (size_t) (colon - digest);
        for (size_t i = 0; i < ELEMENTSOF(algs); i++) {
                if (strlen(algs[i].name) != alg_len || memcmp(algs[i].name, digest, alg_len) != 0)
                        continue;
                if (strlen(colon + 1) != algs[i].hex_len)
                        return digest_error(err, digest, "invalid checksum digest length");
                for (const char *p = colon + 1; *p; p++)
                        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                                return digest_error(err, digest, "invalid checksum digest format");
                return 0;
        }
        if (!matches_digest_pattern(digest))
                return digest_error(err, digest, "invalid checksum digest format");
        return digest_error(err, digest, "unsupported digest algorithm");
}

_printf_(3, 4) static int ref_error(struct kiln_error **err, const char *input, const char *fmt,
                                    ...)
{
        _cleanup_free_ char *q = kiln_quote_untrusted(input, strlen(input), 200), *why = NULL;
        va_list ap;

        va_start(ap, fmt);
        why = kiln_xvasprintf(fmt, ap);
        va_end(ap);
        return kiln_error_set(err, -EINVAL, "invalid reference '%s': %s", q, why);
}

static bool is_identifier(const char *s)
{
        size_t n = strlen(s);

        if (n != 64)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

/* Checks each '/'-separated component of path and its length. */
static int check_path(const char *input, const char *path, size_t n, struct kiln_error **err)
{
        size_t start = 0;

        if (n == 0)
                return ref_error(err, input, "missing repository name");
        for (size_t i = 0; i <= n; i++) {
                if (i < n && path[i] != '/')
                        continue;
                if (i == start)
                        return ref_error(err, input, "empty component in repository name");
                if (!valid_path_component(path + start, i - start)) {
                        _cleanup_free_ char *c = kiln_quote_untrusted(path + start, i - start, 100);

                        if (has_upper(path + start, i - start))
                                return ref_error(err, input,
                                                 "repository name component '%s' must be "
                                                 "lowercase",
                                                 c);
                        return ref_error(err, input,
                                         "invalid repository name component '%s': lowercase "
                                         "letters and digits, with '.', '_', '__' or dashes "
                                         "only between them",
                                         c);
                }
                start = i + 1;
        }
        if (n > KILN_LIMIT_CONTENT_REF_PATH)
                return ref_error(err, input, "repository name must not be more than %u characters",
                                 KILN_LIMIT_CONTENT_REF_PATH);
        return 0;
}

int kiln_content_ref_parse(const char *s, struct kiln_content_ref **ret, struct kiln_error **err)
{
        _cleanup_(kiln_content_ref_freep) struct kiln_content_ref *ref = NULL;
        _cleanup_free_ char *domain = NULL, *remainder = NULL;
        const char *slash, *at, *name_end, *colon, *last_slash, *path;
        size_t n = strlen(s), remote_len;
        int r;

        if (n == 0)
                return ref_error(err, s, "empty reference");
        if (n > KILN_LIMIT_CONTENT_REFERENCE)
                return ref_error(err, s, "longer than %u bytes", KILN_LIMIT_CONTENT_REFERENCE);
        if (is_identifier(s))
                return ref_error(err, s,
                                 "a repository name cannot be 64 hexadecimal characters "
                                 "(that is an image ID)");

        /* splitDockerDomain */
        slash = strchr(s, '/');
        if (!slash) {
                domain = kiln_xstrdup(DEFAULT_DOMAIN);
                remainder = kiln_xasprintf(OFFICIAL_REPO_PREFIX "%s", s);
        } else {
                size_t dlen = (size_t) (slash - s);
                _cleanup_free_ char *maybe = kiln_xstrndup(s, dlen);

                if (streq(maybe, "localhost") || strpbrk(maybe, ".:") || has_upper(maybe, dlen)) {
                        domain = TAKE_PTR(maybe);
                        remainder = kiln_xstrdup(slash + 1);
                        if (streq(domain, LEGACY_DEFAULT_DOMAIN)) {
                                free(domain);
                                domain = kiln_xstrdup(DEFAULT_DOMAIN);
                        }
                } else {
                        domain = kiln_xstrdup(DEFAULT_DOMAIN);
                        remainder = kiln_xstrdup(s);
                }
                if (streq(domain, DEFAULT_DOMAIN) && !strchr(remainder, '/')) {
                        char *p = kiln_xasprintf(OFFICIAL_REPO_PREFIX "%s", remainder);
                        free(remainder);
                        remainder = p;
                }
        }

        /* ParseNormalizedNamed: the remote name (up to the first ':') must be
         * lower case before anything else is looked at. */
        remote_len = strcspn(remainder, ":");
        if (has_upper(remainder, remote_len)) {
                _cleanup_free_ char *q = kiln_quote_untrusted(remainder, remote_len, 200);
                return ref_error(err, s, "repository name '%s' must be lowercase", q);
        }

        if (!valid_domain(domain, strlen(domain))) {
                _cleanup_free_ char *q = kiln_quote_untrusted(domain, strlen(domain), 200);
                return ref_error(err, s, "invalid registry host '%s'", q);
        }

        ref = kiln_xcalloc(1, sizeof(*ref));

        /* remainder = path [":" tag] ["@" digest]; neither a path nor a tag
         * holds '@', and a tag holds no '/' or ':'. */
        at = strchr(remainder, '@');
        name_end = at ? at : remainder + strlen(remainder);
        last_slash = NULL;
        colon = NULL;
        for (const char *p = remainder; p < name_end; p++) {
                if (*p == '/')
                        last_slash = p;
                else if (*p == ':')
                        colon = p;
        }
        if (colon && (!last_slash || colon > last_slash)) {
                size_t tlen = (size_t) (name_end - colon - 1);

                if (!valid_tag(colon + 1, tlen)) {
                        _cleanup_free_ char *q = kiln_quote_untrusted(colon + 1, tlen, 200);
                        return ref_error(err, s,
                                         "invalid tag '%s': up to 128 letters, digits, '_', '.' "
                                         "and '-', not starting with '.' or '-'",
                                         q);
                }
                ref->tag = kiln_xstrndup(colon + 1, tlen);
                name_end = colon;
        }
        path = remainder;
        r = check_path(s, path, (size_t) (name_end - path), err);
        if (r < 0)
                return r;
        ref->path = kiln_xstrndup(path, (size_t) (name_end - path));

        if (at) {
                if (!matches_digest_pattern(at + 1)) {
                        _cleanup_free_ char *q = kiln_quote_untrusted(at + 1, strlen(at + 1), 200);
                        return ref_error(err, s, "invalid digest '%s'", q);
                }
                r = kiln_content_digest_validate(at + 1, err);
                if (r < 0) {
                        _cleanup_free_ char *q = kiln_quote_untrusted(s, n, 200);
                        return kiln_error_wrap(err, "invalid reference '%s'", q);
                }
                ref->digest = kiln_xstrdup(at + 1);
        }

        /* TagNameOnly */
        if (!ref->tag && !ref->digest)
                ref->tag = kiln_xstrdup(DEFAULT_TAG);
        ref->domain = TAKE_PTR(domain);
        *ret = TAKE_PTR(ref);
        return 0;
}

struct kiln_content_ref *kiln_content_ref_free(struct kiln_content_ref *r)
{
        if (!r)
                return NULL;
        free(r->domain);
        free(r->path);
        free(r->tag);
        free(r->digest);
        free(r);
        return NULL;
}

struct kiln_content_ref *kiln_content_ref_copy(const struct kiln_content_ref *r)
{
        struct kiln_content_ref *c = kiln_xcalloc(1, sizeof(*c));

        c->domain = kiln_xstrdup(r->domain);
        c->path = kiln_xstrdup(r->path);
        c->tag = r->tag ? kiln_xstrdup(r->tag) : NULL;
        c->digest = r->digest ? kiln_xstrdup(r->digest) : NULL;
        return c;
}

static char *format_ref(const char *domain, const char *path, const char *tag, const char *digest)
{
        return kiln_xasprintf("%s%s%s%s%s%s%s", domain ? domain : "", domain ? "/" : "", path,
                              tag ? ":" : "", tag ? tag : "", digest ? "@" : "",
                              digest ? digest : "");
}

char *kiln_content_ref_canonical(const struct kiln_content_ref *r)
{
        return format_ref(r->domain, r->path, r->tag, r->digest);
}

char *kiln_content_ref_name(const struct kiln_content_ref *r)
{
        return format_ref(r->domain, r->path, NULL, NULL);
}

char *kiln_content_ref_familiar(const struct kiln_content_ref *r)
{
        const char *path = r->path;
        size_t first = strcspn(path, "/");

        /* distribution drops "docker.io/" from docker.io/foo.com/bar too,
         * and "foo.com/bar" then names another registry; kiln keeps the
         * host wherever the short form would be read as a different one. */
        if (!streq(r->domain, DEFAULT_DOMAIN) ||
            (path[first] == '/' &&
             (memchr(path, '.', first) || (first == 9 && startswith(path, "localhost/")))))
                return format_ref(r->domain, path, r->tag, r->digest);
        if (startswith(path, OFFICIAL_REPO_PREFIX) &&
            !strchr(path + strlen(OFFICIAL_REPO_PREFIX), '/'))
                path += strlen(OFFICIAL_REPO_PREFIX);
        return format_ref(NULL, path, r->tag, r->digest);
}

const char *kiln_content_ref_object(const struct kiln_content_ref *r)
{
        return r->digest ? r->digest : r->tag;
}
