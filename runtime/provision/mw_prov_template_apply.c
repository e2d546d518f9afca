/*
** Applying a parsed template to one request: the outcome (thing, attributes, groups,
** policies, certificate status, device configuration) or the error answer to send.
*/
#include "mw_prov_template_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void mw_prov_error_set(mw_prov_error_t *e, int status, const char *code, const char *fmt, ...) {
  e->status = status;
  snprintf(e->code, sizeof e->code, "%s", code);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

bool mw_prov_thing_name_ok(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 128) return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != ':' && *s != '_' && *s != '-') return false;
  return true;
}

static mw_prov_override_t override_of(const cJSON *thing, const char *key) {
  const cJSON *ov = cJSON_GetObjectItemCaseSensitive(thing, "OverrideSettings");
  const cJSON *s = ov ? cJSON_GetObjectItemCaseSensitive(ov, key) : NULL;
  if (cJSON_IsString(s) && !strcmp(s->valuestring, "MERGE")) return MW_PROV_OVERRIDE_MERGE;
  if (cJSON_IsString(s) && !strcmp(s->valuestring, "REPLACE")) return MW_PROV_OVERRIDE_REPLACE;
  return MW_PROV_OVERRIDE_DO_NOTHING;
}

mw_status_t mw_prov_template_apply(const mw_prov_template_t *t, const cJSON *parameters,
                                   const mw_prov_builtins_t *builtins, mw_prov_outcome_t *out, mw_prov_error_t *e) {
  memset(out, 0, sizeof *out);
  memset(e, 0, sizeof *e);
  mw_prov_tpl_ev_t v = {t, cJSON_CreateObject(), e};
  mw_status_t st = MW_ERR_NOMEM;
  if (!v.values) goto fail;
  if ((st = mw_prov_tpl_resolve_params(&v, parameters, builtins)) != MW_OK) goto fail;
  st = MW_ERR_INVALID;
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(t->thing, "Properties");
  if (!(out->thing_name = mw_prov_tpl_eval_str(&v, cJSON_GetObjectItemCaseSensitive(props, "ThingName"), 0))) goto fail;
  if (!mw_prov_thing_name_ok(out->thing_name)) {
    char shown[64];
    snprintf(shown, sizeof shown, "%.40s", out->thing_name);
    mw_prov_error_set(e, 400, "InvalidParameters",
                      "Thing name '%s' is not valid (1..128 of a-z A-Z 0-9 : _ -)", shown);
    goto fail;
  }
  if (!(out->attributes = mw_prov_tpl_eval_object(&v, cJSON_GetObjectItemCaseSensitive(props, "AttributePayload"))))
    goto fail;
  const cJSON *x;
  if ((x = cJSON_GetObjectItemCaseSensitive(props, "ThingTypeName")) &&
      !(out->thing_type = mw_prov_tpl_eval_str(&v, x, 0)))
    goto fail;
  if ((x = cJSON_GetObjectItemCaseSensitive(props, "BillingGroup")) &&
      !(out->billing_group = mw_prov_tpl_eval_str(&v, x, 0)))
    goto fail;
  if ((x = cJSON_GetObjectItemCaseSensitive(props, "ThingGroups"))) {
    out->thing_groups = mw_prov_tpl_eval(&v, x, 0);
    if (!out->thing_groups) goto fail;
    if (!cJSON_IsArray(out->thing_groups)) {
      cJSON *arr = cJSON_CreateArray();
      if (!arr) goto fail;
      cJSON_AddItemToArray(arr, out->thing_groups);
      out->thing_groups = arr;
    }
  }
  out->override_attributes = override_of(t->thing, "AttributePayload");
  out->override_groups = override_of(t->thing, "ThingGroups");
  if (t->npolicies && !(out->policies = calloc(t->npolicies, sizeof *out->policies))) goto nomem;
  for (size_t i = 0; i < t->npolicies; i++) {
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(t->policies[i], "Properties");
    if (!(out->policies[out->npolicies] =
              mw_prov_tpl_eval_str(&v, cJSON_GetObjectItemCaseSensitive(pp, "PolicyName"), 0)))
      goto fail;
    out->npolicies++;
  }
  if (t->cert) {
    const cJSON *cp = cJSON_GetObjectItemCaseSensitive(t->cert, "Properties");
    char *id = mw_prov_tpl_eval_str(&v, cJSON_GetObjectItemCaseSensitive(cp, "CertificateId"), 0);
    if (!id) goto fail;
    int same = builtins->certificate_id && !strcmp(id, builtins->certificate_id);
    free(id);
    if (!same) {
      mw_prov_error_set(e, 400, "InvalidParameters",
                        "the certificate resource must name the request's certificate (Ref AWS::IoT::Certificate::Id)");
      goto fail;
    }
    out->has_certificate = true;
    out->certificate_active = true;
    const cJSON *sx = cJSON_GetObjectItemCaseSensitive(cp, "Status");
    if (sx) {
      char *s = mw_prov_tpl_eval_str(&v, sx, 0);
      if (!s) goto fail;
      if (!strcasecmp(s, "INACTIVE")) out->certificate_active = false;
      else if (strcasecmp(s, "ACTIVE")) {
        free(s);
        mw_prov_error_set(e, 400, "InvalidParameters", "certificate Status must be ACTIVE or INACTIVE");
        goto fail;
      }
      free(s);
    }
  }
  if (!(out->device_configuration = mw_prov_tpl_eval_object(&v, t->devcfg))) goto fail;
  cJSON_Delete(v.values);
  return MW_OK;
nomem:
  st = MW_ERR_NOMEM;
fail:
  if (!e->status || st == MW_ERR_NOMEM) {
    mw_prov_error_set(e, 500, "InternalFailure", "Internal service failure");
    st = MW_ERR_NOMEM;
  }
  cJSON_Delete(v.values);
  mw_prov_outcome_free(out);
  return st;
}

void mw_prov_outcome_free(mw_prov_outcome_t *o) {
  free(o->thing_name);
  cJSON_Delete(o->attributes);
  free(o->thing_type);
  cJSON_Delete(o->thing_groups);
  free(o->billing_group);
  for (size_t i = 0; i < o->npolicies; i++) free(o->policies[i]);
  free(o->policies);
  cJSON_Delete(o->device_configuration);
  memset(o, 0, sizeof *o);
}
