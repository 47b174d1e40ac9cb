/* A cluster's hash_on: key and its cross-check with lb_policy, as
 * config.c's cluster schema reads them (config_yaml.h tables;
 * docs/affinity.md). */
#ifndef GRELAY_CONFIG_AFFINITY_H
#define GRELAY_CONFIG_AFFINITY_H

#include "grelay/config_types.h"
#include "grelay/config_yaml.h"

/* struct gr_hash_on_cfg: "authority", "peer" or a mapping { header: name }. */
int config_set_hash_on(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* hash_on without ring_hash or maglev, or either without hash_on, is an
 * error at the key that is there. GR_OK or GR_ERR_CONFIG. */
int config_affinity_check(struct config_yaml *c, const struct gr_cluster_cfg *cl, yaml_node_t *node);

#endif
