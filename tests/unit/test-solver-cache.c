/* SPDX-License-Identifier: Apache-2.0 */
#include <sqlite3.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "kiln-test.h"

#include "base/fs.h"
#include "base/macro.h"
#include "solver/cache.h"

static char *make_tmpdir(void)
{
        char tmpl[] = "/tmp/kiln-test-cache-XXXXXX";
        return mkdtemp(tmpl) ? kiln_xstrdup(tmpl) : NULL;
}

static void rm_tmpdir(char *dir)
{
        struct kiln_error *e = NULL;
        (void) kiln_rm_rf_at(AT_FDCWD, dir, NULL, &e);
        kiln_error_free(e);
        free(dir);
}

static int count_fn(void *ud, const struct kiln_solver_cache_record *r)
{
        (void) r;
        (*(int *) ud)++;
        return 0;
}

TEST(cache_insert_lookup_reopen)
{
        char *dir = make_tmpdir();
        ASSERT_TRUE(dir);
        _cleanup_free_ char *path = kiln_xasprintf("%s/meta.db", dir);
        struct kiln_error *e = NULL;
        struct kiln_solver_cache *c = NULL;
        int ok = -1;

        if (kiln_solver_cache_open(path, &c, &e) < 0)
                goto out;
        struct kiln_solver_cache_record rec = {
                .key = "sha256:aaaa",
                .output = 1,
                .snapshot_id = "17",
                .kind = "exec",
                .description = "[2/2] RUN echo hi",
                .size = 4096,
        };
        if (kiln_solver_cache_insert(c, &rec, &e) < 0)
                goto out;
        rec.output = 0;
        rec.snapshot_id = NULL; /* an empty output */
        if (kiln_solver_cache_insert(c, &rec, &e) < 0)
                goto out;

        struct kiln_solver_cache_record got = { 0 };
        if (kiln_solver_cache_lookup(c, "sha256:aaaa", 1, &got, &e) != 1)
                goto out;
        if (!streq_ptr(got.snapshot_id, "17") || !streq_ptr(got.kind, "exec") ||
            !streq_ptr(got.description, "[2/2] RUN echo hi") || got.size != 4096 ||
            got.created <= 0 || got.last_used < got.created || got.output != 1) {
                kiln_solver_cache_record_release(&got);
                printf("# record read back differs\n");
                goto out;
        }
        kiln_solver_cache_record_release(&got);
        if (kiln_solver_cache_lookup(c, "sha256:aaaa", 0, &got, &e) != 1 || got.snapshot_id) {
                kiln_solver_cache_record_release(&got);
                goto out;
        }
        kiln_solver_cache_record_release(&got);
        if (kiln_solver_cache_lookup(c, "sha256:aaaa", 2, &got, &e) != 0)
                goto out;
        if (kiln_solver_cache_lookup(c, "sha256:bbbb", 0, &got, &e) != 0)
                goto out;
        if (kiln_solver_cache_touch(c, "sha256:aaaa", &e) != 1)
                goto out;
        if (kiln_solver_cache_touch(c, "sha256:bbbb", &e) != 0)
                goto out;

        /* replacing keeps one record per (key, output) */
        rec.output = 1;
        rec.snapshot_id = "18";
        if (kiln_solver_cache_insert(c, &rec, &e) < 0)
                goto out;
        c = kiln_solver_cache_close(c);

        /* survives a reopen; the database is in WAL mode */
        if (kiln_solver_cache_open(path, &c, &e) < 0)
                goto out;
        if (kiln_solver_cache_lookup(c, "sha256:aaaa", 1, &got, &e) != 1)
                goto out;
        bool same = streq_ptr(got.snapshot_id, "18");
        kiln_solver_cache_record_release(&got);
        if (!same)
                goto out;
        int n = 0;
        if (kiln_solver_cache_foreach(c, count_fn, &n, &e) < 0 || n != 2)
                goto out;
        if (kiln_solver_cache_remove(c, "sha256:aaaa", 0, &e) != 1)
                goto out;
        if (kiln_solver_cache_remove(c, "sha256:aaaa", 0, &e) != 0)
                goto out;
        c = kiln_solver_cache_close(c);

        sqlite3 *db = NULL;
        if (sqlite3_open(path, &db) != SQLITE_OK)
                goto out;
        sqlite3_stmt *st = NULL;
        bool wal = false;
        if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                wal = streq((const char *) sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        sqlite3_close(db);
        if (!wal) {
                printf("# journal mode is not wal\n");
                goto out;
        }
        ok = 0;
out:
        if (e)
                printf("# %s\n", kiln_error_message(e));
        kiln_error_free(e);
        kiln_solver_cache_close(c);
        rm_tmpdir(dir);
        return ok;
}

TEST(cache_refuses_newer_schema)
{
        char *dir = make_tmpdir();
        ASSERT_TRUE(dir);
        _cleanup_free_ char *path = kiln_xasprintf("%s/meta.db", dir);
        struct kiln_error *e = NULL;
        struct kiln_solver_cache *c = NULL;
        int ok = -1;
        sqlite3 *db = NULL;
        if (sqlite3_open(path, &db) != SQLITE_OK ||
            sqlite3_exec(db,
                         "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                         "INSERT INTO schema_version VALUES (99);",
                         NULL, NULL, NULL) != SQLITE_OK) {
                sqlite3_close(db);
                goto out;
        }
        sqlite3_close(db);
        int r = kiln_solver_cache_open(path, &c, &e);
        if (r != -EPROTO || !e || !strstr(kiln_error_message(e), "schema version 99")) {
                printf("# r=%d %s\n", r, e ? kiln_error_message(e) : "");
                goto out;
        }
        ok = 0;
out:
        kiln_error_free(e);
        kiln_solver_cache_close(c);
        rm_tmpdir(dir);
        return ok;
}

TEST(cache_open_bad_path)
{
        struct kiln_error *e = NULL;
        struct kiln_solver_cache *c = NULL;
        int r = kiln_solver_cache_open("/nonexistent-kiln-dir/meta.db", &c, &e);
        ASSERT_TRUE(r < 0);
        ASSERT_TRUE(e && strstr(kiln_error_message(e), "'/nonexistent-kiln-dir/meta.db'"));
        kiln_error_free(e);
        return 0;
}
