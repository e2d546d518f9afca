/*
** Internals shared by the files of moonwire.json: lmod_json.c (the module functions),
** lb_json_box.c (box, json.null, marks), lb_json_walk.c (Lua value -> sink events),
** lb_json_text.c and lb_json_tree.c (the two sinks), lb_json_decode.c (cJSON tree ->
** Lua) and lb_json_diag.c (decode's own checks and error messages).
*/
#ifndef MW_LB_JSON_INT_H
#define MW_LB_JSON_INT_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include <lua.h>

#include "lmod_json.h"

#define MW_JSON_BOX_MT "moonwire.json.box"

/* Registry keys (their addresses): the array and object marks, json.null. */
extern const char mw_json_key_array_mt;
extern const char mw_json_key_object_mt;
extern const char mw_json_key_null;

/* Error kinds of the encoder's walker. */
enum { JK_OK = 0, JK_VALUE, JK_NOMEM };

/* Sink results. */
enum { SK_OK = 0, SK_NOMEM, SK_NUL };

/* Decoder results. */
enum { PK_OK = 0, PK_DEPTH, PK_RANGE, PK_CTRL };

/* Size of the error messages built in C before they are pushed or raised. */
#define ERRMSG_SIZE 320

static inline int mw_json_is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- lb_json_box.c ---- */

/* A userdata owning a cJSON tree and/or a malloc'd text buffer. */
typedef struct mw_json_box {
  cJSON *tree;   /* owned, may be NULL */
  char *buf;     /* owned, may be NULL */
  size_t len;    /* bytes used in 'buf' */
  size_t cap;    /* bytes allocated in 'buf' */
} mw_json_box_t;

/* Creates the box metatable, the marks and json.null if missing; may raise ENOMEM. */
void mw_json_ensure_meta(lua_State *L);
/* Pushes a new empty box; stack: +1 */
mw_json_box_t *mw_json_pushbox(lua_State *L);

/* ---- lb_json_walk.c ---- */

typedef struct mw_json_sink mw_json_sink_t;
struct mw_json_sink {
  int (*null_)(mw_json_sink_t *s);
  int (*boolean)(mw_json_sink_t *s, int b);
  int (*integer)(mw_json_sink_t *s, lua_Integer i);
  int (*number)(mw_json_sink_t *s, double d);             /* finite */
  int (*string)(mw_json_sink_t *s, const char *p, size_t n);
  int (*begin)(mw_json_sink_t *s, int is_object, size_t n);
  int (*item)(mw_json_sink_t *s, size_t i);               /* before element/member i (0-based) */
  int (*key)(mw_json_sink_t *s, const char *p, size_t n); /* p is NUL-terminated (a Lua string) */
  int (*end)(mw_json_sink_t *s, int is_object, size_t n);
};

/* Walks the value at 'idx' into 'sink'; never raises; JK_OK, or JK_* with err. */
int mw_json_walk(lua_State *L, int idx, mw_json_sink_t *sink, int limit, char *err, size_t errlen);

/* ---- lb_json_text.c ---- */

/*
** Walks the value at 'idx' as JSON text (indented when 'pretty') into the buffer of
** 'box', which owns it. Never raises; returns as mw_json_walk.
*/
int mw_json_encode_text(lua_State *L, int idx, mw_json_box_t *box, int pretty, int limit,
                        char *err, size_t errlen);

/* ---- lb_json_decode.c ---- */

/*
** Pushes the array metatable, json.null and the Lua value of 'tree', which cJSON parsed
** from src[0..len): integers beyond 2^53 and strings with \u0000 are read from the text.
** Returns PK_OK, or PK_DEPTH / PK_RANGE (*errpos: offset of the number) without the
** value. Raises only for misuse and memory errors: the caller owns the tree through a box.
*/
int mw_json_push_source(lua_State *L, const cJSON *tree, int limit, const char *src, size_t len,
                        size_t *errpos);

/* ---- lb_json_diag.c ---- */

/* First byte cJSON would accept but we refuse (*why: PK_DEPTH / PK_CTRL), or SIZE_MAX. */
size_t mw_json_prescan(const char *s, size_t n, int limit, int *why, size_t *open_str);
/* cJSON's error offset 'pos', corrected where cJSON 1.7.15 is known to be off. */
size_t mw_json_fix_error_pos(const char *s, size_t len, size_t pos, size_t open_str);
/* Pushes nil, "<what> at line L, column C near '<excerpt>' (<detail>)", "EJSON"; returns 3. */
int mw_json_decode_error(lua_State *L, const char *s, size_t len, size_t pos, const char *what,
                         const char *detail);

#endif
