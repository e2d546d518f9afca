#include "mw_status.h"

static const struct { const char *name, *str; } table[MW_STATUS_COUNT] = {
  [MW_OK] = {"OK", "success"},
  [MW_ERR_INVALID] = {"EINVAL", "invalid argument"},
  [MW_ERR_NOMEM] = {"ENOMEM", "out of memory"},
  [MW_ERR_IO] = {"EIO", "input/output error"},
  [MW_ERR_NOT_CONNECTED] = {"ENOTCONN", "not connected"},
  [MW_ERR_TIMEOUT] = {"ETIMEDOUT", "timed out"},
  [MW_ERR_TLS] = {"ETLS", "TLS failure"},
  [MW_ERR_PROTOCOL] = {"EPROTO", "protocol error"},
  [MW_ERR_REFUSED] = {"EREFUSED", "refused by peer"},
  [MW_ERR_BUSY] = {"EBUSY", "resource busy"},
  [MW_ERR_NOT_FOUND] = {"ENOENT", "not found"},
  [MW_ERR_TOO_LARGE] = {"E2BIG", "too large"},
  [MW_ERR_UNSUPPORTED] = {"ENOTSUP", "not supported"},
  [MW_ERR_DEVICE] = {"EDEVICE", "secure element error"},
  [MW_ERR_CONFLICT] = {"ECONFLICT", "conflict"},
  [MW_ERR_STATE] = {"ESTATE", "invalid state"},
  [MW_ERR_NOSPACE] = {"ENOSPC", "no space left on the storage"},
};

const char *mw_status_name(mw_status_t st) {
  return (unsigned)st < MW_STATUS_COUNT && table[st].name ? table[st].name : "EUNKNOWN";
}

const char *mw_status_str(mw_status_t st) {
  return (unsigned)st < MW_STATUS_COUNT && table[st].str ? table[st].str : "unknown error";
}
