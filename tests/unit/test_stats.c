/* Metrics: the registry and shards (stats.c) and what is rendered
 * (stats_render.c): series by route and method, the "other" bounds,
 * histograms, merging across shards, and label escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/config.h"
#include "grelay/stats.h"

#include <string.h>

static const char yaml[] = "stats: {max_methods: 2, buckets: ['0.001', '0.1']}\n"
                           "listeners:\n"
                           "  - name: main\n"
                           "    address: 127.0.0.1:1\n"
                           "    virtual_hosts:\n"
                           "      - name: vh\n"
                           "        domains: ['*']\n"
                           "        routes:\n"
                           "          - match: {prefix: /a.}\n"
                           "            cluster: back\n"
                           "          - name: \"we\\\"ird\"\n"
                           "            match: {prefix: /}\n"
                           "            cluster: back\n"
                           "clusters:\n"
                           "  - name: back\n"
                           "    endpoints: [{address: 127.0.0.1:2}]\n";

static struct gr_config *cfg;

static const char *render(struct gr_sbuf *b)
{
    sbuf_free(b);
    stats_render_prometheus(b);
    assert_false(b->failed);
    return b->p;
}

#define CALL(sh, rt, path, code, us) stats_call_done((sh), (rt), (const uint8_t *)(path), strlen(path), (code), (us))

static void series_by_route_method_and_code(void **state)
{
    (void)state;
    struct gr_route_cfg *r0 = &cfg->listeners[0].vhosts[0].routes[0], *r1 = &cfg->listeners[0].vhosts[0].routes[1];
    assert_string_equal(r0->name, "vh/0");
    assert_non_null(r0->stats);
    struct stats_shard *a = stats_shard_new(0), *b = stats_shard_new(1);
    CALL(a, r0->stats, "/a.Echo/Say", 0, 500);     /* bucket 0.001 */
    CALL(b, r0->stats, "/a.Echo/Say", 0, 50000);   /* bucket 0.1, another shard */
    CALL(a, r0->stats, "/a.Echo/Say", 14, 200000); /* +Inf */
    CALL(a, r0->stats, "/a.Echo/Nope", 12, 10);    /* UNIMPLEMENTED: not admitted as a method */
    CALL(a, r0->stats, "/a.Echo/Other", 0, 10);    /* second method: max_methods reached */
    CALL(a, r0->stats, "/a.Echo/Third", 0, 10);    /* past max_methods: other */
    CALL(a, r0->stats, "/not-grpc", 0, 10);        /* not /service/method */
    CALL(a, stats_no_route_key(&cfg->listeners[0]), "/x.Y/Z", 12, 10);
    CALL(a, r1->stats, "/a.Echo/Say", 0, 10);
    struct gr_sbuf out;
    sbuf_init(&out);
    const char *t = render(&out);
    assert_non_null(strstr(t, "grelay_requests_total{listener=\"main\",route=\"vh/0\",cluster=\"back\","
                              "grpc_service=\"a.Echo\",grpc_method=\"Say\",grpc_code=\"OK\"} 2\n"));
    assert_non_null(strstr(t, "grpc_service=\"a.Echo\",grpc_method=\"Say\",grpc_code=\"UNAVAILABLE\"} 1\n"));
    assert_non_null(strstr(t, "grpc_service=\"a.Echo\",grpc_method=\"Other\",grpc_code=\"OK\"} 1\n"));
    assert_null(strstr(t, "grpc_method=\"Nope\""));
    assert_null(strstr(t, "grpc_method=\"Third\""));
    /* Nope (UNIMPLEMENTED), Third and /not-grpc went to other. */
    assert_non_null(strstr(t, "route=\"vh/0\",cluster=\"back\",grpc_service=\"other\",grpc_method=\"other\","
                              "grpc_code=\"UNIMPLEMENTED\"} 1\n"));
    assert_non_null(strstr(t, "route=\"vh/0\",cluster=\"back\",grpc_service=\"other\",grpc_method=\"other\","
                              "grpc_code=\"OK\"} 2\n"));
    assert_non_null(strstr(t, "route=\"none\",cluster=\"none\",grpc_service=\"other\",grpc_method=\"other\","
                              "grpc_code=\"UNIMPLEMENTED\"} 1\n"));
    /* The route name with a quote is escaped; the method admitted under
     * vh/0 is known under the other route too. */
    assert_non_null(strstr(t, "route=\"we\\\"ird\",cluster=\"back\",grpc_service=\"a.Echo\",grpc_method=\"Say\","
                              "grpc_code=\"OK\"} 1\n"));
    /* The histogram: cumulative, merged across shards. */
    const char *h = "grelay_request_duration_seconds_bucket{listener=\"main\",route=\"vh/0\",cluster=\"back\","
                    "grpc_service=\"a.Echo\",grpc_method=\"Say\",le=";
    char want[512];
    snprintf(want, sizeof(want), "%s\"0.001\"} 1\n", h);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof(want), "%s\"0.1\"} 2\n", h);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof(want), "%s\"+Inf\"} 3\n", h);
    assert_non_null(strstr(t, want));
    assert_non_null(strstr(t, "grelay_request_duration_seconds_sum{listener=\"main\",route=\"vh/0\",cluster=\"back\","
                              "grpc_service=\"a.Echo\",grpc_method=\"Say\"} 0.250500\n"));
    /* The live view's JSON has the same numbers. */
    sbuf_free(&out);
    stats_render_json(&out, true);
    assert_non_null(strstr(out.p, "\"service\":\"a.Echo\",\"method\":\"Say\",\"codes\":{\"OK\":2,\"UNAVAILABLE\":1},"
                                  "\"counts\":[1,2,3],\"count\":3,\"sum\":0.250500"));
    sbuf_free(&out);
}

