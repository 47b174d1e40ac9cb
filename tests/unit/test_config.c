/* Config loader: good files load with the values and defaults we document;
 * bad ones fail with file:line:col and a message that says what is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config_fixture.h"

#include "grelay/common.h"
#include "grelay/config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static void issue_example_loads_with_defaults(void **state)
{
    (void)state;
    const char *yaml = "workers: 2\n" GOOD_HEAD "clusters:\n"
                       "  - name: backend\n"
                       "    lb_policy: round_robin        # least_request | random\n"
                       "    endpoints:\n"
                       "      - address: 127.0.0.1:50051\n"
                       "        weight: 1\n";
    char err[512];
    struct gr_config *cfg = load(yaml, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->workers, 2);
    assert_int_equal(cfg->n_listeners, 1);
    const struct gr_listener_cfg *l = &cfg->listeners[0];
    assert_string_equal(l->name, "ingress");
    assert_int_equal(l->address.ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&l->address.ss)->sin_port), 8080);
    assert_int_equal(l->max_concurrent_streams, 1024);
    assert_int_equal(l->stream_buffer, 65536);
    assert_int_equal(l->n_vhosts, 1);
    assert_int_equal(l->vhosts[0].routes[0].match.kind, ROUTE_PREFIX);
    assert_ptr_equal(l->vhosts[0].routes[0].cluster, &cfg->clusters[0]);
    assert_int_equal(cfg->clusters[0].lb_policy, LB_ROUND_ROBIN);
    assert_int_equal(cfg->clusters[0].endpoints[0].weight, 1);
    assert_int_equal(cfg->clusters[0].connect_timeout_ms, 5000);
    config_free(cfg);
}

/* watch_config is off unless written; a snapshot is refcounted, and slots
 * start as positions (a reload renumbers them, proxy.c). */
static void watch_config_and_snapshot_refs(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *cfg =
        load(GOOD_HEAD "clusters: [{name: backend, endpoints: [{address: 127.0.0.1:1}]}]\n", err, sizeof(err));
    assert_non_null(cfg);
    assert_false(cfg->watch_config);
    assert_int_equal(cfg->listeners[0].slot, 0);
    assert_int_equal(cfg->clusters[0].index, 0);
    assert_ptr_equal(config_ref(cfg), cfg);
    config_unref(cfg);
    config_unref(cfg); /* the last one frees it (AddressSanitizer sees a leak otherwise) */
    cfg = load("watch_config: true\n" GOOD_HEAD "clusters: [{name: backend, endpoints: [{address: 127.0.0.1:1}]}]\n",
               err, sizeof(err));
    assert_non_null(cfg);
    assert_true(cfg->watch_config);
    config_free(cfg);
}

static void values_sizes_durations_and_matchers(void **state)
{
    (void)state;
    const char *yaml = "listeners:\n"
                       "  - name: l\n"
                       "    address: \"[::1]:9000\"\n"
                       "    stream_buffer: 32KiB\n"
                       "    connection_window: 2MiB\n"
                       "    virtual_hosts:\n"
                       "      - name: v\n"
                       "        domains: [API.Example.com]\n"
                       "        routes:\n"
                       "          - match: { service: pkg.Svc, method: Get }\n"
                       "            cluster: c\n"
                       "          - match: { service: pkg.Svc }\n"
                       "            cluster: c\n"
                       "          - match:\n"
                       "              path: /a/b\n"
                       "              headers:\n"
                       "                - { name: X-Tenant, exact: blue }\n"
                       "                - { name: x-debug, present: true }\n"
                       "            cluster: c\n"
                       "clusters:\n"
                       "  - name: c\n"
                       "    lb_policy: least_request\n"
                       "    connect_timeout: 1.5s\n"
                       "    endpoints: [{address: 10.0.0.1:1, weight: 7}]\n";
    char err[512];
    struct gr_config *cfg = load(yaml, err, sizeof(err));
    assert_non_null(cfg);
    const struct gr_listener_cfg *l = &cfg->listeners[0];
    assert_int_equal(l->address.ss.ss_family, AF_INET6);
    assert_int_equal(l->stream_buffer, 32 * 1024);
    assert_int_equal(l->connection_window, 2 * 1024 * 1024);
    assert_string_equal(l->vhosts[0].domains[0], "api.example.com");
    const struct gr_route_cfg *r = l->vhosts[0].routes;
    assert_int_equal(r[0].match.kind, ROUTE_EXACT);
    assert_string_equal(r[0].match.path, "/pkg.Svc/Get");
    assert_int_equal(r[1].match.kind, ROUTE_PREFIX);
    assert_string_equal(r[1].match.path, "/pkg.Svc/");
    assert_int_equal(r[2].match.kind, ROUTE_EXACT);
    assert_string_equal(r[2].match.path, "/a/b");
    assert_int_equal(r[2].match.n_headers, 2);
    assert_string_equal(r[2].match.headers[0].name, "x-tenant");
    assert_string_equal(r[2].match.headers[0].exact, "blue");
    assert_true(r[2].match.headers[1].present);
    assert_int_equal(cfg->clusters[0].lb_policy, LB_LEAST_REQUEST);
    assert_int_equal(cfg->clusters[0].connect_timeout_ms, 1500);
    assert_int_equal(cfg->clusters[0].endpoints[0].weight, 7);
    config_free(cfg);
}

