#include "mw_config.h"

#include <stdlib.h>
#include <string.h>

void mw_config_defaults(mw_config_t *c) {
  memset(c, 0, sizeof *c);
  c->broker.port = 8883;
  c->broker.keepalive = 60;
  c->broker.clean_session = true;
  c->will.qos = 0;
  c->reconnect.base_ms = 1000;
  c->reconnect.cap_ms = 60000;
  c->limits.max_inflight = 100;       /* AWS IoT: 100 unacknowledged outbound QoS 1 publishes */
  c->limits.max_payload = 128 * 1024; /* AWS IoT: 128 KB payloads */
  c->limits.lua_memory = 32u << 20;
  c->se.address = 0x30;
  c->lua.budget_ms = 200;
  c->lua.load_budget_ms = 1000;
  c->lua.quarantine_after = 3;
  c->lua.watch = true;
  c->lua.debounce_ms = 50;
  c->repl.enabled = true;
}

void mw_config_free(mw_config_t *c) {
  free(c->path);
  free(c->thing);
  free(c->client_id);
  free(c->broker.host);
  free(c->broker.alpn);
  free(c->tls.ca);
  free(c->tls.cert);
  free(c->tls.key);
  free(c->will.topic);
  free(c->will.payload);
  free(c->se.device);
  free(c->se.sim);
  free(c->pkcs11.module);
  free(c->log_level);
  free(c->repl.socket);
  memset(c, 0, sizeof *c);
}

bool mw_config_set_broker(mw_config_t *c, const char *hostport) {
  const char *colon = strrchr(hostport, ':');
  if (!colon || colon == hostport || !colon[1]) return false;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port <= 0 || port > 65535) return false;
  size_t n = (size_t)(colon - hostport);
  /* [::1]:8883 */
  if (hostport[0] == '[' && n >= 2 && hostport[n - 1] == ']') {
    hostport++;
    n -= 2;
  }
  char *host = strndup(hostport, n);
  if (!host) return false;
  free(c->broker.host);
  c->broker.host = host;
  c->broker.port = (int)port;
  return true;
}
