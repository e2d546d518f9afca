/*
** JSON output of the shadow core: small cJSON tree builders, and a compact JSON printer.
** The printer is separate from cJSON's because cJSON 1.7.15 prints every number with "%1.15g"
** plus an sscanf round-trip check, which dominated the update path; this one prints integers
** (the timestamps, versions and most values) directly and counts lengths without allocating.
*/
#include "mw_shadow_doc_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds v under key k; frees v and returns false if v is NULL or the add fails. */
bool mw_shadow_add(cJSON *o, const char *k, cJSON *v) {
  if (!v) return false;
  if (!cJSON_AddItemToObject(o, k, v)) {
    cJSON_Delete(v);
    return false;
  }
  return true;
}

bool mw_shadow_add_num(cJSON *o, const char *k, double v) {
  return mw_shadow_add(o, k, cJSON_CreateNumber(v));
}

bool mw_shadow_add_token(cJSON *o, const char *token) {
  return !token || mw_shadow_add(o, "clientToken", cJSON_CreateString(token));
}

void mw_shadow_sb_put(mw_shadow_sbuf_t *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->cap) {
    if (b->len + n + 1 > b->cap) {
      size_t cap = b->cap;
      while (b->len + n + 1 > cap) cap *= 2;
      char *nb = realloc(b->buf, cap);
      if (!nb) {
        b->oom = true;
        return;
      }
      b->buf = nb;
      b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
  }
  b->len += n;
}

void mw_shadow_sb_number(mw_shadow_sbuf_t *b, double d) {
  char tmp[40];
  int n;
  if (!isfinite(d)) {
    n = snprintf(tmp, sizeof tmp, "null"); /* never stored: normalize() refuses them */
  } else if (d == floor(d) && fabs(d) <= VERSION_MAX) {
    long long v = (long long)d;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    char *p = tmp + sizeof tmp;
    do { *--p = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0 || (v == 0 && signbit(d))) *--p = '-';
    mw_shadow_sb_put(b, p, (size_t)(tmp + sizeof tmp - p));
    return;
  } else {
    n = snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d) n = snprintf(tmp, sizeof tmp, "%.17g", d);
  }
  mw_shadow_sb_put(b, tmp, (size_t)n);
}

void mw_shadow_sb_string(mw_shadow_sbuf_t *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  mw_shadow_sb_put(b, "\"", 1);
  const char *run = s;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    mw_shadow_sb_put(b, run, (size_t)(s - run));
    run = s + 1;
    char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
    size_t n = 2;
    switch (c) {
      case '"': case '\\': break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
        n = 6;
    }
    mw_shadow_sb_put(b, esc, n);
  }
  mw_shadow_sb_put(b, run, (size_t)(s - run));
  mw_shadow_sb_put(b, "\"", 1);
}

void mw_shadow_sb_value(mw_shadow_sbuf_t *b, const cJSON *v) {
  switch (v->type & 0xFF) {
    case cJSON_False: mw_shadow_sb_put(b, "false", 5); break;
    case cJSON_True: mw_shadow_sb_put(b, "true", 4); break;
    case cJSON_NULL: mw_shadow_sb_put(b, "null", 4); break;
    case cJSON_Number: mw_shadow_sb_number(b, v->valuedouble); break;
    case cJSON_String: mw_shadow_sb_string(b, v->valuestring ? v->valuestring : ""); break;
    case cJSON_Array:
    case cJSON_Object: {
      bool obj = (v->type & 0xFF) == cJSON_Object;
      mw_shadow_sb_put(b, obj ? "{" : "[", 1);
      for (const cJSON *c = v->child; c && !b->oom; c = c->next) {
        if (c != v->child) mw_shadow_sb_put(b, ",", 1);
        if (obj) {
          mw_shadow_sb_string(b, c->string ? c->string : "");
          mw_shadow_sb_put(b, ":", 1);
        }
        mw_shadow_sb_value(b, c);
      }
      mw_shadow_sb_put(b, obj ? "}" : "]", 1);
      break;
    }
    default: mw_shadow_sb_put(b, "null", 4); /* raw/invalid items never occur here */
  }
}

char *mw_shadow_json_print(const cJSON *v, size_t *out_len) {
  mw_shadow_sbuf_t b = {malloc(256), 0, 256, false};
  if (!b.buf || !v) {
    free(b.buf);
    return NULL;
  }
  mw_shadow_sb_value(&b, v);
  if (b.oom) {
    free(b.buf);
    return NULL;
  }
  b.buf[b.len] = '\0';
  if (out_len) *out_len = b.len;
  return b.buf;
}

/* Length of the compact form, without allocating. */
size_t mw_shadow_json_len(const cJSON *v) {
  mw_shadow_sbuf_t b = {NULL, 0, 0, false};
  if (v) mw_shadow_sb_value(&b, v);
  return b.len;
}

/* Prints and frees the tree; NULL if tree is NULL or printing fails. */
char *mw_shadow_print_free(cJSON *tree) {
  char *s = tree ? mw_shadow_json_print(tree, NULL) : NULL;
  cJSON_Delete(tree);
  return s;
}
