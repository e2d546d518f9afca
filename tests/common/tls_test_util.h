/*
** TLS for the unit tests of hardware keys: a throwaway CA made on first use, a server
** context that demands a client certificate from it, a client context around a key under
** test, and a handshake plus ping over a memory BIO pair (no sockets, no threads).
** Checks go through mw_test.h, so a failure names the test that was running.
*/
#ifndef TLS_TEST_UTIL_H
#define TLS_TEST_UTIL_H

#include <stdbool.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

/* Server with a fresh P-256 key ("localhost") that requires a client certificate from the CA. */
SSL_CTX *ttu_server_ctx(void);

/*
** Client with a certificate for cert_pub and key as its private key (NULL: none, for a
** key the test failed to make). Checks that key has no private part to export and that
** the context accepts it as the certificate's key. The context takes its own reference.
*/
SSL_CTX *ttu_client_ctx(EVP_PKEY *cert_pub, EVP_PKEY *key);

/*
** Handshake and a ping-pong. version (0: any) pins the client's protocol version;
** sigalgs (NULL: default) is the list the server accepts from the client. True when
** both sides succeeded; the negotiated version and the client certificate are checked.
*/
bool ttu_handshake(SSL_CTX *cctx, SSL_CTX *sctx, int version, const char *sigalgs);

/* Frees the CA. */
void ttu_teardown(void);

#endif
