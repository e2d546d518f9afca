/*
** Simulator, cryptography: the chip's keys are real OpenSSL EC keys, kept as private
** scalars inside the simulator and never handed out (except through GenKeyPair's export
** mode, as on the chip). Also the factory certificate of a fresh simulated chip.
*/
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "mw_trustm_sim_int.h"

int sim_curve_nid(uint8_t alg) {
  switch (alg) {
  case 0x03: return NID_X9_62_prime256v1;
  case 0x04: return NID_secp384r1;
  case 0x05: return NID_secp521r1;
  case 0x13: return NID_brainpoolP256r1;
  case 0x15: return NID_brainpoolP384r1;
  case 0x16: return NID_brainpoolP512r1;
  }
  return NID_undef;
}

size_t sim_curve_bytes(uint8_t alg) {
  switch (alg) {
  case 0x03: case 0x13: return 32;
  case 0x04: case 0x15: return 48;
  case 0x05: return 66;
  case 0x16: return 64;
  }
  return 0;
}

static uint8_t alg_of_nid(int nid) {
  static const uint8_t algs[] = {0x03, 0x04, 0x05, 0x13, 0x15, 0x16};
  for (size_t i = 0; i < sizeof algs; i++)
    if (sim_curve_nid(algs[i]) == nid) return algs[i];
  return 0;
}

bool sim_ec_generate(uint8_t alg, uint8_t *priv, uint8_t *priv_len) {
  int nid = sim_curve_nid(alg);
  size_t nb = sim_curve_bytes(alg);
  if (nid == NID_undef) return false;
  EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", OBJ_nid2sn(nid));
  BIGNUM *d = NULL;
  bool ok = pk && EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d) && BN_bn2binpad(d, priv, (int)nb) == (int)nb;
  if (ok) *priv_len = (uint8_t)nb;
  BN_clear_free(d);
  EVP_PKEY_free(pk);
  return ok;
}

/* The uncompressed public point of a private scalar. */
static size_t pub_point(uint8_t alg, const uint8_t *priv, size_t len, uint8_t *out, size_t cap) {
  EC_GROUP *g = EC_GROUP_new_by_curve_name(sim_curve_nid(alg));
  EC_POINT *p = g ? EC_POINT_new(g) : NULL;
  BIGNUM *d = BN_bin2bn(priv, (int)len, NULL);
  size_t n = 0;
  if (p && d && EC_POINT_mul(g, p, d, NULL, NULL, NULL))
    n = EC_POINT_point2oct(g, p, POINT_CONVERSION_UNCOMPRESSED, out, cap, NULL);
  BN_clear_free(d);
  EC_POINT_free(p);
  EC_GROUP_free(g);
  return n;
}

static EVP_PKEY *from_params(uint8_t alg, const uint8_t *point, size_t plen, const uint8_t *priv, size_t len) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
  BIGNUM *d = priv ? BN_bin2bn(priv, (int)len, NULL) : NULL;
  OSSL_PARAM *params = NULL;
  EVP_PKEY *pk = NULL;
  int sel = priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY;
  if (ctx && b && (!priv || d) &&
      OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(sim_curve_nid(alg)), 0) &&
      OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point, plen) &&
      (!d || OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, d)) && (params = OSSL_PARAM_BLD_to_param(b)) &&
      EVP_PKEY_fromdata_init(ctx) > 0)
    if (EVP_PKEY_fromdata(ctx, &pk, sel, params) <= 0) pk = NULL;
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(b);
  BN_clear_free(d);
  EVP_PKEY_CTX_free(ctx);
  return pk;
}

EVP_PKEY *sim_ec_private(uint8_t alg, const uint8_t *priv, size_t len) {
  uint8_t pt[1 + 2 * 66];
  size_t n = pub_point(alg, priv, len, pt, sizeof pt);
  return n ? from_params(alg, pt, n, priv, len) : NULL;
}

