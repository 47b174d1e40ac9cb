/* The health_check: schema (config_health.h). */
#include "grelay/config_health.h"
#include "grelay/config_types.h"

#include <stddef.h>
#include <string.h>

#define OFF(type, field) offsetof(type, field)

int config_set_percent(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_want_scalar(c, v, f->key) != GR_OK)
        return GR_ERR_CONFIG;
    const char *s = config_yaml_scalar(v);
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '%')
        len--;
    uint64_t n;
    if (!config_yaml_parse_u64(s, len, &n) || n > 100)
        return config_yaml_fail_node(c, v, "'%s' must be a percentage 0..100 (\"50%%\" or 50), got '%s'", f->key, s);
    *(uint32_t *)((char *)obj + f->off) = (uint32_t)n;
    return GR_OK;
}

static void health_init(void *obj)
{
    struct gr_health_check_cfg *h = obj;
    h->set = true;
    h->interval_ms = 5000;
    h->timeout_ms = 1000;
    h->unhealthy_threshold = 3;
    h->healthy_threshold = 2;
    h->service_name = "";
    h->authority = NULL;
}

static int health_check(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_health_check_cfg *h = obj;
    (void)seen;
    if (h->timeout_ms > h->interval_ms)
        return config_yaml_fail_node(c, node,
                                     "health_check: 'timeout' (%llums) must not exceed 'interval' (%llums): "
                                     "one check is in flight per endpoint at a time",
                                     (unsigned long long)h->timeout_ms, (unsigned long long)h->interval_ms);
    return GR_OK;
}

static const struct config_field health_fields[] = {
    {.key = "interval",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_health_check_cfg, interval_ms),
     .min = 10,
     .max = 24ull * 3600 * 1000},
    {.key = "timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_health_check_cfg, timeout_ms),
     .min = 1,
     .max = 3600ull * 1000},
    {.key = "unhealthy_threshold",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_health_check_cfg, unhealthy_threshold),
     .min = 1,
     .max = 1000},
    {.key = "healthy_threshold",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_health_check_cfg, healthy_threshold),
     .min = 1,
     .max = 1000},
    {.key = "service_name", .set = config_yaml_set_str, .off = OFF(struct gr_health_check_cfg, service_name)},
    {.key = "authority", .set = config_yaml_set_str, .off = OFF(struct gr_health_check_cfg, authority)},
    {0},
};

const struct config_schema config_health_check_schema = {"health_check",
                                                         sizeof(struct gr_health_check_cfg),
                                                         OFF(struct gr_health_check_cfg, pos),
                                                         health_fields,
                                                         health_init,
                                                         health_check};
