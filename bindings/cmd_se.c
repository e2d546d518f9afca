/*
** moonwire se ...: the secure element from the command line (what Infineon's
** trustm_* tools do, in one command). --device /dev/i2c-N talks to a real OPTIGA
** Trust M; --sim FILE to the simulator, which is the default when there is no I2C bus.
*/
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "cli_csr.h"
#include "mw_log.h"
#include "mw_trustm.h"

#define OBJ_MAX 4096 /* larger than any Trust M data object */

const char mw_usage_se[] =
    "Usage: moonwire se [--device /dev/i2c-N [--address 0x30] | --sim STATEFILE] COMMAND\n\n"
    "Commands:\n"
    "  info                    chip identity, firmware, life cycle, security event counter\n"
    "  random N                N random bytes from the chip, as hex\n"
    "  keygen SLOT [--curve P-256|P-384|P-521|brainpoolP256r1|...] [--usage sign,auth,keyagree]\n"
    "                          generate a key pair inside the chip (e.g. 0xE0F1); prints the\n"
    "                          public key as PEM; the private key never leaves the chip\n"
    "  pubkey SLOT             print the stored public key of a key slot as PEM\n"
    "  csr SLOT --cn NAME ...  print a certificate request (PEM) signed by the chip's key\n" MW_CLI_SUBJECT_HELP
    "  cert read SLOT [--out FILE]\n"
    "                          print (or save) the certificate in SLOT (e.g. 0xE0E0) as PEM\n"
    "  cert write SLOT FILE [--chain]\n"
    "                          store a PEM certificate (--chain: with the TLS identity-chain\n"
    "                          tag C0 the factory certificate uses)\n"
    "  data read OID [--offset N] [--len N] [--hex | --out FILE | --raw]\n"
    "                          read a data object: hex on stdout (default), raw to FILE/stdout\n"
    "  data write OID FILE|--hex HEX [--offset N] [--erase]\n"
    "                          write a data object (--erase: zero it first, used size = end)\n"
    "  metadata OID [--set FIELD=VALUE]...\n"
    "                          show an object's metadata, or change fields: lcso=op,\n"
    "                          change|read|execute|meta_update=ALW|NEV|LcsO<op|..., version=N,\n"
    "                          key_usage=sign,auth, type=BSTR|UPCTR|..., reset_type=N\n"
    "  counter OID [--add N]   read (or advance, then read) a monotonic counter (0xE120..0xE123)\n\n"
    "Without --device or --sim: /dev/i2c-1 if it exists, else the simulator with state in\n"
    "$MOONWIRE_SE_SIM (default trustm-sim.state in the current folder), said on stderr.\n";

__attribute__((format(printf, 1, 2))) static int usage(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return mw_cli_usage_error("se", "%s", msg);
}

static int parse_oid(const char *s, uint16_t *oid) {
  char *end;
  if (!s || strncasecmp(s, "0x", 2) != 0) return -1;
  unsigned long v = strtoul(s, &end, 16);
  if (*end || end == s + 2 || v > 0xFFFF) return -1;
  *oid = (uint16_t)v;
  return 0;
}

static int parse_num(const char *s, long min, long max, long *out) {
  char *end;
  if (!s) return -1;
  errno = 0;
  long v = strtol(s, &end, 0);
  if (*end || end == s || errno || v < min || v > max) return -1;
  *out = v;
  return 0;
}

static int fail_dev(mw_trustm_t *dev, const char *what, mw_status_t st) {
  return mw_cli_fail("%s: %s", what, dev && *mw_trustm_last_error(dev) ? mw_trustm_last_error(dev) : mw_status_str(st));
}

static void print_hex(const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
  printf("\n");
}

