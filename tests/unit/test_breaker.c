/* Circuit breakers (breaker.h, config_breaker.h): the retry budget's
 * arithmetic, the limits against the counters, the registry shared by
 * snapshots of one cluster name, and the configuration's errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/breaker.h"
#include "grelay/config.h"

#include <stdio.h>
#include <string.h>

static struct gr_config *load(const char *cluster_extra, char *err, size_t errlen)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "listeners:\n"
             "  - name: l\n"
             "    address: 127.0.0.1:1\n"
             "    virtual_hosts:\n"
             "      - name: v\n"
             "        domains: ['*']\n"
             "        routes: [{match: {prefix: /}, cluster: backend}]\n"
             "clusters:\n"
             "  - name: backend\n"
             "    endpoints: [{address: 127.0.0.1:2}]\n"
             "%s",
             cluster_extra);
    err[0] = '\0';
    return config_load_buffer("t.yaml", yaml, strlen(yaml), err, errlen);
}

static void budget_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(breaker_budget_cap(20, 3, 0), 3);  /* min_concurrent when little is in flight */
    assert_int_equal(breaker_budget_cap(20, 3, 19), 3); /* 3.8 rounds down to 3 */
    assert_int_equal(breaker_budget_cap(20, 3, 20), 4); /* 20% of 20 */
    assert_int_equal(breaker_budget_cap(20, 3, 1000), 200);
    assert_int_equal(breaker_budget_cap(20, 1, 10), 2);
    assert_int_equal(breaker_budget_cap(0, 5, 1000), 5);                    /* percent 0: min_concurrent only */
    assert_int_equal(breaker_budget_cap(100, 0, 7), 7);                     /* every call may be retrying */
    assert_int_equal(breaker_budget_cap(50, 0, 1), 0);                      /* half a retry is none */
    assert_int_equal(breaker_budget_cap(100, 0, 4000000000u), 4000000000u); /* no overflow */
}

static void defaults_when_written(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *cfg = load("", err, sizeof(err));
    assert_non_null(cfg);
    assert_false(cfg->clusters[0].circuit_breakers.set);
    assert_false(cfg->clusters[0].retry_budget.set);
    assert_non_null(cfg->clusters[0].breaker); /* counted all the same */
    config_unref(cfg);
    cfg = load("    circuit_breakers: {max_pending: 7}\n    retry_budget: {}\n", err, sizeof(err));
    assert_non_null(cfg);
    const struct gr_breaker_cfg *b = &cfg->clusters[0].circuit_breakers;
    assert_true(b->set);
    assert_int_equal(b->max_requests, 10000);
    assert_int_equal(b->max_pending, 7);
    assert_int_equal(b->max_retries, 3);
    assert_int_equal(cfg->clusters[0].retry_budget.percent, 20);
    assert_int_equal(cfg->clusters[0].retry_budget.min_concurrent, 3);
    config_unref(cfg);
}

static void limits_hold(void **state)
{
    (void)state;
    char err[512], msg[200];
    struct gr_config *cfg =
        load("    circuit_breakers: {max_requests: 2, max_pending: 1, max_retries: 1}\n", err, sizeof(err));
    assert_non_null(cfg);
    const struct gr_cluster_cfg *cl = &cfg->clusters[0];
    struct breaker_counts c;
    assert_int_equal(breaker_call_begin(cl), BREAKER_OK);
    assert_int_equal(breaker_call_begin(cl), BREAKER_OK);
    assert_int_equal(breaker_call_begin(cl), BREAKER_MAX_REQUESTS);
    assert_int_equal(breaker_pending_join(cl), BREAKER_OK);
    assert_int_equal(breaker_pending_join(cl), BREAKER_MAX_PENDING);
    assert_int_equal(breaker_retry_begin(cl), BREAKER_OK);
    assert_int_equal(breaker_retry_begin(cl), BREAKER_MAX_RETRIES);
    assert_true(breaker_counts_of(cl, &c));
    assert_int_equal(c.requests, 2);
    assert_int_equal(c.pending, 1);
    assert_int_equal(c.retries, 1);
    breaker_message(msg, sizeof(msg), cl, BREAKER_MAX_REQUESTS);
    assert_string_equal(msg, "cluster backend: max_requests 2 reached");
    breaker_message(msg, sizeof(msg), cl, BREAKER_MAX_PENDING);
    assert_string_equal(msg, "cluster backend: max_pending 1 reached");
    breaker_message(msg, sizeof(msg), cl, BREAKER_MAX_RETRIES);
    assert_string_equal(msg, "cluster backend: max_retries 1 reached");
    breaker_call_end(cl);
    breaker_call_end(cl);
    breaker_call_end(cl); /* one too many: stays at 0, the limit keeps its meaning */
    breaker_pending_leave(cl);
    breaker_retry_end(cl);
    assert_true(breaker_counts_of(cl, &c));
    assert_int_equal(c.requests + c.pending + c.retries, 0);
    assert_int_equal(breaker_call_begin(cl), BREAKER_OK);
    assert_int_equal(breaker_call_begin(cl), BREAKER_OK);
    assert_int_equal(breaker_call_begin(cl), BREAKER_MAX_REQUESTS);
    breaker_call_end(cl);
    breaker_call_end(cl);
    config_unref(cfg);
}

