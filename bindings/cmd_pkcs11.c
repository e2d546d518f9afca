/*
** moonwire pkcs11 ...: keys in a PKCS#11 token from the command line, so a device can
** get its TLS identity without the key ever existing outside the token: generate the key
** pair inside it, print a CSR signed by it, check what the token says about the key.
*/
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_csr.h"
#include "mw_log.h"
#include "mw_pkcs11.h"

const char mw_usage_pkcs11[] =
    "Usage: moonwire pkcs11 [--module PATH] COMMAND [URI] [OPTIONS]\n\n"
    "URI is an RFC 7512 PKCS#11 URI naming a token and a key, e.g.\n"
    "  'pkcs11:token=device;object=tls?pin-source=/run/device.pin'\n"
    "(pin-value=1234 works too; PINs are never printed).\n\n"
    "Commands:\n"
    "  tokens                  the module's slots and tokens\n"
    "  objects URI             the objects in the token, with their URIs\n"
    "  keygen URI [--curve P-256|P-384|P-521 | --rsa BITS]\n"
    "                          generate a key pair inside the token (sensitive, not\n"
    "                          extractable); prints the public key as PEM\n"
    "  pubkey URI              print the key's public key as PEM\n"
    "  info URI                what the token reports about the private key\n"
    "  csr URI --cn NAME ...   print a certificate request (PEM) signed inside the token\n" MW_CLI_SUBJECT_HELP
    "\n--module defaults to module-path= in the URI, else " MW_P11_DEFAULT_MODULE ".\n";

static int print_pem(EVP_PKEY *pub) {
  if (!PEM_write_PUBKEY(stdout, pub)) return mw_cli_fail("cannot encode the public key");
  return MW_EXIT_OK;
}

static const char *yn(bool b) { return b ? "yes" : "no"; }

static void print_info(FILE *f, const mw_p11_keyinfo_t *ki) {
  fprintf(f, "uri:               %s\n", ki->uri);
  if (ki->type == MW_P11_KEY_EC) fprintf(f, "type:              EC %s\n", *ki->curve ? ki->curve : "(unknown curve)");
  else fprintf(f, "type:              RSA %u bits\n", ki->bits);
  fprintf(f, "sensitive:         %s\n", yn(ki->sensitive));
  fprintf(f, "extractable:       %s\n", yn(ki->extractable));
  fprintf(f, "never extractable: %s\n", yn(ki->never_extractable));
  fprintf(f, "always sensitive:  %s\n", yn(ki->always_sensitive));
  fprintf(f, "made in the token: %s\n", yn(ki->local));
  fprintf(f, "may sign:          %s\n", yn(ki->can_sign));
  fprintf(f, "private value:     %s\n", ki->value_readable ? "READABLE (the key can leave the token)" : "not readable");
}

static void on_token(void *ud, const mw_p11_token_info_t *ti) {
  (void)ud;
  if (!ti->initialized) {
    printf("slot %lu: (token not initialised)\n", ti->slot_id);
    return;
  }
  printf("slot %lu: token '%s' (%s, %s, serial %s)%s%s\n", ti->slot_id, ti->label, ti->manufacturer, ti->model,
         ti->serial, ti->login_required ? ", login required" : "", ti->pin_locked ? ", PIN LOCKED" : "");
}

static void on_object(void *ud, mw_p11_type_t type, const char *label, const uint8_t *id, size_t id_len,
                      const char *uri) {
  (void)ud, (void)label, (void)id, (void)id_len;
  printf("%-8s %s\n", mw_p11_type_name(type), uri);
}

