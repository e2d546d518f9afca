/*
** Budgets that protect the device from its scripts: every entry into Lua (lb_pcall_ex)
** runs with a wall-clock deadline and a heap cap.
**
** The deadline is enforced by an instruction-count hook that is only installed when it
** is needed: a POSIX timer fires a signal on the loop thread at the deadline (or, while
** rt->interrupt_poll is set, every LB_POLL_MS), and the signal handler installs the hook
** with a count of 1 — lua_sethook is the one Lua call made for use from a signal handler.
** A hook that is always installed would make the VM trap on every instruction (about 40 %
** slower Lua); this way code runs at full speed until its deadline. The timer is armed
** lazily: an entry arms it only if it is not armed for an earlier time, and when it fires
** while a later entry runs, the hook sees the deadline has not passed, removes itself and
** re-arms for that entry's deadline; so under steady traffic it costs one timer_settime and
** one signal per budget period, not per call.
**
** Once an entry is over its deadline (or rt->interrupt_poll said stop) it is "tripped":
** the hook stays on with a count of 1 and raises again at every instruction, so a pcall in
** the script that catches the error gets it back on its very next instruction, and the
** error works its way out to the lb_pcall that started the entry. Message handlers and
** __close metamethods written in Lua trip too; only C runs hook-free.
**
** Hooks are per thread: the coroutines being resumed are tracked (rt->threads, kept by
** coroutine.resume/wrap below), and the signal handler hooks all of them and the main
** thread, so a loop inside a coroutine is stopped as well.
**
** Lua 5.4 turns hooks off in a few places, and the standard library is adjusted so that
** no script code can run there (lb_budget_guard_libs):
** - while a hook runs, and so while the error it raises is being handled until the next
**   protected-call boundary: xpcall's message handler is skipped once the entry is
**   stopped, and coroutine bodies run inside a protected call, so their to-be-closed
**   variables are closed with hooks back on;
** - in __gc finalizers: setmetatable refuses a __gc written in Lua (use <close>);
** - debug.sethook would replace the budget's hook: it is not available.
*/
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lb.h"
#include "mw_log.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

/* How often interrupt_poll is asked while an entry runs. */
#define LB_POLL_MS 50

/* The runtime whose Lua state the timer signal stops (one per process). */
static mw_rt_t *volatile budget_rt;
static int budget_signal;

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

/* Hooks the main thread and every coroutine being resumed: whichever runs, traps next. */
static void hook_all(mw_rt_t *rt) {
  lua_sethook(rt->L, budget_hook, LUA_MASKCOUNT, 1);
  int n = rt->nthreads;
  for (int i = 0; i < n && i < (int)(sizeof rt->threads / sizeof rt->threads[0]); i++)
    lua_sethook(rt->threads[i], budget_hook, LUA_MASKCOUNT, 1);
}

static void on_timer_signal(int sig) {
  (void)sig;
  int saved = errno;
  mw_rt_t *rt = budget_rt;
  if (rt) {
    rt->timer_armed = 0;
    if (rt->call.depth > 0 && rt->L) hook_all(rt);
  }
  errno = saved;
}

/* When the hook must look next: the deadline, or sooner to poll for an interrupt. */
static uint64_t next_check(const mw_rt_t *rt) {
  uint64_t at = rt->call.deadline_ns;
  if (rt->interrupt_poll) {
    uint64_t poll = lb_now_ns() + LB_POLL_MS * 1000000u;
    if (poll < at) at = poll;
  }
  return at;
}

static void arm(mw_rt_t *rt, uint64_t at) {
  if (!rt->budget_timer_ok || at == UINT64_MAX) return;
  if (rt->timer_armed && rt->timer_at_ns <= at) return;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  its.it_value.tv_sec = (time_t)(at / 1000000000u);
  its.it_value.tv_nsec = (long)(at % 1000000000u);
  rt->timer_at_ns = at;
  rt->timer_armed = 1;
  if (timer_settime((timer_t)rt->budget_timer, TIMER_ABSTIME, &its, NULL) != 0) rt->timer_armed = 0;
}

/* Raises the pending stop from inside the hook: the same message every time. */
static int hook_raise(lua_State *L, const char *msg) {
  lua_pushstring(L, msg);
  return lua_error(L);
}

static void trip(lua_State *L, mw_rt_t *rt, lua_Debug *ar, lb_stop_t why) {
  lb_frame_t *f = &rt->call;
  f->tripped = why;
  char where[160] = "";
  if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
    snprintf(where, sizeof where, "%s:%d: ", ar->short_src, ar->currentline);
  if (why == LB_STOP_INTERRUPT) snprintf(rt->trip_msg, sizeof rt->trip_msg, "%sinterrupted", where);
  else snprintf(rt->trip_msg, sizeof rt->trip_msg, "%stime limit exceeded (%u ms)", where, (unsigned)f->limit_ms);
  /* From now on every instruction raises, in whichever thread runs. */
  hook_all(rt);
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  mw_rt_t *rt = lb_rt(L);
  lb_frame_t *f = rt ? &rt->call : NULL;
  if (!f || f->depth == 0) { /* a leftover from an entry that has ended */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (f->tripped == LB_STOP_NONE) {
    if (rt->interrupt_poll && rt->interrupt_poll(rt)) {
      trip(L, rt, ar, LB_STOP_INTERRUPT);
    } else if (f->deadline_ns != UINT64_MAX && lb_now_ns() >= f->deadline_ns) {
      trip(L, rt, ar, LB_STOP_TIME);
    } else {
      /* The timer was for an earlier entry, or a poll: full speed again until next time. */
      lua_sethook(L, NULL, 0, 0);
      arm(rt, next_check(rt));
      return;
    }
  }
  hook_raise(L, rt->trip_msg);
}

void lb_budget_install(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  if (!rt) return;
  if (!budget_signal) {
    budget_signal = SIGRTMIN + 4;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_timer_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(budget_signal, &sa, NULL) != 0)
      MW_LOGE("lua", "cannot install the budget signal: %s", strerror(errno));
  }
  /* To this thread only: it owns the Lua state (libuv may have others for its thread pool). */
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = budget_signal;
  sev.sigev_notify_thread_id = gettid();
  timer_t t;
  rt->budget_timer_ok = timer_create(CLOCK_MONOTONIC, &sev, &t) == 0;
  if (rt->budget_timer_ok) {
    rt->budget_timer = (void *)t;
  } else {
    MW_LOGE("lua", "cannot create the budget timer (%s): scripts will run without a time limit", strerror(errno));
  }
  rt->timer_armed = 0;
  budget_rt = rt;
}

