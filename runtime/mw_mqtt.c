#include "mw_mqtt.h"

#include <errno.h>
#include <mosquitto.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>

#include "mw_backoff.h"
#include "mw_log.h"
#include "mw_reason.h"

#define COMP "mqtt"
#define DEFAULT_CONNECT_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 2000

typedef enum { ST_IDLE, ST_CONNECTING, ST_CONNECTED, ST_WAIT_RETRY, ST_STOPPING, ST_STOPPED } conn_state_t;

/* A copied libmosquitto callback, waiting for the loop to hand it to the owner. */
typedef struct qev {
  struct qev *next;
  mw_mqtt_event_t ev;
  int sys_errno; /* DISCONNECT: errno when libmosquitto reported it */
  int granted[8];
  /* MESSAGE: topic and payload follow in the same allocation */
} qev_t;

typedef struct {
  char *filter;
  int qos;
  int refs;
  int pending_mid; /* SUBSCRIBE awaiting its SUBACK, 0 if none */
} sub_t;

struct mw_mqtt {
  uv_loop_t *loop;
  struct mosquitto *mosq;
  mw_mqtt_config_t cfg;
  char *host, *client_id, *will_topic;
  void *will_payload;
  mw_mqtt_event_fn fn;
  void *ud;

  uv_poll_t *poll;
  int poll_fd;
  int poll_events;
  uv_timer_t misc_timer;  /* loop_misc: keepalive pings and timeouts */
  uv_timer_t retry_timer; /* reconnect delay, connect timeout, stop timeout */
  int open_handles;
  bool freeing;

  conn_state_t state;
  bool used;            /* the libmosquitto client has made an attempt: reset it before the next */
  bool preconnect;      /* inside the PRECONNECT event: mw_mqtt_resend is accepted */
  uint64_t last_inbound_ms; /* loop time of the last bytes from the broker */
  mw_backoff_t backoff;
  bool connack_refused; /* a refused CONNACK was reported; swallow the disconnect that follows */
  int connect_errno;    /* errno libmosquitto left during the connection attempt */
  char last_reason[640];

  qev_t *qhead, *qtail;
  bool draining;

  sub_t *subs;
  int nsubs, capsubs;

  uint8_t qos1_mids[65536 / 8]; /* mids of QoS 1 publishes awaiting PUBACK */
  mw_mqtt_stats_t stats;
};

static void sync_poll(mw_mqtt_t *m);
static void drain(mw_mqtt_t *m);
static void schedule_retry(mw_mqtt_t *m);
static void abort_attempt(mw_mqtt_t *m, int rc, const char *reason);
static void connect_failed(mw_mqtt_t *m, int rc, const char *reason);
static const char *explain(mw_mqtt_t *m, int rc, int e, char *buf, size_t len);
static void reset_client(mw_mqtt_t *m);

/* ---------------------------------------------------------------- queue */

static void enqueue(mw_mqtt_t *m, qev_t *q) {
  q->next = NULL;
  if (m->qtail) m->qtail->next = q;
  else m->qhead = q;
  m->qtail = q;
}

static qev_t *new_event(mw_mqtt_event_type_t type, size_t extra) {
  qev_t *q = calloc(1, sizeof *q + extra);
  if (q) q->ev.type = type;
  return q;
}

/*
** libmosquitto 2.0 does not expose the DUP flag of a received PUBLISH; it sits in the
** private struct around the public message. We read it only for the 2.0 series whose
** layout we know, and report "unknown" (-1) for any other version.
*/
struct mosq20_message_all {
  void *next, *prev, *properties;
  time_t timestamp;
  int state;
  bool dup;
  struct mosquitto_message msg;
};
static int dup_layout_known = -1;

static int message_dup(const struct mosquitto_message *msg) {
  if (dup_layout_known < 0) {
    int major, minor, rev;
    mosquitto_lib_version(&major, &minor, &rev);
    dup_layout_known = major == 2 && minor == 0;
  }
  if (!dup_layout_known) return -1;
  const struct mosq20_message_all *all =
      (const void *)((const char *)msg - offsetof(struct mosq20_message_all, msg));
  return all->dup ? 1 : 0;
}

/* ---------------------------------------------------- libmosquitto callbacks (copy only) */

static void cb_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props) {
  (void)mosq;
  (void)props;
  mw_mqtt_t *m = obj;
  qev_t *q = new_event(MW_MQTT_EV_CONNECT, 0);
  if (!q) return;
  q->ev.rc = rc;
  q->ev.session_present = (flags & 1) != 0;
  enqueue(m, q);
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props) {
  (void)mosq;
  (void)props;
  mw_mqtt_t *m = obj;
  int e = errno;
  qev_t *q = new_event(MW_MQTT_EV_DISCONNECT, 0);
  if (!q) return;
  q->ev.rc = rc;
  q->sys_errno = e;
  enqueue(m, q);
}

