/*
** libedit's readline emulation in callback mode (see lb_repl_term.h). Signals: SIGINT and
** SIGWINCH only set a flag and write a byte to a pipe that the waiting poll() watches;
** everything else happens in the loop below.
*/
#include "lb_repl_term.h"

#include <editline/readline.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t got_sigint, got_winch;
static struct sigaction old_int, old_winch;
static int signals_on;

static const lb_term_ops_t *cur_ops;
static int prompt_active; /* a line is being edited: async output must redraw it */
static int have_line;
static char *line_read;
static char **cands; /* completion candidates of the current Tab */

static void on_signal(int sig) {
  int saved = errno;
  if (sig == SIGINT) got_sigint = 1;
  else got_winch = 1;
  if (sig_pipe[1] >= 0) {
    ssize_t w = write(sig_pipe[1], "s", 1);
    (void)w;
  }
  errno = saved;
}

void lb_term_signals(int on) {
  if (on == signals_on) return;
  if (on) {
    if (sig_pipe[0] < 0 && pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0) sig_pipe[0] = sig_pipe[1] = -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* no SA_RESTART: poll() must return EINTR */
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGWINCH, &sa, &old_winch);
  } else {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGWINCH, &old_winch, NULL);
  }
  signals_on = on;
}

int lb_term_sigint_fd(void) { return sig_pipe[0]; }

static void drain_pipe(void) {
  char buf[64];
  if (sig_pipe[0] < 0) return;
  while (read(sig_pipe[0], buf, sizeof buf) > 0) {
  }
}

int lb_term_take_sigint(void) {
  if (!got_sigint && !got_winch) return 0; /* cheap: the interrupt hook calls this often */
  drain_pipe();
  if (!got_sigint) return 0;
  got_sigint = 0;
  return 1;
}

int lb_term_width(void) {
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

void lb_term_history_path(char *out, size_t len) {
  const char *env = getenv("MOONWIRE_HISTORY");
  if (env) {
    snprintf(out, len, "%s", env);
    return;
  }
  const char *home = getenv("HOME");
  if (!home || !*home) {
    struct passwd *pw = getpwuid(geteuid());
    home = pw ? pw->pw_dir : NULL;
  }
  if (home && *home) snprintf(out, len, "%s/.moonwire_history", home);
  else if (len) out[0] = '\0';
}

void lb_term_print_async(FILE *f, const char *s, size_t n) {
  if (n == 0) return;
  if (prompt_active) {
    /* Erase the prompt line, print, then let libedit draw the prompt and the line again. */
    fputs("\r\033[K", stdout);
    fflush(stdout);
  }
  fwrite(s, 1, n, f);
  if (s[n - 1] != '\n') fputc('\n', f);
  fflush(f);
  if (prompt_active) rl_forced_update_display();
}

/* ------------------------------------------------------------------------------ completion */

static void free_cands(void) {
  if (!cands) return;
  for (char **p = cands; *p; p++) free(*p);
  free(cands);
  cands = NULL;
}

static char *cand_generator(const char *text, int state) {
  (void)text;
  static int i;
  if (state == 0) i = 0;
  if (!cands || !cands[i]) return NULL;
  return strdup(cands[i++]);
}

static char **complete_cb(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* never fall back to file names */
  free_cands();
  if (!cur_ops || !cur_ops->complete) return NULL;
  char *list = cur_ops->complete(cur_ops->ud, text);
  if (!list) return NULL;
  size_t n = 0;
  for (char *p = list; *p; p++) n += *p == '\n';
  cands = calloc(n + 2, sizeof *cands);
  if (cands) {
    size_t k = 0;
    for (char *save = NULL, *tok = strtok_r(list, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save))
      cands[k++] = strdup(tok);
  }
  free(list);
  if (!cands || !cands[0]) {
    free_cands();
    return NULL;
  }
  return rl_completion_matches(text, cand_generator);
}

/* ------------------------------------------------------------------------------ the loop */

static void on_line(char *line) {
  have_line = 1;
  line_read = line;
  rl_callback_handler_remove();
  prompt_active = 0;
}

static void start_prompt(const char *prompt) {
  have_line = 0;
  line_read = NULL;
  rl_callback_handler_install(prompt, on_line);
  prompt_active = 1;
}

static int is_blank(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t') return 0;
  return 1;
}

static int is_quit(const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  return (n == 5 && strncmp(s, ".quit", 5) == 0) || (n == 5 && strncmp(s, ".exit", 5) == 0);
}

static int stdin_has_input(void) {
  int n = 0;
  return ioctl(STDIN_FILENO, FIONREAD, &n) != 0 || n > 0; /* when unsure, let libedit read */
}

/* 1: a line (or EOF) is ready; 0: the prompt was reset by Ctrl-C; -1: leave (backend or stdin gone). */
static int wait_line(const lb_term_ops_t *ops) {
  while (!have_line) {
    struct pollfd p[3] = {{STDIN_FILENO, POLLIN, 0}, {sig_pipe[0], POLLIN, 0}, {ops->fd, POLLIN, 0}};
    int timeout = ops->timeout_ms ? ops->timeout_ms(ops->ud) : -1;
    int r = poll(p, ops->fd >= 0 ? 3 : 2, timeout);
    if (r < 0 && errno != EINTR) return -1;
    if (got_winch) {
      got_winch = 0;
      drain_pipe();
      rl_resize_terminal();
    }
    if (got_sigint) {
      lb_term_take_sigint();
      /* As shells do: abandon the line, show a fresh prompt. */
      rl_callback_handler_remove();
      prompt_active = 0;
      fputs("^C\n", stdout);
      fflush(stdout);
      return 0;
    }
    if (r <= 0) {
      if (r == 0 && ops->idle && ops->idle(ops->ud) < 0) return -1;
      continue;
    }
    if (p[1].revents) drain_pipe();
    if (ops->fd >= 0 && p[2].revents && ops->idle && ops->idle(ops->ud) < 0) return -1;
    /* Ctrl-C makes the terminal discard unread input (unless NOFLSH): if that happens between
       poll() and libedit's blocking read(), the read would wait for the next key. Check that
       the byte is still there just before handing over (narrows the window to microseconds). */
    if (p[0].revents & POLLIN) {
      if (stdin_has_input() || (p[0].revents & (POLLHUP | POLLERR))) rl_callback_read_char();
    } else if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) return -1;
  }
  return 1;
}

