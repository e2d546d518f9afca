/*
** The Lua modules under scripts/, compiled into the binary (see
** tools/cmake/embed-scripts.cmake). lb_preload registers each under its module name.
*/
#ifndef MW_LB_SCRIPTS_H
#define MW_LB_SCRIPTS_H

#include <stddef.h>

typedef struct {
  const char *module;    /* "moonwire.shadow" for scripts/moonwire/shadow.lua */
  const char *chunkname; /* "@scripts/moonwire/shadow.lua": errors then name file:line */
  const char *source;
  size_t len;
} lb_script_t;

/* Terminated by an entry whose module is NULL. */
extern const lb_script_t lb_scripts[];

#endif
