/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "base/buf.h"
#include "base/fs.h"
#include "cli/cli.h"
#include "cli/http.h"
#include "kiln-test.h"

struct parsed {
        struct kiln_cli_outputs o;
        struct kiln_error *err;
        int r;
};

static void parsed_release(struct parsed *p)
{
        kiln_cli_outputs_release(&p->o);
        kiln_error_free(p->err);
}

/* Parses -o specs (NULL-terminated) with the flags given. */
static int parse(struct parsed *p, const char *const *specs, bool push, bool load,
                 const char *const *tags, bool tty)
{
        size_t n = 0, n_tags = 0;

        while (specs && specs[n])
                n++;
        while (tags && tags[n_tags])
                n_tags++;
        *p = (struct parsed){ 0 };
        p->r = kiln_cli_outputs_parse(
                &(struct kiln_cli_outputs_options){ .specs = specs,
                                                    .n_specs = n,
                                                    .push = push,
                                                    .load = load,
                                                    .tags = tags,
                                                    .n_tags = n_tags,
                                                    .stdout_is_terminal = tty },
                &p->o, &p->err);
        return p->r;
}

static const char *attr(const struct kiln_cli_output *o, const char *key)
{
        for (size_t i = 0; i < o->api.n_attrs; i++)
                if (streq(o->api.attrs[i].key, key))
                        return o->api.attrs[i].value;
        return NULL;
}

#define SPECS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* The error of parsing specs is want (exactly). */
static int parse_fails(const char *const *specs, bool push, const char *const *tags, bool tty,
                       const char *want)
{
        _cleanup_(parsed_release) struct parsed p;

        if (parse(&p, specs, push, false, tags, tty) >= 0)
                KILN_TEST_FAIL("parsing %s succeeded, want \"%s\"", specs ? specs[0] : "(none)",
                               want);
        ASSERT_STREQ(kiln_error_message(p.err), want);
        return 0;
}

static char *tmp_dir(void)
{
        char *d = kiln_xstrdup("/tmp/kiln-test-output-XXXXXX");

        if (!mkdtemp(d)) {
                free(d);
                return NULL;
        }
        return d;
}

static void rm_dir(char **d)
{
        if (*d)
                (void) kiln_rm_rf_at(AT_FDCWD, *d, NULL, NULL);
        free(*d);
}

