/*
** APDU building blocks: a bounded write buffer for command data and a TLV reader for
** responses. Pure code; the response side is fuzzed (tests/trustm/fuzz_trustm_apdu.c).
*/
#include <string.h>

#include "mw_trustm_int.h"

void mw__trustm_put(mw_trustm_wbuf_t *w, const uint8_t *p, size_t n) {
  if (w->overflow || n > w->cap - w->len) {
    w->overflow = true;
    return;
  }
  if (n) memcpy(w->buf + w->len, p, n);
  w->len += n;
}

void mw__trustm_put8(mw_trustm_wbuf_t *w, uint8_t v) { mw__trustm_put(w, &v, 1); }

void mw__trustm_put16(mw_trustm_wbuf_t *w, uint16_t v) {
  const uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  mw__trustm_put(w, b, 2);
}

void mw__trustm_put_tlv(mw_trustm_wbuf_t *w, uint8_t tag, const uint8_t *p, size_t n) {
  if (n > 0xFFFF) {
    w->overflow = true;
    return;
  }
  mw__trustm_put8(w, tag);
  mw__trustm_put16(w, (uint16_t)n);
  mw__trustm_put(w, p, n);
}

void mw__trustm_put_tlv16(mw_trustm_wbuf_t *w, uint8_t tag, uint16_t v) {
  const uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  mw__trustm_put_tlv(w, tag, b, 2);
}

/* Tags may come in any order ([LIB] emits some out of numeric order), so search them all. */
mw_status_t mw__trustm_tlv_find(const uint8_t *p, size_t n, uint8_t tag, const uint8_t **val, size_t *vlen) {
  size_t i = 0;
  bool found = false;
  while (i < n) {
    if (n - i < 3) return MW_ERR_PROTOCOL;
    size_t l = (size_t)p[i + 1] << 8 | p[i + 2];
    if (l > n - i - 3) return MW_ERR_PROTOCOL;
    if (p[i] == tag && !found) {
      *val = p + i + 3;
      *vlen = l;
      found = true;
    }
    i += 3 + l;
  }
  return found ? MW_OK : MW_ERR_NOT_FOUND;
}

mw_status_t mw__trustm_apdu_parse_response(const uint8_t *p, size_t n, uint8_t *sta, const uint8_t **out,
                                           size_t *out_len) {
  if (n < 4) return MW_ERR_PROTOCOL;
  size_t l = (size_t)p[2] << 8 | p[3];
  if (l != n - 4) return MW_ERR_PROTOCOL;
  *sta = p[0];
  *out = p + 4;
  *out_len = l;
  return MW_OK;
}
