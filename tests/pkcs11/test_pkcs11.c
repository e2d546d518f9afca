/*
** PKCS#11: the URI parser, and keys in a real SoftHSM2 token (a token store of its own in
** a temp dir, initialised here through C_InitToken/C_InitPIN): generation inside the
** token, what the token reports about the key, TLS handshakes over memory BIOs whose
** client signature is a C_Sign (EC P-256/P-384, RSA with PKCS#1 v1.5 and PSS), a lost
** session, a wrong PIN, and the handle closed before the SSL_CTX.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "mw_csr.h"
#include "mw_keyref.h"
#include "mw_log.h"
#include "mw_p11_int.h"
#include "tls_test_util.h"

#define PIN "4321"
static char dir[64], conf[128];
static bool have_softhsm;

/* ---- URI ---- */

static void uri_parse(void) {
  mw_p11_uri_t u;
  char why[256];
  CHECK_INT(mw_p11_uri_parse("pkcs11:token=My%20Token;object=tls;id=%01%FF;type=private?pin-value=12%3B4&module-path="
                             "/usr/lib/x.so",
                             &u, why, sizeof why),
            MW_OK);
  CHECK_STR(u.token, "My Token");
  CHECK_STR(u.object, "tls");
  CHECK_INT(u.id_len, 2);
  CHECK_INT(u.id[0], 0x01);
  CHECK_INT(u.id[1], 0xFF);
  CHECK_INT(u.type, MW_P11_TYPE_PRIVATE);
  CHECK_STR(u.pin_value, "12;4");
  CHECK_STR(u.module_path, "/usr/lib/x.so");
  CHECK(u.has & MW_P11_HAS_PIN_VALUE);
  /* the lenient form: query attributes in the path */
  CHECK_INT(mw_p11_uri_parse("pkcs11:token=t;object=o;pin-source=/run/pin;slot-id=7;x-vendor=1", &u, why, sizeof why),
            MW_OK);
  CHECK_STR(u.pin_source, "/run/pin");
  CHECK_INT(u.slot_id, 7);
  CHECK(u.has & MW_P11_HAS_SLOT_ID);
  CHECK_INT(mw_p11_uri_parse("PKCS11:", &u, why, sizeof why), MW_OK);
  CHECK_INT(u.has, 0);
  static const struct {
    const char *uri, *why;
  } bad[] = {
      {"pkcs11:objekt=x", "unknown attribute 'objekt'"},
      {"pkcs11:object=a;object=b", "'object' given twice"},
      {"pkcs11:object=a%2", "bad percent-encoding"},
      {"pkcs11:object=a b", "must be %-encoded"},
      {"pkcs11:id=%zz", "bad percent-encoding"},
      {"pkcs11:slot-id=x", "slot-id must be a decimal number"},
      {"pkcs11:type=key", "type must be"},
      {"pkcs11:object=a;;id=%01", "empty attribute"},
      {"pkcs11:object", "not name=value"},
      {"pkcs11:token=%00x", "NUL byte"},
      {"pkcs11:object=o?pin-value=1&pin-source=/f", "not both"},
      {"pkcs11:object=o?module-name=softhsm2", "module-path"},
      {"pkcs11:token=0123456789012345678901234567890123", "longer than 32 bytes"},
      {"file:x", "starts with 'pkcs11:'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why[0] = 0;
    CHECK_INT(mw_p11_uri_parse(bad[i].uri, &u, why, sizeof why), MW_ERR_INVALID);
    if (!strstr(why, bad[i].why)) fprintf(stderr, "  %s -> %s\n", bad[i].uri, why);
    CHECK(strstr(why, bad[i].why) != NULL);
    CHECK_INT(u.has, 0);
  }
  /* a broken PIN is reported without its value */
  CHECK_INT(mw_p11_uri_parse("pkcs11:object=o?pin-value=se cret", &u, why, sizeof why), MW_ERR_INVALID);
  CHECK(!strstr(why, "se cret") && !strstr(why, "cret"));
}

static void uri_redact_and_format(void) {
  char out[256];
  mw_p11_uri_redact("pkcs11:token=t;pin-value=1234;object=o?pin-value=5678&module-path=/m", out, sizeof out);
  CHECK_STR(out, "pkcs11:token=t;pin-value=***;object=o?pin-value=***&module-path=/m");
  mw_p11_uri_redact("pkcs11:pin-value=1", out, sizeof out);
  CHECK_STR(out, "pkcs11:pin-value=***");
  mw_p11_uri_redact("certs/pin-value=1.key", out, sizeof out); /* not a URI: unchanged */
  CHECK_STR(out, "certs/pin-value=1.key");
  mw_p11_uri_redact("pkcs11:token=t;pin-value=1234", out, 12); /* truncated, never a PIN */
  CHECK(!strstr(out, "1234"));
  mw_p11_uri_redact("pkcs11:token=t;pin-value=1234", out, 26); /* no room for the whole mask: none of it */
  CHECK_STR(out, "pkcs11:token=t;");
  mw_p11_uri_redact("pkcs11:token=t;pin-value=1234", out, 29);
  CHECK_STR(out, "pkcs11:token=t;pin-value=***");
  const uint8_t id[] = {0x00, 0xAB};
  mw_p11_uri_format("my token", "a/b", id, 2, MW_P11_TYPE_PRIVATE, out, sizeof out);
  CHECK_STR(out, "pkcs11:token=my%20token;object=a%2Fb;id=%00%AB;type=private");
  mw_p11_uri_t u;
  char why[128];
  CHECK_INT(mw_p11_uri_parse(out, &u, why, sizeof why), MW_OK);
  CHECK_STR(u.object, "a/b");
  CHECK_INT(u.id_len, 2);
  /* keyref: a pkcs11 URI is validated, and its errors hide the PIN */
  mw_keyref_t r;
  CHECK_INT(mw_keyref_parse("pkcs11:token=t?pin-value=777", &r, why, sizeof why), MW_ERR_INVALID);
  CHECK(strstr(why, "object= or id=") && !strstr(why, "777"));
  CHECK_INT(mw_keyref_parse("pkcs11:token=t;object=o;bogus=1?pin-value=777", &r, why, sizeof why), MW_ERR_INVALID);
  CHECK(strstr(why, "bogus") && !strstr(why, "777"));
}

/* ---- a SoftHSM2 token of our own ---- */

static void setup_token(void) {
  if (access(MW_P11_DEFAULT_MODULE, R_OK) != 0) {
    printf("skip: %s not installed\n", MW_P11_DEFAULT_MODULE);
    return;
  }
  snprintf(dir, sizeof dir, "/tmp/mw-p11-test-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  char tokens[100];
  snprintf(tokens, sizeof tokens, "%s/tokens", dir);
  CHECK(mkdir(tokens, 0700) == 0);
  snprintf(conf, sizeof conf, "%s/softhsm2.conf", dir);
  FILE *f = fopen(conf, "w");
  fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens);
  fclose(f);
  setenv("SOFTHSM2_CONF", conf, 1);
  /* C_InitToken on the free slot, then the user PIN, with the module's own functions. */
  mw_p11_module_t *m;
  char err[256];
  CHECK_INT(mw__p11_module_get(MW_P11_DEFAULT_MODULE, &m, err, sizeof err), MW_OK);
  CK_SLOT_ID slots[8];
  CK_ULONG n = 8;
  CHECK_INT(m->f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  CHECK(n >= 1);
  CK_UTF8CHAR label[32];
  memset(label, ' ', sizeof label);
  memcpy(label, "unit", 4);
  CHECK_INT(m->f->C_InitToken(slots[0], (CK_UTF8CHAR *)"so-pin", 6, label), CKR_OK);
  /* the token moved to a new slot id: find it by label */
  n = 8;
  CHECK_INT(m->f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
  CK_SLOT_ID slot = 0;
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    if (m->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !memcmp(ti.label, label, 32)) slot = slots[i];
  }
  CK_SESSION_HANDLE s;
  CHECK_INT(m->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
  CHECK_INT(m->f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)"so-pin", 6), CKR_OK);
  CHECK_INT(m->f->C_InitPIN(s, (CK_UTF8CHAR *)PIN, 4), CKR_OK);
  m->f->C_Logout(s);
  m->f->C_CloseSession(s);
  mw__p11_module_put(m); /* finalises: the tests below start from a fresh module */
  have_softhsm = true;
}

static mw_p11_t *open_rw(const char *object) {
  char uri[256], err[512];
  snprintf(uri, sizeof uri, "pkcs11:token=unit;object=%s?pin-value=" PIN, object);
  mw_p11_open_opts_t o = {.rw = true};
  mw_p11_t *t = NULL;
  mw_status_t st = mw_p11_open(uri, &o, &t, err, sizeof err);
  if (st != MW_OK) fprintf(stderr, "open %s: %s\n", object, err);
  CHECK_INT(st, MW_OK);
  return t;
}

/* Client context with a certificate for cert_pub and the token key of t. */
static SSL_CTX *client_ctx(mw_p11_t *t, EVP_PKEY *cert_pub) {
  EVP_PKEY *pk = NULL;
  char err[256];
  CHECK_INT(mw_p11_pkey(t, cert_pub, &pk, err, sizeof err), MW_OK);
  SSL_CTX *ctx = ttu_client_ctx(cert_pub, pk);
  EVP_PKEY_free(pk);
  return ctx;
}

static void ec_key_in_token(void) {
  if (!have_softhsm) return;
  mw_p11_t *t = open_rw("ec256");
  if (!t) return;
  EVP_PKEY *pub = NULL;
  mw_p11_keyinfo_t ki;
  char err[512];
  mw_p11_keygen_t g = {.curve = "P-256"};
  CHECK_INT(mw_p11_keygen(t, &g, &pub, &ki, err, sizeof err), MW_OK);
  CHECK(pub != NULL);
  CHECK_INT(ki.type, MW_P11_KEY_EC);
  CHECK_STR(ki.curve, "P-256");
  CHECK(ki.sensitive && !ki.extractable && ki.never_extractable && ki.always_sensitive && ki.local && ki.can_sign);
  CHECK(!ki.value_readable);
  CHECK_INT(ki.id_len, 16);
  CHECK(strstr(ki.uri, "object=ec256;id=%") != NULL && !strstr(ki.uri, PIN));
  /* the same key again: refused */
  EVP_PKEY *again = NULL;
  CHECK_INT(mw_p11_keygen(t, &g, &again, NULL, err, sizeof err), MW_ERR_CONFLICT);
  /* its public key read back equals the one from generation */
  EVP_PKEY *back = NULL;
  CHECK_INT(mw_p11_pubkey(t, &back, err, sizeof err), MW_OK);
  CHECK(back && EVP_PKEY_eq(back, pub) == 1);
  EVP_PKEY_free(back);

  SSL_CTX *sctx = ttu_server_ctx(), *cctx = client_ctx(t, pub);
  CHECK(ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  CHECK(ttu_handshake(cctx, sctx, TLS1_2_VERSION, NULL));
  mw_p11_stats_t s;
  mw_p11_stats(t, &s);
  CHECK_INT(s.signs, 2); /* one C_Sign per handshake */
  /* a CSR signed in the token verifies */
  EVP_PKEY *key = NULL;
  CHECK_INT(mw_p11_pkey(t, NULL, &key, err, sizeof err), MW_OK);
  mw_csr_subject_t subj = {.cn = "car-09", .o = "Moonwire"};
  char *pem = NULL, cn[64];
  CHECK_INT(mw_csr_build(key, &subj, &pem, err, sizeof err), MW_OK);
  CHECK_INT(mw_csr_verify(pem, pem ? strlen(pem) : 0, cn, sizeof cn, err, sizeof err), MW_OK);
  CHECK_STR(cn, "car-09");
  free(pem);
  EVP_PKEY_free(key);
  /* the token lost our session (as when it is unplugged and back): one reopen, then it works */
  t->f->C_CloseSession(t->session);
  CHECK(ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  mw_p11_stats(t, &s);
  CHECK_INT(s.relogins, 1);
  /* the session outlives the handle while the SSL_CTX holds the key */
  mw_p11_close(t);
  CHECK(ttu_handshake(cctx, sctx, 0, NULL));
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
}

static void p384_and_wrong_key(void) {
  if (!have_softhsm) return;
  mw_p11_t *t = open_rw("ec384"), *t2 = open_rw("other");
  if (!t || !t2) return;
  EVP_PKEY *pub = NULL, *pub2 = NULL;
  char err[512];
  mw_p11_keygen_t g = {.curve = "P-384"};
  CHECK_INT(mw_p11_keygen(t, &g, &pub, NULL, err, sizeof err), MW_OK);
  CHECK_INT(mw_p11_keygen(t2, &g, &pub2, NULL, err, sizeof err), MW_OK);
  SSL_CTX *sctx = ttu_server_ctx(), *cctx = client_ctx(t, pub);
  CHECK(ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  SSL_CTX_free(cctx);
  /* a certificate for one key, signatures from another: the server refuses */
  cctx = client_ctx(t2, pub);
  CHECK(!ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  EVP_PKEY_free(pub2);
  mw_p11_close(t);
  mw_p11_close(t2);
}

static void rsa_key_in_token(void) {
  if (!have_softhsm) return;
  mw_p11_t *t = open_rw("rsa");
  if (!t) return;
  EVP_PKEY *pub = NULL;
  mw_p11_keyinfo_t ki;
  char err[512];
  mw_p11_keygen_t g = {.rsa_bits = 2048};
  CHECK_INT(mw_p11_keygen(t, &g, &pub, &ki, err, sizeof err), MW_OK);
  CHECK_INT(ki.type, MW_P11_KEY_RSA);
  CHECK_INT(ki.bits, 2048);
  CHECK(ki.sensitive && !ki.extractable && !ki.value_readable);
  SSL_CTX *sctx = ttu_server_ctx(), *cctx = client_ctx(t, pub);
  CHECK(ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));                  /* PSS: CKM_RSA_X_509 */
  CHECK(ttu_handshake(cctx, sctx, TLS1_2_VERSION, "RSA+SHA256"));          /* PKCS#1 v1.5: CKM_RSA_PKCS */
  CHECK(ttu_handshake(cctx, sctx, TLS1_2_VERSION, "rsa_pss_rsae_sha256")); /* PSS in TLS 1.2 */
  mw_p11_stats_t s;
  mw_p11_stats(t, &s);
  CHECK_INT(s.signs, 3);
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  mw_p11_close(t);
}

static void errors(void) {
  if (!have_softhsm) return;
  char err[512];
  mw_p11_t *t = NULL;
  mw_p11_open_opts_t o = {0};
  CHECK_INT(mw_p11_open("pkcs11:token=unit;object=ec256?pin-value=0000", &o, &t, err, sizeof err), MW_ERR_REFUSED);
  CHECK(strstr(err, "CKR_PIN_INCORRECT (wrong PIN)") && !strstr(err, "0000"));
  CHECK_INT(mw_p11_open("pkcs11:token=nope;object=x", &o, &t, err, sizeof err), MW_ERR_NOT_FOUND);
  CHECK(strstr(err, "no token 'nope'") && strstr(err, "'unit'"));
  CHECK_INT(mw_p11_open("pkcs11:object=x?module-path=/nonexistent.so", &o, &t, err, sizeof err), MW_ERR_IO);
  CHECK(strstr(err, "cannot load the PKCS#11 module /nonexistent.so") != NULL);
  char pinfile[128];
  snprintf(pinfile, sizeof pinfile, "%s/pin", dir);
  FILE *f = fopen(pinfile, "w");
  fputs(PIN "\r\n", f);
  fclose(f);
  char uri[256];
  snprintf(uri, sizeof uri, "pkcs11:token=unit;object=missing?pin-source=file:%s", pinfile);
  CHECK_INT(mw_p11_open(uri, &o, &t, err, sizeof err), MW_OK);
  EVP_PKEY *k = NULL;
  CHECK_INT(mw_p11_pkey(t, NULL, &k, err, sizeof err), MW_ERR_NOT_FOUND);
  CHECK(strstr(err, "no private key with object='missing' in token 'unit'") != NULL);
  /* keygen on a read-only session */
  mw_p11_keygen_t g = {0};
  CHECK_INT(mw_p11_keygen(t, &g, &k, NULL, err, sizeof err), MW_ERR_STATE);
  mw_p11_close(t);
  /* without login the private key is invisible, and the message says why */
  CHECK_INT(mw_p11_open("pkcs11:token=unit;object=ec256", &o, &t, err, sizeof err), MW_OK);
  CHECK_INT(mw_p11_pkey(t, NULL, &k, err, sizeof err), MW_ERR_NOT_FOUND);
  CHECK(strstr(err, "not logged in") != NULL);
  mw_p11_close(t);
  snprintf(uri, sizeof uri, "pkcs11:token=unit;object=x?pin-source=%s/none", dir);
  CHECK_INT(mw_p11_open(uri, &o, &t, err, sizeof err), MW_ERR_INVALID);
  CHECK(strstr(err, "pin-source") != NULL);
}

static void teardown(void) {
  ttu_teardown();
  if (*dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
  }
}

static const mw_test_case_t cases[] = {MW_TEST(uri_parse),        MW_TEST(uri_redact_and_format),
                                       MW_TEST(setup_token),      MW_TEST(ec_key_in_token),
                                       MW_TEST(p384_and_wrong_key), MW_TEST(rsa_key_in_token),
                                       MW_TEST(errors),           MW_TEST(teardown)};

int main(int argc, char **argv) {
  mw_log_set_level(getenv("P11_DEBUG") ? MW_LOG_DEBUG : MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