static size_t count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t n = 0;

        if (!d)
                return (size_t) -1;
        while ((e = readdir(d)))
                if (!streq(e->d_name, ".") && !streq(e->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

/* Open descriptors of the process: none may leak. */
static size_t fd_count(void)
{
        return count_entries("/proc/self/fd");
}

TEST(output_bare_path_and_stdout)
{
        _cleanup_(parsed_release) struct parsed p, q;

        ASSERT_OK(parse(&p, SPECS("out/dir"), false, false, NULL, false));
        ASSERT_EQ_INT(p.o.n, 1);
        ASSERT_STREQ(p.o.v[0].api.type, "local");
        ASSERT_STREQ(p.o.v[0].dest, "out/dir");
        ASSERT_EQ_INT(p.o.v[0].sink, KILN_CLI_OUTPUT_SINK_DIR);
        ASSERT_EQ_INT(p.o.v[0].api.n_attrs, 0);

        ASSERT_OK(parse(&q, SPECS("-"), false, false, NULL, false));
        ASSERT_STREQ(q.o.v[0].api.type, "tar");
        ASSERT_EQ_INT(q.o.v[0].sink, KILN_CLI_OUTPUT_SINK_STDOUT);
        ASSERT_TRUE(q.o.v[0].dest == NULL);

        /* buildx refuses to write a tar to a terminal */
        if (parse_fails(SPECS("-"), false, NULL, true,
                        "dest file is required for tar exporter. refusing to write to console") < 0)
                return -1;
        if (parse_fails(SPECS("type=oci"), false, NULL, true,
                        "dest file is required for oci exporter. refusing to write to console") < 0)
                return -1;
        if (parse_fails(SPECS("-", "type=oci,dest=-"), false, NULL, false,
                        "multiple outputs configured to write to stdout") < 0)
                return -1;
        return 0;
}

TEST(output_csv_attrs)
{
        _cleanup_(parsed_release) struct parsed p;

        /* keys are trimmed and lower-cased, a later one wins, dest is not
         * an attribute */
        ASSERT_OK(parse(&p,
                        SPECS("type=oci,dest=/tmp/kiln-no-such-dir/x.tar, Compression =gzip,"
                              "compression=zstd,\"annotation.a=x,y\""),
                        false, false, NULL, false));
        ASSERT_EQ_INT(p.o.n, 1);
        ASSERT_STREQ(p.o.v[0].api.type, "oci");
        ASSERT_STREQ(p.o.v[0].dest, "/tmp/kiln-no-such-dir/x.tar");
        ASSERT_EQ_INT(p.o.v[0].sink, KILN_CLI_OUTPUT_SINK_FILE);
        ASSERT_STREQ(attr(&p.o.v[0], "compression"), "zstd");
        ASSERT_STREQ(attr(&p.o.v[0], "annotation.a"), "x,y");
        ASSERT_TRUE(attr(&p.o.v[0], "dest") == NULL);
        ASSERT_TRUE(attr(&p.o.v[0], "type") == NULL);
        ASSERT_EQ_INT(p.o.v[0].api.n_attrs, 2);
        return 0;
}

TEST(output_errors_as_buildx)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_free_ char *file = NULL, *msg = NULL;

        ASSERT_TRUE(d != NULL);
        file = kiln_xasprintf("%s/file", d);
        ASSERT_OK(kiln_write_file_atomic(file, "x", 1, 0644));

        if (parse_fails(SPECS("dest=x,name=y"), false, NULL, false, "type is required for output") <
                    0 ||
            parse_fails(SPECS("type=oci,bad"), false, NULL, false, "invalid value bad") < 0 ||
            parse_fails(SPECS("type=local"), false, NULL, false,
                        "dest is required for local exporter") < 0 ||
            parse_fails(SPECS("type=local,dest=-"), false, NULL, false,
                        "dest cannot be stdout for local exporter") < 0 ||
            parse_fails(SPECS("type=oci,tar=false"), false, NULL, false,
                        "dest is required for oci exporter") < 0 ||
            parse_fails(SPECS("type=nope,dest=x"), false, NULL, false,
                        "exporter \"nope\" could not be found") < 0)
                return -1;
        msg = kiln_xasprintf("destination directory %s is a file", file);
        {
                _cleanup_free_ char *spec = kiln_xasprintf("type=local,dest=%s", file);

                if (parse_fails(SPECS(spec), false, NULL, false, msg) < 0)
                        return -1;
        }
        free(msg);
        msg = kiln_xasprintf("destination file %s is a directory", d);
        {
                _cleanup_free_ char *spec = kiln_xasprintf("type=tar,dest=%s", d);

                if (parse_fails(SPECS(spec), false, NULL, false, msg) < 0)
                        return -1;
        }
        return 0;
}

TEST(output_registry_and_push)
{
        _cleanup_(parsed_release) struct parsed p, q, r, s;

        /* type=registry is an image output that pushes */
        ASSERT_OK(parse(&p, SPECS("type=registry,name=127.0.0.1:5000/a:1"), false, false, NULL,
                        false));
        ASSERT_EQ_INT(p.o.n, 1);
        ASSERT_STREQ(p.o.v[0].api.type, "image");
        ASSERT_STREQ(attr(&p.o.v[0], "push"), "true");
        ASSERT_STREQ(attr(&p.o.v[0], "unpack"), "false");
        ASSERT_STREQ(attr(&p.o.v[0], "name"), "127.0.0.1:5000/a:1");
        ASSERT_EQ_INT(p.o.v[0].sink, KILN_CLI_OUTPUT_SINK_NONE);

        /* --push alone: an image output named by the tags */
        ASSERT_OK(
                parse(&q, NULL, true, false, SPECS("r.example/a:1", "r.example/a:latest"), false));
        ASSERT_EQ_INT(q.o.n, 1);
        ASSERT_STREQ(q.o.v[0].api.type, "image");
        ASSERT_STREQ(attr(&q.o.v[0], "push"), "true");
        ASSERT_STREQ(attr(&q.o.v[0], "unpack"), "false");
        ASSERT_STREQ(attr(&q.o.v[0], "name"), "r.example/a:1,r.example/a:latest");

        /* --push on an image output: pushes that one, keeps its unpack */
        ASSERT_OK(parse(&r, SPECS("type=image,unpack=true"), true, false, SPECS("x"), false));
        ASSERT_EQ_INT(r.o.n, 1);
        ASSERT_STREQ(attr(&r.o.v[0], "push"), "true");
        ASSERT_STREQ(attr(&r.o.v[0], "unpack"), "true");

        /* --push beside another output adds an image output */
        ASSERT_OK(parse(&s, SPECS("type=local,dest=/tmp/kiln-no-such-dir"), true, false, SPECS("x"),
                        false));
        ASSERT_EQ_INT(s.o.n, 2);
        ASSERT_STREQ(s.o.v[1].api.type, "image");
        ASSERT_TRUE(attr(&s.o.v[0], "name") == NULL);

        if (parse_fails(NULL, true, NULL, false, "tag is needed when pushing to registry") < 0 ||
            parse_fails(SPECS("type=image,push=true"), false, NULL, false,
                        "tag is needed when pushing to registry") < 0)
                return -1;
        return 0;
}

TEST(output_load_and_names)
{
        _cleanup_(parsed_release) struct parsed p, q, r, s;

        ASSERT_OK(parse(&p, NULL, false, true, SPECS("hello:latest"), false));
        ASSERT_EQ_INT(p.o.n, 1);
        ASSERT_STREQ(p.o.v[0].api.type, "docker");
        ASSERT_EQ_INT(p.o.v[0].sink, KILN_CLI_OUTPUT_SINK_DOCKER_LOAD);
        ASSERT_STREQ(attr(&p.o.v[0], "name"), "hello:latest");
        ASSERT_TRUE(kiln_cli_outputs_need_docker(&p.o));

        /* type=docker without dest is the load: --load adds nothing */
        ASSERT_OK(parse(&q, SPECS("type=docker"), false, true, NULL, false));
        ASSERT_EQ_INT(q.o.n, 1);
        ASSERT_EQ_INT(q.o.v[0].sink, KILN_CLI_OUTPUT_SINK_DOCKER_LOAD);

        /* a docker tar file is not a load; -t names every named output and
         * replaces a name= given; local and tar carry no name */
        ASSERT_OK(parse(&r,
                        SPECS("type=docker,dest=/tmp/kiln-no-such-dir/d.tar,name=old",
                              "type=oci,dest=/tmp/kiln-no-such-dir/o.tar",
                              "type=tar,dest=/tmp/kiln-no-such-dir/t.tar"),
                        false, true, SPECS("a", "b:2"), false));
        ASSERT_EQ_INT(r.o.n, 4);
        ASSERT_EQ_INT(r.o.v[0].sink, KILN_CLI_OUTPUT_SINK_FILE);
        ASSERT_STREQ(attr(&r.o.v[0], "name"), "a,b:2");
        ASSERT_STREQ(attr(&r.o.v[1], "name"), "a,b:2");
        ASSERT_TRUE(attr(&r.o.v[2], "name") == NULL);
        ASSERT_EQ_INT(r.o.v[3].sink, KILN_CLI_OUTPUT_SINK_DOCKER_LOAD);
        ASSERT_STREQ(attr(&r.o.v[3], "name"), "a,b:2");

        /* cacheonly: no output, on purpose */
        ASSERT_OK(parse(&s, SPECS("type=cacheonly"), false, false, NULL, false));
        ASSERT_EQ_INT(s.o.n, 0);
        ASSERT_TRUE(s.o.cache_only);
        ASSERT_TRUE(!kiln_cli_outputs_need_docker(&s.o));
        return 0;
}

TEST(output_layout_directories)
{
        _cleanup_(parsed_release) struct parsed p;
        struct kiln_api_build_request req = { 0 };

        ASSERT_OK(parse(&p,
                        SPECS("type=oci,tar=0,dest=/tmp/kiln-no-such-dir/layout",
                              "type=docker,tar=False,dest=/tmp/kiln-no-such-dir/layout2",
                              "type=oci,tar=TRUE,dest=/tmp/kiln-no-such-dir/o.tar"),
                        false, false, NULL, false));
        ASSERT_EQ_INT(p.o.n, 3);
        ASSERT_EQ_INT(p.o.v[0].sink, KILN_CLI_OUTPUT_SINK_DIR);
        ASSERT_STREQ(attr(&p.o.v[0], "tar"), "false");
        ASSERT_EQ_INT(p.o.v[1].sink, KILN_CLI_OUTPUT_SINK_DIR);
        ASSERT_STREQ(attr(&p.o.v[1], "tar"), "false");
        ASSERT_EQ_INT(p.o.v[2].sink, KILN_CLI_OUTPUT_SINK_FILE);
        ASSERT_STREQ(attr(&p.o.v[2], "tar"), "true");

        /* the request gets type and attrs, never dest */
        kiln_cli_outputs_to_request(&p.o, &req);
        ASSERT_EQ_INT(req.n_outputs, 3);
        ASSERT_STREQ(req.outputs[0].type, "oci");
        ASSERT_EQ_INT(req.outputs[0].n_attrs, 1);
        ASSERT_STREQ(req.outputs[0].attrs[0].key, "tar");
        ASSERT_STREQ(req.outputs[0].attrs[0].value, "false");
        {
                json_t *j = NULL;
                char *text;
                bool has_dest;

                ASSERT_OK(kiln_api_build_request_to_json(&req, &j));
                text = json_dumps(j, 0);
                json_decref(j);
                has_dest = text && strstr(text, "dest") != NULL;
                free(text);
                ASSERT_TRUE(!has_dest);
        }
        kiln_api_build_request_release(&req);
        return 0;
}

TEST(output_metadata_and_image_id)
{
        json_t *resp = json_pack(
                "{s:s, s:s, s:{s:s, s:s, s:i}, s:s, s:s}", "containerimage.digest", "sha256:aaa",
                "containerimage.config.digest", "sha256:ccc", "containerimage.descriptor",
                "mediaType", "application/vnd.oci.image.manifest.v1+json", "digest", "sha256:aaa",
                "size", 123, "image.name", "a,b",
                /* base64 of {"k":"v"}: BuildKit's encoded values come out as JSON */
                "encoded", "eyJrIjoidiJ9");
        json_t *m;

        ASSERT_TRUE(resp != NULL);
        m = kiln_cli_build_metadata(resp, "b/b0/abc");
        ASSERT_TRUE(m != NULL);
        ASSERT_STREQ(json_string_value(json_object_get(m, "buildx.build.ref")), "b/b0/abc");
        ASSERT_STREQ(json_string_value(json_object_get(m, "containerimage.digest")), "sha256:aaa");
        ASSERT_STREQ(json_string_value(json_object_get(m, "image.name")), "a,b");
        ASSERT_EQ_INT(json_integer_value(json_object_get(
                              json_object_get(m, "containerimage.descriptor"), "size")),
                      123);
        ASSERT_STREQ(json_string_value(json_object_get(json_object_get(m, "encoded"), "k")), "v");
        json_decref(m);

        /* buildx's getImageID: the config digest first */
        ASSERT_STREQ(kiln_cli_build_image_id(resp), "sha256:ccc");
        json_object_del(resp, "containerimage.config.digest");
        ASSERT_STREQ(kiln_cli_build_image_id(resp), "sha256:aaa");
        ASSERT_STREQ(kiln_cli_build_image_id(NULL), "");
        json_decref(resp);

        m = kiln_cli_build_metadata(NULL, "b/b0/x");
        ASSERT_TRUE(m != NULL);
        ASSERT_EQ_INT(json_object_size(m), 1);
        json_decref(m);
        return 0;
}

/* ---- writers ---- */

static struct kiln_cli_output output_of(enum kiln_cli_output_sink sink, const char *dest)
{
        return (struct kiln_cli_output){ .api.type = (char *) "tar",
                                         .sink = sink,
                                         .dest = (char *) dest };
}

TEST(output_file_is_replaced_atomically)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_free_ char *path = NULL;
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        struct kiln_cli_output o;
        struct stat st;
        mode_t um = umask(022);

        umask(um);
        ASSERT_TRUE(d != NULL);
        path = kiln_xasprintf("%s/out.tar", d);
        o = output_of(KILN_CLI_OUTPUT_SINK_FILE, path);
        ASSERT_OK(kiln_write_file_atomic(path, "old", 3, 0600));

        /* a failed output leaves the old file and nothing else */
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_cli_output_writer *w = NULL;

                ASSERT_OK(kiln_cli_output_writer_new(&o, &w, &err));
                ASSERT_OK(kiln_cli_output_writer_write(w, "half", 4, &err));
                kiln_cli_output_writer_free(w);
                ASSERT_EQ_INT(count_entries(d), 1);
                ASSERT_OK(kiln_read_file_at(AT_FDCWD, path, &b));
                ASSERT_EQ_INT(b.len, 3);
        }
        /* a complete one replaces it */
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_cli_output_writer *w = NULL;
                static char big[300000];

                memset(big, 'x', sizeof(big));
                ASSERT_OK(kiln_cli_output_writer_new(&o, &w, &err));
                ASSERT_OK(kiln_cli_output_writer_write(w, big, sizeof(big), &err));
                ASSERT_OK(kiln_cli_output_writer_write(w, "end", 3, &err));
                ASSERT_OK(kiln_cli_output_writer_finish(w, NULL, &err));
                kiln_cli_output_writer_free(w);
                ASSERT_EQ_INT(count_entries(d), 1);
                ASSERT_OK(kiln_read_file_at(AT_FDCWD, path, &b));
                ASSERT_EQ_INT(b.len, sizeof(big) + 3);
                ASSERT_TRUE(memcmp(b.data + sizeof(big), "end", 3) == 0);
                ASSERT_EQ_INT(stat(path, &st), 0);
                ASSERT_EQ_INT(st.st_mode & 0777, 0666 & ~um);
        }
        kiln_buf_release(&b);
        return 0;
}

