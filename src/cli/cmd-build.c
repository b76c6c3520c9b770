/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln build: buildx's `build` against the builder's daemon.
 *
 *   1. read the options as buildx does (build args from the environment,
 *      secrets, ssh sockets, outputs, --progress / BUILDKIT_PROGRESS)
 *   2. find the context (a directory, or "-": a tar or a Dockerfile on
 *      stdin) and the Dockerfile, and the .dockerignore that applies
 *   3. POST /v1/build and render its event stream (progress.c); when the
 *      daemon asks for the context, walk it (context.c), POST the entry
 *      list, and PUT a tar of the files it says it needs
 *   4. SIGINT/SIGTERM cancel: the connections to the daemon are shut down,
 *      which makes it cancel the build, and kiln reports it as buildx does
 *
 *   5. outputs (output.c): -o/--push/--load/-t go into the request as
 *      buildx's exporter entries; when the daemon announces an output
 *      whose bytes come back ("export"), a thread downloads it into its
 *      file, stdout, directory or `docker load` while the events go on;
 *      the result carries the exporter response (--metadata-file,
 *      --quiet's image ID)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/pattern.h"
#include "builder.h"
#include "archive-lazy.h"
#include "cli.h"
#include "http.h"

/* BuildKit's secretsprovider.MaxSecretSize. */
#define KILN_CLI_LIMIT_SECRET (500u * 1024u)
/* The daemon's answer to an entry list: the paths it needs. */
#define KILN_CLI_LIMIT_NEED_RESPONSE (256u << 20)
/* What buildx peeks at on stdin to tell a tar from a Dockerfile. */
#define STDIN_PEEK 1024u
/* How long one context request/upload may take. */
#define CONTEXT_TIMEOUT_MS (3600u * 1000u)

enum {
        OPT_ADD_HOST,
        OPT_BUILD_ARG,
        OPT_CACHE_FROM,
        OPT_CACHE_TO,
        OPT_FILE,
        OPT_LABEL,
        OPT_LOAD,
        OPT_METADATA_FILE,
        OPT_NETWORK,
        OPT_NO_CACHE,
        OPT_NO_CACHE_FILTER,
        OPT_OUTPUT,
        OPT_PLATFORM,
        OPT_PROGRESS,
        OPT_PULL,
        OPT_PUSH,
        OPT_QUIET,
        OPT_SECRET,
        OPT_SSH,
        OPT_TAG,
        OPT_TARGET,
};

static const struct kiln_cli_option options[] = {
        [OPT_ADD_HOST] = { "add-host", 0, KILN_CLI_OPTION_STRINGS,
                           "Add a custom host-to-IP mapping (format: \"host:ip\")", NULL, false },
        [OPT_BUILD_ARG] = { "build-arg", 0, KILN_CLI_OPTION_STRINGS, "Set build-time variables",
                            NULL, false },
        [OPT_CACHE_FROM] = { "cache-from", 0, KILN_CLI_OPTION_STRINGS,
                             "External cache sources (not supported yet)", NULL, true },
        [OPT_CACHE_TO] = { "cache-to", 0, KILN_CLI_OPTION_STRINGS,
                           "Cache export destinations (not supported yet)", NULL, true },
        [OPT_FILE] = { "file", 'f', KILN_CLI_OPTION_STRING,
                       "Name of the Dockerfile (default: \"PATH/Dockerfile\")", NULL, false },
        [OPT_LABEL] = { "label", 0, KILN_CLI_OPTION_STRINGS, "Set metadata for an image", NULL,
                        false },
        [OPT_LOAD] = { "load", 0, KILN_CLI_OPTION_BOOL, "Shorthand for \"--output=type=docker\"",
                       NULL, false },
        [OPT_METADATA_FILE] = { "metadata-file", 0, KILN_CLI_OPTION_STRING,
                                "Write build result metadata to a file", NULL, false },
        [OPT_NETWORK] = { "network", 0, KILN_CLI_OPTION_STRING,
                          "Set the networking mode for the \"RUN\" instructions during build",
                          "\"default\"", false },
        [OPT_NO_CACHE] = { "no-cache", 0, KILN_CLI_OPTION_BOOL,
                           "Do not use cache when building the image", NULL, false },
        [OPT_NO_CACHE_FILTER] = { "no-cache-filter", 0, KILN_CLI_OPTION_STRINGS,
                                  "Do not cache specified stages", NULL, false },
        [OPT_OUTPUT] = { "output", 'o', KILN_CLI_OPTION_STRINGS,
                         "Output destination (format: \"type=local,dest=path\")", NULL, false },
        [OPT_PLATFORM] = { "platform", 0, KILN_CLI_OPTION_STRINGS, "Set target platform for build",
                           NULL, false },
        [OPT_PROGRESS] = { "progress", 0, KILN_CLI_OPTION_STRING,
                           "Set type of progress output (\"auto\", \"none\", \"plain\", "
                           "\"quiet\", \"rawjson\", \"tty\"). Use plain to show container output",
                           "\"auto\"", false },
        [OPT_PULL] = { "pull", 0, KILN_CLI_OPTION_BOOL,
                       "Always attempt to pull all referenced images", NULL, false },
        [OPT_PUSH] = { "push", 0, KILN_CLI_OPTION_BOOL,
                       "Shorthand for \"--output=type=registry,unpack=false\"", NULL, false },
        [OPT_QUIET] = { "quiet", 'q', KILN_CLI_OPTION_BOOL,
                        "Suppress the build output and print image ID on success", NULL, false },
        [OPT_SECRET] = { "secret", 0, KILN_CLI_OPTION_STRINGS,
                         "Secret to expose to the build (format: "
                         "\"id=mysecret[,src=/local/secret]\")",
                         NULL, false },
        [OPT_SSH] = { "ssh", 0, KILN_CLI_OPTION_STRINGS,
                      "SSH agent socket to expose to the build (format: "
                      "\"default|<id>[=<socket>]\")",
                      NULL, false },
        [OPT_TAG] = { "tag", 't', KILN_CLI_OPTION_STRINGS,
                      "Image identifier (format: \"[registry/]repository[:tag]\")", NULL, false },
        [OPT_TARGET] = { "target", 0, KILN_CLI_OPTION_STRING, "Set the target build stage to build",
                         NULL, false },
};

/* ---- cancellation ---- */

static volatile int build_cancelled;
static struct sigaction saved_int, saved_term;

/* Shuts down every socket of the process: kiln's only sockets are its
 * connections to the daemon, and closing them is how a build is cancelled
 * (the daemon cancels a build whose client went away). shutdown() and
 * fstat() are async-signal-safe; the HTTP client then sees the end of its
 * connection and returns. */
static void on_cancel_signal(int sig)
{
        int saved = errno;

        (void) sig;
        build_cancelled = 1;
        for (int fd = 3; fd < 4096; fd++) {
                struct stat st;

                if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
                        (void) shutdown(fd, SHUT_RDWR);
        }
        errno = saved;
}

static void cancel_catch(void)
{
        /* A second signal ends kiln at once. */
        struct sigaction sa = { .sa_handler = on_cancel_signal, .sa_flags = SA_RESETHAND };

        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, NULL, &saved_int);
        if (saved_int.sa_handler != SIG_IGN)
                (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, &saved_term);
}

static void cancel_release(void)
{
        (void) sigaction(SIGINT, &saved_int, NULL);
        (void) sigaction(SIGTERM, &saved_term, NULL);
}

static int cancelled_error(struct kiln_error **err)
{
        kiln_error_free(*err);
        *err = NULL;
        return kiln_error_set(err, -ECANCELED,
                              "failed to build: failed to solve: Canceled: context canceled");
}

/* ---- options ---- */

/* buildx's listToMap: "K=V", or "K" alone (with from_env: the value of K in
 * the environment, skipped when unset; else ""). A later K wins. */
