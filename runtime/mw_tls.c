#include "mw_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_p11_uri.h"

struct mw_tls_ctx {
  SSL_CTX *ctx;
  char host[256];
  /* What the last handshake saw; written by OpenSSL callbacks, read after failure. */
  int verify_err;
  int verify_depth;
  char verify_subject[256];
  char alert[128];
  int alert_received;
};

static struct {
  mw_tls_key_loader_fn fn;
  void *ud;
} loaders[3];

static int ex_index = -1;

void mw_tls_set_key_loader(mw_key_kind_t kind, mw_tls_key_loader_fn fn, void *ud) {
  if ((unsigned)kind < 3) {
    loaders[kind].fn = fn;
    loaders[kind].ud = ud;
  }
}

static void ssl_errors(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  snprintf(err, errlen, "%s%s%s", what, *buf ? ": " : "", buf);
}

static mw_tls_ctx_t *from_store(X509_STORE_CTX *xs) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  return ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index) : NULL;
}

/* Records the first verification failure; never changes OpenSSL's verdict. */
static int verify_cb(int ok, X509_STORE_CTX *xs) {
  if (!ok) {
    mw_tls_ctx_t *t = from_store(xs);
    if (t && !t->verify_err) {
      t->verify_err = X509_STORE_CTX_get_error(xs);
      t->verify_depth = X509_STORE_CTX_get_error_depth(xs);
      X509 *cert = X509_STORE_CTX_get_current_cert(xs);
      t->verify_subject[0] = '\0';
      if (cert) X509_NAME_oneline(X509_get_subject_name(cert), t->verify_subject, sizeof t->verify_subject);
    }
  }
  return ok;
}

/* Records alerts the server sends (e.g. "unknown ca" when it rejects our certificate). */
static void info_cb(const SSL *ssl, int where, int ret) {
  if (!(where & SSL_CB_ALERT)) return;
  mw_tls_ctx_t *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
  if (!t) return;
  if ((where & SSL_CB_READ) && !t->alert_received) {
    t->alert_received = 1;
    snprintf(t->alert, sizeof t->alert, "%s", SSL_alert_desc_string_long(ret));
  }
}

static int is_ip(const char *host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static mw_status_t load_key(mw_tls_ctx_t *t, const mw_tls_config_t *cfg, char *err, size_t errlen) {
  mw_keyref_t ref;
  char why[256];
  if (mw_keyref_parse(cfg->key, &ref, why, sizeof why) != MW_OK) {
    snprintf(err, errlen, "tls.key: %s", why);
    return MW_ERR_INVALID;
  }
  X509 *leaf = SSL_CTX_get0_certificate(t->ctx);
  if (ref.kind == MW_KEY_FILE) {
    EVP_PKEY *pkey = NULL;
    BIO *bio = BIO_new_file(ref.text, "r");
    if (bio) pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pkey) {
      char what[1100];
      snprintf(what, sizeof what, "tls.key: cannot load private key '%s'", ref.text);
      ssl_errors(err, errlen, what);
      return MW_ERR_TLS;
    }
    /* Checked here, because OpenSSL's own message for a mismatch is cryptic. */
    int match = leaf && X509_check_private_key(leaf, pkey) == 1;
    int ok = match && SSL_CTX_use_PrivateKey(t->ctx, pkey) == 1;
    EVP_PKEY_free(pkey);
    if (!match) {
      ERR_clear_error();
      snprintf(err, errlen, "tls.key does not match the public key in tls.cert ('%s')", ref.text);
      return MW_ERR_TLS;
    }
    if (!ok) {
      ssl_errors(err, errlen, "tls.key cannot be used");
      return MW_ERR_TLS;
    }
  } else {
    char shown[1100];
    mw_p11_uri_redact(cfg->key, shown, sizeof shown); /* never a PIN in a message */
    if (!loaders[ref.kind].fn) {
      snprintf(err, errlen, "tls.key: %s keys are not available in this build or configuration (%s)",
               mw_keyref_kind_name(ref.kind), shown);
      return MW_ERR_UNSUPPORTED;
    }
    EVP_PKEY *pub = leaf ? X509_get0_pubkey(leaf) : NULL;
    EVP_PKEY *pkey = NULL;
    char lerr[512] = "";
    mw_status_t st = loaders[ref.kind].fn(loaders[ref.kind].ud, &ref, pub, &pkey, lerr, sizeof lerr);
    if (st != MW_OK) {
      snprintf(err, errlen, "tls.key %s: %s", shown, lerr);
      return st;
    }
    int ok = SSL_CTX_use_PrivateKey(t->ctx, pkey);
    EVP_PKEY_free(pkey);
    if (ok != 1) {
      ssl_errors(err, errlen, "tls.key: the key cannot be used with the certificate");
      return MW_ERR_TLS;
    }
  }
  if (SSL_CTX_check_private_key(t->ctx) != 1) {
    ssl_errors(err, errlen, "tls.key does not match the public key in tls.cert");
    return MW_ERR_TLS;
  }
  return MW_OK;
}

