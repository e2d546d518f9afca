/*
** Status codes shared by every runtime module. Functions return mw_status_t and put
** results in out-parameters; mw_status_name() gives the stable machine-readable name
** that Lua sees as the third return value (nil, message, code).
*/
#ifndef MW_STATUS_H
#define MW_STATUS_H

typedef enum {
  MW_OK = 0,
  MW_ERR_INVALID,      /* bad argument or input */
  MW_ERR_NOMEM,
  MW_ERR_IO,           /* file or device I/O */
  MW_ERR_NOT_CONNECTED,
  MW_ERR_TIMEOUT,
  MW_ERR_TLS,
  MW_ERR_PROTOCOL,
  MW_ERR_REFUSED,      /* peer refused (CONNACK, policy) */
  MW_ERR_BUSY,         /* a bounded queue or window is full */
  MW_ERR_NOT_FOUND,
  MW_ERR_TOO_LARGE,
  MW_ERR_UNSUPPORTED,
  MW_ERR_DEVICE,       /* secure element reported an error */
  MW_ERR_CONFLICT,
  MW_ERR_STATE,        /* operation not valid in the current state */
  MW_ERR_NOSPACE,      /* storage full (disk, database) */
  MW_STATUS_COUNT
} mw_status_t;

/* "EINVAL"-style name, never NULL. */
const char *mw_status_name(mw_status_t st);
/* Short English description, never NULL. */
const char *mw_status_str(mw_status_t st);

#endif
