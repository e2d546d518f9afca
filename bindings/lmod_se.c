/*
** moonwire.se: the OPTIGA Trust M from Lua. Module-level functions use the runtime's chip
** (the configuration's se = {...}); se.open{sim=...} / se.open{device=..., address=...}
** returns a handle with the same functions as methods. Every call runs on the loop thread
** and blocks it for the chip's time (a signature is ~65 ms on a real chip).
**
** Arguments are checked first (misuse raises); then the chip is asked, and its refusals
** come back as nil, message, code, where code names the chip error
** ("ACCESS_CONDITION_NOT_SATISFIED") or is a status name ("ETIMEDOUT").
** Nothing C-owned is held while Lua can raise: results are built in bounded stack
** buffers, every C resource is released, and only then pushed.
*/
#include <ctype.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lb.h"
#include "mw_csr.h"
#include "mw_trustm.h"

#define LB_MT_SE "moonwire.se"
#define OBJ_MAX 4096 /* larger than any Trust M data object (1728 bytes) */

typedef struct {
  mw_trustm_t *dev; /* NULL once closed */
} lse_t;

/* ---- errors ---- */

/* "access condition not satisfied" -> "ACCESS_CONDITION_NOT_SATISFIED" */
static void chip_code(uint8_t code, char *out, size_t cap) {
  const char *name = mw_trustm_error_name(code);
  size_t o = 0;
  for (const char *p = name; *p && o + 1 < cap; p++)
    out[o++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
  out[o] = '\0';
}

static int fail_dev(lua_State *L, mw_trustm_t *dev, mw_status_t st) {
  const char *msg = mw_trustm_last_error(dev);
  if (st == MW_ERR_DEVICE && mw_trustm_last_chip_error(dev)) {
    char code[48];
    chip_code(mw_trustm_last_chip_error(dev), code, sizeof code);
    return lb_fail(L, msg, code);
  }
  return lb_fail_status(L, st, msg);
}

/* ---- which chip ---- */

/*
** The chip a call is for: a handle as first argument (method call), else the runtime's.
** *base is the index of the first real argument. Returns NULL after pushing nil, msg, code.
*/
static mw_trustm_t *which(lua_State *L, int *base) {
  lse_t *h = luaL_testudata(L, 1, LB_MT_SE);
  if (h) {
    *base = 2;
    if (!h->dev) luaL_error(L, "secure element handle is closed");
    return h->dev;
  }
  *base = 1;
  mw_rt_t *rt = lb_rt(L);
  return rt ? rt->se : NULL;
}

#define NO_CHIP_MSG "no secure element: configure se = { device = ... } or se = { sim = ... }, or use se.open{...}"

static uint16_t check_oid(lua_State *L, int i) {
  lua_Integer v;
  if (lua_type(L, i) == LUA_TSTRING) {
    const char *s = lua_tostring(L, i);
    char *end;
    unsigned long u = strtoul(s, &end, 16);
    luaL_argcheck(L, (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) && *end == '\0' && end > s + 2, i,
                  "object id must be an integer or a string like \"0xE0F1\"");
    v = (lua_Integer)u;
  } else {
    v = luaL_checkinteger(L, i);
  }
  luaL_argcheck(L, v >= 0 && v <= 0xFFFF, i, "object id must be 0x0000..0xFFFF");
  return (uint16_t)v;
}

/* Rejects option keys other than the allowed ones (a typo must not be silently ignored). */
static void check_opts(lua_State *L, int i, const char *const *allowed) {
  if (lua_isnoneornil(L, i)) return;
  luaL_checktype(L, i, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, i)) {
    bool ok = false;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (const char *const *a = allowed; *a; a++) ok |= !strcmp(*a, lua_tostring(L, -2));
    if (!ok) luaL_error(L, "invalid option '%s'", lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
    lua_pop(L, 1);
  }
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  if (lua_isnoneornil(L, t)) return NULL;
  lua_getfield(L, t, k);
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", k);
    s = lua_tostring(L, -1); /* stays alive: it is in the option table */
  }
  lua_pop(L, 1);
  return s;
}

