/* SPDX-License-Identifier: Apache-2.0 */
#include "source/git.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/goquote.h"
#include "base/log.h"
#include "base/sha256.h"
#include "snapshot/snapshot.h"

/* How often a running git or a lock wait looks at the cancel flag. */
#define POLL_MS 100
/* After SIGTERM, how long a cancelled git gets before SIGKILL. */
#define TERM_GRACE_MS 1000
/* Directory nesting walked to drop submodules' .git files. */
#define WALK_MAX_DEPTH 256u
/* One line of git output kept for redaction before it is passed on. */
#define LINE_MAX_BYTES 4096u
/* Arguments of one git command. */
#define MAX_ARGS 32u

/* ---- URLs ---- */

/* "scheme://" at the start: its length without "://", else 0. */
static size_t scheme_len(const char *s)
{
        size_t i = 0;
        while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
               (s[i] >= '0' && s[i] <= '9'))
                i++;
        return i > 0 && startswith(s + i, "://") ? i : 0;
}

static bool scheme_is(const char *s, const char *name)
{
        size_t n = scheme_len(s);
        if (n != strlen(name))
                return false;
        for (size_t i = 0; i < n; i++)
                if (ascii_tolower(s[i]) != name[i])
                        return false;
        return true;
}

/* BuildKit's sshutil.IsImplicitSSHTransport: user@host:path. */
static bool is_scp_like(const char *s)
{
        size_t i = 0;
        while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
               (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.')
                i++;
        if (i == 0 || s[i] != '@')
                return false;
        size_t h = ++i;
        while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
               (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.')
                i++;
        return i > h && s[i] == ':';
}

bool kiln_source_git_is_ssh(const char *remote)
{
        return scheme_is(remote, "ssh") || (!scheme_len(remote) && is_scp_like(remote));
}

static bool authority_end(char c)
{
        return c == 0 || c == '/' || c == '?' || c == '#' || c == ' ' || c == '\t' || c == '\n' ||
               c == '\r' || c == '\'' || c == '"' || c == '<' || c == '>';
}

/* Every "scheme://user:pass@" in text with its userinfo masked, as
 * urlutil.RedactCredentials does for one URL. */
static char *redact_text(const char *text)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        const char *p = text;
        for (;;) {
                const char *m = strstr(p, "://");
                if (!m) {
                        (void) kiln_buf_puts(&b, p);
                        break;
                }
                const char *auth = m + 3;
                const char *end = auth;
                while (!authority_end(*end))
                        end++;
                const char *at = NULL;
                for (const char *q = auth; q < end; q++)
                        if (*q == '@')
                                at = q;
                (void) kiln_buf_append(&b, p, (size_t) (auth - p));
                if (at) {
                        const char *colon = memchr(auth, ':', (size_t) (at - auth));
                        bool has_user = colon ? colon > auth : at > auth;
                        if (colon && has_user)
                                (void) kiln_buf_puts(&b, "xxxxx:xxxxx");
                        else if (colon)
                                (void) kiln_buf_puts(&b, ":xxxxx");
                        else if (has_user)
                                (void) kiln_buf_puts(&b, "xxxxx");
                        auth = at;
                }
                (void) kiln_buf_append(&b, auth, (size_t) (end - auth));
                p = end;
        }
        return kiln_buf_steal(&b);
}

char *kiln_source_git_redact(const char *remote)
{
        return redact_text(remote ? remote : "");
}

char *kiln_source_git_host(const char *remote)
{
        size_t n = scheme_len(remote);
        if (n) {
                const char *auth = remote + n + 3, *end = auth;
                while (!authority_end(*end))
                        end++;
                for (const char *q = auth; q < end; q++)
                        if (*q == '@')
                                auth = q + 1;
                return end > auth ? kiln_xstrndup(auth, (size_t) (end - auth)) : NULL;
        }
        if (is_scp_like(remote)) {
                const char *h = strchr(remote, '@') + 1;
                return kiln_xstrndup(h, strcspn(h, ":"));
        }
        return NULL;
}

static bool is_hex(const char *s)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
                      (*s >= 'A' && *s <= 'F')))
                        return false;
        return true;
}

/* gitutil.IsCommitSHA: 40 (sha1) or 64 (sha256) lower-case hex digits. */
static bool is_commit_sha(const char *s)
{
        size_t n = strlen(s);
        if (n != 40 && n != 64)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
                        return false;
        return true;
}

/* BuildKit's tokenScope: a github.com token may serve every github.com
 * remote (submodules), as actions/checkout does; else the remote only. */
static const char *token_scope(const char *remote)
{
        static const char *const pfx[] = { "https://github.com/", "https://www.github.com/" };
        for (size_t i = 0; i < ELEMENTSOF(pfx); i++)
                if (startswith(remote, pfx[i]))
                        return pfx[i];
        return remote;
}

