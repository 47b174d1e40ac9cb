/* YAML -> validated config snapshot.
 *
 * Every key is declared once in a table (struct config_field): its setter,
 * bounds, whether it is required and where it is stored. The walker in
 * config_yaml.c applies the tables to libyaml's document tree, so every
 * error can name the file, line and column of the node at fault; this file
 * holds the tables, the checks across keys and the checks across the whole
 * file, and builds the TLS contexts. */
#include "grelay/config.h"
#include "grelay/breaker.h"
#include "grelay/common.h"
#include "grelay/config_breaker.h"
#include "grelay/config_affinity.h"
#include "grelay/config_health.h"
#include "grelay/config_outlier.h"
#include "grelay/config_ops.h"
#include "grelay/config_route.h"
#include "grelay/config_yaml.h"
#include "grelay/grpc.h"
#include "grelay/log.h"
#include "grelay/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* Short spellings of the walker's error helpers, used by nearly every check. */
#define fail_at config_yaml_fail_at
#define fail_node config_yaml_fail_node

/* Host names arrive with DNS discovery (check_endpoint), not here. */
int config_parse_addr(const char *text, struct gr_addr *out, const char **why)
{
    char host[64];
    const char *colon;
    const char *h = text;
    size_t hlen;
    memset(&out->ss, 0, sizeof(out->ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            *why = "expected [ipv6]:port";
            return GR_ERR_CONFIG;
        }
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL) {
            *why = "expected ip:port";
            return GR_ERR_CONFIG;
        }
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        *why = "missing or overlong host";
        return GR_ERR_CONFIG;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    uint64_t port;
    if (!config_yaml_parse_u64(colon + 1, strlen(colon + 1), &port) || port == 0 || port > 65535) {
        *why = "port must be 1..65535";
        return GR_ERR_CONFIG;
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
    if (text[0] != '[' && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*v4);
    } else if (text[0] == '[' && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*v6);
    } else {
        *why = "host must be an IPv4 address or a bracketed IPv6 address";
        return GR_ERR_CONFIG;
    }
    out->text = text;
    return GR_OK;
}

/* struct gr_addr: an IP literal and port (config_parse_addr). */
int config_set_addr(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_want_scalar(c, v, f->key))
        return GR_ERR_CONFIG;
    const char *why;
    char *text = arena_strndup(c->arena, config_yaml_scalar(v), v->data.scalar.length);
    if (text == NULL)
        return fail_node(c, v, "out of memory");
    if (config_parse_addr(text, (struct gr_addr *)((char *)obj + f->off), &why) != 0)
        return fail_node(c, v, "bad address '%s' for '%s': %s", text, f->key, why);
    return GR_OK;
}

/* ---- the tables ---- */

#define OFF(T, m) offsetof(T, m)

static const struct config_field sni_fields[] = {
    {.key = "names",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_sni_cert_cfg, names),
     .count_off = OFF(struct gr_sni_cert_cfg, n_names),
     .flags = FL_REQUIRED | FL_NONEMPTY | FL_LOWER},
    {.key = "cert_chain",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_sni_cert_cfg, cert_chain),
     .flags = FL_REQUIRED},
    {.key = "private_key",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_sni_cert_cfg, private_key),
     .flags = FL_REQUIRED},
    {0},
};
static const struct config_schema sni_schema = {"server name", sizeof(struct gr_sni_cert_cfg), NO_POS, sni_fields, NULL,
                                                NULL};

static void tls_server_init(void *obj)
{
    struct gr_tls_server_cfg *t = obj;
    t->set = true;
    t->handshake_timeout_ms = 10000;
    t->session_tickets = true;
    t->ciphers = GR_TLS_CIPHERS;
    t->ciphersuites = GR_TLS_CIPHERSUITES;
}

