#include "mw_shadow_doc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Exact AWS texts (aws-iot.md §1.8). */
#define MSG_INVALID_JSON "Invalid JSON"
#define MSG_MISSING_STATE "Missing required node: state"
#define MSG_STATE_NOT_OBJECT "State node must be an object"
#define MSG_DESIRED_NOT_OBJECT "Desired node must be an object"
#define MSG_REPORTED_NOT_OBJECT "Reported node must be an object"
#define MSG_INVALID_VERSION "Invalid version"
#define MSG_INVALID_TOKEN "Invalid clientToken"
#define MSG_DEPTH "JSON contains too many levels of nesting; maximum is %d"
#define MSG_INVALID_NODE "State contains an invalid node: " /* + '<key>' */
#define MSG_NOT_FOUND "No shadow exists with name: "      /* + '<name>' */
#define MSG_CONFLICT "Version conflict"
#define MSG_TOO_LARGE "The payload exceeds the maximum size allowed"
#define MSG_ENCODING "Unsupported documented encoding; supported encoding is UTF-8"
#define MSG_INTERNAL "Internal service failure"

/* cJSON refuses deeper input (CJSON_NESTING_LIMIT); the syntax check uses the same bound. */
#define JSON_NESTING_LIMIT 1000
/* Largest integer a double holds exactly; versions above it are refused. */
#define VERSION_MAX 9007199254740992.0

void mw_shadow_options_init(mw_shadow_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->delta_rule = MW_SHADOW_DELTA_ON_DESIRED;
  opt->accepted_echo_nulls = true;
  opt->max_depth = MW_SHADOW_DEPTH_MAX;
  opt->invalid_json_message = MSG_INVALID_JSON;
  opt->array_null_message = MSG_INVALID_JSON;
  opt->documents_previous = MW_SHADOW_PREVIOUS_NULL;
  opt->documents_on_state_null = true;
  opt->delete_version = MW_SHADOW_DELETE_VERSION_LAST;
  opt->recreate_window_s = MW_SHADOW_RECREATE_WINDOW_S;
  opt->get_metadata_delta = false;
  opt->create_version = MW_SHADOW_CREATE_VERSION_MATCH;
  opt->duplicate_keys = MW_SHADOW_DUPLICATE_LAST;
  opt->max_state_bytes = MW_SHADOW_STATE_MAX;
  opt->max_payload_bytes = MW_SHADOW_PAYLOAD_MAX;
}

static const mw_shadow_options_t *opts_or_default(const mw_shadow_options_t *opt, mw_shadow_options_t *tmp) {
  if (opt) return opt;
  mw_shadow_options_init(tmp);
  return tmp;
}

/*-----------------------------------------------------------------------------------------
** Errors
*/

void mw_shadow_error_set(mw_shadow_error_t *err, int code, const char *fmt, ...) {
  va_list ap;
  err->code = code;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}

/*
** Copies at most max bytes of s into out (NUL-terminated, size max + 1), cutting only at a
** UTF-8 character boundary so a truncated name never yields invalid UTF-8.
*/
static void copy_utf8_prefix(char *out, size_t max, const char *s) {
  size_t n = strlen(s);
  if (n > max) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  }
  memcpy(out, s, n);
  out[n] = '\0';
}

/* "<prefix>'<name>'"; long names are shortened to fit the message buffer. */
static void error_with_name(mw_shadow_error_t *err, int code, const char *prefix, const char *name) {
  char part[MW_SHADOW_MESSAGE_MAX - 64];
  copy_utf8_prefix(part, sizeof part - 1, name ? name : "");
  mw_shadow_error_set(err, code, "%s'%s'", prefix, part);
}

void mw_shadow_error_not_found(mw_shadow_error_t *err, const char *name) {
  error_with_name(err, 404, MSG_NOT_FOUND, name);
}

static void error_nomem(mw_shadow_error_t *err) {
  if (err) mw_shadow_error_set(err, 500, "%s", MSG_INTERNAL);
}

/* Adds v under key k; frees v and returns false if v is NULL or the add fails. */
static bool add(cJSON *o, const char *k, cJSON *v) {
  if (!v) return false;
  if (!cJSON_AddItemToObject(o, k, v)) {
    cJSON_Delete(v);
    return false;
  }
  return true;
}

static bool add_num(cJSON *o, const char *k, double v) {
  return add(o, k, cJSON_CreateNumber(v));
}

static bool add_token(cJSON *o, const char *token) {
  return !token || add(o, "clientToken", cJSON_CreateString(token));
}

/*-----------------------------------------------------------------------------------------
** Compact JSON printer. cJSON 1.7.15 prints every number with "%1.15g" plus an sscanf
** round-trip check, which dominated the update path; this one prints integers (the
** timestamps, versions and most values) directly and counts lengths without allocating.
*/

