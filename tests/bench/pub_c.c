/*
 * pub_c: the plain C reference of the outbox benchmark (tests/bench/outbox): QoS 1 publishes
 * as fast as libmosquitto goes with at most WINDOW unacknowledged, no storage at all. This is
 * the ceiling a client without a durable outbox reaches on the same broker in the same run.
 *
 * Mutual TLS through mosquitto_tls_set, TCP_NODELAY, MQTT 3.1.1, driven by mosquitto_loop.
 * Prints "RESULT c n=N ms=WALL cpu_s=CPU" on stderr once every PUBACK has arrived.
 *
 * usage: pub_c HOST PORT CA CERT KEY CLIENT_ID COUNT WINDOW SIZE
 */
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static long g_count, g_sent, g_acked;
static int g_window, g_size;
static char g_topic[256];
static char *g_payload;
static int g_connected;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void top_up(struct mosquitto *m) {
  while (g_sent < g_count && g_sent - g_acked < g_window) {
    if (mosquitto_publish(m, NULL, g_topic, g_size, g_payload, 1, false) != MOSQ_ERR_SUCCESS) break;
    g_sent++;
  }
}

static void on_connect(struct mosquitto *m, void *ud, int rc) {
  (void)m;
  (void)ud;
  if (rc != 0) {
    fprintf(stderr, "pub_c: connection refused: %s\n", mosquitto_connack_string(rc));
    exit(1);
  }
  g_connected = 1;
}

static void on_publish(struct mosquitto *m, void *ud, int mid) {
  (void)ud;
  (void)mid;
  g_acked++;
  top_up(m);
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: pub_c HOST PORT CA CERT KEY CLIENT_ID COUNT WINDOW SIZE\n");
    return 2;
  }
  const char *host = argv[1], *ca = argv[3], *cert = argv[4], *key = argv[5], *id = argv[6];
  int port = atoi(argv[2]);
  g_count = atol(argv[7]);
  g_window = atoi(argv[8]);
  g_size = atoi(argv[9]);
  g_payload = malloc((size_t)g_size);
  memset(g_payload, 'x', (size_t)g_size);
  snprintf(g_topic, sizeof g_topic, "bench/outbox/%s", id);

  mosquitto_lib_init();
  struct mosquitto *m = mosquitto_new(id, true, NULL);
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_max_inflight_messages_set(m, 0);
  if (mosquitto_tls_set(m, ca, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "pub_c: TLS setup failed\n");
    return 1;
  }
  mosquitto_connect_callback_set(m, on_connect);
  mosquitto_publish_callback_set(m, on_publish);
  if (mosquitto_connect(m, host, port, 60) != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "pub_c: cannot connect to %s:%d\n", host, port);
    return 1;
  }
  while (!g_connected)
    if (mosquitto_loop(m, 100, 1) != MOSQ_ERR_SUCCESS) return 1;
  double t0 = now_ms(), c0 = cpu_s();
  top_up(m);
  while (g_acked < g_count)
    if (mosquitto_loop(m, 1000, 1) != MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "pub_c: connection lost\n");
      return 1;
    }
  fprintf(stderr, "RESULT c n=%ld ms=%.0f cpu_s=%.4f\n", g_count, now_ms() - t0, cpu_s() - c0);
  mosquitto_disconnect(m);
  mosquitto_loop(m, 100, 1);
  mosquitto_destroy(m);
  mosquitto_lib_cleanup();
  free(g_payload);
  return 0;
}
