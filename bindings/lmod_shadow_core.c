/*
** moonwire.shadow.core: the C half of moonwire.shadow (scripts/moonwire/shadow.lua), not
** meant for apps. It keeps the device's last known shadow document in the C core's form
** (runtime/shadow/mw_shadow_doc.h), so /update/accepted is merged by exactly the rules the
** service applies, and caches it with the service's SQLite store (mw_shadow_store.h).
**
**   core.parse(payload)        -> resp, version|nil, clientToken|nil  | nil, msg, "EJSON"
**   resp:table([key])          -> the payload (or one member) as a Lua table (before doc:replace)
**   core.doc()                 -> doc: empty, version 0, exists false
**   doc:apply(resp)            -> "applied" | "stale" | nil, msg, code   (/update/accepted)
**   doc:replace(resp)          -> true | nil, msg, code                  (/get/accepted)
**   doc:mark_deleted(version), doc:reset(), doc:version(), doc:exists()
**   doc:table(), doc:delta()   -> Lua tables (nil when there is none)
**   core.cache(path)           -> cache | nil, msg, code
**   doc:bind(cache, thing, shadow_name_or_empty), doc:load() -> true|false|nil,msg,code,
**   doc:save() -> true | nil, msg, code, doc:dirty()
**   core.proxy(mt)             -> an empty userdata with metatable mt (the live views)
**
** A bound doc that changed since its last save is saved by its __gc, so lua_close at
** shutdown writes the latest state even when the script's write-behind timer never ran.
** The cache's SQLite handle is reference-counted between the cache and the docs bound to
** it: finalisers at lua_close run in any order.
*/
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lb.h"
#include "lmod_json.h"
#include "mw_log.h"
#include "mw_shadow_doc.h"
#include "mw_shadow_store.h"

#define MT_RESP "moonwire.shadow.response"
#define MT_DOC "moonwire.shadow.doc"
#define MT_CACHE "moonwire.shadow.cache"

/* The store shared by a cache handle and the docs bound to it. */
typedef struct {
  mw_shadow_store_t *st;
  int refs;
} store_ref_t;

static void store_release(store_ref_t *s) {
  if (s && --s->refs == 0) {
    mw_shadow_store_close(s->st);
    free(s);
  }
}

typedef struct {
  cJSON *root;   /* NULL once freed */
  int consumed;  /* sections were taken by doc:replace */
} lresp_t;

typedef struct {
  mw_shadow_doc_t doc;
  store_ref_t *store; /* NULL when not bound */
  char *thing, *shadow;
  int dirty;
} ldoc_t;

typedef struct {
  store_ref_t *store; /* NULL once closed */
} lcache_t;

/* ------------------------------------------------------------ responses */

static int resp_gc(lua_State *L) {
  lresp_t *r = luaL_checkudata(L, 1, MT_RESP);
  cJSON_Delete(r->root);
  r->root = NULL;
  return 0;
}

/* core.parse(payload) -> resp, version|nil, token|nil  |  nil, msg, "EJSON" */
static int core_parse(lua_State *L) {
  size_t len;
  const char *payload = luaL_checklstring(L, 1, &len);
  lresp_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, MT_RESP);
  mw_status_t st;
  r->root = mw_shadow_json_parse(payload, len, &st);
  if (!r->root) return lb_fail(L, st == MW_ERR_NOMEM ? "out of memory" : "not a JSON object", st == MW_ERR_NOMEM ? "ENOMEM" : "EJSON");
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, "version");
  if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 9007199254740992.0 &&
      (double)(lua_Integer)v->valuedouble == v->valuedouble)
    lua_pushinteger(L, (lua_Integer)v->valuedouble);
  else
    lua_pushnil(L);
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(r->root, "clientToken");
  if (cJSON_IsString(t) && t->valuestring) lua_pushstring(L, t->valuestring);
  else lua_pushnil(L);
  return 3;
}

/* resp:table([key]) -> the payload (or its member key, nil if absent) as a Lua table */
static int resp_table(lua_State *L) {
  lresp_t *r = luaL_checkudata(L, 1, MT_RESP);
  const char *key = luaL_optstring(L, 2, NULL);
  if (!r->root || r->consumed) return luaL_error(L, "shadow response already used");
  const cJSON *item = key ? cJSON_GetObjectItemCaseSensitive(r->root, key) : r->root;
  if (!item) return 0;
  if (!mw_json_push(L, item, MW_JSON_MAX_DEPTH)) return luaL_error(L, "shadow response nests too deep");
  return 1;
}

/* ------------------------------------------------------------ documents */

static ldoc_t *check_doc(lua_State *L) { return luaL_checkudata(L, 1, MT_DOC); }

static int core_doc(lua_State *L) {
  ldoc_t *d = lua_newuserdatauv(L, sizeof *d, 0);
  memset(d, 0, sizeof *d);
  mw_shadow_doc_init(&d->doc);
  luaL_setmetatable(L, MT_DOC);
  return 1;
}

static mw_status_t doc_save(ldoc_t *d) {
  mw_status_t st = mw_shadow_store_save(d->store->st, d->thing, d->shadow, &d->doc);
  if (st == MW_OK) d->dirty = 0;
  return st;
}

