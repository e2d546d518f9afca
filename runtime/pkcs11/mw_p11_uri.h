/*
** PKCS#11 URIs (RFC 7512): "pkcs11:token=dev;object=tls?pin-source=/run/pin&module-path=/usr/lib/x.so".
**
** Pure parsing, no module access: the configuration checker uses it to refuse a bad
** tls.key at start, the token code to find slot, key and PIN. Values are percent-decoded.
** pin-value, pin-source, module-path and module-name are query attributes in the RFC;
** we also accept them in the path (";pin-value=1234"), as many tools write them so.
** Unknown attributes are refused by name, except vendor ones ("x-...").
*/
#ifndef MW_P11_URI_H
#define MW_P11_URI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"

/* Which attributes the URI carries (mw_p11_uri_t.has). */
enum {
  MW_P11_HAS_TOKEN = 1u << 0,
  MW_P11_HAS_MANUFACTURER = 1u << 1,
  MW_P11_HAS_MODEL = 1u << 2,
  MW_P11_HAS_SERIAL = 1u << 3,
  MW_P11_HAS_SLOT_ID = 1u << 4,
  MW_P11_HAS_SLOT_DESCRIPTION = 1u << 5,
  MW_P11_HAS_SLOT_MANUFACTURER = 1u << 6,
  MW_P11_HAS_OBJECT = 1u << 7,
  MW_P11_HAS_ID = 1u << 8,
  MW_P11_HAS_TYPE = 1u << 9,
  MW_P11_HAS_PIN_VALUE = 1u << 10,
  MW_P11_HAS_PIN_SOURCE = 1u << 11,
  MW_P11_HAS_MODULE_PATH = 1u << 12,
  MW_P11_HAS_LIBRARY_MANUFACTURER = 1u << 13,
  MW_P11_HAS_LIBRARY_DESCRIPTION = 1u << 14,
};

typedef enum {
  MW_P11_TYPE_ANY = 0,
  MW_P11_TYPE_PRIVATE,
  MW_P11_TYPE_PUBLIC,
  MW_P11_TYPE_CERT,
  MW_P11_TYPE_SECRET,
  MW_P11_TYPE_DATA,
} mw_p11_type_t;

#define MW_P11_ID_MAX 128

typedef struct {
  unsigned has;
  /* token: CK_TOKEN_INFO fields (at most their size in bytes) */
  char token[33], manufacturer[33], model[17], serial[17];
  /* slot */
  unsigned long slot_id;
  char slot_description[65], slot_manufacturer[33];
  /* library (CK_INFO) */
  char library_manufacturer[33], library_description[33];
  /* object */
  char object[257];                 /* CKA_LABEL */
  uint8_t id[MW_P11_ID_MAX];        /* CKA_ID */
  size_t id_len;
  mw_p11_type_t type;
  /* query */
  char pin_value[257];
  char pin_source[1024];
  char module_path[1024];
} mw_p11_uri_t;

/*
** Parses s (which starts with "pkcs11:", any case). On failure writes a reason that
** never contains a PIN into why and returns MW_ERR_INVALID. The result holds the PIN in
** clear; wipe it with mw_p11_uri_clear() when done.
*/
mw_status_t mw_p11_uri_parse(const char *s, mw_p11_uri_t *out, char *why, size_t whylen);
void mw_p11_uri_clear(mw_p11_uri_t *u);

/*
** Copies a key reference for messages and logs with the value of pin-value replaced by
** "***" (any key reference; only pkcs11: URIs change). Always NUL-terminates.
*/
void mw_p11_uri_redact(const char *s, char *out, size_t cap);

/* Writes the URI of an object: "pkcs11:token=...;object=...;id=%01%02;type=private". */
void mw_p11_uri_format(const char *token, const char *label, const uint8_t *id, size_t id_len, mw_p11_type_t type,
                       char *out, size_t cap);

const char *mw_p11_type_name(mw_p11_type_t t);

#endif
