/*
** Names of the chip's error codes ([SRM] Table 17; the 0x2x handshake and trust-anchor
** codes come from the vendor tools). These are what users see, so they follow the
** manual's wording.
*/
#include "mw_trustm.h"

const char *mw_trustm_error_name(uint8_t code) {
  switch (code) {
  case 0x00: return "no error";
  case 0x01: return "invalid OID";
  case 0x02: return "invalid password";
  case 0x03: return "invalid param field";
  case 0x04: return "invalid length field";
  case 0x05: return "invalid parameter in data field";
  case 0x06: return "internal process error";
  case 0x07: return "access condition not satisfied";
  case 0x08: return "data object boundary exceeded";
  case 0x09: return "metadata truncation error";
  case 0x0A: return "invalid command field";
  case 0x0B: return "command out of sequence";
  case 0x0C: return "command not available";
  case 0x0D: return "insufficient buffer/memory";
  case 0x0E: return "counter threshold limit exceeded";
  case 0x0F: return "invalid manifest";
  case 0x10: return "invalid/wrong payload version";
  case 0x11: return "invalid metadata of the key/data object";
  case 0x21: return "invalid handshake message";
  case 0x22: return "version mismatch";
  case 0x23: return "insufficient/unsupported cipher suite";
  case 0x24: return "unsupported extension/identifier";
  case 0x25: return "unsupported parameters";
  case 0x26: return "invalid trust anchor";
  case 0x27: return "trust anchor expired";
  case 0x28: return "unsupported trust anchor";
  case 0x29: return "invalid certificate format";
  case 0x2A: return "unsupported certificate/algorithm";
  case 0x2B: return "certificate expired";
  case 0x2C: return "signature verification failure";
  case 0x2D: return "integrity validation failure";
  case 0x2E: return "decryption failure";
  case 0x2F: return "authorization failure";
  }
  return "unknown error";
}
