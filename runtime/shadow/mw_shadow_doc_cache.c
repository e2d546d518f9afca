/*
** Documents read back: the storage form (serialize / deserialize / take), and the device side,
** which seeds its cache from /get/accepted or /update/documents and applies /update/accepted.
*/
#include "mw_shadow_doc_int.h"

#include <string.h>

char *mw_shadow_doc_serialize(const mw_shadow_doc_t *doc) {
  cJSON *o = cJSON_CreateObject();
  if (o && mw_shadow_add(o, "state", mw_shadow_sections(doc->desired, doc->reported)) &&
      mw_shadow_add(o, "metadata", mw_shadow_sections(doc->meta_desired, doc->meta_reported)) &&
      mw_shadow_add_num(o, "version", (double)doc->version) &&
      mw_shadow_add_num(o, "timestamp", (double)doc->timestamp))
    return mw_shadow_print_free(o);
  cJSON_Delete(o);
  return NULL;
}

/* Takes obj[key] out of parent when it is a non-empty object. */
static cJSON *take_section(cJSON *parent, const char *key) {
  cJSON *v = cJSON_IsObject(parent) ? cJSON_GetObjectItemCaseSensitive(parent, key) : NULL;
  if (!cJSON_IsObject(v) || !v->child) return NULL;
  return cJSON_DetachItemViaPointer(parent, v);
}

/* A timestamp read from a document (epoch seconds); anything not a plausible one counts as 0
** (a cast of an out-of-range double to int64_t is undefined). */
static int64_t timestamp_value(const cJSON *ts) {
  if (!cJSON_IsNumber(ts)) return 0;
  double d = ts->valuedouble;
  return d >= 0 && d <= VERSION_MAX ? (int64_t)d : 0;
}

mw_status_t mw_shadow_doc_take(cJSON *root, mw_shadow_doc_t *doc) {
  mw_shadow_doc_init(doc);
  if (!cJSON_IsObject(root)) return MW_ERR_INVALID;
  int64_t version = 0;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
  const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "timestamp");
  cJSON *state = cJSON_GetObjectItemCaseSensitive(root, "state");
  cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
  if ((v && !mw_shadow_version_value(v, &version)) || (state && !cJSON_IsObject(state) && !cJSON_IsNull(state)))
    return MW_ERR_INVALID;
  doc->desired = take_section(state, "desired");
  doc->reported = take_section(state, "reported");
  doc->meta_desired = doc->desired ? take_section(meta, "desired") : NULL;
  doc->meta_reported = doc->reported ? take_section(meta, "reported") : NULL;
  doc->version = version;
  doc->timestamp = timestamp_value(ts);
  doc->exists = true;
  return MW_OK;
}

mw_status_t mw_shadow_doc_deserialize(const void *json, size_t len, mw_shadow_doc_t *doc) {
  mw_shadow_doc_init(doc);
  mw_status_t st;
  cJSON *root = mw_shadow_json_parse(json, len, &st);
  if (root) st = mw_shadow_doc_take(root, doc);
  cJSON_Delete(root);
  return st;
}

mw_status_t mw_shadow_doc_apply_accepted_tree(mw_shadow_doc_t *doc, const cJSON *root) {
  int64_t version = 0;
  const cJSON *v = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "version") : NULL;
  const cJSON *state = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "state") : NULL;
  const cJSON *ts = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "timestamp") : NULL;
  if (!v || !mw_shadow_version_value(v, &version) || !state || (!cJSON_IsObject(state) && !cJSON_IsNull(state)))
    return MW_ERR_INVALID;
  if (doc->exists && version <= doc->version) return MW_ERR_STATE;
  const cJSON *d = cJSON_IsObject(state) ? cJSON_GetObjectItemCaseSensitive(state, "desired") : NULL;
  const cJSON *r = cJSON_IsObject(state) ? cJSON_GetObjectItemCaseSensitive(state, "reported") : NULL;
  if ((d && !cJSON_IsObject(d) && !cJSON_IsNull(d)) || (r && !cJSON_IsObject(r) && !cJSON_IsNull(r)))
    return MW_ERR_INVALID;
  int64_t t = timestamp_value(ts);
  mw_shadow_doc_t next;
  mw_shadow_doc_init(&next);
  mw_status_t st = MW_OK;
  if (doc->exists && mw_shadow_doc_copy(&next, doc) != MW_OK) st = MW_ERR_NOMEM;
  else if (cJSON_IsNull(state)) mw_shadow_doc_free(&next);
  else if (!mw_shadow_merge_section(&next.desired, &next.meta_desired, d, t) ||
           !mw_shadow_merge_section(&next.reported, &next.meta_reported, r, t))
    st = MW_ERR_NOMEM;
  if (st != MW_OK) {
    mw_shadow_doc_free(&next);
    return st;
  }
  next.version = version;
  next.timestamp = t;
  next.exists = true;
  next.deleted_at = 0;
  mw_shadow_doc_free(doc);
  *doc = next;
  return MW_OK;
}

mw_status_t mw_shadow_doc_apply_accepted(mw_shadow_doc_t *doc, const void *payload, size_t len) {
  mw_status_t st;
  cJSON *root = mw_shadow_json_parse(payload, len, &st);
  if (root) st = mw_shadow_doc_apply_accepted_tree(doc, root);
  cJSON_Delete(root);
  return st;
}
