/* The configuration's types: YAML parsed and validated into immutable
 * structs (config.h loads them): one snapshot, refcounted (config_ref):
 * the main thread and every worker still running calls on it hold one
 * (docs/reload.md). Everything lives in the snapshot's arena.
 * Apart from config.h so that the YAML tables of config_route.c can use
 * them without depending on the loader. */
#ifndef GRELAY_CONFIG_TYPES_H
#define GRELAY_CONFIG_TYPES_H

#include "grelay/arena.h"
#include "grelay/common.h"
#include "grelay/tls.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct stats_key;

/* A socket address written as "ip:port" or "[ipv6]:port". */
struct gr_addr {
    struct sockaddr_storage ss; /* the address */
    socklen_t len;              /* its length */
    const char *text;           /* as written in the file */
};

enum lb_policy_kind { LB_ROUND_ROBIN = 0, LB_LEAST_REQUEST = 1, LB_RANDOM = 2, LB_RING_HASH = 3, LB_MAGLEV = 4 };
/* What a hashing cluster (ring_hash, maglev) hashes of each call (docs/affinity.md). */
enum hash_on_kind { HASH_ON_NONE = 0, HASH_ON_HEADER = 1, HASH_ON_AUTHORITY = 2, HASH_ON_PEER = 3 };
enum discovery_kind { DISCOVERY_STATIC = 0, DISCOVERY_STRICT_DNS = 1, DISCOVERY_LOGICAL_DNS = 2 };

/* One endpoint as written in a cluster: an IP literal, or a host name for
 * DNS discovery to resolve. */
struct gr_endpoint_cfg {
    const char *text;       /* as written: "10.0.0.1:50051" or "backend.internal:50051" */
    struct gr_pos text_pos; /* where the address value is (quoted by address errors) */
    struct gr_addr address; /* where the backend listens; filled only when !is_name */
    bool is_name;           /* a host name, for DNS discovery (the cluster must be strict_dns or logical_dns) */
    const char *host;       /* the host part, without brackets: the IP literal or the name */
    uint16_t port;          /* the port part, 1..65535 */
    uint32_t weight;        /* share for round_robin and random, 1..1000; default 1 */
    struct gr_pos pos;      /* where it is written */
};

/* A cluster's keepalive: PING an upstream connection that has read
 * nothing for interval; no ACK within timeout and it is lost. */
struct gr_keepalive_cfg {
    uint64_t interval_ms; /* quiet time before a PING; 0: no PINGs */
    uint64_t timeout_ms;  /* how long the ACK may take */
};

/* A cluster's active health check: grpc.health.v1.Health/Check sent to
 * each endpoint every interval (+-10%) from the main thread (health.h). */
struct gr_health_check_cfg {
    bool set;                     /* a health_check: block is written: endpoints are checked */
    uint64_t interval_ms;         /* between two checks of an endpoint; default 5 s */
    uint64_t timeout_ms;          /* a check not answered within this fails; default 1 s, at most interval */
    uint32_t unhealthy_threshold; /* failed checks in a row (timeouts, connect failures, errors) to go unhealthy */
    uint32_t healthy_threshold;   /* good checks in a row for an unhealthy endpoint to come back */
    const char *service_name;     /* the service asked about; "" = the server as a whole */
    const char *authority;        /* :authority of the check; NULL or "": the endpoint's host and port */
    struct gr_pos pos;            /* where health_check: is written */
};

/* A cluster's circuit_breakers (breaker.h): bounds on what the cluster has
 * in flight, all workers together. */
struct gr_breaker_cfg {
    bool set;              /* circuit_breakers: is written; without it no bound applies */
    uint32_t max_requests; /* calls of the cluster in flight; default 10000 */
    uint32_t max_pending;  /* calls of the cluster in the pools' lines, waiting for a stream slot; default 1024 */
    uint32_t max_retries;  /* configured retries in flight; default 3 (the retry_budget replaces it) */
    bool max_retries_set;  /* max_retries is written (then a retry_budget beside it is an error) */
    struct gr_pos pos;     /* where circuit_breakers: is written */
};

/* A cluster's retry_budget (breaker.h): configured retries in flight are at
 * most max(min_concurrent, percent% of the cluster's calls in flight). */
