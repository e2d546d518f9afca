/*
** Byte-exact fixtures from the reference (§2.2, §2.3): the CRC check value, the control
** frames, the datasheet's Annex B exchange driven through the host stack against a
** scripted chip, and the same host frames answered by the simulator.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include "mw_trustm_sim_int.h"
#include "trustm_test_util.h"

#define AID_HEX "D2 76 00 00 04 47 65 6E 41 75 74 68 41 70 70 6C"

static void check_frame(uint8_t fctr, const char *packet_hex, const char *want_hex) {
  uint8_t pkt[300], want[300], got[300];
  size_t pl = tu_hex(packet_hex, pkt, sizeof pkt), wl = tu_hex(want_hex, want, sizeof want);
  size_t n = mw__trustm_frame_build(fctr, pkt, pl, got, sizeof got);
  CHECK_INT(n, wl);
  CHECK_MEM(got, want, wl);
  mw_trustm_frame_t f;
  CHECK_INT(mw__trustm_frame_parse(want, wl, &f), MW_TRUSTM_FRAME_OK);
  CHECK_INT(f.packet_len, pl);
}

static void crc_check_value(void) {
  CHECK_INT(mw__trustm_crc((const uint8_t *)"123456789", 9), 0x2189);
  uint8_t f[5];
  mw__trustm_frame_build(0x80, NULL, 0, f, sizeof f);
  CHECK_INT(f[3], 0x0C); /* high byte first on the wire */
  CHECK_INT(f[4], 0xEC);
}

static void control_frames(void) {
  check_frame(0x80, "", "80 00 00 0C EC");
  check_frame(0x81, "", "81 00 00 56 30");
  check_frame(0x82, "", "82 00 00 B9 54");
  check_frame(0x83, "", "83 00 00 E3 88");
  check_frame(0xA0, "", "A0 00 00 0F D7");
  check_frame(0xA1, "", "A1 00 00 55 0B");
  check_frame(0xC0, "", "C0 00 00 0A 9A");
}

static void data_frames(void) {
  check_frame(0x03, "00 70 00 00 10 " AID_HEX, "03 00 15 00 70 00 00 10 " AID_HEX " 04 1A");
  check_frame(0x03, "08 20 F0 00 00 10 " AID_HEX, "03 00 16 08 20 F0 00 00 10 " AID_HEX " BE 40");
  check_frame(0x00, "00 00 00 00 00", "00 00 05 00 00 00 00 00 14 87");
  check_frame(0x00, "08 20 00 00 00 00", "00 00 06 08 20 00 00 00 00 19 04");
  check_frame(0x04, "00 01 00 00 06 E0 C2 00 00 00 64", "04 00 0B 00 01 00 00 06 E0 C2 00 00 00 64 F0 9F");
  check_frame(0x05, "00 FF 00 00 00", "05 00 05 00 FF 00 00 00 46 34");
  check_frame(0x04, "07", "04 00 01 07 1F 8B");
}

static void frame_parse_errors(void) {
  uint8_t f[32];
  mw_trustm_frame_t fr;
  size_t n = tu_hex("04 00 0B 00 01 00 00 06 E0 C2 00 00 00 64 F0 9F", f, sizeof f);
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_OK);
  CHECK_INT(fr.frnr, 1);
  CHECK_INT(fr.acknr, 0);
  CHECK(!fr.control);
  f[7] ^= 0x10;
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_CRC);
  CHECK_INT(mw__trustm_frame_parse(f, n - 1, &fr), MW_TRUSTM_FRAME_LENGTH);
  CHECK_INT(mw__trustm_frame_parse(f, 4, &fr), MW_TRUSTM_FRAME_SHORT);
  n = mw__trustm_frame_build(0x14, (const uint8_t *)"\x00", 1, f, sizeof f); /* RFU bit */
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_FCTR);
  n = mw__trustm_frame_build(0x80, (const uint8_t *)"\x00", 1, f, sizeof f); /* control with payload */
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_FCTR);
  n = mw__trustm_frame_build(0x00, NULL, 0, f, sizeof f); /* data without payload */
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_FCTR);
  n = mw__trustm_frame_build(0xC1, NULL, 0, f, sizeof f); /* resync with ACKNR */
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_FCTR);
  n = mw__trustm_frame_build(0x40, (const uint8_t *)"\x00", 1, f, sizeof f); /* data frame, SEQCTR resync */
  CHECK_INT(mw__trustm_frame_parse(f, n, &fr), MW_TRUSTM_FRAME_FCTR);
}

