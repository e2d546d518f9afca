/*
** The outbox store: order, batches, acknowledgement, strikes, dead letters, requeue, the sent
** mark, persistence across reopening, and another connection's changes being noticed.
*/
#define MW_TEST_IMPLEMENTATION
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "mw_outbox_store.h"
#include "mw_reason.h"
#include "mw_test.h"

static char dir[] = "/tmp/mw-outbox-test-XXXXXX";
static char path[256];

static mw_outbox_store_t *open_file(void) {
  mw_outbox_store_t *st = NULL;
  char err[256];
  mw_status_t s = mw_outbox_store_open(path, MW_OUTBOX_SYNC_NORMAL, &st, err, sizeof err);
  if (s != MW_OK) fprintf(stderr, "open: %s\n", err);
  CHECK_INT(s, MW_OK);
  return st;
}

static int64_t put(mw_outbox_store_t *st, const char *topic, const char *payload) {
  mw_outbox_msg_t m = {0};
  m.topic = topic;
  m.payload = payload;
  m.len = strlen(payload);
  m.qos = 1;
  m.created_ms = 1000;
  int64_t seq = 0;
  char err[256];
  CHECK_INT(mw_outbox_store_put(st, &m, &seq, err, sizeof err), MW_OK);
  return seq;
}

typedef struct {
  int n;
  int64_t seq[16];
  char payload[16][32];
  size_t len[16];
  int strikes[16];
} rows_t;

static int collect(void *ud, const mw_outbox_msg_t *m) {
  rows_t *r = ud;
  if (r->n >= 16) return 1;
  r->seq[r->n] = m->seq;
  r->len[r->n] = m->len;
  r->strikes[r->n] = m->strikes;
  snprintf(r->payload[r->n], sizeof r->payload[0], "%.*s", (int)m->len, (const char *)m->payload);
  r->n++;
  return 0;
}

static void reset_file(void) {
  unlink(path);
  char side[300];
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
}

static void test_order_and_ack(void) {
  reset_file();
  mw_outbox_store_t *st = open_file();
  int64_t a = put(st, "t/a", "1"), b = put(st, "t/b", "22"), c = put(st, "t/c", "");
  CHECK(a < b && b < c);
  CHECK(mw_outbox_store_in_batch(st));
  char err[256];
  CHECK_INT(mw_outbox_store_commit(st, err, sizeof err), MW_OK);
  CHECK(!mw_outbox_store_in_batch(st));
  rows_t r = {0};
  CHECK_INT(mw_outbox_store_scan(st, 0, 0, collect, &r), MW_OK);
  CHECK_INT(r.n, 3);
  CHECK_STR(r.payload[1], "22");
  CHECK_INT(r.len[2], 0); /* an empty payload is an empty blob, not NULL */
  rows_t after = {0};
  mw_outbox_store_scan(st, a, 1, collect, &after);
  CHECK_INT(after.n, 1);
  CHECK_INT(after.seq[0], b);
  CHECK_INT(mw_outbox_store_delete(st, b), MW_OK);
  CHECK_INT(mw_outbox_store_delete(st, b), MW_ERR_NOT_FOUND);
  mw_outbox_counts_t cnt;
  CHECK_INT(mw_outbox_store_counts(st, &cnt), MW_OK);
  CHECK_INT(cnt.pending, 2);
  CHECK_INT(cnt.pending_bytes, 3 + 1 + 3); /* topic + payload */
  CHECK_INT(cnt.oldest_ms, 1000);
  CHECK_INT(mw_outbox_store_oldest_ms(st), 1000);
  mw_outbox_store_close(st); /* commits the open batch */
  st = open_file();
  mw_outbox_store_counts(st, &cnt);
  CHECK_INT(cnt.pending, 2);
  mw_outbox_store_close(st);
}

