/*
** Pure helpers without a chip: metadata TLV, access-condition text, signature and
** public-key conversions, certificate objects and PEM, names, and configuration checks.
*/
#define MW_TEST_IMPLEMENTATION
#include "mw_test.h"

#include <stdlib.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mw_log.h"
#include "trustm_test_util.h"

static void metadata_codec(void) {
  uint8_t tlv[64], out[64];
  size_t n = tu_hex("20 17 C0 01 01 C4 02 06 C0 C5 02 01 DC D0 01 FF D1 01 00 D3 01 00 E8 01 12", tlv, sizeof tlv), on;
  mw_trustm_metadata_t md;
  CHECK_INT(mw_trustm_metadata_decode(tlv, n, &md), MW_OK);
  CHECK_INT(md.lcso, 0x01);
  CHECK_INT(md.max_size, 1728);
  CHECK_INT(md.used_size, 476);
  CHECK_INT(md.type, 0x12);
  CHECK_STR(mw_trustm_type_name(md.type), "DEVCERT");
  CHECK_INT(md.present, MW_TRUSTM_MD_LCSO | MW_TRUSTM_MD_MAX_SIZE | MW_TRUSTM_MD_USED_SIZE | MW_TRUSTM_MD_CHANGE |
                            MW_TRUSTM_MD_READ | MW_TRUSTM_MD_EXECUTE | MW_TRUSTM_MD_TYPE);
  CHECK_INT(mw_trustm_metadata_encode(&md, out, sizeof out, &on), MW_OK);
  CHECK_INT(on, n);
  CHECK_MEM(out, tlv, n); /* this example happens to be in canonical order */
  n = tu_hex("20 11 C0 01 03 C4 01 8C C5 01 0A D1 01 00 D0 03 E1 FC 07", tlv, sizeof tlv);
  CHECK_INT(mw_trustm_metadata_decode(tlv, n, &md), MW_OK);
  CHECK_INT(md.max_size, 140);
  CHECK_INT(md.change.len, 3);
  /* malformed */
  CHECK_INT(mw_trustm_metadata_decode(tlv, n - 1, &md), MW_ERR_PROTOCOL);
  n = tu_hex("20 03 C0 02 01", tlv, sizeof tlv);
  CHECK_INT(mw_trustm_metadata_decode(tlv, n, &md), MW_ERR_PROTOCOL);
  n = tu_hex("20 04 C0 02 01 02", tlv, sizeof tlv);
  CHECK_INT(mw_trustm_metadata_decode(tlv, n, &md), MW_ERR_PROTOCOL);
  n = tu_hex("20 03 99 01 01", tlv, sizeof tlv); /* unknown tags are skipped */
  CHECK_INT(mw_trustm_metadata_decode(tlv, n, &md), MW_OK);
  CHECK_INT(md.present, 0);
  char b[8];
  CHECK_STR(mw_trustm_lcs_name(0x07, b), "operational");
  CHECK_STR(mw_trustm_lcs_name(0x05, b), "0x05");
}

