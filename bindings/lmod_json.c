/*
** moonwire.json: json.decode / json.encode over cJSON, json.null, array and object
** markers, and the C helpers declared in lmod_json.h.
**
** Ownership (the point of this file): no Lua error may long-jump over C memory.
**  - decode: the cJSON tree is parsed straight into a "box" userdata (__gc == __close)
**    that is already on the stack and marked to-be-closed. Converting the tree to Lua
**    can raise (memory errors); the box frees the tree on every exit, normal or not.
**  - encode: one walker turns a Lua value into events for a "sink" and never raises: it
**    uses only Lua API calls that do not allocate (lua_next, lua_rawgeti, lua_tolstring
**    on strings, lua_checkstack...) and keeps its C scratch memory to itself. The text
**    sink writes into the buffer of a to-be-closed box; the tree sink (for
**    mw_json_from_lua) deletes its partial tree on failure. Errors are recorded with
**    the key path and raised only once nothing but boxes hold memory.
**
** Decode reads the source text alongside the tree (a cursor over the tokens, in the
** same document order in which cJSON built the tree) for what cJSON cannot keep:
** integers beyond 2^53 (exact as Lua integers) and strings with \u0000 (cJSON stores
** C strings). If the cursor ever disagrees with the tree it is dropped, and cJSON's
** values are used as they are.
*/
#include "lmod_json.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define MW_JSON_BOX_MT "moonwire.json.box"

/* Registry keys (their addresses). */
static const char key_array_mt = 'a';
static const char key_object_mt = 'o';
static const char key_null = 'n';

/* Error kinds of the encoder's walker. */
enum { JK_OK = 0, JK_VALUE, JK_NOMEM };

/* Sink results. */
enum { SK_OK = 0, SK_NOMEM, SK_NUL };

/* Decoder results. */
enum { PK_OK = 0, PK_DEPTH, PK_RANGE, PK_CTRL };

/* Size of the error messages built in C before they are pushed or raised. */
#define ERRMSG_SIZE 320


/*
** {======================================================
** Box: a userdata owning a cJSON tree and/or a malloc'd text buffer
** =======================================================
*/

typedef struct jbox {
  cJSON *tree;   /* owned, may be NULL */
  char *buf;     /* owned, may be NULL */
  size_t len;    /* bytes used in 'buf' */
  size_t cap;    /* bytes allocated in 'buf' */
} jbox;

/* __gc and __close: frees what the box holds; idempotent (slots cleared first). */
static int box_gc(lua_State *L) {
  jbox *b = (jbox *)luaL_checkudata(L, 1, MW_JSON_BOX_MT);
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
  jbox *b = (jbox *)luaL_checkudata(L, 1, MW_JSON_BOX_MT);
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
static void ensure_meta(lua_State *L) {
  luaL_checkstack(L, 4, "json");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null) == LUA_TUSERDATA) {  /* made last: all exist */
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, MW_JSON_BOX_MT))
    luaL_setfuncs(L, box_meta, 0);
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_array_mt) != LUA_TTABLE) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "moonwire.json.array");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_array_mt);
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_object_mt) != LUA_TTABLE) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "moonwire.json.object");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_object_mt);
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null) != LUA_TUSERDATA) {
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "moonwire.json.null");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json.null");
    lua_setfield(L, -2, "__metatable");  /* getmetatable(json.null) == "json.null" */
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_null);
  }
  lua_pop(L, 1);
}

/* Pushes a new empty box; stack: +1 */
static jbox *newbox(lua_State *L) {
  jbox *b;
  ensure_meta(L);
  b = (jbox *)lua_newuserdatauv(L, sizeof(jbox), 0);
  b->tree = NULL;  /* empty before the metatable is set: nothing to leak */
  b->buf = NULL;
  b->len = b->cap = 0;
  luaL_setmetatable(L, MW_JSON_BOX_MT);
  return b;
}

cJSON **mw_json_newbox(lua_State *L) {
  return &newbox(L)->tree;
}

