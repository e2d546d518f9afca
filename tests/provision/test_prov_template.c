/*
** Provisioning templates: what is refused when a template is loaded (with the place named),
** every intrinsic, parameter checks, builtins for fleet provisioning and JITP, and the
** error answers a device gets. Also the broker policy description's ACL expansion.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdlib.h>
#include <string.h>

#include "mw_prov_policy.h"
#include "mw_prov_template.h"

static mw_prov_template_t *parse_ok(const char *json) {
  mw_prov_template_t *t = NULL;
  char err[400] = "";
  mw_status_t st = mw_prov_template_parse("tpl", json, strlen(json), &t, err, sizeof err);
  if (st != MW_OK) fprintf(stderr, "unexpected parse error: %s\n", err);
  CHECK(st == MW_OK);
  return t;
}

/* Expects a parse failure whose message contains want. */
static void parse_bad(const char *json, const char *want) {
  mw_prov_template_t *t = NULL;
  char err[400] = "";
  CHECK(mw_prov_template_parse("tpl", json, strlen(json), &t, err, sizeof err) != MW_OK);
  CHECK(t == NULL);
  if (!strstr(err, want)) fprintf(stderr, "error '%s' does not contain '%s'\n", err, want);
  CHECK(strstr(err, want) != NULL);
}

#define THING(name) "\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":" name "}}"
#define CERT "\"cert\":{\"Type\":\"AWS::IoT::Certificate\",\"Properties\":{\"CertificateId\":{\"Ref\":\"AWS::IoT::Certificate::Id\"},\"Status\":\"ACTIVE\"}}"

static const char fleet[] =
    "{\"Parameters\":{\"SerialNumber\":{\"Type\":\"String\",\"AllowedPattern\":\"[0-9A-F]{4,8}\"},"
    "\"Location\":{\"Type\":\"String\",\"Default\":\"lab\",\"AllowedValues\":[\"lab\",\"field\"]},"
    "\"Model\":{\"Type\":\"String\",\"Default\":\"m1\",\"MinLength\":2,\"MaxLength\":3},"
    "\"AWS::IoT::Certificate::Id\":{\"Type\":\"String\"}},"
    "\"Mappings\":{\"models\":{\"m1\":{\"group\":\"first-gen\"},\"m22\":{\"group\":\"second-gen\"}}},"
    "\"Resources\":{"
    "\"thing\":{\"Type\":\"AWS::IoT::Thing\",\"OverrideSettings\":{\"AttributePayload\":\"MERGE\"},"
    "\"Properties\":{\"ThingName\":{\"Fn::Join\":[\"\",[\"car-\",{\"Ref\":\"SerialNumber\"}]]},"
    "\"AttributePayload\":{\"serial\":{\"Ref\":\"SerialNumber\"},\"where\":{\"Fn::Sub\":\"${Location}/${Model}\"},"
    "\"first\":{\"Fn::Select\":[0,{\"Fn::Split\":[\"-\",\"a-b-c\"]}]},\"n\":42},"
    "\"ThingGroups\":[{\"Fn::FindInMap\":[\"models\",{\"Ref\":\"Model\"},\"group\"]},\"fleet\"],"
    "\"ThingTypeName\":\"car\"}},"
    CERT ","
    "\"policy\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyName\":\"car\"}},"
    "\"policy2\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyName\":{\"Fn::Sub\":[\"${p}-extra\",{\"p\":\"car\"}]}}}},"
    "\"DeviceConfiguration\":{\"Fleet\":\"demo\",\"Where\":{\"Ref\":\"Location\"},\"Lit\":{\"Fn::Sub\":\"${!NotAVar}\"}}}";

static cJSON *params(const char *json) { return cJSON_Parse(json); }

