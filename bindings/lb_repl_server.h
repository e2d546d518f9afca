/*
** The REPL server inside `moonwire run`: a Unix socket on the runtime's libuv loop that
** `moonwire attach` talks to (protocol: runtime/mw_repl_proto.h). Entries run in the
** loop between events, through the evaluator of lb_repl.h; Ctrl-C in the client reaches a
** running entry through rt->interrupt_poll, which peeks at that client's socket.
*/
#ifndef MW_LB_REPL_SERVER_H
#define MW_LB_REPL_SERVER_H

#include <stddef.h>

#include "lb.h"

typedef struct lb_repl_server lb_repl_server_t;

/*
** Starts listening as rt->cfg->repl says (default socket: mw_repl_sock_path(thing)).
** Returns 0 with *out set, or with *out NULL when the REPL is disabled or the default
** socket cannot be made (a warning is logged: the device runs on without a REPL).
** Returns -1 with a reason in err when another runtime already listens on the socket, or
** a socket set explicitly in the configuration cannot be used.
** app: the app's file, shown to clients.
*/
int lb_repl_server_open(mw_rt_t *rt, const char *app, lb_repl_server_t **out, char *err, size_t errlen);
/* Closes every session and the socket (removing the file); before lua_close. NULL is fine. */
void lb_repl_server_close(lb_repl_server_t *srv);

#endif
