/*
** moonwire run APP.lua --config CONFIG.lua: the device runtime. Loads the
** configuration, builds the TLS context, runs the app, connects, and serves handlers
** until SIGINT/SIGTERM, then disconnects cleanly (DISCONNECT sent: no last will).
*/
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lb.h"
#include "lb_config.h"
#include "lb_state.h"
#include "mw_log.h"
#include "mw_tls.h"

const char mw_usage_run[] =
    "Usage: moonwire run APP.lua --config CONFIG.lua [OPTIONS]\n\n"
    "Runs a device app: connects to the broker with mutual TLS, runs APP.lua, and\n"
    "serves its handlers until SIGINT or SIGTERM, then disconnects cleanly.\n\n"
    "Options:\n"
    "  -c, --config FILE     configuration file (a Lua chunk returning a table; see docs/configuration.md)\n"
    "  -b, --broker HOST:PORT  override broker.host and broker.port\n"
    "  -t, --thing NAME      override the thing name (and the client id with it)\n"
    "  -l, --log-level LEVEL debug, info, warn or error (overrides log.level)\n"
    "  -h, --help            show this help\n";

typedef struct {
  mw_rt_t rt;
  mw_config_t cfg;
  mw_tls_ctx_t *tls;
  uv_signal_t sigint, sigterm;
  int stopping;
} run_t;

static void on_mqtt_event(void *ud, const mw_mqtt_event_t *ev) {
  run_t *r = ud;
  switch (ev->type) {
  case MW_MQTT_EV_CONNECT:
    MW_LOGI("mqtt", "connected to %s:%d as %s%s", r->cfg.broker.host, r->cfg.broker.port, r->cfg.client_id,
            ev->session_present ? " (session present)" : "");
    break;
  case MW_MQTT_EV_CONNECT_FAILED: MW_LOGW("mqtt", "%s", ev->reason); break;
  case MW_MQTT_EV_DISCONNECT:
    if (ev->rc) MW_LOGW("mqtt", "%s", ev->reason);
    else MW_LOGI("mqtt", "disconnected");
    break;
  case MW_MQTT_EV_STOPPED: uv_stop(r->rt.loop); return;
  default: break;
  }
  lb_mqtt_dispatch(&r->rt, ev);
}

static void on_signal(uv_signal_t *h, int signum) {
  run_t *r = h->data;
  if (r->stopping++) {
    MW_LOGW("run", "second %s: exiting without waiting", strsignal(signum));
    uv_stop(r->rt.loop);
    return;
  }
  MW_LOGI("run", "%s: disconnecting", strsignal(signum));
  mw_mqtt_stop(r->rt.mqtt);
}

static int parse_args(int argc, char **argv, const char **app, const char **config, lb_config_overrides_t *ov,
                      const char **level) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    if (!strcmp(a, "-c") || !strcmp(a, "--config")) slot = config;
    else if (!strcmp(a, "-b") || !strcmp(a, "--broker")) slot = &ov->broker;
    else if (!strcmp(a, "-t") || !strcmp(a, "--thing")) slot = &ov->thing;
    else if (!strcmp(a, "-l") || !strcmp(a, "--log-level")) slot = level;
    else if (a[0] == '-') return mw_cli_usage_error("run", "unknown option '%s'", a);
    else if (!*app) *app = a;
    else return mw_cli_usage_error("run", "unexpected argument '%s'", a);
    if (slot) {
      if (i + 1 >= argc) return mw_cli_usage_error("run", "%s needs a value", a);
      *slot = argv[++i];
    }
  }
  if (!*app) return mw_cli_usage_error("run", "no app given");
  if (!*config) return mw_cli_usage_error("run", "no configuration given (--config CONFIG.lua)");
  if (*level && mw_log_level_parse(*level) < 0)
    return mw_cli_usage_error("run", "unknown log level '%s'", *level);
  return 0;
}

