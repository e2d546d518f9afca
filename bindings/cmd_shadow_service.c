/*
** moonwire shadow-service --config CONFIG.lua [--db FILE]: the local Device Shadow
** service. Connects as a privileged identity, answers get/update/delete for classic and
** named shadows of every thing on the reserved $aws/things/... topics, and keeps the
** documents in SQLite so they survive restarts (runtime/shadow/ has the rules).
*/
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_session.h"
#include "mw_log.h"
#include "mw_shadow_service.h"
#include "mw_shadow_topic.h"

const char mw_usage_shadow_service[] =
    "Usage: moonwire shadow-service --config CONFIG.lua [--db FILE] [OPTIONS]\n\n"
    "Serves AWS IoT Device Shadow requests ($aws/things/{thing}/shadow[/name/{name}]/\n"
    "{get,update,delete}) for every thing on the broker, with AWS's document shapes and\n"
    "error codes, and keeps shadows in a SQLite database (WAL) across restarts.\n\n"
    "Options:\n"
    "  -c, --config FILE     configuration of the service's own identity (see docs/configuration.md)\n"
    "      --db FILE         shadow database (default: shadows.db)\n"
    "  -b, --broker HOST:PORT  override broker.host and broker.port\n"
    "  -t, --thing NAME      override the identity name\n"
    "  -l, --log-level LEVEL debug, info, warn or error\n"
    "  -h, --help            show this help\n";

typedef struct {
  mw_shadow_service_t *svc;
  uv_timer_t prune;
  uint64_t requests, publish_failures;
} shadow_svc_t;

/* Shadow documents carry wall-clock timestamps (epoch seconds), not the loop's clock. */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Responses go out at QoS 1: a lost /update/delta would leave a device out of step. */
static void emit(void *ud, const char *topic, const char *payload, size_t len) {
  mw_session_t *s = ud;
  shadow_svc_t *ss = s->ud;
  char err[512];
  /* Through the outbox: held while offline, sent again after a reconnect, window respected. */
  if (mw_outbox_publish(s->rt.outbox, topic, payload, len, 1, false, NULL, err, sizeof err) != MW_OK) {
    ss->publish_failures++;
    MW_LOGW("shadow", "response on %s not sent: %s", topic, err);
  }
}

static void on_event(mw_session_t *s, const mw_mqtt_event_t *ev) {
  shadow_svc_t *ss = s->ud;
  if (ev->type != MW_MQTT_EV_MESSAGE) return;
  ss->requests++;
  mw_status_t st = mw_shadow_service_handle(ss->svc, ev->topic, strlen(ev->topic), ev->payload, ev->payloadlen,
                                            wall_ms(), emit, s);
  if (st == MW_ERR_INVALID) MW_LOGD("shadow", "ignored %s (not a shadow request)", ev->topic);
  else if (st != MW_OK) MW_LOGE("shadow", "request on %s failed: %s", ev->topic, mw_status_str(st));
}

static void on_prune(uv_timer_t *t) {
  shadow_svc_t *ss = t->data;
  mw_shadow_service_prune(ss->svc, wall_ms());
}

int mw_cmd_shadow_service(int argc, char **argv) {
  mw_cli_opts_t o;
  int rc = mw_cli_parse(argc, argv, "shadow-service", &o, NULL, "--db");
  if (rc) return rc;
  const char *db = o.extra ? o.extra : "shadows.db";
  shadow_svc_t ss;
  memset(&ss, 0, sizeof ss);
  mw_session_t s;
  /* Replies are only useful now: unless the configuration asks for one, no durable outbox. */
  o.ov.outbox_default = ":memory:";
  rc = mw_session_open(&s, o.config, &o.ov, o.level, NULL, on_event, &ss);
  if (rc == MW_EXIT_OK) {
    mw_status_t st = mw_shadow_service_open(db, NULL, false, &ss.svc);
    if (st != MW_OK) rc = mw_cli_fail("cannot open the shadow database %s: %s", db, mw_status_str(st));
  }
  if (rc == MW_EXIT_OK) {
    mw_mqtt_subscribe(s.rt.mqtt, MW_SHADOW_FILTER_CLASSIC, 1, NULL);
    mw_mqtt_subscribe(s.rt.mqtt, MW_SHADOW_FILTER_NAMED, 1, NULL);
    uv_timer_init(&s.loop, &ss.prune);
    ss.prune.data = &ss;
    uv_timer_start(&ss.prune, on_prune, 3600 * 1000, 3600 * 1000);
    MW_LOGI("shadow", "serving shadows from %s", db);
    mw_session_run(&s, "shadow-service");
    uv_close((uv_handle_t *)&ss.prune, NULL);
    MW_LOGI("shadow", "%llu requests served", (unsigned long long)ss.requests);
  }
  mw_session_close(&s);
  if (ss.svc) mw_shadow_service_close(ss.svc);
  return rc;
}
