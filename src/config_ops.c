/* The operations plane's configuration blocks: admin, access_log, stats
 * and request_id (config_ops.h). */
#include "grelay/config_ops.h"
#include "grelay/access_log.h"
#include "grelay/common.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define fail_at config_yaml_fail_at
#define OFF(T, m) offsetof(T, m)

/* The default buckets, in seconds (docs/observability.md). */
static const double default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,    1,     2.5,    5,     10,   30,    60,   300};

static int check_admin(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    (void)c;
    (void)seen;
    (void)node;
    ((struct gr_admin_cfg *)obj)->set = true;
    return GR_OK;
}

static const struct config_field admin_fields[] = {
    {.key = "address", .set = config_set_addr, .off = OFF(struct gr_admin_cfg, address), .flags = FL_REQUIRED},
    {.key = "allow_mutations", .set = config_yaml_set_bool, .off = OFF(struct gr_admin_cfg, allow_mutations)},
    {0},
};
const struct config_schema config_ops_admin_schema = {
    "admin", sizeof(struct gr_admin_cfg), OFF(struct gr_admin_cfg, pos), admin_fields, NULL, check_admin};

static const char *const access_log_formats[] = {"json", "text", NULL};

static int check_access_log(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    (void)seen;
    struct gr_access_log_cfg *a = obj;
    a->set = true;
    if (a->format == ACCESS_LOG_TEXT && (a->template_text == NULL || a->template_text[0] == '\0'))
        return config_yaml_fail_node(c, node, "access_log: format text needs a 'template'");
    if (a->format == ACCESS_LOG_JSON && a->template_text != NULL)
        return config_yaml_fail_node(c, node, "access_log: 'template' is only for format text");
    return GR_OK;
}

/* template: the text, its operators checked here (access_log.c knows them). */
static int set_template(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_set_str(c, f, v, obj) != GR_OK)
        return GR_ERR_CONFIG;
    char why[256];
    if (access_log_template_check(((struct gr_access_log_cfg *)obj)->template_text, why, sizeof(why)) != GR_OK)
        return config_yaml_fail_node(c, v, "access_log: template: %s", why);
    return GR_OK;
}

static void init_access_log(void *obj) { ((struct gr_access_log_cfg *)obj)->buffer = ACCESS_LOG_BUFFER_DEFAULT; }

static const struct config_field access_log_fields[] = {
    {.key = "path", .set = config_yaml_set_str, .off = OFF(struct gr_access_log_cfg, path), .flags = FL_REQUIRED},
    {.key = "format",
     .set = config_yaml_set_enum,
     .off = OFF(struct gr_access_log_cfg, format),
     .names = access_log_formats},
    {.key = "template", .set = set_template, .off = OFF(struct gr_access_log_cfg, template_text)},
    {.key = "buffer",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_access_log_cfg, buffer),
     .min = ACCESS_LOG_BUFFER_MIN,
     .max = ACCESS_LOG_BUFFER_MAX},
    {0},
};
const struct config_schema config_ops_access_log_schema = {"access_log",
                                                           sizeof(struct gr_access_log_cfg),
                                                           OFF(struct gr_access_log_cfg, pos),
                                                           access_log_fields,
                                                           init_access_log,
                                                           check_access_log};

static const struct config_field stats_fields[] = {
    {.key = "max_methods",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_stats_cfg, max_methods),
     .min = 0,
     .max = 100000},
    {.key = "buckets",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_stats_cfg, bucket_text),
     .count_off = OFF(struct gr_stats_cfg, n_bucket_text),
     .flags = FL_NONEMPTY},
    {0},
};
static int derive_buckets(struct config_yaml *c, struct gr_stats_cfg *st, struct gr_pos at);
static int check_stats(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    (void)seen;
    return derive_buckets(c, obj, config_yaml_pos(node));
}
const struct config_schema config_ops_stats_schema = {
    "stats", sizeof(struct gr_stats_cfg), NO_POS, stats_fields, NULL, check_stats};

