/*
** Strict JSON input of the shadow core: UTF-8 and RFC 8259 syntax checks before cJSON parses,
** then duplicate keys and non-finite numbers. cJSON alone is lenient (leading zeros, raw
** control characters, "1."), while AWS "respects all rules of the JSON specification".
*/
#include "mw_shadow_doc_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* cJSON refuses deeper input (CJSON_NESTING_LIMIT); the syntax check uses the same bound. */
#define JSON_NESTING_LIMIT 1000

static bool utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) { i++; continue; }
    size_t len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; }
    else return false;
    if (n - i < len) return false;
    unsigned cp = c & (0x7F >> len);
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

static size_t skip_ws(const unsigned char *s, size_t n, size_t i) {
  while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  return i;
}

static bool is_hex(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string starting at s[*i] == '"'; \u0000 is refused (the C core keeps NUL-terminated strings). */
static bool scan_string(const unsigned char *s, size_t n, size_t *i) {
  size_t j = *i + 1;
  while (j < n) {
    unsigned char c = s[j];
    if (c == '"') { *i = j + 1; return true; }
    if (c < 0x20) return false;
    if (c == '\\') {
      if (++j >= n) return false;
      c = s[j];
      if (c == 'u') {
        if (n - j < 5 || !is_hex(s[j + 1]) || !is_hex(s[j + 2]) || !is_hex(s[j + 3]) || !is_hex(s[j + 4]))
          return false;
        if (s[j + 1] == '0' && s[j + 2] == '0' && s[j + 3] == '0' && s[j + 4] == '0') return false;
        j += 4;
      } else if (!strchr("\"\\/bfnrt", c)) {
        return false;
      }
    }
    j++;
  }
  return false;
}

static bool scan_digits(const unsigned char *s, size_t n, size_t *i) {
  size_t j = *i;
  while (j < n && s[j] >= '0' && s[j] <= '9') j++;
  if (j == *i) return false;
  *i = j;
  return true;
}

static bool scan_number(const unsigned char *s, size_t n, size_t *i) {
  size_t j = *i;
  if (s[j] == '-') j++;
  if (j >= n) return false;
  if (s[j] == '0') j++;
  else if (!scan_digits(s, n, &j)) return false;
  if (j < n && s[j] == '.') {
    j++;
    if (!scan_digits(s, n, &j)) return false;
  }
  if (j < n && (s[j] == 'e' || s[j] == 'E')) {
    j++;
    if (j < n && (s[j] == '+' || s[j] == '-')) j++;
    if (!scan_digits(s, n, &j)) return false;
  }
  *i = j;
  return true;
}

static bool scan_literal(const unsigned char *s, size_t n, size_t *i, const char *lit) {
  size_t l = strlen(lit);
  if (n - *i < l || memcmp(s + *i, lit, l) != 0) return false;
  *i += l;
  return true;
}

/* RFC 8259 syntax check, iterative, nesting bounded by JSON_NESTING_LIMIT. */
static bool json_syntax_ok(const unsigned char *s, size_t n) {
  unsigned char stack[JSON_NESTING_LIMIT];
  size_t depth = 0, i = skip_ws(s, n, 0);
  enum { VALUE, KEY, AFTER } st = VALUE;
  for (;;) {
    if (st == KEY) {
      if (i >= n || s[i] != '"' || !scan_string(s, n, &i)) return false;
      i = skip_ws(s, n, i);
      if (i >= n || s[i] != ':') return false;
      i = skip_ws(s, n, i + 1);
      st = VALUE;
    } else if (st == VALUE) {
      if (i >= n) return false;
      unsigned char c = s[i];
      if (c == '{' || c == '[') {
        if (depth == JSON_NESTING_LIMIT) return false;
        stack[depth++] = c;
        i = skip_ws(s, n, i + 1);
        if (i < n && s[i] == (c == '{' ? '}' : ']')) {
          depth--;
          i++;
          st = AFTER;
        } else {
          st = c == '{' ? KEY : VALUE;
        }
        continue;
      }
      bool ok;
      if (c == '"') ok = scan_string(s, n, &i);
      else if (c == '-' || (c >= '0' && c <= '9')) ok = scan_number(s, n, &i);
      else ok = scan_literal(s, n, &i, "true") || scan_literal(s, n, &i, "false") || scan_literal(s, n, &i, "null");
      if (!ok) return false;
      st = AFTER;
    } else {
      i = skip_ws(s, n, i);
      if (depth == 0) return i == n;
      unsigned char top = stack[depth - 1];
      if (i >= n) return false;
      if (s[i] == ',') {
        i = skip_ws(s, n, i + 1);
        st = top == '{' ? KEY : VALUE;
      } else if (s[i] == (top == '{' ? '}' : ']')) {
        depth--;
        i++;
      } else {
        return false;
      }
    }
  }
}

typedef struct {
  cJSON *item;
  size_t index;
} keyed_t;

static int keyed_cmp(const void *a, const void *b) {
  const keyed_t *x = a, *y = b;
  int c = strcmp(x->item->string, y->item->string);
  if (c) return c;
  return x->index < y->index ? -1 : x->index > y->index;
}

/*
** Walks a parsed tree: removes or refuses duplicate object keys (per rule) and refuses
** non-finite numbers (1e999 would otherwise print as null). Returns false to refuse, and
** sets *nomem on allocation failure.
*/
static bool normalize(cJSON *node, mw_shadow_duplicate_rule_t rule, bool *nomem) {
  if (cJSON_IsNumber(node)) return isfinite(node->valuedouble);
  if (!cJSON_IsObject(node) && !cJSON_IsArray(node)) return true;
  if (cJSON_IsObject(node) && node->child && node->child->next) {
    size_t n = 0;
    for (cJSON *c = node->child; c; c = c->next) n++;
    keyed_t *v = malloc(n * sizeof *v);
    if (!v) { *nomem = true; return false; }
    size_t k = 0;
    for (cJSON *c = node->child; c; c = c->next, k++) v[k] = (keyed_t){c, k};
    qsort(v, n, sizeof *v, keyed_cmp);
    for (size_t a = 0; a < n;) {
      size_t b = a + 1;
      while (b < n && strcmp(v[a].item->string, v[b].item->string) == 0) b++;
      if (b - a > 1) {
        if (rule == MW_SHADOW_DUPLICATE_REJECT) { free(v); return false; }
        size_t keep = rule == MW_SHADOW_DUPLICATE_FIRST ? a : b - 1;
        for (size_t d = a; d < b; d++)
          if (d != keep) cJSON_Delete(cJSON_DetachItemViaPointer(node, v[d].item));
      }
      a = b;
    }
    free(v);
  }
  for (cJSON *c = node->child; c; c = c->next)
    if (!normalize(c, rule, nomem)) return false;
  return true;
}

/*
** Parses strictly: UTF-8 (else 415), syntax, then cJSON, then normalisation.
** Returns the tree, or NULL with *code 400/415/500.
*/
cJSON *mw_shadow_parse_strict(const void *payload, size_t len, mw_shadow_duplicate_rule_t rule, int *code) {
  const unsigned char *s = payload;
  if (len && !utf8_valid(s, len)) { *code = 415; return NULL; }
  *code = 400;
  if (!len || !json_syntax_ok(s, len)) return NULL;
  cJSON *root = cJSON_ParseWithLength((const char *)s, len);
  if (!root) return NULL; /* lone surrogate escapes, or out of memory */
  bool nomem = false;
  if (!normalize(root, rule, &nomem)) {
    if (nomem) *code = 500;
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

cJSON *mw_shadow_json_parse(const void *payload, size_t len, mw_status_t *st) {
  int code;
  cJSON *root = mw_shadow_parse_strict(payload, len, MW_SHADOW_DUPLICATE_LAST, &code);
  if (cJSON_IsObject(root)) {
    *st = MW_OK;
    return root;
  }
  cJSON_Delete(root);
  *st = code == 500 ? MW_ERR_NOMEM : MW_ERR_INVALID;
  return NULL;
}
