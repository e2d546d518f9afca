#include "mw_prov_ca.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mw_csr.h"

/* Certificates and requests from the network are small; this bounds parsing work. */
#define PEM_MAX (64 * 1024)

struct mw_prov_ca {
  X509 *cert;
  EVP_PKEY *key;
  char name[512];
  char *pem;
  int64_t not_after;
};

__attribute__((format(printf, 4, 5)))
static mw_status_t fail(mw_status_t st, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err && errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return st;
}

static void ssl_reason(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  snprintf(buf, len, "%s", r ? r : "unknown reason");
  ERR_clear_error();
}

static int64_t asn1_epoch(const ASN1_TIME *t) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return (int64_t)timegm(&tm);
}

static void name_line(X509_NAME *n, char *buf, size_t len) {
  buf[0] = 0;
  BIO *b = BIO_new(BIO_s_mem());
  if (!b) return;
  if (X509_NAME_print_ex(b, n, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
    char *data;
    long n2 = BIO_get_mem_data(b, &data);
    if (n2 > 0) snprintf(buf, len, "%.*s", (int)n2, data);
  }
  BIO_free(b);
}

static char *read_small_file(const char *path, size_t max, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = malloc(max + 1);
  size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
  fclose(f);
  if (!buf || n > max) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

mw_status_t mw_prov_ca_load(const char *where, mw_prov_ca_t **out, char *err, size_t errlen) {
  *out = NULL;
  char crt[4096], key[4096];
  struct stat sb;
  if (stat(where, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    snprintf(crt, sizeof crt, "%s/intermediate-ca.crt", where);
    snprintf(key, sizeof key, "%s/intermediate-ca.key", where);
  } else {
    snprintf(crt, sizeof crt, "%s.crt", where);
    snprintf(key, sizeof key, "%s.key", where);
  }
  mw_prov_ca_t *ca = calloc(1, sizeof *ca);
  if (!ca) return fail(MW_ERR_NOMEM, err, errlen, "out of memory");
  mw_status_t st = MW_ERR_INVALID;
  size_t n = 0;
  ca->pem = read_small_file(crt, PEM_MAX, &n);
  if (!ca->pem) {
    st = fail(MW_ERR_IO, err, errlen, "cannot read the CA certificate %s (a directory made by certs/mkpki, or "
                                      "STEM for STEM.crt + STEM.key)", crt);
    goto bad;
  }
  BIO *b = BIO_new_mem_buf(ca->pem, (int)n);
  ca->cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  if (!ca->cert) {
    fail(st, err, errlen, "%s holds no PEM certificate", crt);
    goto bad;
  }
  FILE *f = fopen(key, "rb");
  if (!f) {
    st = fail(MW_ERR_IO, err, errlen, "cannot read the CA key %s", key);
    goto bad;
  }
  ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (!ca->key) {
    fail(st, err, errlen, "%s holds no PEM private key", key);
    goto bad;
  }
  if (X509_check_private_key(ca->cert, ca->key) != 1) {
    fail(st, err, errlen, "the key %s does not belong to %s", key, crt);
    goto bad;
  }
  if (X509_check_ca(ca->cert) == 0) {
    fail(st, err, errlen, "%s is not a CA certificate (basicConstraints CA:TRUE)", crt);
    goto bad;
  }
  ERR_clear_error();
  name_line(X509_get_subject_name(ca->cert), ca->name, sizeof ca->name);
  ca->not_after = asn1_epoch(X509_get0_notAfter(ca->cert));
  *out = ca;
  return MW_OK;
bad:
  ERR_clear_error();
  mw_prov_ca_free(ca);
  return st;
}

void mw_prov_ca_free(mw_prov_ca_t *ca) {
  if (!ca) return;
  X509_free(ca->cert);
  EVP_PKEY_free(ca->key);
  free(ca->pem);
  free(ca);
}

const char *mw_prov_ca_name(const mw_prov_ca_t *ca) { return ca->name; }
const char *mw_prov_ca_pem(const mw_prov_ca_t *ca) { return ca->pem; }

void mw_prov_cert_free(mw_prov_cert_t *c) {
  if (!c) return;
  free(c->pem);
  c->pem = NULL;
}

static void hex(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = 0;
}

static int x509_id(X509 *x, char id[MW_PROV_CERT_ID_LEN + 1]) {
  unsigned char *der = NULL;
  int n = i2d_X509(x, &der);
  if (n <= 0) return 0;
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(der, (size_t)n, md);
  OPENSSL_free(der);
  hex(md, sizeof md, id);
  return 1;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
  if (!e) return 0;
  int ok = X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  return ok;
}

/* Builds, signs and encodes the certificate for pub with subject name; takes nothing over. */
static mw_status_t issue(mw_prov_ca_t *ca, EVP_PKEY *pub, X509_NAME *name, const mw_prov_issue_t *opt,
                         mw_prov_cert_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (opt->days <= 0) return fail(MW_ERR_INVALID, err, errlen, "validity must be at least one day");
  int64_t nb = opt->now - 60, na = opt->now + (int64_t)opt->days * 86400;
  if (ca->not_after && na > ca->not_after) na = ca->not_after;
  if (na <= opt->now) return fail(MW_ERR_INVALID, err, errlen, "the CA %s has expired", ca->name);
  X509 *x = X509_new();
  BIGNUM *bn = BN_new();
  BIO *bio = NULL;
  mw_status_t st = MW_ERR_NOMEM;
  unsigned char rnd[16];
  char why[160];
  if (!x || !bn) goto done;
  st = MW_ERR_IO;
  if (RAND_bytes(rnd, sizeof rnd) != 1) {
    fail(st, err, errlen, "no random serial number (the system's random source failed)");
    goto done;
  }
  rnd[0] &= 0x7f; /* a positive INTEGER of at most 16 octets */
  rnd[0] |= 0x40; /* and never short: fixed length reads better in tools */
  if (!BN_bin2bn(rnd, sizeof rnd, bn) || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
      !X509_set_version(x, 2) || !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
      !X509_set_subject_name(x, name) || !X509_set_pubkey(x, pub) ||
      !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) || !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na)) {
    ssl_reason(why, sizeof why);
    fail(st, err, errlen, "cannot build the certificate: %s", why);
    goto done;
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
  if (!add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
      !add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") ||
      !add_ext(x, &ctx, NID_ext_key_usage, "clientAuth") || !add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
      !add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always")) {
    ssl_reason(why, sizeof why);
    fail(st, err, errlen, "cannot add the certificate extensions: %s", why);
    goto done;
  }
  if (X509_sign(x, ca->key, EVP_sha256()) <= 0) {
    ssl_reason(why, sizeof why);
    fail(st, err, errlen, "signing with the CA key failed: %s", why);
    goto done;
  }
  st = MW_ERR_NOMEM;
  bio = BIO_new(BIO_s_mem());
  if (!bio || !PEM_write_bio_X509(bio, x) || !x509_id(x, out->id)) goto done;
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  if (n <= 0 || !(out->pem = malloc((size_t)n + 1))) goto done;
  memcpy(out->pem, data, (size_t)n);
  out->pem[n] = 0;
  unsigned char sbin[16];
  int sl = BN_bn2bin(bn, sbin);
  hex(sbin, (size_t)sl, out->serial);
  out->not_before = nb;
  out->not_after = na;
  st = MW_OK;
done:
  if (st == MW_ERR_NOMEM) fail(st, err, errlen, "out of memory issuing a certificate");
  ERR_clear_error();
  BIO_free(bio);
  BN_free(bn);
  X509_free(x);
  return st;
}

static int set_cn(X509_NAME *name, const char *cn) {
  int i;
  while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) >= 0) X509_NAME_ENTRY_free(X509_NAME_delete_entry(name, i));
  return X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
}

