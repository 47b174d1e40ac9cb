/* The outlier_detection: schema (config_outlier.h). */
#include "grelay/config_outlier.h"
#include "grelay/config_health.h"
#include "grelay/config_types.h"
#include "grelay/grpc.h"

#include <stddef.h>

#define OFF(type, field) offsetof(type, field)

/* failure_codes: a list of gRPC status names (retry_on's spelling), each
 * one a bit of the mask; OK is no failure. A bad name is reported where it
 * is written. */
static int set_failure_codes(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    struct gr_outlier_cfg *o = obj;
    if (v->type != YAML_SEQUENCE_NODE)
        return config_yaml_fail_node(c, v, "'%s' must be a list of gRPC status names", f->key);
    uint32_t mask = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        if (config_yaml_want_scalar(c, item, f->key) != GR_OK)
            return GR_ERR_CONFIG;
        enum grpc_status st;
        const char *name = config_yaml_scalar(item);
        if (grpc_status_from_name(name, &st) != GR_OK || st == GRPC_OK)
            return config_yaml_fail_node(c, item,
                                         "failure_codes: '%s' is not a gRPC status name other than ok (unavailable, "
                                         "internal, unknown, data_loss, resource_exhausted, ...)",
                                         name);
        mask |= 1u << (unsigned)st;
    }
    if (mask == 0)
        return config_yaml_fail_node(c, v, "failure_codes needs at least one status (resets always count)");
    o->failure_mask = mask;
    return GR_OK;
}

static void outlier_init(void *obj)
{
    struct gr_outlier_cfg *o = obj;
    o->set = true;
    o->consecutive_failures = 5;
    o->failure_mask = 1u << GRPC_UNAVAILABLE | 1u << GRPC_INTERNAL | 1u << GRPC_UNKNOWN | 1u << GRPC_DATA_LOSS;
    o->base_ejection_time_ms = 30000;
    o->max_ejection_time_ms = 300000;
    o->max_ejection_percent = 50;
}

static int outlier_check(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_outlier_cfg *o = obj;
    (void)seen;
    if (o->max_ejection_percent == 0)
        return config_yaml_fail_node(c, node,
                                     "outlier_detection: 'max_ejection_percent' must be 1..100 (at least one endpoint "
                                     "can always be ejected; remove outlier_detection to turn ejection off)");
    if (o->max_ejection_time_ms < o->base_ejection_time_ms)
        return config_yaml_fail_node(c, node,
                                     "outlier_detection: 'max_ejection_time' (%llums) must not be less than "
                                     "'base_ejection_time' (%llums)",
                                     (unsigned long long)o->max_ejection_time_ms,
                                     (unsigned long long)o->base_ejection_time_ms);
    return GR_OK;
}

static const struct config_field outlier_fields[] = {
    {.key = "consecutive_failures",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_outlier_cfg, consecutive_failures),
     .min = 1,
     .max = 100000},
    {.key = "failure_codes", .set = set_failure_codes, .off = OFF(struct gr_outlier_cfg, failure_mask)},
    {.key = "base_ejection_time",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_outlier_cfg, base_ejection_time_ms),
     .min = 1,
     .max = 24ull * 3600 * 1000},
    {.key = "max_ejection_time",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_outlier_cfg, max_ejection_time_ms),
     .min = 1,
     .max = 24ull * 3600 * 1000},
    {.key = "max_ejection_percent", .set = config_set_percent, .off = OFF(struct gr_outlier_cfg, max_ejection_percent)},
    {0},
};

const struct config_schema config_outlier_schema = {
    "outlier_detection", sizeof(struct gr_outlier_cfg), OFF(struct gr_outlier_cfg, pos), outlier_fields, outlier_init,
    outlier_check};
