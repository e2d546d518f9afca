/*
** Levelled logger. Lines go to stderr; under systemd (JOURNAL_STREAM set) each line
** carries a "<N>" syslog priority prefix, which journald turns into the priority field.
** A sink hook lets the REPL mirror the log to attached sessions.
*/
#ifndef MW_LOG_H
#define MW_LOG_H

#include <stddef.h>

typedef enum { MW_LOG_DEBUG = 0, MW_LOG_INFO, MW_LOG_WARN, MW_LOG_ERROR } mw_log_level_t;

/* where may be NULL (C code) or "file.lua:12" (scripts). */
typedef void (*mw_log_sink_fn)(void *ud, mw_log_level_t level, const char *where, const char *msg);

void mw_log_set_level(mw_log_level_t level);
mw_log_level_t mw_log_get_level(void);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 when unknown. */
int mw_log_level_parse(const char *name);
const char *mw_log_level_name(mw_log_level_t level);
/* Adds an extra sink (the stderr one always runs); NULL removes it. */
void mw_log_set_sink(mw_log_sink_fn fn, void *ud);
/* More sinks (up to 4), e.g. one per REPL server; a sink that logs is not re-entered. 0 or -1 when full. */
int mw_log_add_sink(mw_log_sink_fn fn, void *ud);
void mw_log_remove_sink(mw_log_sink_fn fn, void *ud);
/* Turns the stderr output off (0) or on (1); sinks still run. */
void mw_log_set_stderr(int on);
/* "HH:MM:SS.mmm level where: msg", the stderr line without its newline. */
void mw_log_format(mw_log_level_t level, const char *where, const char *msg, char *buf, size_t len);

void mw_log_write(mw_log_level_t level, const char *where, const char *msg);
void mw_log_printf(mw_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define MW_LOGD(comp, ...) mw_log_printf(MW_LOG_DEBUG, comp, __VA_ARGS__)
#define MW_LOGI(comp, ...) mw_log_printf(MW_LOG_INFO, comp, __VA_ARGS__)
#define MW_LOGW(comp, ...) mw_log_printf(MW_LOG_WARN, comp, __VA_ARGS__)
#define MW_LOGE(comp, ...) mw_log_printf(MW_LOG_ERROR, comp, __VA_ARGS__)

#endif
