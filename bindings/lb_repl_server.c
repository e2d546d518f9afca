/*
** REPL sessions on the runtime's loop (see lb_repl_server.h).
**
** Everything runs on the loop's one thread. A session reads frames with uv_read; an entry
** is evaluated right there, between events, so the runtime does nothing else while it runs
** (the time budget bounds that, as for handlers). During the evaluation the loop is not
** running, so the Ctrl-C frame is picked up by rt->interrupt_poll, which reads that
** client's socket directly (non-blocking) and scans what arrived for an I frame. Output
** (print, log lines) goes out with uv_write, which writes at once when the socket has
** room, so a long entry's output reaches the client while it runs.
*/
#include "lb_repl_server.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb_repl.h"
#include "mw_log.h"
#include "mw_repl_proto.h"
#include "mw_repl_sock.h"

#define MAX_SESSIONS 16
/* Output (print, log) a client has not read yet beyond which more output is dropped. */
#define OUTPUT_QUEUE_MAX (8u << 20)
/* How often, at most, a running entry looks at its client's socket. */
#define POLL_INTERVAL_NS (5 * 1000 * 1000)

typedef struct session session_t;

struct lb_repl_server {
  mw_rt_t *rt;
  lb_repl_t *engine;
  uv_pipe_t listener;
  mw_repl_listener_t sock;
  char path[MW_REPL_PATH_MAX];
  char app[PATH_MAX];
  session_t *sessions;
  int nsessions;
  unsigned next_id;
  session_t *evaluating; /* whose entry is running now */
};

struct session {
  session_t *next, *prev;
  lb_repl_server_t *srv;
  uv_pipe_t pipe;
  mw_repl_buf_t in;
  unsigned id;
  uid_t uid;
  pid_t pid;
  int follow_log;
  int interrupted;
  int dead;       /* to be closed once nothing on the stack uses it */
  int processing; /* inside process(): closing must wait */
  int linked;
  uint64_t dropped; /* output bytes dropped because the client did not read */
  uint64_t last_poll;
};

typedef struct {
  uv_write_t req;
  char data[];
} wreq_t;

static void session_close(session_t *s);

/* ------------------------------------------------------------------------------ output */

static void on_write(uv_write_t *req, int status) {
  session_t *s = req->handle->data;
  free(req);
  if (status < 0 && status != UV_ECANCELED && !s->dead) {
    s->dead = 1;
    if (!s->processing) session_close(s);
  }
}

static void send_frame(session_t *s, uint8_t type, const char *data, size_t len) {
  if (s->dead || uv_is_closing((uv_handle_t *)&s->pipe)) return;
  if (len > MW_REPL_MAX_PAYLOAD) len = MW_REPL_MAX_PAYLOAD;
  int droppable = type == MW_REPL_OUTPUT || type == MW_REPL_LOGLINE;
  if (droppable && uv_stream_get_write_queue_size((uv_stream_t *)&s->pipe) > OUTPUT_QUEUE_MAX) {
    s->dropped += len;
    return;
  }
  wreq_t *w = malloc(sizeof *w + MW_REPL_HEADER + len);
  if (!w) {
    if (droppable) s->dropped += len;
    return;
  }
  mw_repl_frame_header((uint8_t *)w->data, type, (uint32_t)len);
  if (len) memcpy(w->data + MW_REPL_HEADER, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)(MW_REPL_HEADER + len));
  if (uv_write(&w->req, (uv_stream_t *)&s->pipe, &b, 1, on_write) != 0) {
    free(w);
    s->dead = 1;
    if (!s->processing) session_close(s);
  }
}

static void send_text(session_t *s, uint8_t type, const char *text) { send_frame(s, type, text, strlen(text)); }

/* print() during an entry: to the client whose entry runs; otherwise the runtime's stdout. */
static void session_print(void *ud, const char *text, size_t len) {
  lb_repl_server_t *srv = ud;
  if (srv->evaluating) {
    send_frame(srv->evaluating, MW_REPL_OUTPUT, text, len);
  } else {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
  }
}

/* Every log line goes to the session whose entry is running and to those following the log. */
static void log_sink(void *ud, mw_log_level_t level, const char *where, const char *msg) {
  lb_repl_server_t *srv = ud;
  char line[2400];
  int n = 0;
  for (session_t *s = srv->sessions, *next; s; s = next) {
    next = s->next;
    if (s->dead || !(s == srv->evaluating || s->follow_log)) continue;
    if (n == 0) {
      mw_log_format(level, where, msg, line, sizeof line - 1);
      n = (int)strlen(line);
      line[n++] = '\n';
    }
    send_frame(s, MW_REPL_LOGLINE, line, (size_t)n);
  }
}

