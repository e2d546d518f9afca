/*
** What the MQTT client reports, applied to the outbox: PUBACKs (removal, or an MQTT 5
** refusal counted against the message), a close by the broker (which makes the oldest
** message in flight a suspect), CONNACK and failed attempts (the suspect's verdict).
*/
#include <stdio.h>
#include <stdlib.h>

#include "mw_log.h"
#include "mw_outbox_int.h"
#include "mw_reason.h"

static void on_puback(mw_outbox_t *ob, int mid, int reason) {
  int i = mw__outbox_flight_find(ob, mid);
  if (i < 0) return; /* not ours (a direct mw_mqtt_publish) */
  mw_outbox_flight_t f = ob->flight[i];
  mw__outbox_flight_remove(ob, i);
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
    mw__outbox_strike(ob, f.seq, what, permanent);
    if (!permanent) {
      if (!ob->rewound || f.seq - 1 < ob->rewind_to) ob->rewind_to = f.seq - 1;
      ob->rewound = true;
      ob->pause_until = mw__outbox_now_ms(ob) + 1000;
    }
    return;
  }
  if (ob->unstored) {
    mw__outbox_remember_delete(ob, f.seq); /* written with the rest once the storage works again */
  } else {
    mw_outbox_store_delete(ob->st, f.seq);
    mw__outbox_remember_delete(ob, f.seq);
  }
  ob->pending--;
  ob->pending_bytes -= (int64_t)f.size;
  if (ob->pending <= 0) ob->pending = ob->pending_bytes = 0;
  ob->stats.acked++;
  mw__outbox_emit(ob, MW_OUTBOX_EV_ACKED, f.seq, NULL);
}

static void on_disconnect(mw_outbox_t *ob, const mw_mqtt_event_t *ev) {
  ob->connected = false;
  ob->conn_gen++;
  uint64_t now = mw__outbox_now_ms(ob);
  /* A message the broker closed the connection on (policy denial, oversize, forbidden topic)
     is the oldest one in flight: the broker handles a connection's packets in order and
     acknowledges everything before it. Silence (keepalive) proves nothing. The strike is
     written now (so the message travels alone next time) and judged at the next attempt. */
  if (ev->rc != 0 && ev->closed_by_broker && ob->nflight > 0 && !ob->unstored) {
    mw_outbox_flight_t head = ob->flight[0];
    uint64_t after = now - head.sent_ms;
    mw_outbox_row_info_t ri = {0};
    if (after <= ob->cfg.poison_window_ms) mw_outbox_store_get(ob->st, head.seq, mw__outbox_take_info, &ri);
    if (ri.found) {
      ob->suspect.seq = head.seq;
      ob->suspect.strikes = ri.strikes + 1;
      snprintf(ob->suspect.what, sizeof ob->suspect.what,
               "the broker closed the connection %llu ms after a publish to '%s' without acknowledging it, and "
               "accepted the next connection at once: the thing's policy probably denies publishing there, or the "
               "message breaks a broker limit (size, topic)",
               (unsigned long long)after, ri.topic);
      mw__outbox_must_commit(ob, 0);
      mw_outbox_store_strike(ob->st, head.seq, ob->suspect.strikes, ob->suspect.what);
      MW_LOGD(COMP, "message %lld is suspected of the close (%d of %d)", (long long)head.seq, ob->suspect.strikes,
              ob->cfg.poison_budget);
    }
    free(ri.topic);
  }
  mw__outbox_flight_clear(ob);
  mw_outbox_flush(ob); /* commit the strike now: the next attempt may be far away */
}

void mw_outbox_on_mqtt(mw_outbox_t *ob, const mw_mqtt_event_t *ev) {
  if (!ob || ob->freeing) return;
  switch (ev->type) {
  case MW_MQTT_EV_PRECONNECT: mw__outbox_hand_over(ob); break;
  case MW_MQTT_EV_CONNECT:
    ob->connected = true;
    ob->want_pump = true;
    mw__outbox_confirm_suspect(ob);
    /* Resends went out with CONNACK: their clock starts now. */
    for (int i = 0; i < ob->nflight; i++) ob->flight[i].sent_ms = mw__outbox_now_ms(ob);
    break;
  case MW_MQTT_EV_PUBACK: on_puback(ob, ev->mid, ev->rc); break;
  case MW_MQTT_EV_DISCONNECT: on_disconnect(ob, ev); break;
  case MW_MQTT_EV_CONNECT_FAILED:
    ob->connected = false;
    ob->conn_gen++;
    mw__outbox_forgive_suspect(ob);
    mw__outbox_flight_clear(ob);
    break;
  case MW_MQTT_EV_STOPPED:
    ob->connected = false;
    ob->conn_gen++;
    mw_outbox_flush(ob);
    break;
  default: break;
  }
}
