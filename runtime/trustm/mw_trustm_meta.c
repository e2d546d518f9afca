/*
** Object metadata ([SRM] Tables 44-57): the "20 LL {tag len value}*" TLV to and from a
** struct, and access-condition expressions to and from text, so the CLI and Lua can
** show and take "LcsO<op" instead of "E1 FC 07"; the names of fields, life-cycle states,
** object types and key usages both of them use.
*/
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mw_trustm_int.h"

/* The access-condition fields: tag, present bit, the name the CLI and Lua use, place in the struct. */
static const struct {
  uint8_t tag;
  unsigned bit;
  const char *name;
  size_t off;
} acs[] = {
    {0xD0, MW_TRUSTM_MD_CHANGE, "change", offsetof(mw_trustm_metadata_t, change)},
    {0xD1, MW_TRUSTM_MD_READ, "read", offsetof(mw_trustm_metadata_t, read)},
    {0xD3, MW_TRUSTM_MD_EXECUTE, "execute", offsetof(mw_trustm_metadata_t, execute)},
    {0xD8, MW_TRUSTM_MD_META_UPDATE, "meta_update", offsetof(mw_trustm_metadata_t, meta_update)},
};
#define NACS (sizeof acs / sizeof acs[0])

const char *mw_trustm_metadata_ac(mw_trustm_metadata_t *md, unsigned i, unsigned *bit, mw_trustm_ac_t **ac) {
  if (i >= NACS) return NULL;
  *bit = acs[i].bit;
  *ac = (mw_trustm_ac_t *)((char *)md + acs[i].off);
  return acs[i].name;
}

static mw_trustm_ac_t *ac_field(mw_trustm_metadata_t *md, uint8_t tag, unsigned *bit) {
  mw_trustm_ac_t *ac;
  for (unsigned i = 0; i < NACS; i++)
    if (acs[i].tag == tag) return mw_trustm_metadata_ac(md, i, bit, &ac) ? ac : NULL;
  return NULL;
}

static uint16_t be(const uint8_t *v, size_t n) { return n == 1 ? v[0] : (uint16_t)(v[0] << 8 | v[1]); }

mw_status_t mw_trustm_metadata_decode(const uint8_t *tlv, size_t len, mw_trustm_metadata_t *md) {
  memset(md, 0, sizeof *md);
  if (!tlv || len < 2 || tlv[0] != 0x20 || (size_t)tlv[1] + 2 != len) return MW_ERR_PROTOCOL;
  const uint8_t *p = tlv + 2;
  size_t n = tlv[1];
  for (size_t i = 0; i < n;) {
    if (n - i < 2 || (size_t)p[i + 1] > n - i - 2) return MW_ERR_PROTOCOL;
    uint8_t tag = p[i], l = p[i + 1];
    const uint8_t *v = p + i + 2;
    unsigned bit;
    mw_trustm_ac_t *ac = ac_field(md, tag, &bit);
    bool one = l == 1, oneortwo = l == 1 || l == 2;
    if (ac) {
      if (l == 0 || l > MW_TRUSTM_AC_MAX) return MW_ERR_PROTOCOL;
      ac->len = l;
      memcpy(ac->bytes, v, l);
      md->present |= bit;
    } else if (tag == 0xC0 && one) {
      md->lcso = v[0], md->present |= MW_TRUSTM_MD_LCSO;
    } else if (tag == 0xC1 && l == 2) {
      md->version = be(v, 2), md->present |= MW_TRUSTM_MD_VERSION;
    } else if (tag == 0xC4 && oneortwo) {
      md->max_size = be(v, l), md->present |= MW_TRUSTM_MD_MAX_SIZE;
    } else if (tag == 0xC5 && oneortwo) {
      md->used_size = be(v, l), md->present |= MW_TRUSTM_MD_USED_SIZE;
    } else if (tag == 0xE0 && one) {
      md->algorithm = v[0], md->present |= MW_TRUSTM_MD_ALGORITHM;
    } else if (tag == 0xE1 && one) {
      md->key_usage = v[0], md->present |= MW_TRUSTM_MD_KEY_USAGE;
    } else if (tag == 0xE8 && one) {
      md->type = v[0], md->present |= MW_TRUSTM_MD_TYPE;
    } else if (tag == 0xF0 && one) {
      md->reset_type = v[0], md->present |= MW_TRUSTM_MD_RESET_TYPE;
    } else if (tag == 0xC0 || tag == 0xC1 || tag == 0xC4 || tag == 0xC5 || tag == 0xE0 || tag == 0xE1 ||
               tag == 0xE8 || tag == 0xF0) {
      return MW_ERR_PROTOCOL; /* a known tag of the wrong size */
    }
    i += 2 + (size_t)l;
  }
  return MW_OK;
}

