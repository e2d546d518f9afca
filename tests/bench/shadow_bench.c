/*
** Shadow benchmark (target bench_shadow; not a CTest test):
**  - delta computations per second (mw_shadow_delta + its metadata) on ~1 KB and ~8 KB states;
**  - document-core updates per second (parse + validate + merge + accepted/delta/documents);
**  - service updates per second through mw_shadow_service_handle over SQLite (WAL), both a
**    small desired change on a 1 KB / 8 KB shadow and a rewrite of the whole state; each
**    update emits accepted + delta + documents.
** Usage: bench_shadow [seconds-per-row (default 1)] [db directory (default /tmp)]
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "mw_shadow_service.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
** An object of "pNNN": {"v": n, "name": "sensor-n", "on": true, "pos": [n, n]} members whose
** compact JSON is close to (not above) target bytes; variant changes every 4th value.
*/
static cJSON *make_section(size_t target, int variant) {
  cJSON *o = cJSON_CreateObject();
  for (int i = 0;; i++) {
    char key[16], name[32];
    snprintf(key, sizeof key, "p%03d", i);
    snprintf(name, sizeof name, "sensor-%d", i);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "v", (i % 4 == 0) ? i + variant : i);
    cJSON_AddStringToObject(m, "name", name);
    cJSON_AddBoolToObject(m, "on", 1);
    cJSON *pos = cJSON_AddArrayToObject(m, "pos");
    cJSON_AddItemToArray(pos, cJSON_CreateNumber(i));
    cJSON_AddItemToArray(pos, cJSON_CreateNumber(i * 2));
    cJSON_AddItemToObject(o, key, m);
    char *s = cJSON_PrintUnformatted(o);
    size_t n = strlen(s);
    cJSON_free(s);
    if (n > target) {
      cJSON_DeleteItemFromObject(o, key);
      return o;
    }
  }
}

/* {"state":{"desired":D,"reported":R}} whose state is ~total bytes. */
static char *make_update(size_t total, int variant, cJSON **desired, cJSON **reported) {
  cJSON *d = make_section(total / 2 - 16, variant), *r = make_section(total / 2 - 16, 0);
  cJSON *root = cJSON_CreateObject(), *state = cJSON_AddObjectToObject(root, "state");
  cJSON_AddItemToObject(state, "desired", cJSON_Duplicate(d, 1));
  cJSON_AddItemToObject(state, "reported", cJSON_Duplicate(r, 1));
  char *s = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (desired) *desired = d;
  else cJSON_Delete(d);
  if (reported) *reported = r;
  else cJSON_Delete(r);
  return s;
}

static void row(const char *what, size_t bytes, long ops, double secs) {
  printf("%-44s %6zu B %10.0f %9.2f\n", what, bytes, (double)ops / secs, secs * 1e6 / (double)ops);
}

static void bench_delta(size_t total, double budget) {
  cJSON *d, *r;
  char *s = make_update(total, 1, &d, &r);
  cJSON *meta = mw_shadow_metadata_for(d, 1591140517);
  char *ds = cJSON_PrintUnformatted(d), *rs = cJSON_PrintUnformatted(r);
  size_t bytes = strlen(ds) + strlen(rs);
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int i = 0; i < 100; i++, ops++) {
      cJSON *delta = mw_shadow_delta(d, r);
      cJSON_Delete(mw_shadow_delta_metadata(delta, meta));
      cJSON_Delete(delta);
    }
  } while ((t = now_s() - t0) < budget);
  row("delta computation (delta + delta metadata)", bytes, ops, t);
  cJSON_free(ds);
  cJSON_free(rs);
  cJSON_free(s);
  cJSON_Delete(meta);
  cJSON_Delete(d);
  cJSON_Delete(r);
}

