/*
** The encoder's walker: turns a Lua value into events for a sink (lb_json_text.c writes
** JSON text, lb_json_tree.c builds a cJSON tree) with json.encode's rules: arrays and
** objects by marks or keys, json.null, members in byte order of keys, nesting limit,
** cycles refused. It never raises: it uses only Lua API calls that do not allocate
** (lua_next, lua_rawgeti, lua_tolstring on strings, lua_checkstack...) and keeps its C
** scratch memory to itself. Errors are recorded with the key path of the offending
** value, for the caller to raise once nothing but boxes hold memory.
*/
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lb_json_int.h"

/* One open container on the path from the root. */
typedef struct jframe {
  const void *table;    /* for cycle detection */
  const char *key;      /* current member key, or NULL: then 'index' is current */
  size_t klen;
  lua_Integer index;
} jframe;

typedef struct walker {
  lua_State *L;
  mw_json_sink_t *sink;
  int limit;            /* max containers open at once */
  int depth;            /* containers open now; path[0..depth-1] valid */
  jframe *path;
  int amt, omt, nul;    /* stack slots of array mt, object mt, json.null (0: absent) */
  char *err;
  size_t errlen;
} walker;

typedef struct skey {
  const char *s;
  size_t len;
  int vidx;             /* stack slot of the value */
} skey;

/* Appends to err at *off, truncating; keeps the NUL. */
static void err_append(walker *w, size_t *off, const char *p, size_t n) {
  if (w->errlen == 0 || *off >= w->errlen - 1)
    return;
  if (n > w->errlen - 1 - *off)
    n = w->errlen - 1 - *off;
  memcpy(w->err + *off, p, n);
  *off += n;
  w->err[*off] = '\0';
}