typedef struct {
  char *buf;  /* NULL: count only */
  size_t len, cap;
  bool oom;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n) {
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

static void sb_number(sbuf_t *b, double d) {
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
    sb_put(b, p, (size_t)(tmp + sizeof tmp - p));
    return;
  } else {
    n = snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d) n = snprintf(tmp, sizeof tmp, "%.17g", d);
  }
  sb_put(b, tmp, (size_t)n);
}

static void sb_string(sbuf_t *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  sb_put(b, "\"", 1);
  const char *run = s;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    sb_put(b, run, (size_t)(s - run));
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
    sb_put(b, esc, n);
  }
  sb_put(b, run, (size_t)(s - run));
  sb_put(b, "\"", 1);
}

static void sb_value(sbuf_t *b, const cJSON *v) {
  switch (v->type & 0xFF) {
    case cJSON_False: sb_put(b, "false", 5); break;
    case cJSON_True: sb_put(b, "true", 4); break;
    case cJSON_NULL: sb_put(b, "null", 4); break;
    case cJSON_Number: sb_number(b, v->valuedouble); break;
    case cJSON_String: sb_string(b, v->valuestring ? v->valuestring : ""); break;
    case cJSON_Array:
    case cJSON_Object: {
      bool obj = (v->type & 0xFF) == cJSON_Object;
      sb_put(b, obj ? "{" : "[", 1);
      for (const cJSON *c = v->child; c && !b->oom; c = c->next) {
        if (c != v->child) sb_put(b, ",", 1);
        if (obj) {
          sb_string(b, c->string ? c->string : "");
          sb_put(b, ":", 1);
        }
        sb_value(b, c);
      }
      sb_put(b, obj ? "}" : "]", 1);
      break;
    }
    default: sb_put(b, "null", 4); /* raw/invalid items never occur here */
  }
}

char *mw_shadow_json_print(const cJSON *v, size_t *out_len) {
  sbuf_t b = {malloc(256), 0, 256, false};
  if (!b.buf || !v) {
    free(b.buf);
    return NULL;
  }
  sb_value(&b, v);
  if (b.oom) {
    free(b.buf);
    return NULL;
  }
  b.buf[b.len] = '\0';
  if (out_len) *out_len = b.len;
  return b.buf;
}

/* Length of the compact form, without allocating. */
static size_t json_len(const cJSON *v) {
  sbuf_t b = {NULL, 0, 0, false};
  if (v) sb_value(&b, v);
  return b.len;
}

/* Prints and frees the tree; NULL if tree is NULL or printing fails. */
static char *print_free(cJSON *tree) {
  char *s = tree ? mw_shadow_json_print(tree, NULL) : NULL;
  cJSON_Delete(tree);
  return s;
}

char *mw_shadow_error_json(const mw_shadow_error_t *err, int64_t now_s) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  bool ok = add_num(o, "code", err->code) && add(o, "message", cJSON_CreateString(err->message)) &&
            add_num(o, "timestamp", (double)now_s) &&
            add_token(o, err->has_client_token ? err->client_token : NULL);
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return print_free(o);
}

