/* YAML -> validated config snapshot.
 *
 * Every key is declared once in a table (struct config_field): its setter,
 * bounds, whether it is required and where it is stored. The walker in
 * config_yaml.c applies the tables to libyaml's document tree, so every
 * error can name the file, line and column of the node at fault; this file
 * holds the tables, the checks across keys and the checks across the whole
 * file, and builds the TLS contexts. */
#include "grelay/config.h"
#include "grelay/common.h"
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
static int set_addr(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
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
static const struct config_schema vhost_schema = {
    "virtual host", sizeof(struct gr_vhost_cfg), OFF(struct gr_vhost_cfg, pos), vhost_fields, NULL, NULL};

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
}

static const struct config_field listener_fields[] = {
    {.key = "name", .set = config_yaml_set_str, .off = OFF(struct gr_listener_cfg, name), .flags = FL_REQUIRED},
    {.key = "address", .set = set_addr, .off = OFF(struct gr_listener_cfg, address), .flags = FL_REQUIRED},
    {.key = "virtual_hosts",
     .set = config_yaml_set_list,
     .off = OFF(struct gr_listener_cfg, vhosts),
     .count_off = OFF(struct gr_listener_cfg, n_vhosts),
     .sub = &vhost_schema,
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

static const char *const lb_policy_names[] = {"round_robin", "least_request", "random", NULL};
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
    return GR_OK;
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
    cl->connection_window = 1024 * 1024;
}

static const struct config_field cluster_fields[] = {
    {.key = "name", .set = config_yaml_set_str, .off = OFF(struct gr_cluster_cfg, name), .flags = FL_REQUIRED},
    {.key = "lb_policy",
     .set = config_yaml_set_enum,
     .off = OFF(struct gr_cluster_cfg, lb_policy),
     .names = lb_policy_names},
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
    {0},
};
static const struct config_schema cluster_schema = {
    "cluster",    sizeof(struct gr_cluster_cfg), OFF(struct gr_cluster_cfg, pos), cluster_fields, cluster_init,
    check_cluster};

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
    {0},
};

static void top_init(void *obj)
{
    struct gr_config *cfg = obj;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = n > 0 ? (uint32_t)n : 1;
    cfg->log_level = "info";
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
    return GR_OK;
}

struct gr_config *config_load_buffer(const char *name, const char *data, size_t len, char *err, size_t errlen)
{
    struct gr_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    arena_init(&cfg->arena, 4096);
    struct config_yaml c = {.arena = &cfg->arena, .name = name, .err = err, .errlen = errlen};
    if (config_yaml_load(&c, data, len, &top_schema, cfg) != GR_OK || validate(&c, cfg) != GR_OK ||
        build_tls(&c, cfg) != GR_OK) {
        config_free(cfg);
        return NULL;
    }
    cfg->path = arena_strndup(&cfg->arena, name, strlen(name));
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
    arena_free(&cfg->arena);
    free(cfg);
}
