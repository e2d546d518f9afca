/*
** moonwire attach [NAME | --socket PATH] [-e CHUNK]: a Lua prompt inside a running
** `moonwire run`, over its REPL socket (bindings/lb_repl_server.c; protocol in
** runtime/mw_repl_proto.h). Interactive on a terminal; otherwise one chunk from -e or
** stdin is evaluated and the exit status says whether it raised.
*/
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "lb_repl_term.h"
#include "mw_repl_proto.h"
#include "mw_repl_sock.h"

const char mw_usage_attach[] =
    "Usage: moonwire attach [NAME | --socket PATH] [-e CHUNK]\n\n"
    "Opens a Lua prompt inside a running 'moonwire run' (which listens on a Unix socket):\n"
    "entries run in the runtime's event loop between events, in the app's environment,\n"
    "under the handlers' time budget; Ctrl-C interrupts a running entry. NAME is the thing\n"
    "name; without it, the only runtime of this user is chosen.\n\n"
    "When stdin is not a terminal, or with -e, one chunk is evaluated: printed output and\n"
    "results go to stdout (strings as they are), an error to stderr, exit status 1.\n"
    "  echo 'return app.state' | moonwire attach car-01\n\n"
    "Options:\n"
    "  -s, --socket PATH   the runtime's socket (when its configuration sets repl.socket)\n"
    "  -e, --eval CHUNK    evaluate CHUNK, print the results and exit\n"
    "  -h, --help          show this help\n\n"
    "Sockets: $XDG_RUNTIME_DIR/moonwire/NAME.sock, else /run/moonwire/NAME.sock as root,\n"
    "else /tmp/moonwire-UID/NAME.sock. Only the runtime's user and root may attach.\n"
    "History: ~/.moonwire_history ($MOONWIRE_HISTORY). See docs/repl.md.\n";

enum { RES_OK, RES_ERROR, RES_MORE, RES_GONE };

typedef struct {
  int fd;
  mw_repl_buf_t in;
  char thing[160];
  mw_repl_buf_t pending_log; /* log lines that came during a completion */
  int gone;
} client_t;

/* ------------------------------------------------------------------------------ wire */

static int send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int send_frame(client_t *c, uint8_t type, const char *a, size_t alen, const char *b, size_t blen) {
  uint8_t hdr[MW_REPL_HEADER];
  mw_repl_frame_header(hdr, type, (uint32_t)(alen + blen));
  if (send_all(c->fd, hdr, sizeof hdr) || (alen && send_all(c->fd, a, alen)) || (blen && send_all(c->fd, b, blen))) {
    c->gone = 1;
    return -1;
  }
  return 0;
}

enum { READ_DATA = 1, READ_TIMEOUT = 0, READ_EOF = -1, READ_SIGINT = 2 };

/* Waits for data (timeout_ms -1: forever); with watch_sigint, Ctrl-C ends the wait. */
static int read_more(client_t *c, int timeout_ms, int watch_sigint) {
  for (;;) {
    struct pollfd p[2] = {{c->fd, POLLIN, 0}, {lb_term_sigint_fd(), POLLIN, 0}};
    int np = watch_sigint && p[1].fd >= 0 ? 2 : 1;
    int r = poll(p, (nfds_t)np, timeout_ms);
    if (r < 0 && errno == EINTR) {
      if (watch_sigint && lb_term_take_sigint()) return READ_SIGINT;
      continue;
    }
    if (r < 0) return READ_EOF;
    if (r == 0) return READ_TIMEOUT;
    if (np == 2 && p[1].revents && lb_term_take_sigint()) return READ_SIGINT;
    if (!p[0].revents) continue;
    if (mw_repl_buf_reserve(&c->in, 65536) != MW_OK) return READ_EOF;
    ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      c->gone = 1;
      return READ_EOF;
    }
    c->in.len += (size_t)n;
    return READ_DATA;
  }
}

/* 1: a frame (consume it with mw_repl_buf_consume(&c->in, *used)); 0: need more; -1: bad. */
static int next_frame(client_t *c, mw_repl_frame_t *f, size_t *used) {
  char err[200];
  mw_status_t st = mw_repl_frame_parse(c->in.data + c->in.off, c->in.len - c->in.off, 0, MW_REPL_MAX_PAYLOAD, f,
                                       used, err, sizeof err);
  if (st == MW_OK) return 1;
  if (st == MW_ERR_STATE) return 0;
  fprintf(stderr, "moonwire: %s\n", err);
  c->gone = 1;
  return -1;
}

static void print_text(FILE *out, const char *s, size_t n) {
  fwrite(s, 1, n, out);
  if (n && s[n - 1] != '\n') fputc('\n', out);
  fflush(out);
}