static int check_options(const struct kiln_source_git_options *o, const char *safe,
                         struct kiln_error **err)
{
        if (!o->remote || !*o->remote)
                return kiln_error_set(err, -EINVAL, "git source: no remote");
        if (strlen(o->remote) > KILN_LIMIT_GIT_URL)
                return kiln_error_set(err, -ENAMETOOLONG, "git source: remote longer than %u bytes",
                                      KILN_LIMIT_GIT_URL);
        for (const unsigned char *p = (const unsigned char *) o->remote; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return kiln_error_set(err, -EINVAL,
                                              "git source '%s': control character in the remote",
                                              safe);
        size_t sl = scheme_len(o->remote);
        if (sl) {
                bool ok = scheme_is(o->remote, "http") || scheme_is(o->remote, "https") ||
                          scheme_is(o->remote, "git") || scheme_is(o->remote, "ssh") ||
                          (o->allow_file && scheme_is(o->remote, "file"));
                if (!ok)
                        return kiln_error_set(err, -EPROTONOSUPPORT,
                                              "git source '%s': %.*s: invalid protocol", safe,
                                              (int) sl, o->remote);
        } else if (!is_scp_like(o->remote))
                return kiln_error_set(err, -EPROTONOSUPPORT, "git source '%s': unknown protocol",
                                      safe);
        if (o->ref) {
                if (o->ref[0] == '-')
                        return kiln_error_set(err, -EINVAL, "invalid git ref \"%s\"", o->ref);
                if (strlen(o->ref) > KILN_LIMIT_GIT_REF)
                        return kiln_error_set(err, -ENAMETOOLONG,
                                              "git source '%s': ref longer than %u bytes", safe,
                                              KILN_LIMIT_GIT_REF);
                for (const unsigned char *p = (const unsigned char *) o->ref; *p; p++)
                        if (*p <= 0x20 || *p == 0x7f)
                                return kiln_error_set(err, -EINVAL, "invalid git ref \"%s\"",
                                                      o->ref);
        }
        if (o->subdir && strlen(o->subdir) > KILN_LIMIT_GIT_REF)
                return kiln_error_set(err, -ENAMETOOLONG,
                                      "git source '%s': subdir longer than %u bytes", safe,
                                      KILN_LIMIT_GIT_REF);
        if (o->checksum && *o->checksum && (!is_hex(o->checksum) || strlen(o->checksum) > 64))
                return kiln_error_set(err, -EINVAL,
                                      "invalid checksum %s for Git URL, expected hex commit hash",
                                      o->checksum);
        if (!o->work_dir)
                return kiln_error_set(err, -EINVAL, "git source '%s': no work directory", safe);
        return 0;
}

/* ---- running git ---- */

struct git_ctx {
        const struct kiln_source_git_options *o;
        char *safe_remote; /* redacted */
        char *git;         /* the git binary's path */
        char *tmp;         /* <work_dir>/git-XXXXXX: home/, known_hosts, index */
        char **env;
        size_t n_env;
        char *line[2]; /* stdout, stderr not yet passed on (no newline yet) */
        bool keep_tmp; /* something may still be mounted below tmp */
        size_t line_len[2];
};

static bool is_cancelled(const struct kiln_source_git_options *o)
{
        return o->cancel && atomic_load(o->cancel);
}

static void env_add(struct git_ctx *c, char *s)
{
        c->env = kiln_xreallocarray(c->env, c->n_env + 2, sizeof(char *));
        c->env[c->n_env++] = s;
        c->env[c->n_env] = NULL;
}

static char *find_git(void)
{
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/bin:/usr/bin:/bin";
        const char *p = path;
        while (*p) {
                size_t n = strcspn(p, ":");
                if (n > 0) {
                        char *cand = kiln_xasprintf("%.*s/git", (int) n, p);
                        if (access(cand, X_OK) == 0)
                                return cand;
                        free(cand);
                }
                p += n;
                if (*p == ':')
                        p++;
        }
        return NULL;
}

static void ctx_release(struct git_ctx *c)
{
        if (c->tmp && !c->keep_tmp) {
                struct kiln_error *e = NULL;
                if (kiln_rm_rf_at(AT_FDCWD, c->tmp, NULL, &e) < 0)
                        log_warning("%s", kiln_error_message(e));
                kiln_error_free(e);
        }
        for (size_t i = 0; i < c->n_env; i++) {
                /* the auth header lives in the environment: wipe it */
                explicit_bzero(c->env[i], strlen(c->env[i]));
                free(c->env[i]);
        }
        free(c->env);
        free(c->tmp);
        free(c->git);
        free(c->safe_remote);
        free(c->line[0]);
        free(c->line[1]);
        *c = (struct git_ctx){ 0 };
}

static char *auth_value(const struct kiln_source_git_options *o)
{
        if (o->auth_header)
                return kiln_xasprintf("Authorization: %.*s", (int) o->auth_header_len,
                                      (const char *) o->auth_header);
        if (!o->auth_token)
                return NULL;
        static const char pfx[] = "x-access-token:";
        size_t n = sizeof(pfx) - 1 + o->auth_token_len;
        _cleanup_free_ unsigned char *raw = kiln_xmalloc(n);
        memcpy(raw, pfx, sizeof(pfx) - 1);
        memcpy(raw + sizeof(pfx) - 1, o->auth_token, o->auth_token_len);
        _cleanup_free_ unsigned char *b64 = kiln_xmalloc(4 * ((n + 2) / 3) + 1);
        EVP_EncodeBlock(b64, raw, (int) n);
        explicit_bzero(raw, n);
        char *v = kiln_xasprintf("Authorization: basic %s", (char *) b64);
        explicit_bzero(b64, strlen((char *) b64));
        return v;
}

static int ctx_init(struct git_ctx *c, const struct kiln_source_git_options *o,
                    struct kiln_error **err)
{
        *c = (struct git_ctx){ .o = o };
        c->safe_remote = kiln_source_git_redact(o->remote);
        int r = check_options(o, c->safe_remote, err);
        if (r < 0)
                return r;
        bool ssh = kiln_source_git_is_ssh(o->remote);
        if (ssh && (!o->ssh_auth_sock || !*o->ssh_auth_sock))
                return kiln_error_set(err, -ENOKEY,
                                      "git source '%s': an ssh remote needs an ssh agent socket "
                                      "(--ssh default)",
                                      c->safe_remote);
        if (ssh && (!o->known_ssh_hosts || !*o->known_ssh_hosts))
                return kiln_error_set(err, -ENOKEY,
                                      "git source '%s': no configured known hosts forwarded from "
                                      "the client",
                                      c->safe_remote);
        if (ssh && strlen(o->known_ssh_hosts) > KILN_LIMIT_GIT_KNOWN_HOSTS)
                return kiln_error_set(err, -E2BIG, "git source '%s': known hosts over %u bytes",
                                      c->safe_remote, KILN_LIMIT_GIT_KNOWN_HOSTS);
        c->git = find_git();
        if (!c->git)
                return kiln_error_set(err, -ENOENT, "failed to find git binary: not in PATH");
        r = kiln_mkdir_p(o->work_dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", o->work_dir, strerror(-r));
        char *t = kiln_xasprintf("%s/git-XXXXXX", o->work_dir);
        if (!mkdtemp(t)) {
                r = -errno;
                free(t);
                return kiln_error_set(err, r, "create a directory in '%s': %s", o->work_dir,
                                      strerror(-r));
        }
        c->tmp = t;
        _cleanup_free_ char *home = kiln_xasprintf("%s/home", c->tmp);
        if (mkdir(home, 0700) < 0)
                return kiln_error_set(err, -errno, "create '%s': %s", home, strerror(errno));

        const char *path = getenv("PATH");
        env_add(c,
                kiln_xasprintf("PATH=%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin"));
        env_add(c, kiln_xstrdup("GIT_TERMINAL_PROMPT=0"));
        env_add(c, kiln_xstrdup("LC_ALL=C"));
        env_add(c, kiln_xstrdup("GIT_CONFIG_NOSYSTEM=1"));
        env_add(c, kiln_xstrdup("GIT_CONFIG_GLOBAL=/dev/null"));
        env_add(c, kiln_xasprintf("HOME=%s", home));
        env_add(c, kiln_xasprintf("XDG_CONFIG_HOME=%s", home));
        env_add(c, kiln_xasprintf("GIT_ALLOW_PROTOCOL=http:https:git:ssh%s",
                                  o->allow_file ? ":file" : ""));
        static const char *const proxies[] = {
                "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                "http_proxy", "https_proxy", "no_proxy", "all_proxy"
        };
        for (size_t i = 0; i < ELEMENTSOF(proxies); i++) {
                const char *v = getenv(proxies[i]);
                if (v)
                        env_add(c, kiln_xasprintf("%s=%s", proxies[i], v));
        }
        if (ssh) {
                _cleanup_free_ char *kh = kiln_xasprintf("%s/known_hosts", c->tmp);
                r = kiln_write_file_atomic(kh, o->known_ssh_hosts, strlen(o->known_ssh_hosts),
                                           0600);
                if (r < 0)
                        return kiln_error_set(err, r, "write '%s': %s", kh, strerror(-r));
                /* git runs this through sh: the path is ours (no quoting
                 * needed: work_dir plus "git-XXXXXX") but refuse surprises */
                if (strpbrk(kh, " \t\n'\"\\$`;&|<>(){}*?[]~"))
                        return kiln_error_set(err, -EINVAL,
                                              "git source: work directory '%s' holds shell "
                                              "characters",
                                              o->work_dir);
                env_add(c, kiln_xasprintf("GIT_SSH_COMMAND=ssh -F /dev/null -o "
                                          "UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null "
                                          "-o StrictHostKeyChecking=yes -o BatchMode=yes "
                                          "-o IdentityFile=none",
                                          kh));
                env_add(c, kiln_xasprintf("SSH_AUTH_SOCK=%s", o->ssh_auth_sock));
        } else
                env_add(c, kiln_xstrdup("GIT_SSH_COMMAND=ssh -F /dev/null -o BatchMode=yes "
                                        "-o IdentityFile=none"));
        char *auth = auth_value(o);
        if (auth) {
                env_add(c, kiln_xstrdup("GIT_CONFIG_COUNT=1"));
                env_add(c, kiln_xasprintf("GIT_CONFIG_KEY_0=http.%s.extraheader",
                                          token_scope(o->remote)));
                env_add(c, kiln_xasprintf("GIT_CONFIG_VALUE_0=%s", auth));
                explicit_bzero(auth, strlen(auth));
                free(auth);
        }
        return 0;
}

static void emit(struct git_ctx *c, int stream, const char *data, size_t n)
{
        if (!c->o->on_output || n == 0)
                return;
        _cleanup_free_ char *s = kiln_xstrndup(data, n);
        _cleanup_free_ char *red = redact_text(s);
        c->o->on_output(c->o->userdata, stream, red, strlen(red));
}

/* Passes output on by lines ('\n' or '\r' ended: git's progress), so that a
 * URL is never split between two redactions. */
static void output(struct git_ctx *c, int stream, const char *data, size_t n, bool flush)
{
        if (!c->o->on_output)
                return;
        int k = stream == 1 ? 0 : 1;
        for (size_t i = 0; i < n; i++) {
                if (!c->line[k])
                        c->line[k] = kiln_xmalloc(LINE_MAX_BYTES + 1);
                c->line[k][c->line_len[k]++] = data[i];
                if (data[i] == '\n' || data[i] == '\r' || c->line_len[k] == LINE_MAX_BYTES) {
                        emit(c, stream, c->line[k], c->line_len[k]);
                        c->line_len[k] = 0;
                }
        }
        if (flush && c->line_len[k]) {
                emit(c, stream, c->line[k], c->line_len[k]);
                c->line_len[k] = 0;
        }
}

struct git_run {
        const char *cwd;        /* NULL: tmp */
        const char *index_file; /* GIT_INDEX_FILE, or NULL */
        bool file_ok;           /* file:// allowed (a clone of the cache repository) */
        struct kiln_buf *out;   /* stdout kept here; NULL: passed to on_output */
        char *stderr_text;      /* set on failure (redacted, trimmed) */
        int exit_code;
};

/* The subcommand in args ("fetch"), for messages. */
static const char *cmd_name(const char *const *args)
{
        for (size_t i = 0; args[i]; i++) {
                if (streq(args[i], "-c") && args[i + 1])
                        i++;
                else if (args[i][0] != '-')
                        return args[i];
        }
        return "command";
}

/* Runs git with args (NULL-terminated). 0 on exit 0; -EIO with run->
 * stderr_text on another exit; -ECANCELED, -ETIMEDOUT; other negative
 * errnos with *err set. */
static int git_exec(struct git_ctx *c, const char *const *args, struct git_run *run,
                    struct kiln_error **err)
{
        const struct kiln_source_git_options *o = c->o;
        if (is_cancelled(o))
                return kiln_error_set(err, -ECANCELED, "git source '%s': canceled", c->safe_remote);
        const char *argv[MAX_ARGS + 6];
        size_t na = 0;
        argv[na++] = "git";
        argv[na++] = "-c";
        argv[na++] = "protocol.file.allow=user";
        /* an automatic gc runs inside the command (under the repository's
         * lock, killed with it on cancel), never detached */
        argv[na++] = "-c";
        argv[na++] = "gc.autoDetach=false";
        for (size_t i = 0; args[i]; i++) {
                if (na >= ELEMENTSOF(argv) - 1)
                        return kiln_error_set(err, -E2BIG, "git: too many arguments");
                argv[na++] = args[i];
        }
        argv[na] = NULL;

