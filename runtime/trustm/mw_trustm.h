/*
** OPTIGA Trust M: our own host driver. One handle per chip, used by one thread only.
**
** The handle runs the whole IFX I2C stack (physical, data link, network/transport,
** presentation pass-through) and the APDU command set. Chip errors are fetched from
** the Last Error Code object 0xF1C2 and surfaced both as MW_ERR_DEVICE and by name
** (mw_trustm_last_error()). After a link failure the next call re-runs the start-up
** sequence (soft reset, negotiation, OpenApplication) by itself; the failed call is
** never repeated, since a chip command is not always idempotent.
**
** The transport is either a real bus (config.device = "/dev/i2c-1") or the chip
** simulator (config.sim = "STATEFILE", see mw_trustm_sim.h).
*/
#ifndef MW_TRUSTM_H
#define MW_TRUSTM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "mw_status.h"
#include "mw_trustm_transport.h"

typedef struct mw_trustm mw_trustm_t;
struct mw_trustm_sim;

/* Object identifiers used by the API and the CLI. */
enum {
  MW_TRUSTM_OID_LCSG = 0xE0C0,
  MW_TRUSTM_OID_UID = 0xE0C2,
  MW_TRUSTM_OID_SEC = 0xE0C5,
  MW_TRUSTM_OID_DEVICE_CERT = 0xE0E0,   /* Infineon certificate, TLS identity chain (tag C0) */
  MW_TRUSTM_OID_KEY1 = 0xE0F0,          /* Infineon key, matches E0E0 */
  MW_TRUSTM_OID_KEY2 = 0xE0F1,
  MW_TRUSTM_OID_COUNTER1 = 0xE120,
  MW_TRUSTM_OID_LAST_ERROR = 0xF1C2,
};

/* Algorithm identifiers exactly as the chip encodes them (GenKeyPair Param, metadata E0). */
typedef enum {
  MW_TRUSTM_NIST_P256 = 0x03,
  MW_TRUSTM_NIST_P384 = 0x04,
  MW_TRUSTM_NIST_P521 = 0x05,
  MW_TRUSTM_BRAINPOOL_P256 = 0x13,
  MW_TRUSTM_BRAINPOOL_P384 = 0x15,
  MW_TRUSTM_BRAINPOOL_P512 = 0x16,
} mw_trustm_curve_t;

/* Key usage bits (metadata E1, GenKeyPair tag 02). */
enum {
  MW_TRUSTM_USAGE_AUTH = 0x01,
  MW_TRUSTM_USAGE_ENC = 0x02,
  MW_TRUSTM_USAGE_SIGN = 0x10,
  MW_TRUSTM_USAGE_KEYAGREE = 0x20,
};

#define MW_TRUSTM_UID_LEN 27
#define MW_TRUSTM_MAX_APDU_DATA 1553     /* InData and OutData limit of one APDU */
#define MW_TRUSTM_SPKI_MAX 192           /* SubjectPublicKeyInfo of the largest curve */
#define MW_TRUSTM_SIG_DER_MAX 144        /* ECDSA-Sig-Value for BP-512 / P-521 */
#define MW_TRUSTM_META_MAX 64
#define MW_TRUSTM_AC_MAX 32

typedef struct {
  const char *device;            /* "/dev/i2c-1": a real chip */
  uint8_t address;               /* 7-bit; 0 means 0x30 */
  const char *sim;               /* no device: simulator state file; NULL or "" = volatile chip */
  struct mw_trustm_sim *sim_handle; /* or a simulator the caller owns (tests); borrowed */
  unsigned frequency_khz;        /* bus speed to negotiate; 0 means 400 */
  unsigned frame_size;           /* DATA_REG_LEN to negotiate, 16..277; 0 means 277 */
  unsigned response_timeout_ms;  /* longest wait for a response; 0 means 30000 */
  bool presentation;             /* send every APDU as a presentation-layer record (SCTR 0x20) */
} mw_trustm_config_t;