static void test_apply_fleet_template(void) {
  mw_prov_template_t *t = parse_ok(fleet);
  CHECK_STR(mw_prov_template_name(t), "tpl");
  cJSON *p = params("{\"SerialNumber\":\"00AF\",\"Model\":\"m22\",\"Extra\":\"ignored\"}");
  mw_prov_builtins_t b = {"c0ffee", NULL};
  mw_prov_outcome_t o;
  mw_prov_error_t e;
  CHECK(mw_prov_template_apply(t, p, &b, &o, &e) == MW_OK);
  CHECK_STR(o.thing_name, "car-00AF");
  CHECK_STR(cJSON_GetObjectItem(o.attributes, "serial")->valuestring, "00AF");
  CHECK_STR(cJSON_GetObjectItem(o.attributes, "where")->valuestring, "lab/m22");
  CHECK_STR(cJSON_GetObjectItem(o.attributes, "first")->valuestring, "a");
  CHECK_STR(cJSON_GetObjectItem(o.attributes, "n")->valuestring, "42");
  CHECK_INT(cJSON_GetArraySize(o.thing_groups), 2);
  CHECK_STR(cJSON_GetArrayItem(o.thing_groups, 0)->valuestring, "second-gen");
  CHECK_STR(o.thing_type, "car");
  CHECK(o.override_attributes == MW_PROV_OVERRIDE_MERGE && o.override_groups == MW_PROV_OVERRIDE_DO_NOTHING);
  CHECK_INT(o.npolicies, 2);
  CHECK_STR(o.policies[0], "car");
  CHECK_STR(o.policies[1], "car-extra");
  CHECK(o.has_certificate && o.certificate_active);
  CHECK_STR(cJSON_GetObjectItem(o.device_configuration, "Fleet")->valuestring, "demo");
  CHECK_STR(cJSON_GetObjectItem(o.device_configuration, "Where")->valuestring, "lab");
  CHECK_STR(cJSON_GetObjectItem(o.device_configuration, "Lit")->valuestring, "${NotAVar}");
  mw_prov_outcome_free(&o);
  cJSON_Delete(p);
  mw_prov_template_free(t);
}

/* Applies fleet to params and expects a 4xx with code and a message containing want. */
static void apply_bad(const char *json_params, const char *code, const char *want) {
  mw_prov_template_t *t = parse_ok(fleet);
  cJSON *p = json_params ? params(json_params) : NULL;
  mw_prov_builtins_t b = {"c0ffee", NULL};
  mw_prov_outcome_t o;
  mw_prov_error_t e;
  CHECK(mw_prov_template_apply(t, p, &b, &o, &e) == MW_ERR_INVALID);
  CHECK_INT(e.status, 400);
  CHECK_STR(e.code, code);
  if (!strstr(e.message, want)) fprintf(stderr, "message '%s' does not contain '%s'\n", e.message, want);
  CHECK(strstr(e.message, want) != NULL);
  CHECK(o.thing_name == NULL);
  cJSON_Delete(p);
  mw_prov_template_free(t);
}

static void test_parameter_checks(void) {
  apply_bad(NULL, "InvalidParameters", "Missing required parameter SerialNumber");
  apply_bad("{}", "InvalidParameters", "Missing required parameter SerialNumber");
  apply_bad("{\"SerialNumber\":\"xyz\"}", "InvalidParameters", "does not match AllowedPattern");
  apply_bad("{\"SerialNumber\":\"00AF00AF00\"}", "InvalidParameters", "AllowedPattern"); /* anchored */
  apply_bad("{\"SerialNumber\":\"00AF\",\"Location\":\"moon\"}", "InvalidParameters", "AllowedValues");
  apply_bad("{\"SerialNumber\":\"00AF\",\"Model\":\"m\"}", "InvalidParameters", "too short");
  apply_bad("{\"SerialNumber\":\"00AF\",\"Model\":\"m1234\"}", "InvalidParameters", "too long");
  apply_bad("{\"SerialNumber\":42}", "InvalidParameters", "must be a string");
  apply_bad("[1]", "InvalidParameters", "object of strings");
  /* Mapping without the key. */
  apply_bad("{\"SerialNumber\":\"00AF\",\"Model\":\"m9\"}", "InvalidParameters", "Fn::FindInMap");
}

