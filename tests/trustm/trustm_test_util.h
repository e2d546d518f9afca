/*
** Helpers shared by the Trust M tests: hex parsing, a simulator + driver pair on the
** virtual clock, and a scripted transport that checks every host write byte for byte.
*/
#ifndef TRUSTM_TEST_UTIL_H
#define TRUSTM_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "mw_trustm.h"
#include "mw_trustm_int.h"
#include "mw_trustm_sim.h"

/* "80 00 00 0C EC" -> bytes; returns the count (spaces optional). */
size_t tu_hex(const char *hex, uint8_t *out, size_t cap);

typedef struct {
  mw_trustm_sim_t *sim;
  mw_trustm_t *dev;
} tu_pair_t;

/* A fresh volatile simulator (cfg may be NULL) and a driver opened on it. */
int tu_open(tu_pair_t *p, const mw_trustm_sim_config_t *cfg, const mw_trustm_config_t *dcfg);
void tu_close(tu_pair_t *p);

/*
** Scripted chip: each step names the exact frame the host must write to DATA next and
** the frames the chip then offers (with the I2C_STATE bytes to show before each one).
*/
typedef struct {
  const char *expect;          /* hex of the whole write transaction incl. register 80 */
  const char *offer[3];        /* hex frames offered after it, in order */
  const char *state[3];        /* hex I2C_STATE shown while each offer is pending */
} tu_step_t;

typedef struct {
  const tu_step_t *steps;
  size_t nsteps, step, offer;
  uint8_t reg;
  uint64_t clock;
  int mismatches;
  char last_error[256];
} tu_script_t;

void tu_script_transport(tu_script_t *s, mw_trustm_transport_t *out);

#endif