struct gr_retry_budget_cfg {
    bool set;                /* retry_budget: is written: it replaces circuit_breakers.max_retries */
    uint32_t percent;        /* of the calls in flight; default 20 */
    uint32_t min_concurrent; /* retries always allowed in flight; default 3 */
    struct gr_pos pos;       /* where retry_budget: is written */
};

struct breaker;

/* A cluster's hash_on: the call's key for ring_hash and maglev. */
struct gr_hash_on_cfg {
    enum hash_on_kind kind; /* HASH_ON_NONE when not written */
    const char *header;     /* HASH_ON_HEADER: the lower-cased header name (its first value is the key) */
    struct gr_pos pos;      /* where hash_on: is written */
};

/* A cluster's outlier_detection: passive ejection of an endpoint whose
 * calls fail in a row, counted by each worker on its own (outlier.h). */
struct gr_outlier_cfg {
    bool set;                       /* an outlier_detection: block is written: calls may eject endpoints */
    uint32_t consecutive_failures;  /* failed attempts in a row that eject; default 5 */
    uint32_t failure_mask;          /* bit N: grpc-status N is a failure (resets always are); never OK */
    uint64_t base_ejection_time_ms; /* the first ejection's length, doubled for each one in a row; 30 s */
    uint64_t max_ejection_time_ms;  /* the cap on that doubling; 300 s, at least base_ejection_time */
    uint32_t max_ejection_percent;  /* of the cluster's endpoints ejected at once per worker (at least one); 50 */
    struct gr_pos pos;              /* where outlier_detection: is written */
};

/* A named group of backends that routes send calls to. */
struct gr_cluster_cfg {
    const char *name;                    /* unique among clusters */
    enum lb_policy_kind lb_policy;       /* how each stream picks an endpoint */
    enum discovery_kind discovery;       /* static, strict_dns or logical_dns */
    uint64_t dns_refresh_ms;             /* re-resolve at least this often */
    const char **dns_resolvers;          /* "ip:port" of DNS servers; none = the system's */
    size_t n_dns_resolvers;              /* entries in dns_resolvers; 0 when not written */
    struct gr_endpoint_cfg *endpoints;   /* the backends */
    size_t n_endpoints;                  /* entries in endpoints, at least 1 */
    uint64_t connect_timeout_ms;         /* connect + HTTP/2 preface budget */
    uint32_t max_connections;            /* upstream connections per endpoint per worker */
    uint32_t max_pending;                /* streams that may wait for a slot, per endpoint per worker */
    uint32_t max_streams_per_connection; /* our cap on top of the peer's MAX_CONCURRENT_STREAMS; 0 = peer's */
    uint32_t stream_buffer;              /* response bytes buffered per stream = upstream stream window */
    uint32_t connection_window;          /* upstream connection-level receive window */
    uint64_t idle_timeout_ms;            /* an upstream connection with no stream this long is closed; 0: never */
    struct gr_keepalive_cfg keepalive;   /* HTTP/2 PING liveness check of upstream connections */
    uint64_t max_pending_time_ms;        /* longest wait in the line for a stream slot; 0: only the deadline */
    uint64_t drain_timeout_ms;           /* calls on an endpoint that left the set: cut after this; 0: never */
    uint64_t max_connection_age_ms;      /* an upstream connection this old (+-10%) takes no new stream; 0: no limit */
    const struct stats_key *stats;       /* its series (stats_bind) */
    struct gr_health_check_cfg health_check; /* active health checks, when set */
    uint32_t panic_threshold;                /* percent: below this share of healthy endpoints, balance over all */
    struct gr_outlier_cfg outlier;           /* passive ejection from failed calls, when set */
    struct gr_tls_client_cfg tls;            /* TLS to the endpoints, when set */
    struct gr_pos tls_pos;                   /* where tls: is written (quoted by TLS build errors) */
    struct gr_breaker_cfg circuit_breakers;  /* the cluster's bounds, when set */
    struct gr_retry_budget_cfg retry_budget; /* the share of calls that may be retries, when set */
    struct breaker *breaker;       /* its counters, shared by every snapshot that names the cluster (breaker_bind) */
    size_t index;                  /* slot in the workers' cluster arrays: its position at load; a reload
                                            gives a kept cluster its old slot, a new one a free slot (proxy.c) */
    struct gr_pos pos;             /* where the cluster is written */
    struct gr_pos lb_policy_pos;   /* where lb_policy's value is written (0: not written) */
    struct gr_hash_on_cfg hash_on; /* the key of ring_hash and maglev (docs/affinity.md) */
};

