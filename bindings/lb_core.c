#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "lb_scripts.h"
#include "mw_log.h"

/*
** The context sits in the state's extra space (copied into every coroutine), not the
** registry: lb_rt runs for every handler call and every publish.
*/
void lb_set_rt(lua_State *L, mw_rt_t *rt) { *(mw_rt_t **)lua_getextraspace(L) = rt; }

mw_rt_t *lb_rt(lua_State *L) { return *(mw_rt_t **)lua_getextraspace(L); }

/* Message handler: turns any error value into a string with a traceback (as lua.c does). */
static int msghandler(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  /* The traceback is the runtime's work: it may use the headroom above the cap (the
     frame, and with it this relaxation, is restored when the entry returns). */
  if (rt) {
    rt->call.mem_relaxed++;
    lb_budget_mem_update(rt);
  }
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Leaves in rt->last_error what the log says, minus the traceback. */
static void keep_message(mw_rt_t *rt, const char *msg) {
  const char *tb = strstr(msg, "\nstack traceback:");
  size_t n = tb ? (size_t)(tb - msg) : strlen(msg);
  if (n >= sizeof rt->last_error) n = sizeof rt->last_error - 1;
  memcpy(rt->last_error, msg, n);
  rt->last_error[n] = '\0';
}

int lb_pcall(lua_State *L, int nargs, int nresults, const char *what, const char *detail) {
  return lb_pcall_ex(L, nargs, nresults, NULL, what, detail);
}

int lb_pcall_ex(lua_State *L, int nargs, int nresults, const lb_call_opts_t *opts, const char *what,
                const char *detail) {
  mw_rt_t *rt = lb_rt(L);
  int fn = lua_gettop(L) - nargs;
  /* Below the function: a copy of it (to say where it is defined after a memory error,
     which carries no position) and the message handler. */
  lua_pushvalue(L, fn);
  lua_insert(L, fn);
  lua_pushcfunction(L, msghandler);
  lua_insert(L, fn + 1);
  lb_frame_t saved;
  uint32_t owner = 0;
  size_t grow = 0;
  if (rt) {
    rt->handler_calls++;
    lb_budget_enter(rt, opts, &saved);
    owner = rt->call.owner;
    grow = rt->call.mem_grow;
  }
  int status = lua_pcall(L, nargs, nresults, fn + 1);
  lb_stop_t stop = rt ? lb_budget_leave(rt, &saved, status) : LB_STOP_NONE;
  lua_remove(L, fn + 1);
  if (rt) rt->last_stop = stop;
  if (status == LUA_OK) {
    lua_remove(L, fn);
    return status;
  }
  char buf[512];
  const char *msg = lua_tostring(L, -1);
  if (status == LUA_ERRMEM && rt) {
    char in[200] = "";
    lua_Debug ar;
    lua_pushvalue(L, fn);
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
      snprintf(in, sizeof in, " in the function at %s:%d", ar.short_src, ar.linedefined);
    if (grow)
      snprintf(buf, sizeof buf, "memory limit exceeded (a version's load may add %zu KiB to the heap)%s", grow >> 10,
               in);
    else
      snprintf(buf, sizeof buf, "memory limit exceeded (limits.lua_memory = %zu KiB)%s", rt->mem_limit >> 10, in);
    msg = buf;
  }
  if (!msg) msg = "(no message)";
  if (rt) {
    rt->handler_errors++;
    keep_message(rt, msg);
  }
  if (detail) mw_log_printf(MW_LOG_ERROR, NULL, "%s '%s' failed: %s", what, detail, msg);
  else mw_log_printf(MW_LOG_ERROR, NULL, "%s failed: %s", what, msg);
  lua_settop(L, fn - 1);
  /* After a memory error, give back what we can before anything else runs. */
  if (status == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT);
  if (rt) lb_app_note_error(rt, owner);
  return status;
}

int lb_ref(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (rt && ref != LUA_REFNIL) rt->live_refs++;
  return ref;
}

void lb_unref(lua_State *L, int *ref) {
  if (*ref == LUA_NOREF || *ref == LUA_REFNIL) return;
  mw_rt_t *rt = lb_rt(L);
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  if (rt) rt->live_refs--;
  *ref = LUA_NOREF;
}

int lb_fail(lua_State *L, const char *msg, const char *code) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

int lb_fail_status(lua_State *L, mw_status_t st, const char *msg) {
  return lb_fail(L, msg && *msg ? msg : mw_status_str(st), mw_status_name(st));
}

void lb_where(lua_State *L, int lvl, char *buf, size_t len) {
  lua_Debug ar;
  buf[0] = '\0';
  if (lua_getstack(L, lvl, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
    snprintf(buf, len, "%s:%d", ar.short_src, ar.currentline);
}

void *lb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mw_rt_t *rt = ud;
  /* When ptr is NULL, osize encodes the object type, not a size. */
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    rt->mem_used -= old;
    return NULL;
  }
  if (nsize > old && nsize - old > rt->mem_allow - (rt->mem_used < rt->mem_allow ? rt->mem_used : rt->mem_allow))
    return NULL;
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  rt->mem_used = rt->mem_used - old + nsize;
  if (rt->mem_used > rt->mem_peak) rt->mem_peak = rt->mem_used;
  return p;
}

/* package.preload loader of an embedded script: compiles it under its own file name. */
static int load_script(lua_State *L) {
  const lb_script_t *s = &lb_scripts[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbufferx(L, s->source, s->len, s->chunkname, "t") != LUA_OK) return lua_error(L);
  lua_pushstring(L, s->module);
  lua_call(L, 1, 1);
  return 1;
}

void lb_preload(lua_State *L) {
  static const luaL_Reg mods[] = {
      {"moonwire.log", luaopen_moonwire_log},     {"moonwire.timer", luaopen_moonwire_timer},
      {"moonwire.mqtt", luaopen_moonwire_mqtt},   {"moonwire.device", luaopen_moonwire_device},
      {"moonwire.json", luaopen_moonwire_json},
      {"moonwire.shadow.core", luaopen_moonwire_shadow_core},
      {"moonwire.se", luaopen_moonwire_se},
      {"moonwire.app", luaopen_moonwire_app},
      {"moonwire.pki", luaopen_moonwire_pki},     {"moonwire.connection", luaopen_moonwire_connection},
      {NULL, NULL},
  };
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = mods; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  for (int i = 0; lb_scripts[i].module; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, load_script, 1);
    lua_setfield(L, -2, lb_scripts[i].module);
  }
  lua_pop(L, 1);
}
