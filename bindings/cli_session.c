#include "cli_session.h"
#include "mw_trustm_tlskey.h"

#include <limits.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lb_state.h"
#include "mw_log.h"
#include "mw_pkcs11.h"
#include "mw_trustm.h"

int mw_cli_parse(int argc, char **argv, const char *cmd, mw_cli_opts_t *o, const char *positional,
                 const char *extra_opt) {
  memset(o, 0, sizeof *o);
  const mw_cli_opt_t opts[] = {{"-c", "--config", &o->config},
                               {"-b", "--broker", &o->ov.broker},
                               {"-t", "--thing", &o->ov.thing},
                               {"-l", "--log-level", &o->level},
                               {extra_opt, NULL, &o->extra}, /* none when extra_opt is NULL */
                               {0}};
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    int r = mw_cli_value_opt(cmd, argc, argv, &i, opts);
    if (r == 0) r = mw_cli_positional(cmd, argv[i], &o->positional, positional ? 1 : 0, &npos);
    if (r != 1) return r;
  }
  if (positional && !o->positional) return mw_cli_usage_error(cmd, "no %s given", positional);
  if (!o->config) return mw_cli_usage_error(cmd, "no configuration given (--config CONFIG.lua)");
  if (o->level && mw_log_level_parse(o->level) < 0)
    return mw_cli_usage_error(cmd, "unknown log level '%s'", o->level);
  return 0;
}

static void on_mqtt_event(void *ud, const mw_mqtt_event_t *ev) {
  mw_session_t *s = ud;
  switch (ev->type) {
  case MW_MQTT_EV_CONNECT:
    MW_LOGI("mqtt", "connected to %s:%d as %s%s", s->cfg.broker.host, s->cfg.broker.port, s->cfg.client_id,
            ev->session_present ? " (session present)" : "");
    break;
  case MW_MQTT_EV_CONNECT_FAILED: MW_LOGW("mqtt", "%s", ev->reason); break;
  case MW_MQTT_EV_DISCONNECT:
    if (ev->rc) MW_LOGW("mqtt", "%s", ev->reason);
    else MW_LOGI("mqtt", "disconnected");
    break;
  case MW_MQTT_EV_STOPPED:
    mw_outbox_on_mqtt(s->rt.outbox, ev);
    uv_stop(&s->loop);
    return;
  default: break;
  }
  /* The outbox before the app: it turns PUBACKs into handles, and its verdicts on a lost
     connection (strikes, dead letters) come before the app's "disconnect" listeners. */
  mw_outbox_on_mqtt(s->rt.outbox, ev);
  if (s->on_event) s->on_event(s, ev);
}

static void on_signal(uv_signal_t *h, int signum) {
  mw_session_t *s = h->data;
  if (s->stopping++) {
    MW_LOGW("run", "second %s: exiting without waiting", strsignal(signum));
    uv_stop(&s->loop);
    return;
  }
  MW_LOGI("run", "%s: disconnecting", strsignal(signum));
  mw_mqtt_stop(s->rt.mqtt);
}

static void on_outbox_event(void *ud, const mw_outbox_event_t *ev) {
  mw_session_t *s = ud;
  lb_mqtt_outbox_event(&s->rt, ev);
}

/* The outbox (issue 7): configured by outbox.*, in the default state folder otherwise. */
static int open_outbox(mw_session_t *s) {
  char err[600], path[PATH_MAX];
  const char *where = s->cfg.outbox.path;
  if (!where) {
    if (mw_outbox_default_path(s->cfg.client_id, path, sizeof path, err, sizeof err) != MW_OK)
      return mw_cli_fail("%s: %s", s->cfg.path, err);
    where = path;
  }
  mw_outbox_config_t oc = {
      .path = where,
      .sync = (mw_outbox_sync_t)s->cfg.outbox.sync,
      .max_messages = s->cfg.outbox.max_messages,
      .max_bytes = s->cfg.outbox.max_bytes,
      .when_full = (mw_outbox_when_full_t)s->cfg.outbox.when_full,
      .qos0_queue = s->cfg.outbox.qos0_queue,
      .qos0_max = s->cfg.outbox.qos0_max,
      .poison_budget = s->cfg.outbox.poison_budget,
      .poison_window_ms = (uint32_t)s->cfg.outbox.poison_window_ms,
      .window = s->cfg.limits.max_inflight,
  };
  if (mw_outbox_new(&s->loop, s->rt.mqtt, &oc, on_outbox_event, s, &s->rt.outbox, err, sizeof err) != MW_OK)
    return mw_cli_fail("%s", err);
  MW_LOGD("outbox", "outbox %s", where);
  return MW_EXIT_OK;
}

