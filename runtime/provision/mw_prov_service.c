/*
** The service's lifecycle and bookkeeping: opening it (templates, policies, store), reloading
** templates and policies, closing, the accessors, and the once-a-second tick that times out
** broker conversations and forgets expired unused certificates. Requests are routed by
** mw_prov_service_dispatch.c.
*/
#include "mw_prov_service_int.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "mw_log.h"

/* ------------------------------------------------------------------ helpers */

void mw_prov_svc_hexify(const unsigned char *in, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[in[i] >> 4];
    out[2 * i + 1] = d[in[i] & 15];
  }
  out[2 * n] = 0;
}

void mw_prov_svc_sha256_hex(const char *s, size_t n, char out[65]) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)s, n, md);
  mw_prov_svc_hexify(md, sizeof md, out);
}

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

const mw_prov_template_t *mw_prov_svc_find_template(const mw_prov_service_t *svc, const char *name) {
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
  mw_prov_svc_hexify(r, sizeof r, h);
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

void mw_prov_service_close(mw_prov_service_t *svc) {
  if (!svc) return;
  while (svc->pending) {
    mw_prov_pending_t *p = svc->pending;
    svc->pending = p->next;
    mw_prov_pending_free(p);
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

/* ------------------------------------------------------------------ bookkeeping */

void mw_prov_service_tick(mw_prov_service_t *svc, int64_t now_ms, mw_prov_emit_fn emit, void *ud) {
  for (mw_prov_pending_t *p = svc->pending, *next; p; p = next) {
    next = p->next;
    if (p->deadline_ms > now_ms) continue;
    char why[128];
    snprintf(why, sizeof why, "no answer within %d ms (may this service publish to %s?)", svc->cfg.admin_timeout_ms,
             MW_PROV_DYNSEC_TOPIC);
    memcpy(svc->reqid, p->reqid, sizeof svc->reqid);
    mw_prov_svc_admin_failed(svc, p, why, emit, ud);
    svc->reqid[0] = 0;
    mw_prov_pending_unlink(svc, p);
    mw_prov_pending_free(p);
  }
  if (svc->admin_state == 0 && svc->probe_deadline_ms && now_ms >= svc->probe_deadline_ms) svc->admin_state = -1;
  int64_t now_s = mw_prov_svc_now_s(now_ms);
  if (now_s - svc->last_prune_s >= 600) {
    int removed = 0;
    if (svc->last_prune_s && mw_prov_store_prune(svc->store, now_s - svc->cfg.token_ttl_s, &removed) == MW_OK &&
        removed)
      MW_LOGI("provision", "forgot %d certificate(s) whose ownership token expired unused", removed);
    svc->last_prune_s = now_s;
  }
}
