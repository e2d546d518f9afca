/*
** Simulator, application layer ([SRM] Tables 14-34, reference §5-6): APDU decoding, the
** application-open state, the Last Error Code rules (flush on Cmd MSB, highest code
** wins, cleared on read), and the commands. Each handler returns a chip error code (0
** for success) and appends its OutData to the context.
**
** Where the reference leaves a code open, the choice is: malformed APDU or TLV
** structure 0x04, a value out of range or a missing/ill-typed tag 0x05, an unknown
** Param 0x03, a command the model does not implement 0x0A (listed in docs/trustm.md).
*/
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "mw_trustm_sim_int.h"

static const uint8_t aid[16] = {0xD2, 0x76, 0x00, 0x00, 0x04, 'G', 'e', 'n', 'A', 'u', 't', 'h', 'A', 'p', 'p', 'l'};

typedef struct {
  mw_trustm_sim_t *s;
  uint8_t param;
  const uint8_t *in;
  size_t in_len;
  uint8_t *out;
  size_t cap, len;
  uint64_t us;
} cx_t;

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static bool emit(cx_t *c, const uint8_t *p, size_t n) {
  if (n > c->cap - c->len) return false;
  memcpy(c->out + c->len, p, n);
  c->len += n;
  return true;
}

static bool emit_tlv(cx_t *c, uint8_t tag, const uint8_t *p, size_t n) {
  const uint8_t h[3] = {tag, (uint8_t)(n >> 8), (uint8_t)n};
  return emit(c, h, 3) && emit(c, p, n);
}

/* Checks the TLV list structure; 0 or 0x04. */
static uint8_t tlv_check(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n;) {
    if (n - i < 3) return 0x04;
    size_t l = (size_t)be16(p + i + 1);
    if (l > n - i - 3) return 0x04;
    i += 3 + l;
  }
  return 0;
}

static bool tlv_get(const uint8_t *p, size_t n, uint8_t tag, const uint8_t **v, size_t *vl) {
  for (size_t i = 0; i + 3 <= n;) {
    size_t l = (size_t)be16(p + i + 1);
    if (p[i] == tag) {
      *v = p + i + 3;
      *vl = l;
      return true;
    }
    i += 3 + l;
  }
  return false;
}

static bool tlv_oid(const uint8_t *p, size_t n, uint8_t tag, uint16_t *oid) {
  const uint8_t *v;
  size_t l;
  if (!tlv_get(p, n, tag, &v, &l) || l != 2) return false;
  *oid = be16(v);
  return true;
}

static uint64_t curve_factor(uint8_t alg) { return sim_curve_bytes(alg) > 48 ? 25 : sim_curve_bytes(alg) > 32 ? 16 : 10; }

void sim_app_reset(mw_trustm_sim_t *s) {
  s->app_open = false;
  s->lec = 0;
  s->nluc = 0;
  EVP_MD_CTX_free(s->hash);
  s->hash = NULL;
  if (s->objs) sim_obj_volatile_reset(s);
}

static void close_sessions(mw_trustm_sim_t *s) {
  for (uint16_t oid = 0xE100; oid <= 0xE103; oid++) {
    sim_obj_t *o = sim_obj_find(s, oid);
    o->priv_len = 0;
    o->used = 0;
    o->has_alg = o->has_usage = false;
  }
  EVP_MD_CTX_free(s->hash);
  s->hash = NULL;
}

/* ---- OpenApplication / CloseApplication ---- */

static uint8_t cmd_open(cx_t *c) {
  c->us = 2000;
  if (c->param == 0x01) return 0x0B; /* no hibernated context exists to restore */
  if (c->param != 0x00) return 0x03;
  if (c->in_len != sizeof aid) return 0x04;
  if (memcmp(c->in, aid, sizeof aid) != 0) return 0x05;
  sim_obj_t *lcsa = sim_obj_find(c->s, 0xF1C0);
  if (lcsa->data[0] == 0x0F) return 0x0C; /* application terminated */
  close_sessions(c->s);
  c->s->app_open = true;
  return 0;
}

