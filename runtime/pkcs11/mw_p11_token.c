/*
** A token handle: the slot the URI names, one session, the login, and object lookup.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "mw_log.h"
#include "mw_p11_int.h"

/* CK_*_INFO text fields are blank-padded, not NUL-terminated. */
static void fixed_str(const CK_UTF8CHAR *src, size_t n, char *dst) {
  while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0')) n--;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

bool mw__p11_session_lost(CK_RV rv) {
  return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_USER_NOT_LOGGED_IN ||
         rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT;
}

/* The PIN from pin-value= or the first line of the pin-source= file; never logged. */
static mw_status_t read_pin(mw_p11_t *t, char *err, size_t errlen) {
  if (t->uri.has & MW_P11_HAS_PIN_VALUE) {
    snprintf(t->pin, sizeof t->pin, "%s", t->uri.pin_value);
    t->have_pin = true;
  } else if (t->uri.has & MW_P11_HAS_PIN_SOURCE) {
    const char *path = t->uri.pin_source;
    if (!strncmp(path, "file:", 5)) path += 5;
    FILE *f = fopen(path, "r");
    if (!f) {
      snprintf(err, errlen, "pin-source %s: %s", path, strerror(errno));
      return MW_ERR_INVALID;
    }
    size_t n = fread(t->pin, 1, sizeof t->pin - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    t->pin[n] = '\0';
    size_t line = strcspn(t->pin, "\r\n");
    if (more && line == n) {
      OPENSSL_cleanse(t->pin, sizeof t->pin);
      snprintf(err, errlen, "pin-source %s: the PIN is longer than %zu bytes", path, sizeof t->pin - 1);
      return MW_ERR_INVALID;
    }
    t->pin[line] = '\0';
    t->have_pin = true;
  }
  return MW_OK;
}

static CK_RV login(mw_p11_t *t, CK_USER_TYPE who) {
  CK_RV rv;
  if (t->have_pin) rv = t->f->C_Login(t->session, who, (CK_UTF8CHAR *)t->pin, (CK_ULONG)strlen(t->pin));
  else rv = t->f->C_Login(t->session, who, NULL, 0); /* protected authentication path (PIN pad) */
  return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

CK_RV mw__p11_login_context(mw_p11_t *t) { return login(t, CKU_CONTEXT_SPECIFIC); }

static CK_RV open_session(mw_p11_t *t) {
  CK_FLAGS flags = CKF_SERIAL_SESSION | (t->rw ? CKF_RW_SESSION : 0);
  CK_RV rv = t->f->C_OpenSession(t->slot, flags, NULL, NULL, &t->session);
  if (rv != CKR_OK) {
    t->session = CK_INVALID_HANDLE;
    return rv;
  }
  if (t->logged_in) {
    rv = login(t, CKU_USER);
    if (rv != CKR_OK) {
      t->f->C_CloseSession(t->session);
      t->session = CK_INVALID_HANDLE;
    }
  }
  return rv;
}

CK_RV mw__p11_reopen(mw_p11_t *t) {
  if (t->session != CK_INVALID_HANDLE) t->f->C_CloseSession(t->session);
  t->session = CK_INVALID_HANDLE;
  t->stats.relogins++;
  MW_LOGW("pkcs11", "token '%s': session lost, opening a new one", t->label);
  return open_session(t);
}

static bool field_matches(unsigned has, unsigned flag, const char *want, const char *got) {
  return !(has & flag) || strcmp(want, got) == 0;
}

/* Picks the slot: every token attribute of the URI must match; none given means "the only one". */
static mw_status_t find_slot(mw_p11_t *t, char *err, size_t errlen) {
  const mw_p11_uri_t *u = &t->uri;
  CK_ULONG n = 0;
  CK_RV rv = t->f->C_GetSlotList(CK_TRUE, NULL, &n);
  if (rv != CKR_OK) return mw__p11_fail_rv(rv, err, errlen, "C_GetSlotList");
  CK_SLOT_ID *slots = calloc(n ? n : 1, sizeof *slots);
  if (!slots) return MW_ERR_NOMEM;
  rv = t->f->C_GetSlotList(CK_TRUE, slots, &n);
  if (rv != CKR_OK) {
    free(slots);
    return mw__p11_fail_rv(rv, err, errlen, "C_GetSlotList");
  }
  unsigned token_attrs = MW_P11_HAS_TOKEN | MW_P11_HAS_MANUFACTURER | MW_P11_HAS_MODEL | MW_P11_HAS_SERIAL |
                         MW_P11_HAS_SLOT_ID | MW_P11_HAS_SLOT_DESCRIPTION | MW_P11_HAS_SLOT_MANUFACTURER;
  char seen[512] = "";
  size_t seen_len = 0;
  int matches = 0;
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    CK_SLOT_INFO si;
    if (t->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || t->f->C_GetSlotInfo(slots[i], &si) != CKR_OK) continue;
    if (!(ti.flags & CKF_TOKEN_INITIALIZED)) continue; /* e.g. SoftHSM's spare empty slot */
    char label[33], manuf[33], model[17], serial[17], sdesc[65], smanuf[33];
    fixed_str(ti.label, sizeof ti.label, label);
    fixed_str(ti.manufacturerID, sizeof ti.manufacturerID, manuf);
    fixed_str(ti.model, sizeof ti.model, model);
    fixed_str(ti.serialNumber, sizeof ti.serialNumber, serial);
    fixed_str(si.slotDescription, sizeof si.slotDescription, sdesc);
    fixed_str(si.manufacturerID, sizeof si.manufacturerID, smanuf);
    if (seen_len < sizeof seen - 40)
      seen_len += (size_t)snprintf(seen + seen_len, sizeof seen - seen_len, "%s'%s' (slot %lu)", seen_len ? ", " : "",
                                   label, slots[i]);
    bool ok = field_matches(u->has, MW_P11_HAS_TOKEN, u->token, label) &&
              field_matches(u->has, MW_P11_HAS_MANUFACTURER, u->manufacturer, manuf) &&
              field_matches(u->has, MW_P11_HAS_MODEL, u->model, model) &&
              field_matches(u->has, MW_P11_HAS_SERIAL, u->serial, serial) &&
              field_matches(u->has, MW_P11_HAS_SLOT_DESCRIPTION, u->slot_description, sdesc) &&
              field_matches(u->has, MW_P11_HAS_SLOT_MANUFACTURER, u->slot_manufacturer, smanuf) &&
              (!(u->has & MW_P11_HAS_SLOT_ID) || u->slot_id == slots[i]);
    if (!ok) continue;
    if (matches++ == 0) {
      t->slot = slots[i];
      snprintf(t->label, sizeof t->label, "%s", label);
    }
  }
  free(slots);
  if (matches == 0) {
    if (u->has & MW_P11_HAS_TOKEN)
      snprintf(err, errlen, "no token '%s' in %s (tokens: %s)", u->token, t->m->path, seen_len ? seen : "none");
    else
      snprintf(err, errlen, "no matching token in %s (tokens: %s)", t->m->path, seen_len ? seen : "none");
    return MW_ERR_NOT_FOUND;
  }
  if (matches > 1 && !(u->has & token_attrs)) {
    snprintf(err, errlen, "%s has several tokens (%s): name one with token=", t->m->path, seen);
    return MW_ERR_NOT_FOUND;
  }
  return MW_OK;
}

/* Checks library-manufacturer= and library-description= against C_GetInfo. */
static mw_status_t check_library(mw_p11_t *t, char *err, size_t errlen) {
  const mw_p11_uri_t *u = &t->uri;
  if (!(u->has & (MW_P11_HAS_LIBRARY_MANUFACTURER | MW_P11_HAS_LIBRARY_DESCRIPTION))) return MW_OK;
  CK_INFO info;
  CK_RV rv = t->f->C_GetInfo(&info);
  if (rv != CKR_OK) return mw__p11_fail_rv(rv, err, errlen, "C_GetInfo");
  char manuf[33], desc[33];
  fixed_str(info.manufacturerID, sizeof info.manufacturerID, manuf);
  fixed_str(info.libraryDescription, sizeof info.libraryDescription, desc);
  if (!field_matches(u->has, MW_P11_HAS_LIBRARY_MANUFACTURER, u->library_manufacturer, manuf) ||
      !field_matches(u->has, MW_P11_HAS_LIBRARY_DESCRIPTION, u->library_description, desc)) {
    snprintf(err, errlen, "%s is '%s' by '%s', not the library the URI names", t->m->path, desc, manuf);
    return MW_ERR_NOT_FOUND;
  }
  return MW_OK;
}

static void destroy(mw_p11_t *t) {
  if (t->session != CK_INVALID_HANDLE) t->f->C_CloseSession(t->session);
  mw__p11_module_put(t->m);
  OPENSSL_cleanse(t, sizeof *t);
  free(t);
}

mw_status_t mw_p11_open(const char *uri, const mw_p11_open_opts_t *opts, mw_p11_t **out, char *err, size_t errlen) {
  *out = NULL;
  mw_p11_t *t = calloc(1, sizeof *t);
  if (!t) return MW_ERR_NOMEM;
  t->refs = 1;
  t->session = CK_INVALID_HANDLE;
  t->rw = opts && opts->rw;
  mw_status_t st = mw_p11_uri_parse(uri, &t->uri, err, errlen);
  if (st != MW_OK) {
    destroy(t);
    return st;
  }
  const char *module = (t->uri.has & MW_P11_HAS_MODULE_PATH) ? t->uri.module_path
                       : opts && opts->module && *opts->module ? opts->module
                                                               : MW_P11_DEFAULT_MODULE;
  if ((st = read_pin(t, err, errlen)) != MW_OK || (st = mw__p11_module_get(module, &t->m, err, errlen)) != MW_OK) {
    destroy(t);
    return st;
  }
  t->f = t->m->f;
  if ((st = check_library(t, err, errlen)) != MW_OK || (st = find_slot(t, err, errlen)) != MW_OK) {
    destroy(t);
    return st;
  }
  CK_TOKEN_INFO ti;
  CK_RV rv = t->f->C_GetTokenInfo(t->slot, &ti);
  if (rv == CKR_OK) rv = open_session(t);
  if (rv != CKR_OK) {
    char what[96];
    snprintf(what, sizeof what, "cannot open a session on token '%s'", t->label);
    st = mw__p11_fail_rv(rv, err, errlen, what);
    destroy(t);
    return st;
  }
  bool need = (ti.flags & CKF_LOGIN_REQUIRED) != 0;
  if (t->have_pin || (need && (ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH))) {
    rv = login(t, CKU_USER);
    if (rv != CKR_OK) {
      char what[96];
      snprintf(what, sizeof what, "login to token '%s' failed", t->label);
      st = mw__p11_fail_rv(rv, err, errlen, what);
      destroy(t);
      return st;
    }
    t->logged_in = true;
  }
  *out = t;
  return MW_OK;
}

void mw__p11_ref(mw_p11_t *t) { t->refs++; }

void mw__p11_unref(mw_p11_t *t) {
  if (t && --t->refs == 0) destroy(t);
}

void mw_p11_close(mw_p11_t *t) {
  if (!t || t->user_closed) return;
  t->user_closed = true;
  mw__p11_unref(t);
}

const char *mw_p11_token_label(const mw_p11_t *t) { return t->label; }

void mw_p11_stats(const mw_p11_t *t, mw_p11_stats_t *out) { *out = t->stats; }

/* ---- objects ---- */

CK_RV mw__p11_attr_alloc(mw_p11_t *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len) {
  *val = NULL;
  *len = 0;
  CK_ATTRIBUTE a = {type, NULL, 0};
  CK_RV rv = t->f->C_GetAttributeValue(t->session, o, &a, 1);
  if (rv != CKR_OK) return rv;
  if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION) return CKR_ATTRIBUTE_TYPE_INVALID;
  if (a.ulValueLen > 1u << 20) return CKR_GENERAL_ERROR; /* no attribute we read is this large */
  a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1);
  if (!a.pValue) return CKR_HOST_MEMORY;
  rv = t->f->C_GetAttributeValue(t->session, o, &a, 1);
  if (rv != CKR_OK) {
    free(a.pValue);
    return rv;
  }
  *val = a.pValue;
  *len = a.ulValueLen;
  return CKR_OK;
}

