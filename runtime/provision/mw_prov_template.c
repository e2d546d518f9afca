/*
** Parsing a template: the whole template is checked here (shape, names, intrinsic forms,
** parameter constraints) so that applying it later can only fail on a request's values.
*/
#include "mw_prov_template_int.h"

#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool mw_prov_template_name_ok(const char *name, size_t len) {
  if (len == 0 || len > MW_PROV_TEMPLATE_NAME_MAX) return false;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-') return false;
  return true;
}

/* ------------------------------------------------------------------ checking */

typedef struct {
  const mw_prov_template_t *t;
  char *err;
  size_t errlen;
} chk_t;

__attribute__((format(printf, 3, 4)))
static int cerr(chk_t *c, const char *path, const char *fmt, ...) {
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(c->err, c->errlen, "template %s: %s: %s", c->t->name, path, msg);
  return -1;
}

typedef enum { K_SCALAR = 1, K_LIST = 2 } kind_t;

static bool known_ref(const mw_prov_template_t *t, const char *name) {
  return (t->params && cJSON_GetObjectItemCaseSensitive(t->params, name)) || mw_prov_tpl_is_builtin(name);
}


static int check_expr(chk_t *c, const cJSON *x, const char *path, int depth, kind_t *kind);

static int check_scalar(chk_t *c, const cJSON *x, const char *path, int depth) {
  kind_t k;
  if (check_expr(c, x, path, depth, &k) != 0) return -1;
  if (k != K_SCALAR) return cerr(c, path, "expected a string, found a list");
  return 0;
}

static int check_list(chk_t *c, const cJSON *x, const char *path, int depth) {
  kind_t k;
  if (check_expr(c, x, path, depth, &k) != 0) return -1;
  if (k != K_LIST) return cerr(c, path, "expected a list");
  return 0;
}

/* Checks the ${Name} references of an Fn::Sub string against parameters and vars. */
static int check_sub_string(chk_t *c, const char *s, const cJSON *vars, const char *path) {
  for (const char *p = s; (p = strstr(p, "${")) != NULL;) {
    if (p[2] == '!') { /* ${!Literal} is a literal "${Literal}" */
      p += 3;
      continue;
    }
    const char *end = strchr(p, '}');
    if (!end) return cerr(c, path, "unterminated ${ in Fn::Sub string");
    char name[160];
    size_t n = (size_t)(end - p - 2);
    if (n == 0 || n >= sizeof name) return cerr(c, path, "bad ${...} reference in Fn::Sub string");
    memcpy(name, p + 2, n);
    name[n] = 0;
    if (!(vars && cJSON_GetObjectItemCaseSensitive(vars, name)) && !known_ref(c->t, name))
      return cerr(c, path, "Fn::Sub refers to ${%s}, which is neither a parameter nor a variable", name);
    p = end + 1;
  }
  return 0;
}

