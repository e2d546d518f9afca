/*
** Conversions between the chip's encodings and OpenSSL's ([SRM] "Data encoding format
** examples"): signatures are two DER INTEGERs without the SEQUENCE, public keys a bare
** BIT STRING of the uncompressed point, certificates maybe wrapped in a TLS identity
** chain (tag C0), and PEM for the CLI and Lua. Pure functions; all of them are fuzzed.
*/
#include <limits.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mw_trustm_int.h"

typedef struct {
  uint8_t id;
  int nid;
  size_t bytes;
  const char *name, *alias;
  uint8_t oid_len;
  uint8_t oid[9];
} curve_t;

static const curve_t curves[] = {
    {0x03, NID_X9_62_prime256v1, 32, "P-256", "prime256v1", 8, {0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}},
    {0x04, NID_secp384r1, 48, "P-384", "secp384r1", 5, {0x2B, 0x81, 0x04, 0x00, 0x22}},
    {0x05, NID_secp521r1, 66, "P-521", "secp521r1", 5, {0x2B, 0x81, 0x04, 0x00, 0x23}},
    {0x13, NID_brainpoolP256r1, 32, "brainpoolP256r1", "BP-256", 9,
     {0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07}},
    {0x15, NID_brainpoolP384r1, 48, "brainpoolP384r1", "BP-384", 9,
     {0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0B}},
    {0x16, NID_brainpoolP512r1, 64, "brainpoolP512r1", "BP-512", 9,
     {0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0D}},
};
#define NCURVES (sizeof curves / sizeof curves[0])

static const curve_t *curve_by_id(uint8_t id) {
  for (size_t i = 0; i < NCURVES; i++)
    if (curves[i].id == id) return &curves[i];
  return NULL;
}

int mw__trustm_curve_nid(uint8_t curve) {
  const curve_t *c = curve_by_id(curve);
  return c ? c->nid : NID_undef;
}

uint8_t mw__trustm_curve_from_nid(int nid) {
  for (size_t i = 0; i < NCURVES; i++)
    if (curves[i].nid == nid) return curves[i].id;
  return 0;
}

size_t mw__trustm_curve_bytes(uint8_t curve) {
  const curve_t *c = curve_by_id(curve);
  return c ? c->bytes : 0;
}

const char *mw_trustm_curve_name(uint8_t alg) {
  const curve_t *c = curve_by_id(alg);
  return c ? c->name : NULL;
}

uint8_t mw_trustm_curve_parse(const char *name) {
  if (!name) return 0;
  for (size_t i = 0; i < NCURVES; i++)
    if (strcasecmp(name, curves[i].name) == 0 || strcasecmp(name, curves[i].alias) == 0) return curves[i].id;
  if (strcasecmp(name, "secp256r1") == 0 || strcasecmp(name, "P256") == 0) return 0x03;
  if (strcasecmp(name, "P384") == 0) return 0x04;
  if (strcasecmp(name, "P521") == 0) return 0x05;
  return 0;
}

/* ---- minimal DER ---- */

static size_t put_len(uint8_t *p, size_t len) {
  if (len < 0x80) {
    p[0] = (uint8_t)len;
    return 1;
  }
  if (len < 0x100) {
    p[0] = 0x81;
    p[1] = (uint8_t)len;
    return 2;
  }
  p[0] = 0x82;
  p[1] = (uint8_t)(len >> 8);
  p[2] = (uint8_t)len;
  return 3;
}

/* Reads a tag and a definite length (up to 3 length bytes); *hdr is the header size. */
static bool get_tl(const uint8_t *p, size_t n, uint8_t tag, size_t *hdr, size_t *len) {
  if (n < 2 || p[0] != tag) return false;
  if (p[1] < 0x80) {
    *hdr = 2;
    *len = p[1];
  } else {
    size_t k = p[1] & 0x7F;
    if (k == 0 || k > 3 || n < 2 + k) return false;
    size_t v = 0;
    for (size_t i = 0; i < k; i++) v = v << 8 | p[2 + i];
    if (v < 0x80 || (k > 1 && v < (1u << (8 * (k - 1))))) return false; /* not minimal */
    *hdr = 2 + k;
    *len = v;
  }
  return *len <= n - *hdr;
}

