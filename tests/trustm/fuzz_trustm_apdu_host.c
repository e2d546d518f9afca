/*
** libFuzzer: the host's parsers of chip data: response APDU header, TLV lists, metadata
** (decode, encode, decode again must agree), access-condition text both ways, chip
** signatures and public keys to and from DER, certificate objects (tag C0 chains), and
** PEM certificates both ways.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_trustm_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t sta, out[512], out2[512];
  const uint8_t *p, *v;
  size_t n, vl, n2;
  if (mw__trustm_apdu_parse_response(data, size, &sta, &p, &n) == MW_OK) (void)mw__trustm_tlv_find(p, n, 0x02, &v, &vl);
  (void)mw__trustm_tlv_find(data, size, 0x01, &v, &vl);

  mw_trustm_metadata_t md, md2;
  if (mw_trustm_metadata_decode(data, size, &md) == MW_OK) {
    char text[256];
    const mw_trustm_ac_t *acs[] = {&md.change, &md.read, &md.execute, &md.meta_update};
    for (int i = 0; i < 4; i++) {
      if (acs[i]->len && mw_trustm_ac_format(acs[i], text, sizeof text) == MW_OK) {
        mw_trustm_ac_t back;
        if (mw_trustm_ac_parse(text, &back) != MW_OK || back.len != acs[i]->len ||
            memcmp(back.bytes, acs[i]->bytes, back.len) != 0)
          abort(); /* formatting must round-trip */
      }
    }
    if (mw_trustm_metadata_encode(&md, out, sizeof out, &n) == MW_OK) {
      if (mw_trustm_metadata_decode(out, n, &md2) != MW_OK || md2.present != md.present) abort();
      if (mw_trustm_metadata_encode(&md2, out2, sizeof out2, &n2) != MW_OK || n2 != n || memcmp(out, out2, n)) abort();
    }
  }
  char *text = malloc(size + 1);
  if (text) {
    memcpy(text, data, size);
    text[size] = '\0';
    mw_trustm_ac_t ac;
    (void)mw_trustm_ac_parse(text, &ac);
    (void)mw_trustm_curve_parse(text);
    free(text);
  }

  if (mw_trustm_sig_to_der(data, size, out, sizeof out, &n) == MW_OK) {
    if (mw_trustm_sig_from_der(out, n, out2, sizeof out2, &n2) != MW_OK) abort();
  }
  (void)mw_trustm_sig_from_der(data, size, out, sizeof out, &n);

  mw_trustm_pubkey_t pk;
  if (size > 1 && mw_trustm_pubkey_from_bitstring((mw_trustm_curve_t)data[0], data + 1, size - 1, &pk) == MW_OK) {
    uint8_t curve;
    if (mw_trustm_pubkey_to_bitstring(pk.spki, pk.spki_len, &curve, out, sizeof out, &n) != MW_OK ||
        n != size - 1 || memcmp(out, data + 1, n) != 0)
      abort();
  }
  uint8_t curve;
  (void)mw_trustm_pubkey_to_bitstring(data, size, &curve, out, sizeof out, &n);

  const uint8_t *der;
  (void)mw_trustm_cert_extract(data, size, &der, &n);

  /* PEM text -> DER -> PEM -> DER must come back the same */
  static uint8_t cert[8192], cert2[8192];
  static char pem[16384];
  bool more;
  if (mw_trustm_cert_from_pem((const char *)data, size, cert, sizeof cert, &n, &more) == MW_OK) {
    if (mw_trustm_cert_to_pem(cert, n, pem, sizeof pem) != MW_OK ||
        mw_trustm_cert_from_pem(pem, strlen(pem), cert2, sizeof cert2, &n2, NULL) != MW_OK || n2 != n ||
        memcmp(cert, cert2, n) != 0)
      abort();
  }
  (void)mw_trustm_cert_to_pem(data, size, pem, sizeof pem);
  return 0;
}
