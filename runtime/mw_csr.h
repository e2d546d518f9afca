/*
** PKCS#10 certificate requests signed by any EVP_PKEY: a file key, the Trust M key
** (mw_trustm_pkey) or a PKCS#11 key. The private key is only used through the
** EVP_PKEY, never read, so a key held in hardware stays there.
*/
#ifndef MW_CSR_H
#define MW_CSR_H

#include <openssl/evp.h>
#include <stddef.h>

#include "mw_status.h"

typedef struct {
  const char *cn;           /* commonName, required (AWS fleet provisioning uses the serial) */
  const char *o, *ou;       /* organizationName, organizationalUnitName; NULL to omit */
  const char *c, *st, *l;   /* country (2 letters), state, locality; NULL to omit */
  const char *serial;       /* serialNumber attribute; NULL to omit */
  const char *const *dns;   /* subjectAltName DNS names, NULL-terminated; NULL for none */
} mw_csr_subject_t;

/*
** Builds a CSR for key's public half and signs it with key (ECDSA/RSA with SHA-256).
** On success *pem is a malloc'd NUL-terminated PEM string the caller frees.
** Errors: MW_ERR_INVALID (bad subject field, explained in err), MW_ERR_DEVICE when
** signing failed (the key's backend refused; its reason is in the log), MW_ERR_NOMEM.
*/
mw_status_t mw_csr_build(EVP_PKEY *key, const mw_csr_subject_t *subj, char **pem, char *err, size_t errlen);

/*
** Parses a PEM CSR and checks its self-signature. With cn != NULL (buffer of cnlen
** bytes) returns the subject's commonName there. Used by the provisioning service on
** requests from the network, so it bounds what it accepts.
*/
mw_status_t mw_csr_verify(const char *pem, size_t len, char *cn, size_t cnlen, char *err, size_t errlen);

#endif
