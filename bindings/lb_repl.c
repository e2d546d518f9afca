/*
** The REPL evaluator (see lb_repl.h). One entry is one lb_pcall of eval_entry, which
** compiles, runs and formats inside it with inner protected calls: a mistake typed at the
** prompt is the user's answer, not a handler failure, so it is neither logged as an error
** nor counted in handler_errors, and only a failure of the REPL itself reaches lb_pcall.
*/
#include "lb_repl.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mw_log.h"

/* Lives in the Lua heap as a userdata (the print closure holds it), anchored by self_ref. */
struct lb_repl {
  mw_rt_t *rt;
  int self_ref, mod_ref, print_ref;
  lb_repl_print_fn out;
  void *out_ud;
  int sessions; /* -1: not a server */
  int closed;
};

/* ------------------------------------------------------------------------------ print */

/*
** print() while the REPL is in charge: the same text as Lua's print, handed to the
** engine's output function, or Lua's own print when there is none (or the engine is gone).
*/
static int repl_print(lua_State *L) {
  lb_repl_t *r = lua_touserdata(L, lua_upvalueindex(1));
  int n = lua_gettop(L);
  if (r->closed || !r->out) {
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, n, 0);
    return 0;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
    if (i < n) luaL_addchar(&b, '\t');
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  r->out(r->out_ud, s, len);
  return 0;
}

/* ------------------------------------------------------------------------------ .stats */

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* moonwire.repl.rtinfo() -> what .stats shows that only C knows */
static int repl_rtinfo(lua_State *L) {
  lb_repl_t *r = lua_touserdata(L, lua_upvalueindex(1));
  mw_rt_t *rt = r->rt;
  lua_createtable(L, 0, 12);
  if (rt->loop) set_int(L, "uptime_ms", (lua_Integer)(uv_now(rt->loop) - rt->started_ms));
  set_int(L, "mem_used", (lua_Integer)rt->mem_used);
  set_int(L, "mem_peak", (lua_Integer)rt->mem_peak);
  set_int(L, "mem_limit", (lua_Integer)rt->mem_limit);
  set_int(L, "handler_calls", (lua_Integer)rt->handler_calls);
  set_int(L, "handler_errors", (lua_Integer)rt->handler_errors);
  set_int(L, "live_refs", rt->live_refs);
  set_int(L, "pid", (lua_Integer)getpid());
  if (r->sessions >= 0) set_int(L, "sessions", r->sessions);
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    unsigned long size, resident;
    if (fscanf(f, "%lu %lu", &size, &resident) == 2)
      set_int(L, "rss", (lua_Integer)resident * (lua_Integer)sysconf(_SC_PAGESIZE));
    fclose(f);
  }
  if (rt->cfg && rt->cfg->broker.host) {
    lua_pushfstring(L, "%s:%d", rt->cfg->broker.host, rt->cfg->broker.port);
    lua_setfield(L, -2, "broker");
    lua_pushstring(L, rt->cfg->client_id);
    lua_setfield(L, -2, "client_id");
  }
  return 1;
}

/* ------------------------------------------------------------------------------ setup */

static int repl_init(lua_State *L) {
  mw_rt_t *rt = lua_touserdata(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonwire.repl");
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1)) return luaL_error(L, "moonwire.repl did not return a table");
  int mod = lua_gettop(L);
  lb_repl_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->self_ref = r->mod_ref = r->print_ref = LUA_NOREF;
  r->rt = rt;
  r->sessions = -1;
  int ud = lua_gettop(L);
  lua_pushvalue(L, ud);
  lua_pushcclosure(L, repl_rtinfo, 1);
  lua_setfield(L, mod, "rtinfo");
  lua_pushvalue(L, ud);
  lua_getglobal(L, "print");
  lua_pushcclosure(L, repl_print, 2);
  r->print_ref = lb_ref(L);
  lua_pushvalue(L, mod);
  r->mod_ref = lb_ref(L);
  lua_pushvalue(L, ud);
  r->self_ref = lb_ref(L);
  return 1;
}

lb_repl_t *lb_repl_new(mw_rt_t *rt, char *err, size_t errlen) {
  lua_State *L = rt->L;
  lua_pushcfunction(L, repl_init);
  lua_pushlightuserdata(L, rt);
  if (lb_pcall(L, 1, 1, "repl", "setup") != LUA_OK) {
    snprintf(err, errlen, "cannot load moonwire.repl (see the log above)");
    return NULL;
  }
  lb_repl_t *r = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return r;
}

void lb_repl_free(lb_repl_t *r) {
  if (!r || r->closed) return;
  lua_State *L = r->rt->L;
  r->closed = 1;
  r->out = NULL;
  lb_unref(L, &r->print_ref);
  lb_unref(L, &r->mod_ref);
  lb_unref(L, &r->self_ref); /* the memory goes with the last print closure */
}

