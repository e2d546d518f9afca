/*
** The terminal side of `moonwire repl` and `moonwire attach`: libedit line editing in its
** callback mode, so the prompt can wait on other things at the same time (the runtime's
** socket, or the local event loop); history per user; multi-line entries; tab completion;
** Ctrl-C (clears the line at the prompt, interrupts a running entry), Ctrl-D and .quit.
** What an entry means is the backend's business (lb_term_ops_t).
*/
#ifndef MW_LB_REPL_TERM_H
#define MW_LB_REPL_TERM_H

#include <stddef.h>
#include <stdio.h>

enum { LB_TERM_DONE, LB_TERM_MORE, LB_TERM_QUIT };

typedef struct {
  /* Evaluates the chunk entered so far and prints its output: LB_TERM_DONE, LB_TERM_MORE
     (incomplete: read another line) or LB_TERM_QUIT (leave, e.g. the runtime went away). */
  int (*eval)(void *ud, const char *chunk, size_t len);
  /* '\n'-separated candidates that start with word (malloc'd), or NULL. */
  char *(*complete)(void *ud, const char *word);
  /* While the prompt waits: fd to watch (or -1), a timeout in ms (or -1), and what to do
     when fd is readable or the timeout expired; idle returns -1 to leave the prompt. */
  int fd;
  int (*timeout_ms)(void *ud);
  int (*idle)(void *ud);
  void *ud;
} lb_term_ops_t;

/*
** Runs the prompt until Ctrl-D, .quit/.exit or a backend's LB_TERM_QUIT. history: file
** to load and save (NULL or "": none). Returns 0 when the user left, 1 when the backend did.
*/
int lb_term_run(const lb_term_ops_t *ops, const char *prompt, const char *prompt2, const char *history);

/* The history file: $MOONWIRE_HISTORY, else ~/.moonwire_history ("" when there is no home). */
void lb_term_history_path(char *out, size_t len);

/* Output that arrives while the prompt is shown (log lines, handler prints): printed above it. */
void lb_term_print_async(FILE *f, const char *s, size_t n);

/* SIGINT handling for backends that wait: the fd becomes readable on Ctrl-C. */
int lb_term_sigint_fd(void);
/* Consumes a pending Ctrl-C: 1 if there was one. */
int lb_term_take_sigint(void);
/* Installs the SIGINT handler without a prompt (non-interactive use); lb_term_run does it itself. */
void lb_term_signals(int on);

/* Terminal width of stdout, 0 when not a terminal. */
int lb_term_width(void);

#endif
