/*
** Network/transport layer of the host stack ([IFXI2C] §4-5): one APDU is cut into
** packets of MAX_PACKET_SIZE (frame size - 5) with a PCTR byte each, and a chained
** response is put back together. The presentation layer is a pass-through: with
** cfg.presentation every APDU travels as an unprotected record (PRESENCE bit, SCTR 0x20),
** which the chip then requires until its next reset.
*/
#include <stdio.h>
#include <string.h>

#include "mw_trustm_int.h"

static mw_status_t fail(mw_trustm_link_t *l, const char *why) {
  snprintf(l->why, sizeof l->why, "%s", why);
  return MW_ERR_PROTOCOL;
}

static mw_status_t send_chain(mw_trustm_link_t *l, const uint8_t *stream, size_t total, bool *chip_chain_error) {
  uint8_t pkt[MW_TRUSTM_FRAME_MAX];
  size_t chunk = l->frame_size - MW_TRUSTM_FRAME_OVERHEAD - 1;
  size_t nfrag = (total + chunk - 1) / chunk;
  uint8_t presence = l->presentation ? MW_TRUSTM_PCTR_PRESENCE : 0;
  *chip_chain_error = false;
  for (size_t i = 0; i < nfrag; i++) {
    size_t off = i * chunk, n = total - off < chunk ? total - off : chunk;
    uint8_t chain = nfrag == 1       ? MW_TRUSTM_CHAIN_SINGLE
                    : i == 0         ? MW_TRUSTM_CHAIN_FIRST
                    : i == nfrag - 1 ? MW_TRUSTM_CHAIN_LAST
                                     : MW_TRUSTM_CHAIN_MIDDLE;
    pkt[0] = presence | chain;
    memcpy(pkt + 1, stream + off, n);
    l->expect_armed = i == nfrag - 1; /* the chip starts working after the last fragment */
    mw_status_t st = mw__trustm_dl_send(l, pkt, n + 1);
    if (st != MW_OK) return st;
    if (l->has_early && i != nfrag - 1) {
      /* The only thing a chip may say in the middle of our chain is "chaining error". */
      l->has_early = false;
      if (l->early_len == 1 && (l->early[0] & 7) == MW_TRUSTM_CHAIN_ERROR) {
        *chip_chain_error = true;
        return MW_OK;
      }
      return fail(l, "chip answered in the middle of a chained command");
    }
  }
  return MW_OK;
}

mw_status_t mw__trustm_net_transceive(mw_trustm_link_t *l, const uint8_t *apdu, size_t len, uint8_t *resp,
                                      size_t cap, size_t *resp_len) {
  uint8_t *stream = l->net_out, *in = l->net_in;
  uint8_t pkt[MW_TRUSTM_FRAME_MAX];
  if (len == 0 || len > MW_TRUSTM_APDU_MAX) return MW_ERR_INVALID;
  size_t total = 0;
  if (l->presentation) stream[total++] = MW_TRUSTM_SCTR_RECORD_PLAIN;
  memcpy(stream + total, apdu, len);
  total += len;
  const size_t full = l->frame_size - MW_TRUSTM_FRAME_OVERHEAD;
  const uint8_t presence = l->presentation ? MW_TRUSTM_PCTR_PRESENCE : 0;
  bool restarted = false, sent_chain_error = false;
  for (;;) { /* at most one restart of our chain, as [LIB] */
    bool chip_err;
    mw_status_t st = send_chain(l, stream, total, &chip_err);
    if (st != MW_OK) return st;
    if (chip_err) {
      if (restarted) return fail(l, "chip reports a chaining error twice");
      restarted = true;
      continue;
    }
    size_t got = 0;
    bool first = true, again = false;
    for (;;) {
      size_t n;
      if ((st = mw__trustm_dl_recv(l, pkt, sizeof pkt, &n)) != MW_OK) return st;
      if (n < 1) return fail(l, "empty packet");
      uint8_t pctr = pkt[0], chain = pctr & 7;
      if (pctr & 0xF0) return fail(l, "packet on a channel other than 0");
      if (chain == MW_TRUSTM_CHAIN_ERROR && n == 1) {
        if (restarted) return fail(l, "chip reports a chaining error twice");
        restarted = again = true;
        break;
      }
      bool ok = first ? (chain == MW_TRUSTM_CHAIN_SINGLE || chain == MW_TRUSTM_CHAIN_FIRST)
                      : (chain == MW_TRUSTM_CHAIN_MIDDLE || chain == MW_TRUSTM_CHAIN_LAST);
      if (ok && (chain == MW_TRUSTM_CHAIN_FIRST || chain == MW_TRUSTM_CHAIN_MIDDLE) && n != full) ok = false;
      if (ok && got + n - 1 > sizeof l->net_in) ok = false;
      if (!ok) {
        /* Tell the chip once; it starts its response chain again. */
        if (sent_chain_error) return fail(l, "malformed response chain");
        sent_chain_error = true;
        const uint8_t err = MW_TRUSTM_CHAIN_ERROR;
        if ((st = mw__trustm_dl_send(l, &err, 1)) != MW_OK) return st;
        got = 0;
        first = true;
        continue;
      }
      if (first && (pctr & MW_TRUSTM_PCTR_PRESENCE) != presence)
        return fail(l, presence ? "response lacks the presentation layer" : "unexpected presentation layer");
      memcpy(in + got, pkt + 1, n - 1);
      got += n - 1;
      first = false;
      if (chain == MW_TRUSTM_CHAIN_SINGLE || chain == MW_TRUSTM_CHAIN_LAST) break;
    }
    if (again) continue;
    size_t skip = 0;
    if (l->presentation) {
      if (got < 1 || in[0] != MW_TRUSTM_SCTR_RECORD_PLAIN) return fail(l, "response is not a plain record");
      skip = 1;
    }
    if (got - skip > cap) return MW_ERR_TOO_LARGE;
    memcpy(resp, in + skip, got - skip);
    *resp_len = got - skip;
    return MW_OK;
  }
}
