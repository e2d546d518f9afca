/*
** A private key kept in hardware (the Trust M, a PKCS#11 token) as an OpenSSL EVP_PKEY:
** the public half is an ordinary EC or RSA key, and the private operation calls the
** backend's sign function with its context. libssl (SSL_CTX_use_PrivateKey), libmosquitto
** above it and mw_csr_build use such a key like any other; the private key never leaves
** the hardware.
*/
#ifndef MW_HWKEY_H
#define MW_HWKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "mw_status.h"

typedef enum {
  MW_HWKEY_ECDSA,     /* in: the digest, already cut to the key size; out: see mw_hwkey_ops_t.ec_der */
  MW_HWKEY_RSA_PKCS1, /* in: a DigestInfo; out: its PKCS#1 v1.5 signature (the signer pads) */
  MW_HWKEY_RSA_RAW,   /* in: a block OpenSSL has padded already (PSS); out: the bare private operation */
} mw_hwkey_op_t;

/* r||s of P-521 is 132 bytes, its DER ECDSA-Sig-Value at most 141. */
#define MW_HWKEY_EC_SIG_MAX 144

typedef struct {
  /*
  ** Signs in[0..in_len) with the key behind ctx. On entry *out_len is what out may take:
  ** the modulus size for RSA; for ECDSA as r||s twice the key size, as DER
  ** MW_HWKEY_EC_SIG_MAX. On return it is the signature's length. Returns false on
  ** failure, after logging why (only the signer knows).
  */
  bool (*sign)(void *ctx, mw_hwkey_op_t op, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len);
  /* Releases ctx when the key is freed. */
  void (*free)(void *ctx);
  /* ECDSA signatures come as a DER ECDSA-Sig-Value; otherwise as r||s (PKCS#11 CKM_ECDSA). */
  bool ec_der;
} mw_hwkey_ops_t;

/*
** An EVP_PKEY with pub's public key (EC or RSA) whose private operation calls
** ops->sign(ctx, ...). ctx belongs to the key from this call on: ops->free(ctx) runs when
** the last reference to the key goes, or before this returns a failure. ops must outlive
** every key made with it (a static). MW_ERR_UNSUPPORTED when pub is neither an EC nor an
** RSA public key OpenSSL can use, MW_ERR_NOMEM. The caller frees *out.
*/
mw_status_t mw_hwkey_new(EVP_PKEY *pub, const mw_hwkey_ops_t *ops, void *ctx, EVP_PKEY **out);

#endif
