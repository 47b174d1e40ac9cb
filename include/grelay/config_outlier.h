/* The outlier_detection: block of a cluster, as config.c's cluster schema
 * reads it (config_yaml.h tables): passive ejection of endpoints whose
 * calls fail in a row (outlier.h). */
#ifndef GRELAY_CONFIG_OUTLIER_H
#define GRELAY_CONFIG_OUTLIER_H

#include "grelay/config_yaml.h"

/* struct gr_outlier_cfg (config_types.h), for a set_obj field. */
extern const struct config_schema config_outlier_schema;

#endif
