/*
** Reads the Lua configuration file (a chunk returning a table) into mw_config_t,
** rejecting unknown keys and wrong types with the key's dotted name. The table stays
** in the registry for moonwire.device's read-only view.
*/
#ifndef MW_LB_CONFIG_H
#define MW_LB_CONFIG_H

#include <lua.h>
#include <stddef.h>

#include "mw_config.h"

typedef struct {
  const char *thing;  /* --thing */
  const char *broker; /* --broker HOST:PORT */
  const char *outbox_default; /* outbox.path when the configuration has none (e.g. ":memory:") */
} lb_config_overrides_t;

/* Returns 0 on success; otherwise writes a one-line reason into err. */
int lb_config_load(lua_State *L, const char *path, const lb_config_overrides_t *ov, mw_config_t *cfg, char *err,
                   size_t errlen);
/* The same, from text already in memory (path names it in messages). */
int lb_config_load_text(lua_State *L, const char *path, const char *text, size_t len,
                        const lb_config_overrides_t *ov, mw_config_t *cfg, char *err, size_t errlen);
/* Pushes the loaded configuration table (or nil). */
void lb_config_push(lua_State *L);

#endif
