/*
** Shared by the provisioning tests and fuzz targets: a throw-away signing CA made with the
** OpenSSL API (no openssl process), written as DIR/intermediate-ca.{crt,key} the way
** certs/mkpki lays it out, and small file helpers.
*/
#ifndef PROV_TEST_UTIL_H
#define PROV_TEST_UTIL_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static inline int prov_test_write(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  fputs(text, f);
  fclose(f);
  return 0;
}

static inline void prov_test_ext(X509 *x, X509 *issuer, int nid, const char *v) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, v);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
}

/* Makes a self-signed CA "CN=<cn>" valid for `days` and writes it to dir (created). */
static inline int prov_test_make_ca(const char *dir, const char *cn, int days) {
  mkdir(dir, 0700);
  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509_NAME *n = X509_NAME_new();
  X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Moonwire Test", -1, -1, 0);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
  X509_set_subject_name(x, n);
  X509_set_issuer_name(x, n);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400);
  X509_set_pubkey(x, k);
  prov_test_ext(x, NULL, NID_basic_constraints, "critical,CA:true,pathlen:0");
  prov_test_ext(x, NULL, NID_key_usage, "critical,keyCertSign,cRLSign");
  prov_test_ext(x, NULL, NID_subject_key_identifier, "hash");
  X509_sign(x, k, EVP_sha256());
  char path[512];
  snprintf(path, sizeof path, "%s/intermediate-ca.crt", dir);
  FILE *f = fopen(path, "wb");
  int ok = f && PEM_write_X509(f, x);
  if (f) fclose(f);
  snprintf(path, sizeof path, "%s/intermediate-ca.key", dir);
  f = fopen(path, "wb");
  ok = ok && f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
  if (f) fclose(f);
  X509_NAME_free(n);
  X509_free(x);
  EVP_PKEY_free(k);
  return ok ? 0 : -1;
}

static inline void prov_test_rmdir(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

#endif
