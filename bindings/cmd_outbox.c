/*
** moonwire outbox list|show|retry|drop: the durable outbox from the command line. Opens the
** same SQLite database as the runtime (WAL mode, busy timeout), so it is safe while the
** runtime runs; the runtime notices the change within a second and sends requeued messages.
*/
#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lb_config.h"
#include "mw_log.h"
#include "mw_outbox.h"
#include "mw_outbox_store.h"

const char mw_usage_outbox[] =
    "Usage: moonwire outbox COMMAND (--config CONFIG.lua | --db OUTBOX.db) [OPTIONS]\n\n"
    "Inspects and repairs the durable outbox of the device configured in CONFIG.lua\n"
    "(outbox.path, or the default place for its client id). Safe while the runtime runs.\n\n"
    "Commands:\n"
    "  list [--pending] [--limit N]  counters and dead letters (--pending: also waiting messages)\n"
    "  show ID                       one dead letter, with its payload\n"
    "  retry ID|all                  move dead letter(s) back to the end of the queue; the\n"
    "                                runtime sends them again (and may dead-letter them again)\n"
    "  drop ID|all                   delete dead letter(s) for good\n\n"
    "Options:\n"
    "  -c, --config FILE   the device configuration (finds the outbox like the runtime does)\n"
    "  -t, --thing NAME    override the thing name (the client id with it)\n"
    "      --db FILE       the outbox database itself, instead of --config\n"
    "      --limit N       rows to list (default 50)\n"
    "      --pending       also list the messages waiting to be sent\n";

typedef struct {
  const char *config, *thing, *db, *cmd, *arg, *limit;
  int pending;
} opts_t;

static int parse(int argc, char **argv, opts_t *o) {
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    if (!strcmp(a, "-c") || !strcmp(a, "--config")) slot = &o->config;
    else if (!strcmp(a, "-t") || !strcmp(a, "--thing")) slot = &o->thing;
    else if (!strcmp(a, "--db")) slot = &o->db;
    else if (!strcmp(a, "--limit")) slot = &o->limit;
    else if (!strcmp(a, "--pending")) o->pending = 1;
    else if (a[0] == '-') return mw_cli_usage_error("outbox", "unknown option '%s'", a);
    else if (!o->cmd) o->cmd = a;
    else if (!o->arg) o->arg = a;
    else return mw_cli_usage_error("outbox", "unexpected argument '%s'", a);
    if (slot) {
      if (i + 1 >= argc) return mw_cli_usage_error("outbox", "%s needs a value", a);
      *slot = argv[++i];
    }
  }
  if (!o->cmd) return mw_cli_usage_error("outbox", "no command given (list, show, retry or drop)");
  if (strcmp(o->cmd, "list") && strcmp(o->cmd, "show") && strcmp(o->cmd, "retry") && strcmp(o->cmd, "drop"))
    return mw_cli_usage_error("outbox", "unknown command '%s'", o->cmd);
  if (!o->config && !o->db) return mw_cli_usage_error("outbox", "give --config CONFIG.lua or --db OUTBOX.db");
  if (strcmp(o->cmd, "list") && !o->arg) return mw_cli_usage_error("outbox", "%s needs an ID", o->cmd);
  if (!strcmp(o->cmd, "list") && o->arg) return mw_cli_usage_error("outbox", "list takes no argument");
  return 0;
}

/* The outbox path the runtime would use for this configuration. */
static int resolve_path(const opts_t *o, char *path, size_t len) {
  if (o->db) {
    snprintf(path, len, "%s", o->db);
    return 0;
  }
  lua_State *L = luaL_newstate();
  if (!L) return mw_cli_fail("out of memory");
  luaL_openlibs(L);
  mw_config_t cfg;
  char err[1024];
  lb_config_overrides_t ov = {0};
  ov.thing = o->thing;
  int rc = lb_config_load(L, o->config, &ov, &cfg, err, sizeof err);
  lua_close(L);
  if (rc != 0) {
    mw_config_free(&cfg);
    return mw_cli_fail("%s", err);
  }
  if (cfg.outbox.path) {
    snprintf(path, len, "%s", cfg.outbox.path);
  } else if (mw_outbox_default_path(cfg.client_id, path, len, err, sizeof err) != MW_OK) {
    mw_config_free(&cfg);
    return mw_cli_fail("%s", err);
  }
  int memory = strcmp(path, ":memory:") == 0;
  mw_config_free(&cfg);
  if (memory) return mw_cli_fail("%s: outbox.path is \":memory:\": that outbox lives only inside the runtime", o->config);
  return 0;
}

