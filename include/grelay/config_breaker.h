/* The circuit_breakers: and retry_budget: blocks of a cluster, as
 * config.c's cluster schema reads them (config_yaml.h tables); breaker.h
 * enforces them. */
#ifndef GRELAY_CONFIG_BREAKER_H
#define GRELAY_CONFIG_BREAKER_H

#include "grelay/config_types.h"
#include "grelay/config_yaml.h"

/* struct gr_breaker_cfg and struct gr_retry_budget_cfg (config_types.h),
 * for set_obj fields. */
extern const struct config_schema config_breaker_schema;
extern const struct config_schema config_retry_budget_schema;
/* The checks across the two blocks of cluster cl (check_cluster). GR_OK
 * or GR_ERR_CONFIG after writing the error. */
int config_breaker_check(struct config_yaml *c, const struct gr_cluster_cfg *cl);

#endif
