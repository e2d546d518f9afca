#include "mw_repl_sock.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/time.h>
#include <unistd.h>

#include "mw_repl_proto.h"

mw_status_t mw_repl_sock_dir(char *out, size_t outlen, char *err, size_t errlen) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  int n;
  if (xdg && xdg[0] == '/') n = snprintf(out, outlen, "%s/moonwire", xdg);
  else if (geteuid() == 0) n = snprintf(out, outlen, "/run/moonwire");
  else n = snprintf(out, outlen, "/tmp/moonwire-%u", (unsigned)geteuid());
  if (n < 0 || (size_t)n >= outlen) {
    snprintf(err, errlen, "the socket directory under $XDG_RUNTIME_DIR is too long a path");
    return MW_ERR_TOO_LARGE;
  }
  return MW_OK;
}

mw_status_t mw_repl_sock_path(const char *name, char *out, size_t outlen, char *err, size_t errlen) {
  if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    snprintf(err, errlen, "'%s' is not a thing name", name);
    return MW_ERR_INVALID;
  }
  char dir[PATH_MAX];
  mw_status_t st = mw_repl_sock_dir(dir, sizeof dir, err, errlen);
  if (st != MW_OK) return st;
  int n = snprintf(out, outlen, "%s/%s.sock", dir, name);
  if (n < 0 || (size_t)n >= outlen || (size_t)n >= MW_REPL_PATH_MAX) {
    snprintf(err, errlen, "socket path %s/%s.sock is longer than the %d bytes a Unix socket allows", dir, name,
             MW_REPL_PATH_MAX - 1);
    return MW_ERR_TOO_LARGE;
  }
  return MW_OK;
}

static int fill_addr(const char *path, struct sockaddr_un *a, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a->sun_path) {
    snprintf(err, errlen, "socket path %s is longer than the %zu bytes a Unix socket allows", path,
             sizeof a->sun_path - 1);
    return -1;
  }
  memcpy(a->sun_path, path, strlen(path) + 1);
  return 0;
}

/* The directory must exist (we create only its last component) and be safe to put a socket in. */
static mw_status_t prepare_dir(const char *path, char *err, size_t errlen) {
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s", path);
  const char *dir = dirname(copy);
  if (mkdir(dir, 0700) == 0) return MW_OK;
  if (errno != EEXIST) {
    snprintf(err, errlen, "cannot create the socket directory %s: %s", dir, strerror(errno));
    return MW_ERR_IO;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "%s is not a directory", dir);
    return MW_ERR_IO;
  }
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    snprintf(err, errlen, "the socket directory %s belongs to uid %u, not to us (uid %u): refusing to use it", dir,
             (unsigned)st.st_uid, (unsigned)geteuid());
    return MW_ERR_REFUSED;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
    snprintf(err, errlen, "the socket directory %s is writable by other users (mode %03o): refusing to use it", dir,
             (unsigned)(st.st_mode & 0777));
    return MW_ERR_REFUSED;
  }
  return MW_OK;
}

/* Who listens there: "pid N, thing T, app A" from its hello frame (waits at most 1 s). */
static void describe_peer(int fd, char *who, size_t len) {
  struct timeval tv = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  size_t have = 0;
  while (have < sizeof buf) {
    ssize_t n = read(fd, buf + have, sizeof buf - have);
    if (n <= 0) return;
    have += (size_t)n;
    mw_repl_frame_t f;
    size_t used;
    char err[128];
    mw_status_t st = mw_repl_frame_parse(buf, have, 0, sizeof buf, &f, &used, err, sizeof err);
    if (st == MW_ERR_STATE) continue;
    if (st != MW_OK || f.type != MW_REPL_HELLO) return;
    char pid[32], thing[160], app[512];
    mw_repl_kv_get(f.data, f.len, "pid", pid, sizeof pid);
    mw_repl_kv_get(f.data, f.len, "thing", thing, sizeof thing);
    mw_repl_kv_get(f.data, f.len, "app", app, sizeof app);
    snprintf(who, len, " (pid %s, thing %s, app %s)", pid, thing, app);
    return;
  }
}

