#include "mw_prov_policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mw_prov_policies {
  cJSON *root;
  const cJSON *policies;
};

/* description key -> dynsec ACL type, in mkbroker's order. */
static const struct {
  const char *key, *acltype;
} acl_types[] = {
    {"publish", "publishClientSend"},
    {"receive", "publishClientReceive"},
    {"subscribe_literal", "subscribeLiteral"},
    {"subscribe_pattern", "subscribePattern"},
};
#define NTYPES (sizeof acl_types / sizeof acl_types[0])

__attribute__((format(printf, 3, 4)))
static int perr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* ${thing} and ${iot:Connection.Thing.ThingName} are the only variables (as in mkbroker). */
static int check_vars(const char *f, const char *where, char *err, size_t errlen) {
  for (const char *p = f; (p = strstr(p, "${")) != NULL;) {
    const char *end = strchr(p, '}');
    if (!end) return perr(err, errlen, "%s: unterminated ${ in '%s'", where, f);
    static const char v1[] = "thing", v2[] = "iot:Connection.Thing.ThingName";
    size_t n = (size_t)(end - p - 2);
    if (!((n == sizeof v1 - 1 && !strncmp(p + 2, v1, n)) || (n == sizeof v2 - 1 && !strncmp(p + 2, v2, n))))
      return perr(err, errlen, "%s: unknown variable in '%s' (known: ${thing}, ${iot:Connection.Thing.ThingName})",
                  where, f);
    p = end + 1;
  }
  return 0;
}

static int check_filter(const cJSON *f, const char *where, char *err, size_t errlen) {
  if (!cJSON_IsString(f) || !f->valuestring[0]) return perr(err, errlen, "%s: must be a non-empty string", where);
  const char *s = f->valuestring;
  if (strlen(s) > 512) return perr(err, errlen, "%s: longer than 256 bytes", where);
  if (check_vars(s, where, err, errlen) != 0) return -1;
  for (const char *lv = s; lv;) {
    const char *slash = strchr(lv, '/');
    size_t n = slash ? (size_t)(slash - lv) : strlen(lv);
    for (size_t i = 0; i < n; i++) {
      if (lv[i] == '#' && (n != 1 || slash))
        return perr(err, errlen, "%s: '#' must be the whole last level: '%s'", where, s);
      if (lv[i] == '+' && n != 1) return perr(err, errlen, "%s: '+' must be a whole level: '%s'", where, s);
    }
    lv = slash ? slash + 1 : NULL;
  }
  return 0;
}

static int check_list(const cJSON *l, const char *where, char *err, size_t errlen) {
  if (!cJSON_IsArray(l)) return perr(err, errlen, "%s: must be a list of topic filters", where);
  int i = 0;
  for (const cJSON *f = l->child; f; f = f->next, i++) {
    char w[256];
    snprintf(w, sizeof w, "%s[%d]", where, i);
    if (check_filter(f, w, err, errlen) != 0) return -1;
  }
  return 0;
}

static int check_policy(const cJSON *pol, char *err, size_t errlen) {
  char where[200];
  snprintf(where, sizeof where, "policies.%.120s", pol->string);
  if (!cJSON_IsObject(pol)) return perr(err, errlen, "%s: must be an object", where);
  for (const cJSON *k = pol->child; k; k = k->next) {
    char w[300];
    snprintf(w, sizeof w, "%s.%.40s", where, k->string);
    if (!strcmp(k->string, "description")) {
      if (!cJSON_IsString(k)) return perr(err, errlen, "%s: must be a string", w);
    } else if (!strcmp(k->string, "connect")) {
      if (!cJSON_IsArray(k)) return perr(err, errlen, "%s: must be a list of client ids", w);
    } else if (!strcmp(k->string, "deny")) {
      if (!cJSON_IsObject(k)) return perr(err, errlen, "%s: must be an object", w);
      for (const cJSON *d = k->child; d; d = d->next) {
        int known = 0;
        for (size_t i = 0; i < NTYPES; i++)
          if (!strcmp(d->string, acl_types[i].key)) known = 1;
        char w2[360];
        snprintf(w2, sizeof w2, "%s.%.40s", w, d->string);
        if (!known) return perr(err, errlen, "%s: unknown key", w2);
        if (check_list(d, w2, err, errlen) != 0) return -1;
      }
    } else {
      int known = 0;
      for (size_t i = 0; i < NTYPES; i++)
        if (!strcmp(k->string, acl_types[i].key)) known = 1;
      if (!known) return perr(err, errlen, "%s: unknown key", w);
      if (check_list(k, w, err, errlen) != 0) return -1;
    }
  }
  return 0;
}