/* A tar in memory, built with libarchive. */
struct tar_entry {
        const char *path;
        mode_t type;
        unsigned mode;
        const char *data; /* file content, link target */
        int64_t mtime;
};

static int make_tar(const struct tar_entry *e, size_t n, struct kiln_buf *out)
{
        struct archive *a = archive_write_new();
        size_t cap = 1 << 20, used = 0;
        char *mem = kiln_xmalloc(cap);

        archive_write_set_format_pax_restricted(a);
        archive_write_set_bytes_in_last_block(a, 1);
        if (archive_write_open_memory(a, mem, cap, &used) != ARCHIVE_OK)
                return -1;
        for (size_t i = 0; i < n; i++) {
                struct archive_entry *ae = archive_entry_new();

                archive_entry_set_pathname(ae, e[i].path);
                archive_entry_set_filetype(ae, e[i].type);
                archive_entry_set_perm(ae, e[i].mode);
                archive_entry_set_mtime(ae, e[i].mtime, 0);
                if (e[i].type == AE_IFREG)
                        archive_entry_set_size(ae, (la_int64_t) strlen(e[i].data));
                if (e[i].type == AE_IFLNK)
                        archive_entry_set_symlink(ae, e[i].data);
                if (archive_write_header(a, ae) != ARCHIVE_OK)
                        return -1;
                if (e[i].type == AE_IFREG)
                        (void) archive_write_data(a, e[i].data, strlen(e[i].data));
                archive_entry_free(ae);
        }
        archive_write_close(a);
        archive_write_free(a);
        *out = KILN_BUF_INIT(cap);
        (void) kiln_buf_append(out, mem, used);
        free(mem);
        return 0;
}

