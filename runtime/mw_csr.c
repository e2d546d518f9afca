#include "mw_csr.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mw_log.h"

/* A CSR larger than this is not a device request; refusing it bounds parsing work. */
#define MW_CSR_MAX_PEM 16384

__attribute__((format(printf, 4, 5)))
static mw_status_t fail(mw_status_t st, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err && errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return st;
}

static int add_field(X509_NAME *name, const char *field, const char *value, char *err, size_t errlen) {
  if (!value) return 1;
  if (!*value) {
    fail(MW_ERR_INVALID, err, errlen, "subject %s is empty", field);
    return 0;
  }
  if (!strcmp(field, "C") && strlen(value) != 2) {
    fail(MW_ERR_INVALID, err, errlen, "subject C must be a two-letter country code, got '%s'", value);
    return 0;
  }
  if (strlen(value) > 64) {
    fail(MW_ERR_INVALID, err, errlen, "subject %s is longer than 64 characters (X.520 upper bound)", field);
    return 0;
  }
  if (!X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0)) {
    fail(MW_ERR_INVALID, err, errlen, "subject %s '%s' is not accepted by OpenSSL", field, value);
    return 0;
  }
  return 1;
}

static int add_san(X509_REQ *req, const char *const *dns, char *err, size_t errlen) {
  if (!dns || !dns[0]) return 1;
  GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
  STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
  int ok = names && exts;
  for (size_t i = 0; ok && dns[i]; i++) {
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    ok = gn && s && ASN1_STRING_set(s, dns[i], -1);
    if (ok) {
      GENERAL_NAME_set0_value(gn, GEN_DNS, s);
      s = NULL;
      ok = sk_GENERAL_NAME_push(names, gn) > 0;
      if (ok) gn = NULL;
    }
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(gn);
  }
  X509_EXTENSION *ext = ok ? X509V3_EXT_i2d(NID_subject_alt_name, 0, names) : NULL;
  ok = ext && sk_X509_EXTENSION_push(exts, ext) > 0;
  if (!ok) X509_EXTENSION_free(ext);
  ok = ok && X509_REQ_add_extensions(req, exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  GENERAL_NAMES_free(names);
  if (!ok) fail(MW_ERR_INVALID, err, errlen, "cannot encode the subjectAltName extension");
  return ok;
}

mw_status_t mw_csr_build(EVP_PKEY *key, const mw_csr_subject_t *subj, char **pem, char *err, size_t errlen) {
  *pem = NULL;
  if (!key || !subj) return fail(MW_ERR_INVALID, err, errlen, "no key or subject");
  if (!subj->cn) return fail(MW_ERR_INVALID, err, errlen, "subject CN is required");
  X509_REQ *req = X509_REQ_new();
  X509_NAME *name = X509_NAME_new();
  BIO *bio = NULL;
  mw_status_t st = MW_ERR_NOMEM;
  if (!req || !name) goto done;
  st = MW_ERR_INVALID;
  if (!add_field(name, "C", subj->c, err, errlen) || !add_field(name, "ST", subj->st, err, errlen) ||
      !add_field(name, "L", subj->l, err, errlen) || !add_field(name, "O", subj->o, err, errlen) ||
      !add_field(name, "OU", subj->ou, err, errlen) || !add_field(name, "CN", subj->cn, err, errlen) ||
      !add_field(name, "serialNumber", subj->serial, err, errlen))
    goto done;
  if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, key)) {
    fail(st, err, errlen, "the key has no usable public half");
    goto done;
  }
  if (!add_san(req, subj->dns, err, errlen)) goto done;
  ERR_clear_error();
  if (X509_REQ_sign(req, key, EVP_sha256()) <= 0) {
    unsigned long e = ERR_get_error();
    st = fail(MW_ERR_DEVICE, err, errlen, "signing the request failed%s%s", e ? ": " : "",
              e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown" : "");
    goto done;
  }
  st = MW_ERR_NOMEM;
  bio = BIO_new(BIO_s_mem());
  if (!bio || !PEM_write_bio_X509_REQ(bio, req)) goto done;
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  if (n <= 0 || !(*pem = malloc((size_t)n + 1))) goto done;
  memcpy(*pem, data, (size_t)n);
  (*pem)[n] = 0;
  st = MW_OK;
done:
  if (st == MW_ERR_NOMEM) fail(st, err, errlen, "out of memory building the request");
  BIO_free(bio);
  X509_NAME_free(name);
  X509_REQ_free(req);
  return st;
}

mw_status_t mw_csr_verify(const char *pem, size_t len, char *cn, size_t cnlen, char *err, size_t errlen) {
  if (cn && cnlen) cn[0] = 0;
  if (!pem || len == 0) return fail(MW_ERR_INVALID, err, errlen, "the certificate signing request is empty");
  if (len > MW_CSR_MAX_PEM)
    return fail(MW_ERR_TOO_LARGE, err, errlen, "the certificate signing request is %zu bytes (limit %d)", len,
                MW_CSR_MAX_PEM);
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) return fail(MW_ERR_NOMEM, err, errlen, "out of memory");
  X509_REQ *req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
  BIO_free(bio);
  ERR_clear_error();
  if (!req) return fail(MW_ERR_INVALID, err, errlen, "not a PEM certificate signing request");
  mw_status_t st = MW_OK;
  EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
  if (!pub) {
    st = fail(MW_ERR_INVALID, err, errlen, "the request carries no usable public key");
  } else if (X509_REQ_verify(req, pub) != 1) {
    ERR_clear_error();
    st = fail(MW_ERR_INVALID, err, errlen, "the request's signature does not match its public key");
  } else if (cn && cnlen) {
    X509_NAME *name = X509_REQ_get_subject_name(req);
    if (X509_NAME_get_text_by_NID(name, NID_commonName, cn, (int)cnlen) < 0) cn[0] = 0;
  }
  X509_REQ_free(req);
  return st;
}
