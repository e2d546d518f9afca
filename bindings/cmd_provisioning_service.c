/*
** moonwire provisioning-service --config CONFIG.lua --ca CA ...: the local stand-in for AWS
** IoT Fleet Provisioning, and a real tool for a factory line or an edge site. Connects as a
** privileged identity, answers the provisioning MQTT API on the reserved topics, issues
** certificates from the signing CA, and adds each registered thing to the broker's access
** policy through the dynamic-security plugin (runtime/provision/ has the logic).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_session.h"
#include "mw_log.h"
#include "mw_prov_service.h"

const char mw_usage_provisioning_service[] =
    "Usage: moonwire provisioning-service --config CONFIG.lua --ca CA [OPTIONS]\n"
    "       moonwire provisioning-service --list [--db FILE]\n\n"
    "Serves the AWS IoT Fleet Provisioning MQTT API on the local broker:\n"
    "  $aws/certificates/create-from-csr/json     CreateCertificateFromCsr\n"
    "  $aws/certificates/create/json              CreateKeysAndCertificate\n"
    "  $aws/provisioning-templates/NAME/provision/json   RegisterThing\n"
    "  moonwire/certificates/register/json        JITP-style registration of a certificate from --ca\n"
    "Certificates come from the signing CA; ownership tokens expire after an hour; a template\n"
    "turns the request's parameters into a thing; the thing's policies are added to the broker\n"
    "(dynamic-security plugin) before the device is answered. State is kept in SQLite.\n\n"
    "Options:\n"
    "  -c, --config FILE       the service's own identity (a configuration like a device's)\n"
    "      --ca DIR|STEM       signing CA: a certs/mkpki directory (intermediate-ca.crt/.key)\n"
    "                          or STEM for STEM.crt + STEM.key\n"
    "      --templates DIR     provisioning templates: DIR/NAME.json is template NAME\n"
    "      --policy FILE       the broker's policy description (tools/mkbroker's input); the\n"
    "                          templates' PolicyName values are its policies\n"
    "      --no-broker-admin   record things only; do not change the broker's access policy\n"
    "      --jitp-template NAME  enable moonwire/certificates/register with this template\n"
    "      --no-create-keys    refuse CreateKeysAndCertificate (private keys over MQTT)\n"
    "      --db FILE           state database (default: provisioning.db)\n"
    "      --cert-days N       validity of issued certificates in days (default 825)\n"
    "      --token-ttl SECONDS lifetime of ownership tokens (default 3600)\n"
    "      --admin-timeout SECONDS  wait for the broker's plugin (default 10)\n"
    "      --list              print the certificates and things in --db and exit\n"
    "  -b, --broker HOST:PORT  override broker.host and broker.port\n"
    "  -t, --thing NAME        override the identity name\n"
    "  -l, --log-level LEVEL   debug, info, warn or error\n"
    "  -h, --help              show this help\n\n"
    "SIGHUP reloads the templates and the policy description. See docs/provisioning.md.\n";

typedef struct {
  const char *ca, *templates, *policy, *jitp, *db;
  int no_admin, no_keys, list, cert_days, token_ttl, admin_timeout;
} svc_opts_t;

typedef struct {
  mw_session_t *s;
  mw_prov_service_t *svc;
  uv_timer_t tick;
  uv_signal_t hup;
  int probed, admin_reported;
  uint64_t publish_failures;
} prov_ctx_t;

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void emit(void *ud, const char *topic, const char *payload, size_t len) {
  prov_ctx_t *c = ud;
  char err[256];
  if (mw_mqtt_publish(c->s->rt.mqtt, topic, payload, len, 1, false, NULL, err, sizeof err) != MW_OK) {
    c->publish_failures++;
    MW_LOGW("provision", "message on %s not sent: %s", topic, err);
  }
}

static void on_event(mw_session_t *s, const mw_mqtt_event_t *ev) {
  prov_ctx_t *c = s->ud;
  if (ev->type == MW_MQTT_EV_CONNECT && !c->probed) {
    c->probed = 1;
    mw_prov_service_probe(c->svc, wall_ms(), emit, c);
    return;
  }
  if (ev->type == MW_MQTT_EV_SUBACK && ev->granted_count > 0 && ev->granted[0] == 0x80) {
    MW_LOGE("provision", "the broker refused the subscription to %s: this identity's policy must allow it", ev->topic);
    return;
  }
  if (ev->type != MW_MQTT_EV_MESSAGE) return;
  mw_status_t st = mw_prov_service_handle(c->svc, ev->topic, strlen(ev->topic), ev->payload, ev->payloadlen,
                                          wall_ms(), emit, c);
  if (st == MW_ERR_INVALID) MW_LOGD("provision", "ignored a message on %s", ev->topic);
}

static void on_tick(uv_timer_t *t) {
  prov_ctx_t *c = t->data;
  mw_prov_service_tick(c->svc, wall_ms(), emit, c);
  int st = mw_prov_service_admin_state(c->svc);
  if (st != 0 && !c->admin_reported) {
    c->admin_reported = 1;
    if (st == 1) {
      MW_LOGI("provision", "the broker's dynamic-security plugin answers: registered things get their policies");
    } else {
      MW_LOGE("provision", "the broker's dynamic-security plugin did not answer: this identity needs publish on %s "
                           "and subscribe + receive on %s (see docs/provisioning.md); registrations will fail",
              MW_PROV_DYNSEC_TOPIC, MW_PROV_DYNSEC_RESPONSE);
    }
  }
}

static void on_hup(uv_signal_t *h, int signum) {
  (void)signum;
  prov_ctx_t *c = h->data;
  char err[600];
  if (mw_prov_service_reload(c->svc, err, sizeof err) == MW_OK) MW_LOGI("provision", "templates and policies reloaded");
  else MW_LOGE("provision", "reload failed, keeping the previous templates and policies: %s", err);
}

static void print_cert(void *ud, const mw_prov_cert_row_t *r) {
  int *n = ud;
  char when[32] = "-";
  time_t t = (time_t)(r->registered_at ? r->registered_at : r->created_at);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!(*n)++) printf("%-24s %-20s %-64s %-6s %s\n", "THING", "STATUS", "CERTIFICATE", "SOURCE", "CN / SINCE");
  printf("%-24s %-20s %-64s %-6s %s %s\n", r->thing[0] ? r->thing : "-", r->status, r->id, r->source, r->cn, when);
}

static int list_db(const char *db) {
  mw_prov_store_t *st;
  if (mw_prov_store_open(db, &st) != MW_OK) return mw_cli_fail("cannot open the provisioning database %s", db);
  int n = 0;
  mw_status_t r = mw_prov_store_list(st, print_cert, &n);
  mw_prov_store_close(st);
  if (r != MW_OK) return mw_cli_fail("cannot read %s", db);
  if (!n) printf("no certificates in %s\n", db);
  return MW_EXIT_OK;
}

static int parse_int(const char *cmd, const char *opt, const char *v, int min, int max, int *out) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*end || n < min || n > max) return mw_cli_usage_error(cmd, "%s needs a number %d..%d", opt, min, max);
  *out = (int)n;
  return 0;
}

/* Takes this command's options out of argv (the shared ones stay for mw_cli_parse). */
static int take_options(int *argc, char **argv, svc_opts_t *o) {
  static const char cmd[] = "provisioning-service";
  int out = 1;
  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    const char *num = NULL;
    if (!strcmp(a, "--ca")) slot = &o->ca;
    else if (!strcmp(a, "--templates")) slot = &o->templates;
    else if (!strcmp(a, "--policy")) slot = &o->policy;
    else if (!strcmp(a, "--jitp-template")) slot = &o->jitp;
    else if (!strcmp(a, "--db")) slot = &o->db;
    else if (!strcmp(a, "--cert-days") || !strcmp(a, "--token-ttl") || !strcmp(a, "--admin-timeout")) slot = &num;
    else if (!strcmp(a, "--no-broker-admin")) o->no_admin = 1;
    else if (!strcmp(a, "--no-create-keys")) o->no_keys = 1;
    else if (!strcmp(a, "--list")) o->list = 1;
    else {
      argv[out++] = argv[i];
      continue;
    }
    if (!slot) continue;
    if (i + 1 >= *argc) return mw_cli_usage_error(cmd, "%s needs a value", a);
    *slot = argv[++i];
    if (slot == &num) {
      int rc = !strcmp(a, "--cert-days")   ? parse_int(cmd, a, num, 1, 36500, &o->cert_days)
               : !strcmp(a, "--token-ttl") ? parse_int(cmd, a, num, 1, 30 * 86400, &o->token_ttl)
                                           : parse_int(cmd, a, num, 1, 600, &o->admin_timeout);
      if (rc) return rc;
    }
  }
  *argc = out;
  return 0;
}

