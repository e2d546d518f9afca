/*
** The outbox: every QoS 1 publish goes through here, so none is lost around disconnects,
** restarts or power loss, and no single bad message can keep the connection cycling.
**
** - A QoS 1 message is stored (mw_outbox_store) when it is published, sent only after the
**   batch it belongs to is committed, and removed only when its PUBACK arrives. Commits
**   are batched per event-loop turn (one commit, hence at most one fsync, per turn).
** - At most `window` messages are in flight; the rest wait in the database, so an outage
**   of any length costs disk, not memory, and libmosquitto never holds a long queue.
** - Retransmission is the outbox's job, not libmosquitto's: every connection starts with a
**   fresh libmosquitto client (mw_mqtt resets it), and the messages that may have reached
**   the broker already (seq <= the persisted sent mark) are handed to it before it
**   connects, which makes libmosquitto send them with the DUP flag right after CONNACK.
**   Then the rest follow in sequence order.
** - Poison messages: when the broker closes the connection soon after a message was sent
**   and before its PUBACK (what AWS IoT does on a policy denial, an oversized message or a
**   forbidden topic), that message gets a strike and is sent alone on the next connection.
**   After `poison_budget` strikes it moves to the dead letters and delivery goes on. With
**   MQTT 5 a PUBACK carrying an error reason code counts the same way.
** - QoS 0: sent at once when connected; while offline either dropped (counted) or kept in
**   a bounded memory queue, by configuration.
**
** All of it runs on the loop thread; events reach the owner through one callback.
*/
#ifndef MW_OUTBOX_H
#define MW_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mw_mqtt.h"
#include "mw_outbox_store.h"
#include "mw_status.h"

typedef struct mw_outbox mw_outbox_t;

typedef enum { MW_OUTBOX_REFUSE = 0, MW_OUTBOX_DROP_OLDEST } mw_outbox_when_full_t;

typedef struct {
  const char *path;              /* database file, or ":memory:" (not durable) */
  mw_outbox_sync_t sync;
  int64_t max_messages;          /* 0 = 100000 */
  int64_t max_bytes;             /* topic + payload bytes; 0 = 64 MiB */
  mw_outbox_when_full_t when_full;
  bool qos0_queue;               /* QoS 0 while offline: keep in memory (true) or drop (false) */
  int qos0_max;                  /* bound of that memory queue; 0 = 1000 */
  int poison_budget;             /* strikes before a message is dead-lettered; 0 = 3 */
  uint32_t poison_window_ms;     /* a close within this time after the send is a strike; 0 = 5000 */
  int window;                    /* QoS 1 messages in flight; 0 = 100 */
} mw_outbox_config_t;

typedef enum {
  MW_OUTBOX_EV_ACKED = 1,    /* seq: PUBACK received, message removed */
  MW_OUTBOX_EV_DEAD_LETTER,  /* msg: moved to the dead letters; msg->reason says why */
  MW_OUTBOX_EV_DROPPED,      /* seq: dropped to make room (when_full = drop_oldest) */
} mw_outbox_event_type_t;

typedef struct {
  mw_outbox_event_type_t type;
  int64_t seq;
  const mw_outbox_msg_t *msg; /* DEAD_LETTER only; valid during the call */
} mw_outbox_event_t;

typedef void (*mw_outbox_event_fn)(void *ud, const mw_outbox_event_t *ev);

/*
** Opens the store and takes an exclusive lock on it (a second process with the same outbox
** fails here, with the pid of the holder). mqtt's events must be passed to mw_outbox_on_mqtt.
*/
mw_status_t mw_outbox_new(uv_loop_t *loop, mw_mqtt_t *mqtt, const mw_outbox_config_t *cfg, mw_outbox_event_fn fn,
                          void *ud, mw_outbox_t **out, char *err, size_t errlen);
/* Commits what is pending and closes; the loop must run once more to close the handles. */
void mw_outbox_free(mw_outbox_t *ob);

/* Feed every mw_mqtt event here (PRECONNECT, CONNECT, DISCONNECT, PUBACK, STOPPED matter). */
void mw_outbox_on_mqtt(mw_outbox_t *ob, const mw_mqtt_event_t *ev);

/*
** Accepts a message. QoS 1: stored, *handle = its sequence number; sent when connected.
** QoS 0: sent now if connected (*handle = 0), else queued in memory or dropped per config.
** Errors (nothing accepted): MW_ERR_TOO_LARGE (over max_bytes alone), MW_ERR_BUSY (outbox or
** QoS 0 queue full and when_full = refuse), MW_ERR_NOSPACE / MW_ERR_IO (the database cannot
** be written), MW_ERR_NOT_CONNECTED (QoS 0 offline with qos0 dropping).
*/
mw_status_t mw_outbox_publish(mw_outbox_t *ob, const char *topic, const void *payload, size_t len, int qos,
                              bool retain, int64_t *handle, char *err, size_t errlen);

/* Commits the batch and sends what the window allows; runs by itself before the loop waits. */
void mw_outbox_flush(mw_outbox_t *ob);
/*
** The same, on demand, for a caller that wants what it accepted durable now rather than at
** the end of the loop turn. MW_OK once committed; MW_ERR_NOSPACE / MW_ERR_IO (err says why)
** when the storage cannot be written (the messages are then kept in memory, see above).
*/
mw_status_t mw_outbox_sync(mw_outbox_t *ob, char *err, size_t errlen);

typedef struct {
  bool durable;
  int64_t pending, pending_bytes; /* stored, not yet acknowledged */
  int64_t inflight;               /* sent on this connection, awaiting PUBACK */
  int64_t dead;                   /* dead letters */
  int64_t qos0_queued;
  int64_t unstored;               /* accepted but not yet durably stored (after a failed commit) */
  int64_t oldest_ms;              /* created time of the oldest pending message, 0 if none */
  int64_t max_messages, max_bytes;
  uint64_t accepted, acked, sent, resent, dropped, refused, qos0_dropped, qos0_sent_late;
  uint64_t strikes, dead_lettered, requeued, commits, commit_failures;
} mw_outbox_stats_t;
void mw_outbox_get_stats(mw_outbox_t *ob, mw_outbox_stats_t *st);
const char *mw_outbox_path(const mw_outbox_t *ob);

/* Dead letters and pending messages, in order; see mw_outbox_store_scan*. */
mw_status_t mw_outbox_scan_dead(mw_outbox_t *ob, int64_t after, int limit, mw_outbox_row_fn fn, void *ud);
mw_status_t mw_outbox_scan_pending(mw_outbox_t *ob, int64_t after, int limit, mw_outbox_row_fn fn, void *ud);
/* Moves a dead letter back to the end of the queue; *new_seq is its new handle. */
mw_status_t mw_outbox_requeue(mw_outbox_t *ob, int64_t id, int64_t *new_seq);
/* Deletes a dead letter. */
mw_status_t mw_outbox_drop(mw_outbox_t *ob, int64_t id);

/*
** Where a client's outbox lives when the configuration does not say: $MOONWIRE_STATE_DIR,
** else /var/lib/moonwire as root, else $XDG_STATE_HOME/moonwire (~/.local/state/moonwire),
** file "<client_id>.outbox.db". Creates the directory (0700) if needed.
*/
mw_status_t mw_outbox_default_path(const char *client_id, char *buf, size_t len, char *err, size_t errlen);

#endif