static void cb_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props) {
  (void)mosq;
  (void)props;
  mw_mqtt_t *m = obj;
  unsigned idx = (unsigned)mid & 0xFFFF;
  if (!(m->qos1_mids[idx / 8] & (1u << (idx % 8)))) return; /* QoS 0: nothing to report */
  m->qos1_mids[idx / 8] &= (uint8_t) ~(1u << (idx % 8));
  if (m->stats.inflight > 0) m->stats.inflight--;
  qev_t *q = new_event(MW_MQTT_EV_PUBACK, 0);
  if (!q) return;
  q->ev.mid = mid;
  q->ev.rc = reason;
  if (mw_reason_is_error(reason)) m->stats.puback_errors++;
  enqueue(m, q);
}

static void cb_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg) {
  (void)mosq;
  mw_mqtt_t *m = obj;
  size_t tlen = strlen(msg->topic);
  size_t plen = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
  qev_t *q = new_event(MW_MQTT_EV_MESSAGE, tlen + 1 + plen + 1);
  if (!q) {
    MW_LOGE(COMP, "out of memory: dropped a message on %s", msg->topic);
    return;
  }
  char *topic = (char *)(q + 1);
  char *payload = topic + tlen + 1;
  memcpy(topic, msg->topic, tlen + 1);
  if (plen) memcpy(payload, msg->payload, plen);
  payload[plen] = '\0';
  q->ev.topic = topic;
  q->ev.payload = payload;
  q->ev.payloadlen = plen;
  q->ev.qos = msg->qos;
  q->ev.retain = msg->retain;
  q->ev.mid = msg->mid;
  q->ev.dup = message_dup(msg);
  m->stats.msgs_in++;
  m->stats.bytes_in += plen;
  enqueue(m, q);
}

static void cb_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted) {
  (void)mosq;
  mw_mqtt_t *m = obj;
  const char *filter = "";
  for (int i = 0; i < m->nsubs; i++)
    if (m->subs[i].pending_mid == mid) {
      filter = m->subs[i].filter;
      m->subs[i].pending_mid = 0;
    }
  size_t flen = strlen(filter);
  qev_t *q = new_event(MW_MQTT_EV_SUBACK, flen + 1);
  if (!q) return;
  memcpy(q + 1, filter, flen + 1);
  q->ev.topic = (const char *)(q + 1);
  q->ev.mid = mid;
  q->ev.granted_count = count > 8 ? 8 : count;
  memcpy(q->granted, granted, sizeof(int) * (size_t)q->ev.granted_count);
  q->ev.granted = q->granted;
  enqueue(m, q);
}

/* ---------------------------------------------------------------- libuv glue */

static void poll_closed(uv_handle_t *h) {
  free(h);
}

static void handle_closed(uv_handle_t *h) {
  mw_mqtt_t *m = h->data;
  if (--m->open_handles == 0 && m->freeing) free(m);
}

static void close_poll(mw_mqtt_t *m) {
  if (!m->poll) return;
  uv_poll_stop(m->poll);
  uv_close((uv_handle_t *)m->poll, poll_closed);
  m->poll = NULL;
  m->poll_fd = -1;
}

static bool disconnect_queued(const mw_mqtt_t *m) {
  for (const qev_t *q = m->qhead; q; q = q->next)
    if (q->ev.type == MW_MQTT_EV_DISCONNECT) return true;
  return false;
}

/*
** Socket events while the TCP connect and TLS handshake are under way. libmosquitto
** 2.0 cannot give up on a half-open connection by itself: after a refused TCP connect
** or a silent peer its TLS code keeps reporting "try again" forever. So we look at
** the socket error ourselves and abort the attempt (see abort_attempt).
*/
/* errno values that mean the TCP connection itself is gone. */
static bool network_errno(int e) {
  return e == ECONNREFUSED || e == ECONNRESET || e == ECONNABORTED || e == EPIPE || e == ENETUNREACH ||
         e == EHOSTUNREACH || e == ETIMEDOUT || e == ENOTCONN;
}

/*
** Whether the half-open socket has failed, and why. The kernel reports a failed
** connect once (SO_ERROR or the errno of the first write); OpenSSL's write inside
** libmosquitto often consumes it, so we also keep the errno libmosquitto left behind.
*/
static int socket_failure(mw_mqtt_t *m, int fd) {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
  if (soerr) return soerr;
  if (network_errno(m->connect_errno)) return m->connect_errno;
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0 && errno == ENOTCONN) return ENOTCONN;
  return 0;
}

