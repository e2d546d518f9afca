/*
** libFuzzer target: the REPL wire protocol as both sides read it. The input is a byte
** stream off the socket, fed in pieces of varying size (as reads return them) into the
** same buffer-and-parse loop the runtime and the client use; hello payloads go through the
** key=value reader. The first byte picks the direction and the piece size.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_repl_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int from_client = data[0] & 1;
  size_t piece = (size_t)(data[0] >> 1) + 1;
  data++;
  size--;
  mw_repl_buf_t b = {0};
  size_t fed = 0;
  int dead = 0;
  while (fed < size && !dead) {
    size_t n = size - fed < piece ? size - fed : piece;
    if (mw_repl_buf_append(&b, data + fed, n) != MW_OK) abort();
    fed += n;
    for (;;) {
      mw_repl_frame_t f;
      size_t used;
      char err[160];
      mw_status_t st = mw_repl_frame_parse(b.data + b.off, b.len - b.off, from_client, 4096, &f, &used, err,
                                           sizeof err);
      if (st == MW_ERR_STATE) break;
      if (st != MW_OK) {
        dead = 1;
        break;
      }
      if (used != MW_REPL_HEADER + (size_t)f.len || used > b.len - b.off) abort();
      if (!mw_repl_frame_type_ok(f.type, from_client)) abort();
      if (f.type == MW_REPL_HELLO) {
        char v[64];
        (void)mw_repl_kv_get(f.data, f.len, "proto", v, sizeof v);
        (void)mw_repl_kv_get(f.data, f.len, "thing", v, sizeof v);
        if (strlen(v) >= sizeof v) abort();
      }
      /* re-encoding gives the same bytes */
      mw_repl_buf_t out = {0};
      if (mw_repl_buf_frame(&out, f.type, f.data, f.len) != MW_OK) abort();
      if (out.len != used || memcmp(out.data, b.data + b.off, used) != 0) abort();
      mw_repl_buf_free(&out);
      mw_repl_buf_consume(&b, used);
    }
  }
  mw_repl_buf_free(&b);
  return 0;
}
