#include "mw_shadow_store.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "mw_log.h"

#define SCHEMA_VERSION 1

enum { Q_LOAD, Q_SAVE, Q_REMOVE, Q_BEGIN, Q_COMMIT, Q_ROLLBACK, Q_PRUNE, Q_LIST, Q_COUNT };

static const char *const sql_text[Q_COUNT] = {
  [Q_LOAD] = "SELECT version, document, updated_at, deleted_at FROM shadow WHERE thing = ?1 AND shadow = ?2",
  [Q_SAVE] = "INSERT INTO shadow (thing, shadow, version, document, updated_at, deleted_at) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
             "ON CONFLICT (thing, shadow) DO UPDATE SET version = excluded.version, "
             "document = excluded.document, updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
  [Q_REMOVE] = "DELETE FROM shadow WHERE thing = ?1 AND shadow = ?2",
  [Q_BEGIN] = "BEGIN IMMEDIATE",
  [Q_COMMIT] = "COMMIT",
  [Q_ROLLBACK] = "ROLLBACK",
  [Q_PRUNE] = "DELETE FROM shadow WHERE document IS NULL AND deleted_at < ?1",
  [Q_LIST] = "SELECT shadow FROM shadow WHERE thing = ?1 AND shadow <> '' AND document IS NOT NULL ORDER BY shadow",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS shadow ("
    " thing TEXT NOT NULL,"
    " shadow TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " document TEXT,"
    " updated_at INTEGER NOT NULL,"
    " deleted_at INTEGER,"
    " PRIMARY KEY (thing, shadow)) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

struct mw_shadow_store {
  sqlite3 *db;
  sqlite3_stmt *q[Q_COUNT];
};

static mw_status_t db_error(mw_shadow_store_t *st, const char *what) {
  MW_LOGE("shadow", "sqlite %s: %s", what, sqlite3_errmsg(st->db));
  return MW_ERR_IO;
}

/* Runs a statement that returns no rows (after binding); resets it. */
static mw_status_t run(mw_shadow_store_t *st, int which) {
  sqlite3_stmt *s = st->q[which];
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (rc != SQLITE_DONE) return db_error(st, sql_text[which]);
  return MW_OK;
}

static int pragma_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *s;
  int v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) return -1;
  if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int(s, 0);
  sqlite3_finalize(s);
  return v;
}

mw_status_t mw_shadow_store_open(const char *path, bool sync_full, mw_shadow_store_t **out) {
  *out = NULL;
  mw_shadow_store_t *st = calloc(1, sizeof *st);
  if (!st) return MW_ERR_NOMEM;
  int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    MW_LOGE("shadow", "cannot open %s: %s", path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    mw_shadow_store_close(st);
    return rc == SQLITE_NOMEM ? MW_ERR_NOMEM : MW_ERR_IO;
  }
  sqlite3_busy_timeout(st->db, 5000);
  int uv = pragma_int(st->db, "PRAGMA user_version");
  if (uv > SCHEMA_VERSION) {
    MW_LOGE("shadow", "%s has schema version %d, newer than this build (%d)", path, uv, SCHEMA_VERSION);
    mw_shadow_store_close(st);
    return MW_ERR_IO;
  }
  char *msg = NULL;
  const char *sync = sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
  if (sqlite3_exec(st->db, "PRAGMA journal_mode = WAL", NULL, NULL, &msg) != SQLITE_OK ||
      sqlite3_exec(st->db, sync, NULL, NULL, &msg) != SQLITE_OK ||
      sqlite3_exec(st->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
    MW_LOGE("shadow", "cannot set up %s: %s", path, msg ? msg : "?");
    sqlite3_free(msg);
    mw_shadow_store_close(st);
    return MW_ERR_IO;
  }
  for (int i = 0; i < Q_COUNT; i++) {
    if (sqlite3_prepare_v3(st->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL) != SQLITE_OK) {
      db_error(st, sql_text[i]);
      mw_shadow_store_close(st);
      return MW_ERR_IO;
    }
  }
  *out = st;
  return MW_OK;
}

void mw_shadow_store_close(mw_shadow_store_t *st) {
  if (!st) return;
  for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->q[i]);
  sqlite3_close(st->db);
  free(st);
}

