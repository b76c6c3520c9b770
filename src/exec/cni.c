/* SPDX-License-Identifier: Apache-2.0 */
#include "exec/cni.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <linux/magic.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/process.h"

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

#define LOOPBACK_NAME  "cni-loopback"
#define DEFAULT_BRIDGE "buildkit0"
#define DEFAULT_SUBNET "10.10.0.0/16"
#define ID_BYTES       12

/* One network: a chain of plugins set up on one interface. */
struct network {
        char *name;
        char *version;
        const char *ifname;
        json_t **plugins; /* each a plugin's own object */
        size_t n_plugins;
};

struct kiln_cni {
        struct network lo, net;
        char *bin_path; /* CNI_PATH */
        char *state_dir;
        unsigned pool_size;
        char *bridge_name; /* bridge mode: the bridge kiln may remove */
        bool bridge_created;

        pthread_mutex_t lock; /* guards everything below */
        struct kiln_cni_ns **idle;
        size_t n_idle;
        unsigned in_use;
        uint64_t created;
        uint64_t released;
        bool filler_started; /* the pool filler must be joined */
        bool stopping;
        pthread_t filler;
};

static void network_release(struct network *n)
{
        for (size_t i = 0; i < n->n_plugins; i++)
                json_decref(n->plugins[i]);
        free(n->plugins);
        free(n->name);
        free(n->version);
        *n = (struct network){ 0 };
}

static void ns_free(struct kiln_cni_ns *ns)
{
        if (!ns)
                return;
        free(ns->id);
        free(ns->path);
        free(ns->ip);
        free(ns);
}

/* ---- configuration ---- */

static bool version_supported(const char *v)
{
        static const char *const ok[] = { "0.4.0", "1.0.0", "1.1.0" };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                if (streq(v, ok[i]))
                        return true;
        return false;
}

/* Where plugin type lives in the ':'-separated bin_path; NULL when absent. */
static char *plugin_find(const char *bin_path, const char *type)
{
        const char *p = bin_path;

        if (strchr(type, '/') || streq(type, "") || streq(type, ".") || streq(type, ".."))
                return NULL;
        while (*p) {
                size_t n = strcspn(p, ":");
                _cleanup_free_ char *f = kiln_xasprintf("%.*s/%s", (int) n, p, type);

                if (n > 0 && access(f, X_OK) == 0)
                        return TAKE_PTR(f);
                p += n;
                if (*p == ':')
                        p++;
        }
        return NULL;
}

/* Adds one plugin object of a network, checking its type. */
static int network_add(struct network *n, const char *bin_path, const char *file, json_t *plugin,
                       struct kiln_error **err)
{
        const char *type = json_string_value(json_object_get(plugin, "type"));
        _cleanup_free_ char *path = NULL;

        if (!json_is_object(plugin) || !type || !type[0])
                return kiln_error_set(err, -EINVAL, "CNI config '%s': a plugin has no \"type\"",
                                      file);
        if (n->n_plugins >= KILN_LIMIT_CNI_PLUGINS)
                return kiln_error_set(err, -E2BIG, "CNI config '%s': more than %u plugins", file,
                                      KILN_LIMIT_CNI_PLUGINS);
        path = plugin_find(bin_path, type);
        if (!path)
                return kiln_error_set(err, -ENOENT,
                                      "CNI config '%s': plugin \"%s\" not found in %s", file, type,
                                      bin_path);
        n->plugins = kiln_xreallocarray(n->plugins, n->n_plugins + 1, sizeof(*n->plugins));
        n->plugins[n->n_plugins++] = json_incref(plugin);
        return 0;
}

/* Reads a conflist or a single plugin's configuration, as libcni does. */
static int network_parse(struct network *n, const char *file, const char *data, size_t len,
                         bool conflist, const char *bin_path, struct kiln_error **err)
{
        json_error_t je;
        json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
        const char *name, *version;
        int r = 0;

        if (!root)
                return kiln_error_set(err, -EINVAL, "CNI config '%s':%d:%d: %s", file, je.line,
                                      je.column, je.text);
        name = json_string_value(json_object_get(root, "name"));
        version = json_string_value(json_object_get(root, "cniVersion"));
        if (!json_is_object(root) || !name || !name[0]) {
                r = kiln_error_set(err, -EINVAL, "CNI config '%s': no network \"name\"", file);
                goto out;
        }
        if (!version || !version_supported(version)) {
                r = kiln_error_set(err, -EINVAL,
                                   "CNI config '%s': cniVersion \"%s\" is not supported (0.4.0, "
                                   "1.0.0 or 1.1.0)",
                                   file, version ? version : "");
                goto out;
        }
        n->name = kiln_xstrdup(name);
        n->version = kiln_xstrdup(version);
        n->ifname = "eth0";
        if (conflist) {
                json_t *plugins = json_object_get(root, "plugins"), *p;
                size_t i;

                if (!json_is_array(plugins) || json_array_size(plugins) == 0) {
                        r = kiln_error_set(err, -EINVAL,
                                           "CNI config '%s': a .conflist needs \"plugins\"", file);
                        goto out;
                }
                json_array_foreach (plugins, i, p) {
                        r = network_add(n, bin_path, file, p, err);
                        if (r < 0)
                                goto out;
                }
        } else
                r = network_add(n, bin_path, file, root, err);
out:
        json_decref(root);
        if (r < 0)
                network_release(n);
        return r;
}