/* Up to cap handles of objects matching the template. */
static CK_RV find(mw_p11_t *t, CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *objs, CK_ULONG cap, CK_ULONG *count) {
  CK_RV rv = t->f->C_FindObjectsInit(t->session, tmpl, n);
  if (mw__p11_session_lost(rv) && mw__p11_reopen(t) == CKR_OK) rv = t->f->C_FindObjectsInit(t->session, tmpl, n);
  if (rv != CKR_OK) return rv;
  rv = t->f->C_FindObjects(t->session, objs, cap, count);
  t->f->C_FindObjectsFinal(t->session);
  return rv;
}

static const char *class_word(CK_OBJECT_CLASS c) {
  switch (c) {
  case CKO_PRIVATE_KEY: return "private key";
  case CKO_PUBLIC_KEY: return "public key";
  case CKO_CERTIFICATE: return "certificate";
  default: return "object";
  }
}

mw_status_t mw__p11_find_one(mw_p11_t *t, CK_OBJECT_CLASS cls, const char *label, const uint8_t *id, size_t id_len,
                             CK_OBJECT_HANDLE *out, char *err, size_t errlen) {
  CK_ATTRIBUTE tmpl[3] = {{CKA_CLASS, &cls, sizeof cls}};
  CK_ULONG n = 1;
  if (label) tmpl[n++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)};
  if (id && id_len) tmpl[n++] = (CK_ATTRIBUTE){CKA_ID, (void *)id, (CK_ULONG)id_len};
  CK_OBJECT_HANDLE objs[2];
  CK_ULONG count = 0;
  CK_RV rv = find(t, tmpl, n, objs, 2, &count);
  if (rv != CKR_OK) {
    char what[96];
    snprintf(what, sizeof what, "cannot search token '%s'", t->label);
    return mw__p11_fail_rv(rv, err, errlen, what);
  }
  char name[400] = "";
  size_t o = 0;
  if (label) o += (size_t)snprintf(name + o, sizeof name - o, " object='%.256s'", label);
  if (id && id_len) {
    o += (size_t)snprintf(name + o, sizeof name - o, " id=");
    for (size_t i = 0; i < id_len && o + 4 < sizeof name; i++) o += (size_t)snprintf(name + o, sizeof name - o, "%%%02X", id[i]);
  }
  if (count == 0) {
    snprintf(err, errlen, "no %s with%s in token '%s'%s", class_word(cls), name, t->label,
             cls == CKO_PRIVATE_KEY && !t->logged_in ? " (not logged in: private keys are only visible after login; "
                                                       "give pin-value= or pin-source=)"
                                                     : "");
    return MW_ERR_NOT_FOUND;
  }
  if (count > 1) {
    snprintf(err, errlen, "several %ss with%s in token '%s': add id= to the URI", class_word(cls), name, t->label);
    return MW_ERR_CONFLICT;
  }
  *out = objs[0];
  return MW_OK;
}

