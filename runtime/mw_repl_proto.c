#include "mw_repl_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mw_repl_frame_type_ok(uint8_t type, int from_client) {
  static const char client[] = "ECIL";
  static const char runtime[] = "HOGRXMPD";
  return type != 0 && strchr(from_client ? client : runtime, type) != NULL;
}

mw_status_t mw_repl_frame_parse(const void *buf, size_t len, int from_client, size_t max_payload,
                                mw_repl_frame_t *f, size_t *used, char *err, size_t errlen) {
  const uint8_t *p = buf;
  *used = 0;
  if (len < 1) return MW_ERR_STATE;
  if (!mw_repl_frame_type_ok(p[0], from_client)) {
    snprintf(err, errlen, "unknown frame type 0x%02x (not a moonwire REPL peer?)", p[0]);
    return MW_ERR_PROTOCOL;
  }
  if (len < MW_REPL_HEADER) return MW_ERR_STATE;
  uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
  if (n > max_payload) {
    snprintf(err, errlen, "frame of %u bytes is larger than the limit of %zu", n, max_payload);
    return MW_ERR_TOO_LARGE;
  }
  if (len - MW_REPL_HEADER < n) return MW_ERR_STATE;
  f->type = p[0];
  f->len = n;
  f->data = (const char *)p + MW_REPL_HEADER;
  *used = MW_REPL_HEADER + (size_t)n;
  return MW_OK;
}

void mw_repl_frame_header(uint8_t hdr[MW_REPL_HEADER], uint8_t type, uint32_t len) {
  hdr[0] = type;
  hdr[1] = (uint8_t)(len >> 24);
  hdr[2] = (uint8_t)(len >> 16);
  hdr[3] = (uint8_t)(len >> 8);
  hdr[4] = (uint8_t)len;
}

int mw_repl_kv_get(const char *payload, size_t len, const char *key, char *out, size_t outlen) {
  size_t klen = strlen(key);
  if (outlen) out[0] = '\0';
  size_t i = 0;
  while (i < len) {
    const char *line = payload + i;
    const char *nl = memchr(line, '\n', len - i);
    size_t llen = nl ? (size_t)(nl - line) : len - i;
    if (llen > klen && memcmp(line, key, klen) == 0 && line[klen] == '=') {
      size_t vlen = llen - klen - 1;
      if (outlen) {
        if (vlen >= outlen) vlen = outlen - 1;
        memcpy(out, line + klen + 1, vlen);
        out[vlen] = '\0';
      }
      return 1;
    }
    i += llen + 1;
  }
  return 0;
}

mw_status_t mw_repl_buf_reserve(mw_repl_buf_t *b, size_t n) {
  if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
  if (b->cap - b->len >= n) return MW_OK;
  /* Slide the unconsumed bytes to the front before growing. */
  if (b->off > 0) {
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->cap - b->len >= n) return MW_OK;
  }
  if (n > SIZE_MAX / 2 - b->len) return MW_ERR_NOMEM;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) return MW_ERR_NOMEM;
  b->data = d;
  b->cap = cap;
  return MW_OK;
}

mw_status_t mw_repl_buf_append(mw_repl_buf_t *b, const void *p, size_t n) {
  if (n == 0) return MW_OK;
  mw_status_t st = mw_repl_buf_reserve(b, n);
  if (st != MW_OK) return st;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return MW_OK;
}

void mw_repl_buf_consume(mw_repl_buf_t *b, size_t n) {
  b->off += n;
  if (b->off >= b->len) b->off = b->len = 0;
}

void mw_repl_buf_free(mw_repl_buf_t *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

mw_status_t mw_repl_buf_frame(mw_repl_buf_t *b, uint8_t type, const void *p, size_t n) {
  if (n > UINT32_MAX) return MW_ERR_TOO_LARGE;
  uint8_t hdr[MW_REPL_HEADER];
  mw_repl_frame_header(hdr, type, (uint32_t)n);
  mw_status_t st = mw_repl_buf_reserve(b, sizeof hdr + n);
  if (st != MW_OK) return st;
  mw_repl_buf_append(b, hdr, sizeof hdr);
  mw_repl_buf_append(b, p, n);
  return MW_OK;
}

mw_status_t mw_repl_buf_read_all(mw_repl_buf_t *b, int fd, size_t max) {
  mw_status_t st = MW_OK;
  for (;;) {
    if ((st = mw_repl_buf_reserve(b, 65536)) != MW_OK) break;
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) st = MW_ERR_IO;
    if (n <= 0) break;
    b->len += (size_t)n;
    if (b->len > max) {
      st = MW_ERR_TOO_LARGE;
      break;
    }
  }
  if (st == MW_OK) st = mw_repl_buf_reserve(b, 1);
  if (st != MW_OK) {
    mw_repl_buf_free(b);
    return st;
  }
  b->data[b->len] = 0;
  return MW_OK;
}
