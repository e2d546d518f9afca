#include "mw_outbox_store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"

#define COMP "outbox"
#define SCHEMA_VERSION 1
/* Long enough for `moonwire outbox retry` to finish its write, short enough not to stall the loop. */
#define BUSY_TIMEOUT_MS 2000

enum {
  Q_BEGIN, Q_COMMIT, Q_ROLLBACK, Q_PUT, Q_PUT_SEQ, Q_DELETE, Q_STRIKE, Q_BURY_COPY, Q_REQUEUE_COPY,
  Q_DEAD_DELETE, Q_OLDEST, Q_MARK_GET, Q_MARK_SET, Q_SCAN, Q_SCAN_DEAD, Q_GET, Q_COUNT_PENDING,
  Q_COUNT_DEAD, Q_DATA_VERSION, Q_OLDEST_MS, Q_MAX_SEQ, Q_NTH, Q_N
};

#define MSG_COLS "seq, topic, payload, qos, retain, created_ms, strikes, reason"

static const char *const sql_text[Q_N] = {
  [Q_BEGIN] = "BEGIN IMMEDIATE",
  [Q_COMMIT] = "COMMIT",
  [Q_ROLLBACK] = "ROLLBACK",
  [Q_PUT] = "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size, strikes, reason) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
  [Q_PUT_SEQ] = "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size, strikes, reason, seq) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
  [Q_DELETE] = "DELETE FROM outbox WHERE seq = ?1",
  [Q_STRIKE] = "UPDATE outbox SET strikes = ?2, reason = ?3 WHERE seq = ?1",
  [Q_BURY_COPY] = "INSERT OR REPLACE INTO dead_letter (id, topic, payload, qos, retain, created_ms, size, strikes, "
                  "reason, dead_ms) SELECT seq, topic, payload, qos, retain, created_ms, size, strikes, ?2, ?3 "
                  "FROM outbox WHERE seq = ?1",
  [Q_REQUEUE_COPY] = "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size, strikes, reason) "
                     "SELECT topic, payload, qos, retain, created_ms, size, 0, NULL FROM dead_letter WHERE id = ?1",
  [Q_DEAD_DELETE] = "DELETE FROM dead_letter WHERE id = ?1",
  [Q_OLDEST] = "SELECT seq, size FROM outbox ORDER BY seq LIMIT 1",
  [Q_MARK_GET] = "SELECT value FROM meta WHERE key = 'sent'",
  [Q_MARK_SET] = "INSERT OR REPLACE INTO meta (key, value) VALUES ('sent', ?1)",
  [Q_SCAN] = "SELECT " MSG_COLS " FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
  [Q_SCAN_DEAD] = "SELECT id, topic, payload, qos, retain, created_ms, strikes, reason, dead_ms FROM dead_letter "
                  "WHERE id > ?1 ORDER BY id LIMIT ?2",
  [Q_GET] = "SELECT " MSG_COLS " FROM outbox WHERE seq = ?1",
  [Q_COUNT_PENDING] = "SELECT count(*), coalesce(sum(size), 0), coalesce(min(created_ms), 0) FROM outbox",
  [Q_COUNT_DEAD] = "SELECT count(*), coalesce(sum(size), 0) FROM dead_letter",
  [Q_DATA_VERSION] = "PRAGMA data_version",
  [Q_OLDEST_MS] = "SELECT created_ms FROM outbox ORDER BY seq LIMIT 1",
  [Q_MAX_SEQ] = "SELECT coalesce(max(seq), 0) FROM outbox",
  [Q_NTH] = "SELECT seq FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS outbox ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " topic TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL,"
    " retain INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " size INTEGER NOT NULL,"
    " strikes INTEGER NOT NULL DEFAULT 0,"
    " reason TEXT);"
    "CREATE TABLE IF NOT EXISTS dead_letter ("
    " id INTEGER PRIMARY KEY,"
    " topic TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL,"
    " retain INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " size INTEGER NOT NULL,"
    " strikes INTEGER NOT NULL,"
    " reason TEXT,"
    " dead_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

struct mw_outbox_store {
  sqlite3 *db;
  sqlite3_stmt *q[Q_N];
  bool memory;
  bool in_batch;
  int64_t data_version;
};

static mw_status_t status_of(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_DONE:
  case SQLITE_ROW: return MW_OK;
  case SQLITE_FULL: return MW_ERR_NOSPACE;
  case SQLITE_BUSY:
  case SQLITE_LOCKED: return MW_ERR_BUSY;
  case SQLITE_NOMEM: return MW_ERR_NOMEM;
  case SQLITE_CONSTRAINT: return MW_ERR_CONFLICT;
  default: return MW_ERR_IO;
  }
}

