/*
** libFuzzer: the host's data link and transport layers fed with arbitrary chip bytes.
** Every I2C_STATE and DATA read returns the next fuzz bytes; when they run out the chip
** NACKs, so each exchange ends by timeout on the virtual clock. Looks for crashes, hangs
** and out-of-bounds access in frame parsing, ACK/NAK handling and chain reassembly.
*/
#include <stdint.h>
#include <string.h>

#include "mw_trustm_int.h"

typedef struct {
  const uint8_t *p;
  size_t n;
  uint64_t clock;
} feed_t;

static mw_status_t f_write(void *ctx, const uint8_t *buf, size_t len) {
  feed_t *f = ctx;
  (void)buf, (void)len;
  f->clock += 50;
  return f->n ? MW_OK : MW_ERR_BUSY;
}

static mw_status_t f_read(void *ctx, uint8_t *buf, size_t len) {
  feed_t *f = ctx;
  f->clock += 50;
  if (!f->n) return MW_ERR_BUSY;
  size_t k = len < f->n ? len : f->n;
  memset(buf, 0xFF, len);
  memcpy(buf, f->p, k);
  f->p += k;
  f->n -= k;
  return MW_OK;
}

static void f_sleep(void *ctx, uint32_t us) { ((feed_t *)ctx)->clock += us; }
static uint64_t f_now(void *ctx) { return ((feed_t *)ctx)->clock; }

static const mw_trustm_transport_ops_t ops = {f_write, f_read, f_sleep, f_now, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mw_trustm_link_t l;
  static uint8_t apdu[1200], resp[MW_TRUSTM_APDU_MAX + 8];
  if (size < 1) return 0;
  uint8_t mode = data[0];
  feed_t f = {data + 1, size - 1, 0};
  mw_trustm_transport_t tr = {&ops, &f};
  mw_trustm_stats_t stats = {0};
  mw__trustm_link_init(&l, &tr, &stats);
  l.nack_budget_us = 3000;
  l.response_timeout_us = 40000;
  l.presentation = mode & 1;
  l.frame_size = (mode & 2) ? 64 : MW_TRUSTM_FRAME_MAX;
  l.tx = (mode >> 2) & 3;
  l.rx = (mode >> 4) & 3;
  size_t len = (mode & 0x40) ? sizeof apdu : 10;
  memset(apdu, 0x5A, len);
  apdu[0] = 0x81;
  apdu[2] = (uint8_t)((len - 4) >> 8);
  apdu[3] = (uint8_t)(len - 4);
  size_t rl = 0;
  if (mw__trustm_net_transceive(&l, apdu, len, resp, sizeof resp, &rl) == MW_OK) {
    uint8_t sta;
    const uint8_t *out, *v;
    size_t on, vl;
    if (mw__trustm_apdu_parse_response(resp, rl, &sta, &out, &on) == MW_OK) (void)mw__trustm_tlv_find(out, on, 0x01, &v, &vl);
  } else {
    mw__trustm_dl_resync(&l);
  }
  return 0;
}