/* "0a1B..." (spaces and colons allowed) -> bytes; -1 when it is not hex. */
static long parse_hex(const char *s, uint8_t *out, size_t cap) {
  size_t n = 0;
  int hi = -1;
  for (; *s; s++) {
    if (*s == ' ' || *s == ':') continue;
    if (!isxdigit((unsigned char)*s)) return -1;
    int v = isdigit((unsigned char)*s) ? *s - '0' : (tolower((unsigned char)*s) - 'a' + 10);
    if (hi < 0) {
      hi = v;
    } else {
      if (n >= cap) return -1;
      out[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  return hi < 0 ? (long)n : -1;
}

/* "sign,auth" -> usage bits; -1 for an unknown name or none. */
static int parse_usage(const char *text, uint8_t *out) {
  uint8_t u = 0;
  for (const char *p = text; *p;) {
    size_t n = strcspn(p, ",");
    uint8_t bit = mw_trustm_usage_parse(p, n);
    if (!bit) return -1;
    u |= bit;
    p += n + (p[n] == ',');
  }
  *out = u;
  return u ? 0 : -1;
}

/* All of file into buf: 0, -1 with errno when it cannot be read, 1 when it is larger than cap. */
static int read_file(const char *file, uint8_t *buf, size_t cap, size_t *n) {
  FILE *f = fopen(file, "rb");
  if (!f) return -1;
  *n = fread(buf, 1, cap, f);
  bool more = fgetc(f) != EOF;
  fclose(f);
  return more ? 1 : 0;
}

/* ---- commands ---- */

typedef struct {
  const char *curve, *usage, *out, *hex, *offset, *len, *add;
  const char *sets[16];
  int nsets;
  bool chain, erase, raw, hex_flag;
  mw_cli_subject_t subj;
} opts_t;

static int cmd_info(mw_trustm_t *dev) {
  mw_trustm_info_t in;
  mw_status_t st = mw_trustm_info(dev, &in);
  if (st != MW_OK) return fail_dev(dev, "info", st);
  char lcs[8];
  printf("transport:        %s\n", mw_trustm_is_sim(dev) ? "simulator" : "i2c");
  printf("uid:              ");
  print_hex(in.uid, MW_TRUSTM_UID_LEN);
  printf("firmware:         0x%08x (build %04x)\n", in.firmware_id, in.esw_build);
  printf("frame size:       %u bytes, %u kHz\n", in.frame_size, in.frequency_khz);
  printf("life cycle:       %s\n", mw_trustm_lcs_name(in.lcsa, lcs));
  printf("security events:  %u\n", in.sec);
  return MW_EXIT_OK;
}

static int cmd_random(mw_trustm_t *dev, const char *arg) {
  long n;
  if (parse_num(arg, 1, 1024, &n) != 0) return usage("random needs N between 1 and 1024");
  uint8_t buf[1024];
  mw_status_t st = mw_trustm_random(dev, buf, (size_t)n);
  if (st != MW_OK) return fail_dev(dev, "random", st);
  print_hex(buf, (size_t)n);
  return MW_EXIT_OK;
}

static int print_pub(const mw_trustm_pubkey_t *pub) {
  char pem[1024];
  if (mw_trustm_spki_to_pem(pub->spki, pub->spki_len, pem, sizeof pem) != MW_OK)
    return mw_cli_fail("cannot encode the public key");
  fputs(pem, stdout);
  return MW_EXIT_OK;
}

static int cmd_keygen(mw_trustm_t *dev, uint16_t oid, const opts_t *o) {
  uint8_t c = o->curve ? mw_trustm_curve_parse(o->curve) : MW_TRUSTM_NIST_P256;
  if (!c) return usage("unknown curve '%s'", o->curve);
  uint8_t u;
  if (parse_usage(o->usage ? o->usage : "sign,auth", &u) != 0)
    return usage("unknown key usage in '%s' (sign, auth, enc, keyagree)", o->usage);
  mw_trustm_pubkey_t pub;
  unsigned flags = mw_trustm_pubkey_oid(oid) ? MW_TRUSTM_GEN_STORE_PUBKEY : 0;
  mw_status_t st = mw_trustm_gen_key(dev, oid, (mw_trustm_curve_t)c, u, flags, &pub);
  if (st != MW_OK) return fail_dev(dev, "keygen", st);
  return print_pub(&pub);
}

static int cmd_pubkey(mw_trustm_t *dev, uint16_t oid) {
  mw_trustm_pubkey_t pub;
  mw_status_t st = mw_trustm_pubkey_read(dev, oid, &pub);
  if (st != MW_OK) return fail_dev(dev, "pubkey", st);
  return print_pub(&pub);
}

static int cmd_csr(mw_trustm_t *dev, uint16_t oid, opts_t *o) {
  EVP_PKEY *key = NULL;
  mw_status_t st = mw_trustm_pkey(dev, oid, NULL, &key);
  if (st != MW_OK) return fail_dev(dev, "csr", st);
  int rc = mw_cli_print_csr("se", key, &o->subj);
  EVP_PKEY_free(key);
  return rc;
}

static int cmd_cert_read(mw_trustm_t *dev, uint16_t oid, const opts_t *o) {
  uint8_t der[OBJ_MAX];
  char pem[3 * OBJ_MAX];
  size_t n;
  mw_status_t st = mw_trustm_cert_read(dev, oid, der, sizeof der, &n);
  if (st != MW_OK) return fail_dev(dev, "cert read", st);
  if (mw_trustm_cert_to_pem(der, n, pem, sizeof pem) != MW_OK)
    return mw_cli_fail("cert read: 0x%04X holds no parseable X.509 certificate", oid);
  FILE *f = o->out ? fopen(o->out, "w") : stdout;
  bool ok = f && fputs(pem, f) >= 0;
  if (o->out && f && fclose(f) != 0) ok = false;
  if (!ok) return mw_cli_fail("cert read: cannot write %s: %s", o->out ? o->out : "stdout", strerror(errno));
  return MW_EXIT_OK;
}

static int cmd_cert_write(mw_trustm_t *dev, uint16_t oid, const char *file, const opts_t *o) {
  char text[16 * OBJ_MAX]; /* PEM, maybe after the text that openssl x509 -text puts before it */
  size_t tl, n;
  int r = read_file(file, (uint8_t *)text, sizeof text, &tl);
  if (r < 0) return mw_cli_fail("cert write: %s: %s", file, strerror(errno));
  if (r > 0) return mw_cli_fail("cert write: %s is larger than %zu bytes", file, sizeof text);
  uint8_t der[OBJ_MAX];
  mw_status_t st = mw_trustm_cert_from_pem(text, tl, der, sizeof der, &n, NULL);
  if (st == MW_ERR_TOO_LARGE) return mw_cli_fail("cert write: the certificate in %s is too large for the chip", file);
  if (st != MW_OK) return mw_cli_fail("cert write: %s holds no PEM certificate", file);
  st = mw_trustm_cert_write(dev, oid, der, n, o->chain ? MW_TRUSTM_CERT_CHAIN_TAG : 0);
  if (st != MW_OK) return fail_dev(dev, "cert write", st);
  fprintf(stderr, "stored %zu-byte certificate in 0x%04X%s\n", n, oid, o->chain ? " (identity-chain tag C0)" : "");
  return MW_EXIT_OK;
}

static int cmd_data_read(mw_trustm_t *dev, uint16_t oid, const opts_t *o) {
  long off = 0, len = -1;
  if (o->offset && parse_num(o->offset, 0, 0xFFFF, &off) != 0) return usage("--offset must be 0..65535, got '%s'", o->offset);
  if (o->len && parse_num(o->len, 1, OBJ_MAX, &len) != 0) return usage("--len must be 1..4096, got '%s'", o->len);
  if (o->out && (o->raw || o->hex_flag)) return usage("give one of --hex, --raw, --out");
  uint8_t buf[OBJ_MAX];
  size_t n;
  mw_status_t st = mw_trustm_read(dev, oid, (size_t)off, len < 0 ? MW_TRUSTM_READ_ALL : (size_t)len, buf, sizeof buf, &n);
  if (st != MW_OK) return fail_dev(dev, "data read", st);
  if (o->out) {
    FILE *f = fopen(o->out, "wb");
    bool ok = f && fwrite(buf, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) return mw_cli_fail("data read: cannot write %s: %s", o->out, strerror(errno));
  } else if (o->raw) {
    fwrite(buf, 1, n, stdout);
  } else {
    print_hex(buf, n);
  }
  return MW_EXIT_OK;
}

static int cmd_data_write(mw_trustm_t *dev, uint16_t oid, const char *file, const opts_t *o) {
  long off = 0;
  if (o->offset && parse_num(o->offset, 0, 0xFFFF, &off) != 0) return usage("--offset must be 0..65535, got '%s'", o->offset);
  if (!file == !o->hex) return usage("data write needs a FILE or --hex HEX");
  uint8_t buf[OBJ_MAX];
  long n;
  if (o->hex) {
    n = parse_hex(o->hex, buf, sizeof buf);
    if (n < 0) return usage("--hex: '%s' is not an even number of hex digits (at most 4096 bytes)", o->hex);
  } else {
    size_t got;
    int r = read_file(file, buf, sizeof buf, &got);
    if (r < 0) return mw_cli_fail("data write: %s: %s", file, strerror(errno));
    if (r > 0) return mw_cli_fail("data write: %s is larger than %d bytes", file, OBJ_MAX);
    n = (long)got;
  }
  mw_status_t st = mw_trustm_write(dev, oid, (size_t)off, buf, (size_t)n, o->erase);
  if (st != MW_OK) return fail_dev(dev, "data write", st);
  fprintf(stderr, "wrote %ld bytes to 0x%04X at offset %ld%s\n", n, oid, off, o->erase ? " (erased first)" : "");
  return MW_EXIT_OK;
}

static void print_ac(const char *name, const mw_trustm_ac_t *ac) {
  char text[160];
  if (mw_trustm_ac_format(ac, text, sizeof text) != MW_OK) snprintf(text, sizeof text, "(unparsed, %u bytes)", ac->len);
  printf("%-14s%s\n", name, text);
}

static int set_field(mw_trustm_metadata_t *md, const char *kv) {
  const char *eq = strchr(kv, '=');
  if (!eq) return usage("--set needs FIELD=VALUE, got '%s'", kv);
  size_t kl = (size_t)(eq - kv);
  const char *v = eq + 1;
  unsigned bit;
  mw_trustm_ac_t *ac;
  const char *name;
  for (unsigned i = 0; (name = mw_trustm_metadata_ac(md, i, &bit, &ac)); i++)
    if (strlen(name) == kl && !strncmp(kv, name, kl)) {
      if (mw_trustm_ac_parse(v, ac) != MW_OK)
        return usage("'%s' is not an access condition (ALW, NEV, LcsO<op, SecStaA(0x20), Luc(0xE120), ...)", v);
      md->present |= bit;
      return 0;
    }
  long n;
  if (kl == 4 && !strncmp(kv, "lcso", 4)) {
    uint8_t lcs = mw_trustm_lcs_parse(v);
    if (!lcs && parse_num(v, 1, 0xFF, &n) != 0) return usage("lcso must be cr, in, op, te or a number, got '%s'", v);
    md->lcso = lcs ? lcs : (uint8_t)n;
    md->present |= MW_TRUSTM_MD_LCSO;
  } else if (kl == 7 && !strncmp(kv, "version", 7)) {
    if (parse_num(v, 0, 0x7FFF, &n) != 0) return usage("version must be 0..32767, got '%s'", v);
    md->version = (uint16_t)n;
    md->present |= MW_TRUSTM_MD_VERSION;
  } else if (kl == 10 && !strncmp(kv, "reset_type", 10)) {
    if (parse_num(v, 0, 0xFF, &n) != 0) return usage("reset_type must be 0..255, got '%s'", v);
    md->reset_type = (uint8_t)n;
    md->present |= MW_TRUSTM_MD_RESET_TYPE;
  } else if (kl == 9 && !strncmp(kv, "key_usage", 9)) {
    if (parse_usage(v, &md->key_usage) != 0) return usage("key_usage: '%s' (sign,auth,enc,keyagree)", v);
    md->present |= MW_TRUSTM_MD_KEY_USAGE;
  } else if (kl == 4 && !strncmp(kv, "type", 4)) {
    int found = mw_trustm_type_parse(v);
    if (found < 0) return usage("type must be BSTR, UPCTR, TA, DEVCERT, PRESSEC, PTFBIND, UPDATSEC or AUTOREF, got '%s'", v);
    md->type = (uint8_t)found;
    md->present |= MW_TRUSTM_MD_TYPE;
  } else {
    return usage("--set: unknown field in '%s' (lcso, version, change, read, execute, meta_update, key_usage, type, "
                 "reset_type)",
                 kv);
  }
  return 0;
}

static int cmd_metadata(mw_trustm_t *dev, uint16_t oid, const opts_t *o) {
  mw_trustm_metadata_t md;
  mw_status_t st;
  if (o->nsets) {
    memset(&md, 0, sizeof md);
    for (int i = 0; i < o->nsets; i++) {
      int rc = set_field(&md, o->sets[i]);
      if (rc) return rc;
    }
    st = mw_trustm_metadata_write(dev, oid, &md);
    if (st != MW_OK) return fail_dev(dev, "metadata", st);
  }
  uint8_t raw[MW_TRUSTM_META_MAX];
  size_t rl;
  st = mw_trustm_metadata_read(dev, oid, &md, raw, sizeof raw, &rl);
  if (st != MW_OK) return fail_dev(dev, "metadata", st);
  char lcs[8];
  printf("%-14s", "raw");
  print_hex(raw, rl);
  if (md.present & MW_TRUSTM_MD_LCSO) printf("%-14s%s\n", "lcso", mw_trustm_lcs_name(md.lcso, lcs));
  if (md.present & MW_TRUSTM_MD_VERSION) printf("%-14s%u\n", "version", md.version);
  if (md.present & MW_TRUSTM_MD_MAX_SIZE) printf("%-14s%u\n", "max_size", md.max_size);
  if (md.present & MW_TRUSTM_MD_USED_SIZE) printf("%-14s%u\n", "used_size", md.used_size);
  unsigned bit;
  mw_trustm_ac_t *ac;
  const char *name;
  for (unsigned i = 0; (name = mw_trustm_metadata_ac(&md, i, &bit, &ac)); i++)
    if (md.present & bit) print_ac(name, ac);
  if (md.present & MW_TRUSTM_MD_ALGORITHM) {
    const char *c = mw_trustm_curve_name(md.algorithm);
    if (c) printf("%-14s%s\n", "algorithm", c);
    else printf("%-14s0x%02X\n", "algorithm", md.algorithm);
  }
  if (md.present & MW_TRUSTM_MD_KEY_USAGE) {
    printf("%-14s", "key_usage");
    static const uint8_t order[] = {MW_TRUSTM_USAGE_SIGN, MW_TRUSTM_USAGE_AUTH, MW_TRUSTM_USAGE_ENC,
                                    MW_TRUSTM_USAGE_KEYAGREE}; /* as the help text lists them */
    const char *sep = "";
    for (size_t k = 0; k < sizeof order; k++)
      if (md.key_usage & order[k]) printf("%s%s", sep, mw_trustm_usage_name(order[k])), sep = ",";
    printf("\n");
  }
  if (md.present & MW_TRUSTM_MD_TYPE) {
    const char *t = mw_trustm_type_name(md.type);
    if (t) printf("%-14s%s\n", "type", t);
    else printf("%-14s0x%02X\n", "type", md.type);
  }
  if (md.present & MW_TRUSTM_MD_RESET_TYPE) printf("%-14s0x%02X\n", "reset_type", md.reset_type);
  return MW_EXIT_OK;
}

static int cmd_counter(mw_trustm_t *dev, uint16_t oid, const opts_t *o) {
  long add = 0;
  if (o->add && parse_num(o->add, 1, 255, &add) != 0) return usage("--add must be 1..255, got '%s'", o->add);
  mw_status_t st = MW_OK;
  if (add) st = mw_trustm_counter_add(dev, oid, (uint8_t)add);
  uint32_t v, t;
  if (st == MW_OK) st = mw_trustm_counter_read(dev, oid, &v, &t);
  if (st != MW_OK) return fail_dev(dev, "counter", st);
  printf("value %u threshold %u\n", v, t);
  return MW_EXIT_OK;
}

/* ---- dispatch ---- */

/* Option values checked before the chip is opened (the commands parse them again). */
static int precheck(const char *cmd, const opts_t *o) {
  long n;
  uint8_t u, buf[OBJ_MAX];
  if (o->curve && !mw_trustm_curve_parse(o->curve)) return usage("unknown curve '%s'", o->curve);
  if (o->usage && parse_usage(o->usage, &u) != 0)
    return usage("unknown key usage in '%s' (sign, auth, enc, keyagree)", o->usage);
  if ((o->curve || o->usage) && strcmp(cmd, "keygen")) return usage("--curve and --usage are for keygen");
  if (o->offset && parse_num(o->offset, 0, 0xFFFF, &n) != 0) return usage("--offset must be 0..65535, got '%s'", o->offset);
  if (o->len && parse_num(o->len, 1, OBJ_MAX, &n) != 0) return usage("--len must be 1..4096, got '%s'", o->len);
  if (o->add && parse_num(o->add, 1, 255, &n) != 0) return usage("--add must be 1..255, got '%s'", o->add);
  if (o->hex && parse_hex(o->hex, buf, sizeof buf) < 0)
    return usage("--hex: '%s' is not an even number of hex digits (at most 4096 bytes)", o->hex);
  mw_trustm_metadata_t md;
  memset(&md, 0, sizeof md);
  for (int i = 0; i < o->nsets; i++) {
    int rc = set_field(&md, o->sets[i]);
    if (rc) return rc;
  }
  return 0;
}

int mw_cmd_se(int argc, char **argv) {
  const char *device = NULL, *sim = NULL, *address = NULL;
  const char *pos[4] = {NULL, NULL, NULL, NULL};
  int npos = 0;
  opts_t o;
  memset(&o, 0, sizeof o);
  /* --hex is a flag for data read and takes the bytes for data write */
  bool writing = false;
  for (int i = 1; i < argc; i++) writing |= !strcmp(argv[i], "write");
  const mw_cli_opt_t opts[] = {
      {"--device", NULL, &device}, {"--sim", NULL, &sim}, {"--address", NULL, &address},
      {"--curve", NULL, &o.curve}, {"--usage", NULL, &o.usage}, {"--out", NULL, &o.out},
      {"--offset", NULL, &o.offset}, {"--len", NULL, &o.len}, {"--add", NULL, &o.add},
      {writing ? "--hex" : NULL, NULL, &o.hex}, /* last: without a name it ends the table */
      {0}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int r = mw_cli_subject_opt("se", argc, argv, &i, &o.subj);
    if (r == 0) r = mw_cli_value_opt("se", argc, argv, &i, opts);
    if (r != 0) {
      if (r != 1) return r;
      continue;
    }
    if (!strcmp(a, "--hex")) o.hex_flag = true;
    else if (!strcmp(a, "--raw")) o.raw = true;
    else if (!strcmp(a, "--chain")) o.chain = true;
    else if (!strcmp(a, "--erase")) o.erase = true;
    else if (!strcmp(a, "--set")) {
      if (i + 1 >= argc) return usage("%s needs FIELD=VALUE", a);
      if (o.nsets >= 16) return usage("at most 16 --set");
      o.sets[o.nsets++] = argv[++i];
    } else if ((r = mw_cli_positional("se", a, pos, 4, &npos)) != 1) return r;
  }
  long addr = 0x30;
  if (!pos[0]) return usage("no command given");
  if (device && sim) return usage("give --device or --sim, not both");
  if (address && parse_num(address, 0x08, 0x77, &addr) != 0) return usage("--address must be a 7-bit address, got '%s'", address);

  /* Check the command line completely before touching the chip. */
  const char *cmd = pos[0], *sub = pos[1];
  uint16_t oid = 0;
  const char *oid_text = NULL, *file = NULL;
  int expect = 2; /* positional words of the command, OID included */
  if (!strcmp(cmd, "info") || !strcmp(cmd, "random")) {
    expect = !strcmp(cmd, "random") ? 2 : 1;
  } else if (!strcmp(cmd, "keygen") || !strcmp(cmd, "pubkey") || !strcmp(cmd, "csr") || !strcmp(cmd, "metadata") ||
             !strcmp(cmd, "counter")) {
    oid_text = pos[1];
  } else if (!strcmp(cmd, "cert") || !strcmp(cmd, "data")) {
    if (!sub || (strcmp(sub, "read") && strcmp(sub, "write"))) return usage("%s needs read or write", cmd);
    oid_text = pos[2];
    file = pos[3];
    expect = !strcmp(sub, "write") && (!strcmp(cmd, "cert") || !o.hex) ? 4 : 3;
    if (expect == 4 && !file)
      return usage("%s", !strcmp(cmd, "cert") ? "cert write needs SLOT FILE" : "data write needs OID FILE or --hex HEX");
  } else {
    return usage("unknown se command '%s'", cmd);
  }
  if (oid_text && parse_oid(oid_text, &oid) != 0)
    return usage("%s needs an object id such as 0xE0F1", cmd);
  long n;
  if (!strcmp(cmd, "random") && parse_num(pos[1], 1, 1024, &n) != 0) return usage("random needs N between 1 and 1024");
  if (npos > expect) return usage("unexpected argument '%s'", pos[expect]);
  if (!strcmp(cmd, "csr") && !o.subj.subj.cn) return usage("csr needs --cn NAME");
  if (o.subj.subj.cn && strcmp(cmd, "csr")) return usage("--cn and the other subject options are for csr");
  if (o.nsets && strcmp(cmd, "metadata")) return usage("--set is for metadata");
  int prc = precheck(cmd, &o);
  if (prc) return prc;

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
  tc.address = (uint8_t)addr;
  mw_trustm_t *dev = NULL;
  mw_status_t st = mw_trustm_open(&tc, &dev);
  if (st != MW_OK) {
    int rc = mw_cli_fail("cannot open the secure element %s: %s", device ? device : sim,
                         dev ? mw_trustm_last_error(dev) : mw_status_str(st));
    mw_trustm_close(dev);
    return rc;
  }
  int rc;
  if (!strcmp(cmd, "info")) rc = cmd_info(dev);
  else if (!strcmp(cmd, "random")) rc = cmd_random(dev, pos[1]);
  else if (!strcmp(cmd, "keygen")) rc = cmd_keygen(dev, oid, &o);
  else if (!strcmp(cmd, "pubkey")) rc = cmd_pubkey(dev, oid);
  else if (!strcmp(cmd, "csr")) rc = cmd_csr(dev, oid, &o);
  else if (!strcmp(cmd, "metadata")) rc = cmd_metadata(dev, oid, &o);
  else if (!strcmp(cmd, "counter")) rc = cmd_counter(dev, oid, &o);
  else if (!strcmp(cmd, "cert")) rc = !strcmp(sub, "read") ? cmd_cert_read(dev, oid, &o) : cmd_cert_write(dev, oid, file, &o);
  else rc = !strcmp(sub, "read") ? cmd_data_read(dev, oid, &o) : cmd_data_write(dev, oid, file, &o);
  mw_trustm_close(dev);
  return rc;
}
