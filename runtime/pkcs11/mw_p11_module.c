/*
** PKCS#11 modules: dlopen, C_GetFunctionList, C_Initialize once per process and module,
** C_Finalize and dlclose when the last handle is gone. Return-value names live here too.
*/
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"
#include "mw_p11_int.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static mw_p11_module_t *modules;

static const struct {
  CK_RV rv;
  const char *name, *hint;
} rv_names[] = {
    {CKR_OK, "CKR_OK", NULL},
    {CKR_CANCEL, "CKR_CANCEL", NULL},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY", "out of memory"},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID", "no such slot"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR", NULL},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED", NULL},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD", NULL},
    {CKR_CANT_LOCK, "CKR_CANT_LOCK", NULL},
    {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE", "the token does not reveal it"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID", NULL},
    {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID", NULL},
    {CKR_DATA_INVALID, "CKR_DATA_INVALID", NULL},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE", NULL},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR", NULL},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY", "the token is full"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED", "the token was removed"},
    {CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED", NULL},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED", NULL},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID", NULL},
    {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE", "key size not supported by the token"},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT", NULL},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED", "the key may not sign (CKA_SIGN false)"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID", "the token does not offer this mechanism"},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID", NULL},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID", NULL},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE", NULL},
    {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED", NULL},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT", "wrong PIN"},
    {CKR_PIN_INVALID, "CKR_PIN_INVALID", "the PIN has characters the token refuses"},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE", "the PIN is too long or too short"},
    {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED", "the PIN has expired"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED", "the PIN is locked after too many wrong tries"},
    {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED", NULL},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT", "the token has no free session"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID", NULL},
    {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY", NULL},
    {CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID", NULL},
    {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE", NULL},
    {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT", NULL},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT", "no token in the slot"},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED", NULL},
    {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED", "the token is read-only"},
    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN", NULL},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN", "log in first: give pin-value= or pin-source="},
    {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED", "the token has no user PIN yet"},
    {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID", NULL},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL", NULL},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED", NULL},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED", NULL},
    {CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED", "the token does not support this curve"},
    {CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID", "the token does not support this curve"},
};

const char *mw_p11_rv_name(unsigned long rv, char buf[24]) {
  for (size_t i = 0; i < sizeof rv_names / sizeof rv_names[0]; i++)
    if (rv_names[i].rv == rv) return rv_names[i].name;
  snprintf(buf, 24, "CKR_0x%lX", rv);
  return buf;
}

mw_status_t mw__p11_fail_rv(CK_RV rv, char *err, size_t errlen, const char *what) {
  char buf[24];
  const char *hint = NULL;
  for (size_t i = 0; i < sizeof rv_names / sizeof rv_names[0]; i++)
    if (rv_names[i].rv == rv) hint = rv_names[i].hint;
  if (err && errlen)
    snprintf(err, errlen, "%s: %s%s%s%s", what, mw_p11_rv_name(rv, buf), hint ? " (" : "", hint ? hint : "",
             hint ? ")" : "");
  switch (rv) {
  case CKR_PIN_INCORRECT:
  case CKR_PIN_INVALID:
  case CKR_PIN_LEN_RANGE:
  case CKR_PIN_EXPIRED:
  case CKR_PIN_LOCKED:
  case CKR_USER_NOT_LOGGED_IN:
  case CKR_USER_PIN_NOT_INITIALIZED:
  case CKR_KEY_FUNCTION_NOT_PERMITTED: return MW_ERR_REFUSED;
  case CKR_HOST_MEMORY: return MW_ERR_NOMEM;
  case CKR_MECHANISM_INVALID:
  case CKR_CURVE_NOT_SUPPORTED:
  case CKR_DOMAIN_PARAMS_INVALID:
  case CKR_KEY_SIZE_RANGE: return MW_ERR_UNSUPPORTED;
  default: return MW_ERR_DEVICE;
  }
}

static mw_status_t load(const char *path, mw_p11_module_t **out, char *err, size_t errlen) {
  mw_p11_module_t *m = calloc(1, sizeof *m);
  if (!m) return MW_ERR_NOMEM;
  snprintf(m->path, sizeof m->path, "%s", path);
  /* RTLD_LOCAL: two modules must not see each other's symbols. */
  m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!m->dl) {
    snprintf(err, errlen, "cannot load the PKCS#11 module %s: %s", path, dlerror());
    free(m);
    return MW_ERR_IO;
  }
  CK_C_GetFunctionList get;
  *(void **)&get = dlsym(m->dl, "C_GetFunctionList");
  CK_RV rv = get ? get(&m->f) : CKR_FUNCTION_NOT_SUPPORTED;
  if (rv != CKR_OK || !m->f) {
    snprintf(err, errlen, "%s is not a PKCS#11 module (no C_GetFunctionList)", path);
    dlclose(m->dl);
    free(m);
    return MW_ERR_IO;
  }
  if (m->f->version.major != 2) {
    snprintf(err, errlen, "%s implements PKCS#11 %d.%d; Moonwire needs 2.x", path, m->f->version.major,
             m->f->version.minor);
    dlclose(m->dl);
    free(m);
    return MW_ERR_UNSUPPORTED;
  }
  /* The module may create threads and must use OS locking: we call it from one thread,
     but OpenSSL or another library in the process might load it too. */
  CK_C_INITIALIZE_ARGS args = {0};
  args.flags = CKF_OS_LOCKING_OK;
  rv = m->f->C_Initialize(&args);
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    m->finalize = false; /* someone else in this process owns it */
  } else if (rv != CKR_OK) {
    char what[1100];
    snprintf(what, sizeof what, "C_Initialize of %s", path);
    mw_status_t st = mw__p11_fail_rv(rv, err, errlen, what);
    dlclose(m->dl);
    free(m);
    return st == MW_ERR_DEVICE ? MW_ERR_IO : st;
  } else {
    m->finalize = true;
  }
  *out = m;
  return MW_OK;
}

mw_status_t mw__p11_module_get(const char *path, mw_p11_module_t **out, char *err, size_t errlen) {
  mw_status_t st = MW_OK;
  pthread_mutex_lock(&lock);
  mw_p11_module_t *m = modules;
  while (m && strcmp(m->path, path)) m = m->next;
  if (!m) {
    st = load(path, &m, err, errlen);
    if (st == MW_OK) {
      m->next = modules;
      modules = m;
      MW_LOGD("pkcs11", "loaded %s", path);
    }
  }
  if (st == MW_OK) {
    m->refs++;
    *out = m;
  }
  pthread_mutex_unlock(&lock);
  return st;
}

void mw__p11_module_put(mw_p11_module_t *m) {
  if (!m) return;
  pthread_mutex_lock(&lock);
  if (--m->refs == 0) {
    for (mw_p11_module_t **p = &modules; *p; p = &(*p)->next)
      if (*p == m) {
        *p = m->next;
        break;
      }
    if (m->finalize) m->f->C_Finalize(NULL);
    dlclose(m->dl);
    free(m);
  }
  pthread_mutex_unlock(&lock);
}
