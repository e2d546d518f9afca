/*
** The outbox's batch: the writes of the current loop turn (new messages, acknowledgements,
** strikes) go into one open SQLite transaction, committed once per turn. Each write is also
** remembered in memory until its commit, so that a batch the storage refuses (disk full, I/O
** error) is kept and written again later instead of being lost.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_outbox_int.h"

#define RETRY_STORE_MS 1000 /* after a failed commit, how often to try writing again */
#define ACK_COMMIT_MS 200   /* an acknowledgement-only batch may wait this long for company */

static void op_free(mw_outbox_op_t *o) {
  if (o->put) free((void *)o->msg.topic);
}

void mw__outbox_ops_clear(mw_outbox_t *ob) {
  for (int i = 0; i < ob->nops; i++) op_free(&ob->ops[i]);
  ob->nops = 0;
}

static mw_outbox_op_t *op_add(mw_outbox_t *ob) {
  if (ob->nops == ob->capops) {
    int cap = ob->capops ? ob->capops * 2 : 64;
    mw_outbox_op_t *n = realloc(ob->ops, sizeof *n * (size_t)cap);
    if (!n) return NULL;
    ob->ops = n;
    ob->capops = cap;
  }
  mw_outbox_op_t *o = &ob->ops[ob->nops++];
  memset(o, 0, sizeof *o);
  return o;
}

bool mw__outbox_msg_dup(const mw_outbox_msg_t *m, mw_outbox_msg_t *out) {
  size_t tlen = strlen(m->topic);
  char *buf = malloc(tlen + 1 + m->len + 1);
  if (!buf) return false;
  memcpy(buf, m->topic, tlen + 1);
  if (m->len) memcpy(buf + tlen + 1, m->payload, m->len);
  *out = *m;
  out->topic = buf;
  out->payload = buf + tlen + 1;
  out->reason = NULL;
  return true;
}

bool mw__outbox_remember_put(mw_outbox_t *ob, int64_t seq, const mw_outbox_msg_t *m) {
  mw_outbox_msg_t copy;
  if (!mw__outbox_msg_dup(m, &copy)) return false;
  mw_outbox_op_t *o = op_add(ob);
  if (!o) {
    free((void *)copy.topic);
    return false;
  }
  o->put = true;
  o->seq = seq;
  o->msg = copy;
  return true;
}

void mw__outbox_remember_delete(mw_outbox_t *ob, int64_t seq) {
  mw_outbox_op_t *o = op_add(ob);
  if (o) o->seq = seq;
}

void mw__outbox_recount(mw_outbox_t *ob) {
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
void mw__outbox_store_failed(mw_outbox_t *ob, const char *why) {
  ob->stats.commit_failures++;
  if (!ob->unstored)
    MW_LOGE(COMP, "%s (%s); %d accepted write(s) wait in memory, new QoS 1 messages are refused until it can be "
                  "written again",
            why, ob->path, ob->nops);
  snprintf(ob->store_error, sizeof ob->store_error, "%s", why);
  ob->unstored = true;
  ob->retry_at = mw__outbox_now_ms(ob) + RETRY_STORE_MS;
  mw__outbox_recount(ob);
}

/* Marks the open batch as one that must be committed at the end of this turn. */
void mw__outbox_must_commit(mw_outbox_t *ob, int64_t seq) {
  ob->batch_must = true;
  if (seq > ob->batch_top) ob->batch_top = seq;
}

/* Writes the remembered ops of a failed batch again, in one batch. */
static bool redo_ops(mw_outbox_t *ob) {
  char err[256];
  for (int i = 0; i < ob->nops; i++) {
    mw_outbox_op_t *o = &ob->ops[i];
    mw_status_t st;
    if (o->put) {
      int64_t seq = o->seq;
      st = mw_outbox_store_put(ob->st, &o->msg, &seq, err, sizeof err);
      if (st == MW_OK) mw__outbox_must_commit(ob, seq);
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

/* The open batch is durable: its rows may be sent, and its remembered writes are done with. */
static void batch_committed(mw_outbox_t *ob) {
  ob->stats.commits++;
  if (ob->batch_top > ob->committed_top) ob->committed_top = ob->batch_top;
  ob->batch_must = false;
  ob->batch_since = 0;
  mw__outbox_ops_clear(ob);
}

/* Commits the open batch. Returns false (and enters the unstored state) on failure. */
bool mw__outbox_commit(mw_outbox_t *ob) {
  if (!mw_outbox_store_in_batch(ob->st)) {
    if (!ob->unstored) mw__outbox_ops_clear(ob);
    return !ob->unstored;
  }
  char err[256];
  if (mw_outbox_store_commit(ob->st, err, sizeof err) != MW_OK) {
    mw__outbox_store_failed(ob, err);
    return false;
  }
  batch_committed(ob);
  return true;
}

/*
** A batch of new messages, strikes or dead letters is committed at the end of the turn (the
** durability promise). One holding only acknowledgements may wait a little for company: losing
** it to a power cut costs a duplicate, not a message, and it saves an fsync per turn while a
** backlog drains.
*/
bool mw__outbox_commit_due(mw_outbox_t *ob) {
  if (!mw_outbox_store_in_batch(ob->st)) return true;
  if (ob->batch_must || ob->unstored || ob->nops >= MAX_BATCH) return true;
  if (!ob->batch_since) ob->batch_since = mw__outbox_now_ms(ob);
  return mw__outbox_now_ms(ob) - ob->batch_since >= ACK_COMMIT_MS;
}

void mw__outbox_try_restore(mw_outbox_t *ob) {
  if (!ob->unstored || mw__outbox_now_ms(ob) < ob->retry_at) return;
  ob->retry_at = mw__outbox_now_ms(ob) + RETRY_STORE_MS;
  if (mw_outbox_store_in_batch(ob->st)) mw_outbox_store_rollback(ob->st);
  char err[256];
  if (!redo_ops(ob)) return;
  if (mw_outbox_store_commit(ob->st, err, sizeof err) != MW_OK) return;
  MW_LOGI(COMP, "the outbox %s can be written again; %d write(s) kept in memory are stored", ob->path, ob->nops);
  batch_committed(ob);
  ob->unstored = false;
  ob->store_error[0] = '\0';
  ob->want_pump = true;
  mw__outbox_recount(ob);
}