/*-----------------------------------------------------------------------------------------
** Strict input checks: UTF-8 and RFC 8259 syntax. cJSON alone is lenient (leading zeros,
** raw control characters, "1."), while AWS "respects all rules of the JSON specification".
*/

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
static cJSON *parse_strict(const void *payload, size_t len, mw_shadow_duplicate_rule_t rule, int *code) {
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

/*-----------------------------------------------------------------------------------------
** Request validation
*/

/* GGSM's rule: desired/reported is level 1; a non-empty object or array deeper than max is refused. */
static bool depth_ok(const cJSON *node, int level, int max) {
  if (!(cJSON_IsObject(node) || cJSON_IsArray(node)) || !node->child) return true;
  if (level > max) return false;
  for (const cJSON *c = node->child; c; c = c->next)
    if (!depth_ok(c, level + 1, max)) return false;
  return true;
}

static bool null_in_array(const cJSON *node, bool in_array) {
  if (cJSON_IsNull(node)) return in_array;
  if (cJSON_IsArray(node)) in_array = true;
  if (cJSON_IsArray(node) || cJSON_IsObject(node))
    for (const cJSON *c = node->child; c; c = c->next)
      if (null_in_array(c, in_array)) return true;
  return false;
}

static bool version_value(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (!(d >= 0 && d <= VERSION_MAX) || floor(d) != d) return false;
  *out = (int64_t)d;
  return true;
}

static bool token_valid(const cJSON *t) {
  return cJSON_IsString(t) && t->valuestring && strlen(t->valuestring) <= MW_SHADOW_CLIENT_TOKEN_MAX;
}

mw_status_t mw_shadow_request_parse(const void *payload, size_t len, const mw_shadow_options_t *opt,
                                    mw_shadow_request_t *req, mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = opts_or_default(opt, &tmp);
  memset(req, 0, sizeof *req);
  memset(err, 0, sizeof *err);
  if (!payload && len) {
    mw_shadow_error_set(err, 400, "%s", opt->invalid_json_message);
    return MW_ERR_INVALID;
  }
  if (len > opt->max_payload_bytes) {
    mw_shadow_error_set(err, 413, "%s", MSG_TOO_LARGE);
    return MW_ERR_INVALID;
  }
  int code;
  cJSON *root = parse_strict(payload, len, opt->duplicate_keys, &code);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    if (code == 415) mw_shadow_error_set(err, 415, "%s", MSG_ENCODING);
    else if (code == 500) { error_nomem(err); return MW_ERR_NOMEM; }
    else mw_shadow_error_set(err, 400, "%s", opt->invalid_json_message);
    return MW_ERR_INVALID;
  }

  const cJSON *token = cJSON_GetObjectItemCaseSensitive(root, "clientToken");
  if (token) {
    if (!token_valid(token)) {
      mw_shadow_error_set(err, 400, "%s", MSG_INVALID_TOKEN);
      goto refuse;
    }
    strcpy(err->client_token, token->valuestring);
    err->has_client_token = true;
    req->client_token = token->valuestring;
  }

  const cJSON *state = cJSON_GetObjectItemCaseSensitive(root, "state");
  if (!state) {
    mw_shadow_error_set(err, 400, "%s", MSG_MISSING_STATE);
    goto refuse;
  }
  if (!cJSON_IsNull(state) && !cJSON_IsObject(state)) {
    mw_shadow_error_set(err, 400, "%s", MSG_STATE_NOT_OBJECT);
    goto refuse;
  }
  if (cJSON_IsObject(state)) {
    req->state = state;
    for (const cJSON *c = state->child; c; c = c->next) {
      bool is_desired = strcmp(c->string, "desired") == 0;
      if (is_desired || strcmp(c->string, "reported") == 0) {
        if (!cJSON_IsObject(c) && !cJSON_IsNull(c)) {
          mw_shadow_error_set(err, 400, "%s", is_desired ? MSG_DESIRED_NOT_OBJECT : MSG_REPORTED_NOT_OBJECT);
          goto refuse;
        }
        if (is_desired) req->desired = c;
        else req->reported = c;
      } else {
        error_with_name(err, 400, MSG_INVALID_NODE, c->string);
        goto refuse;
      }
    }
  }

  const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
  if (version) {
    if (!version_value(version, &req->version)) {
      mw_shadow_error_set(err, 400, "%s", MSG_INVALID_VERSION);
      goto refuse;
    }
    req->has_version = true;
  }

  if (!depth_ok(req->desired, 1, opt->max_depth) || !depth_ok(req->reported, 1, opt->max_depth)) {
    mw_shadow_error_set(err, 400, MSG_DEPTH, opt->max_depth);
    goto refuse;
  }
  if ((req->desired && null_in_array(req->desired, false)) || (req->reported && null_in_array(req->reported, false))) {
    mw_shadow_error_set(err, 400, "%s", opt->array_null_message);
    goto refuse;
  }
  req->root = root;
  return MW_OK;

refuse:
  cJSON_Delete(root);
  memset(req, 0, sizeof *req);
  return MW_ERR_INVALID;
}

void mw_shadow_request_free(mw_shadow_request_t *req) {
  if (!req) return;
  cJSON_Delete(req->root);
  memset(req, 0, sizeof *req);
}

bool mw_shadow_client_token(const void *payload, size_t len, char out[MW_SHADOW_CLIENT_TOKEN_MAX + 1]) {
  out[0] = '\0';
  if (!payload || !len) return false;
  int code;
  cJSON *root = parse_strict(payload, len, MW_SHADOW_DUPLICATE_LAST, &code);
  const cJSON *t = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "clientToken") : NULL;
  bool found = token_valid(t);
  if (found) strcpy(out, t->valuestring);
  cJSON_Delete(root);
  return found;
}

/*-----------------------------------------------------------------------------------------
** Equality, delta, metadata
*/

