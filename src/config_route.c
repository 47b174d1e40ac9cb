/* The tables of the route side of a listener: virtual hosts, routes, their
 * match, retry policy and CORS. config.c holds the listener, cluster and
 * top-level tables, and the checks across the whole file. */
#include "grelay/config_route.h"
#include "grelay/common.h"
#include "grelay/config_types.h"
#include "grelay/config_yaml.h"
#include "grelay/grpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define fail_at config_yaml_fail_at
#define fail_node config_yaml_fail_node
#define OFF(T, m) offsetof(T, m)

static int check_header_match(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_header_match_cfg *h = obj;
    bool has_exact = seen & 2u, has_present = seen & 4u;
    if (has_exact == has_present)
        return fail_node(c, node, "header matcher '%s' needs exactly one of 'exact' or 'present'", h->name);
    return GR_OK;
}

static const struct config_field header_match_fields[] = {
    {.key = "name",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_header_match_cfg, name),
     .flags = FL_REQUIRED | FL_LOWER},
    {.key = "exact", .set = config_yaml_set_str, .off = OFF(struct gr_header_match_cfg, exact)},
    {.key = "present", .set = config_yaml_set_bool, .off = OFF(struct gr_header_match_cfg, present)},
    {0},
};
static const struct config_schema header_match_schema = {
    "header matcher", sizeof(struct gr_header_match_cfg), NO_POS, header_match_fields, NULL, check_header_match};

static int check_match(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_match_cfg *m = obj;
    (void)seen;
    int kinds = (m->prefix != NULL) + (m->exact != NULL) + (m->path_alias != NULL) + (m->service != NULL);
    if (kinds != 1)
        return fail_node(c, node, "match needs exactly one of 'prefix', 'exact' (or 'path') or 'service'");
    if (m->method != NULL && m->service == NULL)
        return fail_node(c, node, "match: 'method' needs 'service'");
    struct arena *a = c->arena;
    if (m->path_alias != NULL)
        m->exact = m->path_alias;
    if (m->prefix != NULL) {
        m->kind = ROUTE_PREFIX;
        m->path = m->prefix;
    } else if (m->exact != NULL) {
        if (m->exact[0] != '/')
            return fail_node(c, node, "match: 'exact' path must start with '/', got '%s'", m->exact);
        m->kind = ROUTE_EXACT;
        m->path = m->exact;
    } else {
        if (m->service[0] == '\0' || strchr(m->service, '/') != NULL)
            return fail_node(c, node, "match: 'service' must be 'package.Service' without '/', got '%s'", m->service);
        size_t n = strlen(m->service) + (m->method ? strlen(m->method) : 0) + 3;
        char *p = arena_alloc(a, n);
        if (p == NULL)
            return fail_node(c, node, "out of memory");
        if (m->method != NULL) {
            if (m->method[0] == '\0' || strchr(m->method, '/') != NULL)
                return fail_node(c, node, "match: 'method' must be a method name, got '%s'", m->method);
            snprintf(p, n, "/%s/%s", m->service, m->method);
            m->kind = ROUTE_EXACT;
        } else {
            snprintf(p, n, "/%s/", m->service);
            m->kind = ROUTE_PREFIX;
        }
        m->path = p;
    }
    m->path_len = strlen(m->path);
    return GR_OK;
}

static const struct config_field match_fields[] = {
    {.key = "prefix", .set = config_yaml_set_str, .off = OFF(struct gr_match_cfg, prefix)},
    {.key = "exact", .set = config_yaml_set_str, .off = OFF(struct gr_match_cfg, exact)},
    {.key = "path", .set = config_yaml_set_str, .off = OFF(struct gr_match_cfg, path_alias)},
    {.key = "service", .set = config_yaml_set_str, .off = OFF(struct gr_match_cfg, service)},
    {.key = "method", .set = config_yaml_set_str, .off = OFF(struct gr_match_cfg, method)},
    {.key = "headers",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_match_cfg, headers),
     .count_off = OFF(struct gr_match_cfg, n_headers),
     .sub = &header_match_schema},
    {0},
};
static const struct config_schema match_schema = {"match",    sizeof(struct gr_match_cfg), NO_POS, match_fields, NULL,
                                                  check_match};

static void backoff_init(void *obj)
{
    struct gr_backoff_cfg *b = obj;
    b->base_interval_ms = 25;
    b->max_interval_ms = 250;
}

static int check_backoff(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_backoff_cfg *b = obj;
    (void)seen;
    if (b->max_interval_ms < b->base_interval_ms)
        return fail_node(c, node, "backoff: 'max_interval' must not be less than 'base_interval'");
    return GR_OK;
}

static const struct config_field backoff_fields[] = {
    {.key = "base_interval",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_backoff_cfg, base_interval_ms),
     .min = 1,
     .max = 60000},
    {.key = "max_interval",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_backoff_cfg, max_interval_ms),
     .min = 1,
     .max = 600000},
    {0},
};
static const struct config_schema backoff_schema = {
    "backoff", sizeof(struct gr_backoff_cfg), NO_POS, backoff_fields, backoff_init, check_backoff};