static int kv_list(const char *const *v, size_t n, bool from_env, struct kiln_api_kv **ret,
                   size_t *n_ret, struct kiln_error **err)
{
        for (size_t i = 0; i < n; i++) {
                const char *eq = strchr(v[i], '=');
                _cleanup_free_ char *k =
                        eq ? kiln_xstrndup(v[i], (size_t) (eq - v[i])) : kiln_xstrdup(v[i]);
                const char *val = eq ? eq + 1 : NULL;
                size_t j;

                if (!k[0])
                        return kiln_error_set(err, -EINVAL,
                                              "invalid key-value pair \"%s\": empty key", v[i]);
                if (!val) {
                        if (from_env) {
                                val = getenv(k);
                                if (!val)
                                        continue;
                        } else
                                val = "";
                }
                for (j = 0; j < *n_ret; j++)
                        if (streq((*ret)[j].key, k))
                                break;
                if (j == *n_ret) {
                        *ret = kiln_xreallocarray(*ret, *n_ret + 1, sizeof(**ret));
                        (*ret)[j].key = TAKE_PTR(k);
                        (*ret)[j].value = NULL;
                        (*n_ret)++;
                }
                free((*ret)[j].value);
                (*ret)[j].value = kiln_xstrdup(val);
        }
        return 0;
}

static void strv_push(char ***v, size_t *n, const char *s)
{
        *v = kiln_xreallocarray(*v, *n + 2, sizeof(char *));
        (*v)[(*n)++] = kiln_xstrdup(s);
        (*v)[*n] = NULL;
}

/* Comma-separated lists given one or more times. */
static void split_commas(const char *const *v, size_t n, char ***ret, size_t *n_ret)
{
        for (size_t i = 0; i < n; i++) {
                const char *s = v[i];

                while (*s) {
                        const char *c = strchr(s, ',');
                        _cleanup_free_ char *part =
                                c ? kiln_xstrndup(s, (size_t) (c - s)) : kiln_xstrdup(s);

                        if (part[0])
                                strv_push(ret, n_ret, part);
                        if (!c)
                                break;
                        s = c + 1;
                }
        }
}

/* A file read whole with a limit; what names it in errors. */
static int read_limited(int dir_fd, const char *path, size_t max, struct kiln_buf *b)
{
        *b = KILN_BUF_INIT(max);
        return kiln_read_file_at(dir_fd, path, b);
}

/* buildx's secret specs (util/buildflags/secrets.go) resolved as BuildKit's
 * secretsprovider does: a file or an environment variable, read now. */
static int parse_secret(const char *spec, struct kiln_api_build_secret *ret,
                        struct kiln_error **err)
{
        _cleanup_(kiln_cli_strv_freep) char **fields = NULL;
        _cleanup_free_ char *id = NULL, *src = NULL, *env = NULL, *type = NULL;
        size_t n = 0;
        int r;

        r = kiln_cli_csv_split(spec, &fields, &n, err);
        if (r < 0)
                return kiln_error_wrap(err, "failed to parse csv secret");
        for (size_t i = 0; i < n; i++) {
                const char *eq = strchr(fields[i], '=');
                _cleanup_free_ char *key = NULL;

                if (!eq)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid field '%s' must be a key=value pair",
                                              fields[i]);
                key = kiln_xstrndup(fields[i], (size_t) (eq - fields[i]));
                for (char *c = key; *c; c++)
                        *c = (char) tolower((unsigned char) *c);
                if (streq(key, "type")) {
                        if (!streq(eq + 1, "file") && !streq(eq + 1, "env"))
                                return kiln_error_set(err, -EINVAL,
                                                      "unsupported secret type \"%s\"", eq + 1);
                        free(type);
                        type = kiln_xstrdup(eq + 1);
                } else if (streq(key, "id")) {
                        free(id);
                        id = kiln_xstrdup(eq + 1);
                } else if (streq(key, "source") || streq(key, "src")) {
                        free(src);
                        src = kiln_xstrdup(eq + 1);
                } else if (streq(key, "env")) {
                        free(env);
                        env = kiln_xstrdup(eq + 1);
                } else
                        return kiln_error_set(err, -EINVAL, "unexpected key '%s' in '%s'", key,
                                              fields[i]);
        }
        if (type && streq(type, "env") && (!env || !env[0])) {
                free(env);
                env = TAKE_PTR(src);
        }
        if (!id || !id[0])
                return kiln_error_set(err, -EINVAL, "secret missing ID");
        if ((!env || !env[0]) && (!src || !src[0])) {
                if (getenv(id)) {
                        free(env);
                        env = kiln_xstrdup(id);
                } else {
                        free(src);
                        src = kiln_xstrdup(id);
                }
        }
        *ret = (struct kiln_api_build_secret){ .id = TAKE_PTR(id) };
        if (env && env[0]) {
                const char *v = getenv(env);

                ret->len = v ? strlen(v) : 0;
                ret->data = kiln_xmalloc(ret->len + 1);
                memcpy(ret->data, v ? v : "", ret->len);
                if (ret->len > KILN_CLI_LIMIT_SECRET)
                        return kiln_error_set(err, -E2BIG, "secret %s too big. max size 500KiB",
                                              ret->id);
                return 0;
        }
        {
                struct kiln_buf b;
                char why[64];

                r = read_limited(AT_FDCWD, src, KILN_CLI_LIMIT_SECRET, &b);
                if (r == -E2BIG) {
                        explicit_bzero(b.data, b.cap);
                        kiln_buf_release(&b);
                        return kiln_error_set(err, r, "secret %s too big. max size 500KiB",
                                              ret->id);
                }
                if (r < 0) {
                        kiln_buf_release(&b);
                        return kiln_error_set(
                                err, r, "failed to stat %s: %s", src,
                                kiln_read_file_strerror(r, KILN_CLI_LIMIT_SECRET, why));
                }
                ret->len = b.len;
                ret->data = (uint8_t *) kiln_buf_steal(&b);
        }
        return 0;
}

/* --ssh default[=path]: an agent socket of this machine, which a local
 * daemon can bind into RUN --mount=type=ssh. */
static int parse_ssh(const char *spec, struct kiln_api_build_ssh *ret, struct kiln_error **err)
{
        const char *eq = strchr(spec, '=');
        _cleanup_free_ char *id =
                eq ? kiln_xstrndup(spec, (size_t) (eq - spec)) : kiln_xstrdup(spec);
        const char *path = eq ? eq + 1 : NULL;
        _cleanup_free_ char *abs = NULL;
        struct stat st;
        int r;

        if (path && strchr(path, ','))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "--ssh %s: only one agent socket per id is supported", spec);
        if (!path || !path[0]) {
                path = getenv("SSH_AUTH_SOCK");
                if (!path || !path[0])
                        return kiln_error_set(err, -EINVAL,
                                              "invalid empty ssh agent socket: make sure "
                                              "SSH_AUTH_SOCK is set");
        }
        if (stat(path, &st) < 0)
                return kiln_error_set(err, -errno, "--ssh %s: '%s': %s", spec, path,
                                      strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "--ssh %s: '%s' is not an agent socket (key files are not "
                                      "supported)",
                                      spec, path);
        r = kiln_path_absolute(path, &abs);
        if (r < 0)
                return kiln_error_set(err, r, "--ssh %s: %s", spec, strerror(-r));
        *ret = (struct kiln_api_build_ssh){ .id = TAKE_PTR(id), .path = TAKE_PTR(abs) };
        return 0;
}

/* buildx's toBuildkitExtraHosts: "host=ip" or "host:ip", ip a list of
 * addresses (IPv6 maybe in brackets); sent as "host:ip", one per address. */