static const struct config_field tls_server_fields[] = {
    {.key = "cert_chain",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_tls_server_cfg, cert_chain),
     .flags = FL_REQUIRED},
    {.key = "private_key",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_tls_server_cfg, private_key),
     .flags = FL_REQUIRED},
    {.key = "alpn",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_tls_server_cfg, alpn),
     .count_off = OFF(struct gr_tls_server_cfg, n_alpn),
     .flags = FL_NONEMPTY},
    {.key = "min_version", .set = config_yaml_set_str, .off = OFF(struct gr_tls_server_cfg, min_version)},
    {.key = "ciphers", .set = config_yaml_set_str, .off = OFF(struct gr_tls_server_cfg, ciphers)},
    {.key = "ciphersuites", .set = config_yaml_set_str, .off = OFF(struct gr_tls_server_cfg, ciphersuites)},
    {.key = "client_ca", .set = config_yaml_set_str, .off = OFF(struct gr_tls_server_cfg, client_ca)},
    {.key = "require_client_cert",
     .set = config_yaml_set_bool,
     .off = OFF(struct gr_tls_server_cfg, require_client_cert)},
    {.key = "server_names",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_tls_server_cfg, server_names),
     .count_off = OFF(struct gr_tls_server_cfg, n_server_names),
     .sub = &sni_schema},
    {.key = "handshake_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_tls_server_cfg, handshake_timeout_ms),
     .min = 1,
     .max = 600000},
    {.key = "session_tickets", .set = config_yaml_set_bool, .off = OFF(struct gr_tls_server_cfg, session_tickets)},
    {0},
};
/* require_client_cert without client_ca would verify nothing: refused. */
static int check_tls_server(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    const struct gr_tls_server_cfg *t = obj;
    (void)seen;
    if (t->require_client_cert && t->client_ca == NULL)
        return fail_node(c, node,
                         "tls: require_client_cert needs client_ca (the CA that signs the client certificates); "
                         "without it no client would be checked");
    return GR_OK;
}

static const struct config_schema tls_server_schema = {
    "tls", sizeof(struct gr_tls_server_cfg), NO_POS, tls_server_fields, tls_server_init, check_tls_server};

static void tls_client_init(void *obj)
{
    struct gr_tls_client_cfg *t = obj;
    t->set = true;
    t->verify = true;
}

static const struct config_field tls_client_fields[] = {
    {.key = "sni", .set = config_yaml_set_str, .off = OFF(struct gr_tls_client_cfg, sni)},
    {.key = "ca", .set = config_yaml_set_str, .off = OFF(struct gr_tls_client_cfg, ca)},
    {.key = "cert_chain", .set = config_yaml_set_str, .off = OFF(struct gr_tls_client_cfg, cert_chain)},
    {.key = "private_key", .set = config_yaml_set_str, .off = OFF(struct gr_tls_client_cfg, private_key)},
    {.key = "verify", .set = config_yaml_set_bool, .off = OFF(struct gr_tls_client_cfg, verify)},
    {.key = "min_version", .set = config_yaml_set_str, .off = OFF(struct gr_tls_client_cfg, min_version)},
    {0},
};
static const struct config_schema tls_client_schema = {
    "tls", sizeof(struct gr_tls_client_cfg), NO_POS, tls_client_fields, tls_client_init, NULL};

static void listener_init(void *obj)
{
    struct gr_listener_cfg *l = obj;
    l->max_concurrent_streams = 1024;
    l->stream_buffer = 64 * 1024;
    l->connection_window = 1024 * 1024;
    l->max_request_headers = 64 * 1024;
    l->grpc_web_max_request = 4 * 1024 * 1024;
    l->hibernate_after_ms = 1000;
    l->max_request_header_fields = 100;
    l->max_connections = 10000;
    l->idle_timeout_ms = 3600ull * 1000;
    l->request_headers_timeout_ms = 10000;
    l->stream_write_timeout_ms = 30000;
    l->connection_buffer = 4 * 1024 * 1024;
    l->max_connection_age_grace_ms = 30000;
}

