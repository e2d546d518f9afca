/*
** Shadow document core: AWS IoT Device Shadow rules in plain C (no Lua, no MQTT, no I/O).
** Used by the local shadow service (mw_shadow_service.h) and by the device side.
**
** Rules implemented (aws-iot.md §1; docs/shadow.md has the full list and the error table):
**  - update request validation with AWS's codes and message texts (400/409/413/415);
**  - merge: partial, recursive for objects, null deletes a key, arrays are whole values,
**    empty top-level sections removed, "desired": null drops the section, "state": null
**    clears the document (the shadow keeps existing);
**  - delta: desired keys whose value differs from reported, recursing into objects;
**  - metadata: a {"timestamp": s} per leaf and per array element, kept until written;
**  - versions: +1 per accepted update, a request "version" must match (409 otherwise);
**  - the payloads of /update/accepted, /update/delta, /update/documents, /get/accepted,
**    /delete/accepted and every /rejected, in AWS's shapes.
** Behaviours AWS has not confirmed (aws-iot.md §9) are switches in mw_shadow_options_t.
**
** JSON trees are cJSON (the runtime's JSON library); the cJSON pointers in
** mw_shadow_doc_t are owned by the document.
** Timestamps are epoch SECONDS (AWS shadow documents use seconds).
** Every char * this module returns is malloc'd and NUL-terminated: release it with free().
*/
#ifndef MW_SHADOW_DOC_H
#define MW_SHADOW_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "mw_status.h"

#define MW_SHADOW_CLIENT_TOKEN_MAX 64   /* bytes; 65+ -> 400 "Invalid clientToken" */
#define MW_SHADOW_STATE_MAX 8192        /* bytes of desired + reported; more -> 413 */
#define MW_SHADOW_PAYLOAD_MAX 131072    /* AWS IoT MQTT payload limit; more -> 413 */
#define MW_SHADOW_DEPTH_MAX 6           /* levels, desired/reported itself = 1 */
#define MW_SHADOW_RECREATE_WINDOW_S 172800 /* 48 h: a re-created shadow continues numbering */
#define MW_SHADOW_MESSAGE_MAX 256       /* error message buffer, incl. NUL */

/* §9.1: when is /update/delta published after an accepted update? */
typedef enum {
  MW_SHADOW_DELTA_ON_DESIRED = 0, /* default: the request had a "desired" object and the delta is non-empty */
  MW_SHADOW_DELTA_ALWAYS          /* whenever the delta after the update is non-empty (Greengrass) */
} mw_shadow_delta_rule_t;

/* §9.5: "previous" in /update/documents for the first update of a new (or deleted) shadow. */
typedef enum {
  MW_SHADOW_PREVIOUS_NULL = 0, /* default: "previous": null (Greengrass) */
  MW_SHADOW_PREVIOUS_OMIT,     /* no "previous" member */
  MW_SHADOW_PREVIOUS_EMPTY     /* {"state":{},"metadata":{},"version":<version before>} */
} mw_shadow_previous_rule_t;

/* §9.6: the version reported by /delete/accepted (and kept for a re-created shadow). */
typedef enum {
  MW_SHADOW_DELETE_VERSION_LAST = 0, /* default: the version of the deleted document */
  MW_SHADOW_DELETE_VERSION_NEXT      /* last + 1 (the delete counts as a write) */
} mw_shadow_delete_version_t;

/* §9.8: a request "version" on a shadow that does not exist (never created, or deleted). */
typedef enum {
  MW_SHADOW_CREATE_VERSION_MATCH = 0, /* default: must equal the stored version (0 for a never-created
                                       ** shadow, the kept version within the re-create window), else 409 */
  MW_SHADOW_CREATE_VERSION_ONE,       /* Greengrass: must be 1, else 400 "Invalid version" */
  MW_SHADOW_CREATE_VERSION_IGNORE     /* accept any version */
} mw_shadow_create_version_t;

/* §9.9: duplicate keys in one JSON object of a request. */
typedef enum {
  MW_SHADOW_DUPLICATE_LAST = 0, /* default: the last occurrence wins (Jackson, JavaScript) */
  MW_SHADOW_DUPLICATE_FIRST,    /* the first occurrence wins */
  MW_SHADOW_DUPLICATE_REJECT    /* 400 <invalid_json_message> */
} mw_shadow_duplicate_rule_t;

/*
** Options. Initialise with mw_shadow_options_init() (the defaults documented above and in
** docs/shadow.md), then change fields. String fields are borrowed for the options' lifetime.
*/
typedef struct {
  mw_shadow_delta_rule_t delta_rule;              /* §9.1 */
  bool accepted_echo_nulls;                       /* §9.2: /update/accepted echoes null values (default true, as moto) */
  int max_depth;                                  /* §9.3: default 6 */
  const char *invalid_json_message;               /* §9.4: default "Invalid JSON" */
  const char *array_null_message;                 /* §9.4: 400 text for arrays containing null; default "Invalid JSON" */
  mw_shadow_previous_rule_t documents_previous;   /* §9.5 */
  bool documents_on_state_null;                   /* §9.5: publish /update/documents for {"state": null} (default true) */
  mw_shadow_delete_version_t delete_version;      /* §9.6 */
  int64_t recreate_window_s;                      /* §9.6: default 48 h; 0 = a deleted shadow always restarts at 1 */
  bool get_metadata_delta;                        /* §9.7: /get/accepted carries metadata.delta (default false) */
  mw_shadow_create_version_t create_version;      /* §9.8 */
  mw_shadow_duplicate_rule_t duplicate_keys;      /* §9.9 */
  size_t max_state_bytes;                         /* default MW_SHADOW_STATE_MAX */
  size_t max_payload_bytes;                       /* default MW_SHADOW_PAYLOAD_MAX */
} mw_shadow_options_t;

