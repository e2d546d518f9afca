/*
** Durable state of the local provisioning service, in SQLite (WAL): the certificates it
** issued or registered, the ownership tokens it handed out (only their SHA-256 is kept, so
** a copy of the database does not let anyone register a certificate), and the things.
*/
#ifndef MW_PROV_STORE_H
#define MW_PROV_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mw_prov_ca.h"
#include "mw_status.h"

typedef struct mw_prov_store mw_prov_store_t;

/* Opens or creates the database. MW_ERR_IO when it cannot (logged). */
mw_status_t mw_prov_store_open(const char *path, mw_prov_store_t **out);
void mw_prov_store_close(mw_prov_store_t *st);

mw_status_t mw_prov_store_begin(mw_prov_store_t *st);
mw_status_t mw_prov_store_commit(mw_prov_store_t *st);
void mw_prov_store_rollback(mw_prov_store_t *st);

/* Certificate states, AWS IoT's names. */
#define MW_PROV_PENDING "PENDING_ACTIVATION"
#define MW_PROV_ACTIVE "ACTIVE"
#define MW_PROV_INACTIVE "INACTIVE"

typedef struct {
  char id[MW_PROV_CERT_ID_LEN + 1];
  char cn[MW_PROV_CN_MAX + 1];
  char status[24];
  char thing[129];   /* "" while not registered */
  char source[8];    /* "csr", "keys" (CreateKeysAndCertificate) or "jitp" */
  int64_t created_at, registered_at;
} mw_prov_cert_row_t;

/* Records a newly issued certificate as PENDING_ACTIVATION. */
mw_status_t mw_prov_store_add_cert(mw_prov_store_t *st, const char *id, const char *cn, const char *pem,
                                   const char *source, int64_t now);
/* MW_ERR_NOT_FOUND when unknown. */
mw_status_t mw_prov_store_get_cert(mw_prov_store_t *st, const char *id, mw_prov_cert_row_t *row);
/* Whether any certificate of ours has this commonName. */
mw_status_t mw_prov_store_cn_used(mw_prov_store_t *st, const char *cn, bool *used);
/* Sets status, thing and registered_at. */
mw_status_t mw_prov_store_set_cert(mw_prov_store_t *st, const char *id, const char *status, const char *thing,
                                   int64_t now);

/* Ownership tokens, by SHA-256 hex of the token text. */
mw_status_t mw_prov_store_add_token(mw_prov_store_t *st, const char *hash, const char *cert_id, int64_t expires_at);
typedef struct {
  char cert_id[MW_PROV_CERT_ID_LEN + 1];
  int64_t expires_at, used_at; /* used_at 0: not used yet */
} mw_prov_token_row_t;
mw_status_t mw_prov_store_get_token(mw_prov_store_t *st, const char *hash, mw_prov_token_row_t *row);
mw_status_t mw_prov_store_use_token(mw_prov_store_t *st, const char *hash, int64_t now);

typedef struct {
  char name[129];
  cJSON *attributes;   /* object (owned) */
  cJSON *groups;       /* array (owned) */
  char thing_type[129];
  char billing_group[129];
  cJSON *policies;     /* array (owned) */
  char template_name[40];
  int64_t created_at, updated_at;
} mw_prov_thing_row_t;

void mw_prov_thing_row_free(mw_prov_thing_row_t *row);
/* MW_ERR_NOT_FOUND when there is no such thing. */
mw_status_t mw_prov_store_get_thing(mw_prov_store_t *st, const char *name, mw_prov_thing_row_t *row);
/* Inserts or replaces the thing (created_at is kept for an existing one). */
mw_status_t mw_prov_store_put_thing(mw_prov_store_t *st, const mw_prov_thing_row_t *row, int64_t now);

/*
** Forgets pending certificates and tokens older than before (epoch seconds): what AWS IoT
** deletes when an ownership token expires unused. Returns how many certificates went.
*/
mw_status_t mw_prov_store_prune(mw_prov_store_t *st, int64_t before, int *removed);

/* Visits every thing with its certificates (for `provisioning-service --list`). */
typedef void (*mw_prov_list_fn)(void *ud, const mw_prov_cert_row_t *cert);
mw_status_t mw_prov_store_list(mw_prov_store_t *st, mw_prov_list_fn fn, void *ud);

#endif
