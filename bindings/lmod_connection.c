/*
** moonwire.connection: an MQTT connection of its own, with an identity of its own, next to
** the runtime's (moonwire.mqtt). Provisioning talks as the claim identity on one and proves a
** new identity on another before anything is switched.
**
** Every event goes to one Lua function, from the loop, through lb_pcall. The libuv and
** libmosquitto state lives outside the Lua heap and is freed from a zero-delay timer, never
** inside a libmosquitto callback (a script may close the connection from its event handler).
** While it is connecting or connected, a connection holds a registry self-ref, so dropping
** the handle does not drop the connection; :close() or collection ends it.
*/
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "lb_pki.h"
#include "mw_keyref.h"
#include "mw_log.h"
#include "mw_mqtt.h"
#include "mw_tls.h"
#include "mw_topic.h"

#define MT_CONN "moonwire.connection"

typedef struct {
  mw_mqtt_t *mqtt;
  mw_tls_ctx_t *tls;
  uv_timer_t reaper;
  lua_State *L; /* the main state */
  int fn_ref, self_ref;
  bool dead;    /* the Lua side is closed: events are dropped */
  bool stopped;
} conn_t;

typedef struct {
  conn_t *c; /* NULL once closed */
} lconn_t;

static void conn_freed(uv_handle_t *h) { free(h->data); }

static void reap(uv_timer_t *t) {
  conn_t *c = t->data;
  mw_mqtt_free(c->mqtt);
  mw_tls_ctx_free(c->tls);
  uv_close((uv_handle_t *)&c->reaper, conn_freed);
}

static const char *const ev_names[] = {
    [MW_MQTT_EV_CONNECT] = "connect", [MW_MQTT_EV_CONNECT_FAILED] = "connect_failed",
    [MW_MQTT_EV_DISCONNECT] = "disconnect", [MW_MQTT_EV_MESSAGE] = "message", [MW_MQTT_EV_PUBACK] = "puback",
    [MW_MQTT_EV_SUBACK] = "suback", [MW_MQTT_EV_STOPPED] = "stopped", [MW_MQTT_EV_INFLIGHT_LOST] = "inflight_lost",
};

/* Runs protected: builds the event table and calls the handler (stack: fn, ev*, conn*). */
static int deliver(lua_State *L) {
  const mw_mqtt_event_t *ev = lua_touserdata(L, 2);
  lua_settop(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, ev_names[ev->type]);
  lua_setfield(L, -2, "type");
  switch (ev->type) {
  case MW_MQTT_EV_CONNECT:
    lua_pushboolean(L, ev->session_present);
    lua_setfield(L, -2, "session_present");
    break;
  case MW_MQTT_EV_CONNECT_FAILED:
  case MW_MQTT_EV_DISCONNECT:
    lua_pushstring(L, ev->reason ? ev->reason : "");
    lua_setfield(L, -2, "reason");
    lua_pushinteger(L, ev->rc);
    lua_setfield(L, -2, "rc");
    break;
  case MW_MQTT_EV_MESSAGE:
    lua_pushstring(L, ev->topic);
    lua_setfield(L, -2, "topic");
    lua_pushlstring(L, ev->payload, ev->payloadlen);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, ev->qos);
    lua_setfield(L, -2, "qos");
    lua_pushboolean(L, ev->retain);
    lua_setfield(L, -2, "retain");
    break;
  case MW_MQTT_EV_SUBACK:
    lua_pushstring(L, ev->topic);
    lua_setfield(L, -2, "filter");
    lua_pushinteger(L, ev->granted_count > 0 ? ev->granted[0] : 0x80);
    lua_setfield(L, -2, "granted");
    break;
  case MW_MQTT_EV_PUBACK:
    lua_pushinteger(L, ev->mid);
    lua_setfield(L, -2, "mid");
    break;
  default: break;
  }
  lua_call(L, 1, 0);
  return 0;
}

