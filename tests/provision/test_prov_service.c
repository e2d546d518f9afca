/*
** The provisioning service's logic with no broker: requests in, answers and plugin commands
** out. CreateCertificateFromCsr / CreateKeysAndCertificate / RegisterThing / the JITP
** registration, the conversation with the dynamic-security plugin (lookup, writes, errors,
** time-outs), ownership token rules, error payloads, state kept across a reopen.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <cjson/cJSON.h>
#include <openssl/sha.h>

#include "mw_csr.h"
#include "mw_prov_service.h"
#include "prov_test_util.h"

#define NOW_MS 1700000000000LL

typedef struct {
  int n;
  char topic[16][256];
  cJSON *body[16];
} sink_t;

static void sink_clear(sink_t *s) {
  for (int i = 0; i < s->n; i++) cJSON_Delete(s->body[i]);
  s->n = 0;
}

static void on_emit(void *ud, const char *topic, const char *payload, size_t len) {
  sink_t *s = ud;
  CHECK(strlen(payload) == len);
  if (s->n == 16) return;
  snprintf(s->topic[s->n], sizeof s->topic[0], "%s", topic);
  s->body[s->n] = cJSON_Parse(payload);
  CHECK(s->body[s->n] != NULL);
  s->n++;
}

static char dir[200], ca_dir[256], tpl_dir[256], policy[300], db[300];
static mw_prov_ca_t *ca;
static sink_t sink;

static const char fleet_tpl[] =
    "{\"Parameters\":{\"SerialNumber\":{\"Type\":\"String\",\"AllowedPattern\":\"[0-9]{4}\"},"
    "\"AWS::IoT::Certificate::Id\":{\"Type\":\"String\"}},"
    "\"Resources\":{\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"OverrideSettings\":{\"AttributePayload\":\"MERGE\"},"
    "\"Properties\":{\"ThingName\":{\"Fn::Join\":[\"\",[\"car-\",{\"Ref\":\"SerialNumber\"}]]},"
    "\"AttributePayload\":{\"serial\":{\"Ref\":\"SerialNumber\"}}}},"
    "\"cert\":{\"Type\":\"AWS::IoT::Certificate\",\"Properties\":{\"CertificateId\":{\"Ref\":\"AWS::IoT::Certificate::Id\"},"
    "\"Status\":\"ACTIVE\"}},"
    "\"policy\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyName\":\"car\"}}},"
    "\"DeviceConfiguration\":{\"Fleet\":\"demo\"}}";
static const char jitp_tpl[] =
    "{\"Parameters\":{\"AWS::IoT::Certificate::CommonName\":{\"Type\":\"String\"}},"
    "\"Resources\":{\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":{\"Ref\":"
    "\"AWS::IoT::Certificate::CommonName\"}}},"
    "\"cert\":{\"Type\":\"AWS::IoT::Certificate\",\"Properties\":{\"CertificateId\":{\"Ref\":\"AWS::IoT::Certificate::Id\"},"
    "\"Status\":\"ACTIVE\"}},"
    "\"policy\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyName\":\"car\"}}}}";
static const char nopolicy_tpl[] =
    "{\"Resources\":{\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":\"lonely\"}},"
    "\"cert\":{\"Type\":\"AWS::IoT::Certificate\",\"Properties\":{\"CertificateId\":{\"Ref\":\"AWS::IoT::Certificate::Id\"},"
    "\"Status\":\"ACTIVE\"}},"
    "\"policy\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyName\":\"bus\"}}}}";
static const char policy_json[] =
    "{\"version\":1,\"policies\":{\"car\":{\"publish\":[\"cars/${thing}/#\"],\"subscribe_pattern\":[\"cars/${thing}/#\"]}},"
    "\"identities\":[]}";

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/mw_prov_svc_%d", (int)getpid());
  mkdir(dir, 0700);
  snprintf(ca_dir, sizeof ca_dir, "%s/ca", dir);
  snprintf(tpl_dir, sizeof tpl_dir, "%s/templates", dir);
  snprintf(policy, sizeof policy, "%s/policy.json", dir);
  snprintf(db, sizeof db, "%s/prov.db", dir);
  CHECK(prov_test_make_ca(ca_dir, "Svc CA", 365) == 0);
  mkdir(tpl_dir, 0700);
  char p[400];
  snprintf(p, sizeof p, "%s/fleet.json", tpl_dir);
  prov_test_write(p, fleet_tpl);
  snprintf(p, sizeof p, "%s/jitp.json", tpl_dir);
  prov_test_write(p, jitp_tpl);
  snprintf(p, sizeof p, "%s/nopolicy.json", tpl_dir);
  prov_test_write(p, nopolicy_tpl);
  snprintf(p, sizeof p, "%s/README.txt", tpl_dir); /* not a template: ignored */
  prov_test_write(p, "x");
  prov_test_write(policy, policy_json);
  char err[300];
  CHECK(mw_prov_ca_load(ca_dir, &ca, err, sizeof err) == MW_OK);
}

