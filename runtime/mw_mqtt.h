/*
** The MQTT connection: libmosquitto driven from the libuv loop through its socket
** (mosquitto_socket + loop_read/loop_write/loop_misc; no libmosquitto thread).
**
** libmosquitto's callbacks only copy what they report into a queue; the queue is
** drained after each libmosquitto call returns, and only then is the owner's event
** function called. So the owner (the Lua bindings) never runs inside a libmosquitto
** frame and may call back into this module freely from its event function.
**
** The module owns reconnection (exponential backoff with full jitter, also after a
** refused CONNACK) and the set of subscriptions, which it restores after every
** reconnect.
**
** Every connection attempt starts from a fresh libmosquitto client: nothing libmosquitto
** queued on an earlier connection survives into the next one. Whoever wants messages
** sent again (the outbox) hands them over during the PRECONNECT event with
** mw_mqtt_resend(), and libmosquitto then sends them with the DUP flag right after
** CONNACK. A connection on which nothing has been received for 1.5 x keepalive (the
** rule AWS IoT applies on its side) is declared dead and dropped.
*/
#ifndef MW_MQTT_H
#define MW_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mw_status.h"
#include "mw_tls.h"

typedef struct mw_mqtt mw_mqtt_t;

typedef enum {
  MW_MQTT_EV_CONNECT = 1, /* CONNACK accepted; session_present set */
  MW_MQTT_EV_CONNECT_FAILED, /* attempt failed (TCP, TLS, CONNACK refused); reason set; a retry is scheduled */
  MW_MQTT_EV_DISCONNECT,  /* an established session ended; reason set; rc 0 means we asked for it */
  MW_MQTT_EV_MESSAGE,
  MW_MQTT_EV_PUBACK,      /* mid of a QoS 1 publish the broker acknowledged (or a QoS 0 one written) */
  MW_MQTT_EV_SUBACK,      /* topic = the filter, granted[0] = QoS granted or 0x80 (refused) */
  MW_MQTT_EV_STOPPED,     /* mw_mqtt_stop finished: DISCONNECT sent and socket closed */
  MW_MQTT_EV_INFLIGHT_LOST, /* unacknowledged QoS 1 publishes were dropped: no PUBACK will come for
                               them, and their mids will be reused */
  MW_MQTT_EV_PRECONNECT,  /* emitted synchronously right before each connection attempt, on a fresh
                             client: the only time mw_mqtt_resend() is accepted */
} mw_mqtt_event_type_t;

typedef struct {
  mw_mqtt_event_type_t type;
  int rc;              /* CONNACK code, or libmosquitto error for failures */
  bool session_present;
  int mid;             /* PUBACK: rc is 0, or the MQTT 5 reason code (>= 0x80) of a refused message */
  const char *topic;   /* MESSAGE; borrowed for the duration of the event */
  const void *payload;
  size_t payloadlen;
  int qos;
  bool retain;
  int dup;             /* 1/0, or -1 when libmosquitto does not tell */
  const int *granted;  /* SUBACK */
  int granted_count;
  const char *reason;  /* CONNECT_FAILED / DISCONNECT: plain-words explanation */
  bool closed_by_broker; /* DISCONNECT: the broker (or something on the path) closed or reset the
                            connection, as opposed to silence (keepalive) or our own request */
} mw_mqtt_event_t;

typedef void (*mw_mqtt_event_fn)(void *ud, const mw_mqtt_event_t *ev);

typedef struct {
  const char *host;
  int port;
  const char *client_id;
  int keepalive;               /* seconds */
  bool clean_session;
  mw_tls_ctx_t *tls;           /* required: the runtime always speaks mutual TLS */
  const char *will_topic;      /* NULL: no will */
  const void *will_payload;
  size_t will_len;
  int will_qos;
  bool will_retain;
  uint32_t backoff_base_ms;    /* 0 = 1000 */
  uint32_t backoff_cap_ms;     /* 0 = 60000 */
  uint32_t backoff_floor_ms;   /* >= 5000 when the TLS key is in a secure element */
  int max_inflight;            /* bound on unacknowledged QoS 1 publishes; 0 = 100 (AWS IoT's limit) */
  size_t max_payload;          /* 0 = 128 KiB (AWS IoT's limit) */
  int protocol;                /* 4 = MQTT 3.1.1 (0 means this), 5 = MQTT 5 */
} mw_mqtt_config_t;