        char **envp = c->env;
        _cleanup_free_ char **envx = NULL;
        _cleanup_free_ char *idx = NULL;
        if (run->index_file || run->file_ok) {
                size_t k = 0;
                envx = kiln_xcalloc(c->n_env + 3, sizeof(char *));
                for (size_t i = 0; i < c->n_env; i++)
                        if (!run->file_ok || !startswith(c->env[i], "GIT_ALLOW_PROTOCOL="))
                                envx[k++] = c->env[i];
                if (run->file_ok)
                        envx[k++] = (char *) "GIT_ALLOW_PROTOCOL=file";
                if (run->index_file) {
                        idx = kiln_xasprintf("GIT_INDEX_FILE=%s", run->index_file);
                        envx[k++] = idx;
                }
                envp = envx;
        }
        const char *cwd = run->cwd ? run->cwd : c->tmp;

        int outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
        if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
                int r = -errno;
                if (outp[0] >= 0) {
                        close(outp[0]);
                        close(outp[1]);
                }
                return kiln_error_set(err, r, "git: pipe: %s", strerror(-r));
        }
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                close(outp[0]);
                close(outp[1]);
                close(errp[0]);
                close(errp[1]);
                return kiln_error_set(err, r, "git: fork: %s", strerror(-r));
        }
        if (pid == 0) {
                /* async-signal-safe calls only from here on */
                (void) setpgid(0, 0);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                sigset_t all;
                sigemptyset(&all);
                (void) sigprocmask(SIG_SETMASK, &all, NULL);
                (void) umask(022);
                int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(outp[1], 1) < 0 ||
                    dup2(errp[1], 2) < 0)
                        _exit(127);
                (void) syscall(SYS_close_range, 3U, ~0U, 0U);
                if (chdir(cwd) < 0)
                        _exit(127);
                execve(c->git, (char *const *) argv, envp);
                _exit(127);
        }
        close(outp[1]);
        close(errp[1]);

        struct kiln_buf errbuf = KILN_BUF_INIT(KILN_LIMIT_GIT_OUTPUT);
        struct pollfd pfd[2] = { { .fd = outp[0], .events = POLLIN },
                                 { .fd = errp[0], .events = POLLIN } };
        unsigned timeout = o->timeout_sec ? o->timeout_sec : KILN_LIMIT_GIT_TIMEOUT_SEC;
        int64_t deadline = kiln_mono_ms() + (int64_t) timeout * 1000;
        int stop = 0; /* -ECANCELED, -ETIMEDOUT, -E2BIG */
        int64_t term_at = 0;
        bool killed = false;
        char chunk[16384];
        while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
                int pr = poll(pfd, 2, POLL_MS);
                if (pr < 0 && errno != EINTR) {
                        if (!stop)
                                stop = -errno;
                        break;
                }
                for (int i = 0; pr > 0 && i < 2; i++) {
                        if (pfd[i].fd < 0 || !pfd[i].revents)
                                continue;
                        ssize_t n = read(pfd[i].fd, chunk, sizeof(chunk));
                        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (n <= 0) {
                                close(pfd[i].fd);
                                pfd[i].fd = -1;
                                continue;
                        }
                        if (i == 0 && run->out) {
                                if (kiln_buf_append(run->out, chunk, (size_t) n) < 0 && !stop)
                                        stop = -E2BIG;
                        } else
                                output(c, i + 1, chunk, (size_t) n, false);
                        if (i == 1)
                                (void) kiln_buf_append(&errbuf, chunk, (size_t) n);
                }
                if (!stop && is_cancelled(o))
                        stop = -ECANCELED;
                if (!stop && kiln_mono_ms() > deadline)
                        stop = -ETIMEDOUT;
                if (stop && !term_at) {
                        (void) kill(-pid, SIGTERM);
                        term_at = kiln_mono_ms();
                } else if (stop && !killed && kiln_mono_ms() - term_at > TERM_GRACE_MS) {
                        (void) kill(-pid, SIGKILL);
                        killed = true;
                }
        }
        if (stop && !killed)
                (void) kill(-pid, SIGKILL);
        for (int i = 0; i < 2; i++)
                if (pfd[i].fd >= 0)
                        close(pfd[i].fd);
        output(c, 1, NULL, 0, true);
        output(c, 2, NULL, 0, true);
        /* git may close its output and go on: wait, still honouring
         * cancel and the deadline */
        int status = 0;
        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid || (w < 0 && errno != EINTR))
                        break;
                if (!stop && is_cancelled(o))
                        stop = -ECANCELED;
                if (!stop && kiln_mono_ms() > deadline)
                        stop = -ETIMEDOUT;
                if (stop)
                        (void) kill(-pid, SIGKILL);
                struct timespec ts = { 0, 10 * 1000000L };
                nanosleep(&ts, NULL);
        }
        if (stop == -ECANCELED) {
                kiln_buf_release(&errbuf);
                return kiln_error_set(err, -ECANCELED, "git source '%s': canceled", c->safe_remote);
        }
        if (stop) {
                kiln_buf_release(&errbuf);
                return kiln_error_set(err, stop, "git %s for %s: %s", cmd_name(args),
                                      c->safe_remote,
                                      stop == -ETIMEDOUT ? "timed out"
                                      : stop == -E2BIG   ? "output too long"
                                                         : strerror(-stop));
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                kiln_buf_release(&errbuf);
                return 0;
        }
        run->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        /* the message: git's stderr, trimmed, limited, redacted */
        char *t = errbuf.data ? errbuf.data : (char *) "";
        size_t tl = errbuf.len;
        while (tl > 0 && (t[tl - 1] == '\n' || t[tl - 1] == '\r' || t[tl - 1] == ' '))
                tl--;
        if (tl > KILN_LIMIT_GIT_ERROR) {
                t += tl - KILN_LIMIT_GIT_ERROR;
                tl = KILN_LIMIT_GIT_ERROR;
        }
        _cleanup_free_ char *raw = kiln_xstrndup(t, tl);
        free(run->stderr_text);
        run->stderr_text = redact_text(raw);
        kiln_buf_release(&errbuf);
        return -EIO;
}

