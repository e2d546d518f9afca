/*
** Certificate issuance: what an issued certificate carries (AWS-like extensions, random
** serial, subject, validity clamp, id = SHA-256 of the DER), CA loading errors, requests
** that must be refused, JITP verification, certificate facts.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "mw_csr.h"
#include "mw_prov_ca.h"
#include "prov_test_util.h"

static char dir[256], other[256];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/mw_prov_ca_%d", (int)getpid());
  snprintf(other, sizeof other, "/tmp/mw_prov_ca_other_%d", (int)getpid());
  CHECK(prov_test_make_ca(dir, "Test Intermediate", 365) == 0);
  CHECK(prov_test_make_ca(other, "Other CA", 365) == 0);
}

static char *make_csr(EVP_PKEY *k, const char *cn, const char *o) {
  mw_csr_subject_t s = {0};
  s.cn = cn;
  s.o = o;
  char *pem = NULL, err[200];
  CHECK(mw_csr_build(k, &s, &pem, err, sizeof err) == MW_OK);
  return pem;
}

static X509 *parse(const char *pem) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
  BIO_free(b);
  return x;
}

static void test_issue_from_csr(void) {
  mw_prov_ca_t *ca;
  char err[300];
  CHECK(mw_prov_ca_load(dir, &ca, err, sizeof err) == MW_OK);
  CHECK_STR(mw_prov_ca_name(ca), "O = Moonwire Test, CN = Test Intermediate");
  EVP_PKEY *k = EVP_EC_gen("P-256");
  char *csr = make_csr(k, "0042", "Acme");
  int64_t now = (int64_t)time(NULL);
  mw_prov_issue_t opt = {"0042.abcdef", 30, now};
  mw_prov_cert_t c;
  CHECK(mw_prov_ca_issue_csr(ca, csr, strlen(csr), &opt, &c, err, sizeof err) == MW_OK);
  X509 *x = parse(c.pem);
  CHECK(x != NULL);
  /* Signed by the CA, for the request's key. */
  FILE *f;
  char p[300];
  snprintf(p, sizeof p, "%s/intermediate-ca.crt", dir);
  f = fopen(p, "r");
  X509 *cax = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  CHECK(X509_verify(x, X509_get0_pubkey(cax)) == 1);
  CHECK(EVP_PKEY_eq(X509_get0_pubkey(x), k) == 1);
  CHECK(X509_check_issued(cax, x) == X509_V_OK);
  /* Subject: the request's, CN replaced. */
  char cn[80], o[80];
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, o, sizeof o);
  CHECK_STR(cn, "0042.abcdef");
  CHECK_STR(o, "Acme");
  /* Extensions of an AWS IoT device certificate. */
  CHECK(X509_check_ca(x) == 0);
  int crit = -1;
  BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
  CHECK(bc && !bc->ca && crit == 1);
  BASIC_CONSTRAINTS_free(bc);
  CHECK(X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE);
  CHECK((X509_get_extended_key_usage(x) & XKU_SSL_CLIENT) && !(X509_get_extended_key_usage(x) & XKU_SSL_SERVER));
  CHECK(X509_get0_subject_key_id(x) != NULL);
  CHECK(X509_get0_authority_key_id(x) != NULL);
  CHECK(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x), X509_get0_subject_key_id(cax)) == 0);
  /* Random positive 128-bit serial, as hex in the result. */
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  CHECK(BN_num_bytes(bn) == 16 && !BN_is_negative(bn));
  BN_free(bn);
  CHECK_INT(strlen(c.serial), 32);
  /* Validity: a minute of slack before now, `days` after. */
  CHECK_INT(c.not_before, now - 60);
  CHECK_INT(c.not_after, now + 30 * 86400);
  /* Id: SHA-256 of the DER, as AWS IoT computes certificate ids. */
  unsigned char *der = NULL, md[32];
  int n = i2d_X509(x, &der);
  SHA256(der, (size_t)n, md);
  OPENSSL_free(der);
  char hexid[65];
  for (int i = 0; i < 32; i++) sprintf(hexid + 2 * i, "%02x", md[i]);
  CHECK_STR(c.id, hexid);
  char id2[65];
  CHECK(mw_prov_cert_id(c.pem, strlen(c.pem), id2) == MW_OK);
  CHECK_STR(id2, hexid);
  /* Facts. */
  mw_prov_cert_info_t info;
  CHECK(mw_prov_cert_info(c.pem, strlen(c.pem), &info, err, sizeof err) == MW_OK);
  CHECK_STR(info.cn, "0042.abcdef");
  CHECK_STR(info.organization, "Acme");
  CHECK_STR(info.id, hexid);
  CHECK_STR(info.serial, c.serial);
  CHECK_INT(info.not_after, c.not_after);
  CHECK(strstr(info.issuer, "Test Intermediate") != NULL);
  char *pub = NULL;
  CHECK(mw_prov_cert_pubkey_pem(c.pem, strlen(c.pem), &pub) == MW_OK);
  CHECK(pub && strstr(pub, "BEGIN PUBLIC KEY"));
  free(pub);
  /* JITP verification: ours passes, at the right time only. */
  CHECK(mw_prov_ca_verify(ca, c.pem, strlen(c.pem), now, err, sizeof err) == MW_OK);
  CHECK(mw_prov_ca_verify(ca, c.pem, strlen(c.pem), now + 31 * 86400, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "expired") != NULL);
  CHECK(mw_prov_ca_verify(ca, c.pem, strlen(c.pem), now - 3600, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "not valid yet") != NULL);
  mw_prov_ca_t *ca2;
  CHECK(mw_prov_ca_load(other, &ca2, err, sizeof err) == MW_OK);
  CHECK(mw_prov_ca_verify(ca2, c.pem, strlen(c.pem), now, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "not issued by") != NULL);
  /* The CA certificate itself is no device certificate. */
  CHECK(mw_prov_ca_verify(ca, mw_prov_ca_pem(ca), strlen(mw_prov_ca_pem(ca)), now, err, sizeof err) != MW_OK);
  /* Keep the request's CN when none is given; two issues never share a serial. */
  mw_prov_cert_t c2;
  mw_prov_issue_t keep = {NULL, 1, now};
  CHECK(mw_prov_ca_issue_csr(ca, csr, strlen(csr), &keep, &c2, err, sizeof err) == MW_OK);
  CHECK(mw_prov_cert_info(c2.pem, strlen(c2.pem), &info, err, sizeof err) == MW_OK);
  CHECK_STR(info.cn, "0042");
  CHECK(strcmp(c2.serial, c.serial) != 0);
  mw_prov_cert_free(&c2);
  mw_prov_ca_free(ca2);
  X509_free(cax);
  X509_free(x);
  mw_prov_cert_free(&c);
  free(csr);
  EVP_PKEY_free(k);
  mw_prov_ca_free(ca);
}

