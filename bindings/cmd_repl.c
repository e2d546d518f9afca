/*
** moonwire repl [APP.lua] [--config CONFIG.lua] [-e CHUNK]: a local Lua prompt with every
** moonwire module loaded, in this process. With a configuration it is connected like
** `moonwire run` (handlers and timers run while the prompt waits: the prompt polls the
** event loop's descriptor); with APP.lua the app runs first (as `lua -i` does).
*/
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_session.h"
#include "lb.h"
#include "lb_repl.h"
#include "lb_repl_term.h"
#include "lb_state.h"
#include "mw_log.h"
#include "mw_repl_proto.h"

const char mw_usage_repl[] =
    "Usage: moonwire repl [APP.lua] [--config CONFIG.lua [OPTIONS]] [-e CHUNK]\n\n"
    "A local interactive Lua 5.4 prompt with every moonwire module loaded (mqtt, json, log,\n"
    "timer, device, inspect, ... by their short names). Without a configuration there is\n"
    "no broker, as with 'moonwire script'; with one, the prompt is connected as the\n"
    "configured thing and handlers and timers run while it waits. APP.lua, when given, runs\n"
    "first and the prompt sees its globals. When stdin is not a terminal, or with -e, one\n"
    "chunk is evaluated (after the connection is up, when configured) and its results printed.\n"
    "To poke a device that is already running, use 'moonwire attach'.\n\n"
    "Options:\n"
    "  -c, --config FILE       connect as this configuration says (docs/configuration.md)\n"
    "  -b, --broker HOST:PORT  override broker.host and broker.port\n"
    "  -t, --thing NAME        override the thing name\n"
    "  -l, --log-level LEVEL   debug, info, warn or error\n"
    "  -e, --eval CHUNK        evaluate CHUNK, print the results and exit\n"
    "  -h, --help              show this help\n";

typedef struct {
  mw_session_t s; /* with a configuration */
  mw_rt_t bare;   /* without one */
  uv_loop_t bare_loop;
  mw_rt_t *rt;
  lb_repl_t *engine;
  int connected;
  int evaluating;
  int stopping;
  int started; /* the MQTT client was started: stop it cleanly */
  int interrupted;
} local_t;

/* rt->interrupt_poll during an entry: Ctrl-C. Sticky, so a pcall in the entry cannot swallow it. */
static int local_interrupt(mw_rt_t *rt) {
  local_t *l = rt->interrupt_ud;
  if (!l->interrupted && lb_term_take_sigint()) l->interrupted = 1;
  return l->interrupted;
}

static void local_print(void *ud, const char *s, size_t n) {
  local_t *l = ud;
  if (l->evaluating) {
    fwrite(s, 1, n, stdout);
    fflush(stdout);
  } else {
    lb_term_print_async(stdout, s, n);
  }
}

static void local_log(void *ud, mw_log_level_t level, const char *where, const char *msg) {
  (void)ud;
  char line[2400];
  mw_log_format(level, where, msg, line, sizeof line);
  lb_term_print_async(stderr, line, strlen(line));
}

/* Evaluates once; returns the REPL status and prints like the attached client does. */
static lb_repl_status_t eval_print(local_t *l, const char *chunk, size_t len, int flags, char **more) {
  lb_repl_result_t res;
  l->interrupted = 0;
  l->rt->interrupt_poll = local_interrupt;
  l->rt->interrupt_ud = l;
  l->evaluating = 1;
  lb_repl_eval(l->engine, chunk, len, flags, lb_term_width(), &res);
  l->evaluating = 0;
  l->rt->interrupt_poll = NULL;
  l->rt->interrupt_ud = NULL;
  FILE *out = res.status == LB_REPL_OK ? stdout : stderr;
  if (res.status == LB_REPL_MORE) {
    if (more) *more = res.text, res.text = NULL;
  } else if (res.len) {
    fflush(stdout);
    fwrite(res.text, 1, res.len, out);
    if (res.text[res.len - 1] != '\n') fputc('\n', out);
    fflush(out);
  }
  lb_repl_status_t st = res.status;
  free(res.text);
  return st;
}