static uint8_t cmd_close(cx_t *c) {
  c->us = 1000;
  if (c->in_len) return 0x04;
  if (c->param == 0x01) {
    sim_sec_update(c->s);
    return c->s->sec ? 0x0B : 0x03; /* hibernate: refused with SEC > 0; otherwise not modelled */
  }
  if (c->param != 0x00) return 0x03;
  close_sessions(c->s);
  c->s->app_open = false;
  return 0;
}

/* ---- GetDataObject / SetDataObject ---- */

static uint8_t cmd_get(cx_t *c) {
  mw_trustm_sim_t *s = c->s;
  c->us = 1500;
  if (c->param != 0x00 && c->param != 0x01) return 0x03;
  if (c->in_len != 2 && c->in_len != 6) return 0x04;
  sim_obj_t *o = sim_obj_find(s, be16(c->in));
  if (!o) return 0x01;
  if (c->param == 0x01) {
    uint8_t md[256];
    size_t n = sim_meta_encode(o, true, md, sizeof md);
    return emit(c, md, n) ? 0 : 0x0D;
  }
  size_t off = c->in_len == 6 ? be16(c->in + 2) : 0, want = c->in_len == 6 ? be16(c->in + 4) : 0xFFFF;
  if (o->kind != OBJ_DATA) return 0x07; /* keys and sessions are never readable */
  if (!sim_ac_check(s, o, AC_RD)) return 0x07;
  if (o->oid == 0xE0C5) sim_sec_update(s);
  if (o->oid == 0xF1C2) o->data[0] = s->lec;
  if (off >= o->used) return 0x08;
  size_t n = o->used - off < want ? o->used - off : want;
  if (n > SIM_DATA_MAX) return 0x0D;
  if (!emit(c, o->data + off, n)) return 0x0D;
  if (o->oid == 0xF1C2) s->lec = 0; /* reading the Last Error Code clears it */
  /* [SRM] Command Performance: GetDataObject of 256 bytes ~30 ms at 400 kHz, bus time included. */
  c->us += n * 85;
  return 0;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static uint8_t count(cx_t *c, sim_obj_t *o, const uint8_t *d, size_t dl) {
  if (dl != 1) return 0x04;
  if (d[0] == 0 || !o->has_type || o->type != 0x01 || o->max != 8) return 0x05;
  if (!sim_ac_check(c->s, o, AC_EXE)) return 0x07;
  uint32_t v = be32(o->data), t = be32(o->data + 4);
  if (v >= t) return 0x0E; /* stuck at the threshold */
  v = t - v < d[0] ? t : v + d[0];
  o->data[0] = (uint8_t)(v >> 24), o->data[1] = (uint8_t)(v >> 16), o->data[2] = (uint8_t)(v >> 8),
  o->data[3] = (uint8_t)v;
  c->s->dirty = true;
  return 0;
}

/* Register-like objects carry their own value rules. */
static uint8_t special_write(sim_obj_t *o, size_t off, const uint8_t *d, size_t dl, uint8_t *v) {
  if (!o->fixed || o->max != 1) return 0;
  if (off != 0 || dl != 1) return 0x08;
  switch (o->oid) {
  case 0xE0C0:
  case 0xF1C0: /* life cycles only rise */
    if ((d[0] != 0x01 && d[0] != 0x03 && d[0] != 0x07 && d[0] != 0x0F) || d[0] < o->data[0]) return 0x05;
    break;
  case 0xE0C1:
  case 0xF1C1: /* security status: a write can only clear bits */
    *v = o->data[0] & d[0];
    return 0;
  case 0xE0C3:
    if (d[0] < 20) return 0x05;
    break;
  case 0xE0C4:
    if (d[0] < 6 || d[0] > 15) return 0x05;
    break;
  }
  *v = d[0];
  return 0;
}

static uint8_t cmd_set(cx_t *c) {
  mw_trustm_sim_t *s = c->s;
  c->us = 8000; /* NVM programming */
  if (c->param != 0x00 && c->param != 0x40 && c->param != 0x01 && c->param != 0x02) return 0x03;
  if (c->in_len < 4) return 0x04;
  sim_obj_t *o = sim_obj_find(s, be16(c->in));
  if (!o) return 0x01;
  size_t off = be16(c->in + 2), dl = c->in_len - 4;
  const uint8_t *d = c->in + 4;
  if (c->param == 0x01) return off ? 0x05 : sim_meta_update(s, o, d, dl, true);
  if (o->kind != OBJ_DATA) return 0x07;
  if (c->param == 0x02) return count(c, o, d, dl);
  if (!sim_ac_check(s, o, AC_CHA)) return 0x07;
  if (dl == 0) return 0x04;
  if (off + dl > o->max) return 0x08;
  uint8_t v = 0;
  if (o->fixed && o->max == 1) {
    uint8_t e = special_write(o, off, d, dl, &v);
    if (e) return e;
    d = &v;
  }
  if (c->param == 0x40) {
    memset(o->data, 0, o->max);
    if (!o->fixed) o->used = (uint16_t)(off + dl);
  } else if (!o->fixed && off + dl > o->used) {
    o->used = (uint16_t)(off + dl);
  }
  memcpy(o->data + off, d, dl);
  if (!o->is_volatile) s->dirty = true;
  c->us += dl * 160; /* [SRM]: SetDataObject of 256 bytes ~55 ms, bus time included */
  return 0;
}

/* ---- GetRandom, CalcHash ---- */

static uint8_t cmd_random(cx_t *c) {
  c->us = 3000;
  if (c->param != 0x00 && c->param != 0x01) return 0x03;
  if (c->in_len != 2) return 0x04;
  size_t n = be16(c->in);
  if (n < 8 || n > 256) return 0x05;
  if (n > c->cap - c->len || RAND_bytes(c->out + c->len, (int)n) != 1) return 0x06;
  c->len += n;
  return 0;
}

static uint8_t cmd_hash(cx_t *c) {
  mw_trustm_sim_t *s = c->s;
  c->us = 1500;
  if (c->param != 0xE2) return 0x03;
  uint8_t e = tlv_check(c->in, c->in_len);
  if (e) return e;
  if (c->in_len < 3) return 0x05;
  const uint8_t *v;
  size_t vl;
  if (tlv_get(c->in, c->in_len, 0x06, &v, &vl) || tlv_get(c->in, c->in_len, 0x07, &v, &vl))
    return 0x05; /* exporting/importing the context is not modelled */
  uint8_t tag = c->in[0];
  v = c->in + 3;
  vl = be16(c->in + 1);
  uint8_t step = tag & 0x0F;
  if (tag == 0x04) { /* terminate */
    EVP_MD_CTX_free(s->hash);
    s->hash = NULL;
    return vl ? 0x04 : 0;
  }
  if ((tag & 0xF0) == 0x10) { /* hash of stored data: OID, offset, length */
    if (vl != 6) return 0x04;
    sim_obj_t *o = sim_obj_find(s, be16(v));
    if (!o) return 0x01;
    if (o->kind != OBJ_DATA || !sim_ac_check(s, o, AC_RD)) return 0x07;
    size_t off = be16(v + 2), len = be16(v + 4);
    if (off + len > o->used) return 0x08;
    v = o->data + off;
    vl = len;
  } else if ((tag & 0xF0) != 0x00) {
    return 0x05;
  }
  if (step != 0 && step != 1 && step != 2 && step != 3 && step != 5) return 0x05;
  if (step == 0 || step == 1) {
    EVP_MD_CTX_free(s->hash);
    s->hash = EVP_MD_CTX_new();
    if (!s->hash || !EVP_DigestInit_ex(s->hash, EVP_sha256(), NULL)) return 0x06;
  } else if (!s->hash) {
    return 0x0B; /* continue/final without start */
  }
  if (vl && !EVP_DigestUpdate(s->hash, v, vl)) return 0x06;
  if (step == 0 || step == 2) return 0;
  uint8_t dg[32];
  unsigned dl = 0;
  if (step == 5) {
    EVP_MD_CTX *copy = EVP_MD_CTX_new();
    bool ok = copy && EVP_MD_CTX_copy_ex(copy, s->hash) && EVP_DigestFinal_ex(copy, dg, &dl);
    EVP_MD_CTX_free(copy);
    if (!ok) return 0x06;
  } else {
    bool ok = EVP_DigestFinal_ex(s->hash, dg, &dl);
    EVP_MD_CTX_free(s->hash);
    s->hash = NULL;
    if (!ok) return 0x06;
  }
  return emit_tlv(c, 0x01, dg, dl) ? 0 : 0x0D;
}

/* ---- keys ---- */

/* A key or session object usable for the operation; EXE checked for stored keys. */
static uint8_t private_key(cx_t *c, uint16_t oid, uint8_t usage_any, sim_obj_t **out) {
  sim_obj_t *o = sim_obj_find(c->s, oid);
  if (!o) return 0x01;
  if (o->kind == OBJ_RSA || o->kind == OBJ_AES) return 0x24; /* not an ECC key */
  if (o->kind != OBJ_KEY && o->kind != OBJ_SESSION) return 0x05;
  if (o->kind == OBJ_KEY && !sim_ac_check(c->s, o, AC_EXE)) return 0x07;
  if (!o->priv_len || !o->has_alg) return 0x11; /* no key generated in this slot */
  if (!sim_curve_bytes(o->alg) || !o->has_usage || !(o->usage & usage_any)) return 0x24;
  *out = o;
  return 0;
}

static uint8_t cmd_sign(cx_t *c) {
  c->us = 1000;
  if (c->param != 0x11) return 0x03; /* RSA signatures are not modelled */
  uint8_t e = tlv_check(c->in, c->in_len);
  if (e) return e;
  const uint8_t *dg;
  size_t dl;
  uint16_t oid;
  if (!tlv_get(c->in, c->in_len, 0x01, &dg, &dl) || !tlv_oid(c->in, c->in_len, 0x03, &oid)) return 0x05;
  sim_obj_t *o;
  if ((e = private_key(c, oid, 0x01 | 0x10, &o)) != 0) return e;
  if (dl < 10 || dl > sim_curve_bytes(o->alg)) return 0x04;
  uint8_t sig[2 * 70];
  size_t n = sim_ec_sign(o->alg, o->priv, o->priv_len, dg, dl, sig, sizeof sig);
  if (!n) return 0x06;
  c->us = 6000 * curve_factor(o->alg) + sim_sec_event(c->s);
  return emit(c, sig, n) ? 0 : 0x0D;
}

static uint8_t cmd_verify(cx_t *c) {
  mw_trustm_sim_t *s = c->s;
  c->us = 1000;
  if (c->param != 0x11) return 0x03;
  uint8_t e = tlv_check(c->in, c->in_len);
  if (e) return e;
  const uint8_t *dg, *sig, *v;
  size_t dl, sl, vl;
  uint16_t oid;
  uint8_t alg = 0;
  EVP_PKEY *pub = NULL;
  if (!tlv_get(c->in, c->in_len, 0x01, &dg, &dl) || !tlv_get(c->in, c->in_len, 0x02, &sig, &sl)) return 0x05;
  if (tlv_oid(c->in, c->in_len, 0x04, &oid)) {
    sim_obj_t *o = sim_obj_find(s, oid);
    if (!o) return 0x01;
    if (o->kind != OBJ_DATA || !sim_ac_check(s, o, AC_EXE)) return 0x07;
    if (o->used == 0 || o->data[0] != 0x30) return 0x29;
    size_t len = o->data[1] < 0x80 ? 2u + o->data[1] : o->data[1] == 0x82 && o->used >= 4 ? 4u + be16(o->data + 2) : 0;
    if (!len || len > o->used || !(pub = sim_cert_pubkey(o->data, len, &alg))) return 0x29;
  } else if (tlv_get(c->in, c->in_len, 0x05, &v, &vl) && vl == 1) {
    alg = v[0];
    const uint8_t *pt;
    size_t pl;
    if (!sim_curve_bytes(alg)) return 0x05;
    if (!tlv_get(c->in, c->in_len, 0x06, &v, &vl) || !sim_bitstring_point(v, vl, &pt, &pl) ||
        !(pub = sim_ec_public(alg, pt, pl)))
      return 0x05;
  } else {
    return 0x05;
  }
  uint8_t code = 0;
  if (dl < 10 || dl > sim_curve_bytes(alg)) code = 0x04;
  else {
    int r = sim_ec_verify(pub, dg, dl, sig, sl);
    code = r < 0 ? 0x05 : r == 0 ? 0x2C : 0;
  }
  EVP_PKEY_free(pub);
  c->us = 8000 * curve_factor(alg);
  return code;
}

static uint8_t cmd_genkey(cx_t *c) {
  mw_trustm_sim_t *s = c->s;
  uint8_t alg = c->param;
  c->us = 1000;
  if (!sim_curve_bytes(alg)) return 0x03; /* RSA (41/42) is not modelled */
  uint8_t e = tlv_check(c->in, c->in_len);
  if (e) return e;
  uint8_t priv[66], plen, bs[160];
  const uint8_t *v;
  size_t vl;
  if (tlv_get(c->in, c->in_len, 0x07, &v, &vl)) { /* export: the pair leaves the chip */
    if (vl) return 0x04;
    if (!sim_ec_generate(alg, priv, &plen)) return 0x06;
    size_t bl = sim_ec_bitstring(alg, priv, plen, bs, sizeof bs);
    uint8_t oct[2 + 66] = {0x04, plen};
    memcpy(oct + 2, priv, plen);
    bool ok = bl && emit_tlv(c, 0x01, oct, 2u + plen) && emit_tlv(c, 0x02, bs, bl);
    OPENSSL_cleanse(priv, sizeof priv);
    OPENSSL_cleanse(oct, sizeof oct);
    c->us = 5500 * curve_factor(alg);
    return ok ? 0 : 0x06;
  }
  uint16_t oid;
  if (!tlv_oid(c->in, c->in_len, 0x01, &oid) || !tlv_get(c->in, c->in_len, 0x02, &v, &vl) || vl != 1) return 0x05;
  sim_obj_t *o = sim_obj_find(s, oid);
  if (!o) return 0x01;
  if (o->kind != OBJ_KEY && o->kind != OBJ_SESSION) return 0x05;
  if (o->kind == OBJ_KEY && !sim_ac_check(s, o, AC_CHA)) return 0x07;
  if (!sim_ec_generate(alg, priv, &plen)) return 0x06;
  size_t bl = sim_ec_bitstring(alg, priv, plen, bs, sizeof bs);
  if (!bl) return 0x06;
  memcpy(o->priv, priv, plen);
  o->priv_len = plen;
  OPENSSL_cleanse(priv, sizeof priv);
  o->has_alg = true, o->alg = alg;
  o->has_usage = true, o->usage = v[0];
  if (!o->is_volatile) s->dirty = true;
  c->us = 5500 * curve_factor(alg);
  return emit_tlv(c, 0x02, bs, bl) ? 0 : 0x0D;
}

static uint8_t cmd_ssec(cx_t *c) {
  mw_trustm_sim_t *s = c->s;
  c->us = 1000;
  if (c->param != 0x01) return 0x03;
  uint8_t e = tlv_check(c->in, c->in_len);
  if (e) return e;
  uint16_t oid, target = 0;
  const uint8_t *v, *pt;
  size_t vl, pl;
  bool exp = tlv_get(c->in, c->in_len, 0x07, &v, &vl);
  if (!tlv_oid(c->in, c->in_len, 0x01, &oid) || !tlv_get(c->in, c->in_len, 0x05, &v, &vl) || vl != 1) return 0x05;
  uint8_t alg = v[0];
  if (!exp && !tlv_oid(c->in, c->in_len, 0x08, &target)) return 0x05;
  sim_obj_t *o, *t = NULL;
  if ((e = private_key(c, oid, 0x20, &o)) != 0) return e;
  if (o->alg != alg) return 0x24;
  if (!tlv_get(c->in, c->in_len, 0x06, &v, &vl) || !sim_bitstring_point(v, vl, &pt, &pl)) return 0x05;
  if (!exp && (!(t = sim_obj_find(s, target)) || t->kind != OBJ_SESSION)) return 0x05;
  uint8_t secret[66];
  size_t n = sim_ecdh(alg, o->priv, o->priv_len, pt, pl, secret, sizeof secret);
  if (!n) return 0x05;
  c->us = 5500 * curve_factor(alg) + sim_sec_event(s);
  bool ok = true;
  if (exp) {
    ok = emit(c, secret, n);
  } else {
    memcpy(t->data, secret, n);
    t->used = (uint16_t)n;
    t->priv_len = 0;
  }
  OPENSSL_cleanse(secret, sizeof secret);
  return ok ? 0 : 0x0D;
}

size_t sim_app_execute(mw_trustm_sim_t *s, const uint8_t *apdu, size_t len, uint8_t *resp, size_t cap,
                       uint64_t *exec_us) {
  *exec_us = 0;
  if (cap < 4) return 0;
  cx_t c = {.s = s, .out = resp + 4, .cap = cap - 4 < SIM_DATA_MAX ? cap - 4 : SIM_DATA_MAX};
  uint8_t code;
  s->nluc = 0;
  if (len < 4) {
    code = 0x04;
  } else {
    uint8_t cmd = apdu[0];
    c.param = apdu[1];
    c.in = apdu + 4;
    c.in_len = len - 4;
    if (cmd & 0x80) s->lec = 0; /* flush before anything else is evaluated */
    bool lec_read = (cmd & 0x7F) == 0x01 && c.in_len >= 2 && be16(c.in) == 0xF1C2;
    if (be16(apdu + 2) != len - 4 || c.in_len > SIM_DATA_MAX) code = 0x04;
    else if (!s->app_open && (cmd & 0x7F) != 0x70 && !lec_read) code = 0x0C;
    else switch (cmd & 0x7F) {
      case 0x70: code = cmd_open(&c); break;
      case 0x71: code = cmd_close(&c); break;
      case 0x01: code = cmd_get(&c); break;
      case 0x02: code = cmd_set(&c); break;
      case 0x0C: code = cmd_random(&c); break;
      case 0x30: code = cmd_hash(&c); break;
      case 0x31: code = cmd_sign(&c); break;
      case 0x32: code = cmd_verify(&c); break;
      case 0x33: code = cmd_ssec(&c); break;
      case 0x38: code = cmd_genkey(&c); break;
      default: code = 0x0A; break; /* unknown, or not modelled (see docs/trustm.md) */
      }
  }
  *exec_us = c.us;
  if (code) {
    s->nluc = 0;
    if (code > s->lec) s->lec = code; /* the highest code wins */
    resp[0] = 0xFF, resp[1] = 0x00, resp[2] = 0x00, resp[3] = 0x00;
    return 4;
  }
  sim_luc_commit(s);
  resp[0] = 0x00, resp[1] = 0x00, resp[2] = (uint8_t)(c.len >> 8), resp[3] = (uint8_t)c.len;
  return 4 + c.len;
}
