/*
** What starts a reload from the loop: a change of the app file or of a module it loaded
** from its folder, SIGHUP, and an automatic rollback.
**
** The watcher is on the folders, not the files: an editor that saves by writing a
** temporary file and renaming it over the old one replaces the inode, and a watch on
** the old inode would never fire again. Events for other names are ignored; events
** for watched names restart a debounce timer, so that one save (truncate + writes, or
** create + rename) is one reload, and when it fires the files are hashed: an event that
** did not change any content (touch, a save of the same text) reloads nothing.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb_app_int.h"
#include "mw_log.h"

#define COMP LB_APP_COMP

struct lb_watch {
  lb_watch_t *next;
  lb_app_t *app;
  uv_fs_event_t *h;
  char *dir;
  bool keep;
};

static void handle_free(uv_handle_t *h) { free(h); }

static void close_handle(void *h) {
  if (h) uv_close((uv_handle_t *)h, handle_free);
}

static bool watched(const lb_app_t *app, const char *dir, const char *name) {
  const lb_version_t *v = app->live;
  for (int i = 0; v && i < v->nfiles; i++)
    if (strcmp(v->files[i].dir, dir) == 0 && strcmp(v->files[i].base, name) == 0) return true;
  return false;
}

static void on_debounce(uv_timer_t *t);

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  lb_watch_t *w = h->data;
  lb_app_t *app = w->app;
  if (status < 0) {
    MW_LOGW(COMP, "watching %s: %s", w->dir, uv_strerror(status));
    return;
  }
  if (filename && !watched(app, w->dir, filename)) return;
  if (!app->change_ns) app->change_ns = lb_now_ns();
  uv_timer_start(app->debounce, on_debounce, app->cfg.debounce_ms, 0);
}

static void on_debounce(uv_timer_t *t) {
  lb_app_t *app = t->data;
  const lb_version_t *v = app->live;
  const lb_file_t *changed = NULL;
  /* The digest of what is on disk now, to recognise a broken save that was tried already
     (another event, such as a touch, must not report the same error again). */
  unsigned char shas[32 * 64], disk[32];
  int n = v ? (v->nfiles < 64 ? v->nfiles : 64) : 0;
  memset(shas, 0, sizeof shas);
  for (int i = 0; i < n; i++) {
    size_t len;
    char *buf = lb_app_read_file(v->files[i].path, &len);
    if (!buf) {
      /* Gone for now (a save in progress), or for good: nothing to load either way. */
      MW_LOGD(COMP, "%s: %s", v->files[i].path, strerror(errno));
      continue;
    }
    lb_app_sha256(buf, len, shas + 32 * i);
    free(buf);
    if (!changed && memcmp(shas + 32 * i, v->files[i].sha, 32) != 0) changed = &v->files[i];
  }
  lb_app_sha256(shas, (size_t)n * 32, disk);
  if (!changed || (app->failed_disk_set && memcmp(disk, app->failed_disk, 32) == 0)) {
    MW_LOGD(COMP, "%s: no new content to load", app->path);
    app->change_ns = 0;
    return;
  }
  char why[300], err[1024];
  if (changed->name) snprintf(why, sizeof why, "module %s changed", changed->name);
  else snprintf(why, sizeof why, "%s changed", changed->base);
  if (lb_app_run(app, false, why, err, sizeof err, NULL)) {
    app->failed_disk_set = false;
  } else {
    memcpy(app->failed_disk, disk, 32);
    app->failed_disk_set = true;
  }
}

static void on_sighup(uv_signal_t *h, int signum) {
  (void)signum;
  char err[1024];
  lb_app_run(h->data, false, "SIGHUP", err, sizeof err, NULL);
}

static void on_rollback(uv_timer_t *t) {
  char err[1024];
  lb_app_t *app = t->data;
  /* Only if the version that asked for it is still the live one (no reload since). */
  if (!app->live || app->live->id != app->rollback_for) return;
  if (!lb_app_run(app, true, "automatic rollback", err, sizeof err, NULL))
    MW_LOGE(COMP, "rollback failed: %s", err);
}

void lb_app_watch_schedule_rollback(lb_app_t *app) {
  app->rollback_for = app->live ? app->live->id : 0;
  if (app->rollback_timer) uv_timer_start(app->rollback_timer, on_rollback, 0, 0);
}

int lb_app_watch_start(lb_app_t *app) {
  uv_loop_t *loop = app->rt->loop;
  app->debounce = malloc(sizeof *app->debounce);
  app->rollback_timer = malloc(sizeof *app->rollback_timer);
  app->sighup = malloc(sizeof *app->sighup);
  if (!app->debounce || !app->rollback_timer || !app->sighup) {
    free(app->debounce);
    free(app->rollback_timer);
    free(app->sighup);
    app->debounce = app->rollback_timer = NULL;
    app->sighup = NULL;
    return -1;
  }
  uv_timer_init(loop, app->debounce);
  uv_timer_init(loop, app->rollback_timer);
  uv_signal_init(loop, app->sighup);
  app->debounce->data = app->rollback_timer->data = app->sighup->data = app;
  uv_signal_start(app->sighup, on_sighup, SIGHUP);
  lb_app_watch_update(app);
  return 0;
}

void lb_app_watch_update(lb_app_t *app) {
  if (!app->cfg.watch || !app->debounce || !app->live) return;
  for (lb_watch_t *w = app->watches; w; w = w->next) w->keep = false;
  const lb_version_t *v = app->live;
  for (int i = 0; i < v->nfiles; i++) {
    lb_watch_t *w = app->watches;
    while (w && strcmp(w->dir, v->files[i].dir) != 0) w = w->next;
    if (w) {
      w->keep = true;
      continue;
    }
    w = calloc(1, sizeof *w);
    uv_fs_event_t *h = malloc(sizeof *h);
    char *dir = strdup(v->files[i].dir);
    int rc = UV_ENOMEM;
    if (w && h && dir) {
      uv_fs_event_init(app->rt->loop, h);
      h->data = w;
      rc = uv_fs_event_start(h, on_fs_event, dir, 0);
      if (rc != 0) {
        close_handle(h);
        h = NULL;
      }
    }
    if (rc != 0) {
      MW_LOGW(COMP, "cannot watch %s for changes: %s", v->files[i].dir, uv_strerror(rc));
      free(h);
      free(dir);
      free(w);
      continue;
    }
    w->app = app;
    w->h = h;
    w->dir = dir;
    w->keep = true;
    w->next = app->watches;
    app->watches = w;
  }
  for (lb_watch_t **pp = &app->watches; *pp;) {
    lb_watch_t *w = *pp;
    if (w->keep) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    close_handle(w->h);
    free(w->dir);
    free(w);
  }
}

void lb_app_watch_stop(lb_app_t *app) {
  while (app->watches) {
    lb_watch_t *w = app->watches;
    app->watches = w->next;
    close_handle(w->h);
    free(w->dir);
    free(w);
  }
  close_handle(app->debounce);
  close_handle(app->rollback_timer);
  close_handle(app->sighup);
  app->debounce = app->rollback_timer = NULL;
  app->sighup = NULL;
}
