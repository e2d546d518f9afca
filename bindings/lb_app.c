/*
** App versions and the reload transaction.
**
** One lua_State serves every version. A version is its own global environment (a table
** whose __index is _G), its own package.loaded for modules of the app's folder (so a
** reload re-runs them, while moonwire.* and system modules stay shared), and whatever
** its code registers: subscriptions, listeners and timers tagged with its load id.
**
** A reload loads the new version next to the live one: its registrations exist but
** are inert (no broker subscription, never dispatched). Compile error, error, budget
** stop or a failing migrate: the staged version is released and nothing else changed.
** Otherwise the commit, which runs no Lua and cannot fail, makes it live: the new
** version's filters are subscribed first (the runtime's subscription set is
** refcounted, so a filter both versions use never reaches zero and the broker sees
** nothing for it), then the old version's subscriptions, listeners and timers end.
**
** Everything happens on the loop thread between two events, so each message goes to
** the version that was live when it was taken from the queue (see dispatch_message).
*/
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lb_app_int.h"
#include "mw_log.h"

#define COMP LB_APP_COMP
#define MAX_SOURCE (16u << 20)

const char lb_app_state_key = 's';

void lb_app_push_state(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lb_app_state_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lb_app_state_key);
}

void lb_app_sha256(const void *data, size_t len, unsigned char out[32]) {
  unsigned int n = 32;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1) memset(out, 0, 32);
}

