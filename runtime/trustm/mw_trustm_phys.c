/*
** Physical layer of the host stack: register access over single I2C transactions,
** the 50 us guard time after each one, retry of NACKed transactions (the chip NACKs
** its address while busy, asleep or resetting), soft reset and negotiation.
*/
#include <stdio.h>
#include <string.h>

#include "mw_log.h"
#include "mw_trustm_int.h"

#define T_STARTUP_US 15000u /* first transaction after a reset, [DS] Tables 14/15 */

void mw__trustm_phys_sleep(mw_trustm_link_t *l, uint32_t us) { l->tr.ops->sleep_us(l->tr.ctx, us); }
uint64_t mw__trustm_phys_now(mw_trustm_link_t *l) { return l->tr.ops->now_us(l->tr.ctx); }

/*
** The guard time is a minimum gap between one transaction's STOP and the next START. It
** is kept by waiting only for what is left of it when the next transaction comes (often
** nothing, when the driver has slept anyway), not by a sleep after every transaction.
*/
static void keep_guard(mw_trustm_link_t *l) {
  if (!l->stopped) return;
  uint64_t since = mw__trustm_phys_now(l) - l->last_stop_us;
  if (since < l->guard_us) mw__trustm_phys_sleep(l, (uint32_t)(l->guard_us - since));
}

/*
** One transaction with NACK retry bounded by time (not just a count), so a chip that
** NACKs for longer than nack_budget_us is reported instead of waited for forever.
*/
static mw_status_t transact(mw_trustm_link_t *l, bool write, uint8_t *buf, size_t len) {
  uint64_t start = mw__trustm_phys_now(l);
  for (;;) {
    keep_guard(l);
    mw_status_t st = write ? l->tr.ops->write(l->tr.ctx, buf, len) : l->tr.ops->read(l->tr.ctx, buf, len);
    l->stats->transactions++;
    l->last_stop_us = mw__trustm_phys_now(l);
    l->stopped = true;
    if (st == MW_OK) {
      if (write) l->stats->bytes_written += len;
      else l->stats->bytes_read += len;
      return MW_OK;
    }
    if (st != MW_ERR_BUSY) {
      snprintf(l->why, sizeof l->why, "I2C %s failed", write ? "write" : "read");
      return st;
    }
    l->stats->nacks++;
    if (mw__trustm_phys_now(l) - start >= l->nack_budget_us) {
      snprintf(l->why, sizeof l->why, "chip NACKs its address for over %u ms", l->nack_budget_us / 1000);
      return MW_ERR_TIMEOUT;
    }
    mw__trustm_phys_sleep(l, l->nack_retry_us);
  }
}

mw_status_t mw__trustm_phys_write(mw_trustm_link_t *l, uint8_t reg, const uint8_t *data, size_t len) {
  uint8_t buf[1 + MW_TRUSTM_FRAME_MAX];
  if (len > MW_TRUSTM_FRAME_MAX) return MW_ERR_INVALID;
  buf[0] = reg;
  if (len) memcpy(buf + 1, data, len);
  return transact(l, true, buf, len + 1);
}

/* No repeated start on this chip: the address write and the read are separate transactions. */
mw_status_t mw__trustm_phys_read(mw_trustm_link_t *l, uint8_t reg, uint8_t *buf, size_t len) {
  mw_status_t st = transact(l, true, &reg, 1);
  if (st != MW_OK) return st;
  return transact(l, false, buf, len);
}

mw_status_t mw__trustm_phys_state(mw_trustm_link_t *l, uint8_t *flags, uint16_t *avail) {
  uint8_t s[4];
  mw_status_t st = mw__trustm_phys_read(l, MW_TRUSTM_REG_I2C_STATE, s, sizeof s);
  if (st != MW_OK) return st;
  l->stats->polls++;
  *flags = s[0];
  *avail = (uint16_t)(s[2] << 8 | s[3]);
  return MW_OK;
}

mw_status_t mw__trustm_phys_soft_reset(mw_trustm_link_t *l) {
  uint8_t flags;
  uint16_t avail;
  mw_status_t st = mw__trustm_phys_state(l, &flags, &avail);
  if (st != MW_OK) return st;
  if (!(flags & MW_TRUSTM_STATE_SOFT_RESET)) {
    snprintf(l->why, sizeof l->why, "chip does not support soft reset (I2C_STATE %02X)", flags);
    return MW_ERR_PROTOCOL;
  }
  static const uint8_t any[2] = {0x00, 0x00};
  st = mw__trustm_phys_write(l, MW_TRUSTM_REG_SOFT_RESET, any, sizeof any);
  if (st != MW_OK) return st;
  mw__trustm_phys_sleep(l, T_STARTUP_US);
  mw__trustm_dl_reset(l);
  return MW_OK;
}

static mw_status_t read_freq(mw_trustm_link_t *l, unsigned *khz) {
  uint8_t v[4];
  mw_status_t st = mw__trustm_phys_read(l, MW_TRUSTM_REG_MAX_SCL_FREQU, v, sizeof v);
  *khz = (unsigned)(v[2] << 8 | v[3]);
  return st;
}

/*
** Negotiation as the reference host does it: read MAX_SCL_FREQU, switch I2C_MODE when the
** wanted speed is on the other side of 400 kHz, then write DATA_REG_LEN and adopt the
** read-back value (a chip that cannot take our size shows its own maximum).
*/
mw_status_t mw__trustm_phys_negotiate(mw_trustm_link_t *l, unsigned want_khz, unsigned want_frame) {
  unsigned khz;
  mw_status_t st = read_freq(l, &khz);
  if (st != MW_OK) return st;
  if ((want_khz > 400 && khz <= 400) || (want_khz <= 400 && khz > 400)) {
    const uint8_t mode[2] = {0x80, want_khz > 400 ? 0x04 : 0x03};
    if ((st = mw__trustm_phys_write(l, MW_TRUSTM_REG_I2C_MODE, mode, 2)) != MW_OK) return st;
    if ((st = read_freq(l, &khz)) != MW_OK) return st;
  }
  if (khz < want_khz || khz == 0xFFFF) {
    snprintf(l->why, sizeof l->why, "chip allows %u kHz, %u kHz wanted", khz, want_khz);
    return MW_ERR_PROTOCOL;
  }
  l->frequency_khz = khz;
  const uint8_t fs[2] = {(uint8_t)(want_frame >> 8), (uint8_t)want_frame};
  if ((st = mw__trustm_phys_write(l, MW_TRUSTM_REG_DATA_REG_LEN, fs, 2)) != MW_OK) return st;
  uint8_t rb[2];
  if ((st = mw__trustm_phys_read(l, MW_TRUSTM_REG_DATA_REG_LEN, rb, 2)) != MW_OK) return st;
  unsigned got = (unsigned)(rb[0] << 8 | rb[1]);
  if (got > want_frame || got < MW_TRUSTM_FRAME_MIN) {
    snprintf(l->why, sizeof l->why, "frame size negotiation: asked %u, chip shows %u", want_frame, got);
    return MW_ERR_PROTOCOL;
  }
  if (got != want_frame) MW_LOGI("trustm", "chip limits frames to %u bytes", got);
  l->frame_size = got;
  return MW_OK;
}