/* Feeds tar to a DIR writer for dest in small chunks; the result of the
 * writes and the finish. */
static int extract(const char *dest, const struct kiln_buf *tar, struct kiln_error **err)
{
        struct kiln_cli_output o = output_of(KILN_CLI_OUTPUT_SINK_DIR, dest);
        struct kiln_cli_output_writer *w = NULL;
        int r;

        r = kiln_cli_output_writer_new(&o, &w, err);
        for (size_t off = 0; r >= 0 && off < tar->len; off += 1000)
                r = kiln_cli_output_writer_write(
                        w, tar->data + off, tar->len - off < 1000 ? tar->len - off : 1000, err);
        if (r >= 0)
                r = kiln_cli_output_writer_finish(w, NULL, err);
        kiln_cli_output_writer_free(w);
        return r;
}

TEST(output_directory_keeps_modes_and_times)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_free_ char *dest = NULL, *p = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct tar_entry entries[] = {
                { "bin", AE_IFDIR, 0750, NULL, 1000000 },
                { "bin/tool", AE_IFREG, 0755, "#!/bin/sh\n", 1500000000 },
                { "etc", AE_IFDIR, 0755, NULL, 1000000 },
                { "etc/secret", AE_IFREG, 0600, "s", 1600000000 },
                { "etc/link", AE_IFLNK, 0777, "secret", 1600000000 },
        };
        struct kiln_buf tar;
        struct stat st;
        char target[64];
        ssize_t n;

        ASSERT_TRUE(d != NULL);
        ASSERT_OK(make_tar(entries, ELEMENTSOF(entries), &tar));
        /* the directory is made when missing */
        dest = kiln_xasprintf("%s/a/b", d);
        if (extract(dest, &tar, &err) < 0)
                KILN_TEST_FAIL("extract: %s", kiln_error_message(err));
        kiln_buf_release(&tar);

        p = kiln_xasprintf("%s/bin/tool", dest);
        ASSERT_EQ_INT(lstat(p, &st), 0);
        ASSERT_EQ_INT(st.st_mode & 07777, 0755);
        ASSERT_EQ_INT(st.st_mtime, 1500000000);
        free(p);
        p = kiln_xasprintf("%s/etc/secret", dest);
        ASSERT_EQ_INT(lstat(p, &st), 0);
        ASSERT_EQ_INT(st.st_mode & 07777, 0600);
        free(p);
        p = kiln_xasprintf("%s/bin", dest);
        ASSERT_EQ_INT(lstat(p, &st), 0);
        ASSERT_EQ_INT(st.st_mode & 07777, 0750);
        /* directories' times are set after their content */
        ASSERT_EQ_INT(st.st_mtime, 1000000);
        free(p);
        p = kiln_xasprintf("%s/etc/link", dest);
        n = readlink(p, target, sizeof(target) - 1);
        ASSERT_TRUE(n > 0);
        target[n] = '\0';
        ASSERT_STREQ(target, "secret");
        return 0;
}

