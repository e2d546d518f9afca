#include "mw_prov_service.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "mw_csr.h"
#include "mw_log.h"
#include "mw_prov_policy.h"
#include "mw_prov_template.h"

#define MAX_PENDING 256
#define TOPIC_MAX 256

typedef enum { REQ_CSR, REQ_KEYS, REQ_REGISTER, REQ_JITP } req_kind_t;

typedef struct pending {
  struct pending *next;
  uint64_t seq;
  int stage; /* 1: getClient sent, 2: role and client writes sent */
  int64_t deadline_ms;
  char reply[TOPIC_MAX];
  req_kind_t kind;
  char template_name[MW_PROV_TEMPLATE_NAME_MAX + 1];
  char cert_id[MW_PROV_CERT_ID_LEN + 1];
  char cn[MW_PROV_CN_MAX + 1];
  char token_hash[65];
  char *cert_pem; /* JITP: recorded at commit */
  char reqid[17];
  mw_prov_outcome_t out;
  cJSON *acls;
} pending_t;

struct mw_prov_service {
  mw_prov_config_t cfg;
  mw_prov_store_t *store;
  mw_prov_template_t **templates;
  size_t ntemplates;
  mw_prov_policies_t *policies;
  const char *filters[8];
  char corr_prefix[24];
  uint64_t seq;
  pending_t *pending;
  size_t npending;
  int admin_state;
  int64_t probe_deadline_ms;
  int64_t last_prune_s;
  mw_prov_stats_t stats;
  char reqid[17]; /* of the request being answered ("" for none) */
};

/* ------------------------------------------------------------------ helpers */

static void hexify(const unsigned char *in, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[in[i] >> 4];
    out[2 * i + 1] = d[in[i] & 15];
  }
  out[2 * n] = 0;
}

static void sha256_hex(const char *s, size_t n, char out[65]) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)s, n, md);
  hexify(md, sizeof md, out);
}

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
** Every answer names the request it answers ("moonwireRequestId": the first 16 hex digits of
** the SHA-256 of the request's CSR, token or certificate). AWS IoT sends an answer only to the
** requester; a plain broker sends it to every client subscribed to the topic, so devices
** sharing a claim certificate need this to tell their answers from the others'. It is an
** extra field; clients that do not know it ignore it.
*/
static void emit_json(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base, const char *suffix,
                      cJSON *body) {
  char topic[TOPIC_MAX + 16];
  if (body && svc->reqid[0]) cJSON_AddStringToObject(body, "moonwireRequestId", svc->reqid);
  snprintf(topic, sizeof topic, "%s/%s", base, suffix);
  char *text = body ? cJSON_PrintUnformatted(body) : NULL;
  if (text) emit(ud, topic, text, strlen(text));
  else MW_LOGE("provision", "out of memory answering on %s", topic);
  free(text);
}

static void reject(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base,
                   const mw_prov_error_t *e) {
  cJSON *b = cJSON_CreateObject();
  if (b) {
    cJSON_AddNumberToObject(b, "statusCode", e->status);
    cJSON_AddStringToObject(b, "errorCode", e->code);
    cJSON_AddStringToObject(b, "errorMessage", e->message);
  }
  svc->stats.rejected++;
  MW_LOGI("provision", "%s rejected: %d %s: %s", base, e->status, e->code, e->message);
  emit_json(svc, emit, ud, base, "rejected", b);
  cJSON_Delete(b);
}

__attribute__((format(printf, 7, 8)))
static void rejectf(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base, int status,
                    const char *code, const char *fmt, ...) {
  mw_prov_error_t e;
  e.status = status;
  snprintf(e.code, sizeof e.code, "%s", code);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e.message, sizeof e.message, fmt, ap);
  va_end(ap);
  reject(svc, emit, ud, base, &e);
}

static void internal(mw_prov_service_t *svc, mw_prov_emit_fn emit, void *ud, const char *base) {
  rejectf(svc, emit, ud, base, 500, "InternalFailure", "Internal service failure");
}

static int64_t now_s_of(int64_t now_ms) { return now_ms / 1000; }

/* ------------------------------------------------------------------ templates and policies */

static void free_templates(mw_prov_template_t **t, size_t n) {
  for (size_t i = 0; i < n; i++) mw_prov_template_free(t[i]);
  free(t);
}

