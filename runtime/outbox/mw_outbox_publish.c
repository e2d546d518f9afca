/*
** Accepting a message: QoS 1 into the open batch within the outbox's limits (refuse, or drop
** the oldest), QoS 0 sent at once or kept in a bounded memory queue while offline.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_outbox_int.h"

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
    mw_outbox_q0_t *old = ob->q0head;
    ob->q0head = old->next;
    if (!ob->q0head) ob->q0tail = NULL;
    ob->nq0--;
    ob->stats.qos0_dropped++;
    free(old);
  }
  size_t tlen = strlen(topic);
  mw_outbox_q0_t *q = malloc(sizeof *q + tlen + 1 + len);
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
    mw__outbox_emit(ob, MW_OUTBOX_EV_DROPPED, seq, NULL);
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
  m.created_ms = mw__outbox_wall_ms();
  int64_t seq = 0;
  mw_status_t st = mw_outbox_store_put(ob->st, &m, &seq, err, errlen);
  if (st != MW_OK) {
    ob->stats.refused++;
    /* SQLite may have rolled the whole batch back: what this turn accepted is in memory only. */
    if (!mw_outbox_store_in_batch(ob->st) && ob->nops > 0) mw__outbox_store_failed(ob, err);
    return st;
  }
  mw__outbox_must_commit(ob, seq);
  if (!mw__outbox_remember_put(ob, seq, &m)) {
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
  if (ob->nops >= MAX_BATCH) mw__outbox_commit(ob);
  return MW_OK;
}
