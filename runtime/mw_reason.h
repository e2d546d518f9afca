/*
** Plain-words explanations of the codes a broker answers with: MQTT 3.1.1 CONNACK return
** codes and MQTT 5 reason codes (CONNACK, PUBACK, SUBACK, DISCONNECT). Each text says
** what happened and, where it is useful, what to check on AWS IoT Core, because the bare
** names ("Not authorized", "Unspecified error") are what users keep asking about.
*/
#ifndef MW_REASON_H
#define MW_REASON_H

#include <stdbool.h>

/* The MQTT 5 name of a reason code ("Not authorized"), or NULL for an unknown code. */
const char *mw_reason_name(int code);

/*
** A sentence for an MQTT 5 reason code, e.g. 0x87 → "not authorized: the thing's policy does
** not allow this ...". Never NULL: unknown codes get a generic text.
*/
const char *mw_reason_explain(int code);

/* A sentence for an MQTT 3.1.1 CONNACK return code (1-5). Never NULL. */
const char *mw_reason_connack3(int code);

/* True for codes that mean failure (MQTT 5: 0x80 and above). */
bool mw_reason_is_error(int code);

#endif