void lb_repl_set_print(lb_repl_t *r, lb_repl_print_fn fn, void *ud) {
  r->out = fn;
  r->out_ud = ud;
}

void lb_repl_set_sessions(lb_repl_t *r, int sessions) { r->sessions = sessions; }

static int set_flag(lua_State *L) {
  lb_repl_t *r = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->mod_ref);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, lua_tostring(L, 2));
  return 0;
}

void lb_repl_set_flag(lb_repl_t *r, const char *name, int value) {
  lua_State *L = r->rt->L;
  lua_pushcfunction(L, set_flag);
  lua_pushlightuserdata(L, r);
  lua_pushstring(L, name);
  lua_pushboolean(L, value);
  lb_pcall(L, 3, 0, "repl", "flag");
}

static int install_print(lua_State *L) {
  lb_repl_t *r = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->print_ref);
  lua_setglobal(L, "print");
  return 0;
}

void lb_repl_install_print(lb_repl_t *r) {
  lua_State *L = r->rt->L;
  lua_pushcfunction(L, install_print);
  lua_pushlightuserdata(L, r);
  lb_pcall(L, 1, 0, "repl", "print");
}

/* ------------------------------------------------------------------------------ interrupt */

/*
** Stop-gap until lb_pcall runs every call under the budget hook (issue 3), which polls
** rt->interrupt_poll itself: an evaluation installs this count hook only when no hook is
** set, so once lb_pcall has one this code is idle. Build with -DLB_PCALL_POLLS_INTERRUPT
** to drop it entirely.
*/
#ifndef LB_PCALL_POLLS_INTERRUPT
#define REPL_HOOK_COUNT 1000
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mw_rt_t *rt = lb_rt(L);
  if (rt->interrupt_poll && rt->interrupt_poll(rt)) {
    /* Raise again at every instruction, so a pcall in the entry cannot swallow it. */
    lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, 1);
    luaL_where(L, 0); /* the running function: "repl:3:" tells where the loop was */
    lua_pushliteral(L, "interrupted");
    lua_concat(L, 2);
    lua_error(L);
  }
}
#endif

/* ------------------------------------------------------------------------------ evaluation */

/* Traceback for string errors; other error values travel unchanged (they are inspected). */
static int msghandler(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) return 1;
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

typedef struct {
  int idx;      /* stack index of the table */
  int orig_idx; /* its print before the swap */
  int swapped;
} swap_t;

/* Points t.print at our print while the entry runs (only a key that exists: no allocation). */
static void swap_print(lua_State *L, swap_t *s, int t, int p) {
  s->idx = t;
  s->swapped = 0;
  lua_pushliteral(L, "print");
  lua_rawget(L, t);
  s->orig_idx = lua_gettop(L);
  if (lua_isnil(L, -1) || lua_rawequal(L, -1, p)) return;
  lua_pushliteral(L, "print");
  lua_pushvalue(L, p);
  lua_rawset(L, t);
  s->swapped = 1;
}

/* Puts the original back, unless the entry assigned print itself. */
static void unswap_print(lua_State *L, const swap_t *s, int p) {
  if (!s->swapped) return;
  lua_pushliteral(L, "print");
  lua_rawget(L, s->idx);
  int still = lua_rawequal(L, -1, p);
  lua_pop(L, 1);
  if (!still) return;
  lua_pushliteral(L, "print");
  lua_pushvalue(L, s->orig_idx);
  lua_rawset(L, s->idx);
}

/*
** eval_entry(r, code, flags, width) -> "ok" | "error" | "more", text
** Never raises for anything the entry does; only a memory error in its own bookkeeping.
*/
static int eval_entry(lua_State *L) {
  lb_repl_t *r = lua_touserdata(L, 1);
  int flags = (int)lua_tointeger(L, 3), width = (int)lua_tointeger(L, 4);
  mw_rt_t *rt = r->rt;
  lua_settop(L, 4);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->mod_ref); /* 5: moonwire.repl */
  lua_getfield(L, 5, "compile");
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 1, 3, 0) != LUA_OK) { /* 6..8 */
    lua_pushliteral(L, "error");
    lua_pushfstring(L, "REPL internal error: %s", lua_tostring(L, -2));
    return 2;
  }
  if (lua_isnil(L, 6)) {
    lua_pushvalue(L, 7); /* "more" or "error" */
    lua_pushvalue(L, 8);
    return 2;
  }
  /* 9: the app's environment, whose print is swapped too when it has its own */
  lua_getfield(L, 5, "target_env");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->print_ref); /* 10 */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); /* 11 */
  swap_t sg, se = {0, 0, 0};
  swap_print(L, &sg, 11, 10); /* 12 */
  if (lua_istable(L, 9) && !lua_rawequal(L, 9, 11)) swap_print(L, &se, 9, 10); /* 13 */
  int base = lua_gettop(L);
  lua_pushcfunction(L, msghandler);
  lua_pushvalue(L, 6);
