/*
** The TLS client context. The runtime builds the SSL_CTX itself and hands it to
** libmosquitto (MOSQ_OPT_SSL_CTX) so that we control verification, SNI, ALPN and,
** above all, where the private key lives (file, secure element, PKCS#11 token).
** When a handshake fails, mw_tls_explain() says in plain words which check failed.
*/
#ifndef MW_TLS_H
#define MW_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "mw_keyref.h"
#include "mw_status.h"

typedef struct {
  const char *ca;    /* PEM bundle the server certificate must chain to */
  const char *cert;  /* client certificate (chain) PEM */
  const char *key;   /* key reference, see mw_keyref_parse */
  const char *alpn;  /* e.g. "x-amzn-mqtt-ca" for AWS IoT on port 443; NULL for none */
  const char *host;  /* name the server certificate must carry (DNS or IP SAN) */
} mw_tls_config_t;

/*
** Loads the EVP_PKEY for a non-file key reference; pub is the public key of the client
** certificate (so a loader can check the pair). Returns MW_OK and a new reference in *out.
*/
typedef mw_status_t (*mw_tls_key_loader_fn)(void *ud, const mw_keyref_t *ref, EVP_PKEY *pub, EVP_PKEY **out,
                                            char *err, size_t errlen);
void mw_tls_set_key_loader(mw_key_kind_t kind, mw_tls_key_loader_fn fn, void *ud);

typedef struct mw_tls_ctx mw_tls_ctx_t;

/* Builds the context: TLS 1.2 minimum, peer verification with host name, SNI, ALPN, client chain+key. */
mw_status_t mw_tls_ctx_new(const mw_tls_config_t *cfg, mw_tls_ctx_t **out, char *err, size_t errlen);
void mw_tls_ctx_free(mw_tls_ctx_t *t);
SSL_CTX *mw_tls_ctx_ssl(mw_tls_ctx_t *t);

/* Forget what the last handshake recorded; call before each connection attempt. */
void mw_tls_reset_diag(mw_tls_ctx_t *t);
/*
** After a failed connection: a one-line reason if the TLS layer recorded one (certificate
** verification error with which certificate and why, or an alert from the server).
** Returns false when TLS recorded nothing.
*/
bool mw_tls_explain(mw_tls_ctx_t *t, char *buf, size_t len);
/* The X509_V_ERR_* code of the last verification failure, 0 if none. */
int mw_tls_verify_error(mw_tls_ctx_t *t);

#endif