void mw_json_pushnull(lua_State *L) {
  ensure_meta(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null);
}

int mw_json_isnull(lua_State *L, int idx) {
  int r;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_checkstack(L, 1))
    return 0;
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null);
  r = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  return r;
}

/* }====================================================== */


/*
** {======================================================
** Encoder: Lua value -> sink events (never raises)
** =======================================================
*/

typedef struct jsink jsink;
struct jsink {
  int (*null_)(jsink *s);
  int (*boolean)(jsink *s, int b);
  int (*integer)(jsink *s, lua_Integer i);
  int (*number)(jsink *s, double d);            /* finite */
  int (*string)(jsink *s, const char *p, size_t n);
  int (*begin)(jsink *s, int is_object, size_t n);
  int (*item)(jsink *s, size_t i);               /* before element/member i (0-based) */
  int (*key)(jsink *s, const char *p, size_t n); /* p is NUL-terminated (a Lua string) */
  int (*end)(jsink *s, int is_object, size_t n);
};

/* One open container on the path from the root. */
typedef struct jframe {
  const void *table;    /* for cycle detection */
  const char *key;      /* current member key, or NULL: then 'index' is current */
  size_t klen;
  lua_Integer index;
} jframe;

typedef struct walker {
  lua_State *L;
  jsink *sink;
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
static int walk_value(lua_State *L, int idx, jsink *sink, int limit, char *err, size_t errlen) {
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
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_array_mt) == LUA_TTABLE) w.amt = top + 1;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_object_mt) == LUA_TTABLE) w.omt = top + 2;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null) == LUA_TUSERDATA) w.nul = top + 3;
    rc = walk(&w, idx);
  }
  lua_settop(L, top);
  if (w.path != small)
    free(w.path);
  return rc;
}

/* ---- text sink: JSON text into a box's buffer ---- */

typedef struct tsink {
  jsink base;
  jbox *box;
  int pretty;
  int level;
} tsink;

static int buf_reserve(jbox *b, size_t extra) {
  size_t need, cap;
  char *p;
  if (extra <= b->cap - b->len)
    return SK_OK;
  if (extra > SIZE_MAX / 2 - b->len)
    return SK_NOMEM;
  need = b->len + extra;
  cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  if ((p = (char *)realloc(b->buf, cap)) == NULL)
    return SK_NOMEM;
  b->buf = p;
  b->cap = cap;
  return SK_OK;
}

static int buf_put(jbox *b, const char *s, size_t n) {
  if (buf_reserve(b, n) != SK_OK)
    return SK_NOMEM;
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  return SK_OK;
}

static int t_null(jsink *s) {
  return buf_put(((tsink *)s)->box, "null", 4);
}

static int t_boolean(jsink *s, int v) {
  return v ? buf_put(((tsink *)s)->box, "true", 4) : buf_put(((tsink *)s)->box, "false", 5);
}

static int t_integer(jsink *s, lua_Integer i) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, (LUAI_UACINT)i);
  return buf_put(((tsink *)s)->box, tmp, (size_t)n);
}

/*
** Shortest of %.14g .. %.17g that reads back as the same double; '.' whatever the
** locale. Returns the length.
*/
static int fmt_double(char *out, size_t cap, double d) {
  int prec, n = 0;
  char dp = localeconv()->decimal_point[0];
  for (prec = 14; prec <= 17; prec++) {
    n = snprintf(out, cap, "%.*g", prec, d);
    if (strtod(out, NULL) == d)
      break;
  }
  if (dp != '.') {
    char *p = strchr(out, dp);
    if (p != NULL)
      *p = '.';
  }
  return n;
}

static int t_number(jsink *s, double d) {
  char tmp[40];
  int n = fmt_double(tmp, sizeof tmp, d);
  return buf_put(((tsink *)s)->box, tmp, (size_t)n);
}

