/*
** The per-state objects of moonwire.json: the box (a userdata owning a cJSON tree
** and/or a malloc'd text buffer, so that no Lua error can long-jump over C memory),
** the array and object marker metatables and the json.null sentinel.
*/
#include <stdlib.h>

#include <lauxlib.h>

#include "lb_json_int.h"

/* Registry keys (their addresses). */
const char mw_json_key_array_mt = 'a';
const char mw_json_key_object_mt = 'o';
const char mw_json_key_null = 'n';

/* __gc and __close: frees what the box holds; idempotent (slots cleared first). */
static int box_gc(lua_State *L) {
  mw_json_box_t *b = (mw_json_box_t *)luaL_checkudata(L, 1, MW_JSON_BOX_MT);
  cJSON *tree = b->tree;
  char *buf = b->buf;
  b->tree = NULL;
  b->buf = NULL;
  b->len = b->cap = 0;
  cJSON_Delete(tree);
  free(buf);
  return 0;
}

static int box_tostring(lua_State *L) {
  mw_json_box_t *b = (mw_json_box_t *)luaL_checkudata(L, 1, MW_JSON_BOX_MT);
  if (b->tree == NULL && b->buf == NULL)
    lua_pushliteral(L, "moonwire.json.box (empty)");
  else
    lua_pushfstring(L, "moonwire.json.box (%p)", (void *)b);
  return 1;
}

static const luaL_Reg box_meta[] = {
  {"__gc", box_gc},
  {"__close", box_gc},
  {"__tostring", box_tostring},
  {NULL, NULL}
};

/* json.null's __tostring */
static int null_tostring(lua_State *L) {
  lua_pushliteral(L, "json.null");
  return 1;
}

/*
** Creates whatever per-state object is missing: the box metatable, the array and
** object marker metatables and the json.null sentinel (registry, keyed by the
** addresses above). Each one is created once, so marks stay valid for the state's
** life. May raise memory errors; owns nothing while doing so.
*/
void mw_json_ensure_meta(lua_State *L) {
  luaL_checkstack(L, 4, "json");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_null) == LUA_TUSERDATA) {  /* made last: all exist */
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, MW_JSON_BOX_MT))
    luaL_setfuncs(L, box_meta, 0);
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_array_mt) != LUA_TTABLE) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "moonwire.json.array");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &mw_json_key_array_mt);
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_object_mt) != LUA_TTABLE) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "moonwire.json.object");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &mw_json_key_object_mt);
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_null) != LUA_TUSERDATA) {
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "moonwire.json.null");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json.null");
    lua_setfield(L, -2, "__metatable");  /* getmetatable(json.null) == "json.null" */
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &mw_json_key_null);
  }
  lua_pop(L, 1);
}

/* Pushes a new empty box; stack: +1 */
mw_json_box_t *mw_json_pushbox(lua_State *L) {
  mw_json_box_t *b;
  mw_json_ensure_meta(L);
  b = (mw_json_box_t *)lua_newuserdatauv(L, sizeof(mw_json_box_t), 0);
  b->tree = NULL;  /* empty before the metatable is set: nothing to leak */
  b->buf = NULL;
  b->len = b->cap = 0;
  luaL_setmetatable(L, MW_JSON_BOX_MT);
  return b;
}

cJSON **mw_json_newbox(lua_State *L) {
  return &mw_json_pushbox(L)->tree;
}

void mw_json_pushnull(lua_State *L) {
  mw_json_ensure_meta(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_null);
}

int mw_json_isnull(lua_State *L, int idx) {
  int r;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_checkstack(L, 1))
    return 0;
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_null);
  r = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  return r;
}
