/*
** A token key as an OpenSSL EVP_PKEY: a public-only EC_KEY (or RSA) whose method's
** private operation calls C_Sign, so libssl, libmosquitto above it, and mw_csr_build can
** use it while the private key stays in the token.
**
** OpenSSL 3.0 marks EC_KEY_METHOD and RSA_METHOD deprecated in favour of providers, but
** a provider needs its own keymgmt, signature and store plumbing, and the EVP_PKEY it
** produces cannot be handed to SSL_CTX_use_PrivateKey without a store URI. 3.0 still
** treats a key with a non-default method as a "foreign" legacy key and routes its
** signatures to that method (the same approach as runtime/trustm/mw_trustm_pkey.c), so
** this file, and only this one in runtime/pkcs11/, silences the deprecation warnings.
**
** Mechanisms:
**   EC   CKM_ECDSA on the digest; the token's raw r||s is turned into DER here.
**   RSA  PKCS#1 v1.5 (TLS 1.2 rsa_pkcs1_*, CSRs): OpenSSL hands us the DigestInfo with
**        RSA_PKCS1_PADDING -> CKM_RSA_PKCS, which pads on the token.
**        PSS (TLS 1.3 and TLS 1.2 rsa_pss_rsae_*): the legacy RSA path of OpenSSL 3.0
**        encodes PSS on the host and asks for a raw private operation (RSA_NO_PADDING),
**        with no way to learn the digest and salt it used, so this goes to CKM_RSA_X_509.
**        A token that refuses raw RSA cannot do TLS 1.3 with an RSA key through this
**        path; EC keys have no such limit.
*/
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "mw_p11_int.h"

typedef struct {
  mw_p11_t *t; /* holds a reference */
  CK_OBJECT_HANDLE key;
  size_t key_bytes;
  bool always_auth;
} keyref_t;

static int ec_index = -1, rsa_index = -1;
static EC_KEY_METHOD *ec_method;
static RSA_METHOD *rsa_method;

static void keyref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
  (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
  keyref_t *k = ptr;
  if (!k) return;
  mw__p11_unref(k->t);
  OPENSSL_free(k);
}

static void log_failure(keyref_t *k, const char *mech, CK_RV rv) {
  char e[200];
  mw__p11_fail_rv(rv, e, sizeof e, mech);
  MW_LOGW("pkcs11", "signature with the key in token '%s' failed: %s", k->t->label, e);
}

/* ---- EC ---- */

static ECDSA_SIG *token_ecdsa_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv, const BIGNUM *r,
                                  EC_KEY *ec) {
  (void)kinv, (void)r;
  keyref_t *k = EC_KEY_get_ex_data(ec, ec_index);
  if (!k || dlen <= 0) return NULL;
  /* ECDSA uses the leftmost key-size bytes of a longer digest; do it here, not every token does. */
  size_t n = (size_t)dlen > k->key_bytes ? k->key_bytes : (size_t)dlen;
  uint8_t raw[2 * 66];
  size_t rl = sizeof raw;
  CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
  CK_RV rv = mw__p11_sign(k->t, &k->key, &mech, k->always_auth, dgst, n, raw, &rl);
  if (rv != CKR_OK) {
    log_failure(k, "C_Sign CKM_ECDSA", rv);
    return NULL;
  }
  if (rl % 2 || rl == 0 || rl > 2 * k->key_bytes) {
    MW_LOGW("pkcs11", "token '%s' returned a %zu-byte ECDSA signature", k->t->label, rl);
    return NULL;
  }
  ECDSA_SIG *s = ECDSA_SIG_new();
  BIGNUM *br = BN_bin2bn(raw, (int)(rl / 2), NULL), *bs = BN_bin2bn(raw + rl / 2, (int)(rl / 2), NULL);
  if (!s || !br || !bs || !ECDSA_SIG_set0(s, br, bs)) {
    ECDSA_SIG_free(s);
    BN_free(br);
    BN_free(bs);
    return NULL;
  }
  return s;
}