static void fmt_time(int64_t ms, char *buf, size_t len) {
  if (ms <= 0) {
    snprintf(buf, len, "-");
    return;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static void fmt_size(int64_t n, char *buf, size_t len) {
  if (n < 10 * 1024) snprintf(buf, len, "%lld B", (long long)n);
  else if (n < 10 * 1024 * 1024) snprintf(buf, len, "%.1f KiB", n / 1024.0);
  else snprintf(buf, len, "%.1f MiB", n / 1048576.0);
}

static int print_dead(void *ud, const mw_outbox_msg_t *m) {
  (void)ud;
  char died[32];
  fmt_time(m->dead_ms, died, sizeof died);
  printf("  %-8lld %-19s %7d %8zu  %s\n           %s\n", (long long)m->seq, died, m->strikes, m->len, m->topic,
         m->reason ? m->reason : "");
  return 0;
}

static int print_pending(void *ud, const mw_outbox_msg_t *m) {
  (void)ud;
  char created[32];
  fmt_time(m->created_ms, created, sizeof created);
  printf("  %-8lld %-19s %7d %8zu  %s\n", (long long)m->seq, created, m->strikes, m->len, m->topic);
  return 0;
}

static int cmd_list(mw_outbox_store_t *st, const char *path, const opts_t *o) {
  long limit = o->limit ? strtol(o->limit, NULL, 10) : 50;
  if (limit <= 0) return mw_cli_usage_error("outbox", "--limit needs a positive number");
  mw_outbox_counts_t c;
  if (mw_outbox_store_counts(st, &c) != MW_OK) return mw_cli_fail("%s: %s", path, mw_outbox_store_errmsg(st));
  char pb[32], db[32], oldest[32];
  fmt_size(c.pending_bytes, pb, sizeof pb);
  fmt_size(c.dead_bytes, db, sizeof db);
  fmt_time(c.oldest_ms, oldest, sizeof oldest);
  printf("outbox %s\n", path);
  printf("  pending:      %lld message(s), %s%s%s\n", (long long)c.pending, pb, c.pending ? ", oldest from " : "",
         c.pending ? oldest : "");
  printf("  dead letters: %lld message(s), %s\n", (long long)c.dead, db);
  if (c.dead) {
    printf("\ndead letters (moonwire outbox retry ID | drop ID):\n");
    printf("  %-8s %-19s %7s %8s  %s\n", "ID", "DIED", "STRIKES", "BYTES", "TOPIC / REASON");
    mw_outbox_store_scan_dead(st, 0, (int)limit, print_dead, NULL);
    if (c.dead > limit) printf("  ... %lld more (--limit)\n", (long long)(c.dead - limit));
  }
  if (o->pending && c.pending) {
    printf("\npending, in sending order:\n");
    printf("  %-8s %-19s %7s %8s  %s\n", "HANDLE", "ACCEPTED", "STRIKES", "BYTES", "TOPIC");
    mw_outbox_store_scan(st, 0, (int)limit, print_pending, NULL);
    if (c.pending > limit) printf("  ... %lld more (--limit)\n", (long long)(c.pending - limit));
  }
  return MW_EXIT_OK;
}

typedef struct {
  int64_t want;
  bool found;
} show_t;

static int show_dead(void *ud, const mw_outbox_msg_t *m) {
  show_t *sh = ud;
  if (m->seq != sh->want) return 1;
  sh->found = true;
  char died[32], created[32];
  fmt_time(m->dead_ms, died, sizeof died);
  fmt_time(m->created_ms, created, sizeof created);
  printf("id:       %lld\ntopic:    %s\nqos:      %d%s\naccepted: %s\ndied:     %s\nstrikes:  %d\nreason:   %s\n"
         "payload:  %zu bytes\n",
         (long long)m->seq, m->topic, m->qos, m->retain ? " (retained)" : "", created, died, m->strikes,
         m->reason ? m->reason : "", m->len);
  bool text = true;
  const unsigned char *p = m->payload;
  for (size_t i = 0; i < m->len; i++)
    if (p[i] < 0x20 && p[i] != '\n' && p[i] != '\r' && p[i] != '\t') text = false;
  if (text) {
    fwrite(m->payload, 1, m->len, stdout);
    if (m->len) putchar('\n');
  } else {
    for (size_t i = 0; i < m->len && i < 4096; i++) printf("%02x%s", p[i], (i + 1) % 32 ? "" : "\n");
    printf("\n");
  }
  return 1;
}

static int parse_id(const char *s, int64_t *id) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v <= 0) return -1;
  *id = v;
  return 0;
}