static mw_prov_service_t *open_svc(bool admin) {
  mw_prov_config_t cfg = {0};
  cfg.ca = ca;
  cfg.db_path = db;
  cfg.templates_dir = tpl_dir;
  cfg.policy_path = policy;
  cfg.broker_admin = admin;
  cfg.jitp_template = "jitp";
  cfg.create_keys = true;
  cfg.admin_timeout_ms = 1000;
  mw_prov_service_t *svc = NULL;
  char err[400];
  mw_status_t st = mw_prov_service_open(&cfg, &svc, err, sizeof err);
  if (st != MW_OK) fprintf(stderr, "open: %s\n", err);
  CHECK(st == MW_OK);
  return svc;
}

static mw_status_t send(mw_prov_service_t *svc, const char *topic, const char *payload, int64_t now) {
  sink_clear(&sink);
  return mw_prov_service_handle(svc, topic, strlen(topic), payload, strlen(payload), now, on_emit, &sink);
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static void expect_rejected(const char *base, int status, const char *code, const char *msg_part) {
  char want[300];
  snprintf(want, sizeof want, "%s/rejected", base);
  CHECK_INT(sink.n, 1);
  if (sink.n < 1) return;
  CHECK_STR(sink.topic[0], want);
  CHECK_INT(cJSON_GetObjectItem(sink.body[0], "statusCode")->valueint, status);
  CHECK_STR(str(sink.body[0], "errorCode"), code);
  if (!strstr(str(sink.body[0], "errorMessage"), msg_part))
    fprintf(stderr, "message '%s' lacks '%s'\n", str(sink.body[0], "errorMessage"), msg_part);
  CHECK(strstr(str(sink.body[0], "errorMessage"), msg_part) != NULL);
}

/* A CreateCertificateFromCsr round; returns the accepted body (owned by the caller). */
static cJSON *create_from_csr(mw_prov_service_t *svc, EVP_PKEY *k, const char *cn) {
  mw_csr_subject_t s = {0};
  s.cn = cn;
  char *csr = NULL, err[200];
  CHECK(mw_csr_build(k, &s, &csr, err, sizeof err) == MW_OK);
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "certificateSigningRequest", csr);
  char *text = cJSON_PrintUnformatted(req);
  CHECK(send(svc, "$aws/certificates/create-from-csr/json", text, NOW_MS) == MW_OK);
  free(text);
  cJSON_Delete(req);
  free(csr);
  CHECK_INT(sink.n, 1);
  CHECK_STR(sink.topic[0], "$aws/certificates/create-from-csr/json/accepted");
  cJSON *b = sink.body[0];
  sink.body[0] = NULL;
  sink.n = 0;
  return b;
}

static void register_req(mw_prov_service_t *svc, const char *tpl, const char *token, const char *params,
                         int64_t now) {
  char topic[200], payload[1024];
  snprintf(topic, sizeof topic, "$aws/provisioning-templates/%s/provision/json", tpl);
  snprintf(payload, sizeof payload, "{\"certificateOwnershipToken\":\"%s\",\"parameters\":%s}", token, params);
  CHECK(send(svc, topic, payload, now) == MW_OK);
}

