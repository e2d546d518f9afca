/*
** Simulator, bus side: the register file of [IFXI2C] Table 2-1 with its exact lengths
** and 0xFF filler, I2C_STATE, NACKs (busy, asleep, reset window, guard time, injected),
** the clock, resets and fault injection. Frames written to and read from DATA go to
** the data link model in mw_trustm_sim_link.c.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mw_log.h"
#include "mw_trustm_sim_int.h"

static uint64_t clock_us(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t sim_now(mw_trustm_sim_t *s) { return s->cfg.realtime ? clock_us(CLOCK_MONOTONIC) - s->mono_base : s->vclock; }
uint64_t sim_wall(mw_trustm_sim_t *s) { return s->wall_base + sim_now(s); }
uint64_t mw_trustm_sim_now_us(mw_trustm_sim_t *s) { return sim_now(s); }

void mw_trustm_sim_advance_us(mw_trustm_sim_t *s, uint64_t us) {
  if (!s->cfg.realtime) s->vclock += us;
}

bool sim_fault(mw_trustm_sim_t *s, mw_trustm_fault_t f) {
  if (!s->fault[f]) return false;
  s->fault[f]--;
  s->stats.faults_fired[f]++;
  return true;
}

void mw_trustm_sim_inject(mw_trustm_sim_t *s, mw_trustm_fault_t f, unsigned n) {
  if ((unsigned)f < MW_TRUSTM_FAULT_COUNT) s->fault[f] += n;
}

void mw_trustm_sim_clear_faults(mw_trustm_sim_t *s) { memset(s->fault, 0, sizeof s->fault); }

/* A reset loses everything volatile; the registers fall back to their persistent values. */
void sim_warm_reset(mw_trustm_sim_t *s) {
  s->addr = s->addr_nv;
  s->i2c_mode = s->i2c_mode_nv;
  s->data_reg_len = SIM_FRAME_MAX;
  s->asleep = false;
  sim_link_reset(s);
  sim_app_reset(s);
  s->nack_until = sim_now(s) + SIM_STARTUP_US;
  s->last_activity = sim_now(s);
  s->stats.resets++;
}

void mw_trustm_sim_reset(mw_trustm_sim_t *s, bool cold) {
  (void)cold; /* the model keeps no state that only a cold reset clears */
  sim_warm_reset(s);
}

mw_status_t mw_trustm_sim_create(const mw_trustm_sim_config_t *cfg, mw_trustm_sim_t **out) {
  static const mw_trustm_sim_config_t defaults;
  if (!out) return MW_ERR_INVALID;
  *out = NULL;
  if (!cfg) cfg = &defaults;
  if (cfg->address > 0x7F) return MW_ERR_INVALID;
  mw_trustm_sim_t *s = calloc(1, sizeof *s);
  if (!s) return MW_ERR_NOMEM;
  s->cfg = *cfg;
  s->cfg.state_file = NULL;
  s->lock_fd = -1;
  if (!s->cfg.bus_khz) s->cfg.bus_khz = 400;
  s->mono_base = clock_us(CLOCK_MONOTONIC);
  s->wall_base = clock_us(CLOCK_REALTIME);
  s->addr_nv = s->addr = cfg->address ? cfg->address : 0x30;
  s->i2c_mode_nv = s->i2c_mode = 0x03;
  s->data_reg_len = SIM_FRAME_MAX;
  s->credit = 5;
  s->sec_stamp = sim_wall(s);
  mw_status_t st = sim_obj_init(s);
  if (st == MW_OK && cfg->state_file && *cfg->state_file) {
    s->state_path = strdup(cfg->state_file);
    st = s->state_path ? sim_store_open(s) : MW_ERR_NOMEM;
  } else if (st == MW_OK) {
    st = sim_factory(s);
  }
  if (st != MW_OK) {
    mw_trustm_sim_destroy(s);
    return st;
  }
  sim_warm_reset(s); /* power-on */
  s->stats.resets = 0;
  *out = s;
  return MW_OK;
}

void mw_trustm_sim_destroy(mw_trustm_sim_t *s) {
  if (!s) return;
  sim_store_close(s);
  sim_app_reset(s);
  sim_obj_free(s);
  free(s->state_path);
  free(s->lock_path);
  free(s);
}

void mw_trustm_sim_stats(mw_trustm_sim_t *s, mw_trustm_sim_stats_t *out) {
  sim_sec_update(s);
  s->stats.sec = s->sec;
  s->stats.sec_credit = s->credit;
  s->stats.last_error = s->lec;
  s->stats.app_open = s->app_open;
  *out = s->stats;
}

size_t mw_trustm_sim_apdu(mw_trustm_sim_t *s, const uint8_t *apdu, size_t len, uint8_t *resp, size_t cap) {
  uint64_t us;
  sim_store_begin(s);
  size_t n = sim_app_execute(s, apdu, len, resp, cap, &us);
  sim_store_end(s);
  return n;
}

/* ---- the bus ---- */

static void sleep_check(mw_trustm_sim_t *s) {
  if (s->cfg.no_sleep_mode || s->asleep || !sim_link_idle(s)) return;
  sim_obj_t *o = sim_obj_find(s, 0xE0C3);
  uint64_t delay_ms = o && o->used ? o->data[0] : 20;
  if (delay_ms < 20) delay_ms = 20;
  if (sim_now(s) - s->last_activity >= delay_ms * 1000u) s->asleep = true;
}

