/*
** moonwire.pki: the key and certificate work provisioning flows do on the device. Key pairs in
** files (development) or in the OPTIGA Trust M, CSRs signed through whichever EVP_PKEY holds
** the key (the private key is used, never read), certificate facts, signing with an own CA,
** and crash-safe file writes.
**
** The chip is the runtime's when it has one open (rt->se), else one this module opens from
** the configuration's se section or pki.se_open{...} and makes the runtime's (so
** moonwire.se works on it too); then this module also lends it to the TLS layer, so a
** connection can use a key it just generated. Keys in a PKCS#11 token are reached through
** their URI; the token makes them and signs with them.
*/
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "lb.h"
#include "lb_pki.h"
#include "mw_csr.h"
#include "mw_keyref.h"
#include "mw_pkcs11.h"
#include "mw_prov_ca.h"
#include "mw_tls.h"
#include "mw_trustm.h"
#include "mw_trustm_tlskey.h"

static const char CHIP_KEY = 'k';
#define MT_CHIP "moonwire.pki.chip"
#define MT_GUARD "moonwire.pki.guard"

/*
** A C resource owned by a userdata on the stack for as long as Lua may raise: a memory error
** while building a result then frees it through __gc instead of leaking it.
*/
typedef struct {
  void *p;
  void (*fn)(void *);
} guard_t;

static int guard_gc(lua_State *L) {
  guard_t *g = lua_touserdata(L, 1);
  if (g && g->p) g->fn(g->p);
  if (g) g->p = NULL;
  return 0;
}

/* Pushes a guard (this may raise; nothing is held yet). */
static guard_t *guard(lua_State *L, void (*fn)(void *)) {
  guard_t *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->p = NULL;
  g->fn = fn;
  if (luaL_newmetatable(L, MT_GUARD)) {
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return g;
}

static void release(guard_t *g) {
  if (g->p) g->fn(g->p);
  g->p = NULL;
}

static void free_pkey(void *p) { EVP_PKEY_free(p); }
static void free_x509(void *p) { X509_free(p); }
static void free_req(void *p) { X509_REQ_free(p); }
static void free_bio(void *p) { BIO_free(p); }
static void free_mem(void *p) { free(p); }

/* ------------------------------------------------------------------ files */

static mw_status_t fsync_dir(const char *path) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return MW_ERR_IO;
  int rc = fsync(fd);
  close(fd);
  return rc == 0 ? MW_OK : MW_ERR_IO;
}

mw_status_t lb_pki_write_file(const char *path, const void *data, size_t len, unsigned mode, bool exclusive, char *err,
                              size_t errlen) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof tmp) {
    snprintf(err, errlen, "%s: path too long", path);
    return MW_ERR_INVALID;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    return MW_ERR_IO;
  }
  const char *p = data;
  size_t left = len;
  int ok = fchmod(fd, (mode_t)mode) == 0;
  while (ok && left) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ok = 0;
    else p += n, left -= (size_t)n;
  }
  /* On disk before it is visible under its name: a power cut leaves old or new, never half. */
  ok = ok && fsync(fd) == 0;
  int e = errno;
  close(fd);
  if (ok && exclusive) {
    ok = link(tmp, path) == 0;
    e = errno;
    unlink(tmp);
  } else if (ok) {
    ok = rename(tmp, path) == 0;
    e = errno;
  }
  if (!ok) {
    unlink(tmp);
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
    return e == EEXIST ? MW_ERR_CONFLICT : MW_ERR_IO;
  }
  fsync_dir(path);
  return MW_OK;
}

