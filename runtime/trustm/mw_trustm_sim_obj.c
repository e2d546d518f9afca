/*
** Simulator, object model ([SRM] Tables 44-57, reference §7): the object map with its
** shipped defaults, metadata encoding and merge-on-write, access conditions with life
** cycles, linked usage counters, and the security monitor.
*/
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "mw_trustm_sim_int.h"

typedef struct {
  uint8_t len;
  uint8_t b[8];
} acdef_t;

#define ALW {1, {0x00}}
#define NEV {1, {0xFF}}
#define LT_OP {3, {0xE1, 0xFC, 0x07}}
#define PBS_CHA {7, {0xE1, 0xFC, 0x07, 0xFE, 0x20, 0xE1, 0x40}}
enum { F_FIXED = 1, F_VOLATILE = 2 };

typedef struct {
  uint16_t oid, count;
  uint8_t kind, flags, lcso, type; /* type 0xFF: no E8 tag */
  uint16_t max;
  acdef_t cha, rd, exe;
  uint8_t init_len;
  uint8_t init[8];
} def_t;

static const def_t defs[] = {
    {0xE0C0, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, 1, ALW, ALW, NEV, 1, {0x07}},
    {0xE0C1, 1, OBJ_DATA, F_FIXED | F_VOLATILE, 0x07, 0xFF, 1, ALW, ALW, NEV, 1, {0x20}},
    {0xE0C2, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, MW_TRUSTM_UID_LEN, NEV, ALW, NEV, 0, {0}},
    {0xE0C3, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, 1, ALW, ALW, NEV, 1, {0x14}},
    {0xE0C4, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, 1, ALW, ALW, NEV, 1, {0x06}},
    {0xE0C5, 1, OBJ_DATA, F_FIXED | F_VOLATILE, 0x07, 0xFF, 1, NEV, ALW, NEV, 1, {0x00}},
    {0xE0C6, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, 2, NEV, ALW, NEV, 2, {0x06, 0x15}},
    /* tmax 50 x 100 ms, RFU, SEC_CREDIT max 5, delayed sync 1 */
    {0xE0C9, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, 8, LT_OP, ALW, NEV, 8, {0x32, 0x00, 0x05, 0x01}},
    {0xE0E0, 1, OBJ_DATA, 0, 0x01, 0x12, 1728, NEV, ALW, ALW, 0, {0}},
    {0xE0E1, 3, OBJ_DATA, 0, 0x01, 0x12, 1728, LT_OP, ALW, ALW, 0, {0}},
    {0xE0E8, 2, OBJ_DATA, 0, 0x01, 0x11, 1200, LT_OP, ALW, ALW, 0, {0}},
    {0xE0EF, 1, OBJ_DATA, 0, 0x01, 0x11, 1200, LT_OP, ALW, ALW, 0, {0}},
    {0xE0F0, 1, OBJ_KEY, 0, 0x01, 0xFF, 0, NEV, NEV, ALW, 0, {0}},
    {0xE0F1, 3, OBJ_KEY, 0, 0x01, 0xFF, 0, LT_OP, NEV, ALW, 0, {0}},
    {0xE0FC, 2, OBJ_RSA, 0, 0x01, 0xFF, 0, LT_OP, NEV, ALW, 0, {0}},
    {0xE100, 4, OBJ_SESSION, F_VOLATILE, 0x07, 0xFF, 66, NEV, NEV, ALW, 0, {0}},
    {0xE120, 4, OBJ_DATA, F_FIXED, 0x03, 0x01, 8, LT_OP, ALW, ALW, 8, {0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF}},
    {0xE140, 1, OBJ_DATA, F_FIXED, 0x01, 0x22, 64, PBS_CHA, LT_OP, ALW, 0, {0}},
    {0xE200, 1, OBJ_AES, 0, 0x01, 0xFF, 0, NEV, NEV, ALW, 0, {0}},
    {0xF1C0, 1, OBJ_DATA, F_FIXED, 0x07, 0xFF, 1, ALW, ALW, NEV, 1, {0x01}},
    {0xF1C1, 1, OBJ_DATA, F_FIXED | F_VOLATILE, 0x07, 0xFF, 1, ALW, ALW, NEV, 1, {0x20}},
    {0xF1C2, 1, OBJ_DATA, F_FIXED | F_VOLATILE, 0x07, 0xFF, 1, NEV, ALW, NEV, 1, {0x00}},
    {0xF1D0, 12, OBJ_DATA, 0, 0x01, 0xFF, 140, ALW, ALW, ALW, 0, {0}},
    {0xF1E0, 2, OBJ_DATA, 0, 0x01, 0xFF, 1500, ALW, ALW, ALW, 0, {0}},
};

