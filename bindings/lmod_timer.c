/*
** moonwire.timer: one-shot and repeating timers on the libuv loop.
**
** The uv_timer_t lives outside the Lua heap (libuv touches it until its close
** callback). While a timer is armed, a registry self-ref keeps its userdata alive even
** if the script drops every reference; :stop() or expiry of a one-shot releases it.
**
** Armed timers are also linked in rt->timers with the app version that started them,
** so a reload stops exactly the old version's timers. A repeating timer whose callback
** the budget stops lua.quarantine_after times is stopped for good (quarantined).
*/
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "mw_log.h"

struct lb_timer {
  lb_timer_t *next, *prev; /* rt->timers while armed */
  uv_timer_t *h;           /* NULL once closed */
  lua_State *L;
  int fn_ref;
  int self_ref;
  int repeat;
  uint32_t owner;          /* app version (load id) that started it */
  int stops;               /* budget stops of its callback */
  int quarantined;
  char where[80];          /* file:line that started it, for messages */
};
typedef lb_timer_t ltimer_t;

static void handle_freed(uv_handle_t *h) { free(h); }

/* Stops the timer and releases its refs and handle; safe to call more than once. */
static void timer_close(lua_State *L, ltimer_t *t) {
  if (!t->h) return;
  mw_rt_t *rt = lb_rt(L);
  if (t->prev) t->prev->next = t->next;
  else if (rt->timers == t) rt->timers = t->next;
  if (t->next) t->next->prev = t->prev;
  t->next = t->prev = NULL;
  uv_timer_stop(t->h);
  uv_close((uv_handle_t *)t->h, handle_freed);
  t->h = NULL;
  lb_unref(L, &t->fn_ref);
  lb_unref(L, &t->self_ref);
}

static void on_timer(uv_timer_t *h) {
  ltimer_t *t = h->data;
  lua_State *L = t->L;
  mw_rt_t *rt = lb_rt(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref); /* keeps t alive across the call */
  /* A one-shot timer is finished before its callback runs, so the callback may drop it. */
  if (!t->repeat) timer_close(L, t);
  lua_pushvalue(L, -2);
  lb_call_opts_t o = {.owner = t->owner};
  if (lb_pcall_ex(L, 0, 0, &o, "timer callback", NULL) != LUA_OK &&
      lb_budget_offence(rt, &t->stops) && t->h) {
    timer_close(L, t);
    t->quarantined = 1;
    rt->quarantined++;
    MW_LOGE("lua", "timer started at %s quarantined: its callback was stopped %d times by the budget", t->where,
            t->stops);
  }
  lua_pop(L, 2);
}

int lb_timer_count(const mw_rt_t *rt, uint32_t owner) {
  int n = 0;
  for (const ltimer_t *t = rt->timers; t; t = t->next) n += t->owner == owner;
  return n;
}

int lb_timer_release(mw_rt_t *rt, uint32_t owner) {
  int n = 0;
  for (ltimer_t *t = rt->timers, *next; t; t = next) {
    next = t->next;
    if (t->owner != owner) continue;
    timer_close(rt->L, t);
    n++;
  }
  return n;
}

static int start(lua_State *L, int repeat) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "delay must be >= 0 ms");
  luaL_argcheck(L, !repeat || ms > 0, 1, "interval must be > 0 ms");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  mw_rt_t *rt = lb_rt(L);
  uint32_t owner = lb_owner_for_new(L);
  /* Box first, closed, with its metatable: an error from here on cannot leak the handle. */
  ltimer_t *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  t->L = rt->L; /* not the calling coroutine, which may be gone when the timer fires */
  t->fn_ref = t->self_ref = LUA_NOREF;
  t->repeat = repeat;
  t->owner = owner;
  lb_where(L, 1, t->where, sizeof t->where);
  luaL_setmetatable(L, LB_MT_TIMER);
  uv_timer_t *h = malloc(sizeof *h);
  if (!h) return luaL_error(L, "out of memory");
  uv_timer_init(rt->loop, h);
  h->data = t;
  t->h = h;
  lua_pushvalue(L, 2);
  t->fn_ref = lb_ref(L);
  lua_pushvalue(L, -1);
  t->self_ref = lb_ref(L);
  t->next = rt->timers;
  if (t->next) t->next->prev = t;
  rt->timers = t;
  uv_timer_start(h, on_timer, (uint64_t)ms, repeat ? (uint64_t)ms : 0);
  return 1;
}

/* timer.after(ms, fn) -> handle */
static int ltimer_after(lua_State *L) { return start(L, 0); }
/* timer.every(ms, fn) -> handle */
static int ltimer_every(lua_State *L) { return start(L, 1); }

/* handle:stop() -> true if it was running */
static int ltimer_stop(lua_State *L) {
  ltimer_t *t = luaL_checkudata(L, 1, LB_MT_TIMER);
  lua_pushboolean(L, t->h != NULL);
  timer_close(L, t);
  return 1;
}

/* handle:active() -> boolean */
static int ltimer_active(lua_State *L) {
  ltimer_t *t = luaL_checkudata(L, 1, LB_MT_TIMER);
  lua_pushboolean(L, t->h != NULL);
  return 1;
}

static int ltimer_gc(lua_State *L) {
  ltimer_t *t = luaL_checkudata(L, 1, LB_MT_TIMER);
  timer_close(L, t);
  return 0;
}

static int ltimer_tostring(lua_State *L) {
  ltimer_t *t = luaL_checkudata(L, 1, LB_MT_TIMER);
  if (t->h) lua_pushfstring(L, "moonwire.timer (%s, %p)", t->repeat ? "every" : "after", (void *)t);
  else lua_pushstring(L, "moonwire.timer (stopped)");
  return 1;
}

/* timer.now() -> milliseconds on the loop's monotonic clock */
static int ltimer_now(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_now(lb_rt(L)->loop));
  return 1;
}

int luaopen_moonwire_timer(lua_State *L) {
  static const luaL_Reg meth[] = {{"stop", ltimer_stop}, {"active", ltimer_active}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", ltimer_gc}, {"__close", ltimer_gc}, {"__tostring", ltimer_tostring}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"after", ltimer_after}, {"every", ltimer_every}, {"now", ltimer_now}, {NULL, NULL}};
  if (luaL_newmetatable(L, LB_MT_TIMER)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
