/*
** moonwire.app: the running app as its code and the REPL see it — the state that
** survives reloads, the version, reload() and migrate().
*/
#include <lauxlib.h>
#include <string.h>

#include "lb_app_int.h"

/* The version whose code is running now (the loading one during a reload), else the live one. */
static lb_version_t *running_version(const mw_rt_t *rt) {
  const lb_app_t *app = rt->app;
  if (!app) return NULL;
  uint32_t owner = rt->call.owner;
  if (app->staged && app->staged->id == owner) return app->staged;
  if (app->prev && app->prev->id == owner) return app->prev;
  return app->live;
}

/* app.reload() -> version | nil, message, code */
static int lapp_reload(lua_State *L) {
  char err[1024];
  const char *code = NULL;
  uint32_t n = lb_app_reload(lb_rt(L), "app.reload()", err, sizeof err, &code);
  if (!n) return lb_fail(L, err, code ? code : "ERAISED");
  lua_pushinteger(L, n);
  return 1;
}

/* app.migrate(function(state, from_version) ... end), from the app's top-level code */
static int lapp_migrate(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  mw_rt_t *rt = lb_rt(L);
  lb_app_t *app = rt->app;
  if (!app) return 0; /* moonwire script: nothing is ever migrated */
  lb_version_t *v = app->staged;
  if (!v || rt->call.owner != v->id)
    return luaL_error(L, "app.migrate must be called by the app's top-level code while a version loads");
  lua_pushvalue(L, 1);
  int ref = lb_ref(L);
  lb_unref(L, &v->migrate_ref);
  v->migrate_ref = ref;
  return 0;
}

static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void push_version(lua_State *L, const lb_version_t *v) {
  lua_createtable(L, 0, 4);
  set_int(L, "version", v->number);
  set_str(L, "hash", v->hash);
  lua_createtable(L, v->nfiles, 0);
  for (int i = 0; i < v->nfiles; i++) {
    char h[65];
    static const char digits[] = "0123456789abcdef";
    for (int j = 0; j < 32; j++) {
      h[2 * j] = digits[v->files[i].sha[j] >> 4];
      h[2 * j + 1] = digits[v->files[i].sha[j] & 15];
    }
    h[64] = '\0';
    lua_createtable(L, 0, 3);
    set_str(L, "module", v->files[i].name);
    set_str(L, "path", v->files[i].path);
    set_str(L, "hash", h);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "files");
}

/* app.info() -> table: versions, reload figures, budgets and what they stopped */
static int lapp_info(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  lb_app_t *app = rt->app;
  lua_createtable(L, 0, 20);
  if (app) {
    set_str(L, "file", app->path);
    if (app->live) {
      push_version(L, app->live);
      lua_setfield(L, -2, "live");
      set_int(L, "version", app->live->number);
      set_str(L, "hash", app->live->hash);
      set_num(L, "live_for_s", (double)(lb_now_ns() - app->live->live_since_ns) / 1e9);
      set_int(L, "live_errors", app->live->errors);
      set_int(L, "timers", lb_timer_count(rt, app->live->id));
    }
    if (app->prev) {
      push_version(L, app->prev);
      lua_setfield(L, -2, "previous");
    }
    set_int(L, "reloads", (lua_Integer)app->reloads);
    set_int(L, "failed_reloads", (lua_Integer)app->failures);
    set_int(L, "rollbacks", (lua_Integer)app->rollbacks);
    set_num(L, "last_reload_ms", app->last_ms);
    set_num(L, "last_swap_ms", app->last_swap_ms);
    if (app->last_since_change_ms > 0) set_num(L, "last_since_change_ms", app->last_since_change_ms);
    if (app->last_error[0]) set_str(L, "last_error", app->last_error);
    set_str(L, "last_error_code", app->last_code);
    lua_pushboolean(L, app->watches != NULL);
    lua_setfield(L, -2, "watching");
    set_int(L, "load_budget_ms", app->cfg.load_budget_ms);
  }
  set_int(L, "budget_ms", rt->budget_ms);
  set_int(L, "quarantine_after", rt->quarantine_after);
  lua_createtable(L, 0, 3);
  set_int(L, "used", (lua_Integer)rt->mem_used);
  set_int(L, "peak", (lua_Integer)rt->mem_peak);
  set_int(L, "limit", (lua_Integer)rt->mem_limit);
  lua_setfield(L, -2, "memory");
  lua_createtable(L, 0, 3);
  set_int(L, "time", (lua_Integer)rt->stops_time);
  set_int(L, "memory", (lua_Integer)rt->stops_memory);
  set_int(L, "interrupt", (lua_Integer)rt->stops_interrupt);
  lua_setfield(L, -2, "stops");
  set_int(L, "quarantined", (lua_Integer)rt->quarantined);
  return 1;
}

static int lapp_index(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  const char *k = lua_tostring(L, 2);
  if (!k) return 0;
  lb_version_t *v = running_version(rt);
  if (strcmp(k, "state") == 0) {
    lb_app_push_state(L);
  } else if (strcmp(k, "version") == 0) {
    if (v) lua_pushinteger(L, v->number);
    else lua_pushnil(L);
  } else if (strcmp(k, "hash") == 0) {
    /* A version being loaded has no hash until its modules are known. */
    if (v && v->hash[0]) lua_pushstring(L, v->hash);
    else lua_pushnil(L);
  } else if (strcmp(k, "file") == 0) {
    if (rt->app) lua_pushstring(L, rt->app->path);
    else lua_pushnil(L);
  } else if (strcmp(k, "env") == 0) {
    if (!v || v->env_ref == LUA_NOREF) v = rt->app ? rt->app->live : NULL;
    if (v && v->env_ref != LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, v->env_ref);
    else lua_pushglobaltable(L);
  } else {
    return 0;
  }
  return 1;
}

static int lapp_newindex(lua_State *L) {
  return luaL_error(L, "moonwire.app fields are read-only (to keep data across reloads, set fields of app.state)");
}

int luaopen_moonwire_app(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"reload", lapp_reload}, {"migrate", lapp_migrate}, {"info", lapp_info}, {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, lapp_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, lapp_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "moonwire.app");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
  return 1;
}
