/* Internals shared by the PKCS#11 files: the module registry and the token handle. */
#ifndef MW_P11_INT_H
#define MW_P11_INT_H

#include "mw_p11_abi.h"
#include "mw_pkcs11.h"

typedef struct mw_p11_module mw_p11_module_t;

struct mw_p11_module {
  char path[1024];
  void *dl;
  CK_FUNCTION_LIST *f;
  int refs;
  bool finalize; /* we initialised it, so we finalise it */
  mw_p11_module_t *next;
};

/* Loads and initialises the module at path, or takes another reference on it. */
mw_status_t mw__p11_module_get(const char *path, mw_p11_module_t **out, char *err, size_t errlen);
/* Drops a reference; the last one calls C_Finalize (if we initialised it) and dlclose. */
void mw__p11_module_put(mw_p11_module_t *m);

struct mw_p11 {
  int refs;
  bool user_closed;
  mw_p11_module_t *m;
  CK_FUNCTION_LIST *f;
  CK_SLOT_ID slot;
  CK_SESSION_HANDLE session; /* CK_INVALID_HANDLE when there is none */
  bool rw;
  bool logged_in;
  char label[33];
  mw_p11_uri_t uri; /* what the handle was opened with, PIN included (wiped at free) */
  char pin[257];    /* the PIN, once read (from pin-value or pin-source); wiped at free */
  bool have_pin;
  mw_p11_stats_t stats;
};

void mw__p11_ref(mw_p11_t *t);
void mw__p11_unref(mw_p11_t *t);

/* True for return values after which a fresh session (and login) may help. */
bool mw__p11_session_lost(CK_RV rv);
/* Closes the session and opens a new one, logged in as before. */
CK_RV mw__p11_reopen(mw_p11_t *t);
/* Context-specific login for keys with CKA_ALWAYS_AUTHENTICATE. */
CK_RV mw__p11_login_context(mw_p11_t *t);

/* Finds the one object of class cls matching label (may be NULL) and id (id_len 0: any). */
mw_status_t mw__p11_find_one(mw_p11_t *t, CK_OBJECT_CLASS cls, const char *label, const uint8_t *id, size_t id_len,
                             CK_OBJECT_HANDLE *out, char *err, size_t errlen);
/* The private key the handle's URI names. */
mw_status_t mw__p11_find_key(mw_p11_t *t, CK_OBJECT_HANDLE *out, char *err, size_t errlen);

/* Reads one variable-length attribute into a malloc'd buffer (*len bytes). */
CK_RV mw__p11_attr_alloc(mw_p11_t *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len);

/* Formats "what: CKR_NAME (hint)" into err and maps rv to a status. */
mw_status_t mw__p11_fail_rv(CK_RV rv, char *err, size_t errlen, const char *what);

/*
** Signs data with the key object: one C_SignInit/C_Sign, with one retry on a fresh
** session if the token lost ours. *siglen is the capacity in, the length out.
*/
CK_RV mw__p11_sign(mw_p11_t *t, CK_OBJECT_HANDLE *key, CK_MECHANISM *mech, bool always_auth, const uint8_t *data,
                   size_t len, uint8_t *sig, size_t *siglen);

#endif