/* Answers the plugin command batch in sink.body[0] the way mosquitto does; errors[i] per command. */
static void plugin_answer(mw_prov_service_t *svc, const char *const *errors, const char *client_textname, int64_t now) {
  CHECK_STR(sink.topic[0], MW_PROV_DYNSEC_TOPIC);
  cJSON *cmds = cJSON_GetObjectItem(sink.body[0], "commands");
  cJSON *resp = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(resp, "responses");
  int i = 0;
  for (cJSON *c = cmds->child; c; c = c->next, i++) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "command", str(c, "command"));
    if (errors && errors[i]) cJSON_AddStringToObject(r, "error", errors[i]);
    else if (!strcmp(str(c, "command"), "getClient") && client_textname) {
      cJSON *data = cJSON_AddObjectToObject(r, "data"), *cl = cJSON_AddObjectToObject(data, "client");
      cJSON_AddStringToObject(cl, "username", str(c, "username"));
      cJSON_AddStringToObject(cl, "textname", client_textname);
    }
    cJSON_AddStringToObject(r, "correlationData", str(c, "correlationData"));
    cJSON_AddItemToArray(arr, r);
  }
  char *text = cJSON_PrintUnformatted(resp);
  cJSON_Delete(resp);
  CHECK(send(svc, MW_PROV_DYNSEC_RESPONSE, text, now) == MW_OK);
  free(text);
}

