/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "base/error.h"
#include "base/macro.h"
#include "content/content.h"
#include "kiln-test.h"

/* sha256("hello world") */
#define HELLO_DIGEST "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
#define EMPTY_DIGEST "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void) st;
        (void) flag;
        (void) ftw;
        (void) chmod(path, 0700);
        return remove(path);
}

struct tmp {
        char path[64];
};

static void tmp_release(struct tmp *t)
{
        if (t->path[0])
                (void) nftw(t->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int tmp_init(struct tmp *t)
{
        (void) snprintf(t->path, sizeof(t->path), "/tmp/kiln-content-XXXXXX");
        if (!mkdtemp(t->path)) {
                t->path[0] = '\0';
                return -errno;
        }
        return 0;
}

/* Entries of <root>/content/<sub>, or -errno. */
static int count_entries(const char *root, const char *sub)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/content/%s", root, sub);

        return kiln_test_count_entries(p);
}

static bool contains(const struct kiln_error *e, const char *s)
{
        if (!e || !strstr(kiln_error_message(e), s)) {
                printf("# message %s lacks \"%s\"\n", e ? kiln_error_message(e) : "(none)", s);
                return false;
        }
        return true;
}

TEST(store_put_read_map_delete)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(1024);
        _cleanup_free_ char *path = NULL;
        struct kiln_content_mapping m;
        char digest[KILN_CONTENT_DIGEST_SIZE];
        struct stat st;
        uint64_t size;
        int fd;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 0);
        ASSERT_EQ_INT(kiln_content_store_put(s, NULL, "hello world", 11, digest, &err), 1);
        ASSERT_STREQ(digest, HELLO_DIGEST);
        /* A second put of the same bytes finds them. */
        ASSERT_EQ_INT(kiln_content_store_put(s, HELLO_DIGEST, "hello world", 11, NULL, &err), 0);
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 1);
        ASSERT_OK(kiln_content_store_size(s, HELLO_DIGEST, &size, &err));
        ASSERT_EQ_INT(size, 11);

        ASSERT_OK(kiln_content_store_read(s, HELLO_DIGEST, &b, &err));
        ASSERT_STREQ(b.data, "hello world");
        ASSERT_OK(kiln_content_store_map(s, HELLO_DIGEST, &m, &err));
        ASSERT_EQ_INT(m.size, 11);
        ASSERT_TRUE(memcmp(m.data, "hello world", 11) == 0);
        kiln_content_mapping_release(&m);
        ASSERT_OK(kiln_content_store_open_blob(s, HELLO_DIGEST, &fd, &err));
        close(fd);

        /* Published read-only at blobs/sha256/<hex>. */
        path = kiln_content_store_blob_path(s, HELLO_DIGEST);
        ASSERT_TRUE(path && strstr(path, "/content/blobs/sha256/b94d27b9934d3e08"));
        ASSERT_OK(stat(path, &st));
        ASSERT_EQ_INT(st.st_mode & 0777, 0444);
        ASSERT_TRUE(kiln_content_store_blob_path(s, "sha256:abc") == NULL);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);

        ASSERT_OK(kiln_content_store_delete(s, HELLO_DIGEST, &err));
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 0);
        ASSERT_EQ_INT(kiln_content_store_delete(s, HELLO_DIGEST, &err), -ENOENT);
        ASSERT_TRUE(contains(err, "not found"));
        ASSERT_EQ_INT(kiln_content_store_size(s, HELLO_DIGEST, &size, &err), -ENOENT);
        ASSERT_EQ_INT(kiln_content_store_map(s, HELLO_DIGEST, &m, &err), -ENOENT);
        return 0;
}

TEST(store_empty_blob)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_content_mapping m;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_store_put(s, EMPTY_DIGEST, "", 0, NULL, &err), 1);
        ASSERT_OK(kiln_content_store_map(s, EMPTY_DIGEST, &m, &err));
        ASSERT_EQ_INT(m.size, 0);
        kiln_content_mapping_release(&m);
        return 0;
}

