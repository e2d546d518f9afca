/*
** Budgets of every entry into Lua (bindings/lb_budget.c, lb_pcall_ex): runaway code is
** stopped within its time limit whatever the script does to catch the error, memory
** bombs hit the heap cap and the state stays usable, nested entries keep the outer
** deadline, interrupt_poll stops a call, finalizers outside any entry are bounded.
*/
#define MW_TEST_IMPLEMENTATION
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "lb_state.h"
#include "mw_test.h"

/* Limits are checked with wide margins: valgrind runs this 20-50x slower. */
#define SLACK_MS 3000

static mw_rt_t rt;

static void setup(uint32_t budget_ms, size_t mem_limit) {
  memset(&rt, 0, sizeof rt);
  rt.budget_ms = budget_ms;
  rt.mem_limit = mem_limit;
  rt.quarantine_after = 3;
  CHECK(lb_state_new(&rt, NULL) != NULL);
}

static void teardown(void) {
  lb_state_close(&rt);
  CHECK_INT(rt.live_refs, 0);
}

/* Runs chunk under lb_pcall_ex with opts; returns the status, elapsed ms in *ms. */
static int run(const char *chunk, const lb_call_opts_t *o, double *ms) {
  lua_State *L = rt.L;
  int top = lua_gettop(L);
  if (luaL_loadstring(L, chunk) != LUA_OK) {
    fprintf(stderr, "compile: %s\n", lua_tostring(L, -1));
    lua_settop(L, top);
    return -1;
  }
  uint64_t t0 = lb_now_ns();
  int st = lb_pcall_ex(L, 0, 0, o, "test", NULL);
  if (ms) *ms = (double)(lb_now_ns() - t0) / 1e6;
  CHECK_INT(lua_gettop(L), top);
  return st;
}

static int run_ok(const char *chunk) { return run(chunk, NULL, NULL) == LUA_OK; }

static void test_runaway_loop_stopped_within_limit(void) {
  setup(100, 32u << 20);
  double ms;
  CHECK(run("while true do end", NULL, &ms) == LUA_ERRRUN);
  CHECK_INT(rt.last_stop, LB_STOP_TIME);
  CHECK(ms >= 99 && ms < 100 + SLACK_MS);
  CHECK(strstr(rt.last_error, "time limit exceeded (100 ms)") != NULL);
  CHECK(strstr(rt.last_error, "[string \"while true do end\"]:1:") == rt.last_error);
  CHECK_INT(rt.stops_time, 1);
  /* The state is fine afterwards, and the next entry has its own full budget. */
  CHECK(run_ok("x = 0 for i = 1, 1000 do x = x + i end"));
  CHECK_INT(rt.last_stop, LB_STOP_NONE);
  teardown();
}

