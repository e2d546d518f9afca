/*
** moonwire.json: the module table (json.decode, json.encode, json.null, json.array,
** json.object, json.is_array) and the options of decode and encode. The work is done
** elsewhere: lb_json_box.c (box, marks, json.null), lb_json_walk.c with lb_json_text.c
** and lb_json_tree.c (encoding), lb_json_decode.c and lb_json_diag.c (decoding); the
** C helpers declared in lmod_json.h live there too.
**
** Ownership (the point of decode and encode here): no Lua error may long-jump over C
** memory.
**  - decode: the cJSON tree is parsed straight into a "box" userdata (__gc == __close)
**    that is already on the stack and marked to-be-closed. Converting the tree to Lua
**    can raise (memory errors); the box frees the tree on every exit, normal or not.
**  - encode: one walker turns a Lua value into events for a "sink" and never raises: it
**    uses only Lua API calls that do not allocate (lua_next, lua_rawgeti, lua_tolstring
**    on strings, lua_checkstack...) and keeps its C scratch memory to itself. The text
**    sink writes into the buffer of a to-be-closed box; the tree sink (for
**    mw_json_from_lua) deletes its partial tree on failure. Errors are recorded with
**    the key path and raised only once nothing but boxes hold memory.
*/
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "lb_json_int.h"

/*
** Reads the options table at 'idx' (nil/none: defaults). 'pretty' may be NULL when the
** function takes no 'pretty'. Raises on unknown options and wrong types.
*/
static void check_opts(lua_State *L, int idx, int *pretty, int *depth) {
  if (lua_isnoneornil(L, idx))
    return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {  /* stack: key, value */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (k != NULL && strcmp(k, "depth") == 0) {
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint || v < 1 || v > MW_JSON_MAX_DEPTH)
        luaL_argerror(L, idx, lua_pushfstring(L, "'depth' must be an integer in 1..%d", MW_JSON_MAX_DEPTH));
      *depth = (int)v;
    }
    else if (k != NULL && pretty != NULL && strcmp(k, "pretty") == 0) {
      if (!lua_isboolean(L, -1))
        luaL_argerror(L, idx, "'pretty' must be a boolean");
      *pretty = lua_toboolean(L, -1);
    }
    else
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k ? k : luaL_typename(L, -2)));
    lua_pop(L, 1);
  }
}

/* json.decode(text [, {depth = N}]) -> value | nil, message, "EJSON" */
static int ljson_decode(lua_State *L) {
  size_t len, bad, plen, pos;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *end = NULL;
  int depth = MW_JSON_DEFAULT_DEPTH, rc, why = PK_OK;
  size_t open_str, errpos;
  char what[64] = "malformed JSON";
  mw_json_box_t *b;
  check_opts(L, 2, NULL, &depth);
  lua_settop(L, 1);
  bad = mw_json_prescan(s, len, depth, &why, &open_str);
  b = mw_json_pushbox(L);
  lua_toclose(L, 2);  /* stack: text, box (tree freed on any exit) */
  if (why == PK_DEPTH)
    snprintf(what, sizeof what, "nesting deeper than %d levels", depth);
  /*
  ** A problem found by the prescan: parse only the text up to it (including it: cJSON
  ** reports an error at the very end as the last byte), so that an earlier syntax
  ** error still wins. Otherwise parse len + 1 bytes: Lua strings end in '\0',
  ** which cJSON then reports as the failing byte when the input ends too early.
  */
  plen = bad != SIZE_MAX ? bad + 1 : len + 1;
  b->tree = cJSON_ParseWithLengthOpts(s, plen, &end, 0);
  if (b->tree == NULL) {
    pos = end != NULL ? (size_t)(end - s) : 0;
    if (bad != SIZE_MAX && pos >= bad)
      return mw_json_decode_error(L, s, len, bad, what, NULL);
    pos = mw_json_fix_error_pos(s, len, pos, open_str);
    return mw_json_decode_error(L, s, len, pos, "malformed JSON", NULL);
  }
  for (pos = (size_t)(end - s); pos < len && mw_json_is_ws(s[pos]); pos++)
    ;
  if (pos < len) {
    if (bad != SIZE_MAX && pos >= bad)
      return mw_json_decode_error(L, s, len, bad, what, NULL);
    return mw_json_decode_error(L, s, len, pos, "malformed JSON", "trailing data");
  }
  /* stack after: text, box, array mt, null, value (if PK_OK) */
  rc = mw_json_push_source(L, b->tree, depth, s, len, &errpos);
  if (rc == PK_RANGE)
    return mw_json_decode_error(L, s, len, errpos, "number out of range", NULL);
  if (rc == PK_DEPTH) {  /* the prescan should have caught it */
    snprintf(what, sizeof what, "nesting deeper than %d levels", depth);
    return mw_json_decode_error(L, s, len, 0, what, NULL);
  }
  lua_closeslot(L, 2);  /* free the tree now; stack: text, nil, array mt, null, value */
  return 1;
}