static void access_conditions(void) {
  const struct { const char *text, *hex, *canon; } t[] = {
      {"ALW", "00", "ALW"},
      {"NEV", "FF", "NEV"},
      {"LcsO<op", "E1 FC 07", "LcsO<op"},
      {"lcso < 0x07", "E1 FC 07", "LcsO<op"},
      {"LcsG==in", "70 FA 03", "LcsG==in"},
      {"LcsA>cr", "E0 FB 01", "LcsA>cr"},
      {"Conf(0xE140)", "20 E1 40", "Conf(0xE140)"},
      {"Int(0xE0EF) && LcsO<op", "21 E0 EF FD E1 FC 07", "Int(0xE0EF) && LcsO<op"},
      {"LcsO<op||Conf(0xE140)", "E1 FC 07 FE 20 E1 40", "LcsO<op || Conf(0xE140)"},
      {"SecStaA(0x20)", "90 20", "SecStaA(0x20)"},
      {"Auto(0xF1D0)", "23 F1 D0", "Auto(0xF1D0)"},
      {"Luc(0xE120)", "40 E1 20", "Luc(0xE120)"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    mw_trustm_ac_t ac;
    uint8_t want[16];
    size_t wl = tu_hex(t[i].hex, want, sizeof want);
    CHECK_INT(mw_trustm_ac_parse(t[i].text, &ac), MW_OK);
    CHECK_INT(ac.len, wl);
    CHECK_MEM(ac.bytes, want, wl);
    char text[64];
    CHECK_INT(mw_trustm_ac_format(&ac, text, sizeof text), MW_OK);
    CHECK_STR(text, t[i].canon);
  }
  const char *bad[] = {"", "ALW &&", "LcsO", "LcsO<", "Conf(", "Conf(0x10000)", "XYZ", "ALW NEV", "LcsO!op"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    mw_trustm_ac_t ac;
    CHECK(mw_trustm_ac_parse(bad[i], &ac) != MW_OK);
  }
  mw_trustm_ac_t junk = {.len = 2, .bytes = {0xE1, 0x01}};
  char text[64];
  CHECK_INT(mw_trustm_ac_format(&junk, text, sizeof text), MW_ERR_PROTOCOL);
  /* found by fuzz_trustm_apdu_host: two terms without an operator, a trailing operator */
  mw_trustm_ac_t nop = {.len = 7, .bytes = {0xE1, 0xFC, 0x07, 0x20, 0xE1, 0x40, 0xFE}};
  CHECK_INT(mw_trustm_ac_format(&nop, text, sizeof text), MW_ERR_PROTOCOL);
  mw_trustm_ac_t trail = {.len = 2, .bytes = {0x00, 0xFD}};
  CHECK_INT(mw_trustm_ac_format(&trail, text, sizeof text), MW_ERR_PROTOCOL);
}

static void signatures(void) {
  uint8_t raw[80], der[80], back[80];
  size_t n, dn, bn;
  /* r with the top bit set (padded), s with a non-minimal leading zero as some firmware sent */
  n = tu_hex("02 21 00 80 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14 15 16 17 18 19 1A 1B 1C 1D 1E 1F"
             " 02 21 00 7F 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14 15 16 17 18 19 1A 1B 1C 1D 1E 1F",
             raw, sizeof raw);
  CHECK_INT(mw_trustm_sig_to_der(raw, n, der, sizeof der, &dn), MW_OK);
  CHECK_INT(dn, 2 + 35 + 34);
  CHECK_INT(der[0], 0x30);
  CHECK_INT(der[1], 69);
  const unsigned char *q = der;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &q, (long)dn);
  CHECK(sig != NULL);
  ECDSA_SIG_free(sig);
  CHECK_INT(mw_trustm_sig_from_der(der, dn, back, sizeof back, &bn), MW_OK);
  CHECK_INT(bn, 69);
  CHECK_MEM(back, raw, 35);
  /* malformed */
  CHECK_INT(mw_trustm_sig_to_der(raw, n - 1, der, sizeof der, &dn), MW_ERR_PROTOCOL);
  CHECK_INT(mw_trustm_sig_to_der((const uint8_t *)"\x02\x01\x80\x02\x01\x01", 6, der, sizeof der, &dn),
            MW_ERR_PROTOCOL); /* negative */
  CHECK_INT(mw_trustm_sig_from_der(raw, n, back, sizeof back, &bn), MW_ERR_INVALID);
  CHECK_INT(mw_trustm_sig_to_der(raw, n, der, 10, &dn), MW_ERR_TOO_LARGE);
}

static void public_keys(void) {
  const char *curves[] = {"P-256", "P-384", "P-521", "brainpoolP256r1", "brainpoolP384r1", "brainpoolP512r1"};
  for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++) {
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curves[i]);
    unsigned char *spki = NULL;
    int sl = i2d_PUBKEY(k, &spki);
    uint8_t bs[200], curve;
    size_t bl;
    CHECK_INT(mw_trustm_pubkey_to_bitstring(spki, (size_t)sl, &curve, bs, sizeof bs, &bl), MW_OK);
    CHECK_INT(curve, mw_trustm_curve_parse(curves[i]));
    CHECK_INT(bs[0], 0x03);
    if (curve == MW_TRUSTM_NIST_P521) CHECK_INT(bs[1], 0x81); /* long-form length */
    mw_trustm_pubkey_t pk;
    CHECK_INT(mw_trustm_pubkey_from_bitstring((mw_trustm_curve_t)curve, bs, bl, &pk), MW_OK);
    CHECK_INT(pk.spki_len, (size_t)sl);
    CHECK_MEM(pk.spki, spki, (size_t)sl); /* byte-identical to OpenSSL's SPKI */
    bs[bl - 1] ^= 1;                      /* off the curve */
    CHECK_INT(mw_trustm_pubkey_from_bitstring((mw_trustm_curve_t)curve, bs, bl, &pk), MW_ERR_PROTOCOL);
    OPENSSL_free(spki);
    EVP_PKEY_free(k);
  }
  /* the P-256 prefix of the reference */
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  unsigned char *spki = NULL;
  int sl = i2d_PUBKEY(k, &spki);
  uint8_t pre[32];
  size_t pl = tu_hex("30 59 30 13 06 07 2A 86 48 CE 3D 02 01 06 08 2A 86 48 CE 3D 03 01 07 03 42 00 04", pre, sizeof pre);
  CHECK_INT(sl, 91);
  CHECK_MEM(spki, pre, pl);
  char pem[300];
  CHECK_INT(mw_trustm_spki_to_pem(spki, (size_t)sl, pem, sizeof pem), MW_OK);
  CHECK(strstr(pem, "END PUBLIC KEY") != NULL);
  CHECK_INT(mw_trustm_spki_to_pem(spki, (size_t)sl, pem, 20), MW_ERR_TOO_LARGE);
  OPENSSL_free(spki);
  EVP_PKEY_free(k);
  CHECK_INT(mw_trustm_curve_parse("secp256r1"), 0x03);
  CHECK_INT(mw_trustm_curve_parse("nope"), 0);
  CHECK_STR(mw_trustm_curve_name(0x04), "P-384");
}