static void test_thing_name_and_certificate_rules(void) {
  const char *tpl = "{\"Parameters\":{\"N\":{\"Type\":\"String\"}},\"Resources\":{" THING("{\"Ref\":\"N\"}") ","
                    "\"c\":{\"Type\":\"AWS::IoT::Certificate\",\"Properties\":{\"CertificateId\":\"other\","
                    "\"Status\":\"Inactive\"}}}}";
  mw_prov_template_t *t = parse_ok(tpl);
  mw_prov_builtins_t b = {"c0ffee", NULL};
  mw_prov_outcome_t o;
  mw_prov_error_t e;
  cJSON *p = params("{\"N\":\"bad name\"}");
  CHECK(mw_prov_template_apply(t, p, &b, &o, &e) == MW_ERR_INVALID);
  CHECK(strstr(e.message, "Thing name 'bad name' is not valid") != NULL);
  cJSON_Delete(p);
  p = params("{\"N\":\"ok\"}");
  CHECK(mw_prov_template_apply(t, p, &b, &o, &e) == MW_ERR_INVALID);
  CHECK(strstr(e.message, "must name the request's certificate") != NULL);
  b.certificate_id = "other";
  CHECK(mw_prov_template_apply(t, p, &b, &o, &e) == MW_OK);
  CHECK(o.has_certificate && !o.certificate_active); /* Status is case-insensitive */
  CHECK_INT(cJSON_GetArraySize(o.device_configuration), 0);
  mw_prov_outcome_free(&o);
  cJSON_Delete(p);
  mw_prov_template_free(t);
}

static void test_jitp_builtins(void) {
  const char *tpl = "{\"Parameters\":{\"AWS::IoT::Certificate::CommonName\":{\"Type\":\"String\"},"
                    "\"AWS::IoT::Certificate::Country\":{\"Type\":\"String\"}},"
                    "\"Resources\":{" THING("{\"Ref\":\"AWS::IoT::Certificate::CommonName\"}") "," CERT "},"
                    "\"DeviceConfiguration\":{\"C\":{\"Ref\":\"AWS::IoT::Certificate::Country\"}}}";
  mw_prov_template_t *t = parse_ok(tpl);
  mw_prov_cert_info_t info;
  memset(&info, 0, sizeof info);
  strcpy(info.cn, "car-77");
  strcpy(info.country, "DE");
  mw_prov_builtins_t b = {"id77", &info};
  mw_prov_outcome_t o;
  mw_prov_error_t e;
  /* The request cannot override what the certificate says. */
  cJSON *p = params("{\"AWS::IoT::Certificate::CommonName\":\"intruder\"}");
  CHECK(mw_prov_template_apply(t, p, &b, &o, &e) == MW_OK);
  CHECK_STR(o.thing_name, "car-77");
  CHECK_STR(cJSON_GetObjectItem(o.device_configuration, "C")->valuestring, "DE");
  mw_prov_outcome_free(&o);
  /* A subject field the certificate lacks fails provisioning (as with AWS JITP). */
  info.country[0] = 0;
  CHECK(mw_prov_template_apply(t, NULL, &b, &o, &e) == MW_ERR_INVALID);
  CHECK(strstr(e.message, "AWS::IoT::Certificate::Country") != NULL);
  /* Fleet provisioning has no certificate subject. */
  b.cert = NULL;
  CHECK(mw_prov_template_apply(t, NULL, &b, &o, &e) == MW_ERR_INVALID);
  cJSON_Delete(p);
  mw_prov_template_free(t);
}