/* The UID response frame of Annex B step 7, with made-up UID bytes and its own FCS. */
static const char *uid_frame(char *buf, size_t cap) {
  uint8_t pkt[32] = {0x00, 0x00, 0x00, 0x00, 0x1B, 0xCD}, f[64];
  for (int i = 6; i < 32; i++) pkt[i] = (uint8_t)i;
  size_t n = mw__trustm_frame_build(0x05, pkt, sizeof pkt, f, sizeof f);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) o += (size_t)snprintf(buf + o, cap - o, "%02X ", f[i]);
  return buf;
}

/* Annex B: the host stack must write exactly the datasheet's frames. */
static void annex_b_host(void) {
  char uidf[200];
  const tu_step_t steps[] = {
      {"80 03 00 15 00 70 00 00 10 " AID_HEX " 04 1A",
       {"80 00 00 0C EC", "00 00 05 00 00 00 00 00 14 87"},
       {"C8 80 00 05", "48 80 00 0A"}},
      {"80 80 00 00 0C EC", {NULL}, {NULL}},
      {"80 04 00 0B 00 01 00 00 06 E0 C2 00 00 00 64 F0 9F", {uid_frame(uidf, sizeof uidf)}, {"48 80 00 25"}},
      {"80 81 00 00 56 30", {NULL}, {NULL}},
  };
  tu_script_t sc = {.steps = steps, .nsteps = 4};
  mw_trustm_transport_t tr;
  mw_trustm_stats_t stats = {0};
  mw_trustm_link_t *l = calloc(1, sizeof *l);
  tu_script_transport(&sc, &tr);
  mw__trustm_link_init(l, &tr, &stats);
  uint8_t apdu[64], resp[64];
  size_t n = tu_hex("70 00 00 10 " AID_HEX, apdu, sizeof apdu), rl = 0;
  CHECK_INT(mw__trustm_net_transceive(l, apdu, n, resp, sizeof resp, &rl), MW_OK);
  CHECK_INT(rl, 4);
  CHECK_INT(resp[0], 0x00);
  n = tu_hex("01 00 00 06 E0 C2 00 00 00 64", apdu, sizeof apdu);
  CHECK_INT(mw__trustm_net_transceive(l, apdu, n, resp, sizeof resp, &rl), MW_OK);
  CHECK_INT(rl, 4 + 27);
  CHECK_INT(resp[3], 0x1B);
  CHECK_INT(resp[4], 0xCD);
  CHECK_INT(sc.step, 4);
  CHECK_INT(sc.mismatches, 0);
  if (sc.mismatches) fprintf(stderr, "%s\n", sc.last_error);
  free(l);
}

/* The shielded build of the vendor library sends PCTR 08 + SCTR 20; so do we with presentation on. */
static void presentation_frame(void) {
  const tu_step_t steps[] = {
      {"80 03 00 16 08 20 F0 00 00 10 " AID_HEX " BE 40", {"00 00 06 08 20 00 00 00 00 19 04"}, {"48 80 00 0B"}},
      {"80 80 00 00 0C EC", {NULL}, {NULL}},
  };
  tu_script_t sc = {.steps = steps, .nsteps = 2};
  mw_trustm_transport_t tr;
  mw_trustm_stats_t stats = {0};
  mw_trustm_link_t *l = calloc(1, sizeof *l);
  tu_script_transport(&sc, &tr);
  mw__trustm_link_init(l, &tr, &stats);
  l->presentation = true;
  uint8_t apdu[64], resp[64];
  size_t n = tu_hex("F0 00 00 10 " AID_HEX, apdu, sizeof apdu), rl = 0;
  CHECK_INT(mw__trustm_net_transceive(l, apdu, n, resp, sizeof resp, &rl), MW_OK);
  CHECK_INT(rl, 4);
  CHECK_INT(sc.step, 2);
  CHECK_INT(sc.mismatches, 0);
  if (sc.mismatches) fprintf(stderr, "%s\n", sc.last_error);
  free(l);
}