/*
** The TLS layer asks for a PKCS#11 key through this: open the token the URI names, log
** in, and wrap the private key in an EVP_PKEY whose signatures run C_Sign. The token
** handle lives as long as that key (the SSL_CTX holds it), so the session stays open
** and the module is finalised when the context is freed at exit. As with the chip, a key
** that does not belong to tls.cert is refused here rather than in every handshake.
*/
static mw_status_t pkcs11_key_loader(void *ud, const mw_keyref_t *ref, EVP_PKEY *pub, EVP_PKEY **out, char *err,
                                     size_t errlen) {
  mw_session_t *s = ud;
  mw_p11_open_opts_t o = {.module = s->cfg.pkcs11.module};
  mw_p11_t *t = NULL;
  mw_status_t st = mw_p11_open(ref->text, &o, &t, err, errlen);
  if (st != MW_OK) return st;
  EVP_PKEY *stored = NULL;
  char why[512];
  bool matches;
  if (mw_p11_pubkey(t, &stored, why, sizeof why) == MW_OK) {
    matches = pub && EVP_PKEY_eq(stored, pub) == 1;
    EVP_PKEY_free(stored);
    st = matches ? mw_p11_pkey(t, pub, out, err, errlen) : MW_ERR_TLS;
  } else {
    /* No public key object in the token: one test signature, checked with tls.cert's key. */
    st = mw_p11_pkey(t, pub, out, err, errlen);
    matches = false;
    if (st == MW_OK) {
      uint8_t digest[32], sig[1024];
      size_t siglen = sizeof sig;
      memset(digest, 0x5a, sizeof digest);
      EVP_PKEY_CTX *sc = EVP_PKEY_CTX_new(*out, NULL), *vc = EVP_PKEY_CTX_new(pub, NULL);
      matches = sc && vc && EVP_PKEY_sign_init(sc) == 1 && EVP_PKEY_CTX_set_signature_md(sc, EVP_sha256()) == 1 &&
                EVP_PKEY_sign(sc, sig, &siglen, digest, sizeof digest) == 1 && EVP_PKEY_verify_init(vc) == 1 &&
                EVP_PKEY_CTX_set_signature_md(vc, EVP_sha256()) == 1 &&
                EVP_PKEY_verify(vc, sig, siglen, digest, sizeof digest) == 1;
      EVP_PKEY_CTX_free(sc);
      EVP_PKEY_CTX_free(vc);
      if (!matches) {
        EVP_PKEY_free(*out);
        *out = NULL;
        st = MW_ERR_TLS;
      }
    }
  }
  if (st == MW_ERR_TLS && !matches)
    snprintf(err, errlen, "the key in PKCS#11 token '%s' does not match the public key in tls.cert",
             mw_p11_token_label(t));
  if (st == MW_OK) MW_LOGI("pkcs11", "TLS key in PKCS#11 token '%s'", mw_p11_token_label(t));
  mw_p11_close(t); /* the key keeps the session */
  return st;
}

/*
** Opens the secure element named by se.* (for tls.key and for moonwire.se, which finds it
** in rt.se). With the TLS key in it, reconnects are never faster than every 5 s.
*/
static int open_se(mw_session_t *s, uint32_t *backoff_floor) {
  if (!s->cfg.se.device && !s->cfg.se.sim) return 0;
  mw_trustm_config_t tc = {0};
  tc.device = s->cfg.se.device;
  tc.address = (uint8_t)s->cfg.se.address;
  tc.sim = s->cfg.se.sim;
  mw_status_t st = mw_trustm_open(&tc, &s->se);
  if (st != MW_OK) {
    return mw_cli_fail("cannot open the secure element %s: %s", s->cfg.se.device ? s->cfg.se.device : s->cfg.se.sim,
                       s->se ? mw_trustm_last_error(s->se) : mw_status_str(st));
  }
  if (mw_trustm_is_sim(s->se)) MW_LOGI("se", "using the OPTIGA Trust M simulator (%s)", s->cfg.se.sim);
  s->rt.se = s->se;
  mw_tls_set_key_loader(MW_KEY_TRUSTM, mw_trustm_tls_key_loader, s->se);
  mw_keyref_t ref;
  char why[256];
  /* The chip's security monitor throttles sustained private-key use (about one per 5 s). */
  if (mw_keyref_parse(s->cfg.tls.key, &ref, why, sizeof why) == MW_OK && ref.kind == MW_KEY_TRUSTM)
    *backoff_floor = 5000;
  return 0;
}

