/*
** The device handle and the command set. Each function validates its arguments, builds
** the command data with its TLVs, runs it through mw__trustm_cmd() and decodes the
** answer; chunking (reads, writes, random, hash) happens here, above the APDU limit.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "mw_log.h"
#include "mw_trustm_int.h"
#include "mw_trustm_sim.h"

#define CHUNK MW_TRUSTM_MAX_APDU_DATA

/* ---- lifetime ---- */

mw_status_t mw_trustm_open(const mw_trustm_config_t *cfg, mw_trustm_t **out) {
  if (!cfg || !out) return MW_ERR_INVALID;
  *out = NULL;
  unsigned frame = cfg->frame_size ? cfg->frame_size : MW_TRUSTM_FRAME_MAX;
  if (frame < MW_TRUSTM_FRAME_MIN || frame > MW_TRUSTM_FRAME_MAX || cfg->address > 0x7F) return MW_ERR_INVALID;
  mw_trustm_t *dev = calloc(1, sizeof *dev);
  if (!dev) return MW_ERR_NOMEM;
  dev->refs = 1;
  dev->cfg = *cfg;
  dev->cfg.device = dev->cfg.sim = NULL; /* not kept */
  dev->cfg.frame_size = frame;
  if (!dev->cfg.frequency_khz) dev->cfg.frequency_khz = 400;
  if (!dev->cfg.response_timeout_ms) dev->cfg.response_timeout_ms = 30000;
  mw_trustm_transport_t tr = {0};
  mw_status_t st;
  if (cfg->device && *cfg->device) {
    st = mw_trustm_transport_open_linux(cfg->device, cfg->address, &tr);
  } else if (cfg->sim_handle) {
    mw_trustm_sim_transport(cfg->sim_handle, &tr);
    dev->is_sim = true;
    st = MW_OK;
  } else {
    mw_trustm_sim_config_t sc = {.state_file = cfg->sim, .address = cfg->address};
    st = mw_trustm_sim_create(&sc, &dev->own_sim);
    if (st == MW_OK) mw_trustm_sim_transport(dev->own_sim, &tr);
    dev->is_sim = true;
  }
  if (st != MW_OK) {
    MW_LOGE("trustm", "cannot open %s: %s", cfg->device && *cfg->device ? cfg->device : "simulator",
            mw_status_str(st));
    mw_trustm_sim_destroy(dev->own_sim);
    free(dev);
    return st;
  }
  mw__trustm_link_init(&dev->link, &tr, &dev->stats);
  dev->link.presentation = cfg->presentation;
  dev->link.response_timeout_us = dev->cfg.response_timeout_ms * 1000u;
  st = mw__trustm_start(dev);
  if (st != MW_OK) {
    MW_LOGE("trustm", "%s", dev->last_error);
    mw_trustm_transport_close(&dev->link.tr);
    mw_trustm_sim_destroy(dev->own_sim);
    free(dev);
    return st;
  }
  *out = dev;
  return MW_OK;
}

void mw__trustm_ref(mw_trustm_t *dev) { dev->refs++; }

void mw__trustm_unref(mw_trustm_t *dev) {
  if (!dev || --dev->refs > 0) return;
  if (dev->app_open && !dev->need_restart) {
    const uint8_t *out;
    size_t n;
    (void)mw__trustm_cmd(dev, "CloseApplication", MW_TRUSTM_CMD_CLOSE_APP, 0x00, NULL, 0, &out, &n);
  }
  mw_trustm_transport_close(&dev->link.tr);
  mw_trustm_sim_destroy(dev->own_sim);
  free(dev);
}

void mw_trustm_close(mw_trustm_t *dev) {
  if (!dev || dev->user_closed) return;
  dev->user_closed = true;
  mw__trustm_unref(dev);
}

