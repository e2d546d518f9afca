/*
** Reconnect delays: exponential backoff with full jitter (delay uniform in
** [0, min(cap, base * 2^attempt)]), so a fleet that lost its broker at the same moment
** does not come back in lock-step. A floor keeps chip-backed keys from being throttled.
*/
#ifndef MW_BACKOFF_H
#define MW_BACKOFF_H

#include <stdint.h>

typedef struct {
  uint32_t base_ms;  /* ceiling of the first delay; default 1000 */
  uint32_t cap_ms;   /* largest delay; default 60000 */
  uint32_t floor_ms; /* smallest delay; 0 normally, >= 5000 when the TLS key is in a secure element */
  uint32_t attempt;
  uint64_t rng;
} mw_backoff_t;

void mw_backoff_init(mw_backoff_t *b, uint32_t base_ms, uint32_t cap_ms, uint32_t floor_ms);
/* Delay before the next attempt; advances the attempt counter. */
uint32_t mw_backoff_next(mw_backoff_t *b);
/* After a successful session (CONNACK accepted). */
void mw_backoff_reset(mw_backoff_t *b);

#endif