static mw_status_t load_templates(const char *dir, mw_prov_template_t ***out, size_t *nout, char *err, size_t errlen) {
  *out = NULL;
  *nout = 0;
  if (!dir) return MW_OK;
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(err, errlen, "cannot read the template directory %s", dir);
    return MW_ERR_IO;
  }
  mw_prov_template_t **list = NULL;
  size_t n = 0;
  mw_status_t st = MW_OK;
  struct dirent *de;
  char *buf = malloc(MW_PROV_TEMPLATE_MAX + 2);
  if (!buf) st = MW_ERR_NOMEM;
  while (st == MW_OK && (de = readdir(d)) != NULL) {
    size_t nl = strlen(de->d_name);
    if (nl < 6 || strcmp(de->d_name + nl - 5, ".json") != 0) continue;
    char name[256], path[4096];
    snprintf(name, sizeof name, "%.*s", (int)(nl - 5), de->d_name);
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) {
      snprintf(err, errlen, "cannot read %s", path);
      st = MW_ERR_IO;
      break;
    }
    size_t len = fread(buf, 1, MW_PROV_TEMPLATE_MAX + 1, f);
    fclose(f);
    mw_prov_template_t *t;
    char inner[512];
    st = mw_prov_template_parse(name, buf, len, &t, inner, sizeof inner);
    if (st != MW_OK) {
      snprintf(err, errlen, "%s: %s", path, inner);
      break;
    }
    mw_prov_template_t **nl2 = realloc(list, (n + 1) * sizeof *list);
    if (!nl2) {
      mw_prov_template_free(t);
      st = MW_ERR_NOMEM;
      break;
    }
    list = nl2;
    list[n++] = t;
  }
  free(buf);
  closedir(d);
  if (st != MW_OK) {
    free_templates(list, n);
    return st;
  }
  *out = list;
  *nout = n;
  return MW_OK;
}

static const mw_prov_template_t *find_template(const mw_prov_service_t *svc, const char *name) {
  for (size_t i = 0; i < svc->ntemplates; i++)
    if (!strcmp(mw_prov_template_name(svc->templates[i]), name)) return svc->templates[i];
  return NULL;
}

mw_status_t mw_prov_service_reload(mw_prov_service_t *svc, char *err, size_t errlen) {
  mw_prov_template_t **t;
  size_t n;
  mw_status_t st = load_templates(svc->cfg.templates_dir, &t, &n, err, errlen);
  if (st != MW_OK) return st;
  mw_prov_policies_t *p = NULL;
  if (svc->cfg.policy_path && (st = mw_prov_policies_load(svc->cfg.policy_path, &p, err, errlen)) != MW_OK) {
    free_templates(t, n);
    return st;
  }
  if (svc->cfg.jitp_template) {
    int found = 0;
    for (size_t i = 0; i < n; i++)
      if (!strcmp(mw_prov_template_name(t[i]), svc->cfg.jitp_template)) found = 1;
    if (!found) {
      snprintf(err, errlen, "the JITP template '%s' is not in %s", svc->cfg.jitp_template,
               svc->cfg.templates_dir ? svc->cfg.templates_dir : "(no template directory)");
      free_templates(t, n);
      mw_prov_policies_free(p);
      return MW_ERR_INVALID;
    }
  }
  free_templates(svc->templates, svc->ntemplates);
  svc->templates = t;
  svc->ntemplates = n;
  if (svc->cfg.policy_path) {
    mw_prov_policies_free(svc->policies);
    svc->policies = p;
  }
  return MW_OK;
}

mw_status_t mw_prov_service_open(const mw_prov_config_t *cfg, mw_prov_service_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->ca || !cfg->db_path) {
    snprintf(err, errlen, "a CA and a database are required");
    return MW_ERR_INVALID;
  }
  if (cfg->broker_admin && !cfg->policy_path) {
    snprintf(err, errlen, "administering the broker needs its policy description (--policy FILE)");
    return MW_ERR_INVALID;
  }
  mw_prov_service_t *svc = calloc(1, sizeof *svc);
  if (!svc) return MW_ERR_NOMEM;
  svc->cfg = *cfg;
  if (!svc->cfg.cert_days) svc->cfg.cert_days = 825;
  if (!svc->cfg.token_ttl_s) svc->cfg.token_ttl_s = 3600;
  if (!svc->cfg.admin_timeout_ms) svc->cfg.admin_timeout_ms = 10000;
  unsigned char r[6];
  if (RAND_bytes(r, sizeof r) != 1) memset(r, 0, sizeof r);
  char h[13];
  hexify(r, sizeof r, h);
  snprintf(svc->corr_prefix, sizeof svc->corr_prefix, "mwprov-%.12s", cfg->instance ? cfg->instance : h);
  int i = 0;
  svc->filters[i++] = "$aws/certificates/create-from-csr/+";
  svc->filters[i++] = "$aws/certificates/create/+";
  svc->filters[i++] = "$aws/provisioning-templates/+/provision/+";
  svc->filters[i++] = "moonwire/certificates/register/+";
  if (cfg->broker_admin) svc->filters[i++] = MW_PROV_DYNSEC_RESPONSE;
  svc->filters[i] = NULL;
  mw_status_t st = mw_prov_service_reload(svc, err, errlen);
  if (st == MW_OK && (st = mw_prov_store_open(cfg->db_path, &svc->store)) != MW_OK)
    snprintf(err, errlen, "cannot open the provisioning database %s", cfg->db_path);
  if (st != MW_OK) {
    mw_prov_service_close(svc);
    return st;
  }
  *out = svc;
  return MW_OK;
}

