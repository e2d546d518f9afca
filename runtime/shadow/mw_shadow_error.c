/*
** Shadow errors: the /rejected answer (code, exact AWS text, echoed clientToken) and its payload.
*/
#include "mw_shadow_doc_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
void mw_shadow_copy_utf8_prefix(char *out, size_t max, const char *s) {
  size_t n = strlen(s);
  if (n > max) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  }
  memcpy(out, s, n);
  out[n] = '\0';
}

/* "<prefix>'<name>'"; long names are shortened to fit the message buffer. */
void mw_shadow_error_with_name(mw_shadow_error_t *err, int code, const char *prefix, const char *name) {
  char part[MW_SHADOW_MESSAGE_MAX - 64];
  mw_shadow_copy_utf8_prefix(part, sizeof part - 1, name ? name : "");
  mw_shadow_error_set(err, code, "%s'%s'", prefix, part);
}

void mw_shadow_error_not_found(mw_shadow_error_t *err, const char *name) {
  mw_shadow_error_with_name(err, 404, MSG_NOT_FOUND, name);
}

void mw_shadow_error_nomem(mw_shadow_error_t *err) {
  if (err) mw_shadow_error_set(err, 500, "%s", MSG_INTERNAL);
}

char *mw_shadow_error_json(const mw_shadow_error_t *err, int64_t now_s) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  bool ok = mw_shadow_add_num(o, "code", err->code) &&
            mw_shadow_add(o, "message", cJSON_CreateString(err->message)) &&
            mw_shadow_add_num(o, "timestamp", (double)now_s) &&
            mw_shadow_add_token(o, err->has_client_token ? err->client_token : NULL);
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return mw_shadow_print_free(o);
}