static int check_expr(chk_t *c, const cJSON *x, const char *path, int depth, kind_t *kind) {
  char sub[256];
  if (depth > MW_PROV_TPL_DEPTH_MAX)
    return cerr(c, path, "expressions nest deeper than %d levels", MW_PROV_TPL_DEPTH_MAX);
  if (cJSON_IsString(x) || cJSON_IsNumber(x) || cJSON_IsBool(x)) {
    *kind = K_SCALAR;
    return 0;
  }
  if (cJSON_IsArray(x)) {
    int i = 0;
    for (const cJSON *e = x->child; e; e = e->next, i++) {
      snprintf(sub, sizeof sub, "%s[%d]", path, i);
      if (check_scalar(c, e, sub, depth + 1) != 0) return -1;
    }
    *kind = K_LIST;
    return 0;
  }
  const char *fn = mw_prov_tpl_intrinsic_name(x);
  if (!fn) return cerr(c, path, "expected a value or one of Ref, Fn::Join, Fn::Sub, Fn::Select, Fn::Split, Fn::FindInMap");
  const cJSON *a = x->child;
  snprintf(sub, sizeof sub, "%s.%s", path, fn);
  *kind = K_SCALAR;
  if (!strcmp(fn, "Ref")) {
    if (!cJSON_IsString(a)) return cerr(c, sub, "needs a parameter name");
    if (!known_ref(c->t, a->valuestring))
      return cerr(c, sub, "'%s' is not a parameter of this template", a->valuestring);
    return 0;
  }
  int n = cJSON_GetArraySize(a);
  if (!strcmp(fn, "Fn::Join")) {
    if (!cJSON_IsArray(a) || n != 2 || !cJSON_IsString(a->child))
      return cerr(c, sub, "needs [\"delimiter\", [values...]]");
    return check_list(c, a->child->next, sub, depth + 1);
  }
  if (!strcmp(fn, "Fn::Sub")) {
    if (cJSON_IsString(a)) return check_sub_string(c, a->valuestring, NULL, sub);
    if (!cJSON_IsArray(a) || n != 2 || !cJSON_IsString(a->child) || !cJSON_IsObject(a->child->next))
      return cerr(c, sub, "needs \"string\" or [\"string\", {variables}]");
    for (const cJSON *v = a->child->next->child; v; v = v->next)
      if (check_scalar(c, v, sub, depth + 1) != 0) return -1;
    return check_sub_string(c, a->child->valuestring, a->child->next, sub);
  }
  if (!strcmp(fn, "Fn::Select")) {
    if (!cJSON_IsArray(a) || n != 2) return cerr(c, sub, "needs [index, [values...]]");
    if (check_scalar(c, a->child, sub, depth + 1) != 0) return -1;
    return check_list(c, a->child->next, sub, depth + 1);
  }
  if (!strcmp(fn, "Fn::Split")) {
    if (!cJSON_IsArray(a) || n != 2 || !cJSON_IsString(a->child) || !a->child->valuestring[0])
      return cerr(c, sub, "needs [\"delimiter\", \"string\"] with a non-empty delimiter");
    *kind = K_LIST;
    return check_scalar(c, a->child->next, sub, depth + 1);
  }
  if (!strcmp(fn, "Fn::FindInMap")) {
    if (!cJSON_IsArray(a) || n != 3) return cerr(c, sub, "needs [map, top-level key, second-level key]");
    if (cJSON_IsString(a->child) &&
        !(c->t->mappings && cJSON_GetObjectItemCaseSensitive(c->t->mappings, a->child->valuestring)))
      return cerr(c, sub, "there is no mapping '%s' in Mappings", a->child->valuestring);
    for (const cJSON *e = a->child; e; e = e->next)
      if (check_scalar(c, e, sub, depth + 1) != 0) return -1;
    return 0;
  }
  return cerr(c, path, "%s is not supported by the local service (Ref, Fn::Join, Fn::Sub, Fn::Select, Fn::Split, "
                       "Fn::FindInMap are)", fn);
}

static int check_keys(chk_t *c, const cJSON *obj, const char *path, const char *const *allowed) {
  for (const cJSON *k = obj->child; k; k = k->next) {
    int ok = 0;
    for (int i = 0; allowed[i]; i++)
      if (!strcmp(k->string, allowed[i])) ok = 1;
    if (!ok) return cerr(c, path, "unknown or unsupported key '%s'", k->string);
  }
  return 0;
}