static void cert_objects(void) {
  uint8_t obj[64];
  const uint8_t *der;
  size_t n, dl;
  n = tu_hex("30 03 02 01 05", obj, sizeof obj);
  CHECK_INT(mw_trustm_cert_extract(obj, n, &der, &dl), MW_OK);
  CHECK_INT(dl, 5);
  n = tu_hex("C0 00 0B 00 00 08 00 00 05 30 03 02 01 05", obj, sizeof obj);
  CHECK_INT(mw_trustm_cert_extract(obj, n, &der, &dl), MW_OK);
  CHECK(der == obj + 9);
  CHECK_INT(dl, 5);
  n = tu_hex("C0 00 0B 00 00 08 00 00 06 30 03 02 01 05", obj, sizeof obj); /* cert length wrong */
  CHECK_INT(mw_trustm_cert_extract(obj, n, &der, &dl), MW_ERR_PROTOCOL);
  n = tu_hex("C0 00 20 00 00 08 00 00 05 30 03 02 01 05", obj, sizeof obj); /* outer length too long */
  CHECK_INT(mw_trustm_cert_extract(obj, n, &der, &dl), MW_ERR_PROTOCOL);
  n = tu_hex("00 00 00 00", obj, sizeof obj);
  CHECK_INT(mw_trustm_cert_extract(obj, n, &der, &dl), MW_ERR_NOT_FOUND);
  n = tu_hex("C2 00 00", obj, sizeof obj);
  CHECK_INT(mw_trustm_cert_extract(obj, n, &der, &dl), MW_ERR_PROTOCOL);
}

/* A self-signed certificate as PEM, and its DER. */
static char *self_signed_pem(unsigned char **der, int *der_len) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  X509_set_version(x, 2);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"c", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_set_pubkey(x, k);
  X509_sign(x, k, EVP_sha256());
  *der = NULL;
  *der_len = i2d_X509(x, der);
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char *data, *pem;
  long n = BIO_get_mem_data(b, &data);
  pem = malloc((size_t)n + 1);
  memcpy(pem, data, (size_t)n);
  pem[n] = '\0';
  BIO_free(b);
  X509_free(x);
  EVP_PKEY_free(k);
  return pem;
}

