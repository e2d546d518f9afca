/*
** libFuzzer target: the CSR parser/verifier the provisioning service runs on requests
** from the network.
*/
#include <stddef.h>
#include <stdint.h>

#include "mw_csr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char cn[65], err[200];
  (void)mw_csr_verify((const char *)data, size, cn, sizeof cn, err, sizeof err);
  return 0;
}