int mw_session_open(mw_session_t *s, const char *config, const lb_config_overrides_t *ov, const char *level,
                    const char *app_dir, mw_session_event_fn on_event, void *ud) {
  char err[1024];
  memset(s, 0, sizeof *s);
  s->on_event = on_event;
  s->ud = ud;
  uv_loop_init(&s->loop);
  s->rt.loop = &s->loop;
  s->rt.started_ms = uv_now(&s->loop);
  s->rt.mem_limit = 32u << 20; /* until the configuration says otherwise */
  if (!lb_state_new(&s->rt, app_dir)) return mw_cli_fail("cannot create the Lua state");
  if (lb_config_load(s->rt.L, config, ov, &s->cfg, err, sizeof err) != 0) return mw_cli_fail("%s", err);
  s->rt.cfg = &s->cfg;
  s->rt.mem_limit = s->cfg.limits.lua_memory;
  s->rt.budget_ms = s->cfg.lua.budget_ms;
  s->rt.quarantine_after = s->cfg.lua.quarantine_after;
  lb_budget_mem_update(&s->rt);
  if (level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(level));
  else if (s->cfg.log_level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(s->cfg.log_level));

  uint32_t backoff_floor = 0;
  if (open_se(s, &backoff_floor) != 0) return MW_EXIT_FAILURE;
  mw_tls_set_key_loader(MW_KEY_PKCS11, pkcs11_key_loader, s);
  mw_tls_config_t tc = {s->cfg.tls.ca, s->cfg.tls.cert, s->cfg.tls.key, s->cfg.broker.alpn, s->cfg.broker.host};
  if (mw_tls_ctx_new(&tc, &s->tls, err, sizeof err) != MW_OK) return mw_cli_fail("%s: %s", config, err);
  mw_mqtt_config_t mc = {
      .host = s->cfg.broker.host,
      .port = s->cfg.broker.port,
      .client_id = s->cfg.client_id,
      .keepalive = s->cfg.broker.keepalive,
      .clean_session = s->cfg.broker.clean_session,
      .tls = s->tls,
      .will_topic = s->cfg.will.topic,
      .will_payload = s->cfg.will.payload,
      .will_len = s->cfg.will.payload_len,
      .will_qos = s->cfg.will.qos,
      .will_retain = s->cfg.will.retain,
      .backoff_base_ms = s->cfg.reconnect.base_ms,
      .backoff_cap_ms = s->cfg.reconnect.cap_ms,
      .backoff_floor_ms = backoff_floor,
      .max_inflight = s->cfg.limits.max_inflight,
      .max_payload = s->cfg.limits.max_payload,
      .protocol = s->cfg.broker.protocol,
  };
  if (mw_mqtt_new(&s->loop, &mc, on_mqtt_event, s, &s->rt.mqtt, err, sizeof err) != MW_OK)
    return mw_cli_fail("%s", err);
  return open_outbox(s);
}

void mw_session_run(mw_session_t *s, const char *what) {
  uv_signal_init(&s->loop, &s->sigint);
  uv_signal_init(&s->loop, &s->sigterm);
  s->sigint.data = s->sigterm.data = s;
  uv_signal_start(&s->sigint, on_signal, SIGINT);
  uv_signal_start(&s->sigterm, on_signal, SIGTERM);
  s->signals_started = 1;
  MW_LOGI("run", "moonwire %s: %s as %s, broker %s:%d", MW_VERSION, what, s->cfg.thing, s->cfg.broker.host,
          s->cfg.broker.port);
  mw_mqtt_start(s->rt.mqtt);
  uv_run(&s->loop, UV_RUN_DEFAULT);
}

void mw_session_close(mw_session_t *s) {
  if (s->signals_started) {
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
  }
  lb_state_close(&s->rt);
  mw_outbox_free(s->rt.outbox);
  s->rt.outbox = NULL;
  if (s->rt.mqtt) mw_mqtt_free(s->rt.mqtt);
  s->rt.mqtt = NULL;
  /* Let libuv run the close callbacks of every handle, so nothing leaks. */
  uv_run(&s->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&s->loop) != 0) MW_LOGW("run", "some event-loop handles were still open at exit");
  mw_tls_ctx_free(s->tls);
  s->tls = NULL;
  mw_tls_set_key_loader(MW_KEY_TRUSTM, NULL, NULL);
  mw_tls_set_key_loader(MW_KEY_PKCS11, NULL, NULL);
  s->rt.se = NULL;
  mw_trustm_close(s->se);
  s->se = NULL;
  mw_config_free(&s->cfg);
}