/*
** Opens the chip: soft reset, frequency and frame-size negotiation, OpenApplication.
** Returns MW_OK and *out, MW_ERR_INVALID for a bad config, MW_ERR_IO/MW_ERR_TIMEOUT when
** the bus or chip does not answer, MW_ERR_PROTOCOL on a malformed exchange, MW_ERR_DEVICE
** when the chip refuses OpenApplication. On failure *out is NULL; the reason is logged.
*/
mw_status_t mw_trustm_open(const mw_trustm_config_t *cfg, mw_trustm_t **out);

/*
** Sends CloseApplication and drops the caller's reference. The chip connection itself
** lives on while EVP_PKEYs from mw_trustm_pkey() still use it. NULL is a no-op.
*/
void mw_trustm_close(mw_trustm_t *dev);

/* The message of the last failed call ("CalcSign 0xE0F1: access condition not satisfied"), or "". */
const char *mw_trustm_last_error(const mw_trustm_t *dev);
/* The chip error code behind the last MW_ERR_DEVICE (0x07...), 0 when the failure was not the chip's. */
uint8_t mw_trustm_last_chip_error(const mw_trustm_t *dev);
/* Name of a chip error code ("access condition not satisfied"), never NULL. */
const char *mw_trustm_error_name(uint8_t code);
/* True when the handle talks to the simulator. */
bool mw_trustm_is_sim(const mw_trustm_t *dev);

/* Counters for benchmarks and tests: every I2C transaction and frame the driver made. */
typedef struct {
  unsigned long transactions, bytes_written, bytes_read, nacks;
  unsigned long frames_sent, frames_received, retransmits, naks_sent, resyncs, polls;
  unsigned long apdus, reopens;
} mw_trustm_stats_t;
void mw_trustm_stats(const mw_trustm_t *dev, mw_trustm_stats_t *out);
void mw_trustm_stats_reset(mw_trustm_t *dev);

/* ---- chip information ---- */

typedef struct {
  uint8_t uid[MW_TRUSTM_UID_LEN];   /* raw 0xE0C2 */
  uint8_t cim_id, platform_id, model_id;
  uint16_t rom_mask_id;
  uint8_t chip_type[6], batch[6];
  uint16_t wafer_x, wafer_y;
  uint32_t firmware_id;              /* e.g. 0x80101071 */
  uint16_t esw_build;                /* BCD, e.g. 0x0809 */
  unsigned frame_size;               /* negotiated DATA_REG_LEN */
  unsigned frequency_khz;            /* the chip's MAX_SCL_FREQU */
  uint8_t lcsa;                      /* application life-cycle state 0xF1C0 */
  uint8_t sec;                       /* security event counter 0xE0C5 */
} mw_trustm_info_t;

mw_status_t mw_trustm_uid(mw_trustm_t *dev, uint8_t uid[MW_TRUSTM_UID_LEN]);
mw_status_t mw_trustm_info(mw_trustm_t *dev, mw_trustm_info_t *out);

/* ---- random, hash ---- */

/* Fills buf with n bytes from the chip's TRNG (any n; fetched in 8..256-byte requests). */
mw_status_t mw_trustm_random(mw_trustm_t *dev, uint8_t *buf, size_t n);
/* SHA-256 computed by the chip (start/continue/final for long input). */
mw_status_t mw_trustm_sha256(mw_trustm_t *dev, const uint8_t *data, size_t len, uint8_t digest[32]);

/* ---- keys and signatures ---- */

typedef struct {
  mw_trustm_curve_t curve;
  uint8_t spki[MW_TRUSTM_SPKI_MAX];  /* DER SubjectPublicKeyInfo */
  size_t spki_len;
} mw_trustm_pubkey_t;

enum { MW_TRUSTM_GEN_STORE_PUBKEY = 1 }; /* also write the SPKI to the vendor tools' storage OID */

/*
** Generates a key pair in key_oid (E0F0..E0F3, or a session context E100..E103) with the
** given curve and usage bits; the private key stays in the chip. Returns the public key.
** With MW_TRUSTM_GEN_STORE_PUBKEY the SPKI is also written to mw_trustm_pubkey_oid(key_oid)
** (E0F1 -> F1D1, the convention of Infineon's tools and provider, "0xe0f1:^").
*/
mw_status_t mw_trustm_gen_key(mw_trustm_t *dev, uint16_t key_oid, mw_trustm_curve_t curve, uint8_t usage,
                              unsigned flags, mw_trustm_pubkey_t *pub);

