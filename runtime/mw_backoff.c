#include "mw_backoff.h"

#include <sys/random.h>
#include <time.h>

void mw_backoff_init(mw_backoff_t *b, uint32_t base_ms, uint32_t cap_ms, uint32_t floor_ms) {
  b->base_ms = base_ms ? base_ms : 1000;
  b->cap_ms = cap_ms ? cap_ms : 60000;
  if (b->cap_ms < b->base_ms) b->cap_ms = b->base_ms;
  b->floor_ms = floor_ms;
  b->attempt = 0;
  if (getrandom(&b->rng, sizeof b->rng, 0) != (ssize_t)sizeof b->rng || b->rng == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b->rng = (uint64_t)ts.tv_nsec * 6364136223846793005ULL + 1442695040888963407ULL;
  }
}

/* xorshift64*: good enough for jitter, and needs no global state. */
static uint64_t next_rand(mw_backoff_t *b) {
  uint64_t x = b->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  b->rng = x;
  return x * 2685821657736338717ULL;
}

uint32_t mw_backoff_next(mw_backoff_t *b) {
  uint64_t ceiling = b->base_ms;
  for (uint32_t i = 0; i < b->attempt && ceiling < b->cap_ms; i++) ceiling *= 2;
  if (ceiling > b->cap_ms) ceiling = b->cap_ms;
  if (b->attempt < 64) b->attempt++;
  uint64_t d = next_rand(b) % (ceiling + 1);
  if (d < b->floor_ms) d = b->floor_ms;
  return (uint32_t)d;
}

void mw_backoff_reset(mw_backoff_t *b) { b->attempt = 0; }