/* Each tar tries to write outside dest; the extraction fails and nothing
 * appears beside dest. */
TEST(output_directory_refuses_escapes)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_free_ char *dest = NULL, *outside = NULL;
        const struct tar_entry dotdot[] = { { "../evil", AE_IFREG, 0644, "x", 0 } };
        const struct tar_entry nested[] = { { "a", AE_IFDIR, 0755, NULL, 0 },
                                            { "a/../../evil", AE_IFREG, 0644, "x", 0 } };
        const struct tar_entry through_link[] = { { "l", AE_IFLNK, 0777, "..", 0 },
                                                  { "l/evil", AE_IFREG, 0644, "x", 0 } };
        const struct {
                const struct tar_entry *e;
                size_t n;
        } cases[] = {
                { dotdot, ELEMENTSOF(dotdot) },
                { nested, ELEMENTSOF(nested) },
                { through_link, ELEMENTSOF(through_link) },
        };

        ASSERT_TRUE(d != NULL);
        dest = kiln_xasprintf("%s/dest", d);
        outside = kiln_xasprintf("%s/evil", d);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct kiln_buf tar;

                ASSERT_OK(make_tar(cases[i].e, cases[i].n, &tar));
                if (extract(dest, &tar, &err) >= 0)
                        KILN_TEST_FAIL("case %zu: the extraction succeeded", i);
                kiln_buf_release(&tar);
                ASSERT_TRUE(strstr(kiln_error_message(err), dest) != NULL);
                ASSERT_TRUE(access(outside, F_OK) < 0);
                ASSERT_EQ_INT(count_entries(d), 1);
        }
        /* an absolute name: refused, and nothing written where it points */
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_free_ char *abs = kiln_xasprintf("%s/evil", d);
                const struct tar_entry absolute[] = { { abs, AE_IFREG, 0644, "x", 0 } };
                struct kiln_buf tar;

                ASSERT_OK(make_tar(absolute, 1, &tar));
                ASSERT_TRUE(extract(dest, &tar, &err) < 0);
                kiln_buf_release(&tar);
                ASSERT_TRUE(access(outside, F_OK) < 0);
        }
        /* a truncated tar fails */
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                const struct tar_entry one[] = { { "f", AE_IFREG, 0644, "0123456789", 0 } };
                struct kiln_buf tar;

                ASSERT_OK(make_tar(one, 1, &tar));
                tar.len = 600;
                ASSERT_TRUE(extract(dest, &tar, &err) < 0);
                kiln_buf_release(&tar);
        }
        return 0;
}