int mw_cmd_provisioning_service(int argc, char **argv) {
  static const char cmd[] = "provisioning-service";
  svc_opts_t so;
  memset(&so, 0, sizeof so);
  int rc = take_options(&argc, argv, &so);
  if (rc) return rc;
  const char *db = so.db ? so.db : "provisioning.db";
  if (so.list) {
    if (argc > 1) return mw_cli_usage_error(cmd, "--list takes only --db");
    return list_db(db);
  }
  mw_cli_opts_t o;
  if ((rc = mw_cli_parse(argc, argv, cmd, &o, NULL, NULL))) return rc;
  if (!so.ca) return mw_cli_usage_error(cmd, "no signing CA given (--ca certs/dev)");
  char err[1024];
  mw_prov_ca_t *ca = NULL;
  if (mw_prov_ca_load(so.ca, &ca, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);

  prov_ctx_t c;
  memset(&c, 0, sizeof c);
  mw_session_t s;
  /* Its replies only matter now: no durable outbox unless the configuration asks for one. */
  o.ov.outbox_default = ":memory:";
  rc = mw_session_open(&s, o.config, &o.ov, o.level, NULL, on_event, &c);
  c.s = &s;
  if (rc == MW_EXIT_OK) {
    mw_prov_config_t pc = {0};
    pc.ca = ca;
    pc.db_path = db;
    pc.templates_dir = so.templates;
    pc.policy_path = so.policy;
    pc.broker_admin = so.policy && !so.no_admin;
    pc.jitp_template = so.jitp;
    pc.create_keys = !so.no_keys;
    pc.cert_days = so.cert_days;
    pc.token_ttl_s = so.token_ttl;
    pc.admin_timeout_ms = so.admin_timeout * 1000;
    if (mw_prov_service_open(&pc, &c.svc, err, sizeof err) != MW_OK) rc = mw_cli_fail("%s", err);
    else if (!pc.broker_admin)
      MW_LOGW("provision", "%s: registered things get no broker rights from this service",
              so.no_admin ? "--no-broker-admin" : "no --policy given");
  }
  if (rc == MW_EXIT_OK) {
    for (const char *const *f = mw_prov_service_filters(c.svc); *f; f++) mw_mqtt_subscribe(s.rt.mqtt, *f, 1, NULL);
    uv_timer_init(&s.loop, &c.tick);
    c.tick.data = &c;
    uv_timer_start(&c.tick, on_tick, 1000, 1000);
    uv_signal_init(&s.loop, &c.hup);
    c.hup.data = &c;
    uv_signal_start(&c.hup, on_hup, SIGHUP);
    MW_LOGI("provision", "issuing certificates from %s; state in %s", mw_prov_ca_name(ca), db);
    mw_session_run(&s, "provisioning-service");
    uv_close((uv_handle_t *)&c.tick, NULL);
    uv_close((uv_handle_t *)&c.hup, NULL);
    mw_prov_stats_t st;
    mw_prov_service_stats(c.svc, &st);
    MW_LOGI("provision", "%llu requests: %llu accepted, %llu rejected", (unsigned long long)st.requests,
            (unsigned long long)st.accepted, (unsigned long long)st.rejected);
  }
  mw_session_close(&s);
  mw_prov_service_close(c.svc);
  mw_prov_ca_free(ca);
  return rc;
}