/* pki.write_file(path, data [, {mode = 0644, exclusive = false}]) -> true | nil, msg, code */
static int lpki_write_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lua_Integer mode = 0644;
  int exclusive = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "mode") != LUA_TNIL) mode = luaL_checkinteger(L, -1);
    if (lua_getfield(L, 3, "exclusive") != LUA_TNIL) exclusive = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  luaL_argcheck(L, mode >= 0 && mode <= 0777, 3, "mode must be 0..0777");
  char err[PATH_MAX + 128];
  mw_status_t st = lb_pki_write_file(path, data, len, (unsigned)mode, exclusive, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* pki.rename(from, to) -> true | nil, msg, code: atomic replace, made durable. */
static int lpki_rename(lua_State *L) {
  const char *from = luaL_checkstring(L, 1), *to = luaL_checkstring(L, 2);
  if (rename(from, to) != 0) {
    char err[2 * PATH_MAX + 64];
    snprintf(err, sizeof err, "cannot rename %s to %s: %s", from, to, strerror(errno));
    return lb_fail_status(L, errno == ENOENT ? MW_ERR_NOT_FOUND : MW_ERR_IO, err);
  }
  fsync_dir(to);
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------------------ the chip */

typedef struct {
  mw_trustm_t *dev; /* NULL once closed */
} chip_t;

static int chip_gc(lua_State *L) {
  chip_t *c = luaL_checkudata(L, 1, MT_CHIP);
  if (c->dev) {
    mw_rt_t *rt = lb_rt(L);
    if (rt && rt->se == c->dev) rt->se = NULL;
    mw_tls_set_key_loader(MW_KEY_TRUSTM, NULL, NULL);
    mw_trustm_close(c->dev);
    c->dev = NULL;
  }
  return 0;
}

static mw_trustm_t *own_chip(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CHIP_KEY);
  chip_t *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c ? c->dev : NULL;
}

/* Opens a chip and keeps it in the registry. Returns NULL with err set on failure. */
static mw_trustm_t *open_chip(lua_State *L, const char *device, const char *sim, int address, char *err,
                              size_t errlen) {
  chip_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->dev = NULL;
  if (luaL_newmetatable(L, MT_CHIP)) {
    lua_pushcfunction(L, chip_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  mw_trustm_config_t tc = {0};
  tc.device = device;
  tc.sim = sim;
  tc.address = (uint8_t)address;
  mw_status_t st = mw_trustm_open(&tc, &c->dev);
  if (st != MW_OK) {
    snprintf(err, errlen, "cannot open the secure element %s: %s", device ? device : sim,
             c->dev ? mw_trustm_last_error(c->dev) : mw_status_str(st));
    mw_trustm_close(c->dev);
    c->dev = NULL;
    lua_pop(L, 1);
    return NULL;
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CHIP_KEY);
  mw_tls_set_key_loader(MW_KEY_TRUSTM, mw_trustm_tls_key_loader, c->dev);
  /* The runtime's chip from now on, for every module that asks for it. */
  lb_rt(L)->se = c->dev;
  return c->dev;
}

mw_trustm_t *lb_pki_chip(lua_State *L, char *err, size_t errlen) {
  mw_rt_t *rt = lb_rt(L);
  if (rt->se) return rt->se;
  mw_trustm_t *dev = own_chip(L);
  if (dev) return dev;
  const mw_config_t *cfg = rt->cfg;
  if (!cfg || (!cfg->se.device && !cfg->se.sim)) {
    snprintf(err, errlen, "no secure element configured (se.device or se.sim in the configuration, or "
                          "pki.se_open{...})");
    return NULL;
  }
  return open_chip(L, cfg->se.device, cfg->se.sim, cfg->se.address, err, errlen);
}

/*
** pki.se_open([{device = "/dev/i2c-1" [, address = 0x30] | sim = "state"}]) -> true | nil, msg, code
** Makes sure the runtime has its chip (rt->se, which moonwire.se uses): the one named here,
** or with no argument the configuration's se section.
*/
static int lpki_se_open(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    char err[512];
    if (!lb_pki_chip(L, err, sizeof err)) return lb_fail_status(L, MW_ERR_DEVICE, err);
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "device");
  lua_getfield(L, 1, "sim");
  lua_getfield(L, 1, "address");
  const char *device = luaL_optstring(L, -3, NULL), *sim = luaL_optstring(L, -2, NULL);
  lua_Integer address = luaL_optinteger(L, -1, 0x30);
  luaL_argcheck(L, (device != NULL) != (sim != NULL), 1, "give either device or sim");
  luaL_argcheck(L, address >= 0x08 && address <= 0x77, 1, "address must be a 7-bit I2C address");
  mw_rt_t *rt = lb_rt(L);
  if (rt->se || own_chip(L)) {
    lua_pushboolean(L, 1); /* one chip per process; it is open already */
    return 1;
  }
  char err[512];
  if (!open_chip(L, device, sim, (int)address, err, sizeof err)) return lb_fail_status(L, MW_ERR_DEVICE, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------------------ keys */

static int push_pubkey_pem(lua_State *L, EVP_PKEY *k);

static X509 *pem_cert(const char *pem, size_t len) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  ERR_clear_error();
  return x;
}

/* The PKCS#11 module of the configuration (a URI's module-path= wins), NULL for the default. */
static const char *p11_module(lua_State *L) {
  mw_rt_t *rt = lb_rt(L);
  return rt && rt->cfg ? rt->cfg->pkcs11.module : NULL;
}

/*
** The TLS layer's way to a PKCS#11 key where no session installed one (moonwire provision):
** as the session's, the key must belong to the certificate. ud is the mw_rt_t.
*/
mw_status_t lb_pki_p11_loader(void *ud, const mw_keyref_t *ref, EVP_PKEY *pub, EVP_PKEY **out, char *err,
                              size_t errlen) {
  mw_rt_t *rt = ud;
  mw_p11_open_opts_t o = {.module = rt && rt->cfg ? rt->cfg->pkcs11.module : NULL};
  mw_p11_t *t = NULL;
  mw_status_t st = mw_p11_open(ref->text, &o, &t, err, errlen);
  if (st != MW_OK) return st;
  EVP_PKEY *stored = NULL;
  char why[512];
  if (mw_p11_pubkey(t, &stored, why, sizeof why) == MW_OK) {
    bool same = pub && EVP_PKEY_eq(stored, pub) == 1;
    EVP_PKEY_free(stored);
    if (!same) {
      snprintf(err, errlen, "the key in PKCS#11 token '%s' does not match the public key in tls.cert",
               mw_p11_token_label(t));
      mw_p11_close(t);
      return MW_ERR_TLS;
    }
  }
  st = mw_p11_pkey(t, pub, out, err, errlen);
  mw_p11_close(t); /* the key keeps the session */
  return st;
}

/* pki.p11_keygen(uri [, {curve = "P-256"|"P-384"|"P-521", rsa_bits = N}]) -> public key PEM | nil, msg, code */
static int lpki_p11_keygen(lua_State *L) {
  const char *uri = luaL_checkstring(L, 1);
  const char *curve = "P-256";
  lua_Integer rsa = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "curve") != LUA_TNIL) curve = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "rsa_bits") != LUA_TNIL) rsa = luaL_checkinteger(L, -1);
    lua_pop(L, 2);
  }
  luaL_argcheck(L, rsa == 0 || (rsa >= 2048 && rsa <= 4096), 2, "rsa_bits must be 2048..4096");
  mw_keyref_t ref;
  char err[1400];
  if (mw_keyref_parse(uri, &ref, err, sizeof err) != MW_OK || ref.kind != MW_KEY_PKCS11)
    return luaL_argerror(L, 1, "a pkcs11: URI naming the new key (object= and/or id=)");
  guard_t *g = guard(L, free_pkey);
  mw_p11_open_opts_t o = {.module = p11_module(L), .rw = true};
  mw_p11_t *t = NULL;
  mw_status_t st = mw_p11_open(uri, &o, &t, err, sizeof err);
  EVP_PKEY *pub = NULL;
  if (st == MW_OK) {
    mw_p11_keygen_t kg = {.curve = curve, .rsa_bits = (unsigned)rsa};
    st = mw_p11_keygen(t, &kg, &pub, NULL, err, sizeof err);
  }
  mw_p11_close(t);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  g->p = pub;
  int ok = push_pubkey_pem(L, pub);
  release(g);
  return ok ? 1 : lb_fail_status(L, MW_ERR_NOMEM, NULL);
}