static void dns_discovery(void **state)
{
    (void)state;
    const char *yaml = GOOD_HEAD "clusters:\n"
                                 "  - name: backend\n"
                                 "    discovery: strict_dns\n"
                                 "    dns_refresh: 5s\n"
                                 "    dns_resolvers: [\"127.0.0.1:5353\"]\n"
                                 "    endpoints:\n"
                                 "      - address: backend.internal:50051\n"
                                 "      - address: 10.0.0.9:50052\n";
    char err[512];
    struct gr_config *cfg = load(yaml, err, sizeof(err));
    if (cfg == NULL)
        print_error("%s\n", err);
    assert_non_null(cfg);
    const struct gr_cluster_cfg *cl = &cfg->clusters[0];
    assert_int_equal(cl->discovery, DISCOVERY_STRICT_DNS);
    assert_int_equal(cl->dns_refresh_ms, 5000);
    assert_int_equal(cl->n_dns_resolvers, 1);
    assert_true(cl->endpoints[0].is_name);
    assert_string_equal(cl->endpoints[0].host, "backend.internal");
    assert_int_equal(cl->endpoints[0].port, 50051);
    assert_false(cl->endpoints[1].is_name);
    assert_string_equal(cl->endpoints[1].host, "10.0.0.9");
    config_free(cfg);
}

static void retry_policy_and_deadlines(void **state)
{
    (void)state;
    const char *yaml = "listeners:\n"
                       "  - name: l\n"
                       "    address: 127.0.0.1:1\n"
                       "    virtual_hosts:\n"
                       "      - name: v\n"
                       "        domains: ['*']\n"
                       "        routes:\n"
                       "          - match: { prefix: / }\n"
                       "            cluster: c\n"
                       "            timeout: 2s\n"
                       "            max_grpc_timeout: 30s\n"
                       "            grpc_timeout_offset: 5ms\n"
                       "            retry_policy:\n"
                       "              retry_on: [unavailable, Resource-Exhausted, cancelled]\n"
                       "              num_retries: 3\n"
                       "              per_try_timeout: 250ms\n"
                       "              backoff: { base_interval: 10ms, max_interval: 1s }\n"
                       "          - match: { prefix: /x }\n"
                       "            cluster: c\n"
                       "clusters: [{name: c, endpoints: [{address: 127.0.0.1:3}]}]\n";
    char err[512];
    struct gr_config *cfg = load(yaml, err, sizeof(err));
    if (cfg == NULL)
        print_error("%s\n", err);
    assert_non_null(cfg);
    const struct gr_route_cfg *r = cfg->listeners[0].vhosts[0].routes;
    assert_int_equal(r[0].timeout_ms, 2000);
    assert_int_equal(r[0].max_grpc_timeout_ms, 30000);
    assert_int_equal(r[0].grpc_timeout_offset_ms, 5);
    assert_int_equal(r[0].retry.retry_on_mask, (1u << 14) | (1u << 8) | (1u << 1));
    assert_int_equal(r[0].retry.num_retries, 3);
    assert_int_equal(r[0].retry.per_try_timeout_ms, 250);
    assert_int_equal(r[0].retry.backoff.base_interval_ms, 10);
    assert_int_equal(r[0].retry.backoff.max_interval_ms, 1000);
    /* No retry_policy: no configured retries (transparent ones still happen). */
    assert_int_equal(r[1].retry.num_retries, 0);
    assert_int_equal(r[1].retry.retry_on_mask, 0);
    assert_int_equal(r[1].timeout_ms, 0);
    config_free(cfg);
}

