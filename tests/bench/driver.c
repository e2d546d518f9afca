/*
 * driver: load generator of the MQTT echo benchmark (tests/bench/run). Not the measured process.
 *
 * Keeps WINDOW requests in flight to one echo peer (bench/req/<peer>/r -> bench/resp/<peer>),
 * checks every response (each sequence number exactly once, payload intact), and samples the
 * peer's CPU time (/proc/PID/task/STAR/schedstat and /proc/PID/stat) right before and right after
 * the measured phase, so the peer's start-up, TLS handshake and warm-up are excluded.
 *
 * Phases: probe (one request every 100 ms until the peer answers: it is subscribed), warm-up
 * (WARMUP round trips with the window), measured (COUNT round trips with the window).
 * Prints one line of key=value pairs on stdout; exit 0 only if every response arrived intact.
 *
 * usage: driver HOST PORT CA CERT KEY CLIENT_ID PEER QOS COUNT WARMUP WINDOW SIZE PEER_PID
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { PH_CONNECT, PH_PROBE, PH_WARMUP, PH_MEASURE, PH_DONE, PH_FAILED };

static struct {
  struct mosquitto *m;
  char req[256], resp[256];
  int qos, window, size, pid;
  long count, warmup;
  int phase;
  /* current phase: requests sent / responses received, sequence numbers 0..total-1 */
  long total, sent, received, dups, bad;
  unsigned char *seen;
  double *t_sent;
  double *rtt;
  long nrtt;
  double last_progress;
  unsigned probe_gen; /* probe payloads carry a generation > 0; phase payloads generation 0 */
  char *payload;
  /* samples */
  double t0, t1;
  uint64_t cpu_ns0, cpu_ns1, ticks0, ticks1, uticks0, uticks1;
  long vsw0, vsw1, ivsw0, ivsw1;
  char err[256];
} g;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sum of run time (ns) over every thread of the peer, from schedstat. */
static uint64_t peer_cpu_ns(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *d = opendir(path);
  if (!d) return UINT64_MAX;
  uint64_t sum = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[320];
    snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", pid, e->d_name);
    FILE *f = fopen(p, "r");
    if (!f) continue;
    unsigned long long run = 0;
    if (fscanf(f, "%llu", &run) == 1) sum += run;
    fclose(f);
  }
  closedir(d);
  return sum;
}

/* utime + stime in clock ticks (the getrusage-grade figure, coarser), from /proc/PID/stat. */
static uint64_t peer_ticks(int pid, uint64_t *user) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  unsigned long long ut = 0, st = 0;
  /* after ") ": state(3) ... utime is field 14, stime 15 */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
  *user = ut;
  return ut + st;
}

static long status_field(int pid, const char *key) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = strtol(line + kl + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

/* Sum of the given smaps_rollup fields (kB), e.g. Private_Clean + Private_Dirty. */
static long rollup(int pid, const char *k1, const char *k2) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long v = 0;
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon) continue;
    *colon = 0;
    if (strcmp(line, k1) == 0 || (k2 && strcmp(line, k2) == 0)) v += strtol(colon + 1, NULL, 10);
  }
  fclose(f);
  return v;
}

static void sample(uint64_t *ns, uint64_t *ticks, uint64_t *uticks, long *vsw, long *ivsw, double *t) {
  *ns = peer_cpu_ns(g.pid);
  *ticks = peer_ticks(g.pid, uticks);
  *vsw = status_field(g.pid, "voluntary_ctxt_switches");
  *ivsw = status_field(g.pid, "nonvoluntary_ctxt_switches");
  *t = now_s();
}

/* Payload: "<gen>:<seq>:" then a pattern derived from seq, exactly g.size bytes. */
static void make_payload(char *buf, unsigned gen, long seq) {
  int n = snprintf(buf, (size_t)g.size + 1, "%u:%ld:", gen, seq);
  for (int i = n; i < g.size; i++) buf[i] = (char)('a' + (seq + i) % 26);
}

static void send_one(unsigned gen, long seq) {
  make_payload(g.payload, gen, seq);
  if (gen == 0) g.t_sent[seq] = now_s();
  int rc = mosquitto_publish(g.m, NULL, g.req, g.size, g.payload, g.qos, false);
  if (rc != MOSQ_ERR_SUCCESS) {
    snprintf(g.err, sizeof g.err, "publish failed: %s", mosquitto_strerror(rc));
    g.phase = PH_FAILED;
  }
}

static void start_phase(int phase, long total) {
  g.phase = phase;
  g.total = total;
  g.sent = g.received = 0;
  memset(g.seen, 0, (size_t)total);
  g.nrtt = 0;
  long first = total < g.window ? total : g.window;
  g.last_progress = now_s();
  for (long i = 0; i < first && g.phase == phase; i++) send_one(0, g.sent++);
}

