/*
** The tree sink of the encoder: mw_json_from_lua, a new cJSON tree for C callers (MQTT
** payloads, shadow documents). The partial tree is deleted when the walk fails; cJSON
** strings are C strings, so strings and keys with a NUL byte are refused.
*/
#include <string.h>

#include "lb_json_int.h"

typedef struct csink {
  mw_json_sink_t base;
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

static int c_null(mw_json_sink_t *s) {
  return c_add((csink *)s, cJSON_CreateNull());
}

static int c_boolean(mw_json_sink_t *s, int v) {
  return c_add((csink *)s, cJSON_CreateBool(v));
}

static int c_integer(mw_json_sink_t *s, lua_Integer i) {
  return c_add((csink *)s, cJSON_CreateNumber((double)i));
}

static int c_number(mw_json_sink_t *s, double d) {
  return c_add((csink *)s, cJSON_CreateNumber(d));
}

static int c_string(mw_json_sink_t *s, const char *p, size_t n) {
  if (memchr(p, '\0', n) != NULL)
    return SK_NUL;
  return c_add((csink *)s, cJSON_CreateString(p));
}

static int c_begin(mw_json_sink_t *s, int is_object, size_t n) {
  csink *c = (csink *)s;
  cJSON *item = is_object ? cJSON_CreateObject() : cJSON_CreateArray();
  int rc = c_add(c, item);
  (void)n;
  if (rc == SK_OK)
    c->open[c->nopen++] = item;  /* the walker's limit keeps nopen <= MW_JSON_DEFAULT_DEPTH */
  return rc;
}

static int c_item(mw_json_sink_t *s, size_t i) {
  (void)s;
  (void)i;
  return SK_OK;
}

static int c_key(mw_json_sink_t *s, const char *p, size_t n) {
  if (memchr(p, '\0', n) != NULL)
    return SK_NUL;
  ((csink *)s)->key = p;  /* a Lua string on the walker's stack: lives until the member is added */
  return SK_OK;
}

static int c_end(mw_json_sink_t *s, int is_object, size_t n) {
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
  if (mw_json_walk(L, idx, &c.base, MW_JSON_DEFAULT_DEPTH, err, errlen) != JK_OK) {
    cJSON_Delete(c.root);
    return NULL;
  }
  return c.root;
}