const char *mw_trustm_last_error(const mw_trustm_t *dev) { return dev ? dev->last_error : "no device"; }
uint8_t mw_trustm_last_chip_error(const mw_trustm_t *dev) { return dev ? dev->last_chip_error : 0; }
bool mw_trustm_is_sim(const mw_trustm_t *dev) { return dev && dev->is_sim; }
void mw_trustm_stats(const mw_trustm_t *dev, mw_trustm_stats_t *out) { *out = dev->stats; }
void mw_trustm_stats_reset(mw_trustm_t *dev) { memset(&dev->stats, 0, sizeof dev->stats); }

/* ---- data objects ---- */

/*
** Where objects end, as reads and writes showed: the length of a read's answer before the
** chip gives it, so the driver can wait the read's time instead of polling from the start.
** A few objects are enough (a device reads the same few again); the oldest entry goes.
*/
static size_t known_end(const mw_trustm_t *dev, uint16_t oid) {
  for (size_t i = 0; i < sizeof dev->ends / sizeof dev->ends[0]; i++)
    if (dev->ends[i].end && dev->ends[i].oid == oid) return dev->ends[i].end;
  return 0;
}

static void remember_end(mw_trustm_t *dev, uint16_t oid, size_t end) {
  size_t slots = sizeof dev->ends / sizeof dev->ends[0], i = 0;
  while (i < slots && !(dev->ends[i].end && dev->ends[i].oid == oid)) i++;
  if (i == slots) i = dev->ends_next++ % slots;
  dev->ends[i].oid = oid;
  dev->ends[i].end = (uint16_t)(end > 0xFFFF ? 0xFFFF : end);
}

static mw_status_t get_chunk(mw_trustm_t *dev, uint16_t oid, size_t off, size_t len, const uint8_t **out,
                             size_t *n) {
  char what[48];
  snprintf(what, sizeof what, "GetDataObject 0x%04X", oid);
  const uint8_t in[6] = {(uint8_t)(oid >> 8), (uint8_t)oid, (uint8_t)(off >> 8), (uint8_t)off, (uint8_t)(len >> 8),
                         (uint8_t)len};
  size_t end = known_end(dev, oid), expect = end > off ? (end - off < len ? end - off : len) : 0;
  mw_status_t st = mw__trustm_cmd_sized(dev, what, MW_TRUSTM_CMD_GET_DATA, 0x00, in, sizeof in, expect, out, n);
  /* a short answer is where the object ends; a full one, that it goes at least that far */
  if (st == MW_OK && (*n < len || off + *n > end)) remember_end(dev, oid, off + *n);
  return st;
}

mw_status_t mw_trustm_read(mw_trustm_t *dev, uint16_t oid, size_t offset, size_t len, uint8_t *buf, size_t cap,
                           size_t *out_len) {
  if (!dev || (!buf && cap) || !out_len || offset > 0xFFFF) return MW_ERR_INVALID;
  bool all = len == MW_TRUSTM_READ_ALL;
  size_t want = all ? cap : (len < cap ? len : cap), got = 0;
  *out_len = 0;
  if (!all && len > cap) return MW_ERR_TOO_LARGE;
  while (got < want) {
    size_t ask = want - got < CHUNK ? want - got : CHUNK;
    if (offset + got > 0xFFFF) break;
    const uint8_t *out;
    size_t n;
    mw_status_t st = get_chunk(dev, oid, offset + got, ask, &out, &n);
    if (st == MW_ERR_DEVICE && dev->last_chip_error == 0x08 && got > 0) {
      mw__trustm_clear_error(dev); /* the object ended exactly at a chunk border */
      break;
    }
    if (st != MW_OK) return st;
    if (n > ask) return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "GetDataObject 0x%04X: %zu bytes for %zu asked", oid, n, ask);
    memcpy(buf + got, out, n);
    got += n;
    if (n < ask) break;
  }
  if (all && got == cap && offset + got <= 0xFFFF) {
    /* Full buffer: is there more? */
    const uint8_t *out;
    size_t n;
    mw_status_t st = get_chunk(dev, oid, offset + got, 1, &out, &n);
    if (st == MW_OK && n > 0)
      return mw__trustm_fail(dev, MW_ERR_TOO_LARGE, "0x%04X holds more than %zu bytes", oid, cap);
    mw__trustm_clear_error(dev);
  }
  *out_len = got;
  return MW_OK;
}