static int bridge_config(const struct kiln_cni_options *o, struct kiln_buf *b)
{
        json_t *j = json_pack(
                "{s:s, s:s, s:[{s:s, s:s, s:b, s:b, s:b, s:{s:s, s:[[{s:s}]]}}, {s:s, s:s}]}",
                "cniVersion", "1.0.0", "name", "buildkit", "plugins", "type", "bridge", "bridge",
                o->bridge_name ? o->bridge_name : DEFAULT_BRIDGE, "isDefaultGateway", 1, "ipMasq",
                1, "hairpinMode", 1, "ipam", "type", "host-local", "ranges", "subnet",
                o->bridge_subnet ? o->bridge_subnet : DEFAULT_SUBNET, "type", "firewall",
                "ingressPolicy", "same-bridge");
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        int r = s ? kiln_buf_puts(b, s) : -ENOMEM;

        free(s);
        json_decref(j);
        return r;
}

/* ---- running plugins ---- */

/* Runs every plugin of n for cmd ("ADD", "DEL") in ns_path: ADD in order,
 * each given the previous result; DEL backwards, each given prev (the ADD
 * result). *ret (ADD) is the last plugin's result. */
static int network_run(const struct kiln_cni *c, const struct network *n, const char *cmd,
                       const char *id, const char *ns_path, json_t *prev, json_t **ret,
                       struct kiln_error **err)
{
        bool add = streq(cmd, "ADD");
        json_t *result = add ? NULL : json_incref(prev);
        const char *path_env = getenv("PATH");
        _cleanup_free_ char *e_cmd = kiln_xasprintf("CNI_COMMAND=%s", cmd);
        _cleanup_free_ char *e_id = kiln_xasprintf("CNI_CONTAINERID=%s", id);
        _cleanup_free_ char *e_ns = kiln_xasprintf("CNI_NETNS=%s", ns_path ? ns_path : "");
        _cleanup_free_ char *e_if = kiln_xasprintf("CNI_IFNAME=%s", n->ifname);
        _cleanup_free_ char *e_path = kiln_xasprintf("CNI_PATH=%s", c->bin_path);
        _cleanup_free_ char *e_sys =
                kiln_xasprintf("PATH=%s", path_env ? path_env : "/usr/sbin:/usr/bin:/sbin:/bin");
        char *envp[] = { e_cmd, e_id, e_ns, e_if, e_path, e_sys, NULL };
        int r = 0;