static void put_tag(uint8_t *b, size_t *o, uint8_t tag, const uint8_t *v, size_t l) {
  if (*o + 2 + l > 255 + 2) return;
  b[(*o)++] = tag;
  b[(*o)++] = (uint8_t)l;
  memcpy(b + *o, v, l);
  *o += l;
}

static void put_size(uint8_t *b, size_t *o, uint8_t tag, uint16_t v) {
  uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  if (v < 0x100) put_tag(b, o, tag, x + 1, 1);
  else put_tag(b, o, tag, x, 2);
}

mw_status_t mw_trustm_metadata_encode(const mw_trustm_metadata_t *md, uint8_t *out, size_t cap, size_t *out_len) {
  uint8_t b[2 + 255 + 40];
  size_t o = 2;
  unsigned p = md->present;
  if (p & MW_TRUSTM_MD_LCSO) put_tag(b, &o, 0xC0, &md->lcso, 1);
  if (p & MW_TRUSTM_MD_VERSION) {
    uint8_t v[2] = {(uint8_t)(md->version >> 8), (uint8_t)md->version};
    put_tag(b, &o, 0xC1, v, 2);
  }
  if (p & MW_TRUSTM_MD_MAX_SIZE) put_size(b, &o, 0xC4, md->max_size);
  if (p & MW_TRUSTM_MD_USED_SIZE) put_size(b, &o, 0xC5, md->used_size);
  for (size_t i = 0; i < NACS; i++) {
    if (!(p & acs[i].bit)) continue;
    const mw_trustm_ac_t *ac = (const mw_trustm_ac_t *)((const char *)md + acs[i].off);
    if (ac->len == 0 || ac->len > MW_TRUSTM_AC_MAX) return MW_ERR_INVALID;
    put_tag(b, &o, acs[i].tag, ac->bytes, ac->len);
  }
  if (p & MW_TRUSTM_MD_ALGORITHM) put_tag(b, &o, 0xE0, &md->algorithm, 1);
  if (p & MW_TRUSTM_MD_KEY_USAGE) put_tag(b, &o, 0xE1, &md->key_usage, 1);
  if (p & MW_TRUSTM_MD_TYPE) put_tag(b, &o, 0xE8, &md->type, 1);
  if (p & MW_TRUSTM_MD_RESET_TYPE) put_tag(b, &o, 0xF0, &md->reset_type, 1);
  if (o - 2 > 0xFF) return MW_ERR_TOO_LARGE;
  if (o > cap) return MW_ERR_TOO_LARGE;
  b[0] = 0x20;
  b[1] = (uint8_t)(o - 2);
  memcpy(out, b, o);
  *out_len = o;
  return MW_OK;
}

/* ---- names ---- */

static const struct {
  uint8_t v;
  const char *name, *abbr;
} lcs_names[] = {{0x01, "creation", "cr"}, {0x03, "initialization", "in"}, {0x07, "operational", "op"},
                 {0x0F, "termination", "te"}};
#define NLCS (sizeof lcs_names / sizeof lcs_names[0])

static const char *lcs_text(uint8_t lcs, bool abbr, char buf[8]) {
  for (size_t i = 0; i < NLCS; i++)
    if (lcs_names[i].v == lcs) return abbr ? lcs_names[i].abbr : lcs_names[i].name;
  snprintf(buf, 8, "0x%02X", lcs);
  return buf;
}

const char *mw_trustm_lcs_name(uint8_t lcs, char buf[8]) { return lcs_text(lcs, false, buf); }

uint8_t mw_trustm_lcs_parse(const char *name) {
  for (size_t i = 0; name && i < NLCS; i++)
    if (!strcmp(name, lcs_names[i].name) || !strcmp(name, lcs_names[i].abbr)) return lcs_names[i].v;
  return 0;
}