TEST(store_read_is_bounded)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(kiln_buf_release) struct kiln_buf b = KILN_BUF_INIT(5);

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_OK(kiln_content_store_put(s, NULL, "hello world", 11, NULL, &err));
        ASSERT_EQ_INT(kiln_content_store_read(s, HELLO_DIGEST, &b, &err), -E2BIG);
        ASSERT_TRUE(contains(err, "11 bytes, more than the 5 allowed"));
        return 0;
}

TEST(ingest_streams_in_chunks)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        ASSERT_STREQ(kiln_content_ingest_digest(in), HELLO_DIGEST);
        ASSERT_OK(kiln_content_ingest_write(in, "hello", 5, &err));
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 1);
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 0);
        ASSERT_OK(kiln_content_ingest_write(in, " ", 1, &err));
        ASSERT_OK(kiln_content_ingest_write(in, "world", 5, &err));
        ASSERT_EQ_INT(kiln_content_ingest_offset(in), 11);
        ASSERT_OK(kiln_content_ingest_commit(in, &err));
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 1);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        /* Over means over. */
        ASSERT_EQ_INT(kiln_content_ingest_write(in, "x", 1, &err), -ESTALE);
        ASSERT_EQ_INT(kiln_content_ingest_commit(in, &err), -ESTALE);
        return 0;
}

TEST(ingest_unknown_digest_and_size)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, NULL, KILN_CONTENT_SIZE_UNKNOWN, 0, &in, &err),
                      1);
        ASSERT_TRUE(kiln_content_ingest_digest(in) == NULL);
        ASSERT_OK(kiln_content_ingest_write(in, "hello world", 11, &err));
        ASSERT_OK(kiln_content_ingest_commit(in, &err));
        ASSERT_STREQ(kiln_content_ingest_digest(in), HELLO_DIGEST);
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 1);
        in = kiln_content_ingest_free(in);
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, NULL, -2, 0, &in, &err), -EINVAL);
        ASSERT_TRUE(in == NULL);
        return 0;
}

TEST(ingest_wrong_bytes_publish_nothing)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        ASSERT_OK(kiln_content_ingest_write(in, "HELLO WORLD", 11, &err));
        ASSERT_EQ_INT(kiln_content_ingest_commit(in, &err), -EBADMSG);
        ASSERT_TRUE(contains(err, "digest mismatch: expected " HELLO_DIGEST ", got sha256:"));
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 0);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 0);

        /* The same through put. */
        ASSERT_EQ_INT(kiln_content_store_put(s, HELLO_DIGEST, "hello there", 11, NULL, &err),
                      -EBADMSG);
        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 0);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        return 0;
}

TEST(ingest_wrong_size)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));

        /* Too short: found at commit. */
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        ASSERT_OK(kiln_content_ingest_write(in, "hello", 5, &err));
        ASSERT_EQ_INT(kiln_content_ingest_commit(in, &err), -EBADMSG);
        ASSERT_TRUE(contains(err, "size mismatch: expected 11 bytes, got 5"));
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        in = kiln_content_ingest_free(in);

        /* Too long: refused as the bytes arrive, before anything is kept. */
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        ASSERT_OK(kiln_content_ingest_write(in, "hello worl", 10, &err));
        ASSERT_EQ_INT(kiln_content_ingest_write(in, "d!", 2, &err), -EFBIG);
        ASSERT_TRUE(contains(err, "larger than its expected size of 11 bytes (12 bytes received)"));
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        ASSERT_EQ_INT(kiln_content_ingest_write(in, "d", 1, &err), -ESTALE);
        ASSERT_EQ_INT(kiln_content_ingest_commit(in, &err), -ESTALE);
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 0);
        in = kiln_content_ingest_free(in);

        /* A published blob of another size than expected: the descriptor
         * is wrong. */
        ASSERT_OK(kiln_content_store_put(s, NULL, "hello world", 11, NULL, &err));
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 12, 0, &in, &err), -EBADMSG);
        ASSERT_TRUE(contains(err, "with 11 bytes, but 12 were expected"));
        return 0;
}