static int parse_add_host(const char *h, char ***ret, size_t *n_ret, struct kiln_error **err)
{
        const char *sep = strchr(h, '=');
        _cleanup_free_ char *host = NULL, *ips = NULL;
        char *save = NULL, *tok;

        if (!sep)
                sep = strchr(h, ':');
        if (!sep || sep == h || !sep[1])
                return kiln_error_set(err, -EINVAL, "invalid host %s", h);
        host = kiln_xstrndup(h, (size_t) (sep - h));
        ips = kiln_xstrdup(sep + 1);
        if (streq(ips, "host-gateway"))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "unable to derive the IP value for host-gateway: not "
                                      "supported by kiln");
        for (tok = strtok_r(ips, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                size_t l = strlen(tok);
                unsigned char addr[16];
                _cleanup_free_ char *entry = NULL;

                if (l > 2 && tok[0] == '[' && tok[l - 1] == ']') {
                        tok[l - 1] = '\0';
                        tok++;
                }
                if (inet_pton(AF_INET, tok, addr) != 1 && inet_pton(AF_INET6, tok, addr) != 1)
                        return kiln_error_set(err, -EINVAL, "invalid host %s", h);
                entry = kiln_xasprintf("%s:%s", host, tok);
                strv_push(ret, n_ret, entry);
        }
        return 0;
}

/* A light check of -t values (the daemon parses references fully once it
 * exports): docker's "invalid reference format" for what can never be one. */
static int check_tag(const char *t, struct kiln_error **err)
{
        const char *slash = strchr(t, '/'), *repo = t, *end;

        if (!t[0])
                return kiln_error_set(err, -EINVAL, "invalid tag \"\": invalid reference format");
        for (const char *c = t; *c; c++)
                if ((unsigned char) *c <= ' ' || (unsigned char) *c >= 0x7f)
                        return kiln_error_set(err, -EINVAL,
                                              "invalid tag \"%s\": invalid reference format", t);
        /* docker's rule: the first component is a registry host when it
         * has a '.' or a ':' or is "localhost"; the host may have upper
         * case, the repository may not */
        if (slash) {
                size_t n = (size_t) (slash - t);

                if (memchr(t, '.', n) || memchr(t, ':', n) ||
                    (n == 9 && !strncmp(t, "localhost", 9)))
                        repo = slash + 1;
        }
        end = strchr(repo, '@');
        if (!end) {
                const char *colon = strrchr(repo, ':');

                end = colon && !strchr(colon, '/') ? colon : repo + strlen(repo);
        }
        for (const char *c = repo; c < end; c++)
                if (*c >= 'A' && *c <= 'Z')
                        return kiln_error_set(err, -EINVAL,
                                              "invalid tag \"%s\": invalid reference format: "
                                              "repository name must be lowercase",
                                              t);
        return 0;
}

/* ---- context and Dockerfile ---- */

struct source {
        char *dir; /* the context directory (absolute) */
        int dir_fd;
        char *tmp_dir;    /* made by kiln (stdin), removed at the end */
        char *dockerfile; /* its text */
        size_t dockerfile_len;
        char *dockerfile_name; /* base name, for "load build definition from" */
        char *dockerignore;
        char *key;
};

static void source_release(struct source *s)
{
        if (s->dir_fd >= 0)
                close(s->dir_fd);
        if (s->tmp_dir)
                (void) kiln_rm_rf_at(AT_FDCWD, s->tmp_dir, NULL, NULL);
        free(s->tmp_dir);
        free(s->dir);
        free(s->dockerfile);
        free(s->dockerfile_name);
        free(s->dockerignore);
        free(s->key);
        *s = (struct source){ .dir_fd = -1 };
}

static bool is_remote_context(const char *p)
{
        return startswith(p, "http://") || startswith(p, "https://") || startswith(p, "git://") ||
               startswith(p, "git@") || startswith(p, "ssh://") || startswith(p, "github.com/");
}

/* buildx's isArchive: a compressed stream or a tar header. */
static bool is_archive(const unsigned char *h, size_t n)
{
        unsigned sum = 0, want = 0;

        if (n >= 3 && h[0] == 0x1f && h[1] == 0x8b && h[2] == 0x08)
                return true;
        if (n >= 3 && memcmp(h, "BZh", 3) == 0)
                return true;
        if (n >= 6 && memcmp(h,
                             "\xfd"
                             "7zXZ\x00",
                             6) == 0)
                return true;
        if (n >= 4 && memcmp(h, "\x28\xb5\x2f\xfd", 4) == 0)
                return true;
        if (n < 512)
                return false;
        if (memcmp(h + 257, "ustar", 5) == 0)
                return true;
        /* a v7 header: its checksum field holds the sum of its bytes */
        for (size_t i = 0; i < 512; i++)
                sum += (i >= 148 && i < 156) ? ' ' : h[i];
        for (size_t i = 148; i < 156 && h[i] >= '0' && h[i] <= '7'; i++)
                want = want * 8 + (unsigned) (h[i] - '0');
        return h[148] >= '0' && h[148] <= '7' && sum == want;
}

struct stdin_reader {
        unsigned char peek[STDIN_PEEK];
        size_t n_peek;
        bool peek_used;
        unsigned char buf[64 << 10];
};

static la_ssize_t stdin_read_cb(struct archive *a, void *userdata, const void **buf)
{
        struct stdin_reader *r = userdata;
        ssize_t n;

        (void) a;
        if (!r->peek_used) {
                r->peek_used = true;
                *buf = r->peek;
                return (la_ssize_t) r->n_peek;
        }
        do
                n = read(STDIN_FILENO, r->buf, sizeof(r->buf));
        while (n < 0 && errno == EINTR && !build_cancelled);
        *buf = r->buf;
        return n < 0 ? -1 : n;
}

/* A relative, '..'-free name inside dir for a tar member, or NULL. */
static char *member_path(const char *dir, const char *name)
{
        _cleanup_free_ char *clean = NULL;

        while (*name == '/')
                name++;
        clean = kiln_pattern_clean(name);
        if (streq(clean, ".") || streq(clean, "..") || startswith(clean, "../"))
                return NULL;
        return kiln_xasprintf("%s/%s", dir, clean);
}

/* Unpacks the tar on stdin into dir: files, directories, links; nothing
 * outside dir (no '..', no writes through links), no device nodes. */
static int extract_stdin(struct stdin_reader *in, const char *dir, struct kiln_error **err)
{
        struct archive *a = archive_read_new(), *w = archive_write_disk_new(), *failed;
        struct archive_entry *e;
        size_t count = 0;
        int r = 0, ar;

        if (!a || !w) {
                r = kiln_error_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        archive_read_support_format_tar(a);
        archive_read_support_filter_all(a);
        archive_write_disk_set_options(w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                                  ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                  ARCHIVE_EXTRACT_SECURE_NODOTDOT);
        if (archive_read_open(a, in, NULL, stdin_read_cb, NULL) != ARCHIVE_OK) {
                r = kiln_error_set(err, -EINVAL, "read the context from stdin: %s",
                                   archive_error_string(a));
                goto out;
        }
        while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                mode_t type = archive_entry_filetype(e);
                _cleanup_free_ char *p = member_path(dir, archive_entry_pathname(e));
                const char *hl = archive_entry_hardlink(e);

                if (build_cancelled) {
                        r = -ECANCELED;
                        goto out;
                }
                if (++count > KILN_CLI_LIMIT_CONTEXT_ENTRIES) {
                        r = kiln_error_set(err, -E2BIG,
                                           "the context on stdin has more than %u entries",
                                           KILN_CLI_LIMIT_CONTEXT_ENTRIES);
                        goto out;
                }
                if (!p)
                        continue; /* "." itself, or a name that leaves the context */
                if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
                        continue;
                archive_entry_set_pathname(e, p);
                if (hl) {
                        _cleanup_free_ char *t = member_path(dir, hl);

                        if (!t)
                                continue;
                        archive_entry_set_hardlink(e, t);
                }
                if (archive_write_header(w, e) != ARCHIVE_OK) {
                        r = kiln_error_set(err, -EIO, "unpack '%s' from stdin: %s",
                                           archive_entry_pathname(e), archive_error_string(w));
                        goto out;
                }
                failed = kiln_cli_archive_copy_data(a, w);
                if (failed) {
                        r = kiln_error_set(err, -EIO, "unpack '%s' from stdin: %s",
                                           archive_entry_pathname(e), archive_error_string(failed));
                        goto out;
                }
                if (archive_write_finish_entry(w) != ARCHIVE_OK) {
                        r = kiln_error_set(err, -EIO, "unpack '%s' from stdin: %s",
                                           archive_entry_pathname(e), archive_error_string(w));
                        goto out;
                }
        }
        if (ar != ARCHIVE_EOF)
                r = build_cancelled
                            ? -ECANCELED
                            : kiln_error_set(err, -EINVAL, "read the context from stdin: %s",
                                             archive_error_string(a));
out:
        if (w)
                archive_write_free(w);
        if (a)
                archive_read_free(a);
        return r;
}