static int opt_int(lua_State *L, int t, const char *k, lua_Integer dflt, lua_Integer min, lua_Integer max,
                   lua_Integer *out) {
  *out = dflt;
  if (lua_isnoneornil(L, t)) return 0;
  lua_getfield(L, t, k);
  int present = !lua_isnil(L, -1);
  if (present) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "option '%s' must be an integer", k);
    *out = lua_tointeger(L, -1);
    if (*out < min || *out > max) luaL_error(L, "option '%s' must be %I..%I", k, min, max);
  }
  lua_pop(L, 1);
  return present;
}

static bool opt_bool(lua_State *L, int t, const char *k, bool dflt) {
  if (lua_isnoneornil(L, t)) return dflt;
  lua_getfield(L, t, k);
  bool v = dflt;
  if (!lua_isnil(L, -1)) {
    if (!lua_isboolean(L, -1)) luaL_error(L, "option '%s' must be a boolean", k);
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* A list of usage names at the top of the stack -> bits. */
static uint8_t usage_bits(lua_State *L, const char *what) {
  if (!lua_istable(L, -1)) luaL_error(L, "%s must be a list like {\"sign\", \"auth\"}", what);
  uint8_t bits = 0;
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *u = lua_tostring(L, -1);
    uint8_t bit = u ? mw_trustm_usage_parse(u, strlen(u)) : 0;
    if (!bit) luaL_error(L, "%s: unknown usage '%s' (auth, enc, sign, keyagree)", what, u ? u : "?");
    bits |= bit;
    lua_pop(L, 1);
  }
  return bits;
}

static void push_usages(lua_State *L, uint8_t bits) {
  lua_newtable(L);
  int n = 0;
  for (unsigned k = 0; k < 8; k++) {
    const char *name = mw_trustm_usage_name((uint8_t)(bits & 1u << k));
    if (name) {
      lua_pushstring(L, name);
      lua_rawseti(L, -2, ++n);
    }
  }
}

static void tohex(const uint8_t *b, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) out[2 * i] = d[b[i] >> 4], out[2 * i + 1] = d[b[i] & 15];
  out[2 * n] = '\0';
}

/* The chip and the first argument's index; arguments are checked before NEED_CHIP. */
#define DEV(dev, base) \
  int base;            \
  mw_trustm_t *dev = which(L, &base)
#define NEED_CHIP(dev) \
  if (!dev) return lb_fail(L, NO_CHIP_MSG, "ENODEV")

/* ---- functions ---- */

static int lse_available(lua_State *L) {
  int base;
  lua_pushboolean(L, which(L, &base) != NULL);
  return 1;
}

static int lse_uid(lua_State *L) {
  DEV(dev, base);
  (void)base;
  uint8_t uid[MW_TRUSTM_UID_LEN];
  char hex[2 * MW_TRUSTM_UID_LEN + 1];
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_uid(dev, uid);
  if (st != MW_OK) return fail_dev(L, dev, st);
  tohex(uid, sizeof uid, hex);
  lua_pushstring(L, hex);
  return 1;
}

static int lse_info(lua_State *L) {
  DEV(dev, base);
  (void)base;
  mw_trustm_info_t in;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_info(dev, &in);
  if (st != MW_OK) return fail_dev(L, dev, st);
  char hex[2 * MW_TRUSTM_UID_LEN + 1], lcs[8], fw[16];
  tohex(in.uid, sizeof in.uid, hex);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, hex);
  lua_setfield(L, -2, "uid");
  snprintf(fw, sizeof fw, "0x%08X", (unsigned)in.firmware_id);
  lua_pushstring(L, fw);
  lua_setfield(L, -2, "firmware");
  snprintf(fw, sizeof fw, "%04X", in.esw_build);
  lua_pushstring(L, fw);
  lua_setfield(L, -2, "build");
  lua_pushinteger(L, in.frame_size);
  lua_setfield(L, -2, "frame_size");
  lua_pushinteger(L, in.frequency_khz);
  lua_setfield(L, -2, "frequency_khz");
  lua_pushstring(L, mw_trustm_lcs_name(in.lcsa, lcs));
  lua_setfield(L, -2, "lifecycle");
  lua_pushinteger(L, in.sec);
  lua_setfield(L, -2, "security_events");
  lua_pushboolean(L, mw_trustm_is_sim(dev));
  lua_setfield(L, -2, "simulator");
  return 1;
}