mw_status_t mw_prov_policies_parse(const char *json, size_t len, mw_prov_policies_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (len > MW_PROV_POLICY_MAX) {
    perr(err, errlen, "the policy description is larger than %d bytes", MW_PROV_POLICY_MAX);
    return MW_ERR_TOO_LARGE;
  }
  mw_prov_policies_t *p = calloc(1, sizeof *p);
  if (!p) return MW_ERR_NOMEM;
  p->root = cJSON_ParseWithLength(json, len);
  int rc = -1;
  if (!p->root || !cJSON_IsObject(p->root)) {
    perr(err, errlen, "the policy description is not a JSON object");
  } else {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(p->root, "version");
    p->policies = cJSON_GetObjectItemCaseSensitive(p->root, "policies");
    if (v && !(cJSON_IsNumber(v) && v->valuedouble == 1)) {
      perr(err, errlen, "unsupported version (this build knows 1)");
    } else if (!cJSON_IsObject(p->policies) || !p->policies->child) {
      perr(err, errlen, "'policies' must be a non-empty object");
    } else {
      rc = 0;
      for (const cJSON *pol = p->policies->child; pol && rc == 0; pol = pol->next) rc = check_policy(pol, err, errlen);
    }
  }
  if (rc != 0) {
    mw_prov_policies_free(p);
    return MW_ERR_INVALID;
  }
  *out = p;
  return MW_OK;
}

mw_status_t mw_prov_policies_load(const char *path, mw_prov_policies_t **out, char *err, size_t errlen) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    perr(err, errlen, "cannot read the policy description %s", path);
    return MW_ERR_IO;
  }
  char *buf = malloc(MW_PROV_POLICY_MAX + 1);
  size_t n = buf ? fread(buf, 1, MW_PROV_POLICY_MAX + 1, f) : 0;
  fclose(f);
  if (!buf) return MW_ERR_NOMEM;
  char inner[400];
  mw_status_t st = mw_prov_policies_parse(buf, n, out, inner, sizeof inner);
  free(buf);
  if (st != MW_OK) perr(err, errlen, "%s: %s", path, inner);
  return st;
}

void mw_prov_policies_free(mw_prov_policies_t *p) {
  if (!p) return;
  cJSON_Delete(p->root);
  free(p);
}

bool mw_prov_policies_has(const mw_prov_policies_t *p, const char *policy) {
  return cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(p->policies, policy));
}

/* f with every ${...} variable replaced by thing; NULL on memory failure. */
static char *expand(const char *f, const char *thing) {
  size_t cap = strlen(f) + 1, tl = strlen(thing);
  for (const char *p = f; (p = strstr(p, "${")) != NULL; p += 2) cap += tl;
  char *out = malloc(cap), *o = out;
  if (!out) return NULL;
  for (const char *p = f; *p;) {
    if (p[0] == '$' && p[1] == '{') {
      const char *end = strchr(p, '}');
      memcpy(o, thing, tl);
      o += tl;
      p = end + 1; /* variables were checked at parse time */
    } else {
      *o++ = *p++;
    }
  }
  *o = 0;
  return out;
}

static bool seen(const cJSON *acls, const char *type, const char *topic, bool allow) {
  for (const cJSON *a = acls->child; a; a = a->next) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(a, "acltype"), *tp = cJSON_GetObjectItemCaseSensitive(a, "topic");
    if (!strcmp(t->valuestring, type) && !strcmp(tp->valuestring, topic) &&
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "allow")) == allow)
      return true;
  }
  return false;
}

static int add_acl(cJSON *acls, const char *type, const cJSON *filters, const char *thing, bool allow) {
  for (const cJSON *f = filters ? filters->child : NULL; f; f = f->next) {
    char *topic = expand(f->valuestring, thing);
    if (!topic) return -1;
    if (!seen(acls, type, topic, allow)) {
      cJSON *a = cJSON_CreateObject();
      if (!a || !cJSON_AddStringToObject(a, "acltype", type) || !cJSON_AddStringToObject(a, "topic", topic) ||
          !cJSON_AddNumberToObject(a, "priority", allow ? 0 : 100) || !cJSON_AddBoolToObject(a, "allow", allow) ||
          !cJSON_AddItemToArray(acls, a)) {
        cJSON_Delete(a);
        free(topic);
        return -1;
      }
    }
    free(topic);
  }
  return 0;
}

cJSON *mw_prov_policies_acls(const mw_prov_policies_t *p, char *const *policies, size_t n, const char *thing,
                             char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++)
    if (!mw_prov_policies_has(p, policies[i])) {
      perr(err, errlen, "Policy %s is not in the broker's policy description", policies[i]);
      return NULL;
    }
  cJSON *acls = cJSON_CreateArray();
  for (size_t i = 0; acls && i < n; i++) {
    const cJSON *pol = cJSON_GetObjectItemCaseSensitive(p->policies, policies[i]);
    const cJSON *deny = cJSON_GetObjectItemCaseSensitive(pol, "deny");
    for (size_t t = 0; t < NTYPES; t++) {
      const cJSON *d = deny ? cJSON_GetObjectItemCaseSensitive(deny, acl_types[t].key) : NULL;
      if (add_acl(acls, acl_types[t].acltype, d, thing, false) != 0 ||
          add_acl(acls, acl_types[t].acltype, cJSON_GetObjectItemCaseSensitive(pol, acl_types[t].key), thing, true) != 0) {
        cJSON_Delete(acls);
        acls = NULL;
        break;
      }
    }
  }
  if (!acls) perr(err, errlen, "out of memory");
  return acls;
}