/* Magnitude of an INTEGER with leading zeros stripped; rejects negative values. */
static bool get_uint(const uint8_t *p, size_t n, size_t *used, const uint8_t **mag, size_t *mag_len) {
  size_t hdr, len;
  if (!get_tl(p, n, 0x02, &hdr, &len) || len == 0) return false;
  const uint8_t *v = p + hdr;
  if (v[0] & 0x80) return false;
  size_t l = len;
  while (l > 1 && v[0] == 0) v++, l--;
  *mag = v;
  *mag_len = l;
  *used = hdr + len;
  return true;
}

static size_t put_uint(uint8_t *p, const uint8_t *mag, size_t len) {
  size_t o = 0;
  p[o++] = 0x02;
  bool pad = mag[0] & 0x80;
  o += put_len(p + o, len + pad);
  if (pad) p[o++] = 0;
  memcpy(p + o, mag, len);
  return o + len;
}

/*
** The chip's "02 Lr r 02 Ls s" may carry a non-minimal leading 00 (the vendor library
** strips it), so both INTEGERs are re-encoded minimally inside the SEQUENCE.
*/
mw_status_t mw_trustm_sig_to_der(const uint8_t *raw, size_t raw_len, uint8_t *der, size_t cap, size_t *der_len) {
  const uint8_t *r, *s;
  size_t rl, sl, u1, u2;
  if (!raw || !get_uint(raw, raw_len, &u1, &r, &rl) || !get_uint(raw + u1, raw_len - u1, &u2, &s, &sl) ||
      u1 + u2 != raw_len || rl > 66 || sl > 66)
    return MW_ERR_PROTOCOL;
  uint8_t body[2 * 70];
  size_t b = put_uint(body, r, rl);
  b += put_uint(body + b, s, sl);
  uint8_t hdr[4]; /* tag + up to 3 length bytes (b < 256, so 2 are used) */
  hdr[0] = 0x30;
  size_t h = 1 + put_len(hdr + 1, b);
  if (h + b > cap) return MW_ERR_TOO_LARGE;
  memcpy(der, hdr, h);
  memcpy(der + h, body, b);
  *der_len = h + b;
  return MW_OK;
}

mw_status_t mw_trustm_sig_from_der(const uint8_t *der, size_t der_len, uint8_t *raw, size_t cap, size_t *raw_len) {
  size_t hdr, len, u1, u2, rl, sl;
  const uint8_t *r, *s;
  if (!der || !get_tl(der, der_len, 0x30, &hdr, &len) || hdr + len != der_len) return MW_ERR_INVALID;
  const uint8_t *p = der + hdr;
  if (!get_uint(p, len, &u1, &r, &rl) || !get_uint(p + u1, len - u1, &u2, &s, &sl) || u1 + u2 != len ||
      rl > 66 || sl > 66)
    return MW_ERR_INVALID;
  uint8_t body[2 * 70];
  size_t b = put_uint(body, r, rl);
  b += put_uint(body + b, s, sl);
  if (b > cap) return MW_ERR_TOO_LARGE;
  memcpy(raw, body, b);
  *raw_len = b;
  return MW_OK;
}

/* ---- public keys ---- */

static bool point_on_curve(const curve_t *c, const uint8_t *pt, size_t len) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  EVP_PKEY *pk = NULL;
  bool ok = false;
  OSSL_PARAM params[3];
  params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)OBJ_nid2sn(c->nid), 0);
  params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pt, len);
  params[2] = OSSL_PARAM_construct_end();
  if (ctx && EVP_PKEY_fromdata_init(ctx) > 0 && EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) > 0) {
    EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new(pk, NULL);
    ok = chk && EVP_PKEY_public_check(chk) > 0;
    EVP_PKEY_CTX_free(chk);
  }
  EVP_PKEY_free(pk);
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

