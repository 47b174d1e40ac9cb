/* The YAML tables of virtual hosts and everything under them (routes,
 * matches, retry policies, CORS), used by config.c's listener table. */
#ifndef GRELAY_CONFIG_ROUTE_H
#define GRELAY_CONFIG_ROUTE_H

#include "grelay/config_yaml.h"

/* One virtual host (struct gr_vhost_cfg) with its routes. */
extern const struct config_schema config_route_vhost_schema;

#endif
