/*
** Shadow document rules, from the examples in AWS's documentation (aws-iot.md §1 cites
** them): merge, delta, metadata, versions, every error, and the unconfirmed-behaviour options.
*/
#define MW_TEST_IMPLEMENTATION
#include "shadow_test_util.h"

#include <string.h>

#define T1 1591140517
#define T2 1591141596
#define T3 1591142747

typedef struct {
  mw_shadow_doc_t doc;
  mw_shadow_options_t opt;
  mw_shadow_result_t res;
  mw_shadow_error_t err;
} fx_t;

static void fx_init(fx_t *f) {
  memset(f, 0, sizeof *f);
  mw_shadow_doc_init(&f->doc);
  mw_shadow_options_init(&f->opt);
}

static void fx_free(fx_t *f) {
  mw_shadow_result_free(&f->res);
  mw_shadow_doc_free(&f->doc);
}

/* Parses and applies one update; the result (or error) stays in f. */
static mw_status_t upd(fx_t *f, const char *payload, int64_t ts) {
  mw_shadow_request_t req;
  mw_shadow_result_free(&f->res);
  mw_status_t st = mw_shadow_request_parse(payload, strlen(payload), &f->opt, &req, &f->err);
  if (st != MW_OK) return st;
  st = mw_shadow_doc_update(&f->doc, &req, ts, &f->opt, &f->res, &f->err);
  mw_shadow_request_free(&req);
  return st;
}

/* /get/accepted of f's document (static buffer), or NULL when the get is rejected. */
static const char *get(fx_t *f, int64_t ts) {
  static char buf[16384];
  char *json = NULL;
  if (mw_shadow_doc_get(&f->doc, "thing1", NULL, ts, &f->opt, &json, &f->err) != MW_OK) return NULL;
  snprintf(buf, sizeof buf, "%s", json);
  free(json);
  return buf;
}

/* The /rejected payload for f's error at time ts (static buffer). */
static const char *rejected(fx_t *f, int64_t ts) {
  static char buf[1024];
  char *json = mw_shadow_error_json(&f->err, ts);
  snprintf(buf, sizeof buf, "%s", json ? json : "(null)");
  free(json);
  return buf;
}

/* Expects the update to be rejected with code and message (and the doc untouched). */
#define CHECK_REJECT(f, payload, want_code, want_msg) do { \
    int64_t v_before_ = (f)->doc.version; \
    CHECK(upd((f), (payload), T3) != MW_OK); \
    CHECK_INT((f)->err.code, (want_code)); \
    CHECK_STR((f)->err.message, (want_msg)); \
    CHECK_INT((f)->doc.version, v_before_); \
  } while (0)

/*---------------------------------------------------------------------------------------*/

/* First update of a new shadow: version 1, metadata per leaf, no delta, documents.previous null. */
static void test_first_update(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"color\":\"red\"}},\"clientToken\":\"tok-1\"}", T1), MW_OK);
  CHECK_JSON(f.res.accepted,
             "{\"state\":{\"reported\":{\"color\":\"red\"}},"
             "\"metadata\":{\"reported\":{\"color\":{\"timestamp\":1591140517}}},"
             "\"version\":1,\"timestamp\":1591140517,\"clientToken\":\"tok-1\"}");
  CHECK(f.res.delta == NULL);
  CHECK_JSON(f.res.documents,
             "{\"previous\":null,"
             "\"current\":{\"state\":{\"reported\":{\"color\":\"red\"}},"
             "\"metadata\":{\"reported\":{\"color\":{\"timestamp\":1591140517}}},\"version\":1},"
             "\"timestamp\":1591140517,\"clientToken\":\"tok-1\"}");
  CHECK_INT(f.res.version, 1);
  CHECK(f.doc.exists);
  CHECK_JSON(get(&f, T2),
             "{\"state\":{\"reported\":{\"color\":\"red\"}},"
             "\"metadata\":{\"reported\":{\"color\":{\"timestamp\":1591140517}}},"
             "\"version\":1,\"timestamp\":1591141596}");
  fx_free(&f);
}

/* AWS's ColorRGB example (§1.3): desired array -> accepted and delta with 3 timestamps each. */
static void test_desired_update_produces_delta(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"ColorRGB\":[0,0,0]}}}", T1), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"ColorRGB\":[255,255,0]}},\"clientToken\":\"21b21b21\"}", T2), MW_OK);
  CHECK_JSON(f.res.accepted,
             "{\"state\":{\"desired\":{\"ColorRGB\":[255,255,0]}},"
             "\"metadata\":{\"desired\":{\"ColorRGB\":[{\"timestamp\":1591141596},{\"timestamp\":1591141596},"
             "{\"timestamp\":1591141596}]}},\"version\":2,\"timestamp\":1591141596,\"clientToken\":\"21b21b21\"}");
  CHECK_JSON(f.res.delta,
             "{\"version\":2,\"timestamp\":1591141596,\"state\":{\"ColorRGB\":[255,255,0]},"
             "\"metadata\":{\"ColorRGB\":[{\"timestamp\":1591141596},{\"timestamp\":1591141596},"
             "{\"timestamp\":1591141596}]},\"clientToken\":\"21b21b21\"}");
  CHECK_JSON(f.res.documents,
             "{\"previous\":{\"state\":{\"reported\":{\"ColorRGB\":[0,0,0]}},"
             "\"metadata\":{\"reported\":{\"ColorRGB\":[{\"timestamp\":1591140517},{\"timestamp\":1591140517},"
             "{\"timestamp\":1591140517}]}},\"version\":1},"
             "\"current\":{\"state\":{\"desired\":{\"ColorRGB\":[255,255,0]},\"reported\":{\"ColorRGB\":[0,0,0]}},"
             "\"metadata\":{\"desired\":{\"ColorRGB\":[{\"timestamp\":1591141596},{\"timestamp\":1591141596},"
             "{\"timestamp\":1591141596}]},\"reported\":{\"ColorRGB\":[{\"timestamp\":1591140517},"
             "{\"timestamp\":1591140517},{\"timestamp\":1591140517}]}},\"version\":2},"
             "\"timestamp\":1591141596,\"clientToken\":\"21b21b21\"}");
  /* GET shows the delta (only when non-empty) */
  CHECK_JSON(get(&f, T3),
             "{\"state\":{\"desired\":{\"ColorRGB\":[255,255,0]},\"reported\":{\"ColorRGB\":[0,0,0]},"
             "\"delta\":{\"ColorRGB\":[255,255,0]}},"
             "\"metadata\":{\"desired\":{\"ColorRGB\":[{\"timestamp\":1591141596},{\"timestamp\":1591141596},"
             "{\"timestamp\":1591141596}]},\"reported\":{\"ColorRGB\":[{\"timestamp\":1591140517},"
             "{\"timestamp\":1591140517},{\"timestamp\":1591140517}]}},\"version\":2,\"timestamp\":1591142747}");
  fx_free(&f);
}

