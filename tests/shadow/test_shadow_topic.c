/*
** Shadow topic parse/build: every valid topic of aws-iot.md §1.1, and the malformed ones.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <string.h>

#include "mw_shadow_topic.h"

static mw_status_t parse(const char *topic, mw_shadow_topic_t *t) {
  return mw_shadow_topic_parse(topic, strlen(topic), t);
}

static int seg_is(const char *p, size_t n, const char *want) {
  return n == strlen(want) && (n == 0 || memcmp(p, want, n) == 0);
}

static void test_parse_classic_and_named(void) {
  static const struct {
    const char *topic, *thing, *shadow;
    mw_shadow_op_t op;
    mw_shadow_suffix_t suffix;
  } ok[] = {
    {"$aws/things/car-1/shadow/get", "car-1", "", MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE},
    {"$aws/things/car-1/shadow/get/accepted", "car-1", "", MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_ACCEPTED},
    {"$aws/things/car-1/shadow/get/rejected", "car-1", "", MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_REJECTED},
    {"$aws/things/car-1/shadow/update", "car-1", "", MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_NONE},
    {"$aws/things/car-1/shadow/update/accepted", "car-1", "", MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_ACCEPTED},
    {"$aws/things/car-1/shadow/update/rejected", "car-1", "", MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_REJECTED},
    {"$aws/things/car-1/shadow/update/delta", "car-1", "", MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_DELTA},
    {"$aws/things/car-1/shadow/update/documents", "car-1", "", MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_DOCUMENTS},
    {"$aws/things/car-1/shadow/delete", "car-1", "", MW_SHADOW_OP_DELETE, MW_SHADOW_SUFFIX_NONE},
    {"$aws/things/car-1/shadow/delete/accepted", "car-1", "", MW_SHADOW_OP_DELETE, MW_SHADOW_SUFFIX_ACCEPTED},
    {"$aws/things/car-1/shadow/delete/rejected", "car-1", "", MW_SHADOW_OP_DELETE, MW_SHADOW_SUFFIX_REJECTED},
    {"$aws/things/car-1/shadow/name/settings/get", "car-1", "settings", MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE},
    {"$aws/things/car-1/shadow/name/settings/update/delta", "car-1", "settings", MW_SHADOW_OP_UPDATE,
     MW_SHADOW_SUFFIX_DELTA},
    {"$aws/things/T:h_i-ng/shadow/name/a:b_c-D/delete/rejected", "T:h_i-ng", "a:b_c-D", MW_SHADOW_OP_DELETE,
     MW_SHADOW_SUFFIX_REJECTED},
    /* "name" and op words are fine as names */
    {"$aws/things/name/shadow/name/name/update", "name", "name", MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_NONE},
    {"$aws/things/shadow/shadow/name/get/get", "shadow", "get", MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    mw_shadow_topic_t t;
    CHECK_INT(parse(ok[i].topic, &t), MW_OK);
    if (parse(ok[i].topic, &t) != MW_OK) {
      fprintf(stderr, "  topic: %s\n", ok[i].topic);
      continue;
    }
    CHECK(seg_is(t.thing, t.thing_len, ok[i].thing));
    CHECK(seg_is(t.shadow, t.shadow_len, ok[i].shadow));
    CHECK_INT(t.op, ok[i].op);
    CHECK_INT(t.suffix, ok[i].suffix);
  }
}

