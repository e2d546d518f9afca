/*
** moonwire.mqtt: per-filter handlers, publish with optional PUBACK callbacks, and
** connection events.
**
** Every handler is a registry ref owned by a subscription or listener userdata; an
** active one also holds a self-ref, so a script may drop its handle and keep the
** subscription. Handlers run only from lb_mqtt_dispatch, which the loop calls after
** libmosquitto has returned (see runtime/mw_mqtt.h), and always through lb_pcall.
*/
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "mw_log.h"
#include "mw_topic.h"

struct lb_sub {
  lb_sub_t *next, *prev;
  char *filter; /* NULL once unsubscribed */
  int qos;
  int fn_ref, self_ref;
  int granted; /* -1 until SUBACK; 0/1, or 0x80 when refused */
  uint64_t messages, errors;
  uint32_t owner;  /* app version (load id) that subscribed */
  int broker;      /* holds a reference in the runtime's broker subscription set */
  int stops;       /* budget stops of its handler */
  int quarantined; /* stopped too often: no longer called or subscribed, still listed */
  int retired;     /* ended because its version was replaced (not unsubscribed) */
};

typedef enum { EV_CONNECT, EV_DISCONNECT, EV_CONNECT_FAILED, EV_COUNT } listener_ev_t;
static const char *const ev_names[] = {"connect", "disconnect", "connect_failed", NULL};

struct lb_listener {
  lb_listener_t *next, *prev;
  listener_ev_t ev;
  int fn_ref, self_ref;
  int active;
  uint32_t owner;
  int stops;
  int retired;
};

/* ------------------------------------------------------------ helpers */

static int opt_field(lua_State *L, int idx, const char *name, int type) {
  if (lua_isnoneornil(L, idx)) return LUA_TNIL;
  int t = lua_getfield(L, idx, name);
  if (t != LUA_TNIL && t != type) {
    lua_pop(L, 1);
    return luaL_error(L, "option '%s' must be a %s", name, lua_typename(L, type));
  }
  if (t == LUA_TNIL) lua_pop(L, 1);
  return t;
}

/* Reads {qos = 0|1}; raises for anything else (QoS 2 included: AWS IoT has none). */
static int opt_qos(lua_State *L, int idx) {
  if (opt_field(L, idx, "qos", LUA_TNUMBER) == LUA_TNIL) return 0;
  int isint;
  lua_Integer q = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (!isint || q < 0 || q > 2) luaL_error(L, "qos must be 0 or 1");
  if (q == 2) luaL_error(L, "QoS 2 is not supported: AWS IoT Core has QoS 0 and 1 only");
  return (int)q;
}

/* ------------------------------------------------------------ subscriptions */

static void sub_unlink(mw_rt_t *rt, lb_sub_t *s) {
  if (s->prev) s->prev->next = s->next;
  else if (rt->subs == s) rt->subs = s->next;
  if (s->next) s->next->prev = s->prev;
  s->next = s->prev = NULL;
}

/* Gives back the broker reference; the last handler on a filter unsubscribes at the broker. */
static void sub_drop_broker(mw_rt_t *rt, lb_sub_t *s) {
  if (!s->broker) return;
  s->broker = 0;
  if (rt->mqtt) mw_mqtt_unsubscribe(rt->mqtt, s->filter);
}

/* Ends a subscription; idempotent. */
static void sub_close(lua_State *L, lb_sub_t *s) {
  if (!s->filter) return;
  mw_rt_t *rt = lb_rt(L);
  sub_unlink(rt, s);
  sub_drop_broker(rt, s);
  free(s->filter);
  s->filter = NULL;
  lb_unref(L, &s->fn_ref);
  lb_unref(L, &s->self_ref);
}

