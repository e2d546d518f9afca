/*
** The text sink of the encoder (json.encode): JSON text, compact or indented, into the
** buffer of a box, which owns it, so that the error raised after a failed walk frees it.
** Numbers are written so that they read back as the same double, whatever the locale.
*/
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb_json_int.h"

typedef struct tsink {
  mw_json_sink_t base;
  mw_json_box_t *box;
  int pretty;
  int level;
} tsink;

static int buf_reserve(mw_json_box_t *b, size_t extra) {
  size_t need, cap;
  char *p;
  if (extra <= b->cap - b->len)
    return SK_OK;
  if (extra > SIZE_MAX / 2 - b->len)
    return SK_NOMEM;
  need = b->len + extra;
  cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  if ((p = (char *)realloc(b->buf, cap)) == NULL)
    return SK_NOMEM;
  b->buf = p;
  b->cap = cap;
  return SK_OK;
}

static int buf_put(mw_json_box_t *b, const char *s, size_t n) {
  if (buf_reserve(b, n) != SK_OK)
    return SK_NOMEM;
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  return SK_OK;
}

static int t_null(mw_json_sink_t *s) {
  return buf_put(((tsink *)s)->box, "null", 4);
}

static int t_boolean(mw_json_sink_t *s, int v) {
  return v ? buf_put(((tsink *)s)->box, "true", 4) : buf_put(((tsink *)s)->box, "false", 5);
}

static int t_integer(mw_json_sink_t *s, lua_Integer i) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, (LUAI_UACINT)i);
  return buf_put(((tsink *)s)->box, tmp, (size_t)n);
}

/*
** Shortest of %.14g .. %.17g that reads back as the same double; '.' whatever the
** locale. Returns the length.
*/
static int fmt_double(char *out, size_t cap, double d) {
  int prec, n = 0;
  char dp = localeconv()->decimal_point[0];
  for (prec = 14; prec <= 17; prec++) {
    n = snprintf(out, cap, "%.*g", prec, d);
    if (strtod(out, NULL) == d)
      break;
  }
  if (dp != '.') {
    char *p = strchr(out, dp);
    if (p != NULL)
      *p = '.';
  }
  return n;
}

static int t_number(mw_json_sink_t *s, double d) {
  char tmp[40];
  int n = fmt_double(tmp, sizeof tmp, d);
  return buf_put(((tsink *)s)->box, tmp, (size_t)n);
}

/* Writes a JSON string: escapes '"', '\\' and bytes < 0x20; other bytes as they are. */
static int put_string(mw_json_box_t *b, const char *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, run = 0;
  if (buf_reserve(b, n + 2) != SK_OK || buf_put(b, "\"", 1) != SK_OK)
    return SK_NOMEM;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    char esc[6];
    size_t elen = 2;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    if (buf_put(b, p + run, i - run) != SK_OK)
      return SK_NOMEM;
    run = i + 1;
    esc[0] = '\\';
    switch (c) {
      case '"': esc[1] = '"'; break;
      case '\\': esc[1] = '\\'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
        esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
        elen = 6;
    }
    if (buf_put(b, esc, elen) != SK_OK)
      return SK_NOMEM;
  }
  if (buf_put(b, p + run, n - run) != SK_OK || buf_put(b, "\"", 1) != SK_OK)
    return SK_NOMEM;
  return SK_OK;
}

static int t_string(mw_json_sink_t *s, const char *p, size_t n) {
  return put_string(((tsink *)s)->box, p, n);
}

static int t_newline(tsink *t) {
  int i;
  if (buf_reserve(t->box, 1 + 2 * (size_t)t->level) != SK_OK)
    return SK_NOMEM;
  t->box->buf[t->box->len++] = '\n';
  for (i = 0; i < t->level; i++) {
    t->box->buf[t->box->len++] = ' ';
    t->box->buf[t->box->len++] = ' ';
  }
  return SK_OK;
}

static int t_begin(mw_json_sink_t *s, int is_object, size_t n) {
  tsink *t = (tsink *)s;
  (void)n;
  t->level++;
  return buf_put(t->box, is_object ? "{" : "[", 1);
}

static int t_item(mw_json_sink_t *s, size_t i) {
  tsink *t = (tsink *)s;
  if (i > 0 && buf_put(t->box, ",", 1) != SK_OK)
    return SK_NOMEM;
  return t->pretty ? t_newline(t) : SK_OK;
}

static int t_key(mw_json_sink_t *s, const char *p, size_t n) {
  tsink *t = (tsink *)s;
  if (put_string(t->box, p, n) != SK_OK)
    return SK_NOMEM;
  return t->pretty ? buf_put(t->box, ": ", 2) : buf_put(t->box, ":", 1);
}

static int t_end(mw_json_sink_t *s, int is_object, size_t n) {
  tsink *t = (tsink *)s;
  t->level--;
  if (t->pretty && n > 0 && t_newline(t) != SK_OK)
    return SK_NOMEM;
  return buf_put(t->box, is_object ? "}" : "]", 1);
}

static void tsink_init(tsink *t, mw_json_box_t *box, int pretty) {
  t->base.null_ = t_null;
  t->base.boolean = t_boolean;
  t->base.integer = t_integer;
  t->base.number = t_number;
  t->base.string = t_string;
  t->base.begin = t_begin;
  t->base.item = t_item;
  t->base.key = t_key;
  t->base.end = t_end;
  t->box = box;
  t->pretty = pretty;
  t->level = 0;
}

/* Walks the value at 'idx' into the box's buffer as JSON text. */
int mw_json_encode_text(lua_State *L, int idx, mw_json_box_t *box, int pretty, int limit,
                        char *err, size_t errlen) {
  tsink ts;
  tsink_init(&ts, box, pretty);
  return mw_json_walk(L, idx, &ts.base, limit, err, errlen);
}