int mw_cmd_run(int argc, char **argv) {
  const char *app = NULL, *config = NULL, *level = NULL;
  lb_config_overrides_t ov = {0};
  int rc = parse_args(argc, argv, &app, &config, &ov, &level);
  if (rc) return rc;

  run_t r;
  memset(&r, 0, sizeof r);
  char err[1024];
  uv_loop_t loop;
  uv_loop_init(&loop);
  r.rt.loop = &loop;
  r.rt.started_ms = uv_now(&loop);
  r.rt.mem_limit = 32u << 20; /* until the configuration says otherwise */
  char appdir[PATH_MAX];
  snprintf(appdir, sizeof appdir, "%s", app);
  rc = MW_EXIT_FAILURE;

  if (!lb_state_new(&r.rt, dirname(appdir))) {
    mw_cli_fail("cannot create the Lua state");
    goto out;
  }
  if (lb_config_load(r.rt.L, config, &ov, &r.cfg, err, sizeof err) != 0) {
    mw_cli_fail("%s", err);
    goto out;
  }
  r.rt.cfg = &r.cfg;
  r.rt.mem_limit = r.cfg.limits.lua_memory;
  if (level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(level));
  else if (r.cfg.log_level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(r.cfg.log_level));

  mw_tls_config_t tc = {r.cfg.tls.ca, r.cfg.tls.cert, r.cfg.tls.key, r.cfg.broker.alpn, r.cfg.broker.host};
  if (mw_tls_ctx_new(&tc, &r.tls, err, sizeof err) != MW_OK) {
    mw_cli_fail("%s: %s", config, err);
    goto out;
  }
  mw_mqtt_config_t mc = {
      .host = r.cfg.broker.host,
      .port = r.cfg.broker.port,
      .client_id = r.cfg.client_id,
      .keepalive = r.cfg.broker.keepalive,
      .clean_session = r.cfg.broker.clean_session,
      .tls = r.tls,
      .will_topic = r.cfg.will.topic,
      .will_payload = r.cfg.will.payload,
      .will_len = r.cfg.will.payload_len,
      .will_qos = r.cfg.will.qos,
      .will_retain = r.cfg.will.retain,
      .backoff_base_ms = r.cfg.reconnect.base_ms,
      .backoff_cap_ms = r.cfg.reconnect.cap_ms,
      .max_inflight = r.cfg.limits.max_inflight,
      .max_payload = r.cfg.limits.max_payload,
  };
  if (mw_mqtt_new(&loop, &mc, on_mqtt_event, &r, &r.rt.mqtt, err, sizeof err) != MW_OK) {
    mw_cli_fail("%s", err);
    goto out;
  }
  /* The app registers its handlers first, so they are subscribed with the first CONNACK. */
  if (lb_state_run_file(&r.rt, app, err, sizeof err) != 0) {
    mw_cli_fail("%s", err);
    goto out;
  }
  uv_signal_init(&loop, &r.sigint);
  uv_signal_init(&loop, &r.sigterm);
  r.sigint.data = r.sigterm.data = &r;
  uv_signal_start(&r.sigint, on_signal, SIGINT);
  uv_signal_start(&r.sigterm, on_signal, SIGTERM);
  MW_LOGI("run", "moonwire %s: %s as thing %s, broker %s:%d", MW_VERSION, app, r.cfg.thing, r.cfg.broker.host,
          r.cfg.broker.port);
  mw_mqtt_start(r.rt.mqtt);
  uv_run(&loop, UV_RUN_DEFAULT);
  rc = MW_EXIT_OK;
  uv_close((uv_handle_t *)&r.sigint, NULL);
  uv_close((uv_handle_t *)&r.sigterm, NULL);

out:
  lb_state_close(&r.rt);
  if (r.rt.mqtt) mw_mqtt_free(r.rt.mqtt);
  /* Let libuv run the close callbacks of every handle, so nothing leaks. */
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) MW_LOGW("run", "some event-loop handles were still open at exit");
  mw_tls_ctx_free(r.tls);
  mw_config_free(&r.cfg);
  return rc;
}
