/*
** Shadow service logic over a temporary SQLite file: request topics in, response messages
** out (topic, payload, order); classic and named shadows; persistence across close/reopen.
*/
#define MW_TEST_IMPLEMENTATION
#include "shadow_test_util.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mw_shadow_service.h"

#define NOW_MS 1591140517000LL
#define NOW_S "1591140517"

/* Captured responses. */
typedef struct {
  int n;
  char topic[8][MW_SHADOW_TOPIC_MAX];
  char *payload[8];
} sink_t;

static void sink_clear(sink_t *s) {
  for (int i = 0; i < s->n; i++) free(s->payload[i]);
  s->n = 0;
}

static void on_emit(void *ud, const char *topic, const char *payload, size_t len) {
  sink_t *s = ud;
  CHECK(strlen(payload) == len);
  if (s->n == 8) return;
  snprintf(s->topic[s->n], sizeof s->topic[0], "%s", topic);
  s->payload[s->n] = strdup(payload);
  s->n++;
}

static char db_path[256];

static void fresh_db(void) {
  snprintf(db_path, sizeof db_path, "/tmp/mw_shadow_test_%d.db", (int)getpid());
  unlink(db_path);
  char side[300];
  snprintf(side, sizeof side, "%s-wal", db_path);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", db_path);
  unlink(side);
}

static mw_status_t req(mw_shadow_service_t *svc, sink_t *s, const char *topic, const char *payload, int64_t now_ms) {
  sink_clear(s);
  return mw_shadow_service_handle(svc, topic, strlen(topic), payload, payload ? strlen(payload) : 0, now_ms, on_emit, s);
}

static mw_shadow_service_t *open_svc(const mw_shadow_options_t *opt) {
  mw_shadow_service_t *svc = NULL;
  CHECK_INT(mw_shadow_service_open(db_path, opt, false, &svc), MW_OK);
  return svc;
}

