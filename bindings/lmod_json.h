/*
** moonwire.json: JSON for Lua scripts over cJSON, plus the helpers other bindings use
** to move values between cJSON trees and Lua (MQTT payloads, shadow documents).
**
** Representation in Lua (the same for json.decode and mw_json_push):
**   object  -> plain table with string keys
**   array   -> table 1..n carrying the shared array metatable (json.is_array is true)
**   null    -> the json.null sentinel (mw_json_pushnull / mw_json_isnull)
**   number  -> integer when integral and within 64 bits, else float
**   string  -> string, true/false -> boolean
**
** Ownership rule for every helper: a cJSON tree passed in is *borrowed until return*;
** the helpers never free or keep it. Anything that can raise may raise (a Lua memory
** error at least), so a caller that owns a tree must anchor it first, e.g. in a box
** from mw_json_newbox(), or its tree leaks when the error unwinds past it.
*/
#ifndef MW_LMOD_JSON_H
#define MW_LMOD_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include <lua.h>

/* Default nesting limit (arrays + objects) of decode, encode and mw_json_from_lua. */
#define MW_JSON_DEFAULT_DEPTH 64
/* Largest accepted limit; cJSON 1.7.15 refuses deeper input itself (CJSON_NESTING_LIMIT). */
#define MW_JSON_MAX_DEPTH 1000

/*
** require "moonwire.json": pushes the module table. Also creates (once per state) the
** array/object marker metatables, the json.null sentinel and the box metatable.
*/
int luaopen_moonwire_json(lua_State *L);

/*
** Pushes the Lua value for 'item' (borrowed until return; any cJSON type except Raw and
** Invalid). depth_limit is the largest container nesting allowed (1..MW_JSON_MAX_DEPTH).
** Returns 1 with exactly one value pushed, or 0 with the stack unchanged when 'item'
** nests deeper than depth_limit (the caller frees what it must, then reports).
** Raises for misuse (NULL item, Raw/Invalid item, NULL string in a string item or an
** object key, depth_limit out of range) and on Lua memory errors: anchor an owned tree
** (mw_json_newbox) before calling. Numbers come from cJSON's double, so integers
** beyond +-2^53 arrive rounded (json.decode reads them exactly from the text instead).
*/
int mw_json_push(lua_State *L, const cJSON *item, int depth_limit);

/*
** Builds a new cJSON tree from the Lua value at 'idx' with json.encode's rules (arrays,
** objects, json.null, sorted keys, MW_JSON_DEFAULT_DEPTH, cycles refused). Never raises
** and leaves the Lua stack as it found it. Returns the tree, which the caller owns
** (cJSON_Delete), or NULL with a message in err (always NUL-terminated when errlen > 0)
** naming the path of the offending value, e.g. "cannot encode function at .a.b[3]".
** cJSON strings are C strings, so strings and keys containing a NUL byte are refused;
** integers are stored as doubles (exact up to +-2^53).
** Metamethods are not consulted (raw access), as in json.encode.
*/
cJSON *mw_json_from_lua(lua_State *L, int idx, char *err, size_t errlen);

/*
** Pushes a new, empty box (a userdata with __gc and __close) and returns the address of
** its tree slot. Store a tree there and the box owns it: it is freed when the box is
** closed (lua_toclose) or collected. Set the slot back to NULL to take ownership back.
** Raises on memory errors only (before anything is owned, so nothing leaks).
*/
cJSON **mw_json_newbox(lua_State *L);

/* Pushes the json.null sentinel of this state (creating it if needed; may raise ENOMEM). */
void mw_json_pushnull(lua_State *L);

/* True when the value at idx is json.null. Never raises. */
int mw_json_isnull(lua_State *L, int idx);

#endif