static int make_tmp_dir(char **ret, struct kiln_error **err)
{
        const char *tmp = getenv("TMPDIR");
        _cleanup_free_ char *d =
                kiln_xasprintf("%s/kiln-context-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");

        if (!mkdtemp(d))
                return kiln_error_set(err, -errno, "make a temporary directory in '%s': %s",
                                      tmp && tmp[0] ? tmp : "/tmp", strerror(errno));
        *ret = TAKE_PTR(d);
        return 0;
}

static char *context_key(const char *what)
{
        char host[256] = "";

        (void) gethostname(host, sizeof(host) - 1);
        return kiln_xasprintf("%s:%s", host[0] ? host : "localhost", what);
}

/* handleLowercaseDockerfile: "Dockerfile" missing but "dockerfile" there. */
static char *lowercase_dockerfile(const char *path)
{
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        _cleanup_free_ char *dir =
                slash ? kiln_xstrndup(path, (size_t) (slash - path + 1)) : kiln_xstrdup("");
        _cleanup_free_ char *lower = NULL;

        if (!streq(base, "Dockerfile") || access(path, F_OK) == 0)
                return kiln_xstrdup(path);
        lower = kiln_xasprintf("%sdockerfile", dir);
        return access(lower, F_OK) == 0 ? TAKE_PTR(lower) : kiln_xstrdup(path);
}

/* The Dockerfile from fd (stdin), after the prefix already read from it. */
static int read_dockerfile_fd(int fd, const void *prefix, size_t n_prefix, struct source *s,
                              struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_CLI_LIMIT_DOCKERFILE);
        char chunk[8192];

        if (n_prefix > 0 && kiln_buf_append(&b, prefix, n_prefix) < 0) {
                kiln_buf_release(&b);
                return kiln_error_set(err, -E2BIG,
                                      "failed to read dockerfile: larger than %u bytes",
                                      KILN_CLI_LIMIT_DOCKERFILE);
        }

        for (;;) {
                ssize_t n = read(fd, chunk, sizeof(chunk));

                if (n < 0 && errno == EINTR && !build_cancelled)
                        continue;
                if (n < 0) {
                        int r = -errno;

                        kiln_buf_release(&b);
                        return kiln_error_set(err, r, "failed to read dockerfile: %s",
                                              strerror(-r));
                }
                if (n == 0)
                        break;
                if (kiln_buf_append(&b, chunk, (size_t) n) < 0) {
                        kiln_buf_release(&b);
                        return kiln_error_set(err, -E2BIG,
                                              "failed to read dockerfile: larger than %u bytes",
                                              KILN_CLI_LIMIT_DOCKERFILE);
                }
        }
        s->dockerfile_len = b.len;
        s->dockerfile = kiln_buf_steal(&b);
        return 0;
}

/* The Dockerfile at path (relative to dir_fd); with nofollow, a symbolic
 * link there is refused (a tar from stdin decides what its names are). */
static int read_dockerfile_path(int dir_fd, const char *path, const char *shown, bool nofollow,
                                struct source *s, struct kiln_error **err)
{
        struct kiln_buf b = KILN_BUF_INIT(KILN_CLI_LIMIT_DOCKERFILE);
        char why[64];
        int r = kiln_read_file_at_flags(dir_fd, path, nofollow ? O_NOFOLLOW : 0, &b);

        if (r < 0) {
                kiln_buf_release(&b);
                /* BuildKit's words, which buildx shows under "failed to solve" */
                return kiln_error_set(
                        err, r, "failed to solve: failed to read dockerfile: open %s: %s", shown,
                        r == -ENOENT ? "no such file or directory"
                                     : kiln_read_file_strerror(r, KILN_CLI_LIMIT_DOCKERFILE, why));
        }
        s->dockerfile_len = b.len;
        s->dockerfile = kiln_buf_steal(&b);
        return 0;
}

static char *base_name(const char *p)
{
        const char *slash = strrchr(p, '/');

        return kiln_xstrdup(slash && slash[1] ? slash + 1 : p);
}

static int source_open(const char *context, const char *file, struct source *s,
                       struct kiln_error **err)
{
        int r;

        if (streq(context, "-")) {
                struct stdin_reader *in = kiln_xcalloc(1, sizeof(*in));
                ssize_t n = 0;

                if (file && streq(file, "-")) {
                        free(in);
                        return kiln_error_set(err, -EINVAL,
                                              "invalid argument: can't use stdin for both build "
                                              "context and dockerfile");
                }
                while (in->n_peek < STDIN_PEEK) {
                        n = read(STDIN_FILENO, in->peek + in->n_peek, STDIN_PEEK - in->n_peek);
                        if (n < 0 && errno == EINTR && !build_cancelled)
                                continue;
                        if (n <= 0)
                                break;
                        in->n_peek += (size_t) n;
                }
                if (n < 0) {
                        r = -errno;
                        free(in);
                        return kiln_error_set(err, r,
                                              "failed to peek context header from STDIN: %s",
                                              strerror(-r));
                }
                r = make_tmp_dir(&s->tmp_dir, err);
                if (r < 0) {
                        free(in);
                        return r;
                }
                s->dir = kiln_xstrdup(s->tmp_dir);
                s->key = context_key("stdin");
                s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (s->dir_fd < 0) {
                        r = kiln_error_set(err, -errno, "open '%s': %s", s->dir, strerror(errno));
                        free(in);
                        return r;
                }
                if (is_archive(in->peek, in->n_peek)) {
                        r = extract_stdin(in, s->tmp_dir, err);
                        free(in);
                        if (r < 0)
                                return r;
                        /* The Dockerfile comes from the tar, unless -f. */
                        {
                                _cleanup_free_ char *rel =
                                        kiln_pattern_clean(file && file[0] ? file : "Dockerfile");

                                while (rel[0] == '/')
                                        memmove(rel, rel + 1, strlen(rel));
                                r = read_dockerfile_path(s->dir_fd, rel, rel, true, s, err);
                                if (r < 0)
                                        return r;
                                s->dockerfile_name = base_name(rel);
                        }
                } else {
                        /* Not an archive: stdin is the Dockerfile (what was
                         * peeked first), the context is empty. */
                        if (file && file[0]) {
                                free(in);
                                return kiln_error_set(err, -EINVAL,
                                                      "ambiguous Dockerfile source: both stdin "
                                                      "and flag correspond to Dockerfiles");
                        }
                        r = read_dockerfile_fd(STDIN_FILENO, in->peek, in->n_peek, s, err);
                        free(in);
                        if (r < 0)
                                return r;
                        s->dockerfile_name = kiln_xstrdup("Dockerfile");
                }
                goto ignore;
        }

