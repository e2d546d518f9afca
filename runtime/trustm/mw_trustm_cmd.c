/*
** Command execution: start-up of the stack (soft reset, negotiation, OpenApplication),
** one APDU round trip, and the error path: a response with Sta FF is followed by a read
** of the Last Error Code (0xF1C2, sent as Cmd 0x01 so the read itself does not flush
** the code), which becomes MW_ERR_DEVICE plus a message naming the chip error.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mw_log.h"
#include "mw_trustm_int.h"

static const uint8_t aid[16] = {0xD2, 0x76, 0x00, 0x00, 0x04, 'G', 'e', 'n', 'A', 'u', 't', 'h', 'A', 'p', 'p', 'l'};

void mw__trustm_clear_error(mw_trustm_t *dev) {
  dev->last_chip_error = 0;
  dev->last_error[0] = '\0';
}

mw_status_t mw__trustm_fail(mw_trustm_t *dev, mw_status_t st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dev->last_error, sizeof dev->last_error, fmt, ap);
  va_end(ap);
  MW_LOGD("trustm", "%s (%s)", dev->last_error, mw_status_name(st));
  return st;
}

/*
** Typical execution times before anything was measured, a little under the datasheet's
** ([SRM] Command Performance, 400 kHz). Signatures: ~60 ms for P-256 (other curves take
** longer, which the learned scale then reflects). Data objects by their length: 256 bytes
** read in ~30 ms and written in ~55 ms, bus time included; less the ~7 ms the frames take
** on the bus, that is ~1.4 ms + 80 us a byte to read and ~7.5 ms (NVM programming) +
** 150 us a byte to write. A read whose length is not known yet (bytes 0) and the short
** commands: 0, polled from the start.
*/
static uint32_t default_expect_us(uint8_t cmd, uint8_t param, size_t bytes) {
  switch (cmd & 0x7F) {
  case MW_TRUSTM_CMD_CALC_SIGN & 0x7F: return 55000;
  case MW_TRUSTM_CMD_VERIFY_SIGN & 0x7F: return 70000;
  case MW_TRUSTM_CMD_CALC_SSEC & 0x7F: return 55000;
  case MW_TRUSTM_CMD_GEN_KEYPAIR & 0x7F: return 50000;
  case MW_TRUSTM_CMD_GET_DATA & 0x7F: return param == 0x00 && bytes ? 1400 + 80 * (uint32_t)bytes : 0;
  case MW_TRUSTM_CMD_SET_DATA & 0x7F: return 7500 + 150 * (uint32_t)bytes;
  default: return 0;
  }
}

#define SCALE_ONE 65536u

/*
** What to expect: the default times what the chip showed so far. The scale follows a
** faster chip at once and a slower one by half the difference per command, so one
** command delayed by the security monitor does not make every later poll late; it is
** capped at 4 (a P-521 signature takes ~2.5x a P-256 one). One scale per command code
** serves every length: the chip's time is the model's shape, only faster or slower.
** Rounded up, so the expectation after one command is what it took, not a microsecond less.
*/
static uint32_t expect_for(const mw_trustm_t *dev, uint8_t cmd, uint32_t d) {
  uint32_t v = dev->learned_scale[cmd & 0x7F];
  return v ? (uint32_t)(((uint64_t)d * v + SCALE_ONE - 1) / SCALE_ONE) : d;
}

static void learn(mw_trustm_t *dev, uint8_t cmd, uint32_t d, uint32_t took) {
  uint32_t *v = &dev->learned_scale[cmd & 0x7F];
  if (!d || !took) return;
  uint64_t r = ((uint64_t)took * SCALE_ONE + d - 1) / d, cur = *v ? *v : SCALE_ONE;
  cur = r <= cur ? r : cur + (r - cur) / 2;
  *v = (uint32_t)(cur > 4 * SCALE_ONE ? 4 * SCALE_ONE : cur);
}

/* One APDU already in dev->apdu; a link failure resyncs and schedules a restart. */
static mw_status_t exchange(mw_trustm_t *dev, const char *what, size_t len, uint8_t *sta, const uint8_t **out,
                            size_t *out_len) {
  size_t n = 0;
  dev->stats.apdus++;
  dev->link.why[0] = '\0';
  mw_status_t st = mw__trustm_net_transceive(&dev->link, dev->apdu, len, dev->resp, sizeof dev->resp, &n);
  if (st == MW_OK) st = mw__trustm_apdu_parse_response(dev->resp, n, sta, out, out_len);
  if (st != MW_OK) {
    mw__trustm_dl_resync(&dev->link);
    dev->need_restart = true;
    return mw__trustm_fail(dev, st, "%s: link failure: %s", what,
                           dev->link.why[0] ? dev->link.why : mw_status_str(st));
  }
  return MW_OK;
}

/* The Last Error Code, read without flushing (Cmd 0x01); 0 when it cannot be read. */
static uint8_t fetch_error(mw_trustm_t *dev) {
  static const uint8_t get[] = {0x01, 0x00, 0x00, 0x06, 0xF1, 0xC2, 0x00, 0x00, 0x00, 0x01};
  memcpy(dev->apdu, get, sizeof get);
  uint8_t sta;
  const uint8_t *out;
  size_t n;
  if (exchange(dev, "read Last Error Code", sizeof get, &sta, &out, &n) != MW_OK) return 0;
  return (sta == 0 && n == 1) ? out[0] : 0;
}