/* A fake docker program in a PATH of its own: `docker load` copies stdin
 * to <dir>/loaded and prints docker's line, or fails as docker does. */
static char *fake_docker(const char *dir, bool fail)
{
        _cleanup_free_ char *path = kiln_xasprintf("%s/docker", dir);
        _cleanup_free_ char *script =
                fail ? kiln_xasprintf("#!/bin/sh\ncat >/dev/null\necho 'Error response from "
                                      "daemon: unexpected EOF' >&2\nexit 1\n")
                     : kiln_xasprintf("#!/bin/sh\n[ \"$1\" = load ] || exit 3\ncat >'%s/loaded'\n"
                                      "echo 'Loaded image: hello:latest'\n",
                                      dir);

        if (kiln_write_file_atomic(path, script, strlen(script), 0755) < 0)
                return NULL;
        return kiln_xstrdup(dir);
}

static void restore_path(char **old)
{
        if (*old)
                setenv("PATH", *old, 1);
        free(*old);
}

TEST(output_docker_load_pipes_the_tar)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_(restore_path) char *old_path = kiln_xstrdup(getenv("PATH") ?: "/usr/bin:/bin");
        _cleanup_free_ char *bin = NULL, *loaded = NULL, *out = NULL, *new_path = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_cli_output o = output_of(KILN_CLI_OUTPUT_SINK_DOCKER_LOAD, NULL);
        struct kiln_cli_output_writer *w = NULL;
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);
        static char data[200000];

        size_t fds = fd_count();

        ASSERT_TRUE(d != NULL);
        bin = fake_docker(d, false);
        ASSERT_TRUE(bin != NULL);
        new_path = kiln_xasprintf("%s:%s", bin, old_path);
        setenv("PATH", new_path, 1);
        memset(data, 'd', sizeof(data));

        ASSERT_OK(kiln_cli_output_writer_new(&o, &w, &err));
        ASSERT_OK(kiln_cli_output_writer_write(w, data, sizeof(data), &err));
        if (kiln_cli_output_writer_finish(w, &out, &err) < 0)
                KILN_TEST_FAIL("finish: %s", kiln_error_message(err));
        kiln_cli_output_writer_free(w);
        ASSERT_STREQ(out, "Loaded image: hello:latest");
        loaded = kiln_xasprintf("%s/loaded", d);
        ASSERT_OK(kiln_read_file_at(AT_FDCWD, loaded, &b));
        ASSERT_EQ_INT(b.len, sizeof(data));
        kiln_buf_release(&b);

        /* docker load failing: its words in the error */
        free(bin);
        bin = fake_docker(d, true);
        ASSERT_TRUE(bin != NULL);
        ASSERT_OK(kiln_cli_output_writer_new(&o, &w, &err));
        (void) kiln_cli_output_writer_write(w, "x", 1, &err);
        ASSERT_TRUE(kiln_cli_output_writer_finish(w, NULL, &err) < 0);
        kiln_cli_output_writer_free(w);
        ASSERT_TRUE(strstr(kiln_error_message(err), "docker load: exit status 1: Error response "
                                                    "from daemon: unexpected EOF") != NULL);
        ASSERT_EQ_INT(fd_count(), fds);
        return 0;
}