static int lse_random(lua_State *L) {
  DEV(dev, base);
  lua_Integer n = luaL_checkinteger(L, base);
  luaL_argcheck(L, n >= 1 && n <= 1024, base, "n must be 1..1024");
  uint8_t buf[1024];
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_random(dev, buf, (size_t)n);
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

static int push_spki_pem(lua_State *L, const uint8_t *spki, size_t len) {
  char pem[1024];
  if (mw_trustm_spki_to_pem(spki, len, pem, sizeof pem) != MW_OK) return lb_fail(L, "cannot encode the public key", "EPROTO");
  lua_pushstring(L, pem);
  return 1;
}

static int lse_gen_key(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  static const char *const allowed[] = {"curve", "usage", "store_pubkey", NULL};
  int o = base + 1;
  check_opts(L, o, allowed);
  const char *cname = opt_string(L, o, "curve");
  uint8_t curve = cname ? mw_trustm_curve_parse(cname) : MW_TRUSTM_NIST_P256;
  if (!curve) return luaL_error(L, "unknown curve '%s' (P-256, P-384, P-521, brainpoolP256r1, ...)", cname);
  uint8_t usage = MW_TRUSTM_USAGE_SIGN | MW_TRUSTM_USAGE_AUTH;
  if (!lua_isnoneornil(L, o)) {
    lua_getfield(L, o, "usage");
    if (!lua_isnil(L, -1)) usage = usage_bits(L, "usage");
    lua_pop(L, 1);
  }
  if (!usage) return luaL_error(L, "usage must name at least one of auth, enc, sign, keyagree");
  bool store = opt_bool(L, o, "store_pubkey", mw_trustm_pubkey_oid(oid) != 0);
  if (store && !mw_trustm_pubkey_oid(oid))
    return luaL_error(L, "0x%04X has no public-key storage object (store_pubkey = false)", oid);
  mw_trustm_pubkey_t pub;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_gen_key(dev, oid, (mw_trustm_curve_t)curve, usage, store ? MW_TRUSTM_GEN_STORE_PUBKEY : 0,
                                     &pub);
  if (st != MW_OK) return fail_dev(L, dev, st);
  return push_spki_pem(L, pub.spki, pub.spki_len);
}

static int lse_pubkey(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  mw_trustm_pubkey_t pub;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_pubkey_read(dev, oid, &pub);
  if (st != MW_OK) return fail_dev(L, dev, st);
  return push_spki_pem(L, pub.spki, pub.spki_len);
}

static int lse_sign(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  size_t dl;
  const char *digest = luaL_checklstring(L, base + 1, &dl);
  luaL_argcheck(L, dl >= 1 && dl <= 64, base + 1, "digest must be 1..64 bytes (a hash, not the message)");
  uint8_t der[MW_TRUSTM_SIG_DER_MAX];
  size_t n;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_sign(dev, oid, (const uint8_t *)digest, dl, der, sizeof der, &n);
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushlstring(L, (const char *)der, n);
  return 1;
}

/* PEM public key (or certificate) -> DER SPKI in buf; 0 on failure. */
static size_t pem_to_spki(const char *pem, size_t len, uint8_t *buf, size_t cap) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
  if (!k && b) {
    (void)BIO_reset(b);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (x) k = X509_get_pubkey(x);
    X509_free(x);
  }
  BIO_free(b);
  unsigned char *der = NULL;
  int n = k ? i2d_PUBKEY(k, &der) : -1;
  size_t out = 0;
  if (n > 0 && (size_t)n <= cap) {
    memcpy(buf, der, (size_t)n);
    out = (size_t)n;
  }
  OPENSSL_free(der);
  EVP_PKEY_free(k);
  return out;
}