        if (is_remote_context(context))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "unable to prepare context: remote contexts (%s) are not "
                                      "supported yet",
                                      context);
        {
                struct stat st;

                if (stat(context, &st) < 0 || !S_ISDIR(st.st_mode))
                        return kiln_error_set(err, -ENOENT,
                                              "unable to prepare context: path \"%s\" not found",
                                              context);
        }
        r = kiln_path_absolute(context, &s->dir);
        if (r < 0)
                return kiln_error_set(err, r, "unable to prepare context: %s", strerror(-r));
        s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dir_fd < 0)
                return kiln_error_set(err, -errno, "unable to prepare context: open '%s': %s",
                                      context, strerror(errno));
        s->key = context_key(s->dir);
        if (file && streq(file, "-")) {
                r = read_dockerfile_fd(STDIN_FILENO, NULL, 0, s, err);
                if (r < 0)
                        return r;
                s->dockerfile_name = kiln_xstrdup("Dockerfile");
        } else {
                _cleanup_free_ char *given = file && file[0]
                                                     ? kiln_xstrdup(file)
                                                     : kiln_xasprintf("%s/Dockerfile", context);
                _cleanup_free_ char *path = lowercase_dockerfile(given);
                _cleanup_free_ char *shown = base_name(path);

                r = read_dockerfile_path(AT_FDCWD, path, shown, false, s, err);
                if (r < 0)
                        return r;
                s->dockerfile_name = TAKE_PTR(shown);
                r = kiln_cli_context_dockerignore(s->dir_fd, context, path, &s->dockerignore, err);
                if (r < 0)
                        return r;
                return 0;
        }
ignore:
        r = kiln_cli_context_dockerignore(s->dir_fd, s->dir, NULL, &s->dockerignore, err);
        return r < 0 ? r : 0;
}

/* ---- HTTP with a streamed body ---- */

struct upload {
        struct kiln_cli_context_tar *tar; /* NULL: the body is in memory */
        const char *body;
        size_t body_len, body_pos;
};

static ssize_t upload_read(void *userdata, void *buf, size_t n, struct kiln_error **err)
{
        struct upload *u = userdata;

        if (build_cancelled)
                return kiln_error_set(err, -ECANCELED, "cancelled");
        if (u->tar)
                return kiln_cli_context_tar_read(u->tar, buf, n, err);
        if (n > u->body_len - u->body_pos)
                n = u->body_len - u->body_pos;
        memcpy(buf, u->body + u->body_pos, n);
        u->body_pos += n;
        return (ssize_t) n;
}

/* One request of a context transfer, its body sent as it is produced (the
 * tar) or from memory; the answer must be a 2xx JSON object of at most
 * max_answer bytes. A cancelled build ends it with -ECANCELED. */
static int context_send(const struct kiln_cli_http_target *t, const char *method, const char *path,
                        const char *content_type, struct upload *u, size_t max_answer, json_t **ret,
                        struct kiln_error **err)
{
        const struct kiln_cli_http_body body = {
                .content_type = content_type,
                .size = u->tar ? -1 : (int64_t) u->body_len,
                .read = upload_read,
                .userdata = u,
        };
        int r;

        r = kiln_cli_http_send_json(t, method, path, &body, max_answer, CONTEXT_TIMEOUT_MS, ret,
                                    err);
        if (build_cancelled) {
                if (r >= 0)
                        json_decref(*ret);
                return -ECANCELED;
        }
        return r;
}

/* ---- the build stream ---- */

struct build {
        struct kiln_cli_progress *progress;
        struct kiln_cli_http_target target;
        struct source *src;
        char **ignore; /* the .dockerignore patterns */
        size_t n_ignore;
        char *id;
        char *error;
        bool have_result;
        struct kiln_error *fail; /* a client-side failure that ended the stream */
        const struct kiln_cli_outputs *outputs;
        struct kiln_cli_export *exports[KILN_API_LIMIT_BUILD_OUTPUTS];
        json_t *exporter_response; /* the result's */
        /* `docker load`'s step in the progress, as buildx shows it */
        char load_digest[7 + KILN_SHA256_HEX_LEN + 1];
        char load_started[KILN_API_TIME_SIZE];
};

/* Returns 1 when the daemon has the context whose entry list is body, 0
 * when the list must be sent, or -errno. */
static int probe_context(struct build *bd, const char *path, const char *body, size_t body_len,
                         struct kiln_error **err)
{
        _cleanup_free_ char *probe = NULL;
        char digest[7 + KILN_SHA256_HEX_LEN + 1] = "sha256:";
        struct upload u = { 0 };
        json_t *j = NULL, *answer = NULL;
        size_t len = 0;
        bool unchanged = false;
        int r;

        kiln_sha256_hex(body, body_len, digest + 7);
        /* kiln_cli_http_json_body consumes j */
        if (kiln_api_context_probe_to_json(digest, &j) < 0 ||
            !(probe = kiln_cli_http_json_body(j, &len)))
                return kiln_error_set(err, -ENOMEM, "out of memory");
        u.body = probe;
        u.body_len = len;
        r = context_send(&bd->target, "POST", path, KILN_API_CONTENT_TYPE_JSON, &u, 1u << 10,
                         &answer, err);
        if (r < 0)
                return r;
        r = kiln_api_context_unchanged_from_json(answer, &unchanged, err);
        json_decref(answer);
        if (r < 0)
                return kiln_error_wrap(err, "POST %s", path);
        if (unchanged)
                log_debug("context '%s': unchanged since the last build", bd->src->dir);
        return unchanged ? 1 : 0;
}

static int send_context(struct build *bd, const struct kiln_api_build_event *ev,
                        struct kiln_error **err)
{
        struct kiln_cli_context_filter f = {
                .ignore = (const char *const *) bd->ignore,
                .n_ignore = bd->n_ignore,
                .include = (const char *const *) ev->include_patterns,
                .n_include = ev->n_include_patterns,
                .exclude = (const char *const *) ev->exclude_patterns,
                .n_exclude = ev->n_exclude_patterns,
                .follow_paths = (const char *const *) ev->follow_paths,
                .n_follow_paths = ev->n_follow_paths,
        };
        struct kiln_api_context_entry *entries = NULL;
        size_t n_entries = 0, n_need = 0, body_len = 0;
        _cleanup_free_ char *path = NULL, *body = NULL;
        _cleanup_(kiln_cli_strv_freep) char **need = NULL;
        _cleanup_(kiln_cli_context_tar_freep) struct kiln_cli_context_tar *tar = NULL;
        struct upload u = { 0 };
        json_t *j = NULL, *answer = NULL;
        int r;

        if (!bd->id)
                return kiln_error_set(err, -EBADMSG,
                                      "the daemon asked for a context before naming the build");
        if (!ev->name || !streq(ev->name, "context"))
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "the daemon asked for the local source '%s', which kiln "
                                      "does not provide",
                                      ev->name ? ev->name : "");
        r = kiln_cli_context_walk(bd->src->dir_fd, bd->src->dir, &f, &entries, &n_entries, err);
        if (r < 0)
                return r;
        if (build_cancelled) {
                r = -ECANCELED;
                goto out;
        }
        path = kiln_api_build_context_path(bd->id, ev->name);
        r = kiln_api_context_entries_to_json(entries, n_entries, &j);
        body = r < 0 ? NULL : kiln_cli_http_json_body(j, &body_len);
        if (!body) {
                r = kiln_error_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        /* First the digest of the list: an unchanged context needs nothing
         * more (the daemon remembers the digest of the last list). */
        r = probe_context(bd, path, body, body_len, err);
        if (r != 0) {
                r = r > 0 ? 0 : r;
                goto out;
        }
        u.body = body;
        u.body_len = body_len;
        r = context_send(&bd->target, "POST", path, KILN_API_CONTENT_TYPE_JSON, &u,
                         KILN_CLI_LIMIT_NEED_RESPONSE, &answer, err);
        if (r < 0)
                goto out;
        r = kiln_api_context_need_from_json(answer, &need, &n_need, err);
        json_decref(answer);
        answer = NULL;
        if (r < 0) {
                kiln_error_wrap(err, "POST %s", path);
                goto out;
        }

        r = kiln_cli_context_tar_new(bd->src->dir_fd, bd->src->dir, entries, n_entries,
                                     (const char *const *) need, n_need, &build_cancelled, &tar,
                                     err);
        if (r < 0)
                goto out;
        u = (struct upload){ .tar = tar };
        r = context_send(&bd->target, "PUT", path, "application/x-tar", &u, 1u << 20, &answer, err);
        if (r >= 0) {
                json_decref(answer);
                uint64_t files, bytes;

                kiln_cli_context_tar_stats(tar, &files, &bytes);
                log_debug("context '%s': %zu entries, %" PRIu64 " files (%" PRIu64 " bytes) sent",
                          bd->src->dir, n_entries, files, bytes);
        }
out:
        kiln_api_context_entries_free(entries, n_entries);
        return r;
}

