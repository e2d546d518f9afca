/*
** Shadow delta: deep equality, the delta of desired against reported, and the metadata of a delta.
*/
#include "mw_shadow_doc_int.h"

#include <string.h>

static const cJSON *member(const cJSON *obj, const char *key) {
  return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

bool mw_shadow_json_equal(const cJSON *a, const cJSON *b) {
  if (!a || !b) return a == b;
  int ta = a->type & 0xFF, tb = b->type & 0xFF;
  if (ta != tb) return false;
  switch (ta) {
    case cJSON_Number:
      return a->valuedouble == b->valuedouble;
    case cJSON_String:
      return a->valuestring && b->valuestring && strcmp(a->valuestring, b->valuestring) == 0;
    case cJSON_Array: {
      const cJSON *x = a->child, *y = b->child;
      for (; x && y; x = x->next, y = y->next)
        if (!mw_shadow_json_equal(x, y)) return false;
      return !x && !y;
    }
    case cJSON_Object: {
      size_t na = 0, nb = 0;
      for (const cJSON *x = a->child; x; x = x->next) na++;
      for (const cJSON *y = b->child; y; y = y->next) nb++;
      if (na != nb) return false;
      for (const cJSON *x = a->child; x; x = x->next)
        if (!mw_shadow_json_equal(x, cJSON_GetObjectItemCaseSensitive(b, x->string))) return false;
      return true;
    }
    default: /* true, false, null */
      return true;
  }
}

/* Delta into *out (NULL when empty). Returns false on OOM. */
bool mw_shadow_delta_of(const cJSON *desired, const cJSON *reported, cJSON **out) {
  *out = NULL;
  if (!cJSON_IsObject(desired) || !desired->child) return true;
  cJSON *o = cJSON_CreateObject();
  if (!o) return false;
  for (const cJSON *d = desired->child; d; d = d->next) {
    const cJSON *r = member(reported, d->string);
    cJSON *v = NULL;
    if (r && cJSON_IsObject(d) && cJSON_IsObject(r)) {
      if (!mw_shadow_delta_of(d, r, &v)) goto nomem;
      if (!v) continue;
    } else if (r && mw_shadow_json_equal(d, r)) {
      continue;
    } else if (!(v = cJSON_Duplicate(d, 1))) {
      goto nomem;
    }
    if (!mw_shadow_add(o, d->string, v)) goto nomem;
  }
  if (!o->child) {
    cJSON_Delete(o);
    return true;
  }
  *out = o;
  return true;
nomem:
  cJSON_Delete(o);
  return false;
}

cJSON *mw_shadow_delta(const cJSON *desired, const cJSON *reported) {
  cJSON *out;
  return mw_shadow_delta_of(desired, reported, &out) ? out : NULL;
}

cJSON *mw_shadow_delta_metadata(const cJSON *delta, const cJSON *meta_desired) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !cJSON_IsObject(delta)) return o;
  for (const cJSON *d = delta->child; d; d = d->next) {
    const cJSON *m = member(meta_desired, d->string);
    if (!m) continue; /* inconsistent cache; nothing to project */
    cJSON *v = cJSON_IsObject(d) && cJSON_IsObject(m) ? mw_shadow_delta_metadata(d, m) : cJSON_Duplicate(m, 1);
    if (!mw_shadow_add(o, d->string, v)) {
      cJSON_Delete(o);
      return NULL;
    }
  }
  return o;
}