static void test_fleet_provisioning_round_trip(void) {
  unlink(db);
  mw_prov_service_t *svc = open_svc(true);
  const char *const *f = mw_prov_service_filters(svc);
  CHECK_STR(f[0], "$aws/certificates/create-from-csr/+");
  CHECK_STR(f[4], MW_PROV_DYNSEC_RESPONSE);
  CHECK(f[5] == NULL);
  EVP_PKEY *k = EVP_EC_gen("P-256");
  cJSON *acc = create_from_csr(svc, k, "0042");
  const char *token = str(acc, "certificateOwnershipToken");
  CHECK_INT(strlen(token), 43);
  CHECK_INT(strlen(str(acc, "certificateId")), 64);
  mw_prov_cert_info_t info;
  char err[200];
  const char *pem = str(acc, "certificatePem");
  CHECK(mw_prov_cert_info(pem, strlen(pem), &info, err, sizeof err) == MW_OK);
  CHECK_STR(info.id, str(acc, "certificateId"));
  /* The CN is the requested one plus a suffix of its own. */
  CHECK(strncmp(info.cn, "0042.", 5) == 0 && strlen(info.cn) == 17);
  CHECK(mw_prov_ca_verify(ca, pem, strlen(pem), NOW_MS / 1000, err, sizeof err) == MW_OK);

  /* RegisterThing: lookup, then the four writes, then accepted. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"0042\"}", NOW_MS);
  CHECK_INT(sink.n, 1);
  cJSON *cmd = cJSON_GetObjectItem(sink.body[0], "commands")->child;
  CHECK_STR(str(cmd, "command"), "getClient");
  CHECK_STR(str(cmd, "username"), info.cn);
  const char *not_found[] = {"Client not found"};
  plugin_answer(svc, not_found, NULL, NOW_MS + 5);
  CHECK_INT(sink.n, 1);
  cJSON *cmds = cJSON_GetObjectItem(sink.body[0], "commands");
  CHECK_INT(cJSON_GetArraySize(cmds), 4);
  cJSON *role = cJSON_GetArrayItem(cmds, 0), *client = cJSON_GetArrayItem(cmds, 2);
  CHECK_STR(str(role, "command"), "createRole");
  CHECK_STR(str(role, "rolename"), "provisioned/car-0042");
  char *acls = cJSON_PrintUnformatted(cJSON_GetObjectItem(role, "acls"));
  CHECK_STR(acls, "[{\"acltype\":\"publishClientSend\",\"topic\":\"cars/car-0042/#\",\"priority\":0,\"allow\":true},"
                  "{\"acltype\":\"subscribePattern\",\"topic\":\"cars/car-0042/#\",\"priority\":0,\"allow\":true}]");
  free(acls);
  CHECK_STR(str(client, "command"), "createClient");
  CHECK_STR(str(client, "username"), info.cn);
  CHECK_STR(str(client, "textname"), "thing car-0042");
  CHECK_STR(str(cJSON_GetArrayItem(cmds, 3), "command"), "modifyClient");
  const char *exists[] = {"Role already exists", NULL, "Client already exists", NULL};
  plugin_answer(svc, exists, NULL, NOW_MS + 10);
  CHECK_INT(sink.n, 1);
  CHECK_STR(sink.topic[0], "$aws/provisioning-templates/fleet/provision/json/accepted");
  CHECK_STR(str(sink.body[0], "thingName"), "car-0042");
  CHECK_STR(str(cJSON_GetObjectItem(sink.body[0], "deviceConfiguration"), "Fleet"), "demo");
  /* The answer names its request: the first 16 hex digits of SHA-256(token). */
  unsigned char md[32];
  char want[17];
  SHA256((const unsigned char *)token, strlen(token), md);
  for (int i = 0; i < 8; i++) sprintf(want + 2 * i, "%02x", md[i]);
  CHECK_STR(str(sink.body[0], "moonwireRequestId"), want);

  /* The store knows the thing and the active certificate. */
  mw_prov_cert_row_t row;
  CHECK(mw_prov_store_get_cert(mw_prov_service_store(svc), info.id, &row) == MW_OK);
  CHECK_STR(row.status, "ACTIVE");
  CHECK_STR(row.thing, "car-0042");
  mw_prov_thing_row_t th;
  CHECK(mw_prov_store_get_thing(mw_prov_service_store(svc), "car-0042", &th) == MW_OK);
  CHECK_STR(str(th.attributes, "serial"), "0042");
  CHECK_STR(th.template_name, "fleet");
  mw_prov_thing_row_free(&th);

  /* A token works once. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"0042\"}", NOW_MS + 20);
  expect_rejected("$aws/provisioning-templates/fleet/provision/json", 400, "InvalidCertificateOwnershipToken",
                  "already been used");
  mw_prov_stats_t stats;
  mw_prov_service_stats(svc, &stats);
  CHECK(stats.requests == 3 && stats.accepted == 2 && stats.rejected == 1 && stats.pending == 0);
  cJSON_Delete(acc);
  mw_prov_service_close(svc);

  /* State survives a restart: the used token is still refused. */
  svc = open_svc(true);
  CHECK(mw_prov_store_get_cert(mw_prov_service_store(svc), info.id, &row) == MW_OK);
  CHECK_STR(row.thing, "car-0042");
  EVP_PKEY_free(k);
  mw_prov_service_close(svc);
}