static int token_ecdsa(int type, const unsigned char *dgst, int dlen, unsigned char *sig, unsigned int *siglen,
                       const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec) {
  (void)type;
  ECDSA_SIG *s = token_ecdsa_sig(dgst, dlen, kinv, r, ec);
  if (!s) return 0;
  unsigned char *p = sig;
  int n = i2d_ECDSA_SIG(s, &p);
  ECDSA_SIG_free(s);
  if (n <= 0) return 0;
  *siglen = (unsigned)n;
  return 1;
}

/* There is no private key to set up k for; refuse rather than fall back to software. */
static int token_sign_setup(EC_KEY *ec, BN_CTX *ctx, BIGNUM **kinv, BIGNUM **r) {
  (void)ec, (void)ctx, (void)kinv, (void)r;
  return 0;
}

/* ---- RSA ---- */

static int token_rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa, int padding) {
  keyref_t *k = RSA_get_ex_data(rsa, rsa_index);
  if (!k || flen <= 0) return -1;
  CK_MECHANISM mech = {padding == RSA_PKCS1_PADDING ? CKM_RSA_PKCS : CKM_RSA_X_509, NULL, 0};
  if (padding != RSA_PKCS1_PADDING && padding != RSA_NO_PADDING) {
    MW_LOGW("pkcs11", "RSA padding %d is not supported with a token key", padding);
    return -1;
  }
  size_t n = (size_t)RSA_size(rsa);
  CK_RV rv = mw__p11_sign(k->t, &k->key, &mech, k->always_auth, from, (size_t)flen, to, &n);
  if (rv != CKR_OK) {
    log_failure(k, padding == RSA_PKCS1_PADDING ? "C_Sign CKM_RSA_PKCS" : "C_Sign CKM_RSA_X_509 (for PSS)", rv);
    return -1;
  }
  return (int)n;
}

/* Decryption with a TLS key is never needed (no RSA key exchange); refuse it. */
static int token_rsa_priv_dec(int flen, const unsigned char *from, unsigned char *to, RSA *rsa, int padding) {
  (void)flen, (void)from, (void)to, (void)rsa, (void)padding;
  return -1;
}

/* ---- methods, created once and kept for the process (keys refer to them until freed) ---- */

static void make_methods(void) {
  ec_index = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, keyref_free);
  rsa_index = RSA_get_ex_new_index(0, NULL, NULL, NULL, keyref_free);
  if (ec_index < 0 || rsa_index < 0) return;
  ec_method = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
  if (ec_method) EC_KEY_METHOD_set_sign(ec_method, token_ecdsa, token_sign_setup, token_ecdsa_sig);
  rsa_method = RSA_meth_dup(RSA_PKCS1_OpenSSL());
  if (rsa_method) {
    RSA_meth_set1_name(rsa_method, "moonwire PKCS#11 token key");
    RSA_meth_set_priv_enc(rsa_method, token_rsa_priv_enc);
    RSA_meth_set_priv_dec(rsa_method, token_rsa_priv_dec);
    /* The private key is elsewhere: no blinding or consistency checks on missing d. */
    RSA_meth_set_flags(rsa_method, RSA_meth_get_flags(rsa_method) | RSA_FLAG_EXT_PKEY);
  }
}

static bool init_methods(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_methods);
  return ec_method && rsa_method;
}

static keyref_t *new_ref(mw_p11_t *t, CK_OBJECT_HANDLE key, size_t key_bytes) {
  keyref_t *k = OPENSSL_zalloc(sizeof *k);
  if (!k) return NULL;
  k->t = t;
  k->key = key;
  k->key_bytes = key_bytes;
  CK_BBOOL v = 0;
  CK_ATTRIBUTE a = {CKA_ALWAYS_AUTHENTICATE, &v, sizeof v};
  k->always_auth = t->f->C_GetAttributeValue(t->session, key, &a, 1) == CKR_OK && v;
  mw__p11_ref(t);
  return k;
}

