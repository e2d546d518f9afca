/*
** The payloads of an accepted update: /update/accepted, /update/delta and /update/documents
** (the last printed directly, without copying the two documents), which mw_shadow_result_t
** holds and mw_shadow_result_free releases.
*/
#include "mw_shadow_doc_int.h"

#include <stdlib.h>
#include <string.h>

/* Removes null members from objects, recursively (arrays never hold null here). */
static void strip_nulls(cJSON *node) {
  if (!cJSON_IsObject(node)) return;
  cJSON *c = node->child;
  while (c) {
    cJSON *next = c->next;
    if (cJSON_IsNull(c)) cJSON_Delete(cJSON_DetachItemViaPointer(node, c));
    else strip_nulls(c);
    c = next;
  }
}

char *mw_shadow_build_accepted(const mw_shadow_request_t *req, int64_t version, int64_t ts,
                               const mw_shadow_options_t *opt) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  bool ok;
  if (!req->state) {
    /* {"state": null, "metadata": {"timestamp": T}, ...} as observed (moto test_update_empty_state) */
    ok = mw_shadow_add(o, "state", cJSON_CreateNull()) &&
         mw_shadow_add(o, "metadata", mw_shadow_metadata_for(NULL, ts));
  } else {
    cJSON *echo = cJSON_Duplicate(req->state, 1);
    if (echo && !opt->accepted_echo_nulls) strip_nulls(echo);
    ok = echo && mw_shadow_add(o, "state", echo) &&
         mw_shadow_add(o, "metadata", mw_shadow_metadata_for(echo, ts));
  }
  ok = ok && mw_shadow_add_num(o, "version", (double)version) && mw_shadow_add_num(o, "timestamp", (double)ts) &&
       mw_shadow_add_token(o, req->client_token);
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return mw_shadow_print_free(o);
}

/* Consumes delta. */
char *mw_shadow_build_delta(cJSON *delta, const cJSON *meta_desired, int64_t version, int64_t ts,
                            const char *token) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !mw_shadow_add_num(o, "version", (double)version) || !mw_shadow_add_num(o, "timestamp", (double)ts)) {
    cJSON_Delete(o);
    cJSON_Delete(delta);
    return NULL;
  }
  /* mw_shadow_add() frees delta when it fails; afterwards o owns it */
  if (!mw_shadow_add(o, "state", delta) ||
      !mw_shadow_add(o, "metadata", mw_shadow_delta_metadata(delta, meta_desired)) || !mw_shadow_add_token(o, token)) {
    cJSON_Delete(o);
    return NULL;
  }
  return mw_shadow_print_free(o);
}

/* {"desired":..,"reported":..} of two (possibly NULL) sections, printed in place. */
static void sb_sections(mw_shadow_sbuf_t *b, const cJSON *desired, const cJSON *reported) {
  mw_shadow_sb_put(b, "{", 1);
  if (desired) {
    mw_shadow_sb_put(b, "\"desired\":", 10);
    mw_shadow_sb_value(b, desired);
  }
  if (reported) {
    mw_shadow_sb_put(b, desired ? ",\"reported\":" : "\"reported\":", desired ? 12 : 11);
    mw_shadow_sb_value(b, reported);
  }
  mw_shadow_sb_put(b, "}", 1);
}

/* {"state":{..},"metadata":{..},"version":v} as in /update/documents, printed in place. */
static void sb_snapshot(mw_shadow_sbuf_t *b, const mw_shadow_doc_t *d) {
  mw_shadow_sb_put(b, "{\"state\":", 9);
  sb_sections(b, d->desired, d->reported);
  mw_shadow_sb_put(b, ",\"metadata\":", 12);
  sb_sections(b, d->meta_desired, d->meta_reported);
  mw_shadow_sb_put(b, ",\"version\":", 11);
  mw_shadow_sb_number(b, (double)d->version);
  mw_shadow_sb_put(b, "}", 1);
}

/* Printed directly (no copies of the two documents): this is the biggest message. */
char *mw_shadow_build_documents(const mw_shadow_doc_t *prev, const mw_shadow_doc_t *cur, int64_t ts,
                                const char *token, const mw_shadow_options_t *opt) {
  mw_shadow_sbuf_t b = {malloc(1024), 0, 1024, false};
  if (!b.buf) return NULL;
  mw_shadow_sb_put(&b, "{", 1);
  if (prev->exists) {
    mw_shadow_sb_put(&b, "\"previous\":", 11);
    sb_snapshot(&b, prev);
    mw_shadow_sb_put(&b, ",", 1);
  } else if (opt->documents_previous == MW_SHADOW_PREVIOUS_NULL) {
    mw_shadow_sb_put(&b, "\"previous\":null,", 16);
  } else if (opt->documents_previous == MW_SHADOW_PREVIOUS_EMPTY) {
    mw_shadow_doc_t empty;
    mw_shadow_doc_init(&empty);
    empty.version = cur->version - 1;
    mw_shadow_sb_put(&b, "\"previous\":", 11);
    sb_snapshot(&b, &empty);
    mw_shadow_sb_put(&b, ",", 1);
  }
  mw_shadow_sb_put(&b, "\"current\":", 10);
  sb_snapshot(&b, cur);
  mw_shadow_sb_put(&b, ",\"timestamp\":", 13);
  mw_shadow_sb_number(&b, (double)ts);
  if (token) {
    mw_shadow_sb_put(&b, ",\"clientToken\":", 15);
    mw_shadow_sb_string(&b, token);
  }
  mw_shadow_sb_put(&b, "}", 1);
  if (b.oom) {
    free(b.buf);
    return NULL;
  }
  b.buf[b.len] = '\0';
  return b.buf;
}

void mw_shadow_result_free(mw_shadow_result_t *res) {
  if (!res) return;
  free(res->accepted);
  free(res->delta);
  free(res->documents);
  memset(res, 0, sizeof *res);
}
