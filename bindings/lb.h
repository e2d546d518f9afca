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
#include "mw_outbox.h"
#include "mw_status.h"

#define LB_MT_TIMER "moonwire.timer"
#define LB_MT_SUB "moonwire.mqtt.subscription"
#define LB_MT_LISTENER "moonwire.mqtt.listener"

typedef struct lb_sub lb_sub_t;
typedef struct lb_listener lb_listener_t;
typedef struct lb_timer lb_timer_t;
typedef struct lb_app lb_app_t;

/* Why the last lb_pcall failed beyond "the script raised" (bindings/lb_budget.c). */
typedef enum {
  LB_STOP_NONE = 0,
  LB_STOP_TIME,      /* ran past its wall-clock budget */
  LB_STOP_INTERRUPT, /* rt->interrupt_poll asked to stop it */
  LB_STOP_MEMORY,    /* an allocation went past the Lua heap cap */
} lb_stop_t;

/* The entry into Lua that is running now; saved and restored around nested entries. */
typedef struct {
  int depth;            /* lb_pcall frames on the C stack; 0: no script runs */
  uint64_t deadline_ns; /* monotonic; UINT64_MAX: no time limit */
  uint32_t limit_ms;    /* the limit the deadline came from, for messages */
  lb_stop_t tripped;    /* once set, the hook raises at every instruction until the entry returns */
  uint32_t owner;       /* app version (load id) the code runs for; 0: none in particular */
  size_t mem_cap;       /* heap cap for script code in this entry */
  size_t mem_grow;      /* what the entry was allowed to add (0: the state's cap), for messages */
  int mem_relaxed;      /* >0 while the runtime's own code runs inside the entry */
  bool detached;        /* see lb_call_opts_t */
  uint64_t start_ns;
} lb_frame_t;

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
  /* ---- budgets (bindings/lb_budget.c) and app versions (bindings/lb_app.c), issue 3 ---- */
  uint32_t budget_ms;        /* default wall-clock limit of one entry into Lua; 0: none */
  int quarantine_after;      /* budget stops before a handler is quarantined; 0: never */
  lb_frame_t call;           /* the running entry */
  size_t mem_allow;          /* what lb_alloc lets the heap grow to right now */
  size_t mem_reserve;        /* headroom above mem_limit for the runtime's own pushes */
  lb_stop_t last_stop;       /* of the lb_pcall that returned last */
  char last_error[512];      /* its message (first line(s), without the traceback) */
  char trip_msg[256];        /* what a tripped entry raises */
  lua_State *threads[256];   /* coroutines being resumed right now, innermost last */
  volatile int nthreads;
  void *budget_timer;        /* the POSIX timer that arms the budget hook (lb_budget.c) */
  bool budget_timer_ok;      /* (a timer_t may be 0) */
  volatile int timer_armed;
  uint64_t timer_at_ns;
  uint64_t stops_time, stops_memory, stops_interrupt, quarantined;
  lb_timer_t *timers;        /* armed timers */
  lb_app_t *app;             /* the app being run (moonwire run), NULL otherwise */
  uint32_t app_live;         /* load id of the live app version; 0: none */
  uint32_t app_staged;       /* load id of the version being loaded by a reload; 0: none */
  char warn_buf[512];        /* Lua warn() pieces being joined */
  size_t warn_len;
  int warn_off;
  /* Interrupt contract (docs/contracts, issues 3 and 6): polled by the budget hook while Lua runs;
     nonzero aborts the running call with "interrupted". The REPL sets it while it evaluates. */
  int (*interrupt_poll)(struct mw_rt *rt);
  void *interrupt_ud;
  /* ---- the outbox (runtime/outbox), issue 7 ---- */
  mw_outbox_t *outbox;      /* QoS 1 publishes go through it; NULL without a broker */
} mw_rt_t;

/* Sets/gets the context stored in the registry. */
void lb_set_rt(lua_State *L, mw_rt_t *rt);
mw_rt_t *lb_rt(lua_State *L);

