/*
** moonwire provision FLOW --config CONFIG.lua [--param NAME=VALUE]... [--dry-run]: runs a
** provisioning flow (shipped in scripts/provision/, or a file) with moonwire.provision. No broker
** connection of its own: the flow opens the connections it needs (the claim identity, then the
** new one), so the process ends when the flow does. SIGINT/SIGTERM cancel the flow at its next
** wait, before anything is switched over.
*/
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_session.h"
#include "lb.h"
#include "lb_config.h"
#include "lb_pki.h"
#include "lb_state.h"
#include "mw_log.h"
#include "mw_tls.h"

const char mw_usage_provision[] =
    "Usage: moonwire provision FLOW --config CONFIG.lua [--param NAME=VALUE]... [--dry-run]\n"
    "       moonwire provision --list\n"
    "       moonwire provision FLOW --describe\n\n"
    "Runs a provisioning flow: a new key (chip slot, file), a certificate for it, a thing,\n"
    "the device configuration, verified by connecting with the new identity before the\n"
    "switch-over. A failing step leaves the previous identity untouched and names the step\n"
    "and AWS IoT's error code and message.\n\n"
    "FLOW is a shipped flow (fleet-claim, own-ca, rotate) or a FLOW.lua file.\n"
    "CONFIG is the identity the flow starts from: the claim identity (fleet-claim), the\n"
    "factory station (own-ca), the device itself (rotate).\n\n"
    "Options:\n"
    "  -c, --config FILE       configuration of the starting identity (see docs/configuration.md)\n"
    "  -p, --param NAME=VALUE  a flow parameter (repeatable); --describe lists them\n"
    "  -n, --dry-run           print the plan (steps and their arguments) and change nothing\n"
    "      --describe          print the flow's parameters and exit\n"
    "      --list              list the shipped flows and exit\n"
    "  -b, --broker HOST:PORT  override broker.host and broker.port of CONFIG\n"
    "  -t, --thing NAME        override the identity name of CONFIG\n"
    "  -l, --log-level LEVEL   debug, info, warn or error\n"
    "  -h, --help              show this help\n\n"
    "Exit status: 0 done (or planned), 1 a step failed, 2 usage error. See docs/provisioning.md.\n";

typedef struct {
  mw_rt_t *rt;
  int task_ref;
  int signals;
  uv_signal_t sigint, sigterm;
} run_ctx_t;