static int is_ident(const char *s, size_t n) {
  size_t i;
  if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
    return 0;
  for (i = 1; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

/* Appends the path of the open containers: ".a.b[3]", '["odd key"]'. */
static void err_path(walker *w, size_t *off) {
  int d;
  char tmp[48];
  for (d = 0; d < w->depth; d++) {
    const jframe *f = &w->path[d];
    if (f->key == NULL) {
      int n = snprintf(tmp, sizeof tmp, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)f->index);
      err_append(w, off, tmp, (size_t)n);
    }
    else if (is_ident(f->key, f->klen)) {
      err_append(w, off, ".", 1);
      err_append(w, off, f->key, f->klen);
    }
    else {
      size_t i;
      err_append(w, off, "[\"", 2);
      for (i = 0; i < f->klen && i < 32; i++) {
        unsigned char c = (unsigned char)f->key[i];
        if (c == '"' || c == '\\') {
          tmp[0] = '\\';
          tmp[1] = (char)c;
          err_append(w, off, tmp, 2);
        }
        else if (c < 0x20 || c == 0x7f) {
          int n = snprintf(tmp, sizeof tmp, "\\%u", (unsigned)c);
          err_append(w, off, tmp, (size_t)n);
        }
        else
          err_append(w, off, (const char *)&c, 1);
      }
      if (f->klen > 32)
        err_append(w, off, "...", 3);
      err_append(w, off, "\"]", 2);
    }
  }
}

/*
** Records a failure: "<what> at <path>[ (<detail>)]"; returns 'kind'.
*/
static int wfail(walker *w, int kind, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int wfail(walker *w, int kind, const char *detail, const char *fmt, ...) {
  size_t off = 0;
  va_list ap;
  if (w->errlen == 0)
    return kind;
  va_start(ap, fmt);
  vsnprintf(w->err, w->errlen, fmt, ap);
  va_end(ap);
  off = strlen(w->err);
  if (w->depth == 0)
    err_append(w, &off, " at top level", 13);
  else {
    err_append(w, &off, " at ", 4);
    err_path(w, &off);
  }
  if (detail != NULL) {
    err_append(w, &off, " (", 2);
    err_append(w, &off, detail, strlen(detail));
    err_append(w, &off, ")", 1);
  }
  return kind;
}

static int sinkfail(walker *w, int rc) {
  if (rc == SK_NUL)
    return wfail(w, JK_VALUE, "cJSON strings end at NUL", "cannot convert string with a NUL byte");
  return wfail(w, JK_NOMEM, NULL, "out of memory");
}

static int keycmp(const void *a, const void *b) {
  const skey *x = (const skey *)a, *y = (const skey *)b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  if (c != 0)
    return c;
  return (x->len > y->len) - (x->len < y->len);
}

static int walk(walker *w, int idx);

/* Describes a key that cannot be encoded; stack: unchanged. */
static int bad_key(walker *w, int kidx) {
  lua_State *L = w->L;
  if (lua_type(L, kidx) == LUA_TNUMBER) {
    if (lua_isinteger(L, kidx))
      return wfail(w, JK_VALUE, "keys must be strings, or integers 1..n for arrays",
                   "cannot encode table with key " LUA_INTEGER_FMT,
                   (LUAI_UACINT)lua_tointeger(L, kidx));
    return wfail(w, JK_VALUE, "keys must be strings, or integers 1..n for arrays",
                 "cannot encode table with key %.14g", (double)lua_tonumber(L, kidx));
  }
  return wfail(w, JK_VALUE, "keys must be strings, or integers 1..n for arrays",
               "cannot encode table with %s key", luaL_typename(L, kidx));
}

/*
** Classifies and emits the table at 'idx'. Arrays: the array mark, or (unmarked) only
** positive integer keys; they must be 1..n without holes. Objects: the object mark, or
** unmarked with only string keys, or empty and unmarked. Members in byte order of keys.
*/
static int walk_table(walker *w, int idx) {
  lua_State *L = w->L;
  const void *self = lua_topointer(L, idx);
  int mark = 0;  /* 1 array, 2 object */
  size_t nstr = 0;
  lua_Integer nint = 0, maxi = 0;
  int d, rc, is_array;
  if (w->depth >= w->limit)
    return wfail(w, JK_VALUE, NULL, "nesting deeper than %d levels", w->limit);
  for (d = 0; d < w->depth; d++) {
    if (w->path[d].table == self)
      return wfail(w, JK_VALUE, "a table cannot contain itself", "cannot encode cycle");
  }
  if (!lua_checkstack(L, 4))
    return wfail(w, JK_NOMEM, NULL, "out of memory (Lua stack)");
  if (lua_getmetatable(L, idx)) {
    if (w->amt && lua_rawequal(L, -1, w->amt))
      mark = 1;
    else if (w->omt && lua_rawequal(L, -1, w->omt))
      mark = 2;
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {  /* stack: key, value */
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      nstr++;
    else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
      lua_Integer k = lua_tointeger(L, -1);
      nint++;
      if (k > maxi)
        maxi = k;
    }
    else {
      rc = bad_key(w, lua_gettop(L));
      lua_pop(L, 1);
      return rc;
    }
  }
  if (mark == 1 && nstr > 0)
    return wfail(w, JK_VALUE, "arrays take integer keys 1..n", "cannot encode json.array with string keys");
  if (mark == 2 && nint > 0)
    return wfail(w, JK_VALUE, "object keys must be strings", "cannot encode json.object with integer keys");
  if (mark == 0 && nstr > 0 && nint > 0)
    return wfail(w, JK_VALUE, "use all string keys or all integer keys 1..n",
                 "cannot encode table with both string and integer keys");
  is_array = (mark == 1) || (mark == 0 && nint > 0);
  w->path[w->depth].table = self;
  w->path[w->depth].key = NULL;
  w->path[w->depth].klen = 0;
  w->path[w->depth].index = 0;

  if (is_array) {
    lua_Integer i;
    if (maxi != nint) {  /* holes: report the first missing index */
      char detail[96];
      for (i = 1; i <= maxi; i++) {
        int t = lua_rawgeti(L, idx, i);
        lua_pop(L, 1);
        if (t == LUA_TNIL)
          break;
      }
      snprintf(detail, sizeof detail, "index " LUA_INTEGER_FMT " is missing; use json.null for holes",
               (LUAI_UACINT)i);
      return wfail(w, JK_VALUE, detail, "cannot encode sparse array");
    }
    if ((rc = w->sink->begin(w->sink, 0, (size_t)nint)) != SK_OK)
      return sinkfail(w, rc);
    w->depth++;  /* errors from here on name the element */
    for (i = 1; i <= nint; i++) {
      w->path[w->depth - 1].index = i;
      if ((rc = w->sink->item(w->sink, (size_t)(i - 1))) != SK_OK)
        return sinkfail(w, rc);
      lua_rawgeti(L, idx, i);
      rc = walk(w, lua_gettop(L));
      lua_pop(L, 1);
      if (rc != JK_OK)
        return rc;
    }
    w->depth--;
    if ((rc = w->sink->end(w->sink, 0, (size_t)nint)) != SK_OK)
      return sinkfail(w, rc);
    return JK_OK;
  }
  else {
    int base = lua_gettop(L);
    size_t i;
    skey *keys = NULL;
    if (nstr > (size_t)(INT_MAX - 8) / 2 || !lua_checkstack(L, (int)(2 * nstr) + 4))
      return wfail(w, JK_NOMEM, NULL, "out of memory (Lua stack, %zu keys)", nstr);
    if (nstr > 0 && (keys = (skey *)malloc(nstr * sizeof *keys)) == NULL)
      return wfail(w, JK_NOMEM, NULL, "out of memory");
    /* keep every key/value pair on the stack while they are sorted and visited */
    lua_pushnil(L);
    while (lua_next(L, idx)) {  /* stack: ..., key, value */
      lua_pushvalue(L, -2);     /* stack: ..., key, value, key (for lua_next) */
    }
    for (i = 0; i < nstr; i++) {
      keys[i].vidx = base + 2 * (int)i + 2;
      keys[i].s = lua_tolstring(L, keys[i].vidx - 1, &keys[i].len);  /* a string: no conversion */
    }
    if (nstr > 1)
      qsort(keys, nstr, sizeof *keys, keycmp);
    rc = w->sink->begin(w->sink, 1, nstr);
    if (rc == SK_OK)
      w->depth++;  /* errors from here on name the member */
    for (i = 0; rc == SK_OK && i < nstr; i++) {
      w->path[w->depth - 1].key = keys[i].s;
      w->path[w->depth - 1].klen = keys[i].len;
      if ((rc = w->sink->item(w->sink, i)) != SK_OK || (rc = w->sink->key(w->sink, keys[i].s, keys[i].len)) != SK_OK)
        break;
      if ((rc = walk(w, keys[i].vidx)) != JK_OK) {
        free(keys);
        lua_settop(L, base);
        return rc;
      }
    }
    free(keys);
    lua_settop(L, base);
    if (rc != SK_OK)
      return sinkfail(w, rc);
    w->path[w->depth - 1].key = NULL;
    w->depth--;
    if ((rc = w->sink->end(w->sink, 1, nstr)) != SK_OK)
      return sinkfail(w, rc);
    return JK_OK;
  }
}

/* Emits the value at absolute index 'idx'. */
static int walk(walker *w, int idx) {
  lua_State *L = w->L;
  int rc;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:  /* only reachable at top level: tables hold no nils */
      rc = w->sink->null_(w->sink);
      break;
    case LUA_TBOOLEAN:
      rc = w->sink->boolean(w->sink, lua_toboolean(L, idx));
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        rc = w->sink->integer(w->sink, lua_tointeger(L, idx));
      else {
        double v = (double)lua_tonumber(L, idx);
        if (isnan(v))
          return wfail(w, JK_VALUE, "JSON has no NaN", "cannot encode NaN");
        if (isinf(v))
          return wfail(w, JK_VALUE, "JSON has no infinity", "cannot encode %s", v > 0 ? "inf" : "-inf");
        rc = w->sink->number(w->sink, v);
      }
      break;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      rc = w->sink->string(w->sink, s, n);
      break;
    }
    case LUA_TTABLE:
      return walk_table(w, idx);
    case LUA_TUSERDATA:
      if (w->nul && lua_rawequal(L, idx, w->nul)) {
        rc = w->sink->null_(w->sink);
        break;
      }
      /* FALLTHROUGH */
    default:
      return wfail(w, JK_VALUE, NULL, "cannot encode %s", luaL_typename(L, idx));
  }
  return rc == SK_OK ? JK_OK : sinkfail(w, rc);
}

