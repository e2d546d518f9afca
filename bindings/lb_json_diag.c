/*
** Diagnostics of json.decode: what cJSON 1.7.15 would accept but we refuse (nesting
** beyond the limit, control bytes outside strings), where an error really is when
** cJSON's offset is off, and the message with line, column and an excerpt.
*/
#include <stdint.h>
#include <stdio.h>

#include "lb_json_int.h"

/*
** Offset of the first byte that cJSON would accept but we do not, or SIZE_MAX:
** a '[' or '{' opening nesting level limit+1 (*why = PK_DEPTH), or, outside strings,
** a control byte other than tab, CR, LF (cJSON skips every byte <= 32 as whitespace;
** *why = PK_CTRL). String contents are skipped. *open_str is the offset of a string
** left unterminated at the end of the text, else SIZE_MAX. No allocation, no recursion.
*/
size_t mw_json_prescan(const char *s, size_t n, int limit, int *why, size_t *open_str) {
  size_t i;
  int depth = 0;
  *open_str = SIZE_MAX;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"') {
      size_t start = i;
      for (i++; i < n && s[i] != '"'; i++) {
        if (s[i] == '\\')
          i++;
      }
      if (i >= n)
        *open_str = start;
    }
    else if (c == '[' || c == '{') {
      if (++depth > limit) {
        *why = PK_DEPTH;
        return i;
      }
    }
    else if ((c == ']' || c == '}') && depth > 0)
      depth--;
    else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      *why = PK_CTRL;
      return i;
    }
  }
  return SIZE_MAX;
}

/* Type ('[' or '{') of the innermost container open at offset q, 0 if none. */
static char container_at(const char *s, size_t q) {
  char stack[MW_JSON_MAX_DEPTH + 1];
  size_t i;
  int depth = 0;
  for (i = 0; i < q; i++) {
    if (s[i] == '"') {
      for (i++; i < q && s[i] != '"'; i++) {
        if (s[i] == '\\')
          i++;
      }
    }
    else if (s[i] == '[' || s[i] == '{') {
      if (depth > MW_JSON_MAX_DEPTH)
        return 0;
      stack[depth++] = s[i];
    }
    else if ((s[i] == ']' || s[i] == '}') && depth > 0)
      depth--;
  }
  return depth > 0 ? stack[depth - 1] : 0;
}

/*
** Corrects cJSON 1.7.15's error offset 'pos' in two known cases: a string running off
** the end of the text is reported at its first byte (we say: end of input), and a
** non-string where an object key belongs is reported one byte late.
*/
size_t mw_json_fix_error_pos(const char *s, size_t len, size_t pos, size_t open_str) {
  size_t q, p;
  if (open_str != SIZE_MAX && pos > open_str)
    return len;
  if (pos == 0 || pos > len)
    return pos;
  q = pos - 1;
  if (mw_json_is_ws(s[q]) || s[q] == '"')
    return pos;
  for (p = q; p > 0 && mw_json_is_ws(s[p - 1]); p--)
    ;
  if (p == 0)
    return pos;
  p--;
  if (s[p] == '{' || (s[p] == ',' && container_at(s, p) == '{'))
    return q;
  return pos;
}

/*
** Pushes nil, "<what> at line L, column C near '<excerpt>' (<detail>)", "EJSON".
** Line and column are 1-based, the column counts bytes. 'detail' may be NULL; the end
** of the input and NUL bytes are always mentioned.
*/
int mw_json_decode_error(lua_State *L, const char *s, size_t len, size_t pos, const char *what,
                         const char *detail) {
  size_t i, line = 1, ls = 0, a, e, k = 0;
  char ex[48], msg[ERRMSG_SIZE];
  if (pos > len)
    pos = len;
  for (i = 0; i < pos; i++) {
    if (s[i] == '\n') {
      line++;
      ls = i + 1;
    }
  }
  a = (pos - ls > 12) ? pos - 12 : ls;
  while (a < pos && ((unsigned char)s[a] & 0xC0) == 0x80)  /* don't start inside a UTF-8 sequence */
    a++;
  for (e = pos; e < len && e - pos < 16 && s[e] != '\n' && s[e] != '\r'; e++)
    ;
  while (e > pos && e < len && ((unsigned char)s[e] & 0xC0) == 0x80)
    e--;
  for (i = a; i < e && k < sizeof ex - 1; i++) {
    unsigned char c = (unsigned char)s[i];
    ex[k++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  ex[k] = '\0';
  if (detail == NULL && pos >= len)
    detail = "unexpected end of input";
  else if (detail == NULL && s[pos] == '\0')
    detail = "unexpected NUL byte";
  else if (detail == NULL && (unsigned char)s[pos] < 0x20 && !mw_json_is_ws(s[pos]))
    detail = "unexpected control byte";
  snprintf(msg, sizeof msg, "%s at line %zu, column %zu%s%s%s%s%s%s", what, line, pos - ls + 1,
           k > 0 ? " near '" : "", ex, k > 0 ? "'" : "",
           detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, "EJSON");
  return 3;
}