        for (size_t k = 0; k < n->n_plugins; k++) {
                size_t i = add ? k : n->n_plugins - 1 - k;
                const char *type = json_string_value(json_object_get(n->plugins[i], "type"));
                _cleanup_free_ char *bin = plugin_find(c->bin_path, type);
                _cleanup_(kiln_buf_release) struct kiln_buf out =
                        KILN_BUF_INIT(KILN_LIMIT_CNI_OUTPUT);
                _cleanup_(kiln_buf_release) struct kiln_buf errb =
                        KILN_BUF_INIT(KILN_LIMIT_CNI_OUTPUT);
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                _cleanup_free_ char *input = NULL;
                json_t *conf = json_deep_copy(n->plugins[i]);
                char *argv[] = { (char *) type, NULL };
                int status;

                json_object_set_new(conf, "name", json_string(n->name));
                json_object_set_new(conf, "cniVersion", json_string(n->version));
                if (result)
                        json_object_set(conf, "prevResult", result);
                input = json_dumps(conf, JSON_COMPACT);
                json_decref(conf);
                if (!bin) {
                        r = kiln_error_set(err, -ENOENT, "CNI plugin \"%s\" not found in %s", type,
                                           c->bin_path);
                        break;
                }
                struct kiln_spawn s = {
                        .program = bin,
                        .argv = argv,
                        .envp = envp,
                        .input = input,
                        .input_len = strlen(input),
                        .out = &out,
                        .err = &errb,
                        .timeout_ms = KILN_CNI_PLUGIN_TIMEOUT_MS,
                };
                status = kiln_spawn_run(&s, &e);
                if (status < 0) {
                        r = kiln_error_set(err, status,
                                           "plugin type=\"%s\" name=\"%s\" failed (%s): %s", type,
                                           n->name, add ? "add" : "delete", kiln_error_message(e));
                        break;
                }
                json_t *answer = out.len ? json_loadb(out.data, out.len, 0, NULL) : NULL;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        const char *msg = json_string_value(json_object_get(answer, "msg"));
                        const char *details = json_string_value(json_object_get(answer, "details"));
                        _cleanup_free_ char *why = kiln_spawn_status_string(status);
                        const char *m = msg ? msg : (errb.len ? errb.data : why);
                        _cleanup_free_ char *text = kiln_quote_untrusted(m, strlen(m), 1000);

                        r = kiln_error_set(
                                err, -EIO, "plugin type=\"%s\" name=\"%s\" failed (%s): %s%s%s",
                                type, n->name, add ? "add" : "delete", text,
                                details && details[0] ? ": " : "", details ? details : "");
                        json_decref(answer);
                        break;
                }
                if (add) {
                        if (!json_is_object(answer)) {
                                json_decref(answer);
                                r = kiln_error_set(err, -EBADMSG,
                                                   "plugin type=\"%s\" name=\"%s\" failed (add): "
                                                   "its result is not a JSON object",
                                                   type, n->name);
                                break;
                        }
                        json_decref(result);
                        result = answer;
                } else
                        json_decref(answer);
        }
        if (r < 0 || !ret)
                json_decref(result);
        else
                *ret = result;
        return r;
}

/* ---- namespaces ---- */

struct ns_thread {
        const char *path;
        int r;
};

/* unshare(CLONE_NEWNET) affects only the calling thread: a short-lived
 * thread makes the namespace and pins it with the bind mount. */
static void *ns_thread(void *arg)
{
        struct ns_thread *t = arg;

        if (unshare(CLONE_NEWNET) < 0 ||
            mount("/proc/thread-self/ns/net", t->path, NULL, MS_BIND, NULL) < 0)
                t->r = -errno;
        return NULL;
}

static int ns_create(const char *path, struct kiln_error **err)
{
        struct ns_thread t = { .path = path };
        pthread_t th;
        int fd, r;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return kiln_error_set(err, -errno, "create '%s': %s", path, strerror(errno));
        close(fd);
        r = pthread_create(&th, NULL, ns_thread, &t);
        if (r == 0)
                r = -pthread_join(th, NULL);
        else
                r = -r;
        if (r == 0)
                r = t.r;
        if (r < 0) {
                (void) unlink(path);
                return kiln_error_set(err, r, "create network namespace '%s': %s", path,
                                      strerror(-r));
        }
        return 0;
}

static bool ns_mounted(const char *path)
{
        struct statfs sf;

        return statfs(path, &sf) == 0 && (unsigned long) sf.f_type == NSFS_MAGIC;
}

static char *result_path(const struct kiln_cni *c, const char *id)
{
        return kiln_xasprintf("%s/%s.result", c->state_dir, id);
}

/* CNI DEL of both networks, unmount, remove. A failure does not stop the
 * rest: the first one is returned. */
static int release_id(struct kiln_cni *c, const char *id, struct kiln_error **err)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/%s", c->state_dir, id);
        _cleanup_free_ char *rpath = result_path(c, id);
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_CNI_OUTPUT);
        bool mounted = ns_mounted(path);
        json_t *prev = NULL;
        int r = 0;

        if (kiln_read_file_at_flags(AT_FDCWD, rpath, O_NOFOLLOW, &b) == 0)
                prev = json_loadb(b.data, b.len, 0, NULL);
        for (int k = 0; k < 2; k++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                const struct network *n = k == 0 ? &c->net : &c->lo;

                int q = network_run(c, n, "DEL", id, mounted ? path : NULL, k == 0 ? prev : NULL,
                                    NULL, &e);

                if (q < 0 && r == 0)
                        r = kiln_error_set(err, q, "release network namespace %s: %s", id,
                                           kiln_error_message(e));
        }
        json_decref(prev);
        if (mounted && umount2(path, MNT_DETACH) < 0 && r == 0)
                r = kiln_error_set(err, -errno, "unmount '%s': %s", path, strerror(errno));
        (void) unlink(path);
        (void) unlink(rpath);
        return r;
}

