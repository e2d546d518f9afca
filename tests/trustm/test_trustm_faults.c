/*
** Fault injection: every fault the simulator can inject is either recovered by the
** stack (retransmission, NAK, resync, restart) or reported as a clear error, after
** which the next call works again. Never a hang (the virtual clock bounds every wait),
** never a crash.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "trustm_test_util.h"

static tu_pair_t p, pairs[3];
static mw_trustm_pubkey_t key, keys[3];

/* One chip per ACK mode, reused by the cases: faults are cleared between uses. */
static void setup(mw_trustm_sim_ack_mode_t mode) {
  if (!pairs[mode].dev) {
    mw_trustm_sim_config_t sc = {.ack_mode = mode};
    mw_trustm_config_t dc = {.response_timeout_ms = 2000};
    CHECK_INT(tu_open(&pairs[mode], &sc, &dc), 0);
    if (pairs[mode].dev)
      CHECK_INT(mw_trustm_gen_key(pairs[mode].dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, 0, &keys[mode]),
                MW_OK);
  }
  p = pairs[mode];
  key = keys[mode];
  if (p.sim) mw_trustm_sim_clear_faults(p.sim);
}

static void done(void) {
  if (p.sim) mw_trustm_sim_clear_faults(p.sim);
}

static void teardown(void) {
  for (int i = 0; i < 3; i++) tu_close(&pairs[i]);
}

/* A chained write and read-back, and a signature checked with OpenSSL. */
static mw_status_t op(bool sign) {
  static uint8_t buf[600], out[600];
  static unsigned round;
  size_t n;
  round++;
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i + round);
  mw_status_t st = mw_trustm_write(p.dev, 0xF1E0, 0, buf, sizeof buf, true);
  if (st != MW_OK) return st;
  st = mw_trustm_read(p.dev, 0xF1E0, 0, sizeof out, out, sizeof out, &n);
  if (st != MW_OK) return st;
  CHECK_INT(n, sizeof buf);
  CHECK_MEM(out, buf, sizeof buf);
  if (!sign) return MW_OK;
  uint8_t dg[32], sig[MW_TRUSTM_SIG_DER_MAX];
  memset(dg, (int)round, sizeof dg);
  size_t sl;
  st = mw_trustm_sign(p.dev, 0xE0F1, dg, 32, sig, sizeof sig, &sl);
  if (st != MW_OK) return st;
  const unsigned char *q = key.spki;
  EVP_PKEY *k = d2i_PUBKEY(NULL, &q, (long)key.spki_len);
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
  CHECK(c && EVP_PKEY_verify_init(c) > 0 && EVP_PKEY_verify(c, sig, sl, dg, 32) == 1);
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(k);
  return MW_OK;
}

static void recovered(mw_trustm_fault_t f, unsigned n, mw_trustm_sim_ack_mode_t mode) {
  setup(mode);
  if (!p.dev) return;
  mw_trustm_sim_inject(p.sim, f, n);
  mw_status_t st = op(true);
  if (st != MW_OK) fprintf(stderr, "fault %d x%u: %s\n", f, n, mw_trustm_last_error(p.dev));
  CHECK_INT(st, MW_OK);
  mw_trustm_sim_stats_t ss;
  mw_trustm_sim_stats(p.sim, &ss);
  CHECK(ss.faults_fired[f] > 0);
  CHECK_INT(op(true), MW_OK);
  done();
}

/* Too many faults in a row: a clear error (want MW_OK: timeout or protocol), then the next call works. */
static void reported(mw_trustm_fault_t f, unsigned n, mw_status_t want) {
  setup(MW_TRUSTM_SIM_ACK_AUTO);
  if (!p.dev) return;
  mw_trustm_sim_inject(p.sim, f, n);
  mw_status_t st = op(false);
  if (want == MW_OK) CHECK(st == MW_ERR_TIMEOUT || st == MW_ERR_PROTOCOL); /* either is a clear link error */
  else CHECK_INT(st, want);
  CHECK(mw_trustm_last_error(p.dev)[0] != '\0');
  mw_trustm_sim_clear_faults(p.sim);
  CHECK_INT(op(true), MW_OK);
  done();
}

static void nack_burst(void) {
  recovered(MW_TRUSTM_FAULT_NACK, 1, MW_TRUSTM_SIM_ACK_AUTO);
  recovered(MW_TRUSTM_FAULT_NACK, 50, MW_TRUSTM_SIM_ACK_AUTO);
  reported(MW_TRUSTM_FAULT_NACK, 100000, MW_ERR_TIMEOUT);
}

static void corrupt_crc_from_chip(void) {
  for (unsigned n = 1; n <= 3; n++) {
    recovered(MW_TRUSTM_FAULT_CORRUPT_TX, n, MW_TRUSTM_SIM_ACK_AUTO);
    recovered(MW_TRUSTM_FAULT_CORRUPT_TX, n, MW_TRUSTM_SIM_ACK_SEPARATE);
    recovered(MW_TRUSTM_FAULT_CORRUPT_TX, n, MW_TRUSTM_SIM_ACK_PIGGYBACK);
  }
  reported(MW_TRUSTM_FAULT_CORRUPT_TX, 1000, MW_OK);
}