/* A Docker engine that answers one request on a unix socket. */
struct engine {
        int fd;
        const char *answer;
        pthread_t thread;
};

static void *engine_thread(void *userdata)
{
        struct engine *e = userdata;
        char buf[4096];
        int c = accept4(e->fd, NULL, NULL, SOCK_CLOEXEC);

        if (c < 0)
                return NULL;
        (void) !read(c, buf, sizeof(buf));
        (void) kiln_write_all(c, e->answer, strlen(e->answer));
        close(c);
        return NULL;
}

static int engine_check(const char *dir, const char *answer, int *ret, char **msg)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *host = NULL;
        struct engine e = { .answer = answer };

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/docker.sock", dir);
        e.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (e.fd < 0 || bind(e.fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(e.fd, 1) < 0)
                return -1;
        if (pthread_create(&e.thread, NULL, engine_thread, &e) != 0)
                return -1;
        host = kiln_xasprintf("unix://%s", sa.sun_path);
        *ret = kiln_cli_docker_check(host, &err);
        *msg = kiln_xstrdup(*ret < 0 ? kiln_error_message(err) : "");
        pthread_join(e.thread, NULL);
        close(e.fd);
        unlink(sa.sun_path);
        return 0;
}

TEST(output_docker_check)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_(restore_path) char *old_path = kiln_xstrdup(getenv("PATH") ?: "/usr/bin:/bin");
        _cleanup_free_ char *bin = NULL, *new_path = NULL, *msg = NULL, *host = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = 0;

        ASSERT_TRUE(d != NULL);
        /* no docker program: said so, before anything else */
        setenv("PATH", d, 1);
        ASSERT_EQ_INT(kiln_cli_docker_check("unix:///nonexistent.sock", &err), -ENOENT);
        ASSERT_TRUE(strstr(kiln_error_message(err), "docker command is not in PATH") != NULL);

        bin = fake_docker(d, false);
        ASSERT_TRUE(bin != NULL);
        new_path = kiln_xasprintf("%s:%s", bin, old_path);
        setenv("PATH", new_path, 1);

        host = kiln_xasprintf("unix://%s/none.sock", d);
        ASSERT_EQ_INT(kiln_cli_docker_check(host, &err), -EHOSTDOWN);
        msg = kiln_xasprintf(
                "--load: no Docker engine answers at %s (no socket at '%s/none.sock'): "
                "build with -o type=oci,dest=FILE or -o type=docker,dest=FILE instead",
                host, d);
        ASSERT_STREQ(kiln_error_message(err), msg);
        free(msg);
        msg = NULL;

        ASSERT_OK(engine_check(d, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", &r, &msg));
        ASSERT_OK(r);
        free(msg);
        msg = NULL;
        ASSERT_OK(engine_check(d, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                               &r, &msg));
        ASSERT_EQ_INT(r, -EHOSTDOWN);
        ASSERT_TRUE(strstr(msg, "GET /_ping answered 500") != NULL);
        return 0;
}

/* A symbolic link already in dest that points outside: nothing is written
 * through it, and a file of the same name replaces the link itself. */
TEST(output_directory_ignores_links_already_there)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_free_ char *dest = NULL, *link = NULL, *outside = NULL;
        const struct tar_entry through[] = { { "l/evil", AE_IFREG, 0644, "x", 0 } };
        const struct tar_entry replace[] = { { "l", AE_IFREG, 0644, "x", 0 } };
        struct kiln_buf tar;
        struct stat st;

        ASSERT_TRUE(d != NULL);
        dest = kiln_xasprintf("%s/dest", d);
        outside = kiln_xasprintf("%s/out", d);
        link = kiln_xasprintf("%s/l", dest);
        ASSERT_OK(kiln_mkdir_p(outside, 0755));
        ASSERT_OK(kiln_mkdir_p(dest, 0755));
        ASSERT_EQ_INT(symlink(outside, link), 0);
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_OK(make_tar(through, 1, &tar));
                ASSERT_TRUE(extract(dest, &tar, &err) < 0);
                kiln_buf_release(&tar);
                ASSERT_EQ_INT(count_entries(outside), 0);
        }
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

                ASSERT_OK(make_tar(replace, 1, &tar));
                if (extract(dest, &tar, &err) < 0)
                        KILN_TEST_FAIL("extract: %s", kiln_error_message(err));
                kiln_buf_release(&tar);
                ASSERT_EQ_INT(lstat(link, &st), 0);
                ASSERT_TRUE(S_ISREG(st.st_mode));
                ASSERT_EQ_INT(count_entries(outside), 0);
        }
        return 0;
}

