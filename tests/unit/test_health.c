/* The health check's hand-made protobuf: HealthCheckRequest out,
 * HealthCheckResponse in (health_probe.h), and the reasons /clusters gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/health.h"

#include <string.h>

static void request_encoding(void **state)
{
    (void)state;
    uint8_t b[300];
    assert_int_equal(health_probe_request("", b, sizeof(b)), 5);
    assert_memory_equal(b, "\0\0\0\0\0", 5);
    assert_int_equal(health_probe_request("pkg.Svc", b, sizeof(b)), 5 + 2 + 7);
    assert_memory_equal(b, "\0\0\0\0\x09\x0a\x07pkg.Svc", 14);
    char long_name[201];
    memset(long_name, 'a', 200);
    long_name[200] = '\0';
    assert_int_equal(health_probe_request(long_name, b, sizeof(b)), 5 + 3 + 200);
    assert_memory_equal(b, "\0\0\0\0\xcb\x0a\xc8\x01", 8); /* 203 bytes; length 200 as a 2-byte varint */
    assert_int_equal(health_probe_request(long_name, b, 100), 0);
}

static enum health_result parse(const char *bytes, size_t n) { return health_probe_parse((const uint8_t *)bytes, n); }

static void response_parsing(void **state)
{
    (void)state;
    assert_int_equal(parse("\0\0\0\0\x02\x08\x01", 7), HC_SERVING);
    assert_int_equal(parse("\0\0\0\0\x02\x08\x02", 7), HC_NOT_SERVING);
    assert_int_equal(parse("\0\0\0\0\x02\x08\x03", 7), HC_SERVICE_UNKNOWN);
    assert_int_equal(parse("\0\0\0\0\x02\x08\x00", 7), HC_ERROR); /* UNKNOWN */
    assert_int_equal(parse("\0\0\0\0\0", 5), HC_ERROR);           /* no status: UNKNOWN */
    /* unknown fields are skipped: a string (2), a fixed64 (1), a fixed32 (5) */
    assert_int_equal(parse("\0\0\0\0\x0b\x12\x02hi\x19\1\2\3\4\5\6\7\x08\x01", 16), HC_ERROR);
    assert_int_equal(parse("\0\0\0\0\x0f\x12\x02hi\x19\1\2\3\4\5\6\7\x08\x08\x01", 20), HC_SERVING);
    assert_int_equal(parse("\0\0\0\0\x0b\x2d\1\2\3\4\x12\x02hi\x08\x01", 16), HC_SERVING);
    /* the last status wins, as protobuf says */
    assert_int_equal(parse("\0\0\0\0\x04\x08\x02\x08\x01", 9), HC_SERVING);
    /* malformed: short, a length that lies, a compressed frame, a string past the end, a bad varint, wire type 3 */
    assert_int_equal(parse("\0\0\0", 3), HC_ERROR);
    assert_int_equal(parse("\0\0\0\0\x03\x08\x01", 7), HC_ERROR);
    assert_int_equal(parse("\1\0\0\0\x02\x08\x01", 7), HC_ERROR);
    assert_int_equal(parse("\0\0\0\0\x04\x12\x09hi\x08", 9), HC_ERROR);
    assert_int_equal(parse("\0\0\0\0\x02\x08\x81", 7), HC_ERROR);
    assert_int_equal(parse("\0\0\0\0\x02\x0b\x01", 7), HC_ERROR);
    assert_int_equal(parse("\0\0\0\0\x03\x11\x01\x02", 8), HC_ERROR); /* a fixed64 cut short */
}

static void reasons(void **state)
{
    (void)state;
    char b[128];
    health_why(b, sizeof(b), HC_NOT_SERVING, 3);
    assert_string_equal(b, "NOT_SERVING from grpc.health.v1 (3 checks)");
    health_why(b, sizeof(b), HC_SERVICE_UNKNOWN, 1);
    assert_string_equal(b, "SERVICE_UNKNOWN from grpc.health.v1 (1 check)");
    health_why(b, sizeof(b), HC_TIMEOUT, 2);
    assert_string_equal(b, "health checks timed out (2 checks)");
    health_why(b, sizeof(b), HC_CONNECT, 4);
    assert_string_equal(b, "health checks could not connect (4 checks)");
    assert_string_equal(health_result_names[HC_CONNECT], "connect_failure");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_encoding),
        cmocka_unit_test(response_parsing),
        cmocka_unit_test(reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
