/*
** The part of the PKCS#11 v2.40 (OASIS "Cryptographic Token Interface Base
** Specification", public standard) ABI that Moonwire uses: base types, the structures
** we pass to or get from a module, the constants we name, and the complete
** CK_FUNCTION_LIST (its layout is the ABI, so every slot is declared, in the standard's
** order, even those we never call).
**
** Why our own: none of the Debian packages Moonwire may depend on ships a PKCS#11
** header (p11-kit-dev and opensc are not among them), and the standard is public. We
** only dlopen() a module and call through its function list, so this is all we need.
**
** Linux conventions (as pkcs11.h on Linux and every module built for it): CK_ULONG is
** unsigned long, structures use the platform's normal alignment (no packing), and
** functions use the default C calling convention.
*/
#ifndef MW_P11_ABI_H
#define MW_P11_ABI_H

typedef unsigned char CK_BYTE;
typedef unsigned char CK_CHAR;
typedef unsigned char CK_UTF8CHAR;
typedef unsigned char CK_BBOOL;
typedef unsigned long CK_ULONG;
typedef long CK_LONG;
typedef CK_ULONG CK_FLAGS;
typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_SLOT_ID;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef CK_ULONG CK_OBJECT_HANDLE;
typedef CK_ULONG CK_OBJECT_CLASS;
typedef CK_ULONG CK_KEY_TYPE;
typedef CK_ULONG CK_CERTIFICATE_TYPE;
typedef CK_ULONG CK_ATTRIBUTE_TYPE;
typedef CK_ULONG CK_MECHANISM_TYPE;
typedef CK_ULONG CK_USER_TYPE;
typedef CK_ULONG CK_STATE;
typedef CK_ULONG CK_NOTIFICATION;
typedef CK_ULONG CK_RSA_PKCS_MGF_TYPE;
typedef void *CK_VOID_PTR;

#define CK_TRUE 1
#define CK_FALSE 0
#define CK_INVALID_HANDLE 0UL
#define CK_UNAVAILABLE_INFORMATION (~0UL)

typedef struct CK_VERSION {
  CK_BYTE major;
  CK_BYTE minor;
} CK_VERSION;

typedef struct CK_INFO {
  CK_VERSION cryptokiVersion;
  CK_UTF8CHAR manufacturerID[32];
  CK_FLAGS flags;
  CK_UTF8CHAR libraryDescription[32];
  CK_VERSION libraryVersion;
} CK_INFO;

typedef struct CK_SLOT_INFO {
  CK_UTF8CHAR slotDescription[64];
  CK_UTF8CHAR manufacturerID[32];
  CK_FLAGS flags;
  CK_VERSION hardwareVersion;
  CK_VERSION firmwareVersion;
} CK_SLOT_INFO;

typedef struct CK_TOKEN_INFO {
  CK_UTF8CHAR label[32];
  CK_UTF8CHAR manufacturerID[32];
  CK_UTF8CHAR model[16];
  CK_CHAR serialNumber[16];
  CK_FLAGS flags;
  CK_ULONG ulMaxSessionCount;
  CK_ULONG ulSessionCount;
  CK_ULONG ulMaxRwSessionCount;
  CK_ULONG ulRwSessionCount;
  CK_ULONG ulMaxPinLen;
  CK_ULONG ulMinPinLen;
  CK_ULONG ulTotalPublicMemory;
  CK_ULONG ulFreePublicMemory;
  CK_ULONG ulTotalPrivateMemory;
  CK_ULONG ulFreePrivateMemory;
  CK_VERSION hardwareVersion;
  CK_VERSION firmwareVersion;
  CK_CHAR utcTime[16];
} CK_TOKEN_INFO;

typedef struct CK_SESSION_INFO {
  CK_SLOT_ID slotID;
  CK_STATE state;
  CK_FLAGS flags;
  CK_ULONG ulDeviceError;
} CK_SESSION_INFO;