static void connecting_io(mw_mqtt_t *m, int status) {
  int fd = mosquitto_socket(m->mosq);
  int failure = fd >= 0 ? socket_failure(m, fd) : 0;
  if (status < 0 || failure) {
    char reason[300];
    snprintf(reason, sizeof reason, "cannot connect to %s:%d: %s", m->host, m->cfg.port,
             failure ? strerror(failure) : uv_strerror(status));
    abort_attempt(m, MOSQ_ERR_ERRNO, reason);
    return;
  }
  errno = 0;
  int rc = mosquitto_loop_read(m->mosq, 1); /* drives the handshake, then reads CONNACK */
  if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0) rc = mosquitto_loop_write(m->mosq, 1);
  m->connect_errno = errno;
  m->last_inbound_ms = uv_now(m->loop);
  if (rc != MOSQ_ERR_SUCCESS && m->state == ST_CONNECTING && !disconnect_queued(m)) {
    char buf[512], reason[600];
    snprintf(reason, sizeof reason, "cannot connect to %s:%d: %s", m->host, m->cfg.port,
             explain(m, rc, m->connect_errno, buf, sizeof buf));
    if (mosquitto_socket(m->mosq) >= 0) {
      abort_attempt(m, rc, reason);
    } else {
      uv_timer_stop(&m->retry_timer);
      sync_poll(m);
      connect_failed(m, rc, reason);
    }
    return;
  }
  drain(m);
  sync_poll(m);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  mw_mqtt_t *m = h->data;
  if (m->state == ST_CONNECTING) {
    connecting_io(m, status);
    return;
  }
  /* On a poll error let libmosquitto find out what is wrong with the socket. */
  if (status < 0) events = UV_READABLE | UV_WRITABLE;
  /* loop_read also drains packets TLS has already decrypted, which epoll cannot see. */
  if (events & UV_READABLE) {
    m->last_inbound_ms = uv_now(m->loop);
    mosquitto_loop_read(m->mosq, 1);
  }
  if ((events & UV_WRITABLE) && mosquitto_socket(m->mosq) >= 0) mosquitto_loop_write(m->mosq, 1);
  drain(m);
  sync_poll(m);
}

/* Keeps exactly one poll handle on libmosquitto's current socket, with the events it needs. */
static void sync_poll(mw_mqtt_t *m) {
  if (m->freeing) return;
  int fd = mosquitto_socket(m->mosq);
  if (m->poll && m->poll_fd != fd) close_poll(m);
  if (fd < 0) return;
  if (!m->poll) {
    m->poll = malloc(sizeof *m->poll);
    if (!m->poll || uv_poll_init_socket(m->loop, m->poll, fd) != 0) {
      free(m->poll);
      m->poll = NULL;
      MW_LOGE(COMP, "cannot watch the broker socket");
      return;
    }
    m->poll->data = m;
    m->poll_fd = fd;
    m->poll_events = 0;
  }
  int want = UV_READABLE;
  /* During the handshake want_write is libmosquitto's "TLS wants to write" (which also
     covers the TCP connect finishing); afterwards it means packets are queued. */
  if (mosquitto_want_write(m->mosq)) want |= UV_WRITABLE;
  if (want != m->poll_events) {
    uv_poll_start(m->poll, want, on_poll);
    m->poll_events = want;
  }
}

static void drop_dead_link(mw_mqtt_t *m);

static void on_misc(uv_timer_t *t) {
  mw_mqtt_t *m = t->data;
  /* AWS IoT gives up on a client after 1.5 x keepalive of silence; we hold the broker to the
     same rule (libmosquitto alone would wait up to 2 x keepalive). While we publish, silence
     also means no PUBACKs: the link is dead even if TCP has not noticed. */
  if (m->state == ST_CONNECTED && m->cfg.keepalive > 0 &&
      uv_now(m->loop) - m->last_inbound_ms > (uint64_t)m->cfg.keepalive * 1500) {
    drop_dead_link(m);
    return;
  }
  if (m->state == ST_CONNECTED || m->state == ST_STOPPING) {
    mosquitto_loop_misc(m->mosq);
    drain(m);
    sync_poll(m);
  }
}

/* ---------------------------------------------------------------- connection */

static void emit(mw_mqtt_t *m, const mw_mqtt_event_t *ev) {
  if (m->fn) m->fn(m->ud, ev);
}

static void emit_simple(mw_mqtt_t *m, mw_mqtt_event_type_t type, int rc, const char *reason) {
  mw_mqtt_event_t ev = {0};
  ev.type = type;
  ev.rc = rc;
  ev.reason = reason;
  emit(m, &ev);
}

/* Whether a lost connection was closed or reset from the other end (broker or path), as
   opposed to silence or a local problem. libmosquitto reports a TLS connection reset as
   errno EPROTO. */
static bool closed_from_outside(int rc, int e) {
  if (rc == MOSQ_ERR_CONN_LOST) return true;
  if (rc == MOSQ_ERR_ERRNO) return e == ECONNRESET || e == EPIPE || e == EPROTO || e == ECONNABORTED;
  return rc >= 0x80; /* MQTT 5 DISCONNECT sent by the broker, with its reason code */
}

