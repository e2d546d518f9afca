/*
 * shadow_c: the plain C reference peer of the shadow update benchmark (tests/bench/shadow).
 *
 * What a minimal device written against libmosquitto + cJSON does for one shadow update:
 * publish /update with a clientToken, parse /update/accepted (version, token) and
 * /update/delta (version, state). An update counts when both its accepted and the delta of
 * the same version have arrived. WINDOW updates are kept in flight. It subscribes to
 * accepted, delta and rejected (a rejection fails the run) before the first update.
 *
 * The desired document is the same as the Lua peer's (tests/bench/shadow_peer.lua): "seq"
 * plus FIELDS string fields "fNNN" of 60 characters; see shadow_fields() in tests/bench/shadow.
 *
 * Prints one line of key=value pairs on stdout: ok, updates, seconds, cpu_s (process CPU time,
 * user+sys, of the measured phase). Exit 0 only if every update completed.
 *
 * usage: shadow_c HOST PORT CA CERT KEY THING SHADOW FIELDS WARMUP COUNT WINDOW
 */
#include <cjson/cJSON.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 8192

static struct {
  struct mosquitto *m;
  char update[224], accepted[256], delta[256], rejected[256]; /* thing <= 128, shadow <= 64 bytes */
  int fields, window;
  long warmup, count, total;
  long sent, done;
  long acc_version[RING]; /* accepted versions waiting for their delta, by version % RING */
  double t0, c0;
  int failed, finished;
  char *buf;
} g;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void send_one(void) {
  long seq = g.sent++;
  int n = snprintf(g.buf, 64, "{\"clientToken\":\"c-%ld\",\"state\":{\"desired\":{", seq);
  for (int i = 0; i < g.fields; i++) {
    n += sprintf(g.buf + n, "\"f%03d\":\"", i);
    for (int j = 0; j < 60; j++) g.buf[n++] = (char)('a' + (i + j) % 26);
    g.buf[n++] = '"';
    g.buf[n++] = ',';
  }
  n += sprintf(g.buf + n, "\"seq\":%ld}}}", seq);
  int rc = mosquitto_publish(g.m, NULL, g.update, n, g.buf, 1, false);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "shadow_c: publish: %s\n", mosquitto_strerror(rc));
    g.failed = 1;
  }
}

static void one_done(void) {
  g.done++;
  if (g.done == g.warmup) {
    g.t0 = now_s();
    g.c0 = cpu_s();
  }
  if (g.done == g.total) {
    double secs = now_s() - g.t0, cpu = cpu_s() - g.c0;
    printf("ok=1 updates=%ld seconds=%.6f cpu_s=%.6f\n", g.count, secs, cpu);
    fflush(stdout);
    g.finished = 1;
    mosquitto_disconnect(g.m);
    return;
  }
  if (g.sent < g.total) send_one();
}

static long version_of(const cJSON *root) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
  return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg) {
  (void)m;
  (void)ud;
  cJSON *root = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
  if (!root) {
    fprintf(stderr, "shadow_c: unparsable message on %s\n", msg->topic);
    g.failed = 1;
    return;
  }
  long v = version_of(root);
  if (strcmp(msg->topic, g.accepted) == 0) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "clientToken");
    if (cJSON_IsString(t) && strncmp(t->valuestring, "c-", 2) == 0 && v > 0) g.acc_version[v % RING] = v;
  } else if (strcmp(msg->topic, g.delta) == 0) {
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(root, "state");
    if (v > 0 && cJSON_IsObject(state) && g.acc_version[v % RING] == v) {
      g.acc_version[v % RING] = 0;
      one_done();
    }
  } else if (strcmp(msg->topic, g.rejected) == 0) {
    char *s = cJSON_PrintUnformatted(root);
    fprintf(stderr, "shadow_c: update rejected: %s\n", s ? s : "?");
    free(s);
    g.failed = 1;
  }
  cJSON_Delete(root);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted) {
  (void)m;
  (void)ud;
  (void)mid;
  for (int i = 0; i < n; i++)
    if (granted[i] > 1) {
      fprintf(stderr, "shadow_c: subscription refused\n");
      g.failed = 1;
      return;
    }
  for (int i = 0; i < g.window && g.sent < g.total; i++) send_one();
}

static void on_connect(struct mosquitto *m, void *ud, int rc) {
  (void)ud;
  if (rc != 0) {
    fprintf(stderr, "shadow_c: connection refused: %s\n", mosquitto_connack_string(rc));
    g.failed = 1;
    return;
  }
  char *subs[] = {g.accepted, g.delta, g.rejected};
  mosquitto_subscribe_multiple(m, NULL, 3, subs, 1, 0, NULL);
}

int main(int argc, char **argv) {
  if (argc != 12) {
    fprintf(stderr, "usage: shadow_c HOST PORT CA CERT KEY THING SHADOW FIELDS WARMUP COUNT WINDOW\n");
    return 2;
  }
  const char *host = argv[1], *ca = argv[3], *cert = argv[4], *key = argv[5], *thing = argv[6], *shadow = argv[7];
  int port = atoi(argv[2]);
  g.fields = atoi(argv[8]);
  g.warmup = atol(argv[9]);
  g.count = atol(argv[10]);
  g.window = atoi(argv[11]);
  g.total = g.warmup + g.count;
  if (g.fields < 0 || g.fields > 200 || g.warmup < 1 || g.count < 1 || g.window < 1 || g.window > 1000) {
    fprintf(stderr, "shadow_c: bad arguments\n");
    return 2;
  }
  g.buf = malloc(64 + (size_t)g.fields * 80 + 64);
  snprintf(g.update, sizeof g.update, "$aws/things/%s/shadow/name/%s/update", thing, shadow);
  snprintf(g.accepted, sizeof g.accepted, "%s/accepted", g.update);
  snprintf(g.delta, sizeof g.delta, "%s/delta", g.update);
  snprintf(g.rejected, sizeof g.rejected, "%s/rejected", g.update);
  mosquitto_lib_init();
  g.m = mosquitto_new(thing, true, NULL);
  mosquitto_int_option(g.m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_max_inflight_messages_set(g.m, 0); /* the window bounds it */
  if (mosquitto_tls_set(g.m, ca, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "shadow_c: TLS setup failed\n");
    return 1;
  }
  mosquitto_connect_callback_set(g.m, on_connect);
  mosquitto_subscribe_callback_set(g.m, on_subscribe);
  mosquitto_message_callback_set(g.m, on_message);
  int rc = mosquitto_connect(g.m, host, port, 60);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "shadow_c: connect to %s:%d: %s\n", host, port, mosquitto_strerror(rc));
    return 1;
  }
  while (!g.finished && !g.failed) {
    rc = mosquitto_loop(g.m, 1000, 1);
    if (rc != MOSQ_ERR_SUCCESS && !g.finished) {
      fprintf(stderr, "shadow_c: loop: %s\n", mosquitto_strerror(rc));
      g.failed = 1;
    }
  }
  for (int i = 0; i < 10 && mosquitto_loop(g.m, 100, 1) == MOSQ_ERR_SUCCESS; i++) {
  }
  mosquitto_destroy(g.m);
  mosquitto_lib_cleanup();
  free(g.buf);
  if (g.failed) {
    printf("ok=0\n");
    return 1;
  }
  return 0;
}
