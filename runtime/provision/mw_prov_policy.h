/*
** The broker's policy description (the JSON tools/mkbroker reads, docs/policies.md), as the
** provisioning service needs it: to turn a template's PolicyName into the dynamic-security
** ACLs of a newly registered thing, exactly as mkbroker expands them for a static one
** (same order, same priorities, ${thing} replaced by the thing name).
*/
#ifndef MW_PROV_POLICY_H
#define MW_PROV_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "mw_status.h"

/* Policy descriptions are hand-written files; this bounds what we parse. */
#define MW_PROV_POLICY_MAX (1024 * 1024)

typedef struct mw_prov_policies mw_prov_policies_t;

/* Parses and checks a description (the checks mkbroker makes). err names the offending entry. */
mw_status_t mw_prov_policies_parse(const char *json, size_t len, mw_prov_policies_t **out, char *err, size_t errlen);
mw_status_t mw_prov_policies_load(const char *path, mw_prov_policies_t **out, char *err, size_t errlen);
void mw_prov_policies_free(mw_prov_policies_t *p);

bool mw_prov_policies_has(const mw_prov_policies_t *p, const char *policy);

/*
** The dynsec "acls" array for a thing holding the named policies, or NULL with err set
** (unknown policy) or on memory failure. The caller owns the array.
*/
cJSON *mw_prov_policies_acls(const mw_prov_policies_t *p, char *const *policies, size_t n, const char *thing,
                             char *err, size_t errlen);

#endif
