/*
** The simulator behind the transport vtable, so the driver stack runs unchanged against
** it. Sleeping advances the simulator's virtual clock instead of the process's.
*/
#include <errno.h>
#include <time.h>

#include "mw_trustm_sim_int.h"

static mw_status_t st_write(void *ctx, const uint8_t *buf, size_t len) {
  mw_trustm_sim_t *s = ctx;
  return mw_trustm_sim_i2c_write(s, s->addr, buf, len);
}

static mw_status_t st_read(void *ctx, uint8_t *buf, size_t len) {
  mw_trustm_sim_t *s = ctx;
  return mw_trustm_sim_i2c_read(s, s->addr, buf, len);
}

static void st_sleep(void *ctx, uint32_t us) {
  mw_trustm_sim_t *s = ctx;
  if (!s->cfg.realtime) {
    s->vclock += us;
    return;
  }
  struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static uint64_t st_now(void *ctx) { return sim_now(ctx); }

static const mw_trustm_transport_ops_t sim_ops = {st_write, st_read, st_sleep, st_now, NULL};

void mw_trustm_sim_transport(mw_trustm_sim_t *sim, mw_trustm_transport_t *out) {
  out->ops = &sim_ops;
  out->ctx = sim;
}
