/*
** AllowedPattern regular expressions: bounding what a pattern may cost glibc to compile
** before it is compiled, and compiling it anchored to the whole value. Shared by the check
** at parse time and the match when a template is applied.
*/
#include "mw_prov_template_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
** glibc's regcomp copies the sub-tree of every repetition (x+ is x x*, x{n} is n copies of x),
** so nested repetitions multiply: "((a+)+)+..." or "(a{99}){99}{99}" take exponential time and
** memory to compile (fuzz_prov_template: an AllowedPattern of 100 '+' used gigabytes). This
** bounds the product of the repetition factors, which bounds the compiled size whatever the
** nesting; real AllowedPatterns ("[0-9A-F]{12}") are far below it.
*/
bool mw_prov_tpl_pattern_bounded(const char *pat) {
  if (strlen(pat) > MW_PROV_TPL_PATTERN_MAX_LEN) return false;
  double copies = 1;
  bool bracket = false, after_repeat = false;
  int repeats = 0;
  for (const char *q = pat; *q; q++) {
    if (*q == '\\' && q[1]) {
      q++;
      continue;
    }
    if (bracket) {
      if (*q == ']') bracket = false;
      continue;
    }
    bool repeat = *q == '*' || *q == '+' || *q == '?' || *q == '{';
    /* "x**", "x{4}*": undefined in POSIX ERE, and each stacked operator makes glibc's
       closure computation much slower; never needed. */
    if (repeat && (after_repeat || ++repeats > MW_PROV_TPL_PATTERN_MAX_REPEATS)) return false;
    after_repeat = repeat;
    if (*q == '[') {
      bracket = true;
      if (q[1] == '^') q++;
      if (q[1] == ']') q++; /* a leading ']' is a member */
    } else if (*q == '+') {
      copies *= 2;
    } else if (*q == '{') {
      char *end;
      long n = strtol(q + 1, &end, 10), m = n;
      if (*end == ',' && isdigit((unsigned char)end[1])) m = strtol(end + 1, &end, 10);
      if (n < 0 || m < 0 || n > MW_PROV_TPL_PATTERN_MAX_COPIES || m > MW_PROV_TPL_PATTERN_MAX_COPIES) return false;
      copies *= (double)(m > n ? m : n) + 1;
      const char *close = strchr(q, '}');
      if (close) q = close; /* the bound is one operator */
    }
    if (copies > MW_PROV_TPL_PATTERN_MAX_COPIES) return false;
  }
  return true;
}

int mw_prov_tpl_pattern_compile(regex_t *re, const char *pat) {
  char *anchored = malloc(strlen(pat) + 5);
  if (!anchored) return -1;
  sprintf(anchored, "^(%s)$", pat);
  int rc = regcomp(re, anchored, REG_EXTENDED | REG_NOSUB);
  free(anchored);
  return rc;
}
