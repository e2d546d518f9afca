#include "mw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static mw_log_level_t min_level = MW_LOG_INFO;
static mw_log_sink_fn sink_fn;
static void *sink_ud;
/* Further sinks (the REPL server's); a sink that logs does not re-enter the sinks. */
#define MAX_SINKS 4
static struct {
  mw_log_sink_fn fn;
  void *ud;
} sinks[MAX_SINKS];
static int in_sinks;
static int to_stderr = 1;
static int journal = -1; /* unknown until the first line */

static const char *const names[] = {"debug", "info", "warn", "error"};
/* syslog priorities: debug 7, info 6, warning 4, err 3 */
static const int prio[] = {7, 6, 4, 3};

void mw_log_set_level(mw_log_level_t level) { min_level = level; }
mw_log_level_t mw_log_get_level(void) { return min_level; }
const char *mw_log_level_name(mw_log_level_t level) {
  return (unsigned)level <= MW_LOG_ERROR ? names[level] : "?";
}

int mw_log_level_parse(const char *name) {
  for (int i = 0; i <= MW_LOG_ERROR; i++)
    if (strcasecmp(name, names[i]) == 0) return i;
  if (strcasecmp(name, "warning") == 0) return MW_LOG_WARN;
  return -1;
}

void mw_log_set_sink(mw_log_sink_fn fn, void *ud) {
  sink_fn = fn;
  sink_ud = ud;
}

int mw_log_add_sink(mw_log_sink_fn fn, void *ud) {
  for (int i = 0; i < MAX_SINKS; i++) {
    if (sinks[i].fn) continue;
    sinks[i].fn = fn;
    sinks[i].ud = ud;
    return 0;
  }
  return -1;
}

void mw_log_remove_sink(mw_log_sink_fn fn, void *ud) {
  for (int i = 0; i < MAX_SINKS; i++)
    if (sinks[i].fn == fn && sinks[i].ud == ud) sinks[i].fn = NULL, sinks[i].ud = NULL;
}

void mw_log_set_stderr(int on) { to_stderr = on; }

void mw_log_format(mw_log_level_t level, const char *where, const char *msg, char *buf, size_t len) {
  struct timespec ts;
  struct tm tm;
  char stamp[32];
  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  snprintf(buf, len, "%s.%03ld %-5s %s%s%s", stamp, ts.tv_nsec / 1000000, mw_log_level_name(level),
           where ? where : "", where ? ": " : "", msg);
}

void mw_log_write(mw_log_level_t level, const char *where, const char *msg) {
  if (level < min_level) return;
  if (journal < 0) journal = getenv("JOURNAL_STREAM") != NULL;
  if (!to_stderr) {
    /* someone else shows the log (the local REPL prints it above its prompt) */
  } else if (journal) {
    fprintf(stderr, "<%d>%s%s%s\n", prio[level], where ? where : "", where ? ": " : "", msg);
  } else {
    char line[2400];
    mw_log_format(level, where, msg, line, sizeof line);
    fprintf(stderr, "%s\n", line);
  }
  if (sink_fn) sink_fn(sink_ud, level, where, msg);
  if (in_sinks) return;
  in_sinks = 1;
  for (int i = 0; i < MAX_SINKS; i++)
    if (sinks[i].fn) sinks[i].fn(sinks[i].ud, level, where, msg);
  in_sinks = 0;
}

void mw_log_printf(mw_log_level_t level, const char *component, const char *fmt, ...) {
  if (level < min_level && !sink_fn) return;
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  mw_log_write(level, component, buf);
}