mw_status_t mw__p11_find_key(mw_p11_t *t, CK_OBJECT_HANDLE *out, char *err, size_t errlen) {
  const mw_p11_uri_t *u = &t->uri;
  if (!(u->has & (MW_P11_HAS_OBJECT | MW_P11_HAS_ID))) {
    snprintf(err, errlen, "the URI must name the key with object= or id=");
    return MW_ERR_INVALID;
  }
  if ((u->has & MW_P11_HAS_TYPE) && u->type != MW_P11_TYPE_PRIVATE) {
    snprintf(err, errlen, "the URI names a %s object; a key for signing needs type=private (or no type=)",
             mw_p11_type_name(u->type));
    return MW_ERR_INVALID;
  }
  return mw__p11_find_one(t, CKO_PRIVATE_KEY, (u->has & MW_P11_HAS_OBJECT) ? u->object : NULL, u->id,
                          (u->has & MW_P11_HAS_ID) ? u->id_len : 0, out, err, errlen);
}

mw_status_t mw_p11_list_objects(mw_p11_t *t, mw_p11_object_fn fn, void *ud, char *err, size_t errlen) {
  CK_OBJECT_HANDLE objs[64];
  CK_ULONG count = 0;
  CK_RV rv = t->f->C_FindObjectsInit(t->session, NULL, 0);
  if (rv == CKR_OK) {
    rv = t->f->C_FindObjects(t->session, objs, 64, &count);
    t->f->C_FindObjectsFinal(t->session);
  }
  if (rv != CKR_OK) return mw__p11_fail_rv(rv, err, errlen, "cannot list the token's objects");
  for (CK_ULONG i = 0; i < count; i++) {
    CK_OBJECT_CLASS cls = 0;
    CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof cls};
    if (t->f->C_GetAttributeValue(t->session, objs[i], &a, 1) != CKR_OK) continue;
    mw_p11_type_t type = cls == CKO_PRIVATE_KEY   ? MW_P11_TYPE_PRIVATE
                         : cls == CKO_PUBLIC_KEY  ? MW_P11_TYPE_PUBLIC
                         : cls == CKO_CERTIFICATE ? MW_P11_TYPE_CERT
                         : cls == CKO_SECRET_KEY  ? MW_P11_TYPE_SECRET
                                                  : MW_P11_TYPE_DATA;
    uint8_t *label = NULL, *id = NULL;
    size_t ll = 0, il = 0;
    char lab[257] = "", uri[1200];
    if (mw__p11_attr_alloc(t, objs[i], CKA_LABEL, &label, &ll) == CKR_OK) snprintf(lab, sizeof lab, "%.*s", (int)ll, label);
    if (mw__p11_attr_alloc(t, objs[i], CKA_ID, &id, &il) != CKR_OK) il = 0;
    if (il > MW_P11_ID_MAX) il = MW_P11_ID_MAX;
    mw_p11_uri_format(t->label, lab, id, il, type, uri, sizeof uri);
    fn(ud, type, lab, id, il, uri);
    free(label);
    free(id);
  }
  return MW_OK;
}