static void test_parse_errors(void) {
  parse_bad("{", "not valid JSON");
  parse_bad("[]", "must be an object");
  parse_bad("{\"Resources\":{}}", "at least one resource");
  parse_bad("{\"Resources\":{" CERT "}}", "needs an AWS::IoT::Thing");
  parse_bad("{\"Foo\":1,\"Resources\":{" THING("\"x\"") "}}", "unknown or unsupported key 'Foo'");
  parse_bad("{\"Conditions\":{},\"Resources\":{" THING("\"x\"") "}}", "conditions are not supported");
  parse_bad("{\"Resources\":{" THING("{\"Ref\":\"Nope\"}") "}}", "'Nope' is not a parameter");
  parse_bad("{\"Resources\":{" THING("{\"Fn::If\":[1,2,3]}") "}}", "Fn::If is not supported");
  parse_bad("{\"Resources\":{" THING("{\"Fn::Join\":[\"-\"]}") "}}", "needs [\"delimiter\"");
  parse_bad("{\"Resources\":{" THING("{\"Fn::Sub\":\"${Missing}\"}") "}}", "${Missing}");
  parse_bad("{\"Resources\":{" THING("{\"Fn::Sub\":\"${open\"}") "}}", "unterminated");
  parse_bad("{\"Resources\":{" THING("{\"Fn::FindInMap\":[\"m\",\"a\",\"b\"]}") "}}", "no mapping 'm'");
  parse_bad("{\"Resources\":{" THING("{\"Fn::Split\":[\",\",\"a,b\"]}") "}}", "expected a string, found a list");
  parse_bad("{\"Resources\":{" THING("{\"a\":1,\"b\":2}") "}}", "expected a value");
  parse_bad("{\"Resources\":{\"t\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{}}}}", "ThingName is required");
  parse_bad("{\"Resources\":{" THING("\"x\"") ",\"t2\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":\"y\"}}}}",
            "one thing only");
  parse_bad("{\"Resources\":{" THING("\"x\"") ",\"p\":{\"Type\":\"AWS::IoT::Policy\",\"Properties\":{\"PolicyDocument\":\"{}\"}}}}",
            "PolicyDocument is not supported");
  parse_bad("{\"Resources\":{" THING("\"x\"") ",\"r\":{\"Type\":\"AWS::S3::Bucket\",\"Properties\":{}}}}",
            "'AWS::S3::Bucket' is not supported");
  parse_bad("{\"Parameters\":{\"P\":{\"Type\":\"Number\"}},\"Resources\":{" THING("\"x\"") "}}", "Type must be");
  parse_bad("{\"Parameters\":{\"P\":{\"AllowedPattern\":\"(\"}},\"Resources\":{" THING("\"x\"") "}}",
            "not a POSIX extended regular expression");
  parse_bad("{\"Mappings\":{\"m\":{\"a\":{\"b\":{\"Ref\":\"x\"}}}},\"Resources\":{" THING("\"x\"") "}}",
            "intrinsics are not allowed in Mappings");
  parse_bad("{\"Resources\":{" THING("\"x\"") "},\"DeviceConfiguration\":{\"a\":{\"b\":\"c\"}}}", "nested objects");
  parse_bad("{\"Resources\":{\"t\":{\"Type\":\"AWS::IoT::Thing\",\"OverrideSettings\":{\"AttributePayload\":\"KEEP\"},"
            "\"Properties\":{\"ThingName\":\"x\"}}}}",
            "MERGE, REPLACE or DO_NOTHING");
  /* Deep nesting is bounded. */
  char deep[2048] = "";
  for (int i = 0; i < 20; i++) strcat(deep, "{\"Fn::Join\":[\"\",[");
  strcat(deep, "\"x\"");
  for (int i = 0; i < 20; i++) strcat(deep, "]]}");
  char tpl[4096];
  snprintf(tpl, sizeof tpl, "{\"Resources\":{\"t\":{\"Type\":\"AWS::IoT::Thing\",\"Properties\":{\"ThingName\":%s}}}}", deep);
  parse_bad(tpl, "deeper than");
  /* Size and name limits. */
  mw_prov_template_t *t;
  char err[300];
  char *big = malloc(MW_PROV_TEMPLATE_MAX + 10);
  memset(big, ' ', MW_PROV_TEMPLATE_MAX + 9);
  big[MW_PROV_TEMPLATE_MAX + 9] = 0;
  CHECK(mw_prov_template_parse("tpl", big, strlen(big), &t, err, sizeof err) == MW_ERR_TOO_LARGE);
  free(big);
  CHECK(mw_prov_template_parse("bad name", "{}", 2, &t, err, sizeof err) == MW_ERR_INVALID);
  CHECK(mw_prov_template_name_ok("a-b_C9", 6) && !mw_prov_template_name_ok("a/b", 3) &&
        !mw_prov_template_name_ok("0123456789012345678901234567890123456", 37));
  CHECK(mw_prov_thing_name_ok("car:01_x-y") && !mw_prov_thing_name_ok("") && !mw_prov_thing_name_ok("a b") &&
        !mw_prov_thing_name_ok("a/b"));
}