static void pending_free(pending_t *p) {
  mw_prov_outcome_free(&p->out);
  cJSON_Delete(p->acls);
  free(p->cert_pem);
  free(p);
}

void mw_prov_service_close(mw_prov_service_t *svc) {
  if (!svc) return;
  while (svc->pending) {
    pending_t *p = svc->pending;
    svc->pending = p->next;
    pending_free(p);
  }
  free_templates(svc->templates, svc->ntemplates);
  mw_prov_policies_free(svc->policies);
  mw_prov_store_close(svc->store);
  free(svc);
}

const char *const *mw_prov_service_filters(const mw_prov_service_t *svc) { return svc->filters; }
mw_prov_store_t *mw_prov_service_store(mw_prov_service_t *svc) { return svc->store; }

void mw_prov_service_stats(const mw_prov_service_t *svc, mw_prov_stats_t *out) {
  *out = svc->stats;
  out->pending = svc->npending;
}

int mw_prov_service_admin_state(const mw_prov_service_t *svc) { return svc->admin_state; }

/* ------------------------------------------------------------------ certificates */

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
    hexify(r, sizeof r, h);
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
    internal(svc, emit, ud, base);
    return;
  }
  sha256_hex(token, strlen(token), hash);
  mw_status_t st = mw_prov_store_begin(svc->store);
  if (st == MW_OK) st = mw_prov_store_add_cert(svc->store, cert->id, cn, cert->pem, source, now_s);
  if (st == MW_OK) st = mw_prov_store_add_token(svc->store, hash, cert->id, now_s + svc->cfg.token_ttl_s);
  if (st == MW_OK) st = mw_prov_store_commit(svc->store);
  if (st != MW_OK) {
    mw_prov_store_rollback(svc->store);
    internal(svc, emit, ud, base);
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
  emit_json(svc, emit, ud, base, "accepted", b);
  if (b && key_pem) {
    /* Do not leave the private key in freed memory. */
    char *k = cJSON_GetObjectItemCaseSensitive(b, "privateKey")->valuestring;
    OPENSSL_cleanse(k, strlen(k));
  }
  cJSON_Delete(b);
  OPENSSL_cleanse(token, sizeof token);
}

static void handle_csr(mw_prov_service_t *svc, const char *base, const cJSON *req, int64_t now_s,
                       mw_prov_emit_fn emit, void *ud) {
  const cJSON *csr = cJSON_GetObjectItemCaseSensitive(req, "certificateSigningRequest");
  if (!cJSON_IsString(csr) || !csr->valuestring[0]) {
    rejectf(svc, emit, ud, base, 400, "InvalidPayload", "certificateSigningRequest is required");
    return;
  }
  char requested[MW_PROV_CN_MAX + 1], err[256], cn[MW_PROV_CN_MAX + 1];
  size_t len = strlen(csr->valuestring);
  mw_status_t st = mw_csr_verify(csr->valuestring, len, requested, sizeof requested, err, sizeof err);
  if (st != MW_OK) {
    rejectf(svc, emit, ud, base, 400, "InvalidCsr", "Invalid certificate signing request: %s", err);
    return;
  }
  if ((st = unique_cn(svc, requested, cn)) != MW_OK) {
    internal(svc, emit, ud, base);
    return;
  }
  mw_prov_issue_t opt = {cn, svc->cfg.cert_days, now_s};
  mw_prov_cert_t cert;
  st = mw_prov_ca_issue_csr(svc->cfg.ca, csr->valuestring, len, &opt, &cert, err, sizeof err);
  if (st == MW_ERR_INVALID || st == MW_ERR_TOO_LARGE)
    rejectf(svc, emit, ud, base, 400, "InvalidCsr", "Invalid certificate signing request: %s", err);
  else if (st != MW_OK) {
    MW_LOGE("provision", "issuing a certificate failed: %s", err);
    internal(svc, emit, ud, base);
  } else {
    finish_issue(svc, base, &cert, cn, "csr", NULL, now_s, emit, ud);
  }
  mw_prov_cert_free(&cert);
}