static const cJSON *member(const cJSON *obj, const char *key) {
  return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

bool mw_shadow_json_equal(const cJSON *a, const cJSON *b) {
  if (!a || !b) return a == b;
  int ta = a->type & 0xFF, tb = b->type & 0xFF;
  if (ta != tb) return false;
  switch (ta) {
    case cJSON_Number:
      return a->valuedouble == b->valuedouble;
    case cJSON_String:
      return a->valuestring && b->valuestring && strcmp(a->valuestring, b->valuestring) == 0;
    case cJSON_Array: {
      const cJSON *x = a->child, *y = b->child;
      for (; x && y; x = x->next, y = y->next)
        if (!mw_shadow_json_equal(x, y)) return false;
      return !x && !y;
    }
    case cJSON_Object: {
      size_t na = 0, nb = 0;
      for (const cJSON *x = a->child; x; x = x->next) na++;
      for (const cJSON *y = b->child; y; y = y->next) nb++;
      if (na != nb) return false;
      for (const cJSON *x = a->child; x; x = x->next)
        if (!mw_shadow_json_equal(x, cJSON_GetObjectItemCaseSensitive(b, x->string))) return false;
      return true;
    }
    default: /* true, false, null */
      return true;
  }
}

/* Delta into *out (NULL when empty). Returns false on OOM. */
static bool delta_of(const cJSON *desired, const cJSON *reported, cJSON **out) {
  *out = NULL;
  if (!cJSON_IsObject(desired) || !desired->child) return true;
  cJSON *o = cJSON_CreateObject();
  if (!o) return false;
  for (const cJSON *d = desired->child; d; d = d->next) {
    const cJSON *r = member(reported, d->string);
    cJSON *v = NULL;
    if (r && cJSON_IsObject(d) && cJSON_IsObject(r)) {
      if (!delta_of(d, r, &v)) goto nomem;
      if (!v) continue;
    } else if (r && mw_shadow_json_equal(d, r)) {
      continue;
    } else if (!(v = cJSON_Duplicate(d, 1))) {
      goto nomem;
    }
    if (!add(o, d->string, v)) goto nomem;
  }
  if (!o->child) {
    cJSON_Delete(o);
    return true;
  }
  *out = o;
  return true;
nomem:
  cJSON_Delete(o);
  return false;
}

cJSON *mw_shadow_delta(const cJSON *desired, const cJSON *reported) {
  cJSON *out;
  return delta_of(desired, reported, &out) ? out : NULL;
}

cJSON *mw_shadow_metadata_for(const cJSON *value, int64_t ts) {
  cJSON *m;
  if (cJSON_IsObject(value) || cJSON_IsArray(value)) {
    bool obj = cJSON_IsObject(value);
    m = obj ? cJSON_CreateObject() : cJSON_CreateArray();
    if (!m) return NULL;
    for (const cJSON *c = value->child; c; c = c->next) {
      cJSON *cm = mw_shadow_metadata_for(c, ts);
      bool ok = cm && (obj ? cJSON_AddItemToObject(m, c->string, cm) : cJSON_AddItemToArray(m, cm));
      if (!ok) {
        cJSON_Delete(cm);
        cJSON_Delete(m);
        return NULL;
      }
    }
    return m;
  }
  m = cJSON_CreateObject();
  if (m && !add_num(m, "timestamp", (double)ts)) {
    cJSON_Delete(m);
    return NULL;
  }
  return m;
}

cJSON *mw_shadow_delta_metadata(const cJSON *delta, const cJSON *meta_desired) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !cJSON_IsObject(delta)) return o;
  for (const cJSON *d = delta->child; d; d = d->next) {
    const cJSON *m = member(meta_desired, d->string);
    if (!m) continue; /* inconsistent cache; nothing to project */
    cJSON *v = cJSON_IsObject(d) && cJSON_IsObject(m) ? mw_shadow_delta_metadata(d, m) : cJSON_Duplicate(m, 1);
    if (!add(o, d->string, v)) {
      cJSON_Delete(o);
      return NULL;
    }
  }
  return o;
}

/*-----------------------------------------------------------------------------------------
** Merge
*/

/*
** obj[key], searching from *hint (wrapping around) and leaving *hint after the match: a request
** usually names its keys in the document's order, so merging n keys costs O(n), not O(n^2).
** *hint must be NULL or a member of obj.
*/
static cJSON *find_member(const cJSON *obj, const char *key, cJSON **hint) {
  cJSON *start = *hint ? *hint : obj->child;
  for (cJSON *c = start; c; c = c->next)
    if (c->string && strcmp(c->string, key) == 0) {
      *hint = c->next;
      return c;
    }
  for (cJSON *c = obj->child; c && c != start; c = c->next)
    if (c->string && strcmp(c->string, key) == 0) {
      *hint = c->next;
      return c;
    }
  return NULL;
}

/*
** obj[key] = v, where old is the current member (NULL: none): replaced in place (keeps member
** order; v takes over old's key string) or appended. Frees v on failure.
*/
static bool put_member(cJSON *obj, cJSON *old, const char *key, cJSON *v) {
  if (!v) return false;
  if (!old) return add(obj, key, v);
  if (v->string && !(v->type & cJSON_StringIsConst)) cJSON_free(v->string);
  v->string = old->string;
  v->type = (v->type & ~cJSON_StringIsConst) | (old->type & cJSON_StringIsConst);
  old->string = NULL;
  old->type &= ~cJSON_StringIsConst;
  return cJSON_ReplaceItemViaPointer(obj, old, v); /* deletes old */
}

