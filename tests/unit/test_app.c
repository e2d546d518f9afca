/*
** Hot reload without a broker (bindings/lb_app.c, lb_app_watch.c): versions, the
** transaction (a broken version changes nothing), staged and released registrations,
** app.state and migrate, modules of the app folder, rollback, and change detection on a
** real libuv loop. The broker side (subscription diff, exactly-once under load) is in
** tests/integration/test_reload.py.
*/
#define MW_TEST_IMPLEMENTATION
#include <lauxlib.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lb.h"
#include "lb_app.h"
#include "lb_state.h"
#include "mw_test.h"

static mw_rt_t rt;
static uv_loop_t loop;
static char dir[64], app_path[128];

static void write_file(const char *name, const char *text) {
  char path[256], tmp[300];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
  CHECK(rename(tmp, path) == 0);
}

/* Writes the file in place (truncate + write), as editors without rename-saves do. */
static void write_in_place(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
}

/* Files written before the app starts: name, text pairs, NULL-terminated. */
static const char *const *extra_files;

static int setup_cfg(const char *app_src, const lb_app_config_t *cfg) {
  memset(&rt, 0, sizeof rt);
  uv_loop_init(&loop);
  rt.loop = &loop;
  rt.budget_ms = 500;
  rt.quarantine_after = 3;
  rt.mem_limit = 32u << 20;
  snprintf(dir, sizeof dir, "/tmp/mw-test-app-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(app_path, sizeof app_path, "%s/app.lua", dir);
  write_file("app.lua", app_src);
  for (int i = 0; extra_files && extra_files[i]; i += 2) {
    if (strchr(extra_files[i], '/')) {
      char sub[200];
      snprintf(sub, sizeof sub, "%s/%.*s", dir, (int)(strrchr(extra_files[i], '/') - extra_files[i]), extra_files[i]);
      mkdir(sub, 0700);
    }
    write_file(extra_files[i], extra_files[i + 1]);
  }
  extra_files = NULL;
  CHECK(lb_state_new(&rt, dir) != NULL);
  char err[1024];
  int rc = lb_app_start(&rt, app_path, cfg, err, sizeof err);
  if (rc != 0) fprintf(stderr, "start: %s\n", err);
  return rc;
}

static int setup(const char *app_src) {
  lb_app_config_t cfg = {.load_budget_ms = 300, .watch = false, .debounce_ms = 20};
  return setup_cfg(app_src, &cfg);
}

static void teardown(void) {
  lb_state_close(&rt);
  CHECK_INT(rt.live_refs, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

/* Runs chunk in the live version's environment (as the REPL does); true if it succeeded. */
static bool eval(const char *chunk) {
  lua_State *L = rt.L;
  if (luaL_loadstring(L, chunk) != LUA_OK) {
    fprintf(stderr, "compile: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  luaL_requiref(L, "moonwire.app", luaopen_moonwire_app, 0);
  lua_getfield(L, -1, "env");
  lua_setupvalue(L, -3, 1);
  lua_pop(L, 1);
  return lb_pcall(L, 0, 0, "eval", NULL) == LUA_OK;
}

static uint32_t reload(const char **code, char *err, size_t errlen) {
  return lb_app_reload(&rt, "test", err, errlen, code);
}

/* Subscriptions (mqtt.subscriptions()) + 1000 * timers of the live version. */
static int count_subs_and_timers(void) {
  lua_State *L = rt.L;
  luaL_dostring(L, "return #require('moonwire.mqtt').subscriptions() + 1000 * require('moonwire.app').info().timers");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return n;
}

/* Runs the loop until cond() or about ms milliseconds passed. */
static bool run_until(bool (*cond)(void), int ms) {
  uint64_t end = lb_now_ns() + (uint64_t)ms * 1000000u;
  while (lb_now_ns() < end) {
    if (cond && cond()) return true;
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  return cond ? cond() : true;
}

static const char *V1 =
    "local app = require 'moonwire.app'\n"
    "local timer = require 'moonwire.timer'\n"
    "local mqtt = require 'moonwire.mqtt'\n"
    "app.state.loads = (app.state.loads or 0) + 1\n"
    "app.state.version_seen = app.version\n"
    "mine = 'v1'\n"
    "mqtt.subscribe('a/b', function() end)\n"
    "mqtt.subscribe('a/c', function() end)\n"
    "timer.every(5, function() app.state.ticks1 = (app.state.ticks1 or 0) + 1 end)\n";

static const char *V2 =
    "local app = require 'moonwire.app'\n"
    "local timer = require 'moonwire.timer'\n"
    "local mqtt = require 'moonwire.mqtt'\n"
    "app.state.loads = app.state.loads + 1\n"
    "app.state.version_seen = app.version\n"
    "mine = 'v2'\n"
    "mqtt.subscribe('a/c', function() end)\n"
    "mqtt.subscribe('a/d', function() end)\n"
    "mqtt.subscribe('a/e', function() end)\n"
    "timer.every(5, function() app.state.ticks2 = (app.state.ticks2 or 0) + 1 end)\n";

static int ticks1_before;
static bool ticks2_started(void) {
  return eval("assert(require('moonwire.app').state.ticks2)");
}

static void test_reload_swaps_versions(void) {
  CHECK_INT(setup(V1), 0);
  CHECK(eval("local app = require 'moonwire.app' assert(app.version == 1) assert(app.state.loads == 1) "
             "assert(app.state.version_seen == 1) assert(mine == 'v1') assert(_G.mine == nil) "
             "assert(#app.hash == 64) assert(app.file:find('app.lua', 1, true))"));
  /* app.hash is the SHA-256 of the file when there are no modules. */
  unsigned char md[32];
  unsigned int n;
  EVP_Digest(V1, strlen(V1), md, &n, EVP_sha256(), NULL);
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  lua_State *L = rt.L;
  luaL_dostring(L, "return require('moonwire.app').hash");
  CHECK_STR(lua_tostring(L, -1), hex);
  lua_pop(L, 1);
  CHECK_INT(count_subs_and_timers(), 1002);
  run_until(NULL, 30);
  CHECK(eval("assert(require('moonwire.app').state.ticks1 > 0)"));

  write_file("app.lua", V2);
  const char *code = NULL;
  char err[1024];
  CHECK_INT(reload(&code, err, sizeof err), 2);
  CHECK(eval("local app = require 'moonwire.app' assert(app.version == 2) assert(app.state.loads == 2) "
             "assert(app.state.version_seen == 2) assert(mine == 'v2')"));
  /* v1's timer and subscriptions are gone; v2's are there. */
  CHECK_INT(count_subs_and_timers(), 1003);
  luaL_dostring(L, "return require('moonwire.app').state.ticks1");
  ticks1_before = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  CHECK(run_until(ticks2_started, 2000));
  run_until(NULL, 30);
  luaL_dostring(L, "return require('moonwire.app').state.ticks1");
  CHECK_INT(lua_tointeger(L, -1), ticks1_before);
  lua_pop(L, 1);
  teardown();
}

static void test_broken_versions_change_nothing(void) {
  static const struct {
    const char *src, *code, *where;
  } bad[] = {
      {"local mqtt = require 'moonwire.mqtt'\nmqtt.subscribe('x/y', function() end)\nlocal x = = 1\n", "ESYNTAX",
       "app.lua:3:"},
      {"local mqtt = require 'moonwire.mqtt'\nmqtt.subscribe('x/y', function() end)\nerror('no good')\n", "ERAISED",
       "app.lua:3: no good"},
      {"local timer = require 'moonwire.timer'\ntimer.every(1, print)\nwhile true do end\n", "ETIMEDOUT",
       "app.lua:3: time limit exceeded (300 ms)"},
      {"local t, s = {}, 'x'\nwhile true do s = s .. s t[#t + 1] = s end\n", "ENOMEM",
       "memory limit exceeded (a version's load may add 8192 KiB to the heap)"},
      {"require 'missing_module'\n", "ERAISED", "module 'missing_module' not found"},
  };
  CHECK_INT(setup(V1), 0);
  int before = count_subs_and_timers();
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_file("app.lua", bad[i].src);
    const char *code = NULL;
    char err[1024] = "";
    CHECK_INT(reload(&code, err, sizeof err), 0);
    CHECK_STR(code, bad[i].code);
    if (!strstr(err, bad[i].where)) fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err, bad[i].where);
    CHECK(strstr(err, bad[i].where) != NULL);
    /* Nothing changed: same version, same registrations, same state, same globals. */
    CHECK(eval("local app = require 'moonwire.app' assert(app.version == 1) assert(app.state.loads == 1) "
               "assert(mine == 'v1') assert(app.info().last_error)"));
    CHECK_INT(count_subs_and_timers(), before);
  }
  /* The next good version gets number 2: failed attempts use no number. */
  write_file("app.lua", V2);
  const char *code;
  char err[1024];
  CHECK_INT(reload(&code, err, sizeof err), 2);
  CHECK(eval("assert(require('moonwire.app').info().failed_reloads == 5)"));
  teardown();
}

static void test_migrate_runs_once_and_is_undone_on_failure(void) {
  CHECK_INT(setup("local app = require 'moonwire.app'\n"
                  "app.state.items = app.state.items or {list = {1, 2}}\n"
                  "app.migrate(function() error('not on the first load') end)\n"
                  "_G.keep = app.state.items\n"),
            0);
  write_file("app.lua", "local app = require 'moonwire.app'\n"
                        "app.migrate(function(state, from)\n"
                        "  state.items.list[1] = 'changed'\n"
                        "  state.items.extra = {}\n"
                        "  state.new = true\n"
                        "  error('halfway (from ' .. from .. ')')\n"
                        "end)\n");
  const char *code;
  char err[1024];
  CHECK_INT(reload(&code, err, sizeof err), 0);
  CHECK_STR(code, "EMIGRATE");
  CHECK(strstr(err, "app.lua:6: halfway (from 1)") != NULL);
  /* The state is exactly as before, the same tables included. */
  CHECK(eval("local s = require('moonwire.app').state assert(s.items == keep) assert(s.items.list[1] == 1) "
             "assert(s.items.extra == nil) assert(s.new == nil)"));
  write_file("app.lua", "local app = require 'moonwire.app'\n"
                        "app.migrate(function(state, from)\n"
                        "  state.migrations = (state.migrations or 0) + 1\n"
                        "  state.from = from\n"
                        "  state.items.list = #state.items.list\n"
                        "end)\n");
  CHECK_INT(reload(&code, err, sizeof err), 2);
  CHECK(eval("local s = require('moonwire.app').state assert(s.migrations == 1) assert(s.from == 1) "
             "assert(s.items.list == 2) assert(s.items == keep)"));
  teardown();
}

static void test_app_modules_reload_with_the_app(void) {
  static const char *const files[] = {"helper.lua", "leaked = 'from helper'\nreturn {value = 'h1'}\n",
                                      "lib/sub.lua", "return '+s1'\n", NULL};
  extra_files = files;
  CHECK_INT(setup("local h = require 'helper'\nlocal sub = require 'lib.sub'\nvalue = h.value .. sub\n"
                  "json = require 'moonwire.json'\n"),
            0);
  CHECK(eval("assert(value == 'h1+s1') assert(leaked == 'from helper') assert(_G.leaked == nil) "
             "assert(require('moonwire.app').info().live.files[3].module == 'lib.sub') "
             "assert(package.loaded.helper == nil)"));
  CHECK(eval("assert(#require('moonwire.app').hash == 64)"));
  write_file("lib/sub.lua", "return '+s2'\n");
  const char *code;
  char err[1024];
  CHECK_INT(reload(&code, err, sizeof err), 2);
  CHECK(eval("assert(value == 'h1+s2') assert(json == require('moonwire.json'))"));
  /* A broken module is a broken version, with its own file:line. */
  write_file("helper.lua", "return {value = }\n");
  CHECK_INT(reload(&code, err, sizeof err), 0);
  CHECK_STR(code, "ERAISED");
  CHECK(strstr(err, "helper.lua:1:") != NULL);
  CHECK(eval("assert(value == 'h1+s2')"));
  teardown();
}

/* A timer of version 1 reloads the app (as a REPL or an update handler would) and then
   tries to register more: its version is no longer live, so that raises. */
static void test_reload_from_inside_lua(void) {
  CHECK_INT(setup("local app = require 'moonwire.app'\n"
                  "local timer = require 'moonwire.timer'\n"
                  "print(app.reload())\n"
                  "app.state.busy = select(3, app.reload())\n"
                  "timer.after(1, function()\n"
                  "  app.state.got = app.reload()\n"
                  "  app.state.after_version = app.version\n"
                  "  app.state.ok, app.state.err = pcall(timer.after, 1, print)\n"
                  "end)\n"),
            0);
  CHECK(eval("assert(require('moonwire.app').state.busy == 'EBUSY')"));
  write_file("app.lua", "x = 2\n");
  run_until(NULL, 50);
  CHECK(eval("local s = require('moonwire.app').state assert(s.got == 2, tostring(s.got)) "
             "assert(s.after_version == 1) assert(s.ok == false) "
             "assert(s.err:find('version 1 of the app, which is no longer live'), s.err)"));
  CHECK(eval("assert(x == 2)"));
  teardown();
}

static bool rolled_back(void) { return eval("assert(require('moonwire.app').info().rollbacks == 1)"); }

static void test_automatic_rollback(void) {
  lb_app_config_t cfg = {.load_budget_ms = 300, .debounce_ms = 20, .rollback_errors = 3, .rollback_within_ms = 10000};
  CHECK_INT(setup_cfg("local app = require 'moonwire.app'\ngood = true\n"
                      "require('moonwire.timer').every(2, function() app.state.good_ticks = true end)\n",
                      &cfg),
            0);
  write_file("app.lua", "local timer = require 'moonwire.timer'\n"
                        "timer.every(2, function() error('broken handler') end)\n");
  const char *code;
  char err[1024];
  CHECK_INT(reload(&code, err, sizeof err), 2);
  CHECK(run_until(rolled_back, 3000));
  /* Version 1's code is back (from memory: the disk still has version 2), running again. */
  CHECK(eval("local app = require 'moonwire.app' assert(app.version == 1) assert(good == true) "
             "assert(app.info().previous.version == 2) app.state.good_ticks = nil"));
  CHECK(run_until(NULL, 30));
  CHECK(eval("assert(require('moonwire.app').state.good_ticks)"));
  /* A rollback is not itself rolled back, and the next reload gets a fresh number. */
  CHECK_INT(reload(&code, err, sizeof err), 3);
  teardown();
}

static uint32_t live_version(void) {
  lua_State *L = rt.L;
  luaL_dostring(L, "return require('moonwire.app').version");
  uint32_t v = (uint32_t)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static uint32_t want_version;
static bool reached_version(void) { return live_version() >= want_version; }

/* Change detection: a rename-save and an in-place write each reload once; a touch or a
   save of identical text reloads nothing; a module of the app is watched too. */
static void test_watching(void) {
  static const char *const files[] = {"mod.lua", "return 1\n", NULL};
  extra_files = files;
  lb_app_config_t cfg = {.load_budget_ms = 300, .watch = true, .debounce_ms = 30};
  CHECK_INT(setup_cfg("local m = require 'mod'\nn = 1\n", &cfg), 0);
  write_file("app.lua", "local m = require 'mod'\nn = 2\n");
  want_version = 2;
  CHECK(run_until(reached_version, 3000));
  run_until(NULL, 200);
  CHECK_INT(live_version(), 2);
  write_in_place("app.lua", "local m = require 'mod'\nn = 3\n");
  want_version = 3;
  CHECK(run_until(reached_version, 3000));
  run_until(NULL, 200);
  CHECK_INT(live_version(), 3);
  write_file("app.lua", "local m = require 'mod'\nn = 3\n"); /* same text */
  write_file("unrelated.txt", "x");
  run_until(NULL, 200);
  CHECK_INT(live_version(), 3);
  write_file("mod.lua", "return 2\n");
  want_version = 4;
  CHECK(run_until(reached_version, 3000));
  CHECK(eval("assert(n == 3) assert(require('moonwire.app').info().last_since_change_ms >= 20)"));
  /* A broken save is reported once (not again for a touch or a save of the same text), and
     the next good one goes through. */
  write_file("app.lua", "n = \n");
  run_until(NULL, 200);
  CHECK_INT(live_version(), 4);
  write_file("app.lua", "n = \n");
  write_file("mod.lua", "return 2\n");
  run_until(NULL, 200);
  CHECK(eval("assert(require('moonwire.app').info().failed_reloads == 1)"));
  write_file("app.lua", "local m = require 'mod'\nn = 5\n");
  want_version = 5;
  CHECK(run_until(reached_version, 3000));
  teardown();
}

static bool late_loaded(void) { return eval("assert(require('moonwire.app').state.late)"); }
static bool late_two(void) { return eval("assert(require('moonwire.app').state.late == 'two')"); }

/* A module the app requires only later, from a handler, is part of the version too. */
static void test_module_loaded_late_is_watched(void) {
  static const char *const files[] = {"sub/late.lua", "return 'one'\n", NULL};
  extra_files = files;
  lb_app_config_t cfg = {.load_budget_ms = 300, .watch = true, .debounce_ms = 20};
  CHECK_INT(setup_cfg("local app = require 'moonwire.app'\n"
                      "require('moonwire.timer').after(1, function() app.state.late = require 'sub.late' end)\n",
                      &cfg),
            0);
  CHECK(run_until(late_loaded, 2000));
  CHECK(eval("assert(#require('moonwire.app').info().live.files == 2)"));
  write_file("sub/late.lua", "return 'two'\n");
  want_version = 2;
  CHECK(run_until(reached_version, 3000));
  CHECK(run_until(late_two, 2000));
  teardown();
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {
      MW_TEST(test_reload_swaps_versions),
      MW_TEST(test_broken_versions_change_nothing),
      MW_TEST(test_migrate_runs_once_and_is_undone_on_failure),
      MW_TEST(test_app_modules_reload_with_the_app),
      MW_TEST(test_reload_from_inside_lua),
      MW_TEST(test_automatic_rollback),
      MW_TEST(test_watching),
      MW_TEST(test_module_loaded_late_is_watched),
  };
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