static void handle_keys(mw_prov_service_t *svc, const char *base, int64_t now_s, mw_prov_emit_fn emit, void *ud) {
  if (!svc->cfg.create_keys) {
    rejectf(svc, emit, ud, base, 403, "AccessDenied",
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
  else internal(svc, emit, ud, base);
  mw_prov_cert_free(&cert);
  EVP_PKEY_free(key);
  if (key_pem) {
    OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
  }
}

/* ------------------------------------------------------------------ registration */

static void pending_unlink(mw_prov_service_t *svc, pending_t *p) {
  for (pending_t **pp = &svc->pending; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      svc->npending--;
      return;
    }
}

static bool token_in_flight(const mw_prov_service_t *svc, const char *hash, const char *cert_id) {
  for (const pending_t *p = svc->pending; p; p = p->next)
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
static void commit_registration(mw_prov_service_t *svc, pending_t *p, int64_t now_s, mw_prov_emit_fn emit, void *ud) {
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
    internal(svc, emit, ud, p->reply);
    return;
  }
  cJSON *b = cJSON_CreateObject();
  if (b) {
    cJSON_AddItemToObject(b, "deviceConfiguration", cJSON_Duplicate(p->out.device_configuration, 1));
    cJSON_AddStringToObject(b, "thingName", p->out.thing_name);
    if (p->kind == REQ_JITP) cJSON_AddStringToObject(b, "certificateId", p->cert_id);
  }
  svc->stats.accepted++;
  MW_LOGI("provision", "registered thing %s with certificate %.12s… (CN=%s, %s, template %s)", p->out.thing_name,
          p->cert_id, p->cn, p->out.certificate_active ? "active" : "inactive", p->template_name);
  emit_json(svc, emit, ud, p->reply, "accepted", b);
  cJSON_Delete(b);
}

static void send_admin(cJSON *commands, mw_prov_emit_fn emit, void *ud) {
  cJSON *root = cJSON_CreateObject();
  if (root && commands) cJSON_AddItemToObject(root, "commands", commands);
  else cJSON_Delete(commands);
  char *text = root ? cJSON_PrintUnformatted(root) : NULL;
  if (text) emit(ud, MW_PROV_DYNSEC_TOPIC, text, strlen(text));
  free(text);
  cJSON_Delete(root);
}

static cJSON *command(const char *name, const char *corr) {
  cJSON *c = cJSON_CreateObject();
  if (c) {
    cJSON_AddStringToObject(c, "command", name);
    cJSON_AddStringToObject(c, "correlationData", corr);
  }
  return c;
}

static void corr_of(const mw_prov_service_t *svc, const pending_t *p, int step, char *out, size_t cap) {
  snprintf(out, cap, "%s:%llu:%d", svc->corr_prefix, (unsigned long long)p->seq, step);
}

static void send_lookup(mw_prov_service_t *svc, pending_t *p, mw_prov_emit_fn emit, void *ud) {
  char corr[64];
  corr_of(svc, p, 0, corr, sizeof corr);
  cJSON *cmds = cJSON_CreateArray(), *c = command("getClient", corr);
  if (c) cJSON_AddStringToObject(c, "username", p->cn);
  if (cmds && c) cJSON_AddItemToArray(cmds, c);
  else cJSON_Delete(c);
  p->stage = 1;
  send_admin(cmds, emit, ud);
}

static void send_writes(mw_prov_service_t *svc, pending_t *p, mw_prov_emit_fn emit, void *ud) {
  char role[160], corr[64], textname[160], rtext[400];
  snprintf(role, sizeof role, "provisioned/%s", p->out.thing_name);
  snprintf(textname, sizeof textname, "thing %s", p->out.thing_name);
  size_t o = (size_t)snprintf(rtext, sizeof rtext, "policies");
  for (size_t i = 0; i < p->out.npolicies && o < sizeof rtext; i++)
    o += (size_t)snprintf(rtext + o, sizeof rtext - o, "%s%s", i ? ", " : " ", p->out.policies[i]);
  if (o < sizeof rtext) snprintf(rtext + o, sizeof rtext - o, " for %s (moonwire provisioning-service)", p->out.thing_name);
  cJSON *cmds = cJSON_CreateArray();
  static const char *const names[] = {"createRole", "modifyRole", "createClient", "modifyClient"};
  for (int i = 0; cmds && i < 4; i++) {
    corr_of(svc, p, i + 1, corr, sizeof corr);
    cJSON *c = command(names[i], corr);
    if (!c) continue;
    if (i < 2) {
      cJSON_AddStringToObject(c, "rolename", role);
      cJSON_AddStringToObject(c, "textname", rtext);
      cJSON_AddItemToObject(c, "acls", cJSON_Duplicate(p->acls, 1));
    } else {
      cJSON_AddStringToObject(c, "username", p->cn);
      cJSON_AddStringToObject(c, "textname", textname);
      cJSON *roles = cJSON_AddArrayToObject(c, "roles");
      cJSON *r = cJSON_CreateObject();
      if (r) cJSON_AddStringToObject(r, "rolename", role);
      if (roles && r) cJSON_AddItemToArray(roles, r);
      else cJSON_Delete(r);
    }
    cJSON_AddItemToArray(cmds, c);
  }
  p->stage = 2;
  send_admin(cmds, emit, ud);
}

/*
** Applies the template for a certificate and either finishes now (no broker change
** needed) or starts the conversation with the broker plugin.
*/
static void start_registration(mw_prov_service_t *svc, req_kind_t kind, const char *base,
                               const mw_prov_template_t *t, const cJSON *params, const mw_prov_builtins_t *b,
                               const char *cert_id, const char *cn, const char *token_hash, const char *cert_pem,
                               int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  if (svc->npending >= MAX_PENDING) {
    rejectf(svc, emit, ud, base, 429, "Throttled", "Too many registrations in progress; retry later");
    return;
  }
  pending_t *p = calloc(1, sizeof *p);
  if (!p) {
    internal(svc, emit, ud, base);
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
    pending_free(p);
    internal(svc, emit, ud, base);
    return;
  }
  mw_prov_error_t e;
  if (mw_prov_template_apply(t, params, b, &p->out, &e) != MW_OK) {
    reject(svc, emit, ud, base, &e);
    pending_free(p);
    return;
  }
  if (svc->policies) {
    char err[300];
    p->acls = mw_prov_policies_acls(svc->policies, p->out.policies, p->out.npolicies, p->out.thing_name, err,
                                    sizeof err);
    if (!p->acls) {
      rejectf(svc, emit, ud, base, 404, "ResourceNotFound", "%s", err);
      pending_free(p);
      return;
    }
  }
  if (!svc->cfg.broker_admin || !p->out.certificate_active) {
    commit_registration(svc, p, now_s_of(now_ms), emit, ud);
    pending_free(p);
    return;
  }
  p->seq = ++svc->seq;
  p->deadline_ms = now_ms + svc->cfg.admin_timeout_ms;
  p->next = svc->pending;
  svc->pending = p;
  svc->npending++;
  send_lookup(svc, p, emit, ud);
}

static void handle_register(mw_prov_service_t *svc, const char *base, const char *template_name, const cJSON *req,
                            int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  int64_t now_s = now_s_of(now_ms);
  const mw_prov_template_t *t = find_template(svc, template_name);
  if (!t) {
    rejectf(svc, emit, ud, base, 404, "ResourceNotFound", "Template %s not found", template_name);
    return;
  }
  const cJSON *tok = cJSON_GetObjectItemCaseSensitive(req, "certificateOwnershipToken");
  if (!cJSON_IsString(tok) || !tok->valuestring[0]) {
    /* The message AWS IoT sends (aws-iot-device-sdk-js-v2 #69). */
    rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.");
    return;
  }
  const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "parameters");
  if (params && !cJSON_IsObject(params) && !cJSON_IsNull(params)) {
    rejectf(svc, emit, ud, base, 400, "InvalidParameters", "parameters must be an object of strings");
    return;
  }
  if (cJSON_IsNull(params)) params = NULL;
  char hash[65];
  sha256_hex(tok->valuestring, strlen(tok->valuestring), hash);
  mw_prov_token_row_t tr;
  mw_status_t st = mw_prov_store_get_token(svc->store, hash, &tr);
  if (st == MW_ERR_NOT_FOUND) {
    rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid.");
    return;
  }
  if (st != MW_OK) {
    internal(svc, emit, ud, base);
    return;
  }
  if (tr.used_at) {
    rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken",
            "Certificate ownership token has already been used.");
    return;
  }
  if (tr.expires_at <= now_s) {
    rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token has expired.");
    return;
  }
  if (token_in_flight(svc, hash, tr.cert_id)) {
    rejectf(svc, emit, ud, base, 409, "ConflictingRequest",
            "A registration with this certificate ownership token is in progress.");
    return;
  }
  mw_prov_cert_row_t cr;
  if ((st = mw_prov_store_get_cert(svc->store, tr.cert_id, &cr)) != MW_OK) {
    if (st == MW_ERR_NOT_FOUND)
      rejectf(svc, emit, ud, base, 400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid.");
    else internal(svc, emit, ud, base);
    return;
  }
  mw_prov_builtins_t b = {cr.id, NULL};
  start_registration(svc, REQ_REGISTER, base, t, params, &b, cr.id, cr.cn, hash, NULL, now_ms, emit, ud);
}

static void handle_jitp(mw_prov_service_t *svc, const char *base, const cJSON *req, int64_t now_ms,
                        mw_prov_emit_fn emit, void *ud) {
  if (!svc->cfg.jitp_template) {
    rejectf(svc, emit, ud, base, 404, "ResourceNotFound",
            "No JITP template is configured on this service (--jitp-template NAME)");
    return;
  }
  const cJSON *pem = cJSON_GetObjectItemCaseSensitive(req, "certificatePem");
  if (!cJSON_IsString(pem) || !pem->valuestring[0]) {
    rejectf(svc, emit, ud, base, 400, "InvalidPayload", "certificatePem is required");
    return;
  }
  char err[256];
  size_t len = strlen(pem->valuestring);
  int64_t now_s = now_s_of(now_ms);
  mw_status_t st = mw_prov_ca_verify(svc->cfg.ca, pem->valuestring, len, now_s, err, sizeof err);
  if (st != MW_OK) {
    rejectf(svc, emit, ud, base, 403, "AccessDenied", "Certificate refused: %s", err);
    return;
  }
  mw_prov_cert_info_t info;
  if (mw_prov_cert_info(pem->valuestring, len, &info, err, sizeof err) != MW_OK || !info.cn[0]) {
    rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the certificate has no subject commonName");
    return;
  }
  if (token_in_flight(svc, "", info.id)) {
    rejectf(svc, emit, ud, base, 409, "ConflictingRequest", "A registration of this certificate is in progress.");
    return;
  }
  mw_prov_cert_row_t cr;
  st = mw_prov_store_get_cert(svc->store, info.id, &cr);
  if (st != MW_OK && st != MW_ERR_NOT_FOUND) {
    internal(svc, emit, ud, base);
    return;
  }
  const mw_prov_template_t *t = find_template(svc, svc->cfg.jitp_template);
  mw_prov_builtins_t b = {info.id, &info};
  start_registration(svc, REQ_JITP, base, t, NULL, &b, info.id, info.cn, NULL, pem->valuestring, now_ms, emit, ud);
}

/* ------------------------------------------------------------------ plugin answers */

static const cJSON *find_response(const cJSON *responses, const char *corr) {
  for (const cJSON *r = responses ? responses->child : NULL; r; r = r->next) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "correlationData");
    if (cJSON_IsString(c) && !strcmp(c->valuestring, corr)) return r;
  }
  return NULL;
}

