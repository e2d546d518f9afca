/*
** libFuzzer target for what the device side (moonwire.shadow's C core, bindings/lmod_shadow_core.c)
** does with a message from the network: mw_shadow_json_parse, then, as an /update/accepted, mw_shadow_doc_apply_accepted_tree on a seeded document,
** and, as a /get/accepted, mw_shadow_doc_take. Invariants (abort() on violation):
**  - an applied document serialises and deserialises to the same document, and its delta and
**    version are consistent (the version only grows on "applied"; "stale" changes nothing);
**  - a taken document serialises and deserialises to the same document.
** Seeds: tests/fuzz/corpus/shadow_device/.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_shadow_doc.h"

static const char seed[] = "{\"state\":{\"desired\":{\"a\":{\"b\":1,\"c\":[1,2]},\"d\":\"x\",\"e\":{}},"
                           "\"reported\":{\"a\":{\"b\":2},\"r\":true}},\"metadata\":{},\"version\":5,\"timestamp\":1}";

static void must(int cond) {
  if (!cond) abort();
}

static void round_trip(const mw_shadow_doc_t *doc) {
  char *s = mw_shadow_doc_serialize(doc);
  must(s != NULL);
  mw_shadow_doc_t back;
  must(mw_shadow_doc_deserialize(s, strlen(s), &back) == MW_OK);
  must(mw_shadow_json_equal(back.desired, doc->desired) && mw_shadow_json_equal(back.reported, doc->reported));
  must(back.version == doc->version);
  mw_shadow_doc_free(&back);
  free(s);
  cJSON_Delete(mw_shadow_delta(doc->desired, doc->reported));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mw_status_t st;
  cJSON *root = mw_shadow_json_parse(data, size, &st);
  if (!root) {
    must(st == MW_ERR_INVALID || st == MW_ERR_NOMEM);
    return 0;
  }
  mw_shadow_doc_t doc, before;
  must(mw_shadow_doc_deserialize(seed, sizeof seed - 1, &doc) == MW_OK);
  must(mw_shadow_doc_copy(&before, &doc) == MW_OK);
  st = mw_shadow_doc_apply_accepted_tree(&doc, root);
  if (st == MW_OK) {
    must(doc.version > before.version);
    round_trip(&doc);
  } else {
    must(doc.version == before.version && mw_shadow_json_equal(doc.desired, before.desired));
  }
  mw_shadow_doc_free(&doc);
  mw_shadow_doc_free(&before);
  /* The same tree as a /get/accepted (taking its sections out of it). */
  if (mw_shadow_doc_take(root, &doc) == MW_OK) round_trip(&doc);
  mw_shadow_doc_free(&doc);
  cJSON_Delete(root);
  return 0;
}