mw_status_t mw_tls_ctx_new(const mw_tls_config_t *cfg, mw_tls_ctx_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->ca || !cfg->cert || !cfg->key || !cfg->host) {
    snprintf(err, errlen, "tls needs ca, cert and key");
    return MW_ERR_INVALID;
  }
  if (ex_index < 0) ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  mw_tls_ctx_t *t = calloc(1, sizeof *t);
  if (!t) return MW_ERR_NOMEM;
  mw_status_t st = MW_ERR_TLS;
  snprintf(t->host, sizeof t->host, "%s", cfg->host);
  ERR_clear_error();
  t->ctx = SSL_CTX_new(TLS_client_method());
  if (!t->ctx) {
    ssl_errors(err, errlen, "cannot create TLS context");
    goto fail;
  }
  SSL_CTX_set_ex_data(t->ctx, ex_index, t);
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(t->ctx, cfg->ca, NULL) != 1) {
    char what[600];
    snprintf(what, sizeof what, "tls.ca: cannot load CA certificates from '%s'", cfg->ca);
    ssl_errors(err, errlen, what);
    goto fail;
  }
  SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, verify_cb);
  SSL_CTX_set_info_callback(t->ctx, info_cb);
  /* libmosquitto checks nothing when given its own SSL_CTX: the name check is ours. */
  X509_VERIFY_PARAM *param = SSL_CTX_get0_param(t->ctx);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  int ok = is_ip(cfg->host) ? X509_VERIFY_PARAM_set1_ip_asc(param, cfg->host)
                            : X509_VERIFY_PARAM_set1_host(param, cfg->host, 0);
  if (ok != 1) {
    snprintf(err, errlen, "broker.host '%s' cannot be used for certificate name checks", cfg->host);
    goto fail;
  }
  if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->cert) != 1) {
    char what[600];
    snprintf(what, sizeof what, "tls.cert: cannot load certificate chain from '%s'", cfg->cert);
    ssl_errors(err, errlen, what);
    goto fail;
  }
  st = load_key(t, cfg, err, errlen);
  if (st != MW_OK) goto fail;
  if (cfg->alpn && *cfg->alpn) {
    size_t n = strlen(cfg->alpn);
    unsigned char wire[256];
    if (n > 255) {
      snprintf(err, errlen, "broker.alpn is longer than 255 bytes");
      st = MW_ERR_INVALID;
      goto fail;
    }
    wire[0] = (unsigned char)n;
    memcpy(wire + 1, cfg->alpn, n);
    /* Unlike most OpenSSL calls, this one returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(t->ctx, wire, (unsigned)n + 1) != 0) {
      ssl_errors(err, errlen, "cannot set ALPN");
      st = MW_ERR_TLS;
      goto fail;
    }
  }
  *out = t;
  return MW_OK;
fail:
  mw_tls_ctx_free(t);
  return st;
}

void mw_tls_ctx_free(mw_tls_ctx_t *t) {
  if (!t) return;
  SSL_CTX_free(t->ctx);
  free(t);
}

SSL_CTX *mw_tls_ctx_ssl(mw_tls_ctx_t *t) { return t->ctx; }

void mw_tls_reset_diag(mw_tls_ctx_t *t) {
  t->verify_err = 0;
  t->verify_depth = 0;
  t->verify_subject[0] = '\0';
  t->alert[0] = '\0';
  t->alert_received = 0;
}

int mw_tls_verify_error(mw_tls_ctx_t *t) { return t->verify_err; }

bool mw_tls_explain(mw_tls_ctx_t *t, char *buf, size_t len) {
  const char *which = t->verify_depth == 0 ? "the broker's certificate" : "a CA certificate in the broker's chain";
  switch (t->verify_err) {
  case 0:
    break;
  case X509_V_ERR_CERT_HAS_EXPIRED:
    snprintf(buf, len, "TLS: %s has expired (%s)", which, t->verify_subject);
    return true;
  case X509_V_ERR_CERT_NOT_YET_VALID:
    snprintf(buf, len, "TLS: %s is not valid yet (%s); check the device clock", which, t->verify_subject);
    return true;
  case X509_V_ERR_HOSTNAME_MISMATCH:
  case X509_V_ERR_IP_ADDRESS_MISMATCH:
    snprintf(buf, len, "TLS: the broker's certificate does not match host name '%s' (%s)", t->host,
             t->verify_subject);
    return true;
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    snprintf(buf, len, "TLS: the broker's certificate is not issued by a CA in tls.ca (unknown CA: %s)",
             t->verify_subject);
    return true;
  default:
    snprintf(buf, len, "TLS: the broker's certificate failed verification: %s (%s)",
             X509_verify_cert_error_string(t->verify_err), t->verify_subject);
    return true;
  }
  if (t->alert_received) {
    const char *hint = "";
    if (strstr(t->alert, "unknown CA") || strstr(t->alert, "bad certificate") ||
        strstr(t->alert, "certificate expired") || strstr(t->alert, "certificate unknown"))
      hint = "; the broker rejected this device's certificate";
    snprintf(buf, len, "TLS: the broker sent alert '%s'%s", t->alert, hint);
    return true;
  }
  return false;
}
