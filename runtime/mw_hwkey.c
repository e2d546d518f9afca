/*
** A public-only EC_KEY (or RSA) whose method's private operation calls a backend's sign
** function: the one place where the Trust M's and the PKCS#11 tokens' keys meet OpenSSL.
**
** OpenSSL 3.0 marks EC_KEY_METHOD and RSA_METHOD deprecated in favour of providers, but
** a provider needs its own keymgmt, signature and store plumbing, and the EVP_PKEY it
** produces cannot be handed to SSL_CTX_use_PrivateKey without a store URI. 3.0 still
** treats a key with a non-default method as a "foreign" legacy key and routes its
** signatures to that method, so this file, and only this one, silences the deprecation
** warnings.
**
** RSA: for PKCS#1 v1.5 (TLS 1.2 rsa_pkcs1_*, CSRs) OpenSSL hands the method the
** DigestInfo with RSA_PKCS1_PADDING, and the hardware pads. For PSS (TLS 1.3 and TLS 1.2
** rsa_pss_rsae_*) the legacy RSA path of OpenSSL 3.0 encodes PSS on the host and asks for
** a bare private operation (RSA_NO_PADDING), with no way to learn the digest and salt it
** used; so the signer is asked for MW_HWKEY_RSA_RAW.
*/
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "mw_hwkey.h"

#include <pthread.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/rsa.h>

#include "mw_log.h"

/* What a key's ex_data holds. */
typedef struct {
  const mw_hwkey_ops_t *ops;
  void *ctx;
  size_t key_bytes;
} hwref_t;

static int ec_index = -1, rsa_index = -1;
static EC_KEY_METHOD *ec_method;
static RSA_METHOD *rsa_method;

static void ref_release(hwref_t *h) {
  if (!h) return;
  h->ops->free(h->ctx);
  OPENSSL_free(h);
}

static void ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
  (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
  ref_release(ptr);
}

/* ---- EC ---- */

static ECDSA_SIG *rs_to_sig(const uint8_t *rs, size_t len) {
  ECDSA_SIG *s = ECDSA_SIG_new();
  BIGNUM *br = BN_bin2bn(rs, (int)(len / 2), NULL), *bs = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
  if (!s || !br || !bs || !ECDSA_SIG_set0(s, br, bs)) {
    ECDSA_SIG_free(s);
    BN_free(br);
    BN_free(bs);
    return NULL;
  }
  return s;
}

static ECDSA_SIG *hw_ecdsa_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec) {
  (void)kinv, (void)r;
  hwref_t *h = EC_KEY_get_ex_data(ec, ec_index);
  if (!h || dlen <= 0) return NULL;
  /* ECDSA uses the leftmost key-size bytes of a longer digest; do it here, not all hardware does. */
  size_t n = (size_t)dlen > h->key_bytes ? h->key_bytes : (size_t)dlen;
  uint8_t sig[MW_HWKEY_EC_SIG_MAX];
  size_t cap = h->ops->ec_der || 2 * h->key_bytes > sizeof sig ? sizeof sig : 2 * h->key_bytes, sl = cap;
  if (!h->ops->sign(h->ctx, MW_HWKEY_ECDSA, dgst, n, sig, &sl) || sl == 0 || sl > cap) return NULL;
  if (h->ops->ec_der) {
    const unsigned char *p = sig;
    return d2i_ECDSA_SIG(NULL, &p, (long)sl);
  }
  return sl % 2 ? NULL : rs_to_sig(sig, sl);
}

static int hw_ecdsa(int type, const unsigned char *dgst, int dlen, unsigned char *sig, unsigned int *siglen,
                    const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec) {
  (void)type;
  ECDSA_SIG *s = hw_ecdsa_sig(dgst, dlen, kinv, r, ec);
  if (!s) return 0;
  unsigned char *p = sig;
  int n = i2d_ECDSA_SIG(s, &p);
  ECDSA_SIG_free(s);
  if (n <= 0) return 0;
  *siglen = (unsigned)n;
  return 1;
}

/* There is no private key to set up k for; refuse rather than fall back to software. */
static int hw_sign_setup(EC_KEY *ec, BN_CTX *ctx, BIGNUM **kinv, BIGNUM **r) {
  (void)ec, (void)ctx, (void)kinv, (void)r;
  return 0;
}

/* ---- RSA ---- */

static int hw_rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa, int padding) {
  hwref_t *h = RSA_get_ex_data(rsa, rsa_index);
  if (!h || flen <= 0) return -1;
  if (padding != RSA_PKCS1_PADDING && padding != RSA_NO_PADDING) {
    MW_LOGW("hwkey", "RSA padding %d is not supported with a key in hardware", padding);
    return -1;
  }
  size_t n = (size_t)RSA_size(rsa);
  mw_hwkey_op_t op = padding == RSA_PKCS1_PADDING ? MW_HWKEY_RSA_PKCS1 : MW_HWKEY_RSA_RAW;
  if (!h->ops->sign(h->ctx, op, from, (size_t)flen, to, &n) || n > (size_t)RSA_size(rsa)) return -1;
  return (int)n;
}