static const char *explain(mw_mqtt_t *m, int rc, int e, char *buf, size_t len) {
  char tls[400];
  /* close_notify is TLS's orderly goodbye: the broker closing, not a TLS problem. */
  if (mw_tls_explain(m->cfg.tls, tls, sizeof tls) && !strstr(tls, "close notify")) {
    snprintf(buf, len, "%s", tls);
  } else if (rc >= 0x80) {
    const char *name = mw_reason_name(rc);
    snprintf(buf, len, "the broker disconnected us with reason %s (0x%02X): %s", name ? name : "?", rc,
             mw_reason_explain(rc));
  } else if (rc == MOSQ_ERR_ERRNO && (e == ECONNRESET || e == EPROTO || e == EPIPE)) {
    /* A broker that refuses the client certificate sends an alert and closes; when the
       close turns into a reset the alert is lost with it, so say what it most likely was. */
    snprintf(buf, len, "the broker closed the connection abruptly (%s)%s", strerror(e),
             m->state == ST_CONNECTING
                 ? " before accepting the session: it may have rejected this device's certificate or client ID"
                 : "");
  } else if (rc == MOSQ_ERR_ERRNO) {
    snprintf(buf, len, "%s", strerror(e));
  } else if (rc == MOSQ_ERR_KEEPALIVE) {
    snprintf(buf, len, "no answer from the broker within the keepalive time (%d s)", m->cfg.keepalive);
  } else if (rc == MOSQ_ERR_CONN_LOST) {
    snprintf(buf, len, "the broker closed the connection");
  } else {
    snprintf(buf, len, "%s", mosquitto_strerror(rc));
  }
  return buf;
}

static void connect_failed(mw_mqtt_t *m, int rc, const char *reason) {
  char tls[32];
  m->stats.connect_failures++;
  if (mw_tls_explain(m->cfg.tls, tls, sizeof tls)) m->stats.tls_failures++;
  snprintf(m->last_reason, sizeof m->last_reason, "%s", reason);
  m->state = ST_WAIT_RETRY;
  emit_simple(m, MW_MQTT_EV_CONNECT_FAILED, rc, reason);
  schedule_retry(m);
}

static void on_connect_timeout(uv_timer_t *t) {
  mw_mqtt_t *m = t->data;
  if (m->state != ST_CONNECTING) return;
  char reason[160];
  snprintf(reason, sizeof reason, "no CONNACK from %s:%d within %d s", m->host, m->cfg.port,
           DEFAULT_CONNECT_TIMEOUT_MS / 1000);
  abort_attempt(m, MOSQ_ERR_CONN_LOST, reason);
}

static void do_connect(mw_mqtt_t *m) {
  /* Each attempt starts from a fresh client, so retransmission stays the owner's decision. */
  if (m->used) reset_client(m);
  m->used = true;
  m->state = ST_CONNECTING;
  m->connack_refused = false;
  m->preconnect = true;
  emit_simple(m, MW_MQTT_EV_PRECONNECT, 0, NULL);
  m->preconnect = false;
  if (m->state != ST_CONNECTING) return; /* stopped from the event */
  mw_tls_reset_diag(m->cfg.tls);
  errno = 0;
  int rc = mosquitto_connect_async(m->mosq, m->host, m->cfg.port, m->cfg.keepalive);
  if (rc != MOSQ_ERR_SUCCESS) {
    char buf[512], reason[600];
    snprintf(reason, sizeof reason, "cannot connect to %s:%d: %s", m->host, m->cfg.port,
             explain(m, rc, errno, buf, sizeof buf));
    sync_poll(m);
    connect_failed(m, rc, reason);
    return;
  }
  m->connect_errno = errno;
  uv_timer_start(&m->retry_timer, on_connect_timeout, DEFAULT_CONNECT_TIMEOUT_MS, 0);
  sync_poll(m);
  drain(m);
}

static void on_retry(uv_timer_t *t) {
  mw_mqtt_t *m = t->data;
  if (m->state == ST_WAIT_RETRY) do_connect(m);
}

static void schedule_retry(mw_mqtt_t *m) {
  uint32_t delay = mw_backoff_next(&m->backoff);
  MW_LOGI(COMP, "reconnecting in %.1f s", delay / 1000.0);
  uv_timer_start(&m->retry_timer, on_retry, delay, 0);
}

static void send_subscribe(mw_mqtt_t *m, sub_t *s, int *mid) {
  int id = 0;
  int rc = mosquitto_subscribe(m->mosq, &id, s->filter, s->qos);
  if (rc != MOSQ_ERR_SUCCESS) MW_LOGW(COMP, "SUBSCRIBE %s failed: %s", s->filter, mosquitto_strerror(rc));
  else s->pending_mid = id;
  if (mid) *mid = id;
}

