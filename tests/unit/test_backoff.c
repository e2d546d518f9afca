#define MW_TEST_IMPLEMENTATION
#include "mw_backoff.h"
#include "mw_test.h"

static void test_first_retry_within_a_second(void) {
  for (int run = 0; run < 200; run++) {
    mw_backoff_t b;
    mw_backoff_init(&b, 1000, 60000, 0);
    CHECK(mw_backoff_next(&b) <= 1000);
  }
}

static void test_ceiling_doubles_up_to_cap(void) {
  mw_backoff_t b;
  mw_backoff_init(&b, 1000, 8000, 0);
  uint32_t max_seen[8] = {0};
  /* Full jitter: each attempt's delay stays under min(cap, base*2^n); over many runs the
     largest one seen approaches that ceiling. */
  for (int run = 0; run < 2000; run++) {
    mw_backoff_reset(&b);
    for (int i = 0; i < 6; i++) {
      uint32_t d = mw_backoff_next(&b);
      if (d > max_seen[i]) max_seen[i] = d;
    }
  }
  const uint32_t ceil[6] = {1000, 2000, 4000, 8000, 8000, 8000};
  for (int i = 0; i < 6; i++) {
    CHECK(max_seen[i] <= ceil[i]);
    CHECK(max_seen[i] > ceil[i] * 9 / 10);
  }
}

static void test_jitter_spreads(void) {
  mw_backoff_t b;
  mw_backoff_init(&b, 1000, 60000, 0);
  uint32_t lo = 60000, hi = 0;
  for (int run = 0; run < 500; run++) {
    mw_backoff_reset(&b);
    uint32_t d = mw_backoff_next(&b);
    if (d < lo) lo = d;
    if (d > hi) hi = d;
  }
  CHECK(lo < 200);
  CHECK(hi > 800);
}

static void test_floor_for_secure_element(void) {
  mw_backoff_t b;
  mw_backoff_init(&b, 1000, 60000, 5000);
  for (int i = 0; i < 50; i++) CHECK(mw_backoff_next(&b) >= 5000);
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {MW_TEST(test_first_retry_within_a_second),
                                         MW_TEST(test_ceiling_doubles_up_to_cap), MW_TEST(test_jitter_spreads),
                                         MW_TEST(test_floor_for_secure_element)};
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