typedef struct CK_ATTRIBUTE {
  CK_ATTRIBUTE_TYPE type;
  void *pValue;
  CK_ULONG ulValueLen; /* CK_UNAVAILABLE_INFORMATION when the attribute cannot be read */
} CK_ATTRIBUTE;

typedef struct CK_MECHANISM {
  CK_MECHANISM_TYPE mechanism;
  void *pParameter;
  CK_ULONG ulParameterLen;
} CK_MECHANISM;

typedef struct CK_MECHANISM_INFO {
  CK_ULONG ulMinKeySize;
  CK_ULONG ulMaxKeySize;
  CK_FLAGS flags;
} CK_MECHANISM_INFO;

typedef struct CK_RSA_PKCS_PSS_PARAMS {
  CK_MECHANISM_TYPE hashAlg;
  CK_RSA_PKCS_MGF_TYPE mgf;
  CK_ULONG sLen;
} CK_RSA_PKCS_PSS_PARAMS;

typedef CK_RV (*CK_CREATEMUTEX)(void **mutex);
typedef CK_RV (*CK_DESTROYMUTEX)(void *mutex);
typedef CK_RV (*CK_LOCKMUTEX)(void *mutex);
typedef CK_RV (*CK_UNLOCKMUTEX)(void *mutex);
typedef CK_RV (*CK_NOTIFY)(CK_SESSION_HANDLE session, CK_NOTIFICATION event, void *application);

typedef struct CK_C_INITIALIZE_ARGS {
  CK_CREATEMUTEX CreateMutex;
  CK_DESTROYMUTEX DestroyMutex;
  CK_LOCKMUTEX LockMutex;
  CK_UNLOCKMUTEX UnlockMutex;
  CK_FLAGS flags;
  void *pReserved;
} CK_C_INITIALIZE_ARGS;

/* ---- constants ---- */

/* CK_C_INITIALIZE_ARGS.flags */
#define CKF_OS_LOCKING_OK (1UL << 1)
/* CK_SLOT_INFO.flags */
#define CKF_TOKEN_PRESENT (1UL << 0)
#define CKF_REMOVABLE_DEVICE (1UL << 1)
#define CKF_HW_SLOT (1UL << 2)
/* CK_TOKEN_INFO.flags */
#define CKF_WRITE_PROTECTED (1UL << 1)
#define CKF_LOGIN_REQUIRED (1UL << 2)
#define CKF_USER_PIN_INITIALIZED (1UL << 3)
#define CKF_PROTECTED_AUTHENTICATION_PATH (1UL << 8)
#define CKF_TOKEN_INITIALIZED (1UL << 10)
#define CKF_USER_PIN_COUNT_LOW (1UL << 16)
#define CKF_USER_PIN_FINAL_TRY (1UL << 17)
#define CKF_USER_PIN_LOCKED (1UL << 18)
/* C_OpenSession flags */
#define CKF_RW_SESSION (1UL << 1)
#define CKF_SERIAL_SESSION (1UL << 2)
/* CK_MECHANISM_INFO.flags */
#define CKF_SIGN (1UL << 11)
#define CKF_GENERATE_KEY_PAIR (1UL << 16)

#define CKU_SO 0UL
#define CKU_USER 1UL
#define CKU_CONTEXT_SPECIFIC 2UL

#define CKO_DATA 0UL
#define CKO_CERTIFICATE 1UL
#define CKO_PUBLIC_KEY 2UL
#define CKO_PRIVATE_KEY 3UL
#define CKO_SECRET_KEY 4UL

#define CKK_RSA 0UL
#define CKK_EC 3UL

#define CKC_X_509 0UL