static void handle_connect(mw_mqtt_t *m, qev_t *q) {
  uv_timer_stop(&m->retry_timer);
  m->stats.last_connack = q->ev.rc;
  if (q->ev.rc != 0) {
    char reason[600];
    if (m->cfg.protocol == 5) {
      const char *name = mw_reason_name(q->ev.rc);
      snprintf(reason, sizeof reason, "the broker refused the connection: %s (CONNACK reason 0x%02X): %s",
               name ? name : "unknown reason", q->ev.rc, mw_reason_explain(q->ev.rc));
    } else {
      snprintf(reason, sizeof reason, "the broker refused the connection: %s (CONNACK %d): %s",
               mosquitto_connack_string(q->ev.rc), q->ev.rc, mw_reason_connack3(q->ev.rc));
    }
    m->connack_refused = true;
    m->stats.connack_refused++;
    connect_failed(m, q->ev.rc, reason);
    return;
  }
  m->state = ST_CONNECTED;
  m->last_inbound_ms = uv_now(m->loop);
  m->stats.connects++;
  mw_backoff_reset(&m->backoff);
  m->last_reason[0] = '\0';
  /* Restore every subscription: with a clean session the broker remembers none. */
  for (int i = 0; i < m->nsubs; i++) send_subscribe(m, &m->subs[i], NULL);
  emit(m, &q->ev);
}

static void handle_disconnect(mw_mqtt_t *m, qev_t *q) {
  char buf[512], reason[600];
  switch (m->state) {
  case ST_CONNECTED: {
    m->stats.disconnects++;
    bool outside = closed_from_outside(q->ev.rc, q->sys_errno);
    if (outside) m->stats.broker_closed++;
    if (q->ev.rc == MOSQ_ERR_KEEPALIVE) m->stats.keepalive_timeouts++;
    if (q->ev.rc >= 0x80) m->stats.last_disconnect_reason = q->ev.rc;
    snprintf(reason, sizeof reason, "connection lost: %s", explain(m, q->ev.rc, q->sys_errno, buf, sizeof buf));
    snprintf(m->last_reason, sizeof m->last_reason, "%s", reason);
    m->state = ST_WAIT_RETRY;
    mw_mqtt_event_t ev = {0};
    ev.type = MW_MQTT_EV_DISCONNECT;
    ev.rc = q->ev.rc;
    ev.reason = reason;
    ev.closed_by_broker = outside;
    emit(m, &ev);
    if (m->state == ST_WAIT_RETRY) schedule_retry(m);
    break;
  }
  case ST_CONNECTING:
    uv_timer_stop(&m->retry_timer);
    snprintf(reason, sizeof reason, "cannot connect to %s:%d: %s", m->host, m->cfg.port,
             explain(m, q->ev.rc, q->sys_errno, buf, sizeof buf));
    connect_failed(m, q->ev.rc, reason);
    break;
  case ST_STOPPING:
    uv_timer_stop(&m->retry_timer);
    m->state = ST_STOPPED;
    emit_simple(m, MW_MQTT_EV_DISCONNECT, 0, "disconnected on request");
    emit_simple(m, MW_MQTT_EV_STOPPED, 0, NULL);
    break;
  default: /* WAIT_RETRY after a refused CONNACK, or already stopped */
    break;
  }
}

/* Hands queued events to the owner, in order. Re-entrant calls return at once: the
   outer loop picks up whatever the owner's calls queued. */
static void drain(mw_mqtt_t *m) {
  if (m->draining) return;
  m->draining = true;
  while (m->qhead && !m->freeing) {
    qev_t *q = m->qhead;
    m->qhead = q->next;
    if (!m->qhead) m->qtail = NULL;
    switch (q->ev.type) {
    case MW_MQTT_EV_CONNECT: handle_connect(m, q); break;
    case MW_MQTT_EV_DISCONNECT: handle_disconnect(m, q); break;
    default: emit(m, &q->ev); break;
    }
    free(q);
  }
  m->draining = false;
}

/* Options and callbacks of the libmosquitto object; applied again after a reset. */
static mw_status_t client_setup(mw_mqtt_t *m, char *err, size_t errlen) {
  mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, m->cfg.protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
  mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_int_option(m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
  mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, mw_tls_ctx_ssl(m->cfg.tls));
  /* We bound the window ourselves; libmosquitto's own queue behind it degrades badly. */
  mosquitto_max_inflight_messages_set(m->mosq, 0);
  if (m->will_topic) {
    int rc = mosquitto_will_set(m->mosq, m->will_topic, (int)m->cfg.will_len, m->will_payload, m->cfg.will_qos,
                                m->cfg.will_retain);
    if (rc != MOSQ_ERR_SUCCESS) {
      snprintf(err, errlen, "will: %s", mosquitto_strerror(rc));
      return MW_ERR_INVALID;
    }
  }
  /* The _v5 callbacks also serve MQTT 3.1.1 (reason codes are then 0 or CONNACK codes). */
  mosquitto_connect_v5_callback_set(m->mosq, cb_connect);
  mosquitto_disconnect_v5_callback_set(m->mosq, cb_disconnect);
  mosquitto_publish_v5_callback_set(m->mosq, cb_publish);
  mosquitto_message_callback_set(m->mosq, cb_message);
  mosquitto_subscribe_callback_set(m->mosq, cb_subscribe);
  return MW_OK;
}