/* A peer key from the host: the point must be on the curve. */
EVP_PKEY *sim_ec_public(uint8_t alg, const uint8_t *point, size_t len) {
  if (sim_curve_nid(alg) == NID_undef || len != 1 + 2 * sim_curve_bytes(alg) || point[0] != 0x04) return NULL;
  EVP_PKEY *pk = from_params(alg, point, len, NULL, 0);
  EVP_PKEY_CTX *c = pk ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
  bool ok = c && EVP_PKEY_public_check(c) > 0;
  EVP_PKEY_CTX_free(c);
  if (!ok) {
    EVP_PKEY_free(pk);
    return NULL;
  }
  return pk;
}

/* DER BIT STRING "03 len 00 04 X Y" (long-form length for P-521). */
size_t sim_ec_bitstring(uint8_t alg, const uint8_t *priv, size_t len, uint8_t *out, size_t cap) {
  uint8_t pt[1 + 2 * 66];
  size_t n = pub_point(alg, priv, len, pt, sizeof pt);
  if (!n || cap < n + 4) return 0;
  size_t o = 0, bl = n + 1;
  out[o++] = 0x03;
  if (bl > 127) out[o++] = 0x81;
  out[o++] = (uint8_t)bl;
  out[o++] = 0x00;
  memcpy(out + o, pt, n);
  return o + n;
}

bool sim_bitstring_point(const uint8_t *bs, size_t n, const uint8_t **pt, size_t *ptlen) {
  size_t h, l;
  if (n < 3 || bs[0] != 0x03) return false;
  if (bs[1] < 0x80) h = 2, l = bs[1];
  else if (bs[1] == 0x81 && n >= 3 && bs[2] >= 0x80) h = 3, l = bs[2];
  else return false;
  if (h + l != n || l < 2 || bs[h] != 0x00) return false;
  *pt = bs + h + 1;
  *ptlen = l - 1;
  return true;
}

/* ECDSA over the given digest; the output is the chip's "02 Lr r 02 Ls s" (no SEQUENCE). */
size_t sim_ec_sign(uint8_t alg, const uint8_t *priv, size_t priv_len, const uint8_t *dg, size_t dl, uint8_t *out,
                   size_t cap) {
  EVP_PKEY *pk = sim_ec_private(alg, priv, priv_len);
  EVP_PKEY_CTX *c = pk ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
  uint8_t der[16 + 2 * 70];
  size_t dlen = sizeof der, n = 0;
  if (c && EVP_PKEY_sign_init(c) > 0 && EVP_PKEY_sign(c, der, &dlen, dg, dl) > 0 && dlen >= 2) {
    size_t h = der[1] == 0x81 ? 3 : 2; /* strip the SEQUENCE header: OpenSSL's INTEGERs are minimal */
    if (dlen - h <= cap) {
      n = dlen - h;
      memcpy(out, der + h, n);
    }
  }
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(pk);
  return n;
}

/* 1 valid, 0 wrong signature, -1 malformed. sig is the chip encoding. */
int sim_ec_verify(EVP_PKEY *pub, const uint8_t *dg, size_t dl, const uint8_t *sig, size_t sl) {
  uint8_t der[4 + 2 * 72];
  size_t i = 0;
  for (int k = 0; k < 2; k++) { /* exactly two INTEGERs, short-form lengths */
    if (sl - i < 2 || sig[i] != 0x02 || sig[i + 1] == 0 || sig[i + 1] > 0x7F || sl - i - 2 < sig[i + 1]) return -1;
    i += 2 + (size_t)sig[i + 1];
  }
  if (i != sl || sl > sizeof der - 3) return -1;
  size_t h = 0;
  der[h++] = 0x30;
  if (sl > 127) der[h++] = 0x81;
  der[h++] = (uint8_t)sl;
  memcpy(der + h, sig, sl);
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pub, NULL);
  int r = c && EVP_PKEY_verify_init(c) > 0 ? EVP_PKEY_verify(c, der, h + sl, dg, dl) : -1;
  EVP_PKEY_CTX_free(c);
  return r == 1 ? 1 : 0;
}