#define CKA_CLASS 0x000UL
#define CKA_TOKEN 0x001UL
#define CKA_PRIVATE 0x002UL
#define CKA_LABEL 0x003UL
#define CKA_VALUE 0x011UL
#define CKA_CERTIFICATE_TYPE 0x080UL
#define CKA_ISSUER 0x081UL
#define CKA_SERIAL_NUMBER 0x082UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_SUBJECT 0x101UL
#define CKA_ID 0x102UL
#define CKA_SENSITIVE 0x103UL
#define CKA_ENCRYPT 0x104UL
#define CKA_DECRYPT 0x105UL
#define CKA_WRAP 0x106UL
#define CKA_UNWRAP 0x107UL
#define CKA_SIGN 0x108UL
#define CKA_SIGN_RECOVER 0x109UL
#define CKA_VERIFY 0x10AUL
#define CKA_DERIVE 0x10CUL
#define CKA_MODULUS 0x120UL
#define CKA_MODULUS_BITS 0x121UL
#define CKA_PUBLIC_EXPONENT 0x122UL
#define CKA_PRIVATE_EXPONENT 0x123UL
#define CKA_EXTRACTABLE 0x162UL
#define CKA_LOCAL 0x163UL
#define CKA_NEVER_EXTRACTABLE 0x164UL
#define CKA_ALWAYS_SENSITIVE 0x165UL
#define CKA_MODIFIABLE 0x170UL
#define CKA_EC_PARAMS 0x180UL
#define CKA_EC_POINT 0x181UL
#define CKA_ALWAYS_AUTHENTICATE 0x202UL

#define CKM_RSA_PKCS_KEY_PAIR_GEN 0x0000UL
#define CKM_RSA_PKCS 0x0001UL
#define CKM_RSA_X_509 0x0003UL
#define CKM_RSA_PKCS_PSS 0x000DUL
#define CKM_SHA_1 0x0220UL
#define CKM_SHA256 0x0250UL
#define CKM_SHA224 0x0255UL
#define CKM_SHA384 0x0260UL
#define CKM_SHA512 0x0270UL
#define CKM_EC_KEY_PAIR_GEN 0x1040UL
#define CKM_ECDSA 0x1041UL

#define CKG_MGF1_SHA1 1UL
#define CKG_MGF1_SHA256 2UL
#define CKG_MGF1_SHA384 3UL
#define CKG_MGF1_SHA512 4UL
#define CKG_MGF1_SHA224 5UL

#define CKR_OK 0x000UL
#define CKR_CANCEL 0x001UL
#define CKR_HOST_MEMORY 0x002UL
#define CKR_SLOT_ID_INVALID 0x003UL
#define CKR_GENERAL_ERROR 0x005UL
#define CKR_FUNCTION_FAILED 0x006UL
#define CKR_ARGUMENTS_BAD 0x007UL
#define CKR_CANT_LOCK 0x00AUL
#define CKR_ATTRIBUTE_SENSITIVE 0x011UL
#define CKR_ATTRIBUTE_TYPE_INVALID 0x012UL
#define CKR_ATTRIBUTE_VALUE_INVALID 0x013UL
#define CKR_DATA_INVALID 0x020UL
#define CKR_DATA_LEN_RANGE 0x021UL
#define CKR_DEVICE_ERROR 0x030UL
#define CKR_DEVICE_MEMORY 0x031UL
#define CKR_DEVICE_REMOVED 0x032UL
#define CKR_FUNCTION_CANCELED 0x050UL
#define CKR_FUNCTION_NOT_SUPPORTED 0x054UL
#define CKR_KEY_HANDLE_INVALID 0x060UL
#define CKR_KEY_SIZE_RANGE 0x062UL
#define CKR_KEY_TYPE_INCONSISTENT 0x063UL
#define CKR_KEY_FUNCTION_NOT_PERMITTED 0x068UL
#define CKR_MECHANISM_INVALID 0x070UL
#define CKR_MECHANISM_PARAM_INVALID 0x071UL
#define CKR_OBJECT_HANDLE_INVALID 0x082UL
#define CKR_OPERATION_ACTIVE 0x090UL
#define CKR_OPERATION_NOT_INITIALIZED 0x091UL
#define CKR_PIN_INCORRECT 0x0A0UL
#define CKR_PIN_INVALID 0x0A1UL
#define CKR_PIN_LEN_RANGE 0x0A2UL
#define CKR_PIN_EXPIRED 0x0A3UL
#define CKR_PIN_LOCKED 0x0A4UL
#define CKR_SESSION_CLOSED 0x0B0UL
#define CKR_SESSION_COUNT 0x0B1UL
#define CKR_SESSION_HANDLE_INVALID 0x0B3UL
#define CKR_SESSION_READ_ONLY 0x0B5UL
#define CKR_SIGNATURE_INVALID 0x0C0UL
#define CKR_TEMPLATE_INCOMPLETE 0x0D0UL
#define CKR_TEMPLATE_INCONSISTENT 0x0D1UL
#define CKR_TOKEN_NOT_PRESENT 0x0E0UL
#define CKR_TOKEN_NOT_RECOGNIZED 0x0E1UL
#define CKR_TOKEN_WRITE_PROTECTED 0x0E2UL
#define CKR_USER_ALREADY_LOGGED_IN 0x100UL
#define CKR_USER_NOT_LOGGED_IN 0x101UL
#define CKR_USER_PIN_NOT_INITIALIZED 0x102UL
#define CKR_USER_TYPE_INVALID 0x103UL
#define CKR_BUFFER_TOO_SMALL 0x150UL
#define CKR_CRYPTOKI_NOT_INITIALIZED 0x190UL
#define CKR_CRYPTOKI_ALREADY_INITIALIZED 0x191UL
#define CKR_CURVE_NOT_SUPPORTED 0x140UL
#define CKR_DOMAIN_PARAMS_INVALID 0x130UL