static void finish(sqlite3_stmt *s) {
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

/* Steps a statement whose first row's first column is an integer; 0 when no row. Resets it. */
static int64_t scalar(sqlite3_stmt *s) {
  int64_t v = 0;
  if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
  finish(s);
  return v;
}

/* Runs a statement that returns no rows; resets it. */
static int run(mw_outbox_store_t *st, int which) {
  int rc = sqlite3_step(st->q[which]);
  finish(st->q[which]);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Every write runs inside the batch; the first write of a batch opens it. */
static int begin(mw_outbox_store_t *st) {
  if (st->in_batch) return SQLITE_OK;
  int rc = run(st, Q_BEGIN);
  if (rc == SQLITE_OK) st->in_batch = true;
  return rc;
}

const char *mw_outbox_store_errmsg(const mw_outbox_store_t *st) { return sqlite3_errmsg(st->db); }

bool mw_outbox_store_is_memory(const mw_outbox_store_t *st) { return st->memory; }

bool mw_outbox_store_in_batch(const mw_outbox_store_t *st) { return st->in_batch; }

mw_status_t mw_outbox_store_open(const char *path, mw_outbox_sync_t sync, mw_outbox_store_t **out, char *err,
                                 size_t errlen) {
  *out = NULL;
  mw_outbox_store_t *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return MW_ERR_NOMEM;
  }
  st->memory = strcmp(path, ":memory:") == 0;
  int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "cannot open the outbox %s: %s", path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    mw_outbox_store_close(st);
    return status_of(rc);
  }
  sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(st->db, 1);
  char pragmas[256];
  static const char *const sync_names[] = {"OFF", "NORMAL", "FULL"};
  /* WAL: readers (the outbox command) never block the runtime, and a commit is one
     sequential append, the cheapest durable write on flash. journal_size_limit trims the
     WAL file back after a burst instead of keeping its peak size on the card. */
  snprintf(pragmas, sizeof pragmas,
           st->memory ? "PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;"
                      : "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA journal_size_limit = 4194304;",
           sync_names[sync <= MW_OUTBOX_SYNC_FULL ? sync : MW_OUTBOX_SYNC_FULL]);
  char *msg = NULL;
  int uv = -1;
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW) uv = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
  }
  if (uv < 0) {
    snprintf(err, errlen, "%s is not an outbox database: %s", path, sqlite3_errmsg(st->db));
    mw_outbox_store_close(st);
    return MW_ERR_IO;
  }
  if (uv > SCHEMA_VERSION) {
    snprintf(err, errlen, "%s has outbox schema version %d, newer than this build (%d)", path, uv, SCHEMA_VERSION);
    mw_outbox_store_close(st);
    return MW_ERR_IO;
  }
  /* The schema is written only when missing: opening an existing outbox (the command line
     next to a running runtime) must not count as a change to it. */
  if (sqlite3_exec(st->db, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
      (uv < SCHEMA_VERSION && sqlite3_exec(st->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK)) {
    snprintf(err, errlen, "cannot set up the outbox %s: %s", path, msg ? msg : sqlite3_errmsg(st->db));
    sqlite3_free(msg);
    mw_outbox_store_close(st);
    return MW_ERR_IO;
  }
  for (int i = 0; i < Q_N; i++) {
    rc = sqlite3_prepare_v3(st->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL);
    if (rc != SQLITE_OK) {
      snprintf(err, errlen, "outbox %s: %s: %s", path, sql_text[i], sqlite3_errmsg(st->db));
      mw_outbox_store_close(st);
      return status_of(rc);
    }
  }
  (void)mw_outbox_store_changed(st); /* take the starting data_version */
  *out = st;
  return MW_OK;
}

void mw_outbox_store_close(mw_outbox_store_t *st) {
  if (!st) return;
  if (st->in_batch) {
    char err[160];
    if (mw_outbox_store_commit(st, err, sizeof err) != MW_OK) MW_LOGE(COMP, "%s", err);
  }
  for (int i = 0; i < Q_N; i++) sqlite3_finalize(st->q[i]);
  sqlite3_close(st->db);
  free(st);
}

mw_status_t mw_outbox_store_commit(mw_outbox_store_t *st, char *err, size_t errlen) {
  if (!st->in_batch) return MW_OK;
  int rc = run(st, Q_COMMIT);
  if (rc == SQLITE_OK) {
    st->in_batch = false;
    return MW_OK;
  }
  snprintf(err, errlen, "cannot commit the outbox: %s", sqlite3_errmsg(st->db));
  mw_outbox_store_rollback(st);
  return status_of(rc);
}

void mw_outbox_store_rollback(mw_outbox_store_t *st) {
  /* SQLite may already have rolled back by itself (disk full, I/O error). */
  if (!sqlite3_get_autocommit(st->db)) run(st, Q_ROLLBACK);
  st->in_batch = false;
}

static size_t msg_size(const mw_outbox_msg_t *m) { return strlen(m->topic) + m->len; }

mw_status_t mw_outbox_store_put(mw_outbox_store_t *st, const mw_outbox_msg_t *m, int64_t *seq, char *err,
                                size_t errlen) {
  int rc = begin(st);
  if (rc == SQLITE_OK) {
    sqlite3_stmt *s = st->q[*seq > 0 ? Q_PUT_SEQ : Q_PUT];
    sqlite3_bind_text(s, 1, m->topic, -1, SQLITE_STATIC);
    /* A NULL pointer would bind SQL NULL; an empty payload is an empty blob. */
    if (m->len) sqlite3_bind_blob64(s, 2, m->payload, m->len, SQLITE_STATIC);
    else sqlite3_bind_zeroblob(s, 2, 0);
    sqlite3_bind_int(s, 3, m->qos);
    sqlite3_bind_int(s, 4, m->retain);
    sqlite3_bind_int64(s, 5, m->created_ms);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)msg_size(m));
    sqlite3_bind_int(s, 7, m->strikes);
    if (m->reason) sqlite3_bind_text(s, 8, m->reason, -1, SQLITE_STATIC);
    if (*seq > 0) sqlite3_bind_int64(s, 9, *seq);
    rc = sqlite3_step(s);
    finish(s);
    if (rc == SQLITE_DONE) {
      if (*seq <= 0) *seq = sqlite3_last_insert_rowid(st->db);
      return MW_OK;
    }
    /* Disk full and I/O errors may roll back the whole transaction, not just this statement. */
    if (st->in_batch && sqlite3_get_autocommit(st->db)) st->in_batch = false;
  }
  snprintf(err, errlen, "cannot store the message: %s", sqlite3_errmsg(st->db));
  return status_of(rc);
}