/* Writes a JSON string: escapes '"', '\\' and bytes < 0x20; other bytes as they are. */
static int put_string(jbox *b, const char *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0;
  if (buf_reserve(b, n + 2) != SK_OK || buf_put(b, "\"", 1) != SK_OK)
    return SK_NOMEM;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    char esc[6];
    size_t elen = 2;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    if (buf_put(b, p + run, i - run) != SK_OK)
      return SK_NOMEM;
    run = i + 1;
    esc[0] = '\\';
    switch (c) {
      case '"': esc[1] = '"'; break;
      case '\\': esc[1] = '\\'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
        esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
        elen = 6;
    }
    if (buf_put(b, esc, elen) != SK_OK)
      return SK_NOMEM;
  }
  if (buf_put(b, p + run, n - run) != SK_OK || buf_put(b, "\"", 1) != SK_OK)
    return SK_NOMEM;
  return SK_OK;
}

static int t_string(jsink *s, const char *p, size_t n) {
  return put_string(((tsink *)s)->box, p, n);
}

static int t_newline(tsink *t) {
  int i;
  if (buf_reserve(t->box, 1 + 2 * (size_t)t->level) != SK_OK)
    return SK_NOMEM;
  t->box->buf[t->box->len++] = '\n';
  for (i = 0; i < t->level; i++) {
    t->box->buf[t->box->len++] = ' ';
    t->box->buf[t->box->len++] = ' ';
  }
  return SK_OK;
}

static int t_begin(jsink *s, int is_object, size_t n) {
  tsink *t = (tsink *)s;
  (void)n;
  t->level++;
  return buf_put(t->box, is_object ? "{" : "[", 1);
}

static int t_item(jsink *s, size_t i) {
  tsink *t = (tsink *)s;
  if (i > 0 && buf_put(t->box, ",", 1) != SK_OK)
    return SK_NOMEM;
  return t->pretty ? t_newline(t) : SK_OK;
}

static int t_key(jsink *s, const char *p, size_t n) {
  tsink *t = (tsink *)s;
  if (put_string(t->box, p, n) != SK_OK)
    return SK_NOMEM;
  return t->pretty ? buf_put(t->box, ": ", 2) : buf_put(t->box, ":", 1);
}

static int t_end(jsink *s, int is_object, size_t n) {
  tsink *t = (tsink *)s;
  t->level--;
  if (t->pretty && n > 0 && t_newline(t) != SK_OK)
    return SK_NOMEM;
  return buf_put(t->box, is_object ? "}" : "]", 1);
}

static void tsink_init(tsink *t, jbox *box, int pretty) {
  t->base.null_ = t_null;
  t->base.boolean = t_boolean;
  t->base.integer = t_integer;
  t->base.number = t_number;
  t->base.string = t_string;
  t->base.begin = t_begin;
  t->base.item = t_item;
  t->base.key = t_key;
  t->base.end = t_end;
  t->box = box;
  t->pretty = pretty;
  t->level = 0;
}

/* ---- tree sink: a cJSON tree (mw_json_from_lua) ---- */

typedef struct csink {
  jsink base;
  cJSON *root;                               /* owned; deleted by the caller on failure */
  cJSON *open[MW_JSON_DEFAULT_DEPTH];         /* open containers, innermost last */
  int nopen;
  const char *key;                           /* key of the next member */
} csink;

/* Attaches a new item (NULL: allocation failed) to the innermost container. */
static int c_add(csink *c, cJSON *item) {
  cJSON *parent;
  cJSON_bool ok;
  if (item == NULL)
    return SK_NOMEM;
  if (c->nopen == 0) {
    c->root = item;
    return SK_OK;
  }
  parent = c->open[c->nopen - 1];
  ok = cJSON_IsObject(parent) ? cJSON_AddItemToObject(parent, c->key, item)
                              : cJSON_AddItemToArray(parent, item);
  if (!ok) {
    cJSON_Delete(item);
    return SK_NOMEM;
  }
  return SK_OK;
}

static int c_null(jsink *s) {
  return c_add((csink *)s, cJSON_CreateNull());
}

static int c_boolean(jsink *s, int v) {
  return c_add((csink *)s, cJSON_CreateBool(v));
}