static void retry_init(void *obj)
{
    struct gr_retry_cfg *r = obj;
    r->num_retries = 1;
    backoff_init(&r->backoff);
}

static int check_retry(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_retry_cfg *r = obj;
    (void)seen;
    if (r->n_retry_on == 0)
        return fail_node(c, node, "retry_policy needs 'retry_on' with at least one status");
    for (size_t i = 0; i < r->n_retry_on; i++) {
        enum grpc_status st;
        if (grpc_status_from_name(r->retry_on[i], &st) != GR_OK || st == GRPC_OK) /* OK is no failure */
            return fail_node(c, node,
                             "retry_on: '%s' is not a gRPC status name (cancelled, unknown, deadline_exceeded, "
                             "resource_exhausted, aborted, internal, unavailable, ...)",
                             r->retry_on[i]);
        r->retry_on_mask |= 1u << (unsigned)st;
    }
    return GR_OK;
}

static const struct config_field retry_fields[] = {
    {.key = "retry_on",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_retry_cfg, retry_on),
     .count_off = OFF(struct gr_retry_cfg, n_retry_on),
     .flags = FL_LOWER},
    {.key = "num_retries",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_retry_cfg, num_retries),
     .min = 0,
     .max = 10},
    {.key = "per_try_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_retry_cfg, per_try_timeout_ms),
     .min = 0,
     .max = 86400000},
    {.key = "backoff", .set = config_yaml_set_obj, .off = OFF(struct gr_retry_cfg, backoff), .sub = &backoff_schema},
    {0},
};
static const struct config_schema retry_schema = {
    "retry_policy", sizeof(struct gr_retry_cfg), NO_POS, retry_fields, retry_init, check_retry};

static const char *const rate_status_names[] = {"resource_exhausted", "unavailable", NULL};

static int check_rate_limit(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_rate_limit_cfg *rl = obj;
    rl->set = true;
    if (!(seen & 2u)) /* burst not written */
        rl->burst = rl->requests_per_second;
    rl->status = rl->status == 1 ? GRPC_UNAVAILABLE : GRPC_RESOURCE_EXHAUSTED; /* from the names' index */
    rl->buckets = arena_alloc(c->arena, GR_RATE_BUCKETS * sizeof(*rl->buckets));
    if (rl->buckets == NULL)
        return fail_node(c, node, "out of memory");
    for (size_t i = 0; i < GR_RATE_BUCKETS; i++)
        rl->buckets[i] = (struct gr_rate_bucket){.tokens = -1};
    return GR_OK;
}

static const struct config_field rate_limit_fields[] = {
    {.key = "requests_per_second",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_rate_limit_cfg, requests_per_second),
     .min = 1,
     .max = 10000000,
     .flags = FL_REQUIRED},
    {.key = "burst",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_rate_limit_cfg, burst),
     .min = 1,
     .max = 10000000},
    {.key = "status",
     .set = config_yaml_set_enum,
     .off = OFF(struct gr_rate_limit_cfg, status),
     .names = rate_status_names},
    {0},
};
static const struct config_schema rate_limit_schema = {
    "rate_limit", sizeof(struct gr_rate_limit_cfg), NO_POS, rate_limit_fields, NULL, check_rate_limit};

/* The headers a gRPC-Web client sends, which every CORS policy allows. */
static const char cors_default_headers[] =
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,keep-alive,user-agent,cache-control,"
    "content-transfer-encoding,x-accept-content-transfer-encoding,x-accept-response-streaming";
static const char cors_default_expose[] = "grpc-status,grpc-message,grpc-status-details-bin";

static const char *join_list(struct arena *a, const char *first, const char **items, size_t n, const char *sep)
{
    size_t len = first ? strlen(first) : 0;
    for (size_t i = 0; i < n; i++)
        len += strlen(items[i]) + strlen(sep);
    char *out = arena_alloc(a, len + 1);
    if (out == NULL)
        return NULL;
    out[0] = '\0';
    if (first)
        strcat(out, first);
    for (size_t i = 0; i < n; i++) {
        if (out[0] != '\0')
            strcat(out, sep);
        strcat(out, items[i]);
    }
    return out;
}

static void cors_init(void *obj)
{
    struct gr_cors_cfg *c = obj;
    c->set = true;
}