static int check_params(chk_t *c, const cJSON *params) {
  static const char *const keys[] = {"Type", "Default", "Description", "AllowedValues", "AllowedPattern",
                                     "MinLength", "MaxLength", "ConstraintDescription", NULL};
  if (!cJSON_IsObject(params)) return cerr(c, "Parameters", "must be an object");
  for (const cJSON *p = params->child; p; p = p->next) {
    char path[200];
    snprintf(path, sizeof path, "Parameters.%s", p->string);
    if (!*p->string || strlen(p->string) > 128) return cerr(c, path, "parameter names are 1..128 characters");
    if (!cJSON_IsObject(p)) return cerr(c, path, "must be an object with a Type");
    if (check_keys(c, p, path, keys) != 0) return -1;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "Type");
    if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "String")))
      return cerr(c, path, "Type must be \"String\" (the only type provisioning parameters have)");
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(p, "Default");
    if (def && !cJSON_IsString(def)) return cerr(c, path, "Default must be a string");
    const cJSON *av = cJSON_GetObjectItemCaseSensitive(p, "AllowedValues");
    if (av) {
      if (!cJSON_IsArray(av) || !av->child) return cerr(c, path, "AllowedValues must be a non-empty list of strings");
      for (const cJSON *v = av->child; v; v = v->next)
        if (!cJSON_IsString(v)) return cerr(c, path, "AllowedValues must be a non-empty list of strings");
    }
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "AllowedPattern");
    if (pat) {
      if (!cJSON_IsString(pat)) return cerr(c, path, "AllowedPattern must be a string");
      if (!mw_prov_tpl_pattern_bounded(pat->valuestring))
        return cerr(c, path, "AllowedPattern is too long or repeats too much (at most %d characters and %d "
                             "repetitions, none directly after another; nested +, {n} must multiply to at most %d)",
                    MW_PROV_TPL_PATTERN_MAX_LEN, MW_PROV_TPL_PATTERN_MAX_REPEATS, MW_PROV_TPL_PATTERN_MAX_COPIES);
      regex_t re;
      int rc = mw_prov_tpl_pattern_compile(&re, pat->valuestring);
      if (rc < 0) return cerr(c, path, "out of memory");
      if (rc != 0) return cerr(c, path, "AllowedPattern is not a POSIX extended regular expression");
      regfree(&re);
    }
    for (int i = 0; i < 2; i++) {
      const cJSON *l = cJSON_GetObjectItemCaseSensitive(p, i ? "MaxLength" : "MinLength");
      if (l && (!cJSON_IsNumber(l) || l->valuedouble < 0 || l->valuedouble > MW_PROV_PARAM_VALUE_MAX))
        return cerr(c, path, "%s must be a number 0..%d", i ? "MaxLength" : "MinLength", MW_PROV_PARAM_VALUE_MAX);
    }
  }
  return 0;
}

static int check_mappings(chk_t *c, const cJSON *m) {
  if (!cJSON_IsObject(m)) return cerr(c, "Mappings", "must be an object");
  for (const cJSON *map = m->child; map; map = map->next) {
    if (!cJSON_IsObject(map)) return cerr(c, "Mappings", "'%s' must be an object", map->string);
    for (const cJSON *k1 = map->child; k1; k1 = k1->next) {
      if (!cJSON_IsObject(k1)) return cerr(c, "Mappings", "%s.%s must be an object", map->string, k1->string);
      for (const cJSON *k2 = k1->child; k2; k2 = k2->next)
        if (!cJSON_IsString(k2))
          return cerr(c, "Mappings", "%s.%s.%s must be a string (intrinsics are not allowed in Mappings)",
                      map->string, k1->string, k2->string);
    }
  }
  return 0;
}

static int check_override(chk_t *c, const cJSON *o, const char *path) {
  static const char *const keys[] = {"AttributePayload", "ThingTypeName", "ThingGroups", NULL};
  if (!cJSON_IsObject(o)) return cerr(c, path, "must be an object");
  if (check_keys(c, o, path, keys) != 0) return -1;
  for (const cJSON *k = o->child; k; k = k->next)
    if (!cJSON_IsString(k) || (strcmp(k->valuestring, "MERGE") && strcmp(k->valuestring, "REPLACE") &&
                               strcmp(k->valuestring, "DO_NOTHING")))
      return cerr(c, path, "%s must be MERGE, REPLACE or DO_NOTHING", k->string);
  return 0;
}

