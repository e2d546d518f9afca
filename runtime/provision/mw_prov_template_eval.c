/*
** Evaluating a template's expressions: values, lists and the intrinsic functions Ref,
** Fn::Join, Fn::Sub, Fn::Select, Fn::Split and Fn::FindInMap, over the resolved parameters.
** Their forms were checked at parse time; what can fail here is a request's values.
*/
#include "mw_prov_template_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest string an expression may produce (thing names are far shorter). */
#define MAX_VALUE 4096

const char *mw_prov_tpl_intrinsic_name(const cJSON *x) {
  if (!cJSON_IsObject(x) || !x->child || x->child->next) return NULL;
  const char *k = x->child->string;
  if (!strcmp(k, "Ref") || !strncmp(k, "Fn::", 4)) return k;
  return NULL;
}

__attribute__((format(printf, 2, 3)))
static cJSON *bad(mw_prov_tpl_ev_t *v, const char *fmt, ...) {
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  mw_prov_error_set(v->e, 400, "InvalidParameters", "%s", msg);
  return NULL;
}

static cJSON *scalar_string(mw_prov_tpl_ev_t *v, const cJSON *x) {
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

static const char *ref_value(mw_prov_tpl_ev_t *v, const char *name) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(v->values, name);
  return cJSON_IsString(s) ? s->valuestring : NULL;
}

static cJSON *eval_sub(mw_prov_tpl_ev_t *v, const char *s, const cJSON *vars, int depth) {
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
        cJSON *val = mw_prov_tpl_eval(v, var, depth + 1);
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

static cJSON *eval_list(mw_prov_tpl_ev_t *v, const cJSON *x, int depth) {
  cJSON *l = mw_prov_tpl_eval(v, x, depth);
  if (l && !cJSON_IsArray(l)) {
    cJSON_Delete(l);
    return bad(v, "%s", "expected a list");
  }
  return l;
}

char *mw_prov_tpl_eval_str(mw_prov_tpl_ev_t *v, const cJSON *x, int depth) {
  cJSON *s = mw_prov_tpl_eval(v, x, depth);
  char *out = NULL;
  if (s && cJSON_IsString(s)) out = strdup(s->valuestring);
  else if (s) bad(v, "%s", "expected a string, found a list");
  cJSON_Delete(s);
  return out;
}

cJSON *mw_prov_tpl_eval(mw_prov_tpl_ev_t *v, const cJSON *x, int depth) {
  if (depth > MW_PROV_TPL_DEPTH_MAX) return bad(v, "%s", "expressions nest too deeply");
  if (!mw_prov_tpl_intrinsic_name(x)) {
    if (!cJSON_IsArray(x)) return scalar_string(v, x);
    cJSON *arr = cJSON_CreateArray();
    for (const cJSON *e = x->child; arr && e; e = e->next) {
      char *s = mw_prov_tpl_eval_str(v, e, depth + 1);
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
    char *idx = mw_prov_tpl_eval_str(v, a->child, depth + 1);
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
    char *s = mw_prov_tpl_eval_str(v, a->child->next, depth + 1);
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
      if (!(k[i] = mw_prov_tpl_eval_str(v, e, depth + 1))) goto fim_done;
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

/* Evaluates the object of expressions obj into a new object of strings. */
cJSON *mw_prov_tpl_eval_object(mw_prov_tpl_ev_t *v, const cJSON *obj) {
  cJSON *out = cJSON_CreateObject();
  for (const cJSON *a = obj ? obj->child : NULL; out && a; a = a->next) {
    char *s = mw_prov_tpl_eval_str(v, a, 0);
    if (!s || !cJSON_AddStringToObject(out, a->string, s)) {
      free(s);
      cJSON_Delete(out);
      return NULL;
    }
    free(s);
  }
  return out;
}
