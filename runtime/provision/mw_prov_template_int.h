/*
** Internals of provisioning templates, shared by their files only:
**   mw_prov_template.c         parsing and checking a template
**   mw_prov_template_pattern.c AllowedPattern regexes (bounded, anchored)
**   mw_prov_template_eval.c    expressions and intrinsic functions
**   mw_prov_template_params.c  resolving a request's parameters and builtins
**   mw_prov_template_apply.c   applying a template to a request (the outcome)
*/
#ifndef MW_PROV_TEMPLATE_INT_H
#define MW_PROV_TEMPLATE_INT_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "mw_prov_template.h"

/* Intrinsics nest; real templates use two or three levels. */
#define MW_PROV_TPL_DEPTH_MAX 12

struct mw_prov_template {
  char name[MW_PROV_TEMPLATE_NAME_MAX + 1];
  cJSON *root;
  const cJSON *params, *mappings, *devcfg;
  const cJSON *thing, *cert; /* the resources' objects (Type, Properties, OverrideSettings) */
  const cJSON **policies;
  size_t npolicies;
};

/* ---- builtins (mw_prov_template_params.c) */
bool mw_prov_tpl_is_builtin(const char *name);

/* ---- AllowedPattern (mw_prov_template_pattern.c) */
#define MW_PROV_TPL_PATTERN_MAX_LEN 512
#define MW_PROV_TPL_PATTERN_MAX_COPIES 4096
#define MW_PROV_TPL_PATTERN_MAX_REPEATS 32
bool mw_prov_tpl_pattern_bounded(const char *pat);
/* Compiles "^(pat)$" (extended, no sub-matches): regcomp's result, or -1 when out of memory. */
int mw_prov_tpl_pattern_compile(regex_t *re, const char *pat);

/* ---- evaluation (mw_prov_template_eval.c) */
typedef struct {
  const mw_prov_template_t *t;
  cJSON *values; /* resolved parameters: name -> string */
  mw_prov_error_t *e;
} mw_prov_tpl_ev_t;

/* The intrinsic's name when x is {"Ref" or "Fn::...": argument}, else NULL. */
const char *mw_prov_tpl_intrinsic_name(const cJSON *x);
/* Values are cJSON strings or arrays of strings, owned by the caller. */
cJSON *mw_prov_tpl_eval(mw_prov_tpl_ev_t *v, const cJSON *x, int depth);
char *mw_prov_tpl_eval_str(mw_prov_tpl_ev_t *v, const cJSON *x, int depth);
/* Evaluates the object of expressions obj into a new object of strings. */
cJSON *mw_prov_tpl_eval_object(mw_prov_tpl_ev_t *v, const cJSON *obj);

/* ---- parameters (mw_prov_template_params.c) */
/* Resolves every declared parameter (request value, builtin or Default) and runs its checks. */
mw_status_t mw_prov_tpl_resolve_params(mw_prov_tpl_ev_t *v, const cJSON *req, const mw_prov_builtins_t *b);

#endif