static void set_defaults(sim_obj_t *o, const def_t *d) {
  o->fixed = d->flags & F_FIXED;
  o->is_volatile = d->flags & F_VOLATILE;
  o->max = d->max;
  o->used = o->fixed ? d->max : 0;
  if (o->data) {
    memset(o->data, 0, o->max);
    memcpy(o->data, d->init, d->init_len);
  }
  o->has_lcso = true;
  o->lcso = d->lcso;
  o->has_version = o->has_alg = o->has_usage = o->has_reset = false;
  o->has_type = d->type != 0xFF;
  o->type = d->type;
  const acdef_t *acs[AC_N] = {&d->cha, &d->rd, &d->exe, NULL};
  for (int i = 0; i < AC_N; i++) {
    o->ac_len[i] = acs[i] ? acs[i]->len : 0;
    if (acs[i]) memcpy(o->ac[i], acs[i]->b, acs[i]->len);
  }
  o->priv_len = 0;
  memset(o->priv, 0, sizeof o->priv);
}

static const def_t *def_of(uint16_t oid) {
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
    if (oid >= defs[i].oid && oid < defs[i].oid + defs[i].count) return &defs[i];
  return NULL;
}

mw_status_t sim_obj_init(mw_trustm_sim_t *s) {
  size_t n = 0;
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) n += defs[i].count;
  s->objs = calloc(n, sizeof *s->objs);
  if (!s->objs) return MW_ERR_NOMEM;
  s->nobj = n;
  size_t k = 0;
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
    for (uint16_t j = 0; j < defs[i].count; j++, k++) {
      sim_obj_t *o = &s->objs[k];
      o->oid = (uint16_t)(defs[i].oid + j);
      o->kind = defs[i].kind;
      if (defs[i].max && !(o->data = calloc(1, defs[i].max))) return MW_ERR_NOMEM;
      set_defaults(o, &defs[i]);
    }
  }
  return MW_OK;
}

void sim_obj_free(mw_trustm_sim_t *s) {
  for (size_t i = 0; s->objs && i < s->nobj; i++) {
    OPENSSL_cleanse(s->objs[i].priv, sizeof s->objs[i].priv);
    free(s->objs[i].data);
  }
  free(s->objs);
  s->objs = NULL;
  s->nobj = 0;
}

sim_obj_t *sim_obj_find(mw_trustm_sim_t *s, uint16_t oid) {
  for (size_t i = 0; i < s->nobj; i++)
    if (s->objs[i].oid == oid) return &s->objs[i];
  return NULL;
}

void sim_obj_default(sim_obj_t *o) { set_defaults(o, def_of(o->oid)); }

void sim_obj_volatile_reset(mw_trustm_sim_t *s) {
  for (size_t i = 0; i < s->nobj; i++)
    if (s->objs[i].is_volatile) set_defaults(&s->objs[i], def_of(s->objs[i].oid));
}

uint8_t sim_obj_lcso(const sim_obj_t *o) { return o->has_lcso ? o->lcso : 0x07; }

/* ---- metadata ---- */

static void put(uint8_t *b, size_t *o, uint8_t tag, const uint8_t *v, size_t l) {
  b[(*o)++] = tag;
  b[(*o)++] = (uint8_t)l;
  memcpy(b + *o, v, l);
  *o += l;
}

static void put_size(uint8_t *b, size_t *o, uint8_t tag, uint16_t v) {
  const uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  if (v < 0x100) put(b, o, tag, x + 1, 1);
  else put(b, o, tag, x, 2);
}

size_t sim_meta_encode(const sim_obj_t *o, bool with_sizes, uint8_t *out, size_t cap) {
  static const uint8_t ac_tags[AC_N] = {0xD0, 0xD1, 0xD3, 0xD8};
  uint8_t b[2 + 4 * (2 + MW_TRUSTM_AC_MAX) + 40];
  size_t n = 2;
  if (o->has_lcso) put(b, &n, 0xC0, &o->lcso, 1);
  if (o->has_version) {
    const uint8_t v[2] = {(uint8_t)(o->version >> 8), (uint8_t)o->version};
    put(b, &n, 0xC1, v, 2);
  }
  if (with_sizes && (o->kind == OBJ_DATA)) {
    put_size(b, &n, 0xC4, o->max);
    put_size(b, &n, 0xC5, o->used);
  }
  for (int i = 0; i < AC_N; i++)
    if (o->ac_len[i]) put(b, &n, ac_tags[i], o->ac[i], o->ac_len[i]);
  if (o->has_alg) put(b, &n, 0xE0, &o->alg, 1);
  if (o->has_usage) put(b, &n, 0xE1, &o->usage, 1);
  if (o->has_type) put(b, &n, 0xE8, &o->type, 1);
  if (o->has_reset) put(b, &n, 0xF0, &o->reset_type, 1);
  b[0] = 0x20;
  b[1] = (uint8_t)(n - 2);
  if (n > cap) return 0;
  memcpy(out, b, n);
  return n;
}