/* Asks the flow to stop at its next wait; a second signal stops the loop at once. */
static void on_signal(uv_signal_t *h, int signum) {
  run_ctx_t *c = h->data;
  lua_State *L = c->rt->L;
  if (c->signals++) {
    MW_LOGW("provision", "second %s: exiting without waiting", strsignal(signum));
    uv_stop(h->loop);
    return;
  }
  MW_LOGW("provision", "%s: cancelling the flow", strsignal(signum));
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->task_ref);
  if (lua_getfield(L, -1, "cancel") == LUA_TFUNCTION) {
    lua_pushvalue(L, -2);
    lua_pushfstring(L, "interrupted by %s", strsignal(signum));
    lb_pcall(L, 2, 0, "cancelling the flow", NULL);
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Pushes a table of the NAME=VALUE arguments, or returns -1 (usage error printed). */
static int push_params(lua_State *L, int argc, char **argv) {
  lua_newtable(L);
  for (int i = 0; i < argc; i++) {
    const char *eq = strchr(argv[i], '=');
    if (!eq || eq == argv[i]) {
      lua_pop(L, 1);
      mw_cli_usage_error("provision", "--param needs NAME=VALUE, got '%s'", argv[i]);
      return -1;
    }
    lua_pushlstring(L, argv[i], (size_t)(eq - argv[i]));
    lua_pushstring(L, eq + 1);
    lua_settable(L, -3);
  }
  return 0;
}

/* Runs a small chunk against moonwire.provision with the flow name as ... (for --list, --describe). */
static int run_info(mw_rt_t *rt, const char *chunk, const char *flow) {
  lua_State *L = rt->L;
  if (luaL_loadstring(L, chunk) != LUA_OK) return mw_cli_fail("%s", lua_tostring(L, -1));
  lua_pushstring(L, flow ? flow : "");
  if (lb_pcall(L, 1, 1, "provision", NULL) != LUA_OK) return MW_EXIT_FAILURE;
  int rc = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return rc;
}

static const char list_chunk[] =
    "local prov = require 'moonwire.provision'\n"
    "for _, n in ipairs(prov.flows()) do\n"
    "  local f = prov.load(n)\n"
    "  print(string.format('%-14s %s', n, f and f.description or ''))\n"
    "end\n"
    "return 0\n";

static const char describe_chunk[] =
    "local prov = require 'moonwire.provision'\n"
    "local f, err = prov.load(...)\n"
    "if not f then io.stderr:write('moonwire: ', err, '\\n') return 2 end\n"
    "print('flow ' .. f.name .. (f.description and (': ' .. f.description) or ''))\n"
    "local names = {}\n"
    "for k in pairs(f.params or {}) do names[#names + 1] = k end\n"
    "table.sort(names)\n"
    "for _, k in ipairs(names) do\n"
    "  local s = f.params[k]\n"
    "  local tag = s.required and ' (required)' or s.default and (' (default ' .. tostring(s.default) .. ')') or ''\n"
    "  print(string.format('  %-16s %s%s', k, s.help or '', tag))\n"
    "end\n"
    "return 0\n";

int mw_cmd_provision(int argc, char **argv) {
  static const char cmd[] = "provision";
  /* This command's own options come out first; mw_cli_parse takes the shared ones. */
  char **params = calloc((size_t)argc + 1, sizeof *params);
  if (!params) return mw_cli_fail("out of memory");
  int nparams = 0, dry_run = 0, list = 0, describe = 0, out = 1, rc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-p") || !strcmp(a, "--param")) {
      if (i + 1 >= argc) {
        free(params);
        return mw_cli_usage_error(cmd, "%s needs NAME=VALUE", a);
      }
      params[nparams++] = argv[++i];
    } else if (!strcmp(a, "-n") || !strcmp(a, "--dry-run")) {
      dry_run = 1;
    } else if (!strcmp(a, "--list")) {
      list = 1;
    } else if (!strcmp(a, "--describe")) {
      describe = 1;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  mw_rt_t rt;
  memset(&rt, 0, sizeof rt);
  uv_loop_t loop;
  uv_loop_init(&loop);
  rt.loop = &loop;
  rt.mem_limit = 64u << 20;
  rt.started_ms = uv_now(&loop);
  mw_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  mw_config_defaults(&cfg);
  run_ctx_t c;
  memset(&c, 0, sizeof c);
  c.rt = &rt;
  c.task_ref = LUA_NOREF;
  mw_cli_opts_t o;
  memset(&o, 0, sizeof o);
  rc = MW_EXIT_FAILURE;
  if (list || describe) {
    const char *flow = NULL;
    for (int i = 1; i < argc; i++)
      if (argv[i][0] != '-') flow = argv[i];
    if (describe && !flow) {
      rc = mw_cli_usage_error(cmd, "--describe needs a FLOW");
      goto out;
    }
    if (!lb_state_new(&rt, NULL)) {
      mw_cli_fail("cannot create the Lua state");
      goto out;
    }
    rc = run_info(&rt, list ? list_chunk : describe_chunk, flow);
    goto out;
  }
  if ((rc = mw_cli_parse(argc, argv, cmd, &o, "FLOW", NULL)) != 0) goto out;
  rc = MW_EXIT_FAILURE;
  char flowdir[PATH_MAX], err[1024];
  snprintf(flowdir, sizeof flowdir, "%s", o.positional);
  /* A flow file's folder comes first on package.path, like an app's. */
  if (!lb_state_new(&rt, strchr(o.positional, '/') ? dirname(flowdir) : NULL)) {
    mw_cli_fail("cannot create the Lua state");
    goto out;
  }
  if (lb_config_load(rt.L, o.config, &o.ov, &cfg, err, sizeof err) != 0) {
    mw_cli_fail("%s", err);
    goto out;
  }
  rt.cfg = &cfg;
  rt.mem_limit = cfg.limits.lua_memory;
  /* No session here to install it: keys in a PKCS#11 token reach the TLS layer through this. */
  mw_tls_set_key_loader(MW_KEY_PKCS11, lb_pki_p11_loader, &rt);
  if (o.level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(o.level));
  else if (cfg.log_level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(cfg.log_level));

  lua_State *L = rt.L;
  lua_getglobal(L, "require");
  lua_pushstring(L, "moonwire.provision");
  if (lb_pcall(L, 1, 1, "loading", "moonwire.provision") != LUA_OK) goto out;
  lua_getfield(L, -1, "_main");
  lua_remove(L, -2);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, o.positional);
  lua_setfield(L, -2, "flow");
  lua_pushstring(L, o.config);
  lua_setfield(L, -2, "config_path");
  lua_pushboolean(L, dry_run);
  lua_setfield(L, -2, "dry_run");
  lb_config_push(L);
  lua_setfield(L, -2, "config");
  /* What --broker / --thing changed, so the flow's copy of the configuration says it too. */
  lua_createtable(L, 0, 3);
  if (o.ov.broker) {
    lua_pushstring(L, cfg.broker.host);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, cfg.broker.port);
    lua_setfield(L, -2, "port");
  }
  if (o.ov.thing) {
    lua_pushstring(L, cfg.thing);
    lua_setfield(L, -2, "thing");
  }
  lua_setfield(L, -2, "overrides");
  if (push_params(L, nparams, params) != 0) {
    lua_pop(L, 2);
    rc = MW_EXIT_USAGE;
    goto out;
  }
  lua_setfield(L, -2, "params");
  if (lb_pcall(L, 1, 1, "provision flow", o.positional) != LUA_OK) goto out;
  c.task_ref = lb_ref(L);

  uv_signal_init(&loop, &c.sigint);
  uv_signal_init(&loop, &c.sigterm);
  c.sigint.data = c.sigterm.data = &c;
  uv_signal_start(&c.sigint, on_signal, SIGINT);
  uv_signal_start(&c.sigterm, on_signal, SIGTERM);
  /* Signal watchers alone must not keep the loop (and the process) alive. */
  uv_unref((uv_handle_t *)&c.sigint);
  uv_unref((uv_handle_t *)&c.sigterm);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&c.sigint, NULL);
  uv_close((uv_handle_t *)&c.sigterm, NULL);

  lua_rawgeti(L, LUA_REGISTRYINDEX, c.task_ref);
  lua_getfield(L, -1, "finished");
  int finished = lua_toboolean(L, -1);
  lua_getfield(L, -2, "exit_code");
  int code = (int)lua_tointeger(L, -1);
  lua_getfield(L, -3, "message");
  const char *msg = lua_tostring(L, -1);
  if (!finished) rc = mw_cli_fail("the flow did not finish (nothing was switched over)");
  else if (code == MW_EXIT_USAGE) rc = mw_cli_usage_error(cmd, "%s", msg ? msg : "bad flow or parameters");
  else if (code != 0) rc = mw_cli_fail("%s", msg ? msg : "the flow failed");
  else rc = MW_EXIT_OK;
  lua_pop(L, 4);
  if (rt.handler_errors && rc == MW_EXIT_OK) rc = mw_cli_fail("%llu callback error(s)", (unsigned long long)rt.handler_errors);
out:
  mw_tls_set_key_loader(MW_KEY_PKCS11, NULL, NULL);
  if (rt.L) {
    lb_unref(rt.L, &c.task_ref);
    lb_state_close(&rt);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* close callbacks of everything the flow opened */
  if (uv_loop_close(&loop) != 0) MW_LOGW("provision", "some event-loop handles were still open at exit");
  mw_config_free(&cfg);
  free(params);
  return rc;
}