mw_status_t mw_mqtt_new(uv_loop_t *loop, const mw_mqtt_config_t *cfg, mw_mqtt_event_fn fn, void *ud,
                        mw_mqtt_t **out, char *err, size_t errlen);
/* Starts connecting (and keeps reconnecting until stopped). */
mw_status_t mw_mqtt_start(mw_mqtt_t *m);
/* Sends DISCONNECT if connected, closes, emits MW_MQTT_EV_STOPPED once done; no reconnect after. */
void mw_mqtt_stop(mw_mqtt_t *m);
/* Frees everything; the loop must run once more to close the libuv handles. */
void mw_mqtt_free(mw_mqtt_t *m);

bool mw_mqtt_connected(const mw_mqtt_t *m);
/* The in-flight bound (max_inflight) and the MQTT protocol version (4 or 5) in effect. */
int mw_mqtt_max_inflight(const mw_mqtt_t *m);
int mw_mqtt_protocol(const mw_mqtt_t *m);

/*
** Publishes; the topic must already be checked. QoS 2 is refused (AWS IoT has none).
** *mid receives the message id used for the PUBACK event.
*/
mw_status_t mw_mqtt_publish(mw_mqtt_t *m, const char *topic, const void *payload, size_t len, int qos,
                            bool retain, int *mid, char *err, size_t errlen);

/*
** During MW_MQTT_EV_PRECONNECT only: queues a QoS 1 message that may already have reached
** the broker on an earlier connection. libmosquitto sends it with DUP set right after
** CONNACK, before anything published afterwards. *mid identifies its PUBACK.
*/
mw_status_t mw_mqtt_resend(mw_mqtt_t *m, const char *topic, const void *payload, size_t len, bool retain, int *mid,
                           char *err, size_t errlen);

/*
** Adds a reference to a filter in the subscription set. The first reference sends
** SUBSCRIBE (now if connected, else on connect); *mid is 0 when nothing was sent.
** A filter asked for at a higher QoS is re-subscribed at that QoS.
*/
mw_status_t mw_mqtt_subscribe(mw_mqtt_t *m, const char *filter, int qos, int *mid);
/* Drops a reference; the last one sends UNSUBSCRIBE. */
mw_status_t mw_mqtt_unsubscribe(mw_mqtt_t *m, const char *filter);

typedef struct {
  uint64_t msgs_in, msgs_out, bytes_in, bytes_out, connects, connect_failures, disconnects;
  int inflight;
  int subscriptions;
  /* diagnostics: why connections failed or ended */
  uint64_t connack_refused;    /* CONNACK with a refusal code */
  uint64_t tls_failures;       /* attempts that failed in the TLS handshake (certificates, alerts) */
  uint64_t broker_closed;      /* established connections the broker closed or reset */
  uint64_t keepalive_timeouts; /* established connections dropped for silence (1.5 x keepalive) */
  uint64_t puback_errors;      /* MQTT 5 PUBACKs with an error reason code */
  int last_connack;            /* last CONNACK code or reason code, -1 before the first */
  int last_disconnect_reason;  /* MQTT 5 DISCONNECT reason code from the broker, -1 if none */
} mw_mqtt_stats_t;
void mw_mqtt_get_stats(const mw_mqtt_t *m, mw_mqtt_stats_t *st);

/* Iterates the subscription set (filter, qos, refcount). */
typedef void (*mw_mqtt_sub_fn)(void *ud, const char *filter, int qos, int refs);
void mw_mqtt_each_subscription(const mw_mqtt_t *m, mw_mqtt_sub_fn fn, void *ud);

#endif
