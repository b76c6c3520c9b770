/* SPDX-License-Identifier: Apache-2.0 */
#include "solver/cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "base/fs.h"
#include "base/log.h"
#include "base/macro.h"
#include "solver-internal.h"
#include "solver/solver.h"

/* Cache mount directories listed at most (the rest are not shown). */
#define KILN_SOLVER_LIMIT_CACHEMOUNTS 100000u
/* The prefix of a cache mount directory being removed. */
#define CACHEMOUNT_REMOVING_PREFIX ".removing-"

enum {
        STMT_LOOKUP,
        STMT_INSERT,
        STMT_TOUCH,
        STMT_REMOVE,
        STMT_FOREACH,
        STMT_REMOVE_SNAPSHOT,
        _STMT_MAX,
};

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_LOOKUP] = "SELECT snapshot_id, kind, description, created, last_used, size, "
                        "usage_count FROM records WHERE key = ?1 AND output = ?2",
        [STMT_INSERT] = "INSERT OR REPLACE INTO records (key, output, snapshot_id, kind, "
                        "description, created, last_used, size, usage_count) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)",
        [STMT_TOUCH] = "UPDATE records SET last_used = ?2, usage_count = usage_count + 1 "
                       "WHERE key = ?1",
        [STMT_REMOVE] = "DELETE FROM records WHERE key = ?1 AND output = ?2",
        [STMT_FOREACH] = "SELECT key, output, snapshot_id, kind, description, created, "
                         "last_used, size, usage_count FROM records "
                         "ORDER BY last_used, key, output",
        [STMT_REMOVE_SNAPSHOT] = "DELETE FROM records WHERE snapshot_id = ?1",
};

struct kiln_solver_cache {
        /* Guards db and every prepared statement: one connection, used by
         * one thread at a time. */
        pthread_mutex_t lock;
        sqlite3 *db;
        sqlite3_stmt *stmts[_STMT_MAX];
        char *path;
};

static int64_t now_seconds(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec;
}

static int db_error(struct kiln_solver_cache *c, struct kiln_error **err, const char *what)
{
        int code = sqlite3_extended_errcode(c->db);
        int r = (code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED ? -EBUSY
                : (code & 0xff) == SQLITE_FULL                                 ? -ENOSPC
                : (code & 0xff) == SQLITE_NOMEM                                ? -ENOMEM
                                                                               : -EIO;
        return kiln_error_set(err, r, "%s cache '%s': %s", what, c->path, sqlite3_errmsg(c->db));
}

static int exec_sql(struct kiln_solver_cache *c, const char *sql, struct kiln_error **err)
{
        char *msg = NULL;
        if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                int r = kiln_error_set(err, -EIO, "open cache '%s': %s", c->path,
                                       msg ? msg : sqlite3_errmsg(c->db));
                sqlite3_free(msg);
                return r;
        }
        return 0;
}

static int schema_version(struct kiln_solver_cache *c, int *ret, struct kiln_error **err)
{
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(c->db, "SELECT version FROM schema_version", -1, &st, NULL) !=
            SQLITE_OK)
                return db_error(c, err, "open");
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int(st, 0);
        else if (rc == SQLITE_DONE)
                *ret = 0;
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return db_error(c, err, "open");
        return 0;
}