void mw_shadow_options_init(mw_shadow_options_t *opt);

/*
** An error response (/rejected). message is the exact AWS text. The request's clientToken
** is copied here as soon as it has been validated, so every later error echoes it.
*/
typedef struct {
  int code;                                   /* 400, 404, 409, 413, 415, 500 */
  char message[MW_SHADOW_MESSAGE_MAX];
  bool has_client_token;
  char client_token[MW_SHADOW_CLIENT_TOKEN_MAX + 1];
} mw_shadow_error_t;

/* Sets code/message (printf-style); keeps the client token. */
void mw_shadow_error_set(mw_shadow_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
** A validated /update request. root owns the tree; the other pointers borrow from it.
** state == NULL means "state": null. desired/reported: NULL when absent, a cJSON_NULL
** item for "desired": null, otherwise an object.
*/
typedef struct {
  cJSON *root;
  const cJSON *state;
  const cJSON *desired;
  const cJSON *reported;
  bool has_version;
  int64_t version;
  const char *client_token; /* NULL when the request had none */
} mw_shadow_request_t;

/*
** The stored document of one shadow.
** exists == false with version > 0 is a deleted shadow (tombstone): it keeps its version
** and deleted_at so that re-creating it within recreate_window_s continues the numbering.
*/
typedef struct {
  cJSON *desired;        /* object or NULL (no desired section) */
  cJSON *reported;       /* object or NULL */
  cJSON *meta_desired;   /* mirrors desired; each leaf {"timestamp": s}; NULL when desired is */
  cJSON *meta_reported;
  int64_t version;       /* last accepted version; 0 = never written */
  int64_t timestamp;     /* epoch s of the last accepted write */
  int64_t deleted_at;    /* epoch s of the delete when !exists */
  bool exists;
} mw_shadow_doc_t;

/* The messages produced by an accepted update (NUL-terminated JSON, malloc'd: free()). */
typedef struct {
  char *accepted;  /* /update/accepted, always set */
  char *delta;     /* /update/delta, NULL when none is to be published */
  char *documents; /* /update/documents, NULL when none is to be published */
  int64_t version; /* the new version */
} mw_shadow_result_t;

/*
** Parses and validates an /update payload (need not be NUL-terminated). Checks, in order:
** size (413), UTF-8 (415), JSON syntax and a top-level object (400 invalid_json_message),
** duplicate keys (per option), clientToken (400 Invalid clientToken), state presence and type,
** desired/reported types and unknown nodes under state (document order), version
** (400 Invalid version), nesting depth, null inside arrays.
** Returns MW_OK and fills *req (free with mw_shadow_request_free), or MW_ERR_INVALID with
** *err filled (req needs no free then), or MW_ERR_NOMEM (err: 500).
** opt may be NULL for the defaults.
*/
mw_status_t mw_shadow_request_parse(const void *payload, size_t len, const mw_shadow_options_t *opt,
                                    mw_shadow_request_t *req, mw_shadow_error_t *err);
void mw_shadow_request_free(mw_shadow_request_t *req);

/*
** Extracts the clientToken of a /get or /delete payload. Those payloads may be empty and
** their other content is ignored; a clientToken is echoed only when the payload is a JSON
** object whose clientToken is a string of at most 64 bytes. Returns true if one was found.
*/
bool mw_shadow_client_token(const void *payload, size_t len, char out[MW_SHADOW_CLIENT_TOKEN_MAX + 1]);

void mw_shadow_doc_init(mw_shadow_doc_t *doc);
void mw_shadow_doc_free(mw_shadow_doc_t *doc);   /* frees the trees, re-initialises */
/* Deep copy; MW_ERR_NOMEM leaves dst initialised and empty. */
mw_status_t mw_shadow_doc_copy(mw_shadow_doc_t *dst, const mw_shadow_doc_t *src);

/*
** Applies a validated request to doc at time now_s: version check (409, or 400 per
** create_version), merge, metadata, size check (413), version + 1, and builds the response
** payloads in *res (free with mw_shadow_result_free).
** On any failure doc is unchanged and *err describes the /update/rejected answer
** (MW_ERR_CONFLICT for 409, MW_ERR_TOO_LARGE for 413, MW_ERR_INVALID for 400, MW_ERR_NOMEM).
*/
mw_status_t mw_shadow_doc_update(mw_shadow_doc_t *doc, const mw_shadow_request_t *req, int64_t now_s,
                                 const mw_shadow_options_t *opt, mw_shadow_result_t *res,
                                 mw_shadow_error_t *err);
void mw_shadow_result_free(mw_shadow_result_t *res);

/*
** Marks doc deleted at now_s (keeps the version, per delete_version). Returns
** MW_ERR_NOT_FOUND (err: 404 for name) when doc does not exist. *out_json receives the
** /delete/accepted payload (malloc'd). name is the shadow name, or the thing name for a
** classic shadow (it appears in the 404 message).
*/
mw_status_t mw_shadow_doc_delete(mw_shadow_doc_t *doc, const char *name, const char *client_token,
                                 int64_t now_s, const mw_shadow_options_t *opt, char **out_json,
                                 mw_shadow_error_t *err);

/*
** The /get/accepted payload of doc (malloc'd), or NULL with MW_ERR_NOT_FOUND and a 404 in
** *err when the shadow does not exist. client_token may be NULL.
*/
mw_status_t mw_shadow_doc_get(const mw_shadow_doc_t *doc, const char *name, const char *client_token,
                              int64_t now_s, const mw_shadow_options_t *opt, char **out_json,
                              mw_shadow_error_t *err);

/* Sets the 404 "No shadow exists with name: '<name>'" error. */
void mw_shadow_error_not_found(mw_shadow_error_t *err, const char *name);

/* The /rejected payload {"code","message","timestamp","clientToken"?} (malloc'd; NULL on OOM). */
char *mw_shadow_error_json(const mw_shadow_error_t *err, int64_t now_s);

/*
** Delta of desired against reported (either may be NULL): a new object holding, for every
** desired key, the desired value when reported lacks it or differs (type, scalar, array),
** and for two objects the recursive delta when non-empty. Returns NULL when there is no
** difference (or on OOM). Caller owns the result.
*/
cJSON *mw_shadow_delta(const cJSON *desired, const cJSON *reported);

/* Metadata of a delta: the desired metadata restricted to the delta's shape. Caller owns it. */
cJSON *mw_shadow_delta_metadata(const cJSON *delta, const cJSON *meta_desired);

/* Metadata for a freshly written value: leaves (and null) -> {"timestamp": ts}, arrays ->
** one entry per element, objects mirrored. Caller owns it. */
cJSON *mw_shadow_metadata_for(const cJSON *value, int64_t ts);

/* Deep equality as the delta uses it: numbers by value (1 == 1.0), objects order-insensitive,
** arrays element-wise in order. */
bool mw_shadow_json_equal(const cJSON *a, const cJSON *b);

/*
** Storage / cache form: {"state":{...},"metadata":{...},"version":N,"timestamp":T}
** (malloc'd). Deserialising also accepts a /get/accepted payload or the "current" member of
** /update/documents (state.delta and metadata.delta are ignored), which is how the device
** side seeds its cache. On failure doc is left initialised and empty (MW_ERR_INVALID/NOMEM).
** The result has exists = true.
*/
char *mw_shadow_doc_serialize(const mw_shadow_doc_t *doc);
mw_status_t mw_shadow_doc_deserialize(const void *json, size_t len, mw_shadow_doc_t *doc);

/*
** Device side, one parse per message: strict JSON, as mw_shadow_request_parse checks it (UTF-8,
** RFC 8259, duplicate keys: the last wins), so whatever the device keeps and caches reads back
** the same; the top level must be an object. Returns the tree (caller owns it: cJSON_Delete)
** with *st = MW_OK, or NULL with *st = MW_ERR_INVALID / MW_ERR_NOMEM.
*/
cJSON *mw_shadow_json_parse(const void *payload, size_t len, mw_status_t *st);

/*
** mw_shadow_doc_deserialize on a parsed tree: fills doc (initialised first) by detaching the
** desired/reported sections and their metadata from root, which the caller still owns and
** frees. MW_ERR_INVALID (doc empty) when root is not a document.
*/
mw_status_t mw_shadow_doc_take(cJSON *root, mw_shadow_doc_t *doc);

/* mw_shadow_doc_apply_accepted on a parsed tree (borrowed); same results. */
mw_status_t mw_shadow_doc_apply_accepted_tree(mw_shadow_doc_t *doc, const cJSON *root);

/*
** Device side: applies an /update/accepted payload received for this shadow to the cached
** doc (merge of its state, its metadata, its version). Returns MW_ERR_STATE without changing
** doc when the payload's version is not newer than doc->version (stale or duplicate), and
** MW_ERR_INVALID for a payload that is not an accepted document.
*/
mw_status_t mw_shadow_doc_apply_accepted(mw_shadow_doc_t *doc, const void *payload, size_t len);

/* Compact JSON of v (malloc'd, NUL-terminated; free with free()); integers print without
** exponent or fraction, other numbers with the shortest of %.15g/%.17g that reads back
** exactly. *out_len (may be NULL) gets the length. NULL on OOM or v == NULL. */
char *mw_shadow_json_print(const cJSON *v, size_t *out_len);

/* Serialised size of the state (desired + reported, compact JSON) as the 413 check counts it. */
size_t mw_shadow_doc_state_size(const mw_shadow_doc_t *doc);

#endif
