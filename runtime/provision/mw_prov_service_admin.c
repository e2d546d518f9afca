/*
** The conversation with the broker's dynamic-security plugin: looking up the certificate's
** client, writing the thing's role and client, reading the plugin's answers (matched by
** correlationData) and the probe that tells whether this service may administer the broker.
*/
#include "mw_prov_service_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_log.h"

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

static void corr_of(const mw_prov_service_t *svc, const mw_prov_pending_t *p, int step, char *out, size_t cap) {
  snprintf(out, cap, "%s:%llu:%d", svc->corr_prefix, (unsigned long long)p->seq, step);
}

void mw_prov_svc_send_lookup(mw_prov_service_t *svc, mw_prov_pending_t *p, mw_prov_emit_fn emit, void *ud) {
  char corr[64];
  corr_of(svc, p, 0, corr, sizeof corr);
  cJSON *cmds = cJSON_CreateArray(), *c = command("getClient", corr);
  if (c) cJSON_AddStringToObject(c, "username", p->cn);
  if (cmds && c) cJSON_AddItemToArray(cmds, c);
  else cJSON_Delete(c);
  p->stage = 1;
  send_admin(cmds, emit, ud);
}

static void send_writes(mw_prov_service_t *svc, mw_prov_pending_t *p, mw_prov_emit_fn emit, void *ud) {
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

void mw_prov_svc_admin_failed(mw_prov_service_t *svc, mw_prov_pending_t *p, const char *why, mw_prov_emit_fn emit,
                              void *ud) {
  MW_LOGE("provision", "registering thing %s: the broker's dynamic-security plugin: %s", p->out.thing_name, why);
  mw_prov_svc_rejectf(svc, emit, ud, p->reply, 500, "InternalFailure",
                      "The broker's access policy could not be updated: %s", why);
}

static void on_lookup(mw_prov_service_t *svc, mw_prov_pending_t *p, const cJSON *r, int64_t now_ms,
                      mw_prov_emit_fn emit, void *ud) {
  const char *e = resp_error(r);
  if (e && strcmp(e, "Client not found") != 0) {
    mw_prov_svc_admin_failed(svc, p, e, emit, ud);
    mw_prov_pending_unlink(svc, p);
    mw_prov_pending_free(p);
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
      mw_prov_svc_rejectf(svc, emit, ud, p->reply, 403, "AccessDenied",
              "The certificate's subject CN=%s is already a broker identity (%s); it cannot become thing %s", p->cn,
              cJSON_IsString(tn) ? tn->valuestring : "no description", p->out.thing_name);
      mw_prov_pending_unlink(svc, p);
      mw_prov_pending_free(p);
      return;
    }
  }
  p->deadline_ms = now_ms + svc->cfg.admin_timeout_ms;
  send_writes(svc, p, emit, ud);
}

static void on_writes(mw_prov_service_t *svc, mw_prov_pending_t *p, const cJSON *responses, int64_t now_ms,
                      mw_prov_emit_fn emit, void *ud) {
  for (int i = 1; i <= 4; i++) {
    char corr[64];
    corr_of(svc, p, i, corr, sizeof corr);
    const cJSON *r = find_response(responses, corr);
    const char *e = r ? resp_error(r) : "no answer to one of the commands";
    if (!e) continue;
    if ((i == 1 && !strcmp(e, "Role already exists")) || (i == 3 && !strcmp(e, "Client already exists"))) continue;
    mw_prov_svc_admin_failed(svc, p, e, emit, ud);
    mw_prov_pending_unlink(svc, p);
    mw_prov_pending_free(p);
    return;
  }
  mw_prov_pending_unlink(svc, p);
  mw_prov_svc_commit_registration(svc, p, mw_prov_svc_now_s(now_ms), emit, ud);
  mw_prov_pending_free(p);
}

mw_status_t mw_prov_svc_handle_admin_response(mw_prov_service_t *svc, const void *payload, size_t len, int64_t now_ms,
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
    for (mw_prov_pending_t *p = svc->pending; p; p = p->next) {
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
