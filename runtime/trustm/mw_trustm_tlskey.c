/*
** The chip's key as the TLS client key (mw_tls key loader for "trustm:" references).
** A chip key that does not belong to tls.cert would only fail later, in every handshake,
** so it is checked here: against the public key the chip stores next to it, or else with
** one test signature (a single private-key use, well within the security monitor's credit).
*/
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mw_trustm.h"
#include "mw_trustm_tlskey.h"

/* True when the DER SubjectPublicKeyInfo is the public key of pub. */
static bool same_public_key(const uint8_t *spki, size_t len, EVP_PKEY *pub) {
  const unsigned char *p = spki;
  EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);
  bool same = k && pub && EVP_PKEY_eq(k, pub) == 1;
  EVP_PKEY_free(k);
  return same;
}

mw_status_t mw_trustm_tls_key_loader(void *ud, const mw_keyref_t *ref, EVP_PKEY *pub, EVP_PKEY **out, char *err,
                                     size_t errlen) {
  mw_trustm_t *dev = ud;
  mw_trustm_pubkey_t stored;
  mw_status_t st = mw_trustm_pubkey_read(dev, ref->oid, &stored);
  bool matches;
  if (st == MW_OK) {
    matches = same_public_key(stored.spki, stored.spki_len, pub);
  } else {
    uint8_t digest[32], sig[MW_TRUSTM_SIG_DER_MAX];
    size_t siglen = 0;
    memset(digest, 0x5a, sizeof digest);
    st = mw_trustm_sign(dev, ref->oid, digest, sizeof digest, sig, sizeof sig, &siglen);
    if (st != MW_OK) {
      snprintf(err, errlen, "%s", mw_trustm_last_error(dev));
      return st;
    }
    EVP_PKEY_CTX *vc = EVP_PKEY_CTX_new(pub, NULL);
    matches = vc && EVP_PKEY_verify_init(vc) == 1 && EVP_PKEY_verify(vc, sig, siglen, digest, sizeof digest) == 1;
    EVP_PKEY_CTX_free(vc);
  }
  if (!matches) {
    snprintf(err, errlen, "the key in the chip's slot 0x%04X does not match the public key in tls.cert", ref->oid);
    return MW_ERR_TLS;
  }
  st = mw_trustm_pkey(dev, ref->oid, pub, out);
  if (st != MW_OK) snprintf(err, errlen, "%s", mw_trustm_last_error(dev));
  return st;
}
