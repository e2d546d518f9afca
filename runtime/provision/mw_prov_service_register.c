/*
** RegisterThing and the JITP registration: checking the ownership token or certificate,
** applying the template, keeping the registration pending while the broker's policy is
** updated (mw_prov_service_admin.c), and committing the thing to the store.
*/
#include "mw_prov_service_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"

#define MAX_PENDING 256

void mw_prov_pending_free(mw_prov_pending_t *p) {
  mw_prov_outcome_free(&p->out);
  cJSON_Delete(p->acls);
  free(p->cert_pem);
  free(p);
}

void mw_prov_pending_unlink(mw_prov_service_t *svc, mw_prov_pending_t *p) {
  for (mw_prov_pending_t **pp = &svc->pending; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      svc->npending--;
      return;
    }
}

static bool token_in_flight(const mw_prov_service_t *svc, const char *hash, const char *cert_id) {
  for (const mw_prov_pending_t *p = svc->pending; p; p = p->next)
    if ((hash[0] && !strcmp(p->token_hash, hash)) || !strcmp(p->cert_id, cert_id)) return true;
  return false;
}

static void merge_object(cJSON *into, const cJSON *from) {
  for (const cJSON *a = from ? from->child : NULL; a; a = a->next) {
    cJSON *dup = cJSON_Duplicate(a, 1);
    if (!dup) continue;
    if (cJSON_GetObjectItemCaseSensitive(into, a->string)) cJSON_ReplaceItemInObjectCaseSensitive(into, a->string, dup);
    else cJSON_AddItemToObject(into, a->string, dup);
  }
}

static void merge_array(cJSON *into, const cJSON *from) {
  for (const cJSON *a = from ? from->child : NULL; a; a = a->next) {
    int have = 0;
    for (const cJSON *b = into->child; b; b = b->next)
      if (cJSON_IsString(a) && cJSON_IsString(b) && !strcmp(a->valuestring, b->valuestring)) have = 1;
    if (!have) cJSON_AddItemToArray(into, cJSON_Duplicate(a, 1));
  }
}

/* Writes the registration to the store in one transaction and answers accepted. */
void mw_prov_svc_commit_registration(mw_prov_service_t *svc, mw_prov_pending_t *p, int64_t now_s, mw_prov_emit_fn emit,
                                     void *ud) {
  mw_prov_thing_row_t row, old;
  memset(&row, 0, sizeof row);
  mw_status_t st = mw_prov_store_begin(svc->store);
  bool have_old = false;
  if (st == MW_OK) {
    mw_status_t g = mw_prov_store_get_thing(svc->store, p->out.thing_name, &old);
    if (g == MW_OK) have_old = true;
    else if (g != MW_ERR_NOT_FOUND) st = g;
  }
  if (st == MW_OK) {
    snprintf(row.name, sizeof row.name, "%s", p->out.thing_name);
    snprintf(row.template_name, sizeof row.template_name, "%s", p->template_name);
    /* An existing thing keeps what OverrideSettings says it keeps (default DO_NOTHING). */
    if (have_old && p->out.override_attributes == MW_PROV_OVERRIDE_DO_NOTHING) {
      row.attributes = cJSON_Duplicate(old.attributes, 1);
    } else if (have_old && p->out.override_attributes == MW_PROV_OVERRIDE_MERGE) {
      row.attributes = cJSON_Duplicate(old.attributes, 1);
      if (row.attributes) merge_object(row.attributes, p->out.attributes);
    } else {
      row.attributes = cJSON_Duplicate(p->out.attributes, 1);
    }
    cJSON *newgroups = p->out.thing_groups ? p->out.thing_groups : NULL;
    if (have_old && p->out.override_groups == MW_PROV_OVERRIDE_DO_NOTHING) {
      row.groups = cJSON_Duplicate(old.groups, 1);
    } else if (have_old && p->out.override_groups == MW_PROV_OVERRIDE_MERGE) {
      row.groups = cJSON_Duplicate(old.groups, 1);
      if (row.groups) merge_array(row.groups, newgroups);
    } else {
      row.groups = newgroups ? cJSON_Duplicate(newgroups, 1) : cJSON_CreateArray();
    }
    snprintf(row.thing_type, sizeof row.thing_type, "%s",
             p->out.thing_type ? p->out.thing_type : have_old ? old.thing_type : "");
    snprintf(row.billing_group, sizeof row.billing_group, "%s",
             p->out.billing_group ? p->out.billing_group : have_old ? old.billing_group : "");
    row.policies = cJSON_CreateArray();
    for (size_t i = 0; row.policies && i < p->out.npolicies; i++)
      cJSON_AddItemToArray(row.policies, cJSON_CreateString(p->out.policies[i]));
    if (!row.attributes || !row.groups || !row.policies) st = MW_ERR_NOMEM;
  }
  if (st == MW_OK) st = mw_prov_store_put_thing(svc->store, &row, now_s);
  if (st == MW_OK && p->cert_pem) {
    mw_prov_cert_row_t existing;
    mw_status_t g = mw_prov_store_get_cert(svc->store, p->cert_id, &existing);
    if (g == MW_ERR_NOT_FOUND) st = mw_prov_store_add_cert(svc->store, p->cert_id, p->cn, p->cert_pem, "jitp", now_s);
    else if (g != MW_OK) st = g;
  }
  if (st == MW_OK)
    st = mw_prov_store_set_cert(svc->store, p->cert_id, p->out.certificate_active ? MW_PROV_ACTIVE : MW_PROV_INACTIVE,
                                p->out.thing_name, now_s);
  if (st == MW_OK && p->token_hash[0]) st = mw_prov_store_use_token(svc->store, p->token_hash, now_s);
  if (st == MW_OK) st = mw_prov_store_commit(svc->store);
  if (have_old) mw_prov_thing_row_free(&old);
  mw_prov_thing_row_free(&row);
  if (st != MW_OK) {
    mw_prov_store_rollback(svc->store);
    mw_prov_svc_internal(svc, emit, ud, p->reply);
    return;
  }
  cJSON *b = cJSON_CreateObject();
  if (b) {
    cJSON_AddItemToObject(b, "deviceConfiguration", cJSON_Duplicate(p->out.device_configuration, 1));
    cJSON_AddStringToObject(b, "thingName", p->out.thing_name);
    if (p->kind == MW_PROV_REQ_JITP) cJSON_AddStringToObject(b, "certificateId", p->cert_id);
  }
  svc->stats.accepted++;
  MW_LOGI("provision", "registered thing %s with certificate %.12s… (CN=%s, %s, template %s)", p->out.thing_name,
          p->cert_id, p->cn, p->out.certificate_active ? "active" : "inactive", p->template_name);
  mw_prov_svc_emit_json(svc, emit, ud, p->reply, "accepted", b);
  cJSON_Delete(b);
}

