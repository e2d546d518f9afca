/*
** SQLite persistence of shadow documents: one row per (thing, shadow name), in WAL mode.
** Used by the local shadow service (its database) and by the device side (its cache of
** the last known document, so an app starting offline sees its previous state).
**
** Schema (user_version 1):
**   CREATE TABLE shadow (
**     thing      TEXT NOT NULL,
**     shadow     TEXT NOT NULL,           -- '' for the classic shadow
**     version    INTEGER NOT NULL,        -- last accepted version (kept by a tombstone)
**     document   TEXT,                    -- mw_shadow_doc_serialize() form; NULL = deleted
**     updated_at INTEGER NOT NULL,        -- epoch s of the last accepted write
**     deleted_at INTEGER,                 -- epoch s of the delete; NULL while the shadow exists
**     PRIMARY KEY (thing, shadow)) WITHOUT ROWID;
** A deleted shadow is kept as a tombstone (document NULL) so that re-creating it within the
** re-create window continues its version numbering (aws-iot.md §1.7); mw_shadow_store_prune
** removes old tombstones.
**
** Not thread-safe: one store per thread (the runtime is single-threaded).
*/
#ifndef MW_SHADOW_STORE_H
#define MW_SHADOW_STORE_H

#include <stdint.h>

#include "mw_shadow_doc.h"
#include "mw_status.h"

typedef struct mw_shadow_store mw_shadow_store_t;

/*
** Opens (creating if needed) the database at path, switches it to WAL, synchronous=NORMAL
** (a committed write survives a crash of the process; set sync_full for power-loss
** durability at a cost in write rate), creates the schema.
** Returns MW_OK, MW_ERR_IO (cannot open/create, or a newer schema), MW_ERR_NOMEM.
*/
mw_status_t mw_shadow_store_open(const char *path, bool sync_full, mw_shadow_store_t **out);
void mw_shadow_store_close(mw_shadow_store_t *st); /* NULL is fine */

/*
** Loads the row of (thing, shadow) into doc (shadow "" or NULL = classic).
** MW_OK: doc filled (a tombstone gives exists == false with its version and deleted_at);
** MW_ERR_NOT_FOUND: no row, doc initialised (never existed); MW_ERR_IO: SQLite failure or an
** unreadable stored document.
*/
mw_status_t mw_shadow_store_load(mw_shadow_store_t *st, const char *thing, const char *shadow, mw_shadow_doc_t *doc);

/* Writes doc (a tombstone when !doc->exists). MW_OK, MW_ERR_IO, MW_ERR_NOMEM. */
mw_status_t mw_shadow_store_save(mw_shadow_store_t *st, const char *thing, const char *shadow,
                                 const mw_shadow_doc_t *doc);

/* Removes the row entirely (no tombstone). MW_OK even when there was none. */
mw_status_t mw_shadow_store_remove(mw_shadow_store_t *st, const char *thing, const char *shadow);

/* Transactions around load+save (BEGIN IMMEDIATE). MW_OK or MW_ERR_IO. */
mw_status_t mw_shadow_store_begin(mw_shadow_store_t *st);
mw_status_t mw_shadow_store_commit(mw_shadow_store_t *st);
void mw_shadow_store_rollback(mw_shadow_store_t *st);

/* Deletes tombstones whose deleted_at < before_s. *removed (may be NULL) gets the count. */
mw_status_t mw_shadow_store_prune(mw_shadow_store_t *st, int64_t before_s, int *removed);

/*
** Calls fn(ud, shadow_name) for every existing NAMED shadow of thing, in name order
** (the classic shadow and tombstones are skipped). Stops early when fn returns false.
*/
typedef bool (*mw_shadow_store_list_fn)(void *ud, const char *shadow);
mw_status_t mw_shadow_store_list(mw_shadow_store_t *st, const char *thing, mw_shadow_store_list_fn fn, void *ud);

#endif