/* The device reports the desired value: no delta message, GET has no state.delta. */
static void test_reported_catches_up(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"color\":\"green\",\"speed\":10}}}", T1), MW_OK);
  CHECK_JSON(f.res.delta, "{\"version\":1,\"timestamp\":1591140517,\"state\":{\"color\":\"green\",\"speed\":10},"
                          "\"metadata\":{\"color\":{\"timestamp\":1591140517},\"speed\":{\"timestamp\":1591140517}}}");
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"color\":\"green\",\"speed\":10}}}", T2), MW_OK);
  CHECK(f.res.delta == NULL);
  CHECK_INT(f.res.version, 2);
  const char *g = get(&f, T3);
  CHECK(g && !strstr(g, "\"delta\""));
  fx_free(&f);
}

/* Rule 7: the delta holds ALL differing desired keys, not only those of the request. */
static void test_delta_contains_all_differences(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1,\"b\":2},\"reported\":{\"a\":0,\"b\":2,\"r\":5}}}", T1), MW_OK);
  CHECK_JSON(f.res.delta, "{\"version\":1,\"timestamp\":1591140517,\"state\":{\"a\":1},"
                          "\"metadata\":{\"a\":{\"timestamp\":1591140517}}}");
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"c\":3}}}", T2), MW_OK);
  CHECK_JSON(f.res.delta, "{\"version\":2,\"timestamp\":1591141596,\"state\":{\"a\":1,\"c\":3},"
                          "\"metadata\":{\"a\":{\"timestamp\":1591140517},\"c\":{\"timestamp\":1591141596}}}");
  /* rule 6: a key deleted from reported but still desired reappears */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":0,\"c\":null}}}", T2), MW_OK);
  CHECK(f.res.delta == NULL);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":null}}}", T3), MW_OK);
  CHECK(f.res.delta == NULL); /* reported-only update: default rule publishes no delta (§9.1) */
  const char *g = get(&f, T3);
  CHECK(g && strstr(g, "\"delta\":{\"a\":0}"));
  fx_free(&f);
}

/* Delta recursion keeps the path to each differing leaf only (D1 lights.color example). */
static void test_delta_nested_path(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"lights\":{\"color\":{\"r\":255,\"g\":0,\"b\":255}},\"x\":{\"y\":1}}}}",
                T1), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"lights\":{\"color\":{\"r\":255,\"g\":255,\"b\":255}},\"x\":{\"y\":1}}}}",
                T2), MW_OK);
  CHECK_JSON(f.res.delta, "{\"version\":2,\"timestamp\":1591141596,\"state\":{\"lights\":{\"color\":{\"g\":255}}},"
                          "\"metadata\":{\"lights\":{\"color\":{\"g\":{\"timestamp\":1591141596}}}}}");
  /* direct API */
  cJSON *d = cJSON_Parse("{\"a\":{\"b\":1,\"c\":[1,2]},\"n\":1,\"s\":\"x\",\"t\":true,\"o\":{}}");
  cJSON *r = cJSON_Parse("{\"a\":{\"b\":1,\"c\":[2,1]},\"n\":1.0,\"s\":\"x\",\"t\":1,\"o\":{\"z\":1},\"only_r\":1}");
  cJSON *delta = mw_shadow_delta(d, r);
  char *s = cJSON_PrintUnformatted(delta);
  CHECK_JSON(s, "{\"a\":{\"c\":[1,2]},\"t\":true}"); /* 1 == 1.0; {} vs {"z":1} has no differing leaf */
  cJSON_free(s);
  cJSON_Delete(delta);
  CHECK(mw_shadow_delta(d, d) == NULL);
  cJSON *all = mw_shadow_delta(d, NULL); /* no reported at all -> delta = desired */
  CHECK(mw_shadow_json_equal(all, d));
  cJSON_Delete(all);
  cJSON_Delete(d);
  cJSON_Delete(r);
  fx_free(&f);
}

/* D2: partial update merges recursively; untouched leaves keep their timestamps (D1 ID/ColorRGB). */
static void test_nested_merge_and_metadata(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"color\":{\"r\":255,\"g\":255,\"b\":0},\"ID\":\"SmartLamp21\"}}}", T1),
            MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"color\":{\"r\":10},\"engine\":\"ON\"}}}", T2), MW_OK);
  CHECK_JSON(f.res.accepted, "{\"state\":{\"reported\":{\"color\":{\"r\":10},\"engine\":\"ON\"}},"
                             "\"metadata\":{\"reported\":{\"color\":{\"r\":{\"timestamp\":1591141596}},"
                             "\"engine\":{\"timestamp\":1591141596}}},\"version\":2,\"timestamp\":1591141596}");
  CHECK_JSON(get(&f, T3),
             "{\"state\":{\"reported\":{\"color\":{\"r\":10,\"g\":255,\"b\":0},\"ID\":\"SmartLamp21\",\"engine\":\"ON\"}},"
             "\"metadata\":{\"reported\":{\"color\":{\"r\":{\"timestamp\":1591141596},\"g\":{\"timestamp\":1591140517},"
             "\"b\":{\"timestamp\":1591140517}},\"ID\":{\"timestamp\":1591140517},\"engine\":{\"timestamp\":1591141596}}},"
             "\"version\":2,\"timestamp\":1591142747}");
  /* writing the same value again refreshes that leaf's timestamp only */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"ID\":\"SmartLamp21\"}}}", T3), MW_OK);
  CHECK(strstr(get(&f, T3), "\"ID\":{\"timestamp\":1591142747}") != NULL);
  CHECK(strstr(get(&f, T3), "\"g\":{\"timestamp\":1591140517}") != NULL);
  fx_free(&f);
}