mw_status_t mw_p11_list_tokens(const char *module, mw_p11_token_fn fn, void *ud, char *err, size_t errlen) {
  mw_p11_module_t *m;
  mw_status_t st = mw__p11_module_get(module && *module ? module : MW_P11_DEFAULT_MODULE, &m, err, errlen);
  if (st != MW_OK) return st;
  CK_SLOT_ID slots[64];
  CK_ULONG n = 64;
  CK_RV rv = m->f->C_GetSlotList(CK_TRUE, slots, &n);
  if (rv != CKR_OK) st = mw__p11_fail_rv(rv, err, errlen, "C_GetSlotList");
  for (CK_ULONG i = 0; st == MW_OK && i < n; i++) {
    CK_TOKEN_INFO ti;
    if (m->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
    mw_p11_token_info_t info = {.slot_id = slots[i]};
    fixed_str(ti.label, sizeof ti.label, info.label);
    fixed_str(ti.manufacturerID, sizeof ti.manufacturerID, info.manufacturer);
    fixed_str(ti.model, sizeof ti.model, info.model);
    fixed_str(ti.serialNumber, sizeof ti.serialNumber, info.serial);
    info.initialized = (ti.flags & CKF_TOKEN_INITIALIZED) != 0;
    info.login_required = (ti.flags & CKF_LOGIN_REQUIRED) != 0;
    info.pin_locked = (ti.flags & CKF_USER_PIN_LOCKED) != 0;
    fn(ud, &info);
  }
  mw__p11_module_put(m);
  return st;
}
