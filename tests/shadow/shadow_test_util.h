/*
** Helpers shared by the shadow tests: JSON comparison that ignores member order.
*/
#ifndef SHADOW_TEST_UTIL_H
#define SHADOW_TEST_UTIL_H

#include <stdlib.h>

#include "mw_shadow_doc.h"
#include "mw_test.h"

/* Compares two JSON texts structurally (mw_shadow_json_equal); prints both when they differ. */
static inline int json_same(const char *file, int line, const char *actual, const char *expected) {
  cJSON *a = actual ? cJSON_Parse(actual) : NULL, *e = cJSON_Parse(expected);
  int same = a && e && mw_shadow_json_equal(a, e);
  if (!e) fprintf(stderr, "%s:%d: bad expected JSON in test: %s\n", file, line, expected);
  if (!same)
    fprintf(stderr, "%s:%d: %s: JSON differs\n  actual:   %s\n  expected: %s\n", file, line, mw_test_current,
            actual ? actual : "(null)", expected);
  cJSON_Delete(a);
  cJSON_Delete(e);
  return same;
}

#define CHECK_JSON(actual, expected) do { if (!json_same(__FILE__, __LINE__, (actual), (expected))) \
    mw_test_failures++; } while (0)

#endif