TEST(ingest_abort_removes_file)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_content_ingest *in = NULL;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        ASSERT_OK(kiln_content_ingest_write(in, "hello", 5, &err));
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 1);
        in = kiln_content_ingest_free(in);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        /* The digest is free again. */
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, KILN_CONTENT_INGEST_NOWAIT,
                                                &in, &err),
                      1);
        in = kiln_content_ingest_free(in);
        return 0;
}

TEST(open_cleans_leftover_ingest)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *a = NULL, *dir = NULL;
        int fd, status;
        pid_t pid;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_OK(kiln_content_store_put(s, NULL, "hello world", 11, NULL, &err));
        s = kiln_content_store_free(s);

        /* A crash mid-download, for real: a process dies in the middle of
         * an ingest. */
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                struct kiln_content_store *cs = NULL;
                struct kiln_content_ingest *in = NULL;

                if (kiln_content_store_open(t.path, &cs, NULL) < 0 ||
                    kiln_content_ingest_begin(cs, EMPTY_DIGEST, 10, 0, &in, NULL) != 1 ||
                    kiln_content_ingest_write(in, "partial", 7, NULL) < 0)
                        _exit(1);
                _exit(0);
        }
        ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        a = kiln_xasprintf("%s/content/ingest/0123456789abcdef0123456789abcdef", t.path);
        fd = open(a, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ASSERT_TRUE(fd >= 0);
        close(fd);
        dir = kiln_xasprintf("%s/content/ingest/stale-dir", t.path);
        ASSERT_OK(mkdir(dir, 0700));
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 3);

        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        ASSERT_EQ_INT(kiln_content_store_has(s, HELLO_DIGEST, &err), 1);
        ASSERT_EQ_INT(kiln_content_store_has(s, EMPTY_DIGEST, &err), 0);
        ASSERT_EQ_INT(count_entries(t.path, "blobs/sha256"), 1);
        return 0;
}

TEST(open_reports_path)
{
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        ASSERT_TRUE(kiln_content_store_open("/proc/self/nonexistent-kiln", &s, &err) < 0);
        ASSERT_TRUE(contains(err, "open content store '/proc/self/nonexistent-kiln/content'"));
        return 0;
}

TEST(digest_validation)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char d[KILN_CONTENT_DIGEST_SIZE];

        ASSERT_OK(kiln_content_digest_check(HELLO_DIGEST, &err));
        ASSERT_EQ_INT(kiln_content_digest_check("sha512:abcd", &err), -EOPNOTSUPP);
        ASSERT_TRUE(contains(err, "unsupported algorithm 'sha512', only sha256 is supported"));
        ASSERT_EQ_INT(kiln_content_digest_check("md5:abcd", &err), -EOPNOTSUPP);
        ASSERT_EQ_INT(kiln_content_digest_check("sha256:B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37"
                                                "A5380EE9088F7ACE2EFCDE9",
                                                &err),
                      -EINVAL);
        ASSERT_TRUE(contains(err, "expected 'sha256:' and 64 lowercase hex digits"));
        ASSERT_EQ_INT(kiln_content_digest_check("sha256:b94d", &err), -EINVAL);
        ASSERT_EQ_INT(kiln_content_digest_check(HELLO_DIGEST "0", &err), -EINVAL);
        ASSERT_EQ_INT(kiln_content_digest_check("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9"
                                                "088f7ace2efcde9",
                                                &err),
                      -EINVAL);
        ASSERT_EQ_INT(kiln_content_digest_check("sha256:../../etc/passwd", &err), -EINVAL);
        ASSERT_EQ_INT(kiln_content_digest_check("", &err), -EINVAL);
        ASSERT_EQ_INT(kiln_content_digest_check(NULL, &err), -EINVAL);
        /* Control bytes are not echoed raw. */
        ASSERT_EQ_INT(kiln_content_digest_check("sha256:\x1b[31m", &err), -EINVAL);
        ASSERT_TRUE(contains(err, "\\x1b"));

        kiln_content_digest_of("hello world", 11, d);
        ASSERT_STREQ(d, HELLO_DIGEST);

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_store_has(s, "sha256:../x", &err), -EINVAL);
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, "sha384:ab", 1, 0, &in, &err), -EOPNOTSUPP);
        ASSERT_EQ_INT(kiln_content_store_delete(s, "sha256:", &err), -EINVAL);
        return 0;
}