/*
** Start of a transaction: returns MW_OK if the chip ACKs its address. Every transaction,
** ACKed or not, ends at "now + bus time" on the virtual clock.
*/
static mw_status_t start(mw_trustm_sim_t *s, uint8_t addr, size_t len) {
  s->stats.transactions++;
  sim_link_update(s);
  sleep_check(s);
  uint64_t now = sim_now(s);
  mw_status_t st = MW_OK;
  if (addr != s->addr) {
    st = MW_ERR_NOT_FOUND;
  } else if (sim_fault(s, MW_TRUSTM_FAULT_NACK) || now < s->nack_until) {
    st = MW_ERR_BUSY;
  } else if (!s->cfg.lenient_guard && s->touched && now - s->last_stop < SIM_GUARD_US) {
    st = MW_ERR_BUSY;
  } else if (s->asleep) {
    s->asleep = false; /* seeing its address wakes it; this access is lost */
    s->last_activity = now;
    st = MW_ERR_BUSY;
  }
  if (st == MW_ERR_BUSY) s->stats.nacks++;
  if (!s->cfg.realtime) s->vclock += (((st == MW_OK ? len : 0) + 1) * 9u + 2u) * 1000u / s->cfg.bus_khz;
  s->last_stop = sim_now(s);
  s->touched = true;
  if (st == MW_OK) s->last_activity = s->last_stop;
  return st;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

mw_status_t mw_trustm_sim_i2c_write(mw_trustm_sim_t *s, uint8_t addr, const uint8_t *buf, size_t len) {
  mw_status_t st = start(s, addr, len);
  if (st != MW_OK || len == 0) return st;
  uint8_t reg = buf[0];
  const uint8_t *d = buf + 1;
  size_t n = len - 1;
  s->reg_ptr = reg;
  if (n == 0) return MW_OK; /* sets the register pointer for the next read */
  switch (reg) {
  case MW_TRUSTM_REG_DATA:
    if (sim_link_busy(s)) { /* cannot take a frame while executing */
      s->stats.nacks++;
      return MW_ERR_BUSY;
    }
    sim_link_rx(s, d, n);
    break;
  case MW_TRUSTM_REG_DATA_REG_LEN:
    if (n >= 2 && be16(d) >= MW_TRUSTM_FRAME_MIN)
      s->data_reg_len = be16(d) > SIM_FRAME_MAX ? SIM_FRAME_MAX : be16(d); /* shows its own maximum */
    break;
  case MW_TRUSTM_REG_BASE_ADDR:
    if (n >= 2 && (d[1] & 0x7F) >= 0x08 && (d[1] & 0x7F) <= 0x77) {
      s->addr = d[1] & 0x7F; /* effective from the next access */
      if (d[0] & 0x80) {
        sim_store_begin(s);
        s->addr_nv = s->addr;
        s->dirty = true;
        sim_store_end(s);
      }
    }
    break;
  case MW_TRUSTM_REG_SOFT_RESET:
    sim_warm_reset(s);
    break;
  case MW_TRUSTM_REG_I2C_MODE:
    if (n >= 2 && (d[1] & 7) >= 1 && (d[1] & 7) <= 4) {
      s->i2c_mode = d[1] & 7;
      if (d[0] & 0x80) {
        sim_store_begin(s);
        s->i2c_mode_nv = s->i2c_mode;
        s->dirty = true;
        sim_store_end(s);
      }
    }
    break;
  default: /* read-only or unknown: ignored */
    break;
  }
  return MW_OK;
}

mw_status_t mw_trustm_sim_i2c_read(mw_trustm_sim_t *s, uint8_t addr, uint8_t *buf, size_t len) {
  mw_status_t st = start(s, addr, len);
  if (st != MW_OK) return st;
  memset(buf, 0xFF, len); /* past the end of a register, or an unsupported one */
  uint8_t r[4];
  size_t rl = 0;
  switch (s->reg_ptr) {
  case MW_TRUSTM_REG_DATA:
    sim_link_read(s, buf, len);
    return MW_OK;
  case MW_TRUSTM_REG_DATA_REG_LEN:
    r[0] = (uint8_t)(s->data_reg_len >> 8), r[1] = (uint8_t)s->data_reg_len, rl = 2;
    break;
  case MW_TRUSTM_REG_I2C_STATE: {
    size_t avail = sim_link_available(s);
    r[0] = MW_TRUSTM_STATE_SOFT_RESET | (sim_link_busy(s) ? MW_TRUSTM_STATE_BUSY : 0) |
           (avail ? MW_TRUSTM_STATE_RESP_RDY : 0);
    r[1] = MW_TRUSTM_STATE_PRESENT_LAYER;
    r[2] = (uint8_t)(avail >> 8), r[3] = (uint8_t)avail, rl = 4;
    break;
  }
  case MW_TRUSTM_REG_MAX_SCL_FREQU: {
    unsigned khz = s->i2c_mode == 4 ? 1000 : s->i2c_mode == 1 ? 100 : 400;
    r[0] = 0, r[1] = 0, r[2] = (uint8_t)(khz >> 8), r[3] = (uint8_t)khz, rl = 4;
    break;
  }
  case MW_TRUSTM_REG_GUARD_TIME:
    r[0] = 0, r[1] = 0, r[2] = 0, r[3] = SIM_GUARD_US, rl = 4;
    break;
  case MW_TRUSTM_REG_TRANS_TIMEOUT:
    r[0] = 0, r[1] = 0, r[2] = 0, r[3] = SIM_TRANS_TIMEOUT_US / 1000, rl = 4;
    break;
  case MW_TRUSTM_REG_I2C_MODE:
    r[0] = 0, r[1] = s->i2c_mode, rl = 2; /* the persistent bit always reads 0 */
    break;
  default:
    break;
  }
  memcpy(buf, r, rl < len ? rl : len);
  return MW_OK;
}