/*
** Walks the value at 'idx' into 'sink' with nesting limit 'limit'. Never raises; the
** stack is restored. Returns JK_OK, or JK_VALUE / JK_NOMEM with a message in err.
*/
int mw_json_walk(lua_State *L, int idx, mw_json_sink_t *sink, int limit, char *err, size_t errlen) {
  jframe small[MW_JSON_DEFAULT_DEPTH + 1];
  walker w;
  int top = lua_gettop(L), rc;
  w.L = L;
  w.sink = sink;
  w.limit = limit;
  w.depth = 0;
  w.err = err;
  w.errlen = errlen;
  w.amt = w.omt = w.nul = 0;
  if (errlen > 0)
    err[0] = '\0';
  w.path = small;
  if (limit > MW_JSON_DEFAULT_DEPTH && (w.path = (jframe *)malloc(sizeof(jframe) * ((size_t)limit + 1))) == NULL)
    return wfail(&w, JK_NOMEM, NULL, "out of memory");
  if (!lua_checkstack(L, 6))
    rc = wfail(&w, JK_NOMEM, NULL, "out of memory (Lua stack)");
  else {
    idx = lua_absindex(L, idx);
    /* marks and null, if this state has them; rawgetp never allocates */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_array_mt) == LUA_TTABLE) w.amt = top + 1;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_object_mt) == LUA_TTABLE) w.omt = top + 2;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_null) == LUA_TUSERDATA) w.nul = top + 3;
    rc = walk(&w, idx);
  }
  lua_settop(L, top);
  if (w.path != small)
    free(w.path);
  return rc;
}
