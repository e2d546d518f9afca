/*
** Topic names and filters, checked the way AWS IoT Core checks them, so a device
** that works against the local broker does not fail in the cloud. Pure functions.
*/
#ifndef MW_TOPIC_H
#define MW_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#include "mw_status.h"

#define MW_TOPIC_MAX_BYTES 256
#define MW_TOPIC_MAX_SLASHES 7

/*
** A topic the device publishes to: non-empty, <= 256 bytes, <= 7 '/' (not counting
** the Basic Ingest prefix "$aws/rules/<rule>/"), no '+' or '#', valid UTF-8, no NUL.
** On failure returns MW_ERR_INVALID and writes the rule broken into why.
*/
mw_status_t mw_topic_check_name(const char *topic, size_t len, char *why, size_t whylen);

/*
** A subscription filter: non-empty, <= 256 bytes, valid UTF-8, no NUL, '+' only as a
** whole level, '#' only as the whole last level.
*/
mw_status_t mw_topic_check_filter(const char *filter, size_t len, char *why, size_t whylen);

/* MQTT matching of a topic name against a filter (as the broker delivers). */
bool mw_topic_matches(const char *filter, const char *topic);

#endif