/* Downloads output 0 of build "b1" from a fake daemon on a unix socket
 * answering with answer, into a FILE output at path. */
static int download(const char *dir, const char *answer, const char *path, char **msg)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *addr = NULL;
        struct engine e = { .answer = answer };
        struct kiln_cli_output o = output_of(KILN_CLI_OUTPUT_SINK_FILE, path);
        struct kiln_cli_export *x = NULL;
        bool local = true;
        int r;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/kilnd.sock", dir);
        e.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (e.fd < 0 || bind(e.fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(e.fd, 1) < 0)
                return -1;
        if (pthread_create(&e.thread, NULL, engine_thread, &e) != 0)
                return -1;
        addr = kiln_xasprintf("unix://%s", sa.sun_path);
        {
                struct kiln_cli_http_target t = { .address = addr };

                r = kiln_cli_export_start(&t, "b1", 0, &o, &x, &err);
                if (r >= 0)
                        r = kiln_cli_export_wait(x, NULL, &local, &err);
                kiln_cli_export_free(x);
        }
        *msg = kiln_xstrdup(r < 0 ? kiln_error_message(err) : "");
        pthread_join(e.thread, NULL);
        close(e.fd);
        unlink(sa.sun_path);
        /* a download the daemon cut is no failure of the client's side */
        if (r < 0 && local)
                return -2;
        return r < 0 ? 1 : 0;
}

TEST(output_export_download)
{
        _cleanup_(rm_dir) char *d = tmp_dir();
        _cleanup_free_ char *path = NULL, *msg = NULL;
        struct kiln_buf b = KILN_BUF_INIT(1 << 20);

        size_t fds;

        ASSERT_TRUE(d != NULL);
        fds = fd_count();
        path = kiln_xasprintf("%s/out.tar", d);
        ASSERT_EQ_INT(download(d,
                               "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"
                               "0\r\n\r\n",
                               path, &msg),
                      0);
        ASSERT_OK(kiln_read_file_at(AT_FDCWD, path, &b));
        ASSERT_EQ_INT(b.len, 11);
        ASSERT_TRUE(memcmp(b.data, "hello world", 11) == 0);
        kiln_buf_release(&b);
        ASSERT_EQ_INT(unlink(path), 0);
        free(msg);

        /* cut before its end: failed, and no file */
        ASSERT_EQ_INT(download(d,
                               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n",
                               path, &msg),
                      1);
        ASSERT_TRUE(strstr(msg, "GET /v1/build/b1/export/0") != NULL);
        ASSERT_EQ_INT(count_entries(d), 0);
        free(msg);

        /* the daemon's error answer */
        ASSERT_EQ_INT(download(d,
                               "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                               "Content-Length: 29\r\n\r\n{\"error\":\"no output 0 here\"}\n",
                               path, &msg),
                      1);
        ASSERT_TRUE(strstr(msg, "the daemon answered 404: no output 0 here") != NULL);
        ASSERT_EQ_INT(count_entries(d), 0);
        ASSERT_EQ_INT(fd_count(), fds);
        return 0;
}
