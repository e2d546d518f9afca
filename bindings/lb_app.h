/*
** The app `moonwire run` serves, as a sequence of versions swapped in transactionally
** (hot reload), and the Lua module moonwire.app. See docs/operations.md ("Hot reload").
*/
#ifndef MW_LB_APP_H
#define MW_LB_APP_H

#include "lb.h"

typedef struct {
  uint32_t load_budget_ms;     /* time limit of a version's top-level chunk and migrate; 0: none */
  size_t load_memory;          /* heap a version's load may add; 0: a quarter of limits.lua_memory */
  bool watch;                  /* reload when the app file or its modules change */
  uint32_t debounce_ms;        /* quiet time after a change before the reload */
  int rollback_errors;         /* more handler errors than this ... */
  uint32_t rollback_within_ms; /* ... this soon after a reload restore the previous version; 0: off */
} lb_app_config_t;

/* Fills an app configuration from the runtime configuration's lua section. */
void lb_app_config_from(lb_app_config_t *ac, const mw_config_t *cfg);

/*
** Loads the app file as version 1 and, with cfg->watch, starts watching it and its
** modules; SIGHUP reloads. Returns 0, or -1 with the reason (file:line) in err.
*/
int lb_app_start(mw_rt_t *rt, const char *path, const lb_app_config_t *cfg, char *err, size_t errlen);

/*
** Runs the reload transaction now (from the loop, not from inside Lua): the new version
** goes live, or nothing changes. Returns the live version number, or 0 with the reason
** in err (and code, a stable name such as "ESYNTAX").
*/
uint32_t lb_app_reload(mw_rt_t *rt, const char *why, char *err, size_t errlen, const char **code);

/* Stops watching and releases every version (before lua_close); safe without an app. */
void lb_app_close(mw_rt_t *rt);

/* The version number of a load id (live, loading or the previous one), 0 if unknown. */
uint32_t lb_app_version_of(const mw_rt_t *rt, uint32_t owner);

#endif