mw_status_t mw__trustm_start(mw_trustm_t *dev) {
  mw_trustm_link_t *l = &dev->link;
  dev->app_open = false;
  dev->need_restart = true;
  l->frame_size = MW_TRUSTM_FRAME_MAX;
  l->why[0] = '\0';
  mw_status_t st = mw__trustm_phys_soft_reset(l);
  if (st == MW_OK) st = mw__trustm_phys_negotiate(l, dev->cfg.frequency_khz, dev->cfg.frame_size);
  if (st != MW_OK)
    return mw__trustm_fail(dev, st, "start-up: %s", l->why[0] ? l->why : mw_status_str(st));
  dev->need_restart = false;
  memcpy(dev->apdu, (const uint8_t[]){MW_TRUSTM_CMD_OPEN_APP, 0x00, 0x00, 0x10}, 4);
  memcpy(dev->apdu + 4, aid, sizeof aid);
  uint8_t sta;
  const uint8_t *out;
  size_t n;
  if ((st = exchange(dev, "OpenApplication", 4 + sizeof aid, &sta, &out, &n)) != MW_OK) return st;
  if (sta != 0) {
    uint8_t code = fetch_error(dev);
    dev->last_chip_error = code;
    return mw__trustm_fail(dev, MW_ERR_DEVICE, "OpenApplication: %s (chip error 0x%02X)",
                           mw_trustm_error_name(code), code);
  }
  dev->app_open = true;
  return MW_OK;
}

mw_status_t mw__trustm_cmd(mw_trustm_t *dev, const char *what, uint8_t cmd, uint8_t param, const uint8_t *in,
                           size_t in_len, const uint8_t **out, size_t *out_len) {
  /* A data write's length is in the command: OID(2) offset(2) data; metadata and count writes take the base time. */
  bool data_write = cmd == MW_TRUSTM_CMD_SET_DATA && (param == 0x00 || param == 0x40) && in_len > 4;
  return mw__trustm_cmd_sized(dev, what, cmd, param, in, in_len, data_write ? in_len - 4 : 0, out, out_len);
}

mw_status_t mw__trustm_cmd_sized(mw_trustm_t *dev, const char *what, uint8_t cmd, uint8_t param, const uint8_t *in,
                                 size_t in_len, size_t bytes, const uint8_t **out, size_t *out_len) {
  mw__trustm_clear_error(dev);
  if (in_len > MW_TRUSTM_MAX_APDU_DATA)
    return mw__trustm_fail(dev, MW_ERR_TOO_LARGE, "%s: %zu bytes of command data, at most %d fit", what, in_len,
                           MW_TRUSTM_MAX_APDU_DATA);
  for (int attempt = 0;; attempt++) {
    if (dev->need_restart || !dev->app_open) {
      mw_status_t st = mw__trustm_start(dev);
      if (st != MW_OK) return st;
      dev->stats.reopens++;
      mw__trustm_clear_error(dev);
    }
    dev->apdu[0] = cmd;
    dev->apdu[1] = param;
    dev->apdu[2] = (uint8_t)(in_len >> 8);
    dev->apdu[3] = (uint8_t)in_len;
    if (in_len) memmove(dev->apdu + 4, in, in_len);
    uint8_t sta;
    uint32_t d = default_expect_us(cmd, param, bytes);
    dev->link.expect_us = expect_for(dev, cmd, d);
    dev->link.observed_us = 0;
    mw_status_t st = exchange(dev, what, 4 + in_len, &sta, out, out_len);
    dev->link.expect_us = 0;
    if (st != MW_OK) return st;
    /* A read is measured against what it really returned (an object may have changed size);
       one polled from the start is not measured: its answer was seen too coarsely. */
    if (sta == 0x00 && d) {
      uint32_t model = cmd == MW_TRUSTM_CMD_GET_DATA ? default_expect_us(cmd, param, *out_len) : d;
      learn(dev, cmd, model, dev->link.observed_us);
    }
    if (sta == 0x00) return MW_OK;
    if (sta != 0xFF) return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "%s: unknown response status 0x%02X", what, sta);
    uint8_t code = fetch_error(dev);
    /*
    ** "Command not available" while we believe the application is open means the chip
    ** was reset under us: it did not run the command, so open again and repeat once.
    */
    if (code == 0x0C && attempt == 0 && cmd != MW_TRUSTM_CMD_OPEN_APP) {
      MW_LOGI("trustm", "application closed by the chip (reset?); opening it again");
      dev->app_open = false;
      continue;
    }
    dev->last_chip_error = code;
    if (code == 0)
      return mw__trustm_fail(dev, MW_ERR_DEVICE, "%s: chip reports an error (Last Error Code unreadable)", what);
    return mw__trustm_fail(dev, MW_ERR_DEVICE, "%s: %s (chip error 0x%02X)", what, mw_trustm_error_name(code), code);
  }
}
