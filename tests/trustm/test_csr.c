/*
** CSRs signed by a file key and by the simulated chip's key: both must verify with
** their own public key, carry the subject asked for, and bad subjects are refused.
*/
#define MW_TEST_IMPLEMENTATION
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mw_csr.h"
#include "mw_log.h"
#include "mw_test.h"
#include "trustm_test_util.h"

static EVP_PKEY *pub_from_spki(const uint8_t *der, size_t len) {
  const unsigned char *p = der;
  return d2i_PUBKEY(NULL, &p, (long)len);
}

static void test_file_key(void) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  CHECK(key != NULL);
  const char *dns[] = {"car-01.local", NULL};
  mw_csr_subject_t subj = {.cn = "car-01", .o = "Moonwire", .c = "DE", .serial = "SN123", .dns = dns};
  char *pem = NULL, err[200] = "", cn[80];
  CHECK_INT(mw_csr_build(key, &subj, &pem, err, sizeof err), MW_OK);
  CHECK(pem && strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----") == pem);
  CHECK_INT(mw_csr_verify(pem, strlen(pem), cn, sizeof cn, err, sizeof err), MW_OK);
  CHECK_STR(cn, "car-01");

  /* One flipped byte in the base64 body breaks either the parse or the signature. */
  size_t n = strlen(pem);
  pem[n / 2] = pem[n / 2] == 'A' ? 'B' : 'A';
  CHECK(mw_csr_verify(pem, n, cn, sizeof cn, err, sizeof err) == MW_ERR_INVALID);
  free(pem);

  subj.c = "Germany";
  CHECK_INT(mw_csr_build(key, &subj, &pem, err, sizeof err), MW_ERR_INVALID);
  CHECK(strstr(err, "two-letter") != NULL);
  CHECK(pem == NULL);
  mw_csr_subject_t nocn = {.o = "x"};
  CHECK_INT(mw_csr_build(key, &nocn, &pem, err, sizeof err), MW_ERR_INVALID);
  CHECK(strstr(err, "CN is required") != NULL);
  CHECK_INT(mw_csr_verify("junk", 4, NULL, 0, err, sizeof err), MW_ERR_INVALID);
  CHECK_INT(mw_csr_verify("", 0, NULL, 0, err, sizeof err), MW_ERR_INVALID);
  EVP_PKEY_free(key);
}

static void test_chip_key(void) {
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  mw_trustm_pubkey_t pk;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN | MW_TRUSTM_USAGE_AUTH, 0, &pk),
            MW_OK);
  EVP_PKEY *pub = pub_from_spki(pk.spki, pk.spki_len), *chip = NULL;
  CHECK(pub != NULL);
  CHECK_INT(mw_trustm_pkey(p.dev, 0xE0F1, pub, &chip), MW_OK);
  mw_csr_subject_t subj = {.cn = "chip-car"};
  char *pem = NULL, err[200] = "", cn[80];
  CHECK_INT(mw_csr_build(chip, &subj, &pem, err, sizeof err), MW_OK);
  CHECK_INT(mw_csr_verify(pem, strlen(pem), cn, sizeof cn, err, sizeof err), MW_OK);
  CHECK_STR(cn, "chip-car");
  /* The request carries the chip's public key, not some other key. */
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
  CHECK(req && EVP_PKEY_eq(X509_REQ_get0_pubkey(req), pub) == 1);
  X509_REQ_free(req);
  BIO_free(b);
  free(pem);
  EVP_PKEY_free(chip);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

static const mw_test_case_t cases[] = {MW_TEST(test_file_key), MW_TEST(test_chip_key)};

int main(int argc, char **argv) {
  mw_log_set_level(MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