/* Nested empty objects are values (moto aws_verified); removing the only child leaves {}. */
static void test_nested_empty_objects(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1,\"b\":{\"c\":3},\"d\":{}}}}", T1), MW_OK);
  CHECK_JSON(f.res.delta, "{\"version\":1,\"timestamp\":1591140517,\"state\":{\"a\":1,\"b\":{\"c\":3},\"d\":{}},"
                          "\"metadata\":{\"a\":{\"timestamp\":1591140517},\"b\":{\"c\":{\"timestamp\":1591140517}},"
                          "\"d\":{}}}");
  CHECK(strstr(get(&f, T2), "\"desired\":{\"a\":1,\"b\":{\"c\":3},\"d\":{}}") != NULL);
  /* a scalar can be replaced by {} and by an object */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{}}}}", T2), MW_OK);
  CHECK(strstr(get(&f, T2), "\"desired\":{\"a\":{},") != NULL);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{\"x\":1}}}}", T2), MW_OK);
  CHECK(strstr(get(&f, T2), "\"desired\":{\"a\":{\"x\":1},") != NULL);
  /* removing the only child of a nested object keeps the empty parent */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"b\":{\"c\":null}}}}", T3), MW_OK);
  CHECK(strstr(get(&f, T3), "\"b\":{}") != NULL);
  /* an object replaces a scalar wholesale, nulls inside it delete nothing */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"m\":5}}}", T3), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"m\":{\"k\":null,\"j\":2}}}}", T3), MW_OK);
  CHECK(strstr(get(&f, T3), "\"reported\":{\"m\":{\"j\":2}}") != NULL);
  fx_free(&f);
}

/* null deletes: a key, the last key (section disappears), a whole section, the whole state. */
static void test_null_deletes(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1,\"b\":2},\"reported\":{\"a\":1}}}", T1), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":null}}}", T2), MW_OK);
  /* §9.2 default: accepted echoes the null, with a timestamp for it (moto) */
  CHECK_JSON(f.res.accepted, "{\"state\":{\"desired\":{\"a\":null}},"
                             "\"metadata\":{\"desired\":{\"a\":{\"timestamp\":1591141596}}},"
                             "\"version\":2,\"timestamp\":1591141596}");
  CHECK_JSON(get(&f, T2), "{\"state\":{\"desired\":{\"b\":2},\"reported\":{\"a\":1},\"delta\":{\"b\":2}},"
                          "\"metadata\":{\"desired\":{\"b\":{\"timestamp\":1591140517}},"
                          "\"reported\":{\"a\":{\"timestamp\":1591140517}}},\"version\":2,\"timestamp\":1591141596}");
  /* deleting a key that does not exist is accepted and changes nothing but the version */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"nope\":null}}}", T2), MW_OK);
  CHECK_INT(f.doc.version, 3);
  /* last key: the section disappears (moto test_delete_field_from_device_shadow) */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"b\":null}}}", T2), MW_OK);
  CHECK(f.doc.desired == NULL && f.doc.meta_desired == NULL);
  CHECK_JSON(get(&f, T2), "{\"state\":{\"reported\":{\"a\":1}},\"metadata\":{\"reported\":{\"a\":{\"timestamp\":1591140517}}},"
                          "\"version\":4,\"timestamp\":1591141596}");
  /* whole section */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"x\":1}}}", T2), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":null}}", T3), MW_OK);
  CHECK(f.doc.desired == NULL);
  CHECK(f.doc.reported != NULL);
  CHECK(f.res.delta == NULL);
  CHECK_JSON(f.res.accepted, "{\"state\":{\"desired\":null},\"metadata\":{\"desired\":{\"timestamp\":1591142747}},"
                             "\"version\":6,\"timestamp\":1591142747}");
  /* whole state: clears, keeps the shadow, increments the version (moto test_update_empty_state) */
  CHECK_INT(upd(&f, "{\"state\":null}", T3), MW_OK);
  CHECK_JSON(f.res.accepted, "{\"state\":null,\"metadata\":{\"timestamp\":1591142747},\"version\":7,\"timestamp\":1591142747}");
  CHECK(f.res.delta == NULL);
  CHECK(f.res.documents != NULL);
  CHECK_JSON(get(&f, T3), "{\"state\":{},\"metadata\":{},\"version\":7,\"timestamp\":1591142747}");
  fx_free(&f);
}

/* Empty top-level sections are not stored; {"state":{}} creates an empty shadow. */
static void test_empty_sections(void) {
  fx_t f;
  fx_init(&f);
  CHECK(get(&f, T1) == NULL);
  CHECK_INT(f.err.code, 404);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{},\"reported\":{}}}", T1), MW_OK);
  CHECK(f.doc.desired == NULL && f.doc.reported == NULL);
  CHECK_JSON(get(&f, T1), "{\"state\":{},\"metadata\":{},\"version\":1,\"timestamp\":1591140517}");
  fx_free(&f);
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{}}", T1), MW_OK);
  CHECK_JSON(f.res.accepted, "{\"state\":{},\"metadata\":{},\"version\":1,\"timestamp\":1591140517}");
  CHECK_JSON(get(&f, T1), "{\"state\":{},\"metadata\":{},\"version\":1,\"timestamp\":1591140517}");
  fx_free(&f);
}

/* Arrays are whole values: replaced, never merged; metadata follows the new length. */
static void test_arrays(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"list\":[1,2,3],\"objs\":[{\"a\":1},{\"b\":2}]}}}", T1), MW_OK);
  CHECK_JSON(f.res.accepted, "{\"state\":{\"reported\":{\"list\":[1,2,3],\"objs\":[{\"a\":1},{\"b\":2}]}},"
                             "\"metadata\":{\"reported\":{\"list\":[{\"timestamp\":1591140517},{\"timestamp\":1591140517},"
                             "{\"timestamp\":1591140517}],\"objs\":[{\"a\":{\"timestamp\":1591140517}},"
                             "{\"b\":{\"timestamp\":1591140517}}]}},\"version\":1,\"timestamp\":1591140517}");
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"list\":[9],\"objs\":[{\"c\":3}]}}}", T2), MW_OK);
  CHECK_JSON(get(&f, T2), "{\"state\":{\"reported\":{\"list\":[9],\"objs\":[{\"c\":3}]}},"
                          "\"metadata\":{\"reported\":{\"list\":[{\"timestamp\":1591141596}],"
                          "\"objs\":[{\"c\":{\"timestamp\":1591141596}}]}},\"version\":2,\"timestamp\":1591141596}");
  /* arrays compare in order in the delta */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"list\":[9]}}}", T2), MW_OK);
  CHECK(f.res.delta == NULL);
  /* arrays containing null are refused (§1.4) */
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"list\":[1,null]}}}", 400, "Invalid JSON");
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"list\":[[null]]}}}", 400, "Invalid JSON");
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"list\":[{\"a\":null}]}}}", 400, "Invalid JSON");
  fx_free(&f);
}

