/*
 * echo_c: the plain C reference peer of the MQTT echo benchmark (tests/bench/run).
 *
 * libmosquitto driven by mosquitto_loop (what mosquitto_loop_forever does, minus reconnects,
 * plus a stop flag), mutual TLS through mosquitto_tls_set,
 * TCP_NODELAY, MQTT 3.1.1. Subscribes bench/req/<id>/# and republishes each payload to
 * bench/resp/<id> at the same QoS. Exits 0 on SIGTERM/SIGINT after a clean DISCONNECT.
 *
 * usage: echo_c HOST PORT CA CERT KEY CLIENT_ID QOS
 */
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct mosquitto *g_mosq;
static char g_req[256], g_resp[256];
static int g_qos;
static unsigned long g_failures;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1; /* pselect in mosquitto_loop returns EINTR; the loop below sees the flag */
}

static void on_connect(struct mosquitto *m, void *ud, int rc) {
  (void)ud;
  if (rc != 0) {
    fprintf(stderr, "echo_c: connection refused: %s\n", mosquitto_connack_string(rc));
    exit(1);
  }
  mosquitto_subscribe(m, NULL, g_req, g_qos);
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg) {
  (void)ud;
  int rc = mosquitto_publish(m, NULL, g_resp, msg->payloadlen, msg->payload, g_qos, false);
  if (rc != MOSQ_ERR_SUCCESS && g_failures++ < 10)
    fprintf(stderr, "echo_c: publish failed: %s\n", mosquitto_strerror(rc));
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: echo_c HOST PORT CA CERT KEY CLIENT_ID QOS\n");
    return 2;
  }
  const char *host = argv[1], *ca = argv[3], *cert = argv[4], *key = argv[5], *id = argv[6];
  int port = atoi(argv[2]);
  g_qos = atoi(argv[7]);
  snprintf(g_req, sizeof g_req, "bench/req/%s/#", id);
  snprintf(g_resp, sizeof g_resp, "bench/resp/%s", id);

  mosquitto_lib_init();
  g_mosq = mosquitto_new(id, true, NULL);
  if (!g_mosq) {
    perror("echo_c: mosquitto_new");
    return 1;
  }
  mosquitto_int_option(g_mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_int_option(g_mosq, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_max_inflight_messages_set(g_mosq, 0); /* the driver bounds the window (100) */
  int rc = mosquitto_tls_set(g_mosq, ca, NULL, cert, key, NULL);
  if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_tls_opts_set(g_mosq, 1, "tlsv1.2", NULL);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "echo_c: TLS setup: %s\n", mosquitto_strerror(rc));
    return 1;
  }
  mosquitto_connect_callback_set(g_mosq, on_connect);
  mosquitto_message_callback_set(g_mosq, on_message);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  rc = mosquitto_connect(g_mosq, host, port, 60);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "echo_c: connect to %s:%d: %s\n", host, port, mosquitto_strerror(rc));
    return 1;
  }
  while (!g_stop) {
    rc = mosquitto_loop(g_mosq, -1, 1);
    if (rc != MOSQ_ERR_SUCCESS) break;
  }
  if (g_stop) {
    mosquitto_disconnect(g_mosq);
    for (int i = 0; i < 20 && mosquitto_loop(g_mosq, 100, 1) == MOSQ_ERR_SUCCESS; i++) {
    }
    rc = MOSQ_ERR_SUCCESS;
  }
  mosquitto_destroy(g_mosq);
  mosquitto_lib_cleanup();
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "echo_c: loop ended: %s\n", mosquitto_strerror(rc));
    return 1;
  }
  return 0;
}
