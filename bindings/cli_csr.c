#include "cli_csr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int mw_cli_subject_opt(const char *cmd, int argc, char **argv, int *i, mw_cli_subject_t *s) {
  static const char *const names[] = {"--cn", "--o", "--ou", "--c", "--st", "--l", "--serial", "--dns", NULL};
  const char *a = argv[*i];
  int which = -1;
  for (int k = 0; names[k]; k++)
    if (!strcmp(a, names[k])) which = k;
  if (which < 0) return 0;
  if (*i + 1 >= argc) return mw_cli_usage_error(cmd, "%s needs a value", a);
  const char *v = argv[++*i];
  const char **slots[] = {&s->subj.cn, &s->subj.o, &s->subj.ou, &s->subj.c, &s->subj.st, &s->subj.l, &s->subj.serial};
  if (which < 7) {
    *slots[which] = v;
  } else {
    if (s->ndns >= MW_CLI_MAX_DNS) return mw_cli_usage_error(cmd, "at most %d --dns names", MW_CLI_MAX_DNS);
    s->dns[s->ndns++] = v;
    s->dns[s->ndns] = NULL;
    s->subj.dns = s->dns;
  }
  return 1;
}

int mw_cli_print_csr(const char *cmd, EVP_PKEY *key, mw_cli_subject_t *s) {
  if (!s->subj.cn) return mw_cli_usage_error(cmd, "csr needs --cn NAME");
  char *pem = NULL, err[512];
  mw_status_t st = mw_csr_build(key, &s->subj, &pem, err, sizeof err);
  if (st != MW_OK) return mw_cli_fail("csr: %s", err);
  fputs(pem, stdout);
  free(pem);
  return MW_EXIT_OK;
}
