#include "lb_config.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_keyref.h"
#include "mw_log.h"
#include "mw_topic.h"

static const char CONFIG_KEY = 'c';

typedef enum { F_STRING, F_INT, F_BOOL, F_TABLE, F_FREE } ftype_t;

typedef struct field {
  const char *name;
  ftype_t type;
  long min, max;              /* F_INT range */
  const struct field *sub;    /* F_TABLE */
} field_t;

static const field_t broker_fields[] = {
    {"host", F_STRING, 0, 0, NULL},     {"port", F_INT, 1, 65535, NULL},
    {"alpn", F_STRING, 0, 0, NULL},     {"keepalive", F_INT, 30, 1200, NULL},
    {"clean_session", F_BOOL, 0, 0, NULL}, {"protocol", F_STRING, 0, 0, NULL}, {NULL, 0, 0, 0, NULL}};
static const field_t tls_fields[] = {
    {"ca", F_STRING, 0, 0, NULL}, {"cert", F_STRING, 0, 0, NULL}, {"key", F_STRING, 0, 0, NULL}, {NULL, 0, 0, 0, NULL}};
static const field_t will_fields[] = {{"topic", F_STRING, 0, 0, NULL},
                                      {"payload", F_STRING, 0, 0, NULL},
                                      {"qos", F_INT, 0, 1, NULL},
                                      {"retain", F_BOOL, 0, 0, NULL},
                                      {NULL, 0, 0, 0, NULL}};
static const field_t reconnect_fields[] = {
    {"base_ms", F_INT, 10, 600000, NULL}, {"cap_ms", F_INT, 100, 86400000, NULL}, {NULL, 0, 0, 0, NULL}};
static const field_t limits_fields[] = {{"max_inflight", F_INT, 1, 65535, NULL},
                                        {"max_payload", F_INT, 1, 128 * 1024, NULL},
                                        {"lua_memory", F_INT, 1 << 20, 1L << 32, NULL},
                                        {NULL, 0, 0, 0, NULL}};
static const field_t se_fields[] = {{"device", F_STRING, 0, 0, NULL},
                                    {"address", F_INT, 0x08, 0x77, NULL},
                                    {"sim", F_STRING, 0, 0, NULL},
                                    {NULL, 0, 0, 0, NULL}};
static const field_t rollback_fields[] = {
    {"errors", F_INT, 1, 1000000, NULL}, {"within_s", F_INT, 1, 86400, NULL}, {NULL, 0, 0, 0, NULL}};
static const field_t lua_fields[] = {{"budget_ms", F_INT, 0, 3600000, NULL},
                                     {"load_budget_ms", F_INT, 0, 3600000, NULL},
                                     {"load_memory", F_INT, 64 * 1024, 1L << 32, NULL},
                                     {"quarantine_after", F_INT, 0, 1000000, NULL},
                                     {"watch", F_BOOL, 0, 0, NULL},
                                     {"debounce_ms", F_INT, 0, 10000, NULL},
                                     {"rollback", F_TABLE, 0, 0, rollback_fields},
                                     {NULL, 0, 0, 0, NULL}};
/* moonwire.shadow (scripts/moonwire/shadow.lua reads these through moonwire.device). */
static const field_t shadow_fields[] = {{"cache", F_STRING, 0, 0, NULL},
                                        {"debounce_ms", F_INT, 0, 60000, NULL},
                                        {"timeout_ms", F_INT, 100, 600000, NULL},
                                        {NULL, 0, 0, 0, NULL}};
static const field_t pkcs11_fields[] = {{"module", F_STRING, 0, 0, NULL}, {NULL, 0, 0, 0, NULL}};
static const field_t log_fields[] = {{"level", F_STRING, 0, 0, NULL}, {NULL, 0, 0, 0, NULL}};
static const field_t repl_fields[] = {
    {"enabled", F_BOOL, 0, 0, NULL}, {"socket", F_STRING, 0, 0, NULL}, {NULL, 0, 0, 0, NULL}};