mw_status_t mw_trustm_write(mw_trustm_t *dev, uint16_t oid, size_t offset, const uint8_t *data, size_t len,
                            bool erase) {
  uint8_t in[4 + CHUNK];
  char what[48];
  if (!dev || (!data && len) || offset > 0xFFFF || offset + len > 0x10000) return MW_ERR_INVALID;
  snprintf(what, sizeof what, "SetDataObject 0x%04X", oid);
  size_t done = 0;
  do {
    size_t n = len - done < CHUNK - 4 ? len - done : CHUNK - 4, off = offset + done;
    in[0] = (uint8_t)(oid >> 8), in[1] = (uint8_t)oid, in[2] = (uint8_t)(off >> 8), in[3] = (uint8_t)off;
    if (n) memcpy(in + 4, data + done, n);
    const uint8_t *out;
    size_t on;
    mw_status_t st = mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_SET_DATA, erase && done == 0 ? 0x40 : 0x00, in, 4 + n,
                                    &out, &on);
    if (st != MW_OK) return st;
    if ((erase && done == 0) || off + n > known_end(dev, oid)) remember_end(dev, oid, off + n);
    done += n;
  } while (done < len);
  return MW_OK;
}

mw_status_t mw_trustm_metadata_read(mw_trustm_t *dev, uint16_t oid, mw_trustm_metadata_t *md, uint8_t *raw,
                                    size_t raw_cap, size_t *raw_len) {
  char what[48];
  if (!dev || !md) return MW_ERR_INVALID;
  snprintf(what, sizeof what, "GetDataObject metadata 0x%04X", oid);
  const uint8_t in[2] = {(uint8_t)(oid >> 8), (uint8_t)oid};
  const uint8_t *out;
  size_t n;
  mw_status_t st = mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_GET_DATA, 0x01, in, sizeof in, &out, &n);
  if (st != MW_OK) return st;
  if (mw_trustm_metadata_decode(out, n, md) != MW_OK)
    return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "%s: malformed metadata", what);
  if (raw) {
    if (n > raw_cap) return MW_ERR_TOO_LARGE;
    memcpy(raw, out, n);
  }
  if (raw_len) *raw_len = n;
  return MW_OK;
}

mw_status_t mw_trustm_metadata_write_raw(mw_trustm_t *dev, uint16_t oid, const uint8_t *tlv, size_t len) {
  uint8_t in[4 + 2 + 255];
  char what[48];
  if (!dev || !tlv || len < 2 || len > sizeof in - 4) return MW_ERR_INVALID;
  snprintf(what, sizeof what, "SetDataObject metadata 0x%04X", oid);
  in[0] = (uint8_t)(oid >> 8), in[1] = (uint8_t)oid, in[2] = 0, in[3] = 0;
  memcpy(in + 4, tlv, len);
  const uint8_t *out;
  size_t n;
  return mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_SET_DATA, 0x01, in, 4 + len, &out, &n);
}

mw_status_t mw_trustm_metadata_write(mw_trustm_t *dev, uint16_t oid, const mw_trustm_metadata_t *md) {
  uint8_t tlv[2 + 255];
  size_t n;
  if (!dev || !md) return MW_ERR_INVALID;
  mw_status_t st = mw_trustm_metadata_encode(md, tlv, sizeof tlv, &n);
  if (st != MW_OK) return st;
  return mw_trustm_metadata_write_raw(dev, oid, tlv, n);
}