static void hex(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

char *lb_app_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 0, n = 0;
  char *buf = NULL;
  for (;;) {
    if (n == cap) {
      if (cap >= MAX_SOURCE) {
        free(buf);
        fclose(f);
        errno = EFBIG;
        return NULL;
      }
      cap = cap ? cap * 2 : 16384;
      char *nb = realloc(buf, cap + 1);
      if (!nb) {
        free(buf);
        fclose(f);
        errno = ENOMEM;
        return NULL;
      }
      buf = nb;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    errno = EIO;
    return NULL;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

/*
** Pushes the contents of path as a string, or returns false with errno set. The bytes
** go through a userdata, so that a memory error raised by Lua cannot leak a buffer or
** leave the file open.
*/
static bool push_file(lua_State *L, const char *path) {
  for (int attempt = 0; attempt < 3; attempt++) {
    struct stat st;
    if (stat(path, &st) != 0) return false;
    if (!S_ISREG(st.st_mode)) {
      errno = EISDIR;
      return false;
    }
    if ((uint64_t)st.st_size > MAX_SOURCE) {
      errno = EFBIG;
      return false;
    }
    size_t size = (size_t)st.st_size;
    char *buf = lua_newuserdatauv(L, size + 1, 0);
    FILE *f = fopen(path, "rb");
    if (!f) {
      lua_pop(L, 1);
      return false;
    }
    size_t n = fread(buf, 1, size + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
      lua_pop(L, 1);
      errno = EIO;
      return false;
    }
    if (n <= size) { /* else it grew while we read it: again */
      lua_pushlstring(L, buf, n);
      lua_remove(L, -2);
      return true;
    }
    lua_pop(L, 1);
  }
  errno = EAGAIN;
  return false;
}

/* ------------------------------------------------------------------ versions */

static void file_free(lb_file_t *f) {
  free(f->name);
  free(f->path);
  free(f->dir);
  free(f->base);
}

static lb_version_t *version_find(const lb_app_t *app, uint32_t id) {
  if (!app || !id) return NULL;
  if (app->live && app->live->id == id) return app->live;
  if (app->staged && app->staged->id == id) return app->staged;
  if (app->prev && app->prev->id == id) return app->prev;
  return NULL;
}

uint32_t lb_app_version_of(const mw_rt_t *rt, uint32_t owner) {
  const lb_version_t *v = version_find(rt->app, owner);
  return v ? v->number : 0;
}

uint32_t lb_owner_for_new(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  uint32_t owner = rt->call.owner;
  /* Code that runs for nobody in particular (the REPL, an on_ack) works for the live version. */
  if (owner == 0) return rt->app_live;
  if (owner == rt->app_live || owner == rt->app_staged) return owner;
  /* A closure of a replaced version (kept in app.state, or a message it was still handling)
     must not leave handlers behind that nobody will release. */
  uint32_t was = lb_app_version_of(rt, owner);
  char what[32] = "a replaced version";
  if (was) snprintf(what, sizeof what, "version %u", (unsigned)was);
  return (uint32_t)luaL_error(L, "this code belongs to %s of the app, which is no longer live: it cannot register "
                                 "handlers or timers", what);
}

/* Records a file the version was loaded from; false when out of memory. */
static bool version_add_file(lb_version_t *v, const char *name, const char *path, const void *src, size_t len) {
  for (int i = 0; i < v->nfiles; i++)
    if (strcmp(v->files[i].path, path) == 0) return true;
  if (v->nfiles == v->capfiles) {
    int cap = v->capfiles ? v->capfiles * 2 : 4;
    lb_file_t *n = realloc(v->files, sizeof *n * (size_t)cap);
    if (!n) return false;
    v->files = n;
    v->capfiles = cap;
  }
  lb_file_t *f = &v->files[v->nfiles];
  memset(f, 0, sizeof *f);
  f->name = name ? strdup(name) : NULL;
  f->path = strdup(path);
  const char *slash = strrchr(path, '/');
  f->dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
  f->base = strdup(slash ? slash + 1 : path);
  if ((name && !f->name) || !f->path || !f->dir || !f->base) {
    file_free(f);
    return false;
  }
  lb_app_sha256(src, len, f->sha);
  v->nfiles++;
  return true;
}

/* Releases what only a running version needs; the sources stay for a rollback. */
static void version_retire(lua_State *L, lb_version_t *v) {
  lb_unref(L, &v->env_ref);
  lb_unref(L, &v->loaded_ref);
  lb_unref(L, &v->migrate_ref);
}

static void version_free(lua_State *L, lb_version_t *v) {
  if (!v) return;
  version_retire(L, v);
  lb_unref(L, &v->sources_ref);
  for (int i = 0; i < v->nfiles; i++) file_free(&v->files[i]);
  free(v->files);
  free(v);
}

static void version_hash(lb_version_t *v) {
  if (v->nfiles == 1) {
    hex(v->files[0].sha, 32, v->hash);
    return;
  }
  /* With modules: the digest of the files' digests, app file first, in load order. */
  unsigned char all[32 * 64], out[32];
  int n = v->nfiles < 64 ? v->nfiles : 64;
  for (int i = 0; i < n; i++) memcpy(all + 32 * i, v->files[i].sha, 32);
  lb_app_sha256(all, (size_t)n * 32, out);
  hex(out, 32, v->hash);
}

/* ------------------------------------------------------------------ require */

/*
** require inside an app version. upvalues: 1 the version's loaded table, 2 its
** environment, 3 its load id. A module found in the app's folder is loaded into the
** version (its globals are the version's); anything else is the shared global require.
*/
static int app_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  mw_rt_t *rt = lb_rt(L);
  lb_app_t *app = rt->app;
  lb_version_t *v = version_find(app, (uint32_t)lua_tointeger(L, lua_upvalueindex(3)));
  char path[PATH_MAX] = "";
  bool found = false;
  if (v && v->from_sources) {
    /* A rollback: the module as the restored version had it, whatever the disk says. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->sources_ref);
    if (lua_getfield(L, -1, name) == LUA_TTABLE) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      snprintf(path, sizeof path, "%s", lua_tostring(L, -1));
      lua_pop(L, 1);
      lua_replace(L, 2);
      lua_settop(L, 2);
      found = true;
    } else {
      lua_settop(L, 1);
    }
  }
  if (!found && app && strlen(name) < 200) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s", name);
    for (char *p = rel; *p; p++)
      if (*p == '.') *p = '/';
    for (int i = 0; i < 2 && !found; i++) {
      if (i == 0) snprintf(path, sizeof path, "%s/%s.lua", app->dir, rel);
      else snprintf(path, sizeof path, "%s/%s/init.lua", app->dir, rel);
      if (push_file(L, path)) found = true;
      else if (errno != ENOENT && errno != ENOTDIR)
        return luaL_error(L, "error loading module '%s' from file '%s': %s", name, path, strerror(errno));
    }
  }
  if (!found) {
    /* Not part of the app: the shared module (moonwire.*, system libraries), cached so
       the folder is searched once per version. */
    lua_getglobal(L, "require");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 2);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -3);
    lua_rawset(L, lua_upvalueindex(1));
    return 2;
  }
  /* stack: name, source */
  size_t len;
  const char *src = lua_tolstring(L, 2, &len);
  if (v) {
    int had = v->nfiles;
    if (!version_add_file(v, name, path, src, len)) return luaL_error(L, "out of memory");
    /* A module the live version loads late (from a handler) is watched from now on. */
    if (v == app->live && v->nfiles != had) lb_app_watch_update(app);
    if (!v->from_sources) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, v->sources_ref);
      lua_createtable(L, 2, 0);
      lua_pushvalue(L, 2);
      lua_rawseti(L, -2, 1);
      lua_pushstring(L, path);
      lua_rawseti(L, -2, 2);
      lua_setfield(L, -2, name);
      lua_pop(L, 1);
    }
  }
  lua_pushfstring(L, "@%s", path);
  if (luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t") != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, path, lua_tostring(L, -1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_setupvalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_pushstring(L, path);
  lua_call(L, 2, 1);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, lua_upvalueindex(1));
  lua_pushstring(L, path);
  return 2;
}