static void test_validity_is_clamped_to_the_ca(void) {
  mw_prov_ca_t *ca;
  char err[300];
  CHECK(mw_prov_ca_load(dir, &ca, err, sizeof err) == MW_OK);
  EVP_PKEY *k = EVP_EC_gen("P-256");
  int64_t now = (int64_t)time(NULL);
  mw_prov_issue_t opt = {"x", 36500, now};
  mw_prov_cert_t c;
  CHECK(mw_prov_ca_issue_key(ca, k, &opt, &c, err, sizeof err) == MW_OK);
  CHECK(c.not_after <= now + 366 * 86400);
  CHECK(c.not_after > now + 300 * 86400);
  mw_prov_cert_free(&c);
  /* A CA that has expired by then issues nothing. */
  opt.now = now + 400 * 86400;
  CHECK(mw_prov_ca_issue_key(ca, k, &opt, &c, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "expired") != NULL);
  opt.now = now;
  opt.days = 0;
  CHECK(mw_prov_ca_issue_key(ca, k, &opt, &c, err, sizeof err) == MW_ERR_INVALID);
  EVP_PKEY_free(k);
  mw_prov_ca_free(ca);
}

static void test_bad_requests(void) {
  mw_prov_ca_t *ca;
  char err[300];
  CHECK(mw_prov_ca_load(dir, &ca, err, sizeof err) == MW_OK);
  mw_prov_issue_t opt = {"x", 1, (int64_t)time(NULL)};
  mw_prov_cert_t c;
  CHECK(mw_prov_ca_issue_csr(ca, "hello", 5, &opt, &c, err, sizeof err) == MW_ERR_INVALID);
  CHECK(c.pem == NULL);
  /* A request whose signature does not match its key. */
  EVP_PKEY *k = EVP_EC_gen("P-256");
  char *csr = make_csr(k, "dev", NULL);
  char *mid = strstr(csr, "\n") + 20;
  *mid = *mid == 'A' ? 'B' : 'A';
  CHECK(mw_prov_ca_issue_csr(ca, csr, strlen(csr), &opt, &c, err, sizeof err) == MW_ERR_INVALID);
  free(csr);
  /* A commonName that cannot be encoded. */
  csr = make_csr(k, "dev", NULL);
  char longcn[100];
  memset(longcn, 'a', 99);
  longcn[99] = 0;
  opt.cn = longcn;
  CHECK(mw_prov_ca_issue_csr(ca, csr, strlen(csr), &opt, &c, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "commonName") != NULL);
  free(csr);
  /* A small RSA key is refused. */
  EVP_PKEY *rsa = EVP_RSA_gen(1024);
  csr = make_csr(rsa, "weak", NULL);
  opt.cn = NULL;
  CHECK(mw_prov_ca_issue_csr(ca, csr, strlen(csr), &opt, &c, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "2048") != NULL);
  free(csr);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(k);
  mw_prov_ca_free(ca);
}