/* The storage OID of a key's public key by the vendor convention, 0 when none. */
uint16_t mw_trustm_pubkey_oid(uint16_t key_oid);

/*
** Reads a key's public key back: from its storage OID (SPKI or a bare BIT STRING with
** the curve from the key metadata), or for E0F0 from the E0E0 certificate.
** MW_ERR_NOT_FOUND when there is none.
*/
mw_status_t mw_trustm_pubkey_read(mw_trustm_t *dev, uint16_t key_oid, mw_trustm_pubkey_t *pub);

/*
** ECDSA over a digest with the key in key_oid (CalcSign). A digest longer than the key
** is truncated to the key size first, as ECDSA requires. The result is an OpenSSL-ready
** DER ECDSA-Sig-Value (SEQUENCE of r and s).
*/
mw_status_t mw_trustm_sign(mw_trustm_t *dev, uint16_t key_oid, const uint8_t *digest, size_t digest_len,
                           uint8_t *der, size_t cap, size_t *der_len);

/*
** VerifySign on the chip with a public key (DER SPKI) or, with mw_trustm_verify_cert,
** with the certificate stored in cert_oid. *valid is false for a signature that does
** not match (chip error 0x2C); any other failure is an error return.
*/
mw_status_t mw_trustm_verify(mw_trustm_t *dev, const uint8_t *spki, size_t spki_len, const uint8_t *digest,
                             size_t digest_len, const uint8_t *sig_der, size_t sig_len, bool *valid);
mw_status_t mw_trustm_verify_cert(mw_trustm_t *dev, uint16_t cert_oid, const uint8_t *digest, size_t digest_len,
                                  const uint8_t *sig_der, size_t sig_len, bool *valid);

/* ECDH (CalcSSec) with the key in key_oid and a peer public key (DER SPKI); exports the shared x. */
mw_status_t mw_trustm_ecdh(mw_trustm_t *dev, uint16_t key_oid, const uint8_t *peer_spki, size_t peer_len,
                           uint8_t *secret, size_t cap, size_t *secret_len);

/* ---- data objects ---- */

#define MW_TRUSTM_READ_ALL ((size_t)-1)

/*
** Reads len bytes (MW_TRUSTM_READ_ALL: up to the used size) from offset, in chunks of at
** most 1553 bytes. Fewer bytes than asked are returned when the object ends first.
*/
mw_status_t mw_trustm_read(mw_trustm_t *dev, uint16_t oid, size_t offset, size_t len, uint8_t *buf, size_t cap,
                           size_t *out_len);
/* Writes data at offset; erase first zeroes the object and sets its used size to offset+len. */
mw_status_t mw_trustm_write(mw_trustm_t *dev, uint16_t oid, size_t offset, const uint8_t *data, size_t len,
                            bool erase);

/* ---- metadata ---- */

enum {
  MW_TRUSTM_MD_LCSO = 1u << 0,
  MW_TRUSTM_MD_VERSION = 1u << 1,
  MW_TRUSTM_MD_MAX_SIZE = 1u << 2,
  MW_TRUSTM_MD_USED_SIZE = 1u << 3,
  MW_TRUSTM_MD_CHANGE = 1u << 4,
  MW_TRUSTM_MD_READ = 1u << 5,
  MW_TRUSTM_MD_EXECUTE = 1u << 6,
  MW_TRUSTM_MD_META_UPDATE = 1u << 7,
  MW_TRUSTM_MD_ALGORITHM = 1u << 8,
  MW_TRUSTM_MD_KEY_USAGE = 1u << 9,
  MW_TRUSTM_MD_TYPE = 1u << 10,
  MW_TRUSTM_MD_RESET_TYPE = 1u << 11,
};

typedef struct {
  uint8_t len;
  uint8_t bytes[MW_TRUSTM_AC_MAX];   /* the raw access-condition expression */
} mw_trustm_ac_t;