static void doc_unbind(ldoc_t *d) {
  store_release(d->store);
  d->store = NULL;
  free(d->thing);
  free(d->shadow);
  d->thing = d->shadow = NULL;
}

static int doc_gc(lua_State *L) {
  ldoc_t *d = check_doc(L);
  if (d->store && d->dirty) {
    mw_status_t st = doc_save(d);
    if (st != MW_OK)
      MW_LOGW("shadow", "could not save the shadow cache of %s: %s", d->thing, mw_status_str(st));
  }
  doc_unbind(d);
  mw_shadow_doc_free(&d->doc);
  return 0;
}

/* doc:apply(resp) -> "applied" | "stale" | nil, msg, code */
static int doc_apply(lua_State *L) {
  ldoc_t *d = check_doc(L);
  lresp_t *r = luaL_checkudata(L, 2, MT_RESP);
  if (!r->root || r->consumed) return luaL_error(L, "shadow response already used");
  mw_status_t st = mw_shadow_doc_apply_accepted_tree(&d->doc, r->root);
  if (st == MW_OK) {
    d->dirty = 1;
    lua_pushliteral(L, "applied");
    return 1;
  }
  if (st == MW_ERR_STATE) {
    lua_pushliteral(L, "stale");
    return 1;
  }
  return lb_fail_status(L, st, st == MW_ERR_INVALID ? "not an /update/accepted document" : NULL);
}

/* doc:replace(resp) -> true | nil, msg, code: the document becomes resp's (a /get/accepted). */
static int doc_replace(lua_State *L) {
  ldoc_t *d = check_doc(L);
  lresp_t *r = luaL_checkudata(L, 2, MT_RESP);
  if (!r->root || r->consumed) return luaL_error(L, "shadow response already used");
  mw_shadow_doc_t next;
  mw_status_t st = mw_shadow_doc_take(r->root, &next);
  if (st != MW_OK) return lb_fail_status(L, st, "not a shadow document");
  r->consumed = 1;
  mw_shadow_doc_free(&d->doc);
  d->doc = next;
  d->dirty = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* doc:mark_deleted(version): a tombstone that keeps the version (AWS continues numbering). */
static int doc_mark_deleted(lua_State *L) {
  ldoc_t *d = check_doc(L);
  lua_Integer v = luaL_checkinteger(L, 2);
  luaL_argcheck(L, v >= 0, 2, "version must not be negative");
  mw_shadow_doc_free(&d->doc);
  d->doc.version = v;
  d->doc.deleted_at = (int64_t)time(NULL);
  d->dirty = 1;
  return 0;
}

/* doc:reset(): no shadow (a 404); the version is unknown again. */
static int doc_reset(lua_State *L) {
  ldoc_t *d = check_doc(L);
  int had = d->doc.exists || d->doc.version;
  mw_shadow_doc_free(&d->doc);
  if (had) d->dirty = 1;
  return 0;
}

static int doc_version(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_doc(L)->doc.version);
  return 1;
}

static int doc_exists(lua_State *L) {
  lua_pushboolean(L, check_doc(L)->doc.exists);
  return 1;
}

static int doc_dirty(lua_State *L) {
  lua_pushboolean(L, check_doc(L)->dirty);
  return 1;
}

/* Pushes a copy of tree (borrowed from the doc, which the userdata anchors). */
static void push_tree(lua_State *L, const cJSON *tree) {
  if (!mw_json_push(L, tree, MW_JSON_MAX_DEPTH)) luaL_error(L, "shadow document nests too deep");
}

/* Pushes the delta of the doc, or nil. The tree is boxed before anything can raise. */
static void push_delta(lua_State *L, const mw_shadow_doc_t *doc) {
  cJSON **box = mw_json_newbox(L);
  *box = mw_shadow_delta(doc->desired, doc->reported);
  if (*box) push_tree(L, *box);
  else lua_pushnil(L);
  lua_remove(L, -2); /* the box; its __gc frees the tree */
}

/* doc:table() -> {state = {desired?, reported?, delta?}, metadata = {desired?, reported?},
**                 version, timestamp} or nil when the shadow does not exist */
static int doc_table(lua_State *L) {
  ldoc_t *d = check_doc(L);
  if (!d->doc.exists) return 0;
  lua_createtable(L, 0, 4);
  lua_createtable(L, 0, 3);
  if (d->doc.desired) {
    push_tree(L, d->doc.desired);
    lua_setfield(L, -2, "desired");
  }
  if (d->doc.reported) {
    push_tree(L, d->doc.reported);
    lua_setfield(L, -2, "reported");
  }
  push_delta(L, &d->doc);
  lua_setfield(L, -2, "delta");
  lua_setfield(L, -2, "state");
  lua_createtable(L, 0, 2);
  if (d->doc.meta_desired) {
    push_tree(L, d->doc.meta_desired);
    lua_setfield(L, -2, "desired");
  }
  if (d->doc.meta_reported) {
    push_tree(L, d->doc.meta_reported);
    lua_setfield(L, -2, "reported");
  }
  lua_setfield(L, -2, "metadata");
  lua_pushinteger(L, (lua_Integer)d->doc.version);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, (lua_Integer)d->doc.timestamp);
  lua_setfield(L, -2, "timestamp");
  return 1;
}

