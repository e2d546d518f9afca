/*
** A private-key reference from the configuration (tls.key). Keys may live in a file,
** in an OPTIGA Trust M slot or in a PKCS#11 token; the TLS layer asks a registered
** loader for the EVP_PKEY, so the key itself never has to exist in host memory.
*/
#ifndef MW_KEYREF_H
#define MW_KEYREF_H

#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"

typedef enum { MW_KEY_FILE = 0, MW_KEY_TRUSTM, MW_KEY_PKCS11 } mw_key_kind_t;

typedef struct {
  mw_key_kind_t kind;
  uint16_t oid;       /* MW_KEY_TRUSTM: key object, e.g. 0xE0F1 */
  char text[1024];    /* MW_KEY_FILE: the path; MW_KEY_PKCS11: the whole URI */
} mw_keyref_t;

/*
** Accepts "path/to/key.pem", "file:path", "trustm:0xE0F1", the vendor tools' "0xe0f1:^"
** form, and RFC 7512 "pkcs11:..." URIs. Writes what is wrong into why on failure.
*/
mw_status_t mw_keyref_parse(const char *s, mw_keyref_t *out, char *why, size_t whylen);
const char *mw_keyref_kind_name(mw_key_kind_t kind);

#endif
