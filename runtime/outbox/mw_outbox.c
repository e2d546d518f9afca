/*
** The outbox's life cycle: opening (defaults, the single-process lock, the store), the loop
** hooks that drive it (a prepare handle for the per-turn flush, a timer for changes made by
** another process and for retrying a failing store), statistics, and closing.
*/
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "mw_log.h"
#include "mw_outbox_int.h"

#define TIMER_MS 1000

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

static void on_prepare(uv_prepare_t *h) {
  mw_outbox_t *ob = h->data;
  if (ob->want_pump || mw_outbox_store_in_batch(ob->st) || ob->unstored || (ob->connected && ob->q0head))
    mw_outbox_flush(ob);
}

static void external_change(mw_outbox_t *ob) {
  mw__outbox_recount(ob);
  int64_t top = mw_outbox_store_max_seq(ob->st);
  if (top > ob->committed_top) ob->committed_top = top;
  ob->want_pump = true;
}

static void on_timer(uv_timer_t *t) {
  mw_outbox_t *ob = t->data;
  /* `moonwire outbox retry|drop` writes from another process. */
  if (mw_outbox_store_changed(ob->st)) external_change(ob);
  if (ob->unstored) mw__outbox_try_restore(ob);
  /* An acknowledgement-only batch waiting for company is committed here at the latest. */
  if (mw_outbox_store_in_batch(ob->st) && mw__outbox_commit_due(ob)) ob->want_pump = true;
}

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
  mw__outbox_recount(ob);
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
  if (!ob->unstored && mw_outbox_store_in_batch(ob->st)) mw__outbox_commit(ob);
  if (ob->unstored) {
    mw__outbox_try_restore(ob);
    if (ob->unstored)
      MW_LOGE(COMP, "%d accepted write(s) could not be stored in %s and are lost: %s", ob->nops, ob->path,
              ob->store_error);
  }
  ob->freeing = true;
  mw__outbox_ops_clear(ob);
  free(ob->ops);
  free(ob->flight);
  free(ob->plan);
  free(ob->arena);
  while (ob->q0head) {
    mw_outbox_q0_t *q = ob->q0head;
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