static int lse_verify(lua_State *L) {
  DEV(dev, base);
  size_t dl, sl;
  bool by_slot = lua_type(L, base) == LUA_TNUMBER;
  uint16_t oid = 0;
  size_t pemlen = 0;
  const char *pem = NULL;
  if (by_slot || (lua_type(L, base) == LUA_TSTRING && !strncmp(lua_tostring(L, base), "0x", 2)))
    oid = check_oid(L, base), by_slot = true;
  else
    pem = luaL_checklstring(L, base, &pemlen);
  const char *digest = luaL_checklstring(L, base + 1, &dl);
  const char *sig = luaL_checklstring(L, base + 2, &sl);
  luaL_argcheck(L, dl >= 1 && dl <= 64, base + 1, "digest must be 1..64 bytes");
  bool valid = false;
  mw_status_t st;
  uint8_t spki[MW_TRUSTM_SPKI_MAX];
  size_t spl = 0;
  if (!by_slot && !(spl = pem_to_spki(pem, pemlen, spki, sizeof spki)))
    return luaL_argerror(L, base, "not a PEM public key or certificate with an EC key");
  NEED_CHIP(dev);
  if (!by_slot) {
    st = mw_trustm_verify(dev, spki, spl, (const uint8_t *)digest, dl, (const uint8_t *)sig, sl, &valid);
  } else if (oid >= 0xE0F0 && oid <= 0xE0F3) {
    mw_trustm_pubkey_t pub;
    st = mw_trustm_pubkey_read(dev, oid, &pub);
    if (st == MW_OK)
      st = mw_trustm_verify(dev, pub.spki, pub.spki_len, (const uint8_t *)digest, dl, (const uint8_t *)sig, sl, &valid);
  } else {
    st = mw_trustm_verify_cert(dev, oid, (const uint8_t *)digest, dl, (const uint8_t *)sig, sl, &valid);
  }
  if (st == MW_ERR_INVALID) return lb_fail(L, "malformed signature or public key", "EINVAL");
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushboolean(L, valid);
  return 1;
}

static int lse_read(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  lua_Integer off = luaL_optinteger(L, base + 1, 0);
  lua_Integer len = luaL_optinteger(L, base + 2, -1);
  luaL_argcheck(L, off >= 0 && off <= 0xFFFF, base + 1, "offset must be 0..65535");
  luaL_argcheck(L, len == -1 || (len >= 1 && len <= OBJ_MAX), base + 2, "length must be 1..4096");
  uint8_t buf[OBJ_MAX];
  size_t n;
  NEED_CHIP(dev);
  mw_status_t st =
      mw_trustm_read(dev, oid, (size_t)off, len < 0 ? MW_TRUSTM_READ_ALL : (size_t)len, buf, sizeof buf, &n);
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushlstring(L, (const char *)buf, n);
  return 1;
}

static int lse_write(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  size_t n;
  const char *data = luaL_checklstring(L, base + 1, &n);
  static const char *const allowed[] = {"erase", "offset", NULL};
  check_opts(L, base + 2, allowed);
  bool erase = opt_bool(L, base + 2, "erase", false);
  lua_Integer off;
  opt_int(L, base + 2, "offset", 0, 0, 0xFFFF, &off);
  luaL_argcheck(L, n <= OBJ_MAX && (size_t)off + n <= 0x10000, base + 1, "data too long");
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_write(dev, oid, (size_t)off, (const uint8_t *)data, n, erase);
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushboolean(L, 1);
  return 1;
}

static void set_ac(lua_State *L, const char *k, const mw_trustm_ac_t *ac) {
  char text[160];
  if (mw_trustm_ac_format(ac, text, sizeof text) != MW_OK) tohex(ac->bytes, ac->len, text);
  lua_pushstring(L, text);
  lua_setfield(L, -2, k);
}

