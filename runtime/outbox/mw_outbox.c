#include "mw_outbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mw_log.h"
#include "mw_reason.h"

#define COMP "outbox"
#define RETRY_STORE_MS 1000 /* after a failed commit, how often to try writing again */
#define TIMER_MS 1000
#define MAX_BATCH 4096      /* writes per transaction before an early commit */
#define ACK_COMMIT_MS 200   /* an acknowledgement-only batch may wait this long for company */

/* A message handed to libmosquitto on the current connection, awaiting its PUBACK. */
typedef struct {
  int64_t seq;
  int mid;
  size_t size;
  uint64_t sent_ms; /* loop time of the send (of CONNACK for resends handed over before it) */
} flight_t;

/* A write of the open batch, remembered until the batch is committed. */
typedef struct {
  int64_t seq;
  bool put;         /* true: the message below; false: a delete (PUBACK) */
  mw_outbox_msg_t msg; /* put: topic and payload owned, in one allocation */
} op_t;

/* A row planned for sending; topic and payload live in the outbox's arena at off. */
typedef struct {
  int64_t seq;
  size_t off, tlen, len;
  bool retain;
} planned_t;

/* A QoS 0 message kept in memory while offline. */
typedef struct q0 {
  struct q0 *next;
  bool retain;
  size_t len;
  char *topic;
  /* topic and payload follow */
} q0_t;

struct mw_outbox {
  uv_loop_t *loop;
  mw_mqtt_t *mqtt;
  mw_outbox_config_t cfg;
  char *path;
  mw_outbox_store_t *st;
  mw_outbox_event_fn fn;
  void *ud;
  int lock_fd;

  uv_prepare_t prepare; /* commit + send before the loop waits */
  uv_timer_t timer;     /* external changes, retrying a failed store */
  int open_handles;
  bool freeing;

  bool connected;   /* CONNACK seen on the current connection */
  bool want_pump;
  int64_t cursor;   /* highest seq handed to libmosquitto on this connection */
  int64_t sent_top; /* highest seq ever handed to the network by this process (or the mark at start) */
  int64_t sent_mark; /* persisted: pending messages with seq <= this may have reached the broker;
                        kept ahead of sent_top by a margin, so it is written rarely */
  int64_t committed_top; /* highest seq known to be committed: only rows up to it may be sent */
  int64_t batch_top;     /* highest seq written in the open batch */
  bool batch_must;       /* the open batch holds more than acknowledgements: commit this turn */
  uint64_t batch_since;  /* loop time of the open batch's first acknowledgement */
  flight_t *flight; /* in send order */
  int nflight, capflight;

  op_t *ops;        /* writes of the open batch (kept to redo them if the commit fails) */
  int nops, capops;
  bool unstored;    /* a commit failed: ops wait to be written again; new QoS 1 is refused */
  char store_error[256];
  uint64_t retry_at;

  q0_t *q0head, *q0tail;
  int nq0;

  planned_t *plan;  /* rows of the current flush, copied out of the database */
  int nplan, capplan;
  char *arena;      /* their topics and payloads */
  size_t arena_used, arena_cap;
  unsigned conn_gen; /* changes whenever the connection does */
  bool flushing;
  bool rewound;     /* an MQTT 5 refusal: send again from rewind_to, skipping what is in flight */
  int64_t rewind_to;
  uint64_t pause_until; /* no sending before (after a retryable MQTT 5 refusal) */
  /* A strike waiting for its verdict: the broker closed the connection right after this
     message; if the broker then accepts a new connection at once, the close was the
     message's doing (confirmed at CONNACK); if it cannot be reached, the broker itself
     went away and the strike is taken back. */
  struct {
    int64_t seq;    /* 0: none */
    int strikes;    /* its strike count including this one (already in the database) */
    char what[400];
  } suspect;

  int64_t pending, pending_bytes, dead;
  mw_outbox_stats_t stats;
};

static uint64_t now_ms(mw_outbox_t *ob) { return uv_now(ob->loop); }

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void emit(mw_outbox_t *ob, mw_outbox_event_type_t type, int64_t seq, const mw_outbox_msg_t *msg) {
  if (!ob->fn) return;
  mw_outbox_event_t ev = {type, seq, msg};
  ob->fn(ob->ud, &ev);
}

/* ------------------------------------------------------------------ batch bookkeeping */

static void op_free(op_t *o) {
  if (o->put) free((void *)o->msg.topic);
}

static void ops_clear(mw_outbox_t *ob) {
  for (int i = 0; i < ob->nops; i++) op_free(&ob->ops[i]);
  ob->nops = 0;
}

static op_t *op_add(mw_outbox_t *ob) {
  if (ob->nops == ob->capops) {
    int cap = ob->capops ? ob->capops * 2 : 64;
    op_t *n = realloc(ob->ops, sizeof *n * (size_t)cap);
    if (!n) return NULL;
    ob->ops = n;
    ob->capops = cap;
  }
  op_t *o = &ob->ops[ob->nops++];
  memset(o, 0, sizeof *o);
  return o;
}

