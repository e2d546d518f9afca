/*
** Poison messages: strikes against a message the broker closed the connection on or refused,
** the verdict on a suspect at the next attempt, and the dead letters a message moves to when
** its budget is spent (plus the owner's operations on them: list, requeue, drop).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_outbox_int.h"

int mw__outbox_take_info(void *ud, const mw_outbox_msg_t *m) {
  mw_outbox_row_info_t *ri = ud;
  ri->topic = strdup(m->topic);
  ri->len = m->len;
  ri->strikes = m->strikes;
  ri->found = ri->topic != NULL;
  return 1;
}

/* A message copied out of the database, so the owner can be told after it has moved. */
static int copy_row(void *ud, const mw_outbox_msg_t *m) {
  mw__outbox_msg_dup(m, ud);
  return 1;
}

void mw__outbox_bury(mw_outbox_t *ob, int64_t seq, const char *reason) {
  mw_outbox_msg_t copy = {0};
  mw_outbox_store_get(ob->st, seq, copy_row, &copy);
  mw__outbox_must_commit(ob, 0);
  if (mw_outbox_store_bury(ob->st, seq, reason, mw__outbox_wall_ms()) != MW_OK) {
    MW_LOGE(COMP, "cannot move message %lld to the dead letters: %s", (long long)seq, mw_outbox_store_errmsg(ob->st));
    free((void *)copy.topic);
    return;
  }
  ob->stats.dead_lettered++;
  mw__outbox_recount(ob);
  if (copy.topic) {
    copy.reason = reason;
    copy.dead_ms = mw__outbox_wall_ms();
    mw__outbox_emit(ob, MW_OUTBOX_EV_DEAD_LETTER, seq, &copy);
    free((void *)copy.topic);
  }
}

/*
** The connection ended, or the broker refused a message, right after message seq: count it
** against the message, and dead-letter it when its budget is spent.
*/
void mw__outbox_strike(mw_outbox_t *ob, int64_t seq, const char *what, bool final) {
  if (ob->unstored) return; /* the storage is failing: no verdicts until it works again */
  mw_outbox_row_info_t ri = {0};
  mw_outbox_store_get(ob->st, seq, mw__outbox_take_info, &ri);
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
    mw__outbox_must_commit(ob, 0);
    mw_outbox_store_strike(ob->st, seq, strikes, reason);
    mw__outbox_bury(ob, seq, reason);
  } else {
    MW_LOGW(COMP, "message %lld to '%s' (%zu bytes): %s (strike %d of %d; it is sent alone next time)",
            (long long)seq, ri.topic, ri.len, reason, strikes, ob->cfg.poison_budget);
    mw__outbox_must_commit(ob, 0);
    mw_outbox_store_strike(ob->st, seq, strikes, reason);
  }
  free(ri.topic);
}

/* CONNACK after a suspicious close: the broker is fine, so the close was the message's doing. */
void mw__outbox_confirm_suspect(mw_outbox_t *ob) {
  if (!ob->suspect.seq) return;
  int64_t seq = ob->suspect.seq;
  ob->suspect.seq = 0;
  mw_outbox_row_info_t ri = {0};
  mw_outbox_store_get(ob->st, seq, mw__outbox_take_info, &ri);
  if (!ri.found) return;
  ob->stats.strikes++;
  if (ri.strikes >= ob->cfg.poison_budget) {
    MW_LOGE(COMP,
            "message %lld to '%s' (%zu bytes) moved to the dead letters after %d attempt(s): %s. Delivery goes on "
            "with the next message; see `moonwire outbox list`",
            (long long)seq, ri.topic, ri.len, ri.strikes, ob->suspect.what);
    mw__outbox_bury(ob, seq, ob->suspect.what);
  } else {
    MW_LOGW(COMP, "message %lld to '%s' (%zu bytes): %s (strike %d of %d; it is sent alone next time)",
            (long long)seq, ri.topic, ri.len, ob->suspect.what, ri.strikes, ob->cfg.poison_budget);
  }
  free(ri.topic);
}

/* The attempt after a suspicious close failed: the broker itself went away. Not the message. */
void mw__outbox_forgive_suspect(mw_outbox_t *ob) {
  if (!ob->suspect.seq) return;
  int64_t seq = ob->suspect.seq;
  ob->suspect.seq = 0;
  mw__outbox_must_commit(ob, 0);
  mw_outbox_store_strike(ob->st, seq, ob->suspect.strikes - 1, NULL);
  MW_LOGD(COMP, "message %lld is not to blame: the broker could not be reached after the close", (long long)seq);
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
  mw__outbox_must_commit(ob, seq);
  if (new_seq) *new_seq = seq;
  ob->stats.requeued++;
  ob->want_pump = true;
  mw__outbox_recount(ob);
  return MW_OK;
}

mw_status_t mw_outbox_drop(mw_outbox_t *ob, int64_t id) {
  if (ob->unstored) return MW_ERR_IO;
  mw_status_t st = mw_outbox_store_drop_dead(ob->st, id);
  if (st == MW_OK) {
    mw__outbox_must_commit(ob, 0);
    mw__outbox_recount(ob);
  }
  return st;
}