mw_status_t mw_trustm_counter_read(mw_trustm_t *dev, uint16_t oid, uint32_t *value, uint32_t *threshold) {
  uint8_t b[8];
  size_t n;
  mw_status_t st = mw_trustm_read(dev, oid, 0, sizeof b, b, sizeof b, &n);
  if (st != MW_OK) return st;
  if (n != 8) return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "0x%04X is not a counter (%zu bytes)", oid, n);
  if (value) *value = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  if (threshold) *threshold = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
  return MW_OK;
}

mw_status_t mw_trustm_counter_add(mw_trustm_t *dev, uint16_t oid, uint8_t step) {
  char what[48];
  if (!dev || step == 0) return MW_ERR_INVALID;
  snprintf(what, sizeof what, "count 0x%04X", oid);
  const uint8_t in[5] = {(uint8_t)(oid >> 8), (uint8_t)oid, 0, 0, step};
  const uint8_t *out;
  size_t n;
  return mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_SET_DATA, 0x02, in, sizeof in, &out, &n);
}

mw_status_t mw_trustm_cert_read(mw_trustm_t *dev, uint16_t oid, uint8_t *der, size_t cap, size_t *der_len) {
  if (!dev || !der || !der_len) return MW_ERR_INVALID;
  uint8_t *buf = malloc(4096);
  if (!buf) return MW_ERR_NOMEM;
  size_t n;
  mw_status_t st = mw_trustm_read(dev, oid, 0, MW_TRUSTM_READ_ALL, buf, 4096, &n);
  if (st == MW_ERR_DEVICE && dev->last_chip_error == 0x08) {
    st = mw__trustm_fail(dev, MW_ERR_NOT_FOUND, "0x%04X holds no certificate (empty)", oid);
  } else if (st == MW_OK) {
    const uint8_t *c;
    size_t cl;
    st = mw_trustm_cert_extract(buf, n, &c, &cl);
    if (st == MW_OK && cl > cap) st = MW_ERR_TOO_LARGE;
    if (st == MW_OK) {
      memcpy(der, c, cl);
      *der_len = cl;
    } else {
      st = mw__trustm_fail(dev, st, "0x%04X holds no certificate%s", oid, st == MW_ERR_NOT_FOUND ? " (empty)" : "");
    }
  }
  free(buf);
  return st;
}

mw_status_t mw_trustm_cert_write(mw_trustm_t *dev, uint16_t oid, const uint8_t *der, size_t len, unsigned flags) {
  const uint8_t *c;
  size_t cl;
  if (!dev || !der || mw_trustm_cert_extract(der, len, &c, &cl) != MW_OK || c != der || cl != len || len > 0xFFF0)
    return MW_ERR_INVALID;
  if (!(flags & MW_TRUSTM_CERT_CHAIN_TAG)) return mw_trustm_write(dev, oid, 0, der, len, true);
  uint8_t *buf = malloc(len + 9);
  if (!buf) return MW_ERR_NOMEM;
  size_t chain = len + 3, outer = chain + 3;
  buf[0] = 0xC0, buf[1] = (uint8_t)(outer >> 8), buf[2] = (uint8_t)outer;
  buf[3] = (uint8_t)(chain >> 16), buf[4] = (uint8_t)(chain >> 8), buf[5] = (uint8_t)chain;
  buf[6] = (uint8_t)(len >> 16), buf[7] = (uint8_t)(len >> 8), buf[8] = (uint8_t)len;
  memcpy(buf + 9, der, len);
  mw_status_t st = mw_trustm_write(dev, oid, 0, buf, len + 9, true);
  free(buf);
  return st;
}

/* ---- chip information ---- */

mw_status_t mw_trustm_uid(mw_trustm_t *dev, uint8_t uid[MW_TRUSTM_UID_LEN]) {
  size_t n;
  mw_status_t st = mw_trustm_read(dev, MW_TRUSTM_OID_UID, 0, MW_TRUSTM_UID_LEN, uid, MW_TRUSTM_UID_LEN, &n);
  if (st == MW_OK && n != MW_TRUSTM_UID_LEN)
    return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "UID is %zu bytes, expected %d", n, MW_TRUSTM_UID_LEN);
  return st;
}