/* ---- outputs ---- */

/* buildx's BUILDX_NO_DEFAULT_LOAD: no default output, and no warning about
 * the missing one. */
static bool no_default_load(void)
{
        const char *v = getenv("BUILDX_NO_DEFAULT_LOAD");

        return v && (streq(v, "1") || streq(v, "t") || streq(v, "T") || streq(v, "true") ||
                     streq(v, "TRUE") || streq(v, "True"));
}

/* "importing to docker": buildx's step around `docker load`, with what
 * docker load printed as its log. */
static void load_step(struct build *bd, bool done, const char *error, const char *output)
{
        char now[KILN_API_TIME_SIZE];
        struct kiln_api_build_event ev = {
                .type = KILN_API_BUILD_EVENT_VERTEX,
                .digest = bd->load_digest,
                .name = (char *) "importing to docker",
                .started = bd->load_started,
                .time = now,
        };

        kiln_api_time_now(now);
        if (!done) {
                kiln_api_time_now(bd->load_started);
                kiln_cli_progress_event(bd->progress, &ev);
                return;
        }
        if (output && output[0]) {
                _cleanup_free_ char *text = kiln_xasprintf("%s\n", output);
                struct kiln_api_build_event log = {
                        .type = KILN_API_BUILD_EVENT_LOG,
                        .vertex = bd->load_digest,
                        .stream = 1,
                        .data = (uint8_t *) text,
                        .len = strlen(text),
                        .time = now,
                };

                kiln_cli_progress_event(bd->progress, &log);
        }
        ev.completed = now;
        ev.error = (char *) error;
        kiln_cli_progress_event(bd->progress, &ev);
}

static int start_export(struct build *bd, const struct kiln_api_build_event *ev,
                        struct kiln_error **err)
{
        const struct kiln_cli_output *o;
        int r;

        if (!bd->id)
                return kiln_error_set(err, -EBADMSG,
                                      "the daemon sent an output before naming the build");
        if (ev->index >= bd->outputs->n || bd->exports[ev->index] ||
            bd->outputs->v[ev->index].sink == KILN_CLI_OUTPUT_SINK_NONE)
                return kiln_error_set(err, -EBADMSG,
                                      "the daemon sent output %u, which kiln does not expect",
                                      ev->index);
        o = &bd->outputs->v[ev->index];
        r = kiln_cli_export_start(&bd->target, bd->id, ev->index, o, &bd->exports[ev->index], err);
        if (r < 0)
                return r;
        if (o->sink == KILN_CLI_OUTPUT_SINK_DOCKER_LOAD) {
                _cleanup_free_ char *seed =
                        kiln_xasprintf("importing to docker %s %u", bd->id, ev->index);

                kiln_sha256_hex(seed, strlen(seed), bd->load_digest + 7);
                memcpy(bd->load_digest, "sha256:", 7);
                load_step(bd, false, NULL, NULL);
        }
        return 0;
}

/* Waits for the outputs the client writes. With cancel (the build failed
 * or ended early), stops them first; an output's own failure (its file,
 * its extraction, docker load) is then still the error worth reporting.
 * Returns 0, or the first failure (*err set). */
static int finish_exports(struct build *bd, bool cancel, struct kiln_error **err)
{
        int ret = 0;

        for (size_t i = 0; i < ELEMENTSOF(bd->exports); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                _cleanup_free_ char *output = NULL;
                bool local = false;
                int r;

                if (!bd->exports[i])
                        continue;
                if (cancel)
                        kiln_cli_export_cancel(bd->exports[i]);
                r = kiln_cli_export_wait(bd->exports[i], &output, &local, &e);
                bd->exports[i] = kiln_cli_export_free(bd->exports[i]);
                /* a cancelled build cut the pipe: that is no failure of docker */
                if (bd->outputs->v[i].sink == KILN_CLI_OUTPUT_SINK_DOCKER_LOAD)
                        load_step(bd, true,
                                  r >= 0            ? NULL
                                  : build_cancelled ? "context canceled"
                                                    : kiln_error_message(e),
                                  output);
                if (r < 0 && ret == 0 && (!cancel || local)) {
                        kiln_error_free(*err);
                        *err = TAKE_PTR(e);
                        ret = r;
                }
        }
        return ret;
}

static int on_build_event(json_t *j, void *userdata, struct kiln_error **err)
{
        struct build *bd = userdata;
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_api_build_event ev = { 0 };
        const char *type = json_string_value(json_object_get(j, "type"));
        int r = 0;

        if (build_cancelled)
                return kiln_error_set(err, -ECANCELED, "cancelled");
        if (!type || kiln_api_build_event_type_from_string(type) < 0)
                return 0; /* an event this kiln does not know */
        r = kiln_api_build_event_from_json(j, &ev, &e);
        if (r < 0) {
                bd->fail = TAKE_PTR(e);
                return kiln_error_set(err, r, "bad event");
        }
        switch (ev.type) {
        case KILN_API_BUILD_EVENT_BUILD:
                free(bd->id);
                bd->id = ev.id ? kiln_xstrdup(ev.id) : NULL;
                break;
        case KILN_API_BUILD_EVENT_CONTEXT_REQUEST:
                r = send_context(bd, &ev, &e);
                if (r < 0) {
                        if (r != -ECANCELED || !build_cancelled)
                                bd->fail = TAKE_PTR(e);
                        r = kiln_error_set(err, r, "context");
                }
                break;
        case KILN_API_BUILD_EVENT_EXPORT:
                r = start_export(bd, &ev, &e);
                if (r < 0) {
                        bd->fail = TAKE_PTR(e);
                        r = kiln_error_set(err, r, "export");
                }
                break;
        case KILN_API_BUILD_EVENT_RESULT:
                /* the daemon sends the result once the downloads ended */
                r = finish_exports(bd, false, &e);
                if (r < 0) {
                        bd->fail = TAKE_PTR(e);
                        r = kiln_error_set(err, r, "export");
                        break;
                }
                bd->have_result = true;
                json_decref(bd->exporter_response);
                bd->exporter_response = json_incref(ev.exporter_response);
                break;
        case KILN_API_BUILD_EVENT_ERROR:
                free(bd->error);
                bd->error = kiln_xstrdup(ev.error && ev.error[0] ? ev.error : "unknown error");
                kiln_cli_progress_event(bd->progress, &ev);
                break;
        case KILN_API_BUILD_EVENT_VERTEX:
        case KILN_API_BUILD_EVENT_STATUS:
        case KILN_API_BUILD_EVENT_LOG:
        case KILN_API_BUILD_EVENT_WARNING:
                kiln_cli_progress_event(bd->progress, &ev);
                break;
        case _KILN_API_BUILD_EVENT_TYPE_MAX:
        case _KILN_API_BUILD_EVENT_TYPE_INVALID:
                break;
        }
        kiln_api_build_event_release(&ev);
        return r;
}

/* ---- metadata file ---- */

static int write_metadata(const char *file, const struct kiln_cli_builder *b, const char *id,
                          const struct kiln_cli_progress *p, const json_t *exporter_response,
                          struct kiln_error **err)
{
        _cleanup_free_ char *ref = kiln_xasprintf("%s/%s/%s", b->name, b->node, id ? id : "");
        json_t *o = kiln_cli_build_metadata(exporter_response, ref),
               *w = kiln_cli_progress_warnings_json(p);
        char *text;
        int r;