/* Binds one int64 and runs; NOT_FOUND when no row changed. */
static mw_status_t write_one(mw_outbox_store_t *st, int which, int64_t key) {
  int rc = begin(st);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_bind_int64(st->q[which], 1, key);
  rc = run(st, which);
  if (rc != SQLITE_OK) return status_of(rc);
  return sqlite3_changes(st->db) > 0 ? MW_OK : MW_ERR_NOT_FOUND;
}

mw_status_t mw_outbox_store_delete(mw_outbox_store_t *st, int64_t seq) { return write_one(st, Q_DELETE, seq); }

mw_status_t mw_outbox_store_strike(mw_outbox_store_t *st, int64_t seq, int strikes, const char *reason) {
  int rc = begin(st);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_stmt *s = st->q[Q_STRIKE];
  sqlite3_bind_int64(s, 1, seq);
  sqlite3_bind_int(s, 2, strikes);
  if (reason) sqlite3_bind_text(s, 3, reason, -1, SQLITE_TRANSIENT);
  rc = run(st, Q_STRIKE);
  if (rc != SQLITE_OK) return status_of(rc);
  return sqlite3_changes(st->db) > 0 ? MW_OK : MW_ERR_NOT_FOUND;
}

mw_status_t mw_outbox_store_bury(mw_outbox_store_t *st, int64_t seq, const char *reason, int64_t now_ms) {
  int rc = begin(st);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_stmt *s = st->q[Q_BURY_COPY];
  sqlite3_bind_int64(s, 1, seq);
  sqlite3_bind_text(s, 2, reason ? reason : "", -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 3, now_ms);
  rc = run(st, Q_BURY_COPY);
  if (rc != SQLITE_OK) return status_of(rc);
  if (sqlite3_changes(st->db) == 0) return MW_ERR_NOT_FOUND;
  return write_one(st, Q_DELETE, seq);
}

