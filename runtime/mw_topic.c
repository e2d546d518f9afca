#include "mw_topic.h"

#include <mosquitto.h>
#include <stdio.h>
#include <string.h>

static mw_status_t fail(char *why, size_t whylen, const char *msg) {
  if (why && whylen) snprintf(why, whylen, "%s", msg);
  return MW_ERR_INVALID;
}

/* Shared by names and filters: length, NUL bytes and UTF-8. */
static mw_status_t check_common(const char *s, size_t len, char *why, size_t whylen) {
  if (len == 0) return fail(why, whylen, "topic is empty");
  if (len > MW_TOPIC_MAX_BYTES) {
    char msg[96];
    snprintf(msg, sizeof msg, "topic is %zu bytes, longer than the %d-byte limit", len, MW_TOPIC_MAX_BYTES);
    return fail(why, whylen, msg);
  }
  if (memchr(s, '\0', len)) return fail(why, whylen, "topic contains a NUL byte");
  /* mosquitto_validate_utf8 also rejects control characters the MQTT spec disallows. */
  if (mosquitto_validate_utf8(s, (int)len) != MOSQ_ERR_SUCCESS)
    return fail(why, whylen, "topic is not valid UTF-8 (or contains a disallowed control character)");
  return MW_OK;
}

mw_status_t mw_topic_check_name(const char *topic, size_t len, char *why, size_t whylen) {
  mw_status_t st = check_common(topic, len, why, whylen);
  if (st != MW_OK) return st;
  if (memchr(topic, '+', len) || memchr(topic, '#', len))
    return fail(why, whylen, "wildcards '+' and '#' are not allowed in a topic name you publish to");
  size_t start = 0, slashes = 0;
  /* AWS does not count the Basic Ingest prefix $aws/rules/<rule>/ against the limit. */
  if (len > 11 && memcmp(topic, "$aws/rules/", 11) == 0) {
    const char *end = memchr(topic + 11, '/', len - 11);
    if (end) start = (size_t)(end - topic) + 1;
  }
  for (size_t i = start; i < len; i++) slashes += topic[i] == '/';
  if (slashes > MW_TOPIC_MAX_SLASHES) {
    char msg[96];
    snprintf(msg, sizeof msg, "topic has %zu '/' separators, more than AWS IoT's limit of %d", slashes,
             MW_TOPIC_MAX_SLASHES);
    return fail(why, whylen, msg);
  }
  return MW_OK;
}

mw_status_t mw_topic_check_filter(const char *filter, size_t len, char *why, size_t whylen) {
  mw_status_t st = check_common(filter, len, why, whylen);
  if (st != MW_OK) return st;
  for (size_t i = 0; i < len; i++) {
    char c = filter[i];
    int level_start = i == 0 || filter[i - 1] == '/';
    int level_end = i + 1 == len || filter[i + 1] == '/';
    if (c == '+' && !(level_start && level_end))
      return fail(why, whylen, "'+' must occupy a whole topic level (as in a/+/b)");
    if (c == '#') {
      if (!level_start || i + 1 != len)
        return fail(why, whylen, "'#' must be the whole last topic level (as in a/b/#)");
    }
  }
  return MW_OK;
}

bool mw_topic_matches(const char *filter, const char *topic) {
  bool result = false;
  if (mosquitto_topic_matches_sub(filter, topic, &result) != MOSQ_ERR_SUCCESS) return false;
  return result;
}
