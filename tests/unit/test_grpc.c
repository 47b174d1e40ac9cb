/* gRPC helpers: status tables, grpc-message encoding, grpc-timeout grammar. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/common.h"
#include "grelay/grpc.h"

#include <string.h>

static void grpc_status_tables(void **state)
{
    (void)state;
    assert_int_equal(grpc_status_from_http(400), GRPC_INTERNAL);
    assert_int_equal(grpc_status_from_http(401), GRPC_UNAUTHENTICATED);
    assert_int_equal(grpc_status_from_http(403), GRPC_PERMISSION_DENIED);
    assert_int_equal(grpc_status_from_http(404), GRPC_UNIMPLEMENTED);
    assert_int_equal(grpc_status_from_http(429), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(502), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(503), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(504), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(500), GRPC_UNKNOWN);
    assert_string_equal(grpc_status_name(GRPC_UNAVAILABLE), "UNAVAILABLE");
    struct arena a;
    arena_init(&a, 128);
    size_t n;
    char *m = grpc_message_encode(&a, "50% d\xc3\xa9j\xc3\xa0\n", &n);
    assert_string_equal(m, "50%25 d%C3%A9j%C3%A0%0A");
    assert_int_equal(n, strlen(m));
    arena_free(&a);
}

static uint64_t parse(const char *v, int *rc)
{
    uint64_t us = 12345;
    *rc = grpc_timeout_parse((const uint8_t *)v, strlen(v), &us);
    return us;
}

static void grpc_timeout_grammar(void **state)
{
    (void)state;
    int rc;
    assert_int_equal(parse("1H", &rc), 3600000000ull);
    assert_int_equal(rc, 0);
    assert_int_equal(parse("2M", &rc), 120000000ull);
    assert_int_equal(parse("3S", &rc), 3000000ull);
    assert_int_equal(parse("250m", &rc), 250000ull);
    assert_int_equal(parse("7u", &rc), 7ull);
    assert_int_equal(parse("1n", &rc), 1ull); /* rounds up to a microsecond */
    assert_int_equal(parse("1000n", &rc), 1ull);
    assert_int_equal(parse("0S", &rc), 0ull);
    assert_int_equal(rc, 0);
    assert_int_equal(parse("99999999H", &rc), 99999999ull * 3600000000ull);
    assert_int_equal(rc, 0);
    const char *bad[] = {"", "S", "1", "123456789S", "1s", "1x", "-1S", "1.5S", " 1S", "1S ", "1 S", "0x1S"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parse(bad[i], &rc);
        if (rc == 0)
            print_error("accepted '%s'\n", bad[i]);
        assert_int_not_equal(rc, 0);
    }
}

static void grpc_timeout_format_keeps_precision(void **state)
{
    (void)state;
    char out[16];
    struct {
        uint64_t us;
        const char *want;
    } cases[] = {
        {3600000000ull, "1H"},
        {7200000000ull, "2H"},
        {60000000ull, "1M"},
        {5000000ull, "5S"},
        {4900000ull, "4900m"},
        {4987654ull, "4987654u"},
        {1ull, "1u"},
        {99999999ull, "99999999u"},
        {100000000ull, "100S"},
        {150123456ull, "150123m"}, /* 9 digits of u: finest unit that fits, rounded down */
        {99999999ull * 3600000000ull, "99999999H"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = grpc_timeout_format(cases[i].us, out);
        assert_int_equal(n, strlen(out));
        assert_string_equal(out, cases[i].want);
        uint64_t back;
        assert_int_equal(grpc_timeout_parse((const uint8_t *)out, n, &back), 0);
        assert_true(back <= cases[i].us); /* never more time than there is */
    }
}

static void grpc_status_names_both_ways(void **state)
{
    (void)state;
    for (int i = GRPC_OK; i <= GRPC_UNAUTHENTICATED; i++) {
        enum grpc_status st = GRPC_UNKNOWN;
        assert_int_equal(grpc_status_from_name(grpc_status_name((enum grpc_status)i), &st), 0);
        assert_int_equal(st, i);
    }
    assert_string_equal(grpc_status_name((enum grpc_status)17), "UNKNOWN");
    /* The spellings a config file may use: any case, '-' or '_'. */
    static const struct {
        const char *name;
        enum grpc_status st;
    } good[] = {
        {"unavailable", GRPC_UNAVAILABLE},
        {"Resource-Exhausted", GRPC_RESOURCE_EXHAUSTED},
        {"deadline_exceeded", GRPC_DEADLINE_EXCEEDED},
        {"DEADLINE-exceeded", GRPC_DEADLINE_EXCEEDED},
        {"ok", GRPC_OK},
        {"data_loss", GRPC_DATA_LOSS},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        enum grpc_status st = GRPC_UNKNOWN;
        assert_int_equal(grpc_status_from_name(good[i].name, &st), 0);
        assert_int_equal(st, good[i].st);
    }
    static const char *const bad[] = {"",           "flaky",        "unavailable ",      " unavailable",
                                      "unavailabl", "unavailablee", "deadline exceeded", "deadlineexceeded",
                                      "14",         "UNAVAILABLE\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum grpc_status st = GRPC_UNKNOWN;
        assert_int_equal(grpc_status_from_name(bad[i], &st), GR_ERR_CONFIG);
        assert_int_equal(st, GRPC_UNKNOWN); /* untouched */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grpc_status_tables),
        cmocka_unit_test(grpc_status_names_both_ways),
        cmocka_unit_test(grpc_timeout_grammar),
        cmocka_unit_test(grpc_timeout_format_keeps_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