/* Every way a script might try to keep running after the stop. */
static void test_pcall_cannot_swallow_the_stop(void) {
  static const char *const sneaky[] = {
      "while true do pcall(function() while true do end end) end",
      "local n = 0 while true do local ok, e = pcall(function() while true do end end) n = n + 1 end",
      "while true do xpcall(function() while true do end end, function(e) while true do end end) end",
      "while true do xpcall(function() while true do end end, function(e) return e end) end",
      "local co = coroutine.wrap(function() while true do end end) while true do pcall(co) end",
      "while true do pcall(coroutine.wrap(function() while true do end end)) end",
      "while true do local co = coroutine.create(function() while true do end end) coroutine.resume(co) end",
      "do local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end end",
      "while true do pcall(error, 'x') end",
      "local outer = coroutine.wrap(function() local inner = coroutine.wrap(function() while true do end end) "
      "inner() end) outer()",
      "local co = coroutine.wrap(function() coroutine.yield() while true do end end) co() co()",
      "local co = coroutine.create(function() while true do pcall(coroutine.yield) end end) "
      "while true do coroutine.resume(co) end",
      "local co = coroutine.wrap(function() coroutine.yield() while true do end end) co() "
      "local t = {} for i = 1, 10 do t[i] = coroutine.create(function() while true do end end) end co()",
      "while true do pcall(coroutine.wrap(function() local x <close> = setmetatable({}, {__close = function() "
      "while true do end end}) while true do end end)) end",
      "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() "
      "while true do end end}) while true do end end) coroutine.resume(co) coroutine.close(co) while true do end",
      "while true do local co = coroutine.create(function() coroutine.yield() while true do end end) "
      "coroutine.resume(co) pcall(coroutine.resume, co) end",
      "local function f() return pcall(f) end while true do f() end",
      "while true do pcall(string.gsub, 'aaa', 'a', function() while true do end end) end",
      "while true do pcall(table.sort, {3, 2, 1}, function(a, b) while true do end end) end",
      "setmetatable(_G, {__index = function() while true do end end}) "
      "while true do pcall(function() return nope end) end",
      NULL};
  setup(50, 32u << 20);
  for (int i = 0; sneaky[i]; i++) {
    double ms;
    int st = run(sneaky[i], NULL, &ms);
    if (st == LUA_OK || rt.last_stop != LB_STOP_TIME || ms > 50 + SLACK_MS)
      fprintf(stderr, "sneaky[%d] %s: status %d stop %d %.1f ms: %s\n", i, sneaky[i], st, rt.last_stop, ms,
              rt.last_error);
    CHECK(st != LUA_OK);
    CHECK_INT(rt.last_stop, LB_STOP_TIME);
    CHECK(ms < 50 + SLACK_MS);
    CHECK(run_ok("setmetatable(_G, nil)"));
  }
  CHECK(run_ok("return 1"));
  teardown();
}

/* A C function that enters Lua again (what app.reload() does): the inner entry cannot
   outlive the outer one, and both stop. */
static int nested_entry(lua_State *L) {
  luaL_loadstring(L, "while true do end");
  lb_call_opts_t o = {.budget_ms = 300};
  int st = lb_pcall_ex(L, 0, 0, &o, "inner", NULL);
  lua_pushinteger(L, st);
  lua_pushinteger(L, lb_rt(L)->last_stop);
  return 2;
}

static void test_nested_entry_keeps_outer_deadline(void) {
  setup(100, 32u << 20);
  lua_register(rt.L, "nested", nested_entry);
  double ms;
  CHECK(run("local st, stop = nested() inner_status, inner_stop = st, stop while true do end", NULL, &ms) ==
        LUA_ERRRUN);
  CHECK(ms < 100 + SLACK_MS);
  CHECK_INT(rt.last_stop, LB_STOP_TIME);
  CHECK(run_ok("assert(inner_status == nil)")); /* the outer stopped before it could store them */
  /* An outer entry without a limit lets the inner one use its own. */
  lb_call_opts_t none = {.budget_ms = LB_BUDGET_NONE};
  lua_register(rt.L, "nested", nested_entry);
  CHECK(run("inner_status, inner_stop = nested()", &none, &ms) == LUA_OK);
  CHECK(run_ok("assert(inner_status == 2 and inner_stop == 1, tostring(inner_status))"));
  CHECK(ms >= 299 && ms < 300 + SLACK_MS);
  /* The outer frame is back in place: no limit, nothing tripped. */
  CHECK_INT(rt.call.depth, 0);
  teardown();
}

/* The same with a detached inner entry (app.reload()): it gets its own limit, and the
   caller's clock stands still meanwhile. */
static int detached_entry(lua_State *L) {
  luaL_loadstring(L, "while true do end");
  lb_call_opts_t o = {.budget_ms = 300, .detached = true};
  lb_pcall_ex(L, 0, 0, &o, "inner", NULL);
  lua_pushinteger(L, lb_rt(L)->last_stop);
  return 1;
}

static void test_detached_entry_has_its_own_budget(void) {
  setup(100, 32u << 20);
  lua_register(rt.L, "detached", detached_entry);
  double ms;
  CHECK(run("inner_stop = detached() after = true while true do end", NULL, &ms) == LUA_ERRRUN);
  CHECK_INT(rt.last_stop, LB_STOP_TIME);
  CHECK(ms >= 399 && ms < 400 + SLACK_MS);
  CHECK(run_ok("assert(inner_stop == 1 and after == true)"));
  teardown();
}