static const struct config_field request_id_fields[] = {
    {.key = "generate", .set = config_yaml_set_bool, .off = OFF(struct gr_request_id_cfg, generate)},
    {0},
};
const struct config_schema config_ops_request_id_schema = {
    "request_id", sizeof(struct gr_request_id_cfg), NO_POS, request_id_fields, NULL, NULL};

void config_ops_init(struct gr_config *cfg)
{
    cfg->stats.max_methods = 1000;
    cfg->request_id.generate = true;
}

static int derive_buckets(struct config_yaml *c, struct gr_stats_cfg *st, struct gr_pos at)
{
    if (st->n_bucket_text == 0) {
        st->n_buckets = sizeof(default_buckets) / sizeof(default_buckets[0]);
        memcpy(st->buckets, default_buckets, sizeof(default_buckets));
        return GR_OK;
    }
    if (st->n_bucket_text > GR_STATS_MAX_BUCKETS)
        return fail_at(c, at, "stats: at most %d buckets, got %zu", GR_STATS_MAX_BUCKETS, st->n_bucket_text);
    for (size_t i = 0; i < st->n_bucket_text; i++) {
        char *end = NULL;
        double b = strtod(st->bucket_text[i], &end);
        if (end == st->bucket_text[i] || *end != '\0' || !isfinite(b) || b <= 0)
            return fail_at(c, at, "stats: bucket '%s' must be a number of seconds above 0", st->bucket_text[i]);
        if (i > 0 && b <= st->buckets[i - 1])
            return fail_at(c, at, "stats: buckets must ascend ('%s' after '%s')", st->bucket_text[i],
                           st->bucket_text[i - 1]);
        st->buckets[i] = b;
    }
    st->n_buckets = st->n_bucket_text;
    return GR_OK;
}

/* Routes without a name get "<virtual host>/<index>"; names are unique
 * within a listener, so that a series means one route. */
static int name_routes(struct config_yaml *c, struct gr_listener_cfg *l)
{
    for (size_t v = 0; v < l->n_vhosts; v++) {
        struct gr_vhost_cfg *vh = &l->vhosts[v];
        for (size_t r = 0; r < vh->n_routes; r++) {
            struct gr_route_cfg *rt = &vh->routes[r];
            if (rt->name == NULL) {
                char buf[256];
                snprintf(buf, sizeof(buf), "%s/%zu", vh->name, r);
                rt->name = arena_strndup(c->arena, buf, strlen(buf));
                if (rt->name == NULL)
                    return fail_at(c, rt->pos, "out of memory");
            }
        }
    }
    for (size_t v = 0; v < l->n_vhosts; v++)
        for (size_t r = 0; r < l->vhosts[v].n_routes; r++)
            for (size_t w = 0; w <= v; w++)
                for (size_t q = 0; q < (w == v ? r : l->vhosts[w].n_routes); q++)
                    if (strcmp(l->vhosts[v].routes[r].name, l->vhosts[w].routes[q].name) == 0)
                        return fail_at(c, l->vhosts[v].routes[r].pos, "duplicate route name '%s' in listener '%s'",
                                       l->vhosts[v].routes[r].name, l->name);
    return GR_OK;
}

int config_ops_check(struct config_yaml *c, struct gr_config *cfg)
{
    if (cfg->stats.n_buckets == 0 && derive_buckets(c, &cfg->stats, (struct gr_pos){1, 1}) != GR_OK)
        return GR_ERR_CONFIG; /* no stats: block: the default buckets */
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (name_routes(c, &cfg->listeners[i]) != GR_OK)
            return GR_ERR_CONFIG;
    if (cfg->admin.set)
        for (size_t i = 0; i < cfg->n_listeners; i++)
            if (cfg->admin.address.len == cfg->listeners[i].address.len &&
                memcmp(&cfg->admin.address.ss, &cfg->listeners[i].address.ss, cfg->admin.address.len) == 0)
                return fail_at(c, cfg->admin.pos, "admin: address %s is listener '%s''s", cfg->admin.address.text,
                               cfg->listeners[i].name);
    return GR_OK;
}
