/* Balancer policies, driven directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/balancer.h"

static void round_robin_cycles(void **state)
{
    (void)state;
    struct balancer b;
    uint32_t w[] = {1, 1, 1};
    assert_int_equal(balancer_init(&b, LB_ROUND_ROBIN, w, 3, 42), 0);
    size_t first = balancer_pick(&b);
    for (int i = 1; i < 30; i++)
        assert_int_equal(balancer_pick(&b), (first + (size_t)i) % 3);
    balancer_destroy(&b);
}

static void weighted_round_robin_is_smooth_and_exact(void **state)
{
    (void)state;
    struct balancer b;
    uint32_t w[] = {5, 1, 1};
    assert_int_equal(balancer_init(&b, LB_ROUND_ROBIN, w, 3, 1), 0);
    int counts[3] = {0};
    size_t seq[7];
    for (int i = 0; i < 7; i++) {
        seq[i] = balancer_pick(&b);
        counts[seq[i]]++;
    }
    assert_int_equal(counts[0], 5);
    assert_int_equal(counts[1], 1);
    assert_int_equal(counts[2], 1);
    /* Smooth: the heavy endpoint never gets all five in a row (a, a, b, a, c, a, a). */
    int run = 0, longest = 0;
    for (int i = 0; i < 7; i++) {
        run = seq[i] == 0 ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    assert_true(longest <= 2);
    for (int i = 0; i < 700; i++)
        counts[balancer_pick(&b)]++;
    assert_int_equal(counts[0], 505);
    assert_int_equal(counts[1], 101);
    balancer_destroy(&b);
}

static void random_honours_weights(void **state)
{
    (void)state;
    struct balancer b;
    uint32_t w[] = {1, 3};
    assert_int_equal(balancer_init(&b, LB_RANDOM, w, 2, 7), 0);
    int counts[2] = {0};
    for (int i = 0; i < 40000; i++)
        counts[balancer_pick(&b)]++;
    /* Expect 10000 / 30000; sd about 87. */
    assert_in_range(counts[0], 9300, 10700);
    balancer_destroy(&b);
}

static void least_request_never_picks_the_busiest(void **state)
{
    (void)state;
    struct balancer b;
    uint32_t w[] = {1, 1, 1, 1};
    assert_int_equal(balancer_init(&b, LB_LEAST_REQUEST, w, 4, 99), 0);
    balancer_started(&b, 2);
    balancer_started(&b, 2);
    for (int i = 0; i < 1000; i++)
        assert_int_not_equal(balancer_pick(&b), 2);
    balancer_finished(&b, 2);
    balancer_finished(&b, 2);
    int seen[4] = {0};
    for (int i = 0; i < 1000; i++)
        seen[balancer_pick(&b)]++;
    for (int i = 0; i < 4; i++)
        assert_true(seen[i] > 100);
    balancer_destroy(&b);
}

static void least_request_weighs_load(void **state)
{
    (void)state;
    struct balancer b;
    uint32_t w[] = {4, 1};
    assert_int_equal(balancer_init(&b, LB_LEAST_REQUEST, w, 2, 5), 0);
    /* 3 active on weight 4 (0.75 each) beats 1 active on weight 1. */
    for (int i = 0; i < 3; i++)
        balancer_started(&b, 0);
    balancer_started(&b, 1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(balancer_pick(&b), 0);
    balancer_destroy(&b);
}

static void single_endpoint(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++) {
        struct balancer b;
        uint32_t w[] = {3};
        assert_int_equal(balancer_init(&b, (enum lb_policy_kind)k, w, 1, 3), 0);
        for (int i = 0; i < 10; i++)
            assert_int_equal(balancer_pick(&b), 0);
        balancer_destroy(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_robin_cycles),        cmocka_unit_test(weighted_round_robin_is_smooth_and_exact),
        cmocka_unit_test(random_honours_weights),    cmocka_unit_test(least_request_never_picks_the_busiest),
        cmocka_unit_test(least_request_weighs_load), cmocka_unit_test(single_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