/* json.encode(value [, {pretty = bool, depth = N}]) -> string | nil, message, "ENOMEM" */
static int ljson_encode(lua_State *L) {
  int pretty = 0, depth = MW_JSON_DEFAULT_DEPTH, rc;
  char err[ERRMSG_SIZE];
  mw_json_box_t *b;
  luaL_checkany(L, 1);
  check_opts(L, 2, &pretty, &depth);
  lua_settop(L, 1);
  b = mw_json_pushbox(L);
  lua_toclose(L, 2);  /* stack: value, box (text buffer freed on any exit) */
  rc = mw_json_encode_text(L, 1, b, pretty, depth, err, sizeof err);
  if (rc == JK_VALUE)
    return luaL_error(L, "%s", err);  /* only the box holds memory */
  if (rc == JK_NOMEM) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushliteral(L, "ENOMEM");
    return 3;
  }
  lua_pushlstring(L, b->buf, b->len);
  return 1;
}

/* Sets the marker metatable under 'key' on table arg 1 (or a new table); returns it. */
static int set_mark(lua_State *L, const void *key) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  mw_json_ensure_meta(L);
  if (lua_getmetatable(L, 1)) {  /* only our own marks may be replaced */
    int ours;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_array_mt);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_object_mt);
    ours = lua_rawequal(L, -3, -2) || lua_rawequal(L, -3, -1);
    lua_pop(L, 3);
    if (!ours)
      return luaL_argerror(L, 1, "table already has a metatable");
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_setmetatable(L, 1);
  return 1;
}

/* json.array([t]) -> t, marked to encode as a JSON array (also when empty) */
static int ljson_array(lua_State *L) {
  return set_mark(L, &mw_json_key_array_mt);
}

/* json.object([t]) -> t, marked to encode as a JSON object (also when empty) */
static int ljson_object(lua_State *L) {
  return set_mark(L, &mw_json_key_object_mt);
}

/* json.is_array(v) -> boolean: would json.encode write v as an array? */
static int ljson_is_array(lua_State *L) {
  lua_Integer n = 0, maxi = 0;
  int res = 1;
  if (lua_type(L, 1) != LUA_TTABLE) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {
    int marked_array, marked_object;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_array_mt);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_object_mt);
    marked_array = lua_rawequal(L, -3, -2);
    marked_object = lua_rawequal(L, -3, -1);
    lua_settop(L, 1);
    if (marked_array || marked_object) {
      lua_pushboolean(L, marked_array);
      return 1;
    }
  }
  lua_pushnil(L);
  while (res && lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
      n++;
      if (lua_tointeger(L, -1) > maxi)
        maxi = lua_tointeger(L, -1);
    }
    else
      res = 0;
  }
  lua_settop(L, 1);
  lua_pushboolean(L, res && n > 0 && n == maxi);
  return 1;
}

static const luaL_Reg jsonlib[] = {
  {"decode", ljson_decode},
  {"encode", ljson_encode},
  {"array", ljson_array},
  {"object", ljson_object},
  {"is_array", ljson_is_array},
  {"null", NULL},  /* the slot for json.null, filled with the sentinel below */
  {NULL, NULL}
};

int luaopen_moonwire_json(lua_State *L) {
  luaL_newlib(L, jsonlib);
  mw_json_pushnull(L);
  lua_setfield(L, -2, "null");
  return 1;
}
