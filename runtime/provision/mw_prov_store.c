#include "mw_prov_store.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "mw_log.h"

#define SCHEMA_VERSION 1

enum {
  Q_BEGIN, Q_COMMIT, Q_ROLLBACK,
  Q_ADD_CERT, Q_GET_CERT, Q_CN_USED, Q_SET_CERT,
  Q_ADD_TOKEN, Q_GET_TOKEN, Q_USE_TOKEN,
  Q_GET_THING, Q_PUT_THING,
  Q_PRUNE_CERTS, Q_PRUNE_TOKENS, Q_LIST,
  Q_COUNT
};

static const char *const sql_text[Q_COUNT] = {
  [Q_BEGIN] = "BEGIN IMMEDIATE",
  [Q_COMMIT] = "COMMIT",
  [Q_ROLLBACK] = "ROLLBACK",
  [Q_ADD_CERT] = "INSERT INTO certificate (id, cn, pem, status, thing, source, created_at, registered_at) "
                 "VALUES (?1, ?2, ?3, 'PENDING_ACTIVATION', '', ?4, ?5, 0)",
  [Q_GET_CERT] = "SELECT id, cn, status, thing, source, created_at, registered_at FROM certificate WHERE id = ?1",
  [Q_CN_USED] = "SELECT 1 FROM certificate WHERE cn = ?1 LIMIT 1",
  [Q_SET_CERT] = "UPDATE certificate SET status = ?2, thing = ?3, registered_at = ?4 WHERE id = ?1",
  [Q_ADD_TOKEN] = "INSERT INTO token (hash, cert_id, expires_at, used_at) VALUES (?1, ?2, ?3, 0)",
  [Q_GET_TOKEN] = "SELECT cert_id, expires_at, used_at FROM token WHERE hash = ?1",
  [Q_USE_TOKEN] = "UPDATE token SET used_at = ?2 WHERE hash = ?1",
  [Q_GET_THING] = "SELECT name, attributes, groups, thing_type, billing_group, policies, template, created_at, "
                  "updated_at FROM thing WHERE name = ?1",
  [Q_PUT_THING] = "INSERT INTO thing (name, attributes, groups, thing_type, billing_group, policies, template, "
                  "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) "
                  "ON CONFLICT (name) DO UPDATE SET attributes = excluded.attributes, groups = excluded.groups, "
                  "thing_type = excluded.thing_type, billing_group = excluded.billing_group, "
                  "policies = excluded.policies, template = excluded.template, updated_at = excluded.updated_at",
  [Q_PRUNE_CERTS] = "DELETE FROM certificate WHERE status = 'PENDING_ACTIVATION' AND created_at < ?1",
  [Q_PRUNE_TOKENS] = "DELETE FROM token WHERE expires_at < ?1 OR cert_id NOT IN (SELECT id FROM certificate)",
  [Q_LIST] = "SELECT id, cn, status, thing, source, created_at, registered_at FROM certificate "
             "ORDER BY thing, created_at",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS certificate ("
    " id TEXT PRIMARY KEY, cn TEXT NOT NULL, pem TEXT NOT NULL, status TEXT NOT NULL,"
    " thing TEXT NOT NULL, source TEXT NOT NULL, created_at INTEGER NOT NULL, registered_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS certificate_cn ON certificate (cn);"
    "CREATE TABLE IF NOT EXISTS token ("
    " hash TEXT PRIMARY KEY, cert_id TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS thing ("
    " name TEXT PRIMARY KEY, attributes TEXT NOT NULL, groups TEXT NOT NULL, thing_type TEXT NOT NULL,"
    " billing_group TEXT NOT NULL, policies TEXT NOT NULL, template TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "PRAGMA user_version = 1;";

struct mw_prov_store {
  sqlite3 *db;
  sqlite3_stmt *q[Q_COUNT];
};

static mw_status_t db_error(mw_prov_store_t *st, const char *what) {
  MW_LOGE("provision", "sqlite %s: %s", what, sqlite3_errmsg(st->db));
  return MW_ERR_IO;
}

static sqlite3_stmt *stmt(mw_prov_store_t *st, int which) {
  return st->q[which];
}

static void done(sqlite3_stmt *s) {
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

static mw_status_t run(mw_prov_store_t *st, int which) {
  sqlite3_stmt *s = st->q[which];
  int rc = sqlite3_step(s);
  done(s);
  if (rc != SQLITE_DONE) return db_error(st, sql_text[which]);
  return MW_OK;
}

mw_status_t mw_prov_store_open(const char *path, mw_prov_store_t **out) {
  *out = NULL;
  mw_prov_store_t *st = calloc(1, sizeof *st);
  if (!st) return MW_ERR_NOMEM;
  int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    MW_LOGE("provision", "cannot open %s: %s", path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    mw_prov_store_close(st);
    return MW_ERR_IO;
  }
  sqlite3_busy_timeout(st->db, 5000);
  sqlite3_stmt *s;
  int uv = 0;
  if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW) uv = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
  }
  if (uv > SCHEMA_VERSION) {
    MW_LOGE("provision", "%s has schema version %d, newer than this build (%d)", path, uv, SCHEMA_VERSION);
    mw_prov_store_close(st);
    return MW_ERR_IO;
  }
  char *msg = NULL;
  /* FULL: a certificate handed to a device must never be forgotten by a power cut. */
  if (sqlite3_exec(st->db, "PRAGMA journal_mode = WAL", NULL, NULL, &msg) != SQLITE_OK ||
      sqlite3_exec(st->db, "PRAGMA synchronous = FULL", NULL, NULL, &msg) != SQLITE_OK ||
      sqlite3_exec(st->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
    MW_LOGE("provision", "cannot set up %s: %s", path, msg ? msg : "?");
    sqlite3_free(msg);
    mw_prov_store_close(st);
    return MW_ERR_IO;
  }
  for (int i = 0; i < Q_COUNT; i++) {
    if (sqlite3_prepare_v3(st->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL) != SQLITE_OK) {
      db_error(st, sql_text[i]);
      mw_prov_store_close(st);
      return MW_ERR_IO;
    }
  }
  *out = st;
  return MW_OK;
}

void mw_prov_store_close(mw_prov_store_t *st) {
  if (!st) return;
  for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->q[i]);
  sqlite3_close(st->db);
  free(st);
}

mw_status_t mw_prov_store_begin(mw_prov_store_t *st) { return run(st, Q_BEGIN); }
mw_status_t mw_prov_store_commit(mw_prov_store_t *st) { return run(st, Q_COMMIT); }
void mw_prov_store_rollback(mw_prov_store_t *st) {
  if (!sqlite3_get_autocommit(st->db)) run(st, Q_ROLLBACK);
}

static void copy_col(sqlite3_stmt *s, int col, char *dst, size_t cap) {
  const unsigned char *t = sqlite3_column_text(s, col);
  snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

mw_status_t mw_prov_store_add_cert(mw_prov_store_t *st, const char *id, const char *cn, const char *pem,
                                   const char *source, int64_t now) {
  sqlite3_stmt *s = stmt(st, Q_ADD_CERT);
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, cn, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, pem, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 4, source, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 5, now);
  return run(st, Q_ADD_CERT);
}

static void cert_row(sqlite3_stmt *s, mw_prov_cert_row_t *row) {
  memset(row, 0, sizeof *row);
  copy_col(s, 0, row->id, sizeof row->id);
  copy_col(s, 1, row->cn, sizeof row->cn);
  copy_col(s, 2, row->status, sizeof row->status);
  copy_col(s, 3, row->thing, sizeof row->thing);
  copy_col(s, 4, row->source, sizeof row->source);
  row->created_at = sqlite3_column_int64(s, 5);
  row->registered_at = sqlite3_column_int64(s, 6);
}

mw_status_t mw_prov_store_get_cert(mw_prov_store_t *st, const char *id, mw_prov_cert_row_t *row) {
  sqlite3_stmt *s = stmt(st, Q_GET_CERT);
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  mw_status_t r = MW_OK;
  if (rc == SQLITE_ROW) cert_row(s, row);
  else if (rc == SQLITE_DONE) r = MW_ERR_NOT_FOUND;
  else r = db_error(st, sql_text[Q_GET_CERT]);
  done(s);
  return r;
}

mw_status_t mw_prov_store_cn_used(mw_prov_store_t *st, const char *cn, bool *used) {
  sqlite3_stmt *s = stmt(st, Q_CN_USED);
  sqlite3_bind_text(s, 1, cn, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  *used = rc == SQLITE_ROW;
  done(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? MW_OK : db_error(st, sql_text[Q_CN_USED]);
}

mw_status_t mw_prov_store_set_cert(mw_prov_store_t *st, const char *id, const char *status, const char *thing,
                                   int64_t now) {
  sqlite3_stmt *s = stmt(st, Q_SET_CERT);
  sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, status, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, thing, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 4, now);
  return run(st, Q_SET_CERT);
}

mw_status_t mw_prov_store_add_token(mw_prov_store_t *st, const char *hash, const char *cert_id, int64_t expires_at) {
  sqlite3_stmt *s = stmt(st, Q_ADD_TOKEN);
  sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, cert_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 3, expires_at);
  return run(st, Q_ADD_TOKEN);
}

mw_status_t mw_prov_store_get_token(mw_prov_store_t *st, const char *hash, mw_prov_token_row_t *row) {
  sqlite3_stmt *s = stmt(st, Q_GET_TOKEN);
  sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  mw_status_t r = MW_OK;
  memset(row, 0, sizeof *row);
  if (rc == SQLITE_ROW) {
    copy_col(s, 0, row->cert_id, sizeof row->cert_id);
    row->expires_at = sqlite3_column_int64(s, 1);
    row->used_at = sqlite3_column_int64(s, 2);
  } else if (rc == SQLITE_DONE) {
    r = MW_ERR_NOT_FOUND;
  } else {
    r = db_error(st, sql_text[Q_GET_TOKEN]);
  }
  done(s);
  return r;
}

mw_status_t mw_prov_store_use_token(mw_prov_store_t *st, const char *hash, int64_t now) {
  sqlite3_stmt *s = stmt(st, Q_USE_TOKEN);
  sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, now);
  return run(st, Q_USE_TOKEN);
}

