/*
** Keys in the token: what a private key says about itself, its public half (as an
** ordinary EVP_PKEY), key-pair generation inside the token, and the C_Sign primitive.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "mw_p11_int.h"

/* ---- DER helpers (only what the SPKI of an EC key needs) ---- */

static size_t der_len_size(size_t n) { return n < 0x80 ? 1 : n < 0x100 ? 2 : 3; }

static uint8_t *der_put_hdr(uint8_t *p, uint8_t tag, size_t n) {
  *p++ = tag;
  if (n < 0x80) {
    *p++ = (uint8_t)n;
  } else if (n < 0x100) {
    *p++ = 0x81;
    *p++ = (uint8_t)n;
  } else {
    *p++ = 0x82;
    *p++ = (uint8_t)(n >> 8);
    *p++ = (uint8_t)n;
  }
  return p;
}

/* Reads one DER header at p[0..n): tag, content offset and length. */
static bool der_get_hdr(const uint8_t *p, size_t n, uint8_t *tag, size_t *off, size_t *len) {
  if (n < 2) return false;
  *tag = p[0];
  if (p[1] < 0x80) {
    *off = 2, *len = p[1];
  } else if (p[1] == 0x81 && n >= 3) {
    *off = 3, *len = p[2];
  } else if (p[1] == 0x82 && n >= 4) {
    *off = 4, *len = (size_t)p[2] << 8 | p[3];
  } else {
    return false;
  }
  return *off + *len <= n;
}

/*
** CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40), but some tokens
** return the bare point. Both start with 04, so the curve's point size decides: a bare
** uncompressed point is exactly 1 + 2 * field bytes long.
*/
static bool ec_point(const uint8_t *v, size_t n, unsigned field_bits, const uint8_t **pt, size_t *ptlen) {
  size_t raw = field_bits ? 1 + 2 * ((field_bits + 7) / 8) : 0;
  if (raw && n == raw && v[0] == 0x04) {
    *pt = v, *ptlen = n;
    return true;
  }
  uint8_t tag;
  size_t off, len;
  if (der_get_hdr(v, n, &tag, &off, &len) && tag == 0x04 && off + len == n && len >= 3) {
    *pt = v + off, *ptlen = len;
    return true;
  }
  return false;
}

/* SPKI { { id-ecPublicKey, params }, BIT STRING point } -> EVP_PKEY. */
static EVP_PKEY *ec_pub_from(const uint8_t *params, size_t plen, const uint8_t *pt, size_t ptlen) {
  static const uint8_t ec_oid[] = {0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01};
  if (plen > 512 || ptlen > 512) return NULL;
  size_t alg = sizeof ec_oid + plen, bits = ptlen + 1;
  size_t algt = 1 + der_len_size(alg) + alg, bitt = 1 + der_len_size(bits) + bits, body = algt + bitt;
  uint8_t buf[1200], *p = buf;
  p = der_put_hdr(p, 0x30, body);
  p = der_put_hdr(p, 0x30, alg);
  memcpy(p, ec_oid, sizeof ec_oid), p += sizeof ec_oid;
  memcpy(p, params, plen), p += plen;
  p = der_put_hdr(p, 0x03, bits);
  *p++ = 0x00;
  memcpy(p, pt, ptlen), p += ptlen;
  const unsigned char *q = buf;
  return d2i_PUBKEY(NULL, &q, (long)(p - buf));
}

static EVP_PKEY *rsa_pub_from(const uint8_t *n, size_t nl, const uint8_t *e, size_t el) {
  BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
  OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  EVP_PKEY *pk = NULL;
  if (bn && be && b && OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn) &&
      OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, be) && (params = OSSL_PARAM_BLD_to_param(b)) &&
      (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) && EVP_PKEY_fromdata_init(ctx) == 1)
    (void)EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(b);
  BN_free(bn);
  BN_free(be);
  return pk;
}

/* ---- attributes ---- */

static bool get_bool(mw_p11_t *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, bool dflt) {
  CK_BBOOL v = 0;
  CK_ATTRIBUTE a = {type, &v, sizeof v};
  if (t->f->C_GetAttributeValue(t->session, o, &a, 1) != CKR_OK || a.ulValueLen != sizeof v) return dflt;
  return v != 0;
}

static CK_ULONG get_ulong(mw_p11_t *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, CK_ULONG dflt) {
  CK_ULONG v = 0;
  CK_ATTRIBUTE a = {type, &v, sizeof v};
  if (t->f->C_GetAttributeValue(t->session, o, &a, 1) != CKR_OK || a.ulValueLen != sizeof v) return dflt;
  return v;
}

