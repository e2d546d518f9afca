#include "tls_test_util.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mw_test.h"

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

static void setup_ca(void) {
  if (ca_key) return;
  ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  ca_cert = make_cert(ca_key, "Moonwire test CA", ca_key, NULL, true);
}

/* A leaf certificate for pub from the test CA. */
static X509 *issue(EVP_PKEY *pub, const char *cn) {
  setup_ca();
  return make_cert(pub, cn, ca_key, ca_cert, false);
}

SSL_CTX *ttu_server_ctx(void) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *c = issue(k, "localhost");
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  CHECK(SSL_CTX_use_certificate(ctx, c) == 1);
  CHECK(SSL_CTX_use_PrivateKey(ctx, k) == 1);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  X509_free(c);
  EVP_PKEY_free(k);
  return ctx;
}

SSL_CTX *ttu_client_ctx(EVP_PKEY *cert_pub, EVP_PKEY *key) {
  X509 *c = issue(cert_pub, "device-1");
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  CHECK(SSL_CTX_use_certificate(ctx, c) == 1);
  if (key) {
    unsigned char *der = NULL;
    CHECK(i2d_PrivateKey(key, &der) <= 0); /* there is no private key on the host */
    OPENSSL_free(der);
    ERR_clear_error();
    CHECK(SSL_CTX_use_PrivateKey(ctx, key) == 1);
    CHECK(SSL_CTX_check_private_key(ctx) == 1);
  }
  X509_free(c);
  return ctx;
}

bool ttu_handshake(SSL_CTX *cctx, SSL_CTX *sctx, int version, const char *sigalgs) {
  SSL *cl = SSL_new(cctx), *sv = SSL_new(sctx);
  BIO *bc, *bs;
  BIO_new_bio_pair(&bc, 0, &bs, 0);
  SSL_set_bio(cl, bc, bc);
  SSL_set_bio(sv, bs, bs);
  if (version) {
    SSL_set_max_proto_version(cl, version);
    SSL_set_min_proto_version(cl, version);
  }
  if (sigalgs) CHECK(SSL_set1_client_sigalgs_list(sv, sigalgs) == 1);
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
    if (version) CHECK_INT(SSL_version(cl), version);
  }
  ERR_clear_error();
  SSL_free(cl);
  SSL_free(sv);
  return ok;
}

void ttu_teardown(void) {
  EVP_PKEY_free(ca_key);
  X509_free(ca_cert);
  ca_key = NULL;
  ca_cert = NULL;
}