mw_status_t mw_trustm_info(mw_trustm_t *dev, mw_trustm_info_t *o) {
  if (!dev || !o) return MW_ERR_INVALID;
  memset(o, 0, sizeof *o);
  mw_status_t st = mw_trustm_uid(dev, o->uid);
  if (st != MW_OK) return st;
  const uint8_t *u = o->uid;
  o->cim_id = u[0], o->platform_id = u[1], o->model_id = u[2];
  o->rom_mask_id = (uint16_t)(u[3] << 8 | u[4]);
  memcpy(o->chip_type, u + 5, 6);
  memcpy(o->batch, u + 11, 6);
  o->wafer_x = (uint16_t)(u[17] << 8 | u[18]);
  o->wafer_y = (uint16_t)(u[19] << 8 | u[20]);
  o->firmware_id = (uint32_t)u[21] << 24 | (uint32_t)u[22] << 16 | (uint32_t)u[23] << 8 | u[24];
  o->esw_build = (uint16_t)(u[25] << 8 | u[26]);
  o->frame_size = dev->link.frame_size;
  o->frequency_khz = dev->link.frequency_khz;
  size_t n;
  if ((st = mw_trustm_read(dev, 0xF1C0, 0, 1, &o->lcsa, 1, &n)) != MW_OK) return st;
  return mw_trustm_read(dev, MW_TRUSTM_OID_SEC, 0, 1, &o->sec, 1, &n);
}

/* ---- random, hash ---- */

mw_status_t mw_trustm_random(mw_trustm_t *dev, uint8_t *buf, size_t n) {
  if (!dev || (!buf && n)) return MW_ERR_INVALID;
  for (size_t got = 0; got < n;) {
    size_t ask = n - got > 256 ? 256 : n - got;
    if (ask < 8) ask = 8; /* the chip's minimum request */
    const uint8_t in[2] = {(uint8_t)(ask >> 8), (uint8_t)ask};
    const uint8_t *out;
    size_t on;
    mw_status_t st = mw__trustm_cmd(dev, "GetRandom", MW_TRUSTM_CMD_GET_RANDOM, 0x00, in, sizeof in, &out, &on);
    if (st != MW_OK) return st;
    if (on != ask) return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "GetRandom: %zu bytes for %zu asked", on, ask);
    size_t take = n - got < on ? n - got : on;
    memcpy(buf + got, out, take);
    got += take;
  }
  return MW_OK;
}

mw_status_t mw_trustm_sha256(mw_trustm_t *dev, const uint8_t *data, size_t len, uint8_t digest[32]) {
  uint8_t in[CHUNK];
  const size_t room = CHUNK - 3;
  if (!dev || (!data && len) || !digest) return MW_ERR_INVALID;
  size_t done = 0;
  bool first = true;
  for (;;) {
    size_t n = len - done < room ? len - done : room;
    bool last = done + n == len;
    uint8_t tag = first ? (last ? 0x01 : 0x00) : (last ? 0x03 : 0x02);
    mw_trustm_wbuf_t w = {in, sizeof in, 0, false};
    mw__trustm_put_tlv(&w, tag, data ? data + done : NULL, n);
    const uint8_t *out;
    size_t on;
    mw_status_t st = mw__trustm_cmd(dev, "CalcHash", MW_TRUSTM_CMD_CALC_HASH, 0xE2, in, w.len, &out, &on);
    if (st != MW_OK) return st;
    done += n;
    first = false;
    if (last) {
      const uint8_t *d;
      size_t dl;
      if (mw__trustm_tlv_find(out, on, 0x01, &d, &dl) != MW_OK || dl != 32)
        return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "CalcHash: no digest in the response");
      memcpy(digest, d, 32);
      return MW_OK;
    }
  }
}

/* ---- keys ---- */

uint16_t mw_trustm_pubkey_oid(uint16_t key_oid) {
  return key_oid >= 0xE0F1 && key_oid <= 0xE0F3 ? (uint16_t)(key_oid + 0x10E0) : 0;
}

