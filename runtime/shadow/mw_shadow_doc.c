/*
** Shadow documents on the service side: lifecycle (init, free, copy, size) and the three
** operations (update, delete, get) that check, change a document and answer in AWS's shapes.
** Parsing, merging, delta and payload printing live in the other mw_shadow_*.c files
** (docs/shadow.md lists them); mw_shadow_doc.h is the API of them all.
*/
#include "mw_shadow_doc_int.h"

#include <string.h>

void mw_shadow_doc_init(mw_shadow_doc_t *doc) {
  memset(doc, 0, sizeof *doc);
}

void mw_shadow_doc_free(mw_shadow_doc_t *doc) {
  if (!doc) return;
  cJSON_Delete(doc->desired);
  cJSON_Delete(doc->reported);
  cJSON_Delete(doc->meta_desired);
  cJSON_Delete(doc->meta_reported);
  mw_shadow_doc_init(doc);
}

static bool dup_into(cJSON **dst, const cJSON *src) {
  *dst = NULL;
  return !src || (*dst = cJSON_Duplicate(src, 1)) != NULL;
}

mw_status_t mw_shadow_doc_copy(mw_shadow_doc_t *dst, const mw_shadow_doc_t *src) {
  mw_shadow_doc_init(dst);
  *dst = *src;
  dst->desired = dst->reported = dst->meta_desired = dst->meta_reported = NULL;
  if (!dup_into(&dst->desired, src->desired) || !dup_into(&dst->reported, src->reported) ||
      !dup_into(&dst->meta_desired, src->meta_desired) || !dup_into(&dst->meta_reported, src->meta_reported)) {
    mw_shadow_doc_free(dst);
    return MW_ERR_NOMEM;
  }
  return MW_OK;
}

size_t mw_shadow_doc_state_size(const mw_shadow_doc_t *doc) {
  return mw_shadow_json_len(doc->desired) + mw_shadow_json_len(doc->reported);
}

/* {"desired":copy?, "reported":copy?} of two (possibly NULL) sections. */
cJSON *mw_shadow_sections(const cJSON *desired, const cJSON *reported) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  if ((desired && !mw_shadow_add(o, "desired", cJSON_Duplicate(desired, 1))) ||
      (reported && !mw_shadow_add(o, "reported", cJSON_Duplicate(reported, 1)))) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

mw_status_t mw_shadow_doc_update(mw_shadow_doc_t *doc, const mw_shadow_request_t *req, int64_t now_s,
                                 const mw_shadow_options_t *opt, mw_shadow_result_t *res,
                                 mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = mw_shadow_opts_or_default(opt, &tmp);
  memset(res, 0, sizeof *res);
  memset(err, 0, sizeof *err);
  if (req->client_token) {
    mw_shadow_copy_utf8_prefix(err->client_token, MW_SHADOW_CLIENT_TOKEN_MAX, req->client_token);
    err->has_client_token = true;
  }

  /* Version the update is checked against and builds on. A deleted shadow keeps its number
  ** for recreate_window_s, after that it starts again. */
  int64_t base = doc->version;
  if (!doc->exists && (opt->recreate_window_s <= 0 || now_s - doc->deleted_at >= opt->recreate_window_s)) base = 0;
  if (req->has_version) {
    if (doc->exists || opt->create_version == MW_SHADOW_CREATE_VERSION_MATCH) {
      if (req->version != base) {
        mw_shadow_error_set(err, 409, "%s", MSG_CONFLICT);
        return MW_ERR_CONFLICT;
      }
    } else if (opt->create_version == MW_SHADOW_CREATE_VERSION_ONE && req->version != 1) {
      mw_shadow_error_set(err, 400, "%s", MSG_INVALID_VERSION);
      return MW_ERR_INVALID;
    }
  }

  mw_shadow_doc_t next;
  mw_shadow_doc_init(&next);
  if (doc->exists && mw_shadow_doc_copy(&next, doc) != MW_OK) goto nomem;
  if (req->state &&
      (!mw_shadow_merge_section(&next.desired, &next.meta_desired, req->desired, now_s) ||
       !mw_shadow_merge_section(&next.reported, &next.meta_reported, req->reported, now_s)))
    goto nomem_next;
  if (!req->state) mw_shadow_doc_free(&next); /* "state": null clears desired and reported */

  size_t size = mw_shadow_doc_state_size(&next);
  if (size > opt->max_state_bytes) {
    mw_shadow_doc_free(&next);
    mw_shadow_error_set(err, 413, "%s", MSG_TOO_LARGE);
    return MW_ERR_TOO_LARGE;
  }
  next.version = base + 1;
  next.timestamp = now_s;
  next.exists = true;
  next.deleted_at = 0;

  res->version = next.version;
  if (!(res->accepted = mw_shadow_build_accepted(req, next.version, now_s, opt))) goto nomem_next;
  bool want_delta = opt->delta_rule == MW_SHADOW_DELTA_ALWAYS || cJSON_IsObject(req->desired);
  if (want_delta) {
    cJSON *delta;
    if (!mw_shadow_delta_of(next.desired, next.reported, &delta)) goto nomem_next;
    if (delta &&
        !(res->delta = mw_shadow_build_delta(delta, next.meta_desired, next.version, now_s, req->client_token)))
      goto nomem_next;
  }
  if ((req->state || opt->documents_on_state_null) &&
      !(res->documents = mw_shadow_build_documents(doc, &next, now_s, req->client_token, opt)))
    goto nomem_next;

  mw_shadow_doc_free(doc);
  *doc = next;
  return MW_OK;

nomem_next:
  mw_shadow_doc_free(&next);
nomem:
  mw_shadow_result_free(res);
  mw_shadow_error_nomem(err);
  return MW_ERR_NOMEM;
}