struct bad_case {
    const char *yaml;     /* the file */
    const char *expected; /* the whole error message, starting with t.yaml:line:col */
};

#define CLUSTERS "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:1}]\n"

static const struct bad_case bad_cases[] = {
    {"", "t.yaml:1:1: the file is empty"},
    {"workers: [1\n", "t.yaml:2:1: did not find expected ',' or ']' while parsing a flow sequence"},
    {"listeners: []\n", "t.yaml:1:12: 'listeners' must not be empty"},
    {"clusters: []\n", "t.yaml:1:1: the configuration needs 'listeners'"},
    {"workers: two\n" GOOD_HEAD CLUSTERS, "t.yaml:1:10: 'workers' must be a whole number, got 'two'"},
    {"workers: 0\n" GOOD_HEAD CLUSTERS, "t.yaml:1:10: 'workers' must be between 1 and 256, got '0'"},
    {"wrokers: 1\n" GOOD_HEAD CLUSTERS,
     "t.yaml:1:1: unknown key 'wrokers' in the configuration (expected one of: workers, log_level, listeners, "
     "clusters, overload, drain_timeout, drain_delay, watch_config, admin, access_log, stats, request_id)"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:1}]\n    name: again\n",
     "t.yaml:13:5: duplicate key 'name' in cluster"},
    {GOOD_HEAD "clusters:\n  - name: other\n    endpoints: [{address: 127.0.0.1:1}]\n",
     "t.yaml:9:22: route names cluster 'backend', which is not defined"},
    {GOOD_HEAD CLUSTERS "  - name: backend\n    endpoints: [{address: 127.0.0.1:2}]\n",
     "t.yaml:13:5: duplicate cluster name 'backend' (first at line 11)"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: localhost}]\n",
     "t.yaml:12:27: bad address 'localhost' for 'address': expected ip:port"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:70000}]\n",
     "t.yaml:12:27: bad address '127.0.0.1:70000' for 'address': port must be 1..65535"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 300.0.0.1:80}]\n",
     "t.yaml:12:27: bad address '300.0.0.1:80' for 'address': host must be an IPv4 address or a bracketed IPv6 "
     "address"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    lb_policy: fastest\n    endpoints: [{address: 127.0.0.1:1}]\n",
     "t.yaml:12:16: 'lb_policy' must be one of round_robin, least_request, random, ring_hash, maglev, got 'fastest'"},
    {GOOD_HEAD
     "clusters:\n  - name: backend\n    connect_timeout: 5 seconds\n    endpoints: [{address: 127.0.0.1:1}]\n",
     "t.yaml:12:22: 'connect_timeout' must be a duration such as 5s, 250ms, 1.5s or 2m, got '5 seconds'"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints:\n      - address: 127.0.0.1:1\n        weight: 0\n",
     "t.yaml:14:17: 'weight' must be between 1 and 1000, got '0'"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: {address: 127.0.0.1:1}\n",
     "t.yaml:12:16: 'endpoints' must be a list, got a mapping"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: /, service: a.B }\n            cluster: backend\n" CLUSTERS,
     "t.yaml:8:20: match needs exactly one of 'prefix', 'exact' (or 'path') or 'service'"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { method: Get }\n            cluster: backend\n" CLUSTERS,
     "t.yaml:8:20: match needs exactly one of 'prefix', 'exact' (or 'path') or 'service'"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: /, headers: [{name: x}] }\n            cluster: backend\n" CLUSTERS,
     "t.yaml:8:43: header matcher 'x' needs exactly one of 'exact' or 'present'"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: "
     "['a*b']\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n" CLUSTERS,
     "t.yaml:5:9: virtual host 'v': domain 'a*b' must be 'host', '*.suffix', 'prefix.*' or '*'"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*', "
     "x]\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n"
     "      - name: w\n        domains: [x]\n        routes:\n          - match: { prefix: / }\n"
     "            cluster: backend\n" CLUSTERS,
     "t.yaml:10:9: domain 'x' appears twice in listener 'a'"},
    {GOOD_HEAD "  - name: ingress\n    address: 127.0.0.1:8081\n    virtual_hosts: []\n" CLUSTERS,
     "t.yaml:12:20: 'virtual_hosts' must not be empty"},
    {GOOD_HEAD "  - name: second\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: v\n"
               "        domains: ['*']\n        routes: [{match: {prefix: /}, cluster: backend}]\n" CLUSTERS,
     "t.yaml:10:5: listener 'second' uses address 127.0.0.1:8080 of listener 'ingress'"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n"
     "            retry_policy: { retry_on: [unavailable, flaky] }\n" CLUSTERS,
     "t.yaml:10:27: retry_on: 'flaky' is not a gRPC status name (cancelled, unknown, deadline_exceeded, "
     "resource_exhausted, aborted, internal, unavailable, ...)"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n"
     "            retry_policy: { retry_on: [OK] }\n" CLUSTERS,
     "t.yaml:10:27: retry_on: 'ok' is not a gRPC status name (cancelled, unknown, deadline_exceeded, "
     "resource_exhausted, aborted, internal, unavailable, ...)"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n"
     "            retry_policy: { retry_on: [Deadline Exceeded] }\n" CLUSTERS,
     "t.yaml:10:27: retry_on: 'deadline exceeded' is not a gRPC status name (cancelled, unknown, "
     "deadline_exceeded, resource_exhausted, aborted, internal, unavailable, ...)"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n"
     "            retry_policy: { num_retries: 2 }\n" CLUSTERS,
     "t.yaml:10:27: retry_policy needs 'retry_on' with at least one status"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n      - name: v\n        domains: ['*']\n"
     "        routes:\n          - match: { prefix: / }\n            cluster: backend\n"
     "            timeout: soon\n" CLUSTERS,
     "t.yaml:10:22: 'timeout' must be a duration such as 5s, 250ms, 1.5s or 2m, got 'soon'"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: backend.internal:50051}]\n",
     "t.yaml:12:27: endpoint 'backend.internal:50051' is a host name: set discovery: strict_dns or logical_dns on "
     "cluster 'backend'"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    discovery: strict_dns\n    dns_resolvers: [localhost]\n"
               "    endpoints: [{address: backend.internal:50051}]\n",
     "t.yaml:11:5: dns_resolvers: 'localhost' must be ip:port (expected ip:port)"},
    {GOOD_HEAD "clusters:\n  - name: backend\n    discovery: dns\n    endpoints: [{address: a.b:1}]\n",
     "t.yaml:12:16: 'discovery' must be one of static, strict_dns, logical_dns, got 'dns'"},
    {"log_level: loud\n" GOOD_HEAD CLUSTERS,
     "t.yaml:1:1: 'log_level' must be one of error, warn, info, debug, got 'loud'"},
    {"drain_timeout: 5s\ndrain_delay: 10s\n" GOOD_HEAD CLUSTERS,
     "t.yaml:1:1: 'drain_delay' (10000ms) must not exceed 'drain_timeout' (5000ms): drain_timeout counts from the "
     "signal"},
    /* Cross-checks (review F7, F6): settings that would silently grant too much. */
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n    grpc_web: true\n    virtual_hosts:\n      - name: v\n"
     "        domains: ['*']\n        cors: { allow_origins: ['https://a.example', '*'], allow_credentials: true }\n"
     "        routes: [{match: {prefix: /}, cluster: backend}]\n" CLUSTERS,
     "t.yaml:8:15: cors: allow_credentials cannot go with the \"*\" origin (every page would be granted the user's "
     "credentials): list the origins"},
    {"listeners:\n  - name: a\n    address: 127.0.0.1:1\n"
     "    tls: { cert_chain: /x.crt, private_key: /x.key, require_client_cert: true }\n    virtual_hosts:\n"
     "      - name: v\n        domains: ['*']\n        routes: [{match: {prefix: /}, cluster: backend}]\n" CLUSTERS,
     "t.yaml:4:10: tls: require_client_cert needs client_ca (the CA that signs the client certificates); without it "
     "no client would be checked"},
};