static const char *resp_error(const cJSON *r) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
  return cJSON_IsString(e) ? e->valuestring : NULL;
}

static void admin_failed(mw_prov_service_t *svc, pending_t *p, const char *why, mw_prov_emit_fn emit, void *ud) {
  MW_LOGE("provision", "registering thing %s: the broker's dynamic-security plugin: %s", p->out.thing_name, why);
  rejectf(svc, emit, ud, p->reply, 500, "InternalFailure", "The broker's access policy could not be updated: %s", why);
}

static void on_lookup(mw_prov_service_t *svc, pending_t *p, const cJSON *r, int64_t now_ms, mw_prov_emit_fn emit,
                      void *ud) {
  const char *e = resp_error(r);
  if (e && strcmp(e, "Client not found") != 0) {
    admin_failed(svc, p, e, emit, ud);
    pending_unlink(svc, p);
    pending_free(p);
    return;
  }
  if (!e) {
    const cJSON *client = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "data"), "client");
    const cJSON *tn = cJSON_GetObjectItemCaseSensitive(client, "textname");
    char want[160];
    snprintf(want, sizeof want, "thing %s", p->out.thing_name);
    if (!cJSON_IsString(tn) || strcmp(tn->valuestring, want) != 0) {
      /* The CN already names another broker identity: giving it this thing's rights would
         merge two identities. */
      rejectf(svc, emit, ud, p->reply, 403, "AccessDenied",
              "The certificate's subject CN=%s is already a broker identity (%s); it cannot become thing %s", p->cn,
              cJSON_IsString(tn) ? tn->valuestring : "no description", p->out.thing_name);
      pending_unlink(svc, p);
      pending_free(p);
      return;
    }
  }
  p->deadline_ms = now_ms + svc->cfg.admin_timeout_ms;
  send_writes(svc, p, emit, ud);
}

