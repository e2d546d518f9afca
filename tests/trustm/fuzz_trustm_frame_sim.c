/*
** libFuzzer: the simulator's bus side with arbitrary I2C transactions. The input is a
** list of operations: raw writes, reads of any register, writes of a frame the harness
** wraps with a correct FCS (so the fuzzer gets past the CRC into the data link,
** transport and application layers), and clock steps.
*/
#include <stdint.h>
#include <string.h>

#include "mw_trustm_int.h"
#include "mw_trustm_sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mw_trustm_sim_config_t cfg = {.lenient_guard = true, .no_sleep_mode = true, .instant = true};
  mw_trustm_sim_t *s;
  if (mw_trustm_sim_create(&cfg, &s) != MW_OK) return 0;
  mw_trustm_sim_advance_us(s, 20000);
  uint8_t buf[1 + 300], out[300];
  size_t i = 0;
  while (i < size) {
    uint8_t op = data[i++];
    size_t n = i < size ? data[i++] : 0;
    switch (op & 3) {
    case 0: /* raw write */
      if (n > size - i) n = size - i;
      (void)mw_trustm_sim_i2c_write(s, 0x30, data + i, n);
      i += n;
      break;
    case 1: /* read n bytes of register op>>2 (0x80 + ...) */
      buf[0] = (uint8_t)(0x80 + (op >> 2));
      (void)mw_trustm_sim_i2c_write(s, 0x30, buf, 1);
      (void)mw_trustm_sim_i2c_read(s, 0x30, out, n + 1);
      break;
    case 2: { /* frame with a correct FCS: FCTR = next byte, n packet bytes */
      uint8_t fctr = i < size ? data[i++] : 0;
      if (n > size - i) n = size - i;
      if (n > 272) n = 272;
      buf[0] = 0x80;
      size_t fl = mw__trustm_frame_build(fctr, data + i, n, buf + 1, sizeof buf - 1);
      (void)mw_trustm_sim_i2c_write(s, 0x30, buf, fl + 1);
      i += n;
      break;
    }
    default:
      mw_trustm_sim_advance_us(s, (uint64_t)n * 500);
      break;
    }
  }
  mw_trustm_sim_destroy(s);
  return 0;
}
