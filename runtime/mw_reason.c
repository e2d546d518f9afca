#include "mw_reason.h"

#include <stddef.h>

typedef struct {
  int code;
  const char *name;
  const char *text;
} reason_t;

/* MQTT 5.0 §2.4 reason codes that are errors, with what they mean for a device. */
static const reason_t v5[] = {
    {0x80, "Unspecified error", "the broker reported an unspecified error (AWS IoT also uses it for a rejected message "
                                "it gives no other reason for)"},
    {0x81, "Malformed Packet", "the broker could not parse a packet we sent"},
    {0x82, "Protocol Error", "the broker saw a protocol violation in what we sent"},
    {0x83, "Implementation specific error", "the broker refused it for a reason of its own"},
    {0x84, "Unsupported Protocol Version",
     "the broker does not accept MQTT 5 from this client; set broker.protocol = \"3.1.1\""},
    {0x85, "Client Identifier not valid",
     "the broker rejected the client id (AWS IoT: at most 128 bytes, and the policy must allow iot:Connect for it)"},
    {0x86, "Bad User Name or Password", "the broker rejected the credentials"},
    {0x87, "Not authorized",
     "not authorized: the thing's policy does not allow this (AWS IoT: iot:Connect for the client id, iot:Publish for "
     "the topic, iot:Subscribe for the filter)"},
    {0x88, "Server unavailable", "the broker is unavailable right now"},
    {0x89, "Server busy", "the broker is busy; try again later"},
    {0x8A, "Banned", "the broker has banned this client"},
    {0x8B, "Server shutting down", "the broker is shutting down"},
    {0x8C, "Bad authentication method", "the broker does not support the authentication method"},
    {0x8D, "Keep Alive timeout",
     "the broker heard nothing from us within 1.5 x the keepalive time (a stalled network or a blocked event loop)"},
    {0x8E, "Session taken over",
     "another client connected with the same client id (two devices or two processes share client_id)"},
    {0x8F, "Topic Filter invalid", "the broker does not accept that topic filter"},
    {0x90, "Topic Name invalid",
     "the broker does not accept that topic (AWS IoT: a reserved $aws topic this operation may not use, or too many "
     "levels)"},
    {0x91, "Packet Identifier in use", "the broker still holds a message with that packet identifier"},
    {0x92, "Packet Identifier not found", "the broker does not know that packet identifier"},
    {0x93, "Receive Maximum exceeded",
     "more QoS 1 messages were in flight than the broker accepts; lower limits.max_inflight"},
    {0x94, "Topic Alias invalid", "the broker rejected a topic alias"},
    {0x95, "Packet too large", "a packet was larger than the broker accepts (AWS IoT: 128 KB payloads)"},
    {0x96, "Message rate too high", "we published faster than the broker allows"},
    {0x97, "Quota exceeded",
     "a quota was exceeded (AWS IoT: 100 publishes/s and 512 KiB/s per connection, account-wide limits)"},
    {0x98, "Administrative action", "an administrator disconnected this client"},
    {0x99, "Payload format invalid", "the payload does not match its declared format"},
    {0x9A, "Retain not supported", "the broker does not accept retained messages here"},
    {0x9B, "QoS not supported", "the broker does not support that QoS (AWS IoT: QoS 0 and 1 only)"},
    {0x9C, "Use another server", "the broker asks the client to use another server"},
    {0x9D, "Server moved", "the broker has moved; update broker.host"},
    {0x9E, "Shared Subscriptions not supported", "the broker does not support shared subscriptions"},
    {0x9F, "Connection rate exceeded",
     "the client connects too often (AWS IoT: one CONNECT per second per client id)"},
    {0xA0, "Maximum connect time", "the connection reached the broker's maximum connection time"},
    {0xA1, "Subscription Identifiers not supported", "the broker does not support subscription identifiers"},
    {0xA2, "Wildcard Subscriptions not supported", "the broker does not support wildcard subscriptions"},
};

static const reason_t *find(int code) {
  for (size_t i = 0; i < sizeof v5 / sizeof v5[0]; i++)
    if (v5[i].code == code) return &v5[i];
  return NULL;
}

const char *mw_reason_name(int code) {
  if (code == 0) return "Success";
  const reason_t *r = find(code);
  return r ? r->name : NULL;
}

const char *mw_reason_explain(int code) {
  if (code == 0) return "success";
  const reason_t *r = find(code);
  if (r) return r->text;
  return code >= 0x80 ? "the broker reported an error code this client does not know"
                      : "the broker reported a success code";
}

bool mw_reason_is_error(int code) { return code >= 0x80; }

const char *mw_reason_connack3(int code) {
  switch (code) {
  case 0: return "connection accepted";
  case 1: return "the broker does not accept MQTT 3.1.1 (unacceptable protocol version)";
  case 2:
    return "the broker rejected the client id (identifier rejected; AWS IoT: at most 128 bytes, no '$' prefix)";
  case 3: return "the MQTT service is unavailable on the broker (server unavailable); retrying";
  case 4: return "the broker rejected the user name or password";
  case 5:
    return "the broker does not authorise this device (not authorised; AWS IoT: the certificate is inactive, not "
           "attached to a policy, or the policy does not allow iot:Connect for this client id)";
  default: return "the broker answered with a CONNACK code MQTT 3.1.1 does not define";
  }
}