/*
** Reads frames until the answer to a request: R, X or M. Output and log lines are printed
** as they come. Ctrl-C sends an interrupt; the third one gives up on a runtime that does
** not answer.
*/
static int wait_answer(client_t *c, char **more_msg) {
  int interrupts = 0;
  for (;;) {
    mw_repl_frame_t f;
    size_t used;
    int k;
    while ((k = next_frame(c, &f, &used)) == 1) {
      int res = -1;
      switch (f.type) {
      case MW_REPL_OUTPUT:
        fwrite(f.data, 1, f.len, stdout);
        fflush(stdout);
        break;
      case MW_REPL_LOGLINE:
        fflush(stdout);
        fwrite(f.data, 1, f.len, stderr);
        fflush(stderr);
        break;
      case MW_REPL_RESULT:
        if (f.len) print_text(stdout, f.data, f.len);
        res = RES_OK;
        break;
      case MW_REPL_ERROR:
        fflush(stdout);
        print_text(stderr, f.data, f.len);
        res = RES_ERROR;
        break;
      case MW_REPL_MORE:
        if (more_msg) *more_msg = strndup(f.data, f.len);
        res = RES_MORE;
        break;
      case MW_REPL_DENIED:
        fprintf(stderr, "moonwire: %.*s\n", (int)f.len, f.data);
        res = RES_GONE;
        break;
      default: break;
      }
      mw_repl_buf_consume(&c->in, used);
      if (res >= 0) return res;
    }
    if (k < 0) return RES_GONE;
    int r = read_more(c, -1, 1);
    if (r == READ_SIGINT) {
      if (isatty(STDOUT_FILENO)) fputc('\n', stdout); /* after the terminal's "^C" */
      if (++interrupts >= 3) {
        fprintf(stderr, "moonwire: the runtime does not answer; leaving\n");
        return RES_GONE;
      }
      if (interrupts == 2) fprintf(stderr, "(interrupt sent again; a third Ctrl-C leaves the prompt)\n");
      if (send_frame(c, MW_REPL_INTERRUPT, NULL, 0, NULL, 0) != 0) r = READ_EOF;
    }
    if (r == READ_EOF) {
      fprintf(stderr, "moonwire: the runtime closed the connection\n");
      return RES_GONE;
    }
  }
}

/* ------------------------------------------------------------------------------ interactive */

static void flush_pending_log(client_t *c) {
  if (c->pending_log.len > c->pending_log.off)
    lb_term_print_async(stderr, c->pending_log.data + c->pending_log.off, c->pending_log.len - c->pending_log.off);
  mw_repl_buf_consume(&c->pending_log, c->pending_log.len - c->pending_log.off);
}

/* ".log on" / ".log off": changes this session, so the client sends it as its own request. */
static int log_command(const char *chunk, int *on) {
  const char *p = chunk;
  while (*p == ' ' || *p == '\t') p++;
  if (strncmp(p, ".log", 4) != 0 || (p[4] && p[4] != ' ' && p[4] != '\t')) return 0;
  p += 4;
  while (*p == ' ' || *p == '\t') p++;
  size_t n = strlen(p);
  while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
  if (n == 2 && strncmp(p, "on", 2) == 0) *on = 1;
  else if (n == 3 && strncmp(p, "off", 3) == 0) *on = 0;
  else *on = -1;
  return 1;
}

static int attach_eval(void *ud, const char *chunk, size_t len) {
  client_t *c = ud;
  int on;
  if (!memchr(chunk, '\n', len) && log_command(chunk, &on)) {
    if (on < 0) {
      fprintf(stderr, "usage: .log on | .log off\n");
      return LB_TERM_DONE;
    }
    if (send_frame(c, MW_REPL_LOG, on ? "1" : "0", 1, NULL, 0) != 0) return LB_TERM_QUIT;
    return wait_answer(c, NULL) == RES_GONE ? LB_TERM_QUIT : LB_TERM_DONE;
  }
  int w = lb_term_width();
  char flags[2] = {0, (char)(w > 255 ? 255 : w)};
  if (send_frame(c, MW_REPL_EVAL, flags, 2, chunk, len) != 0) {
    fprintf(stderr, "moonwire: the runtime closed the connection\n");
    return LB_TERM_QUIT;
  }
  int r = wait_answer(c, NULL);
  flush_pending_log(c);
  if (r == RES_MORE) return LB_TERM_MORE;
  return r == RES_GONE ? LB_TERM_QUIT : LB_TERM_DONE;
}