/* ------------------------------------------------------------------------------ interrupt */

/*
** rt->interrupt_poll while an entry of s runs: reads what the client has sent since (the
** loop is busy, so nobody else will) and looks for an I frame. A client that went away
** interrupts its entry too. What was read stays queued for process() afterwards.
*/
static int poll_interrupt(mw_rt_t *rt) {
  session_t *s = rt->interrupt_ud;
  if (!s) return 0;
  if (s->interrupted) return 1;
  uint64_t now = uv_hrtime();
  if (now - s->last_poll < POLL_INTERVAL_NS) return 0;
  s->last_poll = now;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&s->pipe, &fd) != 0) return 0;
  for (;;) {
    if (mw_repl_buf_reserve(&s->in, 4096) != MW_OK) break;
    ssize_t n = recv(fd, s->in.data + s->in.len, s->in.cap - s->in.len, MSG_DONTWAIT);
    if (n > 0) {
      s->in.len += (size_t)n;
      if (s->in.len - s->in.off > 2 * (MW_REPL_MAX_PAYLOAD + MW_REPL_HEADER)) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) s->interrupted = s->dead = 1;
    break;
  }
  size_t off = s->in.off;
  while (!s->interrupted && off < s->in.len) {
    mw_repl_frame_t f;
    size_t used;
    char err[128];
    if (mw_repl_frame_parse(s->in.data + off, s->in.len - off, 1, MW_REPL_MAX_PAYLOAD, &f, &used, err, sizeof err) !=
        MW_OK)
      break;
    if (f.type == MW_REPL_INTERRUPT) s->interrupted = 1;
    off += used;
  }
  return s->interrupted;
}

/* ------------------------------------------------------------------------------ requests */

static void run_entry(session_t *s, const char *code, size_t len, int flags, int width) {
  lb_repl_server_t *srv = s->srv;
  mw_rt_t *rt = srv->rt;
  lb_repl_result_t res;
  MW_LOGD("repl", "session %u: evaluating %zu bytes", s->id, len);
  srv->evaluating = s;
  s->interrupted = 0;
  s->last_poll = 0;
  rt->interrupt_poll = poll_interrupt;
  rt->interrupt_ud = s;
  lb_repl_eval(srv->engine, code, len, flags, width, &res);
  rt->interrupt_poll = NULL;
  rt->interrupt_ud = NULL;
  srv->evaluating = NULL;
  if (s->dropped) {
    char note[160];
    snprintf(note, sizeof note, "(%llu bytes of output were dropped: the client did not read them fast enough)\n",
             (unsigned long long)s->dropped);
    s->dropped = 0;
    send_text(s, MW_REPL_OUTPUT, note);
  }
  uint8_t type = res.status == LB_REPL_OK ? MW_REPL_RESULT : res.status == LB_REPL_MORE ? MW_REPL_MORE : MW_REPL_ERROR;
  send_frame(s, type, res.text ? res.text : "", res.text ? res.len : 0);
  free(res.text);
}

static void protocol_error(session_t *s, const char *why) {
  char msg[300];
  snprintf(msg, sizeof msg, "protocol error: %s", why);
  MW_LOGW("repl", "session %u: %s; closing it", s->id, msg);
  send_text(s, MW_REPL_ERROR, msg);
  s->dead = 1;
}

/* Handles every complete frame in s->in. Holds no pointer into s->in across an entry. */
static void process(session_t *s) {
  s->processing++;
  while (!s->dead) {
    mw_repl_frame_t f;
    size_t used;
    char err[200];
    mw_status_t st = mw_repl_frame_parse(s->in.data + s->in.off, s->in.len - s->in.off, 1, MW_REPL_MAX_PAYLOAD, &f,
                                         &used, err, sizeof err);
    if (st == MW_ERR_STATE) break;
    if (st != MW_OK) {
      protocol_error(s, err);
      break;
    }
    if (f.type == MW_REPL_EVAL || f.type == MW_REPL_COMPLETE) {
      size_t skip = f.type == MW_REPL_EVAL ? 2 : 0;
      if (f.len < skip) {
        protocol_error(s, "E frame without its flags");
        break;
      }
      int flags = skip ? (uint8_t)f.data[0] : 0, width = skip ? (uint8_t)f.data[1] : 0;
      size_t n = f.len - skip;
      char *text = malloc(n + 1);
      if (!text) {
        protocol_error(s, "out of memory");
        break;
      }
      memcpy(text, f.data + skip, n);
      text[n] = '\0';
      uint8_t type = f.type;
      mw_repl_buf_consume(&s->in, used);
      if (type == MW_REPL_EVAL) {
        run_entry(s, text, n, flags, width);
      } else {
        char *cands = lb_repl_complete(s->srv->engine, text, n);
        send_text(s, MW_REPL_COMPLETIONS, cands ? cands : "");
        free(cands);
      }
      free(text);
    } else if (f.type == MW_REPL_LOG) {
      s->follow_log = f.len > 0 && f.data[0] == '1';
      mw_repl_buf_consume(&s->in, used);
      send_text(s, MW_REPL_RESULT,
                s->follow_log ? "following the runtime's log (.log off to stop)" : "no longer following the log");
    } else {
      /* MW_REPL_INTERRUPT with nothing running: it came too late, the entry had finished. */
      mw_repl_buf_consume(&s->in, used);
    }
  }
  s->processing--;
  if (s->dead && !s->processing) session_close(s);
}