size_t sim_ecdh(uint8_t alg, const uint8_t *priv, size_t priv_len, const uint8_t *point, size_t plen, uint8_t *out,
                size_t cap) {
  EVP_PKEY *mine = sim_ec_private(alg, priv, priv_len), *peer = sim_ec_public(alg, point, plen);
  EVP_PKEY_CTX *c = mine ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
  size_t n = cap;
  if (!peer || !c || EVP_PKEY_derive_init(c) <= 0 || EVP_PKEY_derive_set_peer(c, peer) <= 0 ||
      EVP_PKEY_derive(c, out, &n) <= 0)
    n = 0;
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(peer);
  EVP_PKEY_free(mine);
  return n;
}

EVP_PKEY *sim_cert_pubkey(const uint8_t *der, size_t len, uint8_t *alg) {
  const unsigned char *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  EVP_PKEY *pk = NULL;
  char group[64];
  if (x && p == der + len) {
    EVP_PKEY *k = X509_get0_pubkey(x);
    if (k && EVP_PKEY_is_a(k, "EC") &&
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) &&
        (*alg = alg_of_nid(OBJ_sn2nid(group))) != 0 && EVP_PKEY_up_ref(k))
      pk = k;
  }
  X509_free(x);
  return pk;
}

/*
** A device certificate for the factory key, issued by a throwaway "simulated Infineon"
** CA and stored as a TLS identity chain (C0 | len | chain len | cert len | DER) like E0E0.
*/
size_t sim_factory_cert(const uint8_t *uid, uint8_t alg, const uint8_t *priv, size_t priv_len, uint8_t *out,
                        size_t cap) {
  EVP_PKEY *dev = sim_ec_private(alg, priv, priv_len), *ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  X509_NAME *issuer = X509_NAME_new(), *subject = X509_NAME_new();
  unsigned char *der = NULL;
  int dl = -1;
  char cn[64];
  snprintf(cn, sizeof cn, "OPTIGA Trust M %02X%02X%02X%02X%02X%02X (simulated)", uid[11], uid[12], uid[13], uid[14],
           uid[15], uid[16]);
  uint8_t serial[8];
  if (dev && ca && x && issuer && subject && RAND_bytes(serial, sizeof serial) == 1) {
    serial[0] &= 0x7F;
    BIGNUM *sn = BN_bin2bn(serial, sizeof serial, NULL);
    ASN1_INTEGER *ai = sn ? BN_to_ASN1_INTEGER(sn, NULL) : NULL;
    X509_NAME_add_entry_by_txt(issuer, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1, 0);
    X509_NAME_add_entry_by_txt(issuer, "O", MBSTRING_ASC, (const unsigned char *)"Moonwire simulator", -1, -1, 0);
    X509_NAME_add_entry_by_txt(issuer, "CN", MBSTRING_ASC,
                               (const unsigned char *)"Simulated Infineon OPTIGA(TM) Trust M CA", -1, -1, 0);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    if (ai && X509_set_version(x, 2) && X509_set_serialNumber(x, ai) && X509_set_issuer_name(x, issuer) &&
        X509_set_subject_name(x, subject) && X509_gmtime_adj(X509_getm_notBefore(x), -86400) &&
        X509_gmtime_adj(X509_getm_notAfter(x), 20L * 365 * 86400) && X509_set_pubkey(x, dev) &&
        X509_sign(x, ca, EVP_sha256()) > 0)
      dl = i2d_X509(x, &der);
    ASN1_INTEGER_free(ai);
    BN_free(sn);
  }
  size_t n = 0;
  if (dl > 0 && (size_t)dl + 9 <= cap) {
    size_t chain = (size_t)dl + 3, outer = chain + 3;
    out[0] = 0xC0, out[1] = (uint8_t)(outer >> 8), out[2] = (uint8_t)outer;
    out[3] = (uint8_t)(chain >> 16), out[4] = (uint8_t)(chain >> 8), out[5] = (uint8_t)chain;
    out[6] = (uint8_t)(dl >> 16), out[7] = (uint8_t)(dl >> 8), out[8] = (uint8_t)dl;
    memcpy(out + 9, der, (size_t)dl);
    n = (size_t)dl + 9;
  }
  OPENSSL_free(der);
  X509_NAME_free(issuer);
  X509_NAME_free(subject);
  X509_free(x);
  EVP_PKEY_free(ca);
  EVP_PKEY_free(dev);
  return n;
}