/* Decryption with a TLS key is never needed (no RSA key exchange); refuse it. */
static int hw_rsa_priv_dec(int flen, const unsigned char *from, unsigned char *to, RSA *rsa, int padding) {
  (void)flen, (void)from, (void)to, (void)rsa, (void)padding;
  return -1;
}

/* ---- methods, created once and kept for the process (keys refer to them until freed) ---- */

static void make_methods(void) {
  ec_index = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, ref_free);
  rsa_index = RSA_get_ex_new_index(0, NULL, NULL, NULL, ref_free);
  if (ec_index < 0 || rsa_index < 0) return;
  ec_method = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
  if (ec_method) EC_KEY_METHOD_set_sign(ec_method, hw_ecdsa, hw_sign_setup, hw_ecdsa_sig);
  rsa_method = RSA_meth_dup(RSA_PKCS1_OpenSSL());
  if (rsa_method) {
    RSA_meth_set1_name(rsa_method, "moonwire hardware key");
    RSA_meth_set_priv_enc(rsa_method, hw_rsa_priv_enc);
    RSA_meth_set_priv_dec(rsa_method, hw_rsa_priv_dec);
    /* The private key is elsewhere: no blinding or consistency checks on missing d. */
    RSA_meth_set_flags(rsa_method, RSA_meth_get_flags(rsa_method) | RSA_FLAG_EXT_PKEY);
  }
}

static bool init_methods(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_methods);
  return ec_method && rsa_method;
}

/* Each takes h: on failure it is released with whatever was built. */

static EVP_PKEY *ec_pkey(EVP_PKEY *pub, hwref_t *h) {
  const EC_KEY *src = EVP_PKEY_get0_EC_KEY(pub); /* a provider key is exported to a cached legacy copy */
  EC_KEY *ec = src && EC_KEY_get0_public_key(src) ? EC_KEY_new() : NULL;
  EVP_PKEY *pk = NULL;
  if (!ec || !EC_KEY_set_group(ec, EC_KEY_get0_group(src)) || !EC_KEY_set_public_key(ec, EC_KEY_get0_public_key(src)))
    goto fail;
  h->key_bytes = (size_t)(EC_GROUP_order_bits(EC_KEY_get0_group(src)) + 7) / 8;
  if (!EC_KEY_set_ex_data(ec, ec_index, h)) goto fail;
  h = NULL; /* ec owns it now: freeing ec frees it */
  if (!EC_KEY_set_method(ec, ec_method)) goto fail;
  pk = EVP_PKEY_new();
  if (!pk || !EVP_PKEY_assign_EC_KEY(pk, ec)) goto fail;
  return pk;
fail:
  EVP_PKEY_free(pk); /* never owns ec here: assigning it is the last step */
  EC_KEY_free(ec);
  ref_release(h);
  return NULL;
}

static EVP_PKEY *rsa_pkey(EVP_PKEY *pub, hwref_t *h) {
  BIGNUM *n = NULL, *e = NULL;
  RSA *rsa = NULL;
  EVP_PKEY *pk = NULL;
  if (!EVP_PKEY_get_bn_param(pub, "n", &n) || !EVP_PKEY_get_bn_param(pub, "e", &e)) goto fail;
  rsa = RSA_new_method(NULL);
  if (!rsa || !RSA_set_method(rsa, rsa_method) || !RSA_set0_key(rsa, n, e, NULL)) goto fail;
  n = e = NULL; /* rsa owns them now */
  h->key_bytes = (size_t)RSA_size(rsa);
  if (!RSA_set_ex_data(rsa, rsa_index, h)) goto fail;
  h = NULL;
  pk = EVP_PKEY_new();
  if (!pk || !EVP_PKEY_assign_RSA(pk, rsa)) goto fail;
  return pk;
fail:
  EVP_PKEY_free(pk);
  RSA_free(rsa);
  BN_free(n);
  BN_free(e);
  ref_release(h);
  return NULL;
}

mw_status_t mw_hwkey_new(EVP_PKEY *pub, const mw_hwkey_ops_t *ops, void *ctx, EVP_PKEY **out) {
  *out = NULL;
  hwref_t *h = init_methods() ? OPENSSL_zalloc(sizeof *h) : NULL;
  if (!h) {
    ops->free(ctx);
    return MW_ERR_NOMEM;
  }
  h->ops = ops;
  h->ctx = ctx;
  int id = pub ? EVP_PKEY_get_base_id(pub) : EVP_PKEY_NONE;
  if (id == EVP_PKEY_EC) *out = ec_pkey(pub, h);
  else if (id == EVP_PKEY_RSA) *out = rsa_pkey(pub, h);
  else ref_release(h);
  return *out ? MW_OK : MW_ERR_UNSUPPORTED;
}
