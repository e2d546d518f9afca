/*
** Sending: the in-flight table, planning rows out of the database within the window, the
** sent mark that makes a resend after a crash carry DUP, the per-turn flush (send what is
** durable, commit, send what the commit made durable) and the PRECONNECT hand-over of the
** messages the broker may already have.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_outbox_int.h"

/* ------------------------------------------------------------------ in flight */

void mw__outbox_flight_clear(mw_outbox_t *ob) {
  ob->nflight = 0;
  ob->cursor = 0;
  ob->rewound = false;
}

static bool flight_push(mw_outbox_t *ob, int64_t seq, int mid, size_t size) {
  if (ob->nflight == ob->capflight) {
    int cap = ob->capflight ? ob->capflight * 2 : 128;
    mw_outbox_flight_t *n = realloc(ob->flight, sizeof *n * (size_t)cap);
    if (!n) return false;
    ob->flight = n;
    ob->capflight = cap;
  }
  ob->flight[ob->nflight++] = (mw_outbox_flight_t){seq, mid, size, mw__outbox_now_ms(ob)};
  return true;
}

/* The broker acknowledges in order, so the match is nearly always the first entry. */
int mw__outbox_flight_find(mw_outbox_t *ob, int mid) {
  for (int i = 0; i < ob->nflight; i++)
    if (ob->flight[i].mid == mid) return i;
  return -1;
}

void mw__outbox_flight_remove(mw_outbox_t *ob, int i) {
  memmove(&ob->flight[i], &ob->flight[i + 1], sizeof *ob->flight * (size_t)(ob->nflight - i - 1));
  ob->nflight--;
}

/* ------------------------------------------------------------------ sending */

static bool in_flight(mw_outbox_t *ob, int64_t seq) {
  for (int i = 0; i < ob->nflight; i++)
    if (ob->flight[i].seq == seq) return true;
  return false;
}

/*
** What one flush sends, copied out of the database first: sending can report events
** (a lost connection) that write to the database, which must not happen while a query
** is still stepping.
*/
typedef struct {
  mw_outbox_t *ob;
  int limit;
  bool resend; /* PRECONNECT hand-over: only seq <= sent_top */
  int64_t upto; /* rows above this are not durable yet (or beyond the persisted mark) */
} plan_t;

static int plan_row(void *ud, const mw_outbox_msg_t *m) {
  plan_t *p = ud;
  mw_outbox_t *ob = p->ob;
  if (p->resend && m->seq > ob->sent_top) return 1;
  if (m->seq > p->upto) return 1;
  if (ob->rewound && in_flight(ob, m->seq)) return 0;
  /* A suspect whose budget this strike would spend waits for the verdict at CONNACK:
     sending it once more would only close the connection once more. */
  if (p->resend && m->seq == ob->suspect.seq && ob->suspect.strikes >= ob->cfg.poison_budget) return 0;
  /* A message with strikes travels alone, so that a close can only be its fault. */
  if (m->strikes > 0 && (ob->nflight > 0 || ob->nplan > 0)) return 1;
  size_t tlen = strlen(m->topic);
  size_t need = tlen + 1 + m->len;
  if (ob->arena_used + need > ob->arena_cap) {
    size_t cap = ob->arena_cap ? ob->arena_cap : 65536;
    while (cap < ob->arena_used + need) cap *= 2;
    char *n = realloc(ob->arena, cap);
    if (!n) return 1;
    ob->arena = n;
    ob->arena_cap = cap;
  }
  if (ob->nplan == ob->capplan) {
    int cap = ob->capplan ? ob->capplan * 2 : 128;
    mw_outbox_planned_t *n = realloc(ob->plan, sizeof *n * (size_t)cap);
    if (!n) return 1;
    ob->plan = n;
    ob->capplan = cap;
  }
  mw_outbox_planned_t *r = &ob->plan[ob->nplan++];
  r->seq = m->seq;
  r->off = ob->arena_used;
  r->tlen = tlen;
  r->len = m->len;
  r->retain = m->retain;
  memcpy(ob->arena + ob->arena_used, m->topic, tlen + 1);
  if (m->len) memcpy(ob->arena + ob->arena_used + tlen + 1, m->payload, m->len);
  ob->arena_used += need;
  return m->strikes > 0 || ob->nplan >= p->limit;
}

