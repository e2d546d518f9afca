/*
** What every long-running command shares: configuration, TLS context, MQTT client,
** the libuv loop and orderly shutdown on SIGINT/SIGTERM (DISCONNECT first).
*/
#ifndef MW_CLI_SESSION_H
#define MW_CLI_SESSION_H

#include "lb.h"
#include "lb_config.h"
#include "mw_tls.h"

/* Options every connected command takes. */
typedef struct {
  const char *config, *level;
  const char *positional; /* the one positional argument, if the command takes one */
  const char *extra;      /* value of the command's own option, if any */
  lb_config_overrides_t ov;
} mw_cli_opts_t;

/*
** Parses --config/-c, --broker/-b, --thing/-t, --log-level/-l, plus extra_opt (e.g.
** "--db") when given, and one positional argument named positional (NULL: none).
** Returns 0, or MW_EXIT_USAGE after printing why.
*/
int mw_cli_parse(int argc, char **argv, const char *cmd, mw_cli_opts_t *o, const char *positional,
                 const char *extra_opt);

typedef struct mw_session mw_session_t;
/* Called for every MQTT event after the session has logged it. */
typedef void (*mw_session_event_fn)(mw_session_t *s, const mw_mqtt_event_t *ev);

struct mw_session {
  mw_rt_t rt;
  mw_config_t cfg;
  mw_tls_ctx_t *tls;
  struct mw_trustm *se; /* open when tls.key is in the secure element */
  uv_loop_t loop;
  uv_signal_t sigint, sigterm;
  int stopping;
  int signals_started;
  mw_session_event_fn on_event;
  void *ud;
};

/*
** Creates the Lua state (app_dir first on package.path; may be NULL), loads the
** configuration, builds TLS and the MQTT client. On failure prints the reason and
** returns MW_EXIT_FAILURE; the session must still be closed.
*/
int mw_session_open(mw_session_t *s, const char *config, const lb_config_overrides_t *ov, const char *level,
                    const char *app_dir, mw_session_event_fn on_event, void *ud);
/* Connects and serves until a signal has stopped the client. */
void mw_session_run(mw_session_t *s, const char *what);
void mw_session_close(mw_session_t *s);

#endif