static int c_integer(jsink *s, lua_Integer i) {
  return c_add((csink *)s, cJSON_CreateNumber((double)i));
}

static int c_number(jsink *s, double d) {
  return c_add((csink *)s, cJSON_CreateNumber(d));
}

static int c_string(jsink *s, const char *p, size_t n) {
  if (memchr(p, '\0', n) != NULL)
    return SK_NUL;
  return c_add((csink *)s, cJSON_CreateString(p));
}

static int c_begin(jsink *s, int is_object, size_t n) {
  csink *c = (csink *)s;
  cJSON *item = is_object ? cJSON_CreateObject() : cJSON_CreateArray();
  int rc = c_add(c, item);
  (void)n;
  if (rc == SK_OK)
    c->open[c->nopen++] = item;  /* the walker's limit keeps nopen <= MW_JSON_DEFAULT_DEPTH */
  return rc;
}

static int c_item(jsink *s, size_t i) {
  (void)s;
  (void)i;
  return SK_OK;
}

static int c_key(jsink *s, const char *p, size_t n) {
  if (memchr(p, '\0', n) != NULL)
    return SK_NUL;
  ((csink *)s)->key = p;  /* a Lua string on the walker's stack: lives until the member is added */
  return SK_OK;
}

static int c_end(jsink *s, int is_object, size_t n) {
  (void)is_object;
  (void)n;
  ((csink *)s)->nopen--;
  return SK_OK;
}

cJSON *mw_json_from_lua(lua_State *L, int idx, char *err, size_t errlen) {
  csink c;
  c.base.null_ = c_null;
  c.base.boolean = c_boolean;
  c.base.integer = c_integer;
  c.base.number = c_number;
  c.base.string = c_string;
  c.base.begin = c_begin;
  c.base.item = c_item;
  c.base.key = c_key;
  c.base.end = c_end;
  c.root = NULL;
  c.nopen = 0;
  c.key = NULL;
  if (walk_value(L, idx, &c.base, MW_JSON_DEFAULT_DEPTH, err, errlen) != JK_OK) {
    cJSON_Delete(c.root);
    return NULL;
  }
  return c.root;
}

/* }====================================================== */


/*
** {======================================================
** Decoder: cJSON tree -> Lua values
** =======================================================
*/

typedef struct pusher {
  lua_State *L;
  int limit;
  int amt, nul;        /* stack slots of the array metatable and json.null */
  const char *src;     /* source text, or NULL (mw_json_push) */
  size_t len;
  size_t pos;          /* cursor: next unread byte of src */
  int synced;          /* cursor agrees with the tree so far */
  size_t errpos;       /* PK_RANGE: offset of the number */
} pusher;

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
** Moves the cursor over the next value token (or '[' / '{') and returns its start.
** Separators (',' ':' ']' '}') and whitespace before it are skipped. cJSON has already
** accepted the text, so this only has to find token ends.
*/
static size_t cur_next(pusher *p) {
  const char *s = p->src;
  size_t i = p->pos, n = p->len, start;
  while (i < n && (is_ws(s[i]) || s[i] == ',' || s[i] == ':' || s[i] == ']' || s[i] == '}'))
    i++;
  start = i;
  if (i >= n) {
    p->synced = 0;
    return start;
  }
  switch (s[i]) {
    case '[': case '{':
      i++;
      break;
    case '"':
      for (i++; i < n && s[i] != '"'; i++) {
        if (s[i] == '\\')
          i++;
      }
      i++;
      break;
    case 't': case 'n':
      i += 4;
      break;
    case 'f':
      i += 5;
      break;
    default:
      if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
        while (i < n && s[i] != '\0' && strchr("0123456789+-.eE", s[i]) != NULL)
          i++;
      }
      else
        p->synced = 0;
  }
  p->pos = i > n ? n : i;
  return start;
}

