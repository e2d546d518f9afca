#include "mw_prov_template.h"

#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Intrinsics nest; real templates use two or three levels. */
#define MAX_DEPTH 12
/* Longest string an expression may produce (thing names are far shorter). */
#define MAX_VALUE 4096

struct mw_prov_template {
  char name[MW_PROV_TEMPLATE_NAME_MAX + 1];
  cJSON *root;
  const cJSON *params, *mappings, *devcfg;
  const cJSON *thing, *cert; /* the resources' objects (Type, Properties, OverrideSettings) */
  const cJSON **policies;
  size_t npolicies;
};

void mw_prov_error_set(mw_prov_error_t *e, int status, const char *code, const char *fmt, ...) {
  e->status = status;
  snprintf(e->code, sizeof e->code, "%s", code);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
}

bool mw_prov_template_name_ok(const char *name, size_t len) {
  if (len == 0 || len > MW_PROV_TEMPLATE_NAME_MAX) return false;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-') return false;
  return true;
}

bool mw_prov_thing_name_ok(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 128) return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != ':' && *s != '_' && *s != '-') return false;
  return true;
}

/* ------------------------------------------------------------------ builtins */

static const char *const builtin_names[] = {
    "AWS::IoT::Certificate::Id",           "AWS::IoT::Certificate::CommonName",
    "AWS::IoT::Certificate::Country",      "AWS::IoT::Certificate::Organization",
    "AWS::IoT::Certificate::OrganizationalUnit", "AWS::IoT::Certificate::DistinguishedNameQualifier",
    "AWS::IoT::Certificate::StateName",    "AWS::IoT::Certificate::SerialNumber",
    NULL};

static bool is_builtin(const char *name) {
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
  return (t->params && cJSON_GetObjectItemCaseSensitive(t->params, name)) || is_builtin(name);
}

static const char *intrinsic_name(const cJSON *x) {
  if (!cJSON_IsObject(x) || !x->child || x->child->next) return NULL;
  const char *k = x->child->string;
  if (!strcmp(k, "Ref") || !strncmp(k, "Fn::", 4)) return k;
  return NULL;
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
  if (depth > MAX_DEPTH) return cerr(c, path, "expressions nest deeper than %d levels", MAX_DEPTH);
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
  const char *fn = intrinsic_name(x);
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

/*
** glibc's regcomp copies the sub-tree of every repetition (x+ is x x*, x{n} is n copies of x),
** so nested repetitions multiply: "((a+)+)+..." or "(a{99}){99}{99}" take exponential time and
** memory to compile (fuzz_prov_template: an AllowedPattern of 100 '+' used gigabytes). This
** bounds the product of the repetition factors, which bounds the compiled size whatever the
** nesting; real AllowedPatterns ("[0-9A-F]{12}") are far below it.
*/
#define PATTERN_MAX_LEN 512
#define PATTERN_MAX_COPIES 4096
#define PATTERN_MAX_REPEATS 32
static bool pattern_bounded(const char *pat) {
  if (strlen(pat) > PATTERN_MAX_LEN) return false;
  double copies = 1;
  bool bracket = false, after_repeat = false;
  int repeats = 0;
  for (const char *q = pat; *q; q++) {
    if (*q == '\\' && q[1]) {
      q++;
      continue;
    }
    if (bracket) {
      if (*q == ']') bracket = false;
      continue;
    }
    bool repeat = *q == '*' || *q == '+' || *q == '?' || *q == '{';
    /* "x**", "x{4}*": undefined in POSIX ERE, and each stacked operator makes glibc's
       closure computation much slower; never needed. */
    if (repeat && (after_repeat || ++repeats > PATTERN_MAX_REPEATS)) return false;
    after_repeat = repeat;
    if (*q == '[') {
      bracket = true;
      if (q[1] == '^') q++;
      if (q[1] == ']') q++; /* a leading ']' is a member */
    } else if (*q == '+') {
      copies *= 2;
    } else if (*q == '{') {
      char *end;
      long n = strtol(q + 1, &end, 10), m = n;
      if (*end == ',' && isdigit((unsigned char)end[1])) m = strtol(end + 1, &end, 10);
      if (n < 0 || m < 0 || n > PATTERN_MAX_COPIES || m > PATTERN_MAX_COPIES) return false;
      copies *= (double)(m > n ? m : n) + 1;
      const char *close = strchr(q, '}');
      if (close) q = close; /* the bound is one operator */
    }
    if (copies > PATTERN_MAX_COPIES) return false;
  }
  return true;
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
      if (!pattern_bounded(pat->valuestring))
        return cerr(c, path, "AllowedPattern is too long or repeats too much (at most %d characters and %d "
                             "repetitions, none directly after another; nested +, {n} must multiply to at most %d)",
                    PATTERN_MAX_LEN, PATTERN_MAX_REPEATS, PATTERN_MAX_COPIES);
      char *anchored = malloc(strlen(pat->valuestring) + 5);
      if (!anchored) return cerr(c, path, "out of memory");
      sprintf(anchored, "^(%s)$", pat->valuestring);
      regex_t re;
      int rc = regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB);
      free(anchored);
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
          if (cJSON_IsObject(d) && !intrinsic_name(d)) rc = cerr(&c, path, "nested objects are not allowed");
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

/* ------------------------------------------------------------------ evaluation */

typedef struct {
  const mw_prov_template_t *t;
  cJSON *values; /* resolved parameters: name -> string */
  mw_prov_error_t *e;
} ev_t;

/* Values are cJSON strings or arrays of strings, owned by the caller. */
static cJSON *eval(ev_t *v, const cJSON *x, int depth);

__attribute__((format(printf, 2, 3)))
static cJSON *bad(ev_t *v, const char *fmt, ...) {
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  mw_prov_error_set(v->e, 400, "InvalidParameters", "%s", msg);
  return NULL;
}

static cJSON *scalar_string(ev_t *v, const cJSON *x) {
  char num[64];
  if (cJSON_IsString(x)) return cJSON_CreateString(x->valuestring);
  if (cJSON_IsBool(x)) return cJSON_CreateString(cJSON_IsTrue(x) ? "true" : "false");
  if (cJSON_IsNumber(x)) {
    if (x->valuedouble == (double)(long long)x->valuedouble) snprintf(num, sizeof num, "%lld", (long long)x->valuedouble);
    else snprintf(num, sizeof num, "%.17g", x->valuedouble);
    return cJSON_CreateString(num);
  }
  (void)v;
  return NULL;
}

static const char *ref_value(ev_t *v, const char *name) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(v->values, name);
  return cJSON_IsString(s) ? s->valuestring : NULL;
}

