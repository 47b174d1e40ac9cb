/* Configuration snapshot: YAML parsed and validated into immutable structs.
 * Owned by the main thread; workers hold a pointer for their whole run.
 * Everything lives in the snapshot's arena. */
#ifndef GRELAY_CONFIG_H
#define GRELAY_CONFIG_H

#include "grelay/arena.h"
#include "grelay/common.h"
#include "grelay/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A socket address written as "ip:port" or "[ipv6]:port". */
struct gr_addr {
    struct sockaddr_storage ss; /* the address */
    socklen_t len;              /* its length */
    const char *text;           /* as written in the file */
};

enum lb_policy_kind { LB_ROUND_ROBIN = 0, LB_LEAST_REQUEST = 1, LB_RANDOM = 2 };
enum discovery_kind { DISCOVERY_STATIC = 0, DISCOVERY_STRICT_DNS = 1, DISCOVERY_LOGICAL_DNS = 2 };

struct gr_endpoint_cfg {
    const char *text;       /* as written: "10.0.0.1:50051" or "backend.internal:50051" */
    struct gr_pos text_pos; /* where */
    struct gr_addr address; /* where the backend listens (IP literals only) */
    bool is_name;           /* a host name, resolved by DNS discovery */
    const char *host;       /* the host part, without brackets */
    uint16_t port;
    uint32_t weight;        /* share for round_robin and random, 1..1000 */
    struct gr_pos pos;      /* where it is written */
};

struct gr_cluster_cfg {
    const char *name;                  /* unique among clusters */
    enum lb_policy_kind lb_policy;     /* how each stream picks an endpoint */
    enum discovery_kind discovery;     /* static, strict_dns or logical_dns */
    uint64_t dns_refresh_ms;           /* re-resolve at least this often */
    const char **dns_resolvers;        /* "ip:port" of DNS servers; none = the system's */
    size_t n_dns_resolvers;
    struct gr_endpoint_cfg *endpoints; /* the backends */
    size_t n_endpoints;
    uint64_t connect_timeout_ms;       /* connect + HTTP/2 preface budget */
    uint32_t max_connections;          /* upstream connections per endpoint per worker */
    uint32_t max_pending;              /* streams that may wait for a slot, per endpoint per worker */
    uint32_t max_streams_per_connection; /* our cap on top of the peer's MAX_CONCURRENT_STREAMS; 0 = peer's */
    uint32_t stream_buffer;            /* response bytes buffered per stream = upstream stream window */
    uint32_t connection_window;        /* upstream connection-level receive window */
    struct gr_tls_client_cfg tls;      /* TLS to the endpoints, when set */
    struct gr_pos tls_pos;
    size_t index;                      /* position in gr_config.clusters */
    struct gr_pos pos;
};

struct gr_header_match_cfg {
    const char *name;  /* lower-case header name */
    const char *exact; /* required value, or NULL */
    bool present;      /* true: the header must be there (any value) */
};

enum route_path_kind { ROUTE_PREFIX = 1, ROUTE_EXACT = 2, ROUTE_SERVICE = 3 };

struct gr_match_cfg {
    const char *prefix;  /* path prefix */
    const char *exact;   /* whole path */
    const char *path_alias; /* "path:", Envoy's spelling of exact */
    const char *service; /* "package.Service" */
    const char *method;  /* with service: one method */
    struct gr_header_match_cfg *headers; /* all must match */
    size_t n_headers;
    /* Derived at load time: */
    enum route_path_kind kind; /* which path matcher is set */
    const char *path;          /* the string compared against :path */
    size_t path_len;
};

/* CORS for browsers (gRPC-Web), per virtual host or per route. */
struct gr_cors_cfg {
    bool set;                    /* written in the file (a route's replaces its host's) */
    const char **allow_origins;  /* exact origins, one-star patterns, or a lone star */
    size_t n_allow_origins;
    const char **allow_methods;  /* default POST, GET, OPTIONS */
    size_t n_allow_methods;
    const char **allow_headers;  /* added to the gRPC-Web defaults */
    size_t n_allow_headers;
    const char **expose_headers; /* added to grpc-status, grpc-message, grpc-status-details-bin */
    size_t n_expose_headers;
    uint32_t max_age;            /* seconds; 0 = not sent */
    bool allow_credentials;
    /* Derived at load time, ready to send: */
    const char *methods_value;
    const char *headers_value;
    const char *expose_value;
    const char *max_age_value;   /* NULL when max_age is 0 */
};