static void budget_against_calls(void **state)
{
    (void)state;
    char err[512], msg[200];
    struct gr_config *cfg = load("    retry_budget: {percent: 50, min_concurrent: 1}\n", err, sizeof(err));
    assert_non_null(cfg);
    const struct gr_cluster_cfg *cl = &cfg->clusters[0];
    for (int i = 0; i < 4; i++)
        assert_int_equal(breaker_call_begin(cl), BREAKER_OK); /* no max_requests: no circuit_breakers */
    assert_int_equal(breaker_retry_begin(cl), BREAKER_OK);
    assert_int_equal(breaker_retry_begin(cl), BREAKER_OK); /* 50% of 4 */
    assert_int_equal(breaker_retry_begin(cl), BREAKER_RETRY_BUDGET);
    breaker_message(msg, sizeof(msg), cl, BREAKER_RETRY_BUDGET);
    assert_string_equal(msg, "cluster backend: retry_budget (50% of calls in flight, at least 1) reached");
    for (int i = 0; i < 4; i++)
        breaker_call_end(cl);
    breaker_retry_end(cl);
    assert_int_equal(breaker_retry_begin(cl), BREAKER_RETRY_BUDGET); /* 1 in flight, min_concurrent 1 */
    breaker_retry_end(cl);
    assert_int_equal(breaker_retry_begin(cl), BREAKER_OK);
    breaker_retry_end(cl);
    config_unref(cfg);
}

/* Two snapshots naming the cluster count on one breaker: a reload keeps the
 * calls in flight counted; the breaker outlives the older snapshot. */
static void shared_across_snapshots(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *a = load("", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(breaker_call_begin(&a->clusters[0]), BREAKER_OK);
    struct gr_config *b = load("    circuit_breakers: {max_requests: 1}\n", err, sizeof(err));
    assert_non_null(b);
    assert_ptr_equal(a->clusters[0].breaker, b->clusters[0].breaker);
    assert_int_equal(breaker_call_begin(&b->clusters[0]), BREAKER_MAX_REQUESTS); /* a's call counts */
    config_unref(a);
    struct breaker_counts c;
    assert_true(breaker_counts_by_name("backend", &c));
    assert_int_equal(c.requests, 1);
    breaker_call_end(&b->clusters[0]); /* a's call ends under b */
    assert_int_equal(breaker_call_begin(&b->clusters[0]), BREAKER_OK);
    breaker_call_end(&b->clusters[0]);
    config_unref(b);
    assert_false(breaker_counts_by_name("backend", &c)); /* no snapshot names it: freed */
}

static void config_errors(void **state)
{
    (void)state;
    char err[512];
    assert_null(load("    circuit_breakers: {max_requests: 0}\n", err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:11:"));
    assert_non_null(strstr(err, "max_requests"));
    assert_null(load("    circuit_breakers: {max_request: 5}\n", err, sizeof(err)));
    assert_non_null(strstr(err, "max_request"));
    assert_null(load("    circuit_breakers: {max_retries: 2}\n    retry_budget: {percent: 10}\n", err, sizeof(err)));
    assert_non_null(strstr(err, "the budget replaces max_retries"));
    assert_null(load("    retry_budget: {percent: 0, min_concurrent: 0}\n", err, sizeof(err)));
    assert_non_null(strstr(err, "allow no retry at all"));
    assert_null(load("    retry_budget: {percent: 120}\n", err, sizeof(err)));
    assert_non_null(strstr(err, "percentage"));
    struct gr_config *cfg =
        load("    circuit_breakers: {max_pending: 0}\n    retry_budget: {percent: 25%}\n", err, sizeof(err));
    assert_non_null(cfg); /* max_pending 0: no call waits in line; max_retries not written beside the budget */
    assert_int_equal(cfg->clusters[0].retry_budget.percent, 25);
    config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(budget_arithmetic),
        cmocka_unit_test(defaults_when_written),
        cmocka_unit_test(limits_hold),
        cmocka_unit_test(budget_against_calls),
        cmocka_unit_test(shared_across_snapshots),
        cmocka_unit_test(config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
