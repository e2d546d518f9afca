/*
** IFX I2C data-link frames: FCTR | LEN(2, BE) | packet | FCS(2). Pure functions, used by
** the host driver and by the simulator, and fuzzed on their own.
*/
#include <string.h>

#include "mw_trustm_int.h"

/*
** CRC-16 with the CCITT generator, reflected (0x8408), init 0, no final XOR: the
** catalogue's CRC-16/KERMIT. The spec's "low byte || high byte" wording describes the
** reflected register; on the wire the high byte of the computed value goes first.
*/
uint16_t mw__trustm_crc(const uint8_t *p, size_t n) {
  uint16_t crc = 0;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0x8408) : (uint16_t)(crc >> 1);
  }
  return crc;
}

size_t mw__trustm_frame_build(uint8_t fctr, const uint8_t *packet, size_t len, uint8_t *out, size_t cap) {
  if (len > 0xFFFF || cap < len + MW_TRUSTM_FRAME_OVERHEAD) return 0;
  out[0] = fctr;
  out[1] = (uint8_t)(len >> 8);
  out[2] = (uint8_t)len;
  if (len) memmove(out + 3, packet, len);
  uint16_t crc = mw__trustm_crc(out, len + 3);
  out[len + 3] = (uint8_t)(crc >> 8);
  out[len + 4] = (uint8_t)crc;
  return len + MW_TRUSTM_FRAME_OVERHEAD;
}

/*
** Order of checks follows the receiver rules: length and checksum first (a frame that
** fails either is NAKed without looking inside), then the FCTR grammar.
*/
mw_trustm_frame_err_t mw__trustm_frame_parse(const uint8_t *buf, size_t n, mw_trustm_frame_t *f) {
  memset(f, 0, sizeof *f);
  if (n < MW_TRUSTM_FRAME_OVERHEAD) return MW_TRUSTM_FRAME_SHORT;
  size_t len = (size_t)buf[1] << 8 | buf[2];
  if (len + MW_TRUSTM_FRAME_OVERHEAD != n) return MW_TRUSTM_FRAME_LENGTH;
  uint16_t crc = mw__trustm_crc(buf, len + 3);
  if (buf[len + 3] != (uint8_t)(crc >> 8) || buf[len + 4] != (uint8_t)crc) return MW_TRUSTM_FRAME_CRC;
  uint8_t fctr = buf[0];
  f->fctr = fctr;
  f->control = (fctr & 0x80) != 0;
  f->seq = fctr & 0x60;
  f->frnr = (fctr >> 2) & 3;
  f->acknr = fctr & 3;
  f->packet = buf + 3;
  f->packet_len = len;
  if (fctr & 0x10) return MW_TRUSTM_FRAME_FCTR; /* RFU */
  if (f->control) {
    if (len != 0 || f->frnr != 0) return MW_TRUSTM_FRAME_FCTR;
    if (f->seq == 0x60) return MW_TRUSTM_FRAME_FCTR;
    if (f->seq == MW_TRUSTM_SEQ_RESYNC && f->acknr != 0) return MW_TRUSTM_FRAME_FCTR;
  } else {
    if (len == 0) return MW_TRUSTM_FRAME_FCTR;
    if (f->seq != MW_TRUSTM_SEQ_ACK && f->seq != MW_TRUSTM_SEQ_NAK) return MW_TRUSTM_FRAME_FCTR;
  }
  return MW_TRUSTM_FRAME_OK;
}

const char *mw__trustm_frame_err_name(mw_trustm_frame_err_t e) {
  switch (e) {
  case MW_TRUSTM_FRAME_OK: return "ok";
  case MW_TRUSTM_FRAME_SHORT: return "short frame";
  case MW_TRUSTM_FRAME_LENGTH: return "length mismatch";
  case MW_TRUSTM_FRAME_CRC: return "bad FCS";
  case MW_TRUSTM_FRAME_FCTR: return "bad FCTR";
  }
  return "?";
}
