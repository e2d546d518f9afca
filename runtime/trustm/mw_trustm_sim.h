/*
** A model of the OPTIGA Trust M, seen from the I2C bus. It is written from the protocol
** reference (docs/trustm.md, ../shared/reference/trustm-protocol.md), not from our
** driver: its own register file, data-link state machine, chaining, application state,
** object map with metadata and access conditions, real ECC keys (OpenSSL) and the
** security event counter. Non-volatile state lives in a state file shared between
** processes (flock on "STATE.lock"), so the CLI and the runtime see the same "chip".
**
** Time: by default the simulator runs on a virtual clock that only moves when the host
** sleeps (through the simulator transport) and by the bus time of each transaction, so
** a 65 ms signature costs no wall time and tests are deterministic. realtime = true
** uses the monotonic clock instead.
*/
#ifndef MW_TRUSTM_SIM_H
#define MW_TRUSTM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"
#include "mw_trustm_transport.h"

typedef struct mw_trustm_sim mw_trustm_sim_t;

typedef enum {
  MW_TRUSTM_SIM_ACK_AUTO = 0,   /* separate ACK before slow commands, piggy-backed otherwise */
  MW_TRUSTM_SIM_ACK_SEPARATE,   /* always an ACK control frame first */
  MW_TRUSTM_SIM_ACK_PIGGYBACK,  /* the response carries the ACK whenever possible */
} mw_trustm_sim_ack_mode_t;

typedef struct {
  const char *state_file;      /* NULL or "": volatile chip, nothing persisted */
  uint8_t address;             /* 0 means 0x30 (a persisted BASE_ADDR wins) */
  bool realtime;               /* use the monotonic clock instead of the virtual one */
  bool instant;                /* commands take no execution time */
  bool no_sleep_mode;          /* never fall asleep (no wake-up NACKs) */
  bool lenient_guard;          /* do not NACK transactions that violate the 50 us guard time */
  mw_trustm_sim_ack_mode_t ack_mode;
  unsigned bus_khz;            /* bus speed for the virtual clock; 0 means 400 */
  unsigned sec_tmax_ms;        /* security monitor period; 0 means E0C9 (5000 ms) */
  unsigned sec_throttle_from;  /* SEC value from which private-key use is delayed; 0 means 128 */
} mw_trustm_sim_config_t;

/*
** Creates a chip. With a state file that does not exist yet, a fresh chip is made (UID,
** Infineon-style key in E0F0 and identity-chain certificate in E0E0) and saved. Volatile
** chips (no state file) of one process share one such identity, made once, because they
** are test fixtures and making it dominates their start-up.
** Returns MW_ERR_IO when the file cannot be read or written, MW_ERR_PROTOCOL when it is
** not a valid state file.
*/
mw_status_t mw_trustm_sim_create(const mw_trustm_sim_config_t *cfg, mw_trustm_sim_t **out);
void mw_trustm_sim_destroy(mw_trustm_sim_t *sim);

/*
** Bus side: one I2C transaction addressed to addr. MW_ERR_BUSY means the chip NACKed its
** address (busy writing, asleep, just reset, guard time violated, or injected),
** MW_ERR_NOT_FOUND that nothing answers at that address.
*/
mw_status_t mw_trustm_sim_i2c_write(mw_trustm_sim_t *sim, uint8_t addr, const uint8_t *buf, size_t len);
mw_status_t mw_trustm_sim_i2c_read(mw_trustm_sim_t *sim, uint8_t addr, uint8_t *buf, size_t len);

/* The simulator as a transport (for mw_trustm_config_t.sim_handle or direct use). Borrowed. */
void mw_trustm_sim_transport(mw_trustm_sim_t *sim, mw_trustm_transport_t *out);

/* Clock. advance moves the virtual clock (no effect in realtime mode). */
uint64_t mw_trustm_sim_now_us(mw_trustm_sim_t *sim);
void mw_trustm_sim_advance_us(mw_trustm_sim_t *sim, uint64_t us);

/* Cold reset (power cycle) and warm reset (RST pin): volatile state is lost. */
void mw_trustm_sim_reset(mw_trustm_sim_t *sim, bool cold);

/* ---- fault injection: each arms a counter that the next events consume ---- */
typedef enum {
  MW_TRUSTM_FAULT_NACK,          /* NACK the next n transactions */
  MW_TRUSTM_FAULT_CORRUPT_TX,    /* flip a CRC bit in the next n frames the chip hands out */
  MW_TRUSTM_FAULT_CORRUPT_RX,    /* treat the next n frames from the host as received with a bad CRC */
  MW_TRUSTM_FAULT_DROP_ACK,      /* post no ACK control frame for the next n host data frames */
  MW_TRUSTM_FAULT_LOSE_HOST_ACK, /* ignore the next n ACKs from the host (control or piggy-backed) */
  MW_TRUSTM_FAULT_SLOW,          /* the next command takes n extra milliseconds */
  MW_TRUSTM_FAULT_RESET,         /* warm reset right after the next n-th complete APDU arrives */
  MW_TRUSTM_FAULT_COUNT
} mw_trustm_fault_t;

void mw_trustm_sim_inject(mw_trustm_sim_t *sim, mw_trustm_fault_t fault, unsigned n);
void mw_trustm_sim_clear_faults(mw_trustm_sim_t *sim);

/* What the chip saw; for tests and benchmarks. */
typedef struct {
  unsigned long transactions, nacks, frames_in, frames_out, naks_sent, reacks, retransmits, resyncs;
  unsigned long chain_errors, apdus, resets;
  unsigned long faults_fired[MW_TRUSTM_FAULT_COUNT];
  uint8_t sec, sec_credit;       /* security monitor */
  uint64_t last_exec_us;         /* execution time of the last APDU incl. throttle delay */
  uint8_t last_error;            /* Last Error Code as it stands (not cleared by this call) */
  bool app_open;
} mw_trustm_sim_stats_t;

void mw_trustm_sim_stats(mw_trustm_sim_t *sim, mw_trustm_sim_stats_t *out);

/*
** Runs one APDU against the application layer directly, bypassing the I2C stack (fuzzing,
** unit tests). resp receives the response APDU; returns its length (0 if cap < 4).
*/
size_t mw_trustm_sim_apdu(mw_trustm_sim_t *sim, const uint8_t *apdu, size_t len, uint8_t *resp, size_t cap);

#endif