static const char *curve_name_of(const uint8_t *params, size_t plen, unsigned *bits) {
  const unsigned char *p = params;
  ASN1_OBJECT *obj = d2i_ASN1_OBJECT(NULL, &p, (long)plen);
  int nid = obj ? OBJ_obj2nid(obj) : NID_undef;
  ASN1_OBJECT_free(obj);
  switch (nid) {
  case NID_X9_62_prime256v1: *bits = 256; return "P-256";
  case NID_secp384r1: *bits = 384; return "P-384";
  case NID_secp521r1: *bits = 521; return "P-521";
  default: *bits = 0; return "";
  }
}

static void fill_info(mw_p11_t *t, CK_OBJECT_HANDLE k, mw_p11_keyinfo_t *info) {
  memset(info, 0, sizeof *info);
  CK_ULONG kt = get_ulong(t, k, CKA_KEY_TYPE, ~0UL);
  info->type = kt == CKK_EC ? MW_P11_KEY_EC : kt == CKK_RSA ? MW_P11_KEY_RSA : 0;
  uint8_t *v;
  size_t n;
  if (mw__p11_attr_alloc(t, k, CKA_LABEL, &v, &n) == CKR_OK) {
    snprintf(info->label, sizeof info->label, "%.*s", (int)n, v);
    free(v);
  }
  if (mw__p11_attr_alloc(t, k, CKA_ID, &v, &n) == CKR_OK) {
    info->id_len = n > sizeof info->id ? sizeof info->id : n;
    memcpy(info->id, v, info->id_len);
    free(v);
  }
  if (info->type == MW_P11_KEY_EC && mw__p11_attr_alloc(t, k, CKA_EC_PARAMS, &v, &n) == CKR_OK) {
    snprintf(info->curve, sizeof info->curve, "%s", curve_name_of(v, n, &info->bits));
    free(v);
  } else if (info->type == MW_P11_KEY_RSA && mw__p11_attr_alloc(t, k, CKA_MODULUS, &v, &n) == CKR_OK) {
    info->bits = (unsigned)n * 8;
    free(v);
  }
  info->sensitive = get_bool(t, k, CKA_SENSITIVE, false);
  info->extractable = get_bool(t, k, CKA_EXTRACTABLE, true);
  info->never_extractable = get_bool(t, k, CKA_NEVER_EXTRACTABLE, false);
  info->always_sensitive = get_bool(t, k, CKA_ALWAYS_SENSITIVE, false);
  info->local = get_bool(t, k, CKA_LOCAL, false);
  info->can_sign = get_bool(t, k, CKA_SIGN, false);
  info->always_authenticate = get_bool(t, k, CKA_ALWAYS_AUTHENTICATE, false);
  /* The real test of "the key never leaves": ask for it (an RSA key's secret is its private exponent). */
  CK_ATTRIBUTE a = {info->type == MW_P11_KEY_RSA ? CKA_PRIVATE_EXPONENT : CKA_VALUE, NULL, 0};
  CK_RV rv = t->f->C_GetAttributeValue(t->session, k, &a, 1);
  info->value_readable = rv == CKR_OK && a.ulValueLen != CK_UNAVAILABLE_INFORMATION && a.ulValueLen > 0;
  mw_p11_uri_format(t->label, info->label, info->id, info->id_len, MW_P11_TYPE_PRIVATE, info->uri, sizeof info->uri);
}

mw_status_t mw_p11_key_info(mw_p11_t *t, mw_p11_keyinfo_t *info, char *err, size_t errlen) {
  CK_OBJECT_HANDLE k;
  mw_status_t st = mw__p11_find_key(t, &k, err, errlen);
  if (st == MW_OK) fill_info(t, k, info);
  return st;
}

/* ---- public key ---- */

