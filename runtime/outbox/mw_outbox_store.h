/*
** The outbox's storage: unacknowledged QoS 1 messages and dead letters in SQLite.
**
** One database file per client (or ":memory:" for the non-durable mode). Rows are keyed
** by a sequence number that is never reused (AUTOINCREMENT), so a handle stays unique
** for the life of the database and ordering is the order of acceptance.
**
** Writes are batched: every write opens a transaction if none is open, and nothing is
** durable until mw_outbox_store_commit(). The delivery engine (mw_outbox_batch.c) commits once
** per event-loop turn, before it sends anything.
**
** Another process (the `moonwire outbox` command) may open the same file at the same
** time: WAL mode lets it read while the runtime writes, and a busy timeout serialises
** writers. mw_outbox_store_changed() tells the runtime that someone else committed.
*/
#ifndef MW_OUTBOX_STORE_H
#define MW_OUTBOX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"

typedef struct mw_outbox_store mw_outbox_store_t;

typedef enum {
  MW_OUTBOX_SYNC_OFF = 0, /* no fsync: survives a crash of the process only by luck of the page cache */
  MW_OUTBOX_SYNC_NORMAL,  /* WAL synced at checkpoints: survives kill -9, may lose recent commits on power loss */
  MW_OUTBOX_SYNC_FULL,    /* WAL synced at every commit: survives power loss */
} mw_outbox_sync_t;

typedef struct {
  int64_t seq;        /* pending: the handle; dead letter: its id (the seq it had) */
  const char *topic;
  const void *payload;
  size_t len;
  int qos;
  bool retain;
  int64_t created_ms; /* wall clock, ms since the epoch */
  int strikes;        /* connections the broker closed right after this message */
  const char *reason; /* last strike (pending) or why it died (dead letter); may be NULL */
  int64_t dead_ms;    /* dead letters: when it was moved there */
} mw_outbox_msg_t;

/* Opens (creating if needed) the database at path, or an in-memory one for ":memory:". */
mw_status_t mw_outbox_store_open(const char *path, mw_outbox_sync_t sync, mw_outbox_store_t **out, char *err,
                                 size_t errlen);
void mw_outbox_store_close(mw_outbox_store_t *st);
bool mw_outbox_store_is_memory(const mw_outbox_store_t *st);
/* The last SQLite error message. */
const char *mw_outbox_store_errmsg(const mw_outbox_store_t *st);

/* Ends the open batch. On failure the batch is rolled back and err says why. */
mw_status_t mw_outbox_store_commit(mw_outbox_store_t *st, char *err, size_t errlen);
void mw_outbox_store_rollback(mw_outbox_store_t *st);
bool mw_outbox_store_in_batch(const mw_outbox_store_t *st);

/*
** Appends a message. *seq 0: a new sequence number is assigned and stored in *seq; a
** positive *seq re-inserts a message under the number it already had (after a failed commit).
*/
mw_status_t mw_outbox_store_put(mw_outbox_store_t *st, const mw_outbox_msg_t *m, int64_t *seq, char *err,
                                size_t errlen);
/* Removes a pending message (PUBACK). MW_ERR_NOT_FOUND if there is none with that seq. */
mw_status_t mw_outbox_store_delete(mw_outbox_store_t *st, int64_t seq);
/* Records a strike against a pending message. */
mw_status_t mw_outbox_store_strike(mw_outbox_store_t *st, int64_t seq, int strikes, const char *reason);
/* Moves a pending message to the dead letters (its id is its seq). */
mw_status_t mw_outbox_store_bury(mw_outbox_store_t *st, int64_t seq, const char *reason, int64_t now_ms);
/* Moves a dead letter back to the end of the outbox with a new seq (strikes cleared). */
mw_status_t mw_outbox_store_requeue(mw_outbox_store_t *st, int64_t id, int64_t *new_seq);
/* Deletes a dead letter. MW_ERR_NOT_FOUND if there is none with that id. */
mw_status_t mw_outbox_store_drop_dead(mw_outbox_store_t *st, int64_t id);
/* Deletes the oldest pending message; *seq and *size say which (MW_ERR_NOT_FOUND when empty). */
mw_status_t mw_outbox_store_drop_oldest(mw_outbox_store_t *st, int64_t *seq, size_t *size);

/* Every pending message with seq <= this mark may have reached the broker already. */
int64_t mw_outbox_store_sent_mark(mw_outbox_store_t *st);
mw_status_t mw_outbox_store_set_sent_mark(mw_outbox_store_t *st, int64_t mark);

/* Row callback; the message is valid during the call only. Nonzero stops the scan. */
typedef int (*mw_outbox_row_fn)(void *ud, const mw_outbox_msg_t *m);
/* Pending messages with seq > after, in seq order, at most limit (<= 0: all). */
mw_status_t mw_outbox_store_scan(mw_outbox_store_t *st, int64_t after, int limit, mw_outbox_row_fn fn, void *ud);
/* Dead letters with id > after, in id order, at most limit (<= 0: all). */
mw_status_t mw_outbox_store_scan_dead(mw_outbox_store_t *st, int64_t after, int limit, mw_outbox_row_fn fn,
                                      void *ud);
/* One pending message (MW_ERR_NOT_FOUND when there is none). */
mw_status_t mw_outbox_store_get(mw_outbox_store_t *st, int64_t seq, mw_outbox_row_fn fn, void *ud);

typedef struct {
  int64_t pending, pending_bytes; /* bytes: topic + payload */
  int64_t dead, dead_bytes;
  int64_t oldest_ms;              /* created_ms of the oldest pending message, 0 if none */
} mw_outbox_counts_t;
mw_status_t mw_outbox_store_counts(mw_outbox_store_t *st, mw_outbox_counts_t *c);
/* The highest seq of a pending message, 0 if there is none. */
int64_t mw_outbox_store_max_seq(mw_outbox_store_t *st);
/* The seq of the n-th pending message after seq `after` (n >= 1), 0 if there are fewer. */
int64_t mw_outbox_store_nth_after(mw_outbox_store_t *st, int64_t after, int n);
/* created_ms of the oldest pending message, 0 if there is none. */
int64_t mw_outbox_store_oldest_ms(mw_outbox_store_t *st);

/* True when another connection committed since the last call. */
bool mw_outbox_store_changed(mw_outbox_store_t *st);

#endif