static void corrupt_crc_to_chip(void) {
  for (unsigned n = 1; n <= 3; n++) {
    recovered(MW_TRUSTM_FAULT_CORRUPT_RX, n, MW_TRUSTM_SIM_ACK_AUTO);
    recovered(MW_TRUSTM_FAULT_CORRUPT_RX, n, MW_TRUSTM_SIM_ACK_PIGGYBACK);
  }
  reported(MW_TRUSTM_FAULT_CORRUPT_RX, 1000, MW_ERR_TIMEOUT);
}

static void dropped_ack(void) {
  for (unsigned n = 1; n <= 3; n++) {
    recovered(MW_TRUSTM_FAULT_DROP_ACK, n, MW_TRUSTM_SIM_ACK_AUTO);
    recovered(MW_TRUSTM_FAULT_DROP_ACK, n, MW_TRUSTM_SIM_ACK_SEPARATE);
  }
  /* every ACK lost: the retransmitted duplicate is re-ACKed, which is never dropped */
  recovered(MW_TRUSTM_FAULT_DROP_ACK, 1000, MW_TRUSTM_SIM_ACK_SEPARATE);
}

static void lost_host_ack(void) {
  for (unsigned n = 1; n <= 3; n++) {
    recovered(MW_TRUSTM_FAULT_LOSE_HOST_ACK, n, MW_TRUSTM_SIM_ACK_AUTO);
    recovered(MW_TRUSTM_FAULT_LOSE_HOST_ACK, n, MW_TRUSTM_SIM_ACK_PIGGYBACK);
  }
}

static void slow_response(void) {
  recovered(MW_TRUSTM_FAULT_SLOW, 1500, MW_TRUSTM_SIM_ACK_AUTO); /* under the 2 s response timeout */
  recovered(MW_TRUSTM_FAULT_SLOW, 1500, MW_TRUSTM_SIM_ACK_PIGGYBACK);
  reported(MW_TRUSTM_FAULT_SLOW, 5000, MW_ERR_TIMEOUT);
}

static void reset_mid_command(void) {
  setup(MW_TRUSTM_SIM_ACK_AUTO);
  if (!p.dev) return;
  mw_trustm_sim_inject(p.sim, MW_TRUSTM_FAULT_RESET, 1);
  uint8_t r[16];
  mw_status_t st = mw_trustm_random(p.dev, r, sizeof r);
  CHECK(st == MW_ERR_TIMEOUT || st == MW_ERR_PROTOCOL);
  CHECK(strstr(mw_trustm_last_error(p.dev), "GetRandom") != NULL);
  mw_trustm_stats_t ds;
  CHECK_INT(op(true), MW_OK); /* restarts: soft reset, negotiation, OpenApplication */
  mw_trustm_stats(p.dev, &ds);
  CHECK(ds.reopens >= 1);
  /* a reset between commands the driver did not notice: the chip says "not available" */
  mw_trustm_sim_reset(p.sim, false);
  mw_trustm_sim_advance_us(p.sim, 20000);
  st = op(true);
  if (st != MW_OK) CHECK_INT(op(true), MW_OK);
  done();
}

static void sleep_wakeup(void) {
  setup(MW_TRUSTM_SIM_ACK_AUTO);
  if (!p.dev) return;
  mw_trustm_stats_t a, b;
  mw_trustm_stats(p.dev, &a);
  mw_trustm_sim_advance_us(p.sim, 500000); /* well past the 20 ms sleep delay */
  CHECK_INT(op(false), MW_OK);
  mw_trustm_stats(p.dev, &b);
  CHECK(b.nacks > a.nacks); /* the first access only woke it */
  done();
}

/* Random faults between operations: every call returns, the stack stays usable. */
static void fault_soup(void) {
  setup(MW_TRUSTM_SIM_ACK_AUTO);
  if (!p.dev) return;
  srand(5);
  int ok = 0, failed = 0;
  for (int i = 0; i < 120; i++) {
    mw_trustm_fault_t f = (mw_trustm_fault_t)(rand() % MW_TRUSTM_FAULT_COUNT);
    unsigned n = f == MW_TRUSTM_FAULT_SLOW ? (unsigned)(rand() % 3000) : (unsigned)(rand() % 4);
    if (f == MW_TRUSTM_FAULT_NACK) n *= 40;
    mw_trustm_sim_inject(p.sim, f, n);
    mw_status_t st = op(i % 8 == 0);
    if (st == MW_OK) {
      ok++;
    } else {
      failed++;
      CHECK(st == MW_ERR_TIMEOUT || st == MW_ERR_PROTOCOL || st == MW_ERR_DEVICE);
      CHECK(mw_trustm_last_error(p.dev)[0] != '\0');
    }
  }
  mw_trustm_sim_clear_faults(p.sim);
  CHECK_INT(op(true), MW_OK);
  CHECK(ok > failed);
  done();
}

static const mw_test_case_t cases[] = {
    MW_TEST(nack_burst),    MW_TEST(corrupt_crc_from_chip), MW_TEST(corrupt_crc_to_chip),
    MW_TEST(dropped_ack),   MW_TEST(lost_host_ack),         MW_TEST(slow_response),
    MW_TEST(reset_mid_command), MW_TEST(sleep_wakeup),      MW_TEST(fault_soup),
    MW_TEST(teardown),
};

int main(int argc, char **argv) {
  mw_log_set_level(getenv("TRUSTM_DEBUG") ? MW_LOG_DEBUG : MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