static void bench_doc_update(size_t total, double budget) {
  char *s0 = make_update(total, 0, NULL, NULL), *s1 = make_update(total, 1, NULL, NULL);
  mw_shadow_doc_t doc;
  mw_shadow_doc_init(&doc);
  long ops = 0;
  double t0 = now_s(), t;
  do {
    for (int i = 0; i < 20; i++, ops++) {
      const char *p = (ops & 1) ? s1 : s0;
      mw_shadow_request_t req;
      mw_shadow_error_t err;
      mw_shadow_result_t res;
      if (mw_shadow_request_parse(p, strlen(p), NULL, &req, &err) != MW_OK ||
          mw_shadow_doc_update(&doc, &req, 1591140517 + ops, NULL, &res, &err) != MW_OK) {
        fprintf(stderr, "update failed: %d %s\n", err.code, err.message);
        exit(1);
      }
      mw_shadow_result_free(&res);
      mw_shadow_request_free(&req);
    }
  } while ((t = now_s() - t0) < budget);
  row("doc-core update, whole state (no storage)", mw_shadow_doc_state_size(&doc), ops, t);
  mw_shadow_doc_free(&doc);
  cJSON_free(s0);
  cJSON_free(s1);
}

static long emitted;

static void count_emit(void *ud, const char *topic, const char *payload, size_t len) {
  (void)ud;
  (void)topic;
  (void)payload;
  (void)len;
  emitted++;
}

static void bench_service(const char *dir, size_t total, int whole, bool sync_full, double budget) {
  char path[512];
  snprintf(path, sizeof path, "%s/mw_shadow_bench_%d.db", dir, (int)getpid());
  unlink(path);
  mw_shadow_service_t *svc;
  if (mw_shadow_service_open(path, NULL, sync_full, &svc) != MW_OK) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(1);
  }
  const char *topic = "$aws/things/bench/shadow/update";
  char *s0 = make_update(total, 0, NULL, NULL), *s1 = make_update(total, 1, NULL, NULL);
  mw_shadow_service_handle(svc, topic, strlen(topic), s0, strlen(s0), 0, count_emit, NULL);
  long ops = 0;
  emitted = 0;
  double t0 = now_s(), t;
  char small[128];
  do {
    for (int i = 0; i < 10; i++, ops++) {
      const char *p;
      if (whole) {
        p = (ops & 1) ? s1 : s0;
      } else {
        snprintf(small, sizeof small, "{\"state\":{\"desired\":{\"p000\":{\"v\":%ld}}},\"clientToken\":\"b%ld\"}",
                 ops + 1000, ops);
        p = small;
      }
      if (mw_shadow_service_handle(svc, topic, strlen(topic), p, strlen(p), 1591140517000LL + ops, count_emit, NULL) !=
          MW_OK) {
        fprintf(stderr, "service update failed\n");
        exit(1);
      }
    }
  } while ((t = now_s() - t0) < budget);
  char what[96];
  snprintf(what, sizeof what, "service update, %s (sync=%s)", whole ? "whole state" : "one desired leaf",
           sync_full ? "FULL" : "NORMAL");
  row(what, strlen(s0) - 30, ops, t);
  if (!whole && emitted < 3 * ops) fprintf(stderr, "  warning: %ld messages for %ld updates\n", emitted, ops);
  mw_shadow_service_close(svc);
  cJSON_free(s0);
  cJSON_free(s1);
  char side[600];
  unlink(path);
  snprintf(side, sizeof side, "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", path);
  unlink(side);
}

int main(int argc, char **argv) {
  double budget = argc > 1 ? atof(argv[1]) : 1.0;
  const char *dir = argc > 2 ? argv[2] : "/tmp";
  if (budget <= 0) budget = 1.0;
  printf("shadow benchmark: cJSON %s, SQLite %s (WAL), db in %s, %.1f s per row\n", cJSON_Version(),
         sqlite3_libversion(), dir, budget);
  printf("%-44s %8s %10s %9s\n", "operation", "state", "ops/s", "us/op");
  static const size_t sizes[] = {1024, 8000};
  for (int i = 0; i < 2; i++) bench_delta(sizes[i], budget);
  for (int i = 0; i < 2; i++) bench_doc_update(sizes[i], budget);
  for (int i = 0; i < 2; i++) bench_service(dir, sizes[i], 0, false, budget);
  for (int i = 0; i < 2; i++) bench_service(dir, sizes[i], 1, false, budget);
  bench_service(dir, 1024, 0, true, budget);
  return 0;
}
