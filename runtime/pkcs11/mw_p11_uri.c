#include "mw_p11_uri.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

__attribute__((format(printf, 3, 4)))
static mw_status_t fail(char *why, size_t whylen, const char *fmt, ...) {
  if (why && whylen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
  }
  return MW_ERR_INVALID;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/*
** Percent-decodes v[0..n) into out (cap bytes). Returns the decoded length, or -1 for a
** broken escape, -2 when it does not fit. Characters that must be escaped in a URI
** (controls, space, quotes, '#') are refused unescaped, so a typo shows up here.
*/
static long decode(const char *v, size_t n, uint8_t *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)v[i];
    if (c == '%') {
      if (i + 2 >= n) return -1;
      int h = hexval((unsigned char)v[i + 1]), l = hexval((unsigned char)v[i + 2]);
      if (h < 0 || l < 0) return -1;
      c = h << 4 | l;
      i += 2;
    } else if (c <= 0x20 || c >= 0x7F || c == '"' || c == '#' || c == '<' || c == '>' || c == '\\' || c == '^' ||
               c == '`' || c == '{' || c == '|' || c == '}') {
      return -1;
    }
    if (o >= cap) return -2;
    out[o++] = (uint8_t)c;
  }
  return (long)o;
}

typedef struct {
  const char *name;
  unsigned flag;
  size_t off, size; /* string field in mw_p11_uri_t, size includes the NUL */
} sattr_t;

#define S(name, flag, field) {name, flag, offsetof(mw_p11_uri_t, field), sizeof(((mw_p11_uri_t *)0)->field)}
static const sattr_t string_attrs[] = {
    S("token", MW_P11_HAS_TOKEN, token),
    S("manufacturer", MW_P11_HAS_MANUFACTURER, manufacturer),
    S("model", MW_P11_HAS_MODEL, model),
    S("serial", MW_P11_HAS_SERIAL, serial),
    S("slot-description", MW_P11_HAS_SLOT_DESCRIPTION, slot_description),
    S("slot-manufacturer", MW_P11_HAS_SLOT_MANUFACTURER, slot_manufacturer),
    S("library-manufacturer", MW_P11_HAS_LIBRARY_MANUFACTURER, library_manufacturer),
    S("library-description", MW_P11_HAS_LIBRARY_DESCRIPTION, library_description),
    S("object", MW_P11_HAS_OBJECT, object),
    S("pin-value", MW_P11_HAS_PIN_VALUE, pin_value),
    S("pin-source", MW_P11_HAS_PIN_SOURCE, pin_source),
    S("module-path", MW_P11_HAS_MODULE_PATH, module_path),
};
#undef S

static const struct {
  const char *name;
  mw_p11_type_t type;
} type_names[] = {{"private", MW_P11_TYPE_PRIVATE}, {"public", MW_P11_TYPE_PUBLIC}, {"cert", MW_P11_TYPE_CERT},
                  {"secret-key", MW_P11_TYPE_SECRET}, {"data", MW_P11_TYPE_DATA}};

const char *mw_p11_type_name(mw_p11_type_t t) {
  for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
    if (type_names[i].type == t) return type_names[i].name;
  return "any";
}