/* The durable outbox (issue 7): see docs/configuration.md "outbox". */
static const field_t outbox_fields[] = {{"path", F_STRING, 0, 0, NULL},
                                        {"sync", F_STRING, 0, 0, NULL},
                                        {"max_messages", F_INT, 1, 100000000, NULL},
                                        {"max_bytes", F_INT, 1024, 1L << 40, NULL},
                                        {"when_full", F_STRING, 0, 0, NULL},
                                        {"qos0_offline", F_STRING, 0, 0, NULL},
                                        {"qos0_max", F_INT, 1, 1000000, NULL},
                                        {"poison_budget", F_INT, 1, 100, NULL},
                                        {"poison_window_ms", F_INT, 100, 600000, NULL},
                                        {NULL, 0, 0, 0, NULL}};
static const field_t top_fields[] = {
    {"thing", F_STRING, 0, 0, NULL},        {"client_id", F_STRING, 0, 0, NULL},
    {"broker", F_TABLE, 0, 0, broker_fields}, {"tls", F_TABLE, 0, 0, tls_fields},
    {"will", F_TABLE, 0, 0, will_fields},   {"reconnect", F_TABLE, 0, 0, reconnect_fields},
    {"limits", F_TABLE, 0, 0, limits_fields}, {"log", F_TABLE, 0, 0, log_fields},
    {"se", F_TABLE, 0, 0, se_fields},       {"app", F_FREE, 0, 0, NULL},
    {"lua", F_TABLE, 0, 0, lua_fields},
    {"shadow", F_TABLE, 0, 0, shadow_fields},
    {"pkcs11", F_TABLE, 0, 0, pkcs11_fields},
    {"repl", F_TABLE, 0, 0, repl_fields},
    {"outbox", F_TABLE, 0, 0, outbox_fields},
    {NULL, 0, 0, 0, NULL}};

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
} ctx_t;

static int cfail(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(ctx_t *c, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(c->err, c->errlen, "%s: %s", c->path, msg);
  return -1;
}

/* Edit distance, to suggest the key the user probably meant. */
static size_t distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 32 || lb > 32) return 99;
  size_t d[33][33];
  for (size_t i = 0; i <= la; i++) d[i][0] = i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
      d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
  return d[la][lb];
}

static const char *type_word(ftype_t t) {
  switch (t) {
  case F_STRING: return "a string";
  case F_INT: return "an integer";
  case F_BOOL: return "a boolean";
  default: return "a table";
  }
}

/* Checks the table at the top of the stack against fields; prefix is "" or "broker.". */
static int check_table(lua_State *L, ctx_t *c, const field_t *fields, const char *prefix) {
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    char name[256];
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 2);
      return cfail(c, "%skeys must be names, found a %s key", prefix, luaL_typename(L, -2));
    }
    const char *key = lua_tostring(L, -2);
    snprintf(name, sizeof name, "%s%s", prefix, key);
    const field_t *f = NULL;
    for (const field_t *p = fields; p->name; p++)
      if (strcmp(p->name, key) == 0) f = p;
    if (!f) {
      const field_t *best = NULL;
      size_t bestd = 3;
      for (const field_t *p = fields; p->name; p++) {
        size_t dd = distance(p->name, key);
        if (dd < bestd) bestd = dd, best = p;
      }
      char hint[300] = "";
      if (best) snprintf(hint, sizeof hint, " (did you mean '%s%s'?)", prefix, best->name);
      lua_pop(L, 2);
      return cfail(c, "unknown key '%s'%s", name, hint);
    }
    int t = lua_type(L, -1);
    int ok = 0;
    switch (f->type) {
    case F_STRING: ok = t == LUA_TSTRING; break;
    case F_BOOL: ok = t == LUA_TBOOLEAN; break;
    case F_TABLE:
    case F_FREE: ok = t == LUA_TTABLE; break;
    case F_INT: ok = lua_isinteger(L, -1); break;
    }
    if (!ok) {
      char got[64];
      snprintf(got, sizeof got, "%s", luaL_typename(L, -1));
      if (t == LUA_TNUMBER) snprintf(got, sizeof got, "%s", "a non-integer number");
      lua_pop(L, 2);
      return cfail(c, "%s: expected %s, got %s", name, type_word(f->type), got);
    }
    if (f->type == F_INT) {
      lua_Integer v = lua_tointeger(L, -1);
      if (v < f->min || v > f->max) {
        char range[96];
        snprintf(range, sizeof range, "%lld is outside %ld..%ld", (long long)v, f->min, f->max);
        lua_pop(L, 2);
        return cfail(c, "%s: %s", name, range);
      }
    }
    if (f->type == F_TABLE) {
      char sub[300];
      snprintf(sub, sizeof sub, "%s.", name);
      if (check_table(L, c, f->sub, sub) != 0) {
        lua_pop(L, 2);
        return -1;
      }
    }
    lua_pop(L, 1);
  }
  return 0;
}