/* One header condition of a route match: exactly one of exact or present. */
struct gr_header_match_cfg {
    const char *name;  /* lower-case header name */
    const char *exact; /* required value, or NULL */
    bool present;      /* true: the header must be there (any value) */
};

enum route_path_kind { ROUTE_PREFIX = 1, ROUTE_EXACT = 2, ROUTE_SERVICE = 3 };

/* When a route applies: exactly one of prefix, exact (or path) and service,
 * and every header condition. */
struct gr_match_cfg {
    const char *prefix;                  /* path prefix */
    const char *exact;                   /* whole path; set from path_alias when that is written */
    const char *path_alias;              /* "path:", Envoy's spelling of exact */
    const char *service;                 /* "package.Service" */
    const char *method;                  /* with service: one method */
    struct gr_header_match_cfg *headers; /* all must match */
    size_t n_headers;                    /* entries in headers; 0: no header condition */
    /* Derived at load time: */
    enum route_path_kind kind; /* how path is compared: ROUTE_PREFIX or ROUTE_EXACT (service maps to these) */
    const char *path;          /* the string compared against :path (its query is ignored) */
    size_t path_len;           /* strlen(path) */
};

/* CORS for browsers (gRPC-Web), per virtual host or per route. */
struct gr_cors_cfg {
    bool set;                    /* written in the file (a route's replaces its host's) */
    const char **allow_origins;  /* exact origins, one-star patterns, or a lone star */
    size_t n_allow_origins;      /* entries in allow_origins, at least 1 */
    const char **allow_methods;  /* default POST, GET, OPTIONS */
    size_t n_allow_methods;      /* entries in allow_methods (3 for the default) */
    const char **allow_headers;  /* added to the gRPC-Web defaults; lower-cased */
    size_t n_allow_headers;      /* entries in allow_headers */
    const char **expose_headers; /* added to grpc-status, grpc-message, grpc-status-details-bin; lower-cased */
    size_t n_expose_headers;     /* entries in expose_headers */
    uint32_t max_age;            /* seconds a preflight answer may be cached; 0 = not sent */
    bool allow_credentials;      /* send access-control-allow-credentials: true (cookies, client certificates) */
    /* Derived at load time, ready to send: */
    const char *methods_value; /* access-control-allow-methods, ", "-separated */
    const char *headers_value; /* access-control-allow-headers: the defaults, then allow_headers */
    const char *expose_value;  /* access-control-expose-headers: the gRPC trailers, then expose_headers */
    const char *max_age_value; /* access-control-max-age; NULL when max_age is 0 */
};

/* The wait before each configured retry. */
struct gr_backoff_cfg {
    uint64_t base_interval_ms; /* first retry waits up to this (full jitter) */
    uint64_t max_interval_ms;  /* no wait is longer */
};

/* A route's retry_policy. */
struct gr_retry_cfg {
    const char **retry_on;         /* gRPC status names, lower-cased (see grpc_status_from_name) */
    size_t n_retry_on;             /* entries in retry_on, at least 1 when the policy is written */
    uint32_t retry_on_mask;        /* derived: bit N = retry on status N (never OK) */
    uint32_t num_retries;          /* retries after the first attempt, 0..10; 1 when the policy is written */
    uint64_t per_try_timeout_ms;   /* budget of each attempt, retried whatever retry_on says; 0 = none */
    struct gr_backoff_cfg backoff; /* the wait between attempts */
};

/* One worker's token bucket of a route's rate_limit. */
#define GR_RATE_BUCKETS 256 /* one per worker (workers are at most 256) */
struct gr_rate_bucket {
    double tokens; /* calls it may still admit now; -1: never used (full) */
    double at;     /* ev_now of the last refill */
    char pad[48];  /* one cache line each: each worker writes only its own */
};

/* A route's rate_limit: a token bucket per worker, the rate and the burst
 * split evenly across the snapshot's workers (no shared state on the data
 * path). The buckets are the one mutable part of a snapshot, each written
 * by its worker only; a reload starts new (full) ones. */