        if (!o) {
                json_decref(w);
                return kiln_error_set(err, -ENOMEM, "out of memory");
        }
        if (w)
                (void) json_object_set_new(o, "buildx.build.warnings", w);
        text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(o);
        if (!text)
                return kiln_error_set(err, -ENOMEM, "out of memory");
        /* as the file outputs write: through links and into devices */
        {
                _cleanup_(kiln_cli_output_writer_freep) struct kiln_cli_output_writer *mw = NULL;
                struct kiln_cli_output out = { .sink = KILN_CLI_OUTPUT_SINK_FILE,
                                               .dest = (char *) file };

                r = kiln_cli_output_writer_new(&out, &mw, err);
                if (r >= 0)
                        r = kiln_cli_output_writer_write(mw, text, strlen(text), err);
                if (r >= 0)
                        r = kiln_cli_output_writer_finish(mw, NULL, err);
        }
        free(text);
        if (r < 0)
                return kiln_error_wrap(err, "write metadata file '%s'", file);
        return 0;
}

/* ---- the command ---- */

struct request {
        struct kiln_api_build_request req;
        struct kiln_cli_outputs outputs;
};

static void request_release(struct request *q)
{
        kiln_api_build_request_release(&q->req);
        kiln_cli_outputs_release(&q->outputs);
}

static int parse_request(const struct kiln_cli_args *args, struct request *q,
                         struct kiln_error **err)
{
        const struct kiln_cli_value *v = args->values;
        _cleanup_(kiln_cli_strv_freep) char **platforms = NULL;
        size_t n_platforms = 0;
        const char *epoch = getenv("SOURCE_DATE_EPOCH");
        int r;

        for (size_t i = 0; i < v[OPT_TAG].n; i++) {
                r = check_tag(v[OPT_TAG].v[i], err);
                if (r < 0)
                        return r;
        }
        r = kv_list(v[OPT_BUILD_ARG].v, v[OPT_BUILD_ARG].n, true, &q->req.build_args,
                    &q->req.n_build_args, err);
        if (r < 0)
                return r;
        if (epoch && epoch[0]) {
                bool have = false;

                for (size_t i = 0; i < q->req.n_build_args; i++)
                        have = have || streq(q->req.build_args[i].key, "SOURCE_DATE_EPOCH");
                if (!have) {
                        const char *kv[] = { "SOURCE_DATE_EPOCH" };

                        r = kv_list(kv, 1, true, &q->req.build_args, &q->req.n_build_args, err);
                        if (r < 0)
                                return r;
                }
        }
        r = kv_list(v[OPT_LABEL].v, v[OPT_LABEL].n, false, &q->req.labels, &q->req.n_labels, err);
        if (r < 0)
                return r;
        if (v[OPT_TARGET].s && v[OPT_TARGET].s[0])
                q->req.target = kiln_xstrdup(v[OPT_TARGET].s);

        split_commas(v[OPT_PLATFORM].v, v[OPT_PLATFORM].n, &platforms, &n_platforms);
        if (n_platforms > 1)
                return kiln_error_set(err, -EOPNOTSUPP,
                                      "building for several platforms at once is not supported "
                                      "yet (--platform %s)",
                                      v[OPT_PLATFORM].v[0]);
        if (n_platforms == 1)
                q->req.platform = kiln_xstrdup(platforms[0]);

        q->req.no_cache = v[OPT_NO_CACHE].b;
        split_commas(v[OPT_NO_CACHE_FILTER].v, v[OPT_NO_CACHE_FILTER].n, &q->req.no_cache_filter,
                     &q->req.n_no_cache_filter);

        if (v[OPT_NETWORK].set) {
                const char *n = v[OPT_NETWORK].s;

                if (!streq(n, "") && !streq(n, "default") && !streq(n, "none") && !streq(n, "host"))
                        return kiln_error_set(err, -EINVAL,
                                              "network mode \"%s\" not supported by buildkit - you "
                                              "can define a custom network for your builder using "
                                              "the network driver-opt in kiln create",
                                              n);
                q->req.network = kiln_xstrdup(n[0] ? n : "default");
        }
        for (size_t i = 0; i < v[OPT_ADD_HOST].n; i++) {
                r = parse_add_host(v[OPT_ADD_HOST].v[i], &q->req.add_hosts, &q->req.n_add_hosts,
                                   err);
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < v[OPT_SECRET].n; i++) {
                struct kiln_api_build_secret s = { 0 };
                size_t j;

                if (!v[OPT_SECRET].v[i][0])
                        continue;
                if (q->req.n_secrets >= KILN_API_LIMIT_BUILD_SECRETS)
                        return kiln_error_set(err, -E2BIG, "more than %u secrets",
                                              KILN_API_LIMIT_BUILD_SECRETS);
                r = parse_secret(v[OPT_SECRET].v[i], &s, err);
                if (r < 0) {
                        if (s.data)
                                explicit_bzero(s.data, s.len);
                        free(s.data);
                        free(s.id);
                        return r;
                }
                /* a later one with the same id wins (removeSecretDupes) */
                for (j = 0; j < q->req.n_secrets; j++)
                        if (streq(q->req.secrets[j].id, s.id))
                                break;
                if (j < q->req.n_secrets) {
                        explicit_bzero(q->req.secrets[j].data, q->req.secrets[j].len);
                        free(q->req.secrets[j].data);
                        free(q->req.secrets[j].id);
                } else {
                        q->req.secrets = kiln_xreallocarray(q->req.secrets, q->req.n_secrets + 1,
                                                            sizeof(*q->req.secrets));
                        q->req.n_secrets++;
                }
                q->req.secrets[j] = s;
        }
        for (size_t i = 0; i < v[OPT_SSH].n; i++) {
                struct kiln_api_build_ssh s = { 0 };
                size_t j;

                if (!v[OPT_SSH].v[i][0])
                        continue;
                r = parse_ssh(v[OPT_SSH].v[i], &s, err);
                if (r < 0)
                        return r;
                for (j = 0; j < q->req.n_ssh; j++)
                        if (streq(q->req.ssh[j].id, s.id))
                                break;
                if (j < q->req.n_ssh) {
                        free(q->req.ssh[j].id);
                        free(q->req.ssh[j].path);
                } else {
                        q->req.ssh = kiln_xreallocarray(q->req.ssh, q->req.n_ssh + 1,
                                                        sizeof(*q->req.ssh));
                        q->req.n_ssh++;
                }
                q->req.ssh[j] = s;
        }

        r = kiln_cli_outputs_parse(
                &(struct kiln_cli_outputs_options){
                        .specs = v[OPT_OUTPUT].v,
                        .n_specs = v[OPT_OUTPUT].n,
                        .push = v[OPT_PUSH].b,
                        .load = v[OPT_LOAD].b,
                        .tags = v[OPT_TAG].v,
                        .n_tags = v[OPT_TAG].n,
                        .stdout_is_terminal = isatty(STDOUT_FILENO) == 1,
                },
                &q->outputs, err);
        if (r < 0)
                return r;
        return 0;
}

static int progress_mode(const struct kiln_cli_args *args, enum kiln_cli_progress_mode *ret,
                         struct kiln_error **err)
{
        const char *s = args->values[OPT_PROGRESS].set ? args->values[OPT_PROGRESS].s : NULL;
        const char *env = getenv("BUILDKIT_PROGRESS");
        enum kiln_cli_progress_mode m;
        bool quiet = args->values[OPT_QUIET].b;

        if (!s)
                s = env && env[0] ? env : "auto";
        m = kiln_cli_progress_mode_from_string(s);
        if (m < 0)
                return kiln_error_set(err, -EINVAL, "invalid progress mode %s", s);
        if (quiet && m != KILN_CLI_PROGRESS_AUTO && m != KILN_CLI_PROGRESS_QUIET)
                return kiln_error_set(err, -EINVAL, "progress=%s and quiet cannot be used together",
                                      s);
        *ret = quiet ? KILN_CLI_PROGRESS_QUIET : m;
        return 0;
}

