/*
** OPTIGA Trust M benchmark: one CalcSign (P-256) through our driver and the chip
** simulator. Reports, per ACK style of the chip, the I2C transactions, bytes and
** I2C_STATE polls of one signature and its modelled time (the simulator's virtual clock:
** the chip's computation plus the bus time of every transaction at 400 kHz), next to the
** minimum the protocol allows for the same frames; then 256-byte data-object writes and
** reads (the time those take depends on the length); then the host CPU cost of a signature
** (driver + simulator, commands taking no time) and the wall time of signatures with the
** simulator on the real clock (the driver really sleeps).
**
** Usage: bench_trustm [N]   (N steady-state signatures per case, default 20)
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "mw_log.h"
#include "mw_trustm.h"
#include "mw_trustm_sim.h"

static double now_s(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
  mw_trustm_sim_t *sim;
  mw_trustm_t *dev;
} pair_t;

static int open_pair(pair_t *p, const mw_trustm_sim_config_t *sc) {
  memset(p, 0, sizeof *p);
  if (mw_trustm_sim_create(sc, &p->sim) != MW_OK) return -1;
  mw_trustm_config_t dc = {.sim_handle = p->sim};
  if (mw_trustm_open(&dc, &p->dev) != MW_OK) return -1;
  mw_trustm_pubkey_t pk;
  return mw_trustm_gen_key(p->dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, 0, &pk) == MW_OK ? 0 : -1;
}

static void close_pair(pair_t *p) {
  mw_trustm_close(p->dev);
  mw_trustm_sim_destroy(p->sim);
}

typedef struct {
  double transactions, written, read, polls, ms;
} cost_t;

static int sign_once(pair_t *p, cost_t *c) {
  uint8_t dg[32], sig[MW_TRUSTM_SIG_DER_MAX];
  size_t sl;
  memset(dg, 0xA5, sizeof dg);
  mw_trustm_stats_reset(p->dev);
  uint64_t t0 = mw_trustm_sim_now_us(p->sim);
  if (mw_trustm_sign(p->dev, 0xE0F1, dg, sizeof dg, sig, sizeof sig, &sl) != MW_OK) {
    fprintf(stderr, "bench_trustm: sign failed: %s\n", mw_trustm_last_error(p->dev));
    return -1;
  }
  uint64_t t1 = mw_trustm_sim_now_us(p->sim);
  mw_trustm_stats_t st;
  mw_trustm_stats(p->dev, &st);
  c->transactions += (double)st.transactions;
  c->written += (double)st.bytes_written;
  c->read += (double)st.bytes_read;
  c->polls += (double)st.polls;
  c->ms += (double)(t1 - t0) / 1000.0;
  return 0;
}

static void row(const char *label, const cost_t *c, double n) {
  printf("%-34s %6.1f %7.1f / %-6.1f %6.1f %9.2f\n", label, c->transactions / n, c->written / n, c->read / n,
         c->polls / n, c->ms / n);
}

/* Bus time of n bytes in t transactions at khz: 9 clocks per byte, plus the address byte. */
static double bus_ms(double bytes, double transactions, unsigned khz) {
  return (bytes + transactions) * 9.0 / (double)khz;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20;
  if (n < 1) n = 20;
  mw_log_set_level(MW_LOG_ERROR);
  printf("OPTIGA Trust M: CalcSign P-256 (32-byte digest) through the driver and the simulator, 400 kHz\n\n");
  printf("%-34s %6s %16s %6s %9s\n", "case", "trans", "bytes W / R", "polls", "ms (model)");
  const struct {
    mw_trustm_sim_ack_mode_t mode;
    const char *name;
  } modes[] = {{MW_TRUSTM_SIM_ACK_AUTO, "separate ACK"}, {MW_TRUSTM_SIM_ACK_PIGGYBACK, "piggy-backed ACK"}};
  double chip_ms = 0, cmd_frame = 0, resp_frame = 0;
  for (int m = 0; m < 2; m++) {
    mw_trustm_sim_config_t sc = {.ack_mode = modes[m].mode, .sec_throttle_from = 255};
    pair_t p;
    if (open_pair(&p, &sc) != 0) {
      fprintf(stderr, "bench_trustm: cannot open the simulator\n");
      return 1;
    }
    cost_t first = {0}, steady = {0};
    char label[64];
    if (sign_once(&p, &first) != 0) return 1;
    snprintf(label, sizeof label, "%s, first signature", modes[m].name);
    row(label, &first, 1);
    for (int i = 0; i < n; i++)
      if (sign_once(&p, &steady) != 0) return 1;
    snprintf(label, sizeof label, "%s, next %d (mean)", modes[m].name, n);
    row(label, &steady, n);
    mw_trustm_sim_stats_t ss;
    mw_trustm_sim_stats(p.sim, &ss);
    chip_ms = (double)ss.last_exec_us / 1000.0;
    close_pair(&p);
  }
  /*
  ** The protocol minimum for the same exchange: W command frame; W 82 + R 4 (state);
  ** W 80 + R response frame; W ACK. CalcSign's APDU is 4 + (3+32) digest TLV + (3+2) OID
  ** TLV = 44 bytes, one PCTR byte, 5 bytes of frame: 50; the response carries 4 + a
  ** 70-byte signature (typical), + PCTR + 5 = 80.
  */
  cmd_frame = 50, resp_frame = 80;
  double min_bytes_w = (1 + cmd_frame) + 1 + 1 + (1 + 5), min_bytes_r = 4 + resp_frame;
  cost_t min = {6, min_bytes_w, min_bytes_r, 1, chip_ms + bus_ms(min_bytes_w + min_bytes_r, 6, 400)};
  row("protocol minimum (1 poll, exact)", &min, 1);
  printf("  (chip computation in the model: %.1f ms; bus time of the minimum exchange: %.2f ms)\n\n", chip_ms,
         bus_ms(min_bytes_w + min_bytes_r, 6, 400));

  /*
  ** Data objects, 256 bytes (the datasheet: written in ~55 ms, read in ~30 ms, bus time
  ** included): a write, the same again (with the learned time), a read whose length the
  ** driver knows from the write, and one by a fresh handle, which does not know it yet.
  */
  {
    mw_trustm_sim_config_t sc = {.sec_throttle_from = 255};
    pair_t p;
    if (open_pair(&p, &sc) != 0) return 1;
    uint8_t buf[256];
    size_t got;
    memset(buf, 0x5A, sizeof buf);
    static const char *const labels[] = {"SetDataObject 256 B (erase)", "  again", "GetDataObject 256 B, length known",
                                         "  fresh handle, length unknown"};
    double obj_ms[4];
    for (int i = 0; i < 4; i++) {
      if (i == 3) {
        mw_trustm_close(p.dev);
        mw_trustm_config_t dc = {.sim_handle = p.sim};
        if (mw_trustm_open(&dc, &p.dev) != MW_OK) return 1;
      }
      mw_trustm_stats_reset(p.dev);
      uint64_t t0 = mw_trustm_sim_now_us(p.sim);
      mw_status_t st = i < 2 ? mw_trustm_write(p.dev, 0xF1E0, 0, buf, sizeof buf, true)
                             : mw_trustm_read(p.dev, 0xF1E0, 0, sizeof buf, buf, sizeof buf, &got);
      uint64_t t1 = mw_trustm_sim_now_us(p.sim);
      if (st != MW_OK) {
        fprintf(stderr, "bench_trustm: %s failed: %s\n", i < 2 ? "write" : "read", mw_trustm_last_error(p.dev));
        return 1;
      }
      mw_trustm_stats_t ds;
      mw_trustm_stats(p.dev, &ds);
      mw_trustm_sim_stats_t ss;
      mw_trustm_sim_stats(p.sim, &ss);
      obj_ms[i] = (double)ss.last_exec_us / 1000.0;
      printf("%-34s %6lu %7lu / %-6lu %6lu %9.2f\n", labels[i], ds.transactions, ds.bytes_written, ds.bytes_read,
             ds.polls, (double)(t1 - t0) / 1000.0);
    }
    printf("  (chip computation in the model: write %.2f ms, read %.2f ms)\n\n", obj_ms[0], obj_ms[2]);
    close_pair(&p);
  }

  /* Host CPU per signature: driver + simulator (incl. the simulator's own ECDSA), no chip time. */
  {
    mw_trustm_sim_config_t sc = {.instant = true, .sec_throttle_from = 255, .ack_mode = MW_TRUSTM_SIM_ACK_PIGGYBACK};
    pair_t p;
    if (open_pair(&p, &sc) != 0) return 1;
    cost_t c = {0};
    int k = 20 * n;
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < k; i++)
      if (sign_once(&p, &c) != 0) return 1;
    double t1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    close_pair(&p);
    /* The same ECDSA in software, to separate the simulator's crypto from the driver. */
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    uint8_t dg[32] = {1}, sig[80];
    double s0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < k; i++) {
      size_t sl = sizeof sig;
      EVP_PKEY_sign_init(ctx);
      EVP_PKEY_sign(ctx, sig, &sl, dg, sizeof dg);
    }
    double s1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    printf("host CPU per signature, driver + simulator (%d signatures): %.1f us, of which ECDSA in OpenSSL ~%.1f us\n",
           k, (t1 - t0) / k * 1e6, (s1 - s0) / k * 1e6);
  }
  /* Wall time with the simulator on the real clock: the driver's sleeps are real. */
  {
    mw_trustm_sim_config_t sc = {.realtime = true, .sec_throttle_from = 255, .ack_mode = MW_TRUSTM_SIM_ACK_AUTO};
    pair_t p;
    if (open_pair(&p, &sc) != 0) return 1;
    cost_t c = {0};
    if (sign_once(&p, &c) != 0) return 1; /* learn the command time */
    int k = 5;
    memset(&c, 0, sizeof c);
    double t0 = now_s(CLOCK_MONOTONIC);
    for (int i = 0; i < k; i++)
      if (sign_once(&p, &c) != 0) return 1;
    double t1 = now_s(CLOCK_MONOTONIC);
    close_pair(&p);
    printf("wall time per signature, simulator on the real clock (%d signatures, separate ACK): %.1f ms, "
           "%.1f transactions\n",
           k, (t1 - t0) / k * 1e3, c.transactions / k);
  }
  return 0;
}
