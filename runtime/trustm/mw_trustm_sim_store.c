/*
** Simulator, non-volatile state in a file, so that separate processes (CLI, runtime,
** tests) see the same chip. Every APDU runs under an exclusive flock() on "STATE.lock";
** the state is reloaded when the file changed since we last saw it and written back
** (temporary file + rename) when the command changed it. Format (docs/trustm.md):
**
**   MWTRUSTMSIM 1
**   addr 30
**   i2cmode 03
**   sec <SEC> <credit> <wall-clock us of the last decay step>
**   obj <OID> meta <hex TLV|-> data <hex of the used bytes|-> [key <hex private scalar>]
**
** One "obj" line per non-volatile object; objects not listed keep their defaults.
*/
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mw_log.h"
#include "mw_trustm_sim_int.h"

#define MAGIC "MWTRUSTMSIM 1"

static void put_hex(FILE *f, const uint8_t *p, size_t n) {
  if (!n) {
    fputc('-', f);
    return;
  }
  for (size_t i = 0; i < n; i++) fprintf(f, "%02X", p[i]);
}

static mw_status_t save(mw_trustm_sim_t *s) {
  size_t tl = strlen(s->state_path) + 32;
  char *tmp = malloc(tl);
  if (!tmp) return MW_ERR_NOMEM;
  snprintf(tmp, tl, "%s.tmp.%ld", s->state_path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* it holds private keys */
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    if (fd >= 0) close(fd);
    MW_LOGE("trustm-sim", "%s: %s", tmp, strerror(errno));
    free(tmp);
    return MW_ERR_IO;
  }
  fprintf(f, MAGIC "\n# Moonwire OPTIGA Trust M simulator state (docs/trustm.md). Do not edit while in use.\n");
  fprintf(f, "addr %02X\ni2cmode %02X\nsec %u %u %" PRIu64 "\n", s->addr_nv, s->i2c_mode_nv, s->sec, s->credit,
          s->sec_stamp);
  for (size_t i = 0; i < s->nobj; i++) {
    const sim_obj_t *o = &s->objs[i];
    if (o->is_volatile) continue;
    uint8_t md[256];
    size_t ml = sim_meta_encode(o, false, md, sizeof md);
    fprintf(f, "obj %04X meta ", o->oid);
    put_hex(f, md, ml);
    fprintf(f, " data ");
    put_hex(f, o->data, o->kind == OBJ_DATA ? o->used : 0);
    if (o->priv_len) {
      fprintf(f, " key ");
      put_hex(f, o->priv, o->priv_len);
    }
    fputc('\n', f);
  }
  bool ok = fflush(f) == 0 && !ferror(f);
  ok = fclose(f) == 0 && ok;
  if (ok && rename(tmp, s->state_path) != 0) ok = false;
  if (!ok) {
    MW_LOGE("trustm-sim", "cannot write %s: %s", s->state_path, strerror(errno));
    unlink(tmp);
  }
  free(tmp);
  struct stat st;
  if (ok && stat(s->state_path, &st) == 0) {
    s->st_dev = st.st_dev, s->st_ino = st.st_ino, s->st_mtim = st.st_mtim, s->st_size = st.st_size;
  }
  s->dirty = false;
  return ok ? MW_OK : MW_ERR_IO;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* "-" is empty; otherwise an even number of hex digits, at most cap bytes. */
static bool get_hex(const char *t, uint8_t *out, size_t cap, size_t *n) {
  *n = 0;
  if (strcmp(t, "-") == 0) return true;
  size_t l = strlen(t);
  if (l % 2 || l / 2 > cap) return false;
  for (size_t i = 0; i < l; i += 2) {
    int h = hexval(t[i]), lo = hexval(t[i + 1]);
    if (h < 0 || lo < 0) return false;
    out[i / 2] = (uint8_t)(h << 4 | lo);
  }
  *n = l / 2;
  return true;
}

static bool load_obj(mw_trustm_sim_t *s, char *line) {
  char *save_p, *tok[8];
  int nt = 0;
  for (char *t = strtok_r(line, " \t\r\n", &save_p); t && nt < 8; t = strtok_r(NULL, " \t\r\n", &save_p)) tok[nt++] = t;
  if (nt != 6 && nt != 8) return false;
  if (strcmp(tok[2], "meta") || strcmp(tok[4], "data") || (nt == 8 && strcmp(tok[6], "key"))) return false;
  char *end;
  unsigned long oid = strtoul(tok[1], &end, 16);
  sim_obj_t *o = *end ? NULL : sim_obj_find(s, (uint16_t)oid);
  if (!o || o->is_volatile) return false;
  uint8_t md[256], key[66];
  size_t ml, dl, kl = 0;
  sim_obj_default(o); /* the line describes the whole object */
  if (!get_hex(tok[3], md, sizeof md, &ml)) return false;
  if (ml && sim_meta_update(s, o, md, ml, false) != 0) return false;
  if (o->kind == OBJ_DATA) {
    if (!get_hex(tok[5], o->data, o->max, &dl)) return false;
    if (o->fixed ? dl != o->max : false) return false;
    if (!o->fixed) {
      memset(o->data + dl, 0, o->max - dl);
      o->used = (uint16_t)dl;
    }
  } else if (strcmp(tok[5], "-") != 0) {
    return false;
  }
  if (nt == 8) {
    if (!get_hex(tok[7], key, sizeof key, &kl) || !o->has_alg || kl != sim_curve_bytes(o->alg)) return false;
  }
  memcpy(o->priv, key, kl);
  o->priv_len = (uint8_t)kl;
  OPENSSL_cleanse(key, sizeof key);
  return true;
}

static mw_status_t load(mw_trustm_sim_t *s, FILE *f) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned lineno = 0;
  mw_status_t st = MW_OK;
  while ((n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    unsigned a, b, c2;
    uint64_t stamp;
    if (lineno == 1) {
      if (strncmp(line, MAGIC, strlen(MAGIC)) != 0) st = MW_ERR_PROTOCOL;
    } else if (line[0] == '#' || line[0] == '\n') {
      continue;
    } else if (sscanf(line, "addr %x", &a) == 1 && a >= 0x08 && a <= 0x77) {
      s->addr_nv = (uint8_t)a;
    } else if (sscanf(line, "i2cmode %x", &a) == 1 && a >= 1 && a <= 4) {
      s->i2c_mode_nv = (uint8_t)a;
    } else if (sscanf(line, "sec %u %u %" SCNu64, &b, &c2, &stamp) == 3 && b <= 255 && c2 <= 255) {
      s->sec = (uint8_t)b, s->credit = (uint8_t)c2, s->sec_stamp = stamp;
    } else if (strncmp(line, "obj ", 4) != 0 || !load_obj(s, line)) {
      st = MW_ERR_PROTOCOL;
    }
    if (st != MW_OK) {
      MW_LOGE("trustm-sim", "%s:%u: not a valid simulator state line", s->state_path, lineno);
      break;
    }
  }
  if (st == MW_OK && lineno == 0) st = MW_ERR_PROTOCOL;
  free(line);
  return st;
}

static mw_status_t reload(mw_trustm_sim_t *s) {
  FILE *f = fopen(s->state_path, "r");
  if (!f) return errno == ENOENT ? MW_ERR_NOT_FOUND : MW_ERR_IO;
  struct stat st;
  mw_status_t r = fstat(fileno(f), &st) == 0 ? load(s, f) : MW_ERR_IO;
  if (r == MW_OK) s->st_dev = st.st_dev, s->st_ino = st.st_ino, s->st_mtim = st.st_mtim, s->st_size = st.st_size;
  fclose(f);
  return r;
}

mw_status_t sim_store_open(mw_trustm_sim_t *s) {
  size_t l = strlen(s->state_path) + 6;
  if (!(s->lock_path = malloc(l))) return MW_ERR_NOMEM;
  snprintf(s->lock_path, l, "%s.lock", s->state_path);
  s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lock_fd < 0) {
    MW_LOGE("trustm-sim", "%s: %s", s->lock_path, strerror(errno));
    return MW_ERR_IO;
  }
  while (flock(s->lock_fd, LOCK_EX) < 0 && errno == EINTR) {}
  mw_status_t st = reload(s);
  if (st == MW_ERR_NOT_FOUND) { /* a new chip */
    st = sim_factory(s);
    if (st == MW_OK) st = save(s);
    if (st == MW_OK) MW_LOGI("trustm-sim", "created simulated chip in %s", s->state_path);
  } else if (st != MW_OK) {
    MW_LOGE("trustm-sim", "cannot load %s: %s", s->state_path, mw_status_str(st));
  }
  flock(s->lock_fd, LOCK_UN);
  return st;
}

