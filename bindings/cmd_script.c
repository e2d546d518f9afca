/*
** moonwire script FILE.lua [ARGS]: runs a Lua script with every moonwire module but
** no broker, until its timers are done. Used for tooling and for the Lua test suite:
** the exit status is 1 if the script or any of its callbacks raised.
*/
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lb.h"
#include "lb_state.h"
#include "mw_log.h"

const char mw_usage_script[] =
    "Usage: moonwire script FILE.lua [ARGS...]\n\n"
    "Runs FILE.lua with the moonwire modules loaded and no broker connection, until\n"
    "no timer is left. The global 'arg' holds ARGS (arg[0] is FILE.lua).\n"
    "Exit status 1 if the script or any callback raised an error.\n";

static void on_sigint(uv_signal_t *h, int signum) {
  (void)signum;
  uv_stop(h->loop);
}

int mw_cmd_script(int argc, char **argv) {
  if (argc < 2) return mw_cli_usage_error("script", "no script given");
  const char *file = argv[1];
  mw_rt_t rt;
  memset(&rt, 0, sizeof rt);
  uv_loop_t loop;
  uv_loop_init(&loop);
  rt.loop = &loop;
  rt.mem_limit = 256u << 20;
  char dir[PATH_MAX], err[1024];
  snprintf(dir, sizeof dir, "%s", file);
  int rc = MW_EXIT_FAILURE;
  if (!lb_state_new(&rt, dirname(dir))) {
    mw_cli_fail("cannot create the Lua state");
    goto out;
  }
  lua_createtable(rt.L, argc, 1);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(rt.L, argv[i]);
    lua_rawseti(rt.L, -2, i - 1);
  }
  lua_setglobal(rt.L, "arg");
  uv_signal_t sig;
  uv_signal_init(&loop, &sig);
  uv_signal_start(&sig, on_sigint, SIGINT);
  uv_unref((uv_handle_t *)&sig); /* a signal watcher alone must not keep the script alive */
  if (lb_state_run_file(&rt, file, err, sizeof err) != 0) {
    mw_cli_fail("%s", err);
  } else {
    uv_run(&loop, UV_RUN_DEFAULT);
    if (rt.handler_errors) mw_cli_fail("%llu callback error(s)", (unsigned long long)rt.handler_errors);
    else rc = MW_EXIT_OK;
  }
  uv_close((uv_handle_t *)&sig, NULL);
out:
  lb_state_close(&rt);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}