/*
** Merges the request object src into dst; meta mirrors dst. null deletes, objects merge
** recursively (an object replacing a non-object starts from {}), everything else (scalars,
** arrays) replaces the whole value. Every written leaf gets timestamp ts.
*/
static bool merge_object(cJSON *dst, cJSON *meta, const cJSON *src, int64_t ts) {
  cJSON *dh = NULL, *mh = NULL;
  for (const cJSON *s = src->child; s; s = s->next) {
    const char *k = s->string;
    cJSON *d = find_member(dst, k, &dh), *m = find_member(meta, k, &mh);
    if (cJSON_IsNull(s)) {
      if (d) cJSON_Delete(cJSON_DetachItemViaPointer(dst, d));
      if (m) cJSON_Delete(cJSON_DetachItemViaPointer(meta, m));
      continue;
    }
    if (cJSON_IsObject(s)) {
      bool fresh = !cJSON_IsObject(d);
      if (fresh) {
        cJSON *n = cJSON_CreateObject();
        if (!put_member(dst, d, k, n)) return false;
        d = n;
      }
      if (fresh || !cJSON_IsObject(m)) {
        cJSON *n = cJSON_CreateObject();
        if (!put_member(meta, m, k, n)) return false;
        m = n;
      }
      if (!merge_object(d, m, s, ts)) return false;
    } else if (!put_member(dst, d, k, cJSON_Duplicate(s, 1)) ||
               !put_member(meta, m, k, mw_shadow_metadata_for(s, ts))) {
      return false;
    }
  }
  return true;
}

/* Applies one request section (NULL: absent, null: drop, object: merge) to a document section. */
static bool merge_section(cJSON **sec, cJSON **meta, const cJSON *src, int64_t ts) {
  if (!src) return true;
  if (!cJSON_IsNull(src)) {
    if (!*sec && !(*sec = cJSON_CreateObject())) return false;
    if (!cJSON_IsObject(*meta)) {
      cJSON_Delete(*meta);
      if (!(*meta = cJSON_CreateObject())) return false;
    }
    if (!merge_object(*sec, *meta, src, ts)) return false;
    if ((*sec)->child) return true;
  }
  /* "desired": null, or the section became empty: top-level empty sections are not stored */
  cJSON_Delete(*sec);
  cJSON_Delete(*meta);
  *sec = *meta = NULL;
  return true;
}

/*-----------------------------------------------------------------------------------------
** Documents
*/

void mw_shadow_doc_init(mw_shadow_doc_t *doc) {
  memset(doc, 0, sizeof *doc);
}

void mw_shadow_doc_free(mw_shadow_doc_t *doc) {
  if (!doc) return;
  cJSON_Delete(doc->desired);
  cJSON_Delete(doc->reported);
  cJSON_Delete(doc->meta_desired);
  cJSON_Delete(doc->meta_reported);
  mw_shadow_doc_init(doc);
}

static bool dup_into(cJSON **dst, const cJSON *src) {
  *dst = NULL;
  return !src || (*dst = cJSON_Duplicate(src, 1)) != NULL;
}

mw_status_t mw_shadow_doc_copy(mw_shadow_doc_t *dst, const mw_shadow_doc_t *src) {
  mw_shadow_doc_init(dst);
  *dst = *src;
  dst->desired = dst->reported = dst->meta_desired = dst->meta_reported = NULL;
  if (!dup_into(&dst->desired, src->desired) || !dup_into(&dst->reported, src->reported) ||
      !dup_into(&dst->meta_desired, src->meta_desired) || !dup_into(&dst->meta_reported, src->meta_reported)) {
    mw_shadow_doc_free(dst);
    return MW_ERR_NOMEM;
  }
  return MW_OK;
}

size_t mw_shadow_doc_state_size(const mw_shadow_doc_t *doc) {
  return json_len(doc->desired) + json_len(doc->reported);
}

/* {"desired":copy?, "reported":copy?} of two (possibly NULL) sections. */
static cJSON *sections(const cJSON *desired, const cJSON *reported) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  if ((desired && !add(o, "desired", cJSON_Duplicate(desired, 1))) ||
      (reported && !add(o, "reported", cJSON_Duplicate(reported, 1)))) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

/* Removes null members from objects, recursively (arrays never hold null here). */
static void strip_nulls(cJSON *node) {
  if (!cJSON_IsObject(node)) return;
  cJSON *c = node->child;
  while (c) {
    cJSON *next = c->next;
    if (cJSON_IsNull(c)) cJSON_Delete(cJSON_DetachItemViaPointer(node, c));
    else strip_nulls(c);
    c = next;
  }
}

static char *build_accepted(const mw_shadow_request_t *req, int64_t version, int64_t ts, const mw_shadow_options_t *opt) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  bool ok;
  if (!req->state) {
    /* {"state": null, "metadata": {"timestamp": T}, ...} as observed (moto test_update_empty_state) */
    ok = add(o, "state", cJSON_CreateNull()) && add(o, "metadata", mw_shadow_metadata_for(NULL, ts));
  } else {
    cJSON *echo = cJSON_Duplicate(req->state, 1);
    if (echo && !opt->accepted_echo_nulls) strip_nulls(echo);
    ok = echo && add(o, "state", echo) && add(o, "metadata", mw_shadow_metadata_for(echo, ts));
  }
  ok = ok && add_num(o, "version", (double)version) && add_num(o, "timestamp", (double)ts) &&
       add_token(o, req->client_token);
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return print_free(o);
}

/* Consumes delta. */
static char *build_delta(cJSON *delta, const cJSON *meta_desired, int64_t version, int64_t ts, const char *token) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !add_num(o, "version", (double)version) || !add_num(o, "timestamp", (double)ts)) {
    cJSON_Delete(o);
    cJSON_Delete(delta);
    return NULL;
  }
  /* add() frees delta when it fails; afterwards o owns it */
  if (!add(o, "state", delta) || !add(o, "metadata", mw_shadow_delta_metadata(delta, meta_desired)) ||
      !add_token(o, token)) {
    cJSON_Delete(o);
    return NULL;
  }
  return print_free(o);
}

/* {"desired":..,"reported":..} of two (possibly NULL) sections, printed in place. */
static void sb_sections(sbuf_t *b, const cJSON *desired, const cJSON *reported) {
  sb_put(b, "{", 1);
  if (desired) {
    sb_put(b, "\"desired\":", 10);
    sb_value(b, desired);
  }
  if (reported) {
    sb_put(b, desired ? ",\"reported\":" : "\"reported\":", desired ? 12 : 11);
    sb_value(b, reported);
  }
  sb_put(b, "}", 1);
}

/* {"state":{..},"metadata":{..},"version":v} as in /update/documents, printed in place. */
static void sb_snapshot(sbuf_t *b, const mw_shadow_doc_t *d) {
  sb_put(b, "{\"state\":", 9);
  sb_sections(b, d->desired, d->reported);
  sb_put(b, ",\"metadata\":", 12);
  sb_sections(b, d->meta_desired, d->meta_reported);
  sb_put(b, ",\"version\":", 11);
  sb_number(b, (double)d->version);
  sb_put(b, "}", 1);
}

/* Printed directly (no copies of the two documents): this is the biggest message. */
static char *build_documents(const mw_shadow_doc_t *prev, const mw_shadow_doc_t *cur, int64_t ts,
                             const char *token, const mw_shadow_options_t *opt) {
  sbuf_t b = {malloc(1024), 0, 1024, false};
  if (!b.buf) return NULL;
  sb_put(&b, "{", 1);
  if (prev->exists) {
    sb_put(&b, "\"previous\":", 11);
    sb_snapshot(&b, prev);
    sb_put(&b, ",", 1);
  } else if (opt->documents_previous == MW_SHADOW_PREVIOUS_NULL) {
    sb_put(&b, "\"previous\":null,", 16);
  } else if (opt->documents_previous == MW_SHADOW_PREVIOUS_EMPTY) {
    mw_shadow_doc_t empty;
    mw_shadow_doc_init(&empty);
    empty.version = cur->version - 1;
    sb_put(&b, "\"previous\":", 11);
    sb_snapshot(&b, &empty);
    sb_put(&b, ",", 1);
  }
  sb_put(&b, "\"current\":", 10);
  sb_snapshot(&b, cur);
  sb_put(&b, ",\"timestamp\":", 13);
  sb_number(&b, (double)ts);
  if (token) {
    sb_put(&b, ",\"clientToken\":", 15);
    sb_string(&b, token);
  }
  sb_put(&b, "}", 1);
  if (b.oom) {
    free(b.buf);
    return NULL;
  }
  b.buf[b.len] = '\0';
  return b.buf;
}

void mw_shadow_result_free(mw_shadow_result_t *res) {
  if (!res) return;
  free(res->accepted);
  free(res->delta);
  free(res->documents);
  memset(res, 0, sizeof *res);
}

