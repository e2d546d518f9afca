/*
** CreateCertificateFromCsr and CreateKeysAndCertificate: issuing a certificate with a CN of its
** own, recording it with a fresh ownership token, and answering with both.
*/
#include "mw_prov_service_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "mw_csr.h"
#include "mw_log.h"

/* An ownership token: 32 random bytes, URL-safe base64 without padding (43 characters). */
static int new_token(char out[48]) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char r[33];
  if (RAND_bytes(r, 32) != 1) return 0;
  r[32] = 0;
  size_t o = 0;
  for (size_t i = 0; i < 33; i += 3) {
    unsigned v = (unsigned)r[i] << 16 | (unsigned)r[i + 1] << 8 | r[i + 2];
    out[o++] = b64[(v >> 18) & 63];
    out[o++] = b64[(v >> 12) & 63];
    out[o++] = b64[(v >> 6) & 63];
    out[o++] = b64[v & 63];
  }
  out[43] = 0;
  OPENSSL_cleanse(r, sizeof r);
  return 1;
}

/*
** mosquitto knows a TLS client by its certificate's commonName, so two certificates with
** one CN would be one identity: whoever held the second would inherit every right given
** to the first. Each certificate this service issues therefore gets a CN of its own, the
** requested one followed by a random suffix (AWS IoT instead identifies certificates by
** their id and keeps the CSR's subject).
*/
static mw_status_t unique_cn(mw_prov_service_t *svc, const char *requested, char cn[MW_PROV_CN_MAX + 1]) {
  char base[52];
  size_t n = 0;
  for (const char *p = requested; *p && n < 51; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
             c == ':' || c == '.';
    base[n++] = ok ? c : '_';
  }
  base[n] = 0;
  if (!n) snprintf(base, sizeof base, "device");
  for (int attempt = 0; attempt < 8; attempt++) {
    unsigned char r[6];
    char h[13];
    if (RAND_bytes(r, sizeof r) != 1) return MW_ERR_IO;
    mw_prov_svc_hexify(r, sizeof r, h);
    snprintf(cn, MW_PROV_CN_MAX + 1, "%s.%s", base, h);
    bool used;
    mw_status_t st = mw_prov_store_cn_used(svc->store, cn, &used);
    if (st != MW_OK) return st;
    if (!used) return MW_OK;
  }
  return MW_ERR_CONFLICT;
}

/* Records the certificate and a fresh token; answers accepted (with the key for CreateKeys). */
static void finish_issue(mw_prov_service_t *svc, const char *base, mw_prov_cert_t *cert, const char *cn,
                         const char *source, const char *key_pem, int64_t now_s, mw_prov_emit_fn emit, void *ud) {
  char token[48], hash[65];
  if (!new_token(token)) {
    mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  mw_prov_svc_sha256_hex(token, strlen(token), hash);
  mw_status_t st = mw_prov_store_begin(svc->store);
  if (st == MW_OK) st = mw_prov_store_add_cert(svc->store, cert->id, cn, cert->pem, source, now_s);
  if (st == MW_OK) st = mw_prov_store_add_token(svc->store, hash, cert->id, now_s + svc->cfg.token_ttl_s);
  if (st == MW_OK) st = mw_prov_store_commit(svc->store);
  if (st != MW_OK) {
    mw_prov_store_rollback(svc->store);
    mw_prov_svc_internal(svc, emit, ud, base);
    OPENSSL_cleanse(token, sizeof token);
    return;
  }
  cJSON *b = cJSON_CreateObject();
  if (b) {
    cJSON_AddStringToObject(b, "certificateId", cert->id);
    cJSON_AddStringToObject(b, "certificatePem", cert->pem);
    if (key_pem) cJSON_AddStringToObject(b, "privateKey", key_pem);
    cJSON_AddStringToObject(b, "certificateOwnershipToken", token);
  }
  svc->stats.accepted++;
  MW_LOGI("provision", "issued certificate %.12s… CN=%s (%s), pending activation", cert->id, cn, source);
  mw_prov_svc_emit_json(svc, emit, ud, base, "accepted", b);
  if (b && key_pem) {
    /* Do not leave the private key in freed memory. */
    char *k = cJSON_GetObjectItemCaseSensitive(b, "privateKey")->valuestring;
    OPENSSL_cleanse(k, strlen(k));
  }
  cJSON_Delete(b);
  OPENSSL_cleanse(token, sizeof token);
}

void mw_prov_svc_handle_csr(mw_prov_service_t *svc, const char *base, const cJSON *req, int64_t now_s,
                            mw_prov_emit_fn emit, void *ud) {
  const cJSON *csr = cJSON_GetObjectItemCaseSensitive(req, "certificateSigningRequest");
  if (!cJSON_IsString(csr) || !csr->valuestring[0]) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidPayload", "certificateSigningRequest is required");
    return;
  }
  char requested[MW_PROV_CN_MAX + 1], err[256], cn[MW_PROV_CN_MAX + 1];
  size_t len = strlen(csr->valuestring);
  mw_status_t st = mw_csr_verify(csr->valuestring, len, requested, sizeof requested, err, sizeof err);
  if (st != MW_OK) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCsr", "Invalid certificate signing request: %s", err);
    return;
  }
  if ((st = unique_cn(svc, requested, cn)) != MW_OK) {
    mw_prov_svc_internal(svc, emit, ud, base);
    return;
  }
  mw_prov_issue_t opt = {cn, svc->cfg.cert_days, now_s};
  mw_prov_cert_t cert;
  st = mw_prov_ca_issue_csr(svc->cfg.ca, csr->valuestring, len, &opt, &cert, err, sizeof err);
  if (st == MW_ERR_INVALID || st == MW_ERR_TOO_LARGE)
    mw_prov_svc_rejectf(svc, emit, ud, base, 400, "InvalidCsr", "Invalid certificate signing request: %s", err);
  else if (st != MW_OK) {
    MW_LOGE("provision", "issuing a certificate failed: %s", err);
    mw_prov_svc_internal(svc, emit, ud, base);
  } else {
    finish_issue(svc, base, &cert, cn, "csr", NULL, now_s, emit, ud);
  }
  mw_prov_cert_free(&cert);
}

void mw_prov_svc_handle_keys(mw_prov_service_t *svc, const char *base, int64_t now_s, mw_prov_emit_fn emit, void *ud) {
  if (!svc->cfg.create_keys) {
    mw_prov_svc_rejectf(svc, emit, ud, base, 403, "AccessDenied",
            "CreateKeysAndCertificate is disabled on this service (keys are made on the device: use "
            "CreateCertificateFromCsr)");
    return;
  }
  EVP_PKEY *key = NULL;
  char *key_pem = NULL, cn[MW_PROV_CN_MAX + 1], err[256];
  mw_prov_cert_t cert;
  memset(&cert, 0, sizeof cert);
  mw_status_t st = mw_prov_keygen(&key, &key_pem);
  if (st == MW_OK) st = unique_cn(svc, "device", cn);
  if (st == MW_OK) {
    mw_prov_issue_t opt = {cn, svc->cfg.cert_days, now_s};
    st = mw_prov_ca_issue_key(svc->cfg.ca, key, &opt, &cert, err, sizeof err);
    if (st != MW_OK) MW_LOGE("provision", "issuing a certificate failed: %s", err);
  }
  if (st == MW_OK) finish_issue(svc, base, &cert, cn, "keys", key_pem, now_s, emit, ud);
  else mw_prov_svc_internal(svc, emit, ud, base);
  mw_prov_cert_free(&cert);
  EVP_PKEY_free(key);
  if (key_pem) {
    OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
  }
}