mw_status_t mw_shadow_doc_delete(mw_shadow_doc_t *doc, const char *name, const char *client_token,
                                 int64_t now_s, const mw_shadow_options_t *opt, char **out_json,
                                 mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = mw_shadow_opts_or_default(opt, &tmp);
  *out_json = NULL;
  if (!doc->exists) {
    mw_shadow_error_not_found(err, name);
    return MW_ERR_NOT_FOUND;
  }
  int64_t version = doc->version + (opt->delete_version == MW_SHADOW_DELETE_VERSION_NEXT ? 1 : 0);
  cJSON *o = cJSON_CreateObject();
  bool ok = o && mw_shadow_add_num(o, "version", (double)version) &&
            mw_shadow_add_num(o, "timestamp", (double)now_s) && mw_shadow_add_token(o, client_token);
  if (ok) *out_json = mw_shadow_print_free(o); /* frees o */
  else cJSON_Delete(o);
  if (!*out_json) {
    mw_shadow_error_nomem(err);
    return MW_ERR_NOMEM;
  }
  mw_shadow_doc_free(doc);
  doc->version = version;
  doc->deleted_at = now_s;
  doc->timestamp = now_s;
  doc->exists = false;
  return MW_OK;
}

mw_status_t mw_shadow_doc_get(const mw_shadow_doc_t *doc, const char *name, const char *client_token,
                              int64_t now_s, const mw_shadow_options_t *opt, char **out_json,
                              mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = mw_shadow_opts_or_default(opt, &tmp);
  *out_json = NULL;
  if (!doc->exists) {
    mw_shadow_error_not_found(err, name);
    return MW_ERR_NOT_FOUND;
  }
  cJSON *delta = NULL, *o = cJSON_CreateObject();
  cJSON *state = mw_shadow_sections(doc->desired, doc->reported);
  cJSON *meta = mw_shadow_sections(doc->meta_desired, doc->meta_reported);
  bool ok = o && state && meta && mw_shadow_delta_of(doc->desired, doc->reported, &delta);
  if (ok && delta) {
    if (opt->get_metadata_delta)
      ok = mw_shadow_add(meta, "delta", mw_shadow_delta_metadata(delta, doc->meta_desired));
    ok = mw_shadow_add(state, "delta", delta) && ok;
  }
  if (ok) {
    ok = mw_shadow_add(o, "state", state);
    state = NULL;
    ok = ok && mw_shadow_add(o, "metadata", meta);
    meta = NULL;
    ok = ok && mw_shadow_add_num(o, "version", (double)doc->version) &&
         mw_shadow_add_num(o, "timestamp", (double)now_s) && mw_shadow_add_token(o, client_token);
  }
  cJSON_Delete(state);
  cJSON_Delete(meta);
  if (!ok || !(*out_json = mw_shadow_print_free(o))) {
    if (!ok) cJSON_Delete(o);
    mw_shadow_error_nomem(err);
    return MW_ERR_NOMEM;
  }
  return MW_OK;
}