mw_status_t mw_shadow_doc_update(mw_shadow_doc_t *doc, const mw_shadow_request_t *req, int64_t now_s,
                                 const mw_shadow_options_t *opt, mw_shadow_result_t *res,
                                 mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = opts_or_default(opt, &tmp);
  memset(res, 0, sizeof *res);
  memset(err, 0, sizeof *err);
  if (req->client_token) {
    copy_utf8_prefix(err->client_token, MW_SHADOW_CLIENT_TOKEN_MAX, req->client_token);
    err->has_client_token = true;
  }

  /* Version the update is checked against and builds on. A deleted shadow keeps its number
  ** for recreate_window_s, after that it starts again. */
  int64_t base = doc->version;
  if (!doc->exists && (opt->recreate_window_s <= 0 || now_s - doc->deleted_at >= opt->recreate_window_s)) base = 0;
  if (req->has_version) {
    if (doc->exists || opt->create_version == MW_SHADOW_CREATE_VERSION_MATCH) {
      if (req->version != base) {
        mw_shadow_error_set(err, 409, "%s", MSG_CONFLICT);
        return MW_ERR_CONFLICT;
      }
    } else if (opt->create_version == MW_SHADOW_CREATE_VERSION_ONE && req->version != 1) {
      mw_shadow_error_set(err, 400, "%s", MSG_INVALID_VERSION);
      return MW_ERR_INVALID;
    }
  }

  mw_shadow_doc_t next;
  mw_shadow_doc_init(&next);
  if (doc->exists && mw_shadow_doc_copy(&next, doc) != MW_OK) goto nomem;
  if (req->state &&
      (!merge_section(&next.desired, &next.meta_desired, req->desired, now_s) ||
       !merge_section(&next.reported, &next.meta_reported, req->reported, now_s)))
    goto nomem_next;
  if (!req->state) mw_shadow_doc_free(&next); /* "state": null clears desired and reported */

  size_t size = mw_shadow_doc_state_size(&next);
  if (size > opt->max_state_bytes) {
    mw_shadow_doc_free(&next);
    mw_shadow_error_set(err, 413, "%s", MSG_TOO_LARGE);
    return MW_ERR_TOO_LARGE;
  }
  next.version = base + 1;
  next.timestamp = now_s;
  next.exists = true;
  next.deleted_at = 0;

  res->version = next.version;
  if (!(res->accepted = build_accepted(req, next.version, now_s, opt))) goto nomem_next;
  bool want_delta = opt->delta_rule == MW_SHADOW_DELTA_ALWAYS || cJSON_IsObject(req->desired);
  if (want_delta) {
    cJSON *delta;
    if (!delta_of(next.desired, next.reported, &delta)) goto nomem_next;
    if (delta && !(res->delta = build_delta(delta, next.meta_desired, next.version, now_s, req->client_token)))
      goto nomem_next;
  }
  if ((req->state || opt->documents_on_state_null) &&
      !(res->documents = build_documents(doc, &next, now_s, req->client_token, opt)))
    goto nomem_next;

  mw_shadow_doc_free(doc);
  *doc = next;
  return MW_OK;

nomem_next:
  mw_shadow_doc_free(&next);
nomem:
  mw_shadow_result_free(res);
  error_nomem(err);
  return MW_ERR_NOMEM;
}

mw_status_t mw_shadow_doc_delete(mw_shadow_doc_t *doc, const char *name, const char *client_token,
                                 int64_t now_s, const mw_shadow_options_t *opt, char **out_json,
                                 mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = opts_or_default(opt, &tmp);
  *out_json = NULL;
  if (!doc->exists) {
    mw_shadow_error_not_found(err, name);
    return MW_ERR_NOT_FOUND;
  }
  int64_t version = doc->version + (opt->delete_version == MW_SHADOW_DELETE_VERSION_NEXT ? 1 : 0);
  cJSON *o = cJSON_CreateObject();
  bool ok = o && add_num(o, "version", (double)version) && add_num(o, "timestamp", (double)now_s) &&
            add_token(o, client_token);
  if (ok) *out_json = print_free(o); /* frees o */
  else cJSON_Delete(o);
  if (!*out_json) {
    error_nomem(err);
    return MW_ERR_NOMEM;
  }
  mw_shadow_doc_free(doc);
  doc->version = version;
  doc->deleted_at = now_s;
  doc->timestamp = now_s;
  doc->exists = false;
  return MW_OK;
}

mw_status_t mw_shadow_doc_get(const mw_shadow_doc_t *doc, const char *name, const char *client_token,
                              int64_t now_s, const mw_shadow_options_t *opt, char **out_json,
                              mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = opts_or_default(opt, &tmp);
  *out_json = NULL;
  if (!doc->exists) {
    mw_shadow_error_not_found(err, name);
    return MW_ERR_NOT_FOUND;
  }
  cJSON *delta = NULL, *o = cJSON_CreateObject();
  cJSON *state = sections(doc->desired, doc->reported), *meta = sections(doc->meta_desired, doc->meta_reported);
  bool ok = o && state && meta && delta_of(doc->desired, doc->reported, &delta);
  if (ok && delta) {
    if (opt->get_metadata_delta) ok = add(meta, "delta", mw_shadow_delta_metadata(delta, doc->meta_desired));
    ok = add(state, "delta", delta) && ok;
  }
  if (ok) {
    ok = add(o, "state", state);
    state = NULL;
    ok = ok && add(o, "metadata", meta);
    meta = NULL;
    ok = ok && add_num(o, "version", (double)doc->version) && add_num(o, "timestamp", (double)now_s) &&
         add_token(o, client_token);
  }
  cJSON_Delete(state);
  cJSON_Delete(meta);
  if (!ok || !(*out_json = print_free(o))) {
    if (!ok) cJSON_Delete(o);
    error_nomem(err);
    return MW_ERR_NOMEM;
  }
  return MW_OK;
}

/*-----------------------------------------------------------------------------------------
** Storage form and device-side application
*/

char *mw_shadow_doc_serialize(const mw_shadow_doc_t *doc) {
  cJSON *o = cJSON_CreateObject();
  if (o && add(o, "state", sections(doc->desired, doc->reported)) &&
      add(o, "metadata", sections(doc->meta_desired, doc->meta_reported)) &&
      add_num(o, "version", (double)doc->version) && add_num(o, "timestamp", (double)doc->timestamp))
    return print_free(o);
  cJSON_Delete(o);
  return NULL;
}

