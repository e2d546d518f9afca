/*
** libFuzzer target for the shadow topic parser: any input either fails to parse, or parses
** to fields that mw_shadow_topic_build turns back into exactly the same bytes.
** Seeds: tests/fuzz/corpus/shadow_topic/.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_shadow_topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mw_shadow_topic_t t;
  const char *topic = (const char *)data;
  if (mw_shadow_topic_parse(topic, size, &t) != MW_OK) return 0;
  if (t.thing < topic || t.thing + t.thing_len > topic + size) abort();
  if (t.shadow_len && (t.shadow < topic || t.shadow + t.shadow_len > topic + size)) abort();
  char buf[MW_SHADOW_TOPIC_MAX];
  size_t n = 0;
  if (mw_shadow_topic_build(buf, sizeof buf, t.thing, t.thing_len, t.shadow, t.shadow_len, t.op, t.suffix, &n) != MW_OK)
    abort();
  if (n != size || memcmp(buf, data, size) != 0) abort();
  return 0;
}