static int lse_metadata(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  mw_trustm_metadata_t md;
  uint8_t raw[MW_TRUSTM_META_MAX];
  size_t rl;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_metadata_read(dev, oid, &md, raw, sizeof raw, &rl);
  if (st != MW_OK) return fail_dev(L, dev, st);
  char buf[2 * MW_TRUSTM_META_MAX + 1], lcs[8];
  lua_createtable(L, 0, 12);
  tohex(raw, rl, buf);
  lua_pushstring(L, buf);
  lua_setfield(L, -2, "raw");
  if (md.present & MW_TRUSTM_MD_LCSO) {
    lua_pushstring(L, mw_trustm_lcs_name(md.lcso, lcs));
    lua_setfield(L, -2, "lcso");
  }
  if (md.present & MW_TRUSTM_MD_VERSION) {
    lua_pushinteger(L, md.version);
    lua_setfield(L, -2, "version");
  }
  if (md.present & MW_TRUSTM_MD_MAX_SIZE) {
    lua_pushinteger(L, md.max_size);
    lua_setfield(L, -2, "max_size");
  }
  if (md.present & MW_TRUSTM_MD_USED_SIZE) {
    lua_pushinteger(L, md.used_size);
    lua_setfield(L, -2, "used_size");
  }
  unsigned bit;
  mw_trustm_ac_t *ac;
  const char *name;
  for (unsigned i = 0; (name = mw_trustm_metadata_ac(&md, i, &bit, &ac)); i++)
    if (md.present & bit) set_ac(L, name, ac);
  if (md.present & MW_TRUSTM_MD_ALGORITHM) {
    const char *c = mw_trustm_curve_name(md.algorithm);
    if (c) lua_pushstring(L, c);
    else lua_pushinteger(L, md.algorithm);
    lua_setfield(L, -2, "algorithm");
  }
  if (md.present & MW_TRUSTM_MD_KEY_USAGE) {
    push_usages(L, md.key_usage);
    lua_setfield(L, -2, "key_usage");
  }
  if (md.present & MW_TRUSTM_MD_TYPE) {
    const char *t = mw_trustm_type_name(md.type);
    if (t) lua_pushstring(L, t);
    else lua_pushinteger(L, md.type);
    lua_setfield(L, -2, "type");
  }
  if (md.present & MW_TRUSTM_MD_RESET_TYPE) {
    lua_pushinteger(L, md.reset_type);
    lua_setfield(L, -2, "reset_type");
  }
  return 1;
}

static uint8_t parse_lcs(lua_State *L) {
  if (lua_isinteger(L, -1)) {
    lua_Integer v = lua_tointeger(L, -1);
    if (v < 1 || v > 0xFF) luaL_error(L, "lcso must be 1..255");
    return (uint8_t)v;
  }
  uint8_t v = mw_trustm_lcs_parse(lua_tostring(L, -1));
  if (!v) luaL_error(L, "lcso must be creation, initialization, operational, termination (or cr/in/op/te)");
  return v;
}

static int lse_set_metadata(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  int t = base + 1;
  luaL_checktype(L, t, LUA_TTABLE);
  static const char *const allowed[] = {"lcso", "version", "change", "read", "execute", "meta_update",
                                        "key_usage", "type", "reset_type", "max_size", "used_size",
                                        "algorithm", "raw", NULL};
  check_opts(L, t, allowed);
  mw_trustm_metadata_t md;
  memset(&md, 0, sizeof md);
  unsigned bit;
  mw_trustm_ac_t *ac;
  const char *name;
  for (unsigned i = 0; (name = mw_trustm_metadata_ac(&md, i, &bit, &ac)); i++) {
    const char *s = opt_string(L, t, name);
    if (!s) continue;
    if (mw_trustm_ac_parse(s, ac) != MW_OK)
      return luaL_error(L, "%s: '%s' is not an access condition (e.g. \"ALW\", \"NEV\", \"LcsO<op\")", name, s);
    md.present |= bit;
  }
  /* max_size, used_size, algorithm and raw belong to the chip: accepted (so a table from
     metadata() can be edited and written back) and left out of the write. */
  lua_getfield(L, t, "lcso");
  if (!lua_isnil(L, -1)) md.lcso = parse_lcs(L), md.present |= MW_TRUSTM_MD_LCSO;
  lua_pop(L, 1);
  lua_Integer v;
  if (opt_int(L, t, "version", 0, 0, 0x7FFF, &v)) md.version = (uint16_t)v, md.present |= MW_TRUSTM_MD_VERSION;
  if (opt_int(L, t, "reset_type", 0, 0, 0xFF, &v)) md.reset_type = (uint8_t)v, md.present |= MW_TRUSTM_MD_RESET_TYPE;
  lua_getfield(L, t, "key_usage");
  if (!lua_isnil(L, -1)) md.key_usage = usage_bits(L, "key_usage"), md.present |= MW_TRUSTM_MD_KEY_USAGE;
  lua_pop(L, 1);
  lua_getfield(L, t, "type");
  if (!lua_isnil(L, -1)) {
    int found = mw_trustm_type_parse(lua_tostring(L, -1));
    if (found < 0) return luaL_error(L, "type must be BSTR, UPCTR, TA, DEVCERT, PRESSEC, PTFBIND, UPDATSEC or AUTOREF");
    md.type = (uint8_t)found;
    md.present |= MW_TRUSTM_MD_TYPE;
  }
  lua_pop(L, 1);
  if (!md.present) return luaL_error(L, "nothing to write: give lcso, version, change, read, execute, meta_update, "
                                        "key_usage, type or reset_type");
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_metadata_write(dev, oid, &md);
  if (st == MW_ERR_INVALID) return luaL_error(L, "the metadata does not fit the chip's 44-byte limit");
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushboolean(L, 1);
  return 1;
}

