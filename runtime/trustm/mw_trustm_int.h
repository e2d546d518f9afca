/*
** Internals of the Trust M host stack, shared by runtime/trustm/ and tests/trustm/ only.
** Layering (each file talks only to the one below):
**   mw_trustm.c (API) -> mw_trustm_cmd.c (APDU + error fetch) -> mw_trustm_net.c (chaining,
**   presentation) -> mw_trustm_dl.c (frames, ACK/NAK) -> mw_trustm_phys.c (registers,
**   guard time, NACK retry) -> transport vtable.
** mw_trustm_frame.c (CRC and frame codec) is pure and shared with the simulator.
*/
#ifndef MW_TRUSTM_INT_H
#define MW_TRUSTM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mw_trustm.h"

/* ---- registers ([IFXI2C] Table 2-1) ---- */
enum {
  MW_TRUSTM_REG_DATA = 0x80,
  MW_TRUSTM_REG_DATA_REG_LEN = 0x81,
  MW_TRUSTM_REG_I2C_STATE = 0x82,
  MW_TRUSTM_REG_BASE_ADDR = 0x83,
  MW_TRUSTM_REG_MAX_SCL_FREQU = 0x84,
  MW_TRUSTM_REG_GUARD_TIME = 0x85,
  MW_TRUSTM_REG_TRANS_TIMEOUT = 0x86,
  MW_TRUSTM_REG_PWR_SAVE_TIMEOUT = 0x87,
  MW_TRUSTM_REG_SOFT_RESET = 0x88,
  MW_TRUSTM_REG_I2C_MODE = 0x89,
};
enum {
  MW_TRUSTM_STATE_BUSY = 0x80,
  MW_TRUSTM_STATE_RESP_RDY = 0x40,
  MW_TRUSTM_STATE_SOFT_RESET = 0x08,
  MW_TRUSTM_STATE_PRESENT_LAYER = 0x80, /* byte 1 */
};

/* ---- frames ---- */
#define MW_TRUSTM_FRAME_MAX 277           /* the largest DATA_REG_LEN we support */
#define MW_TRUSTM_FRAME_MIN 16
#define MW_TRUSTM_FRAME_OVERHEAD 5        /* FCTR, LEN(2), FCS(2) */
#define MW_TRUSTM_APDU_MAX (4 + MW_TRUSTM_MAX_APDU_DATA)

enum {
  MW_TRUSTM_FCTR_CONTROL = 0x80,
  MW_TRUSTM_SEQ_ACK = 0x00,
  MW_TRUSTM_SEQ_NAK = 0x20,
  MW_TRUSTM_SEQ_RESYNC = 0x40,
  MW_TRUSTM_FCTR_RESYNC = 0xC0,
};

/* PCTR: chain bits and presence ([IFXI2C] §4). */
enum {
  MW_TRUSTM_PCTR_PRESENCE = 0x08,
  MW_TRUSTM_CHAIN_SINGLE = 0x00,
  MW_TRUSTM_CHAIN_FIRST = 0x01,
  MW_TRUSTM_CHAIN_MIDDLE = 0x02,
  MW_TRUSTM_CHAIN_LAST = 0x04,
  MW_TRUSTM_CHAIN_ERROR = 0x07,
  MW_TRUSTM_SCTR_RECORD_PLAIN = 0x20,
};

typedef enum {
  MW_TRUSTM_FRAME_OK = 0,
  MW_TRUSTM_FRAME_SHORT,     /* fewer than 5 bytes */
  MW_TRUSTM_FRAME_LENGTH,    /* LEN + 5 != bytes received */
  MW_TRUSTM_FRAME_CRC,
  MW_TRUSTM_FRAME_FCTR,      /* RFU bits, bad SEQCTR, control frame with payload, data frame without */
} mw_trustm_frame_err_t;

typedef struct {
  uint8_t fctr;
  bool control;
  uint8_t seq;               /* MW_TRUSTM_SEQ_ACK/NAK/RESYNC */
  uint8_t frnr, acknr;
  const uint8_t *packet;     /* points into the parsed buffer */
  size_t packet_len;
} mw_trustm_frame_t;

/* CRC-16/KERMIT as the IFX I2C FCS (check value 0x2189); sent high byte first. */
uint16_t mw__trustm_crc(const uint8_t *p, size_t n);
/* Builds FCTR|LEN|packet|FCS into out; returns the frame length, 0 if cap is too small. */
size_t mw__trustm_frame_build(uint8_t fctr, const uint8_t *packet, size_t len, uint8_t *out, size_t cap);
/* Parses and checks one frame (CRC, length, FCTR rules of [IFXI2C] Table 3-2). */
mw_trustm_frame_err_t mw__trustm_frame_parse(const uint8_t *buf, size_t n, mw_trustm_frame_t *f);
const char *mw__trustm_frame_err_name(mw_trustm_frame_err_t e);