static bool remember_put(mw_outbox_t *ob, int64_t seq, const mw_outbox_msg_t *m) {
  size_t tlen = strlen(m->topic);
  char *buf = malloc(tlen + 1 + m->len + 1);
  op_t *o = buf ? op_add(ob) : NULL;
  if (!o) {
    free(buf);
    return false;
  }
  memcpy(buf, m->topic, tlen + 1);
  if (m->len) memcpy(buf + tlen + 1, m->payload, m->len);
  o->put = true;
  o->seq = seq;
  o->msg = *m;
  o->msg.topic = buf;
  o->msg.payload = buf + tlen + 1;
  o->msg.reason = NULL;
  return true;
}

static void remember_delete(mw_outbox_t *ob, int64_t seq) {
  op_t *o = op_add(ob);
  if (o) o->seq = seq;
}

static void recount(mw_outbox_t *ob) {
  mw_outbox_counts_t c;
  if (mw_outbox_store_counts(ob->st, &c) != MW_OK) return;
  ob->pending = c.pending;
  ob->pending_bytes = c.pending_bytes;
  ob->dead = c.dead;
  if (ob->unstored) {
    for (int i = 0; i < ob->nops; i++)
      if (ob->ops[i].put) {
        ob->pending++;
        ob->pending_bytes += (int64_t)(strlen(ob->ops[i].msg.topic) + ob->ops[i].msg.len);
      }
  }
}

/*
** The batch could not be written (disk full, I/O error). Nothing of it is durable, so
** nothing of it was sent; the accepted messages stay in memory and are written again
** every RETRY_STORE_MS until the storage takes them.
*/
static void store_failed(mw_outbox_t *ob, const char *why) {
  ob->stats.commit_failures++;
  if (!ob->unstored)
    MW_LOGE(COMP, "%s (%s); %d accepted write(s) wait in memory, new QoS 1 messages are refused until it can be "
                  "written again",
            why, ob->path, ob->nops);
  snprintf(ob->store_error, sizeof ob->store_error, "%s", why);
  ob->unstored = true;
  ob->retry_at = now_ms(ob) + RETRY_STORE_MS;
  recount(ob);
}

/* Marks the open batch as one that must be committed at the end of this turn. */
static void must_commit(mw_outbox_t *ob, int64_t seq) {
  ob->batch_must = true;
  if (seq > ob->batch_top) ob->batch_top = seq;
}

/* Writes the remembered ops of a failed batch again, in one batch. */
static bool redo_ops(mw_outbox_t *ob) {
  char err[256];
  for (int i = 0; i < ob->nops; i++) {
    op_t *o = &ob->ops[i];
    mw_status_t st;
    if (o->put) {
      int64_t seq = o->seq;
      st = mw_outbox_store_put(ob->st, &o->msg, &seq, err, sizeof err);
      if (st == MW_OK) must_commit(ob, seq);
    } else {
      st = mw_outbox_store_delete(ob->st, o->seq);
      if (st == MW_ERR_NOT_FOUND) st = MW_OK;
    }
    if (st != MW_OK) {
      mw_outbox_store_rollback(ob->st);
      return false;
    }
  }
  return true;
}

/* Commits the open batch. Returns false (and enters the unstored state) on failure. */
static bool commit(mw_outbox_t *ob) {
  if (!mw_outbox_store_in_batch(ob->st)) {
    if (!ob->unstored) ops_clear(ob);
    return !ob->unstored;
  }
  char err[256];
  if (mw_outbox_store_commit(ob->st, err, sizeof err) != MW_OK) {
    store_failed(ob, err);
    return false;
  }
  ob->stats.commits++;
  if (ob->batch_top > ob->committed_top) ob->committed_top = ob->batch_top;
  ob->batch_must = false;
  ob->batch_since = 0;
  ops_clear(ob);
  return true;
}

/*
** A batch of new messages, strikes or dead letters is committed at the end of the turn (the
** durability promise). One holding only acknowledgements may wait a little for company: losing
** it to a power cut costs a duplicate, not a message, and it saves an fsync per turn while a
** backlog drains.
*/
static bool commit_due(mw_outbox_t *ob) {
  if (!mw_outbox_store_in_batch(ob->st)) return true;
  if (ob->batch_must || ob->unstored || ob->nops >= MAX_BATCH) return true;
  if (!ob->batch_since) ob->batch_since = now_ms(ob);
  return now_ms(ob) - ob->batch_since >= ACK_COMMIT_MS;
}

static void try_restore(mw_outbox_t *ob) {
  if (!ob->unstored || now_ms(ob) < ob->retry_at) return;
  ob->retry_at = now_ms(ob) + RETRY_STORE_MS;
  if (mw_outbox_store_in_batch(ob->st)) mw_outbox_store_rollback(ob->st);
  char err[256];
  if (!redo_ops(ob)) return;
  if (mw_outbox_store_commit(ob->st, err, sizeof err) != MW_OK) return;
  MW_LOGI(COMP, "the outbox %s can be written again; %d write(s) kept in memory are stored", ob->path, ob->nops);
  ob->stats.commits++;
  if (ob->batch_top > ob->committed_top) ob->committed_top = ob->batch_top;
  ob->batch_must = false;
  ob->batch_since = 0;
  ops_clear(ob);
  ob->unstored = false;
  ob->store_error[0] = '\0';
  ob->want_pump = true;
  recount(ob);
}