static int lse_cert(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  uint8_t der[OBJ_MAX];
  size_t n;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_cert_read(dev, oid, der, sizeof der, &n);
  if (st == MW_ERR_NOT_FOUND) {
    lua_pushnil(L); /* an empty certificate slot is an answer, not a failure */
    return 1;
  }
  if (st != MW_OK) return fail_dev(L, dev, st);
  char pem[3 * OBJ_MAX];
  if (mw_trustm_cert_to_pem(der, n, pem, sizeof pem) != MW_OK)
    return lb_fail(L, "the object holds no parseable X.509 certificate", "EPROTO");
  lua_pushstring(L, pem);
  return 1;
}

static int lse_store_cert(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  size_t pl;
  const char *pem = luaL_checklstring(L, base + 1, &pl);
  static const char *const allowed[] = {"chain", NULL};
  check_opts(L, base + 2, allowed);
  bool chain = opt_bool(L, base + 2, "chain", oid == MW_TRUSTM_OID_DEVICE_CERT);
  uint8_t der[OBJ_MAX];
  size_t n;
  bool more;
  /* 9 bytes stay free for the identity-chain header */
  mw_status_t st = mw_trustm_cert_from_pem(pem, pl, der, sizeof der - 9, &n, &more);
  if (st != MW_OK && st != MW_ERR_TOO_LARGE) return luaL_argerror(L, base + 1, "not a PEM certificate");
  if (more) return luaL_argerror(L, base + 1, "give one certificate, not a chain");
  if (st != MW_OK) return lb_fail(L, "the certificate is too large for a Trust M object", "E2BIG");
  NEED_CHIP(dev);
  st = mw_trustm_cert_write(dev, oid, der, n, chain ? MW_TRUSTM_CERT_CHAIN_TAG : 0);
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushboolean(L, 1);
  return 1;
}

static int lse_counter(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  lua_Integer add = luaL_optinteger(L, base + 1, 0);
  luaL_argcheck(L, add >= 0 && add <= 255, base + 1, "add must be 0..255");
  mw_status_t st = MW_OK;
  NEED_CHIP(dev);
  if (add > 0) st = mw_trustm_counter_add(dev, oid, (uint8_t)add);
  uint32_t value, threshold;
  if (st == MW_OK) st = mw_trustm_counter_read(dev, oid, &value, &threshold);
  if (st != MW_OK) return fail_dev(L, dev, st);
  lua_pushinteger(L, value);
  lua_pushinteger(L, threshold);
  return 2;
}

