/*
** The wire protocol between `moonwire attach` and a running `moonwire run` (over a Unix
** stream socket). Every message is one frame: a type byte, a 32-bit big-endian payload
** length, then the payload. Both sides parse what the other sends with the same code, so
** a malformed or oversized frame is a protocol error, never a crash.
**
** client -> runtime                      runtime -> client
**   E  evaluate: flags byte + chunk        H  hello: "key=value\n" lines (proto, version, thing, pid, app)
**   C  complete: text before the cursor    O  output of print() during the evaluation
**   I  interrupt the running evaluation    G  a log line (while the evaluation runs, or with .log on)
**   L  follow the log: "1" or "0"          R  result: the printed values (may be empty)
**                                          X  error: message (and traceback)
**                                          M  more: the chunk is incomplete (payload: the syntax error)
**                                          P  completions: candidates separated by '\n'
**                                          D  denied: why; the runtime closes the connection
*/
#ifndef MW_REPL_PROTO_H
#define MW_REPL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"

#define MW_REPL_PROTO_VERSION 1
#define MW_REPL_HEADER 5
/* Largest payload either side accepts: a chunk, a result, a completion list. */
#define MW_REPL_MAX_PAYLOAD (4u << 20)

enum {
  MW_REPL_EVAL = 'E',
  MW_REPL_COMPLETE = 'C',
  MW_REPL_INTERRUPT = 'I',
  MW_REPL_LOG = 'L',
  MW_REPL_HELLO = 'H',
  MW_REPL_OUTPUT = 'O',
  MW_REPL_LOGLINE = 'G',
  MW_REPL_RESULT = 'R',
  MW_REPL_ERROR = 'X',
  MW_REPL_MORE = 'M',
  MW_REPL_COMPLETIONS = 'P',
  MW_REPL_DENIED = 'D',
};

/* Flags byte of an E frame. */
#define MW_REPL_EVAL_RAW 0x01 /* print a top-level string result as is (scripts), not quoted */

typedef struct {
  uint8_t type;
  uint32_t len;
  const char *data; /* points into the parsed buffer; not NUL-terminated */
} mw_repl_frame_t;

/* True for the frame types the client may send (client=1) or the runtime may send (client=0). */
int mw_repl_frame_type_ok(uint8_t type, int from_client);

/*
** Parses one frame at the start of buf. Returns MW_OK with *used set (the frame's total
** size), MW_ERR_STATE when more bytes are needed (*used = 0), or MW_ERR_PROTOCOL /
** MW_ERR_TOO_LARGE with a reason in err.
*/
mw_status_t mw_repl_frame_parse(const void *buf, size_t len, int from_client, size_t max_payload,
                                mw_repl_frame_t *f, size_t *used, char *err, size_t errlen);

/* Writes the 5-byte header of a frame. */
void mw_repl_frame_header(uint8_t hdr[MW_REPL_HEADER], uint8_t type, uint32_t len);

/*
** Value of key in a hello payload ("key=value" lines); copies at most outlen-1 bytes.
** Returns 1 when found, 0 otherwise (out is then "").
*/
int mw_repl_kv_get(const char *payload, size_t len, const char *key, char *out, size_t outlen);

/* A growable byte buffer with a consumed prefix (for reading frames off a socket). */
typedef struct {
  char *data;
  size_t len, cap, off; /* bytes [off, len) are unconsumed */
} mw_repl_buf_t;

mw_status_t mw_repl_buf_append(mw_repl_buf_t *b, const void *p, size_t n);
/* Reserves room for n more bytes at data+len. */
mw_status_t mw_repl_buf_reserve(mw_repl_buf_t *b, size_t n);
void mw_repl_buf_consume(mw_repl_buf_t *b, size_t n);
void mw_repl_buf_free(mw_repl_buf_t *b);
/*
** Reads fd to its end into the empty buffer b and NUL-terminates it (the NUL is not in
** b->len): a script piped into `moonwire attach` or `moonwire repl`. MW_ERR_TOO_LARGE
** once more than max bytes arrived, MW_ERR_IO on a read error, MW_ERR_NOMEM; b is freed
** on failure.
*/
mw_status_t mw_repl_buf_read_all(mw_repl_buf_t *b, int fd, size_t max);
/* Appends a complete frame. */
mw_status_t mw_repl_buf_frame(mw_repl_buf_t *b, uint8_t type, const void *p, size_t n);

#endif