static int run(struct kiln_cli *cli, const struct kiln_cli_args *args, struct kiln_error **err)
{
        _cleanup_(kiln_cli_store_freep) struct kiln_cli_store *store = NULL;
        _cleanup_(kiln_cli_builder_freep) struct kiln_cli_builder *b = NULL;
        _cleanup_(kiln_cli_progress_freep) struct kiln_cli_progress *progress = NULL;
        _cleanup_(source_release) struct source src = { .dir_fd = -1 };
        _cleanup_(request_release) struct request q = { 0 };
        _cleanup_free_ char *desc = NULL, *console_desc = NULL, *body = NULL;
        struct build bd = { 0 };
        enum kiln_cli_progress_mode mode = KILN_CLI_PROGRESS_AUTO;
        const char *file = args->values[OPT_FILE].s;
        size_t body_len = 0;
        json_t *j = NULL;
        int r;

        build_cancelled = 0;
        r = progress_mode(args, &mode, err);
        if (r < 0)
                return r;
        if (args->values[OPT_CACHE_FROM].n > 0 || args->values[OPT_CACHE_TO].n > 0)
                fprintf(stderr, "WARNING: --cache-from and --cache-to are not supported yet: "
                                "ignored\n");

        r = parse_request(args, &q, err);
        if (r < 0)
                return r;

        cancel_catch();
        r = source_open(args->pos[0], file, &src, err);
        if (r < 0) {
                if (r == -ECANCELED || build_cancelled)
                        r = cancelled_error(err);
                else
                        kiln_error_wrap(err, "failed to build");
                goto out;
        }

        r = kiln_cli_image_target(cli, &store, &b, err);
        if (r < 0)
                goto out;
        /* The daemon binds the agent socket itself: it must run here. */
        if (q.req.n_ssh > 0 && b->driver != KILN_CLI_DRIVER_LOCAL) {
                r = kiln_error_set(err, -EOPNOTSUPP,
                                   "--ssh: forwarding an ssh agent needs a builder with the local "
                                   "driver ('%s' uses the %s driver)",
                                   b->name, kiln_cli_driver_kind_to_string(b->driver));
                goto out;
        }
        if (src.dockerignore) {
                r = kiln_pattern_read_ignorefile(src.dockerignore, strlen(src.dockerignore),
                                                 &bd.ignore, &bd.n_ignore, err);
                if (r < 0) {
                        kiln_error_wrap(err,
                                        "failed to build: failed to solve: read .dockerignore");
                        goto out;
                }
        }

        /* buildx: a builder with default-load loads a build that names no
         * output into Docker */
        if (q.outputs.n == 0 && !q.outputs.cache_only && !no_default_load() &&
            streq_ptr(kiln_cli_driver_opts_get(b->opts, b->n_opts, "default-load"), "true")) {
                r = kiln_cli_outputs_parse(
                        &(struct kiln_cli_outputs_options){ .load = true,
                                                            .tags = args->values[OPT_TAG].v,
                                                            .n_tags = args->values[OPT_TAG].n },
                        &q.outputs, err);
                if (r < 0)
                        goto out;
        }
        /* --load needs a Docker engine: known before anything is built */
        if (kiln_cli_outputs_need_docker(&q.outputs)) {
                r = kiln_cli_docker_check(kiln_cli_docker_host(), err);
                if (r < 0)
                        goto out;
        }
        kiln_cli_outputs_to_request(&q.outputs, &q.req);

        q.req.dockerfile = TAKE_PTR(src.dockerfile);
        q.req.dockerfile_name = kiln_xstrdup(src.dockerfile_name);
        q.req.dockerignore = src.dockerignore ? kiln_xstrdup(src.dockerignore) : NULL;
        q.req.context_key = kiln_xstrdup(src.key);
        r = kiln_api_build_request_to_json(&q.req, &j);
        body = r < 0 ? NULL : kiln_cli_http_json_body(j, &body_len);
        if (!body) {
                r = kiln_error_set(err, -ENOMEM, "out of memory");
                goto out;
        }

        desc = kiln_xasprintf("building with \"%s\" instance using %s driver", b->name,
                              kiln_cli_driver_kind_to_string(b->driver));
        console_desc = kiln_xasprintf("%s:%s", kiln_cli_driver_kind_to_string(b->driver), b->name);
        r = kiln_cli_progress_new(
                &(struct kiln_cli_progress_options){ .mode = mode,
                                                     .fd = STDERR_FILENO,
                                                     .desc = desc,
                                                     .console_desc = console_desc },
                &progress, err);
        if (r < 0)
                goto out;
        kiln_cli_progress_set_source(progress, q.req.dockerfile_name, q.req.dockerfile,
                                     src.dockerfile_len);
        if (q.outputs.n == 0 && !q.outputs.cache_only && !no_default_load())
                fprintf(stderr,
                        "WARNING: No output specified with %s driver. Build result will "
                        "only remain in the build cache. To push result image into "
                        "registry use --push or to load image into docker use --load\n",
                        kiln_cli_driver_kind_to_string(b->driver));

        bd.progress = progress;
        bd.outputs = &q.outputs;
        bd.src = &src;
        kiln_cli_builder_http_target(b, &bd.target);
        r = kiln_cli_http_stream(&bd.target, "POST", "/v1/build", body, body_len, 0, on_build_event,
                                 &bd, err);
        /* the request held the secrets: gone before anything else happens */
        explicit_bzero(body, body_len);
        /* outputs still downloading when the stream ended: the build failed
         * or was cancelled; an output's own failure is what to report */
        {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

                if (finish_exports(&bd, true, &e) < 0 && !bd.fail)
                        bd.fail = TAKE_PTR(e);
        }

        kiln_cli_progress_done(progress);
        kiln_cli_progress_print_warnings(progress, stderr, kiln_log_enabled(KILN_LOG_DEBUG));

        if (build_cancelled) {
                r = cancelled_error(err);
                goto out;
        }
        if (bd.fail) {
                kiln_error_free(*err);
                *err = TAKE_PTR(bd.fail);
                r = kiln_error_wrap(err, "failed to build");
                r = r < 0 ? r : -EIO;
                goto out;
        }
        if (r < 0) {
                kiln_error_wrap(err, "failed to build");
                goto out;
        }
        if (bd.error) {
                kiln_cli_progress_print_source(progress, stderr);
                kiln_error_free(*err);
                *err = NULL;
                r = kiln_error_set(err, -EIO, "failed to build: %s%s",
                                   startswith(bd.error, "failed to solve") ? ""
                                                                           : "failed to solve: ",
                                   bd.error);
                goto out;
        }
        if (!bd.have_result) {
                r = kiln_error_set(err, -EBADMSG,
                                   "failed to build: the daemon ended the stream without a result");
                goto out;
        }

        /* buildx: --quiet (or --progress=quiet, not "none") prints the image ID */
        if (args->values[OPT_QUIET].b ||
            (args->values[OPT_PROGRESS].set && streq_ptr(args->values[OPT_PROGRESS].s, "quiet"))) {
                printf("%s\n", kiln_cli_build_image_id(bd.exporter_response));
                fflush(stdout);
        }
        if (args->values[OPT_METADATA_FILE].s && args->values[OPT_METADATA_FILE].s[0]) {
                r = write_metadata(args->values[OPT_METADATA_FILE].s, b, bd.id, progress,
                                   bd.exporter_response, err);
                if (r < 0)
                        goto out;
        }
        r = 0;
out : {
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

        (void) finish_exports(&bd, true, &e);
}
        json_decref(bd.exporter_response);
        cancel_release();
        if (bd.ignore)
                kiln_pattern_strv_free(bd.ignore);
        kiln_error_free(bd.fail);
        free(bd.id);
        free(bd.error);
        return r;
}

const struct kiln_cli_command kiln_cli_command_build = {
        .name = "build",
        .usage = "build [OPTIONS] PATH | URL | -",
        .summary = "Start a build",
        .options = options,
        .n_options = ELEMENTSOF(options),
        .min_args = 1,
        .max_args = 1,
        .builder_option = true,
        .run = run,
};
