/*
** Internals of the chip simulator, shared by the mw_trustm_sim*.c files only.
**   mw_trustm_sim.c        bus side: register file, I2C_STATE, NACKs, sleep, clock, faults
**   mw_trustm_sim_link.c   data link + transport chaining + presentation latch
**   mw_trustm_sim_app.c    APDU decoding and the commands
**   mw_trustm_sim_obj.c    object map, defaults, metadata, access conditions, counters
**   mw_trustm_sim_crypto.c ECC keys, signatures, ECDH, hashing, the factory certificate
**   mw_trustm_sim_store.c  the state file and its lock
** The simulator shares only the CRC/frame codec with the driver (mw_trustm_frame.c);
** everything above the frame is its own reading of the reference.
*/
#ifndef MW_TRUSTM_SIM_INT_H
#define MW_TRUSTM_SIM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>

#include "mw_trustm_int.h"
#include "mw_trustm_sim.h"

#define SIM_FRAME_MAX 277          /* the largest DATA_REG_LEN this chip accepts */
#define SIM_APDU_MAX 1557          /* 4-byte header + 1553 */
#define SIM_DATA_MAX 1553
#define SIM_STREAM_MAX (1 + SIM_APDU_MAX + 8)
#define SIM_META_MAX 44            /* [SRM]: metadata is at most 44 bytes */
#define SIM_TRANS_TIMEOUT_US 10000 /* TRANS_TIMEOUT register */
#define SIM_GUARD_US 50
#define SIM_STARTUP_US 15000       /* NACK window after a reset */

enum { AC_CHA = 0, AC_RD, AC_EXE, AC_MUD, AC_N };

typedef enum {
  OBJ_DATA = 0, /* byte string with max/used size */
  OBJ_KEY,      /* ECC private key slot */
  OBJ_RSA,      /* RSA key slot (present in the map, RSA itself not modelled) */
  OBJ_AES,      /* AES key slot (not modelled) */
  OBJ_SESSION,  /* volatile session context E100..E103 */
} sim_kind_t;

typedef struct {
  uint16_t oid;
  uint8_t kind;
  bool fixed;          /* a register-like object: used == max always */
  bool is_volatile;    /* lost on reset, never persisted */
  uint16_t max, used;
  uint8_t *data;       /* max bytes */
  /* metadata; an absent AC means NEV, an absent LcsO means operational */
  bool has_lcso, has_version, has_alg, has_usage, has_type, has_reset;
  uint8_t lcso, alg, usage, type, reset_type;
  uint16_t version;
  uint8_t ac_len[AC_N];
  uint8_t ac[AC_N][MW_TRUSTM_AC_MAX];
  /* key material (OBJ_KEY, OBJ_SESSION) */
  uint8_t priv_len;
  uint8_t priv[66];
} sim_obj_t;

typedef struct {
  uint8_t tx, rx;                    /* last frame number sent / received */
  uint8_t ctrl[MW_TRUSTM_FRAME_OVERHEAD];
  bool ctrl_pending;
  uint8_t frame[SIM_FRAME_MAX];      /* the data frame on offer or awaiting its ACK */
  size_t frame_len;
  enum { FR_NONE, FR_READY, FR_SENT } fstate;
  uint64_t sent_at;
  unsigned resends;
  uint8_t out[SIM_STREAM_MAX];       /* response stream: [SCTR] APDU */
  size_t out_len, out_off;
  bool out_active, out_presence, out_chain_error, out_restarted;
  uint64_t ready_at;                 /* BUSY until then */
  uint8_t in[SIM_STREAM_MAX];        /* command stream being reassembled */
  size_t in_len;
  bool in_chain, in_overflow, in_presence;
  bool presentation;                 /* latched until reset once the host used it */
} sim_link_t;

struct mw_trustm_sim {
  mw_trustm_sim_config_t cfg;
  char *state_path, *lock_path;
  int lock_fd;
  /* the persisted file as last seen, to skip reloading an unchanged one */
  dev_t st_dev;
  ino_t st_ino;
  struct timespec st_mtim;
  off_t st_size;
  bool dirty;
  bool store_broken;               /* the file stopped parsing: never overwrite it */
  /* clock */
  uint64_t vclock;                   /* virtual microseconds */
  uint64_t mono_base, wall_base;     /* at creation */
  /* bus */
  uint8_t addr, addr_nv;
  uint8_t reg_ptr;
  uint16_t data_reg_len;
  uint8_t i2c_mode, i2c_mode_nv;
  uint64_t last_stop, nack_until, last_activity;
  bool asleep, touched;
  /* layers */
  sim_link_t link;
  bool app_open;
  uint8_t lec;                       /* Last Error Code */
  EVP_MD_CTX *hash;                  /* CalcHash context kept in the chip */
  uint16_t luc[4];                   /* linked usage counters to advance on success */
  unsigned nluc;
  sim_obj_t *objs;
  size_t nobj;
  /* security monitor */
  uint8_t sec, credit;
  uint64_t sec_stamp;                /* wall-clock us of the last decay step */
  /* faults and statistics */
  unsigned fault[MW_TRUSTM_FAULT_COUNT];
  mw_trustm_sim_stats_t stats;
};