/* ---- the host link (physical + data link + network), one per chip ---- */
typedef struct {
  mw_trustm_transport_t tr;
  uint32_t guard_us;             /* after every transaction */
  uint32_t nack_retry_us;        /* between NACKed attempts */
  uint32_t nack_budget_us;       /* give up a NACKed transaction after this long */
  uint32_t ack_timeout_us;       /* for an ACK after a data frame when the chip is not busy */
  uint32_t response_timeout_us;  /* for a response */
  unsigned repeat;               /* retransmissions before resync */
  unsigned frame_size;           /* negotiated DATA_REG_LEN */
  unsigned frequency_khz;        /* the chip's MAX_SCL_FREQU after negotiation */
  bool presentation;             /* SCTR 0x20 records */
  uint8_t tx, rx;                /* last frame number sent / received */
  uint8_t early[MW_TRUSTM_FRAME_MAX]; /* a response packet that arrived as the ACK */
  size_t early_len;
  bool has_early;
  uint8_t net_out[1 + MW_TRUSTM_APDU_MAX];                       /* SCTR + APDU */
  uint8_t net_in[1 + MW_TRUSTM_APDU_MAX + MW_TRUSTM_FRAME_MAX];  /* reassembled response */
  mw_trustm_stats_t *stats;
  char why[160];                 /* reason of the last link failure */
  /* guard time: the end of the last transaction, so the next one starts >= guard_us later */
  uint64_t last_stop_us;
  bool stopped;
  /*
  ** How long the chip should work on the current command (0: no idea), set by the command
  ** layer; the network layer arms it for the last frame of the request only. The first
  ** I2C_STATE poll after that frame then waits until most of this time has passed, instead
  ** of polling through the whole computation. observed_us is what the command took.
  */
  uint32_t expect_us;
  bool expect_armed;
  uint64_t sent_us;              /* when the last data frame was written */
  uint64_t ready_seen_us;        /* start of the poll that last found a frame ready */
  uint32_t observed_us;
} mw_trustm_link_t;

void mw__trustm_link_init(mw_trustm_link_t *l, const mw_trustm_transport_t *tr, mw_trustm_stats_t *stats);

/* physical layer (mw_trustm_phys.c) */
mw_status_t mw__trustm_phys_write(mw_trustm_link_t *l, uint8_t reg, const uint8_t *data, size_t len);
mw_status_t mw__trustm_phys_read(mw_trustm_link_t *l, uint8_t reg, uint8_t *buf, size_t len);
mw_status_t mw__trustm_phys_state(mw_trustm_link_t *l, uint8_t *flags, uint16_t *avail);
mw_status_t mw__trustm_phys_soft_reset(mw_trustm_link_t *l);
mw_status_t mw__trustm_phys_negotiate(mw_trustm_link_t *l, unsigned want_khz, unsigned want_frame);
void mw__trustm_phys_sleep(mw_trustm_link_t *l, uint32_t us);
uint64_t mw__trustm_phys_now(mw_trustm_link_t *l);

/* data link layer (mw_trustm_dl.c) */
void mw__trustm_dl_reset(mw_trustm_link_t *l);
/* Sends one packet as a data frame and waits for its ACK (or a piggy-backing response). */
mw_status_t mw__trustm_dl_send(mw_trustm_link_t *l, const uint8_t *packet, size_t len);
/* Receives the next data frame's packet (ACKing it). */
mw_status_t mw__trustm_dl_recv(mw_trustm_link_t *l, uint8_t *packet, size_t cap, size_t *len);
/* Sends the resync control frame and resets the counters (after an unrecoverable error). */
void mw__trustm_dl_resync(mw_trustm_link_t *l);

/* network/transport + presentation (mw_trustm_net.c): one APDU out, one APDU back. */
mw_status_t mw__trustm_net_transceive(mw_trustm_link_t *l, const uint8_t *apdu, size_t len, uint8_t *resp,
                                      size_t cap, size_t *resp_len);

/* ---- APDU helpers (mw_trustm_apdu.c), pure ---- */
typedef struct {
  uint8_t *buf;
  size_t cap, len;
  bool overflow;
} mw_trustm_wbuf_t;