/* A decoded metadata TLV (tag 20). present says which fields were in it. */
typedef struct {
  unsigned present;
  uint8_t lcso;          /* C0 */
  uint16_t version;      /* C1 */
  uint16_t max_size;     /* C4 */
  uint16_t used_size;    /* C5 */
  mw_trustm_ac_t change; /* D0 */
  mw_trustm_ac_t read;   /* D1 */
  mw_trustm_ac_t execute;/* D3 */
  mw_trustm_ac_t meta_update; /* D8 */
  uint8_t algorithm;     /* E0 */
  uint8_t key_usage;     /* E1 */
  uint8_t type;          /* E8 */
  uint8_t reset_type;    /* F0 */
} mw_trustm_metadata_t;

mw_status_t mw_trustm_metadata_read(mw_trustm_t *dev, uint16_t oid, mw_trustm_metadata_t *md, uint8_t *raw,
                                    size_t raw_cap, size_t *raw_len);
/* Writes the fields named in md->present (only those; the chip merges). */
mw_status_t mw_trustm_metadata_write(mw_trustm_t *dev, uint16_t oid, const mw_trustm_metadata_t *md);
/* Writes a raw metadata TLV ("20 LL ..."). */
mw_status_t mw_trustm_metadata_write_raw(mw_trustm_t *dev, uint16_t oid, const uint8_t *tlv, size_t len);

/* Decodes/encodes "20 LL {tag len value}*". Unknown tags are skipped on decode. */
mw_status_t mw_trustm_metadata_decode(const uint8_t *tlv, size_t len, mw_trustm_metadata_t *md);
mw_status_t mw_trustm_metadata_encode(const mw_trustm_metadata_t *md, uint8_t *out, size_t cap, size_t *out_len);

/*
** Access conditions as text and back: "ALW", "NEV", "LcsO<op", "LcsO<0x07", "LcsG==op",
** "SecStaA(0x20)", "Conf(0xE140)", "Int(0xE0EF)", "Auto(0xF1D0)", "Luc(0xE120)",
** joined by "&&" and "||". Life-cycle names: cr, in, op, te (or a hex byte).
*/
mw_status_t mw_trustm_ac_format(const mw_trustm_ac_t *ac, char *out, size_t cap);
mw_status_t mw_trustm_ac_parse(const char *text, mw_trustm_ac_t *ac);
/*
** The access-condition fields in tag order (D0 change, D1 read, D3 execute, D8
** meta_update), so the CLI and Lua walk them by name: field i's name, with *bit its
** MW_TRUSTM_MD_* flag and *ac where it is in md. NULL past the last field.
*/
const char *mw_trustm_metadata_ac(mw_trustm_metadata_t *md, unsigned i, unsigned *bit, mw_trustm_ac_t **ac);
/* "creation", "initialization", "operational", "termination" or "0xNN". */
const char *mw_trustm_lcs_name(uint8_t lcs, char buf[8]);
/* "creation"/"cr", "initialization"/"in", "operational"/"op", "termination"/"te" -> 0x01..0x0F; 0 when unknown. */
uint8_t mw_trustm_lcs_parse(const char *name);
/* "BSTR", "UPCTR", "TA", "DEVCERT", "PRESSEC", "PTFBIND", "UPDATSEC", "AUTOREF" or NULL. */
const char *mw_trustm_type_name(uint8_t type);
/* The reverse of mw_trustm_type_name: the type byte, -1 when unknown. */
int mw_trustm_type_parse(const char *name);
/* Key usage names: "auth", "enc", "sign", "keyagree" (len bytes of name) -> MW_TRUSTM_USAGE_* bit, 0 when unknown. */
uint8_t mw_trustm_usage_parse(const char *name, size_t len);
/* One MW_TRUSTM_USAGE_* bit -> its name, NULL for another value. */
const char *mw_trustm_usage_name(uint8_t bit);
/* "P-256", ... or NULL. */
const char *mw_trustm_curve_name(uint8_t alg);
/* "P-256"/"prime256v1"/"secp384r1"/... -> id; 0 when unknown. */
uint8_t mw_trustm_curve_parse(const char *name);