static void test_token_rules(void) {
  unlink(db);
  mw_prov_service_t *svc = open_svc(false);
  const char *base = "$aws/provisioning-templates/fleet/provision/json";
  register_req(svc, "fleet", "", "{}", NOW_MS);
  expect_rejected(base, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.");
  CHECK(send(svc, "$aws/provisioning-templates/fleet/provision/json", "{\"parameters\":{}}", NOW_MS) == MW_OK);
  expect_rejected(base, 400, "InvalidCertificateOwnershipToken", "cannot be empty");
  register_req(svc, "fleet", "forged-token", "{}", NOW_MS);
  expect_rejected(base, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid.");
  EVP_PKEY *k = EVP_EC_gen("P-256");
  cJSON *acc = create_from_csr(svc, k, "1234");
  const char *token = str(acc, "certificateOwnershipToken");
  /* An hour later the token is gone (AWS IoT: one hour). */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"1234\"}", NOW_MS + 3600 * 1000);
  expect_rejected(base, 400, "InvalidCertificateOwnershipToken", "has expired");
  /* Template refusals leave the token usable. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"12\"}", NOW_MS);
  expect_rejected(base, 400, "InvalidParameters", "AllowedPattern");
  register_req(svc, "nosuch", token, "{}", NOW_MS);
  expect_rejected("$aws/provisioning-templates/nosuch/provision/json", 404, "ResourceNotFound", "Template nosuch not found");
  register_req(svc, "nopolicy", token, "{}", NOW_MS);
  expect_rejected("$aws/provisioning-templates/nopolicy/provision/json", 404, "ResourceNotFound", "Policy bus");
  CHECK(send(svc, base, "{\"certificateOwnershipToken\":\"x\",\"parameters\":[1]}", NOW_MS) == MW_OK);
  expect_rejected(base, 400, "InvalidParameters", "object of strings");
  /* Without broker administration the registration is answered at once. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"1234\"}", NOW_MS);
  CHECK_INT(sink.n, 1);
  CHECK_STR(sink.topic[0], "$aws/provisioning-templates/fleet/provision/json/accepted");
  cJSON_Delete(acc);
  EVP_PKEY_free(k);
  mw_prov_service_close(svc);
}

static void test_broker_refusals_and_timeouts(void) {
  unlink(db);
  mw_prov_service_t *svc = open_svc(true);
  const char *base = "$aws/provisioning-templates/fleet/provision/json";
  EVP_PKEY *k = EVP_EC_gen("P-256");
  cJSON *acc = create_from_csr(svc, k, "5555");
  const char *token = str(acc, "certificateOwnershipToken");
  /* The certificate's CN is already another identity. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"5555\"}", NOW_MS);
  plugin_answer(svc, NULL, "service dispatcher", NOW_MS);
  expect_rejected(base, 403, "AccessDenied", "already a broker identity (service dispatcher)");
  /* A write the plugin refuses. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"5555\"}", NOW_MS);
  plugin_answer(svc, (const char *[]){"Client not found"}, NULL, NOW_MS);
  plugin_answer(svc, (const char *[]){NULL, "Internal error", NULL, NULL}, NULL, NOW_MS);
  expect_rejected(base, 500, "InternalFailure", "Internal error");
  /* The plugin does not answer: a 500 after the time-out; while pending, a second request waits. */
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"5555\"}", NOW_MS);
  CHECK_INT(sink.n, 1);
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"5555\"}", NOW_MS);
  expect_rejected(base, 409, "ConflictingRequest", "in progress");
  sink_clear(&sink);
  mw_prov_service_tick(svc, NOW_MS + 500, on_emit, &sink);
  CHECK_INT(sink.n, 0);
  mw_prov_service_tick(svc, NOW_MS + 1001, on_emit, &sink);
  CHECK_INT(sink.n, 1);
  CHECK_STR(sink.topic[0], "$aws/provisioning-templates/fleet/provision/json/rejected");
  CHECK(strstr(str(sink.body[0], "errorMessage"), "no answer within 1000 ms") != NULL);
  /* Responses of other administrators and junk on the response topic are ignored. */
  CHECK(send(svc, MW_PROV_DYNSEC_RESPONSE, "{\"responses\":[{\"command\":\"x\",\"correlationData\":\"other:1:0\"}]}",
             NOW_MS) == MW_OK);
  CHECK_INT(sink.n, 0);
  CHECK(send(svc, MW_PROV_DYNSEC_RESPONSE, "not json", NOW_MS) == MW_OK);
  CHECK_INT(sink.n, 0);
  /* The token is still good after all that. */
  mw_prov_token_row_t tr;
  (void)tr;
  register_req(svc, "fleet", token, "{\"SerialNumber\":\"5555\"}", NOW_MS + 2000);
  plugin_answer(svc, (const char *[]){"Client not found"}, NULL, NOW_MS + 2000);
  plugin_answer(svc, NULL, NULL, NOW_MS + 2000);
  CHECK_STR(sink.topic[0], "$aws/provisioning-templates/fleet/provision/json/accepted");
  /* Probe. */
  CHECK_INT(mw_prov_service_admin_state(svc), 0);
  sink_clear(&sink);
  mw_prov_service_probe(svc, NOW_MS, on_emit, &sink);
  CHECK_INT(sink.n, 1);
  plugin_answer(svc, NULL, NULL, NOW_MS);
  CHECK_INT(mw_prov_service_admin_state(svc), 1);
  mw_prov_service_probe(svc, NOW_MS, on_emit, &sink);
  mw_prov_service_tick(svc, NOW_MS + 1000, on_emit, &sink);
  CHECK_INT(mw_prov_service_admin_state(svc), -1);
  cJSON_Delete(acc);
  EVP_PKEY_free(k);
  mw_prov_service_close(svc);
}