static bool args_drop(const char **args, const char *what)
{
        for (size_t i = 0; args[i]; i++)
                if (streq(args[i], what)) {
                        for (size_t j = i; args[j]; j++)
                                args[j] = args[j + 1];
                        return true;
                }
        return false;
}

/* Runs git as BuildKit's GitCLI.Run does: a shallow fetch the server
 * refuses is retried without --depth, a fetch of a commit the server does
 * not advertise is retried without the commit (everything is fetched). The
 * error, on failure: "<what>: git stderr:\n<stderr>: exit status N". */
static int git_run(struct git_ctx *c, const char *const *args_in, struct git_run *run,
                   const char *what, struct kiln_error **err)
{
        const char *args[MAX_ARGS + 1];
        size_t n = 0;
        for (; args_in[n] && n < MAX_ARGS; n++)
                args[n] = args_in[n];
        args[n] = NULL;
        for (;;) {
                if (run->out)
                        kiln_buf_reset(run->out);
                int r = git_exec(c, args, run, err);
                if (r != -EIO)
                        return r;
                const char *e = run->stderr_text;
                if ((strstr(e, "--depth") || strstr(e, "shallow")) && args_drop(args, "--depth=1"))
                        continue;
                if ((strstr(e, "not our ref") || strstr(e, "unadvertised object")) &&
                    streq(cmd_name(args), "fetch") && n > 2) {
                        size_t last = 0;
                        while (args[last + 1])
                                last++;
                        if (is_commit_sha(args[last])) {
                                /* everything, whole: the commit may be
                                 * anywhere in the history */
                                args[last] = NULL;
                                (void) args_drop(args, "--depth=1");
                                continue;
                        }
                }
                r = kiln_error_set(err, -EIO, "%s: git stderr:\n%s: exit status %d", what, e,
                                   run->exit_code);
                free(run->stderr_text);
                run->stderr_text = NULL;
                return r;
        }
}

/* git with stdout captured into *ret (trimmed); error wording as git_run. */
static int git_output(struct git_ctx *c, const char *const *args, const char *cwd, char **ret,
                      const char *what, struct kiln_error **err)
{
        struct kiln_buf out = KILN_BUF_INIT(KILN_LIMIT_GIT_OUTPUT);
        struct git_run run = { .cwd = cwd, .out = &out };
        int r = git_run(c, args, &run, what, err);
        if (r < 0) {
                kiln_buf_release(&out);
                return r;
        }
        char *s = kiln_buf_steal(&out);
        size_t l = strlen(s);
        while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == ' ' || s[l - 1] == '\r'))
                s[--l] = 0;
        *ret = s;
        return 0;
}