/* Stops calling a handler the budget keeps stopping; it stays listed until its version ends. */
static void sub_quarantine(mw_rt_t *rt, lb_sub_t *s) {
  s->quarantined = 1;
  rt->quarantined++;
  sub_drop_broker(rt, s);
  lb_unref(rt->L, &s->fn_ref);
  MW_LOGE("lua", "handler for '%s' quarantined: stopped %d times by the budget (lua.quarantine_after); "
                 "unsubscribed until the app is reloaded",
          s->filter, s->stops);
}

static void listener_close(lua_State *L, lb_listener_t *l);

static bool filter_held_by_other(mw_rt_t *rt, const lb_sub_t *s) {
  for (lb_sub_t *o = rt->subs; o; o = o->next)
    if (o != s && o->broker && strcmp(o->filter, s->filter) == 0) return true;
  return false;
}

/* mqtt.subscribe(filter, handler [, {qos = 0|1}]) -> subscription */
static int lmqtt_subscribe(lua_State *L) {
  size_t len;
  const char *filter = luaL_checklstring(L, 1, &len);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  char why[160];
  if (mw_topic_check_filter(filter, len, why, sizeof why) != MW_OK)
    return luaL_error(L, "invalid topic filter '%s': %s", filter, why);
  int qos = opt_qos(L, 3);
  uint32_t owner = lb_owner_for_new(L);
  mw_rt_t *rt = lb_rt(L);
  lb_sub_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->fn_ref = s->self_ref = LUA_NOREF;
  s->granted = -1;
  s->owner = owner;
  luaL_setmetatable(L, LB_MT_SUB);
  s->filter = strdup(filter);
  if (!s->filter) return luaL_error(L, "out of memory");
  s->qos = qos;
  lua_pushvalue(L, 2);
  s->fn_ref = lb_ref(L);
  lua_pushvalue(L, -1);
  s->self_ref = lb_ref(L);
  /* Append, so handlers run in the order they were registered. */
  lb_sub_t **pp = &rt->subs, *prev = NULL;
  while (*pp) prev = *pp, pp = &(*pp)->next;
  *pp = s;
  s->prev = prev;
  /* A version being loaded by a reload subscribes at the broker only when it goes live. */
  if (lb_owner_live(rt, owner) && rt->mqtt) {
    if (mw_mqtt_subscribe(rt->mqtt, filter, qos, NULL) != MW_OK) {
      sub_close(L, s);
      return luaL_error(L, "out of memory");
    }
    s->broker = 1;
  }
  return 1;
}

void lb_mqtt_activate(mw_rt_t *rt, uint32_t owner, int *added) {
  /* New references first: a filter both versions use never drops to zero, so the broker
     sees no UNSUBSCRIBE/SUBSCRIBE for it. */
  for (lb_sub_t *s = rt->subs; s; s = s->next) {
    if (s->owner != owner || s->broker || s->quarantined || !rt->mqtt) continue;
    if (added && !filter_held_by_other(rt, s)) (*added)++;
    if (mw_mqtt_subscribe(rt->mqtt, s->filter, s->qos, NULL) == MW_OK) s->broker = 1;
    else MW_LOGE("mqtt", "out of memory: cannot subscribe '%s'", s->filter);
  }
}

void lb_mqtt_release(mw_rt_t *rt, uint32_t owner, int *removed) {
  lua_State *L = rt->L;
  for (lb_sub_t *s = rt->subs, *next; s; s = next) {
    next = s->next;
    if (s->owner != owner) continue;
    if (removed && s->broker && !filter_held_by_other(rt, s)) {
      /* Count each filter once, at its last holder. */
      bool later = false;
      for (lb_sub_t *o = next; o; o = o->next)
        if (o->owner == owner && o->broker && strcmp(o->filter, s->filter) == 0) later = true;
      if (!later) (*removed)++;
    }
    if (!s->quarantined) s->retired = 1;
    sub_close(L, s);
  }
  for (lb_listener_t *l = rt->listeners, *next; l; l = next) {
    next = l->next;
    if (l->owner != owner) continue;
    l->retired = 1;
    listener_close(L, l);
  }
}