static void on_writes(mw_prov_service_t *svc, pending_t *p, const cJSON *responses, int64_t now_ms,
                      mw_prov_emit_fn emit, void *ud) {
  for (int i = 1; i <= 4; i++) {
    char corr[64];
    corr_of(svc, p, i, corr, sizeof corr);
    const cJSON *r = find_response(responses, corr);
    const char *e = r ? resp_error(r) : "no answer to one of the commands";
    if (!e) continue;
    if ((i == 1 && !strcmp(e, "Role already exists")) || (i == 3 && !strcmp(e, "Client already exists"))) continue;
    admin_failed(svc, p, e, emit, ud);
    pending_unlink(svc, p);
    pending_free(p);
    return;
  }
  pending_unlink(svc, p);
  commit_registration(svc, p, now_s_of(now_ms), emit, ud);
  pending_free(p);
}

static mw_status_t handle_admin_response(mw_prov_service_t *svc, const void *payload, size_t len, int64_t now_ms,
                                         mw_prov_emit_fn emit, void *ud) {
  cJSON *root = cJSON_ParseWithLength(payload, len);
  const cJSON *responses = cJSON_GetObjectItemCaseSensitive(root, "responses");
  size_t plen = strlen(svc->corr_prefix);
  for (const cJSON *r = cJSON_IsArray(responses) ? responses->child : NULL; r; r = r->next) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "correlationData");
    if (!cJSON_IsString(c) || strncmp(c->valuestring, svc->corr_prefix, plen) != 0 || c->valuestring[plen] != ':')
      continue;
    const char *rest = c->valuestring + plen + 1;
    if (!strcmp(rest, "probe")) {
      svc->admin_state = 1;
      continue;
    }
    char *end;
    unsigned long long seq = strtoull(rest, &end, 10);
    if (*end != ':') continue;
    int step = atoi(end + 1);
    for (pending_t *p = svc->pending; p; p = p->next) {
      if (p->seq != seq) continue;
      memcpy(svc->reqid, p->reqid, sizeof svc->reqid);
      if (p->stage == 1 && step == 0) on_lookup(svc, p, r, now_ms, emit, ud);
      else if (p->stage == 2 && step == 1) on_writes(svc, p, responses, now_ms, emit, ud);
      break; /* p may be gone now */
    }
  }
  cJSON_Delete(root);
  svc->reqid[0] = 0;
  return MW_OK;
}