/* ------------------------------------------------------------------ state snapshot */

/*
** An undo record of app.state for a migrate that fails halfway: for every table
** reachable from the state (through keys and values), a shallow copy and its metatable.
** Restoring refills the original tables in place, so references old code holds to any
** of them stay valid.
*/
static void snapshot_push(lua_State *L, int state) {
  state = lua_absindex(L, state);
  lua_newtable(L); /* copies: T -> shallow copy */
  int copies = lua_gettop(L);
  lua_newtable(L); /* metatables: T -> mt */
  int metas = lua_gettop(L);
  lua_newtable(L); /* work list */
  int work = lua_gettop(L);
  lua_Integer n = 0;
  lua_pushvalue(L, state);
  lua_rawseti(L, work, ++n);
  while (n > 0) {
    lua_rawgeti(L, work, n);
    lua_pushnil(L);
    lua_rawseti(L, work, n--);
    int t = lua_gettop(L);
    lua_pushvalue(L, t);
    if (lua_rawget(L, copies) != LUA_TNIL) {
      lua_settop(L, t - 1);
      continue;
    }
    lua_pop(L, 1);
    lua_newtable(L);
    int c = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
      for (int i = -2; i <= -1; i++)
        if (lua_type(L, i) == LUA_TTABLE) {
          lua_pushvalue(L, i);
          lua_rawseti(L, work, ++n);
        }
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, c);
    }
    lua_pushvalue(L, t);
    lua_pushvalue(L, c);
    lua_rawset(L, copies);
    if (lua_getmetatable(L, t)) {
      lua_pushvalue(L, t);
      lua_insert(L, -2);
      lua_rawset(L, metas);
    }
    lua_settop(L, t - 1);
  }
  lua_pop(L, 1); /* work list; copies and metas stay */
}

static void snapshot_restore(lua_State *L, int copies) {
  copies = lua_absindex(L, copies);
  int metas = copies + 1;
  lua_pushnil(L);
  while (lua_next(L, copies)) {
    int t = lua_gettop(L) - 1, c = lua_gettop(L);
    /* Clearing existing keys while traversing is allowed (assigning nil). */
    lua_pushnil(L);
    while (lua_next(L, t)) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, t);
    }
    lua_pushnil(L);
    while (lua_next(L, c)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, t);
    }
    lua_pushvalue(L, t);
    lua_rawget(L, metas);
    lua_setmetatable(L, t);
    lua_pop(L, 1); /* the copy; the key stays for lua_next */
  }
}

/* ------------------------------------------------------------------ the transaction */

typedef struct {
  lb_app_t *app;
  bool rollback;
  const char *why;
  uint32_t number;
  char err[1024];
  const char *code;
  uint64_t t0, t_read, t_compile, t_run, t_migrate, t_swap;
  int subs_added, subs_removed, timers_stopped;
} tx_t;

static void tx_fail(tx_t *tx, const char *code, const char *msg) {
  snprintf(tx->err, sizeof tx->err, "%s", msg);
  tx->code = code;
}

static const char *stop_code(lb_stop_t stop) {
  switch (stop) {
  case LB_STOP_TIME: return "ETIMEDOUT";
  case LB_STOP_MEMORY: return "ENOMEM";
  case LB_STOP_INTERRUPT: return "EINTR";
  default: return "ERAISED";
  }
}