mw_status_t mw_prov_ca_issue_csr(mw_prov_ca_t *ca, const char *csr_pem, size_t len, const mw_prov_issue_t *opt,
                                 mw_prov_cert_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  mw_status_t st = mw_csr_verify(csr_pem, len, NULL, 0, err, errlen);
  if (st != MW_OK) return st;
  BIO *b = BIO_new_mem_buf(csr_pem, (int)len);
  X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  ERR_clear_error();
  if (!req) return fail(MW_ERR_INVALID, err, errlen, "not a PEM certificate signing request");
  X509_NAME *name = X509_NAME_dup(X509_REQ_get_subject_name(req));
  EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
  st = MW_ERR_INVALID;
  if (!name) {
    st = fail(MW_ERR_NOMEM, err, errlen, "out of memory");
  } else if (!pub || (EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC && EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA)) {
    fail(st, err, errlen, "the request's key must be an EC or RSA key");
  } else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA && EVP_PKEY_get_bits(pub) < 2048) {
    fail(st, err, errlen, "the request's RSA key has %d bits; at least 2048 are required", EVP_PKEY_get_bits(pub));
  } else if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC && EVP_PKEY_get_bits(pub) < 256) {
    fail(st, err, errlen, "the request's EC key has %d bits; at least 256 are required", EVP_PKEY_get_bits(pub));
  } else if (opt->cn && !set_cn(name, opt->cn)) {
    fail(st, err, errlen, "the commonName '%s' cannot be encoded (at most 64 characters)", opt->cn);
  } else if (X509_NAME_get_index_by_NID(name, NID_commonName, -1) < 0) {
    fail(st, err, errlen, "the request's subject has no commonName (CN)");
  } else {
    st = issue(ca, pub, name, opt, out, err, errlen);
  }
  ERR_clear_error();
  X509_NAME_free(name);
  X509_REQ_free(req);
  return st;
}

