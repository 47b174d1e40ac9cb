/* The circuit_breakers: and retry_budget: schemas (config_breaker.h). */
#include "grelay/config_breaker.h"
#include "grelay/config_health.h"

#include <stddef.h>

#define OFF(type, field) offsetof(type, field)
#define BREAKER_MAX 1000000 /* the largest bound a key takes */

/* Envoy's defaults but max_requests: its 1024 caps a busy cluster long
 * before anything is wrong with it (docs/limits.md). */
static void breaker_init(void *obj)
{
    struct gr_breaker_cfg *b = obj;
    b->set = true;
    b->max_requests = 10000;
    b->max_pending = 1024;
    b->max_retries = 3;
}

static const struct config_field breaker_fields[] = {
    {.key = "max_requests",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_breaker_cfg, max_requests),
     .min = 1,
     .max = BREAKER_MAX},
    {.key = "max_pending",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_breaker_cfg, max_pending),
     .min = 0,
     .max = BREAKER_MAX},
    {.key = "max_retries",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_breaker_cfg, max_retries),
     .min = 0,
     .max = BREAKER_MAX},
    {0},
};

static int breaker_check(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_breaker_cfg *b = obj;
    (void)c;
    (void)node;
    b->max_retries_set = (seen & (1u << 2)) != 0; /* breaker_fields[2] */
    return GR_OK;
}

const struct config_schema config_breaker_schema = {
    "circuit_breakers", sizeof(struct gr_breaker_cfg), OFF(struct gr_breaker_cfg, pos), breaker_fields, breaker_init,
    breaker_check};

static void budget_init(void *obj)
{
    struct gr_retry_budget_cfg *b = obj;
    b->set = true;
    b->percent = 20;
    b->min_concurrent = 3;
}

static int budget_check(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_retry_budget_cfg *b = obj;
    (void)seen;
    if (b->percent == 0 && b->min_concurrent == 0)
        return config_yaml_fail_node(c, node,
                                     "retry_budget: 'percent' 0 and 'min_concurrent' 0 allow no retry at all: "
                                     "drop the routes' retry_policy instead");
    return GR_OK;
}

static const struct config_field budget_fields[] = {
    {.key = "percent", .set = config_set_percent, .off = OFF(struct gr_retry_budget_cfg, percent)},
    {.key = "min_concurrent",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_retry_budget_cfg, min_concurrent),
     .min = 0,
     .max = BREAKER_MAX},
    {0},
};

const struct config_schema config_retry_budget_schema = {"retry_budget",
                                                         sizeof(struct gr_retry_budget_cfg),
                                                         OFF(struct gr_retry_budget_cfg, pos),
                                                         budget_fields,
                                                         budget_init,
                                                         budget_check};

int config_breaker_check(struct config_yaml *c, const struct gr_cluster_cfg *cl)
{
    if (cl->retry_budget.set && cl->circuit_breakers.max_retries_set)
        return config_yaml_fail_at(c, cl->circuit_breakers.pos,
                                   "cluster '%s': circuit_breakers 'max_retries' and retry_budget are both written: "
                                   "the budget replaces max_retries (write one)",
                                   cl->name);
    return GR_OK;
}
