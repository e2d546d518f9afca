/*
** libFuzzer target: the provisioning service on network input. The input is a topic, a
** newline, then the payload; "@@" in a payload becomes this service's correlation prefix,
** so plugin answers can match pending registrations. Time moves on with every input, so
** time-outs fire too.
*/
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_prov_service.h"
#include "prov_test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mw_prov_service_t *svc;
static mw_prov_ca_t *ca;
static int64_t now_ms = 1700000000000LL;

static void sink(void *ud, const char *topic, const char *payload, size_t len) {
  (void)ud;
  (void)topic;
  if (strlen(payload) != len) abort();
}

static void init(void) {
  char dir[128], p[256];
  mw_log_set_level(MW_LOG_ERROR + 1);
  snprintf(dir, sizeof dir, "/tmp/mw_fuzz_prov_%d", (int)getpid());
  mkdir(dir, 0700);
  snprintf(p, sizeof p, "%s/ca", dir);
  prov_test_make_ca(p, "Fuzz CA", 30);
  char err[300];
  if (mw_prov_ca_load(p, &ca, err, sizeof err) != MW_OK) abort();
  snprintf(p, sizeof p, "%s/t", dir);
  mkdir(p, 0700);
  snprintf(p, sizeof p, "%s/t/fleet.json", dir);
  prov_test_write(p, "{\"Parameters\":{\"SerialNumber\":{\"Type\":\"String\",\"AllowedPattern\":\"[0-9A-Z]{1,8}\"}},"
                     "\"Resources\":{\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":"
                     "{\"Fn::Sub\":\"car-${SerialNumber}\"}}},\"cert\":{\"Type\":\"AWS::IoT::Certificate\","
                     "\"Properties\":{\"CertificateId\":{\"Ref\":\"AWS::IoT::Certificate::Id\"},\"Status\":\"ACTIVE\"}},"
                     "\"policy\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyName\":\"car\"}}}}");
  snprintf(p, sizeof p, "%s/t/jitp.json", dir);
  prov_test_write(p, "{\"Resources\":{\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":"
                     "{\"Ref\":\"AWS::IoT::Certificate::CommonName\"}}}}}");
  char pol[256];
  snprintf(pol, sizeof pol, "%s/policy.json", dir);
  prov_test_write(pol, "{\"policies\":{\"car\":{\"publish\":[\"cars/${thing}/#\"]}}}");
  static char tdir[256];
  snprintf(tdir, sizeof tdir, "%s/t", dir);
  mw_prov_config_t cfg = {0};
  cfg.ca = ca;
  cfg.db_path = ":memory:";
  cfg.templates_dir = tdir;
  cfg.policy_path = pol;
  cfg.broker_admin = true;
  cfg.jitp_template = "jitp";
  cfg.admin_timeout_ms = 50;
  cfg.instance = "fz";
  if (mw_prov_service_open(&cfg, &svc, err, sizeof err) != MW_OK) abort();
  prov_test_rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!svc) init();
  const uint8_t *nl = memchr(data, '\n', size);
  if (!nl) return 0;
  size_t tl = (size_t)(nl - data), pl = size - tl - 1;
  char *payload = malloc(pl * 5 + 1); /* "@@" (2 bytes) becomes 9 */
  size_t o = 0;
  for (size_t i = 0; i < pl; i++) {
    if (i + 1 < pl && nl[1 + i] == '@' && nl[2 + i] == '@') {
      memcpy(payload + o, "mwprov-fz", 9);
      o += 9;
      i++;
    } else {
      payload[o++] = (char)nl[1 + i];
    }
  }
  now_ms += 7;
  mw_prov_service_handle(svc, (const char *)data, tl, payload, o, now_ms, sink, NULL);
  mw_prov_service_tick(svc, now_ms, sink, NULL);
  free(payload);
  return 0;
}