static void bad_files_say_where_and_what(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        char err[512] = "";
        struct gr_config *cfg = load(bad_cases[i].yaml, err, sizeof(err));
        if (cfg != NULL || strcmp(err, bad_cases[i].expected) != 0) {
            print_error("case %zu:\n  expected: %s\n  got:      %s\n", i, bad_cases[i].expected,
                        cfg ? "(loaded)" : err);
            config_free(cfg);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void shipped_configs_load(void **state)
{
    (void)state;
    const char *files[] = {GRELAY_SOURCE_DIR "/conf/grelay.yaml", GRELAY_SOURCE_DIR "/conf/edge-routing.yaml",
                           GRELAY_SOURCE_DIR "/conf/health-checks.yaml"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char err[512];
        struct gr_config *cfg = config_load_file(files[i], err, sizeof(err));
        if (cfg == NULL)
            print_error("%s\n", err);
        assert_non_null(cfg);
        config_free(cfg);
    }
}

static void missing_file_says_so(void **state)
{
    (void)state;
    char err[512];
    assert_null(config_load_file("/nonexistent.yaml", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent.yaml: cannot open: No such file or directory");
}

static void parse_addr_takes_ip_literals(void **state)
{
    (void)state;
    struct gr_addr a;
    const char *why = NULL;
    assert_int_equal(config_parse_addr("127.0.0.1:8080", &a, &why), 0);
    assert_int_equal(a.ss.ss_family, AF_INET);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 8080);
    assert_string_equal(a.text, "127.0.0.1:8080");
    assert_int_equal(config_parse_addr("[::1]:443", &a, &why), 0);
    assert_int_equal(a.ss.ss_family, AF_INET6);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&a.ss)->sin6_port), 443);
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"localhost", "expected ip:port"},
        {"[::1]443", "expected [ipv6]:port"},
        {":80", "missing or overlong host"},
        {"127.0.0.1:0", "port must be 1..65535"},
        {"127.0.0.1:65536", "port must be 1..65535"},
        {"::1:80", "host must be an IPv4 address or a bracketed IPv6 address"},
        {"[127.0.0.1]:80", "host must be an IPv4 address or a bracketed IPv6 address"},
        {"backend.internal:80", "host must be an IPv4 address or a bracketed IPv6 address"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(config_parse_addr(bad[i].text, &a, &why), GR_ERR_CONFIG);
        assert_string_equal(why, bad[i].why);
    }
}

