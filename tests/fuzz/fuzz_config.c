/*
** libFuzzer target: the configuration loader. The input is evaluated as a
** configuration chunk (under its instruction limit) and checked against the schema.
*/
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>

#include "lb.h"
#include "lb_config.h"
#include "lb_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mw_rt_t rt;
  static uv_loop_t loop;
  if (!rt.L) {
    uv_loop_init(&loop);
    rt.loop = &loop;
    rt.mem_limit = 64u << 20;
    if (!lb_state_new(&rt, NULL)) abort();
  }
  mw_config_t cfg;
  char err[1024];
  (void)lb_config_load_text(rt.L, "fuzz.lua", (const char *)data, size, NULL, &cfg, err, sizeof err);
  mw_config_free(&cfg);
  lua_settop(rt.L, 0);
  lua_gc(rt.L, LUA_GCSTEP, 0);
  return 0;
}
