#define MW_TEST_IMPLEMENTATION
#include <string.h>

#include "mw_test.h"
#include "mw_topic.h"

static mw_status_t name(const char *t, char *why) { return mw_topic_check_name(t, strlen(t), why, 160); }
static mw_status_t filt(const char *t, char *why) { return mw_topic_check_filter(t, strlen(t), why, 160); }

static void test_names_accepted(void) {
  char why[160];
  CHECK_INT(name("cars/car-01/telemetry", why), MW_OK);
  CHECK_INT(name("$aws/things/car-01/shadow/update", why), MW_OK);
  CHECK_INT(name("a/b/c/d/e/f/g/h", why), MW_OK); /* exactly 7 slashes */
  CHECK_INT(name("caf\xc3\xa9/temp", why), MW_OK);
  /* The Basic Ingest prefix does not count against the 7 slashes. */
  CHECK_INT(name("$aws/rules/myrule/a/b/c/d/e/f/g/h", why), MW_OK);
}

static void test_names_rejected_with_rule(void) {
  char why[160];
  CHECK_INT(name("", why), MW_ERR_INVALID);
  CHECK(strstr(why, "empty") != NULL);
  CHECK_INT(name("a/b/c/d/e/f/g/h/i", why), MW_ERR_INVALID);
  CHECK(strstr(why, "8 '/'") != NULL);
  CHECK_INT(name("cars/+/x", why), MW_ERR_INVALID);
  CHECK(strstr(why, "wildcards") != NULL);
  CHECK_INT(name("cars/#", why), MW_ERR_INVALID);
  CHECK_INT(name("bad\xff/utf8", why), MW_ERR_INVALID);
  CHECK(strstr(why, "UTF-8") != NULL);
  char longt[300];
  memset(longt, 'a', 257);
  longt[257] = '\0';
  CHECK_INT(name(longt, why), MW_ERR_INVALID);
  CHECK(strstr(why, "257 bytes") != NULL);
  longt[256] = '\0';
  CHECK_INT(name(longt, why), MW_OK);
  CHECK_INT(mw_topic_check_name("a\0b", 3, why, sizeof why), MW_ERR_INVALID);
  CHECK(strstr(why, "NUL") != NULL);
}

static void test_filters(void) {
  char why[160];
  CHECK_INT(filt("cars/+/telemetry", why), MW_OK);
  CHECK_INT(filt("cars/#", why), MW_OK);
  CHECK_INT(filt("#", why), MW_OK);
  CHECK_INT(filt("+", why), MW_OK);
  CHECK_INT(filt("+/+/#", why), MW_OK);
  CHECK_INT(filt("cars/car+/x", why), MW_ERR_INVALID);
  CHECK(strstr(why, "'+'") != NULL);
  CHECK_INT(filt("cars/#/x", why), MW_ERR_INVALID);
  CHECK(strstr(why, "'#'") != NULL);
  CHECK_INT(filt("cars#", why), MW_ERR_INVALID);
  CHECK_INT(filt("", why), MW_ERR_INVALID);
}

static void test_matching(void) {
  CHECK(mw_topic_matches("cars/+/telemetry", "cars/car-01/telemetry"));
  CHECK(!mw_topic_matches("cars/+/telemetry", "cars/car-01/cmd"));
  CHECK(mw_topic_matches("cars/#", "cars/car-01/cmd"));
  CHECK(mw_topic_matches("cars/#", "cars"));
  CHECK(!mw_topic_matches("#", "$aws/things/x/shadow/update"));
  CHECK(mw_topic_matches("$aws/things/+/shadow/#", "$aws/things/x/shadow/update/delta"));
  CHECK(!mw_topic_matches("a/b", "a/b/c"));
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {MW_TEST(test_names_accepted), MW_TEST(test_names_rejected_with_rule),
                                         MW_TEST(test_filters), MW_TEST(test_matching)};
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