/* 1: something is listening; 0: stale (nobody listens); -1: cannot tell (err set). */
static int probe(const char *path, char *who, size_t wholen, char *err, size_t errlen) {
  struct sockaddr_un a;
  if (fill_addr(path, &a, err, errlen) != 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return -1;
  }
  int r = connect(fd, (struct sockaddr *)&a, sizeof a);
  int e = errno;
  if (r == 0) describe_peer(fd, who, wholen);
  close(fd);
  if (r == 0) return 1;
  /* A full backlog (EAGAIN) still means a live listener. */
  if (e == EAGAIN) return 1;
  if (e == ECONNREFUSED || e == ENOENT) return 0;
  snprintf(err, errlen, "cannot check the existing socket %s: %s", path, strerror(e));
  return -1;
}

mw_status_t mw_repl_sock_listen(const char *path, mw_repl_listener_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->fd = -1;
  struct sockaddr_un a;
  if (fill_addr(path, &a, err, errlen) != 0) return MW_ERR_TOO_LARGE;
  mw_status_t st = prepare_dir(path, err, errlen);
  if (st != MW_OK) return st;
  struct stat sb;
  if (lstat(path, &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      snprintf(err, errlen, "%s exists and is not a socket; not touching it", path);
      return MW_ERR_CONFLICT;
    }
    char who[800] = "";
    int live = probe(path, who, sizeof who, err, errlen);
    if (live < 0) return MW_ERR_IO;
    if (live) {
      snprintf(err, errlen,
               "another moonwire is already running with the REPL socket %s%s: stop it first, or give this one "
               "its own repl.socket (or repl.enabled = false)",
               path, who);
      return MW_ERR_CONFLICT;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
      snprintf(err, errlen, "cannot remove the stale socket %s: %s", path, strerror(errno));
      return MW_ERR_IO;
    }
    out->stale_removed = true;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return MW_ERR_IO;
  }
  /* Born 0600: there is no moment in which another user could connect. */
  mode_t old = umask(0177);
  int r = bind(fd, (struct sockaddr *)&a, sizeof a);
  int e = errno;
  umask(old);
  if (r != 0) {
    close(fd);
    if (e == EADDRINUSE) {
      snprintf(err, errlen, "another moonwire is already running with the REPL socket %s", path);
      return MW_ERR_CONFLICT;
    }
    snprintf(err, errlen, "cannot bind %s: %s", path, strerror(e));
    return MW_ERR_IO;
  }
  if (chmod(path, 0600) != 0 || lstat(path, &sb) != 0 || listen(fd, 16) != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return MW_ERR_IO;
  }
  out->fd = fd;
  out->dev = sb.st_dev;
  out->ino = sb.st_ino;
  out->ctime_sec = (long)sb.st_ctim.tv_sec;
  out->ctime_nsec = sb.st_ctim.tv_nsec;
  return MW_OK;
}

void mw_repl_sock_unlink(const char *path, const mw_repl_listener_t *l) {
  struct stat sb;
  if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode) && sb.st_dev == l->dev && sb.st_ino == l->ino &&
      (long)sb.st_ctim.tv_sec == l->ctime_sec && sb.st_ctim.tv_nsec == l->ctime_nsec)
    unlink(path);
}

mw_status_t mw_repl_sock_connect(const char *path, int *fd, char *err, size_t errlen) {
  struct sockaddr_un a;
  *fd = -1;
  if (fill_addr(path, &a, err, errlen) != 0) return MW_ERR_TOO_LARGE;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return MW_ERR_IO;
  }
  if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
    *fd = s;
    return MW_OK;
  }
  int e = errno;
  close(s);
  struct stat sb;
  switch (e) {
  case ENOENT:
    snprintf(err, errlen, "no runtime is listening on %s (is 'moonwire run' running, as this user?)", path);
    return MW_ERR_NOT_FOUND;
  case ECONNREFUSED:
    snprintf(err, errlen, "%s is left over from a runtime that is gone (nobody is listening)", path);
    return MW_ERR_NOT_CONNECTED;
  case EACCES:
  case EPERM:
    if (stat(path, &sb) == 0)
      snprintf(err, errlen, "permission denied: %s belongs to uid %u; only that user or root may attach", path,
               (unsigned)sb.st_uid);
    else
      snprintf(err, errlen, "permission denied: cannot reach %s; only the runtime's user or root may attach", path);
    return MW_ERR_REFUSED;
  default:
    snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(e));
    return MW_ERR_IO;
  }
}

int mw_repl_sock_peer(int fd, uid_t *uid, pid_t *pid) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) return -1;
  *uid = cred.uid;
  *pid = cred.pid;
  return 0;
}

bool mw_repl_sock_peer_allowed(uid_t peer, uid_t self) { return peer == self || peer == 0; }