static int term_eval(void *ud, const char *chunk, size_t len) {
  local_t *l = ud;
  if (strncmp(chunk, ".log", 4) == 0 && (chunk[4] == '\0' || chunk[4] == ' ')) {
    puts("the log is shown here already (stderr); log.level(\"debug\") shows more");
    return LB_TERM_DONE;
  }
  return eval_print(l, chunk, len, 0, NULL) == LB_REPL_MORE ? LB_TERM_MORE : LB_TERM_DONE;
}

static char *term_complete(void *ud, const char *word) {
  local_t *l = ud;
  return lb_repl_complete(l->engine, word, strlen(word));
}

static int term_timeout(void *ud) {
  local_t *l = ud;
  return uv_backend_timeout(l->rt->loop);
}

/* The loop's descriptor is readable, or a timer is due: run what is ready, then wait again. */
static int term_idle(void *ud) {
  local_t *l = ud;
  uv_run(l->rt->loop, UV_RUN_NOWAIT);
  return 0;
}

static void on_event(mw_session_t *s, const mw_mqtt_event_t *ev) {
  local_t *l = s->ud;
  if (ev->type == MW_MQTT_EV_CONNECT) l->connected = 1;
  lb_mqtt_dispatch(&s->rt, ev);
  if (ev->type == MW_MQTT_EV_CONNECT && l->stopping == -1) uv_stop(&s->loop);
}

static void on_guard(uv_timer_t *t) { uv_stop(t->loop); }

/* Runs the loop until the first CONNACK (or 10 s), for a script that publishes at once. */
static void wait_connected(local_t *l) {
  uv_timer_t guard;
  uv_timer_init(l->rt->loop, &guard);
  uv_timer_start(&guard, on_guard, 10000, 0);
  l->stopping = -1;
  if (!l->connected) uv_run(l->rt->loop, UV_RUN_DEFAULT);
  l->stopping = 0;
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(l->rt->loop, UV_RUN_NOWAIT);
  if (!l->connected) MW_LOGW("repl", "not connected to the broker after 10 s; evaluating anyway");
}

