/*
** Routing one incoming message: the plugin's responses to mw_prov_service_admin.c, requests
** by topic to their handler, after the checks every request shares (size, JSON object) and
** naming the request its answers will carry.
*/
#include "mw_prov_service_int.h"

#include <stdio.h>
#include <string.h>

#include "mw_log.h"

/* Splits "<prefix><middle>/<fmt>"; returns the format or NULL when topic is not of that shape. */
static const char *match(const char *topic, size_t tl, const char *prefix, const char *infix, char *middle,
                         size_t midcap) {
  size_t pl = strlen(prefix);
  if (tl <= pl || strncmp(topic, prefix, pl) != 0) return NULL;
  const char *rest = topic + pl;
  size_t rl = tl - pl;
  if (infix) {
    const char *slash = memchr(rest, '/', rl);
    if (!slash) return NULL;
    size_t ml = (size_t)(slash - rest), il = strlen(infix);
    if (ml >= midcap || rl < ml + il || strncmp(slash, infix, il) != 0) return NULL;
    memcpy(middle, rest, ml);
    middle[ml] = 0;
    rest = slash + il;
    rl -= ml + il;
  }
  if (memchr(rest, '/', rl)) return NULL;
  if (rl == 4 && !strncmp(rest, "json", 4)) return "json";
  if (rl == 4 && !strncmp(rest, "cbor", 4)) return "cbor";
  return NULL;
}

mw_status_t mw_prov_service_handle(mw_prov_service_t *svc, const char *topic, size_t topic_len, const void *payload,
                                   size_t len, int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  if (topic_len >= MW_PROV_TOPIC_MAX || memchr(topic, 0, topic_len)) return MW_ERR_INVALID;
  if (topic_len == strlen(MW_PROV_DYNSEC_RESPONSE) && !memcmp(topic, MW_PROV_DYNSEC_RESPONSE, topic_len)) {
    if (!svc->cfg.broker_admin) return MW_ERR_INVALID;
    return mw_prov_svc_handle_admin_response(svc, payload, len, now_ms, emit, ud);
  }
  char name[MW_PROV_TEMPLATE_NAME_MAX + 2] = "";
  mw_prov_req_kind_t kind;
  const char *fmt;
  if ((fmt = match(topic, topic_len, "$aws/certificates/create-from-csr/", NULL, NULL, 0))) kind = MW_PROV_REQ_CSR;
  else if ((fmt = match(topic, topic_len, "$aws/certificates/create/", NULL, NULL, 0))) kind = MW_PROV_REQ_KEYS;
  else if ((fmt = match(topic, topic_len, "$aws/provisioning-templates/", "/provision/", name, sizeof name)))
    kind = MW_PROV_REQ_REGISTER;
  else if ((fmt = match(topic, topic_len, "moonwire/certificates/register/", NULL, NULL, 0))) kind = MW_PROV_REQ_JITP;
  else return MW_ERR_INVALID;
  if (kind == MW_PROV_REQ_REGISTER && !mw_prov_template_name_ok(name, strlen(name))) return MW_ERR_INVALID;
  if (!strcmp(fmt, "cbor")) {
    MW_LOGW("provision", "a request on %.*s: the local service speaks JSON only (use the /json topics)",
            (int)topic_len, topic);
    return MW_ERR_UNSUPPORTED;
  }
  char base[MW_PROV_TOPIC_MAX];
  memcpy(base, topic, topic_len);
  base[topic_len] = 0;
  svc->stats.requests++;
  if (len > MW_PROV_REQUEST_MAX) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the request is larger than %d bytes",
                        MW_PROV_REQUEST_MAX);
    return MW_OK;
  }
  cJSON *req = NULL;
  if (len > 0) {
    req = cJSON_ParseWithLength(payload, len);
    if (!req || !cJSON_IsObject(req)) {
      cJSON_Delete(req);
      mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the request is not a JSON object");
      return MW_OK;
    }
  } else if (kind != MW_PROV_REQ_KEYS) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the request is empty");
    return MW_OK;
  }
  int64_t now_s = mw_prov_svc_now_s(now_ms);
  static const char *const id_field[] = {[MW_PROV_REQ_CSR] = "certificateSigningRequest",
                                         [MW_PROV_REQ_KEYS] = NULL,
                                         [MW_PROV_REQ_REGISTER] = "certificateOwnershipToken",
                                         [MW_PROV_REQ_JITP] = "certificatePem"};
  const cJSON *idv = id_field[kind] ? cJSON_GetObjectItemCaseSensitive(req, id_field[kind]) : NULL;
  svc->reqid[0] = 0;
  if (cJSON_IsString(idv) && idv->valuestring[0]) {
    char h[65];
    mw_prov_svc_sha256_hex(idv->valuestring, strlen(idv->valuestring), h);
    memcpy(svc->reqid, h, 16);
    svc->reqid[16] = 0;
  }
  switch (kind) {
  case MW_PROV_REQ_CSR: mw_prov_svc_handle_csr(svc, base, req, now_s, emit, ud); break;
  case MW_PROV_REQ_KEYS: mw_prov_svc_handle_keys(svc, base, now_s, emit, ud); break;
  case MW_PROV_REQ_REGISTER: mw_prov_svc_handle_register(svc, base, name, req, now_ms, emit, ud); break;
  case MW_PROV_REQ_JITP: mw_prov_svc_handle_jitp(svc, base, req, now_ms, emit, ud); break;
  }
  svc->reqid[0] = 0;
  cJSON_Delete(req);
  return MW_OK;
}
