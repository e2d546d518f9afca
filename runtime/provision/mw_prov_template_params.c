/*
** Resolving a request's parameters: the values the service fills in (certificate builtins),
** the request's own values or Defaults, and the checks each parameter declares.
*/
#include "mw_prov_template_int.h"

#include <regex.h>
#include <stdio.h>
#include <string.h>

static const char *const builtin_names[] = {
    "AWS::IoT::Certificate::Id",           "AWS::IoT::Certificate::CommonName",
    "AWS::IoT::Certificate::Country",      "AWS::IoT::Certificate::Organization",
    "AWS::IoT::Certificate::OrganizationalUnit", "AWS::IoT::Certificate::DistinguishedNameQualifier",
    "AWS::IoT::Certificate::StateName",    "AWS::IoT::Certificate::SerialNumber",
    NULL};

bool mw_prov_tpl_is_builtin(const char *name) {
  for (int i = 0; builtin_names[i]; i++)
    if (!strcmp(builtin_names[i], name)) return true;
  return false;
}

/* The value of a builtin, or NULL when this request has none (e.g. no subject field). */
static const char *builtin_value(const mw_prov_builtins_t *b, const char *name) {
  if (!strcmp(name, "AWS::IoT::Certificate::Id")) return b->certificate_id;
  const mw_prov_cert_info_t *c = b->cert;
  if (!c) return NULL;
  const char *v = NULL;
  if (!strcmp(name, "AWS::IoT::Certificate::CommonName")) v = c->cn;
  else if (!strcmp(name, "AWS::IoT::Certificate::Country")) v = c->country;
  else if (!strcmp(name, "AWS::IoT::Certificate::Organization")) v = c->organization;
  else if (!strcmp(name, "AWS::IoT::Certificate::OrganizationalUnit")) v = c->organizational_unit;
  else if (!strcmp(name, "AWS::IoT::Certificate::DistinguishedNameQualifier")) v = c->dn_qualifier;
  else if (!strcmp(name, "AWS::IoT::Certificate::StateName")) v = c->state;
  else if (!strcmp(name, "AWS::IoT::Certificate::SerialNumber")) v = c->serial_number;
  return v && *v ? v : NULL;
}

static void clip(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src);
}

/* Resolves every declared parameter (request value, builtin or Default) and runs its checks. */
mw_status_t mw_prov_tpl_resolve_params(mw_prov_tpl_ev_t *v, const cJSON *req, const mw_prov_builtins_t *b) {
  mw_prov_error_t *e = v->e;
  if (req && !cJSON_IsObject(req)) {
    mw_prov_error_set(e, 400, "InvalidParameters", "parameters must be an object of strings");
    return MW_ERR_INVALID;
  }
  int n = 0;
  for (const cJSON *p = req ? req->child : NULL; p; p = p->next) {
    if (++n > MW_PROV_PARAMS_MAX) {
      mw_prov_error_set(e, 400, "InvalidParameters", "more than %d parameters", MW_PROV_PARAMS_MAX);
      return MW_ERR_INVALID;
    }
    if (!cJSON_IsString(p)) {
      char nm[130];
      clip(nm, sizeof nm, p->string);
      mw_prov_error_set(e, 400, "InvalidParameters", "parameter %s must be a string", nm);
      return MW_ERR_INVALID;
    }
    if (strlen(p->valuestring) > MW_PROV_PARAM_VALUE_MAX) {
      char nm[130];
      clip(nm, sizeof nm, p->string);
      mw_prov_error_set(e, 400, "InvalidParameters", "parameter %s is longer than %d characters", nm,
                        MW_PROV_PARAM_VALUE_MAX);
      return MW_ERR_INVALID;
    }
  }
  /* Builtins are available to Ref whether or not the template declares them. */
  for (int i = 0; builtin_names[i]; i++) {
    const char *val = builtin_value(b, builtin_names[i]);
    if (val && !cJSON_AddStringToObject(v->values, builtin_names[i], val)) return MW_ERR_NOMEM;
  }
  for (const cJSON *p = v->t->params ? v->t->params->child : NULL; p; p = p->next) {
    const char *name = p->string;
    const char *val;
    if (mw_prov_tpl_is_builtin(name)) {
      val = builtin_value(b, name);
      if (!val) {
        mw_prov_error_set(e, 400, "InvalidParameters", "parameter %s: the certificate provides no such value", name);
        return MW_ERR_INVALID;
      }
      continue; /* already set; a request cannot override what the service fills in */
    }
    const cJSON *rv = req ? cJSON_GetObjectItemCaseSensitive(req, name) : NULL;
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(p, "Default");
    if (rv) val = rv->valuestring;
    else if (def) val = def->valuestring;
    else {
      mw_prov_error_set(e, 400, "InvalidParameters", "Missing required parameter %s (template %s)", name, v->t->name);
      return MW_ERR_INVALID;
    }
    size_t vl = strlen(val);
    const cJSON *minl = cJSON_GetObjectItemCaseSensitive(p, "MinLength");
    const cJSON *maxl = cJSON_GetObjectItemCaseSensitive(p, "MaxLength");
    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(p, "ConstraintDescription");
    const char *why = NULL;
    char whybuf[160];
    if (minl && vl < (size_t)minl->valuedouble) why = "is too short";
    if (maxl && vl > (size_t)maxl->valuedouble) why = "is too long";
    const cJSON *av = cJSON_GetObjectItemCaseSensitive(p, "AllowedValues");
    if (!why && av) {
      int found = 0;
      for (const cJSON *a = av->child; a; a = a->next)
        if (!strcmp(a->valuestring, val)) found = 1;
      if (!found) why = "is not one of AllowedValues";
    }
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "AllowedPattern");
    if (!why && pat) {
      regex_t re;
      if (mw_prov_tpl_pattern_compile(&re, pat->valuestring) != 0)
        return MW_ERR_NOMEM; /* compiled once at parse time already */
      if (regexec(&re, val, 0, NULL, 0) != 0) {
        snprintf(whybuf, sizeof whybuf, "does not match AllowedPattern %.100s", pat->valuestring);
        why = whybuf;
      }
      regfree(&re);
    }
    if (why) {
      char shown[64];
      snprintf(shown, sizeof shown, "%.40s%s", val, vl > 40 ? "..." : "");
      mw_prov_error_set(e, 400, "InvalidParameters", "Parameter %s value '%s' %s%s%s", name, shown, why,
                        cJSON_IsString(cd) ? ": " : "", cJSON_IsString(cd) ? cd->valuestring : "");
      return MW_ERR_INVALID;
    }
    if (!cJSON_AddStringToObject(v->values, name, val)) return MW_ERR_NOMEM;
  }
  return MW_OK;
}