/* Makes the staged version live. Runs no Lua and allocates nothing in the Lua heap. */
static void commit(lb_app_t *app, tx_t *tx) {
  mw_rt_t *rt = app->rt;
  lua_State *L = rt->L;
  lb_version_t *v = app->staged, *old = app->live;
  lb_mqtt_activate(rt, v->id, &tx->subs_added);
  app->live = v;
  app->staged = NULL;
  rt->app_live = v->id;
  rt->app_staged = 0;
  if (old) {
    lb_mqtt_release(rt, old->id, &tx->subs_removed);
    tx->timers_stopped = lb_timer_release(rt, old->id);
    version_retire(L, old);
    version_free(L, app->prev);
    app->prev = old;
  }
  if (v->number > app->max_number) app->max_number = v->number;
  v->live_since_ns = lb_now_ns();
  v->errors = 0;
  v->rollback_armed = old && !tx->rollback && app->cfg.rollback_errors > 0 && app->cfg.rollback_within_ms > 0;
  tx->number = v->number;
}

/* Creates the version's environment, loaded table and require; leaves nothing on the stack. */
static void make_env(lua_State *L, lb_version_t *v) {
  lua_newtable(L); /* env */
  lua_createtable(L, 0, 1);
  lua_pushglobaltable(L);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_newtable(L); /* loaded */
  lua_pushvalue(L, -1);
  lua_pushvalue(L, -3);
  lua_pushinteger(L, v->id);
  lua_pushcclosure(L, app_require, 3);
  lua_setfield(L, -3, "require");
  v->loaded_ref = lb_ref(L);
  v->env_ref = lb_ref(L);
}

/* The body of a reload, in protected mode: argument 1 is the tx_t. */
static int tx_body(lua_State *L) {
  tx_t *tx = lua_touserdata(L, 1);
  lb_app_t *app = tx->app;
  mw_rt_t *rt = app->rt;
  lb_version_t *v = calloc(1, sizeof *v);
  if (!v) return luaL_error(L, "out of memory");
  v->env_ref = v->loaded_ref = v->migrate_ref = v->sources_ref = LUA_NOREF;
  v->id = ++app->next_id;
  v->number = tx->rollback ? app->prev->number : app->max_number + 1;
  v->from_sources = tx->rollback;
  app->staged = v;
  rt->app_staged = v->id;

  /* 1. The source: from the disk, or the previous version's for a rollback. */
  if (tx->rollback) {
    /* A copy of the restored version's sources, so they outlive that version. */
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, app->prev->sources_ref);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -5);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    v->sources_ref = lb_ref(L);
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TSTRING) {
      tx_fail(tx, "ESTATE", "the previous version's source is not available");
      return 0;
    }
  } else {
    lua_newtable(L);
    v->sources_ref = lb_ref(L);
    if (!push_file(L, app->path)) {
      char msg[1024];
      snprintf(msg, sizeof msg, "cannot read %.900s: %s", app->path, strerror(errno));
      tx_fail(tx, "EIO", msg);
      return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->sources_ref);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 1);
  }
  int src_idx = lua_gettop(L);
  size_t len;
  const char *src = lua_tolstring(L, src_idx, &len);
  if (app->live && !tx->rollback && strspn(src, " \t\r\n") == len) {
    /* Almost certainly a save in progress (truncated, not yet written), not an app that
       means to drop every handler. */
    tx_fail(tx, "EEMPTY", "the app file is empty (a save still in progress?); not loaded");
    return 0;
  }
  if (!version_add_file(v, NULL, app->path, src, len)) return luaL_error(L, "out of memory");
  tx->t_read = lb_now_ns();

  /* 2. Compile, in a fresh environment. */
  make_env(L, v);
  lua_pushfstring(L, "@%s", app->path);
  if (luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t") != LUA_OK) {
    tx_fail(tx, "ESYNTAX", lua_tostring(L, -1));
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, v->env_ref);
  lua_setupvalue(L, -2, 1);
  tx->t_compile = lb_now_ns();

  /* 3. Run the top level under the load budget; what it registers is staged. */
  lb_call_opts_t o = {.owner = v->id,
                      .budget_ms = app->cfg.load_budget_ms ? app->cfg.load_budget_ms : LB_BUDGET_NONE};
  if (rt->mem_limit) o.mem_grow = app->cfg.load_memory ? app->cfg.load_memory : rt->mem_limit / 4;
  if (lb_pcall_ex(L, 0, 0, &o, "loading", app->path) != LUA_OK) {
    tx_fail(tx, stop_code(rt->last_stop), rt->last_error);
    return 0;
  }
  tx->t_run = lb_now_ns();

  /* 4. Reshape the state; a migrate that fails leaves it as it was. */
  if (v->migrate_ref != LUA_NOREF && app->live) {
    lb_app_push_state(L);
    int state = lua_gettop(L);
    snapshot_push(L, state);
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->migrate_ref);
    lua_pushvalue(L, state);
    lua_pushinteger(L, app->live->number);
    if (lb_pcall_ex(L, 2, 0, &o, "app.migrate of", app->path) != LUA_OK) {
      tx_fail(tx, rt->last_stop ? stop_code(rt->last_stop) : "EMIGRATE", rt->last_error);
      rt->call.mem_relaxed++;
      lb_budget_mem_update(rt);
      snapshot_restore(L, state + 1);
      return 0;
    }
  }
  tx->t_migrate = lb_now_ns();

  /* 5. Swap. */
  version_hash(v);
  commit(app, tx);
  tx->t_swap = lb_now_ns();
  return 0;
}