static int polls;
static int poll_after_three(mw_rt_t *r) {
  (void)r;
  return ++polls > 3;
}

static void test_interrupt_poll_stops_a_call(void) {
  setup(0, 32u << 20); /* no time limit: only the interrupt can stop it */
  polls = 0;
  rt.interrupt_poll = poll_after_three;
  CHECK(run("while true do pcall(function() while true do end end) end", NULL, NULL) == LUA_ERRRUN);
  CHECK_INT(rt.last_stop, LB_STOP_INTERRUPT);
  CHECK(strstr(rt.last_error, "interrupted") != NULL);
  CHECK_INT(rt.stops_interrupt, 1);
  rt.interrupt_poll = NULL;
  CHECK(run_ok("local s = 0 for i = 1, 100000 do s = s + i end"));
  teardown();
}

/* Code within its budget runs without any hook (the VM traps on every instruction while one
   is set); the hook only appears once a deadline has passed. */
static void test_no_hook_while_within_budget(void) {
  setup(10000, 32u << 20);
  CHECK(run_ok("assert(debug.gethook() == nil) local s = 0 for i = 1, 100000 do s = s + i end "
               "assert(debug.gethook() == nil) "
               "local co = coroutine.wrap(function() assert(debug.gethook() == nil) coroutine.yield() end) co() co()"));
  teardown();
}

static void test_no_budget_means_no_limit(void) {
  setup(0, 32u << 20);
  CHECK(run_ok("local s = 0 for i = 1, 3000000 do s = s + i end"));
  teardown();
}

static void test_memory_bomb_hits_the_cap(void) {
  setup(0, 8u << 20);
  double ms;
  CHECK(run("local t = {} while true do t[#t + 1] = string.rep('x', 1000) .. #t end", NULL, &ms) == LUA_ERRMEM);
  CHECK_INT(rt.last_stop, LB_STOP_MEMORY);
  CHECK(strstr(rt.last_error, "memory limit exceeded") != NULL);
  CHECK(strstr(rt.last_error, "in the function at [string") == NULL); /* a main chunk has no line */
  CHECK_INT(rt.stops_memory, 1);
  CHECK(rt.mem_used < rt.mem_limit / 2); /* the garbage is collected right away */
  /* pcall in the script does not help either: every allocation past the cap fails (and
     the loop that keeps retrying is stopped by the time limit). */
  rt.budget_ms = 200;
  CHECK(run("local t = {} while true do pcall(function() t[#t + 1] = {} end) end", NULL,
            NULL) != LUA_OK);
  CHECK(run_ok("return string.rep('y', 1000)"));
  teardown();
}

/* A script that keeps what it allocated fills the heap for good; the runtime's own
   pushes still work (headroom) and later entries fail cleanly instead of aborting. */
static void test_full_heap_leaves_runtime_working(void) {
  setup(0, 8u << 20);
  CHECK(run("hog = {} while true do hog[#hog + 1] = {} end", NULL, NULL) == LUA_ERRMEM);
  for (int i = 0; i < 20; i++) {
    lua_pushstring(rt.L, "the runtime builds handler arguments even now");
    lua_createtable(rt.L, 0, 4);
    lua_pop(rt.L, 2);
    run("local t = {} for i = 1, 1000 do t[i] = {} end", NULL, NULL);
  }
  CHECK(run_ok("hog = nil collectgarbage()"));
  CHECK(run_ok("local t = {} for i = 1, 1000 do t[i] = {} end"));
  teardown();
}

