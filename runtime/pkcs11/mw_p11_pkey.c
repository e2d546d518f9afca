/*
** A token key as an OpenSSL EVP_PKEY (mw_hwkey): its private operation is a C_Sign, so
** libssl, libmosquitto above it, and mw_csr_build can use it while the private key stays
** in the token.
**
** Mechanisms:
**   EC   CKM_ECDSA on the digest; the token's raw r||s goes back to mw_hwkey as it is.
**   RSA  PKCS#1 v1.5: the DigestInfo -> CKM_RSA_PKCS, which pads on the token.
**        PSS: OpenSSL 3.0's legacy RSA path has encoded it on the host already (see
**        mw_hwkey.c), so this goes to CKM_RSA_X_509. A token that refuses raw RSA cannot
**        do TLS 1.3 with an RSA key through this path; EC keys have no such limit.
*/
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "mw_hwkey.h"
#include "mw_log.h"
#include "mw_p11_int.h"

typedef struct {
  mw_p11_t *t; /* holds a reference */
  CK_OBJECT_HANDLE key;
  bool always_auth;
} tokenkey_t;

static const struct {
  CK_MECHANISM_TYPE mech;
  const char *what;
} mechs[] = {
    [MW_HWKEY_ECDSA] = {CKM_ECDSA, "C_Sign CKM_ECDSA"},
    [MW_HWKEY_RSA_PKCS1] = {CKM_RSA_PKCS, "C_Sign CKM_RSA_PKCS"},
    [MW_HWKEY_RSA_RAW] = {CKM_RSA_X_509, "C_Sign CKM_RSA_X_509 (for PSS)"},
};

static bool token_sign(void *ctx, mw_hwkey_op_t op, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len) {
  tokenkey_t *k = ctx;
  CK_MECHANISM mech = {mechs[op].mech, NULL, 0};
  /* An ECDSA signature lands in a buffer of the largest size first: a token that returns
     more than the key allows is named in the log rather than refused for the buffer. */
  uint8_t raw[2 * 66];
  bool ec = op == MW_HWKEY_ECDSA;
  size_t n = ec ? sizeof raw : *out_len;
  CK_RV rv = mw__p11_sign(k->t, &k->key, &mech, k->always_auth, in, in_len, ec ? raw : out, &n);
  if (rv != CKR_OK) {
    char e[200];
    mw__p11_fail_rv(rv, e, sizeof e, mechs[op].what);
    MW_LOGW("pkcs11", "signature with the key in token '%s' failed: %s", k->t->label, e);
    return false;
  }
  if (ec) {
    if (n % 2 || n == 0 || n > *out_len) {
      MW_LOGW("pkcs11", "token '%s' returned a %zu-byte ECDSA signature", k->t->label, n);
      return false;
    }
    memcpy(out, raw, n);
  }
  *out_len = n;
  return true;
}

static void token_free(void *ctx) {
  tokenkey_t *k = ctx;
  mw__p11_unref(k->t);
  OPENSSL_free(k);
}

static const mw_hwkey_ops_t token_ops = {token_sign, token_free, false};

static tokenkey_t *new_ref(mw_p11_t *t, CK_OBJECT_HANDLE key) {
  tokenkey_t *k = OPENSSL_zalloc(sizeof *k);
  if (!k) return NULL;
  k->t = t;
  k->key = key;
  CK_BBOOL v = 0;
  CK_ATTRIBUTE a = {CKA_ALWAYS_AUTHENTICATE, &v, sizeof v};
  k->always_auth = t->f->C_GetAttributeValue(t->session, key, &a, 1) == CKR_OK && v;
  mw__p11_ref(t);
  return k;
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
  tokenkey_t *k = new_ref(t, key);
  st = k ? mw_hwkey_new(pub, &token_ops, k, out) : MW_ERR_NOMEM;
  EVP_PKEY_free(own);
  if (st == MW_ERR_UNSUPPORTED)
    snprintf(err, errlen, "the key in token '%s' is neither an EC nor an RSA key OpenSSL can use", t->label);
  else if (st != MW_OK)
    snprintf(err, errlen, "no memory for the key in token '%s'", t->label);
  return st;
}