/* mw_trustm_sim.c */
uint64_t sim_now(mw_trustm_sim_t *s);
uint64_t sim_wall(mw_trustm_sim_t *s);
bool sim_fault(mw_trustm_sim_t *s, mw_trustm_fault_t f); /* consumes one if armed */
void sim_warm_reset(mw_trustm_sim_t *s);

/* mw_trustm_sim_link.c */
void sim_link_reset(mw_trustm_sim_t *s);
void sim_link_update(mw_trustm_sim_t *s);            /* timers: response ready, retransmission */
void sim_link_rx(mw_trustm_sim_t *s, const uint8_t *frame, size_t n);
size_t sim_link_available(mw_trustm_sim_t *s);       /* bytes of the frame on offer */
bool sim_link_busy(mw_trustm_sim_t *s);
bool sim_link_idle(mw_trustm_sim_t *s);
size_t sim_link_read(mw_trustm_sim_t *s, uint8_t *buf, size_t len);

/* mw_trustm_sim_app.c */
void sim_app_reset(mw_trustm_sim_t *s);
size_t sim_app_execute(mw_trustm_sim_t *s, const uint8_t *apdu, size_t len, uint8_t *resp, size_t cap,
                       uint64_t *exec_us);

/* mw_trustm_sim_obj.c */
mw_status_t sim_obj_init(mw_trustm_sim_t *s);        /* the object map with defaults */
void sim_obj_free(mw_trustm_sim_t *s);
sim_obj_t *sim_obj_find(mw_trustm_sim_t *s, uint16_t oid);
void sim_obj_volatile_reset(mw_trustm_sim_t *s);
void sim_obj_default(sim_obj_t *o);
size_t sim_meta_encode(const sim_obj_t *o, bool with_sizes, uint8_t *out, size_t cap);
uint8_t sim_meta_update(mw_trustm_sim_t *s, sim_obj_t *o, const uint8_t *tlv, size_t len, bool authorize);
bool sim_ac_valid(const uint8_t *ac, size_t len);
bool sim_ac_check(mw_trustm_sim_t *s, const sim_obj_t *o, int which);
void sim_luc_commit(mw_trustm_sim_t *s);
uint8_t sim_obj_lcso(const sim_obj_t *o);
void sim_sec_update(mw_trustm_sim_t *s);
uint64_t sim_sec_event(mw_trustm_sim_t *s);           /* returns the throttle delay in us */
mw_status_t sim_factory(mw_trustm_sim_t *s);          /* UID, E0F0 key, E0E0 certificate */

/* mw_trustm_sim_crypto.c */
int sim_curve_nid(uint8_t alg);
size_t sim_curve_bytes(uint8_t alg);
bool sim_ec_generate(uint8_t alg, uint8_t *priv, uint8_t *priv_len);
EVP_PKEY *sim_ec_private(uint8_t alg, const uint8_t *priv, size_t len);
EVP_PKEY *sim_ec_public(uint8_t alg, const uint8_t *point, size_t len);
size_t sim_ec_bitstring(uint8_t alg, const uint8_t *priv, size_t len, uint8_t *out, size_t cap);
bool sim_bitstring_point(const uint8_t *bs, size_t n, const uint8_t **pt, size_t *ptlen);
size_t sim_ec_sign(uint8_t alg, const uint8_t *priv, size_t priv_len, const uint8_t *dg, size_t dl, uint8_t *out,
                   size_t cap);
int sim_ec_verify(EVP_PKEY *pub, const uint8_t *dg, size_t dl, const uint8_t *sig, size_t sl);
size_t sim_ecdh(uint8_t alg, const uint8_t *priv, size_t priv_len, const uint8_t *point, size_t plen, uint8_t *out,
                size_t cap);
EVP_PKEY *sim_cert_pubkey(const uint8_t *der, size_t len, uint8_t *alg);
size_t sim_factory_cert(const uint8_t *uid, uint8_t alg, const uint8_t *priv, size_t priv_len, uint8_t *out,
                        size_t cap);

/* mw_trustm_sim_store.c */
mw_status_t sim_store_open(mw_trustm_sim_t *s);      /* load or create */
void sim_store_close(mw_trustm_sim_t *s);
void sim_store_begin(mw_trustm_sim_t *s);            /* lock, reload if another process changed it */
void sim_store_end(mw_trustm_sim_t *s);              /* save if dirty, unlock */

#endif