/* doc:delta() -> the delta (desired keys reported lacks or differs on), or nil */
static int doc_delta(lua_State *L) {
  ldoc_t *d = check_doc(L);
  if (!d->doc.exists) return 0;
  push_delta(L, &d->doc);
  return 1;
}

/* doc:bind(cache, thing, shadow): where load/save and the final __gc save go. */
static int doc_bind(lua_State *L) {
  ldoc_t *d = check_doc(L);
  lcache_t *c = luaL_checkudata(L, 2, MT_CACHE);
  const char *thing = luaL_checkstring(L, 3);
  const char *shadow = luaL_checkstring(L, 4);
  if (!c->store) return luaL_error(L, "shadow cache is closed");
  char *t = strdup(thing), *s = strdup(shadow);
  if (!t || !s) {
    free(t);
    free(s);
    return luaL_error(L, "out of memory");
  }
  doc_unbind(d);
  d->thing = t;
  d->shadow = s;
  d->store = c->store;
  d->store->refs++;
  return 0;
}

/* doc:load() -> true (found) | false (nothing cached) | nil, msg, code */
static int doc_load(lua_State *L) {
  ldoc_t *d = check_doc(L);
  if (!d->store) return luaL_error(L, "shadow document is not bound to a cache");
  mw_shadow_doc_t next;
  mw_status_t st = mw_shadow_store_load(d->store->st, d->thing, d->shadow, &next);
  if (st == MW_ERR_NOT_FOUND) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (st != MW_OK) return lb_fail_status(L, st, "unreadable shadow cache entry");
  mw_shadow_doc_free(&d->doc);
  d->doc = next;
  d->dirty = 0;
  lua_pushboolean(L, 1);
  return 1;
}

/* doc:save() -> true | nil, msg, code */
static int doc_save_l(lua_State *L) {
  ldoc_t *d = check_doc(L);
  if (!d->store) return luaL_error(L, "shadow document is not bound to a cache");
  mw_status_t st = doc_save(d);
  if (st != MW_OK) return lb_fail_status(L, st, "cannot write the shadow cache");
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------------ cache */

/* core.cache(path) -> cache | nil, msg, code */
static int core_cache(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lcache_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->store = NULL;
  luaL_setmetatable(L, MT_CACHE);
  store_ref_t *s = calloc(1, sizeof *s);
  if (!s) return lb_fail(L, "out of memory", "ENOMEM");
  mw_status_t st = mw_shadow_store_open(path, false, &s->st);
  if (st != MW_OK) {
    free(s);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot open the shadow cache %s: %s", path, mw_status_str(st));
    lua_pushstring(L, mw_status_name(st));
    return 3;
  }
  s->refs = 1;
  c->store = s;
  return 1;
}

static int cache_gc(lua_State *L) {
  lcache_t *c = luaL_checkudata(L, 1, MT_CACHE);
  store_release(c->store);
  c->store = NULL;
  return 0;
}

/* ------------------------------------------------------------ views */

/* core.proxy(mt) -> an empty userdata with metatable mt. The script's live views are
** userdata rather than tables so that json.encode refuses them ("cannot encode userdata")
** instead of silently writing {} (it reads tables raw, without __index). */
static int core_proxy(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_newuserdatauv(L, 0, 0);
  lua_pushvalue(L, 1);
  lua_setmetatable(L, -2);
  return 1;
}

/* ------------------------------------------------------------ module */

static void new_class(lua_State *L, const char *name, const luaL_Reg *meth, lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_newtable(L);
    luaL_setfuncs(L, meth, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

int luaopen_moonwire_shadow_core(lua_State *L) {
  static const luaL_Reg resp_m[] = {{"table", resp_table}, {"free", resp_gc}, {NULL, NULL}};
  static const luaL_Reg doc_m[] = {{"apply", doc_apply},     {"replace", doc_replace}, {"mark_deleted", doc_mark_deleted},
                                   {"reset", doc_reset},     {"version", doc_version}, {"exists", doc_exists},
                                   {"dirty", doc_dirty},     {"table", doc_table},     {"delta", doc_delta},
                                   {"bind", doc_bind},       {"load", doc_load},       {"save", doc_save_l},
                                   {NULL, NULL}};
  static const luaL_Reg cache_m[] = {{"close", cache_gc}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"parse", core_parse}, {"doc", core_doc}, {"cache", core_cache},
                                 {"proxy", core_proxy}, {NULL, NULL}};
  luaL_requiref(L, "moonwire.json", luaopen_moonwire_json, 0); /* json.null and the array marker */
  lua_pop(L, 1);
  new_class(L, MT_RESP, resp_m, resp_gc);
  new_class(L, MT_DOC, doc_m, doc_gc);
  new_class(L, MT_CACHE, cache_m, cache_gc);
  luaL_newlib(L, fns);
  return 1;
}