/* ---- resolve ---- */

void kiln_source_git_resolved_release(struct kiln_source_git_resolved *r)
{
        if (!r)
                return;
        free(r->commit);
        free(r->ref);
        free(r->key);
        *r = (struct kiln_source_git_resolved){ 0 };
}

/* path.Join("/", subdir) without the leading '/'; "" for the root. */
static char *clean_subdir(const char *subdir)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        const char *p = subdir ? subdir : "";
        char **parts = NULL;
        size_t n = 0;
        while (*p) {
                size_t l = strcspn(p, "/");
                if (l == 0 || (l == 1 && p[0] == '.')) {
                        /* skip */
                } else if (l == 2 && p[0] == '.' && p[1] == '.') {
                        if (n > 0)
                                free(parts[--n]);
                } else {
                        parts = kiln_xreallocarray(parts, n + 1, sizeof(char *));
                        parts[n++] = kiln_xstrndup(p, l);
                }
                p += l;
                if (*p == '/')
                        p++;
        }
        for (size_t i = 0; i < n; i++) {
                (void) kiln_buf_printf(&b, "%s%s", i ? "/" : "", parts[i]);
                free(parts[i]);
        }
        free(parts);
        return kiln_buf_steal(&b);
}

/* BuildKit's shaToCacheKey. */
static char *cache_key(const struct kiln_source_git_options *o, const char *sha, const char *ref)
{
        struct kiln_buf b = KILN_BUF_INIT(SIZE_MAX);
        (void) kiln_buf_puts(&b, sha);
        if (o->keep_git_dir) {
                (void) kiln_buf_puts(&b, ".git");
                if (ref && *ref)
                        (void) kiln_buf_printf(&b, "#%s", ref);
        }
        _cleanup_free_ char *sub = clean_subdir(o->subdir);
        if (*sub)
                (void) kiln_buf_printf(&b, ":%s", sub);
        if (o->skip_submodules)
                (void) kiln_buf_puts(&b, "(skip-submodules)");
        return kiln_buf_steal(&b);
}

static int default_branch(struct git_ctx *c, char **ret, struct kiln_error **err)
{
        const char *args[] = { "ls-remote", "--symref", "--", c->o->remote, "HEAD", NULL };
        _cleanup_free_ char *what =
                kiln_xasprintf("error fetching default branch for repository %s", c->safe_remote);
        _cleanup_free_ char *out = NULL;
        int r = git_output(c, args, NULL, &out, what, err);
        if (r < 0)
                return r;
        const char *m = strstr(out, "refs/heads/");
        size_t l = m ? strcspn(m + 11, " \t\r\n") : 0;
        if (!m || l == 0)
                return kiln_error_set(err, -ENOENT,
                                      "could not find default branch for repository: %s",
                                      c->safe_remote);
        *ret = kiln_xstrndup(m + 11, l);
        if ((*ret)[0] == '-')
                return kiln_error_set(err, -EINVAL, "invalid git ref \"%s\"", *ret);
        return 0;
}

static char *strip_prefix_dup(const char *pfx, const char *ref, const char *s)
{
        const char *rest = startswith(ref, pfx) ? ref + strlen(pfx) : ref;
        return kiln_xasprintf("%s%s%s", pfx, rest, s);
}

static int resolve_remote(struct git_ctx *c, struct kiln_source_git_resolved *ret,
                          struct kiln_error **err)
{
        const struct kiln_source_git_options *o = c->o;
        _cleanup_free_ char *ref = o->ref && *o->ref ? kiln_xstrdup(o->ref) : NULL;
        int r;
        if (!ref) {
                r = default_branch(c, &ref, err);
                if (r < 0)
                        return r;
        }
        _cleanup_free_ char *peel = kiln_xasprintf("%s^{}", ref);
        const char *args[] = { "ls-remote", "--", o->remote, ref, peel, NULL };
        _cleanup_free_ char *what = kiln_xasprintf("failed to fetch remote %s", c->safe_remote);
        _cleanup_free_ char *out = NULL;
        r = git_output(c, args, NULL, &out, what, err);
        if (r < 0)
                return r;

        /* for the error: what the remote said, as BuildKit quotes it */
        _cleanup_free_ char *said = kiln_xstrndup(out, KILN_LIMIT_GIT_ERROR);
        _cleanup_free_ char *partial = strip_prefix_dup("refs/", ref, "");
        _cleanup_free_ char *head = strip_prefix_dup("refs/heads/", ref, "");
        _cleanup_free_ char *tag = strip_prefix_dup("refs/tags/", ref, "");
        _cleanup_free_ char *atag = strip_prefix_dup("refs/tags/", ref, "^{}");
        _cleanup_free_ char *sha = NULL, *head_sha = NULL, *tag_sha = NULL, *atag_sha = NULL;
        const char *used = NULL;
        for (char *line = out; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                char *tab = strchr(line, '\t');
                if (tab) {
                        *tab = 0;
                        const char *lref = tab + 1;
                        char **slot = NULL;
                        if (streq(lref, head))
                                slot = &head_sha;
                        else if (streq(lref, tag))
                                slot = &tag_sha;
                        else if (streq(lref, atag))
                                slot = &atag_sha;
                        else if (streq(lref, partial)) {
                                slot = &sha;
                                used = partial;
                        }
                        if (slot) {
                                free(*slot);
                                *slot = kiln_xstrdup(line);
                        }
                }
                line = nl ? nl + 1 : NULL;
        }
        /* git checkout prefers branches when a name is ambiguous */
        if (!sha && head_sha) {
                sha = TAKE_PTR(head_sha);
                used = head;
        }
        if (sha) {
                free(atag_sha);
                atag_sha = NULL;
        }
        if (!sha && tag_sha) {
                sha = TAKE_PTR(tag_sha);
                used = tag;
        }
        if (!sha) {
                struct kiln_buf q = KILN_BUF_INIT(4 * KILN_LIMIT_GIT_ERROR + 16);
                _cleanup_free_ char *red = redact_text(said);
                (void) kiln_buf_go_quote(&q, red, strlen(red));
                r = kiln_error_set(err, -ENOENT, "repository does not contain ref %s, output: %s",
                                   ref, q.data ? q.data : "\"\"");
                kiln_buf_release(&q);
                return r;
        }
        if (!is_commit_sha(sha))
                return kiln_error_set(err, -EINVAL, "invalid commit sha \"%s\"", sha);
        if (atag_sha && !is_commit_sha(atag_sha))
                return kiln_error_set(err, -EINVAL, "invalid commit sha \"%s\"", atag_sha);
        if (o->checksum && *o->checksum && !startswith(sha, o->checksum) &&
            !(atag_sha && startswith(atag_sha, o->checksum))) {
                if (atag_sha)
                        return kiln_error_set(err, -EBADMSG,
                                              "expected checksum to match %s, got %s or %s",
                                              o->checksum, sha, atag_sha);
                return kiln_error_set(err, -EBADMSG, "expected checksum to match %s, got %s",
                                      o->checksum, sha);
        }
        /* the content is the peeled commit's; with .git kept the tag
         * object is part of it too */
        const char *key_sha = atag_sha && !o->keep_git_dir ? atag_sha : sha;
        ret->key = cache_key(o, key_sha, used);
        ret->commit = kiln_xstrdup(atag_sha ? atag_sha : sha);
        ret->ref = kiln_xstrdup(used);
        return 0;
}

