#include "mw_keyref.h"

#include "mw_p11_uri.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static mw_status_t fail(char *why, size_t whylen, const char *msg, const char *s) {
  char shown[1100];
  mw_p11_uri_redact(s, shown, sizeof shown); /* a pkcs11: URI may carry a PIN */
  if (why && whylen) snprintf(why, whylen, "%s: '%s'", msg, shown);
  return MW_ERR_INVALID;
}

/* Trust M key objects: device keys E0F0-E0F3, plus the session contexts E100-E103. */
static int valid_trustm_key_oid(unsigned long oid) {
  return (oid >= 0xE0F0 && oid <= 0xE0F3) || (oid >= 0xE100 && oid <= 0xE103);
}

static mw_status_t parse_oid(const char *hex, size_t n, const char *s, mw_keyref_t *out, char *why, size_t whylen) {
  char buf[16];
  if (n < 3 || n > 6 || hex[0] != '0' || (hex[1] != 'x' && hex[1] != 'X'))
    return fail(why, whylen, "a Trust M key is written trustm:0xE0F1", s);
  memcpy(buf, hex, n);
  buf[n] = '\0';
  for (size_t i = 2; i < n; i++)
    if (!isxdigit((unsigned char)buf[i])) return fail(why, whylen, "not a hexadecimal object id", s);
  unsigned long oid = strtoul(buf, NULL, 16);
  if (!valid_trustm_key_oid(oid))
    return fail(why, whylen, "not a Trust M key object (0xE0F0-0xE0F3 or 0xE100-0xE103)", s);
  out->kind = MW_KEY_TRUSTM;
  out->oid = (uint16_t)oid;
  snprintf(out->text, sizeof out->text, "trustm:0x%04lX", oid);
  return MW_OK;
}

mw_status_t mw_keyref_parse(const char *s, mw_keyref_t *out, char *why, size_t whylen) {
  memset(out, 0, sizeof *out);
  size_t len = strlen(s);
  if (len == 0) return fail(why, whylen, "empty key reference", s);
  if (len >= sizeof out->text) return fail(why, whylen, "key reference too long", s);
  if (strncasecmp(s, "trustm:", 7) == 0) return parse_oid(s + 7, len - 7, s, out, why, whylen);
  /* Infineon's trustm_* tools and provider write "0xe0f1:^" (":^" = use the key in the chip). */
  if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    const char *colon = strchr(s, ':');
    if (colon && strcmp(colon, ":^") == 0) return parse_oid(s, (size_t)(colon - s), s, out, why, whylen);
  }
  if (strncasecmp(s, "pkcs11:", 7) == 0) {
    mw_p11_uri_t *u = malloc(sizeof *u);
    if (!u) return fail(why, whylen, "out of memory", s);
    mw_status_t st = mw_p11_uri_parse(s, u, why, whylen);
    bool named = st == MW_OK && (u->has & (MW_P11_HAS_OBJECT | MW_P11_HAS_ID));
    mw_p11_uri_clear(u);
    free(u);
    if (st != MW_OK) return st;
    if (!named) return fail(why, whylen, "a pkcs11: URI must name the key with object= or id=", s);
    out->kind = MW_KEY_PKCS11;
    memcpy(out->text, s, len + 1);
    return MW_OK;
  }
  const char *path = strncasecmp(s, "file:", 5) == 0 ? s + 5 : s;
  if (!*path) return fail(why, whylen, "empty key file path", s);
  out->kind = MW_KEY_FILE;
  snprintf(out->text, sizeof out->text, "%s", path);
  return MW_OK;
}

const char *mw_keyref_kind_name(mw_key_kind_t kind) {
  switch (kind) {
  case MW_KEY_FILE: return "file";
  case MW_KEY_TRUSTM: return "trustm";
  case MW_KEY_PKCS11: return "pkcs11";
  }
  return "?";
}
