/* The operations plane's part of the configuration: the admin endpoint,
 * the access log, metrics and request ids (config_types.h has the
 * structs). Apart from config.c, which only names these schemas in its
 * top-level table and calls config_ops_check once the file is read. */
#ifndef GRELAY_CONFIG_OPS_H
#define GRELAY_CONFIG_OPS_H

#include "grelay/config_types.h"
#include "grelay/config_yaml.h"

extern const struct config_schema config_ops_admin_schema;
extern const struct config_schema config_ops_access_log_schema;
extern const struct config_schema config_ops_stats_schema;
extern const struct config_schema config_ops_request_id_schema;

/* struct gr_addr: an IP literal and port (config.c; config_parse_addr). */
int config_set_addr(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);

/* Defaults that are not zero (top_init calls it). */
void config_ops_init(struct gr_config *cfg);
/* Derives what the blocks imply (histogram buckets, route names) and
 * checks them; returns 0 or GR_ERR_CONFIG after writing the error. */
int config_ops_check(struct config_yaml *c, struct gr_config *cfg);

#endif
