/*
** Minimal unit-test harness: each test file defines test functions, lists them in a
** table and calls mw_test_main(). Failures print file:line and the failing expression;
** the process exits non-zero when any check failed, so CTest sees it.
*/
#ifndef MW_TEST_H
#define MW_TEST_H

#include <stdio.h>
#include <string.h>

extern int mw_test_failures;
extern const char *mw_test_current;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, mw_test_current, #cond); \
    mw_test_failures++; } } while (0)
#define CHECK_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); if (_a != _b) { \
    fprintf(stderr, "%s:%d: %s: %s == %lld, expected %lld\n", __FILE__, __LINE__, mw_test_current, #a, _a, _b); \
    mw_test_failures++; } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b) != 0) { \
    fprintf(stderr, "%s:%d: %s: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, mw_test_current, #a, \
            _a ? _a : "(null)", _b ? _b : "(null)"); mw_test_failures++; } } while (0)
#define CHECK_MEM(a, b, n) do { if (memcmp((a), (b), (n)) != 0) { \
    fprintf(stderr, "%s:%d: %s: %s differs from %s\n", __FILE__, __LINE__, mw_test_current, #a, #b); \
    mw_test_failures++; } } while (0)

typedef struct { const char *name; void (*fn)(void); } mw_test_case_t;
#define MW_TEST(fn) { #fn, fn }

int mw_test_main(int argc, char **argv, const mw_test_case_t *cases, size_t n);

#ifdef MW_TEST_IMPLEMENTATION
int mw_test_failures = 0;
const char *mw_test_current = "";
/* Runs every case, or only those named on the command line. */
int mw_test_main(int argc, char **argv, const mw_test_case_t *cases, size_t n) {
  int ran = 0;
  for (size_t i = 0; i < n; i++) {
    int selected = argc < 2;
    for (int a = 1; a < argc; a++) if (strcmp(argv[a], cases[i].name) == 0) selected = 1;
    if (!selected) continue;
    int before = mw_test_failures;
    mw_test_current = cases[i].name;
    cases[i].fn();
    ran++;
    printf("%s %s\n", mw_test_failures == before ? "ok  " : "FAIL", cases[i].name);
  }
  printf("%d tests, %d failed checks\n", ran, mw_test_failures);
  return mw_test_failures ? 1 : (ran ? 0 : 2);
}
#endif
#endif
