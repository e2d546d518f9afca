/*
** Private to the files that implement mw_shadow_doc.h (one job each; docs/shadow.md lists them):
** the exact AWS message texts and the helpers several of those files use. Nothing outside
** runtime/shadow/ includes it.
*/
#ifndef MW_SHADOW_DOC_INT_H
#define MW_SHADOW_DOC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "mw_shadow_doc.h"

/* Exact AWS texts (aws-iot.md §1.8). */
#define MSG_INVALID_JSON "Invalid JSON"
#define MSG_MISSING_STATE "Missing required node: state"
#define MSG_STATE_NOT_OBJECT "State node must be an object"
#define MSG_DESIRED_NOT_OBJECT "Desired node must be an object"
#define MSG_REPORTED_NOT_OBJECT "Reported node must be an object"
#define MSG_INVALID_VERSION "Invalid version"
#define MSG_INVALID_TOKEN "Invalid clientToken"
#define MSG_DEPTH "JSON contains too many levels of nesting; maximum is %d"
#define MSG_INVALID_NODE "State contains an invalid node: " /* + '<key>' */
#define MSG_NOT_FOUND "No shadow exists with name: "      /* + '<name>' */
#define MSG_CONFLICT "Version conflict"
#define MSG_TOO_LARGE "The payload exceeds the maximum size allowed"
#define MSG_ENCODING "Unsupported documented encoding; supported encoding is UTF-8"
#define MSG_INTERNAL "Internal service failure"

/* Largest integer a double holds exactly; versions above it are refused. */
#define VERSION_MAX 9007199254740992.0

/* mw_shadow_options.c: opt, or the defaults initialised in *tmp when opt is NULL. */
const mw_shadow_options_t *mw_shadow_opts_or_default(const mw_shadow_options_t *opt, mw_shadow_options_t *tmp);

/* mw_shadow_error.c */
void mw_shadow_copy_utf8_prefix(char *out, size_t max, const char *s);
void mw_shadow_error_with_name(mw_shadow_error_t *err, int code, const char *prefix, const char *name);
void mw_shadow_error_nomem(mw_shadow_error_t *err);

/* mw_shadow_json_out.c: building trees (each add frees v and returns false on failure) ... */
bool mw_shadow_add(cJSON *o, const char *k, cJSON *v);
bool mw_shadow_add_num(cJSON *o, const char *k, double v);
bool mw_shadow_add_token(cJSON *o, const char *token);

/* ... and printing them compactly, into a growing buffer or (buf NULL, cap 0) only counting. */
typedef struct {
  char *buf;  /* NULL: count only */
  size_t len, cap;
  bool oom;
} mw_shadow_sbuf_t;

void mw_shadow_sb_put(mw_shadow_sbuf_t *b, const char *s, size_t n);
void mw_shadow_sb_number(mw_shadow_sbuf_t *b, double d);
void mw_shadow_sb_string(mw_shadow_sbuf_t *b, const char *s);
void mw_shadow_sb_value(mw_shadow_sbuf_t *b, const cJSON *v);
size_t mw_shadow_json_len(const cJSON *v);
char *mw_shadow_print_free(cJSON *tree);

/* mw_shadow_json_strict.c: strict parse; the tree, or NULL with *code 400/415/500. */
cJSON *mw_shadow_parse_strict(const void *payload, size_t len, mw_shadow_duplicate_rule_t rule, int *code);

/* mw_shadow_request.c: a "version" value (non-negative integer up to VERSION_MAX). */
bool mw_shadow_version_value(const cJSON *v, int64_t *out);

/* mw_shadow_delta.c: delta into *out (NULL when empty); false on OOM. */
bool mw_shadow_delta_of(const cJSON *desired, const cJSON *reported, cJSON **out);

/* mw_shadow_merge.c: one request section (NULL: absent, null: drop, object: merge) into a document section. */
bool mw_shadow_merge_section(cJSON **sec, cJSON **meta, const cJSON *src, int64_t ts);

/* mw_shadow_payload.c: the payloads of an accepted update. */
char *mw_shadow_build_accepted(const mw_shadow_request_t *req, int64_t version, int64_t ts,
                               const mw_shadow_options_t *opt);
char *mw_shadow_build_delta(cJSON *delta, const cJSON *meta_desired, int64_t version, int64_t ts,
                            const char *token);
char *mw_shadow_build_documents(const mw_shadow_doc_t *prev, const mw_shadow_doc_t *cur, int64_t ts,
                                const char *token, const mw_shadow_options_t *opt);

/* mw_shadow_doc.c: {"desired":copy?, "reported":copy?} of two (possibly NULL) sections. */
cJSON *mw_shadow_sections(const cJSON *desired, const cJSON *reported);

#endif
