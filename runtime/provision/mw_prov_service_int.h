/*
** Internals of the local provisioning service, shared by its files only:
**   mw_prov_service.c          lifecycle (open, reload, close), accessors, the tick
**   mw_prov_service_dispatch.c routes one incoming message to its handler
**   mw_prov_service_answer.c   accepted / rejected answers
**   mw_prov_service_cert.c     CreateCertificateFromCsr, CreateKeysAndCertificate
**   mw_prov_service_register.c RegisterThing, JITP registration, pending registrations
**   mw_prov_service_admin.c    the conversation with the broker's dynamic-security plugin
*/
#ifndef MW_PROV_SERVICE_INT_H
#define MW_PROV_SERVICE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mw_prov_policy.h"
#include "mw_prov_service.h"
#include "mw_prov_template.h"

#define MW_PROV_TOPIC_MAX 256

typedef enum { MW_PROV_REQ_CSR, MW_PROV_REQ_KEYS, MW_PROV_REQ_REGISTER, MW_PROV_REQ_JITP } mw_prov_req_kind_t;

typedef struct mw_prov_pending {
  struct mw_prov_pending *next;
  uint64_t seq;
  int stage; /* 1: getClient sent, 2: role and client writes sent */
  int64_t deadline_ms;
  char reply[MW_PROV_TOPIC_MAX];
  mw_prov_req_kind_t kind;
  char template_name[MW_PROV_TEMPLATE_NAME_MAX + 1];
  char cert_id[MW_PROV_CERT_ID_LEN + 1];
  char cn[MW_PROV_CN_MAX + 1];
  char token_hash[65];
  char *cert_pem; /* JITP: recorded at commit */
  char reqid[17];
  mw_prov_outcome_t out;
  cJSON *acls;
} mw_prov_pending_t;

struct mw_prov_service {
  mw_prov_config_t cfg;
  mw_prov_store_t *store;
  mw_prov_template_t **templates;
  size_t ntemplates;
  mw_prov_policies_t *policies;
  const char *filters[8];
  char corr_prefix[24];
  uint64_t seq;
  mw_prov_pending_t *pending;
  size_t npending;
  int admin_state;
  int64_t probe_deadline_ms;
  int64_t last_prune_s;
  mw_prov_stats_t stats;
  char reqid[17]; /* of the request being answered ("" for none) */
};

static inline int64_t mw_prov_svc_now_s(int64_t now_ms) { return now_ms / 1000; }

/* ---- helpers (mw_prov_service.c) */
void mw_prov_svc_hexify(const unsigned char *in, size_t n, char *out);
void mw_prov_svc_sha256_hex(const char *s, size_t n, char out[65]);
const mw_prov_template_t *mw_prov_svc_find_template(const mw_prov_service_t *svc, const char *name);

/* ---- answers (mw_prov_service_answer.c); base is the request's topic */
void mw_prov_svc_emit_json(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base,
                           const char *suffix, cJSON *body);
void mw_prov_svc_reject(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base,
                        const mw_prov_error_t *e);
void mw_prov_svc_rejectf(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base, int status,
                         const char *code, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
void mw_prov_svc_internal(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base);

/* ---- requests (mw_prov_service_cert.c, mw_prov_service_register.c) */
void mw_prov_svc_handle_csr(mw_prov_service_t *svc, const char *base, const cJSON *req, int64_t now_s,
                            mw_prov_emit_fn emit, void *ud);
void mw_prov_svc_handle_keys(mw_prov_service_t *svc, const char *base, int64_t now_s, mw_prov_emit_fn emit,
                             void *ud);
void mw_prov_svc_handle_register(mw_prov_service_t *svc, const char *base, const char *template_name,
                                 const cJSON *req, int64_t now_ms, mw_prov_emit_fn emit, void *ud);
void mw_prov_svc_handle_jitp(mw_prov_service_t *svc, const char *base, const cJSON *req, int64_t now_ms,
                             mw_prov_emit_fn emit, void *ud);

/* ---- pending registrations (mw_prov_service_register.c) */
void mw_prov_pending_free(mw_prov_pending_t *p);
void mw_prov_pending_unlink(mw_prov_service_t *svc, mw_prov_pending_t *p);
/* Writes the registration to the store in one transaction and answers accepted. */
void mw_prov_svc_commit_registration(mw_prov_service_t *svc, mw_prov_pending_t *p, int64_t now_s,
                                     mw_prov_emit_fn emit, void *ud);

/* ---- the broker's plugin (mw_prov_service_admin.c) */
void mw_prov_svc_send_lookup(mw_prov_service_t *svc, mw_prov_pending_t *p, mw_prov_emit_fn emit, void *ud);
void mw_prov_svc_admin_failed(mw_prov_service_t *svc, mw_prov_pending_t *p, const char *why, mw_prov_emit_fn emit,
                              void *ud);
mw_status_t mw_prov_svc_handle_admin_response(mw_prov_service_t *svc, const void *payload, size_t len,
                                              int64_t now_ms, mw_prov_emit_fn emit, void *ud);

#endif
