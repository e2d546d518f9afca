/*
** Shadow document options: the defaults of mw_shadow_options_t (the AWS-unconfirmed switches,
** aws-iot.md §9), and the "NULL means defaults" rule every entry point applies.
*/
#include "mw_shadow_doc_int.h"

#include <string.h>

void mw_shadow_options_init(mw_shadow_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->delta_rule = MW_SHADOW_DELTA_ON_DESIRED;
  opt->accepted_echo_nulls = true;
  opt->max_depth = MW_SHADOW_DEPTH_MAX;
  opt->invalid_json_message = MSG_INVALID_JSON;
  opt->array_null_message = MSG_INVALID_JSON;
  opt->documents_previous = MW_SHADOW_PREVIOUS_NULL;
  opt->documents_on_state_null = true;
  opt->delete_version = MW_SHADOW_DELETE_VERSION_LAST;
  opt->recreate_window_s = MW_SHADOW_RECREATE_WINDOW_S;
  opt->get_metadata_delta = false;
  opt->create_version = MW_SHADOW_CREATE_VERSION_MATCH;
  opt->duplicate_keys = MW_SHADOW_DUPLICATE_LAST;
  opt->max_state_bytes = MW_SHADOW_STATE_MAX;
  opt->max_payload_bytes = MW_SHADOW_PAYLOAD_MAX;
}

const mw_shadow_options_t *mw_shadow_opts_or_default(const mw_shadow_options_t *opt, mw_shadow_options_t *tmp) {
  if (opt) return opt;
  mw_shadow_options_init(tmp);
  return tmp;
}