/* release_id where nobody waits for the outcome. */
static void release_quietly(struct kiln_cni *c, const char *id)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

        if (release_id(c, id, &e) < 0)
                log_debug("%s", kiln_error_message(e));
}

static char *new_id(void)
{
        static const char hex[] = "0123456789abcdef";
        uint8_t b[ID_BYTES];
        char *s = kiln_xmalloc(2 * ID_BYTES + 1);

        while (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                ;
        for (size_t i = 0; i < ID_BYTES; i++) {
                s[2 * i] = hex[b[i] >> 4];
                s[2 * i + 1] = hex[b[i] & 15];
        }
        s[2 * ID_BYTES] = '\0';
        return s;
}

static char *first_ip(json_t *result)
{
        json_t *ips = json_object_get(result, "ips");
        const char *a = json_string_value(json_object_get(json_array_get(ips, 0), "address"));

        return a ? kiln_xstrdup(a) : NULL;
}

/* A new namespace with both networks set up; nothing left on failure. */
static int ns_setup(struct kiln_cni *c, struct kiln_cni_ns **ret, struct kiln_error **err)
{
        struct kiln_cni_ns *ns = kiln_xcalloc(1, sizeof(*ns));
        _cleanup_free_ char *rpath = NULL, *text = NULL;
        json_t *result = NULL;
        int r;

        ns->id = new_id();
        ns->path = kiln_xasprintf("%s/%s", c->state_dir, ns->id);
        r = ns_create(ns->path, err);
        if (r < 0) {
                ns_free(ns);
                return r;
        }
        r = network_run(c, &c->lo, "ADD", ns->id, ns->path, NULL, NULL, err);
        if (r >= 0)
                r = network_run(c, &c->net, "ADD", ns->id, ns->path, NULL, &result, err);
        if (r >= 0) {
                rpath = result_path(c, ns->id);
                text = json_dumps(result, JSON_COMPACT);
                r = kiln_write_file_replace(rpath, text, strlen(text), 0600);
                if (r < 0)
                        r = kiln_error_set(err, r, "write '%s': %s", rpath, strerror(-r));
        }
        if (r < 0) {
                json_decref(result);
                release_quietly(c, ns->id);
                ns_free(ns);
                return r;
        }
        ns->ip = first_ip(result);
        json_decref(result);
        pthread_mutex_lock(&c->lock);
        c->created++;
        pthread_mutex_unlock(&c->lock);
        *ret = ns;
        return 0;
}

static void release_leftovers(struct kiln_cni *c)
{
        DIR *d = opendir(c->state_dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);

                if (de->d_name[0] == '.' || (n > 7 && streq(de->d_name + n - 7, ".result")))
                        continue;
                log_debug("releasing network namespace %s left by a previous kilnd", de->d_name);
                release_quietly(c, de->d_name);
        }
        closedir(d);
}

/* ---- the pool ---- */

