/*
** Where a client's outbox lives when the configuration does not say. Separate from the engine:
** it touches no outbox, only the environment and the file system.
*/
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mw_outbox.h"

static int mkdirs(const char *path) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
  return 0;
}

mw_status_t mw_outbox_default_path(const char *client_id, char *buf, size_t len, char *err, size_t errlen) {
  char dir[PATH_MAX];
  const char *env = getenv("MOONWIRE_STATE_DIR");
  const char *xdg = getenv("XDG_STATE_HOME");
  const char *home = getenv("HOME");
  if (env && *env) snprintf(dir, sizeof dir, "%s", env);
  else if (geteuid() == 0) snprintf(dir, sizeof dir, "/var/lib/moonwire");
  else if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/moonwire", xdg);
  else if (home && *home) snprintf(dir, sizeof dir, "%s/.local/state/moonwire", home);
  else {
    snprintf(err, errlen, "no place for the outbox: set outbox.path (or $MOONWIRE_STATE_DIR)");
    return MW_ERR_INVALID;
  }
  if (mkdirs(dir) != 0) {
    snprintf(err, errlen, "cannot create %s for the outbox: %s (set outbox.path)", dir, strerror(errno));
    return MW_ERR_IO;
  }
  /* A client id may contain ':' (AWS allows it); keep it, file names may too. '/' may not. */
  char name[160];
  snprintf(name, sizeof name, "%s", client_id);
  for (char *p = name; *p; p++)
    if (*p == '/') *p = '_';
  if ((size_t)snprintf(buf, len, "%s/%s.outbox.db", dir, name) >= len) {
    snprintf(err, errlen, "outbox path too long");
    return MW_ERR_INVALID;
  }
  return MW_OK;
}
