/*
** libFuzzer target: provisioning templates (a file the service loads) and their application
** to a request's parameters (network input). The input is the template, a NUL byte, then
** the parameters JSON.
*/
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mw_prov_policy.h"
#include "mw_prov_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *z = memchr(data, 0, size);
  size_t tl = z ? (size_t)(z - data) : size;
  mw_prov_template_t *t;
  char err[300];
  if (mw_prov_template_parse("fuzz", (const char *)data, tl, &t, err, sizeof err) == MW_OK) {
    cJSON *params = z ? cJSON_ParseWithLength((const char *)z + 1, size - tl - 1) : NULL;
    mw_prov_cert_info_t info;
    memset(&info, 0, sizeof info);
    strcpy(info.cn, "car-1");
    strcpy(info.country, "DE");
    mw_prov_builtins_t b = {"0123abcd", (size & 1) ? &info : NULL};
    mw_prov_outcome_t o;
    mw_prov_error_t e;
    if (mw_prov_template_apply(t, params, &b, &o, &e) == MW_OK) mw_prov_outcome_free(&o);
    cJSON_Delete(params);
    mw_prov_template_free(t);
  }
  /* The same bytes as a policy description, expanded for a thing. */
  mw_prov_policies_t *p;
  if (mw_prov_policies_parse((const char *)data, tl, &p, err, sizeof err) == MW_OK) {
    char *names[] = {(char *)"car", (char *)"a"};
    cJSON_Delete(mw_prov_policies_acls(p, names, 2, "car-1", err, sizeof err));
    mw_prov_policies_free(p);
  }
  return 0;
}