/* ---- the function list ---- */

typedef struct CK_FUNCTION_LIST CK_FUNCTION_LIST;
typedef CK_RV (*CK_C_GetFunctionList)(CK_FUNCTION_LIST **list);

/*
** Every entry in the order of the standard. The ones Moonwire never calls are kept as
** an untyped function pointer: same size, and nobody can call them by mistake with a
** wrong prototype.
*/
typedef void (*mw_p11_unused_fn)(void);

struct CK_FUNCTION_LIST {
  CK_VERSION version;
  CK_RV (*C_Initialize)(void *init_args);
  CK_RV (*C_Finalize)(void *reserved);
  CK_RV (*C_GetInfo)(CK_INFO *info);
  CK_C_GetFunctionList C_GetFunctionList;
  CK_RV (*C_GetSlotList)(CK_BBOOL token_present, CK_SLOT_ID *slots, CK_ULONG *count);
  CK_RV (*C_GetSlotInfo)(CK_SLOT_ID slot, CK_SLOT_INFO *info);
  CK_RV (*C_GetTokenInfo)(CK_SLOT_ID slot, CK_TOKEN_INFO *info);
  CK_RV (*C_GetMechanismList)(CK_SLOT_ID slot, CK_MECHANISM_TYPE *list, CK_ULONG *count);
  CK_RV (*C_GetMechanismInfo)(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO *info);
  CK_RV (*C_InitToken)(CK_SLOT_ID slot, CK_UTF8CHAR *so_pin, CK_ULONG pin_len, CK_UTF8CHAR *label);
  CK_RV (*C_InitPIN)(CK_SESSION_HANDLE s, CK_UTF8CHAR *pin, CK_ULONG pin_len);
  mw_p11_unused_fn C_SetPIN;
  CK_RV (*C_OpenSession)(CK_SLOT_ID slot, CK_FLAGS flags, void *application, CK_NOTIFY notify,
                         CK_SESSION_HANDLE *session);
  CK_RV (*C_CloseSession)(CK_SESSION_HANDLE s);
  mw_p11_unused_fn C_CloseAllSessions;
  CK_RV (*C_GetSessionInfo)(CK_SESSION_HANDLE s, CK_SESSION_INFO *info);
  mw_p11_unused_fn C_GetOperationState;
  mw_p11_unused_fn C_SetOperationState;
  CK_RV (*C_Login)(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR *pin, CK_ULONG pin_len);
  CK_RV (*C_Logout)(CK_SESSION_HANDLE s);
  CK_RV (*C_CreateObject)(CK_SESSION_HANDLE s, CK_ATTRIBUTE *templ, CK_ULONG count, CK_OBJECT_HANDLE *obj);
  mw_p11_unused_fn C_CopyObject;
  CK_RV (*C_DestroyObject)(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj);
  mw_p11_unused_fn C_GetObjectSize;
  CK_RV (*C_GetAttributeValue)(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE *templ, CK_ULONG count);
  mw_p11_unused_fn C_SetAttributeValue;
  CK_RV (*C_FindObjectsInit)(CK_SESSION_HANDLE s, CK_ATTRIBUTE *templ, CK_ULONG count);
  CK_RV (*C_FindObjects)(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *objs, CK_ULONG max, CK_ULONG *count);
  CK_RV (*C_FindObjectsFinal)(CK_SESSION_HANDLE s);
  mw_p11_unused_fn C_EncryptInit;
  mw_p11_unused_fn C_Encrypt;
  mw_p11_unused_fn C_EncryptUpdate;
  mw_p11_unused_fn C_EncryptFinal;
  mw_p11_unused_fn C_DecryptInit;
  mw_p11_unused_fn C_Decrypt;
  mw_p11_unused_fn C_DecryptUpdate;
  mw_p11_unused_fn C_DecryptFinal;
  mw_p11_unused_fn C_DigestInit;
  mw_p11_unused_fn C_Digest;
  mw_p11_unused_fn C_DigestUpdate;
  mw_p11_unused_fn C_DigestKey;
  mw_p11_unused_fn C_DigestFinal;
  CK_RV (*C_SignInit)(CK_SESSION_HANDLE s, CK_MECHANISM *mech, CK_OBJECT_HANDLE key);
  CK_RV (*C_Sign)(CK_SESSION_HANDLE s, CK_BYTE *data, CK_ULONG len, CK_BYTE *sig, CK_ULONG *sig_len);
  mw_p11_unused_fn C_SignUpdate;
  mw_p11_unused_fn C_SignFinal;
  mw_p11_unused_fn C_SignRecoverInit;
  mw_p11_unused_fn C_SignRecover;
  mw_p11_unused_fn C_VerifyInit;
  mw_p11_unused_fn C_Verify;
  mw_p11_unused_fn C_VerifyUpdate;
  mw_p11_unused_fn C_VerifyFinal;
  mw_p11_unused_fn C_VerifyRecoverInit;
  mw_p11_unused_fn C_VerifyRecover;
  mw_p11_unused_fn C_DigestEncryptUpdate;
  mw_p11_unused_fn C_DecryptDigestUpdate;
  mw_p11_unused_fn C_SignEncryptUpdate;
  mw_p11_unused_fn C_DecryptVerifyUpdate;
  mw_p11_unused_fn C_GenerateKey;
  CK_RV (*C_GenerateKeyPair)(CK_SESSION_HANDLE s, CK_MECHANISM *mech, CK_ATTRIBUTE *pub_templ, CK_ULONG pub_count,
                             CK_ATTRIBUTE *priv_templ, CK_ULONG priv_count, CK_OBJECT_HANDLE *pub,
                             CK_OBJECT_HANDLE *priv);
  mw_p11_unused_fn C_WrapKey;
  mw_p11_unused_fn C_UnwrapKey;
  mw_p11_unused_fn C_DeriveKey;
  mw_p11_unused_fn C_SeedRandom;
  CK_RV (*C_GenerateRandom)(CK_SESSION_HANDLE s, CK_BYTE *buf, CK_ULONG len);
  mw_p11_unused_fn C_GetFunctionStatus;
  mw_p11_unused_fn C_CancelFunction;
  mw_p11_unused_fn C_WaitForSlotEvent;
};

/* The layout is the ABI: version (padded) and then 68 function pointers. */
_Static_assert(sizeof(struct CK_FUNCTION_LIST) == sizeof(void *) + 68 * sizeof(void (*)(void)),
               "CK_FUNCTION_LIST must hold exactly the 68 functions of PKCS#11 v2.40");

#endif