/*
** The EVP_PKEY behind a key reference (file or chip). For the chip the public half comes
** from the chip's stored public key; the private operations run on the chip.
*/
static mw_status_t load_key(lua_State *L, const char *keyref, EVP_PKEY **out, char *err, size_t errlen) {
  *out = NULL;
  mw_keyref_t ref;
  if (mw_keyref_parse(keyref, &ref, err, errlen) != MW_OK) return MW_ERR_INVALID;
  if (ref.kind == MW_KEY_FILE) {
    FILE *f = fopen(ref.text, "rb");
    if (!f) {
      snprintf(err, errlen, "cannot read the key %s: %s", ref.text, strerror(errno));
      return MW_ERR_IO;
    }
    *out = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    if (!*out) {
      snprintf(err, errlen, "%s holds no PEM private key", ref.text);
      return MW_ERR_INVALID;
    }
    return MW_OK;
  }
  if (ref.kind == MW_KEY_TRUSTM) {
    mw_trustm_t *dev = lb_pki_chip(L, err, errlen);
    if (!dev) return MW_ERR_DEVICE;
    mw_status_t st = mw_trustm_pkey(dev, ref.oid, NULL, out);
    if (st != MW_OK) snprintf(err, errlen, "slot 0x%04X: %s", ref.oid, mw_trustm_last_error(dev));
    return st;
  }
  /* A PKCS#11 key: the token signs; the session lives as long as the EVP_PKEY. */
  mw_p11_open_opts_t o = {.module = p11_module(L)};
  mw_p11_t *t = NULL;
  mw_status_t st = mw_p11_open(ref.text, &o, &t, err, errlen);
  if (st == MW_OK) st = mw_p11_pkey(t, NULL, out, err, errlen);
  mw_p11_close(t);
  return st;
}