static int migrate(struct kiln_solver_cache *c, struct kiln_error **err)
{
        int r = exec_sql(c,
                         "BEGIN IMMEDIATE;"
                         "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
                         "CREATE TABLE IF NOT EXISTS records ("
                         " key TEXT NOT NULL,"
                         " output INTEGER NOT NULL,"
                         " snapshot_id TEXT,"
                         " kind TEXT NOT NULL,"
                         " description TEXT NOT NULL DEFAULT '',"
                         " created INTEGER NOT NULL,"
                         " last_used INTEGER NOT NULL,"
                         " size INTEGER NOT NULL DEFAULT -1,"
                         " usage_count INTEGER NOT NULL DEFAULT 1,"
                         " PRIMARY KEY (key, output));"
                         "CREATE INDEX IF NOT EXISTS records_snapshot ON records (snapshot_id);",
                         err);
        if (r < 0)
                return r;
        int v = 0;
        r = schema_version(c, &v, err);
        if (r >= 0 && v > KILN_SOLVER_CACHE_SCHEMA_VERSION)
                r = kiln_error_set(err, -EPROTO,
                                   "open cache '%s': schema version %d is newer than %d", c->path,
                                   v, KILN_SOLVER_CACHE_SCHEMA_VERSION);
        if (r >= 0 && v == 0)
                r = exec_sql(c, "INSERT INTO schema_version (version) VALUES (2);", err);
        /* 1 -> 2: records count their uses (du's usage count). */
        if (r >= 0 && v == 1)
                r = exec_sql(c,
                             "ALTER TABLE records ADD COLUMN usage_count INTEGER NOT NULL "
                             "DEFAULT 1;"
                             "UPDATE schema_version SET version = 2;",
                             err);
        if (r < 0) {
                (void) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
                return r;
        }
        return exec_sql(c, "COMMIT;", err);
}

int kiln_solver_cache_open(const char *path, struct kiln_solver_cache **ret,
                           struct kiln_error **err)
{
        struct kiln_solver_cache *c = kiln_xcalloc(1, sizeof(*c));
        pthread_mutex_init(&c->lock, NULL);
        c->path = kiln_xstrdup(path);
        int r;

        if (sqlite3_open_v2(path, &c->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                    SQLITE_OPEN_EXRESCODE,
                            NULL) != SQLITE_OK) {
                r = c->db ? db_error(c, err, "open")
                          : kiln_error_set(err, -ENOMEM, "open cache '%s': out of memory", path);
                goto fail;
        }
        sqlite3_busy_timeout(c->db, KILN_SOLVER_CACHE_BUSY_TIMEOUT_MS);
        r = exec_sql(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err);
        if (r < 0)
                goto fail;
        r = migrate(c, err);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < _STMT_MAX; i++)
                if (sqlite3_prepare_v3(c->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                       &c->stmts[i], NULL) != SQLITE_OK) {
                        r = db_error(c, err, "open");
                        goto fail;
                }
        *ret = c;
        return 0;
fail:
        kiln_solver_cache_close(c);
        return r;
}

struct kiln_solver_cache *kiln_solver_cache_close(struct kiln_solver_cache *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(c->stmts[i]);
        if (c->db)
                sqlite3_close(c->db);
        pthread_mutex_destroy(&c->lock);
        free(c->path);
        free(c);
        return NULL;
}

static char *column_strdup(sqlite3_stmt *st, int i)
{
        const unsigned char *s = sqlite3_column_text(st, i);
        return s ? kiln_xstrdup((const char *) s) : NULL;
}

static void record_from_row(sqlite3_stmt *st, int first, struct kiln_solver_cache_record *r)
{
        r->snapshot_id = column_strdup(st, first);
        r->kind = column_strdup(st, first + 1);
        r->description = column_strdup(st, first + 2);
        r->created = sqlite3_column_int64(st, first + 3);
        r->last_used = sqlite3_column_int64(st, first + 4);
        r->size = sqlite3_column_int64(st, first + 5);
        r->usage_count = sqlite3_column_int64(st, first + 6);
}

int kiln_solver_cache_lookup(struct kiln_solver_cache *c, const char *key, uint32_t output,
                             struct kiln_solver_cache_record *ret, struct kiln_error **err)
{
        pthread_mutex_lock(&c->lock);
        sqlite3_stmt *st = c->stmts[STMT_LOOKUP];
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, output);
        int r, rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret = (struct kiln_solver_cache_record){ 0 };
                ret->key = kiln_xstrdup(key);
                ret->output = output;
                record_from_row(st, 0, ret);
                r = 1;
        } else if (rc == SQLITE_DONE)
                r = 0;
        else
                r = db_error(c, err, "read");
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* Runs the write statement st (bound, c->lock held) and readies it for its
 * next use: 1 when it changed a row, 0 when none, < 0 an error. */