int kiln_source_git_resolve(const struct kiln_source_git_options *o,
                            struct kiln_source_git_resolved *ret, struct kiln_error **err)
{
        kiln_source_git_resolved_release(ret);
        if (o->ref && *o->ref && is_commit_sha(o->ref)) {
                _cleanup_free_ char *safe = kiln_source_git_redact(o->remote);
                int r = check_options(o, safe, err);
                if (r < 0)
                        return r;
                if (o->checksum && *o->checksum && !startswith(o->ref, o->checksum))
                        return kiln_error_set(err, -EBADMSG,
                                              "expected checksum to match %s, got %s", o->checksum,
                                              o->ref);
                ret->commit = kiln_xstrdup(o->ref);
                ret->ref = kiln_xstrdup(o->ref);
                ret->key = cache_key(o, o->ref, o->ref);
                return 0;
        }
        struct git_ctx c;
        int r = ctx_init(&c, o, err);
        if (r >= 0)
                r = resolve_remote(&c, ret, err);
        ctx_release(&c);
        if (r < 0)
                kiln_source_git_resolved_release(ret);
        return r;
}

/* ---- the cache repository ---- */

static int lock_wait(int fd, const struct kiln_source_git_options *o, const char *safe,
                     struct kiln_error **err)
{
        for (;;) {
                if (flock(fd, LOCK_EX | LOCK_NB) == 0)
                        return 0;
                if (errno != EWOULDBLOCK && errno != EINTR)
                        return kiln_error_set(err, -errno, "git source '%s': lock: %s", safe,
                                              strerror(errno));
                if (is_cancelled(o))
                        return kiln_error_set(err, -ECANCELED, "git source '%s': canceled", safe);
                struct timespec ts = { 0, POLL_MS * 1000000L };
                nanosleep(&ts, NULL);
        }
}

static bool file_exists(const char *dir, const char *name)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", dir, name);
        struct stat st;
        return lstat(p, &st) == 0;
}

/* Creates the bare repository at dir (via a temporary name: a crash never
 * leaves a half-made one under the real name). */
static int repo_init(struct git_ctx *c, const char *dir, struct kiln_error **err)
{
        if (file_exists(dir, "config"))
                return 0;
        struct kiln_error *e = NULL;
        if (kiln_rm_rf_at(AT_FDCWD, dir, NULL, &e) < 0) {
                kiln_error_free(*err);
                *err = e;
                return (*err)->code;
        }
        _cleanup_free_ char *tmp = kiln_xasprintf("%s.new", dir);
        if (kiln_rm_rf_at(AT_FDCWD, tmp, NULL, &e) < 0) {
                kiln_error_free(*err);
                *err = e;
                return (*err)->code;
        }
        _cleanup_free_ char *what = kiln_xasprintf("failed to init repo at %s", dir);
        const char *a1[] = {
                "-c", "init.defaultBranch=master", "init", "--bare", "--quiet", "--", tmp, NULL
        };
        struct git_run run = { 0 };
        int r = git_run(c, a1, &run, what, err);
        if (r >= 0) {
                _cleanup_free_ char *gd = kiln_xasprintf("--git-dir=%s", tmp);
                _cleanup_free_ char *w2 = kiln_xasprintf("failed add origin repo at %s", dir);
                const char *a2[] = { gd, "remote", "add", "--", "origin", c->o->remote, NULL };
                r = git_run(c, a2, &run, w2, err);
        }
        if (r >= 0 && rename(tmp, dir) < 0)
                r = kiln_error_set(err, -errno, "rename '%s': %s", tmp, strerror(errno));
        if (r < 0) {
                if (kiln_rm_rf_at(AT_FDCWD, tmp, NULL, &e) < 0)
                        log_warning("%s", kiln_error_message(e));
                kiln_error_free(e);
        }
        return r;
}

static bool has_commit(struct git_ctx *c, const char *gd, const char *commit)
{
        _cleanup_free_ char *obj = kiln_xasprintf("%s^{commit}", commit);
        const char *a[] = { gd, "cat-file", "-e", "--", obj, NULL };
        struct git_run run = { 0 };
        struct kiln_error *e = NULL;
        int r = git_exec(c, a, &run, &e);
        free(run.stderr_text);
        kiln_error_free(e);
        return r == 0;
}

/* The ref of the cache repository that holds what res names: a flat name
 * per resolved ref, so that no two remote refs conflict (refs/heads/a and
 * refs/heads/a/b) and a moved tag never "clobbers". */
static char *cache_ref(const struct kiln_source_git_resolved *res)
{
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_hex(res->ref, strlen(res->ref), hex);
        return kiln_xasprintf("refs/kiln/%.32s", hex);
}