/* ------------------------------------------------------------------ in flight */

static void flight_clear(mw_outbox_t *ob) {
  ob->nflight = 0;
  ob->cursor = 0;
  ob->rewound = false;
}

static bool flight_push(mw_outbox_t *ob, int64_t seq, int mid, size_t size) {
  if (ob->nflight == ob->capflight) {
    int cap = ob->capflight ? ob->capflight * 2 : 128;
    flight_t *n = realloc(ob->flight, sizeof *n * (size_t)cap);
    if (!n) return false;
    ob->flight = n;
    ob->capflight = cap;
  }
  ob->flight[ob->nflight++] = (flight_t){seq, mid, size, now_ms(ob)};
  return true;
}

/* The broker acknowledges in order, so the match is nearly always the first entry. */
static int flight_find(mw_outbox_t *ob, int mid) {
  for (int i = 0; i < ob->nflight; i++)
    if (ob->flight[i].mid == mid) return i;
  return -1;
}

static void flight_remove(mw_outbox_t *ob, int i) {
  memmove(&ob->flight[i], &ob->flight[i + 1], sizeof *ob->flight * (size_t)(ob->nflight - i - 1));
  ob->nflight--;
}

/* ------------------------------------------------------------------ strikes and dead letters */

typedef struct {
  char *topic;
  size_t len;
  int strikes;
  bool found;
} row_info_t;

static int take_info(void *ud, const mw_outbox_msg_t *m) {
  row_info_t *ri = ud;
  ri->topic = strdup(m->topic);
  ri->len = m->len;
  ri->strikes = m->strikes;
  ri->found = ri->topic != NULL;
  return 1;
}

/* A message copied out of the database, so the owner can be told after it has moved. */
static int copy_row(void *ud, const mw_outbox_msg_t *m) {
  mw_outbox_msg_t *c = ud;
  size_t tlen = strlen(m->topic);
  char *buf = malloc(tlen + 1 + m->len + 1);
  if (!buf) return 1;
  memcpy(buf, m->topic, tlen + 1);
  if (m->len) memcpy(buf + tlen + 1, m->payload, m->len);
  *c = *m;
  c->topic = buf;
  c->payload = buf + tlen + 1;
  c->reason = NULL;
  return 1;
}

static void bury(mw_outbox_t *ob, int64_t seq, const char *reason) {
  mw_outbox_msg_t copy = {0};
  mw_outbox_store_get(ob->st, seq, copy_row, &copy);
  must_commit(ob, 0);
  if (mw_outbox_store_bury(ob->st, seq, reason, wall_ms()) != MW_OK) {
    MW_LOGE(COMP, "cannot move message %lld to the dead letters: %s", (long long)seq, mw_outbox_store_errmsg(ob->st));
    free((void *)copy.topic);
    return;
  }
  ob->stats.dead_lettered++;
  recount(ob);
  if (copy.topic) {
    copy.reason = reason;
    copy.dead_ms = wall_ms();
    emit(ob, MW_OUTBOX_EV_DEAD_LETTER, seq, &copy);
    free((void *)copy.topic);
  }
}

/*
** The connection ended, or the broker refused a message, right after message seq: count it
** against the message, and dead-letter it when its budget is spent.
*/
static void strike(mw_outbox_t *ob, int64_t seq, const char *what, bool final) {
  if (ob->unstored) return; /* the storage is failing: no verdicts until it works again */
  row_info_t ri = {0};
  mw_outbox_store_get(ob->st, seq, take_info, &ri);
  if (!ri.found) return;
  int strikes = ri.strikes + 1;
  ob->stats.strikes++;
  char reason[600];
  snprintf(reason, sizeof reason, "%s", what);
  if (final || strikes >= ob->cfg.poison_budget) {
    MW_LOGE(COMP,
            "message %lld to '%s' (%zu bytes) moved to the dead letters after %d attempt(s): %s. Delivery goes on "
            "with the next message; see `moonwire outbox list`",
            (long long)seq, ri.topic, ri.len, strikes, reason);
    must_commit(ob, 0);
    mw_outbox_store_strike(ob->st, seq, strikes, reason);
    bury(ob, seq, reason);
  } else {
    MW_LOGW(COMP, "message %lld to '%s' (%zu bytes): %s (strike %d of %d; it is sent alone next time)",
            (long long)seq, ri.topic, ri.len, reason, strikes, ob->cfg.poison_budget);
    must_commit(ob, 0);
    mw_outbox_store_strike(ob->st, seq, strikes, reason);
  }
  free(ri.topic);
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
    planned_t *n = realloc(ob->plan, sizeof *n * (size_t)cap);
    if (!n) return 1;
    ob->plan = n;
    ob->capplan = cap;
  }
  planned_t *r = &ob->plan[ob->nplan++];
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
    planned_t *r = &ob->plan[i];
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
      bury(ob, r->seq, why);
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
  row_info_t ri = {0};
  mw_outbox_store_get(ob->st, ob->flight[0].seq, take_info, &ri);
  free(ri.topic);
  return ri.found && ri.strikes > 0;
}

static void send_qos0_queue(mw_outbox_t *ob) {
  char err[256];
  while (ob->q0head && ob->connected) {
    q0_t *q = ob->q0head;
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
  if (!ob->connected || ob->unstored || now_ms(ob) < ob->pause_until) return;
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
    must_commit(ob, 0);
    if (!commit(ob)) {
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
  try_restore(ob);
  bool pumping = ob->want_pump;
  ob->want_pump = false;
  if (pumping) pump(ob, false);
  if (commit_due(ob)) {
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
    if (commit(ob) && mark) ob->sent_mark = mark;
  }
  if (pumping || ob->committed_top > ob->cursor) pump(ob, true);
  ob->nplan = 0;
  if (ob->connected && ob->q0head) send_qos0_queue(ob);
  /* Rows left behind (window full, paused, storage failing) are picked up by the next event. */
  if (ob->unstored || now_ms(ob) < ob->pause_until) ob->want_pump = true;
  ob->flushing = false;
}

mw_status_t mw_outbox_sync(mw_outbox_t *ob, char *err, size_t errlen) {
  mw_outbox_flush(ob);
  if (!ob->unstored) return MW_OK;
  snprintf(err, errlen, "the outbox cannot be written (%s)", ob->store_error);
  return strstr(ob->store_error, "full") ? MW_ERR_NOSPACE : MW_ERR_IO;
}

static void on_prepare(uv_prepare_t *h) {
  mw_outbox_t *ob = h->data;
  if (ob->want_pump || mw_outbox_store_in_batch(ob->st) || ob->unstored || (ob->connected && ob->q0head))
    mw_outbox_flush(ob);
}

static void external_change(mw_outbox_t *ob) {
  recount(ob);
  int64_t top = mw_outbox_store_max_seq(ob->st);
  if (top > ob->committed_top) ob->committed_top = top;
  ob->want_pump = true;
}

static void on_timer(uv_timer_t *t) {
  mw_outbox_t *ob = t->data;
  /* `moonwire outbox retry|drop` writes from another process. */
  if (mw_outbox_store_changed(ob->st)) external_change(ob);
  if (ob->unstored) try_restore(ob);
  /* An acknowledgement-only batch waiting for company is committed here at the latest. */
  if (mw_outbox_store_in_batch(ob->st) && commit_due(ob)) ob->want_pump = true;
}

/* PRECONNECT: a fresh libmosquitto client. Hand over what may have reached the broker
   already (seq <= sent_top), so libmosquitto sends it with DUP right after CONNACK. */
static void hand_over(mw_outbox_t *ob) {
  ob->conn_gen++;
  flight_clear(ob);
  ob->connected = false;
  if (mw_outbox_store_in_batch(ob->st) && !commit(ob)) return;
  plan(ob, 0, ob->cfg.window, true, ob->sent_top);
  send_planned(ob, true);
  if (ob->nflight > 0)
    MW_LOGI(COMP, "%d unacknowledged message(s) will be sent again (DUP) right after CONNACK", ob->nflight);
}

static void on_puback(mw_outbox_t *ob, int mid, int reason) {
  int i = flight_find(ob, mid);
  if (i < 0) return; /* not ours (a direct mw_mqtt_publish) */
  flight_t f = ob->flight[i];
  flight_remove(ob, i);
  ob->want_pump = true;
  if (mw_reason_is_error(reason)) {
    /* MQTT 5: the broker refused this message explicitly. A refusal that retrying cannot
       change goes to the dead letters at once; any other counts against the budget, and
       the message is sent again alone after a pause. */
    const char *name = mw_reason_name(reason);
    char what[400];
    snprintf(what, sizeof what, "the broker refused it with PUBACK %s (0x%02X): %s", name ? name : "?", reason,
             mw_reason_explain(reason));
    bool permanent = reason == 0x87 || reason == 0x90 || reason == 0x99 || reason == 0x83 || reason == 0x95;
    strike(ob, f.seq, what, permanent);
    if (!permanent) {
      if (!ob->rewound || f.seq - 1 < ob->rewind_to) ob->rewind_to = f.seq - 1;
      ob->rewound = true;
      ob->pause_until = now_ms(ob) + 1000;
    }
    return;
  }
  if (ob->unstored) {
    remember_delete(ob, f.seq); /* written with the rest once the storage works again */
  } else {
    mw_outbox_store_delete(ob->st, f.seq);
    remember_delete(ob, f.seq);
  }
  ob->pending--;
  ob->pending_bytes -= (int64_t)f.size;
  if (ob->pending <= 0) ob->pending = ob->pending_bytes = 0;
  ob->stats.acked++;
  emit(ob, MW_OUTBOX_EV_ACKED, f.seq, NULL);
}

static void on_disconnect(mw_outbox_t *ob, const mw_mqtt_event_t *ev) {
  ob->connected = false;
  ob->conn_gen++;
  uint64_t now = now_ms(ob);
  /* A message the broker closed the connection on (policy denial, oversize, forbidden topic)
     is the oldest one in flight: the broker handles a connection's packets in order and
     acknowledges everything before it. Silence (keepalive) proves nothing. The strike is
     written now (so the message travels alone next time) and judged at the next attempt. */
  if (ev->rc != 0 && ev->closed_by_broker && ob->nflight > 0 && !ob->unstored) {
    flight_t head = ob->flight[0];
    uint64_t after = now - head.sent_ms;
    row_info_t ri = {0};
    if (after <= ob->cfg.poison_window_ms) mw_outbox_store_get(ob->st, head.seq, take_info, &ri);
    if (ri.found) {
      ob->suspect.seq = head.seq;
      ob->suspect.strikes = ri.strikes + 1;
      snprintf(ob->suspect.what, sizeof ob->suspect.what,
               "the broker closed the connection %llu ms after a publish to '%s' without acknowledging it, and "
               "accepted the next connection at once: the thing's policy probably denies publishing there, or the "
               "message breaks a broker limit (size, topic)",
               (unsigned long long)after, ri.topic);
      must_commit(ob, 0);
      mw_outbox_store_strike(ob->st, head.seq, ob->suspect.strikes, ob->suspect.what);
      MW_LOGD(COMP, "message %lld is suspected of the close (%d of %d)", (long long)head.seq, ob->suspect.strikes,
              ob->cfg.poison_budget);
    }
    free(ri.topic);
  }
  flight_clear(ob);
  mw_outbox_flush(ob); /* commit the strike now: the next attempt may be far away */
}

/* CONNACK after a suspicious close: the broker is fine, so the close was the message's doing. */
static void confirm_suspect(mw_outbox_t *ob) {
  if (!ob->suspect.seq) return;
  int64_t seq = ob->suspect.seq;
  ob->suspect.seq = 0;
  row_info_t ri = {0};
  mw_outbox_store_get(ob->st, seq, take_info, &ri);
  if (!ri.found) return;
  ob->stats.strikes++;
  if (ri.strikes >= ob->cfg.poison_budget) {
    MW_LOGE(COMP,
            "message %lld to '%s' (%zu bytes) moved to the dead letters after %d attempt(s): %s. Delivery goes on "
            "with the next message; see `moonwire outbox list`",
            (long long)seq, ri.topic, ri.len, ri.strikes, ob->suspect.what);
    bury(ob, seq, ob->suspect.what);
  } else {
    MW_LOGW(COMP, "message %lld to '%s' (%zu bytes): %s (strike %d of %d; it is sent alone next time)",
            (long long)seq, ri.topic, ri.len, ob->suspect.what, ri.strikes, ob->cfg.poison_budget);
  }
  free(ri.topic);
}

/* The attempt after a suspicious close failed: the broker itself went away. Not the message. */
static void forgive_suspect(mw_outbox_t *ob) {
  if (!ob->suspect.seq) return;
  int64_t seq = ob->suspect.seq;
  ob->suspect.seq = 0;
  must_commit(ob, 0);
  mw_outbox_store_strike(ob->st, seq, ob->suspect.strikes - 1, NULL);
  MW_LOGD(COMP, "message %lld is not to blame: the broker could not be reached after the close", (long long)seq);
}

void mw_outbox_on_mqtt(mw_outbox_t *ob, const mw_mqtt_event_t *ev) {
  if (!ob || ob->freeing) return;
  switch (ev->type) {
  case MW_MQTT_EV_PRECONNECT: hand_over(ob); break;
  case MW_MQTT_EV_CONNECT:
    ob->connected = true;
    ob->want_pump = true;
    confirm_suspect(ob);
    /* Resends went out with CONNACK: their clock starts now. */
    for (int i = 0; i < ob->nflight; i++) ob->flight[i].sent_ms = now_ms(ob);
    break;
  case MW_MQTT_EV_PUBACK: on_puback(ob, ev->mid, ev->rc); break;
  case MW_MQTT_EV_DISCONNECT: on_disconnect(ob, ev); break;
  case MW_MQTT_EV_CONNECT_FAILED:
    ob->connected = false;
    ob->conn_gen++;
    forgive_suspect(ob);
    flight_clear(ob);
    break;
  case MW_MQTT_EV_STOPPED:
    ob->connected = false;
    ob->conn_gen++;
    mw_outbox_flush(ob);
    break;
  default: break;
  }
}

/* ------------------------------------------------------------------ publish */

static mw_status_t publish_qos0(mw_outbox_t *ob, const char *topic, const void *payload, size_t len, bool retain,
                                char *err, size_t errlen) {
  if (ob->connected) return mw_mqtt_publish(ob->mqtt, topic, payload, len, 0, retain, NULL, err, errlen);
  if (!ob->cfg.qos0_queue) {
    ob->stats.qos0_dropped++;
    snprintf(err, errlen, "not connected: QoS 0 message to '%s' dropped (outbox.qos0_offline = \"drop\")", topic);
    return MW_ERR_NOT_CONNECTED;
  }
  if (ob->nq0 >= ob->cfg.qos0_max) {
    if (ob->cfg.when_full == MW_OUTBOX_REFUSE) {
      ob->stats.qos0_dropped++;
      snprintf(err, errlen, "not connected and %d QoS 0 messages already wait (outbox.qos0_max): message refused",
               ob->nq0);
      return MW_ERR_BUSY;
    }
    q0_t *old = ob->q0head;
    ob->q0head = old->next;
    if (!ob->q0head) ob->q0tail = NULL;
    ob->nq0--;
    ob->stats.qos0_dropped++;
    free(old);
  }
  size_t tlen = strlen(topic);
  q0_t *q = malloc(sizeof *q + tlen + 1 + len);
  if (!q) {
    snprintf(err, errlen, "out of memory");
    return MW_ERR_NOMEM;
  }
  q->next = NULL;
  q->retain = retain;
  q->len = len;
  q->topic = (char *)(q + 1);
  memcpy(q->topic, topic, tlen + 1);
  if (len) memcpy(q->topic + tlen + 1, payload, len);
  if (ob->q0tail) ob->q0tail->next = q;
  else ob->q0head = q;
  ob->q0tail = q;
  ob->nq0++;
  return MW_OK;
}

/* Makes room by dropping the oldest pending messages (when_full = drop_oldest). */
static bool make_room(mw_outbox_t *ob, size_t size) {
  while (ob->pending > 0 &&
         (ob->pending + 1 > ob->cfg.max_messages || ob->pending_bytes + (int64_t)size > ob->cfg.max_bytes)) {
    int64_t seq;
    size_t dropped;
    if (mw_outbox_store_drop_oldest(ob->st, &seq, &dropped) != MW_OK) return false;
    ob->pending--;
    ob->pending_bytes -= (int64_t)dropped;
    ob->stats.dropped++;
    if (ob->stats.dropped == 1 || ob->stats.dropped % 1000 == 0)
      MW_LOGW(COMP, "outbox full: dropped the oldest message (%lld); %llu dropped so far (outbox.when_full = "
                    "\"drop_oldest\")",
              (long long)seq, (unsigned long long)ob->stats.dropped);
    emit(ob, MW_OUTBOX_EV_DROPPED, seq, NULL);
  }
  return true;
}

mw_status_t mw_outbox_publish(mw_outbox_t *ob, const char *topic, const void *payload, size_t len, int qos,
                              bool retain, int64_t *handle, char *err, size_t errlen) {
  if (handle) *handle = 0;
  if (qos == 0) return publish_qos0(ob, topic, payload, len, retain, err, errlen);
  size_t size = strlen(topic) + len;
  if ((int64_t)size > ob->cfg.max_bytes) {
    ob->stats.refused++;
    snprintf(err, errlen, "message of %zu bytes is larger than the whole outbox (outbox.max_bytes = %lld)", size,
             (long long)ob->cfg.max_bytes);
    return MW_ERR_TOO_LARGE;
  }
  if (ob->unstored) {
    ob->stats.refused++;
    snprintf(err, errlen, "the outbox cannot be written (%s): message to '%s' refused", ob->store_error, topic);
    return ob->store_error[0] && strstr(ob->store_error, "full") ? MW_ERR_NOSPACE : MW_ERR_IO;
  }
  if (ob->pending + 1 > ob->cfg.max_messages || ob->pending_bytes + (int64_t)size > ob->cfg.max_bytes) {
    if (ob->cfg.when_full == MW_OUTBOX_REFUSE || !make_room(ob, size)) {
      ob->stats.refused++;
      snprintf(err, errlen,
               "outbox full: %lld messages (%lld bytes) wait for the broker (outbox.max_messages = %lld, max_bytes = "
               "%lld); message to '%s' refused",
               (long long)ob->pending, (long long)ob->pending_bytes, (long long)ob->cfg.max_messages,
               (long long)ob->cfg.max_bytes, topic);
      return MW_ERR_BUSY;
    }
  }
  mw_outbox_msg_t m = {0};
  m.topic = topic;
  m.payload = payload;
  m.len = len;
  m.qos = 1;
  m.retain = retain;
  m.created_ms = wall_ms();
  int64_t seq = 0;
  mw_status_t st = mw_outbox_store_put(ob->st, &m, &seq, err, errlen);
  if (st != MW_OK) {
    ob->stats.refused++;
    /* SQLite may have rolled the whole batch back: what this turn accepted is in memory only. */
    if (!mw_outbox_store_in_batch(ob->st) && ob->nops > 0) store_failed(ob, err);
    return st;
  }
  must_commit(ob, seq);
  if (!remember_put(ob, seq, &m)) {
    /* Without the copy a failed commit could lose it: take it back. */
    mw_outbox_store_delete(ob->st, seq);
    ob->stats.refused++;
    snprintf(err, errlen, "out of memory");
    return MW_ERR_NOMEM;
  }
  ob->pending++;
  ob->pending_bytes += (int64_t)size;
  ob->stats.accepted++;
  ob->want_pump = true;
  if (handle) *handle = seq;
  /* One callback publishing a flood would otherwise keep every copy until the loop turns. */
  if (ob->nops >= MAX_BATCH) commit(ob);
  return MW_OK;
}

/* ------------------------------------------------------------------ dead letters */

mw_status_t mw_outbox_scan_dead(mw_outbox_t *ob, int64_t after, int limit, mw_outbox_row_fn fn, void *ud) {
  return mw_outbox_store_scan_dead(ob->st, after, limit, fn, ud);
}

mw_status_t mw_outbox_scan_pending(mw_outbox_t *ob, int64_t after, int limit, mw_outbox_row_fn fn, void *ud) {
  return mw_outbox_store_scan(ob->st, after, limit, fn, ud);
}

mw_status_t mw_outbox_requeue(mw_outbox_t *ob, int64_t id, int64_t *new_seq) {
  if (ob->unstored) return MW_ERR_IO;
  int64_t seq = 0;
  mw_status_t st = mw_outbox_store_requeue(ob->st, id, &seq);
  if (st != MW_OK) return st;
  must_commit(ob, seq);
  if (new_seq) *new_seq = seq;
  ob->stats.requeued++;
  ob->want_pump = true;
  recount(ob);
  return MW_OK;
}

mw_status_t mw_outbox_drop(mw_outbox_t *ob, int64_t id) {
  if (ob->unstored) return MW_ERR_IO;
  mw_status_t st = mw_outbox_store_drop_dead(ob->st, id);
  if (st == MW_OK) {
    must_commit(ob, 0);
    recount(ob);
  }
  return st;
}

/* ------------------------------------------------------------------ life cycle */

void mw_outbox_get_stats(mw_outbox_t *ob, mw_outbox_stats_t *st) {
  *st = ob->stats;
  st->durable = !mw_outbox_store_is_memory(ob->st);
  st->pending = ob->pending;
  st->pending_bytes = ob->pending_bytes;
  st->inflight = ob->nflight;
  st->dead = ob->dead;
  st->qos0_queued = ob->nq0;
  st->unstored = 0;
  if (ob->unstored)
    for (int i = 0; i < ob->nops; i++) st->unstored += ob->ops[i].put;
  st->oldest_ms = ob->pending > 0 ? mw_outbox_store_oldest_ms(ob->st) : 0;
  st->max_messages = ob->cfg.max_messages;
  st->max_bytes = ob->cfg.max_bytes;
}

const char *mw_outbox_path(const mw_outbox_t *ob) { return ob->path; }

static void handle_closed(uv_handle_t *h) {
  mw_outbox_t *ob = h->data;
  if (--ob->open_handles == 0) free(ob);
}

/* One process per outbox: two runtimes sending from the same rows would duplicate everything. */
static mw_status_t take_lock(mw_outbox_t *ob, char *err, size_t errlen) {
  char lock[PATH_MAX + 8];
  snprintf(lock, sizeof lock, "%s.lock", ob->path);
  ob->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (ob->lock_fd < 0) {
    snprintf(err, errlen, "cannot open %s: %s", lock, strerror(errno));
    return MW_ERR_IO;
  }
  if (flock(ob->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = "";
    ssize_t n = pread(ob->lock_fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    snprintf(err, errlen, "the outbox %s is in use by another moonwire process%s%s", ob->path,
             pid[0] ? " (pid " : "", pid[0] ? pid : "");
    if (pid[0]) strncat(err, ")", errlen - strlen(err) - 1);
    close(ob->lock_fd);
    ob->lock_fd = -1;
    return MW_ERR_BUSY;
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(ob->lock_fd, 0) == 0 && pwrite(ob->lock_fd, pid, (size_t)n, 0) != n) {
    /* only informative */
  }
  return MW_OK;
}

mw_status_t mw_outbox_new(uv_loop_t *loop, mw_mqtt_t *mqtt, const mw_outbox_config_t *cfg, mw_outbox_event_fn fn,
                          void *ud, mw_outbox_t **out, char *err, size_t errlen) {
  *out = NULL;
  mw_outbox_t *ob = calloc(1, sizeof *ob);
  if (!ob) {
    snprintf(err, errlen, "out of memory");
    return MW_ERR_NOMEM;
  }
  ob->loop = loop;
  ob->mqtt = mqtt;
  ob->cfg = *cfg;
  ob->fn = fn;
  ob->ud = ud;
  ob->lock_fd = -1;
  if (!ob->cfg.path) ob->cfg.path = ":memory:";
  if (ob->cfg.max_messages <= 0) ob->cfg.max_messages = 100000;
  if (ob->cfg.max_bytes <= 0) ob->cfg.max_bytes = 64 << 20;
  if (ob->cfg.qos0_max <= 0) ob->cfg.qos0_max = 1000;
  if (ob->cfg.poison_budget <= 0) ob->cfg.poison_budget = 3;
  if (!ob->cfg.poison_window_ms) ob->cfg.poison_window_ms = 5000;
  if (ob->cfg.window <= 0) ob->cfg.window = mqtt ? mw_mqtt_max_inflight(mqtt) : 100;
  ob->path = strdup(ob->cfg.path);
  ob->cfg.path = ob->path;
  mw_status_t st = ob->path ? MW_OK : MW_ERR_NOMEM;
  if (st == MW_OK && strcmp(ob->path, ":memory:") != 0) st = take_lock(ob, err, errlen);
  if (st == MW_OK) st = mw_outbox_store_open(ob->path, ob->cfg.sync, &ob->st, err, errlen);
  if (st != MW_OK) {
    if (ob->lock_fd >= 0) close(ob->lock_fd);
    free(ob->path);
    free(ob);
    return st;
  }
  ob->sent_mark = mw_outbox_store_sent_mark(ob->st);
  ob->sent_top = ob->sent_mark;
  ob->committed_top = mw_outbox_store_max_seq(ob->st);
  recount(ob);
  uv_prepare_init(loop, &ob->prepare);
  uv_timer_init(loop, &ob->timer);
  ob->prepare.data = ob->timer.data = ob;
  ob->open_handles = 2;
  uv_prepare_start(&ob->prepare, on_prepare);
  uv_timer_start(&ob->timer, on_timer, TIMER_MS, TIMER_MS);
  /* Neither keeps the loop alive on its own. */
  uv_unref((uv_handle_t *)&ob->prepare);
  uv_unref((uv_handle_t *)&ob->timer);
  if (ob->pending || ob->dead)
    MW_LOGI(COMP, "%lld message(s) wait in the outbox %s%s%lld dead letter(s)", (long long)ob->pending, ob->path,
            ob->dead ? "; " : "", (long long)ob->dead);
  *out = ob;
  return MW_OK;
}

void mw_outbox_free(mw_outbox_t *ob) {
  if (!ob) return;
  if (!ob->unstored && mw_outbox_store_in_batch(ob->st)) commit(ob);
  if (ob->unstored) {
    try_restore(ob);
    if (ob->unstored)
      MW_LOGE(COMP, "%d accepted write(s) could not be stored in %s and are lost: %s", ob->nops, ob->path,
              ob->store_error);
  }
  ob->freeing = true;
  ops_clear(ob);
  free(ob->ops);
  free(ob->flight);
  free(ob->plan);
  free(ob->arena);
  while (ob->q0head) {
    q0_t *q = ob->q0head;
    ob->q0head = q->next;
    free(q);
  }
  if (ob->nq0) MW_LOGW(COMP, "%d QoS 0 message(s) queued while offline were not sent", ob->nq0);
  mw_outbox_store_close(ob->st);
  ob->st = NULL;
  if (ob->lock_fd >= 0) close(ob->lock_fd);
  free(ob->path);
  ob->path = NULL;
  uv_close((uv_handle_t *)&ob->prepare, handle_closed);
  uv_close((uv_handle_t *)&ob->timer, handle_closed);
}

/* ------------------------------------------------------------------ default location */

static int mkdirs(const char *path) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
  return 0;
}

mw_status_t mw_outbox_default_path(const char *client_id, char *buf, size_t len, char *err, size_t errlen) {
  char dir[PATH_MAX];
  const char *env = getenv("MOONWIRE_STATE_DIR");
  const char *xdg = getenv("XDG_STATE_HOME");
  const char *home = getenv("HOME");
  if (env && *env) snprintf(dir, sizeof dir, "%s", env);
  else if (geteuid() == 0) snprintf(dir, sizeof dir, "/var/lib/moonwire");
  else if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/moonwire", xdg);
  else if (home && *home) snprintf(dir, sizeof dir, "%s/.local/state/moonwire", home);
  else {
    snprintf(err, errlen, "no place for the outbox: set outbox.path (or $MOONWIRE_STATE_DIR)");
    return MW_ERR_INVALID;
  }
  if (mkdirs(dir) != 0) {
    snprintf(err, errlen, "cannot create %s for the outbox: %s (set outbox.path)", dir, strerror(errno));
    return MW_ERR_IO;
  }
  /* A client id may contain ':' (AWS allows it); keep it, file names may too. '/' may not. */
  char name[160];
  snprintf(name, sizeof name, "%s", client_id);
  for (char *p = name; *p; p++)
    if (*p == '/') *p = '_';
  if ((size_t)snprintf(buf, len, "%s/%s.outbox.db", dir, name) >= len) {
    snprintf(err, errlen, "outbox path too long");
    return MW_ERR_INVALID;
  }
  return MW_OK;
}
