/*
** Keys in a PKCS#11 token (RFC 7512 "pkcs11:" URIs): the second hardware path next to
** the OPTIGA Trust M. The module is dlopen()ed (module-path= in the URI, else the
** configured or default module), initialised once per process and finalised when the
** last user is gone. A handle is one logged-in session on one token; it stays open for
** the life of the handle, and EVP_PKEYs made from it keep it alive, so the TLS key
** works for as long as the SSL_CTX holding it.
**
** The private key never leaves the token: signatures are made by C_Sign (CKM_ECDSA on
** the digest for EC keys; CKM_RSA_PKCS with a DigestInfo, or CKM_RSA_X_509 on a
** PSS-encoded block, for RSA keys). Keys generated here are CKA_SENSITIVE and not
** CKA_EXTRACTABLE.
**
** A PIN (pin-value=, pin-source=FILE) is only passed to C_Login; it never appears in an
** error message or the log. A handle is for one thread.
*/
#ifndef MW_PKCS11_H
#define MW_PKCS11_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "mw_p11_uri.h"
#include "mw_status.h"

/* SoftHSM2's module on Debian: the default when neither the URI nor the configuration names one. */
#define MW_P11_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

typedef struct mw_p11 mw_p11_t;

typedef struct {
  const char *module; /* module when the URI has no module-path=; NULL: MW_P11_DEFAULT_MODULE */
  bool rw;            /* read-write session (needed to generate keys) */
} mw_p11_open_opts_t;

/*
** Loads the module, finds the one token the URI names (token=, manufacturer=, model=,
** serial=, slot-id=, slot-description=...; with none of them the module must have
** exactly one initialised token), opens a session and logs in when the URI gives a
** PIN or the token requires login. Errors, in err:
**   MW_ERR_INVALID   the URI does not parse, or the PIN file cannot be read
**   MW_ERR_IO        the module cannot be loaded or initialised
**   MW_ERR_NOT_FOUND no such token (the message lists the tokens there are)
**   MW_ERR_REFUSED   login refused (wrong PIN: CKR_PIN_INCORRECT, locked PIN, ...)
**   MW_ERR_DEVICE    any other failure the module reports (named CKR_...)
*/
mw_status_t mw_p11_open(const char *uri, const mw_p11_open_opts_t *opts, mw_p11_t **out, char *err, size_t errlen);
/* Drops the caller's reference; the session lives on while EVP_PKEYs from mw_p11_pkey() use it. */
void mw_p11_close(mw_p11_t *t);

/* The token's label, as found. */
const char *mw_p11_token_label(const mw_p11_t *t);

typedef enum { MW_P11_KEY_EC = 1, MW_P11_KEY_RSA = 2 } mw_p11_key_type_t;

/* What a private key object says about itself (C_GetAttributeValue). */
typedef struct {
  mw_p11_key_type_t type;
  unsigned bits;               /* EC: field size (256 for P-256); RSA: modulus bits */
  char curve[16];              /* "P-256", "P-384", "P-521", or "" */
  char label[257];
  uint8_t id[MW_P11_ID_MAX];
  size_t id_len;
  bool sensitive, extractable, never_extractable, always_sensitive, local, can_sign, always_authenticate;
  bool value_readable;         /* CKA_VALUE (the private key) could be read: must be false */
  char uri[1200];              /* the key's own URI (token, object, id, type=private), no PIN */
} mw_p11_keyinfo_t;

/* Finds the private key the URI names by object= and/or id= (exactly one must match). */
mw_status_t mw_p11_key_info(mw_p11_t *t, mw_p11_keyinfo_t *info, char *err, size_t errlen);

/*
** The public half of that key: from the public-key object with the same CKA_ID (or
** label), else from a certificate object with it, else (RSA) from the private key's
** public attributes. MW_ERR_NOT_FOUND when the token has none. The caller frees *pub.
*/
mw_status_t mw_p11_pubkey(mw_p11_t *t, EVP_PKEY **pub, char *err, size_t errlen);

/*
** An EVP_PKEY whose private operations run C_Sign with that key, usable as the client key
** of an SSL_CTX and by mw_csr_build. pub is the public half to pair it with (normally the
** certificate's); NULL reads it with mw_p11_pubkey(). The key holds a reference on t.
*/
mw_status_t mw_p11_pkey(mw_p11_t *t, EVP_PKEY *pub, EVP_PKEY **out, char *err, size_t errlen);

typedef struct {
  const char *curve;  /* "P-256" (default), "P-384", "P-521"; ignored with rsa_bits */
  unsigned rsa_bits;  /* nonzero: an RSA key of that size (2048..4096) instead */
} mw_p11_keygen_t;

/*
** Generates a key pair inside the token, named by the URI's object= and/or id= (a random
** 16-byte id when none is given): private key CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE,
** !CKA_EXTRACTABLE, CKA_SIGN. Refuses (MW_ERR_CONFLICT) when a key with that label or id
** exists. Needs a handle opened with opts.rw. Returns the public key and, when info is
** given, what the token reports about the new private key.
*/
mw_status_t mw_p11_keygen(mw_p11_t *t, const mw_p11_keygen_t *g, EVP_PKEY **pub, mw_p11_keyinfo_t *info, char *err,
                          size_t errlen);

/* Every object of the token visible to this session. */
typedef void (*mw_p11_object_fn)(void *ud, mw_p11_type_t type, const char *label, const uint8_t *id, size_t id_len,
                                 const char *uri);
mw_status_t mw_p11_list_objects(mw_p11_t *t, mw_p11_object_fn fn, void *ud, char *err, size_t errlen);

/* Every slot with a token in a module (NULL: the default module). */
typedef struct {
  unsigned long slot_id;
  char label[33], manufacturer[33], model[17], serial[17];
  bool initialized, login_required, pin_locked;
} mw_p11_token_info_t;
typedef void (*mw_p11_token_fn)(void *ud, const mw_p11_token_info_t *ti);
mw_status_t mw_p11_list_tokens(const char *module, mw_p11_token_fn fn, void *ud, char *err, size_t errlen);

/* "CKR_PIN_INCORRECT" for 0xA0, "CKR_0x..." for codes without a name. */
const char *mw_p11_rv_name(unsigned long rv, char buf[24]);

/* Counters for tests and benchmarks. */
typedef struct {
  unsigned long signs, sign_failures, relogins;
} mw_p11_stats_t;
void mw_p11_stats(const mw_p11_t *t, mw_p11_stats_t *out);

#endif
