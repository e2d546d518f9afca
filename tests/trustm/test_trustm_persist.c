/*
** The simulator's state file: two handles (and two processes) opening the same file see
** the same chip, concurrent writers serialise on the lock, and a damaged file is refused.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "trustm_test_util.h"

static char dir[64], path[128];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/trustm-test-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/chip.state", dir);
}

static void cleanup(void) {
  char p2[160];
  unlink(path);
  snprintf(p2, sizeof p2, "%s.lock", path);
  unlink(p2);
  rmdir(dir);
}

static mw_trustm_t *open_file(void) {
  mw_trustm_config_t c = {.sim = path};
  mw_trustm_t *d = NULL;
  CHECK_INT(mw_trustm_open(&c, &d), MW_OK);
  return d;
}

static void two_handles(void) {
  setup();
  mw_trustm_t *a = open_file(), *b = open_file();
  if (!a || !b) goto out;
  uint8_t ua[27], ub[27];
  CHECK_INT(mw_trustm_uid(a, ua), MW_OK);
  CHECK_INT(mw_trustm_uid(b, ub), MW_OK);
  CHECK_MEM(ua, ub, 27);
  mw_trustm_pubkey_t pa, pb;
  CHECK_INT(mw_trustm_gen_key(a, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, MW_TRUSTM_GEN_STORE_PUBKEY, &pa),
            MW_OK);
  CHECK_INT(mw_trustm_write(a, 0xF1D0, 0, (const uint8_t *)"hello", 5, true), MW_OK);
  /* b sees a's key and data */
  CHECK_INT(mw_trustm_pubkey_read(b, 0xE0F1, &pb), MW_OK);
  CHECK_INT(pb.spki_len, pa.spki_len);
  CHECK_MEM(pb.spki, pa.spki, pa.spki_len);
  uint8_t buf[16], dg[32] = {1}, sig[MW_TRUSTM_SIG_DER_MAX];
  size_t n, sl;
  CHECK_INT(mw_trustm_read(b, 0xF1D0, 0, MW_TRUSTM_READ_ALL, buf, sizeof buf, &n), MW_OK);
  CHECK_INT(n, 5);
  CHECK_MEM(buf, "hello", 5);
  CHECK_INT(mw_trustm_sign(b, 0xE0F1, dg, 32, sig, sizeof sig, &sl), MW_OK);
  bool ok = false;
  CHECK_INT(mw_trustm_verify(a, pa.spki, pa.spki_len, dg, 32, sig, sl, &ok), MW_OK);
  CHECK(ok);
  /* and the other way */
  CHECK_INT(mw_trustm_write(b, 0xF1D0, 0, (const uint8_t *)"HELLO", 5, false), MW_OK);
  CHECK_INT(mw_trustm_read(a, 0xF1D0, 0, 5, buf, sizeof buf, &n), MW_OK);
  CHECK_MEM(buf, "HELLO", 5);
  /* the security event counter is non-volatile too: 1 + 6 uses, 5 credits */
  for (int i = 0; i < 6; i++) CHECK_INT(mw_trustm_sign(a, 0xE0F1, dg, 32, sig, sizeof sig, &sl), MW_OK);
  mw_trustm_info_t in;
  CHECK_INT(mw_trustm_info(b, &in), MW_OK);
  CHECK_INT(in.sec, 2);
out:
  mw_trustm_close(a);
  mw_trustm_close(b);
  /* a third handle after both closed */
  mw_trustm_t *c = open_file();
  if (c) {
    uint8_t back[16];
    size_t bn;
    CHECK_INT(mw_trustm_read(c, 0xF1D0, 0, 5, back, sizeof back, &bn), MW_OK);
    CHECK_MEM(back, "HELLO", 5);
  }
  mw_trustm_close(c);
  FILE *f = fopen(path, "r");
  char line[64] = "";
  CHECK(f && fgets(line, sizeof line, f));
  CHECK(strncmp(line, "MWTRUSTMSIM 1", 13) == 0);
  if (f) fclose(f);
  cleanup();
}

/* Two processes count the same counter at once: no increment may be lost. */
static void two_processes(void) {
  setup();
  mw_trustm_t *a = open_file();
  if (!a) {
    cleanup();
    return;
  }
  const int per = 25;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    mw_trustm_config_t c = {.sim = path};
    mw_trustm_t *d = NULL;
    int bad = mw_trustm_open(&c, &d) != MW_OK;
    for (int i = 0; i < per && !bad; i++) bad = mw_trustm_counter_add(d, 0xE120, 1) != MW_OK;
    if (!bad) bad = mw_trustm_write(d, 0xF1D2, 0, (const uint8_t *)"child", 5, true) != MW_OK;
    mw_trustm_close(d);
    _exit(bad);
  }
  for (int i = 0; i < per; i++) CHECK_INT(mw_trustm_counter_add(a, 0xE120, 1), MW_OK);
  int status = -1;
  CHECK_INT(waitpid(pid, &status, 0), pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  uint32_t v, t;
  CHECK_INT(mw_trustm_counter_read(a, 0xE120, &v, &t), MW_OK);
  CHECK_INT(v, 2 * per);
  uint8_t buf[8];
  size_t n;
  CHECK_INT(mw_trustm_read(a, 0xF1D2, 0, 5, buf, sizeof buf, &n), MW_OK);
  CHECK_MEM(buf, "child", 5);
  mw_trustm_close(a);
  cleanup();
}

static void damaged_file(void) {
  setup();
  FILE *f = fopen(path, "w");
  fputs("MWTRUSTMSIM 1\nobj ZZZZ meta - data -\n", f);
  fclose(f);
  mw_trustm_config_t c = {.sim = path};
  mw_trustm_t *d = NULL;
  CHECK_INT(mw_trustm_open(&c, &d), MW_ERR_PROTOCOL);
  CHECK(d == NULL);
  f = fopen(path, "w");
  fputs("something else\n", f);
  fclose(f);
  CHECK_INT(mw_trustm_open(&c, &d), MW_ERR_PROTOCOL);
  mw_trustm_sim_t *s = NULL;
  mw_trustm_sim_config_t sc = {.state_file = "/nonexistent-dir/chip.state"};
  CHECK_INT(mw_trustm_sim_create(&sc, &s), MW_ERR_IO);
  cleanup();
}

static const mw_test_case_t cases[] = {MW_TEST(two_handles), MW_TEST(two_processes), MW_TEST(damaged_file)};

int main(int argc, char **argv) {
  mw_log_set_level(getenv("TRUSTM_DEBUG") ? MW_LOG_DEBUG : MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