static void test_rollback_loses_the_batch(void) {
  reset_file();
  mw_outbox_store_t *st = open_file();
  put(st, "t", "kept");
  char err[256];
  mw_outbox_store_commit(st, err, sizeof err);
  put(st, "t", "lost");
  mw_outbox_store_rollback(st);
  rows_t r = {0};
  mw_outbox_store_scan(st, 0, 0, collect, &r);
  CHECK_INT(r.n, 1);
  CHECK_STR(r.payload[0], "kept");
  mw_outbox_store_close(st);
}

static void test_sequence_never_reused(void) {
  reset_file();
  mw_outbox_store_t *st = open_file();
  int64_t a = put(st, "t", "x");
  CHECK_INT(mw_outbox_store_delete(st, a), MW_OK);
  char err[256];
  mw_outbox_store_commit(st, err, sizeof err);
  mw_outbox_store_close(st);
  st = open_file();
  int64_t b = put(st, "t", "y");
  CHECK(b > a);
  /* Re-inserting under an explicit number (after a failed commit) keeps it. */
  mw_outbox_msg_t m = {.topic = "t", .payload = "z", .len = 1, .qos = 1};
  int64_t again = a;
  CHECK_INT(mw_outbox_store_put(st, &m, &again, err, sizeof err), MW_OK);
  CHECK_INT(again, a);
  mw_outbox_store_close(st);
}

static void test_sent_mark(void) {
  reset_file();
  mw_outbox_store_t *st = open_file();
  CHECK_INT(mw_outbox_store_sent_mark(st), 0);
  CHECK_INT(mw_outbox_store_set_sent_mark(st, 41), MW_OK);
  char err[256];
  mw_outbox_store_commit(st, err, sizeof err);
  mw_outbox_store_close(st);
  st = open_file();
  CHECK_INT(mw_outbox_store_sent_mark(st), 41);
  mw_outbox_store_close(st);
}

static void test_strike_bury_requeue_drop(void) {
  reset_file();
  mw_outbox_store_t *st = open_file();
  int64_t a = put(st, "t/a", "poison"), b = put(st, "t/b", "fine");
  CHECK_INT(mw_outbox_store_strike(st, a, 2, "closed"), MW_OK);
  rows_t r = {0};
  mw_outbox_store_scan(st, 0, 0, collect, &r);
  CHECK_INT(r.strikes[0], 2);
  CHECK_INT(mw_outbox_store_bury(st, a, "closed three times", 5000), MW_OK);
  CHECK_INT(mw_outbox_store_bury(st, a, "again", 5000), MW_ERR_NOT_FOUND);
  mw_outbox_counts_t c;
  mw_outbox_store_counts(st, &c);
  CHECK_INT(c.pending, 1);
  CHECK_INT(c.dead, 1);
  rows_t d = {0};
  mw_outbox_store_scan_dead(st, 0, 0, collect, &d);
  CHECK_INT(d.n, 1);
  CHECK_INT(d.seq[0], a); /* a dead letter's id is the seq it had */
  CHECK_INT(d.strikes[0], 2);
  int64_t n = 0;
  CHECK_INT(mw_outbox_store_requeue(st, a, &n), MW_OK);
  CHECK(n > b); /* back at the end of the queue */
  CHECK_INT(mw_outbox_store_requeue(st, a, &n), MW_ERR_NOT_FOUND);
  rows_t p = {0};
  mw_outbox_store_scan(st, 0, 0, collect, &p);
  CHECK_INT(p.n, 2);
  CHECK_INT(p.seq[1], n);
  CHECK_INT(p.strikes[1], 0);
  CHECK_STR(p.payload[1], "poison");
  CHECK_INT(mw_outbox_store_bury(st, n, "again", 6000), MW_OK);
  CHECK_INT(mw_outbox_store_drop_dead(st, n), MW_OK);
  CHECK_INT(mw_outbox_store_drop_dead(st, n), MW_ERR_NOT_FOUND);
  int64_t seq;
  size_t size;
  CHECK_INT(mw_outbox_store_drop_oldest(st, &seq, &size), MW_OK);
  CHECK_INT(seq, b);
  CHECK_INT(size, 3 + 4);
  CHECK_INT(mw_outbox_store_drop_oldest(st, &seq, &size), MW_ERR_NOT_FOUND);
  mw_outbox_store_close(st);
}