static void cert_pem(void) {
  unsigned char *der;
  int dl;
  char *pem = self_signed_pem(&der, &dl);
  char text[4096], back[2048];
  uint8_t out[2048];
  size_t n;
  bool more = true;
  /* text before the PEM block (openssl x509 -text) is skipped */
  snprintf(text, sizeof text, "Certificate:\n    Data: ...\n%s", pem);
  CHECK_INT(mw_trustm_cert_from_pem(text, strlen(text), out, sizeof out, &n, &more), MW_OK);
  CHECK(!more);
  CHECK_INT(n, dl);
  CHECK_MEM(out, der, n);
  CHECK_INT(mw_trustm_cert_to_pem(out, n, back, sizeof back), MW_OK);
  CHECK_STR(back, pem);
  CHECK_INT(mw_trustm_cert_to_pem(out, n, back, 20), MW_ERR_TOO_LARGE);
  CHECK_INT(mw_trustm_cert_to_pem((const uint8_t *)"\x30\x03\x02\x01\x05", 5, back, sizeof back), MW_ERR_INVALID);
  /* a chain: the first certificate, and word of the next */
  snprintf(text, sizeof text, "%s%s", pem, pem);
  CHECK_INT(mw_trustm_cert_from_pem(text, strlen(text), out, sizeof out, &n, &more), MW_OK);
  CHECK(more);
  CHECK_INT(mw_trustm_cert_from_pem(text, strlen(text), out, sizeof out, &n, NULL), MW_OK);
  CHECK_INT(mw_trustm_cert_from_pem(text, strlen(text), out, 10, &n, &more), MW_ERR_TOO_LARGE);
  CHECK(more);
  CHECK_INT(mw_trustm_cert_from_pem("junk", 4, out, sizeof out, &n, &more), MW_ERR_INVALID);
  CHECK(!more);
  CHECK_INT(mw_trustm_cert_from_pem(pem, 40, out, sizeof out, &n, NULL), MW_ERR_INVALID); /* cut short */
  free(pem);
  OPENSSL_free(der);
}

static void names_and_config(void) {
  CHECK_INT(mw_trustm_lcs_parse("op"), 0x07);
  CHECK_INT(mw_trustm_lcs_parse("termination"), 0x0F);
  CHECK_INT(mw_trustm_lcs_parse("operation"), 0);
  CHECK_INT(mw_trustm_lcs_parse(NULL), 0);
  CHECK_INT(mw_trustm_type_parse("DEVCERT"), 0x12);
  CHECK_INT(mw_trustm_type_parse("BSTR"), 0x00);
  CHECK_INT(mw_trustm_type_parse("devcert"), -1);
  CHECK_INT(mw_trustm_usage_parse("sign,auth", 4), MW_TRUSTM_USAGE_SIGN);
  CHECK_INT(mw_trustm_usage_parse("keyagreement", 12), 0);
  CHECK_STR(mw_trustm_usage_name(MW_TRUSTM_USAGE_KEYAGREE), "keyagree");
  CHECK(mw_trustm_usage_name(0x04) == NULL);
  mw_trustm_metadata_t md;
  unsigned bit;
  mw_trustm_ac_t *ac;
  CHECK_STR(mw_trustm_metadata_ac(&md, 0, &bit, &ac), "change");
  CHECK(bit == MW_TRUSTM_MD_CHANGE && ac == &md.change);
  CHECK_STR(mw_trustm_metadata_ac(&md, 3, &bit, &ac), "meta_update");
  CHECK(bit == MW_TRUSTM_MD_META_UPDATE && ac == &md.meta_update);
  CHECK(mw_trustm_metadata_ac(&md, 4, &bit, &ac) == NULL);

  CHECK_STR(mw_trustm_error_name(0x07), "access condition not satisfied");
  CHECK_STR(mw_trustm_error_name(0x08), "data object boundary exceeded");
  CHECK_STR(mw_trustm_error_name(0x24), "unsupported extension/identifier");
  CHECK_STR(mw_trustm_error_name(0x77), "unknown error");
  mw_trustm_t *d = NULL;
  mw_trustm_config_t c = {.device = "/dev/i2c-does-not-exist"};
  CHECK_INT(mw_trustm_open(&c, &d), MW_ERR_NOT_FOUND);
  CHECK(d == NULL);
  mw_trustm_config_t bad = {.frame_size = 8};
  CHECK_INT(mw_trustm_open(&bad, &d), MW_ERR_INVALID);
  mw_trustm_config_t bad2 = {.address = 0x90};
  CHECK_INT(mw_trustm_open(&bad2, &d), MW_ERR_INVALID);
  CHECK_INT(mw_trustm_open(NULL, &d), MW_ERR_INVALID);
  mw_trustm_transport_t t;
  CHECK_INT(mw_trustm_transport_open_linux("/dev/null", 0x30, &t), MW_ERR_IO); /* not an I2C adapter */
  mw_trustm_close(NULL);
  CHECK_STR(mw_trustm_last_error(NULL), "no device");
}

static const mw_test_case_t cases[] = {MW_TEST(metadata_codec), MW_TEST(access_conditions), MW_TEST(signatures),
                                       MW_TEST(public_keys),    MW_TEST(cert_objects),      MW_TEST(cert_pem),
                                       MW_TEST(names_and_config)};

int main(int argc, char **argv) {
  mw_log_set_level(getenv("TRUSTM_DEBUG") ? MW_LOG_DEBUG : MW_LOG_ERROR + 1);
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