/*
** The one way C calls Lua: calls the function below nargs arguments with a traceback
** handler, under the budget (wall-clock limit checked by an instruction-count hook,
** heap cap). On error logs "<what> '<detail>' failed: <message + traceback>" (detail may
** be NULL), counts it, leaves the message in rt->last_error and the reason in
** rt->last_stop, and returns the lua_pcall status with function and arguments popped
** and no results pushed. Nested calls keep the caller's deadline if it is sooner.
*/
int lb_pcall(lua_State *L, int nargs, int nresults, const char *what, const char *detail);

#define LB_BUDGET_NONE UINT32_MAX /* lb_call_opts_t.budget_ms: no time limit */
typedef struct {
  uint32_t owner;     /* app version (load id) the call runs for; 0: the caller's */
  uint32_t budget_ms; /* 0: rt->budget_ms; LB_BUDGET_NONE: none */
  size_t mem_grow;    /* 0: the state's cap; else the heap may grow by at most this much (a version's load) */
  bool detached;      /* nested: its own limits instead of the caller's, and the caller's clock stops
                         meanwhile (app.reload() from the REPL) */
} lb_call_opts_t;
int lb_pcall_ex(lua_State *L, int nargs, int nresults, const lb_call_opts_t *opts, const char *what,
                const char *detail);

/* Sets up the budget timer and signal for L's runtime (one per process). */
void lb_budget_install(lua_State *L);
/* Deletes it (before lua_close). */
void lb_budget_uninstall(mw_rt_t *rt);
/* Adjusts the standard library where Lua turns hooks off (after luaL_openlibs). */
void lb_budget_guard_libs(lua_State *L);
/* Recomputes rt->mem_allow after mem_limit/mem_reserve or the frame changed. */
void lb_budget_mem_update(mw_rt_t *rt);
/* Monotonic clock in nanoseconds. */
uint64_t lb_now_ns(void);
/* Frame bookkeeping of lb_pcall_ex (saved/restored around the lua_pcall). */
void lb_budget_enter(mw_rt_t *rt, const lb_call_opts_t *opts, lb_frame_t *saved);
lb_stop_t lb_budget_leave(mw_rt_t *rt, const lb_frame_t *saved, int status);

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
int luaopen_moonwire_pki(lua_State *L);
int luaopen_moonwire_connection(lua_State *L);

/* MQTT events from the runtime (called by main.c's mw_mqtt event function). */
void lb_mqtt_dispatch(mw_rt_t *rt, const mw_mqtt_event_t *ev);
/* Releases every subscription and listener (at shutdown, before lua_close). */
void lb_mqtt_close_all(mw_rt_t *rt);
/* Outbox events (PUBACK by handle, dead letters, drops) from the session. */
void lb_mqtt_outbox_event(mw_rt_t *rt, const mw_outbox_event_t *ev);

/*
** App versions (bindings/lb_app.c). Subscriptions, listeners and timers carry the load id
** of the version whose code registered them (rt->call.owner, or the live version for
** code that runs for nobody in particular). A staged version's registrations stay
** inactive until lb_*_activate; lb_*_release ends every registration of a version.
*/
/* True when registrations of owner may receive events now. */
static inline bool lb_owner_live(const mw_rt_t *rt, uint32_t owner) { return owner == 0 || owner == rt->app_live; }
/* The version a registration made now belongs to; raises if that version was replaced. */
uint32_t lb_owner_for_new(lua_State *L);
void lb_mqtt_activate(mw_rt_t *rt, uint32_t owner, int *added);
void lb_mqtt_release(mw_rt_t *rt, uint32_t owner, int *removed);
int lb_timer_release(mw_rt_t *rt, uint32_t owner);
int lb_timer_count(const mw_rt_t *rt, uint32_t owner);
/* The version number of a load id (bindings/lb_app.c), 0 if unknown. */
uint32_t lb_app_version_of(const mw_rt_t *rt, uint32_t owner);
/* Counts a failed call of a handler owned by owner (automatic rollback). */
void lb_app_note_error(mw_rt_t *rt, uint32_t owner);
/* Quarantine bookkeeping shared by handlers: true when this stop quarantines it. */
bool lb_budget_offence(mw_rt_t *rt, int *stops);
int luaopen_moonwire_app(lua_State *L);

#endif