void lb_budget_uninstall(mw_rt_t *rt) {
  if (budget_rt == rt) budget_rt = NULL;
  if (rt->budget_timer_ok) timer_delete((timer_t)rt->budget_timer);
  rt->budget_timer_ok = false;
  rt->timer_armed = 0;
}

void lb_budget_enter(mw_rt_t *rt, const lb_call_opts_t *o, lb_frame_t *saved) {
  *saved = rt->call;
  lb_frame_t *f = &rt->call;
  uint32_t ms = o && o->budget_ms ? o->budget_ms : rt->budget_ms;
  bool detached = o && o->detached;
  f->detached = detached;
  f->start_ns = lb_now_ns();
  f->depth = saved->depth + 1;
  f->tripped = LB_STOP_NONE;
  f->owner = o && o->owner ? o->owner : saved->owner;
  if (ms == 0 || ms == LB_BUDGET_NONE) {
    f->deadline_ns = UINT64_MAX;
    f->limit_ms = 0;
  } else {
    f->deadline_ns = f->start_ns + (uint64_t)ms * 1000000u;
    f->limit_ms = ms;
  }
  /* A nested entry (app.reload() from the REPL) cannot outlive the one that called it. */
  if (saved->depth > 0 && !detached && saved->deadline_ns < f->deadline_ns) {
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
  if (saved->depth > 0 && !detached && saved->mem_cap && (cap == 0 || saved->mem_cap < cap)) {
    cap = saved->mem_cap;
    f->mem_grow = saved->mem_grow;
  }
  f->mem_cap = cap;
  f->mem_relaxed = 0;
  lb_budget_mem_update(rt);
  arm(rt, next_check(rt));
}

lb_stop_t lb_budget_leave(mw_rt_t *rt, const lb_frame_t *saved, int status) {
  lb_stop_t stop = rt->call.tripped;
  if (status == LUA_ERRMEM) stop = LB_STOP_MEMORY;
  bool detached = rt->call.detached;
  uint64_t took = lb_now_ns() - rt->call.start_ns;
  rt->call = *saved;
  /* The caller's clock was stopped while a detached entry ran. */
  if (detached && rt->call.deadline_ns != UINT64_MAX) rt->call.deadline_ns += took;
  lb_budget_mem_update(rt);
  /* A stopped entry leaves the hook on; the main thread runs at full speed again (a
     coroutine that still has it removes it the next time it runs). */
  if (rt->call.depth == 0 && lua_gethook(rt->L)) lua_sethook(rt->L, NULL, 0, 0);
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

/* coroutine.create with the body guarded; upvalue 1: the original create. */
static int guarded_create(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushcclosure(L, guarded_body, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/*
** lua_resume with co on rt->threads while it runs, so the budget can hook it. Moves narg
** values from L to co; returns the number of results moved back, or -1 with the error.
*/
static int tracked_resume(lua_State *L, lua_State *co, int narg) {
  mw_rt_t *rt = lb_rt(L);
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  int n = rt->nthreads, tracked = n < (int)(sizeof rt->threads / sizeof rt->threads[0]);
  if (tracked) {
    rt->threads[n] = co;
    atomic_signal_fence(memory_order_seq_cst); /* the signal handler reads the slot, then the count */
    rt->nthreads = n + 1;
  }
  int nres = 0;
  int status = lua_resume(co, L, narg, &nres);
  if (tracked) rt->nthreads = n;
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

/* coroutine.resume(co, ...) as the coroutine library has it, tracked. */
static int tracked_coresume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  int r = tracked_resume(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

/* The function coroutine.wrap returns; upvalue 1: the coroutine. */
static int tracked_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = tracked_resume(L, co, lua_gettop(L));
  if (r >= 0) return r;
  int stat = lua_status(co);
  if (stat != LUA_OK && stat != LUA_YIELD) { /* an error in the coroutine: close its tbc variables */
#if LUA_VERSION_RELEASE_NUM >= 50406
    stat = lua_closethread(co, L);
#else
    stat = lua_resetthread(co);
#endif
    lua_xmove(co, L, 1);
  }
  if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

/* coroutine.wrap(f); upvalue 1: the guarded coroutine.create. */
static int tracked_wrap(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  lua_pushcclosure(L, tracked_auxwrap, 1);
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
    lua_getfield(L, -1, "create");
    lua_pushcclosure(L, tracked_wrap, 1);
    lua_setfield(L, -2, "wrap");
    lua_pushcfunction(L, tracked_coresume);
    lua_setfield(L, -2, "resume");
  }
  lua_pop(L, 1);
  if (lua_getglobal(L, "debug") == LUA_TTABLE) {
    wrap_field(L, "setmetatable", guarded_setmetatable);
    lua_pushcfunction(L, no_sethook);
    lua_setfield(L, -2, "sethook");
  }
  lua_pop(L, 1);
}
