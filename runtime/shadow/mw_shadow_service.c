#include "mw_shadow_service.h"

#include <stdlib.h>
#include <string.h>

#include "mw_log.h"

struct mw_shadow_service {
  mw_shadow_store_t *store;
  mw_shadow_options_t opt;
};

mw_status_t mw_shadow_service_open(const char *db_path, const mw_shadow_options_t *opt, bool sync_full,
                                   mw_shadow_service_t **out) {
  *out = NULL;
  mw_shadow_service_t *svc = calloc(1, sizeof *svc);
  if (!svc) return MW_ERR_NOMEM;
  if (opt) svc->opt = *opt;
  else mw_shadow_options_init(&svc->opt);
  mw_status_t st = mw_shadow_store_open(db_path, sync_full, &svc->store);
  if (st != MW_OK) {
    free(svc);
    return st;
  }
  *out = svc;
  return MW_OK;
}

void mw_shadow_service_close(mw_shadow_service_t *svc) {
  if (!svc) return;
  mw_shadow_store_close(svc->store);
  free(svc);
}

mw_shadow_store_t *mw_shadow_service_store(mw_shadow_service_t *svc) {
  return svc->store;
}

const mw_shadow_options_t *mw_shadow_service_options(const mw_shadow_service_t *svc) {
  return &svc->opt;
}

mw_status_t mw_shadow_service_prune(mw_shadow_service_t *svc, int64_t now_ms) {
  if (svc->opt.recreate_window_s <= 0) return mw_shadow_store_prune(svc->store, INT64_MAX, NULL);
  return mw_shadow_store_prune(svc->store, now_ms / 1000 - svc->opt.recreate_window_s, NULL);
}

/* What one request is about, with NUL-terminated names. */
typedef struct {
  mw_shadow_topic_t t;
  char thing[MW_SHADOW_THING_NAME_MAX + 1];
  char shadow[MW_SHADOW_SHADOW_NAME_MAX + 1];
  mw_shadow_emit_fn emit;
  void *ud;
} request_t;

static void emit_json(const request_t *r, mw_shadow_suffix_t suffix, const char *json) {
  char topic[MW_SHADOW_TOPIC_MAX];
  size_t tl;
  if (!json) return;
  if (mw_shadow_topic_build(topic, sizeof topic, r->t.thing, r->t.thing_len, r->t.shadow, r->t.shadow_len,
                            r->t.op, suffix, &tl) != MW_OK)
    return; /* cannot happen: the names were validated by the parse */
  r->emit(r->ud, topic, json, strlen(json));
}

static void emit_error(const request_t *r, const mw_shadow_error_t *err, int64_t now_s) {
  char *json = mw_shadow_error_json(err, now_s);
  if (json) emit_json(r, MW_SHADOW_SUFFIX_REJECTED, json);
  else MW_LOGE("shadow", "out of memory answering %s/%s", r->thing, r->shadow);
  free(json);
}

/* A 500 for a storage failure, echoing the client token if known. */
static void emit_internal(const request_t *r, const char *token, int64_t now_s) {
  mw_shadow_error_t err;
  memset(&err, 0, sizeof err);
  mw_shadow_error_set(&err, 500, "Internal service failure");
  if (token) {
    strncpy(err.client_token, token, MW_SHADOW_CLIENT_TOKEN_MAX);
    err.has_client_token = true;
  }
  emit_error(r, &err, now_s);
}

/* The name a 404 quotes: the shadow name, or the thing name for the classic shadow. */
static const char *not_found_name(const request_t *r) {
  return r->t.shadow_len ? r->shadow : r->thing;
}

static mw_status_t handle_get(mw_shadow_service_t *svc, const request_t *r, const void *payload, size_t len,
                              int64_t now_s) {
  char token[MW_SHADOW_CLIENT_TOKEN_MAX + 1];
  bool has_token = mw_shadow_client_token(payload, len, token);
  mw_shadow_doc_t doc;
  mw_shadow_error_t err;
  memset(&err, 0, sizeof err);
  if (has_token) {
    strcpy(err.client_token, token);
    err.has_client_token = true;
  }
  mw_status_t st = mw_shadow_store_load(svc->store, r->thing, r->shadow, &doc);
  if (st != MW_OK && st != MW_ERR_NOT_FOUND) {
    emit_internal(r, has_token ? token : NULL, now_s);
    return st;
  }
  char *json = NULL;
  st = mw_shadow_doc_get(&doc, not_found_name(r), has_token ? token : NULL, now_s, &svc->opt, &json, &err);
  if (st == MW_OK) emit_json(r, MW_SHADOW_SUFFIX_ACCEPTED, json);
  else emit_error(r, &err, now_s);
  free(json);
  mw_shadow_doc_free(&doc);
  return st == MW_ERR_NOMEM ? st : MW_OK;
}

