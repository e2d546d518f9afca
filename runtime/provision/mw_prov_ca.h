/*
** The certificate authority side of provisioning: issuing device certificates from a CSR
** or a public key with a signing CA (the development intermediate of certs/mkpki, or a
** factory's own), certificate ids as AWS IoT computes them, and certificate facts.
**
** Issued certificates carry what AWS IoT device certificates carry: a random 128-bit
** serial, basicConstraints CA:FALSE (critical), keyUsage digitalSignature (critical),
** extendedKeyUsage clientAuth, subject and authority key identifiers; SHA-256 signature.
** The validity never outlasts the CA's own.
*/
#ifndef MW_PROV_CA_H
#define MW_PROV_CA_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mw_status.h"

#define MW_PROV_CERT_ID_LEN 64 /* hex SHA-256 */
#define MW_PROV_CN_MAX 64      /* X.520 upper bound of commonName */

typedef struct mw_prov_ca mw_prov_ca_t;

/*
** Loads a signing CA. where is a directory made by certs/mkpki (intermediate-ca.crt and
** intermediate-ca.key in it) or a stem: STEM.crt and STEM.key. The key must match the
** certificate, and the certificate must be a CA (basicConstraints CA:TRUE).
*/
mw_status_t mw_prov_ca_load(const char *where, mw_prov_ca_t **out, char *err, size_t errlen);
void mw_prov_ca_free(mw_prov_ca_t *ca); /* NULL is fine */
/* The CA's subject as one line ("O=Moonwire Dev, CN=Moonwire Dev Intermediate CA"). */
const char *mw_prov_ca_name(const mw_prov_ca_t *ca);
/* The CA certificate, PEM (borrowed). */
const char *mw_prov_ca_pem(const mw_prov_ca_t *ca);

typedef struct {
  const char *cn;   /* commonName of the certificate; NULL keeps the request's */
  int days;         /* validity in days (> 0); clamped to the CA's notAfter */
  int64_t now;      /* epoch seconds; notBefore is a minute earlier (clock skew) */
} mw_prov_issue_t;

typedef struct {
  char *pem;                         /* malloc'd, NUL-terminated */
  char id[MW_PROV_CERT_ID_LEN + 1];  /* certificate id: SHA-256 of the DER, lowercase hex */
  char serial[33];                   /* hex */
  int64_t not_before, not_after;
} mw_prov_cert_t;

void mw_prov_cert_free(mw_prov_cert_t *c);

/*
** Issues a certificate for a PEM CSR (verified first with mw_csr_verify). The subject is
** the request's, with the commonName replaced by opt->cn when given. Extensions in the
** request are ignored. Errors: MW_ERR_INVALID / MW_ERR_TOO_LARGE (bad request; err says
** why, in words a requester can act on), MW_ERR_NOMEM, MW_ERR_IO (signing failed).
*/
mw_status_t mw_prov_ca_issue_csr(mw_prov_ca_t *ca, const char *csr_pem, size_t len, const mw_prov_issue_t *opt,
                                 mw_prov_cert_t *out, char *err, size_t errlen);

/* Issues a certificate for a public key with subject CN=opt->cn (required). */
mw_status_t mw_prov_ca_issue_key(mw_prov_ca_t *ca, EVP_PKEY *pub, const mw_prov_issue_t *opt, mw_prov_cert_t *out,
                                 char *err, size_t errlen);

/*
** True verification of a certificate presented for registration (JITP): it must be
** signed by this CA and valid at now. err says what is wrong.
*/
mw_status_t mw_prov_ca_verify(const mw_prov_ca_t *ca, const char *pem, size_t len, int64_t now, char *err,
                              size_t errlen);

/* A new P-256 key pair; *pem is the PKCS#8 PEM private key (malloc'd; the caller wipes and frees it). */
mw_status_t mw_prov_keygen(EVP_PKEY **key, char **pem);

/* What the provisioning code reads from a certificate. Empty strings for absent fields. */
typedef struct {
  char id[MW_PROV_CERT_ID_LEN + 1];
  char cn[MW_PROV_CN_MAX + 1];
  char country[3], organization[65], organizational_unit[65], state[129], locality[129];
  char dn_qualifier[65], serial_number[65]; /* subject attributes (JITP parameters) */
  char serial[65];                          /* the certificate's serial number, hex */
  char subject[512], issuer[512];
  int64_t not_before, not_after;
} mw_prov_cert_info_t;

/*
** Parses the first certificate of a PEM text (at most 64 KiB). MW_ERR_INVALID when there
** is none.
*/
mw_status_t mw_prov_cert_info(const char *pem, size_t len, mw_prov_cert_info_t *info, char *err, size_t errlen);

/* The certificate id of a PEM certificate. */
mw_status_t mw_prov_cert_id(const char *pem, size_t len, char id[MW_PROV_CERT_ID_LEN + 1]);

/* The PEM public key of a PEM certificate (malloc'd). */
mw_status_t mw_prov_cert_pubkey_pem(const char *pem, size_t len, char **out);

#endif
