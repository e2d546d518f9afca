/*
** Internals shared by lb_app.c (versions, the reload transaction), lb_app_watch.c
** (change detection) and lmod_app.c (the moonwire.app module).
*/
#ifndef MW_LB_APP_INT_H
#define MW_LB_APP_INT_H

#include "lb_app.h"

#define LB_APP_COMP "app"

/* A file a version was loaded from: the app file or a module from the app's folder. */
typedef struct {
  char *name;              /* module name; NULL for the app file */
  char *path, *dir, *base; /* path as opened; its folder and file name (for the watcher) */
  unsigned char sha[32];
} lb_file_t;

typedef struct lb_version {
  uint32_t id;     /* load id: tags the version's subscriptions, listeners and timers */
  uint32_t number; /* what users see; a rollback brings the old number back */
  char hash[65];   /* hex SHA-256 of the app file (of its files' digests with modules) */
  int env_ref;     /* the version's global environment */
  int loaded_ref;  /* its own package.loaded for modules of the app folder */
  int migrate_ref; /* app.migrate function, if it set one */
  int sources_ref; /* module name (1 for the app file) -> source, for a rollback */
  bool from_sources; /* a rollback: modules come from sources_ref, not from the disk */
  lb_file_t *files;
  int nfiles, capfiles;
  uint64_t live_since_ns;
  int errors;         /* handler errors since it went live */
  bool rollback_armed; /* errors still count towards an automatic rollback */
} lb_version_t;

typedef struct lb_watch lb_watch_t;

struct lb_app {
  mw_rt_t *rt;
  char *path, *dir;
  lb_app_config_t cfg;
  lb_version_t *live, *prev, *staged;
  uint32_t next_id, max_number;
  bool busy; /* a reload transaction is running */
  /* change detection (lb_app_watch.c) */
  lb_watch_t *watches;
  uv_timer_t *debounce, *rollback_timer;
  uv_signal_t *sighup;
  uint64_t change_ns; /* first change event of the pending debounce, 0: none */
  unsigned char failed_disk[32]; /* digest of the files on disk when a reload last failed */
  bool failed_disk_set;
  uint32_t rollback_for; /* load id of the version a pending rollback replaces */
  /* figures for app.info() and the log */
  uint64_t reloads, failures, rollbacks;
  double last_ms, last_swap_ms, last_since_change_ms;
  char last_error[1024];
  const char *last_code;
};

/* Runs a reload transaction; rollback loads the previous version's sources. */
uint32_t lb_app_run(lb_app_t *app, bool rollback, const char *why, char *err, size_t errlen, const char **code);
/* Reads a whole file into malloc'd memory (for hashing; not for Lua). NULL with errno set. */
char *lb_app_read_file(const char *path, size_t *len);
void lb_app_sha256(const void *data, size_t len, unsigned char out[32]);

/* lb_app_watch.c */
int lb_app_watch_start(lb_app_t *app);
/* After a commit: watch the folders of the live version's files. */
void lb_app_watch_update(lb_app_t *app);
void lb_app_watch_stop(lb_app_t *app);
/* Called when the live version's errors reach the rollback threshold. */
void lb_app_watch_schedule_rollback(lb_app_t *app);

/* Registry key of app.state (the table that survives reloads). */
extern const char lb_app_state_key;
void lb_app_push_state(lua_State *L);

#endif
