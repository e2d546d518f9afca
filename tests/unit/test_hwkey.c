/*
** mw_hwkey with a software "hardware": the signer signs with a private key the test
** holds, so every path can be checked against OpenSSL's own verification: ECDSA with the
** signature as r||s and as DER, the digest cut to the key size, RSA PKCS#1 v1.5 and PSS,
** a signer that fails or answers nonsense, and when the context is freed.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "mw_hwkey.h"

typedef struct {
  EVP_PKEY *priv;
  int calls, frees;
  size_t last_in;
  mw_hwkey_op_t last_op;
  enum { GOOD, FAIL, ODD_LENGTH } mode;
} soft_t;

static bool der_to_rs(const uint8_t *der, size_t len, size_t half, uint8_t *out) {
  const unsigned char *p = der;
  ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)len);
  bool ok = s && BN_bn2binpad(ECDSA_SIG_get0_r(s), out, (int)half) > 0 &&
            BN_bn2binpad(ECDSA_SIG_get0_s(s), out + half, (int)half) > 0;
  ECDSA_SIG_free(s);
  return ok;
}

static bool soft_sign(void *ctx, mw_hwkey_op_t op, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len,
                      bool der) {
  soft_t *k = ctx;
  k->calls++;
  k->last_in = in_len;
  k->last_op = op;
  if (k->mode == FAIL) return false;
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k->priv, NULL);
  uint8_t sig[1024];
  size_t sl = sizeof sig;
  bool ok;
  if (op == MW_HWKEY_RSA_RAW) /* the bare private operation is what a raw decryption does */
    ok = EVP_PKEY_decrypt_init(c) == 1 && EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) == 1 &&
         EVP_PKEY_decrypt(c, sig, &sl, in, in_len) == 1;
  else
    ok = EVP_PKEY_sign_init(c) == 1 &&
         (op != MW_HWKEY_RSA_PKCS1 || EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1) &&
         EVP_PKEY_sign(c, sig, &sl, in, in_len) == 1;
  EVP_PKEY_CTX_free(c);
  if (!ok) return false;
  if (op == MW_HWKEY_ECDSA && !der) {
    size_t half = *out_len / 2;
    if (!der_to_rs(sig, sl, half, out)) return false;
    *out_len = k->mode == ODD_LENGTH ? 2 * half - 1 : 2 * half;
    return true;
  }
  if (sl > *out_len) return false;
  memcpy(out, sig, sl);
  *out_len = sl;
  return true;
}

static bool sign_rs(void *ctx, mw_hwkey_op_t op, const uint8_t *in, size_t n, uint8_t *out, size_t *out_len) {
  return soft_sign(ctx, op, in, n, out, out_len, false);
}
static bool sign_der(void *ctx, mw_hwkey_op_t op, const uint8_t *in, size_t n, uint8_t *out, size_t *out_len) {
  return soft_sign(ctx, op, in, n, out, out_len, true);
}
static void soft_free(void *ctx) { ((soft_t *)ctx)->frees++; }

static const mw_hwkey_ops_t rs_ops = {sign_rs, soft_free, false}, der_ops = {sign_der, soft_free, true};

static EVP_PKEY *public_half(EVP_PKEY *priv) {
  unsigned char *der = NULL;
  int n = i2d_PUBKEY(priv, &der);
  const unsigned char *p = der;
  EVP_PKEY *pub = n > 0 ? d2i_PUBKEY(NULL, &p, n) : NULL;
  OPENSSL_free(der);
  return pub;
}

/* Signs msg with key (pad: an RSA padding, 0 for the default) and verifies with pub. */
static bool sign_verify(EVP_PKEY *key, EVP_PKEY *pub, const EVP_MD *md, int pad) {
  static const unsigned char msg[] = "moonwire";
  unsigned char sig[1024];
  size_t sl = sizeof sig;
  EVP_MD_CTX *m = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pc = NULL;
  bool ok = EVP_DigestSignInit(m, &pc, md, NULL, key) == 1 && (!pad || EVP_PKEY_CTX_set_rsa_padding(pc, pad) == 1) &&
            EVP_DigestSign(m, sig, &sl, msg, sizeof msg) == 1;
  EVP_MD_CTX_free(m);
  if (!ok) {
    ERR_clear_error();
    return false;
  }
  m = EVP_MD_CTX_new();
  ok = EVP_DigestVerifyInit(m, &pc, md, NULL, pub) == 1 && (!pad || EVP_PKEY_CTX_set_rsa_padding(pc, pad) == 1) &&
       EVP_DigestVerify(m, sig, sl, msg, sizeof msg) == 1;
  EVP_MD_CTX_free(m);
  ERR_clear_error();
  return ok;
}