struct gr_backoff_cfg {
    uint64_t base_interval_ms; /* first retry waits up to this (full jitter) */
    uint64_t max_interval_ms;  /* no wait is longer */
};

struct gr_retry_cfg {
    const char **retry_on;      /* gRPC status names, as written */
    size_t n_retry_on;
    uint32_t retry_on_mask;     /* derived: bit N = retry on status N */
    uint32_t num_retries;       /* retries after the first attempt */
    uint64_t per_try_timeout_ms;/* 0 = none */
    struct gr_backoff_cfg backoff;
};

struct gr_route_cfg {
    struct gr_match_cfg match;      /* when the route applies */
    uint64_t timeout_ms;            /* deadline when the client sends no grpc-timeout; 0 = none */
    uint64_t max_grpc_timeout_ms;   /* cap on the client's grpc-timeout; 0 = no cap */
    uint64_t grpc_timeout_offset_ms;/* subtracted from the grpc-timeout sent upstream */
    struct gr_retry_cfg retry;      /* configured retries; num_retries 0 = none */
    struct gr_cors_cfg cors;        /* overrides the virtual host's when set */
    const char *cluster_name;       /* where it sends calls */
    struct gr_pos cluster_pos;      /* where cluster is named */
    struct gr_cluster_cfg *cluster; /* resolved from cluster_name */
    struct gr_pos pos;
};

struct gr_vhost_cfg {
    const char *name;
    const char **domains; /* "host", "*.suffix", "prefix.*" or "*" */
    size_t n_domains;
    struct gr_route_cfg *routes; /* first match wins */
    size_t n_routes;
    struct gr_cors_cfg cors;     /* for routes without their own */
    struct gr_pos pos;
};

struct gr_listener_cfg {
    const char *name;
    struct gr_addr address;
    struct gr_vhost_cfg *vhosts;
    size_t n_vhosts;
    uint32_t max_concurrent_streams; /* advertised to clients */
    uint32_t stream_buffer;          /* request bytes buffered per stream = downstream stream window */
    uint32_t connection_window;      /* downstream connection-level receive window */
    uint32_t max_request_headers;    /* bytes of request header names and values */
    bool grpc_web;                   /* accept gRPC-Web (and HTTP/1.1) besides native gRPC */
    struct gr_tls_server_cfg tls;    /* TLS, when set */
    struct gr_pos tls_pos;
    uint32_t grpc_web_max_request;   /* largest gRPC-Web request body and message */
    uint64_t hibernate_after_ms;     /* an HTTP/2 connection with no call this long frees its session; 0: never */
    struct gr_pos pos;
};

struct gr_config {
    struct arena arena;               /* owns everything below */
    const char *path;                 /* file it came from */
    uint32_t workers;                 /* worker threads */
    const char *log_level;            /* error, warn, info, debug */
    struct gr_listener_cfg *listeners;
    size_t n_listeners;
    struct gr_cluster_cfg *clusters;
    size_t n_clusters;
};

/* Loads and validates a file. On failure returns NULL and writes
 * "file:line:col: what is wrong" into err. */
struct gr_config *config_load_file(const char *path, char *err, size_t errlen);
/* The same from memory; name is used in error messages. */
struct gr_config *config_load_buffer(const char *name, const char *data, size_t len, char *err, size_t errlen);
void config_free(struct gr_config *cfg);
/* Parses an IP literal with a port, "a.b.c.d:port" or "[ipv6]:port", into
 * out; out->text points at text (not copied). Returns 0, or GR_ERR_CONFIG
 * with *why saying what is wrong ("port must be 1..65535", ...). */
int config_parse_addr(const char *text, struct gr_addr *out, const char **why);

#endif
