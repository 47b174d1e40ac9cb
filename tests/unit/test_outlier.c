/* Outlier ejection: the outlier_detection: block (defaults, values, and
 * errors that say file:line:col), and the arithmetic of outlier.h driven
 * with made-up times: runs of failures, what breaks them and what does
 * not, ejection lengths doubling to the cap, the decay of "in a row", and
 * max_ejection_percent rounding (at least one endpoint always). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config_fixture.h"

#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/grpc.h"
#include "grelay/outlier.h"

#include <stdio.h>
#include <string.h>

#define S 1000000ull /* a second, in us */

static void bad(const char *block, const char *where, const char *what)
{
    char yaml[1024], err[512];
    snprintf(yaml, sizeof(yaml), BACKEND_HEAD "    outlier_detection:%s\n", block);
    struct gr_config *cfg = load(yaml, err, sizeof(err));
    if (cfg != NULL || strstr(err, where) == NULL || strstr(err, what) == NULL)
        print_error("%s\n-> %s\n", block, cfg ? "loaded" : err);
    assert_null(cfg);
    assert_non_null(strstr(err, where));
    assert_non_null(strstr(err, what));
}

static void config_defaults_values_and_errors(void **state)
{
    (void)state;
    char err[512];
    struct gr_config *cfg = load(BACKEND_HEAD, err, sizeof(err));
    assert_non_null(cfg);
    assert_false(cfg->clusters[0].outlier.set); /* not written: calls never eject */
    config_free(cfg);

    cfg = load(BACKEND_HEAD "    outlier_detection: {}\n", err, sizeof(err));
    assert_non_null(cfg);
    const struct gr_outlier_cfg *o = &cfg->clusters[0].outlier;
    assert_true(o->set);
    assert_int_equal(o->consecutive_failures, 5);
    assert_int_equal(o->failure_mask,
                     1u << GRPC_UNAVAILABLE | 1u << GRPC_INTERNAL | 1u << GRPC_UNKNOWN | 1u << GRPC_DATA_LOSS);
    assert_int_equal(o->base_ejection_time_ms, 30000);
    assert_int_equal(o->max_ejection_time_ms, 300000);
    assert_int_equal(o->max_ejection_percent, 50);
    config_free(cfg);

    cfg = load(BACKEND_HEAD "    outlier_detection:\n"
                            "      consecutive_failures: 3\n"
                            "      failure_codes: [UNAVAILABLE, resource-exhausted]\n"
                            "      base_ejection_time: 250ms\n"
                            "      max_ejection_time: 2s\n"
                            "      max_ejection_percent: 100%\n",
               err, sizeof(err));
    if (cfg == NULL)
        print_error("%s\n", err);
    assert_non_null(cfg);
    o = &cfg->clusters[0].outlier;
    assert_int_equal(o->consecutive_failures, 3);
    assert_int_equal(o->failure_mask, 1u << GRPC_UNAVAILABLE | 1u << GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(o->base_ejection_time_ms, 250);
    assert_int_equal(o->max_ejection_time_ms, 2000);
    assert_int_equal(o->max_ejection_percent, 100);
    config_free(cfg);

    /* Line 13 is the block's; a bad code is reported at its own column. */
    bad(" { failure_codes: [unavailable, bogus] }", "t.yaml:13:55: ", "'bogus' is not a gRPC status name");
    bad(" { failure_codes: [ok] }", "t.yaml:13:42: ", "'ok' is not a gRPC status name");
    bad(" { failure_codes: [] }", "t.yaml:13:41: ", "at least one status");
    bad(" { failure_codes: unavailable }", "t.yaml:13:41: ", "must be a list");
    bad(" { consecutive_failures: 0 }", "t.yaml:13:48: ", "consecutive_failures");
    bad(" { base_ejection_time: 10s, max_ejection_time: 5s }",
        "t.yaml:13:24: ", "'max_ejection_time' (5000ms) must not be less than 'base_ejection_time' (10000ms)");
    bad(" { base_ejection_time: soon }", "t.yaml:13:46: ", "base_ejection_time");
    bad(" { max_ejection_percent: 0 }", "t.yaml:13:24: ", "must be 1..100");
    bad(" { max_ejection_percent: 150% }", "t.yaml:13:48: ", "percentage");
    bad(" { consecutive_failure: 5 }", "t.yaml:13:", "consecutive_failure");
}

static const struct gr_outlier_cfg cfg5 = {
    .set = true,
    .consecutive_failures = 3,
    .failure_mask = 1u << GRPC_UNAVAILABLE | 1u << GRPC_INTERNAL,
    .base_ejection_time_ms = 1000,
    .max_ejection_time_ms = 5000,
    .max_ejection_percent = 50,
};

static bool result(struct outlier *o, int code, uint64_t now)
{
    return outlier_count(o, &cfg5, outlier_classify(&cfg5, code), code, now);
}

static void what_counts(void **state)
{
    (void)state;
    assert_int_equal(outlier_classify(&cfg5, GRPC_UNAVAILABLE), OUTLIER_FAILURE);
    assert_int_equal(outlier_classify(&cfg5, GRPC_INTERNAL), OUTLIER_FAILURE);
    assert_int_equal(outlier_classify(&cfg5, OUTLIER_RESET), OUTLIER_FAILURE); /* always */
    assert_int_equal(outlier_classify(&cfg5, GRPC_OK), OUTLIER_SUCCESS);
    assert_int_equal(outlier_classify(&cfg5, GRPC_NOT_FOUND), OUTLIER_SUCCESS); /* not in the list */
    assert_int_equal(outlier_classify(&cfg5, GRPC_UNKNOWN), OUTLIER_SUCCESS);   /* not in this list */
    assert_int_equal(outlier_classify(&cfg5, OUTLIER_NOTHING), OUTLIER_IGNORE);

    struct outlier o = {0};
    assert_false(result(&o, GRPC_UNAVAILABLE, 1));
    assert_false(result(&o, GRPC_INTERNAL, 2));
    assert_false(result(&o, GRPC_OK, 3)); /* a success ends the run */
    assert_int_equal(o.failures, 0);
    assert_false(result(&o, GRPC_UNAVAILABLE, 4));
    assert_false(result(&o, OUTLIER_NOTHING, 5)); /* a cancel or grelay's timeout neither breaks nor adds */
    assert_false(result(&o, OUTLIER_RESET, 6));
    assert_int_equal(o.failures, 2);
    assert_true(result(&o, GRPC_UNAVAILABLE, 7)); /* the third in a row */
    assert_int_equal(o.last_failure, GRPC_UNAVAILABLE);
    assert_true(result(&o, OUTLIER_RESET, 8)); /* not ejected (the cap): the next failure asks again */
    assert_int_equal(o.last_failure, OUTLIER_RESET);
    assert_int_equal(o.failures, 3);
    assert_int_equal(outlier_eject(&o, &cfg5, 10 * S), 1 * S);
    assert_int_equal(o.until_us, 11 * S);
    assert_false(result(&o, GRPC_UNAVAILABLE, 10 * S + 1)); /* calls in flight while ejected say nothing */
    assert_false(result(&o, GRPC_OK, 10 * S + 2));
    assert_int_equal(o.failures, 0);
    outlier_return(&o, 11 * S);
    assert_int_equal(o.until_us, 0);
    assert_false(result(&o, GRPC_UNAVAILABLE, 11 * S + 1));
    assert_int_equal(o.failures, 1);
}

static void ejections_double_to_the_cap_and_decay(void **state)
{
    (void)state;
    struct outlier o = {0};
    uint64_t now = 100 * S;
    /* In a row: each right after the return of the last. */
    static const uint64_t want[] = {1 * S, 2 * S, 4 * S, 5 * S, 5 * S};
    for (size_t i = 0; i < GR_ARRAY_LEN(want); i++) {
        uint64_t len = outlier_eject(&o, &cfg5, now);
        assert_int_equal(len, want[i]);
        now += len;
        outlier_return(&o, now);
    }
    assert_int_equal(o.level, 3); /* it stops growing at the cap */
    /* Two base_ejection_times back in service: the level drops by two. */
    now += 2 * S;
    assert_int_equal(outlier_eject(&o, &cfg5, now), 2 * S);
    now += 2 * S;
    outlier_return(&o, now);
    /* A long calm: back to the first length. */
    now += 3600 * S;
    assert_int_equal(outlier_eject(&o, &cfg5, now), 1 * S);
    assert_int_equal(o.level, 1);
}

static void at_least_one_endpoint_can_be_ejected(void **state)
{
    (void)state;
    struct gr_outlier_cfg c = cfg5;
    assert_int_equal(outlier_max_ejected(&c, 3), 1); /* 50% of 3 */
    assert_int_equal(outlier_max_ejected(&c, 4), 2);
    assert_int_equal(outlier_max_ejected(&c, 1), 1); /* rounds down to 0: one anyway */
    c.max_ejection_percent = 10;
    assert_int_equal(outlier_max_ejected(&c, 5), 1); /* Envoy's 10% default ejects none of 5 */
    assert_int_equal(outlier_max_ejected(&c, 20), 2);
    c.max_ejection_percent = 100;
    assert_int_equal(outlier_max_ejected(&c, 3), 3);
    assert_int_equal(outlier_code_of_slot(outlier_code_slot(OUTLIER_RESET)), OUTLIER_RESET);
    assert_int_equal(outlier_code_of_slot(outlier_code_slot(GRPC_OK)), GRPC_OK);
    assert_int_equal(outlier_code_of_slot(outlier_code_slot(GRPC_DATA_LOSS)), GRPC_DATA_LOSS);
    assert_string_equal(outlier_failure_name(GRPC_UNAVAILABLE), "UNAVAILABLE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_defaults_values_and_errors),
        cmocka_unit_test(what_counts),
        cmocka_unit_test(ejections_double_to_the_cap_and_decay),
        cmocka_unit_test(at_least_one_endpoint_can_be_ejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