static void test_load_errors(void) {
  mw_prov_ca_t *ca = NULL;
  char err[400], stem[300];
  CHECK(mw_prov_ca_load("/nonexistent/dir", &ca, err, sizeof err) == MW_ERR_IO);
  CHECK(strstr(err, "/nonexistent/dir.crt") != NULL && ca == NULL);
  /* The stem form works too. */
  snprintf(stem, sizeof stem, "%s/intermediate-ca", dir);
  CHECK(mw_prov_ca_load(stem, &ca, err, sizeof err) == MW_OK);
  mw_prov_ca_free(ca);
  /* Key of another CA. */
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "cp %s/intermediate-ca.crt %s/mixed.crt && cp %s/intermediate-ca.key %s/mixed.key", dir,
           other, other, other);
  CHECK(system(cmd) == 0);
  snprintf(stem, sizeof stem, "%s/mixed", other);
  CHECK(mw_prov_ca_load(stem, &ca, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "does not belong") != NULL);
  /* A device certificate is not a CA. */
  mw_prov_ca_t *good;
  CHECK(mw_prov_ca_load(dir, &good, err, sizeof err) == MW_OK);
  EVP_PKEY *k = EVP_EC_gen("P-256");
  mw_prov_issue_t opt = {"leaf", 1, (int64_t)time(NULL)};
  mw_prov_cert_t c;
  CHECK(mw_prov_ca_issue_key(good, k, &opt, &c, err, sizeof err) == MW_OK);
  snprintf(stem, sizeof stem, "%s/leaf.crt", other);
  prov_test_write(stem, c.pem);
  snprintf(stem, sizeof stem, "%s/leaf.key", other);
  FILE *f = fopen(stem, "w");
  PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
  fclose(f);
  snprintf(stem, sizeof stem, "%s/leaf", other);
  CHECK(mw_prov_ca_load(stem, &ca, err, sizeof err) == MW_ERR_INVALID);
  CHECK(strstr(err, "not a CA") != NULL);
  mw_prov_cert_free(&c);
  EVP_PKEY_free(k);
  mw_prov_ca_free(good);
}

static void test_keygen_and_info_errors(void) {
  EVP_PKEY *k;
  char *pem;
  CHECK(mw_prov_keygen(&k, &pem) == MW_OK);
  CHECK(strstr(pem, "-----BEGIN PRIVATE KEY-----") == pem);
  CHECK(EVP_PKEY_get_bits(k) == 256);
  free(pem);
  EVP_PKEY_free(k);
  mw_prov_cert_info_t info;
  char err[200], id[65];
  CHECK(mw_prov_cert_info("junk", 4, &info, err, sizeof err) == MW_ERR_INVALID);
  CHECK(mw_prov_cert_id("junk", 4, id) == MW_ERR_INVALID);
}

int main(int argc, char **argv) {
  setup();
  static const mw_test_case_t cases[] = {
      MW_TEST(test_issue_from_csr), MW_TEST(test_validity_is_clamped_to_the_ca), MW_TEST(test_bad_requests),
      MW_TEST(test_load_errors), MW_TEST(test_keygen_and_info_errors),
  };
  int rc = mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  prov_test_rmdir(dir);
  prov_test_rmdir(other);
  return rc;
}