static lb_sub_t *check_sub(lua_State *L) { return luaL_checkudata(L, 1, LB_MT_SUB); }

/* sub:unsubscribe() -> true if it was active */
static int lsub_unsubscribe(lua_State *L) {
  lb_sub_t *s = check_sub(L);
  lua_pushboolean(L, s->filter != NULL);
  sub_close(L, s);
  return 1;
}

/* sub:info() -> {filter, qos, active, messages, errors, quarantined, granted, version} */
static int lsub_info(lua_State *L) {
  lb_sub_t *s = check_sub(L);
  lua_createtable(L, 0, 8);
  if (s->filter) {
    lua_pushstring(L, s->filter);
    lua_setfield(L, -2, "filter");
  }
  lua_pushinteger(L, s->qos);
  lua_setfield(L, -2, "qos");
  lua_pushboolean(L, s->filter != NULL && !s->quarantined);
  lua_setfield(L, -2, "active");
  lua_pushinteger(L, (lua_Integer)s->messages);
  lua_setfield(L, -2, "messages");
  lua_pushinteger(L, (lua_Integer)s->errors);
  lua_setfield(L, -2, "errors");
  lua_pushboolean(L, s->quarantined);
  lua_setfield(L, -2, "quarantined");
  uint32_t version = lb_app_version_of(lb_rt(L), s->owner);
  if (version) {
    lua_pushinteger(L, version);
    lua_setfield(L, -2, "version");
  }
  if (s->granted >= 0) {
    lua_pushinteger(L, s->granted);
    lua_setfield(L, -2, "granted");
  }
  return 1;
}

static int lsub_gc(lua_State *L) {
  sub_close(L, check_sub(L));
  return 0;
}

static int lsub_tostring(lua_State *L) {
  lb_sub_t *s = check_sub(L);
  if (s->filter && s->quarantined) lua_pushfstring(L, "moonwire.mqtt.subscription (%s, quarantined)", s->filter);
  else if (s->filter) lua_pushfstring(L, "moonwire.mqtt.subscription (%s)", s->filter);
  else lua_pushstring(L, "moonwire.mqtt.subscription (closed)");
  return 1;
}

/* ------------------------------------------------------------ listeners */

static void listener_close(lua_State *L, lb_listener_t *l) {
  if (!l->active) return;
  mw_rt_t *rt = lb_rt(L);
  if (l->prev) l->prev->next = l->next;
  else if (rt->listeners == l) rt->listeners = l->next;
  if (l->next) l->next->prev = l->prev;
  l->next = l->prev = NULL;
  l->active = 0;
  lb_unref(L, &l->fn_ref);
  lb_unref(L, &l->self_ref);
}

/* mqtt.on("connect" | "disconnect" | "connect_failed", fn) -> listener with :remove() */
static int lmqtt_on(lua_State *L) {
  int ev = luaL_checkoption(L, 1, NULL, ev_names);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  uint32_t owner = lb_owner_for_new(L);
  mw_rt_t *rt = lb_rt(L);
  lb_listener_t *l = lua_newuserdatauv(L, sizeof *l, 0);
  memset(l, 0, sizeof *l);
  l->fn_ref = l->self_ref = LUA_NOREF;
  l->owner = owner;
  luaL_setmetatable(L, LB_MT_LISTENER);
  l->ev = (listener_ev_t)ev;
  lua_pushvalue(L, 2);
  l->fn_ref = lb_ref(L);
  lua_pushvalue(L, -1);
  l->self_ref = lb_ref(L);
  l->active = 1;
  lb_listener_t **pp = &rt->listeners, *prev = NULL;
  while (*pp) prev = *pp, pp = &(*pp)->next;
  *pp = l;
  l->prev = prev;
  return 1;
}

static int llistener_remove(lua_State *L) {
  lb_listener_t *l = luaL_checkudata(L, 1, LB_MT_LISTENER);
  lua_pushboolean(L, l->active);
  listener_close(L, l);
  return 1;
}