static mw_status_t key_curve(mw_trustm_t *dev, uint16_t key_oid, uint8_t *curve) {
  mw_trustm_metadata_t md;
  mw_status_t st = mw_trustm_metadata_read(dev, key_oid, &md, NULL, 0, NULL);
  if (st != MW_OK) return st;
  if (!(md.present & MW_TRUSTM_MD_ALGORITHM) || !mw__trustm_curve_bytes(md.algorithm))
    return mw__trustm_fail(dev, MW_ERR_NOT_FOUND, "0x%04X holds no ECC key", key_oid);
  *curve = md.algorithm;
  return MW_OK;
}

mw_status_t mw_trustm_gen_key(mw_trustm_t *dev, uint16_t key_oid, mw_trustm_curve_t curve, uint8_t usage,
                              unsigned flags, mw_trustm_pubkey_t *pub) {
  char what[48];
  if (!dev || !pub || !mw__trustm_curve_bytes((uint8_t)curve) || usage == 0) return MW_ERR_INVALID;
  snprintf(what, sizeof what, "GenKeyPair 0x%04X", key_oid);
  const uint8_t in[] = {0x01, 0x00, 0x02, (uint8_t)(key_oid >> 8), (uint8_t)key_oid, 0x02, 0x00, 0x01, usage};
  const uint8_t *out;
  size_t n;
  mw_status_t st = mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_GEN_KEYPAIR, (uint8_t)curve, in, sizeof in, &out, &n);
  if (st != MW_OK) return st;
  const uint8_t *bs;
  size_t bl;
  if (mw__trustm_tlv_find(out, n, 0x02, &bs, &bl) != MW_OK ||
      mw_trustm_pubkey_from_bitstring(curve, bs, bl, pub) != MW_OK)
    return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "%s: malformed public key in the response", what);
  if (flags & MW_TRUSTM_GEN_STORE_PUBKEY) {
    uint16_t store = mw_trustm_pubkey_oid(key_oid);
    if (!store) return mw__trustm_fail(dev, MW_ERR_INVALID, "0x%04X has no public-key storage object", key_oid);
    return mw_trustm_write(dev, store, 0, pub->spki, pub->spki_len, true);
  }
  return MW_OK;
}

static mw_status_t pub_from_cert(mw_trustm_t *dev, uint16_t cert_oid, mw_trustm_pubkey_t *pub) {
  uint8_t der[2048];
  size_t n;
  mw_status_t st = mw_trustm_cert_read(dev, cert_oid, der, sizeof der, &n);
  if (st != MW_OK) return st;
  const unsigned char *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)n);
  unsigned char *spki = NULL;
  int sl = x ? i2d_PUBKEY(X509_get0_pubkey(x), &spki) : -1;
  uint8_t bs[160], curve;
  size_t bl;
  st = MW_ERR_PROTOCOL;
  if (sl > 0 && mw_trustm_pubkey_to_bitstring(spki, (size_t)sl, &curve, bs, sizeof bs, &bl) == MW_OK)
    st = mw_trustm_pubkey_from_bitstring(curve, bs, bl, pub);
  OPENSSL_free(spki);
  X509_free(x);
  if (st != MW_OK) return mw__trustm_fail(dev, st, "certificate in 0x%04X has no usable EC key", cert_oid);
  return MW_OK;
}