/* Pushes the public key as PEM (1), or nothing (0). */
static int push_pubkey_pem(lua_State *L, EVP_PKEY *k) {
  guard_t *g = guard(L, free_bio);
  BIO *b = g->p = BIO_new(BIO_s_mem());
  char *data;
  long n;
  if (!b || !PEM_write_bio_PUBKEY(b, k) || (n = BIO_get_mem_data(b, &data)) <= 0) {
    release(g);
    lua_pop(L, 1);
    ERR_clear_error();
    return 0;
  }
  lua_pushlstring(L, data, (size_t)n);
  release(g);
  lua_remove(L, -2);
  return 1;
}

/* pki.keygen_file(path [, {curve = "P-256"|"P-384", force = false}]) -> public key PEM | nil, msg, code */
static int lpki_keygen_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *curve = "P-256";
  int force = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "curve") != LUA_TNIL) curve = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "force") != LUA_TNIL) force = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  if (strcmp(curve, "P-256") && strcmp(curve, "P-384")) return luaL_error(L, "curve must be P-256 or P-384");
  guard_t *g = guard(L, free_pkey);
  EVP_PKEY *k = g->p = EVP_EC_gen(curve);
  BIO *b = k ? BIO_new(BIO_s_mem()) : NULL;
  char *data;
  long n;
  if (!b || !PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) || (n = BIO_get_mem_data(b, &data)) <= 0) {
    BIO_free(b);
    release(g);
    ERR_clear_error();
    return lb_fail_status(L, MW_ERR_NOMEM, "cannot generate a key pair");
  }
  char err[PATH_MAX + 128];
  mw_status_t st = lb_pki_write_file(path, data, (size_t)n, 0600, !force, err, sizeof err);
  OPENSSL_cleanse(data, (size_t)n);
  BIO_free(b);
  if (st != MW_OK) {
    release(g);
    if (st == MW_ERR_CONFLICT) snprintf(err, sizeof err, "%s exists already (a key is never overwritten)", path);
    return lb_fail_status(L, st, err);
  }
  int ok = push_pubkey_pem(L, k);
  release(g);
  return ok ? 1 : lb_fail_status(L, MW_ERR_NOMEM, NULL);
}