mw_status_t mw_outbox_store_requeue(mw_outbox_store_t *st, int64_t id, int64_t *new_seq) {
  int rc = begin(st);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_bind_int64(st->q[Q_REQUEUE_COPY], 1, id);
  rc = run(st, Q_REQUEUE_COPY);
  if (rc != SQLITE_OK) return status_of(rc);
  if (sqlite3_changes(st->db) == 0) return MW_ERR_NOT_FOUND;
  if (new_seq) *new_seq = sqlite3_last_insert_rowid(st->db);
  return write_one(st, Q_DEAD_DELETE, id);
}

mw_status_t mw_outbox_store_drop_dead(mw_outbox_store_t *st, int64_t id) { return write_one(st, Q_DEAD_DELETE, id); }

mw_status_t mw_outbox_store_drop_oldest(mw_outbox_store_t *st, int64_t *seq, size_t *size) {
  int rc = begin(st);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_stmt *s = st->q[Q_OLDEST];
  rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) {
    finish(s);
    return rc == SQLITE_DONE ? MW_ERR_NOT_FOUND : status_of(rc);
  }
  *seq = sqlite3_column_int64(s, 0);
  *size = (size_t)sqlite3_column_int64(s, 1);
  finish(s);
  return write_one(st, Q_DELETE, *seq);
}

int64_t mw_outbox_store_sent_mark(mw_outbox_store_t *st) {
  sqlite3_stmt *s = st->q[Q_MARK_GET];
  return scalar(s);
}

mw_status_t mw_outbox_store_set_sent_mark(mw_outbox_store_t *st, int64_t mark) {
  int rc = begin(st);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_bind_int64(st->q[Q_MARK_SET], 1, mark);
  return status_of(run(st, Q_MARK_SET));
}

static void read_row(sqlite3_stmt *s, mw_outbox_msg_t *m, bool dead) {
  memset(m, 0, sizeof *m);
  m->seq = sqlite3_column_int64(s, 0);
  m->topic = (const char *)sqlite3_column_text(s, 1);
  m->payload = sqlite3_column_blob(s, 2);
  m->len = (size_t)sqlite3_column_bytes(s, 2);
  if (!m->payload) m->payload = "";
  if (!m->topic) m->topic = "";
  m->qos = sqlite3_column_int(s, 3);
  m->retain = sqlite3_column_int(s, 4) != 0;
  m->created_ms = sqlite3_column_int64(s, 5);
  m->strikes = sqlite3_column_int(s, 6);
  m->reason = (const char *)sqlite3_column_text(s, 7);
  if (dead) m->dead_ms = sqlite3_column_int64(s, 8);
}

