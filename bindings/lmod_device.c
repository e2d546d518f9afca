/*
** moonwire.device: who this device is and how it was configured (read-only).
*/
#include <lauxlib.h>

#include "lb.h"
#include "lb_config.h"

static int readonly_newindex(lua_State *L) {
  return luaL_error(L, "the device configuration is read-only (key '%s')", luaL_tolstring(L, 2, NULL));
}

/* Wraps the table at the top in a read-only proxy, nested tables included (lazily). */
static void push_readonly(lua_State *L);

static int readonly_index(lua_State *L) {
  lua_getiuservalue(L, 1, 1); /* the real table */
  lua_pushvalue(L, 2);
  lua_gettable(L, -2);
  if (lua_istable(L, -1)) push_readonly(L);
  return 1;
}

/* pairs() over the proxy walks the real table, proxying nested tables. */
static int readonly_next(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  if (!lua_next(L, -2)) return 0;
  if (lua_istable(L, -1)) push_readonly(L);
  return 2;
}

static int readonly_pairs(lua_State *L) {
  lua_pushcfunction(L, readonly_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int readonly_len(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
  return 1;
}

static void push_readonly(lua_State *L) {
  lua_newuserdatauv(L, 0, 1);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1);
  if (luaL_newmetatable(L, "moonwire.device.config")) {
    lua_pushcfunction(L, readonly_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, readonly_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushcfunction(L, readonly_len);
    lua_setfield(L, -2, "__len");
    lua_pushstring(L, "read-only");
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
}

int luaopen_moonwire_device(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  lua_newtable(L);
  if (rt && rt->cfg) {
    lua_pushstring(L, rt->cfg->thing);
    lua_setfield(L, -2, "thing");
    lua_pushstring(L, rt->cfg->client_id);
    lua_setfield(L, -2, "client_id");
  }
  lb_config_push(L);
  if (lua_istable(L, -1)) push_readonly(L);
  else {
    lua_pop(L, 1);
    lua_newtable(L);
    push_readonly(L);
  }
  lua_setfield(L, -2, "config");
  return 1;
}