static cJSON *eval_sub(ev_t *v, const char *s, const cJSON *vars, int depth) {
  size_t cap = 256, len = 0;
  char *out = malloc(cap);
  cJSON *res = NULL;
  if (!out) return NULL;
  for (const char *p = s; *p;) {
    const char *piece = p;
    size_t n = 1;
    char *tmp = NULL;
    if (p[0] == '$' && p[1] == '{' && p[2] == '!') {
      piece = "${";
      n = 2;
      p += 3;
    } else if (p[0] == '$' && p[1] == '{') {
      const char *end = strchr(p, '}');
      char name[160];
      size_t nl = end ? (size_t)(end - p - 2) : 0;
      if (!end || nl == 0 || nl >= sizeof name) goto done; /* checked at parse time */
      memcpy(name, p + 2, nl);
      name[nl] = 0;
      const cJSON *var = vars ? cJSON_GetObjectItemCaseSensitive(vars, name) : NULL;
      if (var) {
        cJSON *val = eval(v, var, depth + 1);
        if (!val) goto done;
        tmp = cJSON_IsString(val) ? strdup(val->valuestring) : NULL;
        cJSON_Delete(val);
        if (!tmp) goto done;
        piece = tmp;
      } else {
        piece = ref_value(v, name);
        if (!piece) {
          bad(v, "Parameter %s has no value", name);
          goto done;
        }
      }
      n = strlen(piece);
      p = end + 1;
    } else {
      p++;
    }
    if (len + n + 1 > MAX_VALUE) {
      free(tmp);
      bad(v, "Fn::Sub produced a value longer than %d characters", MAX_VALUE);
      goto done;
    }
    while (len + n + 1 > cap) {
      cap *= 2;
      char *nb = realloc(out, cap);
      if (!nb) {
        free(tmp);
        goto done;
      }
      out = nb;
    }
    memcpy(out + len, piece, n);
    len += n;
    free(tmp);
  }
  out[len] = 0;
  res = cJSON_CreateString(out);
done:
  free(out);
  return res;
}

static cJSON *eval_list(ev_t *v, const cJSON *x, int depth) {
  cJSON *l = eval(v, x, depth);
  if (l && !cJSON_IsArray(l)) {
    cJSON_Delete(l);
    return bad(v, "%s", "expected a list");
  }
  return l;
}