const char *mw_trustm_type_name(uint8_t type) {
  switch (type) {
  case 0x00: return "BSTR";
  case 0x01: return "UPCTR";
  case 0x11: return "TA";
  case 0x12: return "DEVCERT";
  case 0x21: return "PRESSEC";
  case 0x22: return "PTFBIND";
  case 0x23: return "UPDATSEC";
  case 0x31: return "AUTOREF";
  }
  return NULL;
}

int mw_trustm_type_parse(const char *name) {
  for (int i = 0; name && i < 256; i++)
    if (mw_trustm_type_name((uint8_t)i) && !strcmp(mw_trustm_type_name((uint8_t)i), name)) return i;
  return -1;
}

static const struct {
  uint8_t bit;
  const char *name;
} usages[] = {{MW_TRUSTM_USAGE_AUTH, "auth"},
              {MW_TRUSTM_USAGE_ENC, "enc"},
              {MW_TRUSTM_USAGE_SIGN, "sign"},
              {MW_TRUSTM_USAGE_KEYAGREE, "keyagree"}};

uint8_t mw_trustm_usage_parse(const char *name, size_t len) {
  for (size_t i = 0; name && i < sizeof usages / sizeof usages[0]; i++)
    if (strlen(usages[i].name) == len && !strncmp(name, usages[i].name, len)) return usages[i].bit;
  return 0;
}

const char *mw_trustm_usage_name(uint8_t bit) {
  for (size_t i = 0; i < sizeof usages / sizeof usages[0]; i++)
    if (usages[i].bit == bit) return usages[i].name;
  return NULL;
}

/* ---- access conditions as text ---- */

static const char *op_text(uint8_t op) {
  switch (op) {
  case 0xFA: return "==";
  case 0xFB: return ">";
  case 0xFC: return "<";
  }
  return NULL;
}

/* Operands and operators must alternate, as the parser requires: term (op term)*. */
mw_status_t mw_trustm_ac_format(const mw_trustm_ac_t *ac, char *out, size_t cap) {
  size_t o = 0;
  char tmp[48], lb[8];
  if (!ac || ac->len == 0 || ac->len > MW_TRUSTM_AC_MAX || cap == 0) return MW_ERR_INVALID;
  out[0] = '\0';
  const uint8_t *b = ac->bytes;
  size_t n = ac->len;
  bool want_term = true;
  for (size_t i = 0; i < n;) {
    uint8_t c = b[i];
    const char *name = NULL;
    if (!want_term) {
      if (c != 0xFD && c != 0xFE) return MW_ERR_PROTOCOL;
      snprintf(tmp, sizeof tmp, c == 0xFD ? " && " : " || ");
      i += 1;
    } else {
      switch (c) {
      case 0x00: snprintf(tmp, sizeof tmp, "ALW"); i += 1; break;
      case 0xFF: snprintf(tmp, sizeof tmp, "NEV"); i += 1; break;
      case 0x10: name = "SecStaG"; /* fall through */
      case 0x90:
        if (i + 2 > n) return MW_ERR_PROTOCOL;
        snprintf(tmp, sizeof tmp, "%s(0x%02X)", name ? name : "SecStaA", b[i + 1]);
        i += 2;
        break;
      case 0x20: name = "Conf"; goto oid;
      case 0x21: name = "Int"; goto oid;
      case 0x23: name = "Auto"; goto oid;
      case 0x40: name = "Luc";
      oid:
        if (i + 3 > n) return MW_ERR_PROTOCOL;
        snprintf(tmp, sizeof tmp, "%s(0x%02X%02X)", name, b[i + 1], b[i + 2]);
        i += 3;
        break;
      case 0x70: name = "LcsG"; goto lcs;
      case 0xE0: name = "LcsA"; goto lcs;
      case 0xE1: name = "LcsO";
      lcs:
        if (i + 3 > n || !op_text(b[i + 1])) return MW_ERR_PROTOCOL;
        snprintf(tmp, sizeof tmp, "%s%s%s", name, op_text(b[i + 1]), lcs_text(b[i + 2], true, lb));
        i += 3;
        break;
      default: return MW_ERR_PROTOCOL;
      }
    }
    want_term = !want_term;
    size_t tl = strlen(tmp);
    if (o + tl + 1 > cap) return MW_ERR_TOO_LARGE;
    memcpy(out + o, tmp, tl + 1);
    o += tl;
  }
  return want_term ? MW_ERR_PROTOCOL : MW_OK; /* a trailing operator */
}