/*
** Gives up on the current connection attempt. libmosquitto has no call that closes a
** half-open connection, so the client object is re-initialised (which closes its
** socket) and set up again. QoS 1 messages still unacknowledged from an earlier session
** are dropped with it; they are counted in the stats as lost.
*/
static void reset_client(mw_mqtt_t *m) {
  char err[128];
  close_poll(m);
  int lost = m->stats.inflight;
  m->stats.inflight = 0;
  memset(m->qos1_mids, 0, sizeof m->qos1_mids);
  mosquitto_reinitialise(m->mosq, m->client_id, m->cfg.clean_session, m);
  if (client_setup(m, err, sizeof err) != MW_OK) MW_LOGE(COMP, "%s", err);
  m->used = false;
  /* The fresh client numbers messages from 1 again: whatever waits for a PUBACK must let go. */
  if (lost) emit_simple(m, MW_MQTT_EV_INFLIGHT_LOST, lost, NULL);
}

static void abort_attempt(mw_mqtt_t *m, int rc, const char *reason) {
  uv_timer_stop(&m->retry_timer);
  reset_client(m);
  if (m->state == ST_CONNECTING) connect_failed(m, rc, reason);
}

/* Nothing heard from the broker for 1.5 x keepalive: the network is gone even if TCP has not
   noticed (a tunnel, a dead NAT entry). Close our end and reconnect. */
static void drop_dead_link(mw_mqtt_t *m) {
  char reason[300];
  snprintf(reason, sizeof reason,
           "connection lost: nothing received from the broker for %d s (1.5 x keepalive): the network is probably "
           "down",
           m->cfg.keepalive * 3 / 2);
  m->stats.disconnects++;
  m->stats.keepalive_timeouts++;
  snprintf(m->last_reason, sizeof m->last_reason, "%s", reason);
  reset_client(m);
  m->state = ST_WAIT_RETRY;
  drain(m); /* events libmosquitto queued before we gave up belong to the dead connection */
  mw_mqtt_event_t ev = {0};
  ev.type = MW_MQTT_EV_DISCONNECT;
  ev.rc = MOSQ_ERR_KEEPALIVE;
  ev.reason = reason;
  emit(m, &ev);
  if (m->state == ST_WAIT_RETRY) schedule_retry(m);
}

/* ---------------------------------------------------------------- public API */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

mw_status_t mw_mqtt_new(uv_loop_t *loop, const mw_mqtt_config_t *cfg, mw_mqtt_event_fn fn, void *ud,
                        mw_mqtt_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->host || !cfg->client_id || !cfg->tls || cfg->port <= 0 || cfg->port > 65535) {
    snprintf(err, errlen, "MQTT needs a host, a port, a client id and TLS");
    return MW_ERR_INVALID;
  }
  static bool lib_ready;
  if (!lib_ready) {
    mosquitto_lib_init();
    lib_ready = true;
  }
  mw_mqtt_t *m = calloc(1, sizeof *m);
  if (!m) return MW_ERR_NOMEM;
  m->loop = loop;
  m->cfg = *cfg;
  m->fn = fn;
  m->ud = ud;
  m->poll_fd = -1;
  m->host = strdup(cfg->host);
  m->client_id = strdup(cfg->client_id);
  m->will_topic = dup_or_null(cfg->will_topic);
  if (cfg->will_topic && cfg->will_len) {
    m->will_payload = malloc(cfg->will_len);
    if (m->will_payload) memcpy(m->will_payload, cfg->will_payload, cfg->will_len);
  }
  if (!m->cfg.max_inflight) m->cfg.max_inflight = 100;
  if (!m->cfg.max_payload) m->cfg.max_payload = 128 * 1024;
  if (!m->cfg.keepalive) m->cfg.keepalive = 60;
  if (m->cfg.protocol != 5) m->cfg.protocol = 4;
  m->stats.last_connack = -1;
  m->stats.last_disconnect_reason = -1;
  mw_backoff_init(&m->backoff, cfg->backoff_base_ms, cfg->backoff_cap_ms, cfg->backoff_floor_ms);

  m->mosq = mosquitto_new(m->client_id, cfg->clean_session, m);
  if (!m->host || !m->client_id || !m->mosq) {
    snprintf(err, errlen, "cannot create the MQTT client: %s", strerror(errno));
    goto fail;
  }
  if (client_setup(m, err, errlen) != MW_OK) goto fail;
  uv_timer_init(loop, &m->misc_timer);
  uv_timer_init(loop, &m->retry_timer);
  m->misc_timer.data = m->retry_timer.data = m;
  m->open_handles = 2;
  *out = m;
  return MW_OK;
