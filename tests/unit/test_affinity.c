/* ring_hash and maglev (balancer_hash.c) driven directly, and the hash_on
 * configuration (config_affinity.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config_fixture.h"

#include "grelay/balancer.h"
#include "grelay/config.h"

#include <stdio.h>
#include <string.h>

#define KEYS 1000

static const char *const addrs[] = {"10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051", "10.0.0.4:50051"};

static uint64_t key(int i)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "user-%d", i);
    return balancer_hash64(k, (size_t)n, 0);
}

/* A balancer of kind over the endpoints addrs[which[0..n)], weights w (NULL: 1). */
static void build(struct balancer *b, enum lb_policy_kind kind, const int *which, size_t n, const uint32_t *w)
{
    uint32_t ws[8];
    uint64_t ids[8];
    for (size_t i = 0; i < n; i++) {
        ws[i] = w ? w[i] : 1;
        ids[i] = balancer_endpoint_id(addrs[which[i]], "backend");
    }
    assert_int_equal(balancer_init(b, kind, ws, n, 7), 0);
    assert_int_equal(balancer_hash_build(b, ids, NULL), 0);
}

static bool none_bad(void *ctx, size_t i)
{
    (void)ctx;
    (void)i;
    return false;
}

static bool marked_bad(void *ctx, size_t i) { return ((const bool *)ctx)[i]; }

/* The address each key goes to. */
static void owners(const struct balancer *b, const int *which, const bool *bad, int *out)
{
    for (int k = 0; k < KEYS; k++) {
        size_t i = bad ? balancer_hash_pick(b, key(k), marked_bad, (void *)bad)
                       : balancer_hash_pick(b, key(k), none_bad, NULL);
        assert_true(i < b->n);
        out[k] = which[i];
    }
}

static void same_key_same_endpoint(void **state)
{
    (void)state;
    for (int kind = LB_RING_HASH; kind <= LB_MAGLEV; kind++) {
        const int abc[] = {0, 1, 2}, cab[] = {2, 0, 1};
        struct balancer b, r;
        build(&b, (enum lb_policy_kind)kind, abc, 3, NULL);
        build(&r, (enum lb_policy_kind)kind, cab, 3, NULL); /* the same set in another order */
        int first[KEYS], again[KEYS], other[KEYS];
        owners(&b, abc, NULL, first);
        owners(&b, abc, NULL, again);
        owners(&r, cab, NULL, other);
        for (int k = 0; k < KEYS; k++) {
            assert_int_equal(first[k], again[k]);
            assert_int_equal(first[k], other[k]);
        }
        balancer_destroy(&b);
        balancer_destroy(&r);
    }
}

static void keys_spread_within_a_quarter(void **state)
{
    (void)state;
    for (int kind = LB_RING_HASH; kind <= LB_MAGLEV; kind++) {
        const int abc[] = {0, 1, 2};
        struct balancer b;
        build(&b, (enum lb_policy_kind)kind, abc, 3, NULL);
        int got[KEYS], count[3] = {0};
        owners(&b, abc, NULL, got);
        for (int k = 0; k < KEYS; k++)
            count[got[k]]++;
        for (int i = 0; i < 3; i++) {
            print_message("%s: endpoint %d has %d keys of %d\n", kind == LB_RING_HASH ? "ring_hash" : "maglev", i,
                          count[i], KEYS);
            assert_in_range(count[i], KEYS / 3 * 3 / 4, KEYS / 3 * 5 / 4);
        }
        balancer_destroy(&b);
    }
}

/* An endpoint that cannot be used (ejected, unhealthy, the retry's last):
 * only its keys move, and on the ring they go where removing it sends them. */
static void a_bad_endpoint_moves_only_its_keys(void **state)
{
    (void)state;
    for (int kind = LB_RING_HASH; kind <= LB_MAGLEV; kind++) {
        const int abc[] = {0, 1, 2}, ac[] = {0, 2};
        const bool b_bad[] = {false, true, false};
        struct balancer b, without;
        build(&b, (enum lb_policy_kind)kind, abc, 3, NULL);
        build(&without, (enum lb_policy_kind)kind, ac, 2, NULL);
        int before[KEYS], skipped[KEYS], removed[KEYS];
        owners(&b, abc, NULL, before);
        owners(&b, abc, b_bad, skipped);
        owners(&without, ac, NULL, removed);
        int moved = 0;
        for (int k = 0; k < KEYS; k++) {
            assert_int_not_equal(skipped[k], 1);
            if (before[k] != 1)
                assert_int_equal(skipped[k], before[k]);
            if (kind == LB_RING_HASH)
                assert_int_equal(skipped[k], removed[k]);
            moved += before[k] != 1 && removed[k] != before[k];
        }
        /* Maglev's table, built again without it, moves a few others (the paper's "minimal disruption"). */
        print_message("%s: keys of the others that moved when one left: %d of %d\n",
                      kind == LB_RING_HASH ? "ring_hash" : "maglev", moved, KEYS);
        assert_true(kind == LB_RING_HASH ? moved == 0 : moved < KEYS / 50);
        balancer_destroy(&b);
        balancer_destroy(&without);
    }
}