static void test_policy_expansion(void) {
  const char *desc =
      "{\"version\":1,\"policies\":{\"car\":{\"description\":\"d\",\"publish\":[\"cars/${thing}/#\"],"
      "\"receive\":[\"cars/${thing}/#\",\"cars/+/telemetry\"],\"subscribe_literal\":[\"cars/+/telemetry\"],"
      "\"subscribe_pattern\":[\"$aws/things/${iot:Connection.Thing.ThingName}/#\"],"
      "\"deny\":{\"publish\":[\"cars/${thing}/secret\"]},\"connect\":[\"${thing}\"]},"
      "\"extra\":{\"publish\":[\"cars/${thing}/#\",\"x/y\"]}},\"identities\":[]}";
  mw_prov_policies_t *p;
  char err[300];
  CHECK(mw_prov_policies_parse(desc, strlen(desc), &p, err, sizeof err) == MW_OK);
  if (!p) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  CHECK(mw_prov_policies_has(p, "car") && !mw_prov_policies_has(p, "bus"));
  char *names[] = {(char *)"car", (char *)"extra"};
  cJSON *acls = mw_prov_policies_acls(p, names, 2, "car-9", err, sizeof err);
  char *text = cJSON_PrintUnformatted(acls);
  /* mkbroker's order: per type, deny then allow; duplicates once; ${...} expanded. */
  CHECK_STR(text,
            "[{\"acltype\":\"publishClientSend\",\"topic\":\"cars/car-9/secret\",\"priority\":100,\"allow\":false},"
            "{\"acltype\":\"publishClientSend\",\"topic\":\"cars/car-9/#\",\"priority\":0,\"allow\":true},"
            "{\"acltype\":\"publishClientReceive\",\"topic\":\"cars/car-9/#\",\"priority\":0,\"allow\":true},"
            "{\"acltype\":\"publishClientReceive\",\"topic\":\"cars/+/telemetry\",\"priority\":0,\"allow\":true},"
            "{\"acltype\":\"subscribeLiteral\",\"topic\":\"cars/+/telemetry\",\"priority\":0,\"allow\":true},"
            "{\"acltype\":\"subscribePattern\",\"topic\":\"$aws/things/car-9/#\",\"priority\":0,\"allow\":true},"
            "{\"acltype\":\"publishClientSend\",\"topic\":\"x/y\",\"priority\":0,\"allow\":true}]");
  free(text);
  cJSON_Delete(acls);
  char *unknown[] = {(char *)"bus"};
  CHECK(mw_prov_policies_acls(p, unknown, 1, "x", err, sizeof err) == NULL);
  CHECK(strstr(err, "Policy bus") != NULL);
  mw_prov_policies_free(p);

  static const struct { const char *json, *want; } bad[] = {
      {"[]", "not a JSON object"},
      {"{\"policies\":{}}", "non-empty"},
      {"{\"version\":2,\"policies\":{\"a\":{}}}", "unsupported version"},
      {"{\"policies\":{\"a\":{\"publish\":[\"a/#/b\"]}}}", "'#' must be the whole last level"},
      {"{\"policies\":{\"a\":{\"publish\":[\"a+/b\"]}}}", "'+' must be a whole level"},
      {"{\"policies\":{\"a\":{\"publish\":[\"a/${client}\"]}}}", "unknown variable"},
      {"{\"policies\":{\"a\":{\"pubish\":[]}}}", "policies.a.pubish: unknown key"},
      {"{\"policies\":{\"a\":{\"deny\":{\"connect\":[]}}}}", "unknown key"},
      {"{\"policies\":{\"a\":{\"publish\":\"a/b\"}}}", "must be a list"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    CHECK(mw_prov_policies_parse(bad[i].json, strlen(bad[i].json), &p, err, sizeof err) != MW_OK);
    if (!strstr(err, bad[i].want)) fprintf(stderr, "'%s': got '%s'\n", bad[i].json, err);
    CHECK(strstr(err, bad[i].want) != NULL);
  }
  CHECK(mw_prov_policies_load("/nonexistent.json", &p, err, sizeof err) == MW_ERR_IO);
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {
      MW_TEST(test_apply_fleet_template), MW_TEST(test_parameter_checks),
      MW_TEST(test_thing_name_and_certificate_rules), MW_TEST(test_jitp_builtins),
      MW_TEST(test_parse_errors), MW_TEST(test_policy_expansion),
  };
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