static int check_resources(chk_t *c, mw_prov_template_t *t, const cJSON *res) {
  static const char *const rkeys[] = {"Type", "Properties", "OverrideSettings", NULL};
  static const char *const thing_keys[] = {"ThingName", "AttributePayload", "ThingTypeName", "ThingGroups",
                                           "BillingGroup", NULL};
  static const char *const cert_keys[] = {"CertificateId", "Status", "CertificateMode", NULL};
  static const char *const pol_keys[] = {"PolicyName", NULL};
  if (!cJSON_IsObject(res) || !res->child) return cerr(c, "Resources", "must be an object with at least one resource");
  size_t n = (size_t)cJSON_GetArraySize(res);
  t->policies = calloc(n, sizeof *t->policies);
  if (!t->policies) return cerr(c, "Resources", "out of memory");
  for (const cJSON *r = res->child; r; r = r->next) {
    char path[200], sub[260];
    kind_t k;
    snprintf(path, sizeof path, "Resources.%s", r->string);
    if (!cJSON_IsObject(r) || check_keys(c, r, path, rkeys) != 0) return cerr(c, path, "must be an object with Type and Properties");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(r, "Type");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(r, "Properties");
    if (!cJSON_IsString(type)) return cerr(c, path, "has no Type");
    if (!cJSON_IsObject(props)) return cerr(c, path, "has no Properties object");
    snprintf(sub, sizeof sub, "%s.Properties", path);
    const char *ty = type->valuestring;
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(r, "OverrideSettings");
    if (ov && strcmp(ty, "AWS::IoT::Thing")) return cerr(c, path, "OverrideSettings only apply to AWS::IoT::Thing");
    if (!strcmp(ty, "AWS::IoT::Thing")) {
      if (t->thing) return cerr(c, path, "a template may create one thing only");
      t->thing = r;
      if (check_keys(c, props, sub, thing_keys) != 0) return -1;
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(props, "ThingName");
      if (!name) return cerr(c, sub, "ThingName is required");
      char p2[300];
      snprintf(p2, sizeof p2, "%s.ThingName", sub);
      if (check_scalar(c, name, p2, 0) != 0) return -1;
      const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(props, "AttributePayload");
      if (attrs) {
        if (!cJSON_IsObject(attrs)) return cerr(c, sub, "AttributePayload must be an object");
        for (const cJSON *a = attrs->child; a; a = a->next) {
          snprintf(p2, sizeof p2, "%s.AttributePayload.%s", sub, a->string);
          if (check_scalar(c, a, p2, 0) != 0) return -1;
        }
      }
      const cJSON *tt = cJSON_GetObjectItemCaseSensitive(props, "ThingTypeName");
      if (tt && check_scalar(c, tt, sub, 0) != 0) return -1;
      const cJSON *bg = cJSON_GetObjectItemCaseSensitive(props, "BillingGroup");
      if (bg && check_scalar(c, bg, sub, 0) != 0) return -1;
      const cJSON *gr = cJSON_GetObjectItemCaseSensitive(props, "ThingGroups");
      if (gr && check_expr(c, gr, sub, 0, &k) != 0) return -1;
      if (ov && check_override(c, ov, path) != 0) return -1;
    } else if (!strcmp(ty, "AWS::IoT::Certificate")) {
      if (t->cert) return cerr(c, path, "a template may have one certificate resource only");
      t->cert = r;
      if (check_keys(c, props, sub, cert_keys) != 0) return -1;
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(props, "CertificateId");
      if (!id) return cerr(c, sub, "CertificateId is required ({\"Ref\": \"AWS::IoT::Certificate::Id\"})");
      if (check_scalar(c, id, sub, 0) != 0) return -1;
      const cJSON *status = cJSON_GetObjectItemCaseSensitive(props, "Status");
      if (status && check_scalar(c, status, sub, 0) != 0) return -1;
    } else if (!strcmp(ty, "AWS::IoT::Policy")) {
      if (cJSON_GetObjectItemCaseSensitive(props, "PolicyDocument"))
        return cerr(c, sub, "PolicyDocument is not supported by the local service: name a policy of the broker's "
                            "policy description with PolicyName");
      if (check_keys(c, props, sub, pol_keys) != 0) return -1;
      const cJSON *pn = cJSON_GetObjectItemCaseSensitive(props, "PolicyName");
      if (!pn) return cerr(c, sub, "PolicyName is required");
      if (check_scalar(c, pn, sub, 0) != 0) return -1;
      t->policies[t->npolicies++] = r;
    } else {
      return cerr(c, path, "resource type '%s' is not supported by the local service (AWS::IoT::Thing, "
                           "AWS::IoT::Certificate, AWS::IoT::Policy are)", ty);
    }
  }
  if (!t->thing)
    return cerr(c, "Resources", "the local service needs an AWS::IoT::Thing resource (the broker policy is per thing)");
  return 0;
}