static void on_event(void *ud, const mw_mqtt_event_t *ev) {
  conn_t *c = ud;
  if (ev->type == MW_MQTT_EV_STOPPED) c->stopped = true;
  if (c->dead || (unsigned)ev->type >= sizeof ev_names / sizeof ev_names[0] || !ev_names[ev->type]) return;
  lua_State *L = c->L;
  if (!lua_checkstack(L, 8)) return;
  lua_pushcfunction(L, deliver);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_ref);
  lua_pushlightuserdata(L, (void *)ev);
  lb_pcall(L, 2, 0, "connection event handler for", ev_names[ev->type]);
  /* Nothing delivers events after STOPPED: the handle may be dropped now. */
  if (ev->type == MW_MQTT_EV_STOPPED && !c->dead) lb_unref(L, &c->self_ref);
}

/* Ends the Lua side; the C side goes once libmosquitto has let go of it. Idempotent. */
static void conn_close(lua_State *L, lconn_t *u) {
  conn_t *c = u->c;
  if (!c) return;
  u->c = NULL;
  c->dead = true;
  lb_unref(L, &c->fn_ref);
  lb_unref(L, &c->self_ref);
  if (!c->stopped) mw_mqtt_stop(c->mqtt);
  uv_timer_start(&c->reaper, reap, 0, 0);
}

static lconn_t *check(lua_State *L) { return luaL_checkudata(L, 1, MT_CONN); }

static conn_t *check_open(lua_State *L) {
  lconn_t *u = check(L);
  if (!u->c) luaL_error(L, "the connection is closed");
  return u->c;
}

static const char *field_str(lua_State *L, int t, const char *k, int required) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (required) luaL_error(L, "connection option '%s' is required", k);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "connection option '%s' must be a string", k);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* still referenced by the options table */
  return s;
}

static lua_Integer field_int(lua_State *L, int t, const char *k, lua_Integer def, lua_Integer lo, lua_Integer hi) {
  lua_getfield(L, t, k);
  lua_Integer v = def;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < lo || v > hi) luaL_error(L, "connection option '%s' must be an integer %d..%d", k, (int)lo, (int)hi);
  }
  lua_pop(L, 1);
  return v;
}

/*
** connection.open({host, port, client_id, ca, cert, key [, alpn, keepalive, clean_session]}, fn)
** -> connection | nil, message, code. Starts connecting at once (retrying with backoff until
** :stop() or :close()).
*/
static int lconn_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  const char *host = field_str(L, 1, "host", 1), *client_id = field_str(L, 1, "client_id", 1);
  const char *ca = field_str(L, 1, "ca", 1), *cert = field_str(L, 1, "cert", 1), *key = field_str(L, 1, "key", 1);
  const char *alpn = field_str(L, 1, "alpn", 0);
  lua_Integer port = field_int(L, 1, "port", 8883, 1, 65535);
  lua_Integer keepalive = field_int(L, 1, "keepalive", 60, 30, 1200);
  lua_getfield(L, 1, "clean_session");
  bool clean = lua_isnil(L, -1) ? true : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (strlen(client_id) == 0 || strlen(client_id) > 128) return luaL_error(L, "client_id must be 1..128 bytes");
  mw_keyref_t ref;
  char err[1024];
  if (mw_keyref_parse(key, &ref, err, sizeof err) != MW_OK) return luaL_error(L, "key: %s", err);
  mw_rt_t *rt = lb_rt(L);
  /* A chip key needs the chip open (and lent to the TLS layer) before the context is built. */
  if (ref.kind == MW_KEY_TRUSTM && !lb_pki_chip(L, err, sizeof err)) return lb_fail_status(L, MW_ERR_DEVICE, err);
  lconn_t *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->c = NULL;
  luaL_setmetatable(L, MT_CONN);
  /* Everything that can raise is done; acquire. */
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return lb_fail_status(L, MW_ERR_NOMEM, NULL);
  c->L = rt->L;
  c->fn_ref = c->self_ref = LUA_NOREF;
  mw_tls_config_t tc = {ca, cert, key, alpn, host};
  mw_status_t st = mw_tls_ctx_new(&tc, &c->tls, err, sizeof err);
  if (st == MW_OK) {
    mw_mqtt_config_t mc = {0};
    mc.host = host;
    mc.port = (int)port;
    mc.client_id = client_id;
    mc.keepalive = (int)keepalive;
    mc.clean_session = clean;
    mc.tls = c->tls;
    st = mw_mqtt_new(rt->loop, &mc, on_event, c, &c->mqtt, err, sizeof err);
  }
  if (st != MW_OK) {
    mw_tls_ctx_free(c->tls);
    free(c);
    return lb_fail_status(L, st, err);
  }
  uv_timer_init(rt->loop, &c->reaper);
  c->reaper.data = c;
  u->c = c;
  /* From here the userdata owns c; lb_ref may raise (memory) and __gc then cleans up. */
  lua_pushvalue(L, 2);
  c->fn_ref = lb_ref(L);
  lua_pushvalue(L, -1);
  c->self_ref = lb_ref(L);
  mw_mqtt_start(c->mqtt);
  return 1;
}