/*
** Applies the template for a certificate and either finishes now (no broker change
** needed) or starts the conversation with the broker plugin.
*/
static void start_registration(mw_prov_service_t *svc, mw_prov_req_kind_t kind, const char *base,
                               const mw_prov_template_t *t, const cJSON *params, const mw_prov_builtins_t *b,
                               const char *cert_id, const char *cn, const char *token_hash, const char *cert_pem,
                               int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  if (svc->npending >= MAX_PENDING) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 429, "Throttled", "Too many registrations in progress; retry later");
    return;
  }
  mw_prov_pending_t *p = calloc(1, sizeof *p);
  if (!p) {
    mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  p->kind = kind;
  snprintf(p->reply, sizeof p->reply, "%s", base);
  snprintf(p->template_name, sizeof p->template_name, "%s", mw_prov_template_name(t));
  snprintf(p->cert_id, sizeof p->cert_id, "%s", cert_id);
  snprintf(p->cn, sizeof p->cn, "%s", cn);
  snprintf(p->token_hash, sizeof p->token_hash, "%s", token_hash ? token_hash : "");
  memcpy(p->reqid, svc->reqid, sizeof p->reqid);
  if (cert_pem && !(p->cert_pem = strdup(cert_pem))) {
    mw_prov_pending_free(p);
    mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  mw_prov_error_t e;
  if (mw_prov_template_apply(t, params, b, &p->out, &e) != MW_OK) {
    mw_prov_svc_reject(svc, emit, ud, base, &e);
    mw_prov_pending_free(p);
    return;
  }
  if (svc->policies) {
    char err[300];
    p->acls = mw_prov_policies_acls(svc->policies, p->out.policies, p->out.npolicies, p->out.thing_name, err,
                                    sizeof err);
    if (!p->acls) {
      mw_prov_svc_rejectf(svc, emit, ud, base, 404, "ResourceNotFound", "%s", err);
      mw_prov_pending_free(p);
      return;
    }
  }
  if (!svc->cfg.broker_admin || !p->out.certificate_active) {
    mw_prov_svc_commit_registration(svc, p, mw_prov_svc_now_s(now_ms), emit, ud);
    mw_prov_pending_free(p);
    return;
  }
  p->seq = ++svc->seq;
  p->deadline_ms = now_ms + svc->cfg.admin_timeout_ms;
  p->next = svc->pending;
  svc->pending = p;
  svc->npending++;
  mw_prov_svc_send_lookup(svc, p, emit, ud);
}

void mw_prov_svc_handle_register(mw_prov_service_t *svc, const char *base, const char *template_name, const cJSON *req,
                                 int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  int64_t now_s = mw_prov_svc_now_s(now_ms);
  const mw_prov_template_t *t = mw_prov_svc_find_template(svc, template_name);
  if (!t) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 404, "ResourceNotFound", "Template %s not found", template_name);
    return;
  }
  const cJSON *tok = cJSON_GetObjectItemCaseSensitive(req, "certificateOwnershipToken");
  if (!cJSON_IsString(tok) || !tok->valuestring[0]) {
    /* The message AWS IoT sends (aws-iot-device-sdk-js-v2 #69). */
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken",
                        "Certificate ownership token cannot be empty.");
    return;
  }
  const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "parameters");
  if (params && !cJSON_IsObject(params) && !cJSON_IsNull(params)) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidParameters", "parameters must be an object of strings");
    return;
  }
  if (cJSON_IsNull(params)) params = NULL;
  char hash[65];
  mw_prov_svc_sha256_hex(tok->valuestring, strlen(tok->valuestring), hash);
  mw_prov_token_row_t tr;
  mw_status_t st = mw_prov_store_get_token(svc->store, hash, &tr);
  if (st == MW_ERR_NOT_FOUND) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken",
                        "Certificate ownership token is invalid.");
    return;
  }
  if (st != MW_OK) {
    mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  if (tr.used_at) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken",
            "Certificate ownership token has already been used.");
    return;
  }
  if (tr.expires_at <= now_s) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken",
                        "Certificate ownership token has expired.");
    return;
  }
  if (token_in_flight(svc, hash, tr.cert_id)) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 409, "ConflictingRequest",
            "A registration with this certificate ownership token is in progress.");
    return;
  }
  mw_prov_cert_row_t cr;
  if ((st = mw_prov_store_get_cert(svc->store, tr.cert_id, &cr)) != MW_OK) {
    if (st == MW_ERR_NOT_FOUND)
      mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken",
                          "Certificate ownership token is invalid.");
    else mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  mw_prov_builtins_t b = {cr.id, NULL};
  start_registration(svc, MW_PROV_REQ_REGISTER, base, t, params, &b, cr.id, cr.cn, hash, NULL, now_ms, emit, ud);
}

