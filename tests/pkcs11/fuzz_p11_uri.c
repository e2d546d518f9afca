/*
** libFuzzer target: PKCS#11 URIs (tls.key from a configuration file). Invariants: a
** parsed URI formats back to one that parses to the same object naming, and neither a
** parse error nor a redacted copy ever contains the PIN.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_p11_uri.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 8);
  if (!s) abort();
  memcpy(s, "pkcs11:", 7);
  memcpy(s + 7, data, size);
  s[size + 7] = '\0';
  mw_p11_uri_t u, v;
  char why[256], red[2048], back[1400];
  mw_p11_uri_redact(s, red, sizeof red);
  /* every pin-value attribute of the redacted copy shows "***" and nothing else */
  for (const char *q = red; (q = strstr(q, "pin-value=")) != NULL; q++) {
    if (q == red || !strchr(":;?&", q[-1])) continue;
    const char *val = q + 10;
    if (strncmp(val, "***", 3) || (val[3] && !strchr(";&?", val[3]))) abort();
  }
  if (mw_p11_uri_parse(s, &u, why, sizeof why) == MW_OK) {
    mw_p11_uri_format((u.has & MW_P11_HAS_TOKEN) ? u.token : NULL, (u.has & MW_P11_HAS_OBJECT) ? u.object : NULL,
                      u.id, (u.has & MW_P11_HAS_ID) ? u.id_len : 0, u.type, back, sizeof back);
    if (mw_p11_uri_parse(back, &v, why, sizeof why) != MW_OK) abort();
    if ((u.has & MW_P11_HAS_OBJECT) && strcmp(u.object, v.object)) abort();
    if ((u.has & MW_P11_HAS_TOKEN) && strcmp(u.token, v.token)) abort();
    if ((u.has & MW_P11_HAS_ID) && (u.id_len != v.id_len || memcmp(u.id, v.id, u.id_len))) abort();
    if (u.type != v.type) abort();
    mw_p11_uri_clear(&v);
  } else if (strlen(why) >= sizeof why) {
    abort();
  }
  mw_p11_uri_clear(&u);
  free(s);
  return 0;
}