static void test_parse_rejects(void) {
  char long_thing[300], long_shadow[300];
  memset(long_thing, 0, sizeof long_thing);
  memset(long_shadow, 0, sizeof long_shadow);
  strcpy(long_thing, "$aws/things/");
  memset(long_thing + 12, 't', 129);
  strcat(long_thing, "/shadow/get");
  strcpy(long_shadow, "$aws/things/t/shadow/name/");
  memset(long_shadow + strlen(long_shadow), 's', 65);
  strcat(long_shadow, "/get");
  const char *bad[] = {
    "", "$aws", "$aws/things/", "$aws/things/t", "$aws/things/t/shadow", "$aws/things/t/shadow/",
    "$aws/things/t/shadow/get/", "$aws/things/t/shadow/gets", "$aws/things/t/shadow/ge",
    "$aws/things/t/shadow/GET", "$aws/things/t/Shadow/get", "$AWS/things/t/shadow/get",
    "aws/things/t/shadow/get", "/$aws/things/t/shadow/get", "$aws/things//shadow/get",
    "$aws/things/t t/shadow/get", "$aws/things/t+/shadow/get", "$aws/things/#/shadow/get",
    "$aws/things/t.x/shadow/get", "$aws/things/t/shadow/get/delta", "$aws/things/t/shadow/delete/documents",
    "$aws/things/t/shadow/update/accepted/x", "$aws/things/t/shadow/update/foo", "$aws/things/t/shadow/name/get",
    "$aws/things/t/shadow/name//get", "$aws/things/t/shadow/name/s", "$aws/things/t/shadow/name/s/",
    "$aws/things/t/shadow/name/s/x", "$aws/things/t/shadow/name/s p/get", "$aws/things/t/shadow/x/get",
    "$aws/things/t/shadow/get/acceptedx", "$aws/things/t/shadow/update/delta/", "$aws/thingss/t/shadow/get",
    long_thing, long_shadow,
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    mw_shadow_topic_t t;
    memset(&t, 0x5a, sizeof t);
    mw_shadow_topic_t before = t;
    mw_status_t st = parse(bad[i], &t);
    CHECK_INT(st, MW_ERR_INVALID);
    if (st == MW_OK) fprintf(stderr, "  accepted: %s\n", bad[i]);
    CHECK_MEM(&t, &before, sizeof t); /* untouched on failure */
  }
  /* the length bounds are 128 and 64 exactly */
  long_thing[12 + 128] = '\0';
  strcpy(long_thing + 12 + 128, "/shadow/get");
  mw_shadow_topic_t t;
  CHECK_INT(parse(long_thing, &t), MW_OK);
  CHECK_INT(t.thing_len, 128);
  /* parse honours len: a prefix of a longer buffer */
  const char *s = "$aws/things/t/shadow/get/accepted";
  CHECK_INT(mw_shadow_topic_parse(s, 24, &t), MW_OK);
  CHECK_INT(t.suffix, MW_SHADOW_SUFFIX_NONE);
  CHECK_INT(mw_shadow_topic_parse(s, 23, &t), MW_ERR_INVALID);
  /* embedded NUL */
  CHECK_INT(mw_shadow_topic_parse("$aws/things/t\0x/shadow/get", 26, &t), MW_ERR_INVALID);
  CHECK_INT(mw_shadow_topic_parse(NULL, 0, &t), MW_ERR_INVALID);
}