static void plan(mw_outbox_t *ob, int64_t after, int limit, bool resend, int64_t upto) {
  ob->nplan = 0;
  ob->arena_used = 0;
  if (limit <= 0) return;
  plan_t p = {ob, limit, resend, upto};
  /* Rows still in flight after a rewind are skipped, so ask for a few more. */
  mw_outbox_store_scan(ob->st, after, ob->rewound ? limit + ob->nflight : limit, plan_row, &p);
}

/* Sends the planned rows; stops at the first refusal or when the connection changes. */
static void send_planned(mw_outbox_t *ob, bool resend) {
  char err[256];
  unsigned gen = ob->conn_gen;
  for (int i = 0; i < ob->nplan; i++) {
    if (ob->conn_gen != gen || (!resend && !ob->connected)) break;
    mw_outbox_planned_t *r = &ob->plan[i];
    const char *topic = ob->arena + r->off;
    const char *payload = topic + r->tlen + 1;
    int mid = 0;
    mw_status_t st = resend ? mw_mqtt_resend(ob->mqtt, topic, payload, r->len, r->retain, &mid, err, sizeof err)
                            : mw_mqtt_publish(ob->mqtt, topic, payload, r->len, 1, r->retain, &mid, err, sizeof err);
    if (ob->conn_gen != gen) break;
    if (st == MW_ERR_TOO_LARGE || st == MW_ERR_INVALID) {
      /* Refused before it left (the broker's announced maximum packet size, a payload limit
         lowered since it was accepted): it never can be sent, and must not block the rest. */
      char why[400];
      snprintf(why, sizeof why, "it cannot be sent: %s", err);
      MW_LOGE(COMP, "message %lld to '%s' (%zu bytes) moved to the dead letters: %s", (long long)r->seq, topic,
              r->len, why);
      mw__outbox_bury(ob, r->seq, why);
      if (r->seq > ob->cursor) ob->cursor = r->seq;
      continue;
    }
    if (st != MW_OK) {
      MW_LOGD(COMP, "sending paused at message %lld: %s", (long long)r->seq, err);
      break;
    }
    flight_push(ob, r->seq, mid, r->tlen + r->len);
    if (r->seq > ob->cursor) ob->cursor = r->seq;
    if (r->seq > ob->sent_top) ob->sent_top = r->seq;
    if (resend) ob->stats.resent++;
    else ob->stats.sent++;
  }
  ob->nplan = 0;
  if (ob->rewound) {
    /* Done once the scan has passed every row that was in flight at the rewind. */
    int64_t top = 0;
    for (int i = 0; i < ob->nflight; i++)
      if (ob->flight[i].seq > top) top = ob->flight[i].seq;
    if (ob->cursor >= top) ob->rewound = false;
  }
}

/* Whether the only message in flight is on probation (has strikes): then nothing joins it. */
static bool probation_in_flight(mw_outbox_t *ob) {
  if (ob->nflight != 1) return false;
  mw_outbox_row_info_t ri = {0};
  mw_outbox_store_get(ob->st, ob->flight[0].seq, mw__outbox_take_info, &ri);
  free(ri.topic);
  return ri.found && ri.strikes > 0;
}

static void send_qos0_queue(mw_outbox_t *ob) {
  char err[256];
  while (ob->q0head && ob->connected) {
    mw_outbox_q0_t *q = ob->q0head;
    if (mw_mqtt_publish(ob->mqtt, q->topic, q->topic + strlen(q->topic) + 1, q->len, 0, q->retain, NULL, err,
                        sizeof err) != MW_OK)
      break;
    ob->q0head = q->next;
    if (!ob->q0head) ob->q0tail = NULL;
    ob->nq0--;
    ob->stats.qos0_sent_late++;
    free(q);
  }
}

/*
** A sent mark one window ahead of the rows about to go out: the next turn can then send
** without a commit of its own. After a crash, messages between what was really sent and the
** mark (at most about two windows) get the DUP flag on their first send: harmless, since DUP
** only tells the receiver that a message may be a repeat.
*/
static int64_t mark_ahead(mw_outbox_t *ob, int64_t last) {
  int64_t ahead = mw_outbox_store_nth_after(ob->st, last, ob->cfg.window);
  if (!ahead) ahead = ob->batch_top > ob->committed_top ? ob->batch_top : ob->committed_top;
  return ahead > last ? ahead : last;
}