/* ---- counters ---- */

mw_status_t mw_trustm_counter_read(mw_trustm_t *dev, uint16_t oid, uint32_t *value, uint32_t *threshold);
/* Advances a monotonic counter (SetDataObject count); chip error 0x0E at the threshold. */
mw_status_t mw_trustm_counter_add(mw_trustm_t *dev, uint16_t oid, uint8_t step);

/* ---- certificates ---- */

/*
** Reads the first certificate of a certificate object, unwrapping the TLS identity
** chain (tag C0: len(2) chain-len(3) cert-len(3) DER) that the factory E0E0 uses.
** MW_ERR_NOT_FOUND for an empty object, MW_ERR_PROTOCOL when the content is no cert.
*/
mw_status_t mw_trustm_cert_read(mw_trustm_t *dev, uint16_t oid, uint8_t *der, size_t cap, size_t *der_len);
enum { MW_TRUSTM_CERT_CHAIN_TAG = 1 }; /* store with the C0 identity-chain wrapper */
/* Erases the object and stores one DER certificate, bare or wrapped. */
mw_status_t mw_trustm_cert_write(mw_trustm_t *dev, uint16_t oid, const uint8_t *der, size_t len, unsigned flags);

/* ---- pure format helpers (no chip access) ---- */

/* Chip signature "02 Lr r 02 Ls s" -> DER ECDSA-Sig-Value, and back. */
mw_status_t mw_trustm_sig_to_der(const uint8_t *raw, size_t raw_len, uint8_t *der, size_t cap, size_t *der_len);
mw_status_t mw_trustm_sig_from_der(const uint8_t *der, size_t der_len, uint8_t *raw, size_t cap, size_t *raw_len);
/* Chip public key (BIT STRING "03 LL 00 04 X Y") + curve -> SPKI, and back. */
mw_status_t mw_trustm_pubkey_from_bitstring(mw_trustm_curve_t curve, const uint8_t *bs, size_t len,
                                            mw_trustm_pubkey_t *pub);
mw_status_t mw_trustm_pubkey_to_bitstring(const uint8_t *spki, size_t spki_len, uint8_t *curve, uint8_t *bs,
                                          size_t cap, size_t *bs_len);
/* SPKI DER -> "-----BEGIN PUBLIC KEY-----..." (NUL-terminated). */
mw_status_t mw_trustm_spki_to_pem(const uint8_t *spki, size_t len, char *pem, size_t cap);
/* Finds the first DER certificate in a certificate object's content (bare, or tag C0 chain). */
mw_status_t mw_trustm_cert_extract(const uint8_t *obj, size_t len, const uint8_t **der, size_t *der_len);
/* DER certificate -> "-----BEGIN CERTIFICATE-----..." (NUL-terminated); MW_ERR_INVALID when it is none. */
mw_status_t mw_trustm_cert_to_pem(const uint8_t *der, size_t len, char *pem, size_t cap);
/*
** The first PEM certificate in text (other text around it is skipped) -> DER.
** MW_ERR_INVALID when there is none, MW_ERR_TOO_LARGE when it does not fit cap. *more
** (may be NULL) says whether another certificate follows, also when the first is too large.
*/
mw_status_t mw_trustm_cert_from_pem(const char *text, size_t len, uint8_t *der, size_t cap, size_t *der_len,
                                    bool *more);

/* ---- TLS ---- */

/*
** An EVP_PKEY whose private operations run CalcSign on key_oid: usable as the client key
** of an OpenSSL 3.0 SSL_CTX (SSL_CTX_use_PrivateKey). pub is the public key to pair with
** (normally the client certificate's); NULL reads it via mw_trustm_pubkey_read(). The
** key holds a reference on dev, so the chip connection outlives mw_trustm_close() until
** the last such key is freed. Only EC keys are supported. The caller frees *out.
*/
mw_status_t mw_trustm_pkey(mw_trustm_t *dev, uint16_t key_oid, EVP_PKEY *pub, EVP_PKEY **out);

#endif
