/*
** libFuzzer target: topic-name and filter validation, and matching. The first byte
** picks where the input splits into a filter and a topic.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_keyref.h"
#include "mw_topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t split = data[0] % size;
  const char *a = (const char *)data + 1;
  size_t alen = split > 0 ? split - 1 : 0, blen = size - 1 - alen;
  char why[200];
  char *filter = malloc(alen + 1), *topic = malloc(blen + 1);
  if (!filter || !topic) abort();
  memcpy(filter, a, alen);
  filter[alen] = '\0';
  memcpy(topic, a + alen, blen);
  topic[blen] = '\0';
  int name_ok = mw_topic_check_name(topic, blen, why, sizeof why) == MW_OK;
  int filter_ok = mw_topic_check_filter(filter, alen, why, sizeof why) == MW_OK;
  /* A valid name is always a valid filter, and matches itself. */
  if (name_ok && mw_topic_check_filter(topic, blen, why, sizeof why) != MW_OK) abort();
  if (name_ok && !mw_topic_matches(topic, topic)) abort();
  if (name_ok && filter_ok) (void)mw_topic_matches(filter, topic);
  mw_keyref_t ref;
  (void)mw_keyref_parse(topic, &ref, why, sizeof why);
  free(filter);
  free(topic);
  return 0;
}