static const char *or_empty(const char *s) {
  return s ? s : "";
}

mw_status_t mw_shadow_store_load(mw_shadow_store_t *st, const char *thing, const char *shadow, mw_shadow_doc_t *doc) {
  sqlite3_stmt *s = st->q[Q_LOAD];
  mw_shadow_doc_init(doc);
  sqlite3_bind_text(s, 1, thing, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, or_empty(shadow), -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  mw_status_t res = MW_OK;
  if (rc == SQLITE_DONE) {
    res = MW_ERR_NOT_FOUND;
  } else if (rc != SQLITE_ROW) {
    res = db_error(st, "load");
  } else if (sqlite3_column_type(s, 1) == SQLITE_NULL) {
    doc->version = sqlite3_column_int64(s, 0);
    doc->timestamp = sqlite3_column_int64(s, 2);
    doc->deleted_at = sqlite3_column_int64(s, 3);
    doc->exists = false;
  } else {
    const void *text = sqlite3_column_text(s, 1);
    int n = sqlite3_column_bytes(s, 1);
    res = mw_shadow_doc_deserialize(text, (size_t)n, doc);
    if (res == MW_OK) {
      doc->version = sqlite3_column_int64(s, 0); /* the column is authoritative */
      doc->timestamp = sqlite3_column_int64(s, 2);
    } else {
      MW_LOGE("shadow", "stored document of %s/%s is unreadable", thing, or_empty(shadow));
      if (res != MW_ERR_NOMEM) res = MW_ERR_IO;
    }
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return res;
}

mw_status_t mw_shadow_store_save(mw_shadow_store_t *st, const char *thing, const char *shadow,
                                 const mw_shadow_doc_t *doc) {
  sqlite3_stmt *s = st->q[Q_SAVE];
  char *json = NULL;
  if (doc->exists && !(json = mw_shadow_doc_serialize(doc))) return MW_ERR_NOMEM;
  sqlite3_bind_text(s, 1, thing, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, or_empty(shadow), -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 3, doc->version);
  if (json) sqlite3_bind_text(s, 4, json, -1, SQLITE_STATIC);
  else sqlite3_bind_null(s, 4);
  sqlite3_bind_int64(s, 5, doc->timestamp);
  if (doc->exists) sqlite3_bind_null(s, 6);
  else sqlite3_bind_int64(s, 6, doc->deleted_at);
  mw_status_t res = run(st, Q_SAVE);
  free(json);
  return res;
}

mw_status_t mw_shadow_store_remove(mw_shadow_store_t *st, const char *thing, const char *shadow) {
  sqlite3_bind_text(st->q[Q_REMOVE], 1, thing, -1, SQLITE_STATIC);
  sqlite3_bind_text(st->q[Q_REMOVE], 2, or_empty(shadow), -1, SQLITE_STATIC);
  return run(st, Q_REMOVE);
}

mw_status_t mw_shadow_store_begin(mw_shadow_store_t *st) {
  return run(st, Q_BEGIN);
}

mw_status_t mw_shadow_store_commit(mw_shadow_store_t *st) {
  return run(st, Q_COMMIT);
}

void mw_shadow_store_rollback(mw_shadow_store_t *st) {
  if (!sqlite3_get_autocommit(st->db)) run(st, Q_ROLLBACK);
}

mw_status_t mw_shadow_store_prune(mw_shadow_store_t *st, int64_t before_s, int *removed) {
  sqlite3_bind_int64(st->q[Q_PRUNE], 1, before_s);
  mw_status_t res = run(st, Q_PRUNE);
  if (removed) *removed = res == MW_OK ? sqlite3_changes(st->db) : 0;
  return res;
}

mw_status_t mw_shadow_store_list(mw_shadow_store_t *st, const char *thing, mw_shadow_store_list_fn fn, void *ud) {
  sqlite3_stmt *s = st->q[Q_LIST];
  sqlite3_bind_text(s, 1, thing, -1, SQLITE_STATIC);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW)
    if (!fn(ud, (const char *)sqlite3_column_text(s, 0))) break;
  mw_status_t res = rc == SQLITE_ROW || rc == SQLITE_DONE ? MW_OK : db_error(st, "list");
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return res;
}
