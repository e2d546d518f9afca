/*
** libFuzzer target: the outbox store under any sequence of operations, checked against a
** model. Each input byte picks an operation (put, acknowledge, commit, rollback, strike,
** bury, requeue, drop, drop oldest, sent mark); after each one the store's pending and dead
** rows must equal the model's, in order, and sequence numbers must never be reused.
** Runs on an in-memory database (the SQL is the same as on disk).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_outbox_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXM 64

typedef struct {
  int64_t seq;
  int len;
  int strikes;
} row_t;

typedef struct {
  row_t pending[MAXM], dead[MAXM];
  int np, nd;
} model_t;

typedef struct {
  model_t committed, cur;
  int64_t top, committed_top; /* highest seq handed out; a rolled-back batch gives its numbers back */
} world_t;

typedef struct {
  const row_t *rows;
  int n, i;
  int bad;
  int64_t last;
} cmp_t;

static int compare(void *ud, const mw_outbox_msg_t *m) {
  cmp_t *c = ud;
  if (c->i >= c->n || m->seq != c->rows[c->i].seq || (int)m->len != c->rows[c->i].len ||
      m->strikes != c->rows[c->i].strikes || m->seq <= c->last)
    c->bad = 1;
  c->last = m->seq;
  c->i++;
  return 0;
}

static void check(mw_outbox_store_t *st, const model_t *m) {
  cmp_t c = {m->pending, m->np, 0, 0, 0};
  if (mw_outbox_store_scan(st, 0, 0, compare, &c) != MW_OK || c.bad || c.i != m->np) abort();
  cmp_t d = {m->dead, m->nd, 0, 0, 0};
  if (mw_outbox_store_scan_dead(st, 0, 0, compare, &d) != MW_OK || d.bad || d.i != m->nd) abort();
  mw_outbox_counts_t cnt;
  if (mw_outbox_store_counts(st, &cnt) != MW_OK || cnt.pending != m->np || cnt.dead != m->nd) abort();
}

static void remove_at(row_t *rows, int *n, int i) {
  memmove(&rows[i], &rows[i + 1], sizeof *rows * (size_t)(*n - i - 1));
  (*n)--;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mw_outbox_store_t *st = NULL;
  char err[256];
  if (mw_outbox_store_open(":memory:", MW_OUTBOX_SYNC_OFF, &st, err, sizeof err) != MW_OK) abort();
  static world_t w;
  memset(&w, 0, sizeof w);
  static char payload[256];
  memset(payload, 'p', sizeof payload);
  for (size_t i = 0; i < size; i++) {
    uint8_t op = data[i] % 11, arg = i + 1 < size ? data[i + 1] : 0;
    model_t *m = &w.cur;
    switch (op) {
    case 0: /* put */
    case 1: {
      if (m->np >= MAXM) break;
      mw_outbox_msg_t msg = {.topic = "t/x", .payload = payload, .len = arg, .qos = 1};
      int64_t seq = 0;
      if (mw_outbox_store_put(st, &msg, &seq, err, sizeof err) != MW_OK) abort();
      if (seq <= w.top) abort(); /* never reused, always growing */
      w.top = seq;
      m->pending[m->np++] = (row_t){seq, arg, 0};
      i++;
      break;
    }
    case 2: /* acknowledge the n-th pending */
      if (m->np) {
        int k = arg % m->np;
        if (mw_outbox_store_delete(st, m->pending[k].seq) != MW_OK) abort();
        remove_at(m->pending, &m->np, k);
      } else if (mw_outbox_store_delete(st, w.top + 1) != MW_ERR_NOT_FOUND) {
        abort();
      }
      i++;
      break;
    case 3:
      if (mw_outbox_store_commit(st, err, sizeof err) != MW_OK) abort();
      w.committed = w.cur;
      w.committed_top = w.top;
      break;
    case 4:
      mw_outbox_store_rollback(st);
      w.cur = w.committed;
      w.top = w.committed_top;
      break;
    case 5: /* strike */
      if (m->np) {
        int k = arg % m->np;
        if (mw_outbox_store_strike(st, m->pending[k].seq, m->pending[k].strikes + 1, "why") != MW_OK) abort();
        m->pending[k].strikes++;
      }
      i++;
      break;
    case 6: /* bury */
      if (m->np && m->nd < MAXM) {
        int k = arg % m->np;
        if (mw_outbox_store_bury(st, m->pending[k].seq, "dead", 1) != MW_OK) abort();
        row_t r = m->pending[k];
        remove_at(m->pending, &m->np, k);
        int j = m->nd;
        while (j > 0 && m->dead[j - 1].seq > r.seq) j--; /* dead letters are listed by id */
        memmove(&m->dead[j + 1], &m->dead[j], sizeof *m->dead * (size_t)(m->nd - j));
        m->dead[j] = r;
        m->nd++;
      }
      i++;
      break;
    case 7: /* requeue */
      if (m->nd && m->np < MAXM) {
        int k = arg % m->nd;
        int64_t seq = 0;
        if (mw_outbox_store_requeue(st, m->dead[k].seq, &seq) != MW_OK) abort();
        if (seq <= w.top) abort();
        w.top = seq;
        m->pending[m->np++] = (row_t){seq, m->dead[k].len, 0};
        remove_at(m->dead, &m->nd, k);
      }
      i++;
      break;
    case 8: /* drop a dead letter */
      if (m->nd) {
        int k = arg % m->nd;
        if (mw_outbox_store_drop_dead(st, m->dead[k].seq) != MW_OK) abort();
        remove_at(m->dead, &m->nd, k);
      }
      i++;
      break;
    case 9: { /* drop the oldest */
      int64_t seq;
      size_t sz;
      mw_status_t s = mw_outbox_store_drop_oldest(st, &seq, &sz);
      if (m->np == 0) {
        if (s != MW_ERR_NOT_FOUND) abort();
      } else {
        if (s != MW_OK || seq != m->pending[0].seq || sz != (size_t)m->pending[0].len + 3) abort();
        remove_at(m->pending, &m->np, 0);
      }
      break;
    }
    case 10: /* sent mark round trip */
      if (mw_outbox_store_set_sent_mark(st, arg) != MW_OK || mw_outbox_store_sent_mark(st) != arg) abort();
      i++;
      break;
    }
    check(st, m);
  }
  mw_outbox_store_close(st);
  return 0;
}
