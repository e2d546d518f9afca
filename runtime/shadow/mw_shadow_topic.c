#include "mw_shadow_topic.h"

#include <string.h>

static const char *const op_names[] = {"get", "update", "delete"};
static const char *const suffix_names[] = {"", "accepted", "rejected", "delta", "documents"};

#define PREFIX "$aws/things/"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

const char *mw_shadow_op_name(mw_shadow_op_t op) {
  return (unsigned)op <= MW_SHADOW_OP_DELETE ? op_names[op] : "";
}

const char *mw_shadow_suffix_name(mw_shadow_suffix_t suffix) {
  return (unsigned)suffix <= MW_SHADOW_SUFFIX_DOCUMENTS ? suffix_names[suffix] : "";
}

static bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == ':' || c == '_' || c == '-';
}

bool mw_shadow_name_valid(const char *s, size_t len, size_t max) {
  if (!s || len == 0 || len > max) return false;
  for (size_t i = 0; i < len; i++)
    if (!name_char(s[i])) return false;
  return true;
}

/* delta and documents exist only under update. */
static bool combo_valid(mw_shadow_op_t op, mw_shadow_suffix_t suffix) {
  if ((unsigned)op > MW_SHADOW_OP_DELETE || (unsigned)suffix > MW_SHADOW_SUFFIX_DOCUMENTS) return false;
  if (suffix == MW_SHADOW_SUFFIX_DELTA || suffix == MW_SHADOW_SUFFIX_DOCUMENTS) return op == MW_SHADOW_OP_UPDATE;
  return true;
}

/*
** Matches the segment at *p (up to '/' or end) against word; on a match advances *p past
** the word and returns true.
*/
static bool eat_word(const char **p, const char *end, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(end - *p) < n || memcmp(*p, word, n) != 0) return false;
  if (*p + n != end && (*p)[n] != '/') return false;
  *p += n;
  return true;
}

/* Length of the segment at p (up to '/' or end). */
static size_t seg_len(const char *p, const char *end) {
  const char *q = p;
  while (q < end && *q != '/') q++;
  return (size_t)(q - p);
}

mw_status_t mw_shadow_topic_parse(const char *topic, size_t len, mw_shadow_topic_t *out) {
  if (!topic || !out || len <= PREFIX_LEN || memcmp(topic, PREFIX, PREFIX_LEN) != 0) return MW_ERR_INVALID;
  const char *p = topic + PREFIX_LEN, *end = topic + len;
  mw_shadow_topic_t t = {0};

  t.thing = p;
  t.thing_len = seg_len(p, end);
  if (!mw_shadow_name_valid(t.thing, t.thing_len, MW_SHADOW_THING_NAME_MAX)) return MW_ERR_INVALID;
  p += t.thing_len;
  if (p == end || *p++ != '/' || !eat_word(&p, end, "shadow") || p == end || *p++ != '/') return MW_ERR_INVALID;

  if (eat_word(&p, end, "name")) {
    if (p == end || *p++ != '/') return MW_ERR_INVALID;
    t.shadow = p;
    t.shadow_len = seg_len(p, end);
    if (!mw_shadow_name_valid(t.shadow, t.shadow_len, MW_SHADOW_SHADOW_NAME_MAX)) return MW_ERR_INVALID;
    p += t.shadow_len;
    if (p == end || *p++ != '/') return MW_ERR_INVALID;
  }

  bool found = false;
  for (unsigned i = 0; i <= MW_SHADOW_OP_DELETE && !found; i++)
    if (eat_word(&p, end, op_names[i])) { t.op = (mw_shadow_op_t)i; found = true; }
  if (!found) return MW_ERR_INVALID;

  t.suffix = MW_SHADOW_SUFFIX_NONE;
  if (p != end) {
    p++; /* the '/' that eat_word stopped at */
    found = false;
    for (unsigned i = MW_SHADOW_SUFFIX_ACCEPTED; i <= MW_SHADOW_SUFFIX_DOCUMENTS && !found; i++)
      if (eat_word(&p, end, suffix_names[i])) { t.suffix = (mw_shadow_suffix_t)i; found = true; }
    if (!found || p != end) return MW_ERR_INVALID;
  }
  if (!combo_valid(t.op, t.suffix)) return MW_ERR_INVALID;
  *out = t;
  return MW_OK;
}

/* Appends s[0..n) at *pos if it fits below cap - 1 (room for the NUL). */
static bool put(char *buf, size_t cap, size_t *pos, const char *s, size_t n) {
  if (n >= cap - *pos) return false;
  memcpy(buf + *pos, s, n);
  *pos += n;
  return true;
}

mw_status_t mw_shadow_topic_build(char *buf, size_t cap, const char *thing, size_t thing_len,
                                  const char *shadow, size_t shadow_len, mw_shadow_op_t op,
                                  mw_shadow_suffix_t suffix, size_t *out_len) {
  if (!buf || cap == 0) return MW_ERR_INVALID;
  buf[0] = '\0';
  if (!mw_shadow_name_valid(thing, thing_len, MW_SHADOW_THING_NAME_MAX)) return MW_ERR_INVALID;
  if (shadow_len && !mw_shadow_name_valid(shadow, shadow_len, MW_SHADOW_SHADOW_NAME_MAX)) return MW_ERR_INVALID;
  if (!combo_valid(op, suffix)) return MW_ERR_INVALID;

  size_t pos = 0;
  bool ok = put(buf, cap, &pos, PREFIX, PREFIX_LEN) && put(buf, cap, &pos, thing, thing_len) &&
            put(buf, cap, &pos, "/shadow/", 8);
  if (ok && shadow_len)
    ok = put(buf, cap, &pos, "name/", 5) && put(buf, cap, &pos, shadow, shadow_len) && put(buf, cap, &pos, "/", 1);
  if (ok) ok = put(buf, cap, &pos, op_names[op], strlen(op_names[op]));
  if (ok && suffix != MW_SHADOW_SUFFIX_NONE)
    ok = put(buf, cap, &pos, "/", 1) && put(buf, cap, &pos, suffix_names[suffix], strlen(suffix_names[suffix]));
  if (!ok) {
    buf[0] = '\0';
    return MW_ERR_TOO_LARGE;
  }
  buf[pos] = '\0';
  if (out_len) *out_len = pos;
  return MW_OK;
}
