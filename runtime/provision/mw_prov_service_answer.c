/*
** The service's answers: accepted and rejected bodies on "<request topic>/<suffix>", each
** tagged with the request it answers, and the rejection counters and log line.
*/
#include "mw_prov_service_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"

/*
** Every answer names the request it answers ("moonwireRequestId": the first 16 hex digits of
** the SHA-256 of the request's CSR, token or certificate). AWS IoT sends an answer only to the
** requester; a plain broker sends it to every client subscribed to the topic, so devices
** sharing a claim certificate need this to tell their answers from the others'. It is an
** extra field; clients that do not know it ignore it.
*/
void mw_prov_svc_emit_json(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base, const char *suffix,
                           cJSON *body) {
  char topic[MW_PROV_TOPIC_MAX + 16];
  if (body && svc->reqid[0]) cJSON_AddStringToObject(body, "moonwireRequestId", svc->reqid);
  snprintf(topic, sizeof topic, "%s/%s", base, suffix);
  char *text = body ? cJSON_PrintUnformatted(body) : NULL;
  if (text) emit(ud, topic, text, strlen(text));
  else MW_LOGE("provision", "out of memory answering on %s", topic);
  free(text);
}

void mw_prov_svc_reject(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base,
                        const mw_prov_error_t *e) {
  cJSON *b = cJSON_CreateObject();
  if (b) {
    cJSON_AddNumberToObject(b, "statusCode", e->status);
    cJSON_AddStringToObject(b, "errorCode", e->code);
    cJSON_AddStringToObject(b, "errorMessage", e->message);
  }
  svc->stats.rejected++;
  MW_LOGI("provision", "%s rejected: %d %s: %s", base, e->status, e->code, e->message);
  mw_prov_svc_emit_json(svc, emit, ud, base, "rejected", b);
  cJSON_Delete(b);
}

__attribute__((format(printf, 7, 8)))
void mw_prov_svc_rejectf(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base, int status,
                         const char *code, const char *fmt, ...) {
  mw_prov_error_t e;
  e.status = status;
  snprintf(e.code, sizeof e.code, "%s", code);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e.message, sizeof e.message, fmt, ap);
  va_end(ap);
  mw_prov_svc_reject(svc, emit, ud, base, &e);
}

void mw_prov_svc_internal(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base) {
  mw_prov_svc_rejectf(svc, emit, ud, base, 500, "InternalFailure", "Internal service failure");
}