static void test_entry_memory_cap(void) {
  setup(0, 32u << 20);
  lb_call_opts_t o = {.mem_grow = 1u << 20};
  CHECK(run("keep = {} for i = 1, 1e6 do keep[i] = {} end", &o, NULL) == LUA_ERRMEM);
  CHECK(strstr(rt.last_error, "a version's load may add 1024 KiB to the heap") != NULL);
  CHECK(run_ok("keep = nil collectgarbage() local t = {} for i = 1, 50000 do t[i] = {} end"));
  teardown();
}

/* Lua runs finalizers with hooks off, so none written in Lua may exist. */
static void test_lua_finalizers_refused(void) {
  setup(50, 32u << 20);
  CHECK(run("setmetatable({}, {__gc = function() while true do end end})", NULL, NULL) == LUA_ERRRUN);
  CHECK(strstr(rt.last_error, "__gc metamethod written in Lua") != NULL);
  CHECK(run("debug.setmetatable({}, {__gc = true})", NULL, NULL) == LUA_ERRRUN);
  CHECK(run("debug.sethook()", NULL, NULL) == LUA_ERRRUN);
  CHECK(strstr(rt.last_error, "debug.sethook is not available") != NULL);
  CHECK(run_ok("local t = setmetatable({}, {__index = {a = 1}}) assert(t.a == 1)"));
  CHECK(run_ok("assert(getmetatable(setmetatable({}, {__close = function() end})).__close)"));
  teardown();
}

/* Coroutines and xpcall still behave as the manual says. */
static void test_guarded_library_behaves(void) {
  setup(1000, 32u << 20);
  CHECK(run_ok("assert(select('#', xpcall(function(...) return ... end, print, 1, 2, 3)) == 4)"));
  CHECK(run_ok("local ok, e = xpcall(error, function(m) return 'handled: ' .. m end, 'x') "
               "assert(not ok and e == 'handled: x', e)"));
  CHECK(run_ok("local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end) "
               "assert(co(1) == 2) assert(co(5) == 10)"));
  CHECK(run_ok("local co = coroutine.create(function() error({code = 7}) end) "
               "local ok, e = coroutine.resume(co) assert(not ok and e.code == 7) "
               "assert(coroutine.status(co) == 'dead')"));
  CHECK(run_ok("local closed = false "
               "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() "
               "closed = true end}) coroutine.yield() end) coroutine.resume(co) assert(coroutine.close(co)) "
               "assert(closed)"));
  CHECK(run_ok("local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) "
               "assert(co() + co() + co() == 6)"));
  CHECK(run_ok("local ok, e = pcall(coroutine.wrap(function() error('inner') end)) "
               "assert(not ok and e:find('inner'), e)"));
  teardown();
}

static void test_offences_quarantine(void) {
  setup(20, 32u << 20);
  int stops = 0;
  CHECK(run("while true do end", NULL, NULL) != LUA_OK);
  CHECK(!lb_budget_offence(&rt, &stops));
  CHECK(run("error('plain errors do not count')", NULL, NULL) != LUA_OK);
  CHECK(!lb_budget_offence(&rt, &stops));
  CHECK_INT(stops, 1);
  CHECK(run("while true do end", NULL, NULL) != LUA_OK);
  CHECK(!lb_budget_offence(&rt, &stops));
  CHECK(run("while true do end", NULL, NULL) != LUA_OK);
  CHECK(lb_budget_offence(&rt, &stops));
  teardown();
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {
      MW_TEST(test_runaway_loop_stopped_within_limit),
      MW_TEST(test_pcall_cannot_swallow_the_stop),
      MW_TEST(test_nested_entry_keeps_outer_deadline),
      MW_TEST(test_detached_entry_has_its_own_budget),
      MW_TEST(test_interrupt_poll_stops_a_call),
      MW_TEST(test_no_hook_while_within_budget),
      MW_TEST(test_no_budget_means_no_limit),
      MW_TEST(test_memory_bomb_hits_the_cap),
      MW_TEST(test_full_heap_leaves_runtime_working),
      MW_TEST(test_entry_memory_cap),
      MW_TEST(test_lua_finalizers_refused),
      MW_TEST(test_guarded_library_behaves),
      MW_TEST(test_offences_quarantine),
  };
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