static double ms_between(uint64_t a, uint64_t b) { return b > a ? (double)(b - a) / 1e6 : 0.0; }

/* Ends a staged version that did not go live: its registrations never reached the broker. */
static void abort_staged(lb_app_t *app) {
  mw_rt_t *rt = app->rt;
  lb_version_t *v = app->staged;
  lb_mqtt_release(rt, v->id, NULL);
  lb_timer_release(rt, v->id);
  app->staged = NULL;
  rt->app_staged = 0;
  version_free(rt->L, v);
}

uint32_t lb_app_run(lb_app_t *app, bool rollback, const char *why, char *err, size_t errlen, const char **code) {
  mw_rt_t *rt = app->rt;
  lua_State *L = rt->L;
  const char *dummy;
  if (!code) code = &dummy;
  if (app->busy) {
    snprintf(err, errlen, "a reload of %s is already in progress", app->path);
    *code = "EBUSY";
    return 0;
  }
  if (rollback && !app->prev) {
    snprintf(err, errlen, "there is no previous version to roll back to");
    *code = "ESTATE";
    return 0;
  }
  tx_t *tx = calloc(1, sizeof *tx);
  if (!tx || !lua_checkstack(L, 8)) {
    free(tx);
    snprintf(err, errlen, "out of memory");
    *code = "ENOMEM";
    return 0;
  }
  tx->app = app;
  tx->rollback = rollback;
  tx->why = why;
  tx->t0 = lb_now_ns();
  app->busy = true;
  uint32_t was = app->live ? app->live->number : 0;
  int top = lua_gettop(L);
  lua_pushcfunction(L, tx_body);
  lua_pushlightuserdata(L, tx);
  /* Detached: app.reload() typed at the REPL gets the load budget, not what is left of the
     REPL's, and does not use the REPL's up either. */
  lb_call_opts_t o = {.budget_ms = LB_BUDGET_NONE, .detached = true};
  if (lb_pcall_ex(L, 1, 0, &o, "reloading", app->path) != LUA_OK && !tx->err[0])
    tx_fail(tx, stop_code(rt->last_stop), rt->last_error);
  lua_settop(L, top);
  if (app->staged) abort_staged(app);
  app->busy = false;

  uint32_t number = tx->number;
  if (number) {
    app->reloads += was != 0;
    app->rollbacks += rollback;
    app->last_ms = ms_between(tx->t0, tx->t_swap);
    app->last_swap_ms = ms_between(tx->t_migrate, tx->t_swap);
    app->last_since_change_ms = app->change_ns ? ms_between(app->change_ns, tx->t_swap) : 0;
    app->last_error[0] = '\0';
    app->last_code = NULL;
    char since[64] = "";
    if (app->change_ns) snprintf(since, sizeof since, "; %.2f ms after the change", app->last_since_change_ms);
    char files[48] = "";
    if (app->live->nfiles > 1) snprintf(files, sizeof files, " + %d module%s", app->live->nfiles - 1,
                                        app->live->nfiles > 2 ? "s" : "");
    if (!was) {
      MW_LOGI(COMP, "%s%s: version %u (hash %.12s) loaded in %.2f ms", app->path, files, number, app->live->hash,
              app->last_ms);
    } else {
      MW_LOGI(COMP,
              "%s%s: version %u (hash %.12s) live%s (%s) in %.2f ms: read %.2f, compile %.2f, run %.2f, migrate "
              "%.2f, swap %.3f%s; subscriptions +%d -%d; %d timer%s of version %u stopped",
              app->path, files, number, app->live->hash, rollback ? " again" : "", why, app->last_ms,
              ms_between(tx->t0, tx->t_read), ms_between(tx->t_read, tx->t_compile),
              ms_between(tx->t_compile, tx->t_run), ms_between(tx->t_run, tx->t_migrate), app->last_swap_ms, since,
              tx->subs_added, tx->subs_removed, tx->timers_stopped, tx->timers_stopped == 1 ? "" : "s", was);
    }
    lb_app_watch_update(app);
  } else {
    app->failures++;
    snprintf(app->last_error, sizeof app->last_error, "%s", tx->err);
    app->last_code = tx->code;
    if (was)
      MW_LOGE(COMP, "%s: reload (%s) failed, version %u keeps running: %s", app->path, why, was, tx->err);
    snprintf(err, errlen, "%s", tx->err);
    *code = tx->code ? tx->code : "ERAISED";
  }
  app->change_ns = 0;
  free(tx);
  return number;
}