#ifndef LB_PCALL_POLLS_INTERRUPT
  int own_hook = lua_gethook(L) == NULL && rt->interrupt_poll != NULL;
  if (own_hook) lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, REPL_HOOK_COUNT);
#endif
  int status = lua_pcall(L, 0, LUA_MULTRET, base + 1);
#ifndef LB_PCALL_POLLS_INTERRUPT
  if (own_hook) lua_sethook(L, NULL, 0, 0);
#endif
  /* Formatting must not be interrupted by the Ctrl-C that stopped the entry. */
  int (*saved_poll)(struct mw_rt *) = rt->interrupt_poll;
  rt->interrupt_poll = NULL;
  unswap_print(L, &sg, 10);
  if (se.idx) unswap_print(L, &se, 10);
  int nres = lua_gettop(L) - (base + 1);
  int ok = status == LUA_OK;
  /* Pack the results (or keep the error value) at base + 1. */
  if (ok) {
    lua_createtable(L, nres, 1);
    lua_insert(L, base + 2);
    for (int i = nres; i >= 1; i--) lua_rawseti(L, base + 2, i);
    lua_pushinteger(L, nres);
    lua_setfield(L, base + 2, "n");
  }
  lua_remove(L, base + 1); /* the message handler; the value is now at base + 1 */
  int value = base + 1;
  lua_getfield(L, 5, "format");
  lua_pushboolean(L, ok);
  lua_pushvalue(L, value);
  lua_pushvalue(L, 7); /* kind */
  lua_pushboolean(L, flags & LB_REPL_RAW);
  lua_pushinteger(L, width);
  if (lua_pcall(L, 5, 2, 0) != LUA_OK) {
    lua_pushliteral(L, "error");
    if (!ok && lua_type(L, value) == LUA_TSTRING) lua_pushvalue(L, value);
    else lua_pushfstring(L, "cannot print the result: %s", lua_tostring(L, -2));
  }
  rt->interrupt_poll = saved_poll;
  return 2;
}

static void result_set(lb_repl_result_t *res, lb_repl_status_t st, const char *text, size_t len) {
  res->status = st;
  res->text = malloc(len + 1);
  if (res->text) {
    memcpy(res->text, text, len);
    res->text[len] = '\0';
    res->len = len;
  } else {
    res->status = LB_REPL_ERROR;
    res->len = 0;
  }
}

void lb_repl_eval(lb_repl_t *r, const char *code, size_t len, int flags, int width, lb_repl_result_t *res) {
  lua_State *L = r->rt->L;
  memset(res, 0, sizeof *res);
  int top = lua_gettop(L);
  lua_pushcfunction(L, eval_entry);
  lua_pushlightuserdata(L, r);
  lua_pushlstring(L, code, len);
  lua_pushinteger(L, flags);
  lua_pushinteger(L, width);
  if (lb_pcall(L, 4, 2, "repl", "entry") != LUA_OK) {
    static const char msg[] = "the entry failed inside the REPL (see the runtime's log)";
    result_set(res, LB_REPL_ERROR, msg, sizeof msg - 1);
    lua_settop(L, top);
    return;
  }
  const char *st = lua_tostring(L, -2);
  size_t n = 0;
  const char *text = lua_tolstring(L, -1, &n);
  lb_repl_status_t status = LB_REPL_ERROR;
  if (st && strcmp(st, "ok") == 0) status = LB_REPL_OK;
  else if (st && strcmp(st, "more") == 0) status = LB_REPL_MORE;
  if (!text) text = "", n = 0;
  result_set(res, status, text, n);
  lua_settop(L, top);
}

char *lb_repl_complete(lb_repl_t *r, const char *word, size_t len) {
  lua_State *L = r->rt->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->mod_ref);
  lua_getfield(L, -1, "complete");
  lua_remove(L, -2);
  lua_pushlstring(L, word, len);
  char *out = NULL;
  if (lb_pcall(L, 1, 1, "repl", "completion") == LUA_OK) {
    size_t n = 0;
    const char *s = lua_tolstring(L, -1, &n);
    if (!s) s = "", n = 0;
    out = malloc(n + 1);
    if (out) {
      memcpy(out, s, n);
      out[n] = '\0';
    }
  }
  lua_settop(L, top);
  return out;
}