/* Versions: +1 per accepted update; a request version must equal the stored one, else 409. */
static void test_versions(void) {
  fx_t f;
  fx_init(&f);
  for (int i = 1; i <= 3; i++) {
    CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"n\":1}}}", T1), MW_OK);
    CHECK_INT(f.res.version, i);
  }
  /* moto test_update: stored v3, request v2 -> 409 Version conflict, clientToken echoed */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"n\":2}},\"version\":2,\"clientToken\":\"c1\"}", T2), MW_ERR_CONFLICT);
  CHECK_INT(f.err.code, 409);
  CHECK_STR(f.err.message, "Version conflict");
  CHECK_JSON(rejected(&f, T2), "{\"code\":409,\"message\":\"Version conflict\",\"timestamp\":1591141596,\"clientToken\":\"c1\"}");
  CHECK_INT(f.doc.version, 3);
  CHECK(strstr(get(&f, T2), "\"n\":1") != NULL); /* unchanged */
  CHECK_REJECT(&f, "{\"state\":{},\"version\":4}", 409, "Version conflict");
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"n\":2}},\"version\":3}", T2), MW_OK);
  CHECK_INT(f.res.version, 4);
  /* a rejected request does not change the version; GET neither */
  get(&f, T3);
  CHECK_INT(f.doc.version, 4);
  /* invalid version values */
  CHECK_REJECT(&f, "{\"state\":{},\"version\":\"4\"}", 400, "Invalid version");
  CHECK_REJECT(&f, "{\"state\":{},\"version\":-1}", 400, "Invalid version");
  CHECK_REJECT(&f, "{\"state\":{},\"version\":4.5}", 400, "Invalid version");
  CHECK_REJECT(&f, "{\"state\":{},\"version\":null}", 400, "Invalid version");
  CHECK_INT(upd(&f, "{\"state\":{},\"version\":4.0}", T3), MW_OK); /* 4.0 is the integer 4 */
  fx_free(&f);
}

/* §9.8: a version on a shadow that does not exist yet. */
static void test_version_on_create(void) {
  fx_t f;
  fx_init(&f); /* default MATCH: a never-created shadow has version 0 */
  CHECK_REJECT(&f, "{\"state\":{},\"version\":1}", 409, "Version conflict");
  CHECK_INT(upd(&f, "{\"state\":{},\"version\":0}", T1), MW_OK);
  CHECK_INT(f.res.version, 1);
  fx_free(&f);
  fx_init(&f);
  f.opt.create_version = MW_SHADOW_CREATE_VERSION_ONE; /* Greengrass */
  CHECK_REJECT(&f, "{\"state\":{},\"version\":0}", 400, "Invalid version");
  CHECK_INT(upd(&f, "{\"state\":{},\"version\":1}", T1), MW_OK);
  fx_free(&f);
  fx_init(&f);
  f.opt.create_version = MW_SHADOW_CREATE_VERSION_IGNORE;
  CHECK_INT(upd(&f, "{\"state\":{},\"version\":77}", T1), MW_OK);
  CHECK_INT(f.res.version, 1);
  CHECK_REJECT(&f, "{\"state\":{},\"version\":77}", 409, "Version conflict"); /* exists now */
  fx_free(&f);
}

/* Malformed JSON, bad encoding and the top-level shape. */
static void test_malformed(void) {
  static const char *const bad[] = {
    "", "   ", "not json", "{\"state\":", "{\"state\":{}} x", "[1,2]", "\"state\"", "null", "{}x",
    "{\"state\":{\"desired\":{\"a\":01}}}",      /* leading zero */
    "{\"state\":{\"desired\":{\"a\":1.}}}",      /* "1." */
    "{\"state\":{\"desired\":{\"a\":+1}}}",
    "{\"state\":{\"desired\":{\"a\":\"x\ty\"}}}", /* raw control character */
    "{\"state\":{\"desired\":{\"a\":\"\\u0000\"}}}",
    "{\"state\":{\"desired\":{\"a\":\"\\ud800\"}}}", /* lone surrogate */
    "{\"state\":{\"desired\":{\"a\":1e999}}}",  /* not representable */
    "{\"state\":{\"desired\":{\"a\":1,}}}", "{'state':{}}", "{\"state\":{},}",
  };
  fx_t f;
  fx_init(&f);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_REJECT(&f, bad[i], 400, "Invalid JSON");
    if (f.err.code != 400) fprintf(stderr, "  payload %zu: %s\n", i, bad[i]);
    CHECK(!f.err.has_client_token);
  }
  CHECK_JSON(rejected(&f, T3), "{\"code\":400,\"message\":\"Invalid JSON\",\"timestamp\":1591142747}");
  /* embedded NUL byte */
  mw_shadow_request_t req;
  CHECK_INT(mw_shadow_request_parse("{\"state\":{}}\0", 13, &f.opt, &req, &f.err), MW_ERR_INVALID);
  CHECK_INT(f.err.code, 400);
  /* §9.4: the message is an option */
  f.opt.invalid_json_message = "Invalid JSON document";
  CHECK_REJECT(&f, "{", 400, "Invalid JSON document");
  /* invalid UTF-8 -> 415 */
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"a\":\"\xff\"}}}", 415,
               "Unsupported documented encoding; supported encoding is UTF-8");
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"a\":\"\xc0\xaf\"}}}", 415,
               "Unsupported documented encoding; supported encoding is UTF-8"); /* overlong */
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"a\":\"\xed\xa0\x80\"}}}", 415,
               "Unsupported documented encoding; supported encoding is UTF-8"); /* surrogate */
  /* valid UTF-8 and escapes pass */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":\"h\xc3\xa9llo \\u00e9 \\ud83d\\ude00 \xf0\x9f\x98\x80\"}}}", T1), MW_OK);
  CHECK_INT(upd(&f, " \r\n{ \"state\" : { \"desired\" : { \"b\" : -0.5e+2 } } }\n", T1), MW_OK);
  CHECK(strstr(get(&f, T1), "\"b\":-50") != NULL);
  fx_free(&f);
}

