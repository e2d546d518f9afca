/*
** Decoder: cJSON tree -> Lua values, for json.decode and mw_json_push.
**
** json.decode reads the source text alongside the tree (a cursor over the tokens, in
** the same document order in which cJSON built the tree) for what cJSON cannot keep:
** integers beyond 2^53 (exact as Lua integers) and strings with \u0000 (cJSON stores
** C strings). If the cursor ever disagrees with the tree it is dropped, and cJSON's
** values are used as they are.
*/
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "lb_json_int.h"

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

/*
** Moves the cursor over the next value token (or '[' / '{') and returns its start.
** Separators (',' ':' ']' '}') and whitespace before it are skipped. cJSON has already
** accepted the text, so this only has to find token ends.
*/
static size_t cur_next(pusher *p) {
  const char *s = p->src;
  size_t i = p->pos, n = p->len, start;
  while (i < n && (mw_json_is_ws(s[i]) || s[i] == ',' || s[i] == ':' || s[i] == ']' || s[i] == '}'))
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
  mw_json_ensure_meta(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_array_mt);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mw_json_key_null);
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

int mw_json_push_source(lua_State *L, const cJSON *tree, int limit, const char *src, size_t len,
                        size_t *errpos) {
  pusher p;
  int rc;
  memset(&p, 0, sizeof p);
  p.L = L;
  p.limit = limit;
  p.amt = push_marks(L);  /* stack: ..., array mt, null */
  p.nul = p.amt + 1;
  p.src = src;
  p.len = len;
  p.pos = (len >= 3 && memcmp(src, "\xEF\xBB\xBF", 3) == 0) ? 3 : 0;  /* cJSON skips a BOM */
  p.synced = 1;
  rc = push_item(&p, tree, 0);
  *errpos = p.errpos;
  return rc;
}