static const struct config_field listener_fields[] = {
    {.key = "name", .set = config_yaml_set_str, .off = OFF(struct gr_listener_cfg, name), .flags = FL_REQUIRED},
    {.key = "address", .set = config_set_addr, .off = OFF(struct gr_listener_cfg, address), .flags = FL_REQUIRED},
    {.key = "virtual_hosts",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_listener_cfg, vhosts),
     .count_off = OFF(struct gr_listener_cfg, n_vhosts),
     .sub = &config_route_vhost_schema,
     .flags = FL_REQUIRED | FL_NONEMPTY},
    {.key = "max_concurrent_streams",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_listener_cfg, max_concurrent_streams),
     .min = 1,
     .max = 1u << 20},
    {.key = "stream_buffer",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_listener_cfg, stream_buffer),
     .min = 1024,
     .max = 16u << 20},
    {.key = "connection_window",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_listener_cfg, connection_window),
     .min = 65535,
     .max = (1u << 31) - 1},
    {.key = "max_request_headers",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_listener_cfg, max_request_headers),
     .min = 1024,
     .max = 1u << 20},
    {.key = "grpc_web", .set = config_yaml_set_bool, .off = OFF(struct gr_listener_cfg, grpc_web)},
    {.key = "tls",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_listener_cfg, tls),
     .sub = &tls_server_schema,
     .pos_off = OFF(struct gr_listener_cfg, tls_pos)},
    {.key = "grpc_web_max_request",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_listener_cfg, grpc_web_max_request),
     .min = 1024,
     .max = 1u << 30},
    {.key = "hibernate_after",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_listener_cfg, hibernate_after_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "max_request_header_fields",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_listener_cfg, max_request_header_fields),
     .min = 8,
     .max = 10000},
    {.key = "max_connections",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_listener_cfg, max_connections),
     .min = 1,
     .max = 1u << 24},
    {.key = "idle_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_listener_cfg, idle_timeout_ms),
     .min = 0,
     .max = 7ull * 24 * 3600 * 1000},
    {.key = "request_headers_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_listener_cfg, request_headers_timeout_ms),
     .min = 0,
     .max = 3600ull * 1000},
    {.key = "stream_write_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_listener_cfg, stream_write_timeout_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "connection_buffer",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_listener_cfg, connection_buffer),
     .min = 64 * 1024,
     .max = 1u << 30},
    {.key = "max_connection_age",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_listener_cfg, max_connection_age_ms),
     .min = 0,
     .max = 30ull * 24 * 3600 * 1000},
    {.key = "max_connection_age_grace",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_listener_cfg, max_connection_age_grace_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "max_requests_per_connection",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_listener_cfg, max_requests_per_connection),
     .min = 0,
     .max = UINT32_MAX},
    {0},
};
static const struct config_schema listener_schema = {
    "listener", sizeof(struct gr_listener_cfg), OFF(struct gr_listener_cfg, pos), listener_fields, listener_init, NULL};

static void endpoint_init(void *obj) { ((struct gr_endpoint_cfg *)obj)->weight = 1; }

/* "ip:port", "[ipv6]:port" or "host.name:port" (for DNS discovery). */
static int check_endpoint(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_endpoint_cfg *ep = obj;
    const char *why;
    (void)seen;
    if (config_parse_addr(ep->text, &ep->address, &why) == 0) {
        const char *colon = strrchr(ep->text, ':');
        size_t hl = (size_t)(colon - ep->text);
        ep->port = (uint16_t)atoi(colon + 1);
        ep->host =
            ep->text[0] == '[' ? arena_strndup(c->arena, ep->text + 1, hl - 2) : arena_strndup(c->arena, ep->text, hl);
        return ep->host ? GR_OK : fail_node(c, node, "out of memory");
    }
    const char *colon = strrchr(ep->text, ':');
    uint64_t port;
    size_t hl = colon ? (size_t)(colon - ep->text) : 0;
    bool name_ok = hl > 0 && hl < 254 && ep->text[0] != '[', numeric = true;
    for (size_t i = 0; name_ok && i < hl; i++) {
        char ch = ep->text[i];
        name_ok = isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_';
        numeric &= isdigit((unsigned char)ch) || ch == '.';
    }
    if (!name_ok || numeric) /* not a name; and digits and dots are a broken IPv4 address */
        return fail_at(c, ep->text_pos, "bad address '%s' for 'address': %s", ep->text, why);
    if (!config_yaml_parse_u64(colon + 1, strlen(colon + 1), &port) || port == 0 || port > 65535)
        return fail_at(c, ep->text_pos, "bad address '%s' for 'address': port must be 1..65535", ep->text);
    ep->is_name = true;
    ep->port = (uint16_t)port;
    ep->host = arena_strndup(c->arena, ep->text, hl);
    return ep->host ? GR_OK : fail_node(c, node, "out of memory");
}