struct gr_rate_limit_cfg {
    bool set;                       /* written: calls past the rate are refused */
    uint32_t requests_per_second;   /* the route's rate, all workers together */
    uint32_t burst;                 /* calls that may come at once; default requests_per_second */
    uint32_t status;                /* what a refused call gets: 8 RESOURCE_EXHAUSTED (default) or 14 UNAVAILABLE */
    struct gr_rate_bucket *buckets; /* GR_RATE_BUCKETS, in the snapshot's arena */
};

/* One route of a virtual host: a match and where matching calls go. */
struct gr_route_cfg {
    const char *name;                    /* the `route` label of metrics and the access log: as written, or
                                        "<virtual host name>/<index>" (index from 0) */
    const struct stats_key *stats;       /* its series (listener, route, cluster): stats_bind */
    struct gr_match_cfg match;           /* when the route applies */
    uint64_t timeout_ms;                 /* deadline when the client sends no grpc-timeout; 0 = none */
    uint64_t max_grpc_timeout_ms;        /* cap on the client's grpc-timeout; 0 = no cap */
    uint64_t grpc_timeout_offset_ms;     /* subtracted from the grpc-timeout sent upstream */
    struct gr_retry_cfg retry;           /* configured retries; num_retries 0 = none */
    struct gr_rate_limit_cfg rate_limit; /* calls per second admitted; unset: no limit */
    struct gr_cors_cfg cors;             /* overrides the virtual host's when set */
    const char *cluster_name;            /* where it sends calls */
    struct gr_pos cluster_pos;           /* where cluster is named */
    struct gr_cluster_cfg *cluster;      /* resolved from cluster_name */
    struct gr_pos pos;                   /* where the route is written */
};

/* A virtual host: the routes for the :authority values it serves. */
struct gr_vhost_cfg {
    const char *name;            /* unique within its listener; for messages */
    const char **domains;        /* "host", "*.suffix", "prefix.*" or "*"; lower-cased, unique within the listener */
    size_t n_domains;            /* entries in domains, at least 1 */
    struct gr_route_cfg *routes; /* first match wins */
    size_t n_routes;             /* entries in routes, at least 1 */
    struct gr_cors_cfg cors;     /* for routes without their own */
    struct gr_pos pos;           /* where the virtual host is written */
};

/* An address clients connect to, and what it serves. */
struct gr_listener_cfg {
    const char *name;                   /* unique among listeners; for messages */
    struct gr_addr address;             /* where to listen (an IP literal); unique among listeners */
    struct gr_vhost_cfg *vhosts;        /* chosen by :authority (router_find_vhost) */
    size_t n_vhosts;                    /* entries in vhosts, at least 1 */
    uint32_t max_concurrent_streams;    /* advertised to clients (SETTINGS_MAX_CONCURRENT_STREAMS) */
    uint32_t stream_buffer;             /* request bytes buffered per stream = downstream stream window */
    uint32_t connection_window;         /* downstream connection-level receive window */
    uint32_t max_request_headers;       /* bytes of request header fields, each counted as 32 + name + value
                                      * (RFC 9113 §6.5.2); also sent as SETTINGS_MAX_HEADER_LIST_SIZE */
    uint32_t max_request_header_fields; /* fields in one request header block (pseudo-headers included) */
    uint32_t max_connections;           /* client connections on this listener, whole process; past it accept waits */
    uint64_t idle_timeout_ms;           /* a client connection with no call in flight this long is closed; 0: never */
    uint64_t
        request_headers_timeout_ms; /* accept (or the previous HTTP/1.1 request) until headers are complete; 0: none */
    uint64_t
        stream_write_timeout_ms; /* response bytes waiting this long for a client that does not read: reset; 0: never */
    bool grpc_web;               /* accept gRPC-Web (and HTTP/1.1) besides native gRPC */
    uint32_t connection_buffer;  /* bytes one connection's calls may hold (responses queued, replay copies)
                                    before new streams are refused and replay copies dropped (stream.c) */
    struct gr_tls_server_cfg tls;  /* TLS, when set */
    struct gr_pos tls_pos;         /* where tls: is written (quoted by TLS build errors) */
    uint32_t grpc_web_max_request; /* largest gRPC-Web request body and message */
    uint64_t hibernate_after_ms;   /* an HTTP/2 connection with no call this long frees its session; 0: never */
    struct gr_pos pos;             /* where the listener is written */

