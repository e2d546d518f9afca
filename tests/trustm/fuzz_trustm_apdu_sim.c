/*
** libFuzzer: the simulator's application layer with arbitrary APDUs, after a real
** OpenApplication. The input is a sequence of length-prefixed APDUs (2-byte length), so
** multi-step commands (CalcHash start/continue/final, key generation then signing)
** are reachable.
*/
#include <stdint.h>
#include <string.h>

#include "mw_trustm_sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t open_app[] = {0xF0, 0x00, 0x00, 0x10, 0xD2, 0x76, 0x00, 0x00, 0x04, 'G', 'e', 'n',
                                     'A',  'u',  't',  'h',  'A',  'p',  'p',  'l'};
  static uint8_t resp[1600];
  mw_trustm_sim_config_t cfg = {.instant = true};
  mw_trustm_sim_t *s;
  if (mw_trustm_sim_create(&cfg, &s) != MW_OK) return 0;
  (void)mw_trustm_sim_apdu(s, open_app, sizeof open_app, resp, sizeof resp);
  size_t i = 0;
  while (size - i >= 2) {
    size_t n = (size_t)data[i] << 8 | data[i + 1];
    i += 2;
    if (n > size - i) n = size - i;
    size_t r = mw_trustm_sim_apdu(s, data + i, n, resp, sizeof resp);
    if (r < 4 || r > sizeof resp) __builtin_trap();
    i += n;
  }
  mw_trustm_sim_destroy(s);
  return 0;
}