static void test_create_keys_and_jitp(void) {
  unlink(db);
  mw_prov_service_t *svc = open_svc(false);
  CHECK(send(svc, "$aws/certificates/create/json", "", NOW_MS) == MW_OK);
  CHECK_STR(sink.topic[0], "$aws/certificates/create/json/accepted");
  const char *key = str(sink.body[0], "privateKey");
  CHECK(strstr(key, "-----BEGIN PRIVATE KEY-----") == key);
  const char *pem = str(sink.body[0], "certificatePem");
  mw_prov_cert_info_t info;
  char err[200];
  CHECK(mw_prov_cert_info(pem, strlen(pem), &info, err, sizeof err) == MW_OK);
  CHECK(strncmp(info.cn, "device.", 7) == 0);
  CHECK(send(svc, "$aws/certificates/create/json", "{}", NOW_MS) == MW_OK);
  CHECK_STR(sink.topic[0], "$aws/certificates/create/json/accepted");

  /* JITP: a certificate the CA issued, with CN = thing name. */
  EVP_PKEY *k = EVP_EC_gen("P-256");
  mw_prov_issue_t opt = {"car-77", 10, NOW_MS / 1000};
  mw_prov_cert_t c;
  CHECK(mw_prov_ca_issue_key(ca, k, &opt, &c, err, sizeof err) == MW_OK);
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "certificatePem", c.pem);
  char *text = cJSON_PrintUnformatted(req);
  CHECK(send(svc, "moonwire/certificates/register/json", text, NOW_MS) == MW_OK);
  CHECK_STR(sink.topic[0], "moonwire/certificates/register/json/accepted");
  CHECK_STR(str(sink.body[0], "thingName"), "car-77");
  CHECK_STR(str(sink.body[0], "certificateId"), c.id);
  /* Registering it again is harmless. */
  CHECK(send(svc, "moonwire/certificates/register/json", text, NOW_MS) == MW_OK);
  CHECK_STR(sink.topic[0], "moonwire/certificates/register/json/accepted");
  mw_prov_cert_row_t row;
  CHECK(mw_prov_store_get_cert(mw_prov_service_store(svc), c.id, &row) == MW_OK);
  CHECK_STR(row.source, "jitp");
  CHECK_STR(row.status, "ACTIVE");
  free(text);
  cJSON_Delete(req);
  /* A certificate from elsewhere is refused. */
  char other[300];
  snprintf(other, sizeof other, "%s/other", dir);
  prov_test_make_ca(other, "Elsewhere", 10);
  mw_prov_ca_t *oca;
  CHECK(mw_prov_ca_load(other, &oca, err, sizeof err) == MW_OK);
  mw_prov_cert_t oc;
  CHECK(mw_prov_ca_issue_key(oca, k, &opt, &oc, err, sizeof err) == MW_OK);
  req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "certificatePem", oc.pem);
  text = cJSON_PrintUnformatted(req);
  CHECK(send(svc, "moonwire/certificates/register/json", text, NOW_MS) == MW_OK);
  expect_rejected("moonwire/certificates/register/json", 403, "AccessDenied", "not issued by");
  free(text);
  cJSON_Delete(req);
  mw_prov_cert_free(&oc);
  mw_prov_ca_free(oca);
  mw_prov_cert_free(&c);
  EVP_PKEY_free(k);
  mw_prov_service_close(svc);

  /* CreateKeysAndCertificate can be switched off. */
  mw_prov_config_t cfg = {0};
  cfg.ca = ca;
  cfg.db_path = ":memory:";
  mw_prov_service_t *s2;
  CHECK(mw_prov_service_open(&cfg, &s2, err, sizeof err) == MW_OK);
  CHECK(send(s2, "$aws/certificates/create/json", "", NOW_MS) == MW_OK);
  expect_rejected("$aws/certificates/create/json", 403, "AccessDenied", "disabled");
  CHECK(send(s2, "moonwire/certificates/register/json", "{\"certificatePem\":\"x\"}", NOW_MS) == MW_OK);
  expect_rejected("moonwire/certificates/register/json", 404, "ResourceNotFound", "No JITP template");
  mw_prov_service_close(s2);
}