/* ---- concurrency ---- */

#define N_THREADS 8
#define BIG_SIZE  (1u << 20)

struct race {
        struct kiln_content_store *store;
        const char *digest;
        const unsigned char *data;
        atomic_int writers;
        atomic_int present;
        atomic_int failures;
        bool abort_first;
};

static void pause_ms(long ms)
{
        struct timespec ts = { .tv_sec = 0, .tv_nsec = ms * 1000000L };

        nanosleep(&ts, NULL);
}

static void *race_thread(void *arg)
{
        struct race *race = arg;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        size_t off;
        int r;

        r = kiln_content_ingest_begin(race->store, race->digest, BIG_SIZE, 0, &in, &err);
        if (r < 0) {
                atomic_fetch_add(&race->failures, 1);
                return NULL;
        }
        if (r == 0) {
                atomic_fetch_add(&race->present, 1);
                return NULL;
        }
        /* The writer: slowly, so that the others surely arrive meanwhile. */
        if (atomic_fetch_add(&race->writers, 1) == 0 && race->abort_first) {
                (void) kiln_content_ingest_write(in, race->data, 4096, &err);
                pause_ms(50);
                return NULL; /* the cleanup aborts */
        }
        for (off = 0; off < BIG_SIZE; off += 65536) {
                if (kiln_content_ingest_write(in, race->data + off, 65536, &err) < 0) {
                        atomic_fetch_add(&race->failures, 1);
                        return NULL;
                }
                if (off == 0)
                        pause_ms(50);
        }
        if (kiln_content_ingest_commit(in, &err) < 0)
                atomic_fetch_add(&race->failures, 1);
        return NULL;
}

static int run_race(bool abort_first, int *ret_writers, int *ret_present, int *ret_failures)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ unsigned char *data = kiln_xmalloc(BIG_SIZE);
        char digest[KILN_CONTENT_DIGEST_SIZE];
        pthread_t th[N_THREADS];
        struct race race = { 0 };
        size_t i;

        for (i = 0; i < BIG_SIZE; i++)
                data[i] = (unsigned char) (i * 31 + 7);
        kiln_content_digest_of(data, BIG_SIZE, digest);
        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        race.store = s;
        race.digest = digest;
        race.data = data;
        race.abort_first = abort_first;
        for (i = 0; i < N_THREADS; i++)
                ASSERT_OK(-pthread_create(&th[i], NULL, race_thread, &race));
        for (i = 0; i < N_THREADS; i++)
                pthread_join(th[i], NULL);
        ASSERT_EQ_INT(kiln_content_store_has(s, digest, &err), 1);
        ASSERT_EQ_INT(count_entries(t.path, "ingest"), 0);
        *ret_writers = atomic_load(&race.writers);
        *ret_present = atomic_load(&race.present);
        *ret_failures = atomic_load(&race.failures);
        return 0;
}

TEST(concurrent_ingests_write_once)
{
        int writers, present, failures;

        ASSERT_OK(run_race(false, &writers, &present, &failures));
        ASSERT_EQ_INT(failures, 0);
        ASSERT_EQ_INT(writers, 1);
        ASSERT_EQ_INT(present, N_THREADS - 1);
        return 0;
}