/* state / desired / reported shape errors, missing state, unknown nodes. */
static void test_shape_errors(void) {
  fx_t f;
  fx_init(&f);
  CHECK_REJECT(&f, "{\"clientToken\":\"abc\"}", 400, "Missing required node: state");
  CHECK(f.err.has_client_token);
  CHECK_JSON(rejected(&f, T3), "{\"code\":400,\"message\":\"Missing required node: state\",\"timestamp\":1591142747,"
                               "\"clientToken\":\"abc\"}");
  CHECK_REJECT(&f, "{\"State\":{}}", 400, "Missing required node: state"); /* keys are case sensitive */
  CHECK_REJECT(&f, "{\"state\":5}", 400, "State node must be an object");
  CHECK_REJECT(&f, "{\"state\":[]}", 400, "State node must be an object");
  CHECK_REJECT(&f, "{\"state\":\"on\"}", 400, "State node must be an object");
  CHECK_REJECT(&f, "{\"state\":{\"desired\":5}}", 400, "Desired node must be an object");
  CHECK_REJECT(&f, "{\"state\":{\"desired\":[1]}}", 400, "Desired node must be an object");
  CHECK_REJECT(&f, "{\"state\":{\"reported\":\"x\"}}", 400, "Reported node must be an object");
  CHECK_REJECT(&f, "{\"state\":{\"reported\":true}}", 400, "Reported node must be an object");
  /* unknown node under state (GGSM PR #178 quoting IoT for 'delta') */
  CHECK_REJECT(&f, "{\"state\":{\"delta\":{\"a\":1}}}", 400, "State contains an invalid node: 'delta'");
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{},\"foo\":1}}", 400, "State contains an invalid node: 'foo'");
  CHECK_REJECT(&f, "{\"state\":{\"metadata\":{}}}", 400, "State contains an invalid node: 'metadata'");
  CHECK_REJECT(&f, "{\"state\":{\"Desired\":{}}}", 400, "State contains an invalid node: 'Desired'");
  /* a very long key is shortened in the message, never overflowing it */
  char big[600];
  memset(big, 0, sizeof big);
  strcpy(big, "{\"state\":{\"");
  memset(big + strlen(big), 'k', 500);
  strcat(big, "\":1}}");
  CHECK(upd(&f, big, T3) == MW_ERR_INVALID);
  CHECK(strncmp(f.err.message, "State contains an invalid node: 'kkkk", 37) == 0);
  CHECK(strlen(f.err.message) < MW_SHADOW_MESSAGE_MAX);
  /* content outside state is ignored */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":1}},\"metadata\":{\"x\":1},\"foo\":[1]}", T1), MW_OK);
  CHECK(strstr(f.res.accepted, "foo") == NULL);
  fx_free(&f);
}

/* clientToken: up to 64 bytes echoed everywhere; 65 bytes or a non-string -> 400. */
static void test_client_token(void) {
  char tok64[65], tok65[66], payload[256];
  memset(tok64, 'a', 64);
  tok64[64] = '\0';
  memset(tok65, 'b', 65);
  tok65[65] = '\0';
  fx_t f;
  fx_init(&f);
  snprintf(payload, sizeof payload, "{\"state\":{\"desired\":{\"x\":1}},\"clientToken\":\"%s\"}", tok64);
  CHECK_INT(upd(&f, payload, T1), MW_OK);
  CHECK(strstr(f.res.accepted, tok64) && strstr(f.res.delta, tok64) && strstr(f.res.documents, tok64));
  snprintf(payload, sizeof payload, "{\"state\":{\"desired\":{\"x\":2}},\"clientToken\":\"%s\"}", tok65);
  CHECK_REJECT(&f, payload, 400, "Invalid clientToken");
  CHECK(!f.err.has_client_token);
  CHECK_JSON(rejected(&f, T3), "{\"code\":400,\"message\":\"Invalid clientToken\",\"timestamp\":1591142747}");
  CHECK_REJECT(&f, "{\"state\":{},\"clientToken\":5}", 400, "Invalid clientToken");
  CHECK_REJECT(&f, "{\"state\":{},\"clientToken\":null}", 400, "Invalid clientToken");
  /* multi-byte: 32 two-byte characters = 64 bytes is fine, 33 is not */
  char u[200] = "{\"state\":{},\"clientToken\":\"";
  for (int i = 0; i < 32; i++) strcat(u, "\xc3\xa9");
  strcat(u, "\"}");
  CHECK_INT(upd(&f, u, T1), MW_OK);
  strcpy(u + strlen(u) - 2, "\xc3\xa9\"}");
  CHECK_REJECT(&f, u, 400, "Invalid clientToken");
  /* get/delete payloads: token extracted leniently */
  char out[MW_SHADOW_CLIENT_TOKEN_MAX + 1];
  CHECK(mw_shadow_client_token("{\"clientToken\":\"g1\"}", 20, out));
  CHECK_STR(out, "g1");
  CHECK(!mw_shadow_client_token("", 0, out));
  CHECK(!mw_shadow_client_token("garbage", 7, out));
  snprintf(payload, sizeof payload, "{\"clientToken\":\"%s\"}", tok65);
  CHECK(!mw_shadow_client_token(payload, strlen(payload), out));
  fx_free(&f);
}

/* 413 when desired + reported of the MERGED document exceed 8192 bytes; 8192 exactly is fine. */
static void test_oversize(void) {
  static char payload[20000];
  fx_t f;
  fx_init(&f);
  /* {"a":"<n x>"} prints as 8 + n bytes */
  snprintf(payload, sizeof payload, "{\"state\":{\"desired\":{\"a\":\"%0*d\"}}}", 8184, 0);
  CHECK_INT(upd(&f, payload, T1), MW_OK);
  CHECK_INT(mw_shadow_doc_state_size(&f.doc), 8192);
  CHECK_REJECT(&f, "{\"state\":{\"reported\":{\"b\":1}}}", 413, "The payload exceeds the maximum size allowed");
  snprintf(payload, sizeof payload, "{\"state\":{\"desired\":{\"a\":\"%0*d\"}}}", 8185, 0);
  CHECK_REJECT(&f, payload, 413, "The payload exceeds the maximum size allowed");
  /* shrinking is allowed, and a big request that deletes is fine */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":null}}}", T2), MW_OK);
  /* merged, not request size: 5000 reported + 4000 desired */
  snprintf(payload, sizeof payload, "{\"state\":{\"reported\":{\"r\":\"%0*d\"}}}", 5000, 0);
  CHECK_INT(upd(&f, payload, T2), MW_OK);
  snprintf(payload, sizeof payload, "{\"state\":{\"desired\":{\"d\":\"%0*d\"}}}", 4000, 0);
  CHECK_REJECT(&f, payload, 413, "The payload exceeds the maximum size allowed");
  /* metadata does not count: many tiny leaves whose metadata is far bigger than 8 KB */
  fx_free(&f);
  fx_init(&f);
  char *p = payload;
  p += sprintf(p, "{\"state\":{\"reported\":{");
  for (int i = 0; i < 900; i++) p += sprintf(p, "%s\"%d\":1", i ? "," : "", i);
  sprintf(p, "}}}");
  CHECK_INT(upd(&f, payload, T1), MW_OK);
  /* payload limit (MQTT 128 KB) */
  f.opt.max_payload_bytes = 100;
  snprintf(payload, sizeof payload, "{\"state\":{},\"pad\":\"%0*d\"}", 100, 0);
  CHECK_REJECT(&f, payload, 413, "The payload exceeds the maximum size allowed");
  fx_free(&f);
}

/* Depth (GGSM rule): desired = level 1, a non-empty container deeper than 6 is refused. */
static void test_depth(void) {
  fx_t f;
  fx_init(&f);
  const char *msg = "JSON contains too many levels of nesting; maximum is 6";
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":1}}}}}}}}", T1), MW_OK);
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":1}}}}}}}}}", 400, msg);
  CHECK_REJECT(&f, "{\"state\":{\"reported\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":1}}}}}}}}}", 400, msg);
  /* empty containers do not count */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{}}}}}}}}}", T1), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":[]}}}}}}}}", T1), MW_OK);
  /* arrays count like objects */
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"arr\":[[[[[1]]]]]}}}", T1), MW_OK);
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"arr\":[[[[[[1]]]]]]}}}", 400, msg);
  /* deep nesting outside state is not limited (ignored content) */
  CHECK_INT(upd(&f, "{\"state\":{},\"x\":[[[[[[[[[[1]]]]]]]]]]}", T1), MW_OK);
  /* §9.3: the limit is an option */
  f.opt.max_depth = 8;
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":1}}}}}}}}}", T1), MW_OK);
  /* nesting beyond the parser's bound (1000 containers), even outside state: plain Invalid JSON */
  static char deep[2200];
  for (int levels = 998; levels <= 1000; levels += 2) {
    char *p = deep + sprintf(deep, "{\"state\":{},\"x\":");
    for (int i = 0; i < levels; i++) *p++ = '[';
    for (int i = 0; i < levels; i++) *p++ = ']';
    strcpy(p, "}");
    if (levels == 998) CHECK_INT(upd(&f, deep, T1), MW_OK); /* 999 with the root object */
    else CHECK_REJECT(&f, deep, 400, "Invalid JSON");
  }
  fx_free(&f);
}

/* §9.9: duplicate keys. */
static void test_duplicate_keys(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1,\"b\":0,\"a\":2}}}", T1), MW_OK);
  CHECK(strstr(get(&f, T1), "\"desired\":{\"b\":0,\"a\":2}") != NULL);
  f.opt.duplicate_keys = MW_SHADOW_DUPLICATE_FIRST;
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"c\":1,\"c\":2}}}", T1), MW_OK);
  CHECK(strstr(get(&f, T1), "\"c\":1") != NULL);
  f.opt.duplicate_keys = MW_SHADOW_DUPLICATE_REJECT;
  CHECK_REJECT(&f, "{\"state\":{\"desired\":{\"c\":1,\"c\":2}}}", 400, "Invalid JSON");
  CHECK_REJECT(&f, "{\"state\":{},\"state\":{}}", 400, "Invalid JSON");
  fx_free(&f);
}

/* §9.1: delta after a reported-only update that leaves a difference. */
static void test_delta_rule_option(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1}}}", T1), MW_OK);
  CHECK(f.res.delta != NULL);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":2}}}", T2), MW_OK);
  CHECK(f.res.delta == NULL);
  f.opt.delta_rule = MW_SHADOW_DELTA_ALWAYS;
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":3}}}", T2), MW_OK);
  CHECK_JSON(f.res.delta, "{\"version\":3,\"timestamp\":1591141596,\"state\":{\"a\":1},"
                          "\"metadata\":{\"a\":{\"timestamp\":1591140517}}}");
  /* no delta when desired and reported agree, whatever the rule */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":1}}}", T2), MW_OK);
  CHECK(f.res.delta == NULL);
  /* a desired update equal to reported gives no delta */
  f.opt.delta_rule = MW_SHADOW_DELTA_ON_DESIRED;
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1.0}}}", T2), MW_OK);
  CHECK(f.res.delta == NULL);
  fx_free(&f);
}

/* §9.2, §9.5, §9.7 options. */
static void test_output_options(void) {
  fx_t f;
  fx_init(&f);
  f.opt.accepted_echo_nulls = false;
  f.opt.documents_previous = MW_SHADOW_PREVIOUS_OMIT;
  f.opt.get_metadata_delta = true;
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":1,\"b\":2}}}", T1), MW_OK);
  CHECK(f.res.documents && strstr(f.res.documents, "previous") == NULL);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":null,\"c\":{\"d\":null,\"e\":1}}}}", T2), MW_OK);
  CHECK_JSON(f.res.accepted, "{\"state\":{\"desired\":{\"c\":{\"e\":1}}},"
                             "\"metadata\":{\"desired\":{\"c\":{\"e\":{\"timestamp\":1591141596}}}},"
                             "\"version\":2,\"timestamp\":1591141596}");
  CHECK_JSON(get(&f, T2), "{\"state\":{\"desired\":{\"b\":2,\"c\":{\"e\":1}},\"delta\":{\"b\":2,\"c\":{\"e\":1}}},"
                          "\"metadata\":{\"desired\":{\"b\":{\"timestamp\":1591140517},\"c\":{\"e\":{\"timestamp\":1591141596}}},"
                          "\"delta\":{\"b\":{\"timestamp\":1591140517},\"c\":{\"e\":{\"timestamp\":1591141596}}}},"
                          "\"version\":2,\"timestamp\":1591141596}");
  f.opt.documents_on_state_null = false;
  CHECK_INT(upd(&f, "{\"state\":null}", T2), MW_OK);
  CHECK(f.res.documents == NULL);
  fx_free(&f);
  fx_init(&f);
  f.opt.documents_previous = MW_SHADOW_PREVIOUS_EMPTY;
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":1}}}", T1), MW_OK);
  CHECK_JSON(f.res.documents, "{\"previous\":{\"state\":{},\"metadata\":{},\"version\":0},"
                              "\"current\":{\"state\":{\"reported\":{\"a\":1}},"
                              "\"metadata\":{\"reported\":{\"a\":{\"timestamp\":1591140517}}},\"version\":1},"
                              "\"timestamp\":1591140517}");
  fx_free(&f);
}

/* Delete: accepted {version, timestamp}; GET -> 404; re-create within 48 h continues numbering. */
static void test_delete_and_recreate(void) {
  fx_t f;
  fx_init(&f);
  char *json = NULL;
  CHECK_INT(mw_shadow_doc_delete(&f.doc, "thing1", NULL, T1, &f.opt, &json, &f.err), MW_ERR_NOT_FOUND);
  CHECK_INT(f.err.code, 404);
  CHECK_STR(f.err.message, "No shadow exists with name: 'thing1'");
  CHECK(json == NULL);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":1}}}", T1), MW_OK);
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":2}}}", T1), MW_OK);
  CHECK_INT(mw_shadow_doc_delete(&f.doc, "thing1", "del-1", T2, &f.opt, &json, &f.err), MW_OK);
  CHECK_JSON(json, "{\"version\":2,\"timestamp\":1591141596,\"clientToken\":\"del-1\"}");
  free(json);
  CHECK(!f.doc.exists);
  CHECK(get(&f, T2) == NULL);
  CHECK_INT(f.err.code, 404);
  CHECK_INT(mw_shadow_doc_delete(&f.doc, "thing1", NULL, T2, &f.opt, &json, &f.err), MW_ERR_NOT_FOUND);
  /* re-created within the window: continues at 3, previous is null (the shadow did not exist) */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"b\":1}}}", T2 + 3600), MW_OK);
  CHECK_INT(f.res.version, 3);
  CHECK(strstr(f.res.documents, "\"previous\":null") != NULL);
  CHECK(strstr(get(&f, T3), "\"a\"") == NULL); /* old content is gone */
  /* after the window: starts again at 1 */
  CHECK_INT(mw_shadow_doc_delete(&f.doc, "thing1", NULL, T3, &f.opt, &json, &f.err), MW_OK);
  free(json);
  CHECK_INT(upd(&f, "{\"state\":{}}", T3 + MW_SHADOW_RECREATE_WINDOW_S), MW_OK);
  CHECK_INT(f.res.version, 1);
  /* §9.6 NEXT: delete reports last + 1, and the re-created shadow continues after it */
  f.opt.delete_version = MW_SHADOW_DELETE_VERSION_NEXT;
  CHECK_INT(mw_shadow_doc_delete(&f.doc, "thing1", NULL, T3, &f.opt, &json, &f.err), MW_OK);
  CHECK_JSON(json, "{\"version\":2,\"timestamp\":1591142747}");
  free(json);
  CHECK_INT(upd(&f, "{\"state\":{},\"version\":2}", T3), MW_OK); /* MATCH against the kept version */
  CHECK_INT(f.res.version, 3);
  fx_free(&f);
}

/* Storage form round trip; device-side cache seeding and /update/accepted application. */
static void test_serialize_and_apply_accepted(void) {
  fx_t f;
  fx_init(&f);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"a\":{\"b\":[1,2]}},\"reported\":{\"a\":{\"b\":[1]},\"z\":\"s\"}}}", T1),
            MW_OK);
  char *s = mw_shadow_doc_serialize(&f.doc);
  mw_shadow_doc_t copy;
  CHECK_INT(mw_shadow_doc_deserialize(s, strlen(s), &copy), MW_OK);
  CHECK(copy.exists);
  CHECK_INT(copy.version, 1);
  CHECK_INT(copy.timestamp, T1);
  CHECK(mw_shadow_json_equal(copy.desired, f.doc.desired) && mw_shadow_json_equal(copy.reported, f.doc.reported));
  CHECK(mw_shadow_json_equal(copy.meta_desired, f.doc.meta_desired));
  mw_shadow_doc_free(&copy);
  free(s);

  /* a /get/accepted payload seeds a cache as well (delta ignored) */
  const char *g = get(&f, T2);
  mw_shadow_doc_t dev;
  CHECK_INT(mw_shadow_doc_deserialize(g, strlen(g), &dev), MW_OK);
  CHECK(mw_shadow_json_equal(dev.desired, f.doc.desired));
  CHECK_INT(dev.version, 1);

  /* apply the service's /update/accepted messages in order; stale ones are refused */
  CHECK_INT(upd(&f, "{\"state\":{\"reported\":{\"a\":{\"b\":[1,2]},\"z\":null}}}", T2), MW_OK);
  char *acc2 = strdup(f.res.accepted);
  CHECK_INT(upd(&f, "{\"state\":{\"desired\":{\"n\":7}}}", T3), MW_OK);
  CHECK_INT(mw_shadow_doc_apply_accepted(&dev, acc2, strlen(acc2)), MW_OK);
  CHECK_INT(mw_shadow_doc_apply_accepted(&dev, f.res.accepted, strlen(f.res.accepted)), MW_OK);
  CHECK_INT(mw_shadow_doc_apply_accepted(&dev, acc2, strlen(acc2)), MW_ERR_STATE); /* older */
  CHECK_INT(dev.version, 3);
  CHECK(mw_shadow_json_equal(dev.desired, f.doc.desired));
  CHECK(mw_shadow_json_equal(dev.reported, f.doc.reported));
  CHECK(mw_shadow_json_equal(dev.meta_reported, f.doc.meta_reported));
  CHECK_INT(mw_shadow_doc_apply_accepted(&dev, "{\"code\":409}", 12), MW_ERR_INVALID);
  CHECK_INT(mw_shadow_doc_deserialize("[1]", 3, &copy), MW_ERR_INVALID);
  free(acc2);
  mw_shadow_doc_free(&dev);
  mw_shadow_doc_free(&copy);
  fx_free(&f);
}