static int repo_fetch(struct git_ctx *c, const char *dir,
                      const struct kiln_source_git_resolved *res, struct kiln_error **err)
{
        _cleanup_free_ char *gd = kiln_xasprintf("--git-dir=%s", dir);
        _cleanup_free_ char *target = cache_ref(res);
        _cleanup_free_ char *what = kiln_xasprintf("failed to fetch remote %s", c->safe_remote);
        struct git_run run = { 0 };
        _cleanup_free_ char *have = NULL;
        {
                _cleanup_free_ char *obj = kiln_xasprintf("%s^{commit}", target);
                const char *a[] = { gd, "rev-parse", "--verify", "--quiet", obj, NULL };
                struct kiln_error *e = NULL;
                (void) git_output(c, a, NULL, &have, "rev-parse", &e);
                kiln_error_free(e);
        }
        if (have && streq(have, res->commit))
                return 0;
        /* the repository's flock is ours: lock files are what a killed git
         * (a cancelled build) left, and would fail every later fetch */
        const char *locks[] = { "shallow.lock", "packed-refs.lock", "config.lock",
                                "HEAD.lock",    "index.lock",       "FETCH_HEAD.lock" };
        for (size_t i = 0; i < ELEMENTSOF(locks) + 1; i++) {
                _cleanup_free_ char *lock = i < ELEMENTSOF(locks)
                                                    ? kiln_xasprintf("%s/%s", dir, locks[i])
                                                    : kiln_xasprintf("%s/%s.lock", dir, target);
                (void) unlink(lock);
        }
        int r;
        if (is_commit_sha(res->ref)) {
                if (!has_commit(c, gd, res->commit)) {
                        /* a commit: by id at depth 1, or (the server
                         * refusing) everything */
                        const char *a[] = { gd,   "fetch",  "--depth=1", "--no-tags",
                                            "--", "origin", res->commit, NULL };
                        r = git_run(c, a, &run, what, err);
                        if (r < 0)
                                return r;
                }
        } else {
                _cleanup_free_ char *spec = kiln_xasprintf("+%s:%s", res->ref, target);
                const char *a[] = { gd,   "fetch",  "--depth=1", "--no-tags",
                                    "--", "origin", spec,        NULL };
                r = git_run(c, a, &run, what, err);
                if (r < 0)
                        return r;
        }
        if (!has_commit(c, gd, res->commit)) {
                /* the ref moved since it was resolved: the commit itself */
                bool shallow = file_exists(dir, "shallow");
                const char *a[] = { gd,       "fetch",
                                    "--tags", shallow ? "--unshallow" : "--no-write-fetch-head",
                                    "origin", res->commit,
                                    NULL };
                r = git_run(c, a, &run, what, err);
                if (r < 0)
                        return r;
                if (!has_commit(c, gd, res->commit))
                        return kiln_error_set(err, -ENOENT,
                                              "fetched ref %s does not match expected commit %s "
                                              "and commit can not be found in the repository",
                                              res->ref, res->commit);
        }
        if (is_commit_sha(res->ref) || !have || !streq(have, res->commit)) {
                /* point the cache ref at what the key names */
                _cleanup_free_ char *rp = NULL;
                _cleanup_free_ char *obj = kiln_xasprintf("%s^{commit}", target);
                const char *a0[] = { gd, "rev-parse", "--verify", "--quiet", obj, NULL };
                struct kiln_error *e = NULL;
                (void) git_output(c, a0, NULL, &rp, "rev-parse", &e);
                kiln_error_free(e);
                if (!rp || !streq(rp, res->commit)) {
                        const char *a[] = { gd,     "update-ref", "--no-deref",
                                            target, res->commit,  NULL };
                        r = git_run(c, a, &run, "update-ref", err);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* ---- checkout ---- */

/* Removes regular files named ".git" below dir (the gitdir links of
 * submodules, which point into the cache repository). */
static int drop_git_links(int dfd, unsigned depth, struct kiln_error **err)
{
        if (depth > WALK_MAX_DEPTH)
                return kiln_error_set(err, -ELOOP, "checkout deeper than %u directories",
                                      WALK_MAX_DEPTH);
        int fd = dup(dfd);
        if (fd < 0)
                return kiln_error_set(err, -errno, "dup: %s", strerror(errno));
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return kiln_error_set(err, -errno, "read checkout: %s", strerror(errno));
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                struct stat st;
                if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode) && streq(de->d_name, ".git") && depth > 0) {
                        if (unlinkat(dfd, de->d_name, 0) < 0)
                                r = kiln_error_set(err, -errno, "remove '.git': %s",
                                                   strerror(errno));
                } else if (S_ISDIR(st.st_mode)) {
                        int sub = openat(dfd, de->d_name,
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0)
                                continue;
                        r = drop_git_links(sub, depth + 1, err);
                        close(sub);
                }
        }
        closedir(d);
        return r;
}

/* Moves the entries of <cd>/<sub> into root, after checking that every
 * component of sub is a directory (no symlink may lead elsewhere). */
static int move_subdir(const char *root, const char *cd, const char *sub, struct kiln_error **err)
{
        _cleanup_close_ int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int dfd = open(cd, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (rootfd < 0 || dfd < 0)
                return kiln_error_set(err, -errno, "open checkout: %s", strerror(errno));
        _cleanup_free_ char *walked = NULL;
        const char *p = sub;
        while (*p) {
                size_t l = strcspn(p, "/");
                _cleanup_free_ char *name = kiln_xstrndup(p, l);
                char *w = walked ? kiln_xasprintf("%s/%s", walked, name) : kiln_xstrdup(name);
                free(walked);
                walked = w;
                struct stat st;
                if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return kiln_error_set(err, -errno,
                                              "invalid subdir %s: failed to lstat \"%s\": %s", sub,
                                              walked, strerror(errno));
                if (!S_ISDIR(st.st_mode))
                        return kiln_error_set(err, -ENOTDIR,
                                              "invalid subdir %s: git subpath \"%s\" contains "
                                              "non-directory \"%s\"",
                                              sub, sub, walked);
                int nfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return kiln_error_set(err, -errno, "failed to open subdir %s: %s", sub,
                                              strerror(errno));
                close(dfd);
                dfd = nfd;
                p += l;
                while (*p == '/')
                        p++;
        }
        int fd = dup(dfd);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
                if (fd >= 0)
                        close(fd);
                return kiln_error_set(err, -errno, "read subdir %s: %s", sub, strerror(errno));
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (renameat2(dfd, de->d_name, rootfd, de->d_name, RENAME_NOREPLACE) < 0)
                        r = kiln_error_set(err, -errno, "move '%s/%s': %s", sub, de->d_name,
                                           strerror(errno));
        }
        closedir(d);
        return r;
}