/* Takes obj[key] out of parent when it is a non-empty object. */
static cJSON *take_section(cJSON *parent, const char *key) {
  cJSON *v = cJSON_IsObject(parent) ? cJSON_GetObjectItemCaseSensitive(parent, key) : NULL;
  if (!cJSON_IsObject(v) || !v->child) return NULL;
  return cJSON_DetachItemViaPointer(parent, v);
}

/* A timestamp read from a document (epoch seconds); anything not a plausible one counts as 0
** (a cast of an out-of-range double to int64_t is undefined). */
static int64_t timestamp_value(const cJSON *ts) {
  if (!cJSON_IsNumber(ts)) return 0;
  double d = ts->valuedouble;
  return d >= 0 && d <= VERSION_MAX ? (int64_t)d : 0;
}

cJSON *mw_shadow_json_parse(const void *payload, size_t len, mw_status_t *st) {
  int code;
  cJSON *root = parse_strict(payload, len, MW_SHADOW_DUPLICATE_LAST, &code);
  if (cJSON_IsObject(root)) {
    *st = MW_OK;
    return root;
  }
  cJSON_Delete(root);
  *st = code == 500 ? MW_ERR_NOMEM : MW_ERR_INVALID;
  return NULL;
}

mw_status_t mw_shadow_doc_take(cJSON *root, mw_shadow_doc_t *doc) {
  mw_shadow_doc_init(doc);
  if (!cJSON_IsObject(root)) return MW_ERR_INVALID;
  int64_t version = 0;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
  const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "timestamp");
  cJSON *state = cJSON_GetObjectItemCaseSensitive(root, "state");
  cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
  if ((v && !version_value(v, &version)) || (state && !cJSON_IsObject(state) && !cJSON_IsNull(state)))
    return MW_ERR_INVALID;
  doc->desired = take_section(state, "desired");
  doc->reported = take_section(state, "reported");
  doc->meta_desired = doc->desired ? take_section(meta, "desired") : NULL;
  doc->meta_reported = doc->reported ? take_section(meta, "reported") : NULL;
  doc->version = version;
  doc->timestamp = timestamp_value(ts);
  doc->exists = true;
  return MW_OK;
}

mw_status_t mw_shadow_doc_deserialize(const void *json, size_t len, mw_shadow_doc_t *doc) {
  mw_shadow_doc_init(doc);
  mw_status_t st;
  cJSON *root = mw_shadow_json_parse(json, len, &st);
  if (root) st = mw_shadow_doc_take(root, doc);
  cJSON_Delete(root);
  return st;
}

mw_status_t mw_shadow_doc_apply_accepted_tree(mw_shadow_doc_t *doc, const cJSON *root) {
  int64_t version = 0;
  const cJSON *v = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "version") : NULL;
  const cJSON *state = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "state") : NULL;
  const cJSON *ts = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "timestamp") : NULL;
  if (!v || !version_value(v, &version) || !state || (!cJSON_IsObject(state) && !cJSON_IsNull(state)))
    return MW_ERR_INVALID;
  if (doc->exists && version <= doc->version) return MW_ERR_STATE;
  const cJSON *d = cJSON_IsObject(state) ? cJSON_GetObjectItemCaseSensitive(state, "desired") : NULL;
  const cJSON *r = cJSON_IsObject(state) ? cJSON_GetObjectItemCaseSensitive(state, "reported") : NULL;
  if ((d && !cJSON_IsObject(d) && !cJSON_IsNull(d)) || (r && !cJSON_IsObject(r) && !cJSON_IsNull(r)))
    return MW_ERR_INVALID;
  int64_t t = timestamp_value(ts);
  mw_shadow_doc_t next;
  mw_shadow_doc_init(&next);
  mw_status_t st = MW_OK;
  if (doc->exists && mw_shadow_doc_copy(&next, doc) != MW_OK) st = MW_ERR_NOMEM;
  else if (cJSON_IsNull(state)) mw_shadow_doc_free(&next);
  else if (!merge_section(&next.desired, &next.meta_desired, d, t) ||
           !merge_section(&next.reported, &next.meta_reported, r, t))
    st = MW_ERR_NOMEM;
  if (st != MW_OK) {
    mw_shadow_doc_free(&next);
    return st;
  }
  next.version = version;
  next.timestamp = t;
  next.exists = true;
  next.deleted_at = 0;
  mw_shadow_doc_free(doc);
  *doc = next;
  return MW_OK;
}

mw_status_t mw_shadow_doc_apply_accepted(mw_shadow_doc_t *doc, const void *payload, size_t len) {
  mw_status_t st;
  cJSON *root = mw_shadow_json_parse(payload, len, &st);
  if (root) st = mw_shadow_doc_apply_accepted_tree(doc, root);
  cJSON_Delete(root);
  return st;
}