static void test_bad_requests(void) {
  unlink(db);
  mw_prov_service_t *svc = open_svc(false);
  const char *csr = "$aws/certificates/create-from-csr/json";
  CHECK(send(svc, csr, "{not json", NOW_MS) == MW_OK);
  expect_rejected(csr, 400, "InvalidPayload", "not a JSON object");
  CHECK(send(svc, csr, "", NOW_MS) == MW_OK);
  expect_rejected(csr, 400, "InvalidPayload", "empty");
  CHECK(send(svc, csr, "{}", NOW_MS) == MW_OK);
  expect_rejected(csr, 400, "InvalidPayload", "certificateSigningRequest is required");
  CHECK(send(svc, csr, "{\"certificateSigningRequest\":\"-----BEGIN CERTIFICATE REQUEST-----\\nAAAA\"}", NOW_MS) == MW_OK);
  expect_rejected(csr, 400, "InvalidCsr", "Invalid certificate signing request");
  char *big = malloc(MW_PROV_REQUEST_MAX + 2);
  memset(big, ' ', MW_PROV_REQUEST_MAX + 1);
  big[MW_PROV_REQUEST_MAX + 1] = 0;
  CHECK(send(svc, csr, big, NOW_MS) == MW_OK);
  expect_rejected(csr, 400, "InvalidPayload", "larger than");
  free(big);
  /* Not ours: nothing emitted. */
  static const char *const not_ours[] = {
      "$aws/certificates/create-from-csr/json/accepted", "$aws/certificates/create-from-csr/xml",
      "$aws/certificates/create-from-csr", "$aws/provisioning-templates/a b/provision/json",
      "$aws/provisioning-templates//provision/json", "$aws/provisioning-templates/x/provision/json/rejected",
      "$aws/provisioning-templates/x/provisionx/json", "$aws/things/x/shadow/get", "",
      MW_PROV_DYNSEC_RESPONSE /* no broker administration */,
  };
  for (size_t i = 0; i < sizeof not_ours / sizeof not_ours[0]; i++) {
    CHECK(send(svc, not_ours[i], "{}", NOW_MS) == MW_ERR_INVALID);
    CHECK_INT(sink.n, 0);
  }
  CHECK(send(svc, "$aws/certificates/create-from-csr/cbor", "\xa0", NOW_MS) == MW_ERR_UNSUPPORTED);
  CHECK_INT(sink.n, 0);
  mw_prov_service_close(svc);
}

