/*
** The chip's key as a TLS client key: a mutual-TLS handshake over memory BIOs between an
** OpenSSL server (throwaway CA made here) and a client whose private key is in the
** simulated chip, so every client signature is a CalcSign.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mw_log.h"
#include "trustm_test_util.h"

static EVP_PKEY *ca_key;
static X509 *ca_cert;

static X509 *make_cert(EVP_PKEY *pub, const char *cn, EVP_PKEY *signer, X509 *issuer, bool ca) {
  X509 *x = X509_new();
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_set_version(x, 2);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
  X509_set_pubkey(x, pub);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  X509_sign(x, signer, EVP_sha256());
  return x;
}

static SSL_CTX *server_ctx(void) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *c = make_cert(k, "localhost", ca_key, ca_cert, false);
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  CHECK(SSL_CTX_use_certificate(ctx, c) == 1);
  CHECK(SSL_CTX_use_PrivateKey(ctx, k) == 1);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  X509_free(c);
  EVP_PKEY_free(k);
  return ctx;
}

/* Client context whose key is key_oid in the chip, with a certificate for cert_pub. */
static SSL_CTX *client_ctx(mw_trustm_t *dev, uint16_t key_oid, EVP_PKEY *cert_pub, bool null_pub) {
  X509 *c = make_cert(cert_pub, "device-1", ca_key, ca_cert, false);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  CHECK(SSL_CTX_use_certificate(ctx, c) == 1);
  EVP_PKEY *pk = NULL;
  CHECK_INT(mw_trustm_pkey(dev, key_oid, null_pub ? NULL : X509_get0_pubkey(c), &pk), MW_OK);
  if (pk) {
    unsigned char *der = NULL;
    CHECK(i2d_PrivateKey(pk, &der) <= 0); /* there is no private key on the host */
    OPENSSL_free(der);
    ERR_clear_error();
    CHECK(SSL_CTX_use_PrivateKey(ctx, pk) == 1);
    CHECK(SSL_CTX_check_private_key(ctx) == 1);
  }
  EVP_PKEY_free(pk); /* the context keeps its own reference */
  X509_free(c);
  return ctx;
}

/* Runs the handshake and a ping-pong; returns true when both sides succeeded. */
static bool handshake(SSL_CTX *cctx, SSL_CTX *sctx, int max_version) {
  SSL *cl = SSL_new(cctx), *sv = SSL_new(sctx);
  BIO *bc, *bs;
  BIO_new_bio_pair(&bc, 0, &bs, 0);
  SSL_set_bio(cl, bc, bc);
  SSL_set_bio(sv, bs, bs);
  if (max_version) SSL_set_max_proto_version(cl, max_version);
  SSL_set_connect_state(cl);
  SSL_set_accept_state(sv);
  int rc = 0, rs = 0;
  for (int i = 0; i < 50 && (rc != 1 || rs != 1); i++) {
    if (rc != 1) rc = SSL_do_handshake(cl);
    if (rs != 1) rs = SSL_do_handshake(sv);
    if (rc <= 0 && SSL_get_error(cl, rc) != SSL_ERROR_WANT_READ) break;
    if (rs <= 0 && SSL_get_error(sv, rs) != SSL_ERROR_WANT_READ) break;
  }
  bool ok = rc == 1 && rs == 1;
  if (ok) {
    char buf[8] = {0};
    X509 *peer = SSL_get1_peer_certificate(sv);
    CHECK(peer != NULL);
    X509_free(peer);
    CHECK_INT(SSL_write(cl, "ping", 4), 4);
    CHECK_INT(SSL_read(sv, buf, sizeof buf), 4);
    CHECK_STR(buf, "ping");
    if (max_version) CHECK_INT(SSL_version(cl), max_version);
  }
  ERR_clear_error();
  SSL_free(cl);
  SSL_free(sv);
  return ok;
}

static void setup_ca(void) {
  if (ca_key) return;
  ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  ca_cert = make_cert(ca_key, "Moonwire test CA", ca_key, NULL, true);
}

static EVP_PKEY *spki_key(const mw_trustm_pubkey_t *pk) {
  const unsigned char *q = pk->spki;
  return d2i_PUBKEY(NULL, &q, (long)pk->spki_len);
}

static void tls_with_chip_key(void) {
  setup_ca();
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  if (!p.dev) return;
  mw_trustm_pubkey_t pk;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN | MW_TRUSTM_USAGE_AUTH, 0, &pk),
            MW_OK);
  EVP_PKEY *pub = spki_key(&pk);
  SSL_CTX *sctx = server_ctx(), *cctx = client_ctx(p.dev, 0xE0F1, pub, false);
  mw_trustm_sim_stats_t a, b;
  mw_trustm_sim_stats(p.sim, &a);
  CHECK(handshake(cctx, sctx, TLS1_3_VERSION));
  CHECK(handshake(cctx, sctx, TLS1_2_VERSION));
  mw_trustm_sim_stats(p.sim, &b);
  CHECK_INT(a.sec_credit - b.sec_credit, 2); /* one CalcSign per handshake */
  /* the chip connection outlives the handle while the SSL_CTX holds the key */
  mw_trustm_close(p.dev);
  p.dev = NULL;
  CHECK(handshake(cctx, sctx, 0));
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

static void tls_p384_and_stored_pubkey(void) {
  setup_ca();
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  if (!p.dev) return;
  mw_trustm_pubkey_t pk;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F2, MW_TRUSTM_NIST_P384, MW_TRUSTM_USAGE_SIGN, MW_TRUSTM_GEN_STORE_PUBKEY, &pk),
            MW_OK);
  EVP_PKEY *pub = spki_key(&pk);
  SSL_CTX *sctx = server_ctx(), *cctx = client_ctx(p.dev, 0xE0F2, pub, true);
  CHECK(handshake(cctx, sctx, TLS1_3_VERSION));
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

/* A certificate for one chip key, signatures from another: the server must refuse. */
static void tls_wrong_key_fails(void) {
  setup_ca();
  tu_pair_t p;
  CHECK_INT(tu_open(&p, NULL, NULL), 0);
  if (!p.dev) return;
  mw_trustm_pubkey_t k1, k2;
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F1, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, 0, &k1), MW_OK);
  CHECK_INT(mw_trustm_gen_key(p.dev, 0xE0F2, MW_TRUSTM_NIST_P256, MW_TRUSTM_USAGE_SIGN, 0, &k2), MW_OK);
  EVP_PKEY *pub = spki_key(&k1);
  SSL_CTX *sctx = server_ctx(), *cctx = client_ctx(p.dev, 0xE0F2, pub, false);
  CHECK(!handshake(cctx, sctx, TLS1_3_VERSION));
  /* and a key the chip refuses to use: the handshake fails cleanly */
  SSL_CTX *c2 = client_ctx(p.dev, 0xE0F3, pub, false);
  CHECK(!handshake(c2, sctx, TLS1_3_VERSION));
  SSL_CTX_free(c2);
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  EVP_PKEY_free(pub);
  tu_close(&p);
}

static void teardown(void) {
  EVP_PKEY_free(ca_key);
  X509_free(ca_cert);
  ca_key = NULL;
  ca_cert = NULL;
}

static const mw_test_case_t cases[] = {MW_TEST(tls_with_chip_key), MW_TEST(tls_p384_and_stored_pubkey),
                                       MW_TEST(tls_wrong_key_fails), MW_TEST(teardown)};

int main(int argc, char **argv) {
  mw_log_set_level(getenv("TRUSTM_DEBUG") ? MW_LOG_DEBUG : MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
