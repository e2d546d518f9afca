/*
** The I2C transport under the OPTIGA Trust M driver: one vtable, two implementations
** (Linux i2c-dev and the in-process simulator) that the protocol layers cannot tell
** apart. The chip has no repeated start, so a register read is always two separate
** transactions (write the register address, then read); the vtable only knows single
** transactions and leaves guard time, NACK retry and polling to the physical layer
** above it (mw_trustm_phys.c), which is therefore the same for the real bus and the
** simulator.
*/
#ifndef MW_TRUSTM_TRANSPORT_H
#define MW_TRUSTM_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"

typedef struct {
  /*
  ** One write transaction: START, address+W, len bytes, STOP.
  ** Returns MW_OK, MW_ERR_BUSY when the address was NACKed (the chip is busy, asleep or
  ** resetting: retry later), MW_ERR_IO for anything else.
  */
  mw_status_t (*write)(void *ctx, const uint8_t *buf, size_t len);
  /* One read transaction: START, address+R, len bytes, STOP. Same codes as write. */
  mw_status_t (*read)(void *ctx, uint8_t *buf, size_t len);
  /* Waits at least us microseconds (the simulator's virtual clock just advances). */
  void (*sleep_us)(void *ctx, uint32_t us);
  /* Monotonic time in microseconds, on the same clock sleep_us advances. */
  uint64_t (*now_us)(void *ctx);
  /* Releases ctx; may be NULL. */
  void (*destroy)(void *ctx);
} mw_trustm_transport_ops_t;

typedef struct {
  const mw_trustm_transport_ops_t *ops;
  void *ctx;
} mw_trustm_transport_t;

/*
** Opens /dev/i2c-N and binds it to a 7-bit address (0 means the Trust M default 0x30).
** Returns MW_ERR_INVALID for a bad address, MW_ERR_IO when the device node cannot be
** opened or the address cannot be set (errno text is logged). out is filled on MW_OK.
*/
mw_status_t mw_trustm_transport_open_linux(const char *device, uint8_t address, mw_trustm_transport_t *out);

/* Destroys the transport (idempotent; the struct is zeroed). */
void mw_trustm_transport_close(mw_trustm_transport_t *t);

#endif