/* Is there a \u0000 escape in the string token s[0..n) (quotes included)? */
static int has_nul_escape(const char *s, size_t n) {
  size_t i;
  for (i = 1; i + 1 < n; i++) {
    if (s[i] == '\\') {
      if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0)
        return 1;
      i++;
    }
  }
  return 0;
}

static int hex4(const char *s, size_t avail, unsigned *out) {
  unsigned v = 0;
  int k;
  if (avail < 4)
    return 0;
  for (k = 0; k < 4; k++) {
    char c = s[k];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

/* Decodes the string token s[0..n) (quotes included) and pushes it; stack: +1. */
static void push_token_string(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  size_t i, end = n > 0 ? n - 1 : 0;
  luaL_buffinit(L, &b);
  for (i = 1; i < end; i++) {
    char c = s[i];
    unsigned cp;
    char u[4];
    if (c != '\\' || i + 1 >= end) {
      luaL_addchar(&b, c);
      continue;
    }
    c = s[++i];
    switch (c) {
      case 'b': luaL_addchar(&b, '\b'); continue;
      case 'f': luaL_addchar(&b, '\f'); continue;
      case 'n': luaL_addchar(&b, '\n'); continue;
      case 'r': luaL_addchar(&b, '\r'); continue;
      case 't': luaL_addchar(&b, '\t'); continue;
      case 'u': break;
      default: luaL_addchar(&b, c); continue;  /* '"', '\\', '/' */
    }
    if (!hex4(s + i + 1, end - i - 1, &cp))
      continue;
    i += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < end && s[i + 1] == '\\' && s[i + 2] == 'u') {
      unsigned lo;
      if (hex4(s + i + 3, end - i - 3, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        i += 6;
      }
    }
    if (cp < 0x80) {
      luaL_addchar(&b, (char)cp);
      continue;
    }
    if (cp < 0x800) {
      u[0] = (char)(0xC0 | (cp >> 6));
      u[1] = (char)(0x80 | (cp & 0x3F));
      luaL_addlstring(&b, u, 2);
    }
    else if (cp < 0x10000) {
      u[0] = (char)(0xE0 | (cp >> 12));
      u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
      u[2] = (char)(0x80 | (cp & 0x3F));
      luaL_addlstring(&b, u, 3);
    }
    else {
      u[0] = (char)(0xF0 | (cp >> 18));
      u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
      u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
      u[3] = (char)(0x80 | (cp & 0x3F));
      luaL_addlstring(&b, u, 4);
    }
  }
  luaL_pushresult(&b);
}

/* Integer token ("-"? digits) that fits in lua_Integer? */
static int token_integer(const char *s, size_t n, lua_Integer *out) {
  size_t i = 0;
  int neg = 0;
  lua_Unsigned acc = 0, lim;
  if (n > 0 && s[0] == '-') {
    neg = 1;
    i = 1;
  }
  if (i >= n)
    return 0;
  lim = neg ? (lua_Unsigned)LUA_MAXINTEGER + 1u : (lua_Unsigned)LUA_MAXINTEGER;
  for (; i < n; i++) {
    unsigned dgt;
    if (s[i] < '0' || s[i] > '9')
      return 0;
    dgt = (unsigned)(s[i] - '0');
    if (acc > (lim - dgt) / 10)
      return 0;
    acc = acc * 10 + dgt;
  }
  *out = neg ? (lua_Integer)(0u - acc) : (lua_Integer)acc;
  return 1;
}

/* Integer when integral and within lua_Integer, else float. */
static void push_double(lua_State *L, double d) {
  if (isfinite(d) && floor(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
    lua_pushinteger(L, (lua_Integer)d);
  else
    lua_pushnumber(L, (lua_Number)d);
}

static const char *item_string(lua_State *L, const char *s) {
  if (s == NULL)
    luaL_error(L, "mw_json_push: cJSON string item or key without a string");
  return s;
}

/*
** Pushes the value of 'item' at nesting 'depth' (containers already open).
** Returns PK_OK (+1 on the stack) or PK_DEPTH / PK_RANGE (stack as on entry).
** Raises only for misuse and memory errors; callers own the tree through a box.
*/
static int push_item(pusher *p, const cJSON *item, int depth) {
  lua_State *L = p->L;
  size_t tok = 0;
  const char *t = NULL;
  int type = item->type & 0xFF;
  if (p->synced) {
    char want;
    tok = cur_next(p);
    t = p->src + tok;
    switch (type) {
      case cJSON_Array: want = '['; break;
      case cJSON_Object: want = '{'; break;
      case cJSON_String: want = '"'; break;
      case cJSON_True: want = 't'; break;
      case cJSON_False: want = 'f'; break;
      case cJSON_NULL: want = 'n'; break;
      default: want = (tok < p->len && *t == '-') ? '-' : '0';
    }
    if (!p->synced || tok >= p->len ||
        (want == '0' ? !(*t >= '0' && *t <= '9') : *t != want))
      p->synced = 0;
  }
  switch (type) {
    case cJSON_False:
    case cJSON_True:
      lua_pushboolean(L, type == cJSON_True);
      return PK_OK;
    case cJSON_NULL:
      lua_pushvalue(L, p->nul);
      return PK_OK;
    case cJSON_Number: {
      lua_Integer iv;
      if (p->synced) {
        if (token_integer(t, p->pos - tok, &iv)) {
          lua_pushinteger(L, iv);
          return PK_OK;
        }
        if (!isfinite(item->valuedouble)) {
          p->errpos = tok;
          return PK_RANGE;
        }
      }
      push_double(L, item->valuedouble);
      return PK_OK;
    }
    case cJSON_String:
      if (p->synced && has_nul_escape(t, p->pos - tok))
        push_token_string(L, t, p->pos - tok);
      else
        lua_pushstring(L, item_string(L, item->valuestring));
      return PK_OK;
    case cJSON_Array:
    case cJSON_Object: {
      const cJSON *c;
      int n = 0, rc;
      lua_Integer i = 0;
      if (depth >= p->limit)
        return PK_DEPTH;
      luaL_checkstack(L, 4, "json nesting");
      for (c = item->child; c != NULL; c = c->next)
        n++;
      if (type == cJSON_Array) {
        lua_createtable(L, n, 0);
        lua_pushvalue(L, p->amt);
        lua_setmetatable(L, -2);
      }
      else
        lua_createtable(L, 0, n);
      for (c = item->child; c != NULL; c = c->next) {
        if (type == cJSON_Object) {
          size_t ktok = 0;
          int exact = 0;
          if (p->synced) {
            ktok = cur_next(p);
            if (ktok >= p->len || p->src[ktok] != '"')
              p->synced = 0;
            else
              exact = has_nul_escape(p->src + ktok, p->pos - ktok);
          }
          if (exact)
            push_token_string(L, p->src + ktok, p->pos - ktok);
          else
            lua_pushstring(L, item_string(L, c->string));
        }
        if ((rc = push_item(p, c, depth + 1)) != PK_OK) {
          lua_pop(L, type == cJSON_Object ? 2 : 1);
          return rc;
        }
        if (type == cJSON_Object)
          lua_rawset(L, -3);
        else
          lua_rawseti(L, -2, ++i);
      }
      return PK_OK;
    }
    default:
      return luaL_error(L, "mw_json_push: cannot convert cJSON item of type %d", type);
  }
}

/* Pushes the array metatable and json.null; returns the slot of the first. */
static int push_marks(lua_State *L) {
  ensure_meta(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_array_mt);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &key_null);
  return lua_gettop(L) - 1;
}

int mw_json_push(lua_State *L, const cJSON *item, int depth_limit) {
  pusher p;
  int top = lua_gettop(L), rc;
  if (item == NULL)
    return luaL_error(L, "mw_json_push: NULL item");
  if (depth_limit < 1 || depth_limit > MW_JSON_MAX_DEPTH)
    return luaL_error(L, "mw_json_push: depth_limit %d not in 1..%d", depth_limit, MW_JSON_MAX_DEPTH);
  luaL_checkstack(L, 6, "json");
  memset(&p, 0, sizeof p);
  p.L = L;
  p.limit = depth_limit;
  p.amt = push_marks(L);
  p.nul = p.amt + 1;
  rc = push_item(&p, item, 0);
  if (rc != PK_OK) {
    lua_settop(L, top);
    return 0;
  }
  lua_replace(L, top + 1);  /* stack: ..., value, null */
  lua_settop(L, top + 1);
  return 1;
}

/*
** Offset of the first byte that cJSON would accept but we do not, or SIZE_MAX:
** a '[' or '{' opening nesting level limit+1 (*why = PK_DEPTH), or, outside strings,
** a control byte other than tab, CR, LF (cJSON skips every byte <= 32 as whitespace;
** *why = PK_CTRL). String contents are skipped. *open_str is the offset of a string
** left unterminated at the end of the text, else SIZE_MAX. No allocation, no recursion.
*/
static size_t prescan(const char *s, size_t n, int limit, int *why, size_t *open_str) {
  size_t i;
  int depth = 0;
  *open_str = SIZE_MAX;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"') {
      size_t start = i;
      for (i++; i < n && s[i] != '"'; i++) {
        if (s[i] == '\\')
          i++;
      }
      if (i >= n)
        *open_str = start;
    }
    else if (c == '[' || c == '{') {
      if (++depth > limit) {
        *why = PK_DEPTH;
        return i;
      }
    }
    else if ((c == ']' || c == '}') && depth > 0)
      depth--;
    else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      *why = PK_CTRL;
      return i;
    }
  }
  return SIZE_MAX;
}