static bool parse_num(const char **s, unsigned long max, unsigned long *v) {
  char *end;
  errno = 0;
  unsigned long x = strtoul(*s, &end, 0);
  if (end == *s || x > max) return false;
  *s = end;
  *v = x;
  return true;
}

static bool parse_lcs(const char **s, uint8_t *v) {
  for (size_t i = 0; i < 2 * NLCS; i++) {
    const char *n = i < NLCS ? lcs_names[i].name : lcs_names[i - NLCS].abbr;
    size_t l = strlen(n);
    if (strncasecmp(*s, n, l) == 0 && !isalnum((unsigned char)(*s)[l])) {
      *s += l;
      *v = lcs_names[i % NLCS].v;
      return true;
    }
  }
  unsigned long x;
  if (!parse_num(s, 0xFF, &x)) return false;
  *v = (uint8_t)x;
  return true;
}

static bool word(const char **s, const char *w) {
  size_t l = strlen(w);
  if (strncasecmp(*s, w, l) != 0 || isalnum((unsigned char)(*s)[l])) return false;
  *s += l;
  return true;
}

static void skip_ws(const char **s) {
  while (isspace((unsigned char)**s)) (*s)++;
}

mw_status_t mw_trustm_ac_parse(const char *text, mw_trustm_ac_t *ac) {
  static const struct { const char *n; uint8_t code; int kind; } simple[] = {
      {"SecStaG", 0x10, 1}, {"SecStaA", 0x90, 1}, {"Conf", 0x20, 2}, {"Int", 0x21, 2}, {"Auto", 0x23, 2},
      {"Luc", 0x40, 2},     {"LcsG", 0x70, 3},    {"LcsA", 0xE0, 3}, {"LcsO", 0xE1, 3}};
  uint8_t b[MW_TRUSTM_AC_MAX];
  size_t n = 0;
  const char *s = text;
  if (!text || !ac) return MW_ERR_INVALID;
  bool want_operand = true;
  for (;;) {
    skip_ws(&s);
    if (!*s) break;
    if (n + 3 > sizeof b) return MW_ERR_TOO_LARGE;
    if (!want_operand) {
      if (strncmp(s, "&&", 2) == 0) b[n++] = 0xFD;
      else if (strncmp(s, "||", 2) == 0) b[n++] = 0xFE;
      else return MW_ERR_INVALID;
      s += 2;
      want_operand = true;
      continue;
    }
    want_operand = false;
    if (word(&s, "ALW")) { b[n++] = 0x00; continue; }
    if (word(&s, "NEV")) { b[n++] = 0xFF; continue; }
    size_t k;
    for (k = 0; k < sizeof simple / sizeof simple[0]; k++) {
      size_t l = strlen(simple[k].n);
      if (strncasecmp(s, simple[k].n, l) == 0 && !isalnum((unsigned char)s[l])) break;
    }
    if (k == sizeof simple / sizeof simple[0]) return MW_ERR_INVALID;
    s += strlen(simple[k].n);
    b[n++] = simple[k].code;
    unsigned long v;
    if (simple[k].kind == 1 || simple[k].kind == 2) {
      skip_ws(&s);
      if (*s++ != '(') return MW_ERR_INVALID;
      skip_ws(&s);
      if (!parse_num(&s, simple[k].kind == 1 ? 0xFF : 0xFFFF, &v)) return MW_ERR_INVALID;
      skip_ws(&s);
      if (*s++ != ')') return MW_ERR_INVALID;
      if (simple[k].kind == 2) b[n++] = (uint8_t)(v >> 8);
      b[n++] = (uint8_t)v;
    } else {
      skip_ws(&s);
      uint8_t op;
      if (strncmp(s, "==", 2) == 0) op = 0xFA, s += 2;
      else if (*s == '>') op = 0xFB, s++;
      else if (*s == '<') op = 0xFC, s++;
      else return MW_ERR_INVALID;
      skip_ws(&s);
      uint8_t lv;
      if (!parse_lcs(&s, &lv)) return MW_ERR_INVALID;
      b[n++] = op;
      b[n++] = lv;
    }
  }
  if (n == 0 || want_operand) return MW_ERR_INVALID;
  memset(ac, 0, sizeof *ac);
  ac->len = (uint8_t)n;
  memcpy(ac->bytes, b, n);
  return MW_OK;
}