static void ec_curve(const char *curve, const EVP_MD *md, size_t key_bytes) {
  const mw_hwkey_ops_t *ops[] = {&rs_ops, &der_ops};
  for (int i = 0; i < 2; i++) {
    soft_t k = {.priv = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve)};
    EVP_PKEY *pub = public_half(k.priv), *hw = NULL;
    CHECK_INT(mw_hwkey_new(pub, ops[i], &k, &hw), MW_OK);
    CHECK(sign_verify(hw, pub, md, 0));
    CHECK_INT(k.calls, 1);
    CHECK_INT(k.last_op, MW_HWKEY_ECDSA);
    size_t dl = (size_t)EVP_MD_get_size(md);
    CHECK_INT(k.last_in, dl < key_bytes ? dl : key_bytes); /* a longer digest is cut to the key size */
    unsigned char *der = NULL;
    CHECK(i2d_PrivateKey(hw, &der) <= 0); /* nothing private on the host */
    OPENSSL_free(der);
    ERR_clear_error();
    CHECK_INT(k.frees, 0);
    EVP_PKEY_free(hw);
    CHECK_INT(k.frees, 1);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(k.priv);
  }
}

static void ec_keys(void) {
  ec_curve("P-256", EVP_sha256(), 32);
  ec_curve("P-384", EVP_sha512(), 48);
  ec_curve("P-521", EVP_sha256(), 66);
}

static void rsa_key(void) {
  /* 1024 bits: RSA key generation is slow under valgrind, and the size does not matter here */
  soft_t k = {.priv = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024)};
  EVP_PKEY *pub = public_half(k.priv), *hw = NULL;
  CHECK_INT(mw_hwkey_new(pub, &rs_ops, &k, &hw), MW_OK);
  CHECK(sign_verify(hw, pub, EVP_sha256(), RSA_PKCS1_PADDING));
  CHECK_INT(k.last_op, MW_HWKEY_RSA_PKCS1);
  CHECK(sign_verify(hw, pub, EVP_sha256(), RSA_PKCS1_PSS_PADDING));
  CHECK_INT(k.last_op, MW_HWKEY_RSA_RAW);
  CHECK_INT(k.last_in, 128);
  CHECK_INT(k.calls, 2);
  EVP_PKEY_free(hw);
  CHECK_INT(k.frees, 1);
  EVP_PKEY_free(pub);
  EVP_PKEY_free(k.priv);
}

static void signer_failures(void) {
  soft_t k = {.priv = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), .mode = FAIL};
  EVP_PKEY *pub = public_half(k.priv), *hw = NULL;
  CHECK_INT(mw_hwkey_new(pub, &rs_ops, &k, &hw), MW_OK);
  CHECK(!sign_verify(hw, pub, EVP_sha256(), 0));
  k.mode = ODD_LENGTH; /* half a signature is refused, not read past */
  CHECK(!sign_verify(hw, pub, EVP_sha256(), 0));
  k.mode = GOOD;
  CHECK(sign_verify(hw, pub, EVP_sha256(), 0));
  CHECK_INT(k.calls, 3);
  EVP_PKEY_free(hw);
  CHECK_INT(k.frees, 1);
  EVP_PKEY_free(pub);
  EVP_PKEY_free(k.priv);
}

/* A key type it cannot carry, or none: refused, and the context freed all the same. */
static void unsupported_keys(void) {
  soft_t k = {0};
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), *hw = (EVP_PKEY *)1;
  CHECK_INT(mw_hwkey_new(ed, &rs_ops, &k, &hw), MW_ERR_UNSUPPORTED);
  CHECK(hw == NULL);
  CHECK_INT(k.frees, 1);
  CHECK_INT(mw_hwkey_new(NULL, &rs_ops, &k, &hw), MW_ERR_UNSUPPORTED);
  CHECK_INT(k.frees, 2);
  CHECK_INT(k.calls, 0);
  EVP_PKEY_free(ed);
}

static const mw_test_case_t cases[] = {MW_TEST(ec_keys), MW_TEST(rsa_key), MW_TEST(signer_failures),
                                       MW_TEST(unsupported_keys)};

int main(int argc, char **argv) { return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }
