/*
** Internals shared by the outbox's delivery engine files (mw_outbox*.c): the outbox's state
** and the helpers one part calls in another. The public API is mw_outbox.h; the storage
** underneath is mw_outbox_store.h.
*/
#ifndef MW_OUTBOX_INT_H
#define MW_OUTBOX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "mw_outbox.h"

#define COMP "outbox"
#define MAX_BATCH 4096 /* writes per transaction before an early commit */

/* A message handed to libmosquitto on the current connection, awaiting its PUBACK. */
typedef struct {
  int64_t seq;
  int mid;
  size_t size;
  uint64_t sent_ms; /* loop time of the send (of CONNACK for resends handed over before it) */
} mw_outbox_flight_t;

/* A write of the open batch, remembered until the batch is committed. */
typedef struct {
  int64_t seq;
  bool put;         /* true: the message below; false: a delete (PUBACK) */
  mw_outbox_msg_t msg; /* put: topic and payload owned, in one allocation */
} mw_outbox_op_t;

/* A row planned for sending; topic and payload live in the outbox's arena at off. */
typedef struct {
  int64_t seq;
  size_t off, tlen, len;
  bool retain;
} mw_outbox_planned_t;

/* A QoS 0 message kept in memory while offline. */
typedef struct mw_outbox_q0 {
  struct mw_outbox_q0 *next;
  bool retain;
  size_t len;
  char *topic;
  /* topic and payload follow */
} mw_outbox_q0_t;

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
  mw_outbox_flight_t *flight; /* in send order */
  int nflight, capflight;

  mw_outbox_op_t *ops; /* writes of the open batch (kept to redo them if the commit fails) */
  int nops, capops;
  bool unstored;    /* a commit failed: ops wait to be written again; new QoS 1 is refused */
  char store_error[256];
  uint64_t retry_at;

  mw_outbox_q0_t *q0head, *q0tail;
  int nq0;

  mw_outbox_planned_t *plan; /* rows of the current flush, copied out of the database */
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

static inline uint64_t mw__outbox_now_ms(mw_outbox_t *ob) { return uv_now(ob->loop); }

static inline int64_t mw__outbox_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void mw__outbox_emit(mw_outbox_t *ob, mw_outbox_event_type_t type, int64_t seq,
                                   const mw_outbox_msg_t *msg) {
  if (!ob->fn) return;
  mw_outbox_event_t ev = {type, seq, msg};
  ob->fn(ob->ud, &ev);
}

/* ------------------------------------------------------------------ batch (mw_outbox_batch.c) */

void mw__outbox_ops_clear(mw_outbox_t *ob);
/* A copy of m (topic and payload in one allocation, freed with the topic); reason is not kept. */
bool mw__outbox_msg_dup(const mw_outbox_msg_t *m, mw_outbox_msg_t *out);
/* Remembers a write of the open batch, to redo it should the commit fail. */
bool mw__outbox_remember_put(mw_outbox_t *ob, int64_t seq, const mw_outbox_msg_t *m);
void mw__outbox_remember_delete(mw_outbox_t *ob, int64_t seq);
/* Pending and dead counts from the database, plus what waits in memory after a failed commit. */
void mw__outbox_recount(mw_outbox_t *ob);
/* The batch could not be written: enters the unstored state. */
void mw__outbox_store_failed(mw_outbox_t *ob, const char *why);
/* Marks the open batch as one that must be committed at the end of this turn. */
void mw__outbox_must_commit(mw_outbox_t *ob, int64_t seq);
/* Commits the open batch. Returns false (and enters the unstored state) on failure. */
bool mw__outbox_commit(mw_outbox_t *ob);
/* Whether the open batch is to be committed now (acknowledgements alone may wait a little). */
bool mw__outbox_commit_due(mw_outbox_t *ob);
/* In the unstored state, writes the kept batch again (at most every RETRY_STORE_MS). */
void mw__outbox_try_restore(mw_outbox_t *ob);

/* ------------------------------------------------------------------ verdicts (mw_outbox_dead.c) */

/* A row's topic (malloc'd, the caller frees it), size and strikes, from mw_outbox_store_get. */
typedef struct {
  char *topic;
  size_t len;
  int strikes;
  bool found;
} mw_outbox_row_info_t;
int mw__outbox_take_info(void *ud, const mw_outbox_msg_t *m);
/* Moves message seq to the dead letters and tells the owner. */
void mw__outbox_bury(mw_outbox_t *ob, int64_t seq, const char *reason);
/* A strike against message seq; final (or a spent budget) dead-letters it. */
void mw__outbox_strike(mw_outbox_t *ob, int64_t seq, const char *what, bool final);
/* The verdict on ob->suspect: at CONNACK it stands, after a failed attempt it is taken back. */
void mw__outbox_confirm_suspect(mw_outbox_t *ob);
void mw__outbox_forgive_suspect(mw_outbox_t *ob);

/* ------------------------------------------------------------------ sending (mw_outbox_send.c) */

/* The in-flight table of the current connection. */
void mw__outbox_flight_clear(mw_outbox_t *ob);
int mw__outbox_flight_find(mw_outbox_t *ob, int mid);
void mw__outbox_flight_remove(mw_outbox_t *ob, int i);
/* PRECONNECT: hands what may have reached the broker already to the fresh client. */
void mw__outbox_hand_over(mw_outbox_t *ob);

#endif