static const struct config_field endpoint_fields[] = {
    {.key = "address",
     .set = config_yaml_set_str,
     .off = OFF(struct gr_endpoint_cfg, text),
     .flags = FL_REQUIRED,
     .pos_off = OFF(struct gr_endpoint_cfg, text_pos)},
    {.key = "weight", .set = config_yaml_set_u32, .off = OFF(struct gr_endpoint_cfg, weight), .min = 1, .max = 1000},
    {0},
};
static const struct config_schema endpoint_schema = {
    "endpoint",    sizeof(struct gr_endpoint_cfg), OFF(struct gr_endpoint_cfg, pos), endpoint_fields, endpoint_init,
    check_endpoint};

static const char *const lb_policy_names[] = {"round_robin", "least_request", "random", "ring_hash", "maglev", NULL};
static const char *const discovery_names[] = {"static", "strict_dns", "logical_dns", NULL};

static int check_cluster(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct gr_cluster_cfg *cl = obj;
    (void)seen;
    for (size_t i = 0; i < cl->n_endpoints; i++) {
        if (cl->endpoints[i].is_name && cl->discovery == DISCOVERY_STATIC)
            return fail_at(c, cl->endpoints[i].text_pos,
                           "endpoint '%s' is a host name: set discovery: strict_dns or logical_dns on cluster '%s'",
                           cl->endpoints[i].text, cl->name);
    }
    for (size_t i = 0; i < cl->n_dns_resolvers; i++) {
        struct gr_addr a;
        const char *why;
        if (config_parse_addr(cl->dns_resolvers[i], &a, &why) != 0)
            return fail_node(c, node, "dns_resolvers: '%s' must be ip:port (%s)", cl->dns_resolvers[i], why);
    }
    int rc = config_breaker_check(c, cl);
    return rc != GR_OK ? rc : config_affinity_check(c, cl, node);
}

static void cluster_init(void *obj)
{
    struct gr_cluster_cfg *cl = obj;
    cl->lb_policy = LB_ROUND_ROBIN;
    cl->dns_refresh_ms = 5000;
    cl->connect_timeout_ms = 5000;
    cl->max_connections = 8;
    cl->max_pending = 1024;
    cl->max_streams_per_connection = 0;
    cl->stream_buffer = 64 * 1024;
    /* Given back as bytes arrive (h2_client.c), so it bounds no memory, only
     * how far a backend may write ahead of our WINDOW_UPDATE; at 1 MiB a
     * grpc-go backend with 64 calls of 16 KiB in flight ran out of it and
     * sent HEADERS ahead of DATA, each response then leaving in two or three
     * writes (docs/performance.md, One call a connection). Envoy's value. */
    cl->connection_window = 256u * 1024 * 1024;
    cl->idle_timeout_ms = 600ull * 1000;
    cl->keepalive.interval_ms = 30000;
    cl->keepalive.timeout_ms = 10000;
    cl->max_pending_time_ms = 5000;
    cl->drain_timeout_ms = 30000;
    cl->max_connection_age_ms = 0;
    cl->panic_threshold = 50;
}

static const struct config_field keepalive_fields[] = {
    {.key = "interval",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_keepalive_cfg, interval_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_keepalive_cfg, timeout_ms),
     .min = 1,
     .max = 3600ull * 1000},
    {0},
};
static const struct config_schema keepalive_schema = {
    "keepalive", sizeof(struct gr_keepalive_cfg), NO_POS, keepalive_fields, NULL, NULL};

