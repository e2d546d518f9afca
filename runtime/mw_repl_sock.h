/*
** Where the REPL socket of a running `moonwire run` lives, and the checks around it:
** a private directory, a 0600 socket, stale sockets of killed runtimes replaced, a live
** one refused, and the peer's uid (SO_PEERCRED) compared with ours.
**
** Default directory: $XDG_RUNTIME_DIR/moonwire, else /run/moonwire as root, else
** /tmp/moonwire-UID. The socket is <dir>/<thing>.sock.
*/
#ifndef MW_REPL_SOCK_H
#define MW_REPL_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mw_status.h"

/* Longest socket path (sun_path holds 108 bytes with the NUL). */
#define MW_REPL_PATH_MAX 108

/* The default socket directory for the current user. */
mw_status_t mw_repl_sock_dir(char *out, size_t outlen, char *err, size_t errlen);
/* <default dir>/<name>.sock; name must be a thing name (no '/'). */
mw_status_t mw_repl_sock_path(const char *name, char *out, size_t outlen, char *err, size_t errlen);

typedef struct {
  int fd;            /* listening, non-blocking, close-on-exec */
  dev_t dev;         /* identity of the socket file, so shutdown removes only our own */
  ino_t ino;         /* (inode numbers are reused: the change time tells a newer file apart) */
  long ctime_sec, ctime_nsec;
  bool stale_removed; /* a socket left by a killed runtime was replaced */
} mw_repl_listener_t;

/*
** Creates the directory (mode 0700) when missing, checks that an existing one belongs to
** us or root and is not writable by others, replaces a stale socket, refuses when another
** runtime is listening (MW_ERR_CONFLICT), then binds (mode 0600) and listens.
*/
mw_status_t mw_repl_sock_listen(const char *path, mw_repl_listener_t *out, char *err, size_t errlen);
/* Removes path if it is still the socket l made. */
void mw_repl_sock_unlink(const char *path, const mw_repl_listener_t *l);

/* Connects (blocking) to a runtime's socket; the message explains refusals in words. */
mw_status_t mw_repl_sock_connect(const char *path, int *fd, char *err, size_t errlen);

/* The connected peer's uid and pid (SO_PEERCRED); -1 on failure. */
int mw_repl_sock_peer(int fd, uid_t *uid, pid_t *pid);
/* Only the runtime's own user and root may attach. */
bool mw_repl_sock_peer_allowed(uid_t peer, uid_t self);

#endif
