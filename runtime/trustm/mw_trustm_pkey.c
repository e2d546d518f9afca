/*
** The chip's key as an OpenSSL EVP_PKEY: a public-only EC_KEY with an EC_KEY_METHOD
** whose sign callbacks run CalcSign, so libssl (and libmosquitto above it) can use it
** as the TLS client key while the private key stays in the chip.
**
** OpenSSL 3.0 marks EC_KEY_METHOD deprecated in favour of providers, but a provider
** needs its own keymgmt, signature and store plumbing, and the EVP_PKEY it produces
** cannot be handed to SSL_CTX_use_PrivateKey without a store URI. 3.0 still treats
** an EC_KEY with a non-default method as a "foreign" legacy key and routes its
** signatures to that method, so this file (and only this file) silences the
** deprecation warnings.
*/
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <pthread.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "mw_trustm_int.h"

typedef struct {
  mw_trustm_t *dev; /* holds a reference */
  uint16_t oid;
  size_t key_bytes;
} keyref_t;

static int ex_index = -1;
static EC_KEY_METHOD *method;

static void keyref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
  (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
  keyref_t *k = ptr;
  if (!k) return;
  mw__trustm_unref(k->dev);
  OPENSSL_free(k);
}

/* ECDSA_SIG via the chip; the digest is truncated to the key size as ECDSA specifies. */
static ECDSA_SIG *chip_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv, const BIGNUM *r,
                                EC_KEY *ec) {
  (void)kinv, (void)r;
  keyref_t *k = EC_KEY_get_ex_data(ec, ex_index);
  if (!k || dlen <= 0) return NULL;
  size_t n = (size_t)dlen > k->key_bytes ? k->key_bytes : (size_t)dlen;
  uint8_t raw[2 * 70], der[MW_TRUSTM_SIG_DER_MAX];
  size_t rl, dl;
  if (mw__trustm_sign_raw(k->dev, k->oid, dgst, n, raw, sizeof raw, &rl) != MW_OK) {
    MW_LOGW("trustm", "TLS signature failed: %s", mw_trustm_last_error(k->dev));
    return NULL;
  }
  if (mw_trustm_sig_to_der(raw, rl, der, sizeof der, &dl) != MW_OK) return NULL;
  const unsigned char *p = der;
  return d2i_ECDSA_SIG(NULL, &p, (long)dl);
}

static int chip_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig, unsigned int *siglen,
                     const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec) {
  (void)type;
  ECDSA_SIG *s = chip_sign_sig(dgst, dlen, kinv, r, ec);
  if (!s) return 0;
  unsigned char *p = sig;
  int n = i2d_ECDSA_SIG(s, &p);
  ECDSA_SIG_free(s);
  if (n <= 0) return 0;
  *siglen = (unsigned)n;
  return 1;
}

/* There is no private key to set up k for; refuse rather than fall back to software. */
static int chip_sign_setup(EC_KEY *ec, BN_CTX *ctx, BIGNUM **kinv, BIGNUM **r) {
  (void)ec, (void)ctx, (void)kinv, (void)r;
  return 0;
}

/* Created once and kept for the process: EC_KEYs refer to it until they are freed. */
static void make_method(void) {
  ex_index = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, keyref_free);
  if (ex_index < 0) return;
  method = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
  if (method) EC_KEY_METHOD_set_sign(method, chip_sign, chip_sign_setup, chip_sign_sig);
}

static bool init_method(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_method);
  return method != NULL;
}

mw_status_t mw_trustm_pkey(mw_trustm_t *dev, uint16_t key_oid, EVP_PKEY *pub, EVP_PKEY **out) {
  if (!dev || !out) return MW_ERR_INVALID;
  *out = NULL;
  mw_status_t st;
  EVP_PKEY *own = NULL;
  if (!pub) {
    mw_trustm_pubkey_t pk;
    if ((st = mw_trustm_pubkey_read(dev, key_oid, &pk)) != MW_OK) return st;
    const unsigned char *p = pk.spki;
    own = pub = d2i_PUBKEY(NULL, &p, (long)pk.spki_len);
    if (!pub) return MW_ERR_PROTOCOL;
  }
  st = MW_ERR_UNSUPPORTED;
  EC_KEY *ec = NULL;
  EVP_PKEY *pk = NULL;
  keyref_t *k = NULL;
  const EC_KEY *src = EVP_PKEY_get0_EC_KEY(pub); /* a provider key is exported to a cached legacy copy */
  if (!src || !EC_KEY_get0_public_key(src)) goto fail;
  st = MW_ERR_NOMEM;
  if (!init_method()) goto fail;
  ec = EC_KEY_new();
  if (!ec || !EC_KEY_set_group(ec, EC_KEY_get0_group(src)) || !EC_KEY_set_public_key(ec, EC_KEY_get0_public_key(src)))
    goto fail;
  k = OPENSSL_zalloc(sizeof *k);
  if (!k) goto fail;
  k->dev = dev;
  k->oid = key_oid;
  k->key_bytes = (size_t)(EC_GROUP_order_bits(EC_KEY_get0_group(src)) + 7) / 8;
  mw__trustm_ref(dev);
  if (!EC_KEY_set_ex_data(ec, ex_index, k)) {
    mw__trustm_unref(dev);
    OPENSSL_free(k);
    goto fail;
  }
  if (!EC_KEY_set_method(ec, method)) goto fail;
  pk = EVP_PKEY_new();
  if (!pk || !EVP_PKEY_assign_EC_KEY(pk, ec)) goto fail;
  EVP_PKEY_free(own);
  *out = pk;
  return MW_OK;
fail:
  EVP_PKEY_free(pk); /* never owns ec here: assigning it is the last step */
  EC_KEY_free(ec);
  EVP_PKEY_free(own);
  return st;
}
