/* The chip's key as the TLS client key: an mw_tls key loader for "trustm:" references. */
#ifndef MW_TRUSTM_TLSKEY_H
#define MW_TRUSTM_TLSKEY_H

#include "mw_tls.h"

/*
** mw_tls_key_loader_fn for MW_KEY_TRUSTM; ud is the open mw_trustm_t. Refuses, with a
** reason in err, a chip key that does not match pub (the certificate's public key).
*/
mw_status_t mw_trustm_tls_key_loader(void *ud, const mw_keyref_t *ref, EVP_PKEY *pub, EVP_PKEY **out, char *err,
                                     size_t errlen);

#endif