mw_status_t mw_trustm_pubkey_read(mw_trustm_t *dev, uint16_t key_oid, mw_trustm_pubkey_t *pub) {
  if (!dev || !pub) return MW_ERR_INVALID;
  if (key_oid == MW_TRUSTM_OID_KEY1) return pub_from_cert(dev, MW_TRUSTM_OID_DEVICE_CERT, pub);
  uint16_t store = mw_trustm_pubkey_oid(key_oid);
  if (!store) return mw__trustm_fail(dev, MW_ERR_NOT_FOUND, "no public key known for 0x%04X", key_oid);
  uint8_t buf[MW_TRUSTM_SPKI_MAX];
  size_t n;
  mw_status_t st = mw_trustm_read(dev, store, 0, sizeof buf, buf, sizeof buf, &n);
  if (st == MW_ERR_DEVICE && dev->last_chip_error == 0x08)
    return mw__trustm_fail(dev, MW_ERR_NOT_FOUND, "public key of 0x%04X not stored in 0x%04X", key_oid, store);
  if (st != MW_OK) return st;
  uint8_t bs[160], curve;
  size_t bl;
  if (n > 0 && buf[0] == 0x30) {
    st = mw_trustm_pubkey_to_bitstring(buf, n, &curve, bs, sizeof bs, &bl);
    if (st == MW_OK) st = mw_trustm_pubkey_from_bitstring(curve, bs, bl, pub);
  } else if (n > 0 && buf[0] == 0x03) {
    if ((st = key_curve(dev, key_oid, &curve)) != MW_OK) return st;
    st = mw_trustm_pubkey_from_bitstring(curve, buf, n, pub);
  } else {
    st = MW_ERR_NOT_FOUND;
  }
  if (st != MW_OK) return mw__trustm_fail(dev, st, "0x%04X holds no public key of 0x%04X", store, key_oid);
  return MW_OK;
}

mw_status_t mw__trustm_sign_raw(mw_trustm_t *dev, uint16_t key_oid, const uint8_t *digest, size_t digest_len,
                                uint8_t *raw, size_t cap, size_t *raw_len) {
  uint8_t in[3 + 66 + 5];
  char what[48];
  snprintf(what, sizeof what, "CalcSign 0x%04X", key_oid);
  if (digest_len > 66) return mw__trustm_fail(dev, MW_ERR_INVALID, "%s: digest too long", what);
  mw_trustm_wbuf_t w = {in, sizeof in, 0, false};
  mw__trustm_put_tlv(&w, 0x01, digest, digest_len);
  mw__trustm_put_tlv16(&w, 0x03, key_oid);
  const uint8_t *out;
  size_t n;
  mw_status_t st = mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_CALC_SIGN, 0x11, in, w.len, &out, &n);
  if (st != MW_OK) return st;
  if (n > cap) return mw__trustm_fail(dev, MW_ERR_PROTOCOL, "%s: %zu-byte signature", what, n);
  memcpy(raw, out, n);
  *raw_len = n;
  return MW_OK;
}

mw_status_t mw_trustm_sign(mw_trustm_t *dev, uint16_t key_oid, const uint8_t *digest, size_t digest_len,
                           uint8_t *der, size_t cap, size_t *der_len) {
  if (!dev || !digest || !der || !der_len || digest_len == 0) return MW_ERR_INVALID;
  if (digest_len > 32) { /* only then can the digest be longer than the key */
    uint8_t curve;
    mw_status_t st = key_curve(dev, key_oid, &curve);
    if (st != MW_OK) return st;
    size_t kb = mw__trustm_curve_bytes(curve);
    if (digest_len > kb) digest_len = kb; /* P-521: 66 bytes covers any digest */
  }
  uint8_t raw[2 * 70];
  size_t rl;
  mw_status_t st = mw__trustm_sign_raw(dev, key_oid, digest, digest_len, raw, sizeof raw, &rl);
  if (st != MW_OK) return st;
  st = mw_trustm_sig_to_der(raw, rl, der, cap, der_len);
  if (st != MW_OK) return mw__trustm_fail(dev, st, "CalcSign 0x%04X: malformed signature", key_oid);
  return MW_OK;
}

static mw_status_t verify_common(mw_trustm_t *dev, const char *what, mw_trustm_wbuf_t *w, bool *valid) {
  const uint8_t *out;
  size_t n;
  if (w->overflow) return MW_ERR_INVALID;
  mw_status_t st = mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_VERIFY_SIGN, 0x11, w->buf, w->len, &out, &n);
  *valid = st == MW_OK;
  if (st == MW_ERR_DEVICE && dev->last_chip_error == 0x2C) return MW_OK;
  return st;
}