static char *eval_str(ev_t *v, const cJSON *x, int depth) {
  cJSON *s = eval(v, x, depth);
  char *out = NULL;
  if (s && cJSON_IsString(s)) out = strdup(s->valuestring);
  else if (s) bad(v, "%s", "expected a string, found a list");
  cJSON_Delete(s);
  return out;
}

static cJSON *eval(ev_t *v, const cJSON *x, int depth) {
  if (depth > MAX_DEPTH) return bad(v, "%s", "expressions nest too deeply");
  if (!intrinsic_name(x)) {
    if (!cJSON_IsArray(x)) return scalar_string(v, x);
    cJSON *arr = cJSON_CreateArray();
    for (const cJSON *e = x->child; arr && e; e = e->next) {
      char *s = eval_str(v, e, depth + 1);
      if (!s || !cJSON_AddItemToArray(arr, cJSON_CreateString(s))) {
        free(s);
        cJSON_Delete(arr);
        return NULL;
      }
      free(s);
    }
    return arr;
  }
  const char *fn = x->child->string;
  const cJSON *a = x->child;
  if (!strcmp(fn, "Ref")) {
    const char *val = ref_value(v, a->valuestring);
    if (!val) return bad(v, "Parameter %s has no value", a->valuestring);
    return cJSON_CreateString(val);
  }
  if (!strcmp(fn, "Fn::Sub")) {
    if (cJSON_IsString(a)) return eval_sub(v, a->valuestring, NULL, depth);
    return eval_sub(v, a->child->valuestring, a->child->next, depth);
  }
  if (!strcmp(fn, "Fn::Join")) {
    cJSON *l = eval_list(v, a->child->next, depth + 1);
    if (!l) return NULL;
    const char *sep = a->child->valuestring;
    size_t total = 1;
    for (cJSON *e = l->child; e; e = e->next) total += strlen(e->valuestring) + strlen(sep);
    if (total > MAX_VALUE) {
      cJSON_Delete(l);
      return bad(v, "Fn::Join produced a value longer than %d characters", MAX_VALUE);
    }
    char *buf = malloc(total);
    cJSON *res = NULL;
    if (buf) {
      buf[0] = 0;
      for (cJSON *e = l->child; e; e = e->next) {
        if (e != l->child) strcat(buf, sep);
        strcat(buf, e->valuestring);
      }
      res = cJSON_CreateString(buf);
      free(buf);
    }
    cJSON_Delete(l);
    return res;
  }
  if (!strcmp(fn, "Fn::Select")) {
    char *idx = eval_str(v, a->child, depth + 1);
    if (!idx) return NULL;
    char *end;
    long i = strtol(idx, &end, 10);
    int ok = *idx && !*end && i >= 0;
    free(idx);
    if (!ok) return bad(v, "%s", "Fn::Select needs a non-negative integer index");
    cJSON *l = eval_list(v, a->child->next, depth + 1);
    if (!l) return NULL;
    cJSON *item = i < cJSON_GetArraySize(l) ? cJSON_GetArrayItem(l, (int)i) : NULL;
    cJSON *res = item ? cJSON_CreateString(item->valuestring) : bad(v, "%s", "Fn::Select index is out of range");
    cJSON_Delete(l);
    return res;
  }
  if (!strcmp(fn, "Fn::Split")) {
    char *s = eval_str(v, a->child->next, depth + 1);
    if (!s) return NULL;
    const char *sep = a->child->valuestring;
    size_t sl = strlen(sep);
    cJSON *arr = cJSON_CreateArray();
    char *p = s;
    while (arr) {
      char *q = strstr(p, sep);
      if (q) *q = 0;
      if (!cJSON_AddItemToArray(arr, cJSON_CreateString(p))) {
        cJSON_Delete(arr);
        arr = NULL;
        break;
      }
      if (!q) break;
      p = q + sl;
    }
    free(s);
    return arr;
  }
  if (!strcmp(fn, "Fn::FindInMap")) {
    char *k[3] = {NULL, NULL, NULL};
    cJSON *res = NULL;
    const cJSON *e = a->child;
    for (int i = 0; i < 3; i++, e = e->next)
      if (!(k[i] = eval_str(v, e, depth + 1))) goto fim_done;
    const cJSON *m = v->t->mappings ? cJSON_GetObjectItemCaseSensitive(v->t->mappings, k[0]) : NULL;
    const cJSON *l1 = m ? cJSON_GetObjectItemCaseSensitive(m, k[1]) : NULL;
    const cJSON *l2 = l1 ? cJSON_GetObjectItemCaseSensitive(l1, k[2]) : NULL;
    if (cJSON_IsString(l2)) res = cJSON_CreateString(l2->valuestring);
    else bad(v, "Fn::FindInMap found no value for %s", k[1]);
  fim_done:
    for (int i = 0; i < 3; i++) free(k[i]);
    return res;
  }
  return bad(v, "%s is not supported", fn);
}