/* ------------------------------------------------------------------------------ sessions */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  session_t *s = h->data;
  if (mw_repl_buf_reserve(&s->in, 65536) != MW_OK) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(s->in.data + s->in.len, (unsigned)(s->in.cap - s->in.len));
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  session_t *s = stream->data;
  if (n < 0) {
    s->dead = 1;
    if (!s->processing) session_close(s);
    return;
  }
  s->in.len += (size_t)n;
  process(s);
}

static void on_session_closed(uv_handle_t *h) {
  session_t *s = h->data;
  mw_repl_buf_free(&s->in);
  free(s);
}

static void session_close(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->pipe)) return;
  lb_repl_server_t *srv = s->srv;
  if (s->linked) {
    if (s->prev) s->prev->next = s->next;
    else srv->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    s->linked = 0;
    srv->nsessions--;
    lb_repl_set_sessions(srv->engine, srv->nsessions);
    MW_LOGI("repl", "session %u detached", s->id);
  }
  if (srv->evaluating == s) srv->evaluating = NULL;
  uv_close((uv_handle_t *)&s->pipe, on_session_closed);
}

/* Refuses a connection: one D frame, written at once (the socket buffer is empty), then close. */
static void deny(session_t *s, const char *why) {
  uint8_t hdr[MW_REPL_HEADER];
  size_t n = strlen(why);
  mw_repl_frame_header(hdr, MW_REPL_DENIED, (uint32_t)n);
  uv_buf_t bufs[2] = {uv_buf_init((char *)hdr, sizeof hdr), uv_buf_init((char *)why, (unsigned)n)};
  (void)uv_try_write((uv_stream_t *)&s->pipe, bufs, 2);
  s->dead = 1;
  session_close(s);
}

static void on_connection(uv_stream_t *server, int status) {
  lb_repl_server_t *srv = server->data;
  if (status < 0) {
    MW_LOGW("repl", "accepting a connection failed: %s", uv_strerror(status));
    return;
  }
  session_t *s = calloc(1, sizeof *s);
  if (!s) {
    MW_LOGE("repl", "out of memory for a new session");
    return;
  }
  s->srv = srv;
  uv_pipe_init(srv->rt->loop, &s->pipe, 0);
  s->pipe.data = s;
  if (uv_accept(server, (uv_stream_t *)&s->pipe) != 0) {
    session_close(s);
    return;
  }
  uv_os_fd_t fd;
  uid_t self = geteuid();
  if (uv_fileno((uv_handle_t *)&s->pipe, &fd) != 0 || mw_repl_sock_peer(fd, &s->uid, &s->pid) != 0) {
    MW_LOGW("repl", "refused a connection whose credentials cannot be read");
    deny(s, "cannot read your credentials (SO_PEERCRED)");
    return;
  }
  if (!mw_repl_sock_peer_allowed(s->uid, self)) {
    char why[200];
    snprintf(why, sizeof why,
             "permission denied: this runtime runs as uid %u; only that user or root may attach (you are uid %u)",
             (unsigned)self, (unsigned)s->uid);
    MW_LOGW("repl", "refused a connection from uid %u (pid %d): only uid %u or root may attach", (unsigned)s->uid,
            (int)s->pid, (unsigned)self);
    deny(s, why);
    return;
  }
  if (srv->nsessions >= MAX_SESSIONS) {
    char why[100];
    snprintf(why, sizeof why, "too many REPL sessions (%d are attached)", srv->nsessions);
    MW_LOGW("repl", "refused a connection from pid %d: %s", (int)s->pid, why);
    deny(s, why);
    return;
  }
  s->id = ++srv->next_id;
  s->next = srv->sessions;
  if (s->next) s->next->prev = s;
  srv->sessions = s;
  s->linked = 1;
  srv->nsessions++;
  lb_repl_set_sessions(srv->engine, srv->nsessions);
  MW_LOGI("repl", "session %u attached (uid %u, pid %d)", s->id, (unsigned)s->uid, (int)s->pid);
  const mw_config_t *cfg = srv->rt->cfg;
  char hello[PATH_MAX + 300];
  snprintf(hello, sizeof hello, "proto=%d\nversion=%s\nthing=%s\npid=%d\napp=%s\nsession=%u\n", MW_REPL_PROTO_VERSION,
           MW_VERSION, cfg && cfg->thing ? cfg->thing : "", (int)getpid(), srv->app, s->id);
  send_text(s, MW_REPL_HELLO, hello);
  int rc = uv_read_start((uv_stream_t *)&s->pipe, on_alloc, on_read);
  if (rc != 0) {
    MW_LOGW("repl", "session %u: cannot read: %s", s->id, uv_strerror(rc));
    s->dead = 1;
    session_close(s);
  }
}