/* conn:subscribe(filter [, qos]) -> true | nil, message, code */
static int lconn_subscribe(lua_State *L) {
  conn_t *c = check_open(L);
  size_t len;
  const char *filter = luaL_checklstring(L, 2, &len);
  lua_Integer qos = luaL_optinteger(L, 3, 1);
  luaL_argcheck(L, qos == 0 || qos == 1, 3, "qos must be 0 or 1");
  char why[160];
  if (mw_topic_check_filter(filter, len, why, sizeof why) != MW_OK)
    return luaL_error(L, "invalid topic filter '%s': %s", filter, why);
  mw_status_t st = mw_mqtt_subscribe(c->mqtt, filter, (int)qos, NULL);
  if (st != MW_OK) return lb_fail_status(L, st, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:unsubscribe(filter) -> true | nil, message, code */
static int lconn_unsubscribe(lua_State *L) {
  conn_t *c = check_open(L);
  const char *filter = luaL_checkstring(L, 2);
  mw_status_t st = mw_mqtt_unsubscribe(c->mqtt, filter);
  if (st != MW_OK) return lb_fail_status(L, st, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:publish(topic, payload [, qos]) -> mid | nil, message, code */
static int lconn_publish(lua_State *L) {
  conn_t *c = check_open(L);
  size_t tl, pl;
  const char *topic = luaL_checklstring(L, 2, &tl);
  const char *payload = luaL_checklstring(L, 3, &pl);
  lua_Integer qos = luaL_optinteger(L, 4, 1);
  luaL_argcheck(L, qos == 0 || qos == 1, 4, "qos must be 0 or 1");
  char why[256];
  if (mw_topic_check_name(topic, tl, why, sizeof why) != MW_OK)
    return luaL_error(L, "invalid topic '%s': %s", topic, why);
  int mid = 0;
  mw_status_t st = mw_mqtt_publish(c->mqtt, topic, payload, pl, (int)qos, false, &mid, why, sizeof why);
  if (st != MW_OK) return lb_fail_status(L, st, why);
  lua_pushinteger(L, mid);
  return 1;
}

/* conn:connected() -> boolean */
static int lconn_connected(lua_State *L) {
  lconn_t *u = check(L);
  lua_pushboolean(L, u->c && mw_mqtt_connected(u->c->mqtt));
  return 1;
}

/* conn:stop(): DISCONNECT (if connected) and no more reconnects; "stopped" follows. */
static int lconn_stop(lua_State *L) {
  conn_t *c = check_open(L);
  if (!c->stopped) mw_mqtt_stop(c->mqtt);
  return 0;
}

/* conn:close(): ends it now (idempotent); no events are delivered after. */
static int lconn_close(lua_State *L) {
  conn_close(L, check(L));
  return 0;
}

static int lconn_tostring(lua_State *L) {
  lconn_t *u = check(L);
  lua_pushfstring(L, "moonwire.connection (%s)",
                  !u->c ? "closed" : mw_mqtt_connected(u->c->mqtt) ? "connected" : u->c->stopped ? "stopped" : "connecting");
  return 1;
}

int luaopen_moonwire_connection(lua_State *L) {
  static const luaL_Reg meth[] = {{"subscribe", lconn_subscribe}, {"unsubscribe", lconn_unsubscribe},
                                  {"publish", lconn_publish},     {"connected", lconn_connected},
                                  {"stop", lconn_stop},           {"close", lconn_close},
                                  {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", lconn_close}, {"__close", lconn_close}, {"__tostring", lconn_tostring},
                                  {NULL, NULL}};
  if (luaL_newmetatable(L, MT_CONN)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lconn_open);
  lua_setfield(L, -2, "open");
  return 1;
}