TEST(concurrent_ingest_takes_over_after_abort)
{
        int writers, present, failures;

        /* The first writer gives up: exactly one waiter takes over. */
        ASSERT_OK(run_race(true, &writers, &present, &failures));
        ASSERT_EQ_INT(failures, 0);
        ASSERT_EQ_INT(writers, 2);
        ASSERT_EQ_INT(present, N_THREADS - 2);
        return 0;
}

struct watched {
        atomic_int calls;
        atomic_bool published;
};

static void on_end(void *userdata, const char *digest, bool published)
{
        struct watched *w = userdata;

        if (streq(digest, HELLO_DIGEST)) {
                atomic_store(&w->published, published);
                atomic_fetch_add(&w->calls, 1);
        }
}

struct waiter {
        struct kiln_content_store *store;
        atomic_int result;
};

static void *wait_thread(void *arg)
{
        struct waiter *w = arg;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        atomic_store(&w->result, kiln_content_store_wait(w->store, HELLO_DIGEST, &err));
        return NULL;
}

TEST(ingest_nowait_watch_and_wait)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct kiln_content_ingest *other = NULL;
        struct watched w = { 0 };
        struct waiter wt = { 0 };
        pthread_t th;

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_store_watch(s, HELLO_DIGEST, on_end, &w, &err), 0);
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, KILN_CONTENT_INGEST_NOWAIT,
                                                &other, &err),
                      -EBUSY);
        ASSERT_TRUE(other == NULL);
        ASSERT_TRUE(contains(err, "being written by another ingest"));
        ASSERT_EQ_INT(kiln_content_store_watch(s, HELLO_DIGEST, on_end, &w, &err), 1);

        atomic_store(&wt.result, -1000);
        wt.store = s;
        ASSERT_OK(-pthread_create(&th, NULL, wait_thread, &wt));
        pause_ms(20);
        ASSERT_EQ_INT(atomic_load(&wt.result), -1000); /* still waiting */
        ASSERT_OK(kiln_content_ingest_write(in, "hello world", 11, &err));
        ASSERT_EQ_INT(atomic_load(&w.calls), 0);
        ASSERT_OK(kiln_content_ingest_commit(in, &err));
        pthread_join(th, NULL);
        ASSERT_EQ_INT(atomic_load(&wt.result), 1);
        ASSERT_EQ_INT(atomic_load(&w.calls), 1);
        ASSERT_TRUE(atomic_load(&w.published));
        ASSERT_EQ_INT(kiln_content_store_wait(s, HELLO_DIGEST, &err), 1);
        ASSERT_EQ_INT(kiln_content_store_wait(s, EMPTY_DIGEST, &err), 0);
        return 0;
}

TEST(watch_reports_failure)
{
        _cleanup_(tmp_release) struct tmp t = { 0 };
        _cleanup_(kiln_content_store_freep) struct kiln_content_store *s = NULL;
        _cleanup_(kiln_content_ingest_freep) struct kiln_content_ingest *in = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct watched w = { 0 };

        ASSERT_OK(tmp_init(&t));
        ASSERT_OK(kiln_content_store_open(t.path, &s, &err));
        ASSERT_EQ_INT(kiln_content_ingest_begin(s, HELLO_DIGEST, 11, 0, &in, &err), 1);
        atomic_store(&w.published, true);
        ASSERT_EQ_INT(kiln_content_store_watch(s, HELLO_DIGEST, on_end, &w, &err), 1);
        ASSERT_OK(kiln_content_ingest_write(in, "hello there", 11, &err));
        ASSERT_EQ_INT(kiln_content_ingest_commit(in, &err), -EBADMSG);
        ASSERT_EQ_INT(atomic_load(&w.calls), 1);
        ASSERT_TRUE(!atomic_load(&w.published));
        return 0;
}