void mw_prov_service_probe(mw_prov_service_t *svc, int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  if (!svc->cfg.broker_admin) return;
  char corr[64];
  snprintf(corr, sizeof corr, "%s:probe", svc->corr_prefix);
  cJSON *cmds = cJSON_CreateArray(), *c = command("getDefaultACLAccess", corr);
  if (cmds && c) cJSON_AddItemToArray(cmds, c);
  else cJSON_Delete(c);
  svc->admin_state = 0;
  svc->probe_deadline_ms = now_ms + svc->cfg.admin_timeout_ms;
  send_admin(cmds, emit, ud);
}

void mw_prov_service_tick(mw_prov_service_t *svc, int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  for (pending_t *p = svc->pending, *next; p; p = next) {
    next = p->next;
    if (p->deadline_ms > now_ms) continue;
    char why[128];
    snprintf(why, sizeof why, "no answer within %d ms (may this service publish to %s?)", svc->cfg.admin_timeout_ms,
             MW_PROV_DYNSEC_TOPIC);
    memcpy(svc->reqid, p->reqid, sizeof svc->reqid);
    admin_failed(svc, p, why, emit, ud);
    svc->reqid[0] = 0;
    pending_unlink(svc, p);
    pending_free(p);
  }
  if (svc->admin_state == 0 && svc->probe_deadline_ms && now_ms >= svc->probe_deadline_ms) svc->admin_state = -1;
  int64_t now_s = now_s_of(now_ms);
  if (now_s - svc->last_prune_s >= 600) {
    int removed = 0;
    if (svc->last_prune_s && mw_prov_store_prune(svc->store, now_s - svc->cfg.token_ttl_s, &removed) == MW_OK &&
        removed)
      MW_LOGI("provision", "forgot %d certificate(s) whose ownership token expired unused", removed);
    svc->last_prune_s = now_s;
  }
}