mw_status_t mw_prov_ca_issue_key(mw_prov_ca_t *ca, EVP_PKEY *pub, const mw_prov_issue_t *opt, mw_prov_cert_t *out,
                                 char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!pub || !opt->cn) return fail(MW_ERR_INVALID, err, errlen, "a public key and a commonName are required");
  X509_NAME *name = X509_NAME_new();
  if (!name) return fail(MW_ERR_NOMEM, err, errlen, "out of memory");
  mw_status_t st;
  if (!set_cn(name, opt->cn)) st = fail(MW_ERR_INVALID, err, errlen, "the commonName '%s' cannot be encoded", opt->cn);
  else st = issue(ca, pub, name, opt, out, err, errlen);
  ERR_clear_error();
  X509_NAME_free(name);
  return st;
}

static X509 *parse_cert(const char *pem, size_t len) {
  if (!pem || len == 0 || len > PEM_MAX) return NULL;
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  ERR_clear_error();
  return x;
}

mw_status_t mw_prov_ca_verify(const mw_prov_ca_t *ca, const char *pem, size_t len, int64_t now, char *err,
                              size_t errlen) {
  if (len > PEM_MAX) return fail(MW_ERR_TOO_LARGE, err, errlen, "the certificate is larger than %d bytes", PEM_MAX);
  X509 *x = parse_cert(pem, len);
  if (!x) return fail(MW_ERR_INVALID, err, errlen, "not a PEM certificate");
  mw_status_t st = MW_ERR_INVALID;
  EVP_PKEY *capub = X509_get0_pubkey(ca->cert);
  if (X509_check_issued(ca->cert, x) != X509_V_OK || !capub || X509_verify(x, capub) != 1) {
    fail(st, err, errlen, "the certificate was not issued by %s", ca->name);
  } else if (X509_cmp_time(X509_get0_notBefore(x), &(time_t){(time_t)now}) > 0) {
    fail(st, err, errlen, "the certificate is not valid yet");
  } else if (X509_cmp_time(X509_get0_notAfter(x), &(time_t){(time_t)now}) < 0) {
    fail(st, err, errlen, "the certificate has expired");
  } else if (X509_check_ca(x) != 0) {
    fail(st, err, errlen, "a CA certificate cannot be a device certificate");
  } else {
    st = MW_OK;
  }
  ERR_clear_error();
  X509_free(x);
  return st;
}

