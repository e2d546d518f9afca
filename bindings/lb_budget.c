/*
** Budgets that protect the device from its scripts: every entry into Lua (lb_pcall_ex)
** runs with a wall-clock deadline and a heap cap.
**
** The deadline is checked by a count hook every LB_HOOK_COUNT instructions, so a loop
** that never calls out is still seen. Once an entry is over its deadline (or
** rt->interrupt_poll says stop) the entry is "tripped": the hook switches to firing on
** every instruction and raises again each time, so a pcall in the script that catches
** the error gets it back on its very next instruction, and the error works its way out
** to the lb_pcall that started the entry. Nothing the script can do stops the unwinding:
** message handlers and __close metamethods written in Lua trip too; only C runs hook-free.
**
** Threads created by coroutine.create inherit the hook of the thread that creates them,
** and every thread is created while some entry runs, so the one hook set on the main
** thread at state creation covers all of them.
**
** Lua 5.4 turns hooks off in a few places, and the standard library is adjusted so that
** no script code can run there (lb_budget_guard_libs):
** - while a hook runs, and so while the error it raises is being handled until the next
**   protected-call boundary: xpcall's message handler is skipped once the entry is
**   stopped, and coroutine bodies run inside a protected call, so their to-be-closed
**   variables are closed with hooks back on;
** - in __gc finalizers: setmetatable refuses a __gc written in Lua (use <close>);
** - debug.sethook would remove the hook: it is not available.
*/
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lb.h"

/* ~2-20 µs of Lua between checks: far below any useful budget, cheap enough to ignore. */
#define LB_HOOK_COUNT 1000

uint64_t lb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lb_budget_mem_update(mw_rt_t *rt) {
  if (!rt->mem_limit) {
    rt->mem_allow = SIZE_MAX;
  } else if (rt->call.depth > 0 && rt->call.mem_relaxed == 0) {
    rt->mem_allow = rt->call.mem_cap ? rt->call.mem_cap : rt->mem_limit;
  } else {
    /* The runtime's own pushes (handler arguments, tracebacks) get headroom, so a script
       that filled the heap cannot make an unprotected allocation fail. */
    rt->mem_allow = rt->mem_limit + rt->mem_reserve;
  }
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/* Raises the pending stop from inside the hook: the same message every time. */
static int hook_raise(lua_State *L, const char *msg) {
  lua_pushstring(L, msg);
  return lua_error(L);
}

static void trip(lua_State *L, mw_rt_t *rt, lua_Debug *ar, lb_stop_t why) {
  lb_frame_t *f = &rt->call;
  f->tripped = why;
  char where[160] = "";
  if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) snprintf(where, sizeof where, "%s:%d: ", ar->short_src, ar->currentline);
  if (why == LB_STOP_INTERRUPT) snprintf(rt->trip_msg, sizeof rt->trip_msg, "interrupted");
  else snprintf(rt->trip_msg, sizeof rt->trip_msg, "%stime limit exceeded (%u ms)", where, (unsigned)f->limit_ms);
  /* From now on every instruction raises, in this thread and in the main one (which a
     coroutine's error returns to). */
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
  if (rt->L && L != rt->L) lua_sethook(rt->L, budget_hook, LUA_MASKCOUNT, 1);
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  mw_rt_t *rt = lb_rt(L);
  if (!rt) return;
  lb_frame_t *f = &rt->call;
  if (f->depth == 0) return; /* C code calling Lua on its own terms (the configuration loader) */
  if (f->tripped == LB_STOP_NONE) {
    if (rt->interrupt_poll && rt->interrupt_poll(rt)) {
      trip(L, rt, ar, LB_STOP_INTERRUPT);
    } else if (f->deadline_ns != UINT64_MAX && lb_now_ns() >= f->deadline_ns) {
      trip(L, rt, ar, LB_STOP_TIME);
    } else {
      /* Where the script is, for a later memory error (which carries no position). */
      if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) {
        memcpy(rt->hook_where, ar->short_src, sizeof ar->short_src < sizeof rt->hook_where ? sizeof ar->short_src : sizeof rt->hook_where);
        rt->hook_where[sizeof rt->hook_where - 1] = '\0';
        rt->hook_line = ar->currentline;
      }
      /* A thread left on per-instruction checks by an earlier stop goes back to normal. */
      if (lua_gethookcount(L) != LB_HOOK_COUNT) lua_sethook(L, budget_hook, LUA_MASKCOUNT, LB_HOOK_COUNT);
      return;
    }
  }
  hook_raise(L, rt->trip_msg);
}

void lb_budget_install(lua_State *L) { lua_sethook(L, budget_hook, LUA_MASKCOUNT, LB_HOOK_COUNT); }