void mw_prov_thing_row_free(mw_prov_thing_row_t *row) {
  cJSON_Delete(row->attributes);
  cJSON_Delete(row->groups);
  cJSON_Delete(row->policies);
  row->attributes = row->groups = row->policies = NULL;
}

static cJSON *json_col(sqlite3_stmt *s, int col, int array) {
  const unsigned char *t = sqlite3_column_text(s, col);
  cJSON *v = t ? cJSON_Parse((const char *)t) : NULL;
  if (!v || (array ? !cJSON_IsArray(v) : !cJSON_IsObject(v))) {
    cJSON_Delete(v);
    v = array ? cJSON_CreateArray() : cJSON_CreateObject();
  }
  return v;
}

mw_status_t mw_prov_store_get_thing(mw_prov_store_t *st, const char *name, mw_prov_thing_row_t *row) {
  sqlite3_stmt *s = stmt(st, Q_GET_THING);
  sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  mw_status_t r = MW_OK;
  memset(row, 0, sizeof *row);
  if (rc == SQLITE_ROW) {
    copy_col(s, 0, row->name, sizeof row->name);
    row->attributes = json_col(s, 1, 0);
    row->groups = json_col(s, 2, 1);
    copy_col(s, 3, row->thing_type, sizeof row->thing_type);
    copy_col(s, 4, row->billing_group, sizeof row->billing_group);
    row->policies = json_col(s, 5, 1);
    copy_col(s, 6, row->template_name, sizeof row->template_name);
    row->created_at = sqlite3_column_int64(s, 7);
    row->updated_at = sqlite3_column_int64(s, 8);
    if (!row->attributes || !row->groups || !row->policies) {
      mw_prov_thing_row_free(row);
      r = MW_ERR_NOMEM;
    }
  } else if (rc == SQLITE_DONE) {
    r = MW_ERR_NOT_FOUND;
  } else {
    r = db_error(st, sql_text[Q_GET_THING]);
  }
  done(s);
  return r;
}