/*
** Sends what the window allows among the rows that are durable (committed). A row above the
** persisted sent mark may only leave once a larger mark is committed — with mark_ok the mark
** is moved (ahead by a margin, so this is rare) and committed first; without it such rows wait.
*/
static void pump(mw_outbox_t *ob, bool mark_ok) {
  if (!ob->connected || ob->unstored || mw__outbox_now_ms(ob) < ob->pause_until) return;
  int limit = ob->cfg.window - ob->nflight;
  if (limit <= 0 || (ob->nflight == 1 && probation_in_flight(ob))) return;
  int64_t upto = ob->committed_top;
  if (!mark_ok && ob->sent_mark < upto) upto = ob->sent_mark;
  plan(ob, ob->rewound ? ob->rewind_to : ob->cursor, limit, false, upto);
  if (ob->nplan == 0) return;
  int64_t last = ob->plan[ob->nplan - 1].seq;
  if (last > ob->sent_mark) {
    int64_t mark = mark_ahead(ob, last);
    if (mw_outbox_store_set_sent_mark(ob->st, mark) != MW_OK) {
      ob->nplan = 0;
      return;
    }
    mw__outbox_must_commit(ob, 0);
    if (!mw__outbox_commit(ob)) {
      ob->nplan = 0;
      return;
    }
    ob->sent_mark = mark;
  }
  send_planned(ob, false);
}

/*
** One loop turn's worth of work, before the loop waits again:
**  1. send what is already durable (earlier turns' messages), so the network works while
**     the disk does;
**  2. commit this turn's batch (new messages, acknowledgements, strikes): one commit, at most
**     one fsync, per turn;
**  3. send what that commit made durable.
** A message is never on the wire before its row is committed.
*/
void mw_outbox_flush(mw_outbox_t *ob) {
  if (ob->freeing || ob->flushing) return;
  ob->flushing = true;
  mw__outbox_try_restore(ob);
  bool pumping = ob->want_pump;
  ob->want_pump = false;
  if (pumping) pump(ob, false);
  if (mw__outbox_commit_due(ob)) {
    /* This commit syncs anyway: move the sent mark ahead in it when it is getting close, so
       that step 3 does not need a second commit for it. */
    int64_t mark = 0;
    if (ob->connected && mw_outbox_store_in_batch(ob->st)) {
      int64_t next = mw_outbox_store_nth_after(ob->st, ob->cursor, ob->cfg.window);
      if (next > ob->sent_mark) {
        mark = mark_ahead(ob, next);
        if (mw_outbox_store_set_sent_mark(ob->st, mark) != MW_OK) mark = 0;
      }
    }
    if (mw__outbox_commit(ob) && mark) ob->sent_mark = mark;
  }
  if (pumping || ob->committed_top > ob->cursor) pump(ob, true);
  ob->nplan = 0;
  if (ob->connected && ob->q0head) send_qos0_queue(ob);
  /* Rows left behind (window full, paused, storage failing) are picked up by the next event. */
  if (ob->unstored || mw__outbox_now_ms(ob) < ob->pause_until) ob->want_pump = true;
  ob->flushing = false;
}

mw_status_t mw_outbox_sync(mw_outbox_t *ob, char *err, size_t errlen) {
  mw_outbox_flush(ob);
  if (!ob->unstored) return MW_OK;
  snprintf(err, errlen, "the outbox cannot be written (%s)", ob->store_error);
  return strstr(ob->store_error, "full") ? MW_ERR_NOSPACE : MW_ERR_IO;
}

/* PRECONNECT: a fresh libmosquitto client. Hand over what may have reached the broker
   already (seq <= sent_top), so libmosquitto sends it with DUP right after CONNACK. */
void mw__outbox_hand_over(mw_outbox_t *ob) {
  ob->conn_gen++;
  mw__outbox_flight_clear(ob);
  ob->connected = false;
  if (mw_outbox_store_in_batch(ob->st) && !mw__outbox_commit(ob)) return;
  plan(ob, 0, ob->cfg.window, true, ob->sent_top);
  send_planned(ob, true);
  if (ob->nflight > 0)
    MW_LOGI(COMP, "%d unacknowledged message(s) will be sent again (DUP) right after CONNACK", ob->nflight);
}