static int stmt_write(struct kiln_solver_cache *c, sqlite3_stmt *st, struct kiln_error **err)
{
        int r = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(c->db) > 0
                                                : db_error(c, err, "write");
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return r;
}

int kiln_solver_cache_insert(struct kiln_solver_cache *c, const struct kiln_solver_cache_record *r,
                             struct kiln_error **err)
{
        int64_t now = now_seconds();
        const char *desc = r->description ? r->description : "";
        size_t dlen = strnlen(desc, KILN_SOLVER_CACHE_DESCRIPTION_MAX);

        pthread_mutex_lock(&c->lock);
        sqlite3_stmt *st = c->stmts[STMT_INSERT];
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, r->output);
        if (r->snapshot_id)
                sqlite3_bind_text(st, 3, r->snapshot_id, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, 3);
        sqlite3_bind_text(st, 4, r->kind ? r->kind : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, desc, (int) dlen, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, r->created ? r->created : now);
        sqlite3_bind_int64(st, 7, r->last_used ? r->last_used : now);
        sqlite3_bind_int64(st, 8, r->size);
        int ret = stmt_write(c, st, err);
        pthread_mutex_unlock(&c->lock);
        return ret < 0 ? ret : 0;
}

int kiln_solver_cache_touch(struct kiln_solver_cache *c, const char *key, struct kiln_error **err)
{
        pthread_mutex_lock(&c->lock);
        sqlite3_stmt *st = c->stmts[STMT_TOUCH];
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now_seconds());
        int r = stmt_write(c, st, err);
        pthread_mutex_unlock(&c->lock);
        return r;
}

int kiln_solver_cache_remove(struct kiln_solver_cache *c, const char *key, uint32_t output,
                             struct kiln_error **err)
{
        pthread_mutex_lock(&c->lock);
        sqlite3_stmt *st = c->stmts[STMT_REMOVE];
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, output);
        int r = stmt_write(c, st, err);
        pthread_mutex_unlock(&c->lock);
        return r;
}

int kiln_solver_cache_remove_snapshot(struct kiln_solver_cache *c, const char *snapshot_id,
                                      struct kiln_error **err)
{
        pthread_mutex_lock(&c->lock);
        sqlite3_stmt *st = c->stmts[STMT_REMOVE_SNAPSHOT];
        sqlite3_bind_text(st, 1, snapshot_id, -1, SQLITE_STATIC);
        int r = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(c->db)
                                                : db_error(c, err, "write");
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        pthread_mutex_unlock(&c->lock);
        return r;
}

