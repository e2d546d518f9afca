/*
** The local Fleet Provisioning service: AWS IoT's provisioning MQTT API over a signing CA, a
** SQLite store and the broker's dynamic-security plugin, with no MQTT in it. The caller
** (moonwire provisioning-service) subscribes to mw_prov_service_filters(), hands every
** message to mw_prov_service_handle() and publishes, at QoS 1, what the emit callback
** receives; it calls mw_prov_service_tick() about once a second.
**
** Requests and answers (aws-iot.md §2; the payload format is json):
**   $aws/certificates/create-from-csr/json        -> .../accepted | .../rejected
**   $aws/certificates/create/json                 -> .../accepted | .../rejected
**   $aws/provisioning-templates/{name}/provision/json -> .../accepted | .../rejected
**   moonwire/certificates/register/json           -> .../accepted | .../rejected
**     (Moonwire's own: registers a certificate issued by the service's CA with the JITP
**      template, the way AWS IoT does on a JITP device's first connection)
**
** Registering a thing changes the broker's access policy before it is answered: the
** service asks the dynamic-security plugin ($CONTROL/dynamic-security/v1) for the
** certificate's client, then creates or updates a role "provisioned/<thing>" holding the
** template's policies expanded for the thing, and a client whose username is the
** certificate's CN (mosquitto's identity of a TLS client) with that role. Only when the
** plugin has confirmed both, and the store has committed, does the device get its
** accepted answer; anything else is a rejected answer and changes nothing the device
** relies on.
*/
#ifndef MW_PROV_SERVICE_H
#define MW_PROV_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mw_prov_ca.h"
#include "mw_prov_store.h"
#include "mw_status.h"

#define MW_PROV_DYNSEC_TOPIC "$CONTROL/dynamic-security/v1"
#define MW_PROV_DYNSEC_RESPONSE "$CONTROL/dynamic-security/v1/response"
#define MW_PROV_REQUEST_MAX (64 * 1024) /* bytes of one request payload */

typedef struct {
  mw_prov_ca_t *ca;            /* signing CA (borrowed, required) */
  const char *db_path;         /* required; ":memory:" for tests */
  const char *templates_dir;   /* DIR/NAME.json are the templates; NULL: none */
  const char *policy_path;     /* the broker's policy description; required with broker_admin */
  bool broker_admin;           /* update the broker's dynamic-security configuration */
  const char *jitp_template;   /* template for moonwire/certificates/register; NULL: off */
  bool create_keys;            /* serve CreateKeysAndCertificate (the private key travels over MQTT) */
  int cert_days;               /* validity of issued certificates; 0: 825 */
  int token_ttl_s;             /* ownership token lifetime; 0: 3600 (AWS IoT: one hour) */
  int admin_timeout_ms;        /* wait for the dynamic-security plugin; 0: 10000 */
  const char *instance;        /* tag of this service in correlationData; NULL: random */
} mw_prov_config_t;

typedef struct mw_prov_service mw_prov_service_t;

/* One outgoing message (a response or a plugin command); borrowed for the call only. */
typedef void (*mw_prov_emit_fn)(void *ud, const char *topic, const char *payload, size_t len);

/*
** Opens the store, loads every template of templates_dir and the policy description.
** A broken template or policy file fails the open with a message naming it.
*/
mw_status_t mw_prov_service_open(const mw_prov_config_t *cfg, mw_prov_service_t **out, char *err, size_t errlen);
void mw_prov_service_close(mw_prov_service_t *svc);

/* Reloads templates and the policy description (SIGHUP). On failure the old ones stay. */
mw_status_t mw_prov_service_reload(mw_prov_service_t *svc, char *err, size_t errlen);

/* NULL-terminated topic filters to subscribe to (QoS 1). */
const char *const *mw_prov_service_filters(const mw_prov_service_t *svc);

/*
** Handles one message. Returns MW_OK when it was a request (answered now, or later once
** the broker plugin has answered) or a plugin response of ours, MW_ERR_INVALID when the
** topic is none of ours (nothing emitted), MW_ERR_UNSUPPORTED for a CBOR request (the local
** service speaks JSON only; nothing emitted).
*/
mw_status_t mw_prov_service_handle(mw_prov_service_t *svc, const char *topic, size_t topic_len, const void *payload,
                                   size_t len, int64_t now_ms, mw_prov_emit_fn emit, void *ud);

/* Times out plugin requests (their devices get a 500) and prunes expired state. */
void mw_prov_service_tick(mw_prov_service_t *svc, int64_t now_ms, mw_prov_emit_fn emit, void *ud);

/*
** Asks the plugin a harmless question, to learn at start-up whether this identity may
** administer the broker. mw_prov_service_admin_state(): 1 answered, 0 not (yet), -1 no
** answer within the timeout.
*/
void mw_prov_service_probe(mw_prov_service_t *svc, int64_t now_ms, mw_prov_emit_fn emit, void *ud);
int mw_prov_service_admin_state(const mw_prov_service_t *svc);

typedef struct {
  uint64_t requests, accepted, rejected, pending;
} mw_prov_stats_t;
void mw_prov_service_stats(const mw_prov_service_t *svc, mw_prov_stats_t *out);

/* The store (borrowed), e.g. for listing. */
mw_prov_store_t *mw_prov_service_store(mw_prov_service_t *svc);

#endif