/* update -> accepted, delta, documents on the classic topics, in that order. */
static void test_update_messages_in_order(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update",
                "{\"state\":{\"desired\":{\"speed\":12}},\"clientToken\":\"u1\"}", NOW_MS + 999), MW_OK);
  CHECK_INT(s.n, 3);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/update/accepted");
  CHECK_STR(s.topic[1], "$aws/things/car1/shadow/update/delta");
  CHECK_STR(s.topic[2], "$aws/things/car1/shadow/update/documents");
  CHECK_JSON(s.payload[0], "{\"state\":{\"desired\":{\"speed\":12}},\"metadata\":{\"desired\":{\"speed\":{\"timestamp\":"
                           NOW_S "}}},\"version\":1,\"timestamp\":" NOW_S ",\"clientToken\":\"u1\"}");
  CHECK_JSON(s.payload[1], "{\"version\":1,\"timestamp\":" NOW_S ",\"state\":{\"speed\":12},"
                           "\"metadata\":{\"speed\":{\"timestamp\":" NOW_S "}},\"clientToken\":\"u1\"}");
  CHECK_JSON(s.payload[2], "{\"previous\":null,\"current\":{\"state\":{\"desired\":{\"speed\":12}},"
                           "\"metadata\":{\"desired\":{\"speed\":{\"timestamp\":" NOW_S "}}},\"version\":1},"
                           "\"timestamp\":" NOW_S ",\"clientToken\":\"u1\"}");
  /* a reported-only update: accepted + documents, no delta */
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update", "{\"state\":{\"reported\":{\"speed\":12}}}", NOW_MS), MW_OK);
  CHECK_INT(s.n, 2);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/update/accepted");
  CHECK_STR(s.topic[1], "$aws/things/car1/shadow/update/documents");
  CHECK(strstr(s.payload[0], "\"version\":2") != NULL);
  /* get -> accepted with the whole document, clientToken echoed */
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "{\"clientToken\":\"g1\"}", NOW_MS), MW_OK);
  CHECK_INT(s.n, 1);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/get/accepted");
  CHECK_JSON(s.payload[0], "{\"state\":{\"desired\":{\"speed\":12},\"reported\":{\"speed\":12}},"
                           "\"metadata\":{\"desired\":{\"speed\":{\"timestamp\":" NOW_S "}},"
                           "\"reported\":{\"speed\":{\"timestamp\":" NOW_S "}}},"
                           "\"version\":2,\"timestamp\":" NOW_S ",\"clientToken\":\"g1\"}");
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* Rejections go to /rejected only and change nothing. */
static void test_rejections(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  const char *upd = "$aws/things/car1/shadow/update";
  CHECK_INT(req(svc, &s, upd, "{\"state\":", NOW_MS), MW_OK);
  CHECK_INT(s.n, 1);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/update/rejected");
  CHECK_JSON(s.payload[0], "{\"code\":400,\"message\":\"Invalid JSON\",\"timestamp\":" NOW_S "}");
  CHECK_INT(req(svc, &s, upd, "{\"state\":{\"reported\":{\"a\":1}}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, upd, "{\"state\":{\"reported\":{\"a\":2}},\"version\":7,\"clientToken\":\"c9\"}", NOW_MS), MW_OK);
  CHECK_INT(s.n, 1);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/update/rejected");
  CHECK_JSON(s.payload[0], "{\"code\":409,\"message\":\"Version conflict\",\"timestamp\":" NOW_S ",\"clientToken\":\"c9\"}");
  CHECK_INT(req(svc, &s, upd, "{\"state\":{\"foo\":{}}}", NOW_MS), MW_OK);
  CHECK_JSON(s.payload[0], "{\"code\":400,\"message\":\"State contains an invalid node: 'foo'\",\"timestamp\":" NOW_S "}");
  CHECK_INT(req(svc, &s, upd, NULL, NOW_MS), MW_OK); /* empty update payload */
  CHECK_JSON(s.payload[0], "{\"code\":400,\"message\":\"Invalid JSON\",\"timestamp\":" NOW_S "}");
  /* nothing changed: still version 1 with a = 1 */
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"version\":1") && strstr(s.payload[0], "\"a\":1"));
  CHECK(strstr(s.payload[0], "clientToken") == NULL);
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* 404s quote the thing name (classic) or the shadow name (named). */
static void test_get_missing_404(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "{\"clientToken\":\"abc\"}", NOW_MS), MW_OK);
  CHECK_INT(s.n, 1);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/get/rejected");
  CHECK_JSON(s.payload[0], "{\"code\":404,\"message\":\"No shadow exists with name: 'car1'\",\"timestamp\":" NOW_S
                           ",\"clientToken\":\"abc\"}");
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/settings/get", "", NOW_MS), MW_OK);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/name/settings/get/rejected");
  CHECK_JSON(s.payload[0], "{\"code\":404,\"message\":\"No shadow exists with name: 'settings'\",\"timestamp\":" NOW_S "}");
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/settings/delete", "", NOW_MS), MW_OK);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/name/settings/delete/rejected");
  CHECK(strstr(s.payload[0], "\"code\":404") != NULL);
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* Classic and named shadows of one thing, and shadows of other things, are independent. */
static void test_named_shadows(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/settings/update", "{\"state\":{\"desired\":{\"mode\":\"eco\"}}}",
                NOW_MS), MW_OK);
  CHECK_INT(s.n, 3);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/name/settings/update/accepted");
  CHECK_STR(s.topic[1], "$aws/things/car1/shadow/name/settings/update/delta");
  CHECK_STR(s.topic[2], "$aws/things/car1/shadow/name/settings/update/documents");
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/lights/update", "{\"state\":{\"reported\":{\"on\":true}}}", NOW_MS),
            MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update", "{\"state\":{\"reported\":{\"speed\":3}}}", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"version\":1") != NULL); /* own numbering */
  CHECK_INT(req(svc, &s, "$aws/things/car2/shadow/name/settings/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"code\":404") != NULL);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/settings/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"mode\":\"eco\"") && !strstr(s.payload[0], "speed"));
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"speed\":3") && !strstr(s.payload[0], "eco"));
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* delete -> {version,timestamp}; get -> 404; update continues the numbering. */
static void test_delete(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  for (int i = 0; i < 3; i++)
    CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update", "{\"state\":{\"reported\":{\"x\":1}}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/delete", "{\"clientToken\":\"d1\"}", NOW_MS + 5000), MW_OK);
  CHECK_INT(s.n, 1);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/delete/accepted");
  CHECK_JSON(s.payload[0], "{\"version\":3,\"timestamp\":1591140522,\"clientToken\":\"d1\"}");
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "", NOW_MS + 6000), MW_OK);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/get/rejected");
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/delete", "", NOW_MS + 6000), MW_OK);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/delete/rejected");
  /* re-created: continues the numbering, documents.previous is null */
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update", "{\"state\":{\"reported\":{\"y\":1}}}", NOW_MS + 7000), MW_OK);
  CHECK_INT(s.n, 2);
  CHECK(strstr(s.payload[0], "\"version\":4") != NULL);
  CHECK(s.n == 2 && strstr(s.payload[1], "\"previous\":null") != NULL);
  /* delete content is ignored: a garbage payload still deletes */
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/delete", "\xff garbage", NOW_MS + 8000), MW_OK);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/delete/accepted");
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* State, version and tombstones survive close + reopen; the database is in WAL mode. */
static void test_persistence(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update",
                "{\"state\":{\"desired\":{\"a\":{\"b\":[1,2]}},\"reported\":{\"a\":{\"b\":[1]}}}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/n1/update", "{\"state\":{\"reported\":{\"k\":\"v\"}}}", NOW_MS),
            MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/gone/update", "{\"state\":{}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/gone/update", "{\"state\":{}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/gone/delete", "", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "", NOW_MS + 1000), MW_OK);
  char *before = strdup(s.payload[0]);
  mw_shadow_service_close(svc);

  svc = open_svc(NULL);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "", NOW_MS + 1000), MW_OK);
  CHECK_STR(s.payload[0], before);
  CHECK(strstr(before, "\"delta\":{\"a\":{\"b\":[1,2]}}") != NULL);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/update", "{\"state\":{\"reported\":{\"z\":1}},\"version\":1}", NOW_MS),
            MW_OK);
  CHECK_STR(s.topic[0], "$aws/things/car1/shadow/update/accepted");
  CHECK(strstr(s.payload[0], "\"version\":2") != NULL);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/n1/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"k\":\"v\"") != NULL);
  /* the deleted named shadow is still deleted, and its tombstone keeps the numbering */
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/gone/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"code\":404") != NULL);
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/name/gone/update", "{\"state\":{}}", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"version\":3") != NULL);
  free(before);
  sink_clear(&s);
  mw_shadow_service_close(svc);

  sqlite3 *db;
  CHECK_INT(sqlite3_open(db_path, &db), SQLITE_OK);
  sqlite3_stmt *st;
  CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
  CHECK_INT(sqlite3_step(st), SQLITE_ROW);
  CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  CHECK_INT(sqlite3_prepare_v2(db, "SELECT count(*) FROM shadow WHERE thing = 'car1'", -1, &st, NULL), SQLITE_OK);
  CHECK_INT(sqlite3_step(st), SQLITE_ROW);
  CHECK_INT(sqlite3_column_int(st, 0), 3); /* classic, n1, gone */
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* Topics that are not shadow requests are ignored: nothing emitted, nothing stored. */
static void test_not_requests(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  const char *topics[] = {
    "$aws/things/car1/shadow/update/accepted", "$aws/things/car1/shadow/update/delta",
    "$aws/things/car1/shadow/get/rejected", "$aws/things/car1/shadow/name/x/update/documents",
    "$aws/things/car 1/shadow/update", "$aws/things/car1/shadow/list", "cars/car1/shadow/update", "",
  };
  for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
    CHECK_INT(req(svc, &s, topics[i], "{\"state\":{\"reported\":{\"a\":1}}}", NOW_MS), MW_ERR_INVALID);
    CHECK_INT(s.n, 0);
  }
  CHECK_INT(req(svc, &s, "$aws/things/car1/shadow/get", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"code\":404") != NULL);
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* Options reach the service: the delta rule and the delete version. */
static void test_service_options(void) {
  fresh_db();
  mw_shadow_options_t opt;
  mw_shadow_options_init(&opt);
  opt.delta_rule = MW_SHADOW_DELTA_ALWAYS;
  opt.delete_version = MW_SHADOW_DELETE_VERSION_NEXT;
  mw_shadow_service_t *svc = open_svc(&opt);
  CHECK_INT(mw_shadow_service_options(svc)->delta_rule, MW_SHADOW_DELTA_ALWAYS);
  sink_t s = {0};
  CHECK_INT(req(svc, &s, "$aws/things/c/shadow/update", "{\"state\":{\"desired\":{\"a\":1}}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/c/shadow/update", "{\"state\":{\"reported\":{\"a\":2}}}", NOW_MS), MW_OK);
  CHECK_INT(s.n, 3);
  CHECK_STR(s.topic[1], "$aws/things/c/shadow/update/delta");
  CHECK_INT(req(svc, &s, "$aws/things/c/shadow/delete", "", NOW_MS), MW_OK);
  CHECK(strstr(s.payload[0], "\"version\":3") != NULL);
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

/* Store: named-shadow listing, tombstone pruning, device-side cache save/load. */
static bool collect(void *ud, const char *name) {
  char *buf = ud;
  strcat(buf, name);
  strcat(buf, ",");
  return true;
}

static void test_store(void) {
  fresh_db();
  mw_shadow_service_t *svc = open_svc(NULL);
  sink_t s = {0};
  const char *names[] = {"b", "a", "c"};
  for (int i = 0; i < 3; i++) {
    char topic[128];
    snprintf(topic, sizeof topic, "$aws/things/t1/shadow/name/%s/update", names[i]);
    CHECK_INT(req(svc, &s, topic, "{\"state\":{}}", NOW_MS), MW_OK);
  }
  CHECK_INT(req(svc, &s, "$aws/things/t1/shadow/update", "{\"state\":{}}", NOW_MS), MW_OK);
  CHECK_INT(req(svc, &s, "$aws/things/t1/shadow/name/c/delete", "", NOW_MS), MW_OK);
  char list[64] = "";
  mw_shadow_store_t *st = mw_shadow_service_store(svc);
  CHECK_INT(mw_shadow_store_list(st, "t1", collect, list), MW_OK);
  CHECK_STR(list, "a,b,");
  int removed = -1;
  CHECK_INT(mw_shadow_store_prune(st, NOW_MS / 1000, &removed), MW_OK);
  CHECK_INT(removed, 0); /* deleted at NOW, not before */
  CHECK_INT(mw_shadow_service_prune(svc, NOW_MS + (MW_SHADOW_RECREATE_WINDOW_S + 1) * 1000LL), MW_OK);
  mw_shadow_doc_t doc;
  CHECK_INT(mw_shadow_store_load(st, "t1", "c", &doc), MW_ERR_NOT_FOUND);
  /* a cache in its own file: save, close, load */
  char cache[300];
  snprintf(cache, sizeof cache, "%s.cache", db_path);
  unlink(cache);
  mw_shadow_store_t *c;
  CHECK_INT(mw_shadow_store_open(cache, true, &c), MW_OK);
  const char *g = "{\"state\":{\"desired\":{\"x\":1},\"reported\":{\"x\":0},\"delta\":{\"x\":1}},"
                  "\"metadata\":{\"desired\":{\"x\":{\"timestamp\":5}},\"reported\":{\"x\":{\"timestamp\":4}}},"
                  "\"version\":9,\"timestamp\":6}";
  CHECK_INT(mw_shadow_doc_deserialize(g, strlen(g), &doc), MW_OK);
  CHECK_INT(mw_shadow_store_save(c, "dev", "", &doc), MW_OK);
  mw_shadow_doc_free(&doc);
  mw_shadow_store_close(c);
  CHECK_INT(mw_shadow_store_open(cache, false, &c), MW_OK);
  CHECK_INT(mw_shadow_store_load(c, "dev", NULL, &doc), MW_OK);
  CHECK(doc.exists);
  CHECK_INT(doc.version, 9);
  char *json = NULL;
  mw_shadow_error_t err;
  CHECK_INT(mw_shadow_doc_get(&doc, "dev", NULL, 7, NULL, &json, &err), MW_OK);
  CHECK_JSON(json, "{\"state\":{\"desired\":{\"x\":1},\"reported\":{\"x\":0},\"delta\":{\"x\":1}},"
                   "\"metadata\":{\"desired\":{\"x\":{\"timestamp\":5}},\"reported\":{\"x\":{\"timestamp\":4}}},"
                   "\"version\":9,\"timestamp\":7}");
  free(json);
  mw_shadow_doc_free(&doc);
  CHECK_INT(mw_shadow_store_remove(c, "dev", ""), MW_OK);
  CHECK_INT(mw_shadow_store_load(c, "dev", "", &doc), MW_ERR_NOT_FOUND);
  mw_shadow_store_close(c);
  unlink(cache);
  /* an unopenable path fails cleanly */
  CHECK_INT(mw_shadow_store_open("/nonexistent-dir/x.db", false, &c), MW_ERR_IO);
  CHECK(c == NULL);
  sink_clear(&s);
  mw_shadow_service_close(svc);
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {
    MW_TEST(test_update_messages_in_order),
    MW_TEST(test_rejections),
    MW_TEST(test_get_missing_404),
    MW_TEST(test_named_shadows),
    MW_TEST(test_delete),
    MW_TEST(test_persistence),
    MW_TEST(test_not_requests),
    MW_TEST(test_service_options),
    MW_TEST(test_store),
  };
  int rc = mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  fresh_db();
  return rc;
}