int kiln_solver_cache_foreach(struct kiln_solver_cache *c,
                              int (*fn)(void *ud, const struct kiln_solver_cache_record *r),
                              void *ud, struct kiln_error **err)
{
        pthread_mutex_lock(&c->lock);
        sqlite3_stmt *st = c->stmts[STMT_FOREACH];
        int r = 0, rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct kiln_solver_cache_record rec = { 0 };
                rec.key = column_strdup(st, 0);
                rec.output = (uint32_t) sqlite3_column_int64(st, 1);
                record_from_row(st, 2, &rec);
                r = fn(ud, &rec);
                kiln_solver_cache_record_release(&rec);
                if (r != 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = db_error(c, err, "read");
        sqlite3_reset(st);
        pthread_mutex_unlock(&c->lock);
        return r;
}

void kiln_solver_cache_record_release(struct kiln_solver_cache_record *r)
{
        if (!r)
                return;
        free(r->key);
        free(r->snapshot_id);
        free(r->kind);
        free(r->description);
        *r = (struct kiln_solver_cache_record){ 0 };
}

/* ---- disk usage and pruning (solver.h) ---- */

struct kiln_solver_cache *kiln_solver_cache_of(struct kiln_solver *s)
{
        return s->cache;
}

void kiln_solver_cachemount_info_release(struct kiln_solver_cachemount_info *i)
{
        if (!i)
                return;
        free(i->name);
        free(i->path);
        *i = (struct kiln_solver_cachemount_info){ 0 };
}

/* Under s->lock. */
static bool cachemount_busy(struct kiln_solver *s, const char *path)
{
        for (struct kiln_solver_cachemount *m = s->cachemounts; m; m = m->next)
                if (streq(m->path, path))
                        return m->users > 0;
        return false;
}

static void cachemount_removing_cleanup(struct kiln_solver *s, const char *name)
{
        _cleanup_free_ char *p = kiln_xasprintf("%s/%s", s->cachemount_dir, name);
        struct kiln_error *e = NULL;

        if (kiln_rm_rf_at(AT_FDCWD, p, NULL, &e) < 0)
                log_debug("%s", kiln_error_message(e));
        kiln_error_free(e);
}

int kiln_solver_cachemounts_list(struct kiln_solver *s, struct kiln_solver_cachemount_info **ret,
                                 size_t *n_ret, struct kiln_error **err)
{
        struct kiln_solver_cachemount_info *v = NULL;
        size_t n = 0;
        struct dirent *de;
        DIR *dir;

        *ret = NULL;
        *n_ret = 0;
        dir = opendir(s->cachemount_dir);
        if (!dir) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_set(err, -errno, "list '%s': %s", s->cachemount_dir,
                                      strerror(errno));
        }
        while ((de = readdir(dir)) && n < KILN_SOLVER_LIMIT_CACHEMOUNTS) {
                if (de->d_name[0] == '.') {
                        /* what an interrupted removal of an earlier process
                         * left (ours are removed by whoever renamed them) */
                        if (startswith(de->d_name, CACHEMOUNT_REMOVING_PREFIX) &&
                            !kiln_tmp_name_is_ours(de->d_name))
                                cachemount_removing_cleanup(s, de->d_name);
                        continue;
                }
                if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                v = kiln_xreallocarray(v, n + 1, sizeof(*v));
                v[n].name = kiln_xstrdup(de->d_name);
                v[n].path = kiln_xasprintf("%s/%s", s->cachemount_dir, de->d_name);
                pthread_mutex_lock(&s->lock);
                v[n].in_use = cachemount_busy(s, v[n].path);
                pthread_mutex_unlock(&s->lock);
                n++;
        }
        closedir(dir);
        *ret = v;
        *n_ret = n;
        return 0;
}

int kiln_solver_cachemount_remove(struct kiln_solver *s, const char *name, struct kiln_error **err)
{
        _cleanup_free_ char *path = NULL, *tmp = NULL, *tmp_name = NULL;
        static atomic_uint counter;
        struct stat st;
        int r = 0;

        if (!name[0] || name[0] == '.' || strchr(name, '/'))
                return kiln_error_set(err, -EINVAL, "remove cache mount '%s': not a cache mount",
                                      name);
        path = kiln_xasprintf("%s/%s", s->cachemount_dir, name);
        tmp_name = kiln_xasprintf(CACHEMOUNT_REMOVING_PREFIX "%s-%ld-%u", name, (long) getpid(),
                                  atomic_fetch_add(&counter, 1));
        tmp = kiln_xasprintf("%s/%s", s->cachemount_dir, tmp_name);

        pthread_mutex_lock(&s->lock);
        if (cachemount_busy(s, path))
                r = kiln_error_set(err, -EBUSY, "remove cache mount '%s': in use", name);
        else if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
                r = kiln_error_set(err, -ENOENT, "remove cache mount '%s': not found", name);
        else if (rename(path, tmp) < 0)
                r = kiln_error_set(err, -errno, "remove cache mount '%s': rename: %s", name,
                                   strerror(errno));
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
                return r;
        return kiln_rm_rf_at(AT_FDCWD, tmp, NULL, err);
}