/* Disconnects cleanly (DISCONNECT sent, so no last will), giving up after 3 s. */
static void stop_connected(local_t *l) {
  uv_timer_t guard;
  uv_timer_init(l->rt->loop, &guard);
  uv_timer_start(&guard, on_guard, 3000, 0);
  mw_mqtt_stop(l->rt->mqtt);
  uv_run(l->rt->loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(l->rt->loop, UV_RUN_NOWAIT);
}

int mw_cmd_repl(int argc, char **argv) {
  const char *config = NULL, *level = NULL, *code = NULL, *app = NULL;
  lb_config_overrides_t ov = {0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    if (!strcmp(a, "-c") || !strcmp(a, "--config")) slot = &config;
    else if (!strcmp(a, "-b") || !strcmp(a, "--broker")) slot = &ov.broker;
    else if (!strcmp(a, "-t") || !strcmp(a, "--thing")) slot = &ov.thing;
    else if (!strcmp(a, "-l") || !strcmp(a, "--log-level")) slot = &level;
    else if (!strcmp(a, "-e") || !strcmp(a, "--eval")) slot = &code;
    else if (a[0] == '-' && a[1]) return mw_cli_usage_error("repl", "unknown option '%s'", a);
    else if (!app) app = a;
    else return mw_cli_usage_error("repl", "unexpected argument '%s'", a);
    if (slot) {
      if (i + 1 >= argc) return mw_cli_usage_error("repl", "%s needs a value", a);
      *slot = argv[++i];
    }
  }
  if (!config && (ov.broker || ov.thing)) return mw_cli_usage_error("repl", "--broker and --thing need --config");
  if (level && mw_log_level_parse(level) < 0) return mw_cli_usage_error("repl", "unknown log level '%s'", level);
  int interactive = !code && isatty(STDIN_FILENO);

  local_t *l = calloc(1, sizeof *l);
  if (!l) return mw_cli_fail("out of memory");
  char dir[PATH_MAX], err[1024];
  const char *app_dir = NULL;
  if (app) {
    snprintf(dir, sizeof dir, "%s", app);
    app_dir = dirname(dir);
  }
  int rc = MW_EXIT_OK;
  if (config) {
    /* A prompt's publishes are its own: not queued in (nor locking) the device's durable outbox. */
    ov.outbox_default = ":memory:";
    rc = mw_session_open(&l->s, config, &ov, level, app_dir, on_event, l);
    l->rt = &l->s.rt;
  } else {
    uv_loop_init(&l->bare_loop);
    l->bare.loop = &l->bare_loop;
    l->bare.started_ms = uv_now(&l->bare_loop);
    l->bare.mem_limit = 256u << 20;
    l->rt = &l->bare;
    if (level) mw_log_set_level((mw_log_level_t)mw_log_level_parse(level));
    if (!lb_state_new(&l->bare, app_dir)) rc = mw_cli_fail("cannot create the Lua state");
  }
  if (rc == MW_EXIT_OK && !(l->engine = lb_repl_new(l->rt, err, sizeof err))) rc = mw_cli_fail("%s", err);
  if (rc == MW_EXIT_OK && interactive) {
    /* Handlers and timers print and log while the prompt waits: above it, not through it. */
    lb_repl_set_print(l->engine, local_print, l);
    lb_repl_install_print(l->engine);
    mw_log_set_stderr(0);
    mw_log_add_sink(local_log, l);
  }
  if (rc == MW_EXIT_OK && config) {
    mw_mqtt_start(l->rt->mqtt);
    l->started = 1;
  }
  if (rc == MW_EXIT_OK && app && lb_state_run_file(l->rt, app, err, sizeof err) != 0) {
    if (interactive) fprintf(stderr, "%s\n", err);
    else rc = mw_cli_fail("%s", err);
  }
  if (rc == MW_EXIT_OK && !interactive) {
    size_t len = 0;
    char *input = NULL;
    mw_repl_buf_t in = {0};
    if (code) {
      input = strdup(code);
      len = input ? strlen(input) : 0;
    } else if (mw_repl_buf_read_all(&in, STDIN_FILENO, SIZE_MAX - 1) == MW_OK) {
      input = in.data;
      len = in.len;
    }
    if (!input) {
      rc = mw_cli_fail("cannot read stdin");
    } else {
      if (config) wait_connected(l);
      char *more = NULL;
      lb_term_signals(1);
      lb_repl_status_t st = eval_print(l, input, len, LB_REPL_RAW, &more);
      lb_term_signals(0);
      if (st == LB_REPL_MORE) fprintf(stderr, "moonwire: incomplete chunk: %s\n", more ? more : "");
      if (st != LB_REPL_OK) rc = MW_EXIT_FAILURE;
      /* Let what the chunk started (publishes, short timers) go out before leaving. */
      uv_run(l->rt->loop, UV_RUN_NOWAIT);
      free(more);
      free(input);
    }
  } else if (rc == MW_EXIT_OK) {
    char history[PATH_MAX], p1[200], p2[200];
    const char *who = config && l->s.cfg.thing ? l->s.cfg.thing : "moonwire";
    snprintf(p1, sizeof p1, "%s> ", who);
    snprintf(p2, sizeof p2, "%s>> ", who);
    lb_term_history_path(history, sizeof history);
    printf("moonwire %s local REPL (%s, %s); .help lists the commands, Ctrl-D leaves.\n", MW_VERSION, LUA_RELEASE,
           config ? "connected as configured" : "no broker");
    lb_term_ops_t ops = {term_eval, term_complete, uv_backend_fd(l->rt->loop), term_timeout, term_idle, l};
    lb_term_run(&ops, p1, p2, history);
  }
  if (interactive) {
    mw_log_remove_sink(local_log, l);
    mw_log_set_stderr(1);
  }
  if (l->started) stop_connected(l);
  lb_repl_free(l->engine);
  if (config) {
    mw_session_close(&l->s);
  } else {
    lb_state_close(&l->bare);
    uv_run(&l->bare_loop, UV_RUN_DEFAULT);
    uv_loop_close(&l->bare_loop);
  }
  free(l);
  return rc;
}
