/*
** libFuzzer target for moonwire.json (bindings/lmod_json.c and bindings/lb_json_*.c).
**
** For every input: json.decode it; a failure must be the (nil, "... at line L, column
** C ...", "EJSON") triple. When it decodes, encode the value, decode that and encode
** again: both encodings must be identical (a stable round trip), and so must the
** encoding of the pretty form. Too-deep input is retried with {depth = 1000}. The C
** helpers get the decoded value too: mw_json_from_lua (may only refuse NUL bytes) and
** mw_json_push of the resulting tree. Any Lua error or broken invariant aborts.
**
** Build: clang -fsanitize=fuzzer,address,undefined -I bindings tests/fuzz/fuzz_json.c
**        bindings/lmod_json.c bindings/lb_json_*.c $(pkg-config --cflags --libs lua5.4 libcjson) -lm
** Run:   ./fuzz_json -max_total_time=60 NEW_CORPUS_DIR tests/fuzz/corpus/json
*/
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lmod_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int check_ref = LUA_NOREF;

static const char checker[] =
  "local json, helpers = ...\n"
  "local function dec(s, opts)\n"
  "  local v, msg = json.decode(s, opts)\n"
  "  if v == nil then error('cannot decode our own output: ' .. msg .. '\\n' .. s) end\n"
  "  return v\n"
  "end\n"
  "local function roundtrip(v, depth)\n"
  "  local opts = {depth = depth}\n"
  "  local s1 = json.encode(v, opts)\n"
  "  local v2 = dec(s1, opts)\n"
  "  local s2 = json.encode(v2, opts)\n"
  "  if s1 ~= s2 then error('unstable round trip:\\n' .. s1 .. '\\n' .. s2) end\n"
  "  local p = json.encode(v, {pretty = true, depth = depth})\n"
  "  local s3 = json.encode(dec(p, opts), opts)\n"
  "  if s3 ~= s1 then error('pretty round trip differs:\\n' .. s1 .. '\\n' .. s3) end\n"
  "  if depth <= 64 then helpers(v) end\n"
  "end\n"
  "return function(text)\n"
  "  local v, msg, code = json.decode(text)\n"
  "  if v ~= nil then return roundtrip(v, 64) end\n"
  "  assert(type(msg) == 'string' and code == 'EJSON', 'bad error triple')\n"
  "  assert(msg:find('at line %d+, column %d+'), msg)\n"
  "  if msg:find('nesting deeper than', 1, true) then\n"
  "    v = json.decode(text, {depth = 1000})\n"
  "    if v ~= nil then return roundtrip(v, 1000) end\n"
  "  end\n"
  "end\n";

/* helpers(v): the C helpers on a decoded value */
static int helpers(lua_State *LS) {
  char err[256];
  cJSON **box = mw_json_newbox(LS);  /* box first: nothing is owned yet if this raises */
  lua_toclose(LS, -1);
  *box = mw_json_from_lua(LS, 1, err, sizeof err);
  if (*box == NULL) {
    if (strstr(err, "NUL byte") == NULL) {
      fprintf(stderr, "mw_json_from_lua failed on a decoded value: %s\n", err);
      abort();
    }
    return 0;
  }
  if (mw_json_push(LS, *box, 64) != 1) {
    fprintf(stderr, "mw_json_push refused a tree from mw_json_from_lua\n");
    abort();
  }
  return 0;
}

static int msgh(lua_State *LS) {
  luaL_traceback(LS, LS, lua_tostring(LS, 1), 1);
  return 1;
}

static void init(void) {
  L = luaL_newstate();
  if (L == NULL)
    abort();
  luaL_openlibs(L);
  luaL_requiref(L, "moonwire.json", luaopen_moonwire_json, 0);  /* stack: json */
  if (luaL_loadstring(L, checker) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pushvalue(L, -2);
  lua_pushcfunction(L, helpers);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL)
    init();
  lua_pushcfunction(L, msgh);
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    fprintf(stderr, "json invariant broken: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, 0);
  return 0;
}