void mw__trustm_put8(mw_trustm_wbuf_t *w, uint8_t v);
void mw__trustm_put16(mw_trustm_wbuf_t *w, uint16_t v);
void mw__trustm_put(mw_trustm_wbuf_t *w, const uint8_t *p, size_t n);
void mw__trustm_put_tlv(mw_trustm_wbuf_t *w, uint8_t tag, const uint8_t *p, size_t n);
void mw__trustm_put_tlv16(mw_trustm_wbuf_t *w, uint8_t tag, uint16_t v);

/* Finds tag in a "tag len(2) value" list; MW_ERR_PROTOCOL when the list is malformed. */
mw_status_t mw__trustm_tlv_find(const uint8_t *p, size_t n, uint8_t tag, const uint8_t **val, size_t *vlen);

/* Response APDU header: Sta, UnDef, OutLen. */
mw_status_t mw__trustm_apdu_parse_response(const uint8_t *p, size_t n, uint8_t *sta, const uint8_t **out,
                                           size_t *out_len);

/* ---- the device handle ---- */
struct mw_trustm {
  int refs;                      /* the caller's + one per EVP_PKEY */
  bool user_closed;
  mw_trustm_config_t cfg;        /* strings not kept */
  mw_trustm_link_t link;
  mw_trustm_stats_t stats;
  struct mw_trustm_sim *own_sim; /* created by open from cfg.sim */
  bool is_sim;
  bool app_open;                 /* OpenApplication done since the last (re)start */
  bool need_restart;             /* a link failure happened: restart before the next command */
  uint8_t last_chip_error;
  char last_error[192];
  uint8_t apdu[MW_TRUSTM_APDU_MAX + 8];
  uint8_t resp[MW_TRUSTM_APDU_MAX + 8];
  /* per command code: the chip's time over the default expectation, in 1/65536 (0: none yet) */
  uint32_t learned_scale[128];
  /* where data objects end, as far as reads and writes showed (a read's length before the answer) */
  struct {
    uint16_t oid, end;
  } ends[16];
  unsigned ends_next;
};

enum {
  MW_TRUSTM_CMD_GET_DATA = 0x81,
  MW_TRUSTM_CMD_SET_DATA = 0x82,
  MW_TRUSTM_CMD_GET_RANDOM = 0x8C,
  MW_TRUSTM_CMD_CALC_HASH = 0xB0,
  MW_TRUSTM_CMD_CALC_SIGN = 0xB1,
  MW_TRUSTM_CMD_VERIFY_SIGN = 0xB2,
  MW_TRUSTM_CMD_CALC_SSEC = 0xB3,
  MW_TRUSTM_CMD_GEN_KEYPAIR = 0xB8,
  MW_TRUSTM_CMD_OPEN_APP = 0xF0,
  MW_TRUSTM_CMD_CLOSE_APP = 0xF1,
};

/* mw_trustm_cmd.c */
mw_status_t mw__trustm_start(mw_trustm_t *dev);
/*
** Runs one command: APDU out, response in. On Sta FF the Last Error Code is fetched and
** turned into MW_ERR_DEVICE with dev->last_error set; what names the operation.
** *out points into dev->resp and stays valid until the next command.
*/
mw_status_t mw__trustm_cmd(mw_trustm_t *dev, const char *what, uint8_t cmd, uint8_t param, const uint8_t *in,
                           size_t in_len, const uint8_t **out, size_t *out_len);
/*
** The same for a GetDataObject that will answer with `bytes` bytes, as far as the caller
** knows (0: it does not): the driver then waits the time those bytes take before it polls.
*/
mw_status_t mw__trustm_cmd_sized(mw_trustm_t *dev, const char *what, uint8_t cmd, uint8_t param, const uint8_t *in,
                                 size_t in_len, size_t bytes, const uint8_t **out, size_t *out_len);
mw_status_t mw__trustm_fail(mw_trustm_t *dev, mw_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mw__trustm_clear_error(mw_trustm_t *dev);

/* mw_trustm.c */
void mw__trustm_ref(mw_trustm_t *dev);
void mw__trustm_unref(mw_trustm_t *dev);
/* Raw CalcSign: "02 L r 02 L s" into raw. */
mw_status_t mw__trustm_sign_raw(mw_trustm_t *dev, uint16_t key_oid, const uint8_t *digest, size_t digest_len,
                                uint8_t *raw, size_t cap, size_t *raw_len);

/* mw_trustm_fmt.c: curve id <-> OpenSSL NID and sizes. */
int mw__trustm_curve_nid(uint8_t curve);
uint8_t mw__trustm_curve_from_nid(int nid);
size_t mw__trustm_curve_bytes(uint8_t curve);

#endif
