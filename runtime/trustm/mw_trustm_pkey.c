/*
** The chip's key as an OpenSSL EVP_PKEY (mw_hwkey): its private operation is a CalcSign,
** so libssl (and libmosquitto above it) can use it as the TLS client key while the
** private key stays in the chip. The chip's keys are EC keys; its signature ("02 Lr r
** 02 Ls s") goes back to mw_hwkey as a DER ECDSA-Sig-Value.
*/
#include <openssl/x509.h>

#include "mw_hwkey.h"
#include "mw_log.h"
#include "mw_trustm_int.h"

typedef struct {
  mw_trustm_t *dev; /* holds a reference */
  uint16_t oid;
} chipkey_t;

static bool chip_sign(void *ctx, mw_hwkey_op_t op, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len) {
  chipkey_t *k = ctx;
  if (op != MW_HWKEY_ECDSA) return false; /* mw_trustm_pkey only makes EC keys */
  uint8_t raw[2 * 70];
  size_t rl;
  if (mw__trustm_sign_raw(k->dev, k->oid, in, in_len, raw, sizeof raw, &rl) != MW_OK) {
    MW_LOGW("trustm", "TLS signature failed: %s", mw_trustm_last_error(k->dev));
    return false;
  }
  return mw_trustm_sig_to_der(raw, rl, out, *out_len, out_len) == MW_OK;
}

static void chip_free(void *ctx) {
  chipkey_t *k = ctx;
  mw__trustm_unref(k->dev);
  OPENSSL_free(k);
}

static const mw_hwkey_ops_t chip_ops = {chip_sign, chip_free, true};

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
  chipkey_t *k = NULL;
  if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC) st = MW_ERR_UNSUPPORTED;
  else if (!(k = OPENSSL_zalloc(sizeof *k))) st = MW_ERR_NOMEM;
  else {
    k->dev = dev;
    k->oid = key_oid;
    mw__trustm_ref(dev);
    st = mw_hwkey_new(pub, &chip_ops, k, out);
  }
  EVP_PKEY_free(own);
  return st;
}