static void *filler(void *arg)
{
        struct kiln_cni *c = arg;

        pthread_mutex_lock(&c->lock);
        while (!c->stopping && c->n_idle + c->in_use < c->pool_size) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                struct kiln_cni_ns *ns = NULL;
                int r;

                pthread_mutex_unlock(&c->lock);
                r = ns_setup(c, &ns, &e);
                pthread_mutex_lock(&c->lock);
                if (r < 0) {
                        log_debug("fill the network namespace pool: %s", kiln_error_message(e));
                        break;
                }
                c->idle = kiln_xreallocarray(c->idle, c->n_idle + 1, sizeof(*c->idle));
                c->idle[c->n_idle++] = ns;
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

int kiln_cni_new(const struct kiln_cni_options *o, struct kiln_cni **ret, struct kiln_error **err)
{
        _cleanup_(kiln_cni_freep) struct kiln_cni *c = kiln_xcalloc(1, sizeof(*c));
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(KILN_LIMIT_CNI_CONFIG);
        const char *file = o->bridge ? "(bridge)" : o->config_path;
        bool conflist = true;
        int r;

        pthread_mutex_init(&c->lock, NULL);
        c->bin_path = kiln_xstrdup(o->binary_dir);
        c->state_dir = kiln_xstrdup(o->state_dir);
        c->pool_size = o->pool_size;
        if (o->bridge)
                r = bridge_config(o, &b);
        else {
                size_t n = strlen(o->config_path);

                conflist = n > 9 && streq(o->config_path + n - 9, ".conflist");
                r = kiln_read_file_at(AT_FDCWD, o->config_path, &b);
                if (r < 0) {
                        char why[64];

                        return kiln_error_set(err, r, "read CNI config '%s': %s", o->config_path,
                                              kiln_read_file_strerror(r, b.max, why));
                }
        }
        if (r < 0)
                return kiln_error_set(err, r, "CNI bridge config: %s", strerror(-r));
        r = network_parse(&c->net, file, b.data, b.len, conflist, c->bin_path, err);
        if (r < 0)
                return r;
        {
                _cleanup_free_ char *lo =
                        kiln_xasprintf("{\"cniVersion\":\"%s\",\"name\":\"" LOOPBACK_NAME
                                       "\",\"type\":\"loopback\"}",
                                       c->net.version);

                r = network_parse(&c->lo, "(loopback)", lo, strlen(lo), false, c->bin_path, err);
                if (r < 0)
                        return r;
                c->lo.ifname = "lo";
        }
        if (o->bridge) {
                c->bridge_name = kiln_xstrdup(o->bridge_name ? o->bridge_name : DEFAULT_BRIDGE);
                c->bridge_created = if_nametoindex(c->bridge_name) == 0;
        }
        r = kiln_mkdir_p(c->state_dir, 0700);
        if (r < 0)
                return kiln_error_set(err, r, "create '%s': %s", c->state_dir, strerror(-r));
        release_leftovers(c);
        if (c->pool_size > 0) {
                r = -pthread_create(&c->filler, NULL, filler, c);
                if (r < 0) {
                        return kiln_error_set(err, r, "start the CNI pool: %s", strerror(-r));
                }
                c->filler_started = true;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int kiln_cni_get(struct kiln_cni *c, struct kiln_cni_ns **ret, struct kiln_error **err)
{
        int r;

        pthread_mutex_lock(&c->lock);
        if (c->n_idle > 0) {
                *ret = c->idle[--c->n_idle];
                c->in_use++;
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        if (c->n_idle + c->in_use >= KILN_LIMIT_CNI_NAMESPACES) {
                pthread_mutex_unlock(&c->lock);
                return kiln_error_set(err, -EMFILE, "more than %u network namespaces in use",
                                      KILN_LIMIT_CNI_NAMESPACES);
        }
        c->in_use++;
        pthread_mutex_unlock(&c->lock);
        r = ns_setup(c, ret, err);
        if (r < 0) {
                pthread_mutex_lock(&c->lock);
                c->in_use--;
                pthread_mutex_unlock(&c->lock);
        }
        return r;
}

void kiln_cni_put(struct kiln_cni *c, struct kiln_cni_ns *ns)
{
        pthread_mutex_lock(&c->lock);
        c->in_use--;
        c->idle = kiln_xreallocarray(c->idle, c->n_idle + 1, sizeof(*c->idle));
        c->idle[c->n_idle++] = ns;
        pthread_mutex_unlock(&c->lock);
}

int kiln_cni_discard(struct kiln_cni *c, struct kiln_cni_ns *ns, struct kiln_error **err)
{
        int r = release_id(c, ns->id, err);

        ns_free(ns);
        pthread_mutex_lock(&c->lock);
        c->in_use--;
        c->released++;
        pthread_mutex_unlock(&c->lock);
        return r;
}

void kiln_cni_get_stats(struct kiln_cni *c, struct kiln_cni_stats *ret)
{
        pthread_mutex_lock(&c->lock);
        *ret = (struct kiln_cni_stats){ .idle = (unsigned) c->n_idle,
                                        .in_use = c->in_use,
                                        .created = c->created,
                                        .released = c->released };
        pthread_mutex_unlock(&c->lock);
}

/* Removes the bridge kiln's plugins created, as buildkitd does at stop. */
static void bridge_remove(const char *name)
{
        char *argv[] = { (char *) "ip", (char *) "link", (char *) "delete", (char *) name, NULL };
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        struct kiln_spawn s = { .program = "ip", .argv = argv, .timeout_ms = 10000 };

        if (if_nametoindex(name) == 0)
                return;
        if (kiln_spawn_run(&s, &e) < 0)
                log_debug("remove bridge %s: %s", name, kiln_error_message(e));
}

struct kiln_cni *kiln_cni_free(struct kiln_cni *c)
{
        if (!c)
                return NULL;
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_mutex_unlock(&c->lock);
        if (c->filler_started)
                (void) pthread_join(c->filler, NULL);
        for (size_t i = 0; i < c->n_idle; i++) {
                release_quietly(c, c->idle[i]->id);
                ns_free(c->idle[i]);
        }
        free(c->idle);
        if (c->bridge_created)
                bridge_remove(c->bridge_name);
        network_release(&c->lo);
        network_release(&c->net);
        free(c->bin_path);
        free(c->state_dir);
        free(c->bridge_name);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}
