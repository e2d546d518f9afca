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
