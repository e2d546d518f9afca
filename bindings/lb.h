/*
** Shared by every binding file: the runtime context the Lua modules reach through
** the registry, the one protected-call wrapper, registry-ref accounting, and the
** (true | nil, message, code) result convention.
*/
#ifndef MW_LB_H
#define MW_LB_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "mw_config.h"
#include "mw_mqtt.h"
#include "mw_status.h"

#define LB_MT_TIMER "moonwire.timer"
#define LB_MT_SUB "moonwire.mqtt.subscription"
#define LB_MT_LISTENER "moonwire.mqtt.listener"

typedef struct lb_sub lb_sub_t;
typedef struct lb_listener lb_listener_t;

/* One per process: what the bindings share with main.c. Lives outside the Lua heap. */
typedef struct mw_rt {
  lua_State *L;
  uv_loop_t *loop;
  mw_mqtt_t *mqtt;          /* NULL when no broker is configured (moonwire script) */
  const mw_config_t *cfg;   /* NULL for moonwire script */
  lb_sub_t *subs;           /* active subscriptions, in registration order */
  lb_listener_t *listeners; /* mqtt.on handlers */
  int acks_ref;             /* registry table: mid -> on_ack function */
  uint64_t handler_errors;
  uint64_t handler_calls;
  int live_refs;            /* registry refs taken through lb_ref and not yet released */
  size_t mem_used, mem_limit, mem_peak;
  uint64_t started_ms;
  struct mw_trustm *se;     /* the configuration's secure element (se = {...}), or NULL; borrowed */
  /* Interrupt contract (docs/contracts, issues 3 and 6): polled by the budget hook while Lua runs;
     nonzero aborts the running call with "interrupted". The REPL sets it while it evaluates. */
  int (*interrupt_poll)(struct mw_rt *rt);
  void *interrupt_ud;
} mw_rt_t;

/* Sets/gets the context stored in the registry. */
void lb_set_rt(lua_State *L, mw_rt_t *rt);
mw_rt_t *lb_rt(lua_State *L);

/*
** The one way C calls Lua: calls the function below nargs arguments with a traceback
** handler. On error logs "<what> '<detail>' failed: <message + traceback>" (detail may
** be NULL), counts it, and returns the lua_pcall status with function and arguments
** popped and no results pushed.
*/
int lb_pcall(lua_State *L, int nargs, int nresults, const char *what, const char *detail);

/* luaL_ref/luaL_unref on the registry, counted in rt->live_refs; unref sets *ref = LUA_NOREF. */
int lb_ref(lua_State *L);
void lb_unref(lua_State *L, int *ref);

/* Pushes nil, msg, code and returns 3 (for "return lb_fail(...)"). */
int lb_fail(lua_State *L, const char *msg, const char *code);
int lb_fail_status(lua_State *L, mw_status_t st, const char *msg);

/* "file.lua:12" of the Lua function at stack level lvl, or "" when unknown. */
void lb_where(lua_State *L, int lvl, char *buf, size_t len);

/* Registers every moonwire.* module in package.preload. */
void lb_preload(lua_State *L);

/* Memory-capped allocator; ud is the mw_rt_t. */
void *lb_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

int luaopen_moonwire_log(lua_State *L);
int luaopen_moonwire_timer(lua_State *L);
int luaopen_moonwire_mqtt(lua_State *L);
int luaopen_moonwire_device(lua_State *L);
int luaopen_moonwire_json(lua_State *L);
int luaopen_moonwire_shadow_core(lua_State *L); /* internal half of moonwire.shadow */
int luaopen_moonwire_se(lua_State *L);

/* MQTT events from the runtime (called by main.c's mw_mqtt event function). */
void lb_mqtt_dispatch(mw_rt_t *rt, const mw_mqtt_event_t *ev);
/* Releases every subscription and listener (at shutdown, before lua_close). */
void lb_mqtt_close_all(mw_rt_t *rt);

#endif