mw_status_t mw_trustm_verify(mw_trustm_t *dev, const uint8_t *spki, size_t spki_len, const uint8_t *digest,
                             size_t digest_len, const uint8_t *sig_der, size_t sig_len, bool *valid) {
  uint8_t in[400], bs[160], raw[2 * 70], curve;
  size_t bl, rl;
  if (!dev || !spki || !digest || !sig_der || !valid) return MW_ERR_INVALID;
  *valid = false;
  if (mw_trustm_pubkey_to_bitstring(spki, spki_len, &curve, bs, sizeof bs, &bl) != MW_OK ||
      mw_trustm_sig_from_der(sig_der, sig_len, raw, sizeof raw, &rl) != MW_OK || digest_len > 66)
    return MW_ERR_INVALID;
  mw_trustm_wbuf_t w = {in, sizeof in, 0, false};
  mw__trustm_put_tlv(&w, 0x01, digest, digest_len);
  mw__trustm_put_tlv(&w, 0x02, raw, rl);
  mw__trustm_put_tlv(&w, 0x05, &curve, 1);
  mw__trustm_put_tlv(&w, 0x06, bs, bl);
  return verify_common(dev, "VerifySign", &w, valid);
}

mw_status_t mw_trustm_verify_cert(mw_trustm_t *dev, uint16_t cert_oid, const uint8_t *digest, size_t digest_len,
                                  const uint8_t *sig_der, size_t sig_len, bool *valid) {
  uint8_t in[300], raw[2 * 70];
  size_t rl;
  char what[48];
  if (!dev || !digest || !sig_der || !valid) return MW_ERR_INVALID;
  *valid = false;
  if (mw_trustm_sig_from_der(sig_der, sig_len, raw, sizeof raw, &rl) != MW_OK || digest_len > 66)
    return MW_ERR_INVALID;
  snprintf(what, sizeof what, "VerifySign with 0x%04X", cert_oid);
  mw_trustm_wbuf_t w = {in, sizeof in, 0, false};
  mw__trustm_put_tlv(&w, 0x01, digest, digest_len);
  mw__trustm_put_tlv(&w, 0x02, raw, rl);
  mw__trustm_put_tlv16(&w, 0x04, cert_oid);
  return verify_common(dev, what, &w, valid);
}

mw_status_t mw_trustm_ecdh(mw_trustm_t *dev, uint16_t key_oid, const uint8_t *peer_spki, size_t peer_len,
                           uint8_t *secret, size_t cap, size_t *secret_len) {
  uint8_t in[300], bs[160], curve;
  size_t bl;
  char what[48];
  if (!dev || !peer_spki || !secret || !secret_len) return MW_ERR_INVALID;
  if (mw_trustm_pubkey_to_bitstring(peer_spki, peer_len, &curve, bs, sizeof bs, &bl) != MW_OK) return MW_ERR_INVALID;
  snprintf(what, sizeof what, "CalcSSec 0x%04X", key_oid);
  mw_trustm_wbuf_t w = {in, sizeof in, 0, false};
  mw__trustm_put_tlv16(&w, 0x01, key_oid);
  mw__trustm_put_tlv(&w, 0x05, &curve, 1);
  mw__trustm_put_tlv(&w, 0x06, bs, bl);
  mw__trustm_put_tlv(&w, 0x07, NULL, 0);
  const uint8_t *out;
  size_t n;
  mw_status_t st = mw__trustm_cmd(dev, what, MW_TRUSTM_CMD_CALC_SSEC, 0x01, in, w.len, &out, &n);
  if (st != MW_OK) return st;
  if (n > cap) return MW_ERR_TOO_LARGE;
  memcpy(secret, out, n);
  *secret_len = n;
  return MW_OK;
}