static void on_connect(struct mosquitto *m, void *ud, int rc) {
  (void)ud;
  if (rc != 0) {
    snprintf(g.err, sizeof g.err, "connection refused: %s", mosquitto_connack_string(rc));
    g.phase = PH_FAILED;
    return;
  }
  mosquitto_subscribe(m, NULL, g.resp, g.qos);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted) {
  (void)m, (void)ud, (void)mid;
  if (n < 1 || granted[0] != g.qos) {
    snprintf(g.err, sizeof g.err, "subscription refused or downgraded (granted %d)", n ? granted[0] : -1);
    g.phase = PH_FAILED;
    return;
  }
  g.phase = PH_PROBE;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg) {
  (void)m, (void)ud;
  if (msg->payloadlen != g.size) {
    g.bad++;
    return;
  }
  unsigned gen;
  long seq;
  char head[32];
  memcpy(head, msg->payload, sizeof head - 1);
  head[sizeof head - 1] = 0;
  if (sscanf(head, "%u:%ld:", &gen, &seq) != 2) {
    g.bad++;
    return;
  }
  if (g.phase == PH_PROBE) {
    if (gen > 0) start_phase(PH_WARMUP, g.warmup);
    return;
  }
  if (gen != 0) return; /* a late answer to an earlier probe */
  if (g.phase != PH_WARMUP && g.phase != PH_MEASURE) return;
  if (seq < 0 || seq >= g.total) {
    g.bad++;
    return;
  }
  make_payload(g.payload, 0, seq);
  if (memcmp(g.payload, msg->payload, (size_t)g.size) != 0) {
    g.bad++;
    return;
  }
  if (g.seen[seq]) {
    g.dups++;
    return;
  }
  g.seen[seq] = 1;
  double t = now_s();
  if (g.phase == PH_MEASURE) g.rtt[g.nrtt++] = t - g.t_sent[seq];
  g.received++;
  g.last_progress = t;
  if (g.sent < g.total) {
    send_one(0, g.sent++);
    return;
  }
  if (g.received < g.total) return;
  if (g.phase == PH_WARMUP) {
    sample(&g.cpu_ns0, &g.ticks0, &g.uticks0, &g.vsw0, &g.ivsw0, &g.t0);
    start_phase(PH_MEASURE, g.count);
  } else {
    sample(&g.cpu_ns1, &g.ticks1, &g.uticks1, &g.vsw1, &g.ivsw1, &g.t1);
    g.phase = PH_DONE;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 14) {
    fprintf(stderr, "usage: driver HOST PORT CA CERT KEY CLIENT_ID PEER QOS COUNT WARMUP WINDOW SIZE PEER_PID\n");
    return 2;
  }
  const char *host = argv[1], *ca = argv[3], *cert = argv[4], *key = argv[5], *id = argv[6], *peer = argv[7];
  int port = atoi(argv[2]);
  g.qos = atoi(argv[8]);
  g.count = atol(argv[9]);
  g.warmup = atol(argv[10]);
  g.window = atoi(argv[11]);
  g.size = atoi(argv[12]);
  g.pid = atoi(argv[13]);
  if (g.qos < 0 || g.qos > 1 || g.count < 1 || g.warmup < 1 || g.window < 1 || g.size < 24 || g.pid <= 0) {
    fprintf(stderr, "driver: bad arguments\n");
    return 2;
  }
  if (peer_cpu_ns(g.pid) == UINT64_MAX) {
    fprintf(stderr, "driver: cannot read /proc/%d/task/*/schedstat\n", g.pid);
    return 1;
  }
  snprintf(g.req, sizeof g.req, "bench/req/%s/r", peer);
  snprintf(g.resp, sizeof g.resp, "bench/resp/%s", peer);
  long maxn = g.count > g.warmup ? g.count : g.warmup;
  g.seen = calloc((size_t)maxn, 1);
  g.t_sent = calloc((size_t)maxn, sizeof(double));
  g.rtt = calloc((size_t)maxn, sizeof(double));
  g.payload = malloc((size_t)g.size + 1);
  if (!g.seen || !g.t_sent || !g.rtt || !g.payload) {
    fprintf(stderr, "driver: out of memory\n");
    return 1;
  }

  mosquitto_lib_init();
  g.m = mosquitto_new(id, true, NULL);
  mosquitto_int_option(g.m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_int_option(g.m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_max_inflight_messages_set(g.m, 0); /* the window bounds it */
  int rc = mosquitto_tls_set(g.m, ca, NULL, cert, key, NULL);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "driver: TLS setup: %s\n", mosquitto_strerror(rc));
    return 1;
  }
  mosquitto_connect_callback_set(g.m, on_connect);
  mosquitto_subscribe_callback_set(g.m, on_subscribe);
  mosquitto_message_callback_set(g.m, on_message);
  rc = mosquitto_connect(g.m, host, port, 60);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "driver: connect to %s:%d: %s\n", host, port, mosquitto_strerror(rc));
    return 1;
  }

  const double stall_s = 15, probe_limit_s = 30;
  double start = now_s(), last_probe = 0;
  while (g.phase != PH_DONE && g.phase != PH_FAILED) {
    rc = mosquitto_loop(g.m, 100, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
      snprintf(g.err, sizeof g.err, "connection lost: %s", mosquitto_strerror(rc));
      g.phase = PH_FAILED;
      break;
    }
    double t = now_s();
    if (g.phase == PH_CONNECT && t - start > probe_limit_s) {
      snprintf(g.err, sizeof g.err, "no SUBACK from the broker within %.0f s", probe_limit_s);
      g.phase = PH_FAILED;
    } else if (g.phase == PH_PROBE) {
      if (t - start > probe_limit_s) {
        snprintf(g.err, sizeof g.err, "peer %s did not answer within %.0f s", peer, probe_limit_s);
        g.phase = PH_FAILED;
      } else if (t - last_probe >= 0.1) {
        send_one(++g.probe_gen, 0);
        last_probe = t;
      }
    } else if ((g.phase == PH_WARMUP || g.phase == PH_MEASURE) && t - g.last_progress > stall_s) {
      snprintf(g.err, sizeof g.err, "%s stalled: %ld of %ld responses after %.0f s without progress",
               g.phase == PH_WARMUP ? "warm-up" : "measured phase", g.received, g.total, stall_s);
      g.phase = PH_FAILED;
    }
  }
  int ok = g.phase == PH_DONE && g.bad == 0;
  long hwm = status_field(g.pid, "VmHWM"), rss = status_field(g.pid, "VmRSS");
  long rss_anon = status_field(g.pid, "RssAnon"), rss_file = status_field(g.pid, "RssFile");
  long pss = rollup(g.pid, "Pss", NULL), priv = rollup(g.pid, "Private_Clean", "Private_Dirty");
  mosquitto_disconnect(g.m);
  for (int i = 0; i < 10 && mosquitto_loop(g.m, 50, 1) == MOSQ_ERR_SUCCESS; i++) {
  }
  mosquitto_destroy(g.m);
  mosquitto_lib_cleanup();

  if (!ok) {
    if (!g.err[0]) snprintf(g.err, sizeof g.err, "%ld malformed or corrupted responses", g.bad);
    printf("ok=0 error=\"%s\" received=%ld total=%ld dups=%ld bad=%ld\n", g.err, g.received, g.total, g.dups, g.bad);
    fprintf(stderr, "driver: %s\n", g.err);
    return 1;
  }
  qsort(g.rtt, (size_t)g.nrtt, sizeof(double), cmp_double);
  double wall = g.t1 - g.t0;
  double cpu_us = (double)(g.cpu_ns1 - g.cpu_ns0) / 1e3 / (double)g.count;
  double tick = 1e6 / (double)sysconf(_SC_CLK_TCK) / (double)g.count;
  double tick_us = (double)(g.ticks1 - g.ticks0) * tick, user_us = (double)(g.uticks1 - g.uticks0) * tick;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("ok=1 peer=%s qos=%d count=%ld window=%d size=%d cpu_us_per_msg=%.3f stat_cpu_us_per_msg=%.3f "
         "stat_user_us_per_msg=%.3f stat_sys_us_per_msg=%.3f "
         "rt_per_s=%.0f wall_s=%.3f rtt_p50_ms=%.3f rtt_p99_ms=%.3f vmhwm_kb=%ld vmrss_kb=%ld rss_anon_kb=%ld "
         "rss_file_kb=%ld pss_kb=%ld private_kb=%ld "
         "vol_cs_per_msg=%.3f invol_cs_per_msg=%.3f dups=%ld driver_cpu_s=%.3f\n",
         peer, g.qos, g.count, g.window, g.size, cpu_us, tick_us, user_us, tick_us - user_us, (double)g.count / wall, wall,
         g.rtt[g.nrtt / 2] * 1e3, g.rtt[(long)((double)g.nrtt * 0.99)] * 1e3, hwm, rss, rss_anon, rss_file, pss, priv,
         (double)(g.vsw1 - g.vsw0) / (double)g.count, (double)(g.ivsw1 - g.ivsw0) / (double)g.count, g.dups,
         (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
             (double)ru.ru_stime.tv_usec / 1e6);
  free(g.seen);
  free(g.t_sent);
  free(g.rtt);
  free(g.payload);
  return 0;
}
