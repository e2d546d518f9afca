/*
** moonwire se ...: the secure element from the command line (what Infineon's
** trustm_* tools do, in one command). --device /dev/i2c-N talks to a real OPTIGA
** Trust M; --sim FILE to the simulator, which is the default when there is no I2C bus.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "mw_log.h"
#include "mw_trustm.h"

const char mw_usage_se[] =
    "Usage: moonwire se [--device /dev/i2c-N [--address 0x30] | --sim STATEFILE] COMMAND\n\n"
    "Commands:\n"
    "  info                    chip identity, firmware, life cycle, security event counter\n"
    "  random N                N random bytes from the chip, as hex\n"
    "  keygen SLOT [--curve P-256|P-384] [--usage sign,auth,keyagree]\n"
    "                          generate a key pair inside the chip (e.g. 0xE0F1); prints the\n"
    "                          public key as PEM; the private key never leaves the chip\n"
    "  pubkey SLOT             print the stored public key of a key slot as PEM\n\n"
    "Without --device or --sim: /dev/i2c-1 if it exists, else the simulator with state in\n"
    "$MOONWIRE_SE_SIM (default trustm-sim.state in the current folder).\n";

static int parse_oid(const char *s, uint16_t *oid) {
  char *end;
  unsigned long v = strtoul(s, &end, 16);
  if (*end || v > 0xFFFF || strncasecmp(s, "0x", 2) != 0) return -1;
  *oid = (uint16_t)v;
  return 0;
}

static int fail_dev(mw_trustm_t *dev, const char *what, mw_status_t st) {
  return mw_cli_fail("%s: %s", what, dev ? mw_trustm_last_error(dev) : mw_status_str(st));
}

static int cmd_info(mw_trustm_t *dev) {
  mw_trustm_info_t in;
  mw_status_t st = mw_trustm_info(dev, &in);
  if (st != MW_OK) return fail_dev(dev, "info", st);
  char lcs[8];
  printf("transport:        %s\n", mw_trustm_is_sim(dev) ? "simulator" : "i2c");
  printf("uid:              ");
  for (int i = 0; i < MW_TRUSTM_UID_LEN; i++) printf("%02x", in.uid[i]);
  printf("\nfirmware:         0x%08x (build %04x)\n", in.firmware_id, in.esw_build);
  printf("frame size:       %u bytes, %u kHz\n", in.frame_size, in.frequency_khz);
  printf("life cycle:       %s\n", mw_trustm_lcs_name(in.lcsa, lcs));
  printf("security events:  %u\n", in.sec);
  return MW_EXIT_OK;
}

static int cmd_random(mw_trustm_t *dev, const char *arg) {
  char *end;
  long n = arg ? strtol(arg, &end, 10) : 0;
  if (!arg || *end || n < 8 || n > 256) return mw_cli_usage_error("se", "random needs N between 8 and 256");
  uint8_t buf[256];
  mw_status_t st = mw_trustm_random(dev, buf, (size_t)n);
  if (st != MW_OK) return fail_dev(dev, "random", st);
  for (long i = 0; i < n; i++) printf("%02x", buf[i]);
  printf("\n");
  return MW_EXIT_OK;
}

static int print_pub(const mw_trustm_pubkey_t *pub) {
  char pem[1024];
  if (mw_trustm_spki_to_pem(pub->spki, pub->spki_len, pem, sizeof pem) != MW_OK)
    return mw_cli_fail("cannot encode the public key");
  fputs(pem, stdout);
  return MW_EXIT_OK;
}

static int cmd_keygen(mw_trustm_t *dev, uint16_t oid, const char *curve, const char *usage) {
  mw_trustm_curve_t c = MW_TRUSTM_NIST_P256;
  if (curve && !strcmp(curve, "P-384")) c = MW_TRUSTM_NIST_P384;
  else if (curve && strcmp(curve, "P-256")) return mw_cli_usage_error("se", "unknown curve '%s'", curve);
  uint8_t u = 0;
  const char *p = usage ? usage : "sign,auth";
  while (*p) {
    size_t n = strcspn(p, ",");
    if (n == 4 && !strncmp(p, "sign", 4)) u |= MW_TRUSTM_USAGE_SIGN;
    else if (n == 4 && !strncmp(p, "auth", 4)) u |= MW_TRUSTM_USAGE_AUTH;
    else if (n == 8 && !strncmp(p, "keyagree", 8)) u |= MW_TRUSTM_USAGE_KEYAGREE;
    else return mw_cli_usage_error("se", "unknown key usage in '%s' (sign, auth, keyagree)", usage);
    p += n + (p[n] == ',');
  }
  mw_trustm_pubkey_t pub;
  mw_status_t st = mw_trustm_gen_key(dev, oid, c, u, MW_TRUSTM_GEN_STORE_PUBKEY, &pub);
  if (st != MW_OK) return fail_dev(dev, "keygen", st);
  return print_pub(&pub);
}

static int cmd_pubkey(mw_trustm_t *dev, uint16_t oid) {
  mw_trustm_pubkey_t pub;
  mw_status_t st = mw_trustm_pubkey_read(dev, oid, &pub);
  if (st != MW_OK) return fail_dev(dev, "pubkey", st);
  return print_pub(&pub);
}

int mw_cmd_se(int argc, char **argv) {
  const char *device = NULL, *sim = NULL, *curve = NULL, *usage = NULL;
  const char *pos[3] = {NULL, NULL, NULL};
  int npos = 0;
  long address = 0x30;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    const char *addr = NULL;
    if (!strcmp(a, "--device")) slot = &device;
    else if (!strcmp(a, "--sim")) slot = &sim;
    else if (!strcmp(a, "--curve")) slot = &curve;
    else if (!strcmp(a, "--usage")) slot = &usage;
    else if (!strcmp(a, "--address")) slot = &addr;
    else if (a[0] == '-') return mw_cli_usage_error("se", "unknown option '%s'", a);
    else if (npos < 3) pos[npos++] = a;
    else return mw_cli_usage_error("se", "unexpected argument '%s'", a);
    if (slot) {
      if (i + 1 >= argc) return mw_cli_usage_error("se", "%s needs a value", a);
      *slot = argv[++i];
      if (slot == &addr) address = strtol(addr, NULL, 0);
    }
  }
  if (!pos[0]) return mw_cli_usage_error("se", "no command given");
  if (device && sim) return mw_cli_usage_error("se", "give --device or --sim, not both");
  if (address < 0x08 || address > 0x77) return mw_cli_usage_error("se", "--address must be a 7-bit address");
  uint16_t oid = 0;
  int needs_oid = !strcmp(pos[0], "keygen") || !strcmp(pos[0], "pubkey");
  if (needs_oid && (!pos[1] || parse_oid(pos[1], &oid) != 0))
    return mw_cli_usage_error("se", "%s needs a key slot such as 0xE0F1", pos[0]);
  if (strcmp(pos[0], "info") && strcmp(pos[0], "random") && !needs_oid)
    return mw_cli_usage_error("se", "unknown se command '%s'", pos[0]);
  if (!device && !sim) {
    if (access("/dev/i2c-1", R_OK | W_OK) == 0) {
      device = "/dev/i2c-1";
    } else {
      sim = getenv("MOONWIRE_SE_SIM") ? getenv("MOONWIRE_SE_SIM") : "trustm-sim.state";
      fprintf(stderr, "moonwire: no I2C bus here; using the Trust M simulator (%s)\n", sim);
    }
  }
  mw_trustm_config_t tc = {0};
  tc.device = device;
  tc.sim = sim;
  tc.address = (uint8_t)address;
  mw_trustm_t *dev = NULL;
  mw_status_t st = mw_trustm_open(&tc, &dev);
  if (st != MW_OK) {
    int rc = mw_cli_fail("cannot open the secure element %s: %s", device ? device : sim,
                         dev ? mw_trustm_last_error(dev) : mw_status_str(st));
    mw_trustm_close(dev);
    return rc;
  }
  int rc;
  if (!strcmp(pos[0], "info")) rc = cmd_info(dev);
  else if (!strcmp(pos[0], "random")) rc = cmd_random(dev, pos[1]);
  else if (!strcmp(pos[0], "keygen")) rc = cmd_keygen(dev, oid, curve, usage);
  else rc = cmd_pubkey(dev, oid);
  mw_trustm_close(dev);
  return rc;
}