static EVP_PKEY *ec_pkey(mw_p11_t *t, CK_OBJECT_HANDLE key, EVP_PKEY *pub) {
  const EC_KEY *src = EVP_PKEY_get0_EC_KEY(pub); /* a provider key is exported to a cached legacy copy */
  if (!src || !EC_KEY_get0_public_key(src)) return NULL;
  EC_KEY *ec = EC_KEY_new();
  EVP_PKEY *pk = NULL;
  keyref_t *k = NULL;
  if (!ec || !EC_KEY_set_group(ec, EC_KEY_get0_group(src)) || !EC_KEY_set_public_key(ec, EC_KEY_get0_public_key(src)))
    goto fail;
  k = new_ref(t, key, (size_t)(EC_GROUP_order_bits(EC_KEY_get0_group(src)) + 7) / 8);
  if (!k) goto fail;
  if (!EC_KEY_set_ex_data(ec, ec_index, k)) {
    keyref_free(NULL, k, NULL, 0, 0, NULL);
    goto fail;
  }
  if (!EC_KEY_set_method(ec, ec_method)) goto fail;
  pk = EVP_PKEY_new();
  if (!pk || !EVP_PKEY_assign_EC_KEY(pk, ec)) goto fail;
  return pk;
fail:
  EVP_PKEY_free(pk); /* never owns ec here: assigning it is the last step */
  EC_KEY_free(ec);   /* frees k through the ex_data free callback once it is set */
  return NULL;
}

static EVP_PKEY *rsa_pkey(mw_p11_t *t, CK_OBJECT_HANDLE key, EVP_PKEY *pub) {
  BIGNUM *n = NULL, *e = NULL;
  if (!EVP_PKEY_get_bn_param(pub, "n", &n) || !EVP_PKEY_get_bn_param(pub, "e", &e)) {
    BN_free(n);
    BN_free(e);
    return NULL;
  }
  RSA *rsa = RSA_new_method(NULL);
  EVP_PKEY *pk = NULL;
  keyref_t *k = NULL;
  if (!rsa || !RSA_set_method(rsa, rsa_method) || !RSA_set0_key(rsa, n, e, NULL)) {
    BN_free(n);
    BN_free(e);
    goto fail;
  }
  k = new_ref(t, key, (size_t)RSA_size(rsa));
  if (!k) goto fail;
  if (!RSA_set_ex_data(rsa, rsa_index, k)) {
    keyref_free(NULL, k, NULL, 0, 0, NULL);
    goto fail;
  }
  pk = EVP_PKEY_new();
  if (!pk || !EVP_PKEY_assign_RSA(pk, rsa)) goto fail;
  return pk;
fail:
  EVP_PKEY_free(pk);
  RSA_free(rsa);
  return NULL;
}

mw_status_t mw_p11_pkey(mw_p11_t *t, EVP_PKEY *pub, EVP_PKEY **out, char *err, size_t errlen) {
  *out = NULL;
  CK_OBJECT_HANDLE key;
  mw_status_t st = mw__p11_find_key(t, &key, err, errlen);
  if (st != MW_OK) return st;
  EVP_PKEY *own = NULL;
  if (!pub) {
    if ((st = mw_p11_pubkey(t, &own, err, errlen)) != MW_OK) return st;
    pub = own;
  }
  if (!init_methods()) {
    EVP_PKEY_free(own);
    return MW_ERR_NOMEM;
  }
  EVP_PKEY *pk = NULL;
  int id = EVP_PKEY_get_base_id(pub);
  if (id == EVP_PKEY_EC) pk = ec_pkey(t, key, pub);
  else if (id == EVP_PKEY_RSA) pk = rsa_pkey(t, key, pub);
  EVP_PKEY_free(own);
  if (!pk) {
    snprintf(err, errlen, "the key in token '%s' is neither an EC nor an RSA key OpenSSL can use", t->label);
    return MW_ERR_UNSUPPORTED;
  }
  *out = pk;
  return MW_OK;
}