/* ------------------------------------------------------------------ dispatch */

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
  if (topic_len >= TOPIC_MAX || memchr(topic, 0, topic_len)) return MW_ERR_INVALID;
  if (topic_len == strlen(MW_PROV_DYNSEC_RESPONSE) && !memcmp(topic, MW_PROV_DYNSEC_RESPONSE, topic_len)) {
    if (!svc->cfg.broker_admin) return MW_ERR_INVALID;
    return handle_admin_response(svc, payload, len, now_ms, emit, ud);
  }
  char name[MW_PROV_TEMPLATE_NAME_MAX + 2] = "";
  req_kind_t kind;
  const char *fmt;
  if ((fmt = match(topic, topic_len, "$aws/certificates/create-from-csr/", NULL, NULL, 0))) kind = REQ_CSR;
  else if ((fmt = match(topic, topic_len, "$aws/certificates/create/", NULL, NULL, 0))) kind = REQ_KEYS;
  else if ((fmt = match(topic, topic_len, "$aws/provisioning-templates/", "/provision/", name, sizeof name))) kind = REQ_REGISTER;
  else if ((fmt = match(topic, topic_len, "moonwire/certificates/register/", NULL, NULL, 0))) kind = REQ_JITP;
  else return MW_ERR_INVALID;
  if (kind == REQ_REGISTER && !mw_prov_template_name_ok(name, strlen(name))) return MW_ERR_INVALID;
  if (!strcmp(fmt, "cbor")) {
    MW_LOGW("provision", "a request on %.*s: the local service speaks JSON only (use the /json topics)",
            (int)topic_len, topic);
    return MW_ERR_UNSUPPORTED;
  }
  char base[TOPIC_MAX];
  memcpy(base, topic, topic_len);
  base[topic_len] = 0;
  svc->stats.requests++;
  if (len > MW_PROV_REQUEST_MAX) {
    rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the request is larger than %d bytes", MW_PROV_REQUEST_MAX);
    return MW_OK;
  }
  cJSON *req = NULL;
  if (len > 0) {
    req = cJSON_ParseWithLength(payload, len);
    if (!req || !cJSON_IsObject(req)) {
      cJSON_Delete(req);
      rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the request is not a JSON object");
      return MW_OK;
    }
  } else if (kind != REQ_KEYS) {
    rejectf(svc, emit, ud, base, 400, "InvalidPayload", "the request is empty");
    return MW_OK;
  }
  int64_t now_s = now_s_of(now_ms);
  static const char *const id_field[] = {[REQ_CSR] = "certificateSigningRequest", [REQ_KEYS] = NULL,
                                         [REQ_REGISTER] = "certificateOwnershipToken", [REQ_JITP] = "certificatePem"};
  const cJSON *idv = id_field[kind] ? cJSON_GetObjectItemCaseSensitive(req, id_field[kind]) : NULL;
  svc->reqid[0] = 0;
  if (cJSON_IsString(idv) && idv->valuestring[0]) {
    char h[65];
    sha256_hex(idv->valuestring, strlen(idv->valuestring), h);
    memcpy(svc->reqid, h, 16);
    svc->reqid[16] = 0;
  }
  switch (kind) {
  case REQ_CSR: handle_csr(svc, base, req, now_s, emit, ud); break;
  case REQ_KEYS: handle_keys(svc, base, now_s, emit, ud); break;
  case REQ_REGISTER: handle_register(svc, base, name, req, now_ms, emit, ud); break;
  case REQ_JITP: handle_jitp(svc, base, req, now_ms, emit, ud); break;
  }
  svc->reqid[0] = 0;
  cJSON_Delete(req);
  return MW_OK;
}