static int checkout(struct git_ctx *c, const char *repo, const char *root,
                    const struct kiln_source_git_resolved *res, struct kiln_error **err)
{
        const struct kiln_source_git_options *o = c->o;
        _cleanup_free_ char *sub = clean_subdir(o->subdir);
        _cleanup_free_ char *what = kiln_xasprintf("failed to checkout remote %s", c->safe_remote);
        _cleanup_free_ char *index = kiln_xasprintf("%s/index", c->tmp);
        _cleanup_free_ char *gitdir = NULL, *cd = NULL;
        struct git_run run = { .index_file = index };
        int r;
        if (o->keep_git_dir && !*sub) {
                /* a repository of its own, cloned from the cache over
                 * file:// (no local-clone shortcuts onto host files) */
                cd = kiln_xstrdup(root);
                gitdir = kiln_xasprintf("%s/.git", root);
                run.index_file = NULL;
                run.cwd = cd;
                _cleanup_free_ char *gd = kiln_xasprintf("--git-dir=%s", gitdir);
                _cleanup_free_ char *wt = kiln_xasprintf("--work-tree=%s", cd);
                _cleanup_free_ char *url = kiln_xasprintf("file://%s", repo);
                _cleanup_free_ char *target = cache_ref(res);
                _cleanup_free_ char *spec = is_commit_sha(res->ref)
                                                    ? kiln_xstrdup(target)
                                                    : kiln_xasprintf("%s:%s", target, res->ref);
                const char *a1[] = {
                        "-c", "init.defaultBranch=master", gd, "init", "--quiet", NULL
                };
                const char *a2[] = { gd, "remote", "add", "--", "origin", url, NULL };
                struct git_run frun = { .cwd = cd, .file_ok = true };
                const char *a3[] = { "-c",        "protocol.file.allow=always",
                                     gd,          wt,
                                     "fetch",     "-u",
                                     "--depth=1", "--no-tags",
                                     "--",        "origin",
                                     spec,        NULL };
                const char *a4[] = { gd, wt, "checkout", "--quiet", "FETCH_HEAD", NULL };
                _cleanup_free_ char *safe = kiln_xstrdup(c->safe_remote);
                const char *a5[] = { gd, "remote", "set-url", "--", "origin", safe, NULL };
                const char *a6[] = { gd, "reflog", "expire", "--all", "--expire=now", NULL };
                if ((r = git_run(c, a1, &run, "git init", err)) < 0 ||
                    (r = git_run(c, a2, &run, "git remote add", err)) < 0 ||
                    (r = git_run(c, a3, &frun, what, err)) < 0 ||
                    (r = git_run(c, a4, &run, what, err)) < 0 ||
                    (r = git_run(c, a5, &run, what, err)) < 0 ||
                    (r = git_run(c, a6, &run, what, err)) < 0)
                        return r;
                _cleanup_free_ char *fh = kiln_xasprintf("%s/FETCH_HEAD", gitdir);
                if (unlink(fh) < 0 && errno != ENOENT)
                        return kiln_error_set(err, -errno, "remove FETCH_HEAD: %s",
                                              strerror(errno));
        } else {
                gitdir = kiln_xstrdup(repo);
                if (*sub) {
                        cd = kiln_xasprintf("%s/.kiln-checkout-XXXXXX", root);
                        if (!mkdtemp(cd))
                                return kiln_error_set(err, -errno,
                                                      "failed to create temporary checkout dir: "
                                                      "%s",
                                                      strerror(errno));
                } else
                        cd = kiln_xstrdup(root);
                run.cwd = cd;
                _cleanup_free_ char *gd = kiln_xasprintf("--git-dir=%s", gitdir);
                _cleanup_free_ char *wt = kiln_xasprintf("--work-tree=%s", cd);
                const char *a[] = { gd,   wt,  "checkout", "--no-overlay", "--quiet", res->commit,
                                    "--", ".", NULL };
                r = git_run(c, a, &run, what, err);
                if (r < 0)
                        return r;
        }
        if (!o->skip_submodules) {
                _cleanup_free_ char *gd = kiln_xasprintf("--git-dir=%s", gitdir);
                _cleanup_free_ char *wt = kiln_xasprintf("--work-tree=%s", cd);
                _cleanup_free_ char *w =
                        kiln_xasprintf("failed to update submodules for %s", c->safe_remote);
                _cleanup_free_ char *gm = kiln_xasprintf("%s/.gitmodules", cd);
                struct stat st;
                if (lstat(gm, &st) == 0) {
                        const char *a[] = { gd,          wt,       "submodule",
                                            "update",    "--init", "--recursive",
                                            "--depth=1", NULL };
                        r = git_run(c, a, &run, w, err);
                        if (r < 0)
                                return r;
                }
        }
        if (!(o->keep_git_dir && !*sub)) {
                _cleanup_close_ int fd = open(cd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return kiln_error_set(err, -errno, "open '%s': %s", cd, strerror(errno));
                r = drop_git_links(fd, 0, err);
                if (r < 0)
                        return r;
        }
        if (*sub) {
                r = move_subdir(root, cd, sub, err);
                if (r < 0)
                        return r;
                struct kiln_error *e = NULL;
                r = kiln_rm_rf_at(AT_FDCWD, cd, NULL, &e);
                if (r < 0) {
                        kiln_error_free(*err);
                        *err = e;
                        return r;
                }
        }
        return 0;
}

int kiln_source_git_snapshot(struct kiln_snapshot_store *snapshots,
                             const struct kiln_source_git_options *o,
                             const struct kiln_source_git_resolved *res, char **ret_id,
                             struct kiln_error **err)
{
        *ret_id = NULL;
        if (!o->cache_dir || !res || !res->commit || !res->ref)
                return kiln_error_set(err, -EINVAL, "git source: no cache directory or commit");
        struct git_ctx c;
        int r = ctx_init(&c, o, err);
        if (r < 0) {
                ctx_release(&c);
                return r;
        }
        struct kiln_snapshot *snap = NULL;
        _cleanup_free_ char *mnt = NULL;
        bool mounted = false;
        _cleanup_close_ int lockfd = -1;
        char hex[KILN_SHA256_HEX_LEN + 1];
        kiln_sha256_hex(o->remote, strlen(o->remote), hex);
        _cleanup_free_ char *repo = kiln_xasprintf("%s/%s", o->cache_dir, hex);
        _cleanup_free_ char *lockp = kiln_xasprintf("%s/%s.lock", o->cache_dir, hex);

        r = kiln_mkdir_p(o->cache_dir, 0700);
        if (r < 0) {
                kiln_error_set(err, r, "create '%s': %s", o->cache_dir, strerror(-r));
                goto out;
        }
        lockfd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lockfd < 0) {
                r = kiln_error_set(err, -errno, "open '%s': %s", lockp, strerror(errno));
                goto out;
        }
        if ((r = lock_wait(lockfd, o, c.safe_remote, err)) < 0 ||
            (r = repo_init(&c, repo, err)) < 0 || (r = repo_fetch(&c, repo, res, err)) < 0)
                goto out;
        r = kiln_snapshot_prepare(snapshots, NULL, &snap, err);
        if (r < 0)
                goto out;
        mnt = kiln_xasprintf("%s/mnt", c.tmp);
        if (mkdir(mnt, 0700) < 0) {
                r = kiln_error_set(err, -errno, "create '%s': %s", mnt, strerror(errno));
                goto out;
        }
        r = kiln_snapshot_mount(snap, mnt, err);
        if (r < 0)
                goto out;
        mounted = true;
        if (chmod(mnt, 0755) < 0) {
                r = kiln_error_set(err, -errno, "chmod '%s': %s", mnt, strerror(errno));
                goto out;
        }
        r = checkout(&c, repo, mnt, res, err);
        if (r < 0)
                goto out;
        mounted = false;
        r = kiln_snapshot_unmount(mnt, err);
        if (r < 0) {
                c.keep_tmp = true;
                goto out;
        }
        r = kiln_snapshot_commit_and_use(TAKE_PTR(snap), NULL, ret_id, err);
out:
        if (mounted) {
                struct kiln_error *e = NULL;
                if (kiln_snapshot_unmount(mnt, &e) < 0) {
                        log_warning("%s", kiln_error_message(e));
                        c.keep_tmp = true;
                }
                kiln_error_free(e);
        }
        kiln_snapshot_abort(snap);
        ctx_release(&c);
        return r;
}