static int check_cors(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_cors_cfg *cors = obj;
    struct arena *a = c->arena;
    (void)seen;
    if (cors->n_allow_origins == 0)
        return fail_node(c, node, "cors needs 'allow_origins' with at least one origin (or \"*\")");
    for (size_t i = 0; i < cors->n_allow_origins; i++) {
        const char *o = cors->allow_origins[i];
        const char *star = strchr(o, '*');
        if (star != NULL && (strchr(star + 1, '*') != NULL || (strcmp(o, "*") != 0 && strstr(o, "://") == NULL)))
            return fail_node(c, node, "cors: origin '%s' may hold one '*', as in \"*\" or \"https://*.example.com\"",
                             o);
    }
    for (size_t i = 0; cors->allow_credentials && i < cors->n_allow_origins; i++)
        if (strcmp(cors->allow_origins[i], "*") == 0)
            return fail_node(c, node,
                             "cors: allow_credentials cannot go with the \"*\" origin (every page would be granted "
                             "the user's credentials): list the origins");
    static const char *const default_methods[] = {"POST", "GET", "OPTIONS"};
    if (cors->n_allow_methods == 0) {
        cors->allow_methods = (const char **)default_methods;
        cors->n_allow_methods = 3;
    }
    cors->methods_value = join_list(a, NULL, cors->allow_methods, cors->n_allow_methods, ", ");
    cors->headers_value = join_list(a, cors_default_headers, cors->allow_headers, cors->n_allow_headers, ",");
    cors->expose_value = join_list(a, cors_default_expose, cors->expose_headers, cors->n_expose_headers, ",");
    if (cors->max_age > 0) {
        char *v = arena_alloc(a, 12);
        if (v != NULL)
            snprintf(v, 12, "%u", cors->max_age);
        cors->max_age_value = v;
    }
    if (cors->methods_value == NULL || cors->headers_value == NULL || cors->expose_value == NULL)
        return fail_node(c, node, "out of memory");
    return GR_OK;
}

static const struct config_field cors_fields[] = {
    {.key = "allow_origins",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_cors_cfg, allow_origins),
     .count_off = OFF(struct gr_cors_cfg, n_allow_origins)},
    {.key = "allow_methods",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_cors_cfg, allow_methods),
     .count_off = OFF(struct gr_cors_cfg, n_allow_methods)},
    {.key = "allow_headers",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_cors_cfg, allow_headers),
     .count_off = OFF(struct gr_cors_cfg, n_allow_headers),
     .flags = FL_LOWER},
    {.key = "expose_headers",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_cors_cfg, expose_headers),
     .count_off = OFF(struct gr_cors_cfg, n_expose_headers),
     .flags = FL_LOWER},
    {.key = "max_age",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_cors_cfg, max_age),
     .min = 0,
     .max = 86400 * 365},
    {.key = "allow_credentials", .set = config_yaml_set_bool, .off = OFF(struct gr_cors_cfg, allow_credentials)},
    {0},
};
static const struct config_schema cors_schema = {"cors",    sizeof(struct gr_cors_cfg), NO_POS, cors_fields, cors_init,
                                                 check_cors};

static const struct config_field route_fields[] = {
    {.key = "name", .set = config_yaml_set_str, .off = OFF(struct gr_route_cfg, name)},
    {.key = "match",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_route_cfg, match),
     .sub = &match_schema,
     .flags = FL_REQUIRED},
    {.key = "cluster",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_route_cfg, cluster_name),
     .flags = FL_REQUIRED,
     .pos_off = OFF(struct gr_route_cfg, cluster_pos)},
    {.key = "timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_route_cfg, timeout_ms),
     .min = 0,
     .max = 86400000ull * 365},
    {.key = "max_grpc_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_route_cfg, max_grpc_timeout_ms),
     .min = 0,
     .max = 86400000ull * 365},
    {.key = "grpc_timeout_offset",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_route_cfg, grpc_timeout_offset_ms),
     .min = 0,
     .max = 3600000},
    {.key = "retry_policy", .set = config_yaml_set_obj, .off = OFF(struct gr_route_cfg, retry), .sub = &retry_schema},
    {.key = "rate_limit",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_route_cfg, rate_limit),
     .sub = &rate_limit_schema},
    {.key = "cors", .set = config_yaml_set_obj, .off = OFF(struct gr_route_cfg, cors), .sub = &cors_schema},
    {0},
};
static const struct config_schema route_schema = {
    "route", sizeof(struct gr_route_cfg), OFF(struct gr_route_cfg, pos), route_fields, NULL, NULL};

static const struct config_field vhost_fields[] = {
    {.key = "name", .set = config_yaml_set_str, .off = OFF(struct gr_vhost_cfg, name), .flags = FL_REQUIRED},
    {.key = "domains",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_vhost_cfg, domains),
     .count_off = OFF(struct gr_vhost_cfg, n_domains),
     .flags = FL_REQUIRED | FL_NONEMPTY | FL_LOWER},
    {.key = "routes",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_vhost_cfg, routes),
     .count_off = OFF(struct gr_vhost_cfg, n_routes),
     .sub = &route_schema,
     .flags = FL_REQUIRED | FL_NONEMPTY},
    {.key = "cors", .set = config_yaml_set_obj, .off = OFF(struct gr_vhost_cfg, cors), .sub = &cors_schema},
    {0},
};
const struct config_schema config_route_vhost_schema = {
    "virtual host", sizeof(struct gr_vhost_cfg), OFF(struct gr_vhost_cfg, pos), vhost_fields, NULL, NULL};