/* The limits and timers of hardening: their defaults, the issue's shape,
 * and what is refused. */
static void limits_and_timers(void **state)
{
    (void)state;
    char err[512];
    const char *plain = GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:50051}]\n";
    struct gr_config *cfg = load(plain, err, sizeof(err));
    assert_non_null(cfg);
    const struct gr_listener_cfg *l = &cfg->listeners[0];
    assert_int_equal(l->max_connections, 10000);
    assert_int_equal(l->idle_timeout_ms, 3600000);
    assert_int_equal(l->request_headers_timeout_ms, 10000);
    assert_int_equal(l->stream_write_timeout_ms, 30000);
    assert_int_equal(l->connection_buffer, 4 * 1024 * 1024);
    assert_int_equal(l->max_request_header_fields, 100);
    const struct gr_cluster_cfg *cl = &cfg->clusters[0];
    assert_int_equal(cl->idle_timeout_ms, 600000);
    assert_int_equal(cl->keepalive.interval_ms, 30000);
    assert_int_equal(cl->keepalive.timeout_ms, 10000);
    assert_int_equal(cl->max_pending_time_ms, 5000);
    assert_int_equal(cfg->overload.max_heap, 0);
    config_free(cfg);

    const char *shaped = "overload: { max_heap: 1GiB }\n"
                         "listeners:\n"
                         "  - name: edge\n"
                         "    address: 127.0.0.1:8080\n"
                         "    max_connections: 500\n"
                         "    idle_timeout: 1h\n"
                         "    request_headers_timeout: 2s\n"
                         "    stream_write_timeout: 0\n"
                         "    connection_buffer: 1MiB\n"
                         "    max_request_header_fields: 64\n"
                         "    virtual_hosts:\n"
                         "      - name: default\n"
                         "        domains: [\"*\"]\n"
                         "        routes: [{match: {prefix: \"/\"}, cluster: backend}]\n"
                         "clusters:\n"
                         "  - name: backend\n"
                         "    idle_timeout: 10m\n"
                         "    keepalive: { interval: 45s }\n"
                         "    max_pending_time: 250ms\n"
                         "    endpoints: [{address: 127.0.0.1:50051}]\n";
    cfg = load(shaped, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->overload.max_heap, 1ull << 30);
    l = &cfg->listeners[0];
    assert_int_equal(l->max_connections, 500);
    assert_int_equal(l->request_headers_timeout_ms, 2000);
    assert_int_equal(l->stream_write_timeout_ms, 0);
    assert_int_equal(l->connection_buffer, 1024 * 1024);
    assert_int_equal(l->max_request_header_fields, 64);
    cl = &cfg->clusters[0];
    assert_int_equal(cl->keepalive.interval_ms, 45000);
    assert_int_equal(cl->keepalive.timeout_ms, 10000); /* unwritten keys keep their defaults */
    assert_int_equal(cl->max_pending_time_ms, 250);
    config_free(cfg);

    assert_null(load("overload: { max_heap: lots }\n" GOOD_HEAD, err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:1:23: "));
    assert_non_null(strstr(err, "max_heap"));
}

/* The lifecycle keys (issue 13): drain on SIGTERM, and the age of client
 * connections. */
static void drain_and_connection_age(void **state)
{
    (void)state;
    char err[512];
    const char *plain = GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:50051}]\n";
    struct gr_config *cfg = load(plain, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    assert_int_equal(cfg->drain_delay_ms, 0);
    assert_int_equal(cfg->listeners[0].max_connection_age_ms, 0);
    assert_int_equal(cfg->listeners[0].max_connection_age_grace_ms, 30000);
    assert_int_equal(cfg->listeners[0].max_requests_per_connection, 0);
    config_free(cfg);

    const char *shaped = "drain_timeout: 20s\n"
                         "drain_delay: 5s\n"
                         "listeners:\n"
                         "  - name: edge\n"
                         "    address: 127.0.0.1:8080\n"
                         "    max_connection_age: 10m\n"
                         "    max_connection_age_grace: 1m\n"
                         "    max_requests_per_connection: 1000\n"
                         "    virtual_hosts:\n"
                         "      - name: default\n"
                         "        domains: [\"*\"]\n"
                         "        routes: [{match: {prefix: \"/\"}, cluster: backend}]\n"
                         "clusters:\n"
                         "  - name: backend\n"
                         "    endpoints: [{address: 127.0.0.1:50051}]\n";
    cfg = load(shaped, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->drain_timeout_ms, 20000);
    assert_int_equal(cfg->drain_delay_ms, 5000);
    assert_int_equal(cfg->listeners[0].max_connection_age_ms, 600000);
    assert_int_equal(cfg->listeners[0].max_connection_age_grace_ms, 60000);
    assert_int_equal(cfg->listeners[0].max_requests_per_connection, 1000);
    config_free(cfg);

    assert_null(load("drain_timeout: soon\n" GOOD_HEAD, err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:1:16: "));
    assert_non_null(strstr(err, "drain_timeout"));
}

/* An upstream connection's lifetime: the retired pool's drain_timeout
 * (30 s) and max_connection_age (off) by default, and as written. */
static void cluster_lifetimes(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *cfg =
        load(GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:50051}]\n", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->clusters[0].drain_timeout_ms, 30000);
    assert_int_equal(cfg->clusters[0].max_connection_age_ms, 0);
    config_free(cfg);
    cfg = load(GOOD_HEAD "clusters:\n  - name: backend\n    drain_timeout: 0\n    max_connection_age: 15m\n"
                         "    endpoints: [{address: 127.0.0.1:50051}]\n",
               err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->clusters[0].drain_timeout_ms, 0);
    assert_int_equal(cfg->clusters[0].max_connection_age_ms, 15 * 60 * 1000);
    config_free(cfg);
    assert_null(load(GOOD_HEAD "clusters:\n  - name: backend\n    max_connection_age: 721h\n"
                               "    endpoints: [{address: 127.0.0.1:50051}]\n",
                     err, sizeof(err)));
    assert_non_null(strstr(err, "max_connection_age"));
}

static void health_checks(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *cfg =
        load(GOOD_HEAD "clusters: [{name: backend, endpoints: [{address: 127.0.0.1:1}]}]\n", err, sizeof(err));
    assert_non_null(cfg);
    assert_false(cfg->clusters[0].health_check.set);
    assert_int_equal(cfg->clusters[0].panic_threshold, 50);
    config_free(cfg);
    const char *yaml = GOOD_HEAD "clusters:\n"
                                 "  - name: backend\n"
                                 "    panic_threshold: 30%\n"
                                 "    health_check: { interval: 200ms, timeout: 100ms, unhealthy_threshold: 4,\n"
                                 "                    service_name: pkg.Svc, authority: api.example }\n"
                                 "    endpoints: [{address: 127.0.0.1:1}]\n";
    cfg = load(yaml, err, sizeof(err));
    if (cfg == NULL)
        print_error("%s\n", err);
    assert_non_null(cfg);
    const struct gr_health_check_cfg *h = &cfg->clusters[0].health_check;
    assert_true(h->set);
    assert_int_equal(h->interval_ms, 200);
    assert_int_equal(h->timeout_ms, 100);
    assert_int_equal(h->unhealthy_threshold, 4);
    assert_int_equal(h->healthy_threshold, 2);
    assert_string_equal(h->service_name, "pkg.Svc");
    assert_string_equal(h->authority, "api.example");
    assert_int_equal(cfg->clusters[0].panic_threshold, 30);
    config_free(cfg);
    cfg = load(GOOD_HEAD "clusters: [{name: backend, health_check: {}, panic_threshold: 0,\n"
                         "            endpoints: [{address: 127.0.0.1:1}]}]\n",
               err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->clusters[0].health_check.interval_ms, 5000);
    assert_int_equal(cfg->clusters[0].health_check.timeout_ms, 1000);
    assert_int_equal(cfg->clusters[0].health_check.unhealthy_threshold, 3);
    assert_string_equal(cfg->clusters[0].health_check.service_name, "");
    assert_int_equal(cfg->clusters[0].panic_threshold, 0);
    config_free(cfg);
    /* errors name file:line:col */
    assert_null(load(GOOD_HEAD "clusters: [{name: backend, health_check: {interval: 1s, timeout: 2s},\n"
                               "            endpoints: [{address: 127.0.0.1:1}]}]\n",
                     err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:10:42: "));
    assert_non_null(strstr(err, "must not exceed 'interval'"));
    assert_null(load(GOOD_HEAD "clusters: [{name: backend, panic_threshold: 120%,\n"
                               "            endpoints: [{address: 127.0.0.1:1}]}]\n",
                     err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:10:45: "));
    assert_non_null(strstr(err, "percentage"));
    assert_null(load(GOOD_HEAD "clusters: [{name: backend, health_check: {unhealthy_threshold: 0},\n"
                               "            endpoints: [{address: 127.0.0.1:1}]}]\n",
                     err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:10:64: "));
    assert_null(load(GOOD_HEAD "clusters: [{name: backend, health_check: {intervall: 1s},\n"
                               "            endpoints: [{address: 127.0.0.1:1}]}]\n",
                     err, sizeof(err)));
    assert_non_null(strstr(err, "intervall"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(issue_example_loads_with_defaults),
        cmocka_unit_test(watch_config_and_snapshot_refs),
        cmocka_unit_test(values_sizes_durations_and_matchers),
        cmocka_unit_test(retry_policy_and_deadlines),
        cmocka_unit_test(dns_discovery),
        cmocka_unit_test(bad_files_say_where_and_what),
        cmocka_unit_test(shipped_configs_load),
        cmocka_unit_test(missing_file_says_so),
        cmocka_unit_test(parse_addr_takes_ip_literals),
        cmocka_unit_test(limits_and_timers),
        cmocka_unit_test(drain_and_connection_age),
        cmocka_unit_test(cluster_lifetimes),
        cmocka_unit_test(health_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