int lb_term_run(const lb_term_ops_t *ops, const char *prompt, const char *prompt2, const char *history) {
  setlocale(LC_CTYPE, ""); /* multibyte input (UTF-8) in libedit */
  lb_term_signals(1);
  cur_ops = ops;
  rl_readline_name = "moonwire";
  rl_catch_signals = 0;
  rl_attempted_completion_function = complete_cb;
  /* '.' and ':' are not breaks: "mqtt.sub" and "s:up" are completed as a whole. */
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
  rl_completion_append_character = '\0';
  using_history();
  stifle_history(1000);
  if (history && *history) read_history(history);

  char *chunk = NULL, *last_added = NULL;
  size_t chunk_len = 0;
  int rc = 0;
  for (;;) {
    start_prompt(chunk_len ? prompt2 : prompt);
    int w = wait_line(ops);
    if (w < 0) {
      rl_callback_handler_remove();
      prompt_active = 0;
      fputc('\n', stdout);
      rc = 1;
      break;
    }
    if (w == 0) {
      chunk_len = 0;
      continue;
    }
    char *line = line_read;
    line_read = NULL;
    if (!line) { /* Ctrl-D */
      fputc('\n', stdout);
      break;
    }
    if (chunk_len == 0 && (is_blank(line) || is_quit(line))) {
      int quit = is_quit(line);
      free(line);
      if (quit) break;
      continue;
    }
    size_t n = strlen(line);
    char *grown = realloc(chunk, chunk_len + n + 2);
    if (!grown) {
      free(line);
      rc = 1;
      break;
    }
    chunk = grown;
    memcpy(chunk + chunk_len, line, n + 1);
    chunk_len += n;
    free(line);
    int r = ops->eval(ops->ud, chunk, chunk_len);
    if (r == LB_TERM_MORE) {
      chunk[chunk_len++] = '\n';
      chunk[chunk_len] = '\0';
      continue;
    }
    /* A leading space keeps an entry out of the history (as in shells). */
    if (chunk[0] != ' ' && (!last_added || strcmp(last_added, chunk) != 0)) {
      add_history(chunk);
      free(last_added);
      last_added = strdup(chunk);
    }
    chunk_len = 0;
    if (r == LB_TERM_QUIT) {
      rc = 1;
      break;
    }
  }
  free(chunk);
  free(last_added);
  free_cands();
  fflush(stdout);
  if (history && *history) {
    /* The history may hold secrets typed at the prompt: owner-only. */
    mode_t old = umask(077);
    write_history(history);
    umask(old);
  }
  lb_term_signals(0);
  cur_ops = NULL;
  return rc;
}