static int lse_csr(lua_State *L) {
  DEV(dev, base);
  uint16_t oid = check_oid(L, base);
  int t = base + 1;
  luaL_checktype(L, t, LUA_TTABLE);
  static const char *const allowed[] = {"cn", "o", "ou", "c", "st", "l", "serial", "dns", NULL};
  check_opts(L, t, allowed);
  mw_csr_subject_t s = {0};
  s.cn = opt_string(L, t, "cn");
  if (!s.cn) return luaL_error(L, "csr needs cn");
  s.o = opt_string(L, t, "o");
  s.ou = opt_string(L, t, "ou");
  s.c = opt_string(L, t, "c");
  s.st = opt_string(L, t, "st");
  s.l = opt_string(L, t, "l");
  s.serial = opt_string(L, t, "serial");
  const char *dns[9] = {NULL};
  lua_getfield(L, t, "dns");
  if (!lua_isnil(L, -1)) {
    luaL_argcheck(L, lua_istable(L, -1), t, "dns must be a list of names");
    lua_Integer n = luaL_len(L, -1);
    luaL_argcheck(L, n <= 8, t, "at most 8 dns names");
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "dns[%I] must be a string", i);
      dns[i - 1] = lua_tostring(L, -1);
      lua_pop(L, 1); /* still referenced by the list */
    }
    s.dns = dns;
  }
  lua_pop(L, 1);
  /* From here on nothing raises until the C resources are released. */
  EVP_PKEY *key = NULL;
  NEED_CHIP(dev);
  mw_status_t st = mw_trustm_pkey(dev, oid, NULL, &key);
  if (st != MW_OK) return fail_dev(L, dev, st);
  char *pem = NULL, err[256], out[4096];
  st = mw_csr_build(key, &s, &pem, err, sizeof err);
  EVP_PKEY_free(key);
  size_t n = pem ? strlen(pem) : 0;
  bool fits = n < sizeof out;
  if (st == MW_OK && fits) memcpy(out, pem, n);
  free(pem);
  if (st == MW_ERR_DEVICE) return fail_dev(L, dev, st);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  if (!fits) return lb_fail(L, "the request is too large", "E2BIG");
  lua_pushlstring(L, out, n);
  return 1;
}

/* ---- handles ---- */

static int lse_close(lua_State *L) {
  lse_t *h = luaL_checkudata(L, 1, LB_MT_SE);
  if (h->dev) {
    mw_trustm_close(h->dev);
    h->dev = NULL;
  }
  return 0;
}

static int lse_tostring(lua_State *L) {
  lse_t *h = luaL_checkudata(L, 1, LB_MT_SE);
  lua_pushfstring(L, "moonwire.se (%s)", !h->dev ? "closed" : mw_trustm_is_sim(h->dev) ? "simulator" : "i2c");
  return 1;
}

static int lse_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  static const char *const allowed[] = {"sim", "device", "address", NULL};
  check_opts(L, 1, allowed);
  const char *sim = opt_string(L, 1, "sim"), *device = opt_string(L, 1, "device");
  lua_Integer address;
  opt_int(L, 1, "address", 0x30, 0x08, 0x77, &address);
  if (!sim == !device) return luaL_error(L, "se.open needs sim = STATEFILE or device = \"/dev/i2c-N\" (one of them)");
  /* Closed first, with its metatable: the chip is only opened once nothing can raise. */
  lse_t *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->dev = NULL;
  luaL_setmetatable(L, LB_MT_SE);
  mw_trustm_config_t tc = {.device = device, .sim = sim, .address = (uint8_t)address};
  mw_status_t st = mw_trustm_open(&tc, &h->dev);
  if (st != MW_OK) {
    char msg[300];
    snprintf(msg, sizeof msg, "cannot open the secure element %s: %s", device ? device : sim, mw_status_str(st));
    return lb_fail_status(L, st, msg);
  }
  return 1;
}

static const luaL_Reg funcs[] = {
    {"available", lse_available}, {"uid", lse_uid},         {"info", lse_info},
    {"random", lse_random},       {"gen_key", lse_gen_key}, {"pubkey", lse_pubkey},
    {"sign", lse_sign},           {"verify", lse_verify},   {"read", lse_read},
    {"write", lse_write},         {"metadata", lse_metadata}, {"set_metadata", lse_set_metadata},
    {"cert", lse_cert},           {"store_cert", lse_store_cert}, {"counter", lse_counter},
    {"csr", lse_csr},             {NULL, NULL},
};

int luaopen_moonwire_se(lua_State *L) {
  if (luaL_newmetatable(L, LB_MT_SE)) {
    luaL_newlib(L, funcs);
    lua_pushcfunction(L, lse_close);
    lua_setfield(L, -2, "close");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lse_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lse_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lse_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushcfunction(L, lse_open);
  lua_setfield(L, -2, "open");
  return 1;
}