static mw_status_t pub_of(mw_p11_t *t, CK_OBJECT_HANDLE priv, EVP_PKEY **pub, char *err, size_t errlen) {
  *pub = NULL;
  uint8_t *id = NULL, *label = NULL, *a = NULL, *b = NULL;
  size_t il = 0, ll = 0, al = 0, bl = 0;
  char lab[257] = "";
  if (mw__p11_attr_alloc(t, priv, CKA_ID, &id, &il) != CKR_OK) il = 0;
  if (mw__p11_attr_alloc(t, priv, CKA_LABEL, &label, &ll) == CKR_OK) snprintf(lab, sizeof lab, "%.*s", (int)ll, label);
  free(label);
  CK_ULONG kt = get_ulong(t, priv, CKA_KEY_TYPE, ~0UL);
  CK_OBJECT_HANDLE o;
  char ignore[256];
  /* The public-key object: by CKA_ID when the key has one (labels are often shared), else by label. */
  if (mw__p11_find_one(t, CKO_PUBLIC_KEY, il ? NULL : lab, id, il, &o, ignore, sizeof ignore) == MW_OK) {
    if (kt == CKK_EC && mw__p11_attr_alloc(t, o, CKA_EC_PARAMS, &a, &al) == CKR_OK &&
        mw__p11_attr_alloc(t, o, CKA_EC_POINT, &b, &bl) == CKR_OK) {
      const uint8_t *pt;
      size_t ptl;
      unsigned fbits;
      (void)curve_name_of(a, al, &fbits);
      if (ec_point(b, bl, fbits, &pt, &ptl)) *pub = ec_pub_from(a, al, pt, ptl);
    } else if (kt == CKK_RSA && mw__p11_attr_alloc(t, o, CKA_MODULUS, &a, &al) == CKR_OK &&
               mw__p11_attr_alloc(t, o, CKA_PUBLIC_EXPONENT, &b, &bl) == CKR_OK) {
      *pub = rsa_pub_from(a, al, b, bl);
    }
    free(a), free(b);
    a = b = NULL;
  }
  if (!*pub && mw__p11_find_one(t, CKO_CERTIFICATE, il ? NULL : lab, id, il, &o, ignore, sizeof ignore) == MW_OK &&
      mw__p11_attr_alloc(t, o, CKA_VALUE, &a, &al) == CKR_OK) {
    const unsigned char *p = a;
    X509 *x = d2i_X509(NULL, &p, (long)al);
    if (x) {
      *pub = X509_get_pubkey(x);
      X509_free(x);
    }
    free(a);
    a = NULL;
  }
  /* An RSA private key object carries its public parts. */
  if (!*pub && kt == CKK_RSA && mw__p11_attr_alloc(t, priv, CKA_MODULUS, &a, &al) == CKR_OK &&
      mw__p11_attr_alloc(t, priv, CKA_PUBLIC_EXPONENT, &b, &bl) == CKR_OK)
    *pub = rsa_pub_from(a, al, b, bl);
  free(a), free(b), free(id);
  if (!*pub) {
    snprintf(err, errlen, "token '%s' has no public key or certificate object for the key '%s'", t->label, lab);
    return MW_ERR_NOT_FOUND;
  }
  return MW_OK;
}

mw_status_t mw_p11_pubkey(mw_p11_t *t, EVP_PKEY **pub, char *err, size_t errlen) {
  CK_OBJECT_HANDLE k;
  *pub = NULL;
  mw_status_t st = mw__p11_find_key(t, &k, err, errlen);
  return st == MW_OK ? pub_of(t, k, pub, err, errlen) : st;
}

/* ---- key generation ---- */

static int curve_nid(const char *name) {
  if (!name || !strcmp(name, "P-256") || !strcmp(name, "prime256v1") || !strcmp(name, "secp256r1"))
    return NID_X9_62_prime256v1;
  if (!strcmp(name, "P-384") || !strcmp(name, "secp384r1")) return NID_secp384r1;
  if (!strcmp(name, "P-521") || !strcmp(name, "secp521r1")) return NID_secp521r1;
  return NID_undef;
}

static bool exists(mw_p11_t *t, CK_OBJECT_CLASS cls, const char *label, const uint8_t *id, size_t il) {
  CK_OBJECT_HANDLE o;
  char e[256];
  mw_status_t st = mw__p11_find_one(t, cls, label, id, il, &o, e, sizeof e);
  return st == MW_OK || st == MW_ERR_CONFLICT;
}

