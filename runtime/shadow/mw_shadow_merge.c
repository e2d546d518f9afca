/*
** Shadow merge: a request section merged into a document section, with the per-leaf metadata
** ({"timestamp": s}) that every written value gets.
*/
#include "mw_shadow_doc_int.h"

#include <string.h>

cJSON *mw_shadow_metadata_for(const cJSON *value, int64_t ts) {
  cJSON *m;
  if (cJSON_IsObject(value) || cJSON_IsArray(value)) {
    bool obj = cJSON_IsObject(value);
    m = obj ? cJSON_CreateObject() : cJSON_CreateArray();
    if (!m) return NULL;
    for (const cJSON *c = value->child; c; c = c->next) {
      cJSON *cm = mw_shadow_metadata_for(c, ts);
      bool ok = cm && (obj ? cJSON_AddItemToObject(m, c->string, cm) : cJSON_AddItemToArray(m, cm));
      if (!ok) {
        cJSON_Delete(cm);
        cJSON_Delete(m);
        return NULL;
      }
    }
    return m;
  }
  m = cJSON_CreateObject();
  if (m && !mw_shadow_add_num(m, "timestamp", (double)ts)) {
    cJSON_Delete(m);
    return NULL;
  }
  return m;
}

/*
** obj[key], searching from *hint (wrapping around) and leaving *hint after the match: a request
** usually names its keys in the document's order, so merging n keys costs O(n), not O(n^2).
** *hint must be NULL or a member of obj.
*/
static cJSON *find_member(const cJSON *obj, const char *key, cJSON **hint) {
  cJSON *start = *hint ? *hint : obj->child;
  for (cJSON *c = start; c; c = c->next)
    if (c->string && strcmp(c->string, key) == 0) {
      *hint = c->next;
      return c;
    }
  for (cJSON *c = obj->child; c && c != start; c = c->next)
    if (c->string && strcmp(c->string, key) == 0) {
      *hint = c->next;
      return c;
    }
  return NULL;
}

/*
** obj[key] = v, where old is the current member (NULL: none): replaced in place (keeps member
** order; v takes over old's key string) or appended. Frees v on failure.
*/
static bool put_member(cJSON *obj, cJSON *old, const char *key, cJSON *v) {
  if (!v) return false;
  if (!old) return mw_shadow_add(obj, key, v);
  if (v->string && !(v->type & cJSON_StringIsConst)) cJSON_free(v->string);
  v->string = old->string;
  v->type = (v->type & ~cJSON_StringIsConst) | (old->type & cJSON_StringIsConst);
  old->string = NULL;
  old->type &= ~cJSON_StringIsConst;
  return cJSON_ReplaceItemViaPointer(obj, old, v); /* deletes old */
}

/*
** Merges the request object src into dst; meta mirrors dst. null deletes, objects merge
** recursively (an object replacing a non-object starts from {}), everything else (scalars,
** arrays) replaces the whole value. Every written leaf gets timestamp ts.
*/
static bool merge_object(cJSON *dst, cJSON *meta, const cJSON *src, int64_t ts) {
  cJSON *dh = NULL, *mh = NULL;
  for (const cJSON *s = src->child; s; s = s->next) {
    const char *k = s->string;
    cJSON *d = find_member(dst, k, &dh), *m = find_member(meta, k, &mh);
    if (cJSON_IsNull(s)) {
      if (d) cJSON_Delete(cJSON_DetachItemViaPointer(dst, d));
      if (m) cJSON_Delete(cJSON_DetachItemViaPointer(meta, m));
      continue;
    }
    if (cJSON_IsObject(s)) {
      bool fresh = !cJSON_IsObject(d);
      if (fresh) {
        cJSON *n = cJSON_CreateObject();
        if (!put_member(dst, d, k, n)) return false;
        d = n;
      }
      if (fresh || !cJSON_IsObject(m)) {
        cJSON *n = cJSON_CreateObject();
        if (!put_member(meta, m, k, n)) return false;
        m = n;
      }
      if (!merge_object(d, m, s, ts)) return false;
    } else if (!put_member(dst, d, k, cJSON_Duplicate(s, 1)) ||
               !put_member(meta, m, k, mw_shadow_metadata_for(s, ts))) {
      return false;
    }
  }
  return true;
}

/* Applies one request section (NULL: absent, null: drop, object: merge) to a document section. */
bool mw_shadow_merge_section(cJSON **sec, cJSON **meta, const cJSON *src, int64_t ts) {
  if (!src) return true;
  if (!cJSON_IsNull(src)) {
    if (!*sec && !(*sec = cJSON_CreateObject())) return false;
    if (!cJSON_IsObject(*meta)) {
      cJSON_Delete(*meta);
      if (!(*meta = cJSON_CreateObject())) return false;
    }
    if (!merge_object(*sec, *meta, src, ts)) return false;
    if ((*sec)->child) return true;
  }
  /* "desired": null, or the section became empty: top-level empty sections are not stored */
  cJSON_Delete(*sec);
  cJSON_Delete(*meta);
  *sec = *meta = NULL;
  return true;
}