static mw_status_t scan(mw_outbox_store_t *st, int which, int64_t after, int limit, mw_outbox_row_fn fn, void *ud) {
  sqlite3_stmt *s = st->q[which];
  sqlite3_bind_int64(s, 1, after);
  sqlite3_bind_int64(s, 2, limit > 0 ? limit : -1);
  int rc;
  mw_outbox_msg_t m;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    read_row(s, &m, which == Q_SCAN_DEAD);
    if (fn(ud, &m)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  finish(s);
  return rc == SQLITE_DONE ? MW_OK : status_of(rc);
}

mw_status_t mw_outbox_store_scan(mw_outbox_store_t *st, int64_t after, int limit, mw_outbox_row_fn fn, void *ud) {
  return scan(st, Q_SCAN, after, limit, fn, ud);
}

mw_status_t mw_outbox_store_scan_dead(mw_outbox_store_t *st, int64_t after, int limit, mw_outbox_row_fn fn,
                                      void *ud) {
  return scan(st, Q_SCAN_DEAD, after, limit, fn, ud);
}

mw_status_t mw_outbox_store_get(mw_outbox_store_t *st, int64_t seq, mw_outbox_row_fn fn, void *ud) {
  sqlite3_stmt *s = st->q[Q_GET];
  sqlite3_bind_int64(s, 1, seq);
  int rc = sqlite3_step(s);
  mw_status_t result = MW_ERR_NOT_FOUND;
  if (rc == SQLITE_ROW) {
    mw_outbox_msg_t m;
    read_row(s, &m, false);
    fn(ud, &m);
    result = MW_OK;
  } else if (rc != SQLITE_DONE) {
    result = status_of(rc);
  }
  finish(s);
  return result;
}

mw_status_t mw_outbox_store_counts(mw_outbox_store_t *st, mw_outbox_counts_t *c) {
  memset(c, 0, sizeof *c);
  sqlite3_stmt *s = st->q[Q_COUNT_PENDING];
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    c->pending = sqlite3_column_int64(s, 0);
    c->pending_bytes = sqlite3_column_int64(s, 1);
    c->oldest_ms = sqlite3_column_int64(s, 2);
  }
  finish(s);
  if (rc != SQLITE_ROW) return status_of(rc);
  s = st->q[Q_COUNT_DEAD];
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    c->dead = sqlite3_column_int64(s, 0);
    c->dead_bytes = sqlite3_column_int64(s, 1);
  }
  finish(s);
  return rc == SQLITE_ROW ? MW_OK : status_of(rc);
}

int64_t mw_outbox_store_max_seq(mw_outbox_store_t *st) {
  sqlite3_stmt *s = st->q[Q_MAX_SEQ];
  return scalar(s);
}

int64_t mw_outbox_store_nth_after(mw_outbox_store_t *st, int64_t after, int n) {
  sqlite3_stmt *s = st->q[Q_NTH];
  sqlite3_bind_int64(s, 1, after);
  sqlite3_bind_int(s, 2, n > 0 ? n - 1 : 0);
  return scalar(s);
}

int64_t mw_outbox_store_oldest_ms(mw_outbox_store_t *st) {
  sqlite3_stmt *s = st->q[Q_OLDEST_MS];
  return scalar(s);
}

bool mw_outbox_store_changed(mw_outbox_store_t *st) {
  sqlite3_stmt *s = st->q[Q_DATA_VERSION];
  int64_t v = st->data_version;
  if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
  finish(s);
  bool changed = v != st->data_version;
  st->data_version = v;
  return changed;
}
