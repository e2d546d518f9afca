/*
** The chip's key as a TLS client key: a mutual-TLS handshake over memory BIOs between an
** OpenSSL server (throwaway CA from tests/common) and a client whose private key is in the
** simulated chip, so every client signature is a CalcSign.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "tls_test_util.h"
#include "trustm_test_util.h"

/* Client context whose key is key_oid in the chip, with a certificate for cert_pub. */
static SSL_CTX *client_ctx(mw_trustm_t *dev, uint16_t key_oid, EVP_PKEY *cert_pub, bool null_pub) {
  EVP_PKEY *pk = NULL;
  CHECK_INT(mw_trustm_pkey(dev, key_oid, null_pub ? NULL : cert_pub, &pk), MW_OK);
  SSL_CTX *ctx = ttu_client_ctx(cert_pub, pk);
  EVP_PKEY_free(pk); /* the context keeps its own reference */
  return ctx;
}

static EVP_PKEY *spki_key(const mw_trustm_pubkey_t *pk) {
  const unsigned char *q = pk->spki;
  return d2i_PUBKEY(NULL, &q, (long)pk->spki_len);
}

static void tls_with_chip_key(void) {
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  if (!p.dev) return;
  mw_trustm_pubkey_t pk;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN | MW_TRUSTM_USAGE_AUTH, 0, &pk),
            MW_OK);
  EVP_PKEY *pub = spki_key(&pk);
  SSL_CTX *sctx = ttu_server_ctx(), *cctx = client_ctx(p.dev, 0xE0F1, pub, false);
  mw_trustm_sim_stats_t a, b;
  mw_trustm_sim_stats(p.sim, &a);
  CHECK(ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  CHECK(ttu_handshake(cctx, sctx, TLS1_2_VERSION, NULL));
  mw_trustm_sim_stats(p.sim, &b);
  CHECK_INT(a.sec_credit - b.sec_credit, 2); /* one CalcSign per handshake */
  /* the chip connection outlives the handle while the SSL_CTX holds the key */
  mw_trustm_close(p.dev);
  p.dev = NULL;
  CHECK(ttu_handshake(cctx, sctx, 0, NULL));
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

static void tls_p384_and_stored_pubkey(void) {
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  if (!p.dev) return;
  mw_trustm_pubkey_t pk;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F2, MW_TRUSTM_NIST_P384, MW_TRUSTM_USAGE_SIGN, MW_TRUSTM_GEN_STORE_PUBKEY, &pk),
            MW_OK);
  EVP_PKEY *pub = spki_key(&pk);
  SSL_CTX *sctx = ttu_server_ctx(), *cctx = client_ctx(p.dev, 0xE0F2, pub, true);
  CHECK(ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

/* A certificate for one chip key, signatures from another: the server must refuse. */
static void tls_wrong_key_fails(void) {
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  if (!p.dev) return;
  mw_trustm_pubkey_t k1, k2;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, 0, &k1), MW_OK);
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F2, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, 0, &k2), MW_OK);
  EVP_PKEY *pub = spki_key(&k1);
  SSL_CTX *sctx = ttu_server_ctx(), *cctx = client_ctx(p.dev, 0xE0F2, pub, false);
  CHECK(!ttu_handshake(cctx, sctx, TLS1_3_VERSION, NULL));
  /* and a key the chip refuses to use: the handshake fails cleanly */
  SSL_CTX *c2 = client_ctx(p.dev, 0xE0F3, pub, false);
  CHECK(!ttu_handshake(c2, sctx, TLS1_3_VERSION, NULL));
  SSL_CTX_free(c2);
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

static void teardown(void) {
  ttu_teardown();
}

static const mw_test_case_t cases[] = {MW_TEST(tls_with_chip_key), MW_TEST(tls_p384_and_stored_pubkey),
                                       MW_TEST(tls_wrong_key_fails), MW_TEST(teardown)};

int main(int argc, char **argv) {
  mw_log_set_level(getenv("TRUSTM_DEBUG") ? MW_LOG_DEBUG : MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