/* One "name=value" of length n. */
static mw_status_t attribute(const char *a, size_t n, mw_p11_uri_t *u, char *why, size_t whylen) {
  const char *eq = memchr(a, '=', n);
  if (!eq || eq == a) return fail(why, whylen, "pkcs11: URI: '%.*s' is not name=value", (int)(n > 40 ? 40 : n), a);
  size_t nl = (size_t)(eq - a);
  const char *v = eq + 1;
  size_t vl = n - nl - 1;
  char name[32];
  if (nl >= sizeof name) return fail(why, whylen, "pkcs11: URI: unknown attribute '%.*s'", 40, a);
  memcpy(name, a, nl);
  name[nl] = '\0';
  if (!strncmp(name, "x-", 2)) return MW_OK; /* vendor attributes: not ours to judge */
  for (size_t i = 0; i < sizeof string_attrs / sizeof string_attrs[0]; i++) {
    const sattr_t *s = &string_attrs[i];
    if (strcmp(name, s->name)) continue;
    if (u->has & s->flag) return fail(why, whylen, "pkcs11: URI: '%s' given twice", name);
    char *field = (char *)u + s->off;
    long len = decode(v, vl, (uint8_t *)field, s->size - 1);
    bool secret = s->flag == MW_P11_HAS_PIN_VALUE;
    if (len == -1)
      return fail(why, whylen, "pkcs11: URI: %s: %s", name,
                  secret ? "bad percent-encoding" : "bad percent-encoding or a character that must be %-encoded");
    if (len == -2) return fail(why, whylen, "pkcs11: URI: %s is longer than %zu bytes", name, s->size - 1);
    field[len] = '\0';
    if (memchr(field, '\0', (size_t)len)) return fail(why, whylen, "pkcs11: URI: %s contains a NUL byte", name);
    u->has |= s->flag;
    return MW_OK;
  }
  if (!strcmp(name, "id")) {
    if (u->has & MW_P11_HAS_ID) return fail(why, whylen, "pkcs11: URI: 'id' given twice");
    long len = decode(v, vl, u->id, sizeof u->id);
    if (len == -1) return fail(why, whylen, "pkcs11: URI: id: bad percent-encoding (write bytes as %%01%%02...)");
    if (len == -2) return fail(why, whylen, "pkcs11: URI: id is longer than %d bytes", MW_P11_ID_MAX);
    u->id_len = (size_t)len;
    u->has |= MW_P11_HAS_ID;
    return MW_OK;
  }
  if (!strcmp(name, "slot-id")) {
    char buf[24];
    if (u->has & MW_P11_HAS_SLOT_ID) return fail(why, whylen, "pkcs11: URI: 'slot-id' given twice");
    if (vl == 0 || vl >= sizeof buf) return fail(why, whylen, "pkcs11: URI: slot-id must be a decimal number");
    memcpy(buf, v, vl);
    buf[vl] = '\0';
    for (size_t i = 0; i < vl; i++)
      if (!isdigit((unsigned char)buf[i])) return fail(why, whylen, "pkcs11: URI: slot-id must be a decimal number");
    u->slot_id = strtoul(buf, NULL, 10);
    u->has |= MW_P11_HAS_SLOT_ID;
    return MW_OK;
  }
  if (!strcmp(name, "type")) {
    if (u->has & MW_P11_HAS_TYPE) return fail(why, whylen, "pkcs11: URI: 'type' given twice");
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
      if (strlen(type_names[i].name) == vl && !memcmp(v, type_names[i].name, vl)) {
        u->type = type_names[i].type;
        u->has |= MW_P11_HAS_TYPE;
        return MW_OK;
      }
    return fail(why, whylen, "pkcs11: URI: type must be private, public, cert, secret-key or data");
  }
  if (!strcmp(name, "module-name"))
    return fail(why, whylen, "pkcs11: URI: module-name needs p11-kit, which Moonwire does not use; give module-path");
  if (!strcmp(name, "library-version"))
    return fail(why, whylen, "pkcs11: URI: library-version is not supported; remove it");
  return fail(why, whylen, "pkcs11: URI: unknown attribute '%s'", name);
}

