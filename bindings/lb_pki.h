/*
** What moonwire.pki shares with the other bindings: the secure element it uses (opening it
** from the configuration on first use) and crash-safe file writes.
*/
#ifndef MW_LB_PKI_H
#define MW_LB_PKI_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#include "mw_keyref.h"
#include "mw_status.h"

struct mw_trustm;

/*
** The chip: the runtime's (rt->se), or one opened from the configuration's se section and
** kept until the state closes (it is then also the TLS layer's chip-key loader). NULL with
** err set when there is none. May raise on memory errors only.
*/
struct mw_trustm *lb_pki_chip(lua_State *L, char *err, size_t errlen);

/*
** Writes data to path through a temporary file in the same folder, fsync'd, then renamed
** (or, with exclusive, linked: an existing file is never replaced, MW_ERR_CONFLICT).
*/
mw_status_t lb_pki_write_file(const char *path, const void *data, size_t len, unsigned mode, bool exclusive,
                              char *err, size_t errlen);

/* A PKCS#11 key loader for the TLS layer where no session installed one; ud is the mw_rt_t. */
mw_status_t lb_pki_p11_loader(void *ud, const mw_keyref_t *ref, EVP_PKEY *pub, EVP_PKEY **out, char *err,
                              size_t errlen);

int luaopen_moonwire_pki(lua_State *L);

#endif