/* ------------------------------------------------------------------------------ server */

static void on_listener_closed(uv_handle_t *h) { free(h->data); }

int lb_repl_server_open(mw_rt_t *rt, const char *app, lb_repl_server_t **out, char *err, size_t errlen) {
  *out = NULL;
  const mw_config_t *cfg = rt->cfg;
  if (!cfg || !cfg->repl.enabled) {
    MW_LOGD("repl", "the REPL socket is disabled (repl.enabled = false)");
    return 0;
  }
  int explicit_path = cfg->repl.socket != NULL;
  char path[MW_REPL_PATH_MAX], why[600];
  if (explicit_path) {
    snprintf(path, sizeof path, "%s", cfg->repl.socket);
  } else if (mw_repl_sock_path(cfg->thing, path, sizeof path, why, sizeof why) != MW_OK) {
    MW_LOGW("repl", "no REPL socket: %s", why);
    return 0;
  }
  lb_repl_server_t *srv = calloc(1, sizeof *srv);
  if (!srv) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  srv->rt = rt;
  snprintf(srv->path, sizeof srv->path, "%s", path);
  if (!app || !realpath(app, srv->app)) snprintf(srv->app, sizeof srv->app, "%s", app ? app : "");
  mw_status_t st = mw_repl_sock_listen(path, &srv->sock, why, sizeof why);
  if (st != MW_OK) {
    free(srv);
    if (st == MW_ERR_CONFLICT || explicit_path) {
      snprintf(err, errlen, "%s", why);
      return -1;
    }
    MW_LOGW("repl", "no REPL socket: %s", why);
    return 0;
  }
  srv->engine = lb_repl_new(rt, why, sizeof why);
  if (!srv->engine) {
    close(srv->sock.fd);
    mw_repl_sock_unlink(path, &srv->sock);
    free(srv);
    snprintf(err, errlen, "%s", why);
    return -1;
  }
  uv_pipe_init(rt->loop, &srv->listener, 0);
  srv->listener.data = srv;
  int rc = uv_pipe_open(&srv->listener, srv->sock.fd);
  if (rc != 0) close(srv->sock.fd); /* otherwise the handle owns it */
  else rc = uv_listen((uv_stream_t *)&srv->listener, 16, on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", path, uv_strerror(rc));
    lb_repl_free(srv->engine);
    mw_repl_sock_unlink(path, &srv->sock);
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    return -1;
  }
  lb_repl_set_print(srv->engine, session_print, srv);
  lb_repl_set_sessions(srv->engine, 0);
  lb_repl_set_flag(srv->engine, "attached", 1);
  if (mw_log_add_sink(log_sink, srv) != 0) MW_LOGW("repl", "no free log sink: attached sessions will not see the log");
  if (srv->sock.stale_removed) MW_LOGI("repl", "replaced the stale socket %s left by a runtime that is gone", path);
  if (explicit_path) MW_LOGI("repl", "listening on %s (moonwire attach --socket %s)", path, path);
  else MW_LOGI("repl", "listening on %s (moonwire attach %s)", path, cfg->thing);
  *out = srv;
  return 0;
}

void lb_repl_server_close(lb_repl_server_t *srv) {
  if (!srv) return;
  mw_log_remove_sink(log_sink, srv);
  while (srv->sessions) {
    session_t *s = srv->sessions;
    s->dead = 1;
    session_close(s);
  }
  mw_repl_sock_unlink(srv->path, &srv->sock);
  lb_repl_free(srv->engine);
  srv->engine = NULL;
  uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
}