/* Syntax of an access condition: up to 3 OR-ed groups of up to 7 AND-ed simple ACs. */
bool sim_ac_valid(const uint8_t *b, size_t n) {
  size_t i = 0, terms = 0, ands = 0, ors = 0;
  if (n == 0) return false;
  for (;;) {
    if (i >= n) return false;
    uint8_t c = b[i];
    size_t tl = (c == 0x00 || c == 0xFF) ? 1 : (c == 0x10 || c == 0x90) ? 2
               : (c == 0x20 || c == 0x21 || c == 0x23 || c == 0x40) ? 3
               : (c == 0x70 || c == 0xE0 || c == 0xE1) ? 3 : 0;
    if (!tl || i + tl > n) return false;
    if (tl == 3 && (c == 0x70 || c == 0xE0 || c == 0xE1) && (b[i + 1] < 0xFA || b[i + 1] > 0xFC)) return false;
    terms++;
    if (++ands > 7) return false;
    i += tl;
    if (i == n) break;
    if (b[i] == 0xFE) {
      if (++ors > 2) return false;
      ands = 0;
    } else if (b[i] != 0xFD) {
      return false;
    }
    i++;
  }
  if (terms > 1) /* ALW and NEV only stand alone */
    for (size_t j = 0; j < n;) {
      uint8_t c = b[j];
      if (c == 0x00 || c == 0xFF) return false;
      j += (c == 0x10 || c == 0x90) ? 2 : 3;
      if (j < n) j++;
    }
  return true;
}