static int llistener_gc(lua_State *L) {
  listener_close(L, luaL_checkudata(L, 1, LB_MT_LISTENER));
  return 0;
}

/* ------------------------------------------------------------ publish */

/* mqtt.publish(topic, payload [, {qos, retain, on_ack}]) -> true | nil, message, code */
static int lmqtt_publish(lua_State *L) {
  size_t tlen, plen = 0;
  const char *topic = luaL_checklstring(L, 1, &tlen);
  const char *payload = "";
  if (lua_type(L, 2) == LUA_TSTRING) payload = lua_tolstring(L, 2, &plen);
  else if (!lua_isnoneornil(L, 2))
    return luaL_argerror(L, 2, "payload must be a string (json.encode a table first)");
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  char why[160];
  if (mw_topic_check_name(topic, tlen, why, sizeof why) != MW_OK)
    return luaL_error(L, "invalid topic '%s': %s", topic, why);
  int qos = opt_qos(L, 3);
  int retain = 0;
  if (opt_field(L, 3, "retain", LUA_TBOOLEAN) != LUA_TNIL) {
    retain = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  int has_ack = opt_field(L, 3, "on_ack", LUA_TFUNCTION) != LUA_TNIL; /* leaves fn on the stack */
  if (has_ack && qos != 1) return luaL_error(L, "on_ack needs qos = 1 (QoS 0 has no PUBACK)");
  mw_rt_t *rt = lb_rt(L);
  if (!rt->mqtt) return lb_fail(L, "no broker configured", mw_status_name(MW_ERR_NOT_CONNECTED));
  char err[256] = "";
  int mid = 0;
  mw_status_t st = mw_mqtt_publish(rt->mqtt, topic, payload, plen, qos, retain, &mid, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  if (qos == 1) {
    /* Always write the slot: a mid is reused once acknowledged, and a stale on_ack must not
       fire for a later message that has none. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->acks_ref);
    if (has_ack) lua_pushvalue(L, -2);
    else lua_pushnil(L);
    lua_rawseti(L, -2, mid);
    lua_pop(L, 1);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* mqtt.connected() -> boolean */
static int lmqtt_connected(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  lua_pushboolean(L, rt->mqtt && mw_mqtt_connected(rt->mqtt));
  return 1;
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* mqtt.stats() -> {messages_in, messages_out, ..., handler_errors} */
static int lmqtt_stats(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  mw_mqtt_stats_t st = {0};
  if (rt->mqtt) mw_mqtt_get_stats(rt->mqtt, &st);
  lua_createtable(L, 0, 10);
  set_int(L, "messages_in", (lua_Integer)st.msgs_in);
  set_int(L, "messages_out", (lua_Integer)st.msgs_out);
  set_int(L, "bytes_in", (lua_Integer)st.bytes_in);
  set_int(L, "bytes_out", (lua_Integer)st.bytes_out);
  set_int(L, "connects", (lua_Integer)st.connects);
  set_int(L, "connect_failures", (lua_Integer)st.connect_failures);
  set_int(L, "disconnects", (lua_Integer)st.disconnects);
  set_int(L, "inflight", st.inflight);
  set_int(L, "broker_subscriptions", st.subscriptions);
  set_int(L, "handler_errors", (lua_Integer)rt->handler_errors);
  return 1;
}

/* mqtt.subscriptions() -> array of sub:info() tables */
static int lmqtt_subscriptions(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  lua_newtable(L);
  int i = 0;
  for (lb_sub_t *s = rt->subs; s; s = s->next) {
    if (!lb_owner_live(rt, s->owner)) continue; /* a version still loading */
    lua_pushcfunction(L, lsub_info);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
    lua_call(L, 1, 1);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* ------------------------------------------------------------ dispatch from the loop */

/*
** Exactly once across a reload: the handlers are chosen when the message is taken from
** the queue, among the live version's subscriptions, and their functions are pushed with
** them. If a handler reloads the app (app.reload()), the rest of this message still goes
** to the version it arrived for; the new version starts with the next message.
*/
static void dispatch_message(mw_rt_t *rt, const mw_mqtt_event_t *ev) {
  lua_State *L = rt->L;
  int base = lua_gettop(L);
  /* Collect matching subscriptions first: handlers may (un)subscribe while we call them. */
  int n = 0;
  for (lb_sub_t *s = rt->subs; s; s = s->next) {
    if (s->quarantined || !lb_owner_live(rt, s->owner) || !mw_topic_matches(s->filter, ev->topic)) continue;
    if (!lua_checkstack(L, 8)) break;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
    n++;
  }
  if (n == 0) {
    MW_LOGD("mqtt", "no handler for a message on %s", ev->topic);
    return;
  }
  lua_pushlstring(L, ev->topic, strlen(ev->topic));
  lua_pushlstring(L, ev->payload, ev->payloadlen);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, ev->qos);
  lua_setfield(L, -2, "qos");
  lua_pushboolean(L, ev->retain);
  lua_setfield(L, -2, "retain");
  if (ev->dup >= 0) {
    lua_pushboolean(L, ev->dup);
    lua_setfield(L, -2, "dup");
  }
  int targs = base + 2 * n + 1;
  for (int i = 0; i < n; i++) {
    lb_sub_t *s = lua_touserdata(L, base + 2 * i + 1);
    /* Skip one an earlier handler unsubscribed, or the budget quarantined. */
    if ((!s->filter && !s->retired) || s->quarantined) continue;
    s->messages++;
    lua_pushvalue(L, base + 2 * i + 2);
    lua_pushvalue(L, targs);
    lua_pushvalue(L, targs + 1);
    lua_pushvalue(L, targs + 2);
    lb_call_opts_t o = {.owner = s->owner};
    /* The handler may unsubscribe itself, which frees s->filter: log from a copy. */
    char filter[MW_TOPIC_MAX_BYTES + 1];
    snprintf(filter, sizeof filter, "%s", s->filter ? s->filter : "?");
    if (lb_pcall_ex(L, 3, 0, &o, "handler for", filter) == LUA_OK) continue;
    s->errors++;
    if (lb_budget_offence(rt, &s->stops) && s->filter && !s->quarantined) sub_quarantine(rt, s);
  }
  lua_settop(L, base);
}

static void dispatch_listeners(mw_rt_t *rt, listener_ev_t which, const mw_mqtt_event_t *ev) {
  lua_State *L = rt->L;
  int base = lua_gettop(L);
  int n = 0;
  for (lb_listener_t *l = rt->listeners; l; l = l->next) {
    if (l->ev != which || !lb_owner_live(rt, l->owner) || !lua_checkstack(L, 8)) continue;
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->self_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->fn_ref);
    n++;
  }
  for (int i = 0; i < n; i++) {
    lb_listener_t *l = lua_touserdata(L, base + 2 * i + 1);
    if (!l->active && !l->retired) continue;
    lua_pushvalue(L, base + 2 * i + 2);
    if (which == EV_CONNECT) {
      lua_createtable(L, 0, 1);
      lua_pushboolean(L, ev->session_present);
      lua_setfield(L, -2, "session_present");
    } else {
      lua_pushstring(L, ev->reason ? ev->reason : "");
    }
    lb_call_opts_t o = {.owner = l->owner};
    if (lb_pcall_ex(L, 1, 0, &o, "mqtt.on handler for", ev_names[which]) != LUA_OK &&
        lb_budget_offence(rt, &l->stops) && l->active) {
      listener_close(L, l);
      rt->quarantined++;
      MW_LOGE("lua", "mqtt.on handler for '%s' quarantined: stopped %d times by the budget", ev_names[which],
              l->stops);
    }
  }
  lua_settop(L, base);
}

static void dispatch_puback(mw_rt_t *rt, int mid) {
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->acks_ref);
  if (lua_rawgeti(L, -1, mid) != LUA_TFUNCTION) {
    lua_pop(L, 2);
    return;
  }
  /* Clear before calling, so the callback may publish again and reuse the slot. */
  lua_pushnil(L);
  lua_rawseti(L, -3, mid);
  lua_pushinteger(L, mid);
  lb_pcall(L, 1, 0, "on_ack callback", NULL);
  lua_pop(L, 1);
}

static void dispatch_suback(mw_rt_t *rt, const mw_mqtt_event_t *ev) {
  int granted = ev->granted_count > 0 ? ev->granted[0] : 0x80;
  for (lb_sub_t *s = rt->subs; s; s = s->next)
    if (s->broker && strcmp(s->filter, ev->topic) == 0) s->granted = granted;
  if (granted == 0x80)
    MW_LOGW("mqtt", "the broker refused the subscription to '%s' (SUBACK 0x80): the thing's policy probably does "
                    "not allow this filter",
            ev->topic);
}

void lb_mqtt_dispatch(mw_rt_t *rt, const mw_mqtt_event_t *ev) {
  switch (ev->type) {
  case MW_MQTT_EV_MESSAGE: dispatch_message(rt, ev); break;
  case MW_MQTT_EV_PUBACK: dispatch_puback(rt, ev->mid); break;
  case MW_MQTT_EV_SUBACK: dispatch_suback(rt, ev); break;
  case MW_MQTT_EV_CONNECT: dispatch_listeners(rt, EV_CONNECT, ev); break;
  case MW_MQTT_EV_DISCONNECT: dispatch_listeners(rt, EV_DISCONNECT, ev); break;
  case MW_MQTT_EV_CONNECT_FAILED: dispatch_listeners(rt, EV_CONNECT_FAILED, ev); break;
  case MW_MQTT_EV_INFLIGHT_LOST:
    /* Those PUBACKs will never come; drop their callbacks with the table. */
    lb_unref(rt->L, &rt->acks_ref);
    lua_newtable(rt->L);
    rt->acks_ref = lb_ref(rt->L);
    break;
  case MW_MQTT_EV_STOPPED: break;
  }
}

void lb_mqtt_close_all(mw_rt_t *rt) {
  lua_State *L = rt->L;
  while (rt->subs) sub_close(L, rt->subs);
  while (rt->listeners) listener_close(L, rt->listeners);
  lb_unref(L, &rt->acks_ref);
}

int luaopen_moonwire_mqtt(lua_State *L) {
  static const luaL_Reg sub_meth[] = {{"unsubscribe", lsub_unsubscribe}, {"info", lsub_info}, {NULL, NULL}};
  static const luaL_Reg sub_meta[] = {
      {"__gc", lsub_gc}, {"__close", lsub_gc}, {"__tostring", lsub_tostring}, {NULL, NULL}};
  static const luaL_Reg lis_meth[] = {{"remove", llistener_remove}, {NULL, NULL}};
  static const luaL_Reg lis_meta[] = {{"__gc", llistener_gc}, {"__close", llistener_gc}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"subscribe", lmqtt_subscribe}, {"publish", lmqtt_publish},
                                 {"on", lmqtt_on},               {"connected", lmqtt_connected},
                                 {"stats", lmqtt_stats},         {"subscriptions", lmqtt_subscriptions},
                                 {NULL, NULL}};
  mw_rt_t *rt = lb_rt(L);
  if (rt->acks_ref == LUA_NOREF || rt->acks_ref == 0) {
    lua_newtable(L);
    rt->acks_ref = lb_ref(L);
  }
  if (luaL_newmetatable(L, LB_MT_SUB)) {
    luaL_setfuncs(L, sub_meta, 0);
    luaL_newlib(L, sub_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LB_MT_LISTENER)) {
    luaL_setfuncs(L, lis_meta, 0);
    luaL_newlib(L, lis_meth);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