/* Asks the runtime; gives up after 3 s (it may be busy in a long handler). */
static char *attach_complete(void *ud, const char *word) {
  client_t *c = ud;
  if (send_frame(c, MW_REPL_COMPLETE, word, strlen(word), NULL, 0) != 0) return NULL;
  for (int waited = 0; waited < 30;) {
    mw_repl_frame_t f;
    size_t used;
    int k;
    while ((k = next_frame(c, &f, &used)) == 1) {
      char *out = NULL;
      if (f.type == MW_REPL_COMPLETIONS) out = strndup(f.data, f.len);
      else if (f.type == MW_REPL_LOGLINE || f.type == MW_REPL_OUTPUT) mw_repl_buf_append(&c->pending_log, f.data, f.len);
      int done = f.type == MW_REPL_COMPLETIONS;
      mw_repl_buf_consume(&c->in, used);
      if (done) return out;
    }
    if (k < 0) return NULL;
    int r = read_more(c, 100, 0);
    if (r == READ_EOF) return NULL;
    if (r == READ_TIMEOUT) waited++;
  }
  return NULL;
}

/* The socket is readable while the prompt waits: log lines (with .log on), or the end. */
static int attach_idle(void *ud) {
  client_t *c = ud;
  flush_pending_log(c);
  if (read_more(c, 0, 0) == READ_EOF) {
    static const char msg[] = "moonwire: the runtime closed the connection";
    lb_term_print_async(stderr, msg, sizeof msg - 1);
    return -1;
  }
  mw_repl_frame_t f;
  size_t used;
  int k;
  while ((k = next_frame(c, &f, &used)) == 1) {
    if (f.type == MW_REPL_LOGLINE) lb_term_print_async(stderr, f.data, f.len);
    else if (f.type == MW_REPL_OUTPUT) lb_term_print_async(stdout, f.data, f.len);
    mw_repl_buf_consume(&c->in, used);
  }
  return k < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------------ setup */

/* Without NAME: the one socket in the default directory. */
static int pick_socket(char *path, size_t len) {
  char dir[PATH_MAX], err[300];
  if (mw_repl_sock_dir(dir, sizeof dir, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);
  DIR *d = opendir(dir);
  if (!d) return mw_cli_fail("no running moonwire found (%s: %s); give a NAME or --socket PATH", dir, strerror(errno));
  char names[1024] = "", first[NAME_MAX + 1] = "";
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n <= 5 || strcmp(e->d_name + n - 5, ".sock") != 0) continue;
    if (count++ == 0) snprintf(first, sizeof first, "%.*s", (int)(n - 5), e->d_name);
    size_t used = strlen(names);
    snprintf(names + used, sizeof names - used, "%s%.*s", used ? ", " : "", (int)(n - 5), e->d_name);
  }
  closedir(d);
  if (count == 0) return mw_cli_fail("no running moonwire found in %s; give a NAME or --socket PATH", dir);
  if (count > 1) return mw_cli_fail("several runtimes are running (%s): say which, e.g. 'moonwire attach %s'", names, first);
  if (mw_repl_sock_path(first, path, len, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);
  return 0;
}

/* Waits for the runtime's hello (or its refusal). */
static int handshake(client_t *c, const char *path, int interactive) {
  for (int waited = 0; waited < 100;) {
    mw_repl_frame_t f;
    size_t used;
    int k = next_frame(c, &f, &used);
    if (k < 0) return MW_EXIT_FAILURE;
    if (k == 1) {
      if (f.type == MW_REPL_DENIED) return mw_cli_fail("%.*s", (int)f.len, f.data);
      if (f.type != MW_REPL_HELLO) return mw_cli_fail("%s: unexpected first frame from the runtime", path);
      char v[32];
      mw_repl_kv_get(f.data, f.len, "proto", v, sizeof v);
      if (atoi(v) != MW_REPL_PROTO_VERSION)
        return mw_cli_fail("the runtime speaks REPL protocol %s, this client %d: use the same moonwire version",
                           v[0] ? v : "?", MW_REPL_PROTO_VERSION);
      mw_repl_kv_get(f.data, f.len, "thing", c->thing, sizeof c->thing);
      if (interactive) {
        char ver[32], pid[32], app[PATH_MAX], sess[32];
        mw_repl_kv_get(f.data, f.len, "version", ver, sizeof ver);
        mw_repl_kv_get(f.data, f.len, "pid", pid, sizeof pid);
        mw_repl_kv_get(f.data, f.len, "app", app, sizeof app);
        mw_repl_kv_get(f.data, f.len, "session", sess, sizeof sess);
        printf("moonwire %s: attached to %s (pid %s, %s), session %s\n"
               ".help lists the commands; Ctrl-C interrupts, Ctrl-D leaves.\n",
               ver, c->thing[0] ? c->thing : "?", pid, app[0] ? app : "no app", sess);
      }
      mw_repl_buf_consume(&c->in, used);
      return 0;
    }
    int r = read_more(c, 100, 0);
    if (r == READ_EOF) return mw_cli_fail("%s: the runtime closed the connection at once", path);
    if (r == READ_TIMEOUT) waited++;
  }
  return mw_cli_fail("%s: the runtime did not answer within 10 s (busy in a long handler?)", path);
}

static int run_once(client_t *c, const char *chunk, size_t len) {
  int on;
  if (!memchr(chunk, '\n', len) && log_command(chunk, &on)) {
    fprintf(stderr, "moonwire: .log needs an interactive session\n");
    return MW_EXIT_FAILURE;
  }
  lb_term_signals(1); /* Ctrl-C interrupts the entry instead of killing the client */
  char flags[2] = {MW_REPL_EVAL_RAW, 0};
  char *more = NULL;
  int r = send_frame(c, MW_REPL_EVAL, flags, 2, chunk, len) == 0 ? wait_answer(c, &more) : RES_GONE;
  lb_term_signals(0);
  if (r == RES_MORE) fprintf(stderr, "moonwire: incomplete chunk: %s\n", more ? more : "");
  free(more);
  return r == RES_OK ? MW_EXIT_OK : MW_EXIT_FAILURE;
}

int mw_cmd_attach(int argc, char **argv) {
  const char *name = NULL, *sock = NULL, *code = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    if (!strcmp(a, "-s") || !strcmp(a, "--socket")) slot = &sock;
    else if (!strcmp(a, "-e") || !strcmp(a, "--eval")) slot = &code;
    else if (a[0] == '-' && a[1]) return mw_cli_usage_error("attach", "unknown option '%s'", a);
    else if (!name) name = a;
    else return mw_cli_usage_error("attach", "unexpected argument '%s'", a);
    if (slot) {
      if (i + 1 >= argc) return mw_cli_usage_error("attach", "%s needs a value", a);
      *slot = argv[++i];
    }
  }
  if (name && sock) return mw_cli_usage_error("attach", "give either NAME or --socket PATH, not both");
  char path[PATH_MAX], err[600];
  if (sock) {
    snprintf(path, sizeof path, "%s", sock);
  } else if (name) {
    if (mw_repl_sock_path(name, path, sizeof path, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);
  } else if (pick_socket(path, sizeof path) != 0) {
    return MW_EXIT_FAILURE;
  }

  /* Read a piped script before connecting: the runtime should not wait on our stdin. */
  int interactive = !code && isatty(STDIN_FILENO);
  char *input = NULL;
  size_t input_len = 0;
  if (!interactive && !code) {
    /* Up to what one frame can carry. */
    mw_repl_buf_t in = {0};
    mw_status_t st = mw_repl_buf_read_all(&in, STDIN_FILENO, MW_REPL_MAX_PAYLOAD - 2);
    if (st == MW_ERR_TOO_LARGE) return mw_cli_fail("the input is larger than %u bytes", MW_REPL_MAX_PAYLOAD - 2);
    if (st != MW_OK) return mw_cli_fail("cannot read stdin: %s", mw_status_str(st));
    input = in.data;
    input_len = in.len;
  }

  client_t c;
  memset(&c, 0, sizeof c);
  int fd;
  if (mw_repl_sock_connect(path, &fd, err, sizeof err) != MW_OK) {
    free(input);
    return mw_cli_fail("%s", err);
  }
  c.fd = fd;
  int rc = handshake(&c, path, interactive);
  if (rc == 0) {
    if (!interactive) {
      const char *chunk = code ? code : input;
      size_t len = code ? strlen(code) : input_len;
      rc = run_once(&c, chunk, len);
    } else {
      char p1[200], p2[200], history[PATH_MAX];
      snprintf(p1, sizeof p1, "%s> ", c.thing[0] ? c.thing : "moonwire");
      snprintf(p2, sizeof p2, "%s>> ", c.thing[0] ? c.thing : "moonwire");
      lb_term_history_path(history, sizeof history);
      lb_term_ops_t ops = {attach_eval, attach_complete, c.fd, NULL, attach_idle, &c};
      rc = lb_term_run(&ops, p1, p2, history) == 0 ? MW_EXIT_OK : MW_EXIT_FAILURE;
    }
  }
  close(c.fd);
  mw_repl_buf_free(&c.in);
  mw_repl_buf_free(&c.pending_log);
  free(input);
  return rc;
}