static char *get_str(lua_State *L, int t, const char *sub, const char *key, size_t *len) {
  char *out = NULL;
  if (sub) {
    if (lua_getfield(L, t, sub) != LUA_TTABLE) {
      lua_pop(L, 1);
      return NULL;
    }
    t = lua_gettop(L);
  }
  if (lua_getfield(L, t, key) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    out = malloc(n + 1);
    if (out) memcpy(out, s, n + 1);
    if (len) *len = n;
  }
  lua_pop(L, sub ? 2 : 1);
  return out;
}

static int get_int(lua_State *L, int t, const char *sub, const char *key, long long *v) {
  int found = 0;
  if (lua_getfield(L, t, sub) == LUA_TTABLE) {
    if (lua_getfield(L, -1, key) == LUA_TNUMBER) {
      *v = lua_tointeger(L, -1);
      found = 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return found;
}

static int get_bool(lua_State *L, int t, const char *sub, const char *key, bool *v) {
  int found = 0;
  if (lua_getfield(L, t, sub) == LUA_TTABLE) {
    if (lua_getfield(L, -1, key) == LUA_TBOOLEAN) {
      *v = lua_toboolean(L, -1);
      found = 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return found;
}

/* AWS IoT thing names: 1-128 of [a-zA-Z0-9:_-]. */
static int valid_thing(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 128) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == ':' ||
          *s == '_' || *s == '-'))
      return 0;
  return 1;
}

/* A string key that must be one of names (NULL-terminated); *out gets its index. */
static int get_choice(lua_State *L, ctx_t *c, int t, const char *sub, const char *key, const char *const *names,
                      int *out) {
  char *v = get_str(L, t, sub, key, NULL);
  if (!v) return 0;
  for (int i = 0; names[i]; i++)
    if (strcmp(v, names[i]) == 0) {
      *out = i;
      free(v);
      return 0;
    }
  char list[200] = "";
  for (int i = 0; names[i]; i++) {
    strncat(list, i ? ", \"" : "\"", sizeof list - strlen(list) - 1);
    strncat(list, names[i], sizeof list - strlen(list) - 1);
    strncat(list, "\"", sizeof list - strlen(list) - 1);
  }
  int r = cfail(c, "%s.%s: '%s' is not one of %s", sub, key, v, list);
  free(v);
  return r;
}

/* The outbox section (issue 7). */
static int extract_outbox(lua_State *L, ctx_t *c, int t, const lb_config_overrides_t *ov, mw_config_t *cfg) {
  static const char *const sync_names[] = {"off", "normal", "full", NULL};
  static const char *const full_names[] = {"refuse", "drop_oldest", NULL};
  static const char *const q0_names[] = {"drop", "queue", NULL};
  long long v;
  cfg->outbox.path = get_str(L, t, "outbox", "path", NULL);
  if (!cfg->outbox.path && ov && ov->outbox_default) cfg->outbox.path = strdup(ov->outbox_default);
  if (cfg->outbox.path && !cfg->outbox.path[0]) return cfail(c, "outbox.path: must not be empty");
  if (get_choice(L, c, t, "outbox", "sync", sync_names, &cfg->outbox.sync) != 0) return -1;
  if (get_choice(L, c, t, "outbox", "when_full", full_names, &cfg->outbox.when_full) != 0) return -1;
  int q0 = cfg->outbox.qos0_queue ? 1 : 0;
  if (get_choice(L, c, t, "outbox", "qos0_offline", q0_names, &q0) != 0) return -1;
  cfg->outbox.qos0_queue = q0 == 1;
  if (get_int(L, t, "outbox", "max_messages", &v)) cfg->outbox.max_messages = v;
  if (get_int(L, t, "outbox", "max_bytes", &v)) cfg->outbox.max_bytes = v;
  if (get_int(L, t, "outbox", "qos0_max", &v)) cfg->outbox.qos0_max = (int)v;
  if (get_int(L, t, "outbox", "poison_budget", &v)) cfg->outbox.poison_budget = (int)v;
  if (get_int(L, t, "outbox", "poison_window_ms", &v)) cfg->outbox.poison_window_ms = (int)v;
  return 0;
}

/* The lua section: budgets and reloading (types and ranges are already checked). */
static int extract_lua(lua_State *L, ctx_t *c, int t, mw_config_t *cfg) {
  long long v;
  if (get_int(L, t, "lua", "budget_ms", &v)) cfg->lua.budget_ms = (uint32_t)v;
  if (get_int(L, t, "lua", "load_budget_ms", &v)) cfg->lua.load_budget_ms = (uint32_t)v;
  if (get_int(L, t, "lua", "load_memory", &v)) cfg->lua.load_memory = (size_t)v;
  if (get_int(L, t, "lua", "quarantine_after", &v)) cfg->lua.quarantine_after = (int)v;
  if (get_int(L, t, "lua", "debounce_ms", &v)) cfg->lua.debounce_ms = (uint32_t)v;
  get_bool(L, t, "lua", "watch", &cfg->lua.watch);
  int found = 0;
  if (lua_getfield(L, t, "lua") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "rollback") == LUA_TTABLE) {
      found = 1;
      if (lua_getfield(L, -1, "errors") == LUA_TNUMBER) cfg->lua.rollback_errors = (int)lua_tointeger(L, -1);
      if (lua_getfield(L, -2, "within_s") == LUA_TNUMBER) cfg->lua.rollback_within_s = (uint32_t)lua_tointeger(L, -1);
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (found && (!cfg->lua.rollback_errors || !cfg->lua.rollback_within_s))
    return cfail(c, "lua.rollback needs both 'errors' and 'within_s' (or leave it out: no automatic rollback)");
  if (cfg->lua.load_memory && cfg->limits.lua_memory && cfg->lua.load_memory > cfg->limits.lua_memory)
    return cfail(c, "lua.load_memory (%zu) is larger than limits.lua_memory (%zu)", cfg->lua.load_memory,
                 cfg->limits.lua_memory);
  return 0;
}

/* Fills cfg from the checked table at index t, then validates values across fields. */
static int extract(lua_State *L, ctx_t *c, int t, const lb_config_overrides_t *ov, mw_config_t *cfg) {
  long long v;
  cfg->thing = get_str(L, t, NULL, "thing", NULL);
  cfg->client_id = get_str(L, t, NULL, "client_id", NULL);
  cfg->broker.host = get_str(L, t, "broker", "host", NULL);
  cfg->broker.alpn = get_str(L, t, "broker", "alpn", NULL);
  if (get_int(L, t, "broker", "port", &v)) cfg->broker.port = (int)v;
  if (get_int(L, t, "broker", "keepalive", &v)) cfg->broker.keepalive = (int)v;
  get_bool(L, t, "broker", "clean_session", &cfg->broker.clean_session);
  cfg->tls.ca = get_str(L, t, "tls", "ca", NULL);
  cfg->tls.cert = get_str(L, t, "tls", "cert", NULL);
  cfg->tls.key = get_str(L, t, "tls", "key", NULL);
  cfg->will.topic = get_str(L, t, "will", "topic", NULL);
  cfg->will.payload = get_str(L, t, "will", "payload", &cfg->will.payload_len);
  if (get_int(L, t, "will", "qos", &v)) cfg->will.qos = (int)v;
  get_bool(L, t, "will", "retain", &cfg->will.retain);
  if (get_int(L, t, "reconnect", "base_ms", &v)) cfg->reconnect.base_ms = (uint32_t)v;
  if (get_int(L, t, "reconnect", "cap_ms", &v)) cfg->reconnect.cap_ms = (uint32_t)v;
  if (get_int(L, t, "limits", "max_inflight", &v)) cfg->limits.max_inflight = (int)v;
  if (get_int(L, t, "limits", "max_payload", &v)) cfg->limits.max_payload = (size_t)v;
  if (get_int(L, t, "limits", "lua_memory", &v)) cfg->limits.lua_memory = (size_t)v;
  cfg->log_level = get_str(L, t, "log", "level", NULL);
  cfg->se.device = get_str(L, t, "se", "device", NULL);
  cfg->se.sim = get_str(L, t, "se", "sim", NULL);
  if (get_int(L, t, "se", "address", &v)) cfg->se.address = (int)v;
  cfg->pkcs11.module = get_str(L, t, "pkcs11", "module", NULL);
  get_bool(L, t, "repl", "enabled", &cfg->repl.enabled);
  cfg->repl.socket = get_str(L, t, "repl", "socket", NULL);

  if (extract_lua(L, c, t, cfg) != 0) return -1;

  if (extract_outbox(L, c, t, ov, cfg) != 0) return -1;
  {
    char *proto = get_str(L, t, "broker", "protocol", NULL);
    int bad = 0;
    if (proto && (!strcmp(proto, "5") || !strcmp(proto, "5.0"))) cfg->broker.protocol = 5;
    else if (proto && (!strcmp(proto, "3.1.1") || !strcmp(proto, "4"))) cfg->broker.protocol = 4;
    else if (proto) bad = 1;
    if (bad) {
      int r = cfail(c, "broker.protocol: '%s' is not \"3.1.1\" or \"5\"", proto);
      free(proto);
      return r;
    }
    free(proto);
  }

  if (ov && ov->thing) {
    free(cfg->thing);
    cfg->thing = strdup(ov->thing);
  }
  if (ov && ov->broker && !mw_config_set_broker(cfg, ov->broker))
    return cfail(c, "--broker %s: expected HOST:PORT", ov->broker);
  if (!cfg->thing) return cfail(c, "'thing' is required (or give --thing NAME)");
  if (!valid_thing(cfg->thing))
    return cfail(c, "thing: '%s' is not a valid AWS IoT thing name (1-128 of a-z A-Z 0-9 : _ -)", cfg->thing);
  if (!cfg->client_id || (ov && ov->thing)) {
    free(cfg->client_id);
    cfg->client_id = strdup(cfg->thing);
  }
  if (strlen(cfg->client_id) > 128) return cfail(c, "client_id: longer than AWS IoT's 128 bytes");
  if (!cfg->broker.host) return cfail(c, "broker.host is required");
  if (!cfg->tls.ca) return cfail(c, "tls.ca is required");
  if (!cfg->tls.cert) return cfail(c, "tls.cert is required");
  if (!cfg->tls.key) return cfail(c, "tls.key is required");
  mw_keyref_t ref;
  char why[300];
  if (mw_keyref_parse(cfg->tls.key, &ref, why, sizeof why) != MW_OK) return cfail(c, "tls.key: %s", why);
  if (cfg->se.device && cfg->se.sim) return cfail(c, "se: give either se.device or se.sim, not both");
  if (ref.kind == MW_KEY_TRUSTM && !cfg->se.device && !cfg->se.sim)
    return cfail(c, "tls.key '%s' is in an OPTIGA Trust M: configure se.device (e.g. \"/dev/i2c-1\") or se.sim",
                 cfg->tls.key);
  if (cfg->will.topic) {
    if (mw_topic_check_name(cfg->will.topic, strlen(cfg->will.topic), why, sizeof why) != MW_OK)
      return cfail(c, "will.topic: %s", why);
    if (!cfg->will.payload) cfg->will.payload = strdup("");
  } else if (cfg->will.payload) {
    return cfail(c, "will.payload given without will.topic");
  }
  if (cfg->reconnect.cap_ms < cfg->reconnect.base_ms)
    return cfail(c, "reconnect.cap_ms must not be smaller than reconnect.base_ms");
  char *cache = get_str(L, t, "shadow", "cache", NULL);
  int empty_cache = cache && !*cache;
  free(cache);
  if (empty_cache) return cfail(c, "shadow.cache: empty path (leave it out for the default)");
  if (cfg->repl.socket && (cfg->repl.socket[0] != '/' || strlen(cfg->repl.socket) >= 108))
    return cfail(c, "repl.socket: '%s' must be an absolute path shorter than 108 bytes", cfg->repl.socket);
  if (cfg->log_level && mw_log_level_parse(cfg->log_level) < 0)
    return cfail(c, "log.level: '%s' is not one of debug, info, warn, error", cfg->log_level);
  return 0;
}

/* The configuration chunk gets a small environment: it computes values, it does not act. */
static void push_env(lua_State *L) {
  static const char *const keep[] = {"assert", "error", "ipairs", "pairs", "select", "tonumber", "tostring",
                                     "type", "string", "math", "table", "utf8", NULL};
  lua_newtable(L);
  for (int i = 0; keep[i]; i++) {
    lua_getglobal(L, keep[i]);
    lua_setfield(L, -2, keep[i]);
  }
  lua_newtable(L); /* os: only getenv */
  lua_getglobal(L, "os");
  lua_getfield(L, -1, "getenv");
  lua_setfield(L, -3, "getenv");
  lua_pop(L, 1);
  lua_setfield(L, -2, "os");
}

/* A configuration computes a table; anything running this long is a mistake. */
#define CONFIG_INSTRUCTION_LIMIT 10000000
static void config_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "configuration did not finish within %d million instructions", CONFIG_INSTRUCTION_LIMIT / 1000000);
}