fail:
  if (m->mosq) mosquitto_destroy(m->mosq);
  free(m->host);
  free(m->client_id);
  free(m->will_topic);
  free(m->will_payload);
  free(m);
  return MW_ERR_INVALID;
}

mw_status_t mw_mqtt_start(mw_mqtt_t *m) {
  if (m->state != ST_IDLE) return MW_ERR_STATE;
  uv_timer_start(&m->misc_timer, on_misc, 1000, 1000);
  do_connect(m);
  return MW_OK;
}

static void on_stop_timeout(uv_timer_t *t) {
  mw_mqtt_t *m = t->data;
  if (m->state != ST_STOPPING) return;
  MW_LOGW(COMP, "DISCONNECT not confirmed within %d ms; closing", STOP_TIMEOUT_MS);
  int fd = mosquitto_socket(m->mosq);
  if (fd >= 0) shutdown(fd, SHUT_RDWR);
  mosquitto_loop_read(m->mosq, 1);
  sync_poll(m);
  m->state = ST_STOPPED;
  emit_simple(m, MW_MQTT_EV_STOPPED, 0, NULL);
}

void mw_mqtt_stop(mw_mqtt_t *m) {
  if (m->state == ST_STOPPING || m->state == ST_STOPPED) return;
  uv_timer_stop(&m->retry_timer);
  if (m->state == ST_CONNECTED) {
    m->state = ST_STOPPING;
    /* A client-initiated DISCONNECT: the broker must not publish our last will. */
    mosquitto_disconnect(m->mosq);
    uv_timer_start(&m->retry_timer, on_stop_timeout, STOP_TIMEOUT_MS, 0);
    drain(m);
    sync_poll(m);
    return;
  }
  if (m->state == ST_CONNECTING) {
    m->state = ST_STOPPING; /* abort_attempt schedules no retry in this state */
    abort_attempt(m, MOSQ_ERR_SUCCESS, NULL);
  }
  m->state = ST_STOPPED;
  uv_timer_stop(&m->misc_timer);
  emit_simple(m, MW_MQTT_EV_STOPPED, 0, NULL);
}

void mw_mqtt_free(mw_mqtt_t *m) {
  if (!m) return;
  m->freeing = true;
  while (m->qhead) {
    qev_t *q = m->qhead;
    m->qhead = q->next;
    free(q);
  }
  if (m->poll) {
    uv_poll_stop(m->poll);
    uv_close((uv_handle_t *)m->poll, poll_closed);
  }
  mosquitto_destroy(m->mosq);
  for (int i = 0; i < m->nsubs; i++) free(m->subs[i].filter);
  free(m->subs);
  free(m->host);
  free(m->client_id);
  free(m->will_topic);
  free(m->will_payload);
  uv_close((uv_handle_t *)&m->misc_timer, handle_closed);
  uv_close((uv_handle_t *)&m->retry_timer, handle_closed);
}

bool mw_mqtt_connected(const mw_mqtt_t *m) { return m->state == ST_CONNECTED; }

int mw_mqtt_max_inflight(const mw_mqtt_t *m) { return m->cfg.max_inflight; }

int mw_mqtt_protocol(const mw_mqtt_t *m) { return m->cfg.protocol; }

mw_status_t mw_mqtt_resend(mw_mqtt_t *m, const char *topic, const void *payload, size_t len, bool retain, int *mid,
                           char *err, size_t errlen) {
  if (!m->preconnect) {
    snprintf(err, errlen, "a resend is only accepted right before a connection attempt");
    return MW_ERR_STATE;
  }
  if (len > m->cfg.max_payload) {
    snprintf(err, errlen, "payload is %zu bytes, over the %zu-byte limit", len, m->cfg.max_payload);
    return MW_ERR_TOO_LARGE;
  }
  int id = 0;
  /* Offline, libmosquitto keeps the message and answers "no connection"; its CONNACK
     handler then sends every kept QoS 1 message with DUP set (message__retry_check). */
  int rc = mosquitto_publish(m->mosq, &id, topic, (int)len, payload, 1, retain);
  if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
    snprintf(err, errlen, "resend failed: %s", mosquitto_strerror(rc));
    return MW_ERR_IO;
  }
  unsigned idx = (unsigned)id & 0xFFFF;
  m->qos1_mids[idx / 8] |= (uint8_t)(1u << (idx % 8));
  m->stats.inflight++;
  m->stats.msgs_out++;
  m->stats.bytes_out += len;
  if (mid) *mid = id;
  return MW_OK;
}

