/* The health_check: block of a cluster and its panic_threshold, as
 * config.c's cluster schema reads them (config_yaml.h tables). */
#ifndef GRELAY_CONFIG_HEALTH_H
#define GRELAY_CONFIG_HEALTH_H

#include "grelay/config_yaml.h"

/* struct gr_health_check_cfg (config_types.h), for a set_obj field. */
extern const struct config_schema config_health_check_schema;
/* uint32_t percent 0..100: "50%" or "50". */
int config_set_percent(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);

#endif