/* pki.public_key(keyref) -> PEM | nil, msg, code */
static int lpki_public_key(lua_State *L) {
  const char *ref = luaL_checkstring(L, 1);
  char err[1400];
  EVP_PKEY *k;
  guard_t *g = guard(L, free_pkey);
  mw_status_t st = load_key(L, ref, &k, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  g->p = k;
  int ok = push_pubkey_pem(L, k);
  release(g);
  return ok ? 1 : lb_fail_status(L, MW_ERR_NOMEM, NULL);
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "subject.%s must be a string", k);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1); /* the string stays referenced by the table */
  return s;
}

/* pki.csr(keyref, {cn = ..., o, ou, c, st, l, serial, dns = {...}}) -> PEM | nil, msg, code */
static int lpki_csr(lua_State *L) {
  const char *ref = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  mw_csr_subject_t s;
  memset(&s, 0, sizeof s);
  s.cn = opt_string(L, 2, "cn");
  s.o = opt_string(L, 2, "o");
  s.ou = opt_string(L, 2, "ou");
  s.c = opt_string(L, 2, "c");
  s.st = opt_string(L, 2, "st");
  s.l = opt_string(L, 2, "l");
  s.serial = opt_string(L, 2, "serial");
  if (!s.cn) return luaL_error(L, "subject.cn is required");
  const char *dns[9] = {NULL};
  if (lua_getfield(L, 2, "dns") != LUA_TNIL) {
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n > 8) return luaL_error(L, "subject.dns: at most 8 names");
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "subject.dns[%d] must be a string", (int)i);
      dns[i - 1] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
    s.dns = dns;
  }
  /* The dns table stays on the stack, anchoring its strings. Everything is checked: acquire. */
  char err[1400];
  EVP_PKEY *k;
  guard_t *gk = guard(L, free_pkey), *gp = guard(L, free_mem);
  mw_status_t st = load_key(L, ref, &k, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  gk->p = k;
  char *pem = NULL;
  st = mw_csr_build(k, &s, &pem, err, sizeof err);
  release(gk);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  gp->p = pem;
  lua_pushstring(L, pem);
  release(gp);
  return 1;
}