/* A broken chip that always shows a ready frame (a stale ACK): the driver gives up at its deadline. */
static uint64_t stuck_clock;
static uint8_t stuck_reg;
static mw_status_t stuck_write(void *c, const uint8_t *b, size_t n) {
  (void)c, (void)n;
  stuck_clock += 60;
  stuck_reg = b[0];
  return MW_OK;
}
static mw_status_t stuck_read(void *c, uint8_t *b, size_t n) {
  (void)c;
  uint8_t f[5], st[4] = {0x48, 0x80, 0x00, 0x05};
  stuck_clock += 60;
  mw__trustm_frame_build(0x82, NULL, 0, f, sizeof f);
  memset(b, 0xFF, n);
  memcpy(b, stuck_reg == 0x82 ? st : f, n < 4 ? n : 4);
  if (stuck_reg != 0x82 && n >= 5) b[4] = f[4];
  return MW_OK;
}
static void stuck_sleep(void *c, uint32_t us) { (void)c, stuck_clock += us; }
static uint64_t stuck_now(void *c) { return (void)c, stuck_clock; }

static void stuck_chip_times_out(void) {
  static const mw_trustm_transport_ops_t ops = {stuck_write, stuck_read, stuck_sleep, stuck_now, NULL};
  mw_trustm_transport_t tr = {&ops, NULL};
  mw_trustm_stats_t stats = {0};
  mw_trustm_link_t *l = calloc(1, sizeof *l);
  mw__trustm_link_init(l, &tr, &stats);
  l->response_timeout_us = 200000;
  const uint8_t apdu[6] = {0x8C, 0, 0, 2, 0, 8};
  uint8_t resp[64];
  size_t n;
  CHECK_INT(mw__trustm_net_transceive(l, apdu, sizeof apdu, resp, sizeof resp, &n), MW_ERR_TIMEOUT);
  CHECK(stuck_clock < 1000000);
  free(l);
}

/* ---- the simulator answering the datasheet's host frames ---- */

static mw_trustm_sim_t *sim;

static void w(const char *hex) {
  uint8_t b[300];
  size_t n = tu_hex(hex, b, sizeof b);
  mw_trustm_sim_advance_us(sim, 100);
  CHECK_INT(mw_trustm_sim_i2c_write(sim, 0x30, b, n), MW_OK);
}

static void r(const char *reg, size_t len, const char *want_hex) {
  uint8_t b[300], want[300];
  size_t wl = tu_hex(want_hex, want, sizeof want);
  w(reg);
  mw_trustm_sim_advance_us(sim, 100);
  CHECK_INT(mw_trustm_sim_i2c_read(sim, 0x30, b, len), MW_OK);
  CHECK_MEM(b, want, wl);
  if (memcmp(b, want, wl) != 0) {
    fprintf(stderr, "  got:");
    for (size_t i = 0; i < wl; i++) fprintf(stderr, " %02X", b[i]);
    fprintf(stderr, "\n want: %s\n", want_hex);
  }
}

