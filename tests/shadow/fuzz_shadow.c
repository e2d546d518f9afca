/*
** libFuzzer target for the shadow document core: request parser/validator, merge, delta,
** metadata, response builders, storage round trip and device-side application.
** Input: byte 0 selects options, the rest is an /update payload. It is applied twice to a
** seeded document (so merges run into existing and self-made structure), and these
** invariants are checked (abort() on violation):
**  - an accepted update yields parseable accepted/delta/documents payloads and a state
**    within max_state_bytes; a rejected one leaves the document unchanged;
**  - applying /update/accepted to a device-side copy gives the same desired/reported;
**  - serialize -> deserialize gives the same document.
** Seeds: tests/fuzz/corpus/shadow/.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_shadow_doc.h"

static const char seed_doc[] =
    "{\"state\":{\"desired\":{\"a\":{\"b\":1,\"c\":[1,2]},\"d\":\"x\",\"e\":{}},"
    "\"reported\":{\"a\":{\"b\":2},\"r\":true}},\"clientToken\":\"seed\"}";

static void must(int cond) {
  if (!cond) abort();
}

static void must_parse(const char *json) {
  cJSON *j = json ? cJSON_Parse(json) : NULL;
  must(cJSON_IsObject(j));
  cJSON_Delete(j);
}

static void check_round_trip(const mw_shadow_doc_t *doc) {
  char *s = mw_shadow_doc_serialize(doc);
  must(s != NULL);
  mw_shadow_doc_t back;
  must(mw_shadow_doc_deserialize(s, strlen(s), &back) == MW_OK);
  must(mw_shadow_json_equal(back.desired, doc->desired) && mw_shadow_json_equal(back.reported, doc->reported));
  must(mw_shadow_json_equal(back.meta_desired, doc->meta_desired));
  must(back.version == doc->version);
  mw_shadow_doc_free(&back);
  free(s);
}

static void one_update(mw_shadow_doc_t *doc, const uint8_t *data, size_t size, const mw_shadow_options_t *opt,
                       int64_t now) {
  mw_shadow_request_t req;
  mw_shadow_error_t err;
  mw_shadow_result_t res;
  if (mw_shadow_request_parse(data, size, opt, &req, &err) != MW_OK) {
    must(err.code >= 400 && err.code <= 500);
    char *e = mw_shadow_error_json(&err, now);
    must_parse(e);
    free(e);
    return;
  }
  mw_shadow_doc_t before, device;
  must(mw_shadow_doc_copy(&before, doc) == MW_OK);
  must(mw_shadow_doc_copy(&device, doc) == MW_OK);
  if (mw_shadow_doc_update(doc, &req, now, opt, &res, &err) == MW_OK) {
    must_parse(res.accepted);
    if (res.delta) must_parse(res.delta);
    if (res.documents) must_parse(res.documents);
    must(mw_shadow_doc_state_size(doc) <= opt->max_state_bytes);
    must(doc->version == before.version + 1 || !before.exists);
    if (opt->accepted_echo_nulls) {
      must(mw_shadow_doc_apply_accepted(&device, res.accepted, strlen(res.accepted)) == MW_OK);
      must(mw_shadow_json_equal(device.desired, doc->desired));
      must(mw_shadow_json_equal(device.reported, doc->reported));
      must(mw_shadow_json_equal(device.meta_reported, doc->meta_reported));
    }
    cJSON *delta = mw_shadow_delta(doc->desired, doc->reported);
    cJSON_Delete(mw_shadow_delta_metadata(delta, doc->meta_desired));
    cJSON_Delete(delta);
    mw_shadow_result_free(&res);
  } else {
    must(mw_shadow_json_equal(before.desired, doc->desired) && before.version == doc->version);
  }
  char *g = NULL;
  if (mw_shadow_doc_get(doc, "t", "tok", now, opt, &g, &err) == MW_OK) must_parse(g);
  free(g);
  check_round_trip(doc);
  mw_shadow_doc_free(&before);
  mw_shadow_doc_free(&device);
  mw_shadow_request_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  mw_shadow_options_t opt;
  mw_shadow_options_init(&opt);
  uint8_t o = data[0];
  opt.delta_rule = (o & 1) ? MW_SHADOW_DELTA_ALWAYS : MW_SHADOW_DELTA_ON_DESIRED;
  opt.duplicate_keys = (mw_shadow_duplicate_rule_t)((o >> 1) % 3);
  opt.accepted_echo_nulls = !(o & 8);
  opt.create_version = (mw_shadow_create_version_t)((o >> 4) % 3);
  opt.get_metadata_delta = (o & 64) != 0;
  opt.documents_previous = (mw_shadow_previous_rule_t)((o >> 6) % 3);
  data++;
  size--;

  mw_shadow_doc_t doc;
  mw_shadow_doc_init(&doc);
  if (o & 128) one_update(&doc, (const uint8_t *)seed_doc, sizeof seed_doc - 1, &opt, 1000);
  one_update(&doc, data, size, &opt, 2000);
  one_update(&doc, data, size, &opt, 3000);
  char *json = NULL;
  mw_shadow_error_t err;
  if (mw_shadow_doc_delete(&doc, "t", NULL, 4000, &opt, &json, &err) == MW_OK) must_parse(json);
  free(json);
  mw_shadow_doc_free(&doc);

  /* the lenient get/delete token extraction and the cache loader see the raw bytes too */
  char tok[MW_SHADOW_CLIENT_TOKEN_MAX + 1];
  mw_shadow_client_token(data, size, tok);
  if (mw_shadow_doc_deserialize(data, size, &doc) == MW_OK) check_round_trip(&doc);
  mw_shadow_doc_free(&doc);
  return 0;
}