static int collect_ids(void *ud, const mw_outbox_msg_t *m) {
  int64_t **pp = ud;
  **pp = m->seq;
  (*pp)++;
  return 0;
}

/* retry / drop one id or all; one transaction. */
static int cmd_change(mw_outbox_store_t *st, const char *path, const opts_t *o) {
  bool retry = !strcmp(o->cmd, "retry");
  int64_t one, *ids = NULL;
  size_t n = 0;
  if (!strcmp(o->arg, "all")) {
    mw_outbox_counts_t c;
    if (mw_outbox_store_counts(st, &c) != MW_OK) return mw_cli_fail("%s: %s", path, mw_outbox_store_errmsg(st));
    ids = calloc((size_t)c.dead + 1, sizeof *ids);
    if (!ids) return mw_cli_fail("out of memory");
    int64_t *p = ids;
    mw_outbox_store_scan_dead(st, 0, (int)c.dead, collect_ids, &p);
    n = (size_t)(p - ids);
  } else {
    if (parse_id(o->arg, &one) != 0) return mw_cli_usage_error("outbox", "'%s' is not a dead-letter id or 'all'", o->arg);
    ids = &one;
    n = 1;
  }
  int rc = MW_EXIT_OK;
  size_t done = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t seq = 0;
    mw_status_t s = retry ? mw_outbox_store_requeue(st, ids[i], &seq) : mw_outbox_store_drop_dead(st, ids[i]);
    if (s == MW_ERR_NOT_FOUND) {
      rc = mw_cli_fail("no dead letter %lld in %s", (long long)ids[i], path);
      continue;
    }
    if (s != MW_OK) {
      rc = mw_cli_fail("%s: %s", path, mw_outbox_store_errmsg(st));
      break;
    }
    done++;
    if (retry) printf("dead letter %lld requeued as message %lld\n", (long long)ids[i], (long long)seq);
    else printf("dead letter %lld dropped\n", (long long)ids[i]);
  }
  char err[300];
  if (rc == MW_EXIT_OK || done) {
    if (mw_outbox_store_commit(st, err, sizeof err) != MW_OK) rc = mw_cli_fail("%s: %s", path, err);
  } else {
    mw_outbox_store_rollback(st);
  }
  if (ids != &one) free(ids);
  if (n == 0) printf("no dead letters\n");
  return rc;
}

int mw_cmd_outbox(int argc, char **argv) {
  opts_t o;
  int rc = parse(argc, argv, &o);
  if (rc) return rc;
  char path[PATH_MAX];
  if ((rc = resolve_path(&o, path, sizeof path)) != 0) return rc;
  if (access(path, F_OK) != 0)
    return mw_cli_fail("no outbox at %s (nothing was ever queued there, or outbox.path points elsewhere)", path);
  mw_outbox_store_t *st;
  char err[600];
  if (mw_outbox_store_open(path, MW_OUTBOX_SYNC_FULL, &st, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);
  if (!strcmp(o.cmd, "list")) {
    rc = cmd_list(st, path, &o);
  } else if (!strcmp(o.cmd, "show")) {
    show_t sh = {0};
    if (parse_id(o.arg, &sh.want) != 0) {
      rc = mw_cli_usage_error("outbox", "'%s' is not a dead-letter id", o.arg);
    } else {
      /* The first dead letter after id - 1 is the one with that id, if it exists. */
      mw_outbox_store_scan_dead(st, sh.want - 1, 1, show_dead, &sh);
      rc = sh.found ? MW_EXIT_OK : mw_cli_fail("no dead letter %lld in %s", (long long)sh.want, path);
    }
  } else {
    rc = cmd_change(st, path, &o);
  }
  mw_outbox_store_close(st);
  return rc;
}