void sim_store_close(mw_trustm_sim_t *s) {
  if (s->lock_fd >= 0) close(s->lock_fd);
  s->lock_fd = -1;
}

void sim_store_begin(mw_trustm_sim_t *s) {
  if (s->lock_fd < 0) return;
  while (flock(s->lock_fd, LOCK_EX) < 0 && errno == EINTR) {}
  struct stat st;
  if (stat(s->state_path, &st) == 0 &&
      (st.st_dev != s->st_dev || st.st_ino != s->st_ino || st.st_size != s->st_size ||
       st.st_mtim.tv_sec != s->st_mtim.tv_sec || st.st_mtim.tv_nsec != s->st_mtim.tv_nsec)) {
    if (reload(s) != MW_OK && !s->store_broken) {
      /* Somebody broke the file: keep working from memory, but never overwrite their file. */
      MW_LOGE("trustm-sim", "%s changed and no longer parses; no longer saving to it", s->state_path);
      s->store_broken = true;
    }
  }
}

void sim_store_end(mw_trustm_sim_t *s) {
  if (s->lock_fd < 0) {
    s->dirty = false;
    return;
  }
  if (s->dirty && !s->store_broken) (void)save(s);
  s->dirty = false;
  flock(s->lock_fd, LOCK_UN);
}