/* A new endpoint takes keys only for itself. */
static void an_added_endpoint_takes_only_keys(void **state)
{
    (void)state;
    const int abc[] = {0, 1, 2}, abcd[] = {0, 1, 2, 3};
    struct balancer b, more;
    build(&b, LB_RING_HASH, abc, 3, NULL);
    build(&more, LB_RING_HASH, abcd, 4, NULL);
    int before[KEYS], after[KEYS];
    owners(&b, abc, NULL, before);
    owners(&more, abcd, NULL, after);
    int taken = 0;
    for (int k = 0; k < KEYS; k++) {
        if (after[k] != before[k])
            assert_int_equal(after[k], 3);
        taken += after[k] == 3;
    }
    assert_in_range(taken, KEYS / 4 * 3 / 4, KEYS / 4 * 5 / 4);
    balancer_destroy(&b);
    balancer_destroy(&more);
}

static void weights_skew_shares(void **state)
{
    (void)state;
    for (int kind = LB_RING_HASH; kind <= LB_MAGLEV; kind++) {
        const int abc[] = {0, 1, 2};
        const uint32_t w[] = {1, 2, 1};
        struct balancer b;
        build(&b, (enum lb_policy_kind)kind, abc, 3, w);
        int got[KEYS], count[3] = {0};
        owners(&b, abc, NULL, got);
        for (int k = 0; k < KEYS; k++)
            count[got[k]]++;
        assert_in_range(count[1], KEYS / 2 * 3 / 4, KEYS / 2 * 5 / 4);
        assert_in_range(count[0], KEYS / 4 * 3 / 4, KEYS / 4 * 5 / 4);
        assert_in_range(count[2], KEYS / 4 * 3 / 4, KEYS / 4 * 5 / 4);
        balancer_destroy(&b);
    }
}

/* Every endpoint bad: the key's first choice (wcluster_pick then walks on). */
static void all_bad_gives_the_first_choice(void **state)
{
    (void)state;
    for (int kind = LB_RING_HASH; kind <= LB_MAGLEV; kind++) {
        const int abc[] = {0, 1, 2};
        const bool all[] = {true, true, true};
        struct balancer b;
        build(&b, (enum lb_policy_kind)kind, abc, 3, NULL);
        int first[KEYS], bad[KEYS];
        owners(&b, abc, NULL, first);
        owners(&b, abc, all, bad);
        for (int k = 0; k < KEYS; k++)
            assert_int_equal(bad[k], first[k]);
        balancer_destroy(&b);
    }
}

/* An outage (every endpoint bad): a pick asks bad() O(endpoints) times,
 * not once per ring point (1,536 points for three endpoints). */
static size_t asked;
static bool counted_bad(void *ctx, size_t i)
{
    (void)ctx;
    (void)i;
    asked++;
    return true;
}

static void an_outage_costs_each_pick_little(void **state)
{
    (void)state;
    const int abc[] = {0, 1, 2};
    struct balancer b;
    build(&b, LB_RING_HASH, abc, 3, NULL);
    for (int k = 0; k < 100; k++) {
        asked = 0;
        (void)balancer_hash_pick(&b, key(k), counted_bad, NULL);
        assert_true(asked <= 2 * 3 + 16 + 3);
    }
    balancer_destroy(&b);
}

/* The same identities and weights (a health change, a reload): the table
 * moves over instead of being built again; another policy builds its own. */
static void an_unchanged_set_keeps_its_table(void **state)
{
    (void)state;
    const int abc[] = {0, 1, 2};
    struct balancer old, b;
    build(&old, LB_MAGLEV, abc, 3, NULL);
    uint32_t *table = old.table;
    assert_int_equal(balancer_init(&b, LB_MAGLEV, old.weight, 3, 1), 0);
    assert_int_equal(balancer_hash_build(&b, old.ids, &old), 0);
    assert_ptr_equal(b.table, table);
    assert_null(old.table);
    struct balancer ring;
    assert_int_equal(balancer_init(&ring, LB_RING_HASH, b.weight, 3, 1), 0);
    assert_int_equal(balancer_hash_build(&ring, b.ids, &b), 0);
    assert_non_null(ring.ring);
    assert_ptr_equal(b.table, table);
    balancer_destroy(&old);
    balancer_destroy(&b);
    balancer_destroy(&ring);
}