int lb_config_load_text(lua_State *L, const char *path, const char *text, size_t len,
                        const lb_config_overrides_t *ov, mw_config_t *cfg, char *err, size_t errlen) {
  ctx_t c = {path, err, errlen};
  int top = lua_gettop(L);
  char chunkname[512];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  mw_config_defaults(cfg);
  cfg->path = strdup(path);
  if (luaL_loadbufferx(L, text, len, chunkname, "t") != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return -1;
  }
  push_env(L);
  lua_setupvalue(L, -2, 1);
  /* The state's own hook (the budget) comes back afterwards. */
  lua_Hook prev_hook = lua_gethook(L);
  int prev_mask = lua_gethookmask(L), prev_count = lua_gethookcount(L);
  lua_sethook(L, config_hook, LUA_MASKCOUNT, CONFIG_INSTRUCTION_LIMIT);
  int st = lua_pcall(L, 0, 1, 0);
  lua_sethook(L, prev_hook, prev_mask, prev_count);
  if (st != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in configuration");
    lua_settop(L, top);
    return -1;
  }
  if (!lua_istable(L, -1)) {
    snprintf(err, errlen, "%s: must return a table, returned %s", path, luaL_typename(L, -1));
    lua_settop(L, top);
    return -1;
  }
  int t = lua_gettop(L);
  if (check_table(L, &c, top_fields, "") != 0 || extract(L, &c, t, ov, cfg) != 0) {
    lua_settop(L, top);
    return -1;
  }
  lua_pushvalue(L, t);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY);
  lua_settop(L, top);
  return 0;
}

int lb_config_load(lua_State *L, const char *path, const lb_config_overrides_t *ov, mw_config_t *cfg, char *err,
                   size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    mw_config_defaults(cfg);
    snprintf(err, errlen, "cannot open configuration %s: %s", path, strerror(errno));
    return -1;
  }
  char *text = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      if (cap >= (1u << 20)) {
        free(text);
        fclose(f);
        mw_config_defaults(cfg);
        snprintf(err, errlen, "%s: larger than 1 MiB, not a configuration file", path);
        return -1;
      }
      cap = cap ? cap * 2 : 4096;
      char *n = realloc(text, cap);
      if (!n) {
        free(text);
        fclose(f);
        mw_config_defaults(cfg);
        snprintf(err, errlen, "out of memory");
        return -1;
      }
      text = n;
    }
    size_t got = fread(text + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  fclose(f);
  int rc = lb_config_load_text(L, path, text, len, ov, cfg, err, errlen);
  free(text);
  return rc;
}

void lb_config_push(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY); }
