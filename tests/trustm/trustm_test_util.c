#include "trustm_test_util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

size_t tu_hex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  int hi = -1;
  for (const char *p = hex; *p; p++) {
    if (isspace((unsigned char)*p)) continue;
    int v = isdigit((unsigned char)*p) ? *p - '0' : (toupper((unsigned char)*p) - 'A' + 10);
    if (hi < 0) {
      hi = v;
    } else {
      if (n < cap) out[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  return n;
}

int tu_open(tu_pair_t *p, const mw_trustm_sim_config_t *cfg, const mw_trustm_config_t *dcfg) {
  mw_trustm_sim_config_t sc = {0};
  mw_trustm_config_t dc = {0};
  if (cfg) sc = *cfg;
  if (dcfg) dc = *dcfg;
  p->dev = NULL;
  if (mw_trustm_sim_create(&sc, &p->sim) != MW_OK) return -1;
  dc.sim_handle = p->sim;
  if (mw_trustm_open(&dc, &p->dev) != MW_OK) {
    mw_trustm_sim_destroy(p->sim);
    p->sim = NULL;
    return -1;
  }
  return 0;
}

void tu_close(tu_pair_t *p) {
  mw_trustm_close(p->dev);
  mw_trustm_sim_destroy(p->sim);
  p->dev = NULL;
  p->sim = NULL;
}

static mw_status_t sc_write(void *ctx, const uint8_t *buf, size_t len) {
  tu_script_t *s = ctx;
  s->clock += 100;
  s->reg = buf[0];
  if (len == 1) return MW_OK;
  uint8_t want[300];
  size_t wl = s->step < s->nsteps ? tu_hex(s->steps[s->step].expect, want, sizeof want) : 0;
  if (s->step >= s->nsteps || wl != len || memcmp(want, buf, len) != 0) {
    int o = snprintf(s->last_error, sizeof s->last_error, "step %zu: unexpected write", s->step);
    for (size_t i = 0; i < len && o < (int)sizeof s->last_error - 4; i++)
      o += snprintf(s->last_error + o, sizeof s->last_error - (size_t)o, " %02X", buf[i]);
    s->mismatches++;
    return MW_OK;
  }
  s->step++;
  s->offer = 0;
  return MW_OK;
}

static const char *current_offer(tu_script_t *s, const char **state) {
  if (s->step == 0) return NULL;
  const tu_step_t *st = &s->steps[s->step - 1];
  if (s->offer >= 3 || !st->offer[s->offer]) return NULL;
  *state = st->state[s->offer];
  return st->offer[s->offer];
}

static mw_status_t sc_read(void *ctx, uint8_t *buf, size_t len) {
  tu_script_t *s = ctx;
  s->clock += 100;
  memset(buf, 0xFF, len);
  const char *state = NULL, *offer = current_offer(s, &state);
  uint8_t tmp[300];
  if (s->reg == 0x82) {
    size_t n = tu_hex(offer ? state : "08 80 00 00", tmp, sizeof tmp);
    memcpy(buf, tmp, n < len ? n : len);
  } else if (s->reg == 0x80 && offer) {
    size_t n = tu_hex(offer, tmp, sizeof tmp);
    memcpy(buf, tmp, n < len ? n : len);
    s->offer++;
  }
  return MW_OK;
}

static void sc_sleep(void *ctx, uint32_t us) { ((tu_script_t *)ctx)->clock += us; }
static uint64_t sc_now(void *ctx) { return ((tu_script_t *)ctx)->clock; }

static const mw_trustm_transport_ops_t script_ops = {sc_write, sc_read, sc_sleep, sc_now, NULL};

void tu_script_transport(tu_script_t *s, mw_trustm_transport_t *out) {
  out->ops = &script_ops;
  out->ctx = s;
}