static void annex_b_sim(mw_trustm_sim_ack_mode_t mode) {
  mw_trustm_sim_config_t cfg = {.ack_mode = mode, .no_sleep_mode = true};
  CHECK_INT(mw_trustm_sim_create(&cfg, &sim), MW_OK);
  mw_trustm_sim_advance_us(sim, 20000); /* t_STARTUP */
  r("82", 4, "08 80 00 00");
  w("80 03 00 15 00 70 00 00 10 " AID_HEX " 04 1A");
  if (mode == MW_TRUSTM_SIM_ACK_SEPARATE) {
    r("82", 4, "C8 80 00 05");
    r("80", 5, "80 00 00 0C EC");
  }
  mw_trustm_sim_advance_us(sim, 5000);
  r("82", 4, "48 80 00 0A");
  r("80", 12, "00 00 05 00 00 00 00 00 14 87 FF FF");
  w("80 80 00 00 0C EC");
  w("80 04 00 0B 00 01 00 00 06 E0 C2 00 00 00 64 F0 9F");
  mw_trustm_sim_advance_us(sim, 5000);
  if (mode == MW_TRUSTM_SIM_ACK_SEPARATE) {
    r("82", 4, "48 80 00 05");
    r("80", 5, "81 00 00 56 30");
  }
  r("82", 4, "48 80 00 25");
  r("80", 37, mode == MW_TRUSTM_SIM_ACK_SEPARATE ? "05 00 20 00 00 00 00 1B CD" : "05 00 20 00 00 00 00 1B CD");
  w("80 81 00 00 56 30");
  r("82", 4, "08 80 00 00");
  mw_trustm_sim_destroy(sim);
}

static void annex_b_sim_piggyback(void) { annex_b_sim(MW_TRUSTM_SIM_ACK_PIGGYBACK); }
static void annex_b_sim_separate(void) { annex_b_sim(MW_TRUSTM_SIM_ACK_SEPARATE); }

/* Register file: lengths, filler, persistent bits, NACK window, BASE_ADDR. */
static void sim_registers(void) {
  mw_trustm_sim_config_t cfg = {.no_sleep_mode = true};
  CHECK_INT(mw_trustm_sim_create(&cfg, &sim), MW_OK);
  uint8_t b[8];
  CHECK_INT(mw_trustm_sim_i2c_write(sim, 0x30, (const uint8_t *)"\x82", 1), MW_ERR_BUSY); /* t_STARTUP */
  mw_trustm_sim_advance_us(sim, 20000);
  r("81", 4, "01 15 FF FF");
  r("84", 6, "00 00 01 90 FF FF");
  r("85", 4, "00 00 00 32");
  r("86", 4, "00 00 00 0A");
  r("87", 4, "FF FF FF FF");
  r("89", 3, "00 03 FF");
  r("9A", 2, "FF FF");
  w("81 01 00"); /* 256 */
  r("81", 2, "01 00");
  w("81 02 00"); /* more than it can: shows its maximum */
  r("81", 2, "01 15");
  w("89 00 04");
  r("89", 2, "00 04");
  r("84", 4, "00 00 03 E8");
  w("89 00 03");
  /* guard time: a transaction right after the previous one is NACKed */
  CHECK_INT(mw_trustm_sim_i2c_write(sim, 0x30, (const uint8_t *)"\x82", 1), MW_ERR_BUSY);
  mw_trustm_sim_advance_us(sim, 100);
  CHECK_INT(mw_trustm_sim_i2c_read(sim, 0x31, b, 4), MW_ERR_NOT_FOUND);
  w("83 00 31"); /* new address, not persistent */
  mw_trustm_sim_advance_us(sim, 100);
  CHECK_INT(mw_trustm_sim_i2c_write(sim, 0x30, (const uint8_t *)"\x82", 1), MW_ERR_NOT_FOUND);
  mw_trustm_sim_advance_us(sim, 100);
  CHECK_INT(mw_trustm_sim_i2c_write(sim, 0x31, (const uint8_t *)"\x88\x00\x00", 3), MW_OK); /* soft reset */
  mw_trustm_sim_advance_us(sim, 20000);
  r("82", 4, "08 80 00 00"); /* back at 0x30 after the reset */
  r("89", 2, "00 03");       /* Fm+ was not persistent */
  mw_trustm_sim_destroy(sim);
}

static const mw_test_case_t cases[] = {
    MW_TEST(crc_check_value), MW_TEST(control_frames),        MW_TEST(data_frames),
    MW_TEST(frame_parse_errors), MW_TEST(annex_b_host),       MW_TEST(presentation_frame),
    MW_TEST(stuck_chip_times_out),
    MW_TEST(annex_b_sim_piggyback), MW_TEST(annex_b_sim_separate), MW_TEST(sim_registers),
};

int main(int argc, char **argv) { return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }
