#ifndef MW_LB_STATE_H
#define MW_LB_STATE_H

#include "lb.h"

/* Creates rt->L; app_dir (may be NULL) is put first on package.path. */
lua_State *lb_state_new(mw_rt_t *rt, const char *app_dir);
/* Loads and runs a script file in protected mode; 0 on success, else a reason in err. */
int lb_state_run_file(mw_rt_t *rt, const char *path, char *err, size_t errlen);
/* Releases subscriptions and listeners, then closes the state. */
void lb_state_close(mw_rt_t *rt);

#endif