void lb_budget_enter(mw_rt_t *rt, const lb_call_opts_t *o, lb_frame_t *saved) {
  *saved = rt->call;
  lb_frame_t *f = &rt->call;
  uint32_t ms = o && o->budget_ms ? o->budget_ms : rt->budget_ms;
  f->depth = saved->depth + 1;
  f->tripped = LB_STOP_NONE;
  f->owner = o && o->owner ? o->owner : saved->owner;
  if (ms == 0 || ms == LB_BUDGET_NONE) {
    f->deadline_ns = UINT64_MAX;
    f->limit_ms = 0;
  } else {
    f->deadline_ns = lb_now_ns() + (uint64_t)ms * 1000000u;
    f->limit_ms = ms;
  }
  /* A nested entry (app.reload() from the REPL) cannot outlive the one that called it. */
  if (saved->depth > 0 && saved->deadline_ns < f->deadline_ns) {
    f->deadline_ns = saved->deadline_ns;
    f->limit_ms = saved->limit_ms;
  }
  size_t cap = rt->mem_limit;
  f->mem_grow = 0;
  if (o && o->mem_grow) {
    size_t want = rt->mem_used + o->mem_grow < rt->mem_used ? SIZE_MAX : rt->mem_used + o->mem_grow;
    if (cap == 0 || want < cap) {
      cap = want;
      f->mem_grow = o->mem_grow;
    }
  }
  if (saved->depth > 0 && saved->mem_cap && (cap == 0 || saved->mem_cap < cap)) {
    cap = saved->mem_cap;
    f->mem_grow = saved->mem_grow;
  }
  f->mem_cap = cap;
  f->mem_relaxed = 0;
  rt->hook_where[0] = '\0';
  lb_budget_mem_update(rt);
}

lb_stop_t lb_budget_leave(mw_rt_t *rt, const lb_frame_t *saved, int status) {
  lb_stop_t stop = rt->call.tripped;
  if (status == LUA_ERRMEM) stop = LB_STOP_MEMORY;
  rt->call = *saved;
  lb_budget_mem_update(rt);
  if (status == LUA_OK) return LB_STOP_NONE;
  switch (stop) {
  case LB_STOP_TIME: rt->stops_time++; break;
  case LB_STOP_MEMORY: rt->stops_memory++; break;
  case LB_STOP_INTERRUPT: rt->stops_interrupt++; break;
  default: break;
  }
  return stop;
}

bool lb_budget_offence(mw_rt_t *rt, int *stops) {
  if (rt->last_stop != LB_STOP_TIME && rt->last_stop != LB_STOP_MEMORY) return false;
  (*stops)++;
  return rt->quarantine_after > 0 && *stops >= rt->quarantine_after;
}

/* ------------------------------------------------------------ places where hooks are off */

/* The message handler of a guarded xpcall: the script's handler, unless the entry is stopped. */
static int guard_msgh(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  if (rt && rt->call.tripped) return 1; /* the stop message, as it is */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

/* xpcall(f, msgh, ...) as the base library has it, with msgh behind guard_msgh. */
static int guarded_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, guard_msgh, 1);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2);
  int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
  return finish_pcall(L, status, 2);
}

static int finish_body(lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
  return lua_gettop(L) - (int)extra;
}

/* A coroutine's body, run in a (yieldable) protected call and its error raised again. */
static int guarded_body(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  int status = lua_pcallk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, 0, finish_body);
  return finish_body(L, status, 0);
}

/* coroutine.create / coroutine.wrap with the body guarded; upvalue 1: the original. */
static int guarded_create(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushcclosure(L, guarded_body, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

static int check_no_lua_gc(lua_State *L, int mt) {
  if (lua_type(L, mt) != LUA_TTABLE) return 0;
  lua_pushliteral(L, "__gc");
  int type = lua_rawget(L, mt);
  bool lua_fn = type != LUA_TNIL && !lua_iscfunction(L, -1);
  lua_pop(L, 1);
  if (lua_fn)
    return luaL_error(L, "a __gc metamethod written in Lua cannot be stopped by the time budget (Lua runs "
                         "finalizers with hooks off): release resources with a to-be-closed variable (<close>) "
                         "or an explicit close function instead");
  return 0;
}

/* setmetatable / debug.setmetatable refusing a Lua __gc; upvalue 1: the original. */
static int guarded_setmetatable(lua_State *L) {
  check_no_lua_gc(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int no_sethook(lua_State *L) {
  return luaL_error(L, "debug.sethook is not available: the runtime's time budget uses the hook");
}

/* Replaces t[name] (t at the top of the stack) by fn with the original as upvalue 1. */
static void wrap_field(lua_State *L, const char *name, lua_CFunction fn) {
  lua_getfield(L, -1, name);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
}

void lb_budget_guard_libs(lua_State *L) {
  lua_pushglobaltable(L);
  lua_pushcfunction(L, guarded_xpcall);
  lua_setfield(L, -2, "xpcall");
  wrap_field(L, "setmetatable", guarded_setmetatable);
  lua_pop(L, 1);
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    wrap_field(L, "create", guarded_create);
    wrap_field(L, "wrap", guarded_create);
  }
  lua_pop(L, 1);
  if (lua_getglobal(L, "debug") == LUA_TTABLE) {
    wrap_field(L, "setmetatable", guarded_setmetatable);
    lua_pushcfunction(L, no_sethook);
    lua_setfield(L, -2, "sethook");
  }
  lua_pop(L, 1);
}
