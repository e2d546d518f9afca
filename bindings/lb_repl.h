/*
** The REPL's evaluator, shared by `moonwire repl` (in-process) and the socket server of
** `moonwire run` (for `moonwire attach`): compiles an entry like lua.c (an expression
** first, then a statement; an incomplete chunk asks for more), runs it through lb_pcall in
** the live app's environment with print() sent to the caller, stops it when
** rt->interrupt_poll says so, and formats the results with moonwire.inspect.
** The Lua half is scripts/moonwire/repl.lua.
*/
#ifndef MW_LB_REPL_H
#define MW_LB_REPL_H

#include <stddef.h>

#include "lb.h"

typedef struct lb_repl lb_repl_t;

/* Receives what print() writes during an evaluation (a whole line, with its newline). */
typedef void (*lb_repl_print_fn)(void *ud, const char *s, size_t n);

typedef enum {
  LB_REPL_OK,    /* text: the printed results, possibly empty */
  LB_REPL_ERROR, /* text: the error message (with the useful part of the traceback) */
  LB_REPL_MORE,  /* the chunk is incomplete; text: the syntax error, for non-interactive use */
} lb_repl_status_t;

#define LB_REPL_RAW 0x01 /* a top-level string result as is (for scripts), not quoted */

typedef struct {
  lb_repl_status_t status;
  char *text; /* malloc'd, NUL-terminated; free with free() */
  size_t len;
} lb_repl_result_t;

/* Loads moonwire.repl into rt->L; NULL with a reason in err on failure. */
lb_repl_t *lb_repl_new(mw_rt_t *rt, char *err, size_t errlen);
/* Releases the engine's registry references (before lua_close). NULL is fine. */
void lb_repl_free(lb_repl_t *r);

/* Where print() goes while an evaluation runs (NULL: the process's stdout). */
void lb_repl_set_print(lb_repl_t *r, lb_repl_print_fn fn, void *ud);
/* Makes the REPL's print the global one for good (the local prompt: handlers print above it). */
void lb_repl_install_print(lb_repl_t *r);
/* Sets moonwire.repl[name] (e.g. "attached": the prompt is inside `moonwire run`). */
void lb_repl_set_flag(lb_repl_t *r, const char *name, int value);
/* Shown by .stats. */
void lb_repl_set_sessions(lb_repl_t *r, int sessions);

/* Evaluates one entry (the whole chunk so far). width: the client's terminal width, 0 = 80. */
void lb_repl_eval(lb_repl_t *r, const char *code, size_t len, int flags, int width, lb_repl_result_t *res);
/* Completion candidates for word, '\n'-separated (malloc'd; "" when none, NULL on failure). */
char *lb_repl_complete(lb_repl_t *r, const char *word, size_t len);

#endif