static mw_status_t handle_update(mw_shadow_service_t *svc, const request_t *r, const void *payload, size_t len,
                                 int64_t now_s) {
  mw_shadow_request_t req;
  mw_shadow_error_t err;
  mw_status_t st = mw_shadow_request_parse(payload, len, &svc->opt, &req, &err);
  if (st != MW_OK) {
    emit_error(r, &err, now_s);
    return st == MW_ERR_NOMEM ? st : MW_OK;
  }
  mw_shadow_doc_t doc;
  mw_shadow_result_t res;
  memset(&res, 0, sizeof res);
  mw_shadow_doc_init(&doc);
  if ((st = mw_shadow_store_begin(svc->store)) != MW_OK) goto internal;
  st = mw_shadow_store_load(svc->store, r->thing, r->shadow, &doc);
  if (st != MW_OK && st != MW_ERR_NOT_FOUND) goto internal;
  st = mw_shadow_doc_update(&doc, &req, now_s, &svc->opt, &res, &err);
  if (st != MW_OK) {
    mw_shadow_store_rollback(svc->store);
    emit_error(r, &err, now_s);
    st = st == MW_ERR_NOMEM ? st : MW_OK;
    goto done;
  }
  if ((st = mw_shadow_store_save(svc->store, r->thing, r->shadow, &doc)) != MW_OK ||
      (st = mw_shadow_store_commit(svc->store)) != MW_OK)
    goto internal;
  emit_json(r, MW_SHADOW_SUFFIX_ACCEPTED, res.accepted);
  emit_json(r, MW_SHADOW_SUFFIX_DELTA, res.delta);
  emit_json(r, MW_SHADOW_SUFFIX_DOCUMENTS, res.documents);
  st = MW_OK;
  goto done;

internal:
  mw_shadow_store_rollback(svc->store);
  emit_internal(r, req.client_token, now_s);
  if (st == MW_ERR_NOT_FOUND) st = MW_ERR_IO;
done:
  mw_shadow_result_free(&res);
  mw_shadow_doc_free(&doc);
  mw_shadow_request_free(&req);
  return st;
}

static mw_status_t handle_delete(mw_shadow_service_t *svc, const request_t *r, const void *payload, size_t len,
                                 int64_t now_s) {
  char token[MW_SHADOW_CLIENT_TOKEN_MAX + 1];
  bool has_token = mw_shadow_client_token(payload, len, token);
  const char *tok = has_token ? token : NULL;
  mw_shadow_error_t err;
  memset(&err, 0, sizeof err);
  if (has_token) {
    strcpy(err.client_token, token);
    err.has_client_token = true;
  }
  mw_shadow_doc_t doc;
  char *json = NULL;
  mw_shadow_doc_init(&doc);
  mw_status_t st = mw_shadow_store_begin(svc->store);
  if (st == MW_OK) {
    st = mw_shadow_store_load(svc->store, r->thing, r->shadow, &doc);
    if (st == MW_ERR_NOT_FOUND) st = MW_OK;
  }
  if (st != MW_OK) goto internal;
  st = mw_shadow_doc_delete(&doc, not_found_name(r), tok, now_s, &svc->opt, &json, &err);
  if (st != MW_OK) {
    mw_shadow_store_rollback(svc->store);
    emit_error(r, &err, now_s);
    st = st == MW_ERR_NOMEM ? st : MW_OK;
    goto done;
  }
  if ((st = mw_shadow_store_save(svc->store, r->thing, r->shadow, &doc)) != MW_OK ||
      (st = mw_shadow_store_commit(svc->store)) != MW_OK)
    goto internal;
  emit_json(r, MW_SHADOW_SUFFIX_ACCEPTED, json);
  goto done;

internal:
  mw_shadow_store_rollback(svc->store);
  emit_internal(r, tok, now_s);
done:
  free(json);
  mw_shadow_doc_free(&doc);
  return st;
}

mw_status_t mw_shadow_service_handle(mw_shadow_service_t *svc, const char *topic, size_t topic_len,
                                     const void *payload, size_t len, int64_t now_ms,
                                     mw_shadow_emit_fn emit, void *ud) {
  request_t r;
  if (!svc || !emit || mw_shadow_topic_parse(topic, topic_len, &r.t) != MW_OK ||
      r.t.suffix != MW_SHADOW_SUFFIX_NONE)
    return MW_ERR_INVALID;
  memcpy(r.thing, r.t.thing, r.t.thing_len);
  r.thing[r.t.thing_len] = '\0';
  memcpy(r.shadow, r.t.shadow ? r.t.shadow : "", r.t.shadow_len);
  r.shadow[r.t.shadow_len] = '\0';
  r.emit = emit;
  r.ud = ud;
  int64_t now_s = now_ms >= 0 ? now_ms / 1000 : -((-now_ms + 999) / 1000);
  switch (r.t.op) {
    case MW_SHADOW_OP_GET: return handle_get(svc, &r, payload, len, now_s);
    case MW_SHADOW_OP_UPDATE: return handle_update(svc, &r, payload, len, now_s);
    case MW_SHADOW_OP_DELETE: return handle_delete(svc, &r, payload, len, now_s);
  }
  return MW_ERR_INVALID;
}