static const struct config_field cluster_fields[] = {
    {.key = "name", .set = config_yaml_set_str, .off = OFF(struct gr_cluster_cfg, name), .flags = FL_REQUIRED},
    {.key = "lb_policy",
     .set = config_yaml_set_enum,
     .off = OFF(struct gr_cluster_cfg, lb_policy),
     .names = lb_policy_names,
     .pos_off = OFF(struct gr_cluster_cfg, lb_policy_pos)},
    {.key = "hash_on", .set = config_set_hash_on, .off = OFF(struct gr_cluster_cfg, hash_on)},
    {.key = "discovery",
     .set = config_yaml_set_enum,
     .off = OFF(struct gr_cluster_cfg, discovery),
     .names = discovery_names},
    {.key = "dns_refresh",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_cluster_cfg, dns_refresh_ms),
     .min = 1,
     .max = 86400000},
    {.key = "dns_resolvers",
     .set = config_yaml_set_strlist,
     .off = OFF(struct gr_cluster_cfg, dns_resolvers),
     .count_off = OFF(struct gr_cluster_cfg, n_dns_resolvers),
     .flags = FL_NONEMPTY},
    {.key = "endpoints",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_cluster_cfg, endpoints),
     .count_off = OFF(struct gr_cluster_cfg, n_endpoints),
     .sub = &endpoint_schema,
     .flags = FL_REQUIRED | FL_NONEMPTY},
    {.key = "connect_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_cluster_cfg, connect_timeout_ms),
     .min = 1,
     .max = 3600000},
    {.key = "max_connections",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_cluster_cfg, max_connections),
     .min = 1,
     .max = 1024},
    {.key = "max_pending",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_cluster_cfg, max_pending),
     .min = 0,
     .max = 1u << 20},
    {.key = "max_streams_per_connection",
     .set = config_yaml_set_u32,
     .off = OFF(struct gr_cluster_cfg, max_streams_per_connection),
     .min = 0,
     .max = 1u << 20},
    {.key = "stream_buffer",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_cluster_cfg, stream_buffer),
     .min = 1024,
     .max = 16u << 20},
    {.key = "connection_window",
     .set = config_yaml_set_size,
     .off = OFF(struct gr_cluster_cfg, connection_window),
     .min = 65535,
     .max = (1u << 31) - 1},
    {.key = "tls",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_cluster_cfg, tls),
     .sub = &tls_client_schema,
     .pos_off = OFF(struct gr_cluster_cfg, tls_pos)},
    {.key = "idle_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_cluster_cfg, idle_timeout_ms),
     .min = 0,
     .max = 7ull * 24 * 3600 * 1000},
    {.key = "keepalive",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_cluster_cfg, keepalive),
     .sub = &keepalive_schema},
    {.key = "max_pending_time",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_cluster_cfg, max_pending_time_ms),
     .min = 0,
     .max = 3600ull * 1000},
    {.key = "drain_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_cluster_cfg, drain_timeout_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "max_connection_age",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_cluster_cfg, max_connection_age_ms),
     .min = 0,
     .max = 30ull * 24 * 3600 * 1000},
    {.key = "health_check",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_cluster_cfg, health_check),
     .sub = &config_health_check_schema},
    {.key = "panic_threshold", .set = config_set_percent, .off = OFF(struct gr_cluster_cfg, panic_threshold)},
    {.key = "circuit_breakers",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_cluster_cfg, circuit_breakers),
     .sub = &config_breaker_schema},
    {.key = "retry_budget",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_cluster_cfg, retry_budget),
     .sub = &config_retry_budget_schema},
    {.key = "outlier_detection",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_cluster_cfg, outlier),
     .sub = &config_outlier_schema},
    {0},
};
static const struct config_schema cluster_schema = {
    "cluster",    sizeof(struct gr_cluster_cfg), OFF(struct gr_cluster_cfg, pos), cluster_fields, cluster_init,
    check_cluster};

static const struct config_field overload_fields[] = {
    {.key = "max_heap",
     .set = config_yaml_set_size64,
     .off = OFF(struct gr_overload_cfg, max_heap),
     .min = 0,
     .max = 1ull << 50},
    {0},
};
static const struct config_schema overload_schema = {
    "overload", sizeof(struct gr_overload_cfg), NO_POS, overload_fields, NULL, NULL};

