#define MW_TEST_IMPLEMENTATION
#include <string.h>

#include "mw_keyref.h"
#include "mw_test.h"

static void test_file_paths(void) {
  mw_keyref_t r;
  char why[200];
  CHECK_INT(mw_keyref_parse("certs/dev/car-01.key", &r, why, sizeof why), MW_OK);
  CHECK_INT(r.kind, MW_KEY_FILE);
  CHECK_STR(r.text, "certs/dev/car-01.key");
  CHECK_INT(mw_keyref_parse("file:/etc/k.pem", &r, why, sizeof why), MW_OK);
  CHECK_STR(r.text, "/etc/k.pem");
  CHECK_INT(mw_keyref_parse("", &r, why, sizeof why), MW_ERR_INVALID);
}

static void test_trustm(void) {
  mw_keyref_t r;
  char why[200];
  CHECK_INT(mw_keyref_parse("trustm:0xE0F1", &r, why, sizeof why), MW_OK);
  CHECK_INT(r.kind, MW_KEY_TRUSTM);
  CHECK_INT(r.oid, 0xE0F1);
  CHECK_INT(mw_keyref_parse("0xe0f2:^", &r, why, sizeof why), MW_OK);
  CHECK_INT(r.kind, MW_KEY_TRUSTM);
  CHECK_INT(r.oid, 0xE0F2);
  CHECK_INT(mw_keyref_parse("trustm:0xE0E0", &r, why, sizeof why), MW_ERR_INVALID);
  CHECK(strstr(why, "not a Trust M key object") != NULL);
  CHECK_INT(mw_keyref_parse("trustm:E0F1", &r, why, sizeof why), MW_ERR_INVALID);
  CHECK_INT(mw_keyref_parse("trustm:0xZZZZ", &r, why, sizeof why), MW_ERR_INVALID);
}

static void test_pkcs11(void) {
  mw_keyref_t r;
  char why[200];
  CHECK_INT(mw_keyref_parse("pkcs11:token=dev;object=car-01;type=private", &r, why, sizeof why), MW_OK);
  CHECK_INT(r.kind, MW_KEY_PKCS11);
  CHECK_INT(mw_keyref_parse("pkcs11:token=dev", &r, why, sizeof why), MW_ERR_INVALID);
  CHECK(strstr(why, "object=") != NULL);
}

int main(int argc, char **argv) {
  static const mw_test_case_t cases[] = {MW_TEST(test_file_paths), MW_TEST(test_trustm), MW_TEST(test_pkcs11)};
  return mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