mw_status_t mw_trustm_pubkey_from_bitstring(mw_trustm_curve_t curve, const uint8_t *bs, size_t len,
                                            mw_trustm_pubkey_t *pub) {
  const curve_t *c = curve_by_id((uint8_t)curve);
  size_t hdr, blen;
  if (!c) return MW_ERR_UNSUPPORTED;
  if (!bs || !get_tl(bs, len, 0x03, &hdr, &blen) || hdr + blen != len) return MW_ERR_PROTOCOL;
  const uint8_t *v = bs + hdr;
  if (blen != 2 + 2 * c->bytes || v[0] != 0x00 || v[1] != 0x04) return MW_ERR_PROTOCOL;
  if (!point_on_curve(c, v + 1, blen - 1)) return MW_ERR_PROTOCOL;
  /* AlgorithmIdentifier { ecPublicKey, curve } */
  static const uint8_t ecpk[] = {0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01};
  uint8_t alg[2 + sizeof ecpk + 2 + 9];
  size_t a = 0;
  alg[a++] = 0x30;
  alg[a++] = (uint8_t)(sizeof ecpk + 2 + c->oid_len);
  memcpy(alg + a, ecpk, sizeof ecpk);
  a += sizeof ecpk;
  alg[a++] = 0x06;
  alg[a++] = c->oid_len;
  memcpy(alg + a, c->oid, c->oid_len);
  a += c->oid_len;
  size_t body = a + len, o = 0;
  memset(pub, 0, sizeof *pub);
  pub->spki[o++] = 0x30;
  o += put_len(pub->spki + o, body);
  if (o + body > sizeof pub->spki) return MW_ERR_TOO_LARGE;
  memcpy(pub->spki + o, alg, a);
  memcpy(pub->spki + o + a, bs, len);
  pub->spki_len = o + body;
  pub->curve = curve;
  return MW_OK;
}

mw_status_t mw_trustm_pubkey_to_bitstring(const uint8_t *spki, size_t spki_len, uint8_t *curve, uint8_t *bs,
                                          size_t cap, size_t *bs_len) {
  const unsigned char *p = spki;
  if (!spki || spki_len > 4096) return MW_ERR_INVALID;
  EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki_len);
  mw_status_t st = MW_ERR_INVALID;
  BIGNUM *x = NULL, *y = NULL;
  char group[64];
  if (!pk || p != spki + spki_len || !EVP_PKEY_is_a(pk, "EC")) goto done;
  if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL)) goto done;
  const curve_t *c = curve_by_id(mw__trustm_curve_from_nid(OBJ_sn2nid(group)));
  if (!c) {
    st = MW_ERR_UNSUPPORTED;
    goto done;
  }
  if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x) || !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &y))
    goto done;
  size_t blen = 2 + 2 * c->bytes, o = 0;
  uint8_t tmp[8 + 2 * 66];
  tmp[o++] = 0x03;
  o += put_len(tmp + o, blen);
  tmp[o++] = 0x00;
  tmp[o++] = 0x04;
  if (BN_bn2binpad(x, tmp + o, (int)c->bytes) < 0 || BN_bn2binpad(y, tmp + o + c->bytes, (int)c->bytes) < 0) goto done;
  o += 2 * c->bytes;
  if (o > cap) {
    st = MW_ERR_TOO_LARGE;
    goto done;
  }
  memcpy(bs, tmp, o);
  *bs_len = o;
  *curve = c->id;
  st = MW_OK;
done:
  BN_free(x);
  BN_free(y);
  EVP_PKEY_free(pk);
  return st;
}

/* What was written to a memory BIO, as a C string. */
static mw_status_t bio_text(BIO *bio, char *out, size_t cap) {
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  if (n < 0 || (size_t)n >= cap) return MW_ERR_TOO_LARGE;
  memcpy(out, data, (size_t)n);
  out[n] = '\0';
  return MW_OK;
}