mw_status_t mw_prov_store_put_thing(mw_prov_store_t *st, const mw_prov_thing_row_t *row, int64_t now) {
  char *attrs = cJSON_PrintUnformatted(row->attributes);
  char *groups = cJSON_PrintUnformatted(row->groups);
  char *pols = cJSON_PrintUnformatted(row->policies);
  mw_status_t r = MW_ERR_NOMEM;
  if (attrs && groups && pols) {
    sqlite3_stmt *s = stmt(st, Q_PUT_THING);
    sqlite3_bind_text(s, 1, row->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, attrs, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, groups, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, row->thing_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, row->billing_group, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, pols, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, row->template_name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, now);
    r = run(st, Q_PUT_THING);
  }
  free(attrs);
  free(groups);
  free(pols);
  return r;
}

mw_status_t mw_prov_store_prune(mw_prov_store_t *st, int64_t before, int *removed) {
  sqlite3_stmt *s = stmt(st, Q_PRUNE_CERTS);
  sqlite3_bind_int64(s, 1, before);
  mw_status_t r = run(st, Q_PRUNE_CERTS);
  if (removed) *removed = r == MW_OK ? sqlite3_changes(st->db) : 0;
  if (r != MW_OK) return r;
  s = stmt(st, Q_PRUNE_TOKENS);
  sqlite3_bind_int64(s, 1, before);
  return run(st, Q_PRUNE_TOKENS);
}

mw_status_t mw_prov_store_list(mw_prov_store_t *st, mw_prov_list_fn fn, void *ud) {
  sqlite3_stmt *s = stmt(st, Q_LIST);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    mw_prov_cert_row_t row;
    cert_row(s, &row);
    fn(ud, &row);
  }
  done(s);
  return rc == SQLITE_DONE ? MW_OK : db_error(st, sql_text[Q_LIST]);
}