mw_status_t mw_mqtt_publish(mw_mqtt_t *m, const char *topic, const void *payload, size_t len, int qos,
                            bool retain, int *mid, char *err, size_t errlen) {
  if (qos < 0 || qos > 1) {
    snprintf(err, errlen, "QoS %d is not supported (AWS IoT has QoS 0 and 1 only)", qos);
    return MW_ERR_INVALID;
  }
  if (len > m->cfg.max_payload) {
    snprintf(err, errlen, "payload is %zu bytes, over the %zu-byte limit", len, m->cfg.max_payload);
    return MW_ERR_TOO_LARGE;
  }
  if (m->state != ST_CONNECTED) {
    snprintf(err, errlen, "not connected to the broker%s%s", m->last_reason[0] ? ": " : "", m->last_reason);
    return MW_ERR_NOT_CONNECTED;
  }
  if (qos == 1 && m->stats.inflight >= m->cfg.max_inflight) {
    snprintf(err, errlen, "%d QoS 1 messages already await PUBACK (the in-flight limit)", m->cfg.max_inflight);
    return MW_ERR_BUSY;
  }
  int id = 0;
  int rc = mosquitto_publish(m->mosq, &id, topic, (int)len, payload, qos, retain);
  if (rc == MOSQ_ERR_OVERSIZE_PACKET) {
    /* MQTT 5: the broker announced a Maximum Packet Size in CONNACK and this is larger. */
    snprintf(err, errlen, "the message is larger than the broker accepts (the Maximum Packet Size it announced)");
    return MW_ERR_TOO_LARGE;
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    snprintf(err, errlen, "publish failed: %s", mosquitto_strerror(rc));
    drain(m);
    sync_poll(m);
    if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST) return MW_ERR_NOT_CONNECTED;
    return rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_MALFORMED_UTF8 || rc == MOSQ_ERR_PAYLOAD_SIZE ? MW_ERR_INVALID
                                                                                                : MW_ERR_IO;
  }
  if (qos == 1) {
    unsigned idx = (unsigned)id & 0xFFFF;
    m->qos1_mids[idx / 8] |= (uint8_t)(1u << (idx % 8));
    m->stats.inflight++;
  }
  m->stats.msgs_out++;
  m->stats.bytes_out += len;
  if (mid) *mid = id;
  if (mosquitto_want_write(m->mosq) && !(m->poll_events & UV_WRITABLE)) sync_poll(m);
  return MW_OK;
}

static sub_t *find_sub(mw_mqtt_t *m, const char *filter) {
  for (int i = 0; i < m->nsubs; i++)
    if (strcmp(m->subs[i].filter, filter) == 0) return &m->subs[i];
  return NULL;
}

mw_status_t mw_mqtt_subscribe(mw_mqtt_t *m, const char *filter, int qos, int *mid) {
  if (mid) *mid = 0;
  if (qos < 0 || qos > 1) return MW_ERR_INVALID;
  sub_t *s = find_sub(m, filter);
  if (s) {
    s->refs++;
    if (qos <= s->qos) return MW_OK;
    s->qos = qos;
  } else {
    if (m->nsubs == m->capsubs) {
      int cap = m->capsubs ? m->capsubs * 2 : 8;
      sub_t *n = realloc(m->subs, sizeof *n * (size_t)cap);
      if (!n) return MW_ERR_NOMEM;
      m->subs = n;
      m->capsubs = cap;
    }
    char *f = strdup(filter);
    if (!f) return MW_ERR_NOMEM;
    s = &m->subs[m->nsubs++];
    s->filter = f;
    s->qos = qos;
    s->refs = 1;
    s->pending_mid = 0;
  }
  if (m->state == ST_CONNECTED) {
    send_subscribe(m, s, mid);
    sync_poll(m);
  }
  return MW_OK;
}

mw_status_t mw_mqtt_unsubscribe(mw_mqtt_t *m, const char *filter) {
  sub_t *s = find_sub(m, filter);
  if (!s) return MW_ERR_NOT_FOUND;
  if (--s->refs > 0) return MW_OK;
  if (m->state == ST_CONNECTED) {
    int rc = mosquitto_unsubscribe(m->mosq, NULL, filter);
    if (rc != MOSQ_ERR_SUCCESS) MW_LOGW(COMP, "UNSUBSCRIBE %s failed: %s", filter, mosquitto_strerror(rc));
    sync_poll(m);
  }
  free(s->filter);
  *s = m->subs[--m->nsubs];
  return MW_OK;
}

void mw_mqtt_get_stats(const mw_mqtt_t *m, mw_mqtt_stats_t *st) {
  *st = m->stats;
  st->subscriptions = m->nsubs;
}

void mw_mqtt_each_subscription(const mw_mqtt_t *m, mw_mqtt_sub_fn fn, void *ud) {
  for (int i = 0; i < m->nsubs; i++) fn(ud, m->subs[i].filter, m->subs[i].qos, m->subs[i].refs);
}