static void test_open_errors(void) {
  mw_prov_config_t cfg = {0};
  char err[400], p[400];
  mw_prov_service_t *svc;
  cfg.ca = ca;
  cfg.db_path = ":memory:";
  cfg.broker_admin = true;
  CHECK(mw_prov_service_open(&cfg, &svc, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "--policy") != NULL);
  cfg.broker_admin = false;
  cfg.templates_dir = "/nonexistent";
  CHECK(mw_prov_service_open(&cfg, &svc, err, sizeof err) == MW_ERR_IO);
  cfg.templates_dir = tpl_dir;
  cfg.jitp_template = "missing";
  CHECK(mw_prov_service_open(&cfg, &svc, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "'missing'") != NULL);
  cfg.jitp_template = NULL;
  snprintf(p, sizeof p, "%s/broken.json", tpl_dir);
  prov_test_write(p, "{\"Resources\":{}}");
  CHECK(mw_prov_service_open(&cfg, &svc, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "broken.json") != NULL);
  /* A reload that fails keeps the templates that worked. */
  unlink(p);
  CHECK(mw_prov_service_open(&cfg, &svc, err, sizeof err) == MW_OK);
  prov_test_write(p, "{\"Resources\":{}}");
  CHECK(mw_prov_service_reload(svc, err, sizeof err) != MW_OK);
  unlink(p);
  EVP_PKEY *k = EVP_EC_gen("P-256");
  cJSON *acc = create_from_csr(svc, k, "7777");
  register_req(svc, "fleet", str(acc, "certificateOwnershipToken"), "{\"SerialNumber\":\"7777\"}", NOW_MS);
  CHECK_STR(sink.topic[0], "$aws/provisioning-templates/fleet/provision/json/accepted");
  cJSON_Delete(acc);
  EVP_PKEY_free(k);
  mw_prov_service_close(svc);
}

static void test_prune_forgets_unused_certificates(void) {
  unlink(db);
  mw_prov_service_t *svc = open_svc(false);
  EVP_PKEY *k = EVP_EC_gen("P-256");
  cJSON *used = create_from_csr(svc, k, "9001"), *unused = create_from_csr(svc, k, "9002");
  register_req(svc, "fleet", str(used, "certificateOwnershipToken"), "{\"SerialNumber\":\"9001\"}", NOW_MS);
  CHECK_STR(sink.topic[0], "$aws/provisioning-templates/fleet/provision/json/accepted");
  mw_prov_store_t *st = mw_prov_service_store(svc);
  int removed = -1;
  /* Nothing is older than the cut yet. */
  CHECK(mw_prov_store_prune(st, NOW_MS / 1000 - 3600, &removed) == MW_OK);
  CHECK_INT(removed, 0);
  /* An hour and more later the pending one goes, the registered one stays. */
  CHECK(mw_prov_store_prune(st, NOW_MS / 1000 + 1, &removed) == MW_OK);
  CHECK_INT(removed, 1);
  mw_prov_cert_row_t row;
  CHECK(mw_prov_store_get_cert(st, str(unused, "certificateId"), &row) == MW_ERR_NOT_FOUND);
  CHECK(mw_prov_store_get_cert(st, str(used, "certificateId"), &row) == MW_OK);
  CHECK_STR(row.status, "ACTIVE");
  /* Its token went with it: a late RegisterThing is told the token is invalid. */
  register_req(svc, "fleet", str(unused, "certificateOwnershipToken"), "{\"SerialNumber\":\"9002\"}",
               NOW_MS + 7200 * 1000);
  expect_rejected("$aws/provisioning-templates/fleet/provision/json", 400, "InvalidCertificateOwnershipToken",
                  "is invalid");
  cJSON_Delete(used);
  cJSON_Delete(unused);
  EVP_PKEY_free(k);
  mw_prov_service_close(svc);
}

int main(int argc, char **argv) {
  setup();
  static const mw_test_case_t cases[] = {
      MW_TEST(test_fleet_provisioning_round_trip), MW_TEST(test_token_rules),
      MW_TEST(test_broker_refusals_and_timeouts), MW_TEST(test_create_keys_and_jitp),
      MW_TEST(test_bad_requests), MW_TEST(test_open_errors), MW_TEST(test_prune_forgets_unused_certificates),
  };
  int rc = mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  sink_clear(&sink);
  mw_prov_ca_free(ca);
  prov_test_rmdir(dir);
  return rc;
}
