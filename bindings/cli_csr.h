/*
** Subject options of the commands that build certificate requests (moonwire se csr,
** moonwire pkcs11 csr): --cn NAME --o ORG --ou UNIT --c CC --st STATE --l CITY
** --serial SN --dns NAME (repeatable).
*/
#ifndef MW_CLI_CSR_H
#define MW_CLI_CSR_H

#include <openssl/evp.h>

#include "mw_csr.h"

#define MW_CLI_MAX_DNS 8

typedef struct {
  mw_csr_subject_t subj;
  const char *dns[MW_CLI_MAX_DNS + 1];
  int ndns;
} mw_cli_subject_t;

/*
** If argv[*i] is a subject option, takes its value (advancing *i) and returns 1; returns 0
** when it is not one, or MW_EXIT_USAGE after printing why (cmd names the command).
*/
int mw_cli_subject_opt(const char *cmd, int argc, char **argv, int *i, mw_cli_subject_t *s);

/* Builds the request with key and prints its PEM on stdout. Returns an exit status. */
int mw_cli_print_csr(const char *cmd, EVP_PKEY *key, mw_cli_subject_t *s);

#define MW_CLI_SUBJECT_HELP                                                                 \
  "  subject: --cn NAME (required) [--o ORG] [--ou UNIT] [--c CC] [--st STATE] [--l CITY]\n" \
  "           [--serial SN] [--dns NAME]...\n"

#endif