static void hash_is_stable(void **state)
{
    (void)state;
    /* Fixed values: a change of the hash moves every key of every fleet. */
    assert_true(balancer_hash64("", 0, 0) == 0ull);
    assert_true(balancer_hash64("user-1", 6, 0) == balancer_hash64("user-1", 6, 0));
    assert_true(balancer_hash64("user-1", 6, 0) != balancer_hash64("user-2", 6, 0));
    assert_true(balancer_hash64("abcdefghij", 10, 0) != balancer_hash64("abcdefghik", 10, 0));
}

static void hash_on_loads(void **state)
{
    (void)state;
    char err[512] = "";
    struct gr_config *cfg =
        load(BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: { header: X-User-Id }\n", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->clusters[0].lb_policy, LB_RING_HASH);
    assert_int_equal(cfg->clusters[0].hash_on.kind, HASH_ON_HEADER);
    assert_string_equal(cfg->clusters[0].hash_on.header, "x-user-id");
    config_free(cfg);
    cfg = load(BACKEND_HEAD "    lb_policy: maglev\n    hash_on: authority\n", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->clusters[0].lb_policy, LB_MAGLEV);
    assert_int_equal(cfg->clusters[0].hash_on.kind, HASH_ON_AUTHORITY);
    config_free(cfg);
    cfg = load(BACKEND_HEAD "    hash_on: peer\n    lb_policy: ring_hash\n", err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->clusters[0].hash_on.kind, HASH_ON_PEER);
    config_free(cfg);
}

static void hash_on_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *expected;
    } bad[] = {
        {BACKEND_HEAD "    hash_on: peer\n",
         "t.yaml:13:14: cluster 'backend': hash_on needs lb_policy: ring_hash or maglev (the other policies do not "
         "hash)"},
        {BACKEND_HEAD "    lb_policy: random\n    hash_on: authority\n",
         "t.yaml:14:14: cluster 'backend': hash_on needs lb_policy: ring_hash or maglev (the other policies do not "
         "hash)"},
        {BACKEND_HEAD "    lb_policy: maglev\n",
         "t.yaml:13:16: cluster 'backend': lb_policy maglev needs hash_on (authority, peer or { header: <name> })"},
        {BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: cookie\n",
         "t.yaml:14:14: 'hash_on' must be authority, peer or { header: <name> }, got 'cookie'"},
        {BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: [peer]\n",
         "t.yaml:14:14: 'hash_on' must be authority, peer or { header: <name> }, got 'a list'"},
        {BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: { cookie: x }\n",
         "t.yaml:14:16: hash_on: unknown key (expected 'header')"},
        {BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: { header: x, cookie: y }\n",
         "t.yaml:14:14: hash_on: a mapping must be exactly { header: <name> }"},
        {BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: { header: \":authority\" }\n",
         "t.yaml:14:24: hash_on: header ':authority' must be a header name (for :authority write hash_on: "
         "authority)"},
        {BACKEND_HEAD "    lb_policy: ring_hash\n    hash_on: { header: \"x user\" }\n",
         "t.yaml:14:24: hash_on: header 'x user' is not a valid header name"},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        struct gr_config *cfg = load(bad[i].yaml, err, sizeof(err));
        if (cfg != NULL || strcmp(err, bad[i].expected) != 0) {
            print_error("case %zu:\n  expected: %s\n  got:      %s\n", i, bad[i].expected, cfg ? "(loaded)" : err);
            failures++;
        }
        config_free(cfg);
    }
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_key_same_endpoint),
        cmocka_unit_test(keys_spread_within_a_quarter),
        cmocka_unit_test(a_bad_endpoint_moves_only_its_keys),
        cmocka_unit_test(an_added_endpoint_takes_only_keys),
        cmocka_unit_test(weights_skew_shares),
        cmocka_unit_test(all_bad_gives_the_first_choice),
        cmocka_unit_test(an_outage_costs_each_pick_little),
        cmocka_unit_test(an_unchanged_set_keeps_its_table),
        cmocka_unit_test(hash_is_stable),
        cmocka_unit_test(hash_on_loads),
        cmocka_unit_test(hash_on_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
