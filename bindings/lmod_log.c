/*
** moonwire.log: levelled logging from scripts, tagged with the caller's file:line.
*/
#include <lauxlib.h>
#include <string.h>

#include "lb.h"
#include "mw_log.h"

/* Concatenates the arguments with tostring semantics, separated by spaces. */
static int log_at(lua_State *L, mw_log_level_t level) {
  if (level < mw_log_get_level()) return 0;
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
    if (i < n) luaL_addchar(&b, ' ');
  }
  luaL_pushresult(&b);
  char where[256];
  lb_where(L, 1, where, sizeof where);
  mw_log_write(level, where[0] ? where : NULL, lua_tostring(L, -1));
  return 0;
}

/* log.debug(...) / log.info(...) / log.warn(...) / log.error(...) */
static int llog_debug(lua_State *L) { return log_at(L, MW_LOG_DEBUG); }
static int llog_info(lua_State *L) { return log_at(L, MW_LOG_INFO); }
static int llog_warn(lua_State *L) { return log_at(L, MW_LOG_WARN); }
static int llog_error(lua_State *L) { return log_at(L, MW_LOG_ERROR); }

/* log.level([name]) -> current level name; sets it when a name is given */
static int llog_level(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    int lvl = mw_log_level_parse(luaL_checkstring(L, 1));
    if (lvl < 0) return luaL_argerror(L, 1, "expected 'debug', 'info', 'warn' or 'error'");
    mw_log_set_level((mw_log_level_t)lvl);
  }
  lua_pushstring(L, mw_log_level_name(mw_log_get_level()));
  return 1;
}

int luaopen_moonwire_log(lua_State *L) {
  static const luaL_Reg fns[] = {{"debug", llog_debug}, {"info", llog_info}, {"warn", llog_warn},
                                 {"error", llog_error}, {"level", llog_level}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