mw_status_t mw_trustm_spki_to_pem(const uint8_t *spki, size_t len, char *pem, size_t cap) {
  const unsigned char *p = spki;
  if (!spki || !pem || len > 4096) return MW_ERR_INVALID;
  EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
  if (!pk) return MW_ERR_INVALID;
  BIO *bio = BIO_new(BIO_s_mem());
  mw_status_t st = bio && PEM_write_bio_PUBKEY(bio, pk) ? bio_text(bio, pem, cap) : MW_ERR_NOMEM;
  BIO_free(bio);
  EVP_PKEY_free(pk);
  return st;
}

/* ---- certificates ---- */

static uint32_t be24(const uint8_t *p) { return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]; }

/*
** TLS identity chain ([LNX] trustm_cert.c): C0 | len(2) | chain len(3) | cert len(3) | DER,
** i.e. the first certificate starts at offset 9. A bare DER certificate is also valid.
*/
mw_status_t mw_trustm_cert_extract(const uint8_t *obj, size_t len, const uint8_t **der, size_t *der_len) {
  size_t hdr, clen;
  if (!obj || len == 0) return MW_ERR_NOT_FOUND;
  if (obj[0] == 0x30) {
    if (!get_tl(obj, len, 0x30, &hdr, &clen)) return MW_ERR_PROTOCOL;
    *der = obj;
    *der_len = hdr + clen;
    return MW_OK;
  }
  if (obj[0] == 0xC0) {
    if (len < 9) return MW_ERR_PROTOCOL;
    size_t outer = (size_t)obj[1] << 8 | obj[2], chain = be24(obj + 3), cert = be24(obj + 6);
    if (outer + 3 > len || chain + 3 > outer || cert + 3 > chain) return MW_ERR_PROTOCOL;
    if (!get_tl(obj + 9, cert, 0x30, &hdr, &clen) || hdr + clen != cert) return MW_ERR_PROTOCOL;
    *der = obj + 9;
    *der_len = cert;
    return MW_OK;
  }
  for (size_t i = 0; i < len; i++)
    if (obj[i] != 0x00 && obj[i] != 0xFF) return MW_ERR_PROTOCOL;
  return MW_ERR_NOT_FOUND; /* erased */
}

mw_status_t mw_trustm_cert_to_pem(const uint8_t *der, size_t len, char *pem, size_t cap) {
  const unsigned char *p = der;
  if (!der || !pem || len > 0xFFFF) return MW_ERR_INVALID;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  if (!x) {
    ERR_clear_error();
    return MW_ERR_INVALID;
  }
  BIO *bio = BIO_new(BIO_s_mem());
  mw_status_t st = bio && PEM_write_bio_X509(bio, x) ? bio_text(bio, pem, cap) : MW_ERR_NOMEM;
  BIO_free(bio);
  X509_free(x);
  return st;
}

mw_status_t mw_trustm_cert_from_pem(const char *text, size_t len, uint8_t *der, size_t cap, size_t *der_len,
                                    bool *more) {
  if (more) *more = false;
  if (!text || !der || len > INT_MAX) return MW_ERR_INVALID;
  BIO *b = BIO_new_mem_buf(text, (int)len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  X509 *extra = x && more ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  ERR_clear_error(); /* "no start line" of the look for a second one, or the reason there was no first */
  if (more) *more = extra != NULL;
  X509_free(extra);
  if (!x) return b ? MW_ERR_INVALID : MW_ERR_NOMEM;
  unsigned char *d = NULL;
  int n = i2d_X509(x, &d);
  X509_free(x);
  mw_status_t st = n <= 0 ? MW_ERR_NOMEM : (size_t)n > cap ? MW_ERR_TOO_LARGE : MW_OK;
  if (st == MW_OK) {
    memcpy(der, d, (size_t)n);
    *der_len = (size_t)n;
  }
  OPENSSL_free(d);
  return st;
}