static void gauges_and_endpoints(void **state)
{
    (void)state;
    struct stats_shard *a = stats_shard_new(2), *b = stats_shard_new(3);
    const struct stats_key *ep = stats_endpoint_key("back", "127.0.0.1:2");
    assert_ptr_equal(ep, stats_endpoint_key("back", "127.0.0.1:2")); /* interned once */
    stats_add(stats_block(a, ep), E_CONNS, 1);
    stats_add(stats_block(b, ep), E_CONNS, 1);
    stats_add(stats_block(b, ep), E_CONNS, (uint64_t)-1);
    stats_add(stats_block(a, ep), E_CODES + 14, 3);
    stats_add(stats_block(a, ep), E_CONNECT_FAILURES, 2);
    /* A gauge that went below zero on one shard (a connection counted on
     * one worker, gone on another never happens, but a sum must not wrap). */
    stats_add(stats_block(b, cfg->listeners[0].stats), L_IN_FLIGHT, (uint64_t)-1);
    struct gr_sbuf out;
    sbuf_init(&out);
    const char *t = render(&out);
    assert_non_null(strstr(t, "grelay_upstream_connections{cluster=\"back\",endpoint=\"127.0.0.1:2\"} 1\n"));
    assert_non_null(strstr(
        t, "grelay_upstream_requests_total{cluster=\"back\",endpoint=\"127.0.0.1:2\",grpc_code=\"UNAVAILABLE\"} 3\n"));
    assert_non_null(strstr(t, "grelay_upstream_connect_failures_total{cluster=\"back\",endpoint=\"127.0.0.1:2\"} 2\n"));
    assert_non_null(strstr(t, "grelay_requests_in_flight{listener=\"main\"} -1\n"));
    uint64_t v[E_SLOTS];
    const char *labels[2] = {"back", "127.0.0.1:2"};
    assert_true(stats_sum(SK_ENDPOINT, labels, v, E_SLOTS));
    assert_int_equal(v[E_CONNS], 1);
    const char *none[2] = {"back", "nowhere"};
    assert_false(stats_sum(SK_ENDPOINT, none, v, E_SLOTS));
    stats_add(stats_block(b, cfg->listeners[0].stats), L_IN_FLIGHT, 1);
    sbuf_free(&out);
}

static void reload_keeps_series(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *next = config_load_buffer("t.yaml", yaml, sizeof(yaml) - 1, err, sizeof(err));
    assert_non_null(next);
    stats_bind(next);
    /* The same names intern to the same keys: counters survive a reload. */
    assert_ptr_equal(next->listeners[0].vhosts[0].routes[0].stats, cfg->listeners[0].vhosts[0].routes[0].stats);
    assert_ptr_equal(next->listeners[0].stats, cfg->listeners[0].stats);
    config_free(next);
}

int main(void)
{
    char err[512];
    cfg = config_load_buffer("t.yaml", yaml, sizeof(yaml) - 1, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (stats_init(cfg) != 0)
        return 1;
    stats_bind(cfg);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(series_by_route_method_and_code),
        cmocka_unit_test(gauges_and_endpoints),
        cmocka_unit_test(reload_keeps_series),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    config_free(cfg);
    return rc;
}