void mw_prov_svc_handle_jitp(mw_prov_service_t *svc, const char *base, const cJSON *req, int64_t now_ms,
                             mw_prov_emit_fn emit, void *ud) {
  if (!svc->cfg.jitp_template) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 404, "ResourceNotFound",
            "No JITP template is configured on this service (--jitp-template NAME)");
    return;
  }
  const cJSON *pem = cJSON_GetObjectItemCaseSensitive(req, "certificatePem");
  if (!cJSON_IsString(pem) || !pem->valuestring[0]) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidPayload", "certificatePem is required");
    return;
  }
  char err[256];
  size_t len = strlen(pem->valuestring);
  int64_t now_s = mw_prov_svc_now_s(now_ms);
  mw_status_t st = mw_prov_ca_verify(svc->cfg.ca, pem->valuestring, len, now_s, err, sizeof err);
  if (st != MW_OK) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 403, "AccessDenied", "Certificate refused: %s", err);
    return;
  }
  mw_prov_cert_info_t info;
  if (mw_prov_cert_info(pem->valuestring, len, &info, err, sizeof err) != MW_OK || !info.cn[0]) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the certificate has no subject commonName");
    return;
  }
  if (token_in_flight(svc, "", info.id)) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 409, "ConflictingRequest",
                        "A registration of this certificate is in progress.");
    return;
  }
  mw_prov_cert_row_t cr;
  st = mw_prov_store_get_cert(svc->store, info.id, &cr);
  if (st != MW_OK && st != MW_ERR_NOT_FOUND) {
    mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  const mw_prov_template_t *t = mw_prov_svc_find_template(svc, svc->cfg.jitp_template);
  mw_prov_builtins_t b = {info.id, &info};
  start_registration(svc, MW_PROV_REQ_JITP, base, t, NULL, &b, info.id, info.cn, NULL, pem->valuestring, now_ms, emit,
                     ud);
}
