/*
** AWS IoT provisioning templates, the subset the local provisioning service implements
** (docs/provisioning.md lists it): Parameters (Type String, Default, and the
** CloudFormation-style checks AllowedValues, AllowedPattern, MinLength, MaxLength),
** Mappings, Resources of type AWS::IoT::Thing, AWS::IoT::Certificate and AWS::IoT::Policy
** (by PolicyName), DeviceConfiguration, and the intrinsics Ref, Fn::Join, Fn::Sub,
** Fn::Select, Fn::Split and Fn::FindInMap.
**
** A template is checked completely when it is parsed (shape, names, intrinsic forms), so a
** broken template is reported when the service starts, not when the first device comes.
** Applying it to a request's parameters can still fail (missing parameter, a value a
** check refuses, an invalid thing name); those failures carry the status, AWS-style error
** code and message the service sends back.
*/
#ifndef MW_PROV_TEMPLATE_H
#define MW_PROV_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "mw_prov_ca.h"
#include "mw_status.h"

#define MW_PROV_TEMPLATE_MAX 10240   /* bytes; AWS IoT's limit for a template body */
#define MW_PROV_TEMPLATE_NAME_MAX 36 /* [0-9A-Za-z_-] */
#define MW_PROV_PARAM_VALUE_MAX 2048
#define MW_PROV_PARAMS_MAX 64

/* An error answer: statusCode, errorCode, errorMessage of a rejected response. */
typedef struct {
  int status;
  char code[48];
  char message[384];
} mw_prov_error_t;

void mw_prov_error_set(mw_prov_error_t *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct mw_prov_template mw_prov_template_t;

/* True for a valid template name (1..36 of [0-9A-Za-z_-]). */
bool mw_prov_template_name_ok(const char *name, size_t len);

/* Parses and checks a template. err says what is wrong and where ("Resources.thing.Properties: ..."). */
mw_status_t mw_prov_template_parse(const char *name, const char *json, size_t len, mw_prov_template_t **out,
                                   char *err, size_t errlen);
void mw_prov_template_free(mw_prov_template_t *t);
const char *mw_prov_template_name(const mw_prov_template_t *t);

/* Values the service fills in (Ref AWS::IoT::Certificate::...). */
typedef struct {
  const char *certificate_id;
  const mw_prov_cert_info_t *cert; /* subject fields for JITP; NULL in fleet provisioning */
} mw_prov_builtins_t;

typedef enum { MW_PROV_OVERRIDE_DO_NOTHING = 0, MW_PROV_OVERRIDE_MERGE, MW_PROV_OVERRIDE_REPLACE } mw_prov_override_t;

/* What applying a template decided. Everything is owned by the outcome. */
typedef struct {
  char *thing_name;
  cJSON *attributes;            /* object of strings */
  char *thing_type;             /* NULL when the template sets none */
  cJSON *thing_groups;          /* array of strings, NULL when none */
  char *billing_group;
  mw_prov_override_t override_attributes, override_groups;
  char **policies;              /* PolicyName of each AWS::IoT::Policy */
  size_t npolicies;
  bool has_certificate;         /* an AWS::IoT::Certificate resource is present */
  bool certificate_active;      /* its Status is ACTIVE */
  cJSON *device_configuration;  /* flat object of strings ({} when none) */
} mw_prov_outcome_t;

/*
** Applies the template to the request's parameters (a JSON object of strings, or NULL).
** MW_OK and *out filled, or MW_ERR_INVALID with e set (4xx), or MW_ERR_NOMEM (e: 500).
*/
mw_status_t mw_prov_template_apply(const mw_prov_template_t *t, const cJSON *parameters,
                                   const mw_prov_builtins_t *builtins, mw_prov_outcome_t *out, mw_prov_error_t *e);
void mw_prov_outcome_free(mw_prov_outcome_t *o);

/* AWS IoT thing names: 1..128 of [a-zA-Z0-9:_-]. */
bool mw_prov_thing_name_ok(const char *s);

#endif
