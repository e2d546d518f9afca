/*
** Creating and closing the one Lua state: capped allocator, standard libraries,
** moonwire.* in package.preload, and a module path that starts at the app's folder.
*/
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "lb.h"
#include "lb_app.h"
#include "lb_state.h"
#include "mw_log.h"

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  mw_log_printf(MW_LOG_ERROR, "lua", "unprotected error: %s", msg ? msg : "?");
  return 0; /* Lua aborts after this */
}

/* Lua's warn(): pieces are joined until the last one, then logged; "@on"/"@off" switch it. */
static void warnf(void *ud, const char *msg, int tocont) {
  mw_rt_t *rt = ud;
  if (!rt->warn_len && !tocont && msg[0] == '@') {
    if (strcmp(msg, "@off") == 0) rt->warn_off = 1;
    else if (strcmp(msg, "@on") == 0) rt->warn_off = 0;
    return;
  }
  size_t n = strlen(msg), room = sizeof rt->warn_buf - 1 - rt->warn_len;
  memcpy(rt->warn_buf + rt->warn_len, msg, n < room ? n : room);
  rt->warn_len += n < room ? n : room;
  if (tocont) return;
  rt->warn_buf[rt->warn_len] = '\0';
  rt->warn_len = 0;
  if (!rt->warn_off) mw_log_printf(MW_LOG_WARN, "lua", "%s", rt->warn_buf);
}

lua_State *lb_state_new(mw_rt_t *rt, const char *app_dir) {
  if (!rt->mem_reserve) rt->mem_reserve = 1u << 20;
  lb_budget_mem_update(rt);
  lua_State *L = lua_newstate(lb_alloc, rt);
  if (!L) return NULL;
  lua_atpanic(L, panic);
  rt->L = L;
  rt->acks_ref = LUA_NOREF;
  lb_set_rt(L, rt);
  lua_setwarnf(L, warnf, rt);
  lb_budget_install(L);
  luaL_openlibs(L);
  lb_budget_guard_libs(L);
  lb_preload(L);
  if (app_dir) {
    /* Modules next to the app come first, so an app folder is self-contained. */
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", app_dir, app_dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
  }
  return L;
}

int lb_state_run_file(mw_rt_t *rt, const char *path, char *err, size_t errlen) {
  lua_State *L = rt->L;
  /* Text only: precompiled chunks can crash the VM. */
  if (luaL_loadfilex(L, path, "t") != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  uint64_t before = rt->handler_errors;
  if (lb_pcall(L, 0, 0, "loading", path) != LUA_OK || rt->handler_errors != before) {
    snprintf(err, errlen, "%s raised an error (see above)", path);
    return -1;
  }
  return 0;
}

void lb_state_close(mw_rt_t *rt) {
  if (!rt->L) return;
  lb_app_close(rt);
  lb_mqtt_close_all(rt);
  lb_budget_uninstall(rt);
  lua_close(rt->L);
  rt->L = NULL;
  if (rt->live_refs != 0) mw_log_printf(MW_LOG_WARN, "lua", "%d registry references were not released", rt->live_refs);
}