    /* The age of client connections (issue 13). */
    uint64_t max_connection_age_ms;       /* a client connection this old (±10% jitter) is drained (two-phase GOAWAY,
                                             or Connection: close); 0: never */
    uint64_t max_connection_age_grace_ms; /* then its calls have this long before they are cut (UNAVAILABLE) */
    uint32_t max_requests_per_connection; /* a client connection drains (as at max_connection_age) once this many
                                             calls began on it; 0: no limit */
    const struct stats_key *stats;        /* its series (stats_bind) */
    size_t slot; /* the workers' socket and connection count: its position at load; a reload keeps it while
                    name, address and TLS on/off stay (proxy.c) */
};

/* The process-wide overload guard. */
struct gr_overload_cfg {
    uint64_t max_heap; /* heap bytes in use above which new streams are refused and accepts wait; 0: off */
};

/* The admin endpoint (admin.c), on the main thread's loop. */
struct gr_admin_cfg {
    bool set;               /* admin: is written; without it there is no admin listener */
    struct gr_addr address; /* where it listens (an IP literal) */
    bool allow_mutations;   /* POST /reload, /drain and /log_level work; without it they answer 403 */
    struct gr_pos pos;      /* where admin: is written */
};

enum access_log_format { ACCESS_LOG_JSON = 0, ACCESS_LOG_TEXT = 1 };

/* The access log (access_log.c): one line per call, written when it ends. */
struct gr_access_log_cfg {
    bool set;                      /* access_log: is written; without it nothing is logged */
    const char *path;              /* a file (appended to; SIGUSR1 reopens it) or /dev/stdout, /dev/stderr */
    enum access_log_format format; /* json (default) or text */
    const char *template_text;     /* text: the line, with %FIELD% operators (docs/access-log.md) */
    uint32_t buffer;               /* bytes of each worker's ring (fixed at start); 0 (no access_log:): the default */
    struct gr_pos pos;             /* where access_log: is written */
};

/* Metrics (stats.c). */
#define GR_STATS_MAX_BUCKETS 32
struct gr_stats_cfg {
    uint32_t max_methods;                 /* distinct (service, method) label pairs; past it "other" */
    const char **bucket_text;             /* buckets as written (seconds), or none: the default */
    size_t n_bucket_text;                 /* entries of bucket_text */
    double buckets[GR_STATS_MAX_BUCKETS]; /* derived: upper bounds in seconds, ascending (+Inf implied) */
    size_t n_buckets;                     /* entries of buckets */
};

/* The x-request-id of each call. */
struct gr_request_id_cfg {
    bool generate; /* a request without x-request-id gets one, forwarded upstream (default true) */
};

/* One loaded file: the root of the snapshot. */
struct gr_config {
    struct arena arena;                  /* owns everything below (not the SSL_CTXs: config_free frees those) */
    const char *path;                    /* file it came from (the name given to config_load_buffer) */
    uint32_t workers;                    /* worker threads, 1..256 when written; default: the CPUs online */
    const char *log_level;               /* error, warn, info or debug (any case), as written; default info */
    struct gr_listener_cfg *listeners;   /* names and addresses unique */
    size_t n_listeners;                  /* entries in listeners, at least 1 */
    struct gr_cluster_cfg *clusters;     /* names unique; every route's cluster is one of them */
    size_t n_clusters;                   /* entries in clusters; at least 1 once loaded, as every route needs one */
    struct gr_overload_cfg overload;     /* the overload guard */
    uint64_t drain_timeout_ms;           /* SIGTERM/SIGINT: how long calls in flight may take to finish (from the
                                          signal, drain_delay included); then they are cut with UNAVAILABLE */
    uint64_t drain_delay_ms;             /* SIGTERM/SIGINT: keep accepting this long, readiness false, first */
    bool watch_config;                   /* reload when the file (or its directory: ConfigMap symlinks) changes */
    struct gr_admin_cfg admin;           /* the admin endpoint; its address is fixed at start (a reload keeps it) */
    struct gr_access_log_cfg access_log; /* the access log */
    struct gr_stats_cfg stats;           /* metrics: cardinality and histogram buckets */
    struct gr_request_id_cfg request_id; /* x-request-id */
    const char *dump_json;               /* the file as JSON with secrets masked (GET /config_dump); or NULL */
    _Atomic uint32_t refs;               /* holders of the snapshot (config_ref); freed at 0 (config_unref) */
};

#endif