static uint8_t obj_byte(mw_trustm_sim_t *s, uint16_t oid) {
  sim_obj_t *o = sim_obj_find(s, oid);
  return o && o->used ? o->data[0] : 0;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static bool simple_ac(mw_trustm_sim_t *s, const sim_obj_t *o, const uint8_t *t) {
  switch (t[0]) {
  case 0x00: return true;
  case 0xFF: return false;
  case 0x10: return (obj_byte(s, 0xE0C1) & t[1]) == t[1];
  case 0x90: return (obj_byte(s, 0xF1C1) & t[1]) == t[1];
  case 0x20: /* Conf: needs a protected (shielded) exchange, which is not modelled */
  case 0x21: /* Int: needs an integrity-protected update, not modelled */
  case 0x23: /* Auto: needs an authorization reference, not modelled */
    return false;
  case 0x40: {
    sim_obj_t *c = sim_obj_find(s, (uint16_t)(t[1] << 8 | t[2]));
    if (!c || c->kind != OBJ_DATA || c->max != 8) return false;
    if (be32(c->data) >= be32(c->data + 4)) return false;
    if (s->nluc < sizeof s->luc / sizeof s->luc[0]) s->luc[s->nluc++] = c->oid;
    return true;
  }
  case 0x70:
  case 0xE0:
  case 0xE1: {
    uint8_t cur = t[0] == 0x70 ? obj_byte(s, 0xE0C0) : t[0] == 0xE0 ? obj_byte(s, 0xF1C0) : sim_obj_lcso(o);
    return t[1] == 0xFA ? cur == t[2] : t[1] == 0xFB ? cur > t[2] : cur < t[2];
  }
  }
  return false;
}

bool sim_ac_check(mw_trustm_sim_t *s, const sim_obj_t *o, int which) {
  const uint8_t *b = o->ac[which];
  size_t n = o->ac_len[which];
  if (n == 0 || !sim_ac_valid(b, n)) return false; /* absent means NEV */
  bool any = false, all = true;
  for (size_t i = 0; i < n;) {
    uint8_t c = b[i];
    size_t tl = (c == 0x00 || c == 0xFF) ? 1 : (c == 0x10 || c == 0x90) ? 2 : 3;
    all = simple_ac(s, o, b + i) && all;
    i += tl;
    if (i < n) {
      if (b[i] == 0xFE) any = any || all, all = true;
      i++;
    }
  }
  return any || all;
}

/* Each linked usage counter met by a passing AC counts one use of the operation it guarded. */
void sim_luc_commit(mw_trustm_sim_t *s) {
  for (unsigned i = 0; i < s->nluc; i++) {
    sim_obj_t *c = sim_obj_find(s, s->luc[i]);
    uint32_t v = be32(c->data), t = be32(c->data + 4);
    if (v < t) v++;
    c->data[0] = (uint8_t)(v >> 24), c->data[1] = (uint8_t)(v >> 16), c->data[2] = (uint8_t)(v >> 8),
    c->data[3] = (uint8_t)v;
    s->dirty = true;
  }
  s->nluc = 0;
}

/*
** SetDataObject metadata: only the given tags change. With authorize (a host write) the
** object must still be below operational (or pass D8 when present), life cycles may only
** rise, and the sizes and the key algorithm are the chip's to set. Returns an error code.
*/
uint8_t sim_meta_update(mw_trustm_sim_t *s, sim_obj_t *o, const uint8_t *tlv, size_t len, bool authorize) {
  if (len < 2 || tlv[0] != 0x20 || (size_t)tlv[1] + 2 != len) return 0x05;
  if (authorize) {
    if (o->kind == OBJ_SESSION) return 0x07;
    bool ok = o->ac_len[AC_MUD] ? sim_ac_check(s, o, AC_MUD) : sim_obj_lcso(o) < 0x07;
    if (!ok) return 0x07;
  }
  sim_obj_t t = *o;
  static const uint8_t ac_tags[AC_N] = {0xD0, 0xD1, 0xD3, 0xD8};
  const uint8_t *p = tlv + 2;
  size_t n = tlv[1];
  for (size_t i = 0; i < n;) {
    if (n - i < 2 || (size_t)p[i + 1] > n - i - 2) return 0x05;
    uint8_t tag = p[i], l = p[i + 1];
    const uint8_t *v = p + i + 2;
    i += 2 + (size_t)l;
    int ac = -1;
    for (int k = 0; k < AC_N; k++)
      if (tag == ac_tags[k]) ac = k;
    if (ac >= 0) {
      if (l > MW_TRUSTM_AC_MAX || !sim_ac_valid(v, l)) return 0x05;
      t.ac_len[ac] = l;
      memcpy(t.ac[ac], v, l);
      continue;
    }
    switch (tag) {
    case 0xC0:
      if (l != 1 || (v[0] != 0x01 && v[0] != 0x03 && v[0] != 0x07 && v[0] != 0x0F)) return 0x05;
      if (authorize && v[0] < sim_obj_lcso(o)) return 0x05;
      t.has_lcso = true, t.lcso = v[0];
      break;
    case 0xC1:
      if (l != 2) return 0x05;
      t.has_version = true, t.version = (uint16_t)(v[0] << 8 | v[1]);
      break;
    case 0xC4:
    case 0xC5:
      if (authorize) return 0x05;
      break; /* sizes come from the object itself */
    case 0xE0:
      if (authorize || l != 1) return 0x05;
      t.has_alg = true, t.alg = v[0];
      break;
    case 0xE1:
      if (l != 1) return 0x05;
      t.has_usage = true, t.usage = v[0];
      break;
    case 0xE8:
      if (l != 1) return 0x05;
      t.has_type = true, t.type = v[0];
      break;
    case 0xF0:
      if (l != 1) return 0x05;
      t.has_reset = true, t.reset_type = v[0];
      break;
    default:
      return 0x05;
    }
  }
  uint8_t tmp[256];
  size_t enc = sim_meta_encode(&t, true, tmp, sizeof tmp);
  if (authorize && (enc == 0 || enc > SIM_META_MAX)) return 0x09;
  *o = t;
  if (!o->is_volatile) s->dirty = true;
  return 0;
}

/* ---- security monitor ([SRM] §Security Monitor, reference §7.3) ---- */

static uint64_t tmax_us(mw_trustm_sim_t *s) {
  if (s->cfg.sec_tmax_ms) return (uint64_t)s->cfg.sec_tmax_ms * 1000u;
  uint8_t v = obj_byte(s, 0xE0C9);
  return (uint64_t)(v ? v : 50) * 100000u;
}

static uint8_t credit_max(mw_trustm_sim_t *s) {
  sim_obj_t *o = sim_obj_find(s, 0xE0C9);
  return o ? o->data[2] : 5;
}

/* Each tmax without an event first lowers SEC, then refills the credit. */
void sim_sec_update(mw_trustm_sim_t *s) {
  uint64_t now = sim_wall(s), t = tmax_us(s);
  if (now < s->sec_stamp) s->sec_stamp = now;
  uint64_t periods = (now - s->sec_stamp) / t;
  if (periods) {
    uint8_t cmax = credit_max(s);
    for (uint64_t k = 0; k < periods && (s->sec > 0 || s->credit < cmax); k++) {
      if (s->sec > 0) s->sec--;
      else s->credit++;
    }
    s->sec_stamp += periods * t;
  }
  sim_obj_t *o = sim_obj_find(s, 0xE0C5);
  if (o) o->data[0] = s->sec;
}

/*
** A private-key use: taken from the credit, else SEC rises. From the throttle threshold
** up the operation is delayed, linearly up to tmax at SEC 255.
*/
uint64_t sim_sec_event(mw_trustm_sim_t *s) {
  sim_sec_update(s);
  if (s->credit > 0) s->credit--;
  else if (s->sec < 255) s->sec++;
  s->sec_stamp = sim_wall(s);
  s->dirty = true;
  sim_obj_t *o = sim_obj_find(s, 0xE0C5);
  if (o) o->data[0] = s->sec;
  unsigned thr = s->cfg.sec_throttle_from ? s->cfg.sec_throttle_from : 128;
  if (thr > 255) thr = 255;
  if (s->sec < thr) return 0;
  return tmax_us(s) * (uint64_t)(s->sec - thr + 1) / (256 - thr);
}

/* ---- a new chip ---- */

static mw_status_t make_identity(mw_trustm_sim_t *s) {
  sim_obj_t *uid = sim_obj_find(s, 0xE0C2), *key = sim_obj_find(s, 0xE0F0), *cert = sim_obj_find(s, 0xE0E0),
            *pbs = sim_obj_find(s, 0xE140);
  /* CIM id, platform, model, ROM mask, chip type; then random batch and wafer; firmware 80101071, build 0809 */
  static const uint8_t head[11] = {0xCD, 0x16, 0x33, 0x82, 0x01, 0x00, 0x1C, 0x00, 0x05, 0x00, 0x00};
  static const uint8_t fw[6] = {0x80, 0x10, 0x10, 0x71, 0x08, 0x09};
  memcpy(uid->data, head, sizeof head);
  if (RAND_bytes(uid->data + 11, 10) != 1 || RAND_bytes(pbs->data, 64) != 1) return MW_ERR_IO;
  memcpy(uid->data + 21, fw, sizeof fw);
  if (!sim_ec_generate(0x03, key->priv, &key->priv_len)) return MW_ERR_IO;
  size_t n = sim_factory_cert(uid->data, 0x03, key->priv, key->priv_len, cert->data, cert->max);
  if (!n) return MW_ERR_IO;
  cert->used = (uint16_t)n;
  return MW_OK;
}

/*
** Volatile chips are test fixtures, and making an identity (two key pairs and a
** certificate) dominates their start-up under valgrind, so all volatile chips of a
** process share one. A chip with a state file always gets its own.
*/
static struct {
  pthread_mutex_t lock;
  bool made;
  uint8_t uid[MW_TRUSTM_UID_LEN], pbs[64], key[66], key_len;
  uint8_t cert[1728];
  uint16_t cert_len;
} shared = {.lock = PTHREAD_MUTEX_INITIALIZER};

mw_status_t sim_factory(mw_trustm_sim_t *s) {
  sim_obj_t *uid = sim_obj_find(s, 0xE0C2), *key = sim_obj_find(s, 0xE0F0), *cert = sim_obj_find(s, 0xE0E0),
            *pbs = sim_obj_find(s, 0xE140);
  mw_status_t st = MW_OK;
  if (s->state_path) {
    st = make_identity(s);
  } else {
    pthread_mutex_lock(&shared.lock);
    if (!shared.made && (st = make_identity(s)) == MW_OK) {
      memcpy(shared.uid, uid->data, sizeof shared.uid);
      memcpy(shared.pbs, pbs->data, sizeof shared.pbs);
      memcpy(shared.key, key->priv, key->priv_len);
      shared.key_len = key->priv_len;
      memcpy(shared.cert, cert->data, cert->used);
      shared.cert_len = cert->used;
      shared.made = true;
    } else if (shared.made) {
      memcpy(uid->data, shared.uid, sizeof shared.uid);
      memcpy(pbs->data, shared.pbs, sizeof shared.pbs);
      memcpy(key->priv, shared.key, shared.key_len);
      key->priv_len = shared.key_len;
      memcpy(cert->data, shared.cert, shared.cert_len);
      cert->used = shared.cert_len;
    }
    pthread_mutex_unlock(&shared.lock);
  }
  if (st != MW_OK) return st;
  key->has_alg = true, key->alg = 0x03;
  key->has_usage = true, key->usage = 0x01; /* Auth, as the Infineon key */
  s->dirty = true;
  return MW_OK;
}