mw_status_t mw_p11_keygen(mw_p11_t *t, const mw_p11_keygen_t *g, EVP_PKEY **pub, mw_p11_keyinfo_t *info, char *err,
                          size_t errlen) {
  const mw_p11_uri_t *u = &t->uri;
  *pub = NULL;
  if (!t->rw) {
    snprintf(err, errlen, "key generation needs a read-write session");
    return MW_ERR_STATE;
  }
  if (!t->logged_in) {
    snprintf(err, errlen, "key generation in token '%s' needs login: give pin-value= or pin-source=", t->label);
    return MW_ERR_REFUSED;
  }
  if (!(u->has & (MW_P11_HAS_OBJECT | MW_P11_HAS_ID))) {
    snprintf(err, errlen, "name the new key with object= (and/or id=) in the URI");
    return MW_ERR_INVALID;
  }
  const char *label = (u->has & MW_P11_HAS_OBJECT) ? u->object : NULL;
  uint8_t id[MW_P11_ID_MAX];
  size_t il;
  if (u->has & MW_P11_HAS_ID) {
    il = u->id_len;
    memcpy(id, u->id, il);
  } else {
    il = 16;
    if (RAND_bytes(id, (int)il) != 1) return MW_ERR_NOMEM;
  }
  for (int pass = 0; pass < 2; pass++) {
    CK_OBJECT_CLASS cls = pass == 0 ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
    if ((label && exists(t, cls, label, NULL, 0)) || ((u->has & MW_P11_HAS_ID) && exists(t, cls, NULL, id, il))) {
      snprintf(err, errlen, "token '%s' already has a %s named like that (%s%s%s); pick another name or delete it first",
               t->label, pass == 0 ? "private key" : "public key", label ? "object=" : "", label ? label : "",
               (u->has & MW_P11_HAS_ID) ? " or the same id=" : "");
      return MW_ERR_CONFLICT;
    }
  }
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pubt[8], privt[10];
  CK_ULONG pn = 0, kn = 0;
  uint8_t params[16];
  CK_ULONG bits = g->rsa_bits;
  static CK_BYTE e65537[] = {0x01, 0x00, 0x01};
  CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
  if (g->rsa_bits) {
    if (g->rsa_bits < 2048 || g->rsa_bits > 4096 || g->rsa_bits % 8) {
      snprintf(err, errlen, "RSA keys are 2048..4096 bits, in whole bytes");
      return MW_ERR_INVALID;
    }
    mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    pubt[pn++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof bits};
    pubt[pn++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, e65537, sizeof e65537};
    privt[kn++] = (CK_ATTRIBUTE){CKA_DECRYPT, &no, sizeof no};
  } else {
    int nid = curve_nid(g->curve);
    if (nid == NID_undef) {
      snprintf(err, errlen, "unknown curve '%s' (P-256, P-384 or P-521)", g->curve);
      return MW_ERR_INVALID;
    }
    unsigned char *p = params;
    int n = i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &p);
    if (n <= 0) return MW_ERR_NOMEM;
    pubt[pn++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, params, (CK_ULONG)n};
    privt[kn++] = (CK_ATTRIBUTE){CKA_DERIVE, &no, sizeof no};
  }
  pubt[pn++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof yes};
  pubt[pn++] = (CK_ATTRIBUTE){CKA_PRIVATE, &no, sizeof no};
  pubt[pn++] = (CK_ATTRIBUTE){CKA_VERIFY, &yes, sizeof yes};
  pubt[pn++] = (CK_ATTRIBUTE){CKA_ID, id, (CK_ULONG)il};
  privt[kn++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof yes};
  privt[kn++] = (CK_ATTRIBUTE){CKA_PRIVATE, &yes, sizeof yes};
  privt[kn++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof yes};
  privt[kn++] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &no, sizeof no};
  privt[kn++] = (CK_ATTRIBUTE){CKA_SIGN, &yes, sizeof yes};
  privt[kn++] = (CK_ATTRIBUTE){CKA_ID, id, (CK_ULONG)il};
  if (label) {
    pubt[pn++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)};
    privt[kn++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)};
  }
  CK_OBJECT_HANDLE hpub, hpriv;
  CK_RV rv = t->f->C_GenerateKeyPair(t->session, &mech, pubt, pn, privt, kn, &hpub, &hpriv);
  if (rv != CKR_OK) {
    char what[96];
    snprintf(what, sizeof what, "key generation in token '%s' failed", t->label);
    return mw__p11_fail_rv(rv, err, errlen, what);
  }
  MW_LOGI("pkcs11", "generated a %s key in token '%s'", g->rsa_bits ? "RSA" : g->curve ? g->curve : "P-256",
          t->label);
  if (info) fill_info(t, hpriv, info);
  return pub_of(t, hpriv, pub, err, errlen);
}

/* ---- signing ---- */

CK_RV mw__p11_sign(mw_p11_t *t, CK_OBJECT_HANDLE *key, CK_MECHANISM *mech, bool always_auth, const uint8_t *data,
                   size_t len, uint8_t *sig, size_t *siglen) {
  CK_RV rv = CKR_OK;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (attempt) { /* the token lost our session or login: one fresh start, then give up */
      char e[256];
      if (mw__p11_reopen(t) != CKR_OK || mw__p11_find_key(t, key, e, sizeof e) != MW_OK) break;
    }
    CK_ULONG n = (CK_ULONG)*siglen;
    rv = t->f->C_SignInit(t->session, mech, *key);
    if (rv == CKR_OK && always_auth) rv = mw__p11_login_context(t);
    if (rv == CKR_OK) rv = t->f->C_Sign(t->session, (CK_BYTE *)data, (CK_ULONG)len, sig, &n);
    if (rv == CKR_OK) {
      t->stats.signs++;
      *siglen = n;
      return CKR_OK;
    }
    if (!mw__p11_session_lost(rv) && rv != CKR_KEY_HANDLE_INVALID && rv != CKR_OBJECT_HANDLE_INVALID) break;
  }
  t->stats.sign_failures++;
  return rv;
}