static const struct config_field top_fields[] = {
    {.key = "workers", .set = config_yaml_set_u32, .off = OFF(struct gr_config, workers), .min = 1, .max = 256},
    {.key = "log_level", .set = config_yaml_set_str, .off = OFF(struct gr_config, log_level)},
    {.key = "listeners",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_config, listeners),
     .count_off = OFF(struct gr_config, n_listeners),
     .sub = &listener_schema,
     .flags = FL_REQUIRED | FL_NONEMPTY},
    {.key = "clusters",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_config, clusters),
     .count_off = OFF(struct gr_config, n_clusters),
     .sub = &cluster_schema},
    {.key = "overload", .set = config_yaml_set_obj, .off = OFF(struct gr_config, overload), .sub = &overload_schema},
    {.key = "drain_timeout",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_config, drain_timeout_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "drain_delay",
     .set = config_yaml_set_duration,
     .off = OFF(struct gr_config, drain_delay_ms),
     .min = 0,
     .max = 24ull * 3600 * 1000},
    {.key = "watch_config", .set = config_yaml_set_bool, .off = OFF(struct gr_config, watch_config)},
    {.key = "admin", .set = config_yaml_set_obj, .off = OFF(struct gr_config, admin), .sub = &config_ops_admin_schema},
    {.key = "access_log",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_config, access_log),
     .sub = &config_ops_access_log_schema},
    {.key = "stats", .set = config_yaml_set_obj, .off = OFF(struct gr_config, stats), .sub = &config_ops_stats_schema},
    {.key = "request_id",
     .set = config_yaml_set_obj,
     .off = OFF(struct gr_config, request_id),
     .sub = &config_ops_request_id_schema},
    {0},
};

static void top_init(void *obj)
{
    struct gr_config *cfg = obj;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = n > 0 ? (uint32_t)n : 1;
    cfg->log_level = "info";
    cfg->drain_timeout_ms = 30000;
    config_ops_init(cfg);
}

static const struct config_schema top_schema = {
    "the configuration", sizeof(struct gr_config), NO_POS, top_fields, top_init, NULL};

/* ---- cross checks after the tree is parsed ---- */

static bool addr_equal(const struct gr_addr *a, const struct gr_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static int build_tls(struct config_yaml *c, struct gr_config *cfg)
{
    char err[400];
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct gr_listener_cfg *l = &cfg->listeners[i];
        if (l->tls.set && tls_server_build(&l->tls, l->grpc_web, err, sizeof(err)) != GR_OK)
            return fail_at(c, l->tls_pos, "listener '%s': tls: %s", l->name, err);
    }
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct gr_cluster_cfg *cl = &cfg->clusters[i];
        if (cl->tls.set && tls_client_build(&cl->tls, err, sizeof(err)) != GR_OK)
            return fail_at(c, cl->tls_pos, "cluster '%s': tls: %s", cl->name, err);
    }
    return GR_OK;
}