mw_status_t mw_p11_uri_parse(const char *s, mw_p11_uri_t *out, char *why, size_t whylen) {
  memset(out, 0, sizeof *out);
  if (!s || strncasecmp(s, "pkcs11:", 7) != 0) return fail(why, whylen, "a PKCS#11 URI starts with 'pkcs11:'");
  const char *p = s + 7;
  const char *q = strchr(p, '?');
  size_t plen = q ? (size_t)(q - p) : strlen(p);
  /* path: ';'-separated, then query: '&'-separated */
  for (int part = 0; part < 2; part++) {
    const char *cur = part == 0 ? p : (q ? q + 1 : NULL);
    if (!cur) break;
    size_t left = part == 0 ? plen : strlen(cur);
    char sep = part == 0 ? ';' : '&';
    while (left > 0) {
      const char *end = memchr(cur, sep, left);
      size_t n = end ? (size_t)(end - cur) : left;
      mw_status_t st = n == 0 ? fail(why, whylen, "pkcs11: URI: empty attribute (doubled '%c')", sep)
                              : attribute(cur, n, out, why, whylen);
      if (st != MW_OK) {
        mw_p11_uri_clear(out);
        return st;
      }
      cur += n;
      left -= n;
      if (left > 0) { /* skip the separator; a trailing one is tolerated */
        cur++;
        left--;
      }
    }
  }
  if ((out->has & MW_P11_HAS_PIN_VALUE) && (out->has & MW_P11_HAS_PIN_SOURCE)) {
    mw_p11_uri_clear(out);
    return fail(why, whylen, "pkcs11: URI: give pin-value or pin-source, not both");
  }
  return MW_OK;
}

void mw_p11_uri_clear(mw_p11_uri_t *u) {
  if (u) OPENSSL_cleanse(u, sizeof *u);
}

void mw_p11_uri_redact(const char *s, char *out, size_t cap) {
  if (!cap) return;
  size_t o = 0;
  bool uri = s && strncasecmp(s, "pkcs11:", 7) == 0;
  for (size_t i = 0; s && s[i] && o + 1 < cap;) {
    out[o++] = s[i];
    /* at the start of an attribute named pin-value: copy the name, hide the value */
    if (uri && (s[i] == ':' || s[i] == ';' || s[i] == '?' || s[i] == '&') && !strncmp(s + i + 1, "pin-value=", 10)) {
      /* all of it or none: a copy cut short must not end in half a mask ("pin-value=**") */
      if (o + 13 >= cap) break;
      i++;
      for (const char *t = "pin-value=***"; *t; t++) out[o++] = *t;
      i += 10;
      while (s[i] && s[i] != ';' && s[i] != '&' && s[i] != '?') i++;
      continue;
    }
    i++;
  }
  out[o] = '\0';
}

/* RFC 3986 unreserved characters stay; everything else is %XX (labels may hold anything). */
static size_t encode(const uint8_t *v, size_t n, bool all, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int c = v[i];
    bool plain = !all && (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~');
    if (plain) {
      if (o + 1 >= cap) break;
      out[o++] = (char)c;
    } else {
      if (o + 3 >= cap) break;
      o += (size_t)snprintf(out + o, cap - o, "%%%02X", c);
    }
  }
  if (cap) out[o < cap ? o : cap - 1] = '\0';
  return o;
}

void mw_p11_uri_format(const char *token, const char *label, const uint8_t *id, size_t id_len, mw_p11_type_t type,
                       char *out, size_t cap) {
  char buf[3 * 257];
  size_t o = (size_t)snprintf(out, cap, "pkcs11:");
  const char *sep = "";
  if (token && o < cap) {
    encode((const uint8_t *)token, strlen(token), false, buf, sizeof buf);
    o += (size_t)snprintf(out + o, cap - o, "%stoken=%s", sep, buf);
    sep = ";";
  }
  if (label && *label && o < cap) {
    encode((const uint8_t *)label, strlen(label), false, buf, sizeof buf);
    o += (size_t)snprintf(out + o, cap - o, "%sobject=%s", sep, buf);
    sep = ";";
  }
  if (id && id_len && o < cap) {
    encode(id, id_len, true, buf, sizeof buf);
    o += (size_t)snprintf(out + o, cap - o, "%sid=%s", sep, buf);
    sep = ";";
  }
  if (type != MW_P11_TYPE_ANY && o < cap) snprintf(out + o, cap - o, "%stype=%s", sep, mw_p11_type_name(type));
}