/* The device side: one parse per message, applied or taken as a tree; merge keeps member order. */
static void test_device_trees(void) {
  mw_status_t st;
  CHECK(mw_shadow_json_parse("[1]", 3, &st) == NULL && st == MW_ERR_INVALID);
  CHECK(mw_shadow_json_parse("{\"a\":1,}", 8, &st) == NULL && st == MW_ERR_INVALID); /* strict */
  const char *get = "{\"state\":{\"desired\":{\"a\":1,\"b\":2,\"c\":3},\"reported\":{\"a\":1},"
                    "\"delta\":{\"b\":2,\"c\":3}},\"metadata\":{},\"version\":4,\"timestamp\":1e300}";
  cJSON *root = mw_shadow_json_parse(get, strlen(get), &st);
  CHECK(root && st == MW_OK);
  mw_shadow_doc_t dev;
  CHECK_INT(mw_shadow_doc_take(root, &dev), MW_OK);
  cJSON_Delete(root);
  CHECK_INT(dev.version, 4);
  CHECK_INT(dev.timestamp, 0); /* out of range: not undefined behaviour, just unknown */
  /* A whole-section update in another key order; members keep the document's order. */
  const char *acc = "{\"state\":{\"desired\":{\"c\":30,\"a\":10,\"d\":40,\"b\":null}},"
                    "\"metadata\":{},\"version\":5,\"timestamp\":-3}";
  root = mw_shadow_json_parse(acc, strlen(acc), &st);
  CHECK_INT(mw_shadow_doc_apply_accepted_tree(&dev, root), MW_OK);
  CHECK_INT(mw_shadow_doc_apply_accepted_tree(&dev, root), MW_ERR_STATE); /* same version again */
  cJSON_Delete(root);
  char *d = mw_shadow_json_print(dev.desired, NULL);
  CHECK_STR(d, "{\"a\":10,\"c\":30,\"d\":40}");
  free(d);
  char *m = mw_shadow_json_print(dev.meta_desired, NULL);
  /* the GET had no metadata: it is built in the update's order */
  CHECK_STR(m, "{\"c\":{\"timestamp\":0},\"a\":{\"timestamp\":0},\"d\":{\"timestamp\":0}}");
  free(m);
  CHECK_INT(dev.version, 5);
  mw_shadow_doc_free(&dev);
}

/* Equality used by the delta: numbers by value, objects order-insensitive, arrays ordered. */
static void test_json_equal(void) {
  static const char *const same[][2] = {
    {"1", "1.0"}, {"{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}"}, {"[1,[2]]", "[1,[2]]"}, {"\"x\"", "\"x\""},
    {"null", "null"}, {"{}", "{}"}, {"1e2", "100"},
  };
  static const char *const diff[][2] = {
    {"1", "\"1\""}, {"true", "1"}, {"[1,2]", "[2,1]"}, {"{\"a\":1}", "{\"a\":1,\"b\":1}"}, {"{}", "[]"},
    {"true", "false"}, {"\"a\"", "\"A\""}, {"[1]", "[1,1]"},
  };
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
    cJSON *a = cJSON_Parse(same[i][0]), *b = cJSON_Parse(same[i][1]);
    CHECK(mw_shadow_json_equal(a, b) && mw_shadow_json_equal(b, a));
    cJSON_Delete(a);
    cJSON_Delete(b);
  }
  for (size_t i = 0; i < sizeof diff / sizeof diff[0]; i++) {
    cJSON *a = cJSON_Parse(diff[i][0]), *b = cJSON_Parse(diff[i][1]);
    CHECK(!mw_shadow_json_equal(a, b) && !mw_shadow_json_equal(b, a));
    cJSON_Delete(a);
    cJSON_Delete(b);
  }
}

/* The printer writes numbers that read back exactly (cJSON 1.7.15's own printer does not:
** 5555555555555559 came back as ...560, found by fuzz_shadow). */
static void test_number_printing(void) {
  const char *in = "[5555555555555559,9007199254740992,0.1,1e300,-0,123.456,1e-7,-42,2.5e-308,12345678901234567890]";
  cJSON *a = cJSON_Parse(in);
  char *s = mw_shadow_json_print(a, NULL);
  cJSON *b = cJSON_Parse(s);
  const cJSON *x = a->child, *y = b ? b->child : NULL;
  for (; x && y; x = x->next, y = y->next) CHECK(x->valuedouble == y->valuedouble);
  CHECK(!x && !y);
  const char *want = "[5555555555555559,9007199254740992,0.1,1e+300,-0,123.456,1e-07,-42,2.5e-308,";
  CHECK(strncmp(s, want, strlen(want)) == 0);
  free(s);
  cJSON_Delete(a);
  cJSON_Delete(b);
  /* strings: escapes for quotes, backslash and control characters; UTF-8 as is */
  cJSON *str = cJSON_CreateString("a\"b\\c\n\x01\xc3\xa9");
  s = mw_shadow_json_print(str, NULL);
  CHECK_STR(s, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
  free(s);
  cJSON_Delete(str);
  /* a version near 2^53 survives the storage round trip */
  mw_shadow_doc_t d;
  const char *big = "{\"state\":{},\"version\":5555555555555559}";
  CHECK_INT(mw_shadow_doc_deserialize(big, strlen(big), &d), MW_OK);
  s = mw_shadow_doc_serialize(&d);
  CHECK(s && strstr(s, "\"version\":5555555555555559") != NULL);
  free(s);
  mw_shadow_doc_free(&d);
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {
    MW_TEST(test_first_update),
    MW_TEST(test_desired_update_produces_delta),
    MW_TEST(test_reported_catches_up),
    MW_TEST(test_delta_contains_all_differences),
    MW_TEST(test_delta_nested_path),
    MW_TEST(test_nested_merge_and_metadata),
    MW_TEST(test_nested_empty_objects),
    MW_TEST(test_null_deletes),
    MW_TEST(test_empty_sections),
    MW_TEST(test_arrays),
    MW_TEST(test_versions),
    MW_TEST(test_version_on_create),
    MW_TEST(test_malformed),
    MW_TEST(test_shape_errors),
    MW_TEST(test_client_token),
    MW_TEST(test_oversize),
    MW_TEST(test_depth),
    MW_TEST(test_duplicate_keys),
    MW_TEST(test_delta_rule_option),
    MW_TEST(test_output_options),
    MW_TEST(test_delete_and_recreate),
    MW_TEST(test_serialize_and_apply_accepted),
    MW_TEST(test_device_trees),
    MW_TEST(test_json_equal),
    MW_TEST(test_number_printing),
  };
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