/* pki.csr_info(pem) -> {cn, public_key} | nil, msg, code (the signature is checked) */
static int lpki_csr_info(lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  char cn[MW_PROV_CN_MAX + 1], err[300];
  mw_status_t st = mw_csr_verify(pem, len, cn, sizeof cn, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, cn);
  lua_setfield(L, -2, "cn");
  guard_t *g = guard(L, free_req);
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509_REQ *req = g->p = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  ERR_clear_error();
  if (req && push_pubkey_pem(L, X509_REQ_get0_pubkey(req))) lua_setfield(L, -3, "public_key");
  release(g);
  lua_pop(L, 1);
  return 1;
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v || !*v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* pki.cert_info(pem) -> {id, cn, subject, issuer, serial, not_before, not_after, public_key, ...} */
static int lpki_cert_info(lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  mw_prov_cert_info_t in;
  char err[300];
  mw_status_t st = mw_prov_cert_info(pem, len, &in, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  guard_t *g = guard(L, free_mem);
  char *pub = NULL;
  mw_prov_cert_pubkey_pem(pem, len, &pub);
  g->p = pub;
  lua_createtable(L, 0, 14);
  set_str(L, "id", in.id);
  set_str(L, "cn", in.cn);
  set_str(L, "subject", in.subject);
  set_str(L, "issuer", in.issuer);
  set_str(L, "serial", in.serial);
  set_str(L, "country", in.country);
  set_str(L, "organization", in.organization);
  set_str(L, "organizational_unit", in.organizational_unit);
  set_str(L, "serial_number", in.serial_number);
  set_str(L, "public_key", pub);
  release(g);
  lua_pushinteger(L, in.not_before);
  lua_setfield(L, -2, "not_before");
  lua_pushinteger(L, in.not_after);
  lua_setfield(L, -2, "not_after");
  return 1;
}

/* pki.issue(csr_pem, {ca = "certs/dev", days = 825, cn = nil}) -> {pem, id, serial, not_after} | nil, msg, code */
static int lpki_issue(lua_State *L) {
  size_t len;
  const char *csr = luaL_checklstring(L, 1, &len);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "ca");
  lua_getfield(L, 2, "days");
  lua_getfield(L, 2, "cn");
  const char *where = luaL_checkstring(L, -3);
  lua_Integer days = luaL_optinteger(L, -2, 825);
  const char *cn = luaL_optstring(L, -1, NULL);
  luaL_argcheck(L, days > 0 && days <= 36500, 2, "days must be 1..36500");
  char err[1400];
  mw_prov_ca_t *ca;
  guard_t *g = guard(L, free_mem);
  mw_status_t st = mw_prov_ca_load(where, &ca, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  mw_prov_issue_t opt = {cn, (int)days, (int64_t)time(NULL)};
  mw_prov_cert_t c;
  st = mw_prov_ca_issue_csr(ca, csr, len, &opt, &c, err, sizeof err);
  mw_prov_ca_free(ca);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  g->p = c.pem;
  lua_createtable(L, 0, 4);
  set_str(L, "pem", c.pem);
  set_str(L, "id", c.id);
  set_str(L, "serial", c.serial);
  lua_pushinteger(L, c.not_after);
  lua_setfield(L, -2, "not_after");
  release(g);
  return 1;
}

/* pki.key_matches(keyref, cert_pem) -> boolean | nil, msg, code */
static int lpki_key_matches(lua_State *L) {
  const char *ref = luaL_checkstring(L, 1);
  size_t len;
  const char *pem = luaL_checklstring(L, 2, &len);
  guard_t *gx = guard(L, free_x509), *gk = guard(L, free_pkey);
  X509 *x = gx->p = pem_cert(pem, len);
  if (!x) return luaL_argerror(L, 2, "not a PEM certificate");
  char err[1400];
  EVP_PKEY *k;
  mw_status_t st = load_key(L, ref, &k, err, sizeof err);
  if (st != MW_OK) return lb_fail_status(L, st, err);
  gk->p = k;
  int same = EVP_PKEY_eq(k, X509_get0_pubkey(x)) == 1;
  ERR_clear_error();
  release(gk);
  release(gx);
  lua_pushboolean(L, same);
  return 1;
}

/* pki.is_dir(path) -> boolean */
static int lpki_is_dir(lua_State *L) {
  struct stat sb;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &sb) == 0 && S_ISDIR(sb.st_mode));
  return 1;
}

/* pki.sha256(data) -> lowercase hex */
static int lpki_sha256(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  unsigned char md[32];
  char hex[65];
  SHA256((const unsigned char *)data, len, md);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  lua_pushstring(L, hex);
  return 1;
}

int luaopen_moonwire_pki(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"keygen_file", lpki_keygen_file}, {"public_key", lpki_public_key}, {"csr", lpki_csr},
      {"csr_info", lpki_csr_info},       {"cert_info", lpki_cert_info},   {"issue", lpki_issue},
      {"key_matches", lpki_key_matches}, {"write_file", lpki_write_file}, {"rename", lpki_rename},
      {"se_open", lpki_se_open},         {"p11_keygen", lpki_p11_keygen}, {"sha256", lpki_sha256},
      {"is_dir", lpki_is_dir},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
  return 1;
}