static void clip(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src);
}

/* Resolves every declared parameter (request value, builtin or Default) and runs its checks. */
static mw_status_t resolve_params(ev_t *v, const cJSON *req, const mw_prov_builtins_t *b) {
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
    if (is_builtin(name)) {
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
      char *anchored = malloc(strlen(pat->valuestring) + 5);
      regex_t re;
      if (!anchored) return MW_ERR_NOMEM;
      sprintf(anchored, "^(%s)$", pat->valuestring);
      int rc = regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB);
      free(anchored);
      if (rc != 0) return MW_ERR_NOMEM; /* compiled once at parse time already */
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

static mw_prov_override_t override_of(const cJSON *thing, const char *key) {
  const cJSON *ov = cJSON_GetObjectItemCaseSensitive(thing, "OverrideSettings");
  const cJSON *s = ov ? cJSON_GetObjectItemCaseSensitive(ov, key) : NULL;
  if (cJSON_IsString(s) && !strcmp(s->valuestring, "MERGE")) return MW_PROV_OVERRIDE_MERGE;
  if (cJSON_IsString(s) && !strcmp(s->valuestring, "REPLACE")) return MW_PROV_OVERRIDE_REPLACE;
  return MW_PROV_OVERRIDE_DO_NOTHING;
}

/* Evaluates the object of expressions obj into a new object of strings. */
static cJSON *eval_object(ev_t *v, const cJSON *obj) {
  cJSON *out = cJSON_CreateObject();
  for (const cJSON *a = obj ? obj->child : NULL; out && a; a = a->next) {
    char *s = eval_str(v, a, 0);
    if (!s || !cJSON_AddStringToObject(out, a->string, s)) {
      free(s);
      cJSON_Delete(out);
      return NULL;
    }
    free(s);
  }
  return out;
}

mw_status_t mw_prov_template_apply(const mw_prov_template_t *t, const cJSON *parameters,
                                   const mw_prov_builtins_t *builtins, mw_prov_outcome_t *out, mw_prov_error_t *e) {
  memset(out, 0, sizeof *out);
  memset(e, 0, sizeof *e);
  ev_t v = {t, cJSON_CreateObject(), e};
  mw_status_t st = MW_ERR_NOMEM;
  if (!v.values) goto fail;
  if ((st = resolve_params(&v, parameters, builtins)) != MW_OK) goto fail;
  st = MW_ERR_INVALID;
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(t->thing, "Properties");
  if (!(out->thing_name = eval_str(&v, cJSON_GetObjectItemCaseSensitive(props, "ThingName"), 0))) goto fail;
  if (!mw_prov_thing_name_ok(out->thing_name)) {
    char shown[64];
    snprintf(shown, sizeof shown, "%.40s", out->thing_name);
    mw_prov_error_set(e, 400, "InvalidParameters",
                      "Thing name '%s' is not valid (1..128 of a-z A-Z 0-9 : _ -)", shown);
    goto fail;
  }
  if (!(out->attributes = eval_object(&v, cJSON_GetObjectItemCaseSensitive(props, "AttributePayload")))) goto fail;
  const cJSON *x;
  if ((x = cJSON_GetObjectItemCaseSensitive(props, "ThingTypeName")) && !(out->thing_type = eval_str(&v, x, 0))) goto fail;
  if ((x = cJSON_GetObjectItemCaseSensitive(props, "BillingGroup")) && !(out->billing_group = eval_str(&v, x, 0))) goto fail;
  if ((x = cJSON_GetObjectItemCaseSensitive(props, "ThingGroups"))) {
    out->thing_groups = eval(&v, x, 0);
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
    if (!(out->policies[out->npolicies] = eval_str(&v, cJSON_GetObjectItemCaseSensitive(pp, "PolicyName"), 0))) goto fail;
    out->npolicies++;
  }
  if (t->cert) {
    const cJSON *cp = cJSON_GetObjectItemCaseSensitive(t->cert, "Properties");
    char *id = eval_str(&v, cJSON_GetObjectItemCaseSensitive(cp, "CertificateId"), 0);
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
      char *s = eval_str(&v, sx, 0);
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
  if (!(out->device_configuration = eval_object(&v, t->devcfg))) goto fail;
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