mw_status_t mw_prov_keygen(EVP_PKEY **key, char **pem) {
  *key = NULL;
  *pem = NULL;
  EVP_PKEY *k = EVP_EC_gen("P-256");
  if (!k) {
    ERR_clear_error();
    return MW_ERR_NOMEM;
  }
  BIO *b = BIO_new(BIO_s_mem());
  char *data;
  long n;
  if (!b || !PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) || (n = BIO_get_mem_data(b, &data)) <= 0 ||
      !(*pem = malloc((size_t)n + 1))) {
    BIO_free(b);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return MW_ERR_NOMEM;
  }
  memcpy(*pem, data, (size_t)n);
  (*pem)[n] = 0;
  OPENSSL_cleanse(data, (size_t)n);
  BIO_free(b);
  *key = k;
  return MW_OK;
}

static void entry(X509_NAME *n, int nid, char *buf, size_t len) {
  buf[0] = 0;
  if (X509_NAME_get_text_by_NID(n, nid, buf, (int)len) < 0) buf[0] = 0;
}

mw_status_t mw_prov_cert_info(const char *pem, size_t len, mw_prov_cert_info_t *info, char *err, size_t errlen) {
  memset(info, 0, sizeof *info);
  if (len > PEM_MAX) return fail(MW_ERR_TOO_LARGE, err, errlen, "the certificate is larger than %d bytes", PEM_MAX);
  X509 *x = parse_cert(pem, len);
  if (!x) return fail(MW_ERR_INVALID, err, errlen, "not a PEM certificate");
  X509_NAME *s = X509_get_subject_name(x);
  entry(s, NID_commonName, info->cn, sizeof info->cn);
  entry(s, NID_countryName, info->country, sizeof info->country);
  entry(s, NID_organizationName, info->organization, sizeof info->organization);
  entry(s, NID_organizationalUnitName, info->organizational_unit, sizeof info->organizational_unit);
  entry(s, NID_stateOrProvinceName, info->state, sizeof info->state);
  entry(s, NID_localityName, info->locality, sizeof info->locality);
  entry(s, NID_dnQualifier, info->dn_qualifier, sizeof info->dn_qualifier);
  entry(s, NID_serialNumber, info->serial_number, sizeof info->serial_number);
  name_line(s, info->subject, sizeof info->subject);
  name_line(X509_get_issuer_name(x), info->issuer, sizeof info->issuer);
  info->not_before = asn1_epoch(X509_get0_notBefore(x));
  info->not_after = asn1_epoch(X509_get0_notAfter(x));
  const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
  BIGNUM *bn = sn ? ASN1_INTEGER_to_BN(sn, NULL) : NULL;
  if (bn && BN_num_bytes(bn) <= 32) {
    unsigned char b[32];
    int l = BN_bn2bin(bn, b);
    hex(b, (size_t)l, info->serial);
  }
  BN_free(bn);
  mw_status_t st = x509_id(x, info->id) ? MW_OK : MW_ERR_NOMEM;
  ERR_clear_error();
  X509_free(x);
  return st;
}

mw_status_t mw_prov_cert_id(const char *pem, size_t len, char id[MW_PROV_CERT_ID_LEN + 1]) {
  X509 *x = parse_cert(pem, len);
  if (!x) return MW_ERR_INVALID;
  mw_status_t st = x509_id(x, id) ? MW_OK : MW_ERR_NOMEM;
  X509_free(x);
  return st;
}

mw_status_t mw_prov_cert_pubkey_pem(const char *pem, size_t len, char **out) {
  *out = NULL;
  X509 *x = parse_cert(pem, len);
  if (!x) return MW_ERR_INVALID;
  EVP_PKEY *pub = X509_get0_pubkey(x);
  BIO *b = BIO_new(BIO_s_mem());
  mw_status_t st = MW_ERR_NOMEM;
  char *data;
  long n;
  if (pub && b && PEM_write_bio_PUBKEY(b, pub) && (n = BIO_get_mem_data(b, &data)) > 0 &&
      (*out = malloc((size_t)n + 1))) {
    memcpy(*out, data, (size_t)n);
    (*out)[n] = 0;
    st = MW_OK;
  }
  BIO_free(b);
  X509_free(x);
  ERR_clear_error();
  return st;
}
