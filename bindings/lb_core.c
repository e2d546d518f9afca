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
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int lb_pcall(lua_State *L, int nargs, int nresults, const char *what, const char *detail) {
  mw_rt_t *rt = lb_rt(L);
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  if (rt) rt->handler_calls++;
  int status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (status != LUA_OK) {
    if (rt) rt->handler_errors++;
    const char *msg = lua_tostring(L, -1);
    if (detail) mw_log_printf(MW_LOG_ERROR, NULL, "%s '%s' failed: %s", what, detail, msg ? msg : "(no message)");
    else mw_log_printf(MW_LOG_ERROR, NULL, "%s failed: %s", what, msg ? msg : "(no message)");
    lua_pop(L, 1);
    /* After a memory error, give back what we can before anything else runs. */
    if (status == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT);
  }
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
  if (rt->mem_limit && nsize > old && rt->mem_used + (nsize - old) > rt->mem_limit) return NULL;
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