/* ------------------------------------------------------------------ entry points */

void lb_app_config_from(lb_app_config_t *ac, const mw_config_t *cfg) {
  memset(ac, 0, sizeof *ac);
  ac->load_budget_ms = cfg->lua.load_budget_ms;
  ac->load_memory = cfg->lua.load_memory;
  ac->watch = cfg->lua.watch;
  ac->debounce_ms = cfg->lua.debounce_ms;
  ac->rollback_errors = cfg->lua.rollback_errors;
  ac->rollback_within_ms = cfg->lua.rollback_within_s * 1000u;
}

int lb_app_start(mw_rt_t *rt, const char *path, const lb_app_config_t *cfg, char *err, size_t errlen) {
  if (rt->app) {
    snprintf(err, errlen, "an app is already running");
    return -1;
  }
  lb_app_t *app = calloc(1, sizeof *app);
  if (!app) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  app->rt = rt;
  app->cfg = *cfg;
  app->path = strdup(path);
  const char *slash = strrchr(path, '/');
  app->dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
  rt->app = app;
  if (!app->path || !app->dir) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  const char *code;
  if (!lb_app_run(app, false, "start", err, errlen, &code)) return -1;
  if (lb_app_watch_start(app) != 0) MW_LOGW(COMP, "out of memory: %s will not be reloaded on changes or SIGHUP", path);
  return 0;
}

uint32_t lb_app_reload(mw_rt_t *rt, const char *why, char *err, size_t errlen, const char **code) {
  if (!rt->app) {
    snprintf(err, errlen, "no app is running (moonwire run APP.lua runs one)");
    if (code) *code = "ESTATE";
    return 0;
  }
  return lb_app_run(rt->app, false, why, err, errlen, code);
}

void lb_app_note_error(mw_rt_t *rt, uint32_t owner) {
  lb_app_t *app = rt->app;
  if (!app || !app->live || app->live->id != owner) return;
  lb_version_t *v = app->live;
  v->errors++;
  if (!v->rollback_armed) return;
  if (lb_now_ns() - v->live_since_ns > (uint64_t)app->cfg.rollback_within_ms * 1000000u) {
    v->rollback_armed = false;
    return;
  }
  if (v->errors <= app->cfg.rollback_errors) return;
  v->rollback_armed = false;
  MW_LOGE(COMP, "version %u raised %d errors within %.1f s of going live (lua.rollback.errors = %d): rolling back to "
                "version %u",
          v->number, v->errors, ms_between(v->live_since_ns, lb_now_ns()) / 1000.0, app->cfg.rollback_errors,
          app->prev ? app->prev->number : 0);
  lb_app_watch_schedule_rollback(app);
}

void lb_app_close(mw_rt_t *rt) {
  lb_app_t *app = rt->app;
  if (!app) return;
  lb_app_watch_stop(app);
  if (rt->L) {
    if (app->staged) abort_staged(app);
    if (app->live) {
      lb_mqtt_release(rt, app->live->id, NULL);
      lb_timer_release(rt, app->live->id);
    }
    version_free(rt->L, app->live);
    version_free(rt->L, app->prev);
  }
  rt->app_live = 0;
  free(app->path);
  free(app->dir);
  free(app);
  rt->app = NULL;
}