static int validate(struct config_yaml *c, struct gr_config *cfg)
{
    enum log_level lvl;
    if (log_level_parse(cfg->log_level, &lvl) != 0)
        return fail_at(c, (struct gr_pos){1, 1}, "'log_level' must be one of error, warn, info, debug, got '%s'",
                       cfg->log_level);
    if (cfg->drain_delay_ms > cfg->drain_timeout_ms)
        return fail_at(c, (struct gr_pos){1, 1},
                       "'drain_delay' (%llums) must not exceed 'drain_timeout' (%llums): "
                       "drain_timeout counts from the signal",
                       (unsigned long long)cfg->drain_delay_ms, (unsigned long long)cfg->drain_timeout_ms);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        cfg->listeners[i].slot = i;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        cfg->clusters[i].index = i;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->clusters[i].name, cfg->clusters[j].name) == 0)
                return fail_at(c, cfg->clusters[i].pos, "duplicate cluster name '%s' (first at line %u)",
                               cfg->clusters[i].name, cfg->clusters[j].pos.line);
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct gr_listener_cfg *l = &cfg->listeners[i];
        for (size_t j = 0; j < i; j++) {
            if (strcmp(l->name, cfg->listeners[j].name) == 0)
                return fail_at(c, l->pos, "duplicate listener name '%s' (first at line %u)", l->name,
                               cfg->listeners[j].pos.line);
            if (addr_equal(&l->address, &cfg->listeners[j].address))
                return fail_at(c, l->pos, "listener '%s' uses address %s of listener '%s'", l->name, l->address.text,
                               cfg->listeners[j].name);
        }
        for (size_t v = 0; v < l->n_vhosts; v++) {
            struct gr_vhost_cfg *vh = &l->vhosts[v];
            for (size_t w = 0; w < v; w++)
                if (strcmp(vh->name, l->vhosts[w].name) == 0)
                    return fail_at(c, vh->pos, "duplicate virtual host name '%s' in listener '%s'", vh->name, l->name);
            for (size_t d = 0; d < vh->n_domains; d++) {
                const char *dom = vh->domains[d];
                size_t dl = strlen(dom);
                if (dl == 0)
                    return fail_at(c, vh->pos, "virtual host '%s': empty domain", vh->name);
                const char *star = strchr(dom, '*');
                if (star != NULL && !(dl == 1 || (star == dom && dom[1] == '.') ||
                                      (star == dom + dl - 1 && dl > 1 && dom[dl - 2] == '.')))
                    return fail_at(c, vh->pos,
                                   "virtual host '%s': domain '%s' must be 'host', '*.suffix', 'prefix.*' or '*'",
                                   vh->name, dom);
                if (star != NULL && strchr(star + 1, '*') != NULL)
                    return fail_at(c, vh->pos, "virtual host '%s': domain '%s' has more than one '*'", vh->name, dom);
                for (size_t w = 0; w <= v; w++) {
                    struct gr_vhost_cfg *o = &l->vhosts[w];
                    size_t lim = w == v ? d : o->n_domains;
                    for (size_t e = 0; e < lim; e++)
                        if (strcmp(o->domains[e], dom) == 0)
                            return fail_at(c, vh->pos, "domain '%s' appears twice in listener '%s'", dom, l->name);
                }
            }
            for (size_t r = 0; r < vh->n_routes; r++) {
                struct gr_route_cfg *rt = &vh->routes[r];
                for (size_t k = 0; k < cfg->n_clusters; k++)
                    if (strcmp(rt->cluster_name, cfg->clusters[k].name) == 0)
                        rt->cluster = &cfg->clusters[k];
                if (rt->cluster == NULL)
                    return fail_at(c, rt->cluster_pos, "route names cluster '%s', which is not defined",
                                   rt->cluster_name);
            }
        }
    }
    return config_ops_check(c, cfg);
}

struct gr_config *config_load_buffer(const char *name, const char *data, size_t len, char *err, size_t errlen)
{
    struct gr_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    arena_init(&cfg->arena, 4096);
    struct config_yaml c = {.arena = &cfg->arena, .name = name, .err = err, .errlen = errlen, .dump = &cfg->dump_json};
    if (config_yaml_load(&c, data, len, &top_schema, cfg) != GR_OK || validate(&c, cfg) != GR_OK ||
        build_tls(&c, cfg) != GR_OK || breaker_bind(cfg) != GR_OK) {
        config_free(cfg);
        return NULL;
    }
    cfg->path = arena_strndup(&cfg->arena, name, strlen(name));
    atomic_init(&cfg->refs, 1);
    return cfg;
}

struct gr_config *config_load_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, len = 0;
    char *data = malloc(cap);
    while (data != NULL) {
        size_t n = fread(data + len, 1, cap - len, f);
        len += n;
        if (len < cap)
            break;
        if (cap >= (64u << 20)) {
            snprintf(err, errlen, "%s: larger than 64 MiB", path);
            free(data);
            fclose(f);
            return NULL;
        }
        char *nd = realloc(data, cap * 2);
        if (nd == NULL) {
            free(data);
            data = NULL;
            break;
        }
        data = nd;
        cap *= 2;
    }
    if (data == NULL || ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, data ? strerror(errno) : "out of memory");
        free(data);
        fclose(f);
        return NULL;
    }
    fclose(f);
    struct gr_config *cfg = config_load_buffer(path, data, len, err, errlen);
    free(data);
    return cfg;
}

struct gr_config *config_ref(struct gr_config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct gr_config *cfg)
{
    if (cfg != NULL && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        config_free(cfg);
}

void config_free(struct gr_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].tls.set)
            tls_server_free(&cfg->listeners[i].tls);
    for (size_t i = 0; i < cfg->n_clusters; i++)
        if (cfg->clusters[i].tls.set)
            tls_client_free(&cfg->clusters[i].tls);
    breaker_unbind(cfg);
    arena_free(&cfg->arena);
    free(cfg);
}