static void test_build(void) {
  char buf[MW_SHADOW_TOPIC_MAX];
  size_t n = 0;
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "car1", 4, NULL, 0, MW_SHADOW_OP_UPDATE, MW_SHADOW_SUFFIX_DELTA, &n),
            MW_OK);
  CHECK_STR(buf, "$aws/things/car1/shadow/update/delta");
  CHECK_INT(n, strlen(buf));
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "car1", 4, "cfg", 3, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE, &n),
            MW_OK);
  CHECK_STR(buf, "$aws/things/car1/shadow/name/cfg/get");
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "car1", 4, "", 0, MW_SHADOW_OP_DELETE, MW_SHADOW_SUFFIX_REJECTED, NULL),
            MW_OK);
  CHECK_STR(buf, "$aws/things/car1/shadow/delete/rejected");
  /* combinations AWS does not have, bad names */
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "car1", 4, NULL, 0, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_DELTA, &n),
            MW_ERR_INVALID);
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "car1", 4, NULL, 0, MW_SHADOW_OP_DELETE, MW_SHADOW_SUFFIX_DOCUMENTS,
                                  &n), MW_ERR_INVALID);
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "car 1", 5, NULL, 0, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE, &n),
            MW_ERR_INVALID);
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "", 0, NULL, 0, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE, &n),
            MW_ERR_INVALID);
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "c", 1, "a/b", 3, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_NONE, &n),
            MW_ERR_INVALID);
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, "c", 1, NULL, 0, (mw_shadow_op_t)7, MW_SHADOW_SUFFIX_NONE, &n),
            MW_ERR_INVALID);
  /* buffer exactly large enough, and one byte short */
  const char *want = "$aws/things/car1/shadow/get/accepted";
  size_t need = strlen(want) + 1;
  CHECK_INT(mw_shadow_topic_build(buf, need, "car1", 4, NULL, 0, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_ACCEPTED, &n), MW_OK);
  CHECK_STR(buf, want);
  CHECK_INT(mw_shadow_topic_build(buf, need - 1, "car1", 4, NULL, 0, MW_SHADOW_OP_GET, MW_SHADOW_SUFFIX_ACCEPTED, &n),
            MW_ERR_TOO_LARGE);
  CHECK_STR(buf, "");
  /* the longest topic fits MW_SHADOW_TOPIC_MAX */
  char thing[129], shadow[65];
  memset(thing, 'T', 128);
  memset(shadow, 'S', 64);
  CHECK_INT(mw_shadow_topic_build(buf, sizeof buf, thing, 128, shadow, 64, MW_SHADOW_OP_UPDATE,
                                  MW_SHADOW_SUFFIX_DOCUMENTS, &n), MW_OK);
  CHECK_INT(n, MW_SHADOW_TOPIC_MAX - 1);
}

/* build then parse gives back every field, for every valid combination. */
static void test_round_trip(void) {
  for (int op = MW_SHADOW_OP_GET; op <= MW_SHADOW_OP_DELETE; op++) {
    for (int sfx = MW_SHADOW_SUFFIX_NONE; sfx <= MW_SHADOW_SUFFIX_DOCUMENTS; sfx++) {
      for (int named = 0; named < 2; named++) {
        char buf[MW_SHADOW_TOPIC_MAX];
        size_t n;
        mw_status_t st = mw_shadow_topic_build(buf, sizeof buf, "dev:1", 5, named ? "nm_2" : NULL, named ? 4 : 0,
                                               (mw_shadow_op_t)op, (mw_shadow_suffix_t)sfx, &n);
        int valid = sfx < MW_SHADOW_SUFFIX_DELTA || op == MW_SHADOW_OP_UPDATE;
        CHECK_INT(st, valid ? MW_OK : MW_ERR_INVALID);
        if (st != MW_OK) continue;
        mw_shadow_topic_t t;
        CHECK_INT(mw_shadow_topic_parse(buf, n, &t), MW_OK);
        CHECK(seg_is(t.thing, t.thing_len, "dev:1"));
        CHECK(seg_is(t.shadow, t.shadow_len, named ? "nm_2" : ""));
        CHECK_INT(t.op, op);
        CHECK_INT(t.suffix, sfx);
      }
    }
  }
  CHECK_STR(mw_shadow_op_name(MW_SHADOW_OP_DELETE), "delete");
  CHECK_STR(mw_shadow_suffix_name(MW_SHADOW_SUFFIX_DOCUMENTS), "documents");
  CHECK_STR(mw_shadow_suffix_name((mw_shadow_suffix_t)99), "");
}

static void test_name_valid(void) {
  CHECK(mw_shadow_name_valid("a", 1, 64));
  CHECK(mw_shadow_name_valid("A-z_0:9", 7, 64));
  CHECK(!mw_shadow_name_valid("", 0, 64));
  CHECK(!mw_shadow_name_valid(NULL, 3, 64));
  CHECK(!mw_shadow_name_valid("a.b", 3, 64));
  CHECK(!mw_shadow_name_valid("a\xc3\xa9", 3, 64));
  CHECK(!mw_shadow_name_valid("abc", 3, 2));
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {
    MW_TEST(test_parse_classic_and_named),
    MW_TEST(test_parse_rejects),
    MW_TEST(test_build),
    MW_TEST(test_round_trip),
    MW_TEST(test_name_valid),
  };
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
