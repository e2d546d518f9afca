/*
** The device configuration, as C sees it after bindings/lb_config.c has read and
** checked the Lua configuration file. Strings are owned by the struct.
*/
#ifndef MW_CONFIG_H
#define MW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *path;          /* the configuration file, for messages */
  char *thing;
  char *client_id;
  struct {
    char *host;
    int port;
    char *alpn;
    int keepalive;
    bool clean_session;
  } broker;
  struct {
    char *ca, *cert, *key;
  } tls;
  struct {
    char *topic;
    char *payload;
    size_t payload_len;
    int qos;
    bool retain;
  } will;
  struct {
    uint32_t base_ms, cap_ms;
  } reconnect;
  struct {
    int max_inflight;
    size_t max_payload;
    size_t lua_memory;
  } limits;
  struct {
    char *device; /* "/dev/i2c-1": a real OPTIGA Trust M */
    int address;  /* 7-bit I2C address, 0x30 by default */
    char *sim;    /* simulator state file instead of a device */
  } se;
  char *log_level;
  struct {                      /* budgets and reloading of the app's Lua (issue 3) */
    uint32_t budget_ms;         /* wall-clock limit of one handler/timer/REPL entry; 0: none */
    uint32_t load_budget_ms;    /* limit of the app's top-level chunk (+ migrate); 0: none */
    size_t load_memory;         /* heap a version's load may grow the state by; 0: lua_memory / 4 */
    int quarantine_after;       /* budget stops before a handler is quarantined; 0: never */
    bool watch;                 /* reload when the app or its modules change on disk */
    uint32_t debounce_ms;       /* quiet time after a change before reloading */
    int rollback_errors;        /* > this many handler errors ... */
    uint32_t rollback_within_s; /* ... within this long after a reload: roll back; 0: off */
  } lua;
  struct {
    bool enabled; /* the REPL socket of `moonwire run` (docs/repl.md); true by default */
    char *socket; /* explicit socket path; NULL: the default for the thing */
  } repl;
  struct {
    char *module; /* PKCS#11 module for pkcs11: keys without module-path= */
  } pkcs11;
} mw_config_t;

void mw_config_defaults(mw_config_t *c);
void mw_config_free(mw_config_t *c);
/* Applies --broker HOST:PORT; returns false when the text is not of that form. */
bool mw_config_set_broker(mw_config_t *c, const char *hostport);

#endif