int mw_cmd_pkcs11(int argc, char **argv) {
  const char *module = NULL, *curve = NULL, *rsa = NULL;
  const char *pos[2] = {NULL, NULL};
  int npos = 0;
  mw_cli_subject_t subj;
  memset(&subj, 0, sizeof subj);
  const mw_cli_opt_t opts[] = {{"--module", NULL, &module}, {"--curve", NULL, &curve}, {"--rsa", NULL, &rsa}, {0}};
  for (int i = 1; i < argc; i++) {
    int r = mw_cli_subject_opt("pkcs11", argc, argv, &i, &subj);
    if (r == 0) r = mw_cli_value_opt("pkcs11", argc, argv, &i, opts);
    if (r == 0) r = mw_cli_positional("pkcs11", argv[i], pos, 2, &npos);
    if (r != 1) return r;
  }
  const char *cmd = pos[0], *uri = pos[1];
  if (!cmd) return mw_cli_usage_error("pkcs11", "no command given");
  char err[1024];
  if (!strcmp(cmd, "tokens")) {
    if (mw_p11_list_tokens(module, on_token, NULL, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);
    return MW_EXIT_OK;
  }
  static const char *const with_uri[] = {"objects", "keygen", "pubkey", "info", "csr", NULL};
  int known = 0;
  for (int k = 0; with_uri[k]; k++) known |= !strcmp(cmd, with_uri[k]);
  if (!known) return mw_cli_usage_error("pkcs11", "unknown pkcs11 command '%s'", cmd);
  if (!uri) return mw_cli_usage_error("pkcs11", "%s needs a pkcs11: URI", cmd);
  unsigned long bits = 0;
  if (rsa) {
    char *end;
    bits = strtoul(rsa, &end, 10);
    if (*end || bits < 2048 || bits > 4096) return mw_cli_usage_error("pkcs11", "--rsa needs a size of 2048..4096 bits");
    if (curve) return mw_cli_usage_error("pkcs11", "give --curve or --rsa, not both");
  }
  if ((curve || rsa) && strcmp(cmd, "keygen")) return mw_cli_usage_error("pkcs11", "--curve/--rsa are for keygen");
  if (subj.subj.cn && strcmp(cmd, "csr")) return mw_cli_usage_error("pkcs11", "--cn and friends are for csr");
  if (!strcmp(cmd, "csr") && !subj.subj.cn) return mw_cli_usage_error("pkcs11", "csr needs --cn NAME");

  mw_p11_open_opts_t o = {.module = module, .rw = !strcmp(cmd, "keygen")};
  mw_p11_t *t = NULL;
  if (mw_p11_open(uri, &o, &t, err, sizeof err) != MW_OK) return mw_cli_fail("%s", err);
  int rc = MW_EXIT_FAILURE;
  EVP_PKEY *pub = NULL, *key = NULL;
  mw_p11_keyinfo_t ki;
  if (!strcmp(cmd, "objects")) {
    if (mw_p11_list_objects(t, on_object, NULL, err, sizeof err) == MW_OK) rc = MW_EXIT_OK;
    else rc = mw_cli_fail("%s", err);
  } else if (!strcmp(cmd, "keygen")) {
    mw_p11_keygen_t g = {.curve = curve ? curve : "P-256", .rsa_bits = (unsigned)bits};
    if (mw_p11_keygen(t, &g, &pub, &ki, err, sizeof err) != MW_OK) {
      rc = mw_cli_fail("keygen: %s", err);
    } else {
      fprintf(stderr, "key pair generated in token '%s':\n", mw_p11_token_label(t));
      print_info(stderr, &ki);
      rc = print_pem(pub);
    }
  } else if (!strcmp(cmd, "pubkey")) {
    rc = mw_p11_pubkey(t, &pub, err, sizeof err) == MW_OK ? print_pem(pub) : mw_cli_fail("pubkey: %s", err);
  } else if (!strcmp(cmd, "info")) {
    if (mw_p11_key_info(t, &ki, err, sizeof err) == MW_OK) {
      print_info(stdout, &ki);
      rc = MW_EXIT_OK;
    } else {
      rc = mw_cli_fail("info: %s", err);
    }
  } else { /* csr */
    if (mw_p11_pkey(t, NULL, &key, err, sizeof err) != MW_OK) rc = mw_cli_fail("csr: %s", err);
    else rc = mw_cli_print_csr("pkcs11", key, &subj);
  }
  EVP_PKEY_free(pub);
  EVP_PKEY_free(key);
  mw_p11_close(t);
  return rc;
}