static void test_other_connection_is_noticed(void) {
  reset_file();
  mw_outbox_store_t *st = open_file(), *cli = open_file();
  char err[256];
  CHECK(!mw_outbox_store_changed(st));
  int64_t a = put(st, "t", "x");
  mw_outbox_store_commit(st, err, sizeof err);
  CHECK(!mw_outbox_store_changed(st)); /* its own commits do not count */
  CHECK_INT(mw_outbox_store_bury(cli, a, "by hand", 1), MW_OK);
  CHECK_INT(mw_outbox_store_commit(cli, err, sizeof err), MW_OK);
  CHECK(mw_outbox_store_changed(st));
  CHECK(!mw_outbox_store_changed(st));
  mw_outbox_store_close(cli);
  mw_outbox_store_close(st);
}

static void test_memory_and_bad_files(void) {
  mw_outbox_store_t *st = NULL;
  char err[256];
  CHECK_INT(mw_outbox_store_open(":memory:", MW_OUTBOX_SYNC_FULL, &st, err, sizeof err), MW_OK);
  CHECK(mw_outbox_store_is_memory(st));
  put(st, "t", "m");
  CHECK_INT(mw_outbox_store_commit(st, err, sizeof err), MW_OK);
  mw_outbox_store_close(st);
  /* Not a database at all. */
  reset_file();
  FILE *f = fopen(path, "w");
  fputs("this is not sqlite, just text long enough to fill a header page ................................", f);
  fclose(f);
  st = NULL;
  CHECK(mw_outbox_store_open(path, MW_OUTBOX_SYNC_FULL, &st, err, sizeof err) != MW_OK);
  CHECK(st == NULL);
  CHECK(strstr(err, "not an outbox database") != NULL);
  /* A newer schema than this build knows. */
  reset_file();
  sqlite3 *db;
  sqlite3_open(path, &db);
  sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
  sqlite3_close(db);
  CHECK(mw_outbox_store_open(path, MW_OUTBOX_SYNC_FULL, &st, err, sizeof err) != MW_OK);
  CHECK(strstr(err, "newer than this build") != NULL);
  reset_file();
}

static void test_reason_texts(void) {
  CHECK_STR(mw_reason_name(0x87), "Not authorized");
  CHECK(strstr(mw_reason_explain(0x87), "policy") != NULL);
  CHECK(strstr(mw_reason_explain(0x8E), "same client id") != NULL);
  CHECK(mw_reason_name(0x42) == NULL);
  CHECK(strstr(mw_reason_explain(0xFE), "does not know") != NULL);
  CHECK(strstr(mw_reason_connack3(5), "iot:Connect") != NULL);
  CHECK(strstr(mw_reason_connack3(9), "does not define") != NULL);
  CHECK(mw_reason_is_error(0x80) && !mw_reason_is_error(0));
}

int main(int argc, char **argv) {
  if (!mkdtemp(dir)) return 1;
  snprintf(path, sizeof path, "%s/outbox.db", dir);
  static const mw_test_case_t cases[] = {
      MW_TEST(test_order_and_ack),        MW_TEST(test_rollback_loses_the_batch),
      MW_TEST(test_sequence_never_reused), MW_TEST(test_sent_mark),
      MW_TEST(test_strike_bury_requeue_drop), MW_TEST(test_other_connection_is_noticed),
      MW_TEST(test_memory_and_bad_files), MW_TEST(test_reason_texts),
  };
  int rc = mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  reset_file();
  char lock[300];
  snprintf(lock, sizeof lock, "%s.lock", path);
  unlink(lock);
  rmdir(dir);
  return rc;
}