/* Type ('[' or '{') of the innermost container open at offset q, 0 if none. */
static char container_at(const char *s, size_t q) {
  char stack[MW_JSON_MAX_DEPTH + 1];
  size_t i;
  int depth = 0;
  for (i = 0; i < q; i++) {
    if (s[i] == '"') {
      for (i++; i < q && s[i] != '"'; i++) {
        if (s[i] == '\\')
          i++;
      }
    }
    else if (s[i] == '[' || s[i] == '{') {
      if (depth > MW_JSON_MAX_DEPTH)
        return 0;
      stack[depth++] = s[i];
    }
    else if ((s[i] == ']' || s[i] == '}') && depth > 0)
      depth--;
  }
  return depth > 0 ? stack[depth - 1] : 0;
}

/*
** Corrects cJSON 1.7.15's error offset 'pos' in two known cases: a string running off
** the end of the text is reported at its first byte (we say: end of input), and a
** non-string where an object key belongs is reported one byte late.
*/
static size_t fix_error_pos(const char *s, size_t len, size_t pos, size_t open_str) {
  size_t q, p;
  if (open_str != SIZE_MAX && pos > open_str)
    return len;
  if (pos == 0 || pos > len)
    return pos;
  q = pos - 1;
  if (is_ws(s[q]) || s[q] == '"')
    return pos;
  for (p = q; p > 0 && is_ws(s[p - 1]); p--)
    ;
  if (p == 0)
    return pos;
  p--;
  if (s[p] == '{' || (s[p] == ',' && container_at(s, p) == '{'))
    return q;
  return pos;
}

