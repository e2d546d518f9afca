/*
** AWS IoT Device Shadow topics: parse and build
**   $aws/things/{thing}/shadow[/name/{shadow}]/{get,update,delete}[/accepted|/rejected|/delta|/documents]
** Pure string functions: no I/O, no allocation (the Device-Shadow-for-AWS-IoT-embedded-sdk
** Shadow_MatchTopicString / Shadow_AssembleTopicString model), so they can be fuzzed alone.
**
** Names follow AWS's own local implementation (aws-iot.md §1.1): thing and shadow names
** are [a-zA-Z0-9:_-]+, thing <= 128 bytes, shadow <= 64 bytes. Topics are case sensitive.
** The classic shadow has an empty shadow name.
*/
#ifndef MW_SHADOW_TOPIC_H
#define MW_SHADOW_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#include "mw_status.h"

#define MW_SHADOW_THING_NAME_MAX 128
#define MW_SHADOW_SHADOW_NAME_MAX 64
/* Longest topic incl. the terminating NUL:
** "$aws/things/" + thing + "/shadow/name/" + shadow + "/update/documents". */
#define MW_SHADOW_TOPIC_MAX (12 + MW_SHADOW_THING_NAME_MAX + 13 + MW_SHADOW_SHADOW_NAME_MAX + 17 + 1)

/* Subscriptions a shadow service needs to see every request (and none of its responses). */
#define MW_SHADOW_FILTER_CLASSIC "$aws/things/+/shadow/+"
#define MW_SHADOW_FILTER_NAMED "$aws/things/+/shadow/name/+/+"

typedef enum {
  MW_SHADOW_OP_GET = 0,
  MW_SHADOW_OP_UPDATE,
  MW_SHADOW_OP_DELETE
} mw_shadow_op_t;

typedef enum {
  MW_SHADOW_SUFFIX_NONE = 0, /* the request topic itself */
  MW_SHADOW_SUFFIX_ACCEPTED,
  MW_SHADOW_SUFFIX_REJECTED,
  MW_SHADOW_SUFFIX_DELTA,     /* update only */
  MW_SHADOW_SUFFIX_DOCUMENTS  /* update only */
} mw_shadow_suffix_t;

/* A parsed topic. thing/shadow point INTO the parsed topic string (borrowed, not
** NUL-terminated); shadow_len == 0 means the classic shadow. */
typedef struct {
  const char *thing;
  size_t thing_len;
  const char *shadow;
  size_t shadow_len;
  mw_shadow_op_t op;
  mw_shadow_suffix_t suffix;
} mw_shadow_topic_t;

/*
** True when s[0..len) is a valid thing name (max = MW_SHADOW_THING_NAME_MAX) or shadow
** name (max = MW_SHADOW_SHADOW_NAME_MAX): 1..max bytes of [a-zA-Z0-9:_-].
*/
bool mw_shadow_name_valid(const char *s, size_t len, size_t max);

/*
** Parses topic[0..len) (need not be NUL-terminated).
** Returns MW_OK and fills *out, or MW_ERR_INVALID when the topic is not a shadow topic,
** names an unknown operation or suffix (e.g. get/delta), or has an invalid thing or
** shadow name. *out is left untouched on failure.
*/
mw_status_t mw_shadow_topic_parse(const char *topic, size_t len, mw_shadow_topic_t *out);

/*
** Writes the topic for (thing, shadow, op, suffix) to buf as a NUL-terminated string.
** shadow may be NULL or "" (shadow_len 0) for the classic shadow. *out_len (may be NULL)
** receives the length without the NUL.
** Returns MW_OK; MW_ERR_INVALID for a bad name or an op/suffix combination AWS does not
** have; MW_ERR_TOO_LARGE when cap is too small (MW_SHADOW_TOPIC_MAX always suffices).
*/
mw_status_t mw_shadow_topic_build(char *buf, size_t cap, const char *thing, size_t thing_len,
                                  const char *shadow, size_t shadow_len, mw_shadow_op_t op,
                                  mw_shadow_suffix_t suffix, size_t *out_len);

/* "get"/"update"/"delete"; "" for a suffix of NONE; never NULL. */
const char *mw_shadow_op_name(mw_shadow_op_t op);
const char *mw_shadow_suffix_name(mw_shadow_suffix_t suffix);

#endif
