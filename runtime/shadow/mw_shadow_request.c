/*
** Shadow request validation: an /update payload checked in AWS's order with AWS's codes and
** texts, and the clientToken of /get and /delete payloads.
*/
#include "mw_shadow_doc_int.h"

#include <math.h>
#include <string.h>

/* GGSM's rule: desired/reported is level 1; a non-empty object or array deeper than max is refused. */
static bool depth_ok(const cJSON *node, int level, int max) {
  if (!(cJSON_IsObject(node) || cJSON_IsArray(node)) || !node->child) return true;
  if (level > max) return false;
  for (const cJSON *c = node->child; c; c = c->next)
    if (!depth_ok(c, level + 1, max)) return false;
  return true;
}

static bool null_in_array(const cJSON *node, bool in_array) {
  if (cJSON_IsNull(node)) return in_array;
  if (cJSON_IsArray(node)) in_array = true;
  if (cJSON_IsArray(node) || cJSON_IsObject(node))
    for (const cJSON *c = node->child; c; c = c->next)
      if (null_in_array(c, in_array)) return true;
  return false;
}

bool mw_shadow_version_value(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (!(d >= 0 && d <= VERSION_MAX) || floor(d) != d) return false;
  *out = (int64_t)d;
  return true;
}

static bool token_valid(const cJSON *t) {
  return cJSON_IsString(t) && t->valuestring && strlen(t->valuestring) <= MW_SHADOW_CLIENT_TOKEN_MAX;
}

mw_status_t mw_shadow_request_parse(const void *payload, size_t len, const mw_shadow_options_t *opt,
                                    mw_shadow_request_t *req, mw_shadow_error_t *err) {
  mw_shadow_options_t tmp;
  opt = mw_shadow_opts_or_default(opt, &tmp);
  memset(req, 0, sizeof *req);
  memset(err, 0, sizeof *err);
  if (!payload && len) {
    mw_shadow_error_set(err, 400, "%s", opt->invalid_json_message);
    return MW_ERR_INVALID;
  }
  if (len > opt->max_payload_bytes) {
    mw_shadow_error_set(err, 413, "%s", MSG_TOO_LARGE);
    return MW_ERR_INVALID;
  }
  int code;
  cJSON *root = mw_shadow_parse_strict(payload, len, opt->duplicate_keys, &code);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    if (code == 415) mw_shadow_error_set(err, 415, "%s", MSG_ENCODING);
    else if (code == 500) { mw_shadow_error_nomem(err); return MW_ERR_NOMEM; }
    else mw_shadow_error_set(err, 400, "%s", opt->invalid_json_message);
    return MW_ERR_INVALID;
  }

  const cJSON *token = cJSON_GetObjectItemCaseSensitive(root, "clientToken");
  if (token) {
    if (!token_valid(token)) {
      mw_shadow_error_set(err, 400, "%s", MSG_INVALID_TOKEN);
      goto refuse;
    }
    strcpy(err->client_token, token->valuestring);
    err->has_client_token = true;
    req->client_token = token->valuestring;
  }

  const cJSON *state = cJSON_GetObjectItemCaseSensitive(root, "state");
  if (!state) {
    mw_shadow_error_set(err, 400, "%s", MSG_MISSING_STATE);
    goto refuse;
  }
  if (!cJSON_IsNull(state) && !cJSON_IsObject(state)) {
    mw_shadow_error_set(err, 400, "%s", MSG_STATE_NOT_OBJECT);
    goto refuse;
  }
  if (cJSON_IsObject(state)) {
    req->state = state;
    for (const cJSON *c = state->child; c; c = c->next) {
      bool is_desired = strcmp(c->string, "desired") == 0;
      if (is_desired || strcmp(c->string, "reported") == 0) {
        if (!cJSON_IsObject(c) && !cJSON_IsNull(c)) {
          mw_shadow_error_set(err, 400, "%s", is_desired ? MSG_DESIRED_NOT_OBJECT : MSG_REPORTED_NOT_OBJECT);
          goto refuse;
        }
        if (is_desired) req->desired = c;
        else req->reported = c;
      } else {
        mw_shadow_error_with_name(err, 400, MSG_INVALID_NODE, c->string);
        goto refuse;
      }
    }
  }

  const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
  if (version) {
    if (!mw_shadow_version_value(version, &req->version)) {
      mw_shadow_error_set(err, 400, "%s", MSG_INVALID_VERSION);
      goto refuse;
    }
    req->has_version = true;
  }

  if (!depth_ok(req->desired, 1, opt->max_depth) || !depth_ok(req->reported, 1, opt->max_depth)) {
    mw_shadow_error_set(err, 400, MSG_DEPTH, opt->max_depth);
    goto refuse;
  }
  if ((req->desired && null_in_array(req->desired, false)) || (req->reported && null_in_array(req->reported, false))) {
    mw_shadow_error_set(err, 400, "%s", opt->array_null_message);
    goto refuse;
  }
  req->root = root;
  return MW_OK;

refuse:
  cJSON_Delete(root);
  memset(req, 0, sizeof *req);
  return MW_ERR_INVALID;
}

void mw_shadow_request_free(mw_shadow_request_t *req) {
  if (!req) return;
  cJSON_Delete(req->root);
  memset(req, 0, sizeof *req);
}

bool mw_shadow_client_token(const void *payload, size_t len, char out[MW_SHADOW_CLIENT_TOKEN_MAX + 1]) {
  out[0] = '\0';
  if (!payload || !len) return false;
  int code;
  cJSON *root = mw_shadow_parse_strict(payload, len, MW_SHADOW_DUPLICATE_LAST, &code);
  const cJSON *t = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "clientToken") : NULL;
  bool found = token_valid(t);
  if (found) strcpy(out, t->valuestring);
  cJSON_Delete(root);
  return found;
}