mw_status_t mw_prov_template_parse(const char *name, const char *json, size_t len, mw_prov_template_t **out,
                                   char *err, size_t errlen) {
  static const char *const top_keys[] = {"AWSTemplateFormatVersion", "Description", "Parameters", "Mappings",
                                         "Resources", "DeviceConfiguration", NULL};
  *out = NULL;
  if (!mw_prov_template_name_ok(name, strlen(name))) {
    snprintf(err, errlen, "'%s' is not a valid template name (1..%d of 0-9 A-Z a-z _ -)", name,
             MW_PROV_TEMPLATE_NAME_MAX);
    return MW_ERR_INVALID;
  }
  if (len > MW_PROV_TEMPLATE_MAX) {
    snprintf(err, errlen, "template %s: %zu bytes, larger than AWS IoT's %d-byte limit", name, len,
             MW_PROV_TEMPLATE_MAX);
    return MW_ERR_TOO_LARGE;
  }
  mw_prov_template_t *t = calloc(1, sizeof *t);
  if (!t) return MW_ERR_NOMEM;
  snprintf(t->name, sizeof t->name, "%s", name);
  chk_t c = {t, err, errlen};
  const char *end = NULL;
  t->root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  int rc = -1;
  if (!t->root) {
    cerr(&c, "JSON", "not valid JSON (near byte %ld)", end ? (long)(end - json) : 0L);
  } else if (!cJSON_IsObject(t->root)) {
    cerr(&c, "JSON", "the template must be an object");
  } else if (cJSON_GetObjectItemCaseSensitive(t->root, "Conditions")) {
    cerr(&c, "Conditions", "conditions are not supported by the local service");
  } else if (check_keys(&c, t->root, "top level", top_keys) == 0) {
    t->params = cJSON_GetObjectItemCaseSensitive(t->root, "Parameters");
    t->mappings = cJSON_GetObjectItemCaseSensitive(t->root, "Mappings");
    t->devcfg = cJSON_GetObjectItemCaseSensitive(t->root, "DeviceConfiguration");
    rc = 0;
    if (t->params) rc = check_params(&c, t->params);
    if (rc == 0 && t->mappings) rc = check_mappings(&c, t->mappings);
    if (rc == 0) rc = check_resources(&c, t, cJSON_GetObjectItemCaseSensitive(t->root, "Resources"));
    if (rc == 0 && t->devcfg) {
      if (!cJSON_IsObject(t->devcfg)) {
        rc = cerr(&c, "DeviceConfiguration", "must be an object");
      } else {
        for (const cJSON *d = t->devcfg->child; d && rc == 0; d = d->next) {
          char path[200];
          snprintf(path, sizeof path, "DeviceConfiguration.%s", d->string);
          if (cJSON_IsObject(d) && !mw_prov_tpl_intrinsic_name(d))
            rc = cerr(&c, path, "nested objects are not allowed");
          else rc = check_scalar(&c, d, path, 0);
        }
      }
    }
  }
  if (rc != 0) {
    mw_prov_template_free(t);
    return MW_ERR_INVALID;
  }
  *out = t;
  return MW_OK;
}

void mw_prov_template_free(mw_prov_template_t *t) {
  if (!t) return;
  cJSON_Delete(t->root);
  free(t->policies);
  free(t);
}

const char *mw_prov_template_name(const mw_prov_template_t *t) { return t->name; }