/*
** Pushes nil, "<what> at line L, column C near '<excerpt>' (<detail>)", "EJSON".
** Line and column are 1-based, the column counts bytes. 'detail' may be NULL; the end
** of the input and NUL bytes are always mentioned.
*/
static int decode_error(lua_State *L, const char *s, size_t len, size_t pos, const char *what,
                        const char *detail) {
  size_t i, line = 1, ls = 0, a, e, k = 0;
  char ex[48], msg[ERRMSG_SIZE];
  if (pos > len)
    pos = len;
  for (i = 0; i < pos; i++) {
    if (s[i] == '\n') {
      line++;
      ls = i + 1;
    }
  }
  a = (pos - ls > 12) ? pos - 12 : ls;
  while (a < pos && ((unsigned char)s[a] & 0xC0) == 0x80)  /* don't start inside a UTF-8 sequence */
    a++;
  for (e = pos; e < len && e - pos < 16 && s[e] != '\n' && s[e] != '\r'; e++)
    ;
  while (e > pos && e < len && ((unsigned char)s[e] & 0xC0) == 0x80)
    e--;
  for (i = a; i < e && k < sizeof ex - 1; i++) {
    unsigned char c = (unsigned char)s[i];
    ex[k++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  ex[k] = '\0';
  if (detail == NULL && pos >= len)
    detail = "unexpected end of input";
  else if (detail == NULL && s[pos] == '\0')
    detail = "unexpected NUL byte";
  else if (detail == NULL && (unsigned char)s[pos] < 0x20 && !is_ws(s[pos]))
    detail = "unexpected control byte";
  snprintf(msg, sizeof msg, "%s at line %zu, column %zu%s%s%s%s%s%s", what, line, pos - ls + 1,
           k > 0 ? " near '" : "", ex, k > 0 ? "'" : "",
           detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, "EJSON");
  return 3;
}

/* }====================================================== */


/*
** {======================================================
** Module functions
** =======================================================
*/

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
  size_t open_str;
  char what[64] = "malformed JSON";
  jbox *b;
  pusher p;
  check_opts(L, 2, NULL, &depth);
  lua_settop(L, 1);
  bad = prescan(s, len, depth, &why, &open_str);
  b = newbox(L);
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
      return decode_error(L, s, len, bad, what, NULL);
    pos = fix_error_pos(s, len, pos, open_str);
    return decode_error(L, s, len, pos, "malformed JSON", NULL);
  }
  for (pos = (size_t)(end - s); pos < len && is_ws(s[pos]); pos++)
    ;
  if (pos < len) {
    if (bad != SIZE_MAX && pos >= bad)
      return decode_error(L, s, len, bad, what, NULL);
    return decode_error(L, s, len, pos, "malformed JSON", "trailing data");
  }
  memset(&p, 0, sizeof p);
  p.L = L;
  p.limit = depth;
  p.amt = push_marks(L);  /* stack: text, box, array mt, null */
  p.nul = p.amt + 1;
  p.src = s;
  p.len = len;
  p.pos = (len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) ? 3 : 0;  /* cJSON skips a BOM */
  p.synced = 1;
  rc = push_item(&p, b->tree, 0);
  if (rc == PK_RANGE)
    return decode_error(L, s, len, p.errpos, "number out of range", NULL);
  if (rc == PK_DEPTH) {  /* the prescan should have caught it */
    snprintf(what, sizeof what, "nesting deeper than %d levels", depth);
    return decode_error(L, s, len, 0, what, NULL);
  }
  lua_closeslot(L, 2);  /* free the tree now; stack: text, nil, array mt, null, value */
  return 1;
}

/* json.encode(value [, {pretty = bool, depth = N}]) -> string | nil, message, "ENOMEM" */
static int ljson_encode(lua_State *L) {
  int pretty = 0, depth = MW_JSON_DEFAULT_DEPTH, rc;
  char err[ERRMSG_SIZE];
  jbox *b;
  tsink ts;
  luaL_checkany(L, 1);
  check_opts(L, 2, &pretty, &depth);
  lua_settop(L, 1);
  b = newbox(L);
  lua_toclose(L, 2);  /* stack: value, box (text buffer freed on any exit) */
  tsink_init(&ts, b, pretty);
  rc = walk_value(L, 1, &ts.base, depth, err, sizeof err);
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
  ensure_meta(L);
  if (lua_getmetatable(L, 1)) {  /* only our own marks may be replaced */
    int ours;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_array_mt);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_object_mt);
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
  return set_mark(L, &key_array_mt);
}

/* json.object([t]) -> t, marked to encode as a JSON object (also when empty) */
static int ljson_object(lua_State *L) {
  return set_mark(L, &key_object_mt);
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
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_array_mt);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_object_mt);
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

/* }====================================================== */
