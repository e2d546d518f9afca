/*
** Local shadow service: the request logic of AWS IoT's Device Shadow service over a SQLite
** store, with no MQTT in it. The caller (moonwire shadow-service) subscribes to
** MW_SHADOW_FILTER_CLASSIC and MW_SHADOW_FILTER_NAMED (mw_shadow_topic.h), hands every
** message to mw_shadow_service_handle() and publishes what the emit callback receives
** (QoS of the caller's choice, never retained).
**
** Responses, in the order AWS sends them (aws-iot.md §1.10):
**   get    -> /get/accepted | /get/rejected
**   update -> /update/accepted, then /update/delta (if any), then /update/documents
**             | /update/rejected
**   delete -> /delete/accepted | /delete/rejected
** A response is emitted only after the change is committed to SQLite.
*/
#ifndef MW_SHADOW_SERVICE_H
#define MW_SHADOW_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "mw_shadow_doc.h"
#include "mw_shadow_store.h"
#include "mw_shadow_topic.h"
#include "mw_status.h"

typedef struct mw_shadow_service mw_shadow_service_t;

/*
** One response message. topic and payload are NUL-terminated and borrowed for the call
** only (copy them to keep them).
*/
typedef void (*mw_shadow_emit_fn)(void *ud, const char *topic, const char *payload, size_t len);

/*
** Opens the service over the database at db_path (created if missing; WAL). opt may be NULL
** for the defaults; it is copied (its string fields must outlive the service).
** sync_full: see mw_shadow_store_open.
** Returns MW_OK, MW_ERR_IO, MW_ERR_NOMEM.
*/
mw_status_t mw_shadow_service_open(const char *db_path, const mw_shadow_options_t *opt, bool sync_full,
                                   mw_shadow_service_t **out);
void mw_shadow_service_close(mw_shadow_service_t *svc); /* NULL is fine */

/*
** Handles one message received on topic (topic_len bytes, need not be NUL-terminated) with
** payload[0..len) at wall-clock time now_ms (epoch milliseconds; documents carry seconds).
** Calls emit for each response, in order, before returning.
** Returns:
**   MW_OK            the request was answered (accepted OR rejected, including 4xx);
**   MW_ERR_INVALID   not a shadow request topic (a response topic, unknown operation, bad
**                    thing or shadow name): nothing emitted, nothing changed;
**   MW_ERR_IO        SQLite failed: a 500 "Internal service failure" was emitted, nothing changed;
**   MW_ERR_NOMEM     out of memory: a 500 was emitted if possible.
*/
mw_status_t mw_shadow_service_handle(mw_shadow_service_t *svc, const char *topic, size_t topic_len,
                                     const void *payload, size_t len, int64_t now_ms,
                                     mw_shadow_emit_fn emit, void *ud);

/* Removes tombstones older than the re-create window (time is the caller's, like every
** other time here). Expired tombstones are already ignored when a shadow is re-created; this
** only reclaims their rows, so calling it now and then (e.g. hourly) is enough. */
mw_status_t mw_shadow_service_prune(mw_shadow_service_t *svc, int64_t now_ms);

/* The underlying store (borrowed), e.g. to list named shadows or inspect documents. */
mw_shadow_store_t *mw_shadow_service_store(mw_shadow_service_t *svc);
const mw_shadow_options_t *mw_shadow_service_options(const mw_shadow_service_t *svc);

#endif
