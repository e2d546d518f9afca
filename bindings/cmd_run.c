/*
** moonwire run APP.lua --config CONFIG.lua: the device runtime. Loads the
** configuration, builds the TLS context, runs the app, connects, and serves handlers
** until SIGINT/SIGTERM, then disconnects cleanly (DISCONNECT sent: no last will).
** While it serves, a change of the app's files or SIGHUP reloads the app (lb_app.c).
*/
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lb.h"
#include "cli_session.h"
#include "lb_app.h"
#include "lb_repl_server.h"
#include "lb_state.h"
#include "mw_log.h"

const char mw_usage_run[] =
    "Usage: moonwire run APP.lua --config CONFIG.lua [OPTIONS]\n\n"
    "Runs a device app: connects to the broker with mutual TLS, runs APP.lua, and\n"
    "serves its handlers until SIGINT or SIGTERM, then disconnects cleanly.\n"
    "When APP.lua or a module it loaded from its folder changes, or on SIGHUP, the app\n"
    "is reloaded as one transaction: the new version replaces the old one only if it\n"
    "loads without error (lua.* in the configuration; docs/operations.md).\n\n"
    "Options:\n"
    "  -c, --config FILE     configuration file (a Lua chunk returning a table; see docs/configuration.md)\n"
    "  -b, --broker HOST:PORT  override broker.host and broker.port\n"
    "  -t, --thing NAME      override the thing name (and the client id with it)\n"
    "  -l, --log-level LEVEL debug, info, warn or error (overrides log.level)\n"
    "  -h, --help            show this help\n";

static void on_event(mw_session_t *s, const mw_mqtt_event_t *ev) { lb_mqtt_dispatch(&s->rt, ev); }

int mw_cmd_run(int argc, char **argv) {
  mw_cli_opts_t o;
  int rc = mw_cli_parse(argc, argv, "run", &o, "APP.lua", NULL);
  if (rc) return rc;
  const char *app = o.positional;

  mw_session_t s;
  char err[1024], appdir[PATH_MAX];
  snprintf(appdir, sizeof appdir, "%s", app);
  rc = mw_session_open(&s, o.config, &o.ov, o.level, dirname(appdir), on_event, NULL);
  /* The REPL socket (docs/repl.md) comes first: a second runtime for the same thing stops here,
     before its app has done anything. */
  lb_repl_server_t *repl = NULL;
  if (rc == MW_EXIT_OK && lb_repl_server_open(&s.rt, app, &repl, err, sizeof err) != 0) rc = mw_cli_fail("%s", err);
  /* The app registers its handlers first, so they are subscribed with the first CONNACK. */
  if (rc == MW_EXIT_OK) {
    lb_app_config_t ac;
    lb_app_config_from(&ac, &s.cfg);
    if (lb_app_start(&s.rt, app, &ac, err, sizeof err) != 0) rc = mw_cli_fail("%s", err);
  }
  if (rc == MW_EXIT_OK) mw_session_run(&s, app);
  lb_repl_server_close(repl);
  mw_session_close(&s);
  return rc;
}
